/*  producer.c - record batching, FlatBuffers encoding (codec), the buffer of
    unacknowledged batches, resends, spill, Ack handling. See producer.h.

    ACKED mode data flow:

        producer_add -> open batch --flush/encode--> [spill file] --reload-->
            buf: one list, oldest batch first
                 [sent, awaiting Ack ...][cursor: never sent (or requeued) ...]
        sends go in list order: first due resends of the sent part (resend_ms
        without an Ack), then the part from the cursor on; an Ack releases
        (frees) entries anywhere in the list.

    Every socket send is non-blocking: the DEALER's own queue (SNDHWM) full
    just stops the round (nothing later in the list is sent before it), and
    the next service waits for POLLOUT. So the only place a caller waits is
    for buffer room, and there it keeps reading Acks and resending.

    Reconnect detection: zmq_socket_monitor on the DEALER (CONNECTED and
    DISCONNECTED events over an inproc PAIR). A CONNECTED after a
    DISCONNECTED moves the cursor back to the head: everything unacked goes
    again, oldest first. Frames that were in the dead connection's TCP
    buffers, or read by a floorpost that crashed before committing, are
    gone, and waiting resend_ms for each would only delay recovery. The
    timeout covers the rest (an Ack the ROUTER dropped, a floorpost that
    lost a batch while the connection stayed up).

    Order after a reconnect matters: floorpost's dedup refuses a seq more
    than dedup_window behind the highest it has seen as too_old (to the
    dead-letter store), and this buffer can hold far more than a window.
    Hence the single list (a resend never goes behind newer never-sent
    batches) and ZMQ_IMMEDIATE on the DEALER: nothing queues in libzmq while
    there is no connection, and the pipe (with whatever newer frames it
    held) is dropped when the connection dies, so after a reconnect the
    first frames on the wire are the oldest unacked ones. (Measured: without
    either, a SIGKILLed and restarted floorpost dead-lettered records of a
    `floorpost send` as too_old.) The price of IMMEDIATE: frames go out only
    inside our calls, so a caller that goes idle must call producer_poll.

    Invariants (ACKED):
      - buf is in creation order; nbuf/nbytes count it;
      - entries before `cursor` have been sent (sent_ms >= 0); `cursor` and
        everything after it is to be sent (cursor NULL: nothing is);
      - no entry before `cursor` is due before due_check_ms (a lower
        bound; INT64_MAX when there is nothing sent);
      - spill_count > 0 implies new batches go to the spill (order is kept).
    Open batches: up to max_open (producer_set_open_batches), at most one
    per source, so records of interleaved sources still fill batches. A
    record of a source with no open batch opens one; when all are in use,
    the one opened first is closed to make room. A record of another epoch
    closes its source's open batch first, so a source's batches leave in
    the order of their records. producer_flush closes them all, oldest
    first; with producer_set_flush_ms a batch open that long is closed by
    the next producer_add or producer_poll.
    Batch invariants (each open_t):
      - recs[0..nrecs) all belong to (src, epoch); their string indices point
        into strtab, which holds only strings of that batch (plus, after
        a failed add, harmless unused ones);
      - nrecs < batch_records between calls (a full batch is sent at once, or
        the record that filled it is taken back);
      - at most one open_t with nrecs > 0 per source.
*/
#include "clock.h"
#include "producer.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "codec.h"
#include "curve.h"
#include "strtab.h"

typedef struct entry entry_t;
typedef struct {
    entry_t *head, *tail;
} queue_t;

/* One unacknowledged batch. */
struct entry {
    entry_t *prev, *next;
    uint64_t src, epoch;
    uint64_t first_seq, last_seq;    /* lowest and highest seq in the batch */
    uint32_t records;                /* records in it */
    int64_t sent_ms;                 /* monotonic ms of the last send; -1 never sent */
    uint32_t sends;                  /* times sent (> 1: resends) */
    size_t len;                      /* bytes of data */
    uint8_t data[];                  /* the encoded Batch */
};

/* Spill record header, followed by len bytes of batch. Native byte order:
   the file never outlives the process. */
typedef struct {
    uint64_t src, epoch, first_seq, last_seq, records, len;
} spill_hdr_t;

/* One open batch (see the top of this file). */
typedef struct {
    uint64_t src, epoch;  /* when nrecs > 0 */
    fp_record_t *recs;    /* cap entries, grown up to batch_records */
    uint32_t nrecs, cap;
    strtab_t *strtab;
    int64_t opened_ms;    /* monotonic ms of its first record */
    uint64_t order;       /* opening order: the oldest is closed first */
} open_t;

