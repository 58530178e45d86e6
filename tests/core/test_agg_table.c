/*  test_agg_table.c - the aggregation's open-key table (agg_table.h) on its
    own: insert, find, remove with backward shift, the free list, room and
    reserve, and lookups and removals while an incremental growth is in
    progress, each against a plain array model; and the compact store of
    closed keys (agg_compact.h) alike. */
#include "agg_table.h"

#include <stdlib.h>

#include "agg_compact.h"

#include "test.h"

/* A key made from n: completion-like, distinct for distinct n. */
static agg_key_t s_key(uint32_t n)
{
    agg_key_t k = {.kind = FP_CK_COMPLETION, .sym = {n & 0xffff, n >> 16, 7, 0, 0, 0},
                   .period = n % 3};
    return k;
}

static uint32_t s_put(agg_tab_t *t, uint32_t n)
{
    agg_key_t k = s_key(n);
    uint64_t h = agg_key_hash(&k);
    ASSERT_EQ(agg_tab_find(t, &k, h), AGG_NONE);
    ASSERT(agg_tab_room(t));
    uint32_t idx = agg_tab_insert(t, &k, h);
    ASSERT(idx != AGG_NONE);
    ASSERT(agg_key_eq(&t->pool[idx].key, &k));
    return idx;
}

static uint32_t s_get(const agg_tab_t *t, uint32_t n)
{
    agg_key_t k = s_key(n);
    return agg_tab_find(t, &k, agg_key_hash(&k));
}

TEST(test_insert_find_remove)
{
    agg_tab_t t;
    ASSERT_EQ(agg_tab_init(&t), 0);
    enum { N = 600 }; /* stays in the first table (1024 slots, 70%) */
    uint32_t idx[N];
    ASSERT_EQ(agg_tab_reserve(&t, N), 0);
    for (uint32_t i = 0; i < N; i++)
        idx[i] = s_put(&t, i);
    ASSERT_EQ(t.nkeys, N);
    ASSERT(t.old == NULL);
    for (uint32_t i = 0; i < N; i++)
        ASSERT_EQ(s_get(&t, i), idx[i]);
    ASSERT_EQ(s_get(&t, N + 1), AGG_NONE);
    /* remove every third: the others stay findable (backward shift keeps
       every probe chain whole), the removed are gone */
    for (uint32_t i = 0; i < N; i += 3)
        agg_tab_remove(&t, idx[i]);
    for (uint32_t i = 0; i < N; i++)
        ASSERT_EQ(s_get(&t, i), i % 3 == 0 ? AGG_NONE : idx[i]);
    ASSERT_EQ(t.nkeys, N - (N + 2) / 3);
    agg_tab_fini(&t);
}

TEST(test_free_list_reuses_indices)
{
    agg_tab_t t;
    ASSERT_EQ(agg_tab_init(&t), 0);
    ASSERT_EQ(agg_tab_reserve(&t, 10), 0);
    uint32_t a = s_put(&t, 1), b = s_put(&t, 2);
    ASSERT(a != b && a != AGG_NONE && b != AGG_NONE);
    uint32_t used = t.pool_used;
    t.pool[b].sum0 = 42; /* a field of the aggregation's */
    agg_tab_remove(&t, b);
    ASSERT_EQ(t.pool[b].key.kind, 0); /* free */
    ASSERT_EQ(t.pool_nfree, 1);
    uint32_t c = s_put(&t, 3);
    ASSERT_EQ(c, b);                  /* the freed index comes back */
    ASSERT_EQ(t.pool_used, used);     /* and the pool did not grow */
    ASSERT_EQ(t.pool[c].sum0, 0);     /* zeroed but for the key */
    ASSERT_EQ(s_get(&t, 2), AGG_NONE);
    ASSERT_EQ(s_get(&t, 3), c);
    ASSERT_EQ(s_get(&t, 1), a);
    agg_tab_fini(&t);
}

/* Keys with the same home slot: removing the first of a run shifts the
   others back, and every one stays findable. */
