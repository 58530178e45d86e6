/*  buf.h - a growing text buffer for printf-style output (the Prometheus
    text, the sinks' status JSON). A failed allocation sets `failed` and
    every later put is a no-op, so a caller checks once at the end.

    Thread contract: a buffer belongs to one thread.
*/
#ifndef FP_BUF_H
#define FP_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *p; /* NUL-terminated while !failed and p != NULL */
    size_t len, cap;
    bool failed;
} fp_buf_t;

/* Appends printf(fmt, ...) to b, growing it (doubling). */
void fp_buf_put(fp_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
