/*  jsonl.c - JSON line -> fp_rec_in_t, with jansson (64-bit exact integers).

    The parsed document of the last line is kept in self so that rec's
    strings can point into it without copying; it is released at the next
    parse or at destroy.
*/
#include "jsonl.h"

#include <assert.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jsonl {
    json_t *root; /* last parsed line, owns rec's strings; NULL if none */
};

/* Field ids; the string fields keep FP_STR_* order so that id - F_STR0 is
   the index into rec->str. */
enum {
    F_SOURCE_ID,
    F_EPOCH,
    F_SEQ,
    F_TIME_NS,
    F_KIND,
    F_QUANTITY,
    F_STR0,
    F_COUNTER = F_STR0 + FP_STR_FIELDS, /* the material field, by its counter name */
    F_FROM_ZERO,
    F_COUNT
};

static const char *const s_field_names[F_COUNT] = {
    "source_id", "epoch", "seq", "time_ns", "kind", "quantity",
    "plant", "line", "station", "order", "operation", "material", "lot", "unit", "reason",
    "counter", "from_zero",
};

/* Kind names; index = FP_KIND_* value. */
static const char *const s_kind_names[FP_KIND_MAX + 1] = {
    NULL, "PartCount", "MaterialConsumed", "Scrap", "OperationStarted", "OperationCompleted",
    "PartCounter", "ScrapCounter",
};

_Static_assert(FP_STR_PLANT == 0 && FP_STR_REASON == 8, "string field order changed");

jsonl_t *jsonl_new(void)
{
    return calloc(1, sizeof(jsonl_t));
}

void jsonl_destroy(jsonl_t **self_p)
{
    assert(self_p);
    jsonl_t *self = *self_p;
    if (!self)
        return;
    json_decref(self->root);
    free(self);
    *self_p = NULL;
}

static int s_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* 0 and *out if v is a JSON integer >= min; -1 otherwise (reals refused:
   a float would have lost precision on the way). */
static int s_int(const json_t *v, long long min, long long *out)
{
    if (!json_is_integer(v))
        return -1;
    long long x = json_integer_value(v);
    if (x < min)
        return -1;
    *out = x;
    return 0;
}

/* Kind from its name or number; 0 if neither. */
static uint8_t s_kind(const json_t *v)
{
    if (json_is_integer(v)) {
        long long k = json_integer_value(v);
        return k >= 1 && k <= FP_KIND_MAX ? (uint8_t)k : 0;
    }
    if (json_is_string(v)) {
        for (int k = 1; k <= FP_KIND_MAX; k++)
            if (strcmp(json_string_value(v), s_kind_names[k]) == 0)
                return (uint8_t)k;
    }
    return 0;
}

int jsonl_parse(jsonl_t *self, const char *line, uint64_t *source_id, uint64_t *epoch,
                fp_rec_in_t *rec, char *err, size_t errlen)
{
    assert(self && line && source_id && epoch && rec);
    const char *p = line;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    if (*p == 0 || *p == '#')
        return 1;

    json_decref(self->root);
    json_error_t jerr;
    self->root = json_loads(line, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!self->root)
        return s_fail(err, errlen, "invalid JSON at column %d: %s", jerr.column, jerr.text);
    if (!json_is_object(self->root))
        return s_fail(err, errlen, "a line must be one JSON object");

    long long v[F_STR0] = {0};
    v[F_EPOCH] = 1;
    unsigned seen = 0;
    fp_rec_in_t r;
    memset(&r, 0, sizeof(r));

    const char *key;
    json_t *val;
    json_object_foreach(self->root, key, val) {
        int f = 0;
        while (f < F_COUNT && strcmp(key, s_field_names[f]) != 0)
            f++;
        if (f == F_COUNT)
            return s_fail(err, errlen, "unknown field '%.64s'", key);
        seen |= 1u << f;
        switch (f) {
        case F_SOURCE_ID:
        case F_SEQ:
            if (s_int(val, 1, &v[f]) != 0)
                return s_fail(err, errlen, "field '%s': must be an integer >= 1", key);
            break;
        case F_EPOCH:
            if (s_int(val, 0, &v[f]) != 0)
                return s_fail(err, errlen, "field '%s': must be an integer >= 0", key);
            break;
        case F_TIME_NS:
        case F_QUANTITY:
            if (s_int(val, INT64_MIN, &v[f]) != 0)
                return s_fail(err, errlen, "field '%s': must be an integer", key);
            break;
        case F_KIND:
            r.kind = s_kind(val);
            if (r.kind == 0 && json_is_string(val))
                return s_fail(err, errlen,
                              "field 'kind': unknown kind '%.64s' (PartCount, MaterialConsumed, "
                              "Scrap, OperationStarted, OperationCompleted, PartCounter, "
                              "ScrapCounter or 1..7)",
                              json_string_value(val));
            if (r.kind == 0)
                return s_fail(err, errlen, "field 'kind': must be a kind name or an integer 1..7");
            break;
        case F_FROM_ZERO:
            if (!json_is_boolean(val))
                return s_fail(err, errlen, "field 'from_zero': must be true or false");
            r.flags = json_is_true(val) ? FP_COUNTER_FROM_ZERO : 0;
            break;
        case F_COUNTER:
            if (seen & (1u << (F_STR0 + FP_STR_COUNTER)))
                return s_fail(err, errlen, "field 'counter': 'material' given too (the same field)");
            if (json_is_null(val))
                break;
            if (!json_is_string(val))
                return s_fail(err, errlen, "field 'counter': must be a string");
            r.str[FP_STR_COUNTER] = json_string_value(val);
            break;
        default: /* string fields; null = absent */
            if (f == F_STR0 + FP_STR_COUNTER && (seen & (1u << F_COUNTER)))
                return s_fail(err, errlen, "field 'material': 'counter' given too (the same field)");
            if (json_is_null(val))
                break;
            if (!json_is_string(val))
                return s_fail(err, errlen, "field '%s': must be a string", key);
            r.str[f - F_STR0] = json_string_value(val);
            break;
        }
    }
    if (r.flags && r.kind != FP_KIND_PART_COUNTER && r.kind != FP_KIND_SCRAP_COUNTER)
        return s_fail(err, errlen, "field 'from_zero': only for PartCounter and ScrapCounter");
    static const int required[] = {F_SOURCE_ID, F_SEQ, F_KIND};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (!(seen & (1u << required[i])))
            return s_fail(err, errlen, "field '%s': required", s_field_names[required[i]]);

    r.seq = (uint64_t)v[F_SEQ];
    r.time_ns = (int64_t)v[F_TIME_NS];
    r.quantity = (int64_t)v[F_QUANTITY];
    *source_id = (uint64_t)v[F_SOURCE_ID];
    *epoch = (uint64_t)v[F_EPOCH];
    *rec = r;
    return 0;
}
