/*  outbox.h - the committed event log and its readers' durable positions,
    on the store's LMDB env (tables outbox and readers, see store.h "On
    disk").

    The outbox holds every event a commit round published, keyed by its
    global_seq (1, 2, 3, ... without holes). Emit is its one writer: it puts
    a round's events in the round's write txn (fp_store_begin .. commit),
    so an event is in the outbox exactly when its round is committed.
    Readers (the replay server, sinks) read the committed outbox from any
    thread.

    A reader that must not miss an event keeps a durable position: the last
    global_seq it has finished with. Its reports go into the round's txn
    (fp_outbox_put_reader), so a position is committed with the round that
    carries it, never ahead of it. Invariants:
      - a stored position never moves backwards (a stale report is ignored);
      - a stored position never exceeds the last committed global_seq;
      - retention (fp_outbox_trim) never deletes an event with global_seq >
        the smallest position of the enabled, not detached readers;
      - a reader falls behind at most max_lag events: fp_outbox_detach_lagging
        marks it detached at the bound, and from then on it holds nothing
        back (a detached reader never stops commits or acks).

    Thread contract: store.h's. Writes (fp_outbox_put, fp_outbox_put_reader
    inside the round's txn; fp_outbox_trim, fp_outbox_detach_lagging in their
    own write txn, between rounds) on the commit thread only. Reads
    (fp_outbox_read, fp_outbox_oldest, fp_outbox_reader,
    fp_outbox_each_reader, fp_outbox_usage, fp_outbox_lags) on any thread,
    each in its own read txn: they see the last commit that finished before
    they began.
    fp_outbox_lag_check is pure.

    Errors: store.h's codes (0 or negative).
*/
#ifndef FP_OUTBOX_H
#define FP_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Reader flags (u32 in the readers table). Retention waits for a reader
   whose flags have ENABLED and not DETACHED. */
#define FP_OUTBOX_READER_ENABLED 0x1u
#define FP_OUTBOX_READER_DETACHED 0x2u /* set by fp_outbox_detach_lagging */

#define FP_OUTBOX_READER_NAME_MAX 63u /* 1..63 bytes of [A-Za-z0-9._-] */

/* ---- Write side, in the round's txn (commit thread) ---- */

/* Appends an event. global_seq must be greater than every global_seq stored
   before (else the txn fails with MDB_KEYEXIST). tlen 1..65535. wall_ns: the
   round's commit time, used by fp_outbox_trim. Fails the txn on error, like
   every store put. */
int fp_outbox_put(fp_store_txn_t *t, uint64_t global_seq, uint64_t round, int64_t wall_ns,
                  const char *topic, size_t tlen, const void *ev, size_t evlen);

/* Records reader `name` (NUL-terminated, see FP_OUTBOX_READER_NAME_MAX) at
   `position` with `flags` (FP_OUTBOX_READER_*), and the current wall time.
   A position below the stored one is a stale report: the stored position
   is kept (flags and time are still written) and the call returns 0. A
   position beyond the last committed global_seq (as of fp_store_begin) is
   refused with -ERANGE, a bad name or unknown flag bits with -EINVAL; these
   refusals do NOT
   fail the txn (a reader's bad report must not cost the round). An LMDB
   error fails the txn. A stored DETACHED is kept whatever flags says:
   only fp_outbox_set_reader_flags re-attaches. */
int fp_outbox_put_reader(fp_store_txn_t *t, const char *name, uint64_t position, uint32_t flags);

/* Records reader `name`'s aux cursor (two u64 the reader gives meaning to,
   e.g. the ERP verdicts it has reported: src/sinks), keeping its position
   and flags (a reader not yet known gets position 0, flags 0). Written in
   the txn that writes what the cursor covers, so the two never disagree
   after a crash. -EINVAL (txn kept) for a bad name; an LMDB error fails
   the txn. */
int fp_outbox_put_reader_aux(fp_store_txn_t *t, const char *name, const uint64_t aux[2]);

/* ---- Write side, own write txn (commit thread, between rounds) ---- */

/* Retention: deletes the oldest events whose commit wall time is before
   older_than_wall_ns, in global_seq order, stopping at the first event that
   is not older (so the outbox never gets holes), at the first event with
   global_seq > the smallest position of the enabled, not detached readers,
   or after max_delete events. *deleted (may be NULL) gets the count. After
   a FULL commit it also commits a tiny second txn (meta "trimmed_ns") so
   the freed pages serve the next round. 0 or a negative error. */
