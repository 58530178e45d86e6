/*  sink.h - what a sink type implements: one struct of callbacks (new,
    open, deliver a batch, idle, close, free), like fluent-bit's output
    plugins. sinks.c does the rest: the [sink NAME] options, the durable
    outbox reader (reader.h) with its thread and position, decoding each
    event, back-off, the circuit breaker, the counters, the status and the
    metrics (docs/sinks.md).

    Semantics a type must keep
    - cb_deliver gets events in global_seq order and returns how many of
      them (a prefix) it has finished with: written where it can never be
      lost (committed, fsynced, answered 2xx). Only that prefix moves the
      position. The rest comes again, so a repeat must be harmless: the
      event_id is the ERP's reference key (a unique column, an idempotency
      key, a file named by its global_seq range).
    - On a failure it calls fp_sink_fail (the class and the text for the
      status, the log and the metric) and returns the prefix finished
      before it (often 0) or FP_READER_REOPEN when the connection is
      gone. sinks.c backs off (retry_ms doubling up to retry_max_ms) and
      opens the circuit breaker after breaker_failures failures in a row.
    - A damaged event (its stored value fails the state file's check, or
      its bytes are not a Checkpoint) never reaches cb_deliver: sinks.c
      counts it (class damaged, naming its global_seq) and goes past it.
    - A posting the ERP refuses for good (a 4xx, a row its import job
      marked ERROR) is not a failure: the type reports it with
      fp_sink_dead_letter and goes on.

    Thread contract: cb_new and cb_free run on the controlling thread
    (also for `run --check`, with no I/O beyond cheap checks of the
    environment); every other callback runs on the sink's own thread
    (fp-r-NAME), one at a time.
*/
#ifndef FP_SINK_H
#define FP_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "domain.h"
#include "reader.h"

typedef struct fp_sink fp_sink_t;       /* one running sink (sinks.c) */
typedef struct fp_sink_opts fp_sink_opts_t;

/* Error classes: the label `class` of floorpost_sink_errors_total. */
#define FP_SINK_ERRORS(X)                                                     \
    X(connect) X(timeout) X(server) X(throttled) X(rejected) X(io) X(protocol) \
    X(config) X(damaged)
#define FP_SINK_ERR_ENUM_(n) FP_SINK_ERR_##n,
typedef enum { FP_SINK_ERRORS(FP_SINK_ERR_ENUM_) FP_SINK_ERR_COUNT } fp_sink_err_t;
#undef FP_SINK_ERR_ENUM_
const char *fp_sink_err_name(int cls);

/* One event as a sink gets it: the stored bytes and their decoding. */
typedef struct {
    const fp_reader_event_t *raw; /* global_seq, topic, the Checkpoint bytes */
    fp_checkpoint_t ck;           /* strings point into raw->ev */
    char posting_date[11];        /* YYYY-MM-DD: the checkpoint's own posting date (its
                                     period's); for an event without one, the date of
                                     ck.last_time_ns in the plant's time zone */
} fp_sink_event_t;

typedef struct {
    const char *name; /* the type: the value of `type =` */
    /* Reads and checks its options through opts (fp_sink_opt_*); returns
       its ctx, or NULL after reporting the error with fp_sink_opt_fail
       (or a getter did). */
    void *(*cb_new)(fp_sink_opts_t *opts);
    /* Connects; may call fp_sink_rewind (its own durable position) and
       fp_sink_aux. 0, or -1 after fp_sink_fail. */
    int (*cb_open)(void *ctx, fp_sink_t *s);
    /* See the Semantics above. */
    int (*cb_deliver)(void *ctx, fp_sink_t *s, const fp_sink_event_t *evs, size_t n);
    /* Optional: about once a second while open (the ERP's verdicts). */
    void (*cb_idle)(void *ctx, fp_sink_t *s);
    /* Optional: disconnects (after a REOPEN, and at exit). */
    void (*cb_close)(void *ctx);
    void (*cb_free)(void *ctx);
} fp_sink_type_t;

/* ---- Options (in cb_new) ----

   Each getter reads one option of the sink's section. An option given
   that no getter asked for is an error after cb_new ("unknown option",
   listing the ones the type asked for). Errors read
   "FILE:LINE: [sink NAME] key = 'value': why; allowed: ..."; the getters
   return 0, or -1 after reporting. */
int fp_sink_opt_str(fp_sink_opts_t *o, const char *key, const char *def, char *out, size_t cap,
                    const char *allowed);
