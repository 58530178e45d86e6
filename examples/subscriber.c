/*  subscriber.c - a floorpost checkpoint subscriber in C, on the client
    library (<floorpost/subscriber.h>, libfloorpost-gateway.a).

      subscriber [--count N] [--timeout MS] [--replay ENDPOINT [--from N]]
                 [--server-key FILE --key FILE] ENDPOINT [TOPIC_PREFIX]

    Follows floorpost's checkpoint feed (the `publish` endpoint) for a topic
    prefix ("" = everything, "completion/" = every completion, "scrap/1000/"
    = plant 1000's scrap) and prints one line per event on stdout. It
    prints a `gap` line when a topic's stream_seq skipped numbers (events
    lost on the way; the feed's heartbeat shows a loss at the end of a burst
    too) and a `reset` line when it went back (floorpost restarted without
    its state). With --replay (floorpost's replay endpoint) it fills gaps
    instead: the missing events come from the replay endpoint, in order, and
    only what floorpost no longer keeps is printed as a `lost` line. --from N
    first catches up from global_seq N (your stored last + 1). With CURVE,
    --server-key is floorpost's .pub and --key this subscriber's .key
    (`floorpost keygen`). The Python twin, examples/subscriber.py, prints
    exactly the same lines; the end-to-end tests run both and compare.

    Build it against an installed floorpost (docs/subscribers.md):
        cc -o subscriber subscriber.c $(pkg-config --cflags --libs floorpost)

    Exit codes: 0 after --count events or --timeout ms without an event;
    1 when the subscriber cannot be set up; 2 on a usage error; 3 when
    floorpost refused the CURVE key.
*/
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include <floorpost/curve.h>
#include <floorpost/subscriber.h>

static void s_print_event(const char *topic, const fp_checkpoint_t *ck)
{
    printf("%s topic=%s seq=%" PRIu64 " event_id=%s order=%s op=%s late=%d ",
           fp_ck_kind_name(ck->kind), topic, ck->stream_seq, ck->event_id, ck->order,
           ck->operation, ck->late ? 1 : 0);
    if (ck->kind == FP_CK_CONSUMPTION)
        printf("material=%s lot=%s unit=%s quantity=%" PRId64 "\n", ck->material, ck->lot,
               ck->unit, ck->quantity);
    else if (ck->kind == FP_CK_COMPLETION)
        printf("yield=%" PRId64 " scrap=%" PRId64 " final=%d\n", ck->yield, ck->scrap,
               ck->final ? 1 : 0);
    else if (ck->kind == FP_CK_SCRAP)
        printf("reason=%s parts=%" PRId64 "\n", ck->reason, ck->parts);
    else /* counter_reset: a notice, not a posting */
        printf("station=%s counter=%s previous=%" PRId64 " reading=%" PRId64 "\n", ck->station,
               ck->counter, ck->previous, ck->reading);
}

