/*  main.c - the floorpost command: usage and dispatch to the verbs
    (cmd_run.c, cmd_clients.c, deadletters.c).

      floorpost run [-c FILE] [--check]
      floorpost send [--push] [--batch N] [--flush-ms MS] [--timeout MS] [--resend-ms N] [CURVE] ENDPOINT FILE|-
      floorpost tail [--count N] [--timeout MS] [--human] [--replay EP [--from N]] [CURVE] ENDPOINT [TOPIC]
      floorpost keygen [[-o] BASENAME]
      floorpost deadletters [-c FILE] list|resubmit|delete ...   (src/cli/deadletters.h)
      floorpost sinks [-c FILE] status|detach|attach ...         (cmd_sinks.c)
      floorpost state verify [-c FILE | --state DIR]             (cmd_state.c)
      CURVE = --server-key FILE --key FILE

    Exit codes: 0 ok; 1 runtime failure (bind error, drain timeout, records
    refused or dead-lettered); 2 usage or configuration error (also a number
    option that is not a decimal in its range, fp_cli_number); 3 tail:
    authentication refused.
*/
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "deadletters.h"

/* jemalloc reads its options from this symbol at start-up (MALLOC_CONF in
   the environment still overrides it; the ASan build has no jemalloc and
   ignores it). lg_extent_max_active_fit:10 lets a request be cut from a
   free extent up to 2^10 times its size instead of 2^6. libzmq allocates
   every received telemetry frame (about 16 KiB at 256 records: one of
   jemalloc's "large" sizes) in its I/O thread and the workers free them;
   with the default, freed extents coalesced past the limit and new frames
   took fresh pages: about 20,000 page faults in the I/O thread per 5 M
   records and 45 MiB more peak RSS in the max-throughput benchmark
   (1,600 faults and 110 MiB with it). */
const char *malloc_conf = "lg_extent_max_active_fit:10";


static const char s_usage[] =
            "  floorpost run [-c FILE] [--check]\n"
            "      run the service; without -c, the embedded demo plant feeds it and\n"
            "      the published checkpoints are printed. --check validates and exits.\n"
            "  floorpost send [--push] [--batch N] [--flush-ms MS] [--timeout MS] [--resend-ms N]\n"
            "                 [--progress S] [--quiet] ENDPOINT FILE|-\n"
            "      send telemetry from a JSON Lines file as binary batches via the ROUTER\n"
            "      endpoint, one open batch per source, each sent when full (--batch,\n"
            "      default 256) or open --flush-ms (default 200; 0: only when full), kept\n"
            "      until floorpost acks it as durable and resent every --resend-ms (default\n"
            "      2000) and after a reconnect; a batch floorpost refuses is reported,\n"
            "      counted and dropped. Exits 0 only when every record is acked and none\n"
            "      refused or dead-lettered by floorpost (the Acks count those), else 1.\n"
            "      --timeout (default 10000): longest wait without room in the buffer, and\n"
            "      for the last acks. --progress S: a progress line on stderr every S\n"
            "      seconds (default 5; 0: none); --quiet: none. --push: the PULL endpoint,\n"
            "      fire and forget\n"
            "  floorpost tail [--count N] [--timeout MS] [--human] [--replay EP [--from N]]\n"
            "                 ENDPOINT [TOPIC]\n"
            "      subscribe to a feed (publish, or deadletter) and print each event or\n"
            "      dead letter as one JSON line (--human: readable lines); TOPIC: a topic\n"
            "      prefix. Gaps (stream_seq per topic, global_seq, the feed's heartbeat)\n"
            "      go to stderr. --replay: floorpost's replay endpoint (e.g.\n"
            "      tcp://HOST:5572); gaps are filled from it, in order, and what it no\n"
            "      longer keeps is reported; --from N first replays from global_seq N\n"
            "      (catch-up after a restart), then continues live without duplicates.\n"
            "      Stops after --count N events or --timeout MS without one (a heartbeat\n"
            "      is none). Exit 3: floorpost refused the CURVE key\n"
            "  send and tail take --server-key FILE --key FILE for a CURVE endpoint:\n"
            "      the server's .pub (or .key) file and this client's .key file\n"
            "  floorpost keygen [[-o] BASENAME]\n"
            "      make a CURVE key pair: BASENAME.key (secret, mode 0600) and\n"
            "      BASENAME.pub; without BASENAME, print both keys\n"
            "  floorpost deadletters [-c FILE] list [--from N] [--json]\n"
            "  floorpost deadletters [-c FILE] resubmit --source ID [--to ENDPOINT] [--delete]\n"
            "                        [--timeout MS] [--server-key FILE --key FILE] (DL_SEQ ...|--all)\n"
            "  floorpost deadletters [-c FILE] delete DL_SEQ ...\n"
            "      the dead letters kept in the config's state_dir (also while floorpost\n"
            "      runs; without -c: the built-in defaults). resubmit sends batch payloads\n"
            "      again, re-sequenced under source ID with a new epoch, to the ingest\n"
            "      ROUTER (default: the config's ingest_router); --delete deletes each one\n"
            "      that was acked. Frame-level ones (not a valid batch) are skipped\n"
            "  floorpost sinks [-c FILE] status [--json]\n"
            "  floorpost sinks [-c FILE] detach|attach NAME\n"
            "      the ERP sinks ([sink NAME] sections, docs/sinks.md): state, position,\n"
            "      lag, counters and last error of each (from the running instance's\n"
            "      metrics endpoint, else the positions in state_dir); exit 1 when one is\n"
            "      failing or detached. detach: retention stops waiting for it (loud)\n"
            "  floorpost state verify [-c FILE | --state DIR] [--quiet]\n"
            "      walk a state file (the config's state_dir, or DIR: a copy, a backup) as\n"
            "      floorpost does before every start: every table, every value's checksum,\n"
            "      the digests, the tree and the free pages; prints what it checked and the\n"
            "      first damage. Exit 0 clean, 1 damaged, 2 cannot check\n";

