/*  bench_micro.c - single-core micro benchmarks of the two hot loops
    (issue 2):

    (a) verify + read + dedup: telemetry batches of 256 records from the
        plant model are encoded once; the timed loop runs, per batch,
        fp_codec_batch_parse (identifier, FlatBuffers verifier, limits),
        then per record dedup_check and a read of the fields a worker uses
        (kind, string indices, quantity). Every pass uses a new epoch, so
        every record takes the DEDUP_NEW path, as in steady state.
    (b) aggregate upserts: internal fp_batch_hdr_t batches (as workers hand
        them to shards) go through agg_add; 1e4 and 1e6 open keys. A warm-up
        pass creates the keys; the timed passes update them.
    (c) churn: a 10,000-key plant of short operations (20 records each),
        so operations keep closing and new ones opening, with an
        AGG_FLUSH_LATE every 64 batches (a round) and a grace of 20 rounds:
        the closings, their compaction and release (agg_work after each
        batch, as the shard does after a burst) and the key creations
        beside them are timed with the records (a new agg_t per pass).
    (d) record check: the worker's validation of (a)'s batches, parsed
        before the clock starts: each string's flags once per batch
        (length, NUL bytes: fp_record_string_flags), then fp_record_check
        per record.
    (e) checkpoint encode: the shard's fp_codec_checkpoint_encode of one
        consumption checkpoint (every field a posting has, one lineage
        range, a day period), its event_id one of 1,024 made beforehand.

    Usage: bench_micro [--json FILE] [--quick]
    Prints a table; writes JSON (default build/bench/results/micro.json).
    Target (issue 2): (a) >= 20 M records/s on one core.
*/
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agg.h"
#include "bench_util.h"
#include "codec.h"
#include "dedup.h"
#include "plantgen.h"
#include "record_check.h"

#define BATCH 256u
#define REPS 5

typedef struct {
    void *buf;
    size_t len;
} s_frame_t;

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, s_cmp_double);
    return v[n / 2];
}

/* Encodes nbatches batches of BATCH records from plant p into aligned copies. */
static s_frame_t *s_encode(const plantgen_params_t *p, uint32_t nbatches)
{
    plantgen_t *g = plantgen_new(p);
    bu_builder_t b;
    s_frame_t *fr = calloc(nbatches, sizeof *fr);
    if (!g || !fr || bu_builder_init(&b, BATCH) != 0) {
        fprintf(stderr, "bench_micro: out of memory\n");
        exit(1);
    }
    for (uint32_t i = 0; i < nbatches; i++) {
        bu_builder_clear(&b);
        for (uint32_t k = 0; k < BATCH; k++) {
            uint64_t sid, ep;
            fp_rec_in_t r;
            plantgen_next(g, &sid, &ep, &r);
            bu_builder_add(&b, sid, ep, &r);
        }
        const void *out;
        size_t len;
        if (bu_builder_encode(&b, &out, &len) != FP_CODEC_OK) {
            fprintf(stderr, "bench_micro: encode failed\n");
            exit(1);
        }
        fr[i].buf = aligned_alloc(8, (len + 7) & ~(size_t)7);
        memcpy(fr[i].buf, out, len);
        fr[i].len = len;
    }
    bu_builder_fini(&b);
    plantgen_destroy(&g);
    return fr;
}

