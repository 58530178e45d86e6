/*  outbox.c - the outbox and reader positions on the store's env.

    Invariants (see outbox.h): the outbox has no holes (the trim deletes from
    its start only); a stored reader position only grows and never exceeds
    meta global_seq; the trim never passes the smallest position of the
    enabled, not detached readers.
*/
#include "outbox.h"
#include "store_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_EVENT_HDR 18u  /* u64 wall ns, u64 round, u16 topic length */
#define S_READER_LEN1 20u /* u64 position, u32 flags, u64 updated wall ns */
#define S_READER_LEN 36u  /* + u64 aux[2], the reader's own cursor (written since 2026-12) */

/* ---- helpers ---- */

int fp_outbox_event_parse(const void *val, size_t len, int64_t *wall_ns, uint64_t *round,
                          const char **topic, size_t *tlen, const void **ev, size_t *evlen)
{
    const uint8_t *p = val;
    if (!val || len < S_EVENT_HDR)
        return FP_STORE_CORRUPT;
    size_t tl = fp_store_dec16(p + 16);
    if (tl == 0 || len - S_EVENT_HDR < tl)
        return FP_STORE_CORRUPT;
    *wall_ns = (int64_t)fp_store_dec64(p);
    *round = fp_store_dec64(p + 8);
    *topic = (const char *)p + S_EVENT_HDR;
    *tlen = tl;
    *ev = p + S_EVENT_HDR + tl;
    *evlen = len - S_EVENT_HDR - tl;
    return 0;
}

/* An outbox record; false when its layout is impossible. */
static bool s_event_parse(const MDB_val *d, int64_t *wall_ns, uint64_t *round, const char **topic,
                          size_t *tlen, const void **ev, size_t *evlen)
{
    return fp_outbox_event_parse(d->mv_data, d->mv_size, wall_ns, round, topic, tlen, ev,
                                 evlen) == 0;
}

/* The length of the first n bytes of name when they are a valid reader
   name (NUL-terminated within n or not), else 0. */
