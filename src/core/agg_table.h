/*  agg_table.h - the aggregation's open-key table (private to agg*.c and
    its unit test; agg.h is the API).

    Maps an aggregation key (kind, symbol ids, period) to an entry of one
    pool. The table decides nothing about sums or checkpoints: it stores,
    finds and frees entries by key, grows without a stall, and hands out
    stable entry indices. agg.c (the semantics) and agg_state.c (export and
    import) use the entry's other fields.

      - pool: every key is an entry in one array; an entry's index is stable
        for its life (freed indices go to a free list), so links between
        entries are indices and survive growth. Index 0 is never used: 0 is
        "none" (AGG_NONE) in every link. Entries are 64-byte aligned, with
        what agg_add touches per record in their first two cache lines. A
        free entry has key.kind 0.
      - slots: open addressing, linear probing, power-of-two size, at most
        70% full, backward-shift deletion. A slot holds (low 32 bits of the
        key's table hash, entry index); the home slot is tag & mask.
      - growth is incremental: a full table becomes `old` and a table twice
        the size takes new keys; every agg_tab_reserve moves a bounded run
        of old slots over and leaves AGG_MOVED behind, which keeps old probe
        chains intact. Lookups try the new table, then the old one. A whole
        rehash at once stalled the shard for 13 ms at 183,000 keys and 20 ms
        at 367,000 (the p99 spikes of the latency benchmark).
      - the table hash (agg_key_hash) is process-local: symbol ids are not
        stable across restarts, and nothing persists it.
      - pool and slots of 2 MiB or more are their own mappings, so the pool
        grows by mremap, not by copying (agg_table.c).

    Hot path: the lookups, the prefetches and the insert are static inline
    here, so agg_add compiles them into its loop as when they were one
    file; growth, deletion and memory are in agg_table.c.

    Invariants: nkeys entries are live, each in exactly one slot of `slots`
    or of `old` (never both); at least one slot of every table is empty
    (probes end); pool indices stay below 2^31 (AGG_MOVED is never one).
    Thread contract: one agg_tab_t belongs to its agg_t's thread; no locks.
*/
#ifndef FP_AGG_TABLE_H
#define FP_AGG_TABLE_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "domain.h"
#include "intern.h"

#define AGG_NONE 0u            /* "no entry" in every index link */
#define AGG_MOVED UINT32_MAX   /* old-table slot whose entry moved to the new table */
#define AGG_KIND_OP 4u         /* the operation head's key kind (no checkpoint kind) */
#define AGG_LINEAGE 4          /* lineage ranges kept per entry (<= FP_LINEAGE_MAX) */
#define AGG_PERIOD_BIAS (1u << 29) /* period id = start in minutes since 1970 + this */

_Static_assert(AGG_LINEAGE <= FP_LINEAGE_MAX, "lineage must fit a checkpoint");

/* Key field positions in agg_key_t.sym. */
enum { AGG_F_PLANT = 0, AGG_F_ORDER, AGG_F_OPERATION, AGG_F_MATERIAL, AGG_F_LOT, AGG_F_UNIT,
       AGG_FIELDS };
#define AGG_F_REASON AGG_F_MATERIAL /* scrap keys keep the reason in the 4th field */

/* An aggregation key as symbol ids and its period. All uint32_t: no
   padding, hashed and compared as words. */
typedef struct {
    uint32_t kind;            /* FP_CK_*, or AGG_KIND_OP for an operation head; 0 = free */
    uint32_t sym[AGG_FIELDS]; /* unused fields are INTERN_EMPTY */
    uint32_t period;          /* period id; 0 for heads and without periods */
} agg_key_t;

_Static_assert(sizeof(agg_key_t) == 32 && offsetof(agg_key_t, sym) == 4 &&
                   offsetof(agg_key_t, period) == 28,
               "agg_key_eq and agg_key_hash read agg_key_t as words");

/* One pool entry. The table owns key and free_next; the other fields are
   the aggregation's (agg.c, agg_state.c) and are zero when an entry is
   inserted. */
