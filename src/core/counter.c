/*  counter.c - cumulative counter readings into deltas (counter.h).

    Counters are entries of one dense array (never removed: a counter lives
    as long as its worker), found through an open-addressing table of
    indices (linear probing, power-of-two size, at most half full) by the
    XXH3 of their key bytes, which each entry keeps: the key is both the
    lookup key and the stored key. Readings are not the hot path of the
    stream (a gateway reads a counter every few seconds), so a reading
    builds its key bytes and hashes them each time.
*/
#include "counter.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "record.h"
#include "varint.h"

#define S_FORMAT 1
#define S_STATE_MAX (1 + 4 * FP_VARINT_MAX)

typedef struct {
    uint8_t *key; /* malloc'd key bytes */
    uint32_t klen;
    bool dirty;
    uint64_t hash;
    uint64_t modulus;
    int64_t last;  /* the last reading applied */
    uint64_t epoch, seq;
    int64_t time_ns;
} s_ctr_t;

struct counter {
    counter_config_t cfg;
    counter_modulus_t *moduli; /* copies, names too */
    s_ctr_t *ctr;
    uint32_t n, cap;
    uint32_t *slots; /* index + 1, 0 = empty */
    uint32_t mask;
    uint32_t *dirty; /* indices of dirty counters */
    uint32_t ndirty;
    uint8_t *kbuf;   /* a reading's key bytes */
    size_t kcap;
};

static const char *const s_names[COUNTER_VERDICTS] = {
    "delta", "rollover", "reset", "base", "repeat", "jitter", "stale", "jump", "range", "no_memory",
};

const char *counter_verdict_name(counter_verdict_t v)
{
    return (unsigned)v < COUNTER_VERDICTS ? s_names[v] : "?";
}

counter_t *counter_new(const counter_config_t *cfg)
{
    assert(cfg);
    if (cfg->default_modulus < 2 || cfg->default_modulus > COUNTER_MODULUS_MAX ||
        cfg->nmoduli < 0)
        return NULL;
    counter_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    self->mask = 255;
    self->slots = calloc(self->mask + 1, sizeof *self->slots);
    self->moduli = calloc((size_t)cfg->nmoduli + 1, sizeof *self->moduli);
    bool ok = self->slots && self->moduli;
    for (int i = 0; ok && i < cfg->nmoduli; i++) {
        uint64_t m = cfg->moduli[i].modulus;
        self->moduli[i].modulus = m;
        self->moduli[i].name = cfg->moduli[i].name ? strdup(cfg->moduli[i].name) : NULL;
        ok = self->moduli[i].name && m >= 2 && m <= COUNTER_MODULUS_MAX;
        self->cfg.nmoduli = i + 1;
    }
    self->cfg.moduli = self->moduli;
    if (!ok)
        counter_destroy(&self);
    return self;
}

void counter_destroy(counter_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    counter_t *self = *self_p;
    for (uint32_t i = 0; i < self->n; i++)
        free(self->ctr[i].key);
    for (int i = 0; self->moduli && i < self->cfg.nmoduli; i++)
        free((char *)self->moduli[i].name);
    free(self->moduli);
    free(self->ctr);
    free(self->slots);
    free(self->dirty);
    free(self->kbuf);
    free(self);
    *self_p = NULL;
}

uint64_t counter_count(const counter_t *self)
{
    return self->n;
}

static uint64_t s_modulus(const counter_t *self, const char *name, uint32_t len)
{
    for (int i = 0; i < self->cfg.nmoduli; i++)
        if (strlen(self->moduli[i].name) == len && memcmp(self->moduli[i].name, name, len) == 0)
            return self->moduli[i].modulus;
    return self->cfg.default_modulus;
}

/* The key bytes of (source, kind, station, name) in self->kbuf; length or 0
   out of memory. */
static size_t s_key(counter_t *self, uint64_t source, uint8_t kind, const char *station,
                    uint32_t slen, const char *name, uint32_t nlen)
{
    size_t need = 2 + 3 * FP_VARINT_MAX + (size_t)slen + nlen;
    if (need > self->kcap) {
        uint8_t *b = realloc(self->kbuf, need);
        if (!b)
            return 0;
        self->kbuf = b;
        self->kcap = need;
    }
    uint8_t *p = self->kbuf;
    *p++ = S_FORMAT;
    p += fp_varint_put(p, source);
    *p++ = kind;
    p += fp_varint_put(p, slen);
    memcpy(p, station, slen);
    p += slen;
    p += fp_varint_put(p, nlen);
    memcpy(p, name, nlen);
    p += nlen;
    return (size_t)(p - self->kbuf);
}

/* The index of the counter with key bytes k, or UINT32_MAX. *slot: its
   slot, or the empty slot where it would go. */
static uint32_t s_find(const counter_t *self, const uint8_t *k, size_t klen, uint64_t h,
                       uint32_t *slot)
{
    uint32_t i = (uint32_t)h & self->mask;
    for (;;) {
        uint32_t s = self->slots[i];
        if (s == 0) {
            *slot = i;
            return UINT32_MAX;
        }
        const s_ctr_t *c = &self->ctr[s - 1];
        if (c->hash == h && c->klen == klen && memcmp(c->key, k, klen) == 0) {
            *slot = i;
            return s - 1;
        }
        i = (i + 1) & self->mask;
    }
}

