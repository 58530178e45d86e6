/*  replayer.c - a replaying subscriber for bench/run.py's replay scenario:
    catches up through floorpost's replay endpoint as docs/subscribers.md
    describes, and measures it.

    DEALER to --replay EP. Sends "REPLAY <next> <max>" (next = --from at
    first), reads the answer: up to max [topic][Checkpoint] messages, then
    ["END"]["<next> <oldest> <last_committed>"], and asks again from the
    answer's next, until it has --events events or has caught up (next >
    last_committed). Every event is decoded (as a subscriber would) and its
    global_seq must be the one expected: consecutive from --from (or from
    oldest, when retention trimmed below --from); anything else, an ERROR
    answer or no answer within --timeout-ms is a failure (exit 1).

    Output: one JSON object (--json FILE, else stdout) with the events and
    bytes received, requests, seconds from the first request to the last
    END, events/s, the slowest answer (request sent -> END received), the
    wall-clock start and end (ns since the Unix epoch, for the harness to
    line the replay up with the load's latency windows), and the outbox's
    oldest / last_committed as the first and the last answer gave them.

    Usage: replayer --replay EP [--from N] [--events N] [--max N]
                    [--timeout-ms MS] [--json FILE]
*/
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench_util.h"
#include "codec.h"

static void s_usage(void)
{
    fprintf(stderr, "usage: replayer --replay EP [--from N] [--events N] [--max N]\n"
                    "                [--timeout-ms MS] [--json FILE]\n");
    exit(2);
}

