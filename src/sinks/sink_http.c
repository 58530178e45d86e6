/*  sink_http.c - `type = http`: checkpoints as JSON POSTed to an ERP's API
    (libcurl), each request named by an idempotency key in a header and in
    the body, so the ERP books a repeated request once (docs/sinks.md).

    Options
      url                 where to POST: http://HOST[:PORT]/PATH or https://...
                          (required)
      events_per_request  events per request, 1..1000 (100; at most batch_max)
      concurrency         requests in flight at once, 1..64 (4)
      rate_limit          requests per second, 0..100000 (0 = no limit)
      timeout_ms          a whole request, 100..600000 (10000)
      connect_timeout_ms  its connect (and TLS handshake), 10..600000 (5000)
      authorization_file  a file whose first line is the Authorization
                          header's value ("Bearer ..."); read at each open
                          and after a 401 (a rotated token is picked up);
                          never logged ("" = no header)
      ca_file             the CA bundle for https ("" = the system's)
      tls_verify          check the server's certificate and name (true)
      header_idempotency  the key's header ("Idempotency-Key"; "" = body only)
      key_format          uuid (8-4-4-4-12 hex digits) or hex (32 hex digits, the
                          GUID form of SAP Gateway's RequestID) (uuid)
      header_first_sent   a header carrying the request's stable "first
                          created" time, an HTTP date: the newest event time
                          of its checkpoints (e.g. Repeatability-First-Sent,
                          RepeatabilityCreation; "" = none) ("")

    DESIGN
    - Requests are cut from a batch at points that depend on the events
      only: a request ends after events_per_request events, where the
      commit round changes, or at the last committed event (a round's end).
      The sink's position only ever stops at such a point (below), so a
      batch always starts at one. A batch's last request that ends at none
      of them (the batch stopped at batch_max inside a round) is held back
      and leads the next batch. So the same events make the same request
      whatever batch they come in: after a retry, a restart or a crash. Its
      idempotency key is a hash of its events' event_ids (XXH3-128, written
      as a UUID), so a key always names the same content, and no event is
      ever sent under two keys (unless events_per_request changes while
      events are in flight).
    - Up to `concurrency` requests in flight (curl multi, on the sink's
      thread), started in order, each no sooner than the token bucket
      allows (capacity 1: requests at least 1/rate_limit s apart). cb_deliver
      returns when every started request has finished; it finishes the
      contiguous prefix of requests answered 2xx or refused for good, in
      order. A request after an unfinished one is offered again (same key).
    - Outcomes: 2xx finished. 4xx refused for good (400, 413, 422, ...):
      each event a posting dead letter `erp_rejected` (the status, the
      response's start, the url's path) and finished; the aux cursor's
      aux[0] is the last global_seq dead-lettered, committed with it, so a
      request repeated after a crash is not dead-lettered twice. Retried
      with the back-off (not finished): 429 (class throttled) and 503,
      honouring Retry-After (seconds or an HTTP date); other 5xx (server);
      a timeout, 408 (timeout); no connection (connect); 401 and 407 (the
      token is read again), 403, 404, 405 (config: the credentials or the
      url, not the events); 409 and 425 (server: "still processing, try
      again"); 1xx and 3xx (protocol). After the first failure no new
      request starts; requests after it that are still in flight are
      aborted, those before it are waited for.
    - One cb_deliver starts requests for at most S_CALL_MS (a slow ERP or a
      low rate_limit), then returns what finished: the reader sees its
      notices and the drain's deadline between calls.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "clock.h"
#include "grow.h"
#include "log.h"
#include "sink.h"

#define S_RESP_MAX 4096      /* bytes of a response body kept */
#define S_TEXT_MAX 200       /* of them in a dead letter and a message */
#define S_RETRY_AFTER_MAX 3600 /* s: a longer Retry-After is cut to this */
#define S_AUTH_MAX 4096      /* bytes of an Authorization value */
#define S_KEY_LEN 36         /* a UUID */
#define S_CALL_MS 1000       /* a delivery starts requests for at most this long */

enum { S_PENDING, S_INFLIGHT, S_OK, S_REJECTED, S_FAILED, S_ABORTED };

