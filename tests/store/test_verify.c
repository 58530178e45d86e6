/*  test_verify.c - the full walk of a state file (verify.h): a clean file
    walks clean with every table's count; a flipped byte inside a value, a
    zeroed data page, a cut file and a file that is no state are each
    reported with where; the walk in a child survives what LMDB does on a
    damaged page; a free list that names a page in use is refused though
    the page counts add up; fp_store_open refuses what the walk refuses.

    Every test works in its own fresh directory under /tmp.
*/
#include "outbox.h"
#include "store.h"
#include "test.h"
#include "verify.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAP (8u << 20)
#define NKEYS 400

static char s_dir[64];

static const char *s_newdir(void)
{
    strcpy(s_dir, "/tmp/fp-test-verify-XXXXXX");
    ASSERT(mkdtemp(s_dir) != NULL);
    return s_dir;
}

static void s_rmdir(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ASSERT_EQ(system(cmd), 0);
}

/* A state with NKEYS keys whose values hold a findable marker, two outbox
   events, a source, a feed and a dead letter, in two commits. */
static void s_make(const char *dir)
{
    char err[512] = "";
    fp_store_t *st = fp_store_open(dir, MAP, "verify", err, sizeof err);
    if (!st)
        fprintf(stderr, "open: %s\n", err);
    ASSERT(st != NULL);
    for (int round = 1; round <= 2; round++) {
        fp_store_txn_t *t;
        ASSERT_EQ(fp_store_begin(st, &t), 0);
        for (int i = 0; i < NKEYS / 2; i++) {
            char key[32], val[64];
            int n = (round - 1) * (NKEYS / 2) + i;
            int kl = snprintf(key, sizeof key, "key-%05d", n);
            int vl = snprintf(val, sizeof val, "VALUE-MARKER-%05d-padding-padding", n);
            ASSERT_EQ(fp_store_put_key(t, key, (size_t)kl, val, (size_t)vl), 0);
        }
        ASSERT_EQ(fp_store_put_source(t, (uint64_t)round, "dedup", 5), 0);
        ASSERT_EQ(fp_store_put_feed(t, "checkpoint/scrap/P/L", 20, (uint64_t)round), 0);
        ASSERT_EQ(fp_outbox_put(t, (uint64_t)round, (uint64_t)round, round, "checkpoint/scrap/P/L",
                                20, "event", 5), 0);
        if (round == 1)
            ASSERT_EQ(fp_store_put_deadletter(t, 1, "too_old", "{}", 2, "raw", 3, NULL), 0);
        ASSERT_EQ(fp_store_set_round(t, (uint64_t)round, (uint64_t)round), 0);
        ASSERT_EQ(fp_store_commit(&t), 0);
    }
    fp_store_close(&st);
}

static char *s_read(const char *dir, size_t *len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "rb");
    ASSERT(f != NULL);
    struct stat sb;
    ASSERT_EQ(fstat(fileno(f), &sb), 0);
    char *buf = malloc((size_t)sb.st_size);
    ASSERT(buf != NULL);
    ASSERT_EQ(fread(buf, 1, (size_t)sb.st_size, f), (size_t)sb.st_size);
    fclose(f);
    *len = (size_t)sb.st_size;
    return buf;
}

