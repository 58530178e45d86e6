/*  log.c - logfmt lines on stderr, rate-limited per component. See log.h. */
#include "log.h"

#include "utf8.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set once before threads start, read after: relaxed is enough. */
static _Atomic int s_level = FP_LOG_INFO;

static const char *s_names[] = {"debug", "info", "warn", "error"};

/* The rate limiter: one slot per component, claimed by CAS on its name hash
   (0 = free). Every field is a relaxed atomic: a count, never a
   synchronisation point. A fixed window per second: `used` lines admitted in
   second `window`, `dropped` not yet reported. Components past the table
   share the last slot. */
#define S_SLOTS 64
typedef struct {
    _Atomic uint64_t key;
    _Atomic int64_t window;
    _Atomic uint32_t used;
    _Atomic uint64_t dropped;
    char name[32]; /* written once by the thread that claimed the slot */
    _Atomic int named;
} s_slot_t;
static s_slot_t s_slots[S_SLOTS];

void fp_log_set_level(int level)
{
    atomic_store_explicit(&s_level, level, memory_order_relaxed);
}

static uint64_t s_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h ? h : 1;
}

static s_slot_t *s_slot(const char *component)
{
    uint64_t h = s_hash(component);
    for (int probe = 0; probe < S_SLOTS - 1; probe++) {
        s_slot_t *s = &s_slots[(h + (uint64_t)probe) % (S_SLOTS - 1)];
        uint64_t k = atomic_load_explicit(&s->key, memory_order_relaxed);
        if (k == h)
            return s;
        if (k == 0) {
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong_explicit(&s->key, &zero, h, memory_order_acq_rel,
                                                        memory_order_relaxed)) {
                snprintf(s->name, sizeof s->name, "%s", component);
                /* release: the name is complete before `named` says so; pairs
                   with the acquire load in s_report. */
                atomic_store_explicit(&s->named, 1, memory_order_release);
                return s;
            }
            if (zero == h)
                return s;
        }
    }
    return &s_slots[S_SLOTS - 1];
}

/* Makes line[0..n) one line of valid UTF-8 in place (at most cap bytes):
   a byte that starts no UTF-8 character becomes U+FFFD, a newline or
   carriage return a blank, so a value formatted without fp_log_quote can
   neither break the line nor make it invalid text. Returns the new length. */
static size_t s_clean(char *line, size_t n, size_t cap)
{
    size_t i = 0;
    while (i < n && (unsigned char)line[i] < 0x80 && line[i] != '\n' && line[i] != '\r')
        i++;
    if (i == n)
        return n; /* the usual case: plain ASCII */
    if (fp_utf8_valid(line + i, n - i) && !memchr(line + i, '\n', n - i) &&
        !memchr(line + i, '\r', n - i))
        return n;
    char tmp[4096];
    size_t o = fp_utf8_repair(tmp, sizeof tmp < cap + 1 ? sizeof tmp : cap + 1, line, n);
    for (size_t j = 0; j < o; j++)
        if (tmp[j] == '\n' || tmp[j] == '\r')
            tmp[j] = ' ';
    memcpy(line, tmp, o);
    return o;
}

static size_t s_quote(char *dst, size_t cap, const char *s, size_t len, size_t maxlen,
                      bool at_end);

/* Whether v[0..n) is one quoted logfmt value already (fp_log_quote's
   output): "...", no unescaped quote inside. */
static bool s_is_quoted(const char *v, size_t n)
{
    if (n < 2 || v[0] != '"' || v[n - 1] != '"')
        return false;
    for (size_t i = 1; i < n - 1; i++) {
        if (v[i] == '\\') {
            if (i + 1 >= n - 1)
                return false; /* it escapes the closing quote */
            i++;
        } else if (v[i] == '"') {
            return false;
        }
    }
    return true;
}

