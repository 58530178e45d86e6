/*  input_zmq.c - the ZeroMQ input: a ROUTER (acked) and a PULL
    (fire-and-forget), both carrying FlatBuffers telemetry batches. See
    input.h for the seam.

    DESIGN
    - Both sockets get ZMQ_MAXMSGSIZE = max_frame_bytes, so libzmq refuses
      an oversized frame at its length header, before allocating it, and
      drops that connection; ZMQ_RCVHWM = ingest_hwm (a slow pipeline fills
      the producers' pipes, then TCP); heartbeats, handshake timeout and,
      when configured, CURVE + ZAP (security.h).
    - ROUTER: a message is [routing id][payload]. The routing id is the ack
      token; the acknowledgement is [routing id][floorpost.telemetry.Ack],
      sent with ZMQ_DONTWAIT and ZMQ_ROUTER_MANDATORY, so a full pipe to a
      connected peer is -EAGAIN (ingest keeps the ack and sends it again
      later) instead of a silent drop, and a peer that is gone is
      -EHOSTUNREACH (the producer resends; dedup makes that harmless).
      SNDHWM is S_ACK_HWM_FACTOR x ingest_hwm: a connection may have
      ingest_hwm frames queued towards us, and the acks of several rounds
      are released at once after a commit. PULL: [payload], no token, no
      ack.
    - A telemetry message is exactly one payload frame; more is refused
      here ("bad_envelope", dead-lettered). Every other payload is yielded
      as it is, moved zero-copy: the worker verifies it. source_id is an
      O(1) bounds-checked peek (fp_codec_batch_peek_source), 0 when it
      cannot be read.
    - FlatBuffers stays behind codec.h: the Ack is encoded with this
      instance's own builder (fp_codec_t) on the ingest thread.
*/
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zmq.h>

#include "codec.h"
#include "input.h"
#include "log.h"
#include "security.h"
#include "stage.h"

enum { S_ROUTER = 0, S_PULL = 1 };

/* The ROUTER's SNDHWM (acks queued per connection) is this many times
   ingest_hwm (frames queued per connection), at least 1000: the acks of
   every frame a connection may have in the pipeline, released together
   after one commit, fit without waiting. */
#define S_ACK_HWM_FACTOR 16

typedef struct {
    fp_input_env_t env;
    void *sock[2];      /* S_ROUTER, S_PULL; NULL = not configured (or drained) */
    int which[2];       /* poll item i -> S_ROUTER / S_PULL */
    fp_codec_t *codec;  /* the Ack builder */
    fp_allow_watch_t *allow; /* CURVE on: the allow file's source bindings */
} s_zmq_t;

/* A producer-facing socket: frame size limit, receive HWM, linger,
   heartbeats, handshake timeout, CURVE when configured, bound. */