typedef struct {
    size_t first, n;         /* evs[first .. first + n) */
    int outcome;
    int cls;                 /* S_FAILED: fp_sink_err_t */
    long status;             /* HTTP status (0: no answer) */
    int retry_after_ms;      /* S_FAILED: the server's Retry-After (0: none) */
    char key[S_KEY_LEN + 1];
    char text[512];           /* S_FAILED: what went wrong; S_REJECTED: the answer's start */
} s_req_t;

typedef struct {
    CURL *easy;
    struct curl_slist *hdrs;
    size_t req;              /* index into reqs while busy */
    bool busy;
    char *body;
    size_t body_cap, body_len;
    char resp[S_RESP_MAX];
    size_t resp_len;
    char errbuf[CURL_ERROR_SIZE];
} s_slot_t;

typedef struct {
    /* options (cb_new) */
    char url[FP_SINK_VALUE_MAX];
    char shown[FP_SINK_VALUE_MAX]; /* scheme://host[:port]/path: no user info, no query */
    char path[FP_SINK_VALUE_MAX];  /* the url's path, for dead letters */
    char auth_file[FP_SINK_VALUE_MAX], ca_file[FP_SINK_VALUE_MAX];
    char idem_header[65], first_sent_header[65];
    int key_hex;             /* key_format: 0 uuid, 1 hex */
    int64_t per_request, concurrency, rate_limit, timeout_ms, connect_timeout_ms;
    bool tls_verify, https, curl_inited;
    /* the sink's thread (from cb_open) */
    char component[FP_SINK_NAME_MAX + 8];
    CURLM *multi;
    s_slot_t *slots;         /* concurrency of them */
    char *auth_header;       /* "Authorization: ..." (secret: never logged, wiped) */
    bool reauth;             /* a 401: read authorization_file again first */
    s_req_t *reqs;
    size_t reqs_cap;
    int64_t next_token_ns;   /* the rate limit: the earliest next request */
    char *json;              /* one event's JSON */
    size_t json_cap;
} http_t;

/* ---- options ---- */

/* Reads the first line of path into out (NUL-terminated, no CR/LF): 0, or
   -1 with why. The value is a secret: never in why. */
static int s_read_first_line(const char *path, char *out, size_t cap, char *why, size_t whylen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(why, whylen, "%s", strerror(errno));
        return -1;
    }
    int rc = 0;
    if (!fgets(out, (int)cap, f)) {
        snprintf(why, whylen, "%s", ferror(f) ? strerror(errno) : "empty");
        rc = -1;
    }
    fclose(f);
    if (rc != 0)
        return -1;
    size_t n = strlen(out);
    if (n == cap - 1 && out[n - 1] != '\n') {
        snprintf(why, whylen, "its first line is longer than %d bytes", S_AUTH_MAX - 2);
        return -1;
    }
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        out[--n] = 0;
    if (n == 0) {
        snprintf(why, whylen, "its first line is empty");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 && out[i] != '\t') {
            snprintf(why, whylen, "its first line has a control character");
            return -1;
        }
    return 0;
}

