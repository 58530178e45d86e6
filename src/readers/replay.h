/*  replay.h - the replay request, parsed apart from the replay thread
    (replay.c; its thread function is fp_replay_main in stage.h) so that it
    can be unit-tested and fuzzed (fuzz/fuzz_replay.c).

    A request is one frame of text from an untrusted client
    (docs/subscribers.md):
        REPLAY <from_global_seq> <max_events>
    the word REPLAY, then two unsigned decimal numbers (digits only, no
    sign, each at most 2^64-1; from_global_seq at least 1), each after one
    or more spaces or tabs. After the second number only blanks, CR, LF or
    NUL bytes may follow (a client that sends a C string with its NUL, or a
    line). Anything else is refused; the frame is not NUL-terminated.

    Thread contract: pure, any thread.
*/
#ifndef FP_REPLAY_H
#define FP_REPLAY_H

#include <stddef.h>
#include <stdint.h>

/* 0 with *from and *max (not capped: the caller caps max at its
   FP_REPLAY_MAX), or -1 for a frame that is not a request (outputs
   untouched). */
int fp_replay_parse_request(const void *frame, size_t len, uint64_t *from, uint64_t *max);

#endif
