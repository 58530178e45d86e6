/*  shard.c - the aggregate stage (M of them, partitioned by (plant, order,
    operation)).

    DESIGN
    - Owns one agg_t: every key of the operations routed to it.
    - One PULL per worker (FP_EP_SHARD s, w), so barriers can be aligned: when
      worker w's barrier of round r arrives, w's pipe is not read again until
      every worker's barrier of round r has arrived. The shard then has
      exactly the records sent before the round's cut, flushes (late
      corrections every round; every partial on FP_BARRIER_FLUSH) and passes
      the barrier to emit: first the keys the round changed (with a state
      directory), then a MARK. This is the cut each commit round persists.
    - At start, restores the keys it owns (route.h) from the state.
    - Checkpoints are encoded to FlatBuffers here (in parallel across shards)
      and sent to emit, which stamps stream_seq and global_seq, commits the
      round and publishes.
    - Sends to emit block at its HWM; emit stops reading only while commits
      fail (the back-pressure of a full disk), never in a cycle with us.
*/
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "agg.h"
#include "codec.h"
#include "log.h"
#include "stage.h"
#include "store.h"

typedef struct {
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    int index;
    void *in[FP_WORKERS_MAX];
    int nin;
    bool blocked[FP_WORKERS_MAX];
    int nblocked;
    uint32_t round_flags;
    fp_barrier_t barrier;
    int64_t event_wm;   /* the newest event time any worker has routed (barriers) */
    void *emit;     /* everything for emit: events, dead letters, state, marks */
    uint32_t from;  /* our sender slot at emit: 1 + workers + index */
    struct fp_store *store; /* NULL: durability off, nothing to export */
    /* Items for emit, sent as one FP_EMIT_BUNDLE (stage.h) per input batch
       and per round: a completion wave or a round's export is one inproc
       hand-off, not thousands. */
    uint8_t *bundle;
    size_t bundle_len, bundle_cap;
    agg_t *agg;
    fp_codec_t *codec;
    fp_stage_slot_t *slot;      /* our gauges (metrics.h) */
    fp_stage_slot_t *emit_slot; /* emit's: we count what we queue for it */
    uint64_t emitted;           /* messages sent to emit, not yet counted in its slot */
    fp_hist_local_t delay;      /* publish delay, merged into metrics per round */
} shard_t;


/* Sends the bundle, if anything is in it. */
static void s_bundle_flush(shard_t *self)
{
    if (!self->bundle_len)
        return;
    fp_emit_hdr_t h = {.type = FP_EMIT_BUNDLE, .from = self->from};
    zmq_send(self->emit, &h, sizeof h, ZMQ_SNDMORE);
    zmq_send(self->emit, self->bundle, self->bundle_len, 0);
    self->bundle_len = 0;
    self->emitted++; /* messages, as emit counts them (not the items inside) */
}

/* Appends one item of nparts frames to the bundle. */
static void s_bundle_add(shard_t *self, uint32_t type, uint32_t nparts, const void *const *parts,
                         const size_t *lens)
{
    size_t need = 8;
    for (uint32_t k = 0; k < nparts; k++)
        need += 4 + lens[k];
    if (self->bundle_len + need > self->bundle_cap) {
        size_t ncap = self->bundle_cap ? self->bundle_cap : 1 << 16;
        while (ncap < self->bundle_len + need)
            ncap *= 2;
        uint8_t *n = realloc(self->bundle, ncap);
        if (!n) {
            /* Our own state could not be handed over: nothing would be
               committed correctly any more. */
            fp_log(FP_LOG_ERROR, "shard", "out of memory bundling for emit; exiting", NULL);
            abort();
        }
        self->bundle = n;
        self->bundle_cap = ncap;
    }
    uint8_t *p = self->bundle + self->bundle_len;
    memcpy(p, &type, 4);
    memcpy(p + 4, &nparts, 4);
    p += 8;
    for (uint32_t k = 0; k < nparts; k++) {
        uint32_t len = (uint32_t)lens[k];
        memcpy(p, &len, 4);
        memcpy(p + 4, parts[k], lens[k]);
        p += 4 + lens[k];
    }
    self->bundle_len += need;
    if (self->bundle_len >= (1u << 20))
        s_bundle_flush(self); /* bounded messages, bounded memory */
}

