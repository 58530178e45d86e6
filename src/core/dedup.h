/*  dedup.h - exact deduplication per (source_id, epoch, seq).

    One dedup_t belongs to one parse/dedup worker thread; sources are
    partitioned across workers by source_id, so each source's state lives in
    exactly one thread. Not thread-safe; no locks needed.

    Per source it keeps the current epoch, the highest seq seen (high), the
    ack watermark (acked), a ring bitmap of the last `window` seqs (memory
    per source is window/8 bytes, whatever the stream's length), and the
    watermarks of its last DEDUP_PAST_EPOCHS earlier epochs. Seqs start at
    1 in every epoch.

    What is known of the current epoch: every seq <= acked was seen, except
    possibly those in the "hole" [hole_lo, hole_hi]: the seqs the window slid
    past before they arrived (a gap wider than the window) lie in it; hole_lo
    and hole_hi are such seqs, those between may be either. Seqs in
    (acked, high] are in the bitmap.

    Verdicts for one seq of the source's current epoch:
      seq == 0, or seq <= acked inside the hole -> DEDUP_TOO_OLD (cannot be
                                                   checked any more)
      seq <= acked otherwise, or bit already set -> DEDUP_DUPLICATE
      otherwise                                  -> DEDUP_NEW, and the bit is set
    A batch whose epoch is newer than the source's moves the source to that
    epoch (the producer restarted) and keeps the old epoch's watermark
    (acked, high, the hole, and the bits of (acked, high] when there are at
    most 64 of them) among the past epochs, dropping the oldest beyond
    DEDUP_PAST_EPOCHS. A batch of an older epoch is DEDUP_PAST_EPOCH when
    that epoch is kept: each of its seqs is a duplicate if that epoch saw
    it, otherwise refused as stale_epoch (dedup_check_past); and
    DEDUP_STALE_EPOCH as a whole when it is not kept. So a late resend of
    a batch that was counted under an earlier epoch is acknowledged as a
    duplicate, never dead-lettered.

    dedup_seen answers, without changing anything, whether a (source,
    epoch, seq) was seen, was not, or can no longer be told: the dead-letter
    resubmission asks it so that it never sends again a record that was
    counted (src/cli/deadletters.c).

    Persistence (commit rounds, restart): every source whose state changed
    (a new seq accepted, a new epoch, a new source) is marked dirty;
    dedup_export_dirty hands each dirty source's state to the caller once and
    clears the marks; dedup_restore loads such a state into a fresh dedup_t.
    After a restore, dedup_check gives exactly the verdicts the exporting
    dedup_t would have given, and acked/high/epoch are equal (see
    dedup_restore for a different window).

    State bytes (varint = unsigned LEB128, at most 10 bytes), version 2,
    written since the past epochs were added:
      u8      version = 2
      varint  epoch
      varint  high
      varint  gap = high - acked (0 <= gap <= high, gap <= window)
      gap > 0: ceil(gap/8) bytes, bit i (byte i/8, bit i%8, LSB first) = seq
              acked+1+i was seen; bit 0 is always 0 (or acked would be
              higher), bit gap-1 (= high) always 1, the padding bits 0.
      varint  hole_lo (0: no hole), and if not 0: varint hole_hi - hole_lo
              (1 <= hole_lo <= hole_hi <= acked) and u8 exact (1: hole_lo
              and hole_hi themselves were never seen; 0: not known)
      varint  floor: epochs below it are not known (they may have been
              seen); an earlier epoch >= floor that is not listed below was
              never seen
      varint  npast (0..DEDUP_PAST_EPOCHS), then per past epoch, newest
              first, epochs strictly decreasing, below epoch and >= floor:
                varint epoch, varint high (>= 1), varint gap (<= high),
                0 < gap <= 64: ceil(gap/8) bytes of bits as above (gap > 64:
                none, seqs in (acked, high] of that epoch cannot be told),
                the hole as above
    For an ordered stream acked == high and nothing was forgotten, so a
    state is about 6 bytes plus 5 to 20 per past epoch.
    Version 1 (before the past epochs) is version 2 up to the bits, without
    the rest; it is still read: such a source has no past epochs (floor =
    its epoch: an older batch is refused whole, as it was) and a hole
    [1, high - window] when high > window (the seqs below the window were
    too_old in version 1, and stay so: version 1 did not record whether
    they were all seen).
*/
#ifndef FP_DEDUP_H
#define FP_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dedup dedup_t;
typedef struct dedup_source dedup_source_t;

