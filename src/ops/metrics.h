/*  metrics.h - process-wide counters, per-stage gauges and histograms, and
    their Prometheus text exposition.

    Thread contract: every value is a relaxed atomic. A metric is a count or
    a gauge, never a synchronisation point: readers need no ordering with
    any other memory, and a scrape may see one stage's values a round older
    than another's. Writers:
      - counters (fp_metrics_add, fp_metrics_dead_letter): any stage, per
        batch or per round, not per record, so cache-line traffic stays small;
      - a stage's own slot (fp_metrics_stage_*: busy time, heartbeat,
        received): only that stage's thread; "sent" into a stage's input
        queue: the stages upstream of it (a relaxed add, per message);
      - a shard's slot (fp_metrics_shard_set): only that shard, per round;
      - a worker's source area (fp_metrics_source_set): only that worker,
        per batch; the area is preallocated, so no writer ever allocates;
      - the histograms: the stage that observes them merges a local
        histogram once per round (fp_metrics_hist_merge).
    Readers (the exit summary, the HTTP thread's /metrics and /healthz) may
    read at any time; fp_metrics_new/destroy run on main, before the stages
    start and after they were joined.
*/
#ifndef FP_METRICS_H
#define FP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain.h"

typedef enum {
    FP_M_FRAMES_IN = 0,    /* telemetry frames received by ingest */
    FP_M_BYTES_IN,         /* their bytes */
    FP_M_BATCHES_OK,       /* frames that parsed as a batch */
    FP_M_RECORDS_IN,       /* records in parsed batches */
    FP_M_RECORDS_ACCEPTED, /* unique, valid records handed to aggregation */
    FP_M_DUPLICATES,       /* records dropped as duplicates */
    FP_M_GAPS,             /* seqs skipped (may be filled later) */
    FP_M_GAPS_FILLED,      /* reordered seqs that filled a gap */
    FP_M_EPOCH_CHANGES,    /* producers that restarted with a newer epoch */
    FP_M_ACKS,             /* acks sent to producers */
    FP_M_EVENTS_CONSUMPTION, /* checkpoints published, by kind */
    FP_M_EVENTS_COMPLETION,
    FP_M_EVENTS_SCRAP,
    FP_M_EVENTS_LATE,      /* of which late corrections */
    FP_M_ROUNDS,           /* barrier rounds completed by emit */
    FP_M_DEAD_LETTERS,     /* dead letters published (all reasons) */
    FP_M_DL_DROPPED,       /* dead letters not kept: over a round's or the store's budget */
    FP_M_DL_TRIMMED,       /* stored dead letters deleted for age, count or bytes */
    FP_M_EVENTS_COUNTER_RESET, /* counter_reset events published */
    FP_M_EVENTS_BACKFILL,  /* checkpoints published with backfill = true */
    FP_M_COUNTER_READINGS, /* cumulative counter readings turned into deltas (all outcomes) */
    FP_M_COUNTER_ROLLOVERS,/* of which a rollover at the modulus */
    FP_M_COUNTER_UNPOSTED, /* of which posted nothing: a first reading, a repeat, jitter, an
                              older reading after a newer one */
    FP_M_ACKS_RETRIED,     /* acks that found the producer's queue full and waited */
    FP_M_ACKS_DROPPED,     /* acks never sent: the producer was gone, or too many waited */
    FP_M_SOURCES_NOT_ALLOWED, /* frames refused: their key may not send as their source */
    FP_M_SOURCES_RATE_LIMITED,/* frames refused: their peer started too many new sources */
    FP_M_SOURCES_EVICTED,  /* sources that left a worker's memory (idle, or for room) */
    FP_M_SOURCES_RELOADED, /* sources brought back from the state after leaving */
    FP_M_REPLAY_DAMAGED,   /* replay answers that stopped at a damaged outbox event */
    FP_M_COUNT
} fp_metric_t;

/* Dead-letter reasons (FP_DL_REASONS, fp_dl_reason_t): domain.h. */

/* At most this many sources appear in /metrics (split evenly across the
   workers), so a plant with many gateways cannot blow up a scrape. */
