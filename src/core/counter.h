/*  counter.h - cumulative counter readings into deltas.

    A PLC counts parts; a gateway reads the counter and sends the reading
    (kinds PartCounter and ScrapCounter, schema/telemetry.fbs). One
    counter_t belongs to one parse/dedup worker and holds, per counter of
    the sources routed to it, the last reading applied. A counter is
    (source_id, kind, station, name): readings of one counter come from one
    source, so its state lives in exactly one thread. Not thread-safe, no
    locks. Dedup runs first: a reading that reaches counter_apply is new.

    counter_apply, with L the last reading, r this one, M the counter's
    modulus (per name, else the default), J = max_jump (0: off):
      r < 0 or r >= M                 RANGE: refused, nothing changes
      no L yet                        BASE: r is the base, posts nothing;
                                      with from_zero: posts r (the counter
                                      started from zero), as a DELTA
      (epoch, seq) <= L's             STALE: an older reading after a newer
                                      one (reordering, a resend): nothing
      r == L                          REPEAT: nothing
      r > L                           DELTA r - L
      r < L, 0 < r, L - r <= jitter   JITTER: nothing; L stays (the higher)
      r < L, M - L + r <= B           ROLLOVER: M - L + r, where B = J, or
                                      M / 2 without J
      r < L otherwise                 RESET: the counter started again from
                                      zero: posts r; publish counter_reset
    A posted delta over J (DELTA, ROLLOVER cannot be, RESET, from_zero) is a
    JUMP instead: refused (dead letter counter_jump), posts nothing, and L
    becomes r, so the next reading counts from it. Every verdict but RANGE,
    STALE and NOMEM makes r (with its epoch, seq, time) the last reading.
    Sums stay exact: the parts posted between two readings are exactly the
    difference modulo M for every accepted pair, whatever order readings
    come in (a STALE one adds nothing that a later one had not counted).

    Persistence (commit rounds, restart): every counter whose last reading
    changed is marked; counter_export_dirty hands each marked counter's key
    and state to the caller and clears the marks; counter_import rebuilds
    them at start-up (workers route counters by source_id, like dedup
    sources). After an import, counter_apply gives exactly the verdicts the
    exporting counter_t would have.
    Key bytes, version 1: u8 1, varint source_id, u8 kind, varint length +
      station bytes, varint length + name bytes.
    State bytes, version 1: u8 1, varint last reading, varint epoch, varint
      seq, zigzag time_ns (of the last reading).
*/
#ifndef FP_COUNTER_H
#define FP_COUNTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct counter counter_t;

#define COUNTER_MODULUS_MAX (1ull << 62)
#define COUNTER_MAX 1000000u /* counters per worker; beyond: COUNTER_NOMEM */

typedef struct {
    const char *name; /* a counter's name (any station, any source) */
    uint64_t modulus; /* 2..COUNTER_MODULUS_MAX */
} counter_modulus_t;

typedef struct {
    uint64_t default_modulus; /* 2..COUNTER_MODULUS_MAX */
    uint64_t max_jump;        /* 0: no bound */
    uint64_t jitter;          /* 0: off */
    const counter_modulus_t *moduli; /* per name; copied */
    int nmoduli;
} counter_config_t;

typedef enum {
    COUNTER_DELTA = 0, /* posts delta > 0 */
    COUNTER_ROLLOVER,  /* posts delta, across the modulus */
    COUNTER_RESET,     /* posts delta = the reading; tell the ERP (counter_reset) */
    COUNTER_BASE,      /* the first reading: posts nothing */
    COUNTER_REPEAT,    /* the same reading again: nothing */
    COUNTER_JITTER,    /* a drop within jitter: nothing */
    COUNTER_STALE,     /* older than the last reading applied: nothing */
    COUNTER_JUMP,      /* implausible: dead letter counter_jump, nothing posted */
    COUNTER_RANGE,     /* outside 0..modulus-1: dead letter counter_jump, nothing changes */
    COUNTER_NOMEM,     /* no room for a new counter: dead letter no_memory */
    COUNTER_VERDICTS
} counter_verdict_t;

/* One reading. Strings need not be NUL-terminated; valid during the call. */
typedef struct {
    uint64_t source_id, epoch, seq;
    int64_t time_ns;
    uint8_t kind;               /* FP_KIND_PART_COUNTER or FP_KIND_SCRAP_COUNTER */
    const char *station, *name;
    uint32_t station_len, name_len;
    int64_t reading;
    bool from_zero;             /* FP_COUNTER_FROM_ZERO */
} counter_reading_t;

typedef struct {
    counter_verdict_t verdict;
    int64_t delta;     /* parts to post: DELTA, ROLLOVER, RESET (> 0, or 0 for a reset to 0) */
    int64_t previous;  /* the last reading before this one (-1 for none) */
    uint64_t modulus;  /* the counter's */
} counter_result_t;

/* NULL on a bad config (modulus out of range) or out of memory. */
counter_t *counter_new(const counter_config_t *cfg);

/* Frees *self_p and every counter; NULL-safe, nulls the pointer. */
void counter_destroy(counter_t **self_p);

/* Applies one reading (rules above); returns out->verdict. */
counter_verdict_t counter_apply(counter_t *self, const counter_reading_t *r,
                                counter_result_t *out);

/* No counter index yet (counter_apply_at). */
#define COUNTER_AT_NONE UINT32_MAX

/* counter_apply with the counter's index: *at is COUNTER_AT_NONE, or what an
   earlier call for the same (source_id, kind, station, name) left in it;
   then the key is not built, hashed and looked up again (counters are never
   removed, so an index stays valid for the counter_t's life). Leaves the
   counter's index in *at (COUNTER_AT_NONE when there is none: a RANGE
   reading of a new counter, NOMEM). The same verdicts as counter_apply. */
counter_verdict_t counter_apply_at(counter_t *self, uint32_t *at, const counter_reading_t *r,
                                   counter_result_t *out);

/* The verdict's name ("delta", "rollover", ...), for logs and details. */
const char *counter_verdict_name(counter_verdict_t v);

/* Counters held. */
uint64_t counter_count(const counter_t *self);

typedef void(counter_export_fn)(void *ctx, const void *key, size_t klen, const void *state,
                                size_t slen);

/* Hands fn every counter changed since the last call (no particular order)
   and clears the marks. Key and state are valid during the call only; fn
   must not call into self. O(changed counters). */
void counter_export_dirty(counter_t *self, counter_export_fn *fn, void *ctx);

/* Start-up restore of one counter from counter_export_dirty's bytes (our
   own file, but possibly damaged: checked whole, never over-read). Not
   marked afterwards. 0; -1 malformed or imported already; -2 out of
   memory or COUNTER_MAX counters held. */
int counter_import(counter_t *self, const void *key, size_t klen, const void *state,
                   size_t slen);

/* The source_id of a counter key (to route it to its worker), or 0 when
   the key is malformed (source_id 0 is never valid). */
uint64_t counter_key_source(const void *key, size_t klen);

#endif
