/*  test_sink_pg.c - the PostgreSQL sink's options as `run --check` sees
    them (conninfo's syntax by libpq, schema, timeouts, verdict_poll_ms),
    and the resubmission's refusals before any connection. The database
    side runs against a real PostgreSQL in tests/e2e/t_pg.py. */
#include "config.h"
#include "sink_pg.h"
#include "sinks.h"
#include "test.h"

#include <stdio.h>
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

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_options_accepted);
    RUN(test_options_refused_with_line);
    RUN(test_conninfo_not_repeated);
    RUN(test_resubmit_refusals);
    return test_done();
}
