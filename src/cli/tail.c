/*  tail.c - `floorpost tail` and the demo printer on the subscriber
    library (src/gateway/subscriber.h): the library follows the feed, checks
    stream_seq, global_seq and the heartbeat, fills gaps from the replay
    endpoint and hands out dead letters; this file only prints what it
    hands out. See tail.h.
*/
#include "tail.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "codec.h"
#include "subscriber.h"

#define TAIL_LINE_MAX (1 << 16) /* one printed line; a checkpoint's JSON is far smaller */
#define TAIL_SLICE_MS 100       /* the stop flag is looked at this often */

int fp_tail_format_human(const char *topic, const fp_checkpoint_t *ck, char *out, size_t cap)
{
    (void)topic; /* the kind, plant and line say it */
    int n = snprintf(out, cap, "%-11s %s/%s  order %s op %s  ",
                     fp_ck_kind_name(ck->kind) ? fp_ck_kind_name(ck->kind) : "?", ck->plant,
                     ck->line, ck->order, ck->operation);
    if (n < 0 || (size_t)n >= cap)
        return n;
    if (ck->kind == FP_CK_CONSUMPTION) {
        /* thousandths -> "+12.345": magnitude in uint64 so INT64_MIN is fine */
        uint64_t mag = ck->quantity < 0 ? 0 - (uint64_t)ck->quantity : (uint64_t)ck->quantity;
        n += snprintf(out + n, cap - n, "%s lot %s  %c%" PRIu64 ".%03" PRIu64 " %s", ck->material,
                      ck->lot, ck->quantity < 0 ? '-' : '+', mag / 1000, mag % 1000, ck->unit);
    } else if (ck->kind == FP_CK_COMPLETION)
        n += snprintf(out + n, cap - n, "yield %+" PRId64 " scrap %+" PRId64 "%s", ck->yield,
                      ck->scrap, ck->final ? "  FINAL" : "");
    else if (ck->kind == FP_CK_SCRAP)
        n += snprintf(out + n, cap - n, "%s  %+" PRId64 " parts", ck->reason, ck->parts);
    else
        n += snprintf(out + n, cap - n, "station %s counter %s%s%s  %" PRId64 " -> %" PRId64,
                      ck->station, ck->counter, ck->counter_scrap ? " scrap " : "",
                      ck->counter_scrap ? ck->reason : "", ck->previous, ck->reading);
    if ((size_t)n < cap && ck->posting_date[0])
        n += snprintf(out + n, cap - n, "  %s %s%s", ck->posting_date, ck->period,
                      ck->backfill ? " BACKFILL" : "");
    if ((size_t)n < cap)
        n += snprintf(out + n, cap - n, "%s  [seq %" PRIu64 ", %" PRIu64 " records]",
                      ck->late ? "  LATE" : "", ck->stream_seq, ck->record_count);
    return n;
}

/* `{"topic":"T",` into line: the topic as a JSON string (its plant and
   line come from producers). Its length, or -1 when it does not fit. */
static int s_topic_prefix(const char *topic, char *line, size_t cap)
{
    static const char head[] = "{\"topic\":";
    size_t hl = sizeof head - 1;
    memcpy(line, head, hl);
    int k = fp_codec_json_string(topic, strlen(topic), line + hl, cap - hl - 1);
    if (k < 0)
        return -1;
    line[hl + (size_t)k] = ',';
    return (int)hl + k + 1;
}

/* One event: a readable line, or one JSON object (the topic spliced in
   front of the checkpoint's own fields). */
static void s_print_event(const fp_tail_opts_t *o, const subscriber_msg_t *m, char *line)
{
    if (o->human) {
        fp_tail_format_human(m->topic, &m->ck, line, TAIL_LINE_MAX);
        fprintf(o->out, "%s\n", line);
        return;
    }
    int p = s_topic_prefix(m->topic, line, TAIL_LINE_MAX);
    if (p < 0)
        return;
    /* the object starts where the ',' is: its '{' is overwritten by it */
    int k = fp_codec_checkpoint_to_json(m->data, m->len, line + p - 1, TAIL_LINE_MAX - (size_t)p + 1);
    if (k > 0) {
        line[p - 1] = ',';
        fprintf(o->out, "%s\n", line);
    } else {
        fprintf(stderr, "tail: %s: global_seq %" PRIu64 " not printed: %s\n", m->topic,
                m->ck.global_seq, k == FP_CODEC_SPACE ? "its JSON is over 64 KiB" : fp_codec_strerror(k));
    }
}

/* One dead letter: its topic, the size of the original bytes, the detail
   as floorpost wrote it (the library checked it is a JSON object). */
static void s_print_deadletter(const fp_tail_opts_t *o, const subscriber_msg_t *m, char *line)
{
    int p = s_topic_prefix(m->topic, line, TAIL_LINE_MAX);
    if (p > 0)
        fprintf(o->out, "%.*s\"payload_bytes\":%zu,\"detail\":%s}\n", p, line, m->len, m->detail);
}

