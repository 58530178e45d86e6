/*  store_internal.h - what store.c and outbox.c share: the LMDB env, the
    table handles, the round's txn and a few helpers. NOT an API: only
    store.c and outbox.c include it; everything else uses store.h and
    outbox.h. The thread contract is store.h's.
*/
#ifndef FP_STORE_INTERNAL_H
#define FP_STORE_INTERNAL_H

#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/* The tables, in the order fp_store_open opens them. */
enum {
    FP_STORE_DB_META,
    FP_STORE_DB_KEYS,
    FP_STORE_DB_SOURCES,
    FP_STORE_DB_FEEDS,
    FP_STORE_DB_OUTBOX,
    FP_STORE_DB_DEAD,
    FP_STORE_DB_READERS, /* format version 2 on */
    FP_STORE_DB_COUNTERS, /* format version 3 on */
    FP_STORE_DB_RESUBMITS, /* format version 4 on */
    FP_STORE_NDBS
};

struct fp_store {
    MDB_env *env;
    MDB_dbi dbi[FP_STORE_NDBS]; /* set at open, read-only after */
    int dir_fd;                 /* holds the flock on DIR (not in tool mode) */
    bool tool;                  /* fp_store_open_tool: no flock, no round writes */
    uint32_t upgraded_from;     /* the file's version when this open upgraded it, else 0 */
    uint64_t dl_seq;            /* last committed dead-letter seq (commit thread) */
    bool txn_open;              /* commit thread only: a write txn is open */
    bool full;                  /* commit thread only: the last commit failed FULL */
};

struct fp_store_txn {
    fp_store_t *store;
    MDB_txn *txn;
    int rc;                     /* first failure; the txn cannot commit once set */
    uint64_t dl_seq;            /* last dl_seq assigned in this txn */
    uint64_t committed_gseq;    /* meta global_seq when the txn began (the last committed) */
    MDB_cursor *kcur;           /* fp_store_put_key's, opened on first use */
};

/* Big-endian codecs: every integer on disk is big-endian, and values in the
   map are not aligned. */
static inline void fp_store_enc64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static inline uint64_t fp_store_dec64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline void fp_store_enc32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static inline uint32_t fp_store_dec32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void fp_store_enc16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline uint16_t fp_store_dec16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* LMDB result (0, MDB_* negative, or positive errno) -> our code. */
int fp_store_lmdb_rc(int mdb_rc);
/* The result of mdb_txn_commit -> our code (EIO on a nearly full disk: FULL). */
int fp_store_commit_rc(fp_store_t *self, int mdb_rc);
/* Records the first failure of t (poisoning it); returns the txn's error. */
int fp_store_txn_fail(fp_store_txn_t *t, int rc);
/* CLOCK_REALTIME in ns. */
int64_t fp_store_now_ns(void);
/* meta name -> u64: put (an LMDB code), get (0 with *v = 0 when absent, our code). */
int fp_store_meta_put64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t v);
int fp_store_meta_get64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *v);
/* A read txn on any thread (our code). */
int fp_store_read_begin(fp_store_t *self, MDB_txn **txn);
/* One read txn and cursor over table db from `from` (NULL: the first key);
   calls each(ctx2, key, data) until it returns non-zero. Returns 0 at the
   end, each's non-zero value, or a negative error. */
int fp_store_scan(fp_store_t *self, int db, const MDB_val *from,
                  int (*each)(void *ctx2, const MDB_val *k, const MDB_val *d), void *ctx2);
/* After a committed delete while the store is FULL: a tiny second commit so
   LMDB can reuse the freed pages for the next round (see fp_outbox_trim). */
void fp_store_after_free(fp_store_t *self);

#endif
