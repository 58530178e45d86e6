/*  replay.c - the replay server: the first outbox reader, on its own thread
    (fp-replay).

    DESIGN
    - Owns the replay ROUTER (`replay` endpoint) and a SUB on emit's notice
      PUB (FP_EP_NOTICE, stage.h). Answers "REPLAY <from_global_seq> <max>"
      from the outbox with its own LMDB read transactions (the store's read
      side may run on any thread, concurrently with emit's commits: each
      read sees the last commit that finished before it began), so a
      subscriber catching up costs the commit thread nothing.
    - The answer: up to min(max, FP_REPLAY_MAX) messages [topic][Checkpoint]
      in global_seq order, then ["END"]["<next> <oldest> <last_committed>"]
      (docs/subscribers.md). last_committed is what the notices said (with a
      state directory, never less than the store's own last global_seq):
      an event is replayed only once committed, and END never names a
      global_seq not yet committed.
    - Never a silent hole: an answer holds at most publish_hwm - 1 events
      (the client's queue, one kept for the END), each sent without
      waiting under ZMQ_ROUTER_MANDATORY; when the queue is full anyway
      (a client asking again before reading) the answer stops there and
      END's <next> is the first event NOT sent. The client asks again
      from <next> (docs/subscribers.md).
    - Requests are answered in turns of at most FP_REPLAY_TURN per wake-up,
      one request each, in arrival order, so one client asking again and
      again cannot starve another (the ROUTER queues each peer's requests
      fairly).
    - It runs under SCHED_IDLE (Linux's lowest policy, below nice 19; if
      the kernel refuses it, at nice FP_REPLAY_NICE): a subscriber catching
      up gets the CPU the stages leave, instead of taking it from the
      commit thread and the acks. Measured against nice 10 in one sitting
      (bench/run.py --only replay, docs/benchmarks.md): the producers' p99
      with a replay running 1.10 of the p99 without, against 1.47-1.59 at
      nice 10, for a replay at 0.78 of the speed. On a box the pipeline
      keeps fully busy, a catch-up waits for idle CPU. Its ROUTER lives in
      a ZeroMQ context of its own, made on this thread after the policy is
      set, so the libzmq I/O thread that carries a catch-up's megabytes
      inherits it and is not the one that carries the producers' batches
      and acks.
      With CURVE on, that context gets its own ZAP handler (security.h;
      the same key and allow file).
    - Exits on emit's DONE notice (after the drain round) or when the
      context is terminated.
*/
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zmq.h>

#include "decimal.h"
#include "log.h"
#include "metrics.h"
#include "replay.h"
#include "security.h"
#include "stage.h"
#include "outbox.h"
#include "store.h"

/* Most events one REPLAY request returns. */
#define FP_REPLAY_MAX 10000
/* The replay thread's nice value when SCHED_IDLE is refused (Linux: per thread). */
#ifndef FP_REPLAY_NICE
#define FP_REPLAY_NICE 10
#endif
/* Requests answered per wake-up before the notices are read again. */
#define FP_REPLAY_TURN 16

typedef struct {
    const fp_config_t *cfg;
    fp_store_t *store;
    fp_metrics_t *metrics;  /* NULL in tests */
    void *router, *notice;
    void *net_ctx;          /* the ROUTER's own context: its own (niced) libzmq I/O thread */
    fp_security_t *security; /* CURVE on: a ZAP handler in net_ctx */
    uint64_t last_global_seq; /* committed, from the notices (and the store) */
    bool done;
} replay_t;

typedef struct {
    void *sock;
    zmq_msg_t *id;
    uint64_t next;
    uint64_t last; /* do not send past the last committed global_seq */
    uint32_t sent;
    bool full, gone; /* the client's queue is full / the client is gone */
    uint64_t damaged; /* the answer stopped at this damaged event (0: none) */
} replay_ctx_t;

/* Sends one event, never blocking: with ZMQ_ROUTER_MANDATORY a full
   queue is EAGAIN (and the answer stops there: END names the first event
   not sent, so nothing is skipped in silence), an unknown peer
   EHOSTUNREACH. */
