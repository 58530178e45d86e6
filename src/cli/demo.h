/*  demo.h - the built-in demo plant that `floorpost run` starts without a
    config: a plantgen plant sent by an ACKED producer to floorpost's own
    ROUTER endpoint, paced to a record rate.

    The plant: 1 plant ("1000") of `lines` lines, 3 stations each, 2 open
    orders per line of 4 operations, 3 materials x 2 lots per operation, 4
    scrap reasons; records_per_operation is derived from the rate so that an
    operation completes about every 3 s per order (at any rate). Sources
    1..lines, epoch = the start time in seconds (grows on every restart, as a
    real producer's must). Every DEMO_TICK_MS the thread sends the records
    due (rate * elapsed), stamped with CLOCK_REALTIME now, then flushes.

    Thread contract: demo_start and demo_stop are called by one (the main)
    thread. The demo thread creates, uses and closes its own producer socket
    in the zmq_ctx it is given; the context must outlive demo_stop.
*/
#ifndef FP_DEMO_H
#define FP_DEMO_H

#include <stdint.h>

#include "security.h"

#define DEMO_TICK_MS 50
#define DEMO_LINES_MAX 1000

typedef struct demo demo_t;

/* Starts the demo thread and waits until its producer is connected to
   endpoint (floorpost's ROUTER). rate: records/s (>= 1); lines: 1..DEMO_LINES_MAX.
   NULL on a bad argument or if the thread or its socket could not be made. */
demo_t *demo_start(void *zmq_ctx, const char *endpoint, uint32_t rate, uint32_t lines);

/* demo_start for a CURVE endpoint: server_z85 is the server's public key
   and kp the producer's key pair (both copied); both NULL = plain. */
demo_t *demo_start_curve(void *zmq_ctx, const char *endpoint, uint32_t rate, uint32_t lines,
                         const char *server_z85, const fp_curve_keypair_t *kp);

/* Stops and joins the thread (which flushes its open batch and closes its
   socket, lingering at most 2 s), frees *self_p and sets it to NULL.
   NULL-safe. */
void demo_stop(demo_t **self_p);

/* Records the demo has handed to its producer so far (any thread; relaxed). */
uint64_t demo_records(const demo_t *self);

#endif
