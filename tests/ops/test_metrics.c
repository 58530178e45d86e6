/*  test_metrics.c - the Prometheus exposition for known values: counters,
    dead letters by reason, stage gauges, shard and source gauges,
    histogram buckets, and the /healthz verdict. */
#include "metrics.h"
#include "test.h"

static char *s_text(const fp_metrics_t *m, int64_t now)
{
    size_t len = 0;
    char *t = fp_metrics_prometheus(m, now, &len);
    ASSERT(t);
    ASSERT_EQ(strlen(t), len);
    return t;
}

/* True when `line` (without the newline) is a whole line of text. */
static int s_has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

#define ASSERT_LINE(text, line)                                                        \
    do {                                                                               \
        if (!s_has_line(text, line)) {                                                 \
            fprintf(stderr, "%s:%d: no line \"%s\" in:\n%s\n", __FILE__, __LINE__, line, \
                    text);                                                             \
            abort();                                                                   \
        }                                                                              \
    } while (0)

static int s_count_prefix(const char *text, const char *prefix)
{
    int n = 0;
    size_t k = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, k) == 0)
            n++;
    return n;
}

TEST(test_bad_sizes)
{
    ASSERT(fp_metrics_new(0, 1) == NULL);
    ASSERT(fp_metrics_new(1, 65) == NULL);
    fp_metrics_t *m = fp_metrics_new(1, 1);
    ASSERT(m);
    fp_metrics_destroy(&m);
    ASSERT(m == NULL);
    fp_metrics_destroy(&m); /* safe twice */
}

TEST(test_counters)
{
    fp_metrics_t *m = fp_metrics_new(2, 3);
    ASSERT(m);
    fp_metrics_add(m, FP_M_RECORDS_IN, 12);
    fp_metrics_add(m, FP_M_RECORDS_ACCEPTED, 9);
    fp_metrics_add(m, FP_M_DUPLICATES, 3);
    fp_metrics_add(m, FP_M_BATCHES_OK, 4);
    fp_metrics_add(m, FP_M_EVENTS_CONSUMPTION, 2);
    fp_metrics_add(m, FP_M_EVENTS_COMPLETION, 5);
    fp_metrics_add(m, FP_M_EVENTS_LATE, 1);
    fp_metrics_dead_letter(m, FP_DL_malformed);
    fp_metrics_dead_letter(m, FP_DL_malformed);
    fp_metrics_dead_letter(m, FP_DL_COUNT + 5); /* out of range: other */
    ASSERT_EQ(fp_metrics_dead_letters(m, FP_DL_malformed), 2);
    ASSERT_EQ(fp_metrics_dead_letters(m, FP_DL_other), 1);
    /* The names are the edge: parsed back exactly, an unknown one refused. */
    ASSERT_EQ(fp_dl_reason_parse("stale_epoch", 11), FP_DL_stale_epoch);
    ASSERT_EQ(fp_dl_reason_parse("stale_epochs", 12), -1);
    ASSERT_STREQ(fp_dl_reason_name(FP_DL_too_old), "too_old");
    ASSERT_EQ(fp_metrics_get(m, FP_M_DEAD_LETTERS), 3);

    char *t = s_text(m, 1);
    ASSERT_LINE(t, "# HELP floorpost_records_accepted_total Unique, valid records handed to "
                   "aggregation.");
    ASSERT_LINE(t, "# TYPE floorpost_records_accepted_total counter");
    ASSERT_LINE(t, "floorpost_records_accepted_total 9");
    ASSERT_LINE(t, "floorpost_records_received_total 12");
    ASSERT_LINE(t, "floorpost_records_duplicate_total 3");
    ASSERT_LINE(t, "floorpost_batches_total 4");
    ASSERT_LINE(t, "# TYPE floorpost_dead_letters_total counter");
    ASSERT_LINE(t, "floorpost_dead_letters_total{reason=\"malformed\"} 2");
    ASSERT_LINE(t, "floorpost_dead_letters_total{reason=\"other\"} 1");
    ASSERT_LINE(t, "floorpost_dead_letters_total{reason=\"truncated\"} 0");
    ASSERT_EQ(s_count_prefix(t, "floorpost_dead_letters_total{"), FP_DL_COUNT); /* every reason */
    ASSERT_LINE(t, "floorpost_events_published_total{kind=\"consumption\"} 2");
    ASSERT_LINE(t, "floorpost_events_published_total{kind=\"completion\"} 5");
    ASSERT_LINE(t, "floorpost_events_published_total{kind=\"scrap\"} 0");
    ASSERT_LINE(t, "floorpost_late_corrections_total 1");
    /* Every family has HELP and TYPE exactly once. */
    ASSERT_EQ(s_count_prefix(t, "# TYPE floorpost_events_published_total "), 1);
    ASSERT_EQ(s_count_prefix(t, "# HELP "), s_count_prefix(t, "# TYPE "));
    free(t);

    char line[2048];
    size_t n = fp_metrics_format(m, line, sizeof line);
    ASSERT_EQ(strlen(line), n);
    ASSERT(strstr(line, "records_accepted=9 "));
    ASSERT(strstr(line, " dead_letter_malformed=2"));
    fp_metrics_destroy(&m);
}

