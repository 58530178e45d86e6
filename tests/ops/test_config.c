/*  test_config.c - defaults, the INI parser's values and its error messages,
    and configs/floorpost.ini against fp_config_defaults (run from the repo
    root). */
#include "config.h"
#include "period.h"
#include "test.h"

#include <fcntl.h>
#include <unistd.h>

static char s_err[512];

/* Parses text over the defaults as "x.ini"; returns the result code. */
static int
s_parse(fp_config_t *cfg, const char *text)
{
    fp_config_defaults(cfg);
    s_err[0] = '\0';
    return fp_config_parse(cfg, text, "x.ini", s_err, sizeof s_err);
}

/* Asserts text is refused and the message holds every given fragment. */
static void
s_refused(const char *text, const char *frag1, const char *frag2, const char *frag3)
{
    fp_config_t cfg, before;
    fp_config_defaults(&before);
    int rc = s_parse(&cfg, text);
    if (rc != -1)
        fprintf(stderr, "accepted: %s\n", text);
    ASSERT_EQ(rc, -1);
    const char *frags[3] = {frag1, frag2, frag3};
    for (int i = 0; i < 3; i++) {
        if (frags[i] && !strstr(s_err, frags[i])) {
            fprintf(stderr, "message '%s' lacks '%s'\n", s_err, frags[i]);
            ASSERT(0);
        }
    }
    ASSERT(strncmp(s_err, "x.ini:", 6) == 0);
    ASSERT(strstr(s_err, "allowed") != NULL);
    /* all or nothing: a refused text changes nothing */
    ASSERT(memcmp(&cfg, &before, sizeof cfg) == 0);
}

TEST(test_defaults)
{
    fp_config_t c;
    memset(&c, 0x5a, sizeof c);
    fp_config_defaults(&c);
    ASSERT_STREQ(c.instance, "floorpost");
    ASSERT_STREQ(c.ingest_router, "tcp://*:5560");
    ASSERT_STREQ(c.ingest_pull, "tcp://*:5561");
    ASSERT_STREQ(c.publish, "tcp://*:5570");
    ASSERT_STREQ(c.deadletter, "tcp://*:5571");
    ASSERT_EQ(c.print_events, 0);
    ASSERT_EQ(c.drain_timeout_ms, 10000);
    ASSERT_EQ(c.workers, 0);
    ASSERT_EQ(c.shards, 0);
    ASSERT_EQ(c.queue_batches, 64);
    ASSERT_EQ(c.ingest_hwm, 1000);
    ASSERT_EQ(c.max_frame_bytes, 4194304);
    ASSERT_EQ(c.round_interval_ms, 50);
    ASSERT_EQ(c.dedup_window, 65536);
    ASSERT_EQ(c.max_sources, 4096);
    ASSERT_EQ(c.posting_interval_ms, 60000);
    ASSERT_EQ(c.closed_key_grace_ms, 600000);
    ASSERT_EQ(c.max_open_keys, 10000000);
    ASSERT_EQ(c.retention_ms, 86400000);
    ASSERT_EQ((long long)c.reader_max_lag_events, 10000000LL);
    ASSERT_EQ(c.demo, 0);
    ASSERT_EQ(c.demo_rate, 2000);
    ASSERT_EQ(c.demo_lines, 3);
    /* memset to 0 first: padding and string tails are zero */
    fp_config_t z;
    memset(&z, 0, sizeof z);
    fp_config_defaults(&z);
    ASSERT(memcmp(&c, &z, sizeof c) == 0);

    fp_config_t d;
    fp_config_demo(&d);
    ASSERT_EQ(d.demo, 1);
    ASSERT_EQ(d.print_events, 1);
    ASSERT_STREQ(d.ingest_router, "tcp://127.0.0.1:5560");
    ASSERT_STREQ(d.ingest_pull, "tcp://127.0.0.1:5561");
    ASSERT_STREQ(d.publish, "tcp://127.0.0.1:5570");
    ASSERT_STREQ(d.deadletter, "tcp://127.0.0.1:5571");
    ASSERT_EQ(d.posting_interval_ms, 5000);
    ASSERT_EQ(d.dedup_window, 65536);
}

TEST(test_resolve)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long want = cores / 2 >= 1 ? cores / 2 : 1;
    fp_config_t c;
    fp_config_defaults(&c);
    fp_config_resolve(&c);
    ASSERT_EQ(c.workers, want);
    ASSERT_EQ(c.shards, want);
    c.workers = 5;
    c.shards = 7;
    fp_config_resolve(&c);
    ASSERT_EQ(c.workers, 5);
    ASSERT_EQ(c.shards, 7);
}

