/*  ingest.c - the ingest stage: the inputs' frames in, barriers out.

    DESIGN
    - Talks to producers only through inputs (input.h): each input owns its
      connections and protocol and yields frames (format, source_id, ack
      token, payload); today the one input is ZeroMQ ROUTER + PULL with
      FlatBuffers batches (input_zmq.c). Inputs run on this thread; ingest
      polls their items together with its own sockets.
    - Routes each frame to worker hash(source_id) % N, so one source's dedup
      state lives in one worker. The input reads source_id cheaply (for
      ZeroMQ an O(1) bounds-checked peek); the worker decodes and verifies
      the whole frame. A frame whose source cannot be read (0) goes to the
      worker of source 0, which dead-letters it with the precise reason.
    - The payload moves zero-copy (zmq_msg_move) from the input's socket to
      the worker pipe; the meta ahead of it (input index, format, token) is
      8 + toklen bytes.
    - Back-pressure: worker pipes have HWM queue_batches. When a worker's
      pipe is full, ingest holds that one frame and stops reading inputs
      until the pipe has room; the producers' own pipes (ingest_hwm) and then
      TCP fill up and slow the producers down. Nothing accepted is dropped.
      Verdicts (workers -> ingest) have no HWM so a worker never blocks on
      them: that keeps the ingest <-> worker loop free of deadlock.
    - A worker returns a neutral verdict (verdict.h) for every frame that
      has a token. Ingest holds it until emit reports its round committed,
      then hands it to the frame's input (cb_ack), which encodes the
      acknowledgement in its own protocol: a producer hears "accepted" only
      for what a crash cannot take back.
    - An ack is never dropped for lack of room: when the input finds the
      producer's queue full (cb_ack -EAGAIN), the verdict waits in a retry
      list and goes again every S_RETRY_MS, oldest first, until it is sent,
      its peer is gone, or S_RETRY_MAX verdicts wait (then the oldest is
      dropped and counted: that producer resends, and dedup answers the
      resend as a duplicate). The retries never block this thread.
    - Every round_interval_ms it sends a barrier to every worker (behind the
      frames before it); when posting_interval_ms has passed the barrier
      carries FP_BARRIER_FLUSH. On "DRAIN" from main: take what the inputs
      already queued, cb_drain, send the DRAIN barrier, acknowledge the
      workers' last verdicts once committed, exit.
*/
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "input.h"
#include "log.h"
#include "route.h"
#include "stage.h"

/* The input types ingest starts; each decides from the config whether it
   runs (input.h). The index in this table is not the input's index in
   fp_frame_meta_t: that is its place among the running ones. */
static const fp_input_plugin_t *const s_plugins[] = {&fp_input_zmq};

#define S_INPUTS_MAX 8

/* Acks that found their producer's queue full: retried this often, and at
   most this many wait (about 300 bytes each). */
#define S_RETRY_MS 5
#define S_RETRY_MAX 262144u
#define S_POLL_MAX (S_INPUTS_MAX * FP_INPUT_POLL_MAX)

typedef struct {
    const fp_input_plugin_t *plugin;
    void *self;
} s_input_t;

typedef struct {
    void *zmq_ctx;
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    void *ctl, *acks, *dl;
    void *workers[64];
    int nworkers;
    s_input_t inputs[S_INPUTS_MAX];
    int ninputs;
    /* The inputs' poll items of this loop turn: item i is input
       item_input[i]'s item item_which[i]. */
    zmq_pollitem_t items[S_POLL_MAX];
    uint8_t item_input[S_POLL_MAX];
    uint8_t item_which[S_POLL_MAX];
    int nitems;
    /* A frame waiting for room in worker `held_w`'s pipe. */
    bool held;
    int held_w;
    fp_frame_meta_t held_meta;
    zmq_msg_t held_payload;
    uint64_t round;                 /* last barrier injected */
    uint64_t committed;             /* last round emit reported committed */
    /* Verdicts wait here until their round is committed (durable): a
       producer is told "accepted" only for what a crash cannot take back.
       Each is the worker's fp_verdict_msg_t, kept as received. Bounded by
       the batches in flight over about two rounds. */
    struct held_ack {
        uint64_t round;
        zmq_msg_t msg;
    } *acks_held;
    size_t nacks_held, acks_cap;
    /* Verdicts whose round is committed but whose ack found the
       producer's queue full (cb_ack -EAGAIN), oldest first; round unused. */
    struct held_ack *retry;
    size_t nretry, retry_cap;
    int64_t retry_at;               /* monotonic ns of the next retry pass */
    fp_stage_slot_t *slot;          /* our gauges (metrics.h) */
    fp_stage_slot_t *wslot[64];     /* each worker's: we count what we queue for it */
} ingest_t;

