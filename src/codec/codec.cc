/*  codec.cc - the FlatBuffers side of floorpost (see codec.h for the API).

    The only C++ in floorpost: flatc-generated accessors and the official
    FlatBuffers library behind a C API. Built with -fno-exceptions -fno-rtti.

    Invariants this file relies on:
    - Untrusted buffers pass flatbuffers::Verifier (depth <= 8, <= 64 tables)
      before any accessor touches them; nothing is read before the length
      checks (oversized, too short).
    - Parsed batches are used in place: fp_record_t has the byte layout of the
      wire Record struct (checked below), so view->records points straight into
      the caller's buffer and parse does O(1) + O(strings) work.
    - Vectors of structs (records, lineage) are read in place, so their data
      must be 8-byte aligned in memory. The FlatBuffers verifier only checks the
      4-byte alignment of a vector's length field, so we check the data
      alignment ourselves (a FlatBuffers builder always aligns it; a buffer
      that does not is malformed).
    - No exceptions: a builder that runs out of memory aborts the process (the
      library's default allocator); FP_CODEC_NOMEM is returned only where we
      allocate with new (std::nothrow) ourselves.
*/
#include "codec.h"

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <new>
#include <vector>

#include "checkpoint_generated.h"
#include "telemetry_generated.h"

namespace fbt = floorpost::telemetry;
namespace fbc = floorpost::checkpoint;

/* ---- Layout of fp_record_t vs the wire Record ----

   The generated Record keeps its members private, so offsetof() cannot name
   them. What makes the layouts equal instead: FlatBuffers lays struct fields
   out in schema order, padding each to its own alignment, and flatc's
   FLATBUFFERS_STRUCT_END(Record, 48) in the generated header asserts the
   total. The schema order (seq, time_ns, quantity, 9 ushort strings, kind,
   reserved0, reserved1) sums to exactly 48 bytes, so there is no padding and
   every field sits at the offset fp_record_t gives it, which we pin here.
   tests/codec/test_codec.c also parses a batch written by an independent writer
   (the Python flatbuffers package) and checks every field. */
static_assert(FLATBUFFERS_LITTLEENDIAN, "records are used in place: little-endian only");
static_assert(sizeof(fbt::Record) == 48, "wire Record must be 48 bytes");
static_assert(sizeof(fp_record_t) == sizeof(fbt::Record), "fp_record_t must match Record");
static_assert(alignof(fbt::Record) == 8 && alignof(fp_record_t) == 8, "Record alignment");
static_assert(offsetof(fp_record_t, seq) == 0, "seq");
static_assert(offsetof(fp_record_t, time_ns) == 8, "time_ns");
static_assert(offsetof(fp_record_t, quantity) == 16, "quantity");
static_assert(offsetof(fp_record_t, str) == 24, "str[]");
static_assert(offsetof(fp_record_t, str) + FP_STR_PLANT * 2 == 24, "plant");
static_assert(offsetof(fp_record_t, str) + FP_STR_LINE * 2 == 26, "line");
static_assert(offsetof(fp_record_t, str) + FP_STR_STATION * 2 == 28, "station");
static_assert(offsetof(fp_record_t, str) + FP_STR_ORDER * 2 == 30, "order");
static_assert(offsetof(fp_record_t, str) + FP_STR_OPERATION * 2 == 32, "operation");
static_assert(offsetof(fp_record_t, str) + FP_STR_MATERIAL * 2 == 34, "material");
static_assert(offsetof(fp_record_t, str) + FP_STR_LOT * 2 == 36, "lot");
static_assert(offsetof(fp_record_t, str) + FP_STR_UNIT * 2 == 38, "unit");
static_assert(offsetof(fp_record_t, str) + FP_STR_REASON * 2 == 40, "reason");
static_assert(FP_STR_FIELDS == 9, "9 string fields");
static_assert(offsetof(fp_record_t, kind) == 42, "kind");
static_assert(offsetof(fp_record_t, reserved0) == 43, "reserved0");
static_assert(offsetof(fp_record_t, reserved1) == 44, "reserved1");
static_assert(sizeof(fbc::SeqRange) == sizeof(fp_seq_range_t), "SeqRange");
static_assert((int)fbt::Kind::OperationCompleted == FP_KIND_OP_COMPLETED, "Kind values");
static_assert((int)fbc::Body::Consumption == FP_CK_CONSUMPTION &&
                  (int)fbc::Body::Completion == FP_CK_COMPLETION &&
                  (int)fbc::Body::Scrap == FP_CK_SCRAP &&
                  (int)fbc::Body::CounterReset == FP_CK_COUNTER_RESET,
              "Body values");
