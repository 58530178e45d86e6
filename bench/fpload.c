/*  fpload.c - floorpost's load generator and end-to-end measurer (issue 3),
    its own process.

    Generation ahead: the whole stream (records, seqs, epochs, the truth
    sums) is generated and encoded before the clock starts when it fits in
    --pregen-max-mib (default 4096 MiB, about 60 M records), and each batch's
    time_ns is stamped into it when it is sent. On a 2-core machine a
    generator that builds batches while sending takes about 150 ns of CPU
    per record from the processor it measures (the ceiling's forwarder as
    much as floorpost). Pregenerated batches go out with zmq_send_const (no
    copy). Otherwise (--pregen-max-mib 0, or too big) it generates as it
    sends. The JSON says which ("pregenerated").

    Sender (main thread): the plant model (plantgen) -> telemetry batches of
    --batch records, one source and epoch each, sent with PUSH to a PULL
    endpoint (fire and forget) or with DEALER to a ROUTER endpoint (acked).
      --rate R > 0: open loop. Batch i is due at start + i * batch / R; the
        sender never waits for the processor's output. Every record of a
        batch carries time_ns = the batch's SCHEDULED send time (wall clock),
        so a sender held back by back-pressure does not hide latency
        (no coordinated omission); how far it fell behind is reported.
      --rate 0: as fast as the sockets take it; time_ns = actual send time.
      Rate profile (shift-change burst): --burst-at S --burst-secs D
        --burst-mult M: the offered rate is M x --rate from S to S + D
        seconds after the start, --rate before and after.
    Records are stamped when their batch is due and sent at once: fpload
    holds nothing back (no batch waits to fill at low rates), so a batch's
    records are as old as floorpost makes them.
    Completion spread (default; --lockstep turns it off): plantgen's lines
    visit their open orders round-robin and every operation has the same
    length, so all orders of a line complete in the same visit cycle, and
    all lines in the same cycles: every ~(rpo + 2) x orders_per_line x lines
    records a wave of one final completion per open order, each flushing its
    consumption and scrap keys (~11 checkpoints), and every timed completion
    is in such a wave. A plant's orders are not in lockstep, so fpload puts
    order slot k (of K per line) k x (rpo + 2) / K visits late: each slot's
    records come out in their order, delayed (what is still held at the end
    is never sent and never counted). Completions then come evenly spread.
    Seqs are numbered per source at sending, without gaps. The reorder
    buffers hold lines x K x (rpo + 2) records of 64 bytes (12 MiB at
    10,000 keys); above 256 MiB (about 2 x 10^5 keys) fpload falls back to
    lockstep and says so.
    Faults: --dup-pct resends that share of batches right after sending
    them; --reorder-pct holds that share back until the next batch of the
    same source has been sent; --restarts K bumps the epoch K times (a
    producer restart: a new plant model, seqs from 1 again).

    Subscriber (second thread): SUB on --sub, every event. Latency is timed
    on FINAL completions (checkpoints an OperationCompleted triggers): from
    the send time of the newest record the event covers (header.last_time_ns)
    to the event's arrival. Partial checkpoints are governed by the posting
    interval (and the drain), not by processing speed, so they are counted
    but not timed. Against the forwarder (--forwarder) every forwarded batch
    is timed from its records' send time.

    Exactness: for every unique record sent, fpload folds quantity * H(key)
    into a per-kind checksum (H = a 64-bit hash of the key's strings) and
    adds the plain quantity; the subscriber does the same with every event's
    deltas. Equal checksums mean, up to hash collisions, that for every key
    the sum of emitted deltas equals the sum of its records, without a
    per-key table. Any difference, or a stream_seq gap, is a FAILURE (exit 1).

    End of a run: after the last send fpload prints "SENT ..." on stdout and,
    with --wait-stdin, waits for EOF on stdin (the harness closes it once the
    processor has drained and exited); then it waits until no event arrived
    for --idle-ms and checks.

    Runs on a processor's restored state (the replay scenario of
    bench/run.py runs a second load against the state directory of a
    first): --epoch E starts at epoch E (and plant seed E; default 1), so
    the restored dedup watermarks of an earlier run's epochs do not drop
    this run's records; --plant NAME names the plant of every record NAME
    instead of plantgen's "1000", so this run's keys (and topics) are not
    the earlier run's (plantgen numbers orders from the same base whatever
    the seed: the same keys would be closed operations, every event late);
    --resumed takes each topic's first stream_seq as it comes (the end
    markers' topics continue the earlier run's) instead of requiring 1.
    --announce-start prints "SENDING" on stdout (flushed) just before the
    first batch, after the stream was generated, so a harness can start
    something alongside the load.

    Windows (--window-ms W): every timed event is also filed under the
    W-ms window of its newest record's send time (from the start); the JSON
    gets count, p50, p99 and max per window (for the burst's recovery).

    Counter readings (--counters M): each line's PART records become
    cumulative readings (PartCounter) of M counters of station "PLC"
    (GOOD0..GOOD{M-1}, round robin), with --counters-scrap its SCRAP records
    too (ScrapCounter, SCRAP0..); a reading is the counter's count modulo
    --counter-modulus (default 65536), so the deltas
    floorpost posts are the plain records' quantities and the truth sums
    stay the same. --counter-reset-every N restarts a counter from zero every
    N readings; each scripted reset must come back as exactly one
    counter_reset event (s_counter_reading). floorpost's [counters]
    default_modulus must be the same and max_jump above 25 (bench/run.py).

    Histogram: hand-written log-bucketed (64 sub-buckets per power of two,
    <= 1.6 % relative error), like HdrHistogram: Debian has no HdrHistogram
    for C (`apt-cache search hdrhistogram`: Go and Java only).

    Usage: fpload --push EP | --router EP, --sub EP, [--forwarder]
                  [--rate R] [--records N] [--batch B] [--keys K] [--lines L]
                  [--rpo N] [--dup-pct P] [--reorder-pct P] [--restarts K]
                  [--sndhwm N] [--wait-stdin] [--idle-ms MS] [--json FILE]
                  [--lockstep] [--burst-at S --burst-secs D --burst-mult M]
                  [--window-ms W] [--epoch E] [--plant NAME] [--resumed]
                  [--announce-start] [--counters M [--counters-scrap]
                  [--counter-reset-every N] [--counter-modulus MOD]]
*/
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "grow.h"
#include "bench_util.h"
#include "codec.h"
#include "plantgen.h"

/* ---- log-bucketed histogram (ns) ---- */

#define H_SUB 64
#define H_BUCKETS (60 * H_SUB)

typedef struct {
    uint64_t c[H_BUCKETS];
    uint64_t n, max;
    double sum;
} s_hist_t;

static int s_hidx(uint64_t v)
{
    if (v < H_SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v); /* >= 6 */
    int sub = (int)((v >> (e - 6)) & (H_SUB - 1));
    return (e - 5) * H_SUB + sub;
}

/* Middle of bucket idx. */
static double s_hval(int idx)
{
    if (idx < H_SUB)
        return idx;
    int e = idx / H_SUB + 5, sub = idx % H_SUB;
    double lo = ldexp(1.0, e) + sub * ldexp(1.0, e - 6);
    return lo + ldexp(1.0, e - 7);
}

static void s_hadd(s_hist_t *h, int64_t v)
{
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    h->c[s_hidx(u)]++;
    h->n++;
    h->sum += (double)u;
    if (u > h->max)
        h->max = u;
}

static double s_hpct(const s_hist_t *h, double pct)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)ceil(pct / 100.0 * (double)h->n), seen = 0;
    if (want == 0)
        want = 1;
    for (int i = 0; i < H_BUCKETS; i++) {
        seen += h->c[i];
        if (seen >= want) {
            double v = s_hval(i);
            return v > (double)h->max ? (double)h->max : v;
        }
    }
    return (double)h->max;
}

/* ---- exactness sums ---- */

typedef struct {
    uint64_t cons_chk, yield_chk, cscrap_chk, scrap_chk; /* sum of q * H(key), wrapping */
    int64_t cons_q, yield, cscrap, scrap_parts;          /* plain sums */
} s_sums_t;

/* End markers: after its last batch, each source sends one more batch that
   starts, counts one part for and completes an operation of plant
   MARK_PLANT. Its final completion on the feed proves that the worker of
   that source has taken every earlier batch of it (per-source FIFO through
   ingest and worker), so a drain started after every marker arrived loses
   nothing; the arrival of the last marker also ends the throughput clock. */
