/*  test_utf8.c - UTF-8 validation, cutting on character boundaries, repair. */
#include "test.h"
#include "utf8.h"

static int s_seq(const char *s, size_t n)
{
    return fp_utf8_seq((const unsigned char *)s, n);
}

TEST(test_seq_valid_and_invalid)
{
    ASSERT_EQ(s_seq("A", 1), 1);
    ASSERT_EQ(s_seq("\xC3\xA4", 2), 2);          /* ä */
    ASSERT_EQ(s_seq("\xE2\x82\xAC", 3), 3);      /* € */
    ASSERT_EQ(s_seq("\xF0\x9F\x98\x80", 4), 4);  /* U+1F600 */
    ASSERT_EQ(s_seq("\xF4\x8F\xBF\xBF", 4), 4);  /* U+10FFFF */
    ASSERT_EQ(s_seq("\x80", 1), 0);              /* stray continuation */
    ASSERT_EQ(s_seq("\xC0\xAF", 2), 0);          /* overlong '/' */
    ASSERT_EQ(s_seq("\xC1\xBF", 2), 0);
    ASSERT_EQ(s_seq("\xE0\x80\xAF", 3), 0);      /* overlong, 3 bytes */
    ASSERT_EQ(s_seq("\xED\xA0\x80", 3), 0);      /* surrogate U+D800 */
    ASSERT_EQ(s_seq("\xF0\x8F\xBF\xBF", 4), 0);  /* overlong, 4 bytes */
    ASSERT_EQ(s_seq("\xF4\x90\x80\x80", 4), 0);  /* above U+10FFFF */
    ASSERT_EQ(s_seq("\xF5\x80\x80\x80", 4), 0);
    ASSERT_EQ(s_seq("\xFF", 1), 0);
    ASSERT_EQ(s_seq("\xC3\x41", 2), 0);          /* lead then ASCII */
    ASSERT_EQ(s_seq("\xE2\x82", 2), -3);         /* cut short by n */
    ASSERT_EQ(s_seq("\xF0\x9F", 2), -4);
    ASSERT_EQ(s_seq("\xC3", 1), -2);
}

TEST(test_valid)
{
    ASSERT(fp_utf8_valid("", 0));
    ASSERT(fp_utf8_valid("plain", 5));
    ASSERT(fp_utf8_valid("P\0A", 3)); /* NUL is a character */
    ASSERT(fp_utf8_valid("Stra\xC3\x9F" "e \xE2\x82\xAC", 11));
    ASSERT(!fp_utf8_valid("Stra\xC3", 5));
    ASSERT(!fp_utf8_valid("a\xFF" "b", 3));
}

TEST(test_cut_on_boundaries)
{
    const char *s = "ab\xE2\x82\xAC" "c"; /* a b € c: 6 bytes */
    ASSERT_EQ(fp_utf8_cut(s, 6, 6), 6);
    ASSERT_EQ(fp_utf8_cut(s, 6, 5), 5);
    ASSERT_EQ(fp_utf8_cut(s, 6, 4), 2); /* never inside the euro sign */
    ASSERT_EQ(fp_utf8_cut(s, 6, 3), 2);
    ASSERT_EQ(fp_utf8_cut(s, 6, 2), 2);
    ASSERT_EQ(fp_utf8_cut(s, 6, 0), 0);
    ASSERT_EQ(fp_utf8_cut("a\xFF" "b", 3, 2), 2); /* an invalid byte counts as one */
}

TEST(test_repair)
{
    char out[32];
    ASSERT_EQ(fp_utf8_repair(out, sizeof out, "ok", 2), 2);
    ASSERT_STREQ(out, "ok");
    ASSERT_EQ(fp_utf8_repair(out, sizeof out, "a\xFF" "b", 3), 5);
    ASSERT_STREQ(out, "a\xEF\xBF\xBD" "b");
    ASSERT(fp_utf8_valid(out, 5));
    /* a character cut at the end of the input is invalid there */
    fp_utf8_repair(out, sizeof out, "x\xE2\x82", 3);
    ASSERT_STREQ(out, "x\xEF\xBF\xBD\xEF\xBF\xBD");
    /* cut to fit, on a boundary */
    char small[5];
    ASSERT_EQ(fp_utf8_repair(small, sizeof small, "ab\xE2\x82\xAC", 5), 2);
    ASSERT_STREQ(small, "ab");
    ASSERT_EQ(fp_utf8_repair(small, sizeof small, "abc\xE2\x82\xAC", 6), 3);
    /* every result is valid, whatever the input */
    unsigned char junk[64];
    unsigned x = 12345;
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            x = x * 1103515245u + 12345u;
            junk[i] = (unsigned char)(x >> 16);
        }
        char big[64 * 3 + 1];
        size_t n = fp_utf8_repair(big, sizeof big, (const char *)junk, sizeof junk);
        ASSERT(fp_utf8_valid(big, n));
        for (size_t m = 0; m <= sizeof junk; m += 7)
            ASSERT(fp_utf8_cut((const char *)junk, sizeof junk, m) <= m);
    }
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_seq_valid_and_invalid);
    RUN(test_valid);
    RUN(test_cut_on_boundaries);
    RUN(test_repair);
    return test_done();
}
