/*  fuzz.h - what the libFuzzer targets in fuzz/ share: FUZZ_CHECK, an
    invariant check that aborts (libFuzzer then saves the input as a
    finding) and says which invariant broke.

    A target checks the parser's contract, not only that it does not crash:
    a refusal must come with a message, an acceptance must give values in
    their documented ranges, and a parse that reports success must give
    the same result when its output is fed back (where a writer exists).
*/
#ifndef FP_FUZZ_H
#define FP_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(c)                                                                 \
    do {                                                                              \
        if (!(c)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#ifdef __cplusplus
extern "C" {
#endif
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#ifdef __cplusplus
}
#endif

#endif
