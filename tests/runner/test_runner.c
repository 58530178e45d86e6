/*  test_runner.c - the case runner in test.h and tools/run-tests.sh.

    The cases run this same binary under other names (symlinks in a temp
    directory); the name picks a demo program with deliberately failing
    cases, so no failing case is ever part of `make test`:

      demo_cases  passes, asserts, prints 100 lines and asserts, exits 3, hangs (per-case timeout), passes
      demo_crash  passes one case, then aborts outside any case
      demo_hang   hangs in main() before its first case (binary timeout)
      demo_leak   a case that keeps main()'s fixture (passes), one that
                  leaks (fails under LeakSanitizer only)
*/
#include <sys/stat.h>

#include "test.h"

/* ---- the demo programs ---- */

TEST(demo_first)
{
    printf("first ran\n");
}

TEST(demo_assert)
{
    printf("assert case says hello\n");
    ASSERT_EQ(1 + 1, 3);
}

TEST(demo_chatty)
{
    for (int i = 1; i <= 100; i++)
        printf("chatty line %d\n", i);
    ASSERT(0);
}

TEST(demo_exit)
{
    _exit(3);
}

TEST(demo_timeout)
{
    printf("before the hang\n");
    for (;;)
        pause();
}

TEST(demo_last)
{
    printf("last ran\n");
}

/* demo_leak's fixture, made in main() before the first RUN: reachable in
   every child, so LeakSanitizer must not blame a case for it */
static char *s_fixture;

TEST(demo_uses_fixture)
{
    ASSERT_STREQ(s_fixture, "fixture");
    char *p = malloc(64); /* freed: no leak */
    ASSERT(p);
    free(p);
}

TEST(demo_leaks)
{
    char *p = malloc(4096);
    ASSERT(p);
    memset(p, 1, 4096);
    p = NULL; /* the only pointer gone: a leak */
}

static int s_demo(const char *prog)
{
    if (strcmp(prog, "demo_leak") == 0) {
        s_fixture = strdup("fixture");
        ASSERT(s_fixture);
        RUN(demo_uses_fixture);
        RUN(demo_leaks);
        return test_done();
    }
    if (strcmp(prog, "demo_hang") == 0)
        for (;;)
            pause();
    if (strcmp(prog, "demo_crash") == 0) {
        RUN(demo_first);
        abort();
    }
    RUN(demo_first);
    RUN(demo_assert);
    RUN(demo_chatty);
    RUN(demo_exit);
    RUN(demo_timeout);
    RUN(demo_last);
    return test_done();
}

/* ---- helpers for the real cases ---- */

static char s_dir[64];

/* A temp dir with symlinks demo_cases, demo_crash, demo_hang, demo_leak to
   this binary. */
static void s_links(void)
{
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT(n > 0);
    self[n] = '\0';
    strcpy(s_dir, "/tmp/fp-test-runner-XXXXXX");
    ASSERT(mkdtemp(s_dir));
    const char *names[] = {"demo_cases", "demo_crash", "demo_hang", "demo_leak"};
    for (int i = 0; i < 4; i++) {
        char link[128];
        snprintf(link, sizeof link, "%s/%s", s_dir, names[i]);
        ASSERT_EQ(symlink(self, link), 0);
    }
}

static void s_unlinks(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    ASSERT_EQ(system(cmd), 0);
}

/* Runs the shell command cmd; returns its output (caller frees), *status
   its exit status (-1 if it died by a signal). */
static char *s_output(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    ASSERT(p);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ASSERT(buf);
    size_t got;
    while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
        len += got;
        ASSERT(len < cap - 1);
    }
    buf[len] = '\0';
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static void s_has(const char *text, const char *want)
{
    if (!strstr(text, want)) {
        fprintf(stderr, "output lacks \"%s\":\n%s\n", want, text);
        ASSERT(0);
    }
}

static void s_lacks(const char *text, const char *unwanted)
{
    if (strstr(text, unwanted)) {
        fprintf(stderr, "output has \"%s\":\n%s\n", unwanted, text);
        ASSERT(0);
    }
}

/* ---- the real cases ---- */

/* A case failing in the middle is reported with its output and how it
   ended, and the cases after it still run and count. */
TEST(test_failing_case_hides_nothing)
{
    s_links();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "FP_TEST_TIMEOUT=1 %s/demo_cases", s_dir);
    int st;
    char *out = s_output(cmd, &st);
    ASSERT_EQ(st, 1);
    s_has(out, "ok   demo_cases:demo_first\n");
    s_has(out, "FAIL demo_cases:demo_assert (signal 6, Aborted)\n"
               "    assert case says hello\n");
    s_has(out, "ASSERT_EQ(1 + 1, 3): 2 != 3\n");
    /* only the tail of a chatty case's output: 101 lines, the last 60 */
    s_has(out, "FAIL demo_cases:demo_chatty (signal 6, Aborted)\n"
               "    [... 41 earlier lines]\n"
               "    chatty line 42\n");
    s_has(out, "    chatty line 100\n");
    s_lacks(out, "chatty line 41\n");
    s_has(out, "FAIL demo_cases:demo_exit (exit status 3)\n");
    s_has(out, "FAIL demo_cases:demo_timeout (timed out after 1 s)\n"
               "    before the hang\n");
    s_has(out, "ok   demo_cases:demo_last\n");
    s_lacks(out, "first ran"); /* a passing case's output stays quiet */
    s_has(out, "cases: demo_cases passed=2 failed=4\n");
    /* in that order */
    ASSERT(strstr(out, "demo_first") < strstr(out, "demo_assert"));
    ASSERT(strstr(out, "demo_timeout") < strstr(out, "demo_last"));
    free(out);
    s_unlinks();
}

