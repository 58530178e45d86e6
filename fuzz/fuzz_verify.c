/*  fuzz_verify.c - libFuzzer target for the state verification's reading
    of LMDB pages by hand (src/store/verify.c, the page accounting:
    fp_store_verify_claim_trees): a state file's pages as a damaged disk,
    a bad copy or a hostile backup would leave them. (The rest of the walk
    reads through LMDB, which checks no page and runs in a child process;
    fuzz_store.c covers the records LMDB hands out.)

    Input: byte 0 the page size, 64 << (b % 7) (64 .. 4096 bytes: small
    pages let one input hold many); byte 1 the number of tree roots
    (b % 12: the free-list tree, the main table, then tables); then each
    root as a little-endian u16 (0xffff: no tree); the rest is the file,
    cut to whole pages (at least 2, the meta pages), in a buffer of exactly
    that size (ASan sees any read past it).

    Invariants: 0 or FP_STORE_CORRUPT, never another code, a crash or a
    read outside the pages; a refusal says "page accounting: ..."; on 0
    every page is held by at most one owner (own[] is one byte a page),
    the meta pages by the meta, and every root is held and carries its own
    number in its header; the same input gives the same verdict and the
    same owners twice.

    Seeds: fuzz/seeds/verify/ (the first pages of a small state made by
    floorpost, with its roots; hand-made trees).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "store.h"
#include "verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint64_t psize = 64u << (data[0] % 7);
    int nroots = data[1] % 12;
    size_t at = 2;
    uint64_t roots[12];
    for (int i = 0; i < nroots; i++, at += 2) {
        if (at + 2 > size)
            return 0;
        uint16_t v = (uint16_t)(data[at] | data[at + 1] << 8);
        roots[i] = v == 0xffff ? UINT64_MAX : v;
    }
    uint64_t pages = (size - at) / psize;
    if (pages < 2)
        return 0;
    size_t len = (size_t)(pages * psize);
    uint8_t *map = malloc(len), *own = malloc((size_t)pages), *own2 = malloc((size_t)pages);
    if (!map || !own || !own2)
        abort();
    memcpy(map, data + at, len);
    fp_store_verify_t r, r2;
    memset(&r, 0, sizeof r);
    memset(&r2, 0, sizeof r2);
    int rc = fp_store_verify_claim_trees(map, pages, psize, roots, nroots, own, &r);
    FUZZ_CHECK(rc == 0 || rc == FP_STORE_CORRUPT);
    FUZZ_CHECK(r.pages == pages && r.psize == psize);
    if (rc != 0) {
        FUZZ_CHECK(strncmp(r.problem, "page accounting: ", 17) == 0);
    } else {
        FUZZ_CHECK(r.problem[0] == '\0');
        FUZZ_CHECK(own[0] == own[1] && own[0] != 0);
        for (uint64_t pg = 2; pg < pages; pg++)
            FUZZ_CHECK(own[pg] != own[0]); /* no tree holds a meta page */
        /* every root of a tree is held by it, and names itself */
        for (int i = 0; i < nroots; i++)
            if (roots[i] != UINT64_MAX) {
                FUZZ_CHECK(roots[i] < pages && own[roots[i]] != 0);
                uint64_t no;
                memcpy(&no, map + roots[i] * psize, sizeof no);
                FUZZ_CHECK(no == roots[i]);
            }
    }
    int rc2 = fp_store_verify_claim_trees(map, pages, psize, roots, nroots, own2, &r2);
    FUZZ_CHECK(rc2 == rc && memcmp(own, own2, (size_t)pages) == 0);
    FUZZ_CHECK(strcmp(r.problem, r2.problem) == 0);
    free(map);
    free(own);
    free(own2);
    return 0;
}