static_assert((int)fbt::Kind::PartCounter == FP_KIND_PART_COUNTER &&
                  (int)fbt::Kind::ScrapCounter == FP_KIND_SCRAP_COUNTER,
              "counter Kind values");

/* Verifier limits: a Batch is 1 table, a Checkpoint 3; nothing legitimate
   nests deeper than 2. */
#define S_MAX_DEPTH 8
#define S_MAX_TABLES 64
#define S_ID_BATCH "FPT1"
#define S_ID_ACK "FPA1"
#define S_ID_CHECKPOINT "FPC1"
#define S_VERSION 1
/* FLATBUFFERS_MIN_BUFFER_SIZE, which names its types unqualified: root
   offset + vtable offset + vtable size + table size = 12 bytes. */
#define S_MIN_LEN (sizeof(flatbuffers::uoffset_t) + sizeof(flatbuffers::soffset_t) + \
                   2 * sizeof(flatbuffers::voffset_t))

struct fp_codec {
    flatbuffers::FlatBufferBuilder fbb;                   /* Clear()ed per encode */
    std::vector<flatbuffers::Offset<flatbuffers::String>> offs; /* reused scratch */
};

const char *fp_codec_strerror(int rc)
{
    switch (rc) {
    case FP_CODEC_OK: return "ok";
    case FP_CODEC_TOO_SHORT: return "truncated";
    case FP_CODEC_OVERSIZED: return "oversized";
    case FP_CODEC_WRONG_ID: return "wrong_identifier";
    case FP_CODEC_VERIFY: return "malformed";
    case FP_CODEC_MISSING: return "missing_field";
    case FP_CODEC_VERSION: return "unsupported_version";
    case FP_CODEC_TOO_MANY_STRINGS: return "too_many_strings";
    case FP_CODEC_NOMEM: return "no_memory";
    case FP_CODEC_SPACE: return "no_space";
    default: return "unknown";
    }
}

static bool s_aligned8(const void *p)
{
    return ((uintptr_t)p & 7u) == 0;
}

/* Length checks, before any byte is read. The Verifier itself asserts
   len < 2 GiB, so that is "oversized" whatever max_len says. The shortest
   frame we read is the library's minimum (root offset, vtable offset and two
   vtable fields: 12 bytes); shorter is "truncated". */
static int s_check_len(size_t len, size_t max_len)
{
    if (len > max_len || len >= FLATBUFFERS_MAX_BUFFER_SIZE)
        return FP_CODEC_OVERSIZED;
    if (len < S_MIN_LEN)
        return FP_CODEC_TOO_SHORT;
    return FP_CODEC_OK;
}

/* Length checks, then the 4-byte file identifier at offset 4 (any alignment). */
static int s_check_frame(const void *buf, size_t len, size_t max_len, const char *id)
{
    int rc = s_check_len(len, max_len);
    if (rc != FP_CODEC_OK)
        return rc;
    if (memcmp(static_cast<const uint8_t *>(buf) + 4, id, 4) != 0)
        return FP_CODEC_WRONG_ID;
    return FP_CODEC_OK;
}

static flatbuffers::Verifier::Options s_verifier_opts(void)
{
    flatbuffers::Verifier::Options o;
    o.max_depth = S_MAX_DEPTH;
    o.max_tables = S_MAX_TABLES;
    o.check_alignment = true;
    o.check_nested_flatbuffers = true;
    return o;
}

/* After a failed full verify: does the root table itself verify while one of
   the required offset fields `fields` is absent? Then the buffer is a sound
   table missing a field (MISSING), not garbage (VERIFY). */
static int s_classify_failure(const void *buf, size_t len, const flatbuffers::voffset_t *fields,
                              size_t nfields)
{
    flatbuffers::Verifier v(static_cast<const uint8_t *>(buf), len, s_verifier_opts());
    if (v.VerifyOffset(0) == 0)
        return FP_CODEC_VERIFY;
    const flatbuffers::Table *root = flatbuffers::GetRoot<flatbuffers::Table>(buf);
    if (!root->VerifyTableStart(v))
        return FP_CODEC_VERIFY;
    for (size_t i = 0; i < nfields; i++)
        if (!root->CheckField(fields[i]))
            return FP_CODEC_MISSING;
    return FP_CODEC_VERIFY;
}

/* ---- Telemetry batches ---- */

