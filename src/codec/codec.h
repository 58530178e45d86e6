/*  codec.h - the only door to FlatBuffers (implemented in C++, codec.cc).

    Everything that reads or writes schema/telemetry.fbs or
    schema/checkpoint.fbs goes through here, so the rest of floorpost is C11.

    Thread contract: an fp_codec_t holds a reusable builder and belongs to one
    thread. The stateless functions (parse, peek, decode, set_stream_seq) may
    run on any thread at once.

    Errors: parse and decode functions never trust their input; they return
    an FP_CODEC_* code (negative) that names what was wrong, and
    fp_codec_strerror() turns it into the dead-letter reason string.
*/
#ifndef FP_CODEC_H
#define FP_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain.h"
#include "record.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes. The reason strings (fp_codec_strerror) are stable: they are
   metric labels and dead-letter topics. */
typedef enum {
    FP_CODEC_OK = 0,
    FP_CODEC_TOO_SHORT = -1,      /* "truncated": shorter than a FlatBuffer header */
    FP_CODEC_OVERSIZED = -2,      /* "oversized": over the configured frame limit */
    FP_CODEC_WRONG_ID = -3,       /* "wrong_identifier": not "FPT1" / "FPC1" */
    FP_CODEC_VERIFY = -4,         /* "malformed": the FlatBuffers verifier refused it */
    FP_CODEC_MISSING = -5,        /* "missing_field": a required field is absent (source_id 0 too) */
    FP_CODEC_VERSION = -6,        /* "unsupported_version": version newer than we read */
    FP_CODEC_TOO_MANY_STRINGS = -7, /* "too_many_strings": string table over 65535 */
    FP_CODEC_NOMEM = -8,          /* "no_memory" */
    FP_CODEC_SPACE = -9,          /* "no_space": output buffer too small */
} fp_codec_rc;

const char *fp_codec_strerror(int rc);

/* ---- Telemetry batches (untrusted input) ---- */

/* A verified batch. Points into the caller's buffer, which must stay alive
   and unchanged while the view is used. */
typedef struct {
    uint32_t version;
    uint64_t source_id;
    uint64_t epoch;
    const fp_record_t *records; /* in place in the buffer; nrecords of them */
    uint32_t nrecords;
    uint32_t nstrings;          /* valid record string indices are 0..nstrings */
    const void *impl_strings;   /* opaque, for fp_codec_batch_string */
} fp_batch_view_t;

/* Verifies buf (identifier, FlatBuffers verifier with depth and table limits,
   required fields, version, string table size) and fills *view. buf must be
   8-byte aligned (copy it first if it is not). A frame over max_len is refused
   with FP_CODEC_OVERSIZED before any byte of it is read. Record contents
   (kind, string indices, reserved bytes) are NOT checked here: the caller
   checks them per record so one bad record does not sink its batch. */
int fp_codec_batch_parse(const void *buf, size_t len, size_t max_len, fp_batch_view_t *view);

/* String idx (1-based, <= view->nstrings) of a parsed batch; sets *len. */
const char *fp_codec_batch_string(const fp_batch_view_t *view, uint32_t idx, uint32_t *len);

/* Reads only the source_id of a telemetry batch, with bounds checks but
   without verifying the whole buffer: the ingest thread uses it to choose a
   worker. Returns 0 when it cannot be read (the worker then dead-letters the
   frame after a full parse). */
uint64_t fp_codec_batch_peek_source(const void *buf, size_t len);

/* ---- Builder (one per thread) ---- */

typedef struct fp_codec fp_codec_t;

/* Returns NULL on out of memory. Free with fp_codec_destroy. */
fp_codec_t *fp_codec_new(void);
/* Frees *self_p and sets it to NULL; safe on NULL. */
void fp_codec_destroy(fp_codec_t **self_p);

/* Encodes a telemetry batch. strings[i] is string index i+1 (NUL-terminated).
   *out points into the codec's builder and stays valid until the next encode
   call on this codec; copy it to keep it. Returns FP_CODEC_OK or an error. */
