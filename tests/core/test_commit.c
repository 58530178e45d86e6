/*  test_commit.c - the commit core without a thread: filing by sender,
    completion when every MARK is in, stream_seq/global_seq stamping, the
    key order in LMDB, one transaction, roll-back after a full map, the
    durability-off path and bundles.

    Senders in every test: 0 = ingest, 1 = a worker, 2 = a shard.
*/
#include "commit.h"
#include "test.h"

#include <stdbool.h>
#include <unistd.h>

#include "codec.h"
#include "outbox.h"
#include "outbox.h"
#include "store.h"

#define NSENDERS 3

static char s_dir[64];

static fp_store_t *s_store(uint64_t map)
{
    strcpy(s_dir, "/tmp/fp-test-commit-XXXXXX");
    ASSERT(mkdtemp(s_dir) != NULL);
    char err[512];
    fp_store_t *st = fp_store_open(s_dir, map, "plant-a", err, sizeof err);
    if (!st)
        fprintf(stderr, "open: %s\n", err);
    ASSERT(st != NULL);
    return st;
}

static void s_rmdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    ASSERT_EQ(system(cmd), 0);
}

/* ---- what the publish callback saw ---- */

#define PUB_MAX 4096
typedef struct {
    int n, dead;
    int dropped[3]; /* by FP_COMMIT_DL_ROUND, FP_COMMIT_DL_STORE */
    char topic[PUB_MAX][48];
    uint64_t stream_seq[PUB_MAX], global_seq[PUB_MAX];
    int64_t quantity[PUB_MAX];
} pub_t;

static void s_publish(void *ctx, fp_commit_item_t *it)
{
    pub_t *p = ctx;
    if (it->type == FP_EMIT_DEAD) {
        p->dead++;
        return;
    }
    ASSERT_EQ(it->type, FP_EMIT_EVENT);
    ASSERT(p->n < PUB_MAX);
    size_t tl = zmq_msg_size(&it->part[0]);
    ASSERT(tl < sizeof p->topic[0]);
    memcpy(p->topic[p->n], zmq_msg_data(&it->part[0]), tl);
    p->topic[p->n][tl] = 0;
    fp_checkpoint_t ck;
    ASSERT_EQ(fp_codec_checkpoint_decode(zmq_msg_data(&it->part[1]), zmq_msg_size(&it->part[1]),
                                         &ck),
              FP_CODEC_OK);
    p->stream_seq[p->n] = ck.stream_seq;
    p->global_seq[p->n] = ck.global_seq;
    p->quantity[p->n] = ck.quantity;
    p->n++;
}

static void s_dropped(void *ctx, const fp_commit_item_t *it, int why)
{
    pub_t *p = ctx;
    ASSERT_EQ(it->type, FP_EMIT_DEAD);
    ASSERT(it->nparts >= 3); /* closed after the call, not before */
    ASSERT(why == FP_COMMIT_DL_ROUND || why == FP_COMMIT_DL_STORE);
    p->dropped[why]++;
}

/* ---- building what the stages send ---- */

static fp_codec_t *s_codec;

static void s_part(zmq_msg_t *m, const void *data, size_t len)
{
    ASSERT_EQ(zmq_msg_init_size(m, len), 0);
    if (len)
        memcpy(zmq_msg_data(m), data, len);
}

/* An event on topic with quantity q (to tell events apart). */
static void s_event(fp_commit_t *c, uint32_t from, const char *topic, int64_t q)
{
    fp_checkpoint_t ck = {.kind = FP_CK_CONSUMPTION, .event_id = "plant-a-x", .instance = "plant-a",
                          .plant = "1000", .line = "L01", .order = "O1", .operation = "0010",
                          .material = "M", .lot = "L", .unit = "KG", .quantity = q,
                          .record_count = 1};
    const void *buf;
    size_t len;
    ASSERT_EQ(fp_codec_checkpoint_encode(s_codec, &ck, &buf, &len), FP_CODEC_OK);
    fp_commit_item_t it = {.type = FP_EMIT_EVENT, .nparts = 2};
    s_part(&it.part[0], topic, strlen(topic));
    s_part(&it.part[1], buf, len);
    fp_emit_hdr_t h = {.type = FP_EMIT_EVENT, .from = from};
    fp_commit_take(c, &h, &it);
    ASSERT_EQ(it.nparts, 0); /* taken */
}

