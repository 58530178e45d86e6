/*  producer.h - the acknowledged producer: batches telemetry records, sends
    them to floorpost as FlatBuffers Batch frames (schema/telemetry.fbs) and
    keeps every batch until floorpost says it is durable.

    For gateway and MES-adapter developers. `make install` puts this header
    (with record.h and curve.h) in PREFIX/include/floorpost/ and the client
    library in PREFIX/lib/libfloorpost-gateway.a (producer, strtab, curve,
    subscriber and the codec; nothing else of floorpost), with
    PREFIX/lib/pkgconfig/floorpost.pc. Build a gateway with
        cc gw.c $(pkg-config --cflags --libs floorpost)
    and #include <floorpost/producer.h>.

    THE GUARANTEE. In PRODUCER_ACKED mode, a record handed to producer_add is
    kept in this producer's buffer until floorpost has acknowledged it as
    durable (its Ack says: every seq <= acked_seq of this source and epoch
    has been committed to disk), or refused its whole batch (status 1: the
    batch went to the dead-letter store; the Ack names the batch by its seq
    range and record count, the producer counts it in rejected_batches,
    releases it and goes on). Until then it is sent again: after
    resend_ms without an Ack (default 2000 ms) and at once after a reconnect.
    floorpost deduplicates by (source_id, epoch, seq), so a resend is
    harmless. What this library cannot keep is what it never got, or what
    dies with its process: on a gateway restart, records it had buffered are
    gone unless the gateway can read them again from its own source (a PLC
    counter, a file). Re-read them under a NEW epoch (below).

    EPOCH AND SEQ. Each (source_id, epoch) is a session; seq starts at 1 in
    a new epoch and grows strictly. A gateway that restarts must use a larger
    epoch than before, or floorpost drops its new records as duplicates of
    the old session's: producer_epoch_from_file() keeps that number in a file.

    BACK-PRESSURE. The buffer is bounded (producer_set_buffer; default
    PRODUCER_BUFFER_BATCHES batches / PRODUCER_BUFFER_BYTES bytes). When it
    is full, producer_add and producer_flush wait (reading Acks, resending as
    due) until an Ack frees room; with producer_set_send_timeout they give up
    after that long with -EAGAIN and the record is not taken. With
    producer_set_spill, batches that do not fit go to a file instead and come
    back into memory (and onto the wire) as room frees up.

    PROGRESS. Everything happens inside the calls: there is no background
    thread. A gateway that may sit idle with batches unacknowledged calls
    producer_poll (or producer_wait_acks) now and then, e.g. from its own
    event loop, so that Acks are read and resends go out.

    Example (error handling shortened):

        void *ctx = zmq_ctx_new();
        uint64_t epoch;
        if (producer_epoch_from_file("/var/lib/gw/epoch", &epoch) != 0)
            exit(1);                                  // garbage in the file: look at it
        producer_t *p = producer_new(ctx, "tcp://floorpost:5560", PRODUCER_ACKED, 256);
        producer_set_send_timeout(p, 1000);           // stay responsive to shutdown
        uint64_t seq = 0;
        while (running) {
            fp_rec_in_t r = {.seq = ++seq, .time_ns = now_ns(), .quantity = 1,
                             .kind = FP_KIND_PART_COUNT};
            r.str[FP_STR_PLANT] = "1000"; r.str[FP_STR_LINE] = "L01";
            r.str[FP_STR_ORDER] = order; r.str[FP_STR_OPERATION] = "0010";
            int rc;
            while ((rc = producer_add(p, SOURCE_ID, epoch, &r)) == -EAGAIN && running)
                ;                                     // buffer full: floorpost is behind
            producer_flush(p);                        // or let batches fill up
            producer_poll(p, 0);                      // read Acks, resend what is due
        }
        producer_flush(p);
        producer_wait_acks(p, 10000);                 // 0: everything is durable
        producer_destroy(&p);
        zmq_ctx_term(ctx);

    Modes:
      PRODUCER_ACKED  a DEALER connected to floorpost's ROUTER endpoint; one
                      Batch per frame, one Ack frame (FPA1) back per batch
                      received (also per resend). Everything above applies.
                      ZMQ_IMMEDIATE is set: nothing queues inside libzmq
                      while disconnected, so after a reconnect the oldest
                      unacked batches go first (floorpost's dedup window
                      needs roughly in-order seqs); batches go out only
                      inside producer_* calls (see PROGRESS).
      PRODUCER_PUSH   a PUSH connected to floorpost's PULL endpoint; fire and
                      forget: no Acks, no buffer, no resends. ZMQ_IMMEDIATE
                      is set, so a send waits for a connected peer (up to the
                      send timeout) instead of queueing to nobody.

    Thread contract: a producer and its sockets belong to the thread that
    created it; create, use and destroy it on that one thread. Different
    producers are independent. producer_epoch_from_file touches only its
    file.
*/
#ifndef FP_PRODUCER_H
#define FP_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include "record.h" /* installed beside it: <floorpost/record.h> */

