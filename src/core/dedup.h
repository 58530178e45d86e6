/*  dedup.h - exact deduplication per (source_id, epoch, seq).

    One dedup_t belongs to one parse/dedup worker thread; sources are
    partitioned across workers by source_id, so each source's state lives in
    exactly one thread. Not thread-safe; no locks needed.

    Per source it keeps the current epoch, the highest seq seen (high) and a
    ring bitmap of the last `window` seqs: memory per source is window/8 bytes,
    whatever the stream's length. Seqs start at 1 in every epoch.

    Verdicts for one seq of the source's current epoch:
      seq == 0 or seq <= high - window      -> DEDUP_TOO_OLD (cannot be checked)
      bit already set                       -> DEDUP_DUPLICATE
      otherwise                             -> DEDUP_NEW, and the bit is set
    A batch whose epoch is newer than the source's resets the source to that
    epoch (the producer restarted); one whose epoch is older is
    DEDUP_STALE_EPOCH as a whole.

    Persistence (commit rounds, restart): every source whose state changed
    (a new seq accepted, a new epoch, a new source) is marked dirty;
    dedup_export_dirty hands each dirty source's state to the caller once and
    clears the marks; dedup_restore loads such a state into a fresh dedup_t.
    After a restore, dedup_check gives exactly the verdicts the exporting
    dedup_t would have given, and acked/high/epoch are equal (see
    dedup_restore for a different window).

    State bytes, version 1 (varint = unsigned LEB128, at most 10 bytes):
      u8      version = 1
      varint  epoch
      varint  high
      varint  gap = high - acked (0 <= gap <= high, gap <= window)
      gap > 0: ceil(gap/8) bytes, bit i (byte i/8, bit i%8, LSB first) = seq
              acked+1+i was seen; bit 0 is always 0 (or acked would be
              higher), bit gap-1 (= high) always 1, the padding bits 0.
    Seqs <= acked need no bits: every one inside the window was seen. For an
    ordered stream acked == high, so a state is 4 to 22 bytes.
*/
#ifndef FP_DEDUP_H
#define FP_DEDUP_H

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
} dedup_verdict_t;

#define DEDUP_WINDOW_DEFAULT 65536u
#define DEDUP_WINDOW_MAX (1u << 24)

/* Counters of one dedup_t (all sources). Plain integers: the owning thread
   copies them into its metrics. */
typedef struct {
    uint64_t sources;      /* sources currently tracked */
    uint64_t accepted;     /* DEDUP_NEW verdicts */
    uint64_t duplicates;   /* DEDUP_DUPLICATE verdicts */
    uint64_t too_old;      /* DEDUP_TOO_OLD verdicts */
    uint64_t stale_epoch;  /* batches refused for an old epoch */
    uint64_t epoch_changes;/* a source moved to a newer epoch */
    uint64_t gaps;         /* seqs skipped when high advanced by more than 1 */
    uint64_t gaps_filled;  /* seqs below high that arrived later (reordering) */
} dedup_stats_t;

/* window: seqs tracked per source, a power of two in [64, DEDUP_WINDOW_MAX];
   max_sources: sources tracked at most. Returns NULL on bad arguments or out
   of memory. Free with dedup_destroy. */
dedup_t *dedup_new(uint32_t window, uint32_t max_sources);

/* Frees *self_p and every source; sets *self_p to NULL; safe on NULL. */
void dedup_destroy(dedup_t **self_p);

/* Finds or creates the state of source_id for a batch of `epoch`. Returns
   the source, or NULL and sets *verdict to DEDUP_STALE_EPOCH or
   DEDUP_TOO_MANY_SOURCES. The pointer stays valid until dedup_destroy. */
dedup_source_t *dedup_source(dedup_t *self, uint64_t source_id, uint64_t epoch,
                             dedup_verdict_t *verdict);

/* Checks one seq of the source's current epoch and marks it seen if new. */
dedup_verdict_t dedup_check(dedup_t *self, dedup_source_t *src, uint64_t seq);

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
   max_sources are tracked already, or out of memory.
   Window: seqs in (acked, high] are restored exactly when high - acked <=
   self's window, whatever the exporter's window was; otherwise -1. Seqs <=
   acked follow self's window: duplicate if inside it, too_old if outside
   (the same verdicts as the exporter when the windows are equal). */
int dedup_restore(dedup_t *self, uint64_t source_id, const void *state, size_t len);

#endif
