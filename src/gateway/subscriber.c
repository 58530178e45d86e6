/*  subscriber.c - the subscriber client: live feed, gap checks, replay
    fills, a queue of messages for the caller. See subscriber.h.

    Data flow: every input (a live message, a replay answer's event, a
    heartbeat) is turned at once into zero or more items, pushed on the
    queue in the order the caller must see them (a GAP before its event);
    subscriber_recv pops one item per call and keeps it as `out` until the
    next call. The queue is refilled only when empty, so it holds what one
    input makes: an event and a note or two, or one GAP per topic of a
    heartbeat.

    The fill is a state machine stepped by subscriber_recv, so a caller's
    timeout (0 included) is honoured while a catch-up runs: at most one
    request is out; each step reads one message of its answer.

    Invariants (track_global):
      - have_last says whether last_g is set; every event handed out after
        that has global_seq == last_g + 1 at the time, except across a range
        handed out as LOST or GAP (which moves last_g past it). So events
        come once, in global_seq order.
      - while filling, the live event that revealed the gap (if any) is
        `held`, handed on when the fill ends: the fill's `to` is its
        global_seq.
      - last_live_g is the last global_seq seen on the live feed, which one
        PUB delivers in order: a smaller one is a RESET, never a duplicate.
*/
#include "subscriber.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <zmq.h>

#include "clock.h"
#include "codec.h"
#include "curve.h"

#define S_REPLAY_MAX 10000     /* the server's own limit per answer (replay.c) */
#define S_TOPIC_MAX 1024       /* a longer topic is not floorpost's: BAD */
#define S_RETRIES 3            /* asks again after a hole or an endpoint behind */
#define S_RETRY_DELAY_MS 100   /* before asking again an endpoint that was behind */
#define S_DL_PREFIX "deadletter/"
#define S_DL_PREFIX_LEN 11
#define S_DL_DETAIL_MAX 65536  /* floorpost's are at most 1200 bytes */

/* One message for the caller, owning its strings and bytes. */
typedef struct {
    int kind;
    char *topic;         /* NULL = "" */
    void *data;          /* malloc'd: 8-byte aligned for the decoder */
    size_t len;
    fp_checkpoint_t ck;  /* EVENT: points into data */
    bool replayed;
    uint64_t first, next, global_seq;
    int64_t wall_ns;
    char detail[192];
    char *text;          /* DEADLETTER: the JSON detail (malloc'd), handed out as detail */
} item_t;

/* Last stream_seq per topic: a feed has few topics (kind x plant x line). */
typedef struct feed {
    struct feed *next;
    uint64_t seq;
    char topic[];
} feed_t;

struct subscriber {
    void *ctx, *sub, *replay;
    void *monitor;       /* CURVE: a PAIR on the SUB's socket monitor (refused handshakes) */
    char *endpoint;
    char *replay_ep, *prefix;
    size_t prefix_len;
    bool curve;
    char server_z85[FP_CURVE_KEY_Z85 + 1];
    fp_curve_keypair_t kp;
    bool local_filter;   /* subscribed to everything; prefix filters here */
    bool deadletters;    /* subscriber_accept_deadletters: 3-frame dead letters handed out */
    bool track_global;   /* global_seq checked: replay on, or prefix "" */
    int replay_timeout_ms;
    uint32_t batch;
    bool have_last, have_live;
    uint64_t last_g, last_live_g;
    feed_t *feeds;
    /* the fill */
    bool filling, bounded, req_out, holed;
    uint64_t cur, to, before; /* next wanted; end (exclusive); cur at the request */
    int retries;
    int64_t deadline_ns;      /* the answer is late after this */
    int64_t not_before_ns;    /* the next request not before this */
    bool have_held;
    item_t held;
    /* the queue (a ring) and the message handed out last */
    item_t *q;
    size_t qhead, qn, qcap;
    item_t out;
    subscriber_stats_t st;
};

/* ---- items and the queue ---- */

static void s_item_free(item_t *it)
{
    free(it->topic);
    free(it->data);
    free(it->text);
    memset(it, 0, sizeof *it);
}

/* A copy of topic[0..tl) as a new string; NULL on out of memory. */
static char *s_strndup(const char *topic, size_t tl)
{
    char *s = malloc(tl + 1);
    if (s) {
        memcpy(s, topic, tl);
        s[tl] = '\0';
    }
    return s;
}

/* Pushes *it (ownership moves; *it is cleared). An item that cannot be
   queued (out of memory) is dropped and freed. */
