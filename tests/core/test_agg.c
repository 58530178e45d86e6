/*  test_agg.c - aggregation semantics (agg.h): arithmetic per kind,
    OperationCompleted, partial and late flushes, refusals, release, event ids,
    lineage, a randomized model check of the delta invariant, and persistence:
    export, import, and exactness across a restart; crashgen's ground truth
    (tests/tools/truth.h) against a plant stream. */
#include "agg.h"

#include <stdbool.h>
#include <time.h>
#include <xxhash.h>

#include "plantgen.h"
#include "route.h"
#include "test.h"
#include "tools/truth.h"
#include "varint.h"

/* ---- batch builder: lays out fp_batch_hdr_t as record.h describes ---- */

typedef struct {
    uint64_t source, epoch, seq; /* seq: the next record's */
    fp_record_t *recs;
    uint32_t n, cap;
    char *blob;
    uint32_t blen, bcap;
    uint32_t *start; /* start[i] = offset of string i+1 in blob */
    uint32_t nstr, scap;
    uint32_t *ht; /* dedup: string index (1-based), 0 empty */
    uint32_t htmask;
    const char *line, *station, *plant;
} bb_t;

static void bb_init(bb_t *bb, uint64_t source, uint64_t epoch)
{
    memset(bb, 0, sizeof *bb);
    bb->source = source;
    bb->epoch = epoch;
    bb->seq = 1;
    bb->htmask = (1u << 17) - 1;
    bb->ht = calloc(bb->htmask + 1, sizeof *bb->ht);
    bb->line = "L1";
    bb->station = "S1";
    bb->plant = "P1";
    ASSERT(bb->ht);
}

static void bb_free(bb_t *bb)
{
    free(bb->recs);
    free(bb->blob);
    free(bb->start);
    free(bb->ht);
}

/* Starts the next batch (same source; seq goes on). */
static void bb_clear(bb_t *bb)
{
    bb->n = bb->nstr = bb->blen = 0;
    memset(bb->ht, 0, (bb->htmask + 1) * sizeof *bb->ht);
}

static uint16_t bb_str(bb_t *bb, const char *s)
{
    if (!s)
        return 0;
    uint32_t len = (uint32_t)strlen(s);
    uint32_t i = (uint32_t)XXH3_64bits(s, len) & bb->htmask;
    while (bb->ht[i]) {
        const char *t = bb->blob + bb->start[bb->ht[i] - 1];
        if (strcmp(t, s) == 0)
            return (uint16_t)bb->ht[i];
        i = (i + 1) & bb->htmask;
    }
    ASSERT(bb->nstr < FP_BATCH_STRINGS_MAX);
    if (bb->nstr == bb->scap) {
        bb->scap = bb->scap ? bb->scap * 2 : 64;
        bb->start = realloc(bb->start, bb->scap * sizeof *bb->start);
    }
    while (bb->blen + len + 1 > bb->bcap) {
        bb->bcap = bb->bcap ? bb->bcap * 2 : 1024;
        bb->blob = realloc(bb->blob, bb->bcap);
    }
    bb->start[bb->nstr++] = bb->blen;
    memcpy(bb->blob + bb->blen, s, len + 1);
    bb->blen += len + 1;
    bb->ht[i] = bb->nstr;
    return (uint16_t)bb->nstr;
}

/* Appends a record. a, b, c: material, lot, unit for FP_KIND_MATERIAL;
   a = reason for FP_KIND_SCRAP. */
static fp_record_t *bb_rec(bb_t *bb, int kind, int64_t q, const char *order, const char *op,
                           const char *a, const char *b, const char *c)
{
    if (bb->n == bb->cap) {
        bb->cap = bb->cap ? bb->cap * 2 : 64;
        bb->recs = realloc(bb->recs, bb->cap * sizeof *bb->recs);
    }
    fp_record_t *r = &bb->recs[bb->n++];
    memset(r, 0, sizeof *r);
    r->seq = bb->seq++;
    r->time_ns = 1700000000000000000ll + (int64_t)r->seq * 1000;
    r->quantity = q;
    r->kind = (uint8_t)kind;
    r->str[FP_STR_PLANT] = bb_str(bb, bb->plant);
    r->str[FP_STR_LINE] = bb_str(bb, bb->line);
    r->str[FP_STR_STATION] = bb_str(bb, bb->station);
    r->str[FP_STR_ORDER] = bb_str(bb, order);
    r->str[FP_STR_OPERATION] = bb_str(bb, op);
    if (kind == FP_KIND_MATERIAL) {
        r->str[FP_STR_MATERIAL] = bb_str(bb, a);
        r->str[FP_STR_LOT] = bb_str(bb, b);
        r->str[FP_STR_UNIT] = bb_str(bb, c);
    } else if (kind == FP_KIND_SCRAP) {
        r->str[FP_STR_REASON] = bb_str(bb, a);
    }
    return r;
}

/* The batch message; caller frees. */
static fp_batch_hdr_t *bb_build(const bb_t *bb)
{
    size_t size = fp_batch_size(bb->n, bb->nstr, bb->blen);
    fp_batch_hdr_t *h = aligned_alloc(8, (size + 7) & ~(size_t)7);
    ASSERT(h);
    *h = (fp_batch_hdr_t){.type = FP_MSG_BATCH, .nrecords = bb->n, .nstrings = bb->nstr,
                          .strbytes = bb->blen, .source_id = bb->source, .epoch = bb->epoch};
    if (bb->n)
        memcpy(fp_batch_records(h), bb->recs, bb->n * sizeof *bb->recs);
    uint32_t *off = fp_batch_stroff(h);
    for (uint32_t i = 0; i < bb->nstr; i++)
        off[i] = bb->start[i];
    off[bb->nstr] = bb->blen;
    if (bb->blen)
        memcpy(fp_batch_strblob(h), bb->blob, bb->blen);
    return h;
}

/* ---- capture of emitted checkpoints and refusals ---- */

typedef struct {
    int kind;
    char event_id[80];
    uint64_t checkpoint_no, record_count;
    char plant[16], line[16], order[32], operation[32], material[32], lot[32], unit[16],
        reason[32];
    int64_t first_ns, last_ns;
    fp_seq_range_t lineage[FP_LINEAGE_MAX];
    uint32_t nlineage;
    bool truncated, late, final;
    int64_t yield, scrap, quantity, parts;
    char posting_date[11], period[16], original_posting_date[11];
    int64_t period_start, period_end, original_period_start;
    bool backfill;
} cap_t;

typedef struct {
    cap_t *ev;
    size_t n, cap;
    bool count_only; /* count events and sum yields, keep nothing */
    int64_t yield_sum;
    uint64_t record_sum; /* record_count over every event */
    int rejects;
    char last_reason[32];
    uint64_t last_reject_seq;
    uint64_t seen_late, seen_truncated; /* compared by s_same_events */
} sink_t;

static void s_copy(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "");
}

static void s_on_emit(void *ctx, const fp_checkpoint_t *ck)
{
    sink_t *k = ctx;
    k->record_sum += ck->record_count;
    if (k->count_only) {
        k->n++;
        k->yield_sum += ck->yield;
        return;
    }
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->ev = realloc(k->ev, k->cap * sizeof *k->ev);
        ASSERT(k->ev);
    }
    cap_t *c = &k->ev[k->n++];
    memset(c, 0, sizeof *c);
    c->kind = ck->kind;
    ASSERT(strlen(ck->event_id) < sizeof c->event_id);
    s_copy(c->event_id, sizeof c->event_id, ck->event_id);
    ASSERT_EQ(ck->stream_seq, 0);
    c->checkpoint_no = ck->checkpoint_no;
    c->record_count = ck->record_count;
    s_copy(c->plant, sizeof c->plant, ck->plant);
    s_copy(c->line, sizeof c->line, ck->line);
    s_copy(c->order, sizeof c->order, ck->order);
    s_copy(c->operation, sizeof c->operation, ck->operation);
    s_copy(c->material, sizeof c->material, ck->material);
    s_copy(c->lot, sizeof c->lot, ck->lot);
    s_copy(c->unit, sizeof c->unit, ck->unit);
    s_copy(c->reason, sizeof c->reason, ck->reason);
    c->first_ns = ck->first_time_ns;
    c->last_ns = ck->last_time_ns;
    ASSERT(ck->nlineage >= 1 && ck->nlineage <= FP_LINEAGE_MAX);
    memcpy(c->lineage, ck->lineage, sizeof c->lineage);
    c->nlineage = ck->nlineage;
    c->truncated = ck->lineage_truncated;
    c->late = ck->late;
    c->final = ck->final;
    c->yield = ck->yield;
    c->scrap = ck->scrap;
    c->quantity = ck->quantity;
    c->parts = ck->parts;
    s_copy(c->posting_date, sizeof c->posting_date, ck->posting_date);
    s_copy(c->period, sizeof c->period, ck->period);
    s_copy(c->original_posting_date, sizeof c->original_posting_date, ck->original_posting_date);
    c->period_start = ck->period_start_ns;
    c->period_end = ck->period_end_ns;
    c->original_period_start = ck->original_period_start_ns;
    c->backfill = ck->backfill;
}

static void s_on_reject(void *ctx, const fp_batch_hdr_t *b, const fp_record_t *r,
                        const char *reason)
{
    sink_t *k = ctx;
    k->rejects++;
    s_copy(k->last_reason, sizeof k->last_reason, reason);
    k->last_reject_seq = r->seq;
}

static agg_t *s_new(sink_t *k, uint64_t max_keys, int64_t grace)
{
    memset(k, 0, sizeof *k);
    agg_config_t cfg = {.instance = "fp1", .closed_key_grace_ns = grace,
                        .max_open_keys = max_keys};
    agg_t *a = agg_new(&cfg, s_on_emit, s_on_reject, k);
    ASSERT(a);
    return a;
}

static void s_add(agg_t *a, bb_t *bb)
{
    fp_batch_hdr_t *h = bb_build(bb);
    agg_add(a, h);
    free(h);
    bb_clear(bb);
}

/* Events from index `from` of kind `kind` (and operation, if not NULL). */
static int s_count(const sink_t *k, size_t from, int kind, const char *op)
{
    int n = 0;
    for (size_t i = from; i < k->n; i++)
        if (k->ev[i].kind == kind && (!op || strcmp(k->ev[i].operation, op) == 0))
            n++;
    return n;
}

static const cap_t *s_find(const sink_t *k, size_t from, int kind, const char *op,
                           const char *sub)
{
    for (size_t i = from; i < k->n; i++) {
        const cap_t *c = &k->ev[i];
        if (c->kind != kind || strcmp(c->operation, op) != 0)
            continue;
        if (sub && strcmp(kind == FP_CK_SCRAP ? c->reason : c->material, sub) != 0)
            continue;
        return c;
    }
    return NULL;
}

/* ---- tests ---- */

TEST(test_arithmetic)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 0);
    bb_t bb;
    bb_init(&bb, 7, 3);
    bb_rec(&bb, FP_KIND_OP_STARTED, 0, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 5, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 7, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 2, "O1", "10", "DENT", NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 1, "O1", "10", "DENT", NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 4, "O1", "10", "CRACK", NULL, NULL);
    bb_rec(&bb, FP_KIND_MATERIAL, 1500, "O1", "10", "STEEL", "LOT1", "KG");
    bb_rec(&bb, FP_KIND_MATERIAL, 250, "O1", "10", "STEEL", "LOT1", "KG");
    bb_rec(&bb, FP_KIND_MATERIAL, 99, "O1", "10", "STEEL", "LOT2", "KG");
    s_add(a, &bb);
    ASSERT_EQ(k.n, 0); /* nothing until a flush or a completion */
    const agg_stats_t *st = agg_stats(a);
    ASSERT_EQ(st->records, 9);
    ASSERT_EQ(st->keys, 5); /* completion, 2 scrap, 2 consumption */
    ASSERT_EQ(st->open_operations, 1);
    /* P1 L1 S1 O1 10 DENT CRACK STEEL LOT1 KG LOT2 */
    ASSERT_EQ(st->strings, 11);

    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 5);
    const cap_t *c = s_find(&k, 0, FP_CK_COMPLETION, "10", NULL);
    ASSERT(c);
    ASSERT_EQ(c->yield, 12);
    ASSERT_EQ(c->scrap, 7);
    ASSERT_EQ(c->record_count, 6); /* started, 2 counts, 3 scrap */
    ASSERT(!c->final && !c->late);
    ASSERT_EQ(c->checkpoint_no, 1);
    ASSERT_STREQ(c->plant, "P1");
    ASSERT_STREQ(c->line, "L1");
    ASSERT_STREQ(c->order, "O1");
    ASSERT_EQ(c->first_ns, 1700000000000000000ll + 1000);
    ASSERT_EQ(c->last_ns, 1700000000000000000ll + 6000);
    ASSERT_EQ(c->nlineage, 1);
    ASSERT_EQ(c->lineage[0].source_id, 7);
    ASSERT_EQ(c->lineage[0].epoch, 3);
    ASSERT_EQ(c->lineage[0].first_seq, 1);
    ASSERT_EQ(c->lineage[0].last_seq, 6);
    c = s_find(&k, 0, FP_CK_SCRAP, "10", "DENT");
    ASSERT(c);
    ASSERT_EQ(c->parts, 3);
    ASSERT_EQ(c->record_count, 2);
    c = s_find(&k, 0, FP_CK_SCRAP, "10", "CRACK");
    ASSERT(c);
    ASSERT_EQ(c->parts, 4);
    ASSERT_STREQ(c->line, "L1");
    int lots = 0;
    for (size_t i = 0; i < k.n; i++) {
        if (k.ev[i].kind != FP_CK_CONSUMPTION)
            continue;
        ASSERT_STREQ(k.ev[i].material, "STEEL");
        ASSERT_STREQ(k.ev[i].unit, "KG");
        if (strcmp(k.ev[i].lot, "LOT1") == 0) {
            ASSERT_EQ(k.ev[i].quantity, 1750);
            ASSERT_EQ(k.ev[i].lineage[0].first_seq, 7);
            ASSERT_EQ(k.ev[i].lineage[0].last_seq, 8);
            lots++;
        } else {
            ASSERT_STREQ(k.ev[i].lot, "LOT2");
            ASSERT_EQ(k.ev[i].quantity, 99);
            lots += 10;
        }
    }
    ASSERT_EQ(lots, 11);
    ASSERT_EQ(st->events, 5);

    /* Deltas restart at zero: nothing pending, nothing emitted. */
    agg_flush(a, AGG_FLUSH_ALL, 2);
    ASSERT_EQ(k.n, 5);
    bb_rec(&bb, FP_KIND_PART_COUNT, 3, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 3);
    ASSERT_EQ(k.n, 6);
    ASSERT_EQ(k.ev[5].yield, 3);
    ASSERT_EQ(k.ev[5].scrap, 0);
    ASSERT_EQ(k.ev[5].record_count, 1);
    ASSERT_EQ(k.ev[5].checkpoint_no, 2);
    ASSERT(strcmp(k.ev[5].event_id, k.ev[0].event_id) != 0);
    ASSERT_EQ(k.rejects, 0);

    agg_destroy(&a);
    ASSERT(a == NULL);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* agg_pending: running totals of what is summed and not yet emitted. */
TEST(test_pending)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 0);
    bb_t bb;
    bb_init(&bb, 7, 3);
    bb_rec(&bb, FP_KIND_OP_STARTED, 0, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 5, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 7, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 2, "O1", "10", "DENT", NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 4, "O1", "10", "CRACK", NULL, NULL);
    bb_rec(&bb, FP_KIND_MATERIAL, 1500, "O1", "10", "STEEL", "LOT1", "KG");
    bb_rec(&bb, FP_KIND_MATERIAL, 99, "O1", "10", "STEEL", "LOT2", "KG");
    s_add(a, &bb);
    const agg_pending_t *p = agg_pending(a);
    ASSERT_EQ(p->quantity[FP_CK_CONSUMPTION - 1], 1599);
    ASSERT_EQ(p->quantity[FP_CK_COMPLETION - 1], 12);
    ASSERT_EQ(p->quantity[FP_CK_SCRAP - 1], 6);
    ASSERT_EQ(p->records[FP_CK_CONSUMPTION - 1], 2);
    ASSERT_EQ(p->records[FP_CK_COMPLETION - 1], 5); /* started, 2 counts, 2 scrap */
    ASSERT_EQ(p->records[FP_CK_SCRAP - 1], 2);
    agg_flush(a, AGG_FLUSH_LATE, 1); /* nothing late: unchanged */
    ASSERT_EQ(p->quantity[FP_CK_COMPLETION - 1], 12);
    agg_flush(a, AGG_FLUSH_ALL, 2);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(p->quantity[i], 0);
        ASSERT_EQ(p->records[i], 0);
    }
    /* Completed, then a late count: pending until the next flush. */
    bb_rec(&bb, FP_KIND_MATERIAL, 10, "O1", "10", "STEEL", "LOT1", "KG");
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(p->quantity[FP_CK_CONSUMPTION - 1], 0); /* flushed with the final completion */
    ASSERT_EQ(p->records[FP_CK_COMPLETION - 1], 0);
    bb_rec(&bb, FP_KIND_PART_COUNT, 3, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(p->quantity[FP_CK_COMPLETION - 1], 3);
    ASSERT_EQ(p->records[FP_CK_COMPLETION - 1], 1);
    agg_flush(a, AGG_FLUSH_LATE, 3);
    ASSERT_EQ(p->quantity[FP_CK_COMPLETION - 1], 0);
    ASSERT_EQ(p->records[FP_CK_COMPLETION - 1], 0);
    bb_free(&bb);
    agg_destroy(&a);
    free(k.ev);
}

