/*  test_tail.c - the tail (on the subscriber library) against a fake floorpost: an XPUB
    (the live feed) and a ROUTER (the replay endpoint) served by one thread,
    events made with fp_codec_checkpoint_encode. A gap in global_seq is
    filled in order, --from catches up and then goes live without
    duplicates, what the endpoint no longer retains is reported, a silent
    endpoint does not hang the tail, a topic filter does not fake gaps. */
#include "tail.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "codec.h"
#include "test.h"

#define MAX_EVENTS 64

static const char *const TOPICS[3] = {"completion/1000/L01", "consumption/1000/L01",
                                      "scrap/1000/L02"};

typedef struct {
    void *ctx;
    char pub_ep[256], rep_ep[256];
    void *pub, *router;           /* made by the test, used only by the thread */
    void *silent;                 /* a PULL where a replay endpoint should be */
    uint64_t oldest, committed;   /* the replay endpoint holds oldest..committed */
    uint64_t live[MAX_EVENTS];    /* global_seqs published live, in this order */
    size_t nlive;
    bool live_after_replay;       /* publish only after the first REPLAY is answered */
    uint64_t commit_before_live;  /* > 0: committed becomes this when going live */
    _Atomic int stop;
    int requests;                 /* read after join */
    fp_codec_t *codec;
} fake_t;

static void s_sleep_ms(int ms)
{
    nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}, NULL);
}

/* Event g: topic g % 3, stream_seq = its rank in that topic. */
static void s_send_event(fake_t *f, void *sock, const zmq_msg_t *id, uint64_t g)
{
    int k = (int)(g % 3);
    char event_id[32];
    snprintf(event_id, sizeof event_id, "ev-%" PRIu64, g);
    fp_checkpoint_t ck = {.kind = k == 0 ? FP_CK_COMPLETION : k == 1 ? FP_CK_CONSUMPTION : FP_CK_SCRAP,
                          .event_id = event_id, .global_seq = g, .checkpoint_no = g, .instance = "fake",
                          .plant = "1000", .line = k == 2 ? "L02" : "L01", .order = "42",
                          .operation = "0010", .record_count = 1, .yield = (int64_t)g,
                          .material = "RM-1", .lot = "LOT", .unit = "KG", .quantity = 1000,
                          .reason = "SCR", .parts = 1};
    /* Ranks: topic 0 has g = 3, 6, 9 ... (rank g/3); topics 1 and 2 have
       g = k, k + 3, ... (rank (g - k) / 3 + 1). */
    ck.stream_seq = k == 0 ? g / 3 : (g - (uint64_t)k) / 3 + 1;
    const void *out;
    size_t len;
    ASSERT_EQ(fp_codec_checkpoint_encode(f->codec, &ck, &out, &len), FP_CODEC_OK);
    if (id) {
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, (zmq_msg_t *)id);
        ASSERT(zmq_msg_send(&copy, sock, ZMQ_SNDMORE) >= 0);
    }
    ASSERT(zmq_send(sock, TOPICS[k], strlen(TOPICS[k]), ZMQ_SNDMORE) >= 0);
    ASSERT_EQ(zmq_send(sock, out, len, 0), (int)len);
}

/* Answers one REPLAY request, as floorpost does. */
static void s_serve_replay(fake_t *f)
{
    zmq_msg_t id, req;
    zmq_msg_init(&id);
    zmq_msg_init(&req);
    ASSERT(zmq_msg_recv(&id, f->router, 0) >= 0);
    ASSERT(zmq_msg_more(&id));
    ASSERT(zmq_msg_recv(&req, f->router, 0) >= 0);
    char text[64];
    snprintf(text, sizeof text, "%.*s", (int)zmq_msg_size(&req), (const char *)zmq_msg_data(&req));
    uint64_t from, max;
    ASSERT_EQ(sscanf(text, "REPLAY %" SCNu64 " %" SCNu64, &from, &max), 2);
    ASSERT(from >= 1 && max >= 1);
    uint64_t g = from < f->oldest ? f->oldest : from, sent = 0;
    for (; g <= f->committed && sent < max; g++, sent++)
        s_send_event(f, f->router, &id, g);
    char end[96];
    int n = snprintf(end, sizeof end, "%" PRIu64 " %" PRIu64 " %" PRIu64, g, f->oldest, f->committed);
    ASSERT(zmq_msg_send(&id, f->router, ZMQ_SNDMORE) >= 0);
    ASSERT(zmq_send(f->router, "END", 3, ZMQ_SNDMORE) >= 0);
    ASSERT_EQ(zmq_send(f->router, end, (size_t)n, 0), n);
    zmq_msg_close(&req);
    f->requests++;
}

