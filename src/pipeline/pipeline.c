/*  pipeline.c - starts the stage threads, collects their start-up results,
    drains them. See pipeline.h.

    Start-up: every stage binds its own endpoints and then reports on
    FP_EP_READY; pipeline_start waits for all of them, so a bind error (a port
    in use) is reported to the operator before the service claims to run.
    Drain: main sends "DRAIN" to ingest on FP_EP_CTL; the drain barrier then
    flows through every pipe behind the data before it (see ingest.c), and
    each stage exits after forwarding it.
*/
#include "pipeline.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "log.h"
#include "security.h"
#include "stage.h"

struct pipeline {
    void *zmq_ctx;
    void *ctl;       /* PAIR to ingest */
    int nthreads;
    pthread_t threads[3 + FP_WORKERS_MAX + FP_SHARDS_MAX]; /* + replay */
    fp_stage_args_t args[3 + FP_WORKERS_MAX + FP_SHARDS_MAX];
    int started;
};

void *fp_stage_socket(void *zmq_ctx, int type, const char *endpoint, int bind, int sndhwm,
                      int rcvhwm, char *err, size_t errlen)
{
    void *s = zmq_socket(zmq_ctx, type);
    if (!s) {
        snprintf(err, errlen, "zmq_socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    if (sndhwm >= 0)
        zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    if (rcvhwm >= 0)
        zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    int rc = bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint);
    if (rc != 0) {
        snprintf(err, errlen, "%s %s: %s", bind ? "bind" : "connect", endpoint,
                 zmq_strerror(zmq_errno()));
        int linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s);
        return NULL;
    }
    return s;
}

void *fp_stage_server_socket(void *zmq_ctx, int type, const fp_config_t *cfg, const char *ep,
                             char *err, size_t errlen)
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
    if (rc == 0 && strncmp(ep, "inproc://", 9) != 0)
        fp_security_watch(zmq_ctx, s, ep, cfg->curve_secret_key_file[0] != '\0');
    if (rc != 0) {
        linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s);
        return NULL;
    }
    return s;
}

void fp_stage_ready(fp_stage_args_t *args, const char *who, int rc, const char *err)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%d %s: %s", rc, who, err ? err : "ok");
    zmq_send(args->ready, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1, 0);
    zmq_close(args->ready);
    args->ready = NULL;
}

void fp_notice_drain(void *sub, uint64_t *global_seq, bool *done)
{
    fp_notice_t n;
    int got;
    while ((got = zmq_recv(sub, &n, sizeof n, ZMQ_DONTWAIT)) >= 0) {
        if (got != (int)sizeof n || n.type != FP_MSG_NOTICE)
            continue; /* our own emit wrote it; be safe */
        if (n.global_seq > *global_seq)
            *global_seq = n.global_seq;
        if (n.flags & FP_NOTICE_DONE)
            *done = true;
    }
}

void fp_emit_mark(void *sock, uint32_t from, const fp_barrier_t *b)
{
    fp_emit_hdr_t h = {.type = FP_EMIT_MARK, .from = from, .flags = b->flags,
                       .round = b->round, .wall_ns = b->wall_ns};
    zmq_send(sock, &h, sizeof h, 0);
}

/* Names the thread "fp-<stage>[-index]" so that top -H, perf and
   /proc/PID/task/TID/comm tell the stages apart. */
static int s_spawn(pipeline_t *self, void *(*fn)(void *), const char *stage, int index, char *err,
                   size_t errlen)
{
    int i = self->nthreads;
    self->args[i].index = index >= 0 ? index : 0;
    char why[256];
    self->args[i].ready = fp_stage_socket(self->zmq_ctx, ZMQ_PUSH, FP_EP_READY, 0, -1, -1, why,
                                          sizeof why);
    if (!self->args[i].ready) {
        snprintf(err, errlen, "%s%s%.0d: its start-up report socket: %s", stage,
                 index >= 0 ? " " : "", index >= 0 ? index : 0, why);
        return -1;
    }
    if (pthread_create(&self->threads[i], NULL, fn, &self->args[i]) != 0) {
        snprintf(err, errlen, "%s: pthread_create failed", stage);
        zmq_close(self->args[i].ready);
        self->args[i].ready = NULL;
        return -1;
    }
    char name[16]; /* the kernel's limit, with the NUL */
    if (index >= 0)
        snprintf(name, sizeof name, "fp-%s-%d", stage, index);
    else
        snprintf(name, sizeof name, "fp-%s", stage);
    pthread_setname_np(self->threads[i], name);
    self->nthreads++;
    return 0;
}