/* A changed aggregation key; state NULL = released. */
static void s_key(fp_commit_t *c, uint32_t from, const char *key, const char *state)
{
    fp_commit_item_t it = {.type = FP_EMIT_KEY, .nparts = 2};
    s_part(&it.part[0], key, strlen(key));
    s_part(&it.part[1], state, state ? strlen(state) : 0);
    fp_emit_hdr_t h = {.type = FP_EMIT_KEY, .from = from};
    fp_commit_take(c, &h, &it);
}

static void s_dead(fp_commit_t *c, uint32_t from)
{
    fp_commit_item_t it = {.type = FP_EMIT_DEAD, .nparts = 3};
    const char *t = "deadletter/malformed", *j = "{\"reason\":\"malformed\"}";
    s_part(&it.part[0], t, strlen(t));
    s_part(&it.part[1], j, strlen(j));
    s_part(&it.part[2], "xyz", 3);
    fp_emit_hdr_t h = {.type = FP_EMIT_DEAD, .from = from};
    fp_commit_take(c, &h, &it);
}

/* An ERP refusal as a durable reader hands it over (reader.h). */
static void s_reader_item(fp_commit_item_t *it)
{
    *it = (fp_commit_item_t){.nparts = 4};
    const char *t = "deadletter/erp_rejected", *j = "{\"reason\":\"erp_rejected\"}";
    s_part(&it->part[0], t, strlen(t));
    s_part(&it->part[1], j, strlen(j));
    s_part(&it->part[2], "evt", 3);
    s_part(&it->part[3], "x=1", 3);
}

static void s_mark(fp_commit_t *c, uint32_t from, uint64_t round, uint32_t flags)
{
    fp_emit_hdr_t h = {.type = FP_EMIT_MARK, .from = from, .flags = flags, .round = round,
                       .wall_ns = (int64_t)round};
    fp_commit_item_t it = {.type = FP_EMIT_MARK};
    fp_commit_take(c, &h, &it);
}

static void s_marks(fp_commit_t *c, uint64_t round)
{
    for (uint32_t s = 0; s < NSENDERS; s++)
        s_mark(c, s, round, 0);
}

static fp_commit_t *s_core(fp_store_t *st, uint64_t start_round, pub_t *p)
{
    char err[256];
    fp_commit_t *c = fp_commit_new(NSENDERS, start_round, st, s_publish, p, err, sizeof err);
    ASSERT(c != NULL);
    return c;
}

/* ---- tests ---- */

