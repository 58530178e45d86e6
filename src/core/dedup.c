/*  dedup.c - exact deduplication per (source_id, epoch, seq).

    Layout: an open-addressing table (linear probing) of pointers to sources.
    Each source is one allocation: its header followed by its ring bitmap of
    `window` bits. Sources are never moved or freed before dedup_destroy, so
    the pointers dedup_source hands out stay valid while the table grows.

    Invariants of one source (W = window, a power of two):
      - bit (s & (W-1)) is meaningful only for s in (high - W, high]; for
        those it is 1 iff s was accepted in the current epoch. Bits of slots
        not yet reached since the last reset are 0.
      - acked <= high, and acked >= high - W once high >= W: every seq in
        1..acked was seen or has left the window. So every seq in
        (high - W, acked] is seen, seq acked+1 is not (when acked < high),
        and seq high is: the export format relies on these.
      - dirty is set iff the source is on the dirty list (dirty_head,
        linked by dirty_next; sources are never freed, so no unlinking).
*/
#include "dedup.h"
#include "varint.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dedup_source {
    uint64_t id;        /* source_id */
    uint64_t epoch;     /* current epoch of the source */
    uint64_t high;      /* highest seq seen in this epoch; 0 = none yet */
    uint64_t acked;     /* contiguous-ack watermark, see dedup_source_acked */
    uint64_t mask;      /* window - 1 of the owning dedup_t (for export) */
    struct dedup_source *dirty_next; /* dirty list link */
    bool dirty;         /* changed since the last dedup_export_dirty */
    uint64_t bits[];    /* window/64 words: the ring bitmap */
};

struct dedup {
    uint64_t window;        /* seqs per source, power of two */
    uint64_t mask;          /* window - 1 */
    uint32_t words;         /* window / 64 */
    uint32_t max_sources;   /* hard cap on sources (and so on probe length) */
    uint64_t seed;          /* per-instance hash seed, see s_hash */
    dedup_source_t **slots; /* open-addressing table; NULL = empty */
    uint64_t cap;           /* slots, power of two; count <= cap / 2 */
    uint64_t count;         /* sources stored */
    dedup_source_t *dirty_head; /* sources changed since the last export */
    uint8_t *scratch;       /* [dedup_export_max]: dedup_export_dirty's buffer */
    dedup_stats_t stats;
};

/*  The splitmix64 finaliser: a full-avalanche 64-bit mix in a few cycles.
    Source ids are untrusted but their number is capped by max_sources and the
    table stays at most half full, so even crafted colliding ids cost at most
    max_sources probes per new batch (not per record: the caller looks the
    source up once per batch). The per-instance seed makes such collisions
    hard to craft from outside; it is not a cryptographic defence and need not
    be one. */
