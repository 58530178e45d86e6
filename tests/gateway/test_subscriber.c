/*  test_subscriber.c - the subscriber library against a fake feed (an
    XPUB) and a fake replay endpoint (a ROUTER) over inproc: decoding, the
    options it refuses, gaps and resets without replay (per topic, per
    global_seq, from the heartbeat), fills with replay (a hole inside an
    answer is asked for again, events come once and in order, the held live
    event last), the catch-up from from_global_seq (and, when it fails,
    asked for again at the next event), a replay endpoint that does not answer (LOST after the timeout, the caller's timeout 0 kept),
    retention (LOST), a garbage frame (BAD), the callback API, and (API 2)
    the dead-letter feed. */
#include "subscriber.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "codec.h"
#include "test.h"

#define TOPIC "completion/1000/L01"

static void *s_ctx;
static fp_codec_t *s_codec;
static int s_next_ep;

typedef struct {
    void *pub, *router;
    char feed[64], replay[64];
    subscriber_t *sub;
} fake_t;

/* A fake floorpost: an XPUB feed and, with replay, a ROUTER; and a
   subscriber connected to them, its subscription arrived. */
static void s_fake(fake_t *f, bool replay, const char *prefix, uint64_t from, int replay_timeout_ms)
{
    memset(f, 0, sizeof *f);
    snprintf(f->feed, sizeof f->feed, "inproc://feed-%d", ++s_next_ep);
    snprintf(f->replay, sizeof f->replay, "inproc://replay-%d", s_next_ep);
    f->pub = zmq_socket(s_ctx, ZMQ_XPUB);
    ASSERT_EQ(zmq_bind(f->pub, f->feed), 0);
    if (replay) {
        f->router = zmq_socket(s_ctx, ZMQ_ROUTER);
        ASSERT_EQ(zmq_bind(f->router, f->replay), 0);
    }
    subscriber_opts_t o = {.endpoint = f->feed, .topic_prefix = prefix,
                           .replay_endpoint = replay ? f->replay : NULL, .from_global_seq = from,
                           .replay_timeout_ms = replay_timeout_ms};
    char err[256];
    f->sub = subscriber_new(s_ctx, &o, err, sizeof err);
    ASSERT(f->sub);
    char s[64];
    zmq_pollitem_t it = {f->pub, 0, ZMQ_POLLIN, 0};
    ASSERT_EQ(zmq_poll(&it, 1, 2000), 1);
    ASSERT(zmq_recv(f->pub, s, sizeof s, 0) >= 1 && s[0] == 1);
}