TEST(test_full_valid_text)
{
    const char *text =
        "# a full config\n"
        "; another comment style\n"
        "\n"
        "[service]\n"
        "instance = line-7.hall_B   # trailing comment\n"
        "  ingest_router=ipc:///run/fp/in.sock\n"
        "ingest_pull = \"\"\n"
        "publish = \"tcp://10.0.0.5:6000\" ; quoted, then a comment\n"
        "deadletter\t=\tinproc://dead\r\n"
        "print_events = yes\n"
        "drain_timeout_ms = 600000\n"
        "[pipeline]\n"
        "workers = 64\n"
        "shards = 1\n"
        "queue_batches = 100000\n"
        "ingest_hwm = +1\n"
        "max_frame_bytes = 1024\n"
        "round_interval_ms = 10000\n"
        "[ dedup ]   # spaces inside the brackets\n"
        "dedup_window = 16777216\n"
        "max_sources = 1000000\n"
        "[aggregate]\n"
        "posting_interval_ms = 10\n"
        "closed_key_grace_ms = 0\n"
        "max_open_keys = 1000000000\n"
        "[durability]\n"
        "reader_max_lag_events = 1000000000000\n"
        "[demo]\n"
        "demo = on\n"
        "demo_rate = 10000000\n"
        "demo_lines = 100";   /* no final newline */
    fp_config_t c;
    int rc = s_parse(&c, text);
    if (rc != 0)
        fprintf(stderr, "%s\n", s_err);
    ASSERT_EQ(rc, 0);
    ASSERT_STREQ(c.instance, "line-7.hall_B");
    ASSERT_STREQ(c.ingest_router, "ipc:///run/fp/in.sock");
    ASSERT_STREQ(c.ingest_pull, "");
    ASSERT_STREQ(c.publish, "tcp://10.0.0.5:6000");
    ASSERT_STREQ(c.deadletter, "inproc://dead");
    ASSERT_EQ(c.print_events, 1);
    ASSERT_EQ(c.drain_timeout_ms, 600000);
    ASSERT_EQ(c.workers, 64);
    ASSERT_EQ(c.shards, 1);
    ASSERT_EQ(c.queue_batches, 100000);
    ASSERT_EQ(c.ingest_hwm, 1);
    ASSERT_EQ(c.max_frame_bytes, 1024);
    ASSERT_EQ(c.round_interval_ms, 10000);
    ASSERT_EQ(c.dedup_window, 16777216);
    ASSERT_EQ(c.max_sources, 1000000);
    ASSERT_EQ(c.posting_interval_ms, 10);
    ASSERT_EQ(c.closed_key_grace_ms, 0);
    ASSERT_EQ(c.max_open_keys, 1000000000);
    ASSERT_EQ((long long)c.reader_max_lag_events, 1000000000000LL);
    ASSERT_EQ(c.demo, 1);
    ASSERT_EQ(c.demo_rate, 10000000);
    ASSERT_EQ(c.demo_lines, 100);

    /* options not given keep their value; empty text changes nothing */
    ASSERT_EQ(s_parse(&c, "[pipeline]\nworkers = 3\n"), 0);
    ASSERT_EQ(c.workers, 3);
    ASSERT_EQ(c.shards, 0);
    ASSERT_EQ(c.queue_batches, 64);
    fp_config_t d;
    fp_config_defaults(&d);
    ASSERT_EQ(s_parse(&c, ""), 0);
    ASSERT(memcmp(&c, &d, sizeof c) == 0);
    ASSERT_EQ(s_parse(&c, "\n\n   \n# only comments\n"), 0);
    ASSERT(memcmp(&c, &d, sizeof c) == 0);
    /* a section may appear twice; a '#' inside a quoted string is kept,
       one not after a blank is part of the value */
    ASSERT_EQ(s_parse(&c, "[demo]\ndemo_rate = 5\n[pipeline]\nshards = 2\n[demo]\n"
                          "demo_lines = 9\n"), 0);
    ASSERT_EQ(c.demo_rate, 5);
    ASSERT_EQ(c.demo_lines, 9);
    ASSERT_EQ(c.shards, 2);
    ASSERT_EQ(s_parse(&c, "[service]\npublish = \"ipc:///tmp/a#b\"  # c\n"
                          "deadletter = ipc:///tmp/x;y\n"), 0);
    ASSERT_STREQ(c.publish, "ipc:///tmp/a#b");
    ASSERT_STREQ(c.deadletter, "ipc:///tmp/x;y");
    ASSERT_EQ(s_parse(&c, "[service]\ninstance = \"  q \"\n"), -1); /* quotes keep blanks */
    ASSERT(strstr(s_err, "'  q '") != NULL);
}