static uint64_t
s_hash(uint64_t id, uint64_t seed)
{
    uint64_t z = id ^ seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

dedup_t *
dedup_new(uint32_t window, uint32_t max_sources)
{
    if (window < 64 || window > DEDUP_WINDOW_MAX || (window & (window - 1)) != 0)
        return NULL;
    if (max_sources == 0)
        return NULL;
    dedup_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->window = window;
    self->mask = (uint64_t)window - 1;
    self->words = window / 64;
    self->max_sources = max_sources;
    self->cap = 16;
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    self->seed = s_hash((uint64_t)(uintptr_t)self ^ (uint64_t)ts.tv_nsec
                        ^ ((uint64_t)ts.tv_sec << 32), 0x9e3779b97f4a7c15ULL);
    self->slots = calloc(self->cap, sizeof *self->slots);
    self->scratch = malloc(dedup_export_max(self));
    if (!self->slots || !self->scratch) {
        free(self->slots);
        free(self->scratch);
        free(self);
        return NULL;
    }
    return self;
}

void
dedup_destroy(dedup_t **self_p)
{
    assert(self_p);
    dedup_t *self = *self_p;
    if (!self)
        return;
    for (uint64_t i = 0; i < self->cap; i++)
        free(self->slots[i]);
    free(self->slots);
    free(self->scratch);
    free(self);
    *self_p = NULL;
}

/* Slot index of id, or of the empty slot where it would go. The table is
   never full (count <= cap / 2), so the probe ends. */
static uint64_t
s_find(const dedup_t *self, uint64_t id)
{
    uint64_t m = self->cap - 1;
    uint64_t i = s_hash(id, self->seed) & m;
    while (self->slots[i] && self->slots[i]->id != id)
        i = (i + 1) & m;
    return i;
}

/* Doubles the table. 0, or -1 when out of memory (the table is unchanged). */
static int
s_grow(dedup_t *self)
{
    uint64_t old_cap = self->cap;
    dedup_source_t **old = self->slots;
    dedup_source_t **fresh = calloc(old_cap * 2, sizeof *fresh);
    if (!fresh)
        return -1;
    self->slots = fresh;
    self->cap = old_cap * 2;
    for (uint64_t i = 0; i < old_cap; i++) {
        if (old[i])
            self->slots[s_find(self, old[i]->id)] = old[i];
    }
    free(old);
    return 0;
}

/* Puts src on the dirty list once per export period: a load and a branch
   on the hot path. */
static inline void
s_dirty(dedup_t *self, dedup_source_t *src)
{
    if (!src->dirty) {
        src->dirty = true;
        src->dirty_next = self->dirty_head;
        self->dirty_head = src;
    }
}

static void
s_reset(dedup_t *self, dedup_source_t *src, uint64_t epoch)
{
    memset(src->bits, 0, (size_t)self->words * sizeof src->bits[0]);
    src->epoch = epoch;
    src->high = 0;
    src->acked = 0;
}

/* Creates source_id in free slot i (from s_find); the caller checked
   max_sources and grew the table. NULL when out of memory. */
static dedup_source_t *
s_add(dedup_t *self, uint64_t i, uint64_t source_id)
{
    dedup_source_t *src = calloc(1, sizeof *src + (size_t)self->words * sizeof src->bits[0]);
    if (!src)
        return NULL;
    src->id = source_id;
    src->mask = self->mask;
    self->slots[i] = src;
    self->count++;
    self->stats.sources = self->count;
    return src;
}

dedup_source_t *
dedup_source(dedup_t *self, uint64_t source_id, uint64_t epoch, dedup_verdict_t *verdict)
{
    assert(self);
    assert(verdict);
    uint64_t i = s_find(self, source_id);
    dedup_source_t *src = self->slots[i];
    if (src) {
        if (epoch < src->epoch) {
            self->stats.stale_epoch++;
            *verdict = DEDUP_STALE_EPOCH;
            return NULL;
        }
        if (epoch > src->epoch) {
            s_reset(self, src, epoch);
            s_dirty(self, src);
            self->stats.epoch_changes++;
        }
        *verdict = DEDUP_NEW;
        return src;
    }
    /* A new source. Out of memory is reported as too many sources: either
       way this source cannot be tracked now. */
    if (self->count >= self->max_sources) {
        *verdict = DEDUP_TOO_MANY_SOURCES;
        return NULL;
    }
    if ((self->count + 1) * 2 > self->cap) {
        if (s_grow(self) != 0) {
            *verdict = DEDUP_TOO_MANY_SOURCES;
            return NULL;
        }
        i = s_find(self, source_id);
    }
    src = s_add(self, i, source_id);
    if (!src) {
        *verdict = DEDUP_TOO_MANY_SOURCES;
        return NULL;
    }
    src->epoch = epoch;
    s_dirty(self, src);
    *verdict = DEDUP_NEW;
    return src;
}

/* Clears n bits from slot `from` on, wrapping at the end of the ring;
   n < window. Word at a time: a long gap costs window/64 stores at most. */
static void
s_clear_slots(const dedup_t *self, uint64_t *bits, uint64_t from, uint64_t n)
{
    while (n > 0) {
        uint64_t run = self->window - from;     /* slots before the wrap */
        if (run > n)
            run = n;
        uint64_t w = from >> 6, b = from & 63;
        uint64_t left = run;
        if (b != 0) {                           /* head: part of one word */
            uint64_t k = 64 - b < left ? 64 - b : left;
            uint64_t m = (k == 64 ? ~0ULL : ((1ULL << k) - 1)) << b;
            bits[w++] &= ~m;
            left -= k;
        }
        while (left >= 64) {                    /* whole words */
            bits[w++] = 0;
            left -= 64;
        }
        if (left > 0)                           /* tail */
            bits[w] &= ~((1ULL << left) - 1);
        n -= run;
        from = (from + run) & self->mask;
    }
}

/* Sets n bits from slot `from` on, wrapping; n <= window. Restore only. */
static void
s_set_slots(const dedup_t *self, uint64_t *bits, uint64_t from, uint64_t n)
{
    if (n >= self->window) {
        memset(bits, 0xff, (size_t)self->words * sizeof bits[0]);
        return;
    }
    while (n > 0) {
        uint64_t run = self->window - from;
        if (run > n)
            run = n;
        uint64_t w = from >> 6, b = from & 63;
        uint64_t left = run;
        if (b != 0) {
            uint64_t k = 64 - b < left ? 64 - b : left;
            bits[w++] |= (k == 64 ? ~0ULL : ((1ULL << k) - 1)) << b;
            left -= k;
        }
        while (left >= 64) {
            bits[w++] = ~0ULL;
            left -= 64;
        }
        if (left > 0)
            bits[w] |= (1ULL << left) - 1;
        n -= run;
        from = (from + run) & self->mask;
    }
}

static inline bool
s_test(const dedup_t *self, const dedup_source_t *src, uint64_t seq)
{
    uint64_t slot = seq & self->mask;
    return (src->bits[slot >> 6] >> (slot & 63)) & 1;
}

/* Advances the ack watermark over seqs already seen. Each step passes one
   accepted seq, which happens once: amortised O(1) per accepted record. */
static inline void
s_advance_acked(const dedup_t *self, dedup_source_t *src)
{
    while (src->acked < src->high && s_test(self, src, src->acked + 1))
        src->acked++;
}

dedup_verdict_t
dedup_check(dedup_t *self, dedup_source_t *src, uint64_t seq)
{
    assert(self && src);
    if (seq == 0) {
        self->stats.too_old++;
        return DEDUP_TOO_OLD;
    }
    uint64_t slot = seq & self->mask;
    uint64_t *word = &src->bits[slot >> 6];
    uint64_t bit = 1ULL << (slot & 63);
    if (seq > src->high) {
        uint64_t d = seq - src->high;
        if (d > 1) {
            /* Seqs high+1 .. seq-1 are skipped: their slots held seqs that
               now leave the window, so clear them. seq's own slot is set
               below, which overwrites its old seq either way. */
            if (d >= self->window)
                memset(src->bits, 0, (size_t)self->words * sizeof src->bits[0]);
            else
                s_clear_slots(self, src->bits, (src->high + 1) & self->mask, d - 1);
            self->stats.gaps += d - 1;
        }
        src->high = seq;
        *word |= bit;
        s_dirty(self, src);
        self->stats.accepted++;
        if (seq >= self->window && src->acked < seq - self->window)
            src->acked = seq - self->window;
        s_advance_acked(self, src);
        return DEDUP_NEW;
    }
    if (src->high - seq >= self->window) {
        self->stats.too_old++;
        return DEDUP_TOO_OLD;
    }
    if (*word & bit) {
        self->stats.duplicates++;
        return DEDUP_DUPLICATE;
    }
    *word |= bit;
    s_dirty(self, src);
    self->stats.accepted++;
    self->stats.gaps_filled++;
    if (seq == src->acked + 1)
        s_advance_acked(self, src);
    return DEDUP_NEW;
}

uint64_t
dedup_source_acked(const dedup_source_t *src)
{
    assert(src);
    return src->acked;
}

uint64_t
dedup_source_epoch(const dedup_source_t *src)
{
    assert(src);
    return src->epoch;
}

uint64_t
dedup_source_high(const dedup_source_t *src)
{
    assert(src);
    return src->high;
}

const dedup_stats_t *
dedup_stats(const dedup_t *self)
{
    assert(self);
    return &self->stats;
}

/* ---- persistence (format in dedup.h) ---- */

#define S_STATE_VERSION 1

static inline bool
s_seen(const dedup_source_t *src, uint64_t seq)
{
    uint64_t slot = seq & src->mask;
    return (src->bits[slot >> 6] >> (slot & 63)) & 1;
}

size_t
dedup_export_max(const dedup_t *self)
{
    assert(self);
    /* version, three varints, then at most window bits */
    return 1 + 3 * FP_VARINT_MAX + (size_t)(self->window / 8);
}

size_t
dedup_source_export(const dedup_source_t *src, void *buf, size_t cap)
{
    assert(src);
    uint64_t gap = src->high - src->acked;
    assert(src->acked <= src->high && gap <= src->mask + 1);
    size_t nbits = (size_t)((gap + 7) / 8);
    size_t need = 1 + fp_varint_len(src->epoch) + fp_varint_len(src->high)
                  + fp_varint_len(gap) + nbits;
    if (need > cap)
        return need;
    uint8_t *p = buf;
    *p++ = S_STATE_VERSION;
    p += fp_varint_put(p, src->epoch);
    p += fp_varint_put(p, src->high);
    p += fp_varint_put(p, gap);
    memset(p, 0, nbits);
    for (uint64_t i = 0; i < gap; i++)
        if (s_seen(src, src->acked + 1 + i))
            p[i >> 3] |= (uint8_t)(1u << (i & 7));
    assert((size_t)(p + nbits - (uint8_t *)buf) == need);
    return need;
}

void
dedup_export_dirty(dedup_t *self, dedup_export_fn *fn, void *ctx)
{
    assert(self && fn);
    size_t cap = dedup_export_max(self);
    dedup_source_t *src = self->dirty_head;
    self->dirty_head = NULL;
    while (src) {
        dedup_source_t *next = src->dirty_next;
        size_t len = dedup_source_export(src, self->scratch, cap);
        assert(len <= cap);
        src->dirty = false;
        src->dirty_next = NULL;
        fn(ctx, src->id, self->scratch, len);
        src = next;
    }
}

int
dedup_restore(dedup_t *self, uint64_t source_id, const void *state, size_t len)
{
    assert(self);
    if (!state || len < 1)
        return -1;
    const uint8_t *p = state, *end = p + len;
    uint64_t epoch, high, gap;
    if (*p++ != S_STATE_VERSION)
        return -1;
    if (fp_varint_get(&p, end, &epoch) != 0 || fp_varint_get(&p, end, &high) != 0
        || fp_varint_get(&p, end, &gap) != 0)
        return -1;
    /* Damage checks: gap fits the window (and so nbits is small), the bits
       are exactly there, and they obey the invariants of dedup.c. */
    if (gap > high || gap > self->window)
        return -1;
    size_t nbits = (size_t)((gap + 7) / 8);
    if ((size_t)(end - p) != nbits)
        return -1;
    if (gap > 0) {
        if ((p[0] & 1) != 0)                                /* acked+1 unseen */
            return -1;
        if (!((p[(gap - 1) >> 3] >> ((gap - 1) & 7)) & 1))  /* high seen */
            return -1;
        if ((gap & 7) != 0 && (p[nbits - 1] >> (gap & 7)) != 0) /* padding */
            return -1;
    }

    uint64_t i = s_find(self, source_id);
    dedup_source_t *src = self->slots[i];
    if (!src) {
        if (self->count >= self->max_sources)
            return -1;
        if ((self->count + 1) * 2 > self->cap) {
            if (s_grow(self) != 0)
                return -1;
            i = s_find(self, source_id);
        }
        src = s_add(self, i, source_id);
        if (!src)
            return -1;
    }
    uint64_t acked = high - gap;
    memset(src->bits, 0, (size_t)self->words * sizeof src->bits[0]);
    src->epoch = epoch;
    src->high = high;
    src->acked = acked;
    /* Seqs in (max(0, high - W), acked] were all seen; seq 0 never is. */
    uint64_t lo = high > self->window ? high - self->window : 0;
    if (acked > lo)
        s_set_slots(self, src->bits, (lo + 1) & self->mask, acked - lo);
    for (uint64_t k = 0; k < gap; k++)
        if ((p[k >> 3] >> (k & 7)) & 1) {
            uint64_t slot = (acked + 1 + k) & self->mask;
            src->bits[slot >> 6] |= 1ULL << (slot & 63);
        }
    return 0;
}