typedef struct {
    /* Hot: the first two cache lines (the pool is 64-byte aligned) hold what
       agg_add reads and writes per record, so an update touches two
       prefetched lines: key, sums, count, times, flags, the first lineage
       range. */
    agg_key_t key;
    uint32_t op;          /* the operation entry (itself for a head) */
    uint8_t flags;        /* AGG_E_* (agg_internal.h) */
    uint8_t nlineage;     /* ranges used, 0..AGG_LINEAGE: lineage0, then lx's */
    bool truncated;       /* a pending record's (source, epoch) found no lineage slot */
    int64_t sum0;         /* pending: completion yield | consumption quantity | scrap parts */
    int64_t sum1;         /* pending: completion scrap (parts); 0 for other kinds */
    uint64_t count;       /* pending records */
    int64_t first_ns, last_ns; /* pending records' event times, ns since Unix epoch */
    uint32_t list_prev, list_next; /* DIRTY or LATE list */
    uint32_t child_next;  /* next child of the same operation */
    uint32_t lx;          /* lineage ranges 2..AGG_LINEAGE: a block of the agg_t's
                             lineage pool (agg.c), AGG_NONE until a second
                             (source, epoch) contributes; kept until freed */
    fp_seq_range_t lineage0; /* the first range */
    /* Cold: creation, emission, close, release, export. */
    uint32_t exp_prev, exp_next; /* EXPORT list (while tracking) */
    uint32_t free_next;     /* the table's free list, while free */
    union {
        struct { /* checkpoint keys (kinds FP_CK_*) */
            uint64_t khash_lo, khash_hi; /* XXH3-128 of kind + key strings (+ period): stable, for event_id */
            uint64_t checkpoint_no; /* of the last emitted checkpoint; 0 = none yet */
            uint32_t last_flush;    /* agg_flush generation of its last checkpoint */
        };
        struct { /* operation heads (AGG_KIND_OP) */
            int64_t closed_at;      /* agg_t's now when it closed */
            uint64_t close_seq;     /* closing order (the FIFO's order) */
            uint32_t first_child;
            uint32_t line, station; /* symbols, first record's */
            uint32_t cpt;           /* closed: its compact head (agg_compact.h) */
            uint32_t cand_prev, cand_next; /* closed: the list of full heads to compact */
            uint32_t cand_gen;      /* on it: the agg_flush generation it joined (or was put back) in */
        };
    };
} __attribute__((aligned(64))) agg_entry_t;

_Static_assert(offsetof(agg_entry_t, lineage0) + sizeof(fp_seq_range_t) <= 128,
               "the hot fields and the first lineage range fit the first two cache lines");
_Static_assert(sizeof(agg_entry_t) == 192, "an entry is three cache lines");

typedef struct {
    uint32_t tag; /* low 32 bits of the entry's hash */
    uint32_t idx; /* entry index; AGG_NONE = empty */
} agg_slot_t;

typedef struct {
    agg_entry_t *pool;    /* [pool_cap] */
    uint32_t pool_cap, pool_used, pool_free, pool_nfree;
    agg_slot_t *slots;    /* [mask + 1] */
    uint64_t mask;
    agg_slot_t *old;      /* [old_mask + 1] while growing, else NULL */
    uint64_t old_mask;
    uint64_t migrated;    /* old slots below this index are AGG_NONE or AGG_MOVED */
    uint64_t created, created_migrated; /* keys inserted ever; at the last migration step */
    agg_slot_t *next;     /* the table the next growth will use, being faulted in */
    uint64_t next_cap, next_touched; /* its slots; bytes of it touched so far */
    uint64_t nkeys;       /* live entries */
} agg_tab_t;

/* Big arrays (agg_table.c): zeroed, 64-byte aligned; 2 MiB or more are
   mappings of their own that grow by mremap (no copy, no second copy
   resident while growing); agg_big_grow returns NULL on failure (p is
   then untouched); agg_big_free is NULL-safe and takes the size allocated. */
void *agg_big_alloc(size_t size);
void *agg_big_grow(void *p, size_t old, size_t size);
void agg_big_free(void *p, size_t size);

