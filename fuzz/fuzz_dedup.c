/*  fuzz_dedup.c - libFuzzer target for the stored source states
    (dedup_restore, src/core/dedup.c): the bytes a worker restores at start
    from the state's sources table (worker.c s_restore_source), then what
    the restored source must answer.

    Input: byte 0 chooses the window (64 << (b % 8)) of the restoring
    dedup_t and byte 1 another window (a restart with a changed
    dedup_window); bytes 2..9 are seqs to check relative to high; the rest
    is the state.

    Invariants (state versions 1 and 2, dedup.h):
      - a refusal changes nothing (the source stays unknown);
      - an accepted state gives epoch, high and acked = high - gap as the
        bytes say; export, restore, export is a fixpoint; another window
        takes it exactly when the gap fits, and exports the same bytes
        (version 1: when no hole depends on the window);
      - the restored source and its re-restored copy answer alike, in the
        current epoch and in every past one it keeps, and dedup_seen says
        beforehand what dedup_check and dedup_check_past will answer;
        NEW for high + 1; a version-1 state keeps no past epoch;
      - nothing asserts inside dedup.c (ASan, UBSan).

    Seeds: fuzz/seeds/dedup/ (states exported by dedup.c itself: version 1
    ordered, with gaps, after an epoch change, a far seq; version 2 with
    past epochs and a hole).
*/
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "fuzz.h"
#include "varint.h"

