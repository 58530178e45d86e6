/*  commit.c - the commit core. See commit.h for its semantics.

    DESIGN
    - Rounds are a deque (rounds[k] is round base + k), created on demand up
      to the highest round any sender is in; the oldest is committed first.
    - Feeds (topic -> last stream_seq) are an open-addressing map with
      linear probing, grown at half load; `stored_in` marks the attempt that
      has already put a feed in the current transaction, so a round of
      10,000 events puts each of its few dozen feeds once.
    - The round's keys are sorted on words of the bytes after their common
      prefix (comparing the long shared prefix with memcmp on every step
      took a quarter of emit's time), then put through one LMDB cursor in
      that order (store.h: fp_store_put_key).
    - Scratch arrays (touched feeds, key refs) are kept across rounds:
      freeing ~1 MiB every round made jemalloc return and re-fault its pages
      each time.
*/
#include "commit.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "codec.h"
#include "grow.h"
#include "log.h"
#include "reader.h"
#include "outbox.h"
#include "store.h"

/* Per-topic stream_seq: an open-addressing map, topic -> last seq. */
typedef struct {
    char *topic; /* NULL = empty slot */
    uint64_t seq;
    uint64_t stored_in; /* fp_commit_round: the attempt (commits) whose transaction has it */
} feed_t;

typedef fp_commit_item_t item_t;

typedef struct {
    uint64_t round;
    int marks;      /* senders whose MARK of this round is in */
    uint32_t flags; /* union of their barrier flags */
    int64_t wall_ns;/* when ingest injected the barrier */
    item_t *items;
    size_t nitems, cap;
    size_t nevents;
    uint64_t dl_bytes; /* dead letters kept (JSON + payload) */
} round_t;

typedef struct touched {
    feed_t *feed;
    uint64_t old;
} touched_t;

/* A key item of a round, for sorting. */
typedef struct key_ref {
    uint64_t w[3];  /* key bytes [cp, cp + 24) big-endian, zero-padded (cp:
                       the round's common prefix) */
    const uint8_t *key;
    uint32_t len, cp;
    uint32_t item; /* index in the round's items: arrival order */
} key_ref_t;

struct fp_commit {
    fp_store_t *store;
    fp_commit_publish_fn publish;
    void *ctx;
    int nsenders;          /* 1 + workers + shards */
    uint64_t *next_round;  /* per sender: the round its next message belongs to */
    uint64_t commits;      /* fp_commit_round attempts */
    touched_t *touched;    /* scratch, kept across rounds */
    size_t touched_cap;
    key_ref_t *keyrefs;
    size_t keyrefs_cap;
    round_t *rounds;       /* rounds[k] is round base + k */
    size_t nrounds, rounds_cap;
    uint64_t base;
    feed_t *feeds;
    size_t nfeeds, cap;
    uint64_t global_seq;   /* last global_seq stamped */
    struct reader_pos {
        char name[FP_READER_NAME_MAX + 1];
        uint64_t position;
    } *positions;          /* reported, not yet committed */
    size_t npositions, positions_cap;
    struct reader_aux {
        char name[FP_READER_NAME_MAX + 1];
        uint64_t aux[2];
    } *auxes;              /* carried by reader dead letters, not yet committed */
    size_t nauxes, auxes_cap;
    fp_commit_dl_limits_t dl;
    uint64_t dl_stored;    /* the store's dead letters: last measured + committed since */
    uint64_t dl_held;      /* dead-letter bytes in the rounds held */
};