int fp_codec_batch_parse(const void *buf, size_t len, size_t max_len, fp_batch_view_t *view)
{
    assert(view);
    int rc = s_check_len(len, max_len);
    if (rc != FP_CODEC_OK)
        return rc;
    /* An unaligned buffer is the caller's bug (codec.h: copy it first), not
       bad input: records are read in place as uint64_t. */
    assert(s_aligned8(buf) && "fp_codec_batch_parse: buf must be 8-byte aligned");
    if (memcmp(static_cast<const uint8_t *>(buf) + 4, S_ID_BATCH, 4) != 0)
        return FP_CODEC_WRONG_ID;

    const uint8_t *p = static_cast<const uint8_t *>(buf);
    flatbuffers::Verifier v(p, len, s_verifier_opts());
    if (!v.VerifyBuffer<fbt::Batch>(S_ID_BATCH)) {
        static const flatbuffers::voffset_t req[] = {fbt::Batch::VT_STRINGS,
                                                     fbt::Batch::VT_RECORDS};
        return s_classify_failure(buf, len, req, 2);
    }
    const fbt::Batch *b = fbt::GetBatch(buf);
    if (b->version() > S_VERSION)
        return FP_CODEC_VERSION;
    if (b->source_id() == 0)
        return FP_CODEC_MISSING;
    const auto *strings = b->strings();
    if (strings->size() > FP_BATCH_STRINGS_MAX)
        return FP_CODEC_TOO_MANY_STRINGS;
    const auto *records = b->records();
    if (records->size() > 0 && !s_aligned8(records->Data()))
        return FP_CODEC_VERIFY; /* (an empty vector's data need no alignment) */

    view->version = b->version();
    view->source_id = b->source_id();
    view->epoch = b->epoch();
    view->records = reinterpret_cast<const fp_record_t *>(records->Data());
    view->nrecords = records->size();
    view->nstrings = strings->size();
    view->impl_strings = strings;
    return FP_CODEC_OK;
}

const char *fp_codec_batch_string(const fp_batch_view_t *view, uint32_t idx, uint32_t *len)
{
    assert(view && idx <= view->nstrings);
    if (idx == 0) {
        if (len)
            *len = 0;
        return "";
    }
    const auto *strings =
        static_cast<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>> *>(
            view->impl_strings);
    const flatbuffers::String *s = strings->Get(idx - 1);
    if (len)
        *len = s->size();
    return s->c_str();
}

/* Little-endian reads that need no alignment (peek runs on raw frames). */
static uint32_t s_rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return flatbuffers::EndianScalar(v);
}

static uint16_t s_rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return flatbuffers::EndianScalar(v);
}

uint64_t fp_codec_batch_peek_source(const void *buf, size_t len)
{
    /* Hand-rolled, bounds-checked walk root -> table -> vtable -> field, with
       memcpy reads: the frame need not be aligned and is not verified. */
    if (!buf || len < S_MIN_LEN || len >= FLATBUFFERS_MAX_BUFFER_SIZE)
        return 0;
    const uint8_t *p = static_cast<const uint8_t *>(buf);
    if (memcmp(p + 4, S_ID_BATCH, 4) != 0)
        return 0;
    uint64_t table = s_rd32(p);
    if (table < 8 || table + 4 > len)
        return 0;
    int32_t soff = (int32_t)s_rd32(p + table);
    int64_t vtable = (int64_t)table - soff;
    if (vtable < 0 || (uint64_t)vtable + 4 > len)
        return 0;
    uint16_t vsize = s_rd16(p + vtable);
    if (vsize <= fbt::Batch::VT_SOURCE_ID + 1 || (uint64_t)vtable + vsize > len)
        return 0;
    uint16_t fo = s_rd16(p + vtable + fbt::Batch::VT_SOURCE_ID);
    if (fo == 0 || table + fo + 8 > len)
        return 0;
    uint64_t id;
    memcpy(&id, p + table + fo, sizeof id);
    return flatbuffers::EndianScalar(id);
}

/* ---- Builder ---- */

fp_codec_t *fp_codec_new(void)
{
    return new (std::nothrow) fp_codec();
}

void fp_codec_destroy(fp_codec_t **self_p)
{
    assert(self_p);
    delete *self_p;
    *self_p = NULL;
}

static void s_finish(fp_codec_t *self, const void **out, size_t *out_len)
{
    *out = self->fbb.GetBufferPointer();
    *out_len = self->fbb.GetSize();
}

int fp_codec_batch_encode(fp_codec_t *self, uint64_t source_id, uint64_t epoch,
                          const char *const *strings, uint32_t nstrings,
                          const fp_record_t *records, uint32_t nrecords,
                          const void **out, size_t *out_len)
{
    return fp_codec_batch_encode_n(self, source_id, epoch, strings, nullptr, nstrings, records,
                                   nrecords, out, out_len);
}