typedef enum {
    DEDUP_NEW = 0,
    DEDUP_DUPLICATE = 1,
    DEDUP_TOO_OLD = 2,          /* reason "too_old" */
    DEDUP_STALE_EPOCH = 3,      /* reason "stale_epoch" */
    DEDUP_TOO_MANY_SOURCES = 4, /* reason "too_many_sources" */
    DEDUP_PAST_EPOCH = 5,       /* dedup_source: a kept earlier epoch; see dedup_check_past */
} dedup_verdict_t;

/* What dedup_seen can tell about one (source, epoch, seq). */
typedef enum {
    DEDUP_UNSEEN = 0,  /* never taken: counting it now counts it once */
    DEDUP_SEEN = 1,    /* taken (counted, or dead-lettered for its content) */
    DEDUP_UNKNOWN = 2, /* forgotten: the window or the past epochs no longer tell */
} dedup_seen_t;

#define DEDUP_WINDOW_DEFAULT 65536u
#define DEDUP_WINDOW_MAX (1u << 24)
#define DEDUP_PAST_EPOCHS 4 /* earlier epochs whose watermark a source keeps */

/* Counters of one dedup_t (all sources). Plain integers: the owning thread
   copies them into its metrics. */
typedef struct {
    uint64_t sources;      /* sources currently tracked */
    uint64_t accepted;     /* DEDUP_NEW verdicts */
    uint64_t duplicates;   /* DEDUP_DUPLICATE verdicts */
    uint64_t too_old;      /* DEDUP_TOO_OLD verdicts */
    uint64_t stale_epoch;  /* batches refused whole for an old epoch */
    uint64_t stale_records;/* records of a kept past epoch it had not seen (dedup_check_past) */
    uint64_t epoch_changes;/* a source moved to a newer epoch */
    uint64_t gaps;         /* seqs skipped when high advanced by more than 1 */
    uint64_t gaps_filled;  /* seqs below high that arrived later (reordering) */
    uint64_t evicted;      /* aging: sources that left memory (both reasons) */
    uint64_t evicted_idle; /* of which idle for idle_ns */
    uint64_t evicted_full; /* of which to make room for another source */
} dedup_stats_t;

/* window: seqs tracked per source, a power of two in [64, DEDUP_WINDOW_MAX];
   max_sources: sources tracked at most. Returns NULL on bad arguments or out
   of memory. Free with dedup_destroy. */
dedup_t *dedup_new(uint32_t window, uint32_t max_sources);

/* Frees *self_p and every source; sets *self_p to NULL; safe on NULL. */
void dedup_destroy(dedup_t **self_p);

/* Aging: sources may leave memory, and the caller promises to bring a
   source back with dedup_restore (from the state dedup_export_dirty handed
   it, once durable) before it calls dedup_source for an id dedup_has does
   not know. A source may leave only when it is not dirty and the round of
   its last export is durable (dedup_rounds); then it leaves when a new
   source needs room (the least recently used such source, of the 64
   coldest) and, with idle_ns > 0, when no batch looked it up for idle_ns.
   Without aging (the default) every source stays until dedup_destroy. */
void dedup_set_aging(dedup_t *self, int64_t idle_ns);

/* Call once per round, before dedup_export_dirty: that export belongs to
   `round`; every round <= committed is durable; now_ns (monotonic) is the
   time the sources looked up until the next call are stamped with. With
   aging, evicts the sources idle for idle_ns. */
void dedup_rounds(dedup_t *self, uint64_t round, uint64_t committed, int64_t now_ns);

