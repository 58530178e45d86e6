/*  verify.c - the full walk of a state file in a child process. See
    verify.h for what it checks and why it forks.
*/
#include "verify.h"

#include "outbox.h"
#include "store.h"
#include "store_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

_Static_assert(FP_STORE_VERIFY_TABLES == FP_STORE_NDBS, "one entry per table");

const char *fp_store_verify_table(int i)
{
    return i >= 0 && i < FP_STORE_NDBS ? fp_store_db_names[i] : "?";
}

/* The first problem only: it names where the walk stopped. */
static int s_bad(fp_store_verify_t *r, const char *fmt, ...)
{
    if (!r->problem[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->problem, sizeof r->problem, fmt, ap);
        va_end(ap);
    }
    return FP_STORE_CORRUPT;
}

/* A key for a message: printable bytes as they are, others as \xNN, cut. */
static const char *s_key_text(const MDB_val *k, char *out, size_t cap)
{
    size_t o = 0;
    const uint8_t *p = k->mv_data;
    for (size_t i = 0; i < k->mv_size && o + 5 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\' ? "%c"
                                                                                          : "\\x%02x",
                              p[i]);
    out[o < cap ? o : cap - 1] = '\0';
    return out;
}

static void s_assert(MDB_env *env, const char *msg)
{
    fp_store_verify_t *r = mdb_env_get_userctx(env);
    if (r)
        snprintf(r->assert_msg, sizeof r->assert_msg, "%s", msg);
}

/* Who holds a page (s_walk_pages): none yet, a table, LMDB's main table
   or free-list tree, the free list itself, a meta page. */
enum { S_OWN_NONE = 0, S_OWN_MAIN = FP_STORE_NDBS + 1, S_OWN_FREETREE, S_OWN_FREE, S_OWN_META };

static const char *s_owner_name(uint8_t o)
{
    return o >= 1 && o <= FP_STORE_NDBS ? fp_store_db_names[o - 1]
           : o == S_OWN_MAIN            ? "(main)"
           : o == S_OWN_FREETREE        ? "(free list tree)"
           : o == S_OWN_FREE            ? "(free list)"
           : o == S_OWN_META            ? "(meta)"
                                        : "(none)";
}

/* Claims page pg for owner o: a page held twice (a free-list entry that
   names a page in use, a tree that shares a page) is damage LMDB would
   act on at the next commit: it hands a free page out as new and
   overwrites it. */
static int s_claim(fp_store_verify_t *r, uint8_t *own, uint64_t pg, uint8_t o)
{
    if (pg >= r->pages)
        return s_bad(r, "page accounting: %s names page %llu, outside the file's %llu",
                     s_owner_name(o), (unsigned long long)pg, (unsigned long long)r->pages);
    if (own[pg] != S_OWN_NONE)
        return s_bad(r, "page accounting: page %llu is in %s and in %s", (unsigned long long)pg,
                     s_owner_name(own[pg]), s_owner_name(o));
    own[pg] = o;
    return 0;
}

/* The free list (LMDB's table 0): txnid -> a list of page numbers (a
   count, then the pages); own (may be NULL) claims each of them. */
