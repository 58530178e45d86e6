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

    Persistence (commit rounds, restart). Every key whose persistent state
    changes (records added, emitted, closed, created) is marked for export;
    agg_export_dirty hands the marked keys, and the keys released since the
    last call, to the caller and clears the marks. agg_import rebuilds the
    keys at start-up. Marking starts with the first agg_export_dirty or
    agg_import call (so a shard that never exports pays nothing and keeps
    nothing); the first agg_export_dirty without a previous agg_import
    exports every key.
    Restart protocol: export right after the round's agg_flush; at start-up,
    agg_import every stored pair, then call agg_flush(AGG_FLUSH_LATE, now)
    once before any agg_add. From then on the agg_t emits exactly the
    checkpoints the exporting one would have (same kinds, strings, sums,
    record counts, lineage, checkpoint_no, late, final, event_id), given the
    same records and flushes; only the order of checkpoints within one
    agg_add or agg_flush call may differ.

    Clock: an operation's closed_at is the now_ns of the agg_flush before
    its close, and it is stored as such. So that grace survives a restart,
    the now_ns passed to agg_flush must be CLOCK_REALTIME (ns since the Unix
    epoch; best the barrier's wall_ns, the same in every shard).
    A wall clock stepped backwards only delays releases; stepped forwards, a
    release may come early: a later record then reopens the operation
    (checkpoint_no from 1, late = false) - sums stay exact.

    Key bytes, version 1 (varint = unsigned LEB128, see varint.h):
      u8 version = 1, u8 kind (FP_CK_*), then the key strings, each as
      varint length + bytes (no NUL): completion: plant, order, operation;
      consumption: plant, order, operation, material, lot, unit; scrap:
      plant, order, operation, reason. An absent string is "".
      Stable across restarts, builds and shard counts (never symbol ids).
    State bytes, version 1 (zigzag = signed as varint):
      u8      version = 1
      u8      flags: 1 closed (completion only), 2 late, 4 lineage truncated
      varint  checkpoint_no (of the last emitted checkpoint; 0 = none)
      varint  record_count (pending)
      record_count > 0:
        zigzag sum0 (yield | quantity | parts); completion only: zigzag sum1 (scrap)
        zigzag first_time_ns, varint last_time_ns - first_time_ns
        u8 n (1..4), n x {varint source_id, epoch, first_seq, last_seq - first_seq}
      completion only:
        varint length + line bytes, varint length + station bytes
        closed: zigzag closed_at (agg_flush clock, see above),
                varint close order (keeps the release order of closed operations)
    Nothing else: the key hash and event_id hash are recomputed. Late and
    truncated require record_count > 0; late on a completion requires closed.
*/
#ifndef FP_AGG_H
#define FP_AGG_H

#include <stddef.h>
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
   grace has passed (now_ns: the same clock every call; CLOCK_REALTIME when
   the state is persisted, see "Clock" above). */
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

/* One exported key. state == NULL (slen 0): the key was released, delete it.
   key and state are valid only during the call; fn must not call into the
   agg_t. */
typedef void(agg_export_fn)(void *ctx, const void *key, size_t klen, const void *state,
                            size_t slen);

/* Hands fn every key released since the last call (state NULL) and then
   every key marked since the last call (in no particular order; the
   deletions first, so a key released and reopened in one round ends up
   stored), and clears the marks. O(changed keys). Returns 0, or -1 when out
   of memory for its buffers: then nothing was handed over or cleared. */
int agg_export_dirty(agg_t *self, agg_export_fn *fn, void *ctx);

/* Hands fn every key held (never a deletion); marks are not touched. For
   rewriting the whole state, for example after a failed commit. Returns 0,
   or -1 out of memory (fn may have been called for some keys). */
int agg_export_all(agg_t *self, agg_export_fn *fn, void *ctx);

/* Start-up restore of one key from the bytes agg_export_* produced, in any
   order (a consumption or scrap key before its operation creates the
   operation, filled when the operation's own pair comes). Our own file but
   possibly damaged: checked whole, never over-read, never asserted on; keys
   may exceed max_open_keys. Returns 0; -1 when key or state is malformed or
   the key was imported already (nothing changed); -2 out of memory. */
int agg_import(agg_t *self, const void *key, size_t klen, const void *state, size_t slen);

/* The shard (0..nshards-1) that owns a serialized key: fp_route_shard
   (route.h) of its plant, order and operation strings, as the workers route
   live records. UINT32_MAX when the key is malformed. */
uint32_t agg_key_shard(const void *key, size_t klen, uint32_t nshards);

#endif
