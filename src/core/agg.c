/*  agg.c - aggregation of deduplicated records into ERP checkpoints (agg.h).

    Data structures
      - intern: the shard's refcounted strings; keys hold references to their
        strings (an operation also to its line and station), so interned
        memory follows the open keys.
      - pool: every key is an entry in one array; an entry's index is stable
        for its life (freed indices go to a free list), so links between
        entries are indices and survive growth. Index 0 is never used: 0 is
        "none" in every link. Entries are 64-byte aligned, with what agg_add
        touches per record in their first two cache lines.
      - slots: open addressing, linear probing, power-of-two size, at most 70%
        full, backward-shift deletion. A slot holds (low 32 bits of the key's
        table hash, entry index); the home slot is tag & mask.
      - growth is incremental: a full table becomes `old` and a table twice
        the size takes new keys; every s_reserve moves a bounded run of old
        slots over (s_migrate) and leaves S_MOVED behind, which keeps old
        probe chains intact. Lookups try the new table, then the old one.
        A whole rehash at once stalled the shard for 13 ms at 183,000 keys
        and 20 ms at 367,000 (the p99 spikes of the latency benchmark).
      - the key is (kind, symbol ids); its table hash is s_key_hash of that
        (process-local: symbol ids). The event_id needs a hash that is stable
        across restarts, so each entry also keeps khash = XXH3-128 of the
        kind and the key STRINGS, computed once when the key is created.
      - pool and slots of 2 MiB or more are their own mappings
        (s_big_alloc), so the pool grows by mremap, not by copying.
      - operation = the head entry of (plant, order, operation), key kind
        S_KIND_OP, period 0: line, station, closed, the FIFO link. Every
        completion, consumption and scrap entry (one per period) links to
        its head (op) and the head keeps them in an intrusive singly-linked
        list (first_child / child_next), so OperationCompleted can flush
        them and release can free them. A record looks up only the entries
        of its period; the head is looked up only when a key is created.
      - periods: s_period maps an event time to a cached period (S_PC of
        them; the hot path is one compare pair against the last hit), whose
        id is part of the key.
      - two intrusive doubly-linked lists of entries with pending records:
        DIRTY (open operations) and LATE (closed operations: corrections).
        An entry is on exactly one list iff count > 0 and, for a completion,
        stays there while its deltas are 0/0 (see agg.h). Flushes walk these
        lists only, never the table.
      - a FIFO of closed operations in closing order (closed_at grows along it).

    Time for closing: agg_add has no clock. An operation closed by agg_add
    gets closed_at = self->now, the now_ns of the latest agg_flush call (0
    before the first; after agg_import, the latest closed_at restored).
    agg_flush releases a closed operation when
    now_ns - closed_at >= closed_key_grace_ns and nothing of it is pending, so
    the real grace is between the configured grace and grace + one flush
    interval.

    Hot path (agg_add). Pass 0, once per batch: the string indices the
    records use are collected (a stamp array, no search) and mapped to
    symbols with intern_find_many, which hashes, prefetches and looks them up
    a group at a time; a string not interned yet is acquired, and the batch
    holds that reference until agg_add returns (strings found need none:
    keys hold them and agg_add releases no key). Then the records, in chunks
    of S_CHUNK: pass 1 validates each, builds its keys from the map, hashes
    them and prefetches their slots; pass 2 prefetches the two hot lines of
    the entries the slots name and keeps them as hints; pass 3 applies the
    records in order (a hint whose key matches needs no probe; a consumption
    record reaches its operation through its key's entry). Capacity for
    every key the chunk could create is reserved before pass 1, so nothing
    grows (and no pointer moves) inside a chunk and nothing is allocated per
    record but new strings.

    Callbacks: emit and reject run inside agg_add/agg_flush and must not call
    back into this agg_t.

    Persistence (formats in agg.h): a third intrusive list, EXPORT, holds the
    entries changed since the last agg_export_dirty (flag S_EXPORT; s_mark is
    called wherever persistent state changes: create, account, emit, close).
    Release appends the keys it frees to `rel` (serialized, since the entries
    are gone), exported as deletions before the changed keys. Marking is off
    until the first agg_export_dirty or agg_import, so a shard without
    durability keeps no list and no released keys. The closed-operations FIFO
    order is persisted as close_seq (one more than the FIFO's tail, so it is a
    function of what is held and a restored agg_t numbers alike); agg_import
    appends closed operations in file order and the FIFO is merge-sorted by
    close_seq before it is next used. A consumption or scrap key imported
    before its operation creates the operation as a placeholder (S_PLACEHOLDER), filled
    when its own pair comes.
*/
#include "agg.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
/* Inlined: XXH3 of short keys is a few ns, a library call doubles it. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "intern.h"
#include "record_check.h"
#include "route.h"
#include "varint.h"

#define S_LINEAGE 4    /* lineage ranges kept per entry (<= FP_LINEAGE_MAX) */
#define S_CHUNK 256    /* records hashed and prefetched together */
#define S_NONE 0u      /* "no entry" in every index link */
#define S_MOVED UINT32_MAX /* old-table slot whose entry moved to the new table (pool
                              indices stay below 2^31: s_reserve) */
#define S_INITIAL_SLOTS 1024u
#define S_INITIAL_POOL 256u
#define S_KIND_OP 4u   /* the operation head's key kind (internal: no checkpoint kind) */
#define S_PC 8         /* periods cached (period.h lookups are a few microseconds) */
#define S_PERIOD_BIAS (1u << 29) /* period id = start in minutes since 1970 + this */

_Static_assert(S_LINEAGE <= FP_LINEAGE_MAX, "lineage must fit a checkpoint");

/* Entry flags. */
enum {
    S_LATE = 1,     /* pending records arrived after the operation closed */
    S_CLOSED = 2,   /* operation entry: completed (OperationCompleted seen) */
    S_ON_DIRTY = 4, /* on the DIRTY list */
    S_ON_LATE = 8,  /* on the LATE list */
    S_EXPORT = 16,  /* on the EXPORT list: changed since agg_export_dirty */
    S_PLACEHOLDER = 32,    /* operation created by agg_import for a child; its own
                       pair not imported yet */
};

enum { S_LIST_DIRTY = 0, S_LIST_LATE = 1 };

/* Key field positions in s_key_t.sym. */
enum { K_PLANT = 0, K_ORDER, K_OPERATION, K_MATERIAL, K_LOT, K_UNIT, K_FIELDS };
#define K_REASON K_MATERIAL /* scrap keys keep the reason in the 4th field */

/* An aggregation key as symbol ids and its period. All uint32_t: no
   padding, hashed as bytes. */
typedef struct {
    uint32_t kind;          /* FP_CK_*, or S_KIND_OP for an operation head */
    uint32_t sym[K_FIELDS]; /* unused fields are INTERN_EMPTY */
    uint32_t period;        /* period id (s_pid); 0 for heads and without periods */
} s_key_t;

_Static_assert(sizeof(s_key_t) == 32 && offsetof(s_key_t, sym) == 4 &&
                   offsetof(s_key_t, period) == 28,
               "s_key_eq and s_key_hash read s_key_t as words");

typedef struct {
    /* Hot: the first two cache lines (the pool is 64-byte aligned) hold what
       agg_add reads and writes per record, so an update touches two
       prefetched lines: key, sums, count, times, flags, lineage[0]. */
    s_key_t key;
    uint32_t op;          /* the operation entry (itself for a completion) */
    int64_t sum0;         /* pending: completion yield | consumption quantity | scrap parts */
    int64_t sum1;         /* pending: completion scrap (parts); 0 for other kinds */
    uint64_t count;       /* pending records */
    int64_t first_ns, last_ns; /* pending records' event times, ns since Unix epoch */
    uint8_t flags;        /* S_* */
    uint8_t nlineage;     /* ranges used in lineage, 0..S_LINEAGE */
    bool truncated;       /* a pending record's (source, epoch) found no lineage slot */
    uint32_t list_prev, list_next; /* DIRTY or LATE list */
    uint32_t child_next;  /* next child of the same operation; free-list link when free */
    fp_seq_range_t lineage[S_LINEAGE];
    /* Cold: creation, emission, close, release, export. */
    XXH128_hash_t khash;  /* XXH3-128 of kind + key strings (+ period): stable, for event_id */
    uint64_t checkpoint_no; /* of the last emitted checkpoint; 0 = none yet */
    uint32_t last_flush;    /* agg_flush generation of its last checkpoint (s_due) */
    int64_t closed_at;      /* operation: self->now when it closed */
    uint64_t close_seq;     /* operation: closing order: the FIFO's order, see s_complete */
    uint32_t exp_prev, exp_next; /* EXPORT list (while tracking) */
    /* operation heads only */
    uint32_t first_child;
    uint32_t line, station; /* symbols, first record's */
    uint32_t fifo_next;     /* closed-operations FIFO */
} __attribute__((aligned(64))) s_entry_t;

/* A cached posting period (period.h) with its id. */
typedef struct {
    int64_t start, end; /* [start, end), ns */
    uint32_t id;        /* s_pid */
    int32_t date;       /* posting date, days since 1970-01-01 */
    uint8_t index;      /* shift number or hour */
    bool closed;        /* date < closed_before */
    char date_str[11];  /* "YYYY-MM-DD": formatted once per period, not per checkpoint */
    char name[16];      /* "day", "shift-N", "hour-HH" */
} s_pc_t;

_Static_assert(offsetof(s_entry_t, lineage) + sizeof(fp_seq_range_t) <= 128,
               "the hot fields and lineage[0] fit the first two cache lines");

typedef struct {
    uint32_t tag; /* low 32 bits of the entry's hash */
    uint32_t idx; /* entry index; S_NONE = empty */
} s_slot_t;

/* Per record of the current chunk, from pass 1. cm: the completion key of
   the record's period (not for MaterialConsumed); child: its consumption or
   scrap key. The operation head's key is built from them when needed. */
typedef struct {
    s_key_t cm, child;
    uint64_t hcm, hchild;
    uint32_t ccm, cchild; /* pass 2: entries whose slot tag matched, S_NONE = none
                             (hints: pass 3 checks the key, or searches) */
    uint8_t kind;     /* record kind, 0 = refuse */
    bool has_child;
    const char *refuse; /* reason when kind == 0 */
} s_pre_t;

struct agg {
    agg_config_t cfg;
    char *instance;
    char *idbuf;          /* event_id: instance + '-' + 32 hex + NUL */
    agg_emit_fn *emit;
    agg_reject_fn *reject;
    void *ctx;
    intern_t *intern;
    XXH3_state_t *xxh;    /* reused for key hashes */

    s_entry_t *pool;      /* [pool_cap] */
    uint32_t pool_cap, pool_used, pool_free, pool_nfree;
    s_slot_t *slots;      /* [mask + 1] */
    uint64_t mask;
    s_slot_t *old;        /* [old_mask + 1] while growing, else NULL */
    uint64_t old_mask;
    uint64_t migrated;    /* old slots below this index are S_NONE or S_MOVED */
    uint64_t created, created_migrated; /* keys created ever; at the last s_migrate step */
    s_slot_t *next;       /* the table the next growth will use, being faulted in */
    uint64_t next_cap, next_touched; /* its slots; bytes of it touched so far */
    uint64_t nkeys;

