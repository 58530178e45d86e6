/*  deadletter.c - dead-letter details, payloads and the hand-over to emit.
    See deadletter.h. */
#include "deadletter.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "domain.h"
#include "log.h"
#include "stage.h"
#include "utf8.h"

void fp_dead_letter(void *sock, uint32_t from, const char *reason, const char *component,
                    const fp_dl_fields_t *f, const void *bytes, size_t len)
{
    /* The reason travels as the enum in the header (a typo in our own code
       is caught here, not silently counted as "other" downstream). */
    int r = fp_dl_reason_parse(reason, strlen(reason));
    assert(r >= 0);
    fp_emit_hdr_t h = {.type = FP_EMIT_DEAD, .from = from, .flags = (uint32_t)r};
    zmq_send(sock, &h, sizeof h, ZMQ_SNDMORE);
    fp_dead_letter_parts(sock, reason, component, f, bytes, len);
}

void fp_dead_letter_parts(void *sock, const char *reason, const char *component,
                          const fp_dl_fields_t *f, const void *bytes, size_t len)
{
    char topic[64], json[FP_DL_JSON_MAX], log[900];
    /* reason <= 32 bytes, component <= 72 ("reader-" + a reader name) */
    _Static_assert(sizeof ((fp_dl_fields_t *)0)->json + 128 <= FP_DL_JSON_MAX,
                   "the fields and the reason and component fit the detail");
    int tn = snprintf(topic, sizeof topic, "deadletter/%s", reason);
    int jn = snprintf(json, sizeof json, "{\"reason\":\"%s\",\"component\":\"%s\"%.*s}", reason,
                      component, f ? (int)f->jn : 0, f ? f->json : "");
    assert(jn > 0 && jn < (int)sizeof json); /* our own names, and fields that fit */
    int ln = snprintf(log, sizeof log, "from=\"%s\"%.*s", component, f ? (int)f->ln : 0,
                      f ? f->log : "");
    if (ln >= (int)sizeof log)
        ln = (int)sizeof log - 1;
    zmq_send(sock, topic, (size_t)tn, ZMQ_SNDMORE);
    zmq_send(sock, json, (size_t)jn, ZMQ_SNDMORE);
    zmq_send(sock, bytes, len, ZMQ_SNDMORE);
    zmq_send(sock, log, (size_t)ln, 0);
}

/* Appends name and value to both forms, or to neither when either is full. */
static void s_dl_add(fp_dl_fields_t *f, const char *json_name, const char *log_name,
                     const char *jval, const char *lval)
{
    size_t jneed = strlen(json_name) + strlen(jval) + 4;
    size_t lneed = log_name ? strlen(log_name) + strlen(lval) + 2 : 0;
    if (f->jn + jneed >= sizeof f->json || f->ln + lneed >= sizeof f->log)
        return;
    f->jn += (size_t)snprintf(f->json + f->jn, sizeof f->json - f->jn, ",\"%s\":%s", json_name,
                              jval);
    if (log_name)
        f->ln += (size_t)snprintf(f->log + f->ln, sizeof f->log - f->ln, " %s=%s", log_name,
                                  lval);
}

void fp_dl_fields_int(fp_dl_fields_t *f, const char *json_name, const char *log_name, int64_t v)
{
    char t[24];
    snprintf(t, sizeof t, "%" PRId64, v);
    s_dl_add(f, json_name, log_name, t, t);
}

void fp_dl_fields_u64(fp_dl_fields_t *f, const char *json_name, const char *log_name, uint64_t v)
{
    char t[24];
    snprintf(t, sizeof t, "%" PRIu64, v);
    s_dl_add(f, json_name, log_name, t, t);
}

/* fp_log_quote's output is valid as a JSON string and as a logfmt value;
   at most 256 input bytes (an ERP's answer: 200), each at most 6 output
   bytes, plus the quotes. */
void fp_dl_fields_str(fp_dl_fields_t *f, const char *json_name, const char *log_name,
                      const char *s, size_t maxlen)
{
    char q[6 * 256 + 3];
    fp_log_quote(q, sizeof q, s, maxlen < 256 ? maxlen : 256);
    s_dl_add(f, json_name, log_name, q, q);
}

void fp_dl_fields_strn(fp_dl_fields_t *f, const char *json_name, const char *log_name,
                       const char *s, size_t len, size_t maxlen)
{
    char q[6 * 120 + 3];
    fp_log_quote_n(q, sizeof q, s, len, maxlen < 120 ? maxlen : 120);
    s_dl_add(f, json_name, log_name, q, q);
}

void fp_dead_letter_keys(fp_dl_fields_t *f, const fp_record_t *rec, uint32_t nstrings,
                         const uint32_t *stroff, const char *strblob)
{
    static const struct {
        int field;
        const char *name;
    } keys[] = {{FP_STR_PLANT, "plant"}, {FP_STR_ORDER, "order"}, {FP_STR_OPERATION, "operation"},
                {FP_STR_LOT, "lot"}};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        uint16_t si = rec->str[keys[k].field];
        if (si == 0 || si > nstrings)
            continue;
        fp_dl_fields_strn(f, keys[k].name, keys[k].name, strblob + stroff[si - 1],
                          stroff[si] - stroff[si - 1] - 1, 64);
    }
}

int fp_dl_record_payload(fp_codec_t *codec, uint64_t source_id, uint64_t epoch,
                         const fp_record_t *rec, uint32_t nstrings, const uint32_t *stroff,
                         const char *strblob, const void **out, size_t *len)
{
    const char *strs[FP_STR_FIELDS];
    uint32_t lens[FP_STR_FIELDS];
    uint16_t from[FP_STR_FIELDS]; /* the batch index of each kept string */
    uint32_t k = 0;
    fp_record_t r = *rec;
    /* First the indices in range, each string once... */
    for (int f = 0; f < FP_STR_FIELDS; f++) {
        uint16_t si = rec->str[f];
        if (si == 0 || si > nstrings)
            continue;
        uint32_t j = 0;
        while (j < k && from[j] != si)
            j++;
        if (j == k) {
            const char *s = strblob + stroff[si - 1];
            from[k] = si;
            strs[k] = s;
            lens[k] = (uint32_t)fp_utf8_cut(s, stroff[si] - stroff[si - 1] - 1, FP_DL_STRING_KEEP);
            k++;
        }
        r.str[f] = (uint16_t)(j + 1);
    }
    /* ...then those beyond the table: beyond the payload's table too. */
    for (int f = 0; f < FP_STR_FIELDS; f++)
        if (rec->str[f] > nstrings)
            r.str[f] = (uint16_t)(k + 1);
    int rc = fp_codec_batch_encode_n(codec, source_id, epoch, strs, lens, k, &r, 1, out, len);
    if (rc != FP_CODEC_OK) {
        *out = "";
        *len = 0;
        return rc;
    }
    assert(*len <= FP_DL_RECORD_PAYLOAD_MAX);
    return FP_CODEC_OK;
}

size_t fp_dl_frame_keep(const fp_config_t *cfg)
{
    return (size_t)(fp_config_dl_round_bytes(cfg) / 4);
}
