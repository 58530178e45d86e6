/*  test_jsonl.c - JSON lines for `floorpost send`: every kind, defaults,
    exact int64, and an error naming the field for every kind of mistake. */
#include "jsonl.h"

#include "test.h"

static jsonl_t *s_j;
static uint64_t s_src, s_epoch;
static fp_rec_in_t s_rec;
static char s_err[256];

static int s_parse(const char *line)
{
    s_err[0] = 0;
    return jsonl_parse(s_j, line, &s_src, &s_epoch, &s_rec, s_err, sizeof(s_err));
}

/* The line must fail with an error containing `want`. */
static void s_expect_error(const char *line, const char *want)
{
    int rc = s_parse(line);
    if (rc != -1 || !strstr(s_err, want)) {
        fprintf(stderr, "line %s: rc %d, err \"%s\", want \"%s\"\n", line, rc, s_err, want);
        abort();
    }
}

TEST(test_every_kind)
{
    ASSERT_EQ(s_parse("{\"source_id\": 7, \"epoch\": 2, \"seq\": 1, \"time_ns\": 1763900000123456789,"
                      " \"kind\": \"OperationStarted\", \"plant\": \"1000\", \"line\": \"L01\","
                      " \"station\": \"L01-ST02\", \"order\": \"000100012345\", \"operation\": \"0010\"}\n"),
              0);
    ASSERT_EQ(s_src, 7);
    ASSERT_EQ(s_epoch, 2);
    ASSERT_EQ(s_rec.seq, 1);
    ASSERT_EQ(s_rec.kind, FP_KIND_OP_STARTED);
    ASSERT_EQ(s_rec.quantity, 0);
    ASSERT(s_rec.time_ns == 1763900000123456789LL); /* exact, not via a double */
    ASSERT_STREQ(s_rec.str[FP_STR_PLANT], "1000");
    ASSERT_STREQ(s_rec.str[FP_STR_LINE], "L01");
    ASSERT_STREQ(s_rec.str[FP_STR_STATION], "L01-ST02");
    ASSERT_STREQ(s_rec.str[FP_STR_ORDER], "000100012345");
    ASSERT_STREQ(s_rec.str[FP_STR_OPERATION], "0010");
    ASSERT(s_rec.str[FP_STR_MATERIAL] == NULL);
    ASSERT(s_rec.str[FP_STR_REASON] == NULL);

    ASSERT_EQ(s_parse("{\"source_id\":7,\"seq\":2,\"kind\":\"PartCount\",\"quantity\":10}"), 0);
    ASSERT_EQ(s_rec.kind, FP_KIND_PART_COUNT);
    ASSERT_EQ(s_rec.quantity, 10);
    ASSERT_EQ(s_epoch, 1); /* default */
    ASSERT_EQ(s_rec.time_ns, 0);
    ASSERT(s_rec.str[FP_STR_PLANT] == NULL);

    ASSERT_EQ(s_parse("{\"source_id\":7,\"seq\":3,\"kind\":\"MaterialConsumed\",\"material\":"
                      "\"RM-STEEL-2MM\",\"lot\":\"LOT-2611-0042\",\"unit\":\"KG\",\"quantity\":-1250}"),
              0);
    ASSERT_EQ(s_rec.kind, FP_KIND_MATERIAL);
    ASSERT_EQ(s_rec.quantity, -1250);
    ASSERT_STREQ(s_rec.str[FP_STR_MATERIAL], "RM-STEEL-2MM");
    ASSERT_STREQ(s_rec.str[FP_STR_LOT], "LOT-2611-0042");
    ASSERT_STREQ(s_rec.str[FP_STR_UNIT], "KG");

    ASSERT_EQ(s_parse("{\"source_id\":7,\"seq\":4,\"kind\":\"Scrap\",\"reason\":\"SCR-DIM\",\"quantity\":2}"), 0);
    ASSERT_EQ(s_rec.kind, FP_KIND_SCRAP);
    ASSERT_STREQ(s_rec.str[FP_STR_REASON], "SCR-DIM");

    ASSERT_EQ(s_parse("{\"source_id\":7,\"seq\":5,\"kind\":\"OperationCompleted\",\"epoch\":0}"), 0);
    ASSERT_EQ(s_rec.kind, FP_KIND_OP_COMPLETED);
    ASSERT_EQ(s_epoch, 0);

    /* Kinds by number; null strings are absent. */
    for (int k = 1; k <= 5; k++) {
        char line[128];
        snprintf(line, sizeof(line), "{\"source_id\":1,\"seq\":1,\"kind\":%d,\"lot\":null}", k);
        ASSERT_EQ(s_parse(line), 0);
        ASSERT_EQ(s_rec.kind, k);
        ASSERT(s_rec.str[FP_STR_LOT] == NULL);
    }
}

