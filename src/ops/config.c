/*  config.c - defaults, the INI parser and validation of fp_config_t.

    The parser is table-driven: s_options lists every option once with its
    section, field, kind, range and the "allowed" text of its error messages,
    so the defaults, the parser and configs/floorpost.ini have one list to
    agree on. Config text is untrusted: every problem is an error message,
    never an assert. fp_config_parse is all-or-nothing: on error *cfg is
    left untouched.
*/
#include "config.h"

#include "period.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <net/if.h>
#include <sys/un.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FP_CONFIG_FILE_MAX (1u << 20)   /* largest config file read, bytes */

typedef enum {
    OPT_INSTANCE,   /* char[64], 1..63 of [A-Za-z0-9._-] */
    OPT_ENDPOINT,   /* char[FP_ENDPOINT_MAX], tcp:// ipc:// inproc:// (s_check_endpoint);
                       min = S_NO_INPROC: not inproc:// */
    OPT_BOOL,
    OPT_INT,        /* int */
    OPT_I64,        /* int64_t */
    OPT_U32,        /* uint32_t */
    OPT_U64,        /* uint64_t */
    OPT_U32_POW2,   /* uint32_t, power of two */
    OPT_PATH,       /* char[FP_PATH_MAX], a file path or "" (off) */
    OPT_LOG_LEVEL,  /* int, debug|info|warn|error */
    OPT_TIME_ZONE,  /* char[64], "UTC" or a zone of the tz database (/usr/share/zoneinfo) */
    OPT_PERIOD,     /* int, day|shift|hour (FP_PERIOD_*) */
    OPT_SHIFTS,     /* char[], a shift calendar (period.h fp_period_parse_shifts) */
    OPT_DATE,       /* char[16], "YYYY-MM-DD" or "" */
    OPT_CLOSED,     /* int, post_to_first_open|dead_letter (FP_CLOSED_*) */
    OPT_MODULI,     /* char[], "NAME=MODULUS,..." or "" */
    OPT_IPV4,       /* char[], an IPv4 dotted quad (inet_pton) */
} s_kind_t;

typedef struct {
    const char *section;
    const char *name;
    s_kind_t kind;
    size_t offset;          /* of the field in fp_config_t */
    size_t size;            /* of the field (strings: buffer size) */
    int64_t min, max;       /* integers: inclusive range */
    bool may_be_empty;      /* endpoints: "" turns the endpoint off */
    const char *allowed;    /* for messages */
} s_option_t;

/* OPT_ENDPOINT's min: the endpoint may not be inproc://. */
#define S_NO_INPROC 1

#define F(field) offsetof(fp_config_t, field), sizeof(((fp_config_t *)0)->field)

