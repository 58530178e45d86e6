/*  reader.c - the durable outbox reader actor. See reader.h.

    DESIGN
    - The thread owns a SUB on emit's notices, a PUSH to emit's reader
      positions pipe and the type's ctx. It reads the outbox in its own LMDB
      read transactions (outbox.h: any thread), batch_max events at a time,
      copying each batch out of the map before calling cb_deliver: a read
      transaction must stay short (it pins its snapshot's pages), while a
      delivery may wait on a database or an HTTP peer.
    - `target` is the last committed global_seq it knows of (notices; at
      start, the store). It delivers while position < target.
    - Its two sockets are made in fp_reader_start (so the subscription is
      in before it returns) and used only by the thread from then on, and
      closed after pthread_join: libzmq allows a socket to move between
      threads across a full barrier, which pthread_create and pthread_join
      are.
    - The position report is sent without waiting (emit's pipe has no HWM:
      emit never blocks on a reader, nor a reader on emit).
*/
#include "reader.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "grow.h"
#include "log.h"
#include "outbox.h"
#include "stage.h"
#include "store.h"

struct fp_reader {
    fp_reader_opts_t o;
    char name[FP_READER_NAME_MAX + 1];
    char component[FP_READER_NAME_MAX + 8]; /* "reader-NAME" for the log */
    struct fp_store *store;
    void *notice, *pos;
    pthread_t thread;
    bool started;
    /* Owned by the thread once it runs. */
    uint64_t target;
    bool done, opened, detached_logged, in_open;
    int64_t done_at;        /* when DONE was seen (fp_now_ns) */
    int64_t retry_at, next_idle;
    int retry_next_ms;      /* fp_reader_retry_in: the next delay, -1 = retry_ms */
    uint64_t aux[2];
    bool rewound, deferred, reopen; /* reopen: fp_reader_redo asked for it */
    uint64_t offered;       /* the last global_seq cb_deliver accepted */
    uint64_t delivering;    /* in cb_deliver: its batch's last global_seq (else 0) */
    uint64_t dmg_first, dmg_last; /* deferred: the last run of damaged events accepted (0: none) */
    /* The batch copied out of the map. */
    fp_reader_event_t *evs;
    size_t evs_cap, nevs;
    uint8_t *blob;
    size_t blob_cap, blob_len;
    /* Counters: relaxed stores by the thread, relaxed loads by anyone. */
    _Atomic uint64_t position, delivered, errors, target_pub, gap;
    _Atomic bool detached;
};

