/*  test_sink_pg.c - the PostgreSQL sink's options as `run --check` sees
    them (conninfo's syntax by libpq, schema, timeouts, verdict_poll_ms),
    the resubmission's refusals before any connection, and the COPY data
    in PostgreSQL's binary format: a row of each table against bytes
    written out by hand (the dates, times and numerics computed apart,
    from the calendar). The database side runs against a real PostgreSQL
    in tests/e2e/t_pg.py (every column of every row compared with the
    outbox there). */
#include "config.h"
#include "sink_pg.h"
#include "sinks.h"
#include "test.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char s_err[1024];
static fp_config_t s_cfg;

static int s_check(const char *text)
{
    fp_config_defaults(&s_cfg);
    s_err[0] = 0;
    if (fp_config_parse(&s_cfg, text, "x.ini", s_err, sizeof s_err) != 0)
        return -1;
    return fp_sinks_check(&s_cfg, "x.ini", s_err, sizeof s_err);
}

static void s_refused(const char *text, const char *frag)
{
    int rc = s_check(text);
    if (rc != -1 || !strstr(s_err, frag) || strncmp(s_err, "x.ini:", 6) != 0 ||
        !strstr(s_err, "allowed"))
        fprintf(stderr, "text: %s\nrc %d, message: %s\nwanted: %s\n", text, rc, s_err, frag);
    ASSERT_EQ(rc, -1);
    ASSERT(strstr(s_err, frag) != NULL);
    ASSERT(strstr(s_err, "allowed") != NULL);
}

TEST(test_options_accepted)
{
    ASSERT_EQ(s_check("[sink erp]\ntype = postgresql\nconninfo = \"host=db port=5432 "
                      "dbname=erp user=floorpost\"\n"), 0);
    ASSERT_EQ(s_check("[sink erp]\ntype = postgresql\nconninfo = \"postgresql://u@db/erp\"\n"
                      "schema = erp_staging\nconnect_timeout_ms = 2000\n"
                      "statement_timeout_ms = 5000\nverdict_poll_ms = 0\nbatch_max = 5000\n"
                      "synchronous_commit = false\n"),
              0);
}

TEST(test_options_refused_with_line)
{
    s_refused("[sink erp]\ntype = postgresql\n", "x.ini:1: [sink erp] conninfo is required");
    s_refused("[sink erp]\ntype = postgresql\nconninfo = \"host=db dbname\"\n",
              "x.ini:3: [sink erp] conninfo: not a valid connection string: missing \"=\"");
    s_refused("[sink erp]\ntype = postgresql\nconninfo = \"hots=db\"\n",
              "invalid connection option \"hots\"");
    s_refused("[sink erp]\ntype = postgresql\nconninfo = \"host=db\"\nschema = Erp\n",
              "x.ini:4: [sink erp] schema = 'Erp'");
    s_refused("[sink erp]\ntype = postgresql\nconninfo = \"host=db\"\nschema = \"a;drop\"\n",
              "not a plain identifier");
    s_refused("[sink erp]\ntype = postgresql\nconninfo = \"host=db\"\nverdict_poll_ms = 50\n",
              "verdict_poll_ms = 50: too short");
    s_refused("[sink erp]\ntype = postgresql\nconninfo = \"host=db\"\nstatement_timeout_ms = 1\n",
              "statement_timeout_ms");
    s_refused("[sink erp]\ntype = postgresql\nconninfo = \"host=db\"\ndirectory = /tmp\n",
              "unknown option 'directory' for type postgresql");
}

TEST(test_conninfo_not_repeated)
{
    /* A conninfo may hold a password: the message names the key only. */
    s_refused("[sink erp]\ntype = postgresql\nconninfo = \"password=s3cret host\"\n",
              "conninfo: not a valid connection string");
    ASSERT(strstr(s_err, "s3cret") == NULL);
}

