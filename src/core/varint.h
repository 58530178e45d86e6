/*  varint.h - unsigned LEB128 and zigzag, for the persisted state formats
    (dedup.h, agg.h).

    A varint is 7 bits per byte, least significant group first, the high bit
    set on every byte but the last; a uint64_t takes 1 to 10 bytes. The reader
    is for possibly damaged bytes: it never reads past `end` and refuses a
    varint longer than 10 bytes or whose 10th byte carries more than the
    64th bit.

    Thread contract: pure functions, callable from any thread.
*/
#ifndef FP_VARINT_H
#define FP_VARINT_H

#include <stddef.h>
#include <stdint.h>

#define FP_VARINT_MAX 10 /* bytes of the longest varint */

/* Writes v at p (room for FP_VARINT_MAX bytes); returns the bytes written. */
static inline size_t
fp_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Bytes fp_varint_put would write for v. */
static inline size_t
fp_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Reads a varint at *p (p < end or not), advancing *p. 0, or -1 when
   truncated or too long (then *p and *v are unspecified). */
static inline int
fp_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < FP_VARINT_MAX; i++) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        if (i == FP_VARINT_MAX - 1 && b > 1)
            return -1; /* beyond 64 bits */
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Signed <-> unsigned so small magnitudes of either sign are short. */
static inline uint64_t
fp_zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t
fp_unzigzag(uint64_t u)
{
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

#endif
