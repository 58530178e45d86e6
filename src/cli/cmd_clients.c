/*  cmd_clients.c - the client verbs: `floorpost send` (JSON Lines in,
    acked batches out, through the gateway library), `floorpost tail` (a
    feed out as JSON lines, gaps filled from replay) and `floorpost keygen`.
*/
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli.h"
#include "clock.h"
#include "config.h"
#include "deadletters.h"
#include "demo.h"
#include "http.h"
#include "jsonl.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "store.h"
#include "producer.h"
#include "security.h"
#include "tail.h"

/* The CURVE options of send and tail: --server-key FILE (the server's .pub
   or .key) and --key FILE (this client's .key). Both or neither. Returns 0
   (*curve says whether they were given) or 2 after printing the error. */
int fp_cli_client_keys(const char *who, const char *server_file, const char *key_file,
                         char server_z85[FP_CURVE_KEY_Z85 + 1], fp_curve_keypair_t *kp,
                         bool *curve)
{
    *curve = false;
    if (!server_file && !key_file)
        return 0;
    if (!server_file || !key_file) {
        fprintf(stderr, "floorpost %s: --server-key and --key go together\n", who);
        return 2;
    }
    char err[512];
    fp_curve_keypair_t server;
    if (fp_curve_key_load(server_file, false, &server, err, sizeof err) != 0 ||
        fp_curve_key_load(key_file, true, kp, err, sizeof err) != 0) {
        fprintf(stderr, "floorpost %s: %s\n", who, err);
        return 2;
    }
    memcpy(server_z85, server.public_z85, FP_CURVE_KEY_Z85 + 1);
    explicit_bzero(&server, sizeof server);
    *curve = true;
    return 0;
}

/* Open batches `send` keeps, one per source: lines of up to this many
   sources that take turns still fill batches. */
#define S_SEND_OPEN_BATCHES 64
#define S_SEND_FLUSH_MS 200  /* default --flush-ms */
#define S_SEND_IDLE_MS 20    /* while the input is quiet: acks, resends, due batches this often */
#define S_SEND_REFUSALS_SHOWN 20
#define S_SEND_PROGRESS_S 5  /* default --progress: a progress line this often (0: never) */

/* The input of `send`, read with poll and read, so that a quiet input
   (stdin from a pipe) does not hold back acks, resends and due batches. */
typedef struct {
    int fd;
    char *buf;
    size_t start, len, cap; /* unread data: buf[start..len) */
    bool eof;
    bool taken_last;        /* at EOF, the unterminated last line was handed out */
} s_lines_t;

/* The next whole line (NUL-terminated, without its newline), or at EOF the
   rest once; NULL when no whole line is buffered. Valid until the next
   s_line or s_fill. */
static char *s_line(s_lines_t *r)
{
    char *nl = r->len > r->start ? memchr(r->buf + r->start, '\n', r->len - r->start) : NULL;
    if (!nl && !(r->eof && r->len > r->start && !r->taken_last))
        return NULL;
    char *line = r->buf + r->start;
    if (nl) {
        *nl = '\0'; /* terminated in place: the newline becomes the NUL */
        r->start = (size_t)(nl + 1 - r->buf);
    } else {
        r->buf[r->len] = '\0'; /* s_fill keeps one byte spare */
        r->start = r->len;
        r->taken_last = true;
    }
    return line;
}

/* Waits up to timeout_ms for input and reads what is there. 1: read
   something (or EOF), 0: nothing yet, -errno: a read error. */
