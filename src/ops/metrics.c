/*  metrics.c - counters, gauges, histograms and the Prometheus exposition.
    See metrics.h for the thread contract: every shared field below is an
    _Atomic accessed with memory_order_relaxed, and each has one writer
    except the counters and a stage's "sent" count (relaxed adds from
    several threads).
*/
#include "metrics.h"

#include "buf.h"
#include "config.h"
#include "security.h"
#include "version.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>


static const char *s_names[FP_M_COUNT] = {
    "frames_in", "bytes_in", "batches_ok", "records_in", "records_accepted",
    "duplicates", "gaps", "gaps_filled", "epoch_changes", "acks",
    "events_consumption", "events_completion", "events_scrap", "events_late",
    "rounds", "dead_letters", "dead_letters_dropped", "dead_letters_trimmed",
    [FP_M_EVENTS_COUNTER_RESET] = "events_counter_reset",
    [FP_M_EVENTS_BACKFILL] = "events_backfill",
    [FP_M_COUNTER_READINGS] = "counter_readings",
    [FP_M_COUNTER_ROLLOVERS] = "counter_rollovers",
    [FP_M_COUNTER_UNPOSTED] = "counter_unposted",
    [FP_M_ACKS_RETRIED] = "acks_retried",
    [FP_M_ACKS_DROPPED] = "acks_dropped",
    [FP_M_SOURCES_NOT_ALLOWED] = "sources_not_allowed",
    [FP_M_SOURCES_RATE_LIMITED] = "sources_rate_limited",
    [FP_M_SOURCES_EVICTED] = "sources_evicted",
    [FP_M_REPLAY_DAMAGED] = "replay_damaged",
    [FP_M_SOURCES_RELOADED] = "sources_reloaded",
};

#define RLX memory_order_relaxed

/* Bucket upper bounds: ns for observing, text for the exposition. */
static const int64_t s_bound_ns[FP_H_COUNT][FP_HIST_BUCKETS] = {
    {500000, 1000000, 2500000, 5000000, 10000000, 25000000, 50000000, 100000000, 250000000,
     500000000, 1000000000, 2500000000, 5000000000, 10000000000},
    {10000000, 25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000,
     5000000000, 10000000000, 30000000000, 60000000000, 300000000000, 900000000000},
};
static const char *s_bound_txt[FP_H_COUNT][FP_HIST_BUCKETS] = {
    {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
     "2.5", "5", "10"},
    {"0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300",
     "900"},
};

/* One stage. The fields its own thread writes and the "sent" count that
   upstream threads add to live on separate cache lines. */
struct fp_stage_slot {
    _Alignas(64) _Atomic uint64_t sent;
    _Alignas(64) _Atomic uint64_t received;
    _Atomic uint64_t busy_ns;
    _Atomic int64_t beat_ns; /* CLOCK_MONOTONIC; 0 = not running */
    _Atomic int exited;
};

typedef struct {
    _Alignas(64) _Atomic uint64_t keys;
    _Atomic uint64_t open_operations;
    _Atomic int64_t pending_quantity[3];
    _Atomic uint64_t pending_records[3];
} s_shard_slot_t;

typedef struct {
    _Atomic uint64_t source_id; /* 0 = empty (source_id 0 is never valid) */
    _Atomic uint64_t epoch, last_seq, acked_seq;
    _Atomic int64_t last_event_ns, seen_wall_ns;
} s_source_slot_t;

typedef struct {
    _Atomic uint64_t bucket[FP_HIST_BUCKETS];
    _Atomic uint64_t count, sum_ns;
} s_hist_t;

struct fp_metrics {
    /* The sinks' providers (fp_metrics_set_sinks): a mutex, not atomics, so
       that clearing them waits for a scrape that is calling them. */
    pthread_mutex_t sinks_mu;
    fp_metrics_text_fn sinks_prom, sinks_status;
    const void *sinks_ctx;
    _Atomic uint64_t c[FP_M_COUNT];
    _Atomic uint64_t dl[FP_DL_COUNT];
    _Atomic uint64_t dl_dropped[FP_DL_COUNT];
    int workers, shards;
    int per_worker;                 /* source slots per worker */
    fp_stage_slot_t *stages;        /* ingest, workers, shards, emit */
    s_shard_slot_t *shard;          /* [shards] */
    s_source_slot_t *sources;       /* [workers * per_worker] */
    _Atomic uint64_t *tracked;      /* [workers] sources in dedup */
    _Atomic int64_t last_round_ns;  /* CLOCK_MONOTONIC; 0 = none yet */
    _Atomic int commit_stalled;     /* 1 while commits fail (disk or map full) */
    struct {
        char name[64];              /* written once, before `used` is released */
        _Atomic int used;
        _Atomic uint64_t position, lag;
        _Atomic int detached;
    } readers[FP_METRICS_READERS_MAX];
    _Atomic uint64_t outbox_bytes, map_bytes, state_used_bytes;
    _Atomic uint64_t dl_stored, dl_bytes; /* emit, once a second */
    s_hist_t hist[FP_H_COUNT];
};

