/*  test_outbox.c - the outbox module: events in the round's txn, reads,
    retention; durable reader positions (committed with the round, never
    backwards, never past the last commit), retention held by enabled
    readers, detaching at the lag bound, and the pure lag rule.

    Every test works in its own fresh directory under /tmp, on a real store.
*/
#include "outbox.h"
#include "store.h"
#include "test.h"

#include <errno.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#define MAP (4u << 20)

static char s_dir[64];

static const char *s_newdir(void)
{
    strcpy(s_dir, "/tmp/fp-test-outbox-XXXXXX");
    ASSERT(mkdtemp(s_dir) != NULL);
    return s_dir;
}

static void s_rmdir(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ASSERT_EQ(system(cmd), 0);
}

static fp_store_t *s_open(const char *dir)
{
    char err[512];
    fp_store_t *st = fp_store_open(dir, MAP, "plant-a", err, sizeof err);
    if (!st)
        fprintf(stderr, "open failed: %s\n", err);
    ASSERT(st != NULL);
    ASSERT_EQ(fp_store_upgraded_from(st), 0);
    return st;
}

/* Commits round `round` with events first..last (none when last < first),
   each at wall time `wall`. */
static void s_round(fp_store_t *st, uint64_t round, uint64_t first, uint64_t last, int64_t wall)
{
    fp_store_txn_t *t;
    ASSERT_EQ(fp_store_begin(st, &t), 0);
    for (uint64_t s = first; s <= last; s++) {
        char ev[32];
        int n = snprintf(ev, sizeof ev, "ev-%llu", (unsigned long long)s);
        ASSERT_EQ(fp_outbox_put(t, s, round, wall, "checkpoint/completion/P1/L1", 27, ev,
                                (size_t)n),
                  0);
    }
    uint64_t r, g;
    ASSERT_EQ(fp_store_last_round(st, &r, &g), 0);
    ASSERT_EQ(fp_store_set_round(t, round, last >= first ? last : g), 0);
    ASSERT_EQ(fp_store_commit(&t), 0);
}

/* Commits one round that only puts a reader (no events). */
static int s_put_reader(fp_store_t *st, const char *name, uint64_t pos, uint32_t flags)
{
    fp_store_txn_t *t;
    ASSERT_EQ(fp_store_begin(st, &t), 0);
    int rc = fp_outbox_put_reader(t, name, pos, flags);
    ASSERT_EQ(fp_store_commit(&t), 0); /* a refused put does not fail the round */
    return rc;
}

typedef struct {
    int n;
    uint64_t gseq[64];
    uint64_t round[64];
    char ev[64][32];
    int stop_at; /* stop (return 1) at this many events; 0: never */
} events_t;

static int s_collect(void *ctx, uint64_t gseq, uint64_t round, const char *topic, size_t tlen,
                     const void *ev, size_t evlen)
{
    events_t *e = ctx;
    if (e->stop_at && e->n == e->stop_at)
        return 1;
    ASSERT(e->n < 64);
    ASSERT(tlen == 27 && memcmp(topic, "checkpoint/completion/P1/L1", 27) == 0);
    ASSERT(evlen < 32);
    e->gseq[e->n] = gseq;
    e->round[e->n] = round;
    memcpy(e->ev[e->n], ev, evlen);
    e->ev[e->n][evlen] = '\0';
    e->n++;
    return 0;
}

static uint64_t s_oldest(fp_store_t *st)
{
    uint64_t o;
    int rc = fp_outbox_oldest(st, &o);
    if (rc == FP_STORE_EMPTY)
        return 0;
    ASSERT_EQ(rc, 0);
    return o;
}