/* (a) Returns ns per record (median of REPS passes). */
static double s_bench_parse(s_frame_t *fr, uint32_t nbatches, uint64_t *sink)
{
    dedup_t *d = dedup_new(DEDUP_WINDOW_DEFAULT, 4096);
    double ns[REPS];
    uint64_t acc = 0;
    for (int rep = -1; rep < REPS; rep++) { /* rep -1: warm-up */
        uint64_t epoch = (uint64_t)(rep + 2);
        int64_t t0 = bu_now_ns();
        uint64_t n = 0;
        for (uint32_t i = 0; i < nbatches; i++) {
            fp_batch_view_t v;
            if (fp_codec_batch_parse(fr[i].buf, fr[i].len, 4u << 20, &v) != FP_CODEC_OK) {
                fprintf(stderr, "bench_micro: parse failed\n");
                exit(1);
            }
            dedup_verdict_t verdict;
            dedup_source_t *src = dedup_source(d, v.source_id, epoch, &verdict);
            if (!src)
                exit(1);
            for (uint32_t k = 0; k < v.nrecords; k++) {
                const fp_record_t *r = &v.records[k];
                if (dedup_check(d, src, r->seq) != DEDUP_NEW)
                    continue;
                /* what the worker reads: kind, string indices, quantity */
                acc += r->kind + (uint64_t)r->quantity + r->str[FP_STR_PLANT] +
                       r->str[FP_STR_ORDER] + r->str[FP_STR_OPERATION] + r->str[FP_STR_MATERIAL];
            }
            n += v.nrecords;
        }
        int64_t t1 = bu_now_ns();
        if (rep >= 0)
            ns[rep] = (double)(t1 - t0) / (double)n;
    }
    const dedup_stats_t *st = dedup_stats(d);
    if (st->duplicates || st->too_old) {
        fprintf(stderr, "bench_micro: unexpected dedup verdicts\n");
        exit(1);
    }
    dedup_destroy(&d);
    *sink += acc;
    return s_median(ns, REPS);
}

/* (d) Returns ns per record (median of REPS passes). */
static double s_bench_check(s_frame_t *fr, uint32_t nbatches, uint64_t *sink)
{
    fp_batch_view_t *v = calloc(nbatches, sizeof *v);
    uint8_t *flags = calloc(FP_BATCH_STRINGS_MAX + 1, 1);
    if (!v || !flags)
        exit(1);
    for (uint32_t i = 0; i < nbatches; i++)
        if (fp_codec_batch_parse(fr[i].buf, fr[i].len, 4u << 20, &v[i]) != FP_CODEC_OK)
            exit(1);
    double ns[REPS];
    uint64_t ok = 0, total = 0;
    for (int rep = -1; rep < REPS; rep++) { /* rep -1: warm-up */
        uint64_t n = 0;
        int64_t t0 = bu_now_ns();
        for (uint32_t i = 0; i < nbatches; i++) {
            bool any = false;
            for (uint32_t s = 1; s <= v[i].nstrings; s++) {
                uint32_t sl;
                const char *str = fp_codec_batch_string(&v[i], s, &sl);
                flags[s] = fp_record_string_flags(sl, memchr(str, 0, sl) != NULL);
                any |= flags[s] != 0;
            }
            for (uint32_t k = 0; k < v[i].nrecords; k++)
                ok += fp_record_check(&v[i].records[k], v[i].nstrings, any ? flags : NULL) ==
                      FP_RECORD_OK;
            n += v[i].nrecords;
        }
        int64_t t1 = bu_now_ns();
        if (rep >= 0)
            ns[rep] = (double)(t1 - t0) / (double)n;
        total += n;
    }
    if (ok != total) {
        fprintf(stderr, "bench_micro: a plant record failed its check\n");
        exit(1);
    }
    free(flags);
    free(v);
    *sink += ok;
    return s_median(ns, REPS);
}

