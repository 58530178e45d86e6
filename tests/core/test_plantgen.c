/*  test_plantgen.c - the plant model: deterministic per seed, seqs per
    source 1.. contiguous, every operation starts, gets its quantity records
    and completes, the mix is as asked, the strings look as documented. */
#include "plantgen.h"

#include <ctype.h>

#include "test.h"

#define START_NS 1763900000000000000LL

static plantgen_params_t s_params(void)
{
    plantgen_params_t p;
    plantgen_defaults(&p);
    p.plants = 2;
    p.lines_per_plant = 3;
    p.orders_per_line = 3;
    p.operations_per_order = 3;
    p.records_per_operation = 20;
    p.pct_material = 40;
    p.pct_scrap = 10;
    p.seed = 42;
    p.first_source_id = 100;
    p.epoch = 7;
    p.start_time_ns = START_NS;
    p.burst = 16;
    return p;
}

static int s_streq_opt(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

TEST(test_deterministic)
{
    plantgen_params_t p = s_params();
    plantgen_t *a = plantgen_new(&p), *b = plantgen_new(&p);
    p.seed = 43;
    plantgen_t *c = plantgen_new(&p);
    ASSERT(a && b && c);
    int differs = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t sa, ea, sb, eb, sc, ec;
        fp_rec_in_t ra, rb, rc;
        plantgen_next(a, &sa, &ea, &ra);
        plantgen_next(b, &sb, &eb, &rb);
        plantgen_next(c, &sc, &ec, &rc);
        ASSERT_EQ(sa, sb);
        ASSERT_EQ(ea, eb);
        ASSERT_EQ(ra.seq, rb.seq);
        ASSERT_EQ(ra.time_ns, rb.time_ns);
        ASSERT_EQ(ra.quantity, rb.quantity);
        ASSERT_EQ(ra.kind, rb.kind);
        for (int f = 0; f < FP_STR_FIELDS; f++)
            ASSERT(s_streq_opt(ra.str[f], rb.str[f]));
        differs |= ra.kind != rc.kind || ra.quantity != rc.quantity;
    }
    ASSERT(differs); /* another seed gives another plant */
    ASSERT_EQ(plantgen_count(a), 100000);
    plantgen_destroy(&a);
    plantgen_destroy(&b);
    plantgen_destroy(&c);
    ASSERT(a == NULL);
    plantgen_destroy(&a);
}

/* An order being followed through its operations. */
typedef struct {
    uint64_t src;
    char order[16];
    int op;        /* 10, 20, ... */
    int completed; /* the current op has completed; the next record starts op + 10 */
    uint32_t nqty;
} order_t;

static int s_is_one_of(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, set[i]) == 0)
            return 1;
    return 0;
}

