/*  test_sinks.c - [sink NAME] sections: parsing (config.c), checking
    (fp_sinks_check: types, common and type options, with file:line), and
    what every sink type gets: the decoded event with its posting date in
    the plant's time zone, and its JSON. */
#include "codec.h"
#include "config.h"
#include "sink.h"
#include "sinks.h"
#include "test.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char s_err[1024];
static char s_dir[64];

static const char *s_head(void)
{
    static char head[256];
    snprintf(head, sizeof head, "[durability]\nstate_dir = %s/state\n", s_dir);
    return head;
}

/* Parses head + text, then checks the sinks; 0 or -1 with s_err. */
static int s_check(const char *text)
{
    static fp_config_t cfg;
    fp_config_defaults(&cfg);
    char all[4096];
    snprintf(all, sizeof all, "%s%s", s_head(), text);
    s_err[0] = 0;
    if (fp_config_parse(&cfg, all, "x.ini", s_err, sizeof s_err) != 0)
        return -1;
    return fp_sinks_check(&cfg, "x.ini", s_err, sizeof s_err);
}

static void s_refused(const char *text, const char *f1, const char *f2)
{
    int rc = s_check(text);
    if (rc != -1)
        fprintf(stderr, "accepted: %s\n", text);
    ASSERT_EQ(rc, -1);
    const char *fr[2] = {f1, f2};
    for (int i = 0; i < 2; i++)
        if (fr[i] && !strstr(s_err, fr[i])) {
            fprintf(stderr, "message '%s' lacks '%s'\n", s_err, fr[i]);
            ASSERT(0);
        }
    ASSERT(strncmp(s_err, "x.ini:", 6) == 0);
    ASSERT(strstr(s_err, "allowed") != NULL);
}

TEST(test_sections_parsed)
{
    fp_config_t cfg;
    fp_config_defaults(&cfg);
    const char *text = "[sink erp_files]\n"
                       "type = jsonl # files\n"
                       "directory = \"/tmp/x # not a comment\"\n"
                       "[sink b]\ntype = jsonl\n";
    ASSERT_EQ(fp_config_parse(&cfg, text, "x.ini", s_err, sizeof s_err), 0);
    ASSERT_EQ(cfg.nsinks, 2);
    ASSERT_STREQ(cfg.sinks[0].name, "erp_files");
    ASSERT_EQ(cfg.sinks[0].line, 1);
    int line = 0;
    ASSERT_STREQ(fp_sink_config_get(&cfg.sinks[0], "type", &line), "jsonl");
    ASSERT_EQ(line, 2);
    ASSERT_STREQ(fp_sink_config_get(&cfg.sinks[0], "directory", NULL), "/tmp/x # not a comment");
    ASSERT(fp_sink_config_get(&cfg.sinks[1], "directory", NULL) == NULL);
}

TEST(test_section_errors)
{
    s_refused("[sink]\ntype = jsonl\n", "x.ini:3:", "without a name");
    s_refused("[sink a b]\ntype = jsonl\n", "x.ini:3:", "bad name");
    s_refused("[sink a]\ntype = jsonl\n[sink a]\ntype = jsonl\n", "x.ini:5:", "given twice");
    s_refused("[sink a]\ndirectory = /tmp\n", "x.ini:3:", "has no 'type'");
    s_refused("[sink a]\ntype = jsonl\ntype = jsonl\n", "x.ini:5:", "given twice");
    s_refused("[sink a]\nType = jsonl\n", "x.ini:4:", "bad name");
    /* durability off: nothing to deliver from */
    fp_config_t cfg;
    fp_config_defaults(&cfg);
    ASSERT_EQ(fp_config_parse(&cfg, "[durability]\nstate_dir = \"\"\n[sink a]\ntype = jsonl\n",
                              "x.ini", s_err, sizeof s_err),
              -1);
    ASSERT(strstr(s_err, "x.ini:3:") && strstr(s_err, "needs durability"));
    /* more than FP_SINKS_MAX */
    char many[2048] = "";
    size_t n = 0;
    for (int i = 0; i <= FP_SINKS_MAX; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "[sink s%d]\ntype = jsonl\n", i);
    s_refused(many, "too many sinks", NULL);
}

