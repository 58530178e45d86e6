/*  deadletters.h - `floorpost deadletters`: list, resubmit and delete the
    dead letters kept in the state directory (store.h), while floorpost runs
    or after it stopped.

      floorpost deadletters [-c FILE] list [--from N] [--json]
      floorpost deadletters [-c FILE] resubmit [--source ID] [--to ENDPOINT] [--delete]
                            [--timeout MS] [--server-key FILE --key FILE] (DL_SEQ ...|--all)
      floorpost deadletters [-c FILE] delete DL_SEQ ...

    Without -c: the built-in defaults (state_dir /var/lib/floorpost,
    instance and map size as in configs/floorpost.ini), not the embedded
    demo config, which keeps no state.

    The state is opened with fp_store_open_tool: no directory lock (a running
    floorpost holds it), LMDB's own locking for the writes (deletes).

    RESUBMIT. A dead letter whose payload verifies as a telemetry Batch (the
    record-level ones: a one-record batch with the original string table;
    also whole-batch ones such as stale_epoch) is sent again through the
    acknowledged producer (producer.h) to the ingest ROUTER, re-sequenced:
    its original (source, epoch, seq) is already marked seen by dedup, so
    its records go out under --source ID, with epoch = max(now in Unix
    seconds, the epoch the state holds for that source + 1), so every run
    gets a new epoch, and seqs 1..n in dl_seq order. Kind, strings, quantity
    and event time are kept as they are: a record that was refused for its
    content (missing_field, unknown_kind, ...) is refused again, as a new
    dead letter under the resubmission source. A dead letter counts as
    acked when the final Ack watermark of (ID, epoch) covers its last seq;
    --delete then deletes it. Payloads that are not a valid Batch (frame
    level: malformed, truncated, ...) and records with a string index
    beyond their string table are skipped and reported.

    RESUBMIT of an erp_rejected dead letter of a postgresql sink (detail
    sink_type "postgresql"): nothing is sent to ingest. The row the ERP's
    import job refused is set back to PENDING in the database of the
    dead letter's [sink NAME] of FILE (sink_pg.h), only while it still
    holds that verdict (verdict_seq): once per verdict; 0 rows updated is
    said, the dead letter kept, and counts as failed. --delete deletes the
    ones set back. --source is needed only when telemetry dead letters are
    resubmitted too. erp_rejected dead letters of other sink types are
    skipped and reported.

    Exit codes: 0 ok; 1 some failed (not acked or partly sent, not found, a DL_SEQ named
    on the command line skipped, a delete failed); 2 usage, configuration
    or state error (durability off, no state, refused state).

    Thread contract: runs on the calling thread and creates, uses and frees
    everything it needs (a zmq context, the store) within the call.
*/
#ifndef FP_DEADLETTERS_H
#define FP_DEADLETTERS_H

#include "config.h"

/* argv: the arguments after "deadletters". Returns the exit code. */
int fp_deadletters_main(int argc, char **argv);

struct fp_store;
/* Loads the config (file, or the built-in defaults) and opens its state in
   tool mode (store.h fp_store_open_tool) for tool `me`; what: why a state
   is needed, for the message when durability is off. 0, or 2 after
   printing why. */
int fp_cli_open_state(const char *me, const char *what, const char *file, fp_config_t *cfg,
                      struct fp_store **store);

#endif
