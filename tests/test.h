/*  test.h - a tiny assertion kit and case runner for floorpost's unit tests.

    Each tests/test_<module>.c is its own program; libuv's test/runner.c is
    the model. main() is

        int main(int argc, char **argv)
        {
            test_init(argc, argv);
            RUN(test_a);
            RUN(test_b);
            return test_done();
        }

    RUN forks a child per case: the child sends its stdout and stderr to a
    temporary file, arms alarm(FP_TEST_TIMEOUT seconds, default 120) and runs
    the case; ASSERT_* print both sides and the place, then abort. The parent
    waits and prints `ok   prog:case` or `FAIL prog:case (how)` followed by
    the last 60 lines of the child's output, so a failing case hides no
    later case. test_done() prints the machine-readable line that
    tools/run-tests.sh reads,

        cases: prog passed=N failed=N

    and returns 1 if any case failed, 0 otherwise.

    Command line: `prog` runs every case, `prog CASE...` only those (exit 2
    if a name is unknown), `prog --list` prints the names, `prog --no-fork
    CASE` runs in this process (for gdb; the first failure aborts).

    Invariant: a case must not depend on what an earlier case left in memory
    (each child starts from main()'s state before the first RUN) nor on
    files an earlier case made. Code in main() before the first RUN runs
    once, in the parent, and every child inherits it.

    Leaks: the child ends with exit(), so under ASan LeakSanitizer checks
    each case on its own and a leak fails that case (exit status 1; the
    FAIL line names LeakSanitizer when the case's output has its report).
    The parent runs no case and holds only what main() set up.
*/
#ifndef FP_TEST_H
#define FP_TEST_H

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ASSERT(c)                                                                \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "%s:%d: ASSERT(%s) failed\n", __FILE__, __LINE__, #c); \
            abort();                                                             \
        }                                                                        \
    } while (0)

