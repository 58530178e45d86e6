/*  record_check.h - the one check every telemetry record passes, whatever
    input it came from.

    Decoding (codec.h for FlatBuffers, later Sparkplug) checks the envelope;
    dedup checks (source, epoch, seq). What is left - the kind, the string
    indices, the required fields, the string lengths - is checked here,
    once, in the worker, after dedup and before the record is routed to an
    aggregation shard. A record that fails is dead-lettered with
    the name of fp_record_reason_dl() as the reason and fp_record_reason_detail() as
    the detail; it is still marked seen, so its resend is a duplicate.

    The aggregation (agg.c) relies on fp_record_in_range() holding for every
    record it is given (it indexes its string maps with the record's string
    indices); it re-checks just that, as a guard of its own memory.

    Thread contract: pure functions, any thread.
*/
#ifndef FP_RECORD_CHECK_H
#define FP_RECORD_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "domain.h"
#include "record.h"

/* What is wrong with a record, in the order the checks run (the first that
   fails is reported). Finer than the dead-letter reason (three of them are
   missing_field), so that the detail can say which field. */
typedef enum {
    FP_RECORD_OK = 0,
    FP_RECORD_UNKNOWN_KIND,     /* "unknown_kind": kind not 1..FP_KIND_MAX */
    FP_RECORD_BAD_STRING_INDEX, /* "bad_string_index": an index beyond the string table */
    FP_RECORD_MISSING_KEY,      /* "missing_field": plant, order or operation absent */
    FP_RECORD_STRING_TOO_LONG,  /* "string_too_long": a string over FP_STRING_MAX bytes */
    FP_RECORD_STRING_HAS_NUL,   /* "string_has_nul": a string with a NUL byte in it */
    FP_RECORD_MISSING_MATERIAL, /* "missing_field": MaterialConsumed without material or unit */
    FP_RECORD_MISSING_REASON,   /* "missing_field": Scrap or ScrapCounter without a reason */
    FP_RECORD_MISSING_COUNTER,  /* "missing_field": a counter reading without its name */
    FP_RECORD_REASONS
} fp_record_reason_t;

/* The dead-letter reason of a failure rc (domain.h); FP_DL_other for
   FP_RECORD_OK or a value out of range (never dead-letter those). */
fp_dl_reason_t fp_record_reason_dl(fp_record_reason_t rc);

/* A one-line human detail of rc for the dead letter ("" for FP_RECORD_OK). */
const char *fp_record_reason_detail(fp_record_reason_t rc);

typedef uint16_t fp_u16x8_t __attribute__((vector_size(16)));
typedef uint64_t fp_u64x2_t __attribute__((vector_size(16)));
_Static_assert(FP_STR_FIELDS == 9 && offsetof(fp_record_t, str) + 16 <= sizeof(fp_record_t),
               "fp_record_strs_ok reads str[0..7] as one vector");

/* Whether every string index of r is <= nstrings: one vector compare for
   str[0..7] (GCC vector extensions: SSE2 on x86-64, scalar elsewhere). */
static inline bool fp_record_strs_ok(const fp_record_t *r, uint32_t nstrings)
{
    fp_u16x8_t v, lim = {0};
    uint16_t ns = nstrings > FP_BATCH_STRINGS_MAX ? FP_BATCH_STRINGS_MAX : (uint16_t)nstrings;
    memcpy(&v, r->str, sizeof v);
    lim += ns;
    fp_u64x2_t over = (fp_u64x2_t)(v > lim);
    return ((over[0] | over[1]) == 0) & (r->str[8] <= ns);
}

/* Whether r's kind is known and its string indices are within nstrings:
   what a reader of r needs to index its string table safely. */
static inline bool fp_record_in_range(const fp_record_t *r, uint32_t nstrings)
{
    return r->kind >= FP_KIND_PART_COUNT && r->kind <= FP_KIND_MAX &&
           fp_record_strs_ok(r, nstrings);
}

/* What fp_record_check needs of each string of a batch, judged once per
   string rather than once per record and field. */
enum { FP_STRF_TOO_LONG = 1, FP_STRF_NUL = 2 };

/* The flags of a batch string of len bytes that holds a NUL byte or not. */
static inline uint8_t fp_record_string_flags(uint32_t len, bool has_nul)
{
    return (uint8_t)((len > FP_STRING_MAX ? FP_STRF_TOO_LONG : 0) | (has_nul ? FP_STRF_NUL : 0));
}

/* Checks r against its batch's string table: nstrings strings and flags:
   flags[i] = fp_record_string_flags of string i (index 0 unused), or NULL
   when every string's flags are 0 (the usual case: the string checks then
   cost nothing). A NUL would make two different keys ("P\0A", "P\0B")
   print, post and store alike as "P", so such a record is refused in any
   of its nine string fields, used by its kind or not, like an over-long
   string (which reports first). Returns FP_RECORD_OK or the first
   failure. Inline: it runs once per record on the worker's hot path. */
static inline fp_record_reason_t fp_record_check(const fp_record_t *r, uint32_t nstrings,
                                                 const uint8_t *flags)
{
    if (r->kind < FP_KIND_PART_COUNT || r->kind > FP_KIND_MAX)
        return FP_RECORD_UNKNOWN_KIND;
    if (!fp_record_strs_ok(r, nstrings))
        return FP_RECORD_BAD_STRING_INDEX;
    if (!r->str[FP_STR_PLANT] || !r->str[FP_STR_ORDER] || !r->str[FP_STR_OPERATION])
        return FP_RECORD_MISSING_KEY;
    if (flags) {
        uint8_t any = 0; /* flags[0] is 0: an absent field adds nothing */
        for (int f = 0; f < FP_STR_FIELDS; f++)
            any |= flags[r->str[f]];
        if (any & FP_STRF_TOO_LONG)
            return FP_RECORD_STRING_TOO_LONG;
        if (any & FP_STRF_NUL)
            return FP_RECORD_STRING_HAS_NUL;
    }
    if (r->kind == FP_KIND_MATERIAL && (!r->str[FP_STR_MATERIAL] || !r->str[FP_STR_UNIT]))
        return FP_RECORD_MISSING_MATERIAL;
    if ((r->kind == FP_KIND_SCRAP || r->kind == FP_KIND_SCRAP_COUNTER) && !r->str[FP_STR_REASON])
        return FP_RECORD_MISSING_REASON;
    if (r->kind >= FP_KIND_PART_COUNTER && !r->str[FP_STR_COUNTER])
        return FP_RECORD_MISSING_COUNTER;
    return FP_RECORD_OK;
}

#endif
