/*  subscriber.c - a minimal floorpost checkpoint subscriber in C.

      subscriber [--count N] [--timeout MS] ENDPOINT [TOPIC_PREFIX]

    Connects a SUB socket to floorpost's checkpoint feed (the `publish`
    endpoint), subscribes to a topic prefix ("" = everything, "completion/" =
    every completion, "scrap/1000/" = plant 1000's scrap), decodes each
    Checkpoint and prints one line per event on stdout. It tracks stream_seq
    per topic and prints a `gap` line when events were lost on the way (a slow
    subscriber, a reconnect) and a `reset` line when the sequence starts over
    (floorpost restarted). The Python twin, examples/subscriber.py, prints
    exactly the same lines; tests/e2e/run.py runs both and compares.

    Decoding uses floorpost's own C codec (src/codec.h, a C API over the
    flatc-generated C++ readers): Debian has no C FlatBuffers generator
    (flatcc is not packaged). Build it inside the floorpost tree with
    `make build/examples/subscriber`; docs/subscribers.md shows how to build
    it elsewhere.

    Exit codes: 0 after --count events or --timeout idle ms; 1 when the
    socket cannot be set up; 2 on a usage error.
*/
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <zmq.h>

#include "codec.h"

#define TOPIC_MAX 256

/* Last stream_seq seen per topic. A feed has few topics (kind x plant x
   line), so a linear scan is enough. */
typedef struct {
    char topic[TOPIC_MAX];
    uint64_t seq;
} feed_t;

typedef struct {
    feed_t *feeds;
    size_t n, cap;
    uint64_t events, gaps, missing, bad;
} state_t;

/* Returns the feed of topic, adding it with seq 0; NULL on out of memory. */
static feed_t *s_feed(state_t *st, const char *topic)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->feeds[i].topic, topic) == 0)
            return &st->feeds[i];
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 16;
        feed_t *f = realloc(st->feeds, cap * sizeof *f);
        if (!f)
            return NULL;
        st->feeds = f;
        st->cap = cap;
    }
    feed_t *f = &st->feeds[st->n++];
    snprintf(f->topic, sizeof f->topic, "%s", topic);
    f->seq = 0;
    return f;
}

/* The gap check: stream_seq is 1, 2, 3, ... per topic with no holes. */
static void s_check_seq(state_t *st, feed_t *f, uint64_t seq)
{
    if (f->seq && seq > f->seq + 1) {
        st->gaps++;
        st->missing += seq - f->seq - 1;
        printf("gap topic=%s expected=%" PRIu64 " got=%" PRIu64 " missing=%" PRIu64 "\n",
               f->topic, f->seq + 1, seq, seq - f->seq - 1);
    } else if (f->seq && seq <= f->seq) {
        printf("reset topic=%s last=%" PRIu64 " got=%" PRIu64 "\n", f->topic, f->seq, seq);
    }
    f->seq = seq;
}

static void s_print(const char *topic, const fp_checkpoint_t *ck)
{
    static const char *kinds[] = {"?", "consumption", "completion", "scrap"};
    printf("%s topic=%s seq=%" PRIu64 " event_id=%s order=%s op=%s late=%d ",
           kinds[ck->kind], topic, ck->stream_seq, ck->event_id, ck->order, ck->operation,
           ck->late ? 1 : 0);
    if (ck->kind == FP_CK_CONSUMPTION)
        printf("material=%s lot=%s unit=%s quantity=%" PRId64 "\n", ck->material, ck->lot,
               ck->unit, ck->quantity);
    else if (ck->kind == FP_CK_COMPLETION)
        printf("yield=%" PRId64 " scrap=%" PRId64 " final=%d\n", ck->yield, ck->scrap,
               ck->final ? 1 : 0);
    else
        printf("reason=%s parts=%" PRId64 "\n", ck->reason, ck->parts);
}

/* The feed's heartbeat ["heartbeat"][JSON]: each topic's last stream_seq.
   A topic we follow whose heartbeat seq is ahead of ours lost its last
   events (the end of a burst): a gap now, not when the next event comes. */
