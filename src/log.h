/*  log.h - one logfmt line per event worth a human's attention, on stderr.

    ts=2026-11-23T04:05:06.123Z level=warn component=worker msg="..." k=v ...

    Thread contract: any thread; each line is written with one write(2), so
    lines from different threads never interleave.
*/
#ifndef FP_LOG_H
#define FP_LOG_H

enum { FP_LOG_DEBUG = 0, FP_LOG_INFO = 1, FP_LOG_WARN = 2, FP_LOG_ERROR = 3 };

/* Lines below `level` are dropped. Call before threads start. */
void fp_log_set_level(int level);

/* fmt/... is the rest of the line after msg, e.g. "source=%llu reason=%s";
   msg is quoted and escaped. */
void fp_log(int level, const char *component, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
