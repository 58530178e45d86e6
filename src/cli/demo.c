/*  demo.c - the demo plant thread: plantgen -> producer (ACKED), paced.

    Startup handshake: demo_start binds an inproc PAIR, the thread connects
    to it and sends one status frame ("ok" or an errno) once its producer
    exists; then both ends close the pipe. Stop: an atomic flag, checked
    between ticks and while a send is retried after a send timeout.
*/
#include "clock.h"
#include "demo.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "plantgen.h"
#include "producer.h"

#define DEMO_BATCH_RECORDS 256
#define DEMO_SEND_TIMEOUT_MS 200 /* bounds how long stop waits for a blocked send */
#define DEMO_OP_SECONDS 3        /* an order's operation completes about this often */
#define DEMO_ORDERS_PER_LINE 2
#define DEMO_BURST_MAX 1024

struct demo {
    pthread_t thread;
    void *ctx;
    char endpoint[256];
    char pipe_ep[64];
    uint32_t rate, lines;
    bool curve; /* connect as a CURVE client with these keys */
    char server_z85[FP_CURVE_KEY_Z85 + 1];
    fp_curve_keypair_t keys;
    /* Set once by demo_stop, read by the thread. Relaxed is enough: the flag
       publishes no other data (the thread only needs to see it eventually),
       and pthread_join orders everything the thread did before it exits. */
    atomic_bool stop;
    /* Metric only: written by the thread, read by anyone; relaxed. */
    atomic_uint_fast64_t records;
};

static int s_stopping(demo_t *self)
{
    return atomic_load_explicit(&self->stop, memory_order_relaxed);
}

/* Hands one record to the producer, retrying after send timeouts until it
   is taken or the demo stops. 0, or -errno (stop: -ECANCELED). */
static int s_add(demo_t *self, producer_t *prod, uint64_t src, uint64_t epoch, const fp_rec_in_t *rec)
{
    for (;;) {
        int rc = producer_add(prod, src, epoch, rec);
        if (rc != -EAGAIN)
            return rc;
        if (s_stopping(self))
            return -ECANCELED;
    }
}

static void s_report(void *pipe, int status)
{
    zmq_send(pipe, &status, sizeof(status), 0);
    zmq_close(pipe);
}