#define MARK_PLANT "BENCH-END"

/* ---- options ---- */

typedef struct {
    const char *push, *router, *sub, *json;
    bool forwarder, wait_stdin, lockstep;
    bool resumed, announce_start; /* see the comment at the top */
    uint64_t epoch;               /* the first epoch and plant seed (>= 1) */
    const char *plant;            /* every record's plant name instead of plantgen's; NULL: its */
    double rate;
    double burst_at, burst_secs, burst_mult; /* rate profile; mult <= 1: none */
    int window_ms;                           /* per-window latency; 0 = off */
    uint64_t records, keys;
    uint32_t batch, lines, rpo, restarts;
    double dup_pct, reorder_pct;
    int sndhwm, idle_ms;
    uint64_t pregen_max_mib; /* generate the stream ahead when it fits; 0 = never */
    /* counter readings (see the comment at the top): counters per line, 0 = off */
    uint32_t counters, counter_reset_every;
    bool counters_scrap;
    uint64_t counter_modulus;
} s_opts_t;

/* ---- subscriber ---- */

#define TOPICS 4096u

typedef struct {
    void *ctx;
    const s_opts_t *o;
    atomic_int stop;
    atomic_int_fast64_t last_event_ns; /* wall clock of the latest arrival */
    /* written by the subscriber thread only; read after join */
    s_hist_t lat;
    s_sums_t sums;
    uint64_t events, final_events, late_events, records_covered, bad, gaps, counter_resets;
    uint64_t fwd_records, fwd_batches;
    atomic_uint_fast64_t markers;   /* end markers seen (one per source) */
    atomic_int_fast64_t marker_ns;  /* wall clock of the latest one */
    int64_t first_ns, last_ns;
    /* --window-ms: every timed event's (newest record send time, latency) */
    int64_t (*samples)[2];
    size_t nsamples, samples_cap;
    uint64_t topic_hash[TOPICS], topic_seq[TOPICS];
    void *aligned;
    size_t aligned_cap;
} s_sub_t;

static void s_seq_check(s_sub_t *s, const void *topic, size_t tl, uint64_t seq)
{
    uint64_t h = XXH3_64bits(topic, tl) | 1;
    uint32_t i = (uint32_t)h & (TOPICS - 1);
    for (uint32_t k = 0; k < TOPICS; k++, i = (i + 1) & (TOPICS - 1)) {
        if (s->topic_hash[i] == h) {
            if (seq != s->topic_seq[i] + 1)
                s->gaps++;
            s->topic_seq[i] = seq;
            return;
        }
        if (s->topic_hash[i] == 0) {
            s->topic_hash[i] = h;
            if (seq != 1 && !s->o->resumed)
                s->gaps++;
            s->topic_seq[i] = seq;
            return;
        }
    }
}

/* Times one event: the histogram, and the window sample. */
static void s_time(s_sub_t *s, int64_t sent_ns, int64_t now)
{
    s_hadd(&s->lat, now - sent_ns);
    if (s->o->window_ms <= 0)
        return;
    if (fp_grow(&s->samples, &s->samples_cap, s->nsamples + 1, sizeof *s->samples, 65536) != 0)
        return; /* the windows then miss samples; the histogram has them */
    s->samples[s->nsamples][0] = sent_ns;
    s->samples[s->nsamples][1] = now - sent_ns;
    s->nsamples++;
}

static void s_on_event(s_sub_t *s, zmq_msg_t *topic, zmq_msg_t *body, int64_t now)
{
    if (zmq_msg_size(topic) == 9 && memcmp(zmq_msg_data(topic), "heartbeat", 9) == 0)
        return; /* the feed's heartbeat (docs/subscribers.md): not an event */
    size_t len = zmq_msg_size(body);
    const void *data = zmq_msg_data(body);
    if (((uintptr_t)data & 7) != 0) {
        if (len + 8 > s->aligned_cap) {
            free(s->aligned);
            s->aligned_cap = (len + 8) * 2;
            s->aligned = aligned_alloc(8, (s->aligned_cap + 7) & ~(size_t)7);
        }
        memcpy(s->aligned, data, len);
        data = s->aligned;
    }
    if (!s->first_ns)
        s->first_ns = now;
    s->last_ns = now;
    if (s->o->forwarder) {
        fp_batch_view_t v;
        if (fp_codec_batch_parse(data, len, 256u << 20, &v) != FP_CODEC_OK) {
            s->bad++;
            return;
        }
        int64_t newest = 0;
        for (uint32_t i = 0; i < v.nrecords; i++)
            if (v.records[i].time_ns > newest)
                newest = v.records[i].time_ns;
        s->fwd_batches++;
        s->fwd_records += v.nrecords;
        for (uint32_t i = 0; i < v.nrecords; i++)
            if (v.records[i].kind == FP_KIND_OP_COMPLETED && v.records[i].str[FP_STR_PLANT] &&
                strcmp(fp_codec_batch_string(&v, v.records[i].str[FP_STR_PLANT], NULL),
                       MARK_PLANT) == 0) {
                atomic_fetch_add(&s->markers, 1);
                atomic_store(&s->marker_ns, now);
            }
        s->events++;
        s_time(s, newest, now);
        return;
    }
    fp_checkpoint_t ck;
    if (fp_codec_checkpoint_decode(data, len, &ck) != FP_CODEC_OK) {
        s->bad++;
        return;
    }
    s->events++;
    s_seq_check(s, zmq_msg_data(topic), zmq_msg_size(topic), ck.stream_seq);
    s->records_covered += ck.record_count;
    if (ck.kind == FP_CK_COMPLETION && ck.final && strcmp(ck.plant, MARK_PLANT) == 0) {
        atomic_fetch_add(&s->markers, 1);
        atomic_store(&s->marker_ns, now);
    }
    if (ck.late)
        s->late_events++;
    uint64_t opk = bu_key_op(ck.plant, ck.order, ck.operation);
    switch (ck.kind) {
    case FP_CK_CONSUMPTION:
        s->sums.cons_q += ck.quantity;
        s->sums.cons_chk += (uint64_t)ck.quantity * bu_key_cons(opk, ck.material, ck.lot, ck.unit);
        break;
    case FP_CK_COMPLETION:
        s->sums.yield += ck.yield;
        s->sums.cscrap += ck.scrap;
        s->sums.yield_chk += (uint64_t)ck.yield * opk;
        s->sums.cscrap_chk += (uint64_t)ck.scrap * opk;
        if (ck.final && !ck.late) {
            s->final_events++;
            s_time(s, ck.last_time_ns, now);
        }
        break;
    case FP_CK_SCRAP:
        s->sums.scrap_parts += ck.parts;
        s->sums.scrap_chk += (uint64_t)ck.parts * bu_key_scrap(opk, ck.reason);
        break;
    case FP_CK_COUNTER_RESET:
        s->counter_resets++; /* a notice, no posting: counted against the scripted resets */
        break;
    default:
        s->bad++;
    }
}

static void *s_sub_main(void *arg)
{
    s_sub_t *s = arg;
    void *sock = zmq_socket(s->ctx, ZMQ_SUB);
    int hwm = 0, tmo = 50;
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm); /* never drop on our side */
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect(sock, s->o->sub) != 0) {
        fprintf(stderr, "fpload: connect %s: %s\n", s->o->sub, zmq_strerror(zmq_errno()));
        exit(2);
    }
    while (!atomic_load(&s->stop)) {
        zmq_msg_t topic, body;
        zmq_msg_init(&topic);
        if (zmq_msg_recv(&topic, sock, 0) < 0) {
            zmq_msg_close(&topic);
            continue;
        }
        int64_t now = bu_wall_ns();
        zmq_msg_init(&body);
        if (!zmq_msg_more(&topic) || zmq_msg_recv(&body, sock, 0) < 0) {
            s->bad++;
        } else {
            s_on_event(s, &topic, &body, now);
        }
        atomic_store(&s->last_event_ns, now);
        zmq_msg_close(&topic);
        zmq_msg_close(&body);
    }
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(sock);
    return NULL;
}

/* ---- sender ---- */

/* Acked mode: the time from a batch's send to its Ack (commit included:
   floorpost acks a batch once its round is committed), the producer's view
   of commit-to-ack. A batch is timed from its records' time_ns (the
   scheduled send time at --rate R: no coordinated omission, as for the
   events) to the Ack's arrival, both wall clock. Batches in flight are keyed by the Ack's batch identity
   (source, epoch, first seq), read from the frame at send; a key sent
   again (a duplicate, a resend) keeps its first send time and the first
   Ack times it. Open addressing, backward-shift deletion. */
