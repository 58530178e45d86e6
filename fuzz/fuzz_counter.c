/*  fuzz_counter.c - libFuzzer target for the stored counter states
    (counter_import and counter_key_source, src/core/counter.c): the bytes
    a worker restores at start from the state's counters table (worker.c
    s_restore_counter), then readings on the restored counters.

    Input: a config byte (default modulus, a lower modulus for the name
    "M", max_jump, jitter: a restart with another config is legitimate),
    then records [u8 klen][key][u8 slen][state] until a record with klen 0
    or the end, then 8 bytes per reading.

    Invariants:
      - a key without a source (counter_key_source 0) is refused; an import
        is never marked (nothing to export) and counts once;
      - a reading on a restored counter reports the restored reading as
        `previous`, and its verdict and delta obey counter.h's table: a
        delta only for DELTA (r - L), ROLLOVER (at most the bound) and RESET
        (r), never negative, and nothing for a reading out of range;
      - what the reading exports imports into a fresh counter_t, and the
        next reading gets the same verdict and delta from both (counter.h:
        "after an import, counter_apply gives exactly the verdicts the
        exporting counter_t would have"), and both export the same bytes.

    Seeds: fuzz/seeds/counter/ (states exported by counter.c itself).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "counter.h"
#include "fuzz.h"
#include "record.h"
#include "varint.h"

#define S_HELD 8 /* restored counters read again */

typedef struct {
    uint64_t source, last, epoch, seq;
    uint8_t kind;
    char station[64], name[64];
    uint32_t slen, nlen;
} s_ctr_t;

/* A key and state as counter.h describes them; -1 when not parsed. */
static int s_parse(const uint8_t *k, size_t klen, const uint8_t *s, size_t slen, s_ctr_t *c)
{
    const uint8_t *p = k, *end = k + klen;
    uint64_t n;
    memset(c, 0, sizeof *c);
    if (klen < 3 || *p++ != 1 || fp_varint_get(&p, end, &c->source) != 0 || p >= end)
        return -1;
    c->kind = *p++;
    if (fp_varint_get(&p, end, &n) != 0 || n > (uint64_t)(end - p) || n >= sizeof c->station)
        return -1;
    memcpy(c->station, p, n);
    c->slen = (uint32_t)n;
    p += n;
    if (fp_varint_get(&p, end, &n) != 0 || n != (uint64_t)(end - p) || n >= sizeof c->name)
        return -1;
    memcpy(c->name, p, n);
    c->nlen = (uint32_t)n;
    p = s;
    end = s + slen;
    if (slen < 1 || *p++ != 1 || fp_varint_get(&p, end, &c->last) != 0 ||
        fp_varint_get(&p, end, &c->epoch) != 0 || fp_varint_get(&p, end, &c->seq) != 0)
        return -1;
    return 0;
}

typedef struct {
    uint8_t key[256], state[64];
    size_t klen, slen;
    int n;
} s_export_t;

static void s_export(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    s_export_t *x = ctx;
    FUZZ_CHECK(klen <= sizeof x->key && slen <= sizeof x->state);
    memcpy(x->key, key, klen);
    memcpy(x->state, state, slen);
    x->klen = klen;
    x->slen = slen;
    x->n++;
}

static void s_none(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    FUZZ_CHECK(!"an imported counter is not marked");
}

static counter_reading_t s_reading(const s_ctr_t *c, int64_t v, uint64_t seq)
{
    return (counter_reading_t){.source_id = c->source, .epoch = c->epoch, .seq = seq,
                               .time_ns = 1800000000000000000ll, .kind = c->kind,
                               .station = c->station, .name = c->name, .station_len = c->slen,
                               .name_len = c->nlen, .reading = v};
}

