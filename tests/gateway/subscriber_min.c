/*  subscriber_min.c - the smallest subscriber on the callback API:
    compiled by tests/install_test.sh against the INSTALLED
    <floorpost/subscriber.h> and libfloorpost-gateway.a only, with
    `pkg-config --cflags --libs floorpost`, and run against a real floorpost.
    It catches up from global_seq 1 through the replay endpoint, follows the
    feed until it has N events, and checks that they came once each, in
    global_seq order, decoded. It also takes dead letters (API version 2):
    on the checkpoint feed none may come.

        subscriber_min FEED REPLAY N
*/
#include <floorpost/subscriber.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <zmq.h>

#if !defined(SUBSCRIBER_API_VERSION) || SUBSCRIBER_API_VERSION < 2
#error "the installed subscriber.h is older than API version 2"
#endif

typedef struct {
    uint64_t want, got, next_g; /* next_g: the global_seq expected next */
    int wrong;
} count_t;

static int s_on_message(const subscriber_msg_t *m, void *arg)
{
    count_t *c = arg;
    if (m->kind == SUBSCRIBER_EVENT) {
        if (m->ck.global_seq != c->next_g || !fp_ck_kind_name(m->ck.kind) || !m->ck.event_id[0]) {
            fprintf(stderr, "subscriber_min: got global_seq %" PRIu64 ", expected %" PRIu64 "\n",
                    m->ck.global_seq, c->next_g);
            c->wrong++;
        }
        c->next_g = m->ck.global_seq + 1;
        c->got++;
    } else if (m->kind == SUBSCRIBER_LOST || m->kind == SUBSCRIBER_BAD ||
               m->kind == SUBSCRIBER_DEADLETTER) {
        fprintf(stderr, "subscriber_min: %s %s\n", subscriber_kind_name(m->kind), m->detail);
        c->wrong++;
    }
    return c->got >= c->want; /* non-zero stops subscriber_run */
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    void *ctx = zmq_ctx_new();
    subscriber_opts_t o = {.endpoint = argv[1], .replay_endpoint = argv[2], .from_global_seq = 1};
    char err[256];
    subscriber_t *sub = subscriber_new(ctx, &o, err, sizeof err);
    if (!sub) {
        fprintf(stderr, "subscriber_min: %s\n", err);
        return 1;
    }
    subscriber_accept_deadletters(sub);
    count_t c = {.want = strtoull(argv[3], NULL, 10), .next_g = 1};
    int rc = subscriber_run(sub, s_on_message, &c, 15000);
    printf("subscriber_min: %" PRIu64 " events, %d wrong, %" PRIu64 " replayed, position %" PRIu64
           "\n", c.got, c.wrong, subscriber_stats(sub)->replayed, subscriber_position(sub));
    subscriber_destroy(&sub);
    zmq_ctx_term(ctx);
    return rc == 1 && c.wrong == 0 ? 0 : 1;
}
