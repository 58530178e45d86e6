/*  test_log.c - logfmt lines, the per-component rate limit, quoting. */
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "test.h"
#include "utf8.h"

/* Runs fn with stderr sent to a temp file; returns the file's text (caller frees). */
static char *s_capture(void (*fn)(void))
{
    char path[] = "/tmp/fp-test-log-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)n + 1);
    ASSERT(text);
    ASSERT_EQ(pread(fd, text, (size_t)n, 0), n);
    close(fd);
    unlink(path);
    return text;
}

static int s_count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void s_one_line(void)
{
    fp_log(FP_LOG_WARN, "tester", "a \"quoted\" msg", "k=%d", 7);
    fp_log(FP_LOG_DEBUG, "tester", "below the level", NULL);
}

TEST(test_format)
{
    char *t = s_capture(s_one_line);
    ASSERT(strncmp(t, "ts=", 3) == 0);
    ASSERT(strstr(t, "Z level=warn component=tester msg=\"a \\\"quoted\\\" msg\" k=7\n"));
    ASSERT_EQ(s_count(t, "\n"), 1);
    free(t);
}

static void s_flood(void)
{
    for (int i = 0; i < 500; i++)
        fp_log(FP_LOG_WARN, "flood", "bad frame", "i=%d", i);
    fp_log(FP_LOG_WARN, "other", "not limited by flood", NULL);
    fp_log_flush_suppressed();
}

TEST(test_rate_limit)
{
    char *t = s_capture(s_flood);
    int lines = s_count(t, "msg=\"bad frame\"");
    int suppressed = s_count(t, "msg=\"log lines suppressed (rate limit)\"");
    ASSERT(lines >= FP_LOG_RATE && lines <= 2 * FP_LOG_RATE); /* a second may tick over */
    ASSERT(suppressed >= 1 && suppressed <= 2);
    ASSERT_EQ(s_count(t, "component=other msg=\"not limited by flood\""), 1);
    /* Every line is either written or counted as suppressed. */
    int total = lines;
    for (const char *p = t; (p = strstr(p, "suppressed=")) != NULL; p++)
        total += atoi(p + strlen("suppressed="));
    ASSERT_EQ(total, 500);
    ASSERT(strstr(t, "level=warn component=flood msg=\"log lines suppressed (rate limit)\""));
    free(t);
}

TEST(test_quote)
{
    char buf[64];
    ASSERT_EQ(fp_log_quote(buf, sizeof buf, "O-1", 64), 5);
    ASSERT_STREQ(buf, "\"O-1\"");
    fp_log_quote(buf, sizeof buf, "a\"b\\c\nd", 64);
    ASSERT_STREQ(buf, "\"a\\\"b\\\\c\\u000ad\"");
    fp_log_quote(buf, sizeof buf, "abcdef", 3); /* maxlen */
    ASSERT_STREQ(buf, "\"abc\"");
    char small[6];
    fp_log_quote(small, sizeof small, "abcdef", 64); /* cut to fit, still quoted */
    ASSERT_STREQ(small, "\"abc\"");
    fp_log_quote(small, sizeof small, "\"\"\"", 64);
    ASSERT_STREQ(small, "\"\\\"\"");
}

/* The quoting loop reads no byte past maxlen: a buffer of exactly maxlen
   bytes without a NUL (ASan reports a heap-buffer-overflow otherwise). */
TEST(test_quote_reads_nothing_past_maxlen)
{
    char *raw = malloc(8);
    ASSERT(raw);
    memcpy(raw, "12345678", 8);
    char buf[64];
    ASSERT_EQ(fp_log_quote(buf, sizeof buf, raw, 8), 10);
    ASSERT_STREQ(buf, "\"12345678\"");
    /* ends inside a character: cut before it, the rest is not read */
    memcpy(raw, "123456\xE2\x82", 8);
    fp_log_quote(buf, sizeof buf, raw, 8);
    ASSERT_STREQ(buf, "\"123456\"");
    ASSERT_EQ(fp_log_quote_n(buf, sizeof buf, raw, 8, 64), 20);
    ASSERT_STREQ(buf, "\"123456\\ufffd\\ufffd\""); /* with its known end: invalid */
    free(raw);
}

