/*  agg.c - the aggregation's semantics (agg.h): records into keys, the
    triggers, late corrections, closed operations and their release,
    posting periods, backfill and closed periods, event ids.

    The aggregation is three modules around one agg_t (agg_internal.h):
      agg.c         the semantics (this file): what a record adds, when a
                    key emits, what a flush and a release do
      agg_table.h/c the open-key table: key -> entry, incremental growth
      agg_format.h/c the stored key and state bytes (pure)
      agg_state.c   export and import: agg_t <-> those bytes
    agg_internal.h describes the agg_t's parts (pool, heads, lists, FIFO).

    Periods: agg_period_at maps an event time to a cached period (AGG_PC of
    them; the hot path, s_pid, is one compare pair against the last hit),
    whose id is part of the key. A record looks up only the entries of its
    period; the head is looked up only when a key is created.

    Time for closing: agg_add has no clock. An operation closed by agg_add
    gets closed_at = self->now, the now_ns of the latest agg_flush call (0
    before the first; after agg_import, the latest closed_at restored).
    agg_flush releases a closed operation when
    now_ns - closed_at >= closed_key_grace_ns and nothing of it is pending, so
    the real grace is between the configured grace and grace + one flush
    interval.

    Hot path (agg_add). Pass 0, once per batch: the string indices the
    records use are collected (a stamp array, no search) and mapped to
    symbols with intern_find_many, which hashes, prefetches and looks them up
    a group at a time; a string not interned yet is acquired, and the batch
    holds that reference until agg_add returns (strings found need none:
    keys hold them and agg_add releases no key). Then the records, in chunks
    of AGG_CHUNK: pass 1 validates each, builds its keys from the map, hashes
    them and prefetches their slots; pass 2 prefetches the two hot lines of
    the entries the slots name and keeps them as hints; pass 3 applies the
    records in order (a hint whose key matches needs no probe; a consumption
    record reaches its operation through its key's entry). Capacity for
    every key the chunk could create is reserved before pass 1, so nothing
    grows (and no pointer moves) inside a chunk and nothing is allocated per
    record but new strings. The table's lookups, prefetches and insert are
    static inline (agg_table.h) and compile into this loop.

    Callbacks: emit and reject run inside agg_add/agg_flush and must not call
    back into this agg_t.
*/
#include "agg.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* Inlined: XXH3 of short keys is a few ns, a library call doubles it. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "agg_format.h"
#include "agg_internal.h"
#include "intern.h"
#include "record_check.h"

/* ---- construction ---- */

static agg_pc_t *s_pc_put(agg_t *self, const fp_period_t *p);

agg_t *agg_new(const agg_config_t *cfg, agg_emit_fn *emit, agg_reject_fn *reject, void *ctx)
{
    assert(cfg && emit && reject);
    agg_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    const char *inst = cfg->instance ? cfg->instance : "";
    size_t ilen = strlen(inst);
    self->instance = malloc(ilen + 1);
    self->idbuf = malloc(ilen + 1 + 32 + 1);
    self->intern = intern_new();
    self->xxh = XXH3_createState();
    self->mark = calloc(FP_BATCH_STRINGS_MAX + 1, 1);
    int tab = agg_tab_init(&self->tab);
    agg_cs_init(&self->cs);
    if (!self->instance || !self->idbuf || !self->intern || !self->xxh || tab != 0 ||
        !self->mark) {
        agg_destroy(&self);
        return NULL;
    }
    memcpy(self->instance, inst, ilen + 1);
    self->cfg.instance = self->instance;
    self->emit = emit;
    self->reject = reject;
    self->ctx = ctx;
    self->periods = cfg->period.kind != FP_PERIOD_NONE;
    /* Without periods one entry holds every time, id 0 (s_pid). */
    self->pc[0] = (agg_pc_t){.start = INT64_MIN, .end = INT64_MAX, .id = 0};
    self->npc = 1;
    self->hit_lo = INT64_MIN;
    self->hit_span = UINT64_MAX; /* every t but INT64_MAX, which the slow path maps alike */
    self->wm = INT64_MIN;
    self->flushed_through = INT64_MIN;
    if (self->periods) {
        self->npc = 0;
        self->pc[0].end = INT64_MIN; /* nothing cached */
        self->hit_span = 0;
    }
    if (self->periods && cfg->closed_set) {
        fp_period_t p;
        fp_period_first_of_date(&cfg->period, cfg->closed_before, &p);
        self->first_open = *s_pc_put(self, &p);
    }
    return self;
}

void agg_destroy(agg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    agg_t *self = *self_p;
    intern_destroy(&self->intern); /* frees every string; entries hold no other memory */
    if (self->xxh)
        XXH3_freeState((XXH3_state_t *)self->xxh);
    agg_tab_fini(&self->tab);
    for (uint32_t i = 1; i < self->cs.pool_used; i++)
        if (self->cs.pool[i].kind != 0)
            free(self->cs.pool[i].kb);
    agg_cs_fini(&self->cs);
    free(self->map);
    free(self->used);
    free(self->touched);
    free(self->mark);
    free(self->idbuf);
    free(self->instance);
    free(self->rel);
    free(self->kbuf);
    free(self->sbuf);
    free(self->lx);
    free(self);
    *self_p = NULL;
}

const agg_pending_t *agg_pending(const agg_t *self)
{
    return &self->pend;
}

/* agg_pend_add's inverse (agg_internal.h), wrapping alike. */
static void s_pend_sub(int64_t *total, int64_t q)
{
    *total = (int64_t)((uint64_t)*total - (uint64_t)q);
}

const agg_stats_t *agg_stats(const agg_t *self)
{
    return &self->stats;
}

/* ---- posting periods ---- */

static int64_t s_floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b < 0);
}

/* Caches period p; returns its slot. */
static agg_pc_t *s_pc_put(agg_t *self, const fp_period_t *p)
{
    uint32_t i = self->npc < AGG_PC ? self->npc++ : self->pc_next++ % AGG_PC;
    if (i == self->hit_idx)
        self->hit_span = 0; /* its slot is reused: no hot period until the next hit */
    agg_pc_t *c = &self->pc[i];
    c->start = p->start_ns;
    c->end = p->end_ns;
    /* periods start at a local minute (whole-minute zone offsets; the
       seconds of a 19th-century LMT only shift the minute) and last an
       hour at least, so their start minute names them */
    c->id = (uint32_t)(s_floor_div(p->start_ns, 60000000000ll) + AGG_PERIOD_BIAS);
    c->date = p->date;
    c->index = p->index;
    c->closed = self->cfg.closed_set && p->date < self->cfg.closed_before;
    fp_period_date_str(p->date, c->date_str);
    fp_period_name(&self->cfg.period, p, c->name);
    return c;
}

/* Makes cached period c the hot path's (unless it is closed). */
static void s_period_hit(agg_t *self, const agg_pc_t *c)
{
    if (c->closed)
        return;
    self->hit_lo = c->start;
    self->hit_span = (uint64_t)c->end - (uint64_t)c->start;
    self->hit_id = c->id;
    self->hit_idx = (uint32_t)(c - self->pc);
}

/* The cached period that holds t (computing it if none does). */
static const agg_pc_t *s_period_slow(agg_t *self, int64_t t)
{
    for (uint32_t i = 0; i < self->npc; i++)
        if (t >= self->pc[i].start && t < self->pc[i].end) {
            s_period_hit(self, &self->pc[i]);
            return &self->pc[i];
        }
    if (!self->periods) /* t = INT64_MAX */
        return &self->pc[0];
    fp_period_t p;
    fp_period_of(&self->cfg.period, t, &p);
    agg_pc_t *c = s_pc_put(self, &p);
    s_period_hit(self, c);
    return c;
}

