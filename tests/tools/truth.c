/*  truth.c - crash-test ground truth (truth.h): sums per key string in an
    open-addressing table, and per operation the records that wait. */
#include "truth.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* One key: "C\tplant\torder\top", "M\t...", "S\t...". */
typedef struct {
    char *key;
    int64_t a, b;     /* C: yield, scrap; M: quantity; S: parts */
    uint64_t waiting; /* C: records pending while its deltas are 0/0 */
    bool closed;      /* C: an OperationCompleted came */
} s_slot_t;

struct truth {
    s_slot_t *slots;
    size_t cap, n;
    uint64_t unique;  /* record_count of everything: a Scrap counts twice */
    uint64_t waiting; /* sum of the slots' waiting */
};

truth_t *truth_new(void)
{
    return calloc(1, sizeof(truth_t));
}

void truth_destroy(truth_t **self_p)
{
    assert(self_p);
    truth_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->cap; i++)
        free(self->slots[i].key);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

static size_t s_home(const char *key, size_t cap)
{
    return XXH3_64bits(key, strlen(key)) & (cap - 1);
}

/* The slot of key, created (zero) if absent; NULL on out of memory. */
static s_slot_t *s_get(truth_t *self, const char *key)
{
    if ((self->n + 1) * 2 > self->cap) {
        size_t ncap = self->cap ? self->cap * 2 : 1024;
        s_slot_t *ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t i = 0; i < self->cap; i++)
            if (self->slots[i].key) {
                size_t j = s_home(self->slots[i].key, ncap);
                while (ns[j].key)
                    j = (j + 1) & (ncap - 1);
                ns[j] = self->slots[i];
            }
        free(self->slots);
        self->slots = ns;
        self->cap = ncap;
    }
    size_t j = s_home(key, self->cap);
    while (self->slots[j].key) {
        if (strcmp(self->slots[j].key, key) == 0)
            return &self->slots[j];
        j = (j + 1) & (self->cap - 1);
    }
    if (!(self->slots[j].key = strdup(key)))
        return NULL;
    self->n++;
    return &self->slots[j];
}

static const char *s_str(const fp_rec_in_t *r, int f)
{
    return r->str[f] ? r->str[f] : "";
}

int truth_add(truth_t *self, const fp_rec_in_t *r)
{
    assert(self && r);
    bool summed = r->kind == FP_KIND_PART_COUNT || r->kind == FP_KIND_SCRAP;
    if ((summed && r->quantity <= 0) || r->kind == FP_KIND_INVALID || r->kind > FP_KIND_AGG_MAX)
        return -1;
    char key[1024];
    const char *p = s_str(r, FP_STR_PLANT), *o = s_str(r, FP_STR_ORDER),
               *op = s_str(r, FP_STR_OPERATION);
    if (r->kind == FP_KIND_MATERIAL) {
        snprintf(key, sizeof key, "M\t%s\t%s\t%s\t%s\t%s\t%s", p, o, op,
                 s_str(r, FP_STR_MATERIAL), s_str(r, FP_STR_LOT), s_str(r, FP_STR_UNIT));
        s_slot_t *m = s_get(self, key);
        if (!m)
            return -2;
        m->a += r->quantity;
        self->unique++;
        return 0;
    }
    if (r->kind == FP_KIND_SCRAP) {
        snprintf(key, sizeof key, "S\t%s\t%s\t%s\t%s", p, o, op, s_str(r, FP_STR_REASON));
        s_slot_t *s = s_get(self, key);
        if (!s)
            return -2;
        s->a += r->quantity;
        self->unique++; /* its scrap checkpoint's count; the completion's below */
    }
    /* Everything else counts in its operation's completion. */
    snprintf(key, sizeof key, "C\t%s\t%s\t%s", p, o, op);
    s_slot_t *c = s_get(self, key);
    if (!c)
        return -2;
    self->unique++;
    if (r->kind == FP_KIND_PART_COUNT)
        c->a += r->quantity;
    else if (r->kind == FP_KIND_SCRAP)
        c->b += r->quantity;
    if (c->closed)
        return 0; /* a correction: emitted at the next round, 0/0 or not */
    if (summed || r->kind == FP_KIND_OP_COMPLETED) {
        /* the completion is due now (non-zero delta) or emitted at once
           (final): whatever waited goes with it */
        self->waiting -= c->waiting;
        c->waiting = 0;
        c->closed = r->kind == FP_KIND_OP_COMPLETED;
    } else {
        c->waiting++; /* an OperationStarted: no sum, waits for one */
        self->waiting++;
    }
    return 0;
}

uint64_t truth_records(const truth_t *self)
{
    return self->unique - self->waiting;
}

uint64_t truth_waiting(const truth_t *self)
{
    return self->waiting;
}

int truth_write(const truth_t *self, FILE *f)
{
    for (size_t i = 0; i < self->cap; i++) {
        const s_slot_t *e = &self->slots[i];
        if (!e->key)
            continue;
        if (e->key[0] == 'C')
            fprintf(f, "%s\t%" PRId64 "\t%" PRId64 "\n", e->key, e->a, e->b);
        else
            fprintf(f, "%s\t%" PRId64 "\n", e->key, e->a);
    }
    fprintf(f, "R\t%" PRIu64 "\n", truth_records(self));
    fprintf(f, "W\t%" PRIu64 "\n", truth_waiting(self));
    return ferror(f) ? -1 : 0;
}
