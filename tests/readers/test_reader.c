/*  test_reader.c - the durable outbox reader actor on a real store, with
    the test thread playing emit: it commits rounds, publishes the notices
    (FP_EP_NOTICE) and collects the readers' position reports
    (FP_EP_READERS), committing them with its next round as emit does.
*/
#include "reader.h"
#include "test.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "outbox.h"
#include "stage.h"
#include "store.h"

static char s_dir[64];

typedef struct {
    void *ctx, *notice, *positions;
    fp_store_t *store;
    uint64_t round, gseq;
} emit_t;

static void s_emit_open(emit_t *e)
{
    strcpy(s_dir, "/tmp/fp-test-reader-XXXXXX");
    ASSERT(mkdtemp(s_dir) != NULL);
    char err[512];
    e->store = fp_store_open(s_dir, 4u << 20, "plant-a", err, sizeof err);
    ASSERT(e->store != NULL);
    e->ctx = zmq_ctx_new();
    e->notice = zmq_socket(e->ctx, ZMQ_PUB);
    ASSERT_EQ(zmq_bind(e->notice, FP_EP_NOTICE), 0);
    e->positions = zmq_socket(e->ctx, ZMQ_PULL);
    ASSERT_EQ(zmq_bind(e->positions, FP_EP_READERS), 0);
    e->round = e->gseq = 0;
}