static size_t s_meta_len(const fp_frame_meta_t *m)
{
    return offsetof(fp_frame_meta_t, token) + m->toklen;
}

/* Sends the held frame to its worker, blocking at its HWM if must. Returns
   false (nothing sent) when !block and the pipe is full. */
static bool s_send_held(ingest_t *self, bool block)
{
    void *w = self->workers[self->held_w];
    if (zmq_send(w, &self->held_meta, s_meta_len(&self->held_meta),
                 ZMQ_SNDMORE | (block ? 0 : ZMQ_DONTWAIT)) < 0)
        return false; /* EAGAIN: the pipe is full */
    /* Once the first part is queued the rest of the message follows it. */
    zmq_msg_send(&self->held_payload, w, 0);
    self->held = false;
    fp_metrics_stage_sent(self->wslot[self->held_w], 1);
    return true;
}

/* Tries to hand the held frame to its worker without blocking. */
static bool s_try_send_held(ingest_t *self)
{
    return s_send_held(self, false);
}

/* Reads one frame from poll item `item` into held_meta/held_payload.
   Returns true when a frame is held and ready to route. The payload moves
   from the input's socket into held_payload and on into the worker pipe:
   no copy. The token is written straight into the meta that is sent. */
static bool s_read_input(ingest_t *self, int item)
{
    int in = self->item_input[item];
    const s_input_t *input = &self->inputs[in];
    zmq_msg_init(&self->held_payload);
    fp_input_frame_t f = {.token = self->held_meta.token, .payload = &self->held_payload};
    if (input->plugin->cb_read(input->self, self->item_which[item], &f) != 1) {
        zmq_msg_close(&self->held_payload);
        return false;
    }
    assert(f.toklen <= FP_INPUT_TOKEN_MAX && f.format >= 1 && f.format <= FP_FORMAT_MAX);
    self->held_meta.type = FP_MSG_FRAME;
    self->held_meta.input = (uint8_t)in;
    self->held_meta.format = f.format;
    self->held_meta.toklen = (uint16_t)f.toklen;
    self->held_meta.flags = f.flags;
    self->held_meta.peer = f.peer;
    self->held_w = self->nworkers == 1
                       ? 0
                       : (int)fp_route_worker(f.source_id, (uint32_t)self->nworkers);
    self->held = true;
    return true;
}

/* Collects every input's poll items into self->items. */
static void s_gather_items(ingest_t *self)
{
    self->nitems = 0;
    for (int i = 0; i < self->ninputs; i++) {
        s_input_t *in = &self->inputs[i];
        int n = in->plugin->cb_poll(in->self, self->items + self->nitems, FP_INPUT_POLL_MAX);
        assert(n >= 0 && n <= FP_INPUT_POLL_MAX);
        for (int k = 0; k < n; k++) {
            self->item_input[self->nitems + k] = (uint8_t)i;
            self->item_which[self->nitems + k] = (uint8_t)k;
        }
        self->nitems += n;
    }
}

static void s_send_barrier(ingest_t *self, uint32_t flags)
{
    fp_barrier_t b = {FP_MSG_BARRIER, flags, ++self->round, fp_wall_ns(), INT64_MIN,
                      self->committed};
    for (int w = 0; w < self->nworkers; w++) {
        fp_metrics_stage_sent(self->wslot[w], 1);
        zmq_send(self->workers[w], &b, sizeof b, 0); /* blocks at HWM: back-pressure */
    }
    /* Our own part of the round (dead letters so far) ends here. */
    fp_emit_mark(self->dl, 0, &b);
}

/* Hands one verdict (an fp_verdict_msg_t, checked by s_forward_ack) to its
   input to acknowledge. Returns the input's result (0, -EAGAIN: the
   producer's queue is full, or another -errno: never deliverable); the
   message is left to the caller. */