static int64_t s_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    const char *ep = NULL, *json = NULL;
    uint64_t from = 1, want = 1000000, max = 10000;
    int timeout_ms = 10000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--replay") == 0)
            ep = v;
        else if (strcmp(a, "--from") == 0)
            from = strtoull(v, NULL, 10);
        else if (strcmp(a, "--events") == 0)
            want = strtoull(v, NULL, 10);
        else if (strcmp(a, "--max") == 0)
            max = strtoull(v, NULL, 10);
        else if (strcmp(a, "--timeout-ms") == 0)
            timeout_ms = atoi(v);
        else if (strcmp(a, "--json") == 0)
            json = v;
        else
            s_usage();
    }
    if (!ep || from < 1 || max < 1 || (argc - 1) % 2)
        s_usage();

    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, rcvhwm = 0; /* 0: no limit; the answer is bounded by max */
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    if (zmq_connect(s, ep) != 0) {
        fprintf(stderr, "replayer: connect %s: %s\n", ep, zmq_strerror(zmq_errno()));
        return 2;
    }

    char failure[256] = "";
    uint64_t next = from, expect = from, events = 0, bytes = 0, requests = 0;
    uint64_t first_seq = 0, last_seq = 0, oldest0 = 0, last0 = 0, oldest = 0, last = 0;
    int64_t worst_ns = 0;
    bool caught_up = false;
    void *aligned = NULL;
    size_t aligned_cap = 0;
    const int64_t wall0 = s_wall_ns(), t0 = bu_now_ns();
    while (events < want && !caught_up && !failure[0]) {
        char req[64];
        uint64_t ask = want - events < max ? want - events : max;
        int n = snprintf(req, sizeof req, "REPLAY %" PRIu64 " %" PRIu64, next, ask);
        const int64_t tq = bu_now_ns();
        if (zmq_send(s, req, (size_t)n, 0) != n) {
            snprintf(failure, sizeof failure, "send: %s", zmq_strerror(zmq_errno()));
            break;
        }
        requests++;
        for (;;) {
            zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, timeout_ms) <= 0) {
                snprintf(failure, sizeof failure, "no answer within %d ms to \"%s\"", timeout_ms,
                         req);
                break;
            }
            zmq_msg_t topic, body;
            zmq_msg_init(&topic);
            zmq_msg_init(&body);
            zmq_msg_recv(&topic, s, 0);
            if (!zmq_msg_more(&topic) || zmq_msg_recv(&body, s, 0) < 0 || zmq_msg_more(&body)) {
                snprintf(failure, sizeof failure, "a message of other than two frames");
                zmq_msg_close(&topic);
                zmq_msg_close(&body);
                break;
            }
            if (zmq_msg_size(&topic) == 3 && memcmp(zmq_msg_data(&topic), "END", 3) == 0) {
                char end[128] = "";
                size_t el = zmq_msg_size(&body) < sizeof end - 1 ? zmq_msg_size(&body)
                                                                 : sizeof end - 1;
                memcpy(end, zmq_msg_data(&body), el);
                zmq_msg_close(&topic);
                zmq_msg_close(&body);
                if (sscanf(end, "%" SCNu64 " %" SCNu64 " %" SCNu64, &next, &oldest, &last) != 3) {
                    snprintf(failure, sizeof failure, "END \"%s\"", end);
                    break;
                }
                if (requests == 1) {
                    oldest0 = oldest;
                    last0 = last;
                }
                if (next != expect)
                    snprintf(failure, sizeof failure,
                             "END next %" PRIu64 " after the events up to %" PRIu64, next,
                             expect - 1);
                caught_up = next > last;
                int64_t dt = bu_now_ns() - tq;
                if (dt > worst_ns)
                    worst_ns = dt;
                break;
            }
            size_t len = zmq_msg_size(&body);
            const void *data = zmq_msg_data(&body);
            if (((uintptr_t)data & 7) != 0) {
                if (len > aligned_cap) {
                    free(aligned);
                    aligned_cap = len * 2;
                    aligned = aligned_alloc(8, (aligned_cap + 7) & ~(size_t)7);
                }
                memcpy(aligned, data, len);
                data = aligned;
            }
            fp_checkpoint_t ck;
            int rc = fp_codec_checkpoint_decode(data, len, &ck);
            if (rc != FP_CODEC_OK) {
                snprintf(failure, sizeof failure, "event %" PRIu64 ": %s", expect,
                         fp_codec_strerror(rc));
            } else {
                if (events == 0 && ck.global_seq > expect)
                    expect = ck.global_seq; /* retention trimmed below --from */
                if (ck.global_seq != expect && !failure[0])
                    snprintf(failure, sizeof failure,
                             "global_seq %" PRIu64 " where %" PRIu64 " was due", ck.global_seq,
                             expect);
                if (!first_seq)
                    first_seq = ck.global_seq;
                last_seq = ck.global_seq;
                expect = ck.global_seq + 1;
            }
            events++;
            bytes += zmq_msg_size(&topic) + len;
            zmq_msg_close(&topic);
            zmq_msg_close(&body);
        }
    }
    const double secs = (double)(bu_now_ns() - t0) / 1e9;
    const int64_t wall1 = s_wall_ns();
    if (!failure[0] && events < want && !caught_up)
        snprintf(failure, sizeof failure, "stopped at %" PRIu64 " events", events);

    for (char *c = failure; *c; c++) /* JSON-safe: the END text may quote */
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            *c = '\'';
    FILE *f = json ? fopen(json, "w") : stdout;
    if (!f) {
        perror(json);
        return 2;
    }
    fprintf(f,
            "{\"ok\":%s,\"failure\":\"%s\",\"events\":%" PRIu64 ",\"events_wanted\":%" PRIu64
            ",\"bytes\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"max_per_request\":%" PRIu64
            ",\"seconds\":%.4f,\"events_per_s\":%.0f,\"worst_answer_ms\":%.3f"
            ",\"first_global_seq\":%" PRIu64 ",\"last_global_seq\":%" PRIu64
            ",\"caught_up\":%s,\"oldest_at_start\":%" PRIu64 ",\"last_committed_at_start\":%" PRIu64
            ",\"last_committed_at_end\":%" PRIu64 ",\"start_wall_ns\":%" PRId64
            ",\"end_wall_ns\":%" PRId64 "}\n",
            failure[0] ? "false" : "true", failure, events, want, bytes, requests, max, secs,
            secs > 0 ? (double)events / secs : 0.0, (double)worst_ns / 1e6, first_seq, last_seq,
            caught_up ? "true" : "false", oldest0, last0, last, wall0, wall1);
    if (json)
        fclose(f);
    free(aligned);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return failure[0] ? 1 : 0;
}