    uint32_t head[2], tail[2]; /* DIRTY, LATE */
    uint32_t fifo_head, fifo_tail;
    int64_t now;          /* now_ns of the latest agg_flush */
    uint64_t nheads;      /* operation heads among nkeys */
    uint32_t flush_gen;   /* agg_flush calls so far */

    /* posting periods (period.h; agg.h "Periods") */
    bool periods;         /* cfg.period.kind != FP_PERIOD_NONE */
    s_pc_t pc[S_PC];      /* cached periods */
    uint32_t pc_next, npc;
    /* the hot path's period, pc[hit_idx]: t is in it iff (uint64)(t - hit_lo)
       < hit_span; never a closed one (those take the slow path) */
    int64_t hit_lo;
    uint64_t hit_span;
    uint32_t hit_id, hit_idx;
    int64_t wm;           /* event-time watermark (agg_watermark) */
    int64_t flushed_through; /* periods ending at or before this were flushed */
    bool meta_dirty;      /* flushed_through changed since the last export */
    s_pc_t first_open;    /* closed_before: the first open period */

    /* agg_add scratch, [map_cap] each: map = batch string index -> symbol,
       for the indices the batch's records use (map[0] = INTERN_EMPTY);
       used = the used indices; touched = symbols the batch interned itself
       (it holds one reference on each until agg_add returns) */
    uint32_t *map, *used, *touched;
    uint32_t map_cap, nused, ntouched;
    /* [FP_BATCH_STRINGS_MAX + 1], any uint16_t index: mark[i] == mgen when
       index i is used by the current batch (stale values never equal it) */
    uint8_t *mark;
    uint8_t mgen;
    /* one group of used strings for intern_find_many: bytes, lengths,
       hashes, symbols */
    const char *sptr[S_CHUNK];
    uint32_t slen[S_CHUNK];
    uint64_t shash[S_CHUNK];
    uint32_t ssym[S_CHUNK];

    /* persistence (agg.h): */
    bool track;           /* marking changes: after agg_export_dirty or agg_import */
    uint32_t exp_head;    /* EXPORT list: marked entries, doubly linked */
    uint8_t *rel;         /* released keys since the last export: [varint len][key]... */
    size_t rel_len, rel_cap;
    uint8_t *kbuf, *sbuf; /* export scratch for one key and one state */
    size_t kbuf_cap, sbuf_cap;
    size_t key_max;       /* >= the key bytes of any entry ever created */
    size_t attr_max;      /* >= line + station bytes of any operation ever created */
    bool fifo_unsorted;   /* agg_import appended to the FIFO out of order */

    s_pre_t pre[S_CHUNK];
    agg_stats_t stats;
    agg_pending_t pend; /* = sums over entries of sum0 and count, per key kind */
};

/* ---- big arrays ---- */

/* Arrays of S_BIG bytes or more are mappings of their own, 2 MiB-aligned;
   smaller ones come from malloc. Zeroed, 64-byte aligned; a grown small
   array is a new one (no realloc: it would lose the alignment).

   No MADV_HUGEPAGE. It was tried: on this VM (defrag=madvise) a huge page's
   first touch compacts memory in the faulting thread, 0.5 GB/s against
   2.3 GB/s for 4 KiB pages, and the shard stalled on it as keys arrived
   (3 % of all CPU samples in the max-throughput benchmark). Upserts gained
   nothing from it (bench_micro, 947,093 keys: 91.6-100.3 ns either way):
   agg_add prefetches slots and entries a chunk ahead, and the page walks
   overlap with that. */
#define S_BIG (2u << 20)

static void *s_big_alloc(size_t size)
{
    if (size < S_BIG) {
        void *p = aligned_alloc(64, (size + 63) & ~(size_t)63);
        if (p)
            memset(p, 0, size);
        return p;
    }
    size_t len = (size + S_BIG - 1) & ~(size_t)(S_BIG - 1);
    uint8_t *m = mmap(NULL, len + S_BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    /* keep the 2 MiB-aligned len bytes, unmap the slack on both sides */
    uint8_t *p = (uint8_t *)(((uintptr_t)m + S_BIG - 1) & ~(uintptr_t)(S_BIG - 1));
    if (p > m)
        munmap(m, (size_t)(p - m));
    if (p + len < m + len + S_BIG)
        munmap(p + len, (size_t)(m + len + S_BIG - (p + len)));
    return p;
}

/* Frees what s_big_alloc(size) returned; NULL-safe. */
static void s_big_free(void *p, size_t size)
{
    if (!p)
        return;
    if (size < S_BIG)
        free(p);
    else
        munmap(p, (size + S_BIG - 1) & ~(size_t)(S_BIG - 1));
}

/* Grows an array from s_big_alloc(old) to new bytes, keeping its content;
   the grown part is zero. A big array moves by remapping its pages
   (mremap), not by copying them: growing a pool of a million entries would
   otherwise copy and fault in hundreds of MiB at once and stall the shard.
   Returns NULL on failure (the old array is then untouched). */
static void *s_big_grow(void *p, size_t old, size_t size)
{
    if (old >= S_BIG) {
        size_t olen = (old + S_BIG - 1) & ~(size_t)(S_BIG - 1);
        size_t nlen = (size + S_BIG - 1) & ~(size_t)(S_BIG - 1);
        void *n = mremap(p, olen, nlen, MREMAP_MAYMOVE);
        if (n == MAP_FAILED)
            return NULL;
        return n;
    }
    void *n = s_big_alloc(size);
    if (!n)
        return NULL;
    memcpy(n, p, old);
    s_big_free(p, old);
    return n;
}

/* ---- construction ---- */

static s_pc_t *s_pc_put(agg_t *self, const fp_period_t *p);

agg_t *agg_new(const agg_config_t *cfg, agg_emit_fn *emit, agg_reject_fn *reject, void *ctx)
{
    assert(cfg && emit && reject);
    agg_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    const char *inst = cfg->instance ? cfg->instance : "";
    size_t ilen = strlen(inst);
    self->instance = malloc(ilen + 1);
    self->idbuf = malloc(ilen + 1 + 32 + 1);
    self->intern = intern_new();
    self->xxh = XXH3_createState();
    self->pool_cap = S_INITIAL_POOL;
    self->pool = s_big_alloc(self->pool_cap * sizeof *self->pool);
    self->mark = calloc(FP_BATCH_STRINGS_MAX + 1, 1);
    self->slots = s_big_alloc(S_INITIAL_SLOTS * sizeof *self->slots);
    if (!self->instance || !self->idbuf || !self->intern || !self->xxh || !self->pool ||
        !self->slots || !self->mark) {
        agg_destroy(&self);
        return NULL;
    }
    memcpy(self->instance, inst, ilen + 1);
    self->cfg.instance = self->instance;
    self->emit = emit;
    self->reject = reject;
    self->ctx = ctx;
    self->pool_used = 1; /* index 0 is S_NONE */
    self->mask = S_INITIAL_SLOTS - 1;
    self->periods = cfg->period.kind != FP_PERIOD_NONE;
    /* Without periods one entry holds every time, id 0 (s_pid). */
    self->pc[0] = (s_pc_t){.start = INT64_MIN, .end = INT64_MAX, .id = 0};
    self->npc = 1;
    self->hit_lo = INT64_MIN;
    self->hit_span = UINT64_MAX; /* every t but INT64_MAX, which the slow path maps alike */
    self->wm = INT64_MIN;
    self->flushed_through = INT64_MIN;
    if (self->periods) {
        self->npc = 0;
        self->pc[0].end = INT64_MIN; /* nothing cached */
        self->hit_span = 0;
    }
    if (self->periods && cfg->closed_set) {
        fp_period_t p;
        fp_period_first_of_date(&cfg->period, cfg->closed_before, &p);
        self->first_open = *s_pc_put(self, &p);
    }
    return self;
}

void agg_destroy(agg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    agg_t *self = *self_p;
    intern_destroy(&self->intern); /* frees every string; entries hold no other memory */
    if (self->xxh)
        XXH3_freeState(self->xxh);
    s_big_free(self->pool, (size_t)self->pool_cap * sizeof *self->pool);
    s_big_free(self->slots, (size_t)(self->mask + 1) * sizeof *self->slots);
    s_big_free(self->old, (size_t)(self->old_mask + 1) * sizeof *self->old);
    s_big_free(self->next, (size_t)self->next_cap * sizeof *self->next);
    free(self->map);
    free(self->used);
    free(self->touched);
    free(self->mark);
    free(self->idbuf);
    free(self->instance);
    free(self->rel);
    free(self->kbuf);
    free(self->sbuf);
    free(self);
    *self_p = NULL;
}

const agg_pending_t *agg_pending(const agg_t *self)
{
    return &self->pend;
}

/* Adds q to a pending total, wrapping (the sum over many keys may exceed
   int64 where no single key does). */
static void s_pend_add(int64_t *total, int64_t q)
{
    *total = (int64_t)((uint64_t)*total + (uint64_t)q);
}

static void s_pend_sub(int64_t *total, int64_t q)
{
    *total = (int64_t)((uint64_t)*total - (uint64_t)q);
}

const agg_stats_t *agg_stats(const agg_t *self)
{
    return &self->stats;
}

/* ---- posting periods ---- */

static int64_t s_floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b < 0);
}

/* Caches period p; returns its slot. */
static s_pc_t *s_pc_put(agg_t *self, const fp_period_t *p)
{
    uint32_t i = self->npc < S_PC ? self->npc++ : self->pc_next++ % S_PC;
    if (i == self->hit_idx)
        self->hit_span = 0; /* its slot is reused: no hot period until the next hit */
    s_pc_t *c = &self->pc[i];
    c->start = p->start_ns;
    c->end = p->end_ns;
    /* periods start at a local minute (whole-minute zone offsets; the
       seconds of a 19th-century LMT only shift the minute) and last an
       hour at least, so their start minute names them */
    c->id = (uint32_t)(s_floor_div(p->start_ns, 60000000000ll) + S_PERIOD_BIAS);
    c->date = p->date;
    c->index = p->index;
    c->closed = self->cfg.closed_set && p->date < self->cfg.closed_before;
    fp_period_date_str(p->date, c->date_str);
    fp_period_name(&self->cfg.period, p, c->name);
    return c;
}

/* Makes cached period c the hot path's (unless it is closed). */
static void s_period_hit(agg_t *self, const s_pc_t *c)
{
    if (c->closed)
        return;
    self->hit_lo = c->start;
    self->hit_span = (uint64_t)c->end - (uint64_t)c->start;
    self->hit_id = c->id;
    self->hit_idx = (uint32_t)(c - self->pc);
}

/* The cached period that holds t (computing it if none does). */
static const s_pc_t *s_period_slow(agg_t *self, int64_t t)
{
    for (uint32_t i = 0; i < self->npc; i++)
        if (t >= self->pc[i].start && t < self->pc[i].end) {
            s_period_hit(self, &self->pc[i]);
            return &self->pc[i];
        }
    if (!self->periods) /* t = INT64_MAX */
        return &self->pc[0];
    fp_period_t p;
    fp_period_of(&self->cfg.period, t, &p);
    s_pc_t *c = s_pc_put(self, &p);
    s_period_hit(self, c);
    return c;
}

static const s_pc_t *s_period(agg_t *self, int64_t t)
{
    if ((uint64_t)t - (uint64_t)self->hit_lo < self->hit_span)
        return &self->pc[self->hit_idx];
    return s_period_slow(self, t);
}

