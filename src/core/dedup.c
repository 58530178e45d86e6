/*  dedup.c - exact deduplication per (source_id, epoch, seq).

    Layout: an open-addressing table (linear probing) of pointers to sources.
    Each source is one allocation: its header followed by its ring bitmap of
    `window` bits. Sources are never moved, and freed before dedup_destroy
    only by aging (dedup_set_aging): then only a source that is not dirty
    and whose last exported state is durable leaves (s_evictable), so what
    it knew is in the caller's store and comes back by dedup_restore.

    Invariants of one source (W = window, a power of two):
      - bit (s & (W-1)) is meaningful only for s in (acked, high]; for
        those it is 1 iff s was accepted in the current epoch. Bits of slots
        not yet reached since the last reset are 0. (Verdicts for seqs <=
        acked never read the bitmap.)
      - acked <= high, and acked >= high - W once high >= W: every seq in
        1..acked was seen or has left the window unseen; those that left it
        unseen all lie in the hole (s_hole_t). So seq
        acked+1 is not seen (when acked < high) and seq high is: the export
        format relies on these.
      - past[0..npast) are earlier epochs, newest first, epochs strictly
        decreasing, all >= floor and below epoch; each has high >= 1. An
        earlier epoch >= floor that is not among them was never seen.
      - dirty is set iff the source is on the dirty list (dirty_head,
        linked by dirty_next; a dirty source is never evicted, so no
        unlinking).
      - with aging, every source is on the LRU list (lru_head: most
        recently looked up by dedup_source), and used_ns never decreases
        from the head to the tail.
*/
#include "dedup.h"
#include "varint.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The seqs <= acked that the window slid past before they came all lie in
   [lo, hi] (lo 0: there are none). exact: lo and hi themselves are among
   them (each was unseen when the window passed it, and a seq the window
   passed is never taken after), so they are known unseen; only the seqs
   between are unknown. Not exact after a version-1 restore. */
typedef struct {
    uint64_t lo, hi;
    bool exact;
} s_hole_t;

/* What a source keeps of one earlier epoch. */
typedef struct {
    uint64_t epoch;
    uint64_t high, acked;        /* as they were when the epoch ended */
    s_hole_t hole;
    uint64_t bits;               /* bit i: seq acked+1+i seen, when high - acked <= 64 */
} s_past_t;