TEST(test_int64_exact)
{
    ASSERT_EQ(s_parse("{\"source_id\":9223372036854775807,\"epoch\":9007199254740993,"
                      "\"seq\":9007199254740993,\"time_ns\":-9223372036854775808,"
                      "\"kind\":1,\"quantity\":9223372036854775807}"),
              0);
    ASSERT(s_src == 9223372036854775807ull);
    ASSERT(s_epoch == 9007199254740993ull); /* 2^53 + 1: a double would round it */
    ASSERT(s_rec.seq == 9007199254740993ull);
    ASSERT(s_rec.time_ns == INT64_MIN);
    ASSERT(s_rec.quantity == INT64_MAX);
    ASSERT_EQ(s_parse("{\"source_id\":1,\"seq\":1763900000123456789,\"kind\":1,"
                      "\"time_ns\":1763900000123456789}"),
              0);
    ASSERT(s_rec.seq == 1763900000123456789ull);
    ASSERT(s_rec.time_ns == 1763900000123456789LL);
}

TEST(test_skipped_lines)
{
    s_src = 77;
    ASSERT_EQ(s_parse(""), 1);
    ASSERT_EQ(s_parse("   \t\r\n"), 1);
    ASSERT_EQ(s_parse("# a comment"), 1);
    ASSERT_EQ(s_parse("  # indented comment {\"x\":1}"), 1);
    ASSERT_EQ(s_src, 77); /* outputs untouched */
}

TEST(test_errors)
{
    s_expect_error("{\"seq\":1,\"kind\":1}", "field 'source_id': required");
    s_expect_error("{\"source_id\":1,\"kind\":1}", "field 'seq': required");
    s_expect_error("{\"source_id\":1,\"seq\":1}", "field 'kind': required");
    s_expect_error("{\"source_id\":0,\"seq\":1,\"kind\":1}", "field 'source_id': must be an integer >= 1");
    s_expect_error("{\"source_id\":\"7\",\"seq\":1,\"kind\":1}", "field 'source_id': must be an integer >= 1");
    s_expect_error("{\"source_id\":1,\"seq\":0,\"kind\":1}", "field 'seq': must be an integer >= 1");
    s_expect_error("{\"source_id\":1,\"seq\":-5,\"kind\":1}", "field 'seq': must be an integer >= 1");
    s_expect_error("{\"source_id\":1,\"seq\":1.0,\"kind\":1}", "field 'seq': must be an integer >= 1");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1,\"epoch\":-1}", "field 'epoch': must be an integer >= 0");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1,\"time_ns\":1.7639e18}", "field 'time_ns': must be an integer");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1,\"quantity\":2.5}", "field 'quantity': must be an integer");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1,\"quantity\":\"3\"}", "field 'quantity': must be an integer");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1,\"quantity\":true}", "field 'quantity': must be an integer");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":\"Rework\"}", "field 'kind': unknown kind 'Rework'");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":\"partcount\"}", "field 'kind': unknown kind");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":0}", "field 'kind': must be a kind name or an integer 1..7");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":8}", "field 'kind'");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1.0}", "field 'kind'");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1,\"plant\":1000}", "field 'plant': must be a string");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1,\"reason\":[]}", "field 'reason': must be a string");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1,\"colour\":\"red\"}", "unknown field 'colour'");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"seq\":2,\"kind\":1}", "invalid JSON");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1", "invalid JSON");
    s_expect_error("{\"source_id\":1,\"seq\":1,\"kind\":1} {}", "invalid JSON");
    s_expect_error("{\"source_id\":1,\"seq\":99999999999999999999,\"kind\":1}", "invalid JSON");
    s_expect_error("[1,2,3]", "a line must be one JSON object");
    s_expect_error("42", "a line must be one JSON object");

    /* A tiny error buffer is truncated, still NUL-terminated. */
    char small[8];
    memset(small, 'x', sizeof(small));
    ASSERT_EQ(jsonl_parse(s_j, "{\"seq\":1,\"kind\":1}", &s_src, &s_epoch, &s_rec, small, sizeof(small)), -1);
    ASSERT_STREQ(small, "field '");

    /* A good line after errors parses normally. */
    ASSERT_EQ(s_parse("{\"source_id\":3,\"seq\":8,\"kind\":\"Scrap\",\"quantity\":1}"), 0);
    ASSERT_EQ(s_src, 3);
    ASSERT_EQ(s_rec.seq, 8);
}

