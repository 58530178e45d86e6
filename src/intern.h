/*  intern.h - a refcounted string interner: string -> uint32_t symbol.

    Each symbol is one copy of a string plus a reference count; the string is
    freed when its last reference goes, so memory follows the strings still
    in use (the aggregation keys that hold them). Symbol ids are small dense
    integers, reused after a symbol is freed: they are NOT stable across
    restarts or across interners (hash the strings, not the ids, for anything
    that must be).

    Symbol 0 (INTERN_EMPTY) is the empty string; it is never counted, never
    freed, and intern_acquire of a zero-length string returns it.

    Thread contract: an intern_t belongs to one thread; no locks.
*/
#ifndef FP_INTERN_H
#define FP_INTERN_H

#include <stdint.h>

typedef struct intern intern_t;

#define INTERN_EMPTY 0u          /* the symbol of "" */
#define INTERN_NOMEM UINT32_MAX  /* intern_acquire failed: out of memory */

/* Returns NULL on out of memory. Free with intern_destroy. */
intern_t *intern_new(void);

/* Frees *self_p and every string still interned; NULL-safe, nulls the pointer. */
void intern_destroy(intern_t **self_p);

/* The symbol of s[0..len) (s need not be NUL-terminated), with one more
   reference held by the caller (copies s on first sight). Returns
   INTERN_NOMEM on out of memory (nothing is held then). */
uint32_t intern_acquire(intern_t *self, const char *s, uint32_t len);

/* The hash intern_acquire_hashed wants for s[0..len). */
uint64_t intern_hash(const char *s, uint32_t len);

/* Same as intern_acquire with h = intern_hash(s, len) computed beforehand. */
uint32_t intern_acquire_hashed(intern_t *self, const char *s, uint32_t len, uint64_t h);

/* Cache hints for a later lookup of hash h, to issue over a whole batch
   before the lookups: stage 0 fetches the table slot, stage 1 the symbol
   (reads the slot), stage 2 the string bytes (reads the symbol). No effect
   on results. */
void intern_prefetch(const intern_t *self, uint64_t h, int stage);

/* Takes one more reference on a live symbol. */
void intern_ref(intern_t *self, uint32_t sym);

/* Drops one reference; the string is freed with its last reference. */
void intern_release(intern_t *self, uint32_t sym);

/* The NUL-terminated string of a live symbol; sets *len unless len is NULL.
   Valid until the symbol's last reference is released. */
const char *intern_str(const intern_t *self, uint32_t sym, uint32_t *len);

/* Strings interned now (INTERN_EMPTY not counted). */
uint32_t intern_count(const intern_t *self);

#endif