/* The hot path: the id of t's period, and whether that period is closed
   (only the slow path returns closed ones). One subtraction and one
   compare when t is in the period of the record before. */
static inline uint32_t s_pid(agg_t *self, int64_t t, bool *closed)
{
    if (__builtin_expect((uint64_t)t - (uint64_t)self->hit_lo < self->hit_span, 1)) {
        *closed = false;
        return self->hit_id;
    }
    const s_pc_t *c = s_period_slow(self, t);
    *closed = c->closed;
    return c->id;
}

/* Whether a stored period id is one s_pc_put can have made: 0 (periods
   off), or a start minute of an int64 ns time. Others would overflow the
   ns arithmetic below: damaged. */
static bool s_period_id_ok(uint64_t id)
{
    if (id == 0)
        return true;
    int64_t m = (int64_t)id - S_PERIOD_BIAS;
    return id < 2 * (uint64_t)S_PERIOD_BIAS && m >= s_floor_div(INT64_MIN, 60000000000ll) &&
           m <= s_floor_div(INT64_MAX, 60000000000ll);
}

/* The period of id (periods on; id != 0, s_period_id_ok). */
static const s_pc_t *s_period_by_id(agg_t *self, uint32_t id)
{
    for (uint32_t i = 0; i < self->npc; i++)
        if (self->pc[i].id == id)
            return &self->pc[i];
    /* The last nanosecond of its start minute lies in it; in the minute of
       INT64_MAX that is INT64_MAX itself (a record at the end of time). */
    int64_t m = (int64_t)id - S_PERIOD_BIAS, t;
    if (__builtin_mul_overflow(m + 1, 60000000000ll, &t))
        t = INT64_MAX;
    else
        t -= 1;
    fp_period_t p;
    fp_period_of(&self->cfg.period, t, &p);
    return s_pc_put(self, &p);
}

void agg_watermark(agg_t *self, int64_t event_ns)
{
    if (event_ns > self->wm)
        self->wm = event_ns;
}

/* ---- table and pool ---- */

/* Marks entry idx changed for the next agg_export_dirty: a load and a
   branch per call, one list push per entry per round. */
static inline void s_mark(agg_t *self, uint32_t idx)
{
    s_entry_t *e = &self->pool[idx];
    if (!self->track || (e->flags & S_EXPORT))
        return;
    e->flags |= S_EXPORT;
    e->exp_prev = S_NONE;
    e->exp_next = self->exp_head;
    if (self->exp_head != S_NONE)
        self->pool[self->exp_head].exp_prev = idx;
    self->exp_head = idx;
}

static void s_unmark(agg_t *self, uint32_t idx)
{
    s_entry_t *e = &self->pool[idx];
    if (!(e->flags & S_EXPORT))
        return;
    if (e->exp_prev != S_NONE)
        self->pool[e->exp_prev].exp_next = e->exp_next;
    else
        self->exp_head = e->exp_next;
    if (e->exp_next != S_NONE)
        self->pool[e->exp_next].exp_prev = e->exp_prev;
    e->flags &= (uint8_t)~S_EXPORT;
}

/* 64x64 -> 128-bit multiply, halves folded (wyhash's "mum"). */
static inline uint64_t s_mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* The table hash of a key. Symbol ids are not stable across restarts, so
   neither is this (nothing persists it): any well-mixed function will do,
   and three multiplies cost a third of XXH3 on 32 bytes. A mum with a zero
   factor would lose its other input: the constants XORed in cannot equal
   any word of a key (kind <= 4, symbol ids < INTERN_ID_LIMIT = 2^30 and
   period ids < 2^30 leave bits 62-63 of every word clear, each constant
   has bit 63 set). */
static inline uint64_t s_key_hash(const s_key_t *k)
{
    /* By field, not as 8-byte loads: the caller has just stored the key
       field by field, and a load spanning two stores is not forwarded (a
       stall of some 20 cycles). */
    uint64_t w0 = k->kind | (uint64_t)k->sym[0] << 32;
    uint64_t w1 = k->sym[1] | (uint64_t)k->sym[2] << 32;
    uint64_t w2 = k->sym[3] | (uint64_t)k->sym[4] << 32;
    uint64_t w3 = k->sym[5] | (uint64_t)k->period << 32;
    _Static_assert(INTERN_ID_LIMIT <= (1u << 30) && S_PERIOD_BIAS * 2 <= (1u << 30), "see above");
    uint64_t h = s_mum(w0 ^ 0xa0761d6478bd642full, w1 ^ 0xe7037ed1a0b428dbull) ^
                 s_mum(w2 ^ 0x8ebc6af09c88c6e3ull, w3 ^ 0x889965cc75374cc3ull);
    return s_mum(h ^ 0x9d8e4e27c47d124full, 0xeb44accab455d165ull);
}

static inline bool s_key_eq(const s_key_t *a, const s_key_t *b)
{
    /* in words, not memcmp: gcc calls the library for 32 bytes */
    uint64_t a0, a1, a2, a3, b0, b1, b2, b3;
    memcpy(&a0, &a->kind, 8);
    memcpy(&a1, &a->sym[1], 8);
    memcpy(&a2, &a->sym[3], 8);
    memcpy(&a3, &a->sym[5], 8); /* sym[5] and period */
    memcpy(&b0, &b->kind, 8);
    memcpy(&b1, &b->sym[1], 8);
    memcpy(&b2, &b->sym[3], 8);
    memcpy(&b3, &b->sym[5], 8);
    return ((a0 ^ b0) | (a1 ^ b1) | (a2 ^ b2) | (a3 ^ b3)) == 0;
}

/* The slot index of key k (hash h) in table t, or -1. */
static int64_t s_probe(const agg_t *self, const s_slot_t *t, uint64_t mask, const s_key_t *k,
                       uint64_t h)
{
    uint32_t tag = (uint32_t)h;
    uint64_t i = h & mask;
    for (;;) {
        s_slot_t s = t[i];
        if (s.idx == S_NONE)
            return -1;
        if (s.tag == tag && s.idx != S_MOVED && s_key_eq(&self->pool[s.idx].key, k))
            return (int64_t)i;
        i = (i + 1) & mask;
    }
}

static uint32_t s_find(const agg_t *self, const s_key_t *k, uint64_t h)
{
    int64_t i = s_probe(self, self->slots, self->mask, k, h);
    if (i >= 0)
        return self->slots[i].idx;
    if (self->old && (i = s_probe(self, self->old, self->old_mask, k, h)) >= 0)
        return self->old[i].idx;
    return S_NONE;
}

/* s_find, trying first the entry hint (from pass 2; may be stale or a tag
   collision: the key decides). */
static inline uint32_t s_find_hint(const agg_t *self, const s_key_t *k, uint64_t h,
                                   uint32_t hint)
{
    if (hint != S_NONE && s_key_eq(&self->pool[hint].key, k))
        return hint;
    return s_find(self, k, h);
}

static void s_slot_insert(s_slot_t *slots, uint64_t mask, s_slot_t s)
{
    uint64_t i = s.tag & mask;
    while (slots[i].idx != S_NONE)
        i = (i + 1) & mask;
    slots[i] = s;
}

static void s_slot_remove(agg_t *self, uint32_t idx)
{
    uint64_t mask = self->mask;
    uint64_t h = s_key_hash(&self->pool[idx].key);
    if (self->old) {
        /* Not moved yet: leave S_MOVED (no shifting in the old table). */
        int64_t o = s_probe(self, self->old, self->old_mask, &self->pool[idx].key, h);
        if (o >= 0) {
            assert(self->old[o].idx == idx);
            self->old[o].idx = S_MOVED;
            return;
        }
    }
    uint64_t i = h & mask;
    while (self->slots[i].idx != idx) {
        assert(self->slots[i].idx != S_NONE); /* a live entry is always in a table */
        i = (i + 1) & mask;
    }
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (self->slots[j].idx == S_NONE)
            break;
        uint64_t home = self->slots[j].tag & mask;
        /* The slot at j may stay if its home lies cyclically in (i, j]. */
        if (((j - home) & mask) < ((j - i) & mask))
            continue;
        self->slots[i] = self->slots[j];
        i = j;
    }
    self->slots[i] = (s_slot_t){0, S_NONE};
}

/* Moves up to n old slots to the new table; frees the old table when it
   is all moved. */
static void s_migrate(agg_t *self, uint64_t n)
{
    if (!self->old)
        return;
    uint64_t end = self->old_mask + 1;
    uint64_t stop = end - self->migrated < n ? end : self->migrated + n;
    for (uint64_t i = self->migrated; i < stop; i++) {
        s_slot_t s = self->old[i];
        if (s.idx != S_NONE && s.idx != S_MOVED) {
            s_slot_insert(self->slots, self->mask, s);
            self->old[i].idx = S_MOVED;
        }
    }
    self->migrated = stop;
    if (stop == end) {
        s_big_free(self->old, end * sizeof *self->old);
        self->old = NULL;
        self->old_mask = 0;
        self->migrated = 0;
    }
}

/* Makes room for `more` new keys without growing inside the caller's
   chunk: table load <= 70% (old and new tables together) and free pool
   entries. -1 on out of memory (what exists stays valid). */
static int s_reserve(agg_t *self, uint64_t more)
{
    /* A bounded step of a growth in progress: 64 old slots, and four more
       per key created since the last step. A new table starts at most 35%
       full and takes new keys up to 70%, so the old one is empty long
       before the next growth (should it not be, it is finished at once
       below). Paced by the keys actually created, not by `more` (every key
       a chunk could create, some 40 times as many): moving each old slot
       is a cache miss in the new table, and moving 2,048 per chunk made
       the shard a third as fast for the 20 ms a growth at 367,000 keys
       took, long enough to back up the pipeline (a 15-20 ms p99 spike in
       the latency benchmark). */
    s_migrate(self, 64 + 4 * (self->created - self->created_migrated));
    self->created_migrated = self->created;
    uint64_t want = self->nkeys + more;
    uint64_t cap = self->mask + 1;
    /* From 60% on, the next table is mapped and faulted in a few pages per
       step: the first touch of a page costs some microseconds here (a VM),
       and a fresh 8 MiB table took its 2,048 faults in the first chunks
       after a growth, all at once. Not earlier: until the growth it is
       memory held ahead (32 MiB at a million keys). */
    if (!self->next && !self->old && self->nkeys * 10 > cap * 6 && cap * 2 <= (1ull << 32) &&
        cap * 2 * sizeof *self->slots >= S_BIG) {
        self->next = s_big_alloc(cap * 2 * sizeof *self->next);
        self->next_cap = self->next ? cap * 2 : 0;
        self->next_touched = 0;
    }
    if (self->next) {
        size_t bytes = self->next_cap * sizeof *self->next;
        for (int k = 0; k < 4 && self->next_touched < bytes; k++, self->next_touched += 4096)
            ((volatile uint8_t *)self->next)[self->next_touched] = 0;
    }
    if (want * 10 > cap * 7) {
        uint64_t ncap = cap;
        while (want * 10 > ncap * 7)
            ncap *= 2;
        if (ncap > (1ull << 32)) /* tags are 32 bits */
            return -1;
        /* The table faulted in ahead (zero: only zeros were written), unless
           a chunk of many new keys grew past it at once. */
        s_slot_t *n = self->next_cap == ncap ? self->next : NULL;
        if (!n) {
            s_big_free(self->next, (size_t)self->next_cap * sizeof *self->next);
            n = s_big_alloc(ncap * sizeof *n);
        }
        self->next = NULL;
        self->next_cap = 0;
        if (!n)
            return -1;
        s_migrate(self, UINT64_MAX); /* the previous growth, if unfinished */
        self->old = self->slots;
        self->old_mask = self->mask;
        self->migrated = 0;
        self->slots = n;
        self->mask = ncap - 1;
    }
    uint64_t avail = (uint64_t)(self->pool_cap - self->pool_used) + self->pool_nfree;
    if (avail < more) {
        uint64_t ncap = self->pool_cap;
        while ((ncap - self->pool_used) + self->pool_nfree < more)
            ncap *= 2;
        if (ncap > (1ull << 31)) /* indices < 2^31: S_MOVED is never one */
            return -1;
        s_entry_t *n = s_big_grow(self->pool, (size_t)self->pool_cap * sizeof *n,
                                  ncap * sizeof *n);
        if (!n)
            return -1;
        self->pool = n;
        self->pool_cap = (uint32_t)ncap;
    }
    return 0;
}

