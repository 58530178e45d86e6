/*  test_input.c - the input seam (input.h) through its first implementation,
    the ZeroMQ input, on real sockets: a ROUTER on a free tcp loopback port
    and a PULL on ipc in a mkdtemp directory, driven by a DEALER and a PUSH.
    The test plays ingest: it calls the callbacks on its one thread.
*/
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "codec.h"
#include "config.h"
#include "input.h"
#include "metrics.h"
#include "stage.h"
#include "test.h"
#include "verdict.h"

typedef struct {
    void *ctx;
    fp_config_t cfg;
    fp_metrics_t *metrics;
    void *dl_in;  /* what the input dead-letters arrives here */
    fp_input_env_t env;
    void *in;     /* the input instance */
    char dir[64];
    char router_connect[64], pull_connect[300];
} rig_t;

static void rig_start(rig_t *r, bool router, bool pull)
{
    memset(r, 0, sizeof *r);
    r->ctx = zmq_ctx_new();
    ASSERT(r->ctx);
    fp_config_defaults(&r->cfg);
    r->cfg.max_frame_bytes = 65536;
    r->cfg.ingest_router[0] = r->cfg.ingest_pull[0] = '\0'; /* never the default ports */
    strcpy(r->dir, "/tmp/fp-test-input-XXXXXX");
    ASSERT(mkdtemp(r->dir));
    /* A free port: libzmq picks it; ZMQ_LAST_ENDPOINT tells which. */
    if (router)
        strcpy(r->cfg.ingest_router, "tcp://127.0.0.1:*");
    if (pull) {
        snprintf(r->cfg.ingest_pull, sizeof r->cfg.ingest_pull, "ipc://%s/pull", r->dir);
        snprintf(r->pull_connect, sizeof r->pull_connect, "%s", r->cfg.ingest_pull);
    }
    r->metrics = fp_metrics_new(1, 1);
    ASSERT(r->metrics);
    r->dl_in = zmq_socket(r->ctx, ZMQ_PULL);
    ASSERT_EQ(zmq_bind(r->dl_in, "inproc://test-dl"), 0);
    void *dl = zmq_socket(r->ctx, ZMQ_PUSH);
    ASSERT_EQ(zmq_connect(dl, "inproc://test-dl"), 0);
    r->env = (fp_input_env_t){.zmq_ctx = r->ctx, .cfg = &r->cfg, .metrics = r->metrics, .dl = dl};
    char err[256] = "";
    int rc = fp_input_zmq.cb_init(&r->env, &r->in, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "cb_init: %s\n", err);
    ASSERT_EQ(rc, 0);
    ASSERT(r->in);
    if (router) {
        /* The ROUTER is the input's first poll item. */
        zmq_pollitem_t items[FP_INPUT_POLL_MAX];
        ASSERT(fp_input_zmq.cb_poll(r->in, items, FP_INPUT_POLL_MAX) >= 1);
        size_t n = sizeof r->router_connect;
        ASSERT_EQ(zmq_getsockopt(items[0].socket, ZMQ_LAST_ENDPOINT, r->router_connect, &n), 0);
        ASSERT(strncmp(r->router_connect, "tcp://127.0.0.1:", 16) == 0);
    }
}

