/*  test_producer.c - the producer over real ZeroMQ sockets: what arrives at
    a PULL and a ROUTER decodes to the records sent, batches split on size
    and on (source_id, epoch), Acks are counted, waits time out. The
    acknowledged producer against a fake ROUTER: Acks release the buffer by
    watermark, a missing Ack means a resend after resend_ms, a ROUTER that
    goes away and comes back gets everything unacked again, a full buffer
    blocks or returns -EAGAIN, status 1 releases and counts, the spill keeps
    order, the epoch file grows and refuses garbage. */
#include "producer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>
#include <zmq.h>

#include "codec.h"
#include "demo.h"
#include "test.h"

#define MAX_FRAME (16u << 20)

/* Binds a socket of `type` on an ephemeral loopback port; endpoint out. */
static void *s_bind(void *ctx, int type, char *endpoint, size_t cap)
{
    void *s = zmq_socket(ctx, type);
    ASSERT(s);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    ASSERT_EQ(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, endpoint, &cap), 0);
    return s;
}

/* A loopback port nobody listens on (closed at once, synchronously, unlike
   a zmq socket whose close completes later on the reaper thread). */
static void s_free_port(char *endpoint, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    snprintf(endpoint, cap, "tcp://127.0.0.1:%u", ntohs(a.sin_port));
}

/* Receives one frame within 5 s into an 8-byte aligned heap buffer. */
static void *s_recv_frame(void *sock, size_t *len)
{
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    ASSERT_EQ(zmq_poll(&it, 1, 5000), 1);
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    ASSERT(zmq_msg_recv(&msg, sock, 0) >= 0);
    *len = zmq_msg_size(&msg);
    void *buf = aligned_alloc(8, (*len + 7) / 8 * 8 + 8);
    ASSERT(buf);
    memcpy(buf, zmq_msg_data(&msg), *len);
    zmq_msg_close(&msg);
    return buf;
}

static int s_pending(void *sock, int timeout_ms)
{
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    return zmq_poll(&it, 1, timeout_ms);
}

/* The i-th test record: every kind, absent strings, negative quantities. */
static void s_make_rec(fp_rec_in_t *r, uint64_t seq)
{
    static const char *materials[] = {"RM-STEEL-2MM", "RM-PAINT-RAL9005", "PK-BOX-40"};
    memset(r, 0, sizeof(*r));
    r->seq = seq;
    r->time_ns = 1763900000123456789 + (int64_t)seq;
    r->kind = (uint8_t)(1 + seq % 5);
    r->quantity = seq % 7 == 0 ? -(int64_t)seq : (int64_t)seq * 125;
    r->str[FP_STR_PLANT] = "1000";
    r->str[FP_STR_LINE] = "L01";
    r->str[FP_STR_STATION] = seq % 2 ? "L01-ST01" : "";
    r->str[FP_STR_ORDER] = "000100012345";
    r->str[FP_STR_OPERATION] = "0010";
    if (r->kind == FP_KIND_MATERIAL) {
        r->str[FP_STR_MATERIAL] = materials[seq % 3];
        r->str[FP_STR_LOT] = "LOT-2611-0042";
        r->str[FP_STR_UNIT] = "KG";
    }
    if (r->kind == FP_KIND_SCRAP)
        r->str[FP_STR_REASON] = "SCR-DIM";
}

static const char *s_str(const fp_batch_view_t *v, uint16_t idx)
{
    if (idx == 0)
        return "";
    ASSERT(idx <= v->nstrings);
    uint32_t len;
    const char *s = fp_codec_batch_string(v, idx, &len);
    ASSERT_EQ(strlen(s), len);
    return s;
}

/* Parses a batch frame and checks it holds records first_seq.. of s_make_rec,
   n of them, for (src, epoch); every string exactly once in the table. */
static void s_check_batch(const void *buf, size_t len, uint64_t src, uint64_t epoch,
                          uint64_t first_seq, uint32_t n)
{
    fp_batch_view_t v;
    ASSERT_EQ(fp_codec_batch_parse(buf, len, MAX_FRAME, &v), FP_CODEC_OK);
    ASSERT_EQ(v.source_id, src);
    ASSERT_EQ(v.epoch, epoch);
    ASSERT_EQ(v.nrecords, n);
    for (uint32_t a = 1; a <= v.nstrings; a++)
        for (uint32_t b = a + 1; b <= v.nstrings; b++)
            ASSERT(strcmp(s_str(&v, (uint16_t)a), s_str(&v, (uint16_t)b)) != 0);
    for (uint32_t i = 0; i < n; i++) {
        fp_rec_in_t want;
        s_make_rec(&want, first_seq + i);
        const fp_record_t *r = &v.records[i];
        ASSERT_EQ(r->seq, want.seq);
        ASSERT_EQ(r->time_ns, want.time_ns);
        ASSERT_EQ(r->quantity, want.quantity);
        ASSERT_EQ(r->kind, want.kind);
        ASSERT_EQ(r->reserved0, 0);
        ASSERT_EQ(r->reserved1, 0);
        for (int f = 0; f < FP_STR_FIELDS; f++) {
            const char *w = want.str[f] ? want.str[f] : "";
            ASSERT_EQ(r->str[f] == 0, *w == 0);
            ASSERT_STREQ(s_str(&v, r->str[f]), w);
        }
    }
}