static const s_option_t s_options[] = {
    {"service", "instance", OPT_INSTANCE, F(instance), 0, 0, false,
     "1..63 characters of A-Z a-z 0-9 . _ -"},
    {"service", "ingest_router", OPT_ENDPOINT, F(ingest_router), 0, 0, true,
     "tcp://HOST:PORT, ipc://PATH, inproc://NAME or \"\" (off)"},
    {"service", "ingest_pull", OPT_ENDPOINT, F(ingest_pull), 0, 0, true,
     "tcp://HOST:PORT, ipc://PATH, inproc://NAME or \"\" (off)"},
    {"service", "publish", OPT_ENDPOINT, F(publish), 0, 0, false,
     "tcp://HOST:PORT, ipc://PATH or inproc://NAME"},
    {"service", "deadletter", OPT_ENDPOINT, F(deadletter), 0, 0, false,
     "tcp://HOST:PORT, ipc://PATH or inproc://NAME"},
    {"service", "replay", OPT_ENDPOINT, F(replay), S_NO_INPROC, 0, true,
     "tcp://HOST:PORT, ipc://PATH or \"\" (off); not inproc (the replay server runs in its own "
     "ZeroMQ context)"},
    {"service", "publish_hwm", OPT_INT, F(publish_hwm), 1, 100000000, false, "1..100000000"},
    {"service", "print_events", OPT_BOOL, F(print_events), 0, 0, false,
     "true, false, yes, no, on, off, 1, 0"},
    {"service", "drain_timeout_ms", OPT_I64, F(drain_timeout_ms), 100, 600000, false,
     "100..600000"},
    {"service", "log_level", OPT_LOG_LEVEL, F(log_level), 0, 3, false,
     "debug, info, warn, error"},
    {"service", "feed_heartbeat_ms", OPT_INT, F(feed_heartbeat_ms), 0, 60000, false,
     "0 (off) or 1..60000"},
    {"service", "heartbeat_ivl_ms", OPT_INT, F(heartbeat_ivl_ms), 0, 3600000, false,
     "0 (off) or 1..3600000"},
    {"service", "heartbeat_timeout_ms", OPT_INT, F(heartbeat_timeout_ms), 0, 3600000, false,
     "0 (off) or 1..3600000"},
    {"service", "handshake_timeout_ms", OPT_INT, F(handshake_timeout_ms), 0, 3600000, false,
     "0 (off) or 1..3600000"},
    {"pipeline", "workers", OPT_INT, F(workers), 0, FP_WORKERS_MAX, false, "0 (auto) or 1..64"},
    {"pipeline", "shards", OPT_INT, F(shards), 0, FP_SHARDS_MAX, false, "0 (auto) or 1..64"},
    {"pipeline", "queue_batches", OPT_INT, F(queue_batches), 1, 100000, false, "1..100000"},
    {"pipeline", "ingest_hwm", OPT_INT, F(ingest_hwm), 1, 1000000, false, "1..1000000"},
    {"pipeline", "max_frame_bytes", OPT_U32, F(max_frame_bytes), 1024, 268435456, false,
     "1024..268435456"},
    {"pipeline", "round_interval_ms", OPT_I64, F(round_interval_ms), 1, 10000, false,
     "1..10000"},
    {"dedup", "dedup_window", OPT_U32_POW2, F(dedup_window), 64, 16777216, false,
     "a power of two in 64..16777216"},
    {"dedup", "max_sources", OPT_U32, F(max_sources), 1, 1000000, false, "1..1000000"},
    {"dedup", "source_idle_ms", OPT_I64, F(source_idle_ms), 0, 604800000, false,
     "0 (only when the table is full) or 1..604800000"},
    {"dedup", "new_sources_per_peer", OPT_U32, F(new_sources_per_peer), 0, 1000000, false,
     "0 (no bound) or 1..1000000"},
    {"aggregate", "posting_interval_ms", OPT_I64, F(posting_interval_ms), 10, 86400000, false,
     "10..86400000"},
    {"aggregate", "closed_key_grace_ms", OPT_I64, F(closed_key_grace_ms), 0, 604800000, false,
     "0..604800000"},
    {"aggregate", "max_open_keys", OPT_U64, F(max_open_keys), 1, 1000000000, false,
     "1..1000000000"},
    {"aggregate", "time_zone", OPT_TIME_ZONE, F(time_zone), 0, 0, false,
     "UTC or a zone of the tz database, e.g. Europe/Berlin, America/Chicago"},
    {"aggregate", "period", OPT_PERIOD, F(period), 0, 0, false, "day, shift or hour"},
    {"aggregate", "shifts", OPT_SHIFTS, F(shifts), 0, 0, false,
     "local start times HH:MM in the order of the production day, e.g. \"06:00,14:00,22:00\" "
     "(1..12 of them, within 24 hours)"},
    {"aggregate", "closed_before", OPT_DATE, F(closed_before), 0, 0, true,
     "a date YYYY-MM-DD (posting dates before it are closed), or \"\" (none)"},
    {"aggregate", "closed_period", OPT_CLOSED, F(closed_period), 0, 0, false,
     "post_to_first_open or dead_letter"},
    {"counters", "default_modulus", OPT_U64, F(counter_default_modulus), 2, 1ll << 62, false,
     "2..4611686018427387904, e.g. 4294967296 (32-bit counters) or 65536 (16-bit)"},
    {"counters", "modulus", OPT_MODULI, F(counter_modulus), 0, 0, true,
     "\"NAME=MODULUS,...\" (counter names, moduli 2..2^62), or \"\" (every counter rolls over "
     "at default_modulus)"},
    {"counters", "max_jump", OPT_U64, F(counter_max_jump), 0, 1ll << 62, false,
     "0 (off) or 1..4611686018427387904"},
    {"counters", "jitter", OPT_U64, F(counter_jitter), 0, 1000000, false,
     "0 (off) or 1..1000000"},
    {"durability", "state_dir", OPT_PATH, F(state_dir), 0, 0, true,
     "a directory for the LMDB state, or \"\" (durability off)"},
    {"durability", "map_size_mb", OPT_U64, F(map_size_mb), 1, 1048576, false, "1..1048576"},
    {"durability", "retention_ms", OPT_I64, F(retention_ms), 0, 2592000000, false,
     "0..2592000000"},
    {"durability", "reader_max_lag_events", OPT_U64, F(reader_max_lag_events), 1000,
     1000000000000, false, "1000..1000000000000"},
    {"durability", "deadletter_max_count", OPT_U64, F(deadletter_max_count), 1, 1000000000,
     false, "1..1000000000"},
    {"durability", "deadletter_max_mb", OPT_U64, F(deadletter_max_mb), 0, 1048576, false,
     "0 (a quarter of map_size_mb) or 1..map_size_mb / 2"},
    {"durability", "deadletter_retention_ms", OPT_I64, F(deadletter_retention_ms), 1000,
     31536000000, false, "1000..31536000000 (365 days)"},
    {"durability", "deadletter_round_max_kb", OPT_U64, F(deadletter_round_max_kb), 0, 1048576,
     false, "0 (map_size_mb / 256, 4..1024 KiB) or 4..map_size_mb * 1024 / 32"},
    {"metrics", "metrics_port", OPT_INT, F(metrics_port), 0, 65535, false,
     "0 (off) or 1..65535"},
    {"metrics", "metrics_address", OPT_IPV4, F(metrics_address), 0, 0, false,
     "an IPv4 address to listen on, e.g. 0.0.0.0 or 127.0.0.1"},
    {"metrics", "health_max_round_age_ms", OPT_I64, F(health_max_round_age_ms), 100, 3600000,
     false, "100..3600000"},
    {"security", "curve_secret_key_file", OPT_PATH, F(curve_secret_key_file), 0, 0, true,
     "a key file written by floorpost keygen, or \"\" (plain, unauthenticated endpoints)"},
    {"security", "curve_allow_file", OPT_PATH, F(curve_allow_file), 0, 0, true,
     "a file of allowed client public keys (one Z85 key per line), or \"\""},
    {"demo", "demo", OPT_BOOL, F(demo), 0, 0, false, "true, false, yes, no, on, off, 1, 0"},
    {"demo", "demo_rate", OPT_U32, F(demo_rate), 1, 10000000, false, "1..10000000"},
    {"demo", "demo_lines", OPT_U32, F(demo_lines), 1, 100, false, "1..100"},
};
#undef F

#define S_NOPTIONS (sizeof s_options / sizeof s_options[0])

static const char *const s_sections[] = {"service",    "pipeline", "dedup",
                                         "aggregate",  "counters", "durability",
                                         "metrics",    "security", "demo"};
#define S_NSECTIONS (sizeof s_sections / sizeof s_sections[0])

/* Longest piece of user text quoted back in a message. */
#define S_QUOTE_MAX 80

static void
s_set_string(fp_config_t *cfg, const s_option_t *o, const char *v)
{
    char *dst = (char *)cfg + o->offset;
    assert(strlen(v) < o->size);
    memset(dst, 0, o->size);
    memcpy(dst, v, strlen(v));
}

void
fp_config_defaults(fp_config_t *cfg)
{
    assert(cfg);
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->instance, sizeof cfg->instance, "%s", "floorpost");
    snprintf(cfg->ingest_router, sizeof cfg->ingest_router, "%s", "tcp://*:5560");
    snprintf(cfg->ingest_pull, sizeof cfg->ingest_pull, "%s", "tcp://*:5561");
    snprintf(cfg->publish, sizeof cfg->publish, "%s", "tcp://*:5570");
    snprintf(cfg->deadletter, sizeof cfg->deadletter, "%s", "tcp://*:5571");
    cfg->print_events = false;
    cfg->drain_timeout_ms = 10000;
    cfg->publish_hwm = 100000;
    cfg->workers = 0;
    cfg->shards = 0;
    cfg->queue_batches = 64;
    cfg->ingest_hwm = 1000;
    cfg->max_frame_bytes = 4194304;
    cfg->round_interval_ms = 50;
    cfg->dedup_window = 65536;
    cfg->max_sources = 4096;
    cfg->source_idle_ms = 3600000;
    cfg->new_sources_per_peer = 100;
    cfg->posting_interval_ms = 60000;
    cfg->closed_key_grace_ms = 600000;
    cfg->max_open_keys = 10000000;
    snprintf(cfg->time_zone, sizeof cfg->time_zone, "%s", "UTC");
    cfg->period = FP_PERIOD_DAY;
    snprintf(cfg->shifts, sizeof cfg->shifts, "%s", "06:00,14:00,22:00");
    cfg->closed_before[0] = '\0';
    cfg->closed_period = FP_CLOSED_POST_TO_FIRST_OPEN;
    cfg->counter_default_modulus = 4294967296ull;
    cfg->counter_modulus[0] = '\0';
    cfg->counter_max_jump = 0;
    cfg->counter_jitter = 0;
    snprintf(cfg->replay, sizeof cfg->replay, "%s", "tcp://*:5572");
    snprintf(cfg->state_dir, sizeof cfg->state_dir, "%s", "/var/lib/floorpost");
    cfg->map_size_mb = 1024;
    cfg->retention_ms = 86400000;
    cfg->reader_max_lag_events = 10000000;
    cfg->deadletter_max_count = 1000000;
    cfg->deadletter_max_mb = 0;
    cfg->deadletter_retention_ms = 2592000000;
    cfg->deadletter_round_max_kb = 0;
    cfg->log_level = 1; /* info */
    cfg->heartbeat_ivl_ms = 2000;
    cfg->feed_heartbeat_ms = 1000;
    cfg->heartbeat_timeout_ms = 10000;
    cfg->handshake_timeout_ms = 10000;
    cfg->metrics_port = 9570;
    snprintf(cfg->metrics_address, sizeof cfg->metrics_address, "%s", "0.0.0.0");
    cfg->health_max_round_age_ms = 5000;
    cfg->demo = false;
    cfg->demo_rate = 2000;
    cfg->demo_lines = 3;
}

