/*  test_counter.c - cumulative counter readings into deltas (counter.h):
    rollover at 2^16 and 2^32, reset to zero and to a small value, jitter,
    the first reading (and "starts from zero"), the plausibility bound,
    duplicated and reordered readings, a modulus per counter, export and
    import (a restart between two readings), damaged state, and a random
    model check of the sums against the readings. */
#include "counter.h"

#include <stdlib.h>

#include "record.h"
#include "test.h"

typedef struct {
    counter_t *c;
    uint64_t seq;
    uint64_t epoch;
} ctx_t;

static ctx_t s_ctx(uint64_t modulus, uint64_t max_jump, uint64_t jitter)
{
    static const counter_modulus_t mods[] = {{"SHORT", 65536}};
    counter_config_t cfg = {.default_modulus = modulus, .max_jump = max_jump, .jitter = jitter,
                            .moduli = mods, .nmoduli = 1};
    ctx_t x = {counter_new(&cfg), 0, 1};
    ASSERT(x.c);
    return x;
}

/* Applies reading v of counter `name` at station ST1 of source 7; returns
   the verdict and the delta in *d. */
static counter_verdict_t s_read(ctx_t *x, const char *name, int64_t v, int64_t *d)
{
    counter_reading_t r = {.source_id = 7, .epoch = x->epoch, .seq = ++x->seq,
                           .time_ns = (int64_t)x->seq * 1000, .kind = FP_KIND_PART_COUNTER,
                           .station = "ST1", .station_len = 3, .name = name,
                           .name_len = (uint32_t)strlen(name), .reading = v};
    counter_result_t out;
    counter_verdict_t verdict = counter_apply(x->c, &r, &out);
    ASSERT_EQ(out.verdict, verdict);
    if (d)
        *d = out.delta;
    return verdict;
}

/* Asserts the verdict and delta of a reading. */
static void s_expect(ctx_t *x, const char *name, int64_t v, counter_verdict_t want, int64_t dwant)
{
    int64_t d = -99;
    counter_verdict_t got = s_read(x, name, v, &d);
    if (got != want || d != dwant)
        fprintf(stderr, "reading %lld of %s: %s %lld, want %s %lld\n", (long long)v, name,
                counter_verdict_name(got), (long long)d, counter_verdict_name(want),
                (long long)dwant);
    ASSERT_EQ(got, want);
    ASSERT_EQ(d, dwant);
}

TEST(test_first_reading_and_deltas)
{
    ctx_t x = s_ctx(1ull << 32, 0, 0);
    s_expect(&x, "GOOD", 1000, COUNTER_BASE, 0);
    s_expect(&x, "GOOD", 1005, COUNTER_DELTA, 5);
    s_expect(&x, "GOOD", 1005, COUNTER_REPEAT, 0);
    s_expect(&x, "GOOD", 1012, COUNTER_DELTA, 7);
    /* another counter, and the same name at another station, are their own */
    s_expect(&x, "OTHER", 3, COUNTER_BASE, 0);
    counter_reading_t r = {.source_id = 7, .epoch = 1, .seq = 100, .kind = FP_KIND_PART_COUNTER,
                           .station = "ST2", .station_len = 3, .name = "GOOD", .name_len = 4,
                           .reading = 1};
    counter_result_t out;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_BASE);
    /* the same name as a scrap counter is another counter too */
    r.kind = FP_KIND_SCRAP_COUNTER;
    r.station = "ST1";
    r.seq = 101;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_BASE);
    ASSERT_EQ(counter_count(x.c), 4);
    /* "starts from zero": the first reading counts whole */
    r.name = "FRESH";
    r.name_len = 5;
    r.seq = 102;
    r.reading = 42;
    r.from_zero = true;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_DELTA);
    ASSERT_EQ(out.delta, 42);
    ASSERT_EQ(out.previous, -1);
    /* ... and only the first: later it is an ordinary reading */
    r.seq = 103;
    r.reading = 40;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_RESET);
    ASSERT_EQ(out.delta, 40);
    ASSERT_EQ(out.previous, 42);
    counter_destroy(&x.c);
    ASSERT(x.c == NULL);
    counter_destroy(&x.c);
}

