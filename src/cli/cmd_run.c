/*  cmd_run.c - `floorpost run`: load and check the config, open the state,
    start the security handler, the pipeline, the HTTP endpoint, the demo
    plant and the printer, wait for SIGTERM/SIGINT, drain, report.
*/
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
#include "stage.h"
#include "store.h"
#include "producer.h"
#include "security.h"
#include "sinks.h"
#include "tail.h"

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

/* SIGHUP: what can change without a restart. */
typedef struct {
    fp_config_t *running; /* main's own copy of what runs (the stages hold the original) */
    const fp_config_t *next;
    fp_http_t *http;
    int applied, restart;
} s_reload_t;

static void s_reload_one(void *ctx, const char *section, const char *name)
{
    s_reload_t *r = ctx;
    if (strcmp(name, "log_level") == 0) {
        fp_log_set_level(r->next->log_level);
        r->running->log_level = r->next->log_level;
        fp_log(FP_LOG_WARN, "main", "reload: applied", "option=[%s]%s", section, name);
        r->applied++;
    } else if (strcmp(name, "health_max_round_age_ms") == 0) {
        fp_http_set_max_round_age(r->http, r->next->health_max_round_age_ms);
        r->running->health_max_round_age_ms = r->next->health_max_round_age_ms;
        fp_log(FP_LOG_WARN, "main", "reload: applied", "option=[%s]%s value=%lld", section, name,
               (long long)r->next->health_max_round_age_ms);
        r->applied++;
    } else if (strcmp(name, "reader_max_lag_events") == 0) {
        fp_emit_set_reader_max_lag(r->next->reader_max_lag_events);
        r->running->reader_max_lag_events = r->next->reader_max_lag_events;
        fp_log(FP_LOG_WARN, "main", "reload: applied", "option=[%s]%s value=%llu", section, name,
               (unsigned long long)r->next->reader_max_lag_events);
        r->applied++;
    } else {
        fp_log(FP_LOG_WARN, "main", "reload: changed, takes effect at the next restart",
               "option=[%s]%s", section, name);
        r->restart++;
    }
}

static void s_reload(const char *file, fp_config_t *running, fp_http_t *http)
{
    if (!file) {
        fp_log(FP_LOG_INFO, "main", "reload: nothing to reload (embedded demo config)", NULL);
        return;
    }
    fp_config_t *next = malloc(sizeof *next);
    char err[1024];
    if (!next)
        return;
    fp_config_defaults(next);
    if (fp_config_load(next, file, err, sizeof err) != 0 ||
        fp_sinks_check(next, file, err, sizeof err) != 0 ||
        fp_security_check(next, err, sizeof err) != 0) {
        fp_log(FP_LOG_ERROR, "main", "reload refused: keeping the running configuration",
               "error=\"%s\"", err);
        free(next);
        return;
    }
    next->workers = next->workers ? next->workers : running->workers;
    next->shards = next->shards ? next->shards : running->shards;
    s_reload_t r = {running, next, http, 0, 0};
    fp_config_diff(running, next, s_reload_one, &r);
    fp_log(FP_LOG_INFO, "main", "reloaded",
           "config=%s applied=%d need_restart=%d allow_file=\"re-read on every change\"", file,
           r.applied, r.restart);
    free(next);
}

/* File descriptors beyond the ZeroMQ sockets that a start needs at least:
   the state, the log, the HTTP server's connections, the sinks' files and
   connections, and some producers. */
#define S_FDS_SPARE (FP_HTTP_CONNECTIONS_MAX + 256)

/* Raises RLIMIT_NOFILE's soft limit to the hard limit (logged when it
   changes) and checks that cfg's ZeroMQ sockets fit it with S_FDS_SPARE to
   spare. raise_it 0 (--check): only checks. 0, or -1 with the reason in
   err. */
static int s_fd_limit(const fp_config_t *cfg, int sockets, int raise_it, char *err, size_t errlen)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(err, errlen, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    rlim_t soft = rl.rlim_cur;
    if (raise_it && rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
            fp_log(FP_LOG_INFO, "main", "raised the file descriptor limit to the hard limit",
                   "RLIMIT_NOFILE=%llu from=%llu", (unsigned long long)rl.rlim_max,
                   (unsigned long long)rl.rlim_cur);
            soft = rl.rlim_max;
        } else {
            fp_log(FP_LOG_WARN, "main", "could not raise the file descriptor limit",
                   "RLIMIT_NOFILE=%llu hard=%llu error=\"%s\"", (unsigned long long)rl.rlim_cur,
                   (unsigned long long)rl.rlim_max, strerror(errno));
        }
    } else if (!raise_it) {
        soft = rl.rlim_max; /* the start raises it that far */
    }
    unsigned long long need = (unsigned long long)sockets + S_FDS_SPARE;
    if (soft != RLIM_INFINITY && (unsigned long long)soft < need) {
        snprintf(err, errlen, "workers = %d and shards = %d need about %llu file descriptors "
                 "(%d ZeroMQ sockets and %d to spare for connections and files), but "
                 "RLIMIT_NOFILE allows %llu (hard limit %llu); allowed: raise the limit "
                 "(LimitNOFILE= in the systemd unit, ulimit -n) or fewer workers and shards",
                 cfg->workers, cfg->shards, need, sockets, S_FDS_SPARE,
                 (unsigned long long)soft, (unsigned long long)rl.rlim_max);
        return -1;
    }
    return 0;
}

