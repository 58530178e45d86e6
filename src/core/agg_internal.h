/*  agg_internal.h - what agg.c (the semantics) and agg_state.c (export
    and import) share: the agg_t itself, the entry flags, the pending lists
    and the export marks. Not an API: agg.h is.

    The agg_t's parts:
      - tab: the open-key table (agg_table.h): every key's entry.
      - intern: the shard's refcounted strings; keys hold references to their
        strings (an operation also to its line and station), so interned
        memory follows the open keys.
      - operation = the head entry of (plant, order, operation), key kind
        AGG_KIND_OP, period 0: line, station, closed, the FIFO link. Every
        completion, consumption and scrap entry (one per period) links to
        its head (op) and the head keeps them in an intrusive singly-linked
        list (first_child / child_next), so OperationCompleted can flush
        them and release can free them.
      - two intrusive doubly-linked lists of entries with pending records:
        DIRTY (open operations) and LATE (closed operations: corrections).
        An entry is on exactly one list iff count > 0 and, for a completion,
        stays there while its deltas are 0/0 (see agg.h). Flushes walk these
        lists only, never the table.
      - cs: the compact store (agg_compact.h) of closed keys at rest. Every
        closed operation has a compact head there from its close to its
        release; the FIFO of closed operations in closing order (closed_at
        grows along it) links compact heads. While a closed operation has a
        full head too (just closed, or revived by a late record), that head
        is on the CAND list (cand_prev / cand_next); agg_flush moves an
        idle, unmarked one's keys to the store and frees its full entries
        and their strings (agg.c "Compaction"). A key is in the table or
        in the store, never both.
      - the periods cache (agg.c): an event time's period and its id.
      - persistence: a third intrusive list, EXPORT, holds the entries
        changed since the last agg_export_dirty (flag AGG_E_EXPORT;
        agg_mark is called wherever persistent state changes: create,
        account, emit, close); `rel` the keys released since (agg_state.c).
*/
#ifndef FP_AGG_INTERNAL_H
#define FP_AGG_INTERNAL_H

#include "agg.h"
#include "agg_compact.h"
#include "agg_table.h"

#define AGG_CHUNK 256 /* records hashed and prefetched together */
#define AGG_PC 8      /* periods cached (period.h lookups are a few microseconds) */

/* Entry flags. */
enum {
    AGG_E_LATE = 1,     /* pending records arrived after the operation closed */
    AGG_E_CLOSED = 2,   /* operation entry: completed (OperationCompleted seen) */
    AGG_E_ON_DIRTY = 4, /* on the DIRTY list */
    AGG_E_ON_LATE = 8,  /* on the LATE list */
    AGG_E_EXPORT = 16,  /* on the EXPORT list: changed since agg_export_dirty */
    AGG_E_PLACEHOLDER = 32, /* operation created by agg_import for a child; its own
                               pair not imported yet */
    AGG_E_CAND = 64,    /* closed head on the CAND list (to compact when idle) */
};

enum { AGG_LIST_DIRTY = 0, AGG_LIST_LATE = 1 };

/* A cached posting period (period.h) with its id. */
typedef struct {
    int64_t start, end; /* [start, end), ns */
    uint32_t id;        /* start minute + AGG_PERIOD_BIAS; 0 without periods */
    int32_t date;       /* posting date, days since 1970-01-01 */
    uint8_t index;      /* shift number or hour */
    bool closed;        /* date < closed_before */
    char date_str[11];  /* "YYYY-MM-DD": formatted once per period, not per checkpoint */
    char name[16];      /* "day", "shift-N", "hour-HH" */
} agg_pc_t;

/* Per record of the current chunk, from pass 1. cm: the completion key of
   the record's period (not for MaterialConsumed); child: its consumption or
   scrap key. The operation head's key is built from them when needed. */