int fp_outbox_trim(fp_store_t *self, int64_t older_than_wall_ns, uint32_t max_delete,
                   uint64_t *deleted);
/* fp_outbox_trim, and *damaged (may be NULL) gets the global_seq of the
   last damaged event it deleted (0: none). An event whose stored value
   fails its checksum (damaged after the start's walk) has no readable
   age: it is deleted as soon as every enabled, not detached reader is past
   it, so it never stops retention (and, the map full, the commits). */
int fp_outbox_trim_ex(fp_store_t *self, int64_t older_than_wall_ns, uint32_t max_delete,
                      uint64_t *deleted, uint64_t *damaged);

/* A reader's first start, before the pipeline runs: records reader `name`
   at `position` (enabled, not detached) in its own write txn when the
   store does not know it yet, so that retention holds the events after
   `position` from the first housekeeping on (emit's first trim runs at its
   start: a reader known only from its first report could lose what it was
   told to start from). A known reader is left as it is. 0, -EINVAL for a
   bad name, or an error (FP_STORE_FULL: the caller may go on, the first
   report records the reader as before). */
int fp_outbox_add_reader(fp_store_t *self, const char *name, uint64_t position);

/* The operator's switch (`floorpost sinks detach|attach`), in its own
   write txn, from floorpost or from a tool's store beside a running one:
   the reader's flags become (flags | set) & ~clear; position and aux are
   kept. Re-attaching (clear DETACHED) makes retention wait for it again
   from its position: check fp_outbox_oldest, events may be gone. 0 (with
   *position and *flags_out, either may be NULL), FP_STORE_NOTFOUND, or an
   error. */
int fp_outbox_set_reader_flags(fp_store_t *self, const char *name, uint32_t set, uint32_t clear,
                               uint64_t *position, uint32_t *flags_out);

/* Detaches every enabled, not yet detached reader whose lag (last committed
   global_seq - position) is >= max_lag (fp_outbox_lag_check says
   FP_OUTBOX_LAG_DETACH): sets DETACHED in its flags, keeps its position.
   Calls fn (may be NULL) for each reader detached, after the commit, so the
   caller can log loudly (name NUL-terminated, valid during the call). Make
   it once a second, like the trim. Returns the number detached (>= 0) or a
   negative error (then nothing was detached and fn was not called). */
int fp_outbox_detach_lagging(fp_store_t *self, uint64_t max_lag,
                             void (*fn)(void *ctx, const char *name, uint64_t position,
                                        uint64_t lag),
                             void *ctx);

/* ---- Read side (any thread) ---- */

/* Events with global_seq >= from_global_seq, in order, at most max of them.
   fn returns 0 to go on, non-zero to stop (that event is not counted).
   Returns the number of events fn accepted (>= 0) or a negative error.
   topic is not NUL-terminated; ev is not aligned. */
int fp_outbox_read(fp_store_t *self, uint64_t from_global_seq, uint32_t max,
                   int (*fn)(void *ctx, uint64_t global_seq, uint64_t round, const char *topic,
                             size_t tlen, const void *ev, size_t evlen),
                   void *ctx);

/* fp_outbox_read with flags. FP_OUTBOX_READ_DAMAGED: an event whose
   stored value fails its checksum or has an impossible layout (the state
   file was damaged after the start's walk, store.h) does not end the read
   with FP_STORE_CORRUPT: fn gets its global_seq with topic and ev NULL,
   tlen, evlen and round 0 (none of its bytes), and the read goes on. A
   damaged key still ends it (FP_STORE_CORRUPT). */
#define FP_OUTBOX_READ_DAMAGED 1u
int fp_outbox_read_ex(fp_store_t *self, uint64_t from_global_seq, uint32_t max, unsigned flags,
                      int (*fn)(void *ctx, uint64_t global_seq, uint64_t round, const char *topic,
                                size_t tlen, const void *ev, size_t evlen),
                      void *ctx);

/* The smallest global_seq in the outbox: 0, or FP_STORE_EMPTY. */
int fp_outbox_oldest(fp_store_t *self, uint64_t *global_seq);

