/*  test_replay.c - the replay request parser (replay.h): what a client's
    frame must look like, and the frames the old sscanf took that it
    refuses now (a sign, no blank after REPLAY, a number cut or past
    2^64-1, text after the numbers). The replay server itself is tested
    end to end (tests/e2e/run.py). */
#include "replay.h"
#include "test.h"

#include <stdint.h>

static int s_parse(const char *text, uint64_t *from, uint64_t *max)
{
    *from = *max = 12345;
    return fp_replay_parse_request(text, strlen(text), from, max);
}

static void s_refused(const char *text)
{
    uint64_t from, max;
    if (s_parse(text, &from, &max) != -1)
        fprintf(stderr, "accepted: '%s'\n", text);
    ASSERT_EQ(s_parse(text, &from, &max), -1);
    ASSERT_EQ(from, 12345); /* outputs untouched */
    ASSERT_EQ(max, 12345);
}

TEST(test_request_accepted)
{
    uint64_t from, max;
    ASSERT_EQ(s_parse("REPLAY 1 100", &from, &max), 0);
    ASSERT_EQ(from, 1);
    ASSERT_EQ(max, 100);
    ASSERT_EQ(s_parse("REPLAY\t 42  0 \r\n", &from, &max), 0);
    ASSERT_EQ(from, 42);
    ASSERT_EQ(max, 0);
    ASSERT_EQ(s_parse("REPLAY 18446744073709551615 18446744073709551615", &from, &max), 0);
    ASSERT(from == UINT64_MAX && max == UINT64_MAX);
    ASSERT_EQ(s_parse("REPLAY 0007 010", &from, &max), 0);
    ASSERT_EQ(from, 7);
    ASSERT_EQ(max, 10);
    /* a C client sending its string's NUL */
    ASSERT_EQ(fp_replay_parse_request("REPLAY 5 6", sizeof "REPLAY 5 6", &from, &max), 0);
    ASSERT_EQ(from, 5);
    ASSERT_EQ(max, 6);
}

TEST(test_request_refused)
{
    s_refused("");
    s_refused("REPLAY");
    s_refused("REPLAY ");
    s_refused("REPLAY 1");
    s_refused("REPLAY 1 ");
    s_refused("REPLAY 0 10");   /* from_global_seq starts at 1 */
    s_refused("replay 1 10");
    s_refused("REPLAY1 10");    /* sscanf took these */
    s_refused("REPLAY 1 10 20");
    s_refused("REPLAY 1 10x");
    s_refused("REPLAY -1 10");
    s_refused("REPLAY 1 -10");
    s_refused("REPLAY +1 10");
    s_refused("REPLAY 18446744073709551616 1");
    s_refused("REPLAY 1 99999999999999999999999");
    s_refused(" REPLAY 1 10");
    s_refused("REPLAY\n1 10");
    uint64_t from, max;
    /* a NUL inside the numbers: the frame's bytes count, not a C string */
    ASSERT_EQ(fp_replay_parse_request("REPLAY 1\0 10", 12, &from, &max), -1);
    ASSERT_EQ(fp_replay_parse_request("REPLAY 1 10", 10, &from, &max), 0); /* cut: max 1 */
    ASSERT_EQ(max, 1);
    ASSERT_EQ(fp_replay_parse_request(NULL, 0, &from, &max), -1);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_request_accepted);
    RUN(test_request_refused);
    return test_done();
}