TEST(test_rollover_16_and_32_bits)
{
    ctx_t x = s_ctx(1ull << 32, 0, 0);
    /* SHORT has its own modulus, 2^16 */
    s_expect(&x, "SHORT", 65530, COUNTER_BASE, 0);
    s_expect(&x, "SHORT", 65535, COUNTER_DELTA, 5);
    s_expect(&x, "SHORT", 3, COUNTER_ROLLOVER, 4);
    s_expect(&x, "SHORT", 0, COUNTER_RESET, 0); /* 3 -> 0 is no rollover */
    s_expect(&x, "SHORT", 65536, COUNTER_RANGE, 0);
    s_expect(&x, "SHORT", -1, COUNTER_RANGE, 0);
    s_expect(&x, "SHORT", 10, COUNTER_DELTA, 10); /* the range errors changed nothing */
    /* the default, 2^32 */
    s_expect(&x, "GOOD", 4294967290ll, COUNTER_BASE, 0);
    s_expect(&x, "GOOD", 4294967295ll, COUNTER_DELTA, 5);
    s_expect(&x, "GOOD", 0, COUNTER_ROLLOVER, 1);
    s_expect(&x, "GOOD", 4294967000ll, COUNTER_DELTA, 4294967000ll);
    s_expect(&x, "GOOD", 700, COUNTER_ROLLOVER, 996);
    s_expect(&x, "GOOD", 4294967296ll, COUNTER_RANGE, 0);
    counter_destroy(&x.c);
}

TEST(test_resets)
{
    ctx_t x = s_ctx(1ull << 32, 0, 0);
    s_expect(&x, "GOOD", 5000, COUNTER_BASE, 0);
    s_expect(&x, "GOOD", 0, COUNTER_RESET, 0);   /* to zero */
    s_expect(&x, "GOOD", 12, COUNTER_DELTA, 12);
    s_expect(&x, "GOOD", 9000, COUNTER_DELTA, 8988);
    s_expect(&x, "GOOD", 7, COUNTER_RESET, 7);   /* to a small value: 7 parts since */
    s_expect(&x, "GOOD", 10, COUNTER_DELTA, 3);
    counter_destroy(&x.c);
    /* a 16-bit counter without max_jump: a drop that implies at most half
       the range is a rollover, more a reset (set max_jump to tell them apart
       better: test_max_jump_decides) */
    x = s_ctx(65536, 0, 0);
    s_expect(&x, "C", 40000, COUNTER_BASE, 0);
    s_expect(&x, "C", 100, COUNTER_ROLLOVER, 25636); /* 65536 - 40000 + 100 <= 32768 */
    s_expect(&x, "C", 10000, COUNTER_DELTA, 9900);
    s_expect(&x, "C", 100, COUNTER_RESET, 100);      /* 55636 > 32768 */
    counter_destroy(&x.c);
}

TEST(test_max_jump_decides)
{
    ctx_t x = s_ctx(65536, 1000, 0);
    s_expect(&x, "C", 40000, COUNTER_BASE, 0);
    s_expect(&x, "C", 100, COUNTER_RESET, 100); /* 25636 > 1000: a reset */
    s_expect(&x, "C", 65000, COUNTER_JUMP, 0);  /* +64900: implausible, not posted */
    s_expect(&x, "C", 65100, COUNTER_DELTA, 100); /* counts from the jump's reading */
    s_expect(&x, "C", 300, COUNTER_ROLLOVER, 736);
    s_expect(&x, "C", 1301, COUNTER_JUMP, 0);   /* 1001 > 1000 */
    s_expect(&x, "C", 2301, COUNTER_DELTA, 1000); /* exactly the bound */
    s_expect(&x, "C", 1002, COUNTER_JUMP, 0);   /* a reset to 1002 > 1000 parts */
    counter_destroy(&x.c);
}

TEST(test_jitter)
{
    ctx_t x = s_ctx(1ull << 32, 0, 3);
    s_expect(&x, "A", 100, COUNTER_BASE, 0);
    s_expect(&x, "A", 101, COUNTER_DELTA, 1);
    s_expect(&x, "A", 99, COUNTER_JITTER, 0);   /* read jitter: nothing */
    s_expect(&x, "A", 98, COUNTER_JITTER, 0);   /* still within 3 of 101 */
    s_expect(&x, "A", 102, COUNTER_DELTA, 1);   /* from 101, not from 98: never twice */
    s_expect(&x, "A", 90, COUNTER_RESET, 90);   /* more than the jitter */
    s_expect(&x, "A", 0, COUNTER_RESET, 0);     /* to zero is never jitter */
    counter_destroy(&x.c);
    /* without jitter the same drop is a reset */
    x = s_ctx(1ull << 32, 0, 0);
    s_expect(&x, "A", 101, COUNTER_BASE, 0);
    s_expect(&x, "A", 99, COUNTER_RESET, 99);
    counter_destroy(&x.c);
}

