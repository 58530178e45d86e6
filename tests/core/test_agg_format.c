/*  test_agg_format.c - the aggregation's stored key and state bytes
    (agg_format.h, the format in agg.h) on their own: round trips of every
    kind, exact bytes of a known key and state, version-1 reads, and the
    refusal of damaged bytes (every truncation, a trailing byte, bad
    versions, kinds, flags, counts, lineage and period ids). */
#include "agg_format.h"

#include "test.h"

static agg_fmt_key_t s_key(int kind, const char *const *s, uint32_t period)
{
    agg_fmt_key_t k = {.version = AGG_FMT_V2, .kind = kind, .period = period};
    for (int f = 0; f < AGG_FIELDS; f++) {
        k.s[f] = f < agg_fmt_nfields(kind) ? s[f] : "";
        k.len[f] = (uint32_t)strlen(k.s[f]);
    }
    return k;
}

/* Writes k and st, parses them back, writes again: the same bytes. */
static void s_round_trip(const agg_fmt_key_t *k, const agg_fmt_state_t *st, agg_fmt_key_t *pk,
                         agg_fmt_state_t *pst)
{
    uint8_t kb[512], sb[512], kb2[512], sb2[512];
    size_t kl = agg_fmt_key_write(k, kb);
    size_t strs = 0;
    for (int f = 0; f < AGG_FIELDS; f++)
        strs += k->len[f];
    ASSERT(kl <= agg_fmt_key_max(strs));
    size_t sl = agg_fmt_state_write(k->kind, st, sb);
    ASSERT(sl <= AGG_FMT_STATE_MAX + st->line_len + st->station_len);
    ASSERT_EQ(agg_fmt_key_parse(kb, kl, pk), 0);
    ASSERT_EQ(agg_fmt_state_parse(sb, sl, pk, pst), 0);
    ASSERT_EQ(agg_fmt_key_write(pk, kb2), kl);
    ASSERT_EQ(agg_fmt_state_write(pk->kind, pst, sb2), sl);
    ASSERT(memcmp(kb, kb2, kl) == 0);
    ASSERT(memcmp(sb, sb2, sl) == 0);
    /* every truncation and one trailing byte are refused */
    agg_fmt_key_t x;
    agg_fmt_state_t y;
    for (size_t n = 0; n < kl; n++)
        ASSERT_EQ(agg_fmt_key_parse(kb, n, &x), -1);
    for (size_t n = 0; n < sl; n++)
        ASSERT_EQ(agg_fmt_state_parse(sb, n, pk, &y), -1);
    kb[kl] = 0;
    sb[sl] = 0;
    ASSERT_EQ(agg_fmt_key_parse(kb, kl + 1, &x), -1);
    ASSERT_EQ(agg_fmt_state_parse(sb, sl + 1, pk, &y), -1);
}

static const char *const S_STRS[AGG_FIELDS] = {"P1", "O-4711", "0010", "M-steel", "LOT9", "kg"};

TEST(test_round_trip_every_kind)
{
    agg_fmt_key_t pk;
    agg_fmt_state_t pst;
    uint32_t period = AGG_PERIOD_BIAS + 29000000u;
    /* consumption with pending records and two lineage ranges, late */
    agg_fmt_state_t st = {.flags = AGG_PF_LATE, .checkpoint_no = 3, .count = 5,
                          .sum0 = -1250, .first_ns = 1700000000000000000ll,
                          .last_ns = 1700000000500000000ll, .nlineage = 2};
    st.lineage[0] = (fp_seq_range_t){9, 2, 100, 104};
    st.lineage[1] = (fp_seq_range_t){10, 1, 1, 1};
    agg_fmt_key_t k = s_key(FP_CK_CONSUMPTION, S_STRS, period);
    s_round_trip(&k, &st, &pk, &pst);
    ASSERT_EQ(pk.kind, FP_CK_CONSUMPTION);
    ASSERT_EQ(pk.period, period);
    ASSERT_EQ(pk.len[AGG_F_UNIT], 2);
    ASSERT(memcmp(pk.s[AGG_F_MATERIAL], "M-steel", 7) == 0);
    ASSERT_EQ(pst.count, 5);
    ASSERT_EQ(pst.sum0, -1250);
    ASSERT_EQ(pst.last_ns, 1700000000500000000ll);
    ASSERT_EQ(pst.nlineage, 2);
    ASSERT_EQ(pst.lineage[0].last_seq, 104);
    ASSERT_EQ(pst.lineage[1].source_id, 10);
    ASSERT_EQ(pst.flags, AGG_PF_LATE);
    /* completion: both sums; truncated */
    st.flags = AGG_PF_TRUNCATED;
    st.sum1 = 77;
    k = s_key(FP_CK_COMPLETION, S_STRS, 0);
    s_round_trip(&k, &st, &pk, &pst);
    ASSERT_EQ(pst.sum1, 77);
    ASSERT_EQ(pk.len[AGG_F_MATERIAL], 0); /* a completion has 3 strings */
    /* scrap with nothing pending: late and truncated are not written */
    agg_fmt_state_t idle = {.flags = AGG_PF_LATE | AGG_PF_TRUNCATED, .checkpoint_no = 12};
    k = s_key(FP_CK_SCRAP, S_STRS, period);
    s_round_trip(&k, &idle, &pk, &pst);
    ASSERT_EQ(pst.flags, 0);
    ASSERT_EQ(pst.checkpoint_no, 12);
    ASSERT_EQ(pst.count, 0);
    /* a head, open and closed */
    agg_fmt_state_t head = {.line = "L1", .line_len = 2, .station = "ST-3", .station_len = 4};
    k = s_key((int)AGG_KIND_OP, S_STRS, 0);
    s_round_trip(&k, &head, &pk, &pst);
    ASSERT(pst.has_attrs);
    ASSERT_EQ(pst.station_len, 4);
    head.flags = AGG_PF_CLOSED;
    head.closed_at = -5;
    head.close_seq = 300;
    s_round_trip(&k, &head, &pk, &pst);
    ASSERT_EQ(pst.closed_at, -5);
    ASSERT_EQ(pst.close_seq, 300);
    /* the shards' own pair */
    agg_fmt_state_t meta = {.flushed_through = 1700000000000000000ll};
    k = s_key((int)AGG_KIND_META, S_STRS, 0);
    s_round_trip(&k, &meta, &pk, &pst);
    ASSERT_EQ(pst.flushed_through, 1700000000000000000ll);
}

