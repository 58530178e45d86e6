/*  peerrate.c - token buckets per peer. See peerrate.h.

    Tokens are kept in millitokens (1 token = 1000) so that refills of less
    than a token per call are not lost: a bucket gains per_s millitokens a
    millisecond, up to per_s * 1000.
*/
#include "peerrate.h"

#include <assert.h>
#include <stdlib.h>

typedef struct {
    uint64_t peer;     /* 0 with used == false: empty */
    int64_t at_ns;     /* when milli was last brought up to date */
    uint64_t milli;    /* millitokens */
    bool used;
} s_slot_t;

struct peerrate {
    uint64_t per_s;
    uint64_t seed;
    s_slot_t slots[PEERRATE_SLOTS];
};

static uint64_t s_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

peerrate_t *peerrate_new(uint32_t per_s)
{
    if (per_s == 0)
        return NULL;
    peerrate_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->per_s = per_s;
    self->seed = s_mix((uint64_t)(uintptr_t)self ^ 0x9e3779b97f4a7c15ULL);
    return self;
}

void peerrate_destroy(peerrate_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

bool peerrate_take(peerrate_t *self, uint64_t peer, int64_t now_ns)
{
    assert(self);
    uint64_t full = self->per_s * 1000;
    s_slot_t *s = &self->slots[s_mix(peer ^ self->seed) % PEERRATE_SLOTS];
    if (!s->used || s->peer != peer) {
        *s = (s_slot_t){.peer = peer, .at_ns = now_ns, .milli = full, .used = true};
    } else if (now_ns > s->at_ns) {
        uint64_t ms = (uint64_t)(now_ns - s->at_ns) / 1000000;
        if (ms > 0) {
            uint64_t add = ms >= 1000 ? full : ms * self->per_s;
            s->milli = full - s->milli <= add ? full : s->milli + add;
            s->at_ns += (int64_t)ms * 1000000;
        }
    }
    if (s->milli < 1000)
        return false;
    s->milli -= 1000;
    return true;
}
