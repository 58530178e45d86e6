/*  sinks.h - the configured sinks ([sink NAME] sections): checked at
    `run --check` and at start, each run as a durable outbox reader on its
    own thread, with its status and metrics (docs/sinks.md). The types
    themselves: sink.h.

    Options every sink has (besides `type` and the type's own):
      batch_max         events per delivery, 1..10000 (default 1000)
      retry_ms          first back-off after a failure, 10..600000 (500)
      retry_max_ms      back-off ceiling, doubling from retry_ms, (30000)
      breaker_failures  failures in a row that open the circuit, 1..1000 (5)
      breaker_open_ms   how long an open circuit waits before one trial,
                        100..3600000 (30000)
      start             where a sink never seen before starts: oldest (the
                        oldest event the outbox keeps) or next (only events
                        committed from now on) (oldest)

    States (status and floorpost_sink_state): starting, connecting (open
    failing), delivering, idle (caught up), backing_off (a delivery
    failed), open (circuit breaker open), detached (retention no longer
    waits for it; it still delivers), stopped.

    Thread contract: fp_sinks_check, fp_sinks_start, fp_sinks_stop and
    fp_sinks_destroy on the controlling (main) thread. The status and
    metrics text may be read from any thread (the HTTP server's) until
    fp_sinks_destroy.
*/
#ifndef FP_SINKS_H
#define FP_SINKS_H

#include <stddef.h>

#include "config.h"

struct fp_store;
struct fp_metrics;
typedef struct fp_sinks fp_sinks_t;

/* Checks every [sink NAME] of cfg: a known type, the common and the
   type's options (file: the config's name, for messages). 0, or -1 with
   err "FILE:LINE: [sink NAME] ...". */
int fp_sinks_check(const fp_config_t *cfg, const char *file, char *err, size_t errlen);

/* Starts every configured sink on zmq_ctx over store (which must outlive
   them), after pipeline_start (emit's endpoints are bound). Registers the
   status and metrics with metrics (fp_metrics_set_sinks). A sink that
   cannot connect does not fail the start: it retries, and says so in its
   status, log and metrics. NULL with err only for a bad option or a
   thread that cannot start. With no sinks configured: an empty set. */
fp_sinks_t *fp_sinks_start(void *zmq_ctx, const fp_config_t *cfg, const char *file,
                           struct fp_store *store, struct fp_metrics *metrics, char *err,
                           size_t errlen);

/* Waits for every sink's thread to exit (they do on emit's DONE notice,
   after the pipeline stopped). NULL-safe. */
void fp_sinks_stop(fp_sinks_t *self);

/* Unregisters from metrics and frees; NULL-safe. After fp_sinks_stop. */
void fp_sinks_destroy(fp_sinks_t **self_p);

/* The status of every sink as a JSON array (malloc'd; *len set), for
   /sinks and `floorpost sinks status`. NULL on out of memory. */
char *fp_sinks_status_json(const fp_sinks_t *self, size_t *len);

/* The sinks' Prometheus series (malloc'd; *len set). */
char *fp_sinks_prometheus(const fp_sinks_t *self, size_t *len);

#endif
