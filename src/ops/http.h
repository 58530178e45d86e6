/*  http.h - the HTTP endpoint for operators: GET /metrics (Prometheus text
    exposition) and GET /healthz (200 "ok" or 503 with the reason).

    Slow clients: each connection serves one request ("Connection: close")
    and is closed FP_HTTP_DEADLINE_MS after its accept, however slowly it
    sends; at most FP_HTTP_CONNECTIONS_MAX are open (the rest wait in the
    listen backlog). See http.c's DESIGN.

    Thread contract: fp_http_start and fp_http_stop run on main. The server
    answers requests on its own thread ("fp-http", which runs libmicrohttpd
    with MHD_run_wait); that thread only reads the metrics' relaxed atomics
    (see metrics.h) and the config, so it takes no lock and shares nothing
    mutable with the pipeline. Block SIGTERM/SIGINT before fp_http_start:
    the server thread inherits the signal mask.
*/
#ifndef FP_HTTP_H
#define FP_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

typedef struct fp_http fp_http_t;

#define FP_HTTP_DEADLINE_MS 5000      /* a connection's whole life, from its accept, ms */
#define FP_HTTP_CONNECTIONS_MAX 256   /* open at once; the rest wait in the backlog */

/* Listens on address:port (IPv4 dotted quad; port 1..65535). metrics must
   outlive the server. Returns NULL with the reason in err (a bad address, or
   the port in use). */
fp_http_t *fp_http_start(const char *address, int port, const fp_metrics_t *metrics,
                         int64_t health_max_round_age_ms, char *err, size_t errlen);

/* Stops the server thread, closes the socket, frees *self_p; NULL-safe. */
void fp_http_stop(fp_http_t **self_p);

/* /healthz's bound on the last round's age, changed at run time (SIGHUP);
   NULL-safe. */
void fp_http_set_max_round_age(fp_http_t *self, int64_t health_max_round_age_ms);

/* Connections shut at their deadline so far (any thread; 0 for NULL). */
uint64_t fp_http_deadline_cuts(const fp_http_t *self);

#endif