/* A whole decimal number in [min, max], or exit 2. */
static uint64_t s_number(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end || errno || v < min || v > max) {
        fprintf(stderr, "subscriber: %s: expected a number %" PRIu64 "..%" PRIu64 ", got \"%s\"\n",
                opt, min, max, s);
        exit(2);
    }
    return v;
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    uint64_t count = 0;   /* 0 = no limit */
    long timeout_ms = -1; /* -1 = wait forever */
    const char *server_key = NULL, *key = NULL;
    subscriber_opts_t o = {0};
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        const char *opt = argv[i], *val = argv[i + 1];
        if (strcmp(opt, "--count") == 0)
            count = s_number(opt, val, 1, UINT64_MAX);
        else if (strcmp(opt, "--timeout") == 0)
            timeout_ms = (long)s_number(opt, val, 0, 86400000);
        else if (strcmp(opt, "--replay") == 0)
            o.replay_endpoint = val;
        else if (strcmp(opt, "--from") == 0)
            o.from_global_seq = s_number(opt, val, 1, UINT64_MAX - 1);
        else if (strcmp(opt, "--server-key") == 0)
            server_key = val;
        else if (strcmp(opt, "--key") == 0)
            key = val;
        else
            break;
    }
    if (argc - i < 1 || argc - i > 2 || argv[i][0] == '-' || !server_key != !key) {
        fprintf(stderr, "usage: subscriber [--count N] [--timeout MS] [--replay ENDPOINT [--from N]]\n"
                        "                  [--server-key FILE --key FILE] ENDPOINT [TOPIC_PREFIX]\n");
        return 2;
    }
    o.endpoint = argv[i];
    o.topic_prefix = argc - i == 2 ? argv[i + 1] : "";

    char err[512];
    fp_curve_keypair_t server, mine;
    if (server_key) {
        if (fp_curve_key_load(server_key, false, &server, err, sizeof err) != 0 ||
            fp_curve_key_load(key, true, &mine, err, sizeof err) != 0) {
            fprintf(stderr, "subscriber: %s\n", err);
            return 1;
        }
        o.server_key_z85 = server.public_z85;
        o.public_key_z85 = mine.public_z85;
        o.secret_key_z85 = mine.secret_z85;
    }
    void *ctx = zmq_ctx_new();
    subscriber_t *sub = subscriber_new(ctx, &o, err, sizeof err);
    if (!sub) {
        fprintf(stderr, "%s\n", err);
        zmq_ctx_term(ctx);
        return 1;
    }
    fprintf(stderr, "subscriber: connected to %s, prefix \"%s\"\n", o.endpoint, o.topic_prefix);

    uint64_t events = 0, gaps = 0, missing = 0, bad = 0;
    int refused = 0;
    int64_t idle_until = timeout_ms < 0 ? INT64_MAX : s_now_ms() + timeout_ms;
    while (count == 0 || events < count) {
        int wait = -1;
        if (idle_until != INT64_MAX) {
            int64_t left = idle_until - s_now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        subscriber_msg_t m;
        int rc = subscriber_recv(sub, &m, wait);
        if (rc == -EINTR)
            continue;
        if (rc <= 0)
            break; /* --timeout ms without an event, or the context is gone */
        switch (m.kind) {
        case SUBSCRIBER_EVENT:
            events++;
            s_print_event(m.topic, &m.ck);
            if (timeout_ms >= 0)
                idle_until = s_now_ms() + timeout_ms;
            break;
        case SUBSCRIBER_GAP: /* a topic's; a global_seq gap (topic "") shows per topic too */
            if (m.topic[0]) {
                gaps++;
                missing += m.next - m.first;
                printf("gap topic=%s expected=%" PRIu64 " got=%" PRIu64 " missing=%" PRIu64 "\n",
                       m.topic, m.first, m.next, m.next - m.first);
            }
            break;
        case SUBSCRIBER_RESET:
            if (m.topic[0])
                printf("reset topic=%s last=%" PRIu64 " got=%" PRIu64 "\n", m.topic, m.first, m.next);
            break;
        case SUBSCRIBER_LOST:
            printf("lost first=%" PRIu64 " last=%" PRIu64 " missing=%" PRIu64 "\n", m.first,
                   m.next - 1, m.next - m.first);
            fprintf(stderr, "subscriber: global_seq %" PRIu64 "..%" PRIu64 " lost: %s\n", m.first,
                    m.next - 1, m.detail);
            break;
        case SUBSCRIBER_BAD:
            bad++;
            if (m.topic[0])
                fprintf(stderr, "subscriber: %s: %s\n", m.topic, m.detail);
            else
                fprintf(stderr, "subscriber: %s\n", m.detail);
            break;
        case SUBSCRIBER_REFUSED:
            fprintf(stderr, "subscriber: authentication refused: %s\n", m.detail);
            refused = 1;
            break;
        default: /* SUBSCRIBER_HEARTBEAT: nothing to print */
            break;
        }
        if (refused)
            break;
        fflush(stdout);
    }
    fprintf(stderr, "subscriber: %" PRIu64 " events, %" PRIu64 " gaps, %" PRIu64 " missing, %" PRIu64
            " bad\n", events, gaps, missing, bad);
    if (o.replay_endpoint)
        fprintf(stderr, "subscriber: %" PRIu64 " replayed, position %" PRIu64 "\n",
                subscriber_stats(sub)->replayed, subscriber_position(sub));
    subscriber_destroy(&sub);
    zmq_ctx_term(ctx);
    return refused ? 3 : 0;
}