/* Sets up an empty table (1024 slots, 256 entries). 0, or -1 out of memory
   (then agg_tab_fini is still safe). */
int agg_tab_init(agg_tab_t *t);

/* Frees the table's memory; safe on a zeroed or failed table. */
void agg_tab_fini(agg_tab_t *t);

/* Makes room for `more` new keys, so that that many agg_tab_insert calls
   neither grow nor move the pool: load <= 70% (old and new tables
   together), free entries. Also moves a bounded step of a growth in
   progress. -1 on out of memory (what exists stays valid; agg_tab_room
   then tells what still fits). */
int agg_tab_reserve(agg_tab_t *t, uint64_t more);

/* Frees live entry idx: its slot (backward shift, or AGG_MOVED in the old
   table) and its index (to the free list; key.kind becomes 0). */
void agg_tab_remove(agg_tab_t *t, uint32_t idx);

/* 64x64 -> 128-bit multiply, halves folded (wyhash's "mum"). */
static inline uint64_t agg_mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* The table hash of a key. Symbol ids are not stable across restarts, so
   neither is this (nothing persists it): any well-mixed function will do,
   and three multiplies cost a third of XXH3 on 32 bytes. A mum with a zero
   factor would lose its other input: the constants XORed in cannot equal
   any word of a key (kind <= 4, symbol ids < INTERN_ID_LIMIT = 2^30 and
   period ids < 2^30 leave bits 62-63 of every word clear, each constant
   has bit 63 set). */
static inline uint64_t agg_key_hash(const agg_key_t *k)
{
    /* By field, not as 8-byte loads: the caller has just stored the key
       field by field, and a load spanning two stores is not forwarded (a
       stall of some 20 cycles). */
    uint64_t w0 = k->kind | (uint64_t)k->sym[0] << 32;
    uint64_t w1 = k->sym[1] | (uint64_t)k->sym[2] << 32;
    uint64_t w2 = k->sym[3] | (uint64_t)k->sym[4] << 32;
    uint64_t w3 = k->sym[5] | (uint64_t)k->period << 32;
    _Static_assert(INTERN_ID_LIMIT <= (1u << 30) && AGG_PERIOD_BIAS * 2 <= (1u << 30),
                   "see above");
    uint64_t h = agg_mum(w0 ^ 0xa0761d6478bd642full, w1 ^ 0xe7037ed1a0b428dbull) ^
                 agg_mum(w2 ^ 0x8ebc6af09c88c6e3ull, w3 ^ 0x889965cc75374cc3ull);
    return agg_mum(h ^ 0x9d8e4e27c47d124full, 0xeb44accab455d165ull);
}

static inline bool agg_key_eq(const agg_key_t *a, const agg_key_t *b)
{
    /* in words, not memcmp: gcc calls the library for 32 bytes */
    uint64_t a0, a1, a2, a3, b0, b1, b2, b3;
    memcpy(&a0, &a->kind, 8);
    memcpy(&a1, &a->sym[1], 8);
    memcpy(&a2, &a->sym[3], 8);
    memcpy(&a3, &a->sym[5], 8); /* sym[5] and period */
    memcpy(&b0, &b->kind, 8);
    memcpy(&b1, &b->sym[1], 8);
    memcpy(&b2, &b->sym[3], 8);
    memcpy(&b3, &b->sym[5], 8);
    return ((a0 ^ b0) | (a1 ^ b1) | (a2 ^ b2) | (a3 ^ b3)) == 0;
}

/* The slot index of key k (hash h) in table s (mask), or -1. */
static inline int64_t agg_tab_probe(const agg_tab_t *t, const agg_slot_t *s, uint64_t mask,
                                    const agg_key_t *k, uint64_t h)
{
    uint32_t tag = (uint32_t)h;
    uint64_t i = h & mask;
    for (;;) {
        agg_slot_t x = s[i];
        if (x.idx == AGG_NONE)
            return -1;
        if (x.tag == tag && x.idx != AGG_MOVED && agg_key_eq(&t->pool[x.idx].key, k))
            return (int64_t)i;
        i = (i + 1) & mask;
    }
}