fp_metrics_t *fp_metrics_new(int workers, int shards)
{
    if (workers < 1 || shards < 1 || workers > FP_WORKERS_MAX || shards > FP_SHARDS_MAX)
        return NULL;
    fp_metrics_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->sinks_mu, NULL);
    self->workers = workers;
    self->shards = shards;
    self->per_worker = FP_METRICS_SOURCES_MAX / workers;
    size_t nstages = 2 + (size_t)workers + (size_t)shards;
    self->stages = aligned_alloc(64, nstages * sizeof *self->stages);
    self->shard = aligned_alloc(64, (size_t)shards * sizeof *self->shard);
    self->sources = calloc((size_t)workers * (size_t)self->per_worker, sizeof *self->sources);
    self->tracked = calloc((size_t)workers, sizeof *self->tracked);
    if (!self->stages || !self->shard || !self->sources || !self->tracked) {
        fp_metrics_destroy(&self);
        return NULL;
    }
    memset(self->stages, 0, nstages * sizeof *self->stages);
    memset(self->shard, 0, (size_t)shards * sizeof *self->shard);
    return self;
}

void fp_metrics_destroy(fp_metrics_t **self_p)
{
    if (self_p && *self_p) {
        fp_metrics_t *self = *self_p;
        free(self->stages);
        free(self->shard);
        free(self->sources);
        free((void *)self->tracked);
        pthread_mutex_destroy(&self->sinks_mu);
        free(self);
        *self_p = NULL;
    }
}

void fp_metrics_add(fp_metrics_t *self, fp_metric_t m, uint64_t n)
{
    if (n)
        atomic_fetch_add_explicit(&self->c[m], n, RLX);
}

uint64_t fp_metrics_get(const fp_metrics_t *self, fp_metric_t m)
{
    return atomic_load_explicit(&((fp_metrics_t *)self)->c[m], RLX);
}

static size_t s_reason_index(int reason)
{
    return reason >= 0 && reason < FP_DL_COUNT ? (size_t)reason : (size_t)FP_DL_other;
}

void fp_metrics_dead_letter(fp_metrics_t *self, int reason)
{
    atomic_fetch_add_explicit(&self->dl[s_reason_index(reason)], 1, RLX);
    atomic_fetch_add_explicit(&self->c[FP_M_DEAD_LETTERS], 1, RLX);
}

uint64_t fp_metrics_dead_letters(const fp_metrics_t *self, int reason)
{
    return atomic_load_explicit(&((fp_metrics_t *)self)->dl[s_reason_index(reason)], RLX);
}

void fp_metrics_dl_dropped(fp_metrics_t *self, int reason, uint64_t n)
{
    atomic_fetch_add_explicit(&self->dl_dropped[s_reason_index(reason)], n, RLX);
    atomic_fetch_add_explicit(&self->c[FP_M_DL_DROPPED], n, RLX);
}

uint64_t fp_metrics_dl_dropped_get(const fp_metrics_t *self, int reason)
{
    return atomic_load_explicit(&((fp_metrics_t *)self)->dl_dropped[s_reason_index(reason)], RLX);
}

void fp_metrics_set_deadletters(fp_metrics_t *self, uint64_t count, uint64_t bytes,
                                uint64_t trimmed)
{
    atomic_store_explicit(&self->dl_stored, count, RLX);
    atomic_store_explicit(&self->dl_bytes, bytes, RLX);
    if (trimmed)
        atomic_fetch_add_explicit(&self->c[FP_M_DL_TRIMMED], trimmed, RLX);
}

size_t fp_metrics_format(const fp_metrics_t *self, char *buf, size_t cap)
{
    size_t n = 0;
    for (int i = 0; i < FP_M_COUNT && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s=%llu", n ? " " : "", s_names[i],
                              (unsigned long long)fp_metrics_get(self, (fp_metric_t)i));
    for (size_t i = 0; i < (size_t)FP_DL_COUNT && n < cap; i++) {
        uint64_t v = atomic_load_explicit(&((fp_metrics_t *)self)->dl[i], RLX);
        if (v)
            n += (size_t)snprintf(buf + n, cap - n, " dead_letter_%s=%llu", fp_dl_reason_name((int)i),
                                  (unsigned long long)v);
    }
    return n < cap ? n : cap - 1;
}

/* ---- writers ---- */

static int s_stage_index(const fp_metrics_t *self, fp_stage_kind_t kind, int index)
{
    switch (kind) {
    case FP_STAGE_INGEST:
        return 0;
    case FP_STAGE_WORKER:
        return 1 + index;
    case FP_STAGE_SHARD:
        return 1 + self->workers + index;
    case FP_STAGE_EMIT:
    default:
        return 1 + self->workers + self->shards;
    }
}

fp_stage_slot_t *fp_metrics_stage(fp_metrics_t *self, fp_stage_kind_t kind, int index)
{
    return &self->stages[s_stage_index(self, kind, index)];
}