/* Counter readings: the kinds by name and number, "counter" as the
   material field, "from_zero" as the flag. */
TEST(test_counter_readings)
{
    ASSERT_EQ(s_parse("{\"source_id\":7,\"seq\":5,\"kind\":\"PartCounter\",\"plant\":\"1000\","
                      "\"order\":\"O1\",\"operation\":\"0010\",\"station\":\"PRESS-1\","
                      "\"counter\":\"GOOD\",\"quantity\":4294967295}"),
              0);
    ASSERT_EQ(s_rec.kind, FP_KIND_PART_COUNTER);
    ASSERT_STREQ(s_rec.str[FP_STR_COUNTER], "GOOD");
    ASSERT_STREQ(s_rec.str[FP_STR_STATION], "PRESS-1");
    ASSERT_EQ(s_rec.quantity, 4294967295ll);
    ASSERT_EQ(s_rec.flags, 0);
    ASSERT_EQ(s_parse("{\"source_id\":7,\"seq\":6,\"kind\":7,\"reason\":\"DENT\","
                      "\"material\":\"SCR\",\"from_zero\":true,\"quantity\":3}"),
              0);
    ASSERT_EQ(s_rec.kind, FP_KIND_SCRAP_COUNTER);
    ASSERT_STREQ(s_rec.str[FP_STR_COUNTER], "SCR");
    ASSERT_EQ(s_rec.flags, FP_COUNTER_FROM_ZERO);
    ASSERT_EQ(s_parse("{\"source_id\":7,\"seq\":7,\"kind\":\"ScrapCounter\",\"counter\":\"S\","
                      "\"from_zero\":false}"),
              0);
    ASSERT_EQ(s_rec.flags, 0);
    s_expect_error("{\"source_id\":7,\"seq\":8,\"kind\":\"PartCount\",\"from_zero\":true}",
                   "field 'from_zero': only for PartCounter and ScrapCounter");
    s_expect_error("{\"source_id\":7,\"seq\":8,\"kind\":6,\"from_zero\":1}",
                   "field 'from_zero': must be true or false");
    s_expect_error("{\"source_id\":7,\"seq\":8,\"kind\":6,\"counter\":\"A\",\"material\":\"B\"}",
                   "field 'material': 'counter' given too");
    s_expect_error("{\"source_id\":7,\"seq\":8,\"kind\":6,\"material\":\"B\",\"counter\":\"A\"}",
                   "field 'counter': 'material' given too");
    s_expect_error("{\"source_id\":7,\"seq\":8,\"kind\":6,\"counter\":5}",
                   "field 'counter': must be a string");
    s_expect_error("{\"source_id\":7,\"seq\":8,\"kind\":\"PartCounters\"}", "ScrapCounter or 1..7");
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    s_j = jsonl_new();
    ASSERT(s_j);
    RUN(test_every_kind);
    RUN(test_int64_exact);
    RUN(test_skipped_lines);
    RUN(test_errors);
    RUN(test_counter_readings);
    jsonl_destroy(&s_j);
    ASSERT(s_j == NULL);
    jsonl_destroy(&s_j);
    return test_done();
}
