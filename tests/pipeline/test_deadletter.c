/*  test_deadletter.c - what a stage puts in a dead letter (deadletter.h):
    a record's payload holds the record and only the strings it references,
    within FP_DL_RECORD_PAYLOAD_MAX whatever the batch; the JSON detail is
    valid UTF-8 JSON with u64 maxima and hostile strings in it; the frames
    handed to emit. */
#include <jansson.h>
#include <zmq.h>

#include "codec.h"
#include "config.h"
#include "deadletter.h"
#include "stage.h"
#include "test.h"
#include "utf8.h"

/* A batch's string table in fp_batch_hdr_t layout, built from pieces. */
typedef struct {
    uint32_t n;
    uint32_t stroff[2100];
    char blob[2100 * 301];
} table_t;

static void s_add(table_t *t, const char *s, size_t len)
{
    uint32_t at = t->stroff[t->n];
    memcpy(t->blob + at, s, len);
    t->blob[at + len] = 0;
    t->n++;
    t->stroff[t->n] = at + (uint32_t)len + 1;
}

static const char *s_str(const table_t *t, uint32_t i, uint32_t *len)
{
    *len = t->stroff[i] - t->stroff[i - 1] - 1;
    return t->blob + t->stroff[i - 1];
}

static fp_codec_t *s_codec;

/* Parses a payload (copied to aligned memory) into *v; returns the copy. */
static void *s_parse(const void *buf, size_t len, fp_batch_view_t *v)
{
    void *copy = malloc(len);
    ASSERT(copy);
    memcpy(copy, buf, len);
    ASSERT_EQ(fp_codec_batch_parse(copy, len, 1u << 20, v), FP_CODEC_OK);
    return copy;
}

/* The amplification case of issue 9: 2,000 strings of 80 bytes; a record
   that references four fields (two the same string) gets those three
   strings, renumbered, and nothing else. */
TEST(test_record_payload_holds_only_its_strings)
{
    table_t *t = calloc(1, sizeof *t);
    char s[80];
    for (int i = 0; i < 2000; i++) {
        memset(s, 'a' + i % 26, sizeof s);
        snprintf(s, sizeof s, "%04d", i);
        s[4] = '-';
        s_add(t, s, sizeof s);
    }
    fp_record_t r = {.seq = 7, .time_ns = 1, .quantity = -3, .kind = 0};
    r.str[FP_STR_PLANT] = 5;
    r.str[FP_STR_ORDER] = 900;
    r.str[FP_STR_OPERATION] = 5;
    r.str[FP_STR_LOT] = 2000;
    const void *buf;
    size_t len;
    ASSERT_EQ(fp_dl_record_payload(s_codec, 42, 3, &r, t->n, t->stroff, t->blob, &buf, &len),
              FP_CODEC_OK);
    ASSERT(len < 500); /* the whole table was 2,000 * 85 bytes */
    fp_batch_view_t v;
    void *copy = s_parse(buf, len, &v);
    ASSERT_EQ(v.source_id, 42);
    ASSERT_EQ(v.epoch, 3);
    ASSERT_EQ(v.nrecords, 1);
    ASSERT_EQ(v.nstrings, 3);
    const fp_record_t *got = &v.records[0];
    ASSERT_EQ(got->seq, 7);
    ASSERT_EQ(got->quantity, -3);
    ASSERT_EQ(got->kind, 0);
    ASSERT_EQ(got->str[FP_STR_PLANT], 1);
    ASSERT_EQ(got->str[FP_STR_ORDER], 2);
    ASSERT_EQ(got->str[FP_STR_OPERATION], 1);
    ASSERT_EQ(got->str[FP_STR_LOT], 3);
    ASSERT_EQ(got->str[FP_STR_UNIT], 0);
    const uint16_t want[3] = {5, 900, 2000};
    for (uint32_t i = 1; i <= 3; i++) {
        uint32_t gl, wl;
        const char *g = fp_codec_batch_string(&v, i, &gl);
        const char *w = s_str(t, want[i - 1], &wl);
        ASSERT_EQ(gl, wl);
        ASSERT(memcmp(g, w, wl) == 0);
    }
    free(copy);
    free(t);
}