/* Whether a bare value v[0..n) must be quoted to stay one logfmt value. */
static bool s_needs_quotes(const char *v, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

/* vsnprintf of the line's fields ("k=%s k2=\"%s\" ..."), with each value
   made safe: a conversion right after '=' is a bare value, quoted and
   escaped (fp_log_quote) when it holds a blank, '=', a quote, a backslash
   or a control byte, or is empty, unless it is quoted already (a value
   from fp_log_quote); one inside "..." of the format has its quotes and
   backslashes escaped. Any other conversion ("%s" of a whole preformatted
   field list) is copied as it is. Takes the conversions of printf that the
   callers use: flags, width and precision (also *), hh h l ll z j t L, and
   d i u x X o c s p f e g a %. Returns the length written (< cap). */
static size_t s_format(char *out, size_t cap, const char *fmt, va_list ap)
{
    size_t n = 0;
    bool in_quotes = false;
    char prev = ' ';
    if (cap == 0)
        return 0;
    for (const char *p = fmt; *p && n + 1 < cap;) {
        if (*p != '%' || p[1] == '%') {
            char c = *p == '%' ? '%' : *p;
            p += *p == '%' ? 2 : 1;
            if (c == '"')
                in_quotes = !in_quotes;
            out[n++] = c;
            prev = c;
            continue;
        }
        /* One conversion: its spec copied, its argument taken by type. */
        char spec[32];
        size_t sl = 0;
        spec[sl++] = *p++;
        int stars[2], nstars = 0;
        while (*p && strchr("-+ #0", *p) && sl < sizeof spec - 8)
            spec[sl++] = *p++;
        for (int part = 0; part < 2; part++) {
            if (part == 1) {
                if (*p != '.')
                    break;
                spec[sl++] = *p++;
            }
            if (*p == '*') {
                stars[nstars++] = va_arg(ap, int);
                spec[sl++] = *p++;
            }
            while (*p >= '0' && *p <= '9' && sl < sizeof spec - 8)
                spec[sl++] = *p++;
        }
        int lng = 0; /* 1 l, 2 ll, 3 z, 4 j, 5 t, 6 L; h and hh promote to int */
        while (*p && strchr("hlzjtL", *p) && sl < sizeof spec - 4) {
            lng = *p == 'l' ? (lng == 1 ? 2 : 1) : *p == 'z' ? 3 : *p == 'j' ? 4 : *p == 't' ? 5
                  : *p == 'L' ? 6 : lng;
            spec[sl++] = *p++;
        }
        char conv = *p ? *p++ : 's';
        spec[sl++] = conv;
        spec[sl] = '\0';
        char val[1024];
        int k;
#define S_PRINT(arg)                                                                       \
    (nstars == 2 ? snprintf(val, sizeof val, spec, stars[0], stars[1], arg)                  \
     : nstars == 1 ? snprintf(val, sizeof val, spec, stars[0], arg)                          \
                   : snprintf(val, sizeof val, spec, arg))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        switch (conv) {
        case 'd': case 'i':
            k = lng == 2 ? S_PRINT(va_arg(ap, long long)) : lng == 1 || lng == 3 || lng == 5
                ? S_PRINT(va_arg(ap, long)) : lng == 4 ? S_PRINT(va_arg(ap, intmax_t))
                : S_PRINT(va_arg(ap, int));
            break;
        case 'u': case 'x': case 'X': case 'o':
            k = lng == 2 ? S_PRINT(va_arg(ap, unsigned long long)) : lng == 1 || lng == 3 ||
                lng == 5 ? S_PRINT(va_arg(ap, unsigned long)) : lng == 4
                ? S_PRINT(va_arg(ap, uintmax_t)) : S_PRINT(va_arg(ap, unsigned));
            break;
        case 'c':
            k = S_PRINT(va_arg(ap, int));
            break;
        case 'p':
            k = S_PRINT(va_arg(ap, void *));
            break;
        case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': case 'a': case 'A':
            k = lng == 6 ? S_PRINT(va_arg(ap, long double)) : S_PRINT(va_arg(ap, double));
            break;
        case 's': {
            const char *str = va_arg(ap, const char *);
            k = S_PRINT(str ? str : "(null)");
            break;
        }
        default: /* not a conversion we know: its text, no argument taken */
            k = snprintf(val, sizeof val, "%s", spec);
            break;
        }
#pragma GCC diagnostic pop
#undef S_PRINT
        size_t vl = k < 0 ? 0 : (size_t)k < sizeof val ? (size_t)k : sizeof val - 1;
        size_t room = cap - 1 - n;
        if (in_quotes) {
            /* inside the format's quotes: escape what would end them */
            for (size_t i = 0; i < vl && n + 2 < cap; i++) {
                if (val[i] == '"' || val[i] == '\\')
                    out[n++] = '\\';
                out[n++] = val[i];
            }
        } else if (prev == '=' && !s_is_quoted(val, vl) && s_needs_quotes(val, vl)) {
            char q[6 * sizeof val + 3];
            size_t ql = s_quote(q, sizeof q, val, vl, vl, true);
            ql = ql < room ? ql : room;
            memcpy(out + n, q, ql);
            n += ql;
        } else {
            vl = vl < room ? vl : room;
            memcpy(out + n, val, vl);
            n += vl;
        }
        prev = 'v'; /* a value: what follows it is no value start */
    }
    out[n] = '\0';
    return n;
}

static void s_write(int level, const char *component, const char *msg, const char *fmt,
                    va_list ap)
{
    char line[4096]; /* the drain summary lists every counter */
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
        n += s_format(line + n, sizeof line - n - 1, fmt, ap);
    }
    n = s_clean(line, n, sizeof line - 1);
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

static void s_line(int level, const char *component, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void s_line(int level, const char *component, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_write(level, component, msg, fmt, ap);
    va_end(ap);
}

static void s_report(s_slot_t *s, const char *component)
{
    uint64_t n = atomic_exchange_explicit(&s->dropped, 0, memory_order_relaxed);
    if (n == 0)
        return;
    if (!component)
        component = atomic_load_explicit(&s->named, memory_order_acquire) ? s->name : "log";
    s_line(FP_LOG_WARN, component, "log lines suppressed (rate limit)",
           "suppressed=%llu limit_per_s=%d", (unsigned long long)n, FP_LOG_RATE);
}

bool fp_log_admit(int level, const char *component)
{
    if (level < atomic_load_explicit(&s_level, memory_order_relaxed))
        return false;
    s_slot_t *s = s_slot(component);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t sec = (int64_t)ts.tv_sec;
    int64_t w = atomic_load_explicit(&s->window, memory_order_relaxed);
    if (w != sec && atomic_compare_exchange_strong_explicit(&s->window, &w, sec,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed)) {
        /* This thread opened the new second: reset and report the drops. */
        atomic_store_explicit(&s->used, 0, memory_order_relaxed);
        s_report(s, component);
    }
    if (atomic_fetch_add_explicit(&s->used, 1, memory_order_relaxed) >= FP_LOG_RATE) {
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

void fp_log_admitted(int level, const char *component, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_write(level, component, msg, fmt, ap);
    va_end(ap);
}

void fp_log(int level, const char *component, const char *msg, const char *fmt, ...)
{
    if (!fp_log_admit(level, component))
        return;
    va_list ap;
    va_start(ap, fmt);
    s_write(level, component, msg, fmt, ap);
    va_end(ap);
}

void fp_log_tick(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    for (int i = 0; i < S_SLOTS; i++) {
        s_slot_t *s = &s_slots[i];
        if ((atomic_load_explicit(&s->key, memory_order_relaxed) || i == S_SLOTS - 1) &&
            atomic_load_explicit(&s->window, memory_order_relaxed) != (int64_t)ts.tv_sec &&
            atomic_load_explicit(&s->dropped, memory_order_relaxed) != 0)
            s_report(s, NULL); /* the exchange there: each drop is reported once */
    }
}

void fp_log_flush_suppressed(void)
{
    for (int i = 0; i < S_SLOTS; i++)
        if (atomic_load_explicit(&s_slots[i].key, memory_order_relaxed) ||
            i == S_SLOTS - 1)
            s_report(&s_slots[i], NULL);
}

/* Quotes s[0..len) (len bytes readable), at most maxlen of them. at_end:
   s[len] is the string's real end, so a character cut short by len is
   invalid (replaced); otherwise it may go on beyond len and is cut. */
static size_t s_quote(char *dst, size_t cap, const char *s, size_t len, size_t maxlen,
                      bool at_end)
{
    static const char hex[] = "0123456789abcdef";
    if (cap < 3) {
        if (cap)
            dst[0] = 0;
        return 0;
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    dst[n++] = '"';
    /* i < len and i < maxlen are tested before p[i] is read: s need not
       be NUL-terminated. */
    for (size_t i = 0; i < len && i < maxlen;) {
        unsigned char c = p[i];
        int k = c < 0x80 ? 1 : fp_utf8_seq(p + i, len - i);
        if (k < 0 && !at_end)
            break; /* cut by len: the rest of the character is not ours to read */
        const char *out = (const char *)p + i;
        size_t need, step = 1;
        char esc[6];
        if (k <= 0) {
            out = "\\ufffd"; /* not UTF-8: U+FFFD, escaped (ASCII in the output) */
            need = 6;
        } else if (k > 1) {
            if (i + (size_t)k > maxlen)
                break; /* never cut inside a character */
            need = step = (size_t)k;
        } else if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            out = esc;
            need = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            out = esc;
            need = 6;
        } else {
            need = 1;
        }
        if (n + need + 2 > cap)
            break;
        memcpy(dst + n, out, need);
        n += need;
        i += step;
    }
    dst[n++] = '"';
    dst[n] = 0;
    return n;
}

size_t fp_log_quote(char *dst, size_t cap, const char *s, size_t maxlen)
{
    size_t len = s ? strnlen(s, maxlen) : 0;
    /* strnlen stopped at a NUL before maxlen: that is the real end. */
    return s_quote(dst, cap, s, len, maxlen, len < maxlen);
}

size_t fp_log_quote_n(char *dst, size_t cap, const char *s, size_t len, size_t maxlen)
{
    return s_quote(dst, cap, s, s ? len : 0, maxlen, true);
}