static int s_fill(s_lines_t *r, int timeout_ms)
{
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->len - r->start);
        r->len -= r->start;
        r->start = 0;
    }
    if (r->cap - r->len < 65536 + 1) {
        size_t cap = r->cap ? r->cap * 2 : 131072;
        char *b = realloc(r->buf, cap);
        if (!b)
            return -ENOMEM;
        r->buf = b;
        r->cap = cap;
    }
    struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
    int n = poll(&pfd, 1, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    if (n == 0)
        return 0;
    ssize_t k = read(r->fd, r->buf + r->len, r->cap - r->len - 1);
    if (k < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    if (k == 0)
        r->eof = true;
    r->len += (size_t)k;
    return 1;
}

typedef struct {
    const char *path;
    uint64_t shown;
} s_send_refusals_t;

/* A batch floorpost refused whole (producer_on_release): said once, on
   stderr, for the first few; the summary counts them all. */
static void s_send_released(void *ctx, const producer_release_t *r)
{
    s_send_refusals_t *f = ctx;
    if (r->status == 0 || f->shown++ >= S_SEND_REFUSALS_SHOWN)
        return;
    fprintf(stderr,
            "floorpost send: %s: floorpost refused the batch of source %" PRIu64 " epoch %" PRIu64
            " seq %" PRIu64 "..%" PRIu64 " (%u records): %s (it is in the dead-letter store)%s\n",
            f->path, r->source_id, r->epoch, r->first_seq, r->last_seq, r->records, r->reason,
            f->shown == S_SEND_REFUSALS_SHOWN ? "; further refusals are only counted" : "");
}

/* `send`'s progress line on stderr (--progress SECONDS, --quiet). */
typedef struct {
    int64_t every_ns; /* 0: never */
    int64_t start_ns, next_ns;
} s_progress_t;

static void s_progress(s_progress_t *pg, producer_t *p, unsigned long lineno, unsigned long bad,
                       bool force)
{
    int64_t now = fp_now_ns();
    if (!pg->every_ns || (!force && now < pg->next_ns))
        return;
    pg->next_ns = now + pg->every_ns;
    const producer_stats_t *st = producer_stats(p);
    double secs = (double)(now - pg->start_ns) / 1e9;
    fprintf(stderr,
            "floorpost send: progress: %lu lines, %" PRIu64 " records sent, %" PRIu64
            " acked, %" PRIu64 " refused, %" PRIu64 " dead-lettered, %" PRIu64
            " batches unacked, %lu bad lines, %.0f s, %.0f records/s\n",
            lineno, st->records_sent, st->acked_records, st->rejected_records,
            st->dead_letter_records, st->buffered_batches + st->spilled_batches, bad, secs,
            secs > 0 ? (double)st->records_sent / secs : 0.0);
}

int fp_cmd_send(int argc, char **argv)
{
    const char *server_file = NULL, *key_file = NULL;
    int mode = PRODUCER_ACKED, timeout_ms = 10000, resend_ms = PRODUCER_RESEND_MS;
    int flush_ms = S_SEND_FLUSH_MS;
    uint32_t batch = 256;
    uint64_t progress_s = S_SEND_PROGRESS_S;
    bool quiet = false;
    int i = 0;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "--push") == 0)
            mode = PRODUCER_PUSH;
        else if (strcmp(a, "--quiet") == 0)
            quiet = true;
        else if (strcmp(a, "--batch") == 0 || strcmp(a, "--timeout") == 0 ||
                 strcmp(a, "--resend-ms") == 0 || strcmp(a, "--flush-ms") == 0 ||
                 strcmp(a, "--progress") == 0) {
            bool is_batch = strcmp(a, "--batch") == 0, is_resend = strcmp(a, "--resend-ms") == 0;
            uint64_t min = is_batch || is_resend ? 1 : 0;
            uint64_t max = is_batch ? 65535 : strcmp(a, "--progress") == 0 ? 86400 : INT32_MAX;
            if (!fp_cli_number("send", a, next, min, max, &n))
                return 2;
            i++;
            if (is_batch)
                batch = (uint32_t)n;
            else if (is_resend)
                resend_ms = (int)n;
            else if (strcmp(a, "--timeout") == 0)
                timeout_ms = (int)n;
            else if (strcmp(a, "--flush-ms") == 0)
                flush_ms = (int)n;
            else
                progress_s = n;
        } else if (strcmp(a, "--server-key") == 0 && next)
            server_file = argv[++i];
        else if (strcmp(a, "--key") == 0 && next)
            key_file = argv[++i];
        else {
            fprintf(stderr, "floorpost send: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (argc - i != 2) {
        fp_cli_usage(stderr);
        return 2;
    }
    const char *endpoint = argv[i], *path = argv[i + 1];
    char server_z85[FP_CURVE_KEY_Z85 + 1];
    fp_curve_keypair_t keys;
    bool curve;
    if (fp_cli_client_keys("send", server_file, key_file, server_z85, &keys, &curve) != 0)
        return 2;
    bool is_stdin = strcmp(path, "-") == 0;
    int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "floorpost send: %s: %s\n", path, strerror(errno));
        return 2;
    }
    void *ctx = zmq_ctx_new();
    producer_t *p = producer_new(ctx, NULL, mode, batch);
    jsonl_t *j = jsonl_new();
    if (p && curve && producer_set_curve(p, server_z85, keys.public_z85, keys.secret_z85) != 0)
        producer_destroy(&p);
    explicit_bzero(&keys, sizeof keys);
    s_send_refusals_t refusals = {.path = path};
    if (p)
        producer_on_release(p, s_send_released, &refusals);
    /* ACKED: an add waits for buffer room at most timeout_ms; if no ack
       frees any room for that long, floorpost is not taking the data. */
    if (p && (producer_set_resend(p, resend_ms) != 0 ||
              producer_set_send_timeout(p, timeout_ms) != 0 ||
              producer_set_open_batches(p, S_SEND_OPEN_BATCHES) != 0 ||
              producer_set_flush_ms(p, flush_ms) != 0 || producer_connect(p, endpoint) != 0))
        producer_destroy(&p);
    if (!p || !j) {
        fprintf(stderr, "floorpost send: cannot connect to %s\n", endpoint);
        return 1;
    }
    s_progress_t pg = {.every_ns = quiet ? 0 : (int64_t)progress_s * 1000000000,
                       .start_ns = fp_now_ns()};
    pg.next_ns = pg.start_ns + pg.every_ns;
    s_lines_t in = {.fd = fd};
    unsigned long lineno = 0, bad = 0, records = 0;
    int rc = 0;
    while (rc == 0) {
        if ((lineno & 1023) == 0)
            s_progress(&pg, p, lineno, bad, false);
        char *line = s_line(&in);
        if (!line) {
            if (in.eof)
                break;
            int frc = s_fill(&in, S_SEND_IDLE_MS);
            if (frc < 0) {
                fprintf(stderr, "floorpost send: %s: %s\n", path, strerror(-frc));
                rc = frc;
            } else if (frc == 0) {
                /* A quiet input: read acks, resend, send due batches. */
                rc = producer_poll(p, 0);
                s_progress(&pg, p, lineno, bad, false);
            }
            continue;
        }
        lineno++;
        uint64_t source, epoch;
        fp_rec_in_t rec;
        char err[256];
        int prc = jsonl_parse(j, line, &source, &epoch, &rec, err, sizeof err);
        if (prc == 1)
            continue;
        if (prc != 0) {
            fprintf(stderr, "floorpost send: %s:%lu: %s\n", path, lineno, err);
            bad++;
            continue;
        }
        rc = producer_add(p, source, epoch, &rec);
        if (rc != 0)
            fprintf(stderr, "floorpost send: send failed at %s:%lu: %s\n", path, lineno,
                    rc == -EAGAIN ? "no ack freed buffer room within --timeout" : zmq_strerror(-rc));
        else
            records++;
    }
    free(in.buf);
    if (!is_stdin)
        close(fd);
    if (rc == 0)
        rc = producer_flush(p);
    /* The last acks, with a progress line now and then while they come. */
    int64_t deadline = fp_now_ns() + (int64_t)timeout_ms * 1000000;
    while (rc == 0) {
        int64_t left_ms = (deadline - fp_now_ns()) / 1000000;
        int slice = pg.every_ns && left_ms > pg.every_ns / 1000000 ? (int)(pg.every_ns / 1000000)
                                                                    : (int)(left_ms > 0 ? left_ms : 0);
        rc = producer_wait_acks(p, slice);
        if (rc != -ETIMEDOUT || slice >= left_ms)
            break;
        rc = 0;
        s_progress(&pg, p, lineno, bad, true);
    }
    const producer_stats_t *st = producer_stats(p);
    fprintf(stderr,
            "floorpost send: %lu records in %" PRIu64 " batches, %" PRIu64 " acked, %" PRIu64
            " rejected (%" PRIu64 " records), %" PRIu64 " resent, %" PRIu64
            " unacked, %lu bad lines, %" PRIu64 " records dead-lettered in accepted batches%s\n",
            records, st->batches_sent, mode == PRODUCER_ACKED ? st->acked_batches : 0,
            st->rejected_batches, st->rejected_records, st->resends,
            st->buffered_batches + st->spilled_batches, bad, st->dead_letter_records,
            rc == -ETIMEDOUT ? ", TIMED OUT waiting for acks" : "");
    if (st->dead_letter_records)
        fprintf(stderr, "floorpost send: %s: floorpost dead-lettered %" PRIu64 " records "
                        "(`floorpost deadletters list` shows them and why)\n",
                path, st->dead_letter_records);
    int failed = rc != 0 || st->rejected_batches > 0 || st->dead_letter_records > 0 || bad > 0;
    jsonl_destroy(&j);
    producer_destroy(&p);
    zmq_ctx_term(ctx);
    return failed ? 1 : 0;
}