static void s_push(subscriber_t *self, item_t *it)
{
    if (self->qn == self->qcap) {
        size_t cap = self->qcap ? self->qcap * 2 : 16;
        item_t *q = malloc(cap * sizeof *q);
        if (!q) {
            s_item_free(it);
            return;
        }
        for (size_t i = 0; i < self->qn; i++)
            q[i] = self->q[(self->qhead + i) % self->qcap];
        free(self->q);
        self->q = q;
        self->qcap = cap;
        self->qhead = 0;
    }
    self->q[(self->qhead + self->qn) % self->qcap] = *it;
    self->qn++;
    memset(it, 0, sizeof *it);
}

/* Pushes a note (GAP, RESET, LOST, BAD) about topic ("" = global_seq). */
static void s_note(subscriber_t *self, int kind, const char *topic, uint64_t first, uint64_t next,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void s_note(subscriber_t *self, int kind, const char *topic, uint64_t first, uint64_t next,
                   const char *fmt, ...)
{
    item_t it = {.kind = kind, .first = first, .next = next};
    if (topic && topic[0])
        it.topic = s_strndup(topic, strlen(topic));
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(it.detail, sizeof it.detail, fmt, ap);
        va_end(ap);
    }
    switch (kind) {
    case SUBSCRIBER_LOST:
        self->st.lost += next - first;
        break;
    case SUBSCRIBER_BAD:
        self->st.bad++;
        break;
    case SUBSCRIBER_RESET:
        self->st.resets++;
        break;
    default:
        break;
    }
    s_push(self, &it);
}

/* ---- gap checks and hand-out ---- */

static feed_t *s_feed(subscriber_t *self, const char *topic)
{
    for (feed_t *f = self->feeds; f; f = f->next)
        if (strcmp(f->topic, topic) == 0)
            return f;
    size_t tl = strlen(topic);
    feed_t *f = calloc(1, sizeof *f + tl + 1);
    if (!f)
        return NULL;
    memcpy(f->topic, topic, tl);
    f->next = self->feeds;
    self->feeds = f;
    return f;
}

static bool s_wanted(const subscriber_t *self, const char *topic)
{
    return strncmp(topic, self->prefix, self->prefix_len) == 0;
}

/* Hands out an event (ownership of *ev moves): its topic's stream_seq
   check first, then the event; filtered out when its topic is not ours. */
static void s_deliver(subscriber_t *self, item_t *ev)
{
    const char *topic = ev->topic ? ev->topic : "";
    if (!s_wanted(self, topic)) {
        s_item_free(ev);
        return;
    }
    uint64_t seq = ev->ck.stream_seq;
    feed_t *f = s_feed(self, topic);
    if (f && f->seq && seq > f->seq + 1) {
        self->st.gaps++;
        self->st.missing += seq - f->seq - 1;
        s_note(self, SUBSCRIBER_GAP, topic, f->seq + 1, seq, NULL);
    } else if (f && f->seq && seq <= f->seq) {
        s_note(self, SUBSCRIBER_RESET, topic, f->seq, seq, NULL);
    }
    if (f)
        f->seq = seq;
    self->st.events++;
    if (ev->replayed)
        self->st.replayed++;
    s_push(self, ev);
}

static void s_lost(subscriber_t *self, uint64_t first, uint64_t next, const char *why)
{
    if (next > first)
        s_note(self, SUBSCRIBER_LOST, "", first, next, "%s", why);
}

/* ---- the replay endpoint ---- */

static void s_replay_close(subscriber_t *self)
{
    if (self->replay) {
        zmq_close(self->replay); /* LINGER 0 was set */
        self->replay = NULL;
    }
    self->req_out = false;
}

/* A socket with LINGER 0; 0 or -errno. */
static int s_client_socket_plain(subscriber_t *self, int type, void **out)
{
    void *s = zmq_socket(self->ctx, type);
    if (!s)
        return -zmq_errno();
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    *out = s;
    return 0;
}

/* The same, a CURVE client when keys were given. */
static int s_client_socket(subscriber_t *self, int type, void **out)
{
    int rc = s_client_socket_plain(self, type, out);
    if (rc == 0 && self->curve && (rc = fp_curve_client_socket(*out, self->server_z85, &self->kp)) != 0) {
        zmq_close(*out);
        *out = NULL;
    }
    return rc;
}

static void s_fill_start(subscriber_t *self, uint64_t from, uint64_t to)
{
    self->filling = true;
    self->bounded = to != UINT64_MAX;
    self->cur = from;
    self->to = to;
    self->req_out = false;
    self->retries = 0;
    self->not_before_ns = 0;
}