#define FP_METRICS_SOURCES_MAX 1000

typedef enum { FP_STAGE_INGEST = 0, FP_STAGE_WORKER, FP_STAGE_SHARD, FP_STAGE_EMIT } fp_stage_kind_t;

/* Histograms: fixed buckets (upper bounds in the exposition, in seconds). */
typedef enum {
    FP_H_ROUND = 0,     /* barrier injected by ingest -> every shard's barrier at emit */
    FP_H_PUBLISH_DELAY, /* newest event time summed -> checkpoint handed to emit */
    FP_H_COUNT
} fp_hist_t;

#define FP_HIST_BUCKETS 14 /* finite buckets; +Inf is count */

/* A histogram kept by one thread between merges (plain integers). */
typedef struct {
    uint64_t bucket[FP_HIST_BUCKETS]; /* observations <= bound i, not cumulative */
    uint64_t count;
    uint64_t sum_ns;
} fp_hist_local_t;

/* A shard's gauges, written per round. Kinds are indexed by FP_CK_* - 1
   (consumption, completion, scrap). */
typedef struct {
    uint64_t keys;            /* aggregation keys held */
    uint64_t open_operations; /* operations not completed */
    int64_t pending_quantity[3]; /* not yet published: thousandths of unit (consumption),
                                    parts (completion yield, scrap) */
    uint64_t pending_records[3];
} fp_shard_gauges_t;

typedef struct fp_metrics fp_metrics_t;
typedef struct fp_stage_slot fp_stage_slot_t;

/* Slots for `workers` ingest->worker pipes and `shards` shards (both 1..64).
   NULL on out of memory or bad counts; free with fp_metrics_destroy. */
fp_metrics_t *fp_metrics_new(int workers, int shards);
void fp_metrics_destroy(fp_metrics_t **self_p);

void fp_metrics_add(fp_metrics_t *self, fp_metric_t m, uint64_t n);
uint64_t fp_metrics_get(const fp_metrics_t *self, fp_metric_t m);

/* Counts one dead letter by reason (fp_dl_reason_t; out of range counts as
   FP_DL_other). */
void fp_metrics_dead_letter(fp_metrics_t *self, int reason);
uint64_t fp_metrics_dead_letters(const fp_metrics_t *self, int reason);

/* Counts n dead letters of `reason` that were not kept (not stored, not
   published): over a round's dead-letter budget or the store's
   (docs/durability.md). Any stage. */
void fp_metrics_dl_dropped(fp_metrics_t *self, int reason, uint64_t n);
uint64_t fp_metrics_dl_dropped_get(const fp_metrics_t *self, int reason);

/* Emit, once a second: the stored dead letters (count, and the pages of
   their table in bytes) after this pass's trim, which deleted `trimmed`. */
void fp_metrics_set_deadletters(fp_metrics_t *self, uint64_t count, uint64_t bytes,
                                uint64_t trimmed);

/* Writes every counter as logfmt (name=value ...) into buf; returns length. */
size_t fp_metrics_format(const fp_metrics_t *self, char *buf, size_t cap);

/* This process's peak resident set so far (VmHWM in /proc/self/status),
   KiB; 0 if unreadable. Any thread; reads /proc, so not on the data path. */
uint64_t fp_metrics_peak_rss_kb(void);

/* ---- per-stage gauges ---- */

/* The slot of a stage (index: the worker or shard number; 0 for ingest and
   emit). Valid until fp_metrics_destroy. */
fp_stage_slot_t *fp_metrics_stage(fp_metrics_t *self, fp_stage_kind_t kind, int index);

/* The stage is alive at now_ns (CLOCK_MONOTONIC); call each loop or round. */
void fp_metrics_stage_beat(fp_stage_slot_t *slot, int64_t now_ns);
/* The stage stopped (drained or failed): /healthz reports it. */
void fp_metrics_stage_exit(fp_stage_slot_t *slot);
/* ns the stage spent working (not waiting in zmq_poll or a blocking recv). */
void fp_metrics_stage_busy(fp_stage_slot_t *slot, int64_t ns);
/* Messages put into (sent) and taken from (received) the stage's input
   pipes; their difference is the queue depth. */
