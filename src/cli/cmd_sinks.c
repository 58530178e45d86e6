/*  cmd_sinks.c - `floorpost sinks`: the configured sinks' status, and the
    operator's detach/attach.

      floorpost sinks [-c FILE] status [--json]
      floorpost sinks [-c FILE] detach NAME
      floorpost sinks [-c FILE] attach NAME

    status asks the running instance (GET /sinks on its metrics endpoint,
    [metrics] metrics_address:metrics_port, with libcurl) for each sink's
    state, position, lag, counters and last error. When nothing answers
    there it reads the positions from the state directory and says the
    instance is not running. Exit 0, or 1 when any sink is failing
    (connecting, backing_off, open) or detached: a check for cron or a
    probe.

    detach / attach flip the sink's DETACHED flag in the state (outbox.h
    fp_outbox_set_reader_flags), beside a running floorpost or after it
    stopped: a detached sink still delivers, but retention no longer waits
    for it, so an ERP that is down for a week cannot fill the disk. The
    running sink logs the change within a second, loudly.
*/
#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "deadletters.h"
#include "outbox.h"
#include "store.h"

#define S_ME "floorpost sinks"

typedef struct {
    char *p;
    size_t len;
} s_body_t;

static size_t s_write(char *data, size_t size, size_t n, void *ctx)
{
    s_body_t *b = ctx;
    size_t add = size * n;
    if (b->len + add > (1u << 22))
        return 0; /* a status is small: refuse a runaway answer */
    char *q = realloc(b->p, b->len + add + 1);
    if (!q)
        return 0;
    memcpy(q + b->len, data, add);
    b->p = q;
    b->len += add;
    b->p[b->len] = 0;
    return add;
}

/* GET /sinks of the running instance: its JSON, or NULL (err says why). */
static char *s_fetch(const fp_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->metrics_port) {
        snprintf(err, errlen, "[metrics] metrics_port = 0: no status endpoint");
        return NULL;
    }
    const char *addr = strcmp(cfg->metrics_address, "0.0.0.0") == 0 ? "127.0.0.1"
                                                                     : cfg->metrics_address;
    char url[FP_PATH_MAX + 64];
    snprintf(url, sizeof url, "http://%s:%d/sinks", addr, cfg->metrics_port);
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "libcurl: cannot start");
        return NULL;
    }
    s_body_t b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK || code != 200 || !b.p) {
        snprintf(err, errlen, "%s: %s", url,
                 rc != CURLE_OK ? curl_easy_strerror(rc) : "no status (HTTP error)");
        free(b.p);
        return NULL;
    }
    return b.p;
}

static const char *s_str(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static long long s_int(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* Prints the table; returns 1 when a sink is failing or detached. */
static int s_print(json_t *arr, bool running)
{
    int bad = 0;
    printf("%-20s %-10s %-12s %12s %10s %9s %12s %8s %6s  %s\n", "SINK", "TYPE", "STATE",
           "POSITION", "LAG", "LAG_S", "DELIVERED", "REJECTED", "ERRORS", "LAST ERROR");
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        const char *state = s_str(o, "state");
        long long errors = 0;
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(o, "errors"), k, v) errors += json_integer_value(v);
        printf("%-20s %-10s %-12s %12lld %10lld %9.1f %12lld %8lld %6lld  %s\n", s_str(o, "name"),
               s_str(o, "type"), state, s_int(o, "position"), s_int(o, "lag_events"),
               json_number_value(json_object_get(o, "lag_seconds")), s_int(o, "delivered_events"),
               s_int(o, "rejected"), errors, s_str(o, "last_error"));
        if (!strcmp(state, "connecting") || !strcmp(state, "backing_off") ||
            !strcmp(state, "open") || !strcmp(state, "detached"))
            bad = 1;
    }
    if (!running)
        printf("(floorpost is not running: positions from the state directory)\n");
    return bad;
}

/* The sinks of cfg with their committed positions, as status JSON. */
static json_t *s_offline(const fp_config_t *cfg, fp_store_t *store)
{
    json_t *arr = json_array();
    uint64_t round = 0, last = 0;
    fp_store_last_round(store, &round, &last);
    for (int i = 0; i < cfg->nsinks; i++) {
        const fp_sink_config_t *sc = &cfg->sinks[i];
        uint64_t pos = 0;
        uint32_t flags = 0;
        int rc = fp_outbox_reader(store, sc->name, &pos, &flags);
        const char *type = fp_sink_config_get(sc, "type", NULL);
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f, s:I, s:I, s:{}, s:s}", "name",
                              sc->name, "type", type ? type : "", "state",
                              rc != 0 ? "never_started"
                              : (flags & FP_OUTBOX_READER_DETACHED) ? "detached"
                                                                    : "stopped",
                              "position", (json_int_t)pos, "committed", (json_int_t)last,
                              "lag_events", (json_int_t)(last > pos ? last - pos : 0),
                              "lag_seconds", 0.0, "delivered_events", (json_int_t)0, "rejected",
                              (json_int_t)0, "errors", "last_error", "");
        if (o)
            json_array_append_new(arr, o);
    }
    return arr;
}

