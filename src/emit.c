/*  emit.c - the commit and emit stage: one writer for state and feeds.

    DESIGN
    - Every stage sends emit what it did in a round (see fp_emit_hdr_t in
      stage.h): shards their checkpoints, dead letters and changed
      aggregation keys; workers their dead letters and changed dedup
      sources; ingest its dead letters. Each stage ends its part of round r
      with a MARK; emit files every message under its sender's current round.
    - A round is complete when all 1 + N + M marks are in. Rounds are
      committed in order, each as ONE LMDB transaction (store.h): the keys
      and sources it changed, its dead letters and its events (the outbox),
      with each event's stream_seq (per topic, gap-free) and global_seq (per
      instance, gap-free) stamped into the buffer first, and the feeds' last
      seqs. Only after the commit (and its fsync) are the events and dead
      letters published and ingest told COMMITTED r, which releases the
      producers' acks of round r. Without a state directory the same happens
      minus the transaction.
    - A commit that fails for space (full disk or LMDB map) keeps the round
      in memory and is retried every second; while it fails nothing is
      published or acked, producers keep their batches, and once rounds pile
      up (FP_ROUNDS_MAX) emit stops reading, which backs the pipeline up to
      the producers. It recovers by itself when space returns.
    - PUB never blocks: ZeroMQ drops messages for a subscriber whose queue
      (ZMQ_SNDHWM) is full; the subscriber sees a gap in stream_seq or
      global_seq and asks the replay endpoint (a ROUTER served here from the
      outbox: "REPLAY <from_global_seq> <max>").
    - Exits when the drain round is committed and published.
*/
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zmq.h>

#include "codec.h"
#include "log.h"
#include "security.h"
#include "stage.h"
#include "outbox.h"
#include "store.h"

/* Rounds held in memory before emit stops reading (commit failing). */
#define FP_ROUNDS_MAX 1200
/* Most events one REPLAY request returns. */
#define FP_REPLAY_MAX 10000

/* Per-topic stream_seq: an open-addressing map, topic -> last seq. */
typedef struct {
    char *topic; /* NULL = empty slot */
    uint64_t seq;
    uint64_t stored_in; /* s_commit: the attempt (commits) whose transaction has it */
} feed_t;

/* One message filed under a round: its frames after the header. */
typedef struct {
    uint32_t type; /* FP_EMIT_* */
    int nparts;
    zmq_msg_t part[3];
} item_t;

typedef struct {
    uint64_t round;
    int marks;      /* senders whose MARK of this round is in */
    uint32_t flags; /* union of their barrier flags */
    int64_t wall_ns;/* when ingest injected the barrier */
    item_t *items;
    size_t nitems, cap;
} round_t;

typedef struct {
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    fp_store_t *store;
    void *in, *dlin, *pub, *dlpub, *replay, *acks;
    int nsenders;          /* 1 + workers + shards */
    uint64_t *next_round;  /* per sender: the round its next message belongs to */
    uint64_t commits;      /* s_commit attempts */
    struct touched *touched;      /* s_commit scratch, kept across rounds */
    size_t touched_cap;
    struct key_ref *keyrefs;
    size_t keyrefs_cap;
    round_t *rounds;       /* rounds[k] is round base + k */
    size_t nrounds, rounds_cap;
    uint64_t base;
    feed_t *feeds;
    size_t nfeeds, cap;
    uint64_t global_seq;   /* last global_seq committed */
    bool stalled;          /* the last commit attempt failed */
    int64_t retry_at;      /* monotonic ns of the next attempt */
    int64_t stalled_since;
    int64_t next_trim;
    bool done;
    fp_stage_slot_t *slot; /* our gauges (metrics.h) */
    fp_hist_local_t round_hist;
} emit_t;

static uint64_t *s_feed_seq(emit_t *self, const char *topic, size_t len)
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

/* One logfmt line for a dead letter, with the business keys of its JSON
   detail (our own JSON, but the strings in it come from producers: every
   value is quoted and escaped). */