TEST(test_completed_flushes_its_operation_only)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 1000);
    bb_t bb;
    bb_init(&bb, 1, 1);
    for (int op = 0; op < 2; op++) {
        const char *o = op ? "20" : "10";
        bb_rec(&bb, FP_KIND_PART_COUNT, 10 + op, "O1", o, NULL, NULL, NULL);
        bb_rec(&bb, FP_KIND_SCRAP, 1, "O1", o, "DENT", NULL, NULL);
        bb_rec(&bb, FP_KIND_MATERIAL, 100, "O1", o, "STEEL", "LOT1", "KG");
    }
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    /* At once, without a flush: final completion + consumption + scrap of 10. */
    ASSERT_EQ(k.n, 3);
    ASSERT_EQ(k.ev[0].kind, FP_CK_COMPLETION);
    ASSERT(k.ev[0].final && !k.ev[0].late);
    ASSERT_EQ(k.ev[0].yield, 10);
    ASSERT_EQ(k.ev[0].scrap, 1);
    ASSERT_EQ(k.ev[0].record_count, 3);
    ASSERT_EQ(s_count(&k, 0, FP_CK_CONSUMPTION, "10"), 1);
    ASSERT_EQ(s_count(&k, 0, FP_CK_SCRAP, "10"), 1);
    for (size_t i = 0; i < k.n; i++)
        ASSERT_STREQ(k.ev[i].operation, "10"); /* nothing of operation 20 */
    for (size_t i = 1; i < 3; i++)
        ASSERT(!k.ev[i].final && !k.ev[i].late);
    const agg_stats_t *st = agg_stats(a);
    ASSERT_EQ(st->open_operations, 1);
    ASSERT_EQ(st->closed_operations, 1);

    /* A zero-delta completion: OperationCompleted alone still emits final 0/0. */
    bb_rec(&bb, FP_KIND_OP_STARTED, 0, "O2", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O2", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(k.n, 4);
    ASSERT_STREQ(k.ev[3].order, "O2");
    ASSERT(k.ev[3].final);
    ASSERT_EQ(k.ev[3].yield, 0);
    ASSERT_EQ(k.ev[3].scrap, 0);
    ASSERT_EQ(k.ev[3].record_count, 2);

    /* The partial flush then emits operation 20 only. */
    agg_flush(a, AGG_FLUSH_ALL, 5);
    ASSERT_EQ(k.n, 7);
    ASSERT_EQ(s_count(&k, 4, FP_CK_COMPLETION, "20"), 1);
    ASSERT_EQ(s_count(&k, 4, FP_CK_SCRAP, "20"), 1);
    ASSERT_EQ(s_count(&k, 4, FP_CK_CONSUMPTION, "20"), 1);
    const cap_t *c = s_find(&k, 4, FP_CK_COMPLETION, "20", NULL);
    ASSERT(!c->final);
    ASSERT_EQ(c->yield, 11);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

TEST(test_partial_flush_and_zero_delta_wait)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 1000);
    bb_t bb;
    bb_init(&bb, 1, 1);
    bb_rec(&bb, FP_KIND_OP_STARTED, 0, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_MATERIAL, 5, "O1", "10", "M", "L", "KG");
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_LATE, 1);
    ASSERT_EQ(k.n, 0); /* nothing late */
    agg_flush(a, AGG_FLUSH_ALL, 2);
    ASSERT_EQ(k.n, 1); /* consumption; the 0/0 completion waits */
    ASSERT_EQ(k.ev[0].kind, FP_CK_CONSUMPTION);
    agg_flush(a, AGG_FLUSH_ALL, 3);
    ASSERT_EQ(k.n, 1);

    /* A +2 and -2 still net 0/0: waits, with its records. */
    bb_rec(&bb, FP_KIND_PART_COUNT, 2, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, -2, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 4);
    ASSERT_EQ(k.n, 1);

    bb_rec(&bb, FP_KIND_PART_COUNT, 4, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 5);
    ASSERT_EQ(k.n, 2);
    ASSERT_EQ(k.ev[1].kind, FP_CK_COMPLETION);
    ASSERT_EQ(k.ev[1].yield, 4);
    ASSERT_EQ(k.ev[1].record_count, 4); /* started, +2, -2, +4 */
    ASSERT_EQ(k.ev[1].lineage[0].first_seq, 1);
    ASSERT_EQ(k.ev[1].lineage[0].last_seq, 5);
    ASSERT_EQ(k.ev[1].first_ns, 1700000000000000000ll + 1000);
    ASSERT(!k.ev[1].final);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

TEST(test_late_corrections)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 1000000);
    bb_t bb;
    bb_init(&bb, 1, 1);
    bb_rec(&bb, FP_KIND_PART_COUNT, 10, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O2", "10", NULL, NULL, NULL); /* open op */
    s_add(a, &bb);
    ASSERT_EQ(k.n, 1);
    /* After the final completion: corrections. */
    bb_rec(&bb, FP_KIND_PART_COUNT, 3, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 2, "O1", "10", "DENT", NULL, NULL);
    bb_rec(&bb, FP_KIND_MATERIAL, 7, "O1", "10", "M", "L", "KG");
    s_add(a, &bb);
    ASSERT_EQ(k.n, 1);
    agg_flush(a, AGG_FLUSH_LATE, 10);
    ASSERT_EQ(k.n, 4); /* late completion, scrap, consumption; not O2 */
    for (size_t i = 1; i < 4; i++) {
        ASSERT(k.ev[i].late);
        ASSERT(!k.ev[i].final);
        ASSERT_STREQ(k.ev[i].order, "O1");
    }
    const cap_t *c = s_find(&k, 1, FP_CK_COMPLETION, "10", NULL);
    ASSERT_EQ(c->yield, 3);
    ASSERT_EQ(c->scrap, 2);
    ASSERT_EQ(c->checkpoint_no, 2);
    ASSERT_EQ(agg_stats(a)->late_events, 3);

    /* A late 0/0 correction (OperationStarted after close) is emitted too. */
    bb_rec(&bb, FP_KIND_OP_STARTED, 0, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_LATE, 11);
    ASSERT_EQ(k.n, 5);
    ASSERT(k.ev[4].late && !k.ev[4].final);
    ASSERT_EQ(k.ev[4].record_count, 1);

    /* A second OperationCompleted: late final + its pending children, at once. */
    bb_rec(&bb, FP_KIND_MATERIAL, 1, "O1", "10", "M", "L", "KG");
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(k.n, 7);
    ASSERT_EQ(k.ev[5].kind, FP_CK_COMPLETION);
    ASSERT(k.ev[5].late && k.ev[5].final);
    ASSERT_EQ(k.ev[5].yield, 1);
    ASSERT_EQ(k.ev[5].record_count, 2);
    ASSERT_EQ(k.ev[6].kind, FP_CK_CONSUMPTION);
    ASSERT(k.ev[6].late);
    ASSERT_EQ(k.ev[6].quantity, 1);
    ASSERT_EQ(agg_stats(a)->closed_operations, 1);
    ASSERT_EQ(agg_stats(a)->open_operations, 1);

    /* AGG_FLUSH_ALL emits late ones too, and the open O2. */
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 12);
    ASSERT_EQ(k.n, 9);
    ASSERT_EQ(s_count(&k, 7, FP_CK_COMPLETION, "10"), 2);
    int late = 0;
    for (size_t i = 7; i < 9; i++)
        late += k.ev[i].late;
    ASSERT_EQ(late, 1);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

TEST(test_overflow)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 1000);
    bb_t bb;
    bb_init(&bb, 1, 1);
    bb_rec(&bb, FP_KIND_PART_COUNT, INT64_MAX, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL); /* seq 2: refused */
    bb_rec(&bb, FP_KIND_MATERIAL, INT64_MAX, "O1", "10", "M", "L", "KG");
    bb_rec(&bb, FP_KIND_MATERIAL, 5, "O1", "10", "M", "L", "KG"); /* seq 4: refused */
    bb_rec(&bb, FP_KIND_MATERIAL, INT64_MIN, "O1", "10", "M", "L", "KG"); /* ok: sum -1 */
    s_add(a, &bb);
    ASSERT_EQ(k.rejects, 1 + 1);
    ASSERT_STREQ(k.last_reason, "overflow");
    ASSERT_EQ(k.last_reject_seq, 4);

    /* Scrap: the reason key has room but the operation's scrap does not. */
    bb_rec(&bb, FP_KIND_SCRAP, INT64_MAX, "O1", "10", "DENT", NULL, NULL); /* seq 6 ok */
    bb_rec(&bb, FP_KIND_SCRAP, 1, "O1", "10", "CRACK", NULL, NULL); /* seq 7: op scrap full */
    s_add(a, &bb);
    ASSERT_EQ(k.rejects, 3);
    ASSERT_EQ(k.last_reject_seq, 7);
    /* and the other way round: reason key full, operation scrap has room */
    bb_rec(&bb, FP_KIND_SCRAP, -10, "O1", "10", "CRACK", NULL, NULL); /* seq 8 ok: op scrap MAX-10 */
    bb_rec(&bb, FP_KIND_SCRAP, 5, "O1", "10", "DENT", NULL, NULL); /* seq 9: DENT full */
    s_add(a, &bb);
    ASSERT_EQ(k.rejects, 4);
    ASSERT_EQ(k.last_reject_seq, 9);
    ASSERT_EQ(agg_stats(a)->rejected, 4);
    ASSERT_EQ(agg_stats(a)->records, 5);

    agg_flush(a, AGG_FLUSH_ALL, 1);
    /* Nothing of a refused record was applied anywhere. */
    const cap_t *c = s_find(&k, 0, FP_CK_COMPLETION, "10", NULL);
    ASSERT_EQ(c->yield, INT64_MAX);
    ASSERT_EQ(c->scrap, INT64_MAX - 10);
    ASSERT_EQ(c->record_count, 3); /* seq 1, 6, 8 */
    ASSERT(s_find(&k, 0, FP_CK_SCRAP, "10", "CRACK"));
    ASSERT(s_find(&k, 0, FP_CK_SCRAP, "10", "DENT"));
    ASSERT_EQ(s_find(&k, 0, FP_CK_SCRAP, "10", "CRACK")->parts, -10);
    ASSERT_EQ(s_find(&k, 0, FP_CK_SCRAP, "10", "CRACK")->record_count, 1);
    ASSERT_EQ(s_find(&k, 0, FP_CK_SCRAP, "10", "DENT")->parts, INT64_MAX);
    ASSERT_EQ(s_find(&k, 0, FP_CK_SCRAP, "10", "DENT")->record_count, 1);
    c = s_find(&k, 0, FP_CK_CONSUMPTION, "10", "M");
    ASSERT_EQ(c->quantity, -1);
    ASSERT_EQ(c->record_count, 2);
    ASSERT_EQ(c->lineage[0].first_seq, 3);
    ASSERT_EQ(c->lineage[0].last_seq, 5);

    /* After the flush the sums restart: the same quantities fit again. */
    bb_rec(&bb, FP_KIND_PART_COUNT, INT64_MAX, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(k.rejects, 4);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

TEST(test_too_many_keys)
{
    sink_t k;
    agg_t *a = s_new(&k, 3, 1000);
    bb_t bb;
    bb_init(&bb, 1, 1);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);            /* key 1 */
    bb_rec(&bb, FP_KIND_MATERIAL, 1, "O1", "10", "M", "L", "KG");                 /* key 2 */
    bb_rec(&bb, FP_KIND_SCRAP, 1, "O2", "10", "DENT", NULL, NULL); /* needs 2: refused */
    bb_rec(&bb, FP_KIND_SCRAP, 1, "O1", "10", "DENT", NULL, NULL);               /* key 3 */
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O3", "10", NULL, NULL, NULL);            /* refused */
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);            /* ok */
    s_add(a, &bb);
    ASSERT_EQ(k.rejects, 2);
    ASSERT_STREQ(k.last_reason, "too_many_keys");
    ASSERT_EQ(k.last_reject_seq, 5);
    const agg_stats_t *st = agg_stats(a);
    ASSERT_EQ(st->keys, 3);
    ASSERT_EQ(st->records, 4);
    ASSERT_EQ(st->rejected, 2);
    ASSERT_EQ(st->open_operations, 1);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 3);
    for (size_t i = 0; i < k.n; i++)
        ASSERT_STREQ(k.ev[i].order, "O1");
    const cap_t *c = s_find(&k, 0, FP_CK_COMPLETION, "10", NULL);
    ASSERT_EQ(c->yield, 2);
    ASSERT_EQ(c->scrap, 1);
    /* Strings of refused records are not kept. */
    ASSERT_EQ(st->strings, 9); /* P1 L1 S1 O1 10 M L KG DENT */
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

TEST(test_release_after_grace)
{
    sink_t k;
    const int64_t grace = 1000;
    agg_t *a = s_new(&k, 1000, grace);
    bb_t bb;
    bb_init(&bb, 1, 1);
    const agg_stats_t *st = agg_stats(a);
    agg_flush(a, AGG_FLUSH_LATE, 100); /* now = 100: closings below get closed_at 100 */
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 1, "O1", "10", "DENT", NULL, NULL);
    bb_rec(&bb, FP_KIND_MATERIAL, 1, "O1", "10", "M", "L", "KG");
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O2", "20", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(st->keys, 4);
    ASSERT_EQ(st->closed_operations, 1);
    agg_flush(a, AGG_FLUSH_ALL, 100 + grace - 1);
    ASSERT_EQ(st->keys, 4); /* grace not over */
    /* A correction within grace: late, and it holds the release back until emitted. */
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    size_t before = k.n;
    agg_flush(a, AGG_FLUSH_LATE, 100 + grace);
    ASSERT_EQ(k.n, before + 1);
    ASSERT(k.ev[before].late);
    ASSERT_EQ(st->keys, 1); /* O1's three keys released */
    ASSERT_EQ(st->released, 1);
    ASSERT_EQ(st->closed_operations, 0);
    ASSERT_EQ(st->open_operations, 1);
    ASSERT_EQ(st->strings, 5); /* P1 L1 S1 O2 20 */

    /* A record for the released operation opens a new one: not late. */
    bb_rec(&bb, FP_KIND_PART_COUNT, 5, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O2", "20", NULL, NULL, NULL);
    s_add(a, &bb);
    before = k.n;
    agg_flush(a, AGG_FLUSH_ALL, 5000);
    const cap_t *c = s_find(&k, before, FP_CK_COMPLETION, "10", NULL);
    ASSERT(c && !c->late && !c->final);
    ASSERT_EQ(c->checkpoint_no, 1);
    ASSERT_EQ(st->keys, 1); /* O2 closed at 1100 + 5000 >= grace: released */
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 5001);
    ASSERT_EQ(st->keys, 1); /* closed at 5000 */
    agg_flush(a, AGG_FLUSH_LATE, 6000);
    ASSERT_EQ(st->keys, 0);
    ASSERT_EQ(st->strings, 0);
    ASSERT_EQ(st->released, 3);
    ASSERT_EQ(st->open_operations + st->closed_operations, 0);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