struct producer {
    void *sock;
    void *mon; /* PAIR receiving the DEALER's monitor events (ACKED) */
    int mode;
    uint32_t batch_records;
    fp_codec_t *codec;
    open_t *open;        /* max_open slots; nopen of them set up */
    uint32_t nopen, max_open;
    uint32_t hint;       /* the slot the last add used */
    uint64_t opened;     /* batches opened so far (open_t.order) */
    int flush_ms;        /* close a batch open this long; 0: never by time */
    int send_timeout_ms; /* -1: wait forever */
    producer_release_fn *on_release;
    void *on_release_ctx;
    /* the buffer */
    queue_t buf;                   /* every unacked batch in memory, oldest first */
    entry_t *cursor;               /* first entry to send; NULL: all sent */
    int64_t due_check_ms;          /* no resend is due before this (monotonic ms) */
    bool blocked;                  /* the last send found the socket's queue full */
    size_t nbuf, nbytes;           /* entries and data bytes in buf */
    size_t max_batches, max_bytes; /* bounds */
    int resend_ms;
    int disconnected; /* a DISCONNECTED event came, no CONNECTED since */
    /* the spill (fd -1: none) */
    int spill_fd;
    off_t spill_read, spill_write; /* next record to reload; end of data */
    size_t spill_count;
    producer_stats_t stats;
    char last_reject[64];
};

static int64_t s_now_ms(void)
{
    return fp_now_ns() / 1000000;
}

/* ---- queues ---- */

static void s_q_push(queue_t *q, entry_t *e)
{
    e->next = NULL;
    e->prev = q->tail;
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
}

static void s_q_remove(queue_t *q, entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        q->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        q->tail = e->prev;
    e->prev = e->next = NULL;
}

static void s_q_free_all(queue_t *q)
{
    entry_t *e = q->head;
    while (e) {
        entry_t *next = e->next;
        free(e);
        e = next;
    }
    q->head = q->tail = NULL;
}

static void s_update_gauges(producer_t *self)
{
    self->stats.buffered_batches = self->nbuf;
    self->stats.buffered_bytes = self->nbytes;
    self->stats.spilled_batches = self->spill_count;
}

static bool s_has_room(const producer_t *self, size_t len)
{
    return self->nbuf == 0 ||
           (self->nbuf < self->max_batches && self->nbytes + len <= self->max_bytes);
}

static void s_release(producer_t *self, entry_t *e)
{
    if (self->cursor == e)
        self->cursor = e->next;
    s_q_remove(&self->buf, e);
    assert(self->nbuf > 0 && self->nbytes >= e->len);
    self->nbuf--;
    self->nbytes -= e->len;
    free(e);
}

/* Appends e (never sent) to buf. */
static void s_buffer_append(producer_t *self, entry_t *e)
{
    e->sent_ms = -1;
    e->sends = 0;
    s_q_push(&self->buf, e);
    if (!self->cursor)
        self->cursor = e;
    self->nbuf++;
    self->nbytes += e->len;
    s_update_gauges(self);
}

/* Takes a copy of data into a new entry at the tail of buf. */
static int s_buffer_add(producer_t *self, const void *data, size_t len, const spill_hdr_t *h)
{
    entry_t *e = malloc(sizeof(*e) + len);
    if (!e)
        return -ENOMEM;
    e->src = h->src;
    e->epoch = h->epoch;
    e->first_seq = h->first_seq;
    e->last_seq = h->last_seq;
    e->records = (uint32_t)h->records;
    e->len = len;
    memcpy(e->data, data, len);
    s_buffer_append(self, e);
    return 0;
}

/* ---- construction ---- */