TEST(test_duplicates_and_reordering)
{
    ctx_t x = s_ctx(1ull << 32, 0, 0);
    counter_reading_t r = {.source_id = 7, .epoch = 3, .seq = 10, .kind = FP_KIND_PART_COUNTER,
                           .station = "", .station_len = 0, .name = "G", .name_len = 1,
                           .reading = 100};
    counter_result_t out;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_BASE);
    r.seq = 12;
    r.reading = 130;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_DELTA);
    ASSERT_EQ(out.delta, 30);
    /* seq 11 (reading 120) arrives late: its parts are in 130 already */
    r.seq = 11;
    r.reading = 120;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_STALE);
    ASSERT_EQ(out.delta, 0);
    /* a duplicate of seq 12 (dedup normally drops it first) */
    r.seq = 12;
    r.reading = 130;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_STALE);
    r.seq = 13;
    r.reading = 131;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_DELTA);
    ASSERT_EQ(out.delta, 1);
    /* a producer restart: a new epoch, seq from 1, the PLC counter goes on */
    r.epoch = 4;
    r.seq = 1;
    r.reading = 140;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_DELTA);
    ASSERT_EQ(out.delta, 9);
    /* the old epoch's reading after the new epoch's: stale */
    r.epoch = 3;
    r.seq = 14;
    r.reading = 135;
    ASSERT_EQ(counter_apply(x.c, &r, &out), COUNTER_STALE);
    counter_destroy(&x.c);
}

typedef struct {
    int n;
    uint8_t key[8][256];
    size_t klen[8];
    uint8_t st[8][64];
    size_t slen[8];
} dump_t;

static void s_dump(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    dump_t *d = ctx;
    ASSERT(d->n < 8 && klen <= 256 && slen <= 64);
    memcpy(d->key[d->n], key, klen);
    d->klen[d->n] = klen;
    memcpy(d->st[d->n], state, slen);
    d->slen[d->n] = slen;
    d->n++;
}

/* A restart between two readings: the last reading comes back. */
TEST(test_restart_restores_the_last_reading)
{
    ctx_t x = s_ctx(65536, 0, 0);
    s_expect(&x, "SHORT", 65000, COUNTER_BASE, 0);
    s_expect(&x, "SHORT", 65500, COUNTER_DELTA, 500);
    s_expect(&x, "B", 7, COUNTER_BASE, 0);
    dump_t d = {0};
    counter_export_dirty(x.c, s_dump, &d);
    ASSERT_EQ(d.n, 2);
    dump_t again = {0};
    counter_export_dirty(x.c, s_dump, &again);
    ASSERT_EQ(again.n, 0); /* marks cleared */
    for (int i = 0; i < d.n; i++)
        ASSERT_EQ(counter_key_source(d.key[i], d.klen[i]), 7);
    ctx_t y = s_ctx(65536, 0, 0);
    y.seq = x.seq;
    for (int i = 0; i < d.n; i++)
        ASSERT_EQ(counter_import(y.c, d.key[i], d.klen[i], d.st[i], d.slen[i]), 0);
    ASSERT_EQ(counter_import(y.c, d.key[0], d.klen[0], d.st[0], d.slen[0]), -1); /* twice */
    ASSERT_EQ(counter_count(y.c), 2);
    dump_t none = {0};
    counter_export_dirty(y.c, s_dump, &none);
    ASSERT_EQ(none.n, 0); /* imported is not dirty */
    /* both go on alike */
    s_expect(&x, "SHORT", 20, COUNTER_ROLLOVER, 56);
    s_expect(&y, "SHORT", 20, COUNTER_ROLLOVER, 56);
    s_expect(&x, "B", 9, COUNTER_DELTA, 2);
    s_expect(&y, "B", 9, COUNTER_DELTA, 2);
    /* an old reading replayed after the restart is stale in both */
    counter_reading_t r = {.source_id = 7, .epoch = 1, .seq = 1, .kind = FP_KIND_PART_COUNTER,
                           .station = "ST1", .station_len = 3, .name = "B", .name_len = 1,
                           .reading = 3};
    counter_result_t out;
    ASSERT_EQ(counter_apply(y.c, &r, &out), COUNTER_STALE);

    /* damaged bytes: every truncation and a trailing byte, refused whole */
    ctx_t z = s_ctx(65536, 0, 0);
    uint8_t buf[300];
    for (int i = 0; i < d.n; i++) {
        for (size_t n = 0; n < d.klen[i]; n++)
            ASSERT_EQ(counter_import(z.c, d.key[i], n, d.st[i], d.slen[i]), -1);
        for (size_t n = 0; n < d.slen[i]; n++)
            ASSERT_EQ(counter_import(z.c, d.key[i], d.klen[i], d.st[i], n), -1);
        memcpy(buf, d.st[i], d.slen[i]);
        buf[d.slen[i]] = 0;
        ASSERT_EQ(counter_import(z.c, d.key[i], d.klen[i], buf, d.slen[i] + 1), -1);
        memcpy(buf, d.key[i], d.klen[i]);
        buf[0] = 2;
        ASSERT_EQ(counter_import(z.c, buf, d.klen[i], d.st[i], d.slen[i]), -1);
        ASSERT_EQ(counter_key_source(buf, d.klen[i]), 0);
        ASSERT_EQ(counter_import(z.c, d.key[i], d.klen[i], NULL, 0), -1);
    }
    ASSERT_EQ(counter_count(z.c), 0);
    counter_destroy(&x.c);
    counter_destroy(&y.c);
    counter_destroy(&z.c);
}

