/*  decimal.h - an unsigned decimal in untrusted text that is not
    NUL-terminated (the replay request, the jsonl sink's position file):
    digits only, no sign, no blanks, refused on overflow. strtoull and
    sscanf("%llu") would take a sign ("-1" is 2^64-1), skip blanks and
    need a NUL-terminated copy.

    Thread contract: pure, any thread.
*/
#ifndef FP_DECIMAL_H
#define FP_DECIMAL_H

#include <stdint.h>

/* Reads the digits at *p (before end): 0, *out and *p past them; -1 when
   there is no digit or the value exceeds 2^64-1 (*p and *out untouched). */
static inline int
fp_decimal_u64(const char **p, const char *end, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;
    if (q >= end || *q < '0' || *q > '9')
        return -1;
    for (; q < end && *q >= '0' && *q <= '9'; q++)
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(*q - '0'), &v))
            return -1;
    *p = q;
    *out = v;
    return 0;
}

/* Skips spaces and tabs at *p (before end): 0, or -1 when there was none
   (a separator is required). */
static inline int
fp_decimal_blanks(const char **p, const char *end)
{
    const char *q = *p;
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    if (q == *p)
        return -1;
    *p = q;
    return 0;
}

#endif