TEST(test_booleans)
{
    const char *yes[] = {"true", "yes", "on", "1"};
    const char *no[] = {"false", "no", "off", "0"};
    char text[128];
    fp_config_t c;
    for (int i = 0; i < 4; i++) {
        snprintf(text, sizeof text, "[service]\nprint_events = %s\n[demo]\ndemo = %s # x\n",
                 yes[i], yes[i]);
        ASSERT_EQ(s_parse(&c, text), 0);
        ASSERT_EQ(c.print_events, 1);
        ASSERT_EQ(c.demo, 1);
        snprintf(text, sizeof text, "[service]\nprint_events = \"%s\"\n", no[i]);
        c.print_events = true;
        ASSERT_EQ(fp_config_parse(&c, text, "x.ini", s_err, sizeof s_err), 0);
        ASSERT_EQ(c.print_events, 0);
    }
    s_refused("[service]\nprint_events = True\n", "x.ini:2:", "print_events", "not a boolean");
    s_refused("[demo]\ndemo = 2\n", "x.ini:2:", "[demo] demo = '2'", "true, false");
    s_refused("[demo]\ndemo =\n", "x.ini:2:", "demo", "not a boolean");
}

TEST(test_error_messages)
{
    /* the examples of the spec, one by one */
    s_refused("[pipeline]\n\nworkers = abc\n",
              "x.ini:3: [pipeline] workers = 'abc': not an integer; allowed: 0 (auto) or 1..64",
              NULL, NULL);
    s_refused("[pipeline]\n\nwrokers = 4\n",
              "x.ini:3: unknown option 'wrokers' in [pipeline]; allowed: workers, shards, "
              "queue_batches, ingest_hwm, max_frame_bytes, round_interval_ms",
              NULL, NULL);
    s_refused("[pipeline]\nworkers = 1\n[foo]\n",
              "x.ini:3: unknown section [foo]; allowed: service, pipeline, dedup, aggregate, counters, durability, metrics, security, demo, sink NAME",
              NULL, NULL);
    s_refused("# c\nworkers = 4\n", "x.ini:2: option 'workers' outside any [section]", NULL,
              NULL);
    s_refused("[service]\nprint_events\n", "x.ini:2: [service] line without '=': 'print_events'",
              NULL, NULL);
    s_refused("[pipeline]\nworkers = 1\n[dedup]\n[pipeline]\nworkers = 2\n",
              "x.ini:5: [pipeline] option 'workers' given twice (first on line 2)", NULL, NULL);
    /* an option in the wrong section says where it belongs */
    s_refused("[service]\nworkers = 2\n", "x.ini:2: unknown option 'workers' in [service]",
              "belongs in [pipeline]", "instance, ingest_router");
    /* section header problems */
    s_refused("[service\n", "x.ini:1:", "missing ']'", NULL);
    s_refused("[service] junk\n", "x.ini:1:", "'junk'", NULL);
    s_refused("[Service]\n", "x.ini:1: unknown section [Service]", NULL, NULL);
    s_refused("[service]\n = 5\n", "x.ini:2:", "option name", NULL);
    s_refused("junk\n", "x.ini:1:", "outside any [section]", NULL);
    /* values */
    s_refused("[service]\ninstance = \"abc\n", "x.ini:2:", "unterminated", "instance");
    s_refused("[service]\ninstance = \"abc\" def\n", "x.ini:2:", "'def'", "instance");
    s_refused("[service]\ninstance = \"\"\n", "x.ini:2:", "instance", "empty");
    s_refused("[service]\ninstance = a b\n", "x.ini:2:", "instance", "bad character");
    s_refused("[service]\ninstance = "
              "a234567890123456789012345678901234567890123456789012345678901234\n",
              "x.ini:2:", "instance", "too long");
    s_refused("[service]\npublish = http://x\n", "x.ini:2:", "[service] publish = 'http://x'",
              "not an endpoint");
    s_refused("[service]\npublish = tcp://\n", "x.ini:2:", "publish", "not an endpoint");
    s_refused("[service]\npublish = \"tcp://a b\"\n", "x.ini:2:", "publish", "not an endpoint");
    s_refused("[service]\npublish = \"\"\n", "x.ini:2:", "publish", "required");
    s_refused("[service]\ndeadletter =\n", "x.ini:2:", "deadletter", "required");
    char longep[400];
    snprintf(longep, sizeof longep, "[service]\npublish = tcp://%0300d\n", 0);
    s_refused(longep, "x.ini:2:", "publish", "too long");
    s_refused("[dedup]\ndedup_window = 1000\n", "x.ini:2:", "dedup_window", "power of two");
    s_refused("[dedup]\ndedup_window = 32\n", "x.ini:2:", "dedup_window", "out of range");
    s_refused("[dedup]\ndedup_window = 33554432\n", "x.ini:2:", "dedup_window", "out of range");
    s_refused("[pipeline]\nworkers = 65\n", "x.ini:2:", "workers = '65'", "out of range");
    s_refused("[pipeline]\nqueue_batches = 0\n", "x.ini:2:", "queue_batches", "1..100000");
    s_refused("[service]\ndrain_timeout_ms = 99\n", "x.ini:2:", "drain_timeout_ms", "100..600000");
    s_refused("[aggregate]\nmax_open_keys = 1000000001\n", "x.ini:2:", "max_open_keys",
              "out of range");
    s_refused("[demo]\ndemo_lines = 101\n", "x.ini:2:", "demo_lines", "1..100");
    s_refused("[durability]\nreader_max_lag_events = 999\n", "x.ini:2:",
              "reader_max_lag_events", "1000..1000000000000");
    s_refused("[durability]\nreader_max_lag_events = 1000000000001\n", "x.ini:2:",
              "reader_max_lag_events", "out of range");

    /* no file name: a placeholder, still with the line */
    fp_config_t c;
    fp_config_defaults(&c);
    ASSERT_EQ(fp_config_parse(&c, "[x]\n", NULL, s_err, sizeof s_err), -1);
    ASSERT(strncmp(s_err, "(config):1:", 11) == 0);
    /* a short error buffer is truncated, not overrun */
    char tiny[8];
    memset(tiny, 'z', sizeof tiny);
    ASSERT_EQ(fp_config_parse(&c, "[x]\n", "x.ini", tiny, 6), -1);
    ASSERT_STREQ(tiny, "x.ini");
    ASSERT_EQ(tiny[7], 'z');
}

