/*  test_agg.c - aggregation semantics (agg.h): arithmetic per kind,
    OperationCompleted, partial and late flushes, refusals, release, event ids,
    lineage, and a randomized model check of the delta invariant. */
#include "agg.h"

#include <stdbool.h>
#include <time.h>
#include <xxhash.h>

#include "test.h"

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
} cap_t;

typedef struct {
    cap_t *ev;
    size_t n, cap;
    bool count_only; /* count events and sum yields, keep nothing */
    int64_t yield_sum;
    int rejects;
    char last_reason[32];
    uint64_t last_reject_seq;
} sink_t;

static void s_copy(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "");
}

static void s_on_emit(void *ctx, const fp_checkpoint_t *ck)
{
    sink_t *k = ctx;
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

    /* Everything released after grace: no keys, no strings. */
    agg_flush(a, AGG_FLUSH_LATE, now + 1000);
    ASSERT_EQ(st->keys, 0);
    ASSERT_EQ(st->strings, 0);

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
    fprintf(stderr, "    1M keys: %.2f s with batch building and capture\n", t);
    ASSERT(t < 10.0); /* generous: also runs under ASan */
    agg_destroy(&a);
    bb_free(&bb);
    free(k.ev);
}

int main(void)
{
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
    RUN(test_model_random);
    RUN(test_growth_1m_keys);
    return 0;
}
