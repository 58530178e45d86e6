/*  tail.c - a feed subscriber. See tail.h. */
#include "tail.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "codec.h"
#include "security.h"

/* Last stream_seq per topic; a few topics (kind x plant x line), so a
   linear list is enough. */
typedef struct feed {
    struct feed *next;
    uint64_t seq;
    char topic[];
} feed_t;

static feed_t *s_feed(feed_t **head, const char *t, size_t tl)
{
    for (feed_t *f = *head; f; f = f->next)
        if (strlen(f->topic) == tl && memcmp(f->topic, t, tl) == 0)
            return f;
    feed_t *f = calloc(1, sizeof *f + tl + 1);
    if (!f)
        return NULL;
    memcpy(f->topic, t, tl);
    f->next = *head;
    *head = f;
    return f;
}

int fp_tail_format_human(const char *topic, size_t topic_len, const void *buf, size_t len,
                         char *out, size_t cap)
{
    fp_checkpoint_t ck;
    if (fp_codec_checkpoint_decode(buf, len, &ck) != FP_CODEC_OK)
        return snprintf(out, cap, "%.*s  (undecodable, %zu bytes)", (int)topic_len, topic, len);
    int n = snprintf(out, cap, "%-11s %s/%s  order %s op %s  ",
                     ck.kind == FP_CK_CONSUMPTION ? "consumption"
                     : ck.kind == FP_CK_COMPLETION ? "completion"
                                                   : "scrap",
                     ck.plant, ck.line, ck.order, ck.operation);
    if (n < 0 || (size_t)n >= cap)
        return n;
    if (ck.kind == FP_CK_CONSUMPTION) {
        /* thousandths -> "+12.345": magnitude in uint64 so INT64_MIN is fine */
        uint64_t mag = ck.quantity < 0 ? 0 - (uint64_t)ck.quantity : (uint64_t)ck.quantity;
        n += snprintf(out + n, cap - n, "%s lot %s  %c%" PRIu64 ".%03" PRIu64 " %s", ck.material,
                      ck.lot, ck.quantity < 0 ? '-' : '+', mag / 1000, mag % 1000, ck.unit);
    }
    else if (ck.kind == FP_CK_COMPLETION)
        n += snprintf(out + n, cap - n, "yield %+" PRId64 " scrap %+" PRId64 "%s", ck.yield,
                      ck.scrap, ck.final ? "  FINAL" : "");
    else
        n += snprintf(out + n, cap - n, "%s  %+" PRId64 " parts", ck.reason, ck.parts);
    if ((size_t)n < cap)
        n += snprintf(out + n, cap - n, "%s  [seq %" PRIu64 ", %" PRIu64 " records]",
                      ck.late ? "  LATE" : "", ck.stream_seq, ck.record_count);
    return n;
}

int fp_tail(void *zmq_ctx, const fp_tail_opts_t *o, fp_tail_stats_t *st)
{
    memset(st, 0, sizeof *st);
    void *sub = zmq_socket(zmq_ctx, ZMQ_SUB);
    if (!sub)
        return -zmq_errno();
    int hwm = 0; /* a tail keeps up or the operator sees gaps; never drop here */
    zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, o->topic, strlen(o->topic));
    int e = 0;
    if (o->server_key_z85 || o->public_key_z85 || o->secret_key_z85) {
        fp_curve_keypair_t kp;
        snprintf(kp.public_z85, sizeof kp.public_z85, "%s",
                 o->public_key_z85 ? o->public_key_z85 : "");
        snprintf(kp.secret_z85, sizeof kp.secret_z85, "%s",
                 o->secret_key_z85 ? o->secret_key_z85 : "");
        e = -fp_security_client_socket(sub, o->server_key_z85, &kp);
        explicit_bzero(&kp, sizeof kp);
    }
    if (e == 0 && zmq_connect(sub, o->endpoint) != 0)
        e = zmq_errno();
    if (e != 0) {
        zmq_close(sub);
        return -e;
    }
    feed_t *feeds = NULL;
    size_t cap = 1 << 16;
    char *line = malloc(cap);
    void *aligned = NULL;
    size_t aligned_cap = 0;
    int idle = 0;
    while (line && (!o->max_events || st->events < o->max_events)) {
        if (o->stop && atomic_load_explicit(o->stop, memory_order_acquire))
            break;
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, 100);
        if (rc < 0 && zmq_errno() != EINTR)
            break;
        if (rc <= 0) {
            idle += 100;
            if (o->idle_timeout_ms && idle >= o->idle_timeout_ms)
                break;
            continue;
        }
        idle = 0;
        zmq_msg_t parts[3];
        int n = 0;
        for (;;) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, sub, 0);
            bool more = zmq_msg_more(&m);
            if (n < 3)
                parts[n++] = m;
            else
                zmq_msg_close(&m);
            if (!more)
                break;
        }
        const char *t = zmq_msg_data(&parts[0]);
        size_t tl = zmq_msg_size(&parts[0]);
        if (n == 3 && tl > 11 && memcmp(t, "deadletter/", 11) == 0) {
            /* Dead-letter feed: the JSON detail, plus the payload size. */
            fprintf(o->out, "{\"topic\":\"%.*s\",\"payload_bytes\":%zu,\"detail\":%.*s}\n", (int)tl,
                    t, zmq_msg_size(&parts[2]), (int)zmq_msg_size(&parts[1]),
                    (const char *)zmq_msg_data(&parts[1]));
            st->events++;
        } else if (n == 2) {
            void *buf = zmq_msg_data(&parts[1]);
            size_t len = zmq_msg_size(&parts[1]);
            if (((uintptr_t)buf & 7) != 0) {
                if (aligned_cap < len) {
                    free(aligned);
                    aligned = malloc(len);
                    aligned_cap = aligned ? len : 0;
                }
                if (aligned) {
                    memcpy(aligned, buf, len);
                    buf = aligned;
                }
            }
            fp_checkpoint_t ck;
            if (fp_codec_checkpoint_decode(buf, len, &ck) != FP_CODEC_OK) {
                st->bad++;
                fprintf(stderr, "tail: undecodable event on topic %.*s (%zu bytes)\n", (int)tl, t,
                        len);
            } else {
                feed_t *f = s_feed(&feeds, t, tl);
                if (f && f->seq && ck.stream_seq != f->seq + 1) {
                    st->gaps++;
                    st->missing += ck.stream_seq > f->seq ? ck.stream_seq - f->seq - 1 : 0;
                    fprintf(stderr, "tail: gap on %.*s: expected stream_seq %" PRIu64
                                    ", got %" PRIu64 "\n",
                            (int)tl, t, f->seq + 1, ck.stream_seq);
                }
                if (f)
                    f->seq = ck.stream_seq;
                int k;
                if (o->human) {
                    k = fp_tail_format_human(t, tl, buf, len, line, cap);
                    fprintf(o->out, "%s\n", line);
                } else {
                    int prefix = snprintf(line, cap, "{\"topic\":\"%.*s\",", (int)tl, t);
                    k = fp_codec_checkpoint_to_json(buf, len, line + prefix - 1, cap - prefix + 1);
                    if (k > 0) {
                        line[prefix - 1] = ','; /* splice: {"topic":..,<fields of the object> */
                        fprintf(o->out, "%s\n", line);
                    }
                }
                (void)k;
                st->events++;
            }
        } else {
            st->bad++;
        }
        fflush(o->out);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&parts[i]);
    }
    while (feeds) {
        feed_t *f = feeds->next;
        free(feeds);
        feeds = f;
    }
    free(line);
    free(aligned);
    int linger = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(sub);
    return 0;
}
