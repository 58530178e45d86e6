/*  test_record_check.c - the one record check (record_check.h): every
    result it can return, in its order, and a valid record of each kind. */
#include <stdint.h>
#include <string.h>

#include "domain.h"
#include "record.h"
#include "record_check.h"
#include "test.h"

/* A batch's string table as fp_record_check sees it: n strings, string i
   (1-based) of length len[i-1], flags[i] its fp_record_string_flags (no
   NUL bytes here), any: some string's flags are not 0. */
typedef struct {
    uint32_t n;
    uint8_t flags[16];
    bool any;
} table_t;

static void s_table(table_t *t, const uint32_t *len, uint32_t n)
{
    memset(t, 0, sizeof *t);
    t->n = n;
    for (uint32_t i = 0; i < n; i++) {
        t->flags[i + 1] = fp_record_string_flags(len[i], false);
        t->any |= t->flags[i + 1] != 0;
    }
}

/* Strings: 1 plant, 2 order, 3 operation, 4 material, 5 unit, 6 reason,
   7 a string of exactly FP_STRING_MAX bytes, 8 one of FP_STRING_MAX + 1. */
static table_t s_t;

static fp_record_t s_rec(int kind)
{
    fp_record_t r;
    memset(&r, 0, sizeof r);
    r.seq = 1;
    r.kind = (uint8_t)kind;
    r.str[FP_STR_PLANT] = 1;
    r.str[FP_STR_ORDER] = 2;
    r.str[FP_STR_OPERATION] = 3;
    if (kind == FP_KIND_MATERIAL) {
        r.str[FP_STR_MATERIAL] = 4;
        r.str[FP_STR_UNIT] = 5;
    }
    if (kind == FP_KIND_SCRAP || kind == FP_KIND_SCRAP_COUNTER)
        r.str[FP_STR_REASON] = 6;
    if (kind == FP_KIND_PART_COUNTER || kind == FP_KIND_SCRAP_COUNTER)
        r.str[FP_STR_COUNTER] = 4; /* the counter's name */
    return r;
}

static fp_record_reason_t s_check(const fp_record_t *r)
{
    return fp_record_check(r, s_t.n, s_t.any ? s_t.flags : NULL);
}

TEST(test_valid_record_of_each_kind)
{
    for (int k = FP_KIND_PART_COUNT; k <= FP_KIND_MAX; k++) {
        fp_record_t r = s_rec(k);
        ASSERT_EQ(s_check(&r), FP_RECORD_OK);
        ASSERT(fp_record_in_range(&r, s_t.n));
    }
    /* Optional fields may be set on any kind; a string of exactly 80 bytes
       is fine; the last index of the table is in range. */
    fp_record_t r = s_rec(FP_KIND_PART_COUNT);
    r.str[FP_STR_LINE] = 7;
    r.str[FP_STR_STATION] = 8 - 1;
    r.str[FP_STR_LOT] = 6;
    ASSERT_EQ(s_check(&r), FP_RECORD_OK);
    r.str[FP_STR_REASON] = (uint16_t)s_t.n - 1; /* 7 */
    ASSERT_EQ(s_check(&r), FP_RECORD_OK);
}

TEST(test_unknown_kind)
{
    fp_record_t r = s_rec(FP_KIND_PART_COUNT);
    const int bad[] = {FP_KIND_INVALID, FP_KIND_MAX + 1, 255};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r.kind = (uint8_t)bad[i];
        ASSERT_EQ(s_check(&r), FP_RECORD_UNKNOWN_KIND);
        ASSERT(!fp_record_in_range(&r, s_t.n));
    }
    /* The kind is checked first: a record wrong in everything reports it. */
    memset(&r, 0, sizeof r);
    r.kind = 9;
    r.str[FP_STR_REASON] = 500;
    ASSERT_EQ(s_check(&r), FP_RECORD_UNKNOWN_KIND);
}

