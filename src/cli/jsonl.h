/*  jsonl.h - one telemetry record per JSON line, the input of
    `floorpost send`.

    A line is one JSON object:
      {"source_id": 7, "epoch": 1, "seq": 42, "time_ns": 1763900000123456789,
       "kind": "MaterialConsumed", "plant": "1000", "order": "000100012345",
       "operation": "0010", "material": "RM-STEEL-2MM", "lot": "LOT-2611-0042",
       "unit": "KG", "quantity": 1250}
    Fields: source_id (integer >= 1, required), epoch (integer >= 0, default
    1), seq (integer >= 1, required), time_ns (integer, ns since the Unix
    epoch UTC, default 0), kind (required: "PartCount" | "MaterialConsumed" |
    "Scrap" | "OperationStarted" | "OperationCompleted" | "PartCounter" |
    "ScrapCounter", or its number 1..7), plant, line, station, order,
    operation, material, lot, unit, reason (strings, optional; "" = absent),
    counter (a counter reading's name: the material field under its own name,
    so not both), from_zero (true/false, counter readings only: the counter
    started from zero), quantity (integer, default 0; parts, thousandths of
    unit for MaterialConsumed, the cumulative reading for the counter kinds);
    null for a string = absent. A counter reading:
      {"source_id": 7, "seq": 43, "time_ns": 1763900000223456789,
       "kind": "PartCounter", "plant": "1000", "order": "000100012345",
       "operation": "0010", "station": "PRESS-1", "counter": "GOOD",
       "quantity": 120344}
    Integers must be JSON integers that fit in int64 (no floats, no 1e3; so
    source_id, epoch and seq are at most 2^63-1), so seqs and ns timestamps
    are exact (jansson keeps 64-bit integers; cJSON would round them through
    a double). Unknown and duplicate fields are errors.

    Thread contract: a jsonl_t belongs to one thread.
*/
#ifndef FP_JSONL_H
#define FP_JSONL_H

#include <stddef.h>
#include <stdint.h>

#include "producer.h"

typedef struct jsonl jsonl_t;

/* A parser; NULL on out of memory. Free with jsonl_destroy. */
jsonl_t *jsonl_new(void);

/* Frees *self_p (and the strings of the last parsed line) and sets it to
   NULL; NULL-safe. */
void jsonl_destroy(jsonl_t **self_p);

/* Parses one line (NUL-terminated; a trailing newline is fine).
   Returns 0 and fills *source_id, *epoch, *rec; or 1 for a line the caller
   skips (blank, or first non-blank character '#'), outputs untouched; or -1
   with err (NUL-terminated, truncated to errlen) naming the field and what
   is wrong, e.g. "field 'seq': must be an integer >= 1". rec's strings point
   into self and stay valid until the next jsonl_parse or jsonl_destroy. */
int jsonl_parse(jsonl_t *self, const char *line, uint64_t *source_id, uint64_t *epoch,
                fp_rec_in_t *rec, char *err, size_t errlen);

#endif
