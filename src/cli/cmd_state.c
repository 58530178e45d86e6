/*  cmd_state.c - `floorpost state verify`: the full walk of a state file
    (src/store/verify.h), for operators and backups.

      floorpost state verify [-c FILE | --state DIR] [--quiet]

    Walks DIR/data.mdb (the config's state_dir, or DIR: a copy, a backup)
    in a child process, as floorpost does before every start, prints what
    it checked and the first damage found. Exit 0 clean, 1 damaged, 2
    cannot check (usage, no file). Beside a running floorpost it walks the
    last committed snapshot (an LMDB read txn); a read-only copy is walked
    without LMDB's lock.
*/
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "store.h"
#include "verify.h"

#define S_ME "floorpost state"

static int s_verify(int argc, char **argv)
{
    const char *file = NULL, *dir = NULL;
    bool quiet = false;
    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            file = argv[++i];
        else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--quiet") == 0)
            quiet = true;
        else {
            fprintf(stderr, "%s verify: unknown argument %s\n", S_ME, argv[i]);
            return 2;
        }
    }
    if (file && dir) {
        fprintf(stderr, "%s verify: -c FILE or --state DIR, not both\n", S_ME);
        return 2;
    }
    fp_config_t cfg;
    if (!dir) {
        char err[1024];
        fp_config_defaults(&cfg);
        if (file && fp_config_load(&cfg, file, err, sizeof err) != 0) {
            fprintf(stderr, "%s verify: %s\n", S_ME, err);
            return 2;
        }
        fp_config_resolve(&cfg);
        if (!cfg.state_dir[0]) {
            fprintf(stderr, "%s verify: durability is off in %s (state_dir = \"\"): no state\n",
                    S_ME, file ? file : "the built-in defaults");
            return 2;
        }
        dir = cfg.state_dir;
    }
    fp_store_verify_t r;
    int rc = fp_store_verify(dir, true, &r);
    if (rc != 0 && rc != FP_STORE_CORRUPT) {
        fprintf(stderr, "%s verify: %s/data.mdb: cannot check: %s\n", S_ME, dir, r.problem);
        return 2;
    }
    if (!quiet || rc != 0) {
        FILE *o = rc == 0 ? stdout : stderr;
        fprintf(o, "%s/data.mdb: format version %u%s, LMDB txn %llu, %llu pages of %llu bytes "
                   "(%llu free)%s\n",
                dir, r.version, r.sums ? " (checksummed values)" : " (values without checksums)",
                (unsigned long long)r.txnid, (unsigned long long)r.pages,
                (unsigned long long)r.psize, (unsigned long long)r.free_pages,
                r.nolock ? ", read without LMDB's lock" : "");
        fprintf(o, "  last round %llu, global_seq %llu; %llu checksums, %llu bytes read\n",
                (unsigned long long)r.round, (unsigned long long)r.global_seq,
                (unsigned long long)r.values, (unsigned long long)r.bytes);
        for (int i = 0; i < FP_STORE_VERIFY_TABLES; i++)
            if (r.present[i])
                fprintf(o, "  table %-12s %llu entries%s\n", fp_store_verify_table(i),
                        (unsigned long long)r.entries[i],
                        rc == 0 && r.sums ? ", digest ok" : "");
    }
    if (rc != 0) {
        fprintf(stderr, "%s verify: %s/data.mdb: DAMAGED: %s\n", S_ME, dir, r.problem);
        return 1;
    }
    if (!quiet)
        printf("%s/data.mdb: ok%s\n", dir,
               r.sums ? "" : " (the tree; its values carry no checksums before format 5: "
                             "start floorpost once to upgrade it)");
    return 0;
}

int fp_cmd_state(int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "verify") == 0)
        return s_verify(argc - 1, argv + 1);
    fprintf(stderr, "%s: expected verify\n", S_ME);
    return 2;
}