int fp_codec_batch_encode_n(fp_codec_t *self, uint64_t source_id, uint64_t epoch,
                            const char *const *strings, const uint32_t *lens, uint32_t nstrings,
                            const fp_record_t *records, uint32_t nrecords, const void **out,
                            size_t *out_len)
{
    assert(self && out && out_len);
    assert(nstrings == 0 || strings);
    assert(nrecords == 0 || records);
    if (nstrings > FP_BATCH_STRINGS_MAX)
        return FP_CODEC_TOO_MANY_STRINGS;
    flatbuffers::FlatBufferBuilder &fbb = self->fbb;
    fbb.Clear();
    /* The builder writes back to front, so the first object built ends the
       buffer. The records vector (48 * n bytes, 8-aligned) needs no padding
       there; a string first would leave padding after its NUL, and a buffer
       cut in that padding would still verify. Records first makes every
       truncation of the frame fail to verify. */
    auto rvec = fbb.CreateVectorOfStructs(reinterpret_cast<const fbt::Record *>(records), nrecords);
    self->offs.clear();
    self->offs.reserve(nstrings);
    for (uint32_t i = 0; i < nstrings; i++)
        self->offs.push_back(!strings[i] ? fbb.CreateString("")
                             : lens ? fbb.CreateString(strings[i], lens[i])
                                    : fbb.CreateString(strings[i]));
    auto svec = fbb.CreateVector(self->offs);
    auto root = fbt::CreateBatch(fbb, S_VERSION, source_id, epoch, svec, rvec);
    fbb.Finish(root, S_ID_BATCH);
    s_finish(self, out, out_len);
    return FP_CODEC_OK;
}

/* ---- Acks ---- */

int fp_codec_ack_encode(fp_codec_t *self, const fp_ack_t *a, const void **out, size_t *out_len)
{
    assert(self && a && out && out_len);
    assert(a->status >= 0 && a->status <= UINT8_MAX);
    flatbuffers::FlatBufferBuilder &fbb = self->fbb;
    fbb.Clear();
    size_t rn = strnlen(a->reason, sizeof a->reason);
    auto r = rn ? fbb.CreateString(a->reason, rn) : flatbuffers::Offset<flatbuffers::String>();
    auto root = fbt::CreateAck(fbb, S_VERSION, a->source_id, a->epoch, a->acked_seq,
                               a->batch_last_seq, (uint8_t)a->status, r, a->batch_first_seq,
                               a->batch_records, a->dead_letters);
    fbb.Finish(root, S_ID_ACK);
    s_finish(self, out, out_len);
    return FP_CODEC_OK;
}

/* Small frames may arrive unaligned (ZeroMQ hands out data at any offset):
   functions that return nothing pointing into buf decode from an aligned
   copy instead. Copies up to S_STACK_COPY bytes on the stack, else on the
   heap. */
#define S_STACK_COPY 1024

namespace {
struct s_aligned_copy {
    const void *data = nullptr;
    uint64_t *heap = nullptr;
    uint64_t stack[S_STACK_COPY / 8];
    s_aligned_copy(const s_aligned_copy &) = delete;
    s_aligned_copy &operator=(const s_aligned_copy &) = delete;
    s_aligned_copy() {}
    ~s_aligned_copy() { delete[] heap; }
    /* Returns FP_CODEC_OK or FP_CODEC_NOMEM. len < 2 GiB was checked. */
    int set(const void *buf, size_t len)
    {
        if (s_aligned8(buf)) {
            data = buf;
            return FP_CODEC_OK;
        }
        uint64_t *dst = stack;
        if (len > sizeof stack) {
            heap = new (std::nothrow) uint64_t[(len + 7) / 8];
            if (!heap)
                return FP_CODEC_NOMEM;
            dst = heap;
        }
        memcpy(dst, buf, len);
        data = dst;
        return FP_CODEC_OK;
    }
};
} // namespace

int fp_codec_ack_decode(const void *buf, size_t len, fp_ack_t *ack)
{
    assert(ack);
    int rc = s_check_frame(buf, len, FLATBUFFERS_MAX_BUFFER_SIZE - 1, S_ID_ACK);
    if (rc != FP_CODEC_OK)
        return rc;
    s_aligned_copy copy;
    if ((rc = copy.set(buf, len)) != FP_CODEC_OK)
        return rc;
    flatbuffers::Verifier v(static_cast<const uint8_t *>(copy.data), len, s_verifier_opts());
    if (!v.VerifyBuffer<fbt::Ack>(S_ID_ACK))
        return FP_CODEC_VERIFY;
    const fbt::Ack *a = flatbuffers::GetRoot<fbt::Ack>(copy.data);
    if (a->version() > S_VERSION)
        return FP_CODEC_VERSION;
    ack->source_id = a->source_id();
    ack->epoch = a->epoch();
    ack->acked_seq = a->acked_seq();
    ack->batch_last_seq = a->batch_last_seq();
    ack->batch_first_seq = a->batch_first_seq();
    ack->batch_records = a->batch_records();
    ack->dead_letters = a->dead_letters();
    ack->status = a->status();
    ack->reason[0] = '\0';
    if (a->reason()) {
        size_t n = a->reason()->size();
        if (n > sizeof ack->reason - 1)
            n = sizeof ack->reason - 1;
        memcpy(ack->reason, a->reason()->data(), n);
        ack->reason[n] = '\0';
    }
    return FP_CODEC_OK;
}