/* The worst case: nine distinct strings, each longer than the cut, and
   u64 maxima: within FP_DL_RECORD_PAYLOAD_MAX. Strings are cut to
   FP_DL_STRING_KEEP on a character boundary (still too long to pass the
   record check); NUL bytes are kept; an index beyond the table stays
   beyond the payload's. */
TEST(test_record_payload_bounded_cut_and_kept)
{
    table_t *t = calloc(1, sizeof *t);
    char s[300];
    for (int i = 0; i < 9; i++) {
        memset(s, 'A' + i, sizeof s);
        if (i == 3) /* a 3-byte character across byte 128 */
            memcpy(s + 126, "\xE2\x82\xAC", 3);
        s_add(t, s, sizeof s);
    }
    s_add(t, "P\0A", 3);
    fp_record_t r = {.seq = UINT64_MAX, .time_ns = INT64_MAX, .quantity = INT64_MIN, .kind = 255};
    for (int f = 0; f < FP_STR_FIELDS; f++)
        r.str[f] = (uint16_t)(f + 1);
    const void *buf;
    size_t len;
    ASSERT_EQ(fp_dl_record_payload(s_codec, UINT64_MAX, UINT64_MAX, &r, t->n, t->stroff, t->blob,
                                   &buf, &len),
              FP_CODEC_OK);
    fprintf(stderr, "worst-case record payload: %zu bytes\n", len);
    ASSERT(len <= FP_DL_RECORD_PAYLOAD_MAX);
    fp_batch_view_t v;
    void *copy = s_parse(buf, len, &v);
    ASSERT_EQ(v.nstrings, 9);
    ASSERT_EQ(v.source_id, UINT64_MAX);
    for (uint32_t i = 1; i <= 9; i++) {
        uint32_t gl;
        const char *g = fp_codec_batch_string(&v, i, &gl);
        ASSERT_EQ(gl, i == 4 ? 126 : FP_DL_STRING_KEEP);
        ASSERT(gl > FP_STRING_MAX);
        ASSERT(fp_utf8_valid(g, gl));
    }
    free(copy);

    /* NUL kept; out-of-range index beyond the new table */
    fp_record_t q = {.seq = 1, .kind = 1};
    q.str[FP_STR_PLANT] = 10;      /* "P\0A" */
    q.str[FP_STR_ORDER] = 50;      /* beyond the batch's 10 strings */
    q.str[FP_STR_OPERATION] = 10;
    ASSERT_EQ(fp_dl_record_payload(s_codec, 1, 1, &q, t->n, t->stroff, t->blob, &buf, &len),
              FP_CODEC_OK);
    copy = s_parse(buf, len, &v);
    ASSERT_EQ(v.nstrings, 1);
    uint32_t gl;
    const char *g = fp_codec_batch_string(&v, 1, &gl);
    ASSERT_EQ(gl, 3);
    ASSERT(memcmp(g, "P\0A", 3) == 0);
    ASSERT_EQ(v.records[0].str[FP_STR_PLANT], 1);
    ASSERT_EQ(v.records[0].str[FP_STR_ORDER], 2); /* > nstrings: still out of range */
    ASSERT_EQ(v.records[0].str[FP_STR_OPERATION], 1);
    free(copy);
    free(t);
}

/* Checks that json[0..n) is valid UTF-8 and parses as a JSON object
   (integers as doubles: jansson's integers stop at INT64_MAX). */
static json_t *s_json(const char *json, size_t n)
{
    ASSERT(fp_utf8_valid(json, n));
    json_error_t e;
    json_t *o = json_loadb(json, n, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &e);
    if (!o)
        fprintf(stderr, "not JSON (%s): %.*s\n", e.text, (int)n, json);
    ASSERT(json_is_object(o));
    return o;
}

