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
    /* older ones left the window, but every one of them had been seen
       before it did: still duplicates (a late resend of a counted batch) */
    ASSERT_EQ(dedup_check(d, s, 172), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 1), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 0), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_seen(d, 1, 1, 1), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(d, 1, 1, 301), DEDUP_UNSEEN);
    const dedup_stats_t *st = dedup_stats(d);
    ASSERT_EQ(st->accepted, 300);
    ASSERT_EQ(st->duplicates, 130);
    ASSERT_EQ(st->too_old, 1);
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
    /* the window slid past 11, 12 and 17..936 before they came: those
       cannot be told any more; everything else below it was seen */
    ASSERT_EQ(dedup_check(d, s, 999), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 937), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 10), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 1), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 11), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_check(d, s, 500), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_seen(d, 1, 1, 10), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(d, 1, 1, 11), DEDUP_UNSEEN);  /* the hole's ends: never seen */
    ASSERT_EQ(dedup_seen(d, 1, 1, 936), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(d, 1, 1, 13), DEDUP_UNKNOWN); /* seen, but inside the hole's bounds */
    ASSERT_EQ(dedup_seen(d, 1, 1, 500), DEDUP_UNKNOWN);
    ASSERT_EQ(dedup_seen(d, 1, 1, 1001), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(d, 1, 1, 1002), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(d, 1, 2, 1), DEDUP_UNSEEN);   /* a newer epoch */
    ASSERT_EQ(dedup_seen(d, 2, 1, 1), DEDUP_UNSEEN);   /* another source */
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
    /* the earlier epoch keeps its watermark: a late resend of what it
       took is a duplicate, a seq it never saw is stale */
    dedup_verdict_t v = DEDUP_NEW;
    ASSERT(dedup_source(d, 3, 10, &v) == s);
    ASSERT_EQ(v, DEDUP_PAST_EPOCH);
    ASSERT_EQ(dedup_check_past(d, s, 10, 1), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check_past(d, s, 10, 100), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check_past(d, s, 10, 101), DEDUP_STALE_EPOCH);
    ASSERT_EQ(dedup_check_past(d, s, 10, 0), DEDUP_STALE_EPOCH);
    ASSERT_EQ(dedup_past_acked(s, 10), 100);
    ASSERT_EQ(st->stale_records, 2);
    ASSERT_EQ(dedup_seen(d, 3, 10, 100), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(d, 3, 10, 101), DEDUP_UNSEEN);
    ASSERT_EQ(st->stale_epoch, 0);
    /* an epoch it never saw is refused as a whole */
    v = DEDUP_NEW;
    ASSERT(dedup_source(d, 3, 0, &v) == NULL);
    ASSERT_EQ(v, DEDUP_STALE_EPOCH);
    ASSERT_EQ(st->stale_epoch, 1);
    ASSERT_EQ(dedup_past_acked(s, 0), 0);
    ASSERT_EQ(dedup_seen(d, 3, 0, 1), DEDUP_UNSEEN);  /* never seen: the source began at 10 */
    /* the current epoch is untouched by the past ones */
    ASSERT(s_src(d, 3, 11) == s);
    ASSERT_EQ(dedup_check(d, s, 100), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 101), DEDUP_NEW);
    ASSERT_EQ(st->epoch_changes, 1);
    dedup_destroy(&d);
}

TEST(test_past_epochs_bounded)
{
    dedup_t *d = dedup_new(64, 4);
    const dedup_stats_t *st = dedup_stats(d);
    /* epochs 1..6 with 10*e records each; an empty epoch 7 keeps nothing */
    dedup_source_t *s = NULL;
    for (uint64_t e = 1; e <= 6; e++) {
        s = s_src(d, 5, e);
        for (uint64_t q = 1; q <= 10 * e; q++)
            ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
    }
    ASSERT(s_src(d, 5, 7) == s);
    ASSERT(s_src(d, 5, 9) == s);
    dedup_verdict_t v;
    /* the last DEDUP_PAST_EPOCHS that saw something: 6, 5, 4, 3 */
    for (uint64_t e = 3; e <= 6; e++) {
        ASSERT(dedup_source(d, 5, e, &v) == s);
        ASSERT_EQ(v, DEDUP_PAST_EPOCH);
        ASSERT_EQ(dedup_check_past(d, s, e, 10 * e), DEDUP_DUPLICATE);
        ASSERT_EQ(dedup_check_past(d, s, e, 10 * e + 1), DEDUP_STALE_EPOCH);
        ASSERT_EQ(dedup_seen(d, 5, e, 1), DEDUP_SEEN);
    }
    /* 1 and 2 dropped out: they may have been seen, nobody can tell */
    for (uint64_t e = 1; e <= 2; e++) {
        ASSERT(dedup_source(d, 5, e, &v) == NULL);
        ASSERT_EQ(v, DEDUP_STALE_EPOCH);
        ASSERT_EQ(dedup_seen(d, 5, e, 1), DEDUP_UNKNOWN);
    }
    /* 7 and 8 saw nothing: known unseen, refused whole */
    for (uint64_t e = 7; e <= 8; e++) {
        ASSERT(dedup_source(d, 5, e, &v) == NULL);
        ASSERT_EQ(dedup_seen(d, 5, e, 1), DEDUP_UNSEEN);
    }
    ASSERT_EQ(st->stale_epoch, 4);
    dedup_destroy(&d);
}