TEST(test_lineage)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 1000);
    bb_t bb[6];
    for (int s = 0; s < 6; s++)
        bb_init(&bb[s], 100 + (uint64_t)s, s == 5 ? 2 : 1);
    bb[5].source = 100; /* same source as bb[0], another epoch */
    for (int s = 0; s < 6; s++)
        bb[s].seq = 10 * (uint64_t)(s + 1);
    /* source 100 twice (seq 10, 11), then 101..104, then 100 epoch 2. */
    int order[] = {0, 0, 1, 2, 3, 0, 4, 5};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        bb_rec(&bb[order[i]], FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);
        s_add(a, &bb[order[i]]);
    }
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 1);
    const cap_t *c = &k.ev[0];
    ASSERT_EQ(c->record_count, 8);
    ASSERT_EQ(c->nlineage, 4);
    ASSERT(c->truncated);
    ASSERT_EQ(c->lineage[0].source_id, 100);
    ASSERT_EQ(c->lineage[0].epoch, 1);
    ASSERT_EQ(c->lineage[0].first_seq, 10);
    ASSERT_EQ(c->lineage[0].last_seq, 12);
    for (int s = 1; s < 4; s++) {
        ASSERT_EQ(c->lineage[s].source_id, 100 + (uint64_t)s);
        ASSERT_EQ(c->lineage[s].first_seq, 10 * (uint64_t)(s + 1));
        ASSERT_EQ(c->lineage[s].last_seq, 10 * (uint64_t)(s + 1));
    }
    /* Reset after the emit: a new checkpoint starts its own lineage. */
    bb_rec(&bb[5], FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb[5]);
    agg_flush(a, AGG_FLUSH_ALL, 2);
    ASSERT_EQ(k.n, 2);
    ASSERT_EQ(k.ev[1].nlineage, 1);
    ASSERT(!k.ev[1].truncated);
    ASSERT_EQ(k.ev[1].lineage[0].source_id, 100);
    ASSERT_EQ(k.ev[1].lineage[0].epoch, 2);
    ASSERT_EQ(k.ev[1].lineage[0].first_seq, 61);
    agg_destroy(&a);
    for (int s = 0; s < 6; s++)
        bb_free(&bb[s]);
    free(k.ev);
}

/* ---- randomized model test ---- */

enum { M_ORDERS = 40, M_OPS = 5, M_MATS = 4, M_LOTS = 3, M_REASONS = 4, M_SOURCES = 6 };

typedef struct {
    int64_t yield[M_ORDERS][M_OPS], scrap[M_ORDERS][M_OPS];
    int64_t cons[M_ORDERS][M_OPS][M_MATS][M_LOTS];
    int64_t parts[M_ORDERS][M_OPS][M_REASONS];
    uint64_t n_op[M_ORDERS][M_OPS], n_cons[M_ORDERS][M_OPS][M_MATS][M_LOTS],
        n_scrap[M_ORDERS][M_OPS][M_REASONS];
} model_t;

typedef struct {
    model_t *emitted;
    uint64_t (*ids)[2];
    size_t nids, capids;
    uint64_t events;
} msink_t;

static int s_num(const char *s)
{
    return atoi(s + 1); /* "O12" -> 12 */
}

static void s_model_emit(void *ctx, const fp_checkpoint_t *ck)
{
    msink_t *m = ctx;
    int o = s_num(ck->order), p = s_num(ck->operation);
    ASSERT(o >= 0 && o < M_ORDERS && p >= 0 && p < M_OPS);
    ASSERT(ck->record_count > 0);
    switch (ck->kind) {
    case FP_CK_COMPLETION:
        m->emitted->yield[o][p] += ck->yield;
        m->emitted->scrap[o][p] += ck->scrap;
        m->emitted->n_op[o][p] += ck->record_count;
        ASSERT(ck->final || ck->late || ck->yield || ck->scrap);
        break;
    case FP_CK_CONSUMPTION: {
        int mm = s_num(ck->material), l = s_num(ck->lot);
        ASSERT_STREQ(ck->unit, "KG");
        m->emitted->cons[o][p][mm][l] += ck->quantity;
        m->emitted->n_cons[o][p][mm][l] += ck->record_count;
        break;
    }
    case FP_CK_SCRAP: {
        int r = s_num(ck->reason);
        m->emitted->parts[o][p][r] += ck->parts;
        m->emitted->n_scrap[o][p][r] += ck->record_count;
        break;
    }
    default:
        ASSERT(!"kind");
    }
    /* event_id = "fp1-" + 32 lowercase hex */
    ASSERT_EQ(strlen(ck->event_id), 4 + 32);
    ASSERT(strncmp(ck->event_id, "fp1-", 4) == 0);
    for (int i = 4; i < 36; i++)
        ASSERT(strchr("0123456789abcdef", ck->event_id[i]) != NULL);
    if (m->nids == m->capids) {
        m->capids = m->capids ? m->capids * 2 : 1024;
        m->ids = realloc(m->ids, m->capids * sizeof *m->ids);
        ASSERT(m->ids);
    }
    char hi[17] = {0}, lo[17] = {0};
    memcpy(hi, ck->event_id + 4, 16);
    memcpy(lo, ck->event_id + 20, 16);
    m->ids[m->nids][0] = strtoull(hi, NULL, 16);
    m->ids[m->nids][1] = strtoull(lo, NULL, 16);
    m->nids++;
    m->events++;
}

static void s_model_reject(void *ctx, const fp_batch_hdr_t *b, const fp_record_t *r,
                           const char *reason)
{
    ASSERT(!"no refusal expected");
}

static int s_cmp_id(const void *x, const void *y)
{
    const uint64_t *a = x, *b = y;
    if (a[0] != b[0])
        return a[0] < b[0] ? -1 : 1;
    return a[1] < b[1] ? -1 : a[1] > b[1];
}

static uint64_t s_rng(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

TEST(test_model_random)
{
    model_t *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    msink_t ms = {.emitted = got};
    agg_config_t cfg = {.instance = "fp1", .closed_key_grace_ns = 50, .max_open_keys = 1 << 20};
    agg_t *a = agg_new(&cfg, s_model_emit, s_model_reject, &ms);
    ASSERT(a);
    bb_t bb[M_SOURCES];
    for (int s = 0; s < M_SOURCES; s++)
        bb_init(&bb[s], 1 + (uint64_t)s, 1);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int64_t now = 0;
    uint64_t nrec = 0;
    char o[16], p[16], mat[16], lot[16], why[16];
    while (nrec < 200000) {
        int s = (int)(s_rng(&x) % M_SOURCES);
        if (s_rng(&x) % 50 == 0)
            bb[s].epoch++; /* producer restart: new epoch */
        int n = 1 + (int)(s_rng(&x) % 300);
        /* each batch works on a few orders, as a gateway would */
        int base = (int)(s_rng(&x) % M_ORDERS);
        for (int i = 0; i < n; i++) {
            int oi = (base + (int)(s_rng(&x) % 3)) % M_ORDERS, pi = (int)(s_rng(&x) % M_OPS);
            snprintf(o, sizeof o, "O%d", oi);
            snprintf(p, sizeof p, "P%d", pi);
            uint64_t r = s_rng(&x);
            int64_t q = (int64_t)(s_rng(&x) % 2001) - 500; /* negatives too */
            switch (r % 20) {
            case 0: case 1: case 2: case 3: case 4: case 5: {
                int mi = (int)(r / 20 % M_MATS), li = (int)(r / 100 % M_LOTS);
                snprintf(mat, sizeof mat, "M%d", mi);
                snprintf(lot, sizeof lot, "L%d", li);
                bb_rec(&bb[s], FP_KIND_MATERIAL, q, o, p, mat, lot, "KG");
                want->cons[oi][pi][mi][li] += q;
                want->n_cons[oi][pi][mi][li]++;
                break;
            }
            case 6: case 7: case 8: {
                int ri = (int)(r / 20 % M_REASONS);
                snprintf(why, sizeof why, "R%d", ri);
                bb_rec(&bb[s], FP_KIND_SCRAP, q, o, p, why, NULL, NULL);
                want->parts[oi][pi][ri] += q;
                want->n_scrap[oi][pi][ri]++;
                want->scrap[oi][pi] += q;
                want->n_op[oi][pi]++;
                break;
            }
            case 9:
                bb_rec(&bb[s], FP_KIND_OP_STARTED, q, o, p, NULL, NULL, NULL);
                want->n_op[oi][pi]++;
                break;
            case 10:
                bb_rec(&bb[s], FP_KIND_OP_COMPLETED, q, o, p, NULL, NULL, NULL);
                want->n_op[oi][pi]++;
                break;
            default:
                bb_rec(&bb[s], FP_KIND_PART_COUNT, q, o, p, NULL, NULL, NULL);
                want->yield[oi][pi] += q;
                want->n_op[oi][pi]++;
                break;
            }
            nrec++;
        }
        s_add(a, &bb[s]);
        uint64_t f = s_rng(&x) % 10;
        now += (int64_t)(s_rng(&x) % 20);
        if (f < 3)
            agg_flush(a, AGG_FLUSH_LATE, now);
        else if (f == 3)
            agg_flush(a, AGG_FLUSH_ALL, now);
    }
    /* Drain: complete every operation, then a full flush. */
    for (int oi = 0; oi < M_ORDERS; oi++)
        for (int pi = 0; pi < M_OPS; pi++) {
            snprintf(o, sizeof o, "O%d", oi);
            snprintf(p, sizeof p, "P%d", pi);
            bb_rec(&bb[0], FP_KIND_OP_COMPLETED, 0, o, p, NULL, NULL, NULL);
            want->n_op[oi][pi]++;
            nrec++;
        }
    s_add(a, &bb[0]);
    agg_flush(a, AGG_FLUSH_ALL, now + 1);

    const agg_stats_t *st = agg_stats(a);
    ASSERT_EQ(st->records, nrec);
    ASSERT_EQ(st->rejected, 0);
    ASSERT_EQ(st->events, ms.events);
    ASSERT(st->released > 100); /* release and reopen happened */
    ASSERT(st->late_events > 100);
    ASSERT_EQ(memcmp(want, got, sizeof *want), 0); /* every sum and every count */
    for (int oi = 0; oi < M_ORDERS; oi++)
        for (int pi = 0; pi < M_OPS; pi++)
            ASSERT_EQ(got->yield[oi][pi], want->yield[oi][pi]); /* for the message */

    /* Everything released after grace: no keys, no strings; about
       AGG_FLUSH_WORK keys per flush (agg.h "Bounded flushes"). */
    uint64_t held = st->keys;
    int flushes = 0;
    while (st->keys > 0 && flushes < 100) {
        uint64_t before = st->keys;
        agg_flush(a, AGG_FLUSH_LATE, now + 1000);
        flushes++;
        /* the budget counts heads too, stats.keys does not */
        ASSERT(before - st->keys >= (st->keys > 0 ? AGG_FLUSH_WORK / 2 : 1));
        ASSERT(before - st->keys < AGG_FLUSH_WORK + 64); /* whole operations */
    }
    ASSERT_EQ(st->keys, 0);
    ASSERT_EQ(st->strings, 0);
    fprintf(stderr, "    held %" PRIu64 " released in %d flushes\n", held, flushes);
    ASSERT(held > AGG_FLUSH_WORK && flushes >= 2 && flushes <= (int)(2 * held / AGG_FLUSH_WORK) + 1);

    /* Every event id is distinct. */
    qsort(ms.ids, ms.nids, sizeof *ms.ids, s_cmp_id);
    for (size_t i = 1; i < ms.nids; i++)
        ASSERT(s_cmp_id(ms.ids[i - 1], ms.ids[i]) != 0);
    fprintf(stderr, "    %" PRIu64 " records, %zu events, %" PRIu64 " late, %" PRIu64
                    " released\n",
            nrec, ms.nids, st->late_events, st->released);
    agg_destroy(&a);
    for (int s = 0; s < M_SOURCES; s++)
        bb_free(&bb[s]);
    free(ms.ids);
    free(want);
    free(got);
}

/* Two shards fed the same batches name their checkpoints identically, even
   though their symbol ids differ (one saw other strings first). */
TEST(test_event_id_determinism)
{
    sink_t k1, k2;
    agg_t *a1 = s_new(&k1, 1000, 10), *a2 = s_new(&k2, 1000, 10);
    bb_t bb;
    bb_init(&bb, 9, 4);
    bb_rec(&bb, FP_KIND_MATERIAL, 1, "X", "Y", "Z", "W", "V");
    s_add(a2, &bb); /* a2 interns other strings first */
    bb.seq = 1;
    uint64_t x = 12345;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 50; i++) {
            char o[8], p[8];
            snprintf(o, sizeof o, "O%d", (int)(s_rng(&x) % 4));
            snprintf(p, sizeof p, "P%d", (int)(s_rng(&x) % 3));
            int kind = 1 + (int)(s_rng(&x) % 5);
            bb_rec(&bb, kind, 1 + (int64_t)(s_rng(&x) % 9), o, p, "R1", "L1", "KG");
        }
        fp_batch_hdr_t *h = bb_build(&bb);
        agg_add(a1, h);
        agg_add(a2, h);
        free(h);
        bb_clear(&bb);
        agg_flush(a1, round % 3 ? AGG_FLUSH_LATE : AGG_FLUSH_ALL, round * 7);
        agg_flush(a2, round % 3 ? AGG_FLUSH_LATE : AGG_FLUSH_ALL, round * 7);
    }
    agg_flush(a1, AGG_FLUSH_ALL, 1000);
    agg_flush(a2, AGG_FLUSH_ALL, 1000);
    ASSERT(k1.n > 50);
    /* a2's extra key (order X) emits once, in its first flush */
    size_t j2 = 0;
    for (size_t i = 0; i < k1.n; i++, j2++) {
        if (strcmp(k2.ev[j2].order, "X") == 0)
            j2++;
        ASSERT_STREQ(k1.ev[i].event_id, k2.ev[j2].event_id);
        ASSERT_EQ(k1.ev[i].checkpoint_no, k2.ev[j2].checkpoint_no);
        ASSERT(strncmp(k1.ev[i].event_id, "fp1-", 4) == 0);
        ASSERT_EQ(strlen(k1.ev[i].event_id), 36);
        for (size_t j = 0; j < i; j++)
            ASSERT(strcmp(k1.ev[i].event_id, k1.ev[j].event_id) != 0);
    }
    ASSERT_EQ(j2, k2.n);
    agg_destroy(&a1);
    agg_destroy(&a2);
    bb_free(&bb);
    free(k1.ev);
    free(k2.ev);
}

/* Strings of a record that was never applied (invalid kind, index out of
   range) are neither kept nor crash anything. */
TEST(test_invalid_records)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 10);
    bb_t bb;
    bb_init(&bb, 1, 1);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL)->kind = 9;
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL)->kind = 0;
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL)->str[FP_STR_REASON] = 500;
    s_add(a, &bb);
    ASSERT_EQ(k.rejects, 3);
    ASSERT_STREQ(k.last_reason, "invalid_record");
    ASSERT_EQ(agg_stats(a)->keys, 0);
    ASSERT_EQ(agg_stats(a)->strings, 0);
    /* an empty batch is fine */
    s_add(a, &bb);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* ---- persistence: export, import (agg.h) ---- */

/* A byte map key -> state: the "store". */
typedef struct kv {
    struct kv *next;
    uint8_t *k, *s;
    size_t klen, slen;
} kv_t;

enum { KV_BUCKETS = 4096 };

typedef struct {
    kv_t *b[KV_BUCKETS];
    size_t n;
    size_t puts, dels; /* calls seen */
} kvmap_t;

static kv_t **kv_slot(kvmap_t *m, const void *k, size_t klen)
{
    kv_t **p = &m->b[XXH3_64bits(k, klen) % KV_BUCKETS];
    while (*p && !((*p)->klen == klen && memcmp((*p)->k, k, klen) == 0))
        p = &(*p)->next;
    return p;
}

static void kv_put(kvmap_t *m, const void *k, size_t klen, const void *s, size_t slen)
{
    kv_t **p = kv_slot(m, k, klen);
    if (!s) {
        m->dels++;
        if (*p) {
            kv_t *e = *p;
            *p = e->next;
            free(e->k);
            free(e->s);
            free(e);
            m->n--;
        }
        return;
    }
    m->puts++;
    kv_t *e = *p;
    if (!e) {
        e = calloc(1, sizeof *e);
        ASSERT(e);
        e->k = malloc(klen);
        ASSERT(e->k);
        memcpy(e->k, k, klen);
        e->klen = klen;
        *p = e;
        m->n++;
    }
    free(e->s);
    e->s = malloc(slen ? slen : 1);
    ASSERT(e->s);
    memcpy(e->s, s, slen);
    e->slen = slen;
}

static void kv_cb(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    ASSERT(key && klen >= 2);
    ASSERT(state ? slen >= 4 : slen == 0);
    kv_put(ctx, key, klen, state, slen);
}

static const kv_t *kv_get(kvmap_t *m, const void *k, size_t klen)
{
    return *kv_slot(m, k, klen);
}

static void kv_clear(kvmap_t *m)
{
    for (int i = 0; i < KV_BUCKETS; i++)
        while (m->b[i]) {
            kv_t *e = m->b[i];
            m->b[i] = e->next;
            free(e->k);
            free(e->s);
            free(e);
        }
    memset(m, 0, sizeof *m);
}