static int s_check_url(fp_sink_opts_t *o, http_t *h)
{
    static const char allowed[] = "http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH";
    if (!h->url[0])
        return fp_sink_opt_fail(o, NULL, "url is required; allowed: %s", allowed);
    CURLU *u = curl_url();
    if (!u)
        return fp_sink_opt_fail(o, "url", "out of memory");
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    const char *why = NULL;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, h->url, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (uc == CURLUE_OK && curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_PATH, &path, 0);
    if (uc != CURLUE_OK)
        why = curl_url_strerror(uc);
    else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
        why = "not http or https";
    else if (!host[0])
        why = "no host";
    int rc = 0;
    if (why) {
        rc = fp_sink_opt_fail(o, "url", "url = '%.200s': %s; allowed: %s", h->url, why, allowed);
    } else {
        h->https = strcmp(scheme, "https") == 0;
        snprintf(h->path, sizeof h->path, "%s", path);
        snprintf(h->shown, sizeof h->shown, "%s://%s%s%s%s", scheme, host, port ? ":" : "",
                 port ? port : "", path);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

static void s_disconnect(http_t *h);

static void s_free(void *ctx)
{
    http_t *h = ctx;
    if (!h)
        return;
    s_disconnect(h);
    free(h->reqs);
    free(h->json);
    if (h->curl_inited)
        curl_global_cleanup();
    free(h);
}

/* An HTTP header name (a token) or "". 0, or -1 after reporting. */
static int s_check_header(fp_sink_opts_t *o, const char *key, const char *v)
{
    if (strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                  "!#$%&'*+-.^_`|~") == strlen(v))
        return 0;
    return fp_sink_opt_fail(o, key, "%s = '%s': not a header name; allowed: 1..64 of A-Z a-z "
                            "0-9 !#$%%&'*+-.^_`|~, or \"\" (none)", key, v);
}

static void *s_new(fp_sink_opts_t *o)
{
    static const char *const key_formats[] = {"uuid", "hex", NULL};
    http_t *h = calloc(1, sizeof *h);
    if (!h) {
        fp_sink_opt_fail(o, NULL, "out of memory");
        return NULL;
    }
    /* Reference counted; this thread is the controlling one (sink.h). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fp_sink_opt_fail(o, NULL, "libcurl cannot be initialised");
        goto fail;
    }
    h->curl_inited = true;
    if (fp_sink_opt_str(o, "url", "", h->url, sizeof h->url,
                        "http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH") ||
        fp_sink_opt_int(o, "events_per_request", 100, 1, 1000, &h->per_request) ||
        fp_sink_opt_int(o, "concurrency", 4, 1, 64, &h->concurrency) ||
        fp_sink_opt_int(o, "rate_limit", 0, 0, 100000, &h->rate_limit) ||
        fp_sink_opt_int(o, "timeout_ms", 10000, 100, 600000, &h->timeout_ms) ||
        fp_sink_opt_int(o, "connect_timeout_ms", 5000, 10, 600000, &h->connect_timeout_ms) ||
        fp_sink_opt_str(o, "authorization_file", "", h->auth_file, sizeof h->auth_file,
                        "a readable file") ||
        fp_sink_opt_str(o, "ca_file", "", h->ca_file, sizeof h->ca_file, "a readable file") ||
        fp_sink_opt_bool(o, "tls_verify", true, &h->tls_verify) ||
        fp_sink_opt_str(o, "header_idempotency", "Idempotency-Key", h->idem_header,
                        sizeof h->idem_header, "an HTTP header name") ||
        fp_sink_opt_enum(o, "key_format", "uuid", key_formats, &h->key_hex) ||
        fp_sink_opt_str(o, "header_first_sent", "", h->first_sent_header,
                        sizeof h->first_sent_header, "an HTTP header name") ||
        s_check_url(o, h) || s_check_header(o, "header_idempotency", h->idem_header) ||
        s_check_header(o, "header_first_sent", h->first_sent_header))
        goto fail;
    int64_t batch_max = fp_sink_opts_batch_max(o);
    if (h->per_request > batch_max) {
        /* A request must fit a batch, or it could not be cut the same way
           every time (DESIGN). */
        fp_sink_opt_fail(o, "events_per_request", "events_per_request = %lld: more than "
                         "batch_max (%lld); allowed: 1..batch_max", (long long)h->per_request,
                         (long long)batch_max);
        goto fail;
    }
    if (h->auth_file[0]) {
        char *line = malloc(S_AUTH_MAX);
        char why[128];
        int rc = line ? s_read_first_line(h->auth_file, line, S_AUTH_MAX, why, sizeof why) : -1;
        if (!line)
            snprintf(why, sizeof why, "out of memory");
        if (line) {
            explicit_bzero(line, S_AUTH_MAX);
            free(line);
        }
        if (rc != 0) {
            fp_sink_opt_fail(o, "authorization_file", "authorization_file = '%.200s': %s; "
                             "allowed: a file floorpost's user may read whose first line is "
                             "the Authorization header's value", h->auth_file, why);
            goto fail;
        }
    }
    if (h->ca_file[0] && access(h->ca_file, R_OK) != 0) {
        fp_sink_opt_fail(o, "ca_file", "ca_file = '%.200s': %s; allowed: a readable PEM file of "
                         "CA certificates", h->ca_file, strerror(errno));
        goto fail;
    }
    return h;
fail:
    s_free(h);
    return NULL;
}