int fp_cmd_run(int argc, char **argv)
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
            fp_cli_usage(stderr);
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
    if (fp_sinks_check(&cfg, file, err, sizeof err) != 0) {
        fprintf(stderr, "floorpost: %s\n", err);
        return 2;
    }
    int sockets = pipeline_zmq_sockets(&cfg);
    if (s_fd_limit(&cfg, sockets, !check, err, sizeof err) != 0) {
        fprintf(stderr, "floorpost: %s%s%s\n", file ? file : "", file ? ": " : "", err);
        return 2;
    }
    if (check) {
        printf("%s: ok (workers=%d shards=%d sinks=%d zmq_sockets=%d)\n",
               file ? file : "embedded default", cfg.workers, cfg.shards, cfg.nsinks, sockets);
        return 0;
    }
    /* The plant's time zone for posting dates (sinks), before any thread
       starts: localtime_r then reads it without racing a setenv. */
    setenv("TZ", cfg.time_zone, 1);
    tzset();
    /* Signals are taken by sigwait in this thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGQUIT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2);
    signal(SIGPIPE, SIG_IGN);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    void *ctx = zmq_ctx_new();
    fp_metrics_t *metrics = fp_metrics_new(cfg.workers, cfg.shards);
    if (!ctx || !metrics) {
        fprintf(stderr, "floorpost: out of memory\n");
        return 1;
    }
    /* libzmq's socket limit sized to the configuration, before the first
       socket (its default, 1,023, fails from about 22 workers x 22 shards). */
    int max_sockets = sockets > ZMQ_MAX_SOCKETS_DFLT ? sockets : ZMQ_MAX_SOCKETS_DFLT;
    int zmq_limit = zmq_ctx_get(ctx, ZMQ_SOCKET_LIMIT);
    if ((zmq_limit > 0 && max_sockets > zmq_limit) ||
        zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, max_sockets) != 0) {
        fp_log(FP_LOG_ERROR, "main", "start failed", "error=\"ZMQ_MAX_SOCKETS = %d: %s "
               "(libzmq's limit %d); allowed: fewer workers and shards\"", max_sockets,
               zmq_strerror(zmq_errno()), zmq_limit);
        return 1;
    }
    fp_log(FP_LOG_INFO, "main", "limits", "zmq_max_sockets=%d zmq_sockets_needed=%d "
           "workers=%d shards=%d", max_sockets, sockets, cfg.workers, cfg.shards);
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
        static const char *const upgraded[] = {
            NULL, "upgraded state from version 1", "upgraded state from version 2",
            "upgraded state from version 3", "upgraded state from version 4"};
        _Static_assert(FP_STORE_FORMAT_VERSION == 5, "a message per version upgraded from");
        if (fp_store_upgraded_from(store))
            fp_log(FP_LOG_WARN, "main", upgraded[fp_store_upgraded_from(store)],
                   "state_dir=%s from=%u to=%u (an older floorpost now refuses it)",
                   cfg.state_dir, fp_store_upgraded_from(store), FP_STORE_FORMAT_VERSION);
        fp_log(FP_LOG_INFO, "main", "state opened", "state_dir=%s last_round=%llu global_seq=%llu",
               cfg.state_dir, (unsigned long long)last_round, (unsigned long long)last_global);
    } else {
        fp_log(FP_LOG_WARN, "main", "durability off: nothing survives a restart", "state_dir=\"\"");
    }
    /* The sinks first: a new sink's reader is recorded in the state before
       emit's first retention trim (outbox.h fp_outbox_add_reader); their
       inproc connects wait for emit's binds. */
    fp_sinks_t *sinks = fp_sinks_start(ctx, &cfg, file, store, metrics, err, sizeof err);
    if (!sinks) {
        fp_log(FP_LOG_ERROR, "main", "start failed: sinks", "error=\"%s\"", err);
        _exit(1);
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
    /* SIGTERM, SIGINT, SIGQUIT: drain. SIGHUP: reload. SIGUSR1/2: logged
       and ignored (they would end the process, undrained, by default). */
    int sig = 0;
    fp_config_t *seen = malloc(sizeof *seen); /* for SIGHUP's diff; main thread only */
    if (seen)
        memcpy(seen, &cfg, sizeof *seen);
    for (;;) {
        /* Woken once a second: the log's rate-limit reports come soon
           after a flood ends, not only with the next line (log.h). */
        struct timespec tick = {.tv_sec = 1};
        sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig < 0) {
            fp_log_tick();
            continue;
        }
        if (sig == SIGHUP) {
            if (seen)
                s_reload(file, seen, http);
            continue;
        }
        if (sig == SIGUSR1 || sig == SIGUSR2) {
            fp_log(FP_LOG_WARN, "main", "signal ignored", "signal=%s",
                   sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
            continue;
        }
        break;
    }
    free(seen);
    fp_log(FP_LOG_INFO, "main", "signal received, draining", "signal=%s",
           sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGQUIT");
    demo_stop(&demo);
    int64_t t0 = fp_now_ns();
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
    /* The sinks exit on emit's DONE notice, once delivered or failing. */
    fp_sinks_stop(sinks);
    fp_sinks_destroy(&sinks);
    fp_store_close(&store);
    fp_security_stop(&security);
    zmq_ctx_term(ctx);
    fp_http_stop(&http);
    /* peak_rss_kb last: every thread joined, every queue gone, so the
       high-water mark covers the whole run and its drain (bench/run.py
       reports it as the peak RSS) */
    fp_log(FP_LOG_INFO, "main", "drained", "ms=%lld peak_rss_kb=%llu %s",
           (long long)((fp_now_ns() - t0) / 1000000),
           (unsigned long long)fp_metrics_peak_rss_kb(), summary);
    fp_metrics_destroy(&metrics);
    return 0;
}
