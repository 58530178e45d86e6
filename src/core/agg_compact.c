/*  agg_compact.c - the store of closed keys at rest (agg_compact.h).
*/
#include "agg_compact.h"

#include <string.h>

#define S_INITIAL_SLOTS 1024u
#define S_INITIAL_POOL 256u

void agg_cs_init(agg_cstore_t *s)
{
    memset(s, 0, sizeof *s);
}

void agg_cs_fini(agg_cstore_t *s)
{
    agg_big_free(s->pool, (size_t)s->pool_cap * sizeof *s->pool);
    agg_big_free(s->heads, (size_t)s->heads_cap * sizeof *s->heads);
    agg_big_free(s->slots, s->slots ? (size_t)(s->mask + 1) * sizeof *s->slots : 0);
    memset(s, 0, sizeof *s);
}

/* Rehashes every entry into a table of ncap slots; -1 out of memory. */
static int s_rehash(agg_cstore_t *s, uint64_t ncap)
{
    agg_slot_t *n = agg_big_alloc(ncap * sizeof *n);
    if (!n)
        return -1;
    if (s->slots)
        for (uint64_t i = 0; i <= s->mask; i++)
            if (s->slots[i].idx != AGG_NONE)
                agg_tab_slot_put(n, ncap - 1, s->slots[i]);
    agg_big_free(s->slots, s->slots ? (size_t)(s->mask + 1) * sizeof *s->slots : 0);
    s->slots = n;
    s->mask = ncap - 1;
    return 0;
}

/* Grows array *arr of *cap elements of `elem` bytes, *used in use (index 0
   never) and nfree on its free list, until `more` inserts fit; -1 out of
   memory (unchanged). */
static int s_room(void **arr, uint32_t *cap, uint32_t *used, size_t elem, uint64_t nfree,
                  uint64_t more)
{
    if (*used == 0)
        *used = 1; /* index 0 is AGG_NONE */
    if (nfree + (*cap > *used ? *cap - *used : 0) >= more)
        return 0;
    uint64_t ncap = *cap ? *cap : S_INITIAL_POOL;
    while (nfree + ncap - *used < more)
        ncap *= 2;
    if (ncap > (1ull << 31))
        return -1;
    void *p = *arr ? agg_big_grow(*arr, (size_t)*cap * elem, ncap * elem)
                   : agg_big_alloc(ncap * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = (uint32_t)ncap;
    return 0;
}

int agg_cs_reserve(agg_cstore_t *s, uint64_t more)
{
    uint64_t want = s->n + more, cap = s->slots ? s->mask + 1 : 0;
    if (want * 10 > cap * 7) {
        uint64_t ncap = cap ? cap : S_INITIAL_SLOTS;
        while (want * 10 > ncap * 7)
            ncap *= 2;
        if (ncap > (1ull << 32) || s_rehash(s, ncap) != 0)
            return -1;
    }
    /* free entries and head parts: their free lists, then the tails */
    uint64_t nfree = s->pool_nfree, hfree = s->heads_nfree;
    void *pool = s->pool, *heads = s->heads;
    int rc = s_room(&pool, &s->pool_cap, &s->pool_used, sizeof *s->pool, nfree, more);
    s->pool = pool;
    if (rc == 0)
        rc = s_room(&heads, &s->heads_cap, &s->heads_used, sizeof *s->heads, hfree, more);
    s->heads = heads;
    return rc;
}

uint32_t agg_cs_find(const agg_cstore_t *s, uint64_t lo, uint64_t hi)
{
    if (!s->slots)
        return AGG_NONE;
    uint32_t tag = (uint32_t)lo;
    for (uint64_t i = lo & s->mask;; i = (i + 1) & s->mask) {
        agg_slot_t x = s->slots[i];
        if (x.idx == AGG_NONE)
            return AGG_NONE;
        if (x.tag == tag && s->pool[x.idx].lo == lo && s->pool[x.idx].hi == hi)
            return x.idx;
    }
}

uint32_t agg_cs_insert(agg_cstore_t *s, uint64_t lo, uint64_t hi, uint8_t kind)
{
    assert(kind != 0 && (s->n + 1) * 10 <= (s->mask + 1) * 7);
    uint32_t idx;
    if (s->pool_free != AGG_NONE) {
        idx = s->pool_free;
        s->pool_free = s->pool[idx].free_next;
        s->pool_nfree--;
    } else {
        assert(s->pool_used < s->pool_cap);
        idx = s->pool_used++;
    }
    agg_cpt_t *c = &s->pool[idx];
    memset(c, 0, sizeof *c);
    c->lo = lo;
    c->hi = hi;
    c->kind = kind;
    if (kind == AGG_KIND_OP) {
        uint32_t h;
        if (s->heads_free != AGG_NONE) {
            h = s->heads_free;
            s->heads_free = s->heads[h].first_child;
            s->heads_nfree--;
        } else {
            assert(s->heads_used < s->heads_cap);
            h = s->heads_used++;
        }
        memset(&s->heads[h], 0, sizeof s->heads[h]);
        c->head = h;
    }
    agg_tab_slot_put(s->slots, s->mask, (agg_slot_t){.tag = (uint32_t)lo, .idx = idx});
    s->n++;
    return idx;
}

void agg_cs_remove(agg_cstore_t *s, uint32_t idx)
{
    agg_cpt_t *c = &s->pool[idx];
    assert(idx != AGG_NONE && c->kind != 0);
    uint64_t mask = s->mask, i = c->lo & mask;
    while (s->slots[i].idx != idx) {
        assert(s->slots[i].idx != AGG_NONE);
        i = (i + 1) & mask;
    }
    for (uint64_t j = i;;) {
        j = (j + 1) & mask;
        if (s->slots[j].idx == AGG_NONE)
            break;
        uint64_t home = s->slots[j].tag & mask;
        if (((j - home) & mask) < ((j - i) & mask))
            continue; /* its home lies cyclically in (i, j]: it may stay */
        s->slots[i] = s->slots[j];
        i = j;
    }
    s->slots[i] = (agg_slot_t){0, AGG_NONE};
    if (c->kind == AGG_KIND_OP) {
        s->heads[c->head].first_child = s->heads_free;
        s->heads_free = c->head;
        s->heads_nfree++;
    }
    c->kind = 0;
    c->free_next = s->pool_free;
    s->pool_free = idx;
    s->pool_nfree++;
    s->n--;
}
