/*  verdict.h - what the worker decided about one input frame, in no
    input's protocol.

    The worker fills an fp_verdict_t for every frame that wants an
    acknowledgement (its meta has an ack token, input.h); ingest holds it
    until its round is committed and then hands it to the frame's input,
    which encodes the acknowledgement in its own protocol (a FlatBuffers
    Ack on ZeroMQ; a Sparkplug reply next). The reason travels as an enum
    (fp_dl_reason_t, domain.h) and becomes a string only at that edge
    (fp_dl_reason_name).

    It carries what the ZeroMQ Ack carries (schema/telemetry.fbs): the
    verdict and the identity of the batch it answers, so that a producer
    with several batches in flight knows which one was refused; plus the
    round, which only ingest reads.

    Thread contract: plain data.
*/
#ifndef FP_VERDICT_H
#define FP_VERDICT_H

#include <stdint.h>

#include "domain.h"

typedef enum { FP_VERDICT_ACCEPTED = 0, FP_VERDICT_REJECTED = 1 } fp_verdict_status_t;

/* One frame's verdict. Sequence numbers are of (source_id, epoch). */
typedef struct {
    uint64_t source_id;      /* the batch's; on a rejected frame the peek's (0: unreadable) */
    uint64_t epoch;          /* the batch's; 0 when the frame did not decode */
    uint64_t acked_seq;      /* every seq <= acked_seq of this epoch is taken (durable once
                                round is committed); 0 when rejected */
    uint64_t batch_first_seq, batch_last_seq; /* lowest and highest seq in the frame, also
                                when rejected; 0 when it did not decode */
    uint64_t round;          /* the round the frame belongs to: acknowledge after its commit */
    uint32_t batch_records;  /* records in the frame; 0 when it did not decode */
    uint32_t dead_letters;   /* ACCEPTED: records of the frame the worker dead-lettered
                                (its checks only, worker.c); 0 when REJECTED */
    uint8_t status;          /* fp_verdict_status_t */
    uint8_t reason;          /* fp_dl_reason_t when REJECTED (nothing of the frame was
                                used); 0 and meaningless when ACCEPTED */
    uint8_t pad[6];
} fp_verdict_t;

_Static_assert(FP_DL_COUNT <= 256, "fp_verdict_t.reason is one byte");

#endif
