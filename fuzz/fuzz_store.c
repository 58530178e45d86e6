/*  fuzz_store.c - libFuzzer target for the state file's records as the
    store reads them (src/store/store.c, src/store/outbox.c): the meta
    check and the upgrade of versions 1 and 2 in fp_store_open (and the
    tool mode's fp_store_open_tool), then every read a start, a tool or a
    sink makes (each key into agg_import, each counter into
    counter_import, each source into dedup_restore, the feeds into the
    commit core, dead letters, outbox events into the checkpoint decoder,
    readers, lags, usage), a round written over it, the trim, and a second
    open.

    The input describes an LMDB file, which the target writes with LMDB
    itself into a fresh directory (/dev/shm when there is one) before
    floorpost opens it: the records are fuzzed, not LMDB's pages (a
    damaged page is LMDB's own business and the state verification's).
      byte 0   flags: bit 0 default meta records (magic, version, instance
               "fuzz", round 3, global_seq 5, dl_seq 2) and the version's
               tables; bits 1-2 the version written: the current one, 1 (no
               readers, no counters table), 2 (no counters table), or the
               next one (refused); bit 3 open in tool mode; bit 4 every table
               whatever the version; bit 5 commit a round over the state
               after the reads; bit 6 the current version's records
               without their checksums and digest (format 5 seals every
               value and writes meta "digest" from what the tables hold)
      then     records [u8 table][u8 klen][key][u16 vlen, big-endian][value]
               table % 9: meta, keys, sources, feeds, outbox, deadletters,
               readers, counters, or 8: the unnamed main table (where LMDB
               keeps the named tables: a record there can shadow one)

    Invariants: an open either refuses with a message naming the file or
    succeeds (never an assert, a crash, a leak); a refused or a
    successful open is never half-done (a second open gives the same
    verdict, after an upgrade without upgrading again); an accepted
    reader is found again by name with the same position; every read
    returns 0, a documented code or the callback's value.

    Seeds: fuzz/seeds/store/ (tests/data/state-v1 and a version-2 state
    made by floorpost, dumped into this format).
*/
#include <errno.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agg.h"
#include "codec.h"
#include "commit.h"
#include "counter.h"
#include "dedup.h"
#include "fuzz.h"
#include "outbox.h"
#include "store.h"
#include "verify.h"

#define S_MAP (1u << 20) /* bytes: the map of the writer and of floorpost */
#define S_INSTANCE "fuzz"

static volatile size_t s_sink; /* keeps reads whose result is unused */

#define S_NTABLES 8
static const char *const s_tables[S_NTABLES] = {"meta",   "keys",        "sources", "feeds",
                                                "outbox", "deadletters", "readers", "counters"};

static void s_put(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen, const void *v,
                  size_t vlen)
{
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
    (void)mdb_put(txn, dbi, &key, &val, 0); /* LMDB refuses some: an empty key, a dbi clash */
}

static void s_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t s_dec64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Format 5: a record of table t (0..7) as floorpost writes it, with its
   checksum (store.h fp_store_value_sum). */
static void s_put_sealed(MDB_txn *txn, MDB_dbi dbi, int t, const void *k, size_t klen,
                         const void *v, size_t vlen)
{
    static uint8_t buf[65536 + 8];
    if (vlen > 65536)
        return;
    if (vlen)
        memcpy(buf, v, vlen);
    uint32_t sum = fp_store_value_sum((unsigned)t, k, klen, v, vlen);
    for (int i = 0; i < 4; i++)
        buf[vlen + i] = (uint8_t)(sum >> (24 - 8 * i));
    s_put(txn, dbi, k, klen, buf, vlen + 4);
}

/* Format 5: meta "digest" from what the tables hold (per table, entries
   and the sum of the values' last 4 bytes; resubmits, table 8, empty). */
