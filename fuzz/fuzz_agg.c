/*  fuzz_agg.c - libFuzzer target for the stored aggregation keys and
    states (agg_import and agg_key_shard, src/core/agg.c): the bytes a
    shard restores at start from the state's keys table (shard.c
    s_restore_key), then what the restored state must survive: the
    restart's flushes, live records on the restored keys, release after the
    grace, and the export of it all.

    Input: one config byte (shard count, grace, periods off or by day, the
    live records' quantities and times),
    then records [u8 klen][key][u8 slen][state] until the input ends.

    Invariants:
      - agg_key_shard is below the shard count for every key agg_import
        takes, and UINT32_MAX only for keys it refuses;
      - what agg_export_all gives back imports into a fresh agg_t in any
        order (here: reversed), and that one exports the same bytes
        (a restart restores exactly what was held);
      - both emit the same checkpoints on the restart's flush (event_id,
        checkpoint_no, quantities: the ERP's idempotency rests on it);
      - every checkpoint emitted, restored or live, encodes and decodes
        back through the codec with its values;
      - nothing asserts inside agg.c, nothing leaks (ASan), no UB (UBSan).

    Seeds: fuzz/seeds/agg/ (states of each kind, open, closed and late,
    exported by agg.c itself).
*/
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "agg.h"
#include "codec.h"
#include "fuzz.h"
#include "record_check.h"
#include "varint.h"

#define S_SHARDS_MAX 8
#define S_NOW 1800000000000000000ll /* ns: 2027 */

typedef struct {
    uint8_t *k, *s;
    size_t klen, slen;
} s_pair_t;

typedef struct {
    s_pair_t *v;
    size_t n, cap;
} s_pairs_t;

static void s_pairs_add(s_pairs_t *ps, const void *k, size_t klen, const void *s, size_t slen)
{
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 16;
        ps->v = realloc(ps->v, ps->cap * sizeof *ps->v);
        FUZZ_CHECK(ps->v != NULL);
    }
    s_pair_t *p = &ps->v[ps->n++];
    p->k = malloc(klen ? klen : 1);
    p->s = malloc(slen ? slen : 1);
    FUZZ_CHECK(p->k && p->s);
    memcpy(p->k, k, klen);
    if (slen)
        memcpy(p->s, s, slen);
    p->klen = klen;
    p->slen = slen;
}

static void s_pairs_free(s_pairs_t *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].k);
        free(ps->v[i].s);
    }
    free(ps->v);
    memset(ps, 0, sizeof *ps);
}