/* Hostile strings (invalid UTF-8, a character cut at 64 bytes, NUL,
   quotes, control bytes) and u64 maxima: the detail is valid UTF-8 JSON,
   the logfmt form one valid line; what does not fit is left out of both. */
TEST(test_fields_valid_json_whatever_the_bytes)
{
    table_t *t = calloc(1, sizeof *t);
    char order[80];
    memset(order, 'o', sizeof order);
    memcpy(order + 62, "\xC3\xA4\xC3\xA4", 4); /* ä across byte 64 */
    s_add(t, "P\xFF\xFE\"\\\n", 6);
    s_add(t, order, sizeof order);
    s_add(t, "OP\0X", 4);
    fp_record_t r = {.seq = UINT64_MAX, .kind = 1};
    r.str[FP_STR_PLANT] = 1;
    r.str[FP_STR_ORDER] = 2;
    r.str[FP_STR_OPERATION] = 3;
    r.str[FP_STR_LOT] = 9; /* out of range: left out */
    fp_dl_fields_t f = {.jn = 0};
    fp_dl_fields_u64(&f, "source_id", "source", (1ull << 63) + 1);
    fp_dl_fields_u64(&f, "epoch", "epoch", UINT64_MAX);
    fp_dl_fields_int(&f, "quantity", NULL, INT64_MIN);
    fp_dead_letter_keys(&f, &r, t->n, t->stroff, t->blob);
    char json[2048];
    int n = snprintf(json, sizeof json, "{\"reason\":\"x\"%.*s}", (int)f.jn, f.json);
    json_t *o = s_json(json, (size_t)n);
    ASSERT(strstr(json, "\"source_id\":9223372036854775809"));
    ASSERT(strstr(json, "\"epoch\":18446744073709551615"));
    ASSERT(strstr(json, "\"quantity\":-9223372036854775808"));
    ASSERT_STREQ(json_string_value(json_object_get(o, "plant")),
                 "P\xEF\xBF\xBD\xEF\xBF\xBD\"\\\n");
    const char *ov = json_string_value(json_object_get(o, "order"));
    ASSERT_EQ(strlen(ov), 64); /* 62 'o' and one ä: the second ä crosses 64 */
    ASSERT(memcmp(ov + 62, "\xC3\xA4", 2) == 0);
    json_t *op = json_object_get(o, "operation");
    ASSERT_EQ(json_string_length(op), 4); /* the NUL is there, as \u0000 */
    ASSERT(memcmp(json_string_value(op), "OP\0X", 4) == 0);
    ASSERT(json_object_get(o, "lot") == NULL);
    json_decref(o);
    ASSERT(fp_utf8_valid(f.log, f.ln));
    ASSERT(memchr(f.log, '\n', f.ln) == NULL);
    ASSERT(strstr(f.log, "source=9223372036854775809"));

    /* a field that does not fit is left out of both forms */
    fp_dl_fields_t g = {.jn = 0};
    char big[120];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 50; i++)
        fp_dl_fields_strn(&g, "k", "k", big, sizeof big, 120);
    ASSERT(g.jn < sizeof g.json && g.ln < sizeof g.log);
    n = snprintf(json, sizeof json, "{\"a\":1%.*s}", (int)g.jn, g.json);
    json_decref(s_json(json, (size_t)n));
    free(t);
}

/* fp_dead_letter: the header and four frames emit reads; the detail fits
   FP_DL_JSON_MAX and parses even with every field at its longest. */
