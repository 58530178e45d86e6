/*  http.c - /metrics and /healthz with libmicrohttpd. See http.h. */
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
#include <sys/socket.h>
#include <time.h>

struct fp_http {
    struct MHD_Daemon *daemon;
    const fp_metrics_t *metrics; /* read-only here: relaxed atomic loads */
    _Atomic int64_t max_age_ns; /* fp_http_set_max_round_age: SIGHUP */
};

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
    self->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL,
                                    s_handle, self, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                    MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
                                    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!self->daemon) {
        snprintf(err, errlen, "metrics endpoint %s:%d: cannot listen (%s)", address, port,
                 errno ? strerror(errno) : "port in use?");
        free(self);
        return NULL;
    }
    return self;
}

void fp_http_stop(fp_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fp_http_t *self = *self_p;
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    free(self);
    *self_p = NULL;
}

void fp_http_set_max_round_age(fp_http_t *self, int64_t health_max_round_age_ms)
{
    if (self)
        atomic_store(&self->max_age_ns, health_max_round_age_ms * 1000000);
}
