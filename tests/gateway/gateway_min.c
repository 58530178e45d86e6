/*  gateway_min.c - the smallest gateway: compiled by tests/install_test.sh
    against the INSTALLED <floorpost/producer.h> and libfloorpost-gateway.a
    only (no source tree on the include path), to prove the gateway library
    links alone. It batches one record for an endpoint nobody listens on and
    checks that the record is held, unacknowledged, in the buffer.
*/
#include <floorpost/producer.h>
#include <stdio.h>
#include <zmq.h>

int main(void)
{
    void *ctx = zmq_ctx_new();
    producer_t *p = producer_new(ctx, "tcp://127.0.0.1:1", PRODUCER_ACKED, 16);
    if (!p)
        return 1;
    fp_rec_in_t r = {.seq = 1, .time_ns = 1763900000000000000, .quantity = 3,
                     .kind = FP_KIND_PART_COUNT};
    r.str[FP_STR_PLANT] = "1000";
    r.str[FP_STR_ORDER] = "O1";
    r.str[FP_STR_OPERATION] = "0010";
    int rc = producer_add(p, 7, 1, &r);
    int flushed = producer_flush(p);
    const producer_stats_t *st = producer_stats(p);
    printf("add=%d flush=%d records_sent=%llu buffered=%llu acked=%llu\n", rc, flushed,
           (unsigned long long)st->records_sent, (unsigned long long)st->buffered_batches,
           (unsigned long long)st->acked_batches);
    int ok = rc == 0 && st->records_sent == 1 && st->buffered_batches == 1 &&
             st->acked_batches == 0;
    producer_destroy(&p);
    zmq_ctx_term(ctx);
    return ok ? 0 : 1;
}
