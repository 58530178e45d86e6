/*  sinks.c - the sink subsystem: options, the reader adapter, back-off and
    the circuit breaker, status and metrics. See sinks.h and sink.h.

    DESIGN
    - Each sink is one durable outbox reader (reader.h) whose type is the
      adapter below (s_reader_type): it decodes the batch once
      (fp_sink_event_t, posting date included) and calls the sink type.
      Position, wake-ups and the report to emit are the reader's.
    - Back-off: after the k-th failure in a row the next attempt waits
      retry_ms * 2^(k-1), at most retry_max_ms, +-20 % jitter (a fleet of
      gateways restarted together must not hammer the ERP in step). At
      breaker_failures failures in a row the circuit opens: one trial after
      breaker_open_ms, logged once per opening; the first success closes it.
    - Counters are relaxed atomics written by the sink's thread and read by
      the HTTP thread; the last error text is behind a mutex (a string).
*/
#include "sinks.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "codec.h"
#include "grow.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "reader.h"
#include "sink.h"
#include "store.h"
#include "utf8.h"

static const fp_sink_type_t *const s_types[] = {&fp_sink_jsonl, &fp_sink_postgresql,
                                                 &fp_sink_http};
#define S_NTYPES (sizeof s_types / sizeof s_types[0])

const char *fp_sink_err_name(int cls)
{
#define S_NAME_(n) #n,
    static const char *const names[] = {FP_SINK_ERRORS(S_NAME_)};
#undef S_NAME_
    return cls >= 0 && cls < FP_SINK_ERR_COUNT ? names[cls] : "other";
}

/* ---- states ---- */

#define S_STATES(X)                                                                 \
    X(starting) X(connecting) X(delivering) X(idle) X(backing_off) X(open) X(detached) \
    X(stopped)
#define S_ENUM_(n) S_##n,
typedef enum { S_STATES(S_ENUM_) S_NSTATES } s_state_t;
#undef S_ENUM_
static const char *s_state_name(int st)
{
#define S_NAME_(n) #n,
    static const char *const names[] = {S_STATES(S_NAME_)};
#undef S_NAME_
    return st >= 0 && st < S_NSTATES ? names[st] : "unknown";
}

/* ---- options ---- */

struct fp_sink_opts {
    const fp_config_t *cfg;
    const fp_sink_config_t *sc;
    const char *file;
    char *err;
    size_t errlen;
    bool failed;
    int64_t batch_max; /* the common option, read before the type's */
    bool asked[FP_SINK_OPTS_MAX];
    char asked_list[512];
};

static int s_vfail(fp_sink_opts_t *o, int line, const char *fmt, va_list ap)
{
    if (o->failed)
        return -1; /* the first error is the one reported */
    o->failed = true;
    int n = snprintf(o->err, o->errlen, "%s:%d: [sink %s] ", o->file, line, o->sc->name);
    if (n >= 0 && (size_t)n < o->errlen)
        vsnprintf(o->err + n, o->errlen - (size_t)n, fmt, ap);
    return -1;
}

int fp_sink_opt_fail(fp_sink_opts_t *o, const char *key, const char *fmt, ...)
{
    int line = o->sc->line;
    if (key)
        fp_sink_config_get(o->sc, key, &line);
    va_list ap;
    va_start(ap, fmt);
    s_vfail(o, line, fmt, ap);
    va_end(ap);
    return -1;
}

/* The value of key (NULL when not given); marks it asked for. */
static const char *s_get(fp_sink_opts_t *o, const char *key)
{
    size_t n = strlen(o->asked_list);
    if (!strstr(o->asked_list, key))
        snprintf(o->asked_list + n, sizeof o->asked_list - n, "%s%s", n ? ", " : "", key);
    for (int i = 0; i < o->sc->nkv; i++)
        if (strcmp(o->sc->kv[i].key, key) == 0) {
            o->asked[i] = true;
            return o->sc->kv[i].value;
        }
    return NULL;
}

int fp_sink_opt_str(fp_sink_opts_t *o, const char *key, const char *def, char *out, size_t cap,
                    const char *allowed)
{
    const char *v = s_get(o, key);
    if (!v)
        v = def ? def : "";
    if (strlen(v) >= cap)
        return fp_sink_opt_fail(o, key, "%s: too long (%zu characters); allowed: %s, at most %zu",
                                key, strlen(v), allowed, cap - 1);
    memcpy(out, v, strlen(v) + 1);
    return 0;
}