void
fp_config_demo(fp_config_t *cfg)
{
    fp_config_defaults(cfg);
    cfg->demo = true;
    cfg->print_events = true;
    snprintf(cfg->ingest_router, sizeof cfg->ingest_router, "%s", "tcp://127.0.0.1:5560");
    snprintf(cfg->ingest_pull, sizeof cfg->ingest_pull, "%s", "tcp://127.0.0.1:5561");
    snprintf(cfg->publish, sizeof cfg->publish, "%s", "tcp://127.0.0.1:5570");
    snprintf(cfg->deadletter, sizeof cfg->deadletter, "%s", "tcp://127.0.0.1:5571");
    cfg->posting_interval_ms = 5000;
    snprintf(cfg->metrics_address, sizeof cfg->metrics_address, "%s", "127.0.0.1");
    snprintf(cfg->replay, sizeof cfg->replay, "%s", "tcp://127.0.0.1:5572");
    cfg->state_dir[0] = 0; /* the demo keeps nothing between runs */
}

void
fp_config_resolve(fp_config_t *cfg)
{
    assert(cfg);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int half = cores >= 2 ? (int)(cores / 2) : 1;
    if (half > FP_WORKERS_MAX)
        half = FP_WORKERS_MAX; /* the configured maximum (FP_SHARDS_MAX is the same) */
    if (cfg->workers == 0)
        cfg->workers = half;
    if (cfg->shards == 0)
        cfg->shards = half;
}

/* ---- parsing ---- */

typedef struct {
    const char *name;   /* file name for messages */
    int line;           /* current line, 1-based */
    const char *section;/* current section, NULL before the first header */
    fp_sink_config_t *sink; /* in a [sink NAME] section: its entry */
    fp_config_t *cfg;
    char *err;
    size_t errlen;
} s_ctx_t;