void fp_metrics_stage_beat(fp_stage_slot_t *slot, int64_t now_ns)
{
    atomic_store_explicit(&slot->beat_ns, now_ns, RLX);
}

void fp_metrics_stage_exit(fp_stage_slot_t *slot)
{
    atomic_store_explicit(&slot->exited, 1, RLX);
}

void fp_metrics_stage_busy(fp_stage_slot_t *slot, int64_t ns)
{
    if (ns > 0)
        atomic_fetch_add_explicit(&slot->busy_ns, (uint64_t)ns, RLX);
}

void fp_metrics_stage_sent(fp_stage_slot_t *slot, uint64_t n)
{
    if (n)
        atomic_fetch_add_explicit(&slot->sent, n, RLX);
}

void fp_metrics_stage_received(fp_stage_slot_t *slot, uint64_t n)
{
    if (n)
        atomic_fetch_add_explicit(&slot->received, n, RLX);
}

void fp_metrics_shard_set(fp_metrics_t *self, int shard, const fp_shard_gauges_t *g)
{
    s_shard_slot_t *s = &self->shard[shard];
    atomic_store_explicit(&s->keys, g->keys, RLX);
    atomic_store_explicit(&s->open_operations, g->open_operations, RLX);
    for (int k = 0; k < 3; k++) {
        atomic_store_explicit(&s->pending_quantity[k], g->pending_quantity[k], RLX);
        atomic_store_explicit(&s->pending_records[k], g->pending_records[k], RLX);
    }
}

void fp_metrics_source_set(fp_metrics_t *self, int worker, uint64_t source_id, uint64_t epoch,
                           uint64_t last_seq, uint64_t acked_seq, int64_t last_event_ns,
                           int64_t now_wall_ns)
{
    if (source_id == 0 || self->per_worker == 0)
        return;
    s_source_slot_t *area = &self->sources[(size_t)worker * (size_t)self->per_worker];
    /* Open addressing inside the worker's own area; only this worker writes
       it, so a plain probe is race-free for writing. Probes are bounded so a
       full area costs O(1) per batch. */
    size_t n = (size_t)self->per_worker;
    size_t i = (size_t)((source_id * 0x9E3779B97F4A7C15ull) >> 32) % n;
    for (size_t probe = 0; probe < n && probe < 32; probe++, i = (i + 1) % n) {
        uint64_t id = atomic_load_explicit(&area[i].source_id, RLX);
        if (id != source_id && id != 0)
            continue;
        atomic_store_explicit(&area[i].epoch, epoch, RLX);
        atomic_store_explicit(&area[i].last_seq, last_seq, RLX);
        atomic_store_explicit(&area[i].acked_seq, acked_seq, RLX);
        atomic_store_explicit(&area[i].last_event_ns, last_event_ns, RLX);
        atomic_store_explicit(&area[i].seen_wall_ns, now_wall_ns, RLX);
        if (id == 0)
            atomic_store_explicit(&area[i].source_id, source_id, RLX);
        return;
    }
    /* No slot near: the source shows only in floorpost_sources. */
}

void fp_metrics_sources_tracked(fp_metrics_t *self, int worker, uint64_t n)
{
    atomic_store_explicit(&self->tracked[worker], n, RLX);
}

void fp_metrics_round_done(fp_metrics_t *self, int64_t now_ns)
{
    atomic_store_explicit(&self->last_round_ns, now_ns, RLX);
}

void fp_metrics_set_reader(fp_metrics_t *self, const char *name, uint64_t position, uint64_t lag,
                           int detached)
{
    size_t len = strnlen(name, 64);
    if (len < 1 || len > 63)
        return;
    for (int i = 0; i < FP_METRICS_READERS_MAX; i++) {
        /* Emit is the only writer: a relaxed load of its own `used` is
           enough; the release below publishes the name to the readers. */
        int used = atomic_load_explicit(&self->readers[i].used, RLX);
        if (used && strcmp(self->readers[i].name, name) != 0)
            continue;
        if (!used)
            memcpy(self->readers[i].name, name, len + 1);
        atomic_store_explicit(&self->readers[i].position, position, RLX);
        atomic_store_explicit(&self->readers[i].lag, lag, RLX);
        atomic_store_explicit(&self->readers[i].detached, detached, RLX);
        if (!used) /* pairs with the acquire in fp_metrics_prometheus */
            atomic_store_explicit(&self->readers[i].used, 1, memory_order_release);
        return;
    }
}

void fp_metrics_set_outbox(fp_metrics_t *self, uint64_t outbox_bytes, uint64_t map_bytes)
{
    atomic_store_explicit(&self->outbox_bytes, outbox_bytes, RLX);
    atomic_store_explicit(&self->map_bytes, map_bytes, RLX);
}

void fp_metrics_set_state_used(fp_metrics_t *self, uint64_t used_bytes)
{
    atomic_store_explicit(&self->state_used_bytes, used_bytes, RLX);
}

void fp_metrics_set_commit_stalled(fp_metrics_t *self, int stalled)
{
    atomic_store_explicit(&self->commit_stalled, stalled, RLX);
}