TEST(test_resubmit_refusals)
{
    ASSERT_EQ(s_check("[sink erp]\ntype = postgresql\nconninfo = \"host=127.0.0.1 port=1\"\n"
                      "[sink files]\ntype = jsonl\ndirectory = /tmp\n"), 0);
    char err[512];
    ASSERT_EQ(fp_sink_pg_resubmit(&s_cfg, "nope", "scrap", "e-1", 1, err, sizeof err), -1);
    ASSERT(strstr(err, "no [sink nope]") != NULL);
    ASSERT_EQ(fp_sink_pg_resubmit(&s_cfg, "files", "scrap", "e-1", 1, err, sizeof err), -1);
    ASSERT(strstr(err, "not of type postgresql") != NULL);
    ASSERT_EQ(fp_sink_pg_resubmit(&s_cfg, "erp", "sink_position", "e-1", 1, err, sizeof err), -1);
    ASSERT(strstr(err, "not one of consumption, completion, scrap") != NULL);
    /* nobody on port 1: a connect error, said as such */
    ASSERT_EQ(fp_sink_pg_resubmit(&s_cfg, "erp", "scrap", "e-1", 1, err, sizeof err), -1);
    ASSERT(strstr(err, "[sink erp]: connect:") != NULL);
}

/* ---- the COPY data (binary format) ---- */

typedef struct {
    unsigned char b[4096];
    size_t n;
} s_exp_t;

static void e_be(s_exp_t *e, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        e->b[e->n++] = (unsigned char)(v >> (8 * i));
}

static void e_raw(s_exp_t *e, const void *p, size_t n)
{
    memcpy(e->b + e->n, p, n);
    e->n += n;
}

static void e_text(s_exp_t *e, const char *s)
{
    e_be(e, strlen(s), 4);
    e_raw(e, s, strlen(s));
}

static void e_null(s_exp_t *e)
{
    e_raw(e, "\xff\xff\xff\xff", 4);
}

static void e_int8(s_exp_t *e, int64_t v)
{
    e_be(e, 8, 4);
    e_be(e, (uint64_t)v, 8);
}

static void e_bool(s_exp_t *e, int v)
{
    e_be(e, 1, 4);
    e_be(e, (uint64_t)v, 1);
}

static void e_date(s_exp_t *e, int32_t days)
{
    e_be(e, 4, 4);
    e_be(e, (uint32_t)days, 4);
}

static void e_header(s_exp_t *e)
{
    e_raw(e, "PGCOPY\n\377\r\n\0", 11);
    e_be(e, 0, 4);
    e_be(e, 0, 4);
}

/* e: the header, then a tuple of fields with the common columns of
   s_event's checkpoint, up to (not) topic */
static void e_common(s_exp_t *e, int fields, const char *event_id, int64_t gseq)
{
    e->n = 0;
    e_header(e);
    e_be(e, (uint64_t)fields, 2);
    e_text(e, event_id);
    e_int8(e, gseq);
    e_text(e, "fp1");
    e_text(e, "P1");
    e_null(e); /* line "" */
    e_text(e, "O-9");
    e_text(e, "0010");
    e_date(e, 9837);                /* 2026-12-07: days since 2000-01-01 */
    e_int8(e, 849969000123456LL);   /* 2026-12-07 14:30:00.123456(789) UTC */
    e_int8(e, -946684800000001LL);  /* 1969-12-31 23:59:59.999999 (-1 ns, rounded down) */
    e_int8(e, 4);                   /* record_count */
    e_bool(e, 1);                   /* late */
    static const char lineage[] = "[{\"source_id\":5,\"epoch\":2,\"first_seq\":10,"
                                  "\"last_seq\":13}]";
    e_be(e, 1 + strlen(lineage), 4); /* jsonb: version 1, the text */
    e_be(e, 1, 1);
    e_raw(e, lineage, strlen(lineage));
    e_bool(e, 0); /* lineage_truncated */
    e_int8(e, 3); /* checkpoint_no */
    e_int8(e, 11); /* stream_seq */
}

/* the topic and the period columns of a checkpoint without a period */
static void e_no_period(s_exp_t *e, const char *topic)
{
    e_text(e, topic);
    e_null(e); /* period, period_start, period_end */
    e_null(e);
    e_null(e);
    e_bool(e, 0); /* backfill */
    e_null(e);    /* original_posting_date, original_period_start */
    e_null(e);
}

