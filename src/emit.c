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
      reason, logged (at most 10 lines a second, the rest summarised) and
      published on the dead-letter endpoint.
    - Exits when every shard's drain barrier and every stage's dead-letter
      drain marker have arrived: nothing sent before them is left behind.
*/
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zmq.h>

#include "codec.h"
#include "log.h"
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
    int64_t log_window; /* dead-letter log rate limit: current second */
    int logged, suppressed;
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
        int64_t sec = fp_now_ns() / 1000000000;
        if (sec != self->log_window) {
            if (self->suppressed)
                fp_log(FP_LOG_WARN, "emit", "dead letters not logged (rate limit)",
                       "suppressed=%d", self->suppressed);
            self->log_window = sec;
            self->logged = self->suppressed = 0;
        }
        if (self->logged < 10) {
            self->logged++;
            fp_log(FP_LOG_WARN, "emit", "dead letter", "reason=%s detail=%.*s", reason,
                   (int)zmq_msg_size(&parts[1]), (const char *)zmq_msg_data(&parts[1]));
        } else {
            self->suppressed++;
        }
        zmq_msg_send(&parts[0], self->dlpub, ZMQ_SNDMORE);
        zmq_msg_send(&parts[1], self->dlpub, ZMQ_SNDMORE);
        zmq_msg_send(&parts[2], self->dlpub, 0);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
    return false;
}

static void *s_pub(void *zmq_ctx, const char *ep, char *err, size_t errlen)
{
    void *s = zmq_socket(zmq_ctx, ZMQ_PUB);
    if (!s)
        return NULL;
    /* Room for bursts (a posting-interval flush) before a slow subscriber
       loses messages; 2 s linger so the drain's last events reach them. */
    int hwm = 100000, linger = 2000;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(s, ep) != 0) {
        snprintf(err, errlen, "bind %s: %s", ep, zmq_strerror(zmq_errno()));
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
        ok = (self->pub = s_pub(args->zmq_ctx, cfg->publish, err, sizeof err)) != NULL;
    if (ok)
        ok = (self->dlpub = s_pub(args->zmq_ctx, cfg->deadletter, err, sizeof err)) != NULL;
    fp_stage_ready(args->zmq_ctx, "emit", ok ? 0 : -1, err);
    int shard_drains = 0, dl_drains = 0;
    uint64_t barriers = 0;
    const int dl_senders = 1 + cfg->workers + cfg->shards;
    while (ok && (shard_drains < cfg->shards || dl_drains < dl_senders)) {
        zmq_pollitem_t items[2] = {{self->in, 0, ZMQ_POLLIN, 0}, {self->dlin, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, -1) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        for (int k = 0; k < 256 && (items[0].revents & ZMQ_POLLIN); k++) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, self->in, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            if (zmq_msg_more(&m)) {
                s_checkpoint(self, &m);
            } else if (zmq_msg_size(&m) == sizeof(fp_barrier_t)) {
                fp_barrier_t b;
                memcpy(&b, zmq_msg_data(&m), sizeof b);
                if (b.flags & FP_BARRIER_DRAIN)
                    shard_drains++;
                /* A round is complete when every shard's barrier is in. */
                if (++barriers % (uint64_t)cfg->shards == 0)
                    fp_metrics_add(self->metrics, FP_M_ROUNDS, 1);
            }
            zmq_msg_close(&m);
        }
        if (items[1].revents & ZMQ_POLLIN)
            for (int k = 0; k < 256; k++) {
                zmq_pollitem_t one = {self->dlin, 0, ZMQ_POLLIN, 0};
                if (k > 0 && zmq_poll(&one, 1, 0) <= 0)
                    break;
                if (s_dead_letter(self))
                    dl_drains++;
            }
    }
    if (self->suppressed)
        fp_log(FP_LOG_WARN, "emit", "dead letters not logged (rate limit)", "suppressed=%d",
               self->suppressed);
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