static int s_status(const char *file, bool as_json)
{
    fp_config_t *cfg = malloc(sizeof *cfg);
    if (!cfg)
        return 1;
    fp_store_t *store = NULL;
    char err[512];
    int rc = 0;
    fp_config_defaults(cfg);
    char lerr[1024];
    if (file && fp_config_load(cfg, file, lerr, sizeof lerr) != 0) {
        fprintf(stderr, S_ME ": %s\n", lerr);
        free(cfg);
        return 2;
    }
    char *text = s_fetch(cfg, err, sizeof err);
    json_t *arr = NULL;
    if (text) {
        json_error_t je;
        arr = json_loads(text, 0, &je);
        if (!json_is_array(arr)) {
            fprintf(stderr, S_ME ": the status endpoint answered no JSON array\n");
            json_decref(arr);
            free(text);
            free(cfg);
            return 1;
        }
    } else {
        rc = fp_cli_open_state(S_ME, "sinks need a state", file, cfg, &store);
        if (rc != 0) {
            fprintf(stderr, S_ME ": and no running instance answered: %s\n", err);
            free(cfg);
            return rc;
        }
        arr = s_offline(cfg, store);
        fp_store_close(&store);
    }
    if (as_json) {
        char *out = json_dumps(arr, JSON_COMPACT);
        printf("%s\n", out ? out : "[]");
        free(out);
        size_t i;
        json_t *o;
        json_array_foreach(arr, i, o) {
            const char *st = s_str(o, "state");
            if (!strcmp(st, "connecting") || !strcmp(st, "backing_off") || !strcmp(st, "open") ||
                !strcmp(st, "detached"))
                rc = 1;
        }
    } else {
        rc = s_print(arr, text != NULL);
    }
    json_decref(arr);
    free(text);
    free(cfg);
    return rc;
}

static int s_switch(const char *file, const char *name, bool detach)
{
    fp_config_t *cfg = malloc(sizeof *cfg);
    fp_store_t *store = NULL;
    if (!cfg)
        return 1;
    int rc = fp_cli_open_state(S_ME, "sinks need a state", file, cfg, &store);
    if (rc != 0) {
        free(cfg);
        return rc;
    }
    uint64_t pos = 0, oldest = 0;
    uint32_t flags = 0;
    int src = fp_outbox_set_reader_flags(store, name, detach ? FP_OUTBOX_READER_DETACHED : 0,
                                         detach ? 0 : FP_OUTBOX_READER_DETACHED, &pos, &flags);
    if (src == FP_STORE_NOTFOUND) {
        fprintf(stderr, S_ME ": no sink '%s' has a position in %s (it never ran)\n", name,
                cfg->state_dir);
        rc = 2;
    } else if (src != 0) {
        fprintf(stderr, S_ME ": %s: %s\n", cfg->state_dir, fp_store_strerror(src));
        rc = 1;
    } else if (detach) {
        fprintf(stderr,
                S_ME ": sink %s DETACHED at position %llu: retention no longer waits for it; "
                     "events it has not delivered are trimmed after retention_ms and are then "
                     "lost to it (it keeps delivering what is kept). Undo: floorpost sinks "
                     "attach %s\n",
                name, (unsigned long long)pos, name);
    } else {
        fp_outbox_oldest(store, &oldest);
        fprintf(stderr, S_ME ": sink %s attached at position %llu: retention waits for it%s\n",
                name, (unsigned long long)pos,
                oldest > pos + 1 ? " again; events before the oldest kept are lost to it "
                                   "(its log reports the gap)"
                                 : " again");
    }
    fp_store_close(&store);
    free(cfg);
    return rc;
}

int fp_cmd_sinks(int argc, char **argv)
{
    const char *file = NULL;
    int i = 0;
    if (i + 1 < argc && strcmp(argv[i], "-c") == 0) {
        file = argv[i + 1];
        i += 2;
    }
    if (i >= argc) {
        fp_cli_usage(stderr);
        return 2;
    }
    const char *verb = argv[i++];
    if (strcmp(verb, "status") == 0) {
        bool as_json = i < argc && strcmp(argv[i], "--json") == 0;
        if (as_json)
            i++;
        if (i != argc) {
            fprintf(stderr, S_ME " status: unknown argument '%s'\n", argv[i]);
            return 2;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int rc = s_status(file, as_json);
        curl_global_cleanup();
        return rc;
    }
    if ((strcmp(verb, "detach") == 0 || strcmp(verb, "attach") == 0) && i + 1 == argc)
        return s_switch(file, argv[i], verb[0] == 'd');
    fprintf(stderr, S_ME ": unknown or incomplete command '%s'\n", verb);
    fp_cli_usage(stderr);
    return 2;
}