static void s_emit(void *ctx, const fp_checkpoint_t *ck)
{
    shard_t *self = ctx;
    /* "kind/plant/line", joined by hand: snprintf's format parsing showed
       in profiles at one call per checkpoint. */
    char topic[512];
    const char *part[3] = {fp_ck_kind_name(ck->kind), ck->plant, ck->line ? ck->line : ""};
    size_t tn = 0;
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(part[i]), room = sizeof topic - 1 - tn; /* tn < sizeof topic */
        if (l > room)
            l = room;
        memcpy(topic + tn, part[i], l);
        tn += l;
        if (i < 2 && tn < sizeof topic - 1)
            topic[tn++] = '/';
    }
    const void *buf;
    size_t len;
    int rc = fp_codec_checkpoint_encode(self->codec, ck, &buf, &len);
    assert(rc == FP_CODEC_OK); /* our own data: failure is our bug */
    const void *parts[2] = {topic, buf};
    size_t lens[2] = {tn, len};
    s_bundle_add(self, FP_EMIT_EVENT, 2, parts, lens);
    fp_hist_observe(&self->delay, FP_H_PUBLISH_DELAY, fp_wall_ns() - ck->last_time_ns);
    if (ck->late)
        fp_metrics_add(self->metrics, FP_M_EVENTS_LATE, 1);
    if (ck->backfill)
        fp_metrics_add(self->metrics, FP_M_EVENTS_BACKFILL, 1);
}

static void s_reject(void *ctx, const fp_batch_hdr_t *batch, const fp_record_t *rec,
                     const char *reason)
{
    shard_t *self = ctx;
    fp_batch_hdr_t *b = (fp_batch_hdr_t *)batch;
    const void *buf;
    size_t len;
    /* the record and only the strings it references (deadletter.h) */
    fp_dl_record_payload(self->codec, b->source_id, b->epoch, rec, b->nstrings,
                         fp_batch_stroff(b), fp_batch_strblob(b), &buf, &len);
    fp_dl_fields_t f = {.jn = 0};
    fp_dl_fields_u64(&f, "source_id", "source", b->source_id);
    fp_dl_fields_u64(&f, "epoch", "epoch", b->epoch);
    fp_dl_fields_u64(&f, "seq", "seq", rec->seq);
    fp_dl_fields_u64(&f, "kind", "kind", rec->kind);
    fp_dl_fields_int(&f, "quantity", NULL, rec->quantity);
    fp_dead_letter_keys(&f, rec, b->nstrings, fp_batch_stroff(b), fp_batch_strblob(b));
    /* On the emit pipe, so it is filed under this shard's current round. */
    fp_dead_letter(self->emit, self->from, reason, "shard", &f, buf, len);
}

/* Hands one changed key's state to emit (state NULL: released). */
static void s_export_key(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    shard_t *self = ctx;
    const void *parts[2] = {key, state ? state : ""};
    size_t lens[2] = {klen, state ? slen : 0};
    s_bundle_add(self, FP_EMIT_KEY, 2, parts, lens);
}

static void s_discard_key(void *ctx, const void *key, size_t klen, const void *state,
                          size_t slen)
{
}

/* Start-up: the keys this shard owns, as last committed. */
static int s_restore_key(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    shard_t *self = ctx;
    uint32_t owner = agg_key_shard(key, klen, (uint32_t)self->cfg->shards);
    if (owner == UINT32_MAX)
        return -1; /* damaged: refuse the state, never half-load it */
    if (owner != (uint32_t)self->index && owner != AGG_KEY_ALL_SHARDS)
        return 0;
    return agg_import(self->agg, key, klen, state, slen) == 0 ? 0 : -1;
}