static int s_try_ack(ingest_t *self, zmq_msg_t *msg)
{
    const fp_verdict_msg_t *m = zmq_msg_data(msg);
    const s_input_t *in = &self->inputs[m->input];
    fp_verdict_t v;
    memcpy(&v, &m->verdict, sizeof v); /* the message need not be aligned */
    int rc = in->plugin->cb_ack(in->self, &v, m->token, m->toklen);
    if (rc == 0)
        fp_metrics_add(self->metrics, FP_M_ACKS, 1);
    else if (rc != -EAGAIN)
        fp_metrics_add(self->metrics, FP_M_ACKS_DROPPED, 1);
    return rc;
}

/* Moves msg to the tail of the retry list. When S_RETRY_MAX acks wait
   already (a producer that stopped reading them), it is dropped and
   counted instead: its producer resends that batch, and dedup acknowledges
   the resend as a duplicate. */
static void s_keep_for_retry(ingest_t *self, zmq_msg_t *msg)
{
    if (self->nretry == self->retry_cap && self->nretry < S_RETRY_MAX) {
        size_t ncap = self->retry_cap ? self->retry_cap * 2 : 256;
        struct held_ack *h = realloc(self->retry, ncap * sizeof *h);
        if (h) {
            self->retry = h;
            self->retry_cap = ncap;
        }
    }
    if (self->nretry == self->retry_cap) {
        fp_metrics_add(self->metrics, FP_M_ACKS_DROPPED, 1);
        zmq_msg_close(msg);
        return;
    }
    if (self->nretry == 0)
        self->retry_at = fp_now_ns() + (int64_t)S_RETRY_MS * 1000000;
    struct held_ack *h = &self->retry[self->nretry++];
    h->round = 0;
    zmq_msg_init(&h->msg);
    zmq_msg_move(&h->msg, msg);
    zmq_msg_close(msg);
    fp_metrics_add(self->metrics, FP_M_ACKS_RETRIED, 1);
}

/* Acknowledges one committed verdict now, or keeps it for a retry when
   its producer's queue is full; closes or moves msg. */
static void s_send_ack(ingest_t *self, zmq_msg_t *msg)
{
    if (s_try_ack(self, msg) == -EAGAIN)
        s_keep_for_retry(self, msg);
    else
        zmq_msg_close(msg);
}

/* Whether the verdict's token is one of full[0..n) (producers whose queue
   was found full in this pass). */
static bool s_token_in(const zmq_msg_t *msg, const zmq_msg_t *const *full, int n)
{
    const fp_verdict_msg_t *m = zmq_msg_data((zmq_msg_t *)msg);
    for (int i = 0; i < n; i++) {
        const fp_verdict_msg_t *f = zmq_msg_data((zmq_msg_t *)full[i]);
        if (f->input == m->input && f->toklen == m->toklen &&
            memcmp(f->token, m->token, m->toklen) == 0)
            return true;
    }
    return false;
}

/* One retry pass over the waiting acks, oldest first, keeping in order
   those whose producer's queue is still full. A producer found full is
   not tried again in this pass, and the pass stops after 16 of them, so
   it costs about the acks it can send, not the acks that wait. */
static void s_retry_acks(ingest_t *self)
{
    const zmq_msg_t *full[16];
    int nfull = 0;
    size_t k = 0, i = 0;
    for (; i < self->nretry && nfull < 16; i++) {
        struct held_ack h = self->retry[i];
        bool skip = s_token_in(&h.msg, full, nfull);
        if (!skip && s_try_ack(self, &h.msg) != -EAGAIN) {
            zmq_msg_close(&h.msg);
            continue;
        }
        self->retry[k] = h;
        if (!skip)
            full[nfull++] = &self->retry[k].msg;
        k++;
    }
    for (; i < self->nretry; i++)
        self->retry[k++] = self->retry[i];
    self->nretry = k;
    self->retry_at = fp_now_ns() + (int64_t)S_RETRY_MS * 1000000;
}