/* Reader `name`'s committed position and flags: 0, FP_STORE_NOTFOUND for an
   unknown reader, -EINVAL for a bad name, or an error. Either out may be
   NULL. */
int fp_outbox_reader(fp_store_t *self, const char *name, uint64_t *position, uint32_t *flags);

/* The same with its aux cursor (zeros when never put); any out may be
   NULL. */
int fp_outbox_reader_ex(fp_store_t *self, const char *name, uint64_t *position, uint32_t *flags,
                        uint64_t aux[2]);

/* Calls fn for every reader in name order (name NUL-terminated, valid
   during the call; updated_ns: the wall ns of its last put). fn returns 0 to
   go on, non-zero to stop. Returns 0, fn's non-zero value, or an error. */
int fp_outbox_each_reader(fp_store_t *self,
                          int (*fn)(void *ctx, const char *name, uint64_t position,
                                    uint32_t flags, int64_t updated_ns),
                          void *ctx);

/* The outbox's share of the map: outbox_bytes = the pages of the outbox
   table, map_bytes = the map size. For the caller's "outbox fills the
   map" warning. 0 or an error. */
int fp_outbox_usage(fp_store_t *self, uint64_t *outbox_bytes, uint64_t *map_bytes);

/* ---- Pure ---- */

/* The stored value of an outbox event (store.h "On disk": u64 wall ns, u64
   round, u16 topic length, topic, event) -> its fields. 0, or
   FP_STORE_CORRUPT for an impossible layout (shorter than its header, an
   empty topic or one longer than the value). topic and ev point into val:
   not NUL-terminated, not aligned. The outbox's own reads use it; it is
   public so that it can be fuzzed. */
int fp_outbox_event_parse(const void *val, size_t len, int64_t *wall_ns, uint64_t *round,
                          const char **topic, size_t *tlen, const void **ev, size_t *evlen);

/* A stored readers record (the name, then u64 position, u32 flags, u64
   wall ns and, in a 36-byte value, u64 aux[2]) -> its fields; aux (may be
   NULL) zeros for a 20-byte value. 0, or FP_STORE_CORRUPT when the name is
   not 1..FP_OUTBOX_READER_NAME_MAX bytes of [A-Za-z0-9._-] or the value is
   neither 20 nor 36 bytes. */
int fp_outbox_reader_parse(const void *key, size_t klen, const void *val, size_t vlen,
                           uint64_t *position, uint32_t *flags, int64_t *updated_ns,
                           uint64_t aux[2]);

typedef enum {
    FP_OUTBOX_LAG_OK = 0,
    FP_OUTBOX_LAG_WARN,   /* lag >= 50 % of max_lag */
    FP_OUTBOX_LAG_DETACH, /* lag >= max_lag */
} fp_outbox_lag_t;

/* The verdict on a reader at `position` when the last committed global_seq
   is last_gseq (lag = last_gseq - position, 0 when position >= last_gseq)
   and the bound is max_lag (>= 1). */
fp_outbox_lag_t fp_outbox_lag_check(uint64_t position, uint64_t last_gseq, uint64_t max_lag);

/* How far the readers lag, for emit's warnings and metrics (about once a
   second): in one read txn, calls fn for each enabled, not detached reader
   (name NUL-terminated, valid during the call) with its position, its lag
   in events (last committed global_seq - position) and
   fp_outbox_lag_check's verdict for max_lag (>= 1); *outbox_bytes and
   *map_bytes (each may be NULL) get fp_outbox_usage's figures from the
   same snapshot. fn returns 0 to go on, non-zero to stop. Returns 0, fn's
   non-zero value, or an error. The rule for the caller: WARN (log, rate
   limited, and count) from 50 % of the bound, well before DETACH; also warn
   when outbox_bytes reaches half of map_bytes while a reader lags, because
   at a full map the full-map behaviour (commits fail, acks wait) applies
   before the bound if the bound does not fit the map. */
int fp_outbox_lags(fp_store_t *self, uint64_t max_lag,
                   int (*fn)(void *ctx, const char *name, uint64_t position, uint64_t lag,
                             fp_outbox_lag_t verdict),
                   void *ctx, uint64_t *outbox_bytes, uint64_t *map_bytes);

#endif
