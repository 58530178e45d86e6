/*  agg_format.c - the stored key and state bytes (agg_format.h; the format
    is in agg.h).
*/
#include "agg_format.h"

#include <string.h>

int agg_fmt_nfields(int kind)
{
    return kind == FP_CK_CONSUMPTION ? 6 : kind == FP_CK_SCRAP ? 4
                                        : kind == (int)AGG_KIND_META ? 0 : 3;
}

static int64_t s_floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b < 0);
}

bool agg_fmt_period_id_ok(uint64_t id)
{
    if (id == 0)
        return true;
    int64_t m = (int64_t)id - AGG_PERIOD_BIAS;
    return id < 2 * (uint64_t)AGG_PERIOD_BIAS && m >= s_floor_div(INT64_MIN, 60000000000ll) &&
           m <= s_floor_div(INT64_MAX, 60000000000ll);
}

/* ---- writers: each returns the byte after what it wrote; the caller
   made room (agg_format.h), nothing here checks or sizes ---- */

static inline uint8_t *s_put_var(uint8_t *p, uint64_t v)
{
    return p + fp_varint_put(p, v);
}

static inline uint8_t *s_put_str(uint8_t *p, const char *s, uint32_t len)
{
    p = s_put_var(p, len);
    memcpy(p, s, len);
    return p + len;
}

size_t agg_fmt_key_write(const agg_fmt_key_t *k, uint8_t *out)
{
    uint8_t *p = out;
    *p++ = AGG_FMT_V2;
    *p++ = (uint8_t)k->kind;
    for (int f = 0; f < agg_fmt_nfields(k->kind); f++)
        p = s_put_str(p, k->s[f], k->len[f]);
    if (k->kind != (int)AGG_KIND_OP && k->kind != (int)AGG_KIND_META)
        p = s_put_var(p, k->period);
    return (size_t)(p - out);
}

size_t agg_fmt_state_write(int kind, const agg_fmt_state_t *st, uint8_t *out)
{
    uint8_t *p = out;
    *p++ = AGG_FMT_V2;
    if (kind == (int)AGG_KIND_META) {
        p = s_put_var(p, fp_zigzag(st->flushed_through));
        return (size_t)(p - out);
    }
    if (kind == (int)AGG_KIND_OP) {
        bool closed = (st->flags & AGG_PF_CLOSED) != 0;
        *p++ = closed ? AGG_PF_CLOSED : 0;
        p = s_put_str(p, st->line, st->line_len);
        p = s_put_str(p, st->station, st->station_len);
        if (closed) {
            p = s_put_var(p, fp_zigzag(st->closed_at));
            p = s_put_var(p, st->close_seq);
        }
        return (size_t)(p - out);
    }
    *p++ = st->count > 0 ? (uint8_t)(st->flags & (AGG_PF_LATE | AGG_PF_TRUNCATED)) : 0;
    p = s_put_var(p, st->checkpoint_no);
    p = s_put_var(p, st->count);
    if (st->count > 0) {
        p = s_put_var(p, fp_zigzag(st->sum0));
        if (kind == FP_CK_COMPLETION)
            p = s_put_var(p, fp_zigzag(st->sum1));
        p = s_put_var(p, fp_zigzag(st->first_ns));
        p = s_put_var(p, (uint64_t)st->last_ns - (uint64_t)st->first_ns);
        assert(st->nlineage >= 1 && st->nlineage <= AGG_LINEAGE);
        *p++ = (uint8_t)st->nlineage;
        for (uint32_t i = 0; i < st->nlineage; i++) {
            p = s_put_var(p, st->lineage[i].source_id);
            p = s_put_var(p, st->lineage[i].epoch);
            p = s_put_var(p, st->lineage[i].first_seq);
            p = s_put_var(p, st->lineage[i].last_seq - st->lineage[i].first_seq);
        }
    }
    return (size_t)(p - out);
}

/* ---- readers ---- */

/* A bounds-checked reader of possibly damaged bytes: once bad, stays bad
   and reads zeros. */
typedef struct {
    const uint8_t *p, *end;
    bool bad;
} s_r_t;