static void s_put_digest(MDB_txn *txn, const MDB_dbi *dbi, const bool *open)
{
    uint8_t d[9 * 16] = {0};
    for (int t = 0; t < S_NTABLES; t++) {
        MDB_cursor *cur;
        if (!open[t] || mdb_cursor_open(txn, dbi[t], &cur) != 0)
            continue;
        uint64_t n = 0, sum = 0;
        MDB_val k, v;
        MDB_cursor_op op = MDB_FIRST;
        while (mdb_cursor_get(cur, &k, &v, op) == 0) {
            op = MDB_NEXT;
            if (t == 0 && k.mv_size == 6 && memcmp(k.mv_data, "digest", 6) == 0)
                continue;
            n++;
            if (v.mv_size >= 4) {
                const uint8_t *e = (const uint8_t *)v.mv_data + v.mv_size - 4;
                sum += (uint32_t)e[0] << 24 | (uint32_t)e[1] << 16 | (uint32_t)e[2] << 8 | e[3];
            }
        }
        mdb_cursor_close(cur);
        s_be64(d + 16 * t, n);
        s_be64(d + 16 * t + 8, sum);
    }
    (void)s_dec64;
    s_put_sealed(txn, dbi[0], 0, "digest", 6, d, sizeof d);
}

/* Writes the described file into dir; false when LMDB would not. */
static bool s_write(const char *dir, const uint8_t *data, size_t size)
{
    uint8_t flags = data[0];
    int vchoice = (flags >> 1) & 3;
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) || mdb_env_set_mapsize(env, S_MAP) ||
        mdb_env_open(env, dir, MDB_NOSYNC, 0640) || mdb_txn_begin(env, NULL, 0, &txn)) {
        if (env)
            mdb_env_close(env);
        return false;
    }
    MDB_dbi dbi[S_NTABLES + 1]; /* + the main table */
    bool open[S_NTABLES + 1] = {false};
    if (mdb_dbi_open(txn, NULL, 0, &dbi[S_NTABLES]) == 0)
        open[S_NTABLES] = true;
    static const uint32_t versions[4] = {FP_STORE_FORMAT_VERSION, 1, 2,
                                         FP_STORE_FORMAT_VERSION + 1};
    uint32_t version = versions[vchoice];
    /* bit 6: the current version's records written raw (no checksums, no
       digest): a damaged-looking file */
    bool sealed = version == FP_STORE_FORMAT_VERSION && !(flags & 64);
#define PUT(t, k, kl, v, vl)                                                                      \
    (sealed && (t) < S_NTABLES ? s_put_sealed(txn, dbi[t], t, k, kl, v, vl)                       \
                               : s_put(txn, dbi[t], k, kl, v, vl))
    if (flags & 1) {
        /* the tables of the version written (bit 4: all of them anyway) */
        bool all = (flags & 16) != 0;
        for (int t = 0; t < S_NTABLES; t++)
            if ((t != 6 || version >= 2 || all) && (t != 7 || version >= 3 || all))
                open[t] = mdb_dbi_open(txn, s_tables[t], MDB_CREATE, &dbi[t]) == 0;
        if (open[0]) {
            uint8_t v[4] = {0, 0, 0, (uint8_t)version}, b[8];
            PUT(0, "magic", 5, FP_STORE_MAGIC, strlen(FP_STORE_MAGIC));
            PUT(0, "version", 7, v, 4);
            PUT(0, "instance", 8, S_INSTANCE, strlen(S_INSTANCE));
            s_be64(b, 1764000000000000000ull);
            PUT(0, "created_ns", 10, b, 8);
            s_be64(b, 3);
            PUT(0, "round", 5, b, 8);
            s_be64(b, 5);
            PUT(0, "global_seq", 10, b, 8);
            s_be64(b, 2);
            PUT(0, "dl_seq", 6, b, 8);
        }
    }
    const uint8_t *p = data + 1, *end = data + size;
    while (end - p >= 4) {
        int t = p[0] % (S_NTABLES + 1);
        size_t klen = p[1];
        p += 2;
        if ((size_t)(end - p) < klen + 2)
            break;
        const uint8_t *k = p;
        p += klen;
        size_t vlen = ((size_t)p[0] << 8) | p[1];
        p += 2;
        if ((size_t)(end - p) < vlen)
            vlen = (size_t)(end - p);
        const uint8_t *v = p;
        p += vlen;
        if (!open[t] && t < S_NTABLES)
            open[t] = mdb_dbi_open(txn, s_tables[t], MDB_CREATE, &dbi[t]) == 0;
        if (open[t])
            PUT(t, k, klen, v, vlen);
    }
