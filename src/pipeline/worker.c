/*  worker.c - the parse/dedup stage (N of them, partitioned by source_id).

    DESIGN
    - Owns one dedup_t: the state of every source routed to it (ingest
      routes by hash(source_id) % N, so no source is shared).
    - Per frame: decode by the meta's format (today FP_FORMAT_FB_BATCH:
      verify with the codec), dedup per record, check the record with the
      one record check (record_check.h; every input's records pass it here,
      once), route it to shard hash(plant, order, operation) % M. Strings
      are hashed once per batch, not per record. Each shard gets one batch
      message per input frame (records + a copy of the frame's string
      table).
    - Exactly-once bookkeeping: every unique (source, epoch, seq) goes either
      to exactly one shard or to the dead-letter output; duplicates go
      nowhere. An invalid record is still marked seen, so its resend is a
      duplicate, not a second dead letter.
    - The answer to a frame is a neutral verdict (verdict.h: accepted with
      the acked seq, or rejected with a fp_dl_reason_t), sent to ingest with
      the frame's ack token and this round, only when the frame has a
      token. The worker speaks no input's protocol: the input encodes the
      acknowledgement (input.h).
    - Sends to shards block at their HWM (back-pressure to ingest); verdicts
      go to ingest on a pipe without HWM, so this thread never waits on
      ingest.
    - Barriers are forwarded to every shard behind the batches before them,
      with the newest event time routed (the shards' period watermark).
    - Cumulative counter readings (PartCounter, ScrapCounter) of the sources
      it owns become deltas here (counter.h), after dedup and the record
      check: a reading that posts parts goes to its shard as a PartCount or
      Scrap record of the delta (same source, epoch and seq: the lineage
      names the reading); one that posts nothing (the first reading, a
      repeat, jitter, an older one) goes nowhere; an implausible one is
      dead-lettered counter_jump; a reset also publishes a counter_reset
      event. The counters' last readings are committed with the round, like
      the dedup state.
*/
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zmq.h>

#include "codec.h"
#include "counter.h"
#include "dedup.h"
#include "log.h"
#include "peerrate.h"
#include "record_check.h"
#include "route.h"
#include "stage.h"
#include "store.h"

/* One entry of worker_t's per-batch counter cache. */
typedef struct {
    uint32_t sn, gen, at; /* station | name << 16 (batch string indices); batch; counter */
    uint8_t kind;
} s_ccache_t;

typedef struct {
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    int index;
    void *in, *dl, *acks;
    void *shards[64];
    int nshards;
    dedup_t *dedup;
    bool aging;          /* with a store: sources leave memory, reloaded on demand */
    uint8_t *reload;     /* [dedup_export_max]: a source's state read back from the store */
    peerrate_t *rate;    /* NULL: no bound on new sources per peer */
    counter_t *counters; /* cumulative counter readings of our sources */
    fp_codec_t *codec;
    dedup_stats_t last; /* dedup counters already added to metrics */
    /* Per-batch scratch, grown as needed, never shrunk. */
    void *aligned;
    size_t aligned_cap;
    uint32_t *stroff;   /* nstrings + 1 */
    char *strblob;
    size_t strblob_cap;
    uint64_t *strhash;  /* index 0 = absent */
    uint8_t *strflags;  /* index i: string i's fp_record_string_flags (record_check.h) */
    uint32_t str_cap;
    uint32_t *route;    /* per record: shard, or UINT32_MAX = not forwarded */
    int64_t *delta;     /* per record: a counter reading's delta (route != UINT32_MAX) */
    uint32_t route_cap, delta_cap;
    char *idbuf;        /* counter_reset event_id: instance + '-' + 32 hex */
    /* Per batch (one source, one string table): a reading's (kind, station,
       name) string indices -> its counter's index, so the readings of a
       batch that share a counter build, hash and look up its key once
       (counter_apply_at). An entry counts only while gen is the batch's. */
    s_ccache_t ccache[256];
    uint32_t ccache_gen;
    uint64_t c_readings, c_rollovers, c_unposted; /* this batch's, for the metrics */
    uint32_t count[64]; /* records per shard in this batch */
    int64_t event_wm;   /* newest event time routed to a shard, at most an hour ahead of
                           our clock (INT64_MIN: none); sent with every barrier */
    uint64_t round;     /* the round frames now belong to (last barrier + 1) */
    struct fp_store *store; /* NULL: durability off, nothing to export */
    fp_stage_slot_t *slot;        /* our gauges (metrics.h) */
    fp_stage_slot_t *sslot[64];   /* each shard's: we count what we queue for it */
    fp_stage_slot_t *ingest_slot; /* acks we queue for ingest */
    char who[32];                 /* "worker-W", the log's component */
    size_t frame_keep;            /* fp_dl_frame_keep */
    uint64_t dl_round_max;        /* fp_config_dl_round_bytes */
    uint64_t dl_round, dl_bytes;  /* dead-letter bytes sent for emit in round dl_round */
    uint32_t frame_dead;          /* records of the frame at hand dead-lettered (its
                                     verdict's dead_letters); reset per frame */
} worker_t;

static int s_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* Returns the verdict on a frame to ingest, for its input to acknowledge
   (input.h): only when the frame has an ack token. v->round is set here:
   ingest holds the verdict until this round is committed. */
static void s_verdict(worker_t *self, const fp_frame_meta_t *meta, fp_verdict_t *v)
{
    if (meta->toklen == 0)
        return; /* fire-and-forget producer */
    v->round = self->round;
    fp_verdict_msg_t m;
    m.type = FP_MSG_VERDICT;
    m.input = meta->input;
    m.pad = 0;
    m.toklen = meta->toklen;
    m.verdict = *v;
    memcpy(m.token, meta->token, meta->toklen);
    fp_metrics_stage_sent(self->ingest_slot, 1);
    zmq_send(self->acks, &m, offsetof(fp_verdict_msg_t, token) + meta->toklen, 0);
}