static int
s_fail(s_ctx_t *ctx, const char *fmt, ...)
{
    if (!ctx->err || ctx->errlen == 0)
        return -1;
    int n = snprintf(ctx->err, ctx->errlen, "%s:%d: ", ctx->name, ctx->line);
    if (n >= 0 && (size_t)n < ctx->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool
s_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Trims s in place; returns the first non-blank character. */
static char *
s_trim(char *s)
{
    while (s_space(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && s_space(s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Cuts a trailing comment: '#' or ';' at the start or after a blank. */
static void
s_cut_comment(char *s)
{
    for (char *p = s; *p; p++) {
        if ((*p == '#' || *p == ';') && (p == s || s_space(p[-1]))) {
            *p = '\0';
            return;
        }
    }
}

static int
s_parse_int(s_ctx_t *ctx, const s_option_t *o, const char *v, int64_t *out)
{
    const char *what = NULL;
    if (*v == '\0')
        what = "empty, not an integer";
    else if (!(*v == '-' || *v == '+' || (*v >= '0' && *v <= '9')))
        what = "not an integer";
    if (!what) {
        char *end = NULL;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (end == v || *end != '\0')
            what = "not an integer";
        else if (errno == ERANGE)
            what = "out of range (overflows)";
        else if (x < 0 && o->min >= 0)
            what = "negative";
        else if (x < o->min || x > o->max)
            what = "out of range";
        else if (o->kind == OPT_U32_POW2 && (x & (x - 1)) != 0)
            what = "not a power of two";
        else {
            *out = x;
            return 0;
        }
    }
    return s_fail(ctx, "[%s] %s = '%.*s': %s; allowed: %s", o->section, o->name, S_QUOTE_MAX,
                  v, what, o->allowed);
}

static int
s_parse_bool(s_ctx_t *ctx, const s_option_t *o, const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return s_fail(ctx, "[%s] %s = '%.*s': not a boolean; allowed: %s", o->section, o->name,
                  S_QUOTE_MAX, v, o->allowed);
}

/* The address of a tcp:// bind endpoint, HOST:PORT, as libzmq 4.3 binds
   it: HOST is '*', an IPv4 address or a network interface's name (a bind
   resolves no DNS name: "localhost" fails with "No such device"), PORT
   1..65535 (libzmq keeps the low 16 bits of a larger number: 92128 would
   bind 26592). Returns NULL, with host and *port set, or what is wrong. */
static const char *
s_tcp_address(const char *addr, char *host, size_t hostcap, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return "no port (tcp://HOST:PORT)";
    size_t hlen = (size_t)(colon - addr);
    const char *p = colon + 1;
    if (hlen == 0)
        return "no host before the port (tcp://*:PORT binds every interface)";
    if (hlen >= hostcap)
        return "host too long";
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    if (*p == '\0')
        return "no port after ':' (tcp://HOST:PORT)";
    if (strspn(p, "0123456789") != strlen(p))
        return "the port is not a number 1..65535";
    long n = strlen(p) > 5 ? 65536 : strtol(p, NULL, 10);
    if (n < 1 || n > 65535)
        return "the port is out of range 1..65535";
    *port = (int)n;
    if (strchr(host, ';'))
        return "a source address ('SRC;HOST') is for connecting; a bind takes HOST:PORT";
    if (host[0] == '[' || strchr(host, ':'))
        return "IPv6 is not enabled on floorpost's sockets; use an IPv4 address or '*'";
    struct in_addr a4;
    if (strcmp(host, "*") == 0 || inet_pton(AF_INET, host, &a4) == 1)
        return NULL;
    if (strspn(host, "0123456789.") == hlen)
        return "not an IPv4 address (four numbers 0..255)";
    if (if_nametoindex(host) == 0)
        return "no network interface of that name (a bind takes '*', an IPv4 address or an "
               "interface name, never a DNS name such as localhost)";
    return NULL;
}

static int
s_check_endpoint(s_ctx_t *ctx, const s_option_t *o, const char *v)
{
    const char *what = NULL;
    size_t len = strlen(v);
    if (len == 0) {
        if (o->may_be_empty)
            return 0;
        what = "empty, but this endpoint is required";
    } else if (len >= o->size) {
        return s_fail(ctx, "[%s] %s = '%.*s...': too long (%zu characters); allowed: %s, "
                      "at most %zu characters", o->section, o->name, S_QUOTE_MAX, v, len,
                      o->allowed, o->size - 1);
    } else {
        bool blank = false;
        for (const char *p = v; *p && !blank; p++)
            blank = (unsigned char)*p <= ' ' || *p == 0x7f;
        if (blank)
            what = "not an endpoint (scheme, then an address, no blanks)";
        else if (strncmp(v, "tcp://", 6) == 0 && v[6]) {
            char host[FP_ENDPOINT_MAX];
            int port = 0;
            what = s_tcp_address(v + 6, host, sizeof host, &port);
        } else if (strncmp(v, "ipc://", 6) == 0 && v[6]) {
            /* libzmq refuses a path that does not fit sockaddr_un */
            struct sockaddr_un sun;
            if (strlen(v + 6) >= sizeof sun.sun_path)
                what = "the ipc path is too long for a Unix socket (at most 107 bytes)";
        } else if (strncmp(v, "inproc://", 9) == 0 && v[9]) {
            if (o->min == S_NO_INPROC)
                what = "inproc is not allowed here";
            else if (strncmp(v + 9, "fp-", 3) == 0 || strncmp(v + 9, "zeromq.", 7) == 0)
                what = "inproc names fp-* and zeromq.* are floorpost's and libzmq's own";
        } else {
            what = "not an endpoint (scheme, then an address, no blanks)";
        }
        if (!what)
            return 0;
    }
    return s_fail(ctx, "[%s] %s = '%.*s': %s; allowed: %s", o->section, o->name, S_QUOTE_MAX, v,
                  what, o->allowed);
}

static int
s_check_instance(s_ctx_t *ctx, const s_option_t *o, const char *v)
{
    size_t len = strlen(v);
    const char *what = NULL;
    if (len == 0)
        what = "empty";
    else if (len >= o->size)
        what = "too long";
    else {
        for (const char *p = v; *p && !what; p++) {
            char c = *p;
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                  || c == '.' || c == '_' || c == '-'))
                what = "bad character";
        }
    }
    if (!what)
        return 0;
    return s_fail(ctx, "[%s] %s = '%.*s': %s; allowed: %s", o->section, o->name, S_QUOTE_MAX, v,
                  what, o->allowed);
}

/* A time zone: "UTC", or a name of the system's tz database (a TZif file
   under /usr/share/zoneinfo), so a typo is an error here and not UTC in
   every posting date. */
static int
s_check_time_zone(s_ctx_t *ctx, const s_option_t *o, const char *v)
{
    size_t len = strlen(v);
    const char *what = NULL;
    if (len == 0 || len >= o->size)
        what = len ? "too long" : "empty";
    else if (strcmp(v, "UTC") == 0)
        return 0;
    else if (v[0] == '/' || strstr(v, "..") || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                     "abcdefghijklmnopqrstuvwxyz0123456789/_+-")
                                                  != len)
        what = "not a zone name";
    else {
        char path[FP_PATH_MAX + 32];
        snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", v);
        FILE *f = fopen(path, "rb");
        char magic[4] = {0};
        if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, "TZif", 4) != 0)
            what = "no such zone in /usr/share/zoneinfo (package tzdata)";
        if (f)
            fclose(f);
    }
    if (!what)
        return 0;
    return s_fail(ctx, "[%s] %s = '%.*s': %s; allowed: %s", o->section, o->name, S_QUOTE_MAX, v,
                  what, o->allowed);
}

/* Sets option o from the (unquoted, trimmed) value v in cfg. */
static int
s_set(s_ctx_t *ctx, fp_config_t *cfg, const s_option_t *o, const char *v)
{
    char *field = (char *)cfg + o->offset;
    int64_t x = 0;
    switch (o->kind) {
    case OPT_INSTANCE:
        if (s_check_instance(ctx, o, v) != 0)
            return -1;
        s_set_string(cfg, o, v);
        return 0;
    case OPT_ENDPOINT:
        if (s_check_endpoint(ctx, o, v) != 0)
            return -1;
        s_set_string(cfg, o, v);
        return 0;
    case OPT_PATH: {
        size_t len = strlen(v);
        if (len >= o->size)
            return s_fail(ctx, "[%s] %s: too long (%zu characters); allowed: at most %zu",
                          o->section, o->name, len, o->size - 1);
        if (len == 0 && !o->may_be_empty)
            return s_fail(ctx, "[%s] %s: empty; allowed: %s", o->section, o->name, o->allowed);
        s_set_string(cfg, o, v);
        return 0;
    }
    case OPT_IPV4: {
        struct in_addr a;
        if (strlen(v) >= o->size || inet_pton(AF_INET, v, &a) != 1)
            return s_fail(ctx, "[%s] %s = '%.*s': not an IPv4 address (four numbers 0..255, "
                          "no host name); allowed: %s", o->section, o->name, S_QUOTE_MAX, v,
                          o->allowed);
        s_set_string(cfg, o, v);
        return 0;
    }
    case OPT_TIME_ZONE:
        if (s_check_time_zone(ctx, o, v) != 0)
            return -1;
        s_set_string(cfg, o, v);
        return 0;
    case OPT_PERIOD: {
        int k = fp_period_kind_parse(v);
        if (k < 0)
            return s_fail(ctx, "[%s] %s = '%.*s': unknown period; allowed: %s", o->section,
                          o->name, S_QUOTE_MAX, v, o->allowed);
        memcpy(field, &k, sizeof k);
        return 0;
    }
    case OPT_CLOSED: {
        static const char *const modes[] = {"post_to_first_open", "dead_letter"};
        for (int i = 0; i < 2; i++)
            if (strcmp(v, modes[i]) == 0) {
                memcpy(field, &i, sizeof i);
                return 0;
            }
        return s_fail(ctx, "[%s] %s = '%.*s': unknown mode; allowed: %s", o->section, o->name,
                      S_QUOTE_MAX, v, o->allowed);
    }
    case OPT_SHIFTS: {
        fp_period_cfg_t pc = {.kind = FP_PERIOD_SHIFT};
        char why[128];
        if (strlen(v) >= o->size)
            return s_fail(ctx, "[%s] %s: too long (%zu characters); allowed: at most %zu",
                          o->section, o->name, strlen(v), o->size - 1);
        if (fp_period_parse_shifts(v, &pc, why, sizeof why) != 0)
            return s_fail(ctx, "[%s] %s = '%.*s': %s; allowed: %s", o->section, o->name,
                          S_QUOTE_MAX, v, why, o->allowed);
        s_set_string(cfg, o, v);
        return 0;
    }
    case OPT_DATE: {
        int32_t d;
        if (v[0] && fp_period_parse_date(v, &d) != 0)
            return s_fail(ctx, "[%s] %s = '%.*s': not a date; allowed: %s", o->section, o->name,
                          S_QUOTE_MAX, v, o->allowed);
        s_set_string(cfg, o, v);
        return 0;
    }
    case OPT_MODULI: {
        char why[160];
        if (strlen(v) >= o->size)
            return s_fail(ctx, "[%s] %s: too long (%zu characters); allowed: at most %zu",
                          o->section, o->name, strlen(v), o->size - 1);
        fp_counter_modulus_t list[FP_COUNTER_MODULI_MAX];
        if (fp_config_counter_moduli(v, list, FP_COUNTER_MODULI_MAX, why, sizeof why) < 0)
            return s_fail(ctx, "[%s] %s = '%.*s': %s; allowed: %s", o->section, o->name,
                          S_QUOTE_MAX, v, why, o->allowed);
        s_set_string(cfg, o, v);
        return 0;
    }
    case OPT_LOG_LEVEL: {
        static const char *const levels[] = {"debug", "info", "warn", "error"};
        for (int i = 0; i < 4; i++)
            if (strcmp(v, levels[i]) == 0) {
                memcpy(field, &i, sizeof i);
                return 0;
            }
        return s_fail(ctx, "[%s] %s = '%.*s': unknown level; allowed: %s", o->section, o->name,
                      S_QUOTE_MAX, v, o->allowed);
    }
    case OPT_BOOL: {
        bool b = false;
        if (s_parse_bool(ctx, o, v, &b) != 0)
            return -1;
        memcpy(field, &b, sizeof b);
        return 0;
    }
    case OPT_INT:
    case OPT_I64:
    case OPT_U32:
    case OPT_U64:
    case OPT_U32_POW2:
        break;
    }
    if (s_parse_int(ctx, o, v, &x) != 0)
        return -1;
    /* The range check above guarantees x fits the field's type. */
    if (o->kind == OPT_INT) {
        int i = (int)x;
        assert(o->size == sizeof i);
        memcpy(field, &i, sizeof i);
    } else if (o->kind == OPT_I64) {
        assert(o->size == sizeof x);
        memcpy(field, &x, sizeof x);
    } else if (o->kind == OPT_U64) {
        uint64_t u = (uint64_t)x;
        assert(o->size == sizeof u);
        memcpy(field, &u, sizeof u);
    } else {
        uint32_t u = (uint32_t)x;
        assert(o->size == sizeof u);
        memcpy(field, &u, sizeof u);
    }
    return 0;
}

/* [sink NAME]: a new sink entry (its options are the type's, checked by
   fp_sinks_check). */
static int
s_sink_header(s_ctx_t *ctx, const char *name)
{
    fp_config_t *cfg = ctx->cfg;
    size_t len = strlen(name);
    const char *allowed = "[sink NAME], NAME 1..48 of A-Z a-z 0-9 . _ -";
    if (len == 0)
        return s_fail(ctx, "section [sink] without a name; allowed: %s", allowed);
    if (len > FP_SINK_NAME_MAX || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                               "0123456789._-") != len)
        return s_fail(ctx, "section [sink %.*s]: bad name; allowed: %s", S_QUOTE_MAX, name,
                      allowed);
    for (int i = 0; i < cfg->nsinks; i++)
        if (strcmp(cfg->sinks[i].name, name) == 0)
            return s_fail(ctx, "section [sink %s] given twice (first on line %d); allowed: each "
                          "sink name once", name, cfg->sinks[i].line);
    if (cfg->nsinks >= FP_SINKS_MAX)
        return s_fail(ctx, "section [sink %s]: too many sinks; allowed: at most %d", name,
                      FP_SINKS_MAX);
    fp_sink_config_t *sc = &cfg->sinks[cfg->nsinks++];
    memset(sc, 0, sizeof *sc);
    memcpy(sc->name, name, len + 1);
    sc->line = ctx->line;
    ctx->section = "sink";
    ctx->sink = sc;
    return 0;
}