TEST(test_filing_by_sender_and_completion)
{
    fp_store_t *st = s_store(4u << 20);
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(st, 1, p);
    ASSERT(!fp_commit_ready(c));
    s_event(c, 2, "consumption/1000/L01", 1); /* shard: round 1 */
    s_mark(c, 2, 1, 0);
    s_event(c, 2, "consumption/1000/L01", 2); /* after its MARK of 1: round 2 */
    s_mark(c, 2, 2, 0);
    s_mark(c, 1, 1, 0);
    s_mark(c, 1, 2, 0); /* the worker runs ahead */
    ASSERT(!fp_commit_ready(c)); /* ingest's MARK of round 1 is missing */
    ASSERT_EQ(fp_commit_pending(c), 2);
    s_dead(c, 0); /* ingest: round 1 */
    s_mark(c, 0, 1, 0);
    ASSERT(fp_commit_ready(c));
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_round_t r;
    fp_commit_publish(c, &r);
    ASSERT_EQ(r.round, 1);
    ASSERT_EQ(r.events, 1);
    ASSERT_EQ(p->n, 1);
    ASSERT_EQ(p->quantity[0], 1);
    ASSERT_EQ(p->dead, 1);
    /* Round 2 has every MARK but ingest's. */
    ASSERT(!fp_commit_ready(c));
    s_mark(c, 0, 2, FP_BARRIER_DRAIN);
    ASSERT(fp_commit_ready(c));
    uint64_t newest;
    uint32_t flags;
    bool complete;
    ASSERT(fp_commit_newest(c, &newest, &flags, &complete));
    ASSERT_EQ(newest, 2);
    ASSERT(complete && (flags & FP_BARRIER_DRAIN));
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, &r);
    ASSERT_EQ(r.round, 2);
    ASSERT(r.flags & FP_BARRIER_DRAIN);
    ASSERT_EQ(p->n, 2);
    ASSERT_EQ(p->quantity[1], 2);
    ASSERT_EQ(fp_commit_pending(c), 0);
    ASSERT(!fp_commit_newest(c, NULL, NULL, NULL));
    /* What was committed: round 2, global_seq 2, one dead letter. */
    uint64_t lr, lg;
    ASSERT_EQ(fp_store_last_round(st, &lr, &lg), 0);
    ASSERT_EQ(lr, 2);
    ASSERT_EQ(lg, 2);
    fp_commit_destroy(&c);
    fp_commit_destroy(&c); /* safe twice */
    fp_store_close(&st);
    s_rmdir();
    free(p);
}

static int s_count_event(void *ctx, uint64_t g, uint64_t round, const char *t, size_t tl,
                         const void *ev, size_t evlen)
{
    uint64_t *rounds = ctx;
    rounds[g] = round;
    return 0;
}

TEST(test_stamping_and_restore)
{
    fp_store_t *st = s_store(4u << 20);
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(st, 1, p);
    const char *A = "consumption/1000/L01", *B = "scrap/1000/L02";
    s_event(c, 2, A, 10);
    s_event(c, 2, B, 11);
    s_event(c, 2, A, 12);
    s_marks(c, 1);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    s_event(c, 2, B, 13);
    s_marks(c, 2);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    ASSERT_EQ(p->n, 4);
    uint64_t want_stream[] = {1, 1, 2, 2}, want_global[] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(p->stream_seq[i], want_stream[i]);
        ASSERT_EQ(p->global_seq[i], want_global[i]);
        ASSERT_EQ(p->quantity[i], 10 + i);
    }
    ASSERT_EQ(fp_commit_feed_seq(c, A, strlen(A)), 2);
    ASSERT_EQ(fp_commit_feed_seq(c, B, strlen(B)), 2);
    ASSERT_EQ(fp_commit_global_seq(c), 4);
    uint64_t rounds[8] = {0};
    ASSERT_EQ(fp_outbox_read(st, 1, 8, s_count_event, rounds), 4);
    ASSERT_EQ(rounds[1], 1);
    ASSERT_EQ(rounds[3], 1);
    ASSERT_EQ(rounds[4], 2);
    fp_commit_destroy(&c);

    /* A new core (a restart) goes on from the committed feeds. */
    memset(p, 0, sizeof *p);
    c = s_core(st, 3, p);
    ASSERT_EQ(fp_commit_feeds(c), 2);
    ASSERT_EQ(fp_commit_global_seq(c), 4);
    s_event(c, 2, A, 20);
    s_marks(c, 3);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    ASSERT_EQ(p->stream_seq[0], 3);
    ASSERT_EQ(p->global_seq[0], 5);
    fp_commit_destroy(&c);
    fp_store_close(&st);
    s_rmdir();
    free(p);
}

#define KEYS_MAX 64
typedef struct {
    int n;
    char key[KEYS_MAX][128];
    char state[KEYS_MAX][16];
} keys_t;

static int s_collect_key(void *ctx, const void *key, size_t klen, const void *state, size_t slen)
{
    keys_t *k = ctx;
    ASSERT(k->n < KEYS_MAX && klen < sizeof k->key[0] && slen < sizeof k->state[0]);
    memcpy(k->key[k->n], key, klen);
    k->key[k->n][klen] = 0;
    memcpy(k->state[k->n], state, slen);
    k->state[k->n][slen] = 0;
    k->n++;
    return 0;
}