static uint64_t *s_feed_seq(fp_commit_t *self, const char *topic, size_t len)
{
    if ((self->nfeeds + 1) * 2 > self->cap) {
        size_t ncap = self->cap ? self->cap * 2 : 64;
        feed_t *nf = calloc(ncap, sizeof *nf);
        if (!nf)
            return NULL;
        for (size_t i = 0; i < self->cap; i++)
            if (self->feeds[i].topic) {
                size_t j = XXH3_64bits(self->feeds[i].topic, strlen(self->feeds[i].topic)) &
                           (ncap - 1);
                while (nf[j].topic)
                    j = (j + 1) & (ncap - 1);
                nf[j] = self->feeds[i];
            }
        free(self->feeds);
        self->feeds = nf;
        self->cap = ncap;
    }
    size_t j = XXH3_64bits(topic, len) & (self->cap - 1);
    while (self->feeds[j].topic) {
        if (strlen(self->feeds[j].topic) == len && memcmp(self->feeds[j].topic, topic, len) == 0)
            return &self->feeds[j].seq;
        j = (j + 1) & (self->cap - 1);
    }
    char *t = malloc(len + 1);
    if (!t)
        return NULL;
    memcpy(t, topic, len);
    t[len] = 0;
    self->feeds[j] = (feed_t){.topic = t};
    self->nfeeds++;
    return &self->feeds[j].seq;
}

/* The round r's bucket, created (with any rounds before it) on demand. */
static round_t *s_round(fp_commit_t *self, uint64_t r)
{
    if (r < self->base)
        r = self->base; /* cannot happen for our own senders; be safe */
    size_t k = (size_t)(r - self->base);
    while (k >= self->nrounds) {
        if (fp_grow(&self->rounds, &self->rounds_cap, self->nrounds + 1, sizeof *self->rounds,
                    16) != 0)
            return NULL;
        self->rounds[self->nrounds] = (round_t){.round = self->base + self->nrounds};
        self->nrounds++;
    }
    return &self->rounds[k];
}

static void s_round_free(round_t *R)
{
    for (size_t i = 0; i < R->nitems; i++)
        for (int p = 0; p < R->items[i].nparts; p++)
            zmq_msg_close(&R->items[i].part[p]);
    free(R->items);
    R->items = NULL;
    R->nitems = R->cap = 0;
}

/* The event buffer of an item, 8-byte aligned (copied into a fresh message
   if the one received is not). */
static void *s_event_buf(item_t *it, size_t *len)
{
    zmq_msg_t *b = &it->part[1];
    *len = zmq_msg_size(b);
    if (((uintptr_t)zmq_msg_data(b) & 7) != 0) {
        zmq_msg_t c;
        zmq_msg_init_size(&c, *len);
        memcpy(zmq_msg_data(&c), zmq_msg_data(b), *len);
        zmq_msg_close(b);
        *b = c;
    }
    return zmq_msg_data(b);
}


/* LMDB's order (bytes, then the shorter first), then arrival: a key
   released and created again in one round ends created. The keys share a
   long prefix (format, kind, plant, the order number's leading digits);
   comparing it with memcmp on every step took a quarter of emit's time, so
   the bytes after it are compared as words first. */
static int s_cmp_key_ref(const void *a, const void *b)
{
    const key_ref_t *x = a, *y = b;
    for (int i = 0; i < 3; i++)
        if (x->w[i] != y->w[i])
            return x->w[i] < y->w[i] ? -1 : 1;
    size_t off = (size_t)x->cp + 24;
    if (x->len > off && y->len > off) {
        size_t l = (x->len < y->len ? x->len : y->len) - off;
        int c = memcmp(x->key + off, y->key + off, l);
        if (c)
            return c;
    }
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->item < y->item ? -1 : x->item > y->item;
}

/* Fills each key's words from the bytes after the keys' common prefix. */
static void s_key_order(key_ref_t *k, size_t n)
{
    size_t cp = k[0].len;
    for (size_t i = 1; i < n && cp > 0; i++) {
        size_t l = k[i].len < cp ? k[i].len : cp, j = 0;
        while (j < l && k[i].key[j] == k[0].key[j])
            j++;
        cp = j;
    }
    for (size_t i = 0; i < n; i++) {
        k[i].cp = (uint32_t)cp;
        for (int w = 0; w < 3; w++) {
            uint64_t o = 0;
            for (size_t b = 0; b < 8; b++) {
                size_t at = cp + (size_t)w * 8 + b;
                o = o << 8 | (at < k[i].len ? k[i].key[at] : 0);
            }
            k[i].w[w] = o;
        }
    }
}

