/*  strtab.c - batch string table: open addressing (linear probing) over
    string indices, strings copied into a chunked arena.

    Invariants:
      - slots[] has a power-of-two capacity, at most half full; a slot holds
        a string index (1-based) or 0 = empty.
      - strs[i], hashes[i], slot_of[i] describe string index i+1.
      - arena chunks never move, so strs[i] stays valid until clear/destroy.
*/
#include "strtab.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define STRTAB_SLOTS_MIN 64u
#define STRTAB_CHUNK_MIN 16384u
#define STRTAB_CHUNK_MAX (1u << 20)

typedef struct {
    char *data;
    size_t size;
} s_chunk_t;

struct strtab {
    uint32_t *slots;   /* capacity = mask + 1 */
    uint32_t mask;
    const char **strs; /* count entries (cap strs_cap) */
    uint32_t *hashes;
    uint32_t *slot_of;
    uint32_t count;
    uint32_t strs_cap;
    s_chunk_t *chunks;
    uint32_t nchunks, chunks_cap;
    uint32_t cur_chunk; /* chunk being filled; == nchunks when none yet */
    size_t chunk_used;  /* bytes used in chunks[cur_chunk] */
    uint64_t bytes;     /* string bytes held, NULs included */
};

/* FNV-1a, 64-bit, folded to 32 bits; sets *len. Any value is fine: empty
   slots are marked by index 0, not by hash. */
static uint32_t s_hash(const char *s, size_t *len)
{
    uint64_t h = 14695981039346656037ull;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        h ^= *p++;
        h *= 1099511628211ull;
    }
    *len = (size_t)(p - (const unsigned char *)s);
    return (uint32_t)(h ^ (h >> 32));
}

strtab_t *strtab_new(void)
{
    strtab_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->slots = calloc(STRTAB_SLOTS_MIN, sizeof(uint32_t));
    if (!self->slots) {
        free(self);
        return NULL;
    }
    self->mask = STRTAB_SLOTS_MIN - 1;
    return self;
}

void strtab_destroy(strtab_t **self_p)
{
    assert(self_p);
    strtab_t *self = *self_p;
    if (!self)
        return;
    for (uint32_t i = 0; i < self->nchunks; i++)
        free(self->chunks[i].data);
    free(self->chunks);
    free(self->slots);
    free(self->strs);
    free(self->hashes);
    free(self->slot_of);
    free(self);
    *self_p = NULL;
}

/* Doubles the slot array and reinserts every index. 0 or -1 on OOM. */
static int s_grow_slots(strtab_t *self)
{
    uint32_t cap = (self->mask + 1) * 2;
    uint32_t *slots = calloc(cap, sizeof(uint32_t));
    if (!slots)
        return -1;
    for (uint32_t i = 0; i < self->count; i++) {
        uint32_t pos = self->hashes[i] & (cap - 1);
        while (slots[pos])
            pos = (pos + 1) & (cap - 1);
        slots[pos] = i + 1;
        self->slot_of[i] = pos;
    }
    free(self->slots);
    self->slots = slots;
    self->mask = cap - 1;
    return 0;
}

static int s_grow_strs(strtab_t *self)
{
    uint32_t cap = self->strs_cap ? self->strs_cap * 2 : 64;
    if (cap > FP_BATCH_STRINGS_MAX)
        cap = FP_BATCH_STRINGS_MAX;
    const char **strs = realloc(self->strs, cap * sizeof(*strs));
    if (!strs)
        return -1;
    self->strs = strs;
    uint32_t *hashes = realloc(self->hashes, cap * sizeof(*hashes));
    if (!hashes)
        return -1;
    self->hashes = hashes;
    uint32_t *slot_of = realloc(self->slot_of, cap * sizeof(*slot_of));
    if (!slot_of)
        return -1;
    self->slot_of = slot_of;
    self->strs_cap = cap;
    return 0;
}

/* n bytes from the arena; NULL on OOM. Reuses chunks kept by clear. */
static char *s_arena_alloc(strtab_t *self, size_t n)
{
    while (self->cur_chunk < self->nchunks) {
        s_chunk_t *c = &self->chunks[self->cur_chunk];
        if (c->size - self->chunk_used >= n) {
            char *p = c->data + self->chunk_used;
            self->chunk_used += n;
            return p;
        }
        self->cur_chunk++;
        self->chunk_used = 0;
    }
    if (self->nchunks == self->chunks_cap) {
        uint32_t cap = self->chunks_cap ? self->chunks_cap * 2 : 8;
        s_chunk_t *chunks = realloc(self->chunks, cap * sizeof(*chunks));
        if (!chunks)
            return NULL;
        self->chunks = chunks;
        self->chunks_cap = cap;
    }
    size_t size = self->nchunks ? self->chunks[self->nchunks - 1].size * 2 : STRTAB_CHUNK_MIN;
    if (size > STRTAB_CHUNK_MAX)
        size = STRTAB_CHUNK_MAX;
    if (size < n)
        size = n;
    char *data = malloc(size);
    if (!data)
        return NULL;
    self->chunks[self->nchunks].data = data;
    self->chunks[self->nchunks].size = size;
    self->cur_chunk = self->nchunks++;
    self->chunk_used = n;
    return data;
}

int strtab_add(strtab_t *self, const char *s)
{
    assert(self);
    if (!s || !*s)
        return 0;
    size_t len;
    uint32_t h = s_hash(s, &len);
    uint32_t pos = h & self->mask;
    for (uint32_t idx; (idx = self->slots[pos]) != 0; pos = (pos + 1) & self->mask) {
        if (self->hashes[idx - 1] == h && strcmp(self->strs[idx - 1], s) == 0)
            return (int)idx;
    }
    if (self->count >= FP_BATCH_STRINGS_MAX)
        return -1;
    if (self->count == self->strs_cap && s_grow_strs(self) != 0)
        return -1;
    char *copy = s_arena_alloc(self, len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len + 1);
    /* Keep the load factor <= 1/2; growing rehashes, so find the slot after. */
    if ((self->count + 1) * 2 > self->mask + 1) {
        if (s_grow_slots(self) != 0)
            return -1;
        pos = h & self->mask;
        while (self->slots[pos])
            pos = (pos + 1) & self->mask;
    }
    uint32_t i = self->count++;
    self->strs[i] = copy;
    self->hashes[i] = h;
    self->slot_of[i] = pos;
    self->slots[pos] = i + 1;
    self->bytes += len + 1;
    return (int)(i + 1);
}

uint32_t strtab_count(const strtab_t *self)
{
    assert(self);
    return self->count;
}

const char *const *strtab_strings(const strtab_t *self)
{
    assert(self);
    return (const char *const *)self->strs;
}

uint64_t strtab_bytes(const strtab_t *self)
{
    assert(self);
    return self->bytes;
}

void strtab_clear(strtab_t *self)
{
    assert(self);
    for (uint32_t i = 0; i < self->count; i++)
        self->slots[self->slot_of[i]] = 0;
    self->count = 0;
    self->bytes = 0;
    self->cur_chunk = 0;
    self->chunk_used = 0;
}
