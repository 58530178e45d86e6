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

enum { S_META, S_KEYS, S_SOURCES, S_FEEDS, S_OUTBOX, S_DEAD, S_NDBS };
static const char *const s_db_names[S_NDBS] = {"meta",  "keys",   "sources",
                                                "feeds", "outbox", "deadletters"};

#define S_EVENT_HDR 18u  /* u64 wall ns, u64 round, u16 topic length */
/* Concurrent read txns: every worker and shard restores at once at start-up
   (up to 64 + 64), plus replay requests. LMDB's default is 126. */
#define S_MAX_READERS 512u
#define S_NEARLY_FULL_BYTES (64u << 20) /* free disk below which EIO means full */

struct fp_store {
    MDB_env *env;
    MDB_dbi dbi[S_NDBS];      /* set at open, read-only after */
    int dir_fd;               /* holds the flock on DIR (not in tool mode) */
    bool tool;                /* fp_store_open_tool: no flock, no round writes */
    uint64_t dl_seq;          /* last committed dead-letter seq (commit thread) */
    bool txn_open;            /* commit thread only: a write txn is open */
    bool full;                /* commit thread only: the last commit failed FULL */
};

struct fp_store_txn {
    fp_store_t *store;
    MDB_txn *txn;
    int rc;                   /* first failure; the txn cannot commit once set */
    uint64_t dl_seq;          /* last dl_seq assigned in this txn */
    MDB_cursor *kcur;         /* fp_store_put_key's, opened on first use */
};

/* ---- small helpers ---- */

static void s_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t s_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void s_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t s_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void s_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint16_t s_get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* LMDB result (0, MDB_* negative, or positive errno) -> our code. */
static int s_rc(int mdb_rc)
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
static int s_commit_rc(fp_store_t *self, int mdb_rc)
{
    int fd;
    struct statvfs vfs;
    if (mdb_rc == EIO && mdb_env_get_fd(self->env, &fd) == 0 && fstatvfs(fd, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < S_NEARLY_FULL_BYTES)
        return FP_STORE_FULL;
    return s_rc(mdb_rc);
}

static int64_t s_now_ns(void)
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

/* ---- open ---- */

static int s_get_meta(MDB_txn *txn, MDB_dbi dbi, const char *name, MDB_val *val)
{
    MDB_val k = {strlen(name), (void *)name};
    return mdb_get(txn, dbi, &k, val);
}

static int s_put_meta(MDB_txn *txn, MDB_dbi dbi, const char *name, const void *v, size_t len)
{
    MDB_val k = {strlen(name), (void *)name};
    MDB_val d = {len, (void *)v};
    return mdb_put(txn, dbi, &k, &d, 0);
}

static int s_put_meta64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t v)
{
    uint8_t b[8];
    s_be64(b, v);
    return s_put_meta(txn, dbi, name, b, 8);
}

/* 0 and *v (0 when absent), or an LMDB error / FP_STORE_CORRUPT. */
static int s_meta64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *v)
{
    MDB_val d;
    int rc = s_get_meta(txn, dbi, name, &d);
    *v = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return s_rc(rc);
    if (d.mv_size != 8)
        return FP_STORE_CORRUPT;
    *v = s_get64(d.mv_data);
    return 0;
}

/* Checks an existing store's meta in txn (writes nothing), or, when the env
   holds nothing at all, creates every table and the meta records. Returns
   0, or -1 with err filled. */
