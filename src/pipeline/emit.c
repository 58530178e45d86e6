/*  emit.c - the commit and emit stage: one writer for state and feeds.

    DESIGN
    - A thin loop around the commit core (commit.h), which holds the rounds
      and does the filing, the stamping and the one LMDB transaction per
      round. Emit owns the sockets: it reads every stage's messages
      (fp_emit_hdr_t in stage.h) into the core, commits each complete round
      in order, and only after the commit (and its fsync) publishes the
      round's events and dead letters, tells ingest COMMITTED r (which
      releases the producers' acks of round r) and tells the outbox readers
      (the replay server, later the sinks) "committed up to round r /
      global_seq g" on FP_EP_NOTICE. Without a state directory the same
      happens minus the transaction.
    - A commit that fails for space (full disk or LMDB map) keeps the round
      in memory and is retried every second; while it fails nothing is
      published or acked, producers keep their batches, and once rounds pile
      up (FP_ROUNDS_MAX) emit stops reading, which backs the pipeline up to
      the producers. It recovers by itself when space returns.
    - PUB never blocks: ZeroMQ drops messages for a subscriber whose queue
      (ZMQ_SNDHWM) is full; the subscriber sees a gap in stream_seq or
      global_seq and asks the replay endpoint, which is served from the
      outbox by its own thread (replay.c), never by this one: a subscriber
      catching up cannot delay a commit or an ack.
    - Durable outbox readers (reader.h) report their positions on
      FP_EP_READERS; the core commits each with the next round. Once a
      second: retention trims the outbox's events older than retention_ms,
      never past an enabled reader's committed position (outbox.h); a reader
      reader_max_lag_events behind is detached, loudly, so that it never
      stops commits or acks; one at half that bound is warned about once a
      minute.
    - Exits when the drain round is committed and published; its last
      notice says DONE so the readers exit too.
*/
#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <zmq.h>

#include "codec.h"
#include "commit.h"
#include "log.h"
#include "reader.h"
#include "stage.h"
#include "outbox.h"
#include "store.h"

/* Rounds held in memory before emit stops reading (commit failing). */
#define FP_ROUNDS_MAX 1200

/* Dead letters deleted at most per housekeeping pass (a second): bounds
   the pass's write txn; a backlog takes several passes. */
#define FP_DL_TRIM_MAX 50000

typedef struct {
    const fp_config_t *cfg;
    fp_metrics_t *metrics;
    fp_store_t *store;
    fp_commit_t *core;
    void *in, *dlin, *pub, *dlpub, *acks, *notice, *readers;
    bool stalled;          /* the last commit attempt failed */
    int64_t retry_at;      /* monotonic ns of the next attempt */
    int64_t stalled_since;
    int64_t next_trim;
    int64_t next_heartbeat; /* the feed's heartbeat (feed_heartbeat_ms) */
    int64_t next_lag_warn; /* readers behind by half their bound: logged once a minute */
    bool warn_now;         /* s_housekeeping: this pass may log those warnings */
    bool done;
    fp_stage_slot_t *slot; /* our gauges (metrics.h) */
    fp_hist_local_t round_hist;
} emit_t;

/* The readers' lag bound: a reload's (fp_emit_set_reader_max_lag), else
   the config's. */
static _Atomic uint64_t s_max_lag_reloaded;

void fp_emit_set_reader_max_lag(uint64_t events)
{
    atomic_store_explicit(&s_max_lag_reloaded, events, memory_order_relaxed);
}

static uint64_t s_max_lag(const emit_t *self)
{
    uint64_t v = atomic_load_explicit(&s_max_lag_reloaded, memory_order_relaxed);
    return v ? v : self->cfg->reader_max_lag_events;
}


/* One logfmt line for a dead letter: its reason and the fields the sender
   rendered in logfmt beside the JSON (fp_dl_fields_t, stage.h), so the JSON
   is never parsed back. */
static void s_log_dead_letter(int reason, const fp_commit_item_t *it)
{
    const char *kv = it->nparts >= 4 ? zmq_msg_data((zmq_msg_t *)&it->part[3]) : "";
    int len = it->nparts >= 4 ? (int)zmq_msg_size((zmq_msg_t *)&it->part[3]) : 0;
    fp_log_admitted(FP_LOG_WARN, "emit", "dead letter", "reason=%s %.*s", fp_dl_reason_name(reason),
                    len, kv);
}

