/*  fuzz_position.c - libFuzzer target for the jsonl sink's position file
    DIR/.PREFIX.position (fp_jsonl_parse_position, src/sinks/sink_jsonl.h),
    the bytes s_open reads back at every open: the input is the file's
    content, in a buffer of exactly its size (ASan sees any read past it).

    Invariants: accepted means position == pending last >= pending first
    and only digits, blanks, CR and LF; what the sink would write for
    those values ("%llu %llu %llu\n") parses to the same values; a refusal
    leaves the outputs untouched.

    Seeds: fuzz/seeds/position/ (files the sink writes, a hand edit).
*/
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "sink_jsonl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    uint64_t pos = 1, first = 2, last = 3;
    int rc = fp_jsonl_parse_position(text, size, &pos, &first, &last);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(pos == 1 && first == 2 && last == 3);
    } else {
        FUZZ_CHECK(pos == last && first <= last);
        for (size_t i = 0; i < size; i++)
            FUZZ_CHECK(strchr("0123456789 \t\r\n", text[i]) != NULL && text[i] != '\0');
        char again[96];
        int n = snprintf(again, sizeof again, "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", pos, first,
                         last);
        uint64_t p2, f2, l2;
        FUZZ_CHECK(fp_jsonl_parse_position(again, (size_t)n, &p2, &f2, &l2) == 0);
        FUZZ_CHECK(p2 == pos && f2 == first && l2 == last);
    }
    free(text);
    return 0;
}