static int s_check_or_init(fp_store_t *self, MDB_txn *txn, const char *path,
                           const char *instance, char *err, size_t errlen)
{
    MDB_dbi meta;
    int rc = mdb_dbi_open(txn, s_db_names[S_META], 0, &meta);
    bool fresh = false;
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
        MDB_val d;
        rc = s_get_meta(txn, meta, "magic", &d);
        if (rc != 0 || d.mv_size != strlen(FP_STORE_MAGIC) ||
            memcmp(d.mv_data, FP_STORE_MAGIC, d.mv_size) != 0) {
            snprintf(err, errlen, "%s: not a floorpost state file (%s)", path,
                     rc != 0 ? "no magic record" : "wrong magic");
            return -1;
        }
        rc = s_get_meta(txn, meta, "version", &d);
        if (rc != 0 || d.mv_size != 4) {
            snprintf(err, errlen, "%s: not a floorpost state file (no format version)", path);
            return -1;
        }
        uint32_t version = s_get32(d.mv_data);
        if (version != FP_STORE_FORMAT_VERSION) {
            snprintf(err, errlen, "%s: format version %u, this floorpost reads %u", path, version,
                     FP_STORE_FORMAT_VERSION);
            return -1;
        }
        rc = s_get_meta(txn, meta, "instance", &d);
        if (rc != 0 || d.mv_size > FP_STORE_INSTANCE_MAX) {
            snprintf(err, errlen, "%s: not a floorpost state file (no instance name)", path);
            return -1;
        }
        if (d.mv_size != strlen(instance) || memcmp(d.mv_data, instance, d.mv_size) != 0) {
            snprintf(err, errlen, "%s: belongs to instance %.*s, this is %s", path,
                     (int)d.mv_size, (const char *)d.mv_data, instance);
            return -1;
        }
        rc = s_meta64(txn, meta, "dl_seq", &self->dl_seq);
        if (rc != 0) {
            snprintf(err, errlen, "%s: damaged meta record dl_seq (%s)", path, fp_store_strerror(rc));
            return -1;
        }
    }
    for (int i = 0; i < S_NDBS; i++) {
        rc = mdb_dbi_open(txn, s_db_names[i], self->tool ? 0 : MDB_CREATE, &self->dbi[i]);
        if (rc != 0) {
            snprintf(err, errlen, "%s: table %s: %s", path, s_db_names[i], mdb_strerror(rc));
            return -1;
        }
    }
    if (fresh) {
        uint8_t v[4];
        s_be32(v, FP_STORE_FORMAT_VERSION);
        meta = self->dbi[S_META];
        rc = s_put_meta(txn, meta, "magic", FP_STORE_MAGIC, strlen(FP_STORE_MAGIC));
        if (rc == 0)
            rc = s_put_meta(txn, meta, "version", v, 4);
        if (rc == 0)
            rc = s_put_meta(txn, meta, "instance", instance, strlen(instance));
        if (rc == 0)
            rc = s_put_meta64(txn, meta, "created_ns", (uint64_t)s_now_ns());
        if (rc == 0)
            rc = s_put_meta64(txn, meta, "round", 0);
        if (rc == 0)
            rc = s_put_meta64(txn, meta, "global_seq", 0);
        if (rc == 0)
            rc = s_put_meta64(txn, meta, "dl_seq", 0);
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
    if ((rc = mdb_env_create(&self->env)) != 0 || (rc = mdb_env_set_maxdbs(self->env, 8)) != 0 ||
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
    if (s_check_or_init(self, txn, path, instance, err, errlen) != 0)
        goto fail;
    /* Accepted: extend the file (sparse) to the map, before this first
       commit, so that from now on no committed page lies past its end (see
       the invariants above). fdatasync in the commit makes the size durable. */
    if (!tool && (uint64_t)st.st_size < (uint64_t)info.me_mapsize &&
        ftruncate(fd, (off_t)info.me_mapsize) != 0) {
        snprintf(err, errlen, "%s: cannot extend to the map size: %s", path, strerror(errno));
        goto fail;
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, mdb_strerror(rc));
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
    int rc = mdb_txn_begin(self->env, NULL, 0, &t->txn);
    if (rc != 0) {
        free(t);
        return s_rc(rc);
    }
    t->store = self;
    t->dl_seq = self->dl_seq;
    self->txn_open = true;
    *txn = t;
    return 0;
}

/* Records the first failure of t; returns the txn's error. */
static int s_fail(fp_store_txn_t *t, int rc)
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
        return s_fail(t, -EINVAL);
    MDB_val k = {klen, (void *)key};
    int rc;
    /* Through one cursor: LMDB then looks for the key on the leaf page the
       cursor is on before it descends from the root, so keys put in key
       order (emit sorts each round's) mostly skip the descent. */
    if (!t->kcur && (rc = mdb_cursor_open(t->txn, t->store->dbi[S_KEYS], &t->kcur)) != 0)
        return s_fail(t, s_rc(rc));
    if (state) {
        MDB_val d = {slen, (void *)state};
        rc = mdb_cursor_put(t->kcur, &k, &d, 0);
    } else {
        MDB_val d;
        rc = mdb_cursor_get(t->kcur, &k, &d, MDB_SET);
        if (rc == 0)
            rc = mdb_cursor_del(t->kcur, 0);
        else if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc ? s_fail(t, s_rc(rc)) : 0;
}

int fp_store_put_source(fp_store_txn_t *t, uint64_t source_id, const void *state, size_t slen)
{
    assert(t);
    if (t->rc)
        return t->rc;
    uint8_t kb[8];
    s_be64(kb, source_id);
    MDB_val k = {8, kb};
    int rc;
    if (state) {
        MDB_val d = {slen, (void *)state};
        rc = mdb_put(t->txn, t->store->dbi[S_SOURCES], &k, &d, 0);
    } else {
        rc = mdb_del(t->txn, t->store->dbi[S_SOURCES], &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc ? s_fail(t, s_rc(rc)) : 0;
}

int fp_store_put_feed(fp_store_txn_t *t, const char *topic, size_t tlen, uint64_t last_stream_seq)
{
    assert(t && topic);
    if (t->rc)
        return t->rc;
    if (tlen == 0 || tlen > FP_STORE_KEY_MAX)
        return s_fail(t, -EINVAL);
    uint8_t vb[8];
    s_be64(vb, last_stream_seq);
    MDB_val k = {tlen, (void *)topic}, d = {8, vb};
    int rc = mdb_put(t->txn, t->store->dbi[S_FEEDS], &k, &d, 0);
    return rc ? s_fail(t, s_rc(rc)) : 0;
}

int fp_store_put_event(fp_store_txn_t *t, uint64_t global_seq, uint64_t round, int64_t wall_ns,
                       const char *topic, size_t tlen, const void *ev, size_t evlen)
{
    assert(t && topic && (ev || evlen == 0));
    if (t->rc)
        return t->rc;
    if (tlen == 0 || tlen > UINT16_MAX || evlen > SIZE_MAX / 2)
        return s_fail(t, -EINVAL);
    uint8_t kb[8];
    s_be64(kb, global_seq);
    MDB_val k = {8, kb}, d = {S_EVENT_HDR + tlen + evlen, NULL};
    /* APPEND: the outbox only grows at its end; a seq out of order is our
       bug and fails the round (MDB_KEYEXIST) instead of overwriting. */
    int rc = mdb_put(t->txn, t->store->dbi[S_OUTBOX], &k, &d, MDB_RESERVE | MDB_APPEND);
    if (rc != 0)
        return s_fail(t, s_rc(rc));
    uint8_t *p = d.mv_data;
    s_be64(p, (uint64_t)wall_ns);
    s_be64(p + 8, round);
    s_be16(p + 16, (uint16_t)tlen);
    memcpy(p + S_EVENT_HDR, topic, tlen);
    if (evlen)
        memcpy(p + S_EVENT_HDR + tlen, ev, evlen);
    return 0;
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
        return s_fail(t, -EINVAL);
    uint64_t seq = t->dl_seq + 1;
    uint8_t kb[8];
    s_be64(kb, seq);
    MDB_val k = {8, kb}, d = {8 + 2 + rlen + 4 + jlen + plen, NULL};
    int rc = mdb_put(t->txn, t->store->dbi[S_DEAD], &k, &d, MDB_RESERVE | MDB_APPEND);
    if (rc == 0)
        rc = s_put_meta64(t->txn, t->store->dbi[S_META], "dl_seq", seq);
    if (rc != 0)
        return s_fail(t, s_rc(rc));
    uint8_t *p = d.mv_data;
    s_be64(p, (uint64_t)wall_ns);
    s_be16(p + 8, (uint16_t)rlen);
    memcpy(p + 10, reason, rlen);
    p += 10 + rlen;
    s_be32(p, (uint32_t)jlen);
    if (jlen)
        memcpy(p + 4, json, jlen);
    if (plen)
        memcpy(p + 4 + jlen, payload, plen);
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
    int rc = s_put_meta64(t->txn, t->store->dbi[S_META], "round", round);
    if (rc == 0)
        rc = s_put_meta64(t->txn, t->store->dbi[S_META], "global_seq", global_seq);
    return rc ? s_fail(t, s_rc(rc)) : 0;
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
        mdb_txn_abort(t->txn);
    } else {
        /* mdb_txn_commit frees the txn whatever the result. */
        rc = s_commit_rc(self, mdb_txn_commit(t->txn));
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
    mdb_txn_abort(t->txn);
    t->store->txn_open = false;
    free(t);
    *t_p = NULL;
}

/* Parses an outbox record; false when its layout is impossible. */
static bool s_event_parse(const MDB_val *d, int64_t *wall_ns, uint64_t *round, const char **topic,
                          size_t *tlen, const void **ev, size_t *evlen)
{
    const uint8_t *p = d->mv_data;
    if (d->mv_size < S_EVENT_HDR)
        return false;
    size_t tl = s_get16(p + 16);
    if (tl == 0 || d->mv_size < S_EVENT_HDR + tl)
        return false;
    *wall_ns = (int64_t)s_get64(p);
    *round = s_get64(p + 8);
    *topic = (const char *)p + S_EVENT_HDR;
    *tlen = tl;
    *ev = p + S_EVENT_HDR + tl;
    *evlen = d->mv_size - S_EVENT_HDR - tl;
    return true;
}

int fp_store_trim_events(fp_store_t *self, int64_t older_than_wall_ns, uint32_t max_delete,
                         uint64_t *deleted)
{
    assert(self);
    assert(!self->txn_open);
    uint64_t n = 0;
    if (deleted)
        *deleted = 0;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc != 0)
        return s_rc(rc);
    rc = mdb_cursor_open(txn, self->dbi[S_OUTBOX], &cur);
    MDB_val k, d;
    /* Always the first record: each delete makes the next one first. */
    while (rc == 0 && n < max_delete) {
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
        if (rc != 0)
            break;
        int64_t wall;
        uint64_t round;
        const char *topic;
        const void *ev;
        size_t tlen, evlen;
        if (!s_event_parse(&d, &wall, &round, &topic, &tlen, &ev, &evlen)) {
            rc = FP_STORE_CORRUPT;
            break;
        }
        if (wall >= older_than_wall_ns)
            break;
        rc = mdb_cursor_del(cur, 0);
        if (rc == 0)
            n++;
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (cur)
        mdb_cursor_close(cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc == FP_STORE_CORRUPT ? rc : s_rc(rc);
    }
    if (n == 0) {
        mdb_txn_abort(txn);
        return 0;
    }
    rc = s_commit_rc(self, mdb_txn_commit(txn));
    if (rc != 0)
        return rc;
    if (deleted)
        *deleted = n;
    /* LMDB reuses the pages a commit freed only from the second commit after
       it (the last snapshot stays intact). When the store is full, the next
       round could not be that commit; so make one here, as small as can be:
       after it the pages the delete freed are free for the next round. Its
       own failure changes nothing (the delete is committed). Only after a
       FULL: it costs an fsync. */
    if (self->full && mdb_txn_begin(self->env, NULL, 0, &txn) == 0) {
        if (s_put_meta64(txn, self->dbi[S_META], "trimmed_ns", (uint64_t)s_now_ns()) == 0)
            mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    return 0;
}

int fp_store_delete_deadletter(fp_store_t *self, uint64_t dl_seq)
{
    assert(self);
    assert(!self->txn_open);
    MDB_txn *txn;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc != 0)
        return s_rc(rc);
    uint8_t kb[8];
    s_be64(kb, dl_seq);
    MDB_val k = {8, kb};
    rc = mdb_del(txn, self->dbi[S_DEAD], &k, NULL);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc == MDB_NOTFOUND ? FP_STORE_NOTFOUND : s_rc(rc);
    }
    return s_commit_rc(self, mdb_txn_commit(txn));
}

/* ---- read side ---- */

/* Each read is one committed snapshot. Reads on a thread other than the
   writer's are not ordered against each other: in LMDB 0.9.24 a reader
   stalled inside mdb_txn_begin can copy a meta page the writer is rewriting
   and see a later commit than a reader that began after it (see
   test_concurrent_readers). floorpost reads only on the commit thread. */
static int s_read_begin(fp_store_t *self, MDB_txn **txn)
{
    return s_rc(mdb_txn_begin(self->env, NULL, MDB_RDONLY, txn));
}

int fp_store_last_round(fp_store_t *self, uint64_t *round, uint64_t *global_seq)
{
    assert(self && round && global_seq);
    *round = *global_seq = 0;
    MDB_txn *txn;
    int rc = s_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    rc = s_meta64(txn, self->dbi[S_META], "round", round);
    if (rc == 0)
        rc = s_meta64(txn, self->dbi[S_META], "global_seq", global_seq);
    mdb_txn_abort(txn);
    return rc;
}

/* One read txn and cursor over table db from `from` (NULL: the first key);
   calls each(ctx2, key, data) until it returns non-zero. Returns 0 at the
   end, each's non-zero value, or a negative error. */
static int s_scan(fp_store_t *self, int db, const MDB_val *from,
                  int (*each)(void *ctx2, const MDB_val *k, const MDB_val *d), void *ctx2)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = s_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, self->dbi[db], &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return s_rc(rc);
    }
    MDB_val k, d;
    if (from)
        k = *from;
    MDB_cursor_op op = from ? MDB_SET_RANGE : MDB_FIRST;
    int stop = 0;
    while ((rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
        op = MDB_NEXT;
        stop = each(ctx2, &k, &d);
        if (stop != 0)
            break;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (stop != 0)
        return stop;
    return rc == MDB_NOTFOUND ? 0 : s_rc(rc);
}

typedef struct {
    void *ctx;
    void (*fn)(void); /* the caller's callback, cast back to its type by the adapter */
    uint32_t max;   /* events_from: the limit */
    uint32_t count; /* events_from: events fn accepted */
    int fn_rc;      /* the caller's non-zero return value, or a store error */
} s_scan_t;

typedef int (*s_key_fn)(void *, const void *, size_t, const void *, size_t);
typedef int (*s_source_fn)(void *, uint64_t, const void *, size_t);
typedef int (*s_feed_fn)(void *, const char *, size_t, uint64_t);
typedef int (*s_event_fn)(void *, uint64_t, uint64_t, const char *, size_t, const void *, size_t);
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
    return ((s_source_fn)s->fn)(s->ctx, s_get64(k->mv_data), d->mv_data, d->mv_size);
}

static int s_each_feed(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_scan_t *s = ctx2;
    if (d->mv_size != 8)
        return FP_STORE_CORRUPT;
    return ((s_feed_fn)s->fn)(s->ctx, k->mv_data, k->mv_size, s_get64(d->mv_data));
}

static int s_each_event(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_scan_t *s = ctx2;
    if (s->count >= s->max)
        return 1;
    int64_t wall;
    uint64_t round;
    const char *topic;
    const void *ev;
    size_t tlen, evlen;
    if (k->mv_size != 8 || !s_event_parse(d, &wall, &round, &topic, &tlen, &ev, &evlen)) {
        s->fn_rc = FP_STORE_CORRUPT;
        return 1;
    }
    if (((s_event_fn)s->fn)(s->ctx, s_get64(k->mv_data), round, topic, tlen, ev, evlen) != 0)
        return 1;
    s->count++;
    return 0;
}

static int s_each_dead(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_scan_t *s = ctx2;
    const uint8_t *p = d->mv_data;
    size_t n = d->mv_size;
    if (k->mv_size != 8 || n < 10)
        return FP_STORE_CORRUPT;
    size_t rlen = s_get16(p + 8);
    if (rlen == 0 || n < 10 + rlen + 4 || p[10 + rlen - 1] != '\0')
        return FP_STORE_CORRUPT;
    size_t jlen = s_get32(p + 10 + rlen);
    size_t off = 10 + rlen + 4;
    if (n - off < jlen)
        return FP_STORE_CORRUPT;
    return ((s_dead_fn)s->fn)(s->ctx, s_get64(k->mv_data), (int64_t)s_get64(p),
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
    return s_scan(self, S_KEYS, NULL, s_each_key, &s);
}

int fp_store_each_source(fp_store_t *self,
                         int (*fn)(void *ctx, uint64_t source_id, const void *state, size_t slen),
                         void *ctx)
{
    assert(self && fn);
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn};
    return s_scan(self, S_SOURCES, NULL, s_each_source, &s);
}

int fp_store_each_feed(fp_store_t *self,
                       int (*fn)(void *ctx, const char *topic, size_t tlen, uint64_t last_seq),
                       void *ctx)
{
    assert(self && fn);
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn};
    return s_scan(self, S_FEEDS, NULL, s_each_feed, &s);
}

