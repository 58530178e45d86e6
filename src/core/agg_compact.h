/*  agg_compact.h - the aggregation's store of closed keys at rest (private
    to agg*.c and its unit test; agg.h is the API).

    A closed operation whose keys have nothing pending waits out its grace
    needing only what a late correction and the release need: per key its
    checkpoint_no and its event_id hash, per operation its line and station
    (the first record's: every later checkpoint carries them), its closing
    (closed_at, close_seq) and its place in the closed-operations FIFO.
    A full agg_entry_t is 192 bytes and holds references on the key's
    strings; an agg_cpt_t is 48 (a head 32 more) and holds none but line and station, so a
    closed operation "compacted" (agg.c) frees its order, operation,
    material and lot strings.

    Keyed by the XXH3-128 of kind and key strings (and period): the
    entries' khash, the event_id's, which is stable (no symbol ids) and
    computed from the strings a record brings. A key found here by that
    hash is the key: a collision is as likely as two event_ids colliding
    (2^-128 per pair), which the aggregation already takes.

      - pool: entries by stable index (links are indices); 0 is none
        (AGG_NONE); freed entries go to a free list (kind 0).
      - slots: open addressing, linear probing, power-of-two size, at most
        70% full, backward-shift deletion; a slot is (low 32 bits of lo,
        entry index). Growth rehashes at once: slots only (8 bytes each),
        never the entries. Pool and slots are agg_big_* arrays: the pool
        grows by mremap, without a copy resident beside it.

    Heads (kind AGG_KIND_OP): one per closed operation, made when it closes
    and freed when it is released; `op` names the operation's full head
    entry while it has one (not compacted yet, or revived by a late record),
    AGG_NONE when all of it is here. Children (kinds 1..3): the keys of the
    operation at rest, doubly linked from their head.
    Thread contract: one agg_cstore_t belongs to its agg_t's thread; no locks.
*/
#ifndef FP_AGG_COMPACT_H
#define FP_AGG_COMPACT_H

#include <stdint.h>

#include "agg_table.h"

/* What only a head has (a closed operation), apart from its entry. */
typedef struct {
    uint32_t first_child; /* its children here; free: the free list */
    uint32_t nchild;
    uint32_t line, station; /* symbols (references held) */
    int64_t closed_at;    /* the agg_t's now when it closed */
    uint64_t close_seq;   /* closing order (the FIFO's) */
} agg_cpt_head_t;

typedef struct {
    uint64_t lo, hi;      /* XXH3-128 of the key (agg.c s_hash_strings) */
    uint8_t *kb;          /* the key's stored bytes (malloc'd), NULL when the agg_t
                             never exports (agg_config_t.no_export) */
    uint32_t op;          /* child: its head (here); head: its full entry or AGG_NONE */
    uint32_t prev, next;  /* child: siblings; head: next = the FIFO's next */
    uint16_t klen;        /* bytes at kb */
    uint8_t kind;         /* FP_CK_* or AGG_KIND_OP; 0 = free */
    union {
        uint64_t checkpoint_no; /* child: of the last checkpoint emitted */
        uint32_t head;          /* head: its agg_cpt_head_t in heads */
        uint32_t free_next;     /* free: the free list */
    };
} agg_cpt_t;

_Static_assert(sizeof(agg_cpt_t) == 48, "a compact key is 48 bytes");

typedef struct {
    agg_cpt_t *pool;      /* [pool_cap] */
    uint32_t pool_cap, pool_used, pool_free, pool_nfree; /* free list: head, length */
    agg_cpt_head_t *heads; /* [heads_cap], index 0 unused */
    uint32_t heads_cap, heads_used, heads_free, heads_nfree;
    agg_slot_t *slots;    /* [mask + 1] */
    uint64_t mask;
    uint64_t n;           /* live entries */
} agg_cstore_t;

/* The head part of live head entry ci. */
static inline agg_cpt_head_t *agg_cs_head(const agg_cstore_t *s, uint32_t ci)
{
    return &s->heads[s->pool[ci].head];
}

/* An empty store (no memory yet). */
void agg_cs_init(agg_cstore_t *s);

/* Frees the store's memory (not the strings or key bytes its entries name). */
void agg_cs_fini(agg_cstore_t *s);

/* Makes room for `more` agg_cs_insert calls (no growth inside them);
   -1 out of memory (what exists stays valid). */
int agg_cs_reserve(agg_cstore_t *s, uint64_t more);

/* The entry of hash (lo, hi), or AGG_NONE. */
uint32_t agg_cs_find(const agg_cstore_t *s, uint64_t lo, uint64_t hi);

/* A new entry of hash (lo, hi) and kind (not held: the caller looked),
   zeroed but for them (a head with a zeroed head part). The caller
   reserved room. */
uint32_t agg_cs_insert(agg_cstore_t *s, uint64_t lo, uint64_t hi, uint8_t kind);

/* Frees live entry idx (its slot and its index). */
void agg_cs_remove(agg_cstore_t *s, uint32_t idx);

#endif