static void s_event(fp_sink_event_t *ev, fp_reader_event_t *raw, int kind, const char *topic,
                    const char *event_id, uint64_t gseq)
{
    memset(ev, 0, sizeof *ev);
    *raw = (fp_reader_event_t){.global_seq = gseq, .topic = topic, .tlen = strlen(topic)};
    ev->raw = raw;
    fp_checkpoint_t *c = &ev->ck;
    c->kind = kind;
    c->event_id = event_id;
    c->instance = "fp1";
    c->plant = "P1";
    c->line = "";
    c->order = "O-9";
    c->operation = "0010";
    c->first_time_ns = 1796653800123456789LL;
    c->last_time_ns = -1;
    c->record_count = 4;
    c->late = true;
    c->lineage[0] = (fp_seq_range_t){5, 2, 10, 13};
    c->nlineage = 1;
    c->checkpoint_no = 3;
    c->stream_seq = 11;
    snprintf(ev->posting_date, sizeof ev->posting_date, "2026-12-07");
}

/* The COPY data of evs[0..n) for kind equals e (its trailer added here). */
static void s_check_kind(const fp_sink_event_t *evs, size_t n, int kind, s_exp_t *e)
{
    char *got;
    size_t len;
    e_raw(e, "\xff\xff", 2);
    ASSERT_EQ(fp_sink_pg_copy_data(evs, n, kind, &got, &len), 0);
    if (len != e->n || memcmp(got, e->b, len) != 0) {
        size_t i = 0;
        while (i < len && i < e->n && (unsigned char)got[i] == e->b[i])
            i++;
        fprintf(stderr, "kind %d: %zu bytes, wanted %zu; first difference at byte %zu\n", kind,
                len, e->n, i);
    }
    ASSERT_EQ(len, e->n);
    ASSERT(memcmp(got, e->b, len) == 0);
    free(got);
}

TEST(test_copy_binary_rows)
{
    fp_sink_event_t evs[4];
    fp_reader_event_t raws[4];
    /* consumption: a period, a re-posted closed period, invalid UTF-8 */
    s_event(&evs[0], &raws[0], FP_CK_CONSUMPTION, "consumption/P1/L1", "c-1", 7);
    fp_checkpoint_t *c = &evs[0].ck;
    c->posting_date = "2026-12-07";
    c->period = "shift-2";
    c->period_start_ns = 1796653800000000000LL;
    c->period_end_ns = 1796653800000000000LL + 8 * 3600 * 1000000000LL;
    c->backfill = true;
    c->original_posting_date = "2024-02-29";
    c->original_period_start_ns = 0;
    c->material = "M\xff";
    c->lot = "";
    c->unit = "KG";
    c->quantity = -5;
    /* completion: no period (an event from a floorpost before them) */
    s_event(&evs[1], &raws[1], FP_CK_COMPLETION, "completion/P1/L1", "k-1", 8);
    evs[1].ck.yield = 12;
    evs[1].ck.scrap = -1;
    evs[1].ck.final = true;
    evs[1].ck.period = "shift-2"; /* without a posting date of its own: no period */
    /* scrap; and a counter reset, in no table */
    s_event(&evs[2], &raws[2], FP_CK_SCRAP, "scrap/P1/L1", "s-1", 9);
    evs[2].ck.reason = "R1";
    evs[2].ck.parts = 2;
    s_event(&evs[3], &raws[3], FP_CK_COUNTER_RESET, "counter_reset/P1/L1", "r-1", 10);

    s_exp_t e;
    e_common(&e, 27, "c-1", 7);
    e_text(&e, "consumption/P1/L1");
    e_text(&e, "shift-2");
    e_int8(&e, 849969000000000LL);                 /* period_start */
    e_int8(&e, 849969000000000LL + 8 * 3600000000LL); /* period_end */
    e_bool(&e, 1);                                 /* backfill */
    e_date(&e, 8825);                              /* 2024-02-29 */
    e_int8(&e, -946684800000000LL);                /* the Unix epoch */
    e_text(&e, "M\xEF\xBF\xBD");                   /* U+FFFD for the bad byte */
    e_null(&e);                                    /* lot "" */
    e_text(&e, "KG");
    /* -0.005: 1 digit, weight -1, negative, dscale 3, digit 50 (0.0050) */
    e_raw(&e, "\0\0\0\x0a\0\x01\xff\xff\x40\0\0\x03\0\x32", 14);
    s_check_kind(evs, 4, FP_CK_CONSUMPTION, &e);

    e_common(&e, 26, "k-1", 8);
    e_no_period(&e, "completion/P1/L1");
    e_int8(&e, 12);
    e_int8(&e, -1);
    e_bool(&e, 1);
    s_check_kind(evs, 4, FP_CK_COMPLETION, &e);

    e_common(&e, 25, "s-1", 9);
    e_no_period(&e, "scrap/P1/L1");
    e_text(&e, "R1");
    e_int8(&e, 2);
    s_check_kind(evs, 4, FP_CK_SCRAP, &e);

    /* no rows of a kind: no data at all (no COPY for that table) */
    char *got;
    size_t len;
    ASSERT_EQ(fp_sink_pg_copy_data(evs + 1, 2, FP_CK_CONSUMPTION, &got, &len), 0);
    ASSERT(got == NULL && len == 0);
}

