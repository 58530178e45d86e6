/*  producer.h - batches telemetry records and sends them to a floorpost
    ingest endpoint as FlatBuffers Batch frames (schema/telemetry.fbs).

    Used by `floorpost send`, the demo plant, tests and benchmarks. A batch
    holds records of one (source_id, epoch) only, at most batch_records of
    them, with its own string table (strtab).

    Modes:
      PRODUCER_ACKED  a DEALER connected to floorpost's ROUTER endpoint. Each
                      sent batch is one frame; floorpost answers each with one
                      Ack frame (identifier FPA1). Acks are drained without
                      blocking after every send and in producer_flush, and
                      waited for in producer_wait_acks.
      PRODUCER_PUSH   a PUSH connected to floorpost's PULL endpoint; fire and
                      forget. ZMQ_IMMEDIATE is set, so a send waits for a
                      connected peer instead of queueing to nobody.

    Sends block at the socket's high-water mark (1000 frames): that is the
    back-pressure a producer must feel. producer_set_send_timeout bounds the
    wait (threads that must stay stoppable use it).

    This producer does not keep unacked batches for resending; the Ack stats
    tell the caller what floorpost accepted.

    Thread contract: a producer and its socket belong to the thread that
    created it; create, use and destroy it on that one thread.
*/
#ifndef FP_PRODUCER_H
#define FP_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* One record as the caller gives it: strings instead of table indices. */
typedef struct {
    uint64_t seq;     /* >= 1, strictly increasing within (source_id, epoch) */
    int64_t time_ns;  /* event time, ns since the Unix epoch, UTC */
    int64_t quantity; /* parts, or thousandths of unit for FP_KIND_MATERIAL */
    uint8_t kind;     /* FP_KIND_* (not checked here: floorpost dead-letters bad ones) */
    const char *str[FP_STR_FIELDS]; /* FP_STR_* order; NULL or "" = absent */
} fp_rec_in_t;

#define PRODUCER_ACKED 1 /* DEALER connected to floorpost's ROUTER endpoint; reads Acks */
#define PRODUCER_PUSH 2  /* PUSH connected to floorpost's PULL endpoint; fire and forget */

#define PRODUCER_BATCH_MAX 65536u /* largest batch_records accepted */
#define PRODUCER_SNDHWM 1000      /* frames queued before sends block */
#define PRODUCER_LINGER_MS 2000   /* what producer_destroy waits for queued frames */

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
   key floorpost does not list gets no connection (sends queue up to the
   HWM, no Ack ever comes). */
int producer_set_curve(producer_t *self, const char *server_public_z85,
                       const char *client_public_z85, const char *client_secret_z85);

/* Connects to endpoint (libzmq keeps reconnecting in the background).
   0 or -errno. */
int producer_connect(producer_t *self, const char *endpoint);

/* Closes the socket (linger PRODUCER_LINGER_MS) and frees *self_p, setting it
   to NULL; NULL-safe. Does NOT flush: records still in the open batch are
   dropped (call producer_flush first). */
void producer_destroy(producer_t **self_p);

/* Copies *rec (strings included) into the open batch. First sends the open
   batch if rec's (source_id, epoch) differs from it or its string table
   could overflow; then sends it if it has become full. May block at the HWM.
   Returns 0 when the record was taken; -EINVAL for source_id 0 (never valid
   on the wire); or the -errno of a failed send (-EAGAIN after a send
   timeout, -EINTR, -ETERM...), in which case the record was NOT taken and
   the open batch is as before: repeat the call, or give up. */
int producer_add(producer_t *self, uint64_t source_id, uint64_t epoch, const fp_rec_in_t *rec);

/* Sends the open batch, if any, and drains pending Acks. 0 or -errno; on
   error the batch stays open (repeat to retry). */
int producer_flush(producer_t *self);

/* Sends buf as one frame, as is (tests, dead-letter resubmission); does not
   touch the open batch. Counts as a sent batch (so an Ack is expected in
   ACKED mode) but adds no records to the stats. 0 or -errno. */
int producer_send_raw(producer_t *self, const void *buf, size_t len);

/* ACKED: waits until every sent batch has had its Ack (accepted or rejected)
   or timeout_ms (< 0: forever) has passed: 0, -ETIMEDOUT, or -errno (-EINTR).
   PUSH: returns 0 at once. Does not flush the open batch. */
int producer_wait_acks(producer_t *self, int timeout_ms);

/* Bounds how long a send may block at the HWM (ZMQ_SNDTIMEO): timeout_ms
   >= 0, or -1 for no limit (the default). A timed-out send returns -EAGAIN.
   0 or -errno. */
int producer_set_send_timeout(producer_t *self, int timeout_ms);

typedef struct {
    uint64_t batches_sent;     /* frames sent, producer_send_raw included */
    uint64_t records_sent;     /* records in sent batches */
    uint64_t acks;             /* Acks received, accepted and rejected alike */
    uint64_t rejected_batches; /* Acks with status 1 (reason in last_reject) */
    uint64_t last_acked_seq;   /* acked_seq of the last accepted (status 0) Ack */
} producer_stats_t;

/* Counters since producer_new; valid until producer_destroy. */
const producer_stats_t *producer_stats(const producer_t *self);

/* The reason of the last rejected batch's Ack ("" if none). */
const char *producer_last_reject(const producer_t *self);

#endif
