/*  intern.c - refcounted string interner (see intern.h).

    Layout: symbols live in a dense array (index = symbol id, stable while the
    symbol lives; freed ids go to a free list and are reused). A hash table
    with linear probing maps a string to its id; its slots hold (low 32 bits
    of the string's XXH3-64 hash, id), so a probe reads the symbol only when
    the hash bits match. Deletion is backward-shift (no tombstones): the home
    slot of an entry is tag & mask, which needs no symbol access.

    Invariants: slots are a power of two, at most 70% full; id 0 is "" and is
    never in the table; a live symbol has refs >= 1 and its string owned here.
*/
#include "intern.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
/* Inlined: XXH3 of short keys is a few ns, a library call doubles it. */
#define XXH_INLINE_ALL
#include <xxhash.h>

typedef struct {
    uint64_t hash; /* XXH3_64 of the string */
    char *str;     /* owned, NUL-terminated; NULL when the id is free */
    uint32_t len;  /* bytes without the NUL; next free id when free */
    uint32_t refs; /* references held; 0 when free */
} s_sym_t;

typedef struct {
    uint32_t tag; /* low 32 bits of the hash */
    uint32_t id;  /* symbol id; 0 = empty slot */
} s_slot_t;

struct intern {
    s_sym_t *syms;     /* [cap_syms]; syms[0] is "" */
    uint32_t cap_syms; /* allocated */
    uint32_t used;     /* high-water mark of ids handed out (ids < used) */
    uint32_t free_id;  /* head of the free list, 0 = none */
    uint32_t count;    /* live symbols (not counting "") */
    s_slot_t *slots;   /* [mask + 1] */
    uint32_t mask;
};

#define S_INITIAL_SLOTS 64u

intern_t *intern_new(void)
{
    intern_t *self = calloc(1, sizeof *self);
    if (!self)
        goto fail;
    self->cap_syms = 32;
    self->syms = calloc(self->cap_syms, sizeof *self->syms);
    self->slots = calloc(S_INITIAL_SLOTS, sizeof *self->slots);
    if (!self->syms || !self->slots)
        goto fail;
    self->syms[0].str = (char *)""; /* never freed: see intern_destroy */
    self->syms[0].refs = 1;
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
    if (self->syms) {
        for (uint32_t i = 1; i < self->used; i++)
            free(self->syms[i].str);
    }
    free(self->syms);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

/* Doubles the table; -1 on out of memory (the old table stays valid). */
static int s_grow(intern_t *self)
{
    uint32_t ncap = (self->mask + 1) * 2;
    s_slot_t *nslots = calloc(ncap, sizeof *nslots);
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

/* A free symbol id, growing the array; 0 on out of memory. */
static uint32_t s_alloc_id(intern_t *self)
{
    if (self->free_id) {
        uint32_t id = self->free_id;
        self->free_id = self->syms[id].len;
        return id;
    }
    if (self->used == self->cap_syms) {
        if (self->cap_syms >= UINT32_MAX / 2)
            return 0;
        uint32_t ncap = self->cap_syms * 2;
        s_sym_t *n = realloc(self->syms, (size_t)ncap * sizeof *n);
        if (!n)
            return 0;
        self->syms = n;
        self->cap_syms = ncap;
    }
    return self->used++;
}

uint64_t intern_hash(const char *s, uint32_t len)
{
    return XXH3_64bits(s, len);
}

void intern_prefetch(const intern_t *self, uint64_t h, int stage)
{
    uint32_t tag = (uint32_t)h;
    uint32_t i = tag & self->mask;
    if (stage == 0) {
        __builtin_prefetch(&self->slots[i]);
        return;
    }
    for (;;) {
        s_slot_t slot = self->slots[i];
        if (!slot.id)
            return;
        if (slot.tag == tag) {
            if (stage == 1)
                __builtin_prefetch(&self->syms[slot.id]);
            else
                __builtin_prefetch(self->syms[slot.id].str);
            return;
        }
        i = (i + 1) & self->mask;
    }
}

uint32_t intern_acquire(intern_t *self, const char *s, uint32_t len)
{
    return intern_acquire_hashed(self, s, len, len ? XXH3_64bits(s, len) : 0);
}

uint32_t intern_acquire_hashed(intern_t *self, const char *s, uint32_t len, uint64_t h)
{
    assert(self);
    if (len == 0)
        return INTERN_EMPTY;
    uint32_t tag = (uint32_t)h;
    uint32_t i = tag & self->mask;
    for (;;) {
        s_slot_t slot = self->slots[i];
        if (!slot.id)
            break;
        if (slot.tag == tag) {
            s_sym_t *sym = &self->syms[slot.id];
            if (sym->len == len && memcmp(sym->str, s, len) == 0) {
                sym->refs++;
                return slot.id;
            }
        }
        i = (i + 1) & self->mask;
    }
    /* New string: keep the load at most 70% after the insert. */
    if ((uint64_t)(self->count + 1) * 10 > (uint64_t)(self->mask + 1) * 7) {
        if (s_grow(self) != 0)
            return INTERN_NOMEM;
        i = tag & self->mask;
        while (self->slots[i].id)
            i = (i + 1) & self->mask;
    }
    char *copy = malloc((size_t)len + 1);
    if (!copy)
        return INTERN_NOMEM;
    uint32_t id = s_alloc_id(self);
    if (!id) {
        free(copy);
        return INTERN_NOMEM;
    }
    memcpy(copy, s, len);
    copy[len] = '\0';
    self->syms[id] = (s_sym_t){.hash = h, .str = copy, .len = len, .refs = 1};
    self->slots[i] = (s_slot_t){.tag = tag, .id = id};
    self->count++;
    return id;
}

void intern_ref(intern_t *self, uint32_t sym)
{
    if (sym == INTERN_EMPTY)
        return;
    assert(sym < self->used && self->syms[sym].refs > 0);
    self->syms[sym].refs++;
}

/* Removes id's slot with backward-shift deletion. */
static void s_unlink(intern_t *self, uint32_t id)
{
    uint32_t mask = self->mask;
    uint32_t i = (uint32_t)self->syms[id].hash & mask;
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
    self->slots[i] = (s_slot_t){0, 0};
}

void intern_release(intern_t *self, uint32_t sym)
{
    if (sym == INTERN_EMPTY)
        return;
    assert(sym < self->used && self->syms[sym].refs > 0);
    s_sym_t *s = &self->syms[sym];
    if (--s->refs > 0)
        return;
    s_unlink(self, sym);
    free(s->str);
    s->str = NULL;
    s->len = self->free_id;
    self->free_id = sym;
    self->count--;
}

const char *intern_str(const intern_t *self, uint32_t sym, uint32_t *len)
{
    assert(sym < self->used && self->syms[sym].refs > 0);
    if (len)
        *len = sym == INTERN_EMPTY ? 0 : self->syms[sym].len;
    return self->syms[sym].str;
}

uint32_t intern_count(const intern_t *self)
{
    return self->count;
}