producer_t *producer_new(void *zmq_ctx, const char *endpoint, int mode, uint32_t batch_records)
{
    if (!zmq_ctx || (mode != PRODUCER_ACKED && mode != PRODUCER_PUSH) ||
        batch_records == 0 || batch_records > PRODUCER_BATCH_MAX) {
        errno = EINVAL;
        return NULL;
    }
    producer_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->mode = mode;
    self->batch_records = batch_records;
    self->send_timeout_ms = -1;
    self->max_batches = PRODUCER_BUFFER_BATCHES;
    self->max_bytes = PRODUCER_BUFFER_BYTES;
    self->resend_ms = PRODUCER_RESEND_MS;
    self->spill_fd = -1;
    self->due_check_ms = INT64_MAX;
    self->codec = fp_codec_new();
    self->max_open = 1;
    self->open = calloc(PRODUCER_OPEN_BATCHES_MAX, sizeof *self->open);
    if (!self->codec || !self->open) {
        errno = ENOMEM;
        goto fail;
    }
    self->sock = zmq_socket(zmq_ctx, mode == PRODUCER_ACKED ? ZMQ_DEALER : ZMQ_PUSH);
    if (!self->sock)
        goto fail;
    int hwm = PRODUCER_SNDHWM, one = 1;
    if (zmq_setsockopt(self->sock, ZMQ_SNDHWM, &hwm, sizeof(hwm)) != 0)
        goto fail;
    /* PUSH: without IMMEDIATE, frames queue on a pipe to a peer that may
       never come; with it, a send blocks until a peer is connected.
       DEALER: see the top of this file (order after a reconnect). */
    if (zmq_setsockopt(self->sock, ZMQ_IMMEDIATE, &one, sizeof(one)) != 0)
        goto fail;
    if (mode == PRODUCER_ACKED) {
        /* The address only has to be unique among live producers of this
           context: this object's address plus the time covers a reused
           address whose old endpoint is still being torn down. */
        char mon_ep[96];
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(mon_ep, sizeof mon_ep, "inproc://fp-producer-monitor-%p-%lld-%ld", (void *)self,
                 (long long)ts.tv_sec, ts.tv_nsec);
        if (zmq_socket_monitor(self->sock, mon_ep, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0)
            goto fail;
        self->mon = zmq_socket(zmq_ctx, ZMQ_PAIR);
        if (!self->mon)
            goto fail;
        int zero = 0;
        zmq_setsockopt(self->mon, ZMQ_LINGER, &zero, sizeof(zero));
        if (zmq_connect(self->mon, mon_ep) != 0)
            goto fail;
    }
    if (endpoint && zmq_connect(self->sock, endpoint) != 0)
        goto fail;
    return self;
fail:;
    int err = errno;
    producer_destroy(&self);
    errno = err;
    return NULL;
}

void producer_destroy(producer_t **self_p)
{
    assert(self_p);
    producer_t *self = *self_p;
    if (!self)
        return;
    if (self->sock) {
        if (self->mon)
            zmq_socket_monitor(self->sock, NULL, 0);
        int linger = PRODUCER_LINGER_MS;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof(linger));
        zmq_close(self->sock);
    }
    if (self->mon)
        zmq_close(self->mon);
    if (self->spill_fd >= 0)
        close(self->spill_fd);
    s_q_free_all(&self->buf);
    fp_codec_destroy(&self->codec);
    for (uint32_t i = 0; self->open && i < self->nopen; i++) {
        strtab_destroy(&self->open[i].strtab);
        free(self->open[i].recs);
    }
    free(self->open);
    free(self);
    *self_p = NULL;
}

int producer_set_buffer(producer_t *self, size_t max_batches, size_t max_bytes)
{
    assert(self);
    if (max_batches < 1 || max_bytes < 1)
        return -EINVAL;
    self->max_batches = max_batches;
    self->max_bytes = max_bytes;
    return 0;
}

int producer_set_resend(producer_t *self, int resend_ms)
{
    assert(self);
    if (resend_ms < 1)
        return -EINVAL;
    self->resend_ms = resend_ms;
    return 0;
}

int producer_set_spill(producer_t *self, const char *dir)
{
    assert(self);
    if (!dir || !*dir)
        return -EINVAL;
    if (self->spill_fd >= 0)
        return -EBUSY;
    /* O_TMPFILE: an unnamed file, gone when closed; fall back to
       mkstemp + unlink on file systems without it. */
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/floorpost-spill-XXXXXX", dir) >= (int)sizeof path)
            return -ENAMETOOLONG;
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0)
            unlink(path);
    }
    if (fd < 0)
        return -errno;
    self->spill_fd = fd;
    self->spill_read = self->spill_write = 0;
    self->spill_count = 0;
    return 0;
}

/* ---- spill ---- */

