/*  producer.c - record batching, FlatBuffers encoding (codec), ZeroMQ send,
    Ack draining.

    Invariants:
      - recs[0..nrecs) all belong to (src, epoch); their string indices point
        into strtab, which holds only strings of the open batch (plus, after
        a failed add, harmless unused ones).
      - nrecs < batch_records between calls (a full batch is sent at once, or
        the record that filled it is taken back).
      - stats.acks <= stats.batches_sent in ACKED mode, unless the peer sends
        Acks we never asked for.
*/
#include "producer.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "codec.h"
#include "security.h"
#include "strtab.h"

struct producer {
    void *sock;
    int mode;
    uint32_t batch_records;
    fp_codec_t *codec;
    strtab_t *strtab;
    fp_record_t *recs; /* batch_records entries */
    uint32_t nrecs;
    uint64_t src, epoch; /* of the open batch when nrecs > 0 */
    producer_stats_t stats;
    char last_reject[64];
};

producer_t *producer_new(void *zmq_ctx, const char *endpoint, int mode, uint32_t batch_records)
{
    if (!zmq_ctx || (mode != PRODUCER_ACKED && mode != PRODUCER_PUSH) ||
        batch_records == 0 || batch_records > PRODUCER_BATCH_MAX) {
        errno = EINVAL;
        return NULL;
    }
    producer_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->mode = mode;
    self->batch_records = batch_records;
    self->codec = fp_codec_new();
    self->strtab = strtab_new();
    self->recs = calloc(batch_records, sizeof(fp_record_t));
    if (!self->codec || !self->strtab || !self->recs) {
        errno = ENOMEM;
        goto fail;
    }
    self->sock = zmq_socket(zmq_ctx, mode == PRODUCER_ACKED ? ZMQ_DEALER : ZMQ_PUSH);
    if (!self->sock)
        goto fail;
    int hwm = PRODUCER_SNDHWM, one = 1;
    if (zmq_setsockopt(self->sock, ZMQ_SNDHWM, &hwm, sizeof(hwm)) != 0)
        goto fail;
    /* PUSH: without IMMEDIATE, frames queue on a pipe to a peer that may
       never come; with it, a send blocks until a peer is connected. */
    if (mode == PRODUCER_PUSH && zmq_setsockopt(self->sock, ZMQ_IMMEDIATE, &one, sizeof(one)) != 0)
        goto fail;
    if (endpoint && zmq_connect(self->sock, endpoint) != 0)
        goto fail;
    return self;
fail:;
    int err = errno;
    producer_destroy(&self);
    errno = err;
    return NULL;
}

void producer_destroy(producer_t **self_p)
{
    assert(self_p);
    producer_t *self = *self_p;
    if (!self)
        return;
    if (self->sock) {
        int linger = PRODUCER_LINGER_MS;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof(linger));
        zmq_close(self->sock);
    }
    fp_codec_destroy(&self->codec);
    strtab_destroy(&self->strtab);
    free(self->recs);
    free(self);
    *self_p = NULL;
}

/* Decodes one Ack frame and counts it. Frames that are not a valid Ack are
   ignored (they acknowledge nothing). */
static void s_count_ack(producer_t *self, const void *data, size_t len)
{
    /* Small zmq frames live inside the zmq_msg_t, maybe not 8-byte
       aligned: fp_codec_ack_decode copies unaligned input itself. */
    fp_ack_t ack;
    if (fp_codec_ack_decode(data, len, &ack) != FP_CODEC_OK)
        return;
    self->stats.acks++;
    if (ack.status != 0) {
        self->stats.rejected_batches++;
        memcpy(self->last_reject, ack.reason, sizeof(self->last_reject));
        self->last_reject[sizeof(self->last_reject) - 1] = 0;
    } else {
        self->stats.last_acked_seq = ack.acked_seq;
    }
}

/* Receives every Ack already queued, without blocking. 0 or -errno (EAGAIN
   is not an error). */
static int s_drain_acks(producer_t *self)
{
    if (self->mode != PRODUCER_ACKED)
        return 0;
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int rc = zmq_msg_recv(&msg, self->sock, ZMQ_DONTWAIT);
        if (rc < 0) {
            int err = zmq_errno();
            zmq_msg_close(&msg);
            return err == EAGAIN ? 0 : -err;
        }
        /* One Ack is one frame; skip any further frames of the message. */
        int more = zmq_msg_more(&msg);
        s_count_ack(self, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
        while (more) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, self->sock, 0) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            more = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
    }
}

/* Sends one frame (zmq copies buf); blocks at the HWM. 0 or -errno. */
static int s_send_frame(producer_t *self, const void *buf, size_t len)
{
    return zmq_send(self->sock, buf, len, 0) >= 0 ? 0 : -zmq_errno();
}