static void s_accept(subscriber_t *self, item_t *ev);

/* Ends the fill: the position moves past what it covered (what it could
   not get was reported LOST), then the held live event goes on. */
static void s_fill_end(subscriber_t *self)
{
    self->filling = false;
    uint64_t done = self->bounded ? self->to - 1 : self->cur - 1;
    if (done > 0 && (!self->have_last || self->last_g < done)) {
        self->have_last = true;
        self->last_g = done;
    }
    if (self->have_held) {
        item_t ev = self->held;
        memset(&self->held, 0, sizeof self->held);
        self->have_held = false;
        s_accept(self, &ev);
    }
}

/* The fill cannot go on: a bounded one reports the rest LOST; a catch-up
   (unbounded) just stops, and the next event or heartbeat asks again for
   what it still misses, bounded. */
static void s_fill_fail(subscriber_t *self, const char *why)
{
    if (self->bounded)
        s_lost(self, self->cur, self->to, why);
    s_fill_end(self);
}

static int s_ms_until(int64_t until)
{
    if (until == INT64_MAX)
        return -1;
    int64_t left = until - fp_now_ns();
    if (left <= 0)
        return 0;
    left = (left + 999999) / 1000000;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* Receives one message (at most keep frames kept; the count of all
   returned). 0 when the socket had nothing after all. */
static int s_recv_parts(void *sock, zmq_msg_t *parts, int keep)
{
    int n = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        bool more = zmq_msg_more(&m);
        if (n < keep)
            parts[n] = m;
        else
            zmq_msg_close(&m);
        n++;
        if (!more)
            break;
    }
    return n;
}

static void s_close_parts(zmq_msg_t *parts, int n, int keep)
{
    for (int i = 0; i < n && i < keep; i++)
        zmq_msg_close(&parts[i]);
}

/* Decodes [topic][bytes] into an EVENT item: 0, or -1 with a BAD pushed
   (what names the source: "" live, "replay: "). */
static int s_decode(subscriber_t *self, zmq_msg_t *parts, const char *what, item_t *ev)
{
    size_t tl = zmq_msg_size(&parts[0]), len = zmq_msg_size(&parts[1]);
    memset(ev, 0, sizeof *ev);
    ev->kind = SUBSCRIBER_EVENT;
    if (tl == 0 || tl > S_TOPIC_MAX || memchr(zmq_msg_data(&parts[0]), '\0', tl)) {
        s_note(self, SUBSCRIBER_BAD, "", 0, 0, "%sunexpected topic (%zu bytes)", what, tl);
        return -1;
    }
    ev->topic = s_strndup(zmq_msg_data(&parts[0]), tl);
    ev->data = malloc(len ? len : 1);
    if (!ev->topic || !ev->data) {
        s_item_free(ev);
        s_note(self, SUBSCRIBER_BAD, "", 0, 0, "%sout of memory", what);
        return -1;
    }
    memcpy(ev->data, zmq_msg_data(&parts[1]), len);
    ev->len = len;
    int rc = fp_codec_checkpoint_decode(ev->data, len, &ev->ck);
    if (rc != FP_CODEC_OK) {
        s_note(self, SUBSCRIBER_BAD, ev->topic, 0, 0, "%sundecodable checkpoint: %s", what,
               fp_codec_strerror(rc));
        s_item_free(ev);
        return -1;
    }
    return 0;
}

/* The END of an answer: "<next> <oldest> <last_committed>". */
static void s_fill_answered(subscriber_t *self, const char *text)
{
    self->req_out = false;
    uint64_t next, oldest, committed;
    if (sscanf(text, "%" SCNu64 " %" SCNu64 " %" SCNu64, &next, &oldest, &committed) != 3) {
        char why[160];
        snprintf(why, sizeof why, "the replay endpoint answered \"%.100s\"", text);
        s_fill_fail(self, why);
        return;
    }
    (void)next; /* cur is the first event not yet got: the same, or smaller after a hole */
    if (self->holed && oldest <= self->cur) {
        if (++self->retries <= S_RETRIES)
            return; /* ask again from cur */
        s_fill_fail(self, "the replay endpoint skipped events");
        return;
    }
    if (self->cur < self->to && oldest > self->cur) {
        uint64_t end = self->bounded && oldest > self->to ? self->to : oldest;
        char why[96];
        snprintf(why, sizeof why, "no longer retained (the oldest kept is %" PRIu64 ")", oldest);
        s_lost(self, self->cur, end, why);
        self->cur = end;
    }
    if ((self->bounded && self->cur >= self->to) || (!self->bounded && self->cur > committed)) {
        s_fill_end(self);
        return;
    }
    if (self->cur == self->before) {
        /* Nothing at cur: the endpoint may not have taken the last
           commit's notice yet (the heartbeat told us first). */
        if (committed < self->cur && ++self->retries <= S_RETRIES) {
            self->not_before_ns = fp_now_ns() + (int64_t)S_RETRY_DELAY_MS * 1000000;
            return;
        }
        char why[96];
        snprintf(why, sizeof why, "the replay endpoint has no such events (last committed %" PRIu64 ")",
                 committed);
        s_fill_fail(self, why);
    }
}

