/*  test_strtab.c - the batch string table: dedupe, 1-based indices, the
    65535-string limit, clear and reuse. */
#include "strtab.h"

#include "test.h"

TEST(test_dedupe_and_indices)
{
    strtab_t *t = strtab_new();
    ASSERT(t);
    ASSERT_EQ(strtab_count(t), 0);
    ASSERT_EQ(strtab_add(t, NULL), 0);
    ASSERT_EQ(strtab_add(t, ""), 0);
    ASSERT_EQ(strtab_add(t, "1000"), 1);
    ASSERT_EQ(strtab_add(t, "L01"), 2);
    ASSERT_EQ(strtab_add(t, "1000"), 1);
    char buf[8] = "L01";          /* a different pointer, same contents */
    ASSERT_EQ(strtab_add(t, buf), 2);
    buf[2] = '2';                 /* the table kept its own copy */
    ASSERT_EQ(strtab_add(t, buf), 3);
    ASSERT_EQ(strtab_count(t), 3);
    const char *const *s = strtab_strings(t);
    ASSERT_STREQ(s[0], "1000");
    ASSERT_STREQ(s[1], "L01");
    ASSERT_STREQ(s[2], "L02");
    ASSERT_EQ(strtab_bytes(t), 5 + 4 + 4);
    strtab_destroy(&t);
    ASSERT(t == NULL);
    strtab_destroy(&t); /* safe twice */
}

TEST(test_many_and_full)
{
    strtab_t *t = strtab_new();
    ASSERT(t);
    char buf[32];
    for (uint32_t i = 0; i < FP_BATCH_STRINGS_MAX; i++) {
        snprintf(buf, sizeof(buf), "RM-%06u", i);
        ASSERT_EQ(strtab_add(t, buf), (int)i + 1);
    }
    ASSERT_EQ(strtab_count(t), FP_BATCH_STRINGS_MAX);
    /* Existing strings are still found when full; new ones are refused. */
    ASSERT_EQ(strtab_add(t, "RM-000000"), 1);
    ASSERT_EQ(strtab_add(t, "RM-065534"), 65535);
    ASSERT_EQ(strtab_add(t, "RM-NEW"), -1);
    ASSERT_EQ(strtab_add(t, ""), 0);
    ASSERT_EQ(strtab_count(t), FP_BATCH_STRINGS_MAX);
    const char *const *s = strtab_strings(t);
    for (uint32_t i = 0; i < FP_BATCH_STRINGS_MAX; i += 997) {
        snprintf(buf, sizeof(buf), "RM-%06u", i);
        ASSERT_STREQ(s[i], buf);
    }
    strtab_destroy(&t);
}

TEST(test_clear_and_reuse)
{
    strtab_t *t = strtab_new();
    ASSERT(t);
    char buf[64];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 3000; i++) {
            /* Long strings too, to cross arena chunk boundaries. */
            snprintf(buf, sizeof(buf), "%d-%s-%d", round, i % 7 ? "x" : "a-long-material-name-xxxxxxxxxxx", i);
            ASSERT_EQ(strtab_add(t, buf), i + 1);
        }
        ASSERT_EQ(strtab_count(t), 3000);
        snprintf(buf, sizeof(buf), "%d-x-1", round);
        ASSERT_EQ(strtab_add(t, buf), 2);
        strtab_clear(t);
        ASSERT_EQ(strtab_count(t), 0);
        ASSERT_EQ(strtab_bytes(t), 0);
        /* Nothing of the last batch is found any more. */
        ASSERT_EQ(strtab_add(t, buf), 1);
        ASSERT_STREQ(strtab_strings(t)[0], buf);
        strtab_clear(t);
    }
    /* A string longer than any arena chunk. */
    size_t big = 3u << 20;
    char *s = malloc(big + 1);
    ASSERT(s);
    memset(s, 'z', big);
    s[big] = 0;
    ASSERT_EQ(strtab_add(t, "a"), 1);
    ASSERT_EQ(strtab_add(t, s), 2);
    ASSERT_EQ(strtab_add(t, s), 2);
    ASSERT_EQ(strlen(strtab_strings(t)[1]), big);
    ASSERT_STREQ(strtab_strings(t)[0], "a");
    free(s);
    strtab_destroy(&t);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_dedupe_and_indices);
    RUN(test_many_and_full);
    RUN(test_clear_and_reuse);
    return test_done();
}