int fp_store_each_deadletter(fp_store_t *self, uint64_t from_dl_seq,
                             int (*fn)(void *ctx, uint64_t dl_seq, int64_t wall_ns,
                                       const char *reason, const char *json, size_t jlen,
                                       const void *payload, size_t plen),
                             void *ctx)
{
    assert(self && fn);
    uint8_t kb[8];
    s_be64(kb, from_dl_seq);
    MDB_val from = {8, kb};
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn};
    return s_scan(self, S_DEAD, &from, s_each_dead, &s);
}

int fp_store_events_from(fp_store_t *self, uint64_t from_global_seq, uint32_t max,
                         int (*fn)(void *ctx, uint64_t global_seq, uint64_t round,
                                   const char *topic, size_t tlen, const void *ev, size_t evlen),
                         void *ctx)
{
    assert(self && fn);
    if (max == 0)
        return 0;
    if (max > INT32_MAX)
        max = INT32_MAX; /* the count is returned as an int */
    uint8_t kb[8];
    s_be64(kb, from_global_seq);
    MDB_val from = {8, kb};
    s_scan_t s = {.ctx = ctx, .fn = (void (*)(void))fn, .max = max};
    int rc = s_scan(self, S_OUTBOX, &from, s_each_event, &s);
    if (s.fn_rc != 0)
        return s.fn_rc;
    if (rc < 0)
        return rc;
    return (int)s.count;
}