/* key = value in a [sink NAME] section: kept as text with its line. */
static int
s_sink_option(s_ctx_t *ctx, const char *key, char *v)
{
    fp_sink_config_t *sc = ctx->sink;
    size_t klen = strlen(key);
    if (klen >= FP_SINK_KEY_MAX || strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789_") != klen)
        return s_fail(ctx, "[sink %s] option '%.*s': bad name; allowed: 1..31 of a-z 0-9 _",
                      sc->name, S_QUOTE_MAX, key);
    for (int i = 0; i < sc->nkv; i++)
        if (strcmp(sc->kv[i].key, key) == 0)
            return s_fail(ctx, "[sink %s] option '%s' given twice (first on line %d); allowed: "
                          "once", sc->name, key, sc->kv[i].line);
    if (sc->nkv >= FP_SINK_OPTS_MAX)
        return s_fail(ctx, "[sink %s] option '%s': too many options; allowed: at most %d",
                      sc->name, key, FP_SINK_OPTS_MAX);
    v = s_trim(v);
    if (*v == '"') {
        char *close = strchr(v + 1, '"');
        if (!close)
            return s_fail(ctx, "[sink %s] %s = '%.*s': unterminated quoted string; allowed: "
                          "\"text\"", sc->name, key, S_QUOTE_MAX, v);
        *close = '\0';
        char *rest = close + 1;
        s_cut_comment(rest);
        rest = s_trim(rest);
        if (*rest)
            return s_fail(ctx, "[sink %s] %s: text '%.*s' after the quoted value; allowed: a "
                          "comment starting with # or ;", sc->name, key, S_QUOTE_MAX, rest);
        v++;
    } else {
        s_cut_comment(v);
        v = s_trim(v);
    }
    size_t vlen = strlen(v);
    if (vlen >= FP_SINK_VALUE_MAX)
        return s_fail(ctx, "[sink %s] %s: too long (%zu characters); allowed: at most %d",
                      sc->name, key, vlen, FP_SINK_VALUE_MAX - 1);
    fp_sink_kv_t *kv = &sc->kv[sc->nkv++];
    memcpy(kv->key, key, klen + 1);
    memcpy(kv->value, v, vlen + 1);
    kv->line = ctx->line;
    return 0;
}

const char *
fp_sink_config_get(const fp_sink_config_t *sc, const char *key, int *line)
{
    for (int i = 0; i < sc->nkv; i++)
        if (strcmp(sc->kv[i].key, key) == 0) {
            if (line)
                *line = sc->kv[i].line;
            return sc->kv[i].value;
        }
    return NULL;
}

static int
s_section_header(s_ctx_t *ctx, char *line)
{
    /* line starts with '[' and is trimmed */
    char *close = strchr(line, ']');
    char sections[256];
    size_t n = 0;
    sections[0] = '\0';
    for (size_t i = 0; i < S_NSECTIONS; i++) {
        int w = snprintf(sections + n, sizeof sections - n, "%s, ", s_sections[i]);
        assert(w > 0 && (size_t)w < sizeof sections - n);
        n += (size_t)w;
    }
    snprintf(sections + n, sizeof sections - n, "sink NAME");
    if (!close)
        return s_fail(ctx, "malformed section header '%.*s': missing ']'; allowed: %s",
                      S_QUOTE_MAX, line, sections);
    *close = '\0';
    char *rest = close + 1;
    s_cut_comment(rest);
    rest = s_trim(rest);
    if (*rest != '\0')
        return s_fail(ctx, "text '%.*s' after section header [%.*s]; allowed: a comment "
                      "starting with # or ;", S_QUOTE_MAX, rest, S_QUOTE_MAX, line + 1);
    char *name = s_trim(line + 1);
    ctx->sink = NULL;
    for (size_t i = 0; i < S_NSECTIONS; i++) {
        if (strcmp(name, s_sections[i]) == 0) {
            ctx->section = s_sections[i];
            return 0;
        }
    }
    if (strncmp(name, "sink", 4) == 0 && (name[4] == '\0' || s_space(name[4])))
        return s_sink_header(ctx, s_trim(name + 4));
    return s_fail(ctx, "unknown section [%.*s]; allowed: %s", S_QUOTE_MAX, name, sections);
}

/* Extracts the value: a "quoted" string (no escapes, may hold # and ;) or
   bare text up to a trailing comment. Returns NULL after an error. */
static char *
s_value(s_ctx_t *ctx, const s_option_t *o, char *v)
{
    v = s_trim(v);
    if (*v != '"') {
        s_cut_comment(v);
        return s_trim(v);
    }
    char *close = strchr(v + 1, '"');
    if (!close) {
        s_fail(ctx, "[%s] %s = '%.*s': unterminated quoted string; allowed: \"text\"",
               o->section, o->name, S_QUOTE_MAX, v);
        return NULL;
    }
    *close = '\0';
    char *rest = close + 1;
    s_cut_comment(rest);
    rest = s_trim(rest);
    if (*rest != '\0') {
        s_fail(ctx, "[%s] %s: text '%.*s' after the quoted value; allowed: a comment "
               "starting with # or ;", o->section, o->name, S_QUOTE_MAX, rest);
        return NULL;
    }
    return v + 1;
}

/* Points ctx at the later of the lines that gave options a and b (kept
   when neither was given: the end of the text). */
static void
s_line_of(s_ctx_t *ctx, const int *first_line, const char *a, const char *b)
{
    int l = 0;
    for (size_t i = 0; i < S_NOPTIONS; i++)
        if ((strcmp(s_options[i].name, a) == 0 || strcmp(s_options[i].name, b) == 0) &&
            first_line[i] > l)
            l = first_line[i];
    if (l)
        ctx->line = l;
}

/* Two binds of one address fail the start ("Address already in use"):
   the same endpoint twice, or one TCP port on overlapping hosts ('*' and
   0.0.0.0 overlap every host), the metrics port included. Reported at the
   later of the two options' lines. Interface names are not resolved to
   their addresses here. */
static bool
s_hosts_overlap(const char *a, const char *b)
{
    bool any_a = strcmp(a, "*") == 0 || strcmp(a, "0.0.0.0") == 0;
    bool any_b = strcmp(b, "*") == 0 || strcmp(b, "0.0.0.0") == 0;
    return any_a || any_b || strcmp(a, b) == 0;
}

static int
s_check_binds(s_ctx_t *ctx, const fp_config_t *cfg, const int *first_line)
{
    size_t idx[S_NOPTIONS + 1], n = 0, metrics = S_NOPTIONS;
    for (size_t i = 0; i < S_NOPTIONS; i++) {
        if (s_options[i].kind == OPT_ENDPOINT && ((const char *)cfg + s_options[i].offset)[0])
            idx[n++] = i;
        if (strcmp(s_options[i].name, "metrics_port") == 0)
            metrics = i;
    }
    assert(metrics < S_NOPTIONS);
    for (size_t a = 0; a < n; a++) {
        const s_option_t *oa = &s_options[idx[a]];
        const char *va = (const char *)cfg + oa->offset;
        char ha[FP_ENDPOINT_MAX], hb[FP_ENDPOINT_MAX];
        int pa = 0, pb = 0;
        bool tcp_a = strncmp(va, "tcp://", 6) == 0 && !s_tcp_address(va + 6, ha, sizeof ha, &pa);
        for (size_t b = a + 1; b <= n; b++) {
            const s_option_t *ob;
            bool clash;
            if (b < n) {
                ob = &s_options[idx[b]];
                const char *vb = (const char *)cfg + ob->offset;
                bool tcp_b = strncmp(vb, "tcp://", 6) == 0 &&
                             !s_tcp_address(vb + 6, hb, sizeof hb, &pb);
                clash = strcmp(va, vb) == 0 ||
                        (tcp_a && tcp_b && pa == pb && s_hosts_overlap(ha, hb));
            } else {
                ob = &s_options[metrics];
                clash = tcp_a && cfg->metrics_port == pa &&
                        s_hosts_overlap(ha, cfg->metrics_address);
            }
            if (!clash)
                continue;
            int la = first_line[idx[a]], lb = first_line[ob - s_options];
            if (la || lb)
                ctx->line = la > lb ? la : lb;
            if (b == n)
                return s_fail(ctx, "[%s] %s = '%s' and [metrics] metrics_port = %d on %s: the "
                              "same TCP port twice; allowed: a different port for each",
                              oa->section, oa->name, va, cfg->metrics_port,
                              cfg->metrics_address);
            return s_fail(ctx, "[%s] %s = '%s' and [%s] %s = '%s': the same address twice; "
                          "allowed: a different endpoint (a different TCP port) for each",
                          oa->section, oa->name, va, ob->section, ob->name,
                          (const char *)cfg + ob->offset);
        }
    }
    return 0;
}

static int
s_parse_text(s_ctx_t *ctx, fp_config_t *cfg, char *text)
{
    int first_line[S_NOPTIONS];     /* line each option was given on; 0 = not */
    memset(first_line, 0, sizeof first_line);
    char *p = text;
    if ((unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
        p += 3;                     /* a UTF-8 byte order mark */
    ctx->line = 0;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        char *line = s_trim(p);
        p = nl ? nl + 1 : NULL;
        ctx->line++;
        if (*line == '\0' || *line == '#' || *line == ';')
            continue;
        if (*line == '[') {
            if (s_section_header(ctx, line) != 0)
                return -1;
            continue;
        }
        char *eq = strchr(line, '=');
        if (!eq) {
            if (!ctx->section)
                return s_fail(ctx, "line without '=' outside any [section]: '%.*s'; allowed: "
                              "[section], key = value, # comment", S_QUOTE_MAX, line);
            return s_fail(ctx, "[%s] line without '=': '%.*s'; allowed: key = value, "
                          "[section], # comment", ctx->section, S_QUOTE_MAX, line);
        }
        *eq = '\0';
        char *key = s_trim(line);
        if (*key == '\0')
            return s_fail(ctx, "%s%s%sline without an option name before '='; allowed: "
                          "key = value", ctx->section ? "[" : "",
                          ctx->section ? ctx->section : "", ctx->section ? "] " : "");
        if (!ctx->section)
            return s_fail(ctx, "option '%.*s' outside any [section]; allowed: a [section] "
                          "header first", S_QUOTE_MAX, key);
        if (ctx->sink) {
            if (s_sink_option(ctx, key, eq + 1) != 0)
                return -1;
            continue;
        }
        const s_option_t *o = NULL;
        size_t idx = 0;
        for (size_t i = 0; i < S_NOPTIONS; i++) {
            if (strcmp(s_options[i].section, ctx->section) == 0
                && strcmp(s_options[i].name, key) == 0) {
                o = &s_options[i];
                idx = i;
                break;
            }
        }
        if (!o) {
            /* "allowed" lists this section's options */
            char list[512];
            size_t n = 0;
            list[0] = '\0';
            for (size_t i = 0; i < S_NOPTIONS; i++) {
                if (strcmp(s_options[i].section, ctx->section) != 0)
                    continue;
                int w = snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "",
                                 s_options[i].name);
                if (w < 0 || (size_t)w >= sizeof list - n)
                    break;
                n += (size_t)w;
            }
            /* say where it belongs if it is another section's option */
            const char *home = NULL;
            for (size_t i = 0; i < S_NOPTIONS && !home; i++) {
                if (strcmp(s_options[i].name, key) == 0)
                    home = s_options[i].section;
            }
            if (home)
                return s_fail(ctx, "unknown option '%.*s' in [%s] (it belongs in [%s]); "
                              "allowed: %s", S_QUOTE_MAX, key, ctx->section, home, list);
            return s_fail(ctx, "unknown option '%.*s' in [%s]; allowed: %s", S_QUOTE_MAX, key,
                          ctx->section, list);
        }
        if (first_line[idx] != 0)
            return s_fail(ctx, "[%s] option '%s' given twice (first on line %d); allowed: "
                          "once", o->section, o->name, first_line[idx]);
        first_line[idx] = ctx->line;
        char *v = s_value(ctx, o, eq + 1);
        if (!v || s_set(ctx, cfg, o, v) != 0)
            return -1;
    }
    /* Cross-option rules, reported at the line that broke them (or the
       end of the text when the value came from the caller's defaults). */
    size_t i_router = 1, i_pull = 2;
    assert(strcmp(s_options[i_router].name, "ingest_router") == 0);
    assert(strcmp(s_options[i_pull].name, "ingest_pull") == 0);
    if (cfg->ingest_router[0] == '\0' && cfg->ingest_pull[0] == '\0') {
        int l1 = first_line[i_router], l2 = first_line[i_pull];
        if (l1 || l2)
            ctx->line = l1 > l2 ? l1 : l2;
        return s_fail(ctx, "[service] ingest_router and ingest_pull are both empty; allowed: "
                      "at least one of them set (tcp://..., ipc://... or inproc://...)");
    }
    for (size_t i = 0; i < S_NOPTIONS; i++) {
        const s_option_t *o = &s_options[i];
        if (o->kind == OPT_ENDPOINT && !o->may_be_empty && ((char *)cfg + o->offset)[0] == '\0')
            return s_fail(ctx, "[%s] option '%s' is required but empty; allowed: %s",
                          o->section, o->name, o->allowed);
    }
    if (s_check_binds(ctx, cfg, first_line) != 0)
        return -1;
    for (int i = 0; i < cfg->nsinks; i++) {
        const fp_sink_config_t *sc = &cfg->sinks[i];
        if (!fp_sink_config_get(sc, "type", NULL)) {
            ctx->line = sc->line;
            return s_fail(ctx, "[sink %s] has no 'type'; allowed: type = jsonl, postgresql or "
                          "http", sc->name);
        }
        if (cfg->state_dir[0] == '\0') {
            ctx->line = sc->line;
            return s_fail(ctx, "[sink %s] needs durability (a sink delivers from the committed "
                          "outbox); allowed: [durability] state_dir set", sc->name);
        }
    }
    /* The dead letters' budgets must fit the map (docs/durability.md). */
    if (cfg->deadletter_max_mb > cfg->map_size_mb / 2) {
        s_line_of(ctx, first_line, "deadletter_max_mb", "map_size_mb");
        return s_fail(ctx, "[durability] deadletter_max_mb = %llu: more than half of "
                      "map_size_mb = %llu; allowed: 0 (a quarter of the map) or 1..%llu",
                      (unsigned long long)cfg->deadletter_max_mb,
                      (unsigned long long)cfg->map_size_mb,
                      (unsigned long long)(cfg->map_size_mb / 2));
    }
    if (cfg->deadletter_round_max_kb &&
        (cfg->deadletter_round_max_kb < 4 ||
         cfg->deadletter_round_max_kb > cfg->map_size_mb * 1024 / 32)) {
        s_line_of(ctx, first_line, "deadletter_round_max_kb", "map_size_mb");
        return s_fail(ctx, "[durability] deadletter_round_max_kb = %llu: %s; allowed: 0 (auto) "
                      "or 4..%llu (map_size_mb * 1024 / 32)",
                      (unsigned long long)cfg->deadletter_round_max_kb,
                      cfg->deadletter_round_max_kb < 4 ? "below 4"
                                                       : "more than 1/32 of map_size_mb",
                      (unsigned long long)(cfg->map_size_mb * 1024 / 32));
    }
    /* CURVE without an allowlist would refuse every client. */
    if (cfg->curve_secret_key_file[0] && !cfg->curve_allow_file[0]) {
        int l = 0;
        for (size_t i = 0; i < S_NOPTIONS; i++)
            if (strncmp(s_options[i].name, "curve_", 6) == 0 && first_line[i] > l)
                l = first_line[i];
        if (l)
            ctx->line = l;
        return s_fail(ctx, "[security] curve_secret_key_file is set but curve_allow_file is "
                      "empty; allowed: both set (CURVE), or curve_secret_key_file = \"\" "
                      "(plain endpoints)");
    }
    return 0;
}

int
fp_config_parse(fp_config_t *cfg, const char *text, const char *name, char *err, size_t errlen)
{
    assert(cfg && text);
    s_ctx_t ctx = {name ? name : "(config)", 0, NULL, NULL, NULL, err, errlen};
    if (err && errlen)
        err[0] = '\0';
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (!copy)
        return s_fail(&ctx, "out of memory reading the configuration");
    memcpy(copy, text, len + 1);
    /* work on a copy so *cfg stays as it was on error; memcpy keeps the
       padding bytes too, so a memcmp of two configs stays meaningful */
    fp_config_t *tmp = malloc(sizeof *tmp); /* sinks make it large for a stack */
    if (!tmp) {
        free(copy);
        return s_fail(&ctx, "out of memory reading the configuration");
    }
    memcpy(tmp, cfg, sizeof *tmp);
    ctx.cfg = tmp;
    int rc = s_parse_text(&ctx, tmp, copy);
    if (rc == 0)
        memcpy(cfg, tmp, sizeof *tmp);
    free(tmp);
    free(copy);
    return rc;
}

int
fp_config_diff(const fp_config_t *a, const fp_config_t *b,
               void (*fn)(void *ctx, const char *section, const char *name), void *ctx)
{
    int n = 0;
    for (size_t i = 0; i < S_NOPTIONS; i++) {
        const s_option_t *o = &s_options[i];
        if (memcmp((const char *)a + o->offset, (const char *)b + o->offset, o->size) != 0) {
            fn(ctx, o->section, o->name);
            n++;
        }
    }
    if (a->nsinks != b->nsinks ||
        memcmp(a->sinks, b->sinks, (size_t)a->nsinks * sizeof a->sinks[0]) != 0) {
        fn(ctx, "sink", "*");
        n++;
    }
    return n;
}

int
fp_config_load(fp_config_t *cfg, const char *path, char *err, size_t errlen)
{
    assert(cfg && path);
    s_ctx_t ctx = {path, 0, NULL, NULL, NULL, err, errlen};
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
        return -1;
    }
    int rc = -1;
    char *buf = malloc(FP_CONFIG_FILE_MAX + 1);
    if (!buf) {
        s_fail(&ctx, "out of memory reading the configuration");
        goto cleanup;
    }
    size_t n = fread(buf, 1, FP_CONFIG_FILE_MAX + 1, f);
    if (ferror(f)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto cleanup;
    }
    if (n > FP_CONFIG_FILE_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "%s: larger than %u bytes; allowed: a short text file", path,
                     FP_CONFIG_FILE_MAX);
        goto cleanup;
    }
    buf[n] = '\0';
    if (strlen(buf) != n) {
        /* name the line holding the NUL byte */
        ctx.line = 1;
        for (size_t i = 0; buf[i]; i++)
            ctx.line += buf[i] == '\n';
        s_fail(&ctx, "contains a NUL byte; allowed: a text file");
        goto cleanup;
    }
    rc = fp_config_parse(cfg, buf, path, err, errlen);