TEST(test_push_batching)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *pull = s_bind(ctx, ZMQ_PULL, ep, sizeof(ep));
    producer_t *p = producer_new(ctx, ep, PRODUCER_PUSH, 4);
    ASSERT(p);
    fp_rec_in_t r;
    /* Source 7 epoch 1: seqs 1..10 -> batches of 4, 4 (sent when full). */
    for (uint64_t s = 1; s <= 10; s++) {
        s_make_rec(&r, s);
        ASSERT_EQ(producer_add(p, 7, 1, &r), 0);
    }
    ASSERT_EQ(producer_stats(p)->batches_sent, 2);
    ASSERT_EQ(producer_stats(p)->records_sent, 8);
    /* A new epoch closes the open batch (seqs 9, 10); so does a new source. */
    s_make_rec(&r, 1);
    ASSERT_EQ(producer_add(p, 7, 2, &r), 0);
    ASSERT_EQ(producer_stats(p)->batches_sent, 3);
    s_make_rec(&r, 100);
    ASSERT_EQ(producer_add(p, 8, 2, &r), 0);
    ASSERT_EQ(producer_stats(p)->batches_sent, 4);
    ASSERT_EQ(producer_flush(p), 0);
    ASSERT_EQ(producer_flush(p), 0); /* nothing open: no empty batch */
    ASSERT_EQ(producer_stats(p)->batches_sent, 5);
    ASSERT_EQ(producer_stats(p)->records_sent, 12);
    /* source_id 0 is never valid. */
    ASSERT_EQ(producer_add(p, 0, 1, &r), -EINVAL);
    ASSERT_EQ(producer_wait_acks(p, 10), 0); /* PUSH: nothing to wait for */

    struct {
        uint64_t src, epoch, first;
        uint32_t n;
    } want[] = {{7, 1, 1, 4}, {7, 1, 5, 4}, {7, 1, 9, 2}, {7, 2, 1, 1}, {8, 2, 100, 1}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        size_t len;
        void *buf = s_recv_frame(pull, &len);
        s_check_batch(buf, len, want[i].src, want[i].epoch, want[i].first, want[i].n);
        free(buf);
    }
    ASSERT_EQ(s_pending(pull, 50), 0);

    /* A raw frame arrives as is. */
    ASSERT_EQ(producer_send_raw(p, "not a batch", 11), 0);
    size_t len;
    char *raw = s_recv_frame(pull, &len);
    ASSERT_EQ(len, 11);
    ASSERT(memcmp(raw, "not a batch", 11) == 0);
    free(raw);
    ASSERT_EQ(producer_stats(p)->batches_sent, 6);
    ASSERT_EQ(producer_stats(p)->records_sent, 12);

    producer_destroy(&p);
    ASSERT(p == NULL);
    producer_destroy(&p);
    zmq_close(pull);
    zmq_ctx_term(ctx);
}

TEST(test_big_batch_and_strings)
{
    /* 1000 records with distinct long strings in one batch. */
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *pull = s_bind(ctx, ZMQ_PULL, ep, sizeof(ep));
    producer_t *p = producer_new(ctx, ep, PRODUCER_PUSH, 1000);
    ASSERT(p);
    char lot[1000][32];
    for (int i = 0; i < 1000; i++) {
        fp_rec_in_t r = {.seq = (uint64_t)i + 1, .kind = FP_KIND_MATERIAL, .quantity = 1};
        snprintf(lot[i], sizeof(lot[i]), "LOT-2611-%04d", i);
        r.str[FP_STR_LOT] = lot[i];
        r.str[FP_STR_UNIT] = "KG";
        ASSERT_EQ(producer_add(p, 42, 9, &r), 0);
    }
    ASSERT_EQ(producer_stats(p)->batches_sent, 1);
    size_t len;
    void *buf = s_recv_frame(pull, &len);
    fp_batch_view_t v;
    ASSERT_EQ(fp_codec_batch_parse(buf, len, MAX_FRAME, &v), FP_CODEC_OK);
    ASSERT_EQ(v.nrecords, 1000);
    ASSERT_EQ(v.nstrings, 1001);
    for (int i = 0; i < 1000; i++) {
        ASSERT_STREQ(s_str(&v, v.records[i].str[FP_STR_LOT]), lot[i]);
        ASSERT_STREQ(s_str(&v, v.records[i].str[FP_STR_UNIT]), "KG");
    }
    free(buf);
    producer_destroy(&p);
    zmq_close(pull);
    zmq_ctx_term(ctx);
}

/* Waits up to timeout_ms for something to read at sock, servicing the
   producer meanwhile: an ACKED producer sends only inside its calls. */
static int s_pending_pumped(void *sock, producer_t *p, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 5) {
        ASSERT_EQ(producer_poll(p, 0), 0);
        if (s_pending(sock, 5) == 1)
            return 1;
    }
    return 0;
}

/* Receives one batch at the ROUTER and answers it with an Ack. */
static void s_router_ack(void *router, producer_t *p, fp_codec_t *codec, int status,
                         uint64_t *last_seq)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    ASSERT_EQ(s_pending_pumped(router, p, 5000), 1);
    ASSERT(zmq_msg_recv(&id, router, 0) >= 0);
    ASSERT(zmq_msg_more(&id));
    size_t len;
    void *buf = s_recv_frame(router, &len);
    fp_batch_view_t v;
    ASSERT_EQ(fp_codec_batch_parse(buf, len, MAX_FRAME, &v), FP_CODEC_OK);
    uint64_t batch_last = v.records[v.nrecords - 1].seq;
    *last_seq = batch_last;
    const void *out;
    size_t out_len;
    fp_ack_t a = {.source_id = v.source_id, .epoch = v.epoch, .acked_seq = status ? 0 : batch_last,
                  .batch_first_seq = v.records[0].seq, .batch_last_seq = batch_last,
                  .batch_records = v.nrecords, .status = status};
    if (status)
        snprintf(a.reason, sizeof a.reason, "malformed");
    ASSERT_EQ(fp_codec_ack_encode(codec, &a, &out, &out_len), FP_CODEC_OK);
    ASSERT(zmq_msg_send(&id, router, ZMQ_SNDMORE) >= 0);
    ASSERT_EQ(zmq_send(router, out, out_len, 0), (int)out_len);
    free(buf);
}

