/*  verify.h - the full walk of a state file (DIR/data.mdb): every table,
    every value's checksum, each table's digest, the tree's order and
    counts, the free list and the page accounting. fp_store_open runs it
    before it loads anything; `floorpost state verify` runs it for
    operators and backups.

    LMDB checks no page: a damaged branch or leaf page can make it return
    garbage, fail an assertion (abort) or read outside the map (SIGSEGV).
    So the walk runs in a child process (fork): whatever LMDB does on a
    damaged page ends the child only, and the parent reports the damage
    with the table and the entry where the walk stopped. The child opens
    its own read-only env (never the caller's: LMDB envs do not survive a
    fork) and takes an LMDB read txn, so it may run beside a running
    floorpost; a directory where lock.mdb cannot be written (a read-only
    backup copy) is walked without LMDB's lock (MDB_NOLOCK).

    What a clean walk proves (for the last committed snapshot, the one
    LMDB opens): the file reaches its last page; every entry of every
    table is reached in strictly increasing key order, as many as the
    table's record says; every value's checksum matches (format 5); each
    table's entries and sum of checksums equal meta "digest" (so no
    subtree is lost and no table root points at an older tree); meta's
    records have their layout; the outbox has no holes and ends at meta
    global_seq; the free list names pages inside the file; and the pages
    of all trees plus the free pages plus the two meta pages are exactly
    the file's pages, each held once (the trees read page by page from
    the file in LMDB's on-disk layout: a free-list entry that names a page
    in use would be handed out as new and overwritten at the next commit).

    Thread contract: call from one thread with no fork-unsafe lock held by
    others that the child needs (the child uses malloc and LMDB only, and
    ends with _exit). Not async-signal-safe.
*/
#ifndef FP_STORE_VERIFY_H
#define FP_STORE_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#define FP_STORE_VERIFY_TABLES 9 /* store.h "On disk", in that order */

typedef struct {
    uint32_t version;    /* meta "version" (0 when unknown) */
    bool sums;           /* the values carry checksums (format 5 on) */
    bool nolock;         /* walked without LMDB's lock (read-only directory) */
    uint64_t txnid;      /* the LMDB transaction of the snapshot walked */
    uint64_t pages;      /* pages of the snapshot (last page + 1) */
    uint64_t free_pages; /* of them, on the free list */
    uint64_t psize;      /* bytes per page */
    uint64_t round, global_seq;
    uint64_t entries[FP_STORE_VERIFY_TABLES]; /* per table; 0 when absent */
    bool present[FP_STORE_VERIFY_TABLES];
    uint64_t values;     /* values whose checksum was checked */
    uint64_t bytes;      /* bytes of keys and values read */
    char problem[600];   /* the first damage found ("" when none) */
    /* the child's progress, for a report when it dies */
    char table[16];
    uint64_t at;         /* entries of that table walked so far */
    char assert_msg[200];
    int done;            /* 1: the walk ended and wrote its verdict */
} fp_store_verify_t;

/* Walks DIR/data.mdb. in_child: in a forked child (what fp_store_open and
   the verb do); false walks in this process (only for a file LMDB itself
   wrote, like the fuzz target's). Returns 0 (clean), FP_STORE_CORRUPT
   (damaged: r->problem says what and where), or another negative code
   (cannot walk: no such file, fork failed; r->problem says why). */
int fp_store_verify(const char *dir, bool in_child, fp_store_verify_t *r);

/* The page accounting's reading of LMDB pages by hand, alone (for
   fuzz/fuzz_verify.c and the unit tests): map holds pages x psize bytes
   (psize >= 64; pages >= 2, 0 and 1 the meta pages); the trees at
   roots[0] (the free-list tree), roots[1] (the main table) and roots[2..]
   (tables) are claimed page by page into own[pages] (which it clears
   first; UINT64_MAX: no tree). 0, FP_STORE_CORRUPT (r->problem says which
   page and why) or -ENOMEM. Sets r->pages and r->psize. */
int fp_store_verify_claim_trees(const uint8_t *map, uint64_t pages, uint64_t psize,
                                const uint64_t *roots, int nroots, uint8_t *own,
                                fp_store_verify_t *r);

/* The name of table i (0 .. FP_STORE_VERIFY_TABLES - 1). */
const char *fp_store_verify_table(int i);

#endif