static int s_replay_one(void *ctx, uint64_t global_seq, uint64_t round, const char *topic,
                        size_t tlen, const void *ev, size_t evlen)
{
    replay_ctx_t *rc = ctx;
    if (global_seq > rc->last)
        return 1; /* committed after the notice we answer by: next time */
    if (!ev) { /* damaged (FP_OUTBOX_READ_DAMAGED): never sent, END says so */
        rc->damaged = global_seq;
        return 1;
    }
    if (zmq_send(rc->sock, zmq_msg_data(rc->id), zmq_msg_size(rc->id),
                 ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        if (zmq_errno() == EAGAIN)
            rc->full = true;
        else
            rc->gone = true;
        return 1;
    }
    zmq_send(rc->sock, topic, tlen, ZMQ_SNDMORE);
    zmq_send(rc->sock, ev, evlen, 0);
    rc->next = global_seq + 1;
    rc->sent++;
    return 0;
}


int fp_replay_parse_request(const void *frame, size_t len, uint64_t *from, uint64_t *max)
{
    static const char word[] = "REPLAY";
    if (!frame || len < sizeof word - 1 || memcmp(frame, word, sizeof word - 1) != 0)
        return -1;
    const char *p = frame, *end = p + len;
    uint64_t f, m;
    p += sizeof word - 1;
    if (fp_decimal_blanks(&p, end) != 0 || fp_decimal_u64(&p, end, &f) != 0 || f == 0 ||
        fp_decimal_blanks(&p, end) != 0 || fp_decimal_u64(&p, end, &m) != 0)
        return -1;
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '\0')
            return -1;
    *from = f;
    *max = m;
    return 0;
}