int fp_sink_opt_int(fp_sink_opts_t *o, const char *key, int64_t def, int64_t min, int64_t max,
                    int64_t *out);
int fp_sink_opt_bool(fp_sink_opts_t *o, const char *key, bool def, bool *out);
/* One of choices (NULL-terminated); *out its index. */
int fp_sink_opt_enum(fp_sink_opts_t *o, const char *key, const char *def,
                     const char *const *choices, int *out);
/* Reports an error about option key (its line; the section's when not
   given). Returns -1. */
int fp_sink_opt_fail(fp_sink_opts_t *o, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *fp_sink_opts_name(const fp_sink_opts_t *o);
const fp_config_t *fp_sink_opts_config(const fp_sink_opts_t *o);
/* The sink's batch_max (the most events one cb_deliver gets). */
int64_t fp_sink_opts_batch_max(const fp_sink_opts_t *o);

/* ---- On the sink's thread ---- */

const char *fp_sink_name(const fp_sink_t *s);
const fp_config_t *fp_sink_config(const fp_sink_t *s);

/* Records a failure: class (fp_sink_err_t), the text for the status and
   the log. Returns -1 (so `return fp_sink_fail(...)` reads well). */
int fp_sink_fail(fp_sink_t *s, int cls, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* An error that is not a failure (a request the ERP refused for good:
   class rejected): counted in floorpost_sink_errors_total and shown as the
   last error, with no back-off. */
void fp_sink_count_error(fp_sink_t *s, int cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The last committed global_seq the sink knows of: always the last event
   of a commit round (a batch that ends there ends with a round). */
uint64_t fp_sink_committed(const fp_sink_t *s);

/* The next attempt after this failure no sooner than ms from now (a 429's
   Retry-After), instead of the back-off. */
void fp_sink_retry_after(fp_sink_t *s, int ms);

/* Requests or rows or files written, for the metric
   floorpost_sink_writes_total (what one unit is: docs/sinks.md). */
void fp_sink_count_writes(fp_sink_t *s, uint64_t n);

/* In cb_open: the sink's own durable position (fp_reader_rewind). */
void fp_sink_rewind(fp_sink_t *s, uint64_t position);

/* In cb_open: accepted is not finished (fp_reader_defer); the type
   then calls fp_sink_finished(s, last global_seq kept for good). */
void fp_sink_defer(fp_sink_t *s);
void fp_sink_finished(fp_sink_t *s, uint64_t position);

/* In cb_idle, after fp_sink_fail: the deferred work failed (a deferring
   type's rotation): reopen, and what was accepted and not finished is
   offered again from the finished position, after the back-off. */
void fp_sink_redo(fp_sink_t *s);

/* The aux cursor (fp_reader_aux): committed with the dead letters. */
void fp_sink_aux(const fp_sink_t *s, uint64_t aux[2]);

/* A posting the ERP refused: dead letter `erp_rejected` with fields (the
   ERP's code and text, the business keys: add them with fp_dl_fields_*;
   the sink's name, the event_id and global_seq are added here), the
   event's bytes, and the new aux cursor. 0, or -1 (emit's pipe refused:
   try again later). A verdict found long after the delivery (a row the
   ERP marked ERROR) has no stored event at hand: the type may pass an ev
   it rebuilt from what it wrote (raw->ev an encoded Checkpoint, raw->round
   0), as sink_pg.c does. */
int fp_sink_dead_letter(fp_sink_t *s, const uint64_t aux[2], const fp_sink_event_t *ev,
                        fp_dl_fields_t *fields);

/* The event as one JSON object, the fields of `floorpost tail --json`
   plus "posting_date" (no newline, NUL-terminated). Length, or -1 when cap
   is too small. */
int fp_sink_event_json(const fp_sink_event_t *ev, char *out, size_t cap);

/* Decodes raw into *ev (posting date included). 0, or -1 for bytes that
   are not a Checkpoint or a damaged event (raw->damaged). Any thread. */
int fp_sink_event_decode(const fp_reader_event_t *raw, fp_sink_event_t *ev);

/* Why an event fp_sink_event_decode refused cannot be used: the text of
   class damaged (static). */
const char *fp_sink_damage_text(const fp_reader_event_t *raw);

/* Whether s (NULL: no) is ten characters shaped YYYY-MM-DD. */
bool fp_sink_date_shaped(const char *s);

/* Types (sink_*.c). */
extern const fp_sink_type_t fp_sink_jsonl;
extern const fp_sink_type_t fp_sink_postgresql;
extern const fp_sink_type_t fp_sink_http;

#endif