/* A batch decoder's result code as the frame's dead-letter reason: the
   names fp_codec_strerror gives them. */
static fp_dl_reason_t s_reason_of_codec(int rc)
{
    switch (rc) {
    case FP_CODEC_TOO_SHORT: return FP_DL_truncated;
    case FP_CODEC_OVERSIZED: return FP_DL_oversized;
    case FP_CODEC_WRONG_ID: return FP_DL_wrong_identifier;
    case FP_CODEC_VERIFY: return FP_DL_malformed;
    case FP_CODEC_MISSING: return FP_DL_missing_field;
    case FP_CODEC_VERSION: return FP_DL_unsupported_version;
    case FP_CODEC_TOO_MANY_STRINGS: return FP_DL_too_many_strings;
    case FP_CODEC_NOMEM: return FP_DL_no_memory;
    default: return FP_DL_other; /* the batch parser returns none other */
    }
}

/* Hands one dirty source's dedup state to emit (part of the current round). */
static void s_export_source(void *ctx, uint64_t source_id, const void *state, size_t len)
{
    worker_t *self = ctx;
    fp_emit_hdr_t h = {.type = FP_EMIT_SOURCE, .from = 1 + (uint32_t)self->index};
    zmq_send(self->dl, &h, sizeof h, ZMQ_SNDMORE);
    zmq_send(self->dl, &source_id, sizeof source_id, ZMQ_SNDMORE);
    zmq_send(self->dl, state, len, 0);
}

static void s_discard_source(void *ctx, uint64_t source_id, const void *state, size_t len)
{
}

/* Start-up: the sources this worker owns, as last committed. */
static int s_restore_source(void *ctx, uint64_t source_id, const void *state, size_t len)
{
    worker_t *self = ctx;
    if (fp_route_worker(source_id, (uint32_t)self->cfg->workers) != (uint32_t)self->index)
        return 0;
    /* With aging, the table need not hold them all: the rest come back from
       the state when their producer sends (s_admit). */
    if (self->aging && dedup_stats(self->dedup)->sources >= self->cfg->max_sources)
        return 0;
    if (dedup_restore(self->dedup, source_id, state, len) != 0) {
        fp_log(FP_LOG_ERROR, "worker", "state: a source could not be restored", "source=%llu",
               (unsigned long long)source_id);
        return -1;
    }
    return 0;
}

/* Whether a dead letter of `bytes` (payload and JSON) may still go to emit
   this round. One round keeps at most fp_config_dl_round_bytes of dead
   letters in all: emit enforces that across every stage (commit.h), and a
   worker past it alone need not even build or send them. bytes 0: only
   whether any room is left (before building one). Counted and logged when
   there is none. */
static bool s_dl_room(worker_t *self, size_t bytes, fp_dl_reason_t reason, uint64_t source)
{
    if (self->dl_round != self->round) {
        self->dl_round = self->round;
        self->dl_bytes = 0;
    }
    /* No dead letter is smaller than its JSON's first 64 bytes. */
    size_t need = bytes ? bytes : 64;
    if (self->dl_bytes + need <= self->dl_round_max) {
        self->dl_bytes += bytes;
        return true;
    }
    fp_metrics_dl_dropped(self->metrics, (int)reason, 1);
    fp_log(FP_LOG_WARN, self->who, "dead letter dropped: the round's dead-letter budget is spent",
           "reason=%s source=%llu round=%llu deadletter_round_max_bytes=%llu",
           fp_dl_reason_name((int)reason), (unsigned long long)source,
           (unsigned long long)self->round, (unsigned long long)self->dl_round_max);
    return false;
}

/* Dead-letters one record, re-encoded as a one-record batch with only the
   strings it references (deadletter.h; re-submittable). */
static void s_dead_record(worker_t *self, const fp_batch_view_t *v, const fp_record_t *rec,
                          uint32_t index, fp_dl_reason_t reason, const char *detail)
{
    self->frame_dead++; /* not used, whether or not the budget keeps its dead letter */
    if (!s_dl_room(self, 0, reason, v->source_id))
        return;
    fp_dl_fields_t f = {.jn = 0};
    fp_dl_fields_u64(&f, "source_id", "source", v->source_id);
    fp_dl_fields_u64(&f, "epoch", "epoch", v->epoch);
    fp_dl_fields_u64(&f, "seq", "seq", rec->seq);
    fp_dl_fields_u64(&f, "kind", "kind", rec->kind);
    fp_dl_fields_u64(&f, "record_index", NULL, index);
    fp_dl_fields_str(&f, "detail", "detail", detail, 120);
    fp_dead_letter_keys(&f, rec, v->nstrings, self->stroff, self->strblob);
    const void *buf;
    size_t len;
    fp_dl_record_payload(self->codec, v->source_id, v->epoch, rec, v->nstrings, self->stroff,
                         self->strblob, &buf, &len);
    if (!s_dl_room(self, len + f.jn + 64, reason, v->source_id))
        return;
    fp_dead_letter(self->dl, 1 + (uint32_t)self->index, fp_dl_reason_name((int)reason), "worker",
                   &f, buf, len);
}

/* The identity of batch b in a verdict: its seq range and record count
   (so that the producer knows which batch a refusal is about). */