void fp_metrics_stage_sent(fp_stage_slot_t *slot, uint64_t n);
void fp_metrics_stage_received(fp_stage_slot_t *slot, uint64_t n);

/* ---- shards, sources, rounds ---- */

void fp_metrics_shard_set(fp_metrics_t *self, int shard, const fp_shard_gauges_t *g);

/* A worker's snapshot of one source after a batch (last_event_ns: newest
   event time of the batch, ns since the Unix epoch; now_wall_ns: when the
   worker processed it). A source that does not fit the worker's area is
   counted in the total only. */
void fp_metrics_source_set(fp_metrics_t *self, int worker, uint64_t source_id, uint64_t epoch,
                           uint64_t last_seq, uint64_t acked_seq, int64_t last_event_ns,
                           int64_t now_wall_ns);
/* Sources the worker tracks in total (its dedup state). */
void fp_metrics_sources_tracked(fp_metrics_t *self, int worker, uint64_t n);

/* Emit completed a round at now_ns (CLOCK_MONOTONIC). */
void fp_metrics_round_done(fp_metrics_t *self, int64_t now_ns);
/* Emit: 1 while round commits fail, 0 once they succeed again. */
void fp_metrics_set_commit_stalled(fp_metrics_t *self, int stalled);

/* Durable outbox readers shown in /metrics (more are not shown). */
#define FP_METRICS_READERS_MAX 16

/* Emit, once a second: durable reader `name` (1..63 bytes) is at position
   (the last global_seq it finished with), lag events behind the last
   committed global_seq; detached: 1 once emit detached it. A reader gets a
   slot the first time it is set and keeps it; the name is published to the
   HTTP thread with release/acquire. Emit only (one writer). */
void fp_metrics_set_reader(fp_metrics_t *self, const char *name, uint64_t position, uint64_t lag,
                           int detached);

/* Emit, once a second: the outbox's pages and the map size (bytes). */
/* The state's used pages (store.h fp_store_usage), once a second by emit. */
void fp_metrics_set_state_used(fp_metrics_t *self, uint64_t used_bytes);
void fp_metrics_set_outbox(fp_metrics_t *self, uint64_t outbox_bytes, uint64_t map_bytes);

/* Adds one observation (ns, negative counts as 0) to a local histogram. */
void fp_hist_observe(fp_hist_local_t *h, fp_hist_t which, int64_t ns);
/* Adds *h to the shared histogram `which` and zeroes *h. */
void fp_metrics_hist_merge(fp_metrics_t *self, fp_hist_t which, fp_hist_local_t *h);

/* ---- readers ---- */

/* The Prometheus text exposition (format 0.0.4) of everything, at now_ns
   (CLOCK_MONOTONIC). Returns a malloc'd NUL-terminated string (caller
   frees) and its length in *len, or NULL on out of memory. */
char *fp_metrics_prometheus(const fp_metrics_t *self, int64_t now_ns, size_t *len);

/* Another module's series and status (the sinks: src/sinks/sinks.h): prom
   returns malloc'd exposition text appended to /metrics, status a malloc'd
   JSON document served at /sinks. Set (fns non-NULL) before anyone may
   read them, cleared (NULL) before ctx is freed; the HTTP thread holds a
   reader count while it calls them, and clearing waits for it. */
typedef char *(*fp_metrics_text_fn)(const void *ctx, size_t *len);
void fp_metrics_set_sinks(fp_metrics_t *self, fp_metrics_text_fn prom, fp_metrics_text_fn status,
                          const void *ctx);
/* The sinks' status JSON (malloc'd), or NULL when none is registered. */
char *fp_metrics_sinks_status(const fp_metrics_t *self, size_t *len);

/* 0 when every stage has beaten within max_age_ns and the last round
   completed within max_age_ns; else -1 with the reason written to reason. */
int fp_metrics_health(const fp_metrics_t *self, int64_t now_ns, int64_t max_age_ns, char *reason,
                      size_t cap);

#endif