/* A dead letter over a budget (commit.h fp_commit_dl_limits_t): neither
   stored nor published, so counted and logged here, never silently. */
static void s_dl_dropped(void *ctx, const fp_commit_item_t *it, int why)
{
    emit_t *self = ctx;
    fp_metrics_dl_dropped(self->metrics, (int)it->reason, 1);
    if (!fp_log_admit(FP_LOG_WARN, "emit"))
        return;
    const char *kv = it->nparts >= 4 ? zmq_msg_data((zmq_msg_t *)&it->part[3]) : "";
    int len = it->nparts >= 4 ? (int)zmq_msg_size((zmq_msg_t *)&it->part[3]) : 0;
    fp_log_admitted(FP_LOG_WARN, "emit",
                    why == FP_COMMIT_DL_ROUND
                        ? "dead letter dropped: the round's dead-letter budget is spent"
                        : "dead letter dropped: the stored dead letters are at their budget",
                    "reason=%s budget_bytes=%llu %.*s", fp_dl_reason_name((int)it->reason),
                    (unsigned long long)(why == FP_COMMIT_DL_ROUND
                                             ? fp_config_dl_round_bytes(self->cfg)
                                             : fp_config_dl_max_bytes(self->cfg)),
                    len, kv);
}

/* Publishes one committed (or, without a state directory, stamped) item. */
static void s_publish_item(void *ctx, fp_commit_item_t *it)
{
    emit_t *self = ctx;
    {
        if (it->type == FP_EMIT_EVENT && it->nparts == 2) {
            /* The kind from the event's own typed field (stamped buffers
               are 8-byte aligned: see commit.c's s_event_buf). */
            int kind = fp_codec_checkpoint_kind(zmq_msg_data(&it->part[1]),
                                                zmq_msg_size(&it->part[1]));
            fp_metric_t m = kind == FP_CK_CONSUMPTION  ? FP_M_EVENTS_CONSUMPTION
                            : kind == FP_CK_COMPLETION ? FP_M_EVENTS_COMPLETION
                            : kind == FP_CK_SCRAP      ? FP_M_EVENTS_SCRAP
                                                       : FP_M_EVENTS_COUNTER_RESET;
            fp_metrics_add(self->metrics, m, 1);
            zmq_msg_send(&it->part[0], self->pub, ZMQ_SNDMORE);
            zmq_msg_send(&it->part[1], self->pub, 0);
        } else if (it->type == FP_EMIT_DEAD && it->nparts >= 3) {
            fp_metrics_dead_letter(self->metrics, (int)it->reason);
            if (fp_log_admit(FP_LOG_WARN, "emit"))
                s_log_dead_letter((int)it->reason, it);
            zmq_msg_send(&it->part[0], self->dlpub, ZMQ_SNDMORE);
            zmq_msg_send(&it->part[1], self->dlpub, ZMQ_SNDMORE);
            zmq_msg_send(&it->part[2], self->dlpub, 0);
        }
    }
}


/* Reads one message (header + frames) from sock into the core; false when
   none was waiting. */
static bool s_receive(emit_t *self, void *sock)
{
    fp_emit_hdr_t h;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return false;
    }
    bool more = zmq_msg_more(&m);
    /* Our own stages wrote it: a wrong header is our bug. */
    assert(zmq_msg_size(&m) == sizeof h);
    memcpy(&h, zmq_msg_data(&m), sizeof h);
    zmq_msg_close(&m);
    fp_commit_item_t it = {.type = h.type};
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        zmq_msg_recv(&part, sock, 0);
        more = zmq_msg_more(&part);
        if (it.nparts < 4)
            it.part[it.nparts++] = part;
        else
            zmq_msg_close(&part);
    }
    fp_commit_take(self->core, &h, &it);
    return true;
}