static void kv_copy(kvmap_t *dst, kvmap_t *src)
{
    kv_clear(dst);
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = src->b[i]; e; e = e->next)
            kv_put(dst, e->k, e->klen, e->s, e->slen);
}

static void kv_assert_equal(kvmap_t *a, kvmap_t *b)
{
    ASSERT_EQ(a->n, b->n);
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = a->b[i]; e; e = e->next) {
            const kv_t *f = kv_get(b, e->k, e->klen);
            ASSERT(f != NULL);
            ASSERT_EQ(e->slen, f->slen);
            ASSERT(memcmp(e->s, f->s, e->slen) == 0);
        }
}

/* Everything a holds, as a fresh map. */
static void kv_snapshot(kvmap_t *m, agg_t *a)
{
    kv_clear(m);
    ASSERT_EQ(agg_export_all(a, kv_cb, m), 0);
}

/* Imports all of m into a, in a random order (children before their
   operation too). */
/* Imports every pair of m in table order; the first failure's code. */
static int kv_import_all_rc(kvmap_t *m, agg_t *a)
{
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = m->b[i]; e; e = e->next) {
            int rc = agg_import(a, e->k, e->klen, e->s, e->slen);
            if (rc != 0)
                return rc;
        }
    return 0;
}

static void kv_import_all(kvmap_t *m, agg_t *a, uint64_t *x)
{
    kv_t **all = malloc((m->n + 1) * sizeof *all);
    ASSERT(all);
    size_t n = 0;
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = m->b[i]; e; e = e->next)
            all[n++] = e;
    ASSERT_EQ(n, m->n);
    for (size_t i = n; i > 1; i--) {
        size_t j = s_rng(x) % i;
        kv_t *t = all[i - 1];
        all[i - 1] = all[j];
        all[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(agg_import(a, all[i]->k, all[i]->klen, all[i]->s, all[i]->slen), 0);
    free(all);
}

static int s_cmp_cap(const void *x, const void *y)
{
    return memcmp(x, y, sizeof(cap_t));
}

/* The checkpoints a and b emitted since the last call are the same (as
   multisets: the order within one call may differ), and so are refusals. */
static void s_same_events(sink_t *ka, sink_t *kb)
{
    ASSERT_EQ(ka->n, kb->n);
    if (ka->n > 0) {
        qsort(ka->ev, ka->n, sizeof *ka->ev, s_cmp_cap);
        qsort(kb->ev, kb->n, sizeof *kb->ev, s_cmp_cap);
    }
    for (size_t i = 0; i < ka->n; i++) {
        if (memcmp(&ka->ev[i], &kb->ev[i], sizeof ka->ev[i]) != 0)
            fprintf(stderr, "a: %s %s/%s no %" PRIu64 " n %" PRIu64 " late %d final %d\n"
                            "b: %s %s/%s no %" PRIu64 " n %" PRIu64 " late %d final %d\n",
                    ka->ev[i].event_id, ka->ev[i].order, ka->ev[i].operation,
                    ka->ev[i].checkpoint_no, ka->ev[i].record_count, ka->ev[i].late,
                    ka->ev[i].final, kb->ev[i].event_id, kb->ev[i].order,
                    kb->ev[i].operation, kb->ev[i].checkpoint_no, kb->ev[i].record_count,
                    kb->ev[i].late, kb->ev[i].final);
        ASSERT(memcmp(&ka->ev[i], &kb->ev[i], sizeof ka->ev[i]) == 0);
        ka->seen_late += ka->ev[i].late;
        ka->seen_truncated += ka->ev[i].truncated;
    }
    ASSERT_EQ(ka->rejects, kb->rejects);
    ASSERT_STREQ(ka->last_reason, kb->last_reason);
    ASSERT_EQ(ka->last_reject_seq, kb->last_reject_seq);
    ka->n = kb->n = 0;
    ka->rejects = kb->rejects = 0;
    ka->last_reason[0] = kb->last_reason[0] = 0;
    ka->last_reject_seq = kb->last_reject_seq = 0;
}

static void s_same_state(agg_t *a, agg_t *b)
{
    const agg_stats_t *sa = agg_stats(a), *sb = agg_stats(b);
    ASSERT_EQ(sa->keys, sb->keys);
    ASSERT_EQ(sa->open_operations, sb->open_operations);
    ASSERT_EQ(sa->closed_operations, sb->closed_operations);
    /* Not strings: a closed operation's strings go when it is compacted,
       which the exporting agg_t does a round later than the restored one
       (its keys were marked; agg_internal.h). */
    ASSERT(memcmp(agg_pending(a), agg_pending(b), sizeof(agg_pending_t)) == 0);
}

enum { P_SOURCES = 6, P_ORDERS = 8, P_OPS = 4 };

/* One random batch of source s into bb. */
static void s_gen_batch(bb_t *bb, uint64_t *x)
{
    char o[16], p[16], mat[16], lot[16], why[16];
    if (s_rng(x) % 40 == 0) { /* producer restart */
        bb->epoch++;
        bb->seq = 1;
    }
    int n = 1 + (int)(s_rng(x) % 40);
    for (int i = 0; i < n; i++) {
        snprintf(o, sizeof o, "O%d", (int)(s_rng(x) % P_ORDERS));
        snprintf(p, sizeof p, "P%d", (int)(s_rng(x) % P_OPS));
        uint64_t r = s_rng(x);
        int64_t q = (int64_t)(s_rng(x) % 2001) - 500;
        if (s_rng(x) % 500 == 0)
            q = INT64_MAX - 3; /* an overflow now and then */
        switch (r % 24) {
        case 0: case 1: case 2: case 3: case 4: case 5:
            snprintf(mat, sizeof mat, "M%d", (int)(r / 24 % 3));
            snprintf(lot, sizeof lot, "L%d", (int)(r / 72 % 2));
            bb_rec(bb, FP_KIND_MATERIAL, q, o, p, mat, (r / 144) % 4 ? lot : NULL, "KG");
            break;
        case 6: case 7: case 8:
            snprintf(why, sizeof why, "R%d", (int)(r / 24 % 3));
            bb_rec(bb, FP_KIND_SCRAP, q, o, p, why, NULL, NULL);
            break;
        case 9:
            bb_rec(bb, FP_KIND_OP_STARTED, q, o, p, NULL, NULL, NULL);
            break;
        case 10:
            bb_rec(bb, FP_KIND_OP_COMPLETED, q, o, p, NULL, NULL, NULL);
            break;
        default:
            bb_rec(bb, FP_KIND_PART_COUNT, q, o, p, NULL, NULL, NULL);
            break;
        }
    }
}

/* One round of traffic into every agg of a[0..na): a few batches from
   random sources, then the round's barrier flush at *now. */
static void s_round(agg_t **a, sink_t **k, int na, bb_t *bb, uint64_t *x, int64_t *now)
{
    int batches = 1 + (int)(s_rng(x) % 3);
    for (int i = 0; i < batches; i++) {
        bb_t *b = &bb[s_rng(x) % P_SOURCES];
        s_gen_batch(b, x);
        fp_batch_hdr_t *h = bb_build(b);
        for (int j = 0; j < na; j++)
            agg_add(a[j], h);
        free(h);
        bb_clear(b);
        for (int j = 1; j < na; j++)
            s_same_events(k[0], k[j]);
    }
    *now += (int64_t)(s_rng(x) % 25);
    int mode = s_rng(x) % 4 == 0 ? AGG_FLUSH_ALL : AGG_FLUSH_LATE;
    for (int j = 0; j < na; j++)
        agg_flush(a[j], mode, *now);
    for (int j = 1; j < na; j++) {
        s_same_events(k[0], k[j]);
        s_same_state(a[0], a[j]);
    }
    if (na == 1) {
        k[0]->n = k[0]->rejects = 0;
        k[0]->last_reason[0] = 0;
        k[0]->last_reject_seq = 0;
    }
}

/* A restart at random round barriers: agg B rebuilt from the store alone
   must go on exactly like A. */
static void s_restart_run(uint64_t max_keys, uint64_t seed)
{
    sink_t ka, kb;
    const int64_t grace = 60;
    agg_t *a = s_new(&ka, max_keys, grace);
    bb_t bb[P_SOURCES];
    static const char *lines[] = {"L1", "L2", "L3"}, *stations[] = {"S1", "S2"};
    for (int s = 0; s < P_SOURCES; s++) {
        bb_init(&bb[s], 10 + (uint64_t)s, 1);
        bb[s].line = lines[s % 3];
        bb[s].station = stations[s % 2];
    }
    kvmap_t *store = calloc(1, sizeof *store), *bstore = calloc(1, sizeof *bstore),
            *snap = calloc(1, sizeof *snap);
    ASSERT(store && bstore && snap);
    uint64_t x = seed;
    int64_t now = 1700000000000000000ll; /* wall clock, as the shard passes it */
    int restarts = 0;
    uint64_t max_store = 0;
    for (int round = 0; round < 2500; round++) {
        agg_t *one[1] = {a};
        sink_t *kone[1] = {&ka};
        s_round(one, kone, 1, bb, &x, &now);
        ASSERT_EQ(agg_export_dirty(a, kv_cb, store), 0); /* the round's commit */
        if (store->n > max_store)
            max_store = store->n;
        if (round % 20 != 19)
            continue;

        /* The store holds exactly what A holds: no change was missed. */
        kv_snapshot(snap, a);
        kv_assert_equal(snap, store);

        /* Restart: B from the store alone, in a random order. */
        restarts++;
        agg_t *b = s_new(&kb, max_keys, grace);
        kv_import_all(store, b, &x);
        agg_flush(b, AGG_FLUSH_LATE, now); /* start-up protocol (agg.h) */
        ASSERT_EQ(kb.n, 0);                /* A's round flush left nothing late */
        s_same_state(a, b);
        kv_snapshot(snap, b);
        kv_assert_equal(snap, store); /* B holds exactly the store */
        kv_copy(bstore, store);
        ASSERT_EQ(agg_export_dirty(b, kv_cb, bstore), 0);
        ASSERT_EQ(bstore->puts + bstore->dels, store->n); /* nothing dirty after import */

        /* The same continuation into both; every checkpoint identical. */
        int cont = 1 + (int)(s_rng(&x) % 40);
        for (int i = 0; i < cont; i++) {
            agg_t *both[2] = {a, b};
            sink_t *kboth[2] = {&ka, &kb};
            s_round(both, kboth, 2, bb, &x, &now);
            ASSERT_EQ(agg_export_dirty(a, kv_cb, store), 0);
            ASSERT_EQ(agg_export_dirty(b, kv_cb, bstore), 0);
        }
        /* B's own commits rebuilt the same store as A's */
        kv_assert_equal(store, bstore);
        kv_snapshot(snap, b);
        kv_assert_equal(snap, bstore);
        agg_destroy(&b);
        free(kb.ev);
    }
    const agg_stats_t *st = agg_stats(a);
    uint64_t late = ka.seen_late, truncated_seen = ka.seen_truncated;
    fprintf(stderr, "    max_keys %" PRIu64 ": %d restarts, store up to %" PRIu64
                    " keys, %" PRIu64 " released, %" PRIu64 " rejected, %" PRIu64
                    " events; after restarts %" PRIu64 " late, %" PRIu64 " truncated\n",
            max_keys, restarts, max_store, st->released, st->rejected, st->events, late,
            truncated_seen);
    ASSERT(restarts >= 100);
    ASSERT(st->released > 100 && st->late_events > 100);
    ASSERT(late > 100 && truncated_seen > 10); /* compared across restarts */
    if (max_keys < 1000)
        ASSERT(st->rejected > 100); /* too_many_keys decisions were compared */
    kv_clear(store);
    kv_clear(bstore);
    kv_clear(snap);
    free(store);
    free(bstore);
    free(snap);
    for (int s = 0; s < P_SOURCES; s++)
        bb_free(&bb[s]);
    agg_destroy(&a);
    free(ka.ev);
}

TEST(test_restart_exact)
{
    s_restart_run(1u << 20, 0x1234567ull);
    s_restart_run(90, 0xabcdefull); /* near the key limit: refusals must match too */
}

/* crashgen's stream (its plantgen parameters) into one agg_t with round
   flushes, posting-interval flushes and restarts from the store, then the
   drain: the published record_count is the truth's (truth.h), and what
   the truth says waits (OperationStarted records of operations with only
   consumption since: 0/0 partial completions) is held, restored, pending.
   The truth once counted every unique record as published: 40000 records
   of seed 5 end with two such operations, and the crash test of the jsonl
   sink found the outbox 2 short. */
static void s_add_rec(bb_t *bb, const fp_rec_in_t *r)
{
    const char *const *v = r->str;
    bb->plant = v[FP_STR_PLANT];
    bb->line = v[FP_STR_LINE];
    bb->station = v[FP_STR_STATION];
    fp_record_t *f;
    if (r->kind == FP_KIND_MATERIAL)
        f = bb_rec(bb, r->kind, r->quantity, v[FP_STR_ORDER], v[FP_STR_OPERATION],
                   v[FP_STR_MATERIAL], v[FP_STR_LOT], v[FP_STR_UNIT]);
    else
        f = bb_rec(bb, r->kind, r->quantity, v[FP_STR_ORDER], v[FP_STR_OPERATION],
                   v[FP_STR_REASON], NULL, NULL);
    f->seq = r->seq;
    f->time_ns = r->time_ns;
}

/* A restart: a new agg_t from the store alone (start-up protocol, agg.h);
   what the old one emitted is added to *emitted. */
static agg_t *s_restart_from(agg_t *a, sink_t *k, kvmap_t *store, uint64_t *emitted,
                             int64_t now, uint64_t *x)
{
    *emitted += k->record_sum;
    agg_destroy(&a);
    agg_t *b = s_new(k, 1u << 20, INT64_MAX / 4);
    k->count_only = true;
    kv_import_all(store, b, x);
    agg_flush(b, AGG_FLUSH_LATE, now);
    return b;
}

TEST(test_truth_of_crashgen)
{
    plantgen_params_t pp;
    plantgen_defaults(&pp);
    pp.lines_per_plant = 4; /* crashgen's */
    pp.seed = 5;
    pp.records_per_operation = 40;
    pp.burst = 16;
    plantgen_t *g = plantgen_new(&pp);
    truth_t *t = truth_new();
    kvmap_t *store = calloc(1, sizeof *store);
    ASSERT(g && t && store);
    sink_t k;
    agg_t *a = s_new(&k, 1u << 20, INT64_MAX / 4); /* no release in the run */
    k.count_only = true;
    bb_t bb;
    bb_init(&bb, 0, 1);
    uint64_t emitted = 0, x = 42, unique = 0;
    int64_t now = 1700000000000000000ll;
    int batches = 0, posting = 0, restarts = 0;
    for (int i = 0; i <= 40000; i++) {
        uint64_t source = 0, epoch = 0;
        fp_rec_in_t r;
        if (i < 40000) {
            plantgen_next(g, &source, &epoch, &r);
            ASSERT_EQ(truth_add(t, &r), 0);
            unique += r.kind == FP_KIND_SCRAP ? 2 : 1;
        }
        if (bb.n > 0 && (i == 40000 || source != bb.source || bb.n == 64)) {
            s_add(a, &bb);
            if (++batches % 4 == 0 || i == 40000) { /* a round */
                now += 50000000;
                bool last = i == 40000; /* the drain */
                int mode = last || s_rng(&x) % 10 == 0 ? AGG_FLUSH_ALL : AGG_FLUSH_LATE;
                posting += mode == AGG_FLUSH_ALL;
                agg_flush(a, mode, now);
                ASSERT_EQ(agg_export_dirty(a, kv_cb, store), 0);
                if (s_rng(&x) % 10 == 0) {
                    a = s_restart_from(a, &k, store, &emitted, now, &x);
                    restarts++;
                }
            }
        }
        if (i < 40000) {
            bb.source = source;
            bb.epoch = epoch;
            s_add_rec(&bb, &r);
        }
    }
    /* Drained; the final start restores the drained state. */
    a = s_restart_from(a, &k, store, &emitted, now, &x);
    fprintf(stderr, "    %d posting flushes, %d restarts; published %" PRIu64
                    " records, %" PRIu64 " waiting\n",
            posting, restarts, emitted, truth_waiting(t));
    ASSERT(posting > 30 && restarts > 30);
    ASSERT_EQ(truth_waiting(t), 2); /* the case is there */
    ASSERT_EQ(truth_records(t) + truth_waiting(t), unique);
    ASSERT_EQ(emitted, truth_records(t));
    const agg_pending_t *pend = agg_pending(a);
    ASSERT_EQ(pend->records[FP_CK_COMPLETION - 1], truth_waiting(t));
    ASSERT_EQ(pend->records[FP_CK_CONSUMPTION - 1], 0);
    ASSERT_EQ(pend->records[FP_CK_SCRAP - 1], 0);
    agg_flush(a, AGG_FLUSH_ALL, now + 1); /* they wait even on drain */
    ASSERT_EQ(k.n, 0);
    ASSERT_EQ(agg_pending(a)->records[FP_CK_COMPLETION - 1], truth_waiting(t));

    /* Outside the model: refused, nothing counted. */
    fp_rec_in_t bad = {.seq = 1, .kind = FP_KIND_PART_COUNT, .quantity = 0};
    ASSERT_EQ(truth_add(t, &bad), -1);
    bad.kind = 9;
    ASSERT_EQ(truth_add(t, &bad), -1);
    ASSERT_EQ(truth_records(t) + truth_waiting(t), unique);

    agg_destroy(&a);
    bb_free(&bb);
    kv_clear(store);
    free(store);
    truth_destroy(&t);
    plantgen_destroy(&g);
}

/* Decodes key bytes (agg.h) independently of agg.c: kind and strings. */
/* Decodes a version-2 key (agg.h): kind 1..3 (with a period varint, 0
   here: no periods) or 4 (an operation head). */
static int s_key_decode(const uint8_t *k, size_t klen, char out[6][32])
{
    ASSERT(klen >= 2 && k[0] == 2);
    int kind = k[1];
    int nf = kind == FP_CK_CONSUMPTION ? 6 : kind == FP_CK_SCRAP ? 4 : 3;
    size_t off = 2;
    memset(out, 0, 6 * 32);
    for (int f = 0; f < nf; f++) {
        ASSERT(off < klen && k[off] < 0x80 && k[off] < 32);
        size_t n = k[off++];
        ASSERT(off + n <= klen);
        memcpy(out[f], k + off, n);
        off += n;
    }
    if (kind != 4) {
        ASSERT(off < klen);
        ASSERT_EQ(k[off++], 0); /* the period */
    }
    ASSERT_EQ(off, klen);
    return kind;
}

static void kv_count_cb(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    kvmap_t *m = ctx;
    kv_put(m, key, klen, state, slen);
}

TEST(test_key_format_and_shard)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 10);
    bb_t bb;
    bb_init(&bb, 1, 1);
    char o[32], p[32];
    for (int i = 0; i < 50; i++) {
        snprintf(o, sizeof o, "Order-%d", i);
        snprintf(p, sizeof p, "%d", i * 10);
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, o, p, NULL, NULL, NULL);
        bb_rec(&bb, FP_KIND_MATERIAL, 1, o, p, "STEEL", i % 2 ? "LOT9" : NULL, "KG");
        bb_rec(&bb, FP_KIND_SCRAP, 1, o, p, "DENT", NULL, NULL);
    }
    s_add(a, &bb);
    kvmap_t *m = calloc(1, sizeof *m);
    ASSERT_EQ(agg_export_dirty(a, kv_count_cb, m), 0); /* the first: everything */
    ASSERT_EQ(m->n, 200); /* 150 keys and 50 operation heads */
    int kinds[5] = {0};
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = m->b[i]; e; e = e->next) {
            char f[6][32];
            int kind = s_key_decode(e->k, e->klen, f);
            ASSERT(kind >= 1 && kind <= 4);
            kinds[kind]++;
            ASSERT_STREQ(f[0], "P1");
            ASSERT(strncmp(f[1], "Order-", 6) == 0);
            if (kind == FP_CK_CONSUMPTION) {
                ASSERT_STREQ(f[3], "STEEL");
                ASSERT(strcmp(f[4], "LOT9") == 0 || f[4][0] == 0); /* absent lot = "" */
                ASSERT_STREQ(f[5], "KG");
            }
            if (kind == FP_CK_SCRAP)
                ASSERT_STREQ(f[3], "DENT");
            for (uint32_t n = 1; n <= 9; n++) {
                /* the worker's formula, written out independently */
                uint64_t hp = XXH3_64bits(f[0], strlen(f[0])), ho = XXH3_64bits(f[1], strlen(f[1])),
                         hop = XXH3_64bits(f[2], strlen(f[2]));
                uint64_t h = hp ^ ((ho << 21) | (ho >> 43)) ^ ((hop << 42) | (hop >> 22));
                h *= 0x9E3779B97F4A7C15ull;
                uint32_t want = n == 1 ? 0 : (uint32_t)((h >> 32) % n);
                ASSERT_EQ(agg_key_shard(e->k, e->klen, n), want);
                ASSERT_EQ(fp_route_shard(fp_route_str_hash(f[0], strlen(f[0])),
                                         fp_route_str_hash(f[1], strlen(f[1])),
                                         fp_route_str_hash(f[2], strlen(f[2])), n),
                          want);
            }
            /* malformed keys have no shard */
            ASSERT_EQ(agg_key_shard(e->k, e->klen - 1, 4), UINT32_MAX);
            ASSERT_EQ(agg_key_shard(e->k, 0, 4), UINT32_MAX);
        }
    ASSERT_EQ(kinds[FP_CK_COMPLETION], 50);
    ASSERT_EQ(kinds[FP_CK_CONSUMPTION], 50);
    ASSERT_EQ(kinds[FP_CK_SCRAP], 50);
    ASSERT_EQ(kinds[4], 50);
    /* shards spread: 50 operations over 4 shards use them all */
    int used[4] = {0};
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = m->b[i]; e; e = e->next)
            used[agg_key_shard(e->k, e->klen, 4)]++;
    for (int s = 0; s < 4; s++)
        ASSERT(used[s] > 0);
    ASSERT_EQ(fp_route_worker(12345, 1), 0);
    ASSERT_EQ(fp_route_worker(12345, 7), (uint32_t)(XXH3_64bits(&(uint64_t){12345}, 8) % 7));
    kv_clear(m);
    free(m);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

