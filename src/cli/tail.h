/*  tail.h - a feed subscriber: prints each event, detects stream_seq gaps,
    and, given floorpost's replay endpoint, fills them.

    Used by `floorpost tail` (JSON lines) and by `floorpost run`'s demo
    printer (readable lines). Runs on the calling thread with its own
    sockets (a SUB, and a DEALER for replay).

    Replay (replay_endpoint set). Every event carries global_seq, gap-free
    across all topics of a floorpost instance from 1. The tail remembers the
    last global_seq it handled; an event with a larger one than last + 1
    reveals a gap, which it fills from the replay endpoint before printing
    that event, so the output stays in global_seq order. Events with
    global_seq <= last are duplicates (from a replay overlapping the live
    feed) and are skipped. from_global_seq N first replays N.. up to what
    floorpost has committed (catch-up after a restart), then goes live.
    With replay, the SUB subscribes to every topic and `topic` filters
    locally: a prefix subscription would make every other topic's events
    look like gaps. Events with global_seq 0 (an older floorpost) bypass
    all of this. What the endpoint no longer retains (or does not answer
    within replay_timeout_ms) is reported on stderr as an unrecoverable
    range and counted.

    Replay protocol (DEALER -> floorpost's ROUTER): one frame, text
    "REPLAY <from_global_seq> <max_events>"; the answer is up to max_events
    messages [topic][Checkpoint] with global_seq >= from, in order, then
    ["END"]["<next_global_seq> <oldest_retained> <last_committed>"].
*/
#ifndef FP_TAIL_H
#define FP_TAIL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    const char *endpoint;  /* PUB endpoint to connect to */
    const char *topic;     /* subscription prefix; "" = everything */
    int human;             /* 1: readable lines; 0: one JSON object per line */
    uint64_t max_events;   /* stop after this many events; 0 = no limit */
    int idle_timeout_ms;   /* stop after this long without an event; 0 = never */
    _Atomic int *stop;     /* stop when it becomes non-zero (may be NULL) */
    FILE *out;             /* events; gap reports go to stderr */
    /* CURVE (all three set, 40 Z85 characters each), or NULL for plain: */
    const char *server_key_z85; /* the server's public key */
    const char *public_key_z85; /* this subscriber's key pair */
    const char *secret_key_z85;
    /* Replay (see above); CURVE keys apply to it too: */
    const char *replay_endpoint; /* floorpost's replay ROUTER; NULL = no filling */
    uint64_t from_global_seq;    /* > 0: catch up from here first (needs replay_endpoint) */
    int replay_timeout_ms;       /* longest wait for a replay answer; 0 = 5000 */
} fp_tail_opts_t;

typedef struct {
    uint64_t events;        /* printed (live and replayed) */
    uint64_t gaps, missing; /* stream_seq gaps still seen per topic, and events in them */
    uint64_t bad;           /* undecodable messages */
    uint64_t replayed;      /* printed events that came from the replay endpoint */
    uint64_t global_gaps;   /* global_seq gaps seen on the live feed */
    uint64_t heartbeats;    /* the feed's heartbeat messages seen */
    int auth_status;        /* CURVE refused: the ZAP status (400 = key not allowed), -1 for
                               another handshake failure; 0 = not refused */
    uint64_t duplicates;    /* events skipped: global_seq already handled */
    uint64_t unrecoverable; /* events the replay endpoint could not give */
} fp_tail_stats_t;

/* Subscribes and prints until a stop condition. Returns 0, or -errno when
   the socket could not be set up (-EINVAL: a malformed CURVE key). A key
   floorpost does not list receives nothing (ends by idle_timeout_ms). */
int fp_tail(void *zmq_ctx, const fp_tail_opts_t *opts, fp_tail_stats_t *stats);

/* Formats one checkpoint as a readable line (no newline); returns length. */
int fp_tail_format_human(const char *topic, size_t topic_len, const void *buf, size_t len,
                         char *out, size_t cap);

#endif
