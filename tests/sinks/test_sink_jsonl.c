/*  test_sink_jsonl.c - the jsonl sink's position file parser
    (sink_jsonl.h): what the sink writes, what a hand edit may look like,
    and the damaged files the old sscanf took (a sign wrapping to 2^64-1,
    text after the numbers, a value past 2^64-1). Delivery, rotation and
    crashes are tested end to end (tests/e2e/t_jsonl.py). */
#include "sink_jsonl.h"
#include "test.h"

#include <stdint.h>

static int s_parse(const char *text, uint64_t v[3])
{
    v[0] = v[1] = v[2] = 77;
    return fp_jsonl_parse_position(text, strlen(text), &v[0], &v[1], &v[2]);
}

static void s_damaged(const char *text)
{
    uint64_t v[3];
    if (s_parse(text, v) != -1)
        fprintf(stderr, "accepted: '%s'\n", text);
    ASSERT_EQ(s_parse(text, v), -1);
    ASSERT(v[0] == 77 && v[1] == 77 && v[2] == 77); /* untouched */
}

TEST(test_position_accepted)
{
    uint64_t v[3];
    /* as the sink writes it: "<position> <pending first> <pending last>\n" */
    ASSERT_EQ(s_parse("120 101 120\n", v), 0);
    ASSERT(v[0] == 120 && v[1] == 101 && v[2] == 120);
    /* edited by hand: tabs, CRLF, no newline, nothing pending */
    ASSERT_EQ(s_parse("5\t0  5 \r\n", v), 0);
    ASSERT(v[0] == 5 && v[1] == 0 && v[2] == 5);
    ASSERT_EQ(s_parse("0 0 0", v), 0);
    ASSERT_EQ(s_parse("18446744073709551615 1 18446744073709551615", v), 0);
    ASSERT(v[0] == UINT64_MAX && v[1] == 1);
    /* only len bytes count: what follows is not read */
    ASSERT_EQ(fp_jsonl_parse_position("7 7 7junk", 5, &v[0], &v[1], &v[2]), 0);
    ASSERT(v[0] == 7 && v[1] == 7 && v[2] == 7);
}

TEST(test_position_damaged)
{
    s_damaged("");
    s_damaged("\n");
    s_damaged("120 101");
    s_damaged("120 101 119\n");   /* position != pending last */
    s_damaged("120 121 120\n");   /* pending first after pending last */
    s_damaged("-1 1 -1\n");       /* sscanf took it as 2^64-1 */
    s_damaged("+5 1 +5\n");
    s_damaged("5 1 5 6\n");       /* sscanf ignored the rest */
    s_damaged("5 1 5x\n");
    s_damaged(" 5 1 5\n");
    s_damaged("5,1,5\n");
    s_damaged("5 1\n5\n");        /* a newline is not a separator */
    s_damaged("18446744073709551616 1 18446744073709551616\n");
    uint64_t v[3];
    ASSERT_EQ(fp_jsonl_parse_position("5 1 5\0\n", 7, &v[0], &v[1], &v[2]), -1);
    ASSERT_EQ(fp_jsonl_parse_position(NULL, 0, &v[0], &v[1], &v[2]), -1);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_position_accepted);
    RUN(test_position_damaged);
    return test_done();
}