TEST(test_put_read_oldest_trim)
{
    const char *dir = s_newdir();
    fp_store_t *st = s_open(dir);
    uint64_t o = 7;
    ASSERT_EQ(fp_outbox_oldest(st, &o), FP_STORE_EMPTY);
    ASSERT_EQ(o, 0);
    uint64_t del = 9;
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100, &del), 0);
    ASSERT_EQ(del, 0);

    s_round(st, 1, 1, 3, 1000);
    s_round(st, 2, 4, 6, 2000);
    s_round(st, 3, 7, 10, 3000);
    events_t e = {0};
    ASSERT_EQ(fp_outbox_read(st, 0, 100, s_collect, &e), 10);
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(e.gseq[i], i + 1);
    ASSERT_EQ(e.round[3], 2);
    ASSERT_STREQ(e.ev[9], "ev-10");
    memset(&e, 0, sizeof e);
    ASSERT_EQ(fp_outbox_read(st, 5, 3, s_collect, &e), 3); /* the limit */
    ASSERT_EQ(e.gseq[0], 5);
    ASSERT_EQ(e.gseq[2], 7);
    memset(&e, 0, sizeof e);
    e.stop_at = 2;
    ASSERT_EQ(fp_outbox_read(st, 1, 100, s_collect, &e), 2); /* fn stops */
    memset(&e, 0, sizeof e);
    ASSERT_EQ(fp_outbox_read(st, 11, 100, s_collect, &e), 0);
    ASSERT_EQ(fp_outbox_read(st, 1, 0, s_collect, &e), 0);
    ASSERT_EQ(s_oldest(st), 1);

    /* An out-of-order seq fails the round. */
    fp_store_txn_t *t;
    ASSERT_EQ(fp_store_begin(st, &t), 0);
    ASSERT_EQ(fp_outbox_put(t, 10, 4, 4000, "checkpoint/completion/P1/L1", 27, "x", 1),
              MDB_KEYEXIST);
    ASSERT_EQ(fp_store_commit(&t), MDB_KEYEXIST);

    /* Retention by time, in order, with the limit. */
    ASSERT_EQ(fp_outbox_trim(st, 2500, 2, &del), 0);
    ASSERT_EQ(del, 2);
    ASSERT_EQ(s_oldest(st), 3);
    ASSERT_EQ(fp_outbox_trim(st, 2500, 100, &del), 0);
    ASSERT_EQ(del, 4);
    ASSERT_EQ(s_oldest(st), 7);
    ASSERT_EQ(fp_outbox_trim(st, 3000, 100, &del), 0); /* not older: kept */
    ASSERT_EQ(del, 0);
    memset(&e, 0, sizeof e);
    ASSERT_EQ(fp_outbox_read(st, 0, 100, s_collect, &e), 4);
    ASSERT_EQ(e.gseq[0], 7);

    /* The outbox's share of the map grows with its events. */
    uint64_t ob, mb, ob2, used, mb2;
    ASSERT_EQ(fp_outbox_usage(st, &ob, &mb), 0);
    ASSERT_EQ(mb, MAP);
    ASSERT(ob > 0 && ob < mb);
    fp_store_txn_t *t2;
    char big[2000];
    memset(big, 'b', sizeof big);
    ASSERT_EQ(fp_store_begin(st, &t2), 0);
    for (uint64_t s = 11; s <= 110; s++)
        ASSERT_EQ(fp_outbox_put(t2, s, 5, 5000, "t", 1, big, sizeof big), 0);
    ASSERT_EQ(fp_store_set_round(t2, 5, 110), 0);
    ASSERT_EQ(fp_store_commit(&t2), 0);
    ASSERT_EQ(fp_outbox_usage(st, &ob2, &mb), 0);
    ASSERT(ob2 >= ob + 100 * sizeof big);
    ASSERT_EQ(fp_store_usage(st, &used, &mb2), 0);
    ASSERT(ob2 <= used);
    fp_store_close(&st);
    s_rmdir(dir);
}

/* A new reader recorded before the pipeline runs holds retention from its
   start at once; a known reader is left as it is (position, flags, aux). */
TEST(test_add_reader_holds_at_once_and_keeps_a_known_one)
{
    const char *dir = s_newdir();
    fp_store_t *st = s_open(dir);
    for (uint64_t r = 1; r <= 3; r++)
        s_round(st, r, r * 10 - 9, r * 10, (int64_t)r * 1000); /* 1..30 */
    ASSERT_EQ(fp_outbox_add_reader(st, "erp", 0), 0);
    uint64_t pos = 99, del = 99;
    uint32_t flags = 0;
    ASSERT_EQ(fp_outbox_reader(st, "erp", &pos, &flags), 0);
    ASSERT_EQ(pos, 0);
    ASSERT_EQ(flags, FP_OUTBOX_READER_ENABLED);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100000, &del), 0);
    ASSERT_EQ(del, 0);
    ASSERT_EQ(s_oldest(st), 1);

    /* Known: the add changes nothing (not the position, not DETACHED). */
    ASSERT_EQ(s_put_reader(st, "erp", 12, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_set_reader_flags(st, "erp", FP_OUTBOX_READER_DETACHED, 0, NULL, NULL), 0);
    ASSERT_EQ(fp_outbox_add_reader(st, "erp", 0), 0);
    ASSERT_EQ(fp_outbox_reader(st, "erp", &pos, &flags), 0);
    ASSERT_EQ(pos, 12);
    ASSERT_EQ(flags, FP_OUTBOX_READER_ENABLED | FP_OUTBOX_READER_DETACHED);
    ASSERT_EQ(fp_outbox_add_reader(st, "", 0), -EINVAL);
    ASSERT_EQ(fp_outbox_add_reader(st, "bad\nname", 0), -EINVAL);

    /* Durable: a second reader added at 20 holds 21.. after a reopen. */
    ASSERT_EQ(fp_outbox_add_reader(st, "late", 20), 0);
    ASSERT_EQ(fp_outbox_set_reader_flags(st, "erp", 0, FP_OUTBOX_READER_ENABLED, NULL, NULL), 0);
    fp_store_close(&st);
    st = s_open(dir);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100000, &del), 0);
    ASSERT_EQ(del, 20);
    ASSERT_EQ(s_oldest(st), 21);
    fp_store_close(&st);
    s_rmdir(dir);
}

