/*  agg_state.c - the aggregation's persistence: agg_export_dirty,
    agg_export_all, agg_import, agg_key_shard (agg.h; the bytes are
    agg_format.c's).

    Marking (agg_mark, agg_internal.h) is off until the first
    agg_export_dirty or agg_import, so a shard without durability keeps no
    list and no released keys. Release (agg.c) appends the keys it frees to
    `rel` (serialized, since the entries are gone), exported as deletions
    before the changed keys. The closed-operations FIFO order is persisted
    as close_seq (one more than the FIFO's tail, so it is a function of what
    is held and a restored agg_t numbers alike); agg_import appends closed
    operations in file order and the FIFO is merge-sorted by close_seq
    before it is next used. A consumption or scrap key imported before its
    operation creates the operation as a placeholder (AGG_E_PLACEHOLDER),
    filled when its own pair comes.
*/
#include <stdlib.h>
#include <string.h>

#include "agg_format.h"
#include "agg_internal.h"
#include "route.h"

void agg_unmark(agg_t *self, uint32_t idx)
{
    agg_entry_t *e = &self->tab.pool[idx];
    if (!(e->flags & AGG_E_EXPORT))
        return;
    if (e->exp_prev != AGG_NONE)
        self->tab.pool[e->exp_prev].exp_next = e->exp_next;
    else
        self->exp_head = e->exp_next;
    if (e->exp_next != AGG_NONE)
        self->tab.pool[e->exp_next].exp_prev = e->exp_prev;
    e->flags &= (uint8_t)~AGG_E_EXPORT;
}

/* Grows *buf to at least need bytes; -1 out of memory (unchanged). */
static int s_buf_grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    uint8_t *b = realloc(*buf, n);
    if (!b)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

/* The format's view of entry key k: strings from the interner. */
static void s_key_view(const agg_t *self, const agg_key_t *k, agg_fmt_key_t *out)
{
    out->version = AGG_FMT_V2;
    out->kind = (int)k->kind;
    out->period = k->period;
    int nf = agg_fmt_nfields(out->kind);
    for (int f = 0; f < AGG_FIELDS; f++) {
        out->s[f] = "";
        out->len[f] = 0;
        if (f < nf)
            out->s[f] = intern_str(self->intern, k->sym[f], &out->len[f]);
    }
}

/* Key bytes of k at out (room: self->key_max); returns the length. */
static size_t s_key_write(const agg_t *self, const agg_key_t *k, uint8_t *out)
{
    agg_fmt_key_t v;
    s_key_view(self, k, &v);
    size_t n = agg_fmt_key_write(&v, out);
    assert(n <= self->key_max);
    return n;
}

/* State bytes of entry e at out (room: AGG_FMT_STATE_MAX + self->attr_max). */
static size_t s_state_write(const agg_t *self, const agg_entry_t *e, uint8_t *out)
{
    agg_fmt_state_t st;
    memset(&st, 0, sizeof st);
    if (e->key.kind == AGG_KIND_OP) {
        st.flags = (e->flags & AGG_E_CLOSED) ? AGG_PF_CLOSED : 0;
        st.line = intern_str(self->intern, e->line, &st.line_len);
        st.station = intern_str(self->intern, e->station, &st.station_len);
        st.closed_at = e->closed_at;
        st.close_seq = e->close_seq;
    } else {
        st.flags = (uint8_t)(((e->flags & AGG_E_LATE) ? AGG_PF_LATE : 0) |
                             (e->truncated ? AGG_PF_TRUNCATED : 0));
        st.checkpoint_no = e->checkpoint_no;
        st.count = e->count;
        st.sum0 = e->sum0;
        st.sum1 = e->sum1;
        st.first_ns = e->first_ns;
        st.last_ns = e->last_ns;
        st.nlineage = e->nlineage;
        agg_lineage_get(self, e, st.lineage);
    }
    size_t n = agg_fmt_state_write((int)e->key.kind, &st, out);
    assert(n <= AGG_FMT_STATE_MAX + self->attr_max);
    return n;
}

int agg_key_keep(agg_t *self, const agg_key_t *k, uint8_t **kb, uint16_t *klen)
{
    if (self->key_max > UINT16_MAX || s_buf_grow(&self->kbuf, &self->kbuf_cap, self->key_max) != 0)
        return -1;
    size_t n = s_key_write(self, k, self->kbuf);
    uint8_t *p = malloc(n);
    if (!p)
        return -1;
    memcpy(p, self->kbuf, n);
    *kb = p;
    *klen = (uint16_t)n;
    return 0;
}

/* Appends one released key (room made). */
static void s_rel_put(agg_t *self, const void *key, size_t klen)
{
    uint32_t len = (uint32_t)klen;
    memcpy(self->rel + self->rel_len, &len, 4);
    memcpy(self->rel + self->rel_len + 4, key, klen);
    self->rel_len += 4 + klen;
}

