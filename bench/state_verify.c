/*  state_verify.c - what the start-time walk of a state file costs
    (src/store/verify.h), on a state of a given size.

      build/bench/state_verify DIR MIB [RUNS]

    Fills DIR/data.mdb (a new state, map 2 x MIB + 64 MiB) with outbox
    events of 900 bytes and one aggregation key per 8 events (200-byte
    states) until the tables hold MIB MiB, in rounds of 10,000 events,
    then times RUNS (default 3) walks in a child process
    (fp_store_verify) and RUNS full opens (fp_store_open: the walk, then
    LMDB's open), with the file in the page cache. Prints one line per
    run and the median, in seconds and MB/s of the file's used pages.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outbox.h"
#include "store.h"
#include "verify.h"

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DIR MIB [RUNS]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    uint64_t mib = strtoull(argv[2], NULL, 10);
    int runs = argc > 3 ? atoi(argv[3]) : 3;
    if (runs < 1 || runs > 50)
        runs = 3;
    uint64_t map = (2 * mib + 64) << 20;
    char err[1024];
    fp_store_t *st = fp_store_open(dir, map, "bench", err, sizeof err);
    if (!st) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    uint64_t gseq = 0, round = 0, used = 0, mapb = 0;
    fp_store_last_round(st, &round, &gseq);
    static uint8_t ev[900], state[200];
    double t0 = s_now();
    for (;;) {
        fp_store_usage(st, &used, &mapb);
        if (used >= mib << 20)
            break;
        fp_store_txn_t *t;
        if (fp_store_begin(st, &t) != 0)
            return 1;
        round++;
        for (int i = 0; i < 10000; i++) {
            gseq++;
            memcpy(ev, &gseq, sizeof gseq);
            fp_outbox_put(t, gseq, round, 1, "completion/1000/L01", 19, ev, sizeof ev);
            if (gseq % 8 == 0) {
                char key[32];
                int kl = snprintf(key, sizeof key, "key-%016llu", (unsigned long long)gseq);
                memcpy(state, &round, sizeof round);
                fp_store_put_key(t, key, (size_t)kl, state, sizeof state);
            }
        }
        fp_store_set_round(t, round, gseq);
        int rc = fp_store_commit(&t);
        if (rc != 0) {
            fprintf(stderr, "commit: %s\n", fp_store_strerror(rc));
            return 1;
        }
    }
    fp_store_close(&st);
    printf("state: %llu MiB used, %llu events, %llu rounds (filled in %.1f s)\n",
           (unsigned long long)(used >> 20), (unsigned long long)gseq,
           (unsigned long long)round, s_now() - t0);
    double w[50], o[50];
    for (int r = 0; r < runs; r++) {
        fp_store_verify_t rep;
        double a = s_now();
        int rc = fp_store_verify(dir, true, &rep);
        w[r] = s_now() - a;
        if (rc != 0) {
            fprintf(stderr, "verify: %s\n", rep.problem);
            return 1;
        }
        a = s_now();
        st = fp_store_open(dir, map, "bench", err, sizeof err);
        o[r] = s_now() - a;
        if (!st) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        fp_store_close(&st);
        printf("run %d: walk %.3f s (%.0f MB/s, %llu values), open %.3f s\n", r + 1, w[r],
               used / 1e6 / w[r], (unsigned long long)rep.values, o[r]);
    }
    qsort(w, (size_t)runs, sizeof w[0], s_cmp);
    qsort(o, (size_t)runs, sizeof o[0], s_cmp);
    printf("median: walk %.3f s (%.0f MB/s), open with the walk %.3f s\n", w[runs / 2],
           used / 1e6 / w[runs / 2], o[runs / 2]);
    return 0;
}