typedef struct {
    agg_key_t cm, child;
    uint64_t hcm, hchild;
    uint32_t ccm, cchild; /* pass 2: entries whose slot tag matched, AGG_NONE = none
                             (hints: pass 3 checks the key, or searches) */
    uint8_t kind;     /* record kind, 0 = refuse */
    bool has_child;
    const char *refuse; /* reason when kind == 0 */
} agg_pre_t;

struct agg {
    agg_config_t cfg;
    char *instance;
    char *idbuf;          /* event_id: instance + '-' + 32 hex + NUL */
    agg_emit_fn *emit;
    agg_reject_fn *reject;
    void *ctx;
    intern_t *intern;
    void *xxh;            /* XXH3_state_t (agg.c), reused for key hashes */
    agg_tab_t tab;        /* the keys */
    uint64_t nheads;      /* operation heads among tab.nkeys */

    uint32_t head[2], tail[2]; /* DIRTY, LATE */
    uint32_t fifo_head, fifo_tail; /* compact heads (cs) */
    agg_cstore_t cs;      /* closed keys at rest */
    uint64_t ckeys;       /* compact children in cs (keys held there) */
    uint32_t cand_head, cand_tail; /* CAND list: closed full heads not compacted
                             yet, newest first (cand_gen never grows toward the tail) */
    bool work_left;       /* the latest flush left compaction or release to agg_add */
    int64_t now;          /* now_ns of the latest agg_flush */
    uint32_t flush_gen;   /* agg_flush calls so far */

    /* posting periods (period.h; agg.h "Periods") */
    bool periods;         /* cfg.period.kind != FP_PERIOD_NONE */
    agg_pc_t pc[AGG_PC];  /* cached periods */
    uint32_t pc_next, npc;
    /* the hot path's period, pc[hit_idx]: t is in it iff (uint64)(t - hit_lo)
       < hit_span; never a closed one (those take the slow path) */
    int64_t hit_lo;
    uint64_t hit_span;
    uint32_t hit_id, hit_idx;
    int64_t wm;           /* event-time watermark (agg_watermark) */
    int64_t flushed_through; /* periods ending at or before this were flushed */
    bool meta_dirty;      /* flushed_through changed since the last export */
    agg_pc_t first_open;  /* closed_before: the first open period */

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
    const char *sptr[AGG_CHUNK];
    uint32_t slen[AGG_CHUNK];
    uint64_t shash[AGG_CHUNK];
    uint32_t ssym[AGG_CHUNK];

    /* persistence (agg.h; agg_state.c): */
    bool track;           /* marking changes: after agg_export_dirty or agg_import */
    uint32_t exp_head;    /* EXPORT list: marked entries, doubly linked */
    uint8_t *rel;         /* released keys since the last export: [u32 len][key]... */
    size_t rel_len, rel_cap;
    uint8_t *kbuf, *sbuf; /* export scratch for one key and one state */
    size_t kbuf_cap, sbuf_cap;
    size_t key_max;       /* >= the key bytes of any entry ever created */
    size_t attr_max;      /* >= line + station bytes of any operation ever created */
    bool fifo_unsorted;   /* agg_import appended to the FIFO out of order */

    /* lineage ranges past an entry's first (agg.c "Lineage blocks"):
       blocks by index, 0 unused; freed ones on a list */
    union agg_lx *lx;
    uint32_t lx_cap, lx_used, lx_free;

    agg_pre_t pre[AGG_CHUNK];
    agg_stats_t stats;
    agg_pending_t pend; /* = sums over entries of sum0 and count, per key kind */
};

/* Marks entry idx changed for the next agg_export_dirty: a load and a
   branch per call, one list push per entry per round. */
static inline void agg_mark(agg_t *self, uint32_t idx)
{
    agg_entry_t *e = &self->tab.pool[idx];
    if (!self->track || (e->flags & AGG_E_EXPORT))
        return;
    e->flags |= AGG_E_EXPORT;
    e->exp_prev = AGG_NONE;
    e->exp_next = self->exp_head;
    if (self->exp_head != AGG_NONE)
        self->tab.pool[self->exp_head].exp_prev = idx;
    self->exp_head = idx;
}

