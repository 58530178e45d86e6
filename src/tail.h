/*  tail.h - a feed subscriber: prints each event, detects stream_seq gaps.

    Used by `floorpost tail` (JSON lines) and by `floorpost run`'s demo
    printer (readable lines). Runs on the calling thread with its own socket.
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
} fp_tail_opts_t;

typedef struct {
    uint64_t events, gaps, missing, bad;
} fp_tail_stats_t;

/* Subscribes and prints until a stop condition. Returns 0, or -errno when
   the socket could not be set up (-EINVAL: a malformed CURVE key). A key
   floorpost does not list receives nothing (ends by idle_timeout_ms). */
int fp_tail(void *zmq_ctx, const fp_tail_opts_t *opts, fp_tail_stats_t *stats);

/* Formats one checkpoint as a readable line (no newline); returns length. */
int fp_tail_format_human(const char *topic, size_t topic_len, const void *buf, size_t len,
                         char *out, size_t cap);

#endif
