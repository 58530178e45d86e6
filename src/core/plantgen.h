/*  plantgen.h - a deterministic model of a plant's telemetry, for the demo,
    tests and benchmarks.

    The plant: `plants` plants ("1000", "2000", ...), each with
    lines_per_plant lines ("L01", ...) of stations_per_line stations
    ("L01-ST02"). Each line is one source (gateway): source_id =
    first_source_id + global line index (plant-major), seq 1, 2, 3, ... per
    source. Each line has orders_per_line open production orders
    ("000100012345", 12 digits, a new number whenever one finishes), each at
    its current operation ("0010", "0020", ...). A line round-robins its open
    orders; each visit emits the order's next record:
        OperationStarted (quantity 0),
        records_per_operation quantity records, mixed at random:
          MaterialConsumed  pct_material %, a material of the operation
                            ("RM-STEEL-2MM", ...), one of its lots
                            ("LOT-2611-0042"), its unit ("KG", "L", "PC",
                            "M"), quantity 125..25000 thousandths;
          Scrap             pct_scrap %, 1..3 parts, a reason ("SCR-DIM", ...);
          PartCount         the rest, 1..10 parts;
        OperationCompleted (quantity 0);
    then the order moves to its next operation, and after its last one it is
    replaced by a new order. Every record carries plant, line, station (the
    operation's station), order and operation. At the start, order k of a
    line begins at operation k % operations_per_order, so completions spread.

    Lines take turns in bursts of `burst` consecutive records (so a producer
    fills batches of one source). The plant clock starts at start_time_ns
    (0 = CLOCK_REALTIME at plantgen_new) and advances PLANTGEN_STEP_NS per
    record. Everything else is a pure function of the params (splitmix64
    seeded with `seed`).

    Open aggregation keys at a time ~ plants * lines_per_plant *
    orders_per_line * (1 + materials_per_operation * lots_per_material +
    scrap_reasons): the knob for benchmarks.

    Thread contract: a plantgen_t belongs to one thread.
*/
#ifndef FP_PLANTGEN_H
#define FP_PLANTGEN_H

#include <stdint.h>

#include "producer.h"

#define PLANTGEN_STEP_NS 1000000 /* plant clock advance per record: 1 ms */

typedef struct {
    uint32_t plants, lines_per_plant, stations_per_line;
    uint32_t orders_per_line;          /* open orders per line at a time */
    uint32_t operations_per_order;     /* 0010, 0020, ...; at most 999 */
    uint32_t materials_per_operation, lots_per_material, scrap_reasons;
    uint32_t records_per_operation;    /* quantity records before the OperationCompleted */
    uint32_t pct_material, pct_scrap;  /* record mix in percent; the rest are PartCount */
    uint64_t seed;
    uint64_t first_source_id;          /* one source (gateway) per line: first_source_id + line index */
    uint64_t epoch;
    int64_t start_time_ns;             /* plant clock start, ns since the Unix epoch; 0 = now */
    uint32_t burst;                    /* consecutive records of one line before the next line's turn */
} plantgen_params_t;

typedef struct plantgen plantgen_t;

/* A small realistic plant: 1 plant, 4 lines of 3 stations, 2 open orders per
   line of 4 operations, 3 materials x 2 lots per operation, 4 scrap reasons,
   50 quantity records per operation (30 % material, 5 % scrap), seed 1,
   sources from 1, epoch 1, clock from now, bursts of 32. */
void plantgen_defaults(plantgen_params_t *p);

/* A generator for *p (copied). NULL on bad params (a zero count,
   operations_per_order > 999, pct_material + pct_scrap > 100, a mix
   percentage without materials/lots or reasons to use, first_source_id 0,
   burst 0, sizes too large) or out of memory. */
plantgen_t *plantgen_new(const plantgen_params_t *p);

/* Frees *self_p and sets it to NULL; NULL-safe. */
void plantgen_destroy(plantgen_t **self_p);

/* The plant's next record. rec's strings are owned by the generator: the
   order string is valid until the next plantgen_next call (order numbers are
   rewritten in place), all others until plantgen_destroy. */
void plantgen_next(plantgen_t *self, uint64_t *source_id, uint64_t *epoch, fp_rec_in_t *rec);

/* Number of sources (lines): first_source_id .. first_source_id + n - 1. */
uint64_t plantgen_sources(const plantgen_t *self);

/* Records generated so far. */
uint64_t plantgen_count(const plantgen_t *self);

#endif