static void s_fake_done(fake_t *f)
{
    subscriber_destroy(&f->sub);
    subscriber_destroy(&f->sub); /* safe twice */
    int linger = 0;
    zmq_setsockopt(f->pub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(f->pub);
    if (f->router) {
        zmq_setsockopt(f->router, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(f->router);
    }
}

/* An encoded checkpoint (the codec's buffer: copy before the next encode). */
static void s_encode(uint64_t stream_seq, uint64_t global_seq, const void **out, size_t *len)
{
    char id[32];
    snprintf(id, sizeof id, "t-%" PRIu64, global_seq);
    fp_checkpoint_t ck = {.kind = FP_CK_COMPLETION, .event_id = id, .stream_seq = stream_seq,
                          .global_seq = global_seq, .checkpoint_no = 1, .instance = "t",
                          .plant = "1000", .line = "L01", .order = "O1", .operation = "0010",
                          .yield = (int64_t)global_seq, .final = true};
    ASSERT_EQ(fp_codec_checkpoint_encode(s_codec, &ck, out, len), FP_CODEC_OK);
}

static void s_send2(void *sock, const void *a, size_t al, const void *b, size_t bl)
{
    ASSERT_EQ(zmq_send(sock, a, al, ZMQ_SNDMORE), (int)al);
    ASSERT_EQ(zmq_send(sock, b, bl, 0), (int)bl);
}

static void s_publish(fake_t *f, const char *topic, uint64_t stream_seq, uint64_t global_seq)
{
    const void *buf;
    size_t len;
    s_encode(stream_seq, global_seq, &buf, &len);
    s_send2(f->pub, topic, strlen(topic), buf, len);
}

static void s_heartbeat(fake_t *f, uint64_t g, uint64_t topic_seq)
{
    char body[256];
    int n = snprintf(body, sizeof body,
                     "{\"instance\":\"t\",\"global_seq\":%" PRIu64 ",\"feeds\":{\"" TOPIC
                     "\":%" PRIu64 "},\"wall_ns\":1}", g, topic_seq);
    s_send2(f->pub, "heartbeat", 9, body, (size_t)n);
}

/* The next message within 2 s, of the kind expected. */
static subscriber_msg_t s_expect(fake_t *f, int kind)
{
    subscriber_msg_t m;
    int rc = subscriber_recv(f->sub, &m, 2000);
    if (rc != 1 || m.kind != kind)
        fprintf(stderr, "expected %s, got rc %d kind %s (%s)\n", subscriber_kind_name(kind), rc,
                rc == 1 ? subscriber_kind_name(m.kind) : "-", rc == 1 ? m.detail : "");
    ASSERT_EQ(rc, 1);
    ASSERT_EQ(m.kind, kind);
    return m;
}

/* Reads one REPLAY request at the fake ROUTER: its routing id, from, max. */
static int s_request(fake_t *f, zmq_msg_t *id, uint64_t *from, uint64_t *max, int timeout_ms)
{
    zmq_pollitem_t it = {f->router, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) != 1)
        return 0;
    zmq_msg_init(id);
    ASSERT(zmq_msg_recv(id, f->router, 0) >= 0);
    char req[64] = {0};
    ASSERT(zmq_recv(f->router, req, sizeof req - 1, 0) > 0);
    ASSERT_EQ(sscanf(req, "REPLAY %" SCNu64 " %" SCNu64, from, max), 2);
    return 1;
}

/* the [topic][checkpoint] of an answer, after its routing id */
static void s_answer_event(fake_t *f, zmq_msg_t *id, uint64_t stream_seq, uint64_t g)
{
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, id);
    ASSERT(zmq_msg_send(&copy, f->router, ZMQ_SNDMORE) >= 0);
    const void *buf;
    size_t len;
    s_encode(stream_seq, g, &buf, &len);
    s_send2(f->router, TOPIC, strlen(TOPIC), buf, len);
}

static void s_answer_end(fake_t *f, zmq_msg_t *id, const char *text)
{
    ASSERT(zmq_msg_send(id, f->router, ZMQ_SNDMORE) >= 0);
    s_send2(f->router, "END", 3, text, strlen(text));
}

/* subscriber_recv with timeout 0 until a message, serving nothing: the
   fill's request goes out without waiting. */
static int s_recv_now(fake_t *f, subscriber_msg_t *m)
{
    return subscriber_recv(f->sub, m, 0);
}

/* The subscriber's next REPLAY request: a recv that does not wait sends
   it (and returns nothing); the fake ROUTER reads it. want_max 0: any. */
static void s_expect_request(fake_t *f, zmq_msg_t *id, uint64_t want_from, uint64_t want_max)
{
    subscriber_msg_t m;
    uint64_t from, max;
    ASSERT_EQ(s_recv_now(f, &m), 0);
    ASSERT_EQ(s_request(f, id, &from, &max, 2000), 1);
    ASSERT_EQ(from, want_from);
    if (want_max)
        ASSERT_EQ(max, want_max);
}

/* The next message is a note of kind about topic, numbers first..next-1. */
static void s_expect_note(fake_t *f, int kind, const char *topic, uint64_t first, uint64_t next)
{
    subscriber_msg_t m = s_expect(f, kind);
    ASSERT_STREQ(m.topic, topic);
    ASSERT_EQ(m.first, first);
    ASSERT_EQ(m.next, next);
}