#define ACK_SLOTS (1u << 17)

typedef struct {
    uint64_t source, epoch, first_seq; /* first_seq 0: empty */
    int64_t sent_ns;
} s_inflight_t;

typedef struct {
    void *sock;
    bool acked;
    uint64_t markers; /* end-marker records sent */
    uint64_t batches, frames, records, dup_frames, dup_records, reordered, acks, ack_rejects;
    s_inflight_t *inflight; /* [ACK_SLOTS], acked mode */
    uint32_t ninflight;
    uint64_t ack_untimed;   /* Acks of no batch in flight (a duplicate's second Ack) */
    uint64_t ack_table_full; /* sends not timed: the table was full */
    s_hist_t ack_lat;
} s_tx_t;

static uint32_t s_inflight_slot(uint64_t source, uint64_t epoch, uint64_t first_seq)
{
    uint64_t h = (source * 0x9E3779B97F4A7C15ull) ^ (epoch * 0xC2B2AE3D27D4EB4Full) ^
                 (first_seq * 0x165667B19E3779F9ull);
    h ^= h >> 29;
    return (uint32_t)h & (ACK_SLOTS - 1);
}

static void s_inflight_put(s_tx_t *tx, const void *buf, size_t len)
{
    fp_batch_view_t v;
    if (fp_codec_batch_parse(buf, len, SIZE_MAX, &v) != FP_CODEC_OK || v.nrecords == 0)
        return;
    uint64_t first = v.records[0].seq;
    if (first == 0)
        return;
    if (tx->ninflight >= ACK_SLOTS / 2) {
        tx->ack_table_full++;
        return;
    }
    for (uint32_t i = s_inflight_slot(v.source_id, v.epoch, first);; i = (i + 1) & (ACK_SLOTS - 1)) {
        s_inflight_t *e = &tx->inflight[i];
        if (e->first_seq == 0) {
            *e = (s_inflight_t){v.source_id, v.epoch, first, v.records[0].time_ns};
            tx->ninflight++;
            return;
        }
        if (e->source == v.source_id && e->epoch == v.epoch && e->first_seq == first)
            return; /* sent again: timed from its first send */
    }
}

static void s_inflight_ack(s_tx_t *tx, const fp_ack_t *a, int64_t now_ns)
{
    uint32_t i = s_inflight_slot(a->source_id, a->epoch, a->batch_first_seq);
    for (;; i = (i + 1) & (ACK_SLOTS - 1)) {
        s_inflight_t *e = &tx->inflight[i];
        if (e->first_seq == 0) {
            tx->ack_untimed++;
            return;
        }
        if (e->source == a->source_id && e->epoch == a->epoch &&
            e->first_seq == a->batch_first_seq)
            break;
    }
    s_hadd(&tx->ack_lat, now_ns - tx->inflight[i].sent_ns);
    tx->ninflight--;
    /* backward-shift deletion: no tombstones */
    for (uint32_t j = (i + 1) & (ACK_SLOTS - 1);; j = (j + 1) & (ACK_SLOTS - 1)) {
        s_inflight_t *e = &tx->inflight[j];
        if (e->first_seq == 0)
            break;
        uint32_t home = s_inflight_slot(e->source, e->epoch, e->first_seq);
        /* e may move to i when i lies cyclically in [home, j) */
        if (((j - home) & (ACK_SLOTS - 1)) >= ((j - i) & (ACK_SLOTS - 1))) {
            tx->inflight[i] = *e;
            i = j;
        }
    }
    tx->inflight[i].first_seq = 0;
}

static void s_drain_acks(s_tx_t *tx, int timeout_ms)
{
    if (!tx->acked)
        return;
    for (;;) {
        zmq_pollitem_t it = {tx->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, timeout_ms) <= 0)
            return;
        char buf[512];
        int n = zmq_recv(tx->sock, buf, sizeof buf, 0);
        if (n < 0)
            return;
        const int64_t now = bu_wall_ns();
        tx->acks++;
        fp_ack_t a;
        if (n <= (int)sizeof buf && fp_codec_ack_decode(buf, (size_t)n, &a) == FP_CODEC_OK) {
            if (a.status != 0)
                tx->ack_rejects++;
            s_inflight_ack(tx, &a, now);
        } else
            tx->ack_untimed++;
        timeout_ms = 0;
    }
}

/* Sends one frame. constant: buf stays unchanged and alive until exit
   (a pregenerated batch), so ZeroMQ may send it without a copy. */
static void s_send_raw(s_tx_t *tx, const void *buf, size_t len, bool constant)
{
    if (tx->acked)
        s_inflight_put(tx, buf, len);
    while ((constant ? zmq_send_const(tx->sock, buf, len, 0) : zmq_send(tx->sock, buf, len, 0)) <
           0) {
        if (zmq_errno() != EINTR && zmq_errno() != EAGAIN) {
            fprintf(stderr, "fpload: send: %s\n", zmq_strerror(zmq_errno()));
            exit(2);
        }
        s_drain_acks(tx, 1);
    }
    tx->frames++;
    s_drain_acks(tx, 0);
}