static int s_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int s_pread_all(int fd, void *buf, size_t len, off_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO; /* our own file ends early: it was truncated under us */
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Appends one batch to the spill. A failed write leaves spill_write where it
   was, so the next write overwrites the partial record. */
static int s_spill_put(producer_t *self, const void *data, size_t len, const spill_hdr_t *h)
{
    assert(self->spill_fd >= 0);
    spill_hdr_t hdr = *h;
    hdr.len = len;
    int rc = s_pwrite_all(self->spill_fd, &hdr, sizeof hdr, self->spill_write);
    if (rc == 0)
        rc = s_pwrite_all(self->spill_fd, data, len, self->spill_write + (off_t)sizeof hdr);
    if (rc != 0)
        return rc;
    self->spill_write += (off_t)(sizeof hdr + len);
    self->spill_count++;
    s_update_gauges(self);
    return 0;
}

/* Moves spilled batches, oldest first, into the buffer while they fit. */
static int s_spill_reload(producer_t *self)
{
    while (self->spill_count > 0) {
        spill_hdr_t h;
        int rc = s_pread_all(self->spill_fd, &h, sizeof h, self->spill_read);
        if (rc != 0)
            return rc;
        if (!s_has_room(self, (size_t)h.len))
            return 0;
        entry_t *e = malloc(sizeof(*e) + (size_t)h.len);
        if (!e)
            return -ENOMEM;
        rc = s_pread_all(self->spill_fd, e->data, (size_t)h.len, self->spill_read + (off_t)sizeof h);
        if (rc != 0) {
            free(e);
            return rc;
        }
        e->src = h.src;
        e->epoch = h.epoch;
        e->first_seq = h.first_seq;
        e->last_seq = h.last_seq;
        e->records = (uint32_t)h.records;
        e->len = (size_t)h.len;
        s_buffer_append(self, e);
        self->spill_read += (off_t)(sizeof h + h.len);
        self->spill_count--;
        if (self->spill_count == 0) {
            /* Empty: start the file over so it does not grow forever. */
            self->spill_read = self->spill_write = 0;
            if (ftruncate(self->spill_fd, 0) != 0) {
                /* harmless: the next writes overwrite from offset 0 */
            }
        }
        s_update_gauges(self);
    }
    return 0;
}

/* ---- Acks, monitor events, sends ---- */

/* Whether a refusing Ack names entry e: by the batch's identity (seq
   range and record count), or, from a floorpost that predates it, by the
   highest seq alone. */
static bool s_names(const entry_t *e, const fp_ack_t *a)
{
    if (a->batch_first_seq || a->batch_records)
        return e->first_seq == a->batch_first_seq && e->last_seq == a->batch_last_seq &&
               e->records == a->batch_records;
    return e->last_seq == a->batch_last_seq;
}

/* Counts and frees a buffered batch that an Ack answered, after telling
   the caller's release callback. */
static void s_answered(producer_t *self, entry_t *e, const fp_ack_t *a)
{
    if (a->status == 0) {
        self->stats.acked_batches++;
        self->stats.acked_records += e->records;
    } else {
        self->stats.rejected_batches++;
        self->stats.rejected_records += e->records;
    }
    if (self->on_release) {
        producer_release_t r = {.source_id = e->src, .epoch = e->epoch,
                                .first_seq = e->first_seq, .last_seq = e->last_seq,
                                .records = e->records, .status = a->status ? 1 : 0,
                                .reason = a->status ? a->reason : ""};
        self->on_release(self->on_release_ctx, &r);
    }
    s_release(self, e);
}

/* Applies one Ack frame. Frames that are not a valid Ack are ignored (they
   acknowledge nothing). */
static void s_apply_ack(producer_t *self, const void *data, size_t len)
{
    /* Small zmq frames live inside the zmq_msg_t, maybe not 8-byte
       aligned: fp_codec_ack_decode copies unaligned input itself. */
    fp_ack_t ack;
    if (fp_codec_ack_decode(data, len, &ack) != FP_CODEC_OK)
        return;
    self->stats.acks++;
    if (ack.status != 0) {
        memcpy(self->last_reject, ack.reason, sizeof(self->last_reject));
        self->last_reject[sizeof(self->last_reject) - 1] = 0;
    } else {
        self->stats.last_acked_seq = ack.acked_seq;
        self->stats.dead_letter_records += ack.dead_letters;
    }
    /* Linear in the buffer (at most max_batches steps per Ack; usually the
       buffer holds what one or two commit rounds take). No early stop per
       source: resubmitted or duplicate records make seqs non-monotonic
       along the list. A refused batch is one entry: stop at the match (a
       resent copy of it is the same entry). */
    entry_t *e = self->buf.head;
    while (e) {
        entry_t *next = e->next;
        if (e->src == ack.source_id && e->epoch == ack.epoch) {
            /* An Ack is per batch and comes after its round's commit: the
               batch it names is durable even above a gap in the seqs
               (which holds the contiguous watermark back). */
            if (ack.status == 0 &&
                (e->last_seq <= ack.acked_seq || e->last_seq == ack.batch_last_seq)) {
                s_answered(self, e, &ack);
            } else if (ack.status != 0 && s_names(e, &ack)) {
                s_answered(self, e, &ack);
                break;
            }
        }
        e = next;
    }
    s_update_gauges(self);
}

/* Receives every Ack already queued, without blocking. 0 or -errno. */
static int s_drain_acks(producer_t *self)
{
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int rc = zmq_msg_recv(&msg, self->sock, ZMQ_DONTWAIT);
        if (rc < 0) {
            int err = zmq_errno();
            zmq_msg_close(&msg);
            return err == EAGAIN ? 0 : -err;
        }
        /* One Ack is one frame; skip any further frames of the message. */
        int more = zmq_msg_more(&msg);
        s_apply_ack(self, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
        while (more) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, self->sock, 0) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            more = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
    }
}

/* Reads the monitor's events: [6 bytes: uint16 event, uint32 value]
   [endpoint]. A CONNECTED after a DISCONNECTED sends everything again,
   oldest first. */
