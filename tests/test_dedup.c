/*  test_dedup.c - dedup verdicts, counters, the ack watermark, and a
    randomized comparison against a naive model. */
#include "dedup.h"
#include "test.h"

#include <stdbool.h>

static dedup_source_t *
s_src(dedup_t *d, uint64_t id, uint64_t epoch)
{
    dedup_verdict_t v = DEDUP_DUPLICATE;
    dedup_source_t *src = dedup_source(d, id, epoch, &v);
    ASSERT(src != NULL);
    ASSERT_EQ(v, DEDUP_NEW);
    return src;
}

TEST(test_bad_arguments)
{
    ASSERT(dedup_new(0, 10) == NULL);
    ASSERT(dedup_new(32, 10) == NULL);
    ASSERT(dedup_new(100, 10) == NULL);
    ASSERT(dedup_new(65535, 10) == NULL);
    ASSERT(dedup_new(DEDUP_WINDOW_MAX * 2u, 10) == NULL);
    ASSERT(dedup_new(64, 0) == NULL);
    dedup_t *d = dedup_new(64, 1);
    ASSERT(d != NULL);
    dedup_destroy(&d);
    ASSERT(d == NULL);
    dedup_destroy(&d); /* safe twice */
    d = dedup_new(DEDUP_WINDOW_MAX, 1);
    ASSERT(d != NULL);
    dedup_destroy(&d);
}

TEST(test_in_order)
{
    dedup_t *d = dedup_new(64, 4);
    dedup_source_t *s = s_src(d, 7, 1);
    ASSERT_EQ(dedup_source_high(s), 0);
    ASSERT_EQ(dedup_source_acked(s), 0);
    ASSERT_EQ(dedup_source_epoch(s), 1);
    for (uint64_t q = 1; q <= 1000; q++) {
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
        ASSERT_EQ(dedup_source_acked(s), q);
    }
    ASSERT_EQ(dedup_source_high(s), 1000);
    const dedup_stats_t *st = dedup_stats(d);
    ASSERT_EQ(st->accepted, 1000);
    ASSERT_EQ(st->duplicates, 0);
    ASSERT_EQ(st->gaps, 0);
    ASSERT_EQ(st->gaps_filled, 0);
    ASSERT_EQ(st->sources, 1);
    /* the same source again: same pointer */
    ASSERT(s_src(d, 7, 1) == s);
    dedup_destroy(&d);
}

TEST(test_duplicates)
{
    dedup_t *d = dedup_new(128, 4);
    dedup_source_t *s = s_src(d, 1, 1);
    for (uint64_t q = 1; q <= 300; q++)
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
    /* the last 128 are remembered exactly */
    for (uint64_t q = 173; q <= 300; q++)
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_DUPLICATE);
    /* older ones cannot be checked */
    ASSERT_EQ(dedup_check(d, s, 172), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_check(d, s, 1), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_check(d, s, 0), DEDUP_TOO_OLD);
    const dedup_stats_t *st = dedup_stats(d);
    ASSERT_EQ(st->accepted, 300);
    ASSERT_EQ(st->duplicates, 128);
    ASSERT_EQ(st->too_old, 3);
    dedup_destroy(&d);
}

TEST(test_reorder_within_window)
{
    dedup_t *d = dedup_new(64, 4);
    dedup_source_t *s = s_src(d, 1, 5);
    /* 64..1 backwards: first sets high to 64, the rest fill the gap */
    for (uint64_t q = 64; q >= 1; q--)
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
    for (uint64_t q = 1; q <= 64; q++)
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_source_acked(s), 64);
    const dedup_stats_t *st = dedup_stats(d);
    ASSERT_EQ(st->gaps, 63);
    ASSERT_EQ(st->gaps_filled, 63);
    ASSERT_EQ(st->accepted, 64);
    ASSERT_EQ(st->duplicates, 64);
    /* pairs swapped: 66,65,68,67,... */
    for (uint64_t q = 65; q < 1065; q += 2) {
        ASSERT_EQ(dedup_check(d, s, q + 1), DEDUP_NEW);
        ASSERT_EQ(dedup_source_acked(s), q - 1);
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
        ASSERT_EQ(dedup_source_acked(s), q + 1);
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_DUPLICATE);
    }
    dedup_destroy(&d);
}