/* [aggregate] periods and [counters]: values and file:line errors. */
TEST(test_periods_and_counters)
{
    fp_config_t c;
    fp_config_defaults(&c);
    ASSERT_EQ(c.period, FP_PERIOD_DAY);
    ASSERT_STREQ(c.shifts, "06:00,14:00,22:00");
    ASSERT_STREQ(c.closed_before, "");
    ASSERT_EQ(c.closed_period, FP_CLOSED_POST_TO_FIRST_OPEN);
    ASSERT_EQ((long long)c.counter_default_modulus, 4294967296ll);
    ASSERT_EQ((long long)c.counter_max_jump, 0);
    ASSERT_EQ(s_parse(&c, "[aggregate]\nperiod = shift\nshifts = \"22:00, 06:00,14:00\"\n"
                          "closed_before = 2026-11-01\nclosed_period = dead_letter\n"
                          "[counters]\ndefault_modulus = 65536\nmax_jump = 5000\njitter = 3\n"
                          "modulus = \"GOOD32=4294967296, SCR = 100\"\n"),
              0);
    ASSERT_EQ(c.period, FP_PERIOD_SHIFT);
    ASSERT_STREQ(c.shifts, "22:00, 06:00,14:00");
    ASSERT_STREQ(c.closed_before, "2026-11-01");
    ASSERT_EQ(c.closed_period, FP_CLOSED_DEAD_LETTER);
    ASSERT_EQ((long long)c.counter_default_modulus, 65536);
    ASSERT_EQ((long long)c.counter_max_jump, 5000);
    ASSERT_EQ((long long)c.counter_jitter, 3);
    fp_counter_modulus_t m[4];
    ASSERT_EQ(fp_config_counter_moduli(c.counter_modulus, m, 4, s_err, sizeof s_err), 2);
    ASSERT_STREQ(m[0].name, "GOOD32");
    ASSERT_EQ((long long)m[0].modulus, 4294967296ll);
    ASSERT_STREQ(m[1].name, "SCR");
    ASSERT_EQ((long long)m[1].modulus, 100);
    ASSERT_EQ(fp_config_counter_moduli("", m, 4, s_err, sizeof s_err), 0);
    ASSERT_EQ(s_parse(&c, "[aggregate]\nperiod = hour\n"), 0);
    ASSERT_EQ(c.period, FP_PERIOD_HOUR);

    s_refused("[aggregate]\nperiod = week\n", "x.ini:2:", "[aggregate] period = 'week'",
              "day, shift or hour");
    s_refused("[aggregate]\n\nshifts = \"06:00,14:00,07:00\"\n", "x.ini:3:", "shifts",
              "24-hour");
    s_refused("[aggregate]\nshifts = 25:00\n", "x.ini:2:", "shifts", "HH:MM");
    s_refused("[aggregate]\nshifts = \"\"\n", "x.ini:2:", "shifts", NULL);
    s_refused("[aggregate]\nclosed_before = 2026-02-30\n", "x.ini:2:", "closed_before",
              "not a date");
    s_refused("[aggregate]\nclosed_before = 1.11.2026\n", "x.ini:2:", "not a date", NULL);
    s_refused("[aggregate]\nclosed_period = drop\n", "x.ini:2:", "closed_period",
              "post_to_first_open or dead_letter");
    s_refused("[counters]\ndefault_modulus = 1\n", "x.ini:2:", "default_modulus",
              "out of range");
    s_refused("[counters]\nmodulus = \"A=1\"\n", "x.ini:2:", "modulus of 'A'", NULL);
    s_refused("[counters]\nmodulus = \"A\"\n", "x.ini:2:", "no '=MODULUS'", NULL);
    s_refused("[counters]\nmodulus = \"A=10,A=20\"\n", "x.ini:2:", "given twice", NULL);
    s_refused("[counters]\nmodulus = \"A=10;B=20\"\n", "x.ini:2:", "commas", NULL);
    s_refused("[counters]\njitter = 1000001\n", "x.ini:2:", "jitter", "out of range");
    s_refused("[counters]\nperiod = day\n", "x.ini:2:", "belongs in [aggregate]", NULL);
}