TEST(test_backward_shift_on_collisions)
{
    agg_tab_t t;
    ASSERT_EQ(agg_tab_init(&t), 0);
    ASSERT_EQ(agg_tab_reserve(&t, 8), 0);
    uint64_t home = UINT64_MAX;
    uint32_t ns[6], nn = 0;
    for (uint32_t n = 0; nn < 6 && n < 10000000; n++) {
        agg_key_t k = s_key(n);
        uint64_t hm = agg_key_hash(&k) & t.mask;
        if (home == UINT64_MAX)
            home = hm;
        if (hm == home)
            ns[nn++] = n;
    }
    ASSERT_EQ(nn, 6);
    uint32_t idx[6];
    for (int i = 0; i < 6; i++)
        idx[i] = s_put(&t, ns[i]);
    /* they sit at home, home + 1, ... */
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(t.slots[(home + (uint64_t)i) & t.mask].idx, idx[i]);
    agg_tab_remove(&t, idx[0]);
    agg_tab_remove(&t, idx[3]);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(s_get(&t, ns[i]), (i == 0 || i == 3) ? AGG_NONE : idx[i]);
    /* shifted back: the run is contiguous from home again, then empty */
    ASSERT_EQ(t.slots[home].idx, idx[1]);
    ASSERT_EQ(t.slots[(home + 4) & t.mask].idx, AGG_NONE);
    agg_tab_fini(&t);
}

/* Growth in chunks, as agg_add does: reserve, then insert at most what was
   reserved without the pool moving; while the old table exists, every key
   is found and removals of keys still in it work. */
TEST(test_incremental_growth)
{
    agg_tab_t t;
    ASSERT_EQ(agg_tab_init(&t), 0);
    enum { N = 400000, CHUNK = 768 };
    uint32_t *idx = calloc(N, sizeof *idx);
    ASSERT(idx);
    bool saw_old = false, removed_in_old = false;
    uint32_t n = 0;
    while (n < N) {
        ASSERT_EQ(agg_tab_reserve(&t, CHUNK), 0);
        agg_entry_t *pool = t.pool;
        for (uint32_t i = 0; i < CHUNK && n < N; i++, n++)
            idx[n] = s_put(&t, n);
        ASSERT(t.pool == pool); /* nothing moved inside a chunk */
        if (t.old) {
            saw_old = true;
            /* spot checks across both tables mid-growth */
            for (uint32_t j = 0; j < n; j += 997)
                if (idx[j] != AGG_NONE)
                    ASSERT_EQ(s_get(&t, j), idx[j]);
            /* remove a key that is likely still in the old table */
            uint32_t j = (uint32_t)((t.migrated * 7919u) % (n / 2 + 1));
            if (idx[j] != AGG_NONE) {
                agg_tab_remove(&t, idx[j]);
                idx[j] = AGG_NONE;
                removed_in_old = true;
            }
        }
    }
    ASSERT(saw_old);
    ASSERT(removed_in_old);
    uint64_t live = 0;
    for (uint32_t j = 0; j < N; j++) {
        ASSERT_EQ(s_get(&t, j), idx[j]);
        live += idx[j] != AGG_NONE;
    }
    ASSERT_EQ(t.nkeys, live);
    ASSERT(t.nkeys * 10 <= (t.mask + 1) * 7); /* at most 70% full */
    /* enough reserve calls finish the growth */
    for (int i = 0; i < 100000 && t.old; i++)
        ASSERT_EQ(agg_tab_reserve(&t, 0), 0);
    ASSERT(t.old == NULL);
    for (uint32_t j = 0; j < N; j++)
        ASSERT_EQ(s_get(&t, j), idx[j]);
    free(idx);
    agg_tab_fini(&t);
}

TEST(test_hint_and_prefetch)
{
    agg_tab_t t;
    ASSERT_EQ(agg_tab_init(&t), 0);
    ASSERT_EQ(agg_tab_reserve(&t, 4), 0);
    uint32_t a = s_put(&t, 10), b = s_put(&t, 11);
    agg_key_t ka = s_key(10);
    uint64_t ha = agg_key_hash(&ka);
    ASSERT_EQ(agg_tab_prefetch(&t, ha), a); /* the hint of a's slot */
    ASSERT_EQ(agg_tab_find_hint(&t, &ka, ha, a), a);
    ASSERT_EQ(agg_tab_find_hint(&t, &ka, ha, b), a); /* a wrong hint: the key decides */
    ASSERT_EQ(agg_tab_find_hint(&t, &ka, ha, AGG_NONE), a);
    agg_key_t kx = s_key(12);
    ASSERT_EQ(agg_tab_find_hint(&t, &kx, agg_key_hash(&kx), a), AGG_NONE);
    agg_tab_fini(&t);
}