/* The bytes agg.h specifies, byte by byte. */
TEST(test_known_bytes)
{
    const char *s[AGG_FIELDS] = {"P", "O", "1", "", "", ""};
    agg_fmt_key_t k = s_key(FP_CK_COMPLETION, s, 300);
    uint8_t b[64];
    size_t n = agg_fmt_key_write(&k, b);
    const uint8_t want_key[] = {2, 2, 1, 'P', 1, 'O', 1, '1', 0xac, 0x02};
    ASSERT_EQ(n, sizeof want_key);
    ASSERT(memcmp(b, want_key, n) == 0);
    agg_fmt_state_t st = {.checkpoint_no = 1, .count = 2, .sum0 = 3, .sum1 = -1,
                          .first_ns = 10, .last_ns = 15, .nlineage = 1};
    st.lineage[0] = (fp_seq_range_t){7, 1, 4, 5};
    n = agg_fmt_state_write(FP_CK_COMPLETION, &st, b);
    /* version, flags, checkpoint_no, count, zigzag 3, zigzag -1, zigzag 10,
       span 5, n, source, epoch, first, last - first */
    const uint8_t want_state[] = {2, 0, 1, 2, 6, 1, 20, 5, 1, 7, 1, 4, 1};
    ASSERT_EQ(n, sizeof want_state);
    ASSERT(memcmp(b, want_state, n) == 0);
}

TEST(test_version_1_reads)
{
    /* a v1 completion: no period, and the head's attributes in its state */
    const uint8_t key[] = {1, 2, 1, 'P', 1, 'O', 1, '1'};
    agg_fmt_key_t k;
    ASSERT_EQ(agg_fmt_key_parse(key, sizeof key, &k), 0);
    ASSERT_EQ(k.version, AGG_FMT_V1);
    ASSERT_EQ(k.period, 0);
    /* closed + late, 1 pending record, line "L", station "", closed_at 4, seq 0 */
    const uint8_t state[] = {1, AGG_PF_CLOSED | AGG_PF_LATE, 0, 1, 2, 0, 8, 0, 1, 1, 1, 1, 0,
                             1, 'L', 0, 8, 0};
    agg_fmt_state_t st;
    ASSERT_EQ(agg_fmt_state_parse(state, sizeof state, &k, &st), 0);
    ASSERT(st.has_attrs);
    ASSERT_EQ(st.line_len, 1);
    ASSERT_EQ(st.closed_at, 4);
    ASSERT_EQ(st.sum0, 1);
    /* v1: late on a completion requires closed */
    uint8_t late_open[sizeof state];
    memcpy(late_open, state, sizeof state);
    late_open[1] = AGG_PF_LATE;
    ASSERT_EQ(agg_fmt_state_parse(late_open, sizeof state - 2, &k, &st), -1);
    /* a v1 key has no head or meta kinds */
    const uint8_t v1_head[] = {1, 4, 1, 'P', 1, 'O', 1, '1'};
    ASSERT_EQ(agg_fmt_key_parse(v1_head, sizeof v1_head, &k), -1);
    const uint8_t v1_meta[] = {1, 0};
    ASSERT_EQ(agg_fmt_key_parse(v1_meta, sizeof v1_meta, &k), -1);
}