/* The notes on stderr: what was lost, what went back, what was skipped. */
static void s_note(const subscriber_msg_t *m, fp_tail_stats_t *st)
{
    switch (m->kind) {
    case SUBSCRIBER_GAP:
        if (m->topic[0]) {
            st->gaps++;
            st->missing += m->next - m->first;
            fprintf(stderr, "tail: gap on %s: expected stream_seq %" PRIu64 ", got %" PRIu64 "\n",
                    m->topic, m->first, m->next);
        } else {
            fprintf(stderr, "tail: gap in global_seq: expected %" PRIu64 ", got %" PRIu64
                            " (%" PRIu64 " events missing)\n",
                    m->first, m->next, m->next - m->first);
        }
        break;
    case SUBSCRIBER_RESET:
        fprintf(stderr, "tail: %s%s went back from %" PRIu64 " to %" PRIu64
                        ": floorpost restarted without its state, or its state was restored\n",
                m->topic[0] ? "stream_seq of " : "global_seq", m->topic, m->first, m->next);
        break;
    case SUBSCRIBER_LOST:
        st->unrecoverable += m->next - m->first;
        fprintf(stderr, "tail: global_seq %" PRIu64 "..%" PRIu64 " unrecoverable (%" PRIu64
                        " events): %s\n",
                m->first, m->next - 1, m->next - m->first, m->detail);
        break;
    case SUBSCRIBER_BAD:
        st->bad++;
        fprintf(stderr, "tail: %s%s%s\n", m->topic, m->topic[0] ? ": " : "", m->detail);
        break;
    default:
        break;
    }
}

int fp_tail(void *zmq_ctx, const fp_tail_opts_t *o, fp_tail_stats_t *st)
{
    memset(st, 0, sizeof *st);
    subscriber_opts_t so = {.endpoint = o->endpoint, .topic_prefix = o->topic,
                            .replay_endpoint = o->replay_endpoint,
                            .from_global_seq = o->replay_endpoint ? o->from_global_seq : 0,
                            .replay_timeout_ms = o->replay_timeout_ms,
                            .server_key_z85 = o->server_key_z85,
                            .public_key_z85 = o->public_key_z85,
                            .secret_key_z85 = o->secret_key_z85};
    char *line = malloc(TAIL_LINE_MAX);
    subscriber_t *sub = line ? subscriber_new(zmq_ctx, &so, st->error, sizeof st->error) : NULL;
    if (!sub) {
        if (!line)
            snprintf(st->error, sizeof st->error, "out of memory");
        free(line);
        return -EINVAL;
    }
    subscriber_accept_deadletters(sub); /* the same verb reads the dead-letter feed */
    int rc = 0;
    int64_t idle_ns = (int64_t)o->idle_timeout_ms * 1000000;
    int64_t idle_until = o->idle_timeout_ms ? fp_now_ns() + idle_ns : INT64_MAX;
    while (!o->max_events || st->events < o->max_events) {
        if (o->stop && atomic_load_explicit(o->stop, memory_order_acquire))
            break;
        int64_t now = fp_now_ns();
        if (now >= idle_until)
            break; /* --timeout: that long without an event */
        int64_t left_ms = idle_until == INT64_MAX ? TAIL_SLICE_MS : (idle_until - now + 999999) / 1000000;
        subscriber_msg_t m;
        int r = subscriber_recv(sub, &m, left_ms < TAIL_SLICE_MS ? (int)left_ms : TAIL_SLICE_MS);
        if (r == -EINTR || r == 0)
            continue;
        if (r < 0) {
            rc = r;
            snprintf(st->error, sizeof st->error, "%s", zmq_strerror(-r));
            break;
        }
        if (m.kind == SUBSCRIBER_EVENT || m.kind == SUBSCRIBER_DEADLETTER) {
            if (m.kind == SUBSCRIBER_EVENT)
                s_print_event(o, &m, line);
            else
                s_print_deadletter(o, &m, line);
            fflush(o->out);
            st->events++;
            st->replayed += m.replayed;
            if (idle_until != INT64_MAX)
                idle_until = fp_now_ns() + idle_ns;
        } else if (m.kind == SUBSCRIBER_REFUSED) {
            st->auth_status = m.global_seq ? (int)m.global_seq : -1;
            snprintf(st->error, sizeof st->error, "%s", m.detail);
            rc = -EACCES;
            break;
        } else {
            s_note(&m, st);
        }
    }
    fflush(o->out);
    const subscriber_stats_t *ls = subscriber_stats(sub);
    st->global_gaps = ls->global_gaps;
    st->heartbeats = ls->heartbeats;
    st->duplicates = ls->duplicates;
    subscriber_destroy(&sub);
    free(line);
    return rc;
}