static bool s_name_ok(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len < 1 || len > FP_READER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

typedef struct {
    fp_reader_t *r;
    int rc;
} s_copy_t;

/* Copies one event out of the map (offsets first: blob may move). */
static int s_copy(void *ctx, uint64_t global_seq, uint64_t round, const char *topic, size_t tlen,
                  const void *ev, size_t evlen)
{
    s_copy_t *c = ctx;
    fp_reader_t *r = c->r;
    if (!ev) { /* damaged (FP_OUTBOX_READ_DAMAGED): its global_seq only */
        if (fp_grow(&r->evs, &r->evs_cap, r->nevs + 1, sizeof *r->evs, 64) != 0) {
            c->rc = -ENOMEM;
            return 1;
        }
        r->evs[r->nevs++] = (fp_reader_event_t){.global_seq = global_seq, .damaged = true};
        return 0;
    }
    if (fp_grow(&r->evs, &r->evs_cap, r->nevs + 1, sizeof *r->evs, 64) != 0 ||
        fp_grow(&r->blob, &r->blob_cap, r->blob_len + tlen + evlen + 8, 1, 1 << 16) != 0) {
        c->rc = -ENOMEM;
        return 1;
    }
    /* The event after the topic, 8-byte aligned, so a type may verify the
       Checkpoint in place (the FlatBuffers verifier wants alignment). */
    size_t toff = r->blob_len, eoff = (toff + tlen + 7) & ~(size_t)7;
    memcpy(r->blob + toff, topic, tlen);
    memcpy(r->blob + eoff, ev, evlen);
    r->blob_len = eoff + evlen;
    r->evs[r->nevs++] = (fp_reader_event_t){global_seq, round, (const char *)(uintptr_t)toff, tlen,
                                            (const void *)(uintptr_t)eoff, evlen, false};
    return 0;
}

/* After a failure: when to try again. */
static void s_fail_later(fp_reader_t *self)
{
    int ms = self->retry_next_ms >= 0 ? self->retry_next_ms : self->o.retry_ms;
    self->retry_next_ms = -1;
    self->retry_at = fp_now_ns() + (int64_t)ms * 1000000;
}

/* Events first..last are gone before this reader got to them. */
static void s_gap(fp_reader_t *self, uint64_t first, uint64_t last)
{
    atomic_fetch_add_explicit(&self->gap, last - first + 1, memory_order_relaxed);
    fp_log(FP_LOG_ERROR, self->component,
           "GAP: events no longer retained in the outbox; they are lost to this reader",
           "from=%llu to=%llu events=%llu", (unsigned long long)first, (unsigned long long)last,
           (unsigned long long)(last - first + 1));
}

static void s_report(fp_reader_t *self, uint64_t position)
{
    fp_reader_pos_t m = {.type = FP_MSG_READER_POS, .position = position};
    memcpy(m.name, self->name, strlen(self->name) + 1);
    zmq_send(self->pos, &m, sizeof m, ZMQ_DONTWAIT);
}

/* Opens the type when it is not open (at start, eagerly: a type may have
   work besides delivery, cb_idle). true when open. */
static bool s_open(fp_reader_t *self)
{
    if (self->opened)
        return true;
    char err[256] = "";
    self->in_open = true;
    int orc = self->o.type->cb_open ? self->o.type->cb_open(self->o.ctx, self, err, sizeof err) : 0;
    self->in_open = false;
    if (orc != 0) {
        atomic_fetch_add_explicit(&self->errors, 1, memory_order_relaxed);
        fp_log(FP_LOG_WARN, self->component, "open failed; retrying", "error=\"%s\"", err);
        s_fail_later(self);
        return false;
    }
    self->opened = true;
    uint64_t pos = atomic_load_explicit(&self->position, memory_order_relaxed);
    self->offered = pos;
    /* Report where it stands at once (also a new reader with nothing to
       deliver yet, and the type's own position after a rewind), so that
       retention waits for it from its first start. */
    self->rewound = false;
    s_report(self, pos);
    return true;
}

/* After a failure: offer again from the finished position (a deferring
   type drops what it held). */
static void s_back_to_finished(fp_reader_t *self)
{
    self->offered = atomic_load_explicit(&self->position, memory_order_relaxed);
}

/* A deferring type: damaged events right after the finished position
   are finished too (the type has nothing pending before them and can
   never keep them); else a damaged last event would wait for the next
   event's finish. */
static void s_past_damaged(fp_reader_t *self)
{
    uint64_t p = atomic_load_explicit(&self->position, memory_order_relaxed);
    if (!self->dmg_first || self->dmg_last <= p)
        return;
    if (self->dmg_first != p + 1 || self->dmg_last > self->offered)
        return;
    atomic_store_explicit(&self->position, self->dmg_last, memory_order_relaxed);
    s_report(self, self->dmg_last);
    self->dmg_first = self->dmg_last = 0;
}

/* Reads and delivers one batch. true when it made progress. */
static bool s_deliver(fp_reader_t *self)
{
    if (!s_open(self))
        return false;
    uint64_t pos = self->offered;
    if (pos >= self->target)
        return false;
    char err[256] = "";
    self->nevs = 0;
    self->blob_len = 0;
    s_copy_t c = {self, 0};
    uint64_t want = self->target - pos;
    uint32_t max = want < self->o.batch_max ? (uint32_t)want : self->o.batch_max;
    int n = fp_outbox_read_ex(self->store, pos + 1, max, FP_OUTBOX_READ_DAMAGED, s_copy, &c);
    if (n < 0 || c.rc < 0) {
        atomic_fetch_add_explicit(&self->errors, 1, memory_order_relaxed);
        fp_log(FP_LOG_ERROR, self->component, "outbox read failed; retrying", "error=\"%s\"",
               fp_store_strerror(n < 0 ? n : c.rc));
        s_fail_later(self);
        return false;
    }
    if (self->nevs == 0 || self->evs[0].global_seq > self->target) {
        /* Nothing kept up to target: all of pos+1..target was trimmed. */
        s_gap(self, pos + 1, self->target);
        self->offered = self->target;
        if (!self->deferred) {
            atomic_store_explicit(&self->position, self->target, memory_order_relaxed);
            s_report(self, self->target);
        }
        return false;
    }
    if (self->evs[0].global_seq != pos + 1) {
        /* Trimmed before we got to them: once detached (retention waits
           for an attached reader), or after the type rewound to a position
           older than the outbox keeps. */
        s_gap(self, pos + 1, self->evs[0].global_seq - 1);
    }
    for (size_t i = 0; i < self->nevs; i++) { /* offsets -> pointers */
        if (self->evs[i].damaged)
            continue;
        self->evs[i].topic = (const char *)self->blob + (uintptr_t)self->evs[i].topic;
        self->evs[i].ev = self->blob + (uintptr_t)self->evs[i].ev;
    }
    self->retry_next_ms = -1;
    self->delivering = self->evs[self->nevs - 1].global_seq;
    int done = self->o.type->cb_deliver(self->o.ctx, self, self->evs, self->nevs, err,
                                        sizeof err);
    self->delivering = 0;
    /* A failure: a negative result, or a prefix (maybe 0) after which the
       type asked for a delay (fp_reader_retry_in: the sinks' back-off). */
    bool bad = done < 0 || (size_t)done > self->nevs;
    if (bad || self->retry_next_ms >= 0) {
        atomic_fetch_add_explicit(&self->errors, 1, memory_order_relaxed);
        fp_log(FP_LOG_WARN, self->component, "delivery failed; retrying",
               "from=%llu finished=%d error=\"%s\"", (unsigned long long)self->evs[0].global_seq,
               bad ? 0 : done, err);
    }
    if (bad) {
        if (done == FP_READER_REOPEN) {
            if (self->o.type->cb_close)
                self->o.type->cb_close(self->o.ctx);
            self->opened = false;
        }
        s_back_to_finished(self);
        s_fail_later(self);
        return false;
    }
    if (done == 0) {
        s_fail_later(self);
        return false;
    }
    uint64_t npos = self->evs[done - 1].global_seq;
    self->offered = npos;
    atomic_fetch_add_explicit(&self->delivered, (uint64_t)done, memory_order_relaxed);
    if (!self->deferred) {
        atomic_store_explicit(&self->position, npos, memory_order_relaxed);
        s_report(self, npos);
    } else {
        for (int i = 0; i < done; i++) {
            uint64_t g = self->evs[i].global_seq;
            if (!self->evs[i].damaged)
                continue;
            if (self->dmg_first && self->dmg_last + 1 == g)
                self->dmg_last = g;
            else
                self->dmg_first = self->dmg_last = g;
        }
        s_past_damaged(self);
    }
    if ((size_t)done < self->nevs && self->retry_next_ms >= 0) {
        /* A failure after a finished prefix (fp_reader_retry_in was
           called): the rest after its back-off. */
        s_fail_later(self);
        return false;
    }
    /* All of it, or a prefix with no failure (the type holds the rest back
       until the next batch completes it): go on at once; each such call
       moved the position, so this cannot spin. */
    self->retry_next_ms = -1;
    return true;
}

/* Once a second: the committed flags (emit may have detached us for
   lagging, an operator with `floorpost sinks detach|attach`). */
static void s_check_flags(fp_reader_t *self)
{
    uint32_t flags = 0;
    if (fp_outbox_reader(self->store, self->name, NULL, &flags) != 0)
        return;
    bool det = (flags & FP_OUTBOX_READER_DETACHED) != 0;
    atomic_store_explicit(&self->detached, det, memory_order_relaxed);
    uint64_t pos = atomic_load_explicit(&self->position, memory_order_relaxed);
    if (det && !self->detached_logged) {
        fp_log(FP_LOG_ERROR, self->component,
               "DETACHED: retention no longer waits for this reader (it lagged "
               "reader_max_lag_events, or an operator ran `floorpost sinks detach`); events it "
               "has not read may be trimmed and are then lost to it",
               "position=%llu", (unsigned long long)pos);
        self->detached_logged = true;
    } else if (!det && self->detached_logged) {
        fp_log(FP_LOG_WARN, self->component, "re-attached: retention waits for this reader again",
               "position=%llu", (unsigned long long)pos);
        self->detached_logged = false;
    }
}

/* After DONE: true once drain_ms has passed since it came (notes when). */
static bool s_drain_over(fp_reader_t *self, int64_t now)
{
    if (!self->done)
        return false;
    if (!self->done_at)
        self->done_at = now;
    return self->o.drain_ms && now - self->done_at >= (int64_t)self->o.drain_ms * 1000000;
}

static void *s_thread(void *arg)
{
    fp_reader_t *self = arg;
    int64_t next_check = 0;
    for (;;) {
        int64_t now = fp_now_ns();
        bool ready = now >= self->retry_at;
        bool more = false;
        bool drain_over = s_drain_over(self, now);
        if (ready) {
            /* A bounded run of batches, then the notices again. */
            for (int k = 0; k < 16 && !drain_over; k++) {
                if (!(more = s_deliver(self)))
                    break;
                /* a delivery may take long (a slow ERP): DONE between them */
                fp_notice_drain(self->notice, &self->target, &self->done);
                drain_over = s_drain_over(self, fp_now_ns());
            }
        }
        uint64_t pos = self->opened ? self->offered
                                    : atomic_load_explicit(&self->position, memory_order_relaxed);
        /* After emit's DONE: exit once everything committed is delivered,
           or at once if the last attempt failed (a sink that is down must
           not hold the drain; what it has not finished is offered again at
           the next start, from the committed position). */
        if (self->done && (pos >= self->target || self->retry_at > fp_now_ns() || drain_over)) {
            if (pos < self->target)
                fp_log(FP_LOG_WARN, self->component,
                       "exiting with events not delivered: offered again at the next start",
                       "position=%llu committed=%llu reason=%s", (unsigned long long)pos,
                       (unsigned long long)self->target, drain_over ? "drain_ms" : "failing");
            break;
        }
        if (now >= next_check) {
            s_check_flags(self);
            next_check = now + 1000000000;
        }
        if (self->opened && self->o.type->cb_idle && (now >= self->next_idle || more)) {
            self->o.type->cb_idle(self->o.ctx, self);
            self->next_idle = now + 1000000000;
            if (self->reopen) {
                self->reopen = false;
                if (self->o.type->cb_close)
                    self->o.type->cb_close(self->o.ctx);
                self->opened = false;
            }
        }
        atomic_store_explicit(&self->target_pub, self->target, memory_order_relaxed);
        long timeout = more ? 0 : (self->opened && self->o.type->cb_idle) ? 250 : 1000;
        if (!more && pos < self->target && self->retry_at > now)
            timeout = (long)((self->retry_at - now) / 1000000) + 1;
        zmq_pollitem_t it = {self->notice, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, timeout) < 0 && zmq_errno() != EINTR)
            break; /* ETERM */
        fp_notice_drain(self->notice, &self->target, &self->done);
        /* at once: fp_sink_committed tells a type where a batch read next
           may end (a round's end) */
        atomic_store_explicit(&self->target_pub, self->target, memory_order_relaxed);
    }
    if (self->opened && self->o.type->cb_close)
        self->o.type->cb_close(self->o.ctx);
    return NULL;
}