const agg_pc_t *agg_period_at(agg_t *self, int64_t t)
{
    if ((uint64_t)t - (uint64_t)self->hit_lo < self->hit_span)
        return &self->pc[self->hit_idx];
    return s_period_slow(self, t);
}

/* The hot path: the id of t's period, and whether that period is closed
   (only the slow path returns closed ones). One subtraction and one
   compare when t is in the period of the record before. */
static inline uint32_t s_pid(agg_t *self, int64_t t, bool *closed)
{
    if (__builtin_expect((uint64_t)t - (uint64_t)self->hit_lo < self->hit_span, 1)) {
        *closed = false;
        return self->hit_id;
    }
    const agg_pc_t *c = s_period_slow(self, t);
    *closed = c->closed;
    return c->id;
}

/* Whether a stored period id is one s_pc_put can have made: 0 (periods
   off), or a start minute of an int64 ns time. Others would overflow the
   ns arithmetic below: damaged. */
/* The period of id (periods on; id != 0, agg_fmt_period_id_ok). */
static const agg_pc_t *s_period_by_id(agg_t *self, uint32_t id)
{
    for (uint32_t i = 0; i < self->npc; i++)
        if (self->pc[i].id == id)
            return &self->pc[i];
    /* The last nanosecond of its start minute lies in it; in the minute of
       INT64_MAX that is INT64_MAX itself (a record at the end of time). */
    int64_t m = (int64_t)id - AGG_PERIOD_BIAS, t;
    if (__builtin_mul_overflow(m + 1, 60000000000ll, &t))
        t = INT64_MAX;
    else
        t -= 1;
    fp_period_t p;
    fp_period_of(&self->cfg.period, t, &p);
    return s_pc_put(self, &p);
}

void agg_watermark(agg_t *self, int64_t event_ns)
{
    if (event_ns > self->wm)
        self->wm = event_ns;
}

/* Keys held: full ones but heads, compact ones (agg.h). */
static uint64_t s_keys_held(const agg_t *self)
{
    return self->tab.nkeys - self->nheads + self->ckeys;
}

static void s_keys_update(agg_t *self)
{
    self->stats.keys = s_keys_held(self);
    self->stats.compact_keys = self->ckeys;
}

/* Also returns the key strings' total length. */
static size_t s_hash_strings(agg_t *self, const agg_key_t *k, uint64_t *lo, uint64_t *hi)
{
    size_t total = 0;
    /* kind, then each field as (u32 length, bytes): injective, unlike separators. */
    int nfields = k->kind == FP_CK_CONSUMPTION ? 6 : k->kind == FP_CK_SCRAP ? 4 : 3;
    uint8_t kind = (uint8_t)k->kind;
    XXH3_state_t *xxh = self->xxh;
    XXH3_128bits_reset(xxh);
    XXH3_128bits_update(xxh, &kind, 1);
    for (int f = 0; f < nfields; f++) {
        uint32_t len;
        const char *s = intern_str(self->intern, k->sym[f], &len);
        XXH3_128bits_update(xxh, &len, sizeof len);
        XXH3_128bits_update(xxh, s, len);
        total += len;
    }
    /* The period after the strings (a length can never be mistaken for it:
       the fields are fixed per kind). Period 0 (periods off) hashes as
       before periods existed, so those event ids stay the same. */
    if (k->period != 0)
        XXH3_128bits_update(xxh, &k->period, sizeof k->period);
    XXH128_hash_t d = XXH3_128bits_digest(xxh);
    *lo = d.low64;
    *hi = d.high64;
    return total;
}

/* (agg_internal.h) The caller checked agg_tab_room. op: its operation
   head (AGG_NONE for a head: it is its own). line/station: for a head. */
/* agg_entry_create; kh: the child's event_id hash when the caller has it
   (s_hash_strings), else NULL. */
static uint32_t s_entry_create(agg_t *self, const agg_key_t *k, uint64_t h, uint32_t op,
                               uint32_t line, uint32_t station, const uint64_t *kh)
{
    uint32_t idx = agg_tab_insert(&self->tab, k, h);
    agg_entry_t *e = &self->tab.pool[idx];
    for (int f = 0; f < AGG_FIELDS; f++)
        intern_ref(self->intern, k->sym[f]);
    /* Export bounds (agg.h formats): version, kind, 6 length varints, the
       period varint. */
    size_t strs = 0;
    if (k->kind == AGG_KIND_OP) { /* a head emits nothing: no event_id hash */
        for (int f = 0; f < 3; f++) {
            uint32_t len;
            (void)intern_str(self->intern, k->sym[f], &len);
            strs += len;
        }
    } else if (kh) {
        e->khash_lo = kh[0];
        e->khash_hi = kh[1];
        strs = kh[2];
    } else {
        strs = s_hash_strings(self, k, &e->khash_lo, &e->khash_hi);
    }
    size_t kmax = agg_fmt_key_max(strs);
    if (kmax > self->key_max)
        self->key_max = kmax;
    if (k->kind == AGG_KIND_OP) {
        uint32_t llen, slen;
        (void)intern_str(self->intern, line, &llen);
        (void)intern_str(self->intern, station, &slen);
        if ((size_t)llen + slen > self->attr_max)
            self->attr_max = (size_t)llen + slen;
        e->op = idx;
        e->line = line;
        e->station = station;
        intern_ref(self->intern, line);
        intern_ref(self->intern, station);
        self->stats.open_operations++;
        self->nheads++;
    } else {
        assert(op != AGG_NONE && self->tab.pool[op].key.kind == AGG_KIND_OP);
        e->op = op;
        e->child_next = self->tab.pool[op].first_child;
        self->tab.pool[op].first_child = idx;
    }
    s_keys_update(self);
    return idx;
}

uint32_t agg_entry_create(agg_t *self, const agg_key_t *k, uint64_t h, uint32_t op,
                          uint32_t line, uint32_t station)
{
    return s_entry_create(self, k, h, op, line, station, NULL);
}

/* ---- the CAND list: closed full heads to compact ---- */

static void s_cand_add(agg_t *self, uint32_t op)
{
    agg_entry_t *e = &self->tab.pool[op];
    assert(!(e->flags & AGG_E_CAND));
    e->flags |= AGG_E_CAND;
    e->cand_gen = self->flush_gen;
    e->cand_prev = AGG_NONE;
    e->cand_next = self->cand_head;
    if (self->cand_head != AGG_NONE)
        self->tab.pool[self->cand_head].cand_prev = op;
    else
        self->cand_tail = op;
    self->cand_head = op;
}

static void s_cand_remove(agg_t *self, uint32_t op)
{
    agg_entry_t *e = &self->tab.pool[op];
    if (e->cand_prev != AGG_NONE)
        self->tab.pool[e->cand_prev].cand_next = e->cand_next;
    else
        self->cand_head = e->cand_next;
    if (e->cand_next != AGG_NONE)
        self->tab.pool[e->cand_next].cand_prev = e->cand_prev;
    else
        self->cand_tail = e->cand_prev;
    e->flags &= (uint8_t)~AGG_E_CAND;
}

/* Frees an entry with nothing pending: table slot, symbols, pool index. The
   caller unlinks it from its operation (release frees whole operations). */