/* (e) Returns ns per checkpoint (median of REPS passes of n). */
static double s_bench_encode(uint32_t n, uint64_t *sink)
{
    fp_codec_t *c = fp_codec_new();
    if (!c)
        exit(1);
    static char ids[1024][48]; /* made before the clock starts */
    for (uint32_t i = 0; i < 1024; i++)
        snprintf(ids[i], sizeof ids[i], "fp-bench:%032x", i * 2654435761u);
    fp_checkpoint_t ck;
    memset(&ck, 0, sizeof ck);
    ck.kind = FP_CK_CONSUMPTION;
    ck.checkpoint_no = 3;
    ck.instance = "fp-bench";
    ck.plant = "1000";
    ck.line = "L01";
    ck.order = "PO-000123456";
    ck.operation = "0010";
    ck.first_time_ns = 1733650000000000000;
    ck.last_time_ns = 1733650042000000000;
    ck.record_count = 19;
    ck.lineage[0] = (fp_seq_range_t){7, 2, 1000, 1018};
    ck.nlineage = 1;
    ck.posting_date = "2026-12-08";
    ck.period = "day";
    ck.period_start_ns = 1733616000000000000;
    ck.period_end_ns = 1733702400000000000;
    ck.material = "MAT-4711";
    ck.lot = "LOT-2026-0042";
    ck.unit = "KG";
    ck.quantity = 12500;
    double ns[REPS];
    for (int rep = -1; rep < REPS; rep++) { /* rep -1: warm-up */
        int64_t t0 = bu_now_ns();
        for (uint32_t i = 0; i < n; i++) {
            ck.event_id = ids[i & 1023];
            const void *buf;
            size_t len;
            if (fp_codec_checkpoint_encode(c, &ck, &buf, &len) != FP_CODEC_OK)
                exit(1);
            *sink += len;
        }
        int64_t t1 = bu_now_ns();
        if (rep >= 0)
            ns[rep] = (double)(t1 - t0) / (double)n;
    }
    fp_codec_destroy(&c);
    return s_median(ns, REPS);
}

/* Converts an encoded frame to the internal batch a shard receives. */
static fp_batch_hdr_t *s_internal(const s_frame_t *f)
{
    fp_batch_view_t v;
    if (fp_codec_batch_parse(f->buf, f->len, 4u << 20, &v) != FP_CODEC_OK)
        exit(1);
    uint32_t blob = 0;
    for (uint32_t i = 1; i <= v.nstrings; i++) {
        uint32_t sl;
        fp_codec_batch_string(&v, i, &sl);
        blob += sl + 1;
    }
    size_t size = fp_batch_size(v.nrecords, v.nstrings, blob);
    fp_batch_hdr_t *b = aligned_alloc(8, (size + 7) & ~(size_t)7);
    if (!b)
        exit(1);
    *b = (fp_batch_hdr_t){FP_MSG_BATCH, v.nrecords, v.nstrings, blob, v.source_id, v.epoch};
    memcpy(fp_batch_records(b), v.records, v.nrecords * sizeof(fp_record_t));
    uint32_t *off = fp_batch_stroff(b);
    char *sb = fp_batch_strblob(b);
    off[0] = 0;
    for (uint32_t i = 1; i <= v.nstrings; i++) {
        uint32_t sl;
        const char *s = fp_codec_batch_string(&v, i, &sl);
        memcpy(sb + off[i - 1], s, sl);
        sb[off[i - 1] + sl] = 0;
        off[i] = off[i - 1] + sl + 1;
    }
    return b;
}

static uint64_t s_events;
static void s_emit(void *ctx, const fp_checkpoint_t *ck)
{
    (void)ctx;
    (void)ck;
    s_events++;
}
static void s_reject(void *ctx, const fp_batch_hdr_t *b, const fp_record_t *r, const char *why)
{
    (void)ctx;
    (void)b;
    (void)r;
    fprintf(stderr, "bench_micro: agg rejected a record: %s\n", why);
    exit(1);
}

typedef struct {
    double ns_per_record;
    uint64_t keys;
    uint64_t records;
} s_agg_result_t;

/* nbatches internal batches of plant p (as a worker hands them to a
   shard); free each and the array. */
static fp_batch_hdr_t **s_batches(plantgen_params_t *p, uint32_t nbatches)
{
    s_frame_t *fr = s_encode(p, nbatches);
    fp_batch_hdr_t **bs = calloc(nbatches, sizeof *bs);
    for (uint32_t i = 0; i < nbatches; i++) {
        bs[i] = s_internal(&fr[i]);
        free(fr[i].buf);
    }
    free(fr);
    return bs;
}

