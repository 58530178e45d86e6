/*  input.h - the input seam: one struct of callbacks per input type.

    An input owns its producer-facing connections (sockets, fds, sessions)
    and the protocol spoken on them. It yields frames - (format, source_id,
    ack token, payload bytes) - and, later, encodes and sends the
    acknowledgement of a frame from a neutral verdict (verdict.h). It knows
    nothing of workers, rounds or barriers: ingest alone keeps the round
    clock, the barriers, back-pressure (the worker pipes' HWMs), routing by
    source_id and the acks held until their round is committed. The model is
    fluent-bit's `struct flb_input_plugin`.

    The life of a frame:
      ingest polls the input's items -> cb_read yields a frame -> ingest
      routes it to worker hash(source_id) % N with [meta: input, format,
      token][payload] -> the worker decodes the format, dedups, checks every
      record (record_check.h) and returns an fp_verdict_t with the token ->
      ingest holds it until verdict.round is committed -> cb_ack.
    A frame with no token (toklen 0) gets no verdict and no acknowledgement
    (fire-and-forget, e.g. ZeroMQ PULL).

    The ack token: opaque bytes the input chose when it yielded the frame
    (at most FP_INPUT_TOKEN_MAX), enough for it to find the producer again
    (the ZeroMQ ROUTER identity; for MQTT the edge node and whatever the
    reply needs). Ingest and the worker carry it and hand it back to cb_ack
    untouched; nobody else reads it. An input must not trust that the
    producer behind a token is still there: a token whose peer is gone is
    acknowledged into the void (the producer resends, dedup makes that
    harmless).

    Thread contract: an input instance lives on the ingest thread: every
    callback is called there, and the instance's sockets are created and
    closed there. Callbacks never block: cb_read and cb_ack use non-blocking
    I/O and return at once.

    Errors: producers' bytes are untrusted. cb_read never asserts on them:
    it yields what it cannot judge (the worker decodes and dead-letters it
    with the precise reason), or refuses what is broken at its own protocol
    level, counts it and dead-letters it itself (fp_dead_letter to env->dl,
    sender slot 0, component "ingest"). System errors are 0 / -errno.
*/
#ifndef FP_INPUT_H
#define FP_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "config.h"
#include "metrics.h"
#include "verdict.h"

/* How a frame's payload is encoded: what the worker decodes it with. */
typedef enum {
    FP_FORMAT_NONE = 0,
    FP_FORMAT_FB_BATCH = 1, /* floorpost.telemetry.Batch (schema/telemetry.fbs) */
    FP_FORMAT_MAX = 1
} fp_format_t;

/* The most bytes an ack token may have (a ZeroMQ routing id has <= 255). */
#define FP_INPUT_TOKEN_MAX 256

/* The most pollable items one input may report. */
#define FP_INPUT_POLL_MAX 8

/* What ingest gives an input at init; valid until cb_destroy. */
typedef struct {
    void *zmq_ctx;
    const fp_config_t *cfg;
    fp_metrics_t *metrics; /* FP_M_FRAMES_IN, FP_M_BYTES_IN: count what you take */
    void *dl;              /* ingest's PUSH to emit: dead letters, sender slot 0 */
} fp_input_env_t;

/* One frame being read. Ingest sets token and payload; cb_read fills the
   rest. */
typedef struct {
    uint8_t *token;     /* in: FP_INPUT_TOKEN_MAX bytes of room */
    size_t toklen;      /* out: bytes of token written; 0 = acknowledge nothing */
    zmq_msg_t *payload; /* in: an initialised empty message; out: the frame's bytes,
                           moved (zmq_msg_move), never copied */
    uint64_t source_id; /* out: routes the frame; 0 = could not be read (the
                           worker of source 0 dead-letters it after decoding) */
    uint8_t format;     /* out: fp_format_t */
    uint8_t flags;      /* out: FP_FRAME_* (ingest sets 0 before cb_read) */
    uint64_t peer;      /* out: who sent it, for the per-peer bound on new sources: a hash
                           of the CURVE key, else of the connection; 0 = unknown */
} fp_input_frame_t;

/* Frame flags: the input's authorization verdict on source_id (the
   worker decides after decoding; security.h "Source bindings"). */
#define FP_FRAME_BOUND 1u       /* the sender's key is bound to a list of sources */
#define FP_FRAME_NOT_ALLOWED 2u /* ... and source_id is not in it: refuse the frame */

typedef struct fp_input_plugin {
    const char *name; /* "zmq": logs and metrics */

    /* Creates an instance from env->cfg: binds, sets socket options and
       security. 0 with *self_p set; 0 with *self_p NULL when the config does
       not enable this input; -errno with err filled on failure (nothing left
       open). */
    int (*cb_init)(const fp_input_env_t *env, void **self_p, char *err, size_t errlen);

    /* Writes the items to poll for input (ZMQ_POLLIN on a socket or an fd)
       into items[0..cap) and returns how many. Called before every poll, so
       the set may change (a reconnect). Item i is `which` = i for cb_read. */
    int (*cb_poll)(void *self, zmq_pollitem_t *items, int cap);

    /* Reads at most one frame from item `which`, without blocking. 1: a
       frame is in *f (the payload moved into f->payload); 0: nothing to
       yield (no message, or one refused and counted; f->payload left empty);
       -errno: the item failed. */
    int (*cb_read)(void *self, int which, fp_input_frame_t *f);

    /* Encodes verdict v as this input's acknowledgement and sends it to the
       producer named by token[0..toklen) (as cb_read wrote it), without
       blocking. 0: handed to the transport; -EAGAIN: the producer is there
       but its queue is full: nothing was sent, ingest keeps the verdict
       and calls again later; another -errno: not sent and never will be
       (the peer is gone: the producer resends, dedup makes that
       harmless). */
    int (*cb_ack)(void *self, const fp_verdict_t *v, const void *token, size_t toklen);

    /* Drain: stop taking new frames where no acknowledgement can follow
       (e.g. close a fire-and-forget socket); keep what cb_ack needs. May be
       NULL. */
    void (*cb_drain)(void *self);

    /* Closes everything; NULL-safe; sets *self_p to NULL. */
    void (*cb_destroy)(void **self_p);
} fp_input_plugin_t;

/* The ZeroMQ input: ROUTER [service] ingest_router (acked; the token is the
   routing id, the Ack a FlatBuffers floorpost.telemetry.Ack) and PULL
   [service] ingest_pull (fire-and-forget), both FlatBuffers batches. */
extern const fp_input_plugin_t fp_input_zmq;

#endif
