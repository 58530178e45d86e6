/*  agg.h - aggregation of deduplicated records into ERP checkpoints.

    One agg_t is one aggregate shard's state; it belongs to one shard thread.
    Shards are chosen by (plant, order, operation), so an operation's
    completion, consumption and scrap keys all live in the same agg_t and a
    completion never waits for another shard. Not thread-safe, no locks.

    Keys (all strings; the shard interns them, refcounted, so memory follows
    the open keys), each per posting period (below):
      completion   (plant, order, operation, period)       yield, scrap (parts)
      consumption  (plant, order, operation, material, lot, unit, period)
                                                          quantity (thousandths)
      scrap        (plant, order, operation, reason, period) parts
    An operation is identified by (plant, order, operation) and has one head
    entry across its periods: its line and station (attributes: those of the
    first record seen for it, used in every checkpoint of the operation),
    whether it is closed, and the list of its keys of every period. Heads
    are not keys: they emit nothing and do not count against max_open_keys
    or in agg_stats().keys.

    Semantics:
      PartCount      completion[period].yield += q
      Scrap          scrap[reason, period].parts += q and completion[period].scrap += q
      MaterialConsumed consumption[..., period].quantity += q
      OperationStarted counted in its period's next completion's record_count
                     and lineage.
      OperationCompleted emits, at once, the final completion of its period
                     (final = true), then everything pending of the
                     operation in every period (consumption, scrap, the
                     completions of other periods, final = false); the
                     operation is then closed, across all its periods.
    Records for a closed operation accumulate as corrections, in their own
    period, and are emitted with late = true at the next agg_flush (any
    mode). Partial checkpoints of open operations are emitted by
    agg_flush(AGG_FLUSH_ALL) (posting interval, drain). A key with nothing
    pending emits nothing; a partial completion is emitted only if its yield
    or scrap delta is non-zero, or when another completion of its operation
    (another period's) is emitted in the same flush (an OperationStarted
    alone waits for the operation's next completion).
    Each emitted checkpoint is a delta; the key's pending sums then restart
    at zero. Invariant: after a full flush, for every key the sum of emitted
    deltas equals the sum of the records added.
    A record whose quantity would overflow a pending sum (int64) is refused
    whole (nothing of it is added) and reported through reject. Counter
    readings (FP_KIND_PART_COUNTER, FP_KIND_SCRAP_COUNTER) are refused as
    invalid_record: the worker turns them into PartCount and Scrap deltas.
    Closed operations and their keys are released closed_key_grace_ns after
    closing (checked in agg_flush), when nothing is pending.
    Closed keys at rest (agg_compact.h): from the first agg_flush after it
    closed, a closed operation with nothing pending and nothing changed
    since the last export moves to a compact store: per key its checkpoint_no and event_id
    hash (48 bytes), per operation its line, station and closing; its other
    strings are freed. A record for such a key brings it back whole (the
    record brings the strings), so nothing of the semantics changes:
    checkpoints, event_ids, release, export and the restart are as if it
    had stayed. Compacted keys are keys held (agg_stats().keys, and
    max_open_keys counts them). With cfg.no_export (the caller never
    exports) they keep no key bytes; otherwise each keeps its stored key
    bytes, for its export and its deletion at release.
    Bounded flushes: one agg_flush compacts and releases about
    AGG_FLUSH_WORK keys at most (a whole operation at a time, oldest
    first); the caller does what is left in slices with agg_work (the
    shard: after each burst of batches, once its checkpoints are handed
    on), and the next flushes go on with it. At 4,000 operations closing
    per round (half of this machine's max rate) a flush that did it all
    held the shard up for 1 to 17 ms (docs/benchmarks.md "Bounded
    flushes"); a key's place, store or table, changes no checkpoint, and
    the grace is a minimum, so nothing else depends on when.

    Periods (cfg.period, period.h; FP_PERIOD_NONE = one period, id 0, and
    checkpoints without posting fields). A record belongs to the period of
    its event time (time_ns) in the process's zone; the period is part of
    every key, so a checkpoint never spans a period boundary and carries
    its period's posting_date, period name, start and end.
    Backfill: the shard keeps flushed_through, the start of the period of
    the event-time watermark (agg_watermark: the newest event time the
    workers have routed) at the latest AGG_FLUSH_ALL. A flush emits all of a
    period's pending records and then marks the periods before the
    watermark's flushed; a checkpoint of a period that ends at or before
    flushed_through is emitted with backfill = true: its records came after
    their period had been flushed (an outage, a replayed export), and they
    are never mixed into a live period's checkpoint. flushed_through is
    persisted (the shards' own key), so backfill marks survive a restart.
    Closed periods (cfg.closed_set): records whose period's posting date is
    before cfg.closed_before are refused "period_closed"
    (AGG_CLOSED_REFUSE), or (AGG_CLOSED_REPOST) kept in keys of their own
    period and emitted with the posting fields of the first open period
    (fp_period_first_of_date), their own posting date and period start in
    original_posting_date / original_period_start_ns, and backfill = true.

    event_id = "<instance>-<hex 32: XXH3-128 of (kind, key strings, period,
    checkpoint_no, source, epoch and seq of the first record summed)>":
    deterministic for the same checkpoint of the same key, and distinct for
    distinct checkpoints, even after a key was released and reopened.
    (Period 0 - periods off - is left out of the hash: those ids are the
    ones before periods existed.)

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
    record counts, lineage, checkpoint_no, late, final, event_id, periods,
    backfill), given the same records, flushes and watermarks; only the order
    of checkpoints within one agg_add or agg_flush call may differ.
    Upgrade: agg_import reads version-1 pairs (a floorpost before periods)
    and marks what it made of them for export, with the version-1 keys as
    deletions (agg_stats().upgraded counts them): the first round's export
    replaces them by version-2 pairs. A version-1 key's pending delta goes
    to the period of its earliest pending record; with periods, a
    version-1 consumption, scrap or completion key with nothing pending is
    dropped (its checkpoint_no with it: the next checkpoint of that key
    counts from 1 again, with a distinct event_id).

    Clock: an operation's closed_at is the now_ns of the agg_flush before
    its close, and it is stored as such. So that grace survives a restart,
    the now_ns passed to agg_flush must be CLOCK_REALTIME (ns since the Unix
    epoch; best the barrier's wall_ns, the same in every shard).
    A wall clock stepped backwards only delays releases; stepped forwards, a
    release may come early: a later record then reopens the operation
    (checkpoint_no from 1, late = false) - sums stay exact.

    Key bytes, version 2 (varint = unsigned LEB128, see varint.h):
      u8 version = 2, u8 kind, then the key strings, each as varint length +
      bytes (no NUL), then for kinds 1..3 varint period id:
        1 consumption: plant, order, operation, material, lot, unit; period
        2 completion: plant, order, operation; period
        3 scrap: plant, order, operation, reason; period
        4 operation head: plant, order, operation
        0 the shards' own pair (no strings): every shard imports it
      An absent string is "". The period id is the period's start in
      minutes since 1970-01-01 UTC plus 2^29 (0: periods off). Stable
      across restarts, builds and shard counts (never symbol ids).
    State bytes, version 2 (zigzag = signed as varint):
      kinds 1..3:
        u8 version = 2, u8 flags: 2 late, 4 lineage truncated
        varint checkpoint_no (of the last emitted checkpoint; 0 = none)
        varint record_count (pending)
        record_count > 0:
          zigzag sum0 (yield | quantity | parts); completion only: zigzag sum1 (scrap)
          zigzag first_time_ns, varint last_time_ns - first_time_ns
          u8 n (1..4), n x {varint source_id, epoch, first_seq, last_seq - first_seq}
      kind 4: u8 version = 2, u8 flags: 1 closed
        varint length + line bytes, varint length + station bytes
        closed: zigzag closed_at (agg_flush clock, see above),
                varint close order (keeps the release order of closed operations)
      kind 0: u8 version = 2, zigzag flushed_through (ns)
    Nothing else: the key hash and event_id hash are recomputed. Late and
    truncated require record_count > 0.
    Version 1 (read only): key bytes as version 2 without kind 0 and 4 and
    without the period; a completion's state also held the head's line,
    station and closing (flags 1 closed; late on a completion required
    closed).
*/
#ifndef FP_AGG_H
#define FP_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "period.h"
#include "record.h"