#undef PUT
    if (sealed && open[0])
        s_put_digest(txn, dbi, open);
    bool ok = mdb_txn_commit(txn) == 0;
    mdb_env_close(env);
    return ok;
}

/* ---- the reads a start, a tool and a sink make ---- */

typedef struct {
    agg_t *agg;
    dedup_t *dedup;
    counter_t *counters;
    uint64_t n;
} s_reads_t;

static int s_key(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    s_reads_t *r = ctx;
    r->n++;
    /* As shard.c does: a key it cannot place or import refuses the state. */
    if (agg_key_shard(key, klen, 4) == UINT32_MAX)
        return -1;
    int rc = agg_import(r->agg, key, klen, state, slen);
    FUZZ_CHECK(rc == 0 || rc == -1);
    return rc;
}

static int s_counter(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    s_reads_t *r = ctx;
    r->n++;
    /* As worker.c does: a key without a source, or one it cannot import,
       refuses the state. */
    if (counter_key_source(key, klen) == 0)
        return -1;
    int rc = counter_import(r->counters, key, klen, state, slen);
    FUZZ_CHECK(rc == 0 || rc == -1);
    return rc;
}

static int s_source(void *ctx, uint64_t source_id, const void *state, size_t len)
{
    s_reads_t *r = ctx;
    r->n++;
    return dedup_restore(r->dedup, source_id, state, len);
}

static int s_dead(void *ctx, uint64_t dl_seq, int64_t wall_ns, const char *reason,
                  const char *json, size_t jlen, const void *payload, size_t plen)
{
    s_reads_t *r = ctx;
    r->n++;
    FUZZ_CHECK(reason != NULL && strlen(reason) < 65536);
    FUZZ_CHECK(json != NULL || jlen == 0);
    size_t sum = 0; /* touch every byte handed over (ASan checks each) */
    for (size_t i = 0; i < jlen; i++)
        sum += (unsigned char)json[i];
    for (size_t i = 0; i < plen; i++)
        sum += ((const unsigned char *)payload)[i];
    s_sink = sum;
    return 0;
}

static int s_event(void *ctx, uint64_t global_seq, uint64_t round, const char *topic,
                   size_t tlen, const void *ev, size_t evlen)
{
    s_reads_t *r = ctx;
    r->n++;
    FUZZ_CHECK(tlen >= 1);
    void *copy = malloc(evlen ? evlen : 1); /* aligned, as the reader copies it */
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, ev, evlen);
    fp_checkpoint_t ck;
    if (fp_codec_checkpoint_decode(copy, evlen, &ck) == FP_CODEC_OK)
        FUZZ_CHECK(ck.nlineage <= FP_LINEAGE_MAX);
    free(copy);
    return 0;
}

typedef struct {
    fp_store_t *store;
    char names[16][FP_OUTBOX_READER_NAME_MAX + 1];
    uint64_t pos[16];
    int n;
} s_readers_t;

static int s_reader(void *ctx, const char *name, uint64_t position, uint32_t flags,
                    int64_t updated_ns)
{
    s_readers_t *r = ctx;
    size_t len = strlen(name);
    FUZZ_CHECK(len >= 1 && len <= FP_OUTBOX_READER_NAME_MAX);
    uint64_t pos2 = 0, aux[2];
    uint32_t flags2 = 0;
    FUZZ_CHECK(fp_outbox_reader_ex(r->store, name, &pos2, &flags2, aux) == 0);
    FUZZ_CHECK(pos2 == position && flags2 == flags);
    if (r->n < 16) {
        memcpy(r->names[r->n], name, len + 1);
        r->pos[r->n++] = position;
    }
    return 0;
}

static int s_lag(void *ctx, const char *name, uint64_t position, uint64_t lag,
                 fp_outbox_lag_t verdict)
{
    FUZZ_CHECK(verdict == FP_OUTBOX_LAG_OK || verdict == FP_OUTBOX_LAG_WARN ||
               verdict == FP_OUTBOX_LAG_DETACH);
    return 0;
}