TEST(test_lifecycle_seqs_mix_strings)
{
    plantgen_params_t p = s_params();
    plantgen_t *g = plantgen_new(&p);
    ASSERT(g);
    ASSERT_EQ(plantgen_sources(g), 6);
    uint64_t next_seq[6] = {1, 1, 1, 1, 1, 1};
    order_t open[64];
    size_t nopen = 0;
    unsigned long long max_order = 0;
    uint64_t nkind[FP_KIND_MAX + 1] = {0}, finished_orders = 0;
    static const char *const units[] = {"KG", "L", "PC", "M"};
    static const char *const reasons[] = {"SCR-DIM", "SCR-SURF", "SCR-MAT", "SCR-ASSY"};
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        uint64_t src, epoch;
        fp_rec_in_t r;
        plantgen_next(g, &src, &epoch, &r);
        /* Sources, seqs, clock, bursts. */
        ASSERT(src >= 100 && src < 106);
        ASSERT_EQ(epoch, 7);
        ASSERT_EQ(src, 100 + (uint64_t)(i / 16) % 6);
        ASSERT_EQ(r.seq, next_seq[src - 100]);
        next_seq[src - 100]++;
        ASSERT(r.time_ns == START_NS + (int64_t)i * PLANTGEN_STEP_NS);
        ASSERT(r.kind >= 1 && r.kind <= FP_KIND_MAX);
        nkind[r.kind]++;

        /* Strings. */
        uint32_t li = (uint32_t)(src - 100);
        char want[32];
        snprintf(want, sizeof(want), "%u000", li / 3 + 1);
        ASSERT_STREQ(r.str[FP_STR_PLANT], want);
        snprintf(want, sizeof(want), "L%02u", li % 3 + 1);
        ASSERT_STREQ(r.str[FP_STR_LINE], want);
        ASSERT(strncmp(r.str[FP_STR_STATION], want, 3) == 0);
        ASSERT(strncmp(r.str[FP_STR_STATION] + 3, "-ST0", 4) == 0);
        ASSERT_EQ(strlen(r.str[FP_STR_ORDER]), 12);
        for (int k = 0; k < 12; k++)
            ASSERT(isdigit((unsigned char)r.str[FP_STR_ORDER][k]));
        ASSERT_EQ(strlen(r.str[FP_STR_OPERATION]), 4);
        int op = atoi(r.str[FP_STR_OPERATION]);
        ASSERT(op >= 10 && op <= 30 && op % 10 == 0);
        if (r.kind == FP_KIND_MATERIAL) {
            ASSERT(r.quantity >= 125 && r.quantity <= 25000);
            ASSERT(r.str[FP_STR_MATERIAL] && (!strncmp(r.str[FP_STR_MATERIAL], "RM-", 3) ||
                                              !strncmp(r.str[FP_STR_MATERIAL], "PK-", 3)));
            ASSERT(r.str[FP_STR_LOT] && !strncmp(r.str[FP_STR_LOT], "LOT-2611-", 9));
            ASSERT(s_is_one_of(r.str[FP_STR_UNIT], units, 4));
            ASSERT(r.str[FP_STR_REASON] == NULL);
        } else {
            ASSERT(r.str[FP_STR_MATERIAL] == NULL && r.str[FP_STR_LOT] == NULL &&
                   r.str[FP_STR_UNIT] == NULL);
        }
        if (r.kind == FP_KIND_SCRAP) {
            ASSERT(r.quantity >= 1 && r.quantity <= 3);
            ASSERT(s_is_one_of(r.str[FP_STR_REASON], reasons, 4));
        } else {
            ASSERT(r.str[FP_STR_REASON] == NULL);
        }
        if (r.kind == FP_KIND_PART_COUNT)
            ASSERT(r.quantity >= 1 && r.quantity <= 10);
        if (r.kind == FP_KIND_OP_STARTED || r.kind == FP_KIND_OP_COMPLETED)
            ASSERT_EQ(r.quantity, 0);

        /* Lifecycle: Started, records_per_operation quantity records,
           Completed, then the next operation; finished orders never return
           and new order numbers only grow. */
        order_t *o = NULL;
        for (size_t k = 0; k < nopen; k++)
            if (open[k].src == src && !strcmp(open[k].order, r.str[FP_STR_ORDER]))
                o = &open[k];
        if (!o) {
            unsigned long long num = strtoull(r.str[FP_STR_ORDER], NULL, 10);
            ASSERT(num > max_order);
            max_order = num;
            ASSERT_EQ(r.kind, FP_KIND_OP_STARTED);
            if (i >= 1000) /* after the start, new orders begin at 0010 */
                ASSERT_EQ(op, 10);
            ASSERT(nopen < 64);
            o = &open[nopen++];
            memset(o, 0, sizeof(*o));
            o->src = src;
            snprintf(o->order, sizeof(o->order), "%s", r.str[FP_STR_ORDER]);
            o->op = op;
            continue;
        }
        if (o->completed) {
            ASSERT_EQ(r.kind, FP_KIND_OP_STARTED);
            ASSERT_EQ(op, o->op + 10);
            o->op = op;
            o->completed = 0;
            o->nqty = 0;
            continue;
        }
        ASSERT_EQ(op, o->op);
        ASSERT(r.kind != FP_KIND_OP_STARTED);
        if (r.kind == FP_KIND_OP_COMPLETED) {
            ASSERT_EQ(o->nqty, p.records_per_operation);
            o->completed = 1;
            if (op == 30) { /* last operation: the order is done */
                *o = open[--nopen];
                finished_orders++;
            }
        } else {
            o->nqty++;
            ASSERT(o->nqty <= p.records_per_operation);
        }
    }
    /* Open orders per line stay orders_per_line. */
    ASSERT_EQ(nopen, 6 * 3);
    ASSERT(finished_orders > 100);
    /* Mix: 2 of every 22 records are Started/Completed; of the quantity
       records, 40 % material and 10 % scrap (binomial: +-1.5 points). */
    double nq = (double)(nkind[1] + nkind[2] + nkind[3]);
    ASSERT(nkind[FP_KIND_OP_STARTED] - nkind[FP_KIND_OP_COMPLETED] <= 18);
    ASSERT(nq > n * 0.90 && nq < n * 0.92);
    ASSERT(nkind[FP_KIND_MATERIAL] / nq > 0.385 && nkind[FP_KIND_MATERIAL] / nq < 0.415);
    ASSERT(nkind[FP_KIND_SCRAP] / nq > 0.09 && nkind[FP_KIND_SCRAP] / nq < 0.11);
    plantgen_destroy(&g);
}

