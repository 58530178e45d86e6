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

    RESUBMIT (resubmit.c). A dead letter whose payload verifies as a
    telemetry Batch (the record-level ones: a one-record batch with the
    original string table; also whole-batch ones such as stale_epoch) is
    sent again through the acknowledged producer (producer.h) to the ingest
    ROUTER, re-sequenced under --source ID, and never so that a record is
    counted twice:
      - each record's resubmission identity (source ID, epoch, seq) is chosen
        once and stored in the state (store.h, resubmits) before it is sent;
        a later run, for the same dead letter or another copy of the same
        record, sends it under that identity again, so floorpost's dedup
        takes it at most once (a run that died half way is simply run
        again);
      - a record whose own identity floorpost's dedup has seen (it was
        counted through another copy, e.g. a resend after the dead letter
        was made) is not sent: "already counted"; one whose identity dedup
        can no longer tell (out of its window or past epochs) is REFUSED;
        a record dead-lettered for its content (missing_field, unknown_kind,
        ...) was never counted and is sent;
      - new identities: epoch = max(now in Unix seconds, the epoch the state
        holds for ID + 1, any epoch already used for ID + 1), seqs 1..n in
        dl_seq order.
    Kind, strings, quantity and event time are kept as they are: a record
    that was refused for its content is refused again, as a new dead letter
    under the resubmission source. A dead letter counts as acked when every
    one of its records was acked or already counted; --delete then deletes
    it. Payloads that are not a valid Batch (frame level: malformed,
    truncated, ...) and records with a string index beyond their string
    table are skipped and reported.

    RESUBMIT of an erp_rejected dead letter of a postgresql sink (detail
    sink_type "postgresql"): nothing is sent to ingest. The row the ERP's
    import job refused is set back to PENDING in the database of the
    dead letter's [sink NAME] of FILE (sink_pg.h), only while it still
    holds that verdict (verdict_seq): once per verdict; 0 rows updated is
    said, the dead letter kept, and counts as failed. --delete deletes the
    ones set back. --source is needed only when telemetry dead letters are
    resubmitted too. erp_rejected dead letters of other sink types are
    skipped and reported.

    Exit codes: 0 ok; 1 some failed (not acked, refused by floorpost,
    REFUSED because floorpost can no longer tell whether it counted the
    record, not found, a DL_SEQ named on the command line skipped, a delete
    failed); 2 usage, configuration or state error (durability off, no
    state, refused state).

    Thread contract: runs on the calling thread and creates, uses and frees
    everything it needs (a zmq context, the store) within the call.
*/
#ifndef FP_DEADLETTERS_H
#define FP_DEADLETTERS_H

#include <stdbool.h>
#include <stdio.h>

#include "codec.h"
#include "config.h"

/* argv: the arguments after "deadletters". Returns the exit code. */
int fp_deadletters_main(int argc, char **argv);

struct fp_store;

/* `resubmit` (resubmit.c): argv: its arguments, store opened by the
   caller in tool mode, cfg_name for messages. Returns the exit code. */
int fp_deadletters_resubmit(struct fp_store *store, const fp_config_t *cfg, const char *cfg_name,
                            int argc, char **argv);

/* The verb's usage text. */
void fp_cli_deadletters_usage(FILE *f);

/* A decimal u64 >= 1 that is the whole string; false otherwise. */
bool fp_cli_parse_u64(const char *s, uint64_t *v);

/* A copy of a stored payload in aligned memory, parsed. */
typedef struct {
    void *buf;             /* malloc'd, the caller frees */
    size_t len;
    fp_batch_view_t view;  /* when rc is FP_CODEC_OK */
    int rc;                /* fp_codec_batch_parse's result */
} fp_cli_payload_t;

/* Copies and parses payload[0..plen). 0, or -ENOMEM. */
int fp_cli_payload_parse(fp_cli_payload_t *pl, const void *payload, size_t plen,
                         uint32_t max_frame);

/* NULL if the parsed batch can be resubmitted as is, else why not. */
const char *fp_cli_payload_unsendable(const fp_cli_payload_t *pl);

/* An erp_rejected dead letter of a postgresql sink: where its row is. */
typedef struct {
    char sink[FP_SINK_NAME_MAX + 1];
    char table[16];
    char event_id[160];
    uint64_t verdict_seq;
} fp_cli_erp_t;

/* Reads the row's address from the detail JSON. 0, or -1 when the dead
   letter is not one a postgresql sink made (*why says what). */
int fp_cli_erp_target(const char *json, size_t jlen, fp_cli_erp_t *t, const char **why);
/* Loads the config (file, or the built-in defaults) and opens its state in
   tool mode (store.h fp_store_open_tool) for tool `me`; what: why a state
   is needed, for the message when durability is off. 0, or 2 after
   printing why. */
int fp_cli_open_state(const char *me, const char *what, const char *file, fp_config_t *cfg,
                      struct fp_store **store);

#endif