int producer_flush(producer_t *self)
{
    assert(self);
    if (self->nrecs > 0) {
        const void *out;
        size_t out_len;
        int rc = fp_codec_batch_encode(self->codec, self->src, self->epoch,
                                       strtab_strings(self->strtab), strtab_count(self->strtab),
                                       self->recs, self->nrecs, &out, &out_len);
        if (rc != FP_CODEC_OK)
            return rc == FP_CODEC_NOMEM ? -ENOMEM : -EINVAL;
        rc = s_send_frame(self, out, out_len);
        if (rc != 0)
            return rc;
        self->stats.batches_sent++;
        self->stats.records_sent += self->nrecs;
        self->nrecs = 0;
        strtab_clear(self->strtab);
    }
    return s_drain_acks(self);
}

int producer_add(producer_t *self, uint64_t source_id, uint64_t epoch, const fp_rec_in_t *rec)
{
    assert(self && rec);
    if (source_id == 0)
        return -EINVAL;
    if (self->nrecs == 0)
        strtab_clear(self->strtab); /* drops strings of a record taken back */
    if (self->nrecs > 0 &&
        (source_id != self->src || epoch != self->epoch ||
         strtab_count(self->strtab) > FP_BATCH_STRINGS_MAX - FP_STR_FIELDS)) {
        int rc = producer_flush(self);
        if (rc != 0)
            return rc;
    }
    assert(self->nrecs < self->batch_records);
    fp_record_t *r = &self->recs[self->nrecs];
    memset(r, 0, sizeof(*r));
    r->seq = rec->seq;
    r->time_ns = rec->time_ns;
    r->quantity = rec->quantity;
    r->kind = rec->kind;
    for (int i = 0; i < FP_STR_FIELDS; i++) {
        int idx = strtab_add(self->strtab, rec->str[i]);
        if (idx < 0)
            return -ENOMEM; /* room was ensured above, so only OOM gets here */
        r->str[i] = (uint16_t)idx;
    }
    self->src = source_id;
    self->epoch = epoch;
    self->nrecs++;
    if (self->nrecs == self->batch_records) {
        int rc = producer_flush(self);
        if (rc != 0) {
            /* Take the record back so the caller can repeat the call; its
               strings stay in the table unused (a repeat finds them). */
            self->nrecs--;
            return rc;
        }
    }
    return 0;
}

int producer_send_raw(producer_t *self, const void *buf, size_t len)
{
    assert(self && (buf || len == 0));
    int rc = s_send_frame(self, buf, len);
    if (rc != 0)
        return rc;
    self->stats.batches_sent++;
    return s_drain_acks(self);
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int producer_wait_acks(producer_t *self, int timeout_ms)
{
    assert(self);
    if (self->mode != PRODUCER_ACKED)
        return 0;
    int64_t deadline = s_now_ms() + timeout_ms;
    for (;;) {
        int rc = s_drain_acks(self);
        if (rc != 0)
            return rc;
        if (self->stats.acks >= self->stats.batches_sent)
            return 0;
        long wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - s_now_ms();
            if (left <= 0)
                return -ETIMEDOUT;
            wait = (long)left;
        }
        zmq_pollitem_t item = {.socket = self->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, wait) < 0)
            return -zmq_errno();
    }
}

int producer_set_curve(producer_t *self, const char *server_public_z85,
                       const char *client_public_z85, const char *client_secret_z85)
{
    assert(self);
    if (!server_public_z85 || !client_public_z85 || !client_secret_z85 ||
        strlen(client_public_z85) != FP_CURVE_KEY_Z85 ||
        strlen(client_secret_z85) != FP_CURVE_KEY_Z85)
        return -EINVAL;
    fp_curve_keypair_t kp;
    memcpy(kp.public_z85, client_public_z85, sizeof kp.public_z85);
    memcpy(kp.secret_z85, client_secret_z85, sizeof kp.secret_z85);
    int rc = fp_security_client_socket(self->sock, server_public_z85, &kp);
    explicit_bzero(&kp, sizeof kp);
    return rc;
}

int producer_connect(producer_t *self, const char *endpoint)
{
    assert(self);
    if (!endpoint)
        return -EINVAL;
    return zmq_connect(self->sock, endpoint) == 0 ? 0 : -zmq_errno();
}

int producer_set_send_timeout(producer_t *self, int timeout_ms)
{
    assert(self);
    if (timeout_ms < -1)
        return -EINVAL;
    if (zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof(timeout_ms)) != 0)
        return -zmq_errno();
    return 0;
}

const producer_stats_t *producer_stats(const producer_t *self)
{
    assert(self);
    return &self->stats;
}

const char *producer_last_reject(const producer_t *self)
{
    assert(self);
    return self->last_reject;
}