TEST(test_bad_string_index_every_field)
{
    /* Each of the nine fields, including str[8] (outside the vector
       compare), one past the table and far past it. */
    for (int f = 0; f < FP_STR_FIELDS; f++) {
        const uint16_t bad[] = {(uint16_t)(s_t.n + 1), 500, UINT16_MAX};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            fp_record_t r = s_rec(FP_KIND_SCRAP);
            r.str[f] = bad[i];
            ASSERT_EQ(s_check(&r), FP_RECORD_BAD_STRING_INDEX);
            ASSERT(!fp_record_in_range(&r, s_t.n));
        }
    }
    /* Before missing_field: an absent plant and a bad index report the index. */
    fp_record_t r = s_rec(FP_KIND_PART_COUNT);
    r.str[FP_STR_PLANT] = 0;
    r.str[FP_STR_LOT] = 99;
    ASSERT_EQ(s_check(&r), FP_RECORD_BAD_STRING_INDEX);
    /* A batch with no strings: every index but 0 is out of range. */
    r = s_rec(FP_KIND_PART_COUNT);
    ASSERT_EQ(fp_record_check(&r, 0, NULL), FP_RECORD_BAD_STRING_INDEX);
}

TEST(test_missing_key)
{
    const int key[] = {FP_STR_PLANT, FP_STR_ORDER, FP_STR_OPERATION};
    for (size_t i = 0; i < 3; i++) {
        fp_record_t r = s_rec(FP_KIND_OP_STARTED);
        r.str[key[i]] = 0;
        ASSERT_EQ(s_check(&r), FP_RECORD_MISSING_KEY);
        ASSERT(fp_record_in_range(&r, s_t.n)); /* in range, just absent */
    }
    /* Before string_too_long. */
    fp_record_t r = s_rec(FP_KIND_PART_COUNT);
    r.str[FP_STR_ORDER] = 0;
    r.str[FP_STR_LINE] = 8;
    ASSERT_EQ(s_check(&r), FP_RECORD_MISSING_KEY);
}

TEST(test_string_too_long_any_field)
{
    /* Any of the nine fields, used by the kind or not. */
    for (int f = 0; f < FP_STR_FIELDS; f++) {
        fp_record_t r = s_rec(FP_KIND_PART_COUNT);
        r.str[f] = 8;
        ASSERT_EQ(s_check(&r), FP_RECORD_STRING_TOO_LONG);
    }
    /* Before the kind's own fields: a MaterialConsumed without a unit and
       with a long lot reports the length. */
    fp_record_t r = s_rec(FP_KIND_MATERIAL);
    r.str[FP_STR_UNIT] = 0;
    r.str[FP_STR_LOT] = 8;
    ASSERT_EQ(s_check(&r), FP_RECORD_STRING_TOO_LONG);
}

/* A string with a NUL byte ("P\0A"): refused in any of the nine fields,
   after the length check and before the kind's own fields. */
TEST(test_string_has_nul_any_field)
{
    uint8_t flags[16];
    memcpy(flags, s_t.flags, sizeof flags);
    flags[7] |= fp_record_string_flags(80, true); /* string 7 has a NUL in it */
    ASSERT_EQ(flags[7], FP_STRF_NUL);
    for (int f = 0; f < FP_STR_FIELDS; f++) {
        fp_record_t r = s_rec(FP_KIND_PART_COUNT);
        ASSERT_EQ(fp_record_check(&r, s_t.n, flags), FP_RECORD_OK);
        r.str[f] = 7;
        ASSERT_EQ(fp_record_check(&r, s_t.n, flags), FP_RECORD_STRING_HAS_NUL);
        /* the batch's own flags: string 7 has none */
        ASSERT_EQ(fp_record_check(&r, s_t.n, s_t.flags), FP_RECORD_OK);
        /* NULL: no string of the batch is too long or has a NUL */
        ASSERT_EQ(fp_record_check(&r, s_t.n, NULL), FP_RECORD_OK);
        r.str[f] = 8; /* too long, in any field */
        ASSERT_EQ(fp_record_check(&r, s_t.n, flags), FP_RECORD_STRING_TOO_LONG);
    }
    fp_record_t r = s_rec(FP_KIND_MATERIAL);
    r.str[FP_STR_UNIT] = 0;
    r.str[FP_STR_LOT] = 7;
    ASSERT_EQ(fp_record_check(&r, s_t.n, flags), FP_RECORD_STRING_HAS_NUL);
    r.str[FP_STR_LINE] = 8; /* too long reports first, in a later field too */
    ASSERT_EQ(fp_record_check(&r, s_t.n, flags), FP_RECORD_STRING_TOO_LONG);
    r.str[FP_STR_LINE] = 0;
    r.str[FP_STR_REASON] = 8;
    ASSERT_EQ(fp_record_check(&r, s_t.n, flags), FP_RECORD_STRING_TOO_LONG);
    r = s_rec(FP_KIND_PART_COUNT);
    r.kind = 0;
    r.str[FP_STR_PLANT] = 7;
    ASSERT_EQ(fp_record_check(&r, s_t.n, flags), FP_RECORD_UNKNOWN_KIND);
}

