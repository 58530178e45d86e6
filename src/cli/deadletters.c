/*  deadletters.c - `floorpost deadletters`: see deadletters.h.

    Invariants:
      - The store is opened in tool mode and only read, except for
        fp_store_delete_deadletter; nothing here opens a round.
      - Payload pointers from the store are valid only inside the callback:
        everything kept is copied, into 8-byte aligned memory (the codec
        needs it; LMDB values are not aligned).
      - Resubmission seqs are 1..n in dl_seq order, so a dead letter's
        records are acked exactly when the Ack watermark reaches its last
        seq.
*/
#include "grow.h"
#include "deadletters.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "codec.h"
#include "config.h"
#include "producer.h"
#include "security.h"
#include "sink_pg.h"
#include "store.h"
#include "utf8.h"
#include "varint.h"

#define S_ME "floorpost deadletters"
#define S_TIMEOUT_MS 10000 /* default: wait for buffer room and for the last acks */

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage:\n"
            "  floorpost deadletters [-c FILE] list [--from N] [--json]\n"
            "  floorpost deadletters [-c FILE] resubmit [--source ID] [--to ENDPOINT] [--delete]\n"
            "                        [--timeout MS] [--server-key FILE --key FILE]\n"
            "                        (DL_SEQ ...|--all)\n"
            "    (--source ID: for telemetry dead letters; erp_rejected ones of a postgresql\n"
            "     sink are set back to PENDING in the sink's database, from -c FILE)\n"
            "  floorpost deadletters [-c FILE] delete DL_SEQ ...\n");
}

/* A decimal u64 >= 1 that is the whole string; false otherwise. */
static bool s_parse_u64(const char *s, uint64_t *v)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end || x == 0)
        return false;
    *v = x;
    return true;
}