static void s_emit_close(emit_t *e)
{
    zmq_close(e->notice);
    zmq_close(e->positions);
    zmq_ctx_term(e->ctx);
    fp_store_close(&e->store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    ASSERT_EQ(system(cmd), 0);
}

/* Commits a round of n events, with the reader position pos_name at pos
   (NULL: none). */
static void s_round(emit_t *e, int n, const char *pos_name, uint64_t pos)
{
    fp_store_txn_t *t;
    ASSERT_EQ(fp_store_begin(e->store, &t), 0);
    e->round++;
    for (int i = 0; i < n; i++) {
        char ev[32];
        int len = snprintf(ev, sizeof ev, "event-%llu", (unsigned long long)e->gseq + 1);
        ASSERT_EQ(fp_outbox_put(t, ++e->gseq, e->round, 1, "completion/1000/L01", 19, ev,
                                (size_t)len),
                  0);
    }
    if (pos_name)
        ASSERT_EQ(fp_outbox_put_reader(t, pos_name, pos, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_store_set_round(t, e->round, e->gseq), 0);
    ASSERT_EQ(fp_store_commit(&t), 0);
}

static void s_notice(emit_t *e, uint32_t flags)
{
    fp_notice_t n = {.type = FP_MSG_NOTICE, .flags = flags, .round = e->round,
                     .global_seq = e->gseq};
    ASSERT_EQ(zmq_send(e->notice, &n, sizeof n, 0), (int)sizeof n);
}

/* The last position reported by the reader within ms (0 if none). */
static uint64_t s_last_report(emit_t *e, const char *name, int ms)
{
    uint64_t last = 0;
    zmq_pollitem_t it = {e->positions, 0, ZMQ_POLLIN, 0};
    while (zmq_poll(&it, 1, ms) > 0) {
        fp_reader_pos_t m;
        ASSERT_EQ(zmq_recv(e->positions, &m, sizeof m, 0), (int)sizeof m);
        ASSERT_EQ(m.type, FP_MSG_READER_POS);
        ASSERT_STREQ(m.name, name);
        ASSERT(m.position >= last); /* never backwards */
        last = m.position;
        ms = 50;
    }
    return last;
}

/* ---- a reader type that collects what it is given ---- */

typedef struct {
    uint64_t got[1024];
    _Atomic int n;
    int fail_next;     /* deliveries to fail before succeeding */
    int finish_max;    /* finish at most this many per call (0 = all) */
    int retry_in_ms;   /* after a prefix: fp_reader_retry_in (a failure after it) */
    _Atomic int opens, closes, calls;
    int64_t call_ns[16]; /* when each call came (the first 16) */
} collect_t;

static int64_t s_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int s_open(void *ctx, fp_reader_t *r, char *err, size_t errlen)
{
    collect_t *c = ctx;
    (void)r;
    atomic_fetch_add(&c->opens, 1);
    return 0;
}

static int s_deliver(void *ctx, fp_reader_t *r, const fp_reader_event_t *evs, size_t n, char *err,
                     size_t errlen)
{
    collect_t *c = ctx;
    int call = atomic_fetch_add(&c->calls, 1);
    if (call < 16)
        c->call_ns[call] = s_ns();
    if (c->fail_next > 0) {
        c->fail_next--;
        snprintf(err, errlen, "the ERP said no");
        return -1;
    }
    size_t k = c->finish_max && (size_t)c->finish_max < n ? (size_t)c->finish_max : n;
    for (size_t i = 0; i < k; i++) {
        char want[32];
        int len = snprintf(want, sizeof want, "event-%llu", (unsigned long long)evs[i].global_seq);
        ASSERT_EQ(evs[i].evlen, (size_t)len);
        ASSERT(memcmp(evs[i].ev, want, (size_t)len) == 0);
        ASSERT(((uintptr_t)evs[i].ev & 7) == 0);
        ASSERT(evs[i].tlen == 19 && memcmp(evs[i].topic, "completion/1000/L01", 19) == 0);
        int at = atomic_load(&c->n);
        c->got[at] = evs[i].global_seq;
        atomic_store(&c->n, at + 1);
    }
    if (k < n && c->retry_in_ms)
        fp_reader_retry_in(r, c->retry_in_ms);
    return (int)k;
}

static void s_close(void *ctx)
{
    collect_t *c = ctx;
    atomic_fetch_add(&c->closes, 1);
}

static const fp_reader_type_t s_collect = {"collect", s_open, s_deliver, NULL, s_close};

static bool s_wait_n(collect_t *c, int n, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (atomic_load(&c->n) >= n)
            return true;
        usleep(10000);
    }
    return atomic_load(&c->n) >= n;
}

static void s_check_in_order(collect_t *c, uint64_t first)
{
    for (int i = 0; i < atomic_load(&c->n); i++)
        ASSERT_EQ(c->got[i], first + (uint64_t)i);
}

static fp_reader_t *s_start_retry(emit_t *e, const char *name, collect_t *c, uint32_t batch,
                                  int retry_ms)
{
    fp_reader_opts_t o = {.name = name, .type = &s_collect, .ctx = c, .batch_max = batch,
                          .retry_ms = retry_ms};
    char err[256];
    fp_reader_t *r = fp_reader_start(e->ctx, e->store, &o, err, sizeof err);
    if (!r)
        fprintf(stderr, "start: %s\n", err);
    ASSERT(r != NULL);
    return r;
}

static fp_reader_t *s_start(emit_t *e, const char *name, collect_t *c, uint32_t batch)
{
    return s_start_retry(e, name, c, batch, 50);
}

TEST(test_delivers_in_order_woken_by_notices)
{
    emit_t e;
    s_emit_open(&e);
    s_round(&e, 5, NULL, 0);
    collect_t *c = calloc(1, sizeof *c);
    fp_reader_t *r = s_start(&e, "erp-a", c, 2); /* batches of 2: 3 calls */
    ASSERT(s_wait_n(c, 5, 5000));
    ASSERT_EQ(s_last_report(&e, "erp-a", 2000), 5);
    /* Committed but not announced: a reader does not poll the store. */
    s_round(&e, 5, NULL, 0);
    usleep(300000);
    ASSERT_EQ(atomic_load(&c->n), 5);
    s_notice(&e, 0);
    ASSERT(s_wait_n(c, 10, 5000));
    ASSERT_EQ(s_last_report(&e, "erp-a", 2000), 10);
    s_check_in_order(c, 1);
    ASSERT_EQ(fp_reader_position(r), 10);
    ASSERT_EQ(fp_reader_delivered(r), 10);
    ASSERT_EQ(fp_reader_errors(r), 0);
    s_notice(&e, FP_NOTICE_DONE);
    fp_reader_stop(&r);
    ASSERT(r == NULL);
    ASSERT_EQ(atomic_load(&c->opens), 1);
    ASSERT_EQ(atomic_load(&c->closes), 1);
    s_emit_close(&e);
    free(c);
}

TEST(test_failure_and_partial_delivery_offer_again_without_repeats)
{
    emit_t e;
    s_emit_open(&e);
    s_round(&e, 6, NULL, 0);
    collect_t *c = calloc(1, sizeof *c);
    c->fail_next = 2;
    c->finish_max = 4; /* of each batch of 6: 4, then 2 */
    fp_reader_t *r = s_start(&e, "erp-b", c, 100);
    ASSERT(s_wait_n(c, 6, 5000));
    ASSERT_EQ(s_last_report(&e, "erp-b", 2000), 6);
    ASSERT_EQ(atomic_load(&c->n), 6); /* each event finished once */
    s_check_in_order(c, 1);
    ASSERT_EQ(fp_reader_errors(r), 2);
    ASSERT(atomic_load(&c->calls) >= 4);
    s_notice(&e, FP_NOTICE_DONE);
    fp_reader_stop(&r);
    s_emit_close(&e);
    free(c);
}

/* A prefix with no failure: the rest at once (not after retry_ms); a
   prefix with a failure after it (fp_reader_retry_in): the rest after
   that back-off, not after retry_ms. */
TEST(test_prefix_goes_on_at_once_unless_a_failure_asked_for_a_delay)
{
    emit_t e;
    s_emit_open(&e);
    s_round(&e, 6, NULL, 0);
    collect_t *c = calloc(1, sizeof *c);
    c->finish_max = 2; /* 2, 2, 2 */
    fp_reader_t *r = s_start_retry(&e, "erp-d", c, 100, 5000);
    ASSERT(s_wait_n(c, 6, 2000)); /* long before retry_ms */
    ASSERT_EQ(atomic_load(&c->calls), 3);
    ASSERT_EQ(s_last_report(&e, "erp-d", 2000), 6);
    s_check_in_order(c, 1);
    ASSERT_EQ(fp_reader_errors(r), 0);
    /* now a failure after each prefix, with a back-off of 300 ms */
    c->retry_in_ms = 300;
    s_round(&e, 4, NULL, 0);
    s_notice(&e, 0);
    ASSERT(s_wait_n(c, 10, 4000));
    ASSERT_EQ(atomic_load(&c->calls), 5);
    int64_t gap_ms = (c->call_ns[4] - c->call_ns[3]) / 1000000;
    ASSERT(gap_ms >= 280);  /* the back-off asked for */
    ASSERT(gap_ms < 4000);  /* not retry_ms */
    ASSERT_EQ(fp_reader_errors(r), 1);
    s_check_in_order(c, 1);
    s_notice(&e, FP_NOTICE_DONE);
    fp_reader_stop(&r);
    s_emit_close(&e);
    free(c);
}

TEST(test_restart_from_the_committed_position)
{
    emit_t e;
    s_emit_open(&e);
    s_round(&e, 4, NULL, 0);
    collect_t *c = calloc(1, sizeof *c);
    fp_reader_t *r = s_start(&e, "erp-c", c, 100);
    ASSERT(s_wait_n(c, 4, 5000));
    uint64_t pos = s_last_report(&e, "erp-c", 2000);
    ASSERT_EQ(pos, 4);
    s_notice(&e, FP_NOTICE_DONE);
    fp_reader_stop(&r);
    /* Emit commits the report with its next round (3 more events). */
    s_round(&e, 3, "erp-c", pos);
    uint64_t p2;
    ASSERT_EQ(fp_outbox_reader(e.store, "erp-c", &p2, NULL), 0);
    ASSERT_EQ(p2, 4);
    /* A restart: only what it had not finished. */
    collect_t *c2 = calloc(1, sizeof *c2);
    r = s_start(&e, "erp-c", c2, 100);
    ASSERT(s_wait_n(c2, 3, 5000));
    usleep(200000);
    ASSERT_EQ(atomic_load(&c2->n), 3);
    s_check_in_order(c2, 5);
    /* And a retention that tries to pass it stops at its position. */
    uint64_t deleted = 0;
    ASSERT_EQ(fp_outbox_trim(e.store, INT64_MAX, 1000, &deleted), 0);
    ASSERT_EQ(deleted, 4);
    uint64_t oldest = 0;
    ASSERT_EQ(fp_outbox_oldest(e.store, &oldest), 0);
    ASSERT_EQ(oldest, 5);
    s_notice(&e, FP_NOTICE_DONE);
    fp_reader_stop(&r);
    s_emit_close(&e);
    free(c);
    free(c2);
}

/* A deferring type that finishes a batch before it returns it (sink_pg's
   synchronous deliveries) or only at the next call (its pipelined ones). */
typedef struct {
    _Atomic int n;
    uint64_t held; /* the last event of the batch accepted, not finished */
    bool hold;     /* finish at the next call */
} defer_t;

static int s_defer_open(void *ctx, fp_reader_t *r, char *err, size_t errlen)
{
    fp_reader_defer(r);
    return 0;
}

static int s_defer_deliver(void *ctx, fp_reader_t *r, const fp_reader_event_t *evs, size_t n,
                           char *err, size_t errlen)
{
    defer_t *d = ctx;
    if (d->held)
        fp_reader_finished(r, d->held);
    d->held = 0;
    if (d->hold)
        d->held = evs[n - 1].global_seq;
    else
        fp_reader_finished(r, evs[n - 1].global_seq);
    atomic_fetch_add(&d->n, (int)n);
    return (int)n;
}

static const fp_reader_type_t s_defer = {"defer", s_defer_open, s_defer_deliver, NULL, NULL};

TEST(test_deferring_type_finishes_within_deliver_or_later)
{
    emit_t e;
    s_emit_open(&e);
    s_round(&e, 6, NULL, 0);
    defer_t *d = calloc(1, sizeof *d);
    fp_reader_opts_t o = {.name = "erp-d", .type = &s_defer, .ctx = d, .batch_max = 4,
                          .retry_ms = 50};
    char err[256];
    fp_reader_t *r = fp_reader_start(e.ctx, e.store, &o, err, sizeof err);
    ASSERT(r != NULL);
    /* finished inside deliver: the batch it was given counts as accepted */
    for (int i = 0; i < 500 && atomic_load(&d->n) < 6; i++)
        usleep(10000);
    ASSERT_EQ(atomic_load(&d->n), 6);
    uint64_t pos = 0;
    for (int i = 0; i < 50 && pos < 6; i++)
        pos = s_last_report(&e, "erp-d", 100);
    ASSERT_EQ(pos, 6);
    ASSERT_EQ(fp_reader_position(r), 6);
    s_notice(&e, FP_NOTICE_DONE);
    fp_reader_stop(&r);
    /* held to the next call: finished one batch later, never beyond */
    s_round(&e, 6, "erp-d", pos);
    memset(d, 0, sizeof *d);
    d->hold = true;
    r = fp_reader_start(e.ctx, e.store, &o, err, sizeof err);
    ASSERT(r != NULL);
    for (int i = 0; i < 500 && atomic_load(&d->n) < 6; i++)
        usleep(10000);
    ASSERT_EQ(atomic_load(&d->n), 6);
    usleep(100000);
    /* batches 7-10 then 11-12: the first finished at the second call, the
       second held (no third call) */
    ASSERT_EQ(fp_reader_position(r), 10);
    s_notice(&e, FP_NOTICE_DONE);
    fp_reader_stop(&r);
    s_emit_close(&e);
    free(d);
}

TEST(test_bad_options_refused)
{
    emit_t e;
    s_emit_open(&e);
    collect_t c = {0};
    char err[256];
    fp_reader_opts_t o = {.name = "bad name", .type = &s_collect, .ctx = &c};
    ASSERT(fp_reader_start(e.ctx, e.store, &o, err, sizeof err) == NULL);
    ASSERT(strstr(err, "reader name") != NULL);
    o.name = "";
    ASSERT(fp_reader_start(e.ctx, e.store, &o, err, sizeof err) == NULL);
    o.name = "ok";
    o.batch_max = 10001;
    ASSERT(fp_reader_start(e.ctx, e.store, &o, err, sizeof err) == NULL);
    s_emit_close(&e);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_delivers_in_order_woken_by_notices);
    RUN(test_failure_and_partial_delivery_offer_again_without_repeats);
    RUN(test_prefix_goes_on_at_once_unless_a_failure_asked_for_a_delay);
    RUN(test_restart_from_the_committed_position);
    RUN(test_deferring_type_finishes_within_deliver_or_later);
    RUN(test_bad_options_refused);
    return test_done();
}
