/*  test_log.c - logfmt lines, the per-component rate limit, quoting. */
#include <fcntl.h>
#include <unistd.h>

#include "log.h"
#include "test.h"

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

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_format);
    RUN(test_rate_limit);
    RUN(test_quote);
    return test_done();
}