TEST(test_integers)
{
    s_refused("[pipeline]\nworkers = 4x\n", "x.ini:2:", "'4x'", "not an integer");
    s_refused("[pipeline]\nworkers = 4 x\n", "x.ini:2:", "'4 x'", "not an integer");
    s_refused("[pipeline]\nworkers = 0x10\n", "x.ini:2:", "not an integer", NULL);
    s_refused("[pipeline]\nworkers = 1.5\n", "x.ini:2:", "not an integer", NULL);
    s_refused("[pipeline]\nworkers = \n", "x.ini:2:", "workers", "not an integer");
    s_refused("[pipeline]\nworkers = \" 4\"\n", "x.ini:2:", "workers", "not an integer");
    s_refused("[pipeline]\nworkers = -1\n", "x.ini:2:", "workers = '-1'", "negative");
    s_refused("[aggregate]\nclosed_key_grace_ms = -5\n", "x.ini:2:", "negative", NULL);
    s_refused("[aggregate]\nmax_open_keys = -1\n", "x.ini:2:", "negative", NULL);
    s_refused("[pipeline]\nmax_frame_bytes = 99999999999999999999\n", "x.ini:2:",
              "max_frame_bytes", "overflow");
    s_refused("[pipeline]\nmax_frame_bytes = -99999999999999999999\n", "x.ini:2:",
              "overflow", NULL);
    /* wider than the field: 2^32 + 1024 must not wrap into range */
    s_refused("[pipeline]\nmax_frame_bytes = 4294968320\n", "x.ini:2:", "out of range", NULL);
    s_refused("[pipeline]\nworkers = 4294967297\n", "x.ini:2:", "out of range", NULL);
    s_refused("[pipeline]\nround_interval_ms = 10s\n", "x.ini:2:", "not an integer", NULL);
    fp_config_t c;
    ASSERT_EQ(s_parse(&c, "[pipeline]\nworkers = 007\n"), 0);
    ASSERT_EQ(c.workers, 7);
}

TEST(test_ingest_endpoints)
{
    fp_config_t c;
    ASSERT_EQ(s_parse(&c, "[service]\ningest_router =\n"), 0);
    ASSERT_STREQ(c.ingest_router, "");
    ASSERT_STREQ(c.ingest_pull, "tcp://*:5561");
    ASSERT_EQ(s_parse(&c, "[service]\ningest_pull = \"\" # off\n"), 0);
    ASSERT_STREQ(c.ingest_pull, "");
    s_refused("[service]\ningest_router = \"\"\n\ningest_pull =\n", "x.ini:4:", "ingest_router",
              "ingest_pull");
    s_refused("[service]\ningest_pull =\n# x\ningest_router = \"\"\n\n", "x.ini:4:",
              "both empty", NULL);
    /* a required endpoint missing from the caller's struct: reported too */
    fp_config_t z;
    memset(&z, 0, sizeof z);
    ASSERT_EQ(fp_config_parse(&z, "[service]\ningest_pull = tcp://*:1\n", "x.ini", s_err,
                              sizeof s_err), -1);
    ASSERT(strstr(s_err, "publish") != NULL);
}