TEST(test_stages)
{
    fp_metrics_t *m = fp_metrics_new(2, 1);
    fp_stage_slot_t *w1 = fp_metrics_stage(m, FP_STAGE_WORKER, 1);
    fp_stage_slot_t *sh = fp_metrics_stage(m, FP_STAGE_SHARD, 0);
    fp_stage_slot_t *em = fp_metrics_stage(m, FP_STAGE_EMIT, 0);
    ASSERT(w1 != sh && sh != em && fp_metrics_stage(m, FP_STAGE_INGEST, 0) != w1);
    fp_metrics_stage_sent(w1, 5);
    fp_metrics_stage_received(w1, 3);
    fp_metrics_stage_busy(w1, 1500000000);
    fp_metrics_stage_busy(w1, -7); /* ignored */
    fp_metrics_stage_received(em, 4); /* received before the sender counted: 0, not huge */
    fp_metrics_stage_beat(w1, 1000000000);
    char *t = s_text(m, 3500000000);
    ASSERT_LINE(t, "# TYPE floorpost_stage_queue_messages gauge");
    ASSERT_LINE(t, "floorpost_stage_queue_messages{stage=\"worker-1\"} 2");
    ASSERT_LINE(t, "floorpost_stage_queue_messages{stage=\"emit\"} 0");
    ASSERT_LINE(t, "floorpost_stage_queue_messages{stage=\"ingest\"} 0");
    ASSERT_LINE(t, "# TYPE floorpost_stage_busy_seconds_total counter");
    ASSERT_LINE(t, "floorpost_stage_busy_seconds_total{stage=\"worker-1\"} 1.500000");
    ASSERT_LINE(t, "floorpost_stage_busy_seconds_total{stage=\"shard-0\"} 0.000000");
    ASSERT_LINE(t, "floorpost_stage_heartbeat_age_seconds{stage=\"worker-1\"} 2.500");
    ASSERT_LINE(t, "floorpost_stage_heartbeat_age_seconds{stage=\"worker-0\"} -1.000");
    ASSERT_EQ(s_count_prefix(t, "floorpost_stage_queue_messages{"), 5);
    free(t);
    fp_metrics_destroy(&m);
}