TEST(test_types_and_options_checked)
{
    char ok[512];
    snprintf(ok, sizeof ok, "[sink f]\ntype = jsonl\ndirectory = %s\nbatch_max = 500\n"
                            "start = next\nmax_age_ms = 1000\n", s_dir);
    ASSERT_EQ(s_check(ok), 0);
    s_refused("[sink f]\ntype = kafka\n", "x.ini:4:", "unknown sink type; allowed: jsonl");
    char t[512];
    snprintf(t, sizeof t, "[sink f]\ntype = jsonl\ndirectory = %s\nbatch_max = 0\n", s_dir);
    s_refused(t, "x.ini:6: [sink f] batch_max = '0'", "1..10000");
    snprintf(t, sizeof t, "[sink f]\ntype = jsonl\ndirectory = %s\nretry_ms = x\n", s_dir);
    s_refused(t, "x.ini:6:", "retry_ms");
    snprintf(t, sizeof t, "[sink f]\ntype = jsonl\ndirectory = %s\nstart = newest\n", s_dir);
    s_refused(t, "x.ini:6:", "allowed: oldest, next");
    snprintf(t, sizeof t, "[sink f]\ntype = jsonl\ndirectory = %s\nconninfo = x\n", s_dir);
    s_refused(t, "x.ini:6: [sink f] unknown option 'conninfo' for type jsonl", "directory");
    s_refused("[sink f]\ntype = jsonl\n", "x.ini:3:", "directory is required");
    s_refused("[sink f]\ntype = jsonl\ndirectory = /nonexistent/out\n", "x.ini:5:",
              "No such file or directory");
    snprintf(t, sizeof t, "[sink f]\ntype = jsonl\ndirectory = %s\nmax_bytes = 1\n", s_dir);
    s_refused(t, "x.ini:6:", "4096..");
    snprintf(t, sizeof t, "[sink f]\ntype = jsonl\ndirectory = %s\nprefix = .hidden\n", s_dir);
    s_refused(t, "x.ini:6:", "prefix");
}

TEST(test_time_zone_option)
{
    fp_config_t cfg;
    fp_config_defaults(&cfg);
    ASSERT_STREQ(cfg.time_zone, "UTC");
    ASSERT_EQ(fp_config_parse(&cfg, "[aggregate]\ntime_zone = America/Chicago\n", "x.ini", s_err,
                              sizeof s_err),
              0);
    ASSERT_STREQ(cfg.time_zone, "America/Chicago");
    ASSERT_EQ(fp_config_parse(&cfg, "[aggregate]\ntime_zone = Europe/Atlantis\n", "x.ini", s_err,
                              sizeof s_err),
              -1);
    ASSERT(strstr(s_err, "x.ini:2:") && strstr(s_err, "no such zone"));
    ASSERT_EQ(fp_config_parse(&cfg, "[aggregate]\ntime_zone = ../../etc/passwd\n", "x.ini",
                              s_err, sizeof s_err),
              -1);
    ASSERT(strstr(s_err, "not a zone name"));
}

/* An encoded checkpoint as the outbox holds it (8-byte aligned copy). */
static fp_reader_event_t s_raw_dated(fp_codec_t *codec, int64_t last_ns, const char *date,
                                     void **keep)
{
    fp_checkpoint_t ck = {.kind = FP_CK_CONSUMPTION, .event_id = "e2e-00ff", .instance = "e2e",
                          .plant = "1000", .line = "L01", .order = "O\"1", .operation = "0010",
                          .first_time_ns = last_ns - 1000, .last_time_ns = last_ns,
                          .record_count = 3, .material = "M-1", .lot = "LOT", .unit = "KG",
                          .quantity = 1250, .global_seq = 42, .posting_date = date};
    const void *buf;
    size_t len;
    ASSERT_EQ(fp_codec_checkpoint_encode(codec, &ck, &buf, &len), FP_CODEC_OK);
    void *copy = aligned_alloc(8, (len + 7) & ~(size_t)7);
    memcpy(copy, buf, len);
    *keep = copy;
    return (fp_reader_event_t){.global_seq = 42, .round = 3, .topic = "consumption/1000/L01",
                               .tlen = 20, .ev = copy, .evlen = len};
}

static fp_reader_event_t s_raw(fp_codec_t *codec, int64_t last_ns, void **keep)
{
    return s_raw_dated(codec, last_ns, NULL, keep);
}