TEST(test_past_epoch_with_gaps)
{
    dedup_t *d = dedup_new(256, 4);
    dedup_source_t *s = s_src(d, 8, 1);
    /* epoch 1: 1..10, 12, 14 (11 and 13 missing: acked 10, high 14) */
    for (uint64_t q = 1; q <= 10; q++)
        dedup_check(d, s, q);
    dedup_check(d, s, 12);
    dedup_check(d, s, 14);
    /* epoch 2: 1..5, then a gap wider than the window: 6..44 forgotten */
    ASSERT(s_src(d, 8, 2) == s);
    for (uint64_t q = 1; q <= 5; q++)
        dedup_check(d, s, q);
    ASSERT_EQ(dedup_check(d, s, 300), DEDUP_NEW);
    ASSERT_EQ(dedup_source_acked(s), 44);
    /* epoch 3 */
    ASSERT(s_src(d, 8, 3) == s);
    dedup_verdict_t v;
    ASSERT(dedup_source(d, 8, 1, &v) == s);
    ASSERT_EQ(v, DEDUP_PAST_EPOCH);
    ASSERT_EQ(dedup_past_acked(s, 1), 10);
    const dedup_verdict_t e1[15] = {DEDUP_STALE_EPOCH, DEDUP_DUPLICATE, DEDUP_DUPLICATE,
                                    DEDUP_DUPLICATE, DEDUP_DUPLICATE, DEDUP_DUPLICATE,
                                    DEDUP_DUPLICATE, DEDUP_DUPLICATE, DEDUP_DUPLICATE,
                                    DEDUP_DUPLICATE, DEDUP_DUPLICATE, DEDUP_STALE_EPOCH,
                                    DEDUP_DUPLICATE, DEDUP_STALE_EPOCH, DEDUP_DUPLICATE};
    for (uint64_t q = 0; q <= 14; q++)
        ASSERT_EQ(dedup_check_past(d, s, 1, q), e1[q]);
    ASSERT_EQ(dedup_check_past(d, s, 1, 15), DEDUP_STALE_EPOCH);
    ASSERT_EQ(dedup_seen(d, 8, 1, 11), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(d, 8, 1, 12), DEDUP_SEEN);
    /* epoch 2: 1..5 seen, 6..44 forgotten, 45..299 never came, 300 seen;
       256 seqs above acked are more than a past epoch keeps bits of */
    ASSERT_EQ(dedup_seen(d, 8, 2, 5), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(d, 8, 2, 6), DEDUP_UNSEEN);   /* the hole's ends */
    ASSERT_EQ(dedup_seen(d, 8, 2, 44), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(d, 8, 2, 20), DEDUP_UNKNOWN);
    ASSERT_EQ(dedup_seen(d, 8, 2, 45), DEDUP_UNKNOWN);
    ASSERT_EQ(dedup_seen(d, 8, 2, 300), DEDUP_UNKNOWN);
    ASSERT_EQ(dedup_seen(d, 8, 2, 301), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_check_past(d, s, 2, 5), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check_past(d, s, 2, 6), DEDUP_STALE_EPOCH);
    ASSERT_EQ(dedup_check_past(d, s, 2, 300), DEDUP_STALE_EPOCH);
    /* epoch 3: 1, then 70 (a gap of 68 that fits the window), then 4 */
    dedup_check(d, s, 1);
    dedup_check(d, s, 70);
    ASSERT(s_src(d, 8, 4) == s);
    ASSERT_EQ(dedup_seen(d, 8, 3, 1), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(d, 8, 3, 2), DEDUP_UNKNOWN);  /* 69 above acked: no bits kept */
    ASSERT_EQ(dedup_seen(d, 8, 3, 71), DEDUP_UNSEEN);
    /* epoch 4: 1, then 60: 59 seqs above acked, their bits are kept */
    dedup_check(d, s, 1);
    dedup_check(d, s, 60);
    ASSERT(s_src(d, 8, 5) == s);
    ASSERT_EQ(dedup_seen(d, 8, 4, 2), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(d, 8, 4, 59), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(d, 8, 4, 60), DEDUP_SEEN);
    ASSERT_EQ(dedup_check_past(d, s, 4, 60), DEDUP_DUPLICATE);
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
#define MODEL_PAST DEDUP_PAST_EPOCHS

/* What the model keeps of one epoch: its seen bits (MODEL_MAXSEQ of them),
   high, and the seqs the window slid past unseen ([hole_lo, hole_hi]). */
typedef struct {
    uint64_t epoch, high, hole_lo, hole_hi;
    uint8_t *seen;
} mepoch_t;

typedef struct {
    mepoch_t cur;
    uint64_t next;
    uint64_t pool[64];      /* seqs issued but not sent yet (reordering) */
    int pool_n;
    mepoch_t past[MODEL_PAST]; /* newest first; past[i].seen owned */
    int npast;
    uint64_t floor;         /* epochs below it: unknown */
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
s_seen(const mepoch_t *m, uint64_t q)
{
    return (m->seen[q >> 3] >> (q & 7)) & 1;
}

static uint64_t
s_model_acked(const mepoch_t *m, uint64_t window)
{
    uint64_t a = m->high >= window ? m->high - window : 0;
    while (a < m->high && s_seen(m, a + 1))
        a++;
    return a;
}

static bool
s_model_in_hole(const mepoch_t *m, uint64_t q)
{
    return m->hole_lo && q >= m->hole_lo && q <= m->hole_hi;
}

/* The model's answer for a seq of a past epoch: seen for sure, or not. */
static bool
s_model_past_seen(const mepoch_t *m, uint64_t q, uint64_t window)
{
    uint64_t acked = s_model_acked(m, window);
    if (q == 0 || q > m->high)
        return false;
    if (q <= acked)
        return !s_model_in_hole(m, q);
    return m->high - acked <= 64 && s_seen(m, q);
}

/* high moves to q: the seqs that leave the window unseen join the hole. */
static void
s_model_slide(mepoch_t *m, uint64_t q, uint64_t window)
{
    uint64_t from = m->high > window ? m->high - window : 0;
    uint64_t to = q > window ? q - window : 0;
    for (uint64_t x = from + 1; x <= to; x++)
        if (!s_seen(m, x)) {
            if (!m->hole_lo)
                m->hole_lo = x;
            m->hole_hi = x;
        }
    m->high = q;
}

TEST(test_random_against_model)
{
    const uint64_t W = 1024;
    dedup_t *d = dedup_new((uint32_t)W, MODEL_SOURCES);
    model_t m[MODEL_SOURCES];
    memset(m, 0, sizeof m);
    for (int i = 0; i < MODEL_SOURCES; i++) {
        m[i].cur.seen = calloc(MODEL_MAXSEQ / 8, 1);
        ASSERT(m[i].cur.seen);
        for (int k = 0; k < MODEL_PAST; k++) {
            m[i].past[k].seen = calloc(MODEL_MAXSEQ / 8, 1);
            ASSERT(m[i].past[k].seen);
        }
        m[i].cur.epoch = 1;
        m[i].next = 1;
    }
    uint64_t rng = 42;
    uint64_t n_new = 0, n_dup = 0, n_old = 0, n_stale = 0, n_past = 0, n_past_dup = 0;
    uint64_t n_past_stale = 0, n_unknown = 0;
    for (long op = 0; op < 1000000; op++) {
        int i = (int)(s_rand(&rng) % MODEL_SOURCES);
        model_t *mm = &m[i];
        uint64_t r = s_rand(&rng) % 1000;
        uint64_t epoch = mm->cur.epoch;
        if (r < 2 || mm->next > MODEL_MAXSEQ - 4 * W) {
            /* producer restart: newer epoch, seqs start over; the epoch
               that saw something is kept, the oldest kept one drops out */
            epoch = mm->cur.epoch + 1 + s_rand(&rng) % 3;
            if (mm->cur.high > 0) {
                uint8_t *spare = mm->past[MODEL_PAST - 1].seen;
                if (mm->npast == MODEL_PAST) {
                    mm->floor = mm->past[MODEL_PAST - 1].epoch + 1;
                    mm->npast--;
                }
                memmove(mm->past + 1, mm->past, MODEL_PAST - 1 > 0 ? (MODEL_PAST - 1) * sizeof mm->past[0] : 0);
                mm->past[0] = mm->cur;
                mm->npast++;
                mm->cur.seen = spare;
            }
            mm->cur.epoch = epoch;
            mm->cur.high = 0;
            mm->cur.hole_lo = mm->cur.hole_hi = 0;
            mm->next = 1;
            mm->pool_n = 0;
            memset(mm->cur.seen, 0, MODEL_MAXSEQ / 8);
        } else if (r < 5 && mm->cur.epoch > 1) {
            /* a zombie batch from an older epoch: a kept one or not */
            uint64_t e = mm->cur.epoch - 1 - s_rand(&rng) % 4;
            if (mm->npast > 0 && s_rand(&rng) % 2)
                e = mm->past[s_rand(&rng) % (uint64_t)mm->npast].epoch;
            const mepoch_t *pe = NULL;
            for (int k = 0; k < mm->npast; k++)
                if (mm->past[k].epoch == e)
                    pe = &mm->past[k];
            dedup_verdict_t v = DEDUP_NEW;
            dedup_source_t *s = dedup_source(d, (uint64_t)i + 100, e, &v);
            if (!pe) {
                ASSERT(s == NULL);
                ASSERT_EQ(v, DEDUP_STALE_EPOCH);
                ASSERT_EQ(dedup_seen(d, (uint64_t)i + 100, e, 1),
                          e >= mm->floor ? DEDUP_UNSEEN : DEDUP_UNKNOWN);
                n_stale++;
                continue;
            }
            ASSERT(s != NULL);
            ASSERT_EQ(v, DEDUP_PAST_EPOCH);
            ASSERT_EQ(dedup_past_acked(s, e), s_model_acked(pe, W));
            n_past++;
            for (int b = 0; b < 8; b++) {
                uint64_t q = s_rand(&rng) % (pe->high + 3);
                if (s_rand(&rng) % 2 && pe->high > 70)
                    q = pe->high - s_rand(&rng) % 70;   /* near the top: the bits */
                bool seen = s_model_past_seen(pe, q, W);
                ASSERT_EQ(dedup_check_past(d, s, e, q), seen ? DEDUP_DUPLICATE : DEDUP_STALE_EPOCH);
                dedup_seen_t got = dedup_seen(d, (uint64_t)i + 100, e, q);
                if (seen)
                    ASSERT_EQ(got, DEDUP_SEEN);
                else if (got == DEDUP_UNSEEN)
                    ASSERT(q == 0 || !s_seen(pe, q)); /* never unseen what was seen */
                n_past_dup += seen;
                n_past_stale += !seen;
            }
            continue;
        }
        mepoch_t *mc = &mm->cur;
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
            if (q == 0)
                want = DEDUP_TOO_OLD;
            else if (mc->high >= W && q <= mc->high - W) {
                /* below the window: seen, unless the window slid past it first */
                want = s_model_in_hole(mc, q) ? DEDUP_TOO_OLD : DEDUP_DUPLICATE;
                if (want == DEDUP_DUPLICATE)
                    ASSERT(s_seen(mc, q));
            } else if (s_seen(mc, q))
                want = DEDUP_DUPLICATE;
            else {
                want = DEDUP_NEW;
                if (q > mc->high)
                    s_model_slide(mc, q, W);
                mc->seen[q >> 3] |= (uint8_t)(1u << (q & 7));
            }
            dedup_verdict_t got = dedup_check(d, s, q);
            if (got != want)
                fprintf(stderr, "op %ld source %d seq %" PRIu64 " high %" PRIu64 "\n", op, i, q,
                        mc->high);
            ASSERT_EQ(got, want);
            n_new += want == DEDUP_NEW;
            n_dup += want == DEDUP_DUPLICATE;
            n_old += want == DEDUP_TOO_OLD;
            ASSERT_EQ(dedup_source_high(s), mc->high);
        }
        if (op % 97 == 0)
            ASSERT_EQ(dedup_source_acked(s), s_model_acked(mc, W));
        /* dedup_seen never claims what is not so */
        for (int k = 0; k < 2; k++) {
            uint64_t q = mc->high ? s_rand(&rng) % (mc->high + 2) : 1;
            dedup_seen_t got = dedup_seen(d, (uint64_t)i + 100, epoch, q);
            if (got == DEDUP_SEEN)
                ASSERT(q > 0 && s_seen(mc, q));
            else if (got == DEDUP_UNSEEN)
                ASSERT(q == 0 || !s_seen(mc, q));
            n_unknown += got == DEDUP_UNKNOWN;
        }
    }
    const dedup_stats_t *st = dedup_stats(d);
    ASSERT_EQ(st->accepted, n_new);
    ASSERT_EQ(st->duplicates, n_dup + n_past_dup);
    ASSERT_EQ(st->too_old, n_old);
    ASSERT_EQ(st->stale_epoch, n_stale);
    ASSERT_EQ(st->stale_records, n_past_stale);
    /* the mix actually exercised every path */
    ASSERT(n_new > 100000 && n_dup > 100000 && n_old > 1000 && n_stale > 100);
    ASSERT(n_past > 100 && n_past_dup > 100 && n_past_stale > 100 && n_unknown > 100);
    ASSERT(st->gaps > 0 && st->gaps_filled > 10000 && st->epoch_changes > 100);
    fprintf(stderr, "    new %" PRIu64 " dup %" PRIu64 " old %" PRIu64 " stale %" PRIu64
            " past %" PRIu64 " (dup %" PRIu64 ", stale %" PRIu64 ") gaps %" PRIu64
            " filled %" PRIu64 " epochs %" PRIu64 "\n",
            n_new, n_dup, n_old, n_stale, n_past, n_past_dup, n_past_stale, st->gaps,
            st->gaps_filled, st->epoch_changes);
    for (int i = 0; i < MODEL_SOURCES; i++) {
        free(m[i].cur.seen);
        for (int k = 0; k < MODEL_PAST; k++)
            free(m[i].past[k].seen);
    }
    dedup_destroy(&d);
}


/* ---- persistence: export, restore ---- */

#define P_SOURCES 12         /* ids 1..P_SOURCES; max_sources is less */
#define P_MAX_SOURCES 10
#define P_WINDOW 256u

/* The producers of the persistence tests: one per source id. */
typedef struct {
    uint64_t epoch, next;
    uint64_t pool[32];
    int pool_n;
} pgen_t;

typedef struct {
    uint64_t id;
    uint8_t *bytes;
    size_t len;
} pstate_t;

/* The "file": source id -> its last exported state. */
typedef struct {
    pstate_t s[P_SOURCES + 1];
    int calls;
} pstore_t;

static void
s_store_put(void *ctx, uint64_t id, const void *state, size_t len)
{
    pstore_t *st = ctx;
    ASSERT(id >= 1 && id <= P_SOURCES);
    pstate_t *e = &st->s[id];
    free(e->bytes);
    e->id = id;
    e->bytes = malloc(len);
    ASSERT(e->bytes);
    memcpy(e->bytes, state, len);
    e->len = len;
    st->calls++;
}

static void
s_store_free(pstore_t *st)
{
    for (int i = 0; i <= P_SOURCES; i++)
        free(st->s[i].bytes);
    memset(st, 0, sizeof *st);
}

/* One batch of one producer, applied to every dedup_t of d[0..nd): their
   verdicts (for the batch and for each seq) and watermarks must agree. */
static void
s_step(dedup_t **d, int nd, pgen_t *g, uint64_t *rng, uint64_t *n_new)
{
    uint64_t id = 1 + s_rand(rng) % P_SOURCES;
    pgen_t *p = &g[id];
    uint64_t r = s_rand(rng) % 1000;
    uint64_t epoch = p->epoch;
    if (r < 8) {                       /* producer restart */
        p->epoch += 1 + s_rand(rng) % 2;
        epoch = p->epoch;
        p->next = 1;
        p->pool_n = 0;
    } else if (r < 14 && p->epoch > 1) {
        epoch = p->epoch - 1;          /* a zombie batch */
    }
    dedup_source_t *src[4];
    dedup_verdict_t v0 = DEDUP_NEW;
    for (int k = 0; k < nd; k++) {
        dedup_verdict_t v = DEDUP_DUPLICATE;
        src[k] = dedup_source(d[k], id, epoch, &v);
        if (k == 0)
            v0 = v;
        ASSERT_EQ(v, v0);
        ASSERT_EQ(src[k] == NULL, src[0] == NULL);
    }
    if (!src[0])
        return;
    if (v0 == DEDUP_PAST_EPOCH) {
        /* a kept past epoch: verdicts only, nothing changes */
        for (int b = 0; b < 8; b++) {
            uint64_t q = s_rand(rng) % (p->next + P_WINDOW);
            dedup_verdict_t want = dedup_check_past(d[0], src[0], epoch, q);
            for (int m = 1; m < nd; m++)
                ASSERT_EQ(dedup_check_past(d[m], src[m], epoch, q), want);
        }
        return;
    }
    int batch = 1 + (int)(s_rand(rng) % 8);
    for (int b = 0; b < batch; b++) {
        uint64_t q, k = s_rand(rng) % 100;
        if (k < 60) {
            if (p->pool_n < 32) {
                uint64_t skip = s_rand(rng) % 40 == 0 ? s_rand(rng) % 8 : 0;
                if (s_rand(rng) % 300 == 0)
                    skip = s_rand(rng) % P_WINDOW;
                if (s_rand(rng) % 1000 == 0)
                    skip = P_WINDOW + s_rand(rng) % (2 * P_WINDOW);
                p->next += skip;
                p->pool[p->pool_n++] = p->next++;
            }
            int j = (int)(s_rand(rng) % (uint64_t)p->pool_n);
            q = p->pool[j];
            p->pool[j] = p->pool[--p->pool_n];
        } else if (k < 90) {
            uint64_t back = s_rand(rng) % (P_WINDOW + P_WINDOW / 4);
            q = p->next > back ? p->next - back : 0;
        } else {
            q = p->next > 1 ? 1 + s_rand(rng) % (p->next - 1) : 0;
        }
        dedup_verdict_t want = dedup_check(d[0], src[0], q);
        *n_new += want == DEDUP_NEW;
        for (int m = 1; m < nd; m++) {
            dedup_verdict_t got = dedup_check(d[m], src[m], q);
            if (got != want)
                fprintf(stderr, "source %" PRIu64 " seq %" PRIu64 " high %" PRIu64
                        " acked %" PRIu64 "\n", id, q, dedup_source_high(src[0]),
                        dedup_source_acked(src[0]));
            ASSERT_EQ(got, want);
        }
    }
    for (int m = 1; m < nd; m++) {
        ASSERT_EQ(dedup_source_high(src[m]), dedup_source_high(src[0]));
        ASSERT_EQ(dedup_source_acked(src[m]), dedup_source_acked(src[0]));
        ASSERT_EQ(dedup_source_epoch(src[m]), dedup_source_epoch(src[0]));
    }
}

/* The epoch of a state (the varint after the version byte). */
static uint64_t
s_epoch_of(const uint8_t *state)
{
    uint64_t e = 0;
    const uint8_t *q = state + 1;
    for (int sh = 0; sh < 64; sh += 7) {
        e |= (uint64_t)(*q & 0x7f) << sh;
        if (!(*q++ & 0x80))
            break;
    }
    return e;
}

/* A fresh dedup_t of `window` with every state of the store restored. */
static dedup_t *
s_restored(const pstore_t *st, uint32_t window)
{
    dedup_t *r = dedup_new(window, P_MAX_SOURCES);
    ASSERT(r);
    for (int i = 1; i <= P_SOURCES; i++)
        if (st->s[i].bytes)
            ASSERT_EQ(dedup_restore(r, st->s[i].id, st->s[i].bytes, st->s[i].len), 0);
    return r;
}

TEST(test_export_restore_random)
{
    dedup_t *a = dedup_new(P_WINDOW, P_MAX_SOURCES);
    ASSERT(a);
    pgen_t g[P_SOURCES + 1];
    for (int i = 0; i <= P_SOURCES; i++)
        g[i] = (pgen_t){.epoch = 1, .next = 1};
    pstore_t st;
    memset(&st, 0, sizeof st);
    uint64_t rng = 7, n_new = 0, restores = 0, big_gaps = 0;
    uint8_t buf[4096], buf2[sizeof buf];
    for (int round = 0; round < 3000; round++) {
        int steps = 1 + (int)(s_rand(&rng) % 40);
        for (int i = 0; i < steps; i++) {
            dedup_t *one[1] = {a};
            s_step(one, 1, g, &rng, &n_new);
        }
        /* the round's commit: only what changed */
        dedup_export_dirty(a, s_store_put, &st);

        /* The store now equals a full export of a: no change was missed. */
        for (uint64_t id = 1; id <= P_SOURCES; id++) {
            dedup_verdict_t v;
            if (!st.s[id].bytes)
                continue;
            uint64_t e = s_epoch_of(st.s[id].bytes); /* a's own epoch: no change */
            dedup_source_t *s = dedup_source(a, id, e, &v);
            ASSERT(s != NULL);
            size_t n = dedup_source_export(s, buf, sizeof buf);
            ASSERT(n <= sizeof buf && n <= dedup_export_max(a));
            ASSERT_EQ(dedup_source_export(s, NULL, 0), n);
            ASSERT_EQ(n, st.s[id].len);
            ASSERT(memcmp(buf, st.s[id].bytes, n) == 0);
            if (dedup_source_high(s) - dedup_source_acked(s) > 64)
                big_gaps++;
        }
        /* a dedup_source call that changed nothing left nothing dirty */
        int before = st.calls;
        dedup_export_dirty(a, s_store_put, &st);
        ASSERT_EQ(st.calls, before);

        if (round % 10 != 0)
            continue;
        /* A restart: restore the store into a fresh dedup_t, then feed it
           and a the same continuation. */
        dedup_t *r = s_restored(&st, P_WINDOW);
        restores++;
        for (uint64_t id = 1; id <= P_SOURCES; id++) {
            if (!st.s[id].bytes)
                continue;
            ASSERT_EQ(dedup_restore(r, id, st.s[id].bytes, st.s[id].len), 0); /* replace: idempotent */
        }
        dedup_t *both[2] = {a, r};
        int cont = 1 + (int)(s_rand(&rng) % 200);
        for (int i = 0; i < cont; i++)
            s_step(both, 2, g, &rng, &n_new);
        /* both export the same states for what both changed */
        pstore_t sa, sr;
        memset(&sa, 0, sizeof sa);
        memset(&sr, 0, sizeof sr);
        dedup_export_dirty(a, s_store_put, &sa);
        dedup_export_dirty(r, s_store_put, &sr);
        for (int i = 1; i <= P_SOURCES; i++) {
            ASSERT_EQ(sa.s[i].len, sr.s[i].len);
            if (sa.s[i].bytes)
                ASSERT(memcmp(sa.s[i].bytes, sr.s[i].bytes, sa.s[i].len) == 0);
            if (sa.s[i].bytes) /* a's export goes to the store as usual */
                s_store_put(&st, (uint64_t)i, sa.s[i].bytes, sa.s[i].len);
        }
        s_store_free(&sa);
        s_store_free(&sr);

        /* Another window: (acked, high] is kept exactly, so a larger
           window's export is byte-identical; a smaller one refuses a gap
           that does not fit. */
        dedup_t *big = dedup_new(4 * P_WINDOW, P_MAX_SOURCES), *small = dedup_new(64, P_MAX_SOURCES);
        ASSERT(big && small);
        for (uint64_t id = 1; id <= P_SOURCES; id++) {
            if (!st.s[id].bytes)
                continue;
            ASSERT_EQ(dedup_restore(big, id, st.s[id].bytes, st.s[id].len), 0);
            dedup_verdict_t v, va;
            uint64_t e = s_epoch_of(st.s[id].bytes);
            /* the past epochs came along: the same verdicts, the same answers */
            for (uint64_t pe = e > 6 ? e - 6 : 0; pe < e; pe++) {
                dedup_source_t *sb = dedup_source(big, id, pe, &v);
                dedup_source_t *sa_ = dedup_source(a, id, pe, &va);
                ASSERT_EQ(v, va);
                ASSERT_EQ(sb == NULL, sa_ == NULL);
                if (sb)
                    ASSERT_EQ(dedup_past_acked(sb, pe), dedup_past_acked(sa_, pe));
                for (int k = 0; k < 20; k++) {
                    uint64_t q = s_rand(&rng) % (4 * P_WINDOW);
                    ASSERT_EQ(dedup_seen(big, id, pe, q), dedup_seen(a, id, pe, q));
                }
            }
            for (int k = 0; k < 50; k++) {
                uint64_t q = s_rand(&rng) % (8 * P_WINDOW);
                ASSERT_EQ(dedup_seen(big, id, e, q), dedup_seen(a, id, e, q));
            }
            dedup_source_t *s;
            s = dedup_source(big, id, e, &v);
            ASSERT(s);
            ASSERT_EQ(dedup_source_export(s, buf2, sizeof buf2), st.s[id].len);
            ASSERT(memcmp(buf2, st.s[id].bytes, st.s[id].len) == 0);
            int rc = dedup_restore(small, id, st.s[id].bytes, st.s[id].len);
            ASSERT_EQ(rc, dedup_source_high(s) - dedup_source_acked(s) <= 64 ? 0 : -1);
        }
        dedup_destroy(&big);
        dedup_destroy(&small);
        dedup_destroy(&r);
        ASSERT(r == NULL);
    }
    ASSERT(restores >= 300 && n_new > 100000);
    ASSERT(big_gaps > 100); /* states with many bits were exercised */
    fprintf(stderr, "    restores %" PRIu64 " accepted %" PRIu64 " big gaps %" PRIu64 "\n",
            restores, n_new, big_gaps);
    s_store_free(&st);
    dedup_destroy(&a);
}

static void
s_count_export(void *ctx, uint64_t id, const void *state, size_t len)
{
    uint64_t *mask = ctx;
    ASSERT(id < 64 && len >= 4);
    ASSERT(!(*mask & (1ULL << id))); /* each source once */
    *mask |= 1ULL << id;
}

TEST(test_export_dirty_only)
{
    dedup_t *d = dedup_new(1024, 100);
    ASSERT(d);
    uint64_t seen = 0;
    dedup_export_dirty(d, s_count_export, &seen);
    ASSERT_EQ(seen, 0);
    for (uint64_t id = 1; id <= 10; id++) {
        dedup_source_t *s = s_src(d, id, 1);
        for (uint64_t q = 1; q <= 5; q++)
            ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
    }
    dedup_export_dirty(d, s_count_export, &seen);
    ASSERT_EQ(seen, 0x7FEULL); /* ids 1..10 */
    seen = 0;
    dedup_export_dirty(d, s_count_export, &seen);
    ASSERT_EQ(seen, 0);        /* nothing changed since */

    ASSERT_EQ(dedup_check(d, s_src(d, 2, 1), 6), DEDUP_NEW);       /* new seq */
    ASSERT_EQ(dedup_check(d, s_src(d, 3, 1), 3), DEDUP_DUPLICATE); /* no change */
    ASSERT_EQ(dedup_check(d, s_src(d, 4, 1), 0), DEDUP_TOO_OLD);   /* no change */
    (void)s_src(d, 5, 2);                                          /* epoch change */
    ASSERT_EQ(dedup_check(d, s_src(d, 6, 1), 100), DEDUP_NEW);      /* a gap */
    ASSERT_EQ(dedup_check(d, s_src(d, 6, 1), 50), DEDUP_NEW);       /* a fill */
    (void)s_src(d, 11, 1);                                         /* a new source */
    dedup_export_dirty(d, s_count_export, &seen);
    ASSERT_EQ(seen, (1ULL << 2) | (1ULL << 5) | (1ULL << 6) | (1ULL << 11));

    /* a restored source is not dirty, and holds what was exported */
    dedup_t *r = dedup_new(1024, 100);
    uint8_t buf[256];
    size_t n = dedup_source_export(s_src(d, 6, 1), buf, sizeof buf);
    ASSERT(n < 30);            /* compact: 100 - 5 bits */
    ASSERT_EQ(dedup_restore(r, 6, buf, n), 0);
    seen = 0;
    dedup_export_dirty(r, s_count_export, &seen);
    ASSERT_EQ(seen, 0);
    dedup_source_t *s6 = s_src(r, 6, 1);
    ASSERT_EQ(dedup_source_high(s6), 100);
    ASSERT_EQ(dedup_source_acked(s6), 5);
    ASSERT_EQ(dedup_check(r, s6, 50), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(r, s6, 5), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(r, s6, 100), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(r, s6, 7), DEDUP_NEW);
    ASSERT_EQ(dedup_check(r, s6, 6), DEDUP_NEW);
    ASSERT_EQ(dedup_source_acked(s6), 7);
    dedup_verdict_t v;
    ASSERT(dedup_source(r, 6, 0, &v) == NULL && v == DEDUP_STALE_EPOCH);
    /* an ordered stream's state is a few bytes */
    ASSERT(dedup_source_export(s_src(d, 1, 1), buf, sizeof buf) <= 7);
    dedup_destroy(&r);
    dedup_destroy(&d);
}

TEST(test_restore_version_1)
{
    /* a version-1 state: epoch 4, high 300, gap 0 (varint 300 = 0xac 0x02) */
    const uint8_t v1[] = {1, 4, 0xac, 0x02, 0};
    dedup_t *r = dedup_new(256, 4);
    ASSERT_EQ(dedup_restore(r, 3, v1, sizeof v1), 0);
    dedup_source_t *s = s_src(r, 3, 4);
    /* below the window: too_old, as version 1 had it; inside: duplicates */
    ASSERT_EQ(dedup_check(r, s, 44), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_check(r, s, 1), DEDUP_TOO_OLD);
    ASSERT_EQ(dedup_check(r, s, 45), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(r, s, 300), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(r, s, 301), DEDUP_NEW);
    /* no past epochs: an older batch is refused whole, and nobody can
       tell what it held */
    dedup_verdict_t v;
    ASSERT(dedup_source(r, 3, 3, &v) == NULL && v == DEDUP_STALE_EPOCH);
    ASSERT_EQ(dedup_seen(r, 3, 3, 1), DEDUP_UNKNOWN);
    /* from here on it keeps its epochs: epoch 4 becomes a past one */
    ASSERT(s_src(r, 3, 5) == s);
    ASSERT(dedup_source(r, 3, 4, &v) == s && v == DEDUP_PAST_EPOCH);
    ASSERT_EQ(dedup_check_past(r, s, 4, 10), DEDUP_STALE_EPOCH);
    ASSERT_EQ(dedup_check_past(r, s, 4, 100), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_seen(r, 3, 4, 10), DEDUP_UNKNOWN);
    ASSERT_EQ(dedup_seen(r, 3, 4, 301), DEDUP_SEEN);
    /* and exports version 2, which reads back the same */
    uint8_t buf[512];
    size_t n = dedup_source_export(s, buf, sizeof buf);
    ASSERT_EQ(buf[0], 2);
    dedup_t *r2 = dedup_new(256, 4);
    ASSERT_EQ(dedup_restore(r2, 3, buf, n), 0);
    for (uint64_t e = 2; e <= 6; e++)
        for (uint64_t q = 0; q <= 310; q++)
            ASSERT_EQ(dedup_seen(r2, 3, e, q), dedup_seen(r, 3, e, q));
    dedup_destroy(&r2);
    dedup_destroy(&r);
}

TEST(test_restore_malformed)
{
    dedup_t *d = dedup_new(256, 4);
    ASSERT(d);
    dedup_source_t *s = s_src(d, 9, 3);
    const uint64_t seqs[] = {1, 2, 3, 10, 12, 40, 41, 300, 250, 0};
    for (int i = 0; seqs[i]; i++)
        ASSERT_EQ(dedup_check(d, s, seqs[i]), DEDUP_NEW);
    uint8_t good[128];
    size_t n = dedup_source_export(s, good, sizeof good);
    ASSERT(n > 8 && n < sizeof good);
    ASSERT_EQ(dedup_source_export(s, good, 3), n); /* too small: sizes only */

    dedup_t *r = dedup_new(256, 4);
    ASSERT_EQ(dedup_restore(r, 9, good, n), 0);
    ASSERT_EQ(dedup_restore(r, 9, NULL, 0), -1);
    /* every truncation, and a trailing byte */
    for (size_t k = 0; k < n; k++)
        ASSERT_EQ(dedup_restore(r, 9, good, k), -1);
    uint8_t bad[256];
    memcpy(bad, good, n);
    bad[n] = 0;
    ASSERT_EQ(dedup_restore(r, 9, bad, n + 1), -1);
    /* version */
    bad[0] = 3;
    ASSERT_EQ(dedup_restore(r, 9, bad, n), -1);
    bad[0] = 0;
    ASSERT_EQ(dedup_restore(r, 9, bad, n), -1);
    /* a varint of 11 bytes; one of 10 bytes beyond 64 bits */
    uint8_t huge[16] = {1};
    memset(huge + 1, 0xff, 11);
    ASSERT_EQ(dedup_restore(r, 9, huge, 13), -1);
    memset(huge + 1, 0xff, 9);
    huge[10] = 0x02;
    huge[11] = 0;
    huge[12] = 0;
    ASSERT_EQ(dedup_restore(r, 9, huge, 13), -1);
    /* epoch 1, high 5, gap 6 > high */
    const uint8_t gap_high[] = {1, 1, 5, 6, 0x20};
    ASSERT_EQ(dedup_restore(r, 9, gap_high, sizeof gap_high), -1);
    /* a gap larger than the window, with its bits */
    uint8_t wide[1 + 3 + 3 + 64] = {1, 1, 0x80, 0x10 /* high 2048 */, 0x81, 0x02 /* gap 257 */};
    memset(wide + 6, 0, 33);
    wide[6 + 32] = 1; /* bit 256 = high */
    ASSERT_EQ(dedup_restore(r, 9, wide, 6 + 33), -1);
    /* the same with gap 256 = window: accepted */
    wide[4] = 0x80;
    wide[5] = 0x02;
    memset(wide + 6, 0, 32);
    wide[6 + 31] = 0x80; /* bit 255 = high */
    ASSERT_EQ(dedup_restore(r, 9, wide, 6 + 32), 0);
    dedup_source_t *ws = s_src(r, 9, 1);
    ASSERT_EQ(dedup_source_high(ws), 2048);
    ASSERT_EQ(dedup_source_acked(ws), 2048 - 256);
    const uint8_t ok_small[] = {1, 1, 10, 2, 0x02}; /* high 10, acked 8, 10 seen */
    ASSERT_EQ(dedup_restore(r, 9, ok_small, sizeof ok_small), 0);
    /* bit of acked+1 set; bit of high clear; padding set */
    const uint8_t b1[] = {1, 1, 10, 2, 0x03}, b2[] = {1, 1, 10, 2, 0x00}, b3[] = {1, 1, 10, 2, 0x06};
    ASSERT_EQ(dedup_restore(r, 9, b1, sizeof b1), -1);
    ASSERT_EQ(dedup_restore(r, 9, b2, sizeof b2), -1);
    ASSERT_EQ(dedup_restore(r, 9, b3, sizeof b3), -1);
    /* a refused restore changed nothing */
    dedup_source_t *rs = s_src(r, 9, 1);
    ASSERT_EQ(dedup_source_high(rs), 10);
    ASSERT_EQ(dedup_source_acked(rs), 8);
    /* version 2: epoch 9, high 10, gap 0, hole, floor, past epochs */
    const uint8_t v2ok[] = {2, 9, 10, 0, 3, 2, 1, 1, 2, 7, 20, 0, 0, 5, 3, 2, 0x02, 0};
    /* hole 3..5 (exact); floor 1; past 7 (high 20, gap 0, no hole), 5
       (high 3, gap 2, bits 0b10, no hole) */
    ASSERT_EQ(dedup_restore(r, 9, v2ok, sizeof v2ok), 0);
    ASSERT_EQ(dedup_seen(r, 9, 9, 2), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(r, 9, 9, 4), DEDUP_UNKNOWN);
    ASSERT_EQ(dedup_seen(r, 9, 9, 3), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(r, 9, 9, 5), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(r, 9, 7, 20), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(r, 9, 5, 1), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(r, 9, 5, 2), DEDUP_UNSEEN);
    ASSERT_EQ(dedup_seen(r, 9, 5, 3), DEDUP_SEEN);
    ASSERT_EQ(dedup_seen(r, 9, 6, 1), DEDUP_UNSEEN); /* between kept epochs, >= floor */
    ASSERT_EQ(dedup_seen(r, 9, 0, 1), DEDUP_UNKNOWN);
    {
        uint8_t v[sizeof v2ok];
        const struct { int at; uint8_t val; } damage[] = {
            {4, 0},                /* no hole: the bytes after it misread */
            {5, 8},                /* hole 3..11 > acked */
            {6, 2},                /* exact is 0 or 1 */
            {7, 10},               /* floor above the epoch */
            {8, DEDUP_PAST_EPOCHS + 1}, /* too many past epochs */
            {9, 9},                /* past epoch not below the current one */
            {13, 7},               /* past epochs not decreasing */
            {13, 0},               /* past epoch below floor */
            {10, 0},               /* past high 0 */
            {15, 4},               /* past gap above its high */
            {16, 0x03},            /* past bits: acked+1 seen */
            {16, 0x00},            /* past bits: high unseen */
        };
        for (size_t k = 0; k < sizeof damage / sizeof damage[0]; k++) {
            memcpy(v, v2ok, sizeof v);
            v[damage[k].at] = damage[k].val;
            if (dedup_restore(r, 9, v, sizeof v) != -1)
                fprintf(stderr, "damage %zu accepted\n", k);
            ASSERT_EQ(dedup_restore(r, 9, v, sizeof v), -1);
        }
        for (size_t k = 0; k < sizeof v2ok; k++)
            ASSERT_EQ(dedup_restore(r, 9, v2ok, k), -1);
    }
    ASSERT_EQ(dedup_restore(r, 9, ok_small, sizeof ok_small), 0);
    /* max_sources */
    ASSERT_EQ(dedup_restore(r, 1, good, n), 0);
    ASSERT_EQ(dedup_restore(r, 2, good, n), 0);
    ASSERT_EQ(dedup_restore(r, 3, good, n), 0);
    ASSERT_EQ(dedup_restore(r, 4, good, n), -1);
    ASSERT_EQ(dedup_restore(r, 3, good, n), 0);   /* an existing one: replaced */

    /* random bytes and random damage: never a crash (ASan build), and an
       accepted state re-exports within bounds */
    uint64_t rng = 99, accepted = 0;
    for (int i = 0; i < 200000; i++) {
        size_t len = (size_t)(s_rand(&rng) % 48);
        uint8_t *buf = malloc(len ? len : 1); /* exact size: ASan sees over-reads */
        ASSERT(buf);
        if (i & 1 && len <= n) {
            memcpy(buf, good, len);
            buf[s_rand(&rng) % (len ? len : 1)] ^= (uint8_t)(1u << (s_rand(&rng) % 8));
        } else {
            for (size_t k = 0; k < len; k++)
                buf[k] = (uint8_t)s_rand(&rng);
            if (len)
                buf[0] = 1;
        }
        if (dedup_restore(r, 3, buf, len) == 0) {
            /* accepted: consistent enough to export and restore again */
            accepted++;
            dedup_verdict_t v;
            dedup_source_t *x = dedup_source(r, 3, s_epoch_of(buf), &v);
            ASSERT(x);
            ASSERT(dedup_source_acked(x) <= dedup_source_high(x));
            ASSERT(dedup_source_high(x) - dedup_source_acked(x) <= 256);
            uint8_t again[64];
            size_t m = dedup_source_export(x, again, sizeof again);
            ASSERT(m <= sizeof again);
            ASSERT_EQ(dedup_restore(r, 3, again, m), 0);
        }
        free(buf);
    }
    ASSERT(accepted > 0);
    dedup_destroy(&r);
    dedup_destroy(&d);
}

/* ---- aging ---- */

/* One state per source id (1..8): what the store would hold. */
typedef struct {
    uint8_t b[9][4096];
    size_t n[9];
} astore_t;

static void
s_astore_put(void *ctx, uint64_t id, const void *state, size_t len)
{
    astore_t *st = ctx;
    ASSERT(id >= 1 && id <= 8 && len <= sizeof st->b[0]);
    memcpy(st->b[id], state, len);
    st->n[id] = len;
}

/* A source leaves memory only once its exported state is durable and it
   is not dirty; it comes back by dedup_restore with every watermark,
   earlier epochs' too, so a resend after the eviction is a duplicate. */
TEST(test_aging_idle_and_reload)
{
    static astore_t st;
    dedup_t *d = dedup_new(64, 4);
    dedup_set_aging(d, 1000);
    dedup_rounds(d, 1, 0, 0);
    dedup_source_t *s = s_src(d, 1, 1);
    for (uint64_t q = 1; q <= 5; q++)
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
    s = s_src(d, 1, 2); /* a producer restart: epoch 1 becomes a past epoch */
    for (uint64_t q = 1; q <= 3; q++)
        ASSERT_EQ(dedup_check(d, s, q), DEDUP_NEW);
    s = s_src(d, 2, 1);
    ASSERT_EQ(dedup_check(d, s, 1), DEDUP_NEW);
    dedup_export_dirty(d, s_astore_put, &st); /* round 1's state */
    ASSERT(st.n[1] > 0 && st.n[2] > 0);

    /* idle, but round 1 is not durable yet: nothing leaves */
    dedup_rounds(d, 2, 0, 5000);
    ASSERT(dedup_has(d, 1) && dedup_has(d, 2));
    ASSERT_EQ(dedup_stats(d)->evicted, 0);
    /* round 1 durable: both idle sources leave */
    dedup_rounds(d, 3, 1, 6000);
    ASSERT(!dedup_has(d, 1) && !dedup_has(d, 2));
    ASSERT_EQ(dedup_stats(d)->evicted, 2);
    ASSERT_EQ(dedup_stats(d)->evicted_idle, 2);
    ASSERT_EQ(dedup_stats(d)->sources, 0);

    /* back from the store: the resends are duplicates, in both epochs */
    ASSERT_EQ(dedup_restore(d, 1, st.b[1], st.n[1]), 0);
    dedup_verdict_t v;
    s = dedup_source(d, 1, 2, &v);
    ASSERT(s && v == DEDUP_NEW);
    ASSERT_EQ(dedup_source_acked(s), 3);
    ASSERT_EQ(dedup_check(d, s, 3), DEDUP_DUPLICATE);
    ASSERT_EQ(dedup_check(d, s, 4), DEDUP_NEW);
    s = dedup_source(d, 1, 1, &v);
    ASSERT(s && v == DEDUP_PAST_EPOCH);
    ASSERT_EQ(dedup_past_acked(s, 1), 5);
    ASSERT_EQ(dedup_check_past(d, s, 1, 2), DEDUP_DUPLICATE);

    /* source 1 changed (seq 4) and is dirty: idle or not, it stays until
       that change is exported and durable */
    dedup_rounds(d, 4, 3, 100000);
    ASSERT(dedup_has(d, 1));
    dedup_export_dirty(d, s_astore_put, &st); /* round 4's state */
    dedup_rounds(d, 5, 3, 200000);
    ASSERT(dedup_has(d, 1));
    dedup_rounds(d, 6, 4, 300000);
    ASSERT(!dedup_has(d, 1));
    ASSERT_EQ(dedup_restore(d, 1, st.b[1], st.n[1]), 0);
    s = dedup_source(d, 1, 2, &v);
    ASSERT(s && v == DEDUP_NEW);
    ASSERT_EQ(dedup_check(d, s, 4), DEDUP_DUPLICATE);
    dedup_destroy(&d);
}

/* A full table makes room by evicting the least recently used durable
   source; when none may leave, a new source is refused, never a dirty
   one dropped. idle_ns 0: no idle eviction. */
TEST(test_aging_room)
{
    static astore_t st;
    dedup_t *d = dedup_new(64, 2);
    dedup_set_aging(d, 0);
    dedup_rounds(d, 1, 0, 0);
    dedup_source_t *s = s_src(d, 1, 1);
    ASSERT_EQ(dedup_check(d, s, 1), DEDUP_NEW);
    s = s_src(d, 2, 1);
    ASSERT_EQ(dedup_check(d, s, 1), DEDUP_NEW);
    dedup_verdict_t v;
    /* both dirty: no room */
    ASSERT(dedup_source(d, 3, 1, &v) == NULL);
    ASSERT_EQ(v, DEDUP_TOO_MANY_SOURCES);
    dedup_export_dirty(d, s_astore_put, &st);
    dedup_rounds(d, 2, 0, 1000000);
    ASSERT(dedup_source(d, 3, 1, &v) == NULL); /* exported, not durable */
    dedup_rounds(d, 3, 1, 2000000000);         /* no idle eviction with 0 */
    ASSERT(dedup_has(d, 1) && dedup_has(d, 2));
    s = dedup_source(d, 1, 1, &v); /* 1 is now the most recently used */
    ASSERT(s && v == DEDUP_NEW);
    s = s_src(d, 3, 1); /* evicts 2, the least recently used */
    ASSERT(!dedup_has(d, 2) && dedup_has(d, 1) && dedup_has(d, 3));
    ASSERT_EQ(dedup_stats(d)->evicted_full, 1);
    ASSERT_EQ(dedup_check(d, s, 1), DEDUP_NEW);
    /* 2 comes back in place of 1 (durable, not dirty: 3 is dirty) */
    ASSERT_EQ(dedup_restore(d, 2, st.b[2], st.n[2]), 0);
    ASSERT(!dedup_has(d, 1) && dedup_has(d, 3));
    s = dedup_source(d, 2, 1, &v);
    ASSERT(s && v == DEDUP_NEW);
    ASSERT_EQ(dedup_check(d, s, 1), DEDUP_DUPLICATE);
    /* 2 (restored: durable) may leave, 3 (dirty) may not: 1 comes back */
    ASSERT_EQ(dedup_restore(d, 1, st.b[1], st.n[1]), 0);
    ASSERT(dedup_has(d, 3) && dedup_has(d, 1) && !dedup_has(d, 2));
    /* 1 restored, 3 dirty: one more restore evicts 1, then nothing may go */
    ASSERT_EQ(dedup_restore(d, 2, st.b[2], st.n[2]), 0);
    ASSERT(dedup_has(d, 3) && dedup_has(d, 2));
    dedup_destroy(&d);
}

int
main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_bad_arguments);
    RUN(test_in_order);
    RUN(test_duplicates);
    RUN(test_reorder_within_window);
    RUN(test_window_slide_with_gaps);
    RUN(test_ack_watermark);
    RUN(test_epochs);
    RUN(test_past_epochs_bounded);
    RUN(test_past_epoch_with_gaps);
    RUN(test_too_many_sources);
    RUN(test_random_against_model);
    RUN(test_export_dirty_only);
    RUN(test_restore_version_1);
    RUN(test_restore_malformed);
    RUN(test_export_restore_random);
    RUN(test_aging_idle_and_reload);
    RUN(test_aging_room);
    return test_done();
}
