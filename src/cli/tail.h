/*  tail.h - a feed subscriber that prints: each event (one JSON object
    per line, or a readable line), each dead letter, and on stderr what was
    lost. Built on the subscriber library (src/gateway/subscriber.h), which
    does the rest: the feed's stream_seq, global_seq and heartbeat checks,
    the fills from the replay endpoint, the catch-up, the dead-letter feed
    and CURVE; docs/subscribers.md has the semantics.

    Used by `floorpost tail` (JSON lines) and by `floorpost run`'s demo
    printer (readable lines). Runs on the calling thread with the library's
    sockets (a SUB, and a DEALER for replay).

    What goes where. stdout: every event (live and replayed, in global_seq
    order with a replay endpoint) and every dead letter, as
    {"topic":T,"payload_bytes":N,"detail":{...}}. stderr: a gap per topic
    ("tail: gap on T: expected stream_seq X, got Y", also when only the
    heartbeat shows it), a gap in global_seq (without a replay endpoint and
    without a topic prefix), a number that went back (a floorpost restart
    without its state), what the replay endpoint could not give ("tail:
    global_seq A..B unrecoverable (N events): why") and what is not
    floorpost's. With a replay endpoint the gaps are filled instead.
*/
#ifndef FP_TAIL_H
#define FP_TAIL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "domain.h"

typedef struct {
    const char *endpoint;  /* PUB endpoint to connect to */
    const char *topic;     /* subscription prefix; "" = everything */
    int human;             /* 1: readable lines; 0: one JSON object per line */
    uint64_t max_events;   /* stop after this many events; 0 = no limit */
    int idle_timeout_ms;   /* stop after this long without an event (a heartbeat is
                              none); 0 = never */
    _Atomic int *stop;     /* stop when it becomes non-zero (may be NULL) */
    FILE *out;             /* events; gap reports go to stderr */
    /* CURVE (all three set, 40 Z85 characters each), or NULL for plain: */
    const char *server_key_z85; /* the server's public key */
    const char *public_key_z85; /* this subscriber's key pair */
    const char *secret_key_z85;
    /* Replay (subscriber.h, REPLAY); CURVE keys apply to it too: */
    const char *replay_endpoint; /* floorpost's replay ROUTER; NULL = no filling */
    uint64_t from_global_seq;    /* > 0: catch up from here first (needs replay_endpoint) */
    int replay_timeout_ms;       /* longest wait for a replay answer; 0 = 5000 */
} fp_tail_opts_t;

typedef struct {
    uint64_t events;        /* printed: events (live and replayed) and dead letters */
    uint64_t gaps, missing; /* stream_seq gaps still seen per topic, and events in them */
    uint64_t bad;           /* messages that are not floorpost's, skipped */
    uint64_t replayed;      /* printed events that came from the replay endpoint */
    uint64_t global_gaps;   /* global_seq gaps seen on the live feed */
    uint64_t heartbeats;    /* the feed's heartbeat messages seen */
    int auth_status;        /* CURVE refused: the ZAP status (400 = key not allowed), -1 for
                               another handshake failure; 0 = not refused */
    uint64_t duplicates;    /* events skipped: global_seq already handled */
    uint64_t unrecoverable; /* events the replay endpoint could not give */
    char error[256];        /* why fp_tail returned non-zero */
} fp_tail_stats_t;

/* Subscribes and prints until a stop condition. Returns 0; -EACCES when
   floorpost refused the CURVE key (stats->auth_status: the ZAP status,
   400 = not on its allow list; -1: another handshake failure); -EINVAL
   when the subscriber could not be made (a bad option, an endpoint zmq
   refuses), another -errno on a zmq error; stats->error says why. */
int fp_tail(void *zmq_ctx, const fp_tail_opts_t *opts, fp_tail_stats_t *stats);

/* Formats one checkpoint as a readable line (no newline); returns length. */
int fp_tail_format_human(const char *topic, const fp_checkpoint_t *ck, char *out, size_t cap);

#endif
