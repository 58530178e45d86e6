/*  truth.h - the ground truth of a crash test: what floorpost must have
    published, once drained, for a stream of unique records (crashgen).

    An independent model of agg.h's contract, fed every unique record in the
    order the producer made them:
      - sums per key: completion (yield, scrap), consumption (quantity),
        scrap (parts); a Scrap record is summed into its completion and its
        scrap key;
      - records: the record_count the published checkpoints add up to (a
        Scrap record counts twice, as in record_count);
      - waiting: the records that are pending in a completion of an open
        operation whose yield and scrap deltas are 0/0 - an OperationStarted
        with nothing after it but consumption. Such a partial completion is
        never emitted, not on a posting interval and not on drain
        (docs/architecture.md, "When checkpoints are emitted"); floorpost
        keeps those records in its committed state for the operation's next
        completion (floorpost_pending_records{kind="completion"}).
    The model is exact for what crashgen sends: PartCount and Scrap
    quantities > 0 (a pending completion sum is then 0/0 exactly when no
    PartCount or Scrap is pending, whenever the posting interval falls),
    records of an operation applied in the order they were made, and no
    closed operation released before the end (closed_key_grace_ms longer
    than the run). truth_add refuses a record outside it.

    Not thread-safe. */
#ifndef FP_TRUTH_H
#define FP_TRUTH_H

#include <stdint.h>
#include <stdio.h>

#include "producer.h"

typedef struct truth truth_t;

/* An empty truth; NULL on out of memory. Free with truth_destroy. */
truth_t *truth_new(void);

/* Frees *self_p; NULL-safe, nulls the pointer. */
void truth_destroy(truth_t **self_p);

/* Counts one unique record (strings copied as needed). Returns 0; -1 for a
   PartCount or Scrap with quantity <= 0 or an unknown kind (outside the
   model: nothing counted); -2 on out of memory. */
int truth_add(truth_t *self, const fp_rec_in_t *r);

/* The record_count the published checkpoints sum to, once drained. */
uint64_t truth_records(const truth_t *self);

/* The records waiting in 0/0 partial completions (never published). */
uint64_t truth_waiting(const truth_t *self);

/* Writes the truth as tab-separated lines (any order):
     C plant order operation yield scrap
     M plant order operation material lot unit quantity
     S plant order operation reason parts
     R records     (truth_records)
     W records     (truth_waiting)
   Returns 0, or -1 on a write error. */
int truth_write(const truth_t *self, FILE *f);

#endif
