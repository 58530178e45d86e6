/*  agg.h - aggregation of deduplicated records into ERP checkpoints.

    One agg_t is one aggregate shard's state; it belongs to one shard thread.
    Shards are chosen by (plant, order, operation), so an operation's
    completion, consumption and scrap keys all live in the same agg_t and a
    completion never waits for another shard. Not thread-safe, no locks.

    Keys (all strings; the shard interns them, refcounted, so memory follows
    the open keys):
      completion   (plant, order, operation)              yield, scrap (parts)
      consumption  (plant, order, operation, material, lot, unit)
                                                          quantity (thousandths)
      scrap        (plant, order, operation, reason)      parts
    An operation is identified by (plant, order, operation); its line (and
    station) are attributes: the line of the first record seen for it, used
    in every checkpoint of the operation.

    Semantics:
      PartCount      completion.yield += q
      Scrap          scrap[reason].parts += q and completion.scrap += q
      MaterialConsumed consumption[...].quantity += q
      OperationStarted marks the operation open; counted in the next
                     completion's record_count and lineage.
      OperationCompleted emits, at once, the final completion (final = true)
                     and flushes the operation's pending consumption and
                     scrap; the operation is then closed.
    Records for a closed operation accumulate as corrections and are emitted
    with late = true at the next agg_flush (any mode). Partial checkpoints of
    open operations are emitted by agg_flush(AGG_FLUSH_ALL) (posting interval,
    drain). A key with nothing pending emits nothing; a partial completion is
    emitted only if its yield or scrap delta is non-zero (an OperationStarted
    alone waits for the next completion).
    Each emitted checkpoint is a delta; the key's pending sums then restart
    at zero. Invariant: after a full flush, for every key the sum of emitted
    deltas equals the sum of the records added.
    A record whose quantity would overflow a pending sum (int64) is refused
    whole (nothing of it is added) and reported through reject.
    Closed operations and their keys are released closed_key_grace_ns after
    closing (checked in agg_flush), when nothing is pending.

    event_id = "<instance>-<hex 32: XXH3-128 of (kind, key strings,
    checkpoint_no, source, epoch and seq of the first record summed)>":
    deterministic for the same checkpoint of the same key, and distinct for
    distinct checkpoints, even after a key was released and reopened.
*/
#ifndef FP_AGG_H
#define FP_AGG_H

#include <stdint.h>

#include "codec.h"
#include "record.h"

typedef struct agg agg_t;

typedef struct {
    const char *instance;        /* copied */
    int64_t closed_key_grace_ns; /* release closed operations after this */
    uint64_t max_open_keys;      /* more keys than this: records refused "too_many_keys" */
} agg_config_t;

/* A checkpoint ready to publish. ck's strings are valid only during the call. */
typedef void(agg_emit_fn)(void *ctx, const fp_checkpoint_t *ck);

/* A record that could not be aggregated; reason is "overflow" or
   "too_many_keys". The batch and record are valid only during the call. */
typedef void(agg_reject_fn)(void *ctx, const fp_batch_hdr_t *batch, const fp_record_t *rec,
                            const char *reason);

/* Returns NULL on out of memory. The callbacks are called from agg_add and
   agg_flush, on the caller's thread. Free with agg_destroy. */
agg_t *agg_new(const agg_config_t *cfg, agg_emit_fn *emit, agg_reject_fn *reject, void *ctx);

/* Frees *self_p, every key and interned string; NULL-safe, nulls the pointer. */
void agg_destroy(agg_t **self_p);

/* Adds every record of batch (deduplicated; kinds and string indices already
   validated by the worker). Emits final completions at once. */
void agg_add(agg_t *self, const fp_batch_hdr_t *batch);

#define AGG_FLUSH_LATE 1 /* emit pending late corrections only (every round) */
#define AGG_FLUSH_ALL 2  /* emit every pending delta (posting interval, drain) */

/* Emits pending checkpoints per mode, then releases closed operations whose
   grace has passed (now_ns: CLOCK_MONOTONIC-like, same clock every call). */
void agg_flush(agg_t *self, int mode, int64_t now_ns);

typedef struct {
    uint64_t keys;            /* keys held (all kinds) */
    uint64_t open_operations; /* operations not yet completed */
    uint64_t closed_operations;
    uint64_t records;         /* records added */
    uint64_t rejected;        /* records refused (overflow, too_many_keys) */
    uint64_t events;          /* checkpoints emitted */
    uint64_t late_events;     /* of which late corrections */
    uint64_t released;        /* operations released after grace */
    uint64_t strings;         /* interned strings */
} agg_stats_t;

const agg_stats_t *agg_stats(const agg_t *self);

/* What is summed but not yet emitted, per checkpoint kind (index FP_CK_* - 1:
   consumption, completion, scrap). Running totals, O(1) to read. quantity:
   the pending sums (consumption: thousandths of unit, every unit added
   together; completion: yield parts; scrap: parts), wrapping in two's
   complement beyond int64; records: pending record counts per key kind. */
typedef struct {
    int64_t quantity[3];
    uint64_t records[3];
} agg_pending_t;

const agg_pending_t *agg_pending(const agg_t *self);

#endif