static void s_free(agg_t *self, uint32_t idx)
{
    agg_entry_t *e = &self->tab.pool[idx];
    assert(e->count == 0 && !(e->flags & (AGG_E_ON_DIRTY | AGG_E_ON_LATE)));
    agg_unmark(self, idx);
    if (e->flags & AGG_E_CAND)
        s_cand_remove(self, idx);
    for (int f = 0; f < AGG_FIELDS; f++)
        intern_release(self->intern, e->key.sym[f]);
    if (e->key.kind == AGG_KIND_OP) {
        intern_release(self->intern, e->line);
        intern_release(self->intern, e->station);
        self->nheads--;
    }
    if (e->lx != AGG_NONE) {
        self->lx[e->lx].free_next = self->lx_free;
        self->lx_free = e->lx;
    }
    agg_tab_remove(&self->tab, idx);
    s_keys_update(self);
}

/* ---- lineage blocks ----
   An entry keeps its first lineage range inline, on its hot lines; when a
   second (source, epoch) contributes to its pending records it takes a
   block of AGG_LINEAGE - 1 more ranges from this pool, and keeps it until
   it is freed. So a key with one source, most of them, carries 4 bytes for
   the others instead of 96 (an entry is 192 bytes, not 320). The pool is
   an array of blocks by index (it moves when it grows) with a free list. */

int agg_lx_reserve(agg_t *self)
{
    if (self->lx_free != AGG_NONE || (self->lx_used > 0 && self->lx_used < self->lx_cap))
        return 0;
    uint32_t ncap = self->lx_cap ? self->lx_cap * 2 : 64;
    if (ncap <= self->lx_cap)
        return -1;
    agg_lx_t *n = realloc(self->lx, (size_t)ncap * sizeof *n);
    if (!n)
        return -1;
    self->lx = n;
    self->lx_cap = ncap;
    if (self->lx_used == 0)
        self->lx_used = 1; /* index 0 is AGG_NONE */
    return 0;
}

/* A block for e (agg_lx_reserve made room). */
static void s_lx_take(agg_t *self, agg_entry_t *e)
{
    assert(e->lx == AGG_NONE);
    if (self->lx_free != AGG_NONE) {
        e->lx = self->lx_free;
        self->lx_free = self->lx[e->lx].free_next;
    } else {
        assert(self->lx_used < self->lx_cap);
        e->lx = self->lx_used++;
    }
}

/* (agg_internal.h) */
void agg_lineage_set(agg_t *self, agg_entry_t *e, const fp_seq_range_t *in, uint32_t n)
{
    assert(n >= 1 && n <= AGG_LINEAGE);
    e->lineage0 = in[0];
    if (n > 1 && e->lx == AGG_NONE)
        s_lx_take(self, e);
    for (uint32_t i = 1; i < n; i++)
        self->lx[e->lx].r[i - 1] = in[i];
    e->nlineage = (uint8_t)n;
}

/* ---- pending lists ---- */

static void s_list_remove(agg_t *self, uint32_t idx)
{
    agg_entry_t *e = &self->tab.pool[idx];
    int list = (e->flags & AGG_E_ON_LATE) ? AGG_LIST_LATE : AGG_LIST_DIRTY;
    assert(e->flags & (AGG_E_ON_DIRTY | AGG_E_ON_LATE));
    if (e->list_prev != AGG_NONE)
        self->tab.pool[e->list_prev].list_next = e->list_next;
    else
        self->head[list] = e->list_next;
    if (e->list_next != AGG_NONE)
        self->tab.pool[e->list_next].list_prev = e->list_prev;
    else
        self->tail[list] = e->list_prev;
    e->flags &= (uint8_t)~(AGG_E_ON_DIRTY | AGG_E_ON_LATE);
    e->list_prev = e->list_next = AGG_NONE;
}

/* ---- emission ---- */

static const char *s_str(const agg_t *self, uint32_t sym)
{
    return intern_str(self->intern, sym, NULL);
}

/* Emits entry idx's pending delta as one checkpoint, then resets it. */
static void s_emit(agg_t *self, uint32_t idx, bool final)
{
    agg_entry_t *e = &self->tab.pool[idx];
    const agg_entry_t *op = &self->tab.pool[e->op];
    assert(e->count > 0 && e->nlineage > 0);
    e->checkpoint_no++;

    /* event_id: XXH3-128 of (key hash, checkpoint_no, source, epoch and
       first_seq of the first lineage range): a record is summed in exactly
       one checkpoint per key, so (key, that record) names the checkpoint even
       after the key was released and reopened (checkpoint_no restarts). */
    uint64_t in[6] = {e->khash_lo,             e->khash_hi,
                      e->checkpoint_no,        e->lineage0.source_id,
                      e->lineage0.epoch,       e->lineage0.first_seq};
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(in, sizeof in));
    fp_event_id_write(self->idbuf, self->instance, c.digest);

    fp_checkpoint_t ck;
    memset(&ck, 0, sizeof ck);
    ck.event_id = self->idbuf;
    ck.stream_seq = 0; /* the emit thread numbers the feed */
    ck.checkpoint_no = e->checkpoint_no;
    ck.instance = self->instance;
    ck.plant = s_str(self, e->key.sym[AGG_F_PLANT]);
    ck.line = s_str(self, op->line);
    ck.order = s_str(self, e->key.sym[AGG_F_ORDER]);
    ck.operation = s_str(self, e->key.sym[AGG_F_OPERATION]);
    ck.first_time_ns = e->first_ns;
    ck.last_time_ns = e->last_ns;
    ck.record_count = e->count;
    agg_lineage_get(self, e, ck.lineage);
    ck.nlineage = e->nlineage;
    ck.lineage_truncated = e->truncated;
    ck.late = (e->flags & AGG_E_LATE) != 0;
    if (self->periods) {
        /* The entry's own period; a closed one (closed_before) posts to the
           first open period and keeps its own as the original. Backfill: the
           period was flushed before (agg.h "Periods"). */
        /* Period 0: the key was made with periods off (the config has
           changed since): its records post by the period of the first. */
        const agg_pc_t *pc = e->key.period ? s_period_by_id(self, e->key.period)
                                         : agg_period_at(self, e->first_ns);
        ck.backfill = pc->end <= self->flushed_through;
        if (pc->closed) {
            ck.original_posting_date = pc->date_str;
            ck.original_period_start_ns = pc->start;
            pc = &self->first_open;
            ck.backfill = true;
        }
        ck.posting_date = pc->date_str;
        ck.period = pc->name;
        ck.period_start_ns = pc->start;
        ck.period_end_ns = pc->end;
    }
    switch (e->key.kind) {
    case FP_CK_COMPLETION:
        ck.kind = FP_CK_COMPLETION;
        ck.yield = e->sum0;
        ck.scrap = e->sum1;
        ck.final = final;
        break;
    case FP_CK_CONSUMPTION:
        ck.kind = FP_CK_CONSUMPTION;
        ck.material = s_str(self, e->key.sym[AGG_F_MATERIAL]);
        ck.lot = s_str(self, e->key.sym[AGG_F_LOT]);
        ck.unit = s_str(self, e->key.sym[AGG_F_UNIT]);
        ck.quantity = e->sum0;
        break;
    case FP_CK_SCRAP:
        ck.kind = FP_CK_SCRAP;
        ck.reason = s_str(self, e->key.sym[AGG_F_REASON]);
        ck.parts = e->sum0;
        break;
    default:
        assert(!"entry kind");
    }
    self->emit(self->ctx, &ck);

    self->stats.events++;
    if (ck.late)
        self->stats.late_events++;
    if (ck.backfill)
        self->stats.backfill_events++;
    e->last_flush = self->flush_gen;
    s_pend_sub(&self->pend.quantity[e->key.kind - 1], e->sum0);
    self->pend.records[e->key.kind - 1] -= e->count;
    s_list_remove(self, idx);
    agg_mark(self, idx);
    e->sum0 = e->sum1 = 0;
    e->count = 0;
    e->nlineage = 0;
    e->truncated = false;
    e->flags &= (uint8_t)~AGG_E_LATE;
}