TEST(test_window_slide_with_gaps)
{
    dedup_t *d = dedup_new(64, 4);
    dedup_source_t *s = s_src(d, 1, 1);
    const dedup_stats_t *st = dedup_stats(d);
    for (uint64_t q = 1; q <= 10; q++)
        dedup_check(d, s, q);
    ASSERT_EQ(dedup_check(d, s, 20), DEDUP_NEW); /* skips 11..19 */
    ASSERT_EQ(st->gaps, 9);
    ASSERT_EQ(dedup_source_acked(s), 10);
    ASSERT_EQ(dedup_check(d, s, 15), DEDUP_NEW);
    ASSERT_EQ(st->gaps_filled, 1);
    ASSERT_EQ(dedup_source_acked(s), 10);
    /* slide by 40: window now 37..76; 11..14 still checkable, 1..12 gone */
    ASSERT_EQ(dedup_check(d, s, 76), DEDUP_NEW);
    ASSERT_EQ(st->gaps, 9 + 55);
    ASSERT_EQ(dedup_source_acked(s), 12);      /* 76 - 64 */
    ASSERT_EQ(dedup_check(d, s, 12), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_check(d, s, 13), DEDUP_NEW);
    ASSERT_EQ(dedup_source_acked(s), 13);
    ASSERT_EQ(dedup_check(d, s, 14), DEDUP_NEW);
    ASSERT_EQ(dedup_source_acked(s), 15);      /* 15 was seen */
    ASSERT_EQ(dedup_check(d, s, 20), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 15), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 16), DEDUP_NEW);
    /* a jump larger than the window forgets everything before it */
    ASSERT_EQ(dedup_check(d, s, 1000), DEDUP_NEW);
    ASSERT_EQ(dedup_source_acked(s), 936);
    for (uint64_t q = 937; q < 1000; q++)
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);   /* slots were cleared */
    ASSERT_EQ(dedup_source_acked(s), 1000);
    ASSERT_EQ(dedup_check(d, s, 936), DEDUP_TOO_OLD);
    /* a slide by exactly one slot less than the window */
    ASSERT_EQ(dedup_check(d, s, 1063), DEDUP_NEW);
    ASSERT_EQ(dedup_check(d, s, 1000), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 1001), DEDUP_NEW);
    ASSERT_EQ(dedup_check(d, s, 999), DEDUP_TOO_OLD);
    dedup_destroy(&d);
}

TEST(test_ack_watermark)
{
    dedup_t *d = dedup_new(256, 4);
    dedup_source_t *s = s_src(d, 9, 1);
    /* holes at 3 and 5 */
    dedup_check(d, s, 1);
    dedup_check(d, s, 2);
    dedup_check(d, s, 4);
    dedup_check(d, s, 6);
    dedup_check(d, s, 7);
    ASSERT_EQ(dedup_source_acked(s), 2);
    dedup_check(d, s, 5);
    ASSERT_EQ(dedup_source_acked(s), 2);
    dedup_check(d, s, 3);                       /* fill: jumps over 4..7 */
    ASSERT_EQ(dedup_source_acked(s), 7);
    /* a hole that is never filled: acked waits until the window passes it */
    dedup_check(d, s, 9);
    for (uint64_t q = 10; q <= 263; q++)
        dedup_check(d, s, q);
    ASSERT_EQ(dedup_source_acked(s), 7);        /* window 8..263 still holds 8 */
    ASSERT_EQ(dedup_check(d, s, 264), DEDUP_NEW); /* 8 leaves the window */
    ASSERT_EQ(dedup_check(d, s, 8), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_source_acked(s), 264);
    dedup_destroy(&d);
}