static void s_drain_monitor(producer_t *self)
{
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, self->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&msg) >= sizeof event)
            memcpy(&event, zmq_msg_data(&msg), sizeof event);
        int more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
        while (more) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, self->mon, 0) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            more = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
        if (event == ZMQ_EVENT_DISCONNECTED) {
            self->disconnected = 1;
        } else if (event == ZMQ_EVENT_CONNECTED && self->disconnected) {
            self->disconnected = 0;
            self->stats.reconnects++;
            self->cursor = self->buf.head;
        }
    }
}

/* Sends e without blocking. 1 sent, 0 the socket's queue is full, or
   -errno. */
static int s_send_entry(producer_t *self, entry_t *e, int64_t now)
{
    if (zmq_send(self->sock, e->data, e->len, ZMQ_DONTWAIT) < 0) {
        int err = zmq_errno();
        if (err == EAGAIN || err == EINTR) {
            self->blocked = true;
            return 0;
        }
        return -err;
    }
    if (e->sends++ > 0)
        self->stats.resends++;
    e->sent_ms = now;
    if (now + self->resend_ms < self->due_check_ms)
        self->due_check_ms = now + self->resend_ms;
    return 1;
}

/* One non-blocking round: monitor events, Acks, spill reload, then sends
   in list order (due resends of the sent part, then from the cursor on)
   until the socket's queue is full. 0 or -errno. */
static int s_pump(producer_t *self)
{
    s_drain_monitor(self);
    int rc = s_drain_acks(self);
    if (rc != 0)
        return rc;
    if (self->spill_fd >= 0 && (rc = s_spill_reload(self)) != 0)
        return rc;
    self->blocked = false;
    int64_t now = s_now_ms();
    if (now >= self->due_check_ms) {
        /* Linear in the sent part, but only when something may be due:
           about once per resend_ms while nothing is acked. */
        int64_t next_due = INT64_MAX;
        for (entry_t *e = self->buf.head; e && e != self->cursor; e = e->next) {
            if (now - e->sent_ms >= self->resend_ms) {
                rc = s_send_entry(self, e, now);
                if (rc <= 0) {
                    self->due_check_ms = now; /* the rest when the socket has room */
                    return rc;
                }
            }
            if (e->sent_ms + self->resend_ms < next_due)
                next_due = e->sent_ms + self->resend_ms;
        }
        self->due_check_ms = next_due;
    }
    while (self->cursor) {
        rc = s_send_entry(self, self->cursor, now);
        if (rc <= 0)
            return rc;
        self->cursor = self->cursor->next;
    }
    return 0;
}

/* Pumps, then waits up to timeout_ms (< 0: forever, but never past the next
   due resend) for an Ack, room in the socket's queue or a monitor event,
   and pumps again. 0 or -errno. */
static int s_service(producer_t *self, int timeout_ms)
{
    int rc = s_pump(self);
    if (rc != 0 || timeout_ms == 0)
        return rc;
    long wait = timeout_ms;
    if (!self->blocked && self->due_check_ms != INT64_MAX) {
        /* When blocked, POLLOUT (or a reconnect) is what we wait for. */
        int64_t due = self->due_check_ms - s_now_ms();
        if (due < 0)
            due = 0;
        if (wait < 0 || due < wait)
            wait = (long)due;
    }
    short out = self->blocked || self->cursor ? ZMQ_POLLOUT : 0;
    zmq_pollitem_t items[2] = {
        {.socket = self->sock, .events = (short)(ZMQ_POLLIN | out)},
        {.socket = self->mon, .events = ZMQ_POLLIN},
    };
    if (zmq_poll(items, 2, wait) < 0)
        return -zmq_errno();
    return s_pump(self);
}

