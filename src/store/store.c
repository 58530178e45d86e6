/*  store.c - floorpost's durable state on LMDB. See store.h for the format
    and the thread contract.

    Invariants:
      - Every write goes through one LMDB write transaction at a time, on the
        commit thread; a failed put poisons the fp_store_txn_t (rc != 0), so
        a round commits whole or not at all.
      - self->dl_seq is the last committed dead-letter seq; a txn works on its
        own copy and publishes it to self only when its commit succeeded.
      - data.mdb is at least map-size long (sparse) from the end of open on:
        any committed page lies inside the file, so reading the map can never
        fault (SIGBUS) unless the file was cut behind our back; open checks
        that before any page but the two meta pages is touched.
*/
#include "store.h"
#include "store_internal.h"
#include "verify.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

const char *const fp_store_db_names[FP_STORE_NDBS] = {
    "meta", "keys", "sources", "feeds", "outbox", "deadletters", "readers", "counters",
    "resubmits"};

/* Concurrent read txns: every worker and shard restores at once at start-up
   (up to 64 + 64), plus replay requests. LMDB's default is 126. */
#define S_MAX_READERS 512u
#define S_NEARLY_FULL_BYTES (64u << 20) /* free disk below which EIO means full */

/* ---- small helpers ---- */

int fp_store_lmdb_rc(int mdb_rc)
{
    if (mdb_rc == 0)
        return 0;
    if (mdb_rc == MDB_MAP_FULL || mdb_rc == ENOSPC || mdb_rc == EDQUOT || mdb_rc == EFBIG)
        return FP_STORE_FULL;
    if (mdb_rc > 0)
        return -mdb_rc;
    return mdb_rc;
}

/* The result of mdb_txn_commit -> our code. LMDB reports a short pwrite
   as EIO, and a write that hits a full disk in the middle of a run of
   pages is exactly that; so an EIO on a filesystem with little room left
   is taken for ENOSPC (a heuristic: a real I/O error on a nearly full disk
   then reads "full", which asks for the same retry). */
