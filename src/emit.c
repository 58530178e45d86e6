/*  emit.c - the emit stage: one writer for the published feeds.

    DESIGN
    - Owns the PUB sockets (checkpoints, dead letters) and the per-topic
      stream_seq counters, so stream_seq has one writer and no gaps: every
      checkpoint a shard sends gets the next number of its topic, is stamped
      into the buffer in place and published.
    - A "feed" is one topic (kind/plant/line); subscribers track stream_seq
      per topic, whatever prefix they subscribe to.
    - PUB never blocks: ZeroMQ drops messages for a subscriber whose queue
      (ZMQ_SNDHWM) is full. A subscriber detects that as a stream_seq gap.
    - Dead letters from every stage arrive on FP_EP_DEAD; each is counted by
      reason, logged with its business keys (source, seq, plant, order,
      operation, lot; the log's rate limit, log.h, keeps a flood short) and
      published on the dead-letter endpoint.
    - Rounds: a round is complete when every shard's barrier of it is in;
      its latency (ingest's wall_ns to now) feeds floorpost_round_seconds.
    - Exits when every shard's drain barrier and every stage's dead-letter
      drain marker have arrived: nothing sent before them is left behind.
*/
#include <errno.h>
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

/* Per-topic stream_seq: an open-addressing map, topic -> last seq. */
typedef struct {
    char *topic; /* NULL = empty slot */
    uint64_t seq;
} feed_t;

typedef struct {
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    void *in, *dlin, *pub, *dlpub;
    feed_t *feeds;
    size_t nfeeds, cap;
    void *aligned;
    size_t aligned_cap;
    fp_stage_slot_t *slot; /* our gauges (metrics.h) */
    /* Barriers per round, to see when every shard's is in. Shards can be
       apart by a few rounds (queue_batches); a slot is reused when a newer
       round lands on it. */
    struct {
        uint64_t round;
        int count;
    } rounds[256];
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
    self->feeds[j] = (feed_t){t, 0};
    self->nfeeds++;
    return &self->feeds[j].seq;
}

static void s_checkpoint(emit_t *self, zmq_msg_t *topic)
{
    zmq_msg_t body;
    zmq_msg_init(&body);
    zmq_msg_recv(&body, self->in, 0);
    void *data = zmq_msg_data(&body);
    size_t len = zmq_msg_size(&body);
    const char *t = zmq_msg_data(topic);
    size_t tl = zmq_msg_size(topic);
    uint64_t *seq = s_feed_seq(self, t, tl);
    if (seq) {
        bool copied = ((uintptr_t)data & 7) != 0;
        if (copied) {
            if (self->aligned_cap < len) {
                free(self->aligned);
                self->aligned = malloc(len);
                self->aligned_cap = self->aligned ? len : 0;
            }
            if (self->aligned)
                memcpy(self->aligned, data, len);
        }
        void *buf = copied ? self->aligned : data;
        if (buf && fp_codec_checkpoint_set_stream_seq(buf, len, *seq + 1) == FP_CODEC_OK) {
            (*seq)++;
            fp_metric_t m = tl >= 11 && memcmp(t, "consumption", 11) == 0 ? FP_M_EVENTS_CONSUMPTION
                            : tl >= 10 && memcmp(t, "completion", 10) == 0 ? FP_M_EVENTS_COMPLETION
                                                                           : FP_M_EVENTS_SCRAP;
            fp_metrics_add(self->metrics, m, 1);
            zmq_msg_send(topic, self->pub, ZMQ_SNDMORE);
            if (copied)
                zmq_send(self->pub, buf, len, 0);
            else
                zmq_msg_send(&body, self->pub, 0);
        }
    }
    zmq_msg_close(&body);
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

/* Counts barrier b; true when it completes its round (every shard's in). */
static bool s_round_barrier(emit_t *self, const fp_barrier_t *b)
{
    size_t i = (size_t)(b->round % (sizeof self->rounds / sizeof self->rounds[0]));
    if (self->rounds[i].round != b->round) {
        self->rounds[i].round = b->round;
        self->rounds[i].count = 0;
    }
    return ++self->rounds[i].count == self->cfg->shards;
}

/* Returns true for a stage's drain marker. */
static bool s_dead_letter(emit_t *self)
{
    zmq_msg_t parts[3];
    int n = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, self->dlin, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        bool more = zmq_msg_more(&m);
        if (n < 3)
            parts[n++] = m;
        else
            zmq_msg_close(&m);
        if (!more)
            break;
    }
    if (n == 1) {
        zmq_msg_close(&parts[0]);
        return true; /* FP_MSG_DL_DRAIN */
    }
    if (n == 3) {
        char reason[64] = "other";
        size_t tl = zmq_msg_size(&parts[0]);
        const char *t = zmq_msg_data(&parts[0]);
        if (tl > 11 && tl - 11 < sizeof reason) {
            memcpy(reason, t + 11, tl - 11);
            reason[tl - 11] = 0;
        }
        fp_metrics_dead_letter(self->metrics, reason);
        if (fp_log_admit(FP_LOG_WARN, "emit"))
            s_log_dead_letter(reason, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]));
        zmq_msg_send(&parts[0], self->dlpub, ZMQ_SNDMORE);
        zmq_msg_send(&parts[1], self->dlpub, ZMQ_SNDMORE);
        zmq_msg_send(&parts[2], self->dlpub, 0);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
    return false;
}