static int s_walk_free(MDB_txn *txn, fp_store_verify_t *r, uint8_t *own)
{
    MDB_cursor *cur;
    snprintf(r->table, sizeof r->table, "(free list)");
    r->at = 0;
    int rc = mdb_cursor_open(txn, 0, &cur);
    if (rc != 0)
        return s_bad(r, "free list: %s", mdb_strerror(rc));
    MDB_val k, d;
    MDB_cursor_op op = MDB_FIRST;
    while ((rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
        op = MDB_NEXT;
        r->at++;
        size_t w = sizeof(size_t);
        if (k.mv_size != w || d.mv_size < w || d.mv_size % w) {
            rc = s_bad(r, "free list: entry %llu has an impossible layout",
                       (unsigned long long)r->at);
            break;
        }
        size_t n;
        memcpy(&n, d.mv_data, w);
        if (d.mv_size / w != n + 1) {
            rc = s_bad(r, "free list: entry %llu counts %zu pages in %zu bytes",
                       (unsigned long long)r->at, n, d.mv_size);
            break;
        }
        for (size_t i = 1; i <= n; i++) {
            size_t pg;
            memcpy(&pg, (const uint8_t *)d.mv_data + i * w, w);
            if (pg < 2 || pg >= r->pages) {
                mdb_cursor_close(cur);
                return s_bad(r, "free list: entry %llu names page %zu, outside the file's %llu",
                             (unsigned long long)r->at, pg, (unsigned long long)r->pages);
            }
            if (own && s_claim(r, own, pg, S_OWN_FREE) != 0) {
                mdb_cursor_close(cur);
                return FP_STORE_CORRUPT;
            }
        }
        r->free_pages += n;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        return 0;
    return rc == FP_STORE_CORRUPT ? rc : s_bad(r, "free list: %s", mdb_strerror(rc));
}

/* meta's fixed records. */
static int s_check_meta(fp_store_verify_t *r, const MDB_val *k, const MDB_val *d,
                        uint8_t *digest)
{
    static const char *const u64[] = {"created_ns", "round", "global_seq", "dl_seq",
                                      "trimmed_ns"};
    for (size_t i = 0; i < sizeof u64 / sizeof u64[0]; i++)
        if (k->mv_size == strlen(u64[i]) && !memcmp(k->mv_data, u64[i], k->mv_size)) {
            if (d->mv_size != 8)
                return s_bad(r, "table meta: record %s has %zu bytes, not 8", u64[i], d->mv_size);
            if (i == 1)
                r->round = fp_store_dec64(d->mv_data);
            if (i == 2)
                r->global_seq = fp_store_dec64(d->mv_data);
        }
    if (k->mv_size == 7 && !memcmp(k->mv_data, "version", 7)) {
        if (d->mv_size != 4)
            return s_bad(r, "table meta: record version has %zu bytes", d->mv_size);
        r->version = fp_store_dec32(d->mv_data);
    }
    if (digest && k->mv_size == 6 && !memcmp(k->mv_data, FP_STORE_DIGEST_NAME, 6)) {
        if (d->mv_size != FP_STORE_DIGEST_BYTES)
            return s_bad(r, "table meta: record digest has %zu bytes", d->mv_size);
        memcpy(digest, d->mv_data, FP_STORE_DIGEST_BYTES);
        digest[FP_STORE_DIGEST_BYTES] = 1;
    }
    return 0;
}

/* One table: order, checksums, counts, layouts; its digest into *dig. */
static int s_walk_table(MDB_txn *txn, int db, MDB_dbi dbi, fp_store_verify_t *r,
                        fp_store_digest_t *dig, uint8_t *digest, uint64_t *pages)
{
    const char *name = fp_store_db_names[db];
    snprintf(r->table, sizeof r->table, "%s", name);
    r->at = 0;
    MDB_stat st;
    int rc = mdb_stat(txn, dbi, &st);
    if (rc != 0)
        return s_bad(r, "table %s: %s", name, mdb_strerror(rc));
    *pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, dbi, &cur)) != 0)
        return s_bad(r, "table %s: %s", name, mdb_strerror(rc));
    MDB_val k, d, prev = {0, NULL};
    uint8_t prevbuf[FP_STORE_KEY_MAX + 1];
    char kt[160];
    MDB_cursor_op op = MDB_FIRST;
    uint64_t last_gseq = 0;
    while ((rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
        op = MDB_NEXT;
        r->at++;
        r->bytes += k.mv_size + d.mv_size;
        if (k.mv_size == 0 || k.mv_size > FP_STORE_KEY_MAX) {
            rc = s_bad(r, "table %s: entry %llu has a key of %zu bytes", name,
                       (unsigned long long)r->at, k.mv_size);
            break;
        }
        if (prev.mv_data && mdb_cmp(txn, dbi, &prev, &k) >= 0) {
            rc = s_bad(r, "table %s: key %s out of order (entry %llu)", name,
                       s_key_text(&k, kt, sizeof kt), (unsigned long long)r->at);
            break;
        }
        memcpy(prevbuf, k.mv_data, k.mv_size);
        prev = (MDB_val){k.mv_size, prevbuf};
        bool is_digest = db == FP_STORE_DB_META && k.mv_size == 6 &&
                         !memcmp(k.mv_data, FP_STORE_DIGEST_NAME, 6);
        if (r->sums) {
            MDB_val v = d;
            if (fp_store_unseal(db, &k, &v) != 0) {
                rc = s_bad(r, "table %s: key %s: checksum mismatch (entry %llu)", name,
                           s_key_text(&k, kt, sizeof kt), (unsigned long long)r->at);
                break;
            }
            r->values++;
            if (!is_digest) {
                dig->entries++;
                dig->sum += fp_store_dec32((const uint8_t *)d.mv_data + v.mv_size);
            }
            d = v;
        } else if (!is_digest) {
            dig->entries++;
        }
        if (db == FP_STORE_DB_META && (rc = s_check_meta(r, &k, &d, digest)) != 0)
            break;
        if ((db == FP_STORE_DB_SOURCES || db == FP_STORE_DB_OUTBOX || db == FP_STORE_DB_DEAD) &&
            k.mv_size != 8) {
            rc = s_bad(r, "table %s: entry %llu has a key of %zu bytes, not 8", name,
                       (unsigned long long)r->at, k.mv_size);
            break;
        }
        if (db == FP_STORE_DB_FEEDS && d.mv_size != 8) {
            rc = s_bad(r, "table feeds: topic %s has a value of %zu bytes",
                       s_key_text(&k, kt, sizeof kt), d.mv_size);
            break;
        }
        if (db == FP_STORE_DB_OUTBOX) {
            int64_t wall;
            uint64_t round, g = fp_store_dec64(k.mv_data);
            const char *topic;
            const void *ev;
            size_t tl, el;
            if (fp_outbox_event_parse(d.mv_data, d.mv_size, &wall, &round, &topic, &tl, &ev,
                                      &el) != 0) {
                rc = s_bad(r, "table outbox: event %llu has an impossible layout",
                           (unsigned long long)g);
                break;
            }
            if (last_gseq && g != last_gseq + 1) {
                rc = s_bad(r, "table outbox: a hole between events %llu and %llu",
                           (unsigned long long)last_gseq, (unsigned long long)g);
                break;
            }
            last_gseq = g;
        }
        if (db == FP_STORE_DB_READERS) {
            uint64_t pos, aux[2];
            uint32_t fl;
            int64_t ns;
            if (fp_outbox_reader_parse(k.mv_data, k.mv_size, d.mv_data, d.mv_size, &pos, &fl,
                                       &ns, aux) != 0) {
                rc = s_bad(r, "table readers: reader %s has an impossible layout",
                           s_key_text(&k, kt, sizeof kt));
                break;
            }
        }
        if (db == FP_STORE_DB_RESUBMITS && (k.mv_size != 24 || d.mv_size != 32)) {
            rc = s_bad(r, "table resubmits: entry %llu has an impossible layout",
                       (unsigned long long)r->at);
            break;
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return rc == FP_STORE_CORRUPT ? rc
                                      : s_bad(r, "table %s: after entry %llu: %s", name,
                                              (unsigned long long)r->at, mdb_strerror(rc));
    if (r->at != st.ms_entries)
        return s_bad(r, "table %s: %llu entries reached, its record says %llu", name,
                     (unsigned long long)r->at, (unsigned long long)st.ms_entries);
    r->entries[db] = r->at;
    if (db == FP_STORE_DB_OUTBOX && last_gseq > r->global_seq)
        return s_bad(r, "table outbox: ends at event %llu, past meta global_seq %llu",
                     (unsigned long long)last_gseq, (unsigned long long)r->global_seq);
    return 0;
}

/* LMDB's on-disk layout (0.9, data format 1, 64-bit), read by hand: the
   page header (pgno, pad, flags, lower/upper or an overflow's page
   count), the nodes (lo, hi, flags, key size; a branch node's child page
   is lo | hi << 16 | flags << 32), the meta record after the header. */
#define S_PAGEHDR 16
#define S_NODEHDR 8
#define S_P_BRANCH 0x01
#define S_P_LEAF 0x02
#define S_P_OVERFLOW 0x04
#define S_F_BIGDATA 0x01
#define S_META_DBS 24      /* mm_dbs[2] (free list, main) in the meta record */
#define S_META_TXNID 128   /* mm_txnid */
#define S_DB_BYTES 48      /* sizeof(MDB_db) */
#define S_DB_ROOT 40       /* md_root in an MDB_db */
#define S_NO_PAGE UINT64_MAX

static uint16_t s_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t s_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Claims every page of the tree at root for owner o: branch and leaf
   pages, and the overflow pages of big values. stack holds r->pages page
   numbers (a page is pushed once: it is claimed when pushed). */
static int s_claim_tree(const uint8_t *map, fp_store_verify_t *r, uint8_t *own, uint64_t *stack,
                        uint64_t root, uint8_t o)
{
    if (root == S_NO_PAGE)
        return 0;
    size_t ps = (size_t)r->psize, top = 0;
    if (s_claim(r, own, root, o) != 0)
        return FP_STORE_CORRUPT;
    stack[top++] = root;
    while (top > 0) {
        uint64_t pg = stack[--top];
        const uint8_t *p = map + pg * ps;
        uint16_t flags = s_u16(p + 10), lower = s_u16(p + 12), upper = s_u16(p + 14);
        if (s_u64(p) != pg || !(flags & (S_P_BRANCH | S_P_LEAF)) || lower < S_PAGEHDR ||
            lower > upper || upper > ps || (lower - S_PAGEHDR) % 2)
            return s_bad(r, "page accounting: page %llu of %s has an impossible header",
                         (unsigned long long)pg, s_owner_name(o));
        for (size_t i = 0; i < (size_t)(lower - S_PAGEHDR) / 2; i++) {
            size_t at = s_u16(p + S_PAGEHDR + 2 * i);
            if (at < upper || at + S_NODEHDR > ps ||
                at + S_NODEHDR + s_u16(p + at + 6) > ps)
                return s_bad(r, "page accounting: page %llu of %s has an impossible node",
                             (unsigned long long)pg, s_owner_name(o));
            const uint8_t *n = p + at;
            uint16_t lo = s_u16(n), hi = s_u16(n + 2), nf = s_u16(n + 4), ks = s_u16(n + 6);
            uint64_t child;
            if (flags & S_P_BRANCH) {
                child = (uint64_t)lo | (uint64_t)hi << 16 | (uint64_t)nf << 32;
                if (s_claim(r, own, child, o) != 0)
                    return FP_STORE_CORRUPT;
                stack[top++] = child;
                continue;
            }
            if (!(nf & S_F_BIGDATA))
                continue;
            if (at + S_NODEHDR + ks + 8 > ps)
                return s_bad(r, "page accounting: page %llu of %s has an impossible node",
                             (unsigned long long)pg, s_owner_name(o));
            child = s_u64(n + S_NODEHDR + ks);
            if (child >= r->pages || s_u64(map + child * ps) != child ||
                !(s_u16(map + child * ps + 10) & S_P_OVERFLOW))
                return s_bad(r, "page accounting: page %llu of %s names no overflow page",
                             (unsigned long long)pg, s_owner_name(o));
            uint32_t count;
            memcpy(&count, map + child * ps + 12, sizeof count);
            for (uint64_t j = 0; j < count; j++)
                if (s_claim(r, own, child + j, o) != 0)
                    return FP_STORE_CORRUPT;
        }
    }
    return 0;
}

int fp_store_verify_claim_trees(const uint8_t *map, uint64_t pages, uint64_t psize,
                                const uint64_t *roots, int nroots, uint8_t *own,
                                fp_store_verify_t *r)
{
    assert(map && own && r && pages >= 2 && psize >= 64 && (roots || nroots == 0));
    r->pages = pages;
    r->psize = psize;
    r->problem[0] = '\0';
    memset(own, S_OWN_NONE, (size_t)pages);
    own[0] = own[1] = S_OWN_META;
    uint64_t *stack = malloc((size_t)pages * sizeof *stack);
    if (!stack)
        return -ENOMEM;
    int rc = 0;
    for (int i = 0; rc == 0 && i < nroots; i++)
        rc = s_claim_tree(map, r, own, stack, roots[i],
                          i == 0 ? S_OWN_FREETREE
                          : i == 1 ? S_OWN_MAIN
                                   : (uint8_t)(1 + (i - 2) % FP_STORE_NDBS));
    free(stack);
    return rc;
}

/* The free list's and the main table's roots of txn's snapshot, read
   from its meta page right after the txn began (a running floorpost
   overwrites that page two commits later; the pages of the snapshot stay
   while the txn is open). known false: no meta page names the txn (the
   file changed under the read, `state verify` beside a busy floorpost). */
typedef struct {
    bool known;
    uint64_t free_root, main_root;
} s_roots_t;

static s_roots_t s_read_roots(const char *path, MDB_txn *txn, size_t psize)
{
    s_roots_t out = {false, S_NO_PAGE, S_NO_PAGE};
    uint8_t m[S_PAGEHDR + S_META_TXNID + 8];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return out;
    for (int i = 0; i < 2 && !out.known; i++)
        if (pread(fd, m, sizeof m, (off_t)((size_t)i * psize)) == (ssize_t)sizeof m &&
            s_u64(m + S_PAGEHDR + S_META_TXNID) == mdb_txn_id(txn)) {
            out.known = true;
            out.free_root = s_u64(m + S_PAGEHDR + S_META_DBS + S_DB_ROOT);
            out.main_root = s_u64(m + S_PAGEHDR + S_META_DBS + S_DB_BYTES + S_DB_ROOT);
        }
    close(fd);
    return out;
}

/* Every page of the snapshot held exactly once: by a meta record, a tree
   (each table's, the main table's, the free list's) or the free list.
   The counts alone (2 meta + tree + free pages = the file's) miss a
   free-list entry changed into the number of a page in use: a damaged
   state the walk of the entries cannot see, and that the next commit
   breaks for good (LMDB hands the page out as new and overwrites it: an
   outbox leaf lost, a hole). The trees are read from the file as the
   snapshot left them (txn's, which LMDB keeps from any writer). */
static int s_walk_pages(const char *path, MDB_txn *txn, MDB_dbi main_dbi, s_roots_t roots,
                        fp_store_verify_t *r)
{
    if (!roots.known)
        return 0; /* the counts stand */
    int rc = 0;
    size_t len = (size_t)(r->pages * r->psize);
    uint8_t *own = calloc((size_t)r->pages, 1);
    uint64_t *stack = malloc((size_t)r->pages * sizeof *stack);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    const uint8_t *map = fd < 0 ? MAP_FAILED : mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (fd >= 0)
        close(fd);
    if (!own || !stack || map == MAP_FAILED) {
        snprintf(r->problem, sizeof r->problem, "page accounting: %s",
                 map == MAP_FAILED ? strerror(errno) : "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    snprintf(r->table, sizeof r->table, "(pages)");
    own[0] = own[1] = S_OWN_META;
    if ((rc = s_claim_tree(map, r, own, stack, roots.free_root, S_OWN_FREETREE)) != 0 ||
        (rc = s_claim_tree(map, r, own, stack, roots.main_root, S_OWN_MAIN)) != 0)
        goto out;
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, main_dbi, &cur)) != 0) {
        rc = s_bad(r, "main table: %s", mdb_strerror(rc));
        goto out;
    }
    MDB_val k, d;
    MDB_cursor_op op = MDB_FIRST;
    while (rc == 0 && mdb_cursor_get(cur, &k, &d, op) == 0) {
        op = MDB_NEXT;
        for (int i = 0; i < FP_STORE_NDBS; i++)
            if (k.mv_size == strlen(fp_store_db_names[i]) &&
                !memcmp(k.mv_data, fp_store_db_names[i], k.mv_size)) {
                if (d.mv_size != S_DB_BYTES)
                    rc = s_bad(r, "main table: table %s has a record of %zu bytes",
                               fp_store_db_names[i], d.mv_size);
                else
                    rc = s_claim_tree(map, r, own, stack,
                                      s_u64((const uint8_t *)d.mv_data + S_DB_ROOT),
                                      (uint8_t)(i + 1));
                break;
            }
    }
    mdb_cursor_close(cur);
    r->free_pages = 0; /* counted again */
    if (rc != 0 || (rc = s_walk_free(txn, r, own)) != 0)
        goto out;
    for (uint64_t pg = 2; pg < r->pages; pg++)
        if (own[pg] == S_OWN_NONE) {
            rc = s_bad(r, "page accounting: page %llu is in no tree and not on the free list",
                       (unsigned long long)pg);
            goto out;
        }
out:
    if (map != MAP_FAILED && map)
        munmap((void *)map, len);
    free(stack);
    free(own);
    return rc;
}

/* The walk itself (in the child, or in-process). */
static int s_walk(const char *dir, fp_store_verify_t *r)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat fst;
    if (stat(path, &fst) != 0) {
        snprintf(r->problem, sizeof r->problem, "%s", strerror(errno));
        return -errno;
    }
    if (fst.st_size == 0)
        return s_bad(r, "empty file (truncated?)");
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, 16);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(env, 512); /* floorpost's own setting (store.c) */
    if (rc != 0) {
        snprintf(r->problem, sizeof r->problem, "%s", mdb_strerror(rc));
        mdb_env_close(env);
        return fp_store_lmdb_rc(rc);
    }
    mdb_env_set_userctx(env, r);
    mdb_env_set_assert(env, s_assert);
    rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0640);
    if (rc == EACCES || rc == EROFS) {
        /* A read-only copy: lock.mdb cannot be made or written. Nothing
           else writes a backup copy, so the lock is not needed. */
        r->nolock = true;
        rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS | MDB_NOLOCK, 0640);
    }
    if (rc != 0) {
        mdb_env_close(env);
        if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
            return s_bad(r, "not a floorpost state file, or an LMDB meta page is damaged (%s)",
                         mdb_strerror(rc));
        snprintf(r->problem, sizeof r->problem, "cannot open: %s", mdb_strerror(rc));
        return fp_store_lmdb_rc(rc);
    }
    MDB_envinfo info;
    MDB_stat est;
    mdb_env_info(env, &info);
    mdb_env_stat(env, &est);
    r->txnid = info.me_last_txnid;
    r->pages = (uint64_t)info.me_last_pgno + 1;
    r->psize = est.ms_psize;
    /* Before any page but the meta pages is read: a page past the end of
       the file would be a SIGBUS. */
    if ((uint64_t)fst.st_size < r->pages * r->psize) {
        mdb_env_close(env);
        return s_bad(r, "not a floorpost state file (truncated: %llu bytes, the last commit needs %llu)",
                     (unsigned long long)fst.st_size, (unsigned long long)(r->pages * r->psize));
    }
    rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        mdb_env_close(env);
        return s_bad(r, "cannot begin a read: %s", mdb_strerror(rc));
    }
    s_roots_t roots = s_read_roots(path, txn, (size_t)r->psize);
    /* The main table: where LMDB keeps the named tables. Only ours. */
    MDB_dbi main_dbi;
    MDB_cursor *cur;
    uint64_t tree_pages = 0;
    int found = 0;
    snprintf(r->table, sizeof r->table, "(main)");
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc == 0)
        rc = mdb_cursor_open(txn, main_dbi, &cur);
    if (rc != 0) {
        rc = s_bad(r, "main table: %s", mdb_strerror(rc));
        goto out;
    }
    MDB_val k, d;
    MDB_cursor_op op = MDB_FIRST;
    char kt[160] = "";
    while ((rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
        op = MDB_NEXT;
        int i = 0;
        while (i < FP_STORE_NDBS && (k.mv_size != strlen(fp_store_db_names[i]) ||
                                     memcmp(k.mv_data, fp_store_db_names[i], k.mv_size)))
            i++;
        if (i == FP_STORE_NDBS) {
            if (!kt[0])
                s_key_text(&k, kt, sizeof kt);
            continue;
        }
        r->present[i] = true;
        found++;
    }
    /* a read txn's cursor outlives the txn's end: closed before any exit */
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND && !r->present[FP_STORE_DB_META]) {
        rc = s_bad(r, "not a floorpost state file (an LMDB file without floorpost meta)");
        goto out;
    }
    if (rc == MDB_NOTFOUND && kt[0]) {
        rc = s_bad(r, "main table: an entry %s that is no floorpost table", kt);
        goto out;
    }
    if (rc != MDB_NOTFOUND) {
        if (rc != FP_STORE_CORRUPT)
            rc = s_bad(r, "main table: %s", mdb_strerror(rc));
        goto out;
    }
    MDB_stat st;
    if ((rc = mdb_stat(txn, main_dbi, &st)) != 0 || st.ms_entries != (size_t)found) {
        rc = s_bad(r, "main table: %d tables reached, its record says %zu", found + (kt[0] != 0),
                   rc ? 0 : st.ms_entries);
        goto out;
    }
    tree_pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    /* meta first: the version says whether the values carry checksums. */
    MDB_dbi dbis[FP_STORE_NDBS];
    for (int i = 0; i < FP_STORE_NDBS; i++) {
        if (r->present[i] && (rc = mdb_dbi_open(txn, fp_store_db_names[i], 0, &dbis[i])) != 0) {
            rc = s_bad(r, "table %s: %s", fp_store_db_names[i], mdb_strerror(rc));
            goto out;
        }
    }
    {
        MDB_val vk = {7, "version"};
        if ((rc = mdb_get(txn, dbis[FP_STORE_DB_META], &vk, &d)) != 0) {
            rc = s_bad(r, "table meta: no version record (%s)", mdb_strerror(rc));
            goto out;
        }
        r->sums = d.mv_size == 4 + FP_STORE_SUM_BYTES;
    }
    fp_store_digest_t dig[FP_STORE_NDBS] = {{0, 0}};
    uint8_t digest[FP_STORE_DIGEST_BYTES + 1] = {0};
    for (int i = 0; i < FP_STORE_NDBS; i++)
        if (r->present[i] &&
            (rc = s_walk_table(txn, i, dbis[i], r, &dig[i], digest, &tree_pages)) != 0)
            goto out;
    if (r->sums != (r->version >= 5)) {
        rc = s_bad(r, "table meta: format version %u %s checksums", r->version,
                   r->sums ? "with" : "without");
        goto out;
    }
    if (r->sums) {
        if (!digest[FP_STORE_DIGEST_BYTES]) {
            rc = s_bad(r, "table meta: no digest record");
            goto out;
        }
        fp_store_digest_t want[FP_STORE_NDBS];
        fp_store_digest_dec(digest, want);
        for (int i = 0; i < FP_STORE_NDBS; i++)
            if (want[i].entries != dig[i].entries || want[i].sum != dig[i].sum) {
                rc = s_bad(r,
                           "table %s: %llu entries with checksum sum %016llx, the digest says "
                           "%llu and %016llx (a lost subtree or an older tree)",
                           fp_store_db_names[i], (unsigned long long)dig[i].entries,
                           (unsigned long long)dig[i].sum, (unsigned long long)want[i].entries,
                           (unsigned long long)want[i].sum);
                goto out;
            }
    }
    if ((rc = s_walk_free(txn, r, NULL)) != 0)
        goto out;
    if ((rc = mdb_stat(txn, 0, &st)) != 0) {
        rc = s_bad(r, "free list: %s", mdb_strerror(rc));
        goto out;
    }
    tree_pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    /* Every page is a meta page, a page of a tree or a free one (LMDB's own
       audit, mdb_audit, checks the same at each commit in a debug build). */
    if (2 + tree_pages + r->free_pages != r->pages) {
        rc = s_bad(r,
                   "page accounting: 2 meta + %llu tree + %llu free pages, the file has %llu",
                   (unsigned long long)tree_pages, (unsigned long long)r->free_pages,
                   (unsigned long long)r->pages);
        goto out;
    }
    if ((rc = s_walk_pages(path, txn, main_dbi, roots, r)) != 0)
        goto out;
    snprintf(r->table, sizeof r->table, "(done)");
    rc = 0;