/* Returns true when the drain barrier completed. */
static bool s_barrier(shard_t *self, int w, const fp_barrier_t *b)
{
    self->blocked[w] = true;
    self->nblocked++;
    self->round_flags |= b->flags;
    self->barrier = *b;
    if (b->event_ns > self->event_wm)
        self->event_wm = b->event_ns;
    if (self->nblocked < self->nin)
        return false;
    /* Every worker's records before this round's cut are in. */
    int mode = (self->round_flags & FP_BARRIER_FLUSH) ? AGG_FLUSH_ALL : AGG_FLUSH_LATE;
    /* Wall clock (the barrier's): closing times are persisted, and the
       grace of a closed operation must survive a restart (agg.h). */
    agg_watermark(self->agg, self->event_wm);
    agg_flush(self->agg, mode, self->barrier.wall_ns);
    const agg_stats_t *st = agg_stats(self->agg);
    const agg_pending_t *pend = agg_pending(self->agg);
    fp_shard_gauges_t g = {.keys = st->keys, .open_operations = st->open_operations};
    for (int k = 0; k < 3; k++) {
        g.pending_quantity[k] = pend->quantity[k];
        g.pending_records[k] = pend->records[k];
    }
    fp_metrics_shard_set(self->metrics, self->index, &g);
    fp_metrics_hist_merge(self->metrics, FP_H_PUBLISH_DELAY, &self->delay);
    /* Our part of the round: the state it changed, then the mark. */
    if (self->store && agg_export_dirty(self->agg, s_export_key, self) != 0) {
        /* Cannot hand this round's state over: the commit would be wrong. */
        fp_log(FP_LOG_ERROR, "shard", "out of memory exporting state; exiting", NULL);
        abort();
    }
    s_bundle_flush(self); /* everything of the round before its mark */
    fp_barrier_t out = self->barrier;
    out.flags = self->round_flags;
    fp_metrics_stage_sent(self->emit_slot, self->emitted + 1);
    self->emitted = 0;
    fp_emit_mark(self->emit, self->from, &out);
    bool drain = (self->round_flags & FP_BARRIER_DRAIN) != 0;
    memset(self->blocked, 0, sizeof self->blocked);
    self->nblocked = 0;
    self->round_flags = 0;
    return drain;
}

static void s_cleanup(shard_t *self)
{
    for (int w = 0; w < self->nin; w++)
        if (self->in[w])
            zmq_close(self->in[w]);
    if (self->emit)
        zmq_close(self->emit);
    agg_destroy(&self->agg);
    free(self->bundle);
    fp_codec_destroy(&self->codec);
}

/* [aggregate] period, shifts, closed_before, closed_period (checked by
   the config already) as the aggregation's. */
static void s_agg_periods(const fp_config_t *cfg, agg_config_t *acfg)
{
    char err[128];
    acfg->period.kind = cfg->period;
    if (cfg->period == FP_PERIOD_SHIFT &&
        fp_period_parse_shifts(cfg->shifts, &acfg->period, err, sizeof err) != 0)
        acfg->period.kind = FP_PERIOD_DAY; /* unreachable: config.c refused it */
    acfg->closed_set = cfg->closed_before[0] &&
                       fp_period_parse_date(cfg->closed_before, &acfg->closed_before) == 0;
    acfg->closed_mode = cfg->closed_period == FP_CLOSED_DEAD_LETTER ? AGG_CLOSED_REFUSE
                                                                    : AGG_CLOSED_REPOST;
}

