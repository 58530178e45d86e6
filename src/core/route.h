/*  route.h - the partitioning functions, in one place.

    Live traffic and start-up restore must route exactly alike: a source's
    dedup state must come back to the worker its batches go to, and an
    aggregation key to the shard its operation's records go to. So ingest,
    the workers and the restore code all call these, never a copy.

      source -> worker   XXH3_64(source_id as 8 native-endian bytes) % N
      operation -> shard h = H(plant) ^ rotl(H(order), 21) ^ rotl(H(operation), 42)
                         h *= 0x9E3779B97F4A7C15 (Fibonacci hashing)
                         shard = (h >> 32) % M
    where H = fp_route_str_hash = XXH3_64 of the string's bytes (no NUL).
    N == 1 or M == 1 always gives 0 (and hashes nothing).

    Changing any of these changes where persisted state lives: a state file
    written with one formula must not be restored with another.

    Thread contract: pure functions, callable from any thread.
*/
#ifndef FP_ROUTE_H
#define FP_ROUTE_H

#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>

/* The 64-bit hash of one key string s[0..len) used for shard routing. */
static inline uint64_t
fp_route_str_hash(const char *s, size_t len)
{
    return XXH3_64bits(s, len);
}

static inline uint64_t
fp_route_rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* The shard (0..nshards-1) of an operation, from the fp_route_str_hash of
   its plant, order and operation strings. nshards >= 1. */
static inline uint32_t
fp_route_shard(uint64_t h_plant, uint64_t h_order, uint64_t h_operation, uint32_t nshards)
{
    if (nshards <= 1)
        return 0;
    uint64_t h = h_plant ^ fp_route_rotl(h_order, 21) ^ fp_route_rotl(h_operation, 42);
    h *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)((h >> 32) % (uint64_t)nshards);
}

/* The worker (0..nworkers-1) that owns source_id's dedup state. nworkers >= 1. */
static inline uint32_t
fp_route_worker(uint64_t source_id, uint32_t nworkers)
{
    if (nworkers <= 1)
        return 0;
    return (uint32_t)(XXH3_64bits(&source_id, sizeof source_id) % (uint64_t)nworkers);
}

#endif