/* Whether source_id is in memory. */
bool dedup_has(const dedup_t *self, uint64_t source_id);

/* Finds or creates the state of source_id for a batch of `epoch`. Returns
   the source with *verdict DEDUP_NEW (epoch is now its current epoch: check
   seqs with dedup_check) or DEDUP_PAST_EPOCH (an earlier epoch it keeps:
   check seqs with dedup_check_past); or NULL and sets *verdict to
   DEDUP_STALE_EPOCH (an earlier epoch it does not keep) or
   DEDUP_TOO_MANY_SOURCES (max_sources are tracked and, with aging, none
   may leave). The pointer stays valid until dedup_destroy, or with aging
   until the next dedup_source, dedup_restore or dedup_rounds. */
dedup_source_t *dedup_source(dedup_t *self, uint64_t source_id, uint64_t epoch,
                             dedup_verdict_t *verdict);

/* Checks one seq of the source's current epoch and marks it seen if new. */
dedup_verdict_t dedup_check(dedup_t *self, dedup_source_t *src, uint64_t seq);

/* Checks one seq of a past epoch of src (after DEDUP_PAST_EPOCH):
   DEDUP_DUPLICATE if that epoch saw it, otherwise DEDUP_STALE_EPOCH (not
   seen, or cannot be told). Marks nothing: a past epoch takes no new seq. */
dedup_verdict_t dedup_check_past(dedup_t *self, dedup_source_t *src, uint64_t epoch,
                                 uint64_t seq);

/* The ack watermark src keeps of a past epoch (0 if it keeps none). */
uint64_t dedup_past_acked(const dedup_source_t *src, uint64_t epoch);

/* Whether (source_id, epoch, seq) was seen, without changing anything. A
   source self does not track was never seen. */
dedup_seen_t dedup_seen(const dedup_t *self, uint64_t source_id, uint64_t epoch, uint64_t seq);

/* The current epoch of source_id in *epoch; false (and *epoch 0) when self
   does not track it. */
bool dedup_epoch_of(const dedup_t *self, uint64_t source_id, uint64_t *epoch);

/* Highest seq s of the current epoch such that every seq in 1..s was seen,
   or forgotten by the window sliding past it. The ack watermark. */
uint64_t dedup_source_acked(const dedup_source_t *src);
uint64_t dedup_source_epoch(const dedup_source_t *src);
uint64_t dedup_source_high(const dedup_source_t *src);

const dedup_stats_t *dedup_stats(const dedup_t *self);

/* Largest state dedup_source_export can produce for a source of self. */
size_t dedup_export_max(const dedup_t *self);

/* Serialises src's state (format above) into buf if it fits in cap bytes.
   Returns the bytes needed, whether it fit or not (cap 0: only sizes). */
size_t dedup_source_export(const dedup_source_t *src, void *buf, size_t cap);

/* Calls fn once for every source dirty since the last call (in no particular
   order), then clears the marks. state is valid only during the call; fn
   must not call into self. O(dirty sources). */
typedef void(dedup_export_fn)(void *ctx, uint64_t source_id, const void *state, size_t len);
void dedup_export_dirty(dedup_t *self, dedup_export_fn *fn, void *ctx);

/* Start-up restore of one source from bytes of dedup_source_export (our own
   file, but possibly damaged: checked whole, never over-read). Replaces the
   source's state if it exists; the source is not dirty afterwards.
   Returns 0, or -1 and changes nothing when the bytes are malformed, when
   max_sources are tracked already (with aging: and none may leave), or
   out of memory. A restored source is durable (it may leave at once).
   Reads versions 1 and 2 (see above).
   Window: seqs in (acked, high] are restored exactly when high - acked <=
   self's window, whatever the exporter's window was; otherwise -1. Seqs <=
   acked keep their verdicts (duplicate, or too_old in the hole) whatever
   the window. */
int dedup_restore(dedup_t *self, uint64_t source_id, const void *state, size_t len);

#endif