#define S_SOURCE 77u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 10)
        return 0;
    uint32_t w1 = 64u << (data[0] % 8), w2 = 64u << (data[1] % 8);
    const uint8_t *probe = data + 2;
    size_t len = size - 10;
    uint8_t *state = malloc(len ? len : 1); /* exactly its size: ASan sees over-reads */
    FUZZ_CHECK(state != NULL);
    memcpy(state, data + 10, len);

    dedup_t *d = dedup_new(w1, 4);
    FUZZ_CHECK(d != NULL);
    dedup_verdict_t v;
    int rc = dedup_restore(d, S_SOURCE, state, len);
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        FUZZ_CHECK(dedup_stats(d)->sources == 0);
        dedup_destroy(&d);
        free(state);
        return 0;
    }
    /* What the bytes say (the format in dedup.h: versions 1 and 2 begin
       alike). */
    const uint8_t *p = state + 1, *end = state + len;
    uint64_t epoch, high, gap;
    FUZZ_CHECK(state[0] == 1 || state[0] == 2);
    bool v1 = state[0] == 1;
    FUZZ_CHECK(fp_varint_get(&p, end, &epoch) == 0 && fp_varint_get(&p, end, &high) == 0 &&
               fp_varint_get(&p, end, &gap) == 0);
    FUZZ_CHECK(gap <= high && gap <= w1);
    FUZZ_CHECK(dedup_stats(d)->sources == 1);
    uint64_t e0 = 0;
    FUZZ_CHECK(dedup_epoch_of(d, S_SOURCE, &e0) && e0 == epoch);
    dedup_source_t *src = dedup_source(d, S_SOURCE, epoch, &v);
    FUZZ_CHECK(src != NULL && v == DEDUP_NEW);
    FUZZ_CHECK(dedup_source_epoch(src) == epoch && dedup_source_high(src) == high);
    FUZZ_CHECK(dedup_source_acked(src) == high - gap);
    if (epoch > 0 && v1) /* version 1 keeps no past epoch */
        FUZZ_CHECK(dedup_source(d, S_SOURCE, epoch - 1, &v) == NULL && v == DEDUP_STALE_EPOCH);

    /* Export, restore again, export again: the same bytes. */
    size_t cap = dedup_export_max(d);
    uint8_t *x1 = malloc(cap), *x2 = malloc(cap);
    FUZZ_CHECK(x1 && x2);
    size_t n1 = dedup_source_export(src, x1, cap);
    /* <= cap only: a version-1 input is exported as version 2, which may
       be longer (the past epochs, the hole) */
    FUZZ_CHECK(n1 <= cap);
    dedup_t *e = dedup_new(w1, 4);
    FUZZ_CHECK(e != NULL);
    FUZZ_CHECK(dedup_restore(e, S_SOURCE, x1, n1) == 0);
    dedup_source_t *esrc = dedup_source(e, S_SOURCE, epoch, &v);
    FUZZ_CHECK(esrc != NULL);
    size_t n2 = dedup_source_export(esrc, x2, cap);
    FUZZ_CHECK(n2 == n1 && memcmp(x1, x2, n1) == 0);

    /* Another window: taken exactly when the gap fits it. A version-2
       state keeps its hole whatever the window: the same bytes. Version 1
       did not record it: the restoring window makes the hole [1, high -
       window] (dedup.h), so only a state without one exports alike. */
    dedup_t *f = dedup_new(w2, 4);
    FUZZ_CHECK(f != NULL);
    int frc = dedup_restore(f, S_SOURCE, state, len);
    FUZZ_CHECK(frc == (gap <= w2 ? 0 : -1));
    dedup_source_t *fsrc = frc == 0 ? dedup_source(f, S_SOURCE, epoch, &v) : NULL;
    if (frc == 0) {
        FUZZ_CHECK(fsrc != NULL && dedup_source_acked(fsrc) == high - gap);
        size_t fcap = dedup_export_max(f);
        uint8_t *x3 = malloc(fcap);
        FUZZ_CHECK(x3 != NULL);
        size_t n3 = dedup_source_export(fsrc, x3, fcap);
        FUZZ_CHECK(n3 <= fcap);
        if (!v1 || (high <= w1 && high <= w2))
            FUZZ_CHECK(n3 == n1 && memcmp(x1, x3, n1) == 0);
        free(x3);
    }

    /* Past epochs: kept or not, the restored source and its copy answer
       alike, and dedup_seen agrees with dedup_check_past. */
    for (uint64_t k = 1; k <= DEDUP_PAST_EPOCHS + 1 && k <= epoch; k++) {
        uint64_t pe = epoch - k;
        dedup_verdict_t pv, ev;
        dedup_source_t *ps = dedup_source(d, S_SOURCE, pe, &pv);
        dedup_source_t *es = dedup_source(e, S_SOURCE, pe, &ev);
        FUZZ_CHECK(pv == ev && (ps == NULL) == (es == NULL));
        if (!ps) {
            FUZZ_CHECK(pv == DEDUP_STALE_EPOCH);
            FUZZ_CHECK(dedup_seen(d, S_SOURCE, pe, 1) != DEDUP_SEEN);
            continue;
        }
        FUZZ_CHECK(pv == DEDUP_PAST_EPOCH && !v1);
        uint64_t packed = dedup_past_acked(ps, pe);
        FUZZ_CHECK(packed == dedup_past_acked(es, pe));
        for (int i = 0; i < 8; i++) {
            uint64_t seq = packed + (uint64_t)(int64_t)(int8_t)probe[i];
            dedup_verdict_t a = dedup_check_past(d, ps, pe, seq);
            FUZZ_CHECK(a == dedup_check_past(e, es, pe, seq));
            FUZZ_CHECK(a == DEDUP_DUPLICATE || a == DEDUP_STALE_EPOCH);
            FUZZ_CHECK((a == DEDUP_DUPLICATE) == (dedup_seen(d, S_SOURCE, pe, seq) == DEDUP_SEEN));
        }
    }

    /* Verdicts: the restored source and its copy agree, seq by seq, and
       dedup_seen said beforehand what dedup_check would do. */
    for (int i = 0; i < 8; i++) {
        /* around high: below it (history), at it, just above it */
        uint64_t seq = high + (uint64_t)(int64_t)(int8_t)probe[i];
        dedup_seen_t seen = dedup_seen(d, S_SOURCE, epoch, seq);
        FUZZ_CHECK(seen == dedup_seen(e, S_SOURCE, epoch, seq));
        dedup_verdict_t a = dedup_check(d, src, seq), b = dedup_check(e, esrc, seq);
        FUZZ_CHECK(a == b);
        FUZZ_CHECK(a == DEDUP_NEW || a == DEDUP_DUPLICATE || a == DEDUP_TOO_OLD);
        FUZZ_CHECK((a == DEDUP_DUPLICATE) == (seen == DEDUP_SEEN));
        if (a == DEDUP_NEW)
            FUZZ_CHECK(seen == DEDUP_UNSEEN);
        if (seen == DEDUP_UNKNOWN)
            FUZZ_CHECK(a == DEDUP_TOO_OLD);
        if (seq == 0)
            FUZZ_CHECK(a == DEDUP_TOO_OLD);
        FUZZ_CHECK(dedup_check(d, src, seq) != DEDUP_NEW); /* now seen, or still too old */
        (void)dedup_check(e, esrc, seq);
    }
    if (high < UINT64_MAX) {
        dedup_verdict_t a = dedup_check(d, src, dedup_source_high(src) + 1);
        FUZZ_CHECK(dedup_source_high(src) == UINT64_MAX || a == DEDUP_NEW);
    }
    /* A newer epoch resets the source. */
    if (epoch < UINT64_MAX) {
        dedup_source_t *n = dedup_source(d, S_SOURCE, epoch + 1, &v);
        FUZZ_CHECK(n != NULL && dedup_source_epoch(n) == epoch + 1 && dedup_source_high(n) == 0);
    }
    free(x1);
    free(x2);
    dedup_destroy(&d);
    dedup_destroy(&e);
    dedup_destroy(&f);
    FUZZ_CHECK(d == NULL && e == NULL && f == NULL);
    free(state);
    return 0;
}