/* Sends every held ack whose round is committed, keeping the others in order. */
static void s_release_acks(ingest_t *self)
{
    size_t k = 0;
    for (size_t i = 0; i < self->nacks_held; i++) {
        struct held_ack *h = &self->acks_held[i];
        if (h->round <= self->committed)
            s_send_ack(self, &h->msg);
        else
            self->acks_held[k++] = *h;
    }
    self->nacks_held = k;
}

/* Forwards one verdict (or takes emit's COMMITTED, or counts a worker's
   final marker). */
static void s_forward_ack(ingest_t *self, int *drained)
{
    zmq_msg_t a;
    zmq_msg_init(&a);
    if (zmq_msg_recv(&a, self->acks, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&a);
        return;
    }
    fp_metrics_stage_received(self->slot, 1);
    size_t n = zmq_msg_size(&a);
    uint32_t type = 0;
    if (n >= sizeof type)
        memcpy(&type, zmq_msg_data(&a), sizeof type);
    if (type == FP_MSG_COMMITTED && n == sizeof(fp_committed_t)) {
        fp_committed_t c;
        memcpy(&c, zmq_msg_data(&a), sizeof c);
        if (c.round > self->committed)
            self->committed = c.round;
        s_release_acks(self);
        zmq_msg_close(&a);
        return;
    }
    if (type != FP_MSG_VERDICT) {
        (*drained)++; /* FP_MSG_DL_DRAIN marker: that worker is done */
        zmq_msg_close(&a);
        return;
    }
    /* From our own worker: a bug if it does not fit. */
    fp_verdict_msg_t head;
    assert(n >= offsetof(fp_verdict_msg_t, token));
    memcpy(&head, zmq_msg_data(&a), offsetof(fp_verdict_msg_t, token));
    assert(head.input < self->ninputs && head.toklen >= 1 &&
           n == offsetof(fp_verdict_msg_t, token) + head.toklen);
    uint64_t round = head.verdict.round;
    if (round <= self->committed) {
        s_send_ack(self, &a);
        return;
    }
    if (self->nacks_held == self->acks_cap) {
        size_t ncap = self->acks_cap ? self->acks_cap * 2 : 256;
        struct held_ack *h = realloc(self->acks_held, ncap * sizeof *h);
        if (!h) {
            /* No memory to hold it: drop the ack; the producer resends the
               batch and dedup makes that harmless. */
            zmq_msg_close(&a);
            return;
        }
        self->acks_held = h;
        self->acks_cap = ncap;
    }
    struct held_ack *h = &self->acks_held[self->nacks_held++];
    h->round = round;
    zmq_msg_init(&h->msg);
    zmq_msg_move(&h->msg, &a);
    zmq_msg_close(&a);
}

static void s_close_all(ingest_t *self)
{
    for (int i = 0; i < self->ninputs; i++)
        self->inputs[i].plugin->cb_destroy(&self->inputs[i].self);
    self->ninputs = 0;
    void **socks[] = {&self->ctl, &self->acks, &self->dl};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (*socks[i]) {
            zmq_close(*socks[i]);
            *socks[i] = NULL;
        }
    for (int w = 0; w < self->nworkers; w++)
        if (self->workers[w])
            zmq_close(self->workers[w]);
}