static void rig_stop(rig_t *r)
{
    fp_input_zmq.cb_destroy(&r->in);
    ASSERT(r->in == NULL);
    fp_input_zmq.cb_destroy(&r->in); /* safe twice */
    int linger = 0;
    zmq_setsockopt(r->env.dl, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(r->env.dl);
    zmq_close(r->dl_in);
    zmq_ctx_term(r->ctx);
    fp_metrics_destroy(&r->metrics);
    char path[128];
    snprintf(path, sizeof path, "%s/pull", r->dir);
    unlink(path);
    rmdir(r->dir);
}

static void *s_client(rig_t *r, int type, const char *ep, const char *routing_id, size_t idlen)
{
    void *s = zmq_socket(r->ctx, type);
    ASSERT(s);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (routing_id)
        ASSERT_EQ(zmq_setsockopt(s, ZMQ_ROUTING_ID, routing_id, idlen), 0);
    ASSERT_EQ(zmq_connect(s, ep), 0);
    return s;
}

/* A two-record batch of source 42, epoch 3, seqs 7 and 8. */
static void s_batch(fp_codec_t *codec, const void **buf, size_t *len)
{
    const char *strs[] = {"P1", "O1", "0010"};
    fp_record_t recs[2] = {0};
    for (int i = 0; i < 2; i++) {
        recs[i].seq = 7 + (uint64_t)i;
        recs[i].kind = FP_KIND_PART_COUNT;
        recs[i].quantity = 5;
        recs[i].str[FP_STR_PLANT] = 1;
        recs[i].str[FP_STR_ORDER] = 2;
        recs[i].str[FP_STR_OPERATION] = 3;
    }
    ASSERT_EQ(fp_codec_batch_encode(codec, 42, 3, strs, 3, recs, 2, buf, len), FP_CODEC_OK);
}

/* Waits (up to 5 s) until the input's poll item `which` is readable, then
   reads it; returns cb_read's result. */
static int s_read(rig_t *r, int which, fp_input_frame_t *f)
{
    zmq_pollitem_t items[FP_INPUT_POLL_MAX];
    int n = fp_input_zmq.cb_poll(r->in, items, FP_INPUT_POLL_MAX);
    ASSERT(which < n);
    ASSERT(zmq_poll(&items[which], 1, 5000) == 1);
    return fp_input_zmq.cb_read(r->in, which, f);
}

static void *s_recv_timeout(void *s, zmq_msg_t *m, int ms)
{
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    ASSERT_EQ(zmq_poll(&it, 1, ms), 1);
    ASSERT(zmq_msg_recv(m, s, 0) >= 0);
    return zmq_msg_data(m);
}

TEST(test_not_configured_and_bad_endpoint)
{
    fp_config_t cfg;
    fp_config_defaults(&cfg);
    cfg.ingest_router[0] = cfg.ingest_pull[0] = '\0';
    void *ctx = zmq_ctx_new();
    fp_input_env_t env = {.zmq_ctx = ctx, .cfg = &cfg};
    void *in = (void *)&cfg;
    char err[256] = "";
    ASSERT_EQ(fp_input_zmq.cb_init(&env, &in, err, sizeof err), 0);
    ASSERT(in == NULL);
    strcpy(cfg.ingest_router, "tcp://no-such-host-anywhere.invalid:1");
    ASSERT(fp_input_zmq.cb_init(&env, &in, err, sizeof err) < 0);
    ASSERT(in == NULL);
    ASSERT(strstr(err, "bind tcp://no-such-host-anywhere.invalid:1") != NULL);
    zmq_ctx_term(ctx);
}

TEST(test_router_frame_and_ack)
{
    rig_t r;
    rig_start(&r, true, true);
    zmq_pollitem_t items[FP_INPUT_POLL_MAX];
    ASSERT_EQ(fp_input_zmq.cb_poll(r.in, items, FP_INPUT_POLL_MAX), 2); /* ROUTER, then PULL */

    void *dealer = s_client(&r, ZMQ_DEALER, r.router_connect, "gw-1", 4);
    fp_codec_t *codec = fp_codec_new();
    const void *buf;
    size_t len;
    s_batch(codec, &buf, &len);
    ASSERT_EQ(zmq_send(dealer, buf, len, 0), (int)len);

    uint8_t token[FP_INPUT_TOKEN_MAX];
    zmq_msg_t payload;
    zmq_msg_init(&payload);
    fp_input_frame_t f = {.token = token, .payload = &payload};
    ASSERT_EQ(s_read(&r, 0, &f), 1);
    ASSERT_EQ(f.format, FP_FORMAT_FB_BATCH);
    ASSERT_EQ(f.source_id, 42);
    ASSERT_EQ(f.toklen, 4);
    ASSERT(memcmp(token, "gw-1", 4) == 0);
    ASSERT_EQ(zmq_msg_size(&payload), len);
    ASSERT(memcmp(zmq_msg_data(&payload), buf, len) == 0);
    ASSERT_EQ(fp_metrics_get(r.metrics, FP_M_FRAMES_IN), 1);
    ASSERT_EQ(fp_metrics_get(r.metrics, FP_M_BYTES_IN), len);
    zmq_msg_close(&payload);
    /* Nothing more to read: 0, not an error. */
    zmq_msg_init(&payload);
    ASSERT_EQ(fp_input_zmq.cb_read(r.in, 0, &f), 0);
    ASSERT_EQ(zmq_msg_size(&payload), 0);
    zmq_msg_close(&payload);

    /* Accepted: the DEALER gets an Ack with the verdict's fields. */
    fp_verdict_t v = {.source_id = 42, .epoch = 3, .acked_seq = 8, .batch_last_seq = 8,
                      .round = 17, .status = FP_VERDICT_ACCEPTED};
    ASSERT_EQ(fp_input_zmq.cb_ack(r.in, &v, token, 4), 0);
    zmq_msg_t m;
    zmq_msg_init(&m);
    s_recv_timeout(dealer, &m, 5000);
    ASSERT(!zmq_msg_more(&m));
    fp_ack_t a;
    ASSERT_EQ(fp_codec_ack_decode(zmq_msg_data(&m), zmq_msg_size(&m), &a), FP_CODEC_OK);
    ASSERT_EQ(a.source_id, 42);
    ASSERT_EQ(a.epoch, 3);
    ASSERT_EQ(a.acked_seq, 8);
    ASSERT_EQ(a.batch_last_seq, 8);
    ASSERT_EQ(a.status, 0);
    ASSERT_STREQ(a.reason, "");
    zmq_msg_close(&m);

    /* Rejected: status 1 and the reason's stable string. */
    v = (fp_verdict_t){.source_id = 42, .epoch = 2, .status = FP_VERDICT_REJECTED,
                       .reason = FP_DL_stale_epoch};
    ASSERT_EQ(fp_input_zmq.cb_ack(r.in, &v, token, 4), 0);
    zmq_msg_init(&m);
    s_recv_timeout(dealer, &m, 5000);
    ASSERT_EQ(fp_codec_ack_decode(zmq_msg_data(&m), zmq_msg_size(&m), &a), FP_CODEC_OK);
    ASSERT_EQ(a.epoch, 2);
    ASSERT_EQ(a.acked_seq, 0);
    ASSERT_EQ(a.status, 1);
    ASSERT_STREQ(a.reason, "stale_epoch");
    zmq_msg_close(&m);

    /* A token no peer has: nothing sent, and not to be tried again. */
    ASSERT_EQ(fp_input_zmq.cb_ack(r.in, &v, "nobody", 6), -EHOSTUNREACH);
    /* No token: nothing to acknowledge. */
    ASSERT(fp_input_zmq.cb_ack(r.in, &v, token, 0) < 0);

    /* Drain closes the PULL (fire-and-forget) and keeps the ROUTER: the
       last verdicts are still acknowledged. */
    fp_input_zmq.cb_drain(r.in);
    ASSERT_EQ(fp_input_zmq.cb_poll(r.in, items, FP_INPUT_POLL_MAX), 1);
    v = (fp_verdict_t){.source_id = 42, .epoch = 3, .acked_seq = 9, .batch_last_seq = 9,
                       .status = FP_VERDICT_ACCEPTED};
    ASSERT_EQ(fp_input_zmq.cb_ack(r.in, &v, token, 4), 0);
    zmq_msg_init(&m);
    s_recv_timeout(dealer, &m, 5000);
    ASSERT_EQ(fp_codec_ack_decode(zmq_msg_data(&m), zmq_msg_size(&m), &a), FP_CODEC_OK);
    ASSERT_EQ(a.acked_seq, 9);
    ASSERT_EQ(a.status, 0);
    zmq_msg_close(&m);

    fp_codec_destroy(&codec);
    zmq_close(dealer);
    rig_stop(&r);
}

/* A producer that does not read its acks: once its queue is full, cb_ack
   says -EAGAIN and sends nothing (no silent drop), and every ack it said
   0 for arrives, in order. */
TEST(test_full_queue_is_eagain_not_a_drop)
{
    rig_t r;
    rig_start(&r, true, false);
    void *dealer = s_client(&r, ZMQ_DEALER, r.router_connect, "slow", 4);
    int one = 1;
    zmq_setsockopt(dealer, ZMQ_RCVHWM, &one, sizeof one);
    ASSERT_EQ(zmq_send(dealer, "x", 1, 0), 1);
    uint8_t token[FP_INPUT_TOKEN_MAX];
    zmq_msg_t payload;
    zmq_msg_init(&payload);
    fp_input_frame_t f = {.token = token, .payload = &payload};
    ASSERT_EQ(s_read(&r, 0, &f), 1);
    zmq_msg_close(&payload);
    uint64_t sent = 0;
    int rc = 0;
    for (uint64_t i = 1; i <= 2000000 && rc == 0; i++) {
        fp_verdict_t v = {.source_id = 42, .epoch = 1, .acked_seq = i, .batch_last_seq = i};
        rc = fp_input_zmq.cb_ack(r.in, &v, token, f.toklen);
        sent += rc == 0;
    }
    ASSERT_EQ(rc, -EAGAIN);
    fprintf(stderr, "sent %" PRIu64 " before -EAGAIN\n", sent);
    ASSERT(sent >= 16 * (uint64_t)r.cfg.ingest_hwm); /* the SNDHWM, at least */
    /* now read them all: exactly the acks that were taken, in order */
    for (uint64_t i = 1; i <= sent; i++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        s_recv_timeout(dealer, &m, 5000);
        fp_ack_t a;
        ASSERT_EQ(fp_codec_ack_decode(zmq_msg_data(&m), zmq_msg_size(&m), &a), FP_CODEC_OK);
        ASSERT_EQ(a.acked_seq, i);
        zmq_msg_close(&m);
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    ASSERT_EQ(zmq_msg_recv(&m, dealer, ZMQ_DONTWAIT), -1);
    zmq_msg_close(&m);
    /* with room again, the ack goes */
    fp_verdict_t v = {.source_id = 42, .epoch = 1, .acked_seq = sent + 1};
    ASSERT_EQ(fp_input_zmq.cb_ack(r.in, &v, token, f.toklen), 0);
    zmq_close(dealer);
    rig_stop(&r);
}

/* The longest routing id ZeroMQ allows (255 bytes) fits a token. */
TEST(test_long_token)
{
    rig_t r;
    rig_start(&r, true, false);
    char id[255];
    for (size_t i = 0; i < sizeof id; i++)
        id[i] = (char)('a' + i % 26);
    void *dealer = s_client(&r, ZMQ_DEALER, r.router_connect, id, sizeof id);
    ASSERT_EQ(zmq_send(dealer, "x", 1, 0), 1);
    uint8_t token[FP_INPUT_TOKEN_MAX];
    zmq_msg_t payload;
    zmq_msg_init(&payload);
    fp_input_frame_t f = {.token = token, .payload = &payload};
    ASSERT_EQ(s_read(&r, 0, &f), 1);
    ASSERT_EQ(f.toklen, sizeof id);
    ASSERT(memcmp(token, id, sizeof id) == 0);
    zmq_msg_close(&payload);
    fp_verdict_t v = {.source_id = 9, .status = FP_VERDICT_REJECTED, .reason = FP_DL_malformed};
    ASSERT_EQ(fp_input_zmq.cb_ack(r.in, &v, token, f.toklen), 0);
    zmq_msg_t m;
    zmq_msg_init(&m);
    s_recv_timeout(dealer, &m, 5000);
    fp_ack_t a;
    ASSERT_EQ(fp_codec_ack_decode(zmq_msg_data(&m), zmq_msg_size(&m), &a), FP_CODEC_OK);
    ASSERT_EQ(a.source_id, 9);
    ASSERT_STREQ(a.reason, "malformed");
    zmq_msg_close(&m);
    zmq_close(dealer);
    rig_stop(&r);
}

TEST(test_pull_has_no_token)
{
    rig_t r;
    rig_start(&r, false, true);
    zmq_pollitem_t items[FP_INPUT_POLL_MAX];
    ASSERT_EQ(fp_input_zmq.cb_poll(r.in, items, FP_INPUT_POLL_MAX), 1);
    void *push = s_client(&r, ZMQ_PUSH, r.pull_connect, NULL, 0);
    fp_codec_t *codec = fp_codec_new();
    const void *buf;
    size_t len;
    s_batch(codec, &buf, &len);
    ASSERT_EQ(zmq_send(push, buf, len, 0), (int)len);
    uint8_t token[FP_INPUT_TOKEN_MAX];
    zmq_msg_t payload;
    zmq_msg_init(&payload);
    fp_input_frame_t f = {.token = token, .toklen = 99, .payload = &payload};
    ASSERT_EQ(s_read(&r, 0, &f), 1);
    ASSERT_EQ(f.toklen, 0);
    ASSERT_EQ(f.format, FP_FORMAT_FB_BATCH);
    ASSERT_EQ(f.source_id, 42);
    ASSERT_EQ(zmq_msg_size(&payload), len);
    ASSERT(memcmp(zmq_msg_data(&payload), buf, len) == 0);
    zmq_msg_close(&payload);
    /* No ROUTER: no way to acknowledge anything. */
    fp_verdict_t v = {.source_id = 42};
    ASSERT(fp_input_zmq.cb_ack(r.in, &v, "x", 1) < 0);
    /* Drain closes the fire-and-forget socket: nothing left to poll. */
    fp_input_zmq.cb_drain(r.in);
    ASSERT_EQ(fp_input_zmq.cb_poll(r.in, items, FP_INPUT_POLL_MAX), 0);
    fp_codec_destroy(&codec);
    zmq_close(push);
    rig_stop(&r);
}

/* Today's behaviour, kept: bytes that are one frame are yielded as they are
   (the worker decodes and dead-letters them); a message of more than one
   payload frame is refused here, counted and dead-lettered "bad_envelope". */
TEST(test_malformed)
{
    rig_t r;
    rig_start(&r, true, true);
    void *dealer = s_client(&r, ZMQ_DEALER, r.router_connect, "gw-2", 4);
    ASSERT_EQ(zmq_send(dealer, "not a batch", 11, 0), 11);
    uint8_t token[FP_INPUT_TOKEN_MAX];
    zmq_msg_t payload;
    zmq_msg_init(&payload);
    fp_input_frame_t f = {.token = token, .payload = &payload};
    ASSERT_EQ(s_read(&r, 0, &f), 1);
    ASSERT_EQ(f.source_id, 0); /* unreadable: routed to the worker of source 0 */
    ASSERT_EQ(f.toklen, 4);
    ASSERT_EQ(zmq_msg_size(&payload), 11);
    ASSERT(memcmp(zmq_msg_data(&payload), "not a batch", 11) == 0);
    zmq_msg_close(&payload);

    ASSERT_EQ(zmq_send(dealer, "part1", 5, ZMQ_SNDMORE), 5);
    ASSERT_EQ(zmq_send(dealer, "part2", 5, 0), 5);
    ASSERT_EQ(zmq_send(dealer, "after", 5, 0), 5);
    zmq_msg_init(&payload);
    ASSERT_EQ(s_read(&r, 0, &f), 0);
    ASSERT_EQ(zmq_msg_size(&payload), 0);
    zmq_msg_close(&payload);
    ASSERT_EQ(fp_metrics_get(r.metrics, FP_M_FRAMES_IN), 2);
    /* [hdr][topic][json][first frame's bytes] from sender slot 0 */
    zmq_msg_t m;
    zmq_msg_init(&m);
    fp_emit_hdr_t h;
    memcpy(&h, s_recv_timeout(r.dl_in, &m, 5000), sizeof h);
    ASSERT_EQ(h.type, FP_EMIT_DEAD);
    ASSERT_EQ(h.from, 0);
    zmq_msg_close(&m);
    zmq_msg_init(&m);
    zmq_msg_recv(&m, r.dl_in, 0);
    ASSERT_EQ(zmq_msg_size(&m), strlen("deadletter/bad_envelope"));
    ASSERT(memcmp(zmq_msg_data(&m), "deadletter/bad_envelope", zmq_msg_size(&m)) == 0);
    zmq_msg_close(&m);
    zmq_msg_init(&m);
    zmq_msg_recv(&m, r.dl_in, 0);
    ASSERT(memmem(zmq_msg_data(&m), zmq_msg_size(&m), "\"component\":\"ingest\"", 20));
    ASSERT(memmem(zmq_msg_data(&m), zmq_msg_size(&m), "more than one payload frame", 27));
    zmq_msg_close(&m);
    zmq_msg_init(&m);
    zmq_msg_recv(&m, r.dl_in, 0);
    ASSERT(zmq_msg_more(&m));
    ASSERT_EQ(zmq_msg_size(&m), 5);
    ASSERT(memcmp(zmq_msg_data(&m), "part1", 5) == 0);
    zmq_msg_close(&m);
    /* The same fields in logfmt, for emit's log line only. */
    zmq_msg_init(&m);
    zmq_msg_recv(&m, r.dl_in, 0);
    ASSERT(!zmq_msg_more(&m));
    ASSERT(memmem(zmq_msg_data(&m), zmq_msg_size(&m), "from=\"ingest\"", 13));
    ASSERT(memmem(zmq_msg_data(&m), zmq_msg_size(&m), "bytes=", 6));
    zmq_msg_close(&m);
    /* The rest of the refused message was dropped: the next one is intact. */
    zmq_msg_init(&payload);
    ASSERT_EQ(s_read(&r, 0, &f), 1);
    ASSERT_EQ(zmq_msg_size(&payload), 5);
    ASSERT(memcmp(zmq_msg_data(&payload), "after", 5) == 0);
    zmq_msg_close(&payload);
    zmq_close(dealer);
    rig_stop(&r);
}

/* A frame over max_frame_bytes is refused by libzmq at its length header:
   nothing is yielded and the connection is dropped (ZMQ_MAXMSGSIZE). */
TEST(test_oversized_never_yielded)
{
    rig_t r;
    rig_start(&r, true, false);
    void *dealer = s_client(&r, ZMQ_DEALER, r.router_connect, "gw-3", 4);
    size_t big = r.cfg.max_frame_bytes + 1;
    char *b = calloc(1, big);
    ASSERT(b);
    ASSERT_EQ(zmq_send(dealer, b, big, 0), (int)big);
    zmq_pollitem_t items[FP_INPUT_POLL_MAX];
    ASSERT_EQ(fp_input_zmq.cb_poll(r.in, items, FP_INPUT_POLL_MAX), 1);
    ASSERT_EQ(zmq_poll(items, 1, 300), 0);
    ASSERT_EQ(fp_metrics_get(r.metrics, FP_M_FRAMES_IN), 0);
    free(b);
    zmq_close(dealer);
    rig_stop(&r);
}

/* The frame meta and the verdict message carry the token in place: their
   sizes on the inproc pipes are the header plus the token's bytes. */
TEST(test_pipe_messages)
{
    ASSERT_EQ(offsetof(fp_frame_meta_t, token), 24);
    ASSERT(sizeof(((fp_frame_meta_t *)0)->token) == FP_INPUT_TOKEN_MAX);
    ASSERT(sizeof(((fp_verdict_msg_t *)0)->token) == FP_INPUT_TOKEN_MAX);
    ASSERT_EQ(offsetof(fp_verdict_msg_t, verdict) % 8, 0);
}

/* The worker names a decoder's failure with the dead-letter reason whose
   name is the codec's string for it: the Ack's reason and the dead-letter
   topic stay what they were. */
TEST(test_reason_names)
{
    static const struct {
        fp_dl_reason_t r;
        int codec;
    } same[] = {
        {FP_DL_truncated, FP_CODEC_TOO_SHORT},
        {FP_DL_oversized, FP_CODEC_OVERSIZED},
        {FP_DL_wrong_identifier, FP_CODEC_WRONG_ID},
        {FP_DL_malformed, FP_CODEC_VERIFY},
        {FP_DL_missing_field, FP_CODEC_MISSING},
        {FP_DL_unsupported_version, FP_CODEC_VERSION},
        {FP_DL_too_many_strings, FP_CODEC_TOO_MANY_STRINGS},
        {FP_DL_no_memory, FP_CODEC_NOMEM},
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        ASSERT_STREQ(fp_dl_reason_name(same[i].r), fp_codec_strerror(same[i].codec));
    ASSERT_STREQ(fp_dl_reason_name(FP_DL_stale_epoch), "stale_epoch");
    ASSERT_STREQ(fp_dl_reason_name(FP_DL_too_many_sources), "too_many_sources");
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_not_configured_and_bad_endpoint);
    RUN(test_router_frame_and_ack);
    RUN(test_full_queue_is_eagain_not_a_drop);
    RUN(test_long_token);
    RUN(test_pull_has_no_token);
    RUN(test_malformed);
    RUN(test_oversized_never_yielded);
    RUN(test_pipe_messages);
    RUN(test_reason_names);
    return test_done();
}