TEST(test_defaults_and_now)
{
    plantgen_params_t p;
    plantgen_defaults(&p);
    plantgen_t *g = plantgen_new(&p);
    ASSERT(g);
    ASSERT_EQ(plantgen_sources(g), 4);
    uint64_t src, epoch;
    fp_rec_in_t r;
    plantgen_next(g, &src, &epoch, &r);
    ASSERT_EQ(src, 1);
    ASSERT_EQ(epoch, 1);
    ASSERT_EQ(r.seq, 1);
    ASSERT(r.time_ns > 1700000000000000000LL); /* start 0 = the wall clock */
    ASSERT_STREQ(r.str[FP_STR_PLANT], "1000");
    ASSERT_STREQ(r.str[FP_STR_ORDER], "000100012345");
    ASSERT_STREQ(r.str[FP_STR_OPERATION], "0010");
    ASSERT_STREQ(r.str[FP_STR_STATION], "L01-ST01");
    ASSERT_EQ(r.kind, FP_KIND_OP_STARTED);
    plantgen_destroy(&g);

    /* Many materials and reasons: generated names beyond the built-in ones. */
    p.operations_per_order = 10;
    p.materials_per_operation = 50;
    p.lots_per_material = 3;
    p.scrap_reasons = 20;
    p.pct_material = 60;
    p.pct_scrap = 30;
    p.records_per_operation = 1000;
    g = plantgen_new(&p);
    ASSERT(g);
    int generated = 0;
    for (int i = 0; i < 50000; i++) {
        plantgen_next(g, &src, &epoch, &r);
        if (r.kind == FP_KIND_MATERIAL && !strncmp(r.str[FP_STR_MATERIAL], "RM-0", 4))
            generated++;
    }
    ASSERT(generated > 0);
    plantgen_destroy(&g);
}

TEST(test_bad_params)
{
    plantgen_params_t p;
    plantgen_params_t *q = &p;
#define BAD(field, value)                      \
    do {                                       \
        plantgen_defaults(q);                  \
        q->field = value;                      \
        ASSERT(plantgen_new(q) == NULL);       \
    } while (0)
    BAD(plants, 0);
    BAD(lines_per_plant, 0);
    BAD(stations_per_line, 0);
    BAD(orders_per_line, 0);
    BAD(operations_per_order, 0);
    BAD(operations_per_order, 1000);
    BAD(first_source_id, 0);
    BAD(burst, 0);
    BAD(pct_material, 96);           /* 96 + 5 > 100 */
    BAD(materials_per_operation, 0); /* with pct_material 30 */
    BAD(lots_per_material, 0);
    BAD(scrap_reasons, 0);           /* with pct_scrap 5 */
    BAD(lines_per_plant, 1u << 30);
#undef BAD
    /* Zero mix with zero materials is fine: only part counts. */
    plantgen_defaults(&p);
    p.pct_material = 0;
    p.pct_scrap = 0;
    p.materials_per_operation = 0;
    p.scrap_reasons = 0;
    p.records_per_operation = 0;
    plantgen_t *g = plantgen_new(&p);
    ASSERT(g);
    uint64_t src, epoch;
    fp_rec_in_t r;
    plantgen_next(g, &src, &epoch, &r);
    ASSERT_EQ(r.kind, FP_KIND_OP_STARTED);
    plantgen_next(g, &src, &epoch, &r); /* the other order of line 1 */
    plantgen_next(g, &src, &epoch, &r);
    ASSERT_EQ(r.kind, FP_KIND_OP_COMPLETED);
    plantgen_destroy(&g);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_deterministic);
    RUN(test_lifecycle_seqs_mix_strings);
    RUN(test_defaults_and_now);
    RUN(test_bad_params);
    return test_done();
}
