/*  tail.c - a feed subscriber with gap filling from the replay endpoint.
    See tail.h.

    Invariants (replay on): have_last says whether last_g is set; every
    event printed or filtered after that has global_seq == last_g + 1 at
    the time, except across a range reported as unrecoverable (which
    moves last_g past it). So the output is in global_seq order, once. */
#include "tail.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <zmq.h>

#include "codec.h"
#include "curve.h"

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
                     fp_ck_kind_name(ck.kind) ? fp_ck_kind_name(ck.kind) : "?",
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
    else if (ck.kind == FP_CK_SCRAP)
        n += snprintf(out + n, cap - n, "%s  %+" PRId64 " parts", ck.reason, ck.parts);
    else
        n += snprintf(out + n, cap - n, "station %s counter %s%s%s  %" PRId64 " -> %" PRId64,
                      ck.station, ck.counter, ck.counter_scrap ? " scrap " : "",
                      ck.counter_scrap ? ck.reason : "", ck.previous, ck.reading);
    if ((size_t)n < cap && ck.posting_date[0])
        n += snprintf(out + n, cap - n, "  %s %s%s", ck.posting_date, ck.period,
                      ck.backfill ? " BACKFILL" : "");
    if ((size_t)n < cap)
        n += snprintf(out + n, cap - n, "%s  [seq %" PRIu64 ", %" PRIu64 " records]",
                      ck.late ? "  LATE" : "", ck.stream_seq, ck.record_count);
    return n;
}

/* Events asked for per REPLAY request. */
#define TAIL_REPLAY_CHUNK 1000
#define TAIL_REPLAY_TIMEOUT_MS 5000

typedef struct {
    void *buf;
    size_t cap;
} abuf_t;

typedef struct {
    const fp_tail_opts_t *o;
    fp_tail_stats_t *st;
    void *ctx;
    void *replay;       /* DEALER to o->replay_endpoint, made when first needed */
    bool local_filter;  /* subscribed to everything; o->topic filters here */
    bool have_last;
    uint64_t last_g;    /* last global_seq handled (printed or filtered) */
    feed_t *feeds;
    char *line;
    size_t cap;
    abuf_t live_buf, replay_buf; /* aligned copies: a fill runs while a live event waits */
    int holes_retried; /* answers with a hole inside, asked again (s_fill) */
} tail_t;

/* Returns buf itself when 8-byte aligned, else a copy in ab (NULL on OOM). */
static const void *s_align(abuf_t *ab, const void *buf, size_t len)
{
    if (((uintptr_t)buf & 7) == 0)
        return buf;
    if (ab->cap < len) {
        free(ab->buf);
        ab->buf = malloc(len);
        ab->cap = ab->buf ? len : 0;
    }
    if (!ab->buf)
        return NULL;
    memcpy(ab->buf, buf, len);
    return ab->buf;
}

static bool s_done(const tail_t *t)
{
    const fp_tail_opts_t *o = t->o;
    return (o->max_events && t->st->events >= o->max_events) ||
           (o->stop && atomic_load_explicit(o->stop, memory_order_acquire));
}

/* Prints one decoded event (unless filtered out or the count is reached)
   and checks its topic's stream_seq. */
static void s_emit(tail_t *t, const char *topic, size_t tl, const void *buf, size_t len,
                   const fp_checkpoint_t *ck, bool replayed)
{
    const fp_tail_opts_t *o = t->o;
    fp_tail_stats_t *st = t->st;
    size_t pl = strlen(o->topic);
    if (t->local_filter && (tl < pl || memcmp(topic, o->topic, pl) != 0))
        return;
    if (o->max_events && st->events >= o->max_events)
        return;
    feed_t *f = s_feed(&t->feeds, topic, tl);
    if (f && f->seq && ck->stream_seq != f->seq + 1) {
        st->gaps++;
        st->missing += ck->stream_seq > f->seq ? ck->stream_seq - f->seq - 1 : 0;
        fprintf(stderr, "tail: gap on %.*s: expected stream_seq %" PRIu64 ", got %" PRIu64 "\n",
                (int)tl, topic, f->seq + 1, ck->stream_seq);
    }
    if (f)
        f->seq = ck->stream_seq;
    if (o->human) {
        fp_tail_format_human(topic, tl, buf, len, t->line, t->cap);
        fprintf(o->out, "%s\n", t->line);
    } else {
        int prefix = snprintf(t->line, t->cap, "{\"topic\":\"%.*s\",", (int)tl, topic);
        int k = fp_codec_checkpoint_to_json(buf, len, t->line + prefix - 1, t->cap - prefix + 1);
        if (k > 0) {
            t->line[prefix - 1] = ','; /* splice: {"topic":..,<fields of the object> */
            fprintf(o->out, "%s\n", t->line);
        }
    }
    st->events++;
    if (replayed)
        st->replayed++;
}