/* ---- applying records ---- */

/* s_account for an entry with nothing pending: starts its times and
   lineage and lists it. */
static void s_account_first(agg_t *self, uint32_t idx, const fp_batch_hdr_t *b,
                            const fp_record_t *r)
{
    agg_entry_t *e = &self->tab.pool[idx];
    assert(e->count == 0 && e->nlineage == 0);
    e->first_ns = e->last_ns = r->time_ns;
    if (self->tab.pool[e->op].flags & AGG_E_CLOSED)
        e->flags |= AGG_E_LATE;
    agg_list_add(self, idx, (e->flags & AGG_E_LATE) ? AGG_LIST_LATE : AGG_LIST_DIRTY);
    e->count = 1;
    self->pend.records[e->key.kind - 1]++;
    agg_mark(self, idx);
    e->lineage0 = (fp_seq_range_t){b->source_id, b->epoch, r->seq, r->seq};
    e->nlineage = 1;
}

/* The lineage of an entry with records pending, when its first range is
   of another (source, epoch). */
static void s_lineage_other(agg_t *self, agg_entry_t *e, const fp_batch_hdr_t *b, uint64_t seq)
{
    for (uint32_t i = 1; i < e->nlineage; i++) {
        fp_seq_range_t *l = &self->lx[e->lx].r[i - 1];
        if (l->source_id == b->source_id && l->epoch == b->epoch) {
            if (seq < l->first_seq)
                l->first_seq = seq;
            if (seq > l->last_seq)
                l->last_seq = seq;
            return;
        }
    }
    if (e->nlineage == AGG_LINEAGE || (e->lx == AGG_NONE && agg_lx_reserve(self) != 0)) {
        e->truncated = true; /* no room: as with more ranges than kept */
        return;
    }
    if (e->lx == AGG_NONE)
        s_lx_take(self, e);
    self->lx[e->lx].r[e->nlineage - 1] = (fp_seq_range_t){b->source_id, b->epoch, seq, seq};
    e->nlineage++;
}

/* Counts rec into entry idx (count, times, lineage) and lists it. The
   common case - records pending, from the source of its first lineage
   range - touches only the entry's hot lines and takes no branch that
   depends on the data. Invariant: count > 0 implies nlineage >= 1. */
static inline void s_account(agg_t *self, uint32_t idx, const fp_batch_hdr_t *b,
                             const fp_record_t *r)
{
    agg_entry_t *e = &self->tab.pool[idx];
    if (__builtin_expect(e->count == 0, 0)) {
        s_account_first(self, idx, b, r);
        return;
    }
    int64_t t = r->time_ns;
    uint64_t seq = r->seq;
    e->first_ns = t < e->first_ns ? t : e->first_ns;
    e->last_ns = t > e->last_ns ? t : e->last_ns;
    e->count++;
    self->pend.records[e->key.kind - 1]++;
    agg_mark(self, idx);
    fp_seq_range_t *l = &e->lineage0;
    if (__builtin_expect(l->source_id == b->source_id && l->epoch == b->epoch, 1)) {
        l->first_seq = seq < l->first_seq ? seq : l->first_seq;
        l->last_seq = seq > l->last_seq ? seq : l->last_seq;
        return;
    }
    s_lineage_other(self, e, b, seq);
}

/* (agg_internal.h) */
void agg_fifo_append(agg_t *self, uint32_t op)
{
    agg_entry_t *e = &self->tab.pool[op];
    uint64_t lo, hi;
    (void)s_hash_strings(self, &e->key, &lo, &hi);
    uint32_t ci = agg_cs_insert(&self->cs, lo, hi, (uint8_t)AGG_KIND_OP);
    agg_cpt_t *c = &self->cs.pool[ci];
    agg_cpt_head_t *hp = agg_cs_head(&self->cs, ci);
    c->op = op;
    hp->line = e->line;
    hp->station = e->station;
    intern_ref(self->intern, hp->line);
    intern_ref(self->intern, hp->station);
    hp->closed_at = e->closed_at;
    hp->close_seq = e->close_seq;
    c->next = AGG_NONE;
    e->cpt = ci;
    s_cand_add(self, op);
    if (self->fifo_tail != AGG_NONE)
        self->cs.pool[self->fifo_tail].next = ci;
    else
        self->fifo_head = ci;
    self->fifo_tail = ci;
    self->stats.open_operations--;
    self->stats.closed_operations++;
}

/* OperationCompleted (counted into completion entry cm of its period):
   the final completion, then everything pending of the operation (head
   op) in every period - consumption, scrap and the completions of other
   periods - then the operation is closed (if it was not). */
static void s_complete(agg_t *self, uint32_t op, uint32_t cm)
{
    s_emit(self, cm, true);
    for (uint32_t c = self->tab.pool[op].first_child; c != AGG_NONE; c = self->tab.pool[c].child_next)
        if (self->tab.pool[c].count > 0)
            s_emit(self, c, false);
    agg_entry_t *e = &self->tab.pool[op];
    if (e->flags & AGG_E_CLOSED)
        return;
    e->flags |= AGG_E_CLOSED;
    e->closed_at = self->now;
    /* One more than the newest closed operation held, so that the numbers
       depend only on what is held: a restored agg_t numbers alike. */
    if (self->fifo_unsorted)
        agg_fifo_sort(self);
    e->close_seq = self->fifo_tail != AGG_NONE ? agg_cs_head(&self->cs, self->fifo_tail)->close_seq + 1 : 0;
    agg_mark(self, op);
    agg_fifo_append(self, op);
}

static void s_refuse(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *r,
                     const char *reason)
{
    self->stats.rejected++;
    self->reject(self->ctx, b, r, reason);
}

/* A late record for closed operation ci, compacted whole: its full head
   again, as it was (line, station, closing), on the CAND list. Its
   children come back one by one as records need them (s_take). */
static uint32_t s_revive(agg_t *self, const agg_key_t *hk, uint64_t h, uint32_t ci)
{
    agg_cpt_t *c = &self->cs.pool[ci];
    const agg_cpt_head_t *hp = agg_cs_head(&self->cs, ci);
    assert(c->kind == AGG_KIND_OP && c->op == AGG_NONE);
    uint32_t op = agg_entry_create(self, hk, h, AGG_NONE, hp->line, hp->station);
    agg_entry_t *e = &self->tab.pool[op];
    e->flags |= AGG_E_CLOSED;
    e->closed_at = hp->closed_at;
    e->close_seq = hp->close_seq;
    e->cpt = ci;
    c->op = op;
    s_cand_add(self, op);
    self->stats.open_operations--; /* agg_entry_create counted it open */
    return op;
}

/* The compact child of key k, if any; kh: its event_id hash and string
   length (for s_entry_create). */
static uint32_t s_cpt_find_key(agg_t *self, const agg_key_t *k, uint64_t *kh)
{
    kh[2] = s_hash_strings(self, k, &kh[0], &kh[1]);
    return agg_cs_find(&self->cs, kh[0], kh[1]);
}