TEST(test_export_dirty_and_release)
{
    sink_t k;
    const int64_t grace = 100;
    agg_t *a = s_new(&k, 1000, grace);
    bb_t bb;
    bb_init(&bb, 1, 1);
    kvmap_t *m = calloc(1, sizeof *m);
    ASSERT(m);
    /* nothing held, nothing exported; tracking starts here */
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->puts + m->dels, 0);
    agg_flush(a, AGG_FLUSH_LATE, 1000);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 1, "O1", "10", "DENT", NULL, NULL);
    bb_rec(&bb, FP_KIND_MATERIAL, 1, "O1", "10", "M", "L", "KG");
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O2", "20", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O3", "30", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->puts, 8); /* 5 keys, 3 operation heads */
    ASSERT_EQ(m->n, 8);
    m->puts = 0;
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->puts, 0); /* nothing changed */

    /* one record: its key only; a scrap: the operation and the scrap key */
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O2", "20", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->puts, 1);
    m->puts = 0;
    bb_rec(&bb, FP_KIND_SCRAP, 1, "O1", "10", "DENT", NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->puts, 2);
    m->puts = 0;
    /* a partial flush changes the emitted keys (checkpoint_no, reset) */
    agg_flush(a, AGG_FLUSH_ALL, 1010);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->puts, 5);
    m->puts = 0;

    /* close O1 (at now = 1010), then release it after grace: four deletions
       (head, completion, scrap, consumption) */
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->puts, 2); /* the completion emitted, the head closed */
    m->puts = 0;
    agg_flush(a, AGG_FLUSH_LATE, 1010 + grace - 1);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->puts + m->dels, 0);
    agg_flush(a, AGG_FLUSH_LATE, 1010 + grace);
    ASSERT_EQ(agg_stats(a)->released, 1);
    /* ... and in the same round the operation reopens: deletions come
       first, so the store ends with the new O1 */
    bb_rec(&bb, FP_KIND_PART_COUNT, 7, "O1", "10", NULL, NULL, NULL);
    s_add(a, &bb);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->dels, 4);
    ASSERT_EQ(m->puts, 2);
    ASSERT_EQ(m->n, 6); /* O1 (new), O2, O3: each a head and a completion */
    kvmap_t *snap = calloc(1, sizeof *snap);
    kv_snapshot(snap, a);
    kv_assert_equal(snap, m);

    /* the restored operation carries its checkpoint_no: the next one is 1
       for the reopened O1 and 3 for O2 */
    sink_t kb;
    agg_t *b = s_new(&kb, 1000, grace);
    kv_import_all(m, b, &(uint64_t){77});
    agg_flush(b, AGG_FLUSH_LATE, 1999);
    ASSERT_EQ(kb.n, 0);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O2", "20", NULL, NULL, NULL);
    s_add(b, &bb);
    agg_flush(b, AGG_FLUSH_ALL, 2000);
    ASSERT_EQ(kb.n, 2);
    const cap_t *c1 = s_find(&kb, 0, FP_CK_COMPLETION, "10", NULL);
    const cap_t *c2 = s_find(&kb, 0, FP_CK_COMPLETION, "20", NULL);
    ASSERT(c1 && c2);
    ASSERT_EQ(c1->checkpoint_no, 1);
    ASSERT_EQ(c1->yield, 7);
    ASSERT_EQ(c2->checkpoint_no, 2);
    ASSERT_EQ(c2->yield, 1);
    ASSERT_STREQ(c1->line, "L1");
    agg_destroy(&b);
    free(kb.ev);
    kv_clear(snap);
    free(snap);
    kv_clear(m);
    free(m);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* An agg_t that never exports keeps no persistence memory: no marks, no
   released keys. */
TEST(test_no_tracking_without_export)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 0);
    bb_t bb;
    bb_init(&bb, 1, 1);
    for (int i = 0; i < 100; i++) {
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", "10", NULL, NULL, NULL);
        bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
        s_add(a, &bb);
        agg_flush(a, AGG_FLUSH_LATE, i);
    }
    ASSERT_EQ(agg_stats(a)->released, 100);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O2", "20", NULL, NULL, NULL);
    s_add(a, &bb);
    kvmap_t *m = calloc(1, sizeof *m);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0); /* the first: what is held, no deletions */
    ASSERT_EQ(m->dels, 0);
    ASSERT_EQ(m->puts, 2); /* O2's head and completion */
    kv_clear(m);
    free(m);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* Damaged bytes: refused whole, never a crash or an over-read (run under
   ASan), and the agg_t stays usable. */
TEST(test_import_malformed)
{
    sink_t k;
    agg_t *a = s_new(&k, 1000, 10);
    bb_t bb;
    bb_init(&bb, 1, 1);
    bb_rec(&bb, FP_KIND_PART_COUNT, 5, "O1", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_SCRAP, 2, "O1", "10", "DENT", NULL, NULL);
    bb_rec(&bb, FP_KIND_MATERIAL, 3, "O1", "10", "M", "L", "KG");
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O2", "20", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O2", "20", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O2", "20", NULL, NULL, NULL); /* late */
    s_add(a, &bb);
    kvmap_t *m = calloc(1, sizeof *m);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->n, 6); /* 4 keys, 2 heads */

    sink_t kb;
    agg_t *b = s_new(&kb, 1000, 10);
    uint64_t x = 4242, accepted = 0;
    uint8_t buf[512];
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = m->b[i]; e; e = e->next) {
            /* every truncation and a trailing byte, of key and of state */
            for (size_t n = 0; n < e->klen; n++) {
                uint8_t *t = malloc(n ? n : 1);
                memcpy(t, e->k, n);
                ASSERT_EQ(agg_import(b, t, n, e->s, e->slen), -1);
                free(t);
            }
            for (size_t n = 0; n < e->slen; n++) {
                uint8_t *t = malloc(n ? n : 1);
                memcpy(t, e->s, n);
                ASSERT_EQ(agg_import(b, e->k, e->klen, t, n), -1);
                free(t);
            }
            memcpy(buf, e->k, e->klen);
            buf[e->klen] = 0;
            ASSERT_EQ(agg_import(b, buf, e->klen + 1, e->s, e->slen), -1);
            memcpy(buf, e->s, e->slen);
            buf[e->slen] = 0;
            ASSERT_EQ(agg_import(b, e->k, e->klen, buf, e->slen + 1), -1);
            /* version (3 is unknown; a version-2 key read as version 1
               has bytes left over), kind, flag bits */
            memcpy(buf, e->k, e->klen);
            buf[0] = 3;
            ASSERT_EQ(agg_import(b, buf, e->klen, e->s, e->slen), -1);
            buf[0] = 1;
            ASSERT_EQ(agg_import(b, buf, e->klen, e->s, e->slen), -1);
            buf[0] = 2;
            buf[1] = 5;
            ASSERT_EQ(agg_import(b, buf, e->klen, e->s, e->slen), -1);
            memcpy(buf, e->s, e->slen);
            buf[1] |= 8;
            ASSERT_EQ(agg_import(b, e->k, e->klen, buf, e->slen), -1);
            ASSERT_EQ(agg_import(b, e->k, e->klen, NULL, 0), -1);
            ASSERT_EQ(agg_import(b, NULL, 0, e->s, e->slen), -1);
        }
    ASSERT_EQ(agg_stats(b)->keys, 0); /* nothing half-loaded */
    /* hand-made states: count > 0 without lineage; late without count;
       closed on a consumption key; a huge string length */
    const uint8_t key_op[] = {1, FP_CK_COMPLETION, 2, 'P', '1', 2, 'O', '9', 1, '9'};
    const uint8_t key_cons[] = {1, FP_CK_CONSUMPTION, 2, 'P', '1', 2, 'O', '9', 1, '9',
                                1, 'M', 0, 2, 'K', 'G'};
    const uint8_t no_lineage[] = {1, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0};
    const uint8_t late_empty[] = {1, 2 | 1, 0, 0, 0, 0, 0, 0};
    const uint8_t closed_cons[] = {1, 1, 0, 0};
    const uint8_t huge_line[] = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0};
    const uint8_t good_op[] = {1, 0, 3, 0, 2, 'L', '7', 0};
    ASSERT_EQ(agg_import(b, key_op, sizeof key_op, no_lineage, sizeof no_lineage), -1);
    ASSERT_EQ(agg_import(b, key_op, sizeof key_op, late_empty, sizeof late_empty), -1);
    ASSERT_EQ(agg_import(b, key_cons, sizeof key_cons, closed_cons, sizeof closed_cons), -1);
    ASSERT_EQ(agg_import(b, key_op, sizeof key_op, huge_line, sizeof huge_line), -1);
    ASSERT_EQ(agg_stats(b)->keys, 0);
    /* a child first: its operation is created, then filled by its own pair
       (version-1 pairs, as a floorpost before periods stored them) */
    const uint8_t cons_state[] = {1, 0, 4, 0};
    ASSERT_EQ(agg_import(b, key_cons, sizeof key_cons, cons_state, sizeof cons_state), 0);
    ASSERT_EQ(agg_stats(b)->keys, 1); /* and the operation's head */
    ASSERT_EQ(agg_import(b, key_cons, sizeof key_cons, cons_state, sizeof cons_state), -1);
    ASSERT_EQ(agg_import(b, key_op, sizeof key_op, good_op, sizeof good_op), 0);
    ASSERT_EQ(agg_import(b, key_op, sizeof key_op, good_op, sizeof good_op), -1); /* twice */
    ASSERT_EQ(agg_stats(b)->keys, 2);
    bb_t bb2;
    bb_init(&bb2, 5, 1);
    bb_rec(&bb2, FP_KIND_MATERIAL, 3, "O9", "9", "M", NULL, "KG");
    bb_rec(&bb2, FP_KIND_PART_COUNT, 1, "O9", "9", NULL, NULL, NULL);
    s_add(b, &bb2);
    agg_flush(b, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(kb.n, 2);
    const cap_t *cc = s_find(&kb, 0, FP_CK_CONSUMPTION, "9", "M");
    const cap_t *co = s_find(&kb, 0, FP_CK_COMPLETION, "9", NULL);
    ASSERT(cc && co);
    ASSERT_EQ(cc->checkpoint_no, 5); /* restored 4, then one more */
    ASSERT_EQ(co->checkpoint_no, 4);
    ASSERT_STREQ(co->line, "L7"); /* from the operation's own pair */
    ASSERT_EQ(agg_stats(b)->keys, 2);

    /* random damage and random bytes */
    kv_t *all[8];
    size_t nall = 0;
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = m->b[i]; e; e = e->next)
            all[nall++] = e;
    for (int i = 0; i < 200000; i++) {
        kv_t *e = all[s_rng(&x) % nall];
        size_t kl = e->klen, sl = e->slen;
        if (s_rng(&x) % 4 == 0)
            sl = (size_t)(s_rng(&x) % 64);
        uint8_t *kk = malloc(kl), *ss = malloc(sl ? sl : 1); /* exact: ASan sees over-reads */
        memcpy(kk, e->k, kl);
        if (sl <= e->slen)
            memcpy(ss, e->s, sl);
        else
            for (size_t j = 0; j < sl; j++)
                ss[j] = (uint8_t)s_rng(&x);
        for (int flips = 1 + (int)(s_rng(&x) % 3); flips > 0; flips--) {
            if (s_rng(&x) % 3 == 0)
                kk[s_rng(&x) % kl] ^= (uint8_t)(1u << (s_rng(&x) % 8));
            else if (sl)
                ss[s_rng(&x) % sl] ^= (uint8_t)(1u << (s_rng(&x) % 8));
        }
        int rc = agg_import(b, kk, kl, ss, sl);
        ASSERT(rc == 0 || rc == -1);
        accepted += rc == 0;
        free(kk);
        free(ss);
    }
    /* whatever was accepted behaves: complete every key, flush, release */
    agg_flush(b, AGG_FLUSH_ALL, 2);
    agg_flush(b, AGG_FLUSH_ALL, 1000);
    kvmap_t *snap = calloc(1, sizeof *snap);
    kv_snapshot(snap, b);
    fprintf(stderr, "    %" PRIu64 " damaged pairs accepted, %zu keys held\n", accepted, snap->n);
    ASSERT(accepted > 0);
    /* what b holds exports and imports again */
    sink_t kc;
    agg_t *c = s_new(&kc, 1000, 10);
    kv_import_all(snap, c, &x);
    agg_destroy(&c);
    free(kc.ev);
    kv_clear(snap);
    free(snap);
    agg_destroy(&b);
    free(kb.ev);
    bb_free(&bb2);
    kv_clear(m);
    free(m);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

