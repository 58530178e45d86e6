/*  log.h - one logfmt line per event worth a human's attention, on stderr.

    ts=2026-11-23T04:05:06.123Z level=warn component=worker msg="..." k=v ...

    Rate limit: at most FP_LOG_RATE lines per second per component (all
    levels). Past that, lines are dropped and counted; one
    msg="log lines suppressed (rate limit)" suppressed=N line reports them,
    written by whichever comes first once their second is over: the
    component's next line, or fp_log_tick() (`floorpost run` calls it
    every second, so the report follows the end of a flood by at most about
    two seconds); fp_log_flush_suppressed() writes the outstanding counts
    (call it before exit). So a flood of bad frames cannot fill a disk.
    Values: a printf conversion right after '=' in fmt is quoted and
    escaped when it holds a blank, '=', a quote, a backslash or a control
    byte (or is empty), unless fp_log_quote quoted it already; one inside
    \"...\" of fmt has its quotes and backslashes escaped. So every k=v
    stays one logfmt pair, whatever the value.

    Thread contract: any thread; each line is written with one write(2), so
    lines from different threads never interleave. The rate limiter is a
    fixed table of relaxed atomics (no lock): under a race between threads of
    one component a window may let a line or two more through.
*/
#ifndef FP_LOG_H
#define FP_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum { FP_LOG_DEBUG = 0, FP_LOG_INFO = 1, FP_LOG_WARN = 2, FP_LOG_ERROR = 3 };

#define FP_LOG_RATE 20 /* lines per second per component */

/* Lines below `level` are dropped. Call before threads start. */
void fp_log_set_level(int level);

/* fmt/... is the rest of the line after msg, e.g. "source=%llu reason=%s";
   msg is quoted and escaped. Subject to the level and the rate limit. */
void fp_log(int level, const char *component, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Takes the level check and one line of the component's rate limit; true if
   the caller may write a line now (then with fp_log_admitted). For lines
   that are costly to prepare. */
bool fp_log_admit(int level, const char *component);

/* Writes the line without the level and rate checks (after fp_log_admit). */
void fp_log_admitted(int level, const char *component, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes the "suppressed" line of every component whose dropped lines are
   of a second that is over and not yet reported. Call it about once a
   second (any thread). */
void fp_log_tick(void);

/* Writes one "suppressed" line for every component with lines dropped and
   not yet reported. */
void fp_log_flush_suppressed(void);

/* Writes s (at most maxlen bytes of it, up to its NUL; s need not be
   NUL-terminated within maxlen) as a quoted, escaped string, valid JSON and
   a valid logfmt value alike: \" \\ and control bytes (and DEL) as \u00XX,
   valid UTF-8 characters as they are, every byte that starts no valid
   UTF-8 character as \ufffd (utf8.h). Cut on a character boundary (never
   inside a character or an escape) to fit maxlen and cap; always quoted
   and NUL-terminated. Returns the length written. */
size_t fp_log_quote(char *dst, size_t cap, const char *s, size_t maxlen);

/* The same for exactly len bytes of s (NUL bytes are quoted as \u0000). */
size_t fp_log_quote_n(char *dst, size_t cap, const char *s, size_t len, size_t maxlen);

#endif