int agg_release_keys(agg_t *self, uint32_t ci)
{
    const agg_entry_t *pool = self->tab.pool;
    const agg_cpt_t *cs = self->cs.pool, *h = &cs[ci];
    const agg_cpt_head_t *hp = agg_cs_head(&self->cs, ci);
    uint32_t op = h->op;
    size_t n = 1 + hp->nchild;
    if (op != AGG_NONE)
        for (uint32_t c = pool[op].first_child; c != AGG_NONE; c = pool[c].child_next)
            n++;
    if (s_buf_grow(&self->rel, &self->rel_cap, self->rel_len + n * (4 + self->key_max)) != 0)
        return -1;
    assert(!self->cfg.no_export);
    if (op != AGG_NONE) {
        for (uint32_t c = op; c != AGG_NONE; c = c == op ? pool[op].first_child : pool[c].child_next) {
            uint32_t len = (uint32_t)s_key_write(self, &pool[c].key, self->rel + self->rel_len + 4);
            memcpy(self->rel + self->rel_len, &len, 4);
            self->rel_len += 4 + len;
        }
    } else {
        s_rel_put(self, h->kb, h->klen);
    }
    for (uint32_t c = hp->first_child; c != AGG_NONE; c = cs[c].next)
        s_rel_put(self, cs[c].kb, cs[c].klen);
    return 0;
}

/* Hands fn every key at rest in the compact store with its state (a closed
   operation's: kinds 1..3 nothing pending, kind 4 closed), as
   s_state_write would have written it from the full entries. */
static void s_export_compact(agg_t *self, agg_export_fn *fn, void *ctx)
{
    assert(!self->cfg.no_export || self->cs.n == 0);
    for (uint32_t i = 1; i < self->cs.pool_used; i++) {
        const agg_cpt_t *c = &self->cs.pool[i];
        if (c->kind == 0 || (c->kind == AGG_KIND_OP && c->op != AGG_NONE))
            continue; /* free, or a head exported from its full entry */
        agg_fmt_state_t st;
        memset(&st, 0, sizeof st);
        if (c->kind == AGG_KIND_OP) {
            const agg_cpt_head_t *hp = agg_cs_head(&self->cs, i);
            st.flags = AGG_PF_CLOSED;
            st.line = intern_str(self->intern, hp->line, &st.line_len);
            st.station = intern_str(self->intern, hp->station, &st.station_len);
            st.closed_at = hp->closed_at;
            st.close_seq = hp->close_seq;
        } else {
            st.checkpoint_no = c->checkpoint_no;
        }
        size_t slen = agg_fmt_state_write((int)c->kind, &st, self->sbuf);
        fn(ctx, c->kb, c->klen, self->sbuf, slen);
    }
}

/* Sizes the scratch buffers for any key and state held; -1 out of memory. */
static int s_export_room(agg_t *self)
{
    if (s_buf_grow(&self->kbuf, &self->kbuf_cap, self->key_max) != 0)
        return -1;
    return s_buf_grow(&self->sbuf, &self->sbuf_cap, AGG_FMT_STATE_MAX + self->attr_max);
}

static void s_export_one(agg_t *self, uint32_t idx, agg_export_fn *fn, void *ctx)
{
    const agg_entry_t *e = &self->tab.pool[idx];
    size_t klen = s_key_write(self, &e->key, self->kbuf);
    size_t slen = s_state_write(self, e, self->sbuf);
    fn(ctx, self->kbuf, klen, self->sbuf, slen);
}

/* The shard's own pair: flushed_through (periods on, once it is set). */
static void s_export_meta(agg_t *self, agg_export_fn *fn, void *ctx)
{
    agg_fmt_key_t k = {.version = AGG_FMT_V2, .kind = (int)AGG_KIND_META};
    agg_fmt_state_t st = {.flushed_through = self->flushed_through};
    uint8_t key[2], state[1 + FP_VARINT_MAX];
    size_t klen = agg_fmt_key_write(&k, key);
    size_t slen = agg_fmt_state_write((int)AGG_KIND_META, &st, state);
    fn(ctx, key, klen, state, slen);
    self->meta_dirty = false;
}