/* One event of an answer. */
static void s_fill_event(subscriber_t *self, zmq_msg_t *parts)
{
    item_t ev;
    if (s_decode(self, parts, "replay: ", &ev) != 0)
        return; /* the next event shows the hole */
    uint64_t g = ev.ck.global_seq;
    if (g < self->cur) {
        self->st.duplicates++;
    } else if (self->holed || (self->bounded && g >= self->to)) {
        /* after a hole: asked again; >= to: the held live event */
    } else if (g > self->cur) {
        self->holed = true; /* not retention (END's oldest says that): ask again */
    } else {
        ev.replayed = true;
        self->have_last = true;
        self->last_g = g;
        self->cur = g + 1;
        s_deliver(self, &ev);
        return;
    }
    s_item_free(&ev);
}

/* One step of the fill: sends the next request, or reads one message of
   the answer. 0: stepped (call again); 1: nothing before `until`; -errno. */
static int s_fill_step(subscriber_t *self, int64_t until)
{
    char why[160];
    if (!self->replay) {
        int rc = s_client_socket(self, ZMQ_DEALER, &self->replay);
        if (rc == 0 && zmq_connect(self->replay, self->replay_ep) != 0)
            rc = -zmq_errno();
        if (rc != 0) {
            s_replay_close(self);
            snprintf(why, sizeof why, "replay endpoint %s: %s", self->replay_ep, zmq_strerror(-rc));
            s_fill_fail(self, why);
            return 0;
        }
    }
    int64_t now = fp_now_ns();
    if (!self->req_out) {
        if (now < self->not_before_ns) {
            int64_t wake = self->not_before_ns < until ? self->not_before_ns : until;
            zmq_poll(NULL, 0, s_ms_until(wake));
            return fp_now_ns() < self->not_before_ns ? 1 : 0;
        }
        uint64_t want = self->batch;
        if (self->bounded && self->to - self->cur < want)
            want = self->to - self->cur;
        char req[64];
        int rl = snprintf(req, sizeof req, "REPLAY %" PRIu64 " %" PRIu64, self->cur, want);
        if (zmq_send(self->replay, req, (size_t)rl, ZMQ_DONTWAIT) != rl) {
            snprintf(why, sizeof why, "cannot send to the replay endpoint %s: %s", self->replay_ep,
                     zmq_strerror(zmq_errno()));
            s_replay_close(self);
            s_fill_fail(self, why);
            return 0;
        }
        self->st.replay_requests++;
        self->req_out = true;
        self->holed = false;
        self->before = self->cur;
        self->deadline_ns = now + (int64_t)self->replay_timeout_ms * 1000000;
    }
    int64_t wait_until = self->deadline_ns < until ? self->deadline_ns : until;
    zmq_pollitem_t it = {self->replay, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&it, 1, s_ms_until(wait_until));
    if (rc < 0)
        return -zmq_errno();
    if (rc == 0) {
        if (fp_now_ns() < self->deadline_ns)
            return 1; /* the caller's timeout; the answer may still come */
        /* A late answer must not be taken for the next request's. */
        s_replay_close(self);
        snprintf(why, sizeof why, "the replay endpoint %s did not answer within %d ms",
                 self->replay_ep, self->replay_timeout_ms);
        s_fill_fail(self, why);
        return 0;
    }
    zmq_msg_t parts[2];
    int n = s_recv_parts(self->replay, parts, 2);
    if (n == 2 && zmq_msg_size(&parts[0]) == 3 && memcmp(zmq_msg_data(&parts[0]), "END", 3) == 0) {
        char text[128];
        size_t bl = zmq_msg_size(&parts[1]);
        snprintf(text, sizeof text, "%.*s", (int)(bl < sizeof text ? bl : sizeof text - 1),
                 (const char *)zmq_msg_data(&parts[1]));
        s_fill_answered(self, text);
    } else if (n == 2) {
        s_fill_event(self, parts);
    } else if (n > 0) {
        s_note(self, SUBSCRIBER_BAD, "", 0, 0, "replay: unexpected message (%d frames)", n);
    }
    s_close_parts(parts, n, 2);
    return 0;
}

