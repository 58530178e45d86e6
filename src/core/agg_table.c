/*  agg_table.c - the open-key table's growth, deletion and memory
    (agg_table.h; the lookups are inline there).
*/
#include "agg_table.h"

#include <stdlib.h>
#include <sys/mman.h>

#define S_INITIAL_SLOTS 1024u
#define S_INITIAL_POOL 256u

/* ---- big arrays ---- */

/* Arrays of S_BIG bytes or more are mappings of their own, 2 MiB-aligned;
   smaller ones come from malloc. Zeroed, 64-byte aligned; a grown small
   array is a new one (no realloc: it would lose the alignment).

   No MADV_HUGEPAGE. It was tried: on this VM (defrag=madvise) a huge page's
   first touch compacts memory in the faulting thread, 0.5 GB/s against
   2.3 GB/s for 4 KiB pages, and the shard stalled on it as keys arrived
   (3 % of all CPU samples in the max-throughput benchmark). Upserts gained
   nothing from it (bench_micro, 947,093 keys: 91.6-100.3 ns either way):
   agg_add prefetches slots and entries a chunk ahead, and the page walks
   overlap with that. */
#define S_BIG (2u << 20)

void *agg_big_alloc(size_t size)
{
    if (size < S_BIG) {
        void *p = aligned_alloc(64, (size + 63) & ~(size_t)63);
        if (p)
            memset(p, 0, size);
        return p;
    }
    size_t len = (size + S_BIG - 1) & ~(size_t)(S_BIG - 1);
    uint8_t *m = mmap(NULL, len + S_BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    /* keep the 2 MiB-aligned len bytes, unmap the slack on both sides */
    uint8_t *p = (uint8_t *)(((uintptr_t)m + S_BIG - 1) & ~(uintptr_t)(S_BIG - 1));
    if (p > m)
        munmap(m, (size_t)(p - m));
    if (p + len < m + len + S_BIG)
        munmap(p + len, (size_t)(m + len + S_BIG - (p + len)));
    return p;
}

/* Frees what agg_big_alloc(size) returned; NULL-safe. */
void agg_big_free(void *p, size_t size)
{
    if (!p)
        return;
    if (size < S_BIG)
        free(p);
    else
        munmap(p, (size + S_BIG - 1) & ~(size_t)(S_BIG - 1));
}

/* Grows an array from agg_big_alloc(old) to new bytes, keeping its content;
   the grown part is zero. A big array moves by remapping its pages
   (mremap), not by copying them: growing a pool of a million entries would
   otherwise copy and fault in hundreds of MiB at once and stall the shard.
   Returns NULL on failure (the old array is then untouched). */
void *agg_big_grow(void *p, size_t old, size_t size)
{
    if (old >= S_BIG) {
        size_t olen = (old + S_BIG - 1) & ~(size_t)(S_BIG - 1);
        size_t nlen = (size + S_BIG - 1) & ~(size_t)(S_BIG - 1);
        void *n = mremap(p, olen, nlen, MREMAP_MAYMOVE);
        if (n == MAP_FAILED)
            return NULL;
        return n;
    }
    void *n = agg_big_alloc(size);
    if (!n)
        return NULL;
    memcpy(n, p, old);
    agg_big_free(p, old);
    return n;
}

/* ---- life ---- */

int agg_tab_init(agg_tab_t *t)
{
    memset(t, 0, sizeof *t);
    t->pool_cap = S_INITIAL_POOL;
    t->pool = agg_big_alloc(t->pool_cap * sizeof *t->pool);
    t->slots = agg_big_alloc(S_INITIAL_SLOTS * sizeof *t->slots);
    t->pool_used = 1; /* index 0 is AGG_NONE */
    t->mask = S_INITIAL_SLOTS - 1;
    return t->pool && t->slots ? 0 : -1;
}

void agg_tab_fini(agg_tab_t *t)
{
    agg_big_free(t->pool, (size_t)t->pool_cap * sizeof *t->pool);
    agg_big_free(t->slots, (size_t)(t->mask + 1) * sizeof *t->slots);
    agg_big_free(t->old, (size_t)(t->old_mask + 1) * sizeof *t->old);
    agg_big_free(t->next, (size_t)t->next_cap * sizeof *t->next);
    memset(t, 0, sizeof *t);
}

/* ---- deletion ---- */

void agg_tab_remove(agg_tab_t *t, uint32_t idx)
{
    agg_entry_t *e = &t->pool[idx];
    assert(idx != AGG_NONE && e->key.kind != 0);
    uint64_t h = agg_key_hash(&e->key);
    bool done = false;
    if (t->old) {
        /* Not moved yet: leave AGG_MOVED (no shifting in the old table). */
        int64_t o = agg_tab_probe(t, t->old, t->old_mask, &e->key, h);
        if (o >= 0) {
            assert(t->old[o].idx == idx);
            t->old[o].idx = AGG_MOVED;
            done = true;
        }
    }
    if (!done) {
        uint64_t mask = t->mask;
        uint64_t i = h & mask;
        while (t->slots[i].idx != idx) {
            assert(t->slots[i].idx != AGG_NONE); /* a live entry is always in a table */
            i = (i + 1) & mask;
        }
        uint64_t j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (t->slots[j].idx == AGG_NONE)
                break;
            uint64_t home = t->slots[j].tag & mask;
            /* The slot at j may stay if its home lies cyclically in (i, j]. */
            if (((j - home) & mask) < ((j - i) & mask))
                continue;
            t->slots[i] = t->slots[j];
            i = j;
        }
        t->slots[i] = (agg_slot_t){0, AGG_NONE};
    }
    e->key.kind = 0;
    e->free_next = t->pool_free;
    t->pool_free = idx;
    t->pool_nfree++;
    t->nkeys--;
}