static void s_log_dead_letter(const char *reason, const char *json, size_t len)
{
    char keys[768], q[160];
    size_t n = 0;
    keys[0] = 0;
    json_t *d = json_loadb(json, len, 0, NULL);
    static const char *ints[][2] = {{"source_id", "source"}, {"epoch", "epoch"}, {"seq", "seq"},
                                    {"kind", "kind"}, {"bytes", "bytes"}};
    static const char *strs[][2] = {{"component", "from"}, {"plant", "plant"},
                                    {"order", "order"},    {"operation", "operation"},
                                    {"lot", "lot"},        {"detail", "detail"}};
    if (json_is_object(d)) {
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
            json_t *v = json_object_get(d, ints[i][0]);
            if (json_is_integer(v) && n < sizeof keys - 40)
                n += (size_t)snprintf(keys + n, sizeof keys - n, " %s=%lld", ints[i][1],
                                      (long long)json_integer_value(v));
        }
        for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
            json_t *v = json_object_get(d, strs[i][0]);
            if (!json_is_string(v))
                continue;
            fp_log_quote(q, sizeof q, json_string_value(v), 120);
            if (n + strlen(q) + 16 < sizeof keys)
                n += (size_t)snprintf(keys + n, sizeof keys - n, " %s=%s", strs[i][1], q);
        }
    } else {
        fp_log_quote(q, sizeof q, json, len < 120 ? len : 120);
        snprintf(keys, sizeof keys, " detail=%s", q);
    }
    json_decref(d);
    fp_log_admitted(FP_LOG_WARN, "emit", "dead letter", "reason=%s%s", reason, keys);
}

static void *s_server(void *zmq_ctx, int type, const fp_config_t *cfg, const char *ep, char *err,
                   size_t errlen)
{
    void *s = zmq_socket(zmq_ctx, type);
    if (!s)
        return NULL;
    /* Room for bursts (a posting-interval flush) before a slow subscriber
       loses messages; 2 s linger so the drain's last events reach them.
       The only frames a PUB reads are subscriptions (a topic prefix): a
       subscriber sending a larger frame is dropped before it is allocated. */
    int hwm = cfg->publish_hwm, linger = 2000;
    int64_t maxsize = 1024;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    /* Heartbeats, handshake timeout and, when configured, CURVE + ZAP. */
    int rc = fp_security_server_socket(s, cfg, err, errlen);
    if (rc == 0 && (rc = zmq_bind(s, ep)) != 0)
        snprintf(err, errlen, "bind %s: %s", ep, zmq_strerror(zmq_errno()));
    if (rc != 0) {
        linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s);
        return NULL;
    }
    return s;
}


static void *s_event_buf(item_t *it, size_t *len);
static void s_publish_item(emit_t *self, item_t *it);
static void s_file(emit_t *self, uint32_t from, item_t *itp);
static void s_unbundle(emit_t *self, uint32_t from, item_t *bundle);

/* The round r's bucket, created (with any rounds before it) on demand. */
static round_t *s_round(emit_t *self, uint64_t r)
{
    if (r < self->base)
        r = self->base; /* cannot happen for our own senders; be safe */
    size_t k = (size_t)(r - self->base);
    while (k >= self->nrounds) {
        if (self->nrounds == self->rounds_cap) {
            size_t ncap = self->rounds_cap ? self->rounds_cap * 2 : 16;
            round_t *n = realloc(self->rounds, ncap * sizeof *n);
            if (!n)
                return NULL;
            self->rounds = n;
            self->rounds_cap = ncap;
        }
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

/* Reads one message (header + frames) from sock and files it; false when
   none was waiting. */
static bool s_receive(emit_t *self, void *sock)
{
    fp_emit_hdr_t h;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return false;
    }
    bool more = zmq_msg_more(&m);
    /* Our own stages wrote it: a wrong header is our bug. */
    assert(zmq_msg_size(&m) == sizeof h);
    memcpy(&h, zmq_msg_data(&m), sizeof h);
    zmq_msg_close(&m);
    assert(h.from < (uint32_t)self->nsenders);
    item_t it = {.type = h.type};
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        zmq_msg_recv(&part, sock, 0);
        more = zmq_msg_more(&part);
        if (it.nparts < 3)
            it.part[it.nparts++] = part;
        else
            zmq_msg_close(&part);
    }
    if (h.type == FP_EMIT_BUNDLE) {
        s_unbundle(self, h.from, &it);
        return true;
    }
    if (h.type == FP_EMIT_MARK) {
        round_t *R = s_round(self, h.round);
        if (R) {
            R->marks++;
            R->flags |= h.flags;
            if (h.from == 0)
                R->wall_ns = h.wall_ns;
        }
        self->next_round[h.from] = h.round + 1;
        return true;
    }
    s_file(self, h.from, &it);
    return true;
}

