/*  test_store_upgrade.c - a REAL version-1 state file (made by floorpost at
    ed73735, tests/data/state-v1/README.md) opened by this floorpost: a tool
    open refuses it, the first open upgrades it in place to version 4 and
    keeps every event, feed, source, key and dead letter; the readers and
    counters and resubmits tables are there and empty; the second open is a
    plain version-4 open. A version-2 file (made here: a version-4 one with
    its counters and resubmits tables dropped and version 2) and a version-3
    file (without resubmits) are upgraded the same way.

    Run from the repository root (as make test-unit does).
*/
#include "codec.h"
#include "outbox.h"
#include "store.h"
#include "test.h"

#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define V1_GZ "tests/data/state-v1/data.mdb.gz"
#define V4_GZ "tests/data/state-v4/data.mdb.gz" /* made by floorpost at 7914e07: README.md */
#define MAP (1u << 20) /* the file's map_size_mb = 1 */
#define INSTANCE "v1test"
#define INSTANCE4 "v4test"

static char s_dir[64];

static const char *s_unpack_gz(const char *gz)
{
    strcpy(s_dir, "/tmp/fp-test-upgrade-XXXXXX");
    ASSERT(mkdtemp(s_dir) != NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s' > '%s/data.mdb'", gz, s_dir);
    ASSERT_EQ(system(cmd), 0);
    return s_dir;
}

static const char *s_unpack(void)
{
    return s_unpack_gz(V1_GZ);
}

static void s_rmdir(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ASSERT_EQ(system(cmd), 0);
}

/* The u32 "version" meta record, read with raw LMDB (read-only txn). */
static uint32_t s_raw_version(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
    ASSERT_EQ(mdb_env_set_mapsize(env, MAP), 0);
    ASSERT_EQ(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    ASSERT_EQ(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val k = {7, "version"}, v;
    ASSERT_EQ(mdb_get(txn, dbi, &k, &v), 0);
    ASSERT(v.mv_size == 4 || v.mv_size == 8); /* 8: with its checksum (format 5) */
    const uint8_t *p = v.mv_data;
    uint32_t ver = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    /* version 1 has no readers table, version 2 no counters table,
       version 3 no resubmits table */
    MDB_dbi rd;
    int rrc = mdb_dbi_open(txn, "readers", 0, &rd);
    ASSERT_EQ(rrc == 0, ver >= 2);
    rrc = mdb_dbi_open(txn, "counters", 0, &rd);
    ASSERT_EQ(rrc == 0, ver >= 3);
    rrc = mdb_dbi_open(txn, "resubmits", 0, &rd);
    ASSERT_EQ(rrc == 0, ver >= 4);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return ver;
}

/* Every record of the version-1 tables but meta "version" (and meta
   "digest"), concatenated (u32 lengths, key, value) into a malloc'd
   buffer: the upgrade must keep them byte for byte, followed by their
   checksum. sealed: the file is format 5, each value's checksum is checked
   and cut off. */
static uint8_t *s_raw_records(const char *dir, size_t *len, bool sealed)
{
    static const char *const tables[] = {"meta",  "keys",   "sources",
                                         "feeds", "outbox", "deadletters"};
    MDB_env *env;
    MDB_txn *txn;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
    ASSERT_EQ(mdb_env_set_mapsize(env, MAP), 0);
    ASSERT_EQ(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    ASSERT_EQ(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    size_t n = 0, cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    ASSERT(buf != NULL);
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        MDB_dbi dbi;
        MDB_cursor *cur;
        ASSERT_EQ(mdb_dbi_open(txn, tables[i], 0, &dbi), 0);
        ASSERT_EQ(mdb_cursor_open(txn, dbi, &cur), 0);
        MDB_val k, v;
        MDB_cursor_op op = MDB_FIRST;
        while (mdb_cursor_get(cur, &k, &v, op) == 0) {
            op = MDB_NEXT;
            if (i == 0 && k.mv_size == 7 && memcmp(k.mv_data, "version", 7) == 0)
                continue;
            if (i == 0 && k.mv_size == 6 && memcmp(k.mv_data, "digest", 6) == 0) {
                ASSERT(sealed);
                continue;
            }
            if (sealed) {
                size_t n0;
                /* the table's number in store.h's order: meta 0 ... deadletters 5 */
                ASSERT_EQ(fp_store_value_open((unsigned)i, k.mv_data, k.mv_size, v.mv_data,
                                              v.mv_size, &n0),
                          0);
                v.mv_size = n0;
            }
            ASSERT(n + 8 + k.mv_size + v.mv_size <= cap);
            uint32_t kl = (uint32_t)k.mv_size, vl = (uint32_t)v.mv_size;
            memcpy(buf + n, &kl, 4);
            memcpy(buf + n + 4, &vl, 4);
            memcpy(buf + n + 8, k.mv_data, k.mv_size);
            memcpy(buf + n + 8 + k.mv_size, v.mv_data, v.mv_size);
            n += 8 + k.mv_size + v.mv_size;
        }
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    *len = n;
    return buf;
}

/* ---- what the file holds ---- */

typedef struct {
    int n;
    uint64_t gseq[16], round[16];
    char topic[16][64];
    fp_checkpoint_t ck[16];
    char strs[16][6][32]; /* plant, line, order, operation, instance, material */
} events_t;

static int s_event(void *ctx, uint64_t gseq, uint64_t round, const char *topic, size_t tlen,
                   const void *ev, size_t evlen)
{
    events_t *e = ctx;
    ASSERT(e->n < 16 && tlen < 64 && evlen <= 4096);
    int i = e->n++;
    e->gseq[i] = gseq;
    e->round[i] = round;
    memcpy(e->topic[i], topic, tlen);
    e->topic[i][tlen] = '\0';
    /* The value in the map is not aligned: decode from an aligned copy. */
    static _Alignas(8) uint8_t buf[4096];
    memcpy(buf, ev, evlen);
    fp_checkpoint_t ck;
    int rc = fp_codec_checkpoint_decode(buf, evlen, &ck);
    if (rc != 0)
        fprintf(stderr, "event %llu: %s\n", (unsigned long long)gseq, fp_codec_strerror(rc));
    ASSERT_EQ(rc, 0);
    const char *s[6] = {ck.plant, ck.line, ck.order, ck.operation, ck.instance, ck.material};
    for (int j = 0; j < 6; j++) {
        ASSERT(strlen(s[j]) < 32);
        strcpy(e->strs[i][j], s[j]);
    }
    ck.plant = ck.line = ck.order = ck.operation = ck.instance = ck.material = NULL;
    ck.event_id = ck.lot = ck.unit = ck.reason = NULL; /* point into buf */
    e->ck[i] = ck;
    char json[2048];
    ASSERT(fp_codec_checkpoint_to_json(buf, evlen, json, sizeof json) > 0);
    if (getenv("FP_TEST_VERBOSE"))
        fprintf(stderr, "  event %llu round %llu %s %s\n", (unsigned long long)gseq,
                (unsigned long long)round, e->topic[i], json);
    return 0;
}

typedef struct {
    int n;
    char topic[16][64];
    uint64_t seq[16];
} feeds_t;

static int s_feed(void *ctx, const char *topic, size_t tlen, uint64_t last_seq)
{
    feeds_t *f = ctx;
    ASSERT(f->n < 16 && tlen < 64);
    memcpy(f->topic[f->n], topic, tlen);
    f->topic[f->n][tlen] = '\0';
    f->seq[f->n++] = last_seq;
    return 0;
}

typedef struct {
    int n;
    uint64_t id[16];
} sources_t;

static int s_source(void *ctx, uint64_t id, const void *state, size_t slen)
{
    sources_t *s = ctx;
    ASSERT(s->n < 16);
    ASSERT(slen > 0);
    s->id[s->n++] = id;
    return 0;
}

typedef struct {
    int n;
    size_t klen[64], slen[64];
    uint8_t key[64][64];
} keys_t;

static int s_key(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    keys_t *k = ctx;
    ASSERT(k->n < 64);
    ASSERT(klen <= 64);
    memcpy(k->key[k->n], key, klen);
    k->klen[k->n] = klen;
    k->slen[k->n++] = slen;
    if (getenv("FP_TEST_VERBOSE")) {
        fprintf(stderr, "  key %zu bytes, state %zu bytes: ", klen, slen);
        for (size_t i = 0; i < klen; i++) {
            uint8_t c = ((const uint8_t *)key)[i];
            fprintf(stderr, c >= 0x20 && c < 0x7f ? "%c" : "\\x%02x", c);
        }
        fprintf(stderr, "\n");
    }
    return 0;
}

typedef struct {
    int n;
    uint64_t seq[4];
    char reason[4][64];
    char json[4][512];
    size_t plen[4];
} dead_t;

static int s_dead(void *ctx, uint64_t dl_seq, int64_t wall_ns, const char *reason,
                  const char *json, size_t jlen, const void *payload, size_t plen)
{
    dead_t *d = ctx;
    ASSERT(d->n < 4 && jlen < 512);
    d->seq[d->n] = dl_seq;
    snprintf(d->reason[d->n], 64, "%s", reason);
    memcpy(d->json[d->n], json, jlen);
    d->json[d->n][jlen] = '\0';
    d->plen[d->n] = plen;
    if (getenv("FP_TEST_VERBOSE"))
        fprintf(stderr, "  dead letter %llu %s %s (%zu payload bytes)\n",
                (unsigned long long)dl_seq, reason, d->json[d->n], plen);
    d->n++;
    return 0;
}

static int s_count_pair(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    (*(int *)ctx)++;
    return 0;
}

static int s_reader(void *ctx, const char *name, uint64_t pos, uint32_t flags, int64_t ns)
{
    (*(int *)ctx)++;
    return 0;
}

static int s_find_feed(const feeds_t *f, const char *topic)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->topic[i], topic) == 0)
            return i;
    return -1;
}

/* Checks that st holds exactly the README's contents (v4: the
   state-v4 file, the same input under instance v4test, with rounds of its
   own and one reader, its jsonl sink "files"). */
static void s_check_contents_of(fp_store_t *st, bool v4)
{
    uint64_t round, gseq;
    ASSERT_EQ(fp_store_last_round(st, &round, &gseq), 0);
    if (getenv("FP_TEST_VERBOSE"))
        fprintf(stderr, "  last round %llu global_seq %llu\n", (unsigned long long)round,
                (unsigned long long)gseq);
    ASSERT_EQ(gseq, 4);

    events_t e = {0};
    ASSERT_EQ(fp_outbox_read(st, 0, 100, s_event, &e), 4);
    uint64_t oldest;
    ASSERT_EQ(fp_outbox_oldest(st, &oldest), 0);
    ASSERT_EQ(oldest, 1);
    /* global_seq 1..4 in order, each event's own global_seq and a topic
       <kind>/<plant>/<line> matching its body; two rounds (L09's, then the
       drain's flush of L10) */
    const char *want_topic[4] = {"completion/1000/L09", "consumption/1000/L09",
                                 "completion/1000/L10", "scrap/1000/L10"};
    const int want_kind[4] = {FP_CK_COMPLETION, FP_CK_CONSUMPTION, FP_CK_COMPLETION,
                              FP_CK_SCRAP};
    const uint64_t want_round[4] = {20, 20, 72, 72};
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(e.gseq[i], i + 1);
        ASSERT_EQ(e.ck[i].global_seq, i + 1);
        ASSERT_STREQ(e.topic[i], want_topic[i]);
        ASSERT_EQ(e.ck[i].kind, want_kind[i]);
        ASSERT_EQ(e.ck[i].stream_seq, 1);
        ASSERT_EQ(e.ck[i].checkpoint_no, 1);
        if (!v4)
            ASSERT_EQ(e.round[i], want_round[i]);
        ASSERT_STREQ(e.strs[i][0], "1000");
        ASSERT_STREQ(e.strs[i][1], i < 2 ? "L09" : "L10");
        ASSERT_STREQ(e.strs[i][2], i < 2 ? "100200300" : "100200301");
        ASSERT_STREQ(e.strs[i][3], i < 2 ? "0010" : "0020");
        ASSERT_STREQ(e.strs[i][4], v4 ? INSTANCE4 : INSTANCE);
        ASSERT_EQ(e.ck[i].nlineage, 1);
        ASSERT_EQ(e.ck[i].lineage[0].source_id, i < 2 ? 21 : 22);
    }
    ASSERT(v4 || round >= 72);
    /* completion/1000/L09: the final one, 40 parts, source 21 seqs 1..4 */
    ASSERT_EQ(e.ck[0].final, 1);
    ASSERT_EQ(e.ck[0].yield, 40);
    ASSERT_EQ(e.ck[0].scrap, 0);
    ASSERT_EQ(e.ck[0].lineage[0].first_seq, 1);
    ASSERT_EQ(e.ck[0].lineage[0].last_seq, 4);
    /* consumption/1000/L09: 12.5 KG of RM-1 */
    ASSERT_STREQ(e.strs[1][5], "RM-1");
    ASSERT_EQ(e.ck[1].quantity, 12500);
    /* completion/1000/L10: the drain's partial (not final), 7 parts, 2 scrap */
    ASSERT_EQ(e.ck[2].final, 0);
    ASSERT_EQ(e.ck[2].yield, 7);
    ASSERT_EQ(e.ck[2].scrap, 2);
    /* scrap/1000/L10: 2 parts */
    ASSERT_EQ(e.ck[3].parts, 2);

    feeds_t f = {0};
    ASSERT_EQ(fp_store_each_feed(st, s_feed, &f), 0);
    ASSERT_EQ(f.n, 4);
    for (int i = 0; i < 4; i++) {
        int j = s_find_feed(&f, want_topic[i]);
        ASSERT(j >= 0);
        ASSERT_EQ(f.seq[j], 1);
    }

    sources_t s = {0};
    ASSERT_EQ(fp_store_each_source(st, s_source, &s), 0);
    ASSERT_EQ(s.n, 3);
    ASSERT_EQ(s.id[0], 21);
    ASSERT_EQ(s.id[1], 22);
    ASSERT_EQ(s.id[2], 23);

    /* The aggregation keys (agg.h: u8 version 1, u8 kind, then the key
       strings, each with a u8 length), in key order, each with its state. */
    keys_t k = {0};
    ASSERT_EQ(fp_store_each_key(st, s_key, &k), 0);
    static const struct {
        const char *bytes;
        size_t len;
    } want_keys[] = {
#define K(s) {s, sizeof s - 1}
        K("\x01\x01\x04" "1000\x09" "100200300\x04" "0010\x04" "RM-1\x05" "LOT-7\x02" "KG"),
        K("\x01\x02\x04" "1000\x09" "100200300\x04" "0010"),
        K("\x01\x02\x04" "1000\x09" "100200301\x04" "0020"),
        K("\x01\x03\x04" "1000\x09" "100200301\x04" "0020\x08" "SCR-SURF"),
#undef K
    };
    /* today's aggregation keys have a layout of their own, 7 of them in the
       v4 file: there, their count and states only */
    ASSERT_EQ(k.n, v4 ? 7 : 4);
    for (int i = 0; v4 && i < k.n; i++)
        ASSERT(k.slen[i] > 0);
    for (int i = 0; !v4 && i < 4; i++) {
        int found = 0;
        for (int j = 0; j < k.n; j++)
            found += k.klen[j] == want_keys[i].len &&
                     memcmp(k.key[j], want_keys[i].bytes, k.klen[j]) == 0 && k.slen[j] > 0;
        ASSERT_EQ(found, 1);
    }

    dead_t d = {0};
    ASSERT_EQ(fp_store_each_deadletter(st, 0, s_dead, &d), 0);
    ASSERT_EQ(d.n, 1);
    ASSERT_EQ(d.seq[0], 1);
    ASSERT_STREQ(d.reason[0], "missing_field");
    ASSERT(d.plen[0] > 0); /* the record's raw bytes */
    ASSERT(strstr(d.json[0], "\"source_id\":23") != NULL ||
           strstr(d.json[0], "\"source_id\": 23") != NULL);

    int nreaders = 0;
    ASSERT_EQ(fp_outbox_each_reader(st, s_reader, &nreaders), 0);
    ASSERT_EQ(nreaders, v4 ? 1 : 0);
    if (v4) {
        uint64_t pos;
        ASSERT_EQ(fp_outbox_reader(st, "files", &pos, NULL), 0);
        ASSERT(pos <= 4); /* the file holds it as the drain left it */
    }
}

static void s_check_contents(fp_store_t *st)
{
    s_check_contents_of(st, false);
}

TEST(test_upgrade_v1)
{
    const char *dir = s_unpack();
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    ASSERT_EQ(s_raw_version(dir), 1);
    size_t before_len, after_len;
    uint8_t *before = s_raw_records(dir, &before_len, false);
    ASSERT(before_len > 1000);

    /* A tool does not upgrade: refused with the operator's next step, and
       the file is still version 1 after it. */
    char err[512];
    fp_store_t *st = fp_store_open_tool(dir, MAP, INSTANCE, err, sizeof err);
    ASSERT(st == NULL);
    if (!strstr(err, "state format version 1: start floorpost once to upgrade it"))
        fprintf(stderr, "got: %s\n", err);
    ASSERT(strstr(err, "state format version 1: start floorpost once to upgrade it") != NULL);
    ASSERT_EQ(s_raw_version(dir), 1);

    /* Another instance's name is still refused, and does not upgrade. */
    st = fp_store_open(dir, MAP, "other", err, sizeof err);
    ASSERT(st == NULL);
    ASSERT(strstr(err, "belongs to instance v1test") != NULL);
    ASSERT_EQ(s_raw_version(dir), 1);

    /* The first open upgrades, in place. */
    st = fp_store_open(dir, MAP, INSTANCE, err, sizeof err);
    if (!st)
        fprintf(stderr, "open failed: %s\n", err);
    ASSERT(st != NULL);
    ASSERT_EQ(fp_store_upgraded_from(st), 1);
    s_check_contents(st);
    fp_store_close(&st);
    ASSERT_EQ(s_raw_version(dir), 5);
    uint8_t *after = s_raw_records(dir, &after_len, true);
    ASSERT_EQ(after_len, before_len);
    ASSERT(memcmp(after, before, before_len) == 0);
    free(before);
    free(after);

    /* The second open is a plain version-4 open, and so is a tool's. */
    st = fp_store_open(dir, MAP, INSTANCE, err, sizeof err);
    ASSERT(st != NULL);
    ASSERT_EQ(fp_store_upgraded_from(st), 0);
    s_check_contents(st);

    /* The upgraded store works: a round with a reader commits; the store
       survives the reopen with it. */
    fp_store_txn_t *t;
    ASSERT_EQ(fp_store_begin(st, &t), 0);
    ASSERT_EQ(fp_outbox_put_reader(t, "erp", 2, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_store_commit(&t), 0);
    fp_store_close(&st);
    st = fp_store_open_tool(dir, MAP, INSTANCE, err, sizeof err);
    if (!st)
        fprintf(stderr, "tool open failed: %s\n", err);
    ASSERT(st != NULL);
    ASSERT_EQ(fp_store_upgraded_from(st), 0);
    uint64_t pos;
    ASSERT_EQ(fp_outbox_reader(st, "erp", &pos, NULL), 0);
    ASSERT_EQ(pos, 2);
    fp_store_resubmit_t r = {.orig = {23, 1, 2}};
    ASSERT_EQ(fp_store_get_resubmit(st, &r), FP_STORE_NOTFOUND);
    fp_store_close(&st);
    s_rmdir(dir);
}

/* Makes dir's version-4 file a version-2 one: drops the counters and
   resubmits tables, writes version 2. */
static void s_make_v2(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
    ASSERT_EQ(mdb_env_set_mapsize(env, MAP), 0);
    ASSERT_EQ(mdb_env_open(env, dir, 0, 0640), 0);
    ASSERT_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "counters", 0, &dbi), 0);
    ASSERT_EQ(mdb_drop(txn, dbi, 1), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "resubmits", 0, &dbi), 0);
    ASSERT_EQ(mdb_drop(txn, dbi, 1), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    uint8_t v2[4] = {0, 0, 0, 2};
    MDB_val k = {7, "version"}, v = {4, v2};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

TEST(test_upgrade_v2)
{
    const char *dir = s_unpack_gz(V4_GZ);
    char err[512];
    fp_store_t *st;
    fp_store_txn_t *t;
    s_make_v2(dir);
    ASSERT_EQ(s_raw_version(dir), 2);
    size_t before_len, after_len;
    uint8_t *before = s_raw_records(dir, &before_len, false);
    st = fp_store_open_tool(dir, MAP, INSTANCE4, err, sizeof err);
    ASSERT(st == NULL);
    ASSERT(strstr(err, "state format version 2: start floorpost once to upgrade it") != NULL);
    st = fp_store_open(dir, MAP, INSTANCE4, err, sizeof err);
    ASSERT(st != NULL);
    ASSERT_EQ(fp_store_upgraded_from(st), 2);
    s_check_contents_of(st, true);
    int n = 0;
    ASSERT_EQ(fp_store_each_counter(st, s_count_pair, &n), 0);
    ASSERT_EQ(n, 0); /* the table is new and empty */
    ASSERT_EQ(fp_store_begin(st, &t), 0);
    ASSERT_EQ(fp_store_put_counter(t, "c2", 2, "x", 1), 0);
    ASSERT_EQ(fp_store_commit(&t), 0);
    ASSERT_EQ(fp_store_each_counter(st, s_count_pair, &n), 0);
    ASSERT_EQ(n, 1);
    fp_store_close(&st);
    ASSERT_EQ(s_raw_version(dir), 5);
    uint8_t *after = s_raw_records(dir, &after_len, true);
    ASSERT_EQ(after_len, before_len); /* the six version-1 tables, byte for byte */
    ASSERT(memcmp(after, before, before_len) == 0);
    free(before);
    free(after);
    s_rmdir(dir);
}

/* Turns a version-4 file into what version 3 was: no resubmits table,
   "version" 3 (raw LMDB, the store closed). */
static void s_make_v3(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
    ASSERT_EQ(mdb_env_set_mapsize(env, MAP), 0);
    ASSERT_EQ(mdb_env_open(env, dir, 0, 0640), 0);
    ASSERT_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "resubmits", 0, &dbi), 0);
    ASSERT_EQ(mdb_drop(txn, dbi, 1), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    uint8_t v3[4] = {0, 0, 0, 3};
    MDB_val k = {7, "version"}, v = {4, v3};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

TEST(test_upgrade_v3)
{
    const char *dir = s_unpack_gz(V4_GZ);
    char err[512];
    fp_store_t *st;
    s_make_v3(dir);
    ASSERT_EQ(s_raw_version(dir), 3);
    size_t before_len, after_len;
    uint8_t *before = s_raw_records(dir, &before_len, false);
    st = fp_store_open_tool(dir, MAP, INSTANCE4, err, sizeof err);
    ASSERT(st == NULL);
    ASSERT(strstr(err, "state format version 3: start floorpost once to upgrade it") != NULL);
    ASSERT_EQ(s_raw_version(dir), 3);
    st = fp_store_open(dir, MAP, INSTANCE4, err, sizeof err);
    ASSERT(st != NULL);
    ASSERT_EQ(fp_store_upgraded_from(st), 3);
    s_check_contents_of(st, true);
    fp_store_resubmit_t r = {.orig = {23, 1, 2}, .source_id = 900001, .epoch = 7, .seq = 1};
    ASSERT_EQ(fp_store_put_resubmits(st, &r, 1), 0);
    fp_store_close(&st);
    ASSERT_EQ(s_raw_version(dir), 5);
    uint8_t *after = s_raw_records(dir, &after_len, true);
    ASSERT_EQ(after_len, before_len);
    ASSERT(memcmp(after, before, before_len) == 0);
    free(before);
    free(after);
    st = fp_store_open_tool(dir, MAP, INSTANCE4, err, sizeof err);
    ASSERT(st != NULL);
    r.epoch = 0;
    ASSERT_EQ(fp_store_get_resubmit(st, &r), 0);
    ASSERT_EQ(r.epoch, 7);
    fp_store_close(&st);
    s_rmdir(dir);
}

/* The format-4 file of today's floorpost (tests/data/state-v4): the first
   open gives every value its checksum and writes the digest, keeping every
   record byte for byte; a tool refuses it before; the result verifies. */
TEST(test_upgrade_v4)
{
    const char *dir = s_unpack_gz(V4_GZ);
    char err[512];
    ASSERT_EQ(s_raw_version(dir), 4);
    size_t before_len, after_len;
    uint8_t *before = s_raw_records(dir, &before_len, false);
    fp_store_t *st = fp_store_open_tool(dir, MAP, INSTANCE4, err, sizeof err);
    ASSERT(st == NULL);
    ASSERT(strstr(err, "state format version 4: start floorpost once to upgrade it") != NULL);
    st = fp_store_open(dir, MAP, INSTANCE4, err, sizeof err);
    if (!st)
        fprintf(stderr, "open failed: %s\n", err);
    ASSERT(st != NULL);
    ASSERT_EQ(fp_store_upgraded_from(st), 4);
    s_check_contents_of(st, true);
    fp_store_txn_t *t;
    ASSERT_EQ(fp_store_begin(st, &t), 0);
    ASSERT_EQ(fp_store_put_counter(t, "c2", 2, "x", 1), 0);
    ASSERT_EQ(fp_store_commit(&t), 0);
    fp_store_close(&st);
    ASSERT_EQ(s_raw_version(dir), 5);
    uint8_t *after = s_raw_records(dir, &after_len, true);
    ASSERT_EQ(after_len, before_len);
    ASSERT(memcmp(after, before, before_len) == 0);
    free(before);
    free(after);
    st = fp_store_open_tool(dir, MAP, INSTANCE4, err, sizeof err);
    ASSERT(st != NULL);
    s_check_contents_of(st, true);
    fp_store_close(&st);
    s_rmdir(dir);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_upgrade_v1);
    RUN(test_upgrade_v2);
    RUN(test_upgrade_v3);
    RUN(test_upgrade_v4);
    return test_done();
}