static void s_unrecoverable(tail_t *t, uint64_t from, uint64_t to_incl, const char *why)
{
    t->st->unrecoverable += to_incl - from + 1;
    fprintf(stderr, "tail: global_seq %" PRIu64 "..%" PRIu64 " unrecoverable (%" PRIu64
                    " events): %s\n",
            from, to_incl, to_incl - from + 1, why);
}

static void s_replay_close(tail_t *t)
{
    if (t->replay) {
        int linger = 0;
        zmq_setsockopt(t->replay, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(t->replay);
        t->replay = NULL;
    }
}

/* Applies the CURVE options, if any, to a client socket. 0 or errno. */
static int s_client_curve(const fp_tail_opts_t *o, void *sock)
{
    if (!o->server_key_z85 && !o->public_key_z85 && !o->secret_key_z85)
        return 0;
    fp_curve_keypair_t kp;
    snprintf(kp.public_z85, sizeof kp.public_z85, "%s", o->public_key_z85 ? o->public_key_z85 : "");
    snprintf(kp.secret_z85, sizeof kp.secret_z85, "%s", o->secret_key_z85 ? o->secret_key_z85 : "");
    int e = -fp_curve_client_socket(sock, o->server_key_z85, &kp);
    explicit_bzero(&kp, sizeof kp);
    return e;
}

static int s_replay_open(tail_t *t)
{
    if (t->replay)
        return 0;
    t->replay = zmq_socket(t->ctx, ZMQ_DEALER);
    if (!t->replay)
        return zmq_errno();
    int e = s_client_curve(t->o, t->replay);
    if (e == 0 && zmq_connect(t->replay, t->o->replay_endpoint) != 0)
        e = zmq_errno();
    if (e != 0)
        s_replay_close(t);
    return e;
}

/* Receives one message of up to 2 frames from the replay socket within
   the replay timeout. Returns the frame count (extra frames dropped), 0 on
   timeout or stop. */
static int s_replay_recv(tail_t *t, zmq_msg_t parts[2])
{
    int timeout = t->o->replay_timeout_ms > 0 ? t->o->replay_timeout_ms : TAIL_REPLAY_TIMEOUT_MS;
    for (int waited = 0; waited < timeout; waited += 100) {
        if (t->o->stop && atomic_load_explicit(t->o->stop, memory_order_acquire))
            return 0;
        zmq_pollitem_t it = {t->replay, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, 100);
        if (rc < 0 && zmq_errno() != EINTR)
            return 0;
        if (rc <= 0)
            continue;
        int n = 0;
        for (;;) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, t->replay, 0) < 0) {
                zmq_msg_close(&m);
                break;
            }
            bool more = zmq_msg_more(&m);
            if (n < 2)
                parts[n++] = m;
            else
                zmq_msg_close(&m);
            if (!more)
                break;
        }
        return n;
    }
    return 0;
}

/* Replays and prints global_seq [from, to) (to UINT64_MAX: up to what the
   endpoint has committed), in order; reports what it cannot get. Moves
   last_g to to - 1 (bounded) or to the last event got (catch-up). */