TEST(test_decode)
{
    const void *buf;
    size_t len;
    s_encode(3, 7, &buf, &len);
    void *copy = malloc(len + 1);
    memcpy(copy, buf, len);
    fp_checkpoint_t ck;
    ASSERT_EQ(subscriber_decode(copy, len, &ck), 0);
    ASSERT_EQ(ck.global_seq, 7);
    ASSERT_EQ(ck.stream_seq, 3);
    ASSERT_STREQ(ck.event_id, "t-7");
    ASSERT_STREQ(fp_ck_kind_name(ck.kind), "completion");
    ASSERT_EQ(subscriber_decode((char *)copy + 1, len - 1, &ck), SUBSCRIBER_UNALIGNED);
    ASSERT(strstr(subscriber_decode_error(SUBSCRIBER_UNALIGNED), "unaligned"));
    memset(copy, 0x5a, len);
    int rc = subscriber_decode(copy, len, &ck);
    ASSERT(rc < 0);
    ASSERT_STREQ(subscriber_decode_error(rc), "wrong_identifier");
    free(copy);
}

TEST(test_options_refused)
{
    char err[256];
    subscriber_opts_t o = {.endpoint = "inproc://x", .server_key_z85 = "abc"};
    ASSERT(!subscriber_new(s_ctx, &o, err, sizeof err));
    ASSERT(strstr(err, "all three keys"));
    o = (subscriber_opts_t){.endpoint = "inproc://x", .from_global_seq = 5};
    ASSERT(!subscriber_new(s_ctx, &o, err, sizeof err));
    ASSERT(strstr(err, "needs a replay endpoint"));
    o = (subscriber_opts_t){.endpoint = "bogus://x"};
    ASSERT(!subscriber_new(s_ctx, &o, err, sizeof err));
    ASSERT(strstr(err, "feed bogus://x"));
    ASSERT(!subscriber_new(s_ctx, NULL, NULL, 0));
}

TEST(test_gaps_and_resets_without_replay)
{
    fake_t f;
    s_fake(&f, false, "", 0, 0);
    s_publish(&f, TOPIC, 1, 1);
    s_publish(&f, TOPIC, 2, 2);
    s_publish(&f, TOPIC, 4, 4); /* 3 lost */
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 1);
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 2);
    subscriber_msg_t m = s_expect(&f, SUBSCRIBER_GAP);
    ASSERT_STREQ(m.topic, "");
    ASSERT_EQ(m.first, 3);
    ASSERT_EQ(m.next, 4);
    s_expect_note(&f, SUBSCRIBER_GAP, TOPIC, 3, 4);
    m = s_expect(&f, SUBSCRIBER_EVENT);
    ASSERT_EQ(m.ck.global_seq, 4);
    ASSERT_STREQ(m.ck.event_id, "t-4");
    ASSERT_STREQ(m.topic, TOPIC);
    /* the end of a burst: 5 and 6 never come, the heartbeat says so */
    s_heartbeat(&f, 6, 6);
    s_expect_note(&f, SUBSCRIBER_GAP, "", 5, 7);
    m = s_expect(&f, SUBSCRIBER_GAP);
    ASSERT_STREQ(m.topic, TOPIC);
    ASSERT_EQ(m.next - m.first, 2);
    m = s_expect(&f, SUBSCRIBER_HEARTBEAT);
    ASSERT_EQ(m.global_seq, 6);
    ASSERT_EQ(m.wall_ns, 1);
    /* floorpost restarted without its state */
    s_publish(&f, TOPIC, 1, 1);
    s_expect_note(&f, SUBSCRIBER_RESET, "", 4, 1);
    m = s_expect(&f, SUBSCRIBER_RESET);
    ASSERT_STREQ(m.topic, TOPIC);
    ASSERT_EQ(m.first, 6);
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 1);
    /* garbage, a bad heartbeat, a wrong frame count */
    s_send2(f.pub, TOPIC, strlen(TOPIC), "not a flatbuffer", 16);
    s_send2(f.pub, "heartbeat", 9, "{]", 2);
    ASSERT_EQ(zmq_send(f.pub, "scrap/x", 7, 0), 7);
    m = s_expect(&f, SUBSCRIBER_BAD);
    ASSERT_STREQ(m.topic, TOPIC);
    ASSERT(strstr(m.detail, "undecodable checkpoint"));
    m = s_expect(&f, SUBSCRIBER_BAD);
    ASSERT(strstr(m.detail, "heartbeat"));
    m = s_expect(&f, SUBSCRIBER_BAD);
    ASSERT(strstr(m.detail, "1 frames"));
    const subscriber_stats_t *st = subscriber_stats(f.sub);
    ASSERT_EQ(st->events, 4);
    ASSERT_EQ(st->gaps, 2);
    ASSERT_EQ(st->missing, 3);
    ASSERT_EQ(st->bad, 3);
    ASSERT_EQ(st->resets, 2);
    ASSERT_EQ(subscriber_recv(f.sub, &m, 0), 0);
    s_fake_done(&f);
}