out:
    if (txn)
        mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc;
}

int fp_store_verify(const char *dir, bool in_child, fp_store_verify_t *out)
{
    if (!in_child) {
        memset(out, 0, sizeof *out);
        int rc = s_walk(dir, out);
        out->done = 1;
        return rc;
    }
    /* The verdict comes back through a shared page: the child may die at
       any point, and what it wrote before stays readable. */
    fp_store_verify_t *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) {
        memset(out, 0, sizeof *out);
        snprintf(out->problem, sizeof out->problem, "cannot map the walk's page: %s",
                 strerror(errno));
        return -ENOMEM;
    }
    memset(r, 0, sizeof *r);
    int result = 0;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        munmap(r, sizeof *r);
        memset(out, 0, sizeof *out);
        snprintf(out->problem, sizeof out->problem, "cannot start the walk: fork: %s",
                 strerror(e));
        return -e;
    }
    if (pid == 0) {
        /* The child: a crash here is the verdict, not a report. Default
           handlers (a sanitizer's SEGV report would only repeat it). */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        int rc = s_walk(dir, r);
        r->done = 1;
        _exit(rc == 0 ? 0 : rc == FP_STORE_CORRUPT ? 1 : 2);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    *out = *r;
    munmap(r, sizeof *r);
    if (out->done && WIFEXITED(status)) {
        int code = WEXITSTATUS(status);
        result = code == 0 ? 0 : code == 1 ? FP_STORE_CORRUPT : -EIO;
        if (code == 2 && !out->problem[0])
            snprintf(out->problem, sizeof out->problem, "the walk failed");
        return result;
    }
    /* It died: LMDB asserted (abort) or read a wild pointer. */
    char how[64];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof how, "exit %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    out->problem[0] = '\0';
    s_bad(out, "the walk stopped in table %s after entry %llu: %s%s%s (a damaged page)",
          out->table[0] ? out->table : "(open)", (unsigned long long)out->at, how,
          out->assert_msg[0] ? ", LMDB: " : "", out->assert_msg);
    return FP_STORE_CORRUPT;
}