static size_t s_name_len_n(const char *name, size_t n)
{
    size_t i = 0;
    for (; i < n && name[i]; i++) {
        char c = name[i];
        if (i >= FP_OUTBOX_READER_NAME_MAX ||
            !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return i;
}

/* The name's length when it is a valid reader name, else 0. */
static size_t s_name_len(const char *name)
{
    return s_name_len_n(name, SIZE_MAX);
}

static bool s_holds_retention(uint32_t flags)
{
    return (flags & FP_OUTBOX_READER_ENABLED) && !(flags & FP_OUTBOX_READER_DETACHED);
}

/* The aux cursor of a readers value of vlen bytes (zeros in a 20-byte
   value, written before it). */
static void s_aux_dec(const uint8_t *p, size_t vlen, uint64_t aux[2])
{
    aux[0] = vlen == S_READER_LEN ? fp_store_dec64(p + 20) : 0;
    aux[1] = vlen == S_READER_LEN ? fp_store_dec64(p + 28) : 0;
}

int fp_outbox_reader_parse(const void *key, size_t klen, const void *val, size_t vlen,
                           uint64_t *position, uint32_t *flags, int64_t *updated_ns,
                           uint64_t aux[2])
{
    /* The name goes to callbacks NUL-terminated: no NUL, no other byte a
       put would have refused. */
    if (!key || !val || klen == 0 || s_name_len_n(key, klen) != klen ||
        (vlen != S_READER_LEN && vlen != S_READER_LEN1))
        return FP_STORE_CORRUPT;
    const uint8_t *p = val;
    *position = fp_store_dec64(p);
    *flags = fp_store_dec32(p + 8);
    *updated_ns = (int64_t)fp_store_dec64(p + 12);
    if (aux)
        s_aux_dec(p, vlen, aux);
    return 0;
}

/* A readers record -> its fields; false when its layout is impossible. */
static bool s_reader_parse(const MDB_val *k, const MDB_val *d, uint64_t *position,
                           uint32_t *flags, int64_t *updated_ns)
{
    return fp_outbox_reader_parse(k->mv_data, k->mv_size, d->mv_data, d->mv_size, position,
                                  flags, updated_ns, NULL) == 0;
}

/* The aux cursor of a parsed value. */
static void s_reader_aux(const MDB_val *d, uint64_t aux[2])
{
    s_aux_dec(d->mv_data, d->mv_size, aux);
}

static void s_reader_enc(uint8_t *p, uint64_t position, uint32_t flags, int64_t updated_ns,
                         const uint64_t aux[2])
{
    fp_store_enc64(p, position);
    fp_store_enc32(p + 8, flags);
    fp_store_enc64(p + 12, (uint64_t)updated_ns);
    fp_store_enc64(p + 20, aux[0]);
    fp_store_enc64(p + 28, aux[1]);
}

/* ---- write side ---- */

int fp_outbox_put(fp_store_txn_t *t, uint64_t global_seq, uint64_t round, int64_t wall_ns,
                  const char *topic, size_t tlen, const void *ev, size_t evlen)
{
    assert(t && topic && (ev || evlen == 0));
    if (t->rc)
        return t->rc;
    if (tlen == 0 || tlen > UINT16_MAX || evlen > SIZE_MAX / 2)
        return fp_store_txn_fail(t, -EINVAL);
    uint8_t kb[8];
    fp_store_enc64(kb, global_seq);
    MDB_val k = {8, kb};
    size_t vlen = S_EVENT_HDR + tlen + evlen;
    uint8_t *p;
    /* APPEND: the outbox only grows at its end; a seq out of order is our
       bug and fails the round (MDB_KEYEXIST) instead of overwriting. */
    int rc = fp_store_w_reserve(&t->w, FP_STORE_DB_OUTBOX, &k, vlen, MDB_APPEND, &p);
    if (rc != 0)
        return fp_store_txn_fail(t, fp_store_lmdb_rc(rc));
    fp_store_enc64(p, (uint64_t)wall_ns);
    fp_store_enc64(p + 8, round);
    fp_store_enc16(p + 16, (uint16_t)tlen);
    memcpy(p + S_EVENT_HDR, topic, tlen);
    if (evlen)
        memcpy(p + S_EVENT_HDR + tlen, ev, evlen);
    fp_store_w_seal(&t->w, FP_STORE_DB_OUTBOX, &k, p, vlen);
    return 0;
}

int fp_outbox_put_reader(fp_store_txn_t *t, const char *name, uint64_t position, uint32_t flags)
{
    assert(t && name);
    if (t->rc)
        return t->rc;
    size_t nlen = s_name_len(name);
    if (nlen == 0 || (flags & ~(FP_OUTBOX_READER_ENABLED | FP_OUTBOX_READER_DETACHED)) != 0)
        return -EINVAL;
    /* Refused, not failed: the position comes from a reader, and a reader's
       bad report must not cost the round. */
    if (position > t->committed_gseq)
        return -ERANGE;
    MDB_val k = {nlen, (void *)name}, d;
    uint64_t aux[2] = {0, 0};
    int rc = fp_store_get(t->txn, t->store, FP_STORE_DB_READERS, &k, &d);
    if (rc == 0) {
        uint64_t old;
        uint32_t oflags;
        int64_t ons;
        if (!s_reader_parse(&k, &d, &old, &oflags, &ons))
            return fp_store_txn_fail(t, FP_STORE_CORRUPT);
        if (position < old)
            position = old; /* a stale report: never backwards */
        /* Detached stays detached: only an operator re-attaches
           (fp_outbox_set_reader_flags), and a tool's detach between the
           caller's read of the flags and this put is not undone. */
        flags |= oflags & FP_OUTBOX_READER_DETACHED;
        s_reader_aux(&d, aux);
    } else if (rc != MDB_NOTFOUND) {
        return fp_store_txn_fail(t, fp_store_lmdb_rc(rc));
    }
    uint8_t vb[S_READER_LEN];
    s_reader_enc(vb, position, flags, fp_store_now_ns(), aux);
    rc = fp_store_w_put(&t->w, FP_STORE_DB_READERS, NULL, &k, vb, S_READER_LEN, 0);
    return rc ? fp_store_txn_fail(t, fp_store_lmdb_rc(rc)) : 0;
}

/* A reader's record (position, flags, now, aux) put in w and committed;
   w is ended either way. */
static int s_reader_put_commit(fp_store_t *self, fp_store_w_t *w, MDB_val *k, uint64_t position,
                               uint32_t flags, const uint64_t aux[2])
{
    uint8_t vb[S_READER_LEN];
    s_reader_enc(vb, position, flags, fp_store_now_ns(), aux);
    int rc = fp_store_w_put(w, FP_STORE_DB_READERS, NULL, k, vb, S_READER_LEN, 0);
    if (rc != 0) {
        fp_store_w_abort(w);
        return fp_store_lmdb_rc(rc);
    }
    return fp_store_commit_rc(self, fp_store_w_commit(w));
}

int fp_outbox_add_reader(fp_store_t *self, const char *name, uint64_t position)
{
    assert(self && name);
    size_t nlen = s_name_len(name);
    if (nlen == 0)
        return -EINVAL;
    fp_store_w_t w;
    int rc = fp_store_w_begin(self, &w);
    if (rc != 0)
        return rc;
    MDB_val k = {nlen, (void *)name}, d;
    rc = fp_store_get(w.txn, self, FP_STORE_DB_READERS, &k, &d);
    if (rc != MDB_NOTFOUND) {
        fp_store_w_abort(&w);
        return rc == 0 ? 0 : rc == FP_STORE_CORRUPT ? rc : fp_store_lmdb_rc(rc);
    }
    const uint64_t aux[2] = {0, 0};
    return s_reader_put_commit(self, &w, &k, position, FP_OUTBOX_READER_ENABLED, aux);
}

int fp_outbox_set_reader_flags(fp_store_t *self, const char *name, uint32_t set, uint32_t clear,
                               uint64_t *position, uint32_t *flags_out)
{
    assert(self && name);
    size_t nlen = s_name_len(name);
    if (nlen == 0)
        return -EINVAL;
    fp_store_w_t w;
    int rc = fp_store_w_begin(self, &w);
    if (rc != 0)
        return rc;
    MDB_val k = {nlen, (void *)name}, d;
    uint64_t pos = 0, aux[2] = {0, 0};
    uint32_t flags = 0;
    int64_t ns = 0;
    rc = fp_store_get(w.txn, self, FP_STORE_DB_READERS, &k, &d);
    if (rc == 0 && !s_reader_parse(&k, &d, &pos, &flags, &ns))
        rc = FP_STORE_CORRUPT;
    if (rc != 0) {
        fp_store_w_abort(&w);
        return rc == MDB_NOTFOUND ? FP_STORE_NOTFOUND
               : rc == FP_STORE_CORRUPT ? rc
                                        : fp_store_lmdb_rc(rc);
    }
    s_reader_aux(&d, aux);
    flags = (flags | set) & ~clear;
    if (position)
        *position = pos;
    if (flags_out)
        *flags_out = flags;
    return s_reader_put_commit(self, &w, &k, pos, flags, aux);
}

int fp_outbox_put_reader_aux(fp_store_txn_t *t, const char *name, const uint64_t aux[2])
{
    assert(t && name && aux);
    if (t->rc)
        return t->rc;
    size_t nlen = s_name_len(name);
    if (nlen == 0)
        return -EINVAL;
    MDB_val k = {nlen, (void *)name}, d;
    uint64_t pos = 0;
    uint32_t flags = 0;
    int64_t ns = 0;
    int rc = fp_store_get(t->txn, t->store, FP_STORE_DB_READERS, &k, &d);
    if (rc == 0 && !s_reader_parse(&k, &d, &pos, &flags, &ns))
        return fp_store_txn_fail(t, FP_STORE_CORRUPT);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return fp_store_txn_fail(t, fp_store_lmdb_rc(rc));
    uint8_t vb[S_READER_LEN];
    s_reader_enc(vb, pos, flags, fp_store_now_ns(), aux);
    rc = fp_store_w_put(&t->w, FP_STORE_DB_READERS, NULL, &k, vb, S_READER_LEN, 0);
    return rc ? fp_store_txn_fail(t, fp_store_lmdb_rc(rc)) : 0;
}

/* The smallest position of the readers that hold retention, in txn: 0 and
   *min (UINT64_MAX when none does), or an error. */
/* Calls fn for every reader that holds retention (enabled, not detached)
   in txn, name NUL-terminated. fn returns 0 to go on, non-zero to stop.
   Returns 0, fn's value, FP_STORE_CORRUPT or an LMDB error. */
static int s_walk_holding(fp_store_t *self, MDB_txn *txn,
                          int (*fn)(void *ctx, const char *name, uint64_t position), void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, self->dbi[FP_STORE_DB_READERS], &cur);
    if (rc != 0)
        return fp_store_lmdb_rc(rc);
    MDB_val k, d;
    MDB_cursor_op op = MDB_FIRST;
    int mrc;
    while ((mrc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
        op = MDB_NEXT;
        uint64_t pos;
        uint32_t flags;
        int64_t ns;
        if (fp_store_unseal(FP_STORE_DB_READERS, &k, &d) != 0 ||
            !s_reader_parse(&k, &d, &pos, &flags, &ns)) {
            rc = FP_STORE_CORRUPT;
            break;
        }
        if (!s_holds_retention(flags))
            continue;
        char name[FP_OUTBOX_READER_NAME_MAX + 1];
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        if ((rc = fn(ctx, name, pos)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = fp_store_lmdb_rc(mrc);
    return rc;
}

static int s_min_fn(void *ctx, const char *name, uint64_t position)
{
    uint64_t *min = ctx;
    if (position < *min)
        *min = position;
    return 0;
}

static int s_min_position(fp_store_t *self, MDB_txn *txn, uint64_t *min)
{
    *min = UINT64_MAX;
    return s_walk_holding(self, txn, s_min_fn, min);
}

int fp_outbox_trim(fp_store_t *self, int64_t older_than_wall_ns, uint32_t max_delete,
                   uint64_t *deleted)
{
    return fp_outbox_trim_ex(self, older_than_wall_ns, max_delete, deleted, NULL);
}

int fp_outbox_trim_ex(fp_store_t *self, int64_t older_than_wall_ns, uint32_t max_delete,
                      uint64_t *deleted, uint64_t *damaged)
{
    assert(self);
    assert(!self->txn_open);
    uint64_t n = 0, dmg = 0;
    if (deleted)
        *deleted = 0;
    if (damaged)
        *damaged = 0;
    fp_store_w_t w;
    MDB_cursor *cur = NULL;
    int rc = fp_store_w_begin(self, &w);
    if (rc != 0)
        return rc;
    MDB_txn *txn = w.txn;
    /* The readers are read in this txn: the commit thread is the only
       writer, so no position can change before this commit. */
    uint64_t keep_after;
    rc = s_min_position(self, txn, &keep_after);
    if (rc != 0) {
        fp_store_w_abort(&w);
        return rc;
    }
    rc = mdb_cursor_open(txn, self->dbi[FP_STORE_DB_OUTBOX], &cur);
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
        MDB_val v = d;
        if (k.mv_size != 8) {
            rc = FP_STORE_CORRUPT;
            break;
        }
        if (fp_store_unseal(FP_STORE_DB_OUTBOX, &k, &v) != 0 ||
            !s_event_parse(&v, &wall, &round, &topic, &tlen, &ev, &evlen)) {
            /* Damaged (after the start's walk): no reader can ever have
               it, and its age is unreadable. Out once every holding
               reader has gone past it (they skip it, counted), so that it
               never holds retention back for good. */
            if (fp_store_dec64(k.mv_data) > keep_after)
                break;
            rc = fp_store_w_del_damaged(&w, FP_STORE_DB_OUTBOX, cur, &k, &d);
            if (rc == 0) {
                n++;
                dmg = fp_store_dec64(k.mv_data);
            }
            continue;
        }
        if (wall >= older_than_wall_ns || fp_store_dec64(k.mv_data) > keep_after)
            break;
        rc = fp_store_w_del(&w, FP_STORE_DB_OUTBOX, cur, &k, &d);
        if (rc == 0)
            n++;
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (cur)
        mdb_cursor_close(cur);
    if (rc != 0) {
        fp_store_w_abort(&w);
        return rc == FP_STORE_CORRUPT ? rc : fp_store_lmdb_rc(rc);
    }
    if (n == 0) {
        fp_store_w_abort(&w);
        return 0;
    }
    rc = fp_store_commit_rc(self, fp_store_w_commit(&w));
    if (rc != 0)
        return rc;
    if (deleted)
        *deleted = n;
    if (damaged)
        *damaged = dmg;
    fp_store_after_free(self);
    return 0;
}

fp_outbox_lag_t fp_outbox_lag_check(uint64_t position, uint64_t last_gseq, uint64_t max_lag)
{
    assert(max_lag >= 1);
    uint64_t lag = position < last_gseq ? last_gseq - position : 0;
    if (lag >= max_lag)
        return FP_OUTBOX_LAG_DETACH;
    /* lag >= 50 % of max_lag, i.e. 2 * lag >= max_lag, written without the
       product (no overflow): lag >= ceil(max_lag / 2). */
    if (lag >= max_lag - max_lag / 2)
        return FP_OUTBOX_LAG_WARN;
    return FP_OUTBOX_LAG_OK;
}

typedef struct {
    char name[FP_OUTBOX_READER_NAME_MAX + 1];
    uint64_t position;
    uint64_t lag;
} s_detached_t;

int fp_outbox_detach_lagging(fp_store_t *self, uint64_t max_lag,
                             void (*fn)(void *ctx, const char *name, uint64_t position,
                                        uint64_t lag),
                             void *ctx)
{
    assert(self && max_lag >= 1);
    assert(!self->txn_open);
    fp_store_w_t w;
    MDB_cursor *cur = NULL;
    s_detached_t *list = NULL;
    size_t nlist = 0, cap = 0;
    uint64_t last;
    int rc = fp_store_w_begin(self, &w);
    if (rc != 0)
        return rc;
    MDB_txn *txn = w.txn;
    rc = fp_store_meta_get64(txn, self, "global_seq", &last);
    if (rc != 0)
        goto out;
    rc = fp_store_lmdb_rc(mdb_cursor_open(txn, self->dbi[FP_STORE_DB_READERS], &cur));
    if (rc != 0)
        goto out;
    MDB_val k, d;
    MDB_cursor_op op = MDB_FIRST;
    int mrc;
    while ((mrc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
        op = MDB_NEXT;
        uint64_t pos;
        uint32_t flags;
        int64_t ns;
        if (fp_store_unseal(FP_STORE_DB_READERS, &k, &d) != 0 ||
            !s_reader_parse(&k, &d, &pos, &flags, &ns)) {
            rc = FP_STORE_CORRUPT;
            goto out;
        }
        if (!s_holds_retention(flags) ||
            fp_outbox_lag_check(pos, last, max_lag) != FP_OUTBOX_LAG_DETACH)
            continue;
        if (nlist == cap) {
            cap = cap ? cap * 2 : 8;
            s_detached_t *nl = realloc(list, cap * sizeof *nl);
            if (!nl) {
                rc = -ENOMEM;
                goto out;
            }
            list = nl;
        }
        s_detached_t *e = &list[nlist++];
        memcpy(e->name, k.mv_data, k.mv_size);
        e->name[k.mv_size] = '\0';
        e->position = pos;
        e->lag = last - pos;
        /* In place through the cursor: the key stays. The
           position is kept; a re-attach starts from it. */
        uint8_t vb[S_READER_LEN];
        uint64_t aux[2];
        s_reader_aux(&d, aux);
        s_reader_enc(vb, pos, flags | FP_OUTBOX_READER_DETACHED, fp_store_now_ns(), aux);
        mrc = fp_store_w_put(&w, FP_STORE_DB_READERS, cur, &k, vb, S_READER_LEN, 0);
        if (mrc != 0)
            break;
    }
    if (mrc != MDB_NOTFOUND) {
        rc = fp_store_lmdb_rc(mrc);
        goto out;
    }
    mdb_cursor_close(cur);
    cur = NULL;
    if (nlist == 0) {
        fp_store_w_abort(&w);
    } else {
        rc = fp_store_commit_rc(self, fp_store_w_commit(&w));
        if (rc != 0)
            goto out;
        for (size_t i = 0; fn && i < nlist; i++)
            fn(ctx, list[i].name, list[i].position, list[i].lag);
        rc = (int)(nlist > INT32_MAX ? INT32_MAX : nlist);
    }
out:
    if (cur)
        mdb_cursor_close(cur);
    fp_store_w_abort(&w);
    free(list);
    return rc;
}

/* ---- read side ---- */

typedef int (*s_event_fn)(void *, uint64_t, uint64_t, const char *, size_t, const void *, size_t);

typedef struct {
    void *ctx;
    s_event_fn fn;
    uint32_t max;   /* the limit */
    uint32_t count; /* events fn accepted */
    int fn_rc;      /* a store error found while scanning */
    bool damaged;   /* hand a damaged value on (ev NULL) instead of failing */
} s_read_t;

static int s_each_event(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_read_t *s = ctx2;
    if (s->count >= s->max)
        return 1;
    int64_t wall;
    uint64_t round;
    const char *topic;
    const void *ev;
    size_t tlen, evlen;
    MDB_val v = *d;
    bool ok = k->mv_size == 8 && fp_store_unseal(FP_STORE_DB_OUTBOX, k, &v) == 0 &&
              s_event_parse(&v, &wall, &round, &topic, &tlen, &ev, &evlen);
    if (!ok && (!s->damaged || k->mv_size != 8)) {
        s->fn_rc = FP_STORE_CORRUPT;
        return 1;
    }
    if (!ok) { /* its global_seq only: none of its bytes is handed on */
        round = 0;
        topic = NULL;
        ev = NULL;
        tlen = evlen = 0;
    }
    if (s->fn(s->ctx, fp_store_dec64(k->mv_data), round, topic, tlen, ev, evlen) != 0)
        return 1;
    s->count++;
    return 0;
}

int fp_outbox_read(fp_store_t *self, uint64_t from_global_seq, uint32_t max,
                   int (*fn)(void *ctx, uint64_t global_seq, uint64_t round, const char *topic,
                             size_t tlen, const void *ev, size_t evlen),
                   void *ctx)
{
    return fp_outbox_read_ex(self, from_global_seq, max, 0, fn, ctx);
}

int fp_outbox_read_ex(fp_store_t *self, uint64_t from_global_seq, uint32_t max, unsigned flags,
                      int (*fn)(void *ctx, uint64_t global_seq, uint64_t round, const char *topic,
                                size_t tlen, const void *ev, size_t evlen),
                      void *ctx)
{
    assert(self && fn);
    if (max == 0)
        return 0;
    if (max > INT32_MAX)
        max = INT32_MAX; /* the count is returned as an int */
    uint8_t kb[8];
    fp_store_enc64(kb, from_global_seq);
    MDB_val from = {8, kb};
    s_read_t s = {.ctx = ctx, .fn = fn, .max = max,
                  .damaged = (flags & FP_OUTBOX_READ_DAMAGED) != 0};
    int rc = fp_store_scan_raw(self, FP_STORE_DB_OUTBOX, &from, s_each_event, &s);
    if (s.fn_rc != 0)
        return s.fn_rc;
    if (rc < 0)
        return rc;
    return (int)s.count;
}

int fp_outbox_oldest(fp_store_t *self, uint64_t *global_seq)
{
    assert(self && global_seq);
    *global_seq = 0;
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, self->dbi[FP_STORE_DB_OUTBOX], &cur);
    if (rc == 0) {
        MDB_val k, d;
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
        if (rc == 0 && k.mv_size != 8)
            rc = FP_STORE_CORRUPT;
        else if (rc == 0)
            *global_seq = fp_store_dec64(k.mv_data);
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    if (rc == MDB_NOTFOUND)
        return FP_STORE_EMPTY;
    return rc == FP_STORE_CORRUPT ? rc : fp_store_lmdb_rc(rc);
}

int fp_outbox_reader(fp_store_t *self, const char *name, uint64_t *position, uint32_t *flags)
{
    return fp_outbox_reader_ex(self, name, position, flags, NULL);
}

int fp_outbox_reader_ex(fp_store_t *self, const char *name, uint64_t *position, uint32_t *flags,
                        uint64_t aux[2])
{
    assert(self && name);
    size_t nlen = s_name_len(name);
    if (nlen == 0)
        return -EINVAL;
    MDB_txn *txn;
    int rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    MDB_val k = {nlen, (void *)name}, d;
    uint64_t pos = 0;
    uint32_t fl = 0;
    int64_t ns;
    rc = fp_store_get(txn, self, FP_STORE_DB_READERS, &k, &d);
    uint64_t ax[2] = {0, 0};
    if (rc == 0 && !s_reader_parse(&k, &d, &pos, &fl, &ns))
        rc = FP_STORE_CORRUPT;
    else if (rc == 0)
        s_reader_aux(&d, ax);
    mdb_txn_abort(txn);
    if (rc == MDB_NOTFOUND)
        return FP_STORE_NOTFOUND;
    if (rc != 0)
        return rc == FP_STORE_CORRUPT ? rc : fp_store_lmdb_rc(rc);
    if (position)
        *position = pos;
    if (flags)
        *flags = fl;
    if (aux)
        memcpy(aux, ax, sizeof ax);
    return 0;
}

typedef int (*s_reader_fn)(void *, const char *, uint64_t, uint32_t, int64_t);

typedef struct {
    void *ctx;
    s_reader_fn fn;
} s_each_reader_t;

static int s_each_reader(void *ctx2, const MDB_val *k, const MDB_val *d)
{
    s_each_reader_t *s = ctx2;
    uint64_t pos;
    uint32_t flags;
    int64_t ns;
    if (!s_reader_parse(k, d, &pos, &flags, &ns))
        return FP_STORE_CORRUPT;
    char name[FP_OUTBOX_READER_NAME_MAX + 1];
    memcpy(name, k->mv_data, k->mv_size);
    name[k->mv_size] = '\0';
    return s->fn(s->ctx, name, pos, flags, ns);
}

int fp_outbox_each_reader(fp_store_t *self,
                          int (*fn)(void *ctx, const char *name, uint64_t position,
                                    uint32_t flags, int64_t updated_ns),
                          void *ctx)
{
    assert(self && fn);
    s_each_reader_t s = {ctx, fn};
    return fp_store_scan(self, FP_STORE_DB_READERS, NULL, s_each_reader, &s);
}

int fp_outbox_usage(fp_store_t *self, uint64_t *outbox_bytes, uint64_t *map_bytes)
{
    assert(self && outbox_bytes && map_bytes);
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    int rc = mdb_env_info(self->env, &info);
    if (rc != 0)
        return fp_store_lmdb_rc(rc);
    rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_stat(txn, self->dbi[FP_STORE_DB_OUTBOX], &st);
    mdb_txn_abort(txn);
    if (rc != 0)
        return fp_store_lmdb_rc(rc);
    *map_bytes = info.me_mapsize;
    *outbox_bytes = (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * st.ms_psize;
    return 0;
}

typedef struct {
    int (*fn)(void *ctx, const char *name, uint64_t position, uint64_t lag,
              fp_outbox_lag_t verdict);
    void *ctx;
    uint64_t last, max_lag;
} s_lags_t;

static int s_lags_fn(void *ctx, const char *name, uint64_t pos)
{
    s_lags_t *l = ctx;
    uint64_t lag = pos < l->last ? l->last - pos : 0;
    return l->fn(l->ctx, name, pos, lag, fp_outbox_lag_check(pos, l->last, l->max_lag));
}

int fp_outbox_lags(fp_store_t *self, uint64_t max_lag,
                   int (*fn)(void *ctx, const char *name, uint64_t position, uint64_t lag,
                             fp_outbox_lag_t verdict),
                   void *ctx, uint64_t *outbox_bytes, uint64_t *map_bytes)
{
    assert(self && fn && max_lag >= 1);
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    uint64_t last;
    int rc = mdb_env_info(self->env, &info);
    if (rc != 0)
        return fp_store_lmdb_rc(rc);
    rc = fp_store_read_begin(self, &txn);
    if (rc != 0)
        return rc;
    /* One snapshot: the positions, the last global_seq and the outbox size
       all belong to the same committed round. */
    rc = fp_store_meta_get64(txn, self, "global_seq", &last);
    if (rc == 0)
        rc = fp_store_lmdb_rc(mdb_stat(txn, self->dbi[FP_STORE_DB_OUTBOX], &st));
    if (rc == 0) {
        if (outbox_bytes)
            *outbox_bytes =
                (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * st.ms_psize;
        if (map_bytes)
            *map_bytes = info.me_mapsize;
        s_lags_t l = {fn, ctx, last, max_lag};
        rc = s_walk_holding(self, txn, s_lags_fn, &l);
    }
    mdb_txn_abort(txn);
    return rc;
}