/* ---- the live feed ---- */

/* Where a live event goes once the live order is checked (ownership of
   *ev moves): skipped as a duplicate, held for a fill, or handed out. */
static void s_accept(subscriber_t *self, item_t *ev)
{
    uint64_t g = ev->ck.global_seq;
    if (self->track_global && g != 0) {
        if (self->have_last && g <= self->last_g) {
            self->st.duplicates++;
            s_item_free(ev);
            return;
        }
        if (self->have_last && g > self->last_g + 1) {
            self->st.global_gaps++;
            if (self->replay_ep) {
                s_fill_start(self, self->last_g + 1, g);
                self->held = *ev;
                self->have_held = true;
                memset(ev, 0, sizeof *ev);
                return;
            }
            s_note(self, SUBSCRIBER_GAP, "", self->last_g + 1, g, NULL);
        }
        self->have_last = true;
        self->last_g = g;
    }
    s_deliver(self, ev);
}

/* A live event (ownership of *ev moves). */
static void s_live(subscriber_t *self, item_t *ev)
{
    uint64_t g = ev->ck.global_seq;
    if (self->track_global && g != 0) {
        if (self->have_live && g <= self->last_live_g) {
            /* The live feed went back: another floorpost run. */
            s_note(self, SUBSCRIBER_RESET, "", self->last_live_g, g, NULL);
            self->have_last = g > 1;
            self->last_g = g - 1;
        }
        self->have_live = true;
        self->last_live_g = g;
    }
    s_accept(self, ev);
}

/* The feed's heartbeat: {"instance","global_seq","feeds":{topic:seq},"wall_ns"}. */
static void s_heartbeat(subscriber_t *self, const void *body, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    json_t *g = json_object_get(o, "global_seq"), *feeds = json_object_get(o, "feeds");
    if (!json_is_integer(g) || json_integer_value(g) < 0 || (feeds && !json_is_object(feeds))) {
        json_decref(o);
        s_note(self, SUBSCRIBER_BAD, "heartbeat", 0, 0, "heartbeat: not the expected JSON");
        return;
    }
    item_t hb = {.kind = SUBSCRIBER_HEARTBEAT, .global_seq = (uint64_t)json_integer_value(g)};
    json_t *w = json_object_get(o, "wall_ns");
    hb.wall_ns = json_is_integer(w) ? (int64_t)json_integer_value(w) : 0;
    hb.topic = s_strndup("heartbeat", 9);
    hb.data = malloc(len ? len : 1);
    if (hb.data) {
        memcpy(hb.data, body, len);
        hb.len = len;
    }
    self->st.heartbeats++;
    uint64_t gs = hb.global_seq;
    if (self->replay_ep && !self->filling && self->have_last && gs > self->last_g) {
        /* The end of a burst was lost: fetch it now. */
        self->st.global_gaps++;
        s_fill_start(self, self->last_g + 1, gs + 1);
    } else if (!self->replay_ep && self->track_global && self->have_last && gs > self->last_g) {
        self->st.global_gaps++;
        s_note(self, SUBSCRIBER_GAP, "", self->last_g + 1, gs + 1, NULL);
        self->last_g = gs;
    } else if (self->track_global && !self->have_last && gs > 0) {
        /* no event yet: what is committed now is where we start */
        self->have_last = true;
        self->last_g = gs;
    }
    const char *topic;
    json_t *v;
    if (!self->replay_ep && feeds) {
        json_object_foreach(feeds, topic, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || !s_wanted(self, topic))
                continue;
            uint64_t hseq = (uint64_t)json_integer_value(v);
            for (feed_t *f = self->feeds; f; f = f->next) {
                if (strcmp(f->topic, topic) != 0 || !f->seq || hseq <= f->seq)
                    continue;
                self->st.gaps++;
                self->st.missing += hseq - f->seq;
                s_note(self, SUBSCRIBER_GAP, topic, f->seq + 1, hseq + 1, NULL);
                f->seq = hseq;
            }
        }
    }
    json_decref(o);
    s_push(self, &hb);
}

/* A dead letter, [deadletter/REASON][JSON detail][the original bytes]
   (docs/architecture.md, "Dead-letter reasons"): handed out as it is, once
   its topic and detail are checked. The detail is checked the way
   `floorpost deadletters list` checks a stored one: valid JSON with every
   integer read as a double (a u64 above INT64_MAX, which jansson's
   integers cannot hold, passes) and \u0000 allowed (a NUL byte a producer
   sent); it must be an object. Line ends are blanks between its tokens
   (none can be inside a JSON string): made spaces, so it is one line. */