int fp_store_commit_rc(fp_store_t *self, int mdb_rc)
{
    int fd;
    struct statvfs vfs;
    if (mdb_rc == EIO && mdb_env_get_fd(self->env, &fd) == 0 && fstatvfs(fd, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < S_NEARLY_FULL_BYTES)
        return FP_STORE_FULL;
    return fp_store_lmdb_rc(mdb_rc);
}

int64_t fp_store_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int s_mkdir_p(const char *dir)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return -ENAMETOOLONG;
    memcpy(path, dir, n + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0750) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(path, 0750) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

const char *fp_store_strerror(int rc)
{
    switch (rc) {
    case 0: return "ok";
    case FP_STORE_FULL: return "store full (LMDB map or disk full)";
    case FP_STORE_EMPTY: return "nothing stored";
    case FP_STORE_NOTFOUND: return "no such entry";
    case FP_STORE_CORRUPT: return "malformed record in the state file";
    default: break;
    }
    if (rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE)
        return mdb_strerror(rc);
    if (rc < 0)
        return strerror(-rc);
    return "unknown error";
}

/* ---- checksums ---- */

/* XXH3 (libxxhash, Debian's libxxhash-dev, already linked for the string
   tables): about 10 GB/s on one core, so the start-time walk of a large
   state costs what reading the file costs. The table's number seeds the
   hash of the key, whose hash seeds the value's: a value moved to another
   key or table no longer matches. 32 bits: a damaged value slips through
   with odds of 2^-32, and the walk's other checks (the tree, the
   digests) catch the damage that does not change a value. */
#define S_SUM_SEED 0x666c6f6f72706f73ull /* "floorpos" */

uint32_t fp_store_value_sum(unsigned table, const void *key, size_t klen, const void *val,
                            size_t vlen)
{
    XXH64_hash_t seed = XXH3_64bits_withSeed(klen ? key : "", klen, S_SUM_SEED + table);
    return (uint32_t)XXH3_64bits_withSeed(vlen ? val : "", vlen, seed);
}

int fp_store_value_open(unsigned table, const void *key, size_t klen, const void *val,
                        size_t len, size_t *vlen)
{
    if (!val || len < FP_STORE_SUM_BYTES)
        return FP_STORE_CORRUPT;
    size_t n = len - FP_STORE_SUM_BYTES;
    if (fp_store_dec32((const uint8_t *)val + n) != fp_store_value_sum(table, key, klen, val, n))
        return FP_STORE_CORRUPT;
    *vlen = n;
    return 0;
}

int fp_store_unseal(int db, const MDB_val *k, MDB_val *d)
{
    size_t n;
    int rc = fp_store_value_open((unsigned)db, k->mv_data, k->mv_size, d->mv_data, d->mv_size, &n);
    if (rc == 0)
        d->mv_size = n;
    return rc;
}

int fp_store_get(MDB_txn *txn, fp_store_t *self, int db, const MDB_val *k, MDB_val *d)
{
    int rc = mdb_get(txn, self->dbi[db], (MDB_val *)k, d);
    return rc ? rc : fp_store_unseal(db, k, d);
}

void fp_store_digest_enc(uint8_t *p, const fp_store_digest_t dig[FP_STORE_NDBS])
{
    for (int i = 0; i < FP_STORE_NDBS; i++) {
        fp_store_enc64(p + 16 * i, dig[i].entries);
        fp_store_enc64(p + 16 * i + 8, dig[i].sum);
    }
}

void fp_store_digest_dec(const uint8_t *p, fp_store_digest_t dig[FP_STORE_NDBS])
{
    for (int i = 0; i < FP_STORE_NDBS; i++) {
        dig[i].entries = fp_store_dec64(p + 16 * i);
        dig[i].sum = fp_store_dec64(p + 16 * i + 8);
    }
}

static const MDB_val s_digest_key = {sizeof FP_STORE_DIGEST_NAME - 1, (void *)FP_STORE_DIGEST_NAME};

static bool s_is_digest(int db, const MDB_val *k)
{
    return db == FP_STORE_DB_META && k->mv_size == s_digest_key.mv_size &&
           memcmp(k->mv_data, s_digest_key.mv_data, k->mv_size) == 0;
}

/* ---- checksummed writes ---- */

int fp_store_w_begin(fp_store_t *self, fp_store_w_t *w)
{
    memset(w, 0, sizeof *w);
    w->store = self;
    int rc = mdb_txn_begin(self->env, NULL, 0, &w->txn);
    if (rc != 0) {
        w->txn = NULL;
        return fp_store_lmdb_rc(rc);
    }
    MDB_val d;
    rc = fp_store_get(w->txn, self, FP_STORE_DB_META, &s_digest_key, &d);
    if (rc == 0 && d.mv_size != FP_STORE_DIGEST_BYTES)
        rc = FP_STORE_CORRUPT;
    if (rc != 0) {
        mdb_txn_abort(w->txn);
        w->txn = NULL;
        return rc == MDB_NOTFOUND ? FP_STORE_CORRUPT : fp_store_lmdb_rc(rc);
    }
    fp_store_digest_dec(d.mv_data, w->dig);
    return 0;
}

/* The raw old value d of k leaves db's digest (its checksum checked). */
static int s_leave(fp_store_w_t *w, int db, const MDB_val *k, const MDB_val *d)
{
    MDB_val v = *d;
    if (fp_store_unseal(db, k, &v) != 0)
        return FP_STORE_CORRUPT;
    w->dig[db].entries--;
    w->dig[db].sum -= fp_store_dec32((const uint8_t *)d->mv_data + v.mv_size);
    w->changed = true;
    return 0;
}

static void s_enter(fp_store_w_t *w, int db, uint8_t *p, size_t vlen, uint32_t sum)
{
    fp_store_enc32(p + vlen, sum);
    w->dig[db].entries++;
    w->dig[db].sum += sum;
    w->changed = true;
}

int fp_store_w_put(fp_store_w_t *w, int db, MDB_cursor *cur, const MDB_val *k, const void *v,
                   size_t vlen, unsigned flags)
{
    assert(!s_is_digest(db, k));
    MDB_dbi dbi = w->store->dbi[db];
    MDB_val kk = *k, old;
    int rc;
    if (!(flags & MDB_APPEND)) {
        rc = cur ? mdb_cursor_get(cur, &kk, &old, MDB_SET) : mdb_get(w->txn, dbi, &kk, &old);
        if (rc == 0)
            rc = s_leave(w, db, k, &old);
        else if (rc == MDB_NOTFOUND)
            rc = 0;
        if (rc != 0)
            return rc;
    }
    /* The sum before the put: v may point into the map. */
    uint32_t sum = fp_store_value_sum((unsigned)db, k->mv_data, k->mv_size, v, vlen);
    MDB_val d = {vlen + FP_STORE_SUM_BYTES, NULL};
    kk = *k;
    rc = cur ? mdb_cursor_put(cur, &kk, &d, flags | MDB_RESERVE)
             : mdb_put(w->txn, dbi, &kk, &d, flags | MDB_RESERVE);
    if (rc != 0)
        return rc;
    if (vlen)
        memmove(d.mv_data, v, vlen);
    s_enter(w, db, d.mv_data, vlen, sum);
    return 0;
}

int fp_store_w_reserve(fp_store_w_t *w, int db, const MDB_val *k, size_t vlen, unsigned flags,
                       uint8_t **p)
{
    assert(flags & MDB_APPEND); /* no old value to leave the digest */
    MDB_val kk = *k, d = {vlen + FP_STORE_SUM_BYTES, NULL};
    int rc = mdb_put(w->txn, w->store->dbi[db], &kk, &d, flags | MDB_RESERVE);
    *p = rc == 0 ? d.mv_data : NULL;
    return rc;
}

void fp_store_w_seal(fp_store_w_t *w, int db, const MDB_val *k, uint8_t *p, size_t vlen)
{
    s_enter(w, db, p, vlen, fp_store_value_sum((unsigned)db, k->mv_data, k->mv_size, p, vlen));
}

int fp_store_w_del(fp_store_w_t *w, int db, MDB_cursor *cur, const MDB_val *k, const MDB_val *d)
{
    MDB_val kk = *k, old;
    int rc;
    if (cur) {
        old = *d;
    } else if ((rc = mdb_get(w->txn, w->store->dbi[db], &kk, &old)) != 0) {
        return rc;
    }
    if ((rc = s_leave(w, db, k, &old)) != 0)
        return rc;
    return cur ? mdb_cursor_del(cur, 0) : mdb_del(w->txn, w->store->dbi[db], &kk, NULL);
}

int fp_store_w_del_damaged(fp_store_w_t *w, int db, MDB_cursor *cur, const MDB_val *k,
                           const MDB_val *d)
{
    /* Its stored checksum is what entered the digest (unless the damage
       hit those bytes too: then the digest stays off, and the next
       start's walk says so). */
    w->dig[db].entries--;
    if (d->mv_size >= FP_STORE_SUM_BYTES)
        w->dig[db].sum -=
            fp_store_dec32((const uint8_t *)d->mv_data + d->mv_size - FP_STORE_SUM_BYTES);
    w->changed = true;
    return mdb_cursor_del(cur, 0);
}

/* Puts the digest record in w's txn. */
static int s_put_digest(fp_store_w_t *w)
{
    uint8_t b[FP_STORE_DIGEST_BYTES + FP_STORE_SUM_BYTES];
    fp_store_digest_enc(b, w->dig);
    fp_store_enc32(b + FP_STORE_DIGEST_BYTES,
                   fp_store_value_sum(FP_STORE_DB_META, s_digest_key.mv_data,
                                      s_digest_key.mv_size, b, FP_STORE_DIGEST_BYTES));
    MDB_val k = s_digest_key, d = {sizeof b, b};
    return mdb_put(w->txn, w->store->dbi[FP_STORE_DB_META], &k, &d, 0);
}

int fp_store_w_commit(fp_store_w_t *w)
{
    int rc = w->changed ? s_put_digest(w) : 0;
    if (rc != 0)
        mdb_txn_abort(w->txn);
    else
        rc = mdb_txn_commit(w->txn);
    w->txn = NULL;
    return rc;
}

void fp_store_w_abort(fp_store_w_t *w)
{
    if (w->txn)
        mdb_txn_abort(w->txn);
    w->txn = NULL;
}

/* ---- meta records ---- */

static MDB_val s_name(const char *name)
{
    return (MDB_val){strlen(name), (void *)name};
}

static int s_put_meta(fp_store_w_t *w, const char *name, const void *v, size_t len)
{
    MDB_val k = s_name(name);
    return fp_store_w_put(w, FP_STORE_DB_META, NULL, &k, v, len, 0);
}

int fp_store_meta_put64(fp_store_w_t *w, const char *name, uint64_t v)
{
    uint8_t b[8];
    fp_store_enc64(b, v);
    return s_put_meta(w, name, b, 8);
}

/* 0 and *v (0 when absent), or an LMDB error / FP_STORE_CORRUPT. */
int fp_store_meta_get64(MDB_txn *txn, fp_store_t *self, const char *name, uint64_t *v)
{
    MDB_val k = s_name(name), d;
    int rc = fp_store_get(txn, self, FP_STORE_DB_META, &k, &d);
    *v = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return fp_store_lmdb_rc(rc);
    if (d.mv_size != 8)
        return FP_STORE_CORRUPT;
    *v = fp_store_dec64(d.mv_data);
    return 0;
}

/* ---- open ---- */

/* A meta record of a file being checked: with its checksum (sums, format
   5 on: checked and cut off) or without (formats 1 to 4). */
static int s_get_meta(MDB_txn *txn, MDB_dbi dbi, bool sums, const char *name, MDB_val *val)
{
    MDB_val k = s_name(name);
    int rc = mdb_get(txn, dbi, &k, val);
    return rc == 0 && sums ? fp_store_unseal(FP_STORE_DB_META, &k, val) : rc;
}

/* Upgrade to format 5: gives every value of table db its checksum, in w's
   txn, counting the table's digest. */
static int s_seal_table(fp_store_w_t *w, int db)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(w->txn, w->store->dbi[db], &cur);
    if (rc != 0)
        return rc;
    uint8_t kb[FP_STORE_KEY_MAX + 1];
    uint8_t *vb = NULL;
    size_t cap = 0;
    MDB_val k, d;
    MDB_cursor_op op = MDB_FIRST;
    while ((rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
        op = MDB_NEXT;
        if (k.mv_size > sizeof kb) {
            rc = FP_STORE_CORRUPT;
            break;
        }
        memcpy(kb, k.mv_data, k.mv_size);
        MDB_val kk = {k.mv_size, kb};
        if (d.mv_size > cap) {
            uint8_t *nb = realloc(vb, d.mv_size);
            if (!nb) {
                rc = ENOMEM;
                break;
            }
            vb = nb;
            cap = d.mv_size;
        }
        size_t n = d.mv_size;
        if (n) /* an empty value (no older format writes one; a damaged file may) */
            memcpy(vb, d.mv_data, n);
        uint32_t sum = fp_store_value_sum((unsigned)db, kb, kk.mv_size, vb, n);
        MDB_val nd = {n + FP_STORE_SUM_BYTES, NULL};
        if ((rc = mdb_cursor_put(cur, &kk, &nd, MDB_CURRENT | MDB_RESERVE)) != 0)
            break;
        if (n)
            memcpy(nd.mv_data, vb, n);
        s_enter(w, db, nd.mv_data, n, sum);
        /* Back on the record just rewritten (a split may have moved it). */
        if ((rc = mdb_cursor_get(cur, &kk, &d, MDB_SET)) != 0)
            break;
    }
    free(vb);
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Checks an existing store's meta in txn (writes nothing), or, when the env
   holds nothing at all, creates every table and the meta records, or, for
   a version-1 to -4 store (not in tool mode), upgrades it to the current
   version in txn: creates the tables it lacks (readers, counters,
   resubmits), gives every value its checksum, writes the digest and sets
   "version"; nothing else changes. *w is the open's write context (its
   txn is txn; unused in tool mode). Returns 0, or -1 with err filled. */
static int s_check_or_init(fp_store_t *self, fp_store_w_t *w, MDB_txn *txn, const char *path,
                           const char *instance, char *err, size_t errlen)
{
    MDB_dbi meta;
    int rc = mdb_dbi_open(txn, fp_store_db_names[FP_STORE_DB_META], 0, &meta);
    bool fresh = false, sums = true;
    uint32_t upgrade_from = 0;
    if (rc == MDB_NOTFOUND && self->tool) {
        snprintf(err, errlen, "%s: no floorpost state in it (no meta table)", path);
        return -1;
    }
    if (rc == MDB_NOTFOUND) {
        MDB_dbi main_dbi;
        MDB_stat st;
        rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
        if (rc == 0)
            rc = mdb_stat(txn, main_dbi, &st);
        if (rc != 0) {
            snprintf(err, errlen, "%s: not a floorpost state file (%s)", path, mdb_strerror(rc));
            return -1;
        }
        if (st.ms_entries != 0) {
            snprintf(err, errlen, "%s: not a floorpost state file (an LMDB file without floorpost meta)",
                     path);
            return -1;
        }
        fresh = true;
    } else if (rc != 0) {
        snprintf(err, errlen, "%s: not a floorpost state file (%s)", path, mdb_strerror(rc));
        return -1;
    }
    if (!fresh) {
        MDB_val d, vk = s_name("version");
        /* The version says whether the values carry checksums: a 4-byte
           record is formats 1 to 4 (none), 8 bytes with a matching sum is
           format 5 on. */
        rc = mdb_get(txn, meta, &vk, &d);
        if (rc == 0 && d.mv_size == 4 && fp_store_dec32(d.mv_data) > FP_STORE_FORMAT_VERSION) {
            snprintf(err, errlen, "%s: format version %u, this floorpost reads %u", path,
                     fp_store_dec32(d.mv_data), FP_STORE_FORMAT_VERSION);
            return -1;
        }
        if (rc == 0 && d.mv_size == 4) {
            sums = false;
        } else if (rc == 0 && (d.mv_size != 4 + FP_STORE_SUM_BYTES ||
                               fp_store_unseal(FP_STORE_DB_META, &vk, &d) != 0)) {
            snprintf(err, errlen, "%s: damaged: meta record version (checksum)", path);
            return -1;
        }
        if (rc != 0) {
            snprintf(err, errlen, "%s: not a floorpost state file (no format version)", path);
            return -1;
        }
        uint32_t version = fp_store_dec32(d.mv_data);
        if (sums != (version >= 5)) {
            snprintf(err, errlen, "%s: damaged: meta record version (%u %s checksums)", path,
                     version, sums ? "with" : "without");
            return -1;
        }
        rc = s_get_meta(txn, meta, sums, "magic", &d);
        if (rc != 0 || d.mv_size != strlen(FP_STORE_MAGIC) ||
            memcmp(d.mv_data, FP_STORE_MAGIC, d.mv_size) != 0) {
            snprintf(err, errlen, "%s: not a floorpost state file (%s)", path,
                     rc == FP_STORE_CORRUPT ? "damaged magic record (checksum)"
                     : rc != 0              ? "no magic record"
                                            : "wrong magic");
            return -1;
        }
        bool older = version >= 1 && version < FP_STORE_FORMAT_VERSION;
        if (older && self->tool) {
            /* A tool never writes the format: the upgrade is floorpost's. */
            snprintf(err, errlen,
                     "%s: state format version %u: start floorpost once to upgrade it", path,
                     version);
            return -1;
        }
        if (version != FP_STORE_FORMAT_VERSION && !older) {
            snprintf(err, errlen,
                     "%s: format version %u, this floorpost reads %u (and upgrades 1 to %u)",
                     path, version, FP_STORE_FORMAT_VERSION, FP_STORE_FORMAT_VERSION - 1);
            return -1;
        }
        if (older)
            upgrade_from = version;
        rc = s_get_meta(txn, meta, sums, "instance", &d);
        if (rc != 0 || d.mv_size > FP_STORE_INSTANCE_MAX) {
            snprintf(err, errlen, "%s: %s", path,
                     rc == FP_STORE_CORRUPT ? "damaged: meta record instance (checksum)"
                                            : "not a floorpost state file (no instance name)");
            return -1;
        }
        if (d.mv_size != strlen(instance) || memcmp(d.mv_data, instance, d.mv_size) != 0) {
            snprintf(err, errlen, "%s: belongs to instance %.*s, this is %s", path,
                     (int)d.mv_size, (const char *)d.mv_data, instance);
            return -1;
        }
        rc = s_get_meta(txn, meta, sums, "dl_seq", &d);
        self->dl_seq = rc == 0 && d.mv_size == 8 ? fp_store_dec64(d.mv_data) : 0;
        if ((rc != 0 && rc != MDB_NOTFOUND) || (rc == 0 && d.mv_size != 8)) {
            snprintf(err, errlen, "%s: damaged meta record dl_seq (%s)", path,
                     rc == 0 ? fp_store_strerror(FP_STORE_CORRUPT) : fp_store_strerror(fp_store_lmdb_rc(rc)));
            return -1;
        }
    }
    for (int i = 0; i < FP_STORE_NDBS; i++) {
        rc = mdb_dbi_open(txn, fp_store_db_names[i], self->tool ? 0 : MDB_CREATE, &self->dbi[i]);
        if (rc != 0) {
            snprintf(err, errlen, "%s: table %s: %s", path, fp_store_db_names[i], mdb_strerror(rc));
            return -1;
        }
    }
    if (upgrade_from) {
        /* Version 1 to 4 -> 5: the loop above created the tables the file
           lacked (readers for 1, counters for 1 and 2, resubmits for 1 to 3;
           empty); every value gets its checksum (its bytes stay, the sum
           follows them), the digest record is new, and the version
           record says 5. The caller's commit makes it all durable together,
           or nothing. A map too small for the copy-on-write of every page
           refuses the start, and the file stays as it was. */
        uint8_t v[4];
        fp_store_enc32(v, FP_STORE_FORMAT_VERSION);
        for (int i = 0; rc == 0 && i < FP_STORE_NDBS; i++)
            rc = s_seal_table(w, i);
        if (rc == 0)
            rc = s_put_meta(w, "version", v, 4);
        if (rc != 0) {
            snprintf(err, errlen, "%s: cannot upgrade from format version %u: %s%s", path,
                     upgrade_from, fp_store_strerror(fp_store_lmdb_rc(rc)),
                     fp_store_lmdb_rc(rc) == FP_STORE_FULL
                         ? " (the upgrade rewrites every page: raise map_size_mb for it)"
                         : "");
            return -1;
        }
        self->upgraded_from = upgrade_from;
    }
    if (fresh) {
        uint8_t v[4];
        fp_store_enc32(v, FP_STORE_FORMAT_VERSION);
        rc = s_put_meta(w, "magic", FP_STORE_MAGIC, strlen(FP_STORE_MAGIC));
        if (rc == 0)
            rc = s_put_meta(w, "version", v, 4);
        if (rc == 0)
            rc = s_put_meta(w, "instance", instance, strlen(instance));
        if (rc == 0)
            rc = fp_store_meta_put64(w, "created_ns", (uint64_t)fp_store_now_ns());
        if (rc == 0)
            rc = fp_store_meta_put64(w, "round", 0);
        if (rc == 0)
            rc = fp_store_meta_put64(w, "global_seq", 0);
        if (rc == 0)
            rc = fp_store_meta_put64(w, "dl_seq", 0);
        if (rc != 0) {
            snprintf(err, errlen, "%s: cannot create the meta record: %s", path, mdb_strerror(rc));
            return -1;
        }
        self->dl_seq = 0;
    }
    return 0;
}

/* fp_store_open and, with tool, fp_store_open_tool (see store.h): the tool
   mode creates nothing, takes no flock, checks in a read txn and does not
   extend the file. */
static fp_store_t *s_open(const char *dir, uint64_t map_bytes, const char *instance, bool tool,
                          char *err, size_t errlen)
{
    assert(dir && instance && err && errlen > 0);
    err[0] = '\0';
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    size_t ilen = strlen(instance);
    if (ilen == 0 || ilen > FP_STORE_INSTANCE_MAX) {
        snprintf(err, errlen, "%s: the instance name must have 1..%u bytes", dir,
                 FP_STORE_INSTANCE_MAX);
        return NULL;
    }
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        page = 4096;
    if (map_bytes < 64 * (uint64_t)page || map_bytes > ((uint64_t)1 << 46)) {
        snprintf(err, errlen, "%s: map size %llu out of range (%ld .. 2^46 bytes)", dir,
                 (unsigned long long)map_bytes, 64 * page);
        return NULL;
    }
    map_bytes = (map_bytes + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;

    fp_store_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "%s: out of memory", dir);
        return NULL;
    }
    self->dir_fd = -1;
    self->tool = tool;
    MDB_txn *txn = NULL;
    int rc = tool ? 0 : s_mkdir_p(dir);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot create the directory: %s", dir, strerror(-rc));
        goto fail;
    }
    self->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->dir_fd < 0) {
        snprintf(err, errlen, "%s: %s%s%s", dir, tool ? "no floorpost state here (" : "",
                 strerror(errno), tool ? ")" : "");
        goto fail;
    }
    /* Tool mode: no flock. A running floorpost holds it; LMDB's own
       lock.mdb serialises the writers of both processes. */
    if (!tool && flock(self->dir_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s: %s", dir,
                 errno == EWOULDBLOCK ? "in use by another floorpost process" : strerror(errno));
        goto fail;
    }
    /* LMDB treats an empty data.mdb as a new store: refuse it instead, it
       may be a cut-off copy of a real one. */
    struct stat st;
    bool existed = stat(path, &st) == 0;
    if (tool && !existed) {
        snprintf(err, errlen, "%s: no floorpost state here (%s)", dir, strerror(errno));
        goto fail;
    }
    if (existed && st.st_size == 0) {
        snprintf(err, errlen, "%s: empty file (truncated?); remove it to start a new state", path);
        goto fail;
    }
    /* Before LMDB reads anything but the meta pages here: the full walk, in
       a child process (verify.h), so that a damaged page is a refused
       start with its table and key, never an assertion or a crash later,
       at a replay. Only floorpost's own open: a tool reads what it
       needs, and each value it reads is still checked. */
    if (!tool && existed) {
        fp_store_verify_t rep;
        rc = fp_store_verify(dir, true, &rep);
        if (rc != 0) {
            bool foreign = strncmp(rep.problem, "not a floorpost", 15) == 0;
            snprintf(err, errlen, "%s: %s%s", path,
                     rc != FP_STORE_CORRUPT ? "cannot verify: " : foreign ? "" : "damaged: ",
                     rep.problem);
            goto fail;
        }
    }
    if ((rc = mdb_env_create(&self->env)) != 0 || (rc = mdb_env_set_maxdbs(self->env, 16)) != 0 ||
        (rc = mdb_env_set_mapsize(self->env, (size_t)map_bytes)) != 0 ||
        (rc = mdb_env_set_maxreaders(self->env, S_MAX_READERS)) != 0) {
        snprintf(err, errlen, "%s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    /* MDB_NOTLS: read txns are not bound to threads. Never MDB_NOSYNC or
       MDB_WRITEMAP (a write into a sparse map on a full disk is a SIGBUS). */
    rc = mdb_env_open(self->env, dir, MDB_NOTLS, 0640);
    if (rc != 0) {
        if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
            snprintf(err, errlen, "%s: not a floorpost state file (%s)", path, mdb_strerror(rc));
        else
            snprintf(err, errlen, "%s: cannot open: %s", path, mdb_strerror(rc));
        goto fail;
    }
    /* Only the two meta pages have been read so far. Every committed page
       must lie inside the file before anything else touches the map. */
    MDB_envinfo info;
    MDB_stat est;
    int fd;
    if ((rc = mdb_env_info(self->env, &info)) != 0 || (rc = mdb_env_stat(self->env, &est)) != 0 ||
        (rc = mdb_env_get_fd(self->env, &fd)) != 0) {
        snprintf(err, errlen, "%s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * est.ms_psize;
    if ((uint64_t)st.st_size < need) {
        snprintf(err, errlen,
                 "%s: not a floorpost state file (truncated: %llu bytes, the last commit needs %llu)",
                 path, (unsigned long long)st.st_size, (unsigned long long)need);
        goto fail;
    }
    if (tool) {
        /* Free the reader slots of dead processes (a tool killed while
           reading), which would pin old pages for the running floorpost. */
        int dead;
        mdb_reader_check(self->env, &dead);
    }
    /* Tool mode checks in a read txn: it never waits for floorpost's
       writer, and committing it keeps the table handles. */
    rc = mdb_txn_begin(self->env, NULL, tool ? MDB_RDONLY : 0, &txn);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    fp_store_w_t w = {.store = self, .txn = txn};
    if (s_check_or_init(self, &w, txn, path, instance, err, errlen) != 0)
        goto fail;
    /* Accepted: extend the file (sparse) to the map, before this first
       commit, so that from now on no committed page lies past its end (see
       the invariants above). fdatasync in the commit makes the size durable. */
    if (!tool && (uint64_t)st.st_size < (uint64_t)info.me_mapsize &&
        ftruncate(fd, (off_t)info.me_mapsize) != 0) {
        snprintf(err, errlen, "%s: cannot extend to the map size: %s", path, strerror(errno));
        goto fail;
    }
    /* The digest record goes with what the open wrote (a new file, an
       upgrade); an open of a current file writes nothing. */
    rc = w.changed ? fp_store_w_commit(&w) : mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, fp_store_strerror(fp_store_lmdb_rc(rc)));
        goto fail;
    }
    /* A new data.mdb: make its directory entry durable too (LMDB syncs
       only the file), or a power cut could lose the whole store. */
    if (!existed && fsync(self->dir_fd) != 0) {
        snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
        goto fail;
    }
    return self;
fail:
    if (txn)
        mdb_txn_abort(txn);
    if (self->env)
        mdb_env_close(self->env);
    if (self->dir_fd >= 0)
        close(self->dir_fd);
    free(self);
    return NULL;
}

fp_store_t *fp_store_open(const char *dir, uint64_t map_bytes, const char *instance, char *err,
                          size_t errlen)
{
    return s_open(dir, map_bytes, instance, false, err, errlen);
}

fp_store_t *fp_store_open_tool(const char *dir, uint64_t map_bytes, const char *instance,
                               char *err, size_t errlen)
{
    return s_open(dir, map_bytes, instance, true, err, errlen);
}

uint32_t fp_store_upgraded_from(const fp_store_t *self)
{
    assert(self);
    return self->upgraded_from;
}

void fp_store_close(fp_store_t **self_p)
{
    assert(self_p);
    fp_store_t *self = *self_p;
    if (!self)
        return;
    assert(!self->txn_open);
    mdb_env_close(self->env);
    close(self->dir_fd); /* releases the flock */
    free(self);
    *self_p = NULL;
}

/* ---- write side ---- */

int fp_store_begin(fp_store_t *self, fp_store_txn_t **txn)
{
    assert(self && txn);
    assert(!self->txn_open);
    assert(!self->tool); /* its dl_seq is not the running floorpost's */
    *txn = NULL;
    fp_store_txn_t *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    int rc = fp_store_w_begin(self, &t->w);
    if (rc != 0) {
        free(t);
        return rc;
    }
    t->txn = t->w.txn;
    /* put_reader refuses a position past the last committed event: that is
       meta global_seq as the txn starts (set_round may raise it later). */
    rc = fp_store_meta_get64(t->txn, self, "global_seq", &t->committed_gseq);
    if (rc != 0) {
        fp_store_w_abort(&t->w);
        free(t);
        return rc;
    }
    t->store = self;
    t->dl_seq = self->dl_seq;
    self->txn_open = true;
    *txn = t;
    return 0;
}

int fp_store_txn_fail(fp_store_txn_t *t, int rc)
{
    if (t->rc == 0)
        t->rc = rc;
    if (rc == FP_STORE_FULL)
        t->store->full = true; /* even if the caller then aborts instead of committing */
    return t->rc;
}

int fp_store_put_key(fp_store_txn_t *t, const void *key, size_t klen, const void *state,
                     size_t slen)
{
    assert(t && key);
    if (t->rc)
        return t->rc;
    if (klen == 0 || klen > FP_STORE_KEY_MAX)
        return fp_store_txn_fail(t, -EINVAL);
    MDB_val k = {klen, (void *)key};
    int rc;
    /* Through one cursor: LMDB then looks for the key on the leaf page the
       cursor is on before it descends from the root, so keys put in key
       order (emit sorts each round's) mostly skip the descent. */
    if (!t->kcur && (rc = mdb_cursor_open(t->txn, t->store->dbi[FP_STORE_DB_KEYS], &t->kcur)) != 0)
        return fp_store_txn_fail(t, fp_store_lmdb_rc(rc));
    if (state) {
        rc = fp_store_w_put(&t->w, FP_STORE_DB_KEYS, t->kcur, &k, state, slen, 0);
    } else {
        MDB_val d;
        rc = mdb_cursor_get(t->kcur, &k, &d, MDB_SET);
        if (rc == 0)
            rc = fp_store_w_del(&t->w, FP_STORE_DB_KEYS, t->kcur, &k, &d);
        else if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc ? fp_store_txn_fail(t, fp_store_lmdb_rc(rc)) : 0;
}

/* Sets (state non-NULL) or deletes (NULL; fine if absent) k in table db. */
static int s_put_or_del(fp_store_txn_t *t, int db, MDB_val *k, const void *state, size_t slen)
{
    int rc;
    if (state) {
        rc = fp_store_w_put(&t->w, db, NULL, k, state, slen, 0);
    } else {
        rc = fp_store_w_del(&t->w, db, NULL, k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc ? fp_store_txn_fail(t, fp_store_lmdb_rc(rc)) : 0;
}

int fp_store_put_source(fp_store_txn_t *t, uint64_t source_id, const void *state, size_t slen)
{
    assert(t);
    if (t->rc)
        return t->rc;
    uint8_t kb[8];
    fp_store_enc64(kb, source_id);
    MDB_val k = {8, kb};
    return s_put_or_del(t, FP_STORE_DB_SOURCES, &k, state, slen);
}

int fp_store_put_counter(fp_store_txn_t *t, const void *key, size_t klen, const void *state,
                         size_t slen)
{
    assert(t && key);
    if (t->rc)
        return t->rc;
    if (klen == 0 || klen > FP_STORE_KEY_MAX)
        return fp_store_txn_fail(t, -EINVAL);
    MDB_val k = {klen, (void *)key};
    return s_put_or_del(t, FP_STORE_DB_COUNTERS, &k, state, slen);
}

int fp_store_put_feed(fp_store_txn_t *t, const char *topic, size_t tlen, uint64_t last_stream_seq)
{
    assert(t && topic);
    if (t->rc)
        return t->rc;
    if (tlen == 0 || tlen > FP_STORE_KEY_MAX)
        return fp_store_txn_fail(t, -EINVAL);
    uint8_t vb[8];
    fp_store_enc64(vb, last_stream_seq);
    MDB_val k = {tlen, (void *)topic};
    int rc = fp_store_w_put(&t->w, FP_STORE_DB_FEEDS, NULL, &k, vb, 8, 0);
    return rc ? fp_store_txn_fail(t, fp_store_lmdb_rc(rc)) : 0;
}

int fp_store_put_deadletter(fp_store_txn_t *t, int64_t wall_ns, const char *reason,
                            const char *json, size_t jlen, const void *payload, size_t plen,
                            uint64_t *dl_seq_out)
{
    assert(t && reason && (json || jlen == 0) && (payload || plen == 0));
    if (t->rc)
        return t->rc;
    size_t rlen = strlen(reason) + 1; /* with its NUL, so readers get a C string */
    if (rlen > 256 || jlen > UINT32_MAX || plen > SIZE_MAX / 2)
        return fp_store_txn_fail(t, -EINVAL);
    uint64_t seq = t->dl_seq + 1;
    uint8_t kb[8];
    fp_store_enc64(kb, seq);
    MDB_val k = {8, kb};
    size_t vlen = 8 + 2 + rlen + 4 + jlen + plen;
    uint8_t *p, *p0;
    int rc = fp_store_w_reserve(&t->w, FP_STORE_DB_DEAD, &k, vlen, MDB_APPEND, &p);
    if (rc != 0)
        return fp_store_txn_fail(t, fp_store_lmdb_rc(rc));
    p0 = p;
    fp_store_enc64(p, (uint64_t)wall_ns);
    fp_store_enc16(p + 8, (uint16_t)rlen);
    memcpy(p + 10, reason, rlen);
    p += 10 + rlen;
    fp_store_enc32(p, (uint32_t)jlen);
    if (jlen)
        memcpy(p + 4, json, jlen);
    if (plen)
        memcpy(p + 4 + jlen, payload, plen);
    fp_store_w_seal(&t->w, FP_STORE_DB_DEAD, &k, p0, vlen);
    rc = fp_store_meta_put64(&t->w, "dl_seq", seq);
    if (rc != 0)
        return fp_store_txn_fail(t, fp_store_lmdb_rc(rc));
    t->dl_seq = seq;
    if (dl_seq_out)
        *dl_seq_out = seq;
    return 0;
}

int fp_store_set_round(fp_store_txn_t *t, uint64_t round, uint64_t global_seq)
{
    assert(t);
    if (t->rc)
        return t->rc;
    int rc = fp_store_meta_put64(&t->w, "round", round);
    if (rc == 0)
        rc = fp_store_meta_put64(&t->w, "global_seq", global_seq);
    return rc ? fp_store_txn_fail(t, fp_store_lmdb_rc(rc)) : 0;
}

int fp_store_commit(fp_store_txn_t **t_p)
{
    assert(t_p && *t_p);
    fp_store_txn_t *t = *t_p;
    fp_store_t *self = t->store;
    int rc = t->rc;
    if (t->kcur)
        mdb_cursor_close(t->kcur);
    if (rc != 0) {
        fp_store_w_abort(&t->w);
    } else {
        /* mdb_txn_commit frees the txn whatever the result. */
        rc = fp_store_commit_rc(self, fp_store_w_commit(&t->w));
        if (rc == 0)
            self->dl_seq = t->dl_seq;
    }
    if (rc == FP_STORE_FULL || rc == 0)
        self->full = rc == FP_STORE_FULL;
    self->txn_open = false;
    free(t);
    *t_p = NULL;
    return rc;
}

void fp_store_abort(fp_store_txn_t **t_p)
{
    assert(t_p);
    fp_store_txn_t *t = *t_p;
    if (!t)
        return;
    if (t->kcur)
        mdb_cursor_close(t->kcur);
    fp_store_w_abort(&t->w);
    t->store->txn_open = false;
    free(t);
    *t_p = NULL;
}

void fp_store_after_free(fp_store_t *self)
{
    /* LMDB reuses the pages a commit freed only from the second commit after
       it (the last snapshot stays intact). When the store is full, the next
       round could not be that commit; so make one here, as small as can be:
       after it the pages the delete freed are free for the next round. Its
       own failure changes nothing (the delete is committed). Only after a
       FULL: it costs an fsync. */
    fp_store_w_t w;
    if (self->full && fp_store_w_begin(self, &w) == 0) {
        if (fp_store_meta_put64(&w, "trimmed_ns", (uint64_t)fp_store_now_ns()) == 0)
            fp_store_w_commit(&w);
        else
            fp_store_w_abort(&w);
    }
}

int fp_store_delete_deadletter(fp_store_t *self, uint64_t dl_seq)
{
    assert(self);
    assert(!self->txn_open);
    fp_store_w_t w;
    int rc = fp_store_w_begin(self, &w);
    if (rc != 0)
        return rc;
    uint8_t kb[8];
    fp_store_enc64(kb, dl_seq);
    MDB_val k = {8, kb};
    rc = fp_store_w_del(&w, FP_STORE_DB_DEAD, NULL, &k, NULL);
    if (rc != 0) {
        fp_store_w_abort(&w);
        return rc == MDB_NOTFOUND ? FP_STORE_NOTFOUND : fp_store_lmdb_rc(rc);
    }
    return fp_store_commit_rc(self, fp_store_w_commit(&w));
}

/* The pages of table db in txn, in bytes; its entries in *entries. */
static uint64_t s_table_bytes(MDB_txn *txn, MDB_dbi dbi, uint64_t *entries)
{
    MDB_stat st;
    if (mdb_stat(txn, dbi, &st) != 0) {
        *entries = 0;
        return 0;
    }
    *entries = st.ms_entries;
    return (uint64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * st.ms_psize;
}

int fp_store_trim_deadletters(fp_store_t *self, int64_t older_than_wall_ns, uint64_t max_count,
                              uint64_t max_bytes, uint32_t max_delete,
                              fp_store_dl_trim_t *deleted, uint64_t *count, uint64_t *bytes)
{
    assert(self && deleted && count && bytes);
    assert(!self->txn_open);
    *deleted = (fp_store_dl_trim_t){0};
    fp_store_w_t w;
    MDB_cursor *cur = NULL;
    MDB_dbi dbi = self->dbi[FP_STORE_DB_DEAD];
    int rc = fp_store_w_begin(self, &w);
    if (rc != 0)
        return rc;
    MDB_txn *txn = w.txn;
    rc = mdb_cursor_open(txn, dbi, &cur);
    uint64_t n = 0, entries = 0, used = 0;
    MDB_val k, d;
    /* Always the first record (the lowest dl_seq, the oldest): each delete
       makes the next one first. The table's figures are the txn's own, so
       they follow the deletes. */
    while (rc == 0 && n < max_delete) {
        used = s_table_bytes(txn, dbi, &entries);
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
        if (rc != 0)
            break;
        MDB_val v = d;
        if (k.mv_size != 8 || fp_store_unseal(FP_STORE_DB_DEAD, &k, &v) != 0 || v.mv_size < 8) {
            rc = FP_STORE_CORRUPT;
            break;
        }
        uint64_t *why = (int64_t)fp_store_dec64(v.mv_data) < older_than_wall_ns ? &deleted->age
                        : entries > max_count                                 ? &deleted->count
                        : used > max_bytes                                     ? &deleted->bytes
                                                                               : NULL;
        if (!why)
            break;
        rc = fp_store_w_del(&w, FP_STORE_DB_DEAD, cur, &k, &d);
        if (rc == 0) {
            n++;
            (*why)++;
        }
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    used = s_table_bytes(txn, dbi, &entries);
    if (cur)
        mdb_cursor_close(cur);
    if (rc != 0 || n == 0) {
        fp_store_w_abort(&w);
        *deleted = (fp_store_dl_trim_t){0};
        if (rc != 0)
            return rc == FP_STORE_CORRUPT ? rc : fp_store_lmdb_rc(rc);
        *count = entries;
        *bytes = used;
        return 0;
    }
    rc = fp_store_commit_rc(self, fp_store_w_commit(&w));
    if (rc != 0) {
        *deleted = (fp_store_dl_trim_t){0};
        return rc;
    }
    *count = entries;
    *bytes = used;
    fp_store_after_free(self);
    return 0;
}

/* ---- resubmissions ---- */

static void s_resubmit_key(const fp_store_resubmit_t *r, uint8_t kb[24])
{
    for (int i = 0; i < 3; i++)
        fp_store_enc64(kb + 8 * i, r->orig[i]);
}

int fp_store_put_resubmits(fp_store_t *self, const fp_store_resubmit_t *r, size_t n)
{
    assert(self && (r || n == 0));
    assert(!self->txn_open);
    fp_store_w_t w;
    int rc = fp_store_w_begin(self, &w);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t kb[24], vb[32];
        s_resubmit_key(&r[i], kb);
        fp_store_enc64(vb, r[i].source_id);
        fp_store_enc64(vb + 8, r[i].epoch);
        fp_store_enc64(vb + 16, r[i].seq);
        fp_store_enc64(vb + 24, (uint64_t)r[i].wall_ns);
        MDB_val k = {sizeof kb, kb};
        rc = fp_store_w_put(&w, FP_STORE_DB_RESUBMITS, NULL, &k, vb, sizeof vb, 0);
    }
    if (rc != 0) {
        fp_store_w_abort(&w);
        return fp_store_lmdb_rc(rc);
    }
    return fp_store_commit_rc(self, fp_store_w_commit(&w));
}

int fp_store_get_resubmit(fp_store_t *self, fp_store_resubmit_t *r)
{
    assert(self && r);
    MDB_txn *txn;
    int rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    uint8_t kb[24];
    s_resubmit_key(r, kb);
    MDB_val k = {sizeof kb, kb}, v;
    rc = fp_store_get(txn, self, FP_STORE_DB_RESUBMITS, &k, &v);
    if (rc == 0 && v.mv_size != 32)
        rc = FP_STORE_CORRUPT;
    else if (rc == 0) {
        const uint8_t *p = v.mv_data;
        r->source_id = fp_store_dec64(p);
        r->epoch = fp_store_dec64(p + 8);
        r->seq = fp_store_dec64(p + 16);
        r->wall_ns = (int64_t)fp_store_dec64(p + 24);
    } else
        rc = rc == MDB_NOTFOUND ? FP_STORE_NOTFOUND : fp_store_lmdb_rc(rc);
    mdb_txn_abort(txn);
    return rc;
}

/* ---- read side ---- */

/* Each read is one committed snapshot. Reads on a thread other than the
   writer's are not ordered against each other: in LMDB 0.9.24 a reader
   stalled inside mdb_txn_begin can copy a meta page the writer is rewriting
   and see a later commit than a reader that began after it (see
   test_concurrent_readers). floorpost reads on the commit thread, except
   fp_store_get_source on the workers: that reads a source whose state was
   committed before the call began (dedup.h "Aging"), which every snapshot
   taken after that commit holds. */
int fp_store_read_begin(fp_store_t *self, MDB_txn **txn)
{
    return fp_store_lmdb_rc(mdb_txn_begin(self->env, NULL, MDB_RDONLY, txn));
}

int fp_store_last_round(fp_store_t *self, uint64_t *round, uint64_t *global_seq)
{
    assert(self && round && global_seq);
    *round = *global_seq = 0;
    MDB_txn *txn;
    int rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    rc = fp_store_meta_get64(txn, self, "round", round);
    if (rc == 0)
        rc = fp_store_meta_get64(txn, self, "global_seq", global_seq);
    mdb_txn_abort(txn);
    return rc;
}

static int s_scan(fp_store_t *self, int db, const MDB_val *from, bool raw,
                  int (*each)(void *ctx2, const MDB_val *k, const MDB_val *d), void *ctx2)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, self->dbi[db], &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return fp_store_lmdb_rc(rc);
    }
    MDB_val k, d;
    if (from)
        k = *from;
    MDB_cursor_op op = from ? MDB_SET_RANGE : MDB_FIRST;
    int stop = 0;
    while ((rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
        op = MDB_NEXT;
        /* A value whose checksum does not match is never handed on
           (raw: the caller checks it with fp_store_unseal). */
        if (!raw && fp_store_unseal(db, &k, &d) != 0) {
            stop = FP_STORE_CORRUPT;
            break;
        }
        stop = each(ctx2, &k, &d);
        if (stop != 0)
            break;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (stop != 0)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : fp_store_lmdb_rc(rc);
}

int fp_store_scan(fp_store_t *self, int db, const MDB_val *from,
                  int (*each)(void *ctx2, const MDB_val *k, const MDB_val *d), void *ctx2)
{
    return s_scan(self, db, from, false, each, ctx2);
}

int fp_store_scan_raw(fp_store_t *self, int db, const MDB_val *from,
                      int (*each)(void *ctx2, const MDB_val *k, const MDB_val *d), void *ctx2)
{
    return s_scan(self, db, from, true, each, ctx2);
}

typedef struct {
    void *ctx;
    void (*fn)(void); /* the caller's callback, cast back to its type by the adapter */
} s_scan_t;

typedef int (*s_key_fn)(void *, const void *, size_t, const void *, size_t);
typedef int (*s_source_fn)(void *, uint64_t, const void *, size_t);
typedef int (*s_feed_fn)(void *, const char *, size_t, uint64_t);
typedef int (*s_dead_fn)(void *, uint64_t, int64_t, const char *, const char *, size_t,
                         const void *, size_t);

static int s_each_key(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_scan_t *s = ctx2;
    return ((s_key_fn)s->fn)(s->ctx, k->mv_data, k->mv_size, d->mv_data, d->mv_size);
}

static int s_each_source(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_scan_t *s = ctx2;
    if (k->mv_size != 8)
        return FP_STORE_CORRUPT;
    return ((s_source_fn)s->fn)(s->ctx, fp_store_dec64(k->mv_data), d->mv_data, d->mv_size);
}

static int s_each_feed(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_scan_t *s = ctx2;
    if (d->mv_size != 8)
        return FP_STORE_CORRUPT;
    return ((s_feed_fn)s->fn)(s->ctx, k->mv_data, k->mv_size, fp_store_dec64(d->mv_data));
}

static int s_each_dead(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_scan_t *s = ctx2;
    const uint8_t *p = d->mv_data;
    size_t n = d->mv_size;
    if (k->mv_size != 8 || n < 10)
        return FP_STORE_CORRUPT;
    size_t rlen = fp_store_dec16(p + 8);
    if (rlen == 0 || n < 10 + rlen + 4 || p[10 + rlen - 1] != '\0')
        return FP_STORE_CORRUPT;
    size_t jlen = fp_store_dec32(p + 10 + rlen);
    size_t off = 10 + rlen + 4;
    if (n - off < jlen)
        return FP_STORE_CORRUPT;
    return ((s_dead_fn)s->fn)(s->ctx, fp_store_dec64(k->mv_data), (int64_t)fp_store_dec64(p),
                              (const char *)p + 10, (const char *)p + off, jlen, p + off + jlen,
                              n - off - jlen);
}

int fp_store_each_key(fp_store_t *self,
                      int (*fn)(void *ctx, const void *key, size_t klen, const void *state,
                                size_t slen),
                      void *ctx)
{
    assert(self && fn);
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn};
    return fp_store_scan(self, FP_STORE_DB_KEYS, NULL, s_each_key, &s);
}

int fp_store_each_counter(fp_store_t *self,
                          int (*fn)(void *ctx, const void *key, size_t klen, const void *state,
                                    size_t slen),
                          void *ctx)
{
    assert(self && fn);
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn};
    return fp_store_scan(self, FP_STORE_DB_COUNTERS, NULL, s_each_key, &s);
}

int fp_store_each_source(fp_store_t *self,
                         int (*fn)(void *ctx, uint64_t source_id, const void *state, size_t slen),
                         void *ctx)
{
    assert(self && fn);
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn};
    return fp_store_scan(self, FP_STORE_DB_SOURCES, NULL, s_each_source, &s);
}

int fp_store_get_source(fp_store_t *self, uint64_t source_id, void *buf, size_t cap,
                        size_t *len)
{
    assert(self && buf && len);
    MDB_txn *txn;
    int rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    uint8_t kb[8];
    fp_store_enc64(kb, source_id);
    MDB_val k = {8, kb}, v;
    /* Through the checked read: a value whose checksum does not match is
       FP_STORE_CORRUPT, never a watermark (format 5). */
    rc = fp_store_get(txn, self, FP_STORE_DB_SOURCES, &k, &v);
    if (rc == 0 && v.mv_size > cap)
        rc = FP_STORE_CORRUPT;
    else if (rc == 0) {
        memcpy(buf, v.mv_data, v.mv_size);
        *len = v.mv_size;
    } else if (rc != FP_STORE_CORRUPT)
        rc = rc == MDB_NOTFOUND ? FP_STORE_NOTFOUND : fp_store_lmdb_rc(rc);
    mdb_txn_abort(txn);
    return rc;
}

int fp_store_each_feed(fp_store_t *self,
                       int (*fn)(void *ctx, const char *topic, size_t tlen, uint64_t last_seq),
                       void *ctx)
{
    assert(self && fn);
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn};
    return fp_store_scan(self, FP_STORE_DB_FEEDS, NULL, s_each_feed, &s);
}

int fp_store_each_deadletter(fp_store_t *self, uint64_t from_dl_seq,
                             int (*fn)(void *ctx, uint64_t dl_seq, int64_t wall_ns,
                                       const char *reason, const char *json, size_t jlen,
                                       const void *payload, size_t plen),
                             void *ctx)
{
    assert(self && fn);
    uint8_t kb[8];
    fp_store_enc64(kb, from_dl_seq);
    MDB_val from = {8, kb};
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn};
    return fp_store_scan(self, FP_STORE_DB_DEAD, &from, s_each_dead, &s);
}

int fp_store_deadletter_usage(fp_store_t *self, uint64_t *count, uint64_t *bytes)
{
    assert(self && count && bytes);
    MDB_txn *txn;
    int rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    *bytes = s_table_bytes(txn, self->dbi[FP_STORE_DB_DEAD], count);
    mdb_txn_abort(txn);
    return 0;
}

int fp_store_usage(fp_store_t *self, uint64_t *used_bytes, uint64_t *map_bytes)
{
    assert(self && used_bytes && map_bytes);
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    int rc = mdb_env_info(self->env, &info);
    if (rc != 0)
        return fp_store_lmdb_rc(rc);
    *map_bytes = info.me_mapsize;
    rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    MDB_dbi main_dbi;
    uint64_t pages = 2; /* the meta pages */
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    for (int i = -1; rc == 0 && i < FP_STORE_NDBS; i++) {
        rc = mdb_stat(txn, i < 0 ? main_dbi : self->dbi[i], &st);
        if (rc == 0)
            pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    }
    mdb_txn_abort(txn);
    if (rc != 0)
        return fp_store_lmdb_rc(rc);
    *used_bytes = pages * st.ms_psize;
    return 0;
}
