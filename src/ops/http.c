/*  http.c - /metrics and /healthz with libmicrohttpd. See http.h.

    DESIGN: slow clients cannot starve /healthz (issue 9, item 5).
    libmicrohttpd's MHD_OPTION_CONNECTION_TIMEOUT is an idle timeout that
    every received byte restarts, so 16 clients sending a header byte every
    2 s held all 16 connections for good. Now:
    - every connection has an absolute deadline, FP_HTTP_DEADLINE_MS from
      its accept: the server's own thread (it runs libmicrohttpd with
      MHD_run_wait, so the daemon, the callbacks and the list below are all
      on that one thread, without a lock) sweeps the connections every
      S_SWEEP_MS and shuts the socket of any past its deadline; libmicrohttpd
      then sees the end of the stream and closes it;
    - every answer carries "Connection: close", so a connection serves one
      request and the deadline bounds its whole life (no keep-alive
      connection outlives it mid-request);
    - FP_HTTP_CONNECTIONS_MAX connections (was 16): a few dozen slow
      clients leave room for the probe; past the limit libmicrohttpd leaves
      new connections in the listen backlog until the sweep frees a slot,
      so a probe waits at most about one deadline.
    No per-IP limit: probes and attackers may share an address (loopback, a
    node's address, NAT), and the limit would refuse the probe too. A flood
    of more than FP_HTTP_CONNECTIONS_MAX connections per deadline still
    delays the probe; that takes a firewall.
*/
#include "clock.h"
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

#define S_SWEEP_MS 100 /* how often the deadlines are looked at, and the stop flag */

/* One open connection: the server thread's own (its notify callback and
   sweep), never touched elsewhere. */
typedef struct s_conn {
    struct s_conn *prev, *next;
    int fd;
    int64_t deadline_ns; /* absolute, fp_now_ns's clock */
    bool cut;            /* shut down once, now waiting for libmicrohttpd to close it */
} s_conn_t;

struct fp_http {
    struct MHD_Daemon *daemon;
    const fp_metrics_t *metrics; /* read-only here: relaxed atomic loads */
    _Atomic int64_t max_age_ns; /* fp_http_set_max_round_age: SIGHUP */
    pthread_t thread;
    bool running;
    _Atomic int stop;            /* main -> server thread: relaxed, polled every S_SWEEP_MS */
    _Atomic uint64_t cut;        /* connections shut at their deadline: a metric, relaxed */
    s_conn_t *conns;             /* the server thread's (see s_conn_t) */
};

/* libmicrohttpd's thread (MHD_run_wait on ours): a connection opens or
   closes. */
static void s_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode toe)
{
    fp_http_t *self = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        s_conn_t *c = calloc(1, sizeof *c);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!c || !ci) {
            free(c);
            return; /* out of memory: this one keeps only the idle timeout */
        }
        c->fd = ci->connect_fd;
        c->deadline_ns = fp_now_ns() + (int64_t)FP_HTTP_DEADLINE_MS * 1000000;
        c->next = self->conns;
        if (c->next)
            c->next->prev = c;
        self->conns = c;
        *socket_context = c;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        s_conn_t *c = *socket_context;
        if (c->prev)
            c->prev->next = c->next;
        else
            self->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        free(c);
        *socket_context = NULL;
    }
}

/* Shuts every connection past its deadline; libmicrohttpd reads the end of
   the stream on its next run and closes it (then s_notify frees it). */
static void s_sweep(fp_http_t *self)
{
    int64_t now = fp_now_ns();
    for (s_conn_t *c = self->conns; c; c = c->next) {
        if (!c->cut && now >= c->deadline_ns) {
            shutdown(c->fd, SHUT_RDWR);
            c->cut = true;
            atomic_fetch_add_explicit(&self->cut, 1, memory_order_relaxed);
        }
    }
}

static void *s_loop(void *arg)
{
    fp_http_t *self = arg;
    while (!atomic_load_explicit(&self->stop, memory_order_relaxed)) {
        MHD_run_wait(self->daemon, S_SWEEP_MS);
        s_sweep(self);
    }
    return NULL;
}

static enum MHD_Result s_reply(struct MHD_Connection *conn, unsigned code, const char *type,
                               char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    /* One request per connection: FP_HTTP_DEADLINE_MS bounds its life. */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rc = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return rc;
}

