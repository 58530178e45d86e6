/*  metrics.h - process-wide counters.

    Thread contract: every stage adds to counters from its own thread with
    relaxed atomic adds (a counter is a count, not a synchronisation point;
    readers need no ordering with other memory). Stages add per batch, not
    per record, so the cache line traffic stays small. Readers (the exit
    summary, later the /metrics endpoint) may read at any time.
*/
#ifndef FP_METRICS_H
#define FP_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FP_M_FRAMES_IN = 0,    /* telemetry frames received by ingest */
    FP_M_BYTES_IN,         /* their bytes */
    FP_M_BATCHES_OK,       /* frames that parsed as a batch */
    FP_M_RECORDS_IN,       /* records in parsed batches */
    FP_M_RECORDS_ACCEPTED, /* unique, valid records handed to aggregation */
    FP_M_DUPLICATES,       /* records dropped as duplicates */
    FP_M_GAPS,             /* seqs skipped (may be filled later) */
    FP_M_GAPS_FILLED,      /* reordered seqs that filled a gap */
    FP_M_EPOCH_CHANGES,    /* producers that restarted with a newer epoch */
    FP_M_ACKS,             /* acks sent to producers */
    FP_M_EVENTS_CONSUMPTION, /* checkpoints published, by kind */
    FP_M_EVENTS_COMPLETION,
    FP_M_EVENTS_SCRAP,
    FP_M_EVENTS_LATE,      /* of which late corrections */
    FP_M_ROUNDS,           /* barrier rounds completed by emit */
    FP_M_DEAD_LETTERS,     /* dead letters published (all reasons) */
    FP_M_COUNT
} fp_metric_t;

/* Dead-letter reasons, stable strings (metric labels and dead-letter topics). */
#define FP_DL_REASONS(X)                                                         \
    X(truncated) X(oversized) X(wrong_identifier) X(malformed) X(missing_field) \
    X(unsupported_version) X(too_many_strings) X(bad_envelope) X(unknown_kind)  \
    X(bad_string_index) X(too_old) X(stale_epoch) X(too_many_sources)           \
    X(overflow) X(too_many_keys) X(invalid_record) X(no_memory) X(other)

typedef struct fp_metrics fp_metrics_t;

/* NULL on out of memory; free with fp_metrics_destroy. */
fp_metrics_t *fp_metrics_new(void);
void fp_metrics_destroy(fp_metrics_t **self_p);

void fp_metrics_add(fp_metrics_t *self, fp_metric_t m, uint64_t n);
uint64_t fp_metrics_get(const fp_metrics_t *self, fp_metric_t m);

/* Counts one dead letter by reason (unknown reasons count as "other"). */
void fp_metrics_dead_letter(fp_metrics_t *self, const char *reason);
uint64_t fp_metrics_dead_letters(const fp_metrics_t *self, const char *reason);

/* Writes every counter as logfmt (name=value ...) into buf; returns length. */
size_t fp_metrics_format(const fp_metrics_t *self, char *buf, size_t cap);

#endif