/* Whether one more key fits in what s_reserve set aside (never grows). */
static bool s_room(const agg_t *self)
{
    bool pool_ok = self->pool_nfree > 0 || self->pool_used < self->pool_cap;
    /* Keep at least one empty slot whatever happens, or probes never end. */
    return pool_ok && self->nkeys + 2 <= self->mask + 1;
}

/* Also returns the key strings' total length. */
static size_t s_hash_strings(agg_t *self, const s_key_t *k, XXH128_hash_t *out)
{
    size_t total = 0;
    /* kind, then each field as (u32 length, bytes): injective, unlike separators. */
    int nfields = k->kind == FP_CK_CONSUMPTION ? 6 : k->kind == FP_CK_SCRAP ? 4 : 3;
    uint8_t kind = (uint8_t)k->kind;
    XXH3_128bits_reset(self->xxh);
    XXH3_128bits_update(self->xxh, &kind, 1);
    for (int f = 0; f < nfields; f++) {
        uint32_t len;
        const char *s = intern_str(self->intern, k->sym[f], &len);
        XXH3_128bits_update(self->xxh, &len, sizeof len);
        XXH3_128bits_update(self->xxh, s, len);
        total += len;
    }
    /* The period after the strings (a length can never be mistaken for it:
       the fields are fixed per kind). Period 0 (periods off) hashes as
       before periods existed, so those event ids stay the same. */
    if (k->period != 0)
        XXH3_128bits_update(self->xxh, &k->period, sizeof k->period);
    *out = XXH3_128bits_digest(self->xxh);
    return total;
}

/* Creates the entry for key k (hash h), taking references on its symbols.
   The caller checked s_room. op: its operation head (S_NONE for a head:
   it is its own). line/station: for a head. */
static uint32_t s_create(agg_t *self, const s_key_t *k, uint64_t h, uint32_t op,
                         uint32_t line, uint32_t station)
{
    assert(s_room(self));
    uint32_t idx;
    if (self->pool_free != S_NONE) {
        idx = self->pool_free;
        self->pool_free = self->pool[idx].child_next;
        self->pool_nfree--;
    } else {
        idx = self->pool_used++;
    }
    s_entry_t *e = &self->pool[idx];
    memset(e, 0, sizeof *e);
    e->key = *k;
    for (int f = 0; f < K_FIELDS; f++)
        intern_ref(self->intern, k->sym[f]);
    /* Export bounds (agg.h formats): version, kind, 6 length varints, the
       period varint. */
    size_t strs = 0;
    if (k->kind == S_KIND_OP) { /* a head emits nothing: no event_id hash */
        for (int f = 0; f < 3; f++) {
            uint32_t len;
            (void)intern_str(self->intern, k->sym[f], &len);
            strs += len;
        }
    } else {
        strs = s_hash_strings(self, k, &e->khash);
    }
    size_t kmax = 2 + K_FIELDS * 5 + 5 + strs;
    if (kmax > self->key_max)
        self->key_max = kmax;
    if (k->kind == S_KIND_OP) {
        uint32_t llen, slen;
        (void)intern_str(self->intern, line, &llen);
        (void)intern_str(self->intern, station, &slen);
        if ((size_t)llen + slen > self->attr_max)
            self->attr_max = (size_t)llen + slen;
        e->op = idx;
        e->line = line;
        e->station = station;
        intern_ref(self->intern, line);
        intern_ref(self->intern, station);
        self->stats.open_operations++;
        self->nheads++;
    } else {
        assert(op != S_NONE && self->pool[op].key.kind == S_KIND_OP);
        e->op = op;
        e->child_next = self->pool[op].first_child;
        self->pool[op].first_child = idx;
    }
    s_slot_insert(self->slots, self->mask, (s_slot_t){.tag = (uint32_t)h, .idx = idx});
    self->nkeys++;
    self->created++;
    self->stats.keys = self->nkeys - self->nheads;
    return idx;
}

/* Frees an entry with nothing pending: table slot, symbols, pool index. The
   caller unlinks it from its operation (release frees whole operations). */
static void s_free(agg_t *self, uint32_t idx)
{
    s_entry_t *e = &self->pool[idx];
    assert(e->count == 0 && !(e->flags & (S_ON_DIRTY | S_ON_LATE)));
    s_unmark(self, idx);
    s_slot_remove(self, idx);
    for (int f = 0; f < K_FIELDS; f++)
        intern_release(self->intern, e->key.sym[f]);
    if (e->key.kind == S_KIND_OP) {
        intern_release(self->intern, e->line);
        intern_release(self->intern, e->station);
        self->nheads--;
    }
    e->key.kind = 0;
    e->child_next = self->pool_free;
    self->pool_free = idx;
    self->pool_nfree++;
    self->nkeys--;
    self->stats.keys = self->nkeys - self->nheads;
}

/* ---- pending lists ---- */

static void s_list_add(agg_t *self, uint32_t idx, int list)
{
    s_entry_t *e = &self->pool[idx];
    e->flags |= list == S_LIST_LATE ? S_ON_LATE : S_ON_DIRTY;
    e->list_next = S_NONE;
    e->list_prev = self->tail[list];
    if (self->tail[list] != S_NONE)
        self->pool[self->tail[list]].list_next = idx;
    else
        self->head[list] = idx;
    self->tail[list] = idx;
}

static void s_list_remove(agg_t *self, uint32_t idx)
{
    s_entry_t *e = &self->pool[idx];
    int list = (e->flags & S_ON_LATE) ? S_LIST_LATE : S_LIST_DIRTY;
    assert(e->flags & (S_ON_DIRTY | S_ON_LATE));
    if (e->list_prev != S_NONE)
        self->pool[e->list_prev].list_next = e->list_next;
    else
        self->head[list] = e->list_next;
    if (e->list_next != S_NONE)
        self->pool[e->list_next].list_prev = e->list_prev;
    else
        self->tail[list] = e->list_prev;
    e->flags &= (uint8_t)~(S_ON_DIRTY | S_ON_LATE);
    e->list_prev = e->list_next = S_NONE;
}

/* ---- emission ---- */

static const char *s_str(const agg_t *self, uint32_t sym)
{
    return intern_str(self->intern, sym, NULL);
}

/* Emits entry idx's pending delta as one checkpoint, then resets it. */
static void s_emit(agg_t *self, uint32_t idx, bool final)
{
    s_entry_t *e = &self->pool[idx];
    const s_entry_t *op = &self->pool[e->op];
    assert(e->count > 0 && e->nlineage > 0);
    e->checkpoint_no++;

    /* event_id: XXH3-128 of (key hash, checkpoint_no, source, epoch and
       first_seq of the first lineage range): a record is summed in exactly
       one checkpoint per key, so (key, that record) names the checkpoint even
       after the key was released and reopened (checkpoint_no restarts). */
    uint64_t in[6] = {e->khash.low64,          e->khash.high64,
                      e->checkpoint_no,        e->lineage[0].source_id,
                      e->lineage[0].epoch,     e->lineage[0].first_seq};
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(in, sizeof in));
    fp_event_id_write(self->idbuf, self->instance, c.digest);

    fp_checkpoint_t ck;
    memset(&ck, 0, sizeof ck);
    ck.event_id = self->idbuf;
    ck.stream_seq = 0; /* the emit thread numbers the feed */
    ck.checkpoint_no = e->checkpoint_no;
    ck.instance = self->instance;
    ck.plant = s_str(self, e->key.sym[K_PLANT]);
    ck.line = s_str(self, op->line);
    ck.order = s_str(self, e->key.sym[K_ORDER]);
    ck.operation = s_str(self, e->key.sym[K_OPERATION]);
    ck.first_time_ns = e->first_ns;
    ck.last_time_ns = e->last_ns;
    ck.record_count = e->count;
    memcpy(ck.lineage, e->lineage, e->nlineage * sizeof e->lineage[0]);
    ck.nlineage = e->nlineage;
    ck.lineage_truncated = e->truncated;
    ck.late = (e->flags & S_LATE) != 0;
    if (self->periods) {
        /* The entry's own period; a closed one (closed_before) posts to the
           first open period and keeps its own as the original. Backfill: the
           period was flushed before (agg.h "Periods"). */
        /* Period 0: the key was made with periods off (the config has
           changed since): its records post by the period of the first. */
        const s_pc_t *pc = e->key.period ? s_period_by_id(self, e->key.period)
                                         : s_period(self, e->first_ns);
        ck.backfill = pc->end <= self->flushed_through;
        if (pc->closed) {
            ck.original_posting_date = pc->date_str;
            ck.original_period_start_ns = pc->start;
            pc = &self->first_open;
            ck.backfill = true;
        }
        ck.posting_date = pc->date_str;
        ck.period = pc->name;
        ck.period_start_ns = pc->start;
        ck.period_end_ns = pc->end;
    }
    switch (e->key.kind) {
    case FP_CK_COMPLETION:
        ck.kind = FP_CK_COMPLETION;
        ck.yield = e->sum0;
        ck.scrap = e->sum1;
        ck.final = final;
        break;
    case FP_CK_CONSUMPTION:
        ck.kind = FP_CK_CONSUMPTION;
        ck.material = s_str(self, e->key.sym[K_MATERIAL]);
        ck.lot = s_str(self, e->key.sym[K_LOT]);
        ck.unit = s_str(self, e->key.sym[K_UNIT]);
        ck.quantity = e->sum0;
        break;
    case FP_CK_SCRAP:
        ck.kind = FP_CK_SCRAP;
        ck.reason = s_str(self, e->key.sym[K_REASON]);
        ck.parts = e->sum0;
        break;
    default:
        assert(!"entry kind");
    }
    self->emit(self->ctx, &ck);

    self->stats.events++;
    if (ck.late)
        self->stats.late_events++;
    if (ck.backfill)
        self->stats.backfill_events++;
    e->last_flush = self->flush_gen;
    s_pend_sub(&self->pend.quantity[e->key.kind - 1], e->sum0);
    self->pend.records[e->key.kind - 1] -= e->count;
    s_list_remove(self, idx);
    s_mark(self, idx);
    e->sum0 = e->sum1 = 0;
    e->count = 0;
    e->nlineage = 0;
    e->truncated = false;
    e->flags &= (uint8_t)~S_LATE;
}