static void *s_run(void *arg)
{
    demo_t *self = arg;
    producer_t *prod = NULL;
    plantgen_t *gen = NULL;
    void *pipe = zmq_socket(self->ctx, ZMQ_PAIR);
    if (!pipe || zmq_connect(pipe, self->pipe_ep) != 0) {
        if (pipe)
            zmq_close(pipe); /* demo_start's receive times out */
        return NULL;
    }

    plantgen_params_t p;
    plantgen_defaults(&p);
    p.plants = 1;
    p.lines_per_plant = self->lines;
    p.orders_per_line = DEMO_ORDERS_PER_LINE;
    /* Per order: rate / (lines * orders) records/s; an operation takes
       records_per_operation + 2 of them. */
    uint64_t per_op = (uint64_t)self->rate * DEMO_OP_SECONDS / ((uint64_t)self->lines * DEMO_ORDERS_PER_LINE);
    p.records_per_operation = per_op < 10 ? 8 : (uint32_t)(per_op > 1000000 ? 1000000 : per_op - 2);
    p.epoch = (uint64_t)(fp_clock_ns(CLOCK_REALTIME) / 1000000000); /* grows per restart */
    uint64_t per_tick = (uint64_t)self->rate * DEMO_TICK_MS / 1000;
    uint64_t burst = per_tick / self->lines;
    p.burst = burst < 1 ? 1 : burst > DEMO_BURST_MAX ? DEMO_BURST_MAX : (uint32_t)burst;

    gen = plantgen_new(&p);
    prod = gen ? producer_new(self->ctx, NULL, PRODUCER_ACKED, DEMO_BATCH_RECORDS) : NULL;
    int rc = prod ? 0 : -(errno ? errno : ENOMEM);
    if (rc == 0 && self->curve)
        rc = producer_set_curve(prod, self->server_z85, self->keys.public_z85,
                                self->keys.secret_z85);
    if (rc == 0)
        rc = producer_connect(prod, self->endpoint);
    if (rc == 0)
        rc = producer_set_send_timeout(prod, DEMO_SEND_TIMEOUT_MS);
    if (!gen || rc != 0) {
        s_report(pipe, rc ? -rc : ENOMEM);
        plantgen_destroy(&gen);
        producer_destroy(&prod);
        return NULL;
    }
    s_report(pipe, 0);

    const int64_t tick_ns = (int64_t)DEMO_TICK_MS * 1000000;
    int64_t next = fp_clock_ns(CLOCK_MONOTONIC);
    uint64_t owed_milli = 0; /* records owed * 1000, carries the remainder of rate * tick */
    while (rc == 0 && !s_stopping(self)) {
        owed_milli += (uint64_t)self->rate * DEMO_TICK_MS;
        uint64_t n = owed_milli / 1000;
        owed_milli %= 1000;
        int64_t now = fp_clock_ns(CLOCK_REALTIME);
        for (uint64_t i = 0; i < n && rc == 0; i++) {
            uint64_t src, epoch;
            fp_rec_in_t rec;
            plantgen_next(gen, &src, &epoch, &rec);
            rec.time_ns = now + (int64_t)(i * (uint64_t)tick_ns / n); /* spread over the tick */
            rc = s_add(self, prod, src, epoch, &rec);
            if (rc == 0)
                atomic_fetch_add_explicit(&self->records, 1, memory_order_relaxed);
        }
        if (rc == 0)
            rc = producer_flush(prod);
        if (rc == -EAGAIN)
            rc = 0; /* still open: goes with the next tick */
        next += tick_ns;
        int64_t mono = fp_clock_ns(CLOCK_MONOTONIC);
        if (mono - next > 1000000000) /* over 1 s behind (back-pressure): do not catch up */
            next = mono;
        struct timespec ts = {.tv_sec = next / 1000000000, .tv_nsec = next % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
    }
    if (rc != 0 && rc != -ECANCELED)
        fprintf(stderr, "floorpost: demo plant stopped: %s\n", zmq_strerror(-rc));
    else
        producer_flush(prod); /* best effort, bounded by the send timeout */
    producer_destroy(&prod);
    plantgen_destroy(&gen);
    return NULL;
}

demo_t *demo_start(void *zmq_ctx, const char *endpoint, uint32_t rate, uint32_t lines)
{
    return demo_start_curve(zmq_ctx, endpoint, rate, lines, NULL, NULL);
}

demo_t *demo_start_curve(void *zmq_ctx, const char *endpoint, uint32_t rate, uint32_t lines,
                         const char *server_z85, const fp_curve_keypair_t *kp)
{
    if (!zmq_ctx || !endpoint || rate == 0 || lines == 0 || lines > DEMO_LINES_MAX ||
        !server_z85 != !kp || (server_z85 && strlen(server_z85) != FP_CURVE_KEY_Z85))
        return NULL;
    demo_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    if (kp) {
        self->curve = true;
        memcpy(self->server_z85, server_z85, sizeof self->server_z85);
        self->keys = *kp;
    }
    if (snprintf(self->endpoint, sizeof(self->endpoint), "%s", endpoint) >= (int)sizeof(self->endpoint)) {
        free(self);
        return NULL;
    }
    self->ctx = zmq_ctx;
    self->rate = rate;
    self->lines = lines;
    atomic_init(&self->stop, false);
    atomic_init(&self->records, 0);
    /* A unique name per start: a closed inproc endpoint is unregistered
       asynchronously, so a reused address could still be taken. The counter
       only has to be unique: relaxed is enough. */
    static _Atomic unsigned s_starts;
    snprintf(self->pipe_ep, sizeof(self->pipe_ep), "inproc://floorpost-demo-%u",
             atomic_fetch_add_explicit(&s_starts, 1, memory_order_relaxed));

    void *pipe = zmq_socket(zmq_ctx, ZMQ_PAIR);
    int timeout = 10000, linger = 0;
    if (!pipe || zmq_setsockopt(pipe, ZMQ_RCVTIMEO, &timeout, sizeof(timeout)) != 0 ||
        zmq_setsockopt(pipe, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
        zmq_bind(pipe, self->pipe_ep) != 0)
        goto fail;
    if (pthread_create(&self->thread, NULL, s_run, self) != 0)
        goto fail;
    int status = -1;
    int n = zmq_recv(pipe, &status, sizeof(status), 0);
    zmq_close(pipe);
    pipe = NULL;
    if (n != (int)sizeof(status) || status != 0) {
        /* The thread has ended (status sent) or cannot report: stop it. */
        atomic_store_explicit(&self->stop, true, memory_order_relaxed);
        pthread_join(self->thread, NULL);
        free(self);
        return NULL;
    }
    return self;
fail:
    if (pipe)
        zmq_close(pipe);
    free(self);
    return NULL;
}

void demo_stop(demo_t **self_p)
{
    assert(self_p);
    demo_t *self = *self_p;
    if (!self)
        return;
    atomic_store_explicit(&self->stop, true, memory_order_relaxed);
    pthread_join(self->thread, NULL);
    free(self);
    *self_p = NULL;
}

uint64_t demo_records(const demo_t *self)
{
    assert(self);
    return atomic_load_explicit(&self->records, memory_order_relaxed);
}
