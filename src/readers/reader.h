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
      again, from the first unfinished event, at the next wake-up (a retry
      no sooner than retry_ms after a failure). So an event is offered
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
    - Exits on emit's DONE notice, after delivering what was committed.

    Thread contract: fp_reader_start/fp_reader_stop on one controlling
    thread (the pipeline's); the callbacks run on the reader's own thread,
    one at a time; ctx belongs to that thread while it runs.
*/
#ifndef FP_READER_H
#define FP_READER_H

#include <stddef.h>
#include <stdint.h>

struct fp_store;

/* One committed event, as stored in the outbox. topic and ev point into
   LMDB's map: valid during cb_deliver only, read-only, ev not aligned. */
typedef struct {
    uint64_t global_seq;
    uint64_t round;
    const char *topic; /* not NUL-terminated */
    size_t tlen;
    const void *ev;    /* the Checkpoint (schema/checkpoint.fbs) */
    size_t evlen;
} fp_reader_event_t;

/* A reader type: one struct of callbacks. */
typedef struct {
    const char *name; /* the type, e.g. "postgresql" */
    /* On the reader's thread, before the first delivery. 0, or -1 with err
       (the reader then retries cb_open every retry_ms). */
    int (*cb_open)(void *ctx, char *err, size_t errlen);
    /* Events evs[0..n) in global_seq order: returns how many it finished
       with (a prefix), or a negative error with err filled. */
    int (*cb_deliver)(void *ctx, const fp_reader_event_t *evs, size_t n, char *err,
                      size_t errlen);
    /* On the reader's thread, at exit. */
    void (*cb_close)(void *ctx);
} fp_reader_type_t;

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
} fp_reader_opts_t;

typedef struct fp_reader fp_reader_t;

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

#endif
