/*  subscriber.h - the subscriber client: follows floorpost's checkpoint
    feed, decodes each event into a plain C struct (fp_checkpoint_t,
    domain.h), tells the caller when events were lost and, given the replay
    endpoint, fetches them, so that the caller sees every committed event
    once, in global_seq order.

    For subscriber developers (docs/subscribers.md, "Quick start: C").
    `make install` puts this header, domain.h and codec.h beside it in
    PREFIX/include/floorpost/ and the library in PREFIX/lib/
    libfloorpost-gateway.a, with PREFIX/lib/pkgconfig/floorpost.pc:
        cc my_sub.c $(pkg-config --cflags --libs floorpost)
    and #include <floorpost/subscriber.h>.

    THE FEED (docs/subscribers.md). floorpost's `publish` endpoint is a PUB
    socket; each event is [topic "kind/PLANT/LINE"][Checkpoint]. Every event
    carries stream_seq (1, 2, 3, ... per topic) and global_seq (1, 2, 3, ...
    across the topics of one floorpost instance, also across restarts).
    Once every feed_heartbeat_ms the feed carries ["heartbeat"][JSON]: the
    last committed global_seq and each topic's last stream_seq, so a loss
    at the end of a burst shows without waiting for the next event.

    WHAT YOU GET. subscriber_recv hands out one message at a time:
      SUBSCRIBER_EVENT      a checkpoint (decoded and verified)
      SUBSCRIBER_GAP        events are missing: numbers first..next-1 of a
                            topic's stream_seq (topic set) or of global_seq
                            (topic ""), shown by a later event or by the
                            heartbeat. Only without a replay endpoint: with
                            one, the gap is filled instead (or reported LOST)
      SUBSCRIBER_RESET      a number went back (topic's stream_seq, or the
                            live global_seq for topic ""): floorpost restarted
                            without its state, or its state was restored from
                            an older copy (docs/operations.md)
      SUBSCRIBER_LOST       replay on: global_seq first..next-1 could not be
                            replayed (no longer retained, or the endpoint did
                            not answer); `detail` says which
      SUBSCRIBER_BAD        a message that is not a checkpoint (a garbage
                            frame, a wrong frame count, a newer version),
                            skipped; `detail` says why
      SUBSCRIBER_HEARTBEAT  the feed's heartbeat (global_seq, wall_ns)
      SUBSCRIBER_REFUSED    CURVE: floorpost refused the handshake (`detail`
                            says why; `global_seq` holds the ZAP status, 400
                            = the key is not on floorpost's allow list).
                            libzmq tries again, so a key added to the allow
                            list later gets through; most callers stop here
      SUBSCRIBER_DEADLETTER API 2, only after subscriber_accept_deadletters:
                            a dead letter (below)
    A GAP or RESET comes just before the event that revealed it.

    THE DEAD-LETTER FEED (API 2). floorpost's `deadletter` endpoint is a
    second PUB; each message is [topic "deadletter/REASON"][JSON detail]
    [the original bytes] (docs/architecture.md, "Dead-letter reasons"). It
    has no sequence numbers, no heartbeat and no replay: what a subscriber
    misses while it is away stays in floorpost's state (`floorpost
    deadletters list`). After subscriber_accept_deadletters such a message
    comes as SUBSCRIBER_DEADLETTER: topic "deadletter/REASON", detail the
    JSON detail (an object, checked, NUL-terminated, on one line; integers
    may exceed INT64_MAX, so read them as unsigned 64-bit or as text), data
    and len the original bytes (a batch or a frame, not verified; 8-byte
    aligned). The topic prefix filters dead letters too ("deadletter/too_old").
    Without that call a dead letter is a BAD (a wrong frame count). The
    same subscriber may take either feed: `floorpost tail` does.

    REPLAY (replay_endpoint set). The library keeps the last global_seq it
    handed out. A live event with a larger one than last + 1, or a
    heartbeat ahead of it, starts a fill: it asks the replay endpoint
    (REPLAY <from> <max> on a DEALER; the answer is contiguous and its END
    names the first event not sent) and hands out the missing events
    (replayed = true) before the live one. Events it already handed out
    (a replay overlapping the live feed) are skipped. With a topic prefix,
    the SUB subscribes to everything and filters here, since global_seq
    counts every topic. from_global_seq N first catches up from N to what
    floorpost has committed (a restart: N = your stored last + 1), then
    goes live. Without replay, global_seq is checked only when the prefix is
    "" (otherwise other topics' events would look like gaps); stream_seq is
    checked per topic always.

    CURVE: set server_key_z85, public_key_z85 and secret_key_z85 (40 Z85
    characters each; fp_curve_key_load in curve.h reads `floorpost keygen`
    files). They apply to the feed and to the replay endpoint. A key
    floorpost does not list receives no event: the feed's handshake
    failure comes as SUBSCRIBER_REFUSED.

    Thread contract: a subscriber and its sockets belong to the thread that
    created it; create, use and destroy it on that one thread. The zmq
    context may be shared. Everything happens inside the calls; there is no
    background thread. Bytes from the network are untrusted: they are
    verified and never asserted on.
*/
#ifndef FP_SUBSCRIBER_H
#define FP_SUBSCRIBER_H