TEST(test_damaged_bytes_refused)
{
    agg_fmt_key_t k;
    agg_fmt_state_t st;
    ASSERT_EQ(agg_fmt_key_parse(NULL, 0, &k), -1);
    const uint8_t v3[] = {3, 2, 0, 0, 0, 0};
    ASSERT_EQ(agg_fmt_key_parse(v3, sizeof v3, &k), -1);
    const uint8_t kind9[] = {2, 9, 0, 0, 0, 0};
    ASSERT_EQ(agg_fmt_key_parse(kind9, sizeof kind9, &k), -1);
    /* a period id no period can have (>= 2^30) */
    const uint8_t badp[] = {2, 2, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x04};
    ASSERT_EQ(agg_fmt_key_parse(badp, sizeof badp, &k), -1);
    /* a string longer than the bytes left */
    const uint8_t longs[] = {2, 2, 9, 'P', 0, 0, 0};
    ASSERT_EQ(agg_fmt_key_parse(longs, sizeof longs, &k), -1);

    const uint8_t ck[] = {2, 2, 0, 0, 0, 0};
    ASSERT_EQ(agg_fmt_key_parse(ck, sizeof ck, &k), 0);
    ASSERT_EQ(agg_fmt_state_parse(NULL, 0, &k, &st), -1);
    const uint8_t v1state[] = {1, 0, 0, 0};
    ASSERT_EQ(agg_fmt_state_parse(v1state, sizeof v1state, &k, &st), -1); /* other version */
    const uint8_t closed[] = {2, AGG_PF_CLOSED, 0, 0};
    ASSERT_EQ(agg_fmt_state_parse(closed, sizeof closed, &k, &st), -1);  /* v2: heads only */
    const uint8_t late0[] = {2, AGG_PF_LATE, 0, 0};
    ASSERT_EQ(agg_fmt_state_parse(late0, sizeof late0, &k, &st), -1);    /* late, nothing pending */
    const uint8_t flag64[] = {2, 64, 0, 0};
    ASSERT_EQ(agg_fmt_state_parse(flag64, sizeof flag64, &k, &st), -1);
    const uint8_t lin0[] = {2, 0, 0, 1, 0, 0, 0, 0, 0};
    ASSERT_EQ(agg_fmt_state_parse(lin0, sizeof lin0, &k, &st), -1);      /* n = 0 */
    const uint8_t lin5[] = {2, 0, 0, 1, 0, 0, 0, 0, 5};
    ASSERT_EQ(agg_fmt_state_parse(lin5, sizeof lin5, &k, &st), -1);      /* n > AGG_LINEAGE */
    /* first_ns = INT64_MAX (zigzag 2^64 - 2), span 1: last would overflow */
    const uint8_t span[] = {2, 0, 0, 1, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0x01, 1, 1, 0, 0, 0, 0};
    ASSERT_EQ(agg_fmt_state_parse(span, sizeof span, &k, &st), -1);
    /* a head with a flag other than closed */
    const uint8_t hk[] = {2, 4, 0, 0, 0};
    ASSERT_EQ(agg_fmt_key_parse(hk, sizeof hk, &k), 0);
    const uint8_t hlate[] = {2, AGG_PF_LATE, 0, 0};
    ASSERT_EQ(agg_fmt_state_parse(hlate, sizeof hlate, &k, &st), -1);
    const uint8_t hok[] = {2, 0, 0, 0};
    ASSERT_EQ(agg_fmt_state_parse(hok, sizeof hok, &k, &st), 0);
}

TEST(test_fields_and_period_ids)
{
    ASSERT_EQ(agg_fmt_nfields(FP_CK_CONSUMPTION), 6);
    ASSERT_EQ(agg_fmt_nfields(FP_CK_SCRAP), 4);
    ASSERT_EQ(agg_fmt_nfields(FP_CK_COMPLETION), 3);
    ASSERT_EQ(agg_fmt_nfields((int)AGG_KIND_OP), 3);
    ASSERT_EQ(agg_fmt_nfields((int)AGG_KIND_META), 0);
    ASSERT(agg_fmt_period_id_ok(0));
    ASSERT(agg_fmt_period_id_ok(AGG_PERIOD_BIAS));         /* 1970-01-01 00:00 UTC */
    ASSERT(agg_fmt_period_id_ok(AGG_PERIOD_BIAS + 153722867)); /* INT64_MAX's minute */
    ASSERT(!agg_fmt_period_id_ok(AGG_PERIOD_BIAS + 153722868));
    ASSERT(agg_fmt_period_id_ok(AGG_PERIOD_BIAS - 153722868)); /* INT64_MIN's minute */
    ASSERT(!agg_fmt_period_id_ok(AGG_PERIOD_BIAS - 153722869));
    ASSERT(!agg_fmt_period_id_ok(2ull * AGG_PERIOD_BIAS));
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_round_trip_every_kind);
    RUN(test_known_bytes);
    RUN(test_version_1_reads);
    RUN(test_damaged_bytes_refused);
    RUN(test_fields_and_period_ids);
    return test_done();
}
