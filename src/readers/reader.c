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
    bool done, opened, detached_logged;
    int64_t retry_at;
    /* The batch copied out of the map. */
    fp_reader_event_t *evs;
    size_t evs_cap, nevs;
    uint8_t *blob;
    size_t blob_cap, blob_len;
    /* Counters: relaxed stores by the thread, relaxed loads by anyone. */
    _Atomic uint64_t position, delivered, errors;
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
                                            (const void *)(uintptr_t)eoff, evlen};
    return 0;
}

static void s_report(fp_reader_t *self, uint64_t position)
{
    fp_reader_pos_t m = {.type = FP_MSG_READER_POS, .position = position};
    memcpy(m.name, self->name, strlen(self->name) + 1);
    zmq_send(self->pos, &m, sizeof m, ZMQ_DONTWAIT);
}

/* Reads and delivers one batch. true when it made progress. */
static bool s_deliver(fp_reader_t *self)
{
    uint64_t pos = atomic_load_explicit(&self->position, memory_order_relaxed);
    if (pos >= self->target)
        return false;
    char err[256] = "";
    if (!self->opened) {
        if (self->o.type->cb_open && self->o.type->cb_open(self->o.ctx, err, sizeof err) != 0) {
            atomic_fetch_add_explicit(&self->errors, 1, memory_order_relaxed);
            fp_log(FP_LOG_WARN, self->component, "open failed; retrying", "error=\"%s\"", err);
            self->retry_at = fp_now_ns() + (int64_t)self->o.retry_ms * 1000000;
            return false;
        }
        self->opened = true;
    }
    self->nevs = 0;
    self->blob_len = 0;
    s_copy_t c = {self, 0};
    uint64_t want = self->target - pos;
    uint32_t max = want < self->o.batch_max ? (uint32_t)want : self->o.batch_max;
    int n = fp_outbox_read(self->store, pos + 1, max, s_copy, &c);
    if (n < 0 || c.rc < 0) {
        atomic_fetch_add_explicit(&self->errors, 1, memory_order_relaxed);
        fp_log(FP_LOG_ERROR, self->component, "outbox read failed; retrying", "error=\"%s\"",
               fp_store_strerror(n < 0 ? n : c.rc));
        self->retry_at = fp_now_ns() + (int64_t)self->o.retry_ms * 1000000;
        return false;
    }
    if (self->nevs == 0)
        return false;
    if (self->evs[0].global_seq != pos + 1) {
        /* Trimmed before we got to them: only possible once detached (the
           retention waits for an attached reader). Loud: they are lost to
           this reader. */
        fp_log(FP_LOG_ERROR, self->component, "events no longer retained, skipped",
               "from=%llu to=%llu", (unsigned long long)(pos + 1),
               (unsigned long long)(self->evs[0].global_seq - 1));
    }
    for (size_t i = 0; i < self->nevs; i++) { /* offsets -> pointers */
        self->evs[i].topic = (const char *)self->blob + (uintptr_t)self->evs[i].topic;
        self->evs[i].ev = self->blob + (uintptr_t)self->evs[i].ev;
    }
    int done = self->o.type->cb_deliver(self->o.ctx, self->evs, self->nevs, err, sizeof err);
    if (done < 0 || (size_t)done > self->nevs) {
        atomic_fetch_add_explicit(&self->errors, 1, memory_order_relaxed);
        fp_log(FP_LOG_WARN, self->component, "delivery failed; retrying", "from=%llu error=\"%s\"",
               (unsigned long long)self->evs[0].global_seq, err);
        self->retry_at = fp_now_ns() + (int64_t)self->o.retry_ms * 1000000;
        return false;
    }
    if (done == 0) {
        self->retry_at = fp_now_ns() + (int64_t)self->o.retry_ms * 1000000;
        return false;
    }
    uint64_t npos = self->evs[done - 1].global_seq;
    atomic_store_explicit(&self->position, npos, memory_order_relaxed);
    atomic_fetch_add_explicit(&self->delivered, (uint64_t)done, memory_order_relaxed);
    s_report(self, npos);
    if ((size_t)done < self->nevs)
        self->retry_at = fp_now_ns() + (int64_t)self->o.retry_ms * 1000000;
    return (size_t)done == self->nevs;
}


/* Once a second: the committed flags (emit may have detached us). */
static void s_check_flags(fp_reader_t *self)
{
    uint32_t flags = 0;
    if (fp_outbox_reader(self->store, self->name, NULL, &flags) == 0 &&
        (flags & FP_OUTBOX_READER_DETACHED) && !self->detached_logged) {
        fp_log(FP_LOG_ERROR, self->component,
               "detached for lagging: retention no longer waits for this reader",
               "position=%llu", (unsigned long long)atomic_load_explicit(
                                    &self->position, memory_order_relaxed));
        self->detached_logged = true;
    }
}

static void *s_thread(void *arg)
{
    fp_reader_t *self = arg;
    int64_t next_check = 0;
    for (;;) {
        int64_t now = fp_now_ns();
        bool ready = now >= self->retry_at;
        bool more = false;
        if (ready) {
            /* A bounded run of batches, then the notices again. */
            for (int k = 0; k < 16; k++)
                if (!(more = s_deliver(self)))
                    break;
        }
        uint64_t pos = atomic_load_explicit(&self->position, memory_order_relaxed);
        /* After emit's DONE: exit once everything committed is delivered,
           or at once if the last attempt failed (a sink that is down must
           not hold the drain; what it has not finished is offered again at
           the next start, from the committed position). */
        if (self->done && (pos >= self->target || self->retry_at > fp_now_ns()))
            break;
        if (now >= next_check) {
            s_check_flags(self);
            next_check = now + 1000000000;
        }
        long timeout = more ? 0 : 1000;
        if (!more && pos < self->target && self->retry_at > now)
            timeout = (long)((self->retry_at - now) / 1000000) + 1;
        zmq_pollitem_t it = {self->notice, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, timeout) < 0 && zmq_errno() != EINTR)
            break; /* ETERM */
        fp_notice_drain(self->notice, &self->target, &self->done);
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
    int rc = fp_outbox_reader(store, self->name, &pos, NULL);
    if (rc == FP_STORE_NOTFOUND) {
        uint64_t oldest = 0;
        pos = o->start_after;
        if (!pos && fp_outbox_oldest(store, &oldest) == 0 && oldest > 0)
            pos = oldest - 1;
        rc = 0;
    }
    if (rc == 0)
        rc = fp_store_last_round(store, &round, &last);
    if (rc != 0) {
        snprintf(err, errlen, "reader %s: %s", self->name, fp_store_strerror(rc));
        free(self);
        return NULL;
    }
    atomic_store_explicit(&self->position, pos, memory_order_relaxed);
    self->target = last;
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
