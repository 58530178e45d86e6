/*  agg_format.h - the bytes of the aggregation's stored keys and states
    (private to agg*.c, the fuzz target's helpers and the unit test; the
    format itself is specified in agg.h, "Key bytes" and "State bytes").

    Pure functions over plain structs: no agg_t, no interner, no memory. A
    parse reads possibly damaged bytes (our own file, but a disk can lie):
    checked whole, never over-read, never asserted on. A write produces
    version 2 only; version 1 (a floorpost before periods) is read, never
    written. Round trip: for every key and state a parse accepts in version
    2, the write of what it parsed gives the same bytes back.
*/
#ifndef FP_AGG_FORMAT_H
#define FP_AGG_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agg_table.h"
#include "varint.h"

#define AGG_FMT_V2 2   /* version byte of the key and state bytes written */
#define AGG_FMT_V1 1   /* read (agg_import upgrades it), never written */
#define AGG_KIND_META 0u /* the shards' own key: {2, 0}, state flushed_through */

enum { AGG_PF_CLOSED = 1, AGG_PF_LATE = 2, AGG_PF_TRUNCATED = 4 }; /* state flags byte */

/* State bytes but the line and station bytes, at most: version, flags,
   checkpoint_no, count, sum0, sum1, first, span (10 each at most), n,
   AGG_LINEAGE x 4 varints, 2 string lengths (5 each), closed_at, close_seq. */
#define AGG_FMT_STATE_MAX (2 + 6 * FP_VARINT_MAX + 1 + AGG_LINEAGE * 4 * FP_VARINT_MAX + 10 \
                           + 2 * FP_VARINT_MAX)

/* A key: the strings point into the parsed bytes (or the caller's strings
   for a write), "" for the fields its kind does not have. */
typedef struct {
    int version;                /* AGG_FMT_V1 or AGG_FMT_V2 */
    int kind;                   /* FP_CK_*; version 2 also AGG_KIND_OP and AGG_KIND_META */
    const char *s[AGG_FIELDS];  /* AGG_F_* */
    uint32_t len[AGG_FIELDS];
    uint32_t period;            /* version 2, kinds 1..3: period id (agg_fmt_period_id_ok) */
} agg_fmt_key_t;

/* A state. Which fields mean something follows the key's kind (agg.h). */
typedef struct {
    uint8_t flags; /* AGG_PF_* */
    uint64_t checkpoint_no, count;
    int64_t sum0, sum1, first_ns, last_ns;
    uint32_t nlineage;
    fp_seq_range_t lineage[AGG_LINEAGE];
    bool has_attrs; /* line, station, closed: a head (v2) or a completion (v1) */
    const char *line, *station;
    uint32_t line_len, station_len;
    int64_t closed_at;
    uint64_t close_seq;
    int64_t flushed_through; /* the meta key */
} agg_fmt_state_t;

/* The number of key strings of a kind: 6 consumption, 4 scrap, 0 meta,
   else 3. */
int agg_fmt_nfields(int kind);

/* Whether a stored period id is one a period can have made: 0 (periods
   off), or a start minute of an int64 ns time plus AGG_PERIOD_BIAS. Others
   would overflow ns arithmetic: damaged. */
bool agg_fmt_period_id_ok(uint64_t id);

/* Parses key bytes (NULL: -1). 0, or -1 when malformed. */
int agg_fmt_key_parse(const void *key, size_t klen, agg_fmt_key_t *k);

/* Parses the state bytes of parsed key k (NULL: -1). 0, or -1 when
   malformed or not of k's version and kind. */
int agg_fmt_state_parse(const void *state, size_t slen, const agg_fmt_key_t *k,
                        agg_fmt_state_t *st);

/* The most bytes agg_fmt_key_write writes for strings of total length
   strs (any kind). */
static inline size_t agg_fmt_key_max(size_t strs)
{
    return 2 + AGG_FIELDS * 5 + 5 + strs;
}

/* Writes version-2 key bytes of k (its version is ignored) at out (room:
   agg_fmt_key_max of its strings); returns the length. */
size_t agg_fmt_key_write(const agg_fmt_key_t *k, uint8_t *out);

/* Writes the version-2 state bytes of st for a key of kind at out (room:
   AGG_FMT_STATE_MAX + line_len + station_len); returns the length. Late
   and truncated are written only with count > 0. */
size_t agg_fmt_state_write(int kind, const agg_fmt_state_t *st, uint8_t *out);

#endif