/* The API's version. Changes are additive: a program written against an
   older one compiles and runs unchanged.
     1  the feed, gaps, replay, heartbeat, CURVE (floorpost 0.2.0)
     2  the dead-letter feed: subscriber_accept_deadletters,
        SUBSCRIBER_DEADLETTER, subscriber_stats_t.deadletters */
#define SUBSCRIBER_API_VERSION 2

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain.h" /* installed beside it: <floorpost/domain.h> */

typedef struct subscriber subscriber_t;

#define SUBSCRIBER_REPLAY_BATCH 1000     /* default events asked per REPLAY request */
#define SUBSCRIBER_REPLAY_TIMEOUT_MS 5000 /* default wait for a replay answer */

typedef struct {
    const char *endpoint;        /* required: floorpost's feed (`publish`), e.g. tcp://host:5570 */
    const char *topic_prefix;    /* NULL or "": every topic; "completion/": every completion */
    const char *replay_endpoint; /* NULL: report gaps only; set: fill them (tcp://host:5572) */
    uint64_t from_global_seq;    /* replay: > 0 first catches up from here; 0: start live */
    int replay_timeout_ms;       /* longest wait for a replay answer; 0 = default */
    uint32_t replay_batch;       /* events per REPLAY request, 1..10000; 0 = default */
    const char *server_key_z85;  /* CURVE: floorpost's public key; NULL = plain */
    const char *public_key_z85;  /* CURVE: this subscriber's key pair */
    const char *secret_key_z85;
} subscriber_opts_t;

typedef enum {
    SUBSCRIBER_EVENT = 1,
    SUBSCRIBER_GAP,
    SUBSCRIBER_RESET,
    SUBSCRIBER_LOST,
    SUBSCRIBER_BAD,
    SUBSCRIBER_HEARTBEAT,
    SUBSCRIBER_REFUSED,
    SUBSCRIBER_DEADLETTER, /* API 2 */
} subscriber_kind_t;

/* One message. Everything it points to stays valid until the next
   subscriber_recv or subscriber_destroy on the same subscriber. */
typedef struct {
    int kind;             /* subscriber_kind_t */
    const char *topic;    /* never NULL: the event's topic; "" = global_seq (GAP, RESET) */
    fp_checkpoint_t ck;   /* EVENT: strings point into `data` */
    const void *data;     /* EVENT: the Checkpoint bytes (8-byte aligned); BAD,
                             HEARTBEAT, DEADLETTER: the message's last frame */
    size_t len;
    bool replayed;        /* EVENT: it came from the replay endpoint */
    uint64_t first, next; /* GAP, LOST: the numbers first..next-1 are missing;
                             RESET: first = the last one before, next = the new one */
    uint64_t global_seq;  /* HEARTBEAT: the last committed global_seq; REFUSED: the
                             ZAP status (0: a protocol error, e.g. a wrong server key) */
    int64_t wall_ns;      /* HEARTBEAT: floorpost's clock, ns since 1970 UTC */
    const char *detail;   /* LOST, BAD: why, one line; DEADLETTER: the JSON detail;
                             "" otherwise */
} subscriber_msg_t;