static double s_secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(test_growth_1m_keys)
{
    enum { N = 1000000, B = 1024 };
    sink_t k;
    agg_t *a = s_new(&k, 2 * N, 10);
    k.count_only = true;
    bb_t bb;
    bb_init(&bb, 1, 1);
    double t0 = s_secs();
    char op[16];
    for (int i = 0; i < N; i++) {
        snprintf(op, sizeof op, "op%d", i);
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", op, NULL, NULL, NULL);
        if (bb.n == B || i == N - 1)
            s_add(a, &bb);
    }
    const agg_stats_t *st = agg_stats(a);
    ASSERT_EQ(st->keys, N);
    ASSERT_EQ(st->open_operations, N);
    ASSERT_EQ(st->strings, N + 4);
    /* The same keys again: found, not created. */
    for (int i = 0; i < N; i += 7) {
        snprintf(op, sizeof op, "op%d", i);
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", op, NULL, NULL, NULL);
        if (bb.n == B)
            s_add(a, &bb);
    }
    s_add(a, &bb);
    ASSERT_EQ(st->keys, N);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, N);
    ASSERT_EQ(k.yield_sum, N + (N + 6) / 7);
    double t = s_secs() - t0;
    /* Printed, not asserted: speed belongs to the benchmarks (bench/, the
       agg_add micro benchmark), and this also runs under ASan on a shared
       machine. What the test asserts is that a million keys are all found
       and summed. */
    fprintf(stderr, "    1M keys: %.2f s with batch building and capture\n", t);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* Incremental growth: keys are created, found again and released while the
   table grows (old and new tables both in use). A key lost between the two
   would be created twice (keys too high) and split its sum; a released key
   left behind would keep keys too high too. */
TEST(test_growth_while_releasing)
{
    /* From OPEN on, every second new operation completes the oldest open
       one: the open set keeps growing (the table grows at 5,734 and 11,468
       keys) while closed operations are released every batch. */
    enum { N = 40000, OPEN = 3000, B = 64 };
    sink_t k;
    agg_t *a = s_new(&k, 1000000, 1);
    k.count_only = true;
    bb_t bb;
    bb_init(&bb, 1, 1);
    const agg_stats_t *st = agg_stats(a);
    char op[16];
    int64_t now = 1;
    uint64_t x = 12345, records = 0;
    int oldest = 0; /* operations below it are completed */
    for (int i = 0; i < N; i++) {
        snprintf(op, sizeof op, "op%d", i);
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", op, NULL, NULL, NULL);
        records++;
        if (i >= OPEN && i % 2 == 0) {
            snprintf(op, sizeof op, "op%d", oldest++);
            bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, "O1", op, NULL, NULL, NULL);
        }
        /* one more record for a random open operation: found, not created */
        snprintf(op, sizeof op, "op%d", oldest + (int)(s_rng(&x) % (uint64_t)(i - oldest + 1)));
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O1", op, NULL, NULL, NULL);
        records++;
        if (bb.n >= B) {
            s_add(a, &bb);
            agg_flush(a, AGG_FLUSH_LATE, now += 10); /* releases what closed before */
            uint64_t open = (uint64_t)(i + 1 - oldest);
            /* open ones plus those closed in this batch (grace 1 ns) */
            ASSERT(st->keys >= open && st->keys <= open + B);
            ASSERT_EQ(st->open_operations, open);
        }
    }
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, now += 10);
    agg_flush(a, AGG_FLUSH_LATE, now += 10);
    ASSERT_EQ(st->keys, (uint64_t)(N - oldest));
    ASSERT_EQ(st->released, (uint64_t)oldest);
    ASSERT(st->keys > 11468); /* it grew past the second growth */
    ASSERT_EQ(k.yield_sum, (int64_t)records); /* every record in exactly one checkpoint */
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* The batch string mapping (agg_add pass 0): more distinct strings than
   one lookup group, short and long (INTERN_SHORT and over) strings, strings
   already held by keys next to new ones, and new strings that only a
   refused record uses (interned for the batch, then released). */
TEST(test_many_and_long_strings)
{
    enum { N = 700, M = 140 }; /* orders, materials */
    sink_t k;
    agg_t *a = s_new(&k, 1000000, 10);
    bb_t bb;
    bb_init(&bb, 1, 1);
    static int64_t want[2 * N];
    char order[40], mat[40];
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: orders 0..N-1; pass 1: N/2..N/2+N-1 (half held, half new) */
        for (int j = 0; j < N; j++) {
            int i = pass * (N / 2) + j;
            snprintf(order, sizeof order, i % 3 ? "O%d" : "A-LONG-ORDER-NUMBER-%05d", i);
            int64_t q = i + 1 + pass;
            bb_rec(&bb, FP_KIND_PART_COUNT, q, order, "0010", NULL, NULL, NULL);
            want[i] += q;
            if (j % 5 == 0) {
                snprintf(mat, sizeof mat, "MATERIAL-WITH-LONG-NAME-%04d", (j / 5) % M);
                bb_rec(&bb, FP_KIND_MATERIAL, 1000, order, "0010", mat, "LOT-1", "KG");
            }
        }
        /* refused (bad kind), with strings nobody else uses */
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "ONLY-IN-A-REFUSED-RECORD-X", "0010", NULL, NULL,
               NULL)->kind = 0;
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "Z1", "0099", NULL, NULL, NULL)->str[FP_STR_LOT] = 65535;
        s_add(a, &bb);
        ASSERT_EQ(k.rejects, 2 * (pass + 1));
        /* P1 L1 S1 0010, the orders so far, materials, LOT-1, KG */
        ASSERT_EQ(agg_stats(a)->strings, 4 + N + pass * (N / 2) + M + 2);
    }
    agg_flush(a, AGG_FLUSH_ALL, 1);
    int seen = 0;
    for (size_t e = 0; e < k.n; e++) {
        const cap_t *c = &k.ev[e];
        if (c->kind != FP_CK_COMPLETION)
            continue;
        int i;
        ASSERT(sscanf(c->order[0] == 'O' ? c->order + 1 : c->order + 20, "%d", &i) == 1);
        ASSERT(i >= 0 && i < N + N / 2);
        ASSERT_STREQ(c->plant, "P1");
        ASSERT_STREQ(c->line, "L1");
        ASSERT_EQ(c->yield, want[i]);
        want[i] = -1; /* one checkpoint per operation */
        seen++;
    }
    ASSERT_EQ(seen, N + N / 2);
    ASSERT_EQ(s_count(&k, 0, FP_CK_CONSUMPTION, "0010"), 2 * (N / 5)); /* (order, material) */
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}


/* ---- posting periods (agg.h "Periods") ---- */

#define NS 1000000000ll

static int64_t s_utc(int y, int mo, int d, int h, int mi)
{
    return ((int64_t)fp_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60) * NS;
}

static void s_zone(const char *tz)
{
    ASSERT_EQ(setenv("TZ", tz, 1), 0);
    tzset();
}

static agg_t *s_new_periods(sink_t *k, int kind, const char *shifts, const char *closed,
                            int mode)
{
    memset(k, 0, sizeof *k);
    agg_config_t cfg = {.instance = "fp1", .closed_key_grace_ns = 1000, .max_open_keys = 1000};
    cfg.period.kind = kind;
    char err[128];
    if (shifts)
        ASSERT_EQ(fp_period_parse_shifts(shifts, &cfg.period, err, sizeof err), 0);
    if (closed) {
        cfg.closed_set = true;
        ASSERT_EQ(fp_period_parse_date(closed, &cfg.closed_before), 0);
        cfg.closed_mode = mode;
    }
    agg_t *a = agg_new(&cfg, s_on_emit, s_on_reject, k);
    ASSERT(a);
    return a;
}

/* A record at event time t. */
static fp_record_t *s_at(bb_t *bb, int kind, int64_t q, const char *order, const char *a,
                         int64_t t)
{
    fp_record_t *r = bb_rec(bb, kind, q, order, "10", a, kind == FP_KIND_MATERIAL ? "LOT" : NULL,
                            kind == FP_KIND_MATERIAL ? "KG" : NULL);
    r->time_ns = t;
    return r;
}

/* Every checkpoint lies in its period, and its period is [start, end). */
static void s_check_within(const sink_t *k)
{
    for (size_t i = 0; i < k->n; i++) {
        const cap_t *c = &k->ev[i];
        ASSERT(c->posting_date[0]);
        ASSERT(c->period_start < c->period_end);
        if (c->original_posting_date[0])
            continue; /* re-posted: its records lie in the original period */
        ASSERT(c->first_ns >= c->period_start && c->last_ns < c->period_end);
    }
}

static const cap_t *s_find_date(const sink_t *k, size_t from, int kind, const char *date)
{
    for (size_t i = from; i < k->n; i++)
        if (k->ev[i].kind == kind && strcmp(k->ev[i].posting_date, date) == 0)
            return &k->ev[i];
    return NULL;
}

/* One key with records on both sides of midnight: one checkpoint per
   period, each with its posting date, and distinct event ids. */
TEST(test_period_split_at_midnight)
{
    s_zone("UTC");
    sink_t k;
    agg_t *a = s_new_periods(&k, FP_PERIOD_DAY, NULL, NULL, 0);
    bb_t bb;
    bb_init(&bb, 1, 1);
    int64_t mid = s_utc(2026, 11, 24, 0, 0);
    s_at(&bb, FP_KIND_PART_COUNT, 5, "O1", NULL, mid - 1);
    s_at(&bb, FP_KIND_PART_COUNT, 7, "O1", NULL, mid);
    s_at(&bb, FP_KIND_SCRAP, 2, "O1", "DENT", mid - NS);
    s_at(&bb, FP_KIND_SCRAP, 3, "O1", "DENT", mid + NS);
    s_at(&bb, FP_KIND_MATERIAL, 100, "O1", "STEEL", mid - 60 * NS);
    s_at(&bb, FP_KIND_MATERIAL, 50, "O1", "STEEL", mid + 60 * NS);
    s_add(a, &bb);
    ASSERT_EQ(agg_stats(a)->keys, 6); /* 3 keys x 2 periods; the head is not a key */
    ASSERT_EQ(agg_stats(a)->open_operations, 1);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 6);
    s_check_within(&k);
    const cap_t *c1 = s_find_date(&k, 0, FP_CK_COMPLETION, "2026-11-23");
    const cap_t *c2 = s_find_date(&k, 0, FP_CK_COMPLETION, "2026-11-24");
    ASSERT(c1 && c2);
    ASSERT_EQ(c1->yield, 5);
    ASSERT_EQ(c1->scrap, 2);
    ASSERT_EQ(c2->yield, 7);
    ASSERT_EQ(c2->scrap, 3);
    ASSERT_STREQ(c1->period, "day");
    ASSERT_EQ(c1->period_end, mid);
    ASSERT_EQ(c2->period_start, mid);
    ASSERT_EQ(c1->checkpoint_no, 1);
    ASSERT_EQ(c2->checkpoint_no, 1);
    ASSERT(strcmp(c1->event_id, c2->event_id) != 0);
    ASSERT(!c1->backfill && !c2->backfill);
    ASSERT_EQ(s_find_date(&k, 0, FP_CK_SCRAP, "2026-11-23")->parts, 2);
    ASSERT_EQ(s_find_date(&k, 0, FP_CK_SCRAP, "2026-11-24")->parts, 3);
    ASSERT_EQ(s_find_date(&k, 0, FP_CK_CONSUMPTION, "2026-11-23")->quantity, 100);
    ASSERT_EQ(s_find_date(&k, 0, FP_CK_CONSUMPTION, "2026-11-24")->quantity, 50);
    /* both periods' completions carry the operation's line */
    ASSERT_STREQ(c2->line, "L1");
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* Europe/Berlin: the spring-forward day is one 23-hour period, the
   fall-back day's repeated hour two periods; shifts follow the local
   clock across both. */
TEST(test_period_dst_days)
{
    s_zone("Europe/Berlin");
    sink_t k;
    agg_t *a = s_new_periods(&k, FP_PERIOD_DAY, NULL, NULL, 0);
    bb_t bb;
    bb_init(&bb, 1, 1);
    /* 00:30 CET and 23:59 CEST on Mar 29: one day; 00:00 CEST Mar 30: the next */
    s_at(&bb, FP_KIND_PART_COUNT, 1, "O1", NULL, s_utc(2026, 3, 28, 23, 30));
    s_at(&bb, FP_KIND_PART_COUNT, 2, "O1", NULL, s_utc(2026, 3, 29, 21, 59));
    s_at(&bb, FP_KIND_PART_COUNT, 4, "O1", NULL, s_utc(2026, 3, 29, 22, 0));
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 2);
    s_check_within(&k);
    const cap_t *d = s_find_date(&k, 0, FP_CK_COMPLETION, "2026-03-29");
    ASSERT(d);
    ASSERT_EQ(d->yield, 3);
    ASSERT_EQ(d->period_end - d->period_start, 23 * 3600 * NS);
    ASSERT_EQ(s_find_date(&k, 0, FP_CK_COMPLETION, "2026-03-30")->yield, 4);
    agg_destroy(&a);
    free(k.ev);

    a = s_new_periods(&k, FP_PERIOD_HOUR, NULL, NULL, 0);
    /* 02:30 CEST (00:30Z) and 02:30 CET (01:30Z) on Oct 25 */
    s_at(&bb, FP_KIND_PART_COUNT, 1, "O1", NULL, s_utc(2026, 10, 25, 0, 30));
    s_at(&bb, FP_KIND_PART_COUNT, 2, "O1", NULL, s_utc(2026, 10, 25, 1, 30));
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 2);
    s_check_within(&k);
    ASSERT_STREQ(k.ev[0].period, "hour-02");
    ASSERT_STREQ(k.ev[1].period, "hour-02");
    ASSERT(k.ev[0].period_start != k.ev[1].period_start);
    ASSERT_EQ(k.ev[0].yield + k.ev[1].yield, 3);
    ASSERT(k.ev[0].yield == 1 || k.ev[0].yield == 2);
    agg_destroy(&a);
    free(k.ev);

    a = s_new_periods(&k, FP_PERIOD_SHIFT, "06:00,14:00,22:00", NULL, 0);
    /* the night shift into the fall-back morning: 22:00 CEST to 06:00 CET, 9 h */
    s_at(&bb, FP_KIND_PART_COUNT, 1, "O1", NULL, s_utc(2026, 10, 24, 20, 0));
    s_at(&bb, FP_KIND_PART_COUNT, 2, "O1", NULL, s_utc(2026, 10, 25, 4, 59));
    s_at(&bb, FP_KIND_PART_COUNT, 4, "O1", NULL, s_utc(2026, 10, 25, 5, 0));
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 2);
    s_check_within(&k);
    const cap_t *n3 = s_find_date(&k, 0, FP_CK_COMPLETION, "2026-10-24");
    const cap_t *m1 = s_find_date(&k, 0, FP_CK_COMPLETION, "2026-10-25");
    ASSERT(n3 && m1);
    ASSERT_STREQ(n3->period, "shift-3");
    ASSERT_EQ(n3->yield, 3);
    ASSERT_EQ(n3->period_end - n3->period_start, 9 * 3600 * NS);
    ASSERT_STREQ(m1->period, "shift-1");
    ASSERT_EQ(m1->yield, 4);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* Backfill: records of a period that a posting flush closed become
   checkpoints of their own period marked backfill, never mixed with the
   live period's; the mark survives a restart; OperationCompleted still
   closes the operation across its periods. */