/* ---- connection ---- */

static size_t s_on_body(char *p, size_t size, size_t n, void *ud)
{
    s_slot_t *sl = ud;
    size_t len = size * n, room = sizeof sl->resp - 1 - sl->resp_len;
    size_t k = len < room ? len : room;
    memcpy(sl->resp + sl->resp_len, p, k);
    sl->resp_len += k;
    sl->resp[sl->resp_len] = 0;
    return len; /* the rest is read and dropped */
}

static void s_wipe_auth(http_t *h)
{
    if (h->auth_header) {
        explicit_bzero(h->auth_header, strlen(h->auth_header));
        free(h->auth_header);
        h->auth_header = NULL;
    }
}

static void s_disconnect(http_t *h)
{
    if (h->slots) {
        for (int64_t i = 0; i < h->concurrency; i++) {
            s_slot_t *sl = &h->slots[i];
            if (sl->busy && h->multi)
                curl_multi_remove_handle(h->multi, sl->easy);
            if (sl->easy)
                curl_easy_cleanup(sl->easy);
            curl_slist_free_all(sl->hdrs);
            free(sl->body);
        }
        free(h->slots);
        h->slots = NULL;
    }
    if (h->multi)
        curl_multi_cleanup(h->multi);
    h->multi = NULL;
    s_wipe_auth(h);
}

/* Reads authorization_file into auth_header. 0, or -1 after fp_sink_fail. */
static int s_load_auth(http_t *h, fp_sink_t *s)
{
    h->reauth = false;
    if (!h->auth_file[0])
        return 0;
    static const char name[] = "Authorization: ";
    char *line = malloc(S_AUTH_MAX + sizeof name);
    if (!line)
        return fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
    memcpy(line, name, sizeof name - 1);
    char why[128];
    if (s_read_first_line(h->auth_file, line + sizeof name - 1, S_AUTH_MAX, why, sizeof why) !=
        0) {
        explicit_bzero(line, S_AUTH_MAX + sizeof name);
        free(line);
        h->reauth = true; /* try again at the next attempt */
        return fp_sink_fail(s, FP_SINK_ERR_config, "authorization_file %s: %s", h->auth_file,
                            why);
    }
    s_wipe_auth(h);
    h->auth_header = line;
    return 0;
}

static int s_open(void *ctx, fp_sink_t *s)
{
    http_t *h = ctx;
    snprintf(h->component, sizeof h->component, "sink-%s", fp_sink_name(s));
    if (s_load_auth(h, s) != 0)
        return -1;
    if (h->multi)
        return 0;
    h->multi = curl_multi_init();
    h->slots = calloc((size_t)h->concurrency, sizeof *h->slots);
    if (!h->multi || !h->slots) {
        s_disconnect(h);
        return fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
    }
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)h->concurrency);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)h->concurrency);
    for (int64_t i = 0; i < h->concurrency; i++) {
        s_slot_t *sl = &h->slots[i];
        CURL *e = sl->easy = curl_easy_init();
        if (!e) {
            s_disconnect(h);
            return fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
        }
        curl_easy_setopt(e, CURLOPT_URL, h->url);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM in a threaded process */
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)h->connect_timeout_ms);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "floorpost");
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, sl);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, sl->errbuf);
        curl_easy_setopt(e, CURLOPT_PRIVATE, sl);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, h->tls_verify ? 1L : 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, h->tls_verify ? 2L : 0L);
        if (h->ca_file[0])
            curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
    }
    if (h->https && !h->tls_verify)
        fp_log(FP_LOG_WARN, h->component, "TLS verification off: any server can pose as the ERP",
               "url=%s", h->shown);
    return 0;
}

static void s_close(void *ctx)
{
    s_disconnect(ctx);
}

/* ---- requests ---- */