TEST(test_acked)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    ASSERT(codec);
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 3);
    ASSERT(p);
    fp_rec_in_t r;
    for (uint64_t s = 1; s <= 7; s++) {
        s_make_rec(&r, s);
        ASSERT_EQ(producer_add(p, 5, 3, &r), 0);
    }
    ASSERT_EQ(producer_flush(p), 0);
    ASSERT_EQ(producer_stats(p)->batches_sent, 3);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 3);
    ASSERT(producer_stats(p)->buffered_bytes > 3 * 48);
    /* Nobody answered yet. */
    ASSERT_EQ(producer_wait_acks(p, 0), -ETIMEDOUT);
    uint64_t last;
    s_router_ack(router, p, codec, 0, &last);
    ASSERT_EQ(last, 3);
    s_router_ack(router, p, codec, 0, &last);
    ASSERT_EQ(last, 6);
    /* Two of three acked: still waiting, and the wait ends on time. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_EQ(producer_wait_acks(p, 200), -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    ASSERT(ms >= 190 && ms < 2000);
    ASSERT_EQ(producer_stats(p)->acks, 2);
    ASSERT_EQ(producer_stats(p)->rejected_batches, 0);
    ASSERT_EQ(producer_stats(p)->last_acked_seq, 6);
    ASSERT_STREQ(producer_last_reject(p), "");
    /* The third batch is rejected. */
    s_router_ack(router, p, codec, 1, &last);
    ASSERT_EQ(last, 7);
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    const producer_stats_t *st = producer_stats(p);
    ASSERT_EQ(st->acked_batches, 2);
    ASSERT_EQ(st->buffered_batches, 0);
    ASSERT_EQ(st->buffered_bytes, 0);
    ASSERT_EQ(st->batches_sent, 3);
    ASSERT_EQ(st->records_sent, 7);
    ASSERT_EQ(st->acks, 3);
    ASSERT_EQ(st->rejected_batches, 1);
    ASSERT_EQ(st->last_acked_seq, 6);
    ASSERT_STREQ(producer_last_reject(p), "malformed");

    /* A raw frame expects its Ack too; a garbage reply acknowledges nothing. */
    ASSERT_EQ(producer_send_raw(p, "junk", 4), 0);
    zmq_msg_t id;
    zmq_msg_init(&id);
    ASSERT_EQ(s_pending_pumped(router, p, 5000), 1);
    ASSERT(zmq_msg_recv(&id, router, 0) >= 0);
    size_t len;
    free(s_recv_frame(router, &len));
    ASSERT_EQ(len, 4);
    ASSERT(zmq_msg_send(&id, router, ZMQ_SNDMORE) >= 0);
    ASSERT_EQ(zmq_send(router, "garbage-ack", 11, 0), 11);
    /* Not a batch: sent once, not kept, so nothing is left to wait for. */
    ASSERT_EQ(producer_wait_acks(p, 100), 0);
    ASSERT_EQ(producer_stats(p)->acks, 3);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 0);

    producer_destroy(&p);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

TEST(test_wait_acks_nobody)
{
    /* Connected to an endpoint nobody serves: the wait times out. */
    void *ctx = zmq_ctx_new();
    producer_t *p = producer_new(ctx, "tcp://127.0.0.1:1", PRODUCER_ACKED, 16);
    ASSERT(p);
    fp_rec_in_t r;
    s_make_rec(&r, 1);
    ASSERT_EQ(producer_add(p, 1, 1, &r), 0);
    ASSERT_EQ(producer_wait_acks(p, 50), 0); /* nothing sent yet */
    ASSERT_EQ(producer_flush(p), 0);         /* DEALER queues it */
    ASSERT_EQ(producer_wait_acks(p, 100), -ETIMEDOUT);
    producer_destroy(&p);
    zmq_ctx_term(ctx); /* linger bounds this at 2 s */
}

TEST(test_send_timeout_keeps_batch)
{
    /* PUSH with IMMEDIATE: no peer yet, so a send times out and the batch
       stays; once a peer binds, the same records go out intact. */
    void *ctx = zmq_ctx_new();
    char ep[256];
    s_free_port(ep, sizeof(ep));
    producer_t *p = producer_new(ctx, ep, PRODUCER_PUSH, 2);
    ASSERT(p);
    ASSERT_EQ(producer_set_send_timeout(p, 50), 0);
    fp_rec_in_t r;
    s_make_rec(&r, 1);
    ASSERT_EQ(producer_add(p, 3, 1, &r), 0);
    s_make_rec(&r, 2);
    ASSERT_EQ(producer_add(p, 3, 1, &r), -EAGAIN); /* full, send timed out: not taken */
    ASSERT_EQ(producer_flush(p), -EAGAIN);
    ASSERT_EQ(producer_stats(p)->batches_sent, 0);

    void *pull = zmq_socket(ctx, ZMQ_PULL);
    int rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) { /* the port may take a moment to free */
        rc = zmq_bind(pull, ep);
        if (rc != 0)
            nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    }
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(producer_set_send_timeout(p, 5000), 0);
    ASSERT_EQ(producer_add(p, 3, 1, &r), 0); /* the repeat goes through */
    ASSERT_EQ(producer_stats(p)->batches_sent, 1);
    size_t len;
    void *buf = s_recv_frame(pull, &len);
    s_check_batch(buf, len, 3, 1, 1, 2);
    free(buf);
    producer_destroy(&p);
    zmq_close(pull);
    zmq_ctx_term(ctx);
}

TEST(test_bad_args)
{
    void *ctx = zmq_ctx_new();
    ASSERT(producer_new(ctx, "tcp://127.0.0.1:5555", 3, 16) == NULL);
    ASSERT(producer_new(ctx, "tcp://127.0.0.1:5555", PRODUCER_PUSH, 0) == NULL);
    ASSERT(producer_new(ctx, "no-such-transport://x", PRODUCER_PUSH, 16) == NULL);
    ASSERT(producer_new(NULL, "tcp://127.0.0.1:5555", PRODUCER_PUSH, 16) == NULL);
    zmq_ctx_term(ctx);
}