/* Runs on libmicrohttpd's thread. */
static enum MHD_Result s_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **req_cls)
{
    fp_http_t *self = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return s_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "GET only\n", 9,
                       MHD_RESPMEM_PERSISTENT);
    int64_t now = fp_now_ns();
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *text = fp_metrics_prometheus(self->metrics, now, &len);
        /* the server's own counter, appended */
        char own[256];
        int n = snprintf(own, sizeof own,
                         "# HELP floorpost_http_deadline_closed_total HTTP connections closed at "
                         "their deadline (%d ms from the accept: slow clients).\n"
                         "# TYPE floorpost_http_deadline_closed_total counter\n"
                         "floorpost_http_deadline_closed_total %llu\n",
                         FP_HTTP_DEADLINE_MS, (unsigned long long)fp_http_deadline_cuts(self));
        char *more = text && n > 0 ? realloc(text, len + (size_t)n + 1) : NULL;
        if (more) {
            memcpy(more + len, own, (size_t)n + 1);
            len += (size_t)n;
            text = more;
        }
        if (!text)
            return s_reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n",
                           14, MHD_RESPMEM_PERSISTENT);
        return s_reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len,
                       MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/healthz") == 0) {
        char reason[256];
        int rc = fp_metrics_health(self->metrics, now, atomic_load(&self->max_age_ns), reason,
                                   sizeof reason - 1);
        size_t n = strlen(reason);
        reason[n++] = '\n';
        return s_reply(conn, rc == 0 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
                       reason, n, MHD_RESPMEM_MUST_COPY);
    }
    if (strcmp(url, "/sinks") == 0) {
        size_t len = 0;
        char *text = fp_metrics_sinks_status(self->metrics, &len);
        if (!text)
            return s_reply(conn, MHD_HTTP_OK, "application/json", "[]\n", 3,
                           MHD_RESPMEM_PERSISTENT);
        return s_reply(conn, MHD_HTTP_OK, "application/json", text, len, MHD_RESPMEM_MUST_FREE);
    }
    return s_reply(conn, MHD_HTTP_NOT_FOUND, "text/plain",
                   "not found: try /metrics, /healthz or /sinks\n", 44, MHD_RESPMEM_PERSISTENT);
}

fp_http_t *fp_http_start(const char *address, int port, const fp_metrics_t *metrics,
                         int64_t health_max_round_age_ms, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (port < 1 || port > 65535 || inet_pton(AF_INET, address, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "metrics endpoint %s:%d: need an IPv4 address and a port 1..65535",
                 address, port);
        return NULL;
    }
    fp_http_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->metrics = metrics;
    self->max_age_ns = health_max_round_age_ms * 1000000;
    errno = 0;
    /* No internal thread: ours runs the daemon (s_loop), so the deadline
       sweep shares its thread. The idle timeout stays, in whole seconds. */
    self->daemon = MHD_start_daemon(
        MHD_USE_AUTO, 0, NULL, NULL, s_handle, self, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)FP_HTTP_CONNECTIONS_MAX,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)((FP_HTTP_DEADLINE_MS + 999) / 1000),
        MHD_OPTION_NOTIFY_CONNECTION, s_notify, self, MHD_OPTION_END);
    if (!self->daemon) {
        snprintf(err, errlen, "metrics endpoint %s:%d: cannot listen (%s)", address, port,
                 errno ? strerror(errno) : "port in use?");
        free(self);
        return NULL;
    }
    if (pthread_create(&self->thread, NULL, s_loop, self) != 0) {
        snprintf(err, errlen, "metrics endpoint %s:%d: cannot start the server thread", address,
                 port);
        MHD_stop_daemon(self->daemon);
        free(self);
        return NULL;
    }
    pthread_setname_np(self->thread, "fp-http");
    self->running = true;
    return self;
}

void fp_http_stop(fp_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fp_http_t *self = *self_p;
    if (self->running) {
        atomic_store_explicit(&self->stop, 1, memory_order_relaxed);
        pthread_join(self->thread, NULL); /* hands the daemon and the list back to us */
    }
    if (self->daemon)
        MHD_stop_daemon(self->daemon); /* closes what is open: s_notify frees the list */
    free(self);
    *self_p = NULL;
}

void fp_http_set_max_round_age(fp_http_t *self, int64_t health_max_round_age_ms)
{
    if (self)
        atomic_store(&self->max_age_ns, health_max_round_age_ms * 1000000);
}

uint64_t fp_http_deadline_cuts(const fp_http_t *self)
{
    return self ? atomic_load_explicit(&self->cut, memory_order_relaxed) : 0;
}
