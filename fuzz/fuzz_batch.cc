/*  fuzz_batch.cc - libFuzzer target for every codec entry point that reads
    untrusted bytes: batch parse (+ every record field and string of a batch
    that parses), peek_source, checkpoint decode and JSON, ack decode.

    Build and run: make fuzz FUZZ_SECONDS=60 (see fuzz/README.md).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* Keeps the compiler from dropping reads whose result is otherwise unused. */
static volatile uint64_t s_sink;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The codec wants 8-byte aligned buffers: copy into one of exactly
       `size` bytes (rounded up) so ASan still sees reads past the end. */
    uint64_t *buf = static_cast<uint64_t *>(malloc(size ? size : 1));
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    uint64_t sum = 0;

    fp_batch_view_t v;
    if (fp_codec_batch_parse(buf, size, 1u << 20, &v) == FP_CODEC_OK) {
        sum += v.version + v.source_id + v.epoch + v.nrecords + v.nstrings;
        for (uint32_t i = 0; i < v.nrecords; i++) {
            const fp_record_t *r = &v.records[i];
            sum += r->seq + (uint64_t)r->time_ns + (uint64_t)r->quantity + r->kind +
                   r->reserved0 + r->reserved1;
            for (int k = 0; k < FP_STR_FIELDS; k++)
                sum += r->str[k];
        }
        for (uint32_t i = 0; i <= v.nstrings; i++) {
            uint32_t len;
            const char *s = fp_codec_batch_string(&v, i, &len);
            for (uint32_t k = 0; k <= len; k++) /* <=: the NUL too */
                sum += (unsigned char)s[k];
        }
    }
    sum += fp_codec_batch_peek_source(data, size); /* unaligned on purpose */

    fp_checkpoint_t ck;
    if (fp_codec_checkpoint_decode(buf, size, &ck) == FP_CODEC_OK) {
        const char *strs[] = {ck.event_id, ck.instance, ck.plant, ck.line, ck.order,
                              ck.operation, ck.material, ck.lot, ck.unit, ck.reason};
        for (const char *s : strs)
            sum += strlen(s);
        sum += ck.stream_seq + ck.nlineage + (uint64_t)ck.kind;
        for (uint32_t i = 0; i < ck.nlineage; i++)
            sum += ck.lineage[i].last_seq;
    }
    char json[4096];
    int n = fp_codec_checkpoint_to_json(buf, size, json, sizeof json);
    if (n >= 0) {
        if ((size_t)n >= sizeof json || json[n] != '\0' || strlen(json) != (size_t)n)
            abort();
    }
    n = fp_codec_checkpoint_to_json(data, size, json, 64); /* unaligned, small cap */
    if (n >= 64)
        abort();

    fp_ack_t ack;
    if (fp_codec_ack_decode(data, size, &ack) == FP_CODEC_OK)
        sum += strlen(ack.reason) + ack.acked_seq;

    s_sink = sum;
    free(buf);
    return 0;
}