static void s_identify(fp_verdict_t *out, const fp_batch_view_t *b)
{
    out->batch_records = b->nrecords;
    out->batch_first_seq = b->nrecords ? b->records[0].seq : 0;
    out->batch_last_seq = out->batch_first_seq;
    for (uint32_t i = 1; i < b->nrecords; i++) {
        if (b->records[i].seq < out->batch_first_seq)
            out->batch_first_seq = b->records[i].seq;
        if (b->records[i].seq > out->batch_last_seq)
            out->batch_last_seq = b->records[i].seq;
    }
}

/* Dead-letters a whole frame (its first fp_dl_frame_keep bytes) and rejects
   it (nothing of it was used). The verdict goes out whether or not the dead
   letter fits the round. b: the frame as a parsed batch, or NULL when it
   did not parse (then source is the peek's and the Ack names no batch). */
static void s_dead_frame(worker_t *self, const fp_frame_meta_t *meta, const void *data,
                         size_t len, uint64_t source, const fp_batch_view_t *b,
                         fp_dl_reason_t reason)
{
    uint64_t epoch = b ? b->epoch : 0;
    size_t keep = len < self->frame_keep ? len : self->frame_keep;
    if (s_dl_room(self, keep + 160, reason, source)) {
        fp_dl_fields_t f = {.jn = 0};
        fp_dl_fields_u64(&f, "source_id", "source", source);
        fp_dl_fields_u64(&f, "epoch", "epoch", epoch);
        fp_dl_fields_u64(&f, "bytes", "bytes", len);
        if (keep < len)
            fp_dl_fields_u64(&f, "kept_bytes", "kept_bytes", keep);
        fp_dead_letter(self->dl, 1 + (uint32_t)self->index, fp_dl_reason_name(reason), "worker",
                       &f, data, keep);
    }
    fp_verdict_t v = {.source_id = source, .epoch = epoch, .status = FP_VERDICT_REJECTED,
                      .reason = (uint8_t)reason};
    if (b)
        s_identify(&v, b);
    s_verdict(self, meta, &v);
}

/* Hands one changed counter's state to emit (part of the current round). */
static void s_export_counter(void *ctx, const void *key, size_t klen, const void *state,
                             size_t slen)
{
    worker_t *self = ctx;
    fp_emit_hdr_t h = {.type = FP_EMIT_COUNTER, .from = 1 + (uint32_t)self->index};
    zmq_send(self->dl, &h, sizeof h, ZMQ_SNDMORE);
    zmq_send(self->dl, key, klen, ZMQ_SNDMORE);
    zmq_send(self->dl, state, slen, 0);
}

/* Start-up: the counters of the sources this worker owns, as last committed. */
static int s_restore_counter(void *ctx, const void *key, size_t klen, const void *state,
                             size_t slen)
{
    worker_t *self = ctx;
    uint64_t source = counter_key_source(key, klen);
    if (source == 0)
        return -1;
    if (fp_route_worker(source, (uint32_t)self->cfg->workers) != (uint32_t)self->index)
        return 0;
    if (counter_import(self->counters, key, klen, state, slen) != 0) {
        fp_log(FP_LOG_ERROR, "worker", "state: a counter could not be restored", "source=%llu",
               (unsigned long long)source);
        return -1;
    }
    return 0;
}

/* String idx (1-based, checked) of the batch being handled; "" for 0. */
static const char *s_bstr(const worker_t *self, uint16_t idx, uint32_t *len)
{
    const char *s = idx ? self->strblob + self->stroff[idx - 1] : "";
    if (len)
        *len = idx ? self->stroff[idx] - self->stroff[idx - 1] - 1 : 0;
    return s;
}

/* Publishes the counter_reset of reading r (a drop that was no rollover):
   an event of this round, numbered and committed by emit like a checkpoint. */
static void s_counter_reset(worker_t *self, const fp_batch_view_t *v, const fp_record_t *r,
                            const counter_result_t *cr)
{
    uint32_t slen, nlen;
    const char *station = s_bstr(self, r->str[FP_STR_STATION], &slen);
    const char *name = s_bstr(self, r->str[FP_STR_COUNTER], &nlen);
    /* event_id: the reading names the reset (one per reading, replayed alike) */
    uint8_t in[32 + 4 + 2 * FP_STRING_MAX]; /* the record check bounds both strings */
    uint64_t w[4] = {FP_CK_COUNTER_RESET, v->source_id, v->epoch, r->seq};
    memcpy(in, w, 32);
    memcpy(in + 32, &slen, 4);
    memcpy(in + 36, station, slen);
    memcpy(in + 36 + slen, name, nlen);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(in, 36 + slen + nlen));
    fp_event_id_write(self->idbuf, self->cfg->instance, c.digest);
    fp_checkpoint_t ck = {.kind = FP_CK_COUNTER_RESET, .event_id = self->idbuf,
                          .checkpoint_no = 1, .instance = self->cfg->instance,
                          .plant = s_bstr(self, r->str[FP_STR_PLANT], NULL),
                          .line = s_bstr(self, r->str[FP_STR_LINE], NULL),
                          .order = s_bstr(self, r->str[FP_STR_ORDER], NULL),
                          .operation = s_bstr(self, r->str[FP_STR_OPERATION], NULL),
                          .first_time_ns = r->time_ns, .last_time_ns = r->time_ns,
                          .record_count = 1, .nlineage = 1, .station = station, .counter = name,
                          .counter_scrap = r->kind == FP_KIND_SCRAP_COUNTER,
                          .reason = s_bstr(self, r->str[FP_STR_REASON], NULL),
                          .previous = cr->previous, .reading = r->quantity};
    ck.lineage[0] = (fp_seq_range_t){v->source_id, v->epoch, r->seq, r->seq};
    const void *buf;
    size_t len;
    int rc = fp_codec_checkpoint_encode(self->codec, &ck, &buf, &len);
    assert(rc == FP_CODEC_OK); /* our own data */
    char topic[256];
    int tn = snprintf(topic, sizeof topic, "%s/%s/%s", fp_ck_kind_name(ck.kind), ck.plant,
                      ck.line);
    fp_emit_hdr_t h = {.type = FP_EMIT_EVENT, .from = 1 + (uint32_t)self->index};
    zmq_send(self->dl, &h, sizeof h, ZMQ_SNDMORE);
    zmq_send(self->dl, topic, (size_t)tn < sizeof topic ? (size_t)tn : sizeof topic - 1,
             ZMQ_SNDMORE);
    zmq_send(self->dl, buf, len, 0);
}

