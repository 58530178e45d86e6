/*  config.h - floorpost's configuration: defaults, the INI file, validation.

    configs/floorpost.ini documents every option with its default and unit;
    tests/ops/test_config.c checks that file against fp_config_defaults().

    Thread contract: loaded once on the main thread before any stage starts,
    then read-only (each stage gets a const pointer).
*/
#ifndef FP_CONFIG_H
#define FP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FP_ENDPOINT_MAX 256
#define FP_PATH_MAX 256
/* The most workers and the most shards (each; the config range 1..64). Bounds
   the per-stage arrays of pipeline, ingest, worker, shard and metrics. */
#define FP_WORKERS_MAX 64
#define FP_SHARDS_MAX 64

/* [sink NAME] sections (docs/sinks.md). The config keeps each sink's
   options as text with the line they were given on; the sink type parses
   and checks them (src/sinks/sinks.h: fp_sinks_check), so a type's options
   live with the type. */
#define FP_SINKS_MAX 8
#define FP_SINK_OPTS_MAX 24
#define FP_SINK_NAME_MAX 48   /* 1..48 of [A-Za-z0-9._-]: its durable reader's key */
#define FP_SINK_KEY_MAX 32
#define FP_SINK_VALUE_MAX 512

typedef struct {
    char key[FP_SINK_KEY_MAX];
    char value[FP_SINK_VALUE_MAX];
    int line;
} fp_sink_kv_t;

typedef struct {
    char name[FP_SINK_NAME_MAX + 1];
    int line;                      /* of the [sink NAME] header */
    int nkv;                       /* options given, `type` among them */
    fp_sink_kv_t kv[FP_SINK_OPTS_MAX];
} fp_sink_config_t;

typedef struct {
    /* [service] */
    char instance[64];             /* instance name, part of every event_id */
    char ingest_router[FP_ENDPOINT_MAX]; /* ROUTER endpoint, acked producers; "" = off */
    char ingest_pull[FP_ENDPOINT_MAX];   /* PULL endpoint, fire-and-forget; "" = off */
    char publish[FP_ENDPOINT_MAX];       /* PUB endpoint for checkpoints */
    char deadletter[FP_ENDPOINT_MAX];    /* PUB endpoint for dead letters */
    char replay[FP_ENDPOINT_MAX];        /* ROUTER endpoint serving the outbox; "" = off */
    bool print_events;             /* print each published event as a line on stdout */
    int publish_hwm;               /* messages queued per subscriber before PUB drops */
    int64_t drain_timeout_ms;      /* SIGTERM: most time to drain before exit */
    int log_level;                 /* FP_LOG_* (log.h): 0 debug .. 3 error */
    int heartbeat_ivl_ms;          /* ZMTP heartbeats on tcp endpoints; 0 = off */
    int heartbeat_timeout_ms;      /* peer silent this long: connection dropped */
    int handshake_timeout_ms;      /* peer must finish the ZMTP/CURVE handshake within */
    int feed_heartbeat_ms;         /* a "heartbeat" message on the feed this often; 0 = off */
    /* [pipeline] */
    int workers;                   /* parse/dedup threads; 0 = from core count */
    int shards;                    /* aggregate threads; 0 = from core count */
    int queue_batches;             /* inproc high-water mark, in batches per pipe */
    int ingest_hwm;                /* receive high-water mark per producer, in frames */
    uint32_t max_frame_bytes;      /* largest telemetry frame accepted, bytes */
    int64_t round_interval_ms;     /* barrier interval; late corrections flush per round */
    /* [dedup] */
    uint32_t dedup_window;         /* seqs per source; power of two, >= 64 */
    uint32_t max_sources;          /* sources tracked per worker */
    int64_t source_idle_ms;        /* with a state directory: a source unused this long leaves
                                      memory (its state stays committed); 0 = only when the
                                      table is full */
    uint32_t new_sources_per_peer; /* new sources one peer (CURVE key, else connection) may
                                      start per second, in all workers; 0 = no bound */
    /* [aggregate] */
    int64_t posting_interval_ms;   /* partial checkpoints flush interval */
    int64_t closed_key_grace_ms;   /* closed operations released after this */
    uint64_t max_open_keys;        /* aggregation keys per shard */
    char time_zone[64];            /* the plant's time zone (tz database): posting dates */
    int period;                    /* posting period: FP_PERIOD_DAY, _SHIFT or _HOUR (period.h) */
    char shifts[128];              /* shift calendar "06:00,14:00,22:00" (period = shift) */
    char closed_before[16];        /* "YYYY-MM-DD": earlier posting dates are closed; "" = none */
    int closed_period;             /* FP_CLOSED_POST_TO_FIRST_OPEN or FP_CLOSED_DEAD_LETTER */
    /* [counters] */
    uint64_t counter_default_modulus; /* cumulative counters roll over at this (2..2^62) */
    char counter_modulus[512];     /* per counter: "NAME=MODULUS,..." ("" = none) */
    uint64_t counter_max_jump;     /* a delta above this is dead-lettered counter_jump; 0 = off */
    uint64_t counter_jitter;       /* a drop of at most this is read jitter, not a reset; 0 = off */
    /* [durability] */
    char state_dir[FP_PATH_MAX];   /* LMDB state (rounds, outbox); "" = durability off */
    uint64_t map_size_mb;          /* LMDB map size: the most disk the state may use, MiB */
    int64_t retention_ms;          /* outbox events kept for replay at least this long */
    uint64_t reader_max_lag_events; /* a durable outbox reader this many events behind is detached */
    uint64_t deadletter_max_count; /* stored dead letters kept at most (the oldest trimmed) */
    uint64_t deadletter_max_mb;    /* their disk at most, MiB; 0 = map_size_mb / 4 */
    int64_t deadletter_retention_ms; /* stored dead letters older than this are trimmed */
    uint64_t deadletter_round_max_kb; /* dead letters one round keeps, KiB; 0 = auto */
    /* [metrics] */
    int metrics_port;              /* HTTP /metrics and /healthz; 0 = off */
    char metrics_address[FP_PATH_MAX]; /* IPv4 address the HTTP server listens on */
    int64_t health_max_round_age_ms; /* /healthz: last barrier round at most this old */
    /* [security] */
    char curve_secret_key_file[FP_PATH_MAX]; /* server key (floorpost keygen); "" = plain */
    char curve_allow_file[FP_PATH_MAX];      /* allowed client public keys, Z85, one a line */
    /* [demo] */
    bool demo;                     /* run the built-in demo plant */
    uint32_t demo_rate;            /* demo records per second */
    uint32_t demo_lines;           /* demo production lines */
    /* [sink NAME] ... */
    int nsinks;
    fp_sink_config_t sinks[FP_SINKS_MAX];
} fp_config_t;