/* ---- Checkpoints ---- */

static flatbuffers::Offset<flatbuffers::String> s_opt_string(flatbuffers::FlatBufferBuilder &fbb,
                                                             const char *s)
{
    return s ? fbb.CreateString(s) : flatbuffers::Offset<flatbuffers::String>();
}

int fp_codec_checkpoint_encode(fp_codec_t *self, const fp_checkpoint_t *ck,
                               const void **out, size_t *out_len)
{
    assert(self && ck && out && out_len);
    assert(ck->kind >= FP_CK_CONSUMPTION && ck->kind <= FP_CK_KIND_MAX);
    assert(ck->nlineage <= FP_LINEAGE_MAX);
    flatbuffers::FlatBufferBuilder &fbb = self->fbb;
    fbb.Clear();

    /* Children first (FlatBuffers builds bottom-up). The lineage vector
       first of all, so it ends the buffer with no padding after it: then any
       truncation fails to verify (see fp_codec_batch_encode). */
    auto lineage = fbb.CreateVectorOfStructs(
        reinterpret_cast<const fbc::SeqRange *>(ck->lineage), ck->nlineage);
    flatbuffers::Offset<void> body;
    if (ck->kind == FP_CK_CONSUMPTION) {
        auto material = s_opt_string(fbb, ck->material);
        auto lot = s_opt_string(fbb, ck->lot);
        auto unit = s_opt_string(fbb, ck->unit);
        body = fbc::CreateConsumption(fbb, material, lot, unit, ck->quantity).Union();
    } else if (ck->kind == FP_CK_COMPLETION) {
        body = fbc::CreateCompletion(fbb, ck->yield, ck->scrap, ck->final).Union();
    } else if (ck->kind == FP_CK_SCRAP) {
        auto reason = s_opt_string(fbb, ck->reason);
        body = fbc::CreateScrap(fbb, reason, ck->parts).Union();
    } else {
        auto station = s_opt_string(fbb, ck->station);
        auto counter = s_opt_string(fbb, ck->counter);
        auto reason = s_opt_string(fbb, ck->reason);
        body = fbc::CreateCounterReset(fbb, station, counter, ck->counter_scrap, reason,
                                       ck->previous, ck->reading)
                   .Union();
    }
    auto event_id = fbb.CreateString(ck->event_id ? ck->event_id : "");
    auto instance = s_opt_string(fbb, ck->instance);
    auto plant = s_opt_string(fbb, ck->plant);
    auto line = s_opt_string(fbb, ck->line);
    auto order = s_opt_string(fbb, ck->order);
    auto operation = s_opt_string(fbb, ck->operation);
    bool posted = ck->posting_date && ck->posting_date[0];
    bool reposted = posted && ck->original_posting_date && ck->original_posting_date[0];
    auto posting_date = posted ? fbb.CreateString(ck->posting_date)
                               : flatbuffers::Offset<flatbuffers::String>();
    auto period = posted ? s_opt_string(fbb, ck->period) : flatbuffers::Offset<flatbuffers::String>();
    auto original = reposted ? fbb.CreateString(ck->original_posting_date)
                             : flatbuffers::Offset<flatbuffers::String>();

    /* stream_seq must be stored even when 0 so set_stream_seq can patch it:
       force defaults for the fields of contract version 1 (as CreateHeader
       orders them: 8-byte scalars, offsets, bools). The posting fields are
       stored only when there is a period, so an event without one is byte
       for byte what a floorpost before them wrote. */
    fbb.ForceDefaults(true);
    fbc::HeaderBuilder hb(fbb);
    hb.add_global_seq(ck->global_seq);
    hb.add_record_count(ck->record_count);
    hb.add_last_time_ns(ck->last_time_ns);
    hb.add_first_time_ns(ck->first_time_ns);
    hb.add_checkpoint_no(ck->checkpoint_no);
    hb.add_stream_seq(ck->stream_seq);
    fbb.ForceDefaults(false);
    if (posted) {
        hb.add_period_start_ns(ck->period_start_ns);
        hb.add_period_end_ns(ck->period_end_ns);
        if (reposted)
            hb.add_original_period_start_ns(ck->original_period_start_ns);
        hb.add_posting_date(posting_date);
        hb.add_period(period);
        if (reposted)
            hb.add_original_posting_date(original);
    }
    fbb.ForceDefaults(true);
    hb.add_lineage(lineage);
    hb.add_operation(operation);
    hb.add_order(order);
    hb.add_line(line);
    hb.add_plant(plant);
    hb.add_instance(instance);
    hb.add_event_id(event_id);
    hb.add_late(ck->late);
    hb.add_lineage_truncated(ck->lineage_truncated);
    fbb.ForceDefaults(false);
    if (posted)
        hb.add_backfill(ck->backfill);
    auto header = hb.Finish();
    auto root = fbc::CreateCheckpoint(fbb, S_VERSION, header, (fbc::Body)ck->kind, body);
    fbb.Finish(root, S_ID_CHECKPOINT);
    s_finish(self, out, out_len);
    return FP_CODEC_OK;
}

