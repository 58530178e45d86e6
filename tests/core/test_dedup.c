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
    uint8_t buf[1 + 30 + P_WINDOW / 8], buf2[sizeof buf];
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
            dedup_verdict_t v;
            uint64_t e = s_epoch_of(st.s[id].bytes);
            ASSERT(e >= 1 && dedup_source(big, id, e - 1, &v) == NULL && v == DEDUP_STALE_EPOCH);
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
    ASSERT(dedup_source_export(s_src(d, 1, 1), buf, sizeof buf) <= 4);
    dedup_destroy(&r);
    dedup_destroy(&d);
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
    bad[0] = 2;
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
    RUN(test_too_many_sources);
    RUN(test_random_against_model);
    RUN(test_export_dirty_only);
    RUN(test_restore_malformed);
    RUN(test_export_restore_random);
    return test_done();
}
