/*  metrics.c - process-wide counters. See metrics.h for the thread contract. */
#include "metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define X(name) #name,
static const char *s_reasons[] = {FP_DL_REASONS(X)};
#undef X
#define FP_DL_COUNT (sizeof s_reasons / sizeof s_reasons[0])

static const char *s_names[FP_M_COUNT] = {
    "frames_in", "bytes_in", "batches_ok", "records_in", "records_accepted",
    "duplicates", "gaps", "gaps_filled", "epoch_changes", "acks",
    "events_consumption", "events_completion", "events_scrap", "events_late",
    "rounds", "dead_letters",
};

struct fp_metrics {
    _Atomic uint64_t c[FP_M_COUNT];
    _Atomic uint64_t dl[FP_DL_COUNT];
};

fp_metrics_t *fp_metrics_new(void)
{
    fp_metrics_t *self = calloc(1, sizeof *self);
    return self;
}

void fp_metrics_destroy(fp_metrics_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

void fp_metrics_add(fp_metrics_t *self, fp_metric_t m, uint64_t n)
{
    if (n)
        atomic_fetch_add_explicit(&self->c[m], n, memory_order_relaxed);
}

uint64_t fp_metrics_get(const fp_metrics_t *self, fp_metric_t m)
{
    return atomic_load_explicit(&((fp_metrics_t *)self)->c[m], memory_order_relaxed);
}

static size_t s_reason_index(const char *reason)
{
    for (size_t i = 0; i < FP_DL_COUNT; i++)
        if (strcmp(s_reasons[i], reason) == 0)
            return i;
    return FP_DL_COUNT - 1; /* "other" */
}

void fp_metrics_dead_letter(fp_metrics_t *self, const char *reason)
{
    atomic_fetch_add_explicit(&self->dl[s_reason_index(reason)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&self->c[FP_M_DEAD_LETTERS], 1, memory_order_relaxed);
}

uint64_t fp_metrics_dead_letters(const fp_metrics_t *self, const char *reason)
{
    return atomic_load_explicit(&((fp_metrics_t *)self)->dl[s_reason_index(reason)],
                                memory_order_relaxed);
}

size_t fp_metrics_format(const fp_metrics_t *self, char *buf, size_t cap)
{
    size_t n = 0;
    for (int i = 0; i < FP_M_COUNT && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s=%llu", n ? " " : "", s_names[i],
                              (unsigned long long)fp_metrics_get(self, (fp_metric_t)i));
    for (size_t i = 0; i < FP_DL_COUNT && n < cap; i++) {
        uint64_t v = atomic_load_explicit(&((fp_metrics_t *)self)->dl[i], memory_order_relaxed);
        if (v)
            n += (size_t)snprintf(buf + n, cap - n, " dead_letter_%s=%llu", s_reasons[i],
                                  (unsigned long long)v);
    }
    return n < cap ? n : cap - 1;
}