/* `prog CASE` runs just that case, `--list` names them, an unknown name
   is an error. */
TEST(test_one_case_and_list)
{
    s_links();
    char cmd[256];
    int st;
    snprintf(cmd, sizeof cmd, "%s/demo_cases demo_last", s_dir);
    char *out = s_output(cmd, &st);
    ASSERT_EQ(st, 0);
    ASSERT_STREQ(out, "ok   demo_cases:demo_last\ncases: demo_cases passed=1 failed=0\n");
    free(out);

    snprintf(cmd, sizeof cmd, "%s/demo_cases --list", s_dir);
    out = s_output(cmd, &st);
    ASSERT_EQ(st, 0);
    ASSERT_STREQ(out, "demo_first\ndemo_assert\ndemo_chatty\ndemo_exit\ndemo_timeout\ndemo_last\n");
    free(out);

    snprintf(cmd, sizeof cmd, "%s/demo_cases demo_nope 2>&1", s_dir);
    out = s_output(cmd, &st);
    ASSERT_EQ(st, 2);
    s_has(out, "no case named demo_nope");
    free(out);

    /* --no-fork: in process, the first failure ends the program */
    snprintf(cmd, sizeof cmd, "%s/demo_cases --no-fork demo_first demo_assert 2>&1", s_dir);
    out = s_output(cmd, &st);
    ASSERT(st != 0);
    s_has(out, "first ran\nok   demo_cases:demo_first\n");
    s_has(out, "ASSERT_EQ(1 + 1, 3)");
    s_lacks(out, "cases: demo_cases passed=");
    free(out);
    s_unlinks();
}

/* tools/run-tests.sh sums cases over binaries, counts a crash outside any
   case and a binary timeout as one failure each, and writes the tally. */
TEST(test_run_tests_sh_sums_cases)
{
    ASSERT_EQ(access("tools/run-tests.sh", R_OK), 0); /* run from the repository root */
    s_links();
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "FP_TALLY=%s/tally FP_TEST_TIMEOUT=1 FP_TEST_BINARY_TIMEOUT=3 "
             "sh tools/run-tests.sh %s/demo_cases %s/demo_crash %s/demo_hang",
             s_dir, s_dir, s_dir, s_dir);
    int st;
    char *out = s_output(cmd, &st);
    ASSERT_EQ(st, 1);
    s_has(out, "ok   demo_cases:demo_last\n");
    s_has(out, "ok   demo_crash:demo_first\n");
    s_has(out, "FAIL demo_crash:(binary) (exit status 134, outside any case)\n");
    s_has(out, "FAIL demo_hang:(binary) (timed out after 3 s, outside any case)\n");
    s_has(out, "failed in: demo_cases demo_crash demo_hang\n");
    /* 2 + 1 + 0 passed; 4 + 1 + 1 failed */
    s_has(out, "unit: 3 passed, 6 failed\n");
    free(out);
    char path[128];
    snprintf(path, sizeof path, "%s/tally", s_dir);
    FILE *f = fopen(path, "r");
    ASSERT(f);
    char line[64] = "";
    ASSERT(fgets(line, sizeof line, f));
    fclose(f);
    ASSERT_STREQ(line, "3 6\n");
    s_unlinks();
}

/* Under ASan, LeakSanitizer checks each case's child on its own: a case
   that leaks fails (exit status 1, named LeakSanitizer) and only that case; main()'s fixture,
   inherited by every child, is no leak. Without ASan both pass. */
TEST(test_leak_check_per_case)
{
    s_links();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s/demo_leak", s_dir);
    int st;
    char *out = s_output(cmd, &st);
    s_has(out, "ok   demo_leak:demo_uses_fixture\n");
#if defined(__SANITIZE_ADDRESS__)
    ASSERT_EQ(st, 1);
    s_has(out, "FAIL demo_leak:demo_leaks (exit status 1, LeakSanitizer)\n");
    s_has(out, "4096 byte(s) leaked");
    s_has(out, "cases: demo_leak passed=1 failed=1\n");
#else
    ASSERT_EQ(st, 0);
    s_has(out, "ok   demo_leak:demo_leaks\n");
    s_has(out, "cases: demo_leak passed=2 failed=0\n");
#endif
    free(out);
    s_unlinks();
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    if (strncmp(test_state_.prog, "demo_", 5) == 0)
        return s_demo(test_state_.prog);
    RUN(test_failing_case_hides_nothing);
    RUN(test_one_case_and_list);
    RUN(test_run_tests_sh_sums_cases);
    RUN(test_leak_check_per_case);
    return test_done();
}