/* Adds q to a pending total, wrapping (the sum over many keys may exceed
   int64 where no single key does). */
static inline void agg_pend_add(int64_t *total, int64_t q)
{
    *total = (int64_t)((uint64_t)*total + (uint64_t)q);
}

/* Appends entry idx to pending list `list` (AGG_LIST_*). */
static inline void agg_list_add(agg_t *self, uint32_t idx, int list)
{
    agg_entry_t *e = &self->tab.pool[idx];
    e->flags |= list == AGG_LIST_LATE ? AGG_E_ON_LATE : AGG_E_ON_DIRTY;
    e->list_next = AGG_NONE;
    e->list_prev = self->tail[list];
    if (self->tail[list] != AGG_NONE)
        self->tab.pool[self->tail[list]].list_next = idx;
    else
        self->head[list] = idx;
    self->tail[list] = idx;
}

/* agg.c, for agg_state.c: */

/* Creates the entry of key k (hash h), taking references on its symbols;
   links a child to head op, or (AGG_NONE) makes a head with line and
   station. The caller checked agg_tab_room. */
uint32_t agg_entry_create(agg_t *self, const agg_key_t *k, uint64_t h, uint32_t op,
                          uint32_t line, uint32_t station);

/* The cached period that holds event time t. */
const agg_pc_t *agg_period_at(agg_t *self, int64_t t);

/* Makes closed head op's compact head and appends it to the
   closed-operations FIFO, counts it closed; op goes on the CAND list. The
   caller checked agg_cs_room (closed_at, close_seq are op's). */
void agg_fifo_append(agg_t *self, uint32_t op);

/* An entry's lineage ranges past the first, AGG_LINEAGE - 1 of them. */
typedef union agg_lx {
    fp_seq_range_t r[AGG_LINEAGE - 1];
    uint32_t free_next; /* while free */
} agg_lx_t;

/* Copies entry e's nlineage ranges into out[0..nlineage). */
static inline void agg_lineage_get(const agg_t *self, const agg_entry_t *e, fp_seq_range_t *out)
{
    if (e->nlineage > 0)
        out[0] = e->lineage0;
    for (uint32_t i = 1; i < e->nlineage; i++)
        out[i] = self->lx[e->lx].r[i - 1];
}

/* Makes sure one lineage block can be taken without failing: 0, or -1 out
   of memory. */
int agg_lx_reserve(agg_t *self);

/* Sets entry e's lineage (n >= 1 ranges, at most AGG_LINEAGE); a second
   range takes a block, which agg_lx_reserve must have made room for. */
void agg_lineage_set(agg_t *self, agg_entry_t *e, const fp_seq_range_t *in, uint32_t n);

/* Whether one more agg_cs_insert fits what agg_cs_reserve set aside. */
static inline bool agg_cs_room(const agg_cstore_t *s)
{
    return (s->n + 1) * 10 <= (s->slots ? s->mask + 1 : 0) * 7 &&
           (s->pool_free != AGG_NONE || s->pool_used < s->pool_cap) &&
           (s->heads_free != AGG_NONE || s->heads_used < s->heads_cap);
}

/* Sorts the FIFO by close_seq (after agg_import appended out of order). */
void agg_fifo_sort(agg_t *self);

/* agg_state.c, for agg.c: */

/* Unmarks entry idx (it is being freed). */
void agg_unmark(agg_t *self, uint32_t idx);

/* Appends the keys of closed operation c (its compact head) to the
   released keys, exported as deletions: its full head and children if
   any, its compact ones; all or nothing, -1 out of memory. */
int agg_release_keys(agg_t *self, uint32_t c);

/* Stores the key bytes of k in a new malloc'd buffer (*kb, *klen) for a
   compact entry; -1 out of memory or too long (nothing allocated). */
int agg_key_keep(agg_t *self, const agg_key_t *k, uint8_t **kb, uint16_t *klen);

#endif