/* One record as the caller gives it: strings instead of table indices. */
typedef struct {
    uint64_t seq;     /* >= 1, strictly increasing within (source_id, epoch) */
    int64_t time_ns;  /* event time, ns since the Unix epoch, UTC */
    int64_t quantity; /* parts, or thousandths of unit for FP_KIND_MATERIAL */
    uint8_t kind;     /* FP_KIND_* (not checked here: floorpost dead-letters bad ones) */
    const char *str[FP_STR_FIELDS]; /* FP_STR_* order; NULL or "" = absent. A counter
                                       reading's name goes in str[FP_STR_COUNTER] */
    uint8_t flags;    /* FP_KIND_PART_COUNTER, FP_KIND_SCRAP_COUNTER: FP_COUNTER_FROM_ZERO
                         or 0 (the wire's reserved0); 0 for every other kind */
} fp_rec_in_t;

#define PRODUCER_ACKED 1 /* DEALER connected to floorpost's ROUTER endpoint; reads Acks */
#define PRODUCER_PUSH 2  /* PUSH connected to floorpost's PULL endpoint; fire and forget */

#define PRODUCER_BATCH_MAX 65536u /* largest batch_records accepted */
#define PRODUCER_SNDHWM 1000      /* frames queued in the socket before sends wait */
#define PRODUCER_LINGER_MS 2000   /* what producer_destroy waits for queued frames */
#define PRODUCER_BUFFER_BATCHES 4096            /* default unacked batches kept */
#define PRODUCER_BUFFER_BYTES (64u * 1024 * 1024) /* default unacked bytes kept (encoded) */
#define PRODUCER_RESEND_MS 2000   /* default: resend a batch unacked this long */
#define PRODUCER_OPEN_BATCHES_MAX 1024u /* most open batches (producer_set_open_batches) */

typedef struct producer producer_t;

/* Creates a socket of `mode` in zmq_ctx (not owned) and connects it to
   endpoint; endpoint NULL: not connected yet (set options such as CURVE,
   then producer_connect). batch_records: records per batch,
   1..PRODUCER_BATCH_MAX. NULL on a bad argument, out of memory or a zmq
   error (errno set). */
producer_t *producer_new(void *zmq_ctx, const char *endpoint, int mode, uint32_t batch_records);

/* Makes the socket a CURVE client: the server's public key and this
   producer's key pair, each 40 Z85 characters (floorpost keygen). Only
   affects connections made after it: call between producer_new(ctx, NULL,
   ...) and producer_connect. 0, -EINVAL for a malformed key, or -errno. A
   key floorpost does not list gets no connection (batches stay buffered,
   no Ack ever comes). */
int producer_set_curve(producer_t *self, const char *server_public_z85,
                       const char *client_public_z85, const char *client_secret_z85);

/* Connects to endpoint (libzmq keeps reconnecting in the background).
   0 or -errno. */
int producer_connect(producer_t *self, const char *endpoint);

/* Closes the socket (linger PRODUCER_LINGER_MS), deletes the spill file and
   frees *self_p, setting it to NULL; NULL-safe. Does NOT flush and does not
   wait: the open batch and every unacknowledged batch are dropped (call
   producer_flush and producer_wait_acks first). */
void producer_destroy(producer_t **self_p);