/* Tells the outbox readers how far the outbox is committed. */
static void s_notice(emit_t *self, uint64_t round, uint32_t flags)
{
    fp_notice_t n = {.type = FP_MSG_NOTICE, .flags = flags, .round = round,
                     .global_seq = fp_commit_global_seq(self->core)};
    zmq_send(self->notice, &n, sizeof n, ZMQ_DONTWAIT);
}

static void s_hb_feed(void *ctx, const char *topic, uint64_t stream_seq)
{
    json_object_set_new(ctx, topic, json_integer((json_int_t)stream_seq));
}

/* The feed's heartbeat: ["heartbeat"][{"instance":..,"global_seq":G,
   "feeds":{topic:stream_seq,...},"wall_ns":..}], what is committed and
   published so far (docs/subscribers.md). jansson builds it: topics hold
   producers' strings, and once a second the cost does not matter. */
static void s_heartbeat(emit_t *self)
{
    json_t *feeds = json_object();
    if (!feeds)
        return;
    fp_commit_each_feed(self->core, s_hb_feed, feeds);
    json_t *o = json_pack("{s:s, s:I, s:o, s:I}", "instance", self->cfg->instance, "global_seq",
                          (json_int_t)fp_commit_global_seq(self->core), "feeds", feeds, "wall_ns",
                          (json_int_t)fp_wall_ns());
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text) {
        zmq_send(self->pub, "heartbeat", 9, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(self->pub, text, strlen(text), ZMQ_DONTWAIT);
    }
    free(text);
    json_decref(o);
}

/* Reads the outbox readers' messages into the core: position reports
   (fp_reader_pos_t) and dead letters (fp_reader_dl_t + [topic][json]
   [bytes][logfmt], reader.h fp_reader_dead_letter). */
static void s_reader_positions(emit_t *self)
{
    for (int k = 0; k < 1024; k++) {
        zmq_msg_t head;
        zmq_msg_init(&head);
        if (zmq_msg_recv(&head, self->readers, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&head);
            return;
        }
        fp_commit_item_t it = {.nparts = 0};
        int more = zmq_msg_more(&head);
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, self->readers, 0) < 0) {
                zmq_msg_close(&part);
                break;
            }
            more = zmq_msg_more(&part);
            if (it.nparts < 4)
                it.part[it.nparts++] = part;
            else
                zmq_msg_close(&part); /* our own readers send 4; be safe */
        }
        size_t hl = zmq_msg_size(&head);
        uint32_t type = 0;
        if (hl >= 4)
            memcpy(&type, zmq_msg_data(&head), 4);
        if (type == FP_MSG_READER_POS && hl == sizeof(fp_reader_pos_t)) {
            fp_reader_pos_t m;
            memcpy(&m, zmq_msg_data(&head), sizeof m);
            m.name[FP_READER_NAME_MAX] = 0;
            if (fp_commit_reader_position(self->core, m.name, m.position) == -ENOMEM)
                fp_log(FP_LOG_ERROR, "emit", "out of memory: a reader position is not kept",
                       "reader=%s position=%llu", m.name, (unsigned long long)m.position);
        } else if (type == FP_MSG_READER_DL && hl == sizeof(fp_reader_dl_t) && it.nparts == 4) {
            fp_reader_dl_t m;
            memcpy(&m, zmq_msg_data(&head), sizeof m);
            m.name[FP_READER_NAME_MAX] = 0;
            int rc = fp_commit_reader_dead_letter(self->core, m.name, m.aux, m.reason, &it);
            if (rc != 0)
                fp_log(FP_LOG_ERROR, "emit", "a reader's dead letter is not kept",
                       "reader=%s error=%s", m.name, rc == -ENOMEM ? "out of memory" : "invalid");
        }
        for (int p = 0; p < it.nparts; p++)
            zmq_msg_close(&it.part[p]);
        zmq_msg_close(&head);
    }
}

static void s_detached(void *ctx, const char *name, uint64_t position, uint64_t lag)
{
    const emit_t *self = ctx;
    fp_log(FP_LOG_ERROR, "emit",
           "reader DETACHED: it fell reader_max_lag_events behind; retention no longer waits "
           "for it and the events it has not read will be trimmed",
           "reader=%s position=%llu lag_events=%llu reader_max_lag_events=%llu", name,
           (unsigned long long)position, (unsigned long long)lag,
           (unsigned long long)s_max_lag(self));
}