typedef struct {
    uint64_t events;       /* EVENTs handed out (live and replayed) */
    uint64_t replayed;     /* of them from the replay endpoint */
    uint64_t gaps;         /* topic GAPs handed out */
    uint64_t missing;      /* stream_seq numbers in them */
    uint64_t global_gaps;  /* global_seq gaps seen (filled or reported) */
    uint64_t resets;       /* RESETs handed out */
    uint64_t lost;         /* global_seq numbers reported LOST */
    uint64_t bad;          /* BADs handed out */
    uint64_t heartbeats;   /* HEARTBEATs handed out */
    uint64_t duplicates;   /* events skipped: their global_seq was handed out already */
    uint64_t replay_requests; /* REPLAY requests sent */
    uint64_t refused;      /* REFUSEDs handed out */
    uint64_t deadletters;  /* API 2: DEADLETTERs handed out */
} subscriber_stats_t;

/* Creates a SUB in zmq_ctx (not owned) and connects it (the replay DEALER
   is made when first needed). NULL on a bad option or a zmq error, with
   the reason in err (may be NULL). */
subscriber_t *subscriber_new(void *zmq_ctx, const subscriber_opts_t *opts, char *err,
                             size_t errlen);

/* Closes the sockets (linger 0) and frees *self_p, setting it to NULL;
   NULL-safe. */
void subscriber_destroy(subscriber_t **self_p);

/* The next message into *msg: 1; 0 when nothing came within timeout_ms
   (-1: wait forever; 0: do not wait); -EINTR (a signal: check your stop
   flag and call again), -ETERM (the context was terminated) or another
   -errno. A fill in progress is resumed by the next call. */
int subscriber_recv(subscriber_t *self, subscriber_msg_t *msg, int timeout_ms);

/* The callback API: calls fn for each message until fn returns non-zero
   (returned), nothing came for idle_timeout_ms (-1: never; returns 0), or
   an error (-errno, as subscriber_recv; -EINTR included). */
typedef int subscriber_fn(const subscriber_msg_t *msg, void *arg);
int subscriber_run(subscriber_t *self, subscriber_fn *fn, void *arg, int idle_timeout_ms);

/* API 2: from now on, dead letters (3 frames, topic deadletter/REASON)
   come as SUBSCRIBER_DEADLETTER instead of BAD. Call it before the first
   subscriber_recv: what came earlier was a BAD. */
void subscriber_accept_deadletters(subscriber_t *self);

/* The last global_seq handed out or skipped as reported lost (0: none
   yet): store it with your postings, and resume from it + 1. */
uint64_t subscriber_position(const subscriber_t *self);

/* Counters since subscriber_new; valid until subscriber_destroy. */
const subscriber_stats_t *subscriber_stats(const subscriber_t *self);

/* The kind's name ("event", "gap", ...); "?" for a value out of range. */
const char *subscriber_kind_name(int kind);

/* Verifies a Checkpoint buffer (buf 8-byte aligned: malloc's are; a
   zmq_msg_t's data need not be) and fills *ck, whose strings point into
   buf. 0, or a negative code (FP_CODEC_* of codec.h, SUBSCRIBER_UNALIGNED)
   whose text is subscriber_decode_error(rc). */
#define SUBSCRIBER_UNALIGNED (-100)
int subscriber_decode(const void *buf, size_t len, fp_checkpoint_t *ck);
const char *subscriber_decode_error(int rc);

#endif
