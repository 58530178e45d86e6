/*  stage.h - what the pipeline's stage threads share: their start
    arguments, inproc endpoint names and internal message frames (the
    dead-letter helpers: deadletter.h). Internal to pipeline.c, ingest.c, worker.c, shard.c
    and emit.c.
*/
#ifndef FP_STAGE_H
#define FP_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "config.h"
#include "deadletter.h"
#include "input.h"
#include "metrics.h"
#include "record.h"
#include "verdict.h"

/* Inproc endpoints. Workers are bound by index w, shard pipes by (s, w). */
#define FP_EP_CTL "inproc://fp-ctl"       /* main -> ingest: "DRAIN" */
#define FP_EP_READY "inproc://fp-ready"   /* stages -> main: start-up result */
#define FP_EP_ACKS "inproc://fp-acks"     /* workers -> ingest: fp_verdict_msg_t */
#define FP_EP_EMIT "inproc://fp-emit"     /* shards -> emit: fp_emit_hdr_t messages */
#define FP_EP_DEAD "inproc://fp-dead"     /* ingest, workers -> emit: fp_emit_hdr_t messages */
#define FP_EP_NOTICE "inproc://fp-notice" /* emit -> outbox readers: fp_notice_t (PUB/SUB) */
#define FP_EP_READERS "inproc://fp-readers" /* outbox readers -> emit: fp_reader_pos_t (reader.h) */
#define FP_EP_WORKER "inproc://fp-worker-%d"
#define FP_EP_SHARD "inproc://fp-shard-%d-%d"

/* Ingest -> worker: a telemetry frame travels as two frames: fp_frame_meta_t
   (which input, format, ack token) and the payload, moved zero-copy from
   the input's socket. */
#define FP_MSG_FRAME 3u
#define FP_MSG_DL_DRAIN 4u   /* worker -> ingest on FP_EP_ACKS: this worker is done */
#define FP_MSG_COMMITTED 5u  /* emit -> ingest on FP_EP_ACKS: fp_committed_t */
#define FP_MSG_NOTICE 6u     /* emit -> outbox readers on FP_EP_NOTICE: fp_notice_t */
#define FP_MSG_READER_POS 7u /* outbox reader -> emit on FP_EP_READERS: fp_reader_pos_t */
#define FP_MSG_READER_DL 9u  /* outbox reader -> emit on FP_EP_READERS: fp_reader_dl_t + 4 */

/* Emit -> ingest: every round <= round is durable (or, without a state
   directory, complete): the acks held for those rounds may go out. */
typedef struct {
    uint32_t type; /* FP_MSG_COMMITTED */
    uint32_t pad;
    uint64_t round;
} fp_committed_t;

/* Emit -> every outbox reader (the replay server, later the sinks), after
   each round is committed and published: "the outbox is committed up to
   round R, global_seq G". Emit binds a PUB on FP_EP_NOTICE and each reader
   connects a SUB (subscribed to everything) before it reports ready. A
   reader is woken by it instead of polling the store. The values are
   absolute, so a reader that missed a notice (a PUB drops for a reader
   whose queue is full, and a SUB that connects late misses the first) is
   right again at the next one, at most one round (commit_interval_ms)
   later; with a state directory a reader can also read the store's last
   round itself. FP_NOTICE_DONE: emit has exited (after the drain round, or
   on a failure): readers finish and exit. Without a state directory the
   notice still comes every round (the outbox is then empty). */
typedef struct {
    uint32_t type;  /* FP_MSG_NOTICE */
    uint32_t flags; /* FP_NOTICE_DONE */
    uint64_t round;      /* every round <= round is committed */
    uint64_t global_seq; /* every event <= global_seq is committed (0: none yet) */
} fp_notice_t;
#define FP_NOTICE_DONE 1u

/* Reads every notice waiting on an outbox reader's SUB: *global_seq is
   raised to the newest committed global_seq announced, *done set on
   FP_NOTICE_DONE. Never blocks. */
void fp_notice_drain(void *sub, uint64_t *global_seq, bool *done);

/* Everything a stage sends to emit starts with this frame. Emit files each
   message under the round its sender is in: a stage's messages after its
   MARK of round r-1 and before its MARK of round r belong to round r. A
   round is complete (and is committed as one LMDB transaction) when every
   stage's MARK of it has arrived: ingest (1), workers (N), shards (M).
     FP_EMIT_EVENT   [hdr][topic][Checkpoint]            shard: a checkpoint
     FP_EMIT_KEY     [hdr][key][state, empty = released] shard: dirty agg key
     FP_EMIT_SOURCE  [hdr][u64 source_id][state]         worker: dirty dedup source
     FP_EMIT_DEAD    [hdr][topic][json][payload]          any: a dead letter
     FP_EMIT_MARK    [hdr]                               any: passed barrier hdr.round */
enum { FP_EMIT_EVENT = 1, FP_EMIT_KEY, FP_EMIT_SOURCE, FP_EMIT_DEAD, FP_EMIT_MARK,
       FP_EMIT_BUNDLE, FP_EMIT_COUNTER };