/* numeric(20,3) in binary: the last field of a consumption tuple. */
TEST(test_copy_binary_numeric)
{
    static const struct {
        int64_t q;
        const char *bytes; /* the field: length, ndigits, weight, sign, dscale, digits */
        size_t n;
    } cases[] = {
        {0, "\0\0\0\x08\0\0\0\0\0\0\0\x03", 12},                            /* 0.000 */
        {1000, "\0\0\0\x0a\0\x01\0\0\0\0\0\x03\0\x01", 14},                  /* 1.000 */
        {1250, "\0\0\0\x0c\0\x02\0\0\0\0\0\x03\0\x01\x09\xc4", 16},          /* 1 .2500 */
        {250, "\0\0\0\x0a\0\x01\xff\xff\0\0\0\x03\x09\xc4", 14},             /* .2500 */
        {10000000, "\0\0\0\x0a\0\x01\0\x01\0\0\0\x03\0\x01", 14},            /* 10000.000 */
        {12345678901LL, "\0\0\0\x0e\0\x03\0\x01\0\0\0\x03\x04\xd2\x16\x2e\x23\x32",
         18},                                                                   /* 1234 5678 .9010 */
        {-1234567, "\0\0\0\x0c\0\x02\0\0\x40\0\0\x03\x04\xd2\x16\x26", 16}, /* -1234 .5670 */
        {INT64_MAX, "\0\0\0\x12\0\x05\0\x03\0\0\0\x03\x24\x07\x0e\x88\x0e\x65\x12\xa7"
                    "\x1f\x86", 22}, /* 9223 3720 3685 4775 .8070 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fp_sink_event_t ev;
        fp_reader_event_t raw;
        s_event(&ev, &raw, FP_CK_CONSUMPTION, "consumption/P1/L1", "c-1", 7);
        ev.ck.material = "M";
        ev.ck.unit = "KG";
        ev.ck.quantity = cases[i].q;
        char *got;
        size_t len;
        ASSERT_EQ(fp_sink_pg_copy_data(&ev, 1, FP_CK_CONSUMPTION, &got, &len), 0);
        ASSERT(len > cases[i].n + 2);
        if (memcmp(got + len - 2 - cases[i].n, cases[i].bytes, cases[i].n) != 0)
            fprintf(stderr, "quantity %lld: wrong numeric\n", (long long)cases[i].q);
        ASSERT(memcmp(got + len - 2 - cases[i].n, cases[i].bytes, cases[i].n) == 0);
        free(got);
    }
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_options_accepted);
    RUN(test_options_refused_with_line);
    RUN(test_conninfo_not_repeated);
    RUN(test_resubmit_refusals);
    RUN(test_copy_binary_rows);
    RUN(test_copy_binary_numeric);
    return test_done();
}
