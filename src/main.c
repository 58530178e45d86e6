/*  main.c - the floorpost command: run, send, tail, keygen.

      floorpost run [-c FILE] [--check]
      floorpost send [--push] [--batch N] [--timeout MS] [--resend-ms N] [CURVE] ENDPOINT FILE|-
      floorpost tail [--count N] [--timeout MS] [--human] [--replay EP [--from N]] [CURVE] ENDPOINT [TOPIC]
      floorpost keygen [[-o] BASENAME]
      floorpost deadletters [-c FILE] list|resubmit|delete ...   (src/deadletters.h)
      CURVE = --server-key FILE --key FILE

    Exit codes: 0 ok; 1 runtime failure (bind error, drain timeout, records
    refused); 2 usage or configuration error.
*/
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

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

/* jemalloc reads its options from this symbol at start-up (MALLOC_CONF in
   the environment still overrides it; the ASan build has no jemalloc and
   ignores it). lg_extent_max_active_fit:10 lets a request be cut from a
   free extent up to 2^10 times its size instead of 2^6. libzmq allocates
   every received telemetry frame (about 16 KiB at 256 records: one of
   jemalloc's "large" sizes) in its I/O thread and the workers free them;
   with the default, freed extents coalesced past the limit and new frames
   took fresh pages: about 20,000 page faults in the I/O thread per 5 M
   records and 45 MiB more peak RSS in the max-throughput benchmark
   (1,600 faults and 110 MiB with it). */
const char *malloc_conf = "lg_extent_max_active_fit:10";

#define FP_VERSION "0.1.0"

static int64_t fp_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void s_usage(FILE *f)
{
    fprintf(f,
            "floorpost " FP_VERSION " - shop-floor telemetry in, ERP checkpoints out\n"
            "\n"
            "usage:\n"
            "  floorpost run [-c FILE] [--check]\n"
            "      run the service; without -c, the embedded demo plant feeds it and\n"
            "      the published checkpoints are printed. --check validates and exits.\n"
            "  floorpost send [--push] [--batch N] [--timeout MS] [--resend-ms N] ENDPOINT FILE|-\n"
            "      send telemetry from a JSON Lines file as binary batches via the ROUTER\n"
            "      endpoint, keeping each until floorpost acks it as durable and resending\n"
            "      it every --resend-ms (default 2000) and after a reconnect; exits 0 only\n"
            "      when every record is acked. --timeout (default 10000): longest wait\n"
            "      without room in the buffer, and for the last acks. --push: the PULL\n"
            "      endpoint, fire and forget\n"
            "  floorpost tail [--count N] [--timeout MS] [--human] [--replay EP [--from N]]\n"
            "                 ENDPOINT [TOPIC]\n"
            "      subscribe to a feed and print each event as one JSON line. --replay:\n"
            "      floorpost's replay endpoint (e.g. tcp://HOST:5572); gaps in global_seq\n"
            "      are filled from it, in order; --from N first replays from global_seq N\n"
            "      (catch-up after a restart), then continues live without duplicates\n"
            "  send and tail take --server-key FILE --key FILE for a CURVE endpoint:\n"
            "      the server's .pub (or .key) file and this client's .key file\n"
            "  floorpost keygen [[-o] BASENAME]\n"
            "      make a CURVE key pair: BASENAME.key (secret, mode 0600) and\n"
            "      BASENAME.pub; without BASENAME, print both keys\n"
            "  floorpost deadletters [-c FILE] list [--from N] [--json]\n"
            "  floorpost deadletters [-c FILE] resubmit --source ID [--to ENDPOINT] [--delete]\n"
            "                        [--timeout MS] [--server-key FILE --key FILE] (DL_SEQ ...|--all)\n"
            "  floorpost deadletters [-c FILE] delete DL_SEQ ...\n"
            "      the dead letters kept in the config's state_dir (also while floorpost\n"
            "      runs; without -c: the built-in defaults). resubmit sends batch payloads\n"
            "      again, re-sequenced under source ID with a new epoch, to the ingest\n"
            "      ROUTER (default: the config's ingest_router); --delete deletes each one\n"
            "      that was acked. Frame-level ones (not a valid batch) are skipped\n");
}


typedef struct {
    void *zmq_ctx;
    char endpoint[FP_ENDPOINT_MAX];
    _Atomic int stop;
    const char *server_key;          /* CURVE: the security module's internal client, */
    const fp_curve_keypair_t *keys;  /* or NULL for plain endpoints */
} printer_t;