TEST(test_backfill_marking)
{
    s_zone("UTC");
    sink_t k;
    agg_t *a = s_new_periods(&k, FP_PERIOD_DAY, NULL, NULL, 0);
    kvmap_t *m = calloc(1, sizeof *m);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0); /* tracking on */
    bb_t bb;
    bb_init(&bb, 1, 1);
    int64_t d1 = s_utc(2026, 11, 23, 0, 0), d2 = d1 + 86400 * NS;
    s_at(&bb, FP_KIND_PART_COUNT, 1, "O1", NULL, d1 + 22 * 3600 * NS);
    s_add(a, &bb);
    agg_watermark(a, d1 + 22 * 3600 * NS);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 1);
    ASSERT(!k.ev[0].backfill);
    /* the watermark passes midnight; a late record of day 1 before the
       closing flush is not backfill: day 1 was not flushed yet */
    agg_watermark(a, d2 + 3600 * NS);
    s_at(&bb, FP_KIND_PART_COUNT, 2, "O1", NULL, d2 + 3600 * NS);
    s_at(&bb, FP_KIND_PART_COUNT, 4, "O1", NULL, d1 + 23 * 3600 * NS);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 2);
    ASSERT_EQ(k.n, 3);
    for (size_t i = 1; i < 3; i++)
        ASSERT(!k.ev[i].backfill);
    ASSERT_EQ(s_find_date(&k, 1, FP_CK_COMPLETION, "2026-11-23")->yield, 4);
    /* after the closing flush: day 1's records are backfill, in their own
       checkpoint; day 2's are live */
    s_at(&bb, FP_KIND_PART_COUNT, 8, "O1", NULL, d1 + 23 * 3600 * NS + 30 * 60 * NS);
    s_at(&bb, FP_KIND_PART_COUNT, 16, "O1", NULL, d2 + 2 * 3600 * NS);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 3);
    ASSERT_EQ(k.n, 5);
    const cap_t *b1 = s_find_date(&k, 3, FP_CK_COMPLETION, "2026-11-23");
    const cap_t *l2 = s_find_date(&k, 3, FP_CK_COMPLETION, "2026-11-24");
    ASSERT(b1 && l2);
    ASSERT(b1->backfill);
    ASSERT_EQ(b1->yield, 8);
    ASSERT_EQ(b1->record_count, 1);
    ASSERT_EQ(b1->checkpoint_no, 3);
    ASSERT(!l2->backfill);
    ASSERT_EQ(l2->yield, 16);
    ASSERT_EQ(agg_stats(a)->backfill_events, 1);
    s_check_within(&k);

    /* restart: flushed_through comes back with the shards' own key */
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    sink_t kb;
    agg_t *b = s_new_periods(&kb, FP_PERIOD_DAY, NULL, NULL, 0);
    ASSERT_EQ(kv_import_all_rc(m, b), 0);
    agg_flush(b, AGG_FLUSH_LATE, 4);
    s_at(&bb, FP_KIND_PART_COUNT, 32, "O1", NULL, d1 + 23 * 3600 * NS + 45 * 60 * NS);
    s_at(&bb, FP_KIND_OP_STARTED, 0, "O1", NULL, d2 + 3 * 3600 * NS);
    /* the completion in day 2 flushes day 1's backfill at once */
    s_at(&bb, FP_KIND_OP_COMPLETED, 0, "O1", NULL, d2 + 4 * 3600 * NS);
    s_add(b, &bb);
    ASSERT_EQ(kb.n, 2);
    const cap_t *f = s_find_date(&kb, 0, FP_CK_COMPLETION, "2026-11-24");
    const cap_t *bb1 = s_find_date(&kb, 0, FP_CK_COMPLETION, "2026-11-23");
    ASSERT(f && bb1);
    ASSERT(f->final && !f->backfill);
    ASSERT_EQ(f->record_count, 2);
    ASSERT_EQ(f->checkpoint_no, 3);
    ASSERT(!bb1->final && bb1->backfill);
    ASSERT_EQ(bb1->yield, 32);
    ASSERT_EQ(bb1->checkpoint_no, 4);
    /* later: a late correction of day 1, backfill and late */
    s_at(&bb, FP_KIND_PART_COUNT, 64, "O1", NULL, d1 + 3600 * NS);
    s_add(b, &bb);
    agg_flush(b, AGG_FLUSH_LATE, 5);
    ASSERT_EQ(kb.n, 3);
    ASSERT(kb.ev[2].late && kb.ev[2].backfill);
    ASSERT_EQ(kb.ev[2].yield, 64);
    agg_destroy(&b);
    free(kb.ev);
    kv_clear(m);
    free(m);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* closed_before: re-posted to the first open period with the original
   kept, or refused period_closed. */
TEST(test_closed_periods)
{
    s_zone("Europe/Berlin");
    sink_t k;
    agg_t *a = s_new_periods(&k, FP_PERIOD_DAY, NULL, "2026-11-01", AGG_CLOSED_REPOST);
    bb_t bb;
    bb_init(&bb, 1, 1);
    int64_t oct30 = s_utc(2026, 10, 30, 10, 0), nov2 = s_utc(2026, 11, 2, 10, 0);
    s_at(&bb, FP_KIND_PART_COUNT, 3, "O1", NULL, oct30);
    s_at(&bb, FP_KIND_PART_COUNT, 5, "O1", NULL, nov2);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 2);
    const cap_t *re = s_find_date(&k, 0, FP_CK_COMPLETION, "2026-11-01");
    ASSERT(re);
    ASSERT_EQ(re->yield, 3);
    ASSERT(re->backfill);
    ASSERT_STREQ(re->original_posting_date, "2026-10-30");
    ASSERT_EQ(re->original_period_start, s_utc(2026, 10, 29, 23, 0));
    ASSERT_EQ(re->period_start, s_utc(2026, 10, 31, 23, 0)); /* Nov 1, 00:00 CET */
    const cap_t *open = s_find_date(&k, 0, FP_CK_COMPLETION, "2026-11-02");
    ASSERT(open && !open->backfill && !open->original_posting_date[0]);
    ASSERT_EQ(open->yield, 5);
    agg_destroy(&a);
    free(k.ev);

    a = s_new_periods(&k, FP_PERIOD_DAY, NULL, "2026-11-01", AGG_CLOSED_REFUSE);
    s_at(&bb, FP_KIND_PART_COUNT, 3, "O1", NULL, oct30);
    s_at(&bb, FP_KIND_PART_COUNT, 5, "O1", NULL, nov2);
    s_at(&bb, FP_KIND_PART_COUNT, 7, "O1", NULL, s_utc(2026, 10, 31, 22, 59)); /* Oct 31 23:59 */
    s_add(a, &bb);
    ASSERT_EQ(k.rejects, 2);
    ASSERT_STREQ(k.last_reason, "period_closed");
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 1);
    ASSERT_EQ(k.ev[0].yield, 5);
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* An OperationStarted alone in one period goes with the operation's next
   completion in another period (so what waits stays what truth.c models). */
TEST(test_zero_completion_goes_with_the_next_period)
{
    s_zone("UTC");
    sink_t k;
    agg_t *a = s_new_periods(&k, FP_PERIOD_HOUR, NULL, NULL, 0);
    bb_t bb;
    bb_init(&bb, 1, 1);
    int64_t h = s_utc(2026, 11, 23, 10, 0);
    s_at(&bb, FP_KIND_OP_STARTED, 0, "O1", NULL, h - NS);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 0); /* waits */
    s_at(&bb, FP_KIND_MATERIAL, 10, "O1", "STEEL", h + NS);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 2);
    ASSERT_EQ(k.n, 1); /* a consumption does not wake it */
    s_at(&bb, FP_KIND_PART_COUNT, 4, "O1", NULL, h + 2 * NS);
    s_add(a, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 3);
    ASSERT_EQ(k.n, 3);
    const cap_t *z = NULL, *y = NULL;
    for (size_t i = 1; i < 3; i++)
        if (k.ev[i].kind == FP_CK_COMPLETION && k.ev[i].yield == 0)
            z = &k.ev[i];
        else if (k.ev[i].kind == FP_CK_COMPLETION)
            y = &k.ev[i];
    ASSERT(z && y);
    ASSERT_EQ(z->record_count, 1);
    ASSERT_STREQ(z->period, "hour-09");
    ASSERT_EQ(y->yield, 4);
    ASSERT_STREQ(y->period, "hour-10");
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

/* The pending part of a completion's state bytes (agg.h, versions 1 and
   2 alike): checkpoint_no, one record of yield 5 at t (source 3, epoch 1,
   seq 7). */
static size_t s_put_pending(uint8_t *st, uint64_t checkpoint_no, int64_t t)
{
    size_t n = 0;
    n += fp_varint_put(st + n, checkpoint_no);
    n += fp_varint_put(st + n, 1);
    n += fp_varint_put(st + n, fp_zigzag(5));
    n += fp_varint_put(st + n, fp_zigzag(0));
    n += fp_varint_put(st + n, fp_zigzag(t));
    n += fp_varint_put(st + n, 0);
    st[n++] = 1;
    n += fp_varint_put(st + n, 3);
    n += fp_varint_put(st + n, 1);
    n += fp_varint_put(st + n, 7);
    n += fp_varint_put(st + n, 0);
    return n;
}

/* A version-1 state (before periods) read by an agg_t with periods: its
   pending delta lands in the period of its first record, and the first
   export replaces the version-1 key by version-2 keys. */