TEST(test_key_order_and_last_filing_wins)
{
    fp_store_t *st = s_store(4u << 20);
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(st, 1, p);
    /* A long common prefix (the word compare), keys that differ only past
       it, a prefix of another key (shorter first), and one key released
       and created again in the same round. */
    const char *pre = "consumption\x1f" "1000\x1f" "0001000123\x1f" "0010\x1f";
    char k[8][128];
    const char *tails[] = {"RM-B\x1fLOT-2", "RM-A\x1fLOT-9", "RM-A", "RM-A\x1fLOT-10",
                           "RM-A\x1fLOT-1-and-a-long-lot-name-past-24-bytes",
                           "RM-A\x1fLOT-1-and-a-long-lot-name-past-24-bytez"};
    for (int i = 0; i < 6; i++)
        snprintf(k[i], sizeof k[i], "%s%s", pre, tails[i]);
    s_key(c, 2, k[0], "s0");
    s_key(c, 2, k[1], "s1");
    s_key(c, 2, k[2], "s2");
    s_key(c, 2, k[3], "s3");
    s_key(c, 2, k[5], "s5");
    s_key(c, 2, k[4], "s4");
    s_key(c, 2, k[1], NULL);   /* released ... */
    s_key(c, 2, k[1], "s1b");  /* ... and created again: ends created */
    s_key(c, 2, "short", "x"); /* no common prefix with the rest */
    s_marks(c, 1);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    keys_t *got = calloc(1, sizeof *got);
    ASSERT_EQ(fp_store_each_key(st, s_collect_key, got), 0);
    ASSERT_EQ(got->n, 7);
    /* LMDB's order: bytes, then the shorter first. */
    const int order[] = {2, 4, 5, 3, 1, 0};
    const char *state[] = {"s2", "s4", "s5", "s3", "s1b", "s0"};
    for (int i = 0; i < 6; i++) {
        ASSERT_STREQ(got->key[i], k[order[i]]);
        ASSERT_STREQ(got->state[i], state[i]);
    }
    ASSERT_STREQ(got->key[6], "short");
    /* A released key is deleted by the next round. */
    s_key(c, 2, k[0], NULL);
    s_marks(c, 2);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    memset(got, 0, sizeof *got);
    ASSERT_EQ(fp_store_each_key(st, s_collect_key, got), 0);
    ASSERT_EQ(got->n, 6);
    for (int i = 0; i < got->n; i++)
        ASSERT(strcmp(got->key[i], k[0]) != 0);
    fp_commit_destroy(&c);
    fp_store_close(&st);
    s_rmdir();
    free(got);
    free(p);
}

/* One round of 20 events of ~700 bytes and 10 keys of 300 bytes. */
static void s_big_round(fp_commit_t *c, uint64_t round)
{
    char topic[48], key[48], state[301];
    memset(state, 'k', 300);
    state[300] = 0;
    for (int i = 0; i < 20; i++) {
        snprintf(topic, sizeof topic, "consumption/1000/L%02d", i % 3);
        s_event(c, 2, topic, (int64_t)(round * 100 + (uint64_t)i));
    }
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "key-%llu-%d", (unsigned long long)round, i);
        s_key(c, 2, key, state);
    }
    s_marks(c, round);
}