static void *s_printer(void *arg)
{
    printer_t *p = arg;
    fp_tail_opts_t o = {.endpoint = p->endpoint, .topic = "", .human = 1, .stop = &p->stop,
                        .out = stdout};
    if (p->keys) {
        o.server_key_z85 = p->server_key;
        o.public_key_z85 = p->keys->public_z85;
        o.secret_key_z85 = p->keys->secret_z85;
    }
    fp_tail_stats_t st;
    fp_tail(p->zmq_ctx, &o, &st);
    return NULL;
}

static int s_run(int argc, char **argv)
{
    const char *file = NULL;
    int check = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            file = argv[++i];
        else if (strcmp(argv[i], "--check") == 0)
            check = 1;
        else {
            fprintf(stderr, "floorpost run: unknown argument '%s'\n", argv[i]);
            s_usage(stderr);
            return 2;
        }
    }
    fp_config_t cfg;
    char err[1024];
    if (file) {
        fp_config_defaults(&cfg);
        if (fp_config_load(&cfg, file, err, sizeof err) != 0) {
            fprintf(stderr, "floorpost: %s\n", err);
            return 2;
        }
    } else {
        fp_config_demo(&cfg);
    }
    fp_config_resolve(&cfg);
    fp_log_set_level(cfg.log_level);
    if (fp_security_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "floorpost: %s\n", err);
        return 2;
    }
    if (check) {
        printf("%s: ok (workers=%d shards=%d)\n", file ? file : "embedded default", cfg.workers,
               cfg.shards);
        return 0;
    }
    /* Signals are taken by sigwait in this thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    void *ctx = zmq_ctx_new();
    fp_metrics_t *metrics = fp_metrics_new(cfg.workers, cfg.shards);
    if (!ctx || !metrics) {
        fprintf(stderr, "floorpost: out of memory\n");
        return 1;
    }
    /* The HTTP server first: a port in use fails the start before any
       stage runs. Its thread inherits the blocked SIGTERM/SIGINT. */
    fp_http_t *http = NULL;
    if (cfg.metrics_port) {
        http = fp_http_start(cfg.metrics_address, cfg.metrics_port, metrics,
                             cfg.health_max_round_age_ms, err, sizeof err);
        if (!http) {
            fp_log(FP_LOG_ERROR, "main", "start failed", "error=\"%s\"", err);
            fp_metrics_destroy(&metrics);
            zmq_ctx_term(ctx);
            return 1;
        }
        fp_log(FP_LOG_INFO, "main", "metrics endpoint listening",
               "url=http://%s:%d/metrics health=http://%s:%d/healthz", cfg.metrics_address,
               cfg.metrics_port, cfg.metrics_address, cfg.metrics_port);
    }
    /* The ZAP handler before any tcp endpoint binds (else they refuse all). */
    fp_security_t *security = fp_security_start(ctx, &cfg, err, sizeof err);
    if (!security) {
        fp_log(FP_LOG_ERROR, "main", "start failed", "error=\"%s\"", err);
        _exit(1);
    }
    /* The state: refused whole if damaged or foreign, never half-loaded. */
    fp_store_t *store = NULL;
    uint64_t last_round = 0, last_global = 0;
    if (cfg.state_dir[0]) {
        store = fp_store_open(cfg.state_dir, cfg.map_size_mb << 20, cfg.instance, err,
                              sizeof err);
        if (!store || fp_store_last_round(store, &last_round, &last_global) != 0) {
            fp_log(FP_LOG_ERROR, "main", "start failed: state refused", "state_dir=%s error=\"%s\"",
                   cfg.state_dir, store ? "cannot read the last round" : err);
            _exit(1);
        }
        if (fp_store_upgraded_from(store))
            fp_log(FP_LOG_WARN, "main", "upgraded state from version 1",
                   "state_dir=%s from=%u to=%u (an older floorpost now refuses it)",
                   cfg.state_dir, fp_store_upgraded_from(store), FP_STORE_FORMAT_VERSION);
        fp_log(FP_LOG_INFO, "main", "state opened", "state_dir=%s last_round=%llu global_seq=%llu",
               cfg.state_dir, (unsigned long long)last_round, (unsigned long long)last_global);
    } else {
        fp_log(FP_LOG_WARN, "main", "durability off: nothing survives a restart", "state_dir=\"\"");
    }
    pipeline_t *pipe = pipeline_start(ctx, &cfg, metrics, store, last_round + 1, err, sizeof err);
    if (!pipe) {
        fp_log(FP_LOG_ERROR, "main", "start failed", "error=\"%s\"", err);
        _exit(1); /* stages left waiting: see pipeline_start */
    }
    fp_log(FP_LOG_INFO, "main", "running", "config=%s instance=%s publish=%s deadletter=%s",
           file ? file : "embedded-demo", cfg.instance, cfg.publish, cfg.deadletter);
    printer_t printer = {.zmq_ctx = ctx};
    const char *internal_server = NULL;
    const fp_curve_keypair_t *internal_keys = NULL;
    if (fp_security_internal_client(security, &internal_server, &internal_keys)) {
        printer.server_key = internal_server;
        printer.keys = internal_keys;
    }
    pthread_t printer_thread;
    int printing = 0;
    if (cfg.print_events) {
        fp_config_connect_endpoint(cfg.publish, printer.endpoint, sizeof printer.endpoint);
        printing = pthread_create(&printer_thread, NULL, s_printer, &printer) == 0;
    }
    demo_t *demo = NULL;
    if (cfg.demo) {
        char ep[FP_ENDPOINT_MAX];
        fp_config_connect_endpoint(cfg.ingest_router, ep, sizeof ep);
        demo = demo_start_curve(ctx, ep, cfg.demo_rate, cfg.demo_lines, internal_server,
                                internal_keys);
        if (!demo)
            fp_log(FP_LOG_ERROR, "main", "demo plant failed to start", "endpoint=%s", ep);
        else
            fp_log(FP_LOG_INFO, "main", "demo plant started", "lines=%u rate=%u endpoint=%s",
                   cfg.demo_lines, cfg.demo_rate, ep);
    }
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    fp_log(FP_LOG_INFO, "main", "signal received, draining", "signal=%s",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    demo_stop(&demo);
    int64_t t0 = fp_mono_ns();
    int rc = pipeline_drain(pipe, cfg.drain_timeout_ms);
    char summary[2048];
    fp_metrics_format(metrics, summary, sizeof summary);
    fp_log_flush_suppressed();
    if (rc != 0) {
        fp_log(FP_LOG_ERROR, "main", "drain incomplete, exiting", "%s", summary);
        _exit(1);
    }
    if (printing) {
        /* Let the printer see the drain's last events, then stop it. */
        usleep(300 * 1000);
        atomic_store_explicit(&printer.stop, 1, memory_order_release);
        pthread_join(printer_thread, NULL);
    }
    pipeline_destroy(&pipe);
    fp_store_close(&store);
    fp_security_stop(&security);
    zmq_ctx_term(ctx);
    fp_http_stop(&http);
    fp_log(FP_LOG_INFO, "main", "drained", "ms=%lld %s",
           (long long)((fp_mono_ns() - t0) / 1000000), summary);
    fp_metrics_destroy(&metrics);
    return 0;
}