int agg_export_dirty(agg_t *self, agg_export_fn *fn, void *ctx)
{
    assert(self && fn);
    agg_entry_t *pool = self->tab.pool;
    if (s_export_room(self) != 0)
        return -1; /* nothing handed over, nothing cleared */
    if (!self->track) {
        /* The first export: everything held is new to the store. */
        self->track = true;
        for (uint32_t i = 1; i < self->tab.pool_used; i++)
            if (pool[i].key.kind != 0)
                agg_mark(self, i);
        self->meta_dirty = self->flushed_through != INT64_MIN;
        s_export_compact(self, fn, ctx); /* never marked: at rest, stored as they are */
    }
    for (size_t off = 0; off < self->rel_len;) {
        uint32_t len;
        memcpy(&len, self->rel + off, 4);
        fn(ctx, self->rel + off + 4, len, NULL, 0);
        off += 4 + (size_t)len;
    }
    self->rel_len = 0;
    uint32_t i = self->exp_head;
    while (i != AGG_NONE) {
        uint32_t next = pool[i].exp_next;
        s_export_one(self, i, fn, ctx);
        pool[i].flags &= (uint8_t)~AGG_E_EXPORT;
        pool[i].exp_prev = pool[i].exp_next = AGG_NONE;
        i = next;
    }
    self->exp_head = AGG_NONE;
    if (self->meta_dirty)
        s_export_meta(self, fn, ctx);
    return 0;
}

int agg_export_all(agg_t *self, agg_export_fn *fn, void *ctx)
{
    assert(self && fn);
    if (s_export_room(self) != 0)
        return -1;
    for (uint32_t i = 1; i < self->tab.pool_used; i++)
        if (self->tab.pool[i].key.kind != 0)
            s_export_one(self, i, fn, ctx);
    s_export_compact(self, fn, ctx);
    if (self->flushed_through != INT64_MIN)
        s_export_meta(self, fn, ctx);
    return 0;
}

/* Loads the pending part of a parsed state into a new entry: sums, lists. */
static void s_fill(agg_t *self, uint32_t idx, const agg_fmt_state_t *st)
{
    agg_entry_t *e = &self->tab.pool[idx];
    e->checkpoint_no = st->checkpoint_no;
    if (st->count > 0) {
        e->count = st->count;
        e->sum0 = st->sum0;
        e->sum1 = st->sum1;
        e->first_ns = st->first_ns;
        e->last_ns = st->last_ns;
        agg_lineage_set(self, e, st->lineage, st->nlineage);
        e->truncated = (st->flags & AGG_PF_TRUNCATED) != 0;
        if (st->flags & AGG_PF_LATE)
            e->flags |= AGG_E_LATE;
        agg_list_add(self, idx, (e->flags & AGG_E_LATE) ? AGG_LIST_LATE : AGG_LIST_DIRTY);
        agg_pend_add(&self->pend.quantity[e->key.kind - 1], e->sum0);
        self->pend.records[e->key.kind - 1] += e->count;
    }
}

/* Loads a head's attributes: the closing and the FIFO. */
static void s_fill_head(agg_t *self, uint32_t op, const agg_fmt_state_t *st)
{
    agg_entry_t *e = &self->tab.pool[op];
    if (!(st->flags & AGG_PF_CLOSED))
        return;
    e->flags |= AGG_E_CLOSED;
    e->closed_at = st->closed_at;
    e->close_seq = st->close_seq;
    agg_fifo_append(self, op);
    self->fifo_unsorted = true;
    if (st->closed_at > self->now)
        self->now = st->closed_at; /* until the first agg_flush */
}

/* Appends key bytes to the released-keys buffer: exported as a deletion
   (a version-1 key replaced by its version-2 keys). -1 out of memory. */
static int s_release_bytes(agg_t *self, const void *key, size_t klen)
{
    if (s_buf_grow(&self->rel, &self->rel_cap, self->rel_len + 4 + klen) != 0)
        return -1; /* never after agg_import made room */
    uint32_t len = (uint32_t)klen;
    memcpy(self->rel + self->rel_len, &len, 4);
    memcpy(self->rel + self->rel_len + 4, key, klen);
    self->rel_len += 4 + klen;
    return 0;
}