/* Files one item under its sender's current round (or, durability off,
   publishes it at once). Takes the item's frames. */
static void s_file(emit_t *self, uint32_t from, item_t *itp)
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
                s_publish_item(self, &it);
            }
        } else if (h.type == FP_EMIT_DEAD) {
            s_publish_item(self, &it);
        }
        for (int p = 0; p < it.nparts; p++)
            zmq_msg_close(&it.part[p]);
        return;
    }
    round_t *R = s_round(self, self->next_round[h.from]);
    if (R && R->nitems == R->cap) {
        size_t ncap = R->cap ? R->cap * 2 : 64;
        item_t *n = realloc(R->items, ncap * sizeof *n);
        if (n) {
            R->items = n;
            R->cap = ncap;
        }
    }
    if (!R || R->nitems == R->cap) {
        /* Out of memory: nothing can be committed correctly any more. */
        fp_log(FP_LOG_ERROR, "emit", "out of memory holding a round; exiting", NULL);
        abort();
    }
    R->items[R->nitems++] = it;
}

/* A bundle (stage.h) from `from`: every entry becomes an item of its own,
   its frames copied into fresh (aligned) messages, filed in order. */
static void s_unbundle(emit_t *self, uint32_t from, item_t *bundle)
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

/* Commits round R: stamps seqs, writes one transaction. 0, or the store's
   error with every counter rolled back (the round can be retried as is). */
static int s_commit(emit_t *self, round_t *R)
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
    size_t ntouched = 0, tcap = self->touched_cap;
    key_ref_t *keys = self->keyrefs; /* the round's FP_EMIT_KEY items */
    size_t nkeys = 0, kcap = self->keyrefs_cap;
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
            if (ntouched == tcap) {
                tcap = tcap ? tcap * 2 : 32;
                touched_t *n = realloc(touched, tcap * sizeof *n);
                if (!n) {
                    rc = -ENOMEM;
                    break;
                }
                touched = self->touched = n;
                self->touched_cap = tcap;
            }
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
            if (nkeys == kcap) {
                kcap = kcap ? kcap * 2 : 1024;
                key_ref_t *n = realloc(keys, kcap * sizeof *n);
                if (!n) {
                    rc = -ENOMEM;
                    break;
                }
                keys = self->keyrefs = n;
                self->keyrefs_cap = kcap;
            }
            keys[nkeys++] = (key_ref_t){.key = zmq_msg_data(&it->part[0]),
                                        .len = (uint32_t)zmq_msg_size(&it->part[0]),
                                        .item = (uint32_t)i};
        } else if (it->type == FP_EMIT_SOURCE && it->nparts == 2 &&
                   zmq_msg_size(&it->part[0]) == sizeof(uint64_t)) {
            uint64_t source;
            memcpy(&source, zmq_msg_data(&it->part[0]), sizeof source);
            rc = fp_store_put_source(txn, source, zmq_msg_data(&it->part[1]),
                                     zmq_msg_size(&it->part[1]));
        } else if (it->type == FP_EMIT_DEAD && it->nparts == 3) {
            char reason[64] = "other";
            size_t tl = zmq_msg_size(&it->part[0]);
            if (tl > 11 && tl - 11 < sizeof reason) {
                memcpy(reason, (const char *)zmq_msg_data(&it->part[0]) + 11, tl - 11);
                reason[tl - 11] = 0;
            }
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
        if (rc == 0)
            rc = fp_store_set_round(txn, R->round, self->global_seq);
        if (rc == 0)
            rc = fp_store_commit(&txn);
    }
    if (txn)
        fp_store_abort(&txn);
    if (rc != 0) {
        /* Roll back, newest first, so each feed ends at its value before. */
        for (size_t i = ntouched; i-- > 0;)
            touched[i].feed->seq = touched[i].old;
        self->global_seq = g0;
    }
    return rc;
}