/* ---- applying records ---- */

/* s_account for an entry with nothing pending: starts its times and
   lineage and lists it. */
static void s_account_first(agg_t *self, uint32_t idx, const fp_batch_hdr_t *b,
                            const fp_record_t *r)
{
    s_entry_t *e = &self->pool[idx];
    assert(e->count == 0 && e->nlineage == 0);
    e->first_ns = e->last_ns = r->time_ns;
    if (self->pool[e->op].flags & S_CLOSED)
        e->flags |= S_LATE;
    s_list_add(self, idx, (e->flags & S_LATE) ? S_LIST_LATE : S_LIST_DIRTY);
    e->count = 1;
    self->pend.records[e->key.kind - 1]++;
    s_mark(self, idx);
    e->lineage[0] = (fp_seq_range_t){b->source_id, b->epoch, r->seq, r->seq};
    e->nlineage = 1;
}

/* The lineage of an entry with records pending, when its first range is
   of another (source, epoch). */
static void s_lineage_other(s_entry_t *e, const fp_batch_hdr_t *b, uint64_t seq)
{
    for (uint32_t i = 1; i < e->nlineage; i++) {
        fp_seq_range_t *l = &e->lineage[i];
        if (l->source_id == b->source_id && l->epoch == b->epoch) {
            if (seq < l->first_seq)
                l->first_seq = seq;
            if (seq > l->last_seq)
                l->last_seq = seq;
            return;
        }
    }
    if (e->nlineage < S_LINEAGE)
        e->lineage[e->nlineage++] = (fp_seq_range_t){b->source_id, b->epoch, seq, seq};
    else
        e->truncated = true;
}

/* Counts rec into entry idx (count, times, lineage) and lists it. The
   common case - records pending, from the source of its first lineage
   range - touches only the entry's hot lines and takes no branch that
   depends on the data. Invariant: count > 0 implies nlineage >= 1. */
static inline void s_account(agg_t *self, uint32_t idx, const fp_batch_hdr_t *b,
                             const fp_record_t *r)
{
    s_entry_t *e = &self->pool[idx];
    if (__builtin_expect(e->count == 0, 0)) {
        s_account_first(self, idx, b, r);
        return;
    }
    int64_t t = r->time_ns;
    uint64_t seq = r->seq;
    e->first_ns = t < e->first_ns ? t : e->first_ns;
    e->last_ns = t > e->last_ns ? t : e->last_ns;
    e->count++;
    self->pend.records[e->key.kind - 1]++;
    s_mark(self, idx);
    fp_seq_range_t *l = &e->lineage[0];
    if (__builtin_expect(l->source_id == b->source_id && l->epoch == b->epoch, 1)) {
        l->first_seq = seq < l->first_seq ? seq : l->first_seq;
        l->last_seq = seq > l->last_seq ? seq : l->last_seq;
        return;
    }
    s_lineage_other(e, b, seq);
}

static void s_fifo_sort(agg_t *self);

/* Appends closed head op to the closed-operations FIFO and counts it closed. */
static void s_fifo_append(agg_t *self, uint32_t op)
{
    self->pool[op].fifo_next = S_NONE;
    if (self->fifo_tail != S_NONE)
        self->pool[self->fifo_tail].fifo_next = op;
    else
        self->fifo_head = op;
    self->fifo_tail = op;
    self->stats.open_operations--;
    self->stats.closed_operations++;
}

/* OperationCompleted (counted into completion entry cm of its period):
   the final completion, then everything pending of the operation (head
   op) in every period - consumption, scrap and the completions of other
   periods - then the operation is closed (if it was not). */
static void s_complete(agg_t *self, uint32_t op, uint32_t cm)
{
    s_emit(self, cm, true);
    for (uint32_t c = self->pool[op].first_child; c != S_NONE; c = self->pool[c].child_next)
        if (self->pool[c].count > 0)
            s_emit(self, c, false);
    s_entry_t *e = &self->pool[op];
    if (e->flags & S_CLOSED)
        return;
    e->flags |= S_CLOSED;
    e->closed_at = self->now;
    /* One more than the newest closed operation held, so that the numbers
       depend only on what is held: a restored agg_t numbers alike. */
    if (self->fifo_unsorted)
        s_fifo_sort(self);
    e->close_seq = self->fifo_tail != S_NONE ? self->pool[self->fifo_tail].close_seq + 1 : 0;
    s_mark(self, op);
    s_fifo_append(self, op);
}

static void s_refuse(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *r,
                     const char *reason)
{
    self->stats.rejected++;
    self->reject(self->ctx, b, r, reason);
}

/* The operation head of the record whose keys are in p: from one of its
   entries found, else looked up, else created (S_NONE: no room). */
static uint32_t s_head(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *r,
                       const s_pre_t *p, uint32_t cm, uint32_t ch)
{
    if (cm != S_NONE)
        return self->pool[cm].op;
    if (ch != S_NONE)
        return self->pool[ch].op;
    const s_key_t *k = p->kind == FP_KIND_MATERIAL ? &p->child : &p->cm;
    s_key_t hk = {.kind = S_KIND_OP, .sym = {k->sym[K_PLANT], k->sym[K_ORDER], k->sym[K_OPERATION]}};
    uint64_t h = s_key_hash(&hk);
    uint32_t op = s_find(self, &hk, h);
    if (op != S_NONE)
        return op;
    if (!s_room(self))
        return S_NONE;
    uint32_t line = INTERN_EMPTY, station = INTERN_EMPTY;
    /* The line and station of the first record were mapped in pass 1. */
    if (r->str[FP_STR_LINE] && r->str[FP_STR_LINE] <= b->nstrings)
        line = self->map[r->str[FP_STR_LINE]];
    if (r->str[FP_STR_STATION] && r->str[FP_STR_STATION] <= b->nstrings)
        station = self->map[r->str[FP_STR_STATION]];
    op = s_create(self, &hk, h, S_NONE, line, station);
    s_mark(self, op);
    return op;
}

/* Pass 3 for one record. */
static void s_apply(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *r,
                    const s_pre_t *p)
{
    if (p->kind == 0) {
        s_refuse(self, b, r, p->refuse);
        return;
    }
    /* cm: the completion of the record's period (every kind but
       MaterialConsumed sums or counts there); ch: its consumption or scrap
       key. A MaterialConsumed record touches its consumption key only. */
    uint32_t cm = p->kind != FP_KIND_MATERIAL ? s_find_hint(self, &p->cm, p->hcm, p->ccm) : S_NONE;
    uint32_t ch = p->has_child ? s_find_hint(self, &p->child, p->hchild, p->cchild) : S_NONE;
    int64_t q = r->quantity, tmp;

    /* Refuse before touching anything: overflow of either sum, then keys.
       A key not there yet has sum 0: 0 + q cannot overflow. */
    bool overflow = false;
    switch (p->kind) {
    case FP_KIND_PART_COUNT:
        overflow = cm && __builtin_add_overflow(self->pool[cm].sum0, q, &tmp);
        break;
    case FP_KIND_SCRAP:
        overflow = (cm && __builtin_add_overflow(self->pool[cm].sum1, q, &tmp)) ||
                   (ch && __builtin_add_overflow(self->pool[ch].sum0, q, &tmp));
        break;
    case FP_KIND_MATERIAL:
        overflow = ch && __builtin_add_overflow(self->pool[ch].sum0, q, &tmp);
        break;
    default:
        break;
    }
    if (overflow) {
        s_refuse(self, b, r, "overflow");
        return;
    }
    uint64_t need = (p->kind != FP_KIND_MATERIAL && cm == S_NONE) + (p->has_child && ch == S_NONE);
    if (need > 0) {
        /* Operation heads do not count against max_open_keys (agg.h). */
        if (self->nkeys - self->nheads + need > self->cfg.max_open_keys) {
            s_refuse(self, b, r, "too_many_keys");
            return;
        }
        uint32_t op = s_head(self, b, r, p, cm, ch);
        if (op == S_NONE) {
            s_refuse(self, b, r, "no_memory");
            return;
        }
        if (p->kind != FP_KIND_MATERIAL && cm == S_NONE) {
            if (!s_room(self)) {
                /* the head (if just created) stays, empty and open */
                s_refuse(self, b, r, "no_memory");
                return;
            }
            cm = s_create(self, &p->cm, p->hcm, op, INTERN_EMPTY, INTERN_EMPTY);
            s_mark(self, cm);
        }
        if (p->has_child && ch == S_NONE) {
            if (!s_room(self)) {
                s_refuse(self, b, r, "no_memory");
                return;
            }
            ch = s_create(self, &p->child, p->hchild, op, INTERN_EMPTY, INTERN_EMPTY);
            s_mark(self, ch);
        }
    }
    self->stats.records++;
    switch (p->kind) {
    case FP_KIND_PART_COUNT:
        self->pool[cm].sum0 += q;
        s_pend_add(&self->pend.quantity[FP_CK_COMPLETION - 1], q);
        s_account(self, cm, b, r);
        break;
    case FP_KIND_SCRAP:
        self->pool[cm].sum1 += q;
        self->pool[ch].sum0 += q;
        s_pend_add(&self->pend.quantity[FP_CK_SCRAP - 1], q);
        s_account(self, cm, b, r);
        s_account(self, ch, b, r);
        break;
    case FP_KIND_MATERIAL:
        self->pool[ch].sum0 += q;
        s_pend_add(&self->pend.quantity[FP_CK_CONSUMPTION - 1], q);
        s_account(self, ch, b, r);
        break;
    case FP_KIND_OP_STARTED:
        s_account(self, cm, b, r);
        break;
    case FP_KIND_OP_COMPLETED:
        s_account(self, cm, b, r);
        s_complete(self, self->pool[cm].op, cm);
        break;
    default:
        assert(!"kind checked in pass 1");
    }
}

/* Pass 0 (once per batch): the string indices the records use, in
   self->used. Two sweeps with no search and no validation: stamp every
   index of every record (mark covers any uint16_t, so even an index beyond
   the table is harmless: pass 1 refuses its record, and the sweep over
   1..nstrings never sees it), then collect the stamped ones. */
static void s_collect_strings(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *recs)
{
    _Static_assert(FP_BATCH_STRINGS_MAX == UINT16_MAX, "mark covers every index");
    if (++self->mgen == 0) { /* wrapped: forget every stamp */
        memset(self->mark, 0, FP_BATCH_STRINGS_MAX + 1);
        self->mgen = 1;
    }
    uint8_t *mark = self->mark, g = self->mgen;
    for (uint32_t i = 0; i < b->nrecords; i++) {
        const uint16_t *st = recs[i].str;
        mark[st[0]] = g, mark[st[1]] = g, mark[st[2]] = g;
        mark[st[3]] = g, mark[st[4]] = g, mark[st[5]] = g;
        mark[st[6]] = g, mark[st[7]] = g, mark[st[8]] = g;
    }
    uint32_t n = 0;
    for (uint32_t idx = 1; idx <= b->nstrings; idx++)
        if (mark[idx] == g)
            self->used[n++] = idx;
    self->nused = n;
}