TEST(test_prefix_without_replay_checks_topics_only)
{
    fake_t f;
    s_fake(&f, false, "completion/", 0, 0);
    s_publish(&f, TOPIC, 1, 10);
    s_publish(&f, TOPIC, 2, 20); /* global_seq jumps: other topics' events */
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 10);
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 20);
    subscriber_msg_t m;
    ASSERT_EQ(subscriber_recv(f.sub, &m, 50), 0);
    s_fake_done(&f);
}

TEST(test_fill_asks_again_after_a_hole)
{
    fake_t f;
    s_fake(&f, true, "", 0, 0);
    s_publish(&f, TOPIC, 1, 1);
    s_publish(&f, TOPIC, 5, 5); /* 2..4 lost */
    subscriber_msg_t m;
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 1);
    zmq_msg_t id;
    s_expect_request(&f, &id, 2, 3); /* the request is out; the caller is not kept */
    s_answer_event(&f, &id, 2, 2);
    s_answer_event(&f, &id, 4, 4); /* a hole at 3 */
    s_answer_end(&f, &id, "5 1 5");
    m = s_expect(&f, SUBSCRIBER_EVENT);
    ASSERT_EQ(m.ck.global_seq, 2);
    ASSERT(m.replayed);
    s_expect_request(&f, &id, 3, 2);
    s_answer_event(&f, &id, 2, 2); /* a duplicate, skipped */
    s_answer_event(&f, &id, 3, 3);
    s_answer_event(&f, &id, 4, 4);
    s_answer_end(&f, &id, "5 1 5");
    for (uint64_t g = 3; g <= 5; g++) {
        m = s_expect(&f, SUBSCRIBER_EVENT);
        ASSERT_EQ(m.ck.global_seq, g);
        ASSERT_EQ(m.replayed, g < 5);
    }
    const subscriber_stats_t *st = subscriber_stats(f.sub);
    ASSERT_EQ(st->replay_requests, 2);
    ASSERT_EQ(st->replayed, 3);
    ASSERT_EQ(st->duplicates, 1);
    ASSERT_EQ(st->gaps, 0);
    ASSERT_EQ(subscriber_position(f.sub), 5);
    s_fake_done(&f);
}