static uint8_t s_r_u8(s_r_t *r)
{
    if (r->bad || r->p >= r->end) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

static uint64_t s_r_var(s_r_t *r)
{
    uint64_t v = 0;
    if (r->bad || fp_varint_get(&r->p, r->end, &v) != 0) {
        r->bad = true;
        return 0;
    }
    return v;
}

static const char *s_r_str(s_r_t *r, uint32_t *len)
{
    uint64_t n = s_r_var(r);
    if (r->bad || n > (uint64_t)(r->end - r->p) || n > UINT32_MAX) {
        r->bad = true;
        *len = 0;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += n;
    *len = (uint32_t)n;
    return s;
}

int agg_fmt_key_parse(const void *key, size_t klen, agg_fmt_key_t *k)
{
    if (!key)
        return -1;
    s_r_t r = {key, (const uint8_t *)key + klen, false};
    memset(k, 0, sizeof *k);
    k->version = s_r_u8(&r);
    if (k->version != AGG_FMT_V2 && k->version != AGG_FMT_V1)
        return -1;
    k->kind = s_r_u8(&r);
    bool checkpoint = k->kind == FP_CK_CONSUMPTION || k->kind == FP_CK_COMPLETION ||
                      k->kind == FP_CK_SCRAP;
    if (!checkpoint && (k->version == AGG_FMT_V1 ||
                        (k->kind != (int)AGG_KIND_OP && k->kind != (int)AGG_KIND_META)))
        return -1;
    for (int f = 0; f < AGG_FIELDS; f++) {
        k->s[f] = "";
        if (f < agg_fmt_nfields(k->kind))
            k->s[f] = s_r_str(&r, &k->len[f]);
    }
    if (k->version == AGG_FMT_V2 && checkpoint) {
        uint64_t period = s_r_var(&r);
        if (!agg_fmt_period_id_ok(period))
            return -1;
        k->period = (uint32_t)period;
    }
    return r.bad || r.p != r.end ? -1 : 0;
}

/* The pending part (version 1 and 2 alike). */
static int s_state_parse_pending(s_r_t *r, bool completion, agg_fmt_state_t *st)
{
    st->checkpoint_no = s_r_var(r);
    st->count = s_r_var(r);
    if (st->count > UINT64_MAX / 4) /* room to count on without wrapping to 0 */
        return -1;
    if (st->count == 0 && (st->flags & (AGG_PF_LATE | AGG_PF_TRUNCATED)))
        return -1;
    if (st->count > 0) {
        st->sum0 = fp_unzigzag(s_r_var(r));
        if (completion)
            st->sum1 = fp_unzigzag(s_r_var(r));
        st->first_ns = fp_unzigzag(s_r_var(r));
        uint64_t span = s_r_var(r);
        if (span > (uint64_t)INT64_MAX
            || __builtin_add_overflow(st->first_ns, (int64_t)span, &st->last_ns))
            return -1;
        st->nlineage = s_r_u8(r);
        if (st->nlineage < 1 || st->nlineage > AGG_LINEAGE)
            return -1;
        for (uint32_t i = 0; i < st->nlineage; i++) {
            fp_seq_range_t *l = &st->lineage[i];
            l->source_id = s_r_var(r);
            l->epoch = s_r_var(r);
            l->first_seq = s_r_var(r);
            uint64_t d = s_r_var(r);
            if (__builtin_add_overflow(l->first_seq, d, &l->last_seq))
                return -1;
        }
    }
    return 0;
}

/* The attributes: line, station and the closing (a head, a v1 completion). */
static void s_state_parse_attrs(s_r_t *r, agg_fmt_state_t *st)
{
    st->has_attrs = true;
    st->line = s_r_str(r, &st->line_len);
    st->station = s_r_str(r, &st->station_len);
    if (st->flags & AGG_PF_CLOSED) {
        st->closed_at = fp_unzigzag(s_r_var(r));
        st->close_seq = s_r_var(r);
    }
}

int agg_fmt_state_parse(const void *state, size_t slen, const agg_fmt_key_t *k,
                        agg_fmt_state_t *st)
{
    if (!state)
        return -1;
    s_r_t r = {state, (const uint8_t *)state + slen, false};
    memset(st, 0, sizeof *st);
    if (s_r_u8(&r) != k->version)
        return -1;
    if (k->kind == (int)AGG_KIND_META) {
        st->flushed_through = fp_unzigzag(s_r_var(&r));
        return r.bad || r.p != r.end ? -1 : 0;
    }
    st->flags = s_r_u8(&r);
    if (k->kind == (int)AGG_KIND_OP) { /* version 2 */
        if (st->flags & ~AGG_PF_CLOSED)
            return -1;
        s_state_parse_attrs(&r, st);
        return r.bad || r.p != r.end ? -1 : 0;
    }
    bool completion = k->kind == FP_CK_COMPLETION;
    bool v1 = k->version == AGG_FMT_V1;
    if (st->flags & ~(AGG_PF_CLOSED | AGG_PF_LATE | AGG_PF_TRUNCATED))
        return -1;
    if ((st->flags & AGG_PF_CLOSED) && !(v1 && completion))
        return -1;
    /* v1: late on a completion requires closed (closed lives on the head in v2) */
    if (v1 && (st->flags & AGG_PF_LATE) && completion && !(st->flags & AGG_PF_CLOSED))
        return -1;
    if (s_state_parse_pending(&r, completion, st) != 0)
        return -1;
    if (v1 && completion)
        s_state_parse_attrs(&r, st);
    return r.bad || r.p != r.end ? -1 : 0;
}