int agg_import(agg_t *self, const void *key, size_t klen, const void *state, size_t slen)
{
    assert(self);
    agg_fmt_key_t k;
    agg_fmt_state_t st;
    if (agg_fmt_key_parse(key, klen, &k) != 0 || agg_fmt_state_parse(state, slen, &k, &st) != 0)
        return -1;
    self->track = true; /* the store holds what we hold from now on */
    if (k.kind == (int)AGG_KIND_META) {
        if (st.flushed_through > self->flushed_through)
            self->flushed_through = st.flushed_through;
        return 0;
    }
    bool v1 = k.version == AGG_FMT_V1;
    /* Room first for what can fail: the deletion of a version-1 key, the
       entries. */
    if (v1 && s_buf_grow(&self->rel, &self->rel_cap, self->rel_len + 4 + klen) != 0)
        return -2;
    if (agg_tab_reserve(&self->tab, 2) != 0 || !agg_tab_room(&self->tab))
        return -2;
    if (agg_cs_reserve(&self->cs, 1) != 0) /* a closed head's compact head */
        return -2;
    if (st.count > 0 && st.nlineage > 1 && agg_lx_reserve(self) != 0) /* its lineage block */
        return -2;
    int rc = -2, nf = agg_fmt_nfields(k.kind);
    uint32_t sym[AGG_FIELDS] = {0}, line = INTERN_EMPTY, station = INTERN_EMPTY;
    int got = 0;
    for (; got < nf; got++)
        if ((sym[got] = intern_acquire(self->intern, k.s[got], k.len[got])) == INTERN_NOMEM)
            goto out;
    if (st.has_attrs) {
        if ((line = intern_acquire(self->intern, st.line, st.line_len)) == INTERN_NOMEM)
            goto out;
        if ((station = intern_acquire(self->intern, st.station, st.station_len)) == INTERN_NOMEM)
            goto out;
    }
    /* The operation head: found (a placeholder, or filled), or created. */
    agg_key_t hk = {.kind = AGG_KIND_OP,
                    .sym = {sym[AGG_F_PLANT], sym[AGG_F_ORDER], sym[AGG_F_OPERATION]}};
    uint64_t hh = agg_key_hash(&hk);
    uint32_t op = agg_tab_find(&self->tab, &hk, hh);
    if (st.has_attrs) {
        if (op != AGG_NONE) {
            agg_entry_t *e = &self->tab.pool[op];
            if (!(e->flags & AGG_E_PLACEHOLDER)) {
                rc = -1; /* imported twice */
                goto out;
            }
            intern_ref(self->intern, line);
            intern_ref(self->intern, station);
            intern_release(self->intern, e->line);
            intern_release(self->intern, e->station);
            e->line = line;
            e->station = station;
            e->flags &= (uint8_t)~AGG_E_PLACEHOLDER;
            if ((size_t)st.line_len + st.station_len > self->attr_max)
                self->attr_max = (size_t)st.line_len + st.station_len;
        } else {
            op = agg_entry_create(self, &hk, hh, AGG_NONE, line, station);
        }
        s_fill_head(self, op, &st);
        if (v1)
            agg_mark(self, op);
    } else if (op == AGG_NONE) {
        op = agg_entry_create(self, &hk, hh, AGG_NONE, INTERN_EMPTY, INTERN_EMPTY);
        self->tab.pool[op].flags |= AGG_E_PLACEHOLDER;
        if (v1)
            agg_mark(self, op);
    }
    if (k.kind != (int)AGG_KIND_OP && (!v1 || st.count > 0 || !self->periods)) {
        /* A period entry. Version 1 had none: its pending delta goes to the
           period of its earliest record (what was emitted before is not
           taken back); with periods, a key with nothing pending needs no
           entry (without them it keeps its checkpoint_no in period 0). */
        agg_key_t ck = {.kind = (uint32_t)k.kind, .period = k.period};
        memcpy(ck.sym, sym, sizeof ck.sym);
        if (v1)
            ck.period = agg_period_at(self, st.first_ns)->id;
        uint64_t hch = agg_key_hash(&ck);
        if (agg_tab_find(&self->tab, &ck, hch) != AGG_NONE) {
            rc = -1;
            goto out;
        }
        assert(agg_tab_room(&self->tab)); /* agg_tab_reserve(2) made room for both */
        uint32_t ch = agg_entry_create(self, &ck, hch, op, INTERN_EMPTY, INTERN_EMPTY);
        s_fill(self, ch, &st);
        if (v1)
            agg_mark(self, ch);
    }
    if (v1) {
        s_release_bytes(self, key, klen); /* room made above */
        self->stats.upgraded++;
    }
    rc = 0;
out:
    for (int f = 0; f < got; f++)
        intern_release(self->intern, sym[f]);
    if (line != INTERN_NOMEM)
        intern_release(self->intern, line);
    if (station != INTERN_NOMEM)
        intern_release(self->intern, station);
    self->stats.strings = intern_count(self->intern);
    return rc;
}

uint32_t agg_key_shard(const void *key, size_t klen, uint32_t nshards)
{
    agg_fmt_key_t k;
    if (agg_fmt_key_parse(key, klen, &k) != 0)
        return UINT32_MAX;
    if (k.kind == (int)AGG_KIND_META)
        return AGG_KEY_ALL_SHARDS;
    return fp_route_shard(fp_route_str_hash(k.s[AGG_F_PLANT], k.len[AGG_F_PLANT]),
                          fp_route_str_hash(k.s[AGG_F_ORDER], k.len[AGG_F_ORDER]),
                          fp_route_str_hash(k.s[AGG_F_OPERATION], k.len[AGG_F_OPERATION]),
                          nshards);
}