int fp_codec_checkpoint_set_stream_seq(void *buf, size_t len, uint64_t stream_seq)
{
    /* Trusted buffer (our own encode). The generated headers are built
       without --gen-mutable, so this is what mutate_stream_seq() would do:
       Table::SetField, which fails when the field is not stored. */
    assert(buf && len >= S_MIN_LEN);
    auto *root = flatbuffers::GetMutableRoot<flatbuffers::Table>(buf);
    auto *header = root->GetPointer<flatbuffers::Table *>(fbc::Checkpoint::VT_HEADER);
    if (!header)
        return FP_CODEC_MISSING;
    if (!header->SetField<uint64_t>(fbc::Header::VT_STREAM_SEQ, stream_seq))
        return FP_CODEC_MISSING;
    return FP_CODEC_OK;
}

int fp_codec_checkpoint_set_global_seq(void *buf, size_t len, uint64_t global_seq)
{
    /* As fp_codec_checkpoint_set_stream_seq; global_seq is force-stored too. */
    assert(buf && len >= S_MIN_LEN);
    auto *root = flatbuffers::GetMutableRoot<flatbuffers::Table>(buf);
    auto *header = root->GetPointer<flatbuffers::Table *>(fbc::Checkpoint::VT_HEADER);
    if (!header)
        return FP_CODEC_MISSING;
    if (!header->SetField<uint64_t>(fbc::Header::VT_GLOBAL_SEQ, global_seq))
        return FP_CODEC_MISSING;
    return FP_CODEC_OK;
}

int fp_codec_checkpoint_kind(const void *buf, size_t len)
{
    /* Our own encoded checkpoint (trusted): read the union's type field. */
    assert(buf && len >= S_MIN_LEN);
    (void)len;
    return (int)flatbuffers::GetRoot<fbc::Checkpoint>(buf)->body_type();
}

/* Verifies a checkpoint in buf (which must be 8-byte aligned) and returns its
   root in *out. */
static int s_checkpoint_verify(const void *buf, size_t len, const fbc::Checkpoint **out)
{
    int rc = s_check_frame(buf, len, FLATBUFFERS_MAX_BUFFER_SIZE - 1, S_ID_CHECKPOINT);
    if (rc != FP_CODEC_OK)
        return rc;
    assert(s_aligned8(buf));
    flatbuffers::Verifier v(static_cast<const uint8_t *>(buf), len, s_verifier_opts());
    if (!v.VerifyBuffer<fbc::Checkpoint>(S_ID_CHECKPOINT)) {
        static const flatbuffers::voffset_t req[] = {fbc::Checkpoint::VT_HEADER,
                                                     fbc::Checkpoint::VT_BODY};
        return s_classify_failure(buf, len, req, 2);
    }
    const fbc::Checkpoint *c = fbc::GetCheckpoint(buf);
    if (c->version() > S_VERSION)
        return FP_CODEC_VERSION;
    /* VerifyBody accepts unknown union types; we do not. */
    int kind = (int)c->body_type();
    if (kind < FP_CK_CONSUMPTION || kind > FP_CK_KIND_MAX)
        return FP_CODEC_VERIFY;
    const auto *lin = c->header()->lineage();
    if (lin && (lin->size() > FP_LINEAGE_MAX || (lin->size() > 0 && !s_aligned8(lin->Data()))))
        return FP_CODEC_VERIFY;
    *out = c;
    return FP_CODEC_OK;
}

static const char *s_str(const flatbuffers::String *s)
{
    return s ? s->c_str() : "";
}