static void s_fill(tail_t *t, uint64_t from, uint64_t to)
{
    const bool bounded = to != UINT64_MAX;
    uint64_t cur = from; /* next global_seq wanted */
    int e = s_replay_open(t);
    if (e != 0) {
        if (bounded)
            s_unrecoverable(t, cur, to - 1, zmq_strerror(e));
        else
            fprintf(stderr, "tail: replay endpoint %s: %s\n", t->o->replay_endpoint, zmq_strerror(e));
        goto out;
    }
    while (cur < to && !s_done(t)) {
        uint64_t want = bounded && to - cur < TAIL_REPLAY_CHUNK ? to - cur : TAIL_REPLAY_CHUNK;
        char req[64];
        int rl = snprintf(req, sizeof req, "REPLAY %" PRIu64 " %" PRIu64, cur, want);
        if (zmq_send(t->replay, req, (size_t)rl, ZMQ_DONTWAIT) != rl) {
            if (bounded)
                s_unrecoverable(t, cur, to - 1, "cannot send to the replay endpoint");
            s_replay_close(t);
            goto out;
        }
        uint64_t before = cur;
        bool ended = false, holed = false;
        uint64_t next = 0, oldest = 0, committed = 0;
        while (!ended) {
            zmq_msg_t parts[2];
            int n = s_replay_recv(t, parts);
            if (n == 0) {
                /* No answer: a late one must not be taken for the next. */
                s_replay_close(t);
                if (bounded)
                    s_unrecoverable(t, cur, to - 1, "the replay endpoint did not answer");
                else
                    fprintf(stderr, "tail: catch-up stopped at global_seq %" PRIu64
                                    ": the replay endpoint did not answer\n",
                            cur);
                goto out;
            }
            const char *a = zmq_msg_data(&parts[0]);
            size_t al = zmq_msg_size(&parts[0]);
            if (n == 2 && al == 3 && memcmp(a, "END", 3) == 0) {
                char text[96];
                size_t bl = zmq_msg_size(&parts[1]);
                snprintf(text, sizeof text, "%.*s", (int)(bl < sizeof text ? bl : sizeof text - 1),
                         (const char *)zmq_msg_data(&parts[1]));
                if (sscanf(text, "%" SCNu64 " %" SCNu64 " %" SCNu64, &next, &oldest, &committed) != 3)
                    t->st->bad++;
                ended = true;
            } else if (n == 2) {
                const void *buf = s_align(&t->replay_buf, zmq_msg_data(&parts[1]),
                                          zmq_msg_size(&parts[1]));
                fp_checkpoint_t ck;
                if (!buf || fp_codec_checkpoint_decode(buf, zmq_msg_size(&parts[1]), &ck) != FP_CODEC_OK) {
                    t->st->bad++;
                } else if (ck.global_seq < cur) {
                    t->st->duplicates++;
                } else if (holed) {
                    /* after a hole in this answer: asked again below */
                } else if (ck.global_seq < to) {
                    if (ck.global_seq > cur) {
                        /* A hole inside an answer: not retention (END's
                           oldest says that); ask again from cur. */
                        holed = true;
                        for (int i = 0; i < n; i++)
                            zmq_msg_close(&parts[i]);
                        continue;
                    }
                    t->have_last = true;
                    t->last_g = ck.global_seq;
                    cur = ck.global_seq + 1;
                    s_emit(t, a, al, buf, zmq_msg_size(&parts[1]), &ck, true);
                }
                /* >= to: the live feed brings it (the event that revealed the gap) */
            } else {
                t->st->bad++;
            }
            for (int i = 0; i < n; i++)
                zmq_msg_close(&parts[i]);
        }
        if (holed && oldest <= cur && ++t->holes_retried <= 3)
            continue; /* ask again from cur */
        if (holed && oldest <= cur) {
            s_unrecoverable(t, cur, to == UINT64_MAX ? cur : to - 1,
                            "the replay endpoint skipped events");
            goto out;
        }
        if (cur < to && oldest > cur) {
            /* What is older than the endpoint's retention is gone. */
            uint64_t end = bounded && oldest > to ? to : oldest;
            s_unrecoverable(t, cur, end - 1, "no longer retained by the replay endpoint");
            cur = end;
        }
        if (!bounded && cur > committed)
            break; /* caught up with everything committed */
        if (cur == before) {
            /* No progress: the endpoint has nothing at cur (yet). */
            if (bounded)
                s_unrecoverable(t, cur, to - 1, "the replay endpoint has no such events");
            break;
        }
        (void)next;
    }
out:
    if (bounded) {
        t->have_last = true;
        t->last_g = to - 1;
    } else if (!t->have_last || t->last_g < cur - 1) {
        t->have_last = cur > 1;
        t->last_g = cur - 1;
    }
}

/* The feed's heartbeat (emit.c s_heartbeat): with a replay endpoint, an
   event we have not seen (the end of a burst lost on the way) is fetched
   now instead of when the next event comes. Not printed. */
static void s_heartbeat(tail_t *t, const void *data, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb(data, len, 0, &je);
    json_t *g = o ? json_object_get(o, "global_seq") : NULL;
    if (!json_is_integer(g)) {
        t->st->bad++;
        json_decref(o);
        return;
    }
    uint64_t gs = (uint64_t)json_integer_value(g);
    json_decref(o);
    t->st->heartbeats++;
    if (t->o->replay_endpoint && gs > 0 && (!t->have_last || gs > t->last_g)) {
        uint64_t from = t->have_last ? t->last_g + 1 : 1;
        if (t->have_last) {
            t->st->global_gaps++;
            s_fill(t, from, gs + 1);
        } else {
            /* no event seen yet: what is committed now is the start */
            t->have_last = true;
            t->last_g = gs;
        }
    }
}

/* One event from the live feed. */
static void s_live(tail_t *t, const char *topic, size_t tl, const void *data, size_t len)
{
    const void *buf = s_align(&t->live_buf, data, len);
    fp_checkpoint_t ck;
    if (!buf || fp_codec_checkpoint_decode(buf, len, &ck) != FP_CODEC_OK) {
        t->st->bad++;
        fprintf(stderr, "tail: undecodable event on topic %.*s (%zu bytes)\n", (int)tl, topic, len);
        return;
    }
    if (t->o->replay_endpoint && ck.global_seq != 0) {
        if (t->have_last && ck.global_seq <= t->last_g) {
            t->st->duplicates++;
            return;
        }
        if (t->have_last && ck.global_seq > t->last_g + 1) {
            t->st->global_gaps++;
            s_fill(t, t->last_g + 1, ck.global_seq);
        }
        t->have_last = true;
        t->last_g = ck.global_seq;
    }
    s_emit(t, topic, tl, buf, len, &ck, false);
}

