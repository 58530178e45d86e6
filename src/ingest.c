/*  ingest.c - the ingest stage: producers' frames in, barriers out.

    DESIGN
    - Owns the producer-facing sockets: a ROUTER (acked producers; acks go
      back to the sending connection) and a PULL (fire-and-forget), both with
      ZMQ_MAXMSGSIZE = max_frame_bytes, so libzmq refuses an oversized frame
      at its length header, before allocating it, and drops that connection.
    - Routes each frame to worker hash(source_id) % N, so one source's dedup
      state lives in one worker. Reading source_id is an O(1) bounds-checked
      peek (fp_codec_batch_peek_source); the worker verifies the whole frame.
      A frame whose source cannot be read (peek returns 0) goes to the
      worker of source 0, which dead-letters it with the precise reason.
    - The payload moves zero-copy (zmq_msg_move) from producer socket to
      worker pipe.
    - Back-pressure: worker pipes have HWM queue_batches. When a worker's
      pipe is full, ingest holds that one frame and stops reading producers
      until the pipe has room; the producers' own pipes (ingest_hwm) and then
      TCP fill up and slow the producers down. Nothing accepted is dropped.
      Acks (workers -> ingest) have no HWM so a worker never blocks on them:
      that keeps the ingest <-> worker loop free of deadlock.
    - Every round_interval_ms it sends a barrier to every worker (behind the
      frames before it); when posting_interval_ms has passed the barrier
      carries FP_BARRIER_FLUSH. On "DRAIN" from main: stop reading producers,
      send the DRAIN barrier, forward the workers' last acks, exit.
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
#include "route.h"
#include "security.h"
#include "stage.h"

typedef struct {
    void *zmq_ctx;
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    void *ctl, *router, *pull, *acks, *dl;
    void *workers[64];
    int nworkers;
    /* A frame waiting for room in worker `held_w`'s pipe. */
    bool held;
    int held_w;
    fp_frame_meta_t held_meta;
    zmq_msg_t held_payload;
    uint64_t round;                 /* last barrier injected */
    uint64_t committed;             /* last round emit reported committed */
    /* Acks wait here until their round is committed (durable): a producer
       is told "accepted" only for what a crash cannot take back. Bounded by
       the batches in flight over about two rounds. */
    struct held_ack {
        uint64_t round;
        zmq_msg_t id, ack;
    } *acks_held;
    size_t nacks_held, acks_cap;
    fp_stage_slot_t *slot;          /* our gauges (metrics.h) */
    fp_stage_slot_t *wslot[64];     /* each worker's: we count what we queue for it */
} ingest_t;

static int s_worker_of(ingest_t *self, const void *data, size_t len)
{
    if (self->nworkers == 1)
        return 0;
    uint64_t source = fp_codec_batch_peek_source(data, len);
    return (int)fp_route_worker(source, (uint32_t)self->nworkers);
}

/* Tries to hand the held frame to its worker without blocking. */
static bool s_try_send_held(ingest_t *self)
{
    void *w = self->workers[self->held_w];
    size_t metalen = offsetof(fp_frame_meta_t, id) + self->held_meta.idlen;
    if (zmq_send(w, &self->held_meta, metalen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return false; /* EAGAIN: the pipe is full */
    /* Once the first part is queued the rest of the message follows it. */
    zmq_msg_send(&self->held_payload, w, 0);
    self->held = false;
    fp_metrics_stage_sent(self->wslot[self->held_w], 1);
    return true;
}

static void s_drop_rest(void *sock)
{
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
}

/* Reads one producer message into held_meta/held_payload. Returns true when
   a frame is held and ready to route. */
static bool s_read_producer(ingest_t *self, void *sock, bool routed)
{
    self->held_meta.type = FP_MSG_FRAME;
    self->held_meta.idlen = 0;
    if (routed) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            return false;
        }
        size_t n = zmq_msg_size(&id);
        if (n > sizeof self->held_meta.id)
            n = sizeof self->held_meta.id;
        memcpy(self->held_meta.id, zmq_msg_data(&id), n);
        self->held_meta.idlen = (uint32_t)n;
        bool more = zmq_msg_more(&id);
        zmq_msg_close(&id);
        if (!more)
            return false;
    }
    zmq_msg_init(&self->held_payload);
    if (zmq_msg_recv(&self->held_payload, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&self->held_payload);
        return false;
    }
    size_t len = zmq_msg_size(&self->held_payload);
    fp_metrics_add(self->metrics, FP_M_FRAMES_IN, 1);
    fp_metrics_add(self->metrics, FP_M_BYTES_IN, len);
    if (zmq_msg_more(&self->held_payload)) {
        /* A telemetry message is exactly one frame. */
        s_drop_rest(sock);
        size_t keep = len < 4096 ? len : 4096;
        char fields[96];
        snprintf(fields, sizeof fields, "\"detail\":\"more than one payload frame\",\"bytes\":%zu", len);
        fp_dead_letter(self->dl, 0, "bad_envelope", "ingest", fields,
                       zmq_msg_data(&self->held_payload), keep);
        zmq_msg_close(&self->held_payload);
        return false;
    }
    self->held_w = s_worker_of(self, zmq_msg_data(&self->held_payload), len);
    self->held = true;
    return true;
}