/* Publishes one committed (or, without a state directory, stamped) item. */
static void s_publish_item(emit_t *self, item_t *it)
{
    {
        if (it->type == FP_EMIT_EVENT && it->nparts == 2) {
            const char *t = zmq_msg_data(&it->part[0]);
            size_t tl = zmq_msg_size(&it->part[0]);
            fp_metric_t m = tl >= 11 && memcmp(t, "consumption", 11) == 0 ? FP_M_EVENTS_CONSUMPTION
                            : tl >= 10 && memcmp(t, "completion", 10) == 0 ? FP_M_EVENTS_COMPLETION
                                                                           : FP_M_EVENTS_SCRAP;
            fp_metrics_add(self->metrics, m, 1);
            zmq_msg_send(&it->part[0], self->pub, ZMQ_SNDMORE);
            zmq_msg_send(&it->part[1], self->pub, 0);
        } else if (it->type == FP_EMIT_DEAD && it->nparts == 3) {
            char reason[64] = "other";
            size_t tl = zmq_msg_size(&it->part[0]);
            if (tl > 11 && tl - 11 < sizeof reason) {
                memcpy(reason, (const char *)zmq_msg_data(&it->part[0]) + 11, tl - 11);
                reason[tl - 11] = 0;
            }
            fp_metrics_dead_letter(self->metrics, reason);
            if (fp_log_admit(FP_LOG_WARN, "emit"))
                s_log_dead_letter(reason, zmq_msg_data(&it->part[1]),
                                  zmq_msg_size(&it->part[1]));
            zmq_msg_send(&it->part[0], self->dlpub, ZMQ_SNDMORE);
            zmq_msg_send(&it->part[1], self->dlpub, ZMQ_SNDMORE);
            zmq_msg_send(&it->part[2], self->dlpub, 0);
        }
    }
}

/* Publishes a committed round and tells ingest. */
static void s_publish(emit_t *self, round_t *R)
{
    for (size_t i = 0; i < R->nitems; i++)
        s_publish_item(self, &R->items[i]);
    fp_committed_t c = {FP_MSG_COMMITTED, 0, R->round};
    zmq_send(self->acks, &c, sizeof c, 0);
    fp_hist_observe(&self->round_hist, FP_H_ROUND, fp_wall_ns() - R->wall_ns);
    fp_metrics_hist_merge(self->metrics, FP_H_ROUND, &self->round_hist);
    fp_metrics_add(self->metrics, FP_M_ROUNDS, 1);
    fp_metrics_round_done(self->metrics, fp_now_ns());
}

/* Commits and publishes every complete round, oldest first. */
static void s_advance(emit_t *self)
{
    int64_t now = fp_now_ns();
    while (self->nrounds > 0 && self->rounds[0].marks == self->nsenders) {
        if (self->stalled && now < self->retry_at)
            return;
        round_t *R = &self->rounds[0];
        int rc = s_commit(self, R);
        if (rc != 0) {
            if (!self->stalled) {
                self->stalled_since = now;
                fp_log(FP_LOG_ERROR, "emit",
                       "commit failed: not acknowledging or publishing until it succeeds",
                       "round=%llu error=\"%s\"", (unsigned long long)R->round,
                       fp_store_strerror(rc));
            }
            self->stalled = true;
            self->retry_at = now + 1000000000;
            fp_metrics_set_commit_stalled(self->metrics, 1);
            return;
        }
        if (self->stalled) {
            fp_log(FP_LOG_INFO, "emit", "commit recovered", "round=%llu stalled_ms=%lld",
                   (unsigned long long)R->round,
                   (long long)((now - self->stalled_since) / 1000000));
            self->stalled = false;
            fp_metrics_set_commit_stalled(self->metrics, 0);
        }
        s_publish(self, R);
        if (R->flags & FP_BARRIER_DRAIN)
            self->done = true;
        s_round_free(R);
        memmove(&self->rounds[0], &self->rounds[1], (self->nrounds - 1) * sizeof *self->rounds);
        self->nrounds--;
        self->base++;
    }
}

typedef struct {
    void *sock;
    zmq_msg_t *id;
    uint64_t next;
    uint32_t sent;
} replay_ctx_t;

static int s_replay_one(void *ctx, uint64_t global_seq, uint64_t round, const char *topic,
                        size_t tlen, const void *ev, size_t evlen)
{
    replay_ctx_t *rc = ctx;
    zmq_send(rc->sock, zmq_msg_data(rc->id), zmq_msg_size(rc->id), ZMQ_SNDMORE);
    zmq_send(rc->sock, topic, tlen, ZMQ_SNDMORE);
    zmq_send(rc->sock, ev, evlen, 0);
    rc->next = global_seq + 1;
    rc->sent++;
    return 0;
}