typedef struct {
    int n;
    char name[8][64];
    uint64_t pos[8];
    uint32_t flags[8];
    int64_t ns[8];
} readers_t;

static int s_collect_reader(void *ctx, const char *name, uint64_t pos, uint32_t flags,
                            int64_t updated_ns)
{
    readers_t *r = ctx;
    ASSERT(r->n < 8);
    snprintf(r->name[r->n], 64, "%s", name);
    r->pos[r->n] = pos;
    r->flags[r->n] = flags;
    r->ns[r->n] = updated_ns;
    r->n++;
    return 0;
}

TEST(test_reader_positions_durable)
{
    const char *dir = s_newdir();
    fp_store_t *st = s_open(dir);
    uint64_t pos = 5;
    uint32_t flags = 5;
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, &flags), FP_STORE_NOTFOUND);
    s_round(st, 1, 1, 10, 1000);

    /* In the round's txn: visible only once the round is committed, and
       gone with an aborted round. */
    fp_store_txn_t *t;
    ASSERT_EQ(fp_store_begin(st, &t), 0);
    ASSERT_EQ(fp_outbox_put(t, 11, 2, 2000, "checkpoint/completion/P1/L1", 27, "e", 1), 0);
    ASSERT_EQ(fp_outbox_put_reader(t, "erp-a", 4, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, &flags), FP_STORE_NOTFOUND);
    fp_store_abort(&t);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, &flags), FP_STORE_NOTFOUND);

    ASSERT_EQ(fp_store_begin(st, &t), 0);
    ASSERT_EQ(fp_outbox_put(t, 11, 2, 2000, "checkpoint/completion/P1/L1", 27, "e", 1), 0);
    ASSERT_EQ(fp_outbox_put_reader(t, "erp-a", 4, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_put_reader(t, "mes.line_7", 10, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_put_reader(t, "off", 2, 0), 0);
    ASSERT_EQ(fp_store_set_round(t, 2, 11), 0);
    ASSERT_EQ(fp_store_commit(&t), 0);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, &flags), 0);
    ASSERT_EQ(pos, 4);
    ASSERT_EQ(flags, FP_OUTBOX_READER_ENABLED);

    /* A stale report is ignored (not an error); a later one moves it on. */
    ASSERT_EQ(s_put_reader(st, "erp-a", 3, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, NULL), 0);
    ASSERT_EQ(pos, 4);
    ASSERT_EQ(s_put_reader(st, "erp-a", 0, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, NULL), 0);
    ASSERT_EQ(pos, 4);
    ASSERT_EQ(s_put_reader(st, "erp-a", 9, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, NULL), 0);
    ASSERT_EQ(pos, 9);

    /* Beyond the last committed global_seq (11): refused, the round still
       commits, and the stored position stays. Exactly the last is fine. */
    ASSERT_EQ(fp_store_begin(st, &t), 0);
    ASSERT_EQ(fp_outbox_put(t, 12, 3, 3000, "checkpoint/completion/P1/L1", 27, "e", 1), 0);
    /* 12 is in this very round, not yet committed: refused too */
    ASSERT_EQ(fp_outbox_put_reader(t, "erp-a", 12, FP_OUTBOX_READER_ENABLED), -ERANGE);
    ASSERT_EQ(fp_outbox_put_reader(t, "erp-a", UINT64_MAX, FP_OUTBOX_READER_ENABLED), -ERANGE);
    ASSERT_EQ(fp_store_set_round(t, 3, 12), 0);
    ASSERT_EQ(fp_store_commit(&t), 0);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, NULL), 0);
    ASSERT_EQ(pos, 9);
    events_t e = {0};
    ASSERT_EQ(fp_outbox_read(st, 12, 10, s_collect, &e), 1); /* the round is in */
    ASSERT_EQ(s_put_reader(st, "erp-a", 13, FP_OUTBOX_READER_ENABLED), -ERANGE);
    ASSERT_EQ(s_put_reader(st, "erp-a", 12, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, NULL), 0);
    ASSERT_EQ(pos, 12);

    /* Names: 1..63 bytes of [A-Za-z0-9._-]. */
    char n63[64], n64[65];
    memset(n63, 'x', 63);
    n63[63] = '\0';
    memset(n64, 'x', 64);
    n64[64] = '\0';
    ASSERT_EQ(s_put_reader(st, n63, 1, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(s_put_reader(st, n64, 1, FP_OUTBOX_READER_ENABLED), -EINVAL);
    ASSERT_EQ(s_put_reader(st, "", 1, FP_OUTBOX_READER_ENABLED), -EINVAL);
    ASSERT_EQ(s_put_reader(st, "a b", 1, FP_OUTBOX_READER_ENABLED), -EINVAL);
    ASSERT_EQ(s_put_reader(st, "a/b", 1, FP_OUTBOX_READER_ENABLED), -EINVAL);
    ASSERT_EQ(s_put_reader(st, "caf\xc3\xa9", 1, FP_OUTBOX_READER_ENABLED), -EINVAL);
    ASSERT_EQ(fp_outbox_reader(st, n64, &pos, NULL), -EINVAL);
    ASSERT_EQ(fp_outbox_reader(st, "a b", &pos, NULL), -EINVAL);

    /* Survives close and reopen, every field. */
    fp_store_close(&st);
    st = s_open(dir);
    ASSERT_EQ(fp_outbox_reader(st, "erp-a", &pos, &flags), 0);
    ASSERT_EQ(pos, 12);
    ASSERT_EQ(flags, FP_OUTBOX_READER_ENABLED);
    readers_t r = {0};
    ASSERT_EQ(fp_outbox_each_reader(st, s_collect_reader, &r), 0);
    ASSERT_EQ(r.n, 4); /* name order */
    ASSERT_STREQ(r.name[0], "erp-a");
    ASSERT_STREQ(r.name[1], "mes.line_7");
    ASSERT_STREQ(r.name[2], "off");
    ASSERT_STREQ(r.name[3], n63);
    ASSERT_EQ(r.pos[1], 10);
    ASSERT_EQ(r.flags[2], 0);
    ASSERT(r.ns[0] > 1600000000000000000LL); /* a wall time */
    fp_store_close(&st);
    s_rmdir(dir);
}

TEST(test_retention_held_by_enabled_reader)
{
    const char *dir = s_newdir();
    fp_store_t *st = s_open(dir);
    for (uint64_t r = 1; r <= 10; r++)
        s_round(st, r, r * 10 - 9, r * 10, (int64_t)r * 1000); /* 1..100 */
    ASSERT_EQ(s_put_reader(st, "erp-a", 25, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(s_put_reader(st, "erp-b", 40, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(s_put_reader(st, "disabled", 3, 0), 0); /* holds nothing */

    /* Far past retention: every event is older than INT64_MAX. The trim
       stops after the smallest enabled position (25): 26.. stay. */
    uint64_t del;
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100000, &del), 0);
    ASSERT_EQ(del, 25);
    ASSERT_EQ(s_oldest(st), 26);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100000, &del), 0);
    ASSERT_EQ(del, 0);
    ASSERT_EQ(s_oldest(st), 26);

    /* The time still bounds it when the readers are ahead. */
    ASSERT_EQ(s_put_reader(st, "erp-a", 90, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_trim(st, 3500, 100000, &del), 0); /* rounds 1..3: up to 30 */
    ASSERT_EQ(del, 5);
    ASSERT_EQ(s_oldest(st), 31);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100000, &del), 0); /* now erp-b, 40 */
    ASSERT_EQ(del, 10);
    ASSERT_EQ(s_oldest(st), 41);

    /* Disabling a reader (flags 0) releases it; a reader at position 0 holds
       everything. */
    ASSERT_EQ(s_put_reader(st, "erp-b", 40, 0), 0);
    ASSERT_EQ(s_put_reader(st, "erp-c", 0, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100000, &del), 0);
    ASSERT_EQ(del, 0);
    ASSERT_EQ(s_oldest(st), 41);
    ASSERT_EQ(s_put_reader(st, "erp-c", 0, 0), 0);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100000, &del), 0); /* erp-a, 90 */
    ASSERT_EQ(del, 50);
    ASSERT_EQ(s_oldest(st), 91);

    /* Held across a reopen. */
    fp_store_close(&st);
    st = s_open(dir);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 100000, &del), 0);
    ASSERT_EQ(del, 0);
    ASSERT_EQ(s_oldest(st), 91);
    fp_store_close(&st);
    s_rmdir(dir);
}