/* A new counter for key bytes k (hash h) at slot; its index, or UINT32_MAX
   out of memory or at COUNTER_MAX. Grows the table first if it would be
   more than half full (then the slot is looked up again). */
static uint32_t s_add(counter_t *self, const uint8_t *k, size_t klen, uint64_t h, uint32_t slot,
                      uint64_t modulus)
{
    if (self->n >= COUNTER_MAX)
        return UINT32_MAX;
    if ((self->n + 1) * 2 > self->mask + 1) {
        uint32_t nmask = self->mask * 2 + 1;
        uint32_t *ns = calloc((size_t)nmask + 1, sizeof *ns);
        if (!ns)
            return UINT32_MAX;
        for (uint32_t i = 0; i < self->n; i++) {
            uint32_t j = (uint32_t)self->ctr[i].hash & nmask;
            while (ns[j])
                j = (j + 1) & nmask;
            ns[j] = i + 1;
        }
        free(self->slots);
        self->slots = ns;
        self->mask = nmask;
        (void)s_find(self, k, klen, h, &slot);
    }
    if (self->n == self->cap) {
        uint32_t ncap = self->cap ? self->cap * 2 : 64;
        s_ctr_t *nc = realloc(self->ctr, ncap * sizeof *nc);
        uint32_t *nd = realloc(self->dirty, ncap * sizeof *nd);
        if (nc)
            self->ctr = nc;
        if (nd)
            self->dirty = nd;
        if (!nc || !nd)
            return UINT32_MAX;
        self->cap = ncap;
    }
    uint8_t *key = malloc(klen);
    if (!key)
        return UINT32_MAX;
    memcpy(key, k, klen);
    uint32_t idx = self->n++;
    self->ctr[idx] = (s_ctr_t){.key = key, .klen = (uint32_t)klen, .hash = h, .modulus = modulus,
                               .last = -1};
    self->slots[slot] = idx + 1;
    return idx;
}

static void s_mark(counter_t *self, uint32_t idx)
{
    if (self->ctr[idx].dirty)
        return;
    self->ctr[idx].dirty = true;
    self->dirty[self->ndirty++] = idx;
}

/* Whether (epoch, seq) comes after the counter's last reading. */
static bool s_newer(const s_ctr_t *c, uint64_t epoch, uint64_t seq)
{
    return epoch > c->epoch || (epoch == c->epoch && seq > c->seq);
}

counter_verdict_t counter_apply(counter_t *self, const counter_reading_t *r,
                                counter_result_t *out)
{
    uint32_t at = COUNTER_AT_NONE;
    return counter_apply_at(self, &at, r, out);
}

counter_verdict_t counter_apply_at(counter_t *self, uint32_t *at, const counter_reading_t *r,
                                   counter_result_t *out)
{
    assert(self && at && r && out);
    *out = (counter_result_t){.verdict = COUNTER_NOMEM, .previous = -1};
    uint32_t slot = 0, idx = *at;
    size_t klen = 0;
    uint64_t h = 0;
    assert(idx == COUNTER_AT_NONE || idx < self->n);
    if (idx == COUNTER_AT_NONE || idx >= self->n) {
        idx = UINT32_MAX;
        out->modulus = s_modulus(self, r->name, r->name_len);
        klen = s_key(self, r->source_id, r->kind, r->station, r->station_len, r->name,
                     r->name_len);
        if (klen == 0) {
            *at = COUNTER_AT_NONE;
            return out->verdict;
        }
        h = XXH3_64bits(self->kbuf, klen);
        idx = s_find(self, self->kbuf, klen, h, &slot);
    }
    *at = idx == UINT32_MAX ? COUNTER_AT_NONE : idx;
    uint64_t m = idx != UINT32_MAX ? self->ctr[idx].modulus : out->modulus;
    out->modulus = m;
    if (r->reading < 0 || (uint64_t)r->reading >= m) {
        out->verdict = COUNTER_RANGE;
        return out->verdict;
    }
    uint64_t jmax = self->cfg.max_jump;
    int64_t v = r->reading, d = 0;
    counter_verdict_t verdict;
    if (idx == UINT32_MAX) {
        idx = s_add(self, self->kbuf, klen, h, slot, m);
        if (idx == UINT32_MAX)
            return out->verdict; /* COUNTER_NOMEM */
        *at = idx;
        verdict = COUNTER_BASE;
        if (r->from_zero && v > 0) {
            verdict = COUNTER_DELTA;
            d = v;
        }
    } else {
        s_ctr_t *c = &self->ctr[idx];
        out->previous = c->last;
        if (!s_newer(c, r->epoch, r->seq)) {
            out->verdict = COUNTER_STALE;
            return out->verdict;
        }
        int64_t L = c->last;
        if (v == L) {
            verdict = COUNTER_REPEAT;
        } else if (v > L) {
            verdict = COUNTER_DELTA;
            d = v - L;
        } else if (self->cfg.jitter && v > 0 && (uint64_t)(L - v) <= self->cfg.jitter) {
            verdict = COUNTER_JITTER;
        } else {
            /* L < m unless the modulus was lowered since: then no rollover. */
            uint64_t bound = jmax ? jmax : m / 2;
            uint64_t roll = (uint64_t)L < m ? m - (uint64_t)L + (uint64_t)v : UINT64_MAX;
            if (roll <= bound) {
                verdict = COUNTER_ROLLOVER;
                d = (int64_t)roll;
            } else {
                verdict = COUNTER_RESET;
                d = v;
            }
        }
    }
    if (jmax && (uint64_t)d > jmax)
        verdict = COUNTER_JUMP;
    s_ctr_t *c = &self->ctr[idx];
    if (verdict != COUNTER_JITTER)
        c->last = v;
    c->epoch = r->epoch;
    c->seq = r->seq;
    c->time_ns = r->time_ns;
    s_mark(self, idx);
    out->verdict = verdict;
    out->delta = verdict == COUNTER_DELTA || verdict == COUNTER_ROLLOVER ||
                         verdict == COUNTER_RESET
                     ? d
                     : 0;
    return verdict;
}