int fp_sink_opt_int(fp_sink_opts_t *o, const char *key, int64_t def, int64_t min, int64_t max,
                    int64_t *out)
{
    const char *v = s_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || errno || !end || *end || x < min || x > max)
        return fp_sink_opt_fail(o, key, "%s = '%.80s': not an integer in range; allowed: "
                                "%lld..%lld", key, v, (long long)min, (long long)max);
    *out = x;
    return 0;
}

int fp_sink_opt_bool(fp_sink_opts_t *o, const char *key, bool def, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1", NULL};
    static const char *const no[] = {"false", "no", "off", "0", NULL};
    const char *v = s_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    for (int i = 0; yes[i]; i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return fp_sink_opt_fail(o, key, "%s = '%.80s': not a boolean; allowed: true, false, yes, no, "
                            "on, off, 1, 0", key, v);
}

int fp_sink_opt_enum(fp_sink_opts_t *o, const char *key, const char *def,
                     const char *const *choices, int *out)
{
    const char *v = s_get(o, key);
    if (!v)
        v = def;
    char list[256] = "";
    size_t n = 0;
    for (int i = 0; choices[i]; i++) {
        if (strcmp(v, choices[i]) == 0) {
            *out = i;
            return 0;
        }
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", choices[i]);
        if (n >= sizeof list)
            n = sizeof list - 1;
    }
    return fp_sink_opt_fail(o, key, "%s = '%.80s': unknown; allowed: %s", key, v, list);
}

const char *fp_sink_opts_name(const fp_sink_opts_t *o)
{
    return o->sc->name;
}

const fp_config_t *fp_sink_opts_config(const fp_sink_opts_t *o)
{
    return o->cfg;
}

int64_t fp_sink_opts_batch_max(const fp_sink_opts_t *o)
{
    return o->batch_max;
}

/* ---- one sink ---- */

typedef struct {
    int64_t batch_max, retry_ms, retry_max_ms, breaker_failures, breaker_open_ms;
    int start; /* 0 oldest, 1 next */
} s_common_t;

struct fp_sink {
    char name[FP_SINK_NAME_MAX + 1];
    char component[FP_SINK_NAME_MAX + 8]; /* "sink-NAME" */
    const fp_sink_type_t *type;
    void *ctx;
    const fp_config_t *cfg;
    s_common_t c;
    fp_reader_t *reader;
    /* The sink's thread only. */
    fp_reader_t *r; /* as the callbacks get it (== reader once started) */
    int fails;      /* in a row */
    bool failing;   /* fp_sink_fail was called in this callback */
    bool redo;      /* fp_sink_redo was called in cb_idle */
    int retry_after_ms;
    bool breaker_logged;
    fp_sink_event_t *sevs;
    size_t sevs_cap;
    /* Any thread. */
    _Atomic int state;
    _Atomic uint64_t errors[FP_SINK_ERR_COUNT], writes, rejected, opens;
    _Atomic int64_t caught_up_ns; /* fp_now_ns when last seen with nothing to deliver */
    pthread_mutex_t mu;           /* last_error, last_error_at */
    char last_error[256];
    int64_t last_error_at;        /* wall ns */
    int last_class;
};

struct fp_sinks {
    int n;
    fp_sink_t *sinks[FP_SINKS_MAX];
    fp_metrics_t *metrics;
};

const char *fp_sink_name(const fp_sink_t *s)
{
    return s->name;
}

const fp_config_t *fp_sink_config(const fp_sink_t *s)
{
    return s->cfg;
}

/* Counts an error of class cls and keeps its text for the status. */
static void s_verror(fp_sink_t *s, int cls, const char *fmt, va_list ap)
{
    if (cls < 0 || cls >= FP_SINK_ERR_COUNT)
        cls = FP_SINK_ERR_protocol;
    atomic_fetch_add_explicit(&s->errors[cls], 1, memory_order_relaxed);
    pthread_mutex_lock(&s->mu);
    vsnprintf(s->last_error, sizeof s->last_error, fmt, ap);
    s->last_error_at = fp_wall_ns();
    s->last_class = cls;
    pthread_mutex_unlock(&s->mu);
}

int fp_sink_fail(fp_sink_t *s, int cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_verror(s, cls, fmt, ap);
    va_end(ap);
    s->failing = true;
    return -1;
}

void fp_sink_count_error(fp_sink_t *s, int cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_verror(s, cls, fmt, ap);
    va_end(ap);
}

uint64_t fp_sink_committed(const fp_sink_t *s)
{
    return fp_reader_target(s->r);
}

void fp_sink_retry_after(fp_sink_t *s, int ms)
{
    s->retry_after_ms = ms < 0 ? 0 : ms;
}

void fp_sink_count_writes(fp_sink_t *s, uint64_t n)
{
    atomic_fetch_add_explicit(&s->writes, n, memory_order_relaxed);
}

void fp_sink_rewind(fp_sink_t *s, uint64_t position)
{
    fp_reader_rewind(s->r, position);
}

void fp_sink_defer(fp_sink_t *s)
{
    fp_reader_defer(s->r);
}

void fp_sink_finished(fp_sink_t *s, uint64_t position)
{
    fp_reader_finished(s->r, position);
}

void fp_sink_aux(const fp_sink_t *s, uint64_t aux[2])
{
    fp_reader_aux(s->r, aux);
}

int fp_sink_dead_letter(fp_sink_t *s, const uint64_t aux[2], const fp_sink_event_t *ev,
                        fp_dl_fields_t *f)
{
    fp_dl_fields_str(f, "sink", "sink", s->name, FP_SINK_NAME_MAX);
    fp_dl_fields_str(f, "sink_type", NULL, s->type->name, 32);
    fp_dl_fields_str(f, "event_id", "event_id", ev->ck.event_id, 128);
    fp_dl_fields_u64(f, "global_seq", "global_seq", ev->raw->global_seq);
    fp_dl_fields_str(f, "kind", NULL, fp_ck_kind_name(ev->ck.kind), 16);
    fp_dl_fields_str(f, "plant", "plant", ev->ck.plant, 64);
    fp_dl_fields_str(f, "line", NULL, ev->ck.line, 64);
    fp_dl_fields_str(f, "order", "order", ev->ck.order, 64);
    fp_dl_fields_str(f, "operation", "operation", ev->ck.operation, 64);
    fp_dl_fields_str(f, "posting_date", NULL, ev->posting_date, 10);
    int rc = fp_reader_dead_letter(s->r, aux, FP_DL_erp_rejected, f, ev->raw->ev, ev->raw->evlen);
    if (rc == 0)
        atomic_fetch_add_explicit(&s->rejected, 1, memory_order_relaxed);
    return rc;
}

bool fp_sink_date_shaped(const char *s)
{
    if (!s)
        return false;
    for (int i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? s[i] != '-' : (s[i] < '0' || s[i] > '9'))
            return false;
    return s[10] == '\0';
}

const char *fp_sink_damage_text(const fp_reader_event_t *raw)
{
    return raw->damaged || !raw->ev
               ? "its stored value fails the state file's check (data.mdb damaged since the "
                 "start; run `floorpost state verify`)"
               : "its stored bytes are not a Checkpoint";
}

int fp_sink_event_decode(const fp_reader_event_t *raw, fp_sink_event_t *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->raw = raw;
    if (raw->damaged || !raw->ev ||
        fp_codec_checkpoint_decode(raw->ev, raw->evlen, &ev->ck) != FP_CODEC_OK)
        return -1;
    /* The checkpoint's own posting date: the period its records belong to
       (docs/schema.md "Posting periods"); YYYY-MM-DD, as every type is
       promised (a damaged event's other text is not passed on). */
    if (fp_sink_date_shaped(ev->ck.posting_date)) {
        memcpy(ev->posting_date, ev->ck.posting_date, 11);
        return 0;
    }
    /* An event without one (a counter_reset, or from a floorpost before
       periods): the date of its last event time in the plant's zone. TZ is
       set from [aggregate] time_zone before any thread starts (cmd_run.c),
       so localtime_r is safe here. */
    time_t secs = (time_t)(ev->ck.last_time_ns / 1000000000);
    if (ev->ck.last_time_ns < 0 && ev->ck.last_time_ns % 1000000000)
        secs--;
    struct tm tm;
    if (!localtime_r(&secs, &tm) || strftime(ev->posting_date, sizeof ev->posting_date,
                                             "%Y-%m-%d", &tm) != 10)
        snprintf(ev->posting_date, sizeof ev->posting_date, "1970-01-01");
    return 0;
}

int fp_sink_event_json(const fp_sink_event_t *ev, char *out, size_t cap)
{
    const fp_reader_event_t *r = ev->raw;
    static const char head[] = "{\"topic\":";
    size_t n = sizeof head - 1;
    if (cap <= n)
        return -1;
    memcpy(out, head, n);
    /* Escaped: the topic holds the producers' plant and line (any bytes). */
    int t = fp_codec_json_string(r->topic, r->tlen, out + n, cap - n);
    if (t < 0)
        return -1;
    n += (size_t)t;
    int k = fp_codec_checkpoint_to_json(r->ev, r->evlen, out + n, cap - n);
    if (k <= 1)
        return -1;
    out[n] = ','; /* splice: {"topic":"..",<the object's fields> */
    size_t len = n + (size_t)k;
    /* The checkpoint's JSON has its own posting_date when it has a period. */
    if (ev->ck.posting_date[0])
        return (int)len;
    /* ...,"posting_date":"YYYY-MM-DD"} in place of the closing brace */
    if (len + 30 > cap)
        return -1;
    len--;
    len += (size_t)snprintf(out + len, cap - len, ",\"posting_date\":\"%s\"}", ev->posting_date);
    return (int)len;
}

/* After a failure: back-off, breaker, state. */
static void s_failed(fp_sink_t *s)
{
    s->fails++;
    int64_t delay;
    if (s->retry_after_ms > 0) {
        delay = s->retry_after_ms;
    } else {
        delay = s->c.retry_ms;
        for (int k = 1; k < s->fails && delay < s->c.retry_max_ms; k++)
            delay *= 2;
        if (delay > s->c.retry_max_ms)
            delay = s->c.retry_max_ms;
        /* +-20 % jitter from the clock's low bits (no shared PRNG state) */
        int64_t j = (fp_now_ns() / 1000) % 41 - 20;
        delay += delay * j / 100;
    }
    s->retry_after_ms = 0;
    if (s->fails >= s->c.breaker_failures) {
        if (delay < s->c.breaker_open_ms)
            delay = s->c.breaker_open_ms;
        atomic_store_explicit(&s->state, S_open, memory_order_relaxed);
        if (!s->breaker_logged) {
            char e[256];
            pthread_mutex_lock(&s->mu);
            snprintf(e, sizeof e, "%s", s->last_error);
            pthread_mutex_unlock(&s->mu);
            fp_log(FP_LOG_ERROR, s->component,
                   "circuit breaker OPEN: pausing deliveries; one trial every breaker_open_ms",
                   "failures=%d breaker_open_ms=%lld error=\"%s\"", s->fails,
                   (long long)s->c.breaker_open_ms, e);
            s->breaker_logged = true;
        }
    } else {
        atomic_store_explicit(&s->state, S_backing_off, memory_order_relaxed);
    }
    fp_reader_retry_in(s->r, (int)delay);
}

static void s_succeeded(fp_sink_t *s, bool caught_up)
{
    if (s->breaker_logged)
        fp_log(FP_LOG_INFO, s->component, "circuit breaker closed: delivering again",
               "after_failures=%d", s->fails);
    s->breaker_logged = false;
    s->fails = 0;
    atomic_store_explicit(&s->state, caught_up ? S_idle : S_delivering, memory_order_relaxed);
    if (caught_up)
        atomic_store_explicit(&s->caught_up_ns, fp_now_ns(), memory_order_relaxed);
}

static void s_copy_error(fp_sink_t *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    snprintf(err, errlen, "%s: %s", fp_sink_err_name(s->last_class), s->last_error);
    pthread_mutex_unlock(&s->mu);
}

/* ---- the reader adapter (the sink's thread) ---- */

static int s_r_open(void *ctx, fp_reader_t *r, char *err, size_t errlen)
{
    fp_sink_t *s = ctx;
    s->r = r;
    atomic_store_explicit(&s->state, S_connecting, memory_order_relaxed);
    if (s->type->cb_open && s->type->cb_open(s->ctx, s) != 0) {
        s_copy_error(s, err, errlen);
        s_failed(s);
        return -1;
    }
    atomic_fetch_add_explicit(&s->opens, 1, memory_order_relaxed);
    s_succeeded(s, fp_reader_position(r) >= fp_reader_target(r));
    return 0;
}

static int s_r_deliver(void *ctx, fp_reader_t *r, const fp_reader_event_t *evs, size_t n,
                       char *err, size_t errlen)
{
    fp_sink_t *s = ctx;
    s->r = r;
    if (fp_grow(&s->sevs, &s->sevs_cap, n, sizeof *s->sevs, 64) != 0) {
        fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
        s_copy_error(s, err, errlen);
        s_failed(s);
        return -1;
    }
    size_t k = 0;
    for (; k < n; k++)
        if (fp_sink_event_decode(&evs[k], &s->sevs[k]) != 0)
            break;
    if (k == 0) {
        /* Our own committed event that cannot be used: a damaged outbox
           (a value failing the state file's check, or bytes that are not
           a Checkpoint). Loud, counted, and past it: holding every later
           event back would stop the sink for good. No back-off: the next
           event goes at once. */
        const char *why = fp_sink_damage_text(&evs[0]);
        fp_sink_count_error(s, FP_SINK_ERR_damaged, "event global_seq=%llu skipped: %s",
                            (unsigned long long)evs[0].global_seq, why);
        fp_log(FP_LOG_ERROR, s->component, "damaged event in the outbox; skipped",
               "global_seq=%llu error=\"%s\"", (unsigned long long)evs[0].global_seq, why);
        return 1;
    }
    if (atomic_load_explicit(&s->state, memory_order_relaxed) == S_idle)
        atomic_store_explicit(&s->state, S_delivering, memory_order_relaxed);
    s->failing = false;
    int done = s->type->cb_deliver(s->ctx, s, s->sevs, k);
    if (done < 0 || s->failing) {
        s_copy_error(s, err, errlen);
        s_failed(s);
        return done; /* a prefix finished before the failure still counts */
    }
    s_succeeded(s, evs[done > 0 ? done - 1 : 0].global_seq >= fp_reader_target(r) && (size_t)done == n);
    return done;
}

static void s_r_idle(void *ctx, fp_reader_t *r)
{
    fp_sink_t *s = ctx;
    s->r = r;
    if (fp_reader_position(r) >= fp_reader_target(r)) {
        atomic_store_explicit(&s->caught_up_ns, fp_now_ns(), memory_order_relaxed);
        int st = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (st == S_delivering)
            atomic_store_explicit(&s->state, S_idle, memory_order_relaxed);
    }
    if (!s->type->cb_idle)
        return;
    s->redo = false;
    s->type->cb_idle(s->ctx, s);
    if (s->redo) {
        /* Its deferred work failed (a file rotation): what it accepted and
           did not finish is offered again, after a reopen and the back-off;
           without this an idle sink would wait for the next event. */
        s_failed(s);
        fp_reader_redo(r, true);
    }
}

void fp_sink_redo(fp_sink_t *s)
{
    s->redo = true;
}

static void s_r_close(void *ctx)
{
    fp_sink_t *s = ctx;
    if (s->type->cb_close)
        s->type->cb_close(s->ctx);
}

static const fp_reader_type_t s_reader_type = {"sink", s_r_open, s_r_deliver, s_r_idle,
                                               s_r_close};

/* ---- check, start, stop ---- */

static const fp_sink_type_t *s_type(const char *name)
{
    for (size_t i = 0; i < S_NTYPES; i++)
        if (strcmp(s_types[i]->name, name) == 0)
            return s_types[i];
    return NULL;
}

/* Reads sc's options (common and the type's) into a new sink; NULL with
   err. */
static fp_sink_t *s_sink_new(const fp_config_t *cfg, const fp_sink_config_t *sc, const char *file,
                             char *err, size_t errlen)
{
    fp_sink_opts_t o = {.cfg = cfg, .sc = sc, .file = file, .err = err, .errlen = errlen};
    char tname[32];
    fp_sink_opt_str(&o, "type", "", tname, sizeof tname, "jsonl, postgresql or http");
    const fp_sink_type_t *type = s_type(tname);
    if (!type) {
        char list[128] = "";
        size_t n = 0;
        for (size_t i = 0; i < S_NTYPES; i++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "",
                                  s_types[i]->name);
        fp_sink_opt_fail(&o, "type", "type = '%.40s': unknown sink type; allowed: %s", tname, list);
        return NULL;
    }
    static const char *const starts[] = {"oldest", "next", NULL};
    s_common_t c;
    if (fp_sink_opt_int(&o, "batch_max", 1000, 1, 10000, &c.batch_max) ||
        fp_sink_opt_int(&o, "retry_ms", 500, 10, 600000, &c.retry_ms) ||
        fp_sink_opt_int(&o, "retry_max_ms", 30000, 10, 3600000, &c.retry_max_ms) ||
        fp_sink_opt_int(&o, "breaker_failures", 5, 1, 1000, &c.breaker_failures) ||
        fp_sink_opt_int(&o, "breaker_open_ms", 30000, 100, 3600000, &c.breaker_open_ms) ||
        fp_sink_opt_enum(&o, "start", "oldest", starts, &c.start))
        return NULL;
    if (c.retry_max_ms < c.retry_ms)
        c.retry_max_ms = c.retry_ms;
    o.batch_max = c.batch_max;
    void *ctx = type->cb_new(&o);
    if (!ctx || o.failed) {
        if (ctx && type->cb_free)
            type->cb_free(ctx);
        if (!o.failed)
            fp_sink_opt_fail(&o, NULL, "type %s: cannot be set up", type->name);
        return NULL;
    }
    for (int i = 0; i < sc->nkv; i++)
        if (!o.asked[i]) {
            fp_sink_opts_t o2 = o;
            o2.failed = false;
            fp_sink_opt_fail(&o2, sc->kv[i].key, "unknown option '%s' for type %s; allowed: %s",
                             sc->kv[i].key, type->name, o.asked_list);
            if (type->cb_free)
                type->cb_free(ctx);
            return NULL;
        }
    fp_sink_t *s = calloc(1, sizeof *s);
    if (!s) {
        if (type->cb_free)
            type->cb_free(ctx);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(s->name, sizeof s->name, "%s", sc->name);
    snprintf(s->component, sizeof s->component, "sink-%s", sc->name);
    s->type = type;
    s->ctx = ctx;
    s->cfg = cfg;
    s->c = c;
    pthread_mutex_init(&s->mu, NULL);
    atomic_store_explicit(&s->caught_up_ns, fp_now_ns(), memory_order_relaxed);
    return s;
}

static void s_sink_free(fp_sink_t *s)
{
    if (!s)
        return;
    fp_reader_stop(&s->reader);
    if (s->type->cb_free)
        s->type->cb_free(s->ctx);
    pthread_mutex_destroy(&s->mu);
    free(s->sevs);
    free(s);
}

int fp_sinks_check(const fp_config_t *cfg, const char *file, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->nsinks; i++) {
        fp_sink_t *s = s_sink_new(cfg, &cfg->sinks[i], file ? file : "(config)", err, errlen);
        if (!s)
            return -1;
        s_sink_free(s);
    }
    return 0;
}

static char *s_prom(const void *ctx, size_t *len)
{
    return fp_sinks_prometheus(ctx, len);
}

static char *s_status(const void *ctx, size_t *len)
{
    return fp_sinks_status_json(ctx, len);
}

fp_sinks_t *fp_sinks_start(void *zmq_ctx, const fp_config_t *cfg, const char *file,
                           struct fp_store *store, struct fp_metrics *metrics, char *err,
                           size_t errlen)
{
    fp_sinks_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->metrics = metrics;
    for (int i = 0; i < cfg->nsinks; i++) {
        fp_sink_t *s = s_sink_new(cfg, &cfg->sinks[i], file ? file : "(config)", err, errlen);
        if (!s)
            goto fail;
        self->sinks[self->n++] = s;
        fp_reader_opts_t ro = {.name = s->name, .type = &s_reader_type, .ctx = s,
                               .batch_max = (uint32_t)s->c.batch_max,
                               .retry_ms = (int)s->c.retry_ms,
                               .drain_ms = (int)cfg->drain_timeout_ms};
        if (s->c.start == 1) {
            uint64_t round = 0, last = 0;
            if (fp_outbox_reader(store, s->name, NULL, NULL) == FP_STORE_NOTFOUND &&
                fp_store_last_round(store, &round, &last) == 0)
                ro.start_after = last ? last : 0;
        }
        s->reader = fp_reader_start(zmq_ctx, store, &ro, err, errlen);
        if (!s->reader)
            goto fail;
        fp_log(FP_LOG_INFO, s->component, "sink started", "type=%s position=%llu", s->type->name,
               (unsigned long long)fp_reader_position(s->reader));
    }
    if (metrics && self->n)
        fp_metrics_set_sinks(metrics, s_prom, s_status, self);
    return self;
fail:
    fp_sinks_stop(self);
    fp_sinks_destroy(&self);
    return NULL;
}

void fp_sinks_stop(fp_sinks_t *self)
{
    if (!self)
        return;
    for (int i = 0; i < self->n; i++) {
        fp_reader_stop(&self->sinks[i]->reader);
        atomic_store_explicit(&self->sinks[i]->state, S_stopped, memory_order_relaxed);
    }
}

void fp_sinks_destroy(fp_sinks_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fp_sinks_t *self = *self_p;
    if (self->metrics)
        fp_metrics_set_sinks(self->metrics, NULL, NULL, NULL);
    for (int i = 0; i < self->n; i++)
        s_sink_free(self->sinks[i]);
    free(self);
    *self_p = NULL;
}

/* ---- status and metrics ---- */

typedef struct {
    uint64_t position, target, lag, delivered, writes, rejected, gap, errors[FP_SINK_ERR_COUNT];
    int state;
    double lag_seconds;
    char last_error[256];
    int64_t last_error_at;
    const char *last_class;
} s_snap_t;

static void s_snap(const fp_sink_t *s, s_snap_t *o)
{
    fp_sink_t *m = (fp_sink_t *)s;
    memset(o, 0, sizeof *o);
    o->state = atomic_load_explicit(&m->state, memory_order_relaxed);
    if (s->reader) {
        o->position = fp_reader_position(s->reader);
        o->target = fp_reader_target(s->reader);
        o->delivered = fp_reader_delivered(s->reader);
        o->gap = fp_reader_gap_events(s->reader);
        if (fp_reader_is_detached(s->reader) && o->state != S_stopped)
            o->state = S_detached;
    }
    o->lag = o->target > o->position ? o->target - o->position : 0;
    int64_t cu = atomic_load_explicit(&m->caught_up_ns, memory_order_relaxed);
    o->lag_seconds = o->lag ? (double)(fp_now_ns() - cu) / 1e9 : 0.0;
    o->writes = atomic_load_explicit(&m->writes, memory_order_relaxed);
    o->rejected = atomic_load_explicit(&m->rejected, memory_order_relaxed);
    for (int c = 0; c < FP_SINK_ERR_COUNT; c++)
        o->errors[c] = atomic_load_explicit(&m->errors[c], memory_order_relaxed);
    pthread_mutex_lock(&m->mu);
    snprintf(o->last_error, sizeof o->last_error, "%s", s->last_error);
    o->last_error_at = s->last_error_at;
    o->last_class = s->last_error_at ? fp_sink_err_name(s->last_class) : "";
    pthread_mutex_unlock(&m->mu);
}

typedef fp_buf_t s_buf_t;
#define s_put fp_buf_put

/* A JSON string body (without quotes), valid UTF-8 whatever the bytes (an
   ERP's error text may carry anything: utf8.h repairs it first). */
static void s_put_json_str(s_buf_t *b, const char *v)
{
    char fixed[1024];
    fp_utf8_repair(fixed, sizeof fixed, v, strlen(v));
    for (const unsigned char *p = (const unsigned char *)fixed; *p; p++) {
        if (*p == '"' || *p == '\\')
            s_put(b, "\\%c", *p);
        else if (*p < 0x20)
            s_put(b, "\\u%04x", *p);
        else
            s_put(b, "%c", *p);
    }
}

static s_buf_t s_finish(s_buf_t b, size_t *len)
{
    if (b.failed) {
        free(b.p);
        b.p = NULL;
    }
    *len = b.p ? b.len : 0;
    return b;
}

char *fp_sinks_status_json(const fp_sinks_t *self, size_t *len)
{
    s_buf_t b = {0};
    s_put(&b, "[");
    for (int i = 0; i < self->n; i++) {
        const fp_sink_t *s = self->sinks[i];
        s_snap_t o;
        s_snap(s, &o);
        s_put(&b, "%s{\"name\":\"%s\",\"type\":\"%s\",\"state\":\"%s\",\"position\":%llu,"
                  "\"committed\":%llu,\"lag_events\":%llu,\"lag_seconds\":%.3f,"
                  "\"delivered_events\":%llu,\"writes\":%llu,\"rejected\":%llu,"
                  "\"gap_events\":%llu,\"errors\":{",
              i ? "," : "", s->name, s->type->name, s_state_name(o.state),
              (unsigned long long)o.position, (unsigned long long)o.target,
              (unsigned long long)o.lag, o.lag_seconds, (unsigned long long)o.delivered,
              (unsigned long long)o.writes, (unsigned long long)o.rejected,
              (unsigned long long)o.gap);
        for (int c = 0; c < FP_SINK_ERR_COUNT; c++)
            s_put(&b, "%s\"%s\":%llu", c ? "," : "", fp_sink_err_name(c),
                  (unsigned long long)o.errors[c]);
        s_put(&b, "},\"last_error\":\"");
        s_put_json_str(&b, o.last_error);
        s_put(&b, "\",\"last_error_class\":\"%s\",\"last_error_at_ns\":%lld}", o.last_class,
              (long long)o.last_error_at);
    }
    s_put(&b, "]\n");
    return s_finish(b, len).p;
}

char *fp_sinks_prometheus(const fp_sinks_t *self, size_t *len)
{
    s_buf_t b = {0};
    s_snap_t snaps[FP_SINKS_MAX];
    for (int i = 0; i < self->n; i++)
        s_snap(self->sinks[i], &snaps[i]);
    static const struct {
        const char *name, *type, *help;
    } g[] = {
        {"floorpost_sink_lag_events", "gauge", "Committed events the sink has not finished."},
        {"floorpost_sink_lag_seconds", "gauge",
         "How long the sink has been behind (0 when caught up)."},
        {"floorpost_sink_position", "gauge", "Last global_seq the sink has finished with."},
        {"floorpost_sink_delivered_events_total", "counter", "Events the sink finished."},
        {"floorpost_sink_writes_total", "counter",
         "Rows (postgresql), requests (http) or files (jsonl) written."},
        {"floorpost_sink_rejected_total", "counter",
         "Postings the ERP refused (dead letters erp_rejected)."},
        {"floorpost_sink_gap_events_total", "counter",
         "Events lost to the sink: no longer in the outbox when it got to them."},
    };
    s_put(&b, "%s", "");
    for (size_t k = 0; k < sizeof g / sizeof g[0]; k++) {
        s_put(&b, "# HELP %s %s\n# TYPE %s %s\n", g[k].name, g[k].help, g[k].name, g[k].type);
        for (int i = 0; i < self->n; i++) {
            const s_snap_t *o = &snaps[i];
            const char *nm = self->sinks[i]->name;
            if (k == 1)
                s_put(&b, "%s{sink=\"%s\"} %.3f\n", g[k].name, nm, o->lag_seconds);
            else {
                uint64_t v = k == 0 ? o->lag : k == 2 ? o->position : k == 3 ? o->delivered
                             : k == 4 ? o->writes : k == 5 ? o->rejected : o->gap;
                if (k == 4)
                    s_put(&b, "%s{sink=\"%s\",type=\"%s\"} %llu\n", g[k].name, nm,
                          self->sinks[i]->type->name, (unsigned long long)v);
                else
                    s_put(&b, "%s{sink=\"%s\"} %llu\n", g[k].name, nm, (unsigned long long)v);
            }
        }
    }
    s_put(&b, "# HELP floorpost_sink_errors_total Failed deliveries and connects, by class.\n"
              "# TYPE floorpost_sink_errors_total counter\n");
    for (int i = 0; i < self->n; i++)
        for (int c = 0; c < FP_SINK_ERR_COUNT; c++)
            s_put(&b, "floorpost_sink_errors_total{sink=\"%s\",class=\"%s\"} %llu\n",
                  self->sinks[i]->name, fp_sink_err_name(c),
                  (unsigned long long)snaps[i].errors[c]);
    s_put(&b, "# HELP floorpost_sink_state The sink's state (1 for the current one).\n"
              "# TYPE floorpost_sink_state gauge\n");
    for (int i = 0; i < self->n; i++)
        for (int st = 0; st < S_NSTATES; st++)
            s_put(&b, "floorpost_sink_state{sink=\"%s\",state=\"%s\"} %d\n", self->sinks[i]->name,
                  s_state_name(st), snaps[i].state == st);
    return s_finish(b, len).p;
}
