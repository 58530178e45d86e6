/*  utf8.h - UTF-8 validation, cutting on character boundaries and repair,
    for text that leaves floorpost as JSON or in a log line: producers'
    strings, the ERP's answers, stored details.

    Valid means well-formed by the Unicode standard (table 3-7): no stray
    continuation byte, no overlong form, no surrogate (U+D800..U+DFFF),
    nothing above U+10FFFF. A byte that starts no valid sequence is
    replaced, one byte at a time, by U+FFFD (EF BF BD); text is cut only
    between characters, never inside one.

    Thread contract: pure functions, any thread.
*/
#ifndef FP_UTF8_H
#define FP_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* U+FFFD REPLACEMENT CHARACTER, encoded. */
#define FP_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* The sequence at s[0..n) (n >= 1): its length 1..4 when s starts a valid
   character; 0 when s[0] starts none (replace that one byte); -k when
   s[0..n) is a valid beginning of a k-byte character that n cuts short
   (k > n: the rest may follow beyond n). */
static inline int fp_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    int k;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else
        return 0; /* 80..C1 (continuation, overlong lead), F5..FF */
    for (int i = 1; i < k; i++) {
        if ((size_t)i >= n)
            return -k;
        unsigned char b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF))
            return 0;
    }
    return k;
}

/* Whether s[0..n) is valid UTF-8 (NUL bytes are valid characters). */
bool fp_utf8_valid(const char *s, size_t n);

/* The longest prefix of s[0..n) that ends on a character boundary and is at
   most max bytes (a valid character crossing max is left out whole). */
size_t fp_utf8_cut(const char *s, size_t n, size_t max);

/* Copies s[0..n) into dst as valid UTF-8: every byte that starts no valid
   character becomes U+FFFD; cut on a character boundary to fit cap - 1
   bytes; always NUL-terminated (cap >= 1). Returns the length written. */
size_t fp_utf8_repair(char *dst, size_t cap, const char *s, size_t n);

#endif