/* What the start refuses, --check refuses too (issue 9 item 9): bind
   addresses as libzmq and libmicrohttpd take them, ports 1..65535, one bind
   per address, and every section named in the section messages. */
TEST(test_bind_addresses)
{
    fp_config_t c;
    /* metrics_address: an IPv4 address only */
    s_refused("[metrics]\nmetrics_address = localhost\n", "x.ini:2:",
              "[metrics] metrics_address = 'localhost'", "not an IPv4 address");
    s_refused("[metrics]\n\nmetrics_address = 999.1.1.1\n", "x.ini:3:", "metrics_address",
              "not an IPv4 address");
    s_refused("[metrics]\nmetrics_address = \"\"\n", "x.ini:2:", "metrics_address", NULL);
    s_refused("[metrics]\nmetrics_address = ::1\n", "x.ini:2:", "metrics_address", NULL);
    ASSERT_EQ(s_parse(&c, "[metrics]\nmetrics_address = 10.1.2.3\n"), 0);
    ASSERT_STREQ(c.metrics_address, "10.1.2.3");
    /* tcp endpoints: HOST:PORT with PORT 1..65535 */
    s_refused("[service]\npublish = tcp://127.0.0.1\n", "x.ini:2:",
              "[service] publish = 'tcp://127.0.0.1'", "no port");
    s_refused("[service]\npublish = tcp://*:\n", "x.ini:2:", "publish", "no port after");
    s_refused("[service]\ningest_router = tcp://*:92128\n", "x.ini:2:", "ingest_router",
              "out of range 1..65535");
    s_refused("[service]\ningest_pull = tcp://*:65536\n", "x.ini:2:", "ingest_pull",
              "out of range");
    s_refused("[service]\ningest_pull = tcp://*:99999999999999999999\n", "x.ini:2:",
              "ingest_pull", "out of range");
    s_refused("[service]\ningest_pull = tcp://*:0\n", "x.ini:2:", "ingest_pull",
              "out of range");
    s_refused("[service]\ningest_pull = tcp://*:*\n", "x.ini:2:", "ingest_pull",
              "not a number");
    s_refused("[service]\ningest_pull = tcp://*:-5\n", "x.ini:2:", "ingest_pull",
              "not a number");
    s_refused("[service]\nreplay = tcp://:5572\n", "x.ini:2:", "replay", "no host");
    s_refused("[service]\nreplay = tcp://localhost:5572\n", "x.ini:2:", "replay",
              "never a DNS name");
    s_refused("[service]\nreplay = tcp://999.1.1.1:5572\n", "x.ini:2:", "replay",
              "not an IPv4 address");
    s_refused("[service]\nreplay = tcp://[::1]:5572\n", "x.ini:2:", "replay", "IPv6");
    s_refused("[service]\nreplay = tcp://10.0.0.1;10.0.0.2:5572\n", "x.ini:2:", "replay",
              "source address");
    /* inproc: not for replay (its own context), never an internal name */
    s_refused("[service]\nreplay = inproc://r\n", "x.ini:2:", "replay", "inproc is not allowed");
    s_refused("[service]\npublish = inproc://fp-ready\n", "x.ini:2:", "publish", "fp-*");
    /* ipc: a path that fits a Unix socket address */
    char longipc[300];
    snprintf(longipc, sizeof longipc, "[service]\npublish = ipc:///tmp/%0120d\n", 0);
    s_refused(longipc, "x.ini:2:", "publish", "too long for a Unix socket");
    ASSERT_EQ(s_parse(&c, "[service]\npublish = tcp://lo:6000\nreplay = tcp://127.0.0.1:1\n"
                          "deadletter = ipc://@abstract\ningest_pull = tcp://*:65535\n"),
              0);
    ASSERT_STREQ(c.publish, "tcp://lo:6000");
    /* one address, one bind: reported at the later line */
    s_refused("[service]\npublish = tcp://*:6000\n\ndeadletter = tcp://127.0.0.1:6000\n",
              "x.ini:4:", "[service] publish = 'tcp://*:6000' and [service] deadletter", 
              "the same address twice");
    s_refused("[service]\ndeadletter = tcp://*:5570\n", "x.ini:2:", "publish", "deadletter");
    s_refused("[service]\npublish = ipc:///tmp/p\ndeadletter = ipc:///tmp/p\n", "x.ini:3:",
              "same address twice", NULL);
    s_refused("[service]\npublish = tcp://*:6000\n[metrics]\nmetrics_port = 6000\n",
              "x.ini:4:", "metrics_port = 6000", "the same TCP port twice");
    ASSERT_EQ(s_parse(&c, "[service]\npublish = tcp://127.0.0.1:6000\n"
                          "deadletter = tcp://127.0.0.2:6000\n"),
              0);
    /* the section messages list every section of the table */
    const char *all = "service, pipeline, dedup, aggregate, counters, durability, metrics, "
                      "security, demo, sink NAME";
    s_refused("[bogus]\n", "x.ini:1: unknown section [bogus]", all, NULL);
    s_refused("[metrics\n", "x.ini:1: malformed section header", "missing ']'", all);
}

