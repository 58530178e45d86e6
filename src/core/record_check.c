/*  record_check.c - reason strings of the record check. See record_check.h. */
#include "record_check.h"

static const struct {
    fp_dl_reason_t reason;
    const char *detail;
} s_reasons[FP_RECORD_REASONS] = {
    [FP_RECORD_OK] = {FP_DL_other, ""},
    [FP_RECORD_UNKNOWN_KIND] = {FP_DL_unknown_kind, "kind must be 1..7"},
    [FP_RECORD_BAD_STRING_INDEX] = {FP_DL_bad_string_index,
                                    "string index beyond the batch's string table"},
    [FP_RECORD_MISSING_KEY] = {FP_DL_missing_field, "plant, order and operation are required"},
    [FP_RECORD_STRING_TOO_LONG] = {FP_DL_string_too_long,
                                   "a string field is longer than 80 bytes"},
    [FP_RECORD_STRING_HAS_NUL] = {FP_DL_string_has_nul,
                                  "a string field has a NUL byte in it"},
    [FP_RECORD_MISSING_MATERIAL] = {FP_DL_missing_field,
                                    "MaterialConsumed needs material and unit"},
    [FP_RECORD_MISSING_REASON] = {FP_DL_missing_field, "Scrap and ScrapCounter need a reason"},
    [FP_RECORD_MISSING_COUNTER] = {FP_DL_missing_field,
                                   "PartCounter and ScrapCounter need the counter's name "
                                   "(the material field)"},
};

_Static_assert(FP_KIND_MAX == 7 && FP_STRING_MAX == 80, "the details name these numbers");

fp_dl_reason_t fp_record_reason_dl(fp_record_reason_t rc)
{
    return (unsigned)rc < FP_RECORD_REASONS ? s_reasons[rc].reason : FP_DL_other;
}

const char *fp_record_reason_detail(fp_record_reason_t rc)
{
    return (unsigned)rc < FP_RECORD_REASONS ? s_reasons[rc].detail : "";
}
