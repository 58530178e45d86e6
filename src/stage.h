/*  stage.h - what the pipeline's stage threads share: their start
    arguments, inproc endpoint names, internal message frames and the
    dead-letter helper. Internal to pipeline.c, ingest.c, worker.c, shard.c
    and emit.c.
*/
#ifndef FP_STAGE_H
#define FP_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "record.h"

/* Inproc endpoints. Workers are bound by index w, shard pipes by (s, w). */
#define FP_EP_CTL "inproc://fp-ctl"       /* main -> ingest: "DRAIN" */
#define FP_EP_READY "inproc://fp-ready"   /* stages -> main: start-up result */
#define FP_EP_ACKS "inproc://fp-acks"     /* workers -> ingest: [identity][Ack] */
#define FP_EP_EMIT "inproc://fp-emit"     /* shards -> emit: [topic][Checkpoint] or barrier */
#define FP_EP_DEAD "inproc://fp-dead"     /* everyone -> emit: [topic][json][bytes] or DRAIN */
#define FP_EP_WORKER "inproc://fp-worker-%d"
#define FP_EP_SHARD "inproc://fp-shard-%d-%d"

/* Ingest -> worker: a telemetry frame travels as two frames: fp_frame_meta_t
   (who sent it) and the payload, moved zero-copy from the producer's socket. */
#define FP_MSG_FRAME 3u
#define FP_MSG_DL_DRAIN 4u /* the last message a stage sends on FP_EP_DEAD */

typedef struct {
    uint32_t type;   /* FP_MSG_FRAME */
    uint32_t idlen;  /* 0: fire-and-forget (PULL); else ROUTER identity length */
    uint8_t id[256]; /* ROUTER identity of the producer connection */
} fp_frame_meta_t;

typedef struct {
    void *zmq_ctx;
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    int index; /* worker or shard index */
} fp_stage_args_t;

void *fp_ingest_main(void *args);
void *fp_worker_main(void *args);
void *fp_shard_main(void *args);
void *fp_emit_main(void *args);

/* Reports a stage's start-up result to pipeline_start (rc 0 = bound and
   running; otherwise err says what failed). */
void fp_stage_ready(void *zmq_ctx, const char *who, int rc, const char *err);

/* Opens a socket of `type` and binds or connects it, with the given HWMs
   (-1 = leave). Returns NULL with err filled. */
void *fp_stage_socket(void *zmq_ctx, int type, const char *endpoint, int bind, int sndhwm,
                      int rcvhwm, char *err, size_t errlen);

/* Publishes a dead letter through the emit thread: topic
   "deadletter/<reason>", a JSON detail object and the offending bytes. The
   JSON is {"reason":..,"component":..,<fields>}; fields is a JSON fragment
   without braces (may be "" or NULL). Blocks when the emit queue is full. */
void fp_dead_letter(void *dl_sock, const char *reason, const char *component,
                    const char *fields, const void *bytes, size_t len);

/* Sends the final FP_MSG_DL_DRAIN on a stage's dead-letter socket. */
void fp_dead_letter_drain(void *dl_sock);

/* CLOCK_MONOTONIC and CLOCK_REALTIME in ns. */
int64_t fp_now_ns(void);
int64_t fp_wall_ns(void);

#endif