TEST(test_catch_up_then_live_with_a_prefix)
{
    fake_t f;
    s_fake(&f, true, "completion/", 1, 0); /* subscribes to everything */
    subscriber_msg_t m;
    zmq_msg_t id;
    s_expect_request(&f, &id, 1, SUBSCRIBER_REPLAY_BATCH);
    s_answer_event(&f, &id, 1, 1);
    s_answer_event(&f, &id, 2, 2);
    s_answer_end(&f, &id, "3 1 2");
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 1);
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 2);
    s_publish(&f, TOPIC, 2, 2);            /* live, replayed already: skipped */
    s_publish(&f, "scrap/1000/L01", 1, 3); /* filtered, but counted: no gap */
    s_publish(&f, TOPIC, 3, 4);
    m = s_expect(&f, SUBSCRIBER_EVENT);
    ASSERT_EQ(m.ck.global_seq, 4);
    ASSERT(!m.replayed);
    ASSERT_EQ(subscriber_position(f.sub), 4);
    ASSERT_EQ(subscriber_stats(f.sub)->global_gaps, 0);
    ASSERT_EQ(subscriber_stats(f.sub)->duplicates, 1);
    s_fake_done(&f);
}

TEST(test_lost_when_not_retained_or_not_answered)
{
    fake_t f;
    s_fake(&f, true, "", 0, 300);
    s_publish(&f, TOPIC, 1, 1);
    s_publish(&f, TOPIC, 9, 9);
    subscriber_msg_t m;
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 1);
    zmq_msg_t id;
    s_expect_request(&f, &id, 2, 7);
    s_answer_event(&f, &id, 6, 6);
    s_answer_end(&f, &id, "7 6 9"); /* 2..5 are gone */
    m = s_expect(&f, SUBSCRIBER_LOST);
    ASSERT_EQ(m.first, 2);
    ASSERT_EQ(m.next, 6);
    ASSERT(strstr(m.detail, "no longer retained"));
    /* 6 came before the END said 2..5 were gone: asked for again */
    s_expect_request(&f, &id, 6, 0);
    s_answer_event(&f, &id, 6, 6);
    s_answer_end(&f, &id, "7 6 9");
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_GAP).first, 2); /* the topic's stream_seq 2..5 */
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 6);
    s_expect_request(&f, &id, 7, 0);
    zmq_msg_close(&id); /* never answered */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    m = s_expect(&f, SUBSCRIBER_LOST);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ASSERT(waited > 0.15 && waited < 1.5);
    ASSERT_EQ(m.first, 7);
    ASSERT_EQ(m.next, 9);
    ASSERT(strstr(m.detail, "did not answer within 300 ms"));
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_GAP).next, 9);
    m = s_expect(&f, SUBSCRIBER_EVENT); /* the held live event */
    ASSERT_EQ(m.ck.global_seq, 9);
    ASSERT_EQ(subscriber_stats(f.sub)->lost, 6);
    /* the heartbeat shows a lost end: filled */
    s_heartbeat(&f, 10, 10);
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_HEARTBEAT).global_seq, 10);
    s_expect_request(&f, &id, 10, 1);
    s_answer_event(&f, &id, 10, 10);
    s_answer_end(&f, &id, "11 6 10");
    m = s_expect(&f, SUBSCRIBER_EVENT);
    ASSERT_EQ(m.ck.global_seq, 10);
    ASSERT(m.replayed);
    s_fake_done(&f);
}

TEST(test_catch_up_that_fails_is_asked_again_bounded)
{
    fake_t f;
    s_fake(&f, true, "", 1, 200);
    subscriber_msg_t m;
    zmq_msg_t id;
    s_expect_request(&f, &id, 1, SUBSCRIBER_REPLAY_BATCH); /* never answered */
    zmq_msg_close(&id);
    ASSERT_EQ(subscriber_recv(f.sub, &m, 500), 0); /* a catch-up reports nothing yet */
    s_publish(&f, TOPIC, 3, 3);                    /* 1..2 still missing: asked again */
    s_expect_request(&f, &id, 1, 2);
    s_answer_event(&f, &id, 1, 1);
    s_answer_event(&f, &id, 2, 2);
    s_answer_end(&f, &id, "3 1 3");
    for (uint64_t g = 1; g <= 3; g++)
        ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, g);
    s_fake_done(&f);
}