int fp_store_oldest_event(fp_store_t *self, uint64_t *global_seq)
{
    assert(self && global_seq);
    *global_seq = 0;
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = s_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, self->dbi[S_OUTBOX], &cur);
    if (rc == 0) {
        MDB_val k, d;
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
        if (rc == 0 && k.mv_size != 8)
            rc = FP_STORE_CORRUPT;
        else if (rc == 0)
            *global_seq = s_get64(k.mv_data);
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    if (rc == MDB_NOTFOUND)
        return FP_STORE_EMPTY;
    return rc == FP_STORE_CORRUPT ? rc : s_rc(rc);
}

int fp_store_usage(fp_store_t *self, uint64_t *used_bytes, uint64_t *map_bytes)
{
    assert(self && used_bytes && map_bytes);
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    int rc = mdb_env_info(self->env, &info);
    if (rc != 0)
        return s_rc(rc);
    *map_bytes = info.me_mapsize;
    rc = s_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    MDB_dbi main_dbi;
    uint64_t pages = 2; /* the meta pages */
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    for (int i = -1; rc == 0 && i < S_NDBS; i++) {
        rc = mdb_stat(txn, i < 0 ? main_dbi : self->dbi[i], &st);
        if (rc == 0)
            pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    }
    mdb_txn_abort(txn);
    if (rc != 0)
        return s_rc(rc);
    *used_bytes = pages * st.ms_psize;
    return 0;
}