void fp_hist_observe(fp_hist_local_t *h, fp_hist_t which, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    h->count++;
    h->sum_ns += (uint64_t)ns;
    for (int i = 0; i < FP_HIST_BUCKETS; i++)
        if (ns <= s_bound_ns[which][i]) {
            h->bucket[i]++;
            break;
        }
}

void fp_metrics_hist_merge(fp_metrics_t *self, fp_hist_t which, fp_hist_local_t *h)
{
    if (h->count == 0)
        return;
    s_hist_t *s = &self->hist[which];
    for (int i = 0; i < FP_HIST_BUCKETS; i++)
        if (h->bucket[i])
            atomic_fetch_add_explicit(&s->bucket[i], h->bucket[i], RLX);
    atomic_fetch_add_explicit(&s->sum_ns, h->sum_ns, RLX);
    atomic_fetch_add_explicit(&s->count, h->count, RLX);
    memset(h, 0, sizeof *h);
}

/* ---- readers ---- */

typedef fp_buf_t s_buf_t; /* buf.h */
#define s_put fp_buf_put

static void s_head(s_buf_t *b, const char *name, const char *type, const char *help)
{
    s_put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void s_counter(s_buf_t *b, const char *name, const char *help, uint64_t v)
{
    s_head(b, name, "counter", help);
    s_put(b, "%s %llu\n", name, (unsigned long long)v);
}

static void s_gauge(s_buf_t *b, const char *name, const char *help, double v)
{
    s_head(b, name, "gauge", help);
    s_put(b, "%s %.17g\n", name, v);
}

static uint64_t s_ld(const _Atomic uint64_t *a)
{
    return atomic_load_explicit((_Atomic uint64_t *)a, RLX);
}

static int64_t s_ldi(const _Atomic int64_t *a)
{
    return atomic_load_explicit((_Atomic int64_t *)a, RLX);
}

static void s_stage_name(const fp_metrics_t *self, int i, char *out, size_t cap)
{
    if (i == 0)
        snprintf(out, cap, "ingest");
    else if (i <= self->workers)
        snprintf(out, cap, "worker-%d", i - 1);
    else if (i <= self->workers + self->shards)
        snprintf(out, cap, "shard-%d", i - 1 - self->workers);
    else
        snprintf(out, cap, "emit");
}

static uint64_t s_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

uint64_t fp_metrics_peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %llu", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* The standard process_* series (the names Prometheus' client libraries
   use, so the usual dashboards work), from /proc. */
static void s_process(s_buf_t *b)
{
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        /* after the command name in parentheses, which may hold spaces */
        const char *p = strrchr(buf, ')');
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
                               "%*d %*d %*d %*d %llu %llu", &utime, &stime, &start, &vsize) != 4)
            utime = stime = start = vsize = 0;
    }
    long tck = sysconf(_SC_CLK_TCK);
    double boot = 0;
    FILE *st = fopen("/proc/stat", "r");
    if (st) {
        char line[256];
        while (fgets(line, sizeof line, st))
            if (sscanf(line, "btime %lf", &boot) == 1)
                break;
        fclose(st);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            fds += e->d_name[0] != '.';
        closedir(d);
        fds--; /* the one opendir holds */
    }
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    s_head(b, "process_cpu_seconds_total", "counter", "User and system CPU time, seconds.");
    s_put(b, "process_cpu_seconds_total %.2f\n", tck > 0 ? (double)(utime + stime) / (double)tck : 0);
    s_head(b, "process_start_time_seconds", "gauge", "Start time since the Unix epoch, seconds.");
    s_put(b, "process_start_time_seconds %.2f\n", tck > 0 ? boot + (double)start / (double)tck : 0);
    s_gauge(b, "process_virtual_memory_bytes", "Virtual memory size.", (double)vsize);
    s_gauge(b, "process_resident_memory_bytes", "Resident set size.", (double)s_rss_bytes());
    s_gauge(b, "process_open_fds", "Open file descriptors.", (double)fds);
    s_gauge(b, "process_max_fds", "The file descriptor limit.", (double)rl.rlim_cur);
}

static void s_hist(s_buf_t *b, const fp_metrics_t *self, fp_hist_t which, const char *name,
                   const char *help)
{
    const s_hist_t *h = &self->hist[which];
    s_head(b, name, "histogram", help);
    /* count is read first and the buckets after: a merge in between can
       only make a bucket exceed count by one round's worth; clamp so the
       series stays monotonic. */
    uint64_t count = s_ld(&h->count), cum = 0;
    for (int i = 0; i < FP_HIST_BUCKETS; i++) {
        cum += s_ld(&h->bucket[i]);
        s_put(b, "%s_bucket{le=\"%s\"} %llu\n", name, s_bound_txt[which][i],
              (unsigned long long)(cum < count ? cum : count));
    }
    s_put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
    s_put(b, "%s_sum %.9f\n", name, (double)s_ld(&h->sum_ns) / 1e9);
    s_put(b, "%s_count %llu\n", name, (unsigned long long)count);
}