static void s_format_time(int64_t wall_ns, char *out, size_t cap)
{
    time_t secs = (time_t)(wall_ns / 1000000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", base, (int)(wall_ns % 1000000000 / 1000000));
}

int fp_cli_open_state(const char *me, const char *what, const char *file, fp_config_t *cfg,
                      fp_store_t **store)
{
    char err[1024];
    fp_config_defaults(cfg);
    if (file && fp_config_load(cfg, file, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", me, err);
        return 2;
    }
    fp_config_resolve(cfg);
    const char *name = file ? file : "the built-in defaults";
    if (!cfg->state_dir[0]) {
        fprintf(stderr, "%s: durability is off in %s (state_dir = \"\"): %s\n", me, name, what);
        return 2;
    }
    *store = fp_store_open_tool(cfg->state_dir, cfg->map_size_mb << 20, cfg->instance, err,
                                sizeof err);
    if (!*store) {
        fprintf(stderr, "%s: state_dir of %s: %s\n", me, name, err);
        return 2;
    }
    return 0;
}

static int s_open_state(const char *file, fp_config_t *cfg, fp_store_t **store)
{
    return fp_cli_open_state(S_ME, "no dead letters are kept", file, cfg, store);
}

/* A copy of a payload in aligned memory, parsed. ok = it is a valid Batch. */
typedef struct {
    void *buf;
    size_t len;
    fp_batch_view_t view;
    int rc; /* fp_codec_batch_parse's result */
} s_payload_t;

static int s_payload_parse(s_payload_t *pl, const void *payload, size_t plen, uint32_t max_frame)
{
    memset(pl, 0, sizeof *pl);
    pl->len = plen;
    pl->buf = malloc(plen ? plen : 1); /* malloc is aligned for any type */
    if (!pl->buf)
        return -ENOMEM;
    if (plen)
        memcpy(pl->buf, payload, plen);
    pl->rc = fp_codec_batch_parse(pl->buf, plen, max_frame, &pl->view);
    return 0;
}

/* NULL if the parsed batch can be resubmitted as is, else why not. */
static const char *s_unsendable(const s_payload_t *pl)
{
    if (pl->rc != FP_CODEC_OK)
        return "the payload is not a valid telemetry batch (frame level)";
    if (pl->view.nrecords == 0)
        return "no records";
    for (uint32_t i = 0; i < pl->view.nrecords; i++)
        for (int f = 0; f < FP_STR_FIELDS; f++)
            if (pl->view.records[i].str[f] > pl->view.nstrings)
                return "string index beyond the string table";
    return NULL;
}

/* An erp_rejected dead letter of a postgresql sink: where its row is. */
typedef struct {
    char sink[FP_SINK_NAME_MAX + 1];
    char table[16];
    char event_id[160];
    uint64_t verdict_seq;
} s_erp_t;

/* Reads the row's address from the detail JSON. 0, or -1 when the dead
   letter is not one a postgresql sink made (why says what). */
static int s_erp_target(const char *json, size_t jlen, s_erp_t *t, const char **why)
{
    memset(t, 0, sizeof *t);
    json_t *d = json_loadb(json, jlen, 0, NULL);
    const char *type = d ? json_string_value(json_object_get(d, "sink_type")) : NULL;
    const char *sink = d ? json_string_value(json_object_get(d, "sink")) : NULL;
    const char *table = d ? json_string_value(json_object_get(d, "table")) : NULL;
    const char *id = d ? json_string_value(json_object_get(d, "event_id")) : NULL;
    json_t *vs = d ? json_object_get(d, "verdict_seq") : NULL;
    int rc = -1;
    if (!type || strcmp(type, "postgresql") != 0)
        *why = "erp_rejected by a sink that is not of type postgresql: nothing to set back";
    else if (!sink || !table || !id || !json_is_integer(vs) || json_integer_value(vs) < 1 ||
             strlen(sink) > FP_SINK_NAME_MAX || strlen(table) >= sizeof t->table ||
             strlen(id) >= sizeof t->event_id)
        *why = "erp_rejected without sink, table, event_id and verdict_seq";
    else {
        snprintf(t->sink, sizeof t->sink, "%s", sink);
        snprintf(t->table, sizeof t->table, "%s", table);
        snprintf(t->event_id, sizeof t->event_id, "%s", id);
        t->verdict_seq = (uint64_t)json_integer_value(vs);
        rc = 0;
    }
    json_decref(d);
    return rc;
}

/* ---- list ---- */

/* The stored detail as JSON text to print (malloc'd; NULL on out of
   memory): as stored when it is valid JSON (checked with every integer
   read as a double, so a u64 above INT64_MAX, which jansson's integers
   cannot hold, is checked too, and a \u0000 is allowed: a NUL byte a
   producer sent; the text printed is the stored one, exact);
   otherwise (an older floorpost's detail with bytes that are not UTF-8) as
   a JSON string of the text, repaired (utf8.h): never null. */
static char *s_detail_json(const char *json, size_t jlen)
{
    json_t *v = json_loadb(json, jlen,
                           JSON_DECODE_INT_AS_REAL | JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (v) {
        json_decref(v);
        char *out = malloc(jlen + 1);
        if (out) {
            memcpy(out, json, jlen);
            out[jlen] = 0;
            /* the detail is one object on its line */
            for (size_t i = 0; i < jlen; i++)
                if (out[i] == '\n' || out[i] == '\r')
                    out[i] = ' ';
        }
        return out;
    }
    size_t cap = jlen * 3 + 1;
    char *fixed = malloc(cap);
    if (!fixed)
        return NULL;
    size_t n = fp_utf8_repair(fixed, cap, json, jlen);
    json_t *str = json_stringn(fixed, n);
    free(fixed);
    char *out = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
    json_decref(str);
    return out;
}

typedef struct {
    bool json;
    uint32_t max_frame;
    uint64_t count;
    int rc;
} s_list_t;

static int s_list_one(void *ctx, uint64_t dl_seq, int64_t wall_ns, const char *reason,
                      const char *json, size_t jlen, const void *payload, size_t plen)
{
    s_list_t *l = ctx;
    s_payload_t pl;
    if (s_payload_parse(&pl, payload, plen, l->max_frame) != 0) {
        l->rc = -ENOMEM;
        return 1;
    }
    const char *why = s_unsendable(&pl);
    uint32_t nrec = pl.rc == FP_CODEC_OK ? pl.view.nrecords : 0;
    if (strcmp(reason, "erp_rejected") == 0) {
        s_erp_t t;
        why = NULL;
        s_erp_target(json, jlen, &t, &why); /* its row is set back, not its bytes sent */
        nrec = 0;
    }
    char when[48];
    s_format_time(wall_ns, when, sizeof when);
    if (l->json) {
        char *detail = s_detail_json(json, jlen);
        char rfix[256 * 3 + 1];
        fp_utf8_repair(rfix, sizeof rfix, reason, strlen(reason));
        json_t *r = json_string(rfix);
        char *rq = r ? json_dumps(r, JSON_ENCODE_ANY) : NULL;
        json_decref(r);
        if (detail && rq) {
            /* Printed by hand around the detail, which is spliced in as
               stored: jansson cannot hold integers above INT64_MAX. */
            printf("{\"dl_seq\":%" PRIu64 ",\"time\":\"%s\",\"time_ns\":%" PRId64
                   ",\"reason\":%s,\"detail\":%s,\"payload_bytes\":%zu,\"records\":%" PRIu32
                   ",\"resubmittable\":%s}\n",
                   dl_seq, when, wall_ns, rq, detail, plen, nrec, why ? "false" : "true");
        } else {
            l->rc = -ENOMEM;
        }
        free(rq);
        free(detail);
    } else {
        char text[2000 * 3 + 1];
        fp_utf8_repair(text, sizeof text, json, jlen < 2000 ? jlen : 2000);
        printf("%-8" PRIu64 " %s %-20s %8zu %-5s %s\n", dl_seq, when, reason, plen,
               why ? "no" : "yes", text);
    }
    free(pl.buf);
    l->count++;
    return 0;
}

static int s_list(fp_store_t *store, const fp_config_t *cfg, int argc, char **argv)
{
    s_list_t l = {.max_frame = cfg->max_frame_bytes};
    uint64_t from = 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            l.json = true;
        else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc && s_parse_u64(argv[i + 1], &from))
            i++;
        else {
            fprintf(stderr, S_ME " list: bad argument '%s'\n", argv[i]);
            s_usage(stderr);
            return 2;
        }
    }
    if (!l.json)
        printf("%-8s %-24s %-20s %8s %-5s %s\n", "DL_SEQ", "TIME (UTC)", "REASON", "BYTES", "RESUB",
               "DETAIL");
    int rc = fp_store_each_deadletter(store, from, s_list_one, &l);
    if (rc < 0 || l.rc < 0) {
        fprintf(stderr, S_ME " list: %s\n", fp_store_strerror(rc < 0 ? rc : l.rc));
        return 1;
    }
    fflush(stdout);
    fprintf(stderr, S_ME ": %" PRIu64 " dead letters in %s\n", l.count, cfg->state_dir);
    return 0;
}

/* ---- delete ---- */

static int s_delete(fp_store_t *store, int argc, char **argv)
{
    if (argc == 0) {
        s_usage(stderr);
        return 2;
    }
    uint64_t seq;
    for (int i = 0; i < argc; i++)
        if (!s_parse_u64(argv[i], &seq)) {
            fprintf(stderr, S_ME " delete: '%s' is not a dl_seq\n", argv[i]);
            return 2;
        }
    int failed = 0;
    for (int i = 0; i < argc; i++) {
        s_parse_u64(argv[i], &seq);
        int rc = fp_store_delete_deadletter(store, seq);
        if (rc == 0) {
            printf("dl_seq %" PRIu64 ": deleted\n", seq);
        } else {
            fprintf(stderr, S_ME " delete: dl_seq %" PRIu64 ": %s\n", seq, fp_store_strerror(rc));
            failed = 1;
        }
    }
    return failed;
}

/* ---- resubmit ---- */

typedef struct {
    uint64_t dl_seq;
    s_payload_t pl;
    uint64_t first_seq, last_seq; /* resubmission seqs queued; 0 = none */
    bool complete;                /* every record of it was queued */
} s_item_t;

typedef struct {
    uint32_t max_frame;
    bool all;
    uint64_t *want;  /* the DL_SEQs asked for, sorted */
    bool *found;
    size_t nwant;
    s_item_t *items;
    size_t nitems, cap;
    s_erp_t *erp;    /* erp_rejected ones of a postgresql sink */
    uint64_t *erp_seq;
    size_t nerp, erp_cap, erp_seq_cap;
    uint64_t skipped, skipped_named;
    int rc;
} s_collect_t;

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int s_collect_one(void *ctx, uint64_t dl_seq, int64_t wall_ns, const char *reason,
                         const char *json, size_t jlen, const void *payload, size_t plen)
{
    s_collect_t *c = ctx;
    if (!c->all) {
        uint64_t *hit = bsearch(&dl_seq, c->want, c->nwant, sizeof *c->want, s_cmp_u64);
        if (!hit)
            return 0;
        c->found[hit - c->want] = true;
    }
    if (strcmp(reason, "erp_rejected") == 0) {
        s_erp_t t;
        const char *why = NULL;
        if (s_erp_target(json, jlen, &t, &why) != 0) {
            printf("dl_seq %" PRIu64 ": skipped (%s): cannot be resubmitted: %s\n", dl_seq,
                   reason, why);
            c->skipped++;
            if (!c->all)
                c->skipped_named++;
            return 0;
        }
        if (fp_grow(&c->erp, &c->erp_cap, c->nerp + 1, sizeof *c->erp, 16) != 0 ||
            fp_grow(&c->erp_seq, &c->erp_seq_cap, c->nerp + 1, sizeof *c->erp_seq, 16) != 0) {
            c->rc = -ENOMEM;
            return 1;
        }
        c->erp[c->nerp] = t;
        c->erp_seq[c->nerp++] = dl_seq;
        return 0;
    }
    if (fp_grow(&c->items, &c->cap, c->nitems + 1, sizeof *c->items, 64) != 0) {
        c->rc = -ENOMEM;
        return 1;
    }
    s_item_t *it = &c->items[c->nitems];
    memset(it, 0, sizeof *it);
    it->dl_seq = dl_seq;
    if (s_payload_parse(&it->pl, payload, plen, c->max_frame) != 0) {
        c->rc = -ENOMEM;
        return 1;
    }
    const char *why = s_unsendable(&it->pl);
    if (why) {
        printf("dl_seq %" PRIu64 ": skipped (%s): cannot be resubmitted: %s\n", dl_seq, reason,
               why);
        free(it->pl.buf);
        c->skipped++;
        if (!c->all)
            c->skipped_named++;
        return 0;
    }
    c->nitems++;
    return 0;
}

typedef struct {
    uint64_t source_id;
    uint64_t epoch; /* 0: the state holds no such source */
} s_epoch_t;

/* Reads the epoch out of a dedup source state (dedup.h: u8 version 1 or
   2, varint epoch, ...). */
static int s_epoch_one(void *ctx, uint64_t source_id, const void *state, size_t slen)
{
    s_epoch_t *e = ctx;
    if (source_id != e->source_id)
        return 0;
    const uint8_t *p = state, *end = p + slen;
    uint64_t epoch;
    if (slen >= 2 && (p[0] == 1 || p[0] == 2)) {
        p++;
        if (fp_varint_get(&p, end, &epoch) == 0)
            e->epoch = epoch;
    }
    return 1;
}

/* Queues every item under (source, epoch) with seqs 1..n, in order, and
   flushes. Stops at the first record the producer does not take (its
   buffer stayed full for the send timeout): that item is left partly
   queued (complete = false), the ones after it untouched. Returns 0 or that
   -errno. */
static int s_send_items(producer_t *p, s_collect_t *c, uint64_t source, uint64_t epoch)
{
    uint64_t seq = 0;
    for (size_t k = 0; k < c->nitems; k++) {
        s_item_t *it = &c->items[k];
        const fp_batch_view_t *v = &it->pl.view;
        for (uint32_t i = 0; i < v->nrecords; i++) {
            const fp_record_t *r = &v->records[i];
            fp_rec_in_t in = {.seq = seq + 1, .time_ns = r->time_ns, .quantity = r->quantity,
                              .kind = r->kind};
            for (int f = 0; f < FP_STR_FIELDS; f++) {
                uint32_t len;
                in.str[f] = r->str[f] ? fp_codec_batch_string(v, r->str[f], &len) : NULL;
            }
            int rc = producer_add(p, source, epoch, &in);
            if (rc != 0)
                return rc;
            if (!it->first_seq)
                it->first_seq = seq + 1;
            it->last_seq = ++seq;
        }
        it->complete = true;
    }
    return producer_flush(p);
}

/* The erp_rejected ones: each row back to PENDING in its sink's database,
   once per verdict. Returns 1 if any was not set back, else 0. */
static int s_resubmit_erp(fp_store_t *store, const fp_config_t *cfg, const s_collect_t *c,
                          bool del)
{
    int failed = 0;
    for (size_t k = 0; k < c->nerp; k++) {
        const s_erp_t *t = &c->erp[k];
        uint64_t dl_seq = c->erp_seq[k];
        char err[512];
        int n = fp_sink_pg_resubmit(cfg, t->sink, t->table, t->event_id, t->verdict_seq, err,
                                    sizeof err);
        if (n < 0) {
            printf("dl_seq %" PRIu64 ": NOT resubmitted: %s\n", dl_seq, err);
            failed = 1;
            continue;
        }
        if (n == 0) {
            printf("dl_seq %" PRIu64 ": 0 rows updated: %s row %s no longer holds verdict %" PRIu64
                   " (resubmitted already, or changed by the ERP): kept\n",
                   dl_seq, t->table, t->event_id, t->verdict_seq);
            failed = 1;
            continue;
        }
        const char *what = "";
        if (del) {
            int drc = fp_store_delete_deadletter(store, dl_seq);
            if (drc == 0) {
                what = ", deleted";
            } else {
                fprintf(stderr, S_ME " resubmit: dl_seq %" PRIu64 ": delete: %s\n", dl_seq,
                        fp_store_strerror(drc));
                failed = 1;
            }
        }
        printf("dl_seq %" PRIu64 ": [sink %s] %s row %s set back to PENDING (1 row)%s\n", dl_seq,
               t->sink, t->table, t->event_id, what);
    }
    fflush(stdout);
    return failed;
}

static int s_resubmit(fp_store_t *store, const fp_config_t *cfg, const char *cfg_name, int argc,
                      char **argv)
{
    uint64_t source = 0;
    const char *to = NULL, *server_file = NULL, *key_file = NULL;
    bool del = false;
    int timeout_ms = S_TIMEOUT_MS;
    s_collect_t c = {.max_frame = cfg->max_frame_bytes};
    c.want = calloc((size_t)argc + 1, sizeof *c.want);
    c.found = calloc((size_t)argc + 1, sizeof *c.found);
    int exit_rc = 2;
    void *ctx = NULL;
    producer_t *p = NULL;
    if (!c.want || !c.found) {
        fprintf(stderr, S_ME ": out of memory\n");
        goto done;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "--source") == 0 && s_parse_u64(next, &source))
            i++;
        else if (strcmp(a, "--to") == 0 && next)
            to = argv[++i];
        else if (strcmp(a, "--delete") == 0)
            del = true;
        else if (strcmp(a, "--all") == 0)
            c.all = true;
        else if (strcmp(a, "--timeout") == 0 && s_parse_u64(next, &n) && n <= 3600000) {
            timeout_ms = (int)n;
            i++;
        } else if (strcmp(a, "--server-key") == 0 && next)
            server_file = argv[++i];
        else if (strcmp(a, "--key") == 0 && next)
            key_file = argv[++i];
        else if (s_parse_u64(a, &n))
            c.want[c.nwant++] = n;
        else {
            fprintf(stderr, S_ME " resubmit: bad argument '%s'\n", a);
            s_usage(stderr);
            goto done;
        }
    }
    if (c.all == (c.nwant > 0)) {
        fprintf(stderr, S_ME " resubmit: needs either DL_SEQs or --all\n");
        s_usage(stderr);
        goto done;
    }
    qsort(c.want, c.nwant, sizeof *c.want, s_cmp_u64);
    size_t uniq = 0;
    for (size_t i = 0; i < c.nwant; i++)
        if (uniq == 0 || c.want[i] != c.want[uniq - 1])
            c.want[uniq++] = c.want[i];
    c.nwant = uniq;
    int rc = fp_store_each_deadletter(store, 1, s_collect_one, &c);
    if (rc < 0 || c.rc < 0) {
        fprintf(stderr, S_ME " resubmit: %s\n", fp_store_strerror(rc < 0 ? rc : c.rc));
        exit_rc = 1;
        goto done;
    }
    int failed = 0;
    for (size_t i = 0; i < c.nwant; i++)
        if (!c.found[i]) {
            fprintf(stderr, S_ME " resubmit: dl_seq %" PRIu64 ": no such dead letter\n", c.want[i]);
            failed = 1;
        }
    if (c.skipped_named)
        failed = 1;
    if (c.nitems > 0 && source == 0) {
        fprintf(stderr, S_ME " resubmit: %zu telemetry dead letters: they need --source ID (>= 1)"
                "\n", c.nitems);
        s_usage(stderr);
        goto done;
    }
    failed |= s_resubmit_erp(store, cfg, &c, del);
    if (c.nitems == 0) {
        if (c.nerp == 0)
            fprintf(stderr, S_ME ": nothing to resubmit (%" PRIu64 " skipped)\n", c.skipped);
        exit_rc = failed;
        goto done;
    }
    char endpoint[FP_ENDPOINT_MAX];
    if (to) {
        snprintf(endpoint, sizeof endpoint, "%s", to);
    } else if (cfg->ingest_router[0]) {
        fp_config_connect_endpoint(cfg->ingest_router, endpoint, sizeof endpoint);
    } else {
        fprintf(stderr, S_ME " resubmit: ingest_router is off in %s: give --to ENDPOINT\n",
                cfg_name);
        goto done;
    }
    /* CURVE: the server key defaults to the config's own key file. */
    fp_curve_keypair_t server = {0}, client = {0};
    bool curve = false;
    char err[512];
    if (!server_file && cfg->curve_secret_key_file[0])
        server_file = cfg->curve_secret_key_file;
    if (server_file || key_file) {
        if (!server_file || !key_file) {
            fprintf(stderr, S_ME " resubmit: a CURVE endpoint needs --key FILE (this client's "
                            ".key, listed in the allow file) and the server's key\n");
            goto done;
        }
        if (fp_curve_key_load(server_file, false, &server, err, sizeof err) != 0 ||
            fp_curve_key_load(key_file, true, &client, err, sizeof err) != 0) {
            fprintf(stderr, S_ME " resubmit: %s\n", err);
            goto done;
        }
        curve = true;
    }

    /* A new epoch for every run: the clock, or past what the state holds. */
    s_epoch_t e = {.source_id = source};
    rc = fp_store_each_source(store, s_epoch_one, &e);
    if (rc < 0) {
        fprintf(stderr, S_ME " resubmit: %s\n", fp_store_strerror(rc));
        exit_rc = 1;
        goto done;
    }
    uint64_t epoch = (uint64_t)time(NULL);
    if (epoch <= e.epoch)
        epoch = e.epoch + 1;

    ctx = zmq_ctx_new();
    p = ctx ? producer_new(ctx, NULL, PRODUCER_ACKED, 256) : NULL;
    if (p && curve && producer_set_curve(p, server.public_z85, client.public_z85,
                                         client.secret_z85) != 0)
        producer_destroy(&p);
    explicit_bzero(&client, sizeof client);
    if (p && (producer_set_send_timeout(p, timeout_ms) != 0 || producer_connect(p, endpoint) != 0))
        producer_destroy(&p);
    if (!p) {
        fprintf(stderr, S_ME " resubmit: cannot connect to %s\n", endpoint);
        exit_rc = 1;
        goto done;
    }
    int send_rc = s_send_items(p, &c, source, epoch);
    if (send_rc != 0) {
        /* Still get what was queued out and acked; the rest is reported. */
        fprintf(stderr, S_ME " resubmit: the producer stopped taking records (%s)\n",
                send_rc == -EAGAIN ? "no ack freed buffer room within --timeout"
                                   : zmq_strerror(-send_rc));
        producer_flush(p);
    }
    int wait_rc = producer_wait_acks(p, timeout_ms);
    if (send_rc == 0)
        send_rc = wait_rc;
    const producer_stats_t *st = producer_stats(p);
    uint64_t acked_upto = st->last_acked_seq, nacked = 0, ndeleted = 0, records = 0;
    for (size_t k = 0; k < c.nitems; k++) {
        s_item_t *it = &c.items[k];
        if (!it->complete) {
            if (it->last_seq)
                printf("dl_seq %" PRIu64 ": PARTLY sent as source %" PRIu64 " epoch %" PRIu64
                       " seq %" PRIu64 "..%" PRIu64 " (of %u records): kept; check the "
                       "checkpoints before sending it again\n",
                       it->dl_seq, source, epoch, it->first_seq, it->last_seq,
                       it->pl.view.nrecords);
            else
                printf("dl_seq %" PRIu64 ": NOT sent\n", it->dl_seq);
            failed = 1;
            continue;
        }
        records += it->last_seq - it->first_seq + 1;
        if (it->last_seq > acked_upto) {
            printf("dl_seq %" PRIu64 ": sent as source %" PRIu64 " epoch %" PRIu64
                   " seq %" PRIu64 "..%" PRIu64 ", NOT acked\n",
                   it->dl_seq, source, epoch, it->first_seq, it->last_seq);
            failed = 1;
            continue;
        }
        nacked++;
        const char *what = "";
        if (del) {
            int drc = fp_store_delete_deadletter(store, it->dl_seq);
            if (drc == 0) {
                what = ", deleted";
                ndeleted++;
            } else {
                fprintf(stderr, S_ME " resubmit: dl_seq %" PRIu64 ": delete: %s\n", it->dl_seq,
                        fp_store_strerror(drc));
                failed = 1;
            }
        }
        printf("dl_seq %" PRIu64 ": resubmitted as source %" PRIu64 " epoch %" PRIu64
               " seq %" PRIu64 "..%" PRIu64 ", acked%s\n",
               it->dl_seq, source, epoch, it->first_seq, it->last_seq, what);
    }
    fflush(stdout);
    fprintf(stderr,
            S_ME ": %zu dead letters (%" PRIu64 " records) sent to %s as source %" PRIu64
                 " epoch %" PRIu64 ": %" PRIu64 " acked, %" PRIu64 " deleted, %" PRIu64
                 " skipped%s%s%s\n",
            c.nitems, records, endpoint, source, epoch, nacked, ndeleted, c.skipped,
            send_rc == -ETIMEDOUT || send_rc == -EAGAIN ? ", TIMED OUT waiting for acks" : "",
            st->rejected_batches ? ", rejected: " : "",
            st->rejected_batches ? producer_last_reject(p) : "");
    exit_rc = failed;
