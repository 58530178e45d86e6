/*  fuzz_outbox.c - libFuzzer target for the stored outbox bytes: the
    readers record (fp_outbox_reader_parse) and the event record
    (fp_outbox_event_parse, src/store/outbox.c), then what a sink does with
    the event's bytes: the checkpoint decoder and its JSON
    (fp_codec_checkpoint_decode / fp_codec_checkpoint_to_json,
    src/codec/codec.cc) and the sink's event and JSON line
    (fp_sink_event_decode / fp_sink_event_json, src/sinks/sinks.c: what the
    jsonl sink writes into the ERP's files).

    Input: [u8 klen][klen bytes: a reader name][the rest: a stored value,
    read both as a readers value and as an outbox value]. Every piece is
    copied into a buffer of exactly its size (ASan sees any read past it);
    the event into an 8-byte aligned one, as the reader does (reader.c).

    Invariants: a parsed reader has a name a put would take and a 20- or
    36-byte value; a parsed event's topic and event lie inside the value;
    decode succeeds exactly when the JSON does and when the sink's decode
    does; decoded strings are NUL-terminated, lineage at most
    FP_LINEAGE_MAX; every JSON text is one valid JSON object (jansson) of
    the length returned, and the sink's has the event's topic and a
    YYYY-MM-DD posting_date.

    Seeds: fuzz/seeds/outbox/ (stored events of each kind: the checkpoints
    of fuzz/seeds/batch/ behind an outbox header, and readers values).
*/
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "fuzz.h"
#include "outbox.h"
#include "sink.h"

static void s_reader(const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    uint8_t *k = malloc(klen ? klen : 1), *v = malloc(vlen ? vlen : 1);
    FUZZ_CHECK(k && v);
    memcpy(k, key, klen);
    memcpy(v, val, vlen);
    uint64_t pos = 1, aux[2] = {5, 6};
    uint32_t flags = 2;
    int64_t ns = 3;
    int rc = fp_outbox_reader_parse(k, klen, v, vlen, &pos, &flags, &ns, aux);
    if (rc == 0) {
        FUZZ_CHECK(klen >= 1 && klen <= FP_OUTBOX_READER_NAME_MAX);
        for (size_t i = 0; i < klen; i++)
            FUZZ_CHECK(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
                              k[i]) != NULL && k[i] != 0);
        FUZZ_CHECK(vlen == 20 || vlen == 36);
        if (vlen == 20)
            FUZZ_CHECK(aux[0] == 0 && aux[1] == 0);
    } else {
        FUZZ_CHECK(rc == FP_STORE_CORRUPT);
    }
    free(k);
    free(v);
}

/* One JSON object of exactly len bytes. */
static json_t *s_json_object(const char *text, int len)
{
    FUZZ_CHECK(len >= 2 && strlen(text) == (size_t)len);
    json_error_t jerr;
    /* \u0000 and u64 values above 2^63 are JSON too (jansson needs flags). */
    size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL;
    json_t *j = json_loadb(text, (size_t)len, flags, &jerr);
    if (!j)
        fprintf(stderr, "not JSON (%s at %d): %s\n", jerr.text, jerr.position, text);
    FUZZ_CHECK(j != NULL && json_is_object(j));
    return j;
}

static void s_event(const uint8_t *val, size_t vlen)
{
    uint8_t *v = malloc(vlen ? vlen : 1);
    FUZZ_CHECK(v != NULL);
    memcpy(v, val, vlen);
    int64_t wall;
    uint64_t round;
    const char *topic;
    size_t tlen, evlen;
    const void *ev;
    int rc = fp_outbox_event_parse(v, vlen, &wall, &round, &topic, &tlen, &ev, &evlen);
    if (rc != 0) {
        FUZZ_CHECK(rc == FP_STORE_CORRUPT);
        free(v);
        return;
    }
    FUZZ_CHECK(tlen >= 1 && topic >= (const char *)v + 18 && ev == topic + tlen);
    FUZZ_CHECK((const uint8_t *)ev + evlen == v + vlen);

    /* As the reader hands it over: aligned, exactly evlen bytes. */
    void *aligned = malloc(evlen ? evlen : 1);
    FUZZ_CHECK(aligned != NULL);
    memcpy(aligned, ev, evlen);
    fp_checkpoint_t ck;
    int drc = fp_codec_checkpoint_decode(aligned, evlen, &ck);
    if (drc == FP_CODEC_OK) {
        const char *strs[] = {ck.event_id, ck.instance, ck.plant, ck.line, ck.order,
                              ck.operation, ck.material, ck.lot, ck.unit, ck.reason};
        for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
            FUZZ_CHECK(strs[i] != NULL && strlen(strs[i]) < evlen);
        FUZZ_CHECK(ck.nlineage <= FP_LINEAGE_MAX);
    }
    /* Strings of a damaged buffer may overlap: ten of them, each up to
       evlen bytes escaped six to one, bound the JSON. */
    size_t cap = evlen * 64 + 4096;
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    int n = fp_codec_checkpoint_to_json(aligned, evlen, out, cap);
    FUZZ_CHECK((n >= 0) == (drc == FP_CODEC_OK));
    if (n >= 0)
        json_decref(s_json_object(out, n));

    fp_reader_event_t raw = {7, round, topic, tlen, aligned, evlen, false};
    fp_sink_event_t sev;
    int src = fp_sink_event_decode(&raw, &sev);
    FUZZ_CHECK((src == 0) == (drc == FP_CODEC_OK));
    if (src == 0) {
        FUZZ_CHECK(strlen(sev.posting_date) == 10 && sev.posting_date[4] == '-' &&
                   sev.posting_date[7] == '-');
        for (int i = 0; i < 10; i++)
            FUZZ_CHECK(i == 4 || i == 7 ||
                       (sev.posting_date[i] >= '0' && sev.posting_date[i] <= '9'));
        n = fp_sink_event_json(&sev, out, cap);
        if (n >= 0) {
            json_t *j = s_json_object(out, n);
            json_t *t = json_object_get(j, "topic");
            FUZZ_CHECK(json_is_string(t));
            bool plain = true; /* printable ASCII: written as it is */
            for (size_t i = 0; i < tlen; i++)
                plain = plain && topic[i] >= 0x20 && topic[i] < 0x7f;
            if (plain)
                FUZZ_CHECK(json_string_length(t) == tlen &&
                           memcmp(json_string_value(t), topic, tlen) == 0);
            json_t *d = json_object_get(j, "posting_date");
            FUZZ_CHECK(json_is_string(d));
            /* the checkpoint's own date when it has one (a damaged one
               stays in its JSON), else the sink's */
            if (!sev.ck.posting_date[0] || strcmp(sev.ck.posting_date, sev.posting_date) == 0)
                FUZZ_CHECK(strcmp(json_string_value(d), sev.posting_date) == 0);
            json_decref(j);
        }
    }
    free(out);
    free(aligned);
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t klen = data[0];
    if (klen > size - 1)
        klen = size - 1;
    const uint8_t *key = data + 1, *val = data + 1 + klen;
    size_t vlen = size - 1 - klen;
    s_reader(key, klen, val, vlen);
    s_event(val, vlen);
    return 0;
}