TEST(test_rollback_after_a_full_map)
{
    fp_store_t *st = s_store(256u << 10);
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(st, 1, p);
    uint64_t round = 0;
    int rc = 0;
    while (round < 500) {
        s_big_round(c, round + 1);
        if ((rc = fp_commit_round(c)) != 0)
            break;
        fp_commit_publish(c, NULL);
        round++;
    }
    ASSERT_EQ(rc, FP_STORE_FULL);
    ASSERT(round >= 3);
    uint64_t g = fp_commit_global_seq(c);
    ASSERT_EQ(g, round * 20);
    const char *T0 = "consumption/1000/L00";
    uint64_t s0 = fp_commit_feed_seq(c, T0, strlen(T0));
    /* Nothing of the failed round is stored, every counter rolled back. */
    uint64_t lr, lg;
    ASSERT_EQ(fp_store_last_round(st, &lr, &lg), 0);
    ASSERT_EQ(lr, round);
    ASSERT_EQ(lg, g);
    ASSERT_EQ(fp_commit_pending(c), 1);
    ASSERT(fp_commit_ready(c));
    int published = p->n;
    /* Retried as is: still full, still nothing moved. */
    ASSERT_EQ(fp_commit_round(c), FP_STORE_FULL);
    ASSERT_EQ(fp_commit_global_seq(c), g);
    ASSERT_EQ(fp_commit_feed_seq(c, T0, strlen(T0)), s0);
    /* Room comes back (retention), and the same round commits with the
       seqs it would have had the first time: nothing skipped or doubled. */
    uint64_t deleted = 0;
    ASSERT_EQ(fp_outbox_trim(st, (int64_t)round, UINT32_MAX, &deleted), 0);
    ASSERT(deleted > 0);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_round_t r;
    fp_commit_publish(c, &r);
    ASSERT_EQ(r.round, round + 1);
    ASSERT_EQ(p->n, published + 20);
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(p->global_seq[published + i], g + 1 + (uint64_t)i);
    ASSERT_EQ(fp_commit_feed_seq(c, T0, strlen(T0)), s0 + 7); /* i % 3 == 0: 7 of 20 */
    ASSERT_EQ(fp_store_last_round(st, &lr, &lg), 0);
    ASSERT_EQ(lr, round + 1);
    ASSERT_EQ(lg, g + 20);
    fp_commit_destroy(&c);
    fp_store_close(&st);
    s_rmdir();
    free(p);
}

TEST(test_durability_off)
{
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(NULL, 7, p);
    s_event(c, 2, "completion/1000/L01", 1);
    /* Published at once, stamped, before any MARK. */
    ASSERT_EQ(p->n, 1);
    ASSERT_EQ(p->stream_seq[0], 1);
    ASSERT_EQ(p->global_seq[0], 1);
    s_dead(c, 1);
    ASSERT_EQ(p->dead, 1);
    s_key(c, 2, "k", "state"); /* dropped: nothing to commit */
    ASSERT(!fp_commit_ready(c));
    s_marks(c, 7);
    ASSERT(fp_commit_ready(c));
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_round_t r;
    fp_commit_publish(c, &r);
    ASSERT_EQ(r.round, 7);
    ASSERT_EQ(r.global_seq, 1);
    ASSERT_EQ(p->n, 1); /* not published twice */
    ASSERT_EQ(p->dead, 1);
    fp_commit_destroy(&c);
    free(p);
}