/* The idempotency key of evs[0..n): XXH3-128 of the event ids (each with
   its NUL, so ("ab","c") and ("a","bc") differ), written as a UUID of
   version 8 (RFC 9562: custom) so ERPs that want a UUID take it; hex:
   the same 16 bytes as 32 hex digits. */
static void s_key(const fp_sink_event_t *evs, size_t n, bool hex, char out[S_KEY_LEN + 1])
{
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    for (size_t i = 0; i < n; i++)
        XXH3_128bits_update(&st, evs[i].ck.event_id, strlen(evs[i].ck.event_id) + 1);
    XXH128_hash_t hv = XXH3_128bits_digest(&st);
    uint8_t b[16];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(hv.high64 >> (56 - 8 * i));
        b[8 + i] = (uint8_t)(hv.low64 >> (56 - 8 * i));
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x80);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    if (hex) {
        for (int i = 0; i < 16; i++)
            snprintf(out + 2 * i, 3, "%02x", b[i]);
        return;
    }
    snprintf(out, S_KEY_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

/* "NAME: <HTTP date>" of the newest event time of evs[0..n): the same on
   every repeat of the request, and never later than its first send. */
static void s_first_sent(const http_t *h, const fp_sink_event_t *evs, size_t n, char *out,
                         size_t cap)
{
    int64_t t = evs[0].ck.last_time_ns;
    for (size_t i = 1; i < n; i++)
        if (evs[i].ck.last_time_ns > t)
            t = evs[i].ck.last_time_ns;
    time_t secs = (time_t)(t > 0 ? t / 1000000000 : 0);
    struct tm tm;
    char date[40] = "Thu, 01 Jan 1970 00:00:00 GMT";
    static const char days[][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (gmtime_r(&secs, &tm)) /* IMF-fixdate, whatever the locale */
        snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
    snprintf(out, cap, "%s: %s", h->first_sent_header, date);
}

/* Cuts evs[0..n) into requests (DESIGN); returns how many, the held-back
   tail not counted. */
static size_t s_plan(http_t *h, fp_sink_t *s, const fp_sink_event_t *evs, size_t n)
{
    uint64_t committed = fp_sink_committed(s);
    size_t nreq = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && j - i < (size_t)h->per_request && evs[j].raw->round == evs[i].raw->round)
            j++;
        bool whole = j < n || j - i == (size_t)h->per_request ||
                     evs[j - 1].raw->global_seq == committed;
        if (!whole && nreq > 0)
            break; /* held back: the next batch completes it */
        if (fp_grow(&h->reqs, &h->reqs_cap, nreq + 1, sizeof *h->reqs, 16) != 0)
            break;
        s_req_t *rq = &h->reqs[nreq++];
        memset(rq, 0, sizeof *rq);
        rq->first = i;
        rq->n = j - i;
        i = j;
    }
    return nreq;
}

/* The body of rq into sl->body: {"idempotency_key":..,"events":[..]}. */
static int s_body(http_t *h, s_slot_t *sl, const fp_sink_event_t *evs, const s_req_t *rq)
{
    sl->body_len = 0;
    if (fp_grow(&sl->body, &sl->body_cap, 256, 1, 1 << 16) != 0)
        return -1;
    sl->body_len = (size_t)snprintf(sl->body, sl->body_cap,
                                    "{\"idempotency_key\":\"%s\",\"first_global_seq\":%llu,"
                                    "\"last_global_seq\":%llu,\"count\":%zu,\"events\":[",
                                    rq->key, (unsigned long long)evs[rq->first].raw->global_seq,
                                    (unsigned long long)evs[rq->first + rq->n - 1].raw->global_seq,
                                    rq->n);
    for (size_t i = rq->first; i < rq->first + rq->n; i++) {
        size_t need = evs[i].raw->evlen * 4 + 4096; /* as the file sink: ample for the JSON */
        if (fp_grow(&h->json, &h->json_cap, need, 1, 1 << 14) != 0)
            return -1;
        int len = fp_sink_event_json(&evs[i], h->json, h->json_cap);
        if (len < 0)
            return -1;
        if (fp_grow(&sl->body, &sl->body_cap, sl->body_len + (size_t)len + 4, 1, 1 << 16) != 0)
            return -1;
        if (i > rq->first)
            sl->body[sl->body_len++] = ',';
        memcpy(sl->body + sl->body_len, h->json, (size_t)len);
        sl->body_len += (size_t)len;
    }
    memcpy(sl->body + sl->body_len, "]}", 3);
    sl->body_len += 2;
    return 0;
}