TEST(test_shards_and_sources)
{
    fp_metrics_t *m = fp_metrics_new(2, 2);
    fp_shard_gauges_t a = {.keys = 10, .open_operations = 3,
                           .pending_quantity = {1500, 7, 2}, .pending_records = {2, 4, 1}};
    fp_shard_gauges_t b = {.keys = 4, .open_operations = 1,
                           .pending_quantity = {-500, 0, 0}, .pending_records = {1, 0, 0}};
    fp_metrics_shard_set(m, 0, &a);
    fp_metrics_shard_set(m, 1, &b);
    fp_metrics_source_set(m, 0, 42, 7, 100, 98, 1000000000, 3500000000);
    fp_metrics_source_set(m, 0, 42, 7, 120, 120, 2000000000, 4000000000); /* same slot */
    fp_metrics_source_set(m, 1, 43, 1, 5, 5, 0, 0);
    fp_metrics_source_set(m, 1, 0, 1, 5, 5, 0, 0); /* source 0 is never shown */
    fp_metrics_sources_tracked(m, 0, 1);
    fp_metrics_sources_tracked(m, 1, 2);
    char *t = s_text(m, 1);
    ASSERT_LINE(t, "floorpost_shard_keys{shard=\"0\"} 10");
    ASSERT_LINE(t, "floorpost_shard_keys{shard=\"1\"} 4");
    ASSERT_LINE(t, "# TYPE floorpost_open_operations gauge");
    ASSERT_LINE(t, "floorpost_open_operations 4");
    ASSERT_LINE(t, "floorpost_pending_quantity{kind=\"consumption\"} 1000");
    ASSERT_LINE(t, "floorpost_pending_quantity{kind=\"completion\"} 7");
    ASSERT_LINE(t, "floorpost_pending_quantity{kind=\"scrap\"} 2");
    ASSERT_LINE(t, "floorpost_pending_records{kind=\"consumption\"} 3");
    ASSERT_LINE(t, "floorpost_sources 3");
    ASSERT_LINE(t, "floorpost_source_last_seq{source=\"42\"} 120");
    ASSERT_LINE(t, "floorpost_source_acked_seq{source=\"42\"} 120");
    ASSERT_LINE(t, "floorpost_source_epoch{source=\"42\"} 7");
    ASSERT_LINE(t, "floorpost_source_lag_seconds{source=\"42\"} 2.000");
    ASSERT_LINE(t, "floorpost_source_last_batch_timestamp_seconds{source=\"42\"} 4.000");
    ASSERT_LINE(t, "floorpost_source_last_seq{source=\"43\"} 5");
    ASSERT_EQ(s_count_prefix(t, "floorpost_source_last_seq{"), 2);
    free(t);
    fp_metrics_destroy(&m);

    /* The output stays bounded however many sources there are. */
    m = fp_metrics_new(1, 1);
    for (uint64_t s = 1; s <= 5000; s++)
        fp_metrics_source_set(m, 0, s, 1, s, s, 0, 0);
    t = s_text(m, 1);
    int shown = s_count_prefix(t, "floorpost_source_last_seq{");
    ASSERT(shown > 900 && shown <= FP_METRICS_SOURCES_MAX);
    free(t);
    fp_metrics_destroy(&m);
}

TEST(test_histograms)
{
    fp_metrics_t *m = fp_metrics_new(1, 1);
    fp_hist_local_t h = {{0}, 0, 0};
    fp_hist_observe(&h, FP_H_ROUND, 700000);      /* 0.7 ms: le 0.001 */
    fp_hist_observe(&h, FP_H_ROUND, 1000000);     /* exactly 1 ms: le 0.001 (le is <=) */
    fp_hist_observe(&h, FP_H_ROUND, 3000000);     /* 3 ms: le 0.005 */
    fp_hist_observe(&h, FP_H_ROUND, 20000000000); /* 20 s: +Inf only */
    fp_hist_observe(&h, FP_H_ROUND, -5);          /* clock step: counts as 0 */
    ASSERT_EQ(h.count, 5);
    fp_metrics_hist_merge(m, FP_H_ROUND, &h);
    ASSERT_EQ(h.count, 0); /* zeroed by the merge */
    fp_hist_observe(&h, FP_H_PUBLISH_DELAY, 7000000000); /* 7 s: le 10 */
    fp_metrics_hist_merge(m, FP_H_PUBLISH_DELAY, &h);
    char *t = s_text(m, 1);
    ASSERT_LINE(t, "# TYPE floorpost_round_seconds histogram");
    ASSERT_LINE(t, "floorpost_round_seconds_bucket{le=\"0.0005\"} 1");
    ASSERT_LINE(t, "floorpost_round_seconds_bucket{le=\"0.001\"} 3");
    ASSERT_LINE(t, "floorpost_round_seconds_bucket{le=\"0.0025\"} 3");
    ASSERT_LINE(t, "floorpost_round_seconds_bucket{le=\"0.005\"} 4");
    ASSERT_LINE(t, "floorpost_round_seconds_bucket{le=\"10\"} 4");
    ASSERT_LINE(t, "floorpost_round_seconds_bucket{le=\"+Inf\"} 5");
    ASSERT_LINE(t, "floorpost_round_seconds_sum 20.004700000");
    ASSERT_LINE(t, "floorpost_round_seconds_count 5");
    ASSERT_EQ(s_count_prefix(t, "floorpost_round_seconds_bucket{"), FP_HIST_BUCKETS + 1);
    ASSERT_LINE(t, "floorpost_publish_delay_seconds_bucket{le=\"5\"} 0");
    ASSERT_LINE(t, "floorpost_publish_delay_seconds_bucket{le=\"10\"} 1");
    ASSERT_LINE(t, "floorpost_publish_delay_seconds_count 1");
    ASSERT(strstr(t, "\nfloorpost_process_resident_memory_bytes "));
    ASSERT(!strstr(t, "floorpost_process_resident_memory_bytes 0\n")); /* /proc read */
    free(t);
    fp_metrics_destroy(&m);
}