int fp_cmd_tail(int argc, char **argv)
{
    fp_tail_opts_t o = {.topic = "", .out = stdout};
    const char *server_file = NULL, *key_file = NULL;
    int i = 0;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "--count") == 0 || strcmp(a, "--from") == 0) {
            /* --count 0: no limit, as without it */
            if (!fp_cli_number("tail", a, next, strcmp(a, "--from") == 0, UINT64_MAX - 1, &n))
                return 2;
            i++;
            if (strcmp(a, "--count") == 0)
                o.max_events = n;
            else
                o.from_global_seq = n;
        } else if (strcmp(a, "--timeout") == 0) {
            if (!fp_cli_number("tail", a, next, 0, INT32_MAX, &n))
                return 2;
            i++;
            o.idle_timeout_ms = (int)n;
        } else if (strcmp(a, "--human") == 0)
            o.human = 1;
        else if (strcmp(a, "--replay") == 0 && next)
            o.replay_endpoint = argv[++i];
        else if (strcmp(a, "--server-key") == 0 && next)
            server_file = argv[++i];
        else if (strcmp(a, "--key") == 0 && next)
            key_file = argv[++i];
        else {
            fprintf(stderr, "floorpost tail: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (argc - i < 1 || argc - i > 2 || (o.from_global_seq && !o.replay_endpoint)) {
        if (o.from_global_seq && !o.replay_endpoint)
            fprintf(stderr, "floorpost tail: --from needs --replay\n");
        fp_cli_usage(stderr);
        return 2;
    }
    o.endpoint = argv[i];
    if (argc - i == 2)
        o.topic = argv[i + 1];
    char server_z85[FP_CURVE_KEY_Z85 + 1];
    fp_curve_keypair_t keys;
    bool curve;
    if (fp_cli_client_keys("tail", server_file, key_file, server_z85, &keys, &curve) != 0)
        return 2;
    if (curve) {
        o.server_key_z85 = server_z85;
        o.public_key_z85 = keys.public_z85;
        o.secret_key_z85 = keys.secret_z85;
    }
    void *ctx = zmq_ctx_new();
    fp_tail_stats_t st;
    int rc = fp_tail(ctx, &o, &st);
    zmq_ctx_term(ctx);
    if (rc == -EACCES) {
        fprintf(stderr, "floorpost tail: %s: authentication refused: %s\n", o.endpoint,
                st.auth_status == 400 ? "the server does not allow this key (its allow file)"
                                      : "the CURVE handshake failed (wrong server key?)");
        return 3;
    }
    if (rc != 0) {
        fprintf(stderr, "floorpost tail: %s: %s\n", o.endpoint, st.error);
        return 1;
    }
    if (st.gaps)
        fprintf(stderr, "floorpost tail: %" PRIu64 " gaps, %" PRIu64 " events missing\n", st.gaps,
                st.missing);
    if (o.replay_endpoint && (st.replayed || st.unrecoverable))
        fprintf(stderr, "floorpost tail: %" PRIu64 " events replayed, %" PRIu64
                        " unrecoverable\n", st.replayed, st.unrecoverable);
    return 0;
}

int fp_cmd_keygen(int argc, char **argv)
{
    const char *base = NULL;
    if (argc == 2 && strcmp(argv[0], "-o") == 0 && argv[1][0])
        base = argv[1];
    else if (argc == 1 && argv[0][0] && argv[0][0] != '-')
        base = argv[0]; /* `floorpost keygen NAME` works too */
    else if (argc != 0) {
        fp_cli_usage(stderr);
        return 2;
    }
    char err[512];
    fp_curve_keypair_t kp;
    if (fp_curve_keygen(base, &kp, err, sizeof err) != 0) {
        fprintf(stderr, "floorpost keygen: %s\n", err);
        return 1;
    }
    if (base)
        printf("wrote %s.key (secret, mode 0600) and %s.pub\npublic = %s\n", base, base,
               kp.public_z85);
    else
        printf("public = %s\nsecret = %s\n", kp.public_z85, kp.secret_z85);
    explicit_bzero(&kp, sizeof kp);
    return 0;
}
