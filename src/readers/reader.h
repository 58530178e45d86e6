/*  reader.h - a durable outbox reader: an actor that delivers the committed
    outbox, in global_seq order, from its own durable position, on its own
    thread (fp-r-NAME). The shape every ERP sink takes (PostgreSQL, HTTP,
    files): a reader type is one struct of callbacks, like fluent-bit's
    output plugins; this module does the thread, the wake-ups, the reads and
    the position.

    Semantics
    - Position: the last global_seq the reader has finished with. It starts
      at the committed position (outbox.h, table readers) or, for a reader
      never seen before, at start_after (0 = from the oldest event kept).
    - Woken by emit's "committed up to round R / global_seq G" notice
      (stage.h, FP_EP_NOTICE), never by polling; it also wakes once a
      second to retry a failed delivery and to look at its flags.
    - Delivery: up to batch_max events at a time, in order, each handed to
      cb_deliver once per attempt. cb_deliver returns how many events of
      the batch it has finished with (a prefix, 0..n), or a negative error.
      The position moves past the finished prefix only; the rest is offered
      again, from the first unfinished event: at once after a prefix of
      n > 0 (a type may hold back events the next batch completes), no
      sooner than retry_ms after a failure (a negative result, 0, or a
      prefix with fp_reader_retry_in called). So an event is offered
      again after a failure, a restart or a crash: cb_deliver must make a
      repeat harmless (the event_id is the idempotency key).
    - Durable position: after each delivery that moved it, the reader
      reports its position to emit (FP_EP_READERS, fp_reader_pos_t); emit,
      the single writer, commits it with its next round. A crash loses at
      most the reports of the rounds not committed: those events are
      offered again. Retention never deletes an event past the committed
      position of an enabled reader; a reader that falls reader_max_lag
      events behind is detached by emit (loudly), and from then on holds
      nothing back; it reads on from where it is (an event already trimmed
      is skipped and logged as lost to it).
    - Exits on emit's DONE notice, after delivering what was committed, or
      sooner: when a delivery fails, or after drain_ms. Positions reached
      after DONE are not committed any more (emit has exited): a type
      without a durable position of its own gets those events again at
      the next start, so a long backlog (a slow ERP) must not hold the
      exit.
    - A type that keeps its own durable position where it delivers (a
      PostgreSQL sink: in the same transaction as the rows) says so in
      cb_open with fp_reader_rewind: the reader goes on from there, back or
      forth. Events that position needs and the outbox no longer holds are
      a gap: logged loudly and counted (fp_reader_gap_events), never
      skipped in silence.
    - A damaged event (its stored value fails the state file's check: the
      file was damaged after the start's walk) is delivered like any other,
      in its place, with damaged set and none of its bytes
      (fp_outbox_read_ex, FP_OUTBOX_READ_DAMAGED): never a read error
      retried for good. The type counts it and finishes with it (sinks.c:
      class damaged).
    - Posting dead letters (an event the ERP refused): the type calls
      fp_reader_dead_letter from its callbacks; emit commits it with its
      next round together with the type's aux cursor (two u64, e.g. the
      ERP verdicts reported so far), so a crash never reports a verdict
      twice nor loses one. cb_idle runs about once a second for such
      polling.

    Thread contract: fp_reader_start/fp_reader_stop on one controlling
    thread (the pipeline's); the callbacks run on the reader's own thread,
    one at a time; ctx belongs to that thread while it runs.
*/
#ifndef FP_READER_H
#define FP_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stage.h"

struct fp_store;
typedef struct fp_reader fp_reader_t;

/* One committed event, as stored in the outbox. topic and ev point into
   LMDB's map: valid during cb_deliver only, read-only, ev not aligned. */
typedef struct {
    uint64_t global_seq;
    uint64_t round;
    const char *topic; /* not NUL-terminated */
    size_t tlen;
    const void *ev;    /* the Checkpoint (schema/checkpoint.fbs) */
    size_t evlen;
    bool damaged;      /* its stored value fails the state file's check (a file
                          damaged after the start's walk): topic and ev NULL,
                          tlen, evlen and round 0; the type counts it and goes
                          past it (sinks.c: class damaged) */
} fp_reader_event_t;

/* A reader type: one struct of callbacks. */
typedef struct {
    const char *name; /* the type, e.g. "postgresql" */
    /* On the reader's thread, before the first delivery (and again after a
       failed one, if it returned FP_READER_REOPEN). 0, or -1 with err (the
       reader then retries it after retry_ms or fp_reader_retry_in). May
       call fp_reader_rewind. */
    int (*cb_open)(void *ctx, fp_reader_t *r, char *err, size_t errlen);
    /* Events evs[0..n) in global_seq order: returns how many it finished
       with (a prefix), or a negative error with err filled
       (FP_READER_REOPEN: the connection is gone, call cb_open first). */
    int (*cb_deliver)(void *ctx, fp_reader_t *r, const fp_reader_event_t *evs, size_t n,
                      char *err, size_t errlen);
    /* Optional: about once a second while open, and after each delivery
       run; for work besides delivery (polling the ERP's verdicts). */
    void (*cb_idle)(void *ctx, fp_reader_t *r);
    /* On the reader's thread, at exit, if cb_open ever succeeded. */
    void (*cb_close)(void *ctx);
} fp_reader_type_t;

