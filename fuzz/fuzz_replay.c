/*  fuzz_replay.c - libFuzzer target for the replay request
    (fp_replay_parse_request, src/readers/replay.h): the frame a client
    sends to the replay ROUTER, as it arrives (not NUL-terminated; the
    target copies it to a buffer of exactly its size, so ASan sees any
    read past it).

    Invariants: an accepted frame has from >= 1, holds only the word, digits,
    blanks and trailing CR/LF/NUL, and its values written back as
    "REPLAY <from> <max>" parse to the same values; a refusal leaves the
    outputs untouched.

    Seeds: fuzz/seeds/replay/ (requests of tail, fp.py, bench/replayer.c).
*/
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "replay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *frame = malloc(size ? size : 1);
    if (!frame)
        abort();
    memcpy(frame, data, size);
    uint64_t from = 7, max = 9;
    int rc = fp_replay_parse_request(frame, size, &from, &max);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(from == 7 && max == 9);
    } else {
        FUZZ_CHECK(from >= 1);
        FUZZ_CHECK(size >= 10 && memcmp(frame, "REPLAY", 6) == 0);
        for (size_t i = 6; i < size; i++)
            FUZZ_CHECK(strchr("0123456789 \t\r\n", frame[i]) != NULL || frame[i] == '\0');
        char again[64];
        int n = snprintf(again, sizeof again, "REPLAY %" PRIu64 " %" PRIu64, from, max);
        uint64_t f2 = 0, m2 = 0;
        FUZZ_CHECK(fp_replay_parse_request(again, (size_t)n, &f2, &m2) == 0);
        FUZZ_CHECK(f2 == from && m2 == max);
    }
    free(frame);
    return 0;
}