typedef struct {
    int n;
    char name[8][64];
    uint64_t pos[8], lag[8];
} detached_t;

static void s_on_detach(void *ctx, const char *name, uint64_t pos, uint64_t lag)
{
    detached_t *d = ctx;
    ASSERT(d->n < 8);
    snprintf(d->name[d->n], 64, "%s", name);
    d->pos[d->n] = pos;
    d->lag[d->n] = lag;
    d->n++;
}

TEST(test_detach_at_the_bound)
{
    const char *dir = s_newdir();
    fp_store_t *st = s_open(dir);
    s_round(st, 1, 1, 50, 1000);
    ASSERT_EQ(s_put_reader(st, "slow", 5, FP_OUTBOX_READER_ENABLED), 0);    /* lag 45 */
    ASSERT_EQ(s_put_reader(st, "edge", 10, FP_OUTBOX_READER_ENABLED), 0);   /* lag 40 */
    ASSERT_EQ(s_put_reader(st, "near", 11, FP_OUTBOX_READER_ENABLED), 0);   /* lag 39 */
    ASSERT_EQ(s_put_reader(st, "fast", 50, FP_OUTBOX_READER_ENABLED), 0);   /* lag 0 */
    ASSERT_EQ(s_put_reader(st, "idle", 0, 0), 0);                           /* not enabled */

    detached_t d = {0};
    ASSERT_EQ(fp_outbox_detach_lagging(st, 1000, s_on_detach, &d), 0); /* nobody */
    ASSERT_EQ(d.n, 0);
    ASSERT_EQ(fp_outbox_detach_lagging(st, 40, s_on_detach, &d), 2);
    ASSERT_EQ(d.n, 2);
    ASSERT_STREQ(d.name[0], "edge"); /* name order */
    ASSERT_EQ(d.pos[0], 10);
    ASSERT_EQ(d.lag[0], 40);
    ASSERT_STREQ(d.name[1], "slow");
    ASSERT_EQ(d.lag[1], 45);
    uint64_t pos;
    uint32_t flags;
    ASSERT_EQ(fp_outbox_reader(st, "slow", &pos, &flags), 0);
    ASSERT_EQ(pos, 5); /* the position is kept */
    ASSERT_EQ(flags, FP_OUTBOX_READER_ENABLED | FP_OUTBOX_READER_DETACHED);
    ASSERT_EQ(fp_outbox_reader(st, "near", &pos, &flags), 0);
    ASSERT_EQ(flags, FP_OUTBOX_READER_ENABLED);
    ASSERT_EQ(fp_outbox_reader(st, "idle", &pos, &flags), 0);
    ASSERT_EQ(flags, 0);
    /* Once detached, not again. */
    memset(&d, 0, sizeof d);
    ASSERT_EQ(fp_outbox_detach_lagging(st, 40, s_on_detach, &d), 0);
    ASSERT_EQ(d.n, 0);

    /* The detached readers no longer hold retention: "near" (11) does. */
    uint64_t del;
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 1000, &del), 0);
    ASSERT_EQ(del, 11);
    ASSERT_EQ(s_oldest(st), 12);

    /* A detached reader never stops a commit: its reports still go in (the
       position moves on, it stays detached while the report says so). */
    s_round(st, 2, 51, 60, 2000);
    ASSERT_EQ(s_put_reader(st, "slow", 20,
                           FP_OUTBOX_READER_ENABLED | FP_OUTBOX_READER_DETACHED), 0);
    ASSERT_EQ(fp_outbox_reader(st, "slow", &pos, &flags), 0);
    ASSERT_EQ(pos, 20);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 1000, &del), 0);
    ASSERT_EQ(del, 0); /* "near" still at 11 */

    /* NULL callback: still detached and counted. Lag of "near" is 49. */
    ASSERT_EQ(fp_outbox_detach_lagging(st, 49, NULL, NULL), 1);
    ASSERT_EQ(fp_outbox_reader(st, "near", &pos, &flags), 0);
    ASSERT(flags & FP_OUTBOX_READER_DETACHED);
    ASSERT_EQ(fp_outbox_trim(st, INT64_MAX, 1000, &del), 0); /* only "fast" (50) now */
    ASSERT_EQ(del, 39);
    ASSERT_EQ(s_oldest(st), 51);

    /* The operator's switch: a report without DETACHED does not re-attach;
       only fp_outbox_set_reader_flags does, keeping position and aux. */
    ASSERT_EQ(s_put_reader(st, "near", 52, FP_OUTBOX_READER_ENABLED), 0);
    ASSERT_EQ(fp_outbox_reader(st, "near", &pos, &flags), 0);
    ASSERT(flags & FP_OUTBOX_READER_DETACHED);
    ASSERT_EQ(pos, 52);
    uint32_t nf = 0;
    ASSERT_EQ(fp_outbox_set_reader_flags(st, "near", 0, FP_OUTBOX_READER_DETACHED, &pos, &nf), 0);
    ASSERT_EQ(nf, FP_OUTBOX_READER_ENABLED);
    ASSERT_EQ(pos, 52);
    ASSERT_EQ(fp_outbox_reader(st, "near", &pos, &flags), 0);
    ASSERT_EQ(flags, FP_OUTBOX_READER_ENABLED);
    ASSERT_EQ(fp_outbox_set_reader_flags(st, "near", FP_OUTBOX_READER_DETACHED, 0, NULL, NULL), 0);
    ASSERT_EQ(fp_outbox_reader(st, "near", NULL, &flags), 0);
    ASSERT(flags & FP_OUTBOX_READER_DETACHED);
    ASSERT_EQ(fp_outbox_set_reader_flags(st, "nobody", FP_OUTBOX_READER_DETACHED, 0, NULL, NULL),
              FP_STORE_NOTFOUND);
    fp_store_close(&st);
    s_rmdir(dir);
}