static void s_send_barrier(ingest_t *self, uint32_t flags)
{
    fp_barrier_t b = {FP_MSG_BARRIER, flags, ++self->round, fp_wall_ns()};
    for (int w = 0; w < self->nworkers; w++) {
        fp_metrics_stage_sent(self->wslot[w], 1);
        zmq_send(self->workers[w], &b, sizeof b, 0); /* blocks at HWM: back-pressure */
    }
    /* Our own part of the round (dead letters so far) ends here. */
    fp_emit_mark(self->dl, 0, &b);
}

static void s_send_ack(ingest_t *self, zmq_msg_t *id, zmq_msg_t *ack)
{
    if (self->router) {
        /* ROUTER drops what it cannot route (peer gone): the producer will
           resend and dedup makes that harmless. */
        zmq_msg_send(id, self->router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_msg_send(ack, self->router, ZMQ_DONTWAIT);
        fp_metrics_add(self->metrics, FP_M_ACKS, 1);
    }
    zmq_msg_close(id);
    zmq_msg_close(ack);
}

/* Sends every held ack whose round is committed, keeping the others in order. */
static void s_release_acks(ingest_t *self)
{
    size_t k = 0;
    for (size_t i = 0; i < self->nacks_held; i++) {
        struct held_ack *h = &self->acks_held[i];
        if (h->round <= self->committed)
            s_send_ack(self, &h->id, &h->ack);
        else
            self->acks_held[k++] = *h;
    }
    self->nacks_held = k;
}

/* Forwards one ack (or counts a worker's final marker). */
static void s_forward_ack(ingest_t *self, int *drained)
{
    zmq_msg_t a, b;
    zmq_msg_init(&a);
    if (zmq_msg_recv(&a, self->acks, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&a);
        return;
    }
    fp_metrics_stage_received(self->slot, 1);
    if (!zmq_msg_more(&a)) {
        uint32_t type = 0;
        if (zmq_msg_size(&a) >= sizeof type)
            memcpy(&type, zmq_msg_data(&a), sizeof type);
        if (type == FP_MSG_COMMITTED && zmq_msg_size(&a) == sizeof(fp_committed_t)) {
            fp_committed_t c;
            memcpy(&c, zmq_msg_data(&a), sizeof c);
            if (c.round > self->committed)
                self->committed = c.round;
            s_release_acks(self);
        } else {
            (*drained)++; /* FP_MSG_DL_DRAIN marker: that worker is done */
        }
        zmq_msg_close(&a);
        return;
    }
    /* [identity][Ack][u64 round of the batch] from a worker. */
    zmq_msg_init(&b);
    zmq_msg_recv(&b, self->acks, 0);
    uint64_t round = UINT64_MAX;
    if (zmq_msg_more(&b)) {
        zmq_msg_t r;
        zmq_msg_init(&r);
        zmq_msg_recv(&r, self->acks, 0);
        if (zmq_msg_size(&r) == sizeof round)
            memcpy(&round, zmq_msg_data(&r), sizeof round);
        zmq_msg_close(&r);
    }
    if (round <= self->committed) {
        s_send_ack(self, &a, &b);
        return;
    }
    if (self->nacks_held == self->acks_cap) {
        size_t ncap = self->acks_cap ? self->acks_cap * 2 : 256;
        struct held_ack *n = realloc(self->acks_held, ncap * sizeof *n);
        if (!n) {
            /* No memory to hold it: drop the ack; the producer resends the
               batch and dedup makes that harmless. */
            zmq_msg_close(&a);
            zmq_msg_close(&b);
            return;
        }
        self->acks_held = n;
        self->acks_cap = ncap;
    }
    struct held_ack *h = &self->acks_held[self->nacks_held++];
    h->round = round;
    zmq_msg_init(&h->id);
    zmq_msg_init(&h->ack);
    zmq_msg_move(&h->id, &a);
    zmq_msg_move(&h->ack, &b);
    zmq_msg_close(&a);
    zmq_msg_close(&b);
}

/* A producer-facing socket: frame size limit, receive HWM, heartbeats,
   handshake timeout, CURVE when configured (security.h), bound. */
static void *s_producer_socket(ingest_t *self, int type, const char *ep, char *err, size_t errlen)
{
    void *s = zmq_socket(self->zmq_ctx, type);
    if (!s) {
        snprintf(err, errlen, "zmq_socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    int64_t maxsize = (int64_t)self->cfg->max_frame_bytes;
    int hwm = self->cfg->ingest_hwm, linger = 1000;
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    /* Heartbeats, handshake timeout and, when configured, CURVE + ZAP. */
    int rc = fp_security_server_socket(s, self->cfg, err, errlen);
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

static void s_close_all(ingest_t *self)
{
    void **socks[] = {&self->ctl, &self->router, &self->pull, &self->acks, &self->dl};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (*socks[i]) {
            zmq_close(*socks[i]);
            *socks[i] = NULL;
        }
    for (int w = 0; w < self->nworkers; w++)
        if (self->workers[w])
            zmq_close(self->workers[w]);
}

void *fp_ingest_main(void *argp)
{
    fp_stage_args_t *args = argp;
    ingest_t self_ = {.zmq_ctx = args->zmq_ctx, .cfg = args->cfg, .metrics = args->metrics,
                      .round = args->start_round - 1, .committed = args->start_round - 1};
    ingest_t *self = &self_;
    const fp_config_t *cfg = self->cfg;
    char err[512] = "";
    self->nworkers = cfg->workers;
    self->slot = fp_metrics_stage(self->metrics, FP_STAGE_INGEST, 0);
    for (int w = 0; w < self->nworkers; w++)
        self->wslot[w] = fp_metrics_stage(self->metrics, FP_STAGE_WORKER, w);
    self->ctl = fp_stage_socket(self->zmq_ctx, ZMQ_PAIR, FP_EP_CTL, 0, -1, -1, err, sizeof err);
    /* No HWM on acks: a worker must never block on them (see DESIGN). */
    if (self->ctl)
        self->acks = fp_stage_socket(self->zmq_ctx, ZMQ_PULL, FP_EP_ACKS, 1, -1, 0, err, sizeof err);
    if (self->acks)
        self->dl = fp_stage_socket(self->zmq_ctx, ZMQ_PUSH, FP_EP_DEAD, 0, cfg->queue_batches, -1,
                                   err, sizeof err);
    bool ok = self->dl != NULL;
    for (int w = 0; ok && w < self->nworkers; w++) {
        char ep[64];
        snprintf(ep, sizeof ep, FP_EP_WORKER, w);
        self->workers[w] = fp_stage_socket(self->zmq_ctx, ZMQ_PUSH, ep, 0, cfg->queue_batches, -1,
                                           err, sizeof err);
        ok = self->workers[w] != NULL;
    }
    if (ok && cfg->ingest_router[0])
        ok = (self->router = s_producer_socket(self, ZMQ_ROUTER, cfg->ingest_router, err,
                                               sizeof err)) != NULL;
    if (ok && cfg->ingest_pull[0])
        ok = (self->pull = s_producer_socket(self, ZMQ_PULL, cfg->ingest_pull, err, sizeof err)) !=
             NULL;
    if (!ok) {
        fp_stage_ready(self->zmq_ctx, "ingest", -1, err);
        fp_metrics_stage_exit(self->slot);
        s_close_all(self);
        return NULL;
    }
    fp_stage_ready(self->zmq_ctx, "ingest", 0, NULL);
    fp_log(FP_LOG_INFO, "ingest", "listening", "router=%s pull=%s workers=%d",
           cfg->ingest_router[0] ? cfg->ingest_router : "off",
           cfg->ingest_pull[0] ? cfg->ingest_pull : "off", self->nworkers);

    int64_t round_ns = cfg->round_interval_ms * 1000000;
    int64_t post_ns = cfg->posting_interval_ms * 1000000;
    int64_t next_round = fp_now_ns() + round_ns, next_post = fp_now_ns() + post_ns;
    bool draining = false;
    int drained = 0;
    while (!draining) {
        zmq_pollitem_t items[5];
        int n = 0;
        items[n++] = (zmq_pollitem_t){self->ctl, 0, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t){self->acks, 0, ZMQ_POLLIN, 0};
        int ir = -1, ip = -1, iw = -1;
        if (self->held) {
            iw = n;
            items[n++] = (zmq_pollitem_t){self->workers[self->held_w], 0, ZMQ_POLLOUT, 0};
        } else {
            if (self->router) {
                ir = n;
                items[n++] = (zmq_pollitem_t){self->router, 0, ZMQ_POLLIN, 0};
            }
            if (self->pull) {
                ip = n;
                items[n++] = (zmq_pollitem_t){self->pull, 0, ZMQ_POLLIN, 0};
            }
        }
        int64_t wait = (next_round - fp_now_ns()) / 1000000;
        if (zmq_poll(items, n, wait > 0 ? wait : 0) < 0 && zmq_errno() == ETERM)
            break;
        int64_t woke = fp_now_ns();
        fp_metrics_stage_beat(self->slot, woke);
        if (items[0].revents & ZMQ_POLLIN) {
            char cmd[16];
            zmq_recv(self->ctl, cmd, sizeof cmd, 0);
            draining = true;
        }
        /* Bounded bursts so acks and barriers keep their pace under load. */
        for (int k = 0; k < 256 && (items[1].revents & ZMQ_POLLIN); k++) {
            zmq_pollitem_t one = {self->acks, 0, ZMQ_POLLIN, 0};
            if (k > 0 && zmq_poll(&one, 1, 0) <= 0)
                break;
            s_forward_ack(self, &drained);
        }
        if (iw >= 0 && (items[iw].revents & ZMQ_POLLOUT))
            s_try_send_held(self);
        for (int k = 0; k < 64 && !self->held; k++) {
            bool got = false;
            if (ir >= 0 && (items[ir].revents & ZMQ_POLLIN))
                got = s_read_producer(self, self->router, true);
            if (!got && ip >= 0 && (items[ip].revents & ZMQ_POLLIN))
                got = s_read_producer(self, self->pull, false);
            if (!got)
                break;
            if (!s_try_send_held(self))
                break;
        }
        int64_t now = fp_now_ns();
        if (now >= next_round) {
            uint32_t flags = 0;
            if (now >= next_post) {
                flags |= FP_BARRIER_FLUSH;
                next_post = now + post_ns;
            }
            /* The held frame goes first: a barrier never overtakes data. */
            if (self->held) {
                fp_metrics_stage_sent(self->wslot[self->held_w], 1);
                zmq_send(self->workers[self->held_w], &self->held_meta,
                         offsetof(fp_frame_meta_t, id) + self->held_meta.idlen, ZMQ_SNDMORE);
                zmq_msg_send(&self->held_payload, self->workers[self->held_w], 0);
                self->held = false;
            }
            s_send_barrier(self, flags);
            next_round = now + round_ns;
        }
        fp_metrics_stage_busy(self->slot, fp_now_ns() - woke);
    }
    /* Drain: the held frame, then what producers already queued (bounded:
       a producer that keeps sending cannot hold the drain up), then the
       drain barrier behind everything. */
    for (int k = 0; k < 100000; k++) {
        if (self->held) {
            fp_metrics_stage_sent(self->wslot[self->held_w], 1);
            zmq_send(self->workers[self->held_w], &self->held_meta,
                     offsetof(fp_frame_meta_t, id) + self->held_meta.idlen, ZMQ_SNDMORE);
            zmq_msg_send(&self->held_payload, self->workers[self->held_w], 0);
            self->held = false;
        }
        bool got = self->router && s_read_producer(self, self->router, true);
        if (!got)
            got = self->pull && s_read_producer(self, self->pull, false);
        if (!got)
            break;
    }
    fp_log(FP_LOG_INFO, "ingest", "draining", "rounds=%llu", (unsigned long long)self->round);
    if (self->pull) {
        zmq_close(self->pull);
        self->pull = NULL;
    }
    s_send_barrier(self, FP_BARRIER_FLUSH | FP_BARRIER_DRAIN);
    /* The workers' last acks, then emit's word that the drain round is
       committed: only then do the held acks go out. Bounded: a commit that
       cannot happen (disk full) leaves them unsent, and the producers resend
       to the next run. */
    int64_t give_up = fp_now_ns() + self->cfg->drain_timeout_ms * 1000000;
    while ((drained < self->nworkers || self->committed < self->round) && fp_now_ns() < give_up) {
        zmq_pollitem_t one = {self->acks, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&one, 1, 100) < 0)
            break;
        if (one.revents & ZMQ_POLLIN)
            s_forward_ack(self, &drained);
    }
    for (size_t i = 0; i < self->nacks_held; i++) {
        zmq_msg_close(&self->acks_held[i].id);
        zmq_msg_close(&self->acks_held[i].ack);
    }
    free(self->acks_held);
    fp_metrics_stage_exit(self->slot);
    s_close_all(self);
    return NULL;
}