static int64_t s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

TEST(test_demo_plant)
{
    /* The demo thread sends its paced plant to a ROUTER; we ack every batch
       and check sources, contiguous seqs, the rate and a prompt stop. */
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    ASSERT(codec);
    ASSERT(demo_start(ctx, ep, 0, 2) == NULL);
    ASSERT(demo_start(ctx, ep, 2000, 0) == NULL);
    ASSERT(demo_start(ctx, "bogus://endpoint", 2000, 2) == NULL);
    demo_t *d = demo_start(ctx, ep, 2000, 2);
    ASSERT(d);
    uint64_t next_seq[3] = {0, 1, 1}, epoch = 0, records = 0, kinds = 0;
    int64_t t0 = s_mono_ms();
    while (s_mono_ms() - t0 < 1000) {
        if (s_pending(router, 100) != 1)
            continue;
        zmq_msg_t id;
        zmq_msg_init(&id);
        ASSERT(zmq_msg_recv(&id, router, 0) >= 0);
        size_t len;
        void *buf = s_recv_frame(router, &len);
        fp_batch_view_t v;
        ASSERT_EQ(fp_codec_batch_parse(buf, len, MAX_FRAME, &v), FP_CODEC_OK);
        ASSERT(v.source_id == 1 || v.source_id == 2);
        ASSERT(v.epoch > 1700000000); /* start time in seconds */
        ASSERT(epoch == 0 || epoch == v.epoch);
        epoch = v.epoch;
        for (uint32_t i = 0; i < v.nrecords; i++) {
            ASSERT_EQ(v.records[i].seq, next_seq[v.source_id]);
            next_seq[v.source_id]++;
            kinds |= 1u << v.records[i].kind;
        }
        records += v.nrecords;
        uint64_t last = v.records[v.nrecords - 1].seq;
        const void *out;
        size_t out_len;
        fp_ack_t a = {.source_id = v.source_id, .epoch = v.epoch, .acked_seq = last,
                      .batch_last_seq = last};
        ASSERT_EQ(fp_codec_ack_encode(codec, &a, &out, &out_len), 0);
        ASSERT(zmq_msg_send(&id, router, ZMQ_SNDMORE) >= 0);
        ASSERT_EQ(zmq_send(router, out, out_len, 0), (int)out_len);
        free(buf);
    }
    /* ~2000 records in 1 s (first tick at once, scheduling slack). */
    ASSERT(records >= 1500 && records <= 2300);
    ASSERT(demo_records(d) >= records);
    ASSERT(kinds & (1u << FP_KIND_OP_STARTED));
    ASSERT(kinds & (1u << FP_KIND_PART_COUNT));
    int64_t t1 = s_mono_ms();
    demo_stop(&d);
    ASSERT(d == NULL);
    ASSERT(s_mono_ms() - t1 < 1000);
    demo_stop(&d);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* ---- the acknowledged producer: buffer, resends, back-pressure, spill ---- */

typedef struct {
    zmq_msg_t id;
    uint64_t src, epoch, first, last;
    uint32_t n;
} got_t;

/* Services the producer (may be NULL) while waiting up to timeout_ms for
   one batch at the ROUTER. 1 and *g filled (g->id to be closed or used for
   the ack), or 0 on timeout. */
static int s_recv_batch(void *router, producer_t *p, int timeout_ms, got_t *g)
{
    int64_t t0 = s_mono_ms();
    while (s_mono_ms() - t0 < timeout_ms) {
        if (p)
            ASSERT_EQ(producer_poll(p, 5), 0);
        if (s_pending(router, 5) != 1)
            continue;
        zmq_msg_init(&g->id);
        ASSERT(zmq_msg_recv(&g->id, router, 0) >= 0);
        ASSERT(zmq_msg_more(&g->id));
        size_t len;
        void *buf = s_recv_frame(router, &len);
        fp_batch_view_t v;
        ASSERT_EQ(fp_codec_batch_parse(buf, len, MAX_FRAME, &v), FP_CODEC_OK);
        ASSERT(v.nrecords > 0);
        g->src = v.source_id;
        g->epoch = v.epoch;
        g->n = v.nrecords;
        g->first = v.records[0].seq;
        g->last = v.records[v.nrecords - 1].seq;
        free(buf);
        return 1;
    }
    return 0;
}

/* Answers a received batch: status 0 with acked_seq, or status 1. */
static void s_ack(void *router, fp_codec_t *codec, got_t *g, uint64_t acked_seq, int status)
{
    const void *out;
    size_t out_len;
    fp_ack_t a = {.source_id = g->src, .epoch = g->epoch, .acked_seq = acked_seq,
                  .batch_last_seq = g->last, .status = status};
    if (status)
        snprintf(a.reason, sizeof a.reason, "stale_epoch");
    ASSERT_EQ(fp_codec_ack_encode(codec, &a, &out, &out_len), FP_CODEC_OK);
    ASSERT(zmq_msg_send(&g->id, router, ZMQ_SNDMORE) >= 0);
    ASSERT_EQ(zmq_send(router, out, out_len, 0), (int)out_len);
}

static void s_drop(got_t *g)
{
    zmq_msg_close(&g->id);
}

/* Adds records first..last of source 9, epoch 1. */
static void s_add_range(producer_t *p, uint64_t first, uint64_t last)
{
    fp_rec_in_t r;
    for (uint64_t s = first; s <= last; s++) {
        s_make_rec(&r, s);
        ASSERT_EQ(producer_add(p, 9, 1, &r), 0);
    }
}

TEST(test_ack_releases_by_watermark)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 2);
    ASSERT(p && codec);
    s_add_range(p, 1, 6); /* batches 1-2, 3-4, 5-6 */
    /* Another source's batch is not touched by source 9's acks. */
    fp_rec_in_t r;
    s_make_rec(&r, 1);
    ASSERT_EQ(producer_add(p, 10, 1, &r), 0);
    ASSERT_EQ(producer_flush(p), 0);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 4);
    got_t g[4];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(s_recv_batch(router, p, 5000, &g[i]), 1);
    ASSERT_EQ(g[2].last, 6);
    ASSERT_EQ(g[3].src, 10);
    /* One Ack with acked_seq 4 (for the second batch) releases batches 1-2
       and 3-4: the watermark covers them. An ack of another epoch nothing. */
    s_ack(router, codec, &g[1], 4, 0);
    got_t other = g[2];
    other.epoch = 2;
    zmq_msg_init(&other.id);
    zmq_msg_copy(&other.id, &g[2].id);
    s_ack(router, codec, &other, 6, 0);
    int64_t t0 = s_mono_ms();
    while (producer_stats(p)->acks < 2 && s_mono_ms() - t0 < 5000)
        ASSERT_EQ(producer_poll(p, 10), 0);
    ASSERT_EQ(producer_stats(p)->acks, 2);
    ASSERT_EQ(producer_stats(p)->acked_batches, 2);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 2);
    ASSERT_EQ(producer_stats(p)->last_acked_seq, 6);
    ASSERT_EQ(producer_wait_acks(p, 50), -ETIMEDOUT);
    s_ack(router, codec, &g[2], 6, 0);
    s_ack(router, codec, &g[3], 1, 0);
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    ASSERT_EQ(producer_stats(p)->acked_batches, 4);
    ASSERT_EQ(producer_stats(p)->buffered_bytes, 0);
    ASSERT_EQ(producer_stats(p)->resends, 0);
    s_drop(&g[0]);
    producer_destroy(&p);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