typedef struct {
    int n;
    char name[8][64];
    uint64_t pos[8], lag[8];
    fp_outbox_lag_t verdict[8];
    int stop_at; /* stop (return 7) at this many readers; 0: never */
} lags_t;

static int s_on_lag(void *ctx, const char *name, uint64_t position, uint64_t lag,
                    fp_outbox_lag_t verdict)
{
    lags_t *l = ctx;
    if (l->stop_at && l->n == l->stop_at)
        return 7;
    ASSERT(l->n < 8);
    snprintf(l->name[l->n], sizeof l->name[l->n], "%s", name);
    l->pos[l->n] = position;
    l->lag[l->n] = lag;
    l->verdict[l->n] = verdict;
    l->n++;
    return 0;
}

TEST(test_lags_for_warnings)
{
    const char *dir = s_newdir();
    fp_store_t *st = s_open(dir);
    lags_t l = {0};
    uint64_t ob = 1, mb = 0;
    ASSERT_EQ(fp_outbox_lags(st, 100, s_on_lag, &l, &ob, &mb), 0); /* no readers */
    ASSERT_EQ(l.n, 0);
    ASSERT_EQ(ob, 0); /* an empty outbox table has no pages */
    ASSERT_EQ(mb, MAP);
    s_round(st, 1, 1, 200, 1000);
    ASSERT_EQ(s_put_reader(st, "a-ok", 200, FP_OUTBOX_READER_ENABLED), 0);    /* lag 0 */
    ASSERT_EQ(s_put_reader(st, "b-warn", 140, FP_OUTBOX_READER_ENABLED), 0);  /* lag 60 */
    ASSERT_EQ(s_put_reader(st, "c-bound", 100, FP_OUTBOX_READER_ENABLED), 0); /* lag 100 */
    ASSERT_EQ(s_put_reader(st, "d-off", 0, 0), 0);
    ASSERT_EQ(s_put_reader(st, "e-det", 0, FP_OUTBOX_READER_ENABLED | FP_OUTBOX_READER_DETACHED),
              0);
    /* unknown flag bits: refused, not stored */
    ASSERT_EQ(s_put_reader(st, "f-bad", 0, 4), -EINVAL);
    ASSERT_EQ(fp_outbox_reader(st, "f-bad", NULL, NULL), FP_STORE_NOTFOUND);

    ASSERT_EQ(fp_outbox_lags(st, 100, s_on_lag, &l, &ob, &mb), 0);
    ASSERT_EQ(l.n, 3); /* only the enabled, not detached readers */
    ASSERT_STREQ(l.name[0], "a-ok");
    ASSERT_EQ(l.lag[0], 0);
    ASSERT_EQ(l.verdict[0], FP_OUTBOX_LAG_OK);
    ASSERT_STREQ(l.name[1], "b-warn");
    ASSERT_EQ(l.pos[1], 140);
    ASSERT_EQ(l.lag[1], 60);
    ASSERT_EQ(l.verdict[1], FP_OUTBOX_LAG_WARN);
    ASSERT_STREQ(l.name[2], "c-bound");
    ASSERT_EQ(l.lag[2], 100);
    ASSERT_EQ(l.verdict[2], FP_OUTBOX_LAG_DETACH);
    uint64_t ob2, mb2;
    ASSERT_EQ(fp_outbox_usage(st, &ob2, &mb2), 0);
    ASSERT_EQ(ob, ob2); /* the same figures as fp_outbox_usage */
    ASSERT_EQ(mb, mb2);
    ASSERT(ob > 0 && ob < mb);
    /* fn stops the walk: its value comes back */
    memset(&l, 0, sizeof l);
    l.stop_at = 1;
    ASSERT_EQ(fp_outbox_lags(st, 100, s_on_lag, &l, NULL, NULL), 7);
    ASSERT_EQ(l.n, 1);
    /* detach acts on the same rule: c-bound goes, the walk then skips it */
    ASSERT_EQ(fp_outbox_detach_lagging(st, 100, NULL, NULL), 1);
    memset(&l, 0, sizeof l);
    ASSERT_EQ(fp_outbox_lags(st, 100, s_on_lag, &l, NULL, NULL), 0);
    ASSERT_EQ(l.n, 2);
    ASSERT_STREQ(l.name[1], "b-warn");
    fp_store_close(&st);
    s_rmdir(dir);
}