static int s_count(const subscriber_msg_t *m, void *arg)
{
    int *n = arg;
    if (m->kind == SUBSCRIBER_EVENT)
        (*n)++;
    return *n == 2 ? 42 : 0;
}

TEST(test_callback_api)
{
    fake_t f;
    s_fake(&f, false, "", 0, 0);
    s_publish(&f, TOPIC, 1, 1);
    s_publish(&f, TOPIC, 2, 2);
    s_publish(&f, TOPIC, 3, 3);
    int n = 0;
    ASSERT_EQ(subscriber_run(f.sub, s_count, &n, 2000), 42);
    ASSERT_EQ(n, 2);
    n = 5;
    ASSERT_EQ(subscriber_run(f.sub, s_count, &n, 100), 0); /* idle */
    ASSERT_EQ(n, 6);
    s_fake_done(&f);
}

static void s_send3(void *sock, const char *topic, const char *detail, const void *b, size_t bl)
{
    ASSERT_EQ(zmq_send(sock, topic, strlen(topic), ZMQ_SNDMORE), (int)strlen(topic));
    ASSERT_EQ(zmq_send(sock, detail, strlen(detail), ZMQ_SNDMORE), (int)strlen(detail));
    ASSERT_EQ(zmq_send(sock, b, bl, 0), (int)bl);
}

/* API 2: dead letters, [deadletter/REASON][JSON detail][bytes], handed out
   with the detail checked (a u64 past INT64_MAX and a \u0000 are fine, a
   line end becomes a blank) and the bytes as sent; they take no part in
   the global_seq checks; what is not a dead letter is BAD. */
TEST(test_deadletters_accepted)
{
    fake_t f;
    s_fake(&f, false, "", 0, 0);
    subscriber_accept_deadletters(f.sub);
    const char *detail = "{\"reason\":\"string_has_nul\",\r\n\"source_id\":18446744073709551615,"
                         "\"detail\":\"P\\u0000A\"}";
    s_publish(&f, TOPIC, 1, 1);
    s_send3(f.pub, "deadletter/string_has_nul", detail, "\x01\x02\x03", 3);
    s_publish(&f, TOPIC, 2, 2);
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 1);
    subscriber_msg_t m = s_expect(&f, SUBSCRIBER_DEADLETTER);
    ASSERT_STREQ(m.topic, "deadletter/string_has_nul");
    ASSERT_STREQ(m.detail, "{\"reason\":\"string_has_nul\",  \"source_id\":18446744073709551615,"
                           "\"detail\":\"P\\u0000A\"}");
    ASSERT_EQ(m.len, 3);
    ASSERT_EQ(memcmp(m.data, "\x01\x02\x03", 3), 0);
    ASSERT_EQ((uintptr_t)m.data & 7, 0);
    ASSERT_EQ(m.first, 0);
    ASSERT_EQ(s_expect(&f, SUBSCRIBER_EVENT).ck.global_seq, 2); /* no GAP: a dead letter has no seq */
    /* not dead letters: another topic, a detail that is not JSON, or not an object */
    s_send3(f.pub, "scrap/1000/L01", "{}", "x", 1);
    s_send3(f.pub, "deadletter/malformed", "{]", "x", 1);
    s_send3(f.pub, "deadletter/malformed", "[1]", "x", 1);
    s_send3(f.pub, "deadletter/", "{}", "x", 1);
    m = s_expect(&f, SUBSCRIBER_BAD);
    ASSERT(strstr(m.detail, "not deadletter/REASON"));
    m = s_expect(&f, SUBSCRIBER_BAD);
    ASSERT_STREQ(m.topic, "deadletter/malformed");
    ASSERT(strstr(m.detail, "the detail (2 bytes) is not a JSON object"));
    m = s_expect(&f, SUBSCRIBER_BAD);
    ASSERT(strstr(m.detail, "another value"));
    m = s_expect(&f, SUBSCRIBER_BAD);
    ASSERT(strstr(m.detail, "not deadletter/REASON"));
    /* an empty payload */
    s_send3(f.pub, "deadletter/envelope", "{\"reason\":\"envelope\"}", "", 0);
    m = s_expect(&f, SUBSCRIBER_DEADLETTER);
    ASSERT_EQ(m.len, 0);
    ASSERT_STREQ(m.detail, "{\"reason\":\"envelope\"}");
    const subscriber_stats_t *st = subscriber_stats(f.sub);
    ASSERT_EQ(st->deadletters, 2);
    ASSERT_EQ(st->bad, 4);
    ASSERT_EQ(st->events, 2);
    ASSERT_EQ(st->global_gaps, 0);
    ASSERT_STREQ(subscriber_kind_name(SUBSCRIBER_DEADLETTER), "deadletter");
    ASSERT_STREQ(subscriber_kind_name(SUBSCRIBER_DEADLETTER + 1), "?");
    ASSERT_EQ(SUBSCRIBER_API_VERSION, 2);
    s_fake_done(&f);
}