static uint64_t s_dl_size(const item_t *it)
{
    return (it->nparts >= 2 ? zmq_msg_size((zmq_msg_t *)&it->part[1]) : 0) +
           (it->nparts >= 3 ? zmq_msg_size((zmq_msg_t *)&it->part[2]) : 0);
}

/* Whether dead letter `it` fits round R and the store (commit.h); counts
   it in both when it does. Otherwise reports it dropped and closes its
   frames. */
static bool s_dl_admit(fp_commit_t *self, round_t *R, item_t *it)
{
    uint64_t sz = s_dl_size(it);
    int why = 0;
    uint64_t cap = self->dl.store_bytes + self->dl.store_bytes / 8;
    if (self->dl.round_bytes && R->dl_bytes + sz > self->dl.round_bytes)
        why = FP_COMMIT_DL_ROUND;
    else if (self->store && self->dl.store_bytes && self->dl_stored + self->dl_held + sz > cap)
        why = FP_COMMIT_DL_STORE;
    if (!why) {
        R->dl_bytes += sz;
        self->dl_held += sz;
        return true;
    }
    if (self->dl.dropped)
        self->dl.dropped(self->ctx, it, why);
    for (int p = 0; p < it->nparts; p++)
        zmq_msg_close(&it->part[p]);
    it->nparts = 0;
    return false;
}

/* Files one item under its sender's current round (or, durability off,
   publishes it at once). Takes the item's frames. */
static void s_file(fp_commit_t *self, uint32_t from, item_t *itp)
{
    item_t it = *itp;
    fp_emit_hdr_t h = {.type = it.type, .from = from};
    if (!self->store) {
        /* Durability off: nothing to commit, so nothing to wait for. Events
           and dead letters go out at once (the round still gates acks). */
        if (h.type == FP_EMIT_EVENT && it.nparts == 2) {
            size_t len;
            void *buf = s_event_buf(&it, &len);
            uint64_t *seq = s_feed_seq(self, zmq_msg_data(&it.part[0]), zmq_msg_size(&it.part[0]));
            if (seq) {
                fp_codec_checkpoint_set_stream_seq(buf, len, ++*seq);
                fp_codec_checkpoint_set_global_seq(buf, len, ++self->global_seq);
                self->publish(self->ctx, &it);
            }
        } else if (h.type == FP_EMIT_DEAD) {
            round_t *R = s_round(self, self->next_round[h.from]);
            if (!R || s_dl_admit(self, R, &it))
                self->publish(self->ctx, &it);
        }
        for (int p = 0; p < it.nparts; p++)
            zmq_msg_close(&it.part[p]);
        return;
    }
    round_t *R = s_round(self, self->next_round[h.from]);
    if (!R || fp_grow(&R->items, &R->cap, R->nitems + 1, sizeof *R->items, 64) != 0) {
        /* Out of memory: nothing can be committed correctly any more. */
        fp_log(FP_LOG_ERROR, "emit", "out of memory holding a round; exiting", NULL);
        abort();
    }
    if (it.type == FP_EMIT_DEAD && !s_dl_admit(self, R, &it))
        return;
    R->items[R->nitems++] = it;
    if (it.type == FP_EMIT_EVENT)
        R->nevents++;
}

/* A bundle (stage.h) from `from`: every entry becomes an item of its own,
   its frames copied into fresh (aligned) messages, filed in order. */
static void s_unbundle(fp_commit_t *self, uint32_t from, item_t *bundle)
{
    const uint8_t *p = bundle->nparts == 1 ? zmq_msg_data(&bundle->part[0]) : NULL;
    size_t left = p ? zmq_msg_size(&bundle->part[0]) : 0;
    while (left >= 8) {
        uint32_t type, nparts;
        memcpy(&type, p, 4);
        memcpy(&nparts, p + 4, 4);
        p += 8;
        left -= 8;
        assert(nparts >= 1 && nparts <= 3); /* our own shard wrote it */
        item_t it = {.type = type, .nparts = (int)nparts};
        for (uint32_t k = 0; k < nparts; k++) {
            uint32_t len;
            assert(left >= 4);
            memcpy(&len, p, 4);
            p += 4;
            left -= 4;
            assert(left >= len);
            zmq_msg_init_size(&it.part[k], len);
            memcpy(zmq_msg_data(&it.part[k]), p, len);
            p += len;
            left -= len;
        }
        s_file(self, from, &it);
    }
    for (int k = 0; k < bundle->nparts; k++)
        zmq_msg_close(&bundle->part[k]);
}