static uint64_t s_rng = 0x9E3779B97F4A7C15ull;
static double s_rand01(void)
{
    uint64_t z = (s_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static void s_usage(void)
{
    fprintf(stderr,
            "usage: fpload (--push EP | --router EP) --sub EP [--forwarder] [--rate R]\n"
            "              [--records N] [--batch B] [--keys K] [--lines L] [--rpo N]\n"
            "              [--dup-pct P] [--reorder-pct P] [--restarts K] [--sndhwm N]\n"
            "              [--wait-stdin] [--idle-ms MS] [--json FILE] [--lockstep]\n"
            "              [--burst-at S --burst-secs D --burst-mult M] [--window-ms W]\n"
            "              [--pregen-max-mib N] [--epoch E] [--plant NAME] [--resumed]\n"
            "              [--announce-start] [--counters M [--counters-scrap]\n"
            "              [--counter-reset-every N] [--counter-modulus MOD]]\n");
    exit(2);
}

/* Sleeps until wall-clock time t (ns). It never spins: at 2.9 M records/s
   a batch is due every 88 us, and a sender that spun through its last
   100-200 us before each batch (as this did) kept a whole core busy, taken
   from the processor it measures on a 2-core machine. The timer slack is
   set to 1 us at start (main), so the wake-up is close to t. */
static void s_sleep_until_wall(int64_t t)
{
    if (t - bu_wall_ns() <= 0)
        return;
    struct timespec ts = {(time_t)(t / 1000000000), (long)(t % 1000000000)};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ---- completion spread: per line, a reorder buffer ----

   The generator's record at line position p = v * K + k (visit v of order
   slot k, K slots) comes out at position p + d_k * K, d_k = k * (rpo + 2) / K:
   the same slot, d_k visits later, a bijection onto the positions whose
   visit is >= d_k. Each line's buffer holds (max d + 1) * K records, indexed
   by position mod its size: a record is written once (scattered) and read
   once (in order). */

/* One held record in one cache line: what varies (plant and line are the
   line's, the order is one of the slot's two copies). */
typedef struct {
    const char *str[6]; /* station, operation, material, lot, unit, reason */
    int64_t quantity;
    uint8_t kind;       /* 0 = empty */
    uint8_t order_sel;  /* which of the slot's order copies */
} s_slot_rec_t;
_Static_assert(sizeof(s_slot_rec_t) == 64, "one cache line");

static const int s_held_fields[6] = {FP_STR_STATION, FP_STR_OPERATION, FP_STR_MATERIAL,
                                     FP_STR_LOT,     FP_STR_UNIT,      FP_STR_REASON};

typedef struct {
    uint32_t lines, opl, size;  /* size: entries per line */
    uint32_t *delay;            /* per slot k: d_k * K, in positions */
    s_slot_rec_t *buf;          /* lines x size; 2 MiB aligned (huge pages) */
    size_t buf_bytes;
    char (*order)[2][32];       /* per (line, slot): its last two order strings */
    uint8_t *cur;               /* per (line, slot): which of the two is current */
    const char **plant, **line; /* per line */
    fp_rec_in_t out;            /* the record handed out last */
    uint64_t held;              /* records in the buffers now */
} s_spread_t;

static void s_spread_destroy(s_spread_t **sp)
{
    if (!*sp)
        return;
    free((*sp)->delay);
    free((*sp)->buf);
    free((*sp)->order);
    free((*sp)->cur);
    free((*sp)->plant);
    free((*sp)->line);
    free(*sp);
    *sp = NULL;
}

/* NULL when out of memory or the buffers would take more than max_bytes. */
static s_spread_t *s_spread_new(uint32_t lines, uint32_t opl, uint32_t rpo, size_t max_bytes)
{
    uint64_t dmax = (uint64_t)(opl - 1) * (rpo + 2) / opl;
    uint64_t size = (dmax + 1) * opl;
    size_t slots = (size_t)lines * opl;
    if (size > UINT32_MAX ||
        lines * size * sizeof(s_slot_rec_t) + slots * (64 + 1) > max_bytes)
        return NULL;
    s_spread_t *sp = calloc(1, sizeof *sp);
    if (!sp)
        return NULL;
    sp->lines = lines;
    sp->opl = opl;
    sp->size = (uint32_t)size;
    const size_t huge = (size_t)2 << 20;
    sp->buf_bytes = ((size_t)lines * size * sizeof(s_slot_rec_t) + huge - 1) / huge * huge;
    sp->delay = calloc(opl, sizeof *sp->delay);
    sp->buf = aligned_alloc(huge, sp->buf_bytes);
    sp->order = calloc(slots, sizeof *sp->order);
    sp->cur = calloc(slots, sizeof *sp->cur);
    sp->plant = calloc(lines, sizeof *sp->plant);
    sp->line = calloc(lines, sizeof *sp->line);
    if (!sp->delay || !sp->buf || !sp->order || !sp->cur || !sp->plant || !sp->line) {
        s_spread_destroy(&sp);
        return NULL;
    }
    /* The writes jump ~(rpo + 2) entries per record: huge pages spare the
       TLB (a hint; 4 KiB pages work too, slower). */
    madvise(sp->buf, sp->buf_bytes, MADV_HUGEPAGE);
    memset(sp->buf, 0, sp->buf_bytes);
    for (uint32_t k = 0; k < opl; k++)
        sp->delay[k] = (uint32_t)((uint64_t)k * (rpo + 2) / opl * opl);
    return sp;
}

/* Feeds the generator's record r, at position pos of line `line`, into the
   line's buffer and returns the record due at pos (valid until the next
   call; seq and time_ns are left to the caller), or NULL while that slot's
   delay is still filling. */
static const fp_rec_in_t *s_spread_push(s_spread_t *sp, uint32_t line, uint64_t pos,
                                        const fp_rec_in_t *r)
{
    uint32_t k = (uint32_t)(pos % sp->opl);
    s_slot_rec_t *b = sp->buf + (size_t)line * sp->size;
    /* The order string: plantgen rewrites it in place when the slot gets a
       new order, and the buffer may still hold records of the old one (an
       order lasts longer than any delay, so two copies are enough). */
    size_t si = (size_t)line * sp->opl + k;
    const char *o = r->str[FP_STR_ORDER] ? r->str[FP_STR_ORDER] : "";
    if (strcmp(sp->order[si][sp->cur[si]], o) != 0) {
        sp->cur[si] ^= 1;
        snprintf(sp->order[si][sp->cur[si]], sizeof sp->order[si][0], "%s", o);
    }
    sp->plant[line] = r->str[FP_STR_PLANT];
    sp->line[line] = r->str[FP_STR_LINE];
    s_slot_rec_t *w = &b[(pos + sp->delay[k]) % sp->size];
    for (int f = 0; f < 6; f++)
        w->str[f] = r->str[s_held_fields[f]];
    w->quantity = r->quantity;
    w->kind = r->kind;
    w->order_sel = sp->cur[si];
    sp->held++;
    s_slot_rec_t *e = &b[pos % sp->size];
    if (!e->kind)
        return NULL;
    fp_rec_in_t *out = &sp->out;
    memset(out, 0, sizeof *out);
    out->kind = e->kind;
    out->quantity = e->quantity;
    for (int f = 0; f < 6; f++)
        out->str[s_held_fields[f]] = e->str[f];
    out->str[FP_STR_PLANT] = sp->plant[line];
    out->str[FP_STR_LINE] = sp->line[line];
    out->str[FP_STR_ORDER] = sp->order[si][e->order_sel];
    e->kind = 0;
    sp->held--;
    return out;
}

/* ---- the plant stream: generation apart from sending ---- */

/* One encoded batch. Its records' time_ns is stamped when it is sent
   (s_stamp): generating ahead does not change what latency measures. */
typedef struct {
    void *buf;        /* 8-byte aligned */
    size_t len;
    uint32_t n;       /* records (all unique) */
    uint32_t line;    /* its source is the line's */
    uint64_t epoch;
    uint32_t rec_off; /* byte offset of the records vector in buf */
    bool owned;       /* buf is a malloc'd copy (a held batch when streaming) */
    bool constant;    /* buf is in the pregenerated stream: sent without a copy */
} s_batch_t;

static void s_send_raw(s_tx_t *tx, const void *buf, size_t len, bool constant);

static void s_send(s_tx_t *tx, const s_batch_t *bt)
{
    s_send_raw(tx, bt->buf, bt->len, bt->constant);
}

typedef struct {
    const s_opts_t *o;
    plantgen_params_t pp;
    plantgen_t *g;
    uint64_t epoch;
    uint32_t restarts_done;
    uint64_t next_restart;
    s_spread_t *spread;
    bool new_model;
    const char *lockstep_why;
    uint64_t *last_seq; /* per source, this epoch */
    uint64_t *gen_pos;  /* per line, records generated (the spread's order slot) */
    bu_builder_t b;
    void *aligned;      /* the builder's output copied to 8-byte alignment */
    size_t aligned_cap;
    s_sums_t truth;
    uint64_t kinds[8];
    /* --counters: per (line, good/scrap, counter) the cumulative count and
       the readings sent; the counters' names (stable, as the builder needs) */
    uint64_t *ctr_cum, *ctr_reads;
    uint32_t *ctr_next; /* per line and good/scrap: the next counter (round robin) */
    char (*ctr_names)[16];
    uint64_t ctr_resets; /* resets scripted (each must come back as a counter_reset) */
    uint64_t ctr_rollovers; /* readings that wrapped past the modulus */
    uint64_t generated; /* unique records in batches so far */
} s_gen_t;

static int s_gen_init(s_gen_t *gs, s_opts_t *o)
{
    memset(gs, 0, sizeof *gs);
    gs->o = o;
    gs->epoch = o->epoch;
    bu_plant_for_keys(&gs->pp, o->keys, o->lines, o->rpo, o->batch, gs->epoch, gs->epoch);
    gs->g = plantgen_new(&gs->pp);
    gs->next_restart = o->restarts ? o->records / (o->restarts + 1) : UINT64_MAX;
    gs->new_model = true;
    gs->lockstep_why = o->lockstep ? "--lockstep" : "";
    gs->last_seq = calloc(o->lines, sizeof *gs->last_seq);
    gs->gen_pos = calloc(o->lines, sizeof *gs->gen_pos);
    if (!gs->g || bu_builder_init(&gs->b, o->batch) != 0 || !gs->last_seq || !gs->gen_pos)
        return -1;
    if (o->counters) {
        size_t n = (size_t)o->lines * 2 * o->counters;
        gs->ctr_cum = calloc(n, sizeof *gs->ctr_cum);
        gs->ctr_reads = calloc(n, sizeof *gs->ctr_reads);
        gs->ctr_next = calloc((size_t)o->lines * 2, sizeof *gs->ctr_next);
        gs->ctr_names = calloc((size_t)2 * o->counters, sizeof *gs->ctr_names);
        if (!gs->ctr_cum || !gs->ctr_reads || !gs->ctr_next || !gs->ctr_names)
            return -1;
        for (uint32_t k = 0; k < o->counters; k++) {
            snprintf(gs->ctr_names[k], sizeof gs->ctr_names[k], "GOOD%u", k);
            snprintf(gs->ctr_names[o->counters + k], sizeof gs->ctr_names[0], "SCRAP%u", k);
        }
    }
    return 0;
}

static void s_gen_fini(s_gen_t *gs)
{
    bu_builder_fini(&gs->b);
    plantgen_destroy(&gs->g);
    free(gs->last_seq);
    free(gs->gen_pos);
    free(gs->aligned);
    free(gs->ctr_cum);
    free(gs->ctr_reads);
    free(gs->ctr_next);
    free(gs->ctr_names);
    s_spread_destroy(&gs->spread);
}

/* --counters: the PART (or, with --counters-scrap, SCRAP) record r of line li
   becomes a cumulative reading of the line's next counter (round robin): the
   counter's count goes up by r's quantity and the reading is that count
   modulo --counter-modulus, so floorpost's delta is r's quantity and the
   truth sums stay those of the plain record. A counter's first reading says
   it starts from zero (FP_COUNTER_FROM_ZERO: it counts whole). Every
   --counter-reset-every readings the counter restarts from zero (a PLC
   restart): floorpost posts the reading and publishes a counter_reset. A
   reset is scripted only while the count is below half the modulus and the
   quantity is above 0, where a drop cannot be read as a rollover or a
   repeat (bench/run.py sets [counters] max_jump far above any quantity). */
static void s_counter_reading(s_gen_t *gs, uint32_t li, fp_rec_in_t *r)
{
    const s_opts_t *o = gs->o;
    const uint32_t scrap = r->kind == FP_KIND_SCRAP;
    if (!o->counters || (r->kind != FP_KIND_PART_COUNT && !(scrap && o->counters_scrap)))
        return;
    uint32_t *next = &gs->ctr_next[li * 2 + scrap];
    const uint32_t k = (*next)++ % o->counters;
    const size_t i = ((size_t)li * 2 + scrap) * o->counters + k;
    uint64_t *cum = &gs->ctr_cum[i], reads = gs->ctr_reads[i]++;
    r->flags = 0;
    if (reads == 0) {
        r->flags = FP_COUNTER_FROM_ZERO;
    } else if (o->counter_reset_every && reads % o->counter_reset_every == 0 &&
               *cum % o->counter_modulus < o->counter_modulus / 2 && r->quantity > 0) {
        *cum = 0;
        gs->ctr_resets++;
    }
    if ((*cum + (uint64_t)r->quantity) / o->counter_modulus != *cum / o->counter_modulus)
        gs->ctr_rollovers++;
    *cum += (uint64_t)r->quantity;
    r->kind = scrap ? FP_KIND_SCRAP_COUNTER : FP_KIND_PART_COUNTER;
    r->quantity = (int64_t)(*cum % o->counter_modulus);
    r->str[FP_STR_STATION] = "PLC"; /* one station: the counter is (source, name) */
    r->str[FP_STR_COUNTER] = gs->ctr_names[scrap * o->counters + k];
}

/* The next batch of the stream in *bt (buf valid until the next call), with
   the truth sums and kinds counted. 1: a batch; 0: the stream is complete;
   -1: out of memory or an encoding failure. */
static int s_gen_next(s_gen_t *gs, s_batch_t *bt)
{
    s_opts_t *o = (s_opts_t *)gs->o;
    for (;;) {
        if (gs->generated >= o->records)
            return 0;
        if (gs->generated >= gs->next_restart && gs->restarts_done < o->restarts) {
            plantgen_destroy(&gs->g);
            memset(gs->last_seq, 0, o->lines * sizeof *gs->last_seq);
            gs->new_model = true; /* fresh delay lines below */
            gs->epoch++;
            gs->restarts_done++;
            bu_plant_for_keys(&gs->pp, o->keys, o->lines, o->rpo, o->batch, gs->epoch,
                              gs->epoch);
            gs->g = plantgen_new(&gs->pp);
            gs->next_restart = o->records / (o->restarts + 1) * (gs->restarts_done + 1);
            if (!gs->g)
                return -1;
        }
        if (!o->lockstep && gs->new_model) {
            /* (re)start of a plant model: empty delay lines (what the old
               ones held is never sent) */
            s_spread_destroy(&gs->spread);
            memset(gs->gen_pos, 0, o->lines * sizeof *gs->gen_pos);
            gs->spread = s_spread_new(o->lines, gs->pp.orders_per_line, o->rpo,
                                      (size_t)256 << 20);
            if (!gs->spread) {
                fprintf(stderr, "fpload: completion spread needs more than 256 MiB of delay "
                                "lines (or no memory): lockstep\n");
                o->lockstep = true;
                gs->lockstep_why = "delay lines over 256 MiB";
            }
        }
        gs->new_model = false;
        /* build: always one whole burst of the generator (one line), so
           batches never mix sources; records dropped by the spread, and
           those beyond --records in the last burst, are left out */
        bu_builder_t *b = &gs->b;
        bu_builder_clear(b);
        uint32_t n = 0;
        uint64_t sid = 0, ep_ = 0;
        for (uint32_t k = 0; k < o->batch; k++) {
            fp_rec_in_t gr;
            plantgen_next(gs->g, &sid, &ep_, &gr);
            uint32_t li = (uint32_t)(sid - gs->pp.first_source_id);
            uint64_t pos = gs->gen_pos[li]++;
            const fp_rec_in_t *rp = gs->spread ? s_spread_push(gs->spread, li, pos, &gr) : &gr;
            if (!rp || gs->generated + n >= o->records)
                continue;
            fp_rec_in_t r = *rp;
            if (o->plant)
                r.str[FP_STR_PLANT] = o->plant; /* argv: stable, as the builder needs */
            r.seq = ++gs->last_seq[li];
            r.time_ns = 0; /* s_stamp */
            const fp_rec_in_t plain = r; /* the truth: what the reading's delta posts */
            s_counter_reading(gs, li, &r);
            bu_builder_add_ex(b, sid, ep_, &r, gs->spread != NULL); /* s_spread_push: stable */
            n++;
            gs->kinds[r.kind]++;
            r = plain;
            if (r.kind == FP_KIND_OP_STARTED || r.kind == FP_KIND_OP_COMPLETED)
                continue;
            s_sums_t *t = &gs->truth;
            uint64_t opk = bu_key_op(r.str[FP_STR_PLANT], r.str[FP_STR_ORDER],
                                     r.str[FP_STR_OPERATION]);
            uint64_t q = (uint64_t)r.quantity;
            if (r.kind == FP_KIND_MATERIAL) {
                t->cons_q += r.quantity;
                t->cons_chk += q * bu_key_cons(opk, r.str[FP_STR_MATERIAL], r.str[FP_STR_LOT],
                                               r.str[FP_STR_UNIT]);
            } else if (r.kind == FP_KIND_SCRAP) {
                t->scrap_parts += r.quantity;
                t->cscrap += r.quantity;
                t->scrap_chk += q * bu_key_scrap(opk, r.str[FP_STR_REASON]);
                t->cscrap_chk += q * opk;
            } else {
                t->yield += r.quantity;
                t->yield_chk += q * opk;
            }
        }
        if (n == 0)
            continue; /* the whole burst went into delay lines */
        const void *out;
        size_t len;
        if (bu_builder_encode(b, &out, &len) != FP_CODEC_OK)
            return -1;
        if (len > gs->aligned_cap) {
            free(gs->aligned);
            gs->aligned_cap = len * 2;
            gs->aligned = aligned_alloc(8, (gs->aligned_cap + 7) & ~(size_t)7);
            if (!gs->aligned)
                return -1;
        }
        memcpy(gs->aligned, out, len);
        fp_batch_view_t v;
        if (fp_codec_batch_parse(gs->aligned, len, len, &v) != FP_CODEC_OK || v.nrecords != n)
            return -1;
        gs->generated += n;
        *bt = (s_batch_t){.buf = gs->aligned, .len = len, .n = n,
                          .line = (uint32_t)(sid - gs->pp.first_source_id), .epoch = gs->epoch,
                          .rec_off = (uint32_t)((const uint8_t *)v.records -
                                                (const uint8_t *)gs->aligned)};
        return 1;
    }
}

/* Stamps every record of bt with its send time. */
static void s_stamp(s_batch_t *bt, int64_t stamp)
{
    fp_record_t *r = (fp_record_t *)((uint8_t *)bt->buf + bt->rec_off);
    for (uint32_t i = 0; i < bt->n; i++)
        r[i].time_ns = stamp;
}

/* The whole stream, generated before the clock starts (--pregen-max-mib):
   batches in 64 MiB chunks that stay mapped until exit. */
typedef struct {
    s_batch_t *v;
    size_t n, cap;
    uint8_t **chunks;
    size_t nchunks, used; /* bytes used in the last chunk */
} s_pregen_t;

#define PREGEN_CHUNK ((size_t)64 << 20)

static int s_pregen_add(s_pregen_t *p, const s_batch_t *bt)
{
    if (bt->len > PREGEN_CHUNK)
        return -1;
    if (!p->nchunks || p->used + bt->len > PREGEN_CHUNK) {
        uint8_t **c = realloc(p->chunks, (p->nchunks + 1) * sizeof *c);
        if (!c)
            return -1;
        p->chunks = c;
        if (!(c[p->nchunks] = aligned_alloc(64, PREGEN_CHUNK)))
            return -1;
        p->nchunks++;
        p->used = 0;
    }
    if (fp_grow(&p->v, &p->cap, p->n + 1, sizeof *p->v, 4096) != 0)
        return -1;
    uint8_t *dst = p->chunks[p->nchunks - 1] + p->used;
    memcpy(dst, bt->buf, bt->len);
    p->used += (bt->len + 63) & ~(size_t)63;
    p->v[p->n] = *bt;
    p->v[p->n].buf = dst;
    p->v[p->n].constant = true;
    p->n++;
    return 0;
}

static void s_pregen_free(s_pregen_t *p)
{
    for (size_t i = 0; i < p->nchunks; i++)
        free(p->chunks[i]);
    free(p->chunks);
    free(p->v);
}

/* When unique record n is due, in ns after the start (--rate > 0). */
static int64_t s_due_ns(const s_opts_t *o, uint64_t n)
{
    double r = o->rate, x = (double)n, t;
    if (o->burst_mult <= 1 || o->burst_secs <= 0) {
        t = x / r;
    } else {
        double n1 = r * o->burst_at, n2 = n1 + r * o->burst_mult * o->burst_secs;
        if (x < n1)
            t = x / r;
        else if (x < n2)
            t = o->burst_at + (x - n1) / (r * o->burst_mult);
        else
            t = o->burst_at + o->burst_secs + (x - n2) / r;
    }
    return (int64_t)(t * 1e9);
}

static int s_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Writes the per-window latencies as a JSON array (windows of w_ms by the
   newest record's send time, from start_ns; empty windows left out). */
static void s_windows_json(FILE *f, s_sub_t *s, int64_t start_ns, int w_ms)
{
    fputs("[", f);
    if (w_ms <= 0 || !s->nsamples) {
        fputs("]", f);
        return;
    }
    /* sort by send time (row-wise qsort on the first column) */
    qsort(s->samples, s->nsamples, sizeof *s->samples, s_cmp_i64);
    int64_t w_ns = (int64_t)w_ms * 1000000;
    int64_t *lat = malloc(s->nsamples * sizeof *lat);
    if (!lat) {
        fputs("]", f);
        return;
    }
    bool first = true;
    for (size_t i = 0; i < s->nsamples;) {
        int64_t w = (s->samples[i][0] - start_ns) / w_ns;
        if (s->samples[i][0] < start_ns)
            w = -1;
        size_t j = i, n = 0;
        while (j < s->nsamples &&
               (s->samples[j][0] < start_ns ? -1 : (s->samples[j][0] - start_ns) / w_ns) == w)
            lat[n++] = s->samples[j++][1];
        qsort(lat, n, sizeof *lat, s_cmp_i64);
        size_t i50 = (n + 1) / 2 - 1, i99 = (size_t)ceil(0.99 * (double)n) - 1;
        fprintf(f, "%s{\"t_ms\":%" PRId64 ",\"n\":%zu,\"p50\":%.4f,\"p99\":%.4f,\"max\":%.4f}",
                first ? "" : ",", w * w_ms, n, (double)lat[i50] / 1e6, (double)lat[i99] / 1e6,
                (double)lat[n - 1] / 1e6);
        first = false;
        i = j;
    }
    free(lat);
    fputs("]", f);
}

int main(int argc, char **argv)
{
    s_opts_t o = {.rate = 0, .records = 2000000, .keys = 10000, .batch = 256, .lines = 8,
                  .rpo = 200, .sndhwm = 32, .idle_ms = 1000, .pregen_max_mib = 4096,
                  .epoch = 1, .counter_modulus = 65536};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++i)
        if (OPT("--push"))
            o.push = v;
        else if (OPT("--router"))
            o.router = v;
        else if (OPT("--sub"))
            o.sub = v;
        else if (OPT("--json"))
            o.json = v;
        else if (OPT("--rate"))
            o.rate = atof(v);
        else if (OPT("--records"))
            o.records = strtoull(v, NULL, 10);
        else if (OPT("--keys"))
            o.keys = strtoull(v, NULL, 10);
        else if (OPT("--batch"))
            o.batch = (uint32_t)atoi(v);
        else if (OPT("--lines"))
            o.lines = (uint32_t)atoi(v);
        else if (OPT("--rpo"))
            o.rpo = (uint32_t)atoi(v);
        else if (OPT("--restarts"))
            o.restarts = (uint32_t)atoi(v);
        else if (OPT("--dup-pct"))
            o.dup_pct = atof(v);
        else if (OPT("--reorder-pct"))
            o.reorder_pct = atof(v);
        else if (OPT("--sndhwm"))
            o.sndhwm = atoi(v);
        else if (OPT("--idle-ms"))
            o.idle_ms = atoi(v);
        else if (OPT("--burst-at"))
            o.burst_at = atof(v);
        else if (OPT("--burst-secs"))
            o.burst_secs = atof(v);
        else if (OPT("--burst-mult"))
            o.burst_mult = atof(v);
        else if (OPT("--pregen-max-mib"))
            o.pregen_max_mib = strtoull(v, NULL, 10);
        else if (OPT("--window-ms"))
            o.window_ms = atoi(v);
        else if (OPT("--plant"))
            o.plant = v;
        else if (OPT("--epoch"))
            o.epoch = strtoull(v, NULL, 10);
        else if (OPT("--counters"))
            o.counters = (uint32_t)atoi(v);
        else if (OPT("--counter-reset-every"))
            o.counter_reset_every = (uint32_t)atoi(v);
        else if (OPT("--counter-modulus"))
            o.counter_modulus = strtoull(v, NULL, 10);
        else if (strcmp(a, "--counters-scrap") == 0)
            o.counters_scrap = true;
        else if (strcmp(a, "--resumed") == 0)
            o.resumed = true;
        else if (strcmp(a, "--announce-start") == 0)
            o.announce_start = true;
        else if (strcmp(a, "--lockstep") == 0)
            o.lockstep = true;
        else if (strcmp(a, "--forwarder") == 0)
            o.forwarder = true;
        else if (strcmp(a, "--wait-stdin") == 0)
            o.wait_stdin = true;
        else
            s_usage();
#undef OPT
    }
    if ((!o.push == !o.router) || !o.sub || o.batch < 1 || o.batch > 65536 || o.lines < 1 ||
        o.records < 1 || o.epoch < 1 || o.burst_at < 0 || o.burst_secs < 0 || o.window_ms < 0 ||
        (o.burst_mult > 1 && o.rate <= 0) || o.counters > 100000 || o.counter_modulus < 2 ||
        (o.forwarder && o.counters))
        s_usage();

    (void)prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* s_sleep_until_wall */
    void *ctx = zmq_ctx_new();
    s_sub_t *sub = calloc(1, sizeof *sub);
    sub->ctx = ctx;
    sub->o = &o;
    pthread_t th;
    pthread_create(&th, NULL, s_sub_main, sub);

    s_tx_t tx = {.acked = o.router != NULL};
    if (tx.acked && !(tx.inflight = calloc(ACK_SLOTS, sizeof *tx.inflight))) {
        fprintf(stderr, "fpload: out of memory\n");
        return 2;
    }
    tx.sock = zmq_socket(ctx, tx.acked ? ZMQ_DEALER : ZMQ_PUSH);
    int imm = 1;
    zmq_setsockopt(tx.sock, ZMQ_SNDHWM, &o.sndhwm, sizeof o.sndhwm);
    zmq_setsockopt(tx.sock, ZMQ_IMMEDIATE, &imm, sizeof imm);
    const char *ep = tx.acked ? o.router : o.push;
    if (zmq_connect(tx.sock, ep) != 0) {
        fprintf(stderr, "fpload: connect %s: %s\n", ep, zmq_strerror(zmq_errno()));
        return 2;
    }
    usleep(300 * 1000); /* PUB/SUB: let the subscription reach the publisher */

    s_gen_t gs;
    if (s_gen_init(&gs, &o) != 0) {
        fprintf(stderr, "fpload: bad plant parameters or out of memory\n");
        return 2;
    }
    /* Generate the whole stream before the clock starts, unless it would
       take more than --pregen-max-mib: on two cores the generator's CPU
       would otherwise be taken from the processor under test. */
    s_pregen_t pg = {0};
    const bool pregen = (double)o.records * 72.0 <= (double)o.pregen_max_mib * 1048576.0;
    double pregen_s = 0;
    if (pregen) {
        int64_t t0 = bu_now_ns();
        s_batch_t bt;
        int rc;
        while ((rc = s_gen_next(&gs, &bt)) == 1)
            if (s_pregen_add(&pg, &bt) != 0) {
                rc = -1;
                break;
            }
        if (rc < 0) {
            fprintf(stderr, "fpload: generating the stream: out of memory or encode failure\n");
            return 2;
        }
        pregen_s = (double)(bu_now_ns() - t0) / 1e9;
    }
    /* Held (reordered) batches, one per source at most. */
    s_batch_t *held = calloc(o.lines, sizeof *held);
    if (!held) {
        fprintf(stderr, "fpload: out of memory\n");
        return 2;
    }
    uint64_t late_batches = 0, tx_epoch = o.epoch;
    int64_t max_behind = 0;
    if (o.announce_start) {
        printf("SENDING\n");
        fflush(stdout);
    }
    const int64_t start = bu_wall_ns() + 1000000;
    s_sleep_until_wall(start);
    const int64_t mono0 = bu_now_ns();
    uint64_t sent_unique = 0; /* unique records sent or held */
    size_t next = 0;

    for (;;) {
        s_batch_t cur;
        if (pregen) {
            if (next == pg.n)
                break;
            cur = pg.v[next++];
        } else {
            int rc = s_gen_next(&gs, &cur);
            if (rc < 0) {
                fprintf(stderr, "fpload: generating the stream: out of memory or encode "
                                "failure\n");
                return 2;
            }
            if (rc == 0)
                break;
        }
        if (cur.epoch != tx_epoch) {
            /* a producer restart: what the old epoch held back goes first */
            for (uint32_t l = 0; l < o.lines; l++)
                if (held[l].buf) {
                    s_send(&tx, &held[l]);
                    if (held[l].owned)
                        free(held[l].buf);
                    held[l].buf = NULL;
                }
            tx_epoch = cur.epoch;
        }
        /* schedule */
        int64_t stamp;
        if (o.rate > 0) {
            int64_t due = start + s_due_ns(&o, sent_unique);
            int64_t now = bu_wall_ns();
            if (now < due)
                s_sleep_until_wall(due);
            else if (now - due > max_behind)
                max_behind = now - due;
            if (now - due > 1000000)
                late_batches++;
            stamp = due;
        } else {
            stamp = bu_wall_ns();
        }
        s_stamp(&cur, stamp);
        sent_unique += cur.n;
        tx.batches++;
        tx.records += cur.n;
        bool hold = o.reorder_pct > 0 && !held[cur.line].buf && s_rand01() * 100 < o.reorder_pct &&
                    sent_unique < o.records;
        if (hold) {
            held[cur.line] = cur;
            if (!pregen) { /* the generator reuses its buffer */
                held[cur.line].buf = aligned_alloc(8, (cur.len + 7) & ~(size_t)7);
                if (!held[cur.line].buf) {
                    fprintf(stderr, "fpload: out of memory\n");
                    return 2;
                }
                memcpy(held[cur.line].buf, cur.buf, cur.len);
                held[cur.line].owned = true;
            }
            tx.reordered++;
            continue;
        }
        s_send(&tx, &cur);
        if (o.dup_pct > 0 && s_rand01() * 100 < o.dup_pct) {
            s_send(&tx, &cur);
            tx.dup_frames++;
            tx.dup_records += cur.n;
        }
        s_batch_t *h = &held[cur.line];
        if (h->buf) {
            s_send(&tx, h);
            if (h->owned)
                free(h->buf);
            h->buf = NULL;
        }
    }
    for (uint32_t l = 0; l < o.lines; l++)
        if (held[l].buf) {
            s_send(&tx, &held[l]);
            if (held[l].owned)
                free(held[l].buf);
        }
    const double sendonly_s = (double)(bu_now_ns() - mono0) / 1e9;
    /* end markers, then wait for all of them on the feed */
    for (uint32_t l = 0; l < o.lines; l++) {
        char order[32];
        snprintf(order, sizeof order, "END-%u", l + 1);
        bu_builder_clear(&gs.b);
        for (int k = 0; k < 3; k++) {
            fp_rec_in_t r = {.seq = ++gs.last_seq[l], .time_ns = bu_wall_ns(),
                             .kind = k == 0 ? FP_KIND_OP_STARTED
                                     : k == 1 ? FP_KIND_PART_COUNT : FP_KIND_OP_COMPLETED,
                             .quantity = k == 1 ? 1 : 0};
            r.str[FP_STR_PLANT] = MARK_PLANT;
            r.str[FP_STR_LINE] = "END";
            r.str[FP_STR_ORDER] = order;
            r.str[FP_STR_OPERATION] = "0010";
            bu_builder_add(&gs.b, gs.pp.first_source_id + l, gs.epoch, &r);
        }
        uint64_t opk = bu_key_op(MARK_PLANT, order, "0010");
        gs.truth.yield += 1;
        gs.truth.yield_chk += opk;
        const void *out;
        size_t len;
        if (bu_builder_encode(&gs.b, &out, &len) != FP_CODEC_OK)
            return 2;
        s_send_raw(&tx, out, len, false);
        tx.markers += 3;
    }
    const int64_t wait_until = bu_now_ns() + 120000000000LL;
    while (atomic_load(&sub->markers) < o.lines && bu_now_ns() < wait_until) {
        s_drain_acks(&tx, 0);
        usleep(200);
    }
    if (atomic_load(&sub->markers) < o.lines)
        fprintf(stderr, "fpload: only %" PRIu64 " of %u end markers arrived within 120 s\n",
                (uint64_t)atomic_load(&sub->markers), o.lines);
    const int64_t mono1 = bu_now_ns();
    double send_s = (double)(mono1 - mono0) / 1e9;
    if (tx.acked) {
        int64_t until = bu_now_ns() + 30000000000LL;
        while (tx.acks < tx.frames && bu_now_ns() < until)
            s_drain_acks(&tx, 100);
    }
    printf("SENT records=%" PRIu64 " frames=%" PRIu64 " seconds=%.3f\n", sent_unique, tx.frames,
           send_s);
    fflush(stdout);
    if (o.wait_stdin) {
        char buf[256];
        while (fread(buf, 1, sizeof buf, stdin) > 0) {
        }
    }
    /* Wait until the feed has been quiet for idle_ms (counted from now at
       the earliest: the processor has drained when we get here). */
    const int64_t wait_from = bu_wall_ns();
    for (;;) {
        usleep(50 * 1000);
        int64_t last = atomic_load(&sub->last_event_ns);
        int64_t ref = last > wait_from ? last : wait_from;
        if (bu_wall_ns() - ref >= (int64_t)o.idle_ms * 1000000)
            break;
    }
    atomic_store(&sub->stop, 1);
    pthread_join(th, NULL);

    /* ---- verdict ---- */
    char why[512] = "";
    bool ok = true;
    uint64_t expect_fwd = tx.records + tx.dup_records + tx.markers;
    if (o.forwarder) {
        if (sub->fwd_records != expect_fwd) {
            ok = false;
            snprintf(why, sizeof why, "forwarded records %" PRIu64 " != sent %" PRIu64,
                     sub->fwd_records, expect_fwd);
        }
    } else {
        const s_sums_t *g2 = &sub->sums;
        struct {
            const char *name;
            uint64_t want, got;
        } c[] = {
            {"consumption_quantity", (uint64_t)gs.truth.cons_q, (uint64_t)g2->cons_q},
            {"consumption_per_key", gs.truth.cons_chk, g2->cons_chk},
            {"completion_yield", (uint64_t)gs.truth.yield, (uint64_t)g2->yield},
            {"completion_yield_per_key", gs.truth.yield_chk, g2->yield_chk},
            {"completion_scrap", (uint64_t)gs.truth.cscrap, (uint64_t)g2->cscrap},
            {"completion_scrap_per_key", gs.truth.cscrap_chk, g2->cscrap_chk},
            {"scrap_parts", (uint64_t)gs.truth.scrap_parts, (uint64_t)g2->scrap_parts},
            {"scrap_per_key", gs.truth.scrap_chk, g2->scrap_chk},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
            if (c[i].want != c[i].got) {
                ok = false;
                size_t l = strlen(why);
                snprintf(why + l, sizeof why - l, "%s%s: expected %" PRIu64 " got %" PRIu64,
                         l ? "; " : "", c[i].name, c[i].want, c[i].got);
            }
        if (o.counters && sub->counter_resets != gs.ctr_resets) {
            ok = false;
            size_t l = strlen(why);
            snprintf(why + l, sizeof why - l, "%scounter_reset events: expected %" PRIu64
                     " got %" PRIu64, l ? "; " : "", gs.ctr_resets, sub->counter_resets);
        }
        if (sub->gaps) {
            ok = false;
            size_t l = strlen(why);
            snprintf(why + l, sizeof why - l, "%sstream_seq gaps: %" PRIu64, l ? "; " : "",
                     sub->gaps);
        }
    }
    if (atomic_load(&sub->markers) != o.lines) {
        ok = false;
        size_t l = strlen(why);
        snprintf(why + l, sizeof why - l, "%send markers seen %" PRIu64 " of %u", l ? "; " : "",
                 (uint64_t)atomic_load(&sub->markers), o.lines);
    }
    if (sub->bad) {
        ok = false;
        size_t l = strlen(why);
        snprintf(why + l, sizeof why - l, "%sundecodable events: %" PRIu64, l ? "; " : "",
                 sub->bad);
    }

    const s_hist_t *h = &sub->lat;
    double in_rate = (double)sent_unique / send_s;
    printf("%s %s: %" PRIu64 " unique records in %.3f s = %.3f M records/s in; %" PRIu64
           " events; timed %" PRIu64 " p50 %.3f p99 %.3f max %.3f ms%s%s\n",
           ok ? "OK" : "FAILURE", o.forwarder ? "forwarder" : "floorpost", sent_unique, send_s,
           in_rate / 1e6, sub->events, h->n, s_hpct(h, 50) / 1e6, s_hpct(h, 99) / 1e6,
           (double)h->max / 1e6, ok ? "" : ": ", why);
    if (o.json) {
        FILE *f = fopen(o.json, "w");
        if (!f) {
            fprintf(stderr, "fpload: cannot write %s: %s\n", o.json, strerror(errno));
            return 2;
        }
        fprintf(f,
                "{\"target\":\"%s\",\"ok\":%s,\"failure\":\"%s\",\n"
                " \"params\":{\"endpoint\":\"%s\",\"acked\":%s,\"sub\":\"%s\",\"rate\":%.0f,"
                "\"records\":%" PRIu64 ",\"batch\":%u,\"keys\":%" PRIu64 ",\"lines\":%u,"
                "\"records_per_operation\":%u,\"dup_pct\":%.1f,\"reorder_pct\":%.1f,"
                "\"restarts\":%u,\"sndhwm\":%d,\"lockstep\":%s,\"burst_at_s\":%.3f,"
                "\"burst_secs\":%.3f,\"burst_mult\":%.2f,\"window_ms\":%d},\n"
                " \"sent\":{\"unique_records\":%" PRIu64 ",\"batches\":%" PRIu64
                ",\"frames\":%" PRIu64 ",\"dup_frames\":%" PRIu64 ",\"dup_records\":%" PRIu64
                ",\"reordered_batches\":%" PRIu64 ",\"restarts\":%u,\"acks\":%" PRIu64
                ",\"ack_rejects\":%" PRIu64 ",\"seconds\":%.4f,\"records_per_s\":%.0f,"
                "\"send_seconds\":%.4f,\"send_records_per_s\":%.0f,\"marker_records\":%" PRIu64 ","
                "\"pregenerated\":%s,\"pregen_seconds\":%.3f,"
                "\"late_batches\":%" PRIu64 ",\"max_behind_ms\":%.3f,\"spread_held_at_end\":%" PRIu64 ",\"lockstep_because\":\"%s\","
                "\"kinds\":{\"part_count\":%" PRIu64 ",\"material\":%" PRIu64 ",\"scrap\":%" PRIu64
                ",\"op_started\":%" PRIu64 ",\"op_completed\":%" PRIu64 ",\"part_counter\":%" PRIu64
                ",\"scrap_counter\":%" PRIu64 "},"
                "\"counters\":{\"per_line\":%u,\"scrap\":%s,\"modulus\":%" PRIu64
                ",\"reset_every\":%u,\"resets_scripted\":%" PRIu64 ",\"rollovers\":%" PRIu64
                "}},\n"
                " \"received\":{\"events\":%" PRIu64 ",\"final_completions\":%" PRIu64
                ",\"late_events\":%" PRIu64 ",\"records_covered\":%" PRIu64
                ",\"forwarded_records\":%" PRIu64 ",\"stream_seq_gaps\":%" PRIu64
                ",\"undecodable\":%" PRIu64 ",\"counter_resets\":%" PRIu64
                ",\"first_to_last_s\":%.4f},\n"
                " \"latency_ms\":{\"timed\":\"%s\",\"count\":%" PRIu64
                ",\"mean\":%.4f,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"p999\":%.4f,\"max\":%.4f}",
                o.forwarder ? "forwarder" : "floorpost", ok ? "true" : "false", why, ep,
                tx.acked ? "true" : "false", o.sub, o.rate, o.records, o.batch, o.keys, o.lines,
                o.rpo, o.dup_pct, o.reorder_pct, o.restarts, o.sndhwm,
                o.lockstep ? "true" : "false", o.burst_at, o.burst_secs, o.burst_mult, o.window_ms,
                sent_unique, tx.batches,
                tx.frames, tx.dup_frames, tx.dup_records, tx.reordered, gs.restarts_done, tx.acks,
                tx.ack_rejects, send_s, in_rate, sendonly_s, (double)sent_unique / sendonly_s, tx.markers,
                pregen ? "true" : "false", pregen_s, late_batches, (double)max_behind / 1e6, gs.spread ? gs.spread->held : 0, gs.lockstep_why,
                gs.kinds[1], gs.kinds[2], gs.kinds[3], gs.kinds[4], gs.kinds[5], gs.kinds[6],
                gs.kinds[7], o.counters, o.counters_scrap ? "true" : "false", o.counter_modulus,
                o.counter_reset_every, gs.ctr_resets, gs.ctr_rollovers, sub->events, sub->final_events,
                sub->late_events, sub->records_covered, sub->fwd_records, sub->gaps, sub->bad,
                sub->counter_resets,
                (double)(sub->last_ns - sub->first_ns) / 1e9,
                o.forwarder ? "every forwarded batch, from its records' send time"
                            : "final completions (triggered by OperationCompleted), from the "
                              "newest covered record's send time",
                h->n, h->n ? h->sum / (double)h->n / 1e6 : 0.0, s_hpct(h, 50) / 1e6,
                s_hpct(h, 90) / 1e6, s_hpct(h, 99) / 1e6, s_hpct(h, 99.9) / 1e6,
                (double)h->max / 1e6);
        const s_hist_t *ah = &tx.ack_lat;
        fprintf(f,
                ",\n \"ack_latency_ms\":{\"timed\":\"%s\",\"count\":%" PRIu64
                ",\"untimed_acks\":%" PRIu64 ",\"untimed_sends\":%" PRIu64
                ",\"unacked_at_end\":%u,\"mean\":%.4f,\"p50\":%.4f,\"p90\":%.4f,"
                "\"p99\":%.4f,\"p999\":%.4f,\"max\":%.4f},\n \"windows\":",
                tx.acked ? "every batch: its records' time_ns to its first Ack's arrival"
                         : "not acked (--push)",
                ah->n, tx.ack_untimed, tx.ack_table_full, tx.ninflight,
                ah->n ? ah->sum / (double)ah->n / 1e6 : 0.0, s_hpct(ah, 50) / 1e6,
                s_hpct(ah, 90) / 1e6, s_hpct(ah, 99) / 1e6, s_hpct(ah, 99.9) / 1e6,
                (double)ah->max / 1e6);
        s_windows_json(f, sub, start, o.window_ms);
        fputs("}\n", f);
        fclose(f);
    }
    s_gen_fini(&gs);
    s_pregen_free(&pg);
    int linger = 0;
    zmq_setsockopt(tx.sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(tx.sock);
    zmq_ctx_term(ctx);
    free(held);
    free(tx.inflight);
    free(sub->samples);
    free(sub->aligned);
    free(sub);
    return ok ? 0 : 1;
}