TEST(test_lag_rule)
{
    /* even bound: warn from 50 % exactly, detach at the bound */
    ASSERT_EQ(fp_outbox_lag_check(1000, 1000, 1000), FP_OUTBOX_LAG_OK); /* lag 0 */
    ASSERT_EQ(fp_outbox_lag_check(501, 1000, 1000), FP_OUTBOX_LAG_OK);  /* 499 */
    ASSERT_EQ(fp_outbox_lag_check(500, 1000, 1000), FP_OUTBOX_LAG_WARN); /* 500 */
    ASSERT_EQ(fp_outbox_lag_check(1, 1000, 1000), FP_OUTBOX_LAG_WARN);   /* 999 */
    ASSERT_EQ(fp_outbox_lag_check(0, 1000, 1000), FP_OUTBOX_LAG_DETACH); /* 1000 */
    ASSERT_EQ(fp_outbox_lag_check(0, 1001, 1000), FP_OUTBOX_LAG_DETACH); /* 1001 */
    /* odd bound: 50 % of 1001 is 500.5, so 500 is ok and 501 warns */
    ASSERT_EQ(fp_outbox_lag_check(0, 500, 1001), FP_OUTBOX_LAG_OK);
    ASSERT_EQ(fp_outbox_lag_check(0, 501, 1001), FP_OUTBOX_LAG_WARN);
    ASSERT_EQ(fp_outbox_lag_check(0, 1000, 1001), FP_OUTBOX_LAG_WARN);
    ASSERT_EQ(fp_outbox_lag_check(0, 1001, 1001), FP_OUTBOX_LAG_DETACH);
    /* a position at or past the last (a fresh store, a race): lag 0 */
    ASSERT_EQ(fp_outbox_lag_check(7, 3, 1000), FP_OUTBOX_LAG_OK);
    ASSERT_EQ(fp_outbox_lag_check(0, 0, 1), FP_OUTBOX_LAG_OK);
    ASSERT_EQ(fp_outbox_lag_check(0, 1, 1), FP_OUTBOX_LAG_DETACH);
    /* the config's bounds and extreme values: no overflow */
    ASSERT_EQ(fp_outbox_lag_check(0, 10000000, 10000000), FP_OUTBOX_LAG_DETACH);
    ASSERT_EQ(fp_outbox_lag_check(1, 10000000, 10000000), FP_OUTBOX_LAG_WARN);
    ASSERT_EQ(fp_outbox_lag_check(5000001, 10000000, 10000000), FP_OUTBOX_LAG_OK);
    ASSERT_EQ(fp_outbox_lag_check(0, UINT64_MAX, UINT64_MAX), FP_OUTBOX_LAG_DETACH);
    ASSERT_EQ(fp_outbox_lag_check(1, UINT64_MAX, UINT64_MAX), FP_OUTBOX_LAG_WARN);
    ASSERT_EQ(fp_outbox_lag_check(UINT64_MAX / 2 + 1, UINT64_MAX, UINT64_MAX),
              FP_OUTBOX_LAG_OK); /* lag 2^63 - 1 < ceil((2^64 - 1) / 2) = 2^63 */
    ASSERT_EQ(fp_outbox_lag_check(UINT64_MAX / 2, UINT64_MAX, UINT64_MAX),
              FP_OUTBOX_LAG_WARN); /* lag 2^63 */
}