/* Answers one "REPLAY <from> <max>" request from the outbox; false when no
   request was waiting. */
static bool s_replay(emit_t *self)
{
    zmq_msg_t id, req;
    zmq_msg_init(&id);
    zmq_msg_init(&req);
    if (zmq_msg_recv(&id, self->replay, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        zmq_msg_close(&req);
        return false;
    }
    if (!zmq_msg_more(&id) || zmq_msg_recv(&req, self->replay, 0) < 0)
        goto out;
    char text[64] = "";
    size_t n = zmq_msg_size(&req) < sizeof text - 1 ? zmq_msg_size(&req) : sizeof text - 1;
    memcpy(text, zmq_msg_data(&req), n);
    unsigned long long from = 0, max = 0;
    char end[96];
    uint64_t oldest = 0;
    if (sscanf(text, "REPLAY %llu %llu", &from, &max) != 2 || from == 0) {
        snprintf(end, sizeof end, "ERROR expected \"REPLAY <from_global_seq> <max_events>\"");
    } else {
        replay_ctx_t rc = {self->replay, &id, from, 0};
        if (self->store) {
            if (fp_outbox_oldest(self->store, &oldest) != 0)
                oldest = self->global_seq + 1;
            fp_outbox_read(self->store, from,
                                 max < FP_REPLAY_MAX ? (uint32_t)max : FP_REPLAY_MAX,
                                 s_replay_one, &rc);
        } else {
            oldest = self->global_seq + 1; /* no outbox without a state directory */
        }
        if (rc.next < oldest)
            rc.next = oldest;
        snprintf(end, sizeof end, "%llu %llu %llu", (unsigned long long)rc.next,
                 (unsigned long long)oldest, (unsigned long long)self->global_seq);
    }
    zmq_send(self->replay, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE);
    zmq_send(self->replay, "END", 3, ZMQ_SNDMORE);
    zmq_send(self->replay, end, strlen(end), 0);
out:
    zmq_msg_close(&id);
    zmq_msg_close(&req);
    /* Drop whatever else a client sent in that message. */
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(self->replay, ZMQ_RCVMORE, &more, &sz);
    while (more) {
        zmq_msg_t x;
        zmq_msg_init(&x);
        zmq_msg_recv(&x, self->replay, 0);
        more = zmq_msg_more(&x);
        zmq_msg_close(&x);
    }
    return true;
}

static int s_restore_feed(void *ctx, const char *topic, size_t tlen, uint64_t last_seq)
{
    emit_t *self = ctx;
    uint64_t *seq = s_feed_seq(self, topic, tlen);
    if (!seq)
        return -1;
    *seq = last_seq;
    return 0;
}

void *fp_emit_main(void *argp)
{
    fp_stage_args_t *args = argp;
    emit_t self_ = {.cfg = args->cfg, .metrics = args->metrics, .store = args->store,
                    .base = args->start_round};
    emit_t *self = &self_;
    const fp_config_t *cfg = self->cfg;
    char err[512] = "";
    self->nsenders = 1 + cfg->workers + cfg->shards;
    self->next_round = calloc((size_t)self->nsenders, sizeof *self->next_round);
    bool ok = self->next_round != NULL;
    for (int i = 0; ok && i < self->nsenders; i++)
        self->next_round[i] = args->start_round;
    if (ok)
        ok = (self->in = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, FP_EP_EMIT, 1, -1,
                                         cfg->queue_batches, err, sizeof err)) != NULL;
    if (ok)
        ok = (self->dlin = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, FP_EP_DEAD, 1, -1,
                                           cfg->queue_batches, err, sizeof err)) != NULL;
    /* COMMITTED notices to ingest: on its acks pipe (no HWM there). */
    if (ok)
        ok = (self->acks = fp_stage_socket(args->zmq_ctx, ZMQ_PUSH, FP_EP_ACKS, 0, 0, -1, err,
                                           sizeof err)) != NULL;
    if (ok)
        ok = (self->pub = s_server(args->zmq_ctx, ZMQ_PUB, cfg, cfg->publish, err, sizeof err)) != NULL;
    if (ok)
        ok = (self->dlpub = s_server(args->zmq_ctx, ZMQ_PUB, cfg, cfg->deadletter, err, sizeof err)) != NULL;
    if (ok && cfg->replay[0]) {
        ok = (self->replay = s_server(args->zmq_ctx, ZMQ_ROUTER, cfg, cfg->replay, err, sizeof err)) != NULL;
    }
    if (ok && self->store) {
        uint64_t last_round = 0;
        if (fp_store_last_round(self->store, &last_round, &self->global_seq) != 0 ||
            fp_store_each_feed(self->store, s_restore_feed, self) != 0) {
            snprintf(err, sizeof err, "emit: the feed state in the state directory is damaged");
            ok = false;
        } else {
            fp_log(FP_LOG_INFO, "emit", "restored", "round=%llu global_seq=%llu feeds=%zu",
                   (unsigned long long)last_round, (unsigned long long)self->global_seq,
                   self->nfeeds);
        }
    }
    fp_stage_ready(args->zmq_ctx, "emit", ok ? 0 : -1, err);
    self->slot = fp_metrics_stage(self->metrics, FP_STAGE_EMIT, 0);
    fp_metrics_stage_beat(self->slot, fp_now_ns());
    int64_t drain_deadline = 0;
    while (ok && !self->done) {
        /* Stop reading (back-pressure) while too many rounds wait for a
           commit that keeps failing. */
        bool reading = self->nrounds < FP_ROUNDS_MAX;
        zmq_pollitem_t items[3] = {{self->in, 0, reading ? ZMQ_POLLIN : 0, 0},
                                   {self->dlin, 0, reading ? ZMQ_POLLIN : 0, 0},
                                   {self->replay, 0, self->replay ? ZMQ_POLLIN : 0, 0}};
        long timeout = self->stalled ? 100 : 1000;
        if (zmq_poll(items, self->replay ? 3 : 2, timeout) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        int64_t woke = fp_now_ns();
        fp_metrics_stage_beat(self->slot, woke);
        uint64_t received = 0;
        for (int s = 0; s < 2; s++) {
            void *sock = s == 0 ? self->in : self->dlin;
            /* Non-blocking receives until the pipe is empty, in bounded
               bursts (no zmq_poll per message). */
            for (int k = 0; k < 256 && (items[s].revents & ZMQ_POLLIN); k++) {
                if (!s_receive(self, sock))
                    break;
                received++;
            }
        }
        if (items[2].revents & ZMQ_POLLIN)
            for (int k = 0; k < 16; k++)
                if (!s_replay(self))
                    break;
        fp_metrics_stage_received(self->slot, received);
        s_advance(self);
        if (self->store && woke >= self->next_trim) {
            uint64_t deleted = 0;
            fp_outbox_trim(self->store, fp_wall_ns() - cfg->retention_ms * 1000000, 10000,
                                 &deleted);
            self->next_trim = woke + 1000000000;
        }
        /* The drain round is in but cannot be committed: give up after the
           drain timeout (acks were never sent: producers resend). */
        if (self->nrounds > 0 && self->stalled &&
            (self->rounds[self->nrounds - 1].flags & FP_BARRIER_DRAIN) &&
            self->rounds[self->nrounds - 1].marks == self->nsenders) {
            if (!drain_deadline)
                drain_deadline = woke + cfg->drain_timeout_ms * 1000000;
            else if (woke >= drain_deadline) {
                fp_log(FP_LOG_ERROR, "emit", "drain: rounds not committed, exiting without them",
                       "rounds=%zu", self->nrounds);
                break;
            }
        }
        fp_metrics_stage_busy(self->slot, fp_now_ns() - woke);
    }
    if (self->slot)
        fp_metrics_stage_exit(self->slot);
    void *socks[] = {self->in, self->dlin, self->pub, self->dlpub, self->replay, self->acks};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (socks[i])
            zmq_close(socks[i]);
    for (size_t i = 0; i < self->nrounds; i++)
        s_round_free(&self->rounds[i]);
    free(self->rounds);
    for (size_t i = 0; i < self->cap; i++)
        free(self->feeds[i].topic);
    free(self->feeds);
    free(self->next_round);
    free(self->touched);
    free(self->keyrefs);
    return NULL;
}