TEST(test_resend_after_timeout)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 3);
    ASSERT(p && codec);
    ASSERT_EQ(producer_set_resend(p, 0), -EINVAL);
    ASSERT_EQ(producer_set_resend(p, 200), 0);
    s_add_range(p, 1, 3);
    got_t a, b;
    ASSERT_EQ(s_recv_batch(router, p, 5000, &a), 1);
    int64_t t0 = s_mono_ms();
    /* No ack: the same batch comes again after ~resend_ms. */
    ASSERT_EQ(s_recv_batch(router, p, 5000, &b), 1);
    int64_t waited = s_mono_ms() - t0;
    ASSERT(waited >= 150 && waited < 2000);
    ASSERT_EQ(b.src, a.src);
    ASSERT_EQ(b.first, 1);
    ASSERT_EQ(b.last, 3);
    ASSERT_EQ(producer_stats(p)->resends, 1);
    ASSERT_EQ(producer_stats(p)->batches_sent, 1);
    /* Acking the first copy settles it; the resent copy is not sent again. */
    s_ack(router, codec, &a, 3, 0);
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    got_t c;
    ASSERT_EQ(s_recv_batch(router, p, 400, &c), 0);
    ASSERT_EQ(producer_stats(p)->resends, 1);
    s_drop(&b);
    producer_destroy(&p);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* The ROUTER goes away with three batches unacked; two more are added
   while nobody listens; a new ROUTER binds on the same port. Everything
   unacked arrives there, and the first four frames come oldest first.
   resend_ms: long (only the reconnect can explain the resend), or shorter
   than the outage (timeouts expire meanwhile: the resends must still not
   go behind the never-sent batches, or floorpost's dedup window could
   refuse them as too old). */
static void s_outage(int resend_ms)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 2);
    ASSERT(p && codec);
    ASSERT_EQ(producer_set_resend(p, resend_ms), 0);
    s_add_range(p, 1, 6);
    got_t g;
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(s_recv_batch(router, p, 5000, &g), 1);
        ASSERT_EQ(g.last, 2 * (i + 1));
        s_drop(&g);
    }
    zmq_close(router);
    int64_t t0 = s_mono_ms();
    while (s_mono_ms() - t0 < 100)
        ASSERT_EQ(producer_poll(p, 10), 0);
    s_add_range(p, 7, 8);
    while (s_mono_ms() - t0 < 400)
        ASSERT_EQ(producer_poll(p, 10), 0);
    router = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof(linger));
    int rc = -1;
    for (int i = 0; i < 200 && rc != 0; i++) {
        rc = zmq_bind(router, ep);
        if (rc != 0)
            ASSERT_EQ(producer_poll(p, 10), 0);
    }
    ASSERT_EQ(rc, 0);
    uint64_t seen = 0; /* bit per batch by last seq */
    int frames = 0;
    while (seen != ((1u << 2) | (1u << 4) | (1u << 6) | (1u << 8))) {
        ASSERT_EQ(s_recv_batch(router, p, 5000, &g), 1);
        if (frames < 4)
            ASSERT_EQ(g.last, 2 * (frames + 1));
        seen |= 1u << g.last;
        frames++;
        s_ack(router, codec, &g, g.last, 0);
    }
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    ASSERT_EQ(producer_stats(p)->reconnects, 1);
    ASSERT(producer_stats(p)->resends >= 3);
    producer_destroy(&p);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

TEST(test_resend_after_reconnect)
{
    s_outage(60000);
}

TEST(test_order_after_outage)
{
    s_outage(100);
}

typedef struct {
    void *router;
    fp_codec_t *codec;
    int delay_ms;
} acker_t;

/* Owns the ROUTER while it runs: after delay_ms, acks the first batch. */
static void *s_acker(void *arg)
{
    acker_t *a = arg;
    nanosleep(&(struct timespec){.tv_sec = a->delay_ms / 1000,
                                 .tv_nsec = (a->delay_ms % 1000) * 1000000L},
              NULL);
    got_t g;
    ASSERT_EQ(s_recv_batch(a->router, NULL, 5000, &g), 1);
    ASSERT_EQ(g.last, 1);
    s_ack(a->router, a->codec, &g, 1, 0);
    return NULL;
}