void *fp_shard_main(void *argp)
{
    fp_stage_args_t *args = argp;
    shard_t self_ = {.cfg = args->cfg, .metrics = args->metrics, .index = args->index,
                     .store = args->store, .event_wm = INT64_MIN};
    shard_t *self = &self_;
    const fp_config_t *cfg = self->cfg;
    char err[512] = "", ep[64], who[32];
    snprintf(who, sizeof who, "shard-%d", self->index);
    self->nin = cfg->workers;
    self->from = 1 + (uint32_t)cfg->workers + (uint32_t)self->index;
    self->slot = fp_metrics_stage(self->metrics, FP_STAGE_SHARD, self->index);
    self->emit_slot = fp_metrics_stage(self->metrics, FP_STAGE_EMIT, 0);
    agg_config_t acfg = {.instance = cfg->instance,
                         .closed_key_grace_ns = cfg->closed_key_grace_ms * 1000000,
                         .max_open_keys = cfg->max_open_keys,
                         /* durability off: closed keys at rest keep no key bytes */
                         .no_export = args->store == NULL};
    s_agg_periods(cfg, &acfg);
    self->agg = agg_new(&acfg, s_emit, s_reject, self);
    self->codec = fp_codec_new();
    bool ok = self->agg && self->codec;
    if (!ok)
        snprintf(err, sizeof err, "out of memory");
    for (int w = 0; ok && w < self->nin; w++) {
        snprintf(ep, sizeof ep, FP_EP_SHARD, self->index, w);
        ok = (self->in[w] = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, ep, 1, -1,
                                            cfg->queue_batches, err, sizeof err)) != NULL;
    }
    if (ok)
        ok = (self->emit = fp_stage_socket(args->zmq_ctx, ZMQ_PUSH, FP_EP_EMIT, 0,
                                           cfg->queue_batches, -1, err, sizeof err)) != NULL;
    if (ok && args->store && fp_store_each_key(args->store, s_restore_key, self) != 0) {
        snprintf(err, sizeof err, "the aggregation state in the state directory is damaged");
        ok = false;
    }
    if (ok && args->store) {
        /* What was restored is committed already: nothing to export, but
           for keys of format version 1, which the first round replaces by
           their version-2 keys (agg.h). Then one flush with the wall clock,
           as agg.h's restart protocol asks. */
        uint64_t upgraded = agg_stats(self->agg)->upgraded;
        if (upgraded == 0)
            agg_export_dirty(self->agg, s_discard_key, NULL);
        agg_flush(self->agg, AGG_FLUSH_LATE, fp_wall_ns());
        fp_log(FP_LOG_INFO, who, "restored", "keys=%llu upgraded=%llu",
               (unsigned long long)agg_stats(self->agg)->keys, (unsigned long long)upgraded);
    }
    fp_stage_ready(args, who, ok ? 0 : -1, err);
    if (!ok) {
        fp_metrics_stage_exit(self->slot);
        s_cleanup(self);
        return NULL;
    }
    fp_metrics_stage_beat(self->slot, fp_now_ns());
    bool done = false;
    while (!done) {
        zmq_pollitem_t items[FP_WORKERS_MAX];
        int map[FP_WORKERS_MAX], n = 0;
        for (int w = 0; w < self->nin; w++)
            if (!self->blocked[w]) {
                items[n] = (zmq_pollitem_t){self->in[w], 0, ZMQ_POLLIN, 0};
                map[n++] = w;
            }
        if (zmq_poll(items, n, -1) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        /* Beats at least once a round: every round brings barriers. */
        int64_t woke = fp_now_ns();
        fp_metrics_stage_beat(self->slot, woke);
        uint64_t received = 0, records = 0;
        for (int i = 0; i < n && !done; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            int w = map[i];
            /* A bounded burst per pipe keeps the workers fairly served. */
            for (int k = 0; k < 32 && !self->blocked[w]; k++) {
                zmq_msg_t m;
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, self->in[w], ZMQ_DONTWAIT) < 0) {
                    zmq_msg_close(&m);
                    break;
                }
                received++;
                const uint32_t *type = zmq_msg_data(&m);
                if (*type == FP_MSG_BARRIER) {
                    fp_barrier_t b;
                    memcpy(&b, zmq_msg_data(&m), sizeof b);
                    done = s_barrier(self, w, &b);
                } else {
                    /* FP_MSG_BATCH from our worker: zmq_msg_init_size data
                       is 8-byte aligned. */
                    assert(((uintptr_t)zmq_msg_data(&m) & 7) == 0);
                    agg_add(self->agg, zmq_msg_data(&m));
                    records += ((const fp_batch_hdr_t *)zmq_msg_data(&m))->nrecords;
                }
                zmq_msg_close(&m);
                if (done)
                    break;
            }
        }
        /* The burst's final completions go to emit in one bundle: under
           load one hand-off (and one wake-up of emit) per burst of up to 32
           batches per worker, not per batch; when idle a burst is a single
           batch, so nothing waits. */
        s_bundle_flush(self);
        /* Then a slice of what the round's flush left of compaction and
           release (agg.h "Bounded flushes"): after the checkpoints, so they
           never wait for it; about 32 keys and a quarter of the burst's
           records, at most 1,024. */
        if (records > 0)
            agg_work(self->agg, records / 4 + 32 < 1024 ? records / 4 + 32 : 1024);
        fp_metrics_stage_received(self->slot, received);
        /* Final completions sent during agg_add, counted per burst. */
        fp_metrics_stage_sent(self->emit_slot, self->emitted);
        self->emitted = 0;
        fp_metrics_stage_busy(self->slot, fp_now_ns() - woke);
    }
    fp_metrics_stage_exit(self->slot);
    const agg_stats_t *st = agg_stats(self->agg);
    /* compact_keys: of keys, the closed ones at rest (agg.h) */
    fp_log(FP_LOG_INFO, who, "drained",
           "keys=%llu compact_keys=%llu records=%llu events=%llu rejected=%llu",
           (unsigned long long)st->keys, (unsigned long long)st->compact_keys,
           (unsigned long long)st->records, (unsigned long long)st->events,
           (unsigned long long)st->rejected);
    s_cleanup(self);
    return NULL;
}