static void *s_fake(void *arg)
{
    fake_t *f = arg;
    bool subscribed = false;
    size_t next_live = 0;
    while (!atomic_load(&f->stop)) {
        zmq_pollitem_t it[2] = {{f->pub, 0, ZMQ_POLLIN, 0}, {f->router, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(it, f->router ? 2 : 1, 5);
        ASSERT(n >= 0);
        if (it[0].revents & ZMQ_POLLIN) {
            char sub[64];
            int k = zmq_recv(f->pub, sub, sizeof sub, 0);
            if (k >= 1 && sub[0] == 1)
                subscribed = true;
        }
        if (f->router && (it[1].revents & ZMQ_POLLIN))
            s_serve_replay(f);
        bool go = subscribed && (!f->live_after_replay || f->requests > 0);
        if (go && next_live < f->nlive) {
            if (f->commit_before_live)
                f->committed = f->commit_before_live;
            s_sleep_ms(next_live == 0 ? 50 : 2);
            s_send_event(f, f->pub, NULL, f->live[next_live++]);
        }
    }
    return NULL;
}

static void s_fake_start(fake_t *f, pthread_t *t, bool with_router)
{
    f->ctx = zmq_ctx_new();
    f->codec = fp_codec_new();
    ASSERT(f->codec);
    f->pub = zmq_socket(f->ctx, ZMQ_XPUB);
    int zero = 0;
    zmq_setsockopt(f->pub, ZMQ_LINGER, &zero, sizeof zero);
    ASSERT_EQ(zmq_bind(f->pub, "tcp://127.0.0.1:*"), 0);
    size_t cap = sizeof f->pub_ep;
    ASSERT_EQ(zmq_getsockopt(f->pub, ZMQ_LAST_ENDPOINT, f->pub_ep, &cap), 0);
    if (with_router) {
        f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
        zmq_setsockopt(f->router, ZMQ_LINGER, &zero, sizeof zero);
        ASSERT_EQ(zmq_bind(f->router, "tcp://127.0.0.1:*"), 0);
        cap = sizeof f->rep_ep;
        ASSERT_EQ(zmq_getsockopt(f->router, ZMQ_LAST_ENDPOINT, f->rep_ep, &cap), 0);
    } else {
        /* An endpoint that never answers: a ROUTER-less port. */
        void *tmp = zmq_socket(f->ctx, ZMQ_PULL);
        zmq_setsockopt(tmp, ZMQ_LINGER, &zero, sizeof zero);
        ASSERT_EQ(zmq_bind(tmp, "tcp://127.0.0.1:*"), 0);
        cap = sizeof f->rep_ep;
        ASSERT_EQ(zmq_getsockopt(tmp, ZMQ_LAST_ENDPOINT, f->rep_ep, &cap), 0);
        f->router = NULL;
        f->silent = tmp; /* stays bound: the DEALER's handshake fails, nobody answers */
    }
    ASSERT_EQ(pthread_create(t, NULL, s_fake, f), 0);
}

static void s_fake_stop(fake_t *f, pthread_t t)
{
    atomic_store(&f->stop, 1);
    pthread_join(t, NULL);
    zmq_close(f->pub);
    if (f->router)
        zmq_close(f->router);
    if (f->silent)
        zmq_close(f->silent);
    fp_codec_destroy(&f->codec);
}

/* Runs the tail into a temporary file; returns the global_seqs printed
   (count in *n) and, if err is set, what it wrote to stderr. */
static void s_run_tail(fake_t *f, fp_tail_opts_t *o, fp_tail_stats_t *st, uint64_t *got, size_t *n,
                       char *err, size_t errcap)
{
    FILE *out = tmpfile();
    ASSERT(out);
    o->endpoint = f->pub_ep;
    o->out = out;
    if (!o->topic)
        o->topic = "";
    int saved = -1;
    FILE *errf = NULL;
    if (err) {
        fflush(stderr);
        errf = tmpfile();
        ASSERT(errf);
        saved = dup(2);
        dup2(fileno(errf), 2);
    }
    void *ctx = zmq_ctx_new();
    ASSERT_EQ(fp_tail(ctx, o, st), 0);
    zmq_ctx_term(ctx);
    if (err) {
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        rewind(errf);
        size_t k = fread(err, 1, errcap - 1, errf);
        err[k] = 0;
        fclose(errf);
        fputs(err, stderr); /* still visible in the test log */
    }
    rewind(out);
    char line[4096];
    *n = 0;
    while (fgets(line, sizeof line, out)) {
        const char *p = strstr(line, "\"global_seq\":");
        ASSERT(p);
        ASSERT(*n < MAX_EVENTS);
        got[(*n)++] = strtoull(p + 13, NULL, 10);
        ASSERT(strstr(line, "\"topic\":\""));
    }
    fclose(out);
}

TEST(test_gap_filled_in_order)
{
    fake_t f = {.oldest = 1, .committed = 12,
                .live = {1, 2, 3, 7, 8, 9, 11, 12}, .nlive = 8};
    pthread_t t;
    s_fake_start(&f, &t, true);
    fp_tail_opts_t o = {.max_events = 12, .idle_timeout_ms = 5000, .replay_endpoint = f.rep_ep};
    fp_tail_stats_t st;
    uint64_t got[MAX_EVENTS];
    size_t n;
    s_run_tail(&f, &o, &st, got, &n, NULL, 0);
    s_fake_stop(&f, t);
    ASSERT_EQ(n, 12);
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(got[i], i + 1);
    ASSERT_EQ(st.events, 12);
    ASSERT_EQ(st.replayed, 4);
    ASSERT_EQ(st.global_gaps, 2);
    ASSERT_EQ(st.gaps, 0); /* the per-topic stream_seq check saw no hole */
    ASSERT_EQ(st.unrecoverable, 0);
    ASSERT_EQ(f.requests, 2);
    zmq_ctx_term(f.ctx);
}

TEST(test_gap_without_replay_is_reported)
{
    /* The same feed without --replay: stream_seq gaps per topic, as before. */
    fake_t f = {.oldest = 1, .committed = 12, .live = {1, 2, 3, 4, 5, 6, 10, 11, 12}, .nlive = 9};
    pthread_t t;
    s_fake_start(&f, &t, true);
    fp_tail_opts_t o = {.max_events = 9, .idle_timeout_ms = 5000};
    fp_tail_stats_t st;
    uint64_t got[MAX_EVENTS];
    size_t n;
    s_run_tail(&f, &o, &st, got, &n, NULL, 0);
    s_fake_stop(&f, t);
    ASSERT_EQ(n, 9);
    ASSERT_EQ(st.gaps, 3);   /* 7, 8, 9: one per topic */
    ASSERT_EQ(st.missing, 3);
    ASSERT_EQ(st.replayed, 0);
    ASSERT_EQ(f.requests, 0);
    zmq_ctx_term(f.ctx);
}

TEST(test_from_catch_up_then_live)
{
    /* 1..15 are committed; the live feed starts after the replay with 8..16,
       so 8..15 are duplicates and 16 is new. */
    fake_t f = {.oldest = 1, .committed = 15, .live = {8, 9, 10, 11, 12, 13, 14, 15, 16},
                .nlive = 9, .live_after_replay = true, .commit_before_live = 16};
    pthread_t t;
    s_fake_start(&f, &t, true);
    fp_tail_opts_t o = {.idle_timeout_ms = 800, .replay_endpoint = f.rep_ep, .from_global_seq = 1};
    fp_tail_stats_t st;
    uint64_t got[MAX_EVENTS];
    size_t n;
    s_run_tail(&f, &o, &st, got, &n, NULL, 0);
    s_fake_stop(&f, t);
    ASSERT_EQ(n, 16);
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(got[i], i + 1);
    ASSERT_EQ(st.replayed, 15);
    ASSERT_EQ(st.duplicates, 8);
    ASSERT_EQ(st.gaps, 0);
    ASSERT_EQ(st.unrecoverable, 0);
    zmq_ctx_term(f.ctx);
}

TEST(test_from_middle)
{
    /* --from 10 with 1..12 committed and nothing live: exactly 10..12. */
    fake_t f = {.oldest = 1, .committed = 12};
    pthread_t t;
    s_fake_start(&f, &t, true);
    fp_tail_opts_t o = {.idle_timeout_ms = 300, .replay_endpoint = f.rep_ep, .from_global_seq = 10};
    fp_tail_stats_t st;
    uint64_t got[MAX_EVENTS];
    size_t n;
    s_run_tail(&f, &o, &st, got, &n, NULL, 0);
    s_fake_stop(&f, t);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(got[0], 10);
    ASSERT_EQ(got[2], 12);
    ASSERT_EQ(f.requests, 1);
    zmq_ctx_term(f.ctx);
}

TEST(test_not_retained_is_reported)
{
    /* The endpoint keeps only 3..6; --from 1: 1..2 are gone for good. */
    fake_t f = {.oldest = 3, .committed = 6, .live = {7}, .nlive = 1, .live_after_replay = true,
                .commit_before_live = 7};
    pthread_t t;
    s_fake_start(&f, &t, true);
    fp_tail_opts_t o = {.max_events = 5, .idle_timeout_ms = 5000, .replay_endpoint = f.rep_ep,
                        .from_global_seq = 1};
    fp_tail_stats_t st;
    uint64_t got[MAX_EVENTS];
    size_t n;
    char err[2048];
    s_run_tail(&f, &o, &st, got, &n, err, sizeof err);
    s_fake_stop(&f, t);
    ASSERT_EQ(n, 5);
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(got[i], i + 3);
    ASSERT_EQ(st.unrecoverable, 2);
    ASSERT(strstr(err, "global_seq 1..2 unrecoverable (2 events)"));
    ASSERT(strstr(err, "no longer retained"));
    zmq_ctx_term(f.ctx);
}

TEST(test_silent_endpoint)
{
    /* Nobody answers REPLAY: the gap is reported after the timeout and the
       tail goes on with the live feed. */
    fake_t f = {.live = {1, 2, 5, 6}, .nlive = 4};
    pthread_t t;
    s_fake_start(&f, &t, false);
    fp_tail_opts_t o = {.max_events = 4, .idle_timeout_ms = 5000, .replay_endpoint = f.rep_ep,
                        .replay_timeout_ms = 300};
    fp_tail_stats_t st;
    uint64_t got[MAX_EVENTS];
    size_t n;
    char err[2048];
    s_run_tail(&f, &o, &st, got, &n, err, sizeof err);
    s_fake_stop(&f, t);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(got[2], 5);
    ASSERT_EQ(got[3], 6);
    ASSERT_EQ(st.unrecoverable, 2);
    ASSERT(strstr(err, "global_seq 3..4 unrecoverable"));
    zmq_ctx_term(f.ctx);
}

TEST(test_topic_filter_with_replay)
{
    /* Only scrap (g % 3 == 2) is printed; the other topics' events keep
       global_seq continuous, so nothing is taken for a gap but 4..6. */
    fake_t f = {.oldest = 1, .committed = 12, .live = {1, 2, 3, 7, 8, 9, 10, 11, 12}, .nlive = 9};
    pthread_t t;
    s_fake_start(&f, &t, true);
    fp_tail_opts_t o = {.topic = "scrap", .max_events = 4, .idle_timeout_ms = 5000,
                        .replay_endpoint = f.rep_ep};
    fp_tail_stats_t st;
    uint64_t got[MAX_EVENTS];
    size_t n;
    s_run_tail(&f, &o, &st, got, &n, NULL, 0);
    s_fake_stop(&f, t);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(got[0], 2);
    ASSERT_EQ(got[1], 5); /* replayed */
    ASSERT_EQ(got[2], 8);
    ASSERT_EQ(got[3], 11);
    ASSERT_EQ(st.global_gaps, 1);
    ASSERT_EQ(st.replayed, 1);
    ASSERT_EQ(st.gaps, 0);
    ASSERT_EQ(f.requests, 1);
    zmq_ctx_term(f.ctx);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_gap_filled_in_order);
    RUN(test_gap_without_replay_is_reported);
    RUN(test_from_catch_up_then_live);
    RUN(test_from_middle);
    RUN(test_not_retained_is_reported);
    RUN(test_silent_endpoint);
    RUN(test_topic_filter_with_replay);
    return test_done();
}