TEST(test_backpressure)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 1);
    ASSERT(p && codec);
    ASSERT_EQ(producer_set_buffer(p, 0, 100), -EINVAL);
    ASSERT_EQ(producer_set_buffer(p, 2, 1 << 20), 0);
    ASSERT_EQ(producer_set_send_timeout(p, 100), 0);
    s_add_range(p, 1, 2);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 2);
    /* Full: the third record waits 100 ms, then is refused, not taken. */
    fp_rec_in_t r;
    s_make_rec(&r, 3);
    int64_t t0 = s_mono_ms();
    ASSERT_EQ(producer_add(p, 9, 1, &r), -EAGAIN);
    int64_t waited = s_mono_ms() - t0;
    ASSERT(waited >= 90 && waited < 2000);
    ASSERT_EQ(producer_stats(p)->batches_sent, 2);
    ASSERT_EQ(producer_flush(p), 0); /* nothing open: the record was taken back */
    /* Without a timeout it blocks until an ack frees room. */
    ASSERT_EQ(producer_set_send_timeout(p, -1), 0);
    pthread_t t;
    acker_t a = {.router = router, .codec = codec, .delay_ms = 300};
    ASSERT_EQ(pthread_create(&t, NULL, s_acker, &a), 0);
    t0 = s_mono_ms();
    ASSERT_EQ(producer_add(p, 9, 1, &r), 0);
    waited = s_mono_ms() - t0;
    pthread_join(t, NULL);
    ASSERT(waited >= 250 && waited < 5000);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 2); /* seq 2 and seq 3 */
    ASSERT_EQ(producer_stats(p)->acked_batches, 1);
    /* A byte bound: one batch at a time (a batch is always taken when the
       buffer is empty, even when it is bigger than the bound). */
    ASSERT_EQ(producer_set_buffer(p, 100, 1), 0);
    ASSERT_EQ(producer_set_send_timeout(p, 0), 0);
    s_make_rec(&r, 4);
    ASSERT_EQ(producer_add(p, 9, 1, &r), -EAGAIN);
    producer_destroy(&p);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

TEST(test_rejected_batch)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 2);
    ASSERT(p && codec);
    s_add_range(p, 1, 4);
    got_t a, b;
    ASSERT_EQ(s_recv_batch(router, p, 5000, &a), 1);
    ASSERT_EQ(s_recv_batch(router, p, 5000, &b), 1);
    /* Reject the SECOND batch (status 1, acked_seq 0): only it goes. */
    s_ack(router, codec, &b, 0, 1);
    int64_t t0 = s_mono_ms();
    while (producer_stats(p)->acks < 1 && s_mono_ms() - t0 < 5000)
        ASSERT_EQ(producer_poll(p, 10), 0);
    ASSERT_EQ(producer_stats(p)->rejected_batches, 1);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 1);
    ASSERT_STREQ(producer_last_reject(p), "stale_epoch");
    /* A rejection of a batch we do not hold releases nothing. */
    got_t ghost = a;
    ghost.last = 77;
    zmq_msg_init(&ghost.id);
    zmq_msg_copy(&ghost.id, &a.id);
    s_ack(router, codec, &ghost, 0, 1);
    t0 = s_mono_ms();
    while (producer_stats(p)->acks < 2 && s_mono_ms() - t0 < 5000)
        ASSERT_EQ(producer_poll(p, 10), 0);
    ASSERT_EQ(producer_stats(p)->rejected_batches, 1);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 1);
    s_ack(router, codec, &a, 2, 0);
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    producer_destroy(&p);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* Answers g naming its batch in full (seq range and record count), as
   floorpost does; first/last/n override g's when not 0. */
static void s_ack_named(void *router, fp_codec_t *codec, got_t *g, int status, uint64_t first,
                        uint64_t last, uint32_t n)
{
    const void *out;
    size_t out_len;
    fp_ack_t a = {.source_id = g->src, .epoch = g->epoch, .batch_first_seq = first ? first : g->first,
                  .batch_last_seq = last ? last : g->last, .batch_records = n ? n : g->n,
                  .status = status};
    if (status)
        snprintf(a.reason, sizeof a.reason, "stale_epoch");
    /* accepted: acked_seq 0, as above a gap: the batch is released by name */
    ASSERT_EQ(fp_codec_ack_encode(codec, &a, &out, &out_len), FP_CODEC_OK);
    ASSERT(zmq_msg_send(&g->id, router, ZMQ_SNDMORE) >= 0);
    ASSERT_EQ(zmq_send(router, out, out_len, 0), (int)out_len);
}

typedef struct {
    producer_release_t r[16];
    char reason[16][64];
    int n;
} releases_t;

static void s_on_release(void *ctx, const producer_release_t *r)
{
    releases_t *rs = ctx;
    ASSERT(rs->n < 16);
    rs->r[rs->n] = *r;
    snprintf(rs->reason[rs->n], sizeof rs->reason[0], "%s", r->reason);
    rs->r[rs->n].reason = rs->reason[rs->n];
    rs->n++;
}

static void s_poll_until_acks(producer_t *p, uint64_t acks)
{
    int64_t t0 = s_mono_ms();
    while (producer_stats(p)->acks < acks && s_mono_ms() - t0 < 5000)
        ASSERT_EQ(producer_poll(p, 10), 0);
    ASSERT_EQ(producer_stats(p)->acks, acks);
}

/* Four batches in flight; floorpost refuses the second and the fourth by
   name: exactly those are released (counted, reported), an Ack that names
   no batch we hold releases nothing, and the others are acked as usual. */