static void s_deadletter(subscriber_t *self, zmq_msg_t *parts)
{
    const char *tp = zmq_msg_data(&parts[0]);
    size_t tl = zmq_msg_size(&parts[0]), jl = zmq_msg_size(&parts[1]);
    size_t pl = zmq_msg_size(&parts[2]);
    if (tl <= S_DL_PREFIX_LEN || tl > S_TOPIC_MAX || memcmp(tp, S_DL_PREFIX, S_DL_PREFIX_LEN) != 0 ||
        memchr(tp, '\0', tl)) {
        s_note(self, SUBSCRIBER_BAD, "", 0, 0, "unexpected message (3 frames, topic of %zu bytes "
               "not deadletter/REASON)", tl);
        return;
    }
    item_t it = {.kind = SUBSCRIBER_DEADLETTER};
    it.topic = s_strndup(tp, tl);
    if (!it.topic || !s_wanted(self, it.topic)) {
        s_item_free(&it);
        return;
    }
    json_error_t je;
    json_t *v = json_loadb(zmq_msg_data(&parts[1]), jl, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &je);
    bool parsed = v != NULL, object = json_is_object(v);
    json_decref(v);
    if (!object || jl > S_DL_DETAIL_MAX) {
        s_note(self, SUBSCRIBER_BAD, it.topic, 0, 0, "dead letter: the detail (%zu bytes) is not "
               "a JSON object: %s", jl, !parsed ? je.text : object ? "too long" : "another value");
        s_item_free(&it);
        return;
    }
    it.text = s_strndup(zmq_msg_data(&parts[1]), jl);
    it.data = malloc(pl ? pl : 1);
    if (!it.text || !it.data) {
        s_item_free(&it);
        s_note(self, SUBSCRIBER_BAD, "", 0, 0, "dead letter: out of memory");
        return;
    }
    for (char *c = it.text; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    memcpy(it.data, zmq_msg_data(&parts[2]), pl);
    it.len = pl;
    self->st.deadletters++;
    s_push(self, &it);
}

/* The SUB's socket monitor: a refused CURVE handshake. */
static void s_monitor_event(subscriber_t *self)
{
    zmq_msg_t parts[2];
    int n = s_recv_parts(self->monitor, parts, 2);
    if (n >= 1 && zmq_msg_size(&parts[0]) >= 6) {
        uint16_t event;
        uint32_t value;
        memcpy(&event, zmq_msg_data(&parts[0]), 2);
        memcpy(&value, (char *)zmq_msg_data(&parts[0]) + 2, 4);
        bool auth = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
        item_t it = {.kind = SUBSCRIBER_REFUSED, .global_seq = auth ? value : 0};
        if (auth && value == 400)
            snprintf(it.detail, sizeof it.detail, "floorpost at %s refused this subscriber's "
                     "CURVE key (ZAP 400: not on its allow list)", self->endpoint);
        else if (auth)
            snprintf(it.detail, sizeof it.detail, "floorpost at %s refused this subscriber's "
                     "CURVE key (ZAP %u)", self->endpoint, (unsigned)value);
        else
            snprintf(it.detail, sizeof it.detail, "the CURVE handshake with %s failed "
                     "(protocol error %#x: a wrong server key?)", self->endpoint, (unsigned)value);
        self->st.refused++;
        s_push(self, &it);
    }
    s_close_parts(parts, n, 2);
}

/* Reads one live message into the queue. 1: read; 0: nothing before until;
   -errno. */
static int s_read_live(subscriber_t *self, int64_t until)
{
    zmq_pollitem_t its[2] = {{self->sub, 0, ZMQ_POLLIN, 0}, {self->monitor, 0, ZMQ_POLLIN, 0}};
    int rc = zmq_poll(its, self->monitor ? 2 : 1, s_ms_until(until));
    if (rc < 0)
        return -zmq_errno();
    if (rc == 0)
        return 0;
    if (self->monitor && (its[1].revents & ZMQ_POLLIN)) {
        s_monitor_event(self);
        return 1;
    }
    zmq_msg_t parts[3];
    int n = s_recv_parts(self->sub, parts, 3);
    if (n == 0)
        return 1;
    const char *tp = zmq_msg_data(&parts[0]);
    size_t tl = zmq_msg_size(&parts[0]);
    if (n == 2 && tl == 9 && memcmp(tp, "heartbeat", 9) == 0) {
        s_heartbeat(self, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]));
    } else if (n == 3 && self->deadletters) {
        s_deadletter(self, parts);
    } else if (n != 2) {
        s_note(self, SUBSCRIBER_BAD, "", 0, 0, "unexpected message (%d frames)", n);
    } else {
        item_t ev;
        if (s_decode(self, parts, "", &ev) == 0)
            s_live(self, &ev);
    }
    s_close_parts(parts, n, 3);
    return 1;
}

