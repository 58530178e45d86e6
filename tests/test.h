/*  test.h - a tiny assertion kit for floorpost's unit tests.

    Each tests/test_<module>.c is its own program (one process per test file,
    run with a timeout by tools/run-tests.sh). ASSERT_* print both sides and
    the place, then abort.
*/
#ifndef FP_TEST_H
#define FP_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                                \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "%s:%d: ASSERT(%s) failed\n", __FILE__, __LINE__, #c); \
            abort();                                                             \
        }                                                                        \
    } while (0)

#define ASSERT_EQ(a, b)                                                                  \
    do {                                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);                              \
        if (a_ != b_) {                                                                  \
            fprintf(stderr, "%s:%d: ASSERT_EQ(%s, %s): %lld != %lld\n", __FILE__, __LINE__, \
                    #a, #b, a_, b_);                                                     \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define ASSERT_STREQ(a, b)                                                               \
    do {                                                                                 \
        const char *a_ = (a), *b_ = (b);                                                 \
        if (strcmp(a_, b_) != 0) {                                                       \
            fprintf(stderr, "%s:%d: ASSERT_STREQ(%s, %s): \"%s\" != \"%s\"\n", __FILE__,   \
                    __LINE__, #a, #b, a_, b_);                                           \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define TEST(name) static void name(void)
#define RUN(name)                                  \
    do {                                           \
        name();                                    \
        fprintf(stderr, "  ok %s\n", #name);       \
    } while (0)

#endif