/* Commits round R: stamps seqs, writes one transaction. 0, or the store's
   error with every counter rolled back (the round can be retried as is). */
static int s_commit(fp_commit_t *self, round_t *R)
{
    fp_store_txn_t *txn = NULL;
    int rc = 0;
    self->commits++; /* a retried round is a new attempt: its feeds are put again */
    if (self->store && (rc = fp_store_begin(self->store, &txn)) != 0)
        return rc;
    uint64_t g0 = self->global_seq;
    /* scratch kept across rounds (freeing ~1 MiB every round made jemalloc
       return and re-fault its pages each time) */
    touched_t *touched = self->touched;
    size_t ntouched = 0;
    key_ref_t *keys = self->keyrefs; /* the round's FP_EMIT_KEY items */
    size_t nkeys = 0;
    for (size_t i = 0; i < R->nitems && rc == 0; i++) {
        item_t *it = &R->items[i];
        if (it->type == FP_EMIT_EVENT && it->nparts == 2) {
            const char *t = zmq_msg_data(&it->part[0]);
            size_t tl = zmq_msg_size(&it->part[0]);
            size_t len;
            void *buf = s_event_buf(it, &len);
            uint64_t *seq = s_feed_seq(self, t, tl);
            if (!seq) {
                rc = -ENOMEM;
                break;
            }
            if (fp_grow(&self->touched, &self->touched_cap, ntouched + 1, sizeof *touched, 32) !=
                0) {
                rc = -ENOMEM;
                break;
            }
            touched = self->touched;
            touched[ntouched++] = (touched_t){(feed_t *)((char *)seq - offsetof(feed_t, seq)), *seq};
            (*seq)++;
            self->global_seq++;
            fp_codec_checkpoint_set_stream_seq(buf, len, *seq);
            fp_codec_checkpoint_set_global_seq(buf, len, self->global_seq);
            if (txn)
                rc = fp_outbox_put(txn, self->global_seq, R->round, R->wall_ns, t, tl, buf,
                                        len);
        } else if (!txn) {
            continue;
        } else if (it->type == FP_EMIT_KEY && it->nparts == 2) {
            if (fp_grow(&self->keyrefs, &self->keyrefs_cap, nkeys + 1, sizeof *keys, 1024) != 0) {
                rc = -ENOMEM;
                break;
            }
            keys = self->keyrefs;
            keys[nkeys++] = (key_ref_t){.key = zmq_msg_data(&it->part[0]),
                                        .len = (uint32_t)zmq_msg_size(&it->part[0]),
                                        .item = (uint32_t)i};
        } else if (it->type == FP_EMIT_SOURCE && it->nparts == 2 &&
                   zmq_msg_size(&it->part[0]) == sizeof(uint64_t)) {
            uint64_t source;
            memcpy(&source, zmq_msg_data(&it->part[0]), sizeof source);
            rc = fp_store_put_source(txn, source, zmq_msg_data(&it->part[1]),
                                     zmq_msg_size(&it->part[1]));
        } else if (it->type == FP_EMIT_COUNTER && it->nparts == 2) {
            rc = fp_store_put_counter(txn, zmq_msg_data(&it->part[0]), zmq_msg_size(&it->part[0]),
                                      zmq_msg_data(&it->part[1]), zmq_msg_size(&it->part[1]));
        } else if (it->type == FP_EMIT_DEAD && it->nparts >= 3) {
            const char *reason = fp_dl_reason_name((int)it->reason); /* the store's edge */
            uint64_t dl_seq;
            rc = fp_store_put_deadletter(txn, R->wall_ns, reason, zmq_msg_data(&it->part[1]),
                                         zmq_msg_size(&it->part[1]), zmq_msg_data(&it->part[2]),
                                         zmq_msg_size(&it->part[2]), &dl_seq);
        }
    }
    if (txn && rc == 0 && nkeys) {
        /* The round's keys in key order, through one cursor (see
           fp_store_put_key). */
        s_key_order(keys, nkeys);
        qsort(keys, nkeys, sizeof *keys, s_cmp_key_ref);
        for (size_t i = 0; i < nkeys && rc == 0; i++) {
            item_t *it = &R->items[keys[i].item];
            size_t sl = zmq_msg_size(&it->part[1]);
            rc = fp_store_put_key(txn, keys[i].key, keys[i].len,
                                  sl ? zmq_msg_data(&it->part[1]) : NULL, sl);
        }
    }
    if (txn && rc == 0) {
        /* Each touched feed once, with its newest seq (one put per feed, not
           per event: a round of 10,000 events touches a few dozen feeds). */
        for (size_t i = 0; i < ntouched && rc == 0; i++) {
            feed_t *f = touched[i].feed;
            if (f->stored_in == self->commits)
                continue;
            f->stored_in = self->commits;
            rc = fp_store_put_feed(txn, f->topic, strlen(f->topic), f->seq);
        }
        /* The readers' reports, with the round that carries them. A stale
           or out-of-range report is refused by the outbox without failing
           the round (outbox.h). */
        for (size_t i = 0; i < self->npositions && rc == 0; i++) {
            uint32_t flags = FP_OUTBOX_READER_ENABLED;
            uint32_t stored = 0;
            if (fp_outbox_reader(self->store, self->positions[i].name, NULL, &stored) == 0)
                flags = stored | FP_OUTBOX_READER_ENABLED; /* keeps DETACHED */
            int prc = fp_outbox_put_reader(txn, self->positions[i].name,
                                           self->positions[i].position, flags);
            if (prc != -ERANGE && prc != -EINVAL)
                rc = prc;
        }
        for (size_t i = 0; i < self->nauxes && rc == 0; i++) {
            int arc = fp_outbox_put_reader_aux(txn, self->auxes[i].name, self->auxes[i].aux);
            if (arc != -EINVAL)
                rc = arc;
        }
        if (rc == 0)
            rc = fp_store_set_round(txn, R->round, self->global_seq);
        if (rc == 0)
            rc = fp_store_commit(&txn);
    }
    if (txn)
        fp_store_abort(&txn);
    if (rc == 0) {
        self->npositions = self->nauxes = 0; /* committed (kept for a retry otherwise) */
        self->dl_stored += R->dl_bytes;
    }
    if (rc != 0) {
        /* Roll back, newest first, so each feed ends at its value before. */
        for (size_t i = ntouched; i-- > 0;)
            touched[i].feed->seq = touched[i].old;
        self->global_seq = g0;
    }
    return rc;
}

