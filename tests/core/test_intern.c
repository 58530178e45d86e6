/*  test_intern.c - the refcounted interner: same string same symbol, strings
    freed with their last reference, ids reused, table growth and deletion,
    short (inline) and long strings, batch lookups. */
#include "intern.h"

#include "test.h"

TEST(test_basic)
{
    intern_t *in = intern_new();
    ASSERT(in);
    ASSERT_EQ(intern_acquire(in, "", 0), INTERN_EMPTY);
    ASSERT_STREQ(intern_str(in, INTERN_EMPTY, NULL), "");
    uint32_t a = intern_acquire(in, "plantXYZ", 5); /* not NUL-terminated at 5 */
    uint32_t b = intern_acquire(in, "plant", 5);
    ASSERT(a != INTERN_EMPTY && a != INTERN_NOMEM);
    ASSERT_EQ(a, b);
    uint32_t len = 99;
    ASSERT_STREQ(intern_str(in, a, &len), "plant");
    ASSERT_EQ(len, 5);
    uint32_t c = intern_acquire(in, "order", 5);
    ASSERT(c != a);
    ASSERT_EQ(intern_count(in), 2);
    intern_release(in, a);
    ASSERT_EQ(intern_count(in), 2); /* one reference left */
    intern_ref(in, a);
    intern_release(in, a);
    intern_release(in, a);
    ASSERT_EQ(intern_count(in), 1);
    uint32_t d = intern_acquire(in, "line", 4); /* reuses a's id */
    ASSERT_EQ(d, a);
    ASSERT_STREQ(intern_str(in, d, NULL), "line");
    ASSERT_EQ(intern_acquire(in, "order", 5), c);
    intern_release(in, c);
    intern_release(in, c);
    intern_release(in, d);
    ASSERT_EQ(intern_count(in), 0);
    intern_destroy(&in);
    ASSERT(in == NULL);
    intern_destroy(&in);
}

/* Many strings in and out in random order: lookups stay right through
   growth and backward-shift deletions. */
TEST(test_churn)
{
    enum { N = 50000 };
    intern_t *in = intern_new();
    static uint32_t sym[N], refs[N];
    char buf[32];
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 400000; round++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t i = (uint32_t)(x % N);
        int n = snprintf(buf, sizeof buf, i % 7 ? "s%u" : "a-long-string-number-%u", i);
        if (refs[i] == 0 || (x >> 40) % 3 != 0) {
            uint32_t s = intern_acquire(in, buf, (uint32_t)n);
            ASSERT(s != INTERN_NOMEM && s != INTERN_EMPTY);
            if (refs[i])
                ASSERT_EQ(s, sym[i]);
            sym[i] = s;
            refs[i]++;
        } else {
            ASSERT_STREQ(intern_str(in, sym[i], NULL), buf);
            intern_release(in, sym[i]);
            refs[i]--;
        }
    }
    uint32_t live = 0;
    for (int i = 0; i < N; i++) {
        if (!refs[i])
            continue;
        live++;
        snprintf(buf, sizeof buf, i % 7 ? "s%d" : "a-long-string-number-%d", i);
        ASSERT_STREQ(intern_str(in, sym[i], NULL), buf);
    }
    ASSERT_EQ(intern_count(in), live);
    for (int i = 0; i < N; i++)
        while (refs[i]) {
            intern_release(in, sym[i]);
            refs[i]--;
        }
    ASSERT_EQ(intern_count(in), 0);
    intern_destroy(&in);
}

/* Lengths around INTERN_SHORT (inline in the table slot or not), up to
   FP_STRING_MAX-like lengths; strings that differ only in their last byte. */
TEST(test_lengths)
{
    intern_t *in = intern_new();
    char buf[100];
    uint32_t sym[100];
    for (uint32_t len = 1; len < 100; len++) {
        memset(buf, 'x', len);
        buf[len - 1] = 'y';
        sym[len] = intern_acquire(in, buf, len);
        ASSERT(sym[len] != INTERN_NOMEM && sym[len] != INTERN_EMPTY);
        buf[len - 1] = 'z'; /* same length, same prefix: another string */
        uint32_t other = intern_acquire(in, buf, len);
        ASSERT(other != sym[len]);
        intern_release(in, other);
    }
    ASSERT_EQ(intern_count(in), 99);
    for (uint32_t len = 1; len < 100; len++) {
        memset(buf, 'x', len);
        buf[len - 1] = 'y';
        buf[len] = '\0';
        ASSERT_EQ(intern_acquire(in, buf, len), sym[len]);
        uint32_t l = 0;
        ASSERT_STREQ(intern_str(in, sym[len], &l), buf);
        ASSERT_EQ(l, len);
        intern_release(in, sym[len]);
        intern_release(in, sym[len]);
    }
    ASSERT_EQ(intern_count(in), 0);
    intern_destroy(&in);
}

/* intern_find_many over more strings than one prefetch group: interned
   ones found without a reference, others absent, "" empty; the hashes are
   intern_hash's. */
TEST(test_find_many)
{
    enum { N = 700 };
    intern_t *in = intern_new();
    static char str[N][48];
    static const char *s[N];
    static uint32_t len[N], out[N], want[N];
    static uint64_t h[N];
    for (int i = 0; i < N; i++) {
        len[i] = i % 50 == 0 ? 0
                             : (uint32_t)snprintf(str[i], sizeof str[i],
                                                  i % 3 ? "k%d" : "a-much-longer-key-%d", i);
        s[i] = str[i];
        want[i] = i % 50 == 0 ? INTERN_EMPTY
                  : i % 2     ? intern_acquire(in, s[i], len[i])
                              : INTERN_ABSENT;
    }
    intern_find_many(in, N, s, len, h, out);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(out[i], want[i]);
        ASSERT_EQ(h[i], intern_hash(s[i], len[i]));
        if (want[i] == INTERN_ABSENT) {
            uint32_t sym = intern_acquire_hashed(in, s[i], len[i], h[i]);
            ASSERT(sym != INTERN_NOMEM && sym != INTERN_EMPTY);
            ASSERT_EQ(intern_acquire(in, s[i], len[i]), sym);
            intern_release(in, sym);
            want[i] = sym;
        }
    }
    intern_find_many(in, N, s, len, h, out);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(out[i], want[i]);
    for (int i = 0; i < N; i++)
        intern_release(in, want[i]);
    ASSERT_EQ(intern_count(in), 0);
    intern_find_many(in, N, s, len, h, out);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(out[i], i % 50 == 0 ? INTERN_EMPTY : INTERN_ABSENT);
    intern_destroy(&in);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_basic);
    RUN(test_churn);
    RUN(test_lengths);
    RUN(test_find_many);
    return test_done();
}
