/*  deadletters.c - `floorpost deadletters list|delete`, the verb's
    dispatch and what it shares with resubmit.c: see deadletters.h.

    Invariants:
      - The store is opened in tool mode and only read here, except for
        fp_store_delete_deadletter; nothing here opens a round.
      - Payload pointers from the store are valid only inside the callback:
        everything kept is copied, into 8-byte aligned memory (the codec
        needs it; LMDB values are not aligned).
*/
#include "cli.h"
#include "deadletters.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "config.h"
#include "store.h"
#include "utf8.h"

#define S_ME "floorpost deadletters"

void fp_cli_deadletters_usage(FILE *f)
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

bool fp_cli_parse_u64(const char *s, uint64_t *v)
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

int fp_cli_payload_parse(fp_cli_payload_t *pl, const void *payload, size_t plen,
                         uint32_t max_frame)
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

const char *fp_cli_payload_unsendable(const fp_cli_payload_t *pl)
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

int fp_cli_erp_target(const char *json, size_t jlen, fp_cli_erp_t *t, const char **why)
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
    fp_cli_payload_t pl;
    if (fp_cli_payload_parse(&pl, payload, plen, l->max_frame) != 0) {
        l->rc = -ENOMEM;
        return 1;
    }
    const char *why = fp_cli_payload_unsendable(&pl);
    uint32_t nrec = pl.rc == FP_CODEC_OK ? pl.view.nrecords : 0;
    if (strcmp(reason, "erp_rejected") == 0) {
        fp_cli_erp_t t;
        why = NULL;
        fp_cli_erp_target(json, jlen, &t, &why); /* its row is set back, not its bytes sent */
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
        else if (strcmp(argv[i], "--from") == 0) {
            if (!fp_cli_number("deadletters list", argv[i], i + 1 < argc ? argv[i + 1] : NULL, 1,
                               UINT64_MAX, &from))
                return 2;
            i++;
        } else {
            fprintf(stderr, S_ME " list: bad argument '%s'\n", argv[i]);
            fp_cli_deadletters_usage(stderr);
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
        fp_cli_deadletters_usage(stderr);
        return 2;
    }
    uint64_t seq;
    for (int i = 0; i < argc; i++)
        if (!fp_cli_parse_u64(argv[i], &seq)) {
            fprintf(stderr, S_ME " delete: '%s' is not a dl_seq\n", argv[i]);
            return 2;
        }
    int failed = 0;
    for (int i = 0; i < argc; i++) {
        fp_cli_parse_u64(argv[i], &seq);
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

int fp_deadletters_main(int argc, char **argv)
{
    const char *file = NULL;
    int i = 0;
    while (i < argc && strcmp(argv[i], "-c") == 0) {
        if (i + 1 >= argc) {
            fp_cli_deadletters_usage(stderr);
            return 2;
        }
        file = argv[i + 1];
        i += 2;
    }
    if (i >= argc) {
        fp_cli_deadletters_usage(stderr);
        return 2;
    }
    const char *cmd = argv[i++];
    if (strcmp(cmd, "list") != 0 && strcmp(cmd, "resubmit") != 0 && strcmp(cmd, "delete") != 0) {
        fprintf(stderr, S_ME ": unknown command '%s'\n", cmd);
        fp_cli_deadletters_usage(stderr);
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
        rc = fp_deadletters_resubmit(store, &cfg, file ? file : "the built-in defaults", argc - i,
                                     argv + i);
    fp_store_close(&store);
    return rc;
}
