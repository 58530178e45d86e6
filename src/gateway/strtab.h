/*  strtab.h - builds one telemetry batch's string table: each distinct
    string once, numbered from 1 in order of first appearance (the numbering
    floorpost.telemetry.Record string fields use).

    A small open-addressing hash table over a chunked arena. Strings are
    copied into the arena, so the caller's strings need not outlive the call;
    pointers returned by strtab_strings() stay valid until strtab_clear() or
    strtab_destroy(). strtab_clear() keeps the memory for the next batch, so a
    producer that reuses one strtab allocates nothing per batch in the steady
    state.

    Thread contract: not thread-safe; one strtab belongs to one thread.
*/
#ifndef FP_STRTAB_H
#define FP_STRTAB_H

#include <stdint.h>

#include "record.h"

typedef struct strtab strtab_t;

/* A new empty table; NULL on out of memory. Free with strtab_destroy. */
strtab_t *strtab_new(void);

/* Frees *self_p and sets it to NULL; safe on NULL and twice. */
void strtab_destroy(strtab_t **self_p);

/* Index (1-based) of s, adding a copy of it if new. 0 for NULL or "" (the
   wire's "absent"); -1 when s is new and the table already holds
   FP_BATCH_STRINGS_MAX strings, or on out of memory. */
int strtab_add(strtab_t *self, const char *s);

/* Distinct strings held (0..FP_BATCH_STRINGS_MAX). */
uint32_t strtab_count(const strtab_t *self);

/* strtab_count() NUL-terminated strings; entry i is string index i+1. Owned
   by the table; valid until the next strtab_add (the array may move),
   strtab_clear or strtab_destroy. */
const char *const *strtab_strings(const strtab_t *self);

/* Bytes of string data held, NULs included (for batch size estimates). */
uint64_t strtab_bytes(const strtab_t *self);

/* Empties the table, keeping its memory. O(count), not O(capacity). */
void strtab_clear(strtab_t *self);

#endif