/* For each reader that holds retention, once a second (fp_outbox_lags):
   its gauges, and the warning at half the bound when the minute's gate is
   open (self->warn_now). */
static int s_reader_lag(void *ctx, const char *name, uint64_t position, uint64_t lag,
                        fp_outbox_lag_t verdict)
{
    const emit_t *self = ctx;
    fp_metrics_set_reader(self->metrics, name, position, lag, 0);
    if (self->warn_now && verdict == FP_OUTBOX_LAG_WARN)
        fp_log(FP_LOG_WARN, "emit", "reader lagging: it will be detached at the bound",
               "reader=%s position=%llu lag_events=%llu reader_max_lag_events=%llu", name,
               (unsigned long long)position, (unsigned long long)lag,
               (unsigned long long)s_max_lag(self));
    return 0;
}

static int s_detached_metric(void *ctx, const char *name, uint64_t position, uint32_t flags,
                             int64_t updated_ns)
{
    const emit_t *self = ctx;
    if ((flags & FP_OUTBOX_READER_DETACHED))
        fp_metrics_set_reader(self->metrics, name, position, 0, 1);
    return 0;
}

/* Once a second: the dead letters' retention (age, count, bytes), their
   metrics, and the commit core's measure of them. */
static void s_trim_deadletters(emit_t *self)
{
    const fp_config_t *cfg = self->cfg;
    fp_store_dl_trim_t del;
    uint64_t count = 0, bytes = 0;
    int rc = fp_store_trim_deadletters(self->store,
                                       fp_wall_ns() - cfg->deadletter_retention_ms * 1000000,
                                       cfg->deadletter_max_count, fp_config_dl_max_bytes(cfg),
                                       FP_DL_TRIM_MAX, &del, &count, &bytes);
    if (rc != 0) {
        fp_log(FP_LOG_ERROR, "emit", "dead-letter retention failed; retrying in a second",
               "error=\"%s\"", fp_store_strerror(rc));
        return;
    }
    uint64_t n = del.age + del.count + del.bytes;
    if (n)
        fp_log(FP_LOG_INFO, "emit", "dead letters trimmed",
               "deleted=%llu by_age=%llu by_count=%llu by_bytes=%llu stored=%llu bytes=%llu",
               (unsigned long long)n, (unsigned long long)del.age,
               (unsigned long long)del.count, (unsigned long long)del.bytes,
               (unsigned long long)count, (unsigned long long)bytes);
    fp_metrics_set_deadletters(self->metrics, count, bytes, n);
    fp_commit_dl_stored(self->core, bytes);
}

/* Once a second: retention, and the readers' lag against their bound. */
static void s_housekeeping(emit_t *self, int64_t now)
{
    s_trim_deadletters(self);
    uint64_t deleted = 0, damaged = 0;
    fp_outbox_trim_ex(self->store, fp_wall_ns() - self->cfg->retention_ms * 1000000, 10000,
                      &deleted, &damaged);
    if (damaged)
        fp_log(FP_LOG_ERROR, "emit", "damaged event deleted from the outbox (every sink is past it)",
               "global_seq=%llu", (unsigned long long)damaged);
    fp_outbox_detach_lagging(self->store, s_max_lag(self), s_detached, self);
    uint64_t outbox_bytes = 0, map_bytes = 0;
    self->warn_now = now >= self->next_lag_warn;
    if (self->warn_now)
        self->next_lag_warn = now + 60 * (int64_t)1000000000;
    if (fp_outbox_lags(self->store, s_max_lag(self), s_reader_lag, self,
                       &outbox_bytes, &map_bytes) == 0)
        fp_metrics_set_outbox(self->metrics, outbox_bytes, map_bytes);
    uint64_t used = 0, map = 0;
    if (fp_store_usage(self->store, &used, &map) == 0)
        fp_metrics_set_state_used(self->metrics, used);
    /* Detached readers (fp_outbox_lags skips them), also those detached
       before a restart. */
    fp_outbox_each_reader(self->store, s_detached_metric, self);
}