/* Answers one request; false when none was waiting. */
static bool s_answer(replay_t *self)
{
    zmq_msg_t id, req;
    zmq_msg_init(&id);
    zmq_msg_init(&req);
    if (zmq_msg_recv(&id, self->router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        zmq_msg_close(&req);
        return false;
    }
    if (!zmq_msg_more(&id) || zmq_msg_recv(&req, self->router, 0) < 0)
        goto out;
    uint64_t from = 0, max = 0;
    char end[96];
    uint64_t oldest = 0;
    if (fp_replay_parse_request(zmq_msg_data(&req), zmq_msg_size(&req), &from, &max) != 0) {
        snprintf(end, sizeof end, "ERROR expected \"REPLAY <from_global_seq> <max_events>\"");
    } else {
        if (self->store) {
            /* The store may be a commit ahead of the last notice: an event
               in it is committed, so it may be replayed. */
            uint64_t round = 0, g = 0;
            if (fp_store_last_round(self->store, &round, &g) == 0 && g > self->last_global_seq)
                self->last_global_seq = g;
        }
        replay_ctx_t rc = {self->router, &id, from, self->last_global_seq, 0, false, false, 0};
        /* At most what the client's queue holds (publish_hwm messages,
           one kept for the END), so an answer fits when the client reads
           it before asking again. */
        uint64_t cap = self->cfg->publish_hwm > 1 ? (uint64_t)self->cfg->publish_hwm - 1 : 1;
        if (max > cap)
            max = cap;
        if (self->store) {
            if (fp_outbox_oldest(self->store, &oldest) != 0)
                oldest = self->last_global_seq + 1;
            fp_outbox_read_ex(self->store, from,
                              max < FP_REPLAY_MAX ? (uint32_t)max : FP_REPLAY_MAX,
                              FP_OUTBOX_READ_DAMAGED, s_replay_one, &rc);
        } else {
            oldest = self->last_global_seq + 1; /* no outbox without a state directory */
        }
        if (rc.gone)
            goto out; /* nobody to answer */
        if (rc.damaged) {
            /* The events before it went; it cannot (its bytes fail the
               state file's check). The client goes on from damaged + 1 if
               it chooses: a named hole, never a silent one, never a loop. */
            if (self->metrics)
                fp_metrics_add(self->metrics, FP_M_REPLAY_DAMAGED, 1);
            fp_log(FP_LOG_ERROR, "replay", "damaged event in the outbox; not sent",
                   "global_seq=%llu sent=%u", (unsigned long long)rc.damaged, rc.sent);
            snprintf(end, sizeof end, "ERROR damaged event %llu; not sent",
                     (unsigned long long)rc.damaged);
        } else {
            if (rc.next < oldest && !rc.full)
                rc.next = oldest;
            snprintf(end, sizeof end, "%llu %llu %llu", (unsigned long long)rc.next,
                     (unsigned long long)oldest, (unsigned long long)self->last_global_seq);
        }
    }
    /* The END may wait for room (ZMQ_SNDTIMEO: a client that reads
       nothing times out and asks again; the others are answered meanwhile
       only after it, which the bound above keeps rare). */
    if (zmq_send(self->router, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE) >= 0) {
        zmq_send(self->router, "END", 3, ZMQ_SNDMORE);
        zmq_send(self->router, end, strlen(end), 0);
    }
out:
    zmq_msg_close(&id);
    zmq_msg_close(&req);
    /* Drop whatever else a client sent in that message. */
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(self->router, ZMQ_RCVMORE, &more, &sz);
    while (more) {
        zmq_msg_t x;
        zmq_msg_init(&x);
        zmq_msg_recv(&x, self->router, 0);
        more = zmq_msg_more(&x);
        zmq_msg_close(&x);
    }
    return true;
}

void *fp_replay_main(void *argp)
{
    fp_stage_args_t *args = argp;
    replay_t self_ = {.cfg = args->cfg, .store = args->store, .metrics = args->metrics};
    replay_t *self = &self_;
    char err[512] = "";
    /* Best effort: an unprivileged process may always lower its priority. */
    struct sched_param idle = {0};
    if (sched_setscheduler((pid_t)syscall(SYS_gettid), SCHED_IDLE, &idle) != 0 &&
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), FP_REPLAY_NICE) != 0)
        fp_log(FP_LOG_WARN, "replay", "could not lower the replay thread's priority",
               "error=\"%s\"", strerror(errno));
    bool ok = (self->notice = fp_stage_socket(args->zmq_ctx, ZMQ_SUB, FP_EP_NOTICE, 0, -1, -1,
                                              err, sizeof err)) != NULL;
    if (ok && zmq_setsockopt(self->notice, ZMQ_SUBSCRIBE, "", 0) != 0) {
        snprintf(err, sizeof err, "subscribe %s: %s", FP_EP_NOTICE, zmq_strerror(zmq_errno()));
        ok = false;
    }
    if (ok && !(self->net_ctx = zmq_ctx_new())) {
        snprintf(err, sizeof err, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        ok = false;
    }
    if (ok) /* CURVE: its ZAP handler; always: its monitors (security.h) */
        ok = (self->security = fp_security_start(self->net_ctx, self->cfg, err, sizeof err)) !=
             NULL;
    if (ok)
        ok = (self->router = fp_stage_server_socket(self->net_ctx, ZMQ_ROUTER, self->cfg,
                                                    self->cfg->replay, err, sizeof err)) != NULL;
    if (ok) {
        int one = 1, tmo = 1000;
        zmq_setsockopt(self->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        zmq_setsockopt(self->router, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    }
    if (ok && self->store) {
        uint64_t round = 0;
        if (fp_store_last_round(self->store, &round, &self->last_global_seq) != 0) {
            snprintf(err, sizeof err, "the state directory cannot be read");
            ok = false;
        }
    }
    fp_stage_ready(args, "replay", ok ? 0 : -1, err);
    while (ok && !self->done) {
        zmq_pollitem_t items[2] = {{self->notice, 0, ZMQ_POLLIN, 0},
                                   {self->router, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 1000) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break; /* ETERM: the context is going away */
        }
        fp_notice_drain(self->notice, &self->last_global_seq, &self->done);
        if (items[1].revents & ZMQ_POLLIN)
            for (int k = 0; k < FP_REPLAY_TURN; k++)
                if (!s_answer(self))
                    break;
    }
    if (self->router) {
        int linger = 0; /* an answer cut by the shutdown is asked again */
        zmq_setsockopt(self->router, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(self->router);
    }
    if (self->notice)
        zmq_close(self->notice);
    fp_security_stop(&self->security);
    if (self->net_ctx)
        zmq_ctx_term(self->net_ctx);
    return NULL;
}