TEST(test_epochs)
{
    dedup_t *d = dedup_new(64, 4);
    const dedup_stats_t *st = dedup_stats(d);
    dedup_source_t *s = s_src(d, 3, 10);
    for (uint64_t q = 1; q <= 100; q++)
        dedup_check(d, s, q);
    /* producer restarted: a newer epoch resets the source */
    ASSERT(s_src(d, 3, 11) == s);
    ASSERT_EQ(st->epoch_changes, 1);
    ASSERT_EQ(dedup_source_epoch(s), 11);
    ASSERT_EQ(dedup_source_high(s), 0);
    ASSERT_EQ(dedup_source_acked(s), 0);
    for (uint64_t q = 1; q <= 100; q++)
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
    ASSERT_EQ(dedup_source_acked(s), 100);
    /* an old epoch is refused as a whole */
    dedup_verdict_t v = DEDUP_NEW;
    ASSERT(dedup_source(d, 3, 10, &v) == NULL);
    ASSERT_EQ(v, DEDUP_STALE_EPOCH);
    ASSERT_EQ(st->stale_epoch, 1);
    v = DEDUP_NEW;
    ASSERT(dedup_source(d, 3, 0, &v) == NULL);
    ASSERT_EQ(v, DEDUP_STALE_EPOCH);
    ASSERT_EQ(st->stale_epoch, 2);
    /* the current epoch is untouched by the refusals */
    ASSERT(s_src(d, 3, 11) == s);
    ASSERT_EQ(dedup_check(d, s, 100), DEDUP_DUPLICATE);
    ASSERT_EQ(st->epoch_changes, 1);
    dedup_destroy(&d);
}

TEST(test_too_many_sources)
{
    dedup_t *d = dedup_new(64, 100);
    dedup_source_t *srcs[100];
    for (uint64_t i = 0; i < 100; i++) {
        srcs[i] = s_src(d, i * 0x100000001ULL, 1);
        ASSERT_EQ(dedup_check(d, srcs[i], 1), DEDUP_NEW);
    }
    ASSERT_EQ(dedup_stats(d)->sources, 100);
    dedup_verdict_t v = DEDUP_NEW;
    ASSERT(dedup_source(d, 12345, 1, &v) == NULL);
    ASSERT_EQ(v, DEDUP_TOO_MANY_SOURCES);
    /* known sources still work, pointers survived the table's growth */
    for (uint64_t i = 0; i < 100; i++) {
        ASSERT(s_src(d, i * 0x100000001ULL, 1) == srcs[i]);
        ASSERT_EQ(dedup_check(d, srcs[i], 1), DEDUP_DUPLICATE);
    }
    dedup_destroy(&d);
}

/* ---- randomized comparison with a naive model ---- */

#define MODEL_SOURCES 3
#define MODEL_MAXSEQ (1u << 22)

typedef struct {
    uint64_t epoch, high, next;
    uint8_t *seen;          /* MODEL_MAXSEQ bits: seqs accepted this epoch */
    uint64_t pool[64];      /* seqs issued but not sent yet (reordering) */
    int pool_n;
} model_t;