typedef struct agg agg_t;

#define AGG_CLOSED_REPOST 0 /* a closed period's records post to the first open one */
#define AGG_CLOSED_REFUSE 1 /* ... are refused "period_closed" */

typedef struct {
    const char *instance;        /* copied */
    int64_t closed_key_grace_ns; /* release closed operations after this */
    uint64_t max_open_keys;      /* more keys than this: records refused "too_many_keys" */
    fp_period_cfg_t period;      /* posting periods; kind FP_PERIOD_NONE (0): none */
    bool closed_set;             /* closed_before is set */
    int32_t closed_before;       /* posting dates before this are closed (days since 1970) */
    int closed_mode;             /* AGG_CLOSED_* */
    bool no_export;              /* agg_export_* is never called: compacted closed
                                    keys keep no key bytes */
} agg_config_t;

/* A checkpoint ready to publish. ck's strings are valid only during the call. */
typedef void(agg_emit_fn)(void *ctx, const fp_checkpoint_t *ck);

/* A record that could not be aggregated; reason is "overflow",
   "too_many_keys", "no_memory", "invalid_record" or "period_closed". The
   batch and record are valid only during the call. */
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
#define AGG_FLUSH_WORK 1024 /* keys compacted or released by one agg_flush, at most about */
#define AGG_FLUSH_ALL 2  /* emit every pending delta (posting interval, drain) */