/* A counter reading (record check passed): its delta in *delta and true
   when it posts parts (then it goes to its shard as PartCount/Scrap);
   false when it posts nothing or was dead-lettered. */
static bool s_counter(worker_t *self, const fp_batch_view_t *v, const fp_record_t *r,
                      uint32_t index, int64_t *delta)
{
    counter_reading_t in = {.source_id = v->source_id, .epoch = v->epoch, .seq = r->seq,
                            .time_ns = r->time_ns, .kind = r->kind, .reading = r->quantity,
                            .from_zero = (r->reserved0 & FP_COUNTER_FROM_ZERO) != 0};
    in.station = s_bstr(self, r->str[FP_STR_STATION], &in.station_len);
    in.name = s_bstr(self, r->str[FP_STR_COUNTER], &in.name_len);
    counter_result_t out;
    const uint32_t sn = (uint32_t)r->str[FP_STR_STATION] | (uint32_t)r->str[FP_STR_COUNTER] << 16;
    s_ccache_t *cc = &self->ccache[(sn * 0x9E3779B1u) >> 24];
    uint32_t at = cc->gen == self->ccache_gen && cc->sn == sn && cc->kind == r->kind
                      ? cc->at
                      : COUNTER_AT_NONE;
    counter_verdict_t verdict = counter_apply_at(self->counters, &at, &in, &out);
    if (at != COUNTER_AT_NONE) {
        cc->sn = sn;
        cc->kind = r->kind;
        cc->gen = self->ccache_gen;
        cc->at = at;
    }
    self->c_readings++;
    char detail[160];
    switch (verdict) {
    case COUNTER_ROLLOVER:
        self->c_rollovers++;
        /* fall through */
    case COUNTER_DELTA:
        *delta = out.delta;
        return true;
    case COUNTER_RESET:
        s_counter_reset(self, v, r, &out);
        *delta = out.delta;
        return out.delta != 0;
    case COUNTER_JUMP:
    case COUNTER_RANGE:
        snprintf(detail, sizeof detail,
                 "%s: reading %lld after %lld (modulus %llu, max_jump %llu)",
                 verdict == COUNTER_JUMP ? "jump over max_jump" : "reading outside 0..modulus-1",
                 (long long)r->quantity, (long long)out.previous, (unsigned long long)out.modulus,
                 (unsigned long long)self->cfg->counter_max_jump);
        s_dead_record(self, v, r, index, FP_DL_counter_jump, detail);
        return false;
    case COUNTER_NOMEM:
        s_dead_record(self, v, r, index, FP_DL_no_memory, "no room for another counter");
        return false;
    default: /* BASE, REPEAT, JITTER, STALE: the reading posts nothing */
        self->c_unposted++;
        return false;
    }
}

static void s_sync_dedup_metrics(worker_t *self)
{
    const dedup_stats_t *st = dedup_stats(self->dedup);
    fp_metrics_add(self->metrics, FP_M_SOURCES_EVICTED, st->evicted - self->last.evicted);
    fp_metrics_add(self->metrics, FP_M_DUPLICATES, st->duplicates - self->last.duplicates);
    fp_metrics_add(self->metrics, FP_M_GAPS, st->gaps - self->last.gaps);
    fp_metrics_add(self->metrics, FP_M_GAPS_FILLED, st->gaps_filled - self->last.gaps_filled);
    fp_metrics_add(self->metrics, FP_M_EPOCH_CHANGES, st->epoch_changes - self->last.epoch_changes);
    self->last = *st;
}

/* Copies v's string table into the scratch arrays: strblob (each string
   NUL-terminated), stroff[i] = the offset after string i, strhash[i] (the
   routing hash, 0 with one shard; [0] = absent) and strflags[i]; *any_flag: some string is
   too long or holds a NUL byte. Sets *blob_len. 0 or -ENOMEM. */
static int s_string_table(worker_t *self, const fp_batch_view_t *v, size_t *blob_len,
                          bool *any_flag)
{
    size_t cap = self->str_cap;
    if (s_grow((void **)&self->strhash, &cap, v->nstrings + 1, sizeof(uint64_t)) != 0)
        return -ENOMEM;
    cap = self->str_cap;
    if (s_grow((void **)&self->stroff, &cap, v->nstrings + 1, sizeof(uint32_t)) != 0)
        return -ENOMEM;
    cap = self->str_cap;
    if (s_grow((void **)&self->strflags, &cap, v->nstrings + 1, 1) != 0)
        return -ENOMEM;
    self->str_cap = (uint32_t)cap;
    size_t blob = 0;
    *any_flag = false;
    self->strhash[0] = 0;
    self->stroff[0] = 0;
    self->strflags[0] = 0;
    for (uint32_t i = 1; i <= v->nstrings; i++) {
        uint32_t sl;
        const char *str = fp_codec_batch_string(v, i, &sl);
        if (s_grow((void **)&self->strblob, &self->strblob_cap, blob + sl + 1, 1) != 0)
            return -ENOMEM;
        memcpy(self->strblob + blob, str, sl);
        self->strblob[blob + sl] = 0;
        /* one shard: fp_route_shard needs no hash (route.h) */
        self->strhash[i] = self->nshards > 1 ? fp_route_str_hash(str, sl) : 0;
        self->strflags[i] = fp_record_string_flags(sl, memchr(str, 0, sl) != NULL);
        *any_flag |= self->strflags[i] != 0;
        blob += sl + 1;
        self->stroff[i] = (uint32_t)blob;
    }
    *blob_len = blob;
    return 0;
}