TEST(test_deadletters_not_accepted_are_bad)
{
    /* API 1 behaviour, unchanged: a 3-frame message is not a checkpoint */
    fake_t f;
    s_fake(&f, false, "", 0, 0);
    s_send3(f.pub, "deadletter/too_old", "{\"reason\":\"too_old\"}", "x", 1);
    subscriber_msg_t m = s_expect(&f, SUBSCRIBER_BAD);
    ASSERT(strstr(m.detail, "unexpected message (3 frames)"));
    ASSERT_EQ(subscriber_stats(f.sub)->deadletters, 0);
    s_fake_done(&f);
}

TEST(test_deadletters_filtered_by_prefix)
{
    /* with a replay endpoint the SUB takes everything and the prefix
       filters here: another reason's dead letter is not handed out */
    fake_t f;
    s_fake(&f, true, "deadletter/too_old", 0, 0);
    subscriber_accept_deadletters(f.sub);
    s_send3(f.pub, "deadletter/malformed", "{\"reason\":\"malformed\"}", "x", 1);
    s_send3(f.pub, "deadletter/too_old", "{\"reason\":\"too_old\",\"seq\":4}", "yy", 2);
    subscriber_msg_t m = s_expect(&f, SUBSCRIBER_DEADLETTER);
    ASSERT_STREQ(m.topic, "deadletter/too_old");
    ASSERT_STREQ(m.detail, "{\"reason\":\"too_old\",\"seq\":4}");
    ASSERT_EQ(m.len, 2);
    ASSERT_EQ(subscriber_recv(f.sub, &m, 100), 0);
    ASSERT_EQ(subscriber_stats(f.sub)->deadletters, 1);
    s_fake_done(&f);
}

int main(int argc, char **argv)
{
    s_ctx = zmq_ctx_new();
    s_codec = fp_codec_new();
    test_init(argc, argv);
    RUN(test_decode);
    RUN(test_options_refused);
    RUN(test_gaps_and_resets_without_replay);
    RUN(test_prefix_without_replay_checks_topics_only);
    RUN(test_fill_asks_again_after_a_hole);
    RUN(test_catch_up_then_live_with_a_prefix);
    RUN(test_lost_when_not_retained_or_not_answered);
    RUN(test_catch_up_that_fails_is_asked_again_bounded);
    RUN(test_callback_api);
    RUN(test_deadletters_accepted);
    RUN(test_deadletters_not_accepted_are_bad);
    RUN(test_deadletters_filtered_by_prefix);
    int rc = test_done();
    fp_codec_destroy(&s_codec);
    zmq_ctx_term(s_ctx);
    return rc;
}