/* Pass 0b: map the used strings to symbols, S_CHUNK at a time through
   intern_find_many (which pipelines hashing, prefetching and lookups). A
   string already interned is held by a key, and agg_add releases no key,
   so it needs no reference of the batch's own; a new one is acquired (the
   batch's reference, in touched). INTERN_NOMEM in map: pass 1 refuses the
   records that need it. */
static void s_map_strings(agg_t *self, fp_batch_hdr_t *b)
{
    const uint32_t *off = fp_batch_stroff(b);
    const char *blob = fp_batch_strblob(b);
    self->map[0] = INTERN_EMPTY;
    for (uint32_t base = 0; base < self->nused; base += S_CHUNK) {
        uint32_t m = self->nused - base < S_CHUNK ? self->nused - base : S_CHUNK;
        const uint32_t *used = self->used + base;
        for (uint32_t i = 0; i < m; i++) {
            uint32_t idx = used[i];
            self->sptr[i] = blob + off[idx - 1];
            self->slen[i] = off[idx] - off[idx - 1] - 1;
        }
        intern_find_many(self->intern, m, self->sptr, self->slen, self->shash, self->ssym);
        for (uint32_t i = 0; i < m; i++) {
            uint32_t sym = self->ssym[i];
            if (sym == INTERN_ABSENT) {
                sym = intern_acquire_hashed(self->intern, self->sptr[i], self->slen[i],
                                            self->shash[i]);
                if (sym != INTERN_NOMEM)
                    self->touched[self->ntouched++] = sym;
            }
            self->map[used[i]] = sym;
        }
    }
}

/* Pass 1 for one record: validate what we rely on, build keys, hash them
   and prefetch their slots. */
static void s_prepare(agg_t *self, const fp_batch_hdr_t *b, const fp_record_t *r, s_pre_t *p)
{
    p->kind = 0;
    p->has_child = false;
    p->refuse = "invalid_record";
    /* The worker's fp_record_check passed every record we are given (it is
       the one record check); this guards only what pass 1 indexes with. */
    /* fp_record_in_range with the kinds aggregation sums (counter readings
       are the worker's: never aggregated as they are) */
    if ((unsigned)r->kind - 1u >= FP_KIND_AGG_MAX || !fp_record_strs_ok(r, b->nstrings))
        return;
    bool closed;
    uint32_t pid = s_pid(self, r->time_ns, &closed);
    if (__builtin_expect(closed, 0) && self->cfg.closed_mode == AGG_CLOSED_REFUSE) {
        p->refuse = "period_closed";
        return;
    }
    const uint32_t *map = self->map;
    uint32_t plant = map[r->str[FP_STR_PLANT]], order = map[r->str[FP_STR_ORDER]],
             operation = map[r->str[FP_STR_OPERATION]];
    /* Any symbol INTERN_NOMEM (bit 31; ids are < INTERN_ID_LIMIT): refuse.
       line and station count: used when the record creates its operation. */
    _Static_assert(INTERN_NOMEM == UINT32_MAX && INTERN_ID_LIMIT <= (1u << 31), "bit 31");
    uint32_t any = plant | order | operation | map[r->str[FP_STR_LINE]] |
                   map[r->str[FP_STR_STATION]];
    /* The keys are built and hashed in locals (registers), then stored:
       hashing what was just stored would read across stores. */
    s_key_t cmk = {.kind = FP_CK_COMPLETION, .sym = {plant, order, operation, 0, 0, 0},
                   .period = pid};
    s_key_t chk = cmk;
    bool child = false;
    if (r->kind == FP_KIND_MATERIAL) {
        chk.kind = FP_CK_CONSUMPTION;
        chk.sym[K_MATERIAL] = map[r->str[FP_STR_MATERIAL]];
        chk.sym[K_LOT] = map[r->str[FP_STR_LOT]];
        chk.sym[K_UNIT] = map[r->str[FP_STR_UNIT]];
        child = true;
    } else if (r->kind == FP_KIND_SCRAP) {
        chk.kind = FP_CK_SCRAP;
        chk.sym[K_REASON] = map[r->str[FP_STR_REASON]];
        child = true;
    }
    any |= chk.sym[K_MATERIAL] | chk.sym[K_LOT] | chk.sym[K_UNIT]; /* 0 without a child */
    if (any >> 31) {
        p->refuse = "no_memory";
        return;
    }
    if (r->kind != FP_KIND_MATERIAL) { /* see s_apply: it has no completion */
        p->cm = cmk;
        p->hcm = s_key_hash(&cmk);
        __builtin_prefetch(&self->slots[p->hcm & self->mask]);
        if (self->old) /* growing: the key may not have moved yet */
            __builtin_prefetch(&self->old[p->hcm & self->old_mask]);
    }
    if (child) {
        p->child = chk;
        p->hchild = s_key_hash(&chk);
        __builtin_prefetch(&self->slots[p->hchild & self->mask]);
        if (self->old)
            __builtin_prefetch(&self->old[p->hchild & self->old_mask]);
    }
    p->has_child = child;
    p->kind = r->kind;
}

/* Pass 2: the slots are (being) fetched; prefetch the hot lines of the
   entry a slot names and return it as a hint (S_NONE: none). */
static uint32_t s_prefetch_in(const agg_t *self, const s_slot_t *t, uint64_t mask, uint64_t h)
{
    uint32_t tag = (uint32_t)h;
    uint64_t i = h & mask;
    for (;;) {
        s_slot_t s = t[i];
        if (s.idx == S_NONE)
            return S_NONE;
        if (s.tag == tag && s.idx != S_MOVED) {
            const char *e = (const char *)&self->pool[s.idx];
            __builtin_prefetch(e);
            __builtin_prefetch(e + 64);
            return s.idx;
        }
        i = (i + 1) & mask;
    }
}

static uint32_t s_prefetch_entry(const agg_t *self, uint64_t h)
{
    uint32_t idx = s_prefetch_in(self, self->slots, self->mask, h);
    if (idx == S_NONE && self->old)
        idx = s_prefetch_in(self, self->old, self->old_mask, h);
    return idx;
}

/* Sizes the string scratch arrays for n batch strings; -1 on out of memory. */
static int s_scratch(agg_t *self, uint32_t n)
{
    if (n + 1 <= self->map_cap)
        return 0;
    uint32_t ncap = n + 1;
    uint32_t *m = realloc(self->map, ncap * sizeof *m);
    if (m)
        self->map = m;
    uint32_t *u = realloc(self->used, ncap * sizeof *u);
    if (u)
        self->used = u;
    uint32_t *t = realloc(self->touched, ncap * sizeof *t);
    if (t)
        self->touched = t;
    if (!m || !u || !t)
        return -1;
    self->map_cap = ncap;
    return 0;
}

void agg_add(agg_t *self, const fp_batch_hdr_t *batch)
{
    assert(self && batch);
    /* The fp_batch_* accessors take a mutable pointer; nothing here writes. */
    fp_batch_hdr_t *b = (fp_batch_hdr_t *)batch;
    const fp_record_t *recs = fp_batch_records(b);
    uint32_t n = b->nrecords;
    if (b->nstrings > FP_BATCH_STRINGS_MAX || s_scratch(self, b->nstrings) != 0) {
        for (uint32_t i = 0; i < n; i++)
            s_refuse(self, b, &recs[i],
                     b->nstrings > FP_BATCH_STRINGS_MAX ? "invalid_record" : "no_memory");
        return;
    }
    self->ntouched = 0;
    s_collect_strings(self, b, recs);
    s_map_strings(self, b);

    for (uint32_t base = 0; base < n; base += S_CHUNK) {
        uint32_t m = n - base < S_CHUNK ? n - base : S_CHUNK;
        /* A record creates at most 3 keys (head, completion, child). On
           failure, s_room refuses the records that do not fit ("no_memory"). */
        (void)s_reserve(self, 3ull * m);
        for (uint32_t i = 0; i < m; i++)
            s_prepare(self, b, &recs[base + i], &self->pre[i]);
        for (uint32_t i = 0; i < m; i++) {
            s_pre_t *p = &self->pre[i];
            if (!p->kind)
                continue;
            p->ccm = p->kind != FP_KIND_MATERIAL ? s_prefetch_entry(self, p->hcm) : S_NONE;
            if (p->has_child)
                p->cchild = s_prefetch_entry(self, p->hchild);
        }
        for (uint32_t i = 0; i < m; i++)
            s_apply(self, b, &recs[base + i], &self->pre[i]);
    }

    for (uint32_t i = 0; i < self->ntouched; i++)
        intern_release(self->intern, self->touched[i]);
    self->stats.strings = intern_count(self->intern);
}

/* ---- persistence: formats in agg.h ---- */

#define S_FORMAT 2    /* version byte of the key and state bytes written */
#define S_FORMAT_V1 1 /* read (agg_import upgrades it), never written */
/* State bytes but the line and station bytes, at most: version, flags,
   checkpoint_no, count, sum0, sum1, first, span (10 each at most), n,
   S_LINEAGE x 4 varints, 2 string lengths (5 each), closed_at, close_seq. */
#define S_STATE_MAX (2 + 6 * FP_VARINT_MAX + 1 + S_LINEAGE * 4 * FP_VARINT_MAX + 10 \
                     + 2 * FP_VARINT_MAX)

enum { S_PF_CLOSED = 1, S_PF_LATE = 2, S_PF_TRUNCATED = 4 }; /* state flags byte */

#define S_KIND_META 0u /* the shard's own key: {version, 0}, state flushed_through */

static int s_nfields(int kind)
{
    return kind == FP_CK_CONSUMPTION ? 6 : kind == FP_CK_SCRAP ? 4 : kind == S_KIND_META ? 0 : 3;
}

/* Writers: each returns the byte after what it wrote. The caller made room
   (key_max, S_STATE_MAX): nothing here checks or sizes. */
static inline uint8_t *s_put_var(uint8_t *p, uint64_t v)
{
    return p + fp_varint_put(p, v);
}

static inline uint8_t *s_put_sym(const agg_t *self, uint8_t *p, uint32_t sym)
{
    uint32_t len;
    const char *str = intern_str(self->intern, sym, &len);
    p = s_put_var(p, len);
    memcpy(p, str, len);
    return p + len;
}

/* Key bytes of k at out (room: self->key_max); returns the length. */
static size_t s_key_write(const agg_t *self, const s_key_t *k, uint8_t *out)
{
    uint8_t *p = out;
    *p++ = S_FORMAT;
    *p++ = (uint8_t)k->kind;
    for (int f = 0; f < s_nfields((int)k->kind); f++)
        p = s_put_sym(self, p, k->sym[f]);
    if (k->kind != S_KIND_OP)
        p = s_put_var(p, k->period);
    assert((size_t)(p - out) <= self->key_max);
    return (size_t)(p - out);
}

/* State bytes of entry e at out (room: S_STATE_MAX + self->attr_max);
   returns the length. */