TEST(test_security_pair)
{
    fp_config_t c;
    /* a server key needs an allow file, named at the option's line */
    s_refused("[security]\n# on\ncurve_secret_key_file = /etc/floorpost/server.key\n",
              "x.ini:3:", "curve_allow_file is empty", "curve_secret_key_file");
    s_refused("[security]\ncurve_allow_file = \"\"\ncurve_secret_key_file = k.key\n\n",
              "x.ini:3:", "[security]", NULL);
    ASSERT_EQ(s_parse(&c, "[security]\ncurve_secret_key_file = k.key\n"
                          "curve_allow_file = a.allow\n"), 0);
    ASSERT_STREQ(c.curve_secret_key_file, "k.key");
    ASSERT_STREQ(c.curve_allow_file, "a.allow");
    /* plain, with or without an (ignored) allow file */
    ASSERT_EQ(s_parse(&c, "[security]\ncurve_allow_file = a.allow\n"), 0);
    ASSERT_EQ(s_parse(&c, "[security]\ncurve_secret_key_file = \"\"\n"), 0);
}

/* The dead letters' budgets must fit the map: refused at the line that
   broke the rule, with the bound that holds. */
TEST(test_deadletter_budgets)
{
    fp_config_t c;
    ASSERT_EQ(s_parse(&c, "[durability]\ndeadletter_max_count = 5\ndeadletter_max_mb = 512\n"
                          "deadletter_retention_ms = 1000\ndeadletter_round_max_kb = 32768\n"),
              0);
    ASSERT_EQ(c.deadletter_max_count, 5);
    ASSERT_EQ(c.deadletter_max_mb, 512);
    ASSERT_EQ(c.deadletter_retention_ms, 1000);
    ASSERT_EQ(c.deadletter_round_max_kb, 32768);
    ASSERT_EQ(fp_config_dl_max_bytes(&c), 512u << 20);
    ASSERT_EQ(fp_config_dl_round_bytes(&c), 32768u << 10);
    s_refused("[durability]\ndeadletter_max_mb = 513\n", "x.ini:2:",
              "more than half of map_size_mb = 1024", "1..512");
    s_refused("[durability]\ndeadletter_max_mb = 40\nmap_size_mb = 64\n", "x.ini:3:",
              "deadletter_max_mb = 40", "1..32");
    s_refused("[durability]\nmap_size_mb = 1\ndeadletter_max_mb = 1\n", "x.ini:3:",
              "0 (a quarter of the map)", NULL);
    s_refused("[durability]\ndeadletter_round_max_kb = 32769\n", "x.ini:2:",
              "more than 1/32 of map_size_mb", "4..32768");
    s_refused("[durability]\ndeadletter_round_max_kb = 3\n", "x.ini:2:", "below 4", NULL);
    s_refused("[durability]\ndeadletter_max_count = 0\n", "x.ini:2:", "1..1000000000", NULL);
    s_refused("[durability]\ndeadletter_retention_ms = 999\n", "x.ini:2:", "1000..", NULL);
    s_refused("[durability]\ndeadletter_round_max_kb = -1\n", "x.ini:2:", "negative", NULL);
    /* 0 = auto, whatever the map */
    ASSERT_EQ(s_parse(&c, "[durability]\nmap_size_mb = 1\ndeadletter_max_mb = 0\n"
                          "deadletter_round_max_kb = 0\n"),
              0);
    ASSERT_EQ(fp_config_dl_max_bytes(&c), 256u << 10);
    ASSERT_EQ(fp_config_dl_round_bytes(&c), 4u << 10);
}