static uint64_t
s_rand(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static bool
s_seen(const model_t *m, uint64_t q)
{
    return (m->seen[q >> 3] >> (q & 7)) & 1;
}

static uint64_t
s_model_acked(const model_t *m, uint64_t window)
{
    uint64_t a = m->high >= window ? m->high - window : 0;
    while (a < m->high && s_seen(m, a + 1))
        a++;
    return a;
}

TEST(test_random_against_model)
{
    const uint64_t W = 1024;
    dedup_t *d = dedup_new((uint32_t)W, MODEL_SOURCES);
    model_t m[MODEL_SOURCES];
    memset(m, 0, sizeof m);
    for (int i = 0; i < MODEL_SOURCES; i++) {
        m[i].seen = calloc(MODEL_MAXSEQ / 8, 1);
        ASSERT(m[i].seen);
        m[i].epoch = 1;
        m[i].next = 1;
    }
    uint64_t rng = 42;
    uint64_t n_new = 0, n_dup = 0, n_old = 0, n_stale = 0;
    for (long op = 0; op < 1000000; op++) {
        int i = (int)(s_rand(&rng) % MODEL_SOURCES);
        model_t *mm = &m[i];
        uint64_t r = s_rand(&rng) % 1000;
        uint64_t epoch = mm->epoch;
        if (r < 2 || mm->next > MODEL_MAXSEQ - 4 * W) {
            /* producer restart: newer epoch, seqs start over */
            epoch = mm->epoch + 1 + s_rand(&rng) % 3;
            mm->epoch = epoch;
            mm->high = 0;
            mm->next = 1;
            mm->pool_n = 0;
            memset(mm->seen, 0, MODEL_MAXSEQ / 8);
        } else if (r < 5 && mm->epoch > 1) {
            /* a zombie batch from an older epoch */
            dedup_verdict_t v = DEDUP_NEW;
            ASSERT(dedup_source(d, (uint64_t)i + 100, mm->epoch - 1, &v) == NULL);
            ASSERT_EQ(v, DEDUP_STALE_EPOCH);
            n_stale++;
            continue;
        }
        dedup_source_t *s = s_src(d, (uint64_t)i + 100, epoch);
        int batch = 1 + (int)(s_rand(&rng) % 8);
        for (int b = 0; b < batch; b++) {
            uint64_t q;
            uint64_t k = s_rand(&rng) % 100;
            if (k < 55) {
                /* next seq through the reorder pool */
                if (mm->pool_n < 64) {
                    uint64_t skip = s_rand(&rng) % 50 == 0 ? s_rand(&rng) % 8 : 0;
                    if (s_rand(&rng) % 500 == 0)
                        skip = s_rand(&rng) % W;       /* a burst lost in transit */
                    if (s_rand(&rng) % 2000 == 0)
                        skip = W + s_rand(&rng) % W;   /* a long outage */
                    mm->next += skip;
                    mm->pool[mm->pool_n++] = mm->next++;
                }
                int j = (int)(s_rand(&rng) % (uint64_t)mm->pool_n);
                q = mm->pool[j];
                mm->pool[j] = mm->pool[--mm->pool_n];
            } else if (k < 85) {
                /* a resend of something recent (duplicate or gap fill) */
                uint64_t back = s_rand(&rng) % (W + W / 4);
                q = mm->next > back ? mm->next - back : 0;
            } else if (k < 95 && mm->pool_n > 0) {
                q = mm->pool[s_rand(&rng) % (uint64_t)mm->pool_n]; /* sent early, kept */
            } else {
                q = mm->next > 1 ? 1 + s_rand(&rng) % (mm->next - 1) : 0;
            }
            dedup_verdict_t want;
            if (q == 0 || (mm->high >= W && q <= mm->high - W))
                want = DEDUP_TOO_OLD;
            else if (s_seen(mm, q))
                want = DEDUP_DUPLICATE;
            else {
                want = DEDUP_NEW;
                mm->seen[q >> 3] |= (uint8_t)(1u << (q & 7));
                if (q > mm->high)
                    mm->high = q;
            }
            dedup_verdict_t got = dedup_check(d, s, q);
            if (got != want)
                fprintf(stderr, "op %ld source %d seq %" PRIu64 " high %" PRIu64 "\n", op, i, q,
                        mm->high);
            ASSERT_EQ(got, want);
            n_new += want == DEDUP_NEW;
            n_dup += want == DEDUP_DUPLICATE;
            n_old += want == DEDUP_TOO_OLD;
            ASSERT_EQ(dedup_source_high(s), mm->high);
        }
        if (op % 97 == 0)
            ASSERT_EQ(dedup_source_acked(s), s_model_acked(mm, W));
    }
    const dedup_stats_t *st = dedup_stats(d);
    ASSERT_EQ(st->accepted, n_new);
    ASSERT_EQ(st->duplicates, n_dup);
    ASSERT_EQ(st->too_old, n_old);
    ASSERT_EQ(st->stale_epoch, n_stale);
    /* the mix actually exercised every path */
    ASSERT(n_new > 100000 && n_dup > 100000 && n_old > 10000 && n_stale > 100);
    ASSERT(st->gaps > 0 && st->gaps_filled > 10000 && st->epoch_changes > 100);
    fprintf(stderr, "    new %" PRIu64 " dup %" PRIu64 " old %" PRIu64 " stale %" PRIu64
            " gaps %" PRIu64 " filled %" PRIu64 " epochs %" PRIu64 "\n",
            n_new, n_dup, n_old, n_stale, st->gaps, st->gaps_filled, st->epoch_changes);
    for (int i = 0; i < MODEL_SOURCES; i++)
        free(m[i].seen);
    dedup_destroy(&d);
}

int
main(void)
{
    RUN(test_bad_arguments);
    RUN(test_in_order);
    RUN(test_duplicates);
    RUN(test_reorder_within_window);
    RUN(test_window_slide_with_gaps);
    RUN(test_ack_watermark);
    RUN(test_epochs);
    RUN(test_too_many_sources);
    RUN(test_random_against_model);
    return 0;
}