static size_t s_state_write(const agg_t *self, const s_entry_t *e, uint8_t *out)
{
    uint8_t *p = out;
    *p++ = S_FORMAT;
    if (e->key.kind == S_KIND_OP) {
        *p++ = (e->flags & S_CLOSED) ? S_PF_CLOSED : 0;
        p = s_put_sym(self, p, e->line);
        p = s_put_sym(self, p, e->station);
        if (e->flags & S_CLOSED) {
            p = s_put_var(p, fp_zigzag(e->closed_at));
            p = s_put_var(p, e->close_seq);
        }
        assert((size_t)(p - out) <= S_STATE_MAX + self->attr_max);
        return (size_t)(p - out);
    }
    uint8_t f = 0;
    if (e->count > 0 && (e->flags & S_LATE))
        f |= S_PF_LATE;
    if (e->count > 0 && e->truncated)
        f |= S_PF_TRUNCATED;
    *p++ = f;
    p = s_put_var(p, e->checkpoint_no);
    p = s_put_var(p, e->count);
    if (e->count > 0) {
        p = s_put_var(p, fp_zigzag(e->sum0));
        if (e->key.kind == FP_CK_COMPLETION)
            p = s_put_var(p, fp_zigzag(e->sum1));
        p = s_put_var(p, fp_zigzag(e->first_ns));
        p = s_put_var(p, (uint64_t)e->last_ns - (uint64_t)e->first_ns);
        assert(e->nlineage >= 1 && e->nlineage <= S_LINEAGE);
        *p++ = (uint8_t)e->nlineage;
        for (uint32_t i = 0; i < e->nlineage; i++) {
            p = s_put_var(p, e->lineage[i].source_id);
            p = s_put_var(p, e->lineage[i].epoch);
            p = s_put_var(p, e->lineage[i].first_seq);
            p = s_put_var(p, e->lineage[i].last_seq - e->lineage[i].first_seq);
        }
    }
    assert((size_t)(p - out) <= S_STATE_MAX + self->attr_max);
    return (size_t)(p - out);
}

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

typedef struct {
    int version;             /* S_FORMAT_V1 or S_FORMAT */
    int kind;                /* FP_CK_*; version 2 also S_KIND_OP and S_KIND_META */
    const char *s[K_FIELDS]; /* into the key bytes; unused fields "" */
    uint32_t len[K_FIELDS];
    uint32_t period;         /* version 2, kinds 1..3 */
} s_pkey_t;

static int s_key_parse(const void *key, size_t klen, s_pkey_t *k)
{
    if (!key)
        return -1;
    s_r_t r = {key, (const uint8_t *)key + klen, false};
    memset(k, 0, sizeof *k);
    k->version = s_r_u8(&r);
    if (k->version != S_FORMAT && k->version != S_FORMAT_V1)
        return -1;
    k->kind = s_r_u8(&r);
    bool checkpoint = k->kind == FP_CK_CONSUMPTION || k->kind == FP_CK_COMPLETION ||
                      k->kind == FP_CK_SCRAP;
    if (!checkpoint && (k->version == S_FORMAT_V1 ||
                        (k->kind != (int)S_KIND_OP && k->kind != (int)S_KIND_META)))
        return -1;
    for (int f = 0; f < K_FIELDS; f++) {
        k->s[f] = "";
        if (f < s_nfields(k->kind))
            k->s[f] = s_r_str(&r, &k->len[f]);
    }
    if (k->version == S_FORMAT && checkpoint) {
        uint64_t period = s_r_var(&r);
        if (!s_period_id_ok(period))
            return -1;
        k->period = (uint32_t)period;
    }
    return r.bad || r.p != r.end ? -1 : 0;
}

typedef struct {
    uint8_t flags; /* S_PF_* */
    uint64_t checkpoint_no, count;
    int64_t sum0, sum1, first_ns, last_ns;
    uint32_t nlineage;
    fp_seq_range_t lineage[S_LINEAGE];
    bool has_attrs; /* line, station, closed: a head (v2) or a completion (v1) */
    const char *line, *station;
    uint32_t line_len, station_len;
    int64_t closed_at;
    uint64_t close_seq;
    int64_t flushed_through; /* the meta key */
} s_pstate_t;