TEST(test_upgrade_v1_pairs_to_periods)
{
    s_zone("UTC");
    sink_t k;
    agg_t *a = s_new_periods(&k, FP_PERIOD_DAY, NULL, NULL, 0);
    /* v1 completion P1/O9/9: checkpoint_no 2, 1 record pending (yield 5 at
       t, source 3 epoch 1 seq 7), line L7, open */
    int64_t t = s_utc(2026, 11, 23, 12, 0);
    uint8_t key[] = {1, FP_CK_COMPLETION, 2, 'P', '1', 2, 'O', '9', 1, '9'};
    uint8_t st[64];
    size_t n = 0;
    st[n++] = 1;
    st[n++] = 0;
    n += s_put_pending(st + n, 2, t);
    st[n++] = 2;
    st[n++] = 'L';
    st[n++] = '7';
    st[n++] = 0;
    /* a v1 scrap key with nothing pending: dropped with periods */
    uint8_t skey[] = {1, FP_CK_SCRAP, 2, 'P', '1', 2, 'O', '9', 1, '9', 1, 'D'};
    uint8_t sst[] = {1, 0, 4, 0};
    ASSERT_EQ(agg_import(a, skey, sizeof skey, sst, sizeof sst), 0);
    ASSERT_EQ(agg_import(a, key, sizeof key, st, n), 0);
    ASSERT_EQ(agg_stats(a)->upgraded, 2);
    ASSERT_EQ(agg_stats(a)->keys, 1);
    kvmap_t *m = calloc(1, sizeof *m);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    ASSERT_EQ(m->dels, 2); /* both version-1 keys */
    ASSERT_EQ(m->puts, 2); /* the head and the completion of Nov 23 */
    for (int i = 0; i < KV_BUCKETS; i++)
        for (kv_t *e = m->b[i]; e; e = e->next)
            ASSERT_EQ(e->k[0], 2);
    agg_flush(a, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(k.n, 1);
    ASSERT_EQ(k.ev[0].yield, 5);
    ASSERT_EQ(k.ev[0].checkpoint_no, 3);
    ASSERT_STREQ(k.ev[0].posting_date, "2026-11-23");
    ASSERT_STREQ(k.ev[0].line, "L7");
    ASSERT_EQ(k.ev[0].lineage[0].first_seq, 7);
    /* what the export holds imports again, version 2 only */
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    sink_t kb;
    agg_t *b = s_new_periods(&kb, FP_PERIOD_DAY, NULL, NULL, 0);
    ASSERT_EQ(kv_import_all_rc(m, b), 0);
    ASSERT_EQ(agg_stats(b)->upgraded, 0);
    ASSERT_EQ(agg_stats(b)->keys, 1);
    agg_destroy(&b);
    free(kb.ev);
    kv_clear(m);
    free(m);
    agg_destroy(&a);
    free(k.ev);
}

/* A v2 completion key P1/O9/9 of period id pid, pending yield 5 of one
   record at t (fuzz_agg's findings, in their essence). */
static size_t s_v2_completion(uint64_t pid, int64_t t, uint8_t *key, size_t *klen, uint8_t *st)
{
    static const uint8_t head[] = {2, FP_CK_COMPLETION, 2, 'P', '1', 2, 'O', '9', 1, '9'};
    memcpy(key, head, sizeof head);
    *klen = sizeof head + fp_varint_put(key + sizeof head, pid);
    size_t n = 0;
    st[n++] = 2;
    st[n++] = 0;
    return n + s_put_pending(st + n, 0, t);
}

/* fuzz/regressions/agg/period0_with_periods_on: keys made with periods
   off (period id 0) restored after [aggregate] periods were switched on
   post by the period of their first record (the id arithmetic overflowed
   on id 0: undefined behaviour, a wrong period); a period id at either end
   of int64 time restores and emits; ids no int64 time has are refused. */
TEST(test_restore_across_a_periods_switch_and_edge_ids)
{
    s_zone("UTC");
    int64_t t = s_utc(2026, 11, 23, 12, 0);
    sink_t k;
    agg_t *a = s_new_periods(&k, FP_PERIOD_NONE, NULL, NULL, 0);
    bb_t bb;
    bb_init(&bb, 3, 1);
    s_at(&bb, FP_KIND_PART_COUNT, 5, "O9", NULL, t);
    kvmap_t *m = calloc(1, sizeof *m);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    s_add(a, &bb);
    ASSERT_EQ(agg_export_dirty(a, kv_cb, m), 0);
    sink_t kb;
    agg_t *b = s_new_periods(&kb, FP_PERIOD_DAY, NULL, NULL, 0);
    ASSERT_EQ(kv_import_all_rc(m, b), 0);
    agg_flush(b, AGG_FLUSH_LATE, 1);
    agg_flush(b, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(kb.n, 1);
    ASSERT_EQ(kb.ev[0].yield, 5);
    ASSERT_STREQ(kb.ev[0].posting_date, "2026-11-23");
    s_check_within(&kb);
    agg_destroy(&b);
    free(kb.ev);

    /* the last minute of int64 ns time, and one past either end */
    const uint64_t bias = 1u << 29;
    const int64_t mmax = INT64_MAX / 60000000000ll, mmin = INT64_MIN / 60000000000ll - 1;
    uint8_t key[32], st[64];
    size_t klen, n = s_v2_completion(bias + (uint64_t)mmax, INT64_MAX - 10, key, &klen, st);
    b = s_new_periods(&kb, FP_PERIOD_DAY, NULL, NULL, 0);
    ASSERT_EQ(agg_import(b, key, klen, st, n), 0);
    agg_flush(b, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(kb.n, 1);
    ASSERT_STREQ(kb.ev[0].posting_date, "2116-02-20"); /* period.h clamps times to 2116 */
    agg_destroy(&b);
    free(kb.ev);
    b = s_new_periods(&kb, FP_PERIOD_DAY, NULL, NULL, 0);
    uint64_t bad[] = {bias + (uint64_t)mmax + 1, bias - (uint64_t)(-mmin) - 1, 2 * bias - 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = s_v2_completion(bad[i], t, key, &klen, st);
        ASSERT_EQ(agg_import(b, key, klen, st, n), -1);
    }
    n = s_v2_completion(bias - (uint64_t)(-(mmin + 1)), INT64_MIN + 10, key, &klen, st);
    ASSERT_EQ(agg_import(b, key, klen, st, n), 0); /* the first minute of int64 time */
    agg_flush(b, AGG_FLUSH_ALL, 1);
    ASSERT_EQ(kb.n, 1);
    ASSERT_STREQ(kb.ev[0].posting_date, "1823-11-12"); /* ... and from 1823 */
    agg_destroy(&b);
    free(kb.ev);
    kv_clear(m);
    free(m);
    bb_free(&bb);
    agg_destroy(&a);
    free(k.ev);
}

/* Adds bb's records to a and to b, then clears bb. */
static void s_add2(agg_t *a, agg_t *b, bb_t *bb)
{
    fp_batch_hdr_t *h = bb_build(bb);
    agg_add(a, h);
    agg_add(b, h);
    free(h);
    bb_clear(bb);
}

/* The records of one closed operation O1/10 and an open one O2/20. */
static void s_closed_op_records(bb_t *bb)
{
    bb_rec(bb, FP_KIND_OP_STARTED, 0, "O1", "10", NULL, NULL, NULL);
    bb_rec(bb, FP_KIND_PART_COUNT, 5, "O1", "10", NULL, NULL, NULL);
    bb_rec(bb, FP_KIND_MATERIAL, 1500, "O1", "10", "STEEL", "LOT1", "KG");
    bb_rec(bb, FP_KIND_SCRAP, 2, "O1", "10", "DENT", NULL, NULL);
    bb_rec(bb, FP_KIND_OP_COMPLETED, 0, "O1", "10", NULL, NULL, NULL);
    bb_rec(bb, FP_KIND_PART_COUNT, 1, "O2", "20", NULL, NULL, NULL);
}

/* Late corrections for O1/10: its three keys and a new consumption key. */
static void s_late_records(bb_t *bb)
{
    bb_rec(bb, FP_KIND_PART_COUNT, 2, "O1", "10", NULL, NULL, NULL);
    bb_rec(bb, FP_KIND_MATERIAL, 100, "O1", "10", "STEEL", "LOT1", "KG");
    bb_rec(bb, FP_KIND_SCRAP, 1, "O1", "10", "DENT", NULL, NULL);
    bb_rec(bb, FP_KIND_MATERIAL, 7, "O1", "10", "STEEL", "LOT2", "KG");
}

/* A compacting agg_t a that never exports (no_export) and its reference
   b, which tracks changes and is never exported, so its keys stay marked
   and are never compacted (the old behaviour); *m receives b's first
   export (clear and free it). Grace 10000. */
static void s_new_pair(sink_t *ka, agg_t **a, sink_t *kb, agg_t **b, uint64_t max_keys,
                       kvmap_t **m)
{
    agg_config_t cfg = {.instance = "fp1", .closed_key_grace_ns = 10000,
                        .max_open_keys = max_keys, .no_export = true};
    memset(ka, 0, sizeof *ka);
    *a = agg_new(&cfg, s_on_emit, s_on_reject, ka);
    *b = s_new(kb, max_keys, 10000);
    ASSERT(*a);
    *m = calloc(1, sizeof **m);
    ASSERT(*m);
    ASSERT_EQ(agg_export_dirty(*b, kv_cb, *m), 0); /* b tracks from now on */
}

static void s_free_pair(sink_t *ka, agg_t **a, sink_t *kb, agg_t **b, kvmap_t *m, bb_t *bb)
{
    kv_clear(m);
    free(m);
    agg_destroy(a);
    agg_destroy(b);
    bb_free(bb);
    free(ka->ev);
    free(kb->ev);
}

/* A closed operation at rest is compacted (its strings freed); a late
   correction for it gives the checkpoints a never-compacting agg_t gives
   (event_id, checkpoint_no, late, line), and release after grace still
   happens (b: s_new_pair's reference). */
TEST(test_compacted_late_correction)
{
    sink_t ka, kb;
    agg_t *a, *b;
    kvmap_t *m;
    s_new_pair(&ka, &a, &kb, &b, 1000, &m);
    bb_t bb;
    bb_init(&bb, 1, 1);
    s_closed_op_records(&bb);
    s_add2(a, b, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 1000);
    agg_flush(b, AGG_FLUSH_ALL, 1000);
    s_same_events(&ka, &kb);
    const agg_stats_t *sa = agg_stats(a), *sb = agg_stats(b);
    ASSERT_EQ(sa->compact_keys, 3); /* O1/10's completion, consumption, scrap */
    ASSERT_EQ(sb->compact_keys, 0);
    ASSERT_EQ(sa->keys, 4);
    ASSERT_EQ(sb->keys, 4);
    ASSERT_EQ(sa->closed_operations, 1);
    /* O1, 10, STEEL, LOT1, KG, DENT are gone; plant, line, station, O2, 20 stay */
    ASSERT_EQ(sb->strings - sa->strings, 6);

    s_late_records(&bb);
    s_add2(a, b, &bb);
    ASSERT_EQ(sa->compact_keys, 0); /* all three came back, one new key */
    ASSERT_EQ(sa->keys, 5);
    agg_flush(a, AGG_FLUSH_LATE, 2000);
    agg_flush(b, AGG_FLUSH_LATE, 2000);
    ASSERT_EQ(ka.n, 4);
    const cap_t *c = s_find(&ka, 0, FP_CK_COMPLETION, "10", NULL);
    ASSERT(c && c->late && c->checkpoint_no == 2 && c->yield == 2 && c->scrap == 1);
    ASSERT_STREQ(c->line, bb.line);
    c = s_find(&ka, 0, FP_CK_CONSUMPTION, "10", "STEEL");
    ASSERT(c && c->late);
    ASSERT_EQ(c->checkpoint_no, strcmp(c->lot, "LOT1") == 0 ? 2 : 1);
    s_same_events(&ka, &kb); /* event ids too */
    ASSERT_EQ(sa->compact_keys, 4); /* at rest again */

    /* the grace passes: released in both, nothing of O1 left */
    agg_flush(a, AGG_FLUSH_LATE, 20000);
    agg_flush(b, AGG_FLUSH_LATE, 20000);
    ASSERT_EQ(sa->released, 1);
    ASSERT_EQ(sb->released, 1);
    ASSERT_EQ(sa->compact_keys, 0);
    ASSERT_EQ(sa->keys, 1);
    ASSERT_EQ(sb->keys, 1);
    ASSERT_EQ(sa->strings, sb->strings);
    ASSERT_EQ(sa->closed_operations, 0);

    /* reopened: counts from 1 again, not late */
    bb_rec(&bb, FP_KIND_PART_COUNT, 3, "O1", "10", NULL, NULL, NULL);
    s_add2(a, b, &bb);
    agg_flush(a, AGG_FLUSH_ALL, 21000);
    agg_flush(b, AGG_FLUSH_ALL, 21000);
    c = s_find(&ka, 0, FP_CK_COMPLETION, "10", NULL);
    ASSERT(c && !c->late && c->checkpoint_no == 1);
    s_same_events(&ka, &kb);
    s_free_pair(&ka, &a, &kb, &b, m, &bb);
}

/* Compacted keys export as the full ones did (same bytes), a restart from
   them is exact, and their release exports their deletions. */
TEST(test_compacted_export_import)
{
    sink_t kc, kd;
    agg_t *c = s_new(&kc, 1000, 10000);
    kvmap_t *st = calloc(1, sizeof *st), *st2 = calloc(1, sizeof *st2),
            *m0 = calloc(1, sizeof *m0), *m1 = calloc(1, sizeof *m1);
    ASSERT(st && st2 && m0 && m1);
    ASSERT_EQ(agg_export_dirty(c, kv_cb, st), 0); /* tracking from the start */
    bb_t bb;
    bb_init(&bb, 1, 1);
    s_closed_op_records(&bb);
    s_add(c, &bb);
    agg_flush(c, AGG_FLUSH_ALL, 1000);
    ASSERT_EQ(agg_export_dirty(c, kv_cb, st), 0);
    ASSERT_EQ(agg_stats(c)->compact_keys, 0); /* were marked at the flush */
    kv_snapshot(m0, c);
    uint64_t puts = st->puts;
    agg_flush(c, AGG_FLUSH_LATE, 2000);
    ASSERT_EQ(agg_stats(c)->compact_keys, 3);
    ASSERT_EQ(agg_export_dirty(c, kv_cb, st), 0);
    ASSERT_EQ(st->puts, puts); /* compaction changes nothing stored */
    kv_snapshot(m1, c);
    kv_assert_equal(m0, m1);
    kv_assert_equal(st, m1);
    /* the first export of an agg_t that compacted before it exported */
    sink_t ke;
    agg_t *e = s_new(&ke, 1000, 10000);
    s_closed_op_records(&bb);
    s_add(e, &bb);
    agg_flush(e, AGG_FLUSH_ALL, 1000);
    ASSERT_EQ(agg_stats(e)->compact_keys, 3);
    kvmap_t *me = calloc(1, sizeof *me);
    ASSERT(me);
    ASSERT_EQ(agg_export_dirty(e, kv_cb, me), 0);
    kv_assert_equal(me, m1);
    kv_clear(me);
    free(me);
    agg_destroy(&e);
    free(ke.ev);

    /* restart from the store: compacted at its first flush */
    kv_copy(st2, st);
    agg_t *d = s_new(&kd, 1000, 10000);
    uint64_t x = 7;
    kv_import_all(st2, d, &x);
    agg_flush(d, AGG_FLUSH_LATE, 2000);
    ASSERT_EQ(agg_stats(d)->compact_keys, 3);
    ASSERT_EQ(agg_stats(d)->keys, agg_stats(c)->keys);
    kc.n = 0;
    int64_t now = 3000;
    for (int round = 0; round < 3; round++, now += 1000) {
        if (round == 0) {
            s_late_records(&bb);
            s_add2(c, d, &bb);
        }
        agg_flush(c, AGG_FLUSH_LATE, now);
        agg_flush(d, AGG_FLUSH_LATE, now);
        ASSERT_EQ(agg_export_dirty(c, kv_cb, st), 0);
        ASSERT_EQ(agg_export_dirty(d, kv_cb, st2), 0);
        s_same_events(&kc, &kd);
        kv_assert_equal(st, st2);
    }
    ASSERT_EQ(agg_stats(c)->compact_keys, 4);
    ASSERT_EQ(agg_stats(d)->compact_keys, 4);
    kv_snapshot(m1, d);
    kv_assert_equal(st2, m1);
    /* released: deletions of every key of O1, compacted or not */
    agg_flush(c, AGG_FLUSH_LATE, 20000);
    agg_flush(d, AGG_FLUSH_LATE, 20000);
    ASSERT_EQ(agg_export_dirty(c, kv_cb, st), 0);
    ASSERT_EQ(agg_export_dirty(d, kv_cb, st2), 0);
    ASSERT_EQ(agg_stats(c)->released, 1);
    ASSERT_EQ(st->n, 2); /* O2/20's head and completion */
    kv_assert_equal(st, st2);
    kv_clear(st);
    kv_clear(st2);
    kv_clear(m0);
    kv_clear(m1);
    free(st);
    free(st2);
    free(m0);
    free(m1);
    agg_destroy(&c);
    agg_destroy(&d);
    bb_free(&bb);
    free(kc.ev);
    free(kd.ev);
}

/* Bounded flushes (agg.h): one flush compacts about AGG_FLUSH_WORK keys
   at most, agg_work the rest, a slice at a time between batches, and the
   release after grace goes the same way; every checkpoint (late corrections of
   keys compacted and of keys not yet compacted, their release, a reopen)
   is what an agg_t that never compacts emits (b: s_new_pair's). */
TEST(test_bounded_flush_work)
{
    enum { NOPS = 1000 };
    sink_t ka, kb;
    agg_t *a, *b;
    kvmap_t *m;
    s_new_pair(&ka, &a, &kb, &b, 100000, &m);
    bb_t bb;
    bb_init(&bb, 1, 1);
    char o[16];
    for (int i = 0; i < NOPS; i++) { /* 3 keys and a head each, closed */
        snprintf(o, sizeof o, "O%d", i);
        bb_rec(&bb, FP_KIND_PART_COUNT, 5, o, "10", NULL, NULL, NULL);
        bb_rec(&bb, FP_KIND_MATERIAL, 1500, o, "10", "STEEL", "LOT1", "KG");
        bb_rec(&bb, FP_KIND_SCRAP, 2, o, "10", "DENT", NULL, NULL);
        bb_rec(&bb, FP_KIND_OP_COMPLETED, 0, o, "10", NULL, NULL, NULL);
        if (bb.n >= 256)
            s_add2(a, b, &bb);
    }
    s_add2(a, b, &bb);
    const agg_stats_t *sa = agg_stats(a), *sb = agg_stats(b);
    ASSERT_EQ(sa->compact_keys, 0); /* not before a flush */
    agg_flush(a, AGG_FLUSH_LATE, 1000);
    agg_flush(b, AGG_FLUSH_LATE, 1000);
    /* 4 keys of work per operation (the head counts), whole operations */
    uint64_t c = sa->compact_keys;
    ASSERT(c >= 3 * (AGG_FLUSH_WORK / 4) && c <= 3 * (AGG_FLUSH_WORK / 4 + 1));
    /* A late correction for O0 (compacted) and for O999 (not yet). */
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O0", "10", NULL, NULL, NULL);
    bb_rec(&bb, FP_KIND_PART_COUNT, 1, "O999", "10", NULL, NULL, NULL);
    s_add2(a, b, &bb); /* O0's completion comes back, O999 waits */
    /* Slices of 32 keys of work between batches: 8 operations each. */
    int slices = 0;
    ASSERT(agg_work(a, 0)); /* some is left; a budget of 0 does none */
    for (;;) {
        uint64_t before = sa->compact_keys;
        bool left = agg_work(a, 32);
        (void)agg_work(b, 32);
        slices++;
        ASSERT(sa->compact_keys - before <= 3 * (32 / 4 + 1));
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "X", "10", NULL, NULL, NULL);
        s_add2(a, b, &bb);
        if (!left)
            break;
        ASSERT(slices < 1000);
    }
    ASSERT(!agg_work(a, 32)); /* nothing left: no-op */
    /* All but O0's and O999's keys (marked: at the next flush) are compacted. */
    ASSERT(slices > 10);
    ASSERT_EQ(sa->compact_keys, 3 * NOPS - 1 - 3);
    agg_flush(a, AGG_FLUSH_LATE, 2000);
    agg_flush(b, AGG_FLUSH_LATE, 2000);
    ASSERT_EQ(sa->compact_keys, 3 * NOPS); /* the two after their corrections */
    ASSERT_EQ(sa->keys, sb->keys);
    s_same_events(&ka, &kb);

    /* The grace passes: a flush releases a share, the batches the rest. */
    agg_flush(a, AGG_FLUSH_LATE, 20000);
    agg_flush(b, AGG_FLUSH_LATE, 20000);
    ASSERT(sa->released >= AGG_FLUSH_WORK / 4 && sa->released <= AGG_FLUSH_WORK / 4 + 1);
    ASSERT(sb->released < NOPS); /* b's full operations count alike */
    slices = 0;
    while ((sa->released < NOPS || sb->released < NOPS) && slices < 1000) {
        uint64_t before = sa->released;
        agg_work(a, 32);
        agg_work(b, 32);
        bb_rec(&bb, FP_KIND_PART_COUNT, 1, "X", "10", NULL, NULL, NULL);
        s_add2(a, b, &bb);
        slices++;
        if (before < NOPS)
            ASSERT(sa->released > before && sa->released - before <= 32 / 4 + 1);
    }
    ASSERT_EQ(sa->released, NOPS);
    ASSERT_EQ(sb->released, NOPS);
    ASSERT(slices > 10);
    ASSERT(!agg_work(a, 32) && !agg_work(b, 32));
    ASSERT_EQ(sa->keys, sb->keys);
    ASSERT_EQ(sa->keys, 1); /* X's completion */
    ASSERT_EQ(sa->strings, sb->strings);
    agg_flush(a, AGG_FLUSH_ALL, 21000);
    agg_flush(b, AGG_FLUSH_ALL, 21000);
    s_same_events(&ka, &kb);
    s_free_pair(&ka, &a, &kb, &b, m, &bb);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_arithmetic);
    RUN(test_pending);
    RUN(test_completed_flushes_its_operation_only);
    RUN(test_partial_flush_and_zero_delta_wait);
    RUN(test_late_corrections);
    RUN(test_overflow);
    RUN(test_too_many_keys);
    RUN(test_release_after_grace);
    RUN(test_lineage);
    RUN(test_event_id_determinism);
    RUN(test_invalid_records);
    RUN(test_many_and_long_strings);
    RUN(test_period_split_at_midnight);
    RUN(test_period_dst_days);
    RUN(test_backfill_marking);
    RUN(test_closed_periods);
    RUN(test_zero_completion_goes_with_the_next_period);
    RUN(test_upgrade_v1_pairs_to_periods);
    RUN(test_restore_across_a_periods_switch_and_edge_ids);
    RUN(test_model_random);
    RUN(test_key_format_and_shard);
    RUN(test_export_dirty_and_release);
    RUN(test_no_tracking_without_export);
    RUN(test_import_malformed);
    RUN(test_restart_exact);
    RUN(test_truth_of_crashgen);
    RUN(test_growth_1m_keys);
    RUN(test_growth_while_releasing);
    RUN(test_compacted_late_correction);
    RUN(test_compacted_export_import);
    RUN(test_bounded_flush_work);
    return test_done();
}
