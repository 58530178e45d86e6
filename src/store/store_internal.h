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

/* Every value floorpost writes ends with FP_STORE_SUM_BYTES of checksum
   (format version 5 on, fp_store_value_sum); every table's entries and the
   sum of their checksums are kept in meta "digest" (fp_store_w_t). */
#define FP_STORE_SUM_BYTES 4u
#define FP_STORE_DIGEST_NAME "digest"
#define FP_STORE_DIGEST_BYTES (FP_STORE_NDBS * 16u) /* per table: u64 entries, u64 sum */

/* A table's digest: its entries, and the sum (mod 2^64) of their values'
   checksums. Order-independent, so a put or a delete updates it in O(1);
   the walk (verify.c) recomputes it and catches a subtree lost or a
   table root pointing at an older, intact tree. meta's own digest leaves
   out the "digest" record. */
typedef struct {
    uint64_t entries, sum;
} fp_store_digest_t;

/* The names of the tables, by FP_STORE_DB_*. */
extern const char *const fp_store_db_names[FP_STORE_NDBS];

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

/* One write transaction of the store. Every put and delete floorpost makes
   goes through it (fp_store_w_*), so that every value carries its checksum
   and every table's digest follows; fp_store_w_commit writes the digest
   record with the data, in the same commit. */
typedef struct {
    fp_store_t *store;
    MDB_txn *txn;
    fp_store_digest_t dig[FP_STORE_NDBS];
    bool changed; /* a digest moved: the record is written at commit */
} fp_store_w_t;

struct fp_store_txn {
    fp_store_t *store;
    MDB_txn *txn;
    fp_store_w_t w;             /* txn == w.txn */
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

/* ---- checksummed writes (store.c) ---- */

/* Begins a write txn (LMDB code or ours) and reads the digest. */
int fp_store_w_begin(fp_store_t *self, fp_store_w_t *w);
/* Puts k -> v (vlen bytes) + its checksum into table db, through cur when
   not NULL (a cursor on db in w's txn). flags: LMDB's (MDB_APPEND). The old
   value, when there is one, leaves the digest: its own checksum is checked
   first (FP_STORE_CORRUPT when it does not match). 0, LMDB's or our code. */
int fp_store_w_put(fp_store_w_t *w, int db, MDB_cursor *cur, const MDB_val *k, const void *v,
                   size_t vlen, unsigned flags);
/* Reserves vlen bytes for k in db (MDB_RESERVE | flags; only with
   MDB_APPEND: there is no old value) into *p; the caller fills them, then
   calls fp_store_w_seal with the same k, db, p and vlen. */
int fp_store_w_reserve(fp_store_w_t *w, int db, const MDB_val *k, size_t vlen, unsigned flags,
                       uint8_t **p);
void fp_store_w_seal(fp_store_w_t *w, int db, const MDB_val *k, uint8_t *p, size_t vlen);
/* Deletes k from db (through cur when not NULL, then cur must be ON k and d
   its raw value as the cursor returned it): its value leaves the digest.
   MDB_NOTFOUND when absent (cur NULL). */
int fp_store_w_del(fp_store_w_t *w, int db, MDB_cursor *cur, const MDB_val *k, const MDB_val *d);
/* Writes the digest record (when it changed) and commits: the result of
   mdb_txn_commit, or of the digest's put (then the txn is aborted). */
int fp_store_w_commit(fp_store_w_t *w);
void fp_store_w_abort(fp_store_w_t *w);

/* ---- checksummed reads ---- */

/* A raw value of db read from the map -> its data without the checksum
   (d->mv_size shrinks), or FP_STORE_CORRUPT when the checksum does not
   match (or the value is shorter than it). */
int fp_store_unseal(int db, const MDB_val *k, MDB_val *d);
/* mdb_get + fp_store_unseal: 0, MDB_NOTFOUND, another LMDB code, or
   FP_STORE_CORRUPT. */
int fp_store_get(MDB_txn *txn, fp_store_t *self, int db, const MDB_val *k, MDB_val *d);
/* The digest record's bytes <-> digests (meta "digest"). */
void fp_store_digest_enc(uint8_t *p, const fp_store_digest_t dig[FP_STORE_NDBS]);
void fp_store_digest_dec(const uint8_t *p, fp_store_digest_t dig[FP_STORE_NDBS]);

/* LMDB result (0, MDB_* negative, or positive errno) -> our code. */
int fp_store_lmdb_rc(int mdb_rc);
/* The result of mdb_txn_commit -> our code (EIO on a nearly full disk: FULL). */
int fp_store_commit_rc(fp_store_t *self, int mdb_rc);
/* Records the first failure of t (poisoning it); returns the txn's error. */
int fp_store_txn_fail(fp_store_txn_t *t, int rc);
/* CLOCK_REALTIME in ns. */
int64_t fp_store_now_ns(void);
/* meta name -> u64: put (an LMDB code or ours), get (0 with *v = 0 when
   absent, our code). */
int fp_store_meta_put64(fp_store_w_t *w, const char *name, uint64_t v);
int fp_store_meta_get64(MDB_txn *txn, fp_store_t *self, const char *name, uint64_t *v);
/* A read txn on any thread (our code). */
int fp_store_read_begin(fp_store_t *self, MDB_txn **txn);
/* One read txn and cursor over table db from `from` (NULL: the first key);
   calls each(ctx2, key, data) until it returns non-zero. Returns 0 at the
   end, each's non-zero value, or a negative error. */
int fp_store_scan(fp_store_t *self, int db, const MDB_val *from,
                  int (*each)(void *ctx2, const MDB_val *k, const MDB_val *d), void *ctx2);
/* Deletes the value d of k at cur whose checksum does not match (a
   damaged one): out of the digest by the checksum stored with it. */
int fp_store_w_del_damaged(fp_store_w_t *w, int db, MDB_cursor *cur, const MDB_val *k,
                           const MDB_val *d);
/* fp_store_scan with each value as stored, its checksum unchecked and
   still on it: each checks it (fp_store_unseal) and decides what a
   damaged one means. */
int fp_store_scan_raw(fp_store_t *self, int db, const MDB_val *from,
                      int (*each)(void *ctx2, const MDB_val *k, const MDB_val *d), void *ctx2);
/* After a committed delete while the store is FULL: a tiny second commit so
   LMDB can reuse the freed pages for the next round (see fp_outbox_trim). */
void fp_store_after_free(fp_store_t *self);

#endif
