/*  sink_jsonl.h - what the jsonl sink (sink_jsonl.c; its type is
    fp_sink_jsonl in sink.h) exports besides its type: the parser of its
    position file, pure so that it is unit-tested and fuzzed
    (fuzz/fuzz_position.c).

    DIR/.PREFIX.position is written by the sink as
        "<position> <pending first> <pending last>\n"
    and may have been edited by hand (the sink's error says "fix or remove
    it by hand"). Accepted: three unsigned decimals (digits only, no sign,
    each at most 2^64-1) separated by spaces or tabs, then only blanks, CR
    or LF; position == pending last; pending first <= pending last
    (pending first 0: no rename pending). Anything else is damaged.

    Thread contract: pure, any thread.
*/
#ifndef FP_SINK_JSONL_H
#define FP_SINK_JSONL_H

#include <stddef.h>
#include <stdint.h>

/* Parses len bytes of text (not NUL-terminated). 0 with the three values,
   or -1 (outputs untouched). */
int fp_jsonl_parse_position(const char *text, size_t len, uint64_t *position, uint64_t *first,
                            uint64_t *last);

#endif
