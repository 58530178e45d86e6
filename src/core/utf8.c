/*  utf8.c - UTF-8 validation, cutting and repair. See utf8.h. */
#include "utf8.h"

#include <string.h>

bool fp_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        int k = fp_utf8_seq(p + i, n - i);
        if (k <= 0)
            return false;
        i += (size_t)k;
    }
    return true;
}

size_t fp_utf8_cut(const char *s, size_t n, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n && i < max) {
        int k = fp_utf8_seq(p + i, n - i);
        size_t step = k > 0 ? (size_t)k : 1; /* an invalid byte is one "character" */
        if (i + step > max)
            break;
        i += step;
    }
    return i;
}

size_t fp_utf8_repair(char *dst, size_t cap, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0, i = 0;
    if (cap == 0)
        return 0;
    while (i < n) {
        int k = fp_utf8_seq(p + i, n - i);
        if (k > 0) {
            if (o + (size_t)k > cap - 1)
                break;
            memcpy(dst + o, p + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            if (o + 3 > cap - 1)
                break;
            memcpy(dst + o, FP_UTF8_REPLACEMENT, 3);
            o += 3;
            i++;
        }
    }
    dst[o] = 0;
    return o;
}