cleanup:
    free(buf);
    fclose(f);
    return rc;
}

int
fp_config_counter_moduli(const char *text, fp_counter_modulus_t *out, int max, char *err,
                         size_t errlen)
{
    int n = 0;
    const char *p = text;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return 0;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *name = p;
        while (*p && *p != '=' && *p != ',')
            p++;
        size_t nlen = (size_t)(p - name);
        while (nlen > 0 && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
            nlen--;
        if (nlen == 0 || nlen > FP_COUNTER_NAME_MAX) {
            snprintf(err, errlen, "a counter name must be 1..%d bytes before '='",
                     FP_COUNTER_NAME_MAX);
            return -1;
        }
        if (*p != '=') {
            snprintf(err, errlen, "'%.*s' has no '=MODULUS'", (int)nlen, name);
            return -1;
        }
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        char *end;
        errno = 0;
        unsigned long long m = strtoull(p, &end, 10);
        if (end == p || *p == '-' || errno == ERANGE || m < 2 || m > (1ull << 62)) {
            snprintf(err, errlen, "the modulus of '%.*s' is not an integer 2..2^62", (int)nlen,
                     name);
            return -1;
        }
        p = end;
        while (*p == ' ' || *p == '\t')
            p++;
        if (n == max) {
            snprintf(err, errlen, "more than %d counters", max);
            return -1;
        }
        for (int i = 0; out && i < n; i++)
            if (strlen(out[i].name) == nlen && memcmp(out[i].name, name, nlen) == 0) {
                snprintf(err, errlen, "counter '%.*s' given twice", (int)nlen, name);
                return -1;
            }
        if (out) {
            memcpy(out[n].name, name, nlen);
            out[n].name[nlen] = '\0';
            out[n].modulus = m;
        }
        n++;
        if (*p == '\0')
            return n;
        if (*p != ',') {
            snprintf(err, errlen, "'%.20s': entries must be separated by commas", p);
            return -1;
        }
        p++;
    }
}

void
fp_config_connect_endpoint(const char *bind, char *out, size_t cap)
{
    const char *star = strstr(bind, "://*:");
    const char *any = strstr(bind, "://0.0.0.0:");
    if (star)
        snprintf(out, cap, "%.*s://127.0.0.1:%s", (int)(star - bind), bind, star + 5);
    else if (any)
        snprintf(out, cap, "%.*s://127.0.0.1:%s", (int)(any - bind), bind, any + 11);
    else
        snprintf(out, cap, "%s", bind);
}

uint64_t
fp_config_dl_max_bytes(const fp_config_t *cfg)
{
    uint64_t mb = cfg->deadletter_max_mb;
    return mb ? mb << 20 : (cfg->map_size_mb << 20) / 4;
}

uint64_t
fp_config_dl_round_bytes(const fp_config_t *cfg)
{
    if (cfg->deadletter_round_max_kb)
        return cfg->deadletter_round_max_kb << 10;
    uint64_t b = (cfg->map_size_mb << 20) / 256;
    return b < (4u << 10) ? 4u << 10 : b > (1u << 20) ? 1u << 20 : b;
}