void counter_export_dirty(counter_t *self, counter_export_fn *fn, void *ctx)
{
    assert(self && fn);
    uint8_t st[S_STATE_MAX];
    for (uint32_t i = 0; i < self->ndirty; i++) {
        s_ctr_t *c = &self->ctr[self->dirty[i]];
        uint8_t *p = st;
        *p++ = S_FORMAT;
        p += fp_varint_put(p, (uint64_t)c->last);
        p += fp_varint_put(p, c->epoch);
        p += fp_varint_put(p, c->seq);
        p += fp_varint_put(p, fp_zigzag(c->time_ns));
        fn(ctx, c->key, c->klen, st, (size_t)(p - st));
        c->dirty = false;
    }
    self->ndirty = 0;
}

/* A varint of key bytes in its one shortest form, as s_key writes it; 0
   or -1. A longer form (0x87 0x00 for 7) would name the same counter with
   other bytes: restored, it would never be found again (fuzz_counter). */
static int s_key_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    const uint8_t *at = *p;
    if (fp_varint_get(p, end, v) != 0 || (size_t)(*p - at) != fp_varint_len(*v))
        return -1;
    return 0;
}

/* Parses key bytes (exactly as s_key writes them); 0 or -1. */
static int s_key_parse(const uint8_t *k, size_t klen, uint64_t *source, uint8_t *kind,
                       const char **name, uint32_t *nlen)
{
    const uint8_t *p = k, *end = k + klen;
    uint64_t src, slen, n;
    if (!k || klen < 1 || *p++ != S_FORMAT || s_key_varint(&p, end, &src) != 0 || src == 0 ||
        p >= end)
        return -1;
    uint8_t kd = *p++;
    if (kd != FP_KIND_PART_COUNTER && kd != FP_KIND_SCRAP_COUNTER)
        return -1;
    if (s_key_varint(&p, end, &slen) != 0 || slen > (uint64_t)(end - p))
        return -1;
    p += slen;
    if (s_key_varint(&p, end, &n) != 0 || n != (uint64_t)(end - p) || n == 0)
        return -1;
    *source = src;
    *kind = kd;
    *name = (const char *)p;
    *nlen = (uint32_t)n;
    return 0;
}

uint64_t counter_key_source(const void *key, size_t klen)
{
    uint64_t src;
    uint8_t kind;
    const char *name;
    uint32_t nlen;
    return s_key_parse(key, klen, &src, &kind, &name, &nlen) == 0 ? src : 0;
}

int counter_import(counter_t *self, const void *key, size_t klen, const void *state,
                   size_t slen)
{
    assert(self);
    uint64_t src, last, epoch, seq, t;
    uint8_t kind;
    const char *name;
    uint32_t nlen;
    if (s_key_parse(key, klen, &src, &kind, &name, &nlen) != 0 || !state)
        return -1;
    const uint8_t *p = state, *end = p + slen;
    if (slen < 1 || *p++ != S_FORMAT || fp_varint_get(&p, end, &last) != 0 ||
        fp_varint_get(&p, end, &epoch) != 0 || fp_varint_get(&p, end, &seq) != 0 ||
        fp_varint_get(&p, end, &t) != 0 || p != end || last >= COUNTER_MODULUS_MAX)
        return -1;
    uint64_t h = XXH3_64bits(key, klen);
    uint32_t slot;
    if (s_find(self, key, klen, h, &slot) != UINT32_MAX)
        return -1;
    uint32_t idx = s_add(self, key, klen, h, slot, s_modulus(self, name, nlen));
    if (idx == UINT32_MAX)
        return -2;
    s_ctr_t *c = &self->ctr[idx];
    c->last = (int64_t)last;
    c->epoch = epoch;
    c->seq = seq;
    c->time_ns = fp_unzigzag(t);
    return 0;
}