static void s_publish(void *ctx, fp_commit_item_t *item)
{
}

static void s_emit(void *ctx, const fp_checkpoint_t *ck)
{
}

static void s_reject(void *ctx, const fp_batch_hdr_t *b, const fp_record_t *r, const char *why)
{
}

/* Return codes of the reads: 0, a store code, an LMDB one, or ours (-1). */
static bool s_rc_ok(int rc)
{
    return rc == 0 || rc == -1 || rc == FP_STORE_CORRUPT || rc == FP_STORE_EMPTY ||
           rc == FP_STORE_NOTFOUND || rc == FP_STORE_FULL ||
           (rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE) || (rc < 0 && rc > -4096);
}

static void s_reads(fp_store_t *st, bool tool, uint64_t *round_out, uint64_t *gseq_out)
{
    uint64_t round = 0, gseq = 0;
    int rc = fp_store_last_round(st, &round, &gseq);
    FUZZ_CHECK(s_rc_ok(rc));
    *round_out = round;
    *gseq_out = gseq;

    agg_config_t acfg = {.instance = "fuzz", .closed_key_grace_ns = 1000000000,
                         .max_open_keys = 1000};
    counter_config_t ccfg = {.default_modulus = 1ull << 32};
    s_reads_t r = {agg_new(&acfg, s_emit, s_reject, NULL), dedup_new(64, 8), counter_new(&ccfg),
                   0};
    FUZZ_CHECK(r.agg && r.dedup && r.counters);
    FUZZ_CHECK(s_rc_ok(fp_store_each_key(st, s_key, &r)));
    FUZZ_CHECK(s_rc_ok(fp_store_each_counter(st, s_counter, &r)));
    FUZZ_CHECK(s_rc_ok(fp_store_each_source(st, s_source, &r)));
    FUZZ_CHECK(s_rc_ok(fp_store_each_deadletter(st, 0, s_dead, &r)));
    rc = fp_outbox_read(st, 1, 1000, s_event, &r); /* a count, or an error */
    FUZZ_CHECK(rc >= 0 || s_rc_ok(rc));
    uint64_t oldest = 0;
    FUZZ_CHECK(s_rc_ok(fp_outbox_oldest(st, &oldest)));
    if (oldest > 1) {
        rc = fp_outbox_read(st, oldest, 10, s_event, &r);
        FUZZ_CHECK(rc >= 0 || s_rc_ok(rc));
    }
    agg_destroy(&r.agg);
    dedup_destroy(&r.dedup);
    counter_destroy(&r.counters);

    if (!tool) {
        /* emit's start: the feeds and the last global_seq. */
        char err[256] = "";
        fp_commit_t *c = fp_commit_new(1, round + 1, st, s_publish, NULL, err, sizeof err);
        if (c) {
            FUZZ_CHECK(fp_commit_global_seq(c) >= gseq);
            fp_commit_destroy(&c);
        } else {
            FUZZ_CHECK(err[0] != '\0');
        }
    }
    s_readers_t rd = {.store = st};
    FUZZ_CHECK(s_rc_ok(fp_outbox_each_reader(st, s_reader, &rd)));
    uint64_t ob = 0, mb = 0, used = 0;
    FUZZ_CHECK(s_rc_ok(fp_outbox_lags(st, 1000, s_lag, NULL, &ob, &mb)));
    FUZZ_CHECK(s_rc_ok(fp_outbox_usage(st, &ob, &mb)));
    FUZZ_CHECK(s_rc_ok(fp_store_usage(st, &used, &mb)));
    FUZZ_CHECK(fp_outbox_reader(st, "no-such-reader", NULL, NULL) != 0);
}

/* A round over what was read: readers' positions, a dead letter, the
   round number; then retention and the lag rule, as emit does. */