int fp_codec_batch_encode(fp_codec_t *self, uint64_t source_id, uint64_t epoch,
                          const char *const *strings, uint32_t nstrings,
                          const fp_record_t *records, uint32_t nrecords,
                          const void **out, size_t *out_len);

/* The same with explicit lengths: string i+1 is strings[i][0..lens[i]),
   NUL bytes included (lens NULL: NUL-terminated, as above). */
int fp_codec_batch_encode_n(fp_codec_t *self, uint64_t source_id, uint64_t epoch,
                            const char *const *strings, const uint32_t *lens, uint32_t nstrings,
                            const fp_record_t *records, uint32_t nrecords, const void **out,
                            size_t *out_len);

/* An Ack (schema/telemetry.fbs) in C. An Ack from a floorpost that
   predates batch_first_seq, batch_records or dead_letters decodes them
   as 0. */
typedef struct {
    uint64_t source_id, epoch, acked_seq;
    uint64_t batch_first_seq, batch_last_seq; /* the batch it answers: seq range */
    uint32_t batch_records;                   /* and record count */
    uint32_t dead_letters;                    /* accepted: records of it dead-lettered */
    int status;                               /* 0 accepted, 1 refused */
    char reason[64];                          /* "" when accepted (encoded as absent) */
} fp_ack_t;

/* Encodes *ack. Same lifetime rule for *out as above. */
int fp_codec_ack_encode(fp_codec_t *self, const fp_ack_t *ack, const void **out,
                        size_t *out_len);

/* Decodes an Ack (verified). Returns FP_CODEC_OK or an error. */
int fp_codec_ack_decode(const void *buf, size_t len, fp_ack_t *ack);

/* ---- Checkpoints ---- */

/* Kinds, sequence ranges and the checkpoint view (fp_checkpoint_t): domain.h. */

/* Encodes a Checkpoint. stream_seq is always stored (even 0) so that
   fp_codec_checkpoint_set_stream_seq can patch it in place later. Lifetime of
   *out as for fp_codec_batch_encode. */
int fp_codec_checkpoint_encode(fp_codec_t *self, const fp_checkpoint_t *ck,
                               const void **out, size_t *out_len);

/* Overwrites the stream_seq of an encoded (trusted, our own) Checkpoint in
   place. Returns FP_CODEC_OK, or FP_CODEC_MISSING if the field is absent. */
int fp_codec_checkpoint_set_stream_seq(void *buf, size_t len, uint64_t stream_seq);

/* The kind (fp_ck_kind_t) of an encoded (trusted, our own) Checkpoint:
   emit counts and files by it, never by parsing the topic text. */
int fp_codec_checkpoint_kind(const void *buf, size_t len);

/* The same for global_seq (also always stored). */
int fp_codec_checkpoint_set_global_seq(void *buf, size_t len, uint64_t global_seq);

/* Verifies and decodes a Checkpoint; string pointers point into buf (""
   when absent). buf must be 8-byte aligned. */
int fp_codec_checkpoint_decode(const void *buf, size_t len, fp_checkpoint_t *ck);

/* Verifies buf and writes the checkpoint as one JSON object (no newline) to
   out (NUL-terminated). Returns the length written, or a negative
   FP_CODEC_* code (FP_CODEC_SPACE when cap is too small). */
int fp_codec_checkpoint_to_json(const void *buf, size_t len, char *out, size_t cap);

/* Writes len bytes of s as one JSON string, quoted, escaped the way
   fp_codec_checkpoint_to_json writes its strings (\" and \\, control
   bytes, NUL among them, as \u00XX; a byte that is not part of valid
   UTF-8 as \ufffd), to out (NUL-terminated). Returns the length written, or
   FP_CODEC_SPACE when cap is too small. For text beside a checkpoint's
   JSON (a topic: its plant and line come from producers). */
int fp_codec_json_string(const char *s, size_t len, char *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
