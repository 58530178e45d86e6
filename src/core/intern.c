/*  intern.c - refcounted string interner (see intern.h).

    Layout: symbols live in fixed blocks of S_BLOCK 32-byte records (index =
    symbol id; blocks never move, so a symbol's inline bytes stay put while
    it lives; freed ids go to a free list and are reused). A symbol holds a
    string shorter than INTERN_SHORT bytes inline (with its NUL); a longer
    one is malloc'd and its pointer kept in the inline bytes. A hash table
    with linear probing maps a string to its id; its 32-byte slots hold the
    low 32 bits of the string's XXH3-64 hash, the id, the length and, for a
    short string, a copy of its bytes: looking up a short string reads one
    slot and nothing else (one cache miss in a big table); a long one reads
    its symbol and bytes when the hash bits match. Deletion is backward-shift
    (no tombstones): the home slot of an entry is tag & mask.

    Invariants: slots are a power of two, at most 70% full; id 0 is "" and is
    never in the table; a live symbol has refs >= 1, its string owned here
    (inline when short), and exactly one slot, whose bytes equal the
    symbol's when short; ids < nblocks * S_BLOCK.
*/
#include "intern.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
/* Inlined: XXH3 of short keys is a few ns, a library call doubles it. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#define S_INLINE INTERN_SHORT /* bytes of string (with its NUL) kept in the symbol */
#define S_BLOCK_BITS 10u  /* symbols per block: 1024 x 32 bytes */
#define S_BLOCK (1u << S_BLOCK_BITS)

typedef struct {
    uint32_t tag;  /* low 32 bits of the XXH3-64 hash; the home slot is tag & mask */
    uint32_t len;  /* bytes without the NUL; next free id when free */
    uint32_t refs; /* references held; 0 when free */
    char buf[S_INLINE]; /* len < S_INLINE: the bytes + NUL; else a char * (owned) */
} s_sym_t;

_Static_assert(sizeof(s_sym_t) == 32, "a symbol is half a cache line");

typedef struct {
    uint32_t tag; /* low 32 bits of the hash */
    uint32_t id;  /* symbol id; 0 = empty slot */
    uint32_t len; /* the string's length */
    char bytes[S_INLINE]; /* len < S_INLINE: the string (zero-padded); else unused */
} s_slot_t;

_Static_assert(sizeof(s_slot_t) == 32, "two slots per cache line");

struct intern {
    s_sym_t **blocks;  /* [nblocks], each S_BLOCK symbols, 64-byte aligned; [0][0] is "" */
    uint32_t nblocks;
    uint32_t used;     /* high-water mark of ids handed out (ids < used) */
    uint32_t free_id;  /* head of the free list, 0 = none */
    uint32_t count;    /* live symbols (not counting "") */
    s_slot_t *slots;   /* [mask + 1], 64-byte aligned */
    uint32_t mask;
};

#define S_INITIAL_SLOTS 64u

static inline s_sym_t *s_sym(const intern_t *self, uint32_t id)
{
    return &self->blocks[id >> S_BLOCK_BITS][id & (S_BLOCK - 1)];
}

/* The bytes of a live symbol. */
static inline const char *s_bytes(const s_sym_t *sym)
{
    if (sym->len < S_INLINE)
        return sym->buf;
    char *p;
    memcpy(&p, sym->buf, sizeof p);
    return p;
}

/* a[0..len) == b[0..len), both readable for len bytes. Short strings (the
   common keys: orders, lots, materials) in two overlapping word loads. */