int pipeline_zmq_sockets(const fp_config_t *cfg)
{
    int w = cfg->workers, s = cfg->shards;
    /* worker: in, a pipe to each shard, dl, acks, its report;
       shard: a pipe from each worker, emit, its report */
    int stages = w * (s + 4) + s * (w + 2);
    /* ingest 4 + 2 inputs, emit 7, replay 2, their reports, 2 per monitor
       (5 tcp endpoints), pipeline 2, security 3, printer 3, demo 5, and
       room to spare */
    int fixed = 6 + 7 + 2 + 3 + 10 + 2 + 3 + 3 + 5 + 23;
    return stages + fixed + 4 * cfg->nsinks;
}

pipeline_t *pipeline_start(void *zmq_ctx, const fp_config_t *cfg, fp_metrics_t *metrics,
                           struct fp_store *store, uint64_t start_round, char *err,
                           size_t errlen)
{
    if (cfg->workers < 1 || cfg->shards < 1 || cfg->workers > FP_WORKERS_MAX || cfg->shards > FP_SHARDS_MAX) {
        snprintf(err, errlen, "workers and shards must be resolved to 1..64");
        return NULL;
    }
    pipeline_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->zmq_ctx = zmq_ctx;
    for (int i = 0; i < 3 + FP_WORKERS_MAX + FP_SHARDS_MAX; i++)
        self->args[i] = (fp_stage_args_t){zmq_ctx, cfg, metrics, store, start_round, 0, NULL};

    void *ready = fp_stage_socket(zmq_ctx, ZMQ_PULL, FP_EP_READY, 1, -1, -1, err, errlen);
    self->ctl = fp_stage_socket(zmq_ctx, ZMQ_PAIR, FP_EP_CTL, 1, -1, -1, err, errlen);
    if (!ready || !self->ctl) {
        if (ready)
            zmq_close(ready);
        if (self->ctl)
            zmq_close(self->ctl);
        free(self);
        return NULL;
    }
    int expected = 0, failed = 0;
    /* Downstream first, so that upstream connects find their peers bound
       (inproc tolerates either order; this just keeps start-up quiet). */
    /* The replay reader first, so that it is joined last: it exits on
       emit's DONE notice. */
    int readers = cfg->replay[0] ? 1 : 0;
    int ok = 1; /* spawning stops at the first failure; err names it */
    if (readers)
        ok = s_spawn(self, fp_replay_main, "replay", -1, err, errlen) == 0;
    if (ok)
        ok = s_spawn(self, fp_emit_main, "emit", -1, err, errlen) == 0;
    for (int s = 0; ok && s < cfg->shards; s++)
        ok = s_spawn(self, fp_shard_main, "shard", s, err, errlen) == 0;
    for (int w = 0; ok && w < cfg->workers; w++)
        ok = s_spawn(self, fp_worker_main, "worker", w, err, errlen) == 0;
    if (ok)
        ok = s_spawn(self, fp_ingest_main, "ingest", -1, err, errlen) == 0;
    expected = self->nthreads;
    failed = !ok;
    /* Collect every start-up report (bounded wait: every stage has its
       report socket, so a stage that neither reports nor fails is our
       bug). The first failure is the one reported. */
    int timeout = 10000;
    zmq_setsockopt(ready, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    for (int i = 0; i < expected; i++) {
        char msg[512];
        int n = zmq_recv(ready, msg, sizeof msg - 1, 0);
        if (n < 0) {
            if (!failed)
                snprintf(err, errlen, "%d of %d stages did not report within 10 s",
                         expected - i, expected);
            failed = 1;
            break;
        }
        msg[n < (int)sizeof msg - 1 ? n : (int)sizeof msg - 1] = 0;
        if (atoi(msg) != 0 && !failed) {
            char *p = strchr(msg, ' ');
            snprintf(err, errlen, "%s", p ? p + 1 : msg);
            failed = 1;
        }
    }
    zmq_close(ready);
    self->started = 1;
    if (failed) {
        /* Stages that did start wait for a drain barrier that a failed
           ingest can no longer send: the caller exits the process. */
        return NULL;
    }
    return self;
}

int pipeline_drain(pipeline_t *self, int64_t timeout_ms)
{
    if (self->ctl) {
        zmq_send(self->ctl, "DRAIN", 5, 0);
        zmq_close(self->ctl);
        self->ctl = NULL;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    /* Join in pipeline order: ingest drains first, emit last. */
    for (int i = self->nthreads - 1; i >= 0; i--) {
        if (pthread_timedjoin_np(self->threads[i], NULL, &deadline) != 0) {
            fp_log(FP_LOG_ERROR, "pipeline", "drain timed out", "timeout_ms=%lld",
                   (long long)timeout_ms);
            return -ETIMEDOUT;
        }
    }
    self->nthreads = 0;
    return 0;
}

void pipeline_destroy(pipeline_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pipeline_t *self = *self_p;
    if (self->ctl)
        zmq_close(self->ctl);
    free(self);
    *self_p = NULL;
}