int fp_tail(void *zmq_ctx, const fp_tail_opts_t *o, fp_tail_stats_t *st)
{
    memset(st, 0, sizeof *st);
    tail_t t = {.o = o, .st = st, .ctx = zmq_ctx, .cap = 1 << 16};
    t.local_filter = o->replay_endpoint && o->topic[0];
    void *sub = zmq_socket(zmq_ctx, ZMQ_SUB);
    if (!sub)
        return -zmq_errno();
    int hwm = 0; /* a tail keeps up or the operator sees gaps; never drop here */
    zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    const char *sub_topic = t.local_filter ? "" : o->topic;
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, sub_topic, strlen(sub_topic));
    if (sub_topic[0])
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "heartbeat", 9);
    int e = s_client_curve(o, sub);
    if (e == 0 && zmq_connect(sub, o->endpoint) != 0)
        e = zmq_errno();
    if (e != 0) {
        zmq_close(sub);
        return -e;
    }
    /* With CURVE: a monitor tells a refused key from a silent feed (both
       would otherwise look like "nothing comes"). */
    void *mon = NULL;
    if (o->server_key_z85) {
        char mep[64];
        static _Atomic int mseq;
        snprintf(mep, sizeof mep, "inproc://fp-tail-monitor-%d", atomic_fetch_add(&mseq, 1));
        if (zmq_socket_monitor(sub, mep, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) == 0 &&
            (mon = zmq_socket(zmq_ctx, ZMQ_PAIR)) != NULL && zmq_connect(mon, mep) != 0) {
            zmq_close(mon);
            mon = NULL;
        }
    }
    int refused = 0;
    t.line = malloc(t.cap);
    /* Catch-up: the SUB is connected first, so what is published meanwhile
       queues there (no HWM) and the overlap is skipped as duplicates. */
    if (t.line && o->replay_endpoint && o->from_global_seq > 0) {
        t.have_last = o->from_global_seq > 1;
        t.last_g = o->from_global_seq - 1;
        s_fill(&t, o->from_global_seq, UINT64_MAX);
    }
    int idle = 0;
    while (t.line && !s_done(&t)) {
        zmq_pollitem_t its[2] = {{sub, 0, ZMQ_POLLIN, 0}, {mon, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(its, mon ? 2 : 1, 100);
        if (rc < 0 && zmq_errno() != EINTR)
            break;
        if (mon && (its[1].revents & ZMQ_POLLIN)) {
            zmq_msg_t ev, addr;
            zmq_msg_init(&ev);
            zmq_msg_init(&addr);
            if (zmq_msg_recv(&ev, mon, 0) >= 6 && zmq_msg_more(&ev) &&
                zmq_msg_recv(&addr, mon, 0) >= 0) {
                uint16_t event;
                uint32_t v;
                memcpy(&event, zmq_msg_data(&ev), 2);
                memcpy(&v, (char *)zmq_msg_data(&ev) + 2, 4);
                refused = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? (int)v : -1;
            }
            zmq_msg_close(&ev);
            zmq_msg_close(&addr);
            if (refused)
                break;
            continue;
        }
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
        const char *tp = zmq_msg_data(&parts[0]);
        size_t tl = zmq_msg_size(&parts[0]);
        if (n == 3 && tl > 11 && memcmp(tp, "deadletter/", 11) == 0) {
            /* Dead-letter feed: the JSON detail, plus the payload size. */
            fprintf(o->out, "{\"topic\":\"%.*s\",\"payload_bytes\":%zu,\"detail\":%.*s}\n", (int)tl,
                    tp, zmq_msg_size(&parts[2]), (int)zmq_msg_size(&parts[1]),
                    (const char *)zmq_msg_data(&parts[1]));
            st->events++;
        } else if (n == 2 && tl == 9 && memcmp(tp, "heartbeat", 9) == 0) {
            s_heartbeat(&t, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]));
        } else if (n == 2) {
            s_live(&t, tp, tl, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]));
        } else {
            st->bad++;
        }
        fflush(o->out);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&parts[i]);
    }
    fflush(o->out);
    while (t.feeds) {
        feed_t *f = t.feeds->next;
        free(t.feeds);
        t.feeds = f;
    }
    free(t.line);
    free(t.live_buf.buf);
    free(t.replay_buf.buf);
    s_replay_close(&t);
    int linger = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(sub);
    if (mon)
        zmq_close(mon);
    st->auth_status = refused;
    return refused ? -EACCES : 0;
}