TEST(test_room_ends_at_the_reserve)
{
    agg_tab_t t;
    ASSERT_EQ(agg_tab_init(&t), 0);
    /* without a reserve the first table has room for its pool (256 - 1) */
    uint32_t n = 0;
    while (agg_tab_room(&t))
        s_put(&t, n++);
    ASSERT_EQ(n, t.pool_cap - 1);
    ASSERT_EQ(agg_tab_reserve(&t, 1000), 0);
    ASSERT(agg_tab_room(&t));
    ASSERT(t.pool_cap - t.pool_used >= 1000);
    agg_tab_fini(&t);
    agg_tab_fini(&t); /* safe twice */
}

/* The compact store against an array model: 20,000 keys (children and
   heads, low words colliding in runs), removals of every third, reuse
   of freed entries and head parts, growth across it, and that a head's
   part is zeroed when made. */
TEST(test_compact_store)
{
    enum { N = 20000 };
    agg_cstore_t s;
    agg_cs_init(&s);
    ASSERT_EQ(agg_cs_find(&s, 1, 2), AGG_NONE); /* empty: no table yet */
    static uint32_t idx[N];
    for (uint32_t i = 0; i < N; i++) {
        ASSERT_EQ(agg_cs_reserve(&s, 1), 0);
        /* lo: runs of 4 share their low 32 bits (tag), hi tells them apart */
        uint64_t lo = (uint64_t)(i / 4) * 0x9e3779b97f4a7c15ull, hi = i;
        ASSERT_EQ(agg_cs_find(&s, lo, hi), AGG_NONE);
        uint8_t kind = i % 5 == 0 ? (uint8_t)AGG_KIND_OP : (uint8_t)FP_CK_CONSUMPTION;
        idx[i] = agg_cs_insert(&s, lo, hi, kind);
        ASSERT(idx[i] != AGG_NONE);
        if (kind == AGG_KIND_OP) {
            agg_cpt_head_t *h = agg_cs_head(&s, idx[i]);
            ASSERT(h->first_child == 0 && h->nchild == 0 && h->close_seq == 0);
            h->close_seq = i;
        } else {
            s.pool[idx[i]].checkpoint_no = i;
        }
    }
    ASSERT_EQ(s.n, N);
    for (uint32_t i = 0; i < N; i += 3)
        agg_cs_remove(&s, idx[i]);
    for (uint32_t i = 0; i < N; i++) {
        uint64_t lo = (uint64_t)(i / 4) * 0x9e3779b97f4a7c15ull;
        uint32_t got = agg_cs_find(&s, lo, i);
        if (i % 3 == 0) {
            ASSERT_EQ(got, AGG_NONE);
            continue;
        }
        ASSERT_EQ(got, idx[i]);
        if (i % 5 == 0)
            ASSERT_EQ(agg_cs_head(&s, got)->close_seq, i);
        else
            ASSERT_EQ(s.pool[got].checkpoint_no, i);
    }
    /* freed entries and head parts are reused before the pool grows */
    uint32_t cap = s.pool_cap, hcap = s.heads_cap, nfree = s.pool_nfree;
    ASSERT_EQ(nfree, (N + 2) / 3);
    ASSERT_EQ(agg_cs_reserve(&s, nfree), 0);
    for (uint32_t i = 0; i < nfree; i++)
        (void)agg_cs_insert(&s, i, (uint64_t)N + i, (uint8_t)AGG_KIND_OP);
    ASSERT_EQ(s.pool_cap, cap);
    ASSERT(s.heads_cap >= hcap);
    ASSERT_EQ(s.pool_nfree, 0);
    ASSERT_EQ(s.n, N);
    for (uint32_t i = 0; i < nfree; i++)
        ASSERT(agg_cs_find(&s, i, (uint64_t)N + i) != AGG_NONE);
    agg_cs_fini(&s);
    agg_cs_fini(&s); /* safe twice */
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_insert_find_remove);
    RUN(test_free_list_reuses_indices);
    RUN(test_backward_shift_on_collisions);
    RUN(test_incremental_growth);
    RUN(test_hint_and_prefetch);
    RUN(test_room_ends_at_the_reserve);
    RUN(test_compact_store);
    return test_done();
}