/* Unlinks compact child ci from its head and frees it. */
static void s_cpt_drop(agg_t *self, uint32_t ci)
{
    agg_cpt_t *c = &self->cs.pool[ci];
    agg_cpt_head_t *head = agg_cs_head(&self->cs, c->op);
    if (c->prev != AGG_NONE)
        self->cs.pool[c->prev].next = c->next;
    else
        head->first_child = c->next;
    if (c->next != AGG_NONE)
        self->cs.pool[c->next].prev = c->prev;
    head->nchild--;
    free(c->kb);
    agg_cs_remove(&self->cs, ci);
    self->ckeys--;
}

/* New full entry idx takes over compact child ci (a late record for it). */
static void s_take(agg_t *self, uint32_t idx, uint32_t ci)
{
    assert(self->cs.pool[ci].kind == self->tab.pool[idx].key.kind);
    self->tab.pool[idx].checkpoint_no = self->cs.pool[ci].checkpoint_no;
    s_cpt_drop(self, ci);
    s_keys_update(self);
}

/* The operation of the record whose keys are in p, found: its full head
   from one of its entries found or from the table (returned), else its
   compact head if the store has it (*ci; AGG_NONE: a new operation). hk
   and h: the head's key and hash, for s_head_make. */
typedef struct {
    agg_key_t hk;
    uint64_t h;
    uint32_t ci;
} agg_headq_t;

static uint32_t s_head_find(agg_t *self, const agg_pre_t *p, uint32_t cm, uint32_t ch,
                            agg_headq_t *q)
{
    q->ci = AGG_NONE;
    if (cm != AGG_NONE)
        return self->tab.pool[cm].op;
    if (ch != AGG_NONE)
        return self->tab.pool[ch].op;
    const agg_key_t *k = p->kind == FP_KIND_MATERIAL ? &p->child : &p->cm;
    q->hk = (agg_key_t){.kind = AGG_KIND_OP, .sym = {k->sym[AGG_F_PLANT], k->sym[AGG_F_ORDER], k->sym[AGG_F_OPERATION]}};
    q->h = agg_key_hash(&q->hk);
    uint32_t op = agg_tab_find(&self->tab, &q->hk, q->h);
    if (op == AGG_NONE && self->cs.n > 0) {
        uint64_t lo, hi;
        (void)s_hash_strings(self, &q->hk, &lo, &hi);
        q->ci = agg_cs_find(&self->cs, lo, hi);
    }
    return op;
}

/* Whether keys of operation op (a full head, or AGG_NONE with q->ci its
   compact head or none) may be at rest in the compact store: only keys of
   a closed operation are (agg_compact.h), and they hang from its compact
   head. So a key missing from the table of an open operation, or of a new
   one, is a new key: no probe of the store for it. */
static bool s_may_rest(const agg_t *self, uint32_t op, const agg_headq_t *q)
{
    if (self->ckeys == 0)
        return false;
    if (op != AGG_NONE) {
        const agg_entry_t *e = &self->tab.pool[op];
        return (e->flags & AGG_E_CLOSED) && agg_cs_head(&self->cs, e->cpt)->nchild > 0;
    }
    return q->ci != AGG_NONE && agg_cs_head(&self->cs, q->ci)->nchild > 0;
}

/* The operation head s_head_find did not find in the table: the compact
   one's revived, else a new one (AGG_NONE: no room). */
static uint32_t s_head_make(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *r,
                            const agg_headq_t *q)
{
    if (!agg_tab_room(&self->tab))
        return AGG_NONE;
    if (q->ci != AGG_NONE)
        return s_revive(self, &q->hk, q->h, q->ci);
    uint32_t op;
    uint32_t line = INTERN_EMPTY, station = INTERN_EMPTY;
    /* The line and station of the first record were mapped in pass 1. */
    if (r->str[FP_STR_LINE] && r->str[FP_STR_LINE] <= b->nstrings)
        line = self->map[r->str[FP_STR_LINE]];
    if (r->str[FP_STR_STATION] && r->str[FP_STR_STATION] <= b->nstrings)
        station = self->map[r->str[FP_STR_STATION]];
    op = agg_entry_create(self, &q->hk, q->h, AGG_NONE, line, station);
    agg_mark(self, op);
    return op;
}

/* Pass 3 for one record. */
static void s_apply(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *r,
                    const agg_pre_t *p)
{
    if (p->kind == 0) {
        s_refuse(self, b, r, p->refuse);
        return;
    }
    /* cm: the completion of the record's period (every kind but
       MaterialConsumed sums or counts there); ch: its consumption or scrap
       key. A MaterialConsumed record touches its consumption key only. */
    uint32_t cm = p->kind != FP_KIND_MATERIAL ? agg_tab_find_hint(&self->tab, &p->cm, p->hcm, p->ccm) : AGG_NONE;
    uint32_t ch = p->has_child ? agg_tab_find_hint(&self->tab, &p->child, p->hchild, p->cchild) : AGG_NONE;
    int64_t q = r->quantity, tmp;

    /* Refuse before touching anything: overflow of either sum, then keys.
       A key not there yet has sum 0: 0 + q cannot overflow. */
    bool overflow = false;
    switch (p->kind) {
    case FP_KIND_PART_COUNT:
        overflow = cm && __builtin_add_overflow(self->tab.pool[cm].sum0, q, &tmp);
        break;
    case FP_KIND_SCRAP:
        overflow = (cm && __builtin_add_overflow(self->tab.pool[cm].sum1, q, &tmp)) ||
                   (ch && __builtin_add_overflow(self->tab.pool[ch].sum0, q, &tmp));
        break;
    case FP_KIND_MATERIAL:
        overflow = ch && __builtin_add_overflow(self->tab.pool[ch].sum0, q, &tmp);
        break;
    default:
        break;
    }
    if (overflow) {
        s_refuse(self, b, r, "overflow");
        return;
    }
    if (p->kind == FP_KIND_OP_COMPLETED && !agg_cs_room(&self->cs)) {
        s_refuse(self, b, r, "no_memory"); /* no compact head for its closing */
        return;
    }
    uint64_t need = (p->kind != FP_KIND_MATERIAL && cm == AGG_NONE) + (p->has_child && ch == AGG_NONE);
    if (need > 0) {
        /* Keys at rest in the compact store are held: one a record needs
           comes back (s_take), it is no new key. */
        uint32_t rcm = AGG_NONE, rch = AGG_NONE;
        uint64_t khcm[3], khch[3];
        agg_headq_t hq;
        uint32_t op = s_head_find(self, p, cm, ch, &hq);
        bool hashed = s_may_rest(self, op, &hq); /* khcm, khch: the keys' event_id hashes */
        if (hashed) {
            if (p->kind != FP_KIND_MATERIAL && cm == AGG_NONE)
                rcm = s_cpt_find_key(self, &p->cm, khcm);
            if (p->has_child && ch == AGG_NONE)
                rch = s_cpt_find_key(self, &p->child, khch);
        }
        uint64_t fresh = need - (rcm != AGG_NONE) - (rch != AGG_NONE);
        /* Operation heads do not count against max_open_keys (agg.h). */
        if (s_keys_held(self) + fresh > self->cfg.max_open_keys) {
            s_refuse(self, b, r, "too_many_keys");
            return;
        }
        if (op == AGG_NONE)
            op = s_head_make(self, b, r, &hq);
        if (op == AGG_NONE) {
            s_refuse(self, b, r, "no_memory");
            return;
        }
        if (p->kind != FP_KIND_MATERIAL && cm == AGG_NONE) {
            if (!agg_tab_room(&self->tab)) {
                /* the head (if just created) stays, empty and open */
                s_refuse(self, b, r, "no_memory");
                return;
            }
            cm = s_entry_create(self, &p->cm, p->hcm, op, INTERN_EMPTY, INTERN_EMPTY,
                                hashed ? khcm : NULL);
            if (rcm != AGG_NONE)
                s_take(self, cm, rcm);
            agg_mark(self, cm);
        }
        if (p->has_child && ch == AGG_NONE) {
            if (!agg_tab_room(&self->tab)) {
                s_refuse(self, b, r, "no_memory");
                return;
            }
            ch = s_entry_create(self, &p->child, p->hchild, op, INTERN_EMPTY, INTERN_EMPTY,
                                hashed ? khch : NULL);
            if (rch != AGG_NONE)
                s_take(self, ch, rch);
            agg_mark(self, ch);
        }
    }
    self->stats.records++;
    switch (p->kind) {
    case FP_KIND_PART_COUNT:
        self->tab.pool[cm].sum0 += q;
        agg_pend_add(&self->pend.quantity[FP_CK_COMPLETION - 1], q);
        s_account(self, cm, b, r);
        break;
    case FP_KIND_SCRAP:
        self->tab.pool[cm].sum1 += q;
        self->tab.pool[ch].sum0 += q;
        agg_pend_add(&self->pend.quantity[FP_CK_SCRAP - 1], q);
        s_account(self, cm, b, r);
        s_account(self, ch, b, r);
        break;
    case FP_KIND_MATERIAL:
        self->tab.pool[ch].sum0 += q;
        agg_pend_add(&self->pend.quantity[FP_CK_CONSUMPTION - 1], q);
        s_account(self, ch, b, r);
        break;
    case FP_KIND_OP_STARTED:
        s_account(self, cm, b, r);
        break;
    case FP_KIND_OP_COMPLETED:
        s_account(self, cm, b, r);
        s_complete(self, self->tab.pool[cm].op, cm);
        break;
    default:
        assert(!"kind checked in pass 1");
    }
}