/* A shard's bundle: entries filed in order as if each came alone. */
TEST(test_bundle)
{
    fp_store_t *st = s_store(4u << 20);
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(st, 1, p);
    fp_checkpoint_t ck = {.kind = FP_CK_SCRAP, .event_id = "e", .instance = "plant-a",
                          .plant = "1000", .line = "L01", .order = "O1", .operation = "0010",
                          .reason = "R", .parts = 5, .record_count = 1};
    const void *ev;
    size_t evlen;
    ASSERT_EQ(fp_codec_checkpoint_encode(s_codec, &ck, &ev, &evlen), FP_CODEC_OK);
    uint8_t buf[4096];
    size_t n = 0;
    const char *topic = "scrap/1000/L01", *key = "bundled-key", *state = "st";
    uint32_t w[4];
    w[0] = FP_EMIT_EVENT, w[1] = 2, w[2] = (uint32_t)strlen(topic);
    memcpy(buf + n, w, 12), n += 12;
    memcpy(buf + n, topic, w[2]), n += w[2];
    w[0] = (uint32_t)evlen;
    memcpy(buf + n, w, 4), n += 4;
    memcpy(buf + n, ev, evlen), n += evlen;
    w[0] = FP_EMIT_KEY, w[1] = 2, w[2] = (uint32_t)strlen(key);
    memcpy(buf + n, w, 12), n += 12;
    memcpy(buf + n, key, w[2]), n += w[2];
    w[0] = (uint32_t)strlen(state);
    memcpy(buf + n, w, 4), n += 4;
    memcpy(buf + n, state, w[0]), n += w[0];
    fp_commit_item_t it = {.type = FP_EMIT_BUNDLE, .nparts = 1};
    s_part(&it.part[0], buf, n);
    fp_emit_hdr_t h = {.type = FP_EMIT_BUNDLE, .from = 2};
    fp_commit_take(c, &h, &it);
    s_marks(c, 1);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_round_t r;
    fp_commit_publish(c, &r);
    ASSERT_EQ(r.events, 1);
    ASSERT_EQ(p->n, 1);
    ASSERT_STREQ(p->topic[0], topic);
    ASSERT_EQ(p->global_seq[0], 1);
    keys_t *got = calloc(1, sizeof *got);
    ASSERT_EQ(fp_store_each_key(st, s_collect_key, got), 0);
    ASSERT_EQ(got->n, 1);
    ASSERT_STREQ(got->key[0], key);
    ASSERT_STREQ(got->state[0], state);
    fp_commit_destroy(&c);
    fp_store_close(&st);
    s_rmdir();
    free(got);
    free(p);
}

TEST(test_reader_positions_committed_with_the_round)
{
    fp_store_t *st = s_store(4u << 20);
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(st, 1, p);
    for (int i = 0; i < 5; i++)
        s_event(c, 2, "completion/1000/L01", i);
    s_marks(c, 1);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    /* Reported between rounds: stored only with the next commit. */
    ASSERT_EQ(fp_commit_reader_position(c, "erp", 2), 0);
    ASSERT_EQ(fp_commit_reader_position(c, "erp", 4), 0); /* replaces 2 */
    ASSERT_EQ(fp_commit_reader_position(c, "erp", 3), 0); /* stale: 4 stays */
    ASSERT_EQ(fp_commit_reader_position(c, "", 3), -EINVAL);
    ASSERT_EQ(fp_outbox_reader(st, "erp", NULL, NULL), FP_STORE_NOTFOUND);
    s_marks(c, 2);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    uint64_t pos = 0;
    uint32_t flags = 0;
    ASSERT_EQ(fp_outbox_reader(st, "erp", &pos, &flags), 0);
    ASSERT_EQ(pos, 4);
    ASSERT(flags & FP_OUTBOX_READER_ENABLED);
    /* Retention stops at it. */
    uint64_t deleted = 0;
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 1000, &deleted), 0);
    ASSERT_EQ(deleted, 4);
    /* A report beyond the last committed global_seq is refused without
       costing the round. */
    ASSERT_EQ(fp_commit_reader_position(c, "erp", 99), 0);
    s_event(c, 2, "completion/1000/L01", 9);
    s_marks(c, 3);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    ASSERT_EQ(fp_outbox_reader(st, "erp", &pos, NULL), 0);
    ASSERT_EQ(pos, 4);
    uint64_t lr, lg;
    ASSERT_EQ(fp_store_last_round(st, &lr, &lg), 0);
    ASSERT_EQ(lr, 3);
    /* Detached (far behind a bound of 1): a later report keeps it detached. */
    ASSERT_EQ(fp_outbox_detach_lagging(st, 1, NULL, NULL), 1);
    ASSERT_EQ(fp_commit_reader_position(c, "erp", 5), 0);
    s_marks(c, 4);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    ASSERT_EQ(fp_outbox_reader(st, "erp", &pos, &flags), 0);
    ASSERT_EQ(pos, 5);
    ASSERT(flags & FP_OUTBOX_READER_DETACHED);
    fp_commit_destroy(&c);
    fp_store_close(&st);
    s_rmdir();
    free(p);
}