/* fuzz/regressions/counter/noncanonical_source: a key whose varints are
   not in their shortest form names a counter that counter_apply would
   never find again (it builds the shortest form), so the restored
   reading was lost and the next one became a BASE posting nothing. Such
   a key is damaged: refused, like any other. */
TEST(test_import_refuses_a_longer_key_form)
{
    ctx_t x = s_ctx(65536, 0, 0);
    static const uint8_t state[] = {1, 90, 1, 1, 0}; /* last 90, epoch 1, seq 1, time 0 */
    static const uint8_t found[] = {1, 0xff, 0xff, 0xff, 0x00, 7, 3, 'S', 'T', '1', 1, 'M'};
    ASSERT_EQ(counter_key_source(found, sizeof found), 0);
    ASSERT_EQ(counter_import(x.c, found, sizeof found, state, sizeof state), -1);
    static const uint8_t longer[][12] = {
        {1, 0x87, 0x00, FP_KIND_PART_COUNTER, 3, 'S', 'T', '1', 1, 'M'},  /* source 7 */
        {1, 7, FP_KIND_PART_COUNTER, 0x83, 0x00, 'S', 'T', '1', 1, 'M'},  /* station length */
        {1, 7, FP_KIND_PART_COUNTER, 3, 'S', 'T', '1', 0x81, 0x00, 'M'},  /* name length */
    };
    for (size_t i = 0; i < sizeof longer / sizeof longer[0]; i++)
        ASSERT_EQ(counter_import(x.c, longer[i], 10, state, sizeof state), -1);
    static const uint8_t shortest[] = {1, 7, FP_KIND_PART_COUNTER, 3, 'S', 'T', '1', 1, 'M'};
    ASSERT_EQ(counter_key_source(shortest, sizeof shortest), 7);
    ASSERT_EQ(counter_import(x.c, shortest, sizeof shortest, state, sizeof state), 0);
    /* and the restored reading is the one the next reading counts from */
    x.epoch = 1;
    x.seq = 1;
    s_expect(&x, "M", 95, COUNTER_DELTA, 5);
    counter_destroy(&x.c);
}

/* Random readings of a wrapping counter with resets: the sum of the deltas
   equals the parts really counted, and an export/import in the middle
   changes nothing. */
TEST(test_model_random)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 50; round++) {
        uint64_t M = round % 2 ? 65536 : 1ull << 32;
        ctx_t x = s_ctx(M, 10000, 0);
        uint64_t counter = (rng >> 7) % M; /* the PLC's counter */
        int64_t truth = 0, sum = 0, d;
        s_expect(&x, "G", (int64_t)counter, COUNTER_BASE, 0);
        for (int i = 0; i < 2000; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t step = (rng >> 33) % 2000; /* parts made since the last reading */
            /* a reset, then some parts; far enough below the top that no
               rollover within max_jump explains the drop (the ambiguity
               counter.h resolves for rollovers) */
            if ((rng >> 20) % 100 == 0 && counter < M - 20000 && counter > 2000) {
                truth += (int64_t)step;
                counter = step;
            } else {
                truth += (int64_t)step;
                counter = (counter + step) % M;
            }
            counter_verdict_t v = s_read(&x, "G", (int64_t)counter, &d);
            ASSERT(v != COUNTER_JUMP && v != COUNTER_RANGE && v != COUNTER_STALE);
            sum += d;
            if (i == 1000) {
                dump_t dd = {0};
                counter_export_dirty(x.c, s_dump, &dd);
                ctx_t y = s_ctx(M, 10000, 0);
                y.seq = x.seq;
                ASSERT_EQ(counter_import(y.c, dd.key[0], dd.klen[0], dd.st[0], dd.slen[0]), 0);
                counter_destroy(&x.c);
                x = y;
            }
        }
        ASSERT_EQ(sum, truth);
        counter_destroy(&x.c);
    }
}