/* Pass 0 (once per batch): the string indices the records use, in
   self->used. Two sweeps with no search and no validation: stamp every
   index of every record (mark covers any uint16_t, so even an index beyond
   the table is harmless: pass 1 refuses its record, and the sweep over
   1..nstrings never sees it), then collect the stamped ones. */
static void s_collect_strings(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *recs)
{
    _Static_assert(FP_BATCH_STRINGS_MAX == UINT16_MAX, "mark covers every index");
    if (++self->mgen == 0) { /* wrapped: forget every stamp */
        memset(self->mark, 0, FP_BATCH_STRINGS_MAX + 1);
        self->mgen = 1;
    }
    uint8_t *mark = self->mark, g = self->mgen;
    for (uint32_t i = 0; i < b->nrecords; i++) {
        const uint16_t *st = recs[i].str;
        mark[st[0]] = g, mark[st[1]] = g, mark[st[2]] = g;
        mark[st[3]] = g, mark[st[4]] = g, mark[st[5]] = g;
        mark[st[6]] = g, mark[st[7]] = g, mark[st[8]] = g;
    }
    uint32_t n = 0;
    for (uint32_t idx = 1; idx <= b->nstrings; idx++)
        if (mark[idx] == g)
            self->used[n++] = idx;
    self->nused = n;
}

/* Pass 0b: map the used strings to symbols, AGG_CHUNK at a time through
   intern_find_many (which pipelines hashing, prefetching and lookups). A
   string already interned is held by a key, and agg_add releases no key,
   so it needs no reference of the batch's own; a new one is acquired (the
   batch's reference, in touched). INTERN_NOMEM in map: pass 1 refuses the
   records that need it. */
static void s_map_strings(agg_t *self, fp_batch_hdr_t *b)
{
    const uint32_t *off = fp_batch_stroff(b);
    const char *blob = fp_batch_strblob(b);
    self->map[0] = INTERN_EMPTY;
    for (uint32_t base = 0; base < self->nused; base += AGG_CHUNK) {
        uint32_t m = self->nused - base < AGG_CHUNK ? self->nused - base : AGG_CHUNK;
        const uint32_t *used = self->used + base;
        for (uint32_t i = 0; i < m; i++) {
            uint32_t idx = used[i];
            self->sptr[i] = blob + off[idx - 1];
            self->slen[i] = off[idx] - off[idx - 1] - 1;
        }
        intern_find_many(self->intern, m, self->sptr, self->slen, self->shash, self->ssym);
        for (uint32_t i = 0; i < m; i++) {
            uint32_t sym = self->ssym[i];
            if (sym == INTERN_ABSENT) {
                sym = intern_acquire_hashed(self->intern, self->sptr[i], self->slen[i],
                                            self->shash[i]);
                if (sym != INTERN_NOMEM)
                    self->touched[self->ntouched++] = sym;
            }
            self->map[used[i]] = sym;
        }
    }
}

/* Pass 1 for one record: validate what we rely on, build keys, hash them
   and prefetch their slots. */
static void s_prepare(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *r, agg_pre_t *p)
{
    p->kind = 0;
    p->has_child = false;
    p->refuse = "invalid_record";
    /* The worker's fp_record_check passed every record we are given (it is
       the one record check); this guards only what pass 1 indexes with. */
    /* fp_record_in_range with the kinds aggregation sums (counter readings
       are the worker's: never aggregated as they are) */
    if ((unsigned)r->kind - 1u >= FP_KIND_AGG_MAX || !fp_record_strs_ok(r, b->nstrings))
        return;
    bool closed;
    uint32_t pid = s_pid(self, r->time_ns, &closed);
    if (__builtin_expect(closed, 0) && self->cfg.closed_mode == AGG_CLOSED_REFUSE) {
        p->refuse = "period_closed";
        return;
    }
    const uint32_t *map = self->map;
    uint32_t plant = map[r->str[FP_STR_PLANT]], order = map[r->str[FP_STR_ORDER]],
             operation = map[r->str[FP_STR_OPERATION]];
    /* Any symbol INTERN_NOMEM (bit 31; ids are < INTERN_ID_LIMIT): refuse.
       line and station count: used when the record creates its operation. */
    _Static_assert(INTERN_NOMEM == UINT32_MAX && INTERN_ID_LIMIT <= (1u << 31), "bit 31");
    uint32_t any = plant | order | operation | map[r->str[FP_STR_LINE]] |
                   map[r->str[FP_STR_STATION]];
    /* The keys are built and hashed in locals (registers), then stored:
       hashing what was just stored would read across stores. */
    agg_key_t cmk = {.kind = FP_CK_COMPLETION, .sym = {plant, order, operation, 0, 0, 0},
                   .period = pid};
    agg_key_t chk = cmk;
    bool child = false;
    if (r->kind == FP_KIND_MATERIAL) {
        chk.kind = FP_CK_CONSUMPTION;
        chk.sym[AGG_F_MATERIAL] = map[r->str[FP_STR_MATERIAL]];
        chk.sym[AGG_F_LOT] = map[r->str[FP_STR_LOT]];
        chk.sym[AGG_F_UNIT] = map[r->str[FP_STR_UNIT]];
        child = true;
    } else if (r->kind == FP_KIND_SCRAP) {
        chk.kind = FP_CK_SCRAP;
        chk.sym[AGG_F_REASON] = map[r->str[FP_STR_REASON]];
        child = true;
    }
    any |= chk.sym[AGG_F_MATERIAL] | chk.sym[AGG_F_LOT] | chk.sym[AGG_F_UNIT]; /* 0 without a child */
    if (any >> 31) {
        p->refuse = "no_memory";
        return;
    }
    if (r->kind != FP_KIND_MATERIAL) { /* see s_apply: it has no completion */
        p->cm = cmk;
        p->hcm = agg_key_hash(&cmk);
        agg_tab_prefetch_slot(&self->tab, p->hcm);
    }
    if (child) {
        p->child = chk;
        p->hchild = agg_key_hash(&chk);
        agg_tab_prefetch_slot(&self->tab, p->hchild);
    }
    p->has_child = child;
    p->kind = r->kind;
}