fp_reader_t *fp_reader_start(void *zmq_ctx, struct fp_store *store, const fp_reader_opts_t *o,
                             char *err, size_t errlen)
{
    if (!store || !o || !o->type || !o->type->cb_deliver) {
        snprintf(err, errlen, "reader: a store and a type with cb_deliver are required");
        return NULL;
    }
    if (!s_name_ok(o->name)) {
        snprintf(err, errlen, "reader name '%.80s': allowed 1..63 of [A-Za-z0-9._-]",
                 o->name ? o->name : "");
        return NULL;
    }
    if (o->batch_max > 10000 || o->retry_ms < 0) {
        snprintf(err, errlen, "reader %s: batch_max 1..10000, retry_ms >= 0", o->name);
        return NULL;
    }
    fp_reader_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->o = *o;
    if (!self->o.batch_max)
        self->o.batch_max = 1000;
    if (!self->o.retry_ms)
        self->o.retry_ms = 1000;
    snprintf(self->name, sizeof self->name, "%s", o->name);
    snprintf(self->component, sizeof self->component, "reader-%s", o->name);
    self->store = store;
    /* Where to start: the committed position, else start_after (or just
       before the oldest event kept). */
    uint64_t pos = 0, round = 0, last = 0;
    uint32_t flags = 0;
    self->retry_next_ms = -1;
    int rc = fp_outbox_reader_ex(store, self->name, &pos, &flags, self->aux);
    if (rc == FP_STORE_NOTFOUND) {
        uint64_t oldest = 0;
        pos = o->start_after;
        if (!pos && fp_outbox_oldest(store, &oldest) == 0 && oldest > 0)
            pos = oldest - 1;
        /* Known from now on, before emit's first trim (outbox.h). */
        int arc = fp_outbox_add_reader(store, self->name, pos);
        if (arc != 0)
            fp_log(FP_LOG_WARN, self->component,
                   "could not record the new reader's start; its first report will",
                   "position=%llu error=\"%s\"", (unsigned long long)pos, fp_store_strerror(arc));
        rc = 0;
    }
    if (rc == 0)
        rc = fp_store_last_round(store, &round, &last);
    if (rc != 0) {
        snprintf(err, errlen, "reader %s: %s", self->name, fp_store_strerror(rc));
        free(self);
        return NULL;
    }
    if (rc == 0 && flags == 0 && pos == 0) {
        /* Known only by its aux cursor so far: start as a new reader. */
        uint64_t oldest = 0;
        pos = o->start_after;
        if (!pos && fp_outbox_oldest(store, &oldest) == 0 && oldest > 0)
            pos = oldest - 1;
    }
    atomic_store_explicit(&self->position, pos, memory_order_relaxed);
    atomic_store_explicit(&self->detached, (flags & FP_OUTBOX_READER_DETACHED) != 0,
                          memory_order_relaxed);
    self->target = last;
    atomic_store_explicit(&self->target_pub, last, memory_order_relaxed);
    self->notice = fp_stage_socket(zmq_ctx, ZMQ_SUB, FP_EP_NOTICE, 0, -1, -1, err, errlen);
    if (self->notice)
        zmq_setsockopt(self->notice, ZMQ_SUBSCRIBE, "", 0);
    self->pos = self->notice ? fp_stage_socket(zmq_ctx, ZMQ_PUSH, FP_EP_READERS, 0, 0, -1, err,
                                               errlen)
                             : NULL;
    if (!self->pos || pthread_create(&self->thread, NULL, s_thread, self) != 0) {
        if (self->pos)
            snprintf(err, errlen, "reader %s: pthread_create failed", self->name);
        if (self->notice)
            zmq_close(self->notice);
        if (self->pos)
            zmq_close(self->pos);
        free(self);
        return NULL;
    }
    self->started = true;
    char tname[16]; /* the kernel's limit, with the NUL: the name cut to 10 */
    snprintf(tname, sizeof tname, "fp-r-%.10s", self->name);
    pthread_setname_np(self->thread, tname);
    return self;
}

