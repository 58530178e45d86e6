/*  record.h - the parsed telemetry record and the batch that carries records
    between pipeline threads.

    fp_record_t has exactly the layout of floorpost.telemetry.Record (see
    schema/telemetry.fbs): a verified batch's records vector is used in place,
    with no per-record decoding. codec.cc checks the layout at compile time.

    Thread contract: plain data; whoever holds the buffer owns it.
*/
#ifndef FP_RECORD_H
#define FP_RECORD_H

#include <stddef.h>
#include <stdint.h>

/* Record kinds; values match floorpost.telemetry.Kind. */
enum {
    FP_KIND_INVALID = 0,
    FP_KIND_PART_COUNT = 1,
    FP_KIND_MATERIAL = 2,
    FP_KIND_SCRAP = 3,
    FP_KIND_OP_STARTED = 4,
    FP_KIND_OP_COMPLETED = 5,
    FP_KIND_PART_COUNTER = 6,  /* cumulative good-parts reading; the worker posts deltas */
    FP_KIND_SCRAP_COUNTER = 7, /* cumulative scrap reading (reason set) */
    FP_KIND_MAX = 7
};

/* The kinds aggregation sums (the worker turns counter readings into
   PartCount and Scrap deltas before a shard sees them). */
#define FP_KIND_AGG_MAX FP_KIND_OP_COMPLETED

/* fp_record_t.reserved0 of a counter reading: flags. */
#define FP_COUNTER_FROM_ZERO 1u /* the counter started from zero: a first reading counts whole */

/* String fields of a record, in layout order; index into fp_record_t.str. */
enum {
    FP_STR_PLANT = 0,
    FP_STR_LINE,
    FP_STR_STATION,
    FP_STR_ORDER,
    FP_STR_OPERATION,
    FP_STR_MATERIAL,
    FP_STR_LOT,
    FP_STR_UNIT,
    FP_STR_REASON,
    FP_STR_FIELDS /* 9 */
};

/* A counter reading's name travels in the material field. */
#define FP_STR_COUNTER FP_STR_MATERIAL

/* The most strings one batch may carry (indices are 16-bit, 0 = absent). */
#define FP_BATCH_STRINGS_MAX 65535u

/* The longest string a record may use as a key field (plant, order,
   operation, material, lot, unit, reason) or as line/station, in bytes. A
   stored aggregation key (six such strings) then stays under LMDB's
   511-byte key limit. Longer: the record is dead-lettered "string_too_long". */
#define FP_STRING_MAX 80u

typedef struct {
    uint64_t seq;      /* strictly increasing within (source_id, epoch) */
    int64_t time_ns;   /* event time, ns since the Unix epoch, UTC */
    int64_t quantity;  /* parts, or thousandths of unit for FP_KIND_MATERIAL */
    uint16_t str[FP_STR_FIELDS]; /* 1-based string table index, 0 = absent */
    uint8_t kind;      /* FP_KIND_* */
    uint8_t reserved0;
    uint32_t reserved1;
} fp_record_t;

#ifdef __cplusplus
static_assert(sizeof(fp_record_t) == 48, "fp_record_t must match the wire Record");
#else
_Static_assert(sizeof(fp_record_t) == 48, "fp_record_t must match the wire Record");
#endif

/* ---- Messages between pipeline threads (inproc, one ZeroMQ frame each) ----

   Every internal message starts with a uint32_t type. */
enum {
    FP_MSG_BATCH = 1,   /* fp_batch_hdr_t + records + string table */
    FP_MSG_BARRIER = 2, /* fp_barrier_t */
};

/* Barrier flags. */
#define FP_BARRIER_FLUSH 1u /* flush every pending partial checkpoint */
#define FP_BARRIER_DRAIN 2u /* last message on this pipe: flush and stop */

typedef struct {
    uint32_t type;      /* FP_MSG_BARRIER */
    uint32_t flags;     /* FP_BARRIER_* */
    uint64_t round;     /* 1, 2, 3, ... injected by ingest every round interval */
    int64_t wall_ns;    /* when ingest injected it (CLOCK_REALTIME) */
    int64_t event_ns;   /* worker -> shard: the newest event time the worker has routed
                           to any shard (INT64_MIN: none yet); the shards' event-time
                           watermark (agg.h "Periods"). Ingest writes INT64_MIN */
    uint64_t committed; /* ingest -> worker: every round <= committed is durable (emit's
                           last report when ingest injected it) */
} fp_barrier_t;

/* A batch of records from one source and epoch, and the strings they index.
   Layout in one contiguous buffer, 8-byte aligned:
     fp_batch_hdr_t
     fp_record_t records[nrecords]
     uint32_t    stroff[nstrings + 1]   offsets into strblob; string i (1-based)
                                         is strblob + stroff[i-1], NUL-terminated,
                                         length stroff[i] - stroff[i-1] - 1
     char        strblob[strbytes]                                         */
typedef struct {
    uint32_t type;      /* FP_MSG_BATCH */
    uint32_t nrecords;
    uint32_t nstrings;
    uint32_t strbytes;
    uint64_t source_id;
    uint64_t epoch;
} fp_batch_hdr_t;

static inline size_t fp_batch_size(uint32_t nrecords, uint32_t nstrings, uint32_t strbytes)
{
    return sizeof(fp_batch_hdr_t) + (size_t)nrecords * sizeof(fp_record_t) +
           ((size_t)nstrings + 1) * sizeof(uint32_t) + strbytes;
}

static inline fp_record_t *fp_batch_records(fp_batch_hdr_t *b)
{
    return (fp_record_t *)(b + 1);
}

static inline uint32_t *fp_batch_stroff(fp_batch_hdr_t *b)
{
    return (uint32_t *)(fp_batch_records(b) + b->nrecords);
}

static inline char *fp_batch_strblob(fp_batch_hdr_t *b)
{
    return (char *)(fp_batch_stroff(b) + b->nstrings + 1);
}

/* String `idx` (1-based) of batch b; "" for 0. Caller checked idx <= nstrings. */
static inline const char *fp_batch_string(fp_batch_hdr_t *b, uint32_t idx, uint32_t *len)
{
    if (idx == 0) {
        if (len)
            *len = 0;
        return "";
    }
    uint32_t *off = fp_batch_stroff(b);
    if (len)
        *len = off[idx] - off[idx - 1] - 1;
    return fp_batch_strblob(b) + off[idx - 1];
}

#endif