/* The CURVE options of send and tail: --server-key FILE (the server's .pub
   or .key) and --key FILE (this client's .key). Both or neither. Returns 0
   (*curve says whether they were given) or 2 after printing the error. */
static int s_client_keys(const char *who, const char *server_file, const char *key_file,
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

static int s_send(int argc, char **argv)
{
    const char *server_file = NULL, *key_file = NULL;
    int mode = PRODUCER_ACKED, timeout_ms = 10000, resend_ms = PRODUCER_RESEND_MS;
    uint32_t batch = 256;
    int i = 0;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--push") == 0)
            mode = PRODUCER_PUSH;
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            timeout_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--resend-ms") == 0 && i + 1 < argc)
            resend_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--server-key") == 0 && i + 1 < argc)
            server_file = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key_file = argv[++i];
        else {
            fprintf(stderr, "floorpost send: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (argc - i != 2 || batch < 1 || batch > 65535 || resend_ms < 1 || timeout_ms < 0) {
        s_usage(stderr);
        return 2;
    }
    const char *endpoint = argv[i], *path = argv[i + 1];
    char server_z85[FP_CURVE_KEY_Z85 + 1];
    fp_curve_keypair_t keys;
    bool curve;
    if (s_client_keys("send", server_file, key_file, server_z85, &keys, &curve) != 0)
        return 2;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "floorpost send: %s: %s\n", path, strerror(errno));
        return 2;
    }
    void *ctx = zmq_ctx_new();
    producer_t *p = producer_new(ctx, NULL, mode, batch);
    jsonl_t *j = jsonl_new();
    if (p && curve && producer_set_curve(p, server_z85, keys.public_z85, keys.secret_z85) != 0)
        producer_destroy(&p);
    explicit_bzero(&keys, sizeof keys);
    /* ACKED: an add waits for buffer room at most timeout_ms; if no ack
       frees any room for that long, floorpost is not taking the data. */
    if (p && (producer_set_resend(p, resend_ms) != 0 ||
              producer_set_send_timeout(p, timeout_ms) != 0 || producer_connect(p, endpoint) != 0))
        producer_destroy(&p);
    if (!p || !j) {
        fprintf(stderr, "floorpost send: cannot connect to %s\n", endpoint);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0, bad = 0, records = 0;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
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
    free(line);
    if (f != stdin)
        fclose(f);
    if (rc == 0)
        rc = producer_flush(p);
    if (rc == 0)
        rc = producer_wait_acks(p, timeout_ms);
    const producer_stats_t *st = producer_stats(p);
    fprintf(stderr,
            "floorpost send: %lu records in %" PRIu64 " batches, %" PRIu64 " acked, %" PRIu64
            " rejected, %" PRIu64 " resent, %" PRIu64 " unacked, %lu bad lines%s\n",
            records, st->batches_sent, mode == PRODUCER_ACKED ? st->acked_batches : 0,
            st->rejected_batches, st->resends, st->buffered_batches + st->spilled_batches, bad,
            rc == -ETIMEDOUT ? ", TIMED OUT waiting for acks" : "");
    int failed = rc != 0 || st->rejected_batches > 0 || bad > 0;
    jsonl_destroy(&j);
    producer_destroy(&p);
    zmq_ctx_term(ctx);
    return failed ? 1 : 0;
}

static int s_tail(int argc, char **argv)
{
    fp_tail_opts_t o = {.topic = "", .out = stdout};
    const char *server_file = NULL, *key_file = NULL;
    int i = 0;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            o.max_events = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            o.idle_timeout_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--human") == 0)
            o.human = 1;
        else if (strcmp(argv[i], "--replay") == 0 && i + 1 < argc)
            o.replay_endpoint = argv[++i];
        else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
            o.from_global_seq = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--server-key") == 0 && i + 1 < argc)
            server_file = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key_file = argv[++i];
        else {
            fprintf(stderr, "floorpost tail: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (argc - i < 1 || argc - i > 2 || (o.from_global_seq && !o.replay_endpoint)) {
        if (o.from_global_seq && !o.replay_endpoint)
            fprintf(stderr, "floorpost tail: --from needs --replay\n");
        s_usage(stderr);
        return 2;
    }
    o.endpoint = argv[i];
    if (argc - i == 2)
        o.topic = argv[i + 1];
    char server_z85[FP_CURVE_KEY_Z85 + 1];
    fp_curve_keypair_t keys;
    bool curve;
    if (s_client_keys("tail", server_file, key_file, server_z85, &keys, &curve) != 0)
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
    if (rc != 0) {
        fprintf(stderr, "floorpost tail: %s: %s\n", o.endpoint, zmq_strerror(-rc));
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

static int s_keygen(int argc, char **argv)
{
    const char *base = NULL;
    if (argc == 2 && strcmp(argv[0], "-o") == 0 && argv[1][0])
        base = argv[1];
    else if (argc == 1 && argv[0][0] && argv[0][0] != '-')
        base = argv[0]; /* `floorpost keygen NAME` works too */
    else if (argc != 0) {
        s_usage(stderr);
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

int main(int argc, char **argv)
{
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "run") == 0)
        return s_run(argc - 2, argv + 2);
    if (strcmp(argv[1], "send") == 0)
        return s_send(argc - 2, argv + 2);
    if (strcmp(argv[1], "tail") == 0)
        return s_tail(argc - 2, argv + 2);
    if (strcmp(argv[1], "keygen") == 0)
        return s_keygen(argc - 2, argv + 2);
    if (strcmp(argv[1], "deadletters") == 0)
        return fp_deadletters_main(argc - 2, argv + 2);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("floorpost " FP_VERSION "\n");
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        s_usage(stdout);
        return 0;
    }
    fprintf(stderr, "floorpost: unknown command '%s'\n", argv[1]);
    s_usage(stderr);
    return 2;
}
