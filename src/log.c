/*  log.c - logfmt lines on stderr. See log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set once before threads start, read after: relaxed is enough. */
static _Atomic int s_level = FP_LOG_INFO;

static const char *s_names[] = {"debug", "info", "warn", "error"};

void fp_log_set_level(int level)
{
    atomic_store_explicit(&s_level, level, memory_order_relaxed);
}

void fp_log(int level, const char *component, const char *msg, const char *fmt, ...)
{
    if (level < atomic_load_explicit(&s_level, memory_order_relaxed))
        return;
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ level=%s component=%s msg=\"",
                          ts.tv_nsec / 1000000, s_names[level & 3], component);
    for (const char *p = msg; *p && n < sizeof line - 8; p++) {
        if (*p == '"' || *p == '\\')
            line[n++] = '\\';
        line[n++] = (*p == '\n') ? ' ' : *p;
    }
    line[n++] = '"';
    if (fmt && *fmt && n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
        va_end(ap);
        if (k > 0)
            n += ((size_t)k < sizeof line - n - 1) ? (size_t)k : sizeof line - n - 2;
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
