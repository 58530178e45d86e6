/*  plantgen.c - the plant model behind plantgen.h.

    State per line: its source's next seq, the slot its round-robin visits
    next, and orders_per_line order slots. A slot is one open order at one
    operation, in a phase:
        0                          OperationStarted is next
        1..records_per_operation   a quantity record is next
        records_per_operation + 1  OperationCompleted is next
    All names but order numbers are built once in plantgen_new.
*/
#include "clock.h"
#include "plantgen.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NAME_MAX_LEN 32
#define ORDER_BASE 100012345ull /* first order number, "000100012345" */
#define LIMIT_LINES (1u << 20)
#define LIMIT_SLOTS (1u << 26)
#define LIMIT_NAMES (1u << 24)

typedef char s_name_t[NAME_MAX_LEN];

typedef struct {
    char order[16]; /* 12 digits, NUL */
    uint32_t op;    /* operation index, 0..operations_per_order-1 */
    uint32_t phase; /* see the top comment */
    int replace;    /* the order finished: a new one takes the slot on the next visit */
} s_slot_t;

typedef struct {
    uint64_t next_seq;
    uint32_t plant, line; /* plant index, line index within the plant */
    uint32_t cur_slot;
    s_slot_t *slots;      /* orders_per_line */
} s_line_t;

struct plantgen {
    plantgen_params_t p;
    uint64_t rng;
    int64_t clock_ns;
    uint64_t count;
    uint64_t next_order;
    uint32_t nlines, cur_line, in_burst;
    s_line_t *lines;
    s_slot_t *slot_mem;
    s_name_t *plant_names;    /* plants */
    s_name_t *line_names;     /* lines_per_plant */
    s_name_t *station_names;  /* lines_per_plant * stations_per_line */
    s_name_t *op_names;       /* operations_per_order */
    s_name_t *material_names; /* operations_per_order * materials_per_operation */
    const char **material_units;
    s_name_t *lot_names;      /* material count * lots_per_material */
    s_name_t *reason_names;   /* scrap_reasons */
};

static const struct {
    const char *name, *unit;
} s_materials[] = {
    {"RM-STEEL-2MM", "KG"},   {"RM-PAINT-RAL9005", "L"}, {"PK-BOX-40", "PC"},
    {"RM-CABLE-3X1.5", "M"},  {"RM-ALU-BAR-20", "KG"},   {"RM-SCREW-M6X20", "PC"},
    {"RM-GREASE-EP2", "KG"},  {"PK-FOIL-500", "M"},      {"RM-PA6-GF30", "KG"},
    {"RM-GLUE-2K", "L"},      {"PK-PALLET-EUR", "PC"},   {"RM-COPPER-WIRE", "M"},
};
#define N_MATERIALS (sizeof(s_materials) / sizeof(s_materials[0]))

static const char *const s_reasons[] = {
    "SCR-DIM", "SCR-SURF", "SCR-MAT", "SCR-ASSY", "SCR-WELD", "SCR-PAINT", "SCR-SETUP", "SCR-HANDL",
};
#define N_REASONS (sizeof(s_reasons) / sizeof(s_reasons[0]))

/* splitmix64 (Steele, Lea, Flood): full period, good enough mixing for a
   workload model, and trivially reproducible. */