/* counter_apply_at with remembered indices gives counter_apply's verdicts,
   deltas and results on the same stream (8 counters, two stations, resets,
   repeats, jumps, stale readings, a RANGE reading of a new counter), and a
   new counter's RANGE leaves no index. */
TEST(test_apply_at_same_as_apply)
{
    ctx_t a = s_ctx(4096, 1000, 3), b = s_ctx(4096, 1000, 3);
    uint32_t at[16];
    for (int i = 0; i < 16; i++)
        at[i] = COUNTER_AT_NONE;
    static const char *names[8] = {"G0", "G1", "G2", "G3", "SHORT", "G5", "G6", "G7"};
    int64_t val[16] = {0};
    uint64_t rng = 12345;
    for (int i = 0; i < 20000; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int k = (int)((rng >> 40) % 16), kind = (int)((rng >> 30) % 7);
        int64_t v = val[k];
        if (kind == 0)
            v = (v + (int64_t)((rng >> 20) % 30)) % 4096; /* parts, maybe a rollover */
        else if (kind == 1)
            v = (int64_t)((rng >> 20) % 5);               /* a reset */
        else if (kind == 2)
            v = (v + 2000) % 4096;                        /* a jump */
        else if (kind == 3 && v > 0)
            v = v - 1;                                    /* jitter */
        else if (kind == 4)
            v = 5000;                                     /* outside the modulus */
        else
            v = (v + 3) % 4096;
        if (v < 4096)
            val[k] = v;
        uint64_t seq = ++a.seq;
        if (kind == 5 && seq > 2)
            seq -= 2; /* stale: older than the last reading of some counter */
        counter_reading_t r = {.source_id = 7, .epoch = 1, .seq = seq, .time_ns = i,
                               .kind = FP_KIND_PART_COUNTER, .station = k < 8 ? "ST1" : "ST2",
                               .station_len = 3, .name = names[k % 8],
                               .name_len = (uint32_t)strlen(names[k % 8]), .reading = v,
                               .from_zero = (rng >> 10) % 2};
        counter_result_t ra, rb;
        counter_verdict_t va = counter_apply(a.c, &r, &ra);
        uint32_t before = at[k];
        counter_verdict_t vb = counter_apply_at(b.c, &at[k], &r, &rb);
        ASSERT_EQ(va, vb);
        ASSERT_EQ(ra.delta, rb.delta);
        ASSERT_EQ(ra.previous, rb.previous);
        ASSERT_EQ(ra.modulus, rb.modulus);
        if (before != COUNTER_AT_NONE)
            ASSERT_EQ(at[k], before); /* an index, once known, stays */
        if (before == COUNTER_AT_NONE && vb == COUNTER_RANGE)
            ASSERT_EQ(at[k], COUNTER_AT_NONE); /* no counter made for it */
    }
    for (int k = 0; k < 16; k++)
        ASSERT(at[k] != COUNTER_AT_NONE);
    ASSERT_EQ(counter_count(a.c), counter_count(b.c));
    ASSERT_EQ(counter_count(b.c), 16);
    counter_destroy(&a.c);
    counter_destroy(&b.c);
}

TEST(test_bad_config)
{
    counter_config_t cfg = {.default_modulus = 1};
    ASSERT(counter_new(&cfg) == NULL);
    cfg.default_modulus = COUNTER_MODULUS_MAX + 1;
    ASSERT(counter_new(&cfg) == NULL);
    counter_modulus_t bad[] = {{"X", 1}};
    cfg = (counter_config_t){.default_modulus = 100, .moduli = bad, .nmoduli = 1};
    ASSERT(counter_new(&cfg) == NULL);
    ASSERT_STREQ(counter_verdict_name(COUNTER_ROLLOVER), "rollover");
    ASSERT_STREQ(counter_verdict_name(COUNTER_VERDICTS), "?");
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_first_reading_and_deltas);
    RUN(test_rollover_16_and_32_bits);
    RUN(test_resets);
    RUN(test_max_jump_decides);
    RUN(test_jitter);
    RUN(test_duplicates_and_reordering);
    RUN(test_restart_restores_the_last_reading);
    RUN(test_import_refuses_a_longer_key_form);
    RUN(test_model_random);
    RUN(test_apply_at_same_as_apply);
    RUN(test_bad_config);
    return test_done();
}