static void s_heartbeat(state_t *st, const char *prefix, const void *body, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    json_t *feeds = o ? json_object_get(o, "feeds") : NULL;
    if (!json_is_object(feeds)) {
        st->bad++;
        json_decref(o);
        return;
    }
    const char *topic;
    json_t *v;
    json_object_foreach(feeds, topic, v) {
        if (strncmp(topic, prefix, strlen(prefix)) != 0 || !json_is_integer(v))
            continue;
        uint64_t hseq = (uint64_t)json_integer_value(v);
        for (size_t i = 0; i < st->n; i++) {
            feed_t *f = &st->feeds[i];
            if (strcmp(f->topic, topic) != 0 || !f->seq || hseq <= f->seq)
                continue;
            st->gaps++;
            st->missing += hseq - f->seq;
            printf("gap topic=%s expected=%" PRIu64 " got=%" PRIu64 " missing=%" PRIu64 "\n",
                   f->topic, f->seq + 1, hseq + 1, hseq - f->seq);
            f->seq = hseq;
        }
    }
    json_decref(o);
}

/* Handles one [topic][Checkpoint] message. aligned is scratch space of at
   least *aligned_cap bytes, grown as needed: the decoder wants the buffer
   8-byte aligned and a zmq_msg_t's data need not be. */
static void s_handle(state_t *st, const char *prefix, zmq_msg_t *parts, int nparts,
                     void **aligned, size_t *aligned_cap)
{
    size_t tl = zmq_msg_size(&parts[0]);
    if (nparts == 2 && tl == 9 && memcmp(zmq_msg_data(&parts[0]), "heartbeat", 9) == 0) {
        s_heartbeat(st, prefix, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]));
        return;
    }
    if (nparts != 2 || tl == 0 || tl >= TOPIC_MAX) {
        st->bad++;
        fprintf(stderr, "subscriber: unexpected message (%d frames)\n", nparts);
        return;
    }
    char topic[TOPIC_MAX];
    memcpy(topic, zmq_msg_data(&parts[0]), tl);
    topic[tl] = '\0';
    size_t len = zmq_msg_size(&parts[1]);
    if (len > *aligned_cap) {
        free(*aligned);
        *aligned_cap = (len + 7) & ~(size_t)7;
        *aligned = aligned_alloc(8, *aligned_cap);
        if (!*aligned) {
            *aligned_cap = 0;
            st->bad++;
            return;
        }
    }
    memcpy(*aligned, zmq_msg_data(&parts[1]), len);
    fp_checkpoint_t ck;
    int rc = fp_codec_checkpoint_decode(*aligned, len, &ck); /* verifies first */
    if (rc != FP_CODEC_OK) {
        st->bad++;
        fprintf(stderr, "subscriber: %s: undecodable checkpoint: %s\n", topic,
                fp_codec_strerror(rc));
        return;
    }
    feed_t *f = s_feed(st, topic);
    if (f)
        s_check_seq(st, f, ck.stream_seq);
    st->events++;
    s_print(topic, &ck);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    uint64_t count = 0; /* 0 = no limit */
    long timeout_ms = -1; /* -1 = wait forever */
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            timeout_ms = strtol(argv[++i], NULL, 10);
        else
            break;
    }
    if (argc - i < 1 || argc - i > 2) {
        fprintf(stderr, "usage: subscriber [--count N] [--timeout MS] ENDPOINT [TOPIC_PREFIX]\n");
        return 2;
    }
    const char *endpoint = argv[i];
    const char *prefix = argc - i == 2 ? argv[i + 1] : "";

    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    int hwm = 0; /* never drop on our side: a gap then means loss upstream */
    if (!sub || zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) != 0 ||
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "heartbeat", 9) != 0 ||
        zmq_connect(sub, endpoint) != 0) {
        fprintf(stderr, "subscriber: %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    fprintf(stderr, "subscriber: connected to %s, prefix \"%s\"\n", endpoint, prefix);

    state_t st = {0};
    void *aligned = NULL;
    size_t aligned_cap = 0;
    while (count == 0 || st.events < count) {
        zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&item, 1, timeout_ms);
        if (n < 0)
            break; /* interrupted */
        if (n == 0)
            break; /* idle for timeout_ms */
        zmq_msg_t parts[2];
        int nparts = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, sub, 0) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            if (nparts < 2)
                parts[nparts] = m;
            else
                zmq_msg_close(&m);
            nparts++;
        }
        if (nparts == 0)
            continue;
        s_handle(&st, prefix, parts, nparts, &aligned, &aligned_cap);
        for (int k = 0; k < nparts && k < 2; k++)
            zmq_msg_close(&parts[k]);
    }
    fprintf(stderr, "subscriber: %" PRIu64 " events, %" PRIu64 " gaps, %" PRIu64 " missing, %" PRIu64
            " bad\n", st.events, st.gaps, st.missing, st.bad);
    free(aligned);
    free(st.feeds);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return 0;
}