TEST(test_event_posting_date_and_json)
{
    fp_codec_t *codec = fp_codec_new();
    void *keep;
    /* 2026-03-08 03:30 UTC = 2026-03-07 21:30 in Chicago (CST, UTC-6) */
    fp_reader_event_t raw = s_raw(codec, 1772940600LL * 1000000000LL, &keep);
    setenv("TZ", "America/Chicago", 1);
    tzset();
    fp_sink_event_t ev;
    ASSERT_EQ(fp_sink_event_decode(&raw, &ev), 0);
    ASSERT_STREQ(ev.posting_date, "2026-03-07");
    ASSERT_EQ(ev.ck.quantity, 1250);
    setenv("TZ", "UTC", 1);
    tzset();
    ASSERT_EQ(fp_sink_event_decode(&raw, &ev), 0);
    ASSERT_STREQ(ev.posting_date, "2026-03-08");
    char out[4096];
    int n = fp_sink_event_json(&ev, out, sizeof out);
    ASSERT(n > 0 && (size_t)n == strlen(out));
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    ASSERT(o != NULL);
    ASSERT_STREQ(json_string_value(json_object_get(o, "topic")), "consumption/1000/L01");
    ASSERT_STREQ(json_string_value(json_object_get(o, "posting_date")), "2026-03-08");
    ASSERT_STREQ(json_string_value(json_object_get(o, "order")), "O\"1");
    ASSERT_STREQ(json_string_value(json_object_get(o, "event_id")), "e2e-00ff");
    json_decref(o);
    ASSERT_EQ(fp_sink_event_json(&ev, out, 40), -1); /* too small: refused, not cut */
    /* Not a checkpoint: refused. */
    fp_reader_event_t junk = raw;
    junk.evlen = 7;
    ASSERT_EQ(fp_sink_event_decode(&junk, &ev), -1);
    ASSERT(strstr(fp_sink_damage_text(&junk), "not a Checkpoint"));
    /* A value failing the state file's check (reader.h damaged): refused,
       whatever its pointers say, and named so. */
    junk = raw;
    junk.damaged = true;
    ASSERT_EQ(fp_sink_event_decode(&junk, &ev), -1);
    ASSERT(strstr(fp_sink_damage_text(&junk), "fails the state file's check"));
    junk = (fp_reader_event_t){.global_seq = 9, .damaged = true};
    ASSERT_EQ(fp_sink_event_decode(&junk, &ev), -1);
    ASSERT_STREQ(fp_sink_err_name(FP_SINK_ERR_damaged), "damaged");
    free(keep);
    fp_codec_destroy(&codec);
}

/* The topic holds the producers' plant and line: a quote, a backslash, a
   NUL (fuzz/regressions/outbox/topic_with_nul: the JSON was cut there) or
   bytes that are not UTF-8 are escaped, and the line stays one valid JSON
   object. */
TEST(test_event_json_escapes_topic)
{
    fp_codec_t *codec = fp_codec_new();
    void *keep;
    fp_reader_event_t raw = s_raw(codec, 1772940600LL * 1000000000LL, &keep);
    static const char topic[] = "consumption/1\"0\\0/L\0\x01\xff";
    raw.topic = topic;
    raw.tlen = sizeof topic - 1;
    fp_sink_event_t ev;
    ASSERT_EQ(fp_sink_event_decode(&raw, &ev), 0);
    char out[4096];
    int n = fp_sink_event_json(&ev, out, sizeof out);
    ASSERT(n > 0 && (size_t)n == strlen(out));
    json_error_t je;
    json_t *o = json_loads(out, JSON_ALLOW_NUL, &je);
    if (!o)
        fprintf(stderr, "not JSON (%s): %s\n", je.text, out);
    ASSERT(o != NULL);
    json_t *t = json_object_get(o, "topic");
    ASSERT_EQ(json_string_length(t), sizeof topic - 1 + 2); /* U+FFFD: 3 bytes for 1 */
    ASSERT(memcmp(json_string_value(t), topic, sizeof topic - 2) == 0);
    ASSERT(memcmp(json_string_value(t) + sizeof topic - 2, "\xef\xbf\xbd", 3) == 0);
    ASSERT_STREQ(json_string_value(json_object_get(o, "order")), "O\"1");
    json_decref(o);
    /* too small for the escaped topic: refused, not cut */
    ASSERT_EQ(fp_sink_event_json(&ev, out, 20), -1);
    free(keep);
    fp_codec_destroy(&codec);
}

/* The checkpoint's own posting date is passed on only when it is shaped
   YYYY-MM-DD (fuzz_outbox: a damaged event's other text reached the
   types, who are promised a date); else the date of its last event. */
TEST(test_event_posting_date_shape)
{
    setenv("TZ", "UTC", 1);
    tzset();
    fp_codec_t *codec = fp_codec_new();
    static const struct {
        const char *stored, *want;
    } cases[] = {{"2026-11-23", "2026-11-23"}, {"2026-1-230", "2026-03-08"},
                 {"20x6-11-23", "2026-03-08"}, {"2026-11-23x", "2026-03-08"},
                 {"2026/11/23", "2026-03-08"}, {"", "2026-03-08"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        void *keep;
        fp_reader_event_t raw =
            s_raw_dated(codec, 1772940600LL * 1000000000LL, cases[i].stored, &keep);
        fp_sink_event_t ev;
        ASSERT_EQ(fp_sink_event_decode(&raw, &ev), 0);
        ASSERT_STREQ(ev.posting_date, cases[i].want);
        free(keep);
    }
    fp_codec_destroy(&codec);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    snprintf(s_dir, sizeof s_dir, "/tmp/fp-test-sinks-%d", (int)getpid());
    mkdir(s_dir, 0700);
    RUN(test_sections_parsed);
    RUN(test_section_errors);
    RUN(test_types_and_options_checked);
    RUN(test_time_zone_option);
    RUN(test_event_posting_date_and_json);
    RUN(test_event_json_escapes_topic);
    RUN(test_event_posting_date_shape);
    rmdir(s_dir);
    return test_done();
}
