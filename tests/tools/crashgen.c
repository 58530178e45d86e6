/*  crashgen.c - the producer side of floorpost's crash tests.

    Sends a deterministic plant stream (plantgen) through the acknowledged
    producer library (producer.h: it keeps every unacked batch and resends
    it after a reconnect or timeout), with duplicates and producer restarts
    (epoch bumps), paced to a rate, while the test kills and restarts
    floorpost. At the end it waits until every batch is acked and writes the
    ground truth - the sums over the UNIQUE records it produced, the
    record_count the published checkpoints must add up to and the records
    that wait in 0/0 completions (truth.h: the model and the file's lines) -
    for the test to compare with what floorpost published.

    usage: crashgen ENDPOINT TRUTH_FILE [--records N] [--lines L] [--seed S]
                    [--rate R] [--dup-pct P] [--restart-every N] [--resend-ms MS]
                    [--timeout-ms MS] [--batch N]
    Exit 0 when everything was acked, 1 otherwise.
*/
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "clock.h"
#include "plantgen.h"
#include "producer.h"
#include "truth.h"

/* A copy of a record for later duplication (plantgen's strings move on). */
typedef struct {
    uint64_t source, epoch;
    fp_rec_in_t rec;
    char buf[FP_STR_FIELDS][64];
} saved_t;

static void s_save(saved_t *s, uint64_t source, uint64_t epoch, const fp_rec_in_t *r)
{
    s->source = source;
    s->epoch = epoch;
    s->rec = *r;
    for (int f = 0; f < FP_STR_FIELDS; f++) {
        if (!r->str[f]) {
            s->rec.str[f] = NULL;
            continue;
        }
        snprintf(s->buf[f], sizeof s->buf[f], "%s", r->str[f]);
        s->rec.str[f] = s->buf[f];
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: crashgen ENDPOINT TRUTH_FILE [options]\n");
        return 2;
    }
    const char *endpoint = argv[1], *truth_path = argv[2];
    uint64_t records = 20000, seed = 7, rate = 5000, restart_every = 0;
    uint32_t lines = 4, dup_pct = 10;
    int resend_ms = 500, timeout_ms = 120000;
    uint32_t batch = 64;
    for (int i = 3; i + 1 < argc; i += 2) {
        const char *k = argv[i];
        unsigned long long v = strtoull(argv[i + 1], NULL, 10);
        if (!strcmp(k, "--records"))
            records = v;
        else if (!strcmp(k, "--lines"))
            lines = (uint32_t)v;
        else if (!strcmp(k, "--seed"))
            seed = v;
        else if (!strcmp(k, "--rate"))
            rate = v;
        else if (!strcmp(k, "--dup-pct"))
            dup_pct = (uint32_t)v;
        else if (!strcmp(k, "--restart-every"))
            restart_every = v;
        else if (!strcmp(k, "--resend-ms"))
            resend_ms = (int)v;
        else if (!strcmp(k, "--timeout-ms"))
            timeout_ms = (int)v;
        else if (!strcmp(k, "--batch"))
            batch = (uint32_t)v;
        else {
            fprintf(stderr, "crashgen: unknown option %s\n", k);
            return 2;
        }
    }
    plantgen_params_t pp;
    plantgen_defaults(&pp);
    pp.lines_per_plant = lines;
    pp.seed = seed;
    pp.records_per_operation = 40;
    pp.burst = 16;
    plantgen_t *gen = plantgen_new(&pp);
    void *ctx = zmq_ctx_new();
    producer_t *p = producer_new(ctx, endpoint, PRODUCER_ACKED, batch);
    truth_t *truth = truth_new();
    if (!gen || !p || !truth) {
        fprintf(stderr, "crashgen: cannot start (endpoint %s)\n", endpoint);
        return 1;
    }
    producer_set_resend(p, resend_ms);
    /* Per source (line): current epoch and seq, restarted every restart_every. */
    uint64_t epoch[1024] = {0}, seq[1024] = {0}, since[1024] = {0};
    saved_t *ring = calloc(256, sizeof *ring);
    size_t nring = 0;
    uint64_t dups = 0, restarts = 0, xs = seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t t0 = fp_now_ns();
    for (uint64_t i = 0; i < records; i++) {
        uint64_t source, gen_epoch;
        fp_rec_in_t r;
        plantgen_next(gen, &source, &gen_epoch, &r);
        size_t s = (size_t)(source % 1024);
        if (epoch[s] == 0)
            epoch[s] = 1;
        if (restart_every && since[s] >= restart_every) {
            /* The gateway restarts: like a real one shutting down cleanly it
               first gets everything of the old session acked (a crashed
               gateway would lose its unacked records, unless it spilled
               them: that is the gateway's loss, not floorpost's); then a
               new session, seqs from 1. Unacked batches of an old epoch
               would be refused as stale_epoch once the new one is seen. */
            producer_flush(p);
            if (producer_wait_acks(p, timeout_ms) != 0) {
                fprintf(stderr, "crashgen: acks of the old session never came\n");
                return 1;
            }
            epoch[s]++;
            seq[s] = 0;
            since[s] = 0;
            restarts++;
        }
        r.seq = ++seq[s];
        since[s]++;
        if (truth_add(truth, &r) != 0) {
            fprintf(stderr, "crashgen: record %" PRIu64 " is outside the truth model\n", i + 1);
            return 1;
        }
        if (producer_add(p, source, epoch[s], &r) != 0) {
            fprintf(stderr, "crashgen: producer_add failed\n");
            return 1;
        }
        s_save(&ring[nring++ % 256], source, epoch[s], &r);
        xs ^= xs << 13, xs ^= xs >> 7, xs ^= xs << 17;
        if (xs % 100 < dup_pct && nring > 0) {
            /* Resend an earlier record of the same session: a duplicate. */
            saved_t *d = &ring[(xs >> 8) % (nring < 256 ? nring : 256)];
            if (d->epoch == epoch[d->source % 1024]) {
                producer_add(p, d->source, d->epoch, &d->rec);
                dups++;
            }
        }
        if (rate) {
            int64_t due = t0 + (int64_t)((i + 1) * 1000000000ull / rate);
            int64_t now = fp_now_ns();
            if (due > now + 1000000) {
                producer_flush(p);
                producer_poll(p, (int)((due - now) / 1000000));
            }
        }
    }
    producer_flush(p);
    int rc = producer_wait_acks(p, timeout_ms);
    const producer_stats_t *st = producer_stats(p);
    fprintf(stderr,
            "crashgen: %llu records, %llu duplicates, %llu restarts, %llu batches sent, %llu acks, "
            "%llu rejected%s\n",
            (unsigned long long)records, (unsigned long long)dups, (unsigned long long)restarts,
            (unsigned long long)st->batches_sent, (unsigned long long)st->acks,
            (unsigned long long)st->rejected_batches, rc ? " - NOT EVERYTHING ACKED" : "");
    FILE *f = fopen(truth_path, "w");
    if (!f || truth_write(truth, f) != 0 || fclose(f) != 0) {
        fprintf(stderr, "crashgen: cannot write %s\n", truth_path);
        return 1;
    }
    truth_destroy(&truth);
    free(ring);
    int ok = rc == 0 && st->rejected_batches == 0; /* st lives in p */
    producer_destroy(&p);
    plantgen_destroy(&gen);
    zmq_ctx_term(ctx);
    return ok ? 0 : 1;
}