/* A batch of an earlier epoch that the source keeps (dedup.h): what that
   epoch took is a duplicate and is acknowledged with its watermark; a seq
   it never took cannot be counted any more (stale_epoch). When nothing of
   the batch is a duplicate, it is refused whole, as an epoch that is not
   kept; otherwise the unseen records are dead-lettered one by one and the
   batch is accepted, so a late resend of a counted batch is never a dead
   letter. Nothing is routed to a shard. */
static void s_frame_past(worker_t *self, const fp_frame_meta_t *meta, const void *data, size_t len,
                         const fp_batch_view_t *v, dedup_source_t *src)
{
    uint32_t dups = 0;
    for (uint32_t i = 0; i < v->nrecords; i++)
        dups += dedup_seen(self->dedup, v->source_id, v->epoch, v->records[i].seq) == DEDUP_SEEN;
    if (dups == 0) {
        for (uint32_t i = 0; i < v->nrecords; i++) /* counted as stale, like dedup_source */
            dedup_check_past(self->dedup, src, v->epoch, v->records[i].seq);
        s_dead_frame(self, meta, data, len, v->source_id, v, FP_DL_stale_epoch);
        return;
    }
    size_t blob;
    bool any_flag;
    if (dups < v->nrecords && s_string_table(self, v, &blob, &any_flag) != 0) {
        /* Nothing was marked: the whole frame is the dead letter (its
           resubmission skips the duplicates, src/cli/deadletters.c). */
        s_dead_frame(self, meta, data, len, v->source_id, v, FP_DL_no_memory);
        return;
    }
    for (uint32_t i = 0; i < v->nrecords; i++) {
        const fp_record_t *r = &v->records[i];
        if (dedup_check_past(self->dedup, src, v->epoch, r->seq) != DEDUP_DUPLICATE)
            s_dead_record(self, v, r, i, FP_DL_stale_epoch,
                          "the source moved to a newer epoch before this seq came");
    }
    fp_verdict_t out = {.source_id = v->source_id, .epoch = v->epoch,
                        .acked_seq = dedup_past_acked(src, v->epoch),
                        .dead_letters = self->frame_dead, .status = FP_VERDICT_ACCEPTED};
    s_identify(&out, v);
    s_verdict(self, meta, &out);
}

/* Before dedup sees a batch: whether its sender may send as its source,
   and, for a source not in memory, bringing it back from the store (it
   left memory, or was never loaded) or, when it is new, taking a token of
   its peer's bound on new sources. false: the frame was refused (dead
   letter, refused verdict, counted). */
static bool s_admit(worker_t *self, const fp_frame_meta_t *meta, const void *data, size_t len,
                    const fp_batch_view_t *v)
{
    /* The input judged the peeked source id; a verified batch has the same
       one, but a bound key's frame is held to it. */
    if ((meta->flags & FP_FRAME_NOT_ALLOWED) ||
        ((meta->flags & FP_FRAME_BOUND) &&
         fp_codec_batch_peek_source(data, len) != v->source_id)) {
        fp_metrics_add(self->metrics, FP_M_SOURCES_NOT_ALLOWED, 1);
        s_dead_frame(self, meta, data, len, v->source_id, v, FP_DL_source_not_allowed);
        return false;
    }
    if (dedup_has(self->dedup, v->source_id))
        return true;
    if (self->aging) {
        size_t slen = 0;
        int rc = fp_store_get_source(self->store, v->source_id, self->reload,
                                     dedup_export_max(self->dedup), &slen);
        if (rc == 0) {
            if (dedup_restore(self->dedup, v->source_id, self->reload, slen) == 0) {
                fp_metrics_add(self->metrics, FP_M_SOURCES_RELOADED, 1);
                s_sync_dedup_metrics(self);
                return true;
            }
            /* Full with nothing that may leave (a commit is late), or a
               damaged state: never count it as new. */
            fp_log(FP_LOG_WARN, self->who, "source not reloaded from the state",
                   "source=%llu sources=%llu", (unsigned long long)v->source_id,
                   (unsigned long long)dedup_stats(self->dedup)->sources);
            s_dead_frame(self, meta, data, len, v->source_id, v, FP_DL_too_many_sources);
            return false;
        }
        if (rc != FP_STORE_NOTFOUND) {
            fp_log(FP_LOG_ERROR, self->who, "state: a source could not be read",
                   "source=%llu rc=%d", (unsigned long long)v->source_id, rc);
            s_dead_frame(self, meta, data, len, v->source_id, v, FP_DL_no_memory);
            return false;
        }
    }
    /* A source never seen. */
    if (self->rate && !peerrate_take(self->rate, meta->peer, fp_now_ns())) {
        fp_metrics_add(self->metrics, FP_M_SOURCES_RATE_LIMITED, 1);
        s_dead_frame(self, meta, data, len, v->source_id, v, FP_DL_too_many_new_sources);
        return false;
    }
    return true;
}