TEST(test_missing_kind_fields)
{
    fp_record_t r = s_rec(FP_KIND_MATERIAL);
    r.str[FP_STR_MATERIAL] = 0;
    ASSERT_EQ(s_check(&r), FP_RECORD_MISSING_MATERIAL);
    r = s_rec(FP_KIND_MATERIAL);
    r.str[FP_STR_UNIT] = 0;
    ASSERT_EQ(s_check(&r), FP_RECORD_MISSING_MATERIAL);
    r = s_rec(FP_KIND_SCRAP);
    r.str[FP_STR_REASON] = 0;
    ASSERT_EQ(s_check(&r), FP_RECORD_MISSING_REASON);
    /* Counter readings need their counter's name; a scrap counter a reason. */
    r = s_rec(FP_KIND_PART_COUNTER);
    r.str[FP_STR_COUNTER] = 0;
    ASSERT_EQ(s_check(&r), FP_RECORD_MISSING_COUNTER);
    r = s_rec(FP_KIND_SCRAP_COUNTER);
    r.str[FP_STR_REASON] = 0;
    ASSERT_EQ(s_check(&r), FP_RECORD_MISSING_REASON);
    r = s_rec(FP_KIND_SCRAP_COUNTER);
    r.str[FP_STR_COUNTER] = 0;
    ASSERT_EQ(s_check(&r), FP_RECORD_MISSING_COUNTER);
    /* Other kinds need neither. */
    r = s_rec(FP_KIND_OP_COMPLETED);
    ASSERT_EQ(s_check(&r), FP_RECORD_OK);
}

/* The dead-letter reasons and details are today's, exactly (e2e tests and
   subscribers match on them). */
TEST(test_reasons_and_details)
{
    struct {
        fp_record_reason_t rc;
        fp_dl_reason_t dl;
        const char *name, *detail;
    } want[] = {
        {FP_RECORD_UNKNOWN_KIND, FP_DL_unknown_kind, "unknown_kind", "kind must be 1..7"},
        {FP_RECORD_BAD_STRING_INDEX, FP_DL_bad_string_index, "bad_string_index",
         "string index beyond the batch's string table"},
        {FP_RECORD_MISSING_KEY, FP_DL_missing_field, "missing_field",
         "plant, order and operation are required"},
        {FP_RECORD_STRING_TOO_LONG, FP_DL_string_too_long, "string_too_long",
         "a string field is longer than 80 bytes"},
        {FP_RECORD_STRING_HAS_NUL, FP_DL_string_has_nul, "string_has_nul",
         "a string field has a NUL byte in it"},
        {FP_RECORD_MISSING_MATERIAL, FP_DL_missing_field, "missing_field",
         "MaterialConsumed needs material and unit"},
        {FP_RECORD_MISSING_REASON, FP_DL_missing_field, "missing_field",
         "Scrap and ScrapCounter need a reason"},
        {FP_RECORD_MISSING_COUNTER, FP_DL_missing_field, "missing_field",
         "PartCounter and ScrapCounter need the counter's name (the material field)"},
    };
    ASSERT_EQ(sizeof want / sizeof want[0], FP_RECORD_REASONS - 1);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ASSERT_EQ(fp_record_reason_dl(want[i].rc), want[i].dl);
        ASSERT_STREQ(fp_dl_reason_name(fp_record_reason_dl(want[i].rc)), want[i].name);
        ASSERT_STREQ(fp_record_reason_detail(want[i].rc), want[i].detail);
    }
    ASSERT_STREQ(fp_record_reason_detail(FP_RECORD_OK), "");
    ASSERT_EQ(fp_record_reason_dl((fp_record_reason_t)99), FP_DL_other);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    const uint32_t len[] = {2, 2, 2, 5, 2, 4, FP_STRING_MAX, FP_STRING_MAX + 1};
    s_table(&s_t, len, 8);
    RUN(test_valid_record_of_each_kind);
    RUN(test_unknown_kind);
    RUN(test_bad_string_index_every_field);
    RUN(test_missing_key);
    RUN(test_string_too_long_any_field);
    RUN(test_string_has_nul_any_field);
    RUN(test_missing_kind_fields);
    RUN(test_reasons_and_details);
    return test_done();
}