/* Commits and publishes every complete round, oldest first. */
static void s_advance(emit_t *self)
{
    int64_t now = fp_now_ns();
    while (fp_commit_ready(self->core)) {
        if (self->stalled && now < self->retry_at)
            return;
        int rc = fp_commit_round(self->core);
        if (rc != 0) {
            if (!self->stalled) {
                self->stalled_since = now;
                fp_log(FP_LOG_ERROR, "emit",
                       "commit failed: not acknowledging or publishing until it succeeds",
                       "round=%llu error=\"%s\"",
                       (unsigned long long)fp_commit_next_round(self->core), fp_store_strerror(rc));
            }
            self->stalled = true;
            self->retry_at = now + 1000000000;
            fp_metrics_set_commit_stalled(self->metrics, 1);
            return;
        }
        if (self->stalled) {
            fp_log(FP_LOG_INFO, "emit", "commit recovered", "round=%llu stalled_ms=%lld",
                   (unsigned long long)fp_commit_next_round(self->core),
                   (long long)((now - self->stalled_since) / 1000000));
            self->stalled = false;
            fp_metrics_set_commit_stalled(self->metrics, 0);
        }
        fp_commit_round_t R;
        fp_commit_publish(self->core, &R);
        fp_committed_t c = {FP_MSG_COMMITTED, 0, R.round};
        zmq_send(self->acks, &c, sizeof c, 0);
        s_notice(self, R.round, 0);
        fp_hist_observe(&self->round_hist, FP_H_ROUND, fp_wall_ns() - R.wall_ns);
        fp_metrics_hist_merge(self->metrics, FP_H_ROUND, &self->round_hist);
        fp_metrics_add(self->metrics, FP_M_ROUNDS, 1);
        fp_metrics_round_done(self->metrics, fp_now_ns());
        if (R.flags & FP_BARRIER_DRAIN)
            self->done = true;
    }
}