TEST(test_quote_utf8)
{
    char buf[64];
    /* valid characters pass as they are */
    fp_log_quote(buf, sizeof buf, "Stra\xC3\x9F" "e", 64);
    ASSERT_STREQ(buf, "\"Stra\xC3\x9F" "e\"");
    /* invalid bytes: \ufffd, escaped */
    fp_log_quote(buf, sizeof buf, "P\xFF" "A\xC0\xAF", 64);
    ASSERT_STREQ(buf, "\"P\\ufffdA\\ufffd\\ufffd\"");
    /* cut at maxlen inside a character: the character is left out */
    fp_log_quote(buf, sizeof buf, "ab\xE2\x82\xAC" "c", 4);
    ASSERT_STREQ(buf, "\"ab\"");
    fp_log_quote(buf, sizeof buf, "ab\xE2\x82\xAC" "c", 5);
    ASSERT_STREQ(buf, "\"ab\xE2\x82\xAC\"");
    /* cut by cap inside a character or an escape: never half of one */
    char small[7];
    fp_log_quote(small, sizeof small, "abc\xE2\x82\xAC", 64);
    ASSERT_STREQ(small, "\"abc\"");
    fp_log_quote(small, sizeof small, "a\x01", 64);
    ASSERT_STREQ(small, "\"a\"");
    /* embedded NUL with an explicit length; DEL escaped */
    fp_log_quote_n(buf, sizeof buf, "P\0A\x7f", 4, 64);
    ASSERT_STREQ(buf, "\"P\\u0000A\\u007f\"");
    /* every output is valid UTF-8, whatever the bytes */
    unsigned x = 7;
    for (int round = 0; round < 2000; round++) {
        char junk[40];
        for (size_t i = 0; i < sizeof junk; i++) {
            x = x * 1103515245u + 12345u;
            junk[i] = (char)(x >> 16);
        }
        size_t n = fp_log_quote_n(buf, sizeof buf, junk, sizeof junk, (size_t)round % 41);
        ASSERT(n >= 2 && buf[0] == '"' && buf[n - 1] == '"');
        ASSERT(fp_utf8_valid(buf, n));
        ASSERT_EQ(strlen(buf), n);
    }
}

static void s_bad_bytes_line(void)
{
    fp_log(FP_LOG_WARN, "tester", "raw value", "v=%s next=1", "a\xFF\nb\xE2\x82");
}

/* A value formatted without quoting still gives one valid UTF-8 line. */
TEST(test_line_is_valid_utf8)
{
    char *t = s_capture(s_bad_bytes_line);
    ASSERT_EQ(s_count(t, "\n"), 1);
    ASSERT(fp_utf8_valid(t, strlen(t)));
    /* a bare value with a control byte is quoted (and escaped) now */
    ASSERT(strstr(t, "v=\"a\\ufffd\\u000ab\\ufffd\\ufffd\" next=1\n"));
    free(t);
}

static void s_values_line(void)
{
    char pre[64];
    fp_log_quote(pre, sizeof pre, "x y", 64);
    fp_log(FP_LOG_WARN, "tester", "values",
           "eq=%s sp=%s q=%s bs=%s empty=%s plain=%s n=%d u=%llu z=%zu pre=%s in=\"%s\" "
           "w=%5.2s star=%.*s pct=%%s %s",
           "a=b", "two words", "say \"hi\"", "c:\\d", "", "O-1", -7, 18446744073709551615ull,
           (size_t)42, pre, "in \"quotes\" \\", "abcdef", 3, "abcdef", "raw=1 fields=2");
}

/* Every value stays one logfmt pair: '=', blanks, quotes, backslashes
   and empty values are quoted; plain values, numbers, values quoted
   already and a trailing field list are left alone. */
TEST(test_values_quoted)
{
    char *t = s_capture(s_values_line);
    ASSERT_EQ(s_count(t, "\n"), 1);
    ASSERT(strstr(t, " eq=\"a=b\" "));
    ASSERT(strstr(t, " sp=\"two words\" "));
    ASSERT(strstr(t, " q=\"say \\\"hi\\\"\" "));
    ASSERT(strstr(t, " bs=\"c:\\\\d\" "));
    ASSERT(strstr(t, " empty=\"\" "));
    ASSERT(strstr(t, " plain=O-1 n=-7 u=18446744073709551615 z=42 "));
    ASSERT(strstr(t, " pre=\"x y\" "));
    ASSERT(strstr(t, " in=\"in \\\"quotes\\\" \\\\\" "));
    ASSERT(strstr(t, " w=\"   ab\" "));
    ASSERT(strstr(t, " star=abc "));
    ASSERT(strstr(t, " pct=%s raw=1 fields=2\n"));
    free(t);
}

static void s_flood_then_tick(void)
{
    /* at the start of a second, so the flood stays in one */
    struct timespec ts;
    do {
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    } while (ts.tv_nsec > 300000000);
    for (int i = 0; i < 100; i++)
        fp_log(FP_LOG_WARN, "ticker", "flood", "i=%d", i);
    fp_log_tick(); /* the flood's second is not over: nothing yet */
    write(STDERR_FILENO, "--tick--\n", 9);
    struct timespec pause = {.tv_sec = 1, .tv_nsec = 100000000};
    nanosleep(&pause, NULL);
    fp_log_tick(); /* over: the report, without another line of the component */
}

/* The rate limit's report comes with the next tick after the flood's
   second, not only with the component's next line. */
TEST(test_tick_reports_suppressed)
{
    char *t = s_capture(s_flood_then_tick);
    const char *mark = strstr(t, "--tick--\n");
    ASSERT(mark);
    ASSERT(strstr(t, "msg=\"log lines suppressed (rate limit)\"") > mark);
    ASSERT(strstr(mark, "component=ticker msg=\"log lines suppressed (rate limit)\" suppressed=80 "));
    ASSERT_EQ(s_count(t, "msg=\"flood\""), FP_LOG_RATE);
    free(t);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_format);
    RUN(test_rate_limit);
    RUN(test_quote);
    RUN(test_quote_reads_nothing_past_maxlen);
    RUN(test_quote_utf8);
    RUN(test_line_is_valid_utf8);
    RUN(test_values_quoted);
    RUN(test_tick_reports_suppressed);
    return test_done();
}