/* ---- growth ---- */

/* Moves up to n old slots to the new table; frees the old table when it
   is all moved. */
static void s_migrate(agg_tab_t *t, uint64_t n)
{
    if (!t->old)
        return;
    uint64_t end = t->old_mask + 1;
    uint64_t stop = end - t->migrated < n ? end : t->migrated + n;
    for (uint64_t i = t->migrated; i < stop; i++) {
        agg_slot_t s = t->old[i];
        if (s.idx != AGG_NONE && s.idx != AGG_MOVED) {
            agg_tab_slot_put(t->slots, t->mask, s);
            t->old[i].idx = AGG_MOVED;
        }
    }
    t->migrated = stop;
    if (stop == end) {
        agg_big_free(t->old, end * sizeof *t->old);
        t->old = NULL;
        t->old_mask = 0;
        t->migrated = 0;
    }
}

int agg_tab_reserve(agg_tab_t *t, uint64_t more)
{
    /* A bounded step of a growth in progress: 64 old slots, and four more
       per key created since the last step. A new table starts at most 35%
       full and takes new keys up to 70%, so the old one is empty long
       before the next growth (should it not be, it is finished at once
       below). Paced by the keys actually created, not by `more` (every key
       a chunk could create, some 40 times as many): moving each old slot
       is a cache miss in the new table, and moving 2,048 per chunk made
       the shard a third as fast for the 20 ms a growth at 367,000 keys
       took, long enough to back up the pipeline (a 15-20 ms p99 spike in
       the latency benchmark). */
    s_migrate(t, 64 + 4 * (t->created - t->created_migrated));
    t->created_migrated = t->created;
    uint64_t want = t->nkeys + more;
    uint64_t cap = t->mask + 1;
    /* From 60% on, the next table is mapped and faulted in a few pages per
       step: the first touch of a page costs some microseconds here (a VM),
       and a fresh 8 MiB table took its 2,048 faults in the first chunks
       after a growth, all at once. Not earlier: until the growth it is
       memory held ahead (32 MiB at a million keys). */
    if (!t->next && !t->old && t->nkeys * 10 > cap * 6 && cap * 2 <= (1ull << 32) &&
        cap * 2 * sizeof *t->slots >= S_BIG) {
        t->next = agg_big_alloc(cap * 2 * sizeof *t->next);
        t->next_cap = t->next ? cap * 2 : 0;
        t->next_touched = 0;
    }
    if (t->next) {
        size_t bytes = t->next_cap * sizeof *t->next;
        for (int k = 0; k < 4 && t->next_touched < bytes; k++, t->next_touched += 4096)
            ((volatile uint8_t *)t->next)[t->next_touched] = 0;
    }
    if (want * 10 > cap * 7) {
        uint64_t ncap = cap;
        while (want * 10 > ncap * 7)
            ncap *= 2;
        if (ncap > (1ull << 32)) /* tags are 32 bits */
            return -1;
        /* The table faulted in ahead (zero: only zeros were written), unless
           a chunk of many new keys grew past it at once. */
        agg_slot_t *n = t->next_cap == ncap ? t->next : NULL;
        if (!n) {
            agg_big_free(t->next, (size_t)t->next_cap * sizeof *t->next);
            n = agg_big_alloc(ncap * sizeof *n);
        }
        t->next = NULL;
        t->next_cap = 0;
        if (!n)
            return -1;
        s_migrate(t, UINT64_MAX); /* the previous growth, if unfinished */
        t->old = t->slots;
        t->old_mask = t->mask;
        t->migrated = 0;
        t->slots = n;
        t->mask = ncap - 1;
    }
    uint64_t avail = (uint64_t)(t->pool_cap - t->pool_used) + t->pool_nfree;
    if (avail < more) {
        uint64_t ncap = t->pool_cap;
        while ((ncap - t->pool_used) + t->pool_nfree < more)
            ncap *= 2;
        if (ncap > (1ull << 31)) /* indices < 2^31: AGG_MOVED is never one */
            return -1;
        agg_entry_t *n = agg_big_grow(t->pool, (size_t)t->pool_cap * sizeof *n, ncap * sizeof *n);
        if (!n)
            return -1;
        t->pool = n;
        t->pool_cap = (uint32_t)ncap;
    }
    return 0;
}