/* Deadline bookkeeping for a wait of timeout_ms (< 0: none). */
static int s_left_ms(int64_t deadline, int timeout_ms)
{
    if (timeout_ms < 0)
        return -1;
    int64_t left = deadline - s_now_ms();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

/* Puts one encoded batch into the buffer or the spill, waiting for room up
   to timeout_ms (-1: forever; 0: not at all). 0, -EAGAIN (timed out: not
   taken) or -errno. */
static int s_enqueue(producer_t *self, const void *data, size_t len, const spill_hdr_t *h,
                     int timeout_ms)
{
    int64_t deadline = s_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int spill_failed = 0;
    int rc = s_pump(self);
    for (;;) {
        if (rc != 0)
            return rc;
        if (self->spill_count == 0 && s_has_room(self, len)) {
            rc = s_buffer_add(self, data, len, h);
            return rc != 0 ? rc : s_pump(self);
        }
        if (self->spill_fd >= 0 && !spill_failed) {
            if (s_spill_put(self, data, len, h) == 0)
                return 0;
            spill_failed = 1; /* wait for memory; try the disk once per batch */
            self->stats.spill_errors++;
        }
        int left = s_left_ms(deadline, timeout_ms);
        if (left == 0)
            return -EAGAIN;
        rc = s_service(self, left);
    }
}

/* Lowest and highest seq of n records (0, 0 for none), and n. */
static void s_seq_range(const fp_record_t *r, uint32_t n, spill_hdr_t *h)
{
    h->records = n;
    h->first_seq = n ? r[0].seq : 0;
    h->last_seq = h->first_seq;
    for (uint32_t i = 1; i < n; i++) {
        if (r[i].seq < h->first_seq)
            h->first_seq = r[i].seq;
        if (r[i].seq > h->last_seq)
            h->last_seq = r[i].seq;
    }
}

/* PUSH: sends one frame (zmq copies buf); blocks at the HWM up to
   ZMQ_SNDTIMEO. 0 or -errno. */
static int s_send_frame(producer_t *self, const void *buf, size_t len)
{
    return zmq_send(self->sock, buf, len, 0) >= 0 ? 0 : -zmq_errno();
}

/* ---- open batches ---- */

/* Encodes open batch o and hands it on (ACKED: into the buffer or the
   spill, waiting for room up to timeout_ms; PUSH: sent), then empties o.
   0 or -errno; on error o stays as it was. */
static int s_close(producer_t *self, open_t *o, int timeout_ms)
{
    if (o->nrecs == 0)
        return 0;
    const void *out;
    size_t out_len;
    int rc = fp_codec_batch_encode(self->codec, o->src, o->epoch, strtab_strings(o->strtab),
                                   strtab_count(o->strtab), o->recs, o->nrecs, &out, &out_len);
    if (rc != FP_CODEC_OK)
        return rc == FP_CODEC_NOMEM ? -ENOMEM : -EINVAL;
    if (self->mode == PRODUCER_ACKED) {
        spill_hdr_t h = {.src = o->src, .epoch = o->epoch};
        s_seq_range(o->recs, o->nrecs, &h);
        rc = s_enqueue(self, out, out_len, &h, timeout_ms);
    } else {
        rc = s_send_frame(self, out, out_len);
    }
    if (rc != 0)
        return rc;
    self->stats.batches_sent++;
    self->stats.records_sent += o->nrecs;
    o->nrecs = 0;
    strtab_clear(o->strtab);
    return 0;
}

/* The open batch with records that was opened first, or NULL. */
static open_t *s_oldest(producer_t *self)
{
    open_t *best = NULL;
    for (uint32_t i = 0; i < self->nopen; i++) {
        open_t *o = &self->open[i];
        if (o->nrecs > 0 && (!best || o->order < best->order))
            best = o;
    }
    return best;
}

/* Closes every batch open flush_ms or longer, oldest first, waiting for
   buffer room at most timeout_ms each. 0 or the first -errno (the rest
   stay open). */
static int s_flush_due(producer_t *self, int timeout_ms)
{
    if (self->flush_ms <= 0)
        return 0;
    int64_t now = s_now_ms();
    for (;;) {
        open_t *o = s_oldest(self);
        if (!o || now - o->opened_ms < self->flush_ms)
            return 0;
        int rc = s_close(self, o, timeout_ms);
        if (rc != 0)
            return rc;
    }
}

/* Milliseconds until the next batch is due by time (INT_MAX: none). */
static int s_flush_wait(producer_t *self)
{
    open_t *o = self->flush_ms > 0 ? s_oldest(self) : NULL;
    if (!o)
        return INT_MAX;
    int64_t left = o->opened_ms + self->flush_ms - s_now_ms();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

/* The slot for a record of (source_id, epoch): its source's open batch
   (closed first if it is of another epoch or its string table is nearly
   full), a free slot, or the oldest open batch, closed. NULL and *rc when a
   close failed. */
static open_t *s_slot(producer_t *self, uint64_t source_id, uint64_t epoch, int *rc)
{
    open_t *o = NULL;
    if (self->hint < self->nopen && self->open[self->hint].nrecs > 0 &&
        self->open[self->hint].src == source_id)
        o = &self->open[self->hint];
    for (uint32_t i = 0; !o && i < self->nopen; i++)
        if (self->open[i].nrecs > 0 && self->open[i].src == source_id)
            o = &self->open[i];
    if (o && (o->epoch != epoch ||
              strtab_count(o->strtab) > FP_BATCH_STRINGS_MAX - FP_STR_FIELDS)) {
        if ((*rc = s_close(self, o, self->send_timeout_ms)) != 0)
            return NULL;
    }
    if (!o) {
        for (uint32_t i = 0; !o && i < self->nopen; i++)
            if (self->open[i].nrecs == 0)
                o = &self->open[i];
    }
    if (!o && self->nopen < self->max_open) {
        o = &self->open[self->nopen];
        memset(o, 0, sizeof *o);
        if (!(o->strtab = strtab_new())) {
            *rc = -ENOMEM;
            return NULL;
        }
        self->nopen++;
    }
    if (!o) {
        o = s_oldest(self);
        assert(o);
        if ((*rc = s_close(self, o, self->send_timeout_ms)) != 0)
            return NULL;
    }
    self->hint = (uint32_t)(o - self->open);
    return o;
}

/* ---- the public calls ---- */

int producer_flush(producer_t *self)
{
    assert(self);
    for (;;) {
        open_t *o = s_oldest(self);
        if (!o)
            break;
        int rc = s_close(self, o, self->send_timeout_ms);
        if (rc != 0)
            return rc;
    }
    return self->mode == PRODUCER_ACKED ? s_pump(self) : 0;
}

int producer_add(producer_t *self, uint64_t source_id, uint64_t epoch, const fp_rec_in_t *rec)
{
    assert(self && rec);
    if (source_id == 0)
        return -EINVAL;
    int rc = 0;
    open_t *o = s_slot(self, source_id, epoch, &rc);
    if (!o)
        return rc;
    if (o->nrecs == 0)
        strtab_clear(o->strtab); /* drops strings of a record taken back */
    assert(o->nrecs < self->batch_records);
    if (o->nrecs == o->cap) {
        /* Grown as it fills: many open batches cost what they hold. */
        uint32_t cap = o->cap ? o->cap * 2 : 16;
        if (cap > self->batch_records)
            cap = self->batch_records;
        fp_record_t *recs = realloc(o->recs, cap * sizeof *recs);
        if (!recs)
            return -ENOMEM;
        o->recs = recs;
        o->cap = cap;
    }
    fp_record_t *r = &o->recs[o->nrecs];
    memset(r, 0, sizeof(*r));
    r->seq = rec->seq;
    r->time_ns = rec->time_ns;
    r->quantity = rec->quantity;
    r->kind = rec->kind;
    r->reserved0 = rec->flags;
    for (int i = 0; i < FP_STR_FIELDS; i++) {
        int idx = strtab_add(o->strtab, rec->str[i]);
        if (idx < 0)
            return -ENOMEM; /* room was ensured above, so only OOM gets here */
        r->str[i] = (uint16_t)idx;
    }
    if (o->nrecs == 0) {
        o->src = source_id;
        o->epoch = epoch;
        o->opened_ms = s_now_ms();
        o->order = ++self->opened;
    }
    o->nrecs++;
    if (o->nrecs == self->batch_records) {
        rc = s_close(self, o, self->send_timeout_ms);
        if (rc != 0) {
            /* Take the record back so the caller can repeat the call; its
               strings stay in the table unused (a repeat finds them). */
            o->nrecs--;
            return rc;
        }
        if (self->mode == PRODUCER_ACKED && (rc = s_pump(self)) != 0)
            return rc;
    }
    /* Batches open too long go now; the record is taken either way. */
    if (self->flush_ms > 0 && s_flush_wait(self) == 0)
        s_flush_due(self, 0);
    return 0;
}

int producer_set_open_batches(producer_t *self, uint32_t n)
{
    assert(self);
    if (n < 1 || n > PRODUCER_OPEN_BATCHES_MAX)
        return -EINVAL;
    if (s_oldest(self))
        return -EBUSY;
    self->max_open = n;
    return 0;
}

int producer_set_flush_ms(producer_t *self, int flush_ms)
{
    assert(self);
    if (flush_ms < 0)
        return -EINVAL;
    self->flush_ms = flush_ms;
    return 0;
}

void producer_on_release(producer_t *self, producer_release_fn *fn, void *ctx)
{
    assert(self);
    self->on_release = fn;
    self->on_release_ctx = ctx;
}

int producer_send_raw(producer_t *self, const void *buf, size_t len)
{
    assert(self && (buf || len == 0));
    int rc;
    if (self->mode == PRODUCER_PUSH) {
        rc = s_send_frame(self, buf, len);
    } else {
        /* Parse a copy: the parser wants 8-byte alignment. */
        void *copy = len ? aligned_alloc(8, (len + 7) / 8 * 8) : NULL;
        if (len && !copy)
            return -ENOMEM;
        if (len)
            memcpy(copy, buf, len);
        fp_batch_view_t v;
        if (len && fp_codec_batch_parse(copy, len, SIZE_MAX, &v) == FP_CODEC_OK) {
            spill_hdr_t h = {.src = v.source_id, .epoch = v.epoch};
            s_seq_range(v.records, v.nrecords, &h);
            rc = s_enqueue(self, buf, len, &h, self->send_timeout_ms);
        } else {
            /* Not a batch: once, not kept. DONTWAIT: a full queue means
               floorpost is far behind; the caller may repeat. */
            rc = zmq_send(self->sock, buf, len, ZMQ_DONTWAIT) >= 0 ? 0 : -zmq_errno();
        }
        free(copy);
    }
    if (rc != 0)
        return rc;
    self->stats.batches_sent++;
    return self->mode == PRODUCER_ACKED ? s_pump(self) : 0;
}

int producer_poll(producer_t *self, int timeout_ms)
{
    assert(self);
    /* Due batches go first, without waiting for room (they stay open
       until there is some). */
    int rc = s_flush_due(self, 0);
    if (rc != 0 && rc != -EAGAIN)
        return rc;
    if (self->mode != PRODUCER_ACKED)
        return 0;
    int due = s_flush_wait(self);
    if (due != INT_MAX && (timeout_ms < 0 || due < timeout_ms))
        timeout_ms = due;
    rc = s_service(self, timeout_ms);
    if (rc == 0 && (rc = s_flush_due(self, 0)) == -EAGAIN)
        rc = 0;
    return rc;
}

int producer_wait_acks(producer_t *self, int timeout_ms)
{
    assert(self);
    if (self->mode != PRODUCER_ACKED)
        return 0;
    int64_t deadline = s_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int rc = s_pump(self);
    for (;;) {
        if (rc != 0)
            return rc;
        if (self->nbuf == 0 && self->spill_count == 0)
            return 0;
        int left = s_left_ms(deadline, timeout_ms);
        if (left == 0)
            return -ETIMEDOUT;
        rc = s_service(self, left);
    }
}

int producer_set_curve(producer_t *self, const char *server_public_z85,
                       const char *client_public_z85, const char *client_secret_z85)
{
    assert(self);
    if (!server_public_z85 || !client_public_z85 || !client_secret_z85 ||
        strlen(client_public_z85) != FP_CURVE_KEY_Z85 ||
        strlen(client_secret_z85) != FP_CURVE_KEY_Z85)
        return -EINVAL;
    fp_curve_keypair_t kp;
    memcpy(kp.public_z85, client_public_z85, sizeof kp.public_z85);
    memcpy(kp.secret_z85, client_secret_z85, sizeof kp.secret_z85);
    int rc = fp_curve_client_socket(self->sock, server_public_z85, &kp);
    explicit_bzero(&kp, sizeof kp);
    return rc;
}

int producer_connect(producer_t *self, const char *endpoint)
{
    assert(self);
    if (!endpoint)
        return -EINVAL;
    return zmq_connect(self->sock, endpoint) == 0 ? 0 : -zmq_errno();
}

int producer_set_send_timeout(producer_t *self, int timeout_ms)
{
    assert(self);
    if (timeout_ms < -1)
        return -EINVAL;
    /* ACKED sends never block (DONTWAIT); the timeout bounds the wait for
       buffer room instead. */
    if (self->mode == PRODUCER_PUSH &&
        zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof(timeout_ms)) != 0)
        return -zmq_errno();
    self->send_timeout_ms = timeout_ms;
    return 0;
}

const producer_stats_t *producer_stats(const producer_t *self)
{
    assert(self);
    return &self->stats;
}

const char *producer_last_reject(const producer_t *self)
{
    assert(self);
    return self->last_reject;
}

/* ---- the epoch file ---- */

/* Parses exactly "<decimal>" or "<decimal>\n". */
static int s_parse_epoch(const char *s, size_t n, uint64_t *out)
{
    if (n > 0 && s[n - 1] == '\n')
        n--;
    if (n == 0 || n > 20)
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int s_fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return -ENAMETOOLONG;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

int producer_epoch_from_file(const char *path, uint64_t *epoch)
{
    if (!path || !*path || !epoch)
        return -EINVAL;
    uint64_t next;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT)
            return -errno;
        time_t now = time(NULL);
        next = now > 1 ? (uint64_t)now : 1;
    } else {
        char buf[32];
        size_t n = 0;
        int rc = 0;
        for (;;) {
            ssize_t k = read(fd, buf + n, sizeof buf - n);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                rc = -errno;
                break;
            }
            if (k == 0)
                break;
            n += (size_t)k;
            if (n == sizeof buf) {
                rc = -EINVAL; /* far longer than any number */
                break;
            }
        }
        close(fd);
        uint64_t last = 0;
        if (rc == 0)
            rc = s_parse_epoch(buf, n, &last);
        if (rc == 0 && last == UINT64_MAX)
            rc = -EINVAL;
        if (rc != 0)
            return rc;
        next = last + 1;
    }
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    char text[32];
    int len = snprintf(text, sizeof text, "%" PRIu64 "\n", next);
    int rc = s_pwrite_all(fd, text, (size_t)len, 0);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    rc = s_fsync_dir_of(path);
    if (rc != 0)
        return rc;
    *epoch = next;
    return 0;
}