/* Sizes the string scratch arrays for n batch strings; -1 on out of memory. */
static int s_scratch(agg_t *self, uint32_t n)
{
    if (n + 1 <= self->map_cap)
        return 0;
    uint32_t ncap = n + 1;
    uint32_t *m = realloc(self->map, ncap * sizeof *m);
    if (m)
        self->map = m;
    uint32_t *u = realloc(self->used, ncap * sizeof *u);
    if (u)
        self->used = u;
    uint32_t *t = realloc(self->touched, ncap * sizeof *t);
    if (t)
        self->touched = t;
    if (!m || !u || !t)
        return -1;
    self->map_cap = ncap;
    return 0;
}

void agg_add(agg_t *self, const fp_batch_hdr_t *batch)
{
    assert(self && batch);
    /* The fp_batch_* accessors take a mutable pointer; nothing here writes. */
    fp_batch_hdr_t *b = (fp_batch_hdr_t *)batch;
    const fp_record_t *recs = fp_batch_records(b);
    uint32_t n = b->nrecords;
    if (b->nstrings > FP_BATCH_STRINGS_MAX || s_scratch(self, b->nstrings) != 0) {
        for (uint32_t i = 0; i < n; i++)
            s_refuse(self, b, &recs[i],
                     b->nstrings > FP_BATCH_STRINGS_MAX ? "invalid_record" : "no_memory");
        return;
    }
    self->ntouched = 0;
    s_collect_strings(self, b, recs);
    s_map_strings(self, b);

    for (uint32_t base = 0; base < n; base += AGG_CHUNK) {
        uint32_t m = n - base < AGG_CHUNK ? n - base : AGG_CHUNK;
        /* A record creates at most 3 keys (head, completion, child). On
           failure, s_room refuses the records that do not fit ("no_memory"). */
        (void)agg_tab_reserve(&self->tab, 3ull * m);
        /* a compact head per operation closing; on failure s_apply refuses
           OperationCompleted records that find no room ("no_memory") */
        (void)agg_cs_reserve(&self->cs, m);
        for (uint32_t i = 0; i < m; i++)
            s_prepare(self, b, &recs[base + i], &self->pre[i]);
        for (uint32_t i = 0; i < m; i++) {
            agg_pre_t *p = &self->pre[i];
            if (!p->kind)
                continue;
            p->ccm = p->kind != FP_KIND_MATERIAL ? agg_tab_prefetch(&self->tab, p->hcm) : AGG_NONE;
            if (p->has_child)
                p->cchild = agg_tab_prefetch(&self->tab, p->hchild);
        }
        for (uint32_t i = 0; i < m; i++)
            s_apply(self, b, &recs[base + i], &self->pre[i]);
    }

    for (uint32_t i = 0; i < self->ntouched; i++)
        intern_release(self->intern, self->touched[i]);
    self->stats.strings = intern_count(self->intern);
}

/* ---- the closed-operations FIFO ---- */

/* Sorts the closed-operations FIFO (compact heads) by close_seq (agg_import appends in file
   order): a merge sort of the linked list, no memory, O(n log n) once. */
static uint32_t s_fifo_msort(agg_t *self, uint32_t head, uint64_t n)
{
    if (n <= 1) {
        if (head != AGG_NONE)
            self->cs.pool[head].next = AGG_NONE;
        return head;
    }
    uint32_t mid = head;
    for (uint64_t i = 0; i < n / 2; i++)
        mid = self->cs.pool[mid].next;
    uint32_t a = s_fifo_msort(self, head, n / 2); /* cuts the first half */
    uint32_t b = s_fifo_msort(self, mid, n - n / 2);
    uint32_t out = AGG_NONE, tail = AGG_NONE;
    while (a != AGG_NONE || b != AGG_NONE) {
        uint32_t x;
        if (b == AGG_NONE || (a != AGG_NONE && agg_cs_head(&self->cs, a)->close_seq <= agg_cs_head(&self->cs, b)->close_seq)) {
            x = a;
            a = self->cs.pool[a].next;
        } else {
            x = b;
            b = self->cs.pool[b].next;
        }
        if (tail != AGG_NONE)
            self->cs.pool[tail].next = x;
        else
            out = x;
        tail = x;
    }
    if (tail != AGG_NONE)
        self->cs.pool[tail].next = AGG_NONE;
    return out;
}

void agg_fifo_sort(agg_t *self)
{
    uint64_t n = 0;
    for (uint32_t i = self->fifo_head; i != AGG_NONE; i = self->cs.pool[i].next)
        n++;
    self->fifo_head = s_fifo_msort(self, self->fifo_head, n);
    self->fifo_tail = AGG_NONE;
    for (uint32_t i = self->fifo_head; i != AGG_NONE; i = self->cs.pool[i].next)
        self->fifo_tail = i;
    self->fifo_unsorted = false;
}


/* ---- flush and release ---- */

/* Whether a pending entry is emitted by a partial flush now. */
static bool s_due(const agg_t *self, const agg_entry_t *e)
{
    if (e->key.kind != FP_CK_COMPLETION)
        return true;
    if (e->sum0 != 0 || e->sum1 != 0 || (e->flags & AGG_E_LATE) ||
        (self->tab.pool[e->op].flags & AGG_E_CLOSED))
        return true;
    /* A 0/0 partial completion waits for the operation's next completion
       (agg.h), whatever period that one is in: it goes when a completion of
       another period is due in this flush, or went in it already. */
    for (uint32_t c = self->tab.pool[e->op].first_child; c != AGG_NONE; c = self->tab.pool[c].child_next) {
        const agg_entry_t *o = &self->tab.pool[c];
        if (o == e || o->key.kind != FP_CK_COMPLETION)
            continue;
        if ((o->count > 0 && (o->sum0 != 0 || o->sum1 != 0)) || o->last_flush == self->flush_gen)
            return true;
    }
    return false;
}

static void s_flush_list(agg_t *self, int list)
{
    uint32_t idx = self->head[list];
    while (idx != AGG_NONE) {
        uint32_t next = self->tab.pool[idx].list_next; /* s_emit unlinks idx */
        if (s_due(self, &self->tab.pool[idx]))
            s_emit(self, idx, false);
        idx = next;
    }
}

/* Whether a closed operation and its children have nothing pending. */
static bool s_idle(const agg_t *self, uint32_t op)
{
    if (self->tab.pool[op].count > 0)
        return false;
    for (uint32_t c = self->tab.pool[op].first_child; c != AGG_NONE; c = self->tab.pool[c].child_next)
        if (self->tab.pool[c].count > 0)
            return false;
    return true;
}

/* Frees full head op and its children (nothing pending); returns how many
   entries that was. */
static uint64_t s_free_op(agg_t *self, uint32_t op)
{
    uint64_t n = 1;
    uint32_t c = self->tab.pool[op].first_child;
    while (c != AGG_NONE) {
        uint32_t next = self->tab.pool[c].child_next;
        s_free(self, c);
        c = next;
        n++;
    }
    s_free(self, op);
    return n;
}