void fp_reader_stop(fp_reader_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fp_reader_t *self = *self_p;
    if (self->started)
        pthread_join(self->thread, NULL);
    /* pthread_join orders the thread's writes before these closes. */
    zmq_close(self->notice);
    zmq_close(self->pos);
    free(self->evs);
    free(self->blob);
    free(self);
    *self_p = NULL;
}

uint64_t fp_reader_position(const fp_reader_t *self)
{
    return atomic_load_explicit(&((fp_reader_t *)self)->position, memory_order_relaxed);
}

uint64_t fp_reader_delivered(const fp_reader_t *self)
{
    return atomic_load_explicit(&((fp_reader_t *)self)->delivered, memory_order_relaxed);
}

uint64_t fp_reader_errors(const fp_reader_t *self)
{
    return atomic_load_explicit(&((fp_reader_t *)self)->errors, memory_order_relaxed);
}

uint64_t fp_reader_target(const fp_reader_t *self)
{
    return atomic_load_explicit(&((fp_reader_t *)self)->target_pub, memory_order_relaxed);
}

uint64_t fp_reader_gap_events(const fp_reader_t *self)
{
    return atomic_load_explicit(&((fp_reader_t *)self)->gap, memory_order_relaxed);
}

bool fp_reader_is_detached(const fp_reader_t *self)
{
    return atomic_load_explicit(&((fp_reader_t *)self)->detached, memory_order_relaxed);
}