TEST(test_frames_to_emit)
{
    void *ctx = zmq_ctx_new();
    void *rx = zmq_socket(ctx, ZMQ_PAIR), *tx = zmq_socket(ctx, ZMQ_PAIR);
    ASSERT_EQ(zmq_bind(rx, "inproc://dl-test"), 0);
    ASSERT_EQ(zmq_connect(tx, "inproc://dl-test"), 0);
    fp_dl_fields_t f = {.jn = 0};
    char hostile[120];
    for (size_t i = 0; i < sizeof hostile; i++)
        hostile[i] = (char)(0x80 + i % 0x40); /* continuation bytes: 6 bytes each quoted */
    for (int i = 0; i < 20; i++)
        fp_dl_fields_strn(&f, "detail", "detail", hostile, sizeof hostile, 120);
    fp_dl_fields_u64(&f, "source_id", "source", UINT64_MAX);
    fp_dead_letter(tx, 3, "string_has_nul", "worker", &f, "pay", 3);
    zmq_msg_t m[5];
    for (int i = 0; i < 5; i++) {
        zmq_msg_init(&m[i]);
        ASSERT(zmq_msg_recv(&m[i], rx, 0) >= 0);
        ASSERT_EQ(zmq_msg_more(&m[i]), i < 4);
    }
    fp_emit_hdr_t h;
    ASSERT_EQ(zmq_msg_size(&m[0]), sizeof h);
    memcpy(&h, zmq_msg_data(&m[0]), sizeof h);
    ASSERT_EQ(h.type, FP_EMIT_DEAD);
    ASSERT_EQ(h.from, 3);
    ASSERT_EQ(h.flags, FP_DL_string_has_nul);
    ASSERT_EQ(zmq_msg_size(&m[1]), strlen("deadletter/string_has_nul"));
    ASSERT(zmq_msg_size(&m[2]) <= FP_DL_JSON_MAX);
    json_t *o = s_json(zmq_msg_data(&m[2]), zmq_msg_size(&m[2]));
    ASSERT_STREQ(json_string_value(json_object_get(o, "reason")), "string_has_nul");
    ASSERT_STREQ(json_string_value(json_object_get(o, "component")), "worker");
    json_decref(o);
    ASSERT_EQ(zmq_msg_size(&m[3]), 3);
    ASSERT(fp_utf8_valid(zmq_msg_data(&m[4]), zmq_msg_size(&m[4])));
    for (int i = 0; i < 5; i++)
        zmq_msg_close(&m[i]);
    zmq_close(rx);
    zmq_close(tx);
    zmq_ctx_term(ctx);
}

/* The budgets from the config: a frame keeps a quarter of a round's. */
TEST(test_budgets_from_config)
{
    fp_config_t cfg;
    fp_config_defaults(&cfg);
    ASSERT_EQ(fp_config_dl_round_bytes(&cfg), 1u << 20); /* 1 GiB / 256 = 4 MiB: at most 1 MiB */
    ASSERT_EQ(fp_config_dl_max_bytes(&cfg), 256u << 20);
    ASSERT_EQ(fp_dl_frame_keep(&cfg), 256u << 10);
    cfg.map_size_mb = 64;
    ASSERT_EQ(fp_config_dl_round_bytes(&cfg), 256u << 10);
    ASSERT_EQ(fp_config_dl_max_bytes(&cfg), 16u << 20);
    cfg.map_size_mb = 1;
    ASSERT_EQ(fp_config_dl_round_bytes(&cfg), 4u << 10);
    cfg.deadletter_round_max_kb = 10;
    cfg.deadletter_max_mb = 3;
    ASSERT_EQ(fp_config_dl_round_bytes(&cfg), 10u << 10);
    ASSERT_EQ(fp_config_dl_max_bytes(&cfg), 3u << 20);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    s_codec = fp_codec_new();
    ASSERT(s_codec);
    RUN(test_record_payload_holds_only_its_strings);
    RUN(test_record_payload_bounded_cut_and_kept);
    RUN(test_fields_valid_json_whatever_the_bytes);
    RUN(test_frames_to_emit);
    RUN(test_budgets_from_config);
    fp_codec_destroy(&s_codec);
    return test_done();
}