/* ---- the API ---- */

subscriber_t *subscriber_new(void *zmq_ctx, const subscriber_opts_t *o, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (!zmq_ctx || !o || !o->endpoint || !o->endpoint[0]) {
        snprintf(err, errlen, "subscriber: no zmq context or no feed endpoint");
        return NULL;
    }
    int nkeys = !!o->server_key_z85 + !!o->public_key_z85 + !!o->secret_key_z85;
    if (nkeys != 0 && nkeys != 3) {
        snprintf(err, errlen, "subscriber: CURVE needs the server's public key and a key pair "
                              "(all three keys), %d given", nkeys);
        return NULL;
    }
    if (nkeys == 3 && (!fp_curve_z85_valid(o->server_key_z85, strlen(o->server_key_z85)) ||
                       !fp_curve_z85_valid(o->public_key_z85, strlen(o->public_key_z85)) ||
                       !fp_curve_z85_valid(o->secret_key_z85, strlen(o->secret_key_z85)))) {
        snprintf(err, errlen, "subscriber: a CURVE key is not %d Z85 characters", FP_CURVE_KEY_Z85);
        return NULL;
    }
    if (o->replay_batch > S_REPLAY_MAX || o->replay_timeout_ms < 0) {
        snprintf(err, errlen, "subscriber: replay_batch must be 0..%d and replay_timeout_ms >= 0",
                 S_REPLAY_MAX);
        return NULL;
    }
    bool replay = o->replay_endpoint && o->replay_endpoint[0];
    if (o->from_global_seq > 0 && !replay) {
        snprintf(err, errlen, "subscriber: from_global_seq %" PRIu64 " needs a replay endpoint",
                 o->from_global_seq);
        return NULL;
    }
    subscriber_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "subscriber: out of memory");
        return NULL;
    }
    self->ctx = zmq_ctx;
    const char *prefix = o->topic_prefix ? o->topic_prefix : "";
    self->prefix = s_strndup(prefix, strlen(prefix));
    self->prefix_len = strlen(prefix);
    self->replay_ep = replay ? s_strndup(o->replay_endpoint, strlen(o->replay_endpoint)) : NULL;
    self->endpoint = s_strndup(o->endpoint, strlen(o->endpoint));
    self->replay_timeout_ms = o->replay_timeout_ms ? o->replay_timeout_ms : SUBSCRIBER_REPLAY_TIMEOUT_MS;
    self->batch = o->replay_batch ? o->replay_batch : SUBSCRIBER_REPLAY_BATCH;
    self->local_filter = replay && prefix[0];
    self->track_global = replay || !prefix[0];
    if (nkeys == 3) {
        self->curve = true;
        snprintf(self->server_z85, sizeof self->server_z85, "%s", o->server_key_z85);
        snprintf(self->kp.public_z85, sizeof self->kp.public_z85, "%s", o->public_key_z85);
        snprintf(self->kp.secret_z85, sizeof self->kp.secret_z85, "%s", o->secret_key_z85);
    }
    if (!self->prefix || !self->endpoint || (replay && !self->replay_ep)) {
        snprintf(err, errlen, "subscriber: out of memory");
        goto fail;
    }
    int rc = s_client_socket(self, ZMQ_SUB, &self->sub);
    if (rc != 0) {
        snprintf(err, errlen, "subscriber: feed %s: %s", o->endpoint, zmq_strerror(-rc));
        goto fail;
    }
    int hwm = 0; /* never drop here: a gap then means a loss upstream */
    const char *topic = self->local_filter ? "" : prefix;
    if (zmq_setsockopt(self->sub, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(self->sub, ZMQ_SUBSCRIBE, topic, strlen(topic)) != 0 ||
        (topic[0] && zmq_setsockopt(self->sub, ZMQ_SUBSCRIBE, "heartbeat", 9) != 0)) {
        snprintf(err, errlen, "subscriber: feed %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (self->curve) {
        /* A refused key would otherwise look like a silent feed. */
        char mep[64];
        snprintf(mep, sizeof mep, "inproc://floorpost-subscriber-%p", (void *)self);
        if (zmq_socket_monitor(self->sub, mep, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                                   ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0 ||
            s_client_socket_plain(self, ZMQ_PAIR, &self->monitor) != 0 ||
            zmq_connect(self->monitor, mep) != 0) {
            snprintf(err, errlen, "subscriber: feed %s: socket monitor: %s", o->endpoint,
                     zmq_strerror(zmq_errno()));
            goto fail;
        }
    }
    if (zmq_connect(self->sub, o->endpoint) != 0) {
        snprintf(err, errlen, "subscriber: feed %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (o->from_global_seq > 0) {
        /* The SUB is connected first: what is published meanwhile waits
           there, and the overlap is skipped as duplicates. */
        self->have_last = true; /* last_g 0: global_seq 1 comes next */
        self->last_g = o->from_global_seq - 1;
        s_fill_start(self, o->from_global_seq, UINT64_MAX);
    }
    return self;
fail:
    subscriber_destroy(&self);
    return NULL;
}

void subscriber_destroy(subscriber_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    subscriber_t *self = *self_p;
    if (self->monitor)
        zmq_close(self->monitor);
    if (self->sub)
        zmq_close(self->sub);
    s_replay_close(self);
    for (size_t i = 0; i < self->qn; i++)
        s_item_free(&self->q[(self->qhead + i) % self->qcap]);
    free(self->q);
    s_item_free(&self->out);
    s_item_free(&self->held);
    while (self->feeds) {
        feed_t *f = self->feeds->next;
        free(self->feeds);
        self->feeds = f;
    }
    free(self->prefix);
    free(self->endpoint);
    free(self->replay_ep);
    explicit_bzero(&self->kp, sizeof self->kp);
    free(self);
    *self_p = NULL;
}

int subscriber_recv(subscriber_t *self, subscriber_msg_t *msg, int timeout_ms)
{
    s_item_free(&self->out);
    int64_t until = timeout_ms < 0 ? INT64_MAX : fp_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (self->qn > 0) {
            self->out = self->q[self->qhead];
            self->qhead = (self->qhead + 1) % self->qcap;
            self->qn--;
            const item_t *it = &self->out;
            memset(msg, 0, sizeof *msg);
            msg->kind = it->kind;
            msg->topic = it->topic ? it->topic : "";
            if (it->kind == SUBSCRIBER_EVENT)
                msg->ck = it->ck;
            msg->data = it->data;
            msg->len = it->len;
            msg->replayed = it->replayed;
            msg->first = it->first;
            msg->next = it->next;
            msg->global_seq = it->global_seq;
            msg->wall_ns = it->wall_ns;
            msg->detail = it->text ? it->text : it->detail;
            return 1;
        }
        if (self->filling) {
            int rc = s_fill_step(self, until);
            if (rc != 0)
                return rc < 0 ? rc : 0;
        } else {
            int rc = s_read_live(self, until);
            if (rc <= 0)
                return rc;
        }
    }
}

int subscriber_run(subscriber_t *self, subscriber_fn *fn, void *arg, int idle_timeout_ms)
{
    for (;;) {
        subscriber_msg_t m;
        int rc = subscriber_recv(self, &m, idle_timeout_ms);
        if (rc <= 0)
            return rc;
        rc = fn(&m, arg);
        if (rc != 0)
            return rc;
    }
}

uint64_t subscriber_position(const subscriber_t *self)
{
    return self->have_last ? self->last_g : 0;
}

void subscriber_accept_deadletters(subscriber_t *self)
{
    self->deadletters = true;
}

const subscriber_stats_t *subscriber_stats(const subscriber_t *self)
{
    return &self->st;
}

const char *subscriber_kind_name(int kind)
{
    static const char *const names[] = {"?",   "event", "gap",     "reset",     "lost",
                                        "bad", "heartbeat", "refused", "deadletter"};
    return kind >= SUBSCRIBER_EVENT && kind <= SUBSCRIBER_DEADLETTER ? names[kind] : "?";
}

int subscriber_decode(const void *buf, size_t len, fp_checkpoint_t *ck)
{
    if (((uintptr_t)buf & 7) != 0)
        return SUBSCRIBER_UNALIGNED;
    return fp_codec_checkpoint_decode(buf, len, ck);
}

const char *subscriber_decode_error(int rc)
{
    if (rc == SUBSCRIBER_UNALIGNED)
        return "unaligned (copy the bytes to malloc'd memory first)";
    return fp_codec_strerror(rc);
}
