/*  peerrate.h - a bound on new sources per peer and second.

    A token bucket per peer (a 64-bit hash of who sent a frame: its CURVE
    key or its connection, input.h): each peer may take `per_s` tokens a
    second, and at most `per_s` at once (the bucket starts full). The
    worker takes one token for every source it has never seen (neither in
    memory nor in the state), so a peer that floods new source ids is
    refused (too_many_new_sources) while its known sources and every other
    peer go on.

    Peers live in a fixed table of PEERRATE_SLOTS slots, direct-mapped by a
    seeded hash: memory is fixed whatever the peers do; a peer that lands
    on a slot held by another takes it over with a full bucket (with CURVE
    the peers are the allow file's keys, few).

    One peerrate_t belongs to one thread (a worker). Pure logic: the caller
    gives the time.
*/
#ifndef FP_PEERRATE_H
#define FP_PEERRATE_H

#include <stdbool.h>
#include <stdint.h>

#define PEERRATE_SLOTS 1024

typedef struct peerrate peerrate_t;

/* per_s >= 1: tokens per second and bucket size. NULL when out of memory
   or per_s is 0. Free with peerrate_destroy. */
peerrate_t *peerrate_new(uint32_t per_s);

/* Frees *self_p and sets it to NULL; NULL-safe. */
void peerrate_destroy(peerrate_t **self_p);

/* Takes a token of peer at now_ns (monotonic): true if it had one. */
bool peerrate_take(peerrate_t *self, uint64_t peer, int64_t now_ns);

#endif