const char *fp_reader_name(const fp_reader_t *self)
{
    return self->name;
}

void fp_reader_rewind(fp_reader_t *self, uint64_t position)
{
    assert(self->in_open); /* our own types: only in cb_open */
    uint64_t old = atomic_load_explicit(&self->position, memory_order_relaxed);
    if (position != old) {
        fp_log(FP_LOG_INFO, self->component, "position from the sink's own store",
               "committed=%llu sink=%llu", (unsigned long long)old, (unsigned long long)position);
        atomic_store_explicit(&self->position, position, memory_order_relaxed);
        self->rewound = true;
    }
}

void fp_reader_aux(const fp_reader_t *self, uint64_t aux[2])
{
    aux[0] = self->aux[0];
    aux[1] = self->aux[1];
}

int fp_reader_dead_letter(fp_reader_t *self, const uint64_t aux[2], int reason,
                          const fp_dl_fields_t *f, const void *bytes, size_t len)
{
    fp_reader_dl_t m = {.type = FP_MSG_READER_DL, .reason = (uint32_t)reason,
                        .aux = {aux[0], aux[1]}};
    memcpy(m.name, self->name, strlen(self->name) + 1);
    /* emit's pipe has no HWM (see DESIGN): a send never fails for room. */
    if (zmq_send(self->pos, &m, sizeof m, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    fp_dead_letter_parts(self->pos, fp_dl_reason_name(reason), self->component, f, bytes, len);
    self->aux[0] = aux[0];
    self->aux[1] = aux[1];
    return 0;
}

void fp_reader_redo(fp_reader_t *self, bool reopen)
{
    s_back_to_finished(self);
    if (reopen)
        self->reopen = true;
    s_fail_later(self);
}

void fp_reader_defer(fp_reader_t *self)
{
    assert(self->in_open);
    self->deferred = true;
}

void fp_reader_finished(fp_reader_t *self, uint64_t position)
{
    uint64_t old = atomic_load_explicit(&self->position, memory_order_relaxed);
    uint64_t upto = self->offered > self->delivering ? self->offered : self->delivering;
    if (position <= old || position > upto)
        return;
    atomic_store_explicit(&self->position, position, memory_order_relaxed);
    s_report(self, position);
    s_past_damaged(self);
}

void fp_reader_retry_in(fp_reader_t *self, int ms)
{
    self->retry_next_ms = ms < 0 ? 0 : ms;
}