static void s_round(fp_store_t *st, uint64_t round, uint64_t gseq)
{
    fp_store_txn_t *t = NULL;
    int rc = fp_store_begin(st, &t);
    FUZZ_CHECK(s_rc_ok(rc));
    if (rc != 0)
        return;
    (void)fp_outbox_put_reader(t, "fuzz-sink", gseq, FP_OUTBOX_READER_ENABLED);
    uint64_t aux[2] = {1, 2};
    (void)fp_outbox_put_reader_aux(t, "fuzz-sink", aux);
    (void)fp_store_put_deadletter(t, 1764000000000000000ll, "malformed", "{}", 2, "x", 1, NULL);
    (void)fp_store_set_round(t, round + 1, gseq);
    FUZZ_CHECK(s_rc_ok(fp_store_commit(&t)));
    FUZZ_CHECK(t == NULL);
    uint64_t deleted = 0;
    FUZZ_CHECK(s_rc_ok(fp_outbox_trim(st, INT64_MAX, 100, &deleted)));
    rc = fp_outbox_detach_lagging(st, 1, NULL, NULL);
    FUZZ_CHECK(rc >= 0 || s_rc_ok(rc));
}

static char s_base[64];

static void s_rm(const char *dir)
{
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

static void s_rm_base(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/s", s_base);
    s_rm(dir);
    rmdir(s_base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!s_base[0]) {
        struct stat sb;
        snprintf(s_base, sizeof s_base, "%s/fp-fuzz-store-%d",
                 stat("/dev/shm", &sb) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
        FUZZ_CHECK(mkdir(s_base, 0700) == 0 || errno == EEXIST);
        atexit(s_rm_base);
    }
    char dir[128];
    snprintf(dir, sizeof dir, "%s/s", s_base);
    s_rm(dir);
    FUZZ_CHECK(mkdir(dir, 0700) == 0);
    if (!s_write(dir, data, size)) {
        s_rm(dir);
        return 0;
    }
    bool tool = (data[0] & 8) != 0;
    /* The walk in this process (LMDB wrote the file: no damaged page), as
       a start runs it in its child: a file it finds damaged is refused. */
    fp_store_verify_t vr;
    int vrc = fp_store_verify(dir, false, &vr);
    FUZZ_CHECK(vrc == 0 || vrc == FP_STORE_CORRUPT);
    FUZZ_CHECK((vrc == 0) == (vr.problem[0] == '\0'));
    char err[512] = "";
    fp_store_t *st = tool ? fp_store_open_tool(dir, S_MAP, S_INSTANCE, err, sizeof err)
                          : fp_store_open(dir, S_MAP, S_INSTANCE, err, sizeof err);
    FUZZ_CHECK(tool || vrc == 0 || st == NULL);
    if (!st) {
        FUZZ_CHECK(strstr(err, dir) != NULL);
        /* Refused is refused: the same verdict again, nothing changed. */
        char err2[512] = "";
        fp_store_t *again = tool ? fp_store_open_tool(dir, S_MAP, S_INSTANCE, err2, sizeof err2)
                                 : fp_store_open(dir, S_MAP, S_INSTANCE, err2, sizeof err2);
        FUZZ_CHECK(again == NULL && strcmp(err, err2) == 0);
        s_rm(dir);
        return 0;
    }
    uint32_t upgraded = fp_store_upgraded_from(st);
    FUZZ_CHECK(upgraded == 0 || (upgraded < FP_STORE_FORMAT_VERSION && !tool));
    uint64_t round = 0, gseq = 0;
    s_reads(st, tool, &round, &gseq);
    if (!tool && (data[0] & 32))
        s_round(st, round, gseq);
    fp_store_close(&st);
    FUZZ_CHECK(st == NULL);
    /* A second open: accepted again, never upgraded twice. */
    st = fp_store_open(dir, S_MAP, S_INSTANCE, err, sizeof err);
    if (!tool) {
        if (!st)
            fprintf(stderr, "second open refused: %s\n", err);
        FUZZ_CHECK(st != NULL);
    }
    if (st) {
        FUZZ_CHECK(fp_store_upgraded_from(st) == 0);
        s_reads(st, false, &round, &gseq);
        fp_store_close(&st);
    }
    s_rm(dir);
    return 0;
}