static void *s_pub(void *zmq_ctx, const fp_config_t *cfg, const char *ep, char *err,
                   size_t errlen)
{
    void *s = zmq_socket(zmq_ctx, ZMQ_PUB);
    if (!s)
        return NULL;
    /* Room for bursts (a posting-interval flush) before a slow subscriber
       loses messages; 2 s linger so the drain's last events reach them.
       The only frames a PUB reads are subscriptions (a topic prefix): a
       subscriber sending a larger frame is dropped before it is allocated. */
    int hwm = 100000, linger = 2000;
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

void *fp_emit_main(void *argp)
{
    fp_stage_args_t *args = argp;
    emit_t self_ = {.cfg = args->cfg, .metrics = args->metrics};
    emit_t *self = &self_;
    const fp_config_t *cfg = self->cfg;
    char err[512] = "";
    bool ok = (self->in = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, FP_EP_EMIT, 1, -1,
                                          cfg->queue_batches, err, sizeof err)) != NULL;
    if (ok)
        ok = (self->dlin = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, FP_EP_DEAD, 1, -1,
                                           cfg->queue_batches, err, sizeof err)) != NULL;
    if (ok)
        ok = (self->pub = s_pub(args->zmq_ctx, cfg, cfg->publish, err, sizeof err)) != NULL;
    if (ok)
        ok = (self->dlpub = s_pub(args->zmq_ctx, cfg, cfg->deadletter, err, sizeof err)) != NULL;
    fp_stage_ready(args->zmq_ctx, "emit", ok ? 0 : -1, err);
    self->slot = fp_metrics_stage(self->metrics, FP_STAGE_EMIT, 0);
    fp_metrics_stage_beat(self->slot, fp_now_ns());
    int shard_drains = 0, dl_drains = 0;
    const int dl_senders = 1 + cfg->workers + cfg->shards;
    while (ok && (shard_drains < cfg->shards || dl_drains < dl_senders)) {
        zmq_pollitem_t items[2] = {{self->in, 0, ZMQ_POLLIN, 0}, {self->dlin, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, -1) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        /* Beats at least once a round: every round brings barriers. */
        int64_t woke = fp_now_ns();
        fp_metrics_stage_beat(self->slot, woke);
        uint64_t received = 0;
        for (int k = 0; k < 256 && (items[0].revents & ZMQ_POLLIN); k++) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, self->in, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            received++;
            if (zmq_msg_more(&m)) {
                s_checkpoint(self, &m);
            } else if (zmq_msg_size(&m) == sizeof(fp_barrier_t)) {
                fp_barrier_t b;
                memcpy(&b, zmq_msg_data(&m), sizeof b);
                if (b.flags & FP_BARRIER_DRAIN)
                    shard_drains++;
                if (s_round_barrier(self, &b)) {
                    fp_hist_observe(&self->round_hist, FP_H_ROUND, fp_wall_ns() - b.wall_ns);
                    fp_metrics_hist_merge(self->metrics, FP_H_ROUND, &self->round_hist);
                    fp_metrics_add(self->metrics, FP_M_ROUNDS, 1);
                    fp_metrics_round_done(self->metrics, fp_now_ns());
                }
            }
            zmq_msg_close(&m);
        }
        fp_metrics_stage_received(self->slot, received);
        if (items[1].revents & ZMQ_POLLIN)
            for (int k = 0; k < 256; k++) {
                zmq_pollitem_t one = {self->dlin, 0, ZMQ_POLLIN, 0};
                if (k > 0 && zmq_poll(&one, 1, 0) <= 0)
                    break;
                if (s_dead_letter(self))
                    dl_drains++;
            }
        fp_metrics_stage_busy(self->slot, fp_now_ns() - woke);
    }
    if (self->slot)
        fp_metrics_stage_exit(self->slot);
    void *socks[] = {self->in, self->dlin, self->pub, self->dlpub};
    for (size_t i = 0; i < 4; i++)
        if (socks[i])
            zmq_close(socks[i]);
    for (size_t i = 0; i < self->cap; i++)
        free(self->feeds[i].topic);
    free(self->feeds);
    free(self->aligned);
    return NULL;
}