static inline bool s_eq(const char *a, const char *b, uint32_t len)
{
    if (len >= 8 && len <= 16) {
        uint64_t a0, a1, b0, b1;
        memcpy(&a0, a, 8);
        memcpy(&b0, b, 8);
        memcpy(&a1, a + len - 8, 8);
        memcpy(&b1, b + len - 8, 8);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    if (len >= 4 && len < 8) {
        uint32_t a0, a1, b0, b1;
        memcpy(&a0, a, 4);
        memcpy(&b0, b, 4);
        memcpy(&a1, a + len - 4, 4);
        memcpy(&b1, b + len - 4, 4);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    return memcmp(a, b, len) == 0;
}

/* A zeroed slot table, cache-line aligned; NULL on out of memory. */
static s_slot_t *s_slots_new(uint32_t n)
{
    s_slot_t *s = aligned_alloc(64, (size_t)n * sizeof *s);
    if (s)
        memset(s, 0, (size_t)n * sizeof *s);
    return s;
}

/* Adds one block; -1 on out of memory or too many ids. */
static int s_add_block(intern_t *self)
{
    if ((uint64_t)(self->nblocks + 1) * S_BLOCK > INTERN_ID_LIMIT)
        return -1;
    s_sym_t **nb = realloc(self->blocks, (self->nblocks + 1) * sizeof *nb);
    if (!nb)
        return -1;
    self->blocks = nb;
    s_sym_t *b = aligned_alloc(64, S_BLOCK * sizeof *b);
    if (!b)
        return -1;
    self->blocks[self->nblocks++] = b;
    return 0;
}

intern_t *intern_new(void)
{
    intern_t *self = calloc(1, sizeof *self);
    if (!self)
        goto fail;
    self->slots = s_slots_new(S_INITIAL_SLOTS);
    if (!self->slots || s_add_block(self) != 0)
        goto fail;
    *s_sym(self, INTERN_EMPTY) = (s_sym_t){.refs = 1}; /* "", inline */
    self->used = 1;
    self->mask = S_INITIAL_SLOTS - 1;
    return self;
fail:
    intern_destroy(&self);
    return NULL;
}

void intern_destroy(intern_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    intern_t *self = *self_p;
    for (uint32_t i = 1; i < self->used; i++) {
        s_sym_t *sym = s_sym(self, i);
        if (sym->refs && sym->len >= S_INLINE)
            free((void *)s_bytes(sym));
    }
    for (uint32_t b = 0; b < self->nblocks; b++)
        free(self->blocks[b]);
    free(self->blocks);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

/* Doubles the table; -1 on out of memory (the old table stays valid). */
static int s_grow(intern_t *self)
{
    uint32_t ncap = (self->mask + 1) * 2;
    s_slot_t *nslots = s_slots_new(ncap);
    if (!nslots)
        return -1;
    uint32_t nmask = ncap - 1;
    for (uint32_t i = 0; i <= self->mask; i++) {
        s_slot_t s = self->slots[i];
        if (!s.id)
            continue;
        uint32_t j = s.tag & nmask;
        while (nslots[j].id)
            j = (j + 1) & nmask;
        nslots[j] = s;
    }
    free(self->slots);
    self->slots = nslots;
    self->mask = nmask;
    return 0;
}

/* A free symbol id, adding a block; 0 on out of memory. */
static uint32_t s_alloc_id(intern_t *self)
{
    if (self->free_id) {
        uint32_t id = self->free_id;
        self->free_id = s_sym(self, id)->len;
        return id;
    }
    if (self->used == self->nblocks * S_BLOCK && s_add_block(self) != 0)
        return 0;
    return self->used++;
}

/* 64x64 -> 128-bit multiply, halves folded (wyhash's "mum"). */
static inline uint64_t s_mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* Strings up to 16 bytes (orders, operations, lots, materials, units): two
   overlapping word loads and two multiplies, wyhash-style; longer: XXH3.
   Both are well mixed in every bit (the tag is the low 32, the home slot
   its low bits). */
static inline uint64_t s_hash(const char *s, uint32_t len)
{
    uint64_t a, b;
    if (len >= 8 && len <= 16) {
        memcpy(&a, s, 8);
        memcpy(&b, s + len - 8, 8);
    } else if (len >= 4 && len < 8) {
        uint32_t x, y;
        memcpy(&x, s, 4);
        memcpy(&y, s + len - 4, 4);
        a = x;
        b = y;
    } else if (len < 4) {
        a = len ? (uint64_t)(uint8_t)s[0] << 16 | (uint64_t)(uint8_t)s[len / 2] << 8 |
                      (uint8_t)s[len - 1]
                : 0;
        b = 0;
    } else {
        return XXH3_64bits(s, len);
    }
    uint64_t h = s_mum(a ^ 0xa0761d6478bd642full, b ^ 0xe7037ed1a0b428dbull ^ len);
    return s_mum(h ^ 0x8ebc6af09c88c6e3ull, 0x589965cc75374cc3ull);
}

uint64_t intern_hash(const char *s, uint32_t len)
{
    return s_hash(s, len);
}

/* Cache hints for a later lookup of hash h: stage 0 fetches the table slot;
   for a long string (slot's length), stage 1 its symbol (reads the slot)
   and stage 2 its bytes (reads the symbol). */
static inline void s_prefetch(const intern_t *self, uint64_t h, int stage)
{
    uint32_t tag = (uint32_t)h;
    uint32_t i = tag & self->mask;
    if (stage == 0) {
        __builtin_prefetch(&self->slots[i]);
        return;
    }
    for (;;) {
        const s_slot_t *slot = &self->slots[i];
        if (!slot->id)
            return;
        if (slot->tag == tag && slot->len >= S_INLINE) {
            const s_sym_t *sym = s_sym(self, slot->id);
            if (stage == 1)
                __builtin_prefetch(sym);
            else
                __builtin_prefetch(s_bytes(sym));
            return;
        }
        i = (i + 1) & self->mask;
    }
}

/* The slot index holding s (tag from h), or of the empty slot ending its
   probe sequence (*found false). */
static inline uint32_t s_lookup(const intern_t *self, const char *s, uint32_t len, uint32_t tag,
                                bool *found)
{
    uint32_t i = tag & self->mask;
    for (;;) {
        const s_slot_t *slot = &self->slots[i];
        if (!slot->id) {
            *found = false;
            return i;
        }
        if (slot->tag == tag && slot->len == len &&
            s_eq(len < S_INLINE ? slot->bytes : s_bytes(s_sym(self, slot->id)), s, len)) {
            *found = true;
            return i;
        }
        i = (i + 1) & self->mask;
    }
}

#define S_GROUP 256u /* strings prefetched together by intern_find_many */

void intern_find_many(const intern_t *self, uint32_t n, const char *const *s,
                      const uint32_t *len, uint64_t *h, uint32_t *out)
{
    assert(self);
    for (uint32_t base = 0; base < n; base += S_GROUP) {
        uint32_t m = n - base < S_GROUP ? n - base : S_GROUP, longs = 0;
        for (uint32_t i = base; i < base + m; i++) {
            h[i] = s_hash(s[i], len[i]);
            s_prefetch(self, h[i], 0);
            longs |= len[i] >= S_INLINE;
        }
        for (int stage = 1; longs && stage <= 2; stage++)
            for (uint32_t i = base; i < base + m; i++)
                s_prefetch(self, h[i], stage);
        for (uint32_t i = base; i < base + m; i++) {
            bool found;
            uint32_t slot = s_lookup(self, s[i], len[i], (uint32_t)h[i], &found);
            out[i] = len[i] == 0 ? INTERN_EMPTY : found ? self->slots[slot].id : INTERN_ABSENT;
        }
    }
}

uint32_t intern_acquire(intern_t *self, const char *s, uint32_t len)
{
    return intern_acquire_hashed(self, s, len, s_hash(s, len));
}

uint32_t intern_acquire_hashed(intern_t *self, const char *s, uint32_t len, uint64_t h)
{
    assert(self);
    if (len == 0)
        return INTERN_EMPTY;
    uint32_t tag = (uint32_t)h;
    bool found;
    uint32_t i = s_lookup(self, s, len, tag, &found);
    if (found) {
        uint32_t id = self->slots[i].id;
        s_sym(self, id)->refs++;
        return id;
    }
    /* New string: keep the load at most 70% after the insert. */
    if ((uint64_t)(self->count + 1) * 10 > (uint64_t)(self->mask + 1) * 7) {
        if (s_grow(self) != 0)
            return INTERN_NOMEM;
        i = tag & self->mask;
        while (self->slots[i].id)
            i = (i + 1) & self->mask;
    }
    char *copy = NULL;
    if (len >= S_INLINE && !(copy = malloc((size_t)len + 1)))
        return INTERN_NOMEM;
    uint32_t id = s_alloc_id(self);
    if (!id) {
        free(copy);
        return INTERN_NOMEM;
    }
    s_sym_t *sym = s_sym(self, id);
    *sym = (s_sym_t){.tag = tag, .len = len, .refs = 1};
    if (copy) {
        memcpy(copy, s, len);
        copy[len] = '\0';
        memcpy(sym->buf, &copy, sizeof copy);
    } else {
        memcpy(sym->buf, s, len); /* the NUL: zeroed above */
    }
    self->slots[i] = (s_slot_t){.tag = tag, .id = id, .len = len};
    if (!copy)
        memcpy(self->slots[i].bytes, s, len);
    self->count++;
    return id;
}

void intern_ref(intern_t *self, uint32_t sym)
{
    if (sym == INTERN_EMPTY)
        return;
    assert(sym < self->used && s_sym(self, sym)->refs > 0);
    s_sym(self, sym)->refs++;
}

/* Removes id's slot with backward-shift deletion. */
static void s_unlink(intern_t *self, uint32_t id)
{
    uint32_t mask = self->mask;
    uint32_t i = s_sym(self, id)->tag & mask;
    while (self->slots[i].id != id) {
        assert(self->slots[i].id); /* a live symbol is always in the table */
        i = (i + 1) & mask;
    }
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!self->slots[j].id)
            break;
        uint32_t home = self->slots[j].tag & mask;
        /* The entry at j may stay if its home lies cyclically in (i, j]. */
        if (((j - home) & mask) < ((j - i) & mask))
            continue;
        self->slots[i] = self->slots[j];
        i = j;
    }
    self->slots[i] = (s_slot_t){.id = 0};
}

void intern_release(intern_t *self, uint32_t sym)
{
    if (sym == INTERN_EMPTY)
        return;
    assert(sym < self->used && s_sym(self, sym)->refs > 0);
    s_sym_t *s = s_sym(self, sym);
    if (--s->refs > 0)
        return;
    s_unlink(self, sym);
    if (s->len >= S_INLINE)
        free((void *)s_bytes(s));
    s->len = self->free_id;
    self->free_id = sym;
    self->count--;
}

const char *intern_str(const intern_t *self, uint32_t sym, uint32_t *len)
{
    assert(sym < self->used && s_sym(self, sym)->refs > 0);
    const s_sym_t *s = s_sym(self, sym);
    if (len)
        *len = s->len;
    return s_bytes(s);
}

uint32_t intern_count(const intern_t *self)
{
    return self->count;
}