void fp_cli_usage(FILE *f)
{
    fprintf(f, "floorpost " FP_VERSION " - shop-floor telemetry in, ERP checkpoints out\n\n"
               "usage:\n%s", s_usage);
}

/* `floorpost VERB --help`: the usage lines of VERB only (its block of
   s_usage, up to the next verb's). false when there is no such verb. */
static bool s_verb_usage(FILE *f, const char *verb)
{
    char head[64];
    snprintf(head, sizeof head, "  floorpost %s", verb);
    size_t hl = strlen(head);
    bool in = false, any = false;
    for (const char *p = s_usage; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        bool verb_line = len > 12 && strncmp(p, "  floorpost ", 12) == 0;
        bool shared = len > 4 && strncmp(p, "  send and tail", 15) == 0;
        if (verb_line)
            in = len >= hl && strncmp(p, head, hl) == 0 && (len == hl || p[hl] == ' ');
        else if (shared)
            in = strcmp(verb, "send") == 0 || strcmp(verb, "tail") == 0;
        if (in) {
            fprintf(f, "%.*s\n", (int)len, p);
            any = true;
        }
        p += len + (nl ? 1 : 0);
    }
    return any;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fp_cli_usage(stderr);
        return 2;
    }
    if (argc >= 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) &&
        s_verb_usage(stdout, argv[1]))
        return 0;
    if (strcmp(argv[1], "run") == 0)
        return fp_cmd_run(argc - 2, argv + 2);
    if (strcmp(argv[1], "send") == 0)
        return fp_cmd_send(argc - 2, argv + 2);
    if (strcmp(argv[1], "tail") == 0)
        return fp_cmd_tail(argc - 2, argv + 2);
    if (strcmp(argv[1], "keygen") == 0)
        return fp_cmd_keygen(argc - 2, argv + 2);
    if (strcmp(argv[1], "deadletters") == 0)
        return fp_deadletters_main(argc - 2, argv + 2);
    if (strcmp(argv[1], "sinks") == 0)
        return fp_cmd_sinks(argc - 2, argv + 2);
    if (strcmp(argv[1], "state") == 0)
        return fp_cmd_state(argc - 2, argv + 2);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("floorpost " FP_VERSION "\n");
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        fp_cli_usage(stdout);
        return 0;
    }
    fprintf(stderr, "floorpost: unknown command '%s'\n", argv[1]);
    fp_cli_usage(stderr);
    return 2;
}
