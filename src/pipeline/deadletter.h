/*  deadletter.h - how a stage makes a dead letter: its detail fields (JSON
    and logfmt at once), a record's compact payload, and the hand-over to
    emit, which commits it with the sender's round and then publishes it
    (docs/architecture.md, "Dead-letter reasons"; docs/durability.md, "Dead
    letters" for the budgets emit applies).

    Sizes, by construction:
      - the JSON detail is at most FP_DL_JSON_MAX bytes, valid UTF-8 JSON:
        every string in it passes fp_log_quote (log.h), integers are
        decimal, u64 up to 18446744073709551615;
      - a record-level payload (fp_dl_record_payload) is the record as a
        one-record Batch with only the strings it references, each cut to
        FP_DL_STRING_KEEP bytes: at most FP_DL_RECORD_PAYLOAD_MAX bytes,
        whatever the size of the batch it came from;
      - a frame-level payload is the frame, cut to fp_dl_frame_keep().

    Thread contract: fp_dl_fields_t and the builders are plain data and
    pure functions on the caller's thread; fp_dead_letter sends on the
    caller's socket (a stage's own).
*/
#ifndef FP_DEADLETTER_H
#define FP_DEADLETTER_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "config.h"
#include "record.h"

/* The JSON detail: {"reason":..,"component":..,<fields>}. */
#define FP_DL_JSON_MAX 1200u

/* A string kept in a record dead letter's payload: at most this many bytes
   (cut on a UTF-8 character boundary). More than FP_STRING_MAX, so a string
   that was too long is still too long when the record is resubmitted. */
#define FP_DL_STRING_KEEP 128u

/* The most bytes fp_dl_record_payload returns (tests/pipeline/
   test_deadletter.c checks the worst case: nine distinct strings of
   FP_DL_STRING_KEEP bytes and u64 maxima everywhere). */
#define FP_DL_RECORD_PAYLOAD_MAX 1536u

/* A dead letter's detail fields, built once in both forms: JSON members
   for the stored and published detail, and logfmt pairs for emit's log
   line (so the JSON is never parsed back). Values that come from producers
   are quoted and escaped (fp_log_quote: valid UTF-8, cut on character
   boundaries). A field that does not fit is left out of both. */
typedef struct {
    char json[1024];
    size_t jn;
    char log[768];
    size_t ln;
} fp_dl_fields_t;

/* Adds an integer; log_name NULL: JSON only. */
void fp_dl_fields_int(fp_dl_fields_t *f, const char *json_name, const char *log_name, int64_t v);
void fp_dl_fields_u64(fp_dl_fields_t *f, const char *json_name, const char *log_name, uint64_t v);
/* Adds a string, at most maxlen (and 256) bytes of it (up to its NUL). */
void fp_dl_fields_str(fp_dl_fields_t *f, const char *json_name, const char *log_name,
                      const char *s, size_t maxlen);
/* Adds s[0..len) (NUL bytes in it are shown as \u0000), at most maxlen bytes. */
void fp_dl_fields_strn(fp_dl_fields_t *f, const char *json_name, const char *log_name,
                       const char *s, size_t len, size_t maxlen);

/* Adds the record's business keys (plant, order, operation, lot, where
   present and in range), each cut to 64 bytes. The string table is a
   batch's (record.h fp_batch_hdr_t layout): string i (1-based) is
   strblob + stroff[i-1], stroff[i] - stroff[i-1] - 1 bytes long. */
void fp_dead_letter_keys(fp_dl_fields_t *f, const fp_record_t *rec, uint32_t nstrings,
                         const uint32_t *stroff, const char *strblob);

/* A record dead letter's payload: rec re-encoded as a one-record Batch of
   (source_id, epoch) that holds only the strings rec references, each once
   and cut to FP_DL_STRING_KEEP bytes, renumbered 1..k in field order; an
   index beyond the batch's table becomes k + 1, so it is still beyond the
   payload's own table (a resubmission skips it the same way). The string
   table as for fp_dead_letter_keys. *out points into codec's builder (as
   fp_codec_batch_encode). At most FP_DL_RECORD_PAYLOAD_MAX bytes. Returns
   FP_CODEC_OK or a codec error (then *out is "" and *len 0). */
int fp_dl_record_payload(fp_codec_t *codec, uint64_t source_id, uint64_t epoch,
                         const fp_record_t *rec, uint32_t nstrings, const uint32_t *stroff,
                         const char *strblob, const void **out, size_t *len);

/* How much of a frame a frame-level dead letter keeps: a quarter of one
   round's dead-letter budget (fp_config_dl_round_bytes). The detail's
   `bytes` is always the frame's own length; `payload_cut` says it was cut. */
size_t fp_dl_frame_keep(const fp_config_t *cfg);

/* Hands a dead letter to emit (committed with the sender's round, then
   published): topic "deadletter/<reason>", a JSON detail object, the
   offending bytes and, as a fourth frame that is only logged, the same
   fields in logfmt. The JSON is {"reason":..,"component":..,<fields>} (f
   may be NULL). reason: a name of fp_dl_reason_t (asserted: our own code
   passes it). from: the sender slot (see fp_emit_hdr_t, stage.h). Blocks
   when the emit queue is full. */
void fp_dead_letter(void *sock, uint32_t from, const char *reason, const char *component,
                    const fp_dl_fields_t *f, const void *bytes, size_t len);

/* The four frames after the header (topic, JSON, bytes, logfmt) of a dead
   letter, as fp_dead_letter sends them: for a sender with a header of its
   own (an outbox reader, reader.h). */
void fp_dead_letter_parts(void *sock, const char *reason, const char *component,
                          const fp_dl_fields_t *f, const void *bytes, size_t len);

#endif