#define ASSERT_EQ(a, b)                                                                  \
    do {                                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);                              \
        if (a_ != b_) {                                                                  \
            fprintf(stderr, "%s:%d: ASSERT_EQ(%s, %s): %lld != %lld\n", __FILE__, __LINE__, \
                    #a, #b, a_, b_);                                                     \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define ASSERT_STREQ(a, b)                                                               \
    do {                                                                                 \
        const char *a_ = (a), *b_ = (b);                                                 \
        if (strcmp(a_, b_) != 0) {                                                       \
            fprintf(stderr, "%s:%d: ASSERT_STREQ(%s, %s): \"%s\" != \"%s\"\n", __FILE__,   \
                    __LINE__, #a, #b, a_, b_);                                           \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define TEST(name) static void name(void)
#define RUN(name) test_run(#name, name)

/* The runner's state: one per test program, touched only by the parent
   between cases (a child only reads it). */
typedef struct {
    const char *prog;    /* basename of argv[0] */
    char **only;         /* case names from the command line, NULL-ended, or NULL: all */
    int only_n;          /* entries in only */
    unsigned char *seen; /* seen[i]: only[i] named a case that RUN reached */
    int list;            /* --list: print names, run nothing */
    int nofork;          /* --no-fork: run in this process */
    unsigned timeout_s;  /* per case (alarm), from FP_TEST_TIMEOUT */
    int passed, failed;  /* cases */
} test_state_t;

static test_state_t test_state_;

/* Parses the command line; call first in main(). */
static inline void test_init(int argc, char **argv)
{
    test_state_t *t = &test_state_;
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a log or pipe before an abort */
    const char *slash = strrchr(argv[0], '/');
    t->prog = slash ? slash + 1 : argv[0];
    t->timeout_s = 120;
    const char *env = getenv("FP_TEST_TIMEOUT");
    if (env && atoi(env) > 0)
        t->timeout_s = (unsigned)atoi(env);
    t->only = calloc((size_t)argc, sizeof *t->only);
    t->seen = calloc((size_t)argc, 1);
    ASSERT(t->only && t->seen);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0)
            t->list = 1;
        else if (strcmp(argv[i], "--no-fork") == 0)
            t->nofork = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--list] [--no-fork] [CASE...]\n", t->prog);
            exit(2);
        } else
            t->only[t->only_n++] = argv[i];
    }
}

/* Copies the last FP_TEST_TAIL_LINES lines of the captured output f to
   stdout, each line indented (a chatty case's start is not what explains
   its failure; --no-fork shows all of it). */
#define FP_TEST_TAIL_LINES 60
static inline void test_dump_(FILE *f)
{
    char line[4096];
    long total = 0;
    rewind(f);
    while (fgets(line, sizeof line, f))
        total += strchr(line, '\n') != NULL || feof(f);
    long skip = total > FP_TEST_TAIL_LINES ? total - FP_TEST_TAIL_LINES : 0;
    if (skip > 0)
        printf("    [... %ld earlier lines]\n", skip);
    rewind(f);
    long at = 0;
    while (fgets(line, sizeof line, f)) {
        int end = strchr(line, '\n') != NULL;
        if (at >= skip)
            printf("    %s%s", line, end ? "" : "\n");
        at += end || feof(f);
    }
}

/* ", <sanitizer>" when the captured output f has a sanitizer's report
   (they exit with status 1 like any failing program), else "". */
static inline const char *test_sanitizer_(FILE *f)
{
    static const char *const which[][2] = {
        {"ERROR: LeakSanitizer", ", LeakSanitizer"},
        {"ERROR: AddressSanitizer", ", AddressSanitizer"},
        {": runtime error: ", ", UndefinedBehaviorSanitizer"},
    };
    char line[4096];
    const char *found = "";
    rewind(f);
    while (!*found && fgets(line, sizeof line, f))
        for (size_t i = 0; i < sizeof which / sizeof which[0]; i++)
            if (strstr(line, which[i][0])) {
                found = which[i][1];
                break;
            }
    return found;
}

/* Runs one case (via RUN): forked and timed, or in process with --no-fork. */
static inline void test_run(const char *name, void (*fn)(void))
{
    test_state_t *t = &test_state_;
    if (t->only_n > 0) {
        int hit = 0;
        for (int i = 0; i < t->only_n; i++)
            if (strcmp(t->only[i], name) == 0)
                hit = t->seen[i] = 1;
        if (!hit)
            return;
    }
    if (t->list) {
        printf("%s\n", name);
        return;
    }
    if (t->nofork) {
        fn();
        t->passed++;
        printf("ok   %s:%s\n", t->prog, name);
        return;
    }
    FILE *out = tmpfile(); /* not a pipe: a chatty child never blocks */
    ASSERT(out);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(fileno(out), STDOUT_FILENO);
        dup2(fileno(out), STDERR_FILENO);
        setvbuf(stdout, NULL, _IONBF, 0);
        signal(SIGALRM, SIG_DFL);
        alarm(t->timeout_s);
        fn();
        alarm(0);
        exit(0); /* exit, not _exit: atexit work and LeakSanitizer run */
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        ASSERT(errno == EINTR);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        t->passed++;
        printf("ok   %s:%s\n", t->prog, name);
    } else {
        t->failed++;
        char how[96];
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
            snprintf(how, sizeof how, "timed out after %u s", t->timeout_s);
        else if (WIFSIGNALED(st))
            snprintf(how, sizeof how, "signal %d, %s", WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
            snprintf(how, sizeof how, "exit status %d%s", WEXITSTATUS(st), test_sanitizer_(out));
        printf("FAIL %s:%s (%s)\n", t->prog, name, how);
        test_dump_(out);
    }
    fflush(stdout);
    fclose(out);
}

/* Prints the summary line; returns main's exit status (1 if any case
   failed, 2 if a case named on the command line does not exist). */
static inline int test_done(void)
{
    test_state_t *t = &test_state_;
    int rc = t->failed > 0;
    for (int i = 0; i < t->only_n; i++)
        if (!t->seen[i]) {
            fprintf(stderr, "%s: no case named %s (try --list)\n", t->prog, t->only[i]);
            rc = 2;
        }
    if (!t->list)
        printf("cases: %s passed=%d failed=%d\n", t->prog, t->passed, t->failed);
    free(t->only);
    free(t->seen);
    t->only = NULL;
    t->seen = NULL;
    return rc;
}

#endif