static int s_count_dl(void *ctx, uint64_t dl_seq, int64_t wall_ns, const char *reason,
                      const char *json, size_t jlen, const void *payload, size_t plen)
{
    int *n = ctx;
    ASSERT_STREQ(reason, "erp_rejected");
    ASSERT(jlen > 0 && json[0] == '{');
    ASSERT(plen == 3 && memcmp(payload, "evt", 3) == 0);
    (*n)++;
    return 0;
}

/* A reader's dead letter (the ERP refused a posting) is committed with the
   next round together with the reader's aux cursor, both or neither. */
TEST(test_reader_dead_letters_committed_with_their_cursor)
{
    fp_store_t *st = s_store(4u << 20);
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(st, 1, p);
    s_event(c, 2, "completion/1000/L01", 1);
    fp_commit_item_t it;
    s_reader_item(&it);
    uint64_t aux[2] = {77, 5};
    ASSERT_EQ(fp_commit_reader_dead_letter(c, "erp", aux, FP_DL_erp_rejected, &it), 0);
    ASSERT_EQ(it.nparts, 0); /* taken */
    /* Bad name: refused and its frames closed. */
    fp_commit_item_t bad = {.nparts = 3};
    for (int i = 0; i < 3; i++)
        s_part(&bad.part[i], "x", 1);
    ASSERT_EQ(fp_commit_reader_dead_letter(c, "", aux, FP_DL_erp_rejected, &bad), -EINVAL);
    uint64_t got[2] = {1, 1};
    ASSERT_EQ(fp_outbox_reader_ex(st, "erp", NULL, NULL, got), FP_STORE_NOTFOUND);
    int ndl = 0;
    ASSERT_EQ(fp_store_each_deadletter(st, 0, s_count_dl, &ndl), 0);
    ASSERT_EQ(ndl, 0); /* nothing before the commit */
    s_marks(c, 1);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    ASSERT_EQ(p->dead, 1); /* published after the commit */
    ASSERT_EQ(fp_store_each_deadletter(st, 0, s_count_dl, &ndl), 0);
    ASSERT_EQ(ndl, 1);
    uint32_t flags = 9;
    ASSERT_EQ(fp_outbox_reader_ex(st, "erp", NULL, &flags, got), 0);
    ASSERT_EQ(got[0], 77);
    ASSERT_EQ(got[1], 5);
    ASSERT_EQ(flags, 0); /* known by its cursor only: holds no retention */
    /* A position report keeps the cursor; a later dead letter moves it. */
    ASSERT_EQ(fp_commit_reader_position(c, "erp", 1), 0);
    s_marks(c, 2);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    uint64_t pos = 0;
    ASSERT_EQ(fp_outbox_reader_ex(st, "erp", &pos, &flags, got), 0);
    ASSERT_EQ(pos, 1);
    ASSERT(flags & FP_OUTBOX_READER_ENABLED);
    ASSERT_EQ(got[0], 77);
    fp_commit_destroy(&c);
    fp_store_close(&st);
    s_rmdir();
    free(p);
}

static int s_count_any_dl(void *ctx, uint64_t dl_seq, int64_t wall_ns, const char *reason,
                          const char *json, size_t jlen, const void *payload, size_t plen)
{
    (*(int *)ctx)++;
    return 0;
}

/* A round keeps at most round_bytes of dead letters (JSON + payload: 25
   bytes each here), the store at most store_bytes + 1/8 counting what the
   rounds held have kept; the rest is dropped, reported, neither stored nor
   published. A reader's dead letter over the budget still moves its
   cursor. */