/* Releases closed operations whose grace has passed, oldest first, until
   about `budget` keys are freed. Returns what is left of the budget: 0
   when it ran out, so that more may be due. */
static uint64_t s_release(agg_t *self, uint64_t budget)
{
    while (self->fifo_head != AGG_NONE && budget > 0) {
        uint32_t ci = self->fifo_head;
        agg_cpt_t *c = &self->cs.pool[ci];
        agg_cpt_head_t *hp = agg_cs_head(&self->cs, ci);
        /* closed_at only grows along the FIFO (with a monotonic clock): stop
           at the first too young. One with pending corrections (possible
           only if a flush skipped them) waits at the head for the next
           flush. closed_at may come from a restored file: no overflow.
           Compact keys have nothing pending. */
        int64_t age;
        if (__builtin_sub_overflow(self->now, hp->closed_at, &age))
            age = self->now > hp->closed_at ? INT64_MAX : INT64_MIN;
        if (age < self->cfg.closed_key_grace_ns || (c->op != AGG_NONE && !s_idle(self, c->op)))
            break;
        /* The deletions to export; out of memory: try at the next flush. */
        if (self->track && agg_release_keys(self, ci) != 0)
            break;
        c = &self->cs.pool[ci];
        hp = agg_cs_head(&self->cs, ci);
        self->fifo_head = c->next;
        if (self->fifo_head == AGG_NONE)
            self->fifo_tail = AGG_NONE;
        uint64_t freed = 1 + hp->nchild;
        if (c->op != AGG_NONE)
            freed += s_free_op(self, c->op);
        while (hp->first_child != AGG_NONE)
            s_cpt_drop(self, hp->first_child);
        intern_release(self->intern, hp->line);
        intern_release(self->intern, hp->station);
        free(c->kb);
        agg_cs_remove(&self->cs, ci);
        s_keys_update(self);
        self->stats.closed_operations--;
        self->stats.released++;
        budget = freed < budget ? budget - freed : 0;
    }
    return budget;
}

/* ---- compaction ---- */

/* Whether closed full head op can go to the compact store now: nothing
   pending, nothing changed since the last export (its state is stored
   as it is; marked, it waits for the next flush). One walk of its
   children (s_idle's and more). */
static bool s_at_rest(const agg_t *self, uint32_t op)
{
    const agg_entry_t *pool = self->tab.pool;
    if (pool[op].count > 0 || (pool[op].flags & AGG_E_EXPORT))
        return false;
    for (uint32_t c = pool[op].first_child; c != AGG_NONE; c = pool[c].child_next)
        if (pool[c].count > 0 || (pool[c].flags & AGG_E_EXPORT))
            return false;
    return true;
}

/* Moves full child idx of closed operation ci to the compact store and
   frees it (the caller unlinks it from its full head); -1 out of memory
   (nothing changed). */
static int s_compact_child(agg_t *self, uint32_t ci, uint32_t idx)
{
    const agg_entry_t *e = &self->tab.pool[idx];
    uint8_t *kb = NULL;
    uint16_t klen = 0;
    if (agg_cs_reserve(&self->cs, 1) != 0)
        return -1;
    if (!self->cfg.no_export && agg_key_keep(self, &e->key, &kb, &klen) != 0)
        return -1;
    uint32_t k = agg_cs_insert(&self->cs, e->khash_lo, e->khash_hi, (uint8_t)e->key.kind);
    agg_cpt_t *c = &self->cs.pool[k];
    agg_cpt_head_t *head = agg_cs_head(&self->cs, ci);
    c->checkpoint_no = e->checkpoint_no;
    c->kb = kb;
    c->klen = klen;
    c->op = ci;
    c->prev = AGG_NONE;
    c->next = head->first_child;
    if (head->first_child != AGG_NONE)
        self->cs.pool[head->first_child].prev = k;
    head->first_child = k;
    head->nchild++;
    self->ckeys++;
    s_free(self, idx);
    return 0;
}

/* Moves closed, idle full head op and its children to the compact store
   (its compact head, which it has since it closed) and frees their
   entries and strings. Returns the keys moved (the head too), or -1 out
   of memory: what moved stays moved, the rest stays on the CAND list (a
   key is in one store or the other). */
static int64_t s_compact(agg_t *self, uint32_t op)
{
    uint32_t ci = self->tab.pool[op].cpt;
    int64_t n = 1;
    for (;;) {
        uint32_t c = self->tab.pool[op].first_child;
        if (c == AGG_NONE)
            break;
        uint32_t next = self->tab.pool[c].child_next;
        if (s_compact_child(self, ci, c) != 0)
            return -1;
        self->tab.pool[op].first_child = next;
        n++;
    }
    agg_cpt_t *h = &self->cs.pool[ci];
    if (!self->cfg.no_export && !h->kb &&
        agg_key_keep(self, &self->tab.pool[op].key, &h->kb, &h->klen) != 0)
        return -1;
    h->op = AGG_NONE;
    s_free(self, op); /* off the CAND list */
    return n;
}

/* Compacts the closed full heads at rest that joined the CAND list before
   the latest agg_flush began (so each had that flush's emission first, and
   with a store the export after it), oldest first, until about `budget`
   keys have moved. A head not at rest, or one that ran out of memory, goes
   back to the list's new end, to be looked at again after the next flush.
   Returns what is left of the budget: 0 when it ran out first. */
static uint64_t s_compact_some(agg_t *self, uint64_t budget)
{
    uint32_t op = self->cand_tail;
    while (op != AGG_NONE && budget > 0 && self->tab.pool[op].cand_gen != self->flush_gen) {
        uint32_t prev = self->tab.pool[op].cand_prev;
        if (prev != AGG_NONE)
            __builtin_prefetch(&self->tab.pool[prev]);
        int64_t n = s_at_rest(self, op) ? s_compact(self, op) : -1;
        if (n < 0) {
            s_cand_remove(self, op);
            s_cand_add(self, op);
            n = 1;
        }
        budget = (uint64_t)n < budget ? budget - (uint64_t)n : 0;
        op = prev;
    }
    return budget;
}

bool agg_work(agg_t *self, uint64_t budget)
{
    assert(self);
    if (!self->work_left || budget == 0)
        return self->work_left;
    self->work_left = s_compact_some(self, budget) == 0;
    self->work_left |= s_release(self, budget) == 0;
    self->stats.strings = intern_count(self->intern);
    return self->work_left;
}

void agg_flush(agg_t *self, int mode, int64_t now_ns)
{
    assert(self);
    self->now = now_ns;
    self->flush_gen++;
    s_flush_list(self, AGG_LIST_LATE);
    if (mode == AGG_FLUSH_ALL)
        s_flush_list(self, AGG_LIST_DIRTY);
    if (mode == AGG_FLUSH_ALL && self->periods && self->wm != INT64_MIN) {
        /* This posting flush has emitted everything of the periods before
           the watermark's: they are flushed now, and what comes for them
           later is backfill (agg.h "Periods"). */
        int64_t start = agg_period_at(self, self->wm)->start;
        if (start > self->flushed_through) {
            self->flushed_through = start;
            self->meta_dirty = self->track;
        }
    }
    if (self->fifo_unsorted)
        agg_fifo_sort(self);
    /* Bounded: what does not fit is done in slices by agg_work, so a flush
       never holds the shard up for long. */
    self->work_left = s_compact_some(self, AGG_FLUSH_WORK) == 0;
    self->work_left |= s_release(self, AGG_FLUSH_WORK) == 0;
    self->stats.strings = intern_count(self->intern);
}