/* The pending part (version 1 and 2 alike). */
static int s_state_parse_pending(s_r_t *r, bool completion, s_pstate_t *st)
{
    st->checkpoint_no = s_r_var(r);
    st->count = s_r_var(r);
    if (st->count > UINT64_MAX / 4) /* room to count on without wrapping to 0 */
        return -1;
    if (st->count == 0 && (st->flags & (S_PF_LATE | S_PF_TRUNCATED)))
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
        if (st->nlineage < 1 || st->nlineage > S_LINEAGE)
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
static void s_state_parse_attrs(s_r_t *r, s_pstate_t *st)
{
    st->has_attrs = true;
    st->line = s_r_str(r, &st->line_len);
    st->station = s_r_str(r, &st->station_len);
    if (st->flags & S_PF_CLOSED) {
        st->closed_at = fp_unzigzag(s_r_var(r));
        st->close_seq = s_r_var(r);
    }
}

static int s_state_parse(const void *state, size_t slen, const s_pkey_t *k, s_pstate_t *st)
{
    if (!state)
        return -1;
    s_r_t r = {state, (const uint8_t *)state + slen, false};
    memset(st, 0, sizeof *st);
    if (s_r_u8(&r) != k->version)
        return -1;
    if (k->kind == (int)S_KIND_META) {
        st->flushed_through = fp_unzigzag(s_r_var(&r));
        return r.bad || r.p != r.end ? -1 : 0;
    }
    st->flags = s_r_u8(&r);
    if (k->kind == (int)S_KIND_OP) { /* version 2 */
        if (st->flags & ~S_PF_CLOSED)
            return -1;
        s_state_parse_attrs(&r, st);
        return r.bad || r.p != r.end ? -1 : 0;
    }
    bool completion = k->kind == FP_CK_COMPLETION;
    bool v1 = k->version == S_FORMAT_V1;
    if (st->flags & ~(S_PF_CLOSED | S_PF_LATE | S_PF_TRUNCATED))
        return -1;
    if ((st->flags & S_PF_CLOSED) && !(v1 && completion))
        return -1;
    /* v1: late on a completion requires closed (closed lives on the head in v2) */
    if (v1 && (st->flags & S_PF_LATE) && completion && !(st->flags & S_PF_CLOSED))
        return -1;
    if (s_state_parse_pending(&r, completion, st) != 0)
        return -1;
    if (v1 && completion)
        s_state_parse_attrs(&r, st);
    return r.bad || r.p != r.end ? -1 : 0;
}

/* Grows *buf to at least need bytes; -1 out of memory (unchanged). */
static int s_buf_grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    uint8_t *b = realloc(*buf, n);
    if (!b)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

/* Appends the keys of operation op and its children to the released-keys
   buffer ([u32 length][key bytes], native-endian: in memory only), all or
   nothing; -1 out of memory. */
static int s_release_keys(agg_t *self, uint32_t op)
{
    size_t n = 1;
    for (uint32_t c = self->pool[op].first_child; c != S_NONE; c = self->pool[c].child_next)
        n++;
    if (s_buf_grow(&self->rel, &self->rel_cap, self->rel_len + n * (4 + self->key_max)) != 0)
        return -1;
    for (uint32_t c = op; c != S_NONE;
         c = c == op ? self->pool[op].first_child : self->pool[c].child_next) {
        uint32_t len = (uint32_t)s_key_write(self, &self->pool[c].key, self->rel + self->rel_len + 4);
        memcpy(self->rel + self->rel_len, &len, 4);
        self->rel_len += 4 + len;
    }
    return 0;
}

/* Sorts the closed-operations FIFO by close_seq (agg_import appends in file
   order): a merge sort of the linked list, no memory, O(n log n) once. */
static uint32_t s_fifo_msort(agg_t *self, uint32_t head, uint64_t n)
{
    if (n <= 1) {
        if (head != S_NONE)
            self->pool[head].fifo_next = S_NONE;
        return head;
    }
    uint32_t mid = head;
    for (uint64_t i = 0; i < n / 2; i++)
        mid = self->pool[mid].fifo_next;
    uint32_t a = s_fifo_msort(self, head, n / 2); /* cuts the first half */
    uint32_t b = s_fifo_msort(self, mid, n - n / 2);
    uint32_t out = S_NONE, tail = S_NONE;
    while (a != S_NONE || b != S_NONE) {
        uint32_t x;
        if (b == S_NONE || (a != S_NONE && self->pool[a].close_seq <= self->pool[b].close_seq)) {
            x = a;
            a = self->pool[a].fifo_next;
        } else {
            x = b;
            b = self->pool[b].fifo_next;
        }
        if (tail != S_NONE)
            self->pool[tail].fifo_next = x;
        else
            out = x;
        tail = x;
    }
    if (tail != S_NONE)
        self->pool[tail].fifo_next = S_NONE;
    return out;
}

static void s_fifo_sort(agg_t *self)
{
    uint64_t n = 0;
    for (uint32_t i = self->fifo_head; i != S_NONE; i = self->pool[i].fifo_next)
        n++;
    self->fifo_head = s_fifo_msort(self, self->fifo_head, n);
    self->fifo_tail = S_NONE;
    for (uint32_t i = self->fifo_head; i != S_NONE; i = self->pool[i].fifo_next)
        self->fifo_tail = i;
    self->fifo_unsorted = false;
}


/* Sizes the scratch buffers for any key and state held; -1 out of memory. */
static int s_export_room(agg_t *self)
{
    if (s_buf_grow(&self->kbuf, &self->kbuf_cap, self->key_max) != 0)
        return -1;
    return s_buf_grow(&self->sbuf, &self->sbuf_cap, S_STATE_MAX + self->attr_max);
}

static void s_export_one(agg_t *self, uint32_t idx, agg_export_fn *fn, void *ctx)
{
    const s_entry_t *e = &self->pool[idx];
    size_t klen = s_key_write(self, &e->key, self->kbuf);
    size_t slen = s_state_write(self, e, self->sbuf);
    fn(ctx, self->kbuf, klen, self->sbuf, slen);
}

/* The shard's own pair: flushed_through (periods on, once it is set). */
static void s_export_meta(agg_t *self, agg_export_fn *fn, void *ctx)
{
    uint8_t key[2] = {S_FORMAT, S_KIND_META}, state[1 + FP_VARINT_MAX];
    state[0] = S_FORMAT;
    size_t slen = 1 + fp_varint_put(state + 1, fp_zigzag(self->flushed_through));
    fn(ctx, key, sizeof key, state, slen);
    self->meta_dirty = false;
}

int agg_export_dirty(agg_t *self, agg_export_fn *fn, void *ctx)
{
    assert(self && fn);
    if (s_export_room(self) != 0)
        return -1; /* nothing handed over, nothing cleared */
    if (!self->track) {
        /* The first export: everything held is new to the store. */
        self->track = true;
        for (uint32_t i = 1; i < self->pool_used; i++)
            if (self->pool[i].key.kind != 0)
                s_mark(self, i);
        self->meta_dirty = self->flushed_through != INT64_MIN;
    }
    for (size_t off = 0; off < self->rel_len;) {
        uint32_t len;
        memcpy(&len, self->rel + off, 4);
        fn(ctx, self->rel + off + 4, len, NULL, 0);
        off += 4 + (size_t)len;
    }
    self->rel_len = 0;
    uint32_t i = self->exp_head;
    while (i != S_NONE) {
        uint32_t next = self->pool[i].exp_next;
        s_export_one(self, i, fn, ctx);
        self->pool[i].flags &= (uint8_t)~S_EXPORT;
        self->pool[i].exp_prev = self->pool[i].exp_next = S_NONE;
        i = next;
    }
    self->exp_head = S_NONE;
    if (self->meta_dirty)
        s_export_meta(self, fn, ctx);
    return 0;
}

int agg_export_all(agg_t *self, agg_export_fn *fn, void *ctx)
{
    assert(self && fn);
    if (s_export_room(self) != 0)
        return -1;
    for (uint32_t i = 1; i < self->pool_used; i++)
        if (self->pool[i].key.kind != 0)
            s_export_one(self, i, fn, ctx);
    if (self->flushed_through != INT64_MIN)
        s_export_meta(self, fn, ctx);
    return 0;
}

/* Loads the pending part of a parsed state into a new entry: sums, lists. */
static void s_fill(agg_t *self, uint32_t idx, const s_pstate_t *st)
{
    s_entry_t *e = &self->pool[idx];
    e->checkpoint_no = st->checkpoint_no;
    if (st->count > 0) {
        e->count = st->count;
        e->sum0 = st->sum0;
        e->sum1 = st->sum1;
        e->first_ns = st->first_ns;
        e->last_ns = st->last_ns;
        e->nlineage = st->nlineage;
        memcpy(e->lineage, st->lineage, st->nlineage * sizeof e->lineage[0]);
        e->truncated = (st->flags & S_PF_TRUNCATED) != 0;
        if (st->flags & S_PF_LATE)
            e->flags |= S_LATE;
        s_list_add(self, idx, (e->flags & S_LATE) ? S_LIST_LATE : S_LIST_DIRTY);
        s_pend_add(&self->pend.quantity[e->key.kind - 1], e->sum0);
        self->pend.records[e->key.kind - 1] += e->count;
    }
}

/* Loads a head's attributes: the closing and the FIFO. */
static void s_fill_head(agg_t *self, uint32_t op, const s_pstate_t *st)
{
    s_entry_t *e = &self->pool[op];
    if (!(st->flags & S_PF_CLOSED))
        return;
    e->flags |= S_CLOSED;
    e->closed_at = st->closed_at;
    e->close_seq = st->close_seq;
    s_fifo_append(self, op);
    self->fifo_unsorted = true;
    if (st->closed_at > self->now)
        self->now = st->closed_at; /* until the first agg_flush */
}

/* Appends key bytes to the released-keys buffer: exported as a deletion
   (a version-1 key replaced by its version-2 keys). -1 out of memory. */
static int s_release_bytes(agg_t *self, const void *key, size_t klen)
{
    if (s_buf_grow(&self->rel, &self->rel_cap, self->rel_len + 4 + klen) != 0)
        return -1; /* never after agg_import made room */
    uint32_t len = (uint32_t)klen;
    memcpy(self->rel + self->rel_len, &len, 4);
    memcpy(self->rel + self->rel_len + 4, key, klen);
    self->rel_len += 4 + klen;
    return 0;
}

int agg_import(agg_t *self, const void *key, size_t klen, const void *state, size_t slen)
{
    assert(self);
    s_pkey_t k;
    s_pstate_t st;
    if (s_key_parse(key, klen, &k) != 0 || s_state_parse(state, slen, &k, &st) != 0)
        return -1;
    self->track = true; /* the store holds what we hold from now on */
    if (k.kind == (int)S_KIND_META) {
        if (st.flushed_through > self->flushed_through)
            self->flushed_through = st.flushed_through;
        return 0;
    }
    bool v1 = k.version == S_FORMAT_V1;
    /* Room first for what can fail: the deletion of a version-1 key, the
       entries. */
    if (v1 && s_buf_grow(&self->rel, &self->rel_cap, self->rel_len + 4 + klen) != 0)
        return -2;
    if (s_reserve(self, 2) != 0 || !s_room(self))
        return -2;
    int rc = -2, nf = s_nfields(k.kind);
    uint32_t sym[K_FIELDS] = {0}, line = INTERN_EMPTY, station = INTERN_EMPTY;
    int got = 0;
    for (; got < nf; got++)
        if ((sym[got] = intern_acquire(self->intern, k.s[got], k.len[got])) == INTERN_NOMEM)
            goto out;
    if (st.has_attrs) {
        if ((line = intern_acquire(self->intern, st.line, st.line_len)) == INTERN_NOMEM)
            goto out;
        if ((station = intern_acquire(self->intern, st.station, st.station_len)) == INTERN_NOMEM)
            goto out;
    }
    /* The operation head: found (a placeholder, or filled), or created. */
    s_key_t hk = {.kind = S_KIND_OP, .sym = {sym[K_PLANT], sym[K_ORDER], sym[K_OPERATION]}};
    uint64_t hh = s_key_hash(&hk);
    uint32_t op = s_find(self, &hk, hh);
    if (st.has_attrs) {
        if (op != S_NONE) {
            s_entry_t *e = &self->pool[op];
            if (!(e->flags & S_PLACEHOLDER)) {
                rc = -1; /* imported twice */
                goto out;
            }
            intern_ref(self->intern, line);
            intern_ref(self->intern, station);
            intern_release(self->intern, e->line);
            intern_release(self->intern, e->station);
            e->line = line;
            e->station = station;
            e->flags &= (uint8_t)~S_PLACEHOLDER;
            if ((size_t)st.line_len + st.station_len > self->attr_max)
                self->attr_max = (size_t)st.line_len + st.station_len;
        } else {
            op = s_create(self, &hk, hh, S_NONE, line, station);
        }
        s_fill_head(self, op, &st);
        if (v1)
            s_mark(self, op);
    } else if (op == S_NONE) {
        op = s_create(self, &hk, hh, S_NONE, INTERN_EMPTY, INTERN_EMPTY);
        self->pool[op].flags |= S_PLACEHOLDER;
        if (v1)
            s_mark(self, op);
    }
    if (k.kind != (int)S_KIND_OP && (!v1 || st.count > 0 || !self->periods)) {
        /* A period entry. Version 1 had none: its pending delta goes to the
           period of its earliest record (what was emitted before is not
           taken back); with periods, a key with nothing pending needs no
           entry (without them it keeps its checkpoint_no in period 0). */
        s_key_t ck = {.kind = (uint32_t)k.kind, .period = k.period};
        memcpy(ck.sym, sym, sizeof ck.sym);
        if (v1)
            ck.period = s_period(self, st.first_ns)->id;
        uint64_t hch = s_key_hash(&ck);
        if (s_find(self, &ck, hch) != S_NONE) {
            rc = -1;
            goto out;
        }
        assert(s_room(self)); /* s_reserve(2) made room for both */
        uint32_t ch = s_create(self, &ck, hch, op, INTERN_EMPTY, INTERN_EMPTY);
        s_fill(self, ch, &st);
        if (v1)
            s_mark(self, ch);
    }
    if (v1) {
        s_release_bytes(self, key, klen); /* room made above */
        self->stats.upgraded++;
    }
    rc = 0;
out:
    for (int f = 0; f < got; f++)
        intern_release(self->intern, sym[f]);
    if (line != INTERN_NOMEM)
        intern_release(self->intern, line);
    if (station != INTERN_NOMEM)
        intern_release(self->intern, station);
    self->stats.strings = intern_count(self->intern);
    return rc;
}

uint32_t agg_key_shard(const void *key, size_t klen, uint32_t nshards)
{
    s_pkey_t k;
    if (s_key_parse(key, klen, &k) != 0)
        return UINT32_MAX;
    if (k.kind == (int)S_KIND_META)
        return AGG_KEY_ALL_SHARDS;
    return fp_route_shard(fp_route_str_hash(k.s[K_PLANT], k.len[K_PLANT]),
                          fp_route_str_hash(k.s[K_ORDER], k.len[K_ORDER]),
                          fp_route_str_hash(k.s[K_OPERATION], k.len[K_OPERATION]), nshards);
}

/* ---- flush and release ---- */

/* Whether a pending entry is emitted by a partial flush now. */
static bool s_due(const agg_t *self, const s_entry_t *e)
{
    if (e->key.kind != FP_CK_COMPLETION)
        return true;
    if (e->sum0 != 0 || e->sum1 != 0 || (e->flags & S_LATE) ||
        (self->pool[e->op].flags & S_CLOSED))
        return true;
    /* A 0/0 partial completion waits for the operation's next completion
       (agg.h), whatever period that one is in: it goes when a completion of
       another period is due in this flush, or went in it already. */
    for (uint32_t c = self->pool[e->op].first_child; c != S_NONE; c = self->pool[c].child_next) {
        const s_entry_t *o = &self->pool[c];
        if (o == e || o->key.kind != FP_CK_COMPLETION)
            continue;
        if ((o->count > 0 && (o->sum0 != 0 || o->sum1 != 0)) || o->last_flush == self->flush_gen)
            return true;
    }
    return false;
}

static void s_flush_list(agg_t *self, int list)
{
    uint32_t idx = self->head[list];
    while (idx != S_NONE) {
        uint32_t next = self->pool[idx].list_next; /* s_emit unlinks idx */
        if (s_due(self, &self->pool[idx]))
            s_emit(self, idx, false);
        idx = next;
    }
}

/* Whether a closed operation and its children have nothing pending. */
static bool s_idle(const agg_t *self, uint32_t op)
{
    if (self->pool[op].count > 0)
        return false;
    for (uint32_t c = self->pool[op].first_child; c != S_NONE; c = self->pool[c].child_next)
        if (self->pool[c].count > 0)
            return false;
    return true;
}

static void s_release(agg_t *self)
{
    while (self->fifo_head != S_NONE) {
        uint32_t op = self->fifo_head;
        s_entry_t *e = &self->pool[op];
        /* closed_at only grows along the FIFO (with a monotonic clock): stop
           at the first too young. One with pending corrections (possible
           only if a flush skipped them) waits at the head for the next
           flush. closed_at may come from a restored file: no overflow. */
        int64_t age;
        if (__builtin_sub_overflow(self->now, e->closed_at, &age))
            age = self->now > e->closed_at ? INT64_MAX : INT64_MIN;
        if (age < self->cfg.closed_key_grace_ns || !s_idle(self, op))
            break;
        /* The deletions to export; out of memory: try at the next flush. */
        if (self->track && s_release_keys(self, op) != 0)
            break;
        e = &self->pool[op];
        self->fifo_head = e->fifo_next;
        if (self->fifo_head == S_NONE)
            self->fifo_tail = S_NONE;
        uint32_t c = e->first_child;
        while (c != S_NONE) {
            uint32_t next = self->pool[c].child_next;
            s_free(self, c);
            c = next;
        }
        s_free(self, op);
        self->stats.closed_operations--;
        self->stats.released++;
    }
}

void agg_flush(agg_t *self, int mode, int64_t now_ns)
{
    assert(self);
    self->now = now_ns;
    self->flush_gen++;
    s_flush_list(self, S_LIST_LATE);
    if (mode == AGG_FLUSH_ALL)
        s_flush_list(self, S_LIST_DIRTY);
    if (mode == AGG_FLUSH_ALL && self->periods && self->wm != INT64_MIN) {
        /* This posting flush has emitted everything of the periods before
           the watermark's: they are flushed now, and what comes for them
           later is backfill (agg.h "Periods"). */
        int64_t start = s_period(self, self->wm)->start;
        if (start > self->flushed_through) {
            self->flushed_through = start;
            self->meta_dirty = self->track;
        }
    }
    if (self->fifo_unsorted)
        s_fifo_sort(self);
    s_release(self);
    self->stats.strings = intern_count(self->intern);
}