/* The stored layouts (store.h "On disk") as the pure parsers read them,
   including damaged ones: too short, an empty or overlong topic, a reader
   name with a NUL or a byte a put refuses, a value of another size. */
TEST(test_record_parsers)
{
    uint8_t v[64] = {0};
    v[7] = 5;                    /* wall ns 5 */
    v[15] = 9;                   /* round 9 */
    v[17] = 3;                   /* topic length 3 */
    memcpy(v + 18, "ckpEVENT", 8);
    int64_t wall;
    uint64_t round;
    const char *topic;
    size_t tlen, evlen;
    const void *ev;
    ASSERT_EQ(fp_outbox_event_parse(v, 26, &wall, &round, &topic, &tlen, &ev, &evlen), 0);
    ASSERT(wall == 5 && round == 9 && tlen == 3 && memcmp(topic, "ckp", 3) == 0);
    ASSERT(ev == v + 21 && evlen == 5);
    ASSERT_EQ(fp_outbox_event_parse(v, 21, &wall, &round, &topic, &tlen, &ev, &evlen), 0);
    ASSERT_EQ(evlen, 0); /* an empty event: the layout allows it */
    ASSERT_EQ(fp_outbox_event_parse(v, 20, &wall, &round, &topic, &tlen, &ev, &evlen),
              FP_STORE_CORRUPT);
    ASSERT_EQ(fp_outbox_event_parse(v, 17, &wall, &round, &topic, &tlen, &ev, &evlen),
              FP_STORE_CORRUPT);
    ASSERT_EQ(fp_outbox_event_parse(NULL, 0, &wall, &round, &topic, &tlen, &ev, &evlen),
              FP_STORE_CORRUPT);
    v[17] = 0; /* no topic */
    ASSERT_EQ(fp_outbox_event_parse(v, 26, &wall, &round, &topic, &tlen, &ev, &evlen),
              FP_STORE_CORRUPT);
    v[16] = 0xff; /* a topic longer than the value */
    ASSERT_EQ(fp_outbox_event_parse(v, 64, &wall, &round, &topic, &tlen, &ev, &evlen),
              FP_STORE_CORRUPT);

    uint8_t r[36] = {0};
    r[7] = 42;  /* position */
    r[11] = 1;  /* flags */
    r[19] = 7;  /* updated ns */
    r[27] = 3;  /* aux[0] */
    r[35] = 4;  /* aux[1] */
    uint64_t pos, aux[2];
    uint32_t flags;
    int64_t ns;
    ASSERT_EQ(fp_outbox_reader_parse("erp-1.x_y", 9, r, 36, &pos, &flags, &ns, aux), 0);
    ASSERT(pos == 42 && flags == 1 && ns == 7 && aux[0] == 3 && aux[1] == 4);
    ASSERT_EQ(fp_outbox_reader_parse("erp", 3, r, 20, &pos, &flags, &ns, aux), 0);
    ASSERT(pos == 42 && aux[0] == 0 && aux[1] == 0); /* a value from before aux */
    ASSERT_EQ(fp_outbox_reader_parse("erp", 3, r, 20, &pos, &flags, &ns, NULL), 0);
    ASSERT_EQ(fp_outbox_reader_parse("erp", 3, r, 28, &pos, &flags, &ns, aux), FP_STORE_CORRUPT);
    ASSERT_EQ(fp_outbox_reader_parse("", 0, r, 36, &pos, &flags, &ns, aux), FP_STORE_CORRUPT);
    /* a NUL in the key: the name would reach callbacks cut ("er") */
    ASSERT_EQ(fp_outbox_reader_parse("er\0p", 4, r, 36, &pos, &flags, &ns, aux),
              FP_STORE_CORRUPT);
    ASSERT_EQ(fp_outbox_reader_parse("er p", 4, r, 36, &pos, &flags, &ns, aux), FP_STORE_CORRUPT);
    char longname[65];
    memset(longname, 'a', 64);
    longname[64] = 0;
    ASSERT_EQ(fp_outbox_reader_parse(longname, 63, r, 36, &pos, &flags, &ns, aux), 0);
    ASSERT_EQ(fp_outbox_reader_parse(longname, 64, r, 36, &pos, &flags, &ns, aux),
              FP_STORE_CORRUPT);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_put_read_oldest_trim);
    RUN(test_reader_positions_durable);
    RUN(test_retention_held_by_enabled_reader);
    RUN(test_add_reader_holds_at_once_and_keeps_a_known_one);
    RUN(test_detach_at_the_bound);
    RUN(test_lags_for_warnings);
    RUN(test_lag_rule);
    RUN(test_record_parsers);
    return test_done();
}
