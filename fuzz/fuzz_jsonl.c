/*  fuzz_jsonl.c - libFuzzer target for the JSON Lines reader of
    `floorpost send` (jsonl_parse, src/cli/jsonl.c): the input is a file of
    lines, each parsed in turn by one parser (as cmd_clients.c does).

    Invariants: 0 gives a record with source_id >= 1, seq >= 1, a kind in
    1..5, epoch and source_id at most INT64_MAX, and strings readable until
    the next line; 1 only for a blank or '#' line; -1 always with a message
    that fits the buffer (also a tiny one).

    Seeds: fuzz/seeds/jsonl/ (the lines of tests/cli/test_jsonl.c).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "jsonl.h"

static void s_one(jsonl_t *j, const char *line)
{
    uint64_t source_id = 0, epoch = 0;
    fp_rec_in_t rec;
    memset(&rec, 0, sizeof rec);
    char err[256];
    err[0] = '\0';
    int rc = jsonl_parse(j, line, &source_id, &epoch, &rec, err, sizeof err);
    if (rc == 0) {
        FUZZ_CHECK(source_id >= 1 && source_id <= INT64_MAX);
        FUZZ_CHECK(epoch <= INT64_MAX);
        FUZZ_CHECK(rec.seq >= 1 && rec.seq <= INT64_MAX);
        FUZZ_CHECK(rec.kind >= 1 && rec.kind <= FP_KIND_MAX);
        size_t sum = 0;
        for (int k = 0; k < FP_STR_FIELDS; k++)
            if (rec.str[k])
                sum += strlen(rec.str[k]);
        (void)sum;
    } else if (rc == 1) {
        size_t skip = strspn(line, " \t\r\n");
        FUZZ_CHECK(line[skip] == '\0' || line[skip] == '#');
    } else {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(err[0] != '\0' && strlen(err) < sizeof err);
        char tiny[4] = "xyz";
        FUZZ_CHECK(jsonl_parse(j, line, &source_id, &epoch, &rec, tiny, sizeof tiny) == -1);
        FUZZ_CHECK(strlen(tiny) < sizeof tiny);
        FUZZ_CHECK(jsonl_parse(j, line, &source_id, &epoch, &rec, NULL, 0) == -1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jsonl_t *j = jsonl_new();
    char *text = malloc(size + 1);
    if (!j || !text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    /* Lines as getline gives them: with their newline; a NUL ends what
       jsonl_parse sees of a line. */
    size_t at = 0;
    while (at < size) {
        const char *nl = memchr(text + at, '\n', size - at);
        size_t end = nl ? (size_t)(nl - text) + 1 : size;
        char saved = text[end];
        text[end] = '\0';
        s_one(j, text + at);
        text[end] = saved;
        at = end;
    }
    jsonl_destroy(&j);
    FUZZ_CHECK(j == NULL);
    free(text);
    return 0;
}
