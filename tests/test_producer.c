/*  test_producer.c - the producer over real ZeroMQ sockets: what arrives at
    a PULL and a ROUTER decodes to the records sent, batches split on size
    and on (source_id, epoch), Acks are counted, waits time out. */
#include "producer.h"

#include <arpa/inet.h>
#include <errno.h>
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

/* Receives one batch at the ROUTER and answers it with an Ack. */
static void s_router_ack(void *router, fp_codec_t *codec, int status, uint64_t *last_seq)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    ASSERT_EQ(s_pending(router, 5000), 1);
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
    ASSERT_EQ(fp_codec_ack_encode(codec, v.source_id, v.epoch, status ? 0 : batch_last, batch_last,
                                  status, status ? "malformed" : NULL, &out, &out_len),
              FP_CODEC_OK);
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
    /* Nobody answered yet. */
    ASSERT_EQ(producer_wait_acks(p, 0), -ETIMEDOUT);
    uint64_t last;
    s_router_ack(router, codec, 0, &last);
    ASSERT_EQ(last, 3);
    s_router_ack(router, codec, 0, &last);
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
    s_router_ack(router, codec, 1, &last);
    ASSERT_EQ(last, 7);
    ASSERT_EQ(producer_wait_acks(p, 5000), 0);
    const producer_stats_t *st = producer_stats(p);
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
    ASSERT_EQ(s_pending(router, 5000), 1);
    ASSERT(zmq_msg_recv(&id, router, 0) >= 0);
    size_t len;
    free(s_recv_frame(router, &len));
    ASSERT_EQ(len, 4);
    ASSERT(zmq_msg_send(&id, router, ZMQ_SNDMORE) >= 0);
    ASSERT_EQ(zmq_send(router, "garbage-ack", 11, 0), 11);
    ASSERT_EQ(producer_wait_acks(p, 100), -ETIMEDOUT);
    ASSERT_EQ(producer_stats(p)->acks, 3);

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
        ASSERT_EQ(fp_codec_ack_encode(codec, v.source_id, v.epoch, last, last, 0, NULL, &out, &out_len), 0);
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

int main(void)
{
    RUN(test_push_batching);
    RUN(test_big_batch_and_strings);
    RUN(test_acked);
    RUN(test_wait_acks_nobody);
    RUN(test_send_timeout_keeps_batch);
    RUN(test_bad_args);
    RUN(test_demo_plant);
    return 0;
}
