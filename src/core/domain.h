/*  domain.h - the facts floorpost's modules share, as C types: checkpoint
    kinds, dead-letter reasons, sequence ranges and the checkpoint view.

    Aggregation fills fp_checkpoint_t, the codec encodes it (codec.h is the
    FlatBuffers door; this header has no FlatBuffers in it), emit files
    and publishes by kind, sinks will read it. Kinds and reasons are enums
    from the producer of the fact to its publication; their names (the
    strings below) appear only at the edges: topics, the store, JSON, logs,
    metric labels. The names are stable: subscribers, ERP import jobs and
    dashboards match on them.

    Thread contract: constants and pure functions only.
*/
#ifndef FP_DOMAIN_H
#define FP_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- checkpoint kinds (values match floorpost.checkpoint.Body) ---- */

typedef enum {
    FP_CK_CONSUMPTION = 1, /* goods issue to an order */
    FP_CK_COMPLETION = 2,  /* operation confirmation: yield, scrap, final */
    FP_CK_SCRAP = 3,       /* scrap by reason code */
    FP_CK_COUNTER_RESET = 4, /* a notice, not a posting: a cumulative counter was reset */
} fp_ck_kind_t;

/* The posting kinds (what aggregation sums) are 1..FP_CK_KINDS; arrays of
   them index kind - 1. FP_CK_COUNTER_RESET comes after them. */
#define FP_CK_KINDS 3
#define FP_CK_KIND_MAX 4 /* every kind an event may have */

/* The kind's stable name ("consumption", "completion", "scrap",
   "counter_reset"): the first part of its topic and its metric label. NULL
   for a value out of range. */
static inline const char *fp_ck_kind_name(int kind)
{
    static const char *const names[FP_CK_KIND_MAX + 1] = {NULL, "consumption", "completion",
                                                          "scrap", "counter_reset"};
    return kind >= 1 && kind <= FP_CK_KIND_MAX ? names[kind] : NULL;
}

/* ---- dead-letter reasons ---- */

/* Stable names (metric labels, dead-letter topics "deadletter/NAME", the
   store, `floorpost deadletters`). Append new reasons before `other`. */
#define FP_DL_REASONS(X)                                                         \
    X(truncated) X(oversized) X(wrong_identifier) X(malformed) X(missing_field) \
    X(unsupported_version) X(too_many_strings) X(bad_envelope) X(unknown_kind)  \
    X(bad_string_index) X(too_old) X(stale_epoch) X(too_many_sources)           \
    X(overflow) X(too_many_keys) X(invalid_record) X(no_memory) X(string_too_long)    \
    X(erp_rejected) X(string_has_nul) X(period_closed) X(counter_jump)                \
    X(source_not_allowed) X(too_many_new_sources) X(other)

#define FP_DL_ENUM_(name) FP_DL_##name,
typedef enum { FP_DL_REASONS(FP_DL_ENUM_) FP_DL_COUNT } fp_dl_reason_t;
#undef FP_DL_ENUM_

/* The reason's stable name; "other" for a value out of range. */
static inline const char *fp_dl_reason_name(int reason)
{
#define FP_DL_NAME_(name) #name,
    static const char *const names[] = {FP_DL_REASONS(FP_DL_NAME_)};
#undef FP_DL_NAME_
    return reason >= 0 && reason < FP_DL_COUNT ? names[reason] : "other";
}

/* The reason named name[0..len) (not NUL-terminated), or -1 if none is: an
   edge (a stored dead letter, a tool's argument) tells an unknown name
   apart instead of folding it into `other`. */
static inline int fp_dl_reason_parse(const char *name, size_t len)
{
    for (int r = 0; r < FP_DL_COUNT; r++) {
        const char *n = fp_dl_reason_name(r);
        if (strlen(n) == len && memcmp(n, name, len) == 0)
            return r;
    }
    return -1;
}

/* ---- event ids ---- */

/* Writes "<instance>-<32 lowercase hex digits of digest>" and a NUL to out
   (room: strlen(instance) + 34 bytes): every event's event_id. */
static inline void fp_event_id_write(char *out, const char *instance, const uint8_t digest[16])
{
    static const char hex[] = "0123456789abcdef";
    size_t ilen = strlen(instance);
    memcpy(out, instance, ilen);
    out[ilen] = '-';
    for (int i = 0; i < 16; i++) {
        out[ilen + 1 + 2 * i] = hex[digest[i] >> 4];
        out[ilen + 2 + 2 * i] = hex[digest[i] & 15];
    }
    out[ilen + 33] = '\0';
}

/* ---- what a checkpoint covers ---- */

/* The source sequence range a checkpoint sums: seqs first..last of one
   (source_id, epoch). */
typedef struct {
    uint64_t source_id, epoch, first_seq, last_seq;
} fp_seq_range_t;

#define FP_LINEAGE_MAX 8 /* ranges carried per checkpoint; more: lineage_truncated */

/* A checkpoint in C form (the view aggregation fills and the codec encodes).
   Strings are NUL-terminated; NULL encodes as absent (decode returns "" for
   absent). */
typedef struct {
    int kind; /* fp_ck_kind_t */
    const char *event_id;
    uint64_t stream_seq;
    uint64_t global_seq; /* per instance across topics, gap-free; set by emit */
    uint64_t checkpoint_no;
    const char *instance;
    const char *plant, *line, *order, *operation;
    int64_t first_time_ns, last_time_ns; /* ns since Unix epoch, UTC */
    uint64_t record_count;
    fp_seq_range_t lineage[FP_LINEAGE_MAX];
    uint32_t nlineage;
    bool lineage_truncated;
    bool late;
    /* The posting period (period.h). posting_date NULL or "": none (periods
       off, a counter_reset, or an event from a floorpost before them). */
    const char *posting_date;   /* "YYYY-MM-DD" */
    const char *period;         /* "day", "shift-N", "hour-HH" */
    int64_t period_start_ns, period_end_ns; /* [start, end), ns since Unix epoch, UTC */
    bool backfill;              /* the period had been flushed before these records came */
    const char *original_posting_date; /* a closed period re-posted: the records' own date */
    int64_t original_period_start_ns;  /* and their own period's start (0 otherwise) */
    /* FP_CK_CONSUMPTION */
    const char *material, *lot, *unit;
    int64_t quantity; /* thousandths of unit */
    /* FP_CK_COMPLETION */
    int64_t yield, scrap; /* parts */
    bool final;
    /* FP_CK_SCRAP (and FP_CK_COUNTER_RESET of a scrap counter) */
    const char *reason;
    int64_t parts;
    /* FP_CK_COUNTER_RESET */
    const char *station, *counter;
    bool counter_scrap;          /* a scrap counter, else good parts */
    int64_t previous, reading;   /* the reading before the drop and after it */
} fp_checkpoint_t;

#endif