/* Starts request r on a free slot. 0, or -1 (rq marked failed). */
static int s_launch(http_t *h, const fp_sink_event_t *evs, size_t r)
{
    s_req_t *rq = &h->reqs[r];
    s_slot_t *sl = NULL;
    for (int64_t i = 0; i < h->concurrency && !sl; i++)
        if (!h->slots[i].busy)
            sl = &h->slots[i];
    s_key(evs + rq->first, rq->n, h->key_hex, rq->key);
    char idem[sizeof h->idem_header + S_KEY_LEN + 4];
    snprintf(idem, sizeof idem, "%s: %s", h->idem_header, rq->key);
    char first[sizeof h->first_sent_header + 48];
    if (h->first_sent_header[0])
        s_first_sent(h, evs + rq->first, rq->n, first, sizeof first);
    struct curl_slist *hd = NULL, *t;
    bool ok = sl && s_body(h, sl, evs, rq) == 0;
    if (ok) {
        const char *names[] = {"Content-Type: application/json", "Accept: application/json",
                               "Expect:", h->auth_header, h->idem_header[0] ? idem : NULL,
                               h->first_sent_header[0] ? first : NULL};
        for (size_t k = 0; ok && k < sizeof names / sizeof names[0]; k++)
            if (names[k]) {
                ok = (t = curl_slist_append(hd, names[k])) != NULL;
                if (ok)
                    hd = t;
            }
    }
    if (ok) {
        sl->resp_len = 0;
        sl->resp[0] = 0;
        sl->errbuf[0] = 0;
        curl_easy_setopt(sl->easy, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(sl->easy, CURLOPT_POSTFIELDS, sl->body);
        curl_easy_setopt(sl->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)sl->body_len);
        ok = curl_multi_add_handle(h->multi, sl->easy) == CURLM_OK;
    }
    if (!ok) {
        curl_slist_free_all(hd);
        rq->outcome = S_FAILED;
        rq->cls = FP_SINK_ERR_io;
        snprintf(rq->text, sizeof rq->text, "POST %.200s: out of memory or an event not writable as "
                 "JSON (global_seq %llu..)", h->shown,
                 (unsigned long long)evs[rq->first].raw->global_seq);
        return -1;
    }
    curl_slist_free_all(sl->hdrs);
    sl->hdrs = hd;
    sl->busy = true;
    sl->req = r;
    rq->outcome = S_INFLIGHT;
    return 0;
}

/* Ends a slot's transfer (done or aborted). */
static void s_release(http_t *h, s_slot_t *sl)
{
    curl_multi_remove_handle(h->multi, sl->easy);
    curl_slist_free_all(sl->hdrs);
    sl->hdrs = NULL;
    sl->busy = false;
}

/* The start of a response body, safe to show: printable ASCII and whole
   UTF-8 sequences, everything else a space or '?'. */
static void s_text(const char *p, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap;) {
        unsigned char c = (unsigned char)p[i];
        size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                 : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool good = k > 0 && i + k <= len;
        for (size_t m = 1; good && m < k; m++)
            good = ((unsigned char)p[i + m] & 0xc0) == 0x80;
        if (good && k > 1) {
            if (o + k + 1 > cap)
                break;
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
            continue;
        }
        out[o++] = !good ? '?' : (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
        i++;
    }
    out[o] = 0;
}

static int s_curl_class(CURLcode cc)
{
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return FP_SINK_ERR_timeout;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        return FP_SINK_ERR_connect;
    default:
        return FP_SINK_ERR_protocol;
    }
}

/* What status says about the request: S_OK, S_REJECTED or S_FAILED with
   *cls. */