/* The entry of key k (hash h = agg_key_hash(k)), or AGG_NONE. */
static inline uint32_t agg_tab_find(const agg_tab_t *t, const agg_key_t *k, uint64_t h)
{
    int64_t i = agg_tab_probe(t, t->slots, t->mask, k, h);
    if (i >= 0)
        return t->slots[i].idx;
    if (t->old && (i = agg_tab_probe(t, t->old, t->old_mask, k, h)) >= 0)
        return t->old[i].idx;
    return AGG_NONE;
}

/* agg_tab_find, trying first the entry hint (from agg_tab_prefetch; may be
   stale or a tag collision: the key decides). */
static inline uint32_t agg_tab_find_hint(const agg_tab_t *t, const agg_key_t *k, uint64_t h,
                                         uint32_t hint)
{
    if (hint != AGG_NONE && agg_key_eq(&t->pool[hint].key, k))
        return hint;
    return agg_tab_find(t, k, h);
}

/* Prefetches the home slot of hash h (in both tables while growing). */
static inline void agg_tab_prefetch_slot(const agg_tab_t *t, uint64_t h)
{
    __builtin_prefetch(&t->slots[h & t->mask]);
    if (t->old) /* growing: the key may not have moved yet */
        __builtin_prefetch(&t->old[h & t->old_mask]);
}

static inline uint32_t agg_tab_prefetch_in(const agg_tab_t *t, const agg_slot_t *s,
                                           uint64_t mask, uint64_t h)
{
    uint32_t tag = (uint32_t)h;
    uint64_t i = h & mask;
    for (;;) {
        agg_slot_t x = s[i];
        if (x.idx == AGG_NONE)
            return AGG_NONE;
        if (x.tag == tag && x.idx != AGG_MOVED) {
            const char *e = (const char *)&t->pool[x.idx];
            __builtin_prefetch(e);
            __builtin_prefetch(e + 64);
            return x.idx;
        }
        i = (i + 1) & mask;
    }
}

/* The slots of hash h are (being) fetched: prefetches the hot lines of the
   first entry whose tag matches and returns it as a hint (AGG_NONE: none). */
static inline uint32_t agg_tab_prefetch(const agg_tab_t *t, uint64_t h)
{
    uint32_t idx = agg_tab_prefetch_in(t, t->slots, t->mask, h);
    if (idx == AGG_NONE && t->old)
        idx = agg_tab_prefetch_in(t, t->old, t->old_mask, h);
    return idx;
}

/* Whether one more key fits in what agg_tab_reserve set aside (never grows). */
static inline bool agg_tab_room(const agg_tab_t *t)
{
    bool pool_ok = t->pool_nfree > 0 || t->pool_used < t->pool_cap;
    /* Keep at least one empty slot whatever happens, or probes never end. */
    return pool_ok && t->nkeys + 2 <= t->mask + 1;
}

static inline void agg_tab_slot_put(agg_slot_t *slots, uint64_t mask, agg_slot_t s)
{
    uint64_t i = s.tag & mask;
    while (slots[i].idx != AGG_NONE)
        i = (i + 1) & mask;
    slots[i] = s;
}

/* Inserts key k (hash h; not in the table: the caller looked) and returns
   its entry, zeroed but for the key. The caller checked agg_tab_room. */
static inline uint32_t agg_tab_insert(agg_tab_t *t, const agg_key_t *k, uint64_t h)
{
    assert(agg_tab_room(t) && k->kind != 0);
    uint32_t idx;
    if (t->pool_free != AGG_NONE) {
        idx = t->pool_free;
        t->pool_free = t->pool[idx].free_next;
        t->pool_nfree--;
    } else {
        idx = t->pool_used++;
    }
    agg_entry_t *e = &t->pool[idx];
    memset(e, 0, sizeof *e);
    e->key = *k;
    agg_tab_slot_put(t->slots, t->mask, (agg_slot_t){.tag = (uint32_t)h, .idx = idx});
    t->nkeys++;
    t->created++;
    return idx;
}

#endif