int fp_codec_checkpoint_decode(const void *buf, size_t len, fp_checkpoint_t *ck)
{
    assert(ck);
    const fbc::Checkpoint *c;
    int rc = s_checkpoint_verify(buf, len, &c);
    if (rc != FP_CODEC_OK)
        return rc;
    const fbc::Header *h = c->header();
    memset(ck, 0, sizeof *ck);
    ck->kind = (int)c->body_type();
    ck->event_id = s_str(h->event_id());
    ck->stream_seq = h->stream_seq();
    ck->global_seq = h->global_seq();
    ck->checkpoint_no = h->checkpoint_no();
    ck->instance = s_str(h->instance());
    ck->plant = s_str(h->plant());
    ck->line = s_str(h->line());
    ck->order = s_str(h->order());
    ck->operation = s_str(h->operation());
    ck->first_time_ns = h->first_time_ns();
    ck->last_time_ns = h->last_time_ns();
    ck->record_count = h->record_count();
    if (h->lineage()) {
        ck->nlineage = h->lineage()->size();
        memcpy(ck->lineage, h->lineage()->Data(), ck->nlineage * sizeof(fp_seq_range_t));
    }
    ck->lineage_truncated = h->lineage_truncated();
    ck->late = h->late();
    ck->posting_date = s_str(h->posting_date());
    ck->period = s_str(h->period());
    ck->period_start_ns = h->period_start_ns();
    ck->period_end_ns = h->period_end_ns();
    ck->backfill = h->backfill();
    ck->original_posting_date = s_str(h->original_posting_date());
    ck->original_period_start_ns = h->original_period_start_ns();
    ck->material = ck->lot = ck->unit = ck->reason = ck->station = ck->counter = "";
    if (const auto *cons = c->body_as_Consumption()) {
        ck->material = s_str(cons->material());
        ck->lot = s_str(cons->lot());
        ck->unit = s_str(cons->unit());
        ck->quantity = cons->quantity();
    } else if (const auto *comp = c->body_as_Completion()) {
        ck->yield = comp->yield();
        ck->scrap = comp->scrap();
        ck->final = comp->final();
    } else if (const auto *scr = c->body_as_Scrap()) {
        ck->reason = s_str(scr->reason());
        ck->parts = scr->parts();
    } else if (const auto *cr = c->body_as_CounterReset()) {
        ck->station = s_str(cr->station());
        ck->counter = s_str(cr->counter());
        ck->counter_scrap = cr->scrap();
        ck->reason = s_str(cr->reason());
        ck->previous = cr->previous();
        ck->reading = cr->reading();
    }
    return FP_CODEC_OK;
}

/* ---- JSON ---- */

namespace {
/* Appends to out[0..cap) and keeps room for the NUL; remembers overflow. */
struct s_json {
    char *out;
    size_t cap;
    size_t n = 0;
    bool full = false;
    s_json(char *o, size_t c) : out(o), cap(c) {}

    void put(const char *s, size_t len)
    {
        if (full || cap == 0 || len > cap - 1 - n) {
            full = true;
            return;
        }
        memcpy(out + n, s, len);
        n += len;
    }
    void str(const char *s) { put(s, strlen(s)); }
    void u64(uint64_t v)
    {
        char tmp[24];
        int k = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
        put(tmp, (size_t)k);
    }
    void i64(int64_t v)
    {
        char tmp[24];
        int k = snprintf(tmp, sizeof tmp, "%" PRId64, v);
        put(tmp, (size_t)k);
    }
    void boolean(bool b) { str(b ? "true" : "false"); }
    void string(const char *s, size_t len);
    void string(const flatbuffers::String *s)
    {
        if (s)
            string(s->c_str(), s->size());
        else
            put("\"\"", 2);
    }
    /* NUL-terminates: the length, or FP_CODEC_SPACE (out is then ""). */
    int finish()
    {
        if (full || n > INT_MAX) {
            if (cap > 0)
                out[0] = '\0';
            return FP_CODEC_SPACE;
        }
        out[n] = '\0';
        return (int)n;
    }
    /* ,"key": */
    void key(const char *k, bool first = false)
    {
        if (!first)
            put(",", 1);
        put("\"", 1);
        str(k);
        put("\":", 2);
    }
};

/* Length of the valid UTF-8 sequence at s[0..len), or 0 if it is not one
   (overlong forms, surrogates and code points over U+10FFFF are invalid). */
size_t s_utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlongs */
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* <= U+10FFFF */
    } else
        return 0;
    if (len < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return need;
}

void s_json::string(const char *str, size_t len)
{
    const unsigned char *s = reinterpret_cast<const unsigned char *>(str);
    put("\"", 1);
    size_t i = 0;
    while (i < len && !full) {
        /* Copy the longest run that needs no escaping in one go. */
        size_t j = i;
        while (j < len && s[j] >= 0x20 && s[j] < 0x80 && s[j] != '"' && s[j] != '\\')
            j++;
        if (j > i) {
            put(str + i, j - i);
            i = j;
            continue;
        }
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put(esc, 2);
            i++;
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(esc, 6);
            i++;
        } else {
            size_t k = s_utf8_seq(s + i, len - i);
            if (k) {
                put(str + i, k);
                i += k;
            } else {
                put("\\ufffd", 6);
                i++;
            }
        }
    }
    put("\"", 1);
}
} // namespace