/* One FP_FORMAT_FB_BATCH frame: a FlatBuffers floorpost.telemetry.Batch. */
static void s_frame_fb(worker_t *self, const fp_frame_meta_t *meta, zmq_msg_t *payload)
{
    const void *data = zmq_msg_data(payload);
    size_t len = zmq_msg_size(payload);
    self->frame_dead = 0;
    if (((uintptr_t)data & 7) != 0) {
        /* tcp receive buffers are not aligned; FlatBuffers wants 8. */
        if (s_grow(&self->aligned, &self->aligned_cap, len + 8, 1) != 0) {
            s_dead_frame(self, meta, data, len, fp_codec_batch_peek_source(data, len), NULL,
                         FP_DL_no_memory);
            return;
        }
        memcpy(self->aligned, data, len);
        data = self->aligned;
    }
    fp_batch_view_t v;
    int rc = fp_codec_batch_parse(data, len, self->cfg->max_frame_bytes, &v);
    if (rc != FP_CODEC_OK) {
        s_dead_frame(self, meta, zmq_msg_data(payload), len,
                     fp_codec_batch_peek_source(data, len), NULL, s_reason_of_codec(rc));
        return;
    }
    fp_metrics_add(self->metrics, FP_M_BATCHES_OK, 1);
    fp_metrics_add(self->metrics, FP_M_RECORDS_IN, v.nrecords);
    if (!s_admit(self, meta, data, len, &v))
        return;
    dedup_verdict_t verdict;
    dedup_source_t *src = dedup_source(self->dedup, v.source_id, v.epoch, &verdict);
    if (!src) {
        s_dead_frame(self, meta, data, len, v.source_id, &v,
                     verdict == DEDUP_STALE_EPOCH ? FP_DL_stale_epoch : FP_DL_too_many_sources);
        s_sync_dedup_metrics(self);
        return;
    }
    if (verdict == DEDUP_PAST_EPOCH) {
        s_frame_past(self, meta, data, len, &v, src);
        s_sync_dedup_metrics(self);
        return;
    }
    /* The string table, hashed once per batch. */
    size_t blob;
    bool any_flag;
    if (s_string_table(self, &v, &blob, &any_flag) != 0)
        goto nomem;

    size_t rcap = self->route_cap;
    if (s_grow((void **)&self->route, &rcap, v.nrecords + 1, sizeof(uint32_t)) != 0)
        goto nomem;
    self->route_cap = (uint32_t)rcap;
    rcap = self->delta_cap;
    if (s_grow((void **)&self->delta, &rcap, v.nrecords + 1, sizeof(int64_t)) != 0)
        goto nomem;
    self->delta_cap = (uint32_t)rcap;
    memset(self->count, 0, sizeof self->count);
    uint64_t accepted = 0;
    int64_t last_event_ns = INT64_MIN;
    /* A gateway with a clock far ahead must not close today's period. */
    int64_t wm = self->event_wm, wm_limit = fp_wall_ns() + 3600ll * 1000000000;
    if (++self->ccache_gen == 0) { /* a new batch: its string indices are its own */
        memset(self->ccache, 0, sizeof self->ccache);
        self->ccache_gen = 1;
    }
    for (uint32_t i = 0; i < v.nrecords; i++) {
        const fp_record_t *r = &v.records[i];
        self->route[i] = UINT32_MAX;
        if (r->time_ns > last_event_ns)
            last_event_ns = r->time_ns;
        dedup_verdict_t d = dedup_check(self->dedup, src, r->seq);
        if (d == DEDUP_DUPLICATE)
            continue;
        if (d == DEDUP_TOO_OLD) {
            s_dead_record(self, &v, r, i, FP_DL_too_old,
                          "seq is 0, or the dedup window passed it before it came");
            continue;
        }
        fp_record_reason_t bad =
            fp_record_check(r, v.nstrings, any_flag ? self->strflags : NULL);
        if (bad != FP_RECORD_OK) {
            s_dead_record(self, &v, r, i, fp_record_reason_dl(bad), fp_record_reason_detail(bad));
            continue;
        }
        if (r->kind >= FP_KIND_PART_COUNTER && !s_counter(self, &v, r, i, &self->delta[i]))
            continue;
        uint32_t shard = fp_route_shard(self->strhash[r->str[FP_STR_PLANT]],
                                        self->strhash[r->str[FP_STR_ORDER]],
                                        self->strhash[r->str[FP_STR_OPERATION]],
                                        (uint32_t)self->nshards);
        self->route[i] = shard;
        self->count[shard]++;
        accepted++;
        if (r->time_ns > wm && r->time_ns <= wm_limit)
            wm = r->time_ns;
    }
    self->event_wm = wm;
    fp_metrics_add(self->metrics, FP_M_RECORDS_ACCEPTED, accepted);
    if (self->c_readings) {
        fp_metrics_add(self->metrics, FP_M_COUNTER_READINGS, self->c_readings);
        fp_metrics_add(self->metrics, FP_M_COUNTER_ROLLOVERS, self->c_rollovers);
        fp_metrics_add(self->metrics, FP_M_COUNTER_UNPOSTED, self->c_unposted);
        self->c_readings = self->c_rollovers = self->c_unposted = 0;
    }
    s_sync_dedup_metrics(self);
    for (int s = 0; s < self->nshards; s++) {
        if (!self->count[s])
            continue;
        size_t size = fp_batch_size(self->count[s], v.nstrings, (uint32_t)blob);
        zmq_msg_t out;
        if (zmq_msg_init_size(&out, size) != 0)
            continue;
        fp_batch_hdr_t *b = zmq_msg_data(&out);
        *b = (fp_batch_hdr_t){FP_MSG_BATCH, self->count[s], v.nstrings, (uint32_t)blob,
                              v.source_id, v.epoch};
        fp_record_t *recs = fp_batch_records(b);
        uint32_t k = 0;
        for (uint32_t i = 0; i < v.nrecords; i++)
            if (self->route[i] == (uint32_t)s) {
                fp_record_t *o = &recs[k++];
                *o = v.records[i];
                if (o->kind >= FP_KIND_PART_COUNTER) {
                    /* the reading's delta, as the record aggregation sums */
                    o->kind = o->kind == FP_KIND_PART_COUNTER ? FP_KIND_PART_COUNT : FP_KIND_SCRAP;
                    o->quantity = self->delta[i];
                    o->str[FP_STR_COUNTER] = 0;
                    o->reserved0 = 0;
                }
            }
        memcpy(fp_batch_stroff(b), self->stroff, (v.nstrings + 1) * sizeof(uint32_t));
        memcpy(fp_batch_strblob(b), self->strblob, blob);
        fp_metrics_stage_sent(self->sslot[s], 1);
        zmq_msg_send(&out, self->shards[s], 0); /* blocks at HWM: back-pressure */
    }
    fp_verdict_t verdict_out = {.source_id = v.source_id, .epoch = v.epoch,
                                .acked_seq = dedup_source_acked(src),
                                .dead_letters = self->frame_dead,
                                .status = FP_VERDICT_ACCEPTED};
    s_identify(&verdict_out, &v);
    s_verdict(self, meta, &verdict_out);
    if (v.nrecords)
        fp_metrics_source_set(self->metrics, self->index, v.source_id, dedup_source_epoch(src),
                              dedup_source_high(src), dedup_source_acked(src), last_event_ns,
                              fp_wall_ns());
    return;
nomem:
    /* Before any seq was marked seen: the whole frame is the dead letter. */
    s_dead_frame(self, meta, data, len, v.source_id, &v, FP_DL_no_memory);
}