TEST(test_health)
{
    const int64_t s = 1000000000, max = 5 * s;
    fp_metrics_t *m = fp_metrics_new(1, 2);
    char why[128];
    ASSERT_EQ(fp_metrics_health(m, 100 * s, max, why, sizeof why), -1);
    ASSERT_STREQ(why, "stage ingest not running");
    fp_stage_kind_t kinds[] = {FP_STAGE_INGEST, FP_STAGE_WORKER, FP_STAGE_SHARD, FP_STAGE_SHARD,
                               FP_STAGE_EMIT};
    int idx[] = {0, 0, 0, 1, 0};
    for (int i = 0; i < 5; i++)
        fp_metrics_stage_beat(fp_metrics_stage(m, kinds[i], idx[i]), 100 * s);
    ASSERT_EQ(fp_metrics_health(m, 101 * s, max, why, sizeof why), -1);
    ASSERT_STREQ(why, "no round completed yet");
    fp_metrics_round_done(m, 100 * s);
    ASSERT_EQ(fp_metrics_health(m, 101 * s, max, why, sizeof why), 0);
    ASSERT_STREQ(why, "ok");
    /* A stage that stops beating. */
    for (int i = 0; i < 5; i++)
        if (i != 3)
            fp_metrics_stage_beat(fp_metrics_stage(m, kinds[i], idx[i]), 106 * s);
    fp_metrics_round_done(m, 106 * s);
    ASSERT_EQ(fp_metrics_health(m, 106 * s, max, why, sizeof why), -1);
    ASSERT_STREQ(why, "stage shard-1 stalled for 6.000 s");
    fp_metrics_stage_beat(fp_metrics_stage(m, FP_STAGE_SHARD, 1), 106 * s);
    ASSERT_EQ(fp_metrics_health(m, 106 * s, max, why, sizeof why), 0);
    /* Rounds stop completing. */
    for (int i = 0; i < 5; i++)
        fp_metrics_stage_beat(fp_metrics_stage(m, kinds[i], idx[i]), 112 * s);
    ASSERT_EQ(fp_metrics_health(m, 112 * s, max, why, sizeof why), -1);
    ASSERT_STREQ(why, "last round committed 6.000 s ago");
    /* A stage that exited (drain). */
    fp_metrics_round_done(m, 112 * s);
    fp_metrics_stage_exit(fp_metrics_stage(m, FP_STAGE_EMIT, 0));
    ASSERT_EQ(fp_metrics_health(m, 112 * s, max, why, sizeof why), -1);
    ASSERT_STREQ(why, "stage emit not running");
    fp_metrics_destroy(&m);
}

TEST(test_readers_and_outbox)
{
    fp_metrics_t *m = fp_metrics_new(1, 1);
    char *t = s_text(m, 1);
    ASSERT(strstr(t, "floorpost_reader_lag_events{") == NULL); /* none yet */
    free(t);
    fp_metrics_set_reader(m, "erp-a", 100, 25, 0);
    fp_metrics_set_reader(m, "file.b", 7, 118, 0);
    fp_metrics_set_reader(m, "erp-a", 120, 5, 0); /* the same slot again */
    fp_metrics_set_reader(m, "file.b", 7, 0, 1);
    fp_metrics_set_outbox(m, 4096, 1 << 20);
    t = s_text(m, 1);
    ASSERT(s_has_line(t, "floorpost_reader_lag_events{reader=\"erp-a\"} 5"));
    ASSERT(s_has_line(t, "floorpost_reader_position{reader=\"erp-a\"} 120"));
    ASSERT(s_has_line(t, "floorpost_reader_detached{reader=\"erp-a\"} 0"));
    ASSERT(s_has_line(t, "floorpost_reader_detached{reader=\"file.b\"} 1"));
    ASSERT(s_has_line(t, "floorpost_outbox_bytes 4096"));
    ASSERT(s_has_line(t, "floorpost_state_map_bytes 1048576"));
    /* one line per reader and gauge: the repeat took no second slot */
    const char *p = t;
    int n = 0;
    while ((p = strstr(p, "floorpost_reader_position{")) != NULL) {
        n++;
        p++;
    }
    ASSERT_EQ(n, 2);
    free(t);
    fp_metrics_destroy(&m);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_bad_sizes);
    RUN(test_counters);
    RUN(test_readers_and_outbox);
    RUN(test_stages);
    RUN(test_shards_and_sources);
    RUN(test_histograms);
    RUN(test_health);
    return test_done();
}