/* ACKED: bounds the buffer of unacknowledged batches: at most max_batches
   (>= 1) batches and max_bytes (>= 1) encoded bytes; a single batch larger
   than max_bytes is still taken when the buffer is empty. May be called at
   any time; a smaller bound than what is buffered now only makes the next
   adds wait. 0, or -EINVAL. */
int producer_set_buffer(producer_t *self, size_t max_batches, size_t max_bytes);

/* ACKED: a batch sent resend_ms (>= 1) ago without an Ack is sent again.
   Default PRODUCER_RESEND_MS. Keep it above floorpost's commit latency
   (rounds of tens of ms): a shorter one only costs bandwidth. 0 or -EINVAL. */
int producer_set_resend(producer_t *self, int resend_ms);

/* ACKED: lets batches that do not fit the memory buffer go to a file
   created in the existing directory dir (anonymous: unlinked at once, so it
   never outlives the process and needs no cleanup). Once anything is
   spilled, new batches go behind it, so the order is kept; spilled batches
   come back into memory and are sent as Acks free room. The spill extends
   the buffer across a long floorpost outage; it is NOT a crash journal.
   If a write to it fails (disk full), that batch waits for memory room as
   without a spill (stats.spill_errors counts it). Call once, before the
   first add. 0, -EBUSY if already set, or -errno of creating the file. */
int producer_set_spill(producer_t *self, const char *dir);

/* Copies *rec (strings included) into its source's open batch (see
   producer_set_open_batches; by default there is one open batch, for one
   source at a time). First closes that batch if its epoch differs from
   rec's or its string table could overflow; with no open batch for the
   source and every slot in use, closes the batch opened first; then closes
   the batch if it has become full, and, with producer_set_flush_ms, every
   batch open that long (without waiting for room). Closing a batch = as in
   producer_flush (it may wait for buffer room). Returns 0 when the record
   was taken; -EINVAL for source_id 0 (never valid on the wire); or the
   -errno of a failed close (-EAGAIN after the send timeout, -EINTR,
   -ETERM...), in which case the record was NOT taken and the open batches
   are as before: repeat the call, or give up. */
int producer_add(producer_t *self, uint64_t source_id, uint64_t epoch, const fp_rec_in_t *rec);

/* Closes every open batch, oldest first, and services the socket (as
   producer_poll with 0). ACKED: each batch is encoded into the buffer (or
   the spill) and sent as soon as the socket takes it; when the buffer is
   full this waits for room (reading Acks, resending as due), at most the
   send timeout (then -EAGAIN). PUSH: each batch is sent; that may block up
   to the send timeout at the high-water mark. 0 or -errno; on error the
   batches not yet closed stay open (repeat to retry). */
int producer_flush(producer_t *self);

/* Open batches kept at once, one per source (1..PRODUCER_OPEN_BATCHES_MAX;
   default 1): records of sources that take turns still fill batches
   instead of each change of source closing one. Memory grows with what
   they hold. 0, -EINVAL, or -EBUSY while a batch is open. */
int producer_set_open_batches(producer_t *self, uint32_t n);

/* A batch that has been open flush_ms (>= 0; 0, the default: never) is
   closed by the next producer_add or producer_poll, full or not, so a
   slow source's records do not wait for a full batch. producer_poll wakes
   up for it. 0 or -EINVAL. */
int producer_set_flush_ms(producer_t *self, int flush_ms);

/* ACKED: the answer floorpost gave a buffered batch, as it is released. */
typedef struct {
    uint64_t source_id, epoch;
    uint64_t first_seq, last_seq; /* the batch's seq range */
    uint32_t records;
    int status;                   /* 0: durable (accepted); 1: refused whole */
    const char *reason;           /* status 1: the dead-letter reason; "" otherwise */
} producer_release_t;
typedef void(producer_release_fn)(void *ctx, const producer_release_t *r);

/* ACKED: fn(ctx, r) is called for every buffered batch an Ack releases,
   from inside the producer_* call that read the Ack; r is valid during the
   call. fn must not call into this producer. NULL: none (the default). */
void producer_on_release(producer_t *self, producer_release_fn *fn, void *ctx);