static void s_check_result(const counter_result_t *res, int64_t v, int64_t prev, uint64_t jmax)
{
    FUZZ_CHECK(res->verdict < COUNTER_VERDICTS);
    FUZZ_CHECK(res->delta >= 0);
    switch (res->verdict) {
    case COUNTER_DELTA:
        FUZZ_CHECK(prev < 0 ? res->delta == v : res->delta == v - prev);
        break;
    case COUNTER_ROLLOVER:
        FUZZ_CHECK(prev > v && res->delta > 0);
        FUZZ_CHECK(res->delta <= (int64_t)(jmax ? jmax : res->modulus / 2));
        FUZZ_CHECK((uint64_t)res->delta == res->modulus - (uint64_t)prev + (uint64_t)v);
        break;
    case COUNTER_RESET:
        FUZZ_CHECK(res->delta == v && prev > v);
        break;
    case COUNTER_RANGE:
        FUZZ_CHECK(v < 0 || (uint64_t)v >= res->modulus);
        FUZZ_CHECK(res->delta == 0);
        break;
    default:
        FUZZ_CHECK(res->delta == 0);
    }
    if (jmax && res->verdict != COUNTER_JUMP)
        FUZZ_CHECK((uint64_t)res->delta <= jmax);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t cfgb = data[0];
    static const uint64_t moduli[4] = {1ull << 16, 1ull << 32, 1000, COUNTER_MODULUS_MAX};
    counter_modulus_t low = {"M", 100};
    counter_config_t cfg = {.default_modulus = moduli[cfgb & 3],
                            .max_jump = (cfgb & 4) ? 1000 : 0,
                            .jitter = (cfgb & 8) ? 5 : 0,
                            .moduli = &low,
                            .nmoduli = (cfgb & 16) ? 1 : 0};
    counter_t *a = counter_new(&cfg);
    FUZZ_CHECK(a != NULL);
    s_ctr_t held[S_HELD];
    int nheld = 0;
    uint64_t imported = 0;
    const uint8_t *p = data + 1, *end = data + size;
    while (end - p >= 2 && p[0] != 0) {
        size_t klen = *p++;
        if ((size_t)(end - p) < klen + 1)
            break;
        uint8_t *k = malloc(klen); /* exactly its size: ASan sees over-reads */
        FUZZ_CHECK(k != NULL);
        memcpy(k, p, klen);
        p += klen;
        size_t slen = *p++;
        if ((size_t)(end - p) < slen) {
            free(k);
            break;
        }
        uint8_t *s = malloc(slen ? slen : 1);
        FUZZ_CHECK(s != NULL);
        memcpy(s, p, slen);
        p += slen;
        uint64_t src = counter_key_source(k, klen);
        int rc = counter_import(a, k, klen, s, slen);
        FUZZ_CHECK(rc == 0 || rc == -1);
        if (src == 0)
            FUZZ_CHECK(rc == -1);
        if (rc == 0) {
            imported++;
            s_ctr_t c;
            FUZZ_CHECK(s_parse(k, klen, s, slen, &c) == 0 && c.source == src);
            FUZZ_CHECK(c.kind == FP_KIND_PART_COUNTER || c.kind == FP_KIND_SCRAP_COUNTER);
            FUZZ_CHECK(counter_import(a, k, klen, s, slen) == -1); /* imported already */
            if (nheld < S_HELD)
                held[nheld++] = c;
        }
        free(k);
        free(s);
    }
    if (end - p >= 1 && p[0] == 0)
        p++;
    FUZZ_CHECK(counter_count(a) == imported);
    counter_export_dirty(a, s_none, NULL);

    for (int i = 0; i < nheld && end - p >= 8; i++, p += 8) {
        const s_ctr_t *c = &held[i];
        uint64_t raw;
        memcpy(&raw, p, 8);
        /* a reading near the restored one, or anywhere (sign included) */
        int64_t any;
        memcpy(&any, &raw, sizeof any);
        int64_t v = (raw & 1) ? (int64_t)c->last + (int64_t)(int16_t)(raw >> 1) : any;
        if (c->seq == UINT64_MAX)
            continue;
        counter_result_t res;
        counter_reading_t r = s_reading(c, v, c->seq + 1);
        counter_apply(a, &r, &res);
        if (res.verdict != COUNTER_RANGE) {
            FUZZ_CHECK(res.previous == (int64_t)c->last);
            s_check_result(&res, v, res.previous, cfg.max_jump);
        } else {
            FUZZ_CHECK(v < 0 || (uint64_t)v >= res.modulus);
        }
        s_export_t x = {.n = 0};
        counter_export_dirty(a, s_export, &x);
        FUZZ_CHECK(x.n == (res.verdict == COUNTER_RANGE || res.verdict == COUNTER_STALE ? 0 : 1));
        if (x.n == 0 || c->seq + 1 == UINT64_MAX)
            continue;
        /* The exported state restores a counter that answers alike. */
        counter_t *b = counter_new(&cfg);
        FUZZ_CHECK(b != NULL);
        FUZZ_CHECK(counter_import(b, x.key, x.klen, x.state, x.slen) == 0);
        int64_t v2 = (int64_t)((uint64_t)v - (raw >> 48) + 7); /* wraps, no UB */
        counter_reading_t r2 = s_reading(c, v2, c->seq + 2);
        counter_result_t ra, rb;
        counter_apply(a, &r2, &ra);
        counter_apply(b, &r2, &rb);
        FUZZ_CHECK(ra.verdict == rb.verdict && ra.delta == rb.delta);
        FUZZ_CHECK(ra.previous == rb.previous && ra.modulus == rb.modulus);
        if (ra.verdict != COUNTER_RANGE)
            s_check_result(&ra, v2, ra.previous, cfg.max_jump);
        s_export_t xa = {.n = 0}, xb = {.n = 0};
        counter_export_dirty(a, s_export, &xa); /* and a's marks are clear for the next */
        counter_export_dirty(b, s_export, &xb);
        FUZZ_CHECK(xa.n == xb.n);
        if (xa.n)
            FUZZ_CHECK(xa.klen == xb.klen && memcmp(xa.key, xb.key, xa.klen) == 0 &&
                       xa.slen == xb.slen && memcmp(xa.state, xb.state, xa.slen) == 0);
        counter_destroy(&b);
    }
    counter_destroy(&a);
    FUZZ_CHECK(a == NULL);
    return 0;
}