struct dedup_source {
    uint64_t id;        /* source_id */
    uint64_t epoch;     /* current epoch of the source */
    uint64_t high;      /* highest seq seen in this epoch; 0 = none yet */
    uint64_t acked;     /* contiguous-ack watermark, see dedup_source_acked */
    s_hole_t hole;      /* seqs <= acked that left the window maybe unseen */
    uint64_t floor;     /* epochs below it are not known */
    uint32_t npast;     /* past[0..npast): earlier epochs, newest first */
    s_past_t past[DEDUP_PAST_EPOCHS];
    uint64_t mask;      /* window - 1 of the owning dedup_t (for export) */
    struct dedup_source *dirty_next; /* dirty list link */
    struct dedup_source *lru_prev, *lru_next; /* aging: most recently used first */
    int64_t used_ns;    /* aging: dedup_rounds' now_ns when a batch last looked it up */
    uint64_t round;     /* the round its last exported state belongs to (0: restored) */
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
    /* Aging (dedup_set_aging): off while !aging, and then every source
       stays until dedup_destroy. */
    bool aging;
    int64_t idle_ns;        /* 0: evict only to make room */
    dedup_source_t *lru_head, *lru_tail; /* every source, most recently used first */
    uint64_t export_round;  /* the round dedup_export_dirty exports (dedup_rounds) */
    uint64_t committed;     /* every round <= committed is durable */
    int64_t now_ns;
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

static inline bool
s_test(const dedup_t *self, const dedup_source_t *src, uint64_t seq)
{
    uint64_t slot = seq & self->mask;
    return (src->bits[slot >> 6] >> (slot & 63)) & 1;
}

/* Moves the source to a newer epoch: the current one, if it saw anything,
   becomes past[0] (the oldest kept one drops out, and floor passes it). */
static void
s_reset(dedup_t *self, dedup_source_t *src, uint64_t epoch)
{
    if (src->high > 0) {
        if (src->npast == DEDUP_PAST_EPOCHS) {
            src->floor = src->past[DEDUP_PAST_EPOCHS - 1].epoch + 1;
            src->npast--;
        }
        memmove(src->past + 1, src->past, src->npast * sizeof src->past[0]);
        src->npast++;
        s_past_t *p = &src->past[0];
        *p = (s_past_t){.epoch = src->epoch, .high = src->high, .acked = src->acked,
                        .hole = src->hole};
        uint64_t gap = src->high - src->acked;
        if (gap <= 64)
            for (uint64_t i = 0; i < gap; i++)
                if (s_test(self, src, src->acked + 1 + i))
                    p->bits |= 1ULL << i;
    }
    memset(src->bits, 0, (size_t)self->words * sizeof src->bits[0]);
    src->epoch = epoch;
    src->high = 0;
    src->acked = 0;
    src->hole = (s_hole_t){0, 0, false};
}

static inline bool
s_in_hole(const s_hole_t *h, uint64_t seq)
{
    return h->lo && seq >= h->lo && seq <= h->hi;
}

/* What is known of a seq <= acked (see s_hole_t). */
static dedup_seen_t
s_hole_seen(const s_hole_t *h, uint64_t seq)
{
    if (!s_in_hole(h, seq))
        return DEDUP_SEEN;
    return h->exact && (seq == h->lo || seq == h->hi) ? DEDUP_UNSEEN : DEDUP_UNKNOWN;
}

/* The kept past epoch `epoch` of src, or NULL. */
static const s_past_t *
s_past(const dedup_source_t *src, uint64_t epoch)
{
    for (uint32_t i = 0; i < src->npast; i++)
        if (src->past[i].epoch == epoch)
            return &src->past[i];
    return NULL;
}

/* What a past epoch tells of seq. */
static dedup_seen_t
s_past_seen(const s_past_t *p, uint64_t seq)
{
    if (seq == 0 || seq > p->high)
        return DEDUP_UNSEEN;
    if (seq <= p->acked)
        return s_hole_seen(&p->hole, seq);
    if (p->high - p->acked > 64)
        return DEDUP_UNKNOWN;
    return (p->bits >> (seq - p->acked - 1)) & 1 ? DEDUP_SEEN : DEDUP_UNSEEN;
}

/* ---- aging ---- */

static void
s_lru_unlink(dedup_t *self, dedup_source_t *src)
{
    if (src->lru_prev)
        src->lru_prev->lru_next = src->lru_next;
    else
        self->lru_head = src->lru_next;
    if (src->lru_next)
        src->lru_next->lru_prev = src->lru_prev;
    else
        self->lru_tail = src->lru_prev;
    src->lru_prev = src->lru_next = NULL;
}

static void
s_lru_push(dedup_t *self, dedup_source_t *src)
{
    src->lru_prev = NULL;
    src->lru_next = self->lru_head;
    if (self->lru_head)
        self->lru_head->lru_prev = src;
    else
        self->lru_tail = src;
    self->lru_head = src;
}

/* A batch looked src up: it is the most recently used. */
static void
s_touch(dedup_t *self, dedup_source_t *src)
{
    src->used_ns = self->now_ns;
    if (self->lru_head != src) {
        s_lru_unlink(self, src);
        s_lru_push(self, src);
    }
}

/* Whether src may leave memory: what it knows is committed (not changed
   since its last export, and that export's round durable). */
static bool
s_evictable(const dedup_t *self, const dedup_source_t *src)
{
    return self->aging && !src->dirty && src->round <= self->committed;
}

/* Removes src from the table (backward-shift deletion keeps every probe
   sequence of linear probing unbroken), the LRU list, and frees it. */
static void
s_evict(dedup_t *self, dedup_source_t *src)
{
    uint64_t m = self->cap - 1;
    uint64_t i = s_find(self, src->id);
    assert(self->slots[i] == src);
    self->slots[i] = NULL;
    for (uint64_t j = (i + 1) & m; self->slots[j]; j = (j + 1) & m) {
        uint64_t home = s_hash(self->slots[j]->id, self->seed) & m;
        /* The entry at j may move to the hole at i unless its home lies
           cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            self->slots[i] = self->slots[j];
            self->slots[j] = NULL;
            i = j;
        }
    }
    s_lru_unlink(self, src);
    free(src);
    self->count--;
    self->stats.sources = self->count;
    self->stats.evicted++;
}

/* Makes room for one more source when the table is full: evicts the least
   recently used source that may leave, looking at most S_EVICT_SCAN from
   the cold end (those not evictable there wait for a commit). 0 or -1. */
#define S_EVICT_SCAN 64
static int
s_make_room(dedup_t *self)
{
    if (self->count < self->max_sources)
        return 0;
    dedup_source_t *src = self->lru_tail;
    for (int k = 0; src && k < S_EVICT_SCAN; k++, src = src->lru_prev)
        if (s_evictable(self, src)) {
            s_evict(self, src);
            self->stats.evicted_full++;
            return 0;
        }
    return -1;
}

void
dedup_set_aging(dedup_t *self, int64_t idle_ns)
{
    assert(self && idle_ns >= 0);
    self->aging = true;
    self->idle_ns = idle_ns;
}

void
dedup_rounds(dedup_t *self, uint64_t round, uint64_t committed, int64_t now_ns)
{
    assert(self);
    self->export_round = round;
    if (committed > self->committed)
        self->committed = committed;
    self->now_ns = now_ns;
    if (!self->aging || self->idle_ns == 0)
        return;
    /* From the cold end: every source idle for idle_ns that may leave
       goes; one that may not yet (changed, not committed) is passed. */
    dedup_source_t *src = self->lru_tail;
    while (src && now_ns - src->used_ns >= self->idle_ns) {
        dedup_source_t *prev = src->lru_prev;
        if (s_evictable(self, src)) {
            s_evict(self, src);
            self->stats.evicted_idle++;
        }
        src = prev;
    }
}

bool
dedup_has(const dedup_t *self, uint64_t source_id)
{
    assert(self);
    return self->slots[s_find(self, source_id)] != NULL;
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
    src->used_ns = self->now_ns;
    self->slots[i] = src;
    self->count++;
    self->stats.sources = self->count;
    s_lru_push(self, src);
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
        if (self->aging)
            s_touch(self, src);
        if (epoch < src->epoch) {
            if (s_past(src, epoch)) {
                *verdict = DEDUP_PAST_EPOCH;
                return src;
            }
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
    if (s_make_room(self) != 0) {
        *verdict = DEDUP_TOO_MANY_SOURCES;
        return NULL;
    }
    i = s_find(self, source_id); /* an eviction may have moved slots */
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

/* Advances the ack watermark over seqs already seen. Each step passes one
   accepted seq, which happens once: amortised O(1) per accepted record. */
static inline void
s_advance_acked(const dedup_t *self, dedup_source_t *src)
{
    while (src->acked < src->high && s_test(self, src, src->acked + 1))
        src->acked++;
}

/* The window slides so that every seq <= to is forgotten: acked jumps from
   below `to` to `to`. Seqs (acked, to] that were not seen join the hole;
   acked+1 is one of them (the invariant), and the highest is found from
   the top: above the old high every seq is unseen, below it the first 0
   bit down from `to` (each seen bit passed is a record forgotten for good:
   amortised O(1) per record). Runs before high moves and before the
   skipped slots are cleared. */
static void
s_forget(const dedup_t *self, dedup_source_t *src, uint64_t to)
{
    assert(src->acked < to);
    uint64_t hi = to;
    if (to <= src->high)
        while (hi > src->acked + 1 && s_test(self, src, hi))
            hi--;
    if (!src->hole.lo)
        src->hole = (s_hole_t){src->acked + 1, hi, true};
    src->hole.hi = hi;
    src->acked = to;
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
        if (seq >= self->window && src->acked < seq - self->window)
            s_forget(self, src, seq - self->window);
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
        s_advance_acked(self, src);
        return DEDUP_NEW;
    }
    if (seq <= src->acked) {
        /* Seen, unless the window slid past it before it came. */
        if (s_in_hole(&src->hole, seq)) {
            self->stats.too_old++;
            return DEDUP_TOO_OLD;
        }
        self->stats.duplicates++;
        return DEDUP_DUPLICATE;
    }
    /* acked < seq <= high, and acked >= high - W: inside the window. */
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

dedup_verdict_t
dedup_check_past(dedup_t *self, dedup_source_t *src, uint64_t epoch, uint64_t seq)
{
    assert(self && src);
    const s_past_t *p = s_past(src, epoch);
    if (p && s_past_seen(p, seq) == DEDUP_SEEN) {
        self->stats.duplicates++;
        return DEDUP_DUPLICATE;
    }
    self->stats.stale_records++;
    return DEDUP_STALE_EPOCH;
}

uint64_t
dedup_past_acked(const dedup_source_t *src, uint64_t epoch)
{
    assert(src);
    const s_past_t *p = s_past(src, epoch);
    return p ? p->acked : 0;
}

dedup_seen_t
dedup_seen(const dedup_t *self, uint64_t source_id, uint64_t epoch, uint64_t seq)
{
    assert(self);
    const dedup_source_t *src = self->slots[s_find(self, source_id)];
    if (!src || epoch > src->epoch || seq == 0)
        return DEDUP_UNSEEN;
    if (epoch < src->epoch) {
        const s_past_t *p = s_past(src, epoch);
        if (p)
            return s_past_seen(p, seq);
        return epoch >= src->floor ? DEDUP_UNSEEN : DEDUP_UNKNOWN;
    }
    if (seq > src->high)
        return DEDUP_UNSEEN;
    if (seq <= src->acked)
        return s_hole_seen(&src->hole, seq);
    return s_test(self, src, seq) ? DEDUP_SEEN : DEDUP_UNSEEN;
}

bool
dedup_epoch_of(const dedup_t *self, uint64_t source_id, uint64_t *epoch)
{
    assert(self && epoch);
    const dedup_source_t *src = self->slots[s_find(self, source_id)];
    *epoch = src ? src->epoch : 0;
    return src != NULL;
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

#define S_STATE_VERSION 2
#define S_PAST_BITS_MAX 64 /* a past epoch keeps the bits of (acked, high] up to this many */

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
    /* version, epoch, high, gap, the bits, the hole, floor, npast, then per
       past epoch five varints and up to 8 bytes of bits */
    return 1 + 3 * FP_VARINT_MAX + (size_t)(self->window / 8) + 4 * FP_VARINT_MAX
           + DEDUP_PAST_EPOCHS * (5 * FP_VARINT_MAX + S_PAST_BITS_MAX / 8);
}

/* A state writer that only counts when p is NULL. */
typedef struct {
    uint8_t *p;
    size_t n;
} s_out_t;

static void
s_put_varint(s_out_t *o, uint64_t v)
{
    if (o->p)
        fp_varint_put(o->p + o->n, v);
    o->n += fp_varint_len(v);
}

static void
s_put_hole(s_out_t *o, const s_hole_t *h)
{
    s_put_varint(o, h->lo);
    if (h->lo) {
        s_put_varint(o, h->hi - h->lo);
        if (o->p)
            o->p[o->n] = h->exact ? 1 : 0;
        o->n++;
    }
}

/* The bits of seqs acked+1 .. acked+gap, seen(i) = bit i. */
static void
s_put_bits(s_out_t *o, uint64_t gap, const dedup_source_t *src, const s_past_t *past)
{
    size_t nbits = (size_t)((gap + 7) / 8);
    if (o->p) {
        uint8_t *b = o->p + o->n;
        memset(b, 0, nbits);
        for (uint64_t i = 0; i < gap; i++) {
            bool seen = past ? (past->bits >> i) & 1 : s_seen(src, src->acked + 1 + i);
            if (seen)
                b[i >> 3] |= (uint8_t)(1u << (i & 7));
        }
    }
    o->n += nbits;
}

static void
s_put_state(s_out_t *o, const dedup_source_t *src)
{
    uint64_t gap = src->high - src->acked;
    if (o->p)
        o->p[0] = S_STATE_VERSION;
    o->n = 1;
    s_put_varint(o, src->epoch);
    s_put_varint(o, src->high);
    s_put_varint(o, gap);
    s_put_bits(o, gap, src, NULL);
    s_put_hole(o, &src->hole);
    s_put_varint(o, src->floor);
    s_put_varint(o, src->npast);
    for (uint32_t i = 0; i < src->npast; i++) {
        const s_past_t *p = &src->past[i];
        uint64_t pgap = p->high - p->acked;
        s_put_varint(o, p->epoch);
        s_put_varint(o, p->high);
        s_put_varint(o, pgap);
        if (pgap <= S_PAST_BITS_MAX)
            s_put_bits(o, pgap, src, p);
        s_put_hole(o, &p->hole);
    }
}

size_t
dedup_source_export(const dedup_source_t *src, void *buf, size_t cap)
{
    assert(src);
    assert(src->acked <= src->high && src->high - src->acked <= src->mask + 1);
    s_out_t o = {NULL, 0};
    s_put_state(&o, src);
    size_t need = o.n;
    if (need > cap)
        return need;
    o = (s_out_t){buf, 0};
    s_put_state(&o, src);
    assert(o.n == need);
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
        src->round = self->export_round;
        fn(ctx, src->id, self->scratch, len);
        src = next;
    }
}

/* Reads `gap` bits (ceil(gap/8) bytes) at *p and checks them as the format
   says: seq acked+1 unseen, seq high seen, padding 0. *bits gets them when
   gap <= 64. 0 or -1. */
static int
s_get_bits(const uint8_t **p, const uint8_t *end, uint64_t gap, const uint8_t **at,
           uint64_t *bits)
{
    size_t nbits = (size_t)((gap + 7) / 8);
    if ((size_t)(end - *p) < nbits)
        return -1;
    const uint8_t *b = *p;
    if (gap > 0) {
        if ((b[0] & 1) != 0)                                /* acked+1 unseen */
            return -1;
        if (!((b[(gap - 1) >> 3] >> ((gap - 1) & 7)) & 1))  /* high seen */
            return -1;
        if ((gap & 7) != 0 && (b[nbits - 1] >> (gap & 7)) != 0) /* padding */
            return -1;
    }
    if (bits) {
        *bits = 0;
        for (uint64_t i = 0; i < gap && i < 64; i++)
            if ((b[i >> 3] >> (i & 7)) & 1)
                *bits |= 1ULL << i;
    }
    if (at)
        *at = b;
    *p += nbits;
    return 0;
}

/* Reads a hole (varint lo; when lo != 0, varint hi - lo and u8 exact 0 or
   1) and checks it lies in 1..acked. 0 or -1. */
static int
s_get_hole(const uint8_t **p, const uint8_t *end, uint64_t acked, s_hole_t *h)
{
    uint64_t span = 0;
    *h = (s_hole_t){0, 0, false};
    if (fp_varint_get(p, end, &h->lo) != 0)
        return -1;
    if (h->lo == 0)
        return 0;
    if (fp_varint_get(p, end, &span) != 0 || span > acked || h->lo > acked - span ||
        *p >= end || **p > 1)
        return -1;
    h->exact = *(*p)++ == 1;
    h->hi = h->lo + span;
    return 0;
}

int
dedup_restore(dedup_t *self, uint64_t source_id, const void *state, size_t len)
{
    assert(self);
    if (!state || len < 1)
        return -1;
    const uint8_t *p = state, *end = p + len, *bits = NULL;
    uint64_t epoch, high, gap, floor, npast = 0;
    s_hole_t hole = {0, 0, false};
    uint8_t version = *p++;
    if (version != 1 && version != S_STATE_VERSION)
        return -1;
    if (fp_varint_get(&p, end, &epoch) != 0 || fp_varint_get(&p, end, &high) != 0
        || fp_varint_get(&p, end, &gap) != 0)
        return -1;
    /* Damage checks: gap fits the window (and so the bits are few), every
       field is exactly there, and they obey the invariants of this file. */
    if (gap > high || gap > self->window || s_get_bits(&p, end, gap, &bits, NULL) != 0)
        return -1;
    uint64_t acked = high - gap;
    s_past_t past[DEDUP_PAST_EPOCHS];
    if (version == 1) {
        /* Version 1 did not say whether the window slid past unseen seqs:
           those below the window stay unknown (too_old), as they were. */
        if (high > self->window)
            hole = (s_hole_t){1, high - self->window, false};
        floor = epoch;
    } else {
        if (s_get_hole(&p, end, acked, &hole) != 0 ||
            fp_varint_get(&p, end, &floor) != 0 || floor > epoch ||
            fp_varint_get(&p, end, &npast) != 0 || npast > DEDUP_PAST_EPOCHS)
            return -1;
        for (uint64_t k = 0; k < npast; k++) {
            s_past_t *q = &past[k];
            uint64_t pgap;
            memset(q, 0, sizeof *q);
            if (fp_varint_get(&p, end, &q->epoch) != 0 || fp_varint_get(&p, end, &q->high) != 0 ||
                fp_varint_get(&p, end, &pgap) != 0)
                return -1;
            if (q->epoch >= (k ? past[k - 1].epoch : epoch) || q->epoch < floor ||
                q->high == 0 || pgap > q->high)
                return -1;
            q->acked = q->high - pgap;
            if (pgap <= S_PAST_BITS_MAX && s_get_bits(&p, end, pgap, NULL, &q->bits) != 0)
                return -1;
            if (s_get_hole(&p, end, q->acked, &q->hole) != 0)
                return -1;
        }
    }
    if (p != end)
        return -1;

    uint64_t i = s_find(self, source_id);
    dedup_source_t *src = self->slots[i];
    if (!src) {
        if (s_make_room(self) != 0)
            return -1;
        i = s_find(self, source_id);
        if ((self->count + 1) * 2 > self->cap) {
            if (s_grow(self) != 0)
                return -1;
            i = s_find(self, source_id);
        }
        src = s_add(self, i, source_id);
        if (!src)
            return -1;
    }
    memset(src->bits, 0, (size_t)self->words * sizeof src->bits[0]);
    src->round = 0; /* what is restored is committed */
    src->epoch = epoch;
    src->high = high;
    src->acked = acked;
    src->hole = hole;
    src->floor = floor;
    src->npast = (uint32_t)npast;
    memcpy(src->past, past, (size_t)npast * sizeof past[0]);
    /* Only (acked, high] lives in the bitmap (see the invariants). */
    for (uint64_t k = 0; k < gap; k++)
        if ((bits[k >> 3] >> (k & 7)) & 1) {
            uint64_t slot = (acked + 1 + k) & self->mask;
            src->bits[slot >> 6] |= 1ULL << (slot & 63);
        }
    return 0;
}