int fp_codec_json_string(const char *s, size_t len, char *out, size_t cap)
{
    assert(out || cap == 0);
    s_json j(out, cap);
    j.string(s ? s : "", s ? len : 0);
    return j.finish();
}

static const char *s_kind_name(int kind)
{
    const char *n = fp_ck_kind_name(kind);
    return n ? n : "scrap"; /* encode refuses other kinds; decode maps the Body */
}

int fp_codec_checkpoint_to_json(const void *buf, size_t len, char *out, size_t cap)
{
    assert(out || cap == 0);
    if (cap > 0)
        out[0] = '\0';
    int rc = s_check_frame(buf, len, FLATBUFFERS_MAX_BUFFER_SIZE - 1, S_ID_CHECKPOINT);
    if (rc != FP_CODEC_OK)
        return rc;
    s_aligned_copy copy;
    if ((rc = copy.set(buf, len)) != FP_CODEC_OK)
        return rc;
    const fbc::Checkpoint *c;
    if ((rc = s_checkpoint_verify(copy.data, len, &c)) != FP_CODEC_OK)
        return rc;
    const fbc::Header *h = c->header();
    int kind = (int)c->body_type();

    s_json j(out, cap);
    j.put("{", 1);
    j.key("kind", true);
    j.string(s_kind_name(kind), strlen(s_kind_name(kind)));
    j.key("event_id");
    j.string(h->event_id());
    j.key("stream_seq");
    j.u64(h->stream_seq());
    j.key("global_seq");
    j.u64(h->global_seq());
    j.key("checkpoint_no");
    j.u64(h->checkpoint_no());
    j.key("instance");
    j.string(h->instance());
    j.key("plant");
    j.string(h->plant());
    j.key("line");
    j.string(h->line());
    j.key("order");
    j.string(h->order());
    j.key("operation");
    j.string(h->operation());
    j.key("first_time_ns");
    j.i64(h->first_time_ns());
    j.key("last_time_ns");
    j.i64(h->last_time_ns());
    j.key("record_count");
    j.u64(h->record_count());
    j.key("late");
    j.boolean(h->late());
    j.key("lineage");
    j.put("[", 1);
    if (const auto *lin = h->lineage()) {
        for (flatbuffers::uoffset_t i = 0; i < lin->size(); i++) {
            const fbc::SeqRange *r = lin->Get(i);
            j.str(i ? ",{\"source_id\":" : "{\"source_id\":");
            j.u64(r->source_id());
            j.str(",\"epoch\":");
            j.u64(r->epoch());
            j.str(",\"first_seq\":");
            j.u64(r->first_seq());
            j.str(",\"last_seq\":");
            j.u64(r->last_seq());
            j.put("}", 1);
        }
    }
    j.put("]", 1);
    j.key("lineage_truncated");
    j.boolean(h->lineage_truncated());
    if (h->posting_date() && h->posting_date()->size()) {
        j.key("posting_date");
        j.string(h->posting_date());
        j.key("period");
        j.string(h->period());
        j.key("period_start_ns");
        j.i64(h->period_start_ns());
        j.key("period_end_ns");
        j.i64(h->period_end_ns());
        j.key("backfill");
        j.boolean(h->backfill());
        if (h->original_posting_date() && h->original_posting_date()->size()) {
            j.key("original_posting_date");
            j.string(h->original_posting_date());
            j.key("original_period_start_ns");
            j.i64(h->original_period_start_ns());
        }
    }
    if (const auto *cons = c->body_as_Consumption()) {
        j.key("material");
        j.string(cons->material());
        j.key("lot");
        j.string(cons->lot());
        j.key("unit");
        j.string(cons->unit());
        j.key("quantity");
        j.i64(cons->quantity());
    } else if (const auto *comp = c->body_as_Completion()) {
        j.key("yield");
        j.i64(comp->yield());
        j.key("scrap");
        j.i64(comp->scrap());
        j.key("final");
        j.boolean(comp->final());
    } else if (const auto *scr = c->body_as_Scrap()) {
        j.key("reason");
        j.string(scr->reason());
        j.key("parts");
        j.i64(scr->parts());
    } else if (const auto *cr = c->body_as_CounterReset()) {
        j.key("station");
        j.string(cr->station());
        j.key("counter");
        j.string(cr->counter());
        j.key("scrap");
        j.boolean(cr->scrap());
        j.key("reason");
        j.string(cr->reason());
        j.key("previous");
        j.i64(cr->previous());
        j.key("reading");
        j.i64(cr->reading());
    }
    j.put("}", 1);
    return j.finish();
}