static uint64_t s_rand(plantgen_t *self)
{
    uint64_t z = (self->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform-enough in lo..hi (bias < 2^-40 for our small ranges). */
static uint64_t s_range(plantgen_t *self, uint64_t lo, uint64_t hi)
{
    return lo + s_rand(self) % (hi - lo + 1);
}

void plantgen_defaults(plantgen_params_t *p)
{
    assert(p);
    memset(p, 0, sizeof(*p));
    p->plants = 1;
    p->lines_per_plant = 4;
    p->stations_per_line = 3;
    p->orders_per_line = 2;
    p->operations_per_order = 4;
    p->materials_per_operation = 3;
    p->lots_per_material = 2;
    p->scrap_reasons = 4;
    p->records_per_operation = 50;
    p->pct_material = 30;
    p->pct_scrap = 5;
    p->seed = 1;
    p->first_source_id = 1;
    p->epoch = 1;
    p->start_time_ns = 0;
    p->burst = 32;
}

static int s_params_ok(const plantgen_params_t *p)
{
    if (!p->plants || !p->lines_per_plant || !p->stations_per_line || !p->orders_per_line ||
        !p->operations_per_order || p->operations_per_order > 999 || !p->first_source_id ||
        !p->burst)
        return 0;
    if ((uint64_t)p->pct_material + p->pct_scrap > 100)
        return 0;
    if (p->pct_material && (!p->materials_per_operation || !p->lots_per_material))
        return 0;
    if (p->pct_scrap && !p->scrap_reasons)
        return 0;
    uint64_t lines = (uint64_t)p->plants * p->lines_per_plant;
    uint64_t materials = (uint64_t)p->operations_per_order * p->materials_per_operation;
    if (lines > LIMIT_LINES || lines * p->orders_per_line > LIMIT_SLOTS ||
        (uint64_t)p->lines_per_plant * p->stations_per_line > LIMIT_NAMES ||
        materials > LIMIT_NAMES || materials * p->lots_per_material > LIMIT_NAMES ||
        p->scrap_reasons > LIMIT_NAMES)
        return 0;
    if (p->first_source_id + lines < p->first_source_id) /* wraps */
        return 0;
    return 1;
}

/* A new order number into slot, at its first operation. */
static void s_new_order(plantgen_t *self, s_slot_t *slot, uint32_t op)
{
    snprintf(slot->order, sizeof(slot->order), "%012llu",
             (unsigned long long)(ORDER_BASE + self->next_order++) % 1000000000000ull);
    slot->op = op;
    slot->phase = 0;
    slot->replace = 0;
}

plantgen_t *plantgen_new(const plantgen_params_t *p)
{
    assert(p);
    if (!s_params_ok(p))
        return NULL;
    plantgen_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->p = *p;
    self->rng = p->seed;
    self->clock_ns = p->start_time_ns;
    if (self->clock_ns == 0)
        self->clock_ns = fp_wall_ns();
    self->nlines = p->plants * p->lines_per_plant;
    uint32_t nmat = p->operations_per_order * p->materials_per_operation;
    uint32_t nlot = nmat * p->lots_per_material;
    uint32_t nstation = p->lines_per_plant * p->stations_per_line;
    self->lines = calloc(self->nlines, sizeof(s_line_t));
    self->slot_mem = calloc((size_t)self->nlines * p->orders_per_line, sizeof(s_slot_t));
    self->plant_names = calloc(p->plants, sizeof(s_name_t));
    self->line_names = calloc(p->lines_per_plant, sizeof(s_name_t));
    self->station_names = calloc(nstation, sizeof(s_name_t));
    self->op_names = calloc(p->operations_per_order, sizeof(s_name_t));
    self->material_names = calloc(nmat + 1, sizeof(s_name_t));
    self->material_units = calloc(nmat + 1, sizeof(const char *));
    self->lot_names = calloc(nlot + 1, sizeof(s_name_t));
    self->reason_names = calloc(p->scrap_reasons + 1, sizeof(s_name_t));
    if (!self->lines || !self->slot_mem || !self->plant_names || !self->line_names ||
        !self->station_names || !self->op_names || !self->material_names ||
        !self->material_units || !self->lot_names || !self->reason_names) {
        plantgen_destroy(&self);
        return NULL;
    }
    for (uint32_t i = 0; i < p->plants; i++)
        snprintf(self->plant_names[i], NAME_MAX_LEN, "%llu", (unsigned long long)(i + 1) * 1000);
    for (uint32_t l = 0; l < p->lines_per_plant; l++) {
        snprintf(self->line_names[l], NAME_MAX_LEN, "L%02u", l + 1);
        for (uint32_t s = 0; s < p->stations_per_line; s++)
            snprintf(self->station_names[l * p->stations_per_line + s], NAME_MAX_LEN,
                     "L%02u-ST%02u", l + 1, s + 1);
    }
    for (uint32_t o = 0; o < p->operations_per_order; o++)
        snprintf(self->op_names[o], NAME_MAX_LEN, "%04u", (o + 1) * 10);
    for (uint32_t m = 0; m < nmat; m++) {
        if (m < N_MATERIALS)
            snprintf(self->material_names[m], NAME_MAX_LEN, "%s", s_materials[m].name);
        else
            snprintf(self->material_names[m], NAME_MAX_LEN, "RM-%06u", m);
        self->material_units[m] = s_materials[m % N_MATERIALS].unit;
        for (uint32_t k = 0; k < p->lots_per_material; k++)
            snprintf(self->lot_names[m * p->lots_per_material + k], NAME_MAX_LEN, "LOT-2611-%04u",
                     m * p->lots_per_material + k + 1);
    }
    for (uint32_t r = 0; r < p->scrap_reasons; r++) {
        if (r < N_REASONS)
            snprintf(self->reason_names[r], NAME_MAX_LEN, "%s", s_reasons[r]);
        else
            snprintf(self->reason_names[r], NAME_MAX_LEN, "SCR-%04u", r + 1);
    }
    for (uint32_t i = 0; i < self->nlines; i++) {
        s_line_t *line = &self->lines[i];
        line->next_seq = 1;
        line->plant = i / p->lines_per_plant;
        line->line = i % p->lines_per_plant;
        line->slots = self->slot_mem + (size_t)i * p->orders_per_line;
        for (uint32_t k = 0; k < p->orders_per_line; k++)
            s_new_order(self, &line->slots[k], k % p->operations_per_order);
    }
    return self;
}

void plantgen_destroy(plantgen_t **self_p)
{
    assert(self_p);
    plantgen_t *self = *self_p;
    if (!self)
        return;
    free(self->lines);
    free(self->slot_mem);
    free(self->plant_names);
    free(self->line_names);
    free(self->station_names);
    free(self->op_names);
    free(self->material_names);
    free(self->material_units);
    free(self->lot_names);
    free(self->reason_names);
    free(self);
    *self_p = NULL;
}

void plantgen_next(plantgen_t *self, uint64_t *source_id, uint64_t *epoch, fp_rec_in_t *rec)
{
    assert(self && source_id && epoch && rec);
    const plantgen_params_t *p = &self->p;
    uint32_t li = self->cur_line;
    s_line_t *line = &self->lines[li];
    s_slot_t *slot = &line->slots[line->cur_slot];
    line->cur_slot = (line->cur_slot + 1) % p->orders_per_line;
    if (++self->in_burst == p->burst) {
        self->in_burst = 0;
        self->cur_line = (self->cur_line + 1) % self->nlines;
    }
    if (slot->replace)
        s_new_order(self, slot, 0);

    memset(rec, 0, sizeof(*rec));
    rec->seq = line->next_seq++;
    rec->time_ns = self->clock_ns;
    self->clock_ns += PLANTGEN_STEP_NS;
    rec->str[FP_STR_PLANT] = self->plant_names[line->plant];
    rec->str[FP_STR_LINE] = self->line_names[line->line];
    rec->str[FP_STR_STATION] =
        self->station_names[line->line * p->stations_per_line + slot->op % p->stations_per_line];
    rec->str[FP_STR_ORDER] = slot->order;
    rec->str[FP_STR_OPERATION] = self->op_names[slot->op];

    if (slot->phase == 0) {
        rec->kind = FP_KIND_OP_STARTED;
    } else if (slot->phase > p->records_per_operation) {
        rec->kind = FP_KIND_OP_COMPLETED;
    } else {
        uint32_t pick = (uint32_t)(s_rand(self) % 100);
        if (pick < p->pct_material) {
            uint32_t m = slot->op * p->materials_per_operation +
                         (uint32_t)(s_rand(self) % p->materials_per_operation);
            uint32_t lot = m * p->lots_per_material + (uint32_t)(s_rand(self) % p->lots_per_material);
            rec->kind = FP_KIND_MATERIAL;
            rec->quantity = (int64_t)s_range(self, 125, 25000);
            rec->str[FP_STR_MATERIAL] = self->material_names[m];
            rec->str[FP_STR_LOT] = self->lot_names[lot];
            rec->str[FP_STR_UNIT] = self->material_units[m];
        } else if (pick < p->pct_material + p->pct_scrap) {
            rec->kind = FP_KIND_SCRAP;
            rec->quantity = (int64_t)s_range(self, 1, 3);
            rec->str[FP_STR_REASON] = self->reason_names[s_rand(self) % p->scrap_reasons];
        } else {
            rec->kind = FP_KIND_PART_COUNT;
            rec->quantity = (int64_t)s_range(self, 1, 10);
        }
    }

    /* Advance the slot past what was just emitted. */
    if (++slot->phase > p->records_per_operation + 1) {
        slot->phase = 0;
        if (++slot->op == p->operations_per_order)
            slot->replace = 1; /* lazily, so rec's order string stays intact now */
    }
    self->count++;
    *source_id = p->first_source_id + li;
    *epoch = p->epoch;
}

uint64_t plantgen_sources(const plantgen_t *self)
{
    assert(self);
    return self->nlines;
}

uint64_t plantgen_count(const plantgen_t *self)
{
    assert(self);
    return self->count;
}