static void s_write_at(const char *dir, size_t off, const void *bytes, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int fd = open(path, O_WRONLY);
    ASSERT(fd >= 0);
    ASSERT_EQ(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
    close(fd);
}

/* Overwrites byte `off` of every copy of `needle` in the file with `c`
   (LMDB copies pages on write: older copies sit on free pages, and which
   copy is live is LMDB's to know); returns the copies. */
static int s_damage_all(const char *dir, const char *needle, size_t off, char c)
{
    size_t len, nl = strlen(needle);
    int n = 0;
    char *buf = s_read(dir, &len);
    for (size_t i = 0; i + nl <= len; i++)
        if (!memcmp(buf + i, needle, nl)) {
            s_write_at(dir, i + off, &c, 1);
            n++;
        }
    free(buf);
    ASSERT(n > 0);
    return n;
}

static void s_refused_by_open(const char *dir, const char *want)
{
    char err[600] = "";
    fp_store_t *st = fp_store_open(dir, MAP, "verify", err, sizeof err);
    if (st || !strstr(err, want))
        fprintf(stderr, "expected a refusal with \"%s\", got %s: \"%s\"\n", want,
                st ? "success" : "refusal", err);
    ASSERT(st == NULL);
}

TEST(test_clean_walk_counts_every_table)
{
    const char *dir = s_newdir();
    s_make(dir);
    for (int child = 0; child < 2; child++) {
        fp_store_verify_t r;
        memset(&r, 0, sizeof r);
        ASSERT_EQ(fp_store_verify(dir, child == 1, &r), 0);
        ASSERT_STREQ(r.problem, "");
        ASSERT_EQ(r.version, FP_STORE_FORMAT_VERSION);
        ASSERT(r.sums);
        ASSERT_EQ(r.round, 2);
        ASSERT_EQ(r.global_seq, 2);
        int keys = -1, outbox = -1, sources = -1, deadletters = -1;
        for (int i = 0; i < FP_STORE_VERIFY_TABLES; i++) {
            const char *name = fp_store_verify_table(i);
            if (!strcmp(name, "keys"))
                keys = (int)r.entries[i];
            if (!strcmp(name, "outbox"))
                outbox = (int)r.entries[i];
            if (!strcmp(name, "sources"))
                sources = (int)r.entries[i];
            if (!strcmp(name, "deadletters"))
                deadletters = (int)r.entries[i];
        }
        ASSERT_EQ(keys, NKEYS);
        ASSERT_EQ(outbox, 2);
        ASSERT_EQ(sources, 2);
        ASSERT_EQ(deadletters, 1);
        ASSERT(r.values >= NKEYS + 5);
        ASSERT(r.pages > 2);
    }
    /* and the open (which walks first) loads it */
    char err[512] = "";
    fp_store_t *st = fp_store_open(dir, MAP, "verify", err, sizeof err);
    ASSERT(st != NULL);
    fp_store_close(&st);
    s_rmdir(dir);
}

TEST(test_flipped_value_byte_names_table_and_key)
{
    const char *dir = s_newdir();
    s_make(dir);
    /* one byte inside the value of key-00123 */
    s_damage_all(dir, "VALUE-MARKER-00123", 3, 'X');
    fp_store_verify_t r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(fp_store_verify(dir, true, &r), FP_STORE_CORRUPT);
    if (!strstr(r.problem, "keys") || !strstr(r.problem, "key-00123"))
        fprintf(stderr, "problem: %s\n", r.problem);
    ASSERT(strstr(r.problem, "keys") != NULL);
    ASSERT(strstr(r.problem, "key-00123") != NULL);
    s_refused_by_open(dir, "key-00123");
    s_rmdir(dir);
}

TEST(test_zeroed_data_page_is_refused_not_a_crash)
{
    const char *dir = s_newdir();
    s_make(dir);
    /* every page holding a copy of key-00300's value (the live one among them) */
    long psize = sysconf(_SC_PAGESIZE); /* LMDB's page size is the OS page */
    char *zero = calloc(1, (size_t)psize);
    ASSERT(zero != NULL);
    size_t len;
    char *buf = s_read(dir, &len);
    const char *needle = "VALUE-MARKER-00300";
    for (size_t i = 0; i + strlen(needle) <= len; i++)
        if (!memcmp(buf + i, needle, strlen(needle)))
            s_write_at(dir, i / (size_t)psize * (size_t)psize, zero, (size_t)psize);
    free(buf);
    free(zero);
    fp_store_verify_t r;
    memset(&r, 0, sizeof r);
    /* in a child: whatever LMDB makes of a page of zeros ends the child */
    ASSERT_EQ(fp_store_verify(dir, true, &r), FP_STORE_CORRUPT);
    ASSERT(r.problem[0] != '\0');
    s_refused_by_open(dir, "");
    s_rmdir(dir);
}

TEST(test_cut_file_and_foreign_file)
{
    const char *dir = s_newdir();
    s_make(dir);
    fp_store_verify_t r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(fp_store_verify(dir, true, &r), 0);
    uint64_t need = r.pages * r.psize;
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    ASSERT_EQ(truncate(path, (off_t)(need - r.psize)), 0);
    memset(&r, 0, sizeof r);
    ASSERT_EQ(fp_store_verify(dir, true, &r), FP_STORE_CORRUPT);
    ASSERT(strstr(r.problem, "truncated") != NULL);
    s_rmdir(dir);

    /* no state at all: cannot walk, not "damaged" */
    dir = s_newdir();
    memset(&r, 0, sizeof r);
    int rc = fp_store_verify(dir, true, &r);
    ASSERT(rc < 0);
    ASSERT(rc != FP_STORE_CORRUPT);
    ASSERT(r.problem[0] != '\0');
    /* a file that is not LMDB's */
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    for (int i = 0; i < 4 * 4096; i++)
        fputc('x', f);
    fclose(f);
    memset(&r, 0, sizeof r);
    rc = fp_store_verify(dir, true, &r);
    ASSERT(rc < 0);
    ASSERT(r.problem[0] != '\0');
    s_rmdir(dir);
}

/* A free-list entry changed into the number of a page in use (here: the
   main table's root) while the counts still add up (the page it named is
   then on no list): every entry still walks clean, so only the page
   accounting by page number sees it. Accepted, the next commit would
   hand the page out as new and overwrite it (t_state_verify.py's "16 bits
   in page 6": an outbox leaf overwritten, a hole of 81 events). */
TEST(test_free_list_naming_a_page_in_use_is_refused)
{
    const char *dir = s_newdir();
    s_make(dir);
    size_t len;
    uint8_t *buf = (uint8_t *)s_read(dir, &len);
    long psize = sysconf(_SC_PAGESIZE);
    /* LMDB's meta record after the 16-byte page header: the free list's
       and the main table's MDB_db (48 bytes each, md_root at 40) at 24,
       mm_txnid at 128 */
    uint64_t txn[2], free_root, main_root;
    for (int i = 0; i < 2; i++)
        memcpy(&txn[i], buf + (size_t)i * (size_t)psize + 16 + 128, 8);
    const uint8_t *meta = buf + (txn[1] > txn[0] ? (size_t)psize : 0) + 16;
    memcpy(&free_root, meta + 24 + 40, 8);
    memcpy(&main_root, meta + 24 + 48 + 40, 8);
    ASSERT(free_root != UINT64_MAX);
    /* the free list's root is its only leaf: its first node's value is a
       count and then the free pages; the first of them becomes main's root */
    const uint8_t *leaf = buf + free_root * (size_t)psize;
    uint16_t flags, at, ks;
    memcpy(&flags, leaf + 10, 2);
    ASSERT(flags & 0x02);
    memcpy(&at, leaf + 16, 2);
    memcpy(&ks, leaf + at + 6, 2);
    size_t count_off = free_root * (size_t)psize + at + 8 + ks;
    uint64_t count, was;
    memcpy(&count, buf + count_off, 8);
    ASSERT(count >= 1);
    memcpy(&was, buf + count_off + 8, 8);
    ASSERT(was != main_root);
    free(buf);
    fp_store_verify_t r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(fp_store_verify(dir, true, &r), 0);
    s_write_at(dir, count_off + 8, &main_root, 8);
    memset(&r, 0, sizeof r);
    ASSERT_EQ(fp_store_verify(dir, true, &r), FP_STORE_CORRUPT);
    char want[96];
    snprintf(want, sizeof want, "page %llu is in (main) and in (free list)",
             (unsigned long long)main_root);
    if (!strstr(r.problem, want))
        fprintf(stderr, "problem: %s\n", r.problem);
    ASSERT(strstr(r.problem, want) != NULL);
    s_refused_by_open(dir, want);
    s_rmdir(dir);
}

/* ---- the page accounting alone (fp_store_verify_claim_trees) ---- */

#define PS 128

/* Page pgno of map as a branch (children) or a leaf (one node with key
   "k" and flags nf, data bytes d[0..dn)). */
static void s_page(uint8_t *map, uint64_t pgno, bool branch, const uint64_t *children, int nc,
                   uint16_t nf, const uint8_t *d, uint16_t dn)
{
    uint8_t *p = map + pgno * PS;
    memset(p, 0, PS);
    uint16_t upper = PS, lower = 16;
    int n = branch ? nc : 1;
    for (int i = 0; i < n; i++) {
        uint16_t len = (uint16_t)(8 + 1 + (branch ? 0 : dn));
        upper = (uint16_t)(upper - len - (len & 1));
        uint8_t *node = p + upper;
        uint64_t c = branch ? children[i] : 0;
        uint16_t h[4] = {branch ? (uint16_t)c : dn, branch ? (uint16_t)(c >> 16) : 0,
                         branch ? (uint16_t)(c >> 32) : nf, 1};
        memcpy(node, h, 8);
        node[8] = 'k';
        if (!branch)
            memcpy(node + 9, d, dn);
        memcpy(p + lower, &upper, 2);
        lower += 2;
    }
    uint16_t flags = branch ? 1 : 2;
    memcpy(p, &pgno, 8);
    memcpy(p + 10, &flags, 2);
    memcpy(p + 12, &lower, 2);
    memcpy(p + 14, &upper, 2);
}

TEST(test_page_accounting_by_hand)
{
    uint8_t map[8 * PS], own[8];
    memset(map, 0, sizeof map);
    const uint8_t xyz[3] = {'x', 'y', 'z'};
    uint64_t kids[2] = {4, 5}, ov = 6;
    s_page(map, 2, false, NULL, 0, 0, xyz, 3);
    s_page(map, 3, true, kids, 2, 0, NULL, 0);
    s_page(map, 4, false, NULL, 0, 0, xyz, 1);
    s_page(map, 5, false, NULL, 0, 0x01 /* F_BIGDATA */, (const uint8_t *)&ov, 8);
    uint8_t *o6 = map + 6 * PS;
    uint16_t ovf = 0x04;
    uint32_t count = 2;
    memcpy(o6, &ov, 8);
    memcpy(o6 + 10, &ovf, 2);
    memcpy(o6 + 12, &count, 4);
    fp_store_verify_t r;
    memset(&r, 0, sizeof r);
    /* the free-list tree at 2, the main table at 3: every page held once */
    uint64_t roots[3] = {2, 3, 4};
    ASSERT_EQ(fp_store_verify_claim_trees(map, 8, PS, roots, 2, own, &r), 0);
    ASSERT_EQ(r.problem[0], '\0');
    for (int pg = 2; pg < 8; pg++)
        ASSERT(own[pg] != 0);
    ASSERT(own[2] != own[3] && own[3] == own[4] && own[4] == own[7]);
    /* a table rooted at a page the main table holds */
    ASSERT_EQ(fp_store_verify_claim_trees(map, 8, PS, roots, 3, own, &r), FP_STORE_CORRUPT);
    ASSERT(strstr(r.problem, "page 4 is in (main) and in ") != NULL);
    /* (one root from here on: the free-list tree's) a branch naming a meta page */
    uint64_t meta = 1;
    s_page(map, 3, true, &meta, 1, 0, NULL, 0);
    ASSERT_EQ(fp_store_verify_claim_trees(map, 8, PS, roots + 1, 1, own, &r), FP_STORE_CORRUPT);
    ASSERT(strstr(r.problem, "page 1 is in (meta)") != NULL);
    /* a child outside the file, a page that does not name itself, an overflow run past the end */
    uint64_t far = 8;
    s_page(map, 3, true, &far, 1, 0, NULL, 0);
    ASSERT_EQ(fp_store_verify_claim_trees(map, 8, PS, roots + 1, 1, own, &r), FP_STORE_CORRUPT);
    ASSERT(strstr(r.problem, "outside the file") != NULL);
    s_page(map, 3, true, kids, 2, 0, NULL, 0);
    uint64_t wrong = 9;
    memcpy(map + 4 * PS, &wrong, 8);
    ASSERT_EQ(fp_store_verify_claim_trees(map, 8, PS, roots + 1, 1, own, &r), FP_STORE_CORRUPT);
    ASSERT(strstr(r.problem, "page 4 of (free list tree) has an impossible header") != NULL);
    memcpy(map + 4 * PS, &kids[0], 8);
    count = 3;
    memcpy(o6 + 12, &count, 4);
    ASSERT_EQ(fp_store_verify_claim_trees(map, 8, PS, roots + 1, 1, own, &r), FP_STORE_CORRUPT);
    ASSERT(strstr(r.problem, "names page 8, outside") != NULL);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_clean_walk_counts_every_table);
    RUN(test_flipped_value_byte_names_table_and_key);
    RUN(test_zeroed_data_page_is_refused_not_a_crash);
    RUN(test_cut_file_and_foreign_file);
    RUN(test_free_list_naming_a_page_in_use_is_refused);
    RUN(test_page_accounting_by_hand);
    return test_done();
}