TEST(test_dead_letter_budgets)
{
    fp_store_t *st = s_store(4u << 20);
    pub_t *p = calloc(1, sizeof *p);
    fp_commit_t *c = s_core(st, 1, p);
    fp_commit_dl_limits_t lim = {.round_bytes = 100, .dropped = s_dropped};
    fp_commit_set_dl_limits(c, &lim);
    for (int i = 0; i < 5; i++)
        s_dead(c, 1); /* 4 fit the round */
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_ROUND], 1);
    s_dead(c, 2); /* the shard's share of the same round: spent too */
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_ROUND], 2);
    s_mark(c, 1, 1, 0);
    s_dead(c, 1); /* the worker is in round 2 now: a fresh budget */
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_ROUND], 2);
    s_mark(c, 0, 1, 0);
    s_mark(c, 2, 1, 0);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    ASSERT_EQ(p->dead, 4);
    int ndl = 0;
    ndl = 0;
    ASSERT_EQ(fp_store_each_deadletter(st, 0, s_count_any_dl, &ndl), 0);
    ASSERT_EQ(ndl, 4);

    /* The store: 80 bytes + 10 of headroom, counting round 2's 25 held. */
    lim = (fp_commit_dl_limits_t){.round_bytes = 1000, .store_bytes = 80, .dropped = s_dropped};
    fp_commit_set_dl_limits(c, &lim);
    fp_commit_dl_stored(c, 0);  /* as if the trim had emptied it */
    s_dead(c, 1);               /* 50 */
    s_dead(c, 1);               /* 75 */
    s_dead(c, 1);               /* 100 > 90: dropped */
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_STORE], 1);
    s_marks(c, 2);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    ASSERT_EQ(p->dead, 7);
    s_dead(c, 1); /* 75 committed + 25 > 90 */
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_STORE], 2);
    fp_commit_dl_stored(c, 40); /* the trim measured 40 */
    s_dead(c, 1);               /* 65 */
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_STORE], 2);

    /* A reader's dead letter over the budget: dropped, its cursor kept. */
    lim.round_bytes = 30;
    fp_commit_set_dl_limits(c, &lim);
    fp_commit_item_t it;
    s_reader_item(&it);
    uint64_t aux[2] = {9, 2};
    ASSERT_EQ(fp_commit_reader_dead_letter(c, "erp", aux, FP_DL_erp_rejected, &it), 0);
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_ROUND], 3);
    s_marks(c, 3);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    ASSERT_EQ(p->dead, 8);
    uint64_t got[2] = {0, 0};
    ASSERT_EQ(fp_outbox_reader_ex(st, "erp", NULL, NULL, got), 0);
    ASSERT_EQ(got[0], 9);
    ndl = 0;
    ASSERT_EQ(fp_store_each_deadletter(st, 0, s_count_any_dl, &ndl), 0);
    ASSERT_EQ(ndl, 8);
    fp_commit_destroy(&c);
    fp_store_close(&st);
    s_rmdir();

    /* Without a store: the round budget only, before publishing at once. */
    memset(p, 0, sizeof *p);
    c = s_core(NULL, 1, p);
    lim = (fp_commit_dl_limits_t){.round_bytes = 50, .store_bytes = 1, .dropped = s_dropped};
    fp_commit_set_dl_limits(c, &lim);
    for (int i = 0; i < 3; i++)
        s_dead(c, 1);
    ASSERT_EQ(p->dead, 2);
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_ROUND], 1);
    ASSERT_EQ(p->dropped[FP_COMMIT_DL_STORE], 0);
    s_marks(c, 1);
    ASSERT_EQ(fp_commit_round(c), 0);
    fp_commit_publish(c, NULL);
    s_dead(c, 1); /* round 2 */
    ASSERT_EQ(p->dead, 3);
    fp_commit_destroy(&c);
    free(p);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    s_codec = fp_codec_new();
    ASSERT(s_codec != NULL);
    RUN(test_filing_by_sender_and_completion);
    RUN(test_stamping_and_restore);
    RUN(test_key_order_and_last_filing_wins);
    RUN(test_rollback_after_a_full_map);
    RUN(test_reader_dead_letters_committed_with_their_cursor);
    RUN(test_durability_off);
    RUN(test_dead_letter_budgets);
    RUN(test_bundle);
    RUN(test_reader_positions_committed_with_the_round);
    fp_codec_destroy(&s_codec);
    return test_done();
}