static int s_status_outcome(long status, int *cls)
{
    if (status >= 200 && status < 300)
        return S_OK;
    if (status >= 500) {
        *cls = FP_SINK_ERR_server;
        return S_FAILED;
    }
    switch (status) {
    case 429:
        *cls = FP_SINK_ERR_throttled;
        return S_FAILED;
    case 408:
        *cls = FP_SINK_ERR_timeout;
        return S_FAILED;
    case 401: /* the credentials or the url: not the events' fault */
    case 403:
    case 404:
    case 405:
    case 407:
        *cls = FP_SINK_ERR_config;
        return S_FAILED;
    case 409: /* the same key still in progress (the idempotency-key draft) */
    case 425:
        *cls = FP_SINK_ERR_server;
        return S_FAILED;
    default:
        break;
    }
    if (status >= 400)
        return S_REJECTED;
    *cls = FP_SINK_ERR_protocol; /* 1xx, 3xx: nothing a POST to an API should answer */
    return S_FAILED;
}

/* A finished transfer: its request's outcome. */
static void s_finished(http_t *h, fp_sink_t *s, s_slot_t *sl, CURLcode cc)
{
    s_req_t *rq = &h->reqs[sl->req];
    long status = 0;
    curl_easy_getinfo(sl->easy, CURLINFO_RESPONSE_CODE, &status);
    rq->status = status;
    if (cc != CURLE_OK) {
        rq->outcome = S_FAILED;
        rq->cls = s_curl_class(cc);
        snprintf(rq->text, sizeof rq->text, "POST %.200s: %s", h->shown,
                 sl->errbuf[0] ? sl->errbuf : curl_easy_strerror(cc));
        return;
    }
    char start[S_TEXT_MAX + 1];
    s_text(sl->resp, sl->resp_len, start, sizeof start);
    rq->outcome = s_status_outcome(status, &rq->cls);
    if (rq->outcome == S_OK) {
        fp_sink_count_writes(s, 1);
    } else if (rq->outcome == S_REJECTED) {
        snprintf(rq->text, sizeof rq->text, "%s", start);
        fp_sink_count_error(s, FP_SINK_ERR_rejected, "POST %.200s: HTTP %ld: %zu events refused "
                            "(dead letters erp_rejected): %.120s", h->shown, status, rq->n, start);
    } else {
        curl_off_t ra = 0;
        if ((status == 429 || status == 503) &&
            curl_easy_getinfo(sl->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
            rq->retry_after_ms = (int)(ra < S_RETRY_AFTER_MAX ? ra : S_RETRY_AFTER_MAX) * 1000;
        if (status == 401 || status == 407)
            h->reauth = true;
        snprintf(rq->text, sizeof rq->text, "POST %.200s: HTTP %ld%s: %.160s", h->shown, status,
                 rq->retry_after_ms ? " (honouring Retry-After)" : "", start);
    }
}

/* Dead letters for a refused request's events (those past the aux
   cursor). 0, or -1 when emit's pipe refused one (offered again). */
static int s_reject(http_t *h, fp_sink_t *s, const fp_sink_event_t *evs, const s_req_t *rq)
{
    fp_dl_fields_t f0 = {.jn = 0};
    fp_dl_fields_int(&f0, "http_status", "http_status", rq->status);
    fp_dl_fields_str(&f0, "response", "response", rq->text, S_TEXT_MAX);
    fp_dl_fields_str(&f0, "url_path", "url_path", h->path, 128);
    fp_dl_fields_str(&f0, "idempotency_key", NULL, rq->key, S_KEY_LEN);
    uint64_t aux[2];
    fp_sink_aux(s, aux);
    for (size_t i = rq->first; i < rq->first + rq->n; i++) {
        uint64_t g = evs[i].raw->global_seq;
        if (g <= aux[0])
            continue; /* dead-lettered before a crash (committed with the cursor) */
        uint64_t next[2] = {g, aux[1] + 1};
        fp_dl_fields_t f = f0;
        if (fp_sink_dead_letter(s, next, &evs[i], &f) != 0)
            return fp_sink_fail(s, FP_SINK_ERR_io, "dead letter for global_seq %llu: emit's pipe "
                                "is full; trying again", (unsigned long long)g);
        aux[0] = next[0];
        aux[1] = next[1];
    }
    return 0;
}

/* Aborts the requests after r still in flight (they go again, same key). */
static void s_abort_after(http_t *h, size_t r)
{
    for (int64_t i = 0; i < h->concurrency; i++) {
        s_slot_t *sl = &h->slots[i];
        if (sl->busy && sl->req > r) {
            h->reqs[sl->req].outcome = S_ABORTED;
            s_release(h, sl);
        }
    }
}

/* The rate limit: true (and the token taken) when a request may start
   now. A bucket of capacity 1: requests at least 1/rate_limit s apart. */
static bool s_token(http_t *h, int64_t now)
{
    if (!h->rate_limit)
        return true;
    if (now < h->next_token_ns)
        return false;
    int64_t from = h->next_token_ns > now ? h->next_token_ns : now;
    h->next_token_ns = from + 1000000000LL / h->rate_limit;
    return true;
}

static int s_deliver(void *ctx, fp_sink_t *s, const fp_sink_event_t *evs, size_t n)
{
    http_t *h = ctx;
    if (h->reauth && s_load_auth(h, s) != 0)
        return 0;
    size_t nreq = s_plan(h, s, evs, n);
    if (nreq == 0)
        return fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
    size_t next = 0, fail_at = SIZE_MAX;
    int inflight = 0;
    int64_t t0 = fp_now_ns();
    for (;;) {
        int64_t now = fp_now_ns();
        if (now - t0 >= S_CALL_MS * 1000000LL)
            nreq = next; /* the rest in the next call (DESIGN) */
        while (next < nreq && next < fail_at && inflight < h->concurrency && s_token(h, now)) {
            if (s_launch(h, evs, next) != 0) {
                fail_at = next;
                s_abort_after(h, fail_at);
                break;
            }
            next++;
            inflight++;
        }
        bool more = next < nreq && next < fail_at;
        if (!inflight && !more)
            break;
        int running = 0;
        curl_multi_perform(h->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            char *priv = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
            s_slot_t *sl = (s_slot_t *)(void *)priv;
            CURLcode cc = m->data.result;
            s_finished(h, s, sl, cc);
            s_release(h, sl); /* m is invalid from here */
            if (h->reqs[sl->req].outcome == S_FAILED && sl->req < fail_at) {
                fail_at = sl->req;
                s_abort_after(h, fail_at);
            }
        }
        inflight = 0;
        for (int64_t i = 0; i < h->concurrency; i++)
            inflight += h->slots[i].busy;
        more = next < nreq && next < fail_at;
        if (!inflight && !more)
            break;
        int wait_ms = 1000;
        if (more && inflight < h->concurrency && h->rate_limit) {
            int64_t d = (h->next_token_ns - fp_now_ns()) / 1000000 + 1;
            wait_ms = d < 1 ? 1 : d < wait_ms ? (int)d : wait_ms;
        } else if (more && inflight < h->concurrency) {
            continue;
        }
        if (inflight || more)
            curl_multi_poll(h->multi, NULL, 0, wait_ms, NULL);
    }
    /* The finished prefix, in order. */
    size_t done = 0, r = 0;
    for (; r < nreq; r++) {
        s_req_t *rq = &h->reqs[r];
        if (rq->outcome == S_REJECTED && s_reject(h, s, evs, rq) != 0)
            return (int)done;
        if (rq->outcome != S_OK && rq->outcome != S_REJECTED)
            break;
        done += rq->n;
    }
    if (r < nreq) {
        const s_req_t *rq = &h->reqs[r];
        int ra = 0;
        for (size_t k = r; k < nreq; k++)
            if (h->reqs[k].retry_after_ms > ra)
                ra = h->reqs[k].retry_after_ms;
        if (rq->outcome == S_FAILED) {
            fp_sink_fail(s, rq->cls, "%s", rq->text);
            if (ra)
                fp_sink_retry_after(s, ra);
        }
    }
    return (int)done;
}

const fp_sink_type_t fp_sink_http = {"http", s_new, s_open, s_deliver, NULL, s_close, s_free};