/* Sends buf as one frame (tests, dead-letter resubmission); does not touch
   the open batch. ACKED: a buf that parses as a Batch is buffered and
   resent like any batch until acked; anything else is sent once, without
   waiting, and not kept (its rejecting Ack matches nothing; -EAGAIN if the
   socket cannot take it now). Counts as a batch but adds no records to the
   stats. 0 or -errno (-EAGAIN: buffer full until the send timeout). */
int producer_send_raw(producer_t *self, const void *buf, size_t len);

/* ACKED: reads every Ack that is there, resends what is due (timeout or
   reconnect), reloads spilled batches into free room and sends them, then
   waits up to timeout_ms (0: not at all; < 0: until something arrives) for
   socket activity and services it once more. 0 or -errno. PUSH: 0. */
int producer_poll(producer_t *self, int timeout_ms);

/* ACKED: services the socket (as producer_poll) until every buffered and
   spilled batch is acknowledged or rejected (0: everything sent is
   durable), or timeout_ms (< 0: forever) has passed (-ETIMEDOUT), or
   -errno (-EINTR). Does not flush the open batch. PUSH: 0 at once. */
int producer_wait_acks(producer_t *self, int timeout_ms);

/* How long a call may wait: ACKED, for buffer room (producer_add,
   producer_flush, producer_send_raw); PUSH, at the socket's high-water mark
   (ZMQ_SNDTIMEO). timeout_ms >= 0, or -1 for no limit (the default). A
   timed-out call returns -EAGAIN. 0 or -errno. */
int producer_set_send_timeout(producer_t *self, int timeout_ms);

/* Reads the epoch last stored in the file at path, adds 1, stores that
   (write path.tmp, fsync, rename over path, fsync the directory) and
   returns it in *epoch: every call, so every gateway start, gets a larger
   epoch than any before it. The file holds one decimal number and a
   newline. A missing file (first start, or the file was lost) starts at
   the current Unix time in seconds (at least 1): larger than any epoch a
   counter started at 1 will reach, and safe against a lost file as long as
   the clock is right. A file that is not exactly such a number (garbage,
   empty, > 2^64-2) is an error, -EINVAL, and is left as it is: an
   operator must look (delete it to restart from the clock). 0, -EINVAL,
   or the -errno of a failed read/write. Seq starts again at 1 in the new
   epoch. */
int producer_epoch_from_file(const char *path, uint64_t *epoch);

typedef struct {
    uint64_t batches_sent;     /* batches closed and queued for sending (raw ones
                                  included); resends are not counted here */
    uint64_t records_sent;     /* records in those batches */
    uint64_t acks;             /* Acks received, accepted and rejected alike */
    uint64_t rejected_batches; /* ACKED: buffered batches released by a status 1 Ack:
                                  the batch it names was refused whole and is in
                                  floorpost's dead-letter store (reason in
                                  producer_last_reject; each one: producer_on_release) */
    uint64_t last_acked_seq;   /* acked_seq of the last accepted (status 0) Ack */
    uint64_t acked_batches;    /* buffered batches released by accepted Acks */
    uint64_t resends;          /* frames sent again (timeout or reconnect) */
    uint64_t reconnects;       /* connections made again after a disconnect */
    uint64_t buffered_batches; /* gauge: unacked batches in memory */
    uint64_t buffered_bytes;   /* gauge: their encoded bytes */
    uint64_t spilled_batches;  /* gauge: batches waiting in the spill file */
    uint64_t spill_errors;     /* failed spill writes (the batch waited for memory) */
    uint64_t acked_records;    /* records in the batches of acked_batches */
    uint64_t rejected_records; /* records in the batches of rejected_batches */
    uint64_t dead_letter_records; /* ACKED: records of accepted batches that floorpost
                                  dead-lettered one by one (the Acks' dead_letters:
                                  the worker's record checks, docs/schema.md "Ack");
                                  each is counted by the Ack of the frame that first
                                  carried it, so an Ack lost to a reconnect loses its
                                  count (the dead-letter store has them all) */
} producer_stats_t;

/* Counters since producer_new; valid until producer_destroy. */
const producer_stats_t *producer_stats(const producer_t *self);

/* The reason of the last rejected batch's Ack ("" if none). */
const char *producer_last_reject(const producer_t *self);

#endif
