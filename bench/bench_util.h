/*  bench_util.h - shared helpers of the benchmark programs in bench/ (header
    only: the Makefile builds every bench/NAME.c into its own program).

    - bu_now_ns / bu_wall_ns: clocks in ns.
    - bu_plant_for_keys: plantgen parameters that give about K open
      aggregation keys.
    - bu_builder_t: turns plantgen records into encoded telemetry batches
      (one source and epoch per batch), with a per-batch string cache keyed
      by pointer for the generator's stable strings, so building a batch
      costs little more than the copy.
    - bu_key_hash*: the key hashes fpload's exactness check folds sums with.

    Thread contract: a bu_builder_t belongs to one thread; the rest is pure.
*/
#ifndef FP_BENCH_UTIL_H
#define FP_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "codec.h"
#include "plantgen.h"
#include "record.h"
#include "strtab.h"

static inline int64_t bu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t bu_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Keys per open order with the mix below: 1 completion + materials * lots
   consumption + reasons scrap keys. */
#define BU_MATERIALS 3u
#define BU_LOTS 2u
#define BU_REASONS 4u
#define BU_KEYS_PER_ORDER (1u + BU_MATERIALS * BU_LOTS + BU_REASONS)

/* Parameters for about `keys` open keys over `lines` lines (= sources), each
   operation `rpo` quantity records long (so one OperationCompleted, which
   triggers the timed checkpoints, every rpo + 2 records of an order). */
static inline void bu_plant_for_keys(plantgen_params_t *p, uint64_t keys, uint32_t lines,
                                     uint32_t rpo, uint32_t burst, uint64_t seed, uint64_t epoch)
{
    plantgen_defaults(p);
    p->plants = 1;
    p->lines_per_plant = lines;
    p->stations_per_line = 4;
    uint64_t orders = keys / ((uint64_t)lines * BU_KEYS_PER_ORDER);
    p->orders_per_line = orders ? (uint32_t)orders : 1;
    p->operations_per_order = 4;
    p->materials_per_operation = BU_MATERIALS;
    p->lots_per_material = BU_LOTS;
    p->scrap_reasons = BU_REASONS;
    p->records_per_operation = rpo;
    p->pct_material = 30;
    p->pct_scrap = 5;
    p->seed = seed;
    p->first_source_id = 1;
    p->epoch = epoch;
    p->start_time_ns = 1;
    p->burst = burst;
}

/* ---- batch builder ---- */

#define BU_CACHE 512u /* pointer cache slots, power of two */

typedef struct {
    strtab_t *st;
    fp_codec_t *codec;
    fp_record_t *recs;
    uint32_t cap, n;
    uint64_t source_id, epoch;
    /* pointer -> string index for the current batch, valid where gen matches */
    const char *cptr[BU_CACHE];
    uint32_t cidx[BU_CACHE], cgen[BU_CACHE];
    uint32_t gen;
} bu_builder_t;

static inline int bu_builder_init(bu_builder_t *b, uint32_t cap)
{
    memset(b, 0, sizeof *b);
    b->st = strtab_new();
    b->codec = fp_codec_new();
    b->recs = calloc(cap, sizeof(fp_record_t));
    b->cap = cap;
    b->gen = 1;
    return (b->st && b->codec && b->recs) ? 0 : -1;
}

static inline void bu_builder_fini(bu_builder_t *b)
{
    strtab_destroy(&b->st);
    fp_codec_destroy(&b->codec);
    free(b->recs);
    b->recs = NULL;
}

static inline void bu_builder_clear(bu_builder_t *b)
{
    strtab_clear(b->st);
    b->n = 0;
    if (++b->gen == 0) {
        memset(b->cgen, 0, sizeof b->cgen);
        b->gen = 1;
    }
}

/* Index of a string whose pointer is stable (not the order: plantgen
   rewrites order strings in place). */
static inline uint16_t bu_stable_index(bu_builder_t *b, const char *s)
{
    if (!s || !*s)
        return 0;
    uint32_t h = (uint32_t)(((uintptr_t)s * 0x9E3779B97F4A7C15ull) >> 40) & (BU_CACHE - 1);
    if (b->cgen[h] == b->gen && b->cptr[h] == s)
        return (uint16_t)b->cidx[h];
    int idx = strtab_add(b->st, s);
    b->cptr[h] = s;
    b->cidx[h] = (uint32_t)idx;
    b->cgen[h] = b->gen;
    return (uint16_t)idx;
}

/* Appends one record (caller keeps one source and epoch per batch and
   n < cap). order_stable: the order string's pointer names the same text
   for the whole batch (not so for plantgen's own, rewritten in place). */
static inline void bu_builder_add_ex(bu_builder_t *b, uint64_t source_id, uint64_t epoch,
                                     const fp_rec_in_t *in, int order_stable)
{
    fp_record_t *r = &b->recs[b->n++];
    b->source_id = source_id;
    b->epoch = epoch;
    memset(r, 0, sizeof *r);
    r->seq = in->seq;
    r->time_ns = in->time_ns;
    r->quantity = in->quantity;
    r->kind = in->kind;
    r->reserved0 = in->flags; /* counter readings' flags (FP_COUNTER_FROM_ZERO), else 0 */
    for (int f = 0; f < FP_STR_FIELDS; f++)
        r->str[f] = f == FP_STR_ORDER && !order_stable ? (uint16_t)strtab_add(b->st, in->str[f])
                                                       : bu_stable_index(b, in->str[f]);
}

static inline void bu_builder_add(bu_builder_t *b, uint64_t source_id, uint64_t epoch,
                                  const fp_rec_in_t *in)
{
    bu_builder_add_ex(b, source_id, epoch, in, 0);
}

/* Encodes the batch; *out valid until the next encode. 0 or an FP_CODEC_* code. */
static inline int bu_builder_encode(bu_builder_t *b, const void **out, size_t *len)
{
    return fp_codec_batch_encode(b->codec, b->source_id, b->epoch, strtab_strings(b->st),
                                 strtab_count(b->st), b->recs, b->n, out, len);
}

/* ---- key hashes for the exactness check ---- */

static inline uint64_t bu_str_hash(const char *s)
{
    return s ? XXH3_64bits(s, strlen(s)) : 0;
}

static inline uint64_t bu_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h | 1;
}

/* Operation key (plant, order, operation): completion. */
static inline uint64_t bu_key_op(const char *plant, const char *order, const char *op)
{
    return bu_mix(bu_str_hash(plant) ^ (bu_str_hash(order) * 3) ^ (bu_str_hash(op) * 5));
}

/* Consumption key: operation key + material, lot, unit. */
static inline uint64_t bu_key_cons(uint64_t op_key, const char *material, const char *lot,
                                   const char *unit)
{
    return bu_mix(op_key ^ (bu_str_hash(material) * 7) ^ (bu_str_hash(lot) * 11) ^
                  (bu_str_hash(unit) * 13));
}

/* Scrap key: operation key + reason. */
static inline uint64_t bu_key_scrap(uint64_t op_key, const char *reason)
{
    return bu_mix(op_key ^ (bu_str_hash(reason) * 17) ^ 0x5c);
}

#endif