done:
    producer_destroy(&p);
    if (ctx)
        zmq_ctx_term(ctx);
    for (size_t k = 0; k < c.nitems; k++)
        free(c.items[k].pl.buf);
    free(c.items);
    free(c.erp);
    free(c.erp_seq);
    free(c.want);
    free(c.found);
    return exit_rc;
}

int fp_deadletters_main(int argc, char **argv)
{
    const char *file = NULL;
    int i = 0;
    while (i < argc && strcmp(argv[i], "-c") == 0) {
        if (i + 1 >= argc) {
            s_usage(stderr);
            return 2;
        }
        file = argv[i + 1];
        i += 2;
    }
    if (i >= argc) {
        s_usage(stderr);
        return 2;
    }
    const char *cmd = argv[i++];
    if (strcmp(cmd, "list") != 0 && strcmp(cmd, "resubmit") != 0 && strcmp(cmd, "delete") != 0) {
        fprintf(stderr, S_ME ": unknown command '%s'\n", cmd);
        s_usage(stderr);
        return 2;
    }
    fp_config_t cfg;
    fp_store_t *store = NULL;
    int rc = s_open_state(file, &cfg, &store);
    if (rc != 0)
        return rc;
    if (strcmp(cmd, "list") == 0)
        rc = s_list(store, &cfg, argc - i, argv + i);
    else if (strcmp(cmd, "delete") == 0)
        rc = s_delete(store, argc - i, argv + i);
    else
        rc = s_resubmit(store, &cfg, file ? file : "the built-in defaults", argc - i, argv + i);
    fp_store_close(&store);
    return rc;
}