char *fp_metrics_prometheus(const fp_metrics_t *self, int64_t now_ns, size_t *len)
{
    s_buf_t b = {malloc(16384), 0, 16384, false};
    if (!b.p)
        return NULL;
    const _Atomic uint64_t *c = self->c;
    s_counter(&b, "floorpost_frames_received_total", "Telemetry frames read from producers.",
              s_ld(&c[FP_M_FRAMES_IN]));
    s_counter(&b, "floorpost_received_bytes_total", "Bytes of those frames.",
              s_ld(&c[FP_M_BYTES_IN]));
    s_counter(&b, "floorpost_batches_total", "Frames that verified as a telemetry Batch.",
              s_ld(&c[FP_M_BATCHES_OK]));
    s_counter(&b, "floorpost_records_received_total", "Records in verified batches.",
              s_ld(&c[FP_M_RECORDS_IN]));
    s_counter(&b, "floorpost_records_accepted_total",
              "Unique, valid records handed to aggregation.", s_ld(&c[FP_M_RECORDS_ACCEPTED]));
    s_counter(&b, "floorpost_records_duplicate_total", "Records dropped as duplicates.",
              s_ld(&c[FP_M_DUPLICATES]));
    s_counter(&b, "floorpost_seq_gaps_total",
              "Seqs skipped when a source's highest seq jumped (they may arrive later).",
              s_ld(&c[FP_M_GAPS]));
    s_counter(&b, "floorpost_seq_gaps_filled_total", "Seqs that arrived after a higher one.",
              s_ld(&c[FP_M_GAPS_FILLED]));
    s_counter(&b, "floorpost_epoch_changes_total", "Sources that moved to a newer epoch.",
              s_ld(&c[FP_M_EPOCH_CHANGES]));
    s_counter(&b, "floorpost_acks_total", "Acks sent to producers.", s_ld(&c[FP_M_ACKS]));
    s_counter(&b, "floorpost_acks_retried_total",
              "Acks that found their producer's queue full and were kept to send again.",
              s_ld(&c[FP_M_ACKS_RETRIED]));
    s_counter(&b, "floorpost_acks_dropped_total",
              "Acks never sent: the producer's connection was gone, or too many acks waited "
              "for room (the producer resends; dedup acknowledges the resend).",
              s_ld(&c[FP_M_ACKS_DROPPED]));
    s_counter(&b, "floorpost_sources_not_allowed_total",
              "Frames refused because their CURVE key is bound to other source ids (allow "
              "file sources=).",
              s_ld(&c[FP_M_SOURCES_NOT_ALLOWED]));
    s_counter(&b, "floorpost_sources_rate_limited_total",
              "Frames refused because their peer started more new sources per second than "
              "[dedup] new_sources_per_peer.",
              s_ld(&c[FP_M_SOURCES_RATE_LIMITED]));
    s_counter(&b, "floorpost_sources_evicted_total",
              "Sources that left a worker's memory (idle for source_idle_ms, or to make room); "
              "their committed state stays in the state directory.",
              s_ld(&c[FP_M_SOURCES_EVICTED]));
    s_counter(&b, "floorpost_sources_reloaded_total",
              "Sources brought back from the state directory after they left memory.",
              s_ld(&c[FP_M_SOURCES_RELOADED]));
    s_counter(&b, "floorpost_replay_damaged_total",
              "Replay answers that stopped at a damaged outbox event (END names it).",
              s_ld(&c[FP_M_REPLAY_DAMAGED]));
    s_counter(&b, "floorpost_rounds_total", "Barrier rounds completed (all shards at emit).",
              s_ld(&c[FP_M_ROUNDS]));

    s_head(&b, "floorpost_dead_letters_total", "counter", "Dead letters published, by reason.");
    for (size_t i = 0; i < (size_t)FP_DL_COUNT; i++)
        s_put(&b, "floorpost_dead_letters_total{reason=\"%s\"} %llu\n", fp_dl_reason_name((int)i),
              (unsigned long long)s_ld(&self->dl[i]));

    s_head(&b, "floorpost_dead_letters_dropped_total", "counter",
           "Dead letters not kept (not stored, not published): over a round's or the store's "
           "dead-letter budget, by reason.");
    for (size_t i = 0; i < (size_t)FP_DL_COUNT; i++)
        s_put(&b, "floorpost_dead_letters_dropped_total{reason=\"%s\"} %llu\n",
              fp_dl_reason_name((int)i), (unsigned long long)s_ld(&self->dl_dropped[i]));
    s_counter(&b, "floorpost_dead_letters_trimmed_total",
              "Stored dead letters deleted for age, count or bytes "
              "(deadletter_retention_ms, deadletter_max_count, deadletter_max_mb).",
              s_ld(&c[FP_M_DL_TRIMMED]));

    s_head(&b, "floorpost_events_published_total", "counter", "Checkpoints published, by kind.");
    const fp_metric_t ev[4] = {FP_M_EVENTS_CONSUMPTION, FP_M_EVENTS_COMPLETION, FP_M_EVENTS_SCRAP,
                               FP_M_EVENTS_COUNTER_RESET};
    for (int k = 0; k < 4; k++)
        s_put(&b, "floorpost_events_published_total{kind=\"%s\"} %llu\n", fp_ck_kind_name(k + 1),
              (unsigned long long)s_ld(&c[ev[k]]));
    s_counter(&b, "floorpost_late_corrections_total",
              "Checkpoints published with late = true (records after the operation completed).",
              s_ld(&c[FP_M_EVENTS_LATE]));
    s_counter(&b, "floorpost_backfill_checkpoints_total",
              "Checkpoints published with backfill = true (records of a period already flushed).",
              s_ld(&c[FP_M_EVENTS_BACKFILL]));
    s_counter(&b, "floorpost_counter_readings_total",
              "Cumulative counter readings turned into deltas (every outcome).",
              s_ld(&c[FP_M_COUNTER_READINGS]));
    s_counter(&b, "floorpost_counter_rollovers_total",
              "Counter readings that rolled over at the counter's modulus.",
              s_ld(&c[FP_M_COUNTER_ROLLOVERS]));
    s_counter(&b, "floorpost_counter_readings_unposted_total",
              "Counter readings that posted nothing: a first reading (the base), a repeat, read "
              "jitter, or an older reading after a newer one.",
              s_ld(&c[FP_M_COUNTER_UNPOSTED]));

    /* Stages. */
    int nstages = 2 + self->workers + self->shards;
    char name[32];
    s_head(&b, "floorpost_stage_queue_messages", "gauge",
           "Messages queued on the stage's input pipes, approximate (sent minus received; "
           "ingest: acks to forward; emit: the shards' messages (bundles of checkpoints, barriers), "
           "not dead letters).");
    for (int i = 0; i < nstages; i++) {
        const fp_stage_slot_t *s = &self->stages[i];
        uint64_t rcv = s_ld(&s->received), snt = s_ld(&s->sent);
        s_stage_name(self, i, name, sizeof name);
        s_put(&b, "floorpost_stage_queue_messages{stage=\"%s\"} %llu\n", name,
              (unsigned long long)(snt > rcv ? snt - rcv : 0));
    }
    s_head(&b, "floorpost_stage_busy_seconds_total", "counter",
           "Time the stage spent working (or blocked sending downstream) rather than "
           "waiting for input; its rate is the stage's busy ratio.");
    for (int i = 0; i < nstages; i++) {
        s_stage_name(self, i, name, sizeof name);
        s_put(&b, "floorpost_stage_busy_seconds_total{stage=\"%s\"} %.6f\n", name,
              (double)s_ld(&self->stages[i].busy_ns) / 1e9);
    }
    s_head(&b, "floorpost_stage_heartbeat_age_seconds", "gauge",
           "Time since the stage last went round its loop (-1: not running).");
    for (int i = 0; i < nstages; i++) {
        const fp_stage_slot_t *s = &self->stages[i];
        int64_t beat = s_ldi(&s->beat_ns);
        bool running = beat != 0 && !atomic_load_explicit((_Atomic int *)&s->exited, RLX);
        s_stage_name(self, i, name, sizeof name);
        s_put(&b, "floorpost_stage_heartbeat_age_seconds{stage=\"%s\"} %.3f\n", name,
              running ? (double)(now_ns - beat) / 1e9 : -1.0);
    }

    /* Shards and the business view. */
    uint64_t open = 0, precs[3] = {0, 0, 0};
    int64_t pqty[3] = {0, 0, 0};
    s_head(&b, "floorpost_shard_keys", "gauge", "Aggregation keys held per shard.");
    for (int i = 0; i < self->shards; i++) {
        const s_shard_slot_t *s = &self->shard[i];
        s_put(&b, "floorpost_shard_keys{shard=\"%d\"} %llu\n", i,
              (unsigned long long)s_ld(&s->keys));
        open += s_ld(&s->open_operations);
        for (int k = 0; k < 3; k++) {
            pqty[k] = (int64_t)((uint64_t)pqty[k] + (uint64_t)s_ldi(&s->pending_quantity[k]));
            precs[k] += s_ld(&s->pending_records[k]);
        }
    }
    s_gauge(&b, "floorpost_open_operations", "Operations started or counted, not yet completed.",
            (double)open);
    s_head(&b, "floorpost_pending_quantity", "gauge",
           "Quantity summed but not yet published, by kind (consumption: thousandths of unit, "
           "all units added; completion: yield parts; scrap: parts).");
    for (int k = 0; k < 3; k++)
        s_put(&b, "floorpost_pending_quantity{kind=\"%s\"} %lld\n", fp_ck_kind_name(k + 1),
              (long long)pqty[k]);
    s_head(&b, "floorpost_pending_records", "gauge",
           "Records summed but not yet published, by kind.");
    for (int k = 0; k < 3; k++)
        s_put(&b, "floorpost_pending_records{kind=\"%s\"} %llu\n", fp_ck_kind_name(k + 1),
              (unsigned long long)precs[k]);

    /* Sources. */
    uint64_t tracked = 0;
    for (int w = 0; w < self->workers; w++)
        tracked += s_ld(&self->tracked[w]);
    s_gauge(&b, "floorpost_sources", "Sources tracked by dedup (all workers).", (double)tracked);
    static const char *src_names[5] = {
        "floorpost_source_last_seq", "floorpost_source_acked_seq", "floorpost_source_epoch",
        "floorpost_source_lag_seconds", "floorpost_source_last_batch_timestamp_seconds"};
    static const char *src_help[5] = {
        "Highest seq in the source's latest batch (at most 1000 sources shown).",
        "Seq up to which every seq of the source was seen (the ack watermark).",
        "The source's current epoch.",
        "Processing time minus the newest event time in the source's latest batch.",
        "Wall-clock time the source's latest batch was processed, Unix seconds."};
    size_t nslots = (size_t)self->workers * (size_t)self->per_worker;
    for (int m = 0; m < 5; m++) {
        s_head(&b, src_names[m], "gauge", src_help[m]);
        for (size_t i = 0; i < nslots; i++) {
            const s_source_slot_t *s = &self->sources[i];
            uint64_t id = s_ld(&s->source_id);
            if (id == 0)
                continue;
            int64_t seen = s_ldi(&s->seen_wall_ns);
            switch (m) {
            case 0:
            case 1:
            case 2:
                s_put(&b, "%s{source=\"%llu\"} %llu\n", src_names[m], (unsigned long long)id,
                      (unsigned long long)s_ld(m == 0 ? &s->last_seq
                                               : m == 1 ? &s->acked_seq
                                                        : &s->epoch));
                break;
            case 3:
                s_put(&b, "%s{source=\"%llu\"} %.3f\n", src_names[m], (unsigned long long)id,
                      (double)(seen - s_ldi(&s->last_event_ns)) / 1e9);
                break;
            default:
                s_put(&b, "%s{source=\"%llu\"} %.3f\n", src_names[m], (unsigned long long)id,
                      (double)seen / 1e9);
            }
        }
    }

    /* Latency and the process. */
    int64_t last = s_ldi(&self->last_round_ns);
    s_gauge(&b, "floorpost_last_round_age_seconds",
            "Time since the last completed barrier round (-1: none yet).",
            last ? (double)(now_ns - last) / 1e9 : -1.0);
    s_gauge(&b, "floorpost_commit_stalled",
            "1 while round commits fail (state disk or LMDB map full): nothing is acked.",
            (double)atomic_load_explicit(&((fp_metrics_t *)self)->commit_stalled, RLX));
    fp_metrics_t *mut = (fp_metrics_t *)self;
    s_gauge(&b, "floorpost_outbox_bytes",
            "Pages of the outbox (committed events kept for replay and the readers).",
            (double)atomic_load_explicit(&mut->outbox_bytes, RLX));
    s_gauge(&b, "floorpost_state_map_bytes", "The state's LMDB map size (its disk budget).",
            (double)atomic_load_explicit(&mut->map_bytes, RLX));
    s_gauge(&b, "floorpost_deadletters_bytes",
            "Pages of the stored dead letters (bounded by deadletter_max_mb).",
            (double)atomic_load_explicit(&mut->dl_bytes, RLX));
    s_gauge(&b, "floorpost_deadletters_stored",
            "Stored dead letters (bounded by deadletter_max_count).",
            (double)atomic_load_explicit(&mut->dl_stored, RLX));
    static const char *const rnames[3][2] = {
        {"floorpost_reader_lag_events",
         "Committed events a durable outbox reader has not finished with."},
        {"floorpost_reader_position", "The last global_seq a durable outbox reader finished with."},
        {"floorpost_reader_detached",
         "1 once a durable reader was detached for lagging (retention no longer waits for it)."}};
    for (int g = 0; g < 3; g++) {
        s_head(&b, rnames[g][0], "gauge", rnames[g][1]);
        for (int i = 0; i < FP_METRICS_READERS_MAX; i++) {
            if (!atomic_load_explicit(&mut->readers[i].used, memory_order_acquire))
                continue;
            uint64_t v = g == 0   ? atomic_load_explicit(&mut->readers[i].lag, RLX)
                         : g == 1 ? atomic_load_explicit(&mut->readers[i].position, RLX)
                                  : (uint64_t)atomic_load_explicit(&mut->readers[i].detached, RLX);
            s_put(&b, "%s{reader=\"%s\"} %llu\n", rnames[g][0], mut->readers[i].name,
                  (unsigned long long)v);
        }
    }
    s_hist(&b, self, FP_H_ROUND, "floorpost_round_seconds",
           "From ingest injecting a round's barrier to the round committed (fsync done) and "
           "published.");
    s_hist(&b, self, FP_H_PUBLISH_DELAY, "floorpost_publish_delay_seconds",
           "From the newest event time summed in a checkpoint (producer clock) to the shard "
           "handing it to emit for publishing.");
    s_gauge(&b, "floorpost_process_resident_memory_bytes", "Resident set size.",
            (double)s_rss_bytes());
    s_gauge(&b, "floorpost_state_used_bytes",
            "Pages of the state's LMDB file holding live data (against floorpost_state_map_bytes).",
            (double)atomic_load_explicit(&mut->state_used_bytes, RLX));
    s_process(&b);
    s_head(&b, "floorpost_handshakes_refused_total", "counter",
           "Connections refused at the handshake: key_not_allowed (CURVE key not in the allow "
           "file), plain_client (no CURVE on a CURVE endpoint), closed (the peer hung up during "
           "the handshake: often a plain client too), protocol (any other failure).");
    s_put(&b, "floorpost_handshakes_refused_total{reason=\"key_not_allowed\"} %llu\n",
          (unsigned long long)fp_security_refused());
    s_put(&b, "floorpost_handshakes_refused_total{reason=\"plain_client\"} %llu\n",
          (unsigned long long)fp_security_handshakes_failed(0));
    s_put(&b, "floorpost_handshakes_refused_total{reason=\"closed\"} %llu\n",
          (unsigned long long)fp_security_handshakes_failed(2));
    s_put(&b, "floorpost_handshakes_refused_total{reason=\"protocol\"} %llu\n",
          (unsigned long long)fp_security_handshakes_failed(1));
    s_head(&b, "floorpost_accept_failures_total", "counter",
           "Connections the kernel could not hand over on a tcp/ipc endpoint (accept(2) "
           "failed: EMFILE is out of file descriptors); also logged, once a second.");
    const char *ep = NULL;
    uint64_t failures;
    for (int i = 0; (failures = fp_security_accept_failures(i, &ep)) != UINT64_MAX; i++) {
        char label[2 * FP_ENDPOINT_MAX];
        size_t n = 0;
        for (const char *p = ep; *p && n + 2 < sizeof label; p++) {
            if (*p == '"' || *p == '\\')
                label[n++] = '\\';
            label[n++] = *p;
        }
        label[n] = '\0';
        s_put(&b, "floorpost_accept_failures_total{endpoint=\"%s\"} %llu\n", label,
              (unsigned long long)failures);
    }
    s_head(&b, "floorpost_build_info", "gauge", "The running build (always 1).");
    s_put(&b, "floorpost_build_info{version=\"%s\"} 1\n", FP_VERSION);
    fp_metrics_t *mself = (fp_metrics_t *)self;
    pthread_mutex_lock(&mself->sinks_mu);
    if (self->sinks_prom) {
        size_t sl = 0;
        char *st = self->sinks_prom(self->sinks_ctx, &sl);
        if (st)
            s_put(&b, "%.*s", (int)sl, st);
        else
            b.failed = true;
        free(st);
    }
    pthread_mutex_unlock(&mself->sinks_mu);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

int fp_metrics_health(const fp_metrics_t *self, int64_t now_ns, int64_t max_age_ns, char *reason,
                      size_t cap)
{
    int nstages = 2 + self->workers + self->shards;
    char name[32];
    for (int i = 0; i < nstages; i++) {
        const fp_stage_slot_t *s = &self->stages[i];
        int64_t beat = s_ldi(&s->beat_ns);
        s_stage_name(self, i, name, sizeof name);
        if (beat == 0 || atomic_load_explicit((_Atomic int *)&s->exited, RLX)) {
            snprintf(reason, cap, "stage %s not running", name);
            return -1;
        }
        if (now_ns - beat > max_age_ns) {
            snprintf(reason, cap, "stage %s stalled for %.3f s", name,
                     (double)(now_ns - beat) / 1e9);
            return -1;
        }
    }
    int64_t last = s_ldi(&self->last_round_ns);
    if (last == 0) {
        snprintf(reason, cap, "no round completed yet");
        return -1;
    }
    if (now_ns - last > max_age_ns) {
        snprintf(reason, cap, "last round committed %.3f s ago", (double)(now_ns - last) / 1e9);
        return -1;
    }
    if (atomic_load_explicit(&((fp_metrics_t *)self)->commit_stalled, RLX)) {
        snprintf(reason, cap, "commits failing (state disk or map full)");
        return -1;
    }
    snprintf(reason, cap, "ok");
    return 0;
}

void fp_metrics_set_sinks(fp_metrics_t *self, fp_metrics_text_fn prom, fp_metrics_text_fn status,
                          const void *ctx)
{
    pthread_mutex_lock(&self->sinks_mu);
    self->sinks_prom = prom;
    self->sinks_status = status;
    self->sinks_ctx = ctx;
    pthread_mutex_unlock(&self->sinks_mu);
}

char *fp_metrics_sinks_status(const fp_metrics_t *self, size_t *len)
{
    fp_metrics_t *m = (fp_metrics_t *)self;
    char *out = NULL;
    pthread_mutex_lock(&m->sinks_mu);
    if (m->sinks_status)
        out = m->sinks_status(m->sinks_ctx, len);
    pthread_mutex_unlock(&m->sinks_mu);
    return out;
}
