/*  intern.h - a refcounted string interner: string -> uint32_t symbol.

    Each symbol is one copy of a string plus a reference count; the string is
    freed when its last reference goes, so memory follows the strings still
    in use (the aggregation keys that hold them). Symbol ids are small dense
    integers, reused after a symbol is freed: they are NOT stable across
    restarts or across interners (hash the strings, not the ids, for anything
    that must be).

    Symbol 0 (INTERN_EMPTY) is the empty string; it is never counted, never
    freed, and intern_acquire of a zero-length string returns it.

    Cost (the aggregation hot path): looking up a string shorter than
    INTERN_SHORT bytes reads one 32-byte table slot, which holds a copy of
    its bytes; a longer one also reads its symbol and its bytes.
    intern_find_many hides those reads across a batch.

    Thread contract: an intern_t belongs to one thread; no locks.
*/
#ifndef FP_INTERN_H
#define FP_INTERN_H

#include <stdint.h>

typedef struct intern intern_t;

#define INTERN_EMPTY 0u          /* the symbol of "" */
#define INTERN_NOMEM UINT32_MAX  /* intern_acquire failed: out of memory */
#define INTERN_ABSENT (UINT32_MAX - 1) /* intern_find_many: not interned */
#define INTERN_ID_LIMIT (1u << 30) /* every symbol id is below this */
#define INTERN_SHORT 20u /* strings shorter than this: one read per lookup */

/* Returns NULL on out of memory. Free with intern_destroy. */
intern_t *intern_new(void);

/* Frees *self_p and every string still interned; NULL-safe, nulls the pointer. */
void intern_destroy(intern_t **self_p);

/* The symbol of s[0..len) (s need not be NUL-terminated), with one more
   reference held by the caller (copies s on first sight). Returns
   INTERN_NOMEM on out of memory (nothing is held then). */
uint32_t intern_acquire(intern_t *self, const char *s, uint32_t len);

/* The hash intern_acquire_hashed wants for s[0..len) (a process-local
   value: not stable across builds, never persist it). */
uint64_t intern_hash(const char *s, uint32_t len);

/* Same as intern_acquire with h = intern_hash(s, len) computed beforehand. */
uint32_t intern_acquire_hashed(intern_t *self, const char *s, uint32_t len, uint64_t h);

/* Looks up n strings at once - the hot path of a batch: hashes them all,
   prefetches their table slots (and symbols and bytes of long strings)
   across groups of them, then looks each up, so the lookups hit the cache.
   out[i] = the symbol of s[i][0..len[i]) with NO reference taken (valid
   while some holder keeps one), INTERN_EMPTY for len 0, INTERN_ABSENT when
   not interned; h[i] = intern_hash of it, for intern_acquire_hashed. */
void intern_find_many(const intern_t *self, uint32_t n, const char *const *s,
                      const uint32_t *len, uint64_t *h, uint32_t *out);

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
