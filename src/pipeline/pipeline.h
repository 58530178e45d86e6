/*  pipeline.h - starts and drains floorpost's stage threads.

      producers --tcp--> ingest --inproc--> worker x N --inproc--> shard x M --inproc--> emit --> PUB
                          ^  |  (ROUTER+PULL; acks back from workers)                      \--> dead-letter PUB

    See docs/architecture.md for every socket, its owner and what happens at
    each queue limit.

    Thread contract: pipeline_start/pipeline_drain/pipeline_destroy are called
    from one controlling thread (main). Every stage thread creates, owns and
    closes its own sockets and state; stages talk only through ZeroMQ inproc
    messages.
*/
#ifndef FP_PIPELINE_H
#define FP_PIPELINE_H

#include <stdint.h>

#include "config.h"
#include "metrics.h"

typedef struct pipeline pipeline_t;

/* Starts every stage on zmq_ctx and waits until all have bound their
   endpoints. cfg (resolved) and metrics must outlive the pipeline. Returns
   NULL, with the reason written to err, if a stage failed to start (a bind
   error, say); the process must then exit (stages that did start are left
   waiting and zmq_ctx_term would block on their sockets). */
struct fp_store;

/* store: the opened state (NULL = durability off); every stage restores its
   own part from it before reporting ready, and emit commits each round to
   it. start_round: the first round number of this run (last committed + 1). */
/* An upper bound on the ZeroMQ sockets of the main context for cfg (its
   workers and shards resolved): every stage's sockets, the worker x shard
   pipes, the start-up reports, the monitors, the sinks' outbox readers, the
   security handler, the printer and the demo. For ZMQ_MAX_SOCKETS (set
   before the first socket is made; libzmq's default of 1,023 is too few
   from about 22 workers and 22 shards). Each is also a file descriptor. */
int pipeline_zmq_sockets(const fp_config_t *cfg);

pipeline_t *pipeline_start(void *zmq_ctx, const fp_config_t *cfg, fp_metrics_t *metrics,
                           struct fp_store *store, uint64_t start_round, char *err,
                           size_t errlen);

/* Stops intake, flushes every pending checkpoint, publishes it, and joins
   the threads. Returns 0 when everything drained within timeout_ms, or
   -ETIMEDOUT (threads are then left running; the caller should exit). */
int pipeline_drain(pipeline_t *self, int64_t timeout_ms);

/* Frees *self_p (after pipeline_drain returned 0); NULL-safe. */
void pipeline_destroy(pipeline_t **self_p);

#endif
