/*  forwarder.c - the ceiling for fpload: the same sockets and batch frames
    as floorpost, and nothing else (no verification, dedup or aggregation).

    Receives telemetry frames on a PULL (--pull EP) or ROUTER (--router EP)
    socket and publishes each, unchanged, on a PUB (--pub EP) as
    [topic "fwd"][frame]. On ROUTER it answers each frame with an Ack
    (source read with fp_codec_batch_peek_source, acked_seq 0) so an acked
    producer can finish. Input socket options as floorpost's ingest
    sockets (src/inputs/input_zmq.c): receive HWM --rcvhwm N frames
    (floorpost's ingest_hwm: 1000 by default, as there; bench/run.py
    passes the bench config's 32), on ROUTER an ack send HWM of
    max(1000, 16 x N); PUB send HWM 100000 frames, linger 2 s. The ready
    line reports the receive HWM read back from the socket (rcvhwm=N).

    On SIGTERM/SIGINT it forwards what is already queued (until the input
    has been empty for 200 ms), logs `msg="drained" ms=N frames=N
    peak_rss_kb=N` (ms = time to empty the queue, without the final 200
    ms; peak_rss_kb = its own VmHWM from /proc/self/status, read last) on
    stderr, and exits 0.

    Usage: forwarder (--pull EP | --router EP) --pub EP [--rcvhwm N]
*/
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench_util.h"
#include "codec.h"
#include "metrics.h" /* fp_metrics_peak_rss_kb */

static volatile sig_atomic_t s_stop;
static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

int main(int argc, char **argv)
{
    const char *pull = NULL, *router = NULL, *pub = NULL;
    long rcvhwm_arg = 1000; /* floorpost's default ingest_hwm */
    int bad = argc % 2 == 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--pull") == 0)
            pull = argv[i + 1];
        else if (strcmp(argv[i], "--router") == 0)
            router = argv[i + 1];
        else if (strcmp(argv[i], "--pub") == 0)
            pub = argv[i + 1];
        else if (strcmp(argv[i], "--rcvhwm") == 0)
            rcvhwm_arg = strtol(argv[i + 1], NULL, 10);
        else
            bad = 1;
    }
    /* floorpost's ingest_hwm range (src/ops/config.c) */
    if (bad || !pub || !pull == !router || rcvhwm_arg < 1 || rcvhwm_arg > 1000000) {
        fprintf(stderr, "usage: forwarder (--pull EP | --router EP) --pub EP [--rcvhwm N]\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    void *ctx = zmq_ctx_new();
    void *in = zmq_socket(ctx, router ? ZMQ_ROUTER : ZMQ_PULL);
    void *out = zmq_socket(ctx, ZMQ_PUB);
    int rcvhwm = (int)rcvhwm_arg, sndhwm = 100000, linger = 2000, tmo = 100;
    /* as input_zmq.c's s_socket: the acks a connection may have queued */
    int ackhwm = rcvhwm_arg * 16 < 1000 ? 1000 : (int)(rcvhwm_arg * 16);
    zmq_setsockopt(in, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    zmq_setsockopt(in, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    if (router)
        zmq_setsockopt(in, ZMQ_SNDHWM, &ackhwm, sizeof ackhwm);
    zmq_setsockopt(out, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    zmq_setsockopt(out, ZMQ_LINGER, &linger, sizeof linger);
    const char *iep = router ? router : pull;
    if (zmq_bind(in, iep) != 0 || zmq_bind(out, pub) != 0) {
        fprintf(stderr, "forwarder: bind: %s\n", zmq_strerror(zmq_errno()));
        return 2;
    }
    int got = 0;
    size_t glen = sizeof got;
    if (zmq_getsockopt(in, ZMQ_RCVHWM, &got, &glen) != 0)
        got = -1;
    fprintf(stderr, "ts=0 level=info who=forwarder msg=\"ready\" in=%s pub=%s rcvhwm=%d\n", iep,
            pub, got);
    fp_codec_t *codec = fp_codec_new();
    uint64_t frames = 0;
    int64_t stop_at = 0, last_data = 0;
    for (;;) {
        if (s_stop && !stop_at) {
            stop_at = bu_now_ns();
            tmo = 200;
            zmq_setsockopt(in, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
        }
        zmq_msg_t id, m;
        zmq_msg_init(&id);
        zmq_msg_init(&m);
        int rc;
        if (router) {
            rc = zmq_msg_recv(&id, in, 0);
            if (rc >= 0)
                rc = zmq_msg_recv(&m, in, 0);
        } else {
            rc = zmq_msg_recv(&m, in, 0);
        }
        if (rc < 0) {
            zmq_msg_close(&id);
            zmq_msg_close(&m);
            if (stop_at && zmq_errno() == EAGAIN)
                break; /* drained: input empty for 200 ms */
            continue;
        }
        if (router) {
            const void *ack;
            size_t alen;
            uint64_t src = fp_codec_batch_peek_source(zmq_msg_data(&m), zmq_msg_size(&m));
            fp_ack_t a = {.source_id = src};
            if (fp_codec_ack_encode(codec, &a, &ack, &alen) == FP_CODEC_OK) {
                zmq_msg_send(&id, in, ZMQ_SNDMORE);
                zmq_send(in, ack, alen, 0);
            }
        }
        zmq_send(out, "fwd", 3, ZMQ_SNDMORE);
        zmq_msg_send(&m, out, 0); /* zero-copy: the frame moves to the PUB */
        frames++;
        last_data = bu_now_ns();
        zmq_msg_close(&id);
        zmq_msg_close(&m);
    }
    long long ms = last_data > stop_at ? (long long)((last_data - stop_at) / 1000000) : 0;
    fp_codec_destroy(&codec);
    zmq_close(in);
    zmq_close(out);
    zmq_ctx_term(ctx); /* the PUB's queue flushed: the peak is final */
    fprintf(stderr,
            "ts=0 level=info who=forwarder msg=\"drained\" ms=%lld frames=%" PRIu64
            " peak_rss_kb=%" PRIu64 "\n",
            ms, frames, fp_metrics_peak_rss_kb());
    return 0;
}