static int s_pair_cmp(const void *a, const void *b)
{
    const s_pair_t *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->k, y->k, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static void s_collect(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    FUZZ_CHECK(key && klen >= 2 && klen <= 511); /* LMDB's key limit (store.h) */
    FUZZ_CHECK((state == NULL) == (slen == 0));
    s_pairs_add(ctx, key, klen, state, slen);
}

static void s_discard(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    FUZZ_CHECK(key && klen >= 2 && klen <= 511);
}

/* The emit callback: checks a checkpoint, round-trips it through the
   codec and adds its identity to an order-free sum. */
typedef struct {
    fp_codec_t *codec;
    uint64_t sum, n;
} s_emits_t;

static void s_emit(void *ctx, const fp_checkpoint_t *ck)
{
    s_emits_t *e = ctx;
    FUZZ_CHECK(ck->kind >= 1 && ck->kind <= FP_CK_KINDS);
    FUZZ_CHECK(ck->event_id && ck->event_id[0]);
    FUZZ_CHECK(ck->nlineage <= FP_LINEAGE_MAX);
    FUZZ_CHECK(ck->plant && ck->order && ck->operation);
    const void *out;
    size_t len;
    FUZZ_CHECK(fp_codec_checkpoint_encode(e->codec, ck, &out, &len) == FP_CODEC_OK);
    uint64_t *aligned = malloc(len + 8);
    FUZZ_CHECK(aligned != NULL);
    memcpy(aligned, out, len);
    fp_checkpoint_t back;
    FUZZ_CHECK(fp_codec_checkpoint_decode(aligned, len, &back) == FP_CODEC_OK);
    FUZZ_CHECK(back.kind == ck->kind && strcmp(back.event_id, ck->event_id) == 0);
    FUZZ_CHECK(back.checkpoint_no == ck->checkpoint_no && back.record_count == ck->record_count);
    FUZZ_CHECK(back.quantity == ck->quantity && back.yield == ck->yield &&
               back.scrap == ck->scrap && back.parts == ck->parts);
    FUZZ_CHECK(back.nlineage == ck->nlineage && back.final == ck->final);
    free(aligned);
    struct {
        uint64_t no, count;
        int64_t q[4];
        int kind;
        bool final, late;
    } id = {ck->checkpoint_no, ck->record_count, {ck->quantity, ck->yield, ck->scrap, ck->parts},
            ck->kind, ck->final, ck->late};
    e->sum += XXH64(&id, sizeof id, XXH64(ck->event_id, strlen(ck->event_id), 0));
    e->n++;
}

static void s_reject(void *ctx, const fp_batch_hdr_t *b, const fp_record_t *r, const char *why)
{
    FUZZ_CHECK(why && why[0]);
}

/* The strings of a key (agg.h's key bytes, version 1 or 2): its kind's
   fields, "" when absent; the kind, or -1 for a key without strings. */
static int s_key_strings(const uint8_t *k, size_t klen, char out[6][128])
{
    static const int nfields[5] = {0, 6, 3, 4, 3}; /* by kind: pair, consumption, ... head */
    memset(out, 0, 6 * 128);
    if (klen < 2 || k[1] > 4 || nfields[k[1]] == 0)
        return -1;
    const uint8_t *p = k + 2, *end = k + klen;
    for (int f = 0; f < nfields[k[1]]; f++) {
        uint64_t n;
        if (fp_varint_get(&p, end, &n) != 0 || n > (uint64_t)(end - p) || n >= 128)
            return -1;
        memcpy(out[f], p, n);
        p += n;
    }
    return k[1];
}

/* A batch of one record of each kind on the strings of a restored key (what
   a producer sends after the restart), as the worker passes it on: only
   records fp_record_check accepts. */
static fp_batch_hdr_t *s_live_batch(const char strs[6][128], int kind, uint8_t cfg,
                                    int64_t now)
{
    const char *plant = strs[0], *order = strs[1], *operation = strs[2];
    const char *material = kind == FP_CK_CONSUMPTION ? strs[3] : "M";
    const char *lot = kind == FP_CK_CONSUMPTION ? strs[4] : "";
    const char *unit = kind == FP_CK_CONSUMPTION ? strs[5] : "KG";
    const char *reason = kind == FP_CK_SCRAP ? strs[3] : "R";
    const char *table[] = {plant, order, operation, material, lot, unit, reason, "L1", "S1"};
    enum { T_PLANT = 1, T_ORDER, T_OP, T_MAT, T_LOT, T_UNIT, T_REASON, T_LINE, T_STATION };
    const uint32_t nstr = 9;
    uint32_t strbytes = 0;
    for (uint32_t i = 0; i < nstr; i++)
        strbytes += (uint32_t)strlen(table[i]) + 1;
    const uint32_t nrec = 5;
    size_t size = fp_batch_size(nrec, nstr, strbytes);
    fp_batch_hdr_t *b = aligned_alloc(8, (size + 7) & ~(size_t)7);
    FUZZ_CHECK(b != NULL);
    *b = (fp_batch_hdr_t){.type = FP_MSG_BATCH, .nrecords = nrec, .nstrings = nstr,
                          .strbytes = strbytes, .source_id = 9, .epoch = 1};
    uint32_t *off = fp_batch_stroff(b);
    char *blob = fp_batch_strblob(b);
    uint32_t at = 0;
    uint8_t flags[1 + 9] = {0}; /* fp_record_check's: C strings hold no NUL */
    for (uint32_t i = 0; i < nstr; i++) {
        off[i] = at;
        size_t l = strlen(table[i]);
        memcpy(blob + at, table[i], l + 1);
        at += (uint32_t)l + 1;
        flags[i + 1] = fp_record_string_flags((uint32_t)l, false);
    }
    off[nstr] = at;
    fp_record_t *r = fp_batch_records(b);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < nrec; i++) {
        fp_record_t x;
        memset(&x, 0, sizeof x);
        x.seq = i + 1;
        x.time_ns = now - (int64_t)(cfg & 0xf0) * 1000000000ll + i;
        x.kind = (uint8_t)(i + 1);
        x.quantity = (int64_t)(cfg >> 4) - 3; /* negative quantities are corrections */
        x.str[FP_STR_PLANT] = T_PLANT;
        x.str[FP_STR_ORDER] = T_ORDER;
        x.str[FP_STR_OPERATION] = T_OP;
        x.str[FP_STR_LINE] = T_LINE;
        x.str[FP_STR_STATION] = T_STATION;
        if (x.kind == FP_KIND_MATERIAL) {
            x.str[FP_STR_MATERIAL] = T_MAT;
            x.str[FP_STR_LOT] = strlen(lot) ? T_LOT : 0;
            x.str[FP_STR_UNIT] = T_UNIT;
        }
        if (x.kind == FP_KIND_SCRAP)
            x.str[FP_STR_REASON] = T_REASON;
        if (fp_record_check(&x, nstr, flags) == FP_RECORD_OK)
            r[kept++] = x;
    }
    /* Records are in place before the string offsets: move them up. */
    if (kept < nrec) {
        size_t csize = fp_batch_size(kept, nstr, strbytes);
        fp_batch_hdr_t *c = aligned_alloc(8, (csize + 7) & ~(size_t)7);
        FUZZ_CHECK(c != NULL);
        *c = *b;
        c->nrecords = kept;
        memcpy(fp_batch_records(c), r, kept * sizeof *r);
        memcpy(fp_batch_stroff(c), off, (nstr + 1) * sizeof *off);
        memcpy(fp_batch_strblob(c), blob, strbytes);
        free(b);
        b = c;
    }
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t cfg = data[0];
    uint32_t nshards = 1 + (cfg & 7);
    /* Periods off or by day (UTC): keys of both kinds restore. */
    agg_config_t acfg = {.instance = "fuzz",
                         .closed_key_grace_ns = (int64_t)((cfg >> 3) & 3) * 1000000000ll,
                         .max_open_keys = 1000,
                         .period = {.kind = (cfg & 0x20) ? FP_PERIOD_DAY : FP_PERIOD_NONE}};
    s_emits_t ea = {fp_codec_new(), 0, 0}, eb = {fp_codec_new(), 0, 0};
    FUZZ_CHECK(ea.codec && eb.codec);
    agg_t *a = agg_new(&acfg, s_emit, s_reject, &ea);
    agg_t *b = agg_new(&acfg, s_emit, s_reject, &eb);
    FUZZ_CHECK(a && b);

    /* Restore, as the shard does. */
    const uint8_t *p = data + 1, *end = data + size;
    char live[6][128];
    int live_kind = -1;
    while (end - p >= 1) {
        size_t klen = *p++;
        if ((size_t)(end - p) < klen + 1)
            break;
        const uint8_t *key = p;
        p += klen;
        size_t slen = *p++;
        if ((size_t)(end - p) < slen)
            break;
        /* Copies of exactly their size: ASan sees any read past either. */
        uint8_t *k = malloc(klen ? klen : 1), *s = malloc(slen ? slen : 1);
        FUZZ_CHECK(k && s);
        memcpy(k, key, klen);
        memcpy(s, p, slen);
        p += slen;
        uint32_t shard = agg_key_shard(k, klen, nshards);
        int rc = agg_import(a, k, klen, s, slen);
        FUZZ_CHECK(rc == 0 || rc == -1);
        if (rc == 0) {
            /* AGG_KEY_ALL_SHARDS: the shards' own key (the flushed
               periods), which every shard imports */
            FUZZ_CHECK(shard < nshards || shard == AGG_KEY_ALL_SHARDS);
            uint32_t one = agg_key_shard(k, klen, 1);
            FUZZ_CHECK(one == 0 || (one == AGG_KEY_ALL_SHARDS && shard == AGG_KEY_ALL_SHARDS));
            if (live_kind < 0)
                live_kind = s_key_strings(k, klen, live);
        }
        if (shard == UINT32_MAX)
            FUZZ_CHECK(rc == -1);
        free(k);
        free(s);
    }
    agg_export_dirty(a, s_discard, NULL); /* committed already */

    /* What is held restores exactly into a fresh agg_t, in any order. */
    s_pairs_t xa = {0}, xb = {0};
    FUZZ_CHECK(agg_export_all(a, s_collect, &xa) == 0);
    for (size_t i = xa.n; i-- > 0;) {
        int rc = agg_import(b, xa.v[i].k, xa.v[i].klen, xa.v[i].s, xa.v[i].slen);
        FUZZ_CHECK(rc == 0);
    }
    FUZZ_CHECK(agg_export_all(b, s_collect, &xb) == 0);
    FUZZ_CHECK(xa.n == xb.n);
    if (xa.n) {
        qsort(xa.v, xa.n, sizeof *xa.v, s_pair_cmp);
        qsort(xb.v, xb.n, sizeof *xb.v, s_pair_cmp);
    }
    for (size_t i = 0; i < xa.n; i++) {
        FUZZ_CHECK(xa.v[i].klen == xb.v[i].klen && memcmp(xa.v[i].k, xb.v[i].k, xa.v[i].klen) == 0);
        FUZZ_CHECK(xa.v[i].slen == xb.v[i].slen && memcmp(xa.v[i].s, xb.v[i].s, xa.v[i].slen) == 0);
    }
    FUZZ_CHECK(agg_stats(a)->keys == agg_stats(b)->keys);
    s_pairs_free(&xb);

    /* The restart's flushes emit the same checkpoints from either. */
    agg_export_dirty(b, s_discard, NULL);
    agg_flush(a, AGG_FLUSH_LATE, S_NOW);
    agg_flush(b, AGG_FLUSH_LATE, S_NOW);
    agg_flush(a, AGG_FLUSH_ALL, S_NOW);
    agg_flush(b, AGG_FLUSH_ALL, S_NOW);
    FUZZ_CHECK(ea.n == eb.n && ea.sum == eb.sum);

    /* Live records on a restored key, then release, exported as a round. */
    if (live_kind > 0) {
        fp_batch_hdr_t *batch = s_live_batch((const char(*)[128])live, live_kind, cfg, S_NOW);
        agg_add(a, batch);
        free(batch);
    }
    s_pairs_t round = {0};
    agg_watermark(a, S_NOW + 86400000000000ll); /* a day later: earlier periods flushed */
    agg_flush(a, AGG_FLUSH_ALL, S_NOW + 1);
    FUZZ_CHECK(agg_export_dirty(a, s_collect, &round) == 0);
    agg_flush(a, AGG_FLUSH_ALL, INT64_MAX); /* every grace has passed */
    FUZZ_CHECK(agg_export_dirty(a, s_collect, &round) == 0);
    agg_flush(b, AGG_FLUSH_LATE, INT64_MIN); /* a clock far behind the file */
    /* What a round exported is importable. */
    for (size_t i = 0; i < round.n; i++)
        if (round.v[i].slen) {
            agg_t *c = agg_new(&acfg, s_emit, s_reject, &eb);
            FUZZ_CHECK(c != NULL);
            FUZZ_CHECK(agg_import(c, round.v[i].k, round.v[i].klen, round.v[i].s,
                                  round.v[i].slen) == 0);
            agg_destroy(&c);
        }
    s_pairs_free(&round);
    s_pairs_free(&xa);
    agg_destroy(&a);
    agg_destroy(&b);
    FUZZ_CHECK(a == NULL && b == NULL);
    fp_codec_destroy(&ea.codec);
    fp_codec_destroy(&eb.codec);
    return 0;
}