TEST(test_refused_batch_named_among_many)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 2);
    ASSERT(p && codec);
    releases_t rs = {.n = 0};
    producer_on_release(p, s_on_release, &rs);
    s_add_range(p, 1, 8);
    got_t g[4];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(s_recv_batch(router, p, 5000, &g[i]), 1);
    ASSERT_EQ(g[1].first, 3);
    s_ack_named(router, codec, &g[3], 1, 0, 0, 0);
    s_ack_named(router, codec, &g[1], 1, 0, 0, 0);
    s_poll_until_acks(p, 2);
    ASSERT_EQ(producer_stats(p)->rejected_batches, 2);
    ASSERT_EQ(producer_stats(p)->rejected_records, 4);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 2);
    ASSERT_EQ(rs.n, 2);
    ASSERT_EQ(rs.r[0].first_seq, 7);
    ASSERT_EQ(rs.r[0].last_seq, 8);
    ASSERT_EQ(rs.r[0].records, 2);
    ASSERT_EQ(rs.r[0].status, 1);
    ASSERT_STREQ(rs.r[0].reason, "stale_epoch");
    ASSERT_EQ(rs.r[1].first_seq, 3);
    /* the same highest seq but another first seq or count: not ours */
    got_t ghost = g[0];
    zmq_msg_init(&ghost.id);
    zmq_msg_copy(&ghost.id, &g[0].id);
    s_ack_named(router, codec, &ghost, 1, 1, 6, 2);
    zmq_msg_init(&ghost.id);
    zmq_msg_copy(&ghost.id, &g[0].id);
    s_ack_named(router, codec, &ghost, 1, 5, 6, 3);
    s_poll_until_acks(p, 4);
    ASSERT_EQ(producer_stats(p)->rejected_batches, 2);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 2);
    /* accepted: each by its own highest seq */
    s_ack_named(router, codec, &g[2], 0, 0, 0, 0);
    s_poll_until_acks(p, 5);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 1);
    s_ack_named(router, codec, &g[0], 0, 0, 0, 0);
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    ASSERT_EQ(producer_stats(p)->acked_batches, 2);
    ASSERT_EQ(producer_stats(p)->acked_records, 4);
    ASSERT_EQ(producer_stats(p)->resends, 0);
    ASSERT_EQ(rs.n, 4);
    ASSERT_EQ(rs.r[2].status, 0);
    ASSERT_STREQ(rs.r[2].reason, "");
    producer_destroy(&p);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* Open batches per source: sources that take turns fill their own
   batches; the oldest open one makes room; an epoch change closes its
   source's batch first; flush closes the rest oldest first. */
TEST(test_open_batches_per_source)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *pull = s_bind(ctx, ZMQ_PULL, ep, sizeof(ep));
    producer_t *p = producer_new(ctx, ep, PRODUCER_PUSH, 3);
    ASSERT(p);
    ASSERT_EQ(producer_set_open_batches(p, 0), -EINVAL);
    ASSERT_EQ(producer_set_open_batches(p, PRODUCER_OPEN_BATCHES_MAX + 1), -EINVAL);
    ASSERT_EQ(producer_set_open_batches(p, 4), 0);
    fp_rec_in_t r;
    const struct {
        uint64_t src, epoch, seq;
    } in[] = {{1, 1, 1}, {2, 1, 1}, {1, 1, 2}, {2, 1, 2}, {1, 1, 3}, /* A full */
              {3, 1, 1}, {4, 1, 1}, {5, 1, 1}, {6, 1, 1},             /* B makes room */
              {3, 2, 1}};                                           /* C: a new epoch */
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        s_make_rec(&r, in[i].seq);
        ASSERT_EQ(producer_add(p, in[i].src, in[i].epoch, &r), 0);
        if (i == 4)
            ASSERT_EQ(producer_set_open_batches(p, 2), -EBUSY);
    }
    ASSERT_EQ(producer_stats(p)->batches_sent, 3);
    ASSERT_EQ(producer_flush(p), 0);
    struct {
        uint64_t src, epoch, first;
        uint32_t n;
    } want[] = {{1, 1, 1, 3}, {2, 1, 1, 2}, {3, 1, 1, 1}, {4, 1, 1, 1},
                {5, 1, 1, 1}, {6, 1, 1, 1}, {3, 2, 1, 1}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        size_t len;
        void *buf = s_recv_frame(pull, &len);
        s_check_batch(buf, len, want[i].src, want[i].epoch, want[i].first, want[i].n);
        free(buf);
    }
    ASSERT_EQ(s_pending(pull, 50), 0);
    ASSERT_EQ(producer_stats(p)->records_sent, 10);
    producer_destroy(&p);
    zmq_close(pull);
    zmq_ctx_term(ctx);
}

/* A batch open flush_ms goes out by time: producer_poll wakes up for it,
   and producer_add closes a due one of another source. */
TEST(test_flush_by_time)
{
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 100);
    ASSERT(p);
    ASSERT_EQ(producer_set_flush_ms(p, -1), -EINVAL);
    ASSERT_EQ(producer_set_flush_ms(p, 150), 0);
    ASSERT_EQ(producer_set_open_batches(p, 8), 0);
    fp_rec_in_t r;
    s_make_rec(&r, 1);
    int64_t t0 = s_mono_ms();
    ASSERT_EQ(producer_add(p, 9, 1, &r), 0);
    ASSERT_EQ(producer_poll(p, 0), 0);
    ASSERT_EQ(producer_stats(p)->batches_sent, 0);
    /* polls with a long timeout wake up when the batch is due, and send it */
    while (producer_stats(p)->batches_sent == 0 && s_mono_ms() - t0 < 5000)
        ASSERT_EQ(producer_poll(p, 5000), 0);
    int64_t took = s_mono_ms() - t0;
    ASSERT_EQ(producer_stats(p)->batches_sent, 1);
    ASSERT(took >= 140 && took < 1000);
    got_t g;
    ASSERT_EQ(s_recv_batch(router, NULL, 2000, &g), 1);
    ASSERT_EQ(g.n, 1);
    s_drop(&g);
    /* source 10 opens at once, source 11 later: adding to 11 after 10 is due sends 10 */
    s_make_rec(&r, 1);
    ASSERT_EQ(producer_add(p, 10, 1, &r), 0);
    usleep(200 * 1000);
    ASSERT_EQ(producer_add(p, 11, 1, &r), 0);
    ASSERT_EQ(producer_stats(p)->batches_sent, 2);
    ASSERT_EQ(s_recv_batch(router, NULL, 2000, &g), 1);
    ASSERT_EQ(g.src, 10);
    s_drop(&g);
    ASSERT_EQ(producer_flush(p), 0);
    ASSERT_EQ(producer_stats(p)->batches_sent, 3);
    producer_destroy(&p);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