/* (b) agg_add over batches of a plant with about `keys` keys. */
static s_agg_result_t s_bench_agg(uint64_t keys, uint32_t nbatches, int reps)
{
    plantgen_params_t p;
    /* long operations: upserts, few completions (which emit, not upsert) */
    bu_plant_for_keys(&p, keys, 8, 1000, BATCH, 7, 1);
    fp_batch_hdr_t **bs = s_batches(&p, nbatches);
    agg_config_t cfg = {.instance = "bench", .closed_key_grace_ns = INT64_MAX / 4,
                        .max_open_keys = 100000000};
    agg_t *a = agg_new(&cfg, s_emit, s_reject, NULL);
    double ns[REPS];
    uint64_t n = 0, nkeys = 0;
    for (int rep = -1; rep < reps; rep++) { /* rep -1 creates the keys */
        if (rep == 0)
            nkeys = agg_stats(a)->keys; /* the table size the timed passes update */
        int64_t t0 = bu_now_ns();
        n = 0;
        for (uint32_t i = 0; i < nbatches; i++) {
            agg_add(a, bs[i]);
            n += bs[i]->nrecords;
        }
        int64_t t1 = bu_now_ns();
        if (rep >= 0)
            ns[rep] = (double)(t1 - t0) / (double)n;
    }
    s_agg_result_t r = {s_median(ns, reps), nkeys, n};
    agg_destroy(&a);
    for (uint32_t i = 0; i < nbatches; i++)
        free(bs[i]);
    free(bs);
    return r;
}

/* (c) churn (above): ns per record of agg_add plus the rounds' flushes;
   keys = keys held at the end of a pass. */
static s_agg_result_t s_bench_churn(uint32_t nbatches, int reps)
{
    plantgen_params_t p;
    bu_plant_for_keys(&p, 10000, 8, 20, BATCH, 11, 1);
    fp_batch_hdr_t **bs = s_batches(&p, nbatches);
    agg_config_t cfg = {.instance = "bench", .closed_key_grace_ns = 20,
                        .max_open_keys = 100000000, .no_export = true /* as the shard, durability off */};
    double ns[REPS];
    uint64_t n = 0, nkeys = 0;
    for (int rep = 0; rep < reps; rep++) {
        agg_t *a = agg_new(&cfg, s_emit, s_reject, NULL);
        int64_t t0 = bu_now_ns(), now = 0;
        n = 0;
        for (uint32_t i = 0; i < nbatches; i++) {
            agg_add(a, bs[i]);
            n += bs[i]->nrecords;
            /* what the shard does after a burst (shard.c): a slice of
               the compaction and release the flush left */
            agg_work(a, 32 + bs[i]->nrecords / 4);
            if (i % 64 == 63)
                agg_flush(a, AGG_FLUSH_LATE, ++now);
        }
        int64_t t1 = bu_now_ns();
        ns[rep] = (double)(t1 - t0) / (double)n;
        nkeys = agg_stats(a)->keys;
        agg_destroy(&a);
    }
    s_agg_result_t r = {s_median(ns, reps), nkeys, n};
    for (uint32_t i = 0; i < nbatches; i++)
        free(bs[i]);
    free(bs);
    return r;
}