/* One frame, decoded by its format. Every format ends in the same steps:
   dedup, fp_record_check, route to shards, one verdict. */
static void s_frame(worker_t *self, const fp_frame_meta_t *meta, zmq_msg_t *payload)
{
    switch (meta->format) {
    case FP_FORMAT_FB_BATCH:
        s_frame_fb(self, meta, payload);
        break;
    default:
        /* Our own inputs set the format (input.h): a bug, not bad input. */
        assert(!"frame format");
    }
}

static void s_cleanup(worker_t *self)
{
    void **socks[] = {&self->in, &self->dl, &self->acks};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (*socks[i])
            zmq_close(*socks[i]);
    for (int s = 0; s < self->nshards; s++)
        if (self->shards[s])
            zmq_close(self->shards[s]);
    dedup_destroy(&self->dedup);
    peerrate_destroy(&self->rate);
    free(self->reload);
    counter_destroy(&self->counters);
    fp_codec_destroy(&self->codec);
    free(self->delta);
    free(self->idbuf);
    free(self->aligned);
    free(self->stroff);
    free(self->strblob);
    free(self->strhash);
    free(self->strflags);
    free(self->route);
}

static void s_discard_counter(void *ctx, const void *key, size_t klen, const void *state,
                              size_t slen)
{
}

/* The [counters] options as the counters' config (checked by config.c). */
static counter_t *s_counters_new(const fp_config_t *cfg)
{
    fp_counter_modulus_t list[FP_COUNTER_MODULI_MAX];
    counter_modulus_t mods[FP_COUNTER_MODULI_MAX];
    char err[160];
    int n = fp_config_counter_moduli(cfg->counter_modulus, list, FP_COUNTER_MODULI_MAX, err,
                                     sizeof err);
    for (int i = 0; i < n; i++)
        mods[i] = (counter_modulus_t){list[i].name, list[i].modulus};
    counter_config_t cc = {.default_modulus = cfg->counter_default_modulus,
                           .max_jump = cfg->counter_max_jump, .jitter = cfg->counter_jitter,
                           .moduli = mods, .nmoduli = n > 0 ? n : 0};
    return counter_new(&cc);
}