void *fp_emit_main(void *argp)
{
    fp_stage_args_t *args = argp;
    emit_t self_ = {.cfg = args->cfg, .metrics = args->metrics, .store = args->store};
    emit_t *self = &self_;
    const fp_config_t *cfg = self->cfg;
    fp_emit_set_reader_max_lag(0); /* a new run: its config's until a reload */
    char err[512] = "";
    int nsenders = 1 + cfg->workers + cfg->shards;
    bool ok = (self->core = fp_commit_new(nsenders, args->start_round, self->store,
                                          s_publish_item, self, err, sizeof err)) != NULL;
    if (!ok)
        snprintf(err + strlen(err), sizeof err - strlen(err), " (emit)");
    if (ok) {
        fp_commit_dl_limits_t lim = {.round_bytes = fp_config_dl_round_bytes(cfg),
                                     .store_bytes = fp_config_dl_max_bytes(cfg),
                                     .dropped = s_dl_dropped};
        fp_commit_set_dl_limits(self->core, &lim);
        uint64_t count = 0, bytes = 0;
        if (self->store && fp_store_deadletter_usage(self->store, &count, &bytes) == 0) {
            fp_commit_dl_stored(self->core, bytes);
            fp_metrics_set_deadletters(self->metrics, count, bytes, 0);
        }
    }
    if (ok)
        ok = (self->in = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, FP_EP_EMIT, 1, -1,
                                         cfg->queue_batches, err, sizeof err)) != NULL;
    if (ok)
        ok = (self->dlin = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, FP_EP_DEAD, 1, -1,
                                           cfg->queue_batches, err, sizeof err)) != NULL;
    /* COMMITTED notices to ingest: on its acks pipe (no HWM there). */
    if (ok)
        ok = (self->acks = fp_stage_socket(args->zmq_ctx, ZMQ_PUSH, FP_EP_ACKS, 0, 0, -1, err,
                                           sizeof err)) != NULL;
    /* Notices to the outbox readers: a PUB never blocks emit. */
    if (ok)
        ok = (self->notice = fp_stage_socket(args->zmq_ctx, ZMQ_PUB, FP_EP_NOTICE, 1, 1000, -1,
                                             err, sizeof err)) != NULL;
    /* Position reports from the outbox readers: no HWM, so a reader never
       blocks on emit (they are a few a second). */
    if (ok)
        ok = (self->readers = fp_stage_socket(args->zmq_ctx, ZMQ_PULL, FP_EP_READERS, 1, -1, 0,
                                              err, sizeof err)) != NULL;
    if (ok)
        ok = (self->pub = fp_stage_server_socket(args->zmq_ctx, ZMQ_PUB, cfg, cfg->publish, err,
                                                 sizeof err)) != NULL;
    if (ok)
        ok = (self->dlpub = fp_stage_server_socket(args->zmq_ctx, ZMQ_PUB, cfg, cfg->deadletter,
                                                   err, sizeof err)) != NULL;
    if (ok && self->store)
        fp_log(FP_LOG_INFO, "emit", "restored", "round=%llu global_seq=%llu feeds=%zu",
               (unsigned long long)(args->start_round - 1),
               (unsigned long long)fp_commit_global_seq(self->core), fp_commit_feeds(self->core));
    fp_stage_ready(args, "emit", ok ? 0 : -1, err);
    self->slot = fp_metrics_stage(self->metrics, FP_STAGE_EMIT, 0);
    fp_metrics_stage_beat(self->slot, fp_now_ns());
    int64_t drain_deadline = 0;
    while (ok && !self->done) {
        /* Stop reading (back-pressure) while too many rounds wait for a
           commit that keeps failing. */
        bool reading = fp_commit_pending(self->core) < FP_ROUNDS_MAX;
        zmq_pollitem_t items[3] = {{self->in, 0, reading ? ZMQ_POLLIN : 0, 0},
                                   {self->dlin, 0, reading ? ZMQ_POLLIN : 0, 0},
                                   {self->readers, 0, ZMQ_POLLIN, 0}};
        long timeout = self->stalled ? 100 : 1000;
        if (zmq_poll(items, 3, timeout) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        int64_t woke = fp_now_ns();
        fp_metrics_stage_beat(self->slot, woke);
        uint64_t received = 0; /* from the shards' pipe: the queue gauge's other side */
        for (int s = 0; s < 2; s++) {
            void *sock = s == 0 ? self->in : self->dlin;
            /* Non-blocking receives until the pipe is empty, in bounded
               bursts (no zmq_poll per message). */
            for (int k = 0; k < 256 && (items[s].revents & ZMQ_POLLIN); k++) {
                if (!s_receive(self, sock))
                    break;
                received += s == 0;
            }
        }
        if (items[2].revents & ZMQ_POLLIN)
            s_reader_positions(self);
        fp_metrics_stage_received(self->slot, received);
        s_advance(self);
        if (cfg->feed_heartbeat_ms && !self->stalled && woke >= self->next_heartbeat) {
            s_heartbeat(self);
            self->next_heartbeat = woke + (int64_t)cfg->feed_heartbeat_ms * 1000000;
        }
        if (self->store && woke >= self->next_trim) {
            s_housekeeping(self, woke);
            self->next_trim = woke + 1000000000;
        }
        /* The drain round is in but cannot be committed: give up after the
           drain timeout (acks were never sent: producers resend). */
        uint32_t nflags = 0;
        bool complete = false;
        if (self->stalled && fp_commit_newest(self->core, NULL, &nflags, &complete) &&
            (nflags & FP_BARRIER_DRAIN) && complete) {
            if (!drain_deadline)
                drain_deadline = woke + cfg->drain_timeout_ms * 1000000;
            else if (woke >= drain_deadline) {
                fp_log(FP_LOG_ERROR, "emit", "drain: rounds not committed, exiting without them",
                       "rounds=%zu", fp_commit_pending(self->core));
                break;
            }
        }
        fp_metrics_stage_busy(self->slot, fp_now_ns() - woke);
    }
    if (self->notice)
        s_notice(self, self->core ? fp_commit_next_round(self->core) - 1 : 0, FP_NOTICE_DONE);
    if (self->slot)
        fp_metrics_stage_exit(self->slot);
    void *socks[] = {self->in, self->dlin, self->pub, self->dlpub, self->acks, self->notice,
                     self->readers};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (socks[i])
            zmq_close(socks[i]);
    fp_commit_destroy(&self->core);
    return NULL;
}