/* Emits pending checkpoints per mode, then compacts closed operations at
   rest and releases those whose grace has passed (bounded: see "Bounded
   flushes") (now_ns: the same clock every call; CLOCK_REALTIME when
   the state is persisted, see "Clock" above). AGG_FLUSH_ALL also marks
   the periods before the watermark's as flushed (see "Periods"). */
void agg_flush(agg_t *self, int mode, int64_t now_ns);

/* Compacts and releases about `budget` keys more of what the latest
   agg_flush left ("Bounded flushes"); true while some is left. Nothing to
   do costs a test of a flag. */
bool agg_work(agg_t *self, uint64_t budget);

/* Raises the event-time watermark to event_ns (never lowers it): the
   newest event time the pipeline has taken, the same in every shard (the
   shard passes the workers' value from the round's barriers). */
void agg_watermark(agg_t *self, int64_t event_ns);

typedef struct {
    uint64_t keys;            /* keys held (all kinds), compacted ones included */
    uint64_t compact_keys;    /* of which closed keys at rest in the compact store */
    uint64_t open_operations; /* operations not yet completed */
    uint64_t closed_operations;
    uint64_t records;         /* records added */
    uint64_t rejected;        /* records refused (overflow, too_many_keys) */
    uint64_t events;          /* checkpoints emitted */
    uint64_t late_events;     /* of which late corrections */
    uint64_t released;        /* operations released after grace */
    uint64_t strings;         /* interned strings */
    uint64_t backfill_events; /* checkpoints emitted with backfill = true */
    uint64_t upgraded;        /* version-1 pairs agg_import read (re-exported as version 2) */
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
   live records. AGG_KEY_ALL_SHARDS for the shards' own key (every shard
   imports it); UINT32_MAX when the key is malformed. */
#define AGG_KEY_ALL_SHARDS (UINT32_MAX - 1)
uint32_t agg_key_shard(const void *key, size_t klen, uint32_t nshards);

#endif