static int s_restore_feed(void *ctx, const char *topic, size_t tlen, uint64_t last_seq)
{
    fp_commit_t *self = ctx;
    uint64_t *seq = s_feed_seq(self, topic, tlen);
    if (!seq)
        return -1;
    *seq = last_seq;
    return 0;
}


/* ---- the API (commit.h) ---- */

fp_commit_t *fp_commit_new(int nsenders, uint64_t start_round, fp_store_t *store,
                           fp_commit_publish_fn publish, void *ctx, char *err, size_t errlen)
{
    assert(nsenders >= 1 && publish);
    fp_commit_t *self = calloc(1, sizeof *self);
    if (!self || !(self->next_round = calloc((size_t)nsenders, sizeof *self->next_round))) {
        snprintf(err, errlen, "out of memory");
        free(self);
        return NULL;
    }
    self->nsenders = nsenders;
    self->store = store;
    self->publish = publish;
    self->ctx = ctx;
    self->base = start_round;
    for (int i = 0; i < nsenders; i++)
        self->next_round[i] = start_round;
    if (store) {
        uint64_t last_round = 0;
        if (fp_store_last_round(store, &last_round, &self->global_seq) != 0 ||
            fp_store_each_feed(store, s_restore_feed, self) != 0) {
            snprintf(err, errlen, "the feed state in the state directory is damaged");
            fp_commit_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void fp_commit_destroy(fp_commit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fp_commit_t *self = *self_p;
    for (size_t i = 0; i < self->nrounds; i++)
        s_round_free(&self->rounds[i]);
    free(self->rounds);
    for (size_t i = 0; i < self->cap; i++)
        free(self->feeds[i].topic);
    free(self->feeds);
    free(self->next_round);
    free(self->touched);
    free(self->keyrefs);
    free(self->positions);
    free(self->auxes);
    free(self);
    *self_p = NULL;
}

void fp_commit_take(fp_commit_t *self, const fp_emit_hdr_t *h, fp_commit_item_t *item)
{
    /* Our own stages wrote it: a wrong sender is our bug. */
    assert(h->from < (uint32_t)self->nsenders);
    item_t it = *item;
    item->nparts = 0;
    if (h->type == FP_EMIT_BUNDLE) {
        s_unbundle(self, h->from, &it);
    } else if (h->type == FP_EMIT_MARK) {
        for (int p = 0; p < it.nparts; p++)
            zmq_msg_close(&it.part[p]);
        round_t *R = s_round(self, h->round);
        if (!R) {
            fp_log(FP_LOG_ERROR, "emit", "out of memory holding a round; exiting", NULL);
            abort();
        }
        if (h->round >= self->base) { /* a MARK of a released round cannot happen; be safe */
            R->marks++;
            R->flags |= h->flags;
            if (h->from == 0)
                R->wall_ns = h->wall_ns;
        }
        self->next_round[h->from] = h->round + 1;
    } else {
        it.type = h->type;
        it.reason = h->type == FP_EMIT_DEAD ? h->flags : 0;
        s_file(self, h->from, &it);
    }
}

bool fp_commit_ready(const fp_commit_t *self)
{
    return self->nrounds > 0 && self->rounds[0].marks == self->nsenders;
}

int fp_commit_round(fp_commit_t *self)
{
    assert(fp_commit_ready(self));
    return s_commit(self, &self->rounds[0]);
}

void fp_commit_publish(fp_commit_t *self, fp_commit_round_t *info)
{
    assert(self->nrounds > 0);
    round_t *R = &self->rounds[0];
    if (info)
        *info = (fp_commit_round_t){.round = R->round, .flags = R->flags, .wall_ns = R->wall_ns,
                                    .global_seq = self->global_seq, .events = R->nevents};
    for (size_t i = 0; i < R->nitems; i++) {
        item_t *it = &R->items[i];
        if ((it->type == FP_EMIT_EVENT && it->nparts == 2) ||
            (it->type == FP_EMIT_DEAD && it->nparts >= 3))
            self->publish(self->ctx, it);
    }
    self->dl_held -= R->dl_bytes;
    s_round_free(R);
    memmove(&self->rounds[0], &self->rounds[1], (self->nrounds - 1) * sizeof *self->rounds);
    self->nrounds--;
    self->base++;
}

int fp_commit_reader_position(fp_commit_t *self, const char *name, uint64_t position)
{
    size_t len = strnlen(name, FP_READER_NAME_MAX + 1);
    if (len < 1 || len > FP_READER_NAME_MAX)
        return -EINVAL;
    if (!self->store)
        return 0;
    for (size_t i = 0; i < self->npositions; i++)
        if (strcmp(self->positions[i].name, name) == 0) {
            if (position > self->positions[i].position)
                self->positions[i].position = position;
            return 0;
        }
    if (fp_grow(&self->positions, &self->positions_cap, self->npositions + 1,
                sizeof *self->positions, 8) != 0)
        return -ENOMEM;
    struct reader_pos *p = &self->positions[self->npositions++];
    memcpy(p->name, name, len + 1);
    p->position = position;
    return 0;
}

int fp_commit_reader_dead_letter(fp_commit_t *self, const char *name, const uint64_t aux[2],
                                 uint32_t reason, fp_commit_item_t *item)
{
    size_t len = strnlen(name, FP_READER_NAME_MAX + 1);
    if (len < 1 || len > FP_READER_NAME_MAX || item->nparts < 3) {
        for (int p = 0; p < item->nparts; p++)
            zmq_msg_close(&item->part[p]);
        item->nparts = 0;
        return -EINVAL;
    }
    item_t it = *item;
    item->nparts = 0;
    it.type = FP_EMIT_DEAD;
    it.reason = reason;
    if (!self->store) {
        self->publish(self->ctx, &it);
        for (int p = 0; p < it.nparts; p++)
            zmq_msg_close(&it.part[p]);
        return 0;
    }
    size_t i = 0;
    while (i < self->nauxes && strcmp(self->auxes[i].name, name) != 0)
        i++;
    if (i == self->nauxes) {
        if (fp_grow(&self->auxes, &self->auxes_cap, self->nauxes + 1, sizeof *self->auxes, 8) !=
            0) {
            for (int p = 0; p < it.nparts; p++)
                zmq_msg_close(&it.part[p]);
            return -ENOMEM;
        }
        memcpy(self->auxes[self->nauxes++].name, name, len + 1);
    }
    memcpy(self->auxes[i].aux, aux, sizeof self->auxes[i].aux);
    /* Into the oldest round held: the next one committed, whose txn also
       writes the aux (also when the dead letter itself is dropped for
       the budget: it has been reported, counted and logged, once). */
    round_t *R = s_round(self, self->base);
    if (!R || fp_grow(&R->items, &R->cap, R->nitems + 1, sizeof *R->items, 64) != 0) {
        fp_log(FP_LOG_ERROR, "emit", "out of memory holding a round; exiting", NULL);
        abort();
    }
    if (s_dl_admit(self, R, &it))
        R->items[R->nitems++] = it;
    return 0;
}

void fp_commit_set_dl_limits(fp_commit_t *self, const fp_commit_dl_limits_t *limits)
{
    self->dl = *limits;
}

void fp_commit_dl_stored(fp_commit_t *self, uint64_t bytes)
{
    self->dl_stored = bytes;
}

size_t fp_commit_pending(const fp_commit_t *self)
{
    return self->nrounds;
}

bool fp_commit_newest(const fp_commit_t *self, uint64_t *round, uint32_t *flags, bool *complete)
{
    if (self->nrounds == 0)
        return false;
    const round_t *R = &self->rounds[self->nrounds - 1];
    if (round)
        *round = R->round;
    if (flags)
        *flags = R->flags;
    if (complete)
        *complete = R->marks == self->nsenders;
    return true;
}

uint64_t fp_commit_next_round(const fp_commit_t *self)
{
    return self->base;
}

uint64_t fp_commit_global_seq(const fp_commit_t *self)
{
    return self->global_seq;
}

size_t fp_commit_feeds(const fp_commit_t *self)
{
    return self->nfeeds;
}

uint64_t fp_commit_feed_seq(const fp_commit_t *self, const char *topic, size_t len)
{
    if (!self->cap)
        return 0;
    size_t j = XXH3_64bits(topic, len) & (self->cap - 1);
    while (self->feeds[j].topic) {
        if (strlen(self->feeds[j].topic) == len && memcmp(self->feeds[j].topic, topic, len) == 0)
            return self->feeds[j].seq;
        j = (j + 1) & (self->cap - 1);
    }
    return 0;
}

void fp_commit_each_feed(const fp_commit_t *self,
                         void (*fn)(void *ctx, const char *topic, uint64_t stream_seq), void *ctx)
{
    for (size_t i = 0; i < self->cap; i++)
        if (self->feeds[i].topic && self->feeds[i].seq)
            fn(ctx, self->feeds[i].topic, self->feeds[i].seq);
}
