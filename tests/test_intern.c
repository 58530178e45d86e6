/*  test_intern.c - the refcounted interner: same string same symbol, strings
    freed with their last reference, ids reused, table growth and deletion. */
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
        int n = snprintf(buf, sizeof buf, "s%u", i);
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
        snprintf(buf, sizeof buf, "s%d", i);
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

int main(void)
{
    RUN(test_basic);
    RUN(test_churn);
    return 0;
}