#define FP_READER_REOPEN (-2) /* cb_deliver: reopen before the next attempt */

#define FP_READER_NAME_MAX 63u /* as outbox.h's FP_OUTBOX_READER_NAME_MAX */

/* Reader -> emit on FP_EP_READERS: "reader `name` has finished with every
   event <= position". */
typedef struct {
    uint32_t type; /* FP_MSG_READER_POS */
    uint32_t pad;
    uint64_t position;
    char name[FP_READER_NAME_MAX + 1]; /* NUL-terminated */
} fp_reader_pos_t;

typedef struct {
    const char *name;         /* 1..63 of [A-Za-z0-9._-]: the durable position's key */
    const fp_reader_type_t *type;
    void *ctx;                /* handed to every callback */
    uint64_t start_after;     /* a new reader's first position (0 = the oldest kept) */
    uint32_t batch_max;       /* events per cb_deliver, 1..10000 (0 = 1000) */
    int retry_ms;             /* after a failed open or delivery (0 = 1000) */
    int drain_ms;             /* after emit's DONE: deliver for at most this long (0 = until
                                 caught up or failing) */
} fp_reader_opts_t;

/* Reader -> emit on FP_EP_READERS, then the four frames of a dead letter
   (fp_dead_letter_parts): commit it with the next round and, in the same
   transaction, set reader `name`'s aux cursor. */
typedef struct {
    uint32_t type;   /* FP_MSG_READER_DL */
    uint32_t reason; /* fp_dl_reason_t */
    uint64_t aux[2];
    char name[FP_READER_NAME_MAX + 1];
} fp_reader_dl_t;

/* Starts the reader's thread on zmq_ctx over store (which must outlive
   it). It subscribes to the notices and connects to FP_EP_READERS before
   this returns. NULL with err filled on a bad name or option, or a thread
   or socket failure. Stop with fp_reader_stop. */
fp_reader_t *fp_reader_start(void *zmq_ctx, struct fp_store *store, const fp_reader_opts_t *o,
                             char *err, size_t errlen);

/* Waits for the reader's thread to exit (it does on emit's DONE notice,
   or when zmq_ctx is terminated), then frees *self_p and sets it to NULL;
   NULL-safe. */
void fp_reader_stop(fp_reader_t **self_p);

/* Counters of a reader, for its own thread's reporting and for tests
   (relaxed atomics: read from any thread). */
uint64_t fp_reader_position(const fp_reader_t *self);  /* last finished global_seq */
uint64_t fp_reader_delivered(const fp_reader_t *self); /* events finished */
uint64_t fp_reader_errors(const fp_reader_t *self);    /* failed opens and deliveries */
uint64_t fp_reader_target(const fp_reader_t *self);    /* last committed global_seq known */
uint64_t fp_reader_gap_events(const fp_reader_t *self);/* events lost to it (not retained) */
bool fp_reader_is_detached(const fp_reader_t *self);   /* retention no longer waits for it */

/* ---- For the type's callbacks (the reader's own thread) ---- */

const char *fp_reader_name(const fp_reader_t *self);

/* In cb_open: go on after `position` (the type's own durable position). */
void fp_reader_rewind(fp_reader_t *self, uint64_t position);

/* The aux cursor: the committed one at start, then the last one given to
   fp_reader_dead_letter. */
void fp_reader_aux(const fp_reader_t *self, uint64_t aux[2]);

/* A posting dead letter (reason fp_dl_reason_t, e.g. FP_DL_erp_rejected):
   handed to emit with the new aux cursor; see the Semantics above. bytes:
   the event (the Checkpoint), fields: the ERP's verdict and the business
   keys. Never blocks. 0, or -1 when emit's pipe refused it (try again). */
int fp_reader_dead_letter(fp_reader_t *self, const uint64_t aux[2], int reason,
                          const fp_dl_fields_t *f, const void *bytes, size_t len);

/* In cb_open: this type finishes events later than it accepts them (a
   file sink that renames a file into place only when it rotates): what
   cb_deliver returns is accepted (not offered again unless a delivery
   fails, which offers again from the finished position), and the type
   moves the durable position with fp_reader_finished. */
void fp_reader_defer(fp_reader_t *self);

/* A deferring type: every accepted event <= position is finished (kept
   for good). Ignored when not ahead of the finished position or beyond
   what was accepted; within cb_deliver, the batch it was given counts as
   accepted (a type that finished it before returning, and returns it
   whole). */
void fp_reader_finished(fp_reader_t *self, uint64_t position);

/* From cb_idle (a deferring type whose deferred work failed: a file
   rotation): what was accepted and not finished is offered again from the
   finished position, after cb_close and cb_open when reopen. */
void fp_reader_redo(fp_reader_t *self, bool reopen);

/* After a failure: the next attempt in ms (a back-off), instead of
   retry_ms. */
void fp_reader_retry_in(fp_reader_t *self, int ms);

#endif