TEST(test_load_errors)
{
    fp_config_t c;
    fp_config_defaults(&c);
    ASSERT_EQ(fp_config_load(&c, "/nonexistent/floorpost.ini", s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "/nonexistent/floorpost.ini") != NULL);
    ASSERT(strstr(s_err, "No such file") != NULL);
    ASSERT_EQ(fp_config_load(&c, "/tmp", s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "/tmp") != NULL);

    char path[] = "/tmp/fp_test_config_XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    const char bad[] = "[demo]\ndemo_rate = 0\n";
    ASSERT_EQ(write(fd, bad, sizeof bad - 1), (long)(sizeof bad - 1));
    close(fd);
    ASSERT_EQ(fp_config_load(&c, path, s_err, sizeof s_err), -1);
    ASSERT(strncmp(s_err, path, strlen(path)) == 0);
    ASSERT(strstr(s_err, ":2: [demo] demo_rate = '0'") != NULL);

    fd = open(path, O_WRONLY | O_TRUNC);
    ASSERT(fd >= 0);
    const char nul[] = "[demo]\ndemo_rate = 5\0\n";
    ASSERT_EQ(write(fd, nul, sizeof nul - 1), (long)(sizeof nul - 1));
    close(fd);
    ASSERT_EQ(fp_config_load(&c, path, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, ":2:") != NULL);
    ASSERT(strstr(s_err, "NUL") != NULL);
    unlink(path);
}

TEST(test_reference_file)
{
    /* memset 0 first on both sides: the whole struct, padding included, is
       the same as the defaults */
    fp_config_t want, got;
    fp_config_defaults(&want);
    memset(&got, 0, sizeof got);
    int rc = fp_config_load(&got, "configs/floorpost.ini", s_err, sizeof s_err);
    if (rc != 0)
        fprintf(stderr, "%s\n", s_err);
    ASSERT_EQ(rc, 0);
    ASSERT(memcmp(&got, &want, sizeof got) == 0);

    /* over junk: every field must come from the file (no option missing) */
    memset(&got, 0x5a, sizeof got);
    got.print_events = true; /* keep bools valid in case the file lacks them */
    got.demo = true;
    got.nsinks = 0; /* not an option: the [sink] sections' count */
    ASSERT_EQ(fp_config_load(&got, "configs/floorpost.ini", s_err, sizeof s_err), 0);
    ASSERT_STREQ(got.instance, want.instance);
    ASSERT_STREQ(got.ingest_router, want.ingest_router);
    ASSERT_STREQ(got.ingest_pull, want.ingest_pull);
    ASSERT_STREQ(got.publish, want.publish);
    ASSERT_STREQ(got.deadletter, want.deadletter);
    ASSERT_EQ(got.print_events, want.print_events);
    ASSERT_EQ(got.drain_timeout_ms, want.drain_timeout_ms);
    ASSERT_EQ(got.workers, want.workers);
    ASSERT_EQ(got.shards, want.shards);
    ASSERT_EQ(got.queue_batches, want.queue_batches);
    ASSERT_EQ(got.ingest_hwm, want.ingest_hwm);
    ASSERT_EQ(got.max_frame_bytes, want.max_frame_bytes);
    ASSERT_EQ(got.round_interval_ms, want.round_interval_ms);
    ASSERT_EQ(got.dedup_window, want.dedup_window);
    ASSERT_EQ(got.max_sources, want.max_sources);
    ASSERT_EQ(got.posting_interval_ms, want.posting_interval_ms);
    ASSERT_EQ(got.closed_key_grace_ms, want.closed_key_grace_ms);
    ASSERT_EQ((long long)got.max_open_keys, (long long)want.max_open_keys);
    ASSERT_STREQ(got.time_zone, want.time_zone);
    ASSERT_EQ(got.period, want.period);
    ASSERT_STREQ(got.shifts, want.shifts);
    ASSERT_STREQ(got.closed_before, want.closed_before);
    ASSERT_EQ(got.closed_period, want.closed_period);
    ASSERT_EQ((long long)got.counter_default_modulus, (long long)want.counter_default_modulus);
    ASSERT_STREQ(got.counter_modulus, want.counter_modulus);
    ASSERT_EQ((long long)got.counter_max_jump, (long long)want.counter_max_jump);
    ASSERT_EQ((long long)got.counter_jitter, (long long)want.counter_jitter);
    ASSERT_EQ((long long)got.reader_max_lag_events, (long long)want.reader_max_lag_events);
    ASSERT_EQ(got.demo, want.demo);
    ASSERT_EQ(got.demo_rate, want.demo_rate);
    ASSERT_EQ(got.demo_lines, want.demo_lines);
    /* string fields are zero-filled past their text when set */
    ASSERT(memcmp(got.publish, want.publish, sizeof got.publish) == 0);
}

int
main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_defaults);
    RUN(test_resolve);
    RUN(test_full_valid_text);
    RUN(test_booleans);
    RUN(test_error_messages);
    RUN(test_periods_and_counters);
    RUN(test_integers);
    RUN(test_ingest_endpoints);
    RUN(test_bind_addresses);
    RUN(test_security_pair);
    RUN(test_deadletter_budgets);
    RUN(test_load_errors);
    RUN(test_reference_file);
    return test_done();
}