/* Starts every configured input. false with err on the first failure. */
static bool s_start_inputs(ingest_t *self, char *err, size_t errlen)
{
    fp_input_env_t env = {.zmq_ctx = self->zmq_ctx, .cfg = self->cfg, .metrics = self->metrics,
                          .dl = self->dl};
    for (size_t p = 0; p < sizeof s_plugins / sizeof s_plugins[0]; p++) {
        void *in = NULL;
        if (s_plugins[p]->cb_init(&env, &in, err, errlen) != 0)
            return false;
        if (!in)
            continue;
        assert(self->ninputs < S_INPUTS_MAX);
        self->inputs[self->ninputs++] = (s_input_t){s_plugins[p], in};
    }
    return true;
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
    if (ok)
        ok = s_start_inputs(self, err, sizeof err);
    if (!ok) {
        fp_stage_ready(args, "ingest", -1, err);
        fp_metrics_stage_exit(self->slot);
        s_close_all(self);
        return NULL;
    }
    fp_stage_ready(args, "ingest", 0, NULL);
    fp_log(FP_LOG_INFO, "ingest", "inputs started", "inputs=%d workers=%d", self->ninputs,
           self->nworkers);

    int64_t round_ns = cfg->round_interval_ms * 1000000;
    int64_t post_ns = cfg->posting_interval_ms * 1000000;
    int64_t next_round = fp_now_ns() + round_ns, next_post = fp_now_ns() + post_ns;
    bool draining = false;
    int drained = 0;
    while (!draining) {
        zmq_pollitem_t items[3 + S_POLL_MAX];
        int n = 0;
        items[n++] = (zmq_pollitem_t){self->ctl, 0, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t){self->acks, 0, ZMQ_POLLIN, 0};
        int iw = -1, i0 = n;
        if (self->held) {
            iw = n;
            items[n++] = (zmq_pollitem_t){self->workers[self->held_w], 0, ZMQ_POLLOUT, 0};
            self->nitems = 0;
        } else {
            s_gather_items(self);
            memcpy(items + n, self->items, (size_t)self->nitems * sizeof items[0]);
            n += self->nitems;
        }
        int64_t wake = self->nretry && self->retry_at < next_round ? self->retry_at : next_round;
        /* Rounded up: a wait cut to 0 ms spun in zmq_poll for the last
           fraction of a millisecond of every round (half a millisecond a
           round, 1 % of a core while idle). */
        int64_t left = wake - fp_now_ns();
        long wait = left > 0 ? (long)((left + 999999) / 1000000) : 0;
        if (zmq_poll(items, n, wait) < 0 && zmq_errno() == ETERM)
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
        /* Up to 64 frames: each turn takes the first ready item (in the
           inputs' order) that yields one. */
        for (int k = 0; k < 64 && !self->held; k++) {
            bool got = false;
            for (int i = 0; !got && i < self->nitems; i++)
                if (items[i0 + i].revents & ZMQ_POLLIN)
                    got = s_read_input(self, i);
            if (!got)
                break;
            if (!s_try_send_held(self))
                break;
        }
        int64_t now = fp_now_ns();
        if (self->nretry && now >= self->retry_at)
            s_retry_acks(self);
        if (now >= next_round) {
            uint32_t flags = 0;
            if (now >= next_post) {
                flags |= FP_BARRIER_FLUSH;
                next_post = now + post_ns;
            }
            /* The held frame goes first: a barrier never overtakes data. */
            if (self->held)
                s_send_held(self, true);
            s_send_barrier(self, flags);
            next_round = now + round_ns;
        }
        fp_metrics_stage_busy(self->slot, fp_now_ns() - woke);
    }
    /* Drain: the held frame, then what producers already queued (bounded:
       a producer that keeps sending cannot hold the drain up), then the
       drain barrier behind everything. */
    s_gather_items(self);
    for (int k = 0; k < 100000; k++) {
        if (self->held)
            s_send_held(self, true);
        bool got = false;
        for (int i = 0; !got && i < self->nitems; i++)
            got = s_read_input(self, i);
        if (!got)
            break;
    }
    fp_log(FP_LOG_INFO, "ingest", "draining", "rounds=%llu", (unsigned long long)self->round);
    for (int i = 0; i < self->ninputs; i++)
        if (self->inputs[i].plugin->cb_drain)
            self->inputs[i].plugin->cb_drain(self->inputs[i].self);
    s_send_barrier(self, FP_BARRIER_FLUSH | FP_BARRIER_DRAIN);
    /* The workers' last verdicts, then emit's word that the drain round is
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
    /* Acks still waiting for room: until they are out or the drain's time
       is up (the producers resend the rest to the next run). */
    while (self->nretry && fp_now_ns() < give_up) {
        s_retry_acks(self);
        if (self->nretry)
            zmq_poll(NULL, 0, S_RETRY_MS);
    }
    fp_metrics_add(self->metrics, FP_M_ACKS_DROPPED, self->nretry);
    for (size_t i = 0; i < self->nretry; i++)
        zmq_msg_close(&self->retry[i].msg);
    free(self->retry);
    for (size_t i = 0; i < self->nacks_held; i++)
        zmq_msg_close(&self->acks_held[i].msg);
    free(self->acks_held);
    fp_metrics_stage_exit(self->slot);
    s_close_all(self);
    return NULL;
}
