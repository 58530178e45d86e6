/*  test_peerrate.c - the bound on new sources per peer and second: a full
    bucket to start, refused when empty, refilled with time (fractions of
    a token kept), capped at per_s, peers independent. */
#include "peerrate.h"
#include "test.h"

#define MS 1000000LL

TEST(test_bucket)
{
    ASSERT(peerrate_new(0) == NULL);
    peerrate_t *r = peerrate_new(10);
    ASSERT(r);
    int64_t t = 5000 * MS;
    for (int i = 0; i < 10; i++)
        ASSERT(peerrate_take(r, 42, t));
    ASSERT(!peerrate_take(r, 42, t));
    ASSERT(!peerrate_take(r, 42, t + 50 * MS)); /* half a token */
    ASSERT(peerrate_take(r, 42, t + 100 * MS)); /* the other half: one */
    ASSERT(!peerrate_take(r, 42, t + 100 * MS));
    /* another peer has its own full bucket */
    for (int i = 0; i < 10; i++)
        ASSERT(peerrate_take(r, 7, t));
    ASSERT(!peerrate_take(r, 7, t));
    /* a long pause refills to per_s, not more */
    t += 3600000 * MS;
    int n = 0;
    while (peerrate_take(r, 42, t))
        n++;
    ASSERT_EQ(n, 10);
    /* time going back takes nothing away and gives nothing */
    ASSERT(!peerrate_take(r, 42, t - 1000 * MS));
    peerrate_destroy(&r);
    ASSERT(r == NULL);
    peerrate_destroy(&r);
}

TEST(test_rate_over_time)
{
    peerrate_t *r = peerrate_new(100);
    int64_t t = 0;
    int got = 0;
    /* 10 s of a peer asking every ms: the full bucket, then 100 a second */
    for (int i = 0; i < 10000; i++, t += MS)
        got += peerrate_take(r, 1, t);
    ASSERT(got >= 100 + 999 - 2 && got <= 100 + 1000 + 1);
    peerrate_destroy(&r);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_bucket);
    RUN(test_rate_over_time);
    return test_done();
}