/*   FP_EMIT_COUNTER [hdr][key][state]                    worker: a changed cumulative
     counter (counter.h), committed like its dedup source; a worker's
     counter_reset events are FP_EMIT_EVENTs of its round. */
/*   FP_EMIT_BUNDLE  [hdr][entries]  shard: many EVENT/KEY items in one
     message (one inproc hand-off instead of thousands in a completion wave
     or a round's export). Each entry: u32 type, u32 nparts, then per part
     u32 length and the bytes; emit files them in order, as if sent alone. */

typedef struct {
    uint32_t type;  /* FP_EMIT_* */
    uint32_t from;  /* sender slot: ingest 0, worker w 1 + w, shard s 1 + N + s */
    uint32_t flags; /* MARK: the barrier's flags */
    uint32_t pad;
    uint64_t round; /* MARK: the round passed */
    int64_t wall_ns;/* MARK: when ingest injected the barrier */
} fp_emit_hdr_t;

/* Sends a MARK of barrier b from sender slot `from`. */
void fp_emit_mark(void *sock, uint32_t from, const fp_barrier_t *b);

/* Ingest -> worker, first part of FP_MSG_FRAME: which input the frame came
   from, how it is encoded and its ack token (input.h), sent with only
   offsetof(fp_frame_meta_t, token) + toklen bytes. */
typedef struct {
    uint32_t type;    /* FP_MSG_FRAME */
    uint8_t input;    /* index of the input in ingest's table */
    uint8_t format;   /* fp_format_t (input.h) */
    uint16_t toklen;  /* 0: no acknowledgement wanted (fire-and-forget) */
    uint8_t flags;    /* FP_FRAME_* (input.h) */
    uint8_t pad[7];
    uint64_t peer;    /* fp_input_frame_t.peer */
    uint8_t token[FP_INPUT_TOKEN_MAX]; /* opaque, the input's; carried back untouched */
} fp_frame_meta_t;

/* Worker -> ingest on FP_EP_ACKS: the verdict on one frame whose meta had a
   token, one message of offsetof(fp_verdict_msg_t, token) + toklen bytes.
   Ingest holds it until verdict.round is committed, then calls the input's
   cb_ack with the verdict and the token. (Type 8: main has 6 and 7.) */
#define FP_MSG_VERDICT 8u
typedef struct {
    uint32_t type;    /* FP_MSG_VERDICT */
    uint8_t input;    /* as in the frame's meta */
    uint8_t pad;
    uint16_t toklen;  /* as in the frame's meta, >= 1 */
    fp_verdict_t verdict;
    uint8_t token[FP_INPUT_TOKEN_MAX];
} fp_verdict_msg_t;

struct fp_store;

typedef struct {
    void *zmq_ctx;
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    struct fp_store *store; /* NULL: durability off; read at start, written by emit only */
    uint64_t start_round;   /* first round of this run (last committed + 1) */
    int index;              /* worker or shard index */
    void *ready;            /* PUSH to FP_EP_READY, made by pipeline_start before the thread
                               (pthread_create is the barrier libzmq asks for a socket
                               that changes threads); fp_stage_ready sends on it and closes
                               it, so a stage that cannot make sockets can still say why */
} fp_stage_args_t;

void *fp_ingest_main(void *args);
void *fp_worker_main(void *args);
void *fp_shard_main(void *args);
void *fp_emit_main(void *args);
/* [durability] reader_max_lag_events as a reload (SIGHUP) set it: emit reads
   it once a second, instead of its config's, from then on. Process-wide (one
   emit per process); emit's start clears it. */
void fp_emit_set_reader_max_lag(uint64_t events);
void *fp_replay_main(void *args);

/* Reports a stage's start-up result to pipeline_start (rc 0 = bound and
   running; otherwise err says what failed) on args->ready, and closes it. */
void fp_stage_ready(fp_stage_args_t *args, const char *who, int rc, const char *err);

/* Opens a socket of `type` and binds or connects it, with the given HWMs
   (-1 = leave). Returns NULL with err filled. */
void *fp_stage_socket(void *zmq_ctx, int type, const char *endpoint, int bind, int sndhwm,
                      int rcvhwm, char *err, size_t errlen);

/* Opens a server socket of `type` facing the network (a PUB feed, the
   replay ROUTER) with floorpost's options: SNDHWM cfg->publish_hwm, LINGER
   2 s, MAXMSGSIZE 1024 (a PUB reads only subscriptions, the replay ROUTER
   only short requests), heartbeats, handshake timeout and, when
   configured, CURVE + ZAP (security.h); then binds ep. NULL with err
   filled. Call on the thread that will own the socket. */
void *fp_stage_server_socket(void *zmq_ctx, int type, const fp_config_t *cfg, const char *ep,
                             char *err, size_t errlen);

/* fp_now_ns, fp_wall_ns: clock.h. */

#endif