int main(int argc, char **argv)
{
    const char *json = "build/bench/results/micro.json";
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
            json = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else {
            fprintf(stderr, "usage: bench_micro [--json FILE] [--quick]\n");
            return 2;
        }
    }
    uint64_t sink = 0;

    /* (a) 10,000-key plant, 8 sources, batches of 256. 512 batches = 131072
       records: 6 MB of frames, the working set of a worker's recent input. */
    plantgen_params_t p;
    bu_plant_for_keys(&p, 10000, 8, 200, BATCH, 3, 1);
    const uint32_t nparse = 512;
    s_frame_t *fr = s_encode(&p, nparse);
    double parse_ns = s_bench_parse(fr, nparse, &sink);
    double check_ns = s_bench_check(fr, nparse, &sink);
    double encode_ns = s_bench_encode(quick ? 200000 : 500000, &sink);
    for (uint32_t i = 0; i < nparse; i++)
        free(fr[i].buf);
    free(fr);

    /* (b) 1e4 keys: 2M records touch every key; 1e6 keys: 4M records
       (about 40 visits per order, enough to touch each order's keys). */
    s_agg_result_t a4 = s_bench_agg(10000, quick ? 4096 : 8192, REPS);
    /* Nominal 1.5e6: in 4M records not every order has touched all of its
       scrap and consumption keys yet; about 1e6 are (the table prints the
       number held). */
    s_agg_result_t a6 = s_bench_agg(1500000, 16384, quick ? 3 : REPS);
    s_agg_result_t ac = s_bench_churn(quick ? 4096 : 8192, REPS);

    double parse_mrps = 1e3 / parse_ns;
    printf("| micro benchmark (one core) | ns/record | M records/s | note |\n");
    printf("|---|---:|---:|---|\n");
    printf("| verify+read+dedup, batch %u | %.2f | %.1f | target >= 20 M/s: %s |\n", BATCH,
           parse_ns, parse_mrps, parse_mrps >= 20.0 ? "met" : "MISSED");
    printf("| record check (string flags per batch, fp_record_check), batch %u | %.2f | %.1f | |\n",
           BATCH, check_ns, 1e3 / check_ns);
    printf("| checkpoint encode (one consumption checkpoint) | %.2f | %.1f | ns and M per checkpoint |\n",
           encode_ns, 1e3 / encode_ns);
    printf("| agg_add upsert, %" PRIu64 " keys | %.2f | %.1f | %" PRIu64 " records/pass |\n",
           a4.keys, a4.ns_per_record, 1e3 / a4.ns_per_record, a4.records);
    printf("| agg_add upsert, %" PRIu64 " keys | %.2f | %.1f | %" PRIu64 " records/pass |\n",
           a6.keys, a6.ns_per_record, 1e3 / a6.ns_per_record, a6.records);
    printf("| agg_add + round flushes, churn, %" PRIu64 " keys held at the end | %.2f | %.1f | %"
           PRIu64 " records/pass |\n",
           ac.keys, ac.ns_per_record, 1e3 / ac.ns_per_record, ac.records);

    FILE *f = fopen(json, "w");
    if (!f) {
        fprintf(stderr, "bench_micro: cannot write %s: %s\n", json, strerror(errno));
        return 1;
    }
    fprintf(f,
            "{\"benchmark\":\"micro\",\"batch_records\":%u,\"reps\":%d,\"statistic\":\"median\",\n"
            " \"verify_read_dedup\":{\"ns_per_record\":%.3f,\"m_records_per_s\":%.2f,"
            "\"target_m_records_per_s\":20,\"met\":%s},\n"
            " \"record_check\":{\"ns_per_record\":%.3f},\n"
            " \"checkpoint_encode\":{\"ns_per_checkpoint\":%.3f},\n"
            " \"agg_upsert\":[{\"keys\":%" PRIu64 ",\"ns_per_record\":%.3f,\"m_upserts_per_s\":%.2f},"
            "{\"keys\":%" PRIu64 ",\"ns_per_record\":%.3f,\"m_upserts_per_s\":%.2f}],\n"
            " \"agg_churn\":{\"keys_held\":%" PRIu64 ",\"ns_per_record\":%.3f},\n"
            " \"sink\":%" PRIu64 ",\"events\":%" PRIu64 "}\n",
            BATCH, REPS, parse_ns, parse_mrps, parse_mrps >= 20.0 ? "true" : "false", check_ns,
            encode_ns, a4.keys,
            a4.ns_per_record, 1e3 / a4.ns_per_record, a6.keys, a6.ns_per_record,
            1e3 / a6.ns_per_record, ac.keys, ac.ns_per_record, sink % 1000, s_events);
    fclose(f);
    return 0;
}