static void *s_socket(const fp_input_env_t *env, int type, const char *ep, char *err,
                      size_t errlen)
{
    void *s = zmq_socket(env->zmq_ctx, type);
    if (!s) {
        snprintf(err, errlen, "zmq_socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    int64_t maxsize = (int64_t)env->cfg->max_frame_bytes;
    int hwm = env->cfg->ingest_hwm, linger = 1000;
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (type == ZMQ_ROUTER) {
        /* Before the bind: the listener copies the HWMs for every
           connection it accepts. */
        int one = 1;
        long ahwm = (long)hwm * S_ACK_HWM_FACTOR;
        int sndhwm = ahwm < 1000 ? 1000 : ahwm > INT_MAX ? INT_MAX : (int)ahwm;
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    }
    /* Heartbeats, handshake timeout and, when configured, CURVE + ZAP. */
    int rc = fp_security_server_socket(s, env->cfg, err, errlen);
    if (rc == 0 && (rc = zmq_bind(s, ep)) != 0)
        snprintf(err, errlen, "bind %s: %s", ep, zmq_strerror(zmq_errno()));
    if (rc == 0 && strncmp(ep, "inproc://", 9) != 0)
        fp_security_watch(env->zmq_ctx, s, ep, env->cfg->curve_secret_key_file[0] != '\0');
    if (rc != 0) {
        linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s);
        return NULL;
    }
    return s;
}

static void s_destroy(void **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_zmq_t *self = *self_p;
    for (int i = 0; i < 2; i++)
        if (self->sock[i])
            zmq_close(self->sock[i]);
    fp_codec_destroy(&self->codec);
    fp_allow_watch_destroy(&self->allow);
    free(self);
    *self_p = NULL;
}

static int s_init(const fp_input_env_t *env, void **self_p, char *err, size_t errlen)
{
    *self_p = NULL;
    const fp_config_t *cfg = env->cfg;
    if (!cfg->ingest_router[0] && !cfg->ingest_pull[0])
        return 0;
    s_zmq_t *self = calloc(1, sizeof *self);
    if (!self || !(self->codec = fp_codec_new())) {
        free(self);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    self->env = *env;
    void *me = self;
    if (cfg->curve_secret_key_file[0] &&
        !(self->allow = fp_allow_watch_new(cfg->curve_allow_file, "ingest", err, errlen))) {
        s_destroy(&me);
        return -EINVAL;
    }
    if (cfg->ingest_router[0] &&
        !(self->sock[S_ROUTER] = s_socket(env, ZMQ_ROUTER, cfg->ingest_router, err, errlen))) {
        s_destroy(&me);
        return -EINVAL;
    }
    if (cfg->ingest_pull[0] &&
        !(self->sock[S_PULL] = s_socket(env, ZMQ_PULL, cfg->ingest_pull, err, errlen))) {
        s_destroy(&me);
        return -EINVAL;
    }
    fp_log(FP_LOG_INFO, "ingest", "listening", "input=zmq router=%s pull=%s",
           cfg->ingest_router[0] ? cfg->ingest_router : "off",
           cfg->ingest_pull[0] ? cfg->ingest_pull : "off");
    *self_p = self;
    return 0;
}

static int s_poll(void *selfp, zmq_pollitem_t *items, int cap)
{
    s_zmq_t *self = selfp;
    int n = 0;
    /* ROUTER first: today's order (acked producers are read before PULL). */
    for (int i = 0; i < 2 && n < cap; i++)
        if (self->sock[i]) {
            self->which[n] = i;
            items[n++] = (zmq_pollitem_t){self->sock[i], 0, ZMQ_POLLIN, 0};
        }
    return n;
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

/* Who sent f, and whether its key may send as f->source_id (security.h
   "Source bindings"). The peer: the CURVE key (the ZAP handler's User-Id),
   else the connection (the ROUTER's routing id in the token, the PULL's
   file descriptor). */
static void s_authorize(s_zmq_t *self, int kind, fp_input_frame_t *f)
{
    const char *user = self->allow ? zmq_msg_gets(f->payload, "User-Id") : NULL;
    if (user && *user) {
        const fp_allow_t *allow = fp_allow_watch_get(self->allow);
        f->peer = XXH3_64bits_withSeed(user, strlen(user), 1);
        if (fp_allow_bound(allow, user)) {
            f->flags |= FP_FRAME_BOUND;
            if (!fp_allow_permits(allow, user, f->source_id))
                f->flags |= FP_FRAME_NOT_ALLOWED;
        }
        return;
    }
    if (kind == S_ROUTER) {
        f->peer = XXH3_64bits_withSeed(f->token, f->toklen, 2);
    } else {
        int fd = zmq_msg_get(f->payload, ZMQ_SRCFD);
        f->peer = fd >= 0 ? XXH3_64bits_withSeed(&fd, sizeof fd, 3) : 0;
    }
}

static int s_read(void *selfp, int which, fp_input_frame_t *f)
{
    s_zmq_t *self = selfp;
    assert(which >= 0 && which < 2);
    int kind = self->which[which];
    void *sock = self->sock[kind];
    if (!sock)
        return 0;
    f->toklen = 0;
    if (kind == S_ROUTER) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            return zmq_errno() == EAGAIN || zmq_errno() == EINTR ? 0 : -zmq_errno();
        }
        size_t n = zmq_msg_size(&id);
        if (n > FP_INPUT_TOKEN_MAX)
            n = FP_INPUT_TOKEN_MAX;
        memcpy(f->token, zmq_msg_data(&id), n);
        f->toklen = n;
        bool more = zmq_msg_more(&id);
        zmq_msg_close(&id);
        if (!more)
            return 0;
    }
    if (zmq_msg_recv(f->payload, sock, ZMQ_DONTWAIT) < 0)
        return 0;
    size_t len = zmq_msg_size(f->payload);
    fp_metrics_add(self->env.metrics, FP_M_FRAMES_IN, 1);
    fp_metrics_add(self->env.metrics, FP_M_BYTES_IN, len);
    if (zmq_msg_more(f->payload)) {
        /* A telemetry message is exactly one frame. */
        s_drop_rest(sock);
        size_t keep = len < 4096 ? len : 4096;
        fp_dl_fields_t df = {.jn = 0};
        fp_dl_fields_str(&df, "detail", "detail", "more than one payload frame", 64);
        fp_dl_fields_u64(&df, "bytes", "bytes", len);
        fp_dead_letter(self->env.dl, 0, "bad_envelope", "ingest", &df,
                       zmq_msg_data(f->payload), keep);
        /* Leave the message empty, as the contract says. */
        zmq_msg_close(f->payload);
        zmq_msg_init(f->payload);
        f->toklen = 0;
        return 0;
    }
    f->format = FP_FORMAT_FB_BATCH;
    f->source_id = fp_codec_batch_peek_source(zmq_msg_data(f->payload), len);
    s_authorize(self, kind, f);
    return 1;
}

static int s_ack(void *selfp, const fp_verdict_t *v, const void *token, size_t toklen)
{
    s_zmq_t *self = selfp;
    void *router = self->sock[S_ROUTER];
    if (!router || toklen == 0)
        return -ENOTCONN;
    bool ok = v->status == FP_VERDICT_ACCEPTED;
    fp_ack_t a = {.source_id = v->source_id, .epoch = v->epoch, .acked_seq = v->acked_seq,
                  .batch_first_seq = v->batch_first_seq, .batch_last_seq = v->batch_last_seq,
                  .batch_records = v->batch_records, .dead_letters = ok ? v->dead_letters : 0,
                  .status = ok ? 0 : 1};
    if (!ok)
        snprintf(a.reason, sizeof a.reason, "%s", fp_dl_reason_name(v->reason));
    const void *buf;
    size_t len;
    int rc = fp_codec_ack_encode(self->codec, &a, &buf, &len);
    if (rc != FP_CODEC_OK)
        return -ENOMEM;
    /* ROUTER_MANDATORY: the routing id frame fails with EAGAIN when the
       peer's pipe is full and EHOSTUNREACH when the peer is gone, and then
       nothing of the message is queued. Once it is taken, the last frame
       goes with it. */
    if (zmq_send(router, token, toklen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        return e == EAGAIN || e == EINTR ? -EAGAIN : -e;
    }
    if (zmq_send(router, buf, len, ZMQ_DONTWAIT) < 0)
        return -zmq_errno();
    return 0;
}

static void s_drain(void *selfp)
{
    s_zmq_t *self = selfp;
    /* Nothing read from PULL after the drain barrier could be acked or
       counted in this run: stop taking it. ROUTER stays for the acks. */
    if (self->sock[S_PULL]) {
        zmq_close(self->sock[S_PULL]);
        self->sock[S_PULL] = NULL;
    }
}

const fp_input_plugin_t fp_input_zmq = {
    .name = "zmq",
    .cb_init = s_init,
    .cb_poll = s_poll,
    .cb_read = s_read,
    .cb_ack = s_ack,
    .cb_drain = s_drain,
    .cb_destroy = s_destroy,
};