TEST(test_spill)
{
    char dir[] = "/tmp/fp-spill-XXXXXX";
    ASSERT(mkdtemp(dir));
    void *ctx = zmq_ctx_new();
    char ep[256];
    void *router = s_bind(ctx, ZMQ_ROUTER, ep, sizeof(ep));
    fp_codec_t *codec = fp_codec_new();
    producer_t *p = producer_new(ctx, ep, PRODUCER_ACKED, 1);
    ASSERT(p && codec);
    ASSERT_EQ(producer_set_spill(p, "/nonexistent/dir"), -ENOENT);
    ASSERT_EQ(producer_set_spill(p, dir), 0);
    ASSERT_EQ(producer_set_spill(p, dir), -EBUSY);
    ASSERT_EQ(producer_set_buffer(p, 2, 1 << 20), 0);
    ASSERT_EQ(producer_set_send_timeout(p, 0), 0); /* never waits: the spill takes it */
    s_add_range(p, 1, 10);
    ASSERT_EQ(producer_stats(p)->buffered_batches, 2);
    ASSERT_EQ(producer_stats(p)->spilled_batches, 8);
    /* The spill file is anonymous: nothing in dir. */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", dir);
    ASSERT_EQ(system(cmd), 0);
    /* Ack each batch as it comes: all ten arrive, in order. */
    for (uint64_t s = 1; s <= 10; s++) {
        got_t g;
        ASSERT_EQ(s_recv_batch(router, p, 5000, &g), 1);
        ASSERT_EQ(g.first, s);
        s_ack(router, codec, &g, s, 0);
    }
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    ASSERT_EQ(producer_stats(p)->spilled_batches, 0);
    ASSERT_EQ(producer_stats(p)->acked_batches, 10);
    ASSERT_EQ(producer_stats(p)->resends, 0);
    /* And again after the file was emptied. */
    s_add_range(p, 11, 14);
    ASSERT_EQ(producer_stats(p)->spilled_batches, 2);
    for (uint64_t s = 11; s <= 14; s++) {
        got_t g;
        ASSERT_EQ(s_recv_batch(router, p, 5000, &g), 1);
        ASSERT_EQ(g.first, s);
        s_ack(router, codec, &g, s, 0);
    }
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    producer_destroy(&p);
    fp_codec_destroy(&codec);
    zmq_close(router);
    zmq_ctx_term(ctx);
    ASSERT_EQ(rmdir(dir), 0);
}

static void s_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT(f);
    fputs(text, f);
    fclose(f);
}

static void s_read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    ASSERT(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
}

TEST(test_epoch_file)
{
    char dir[] = "/tmp/fp-epoch-XXXXXX";
    ASSERT(mkdtemp(dir));
    char path[256], text[64];
    snprintf(path, sizeof path, "%s/epoch", dir);
    uint64_t e1 = 0, e2 = 0, e;
    /* Missing: starts at the clock, so it beats a counter from 1 even if
       the file was lost. */
    uint64_t before = (uint64_t)time(NULL);
    ASSERT_EQ(producer_epoch_from_file(path, &e1), 0);
    ASSERT(e1 >= before && e1 <= (uint64_t)time(NULL));
    ASSERT_EQ(producer_epoch_from_file(path, &e2), 0);
    ASSERT_EQ(e2, e1 + 1);
    char want[64];
    snprintf(want, sizeof want, "%" PRIu64 "\n", e2);
    s_read_file(path, text, sizeof text);
    ASSERT_STREQ(text, want);
    /* Garbage is an error and the file stays as it was. */
    const char *bad[] = {"garbage\n", "", "\n", "12x\n", "-5\n", " 7\n", "18446744073709551615\n",
                         "99999999999999999999999\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_write_file(path, bad[i]);
        e = 12345;
        ASSERT_EQ(producer_epoch_from_file(path, &e), -EINVAL);
        ASSERT_EQ(e, 12345);
        s_read_file(path, text, sizeof text);
        ASSERT_STREQ(text, bad[i]);
    }
    s_write_file(path, "41");
    ASSERT_EQ(producer_epoch_from_file(path, &e), 0);
    ASSERT_EQ(e, 42);
    s_write_file(path, "18446744073709551614\n");
    ASSERT_EQ(producer_epoch_from_file(path, &e), 0);
    ASSERT(e == UINT64_MAX);
    ASSERT_EQ(producer_epoch_from_file("/nonexistent/dir/epoch", &e), -ENOENT);
    /* No temporary left behind. */
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ASSERT(access(tmp, F_OK) != 0);
    ASSERT_EQ(unlink(path), 0);
    ASSERT_EQ(rmdir(dir), 0);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_push_batching);
    RUN(test_big_batch_and_strings);
    RUN(test_acked);
    RUN(test_wait_acks_nobody);
    RUN(test_send_timeout_keeps_batch);
    RUN(test_bad_args);
    RUN(test_demo_plant);
    RUN(test_ack_releases_by_watermark);
    RUN(test_resend_after_timeout);
    RUN(test_resend_after_reconnect);
    RUN(test_order_after_outage);
    RUN(test_backpressure);
    RUN(test_rejected_batch);
    RUN(test_refused_batch_named_among_many);
    RUN(test_open_batches_per_source);
    RUN(test_flush_by_time);
    RUN(test_spill);
    RUN(test_epoch_file);
    return test_done();
}