void *fp_worker_main(void *argp)
{
    fp_stage_args_t *args = argp;
    worker_t self_ = {.cfg = args->cfg, .metrics = args->metrics, .index = args->index,
                      .round = args->start_round, .store = args->store, .event_wm = INT64_MIN};
    worker_t *self = &self_;
    const fp_config_t *cfg = self->cfg;
    char err[512] = "", ep[64];
    char *who = self->who;
    snprintf(self->who, sizeof self->who, "worker-%d", self->index);
    self->frame_keep = fp_dl_frame_keep(cfg);
    self->dl_round_max = fp_config_dl_round_bytes(cfg);
    self->nshards = cfg->shards;
    self->slot = fp_metrics_stage(self->metrics, FP_STAGE_WORKER, self->index);
    self->ingest_slot = fp_metrics_stage(self->metrics, FP_STAGE_INGEST, 0);
    for (int s = 0; s < self->nshards; s++)
        self->sslot[s] = fp_metrics_stage(self->metrics, FP_STAGE_SHARD, s);
    self->dedup = dedup_new(cfg->dedup_window, cfg->max_sources);
    self->codec = fp_codec_new();
    self->counters = s_counters_new(cfg);
    self->idbuf = malloc(strlen(cfg->instance) + 1 + 32 + 1);
    bool ok = self->dedup && self->codec && self->counters && self->idbuf;
    if (ok && args->store) {
        /* Sources may leave memory: their committed state is in the store.
           Without one nothing could bring them back, so they stay. */
        self->aging = true;
        dedup_set_aging(self->dedup, cfg->source_idle_ms * 1000000);
        dedup_rounds(self->dedup, args->start_round - 1, args->start_round - 1, fp_now_ns());
        ok = (self->reload = malloc(dedup_export_max(self->dedup))) != NULL;
    }
    if (ok && cfg->new_sources_per_peer) {
        /* The bound is for all workers: each takes its share (a peer's
           sources are spread over the workers by source id). */
        uint32_t w = (uint32_t)cfg->workers;
        ok = (self->rate = peerrate_new((cfg->new_sources_per_peer + w - 1) / w)) != NULL;
    }
    if (!ok)
        snprintf(err, sizeof err, "out of memory");
    snprintf(ep, sizeof ep, FP_EP_WORKER, self->index);
    if (ok)
        ok = (self->in = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, ep, 1, -1, cfg->queue_batches,
                                         err, sizeof err)) != NULL;
    for (int s = 0; ok && s < self->nshards; s++) {
        snprintf(ep, sizeof ep, FP_EP_SHARD, s, self->index);
        ok = (self->shards[s] = fp_stage_socket(args->zmq_ctx, ZMQ_PUSH, ep, 0,
                                                cfg->queue_batches, -1, err, sizeof err)) != NULL;
    }
    if (ok)
        ok = (self->dl = fp_stage_socket(args->zmq_ctx, ZMQ_PUSH, FP_EP_DEAD, 0,
                                         cfg->queue_batches, -1, err, sizeof err)) != NULL;
    if (ok)
        ok = (self->acks = fp_stage_socket(args->zmq_ctx, ZMQ_PUSH, FP_EP_ACKS, 0, 0, -1, err,
                                           sizeof err)) != NULL;
    if (ok && args->store && fp_store_each_source(args->store, s_restore_source, self) != 0) {
        snprintf(err, sizeof err,
                 "the dedup state cannot be restored (damaged, or max_sources, dedup_window "
                 "or workers lowered below what it holds)");
        ok = false;
    }
    if (ok && args->store &&
        fp_store_each_counter(args->store, s_restore_counter, self) != 0) {
        snprintf(err, sizeof err, "the counter state in the state directory is damaged");
        ok = false;
    }
    if (ok && args->store) {
        /* What was restored is committed already: nothing to export. */
        dedup_export_dirty(self->dedup, s_discard_source, NULL);
        fp_log(FP_LOG_INFO, who, "restored", "sources=%llu counters=%llu",
               (unsigned long long)dedup_stats(self->dedup)->sources,
               (unsigned long long)counter_count(self->counters));
    }
    fp_stage_ready(args, who, ok ? 0 : -1, err);
    if (!ok) {
        fp_metrics_stage_exit(self->slot);
        s_cleanup(self);
        return NULL;
    }
    fp_metrics_stage_beat(self->slot, fp_now_ns());
    for (;;) {
        zmq_msg_t first;
        zmq_msg_init(&first);
        if (zmq_msg_recv(&first, self->in, 0) < 0) {
            zmq_msg_close(&first);
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        /* Busy from here to the next blocking recv; beats at least once a
           round, since every round brings a barrier. */
        int64_t woke = fp_now_ns();
        fp_metrics_stage_beat(self->slot, woke);
        fp_metrics_stage_received(self->slot, 1);
        size_t n = zmq_msg_size(&first);
        uint32_t type = 0;
        if (n >= sizeof type)
            memcpy(&type, zmq_msg_data(&first), sizeof type);
        if (type == FP_MSG_BARRIER && n == sizeof(fp_barrier_t)) {
            fp_barrier_t b;
            memcpy(&b, zmq_msg_data(&first), sizeof b);
            /* Our part of round b.round: the dedup and counter state it
               changed (without a store the marks are just cleared). */
            dedup_rounds(self->dedup, b.round, b.committed, fp_now_ns());
            s_sync_dedup_metrics(self);
            if (self->store)
                dedup_export_dirty(self->dedup, s_export_source, self);
            counter_export_dirty(self->counters, self->store ? s_export_counter : s_discard_counter,
                                 self);
            fp_emit_mark(self->dl, 1 + (uint32_t)self->index, &b);
            self->round = b.round + 1;
            b.event_ns = self->event_wm;
            for (int s = 0; s < self->nshards; s++) {
                fp_metrics_stage_sent(self->sslot[s], 1);
                zmq_send(self->shards[s], &b, sizeof b, 0);
            }
            zmq_msg_close(&first);
            fp_metrics_sources_tracked(self->metrics, self->index, dedup_stats(self->dedup)->sources);
            fp_metrics_stage_busy(self->slot, fp_now_ns() - woke);
            if (b.flags & FP_BARRIER_DRAIN)
                break;
            continue;
        }
        /* FP_MSG_FRAME: meta then payload (both from our own ingest). */
        fp_frame_meta_t meta = {0};
        memcpy(&meta, zmq_msg_data(&first), n < sizeof meta ? n : sizeof meta);
        assert(type == FP_MSG_FRAME && meta.toklen <= FP_INPUT_TOKEN_MAX &&
               offsetof(fp_frame_meta_t, token) + meta.toklen == n);
        zmq_msg_close(&first);
        zmq_msg_t payload;
        zmq_msg_init(&payload);
        zmq_msg_recv(&payload, self->in, 0);
        s_frame(self, &meta, &payload);
        zmq_msg_close(&payload);
        fp_metrics_stage_busy(self->slot, fp_now_ns() - woke);
    }
    uint32_t done = FP_MSG_DL_DRAIN;
    zmq_send(self->acks, &done, sizeof done, 0);
    fp_metrics_stage_exit(self->slot);
    const dedup_stats_t *st = dedup_stats(self->dedup);
    fp_log(FP_LOG_INFO, who, "drained", "sources=%llu accepted=%llu duplicates=%llu too_old=%llu",
           (unsigned long long)st->sources, (unsigned long long)st->accepted,
           (unsigned long long)st->duplicates, (unsigned long long)st->too_old);
    s_cleanup(self);
    return NULL;
}