/* [aggregate] closed_period */
#define FP_CLOSED_POST_TO_FIRST_OPEN 0 /* re-posted to the first open period, marked backfill */
#define FP_CLOSED_DEAD_LETTER 1        /* dead-lettered "period_closed" */

/* Fills *cfg with the documented defaults (demo off). */
void fp_config_defaults(fp_config_t *cfg);

/* The embedded default `floorpost run` uses without -c: the defaults with
   the demo plant on, loopback endpoints and a short posting interval. */
void fp_config_demo(fp_config_t *cfg);

/* Parses INI text over *cfg (options not given keep their value). On error
   returns -1 and writes "NAME:LINE: option 'x' ...: allowed ..." into err. */
int fp_config_parse(fp_config_t *cfg, const char *text, const char *name, char *err, size_t errlen);

/* Reads and parses a file; -1 with err on error (including unreadable file). */
int fp_config_load(fp_config_t *cfg, const char *path, char *err, size_t errlen);

/* A bind endpoint such as tcp://ANY:5560 (ANY = * or 0.0.0.0) -> where a
   local client connects: tcp://127.0.0.1:5560; other endpoints as they are. */
void fp_config_connect_endpoint(const char *bind, char *out, size_t cap);

/* The value of option key of sink sc, NULL when not given; *line (may be
   NULL) its line. */
const char *fp_sink_config_get(const fp_sink_config_t *sc, const char *key, int *line);

/* Calls fn for every option whose value differs between a and b (section
   "sink", name "*" when any [sink NAME] section differs); returns how many.
   For SIGHUP's "what changed". */
int fp_config_diff(const fp_config_t *a, const fp_config_t *b,
                   void (*fn)(void *ctx, const char *section, const char *name), void *ctx);

/* The dead letters' budgets in bytes (docs/durability.md, "Dead letters"):
   what the store keeps at most (deadletter_max_mb, 0 = a quarter of the
   map), and what one round keeps at most (deadletter_round_max_kb, 0 =
   map_size_mb / 256 within 4 KiB..1 MiB). */
uint64_t fp_config_dl_max_bytes(const fp_config_t *cfg);
uint64_t fp_config_dl_round_bytes(const fp_config_t *cfg);

/* [counters] modulus: one counter's own modulus. */
#define FP_COUNTER_NAME_MAX 80 /* bytes, as every record string (FP_STRING_MAX) */
#define FP_COUNTER_MODULI_MAX 64
typedef struct {
    char name[FP_COUNTER_NAME_MAX + 1];
    uint64_t modulus;
} fp_counter_modulus_t;

/* Parses a [counters] modulus text ("NAME=MODULUS,...", "" = none) into
   out[0..max) (out NULL: only checks). Returns the count, or -1 with a
   one-line reason in err. Duplicate names are refused (when out is set). */
int fp_config_counter_moduli(const char *text, fp_counter_modulus_t *out, int max, char *err,
                             size_t errlen);

/* Resolves 0 = auto counts from the core count (after loading). */
void fp_config_resolve(fp_config_t *cfg);

#endif
