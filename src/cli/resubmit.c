/*  resubmit.c - `floorpost deadletters resubmit`: see deadletters.h.

    Exactly once. A record is sent again only under an identity (source,
    epoch, seq) chosen once and stored in the state (store.h, the resubmits
    table) before it is sent, so every later run, for this dead letter or
    another one holding the same record, sends it under the same identity
    and floorpost's dedup counts it at most once. What each record of a
    dead letter gets, in this order:
      1. It was resubmitted before (the table has its identity): if dedup
         has seen that identity, it is done (nothing sent). If not, it is
         sent again under it, unless that epoch of the resubmission source
         is over (floorpost would refuse it as stale): then, and only
         because an over epoch can never take it any more, it gets a new
         identity. If dedup can no longer tell, it is refused.
      2. Its arrival was marked seen by dedup (a record dead-lettered for
         its content: missing_field, unknown_kind, overflow, ...): its own
         identity was never counted and never will be; it gets a new one.
      3. Otherwise (too_old, stale_epoch, whole frames: too_many_sources,
         no_memory, ...) the same record may have been counted through
         another copy (a resend): dedup_seen on its own identity decides.
         Seen: already counted, nothing sent. Not seen: a new identity.
         Cannot tell: refused, so that nothing is ever counted twice.
    New identities: source --source, a new epoch (the clock, or past every
    epoch the state or this run knows for that source), seqs 1..n in
    dl_seq order; a record that appears twice in this run gets one.

    What the dedup state says is read from the state file, a committed
    snapshot: it can be behind floorpost by a round, never ahead. A record
    a producer is still sending under its own identity while it is
    resubmitted can therefore be counted twice (once per identity): run
    resubmit for records whose producer has given them up (a refused
    batch is released by the producer library, producer.h).

    Invariants:
      - The store is opened in tool mode; writes: fp_store_put_resubmits
        (before anything is sent) and fp_store_delete_deadletter.
      - Payload pointers from the store are valid only inside the callback:
        everything kept is copied, into 8-byte aligned memory.
*/
#include "grow.h"
#include "cli.h"
#include "deadletters.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "codec.h"
#include "dedup.h"
#include "producer.h"
#include "security.h"
#include "sink_pg.h"
#include "store.h"

#define S_ME "floorpost deadletters"
#define S_TIMEOUT_MS 10000 /* default: wait for buffer room and for the last acks */

/* What a record of a dead letter gets (see the top of this file). */
enum { S_SEND, S_TAKEN, S_REFUSED };
/* What floorpost answered to a record that was sent. */
enum { S_NONE, S_ACKED, S_REJECTED };

typedef struct s_rec {
    uint64_t orig[3];       /* its own identity, or (0, dl_seq, index) */
    uint64_t epoch, seq;    /* resubmission identity under the --source; 0: none */
    size_t item;            /* its dead letter */
    uint32_t index;         /* its record in the payload */
    uint8_t plan;           /* S_SEND, S_TAKEN, S_REFUSED */
    uint8_t outcome;        /* S_SEND: S_NONE, S_ACKED, S_REJECTED */
    bool fresh;             /* identity chosen by this run (to be stored) */
    bool sender;            /* the first of this run with its identity: the one sent */
    bool mapped;            /* the state had an identity for it */
    struct s_rec *dup_of;   /* fresh, and the same record as an earlier one of this run */
    fp_store_resubmit_t map;/* that identity */
    const char *why;        /* S_TAKEN, S_REFUSED: what the state says */
    const char *reason;     /* S_REJECTED: floorpost's reason */
} s_rec_t;

typedef struct {
    uint64_t dl_seq;
    fp_cli_payload_t pl;
    bool marked;            /* its arrival was marked seen (a content reason) */
    size_t first, n;        /* its records: recs[first .. first + n) */
} s_item_t;

typedef struct {
    uint32_t max_frame;
    bool all;
    uint64_t *want;         /* the DL_SEQs asked for, sorted */
    bool *found;
    size_t nwant;
    s_item_t *items;
    size_t nitems, cap;
    fp_cli_erp_t *erp;      /* erp_rejected ones of a postgresql sink */
    uint64_t *erp_seq;
    size_t nerp, erp_cap, erp_seq_cap;
    uint64_t skipped, skipped_named;
    int rc;
} s_collect_t;

/* A batch the producer released (producer_on_release). */
typedef struct {
    uint64_t epoch, first, last;
    int status;
    char reason[64];
} s_released_t;

typedef struct {
    s_released_t *v;
    size_t n, cap;
    int rc;
} s_releases_t;

/* The dedup state of the sources this run asks about. */
typedef struct {
    dedup_t *d;
    uint64_t *ids;          /* sorted, unique */
    bool *bad;              /* ids[i]'s stored state could not be restored */
    size_t n;
} s_state_t;

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Whether a dead letter's own arrival was marked seen by dedup: it is
   about one record (its detail names a seq) and its reason is about the
   content, not the position (too_old, stale_epoch leave nothing marked). */
static bool s_marked(const char *reason, const char *json, size_t jlen)
{
    if (strcmp(reason, "too_old") == 0 || strcmp(reason, "stale_epoch") == 0)
        return false;
    json_t *d = json_loadb(json, jlen, 0, NULL);
    bool has_seq = d && json_is_integer(json_object_get(d, "seq"));
    json_decref(d);
    return has_seq;
}

static int s_collect_one(void *ctx, uint64_t dl_seq, int64_t wall_ns, const char *reason,
                         const char *json, size_t jlen, const void *payload, size_t plen)
{
    s_collect_t *c = ctx;
    if (!c->all) {
        uint64_t *hit = bsearch(&dl_seq, c->want, c->nwant, sizeof *c->want, s_cmp_u64);
        if (!hit)
            return 0;
        c->found[hit - c->want] = true;
    }
    if (strcmp(reason, "erp_rejected") == 0) {
        fp_cli_erp_t t;
        const char *why = NULL;
        if (fp_cli_erp_target(json, jlen, &t, &why) != 0) {
            printf("dl_seq %" PRIu64 ": skipped (%s): cannot be resubmitted: %s\n", dl_seq,
                   reason, why);
            c->skipped++;
            if (!c->all)
                c->skipped_named++;
            return 0;
        }
        if (fp_grow(&c->erp, &c->erp_cap, c->nerp + 1, sizeof *c->erp, 16) != 0 ||
            fp_grow(&c->erp_seq, &c->erp_seq_cap, c->nerp + 1, sizeof *c->erp_seq, 16) != 0) {
            c->rc = -ENOMEM;
            return 1;
        }
        c->erp[c->nerp] = t;
        c->erp_seq[c->nerp++] = dl_seq;
        return 0;
    }
    if (fp_grow(&c->items, &c->cap, c->nitems + 1, sizeof *c->items, 64) != 0) {
        c->rc = -ENOMEM;
        return 1;
    }
    s_item_t *it = &c->items[c->nitems];
    memset(it, 0, sizeof *it);
    it->dl_seq = dl_seq;
    if (fp_cli_payload_parse(&it->pl, payload, plen, c->max_frame) != 0) {
        c->rc = -ENOMEM;
        return 1;
    }
    const char *why = fp_cli_payload_unsendable(&it->pl);
    if (why) {
        printf("dl_seq %" PRIu64 ": skipped (%s): cannot be resubmitted: %s\n", dl_seq, reason,
               why);
        free(it->pl.buf);
        c->skipped++;
        if (!c->all)
            c->skipped_named++;
        return 0;
    }
    it->marked = s_marked(reason, json, jlen);
    c->nitems++;
    return 0;
}

/* The erp_rejected ones: each row back to PENDING in its sink's database,
   once per verdict (sink_pg.h: nothing is sent to ingest, so nothing can
   be counted twice). Returns 1 if any was not set back, else 0. */
static int s_resubmit_erp(fp_store_t *store, const fp_config_t *cfg, const s_collect_t *c,
                          bool del)
{
    int failed = 0;
    for (size_t k = 0; k < c->nerp; k++) {
        const fp_cli_erp_t *t = &c->erp[k];
        uint64_t dl_seq = c->erp_seq[k];
        char err[512];
        int n = fp_sink_pg_resubmit(cfg, t->sink, t->table, t->event_id, t->verdict_seq, err,
                                    sizeof err);
        if (n < 0) {
            printf("dl_seq %" PRIu64 ": NOT resubmitted: %s\n", dl_seq, err);
            failed = 1;
            continue;
        }
        if (n == 0) {
            printf("dl_seq %" PRIu64 ": 0 rows updated: %s row %s no longer holds verdict %" PRIu64
                   " (resubmitted already, or changed by the ERP): kept\n",
                   dl_seq, t->table, t->event_id, t->verdict_seq);
            failed = 1;
            continue;
        }
        const char *what = "";
        if (del) {
            int drc = fp_store_delete_deadletter(store, dl_seq);
            if (drc == 0) {
                what = ", deleted";
            } else {
                fprintf(stderr, S_ME " resubmit: dl_seq %" PRIu64 ": delete: %s\n", dl_seq,
                        fp_store_strerror(drc));
                failed = 1;
            }
        }
        printf("dl_seq %" PRIu64 ": [sink %s] %s row %s set back to PENDING (1 row)%s\n", dl_seq,
               t->sink, t->table, t->event_id, what);
    }
    fflush(stdout);
    return failed;
}

static void s_on_release(void *ctx, const producer_release_t *r)
{
    s_releases_t *rs = ctx;
    if (fp_grow(&rs->v, &rs->cap, rs->n + 1, sizeof *rs->v, 64) != 0) {
        rs->rc = -ENOMEM; /* its records then read as not acked: safe */
        return;
    }
    s_released_t *x = &rs->v[rs->n++];
    x->epoch = r->epoch;
    x->first = r->first_seq;
    x->last = r->last_seq;
    x->status = r->status;
    snprintf(x->reason, sizeof x->reason, "%s", r->reason);
}

/* ---- the dedup state ---- */

static int s_restore_one(void *ctx, uint64_t source_id, const void *state, size_t slen)
{
    s_state_t *st = ctx;
    uint64_t *hit = bsearch(&source_id, st->ids, st->n, sizeof *st->ids, s_cmp_u64);
    if (hit && dedup_restore(st->d, source_id, state, slen) != 0)
        st->bad[hit - st->ids] = true;
    return 0;
}

/* Restores the stored dedup state of ids[0..n) (sorted in place, made
   unique) into st. 0 or a negative error. */
static int s_state_load(s_state_t *st, fp_store_t *store, const fp_config_t *cfg, uint64_t *ids,
                        size_t n)
{
    qsort(ids, n, sizeof *ids, s_cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || ids[i] != ids[u - 1])
            ids[u++] = ids[i];
    st->ids = ids;
    st->n = u;
    st->bad = calloc(u + 1, sizeof *st->bad);
    st->d = dedup_new(cfg->dedup_window, (uint32_t)u + 1);
    if (!st->bad || !st->d)
        return -ENOMEM;
    int rc = fp_store_each_source(store, s_restore_one, st);
    return rc < 0 ? rc : 0;
}

static dedup_seen_t s_seen(const s_state_t *st, uint64_t source, uint64_t epoch, uint64_t seq)
{
    uint64_t *hit = bsearch(&source, st->ids, st->n, sizeof *st->ids, s_cmp_u64);
    if (hit && st->bad[hit - st->ids])
        return DEDUP_UNKNOWN;
    return dedup_seen(st->d, source, epoch, seq);
}

/* ---- planning ---- */

static int s_cmp_orig(const void *a, const void *b)
{
    const s_rec_t *x = *(const s_rec_t *const *)a, *y = *(const s_rec_t *const *)b;
    for (int i = 0; i < 3; i++)
        if (x->orig[i] != y->orig[i])
            return x->orig[i] < y->orig[i] ? -1 : 1;
    return x < y ? -1 : x > y; /* stable: the earlier record first */
}

static int s_cmp_ident(const void *a, const void *b)
{
    const s_rec_t *x = *(const s_rec_t *const *)a, *y = *(const s_rec_t *const *)b;
    if (x->epoch != y->epoch)
        return x->epoch < y->epoch ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Decides what record r gets (the numbered steps at the top), except the
   new identity itself. Sets r->plan, r->why, and r->fresh for a new one. */
static void s_plan(s_rec_t *r, const s_item_t *it, const s_state_t *st, uint64_t source)
{
    static char why[8][160];
    static unsigned slot;
    if (r->mapped) {
        const fp_store_resubmit_t *m = &r->map;
        dedup_seen_t q = s_seen(st, m->source_id, m->epoch, m->seq);
        uint64_t cur = 0;
        bool tracked = dedup_epoch_of(st->d, m->source_id, &cur);
        if (q == DEDUP_SEEN) {
            r->plan = S_TAKEN;
            r->why = "resubmitted before, and taken";
        } else if (m->source_id != source) {
            char *w = why[slot++ % 8];
            snprintf(w, sizeof why[0],
                     "resubmitted before as source %" PRIu64 " epoch %" PRIu64 " seq %" PRIu64
                     ", not taken yet: resubmit it with --source %" PRIu64,
                     m->source_id, m->epoch, m->seq, m->source_id);
            r->plan = S_REFUSED;
            r->why = w;
        } else if (q == DEDUP_UNKNOWN) {
            r->plan = S_REFUSED;
            r->why = "resubmitted before, and floorpost can no longer tell whether it took it";
        } else if (!tracked || m->epoch >= cur) {
            r->plan = S_SEND;
            r->epoch = m->epoch;
            r->seq = m->seq;
        } else {
            /* That epoch is over: it can never take the record now. */
            r->plan = S_SEND;
            r->fresh = true;
        }
        return;
    }
    if (it->marked || r->orig[0] == 0) {
        r->plan = S_SEND;
        r->fresh = true;
        return;
    }
    dedup_seen_t q = s_seen(st, r->orig[0], r->orig[1], r->orig[2]);
    if (q == DEDUP_SEEN) {
        r->plan = S_TAKEN;
        r->why = "already counted: floorpost took this record through another copy";
    } else if (q == DEDUP_UNKNOWN) {
        r->plan = S_REFUSED;
        r->why = "floorpost can no longer tell whether it counted this record (its dedup "
                 "window or past epochs have moved on): not sent, so it is never counted twice";
    } else {
        r->plan = S_SEND;
        r->fresh = true;
    }
}

/* Prints the identities of records recs[0..n) that are sent, as runs:
   "epoch E seq A..B, epoch F seq C" (one run: "epoch E seq A..B"). */
static void s_print_idents(FILE *f, s_rec_t *const *sent, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j + 1 < n && sent[j + 1]->epoch == sent[i]->epoch &&
               sent[j + 1]->seq == sent[j]->seq + 1)
            j++;
        fprintf(f, "%sepoch %" PRIu64 " seq %" PRIu64, i ? ", " : "", sent[i]->epoch,
                sent[i]->seq);
        if (j > i)
            fprintf(f, "..%" PRIu64, sent[j]->seq);
        i = j + 1;
    }
}

/* What floorpost answered to (epoch, seq): from the released batches. */
static const s_released_t *s_answer(const s_releases_t *rs, uint64_t epoch, uint64_t seq)
{
    for (size_t i = 0; i < rs->n; i++)
        if (rs->v[i].epoch == epoch && rs->v[i].first <= seq && seq <= rs->v[i].last)
            return &rs->v[i];
    return NULL;
}

int fp_deadletters_resubmit(fp_store_t *store, const fp_config_t *cfg, const char *cfg_name,
                            int argc, char **argv)
{
    uint64_t source = 0;
    const char *to = NULL, *server_file = NULL, *key_file = NULL;
    bool del = false;
    int timeout_ms = S_TIMEOUT_MS;
    s_collect_t c = {.max_frame = cfg->max_frame_bytes};
    c.want = calloc((size_t)argc + 1, sizeof *c.want);
    c.found = calloc((size_t)argc + 1, sizeof *c.found);
    int exit_rc = 2;
    void *ctx = NULL;
    producer_t *p = NULL;
    s_rec_t *recs = NULL, **order = NULL;
    size_t nrecs = 0;
    uint64_t *ids = NULL;
    s_state_t st = {0};
    s_releases_t rs = {0};
    fp_store_resubmit_t *fresh = NULL;
    fp_curve_keypair_t server = {0}, client = {0};
    bool curve = false;
    if (!c.want || !c.found) {
        fprintf(stderr, S_ME ": out of memory\n");
        goto done;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "--source") == 0 || strcmp(a, "--timeout") == 0) {
            bool src = strcmp(a, "--source") == 0;
            if (!fp_cli_number("deadletters resubmit", a, next, src ? 1 : 0,
                               src ? UINT64_MAX : 3600000, &n))
                goto done;
            i++;
            if (src)
                source = n;
            else
                timeout_ms = (int)n;
        }
        else if (strcmp(a, "--to") == 0 && next)
            to = argv[++i];
        else if (strcmp(a, "--delete") == 0)
            del = true;
        else if (strcmp(a, "--all") == 0)
            c.all = true;
        else if (strcmp(a, "--server-key") == 0 && next)
            server_file = argv[++i];
        else if (strcmp(a, "--key") == 0 && next)
            key_file = argv[++i];
        else if (fp_cli_parse_u64(a, &n))
            c.want[c.nwant++] = n;
        else {
            fprintf(stderr, S_ME " resubmit: bad argument '%s'\n", a);
            fp_cli_deadletters_usage(stderr);
            goto done;
        }
    }
    if (c.all == (c.nwant > 0)) {
        fprintf(stderr, S_ME " resubmit: needs either DL_SEQs or --all\n");
        fp_cli_deadletters_usage(stderr);
        goto done;
    }

    /* The dead letters asked for. */
    qsort(c.want, c.nwant, sizeof *c.want, s_cmp_u64);
    size_t uniq = 0;
    for (size_t i = 0; i < c.nwant; i++)
        if (uniq == 0 || c.want[i] != c.want[uniq - 1])
            c.want[uniq++] = c.want[i];
    c.nwant = uniq;
    int rc = fp_store_each_deadletter(store, 1, s_collect_one, &c);
    if (rc < 0 || c.rc < 0) {
        fprintf(stderr, S_ME " resubmit: %s\n", fp_store_strerror(rc < 0 ? rc : c.rc));
        exit_rc = 1;
        goto done;
    }
    int failed = 0;
    for (size_t i = 0; i < c.nwant; i++)
        if (!c.found[i]) {
            fprintf(stderr, S_ME " resubmit: dl_seq %" PRIu64 ": no such dead letter\n", c.want[i]);
            failed = 1;
        }
    if (c.skipped_named)
        failed = 1;
    if (c.nitems > 0 && source == 0) {
        fprintf(stderr, S_ME " resubmit: %zu telemetry dead letters: they need --source ID (>= 1)"
                "\n", c.nitems);
        fp_cli_deadletters_usage(stderr);
        goto done;
    }
    failed |= s_resubmit_erp(store, cfg, &c, del);
    if (c.nitems == 0) {
        if (c.nerp == 0)
            fprintf(stderr, S_ME ": nothing to resubmit (%" PRIu64 " skipped)\n", c.skipped);
        exit_rc = failed;
        goto done;
    }
    char endpoint[FP_ENDPOINT_MAX];
    if (to) {
        snprintf(endpoint, sizeof endpoint, "%s", to);
    } else if (cfg->ingest_router[0]) {
        fp_config_connect_endpoint(cfg->ingest_router, endpoint, sizeof endpoint);
    } else {
        fprintf(stderr, S_ME " resubmit: ingest_router is off in %s: give --to ENDPOINT\n",
                cfg_name);
        goto done;
    }
    /* CURVE: the server key defaults to the config's own key file. */
    char err[512];
    if (!server_file && cfg->curve_secret_key_file[0])
        server_file = cfg->curve_secret_key_file;
    if (server_file || key_file) {
        if (!server_file || !key_file) {
            fprintf(stderr, S_ME " resubmit: a CURVE endpoint needs --key FILE (this client's "
                            ".key, listed in the allow file) and the server's key\n");
            goto done;
        }
        if (fp_curve_key_load(server_file, false, &server, err, sizeof err) != 0 ||
            fp_curve_key_load(key_file, true, &client, err, sizeof err) != 0) {
            fprintf(stderr, S_ME " resubmit: %s\n", err);
            goto done;
        }
        curve = true;
    }
    exit_rc = 1;

    /* Their records, with the identities the state already gave them. */
    for (size_t k = 0; k < c.nitems; k++)
        nrecs += c.items[k].pl.view.nrecords;
    recs = calloc(nrecs, sizeof *recs);
    order = calloc(nrecs, sizeof *order);
    ids = calloc(2 * nrecs + 1, sizeof *ids);
    if (!recs || !order || !ids) {
        fprintf(stderr, S_ME " resubmit: out of memory\n");
        goto done;
    }
    size_t nids = 0, r_i = 0;
    ids[nids++] = source;
    for (size_t k = 0; k < c.nitems; k++) {
        s_item_t *it = &c.items[k];
        const fp_batch_view_t *v = &it->pl.view;
        it->first = r_i;
        it->n = v->nrecords;
        for (uint32_t i = 0; i < v->nrecords; i++) {
            s_rec_t *r = &recs[r_i++];
            r->item = k;
            r->index = i;
            if (v->source_id && v->records[i].seq) {
                r->orig[0] = v->source_id;
                r->orig[1] = v->epoch;
                r->orig[2] = v->records[i].seq;
                ids[nids++] = v->source_id;
            } else {
                r->orig[1] = it->dl_seq;
                r->orig[2] = i;
            }
            memcpy(r->map.orig, r->orig, sizeof r->orig);
            rc = fp_store_get_resubmit(store, &r->map);
            if (rc == 0) {
                r->mapped = true;
                ids[nids++] = r->map.source_id;
            } else if (rc != FP_STORE_NOTFOUND) {
                fprintf(stderr, S_ME " resubmit: %s\n", fp_store_strerror(rc));
                goto done;
            }
        }
    }
    rc = s_state_load(&st, store, cfg, ids, nids);
    if (rc < 0) {
        fprintf(stderr, S_ME " resubmit: %s\n", fp_store_strerror(rc));
        goto done;
    }

    /* Plan every record; new identities for those that need one: a new
       epoch, past everything known of the source, and one per record. */
    uint64_t epoch = (uint64_t)time(NULL), cur = 0;
    if (dedup_epoch_of(st.d, source, &cur) && epoch <= cur)
        epoch = cur + 1;
    size_t nfresh = 0;
    for (size_t i = 0; i < nrecs; i++) {
        s_plan(&recs[i], &c.items[recs[i].item], &st, source);
        if (recs[i].mapped && recs[i].map.source_id == source && recs[i].map.epoch >= epoch)
            epoch = recs[i].map.epoch + 1;
        order[i] = &recs[i];
    }
    /* The same record twice in this run (two dead letters of it): the
       earliest gets the identity, the others share it. */
    qsort(order, nrecs, sizeof *order, s_cmp_orig);
    for (size_t g = 0; g < nrecs;) {
        size_t e = g + 1;
        while (e < nrecs && memcmp(order[e]->orig, order[g]->orig, sizeof order[g]->orig) == 0)
            e++;
        s_rec_t *lead = NULL;
        for (size_t i = g; i < e; i++)
            if (order[i]->fresh) {
                if (lead)
                    order[i]->dup_of = lead;
                else
                    lead = order[i];
            }
        g = e;
    }
    uint64_t seq = 0;
    for (size_t i = 0; i < nrecs; i++) /* dl_seq order */
        if (recs[i].fresh && !recs[i].dup_of) {
            recs[i].epoch = epoch;
            recs[i].seq = ++seq;
            nfresh++;
        }
    for (size_t i = 0; i < nrecs; i++)
        if (recs[i].dup_of) {
            recs[i].epoch = recs[i].dup_of->epoch;
            recs[i].seq = recs[i].dup_of->seq;
        }

    /* Stored before anything is sent: a run that dies after this point is
       repeated under the same identities. */
    if (nfresh) {
        fresh = calloc(nfresh, sizeof *fresh);
        if (!fresh) {
            fprintf(stderr, S_ME " resubmit: out of memory\n");
            goto done;
        }
        size_t f = 0;
        int64_t now_ns = (int64_t)time(NULL) * 1000000000;
        for (size_t i = 0; i < nrecs; i++)
            if (recs[i].fresh && !recs[i].dup_of)
                fresh[f++] = (fp_store_resubmit_t){
                    .orig = {recs[i].orig[0], recs[i].orig[1], recs[i].orig[2]},
                    .source_id = source, .epoch = recs[i].epoch, .seq = recs[i].seq,
                    .wall_ns = now_ns};
        rc = fp_store_put_resubmits(store, fresh, nfresh);
        if (rc != 0) {
            fprintf(stderr, S_ME " resubmit: cannot store the resubmission identities, nothing "
                            "sent: %s\n", fp_store_strerror(rc));
            goto done;
        }
    }

    /* Send: each identity once, in (epoch, seq) order. */
    size_t nsend = 0;
    for (size_t i = 0; i < nrecs; i++)
        if (recs[i].plan == S_SEND)
            order[nsend++] = &recs[i];
    qsort(order, nsend, sizeof *order, s_cmp_ident);
    for (size_t i = 0; i < nsend; i++)
        order[i]->sender = i == 0 || order[i]->epoch != order[i - 1]->epoch ||
                           order[i]->seq != order[i - 1]->seq;
    int send_rc = 0, wait_rc = 0;
    if (nsend) {
        ctx = zmq_ctx_new();
        p = ctx ? producer_new(ctx, NULL, PRODUCER_ACKED, 256) : NULL;
        if (p && curve && producer_set_curve(p, server.public_z85, client.public_z85,
                                             client.secret_z85) != 0)
            producer_destroy(&p);
        if (p && (producer_set_send_timeout(p, timeout_ms) != 0 ||
                  producer_connect(p, endpoint) != 0))
            producer_destroy(&p);
        if (!p) {
            fprintf(stderr, S_ME " resubmit: cannot connect to %s\n", endpoint);
            goto done;
        }
        producer_on_release(p, s_on_release, &rs);
        for (size_t i = 0; i < nsend && send_rc == 0; i++) {
            if (!order[i]->sender)
                continue;
            const fp_batch_view_t *v = &c.items[order[i]->item].pl.view;
            const fp_record_t *r = &v->records[order[i]->index];
            fp_rec_in_t in = {.seq = order[i]->seq, .time_ns = r->time_ns,
                              .quantity = r->quantity, .kind = r->kind};
            for (int f = 0; f < FP_STR_FIELDS; f++) {
                uint32_t len;
                in.str[f] = r->str[f] ? fp_codec_batch_string(v, r->str[f], &len) : NULL;
            }
            send_rc = producer_add(p, source, order[i]->epoch, &in);
        }
        if (send_rc != 0)
            fprintf(stderr, S_ME " resubmit: the producer stopped taking records (%s)\n",
                    send_rc == -EAGAIN ? "no ack freed buffer room within --timeout"
                                       : zmq_strerror(-send_rc));
        /* What was taken goes out and is waited for; the rest reads as
           not acked, and a later run sends it under the same identity. */
        producer_flush(p);
        wait_rc = producer_wait_acks(p, timeout_ms);
    }
    for (size_t i = 0; i < nsend; i++) {
        const s_released_t *a = s_answer(&rs, order[i]->epoch, order[i]->seq);
        order[i]->outcome = !a ? S_NONE : a->status == 0 ? S_ACKED : S_REJECTED;
        order[i]->reason = a ? a->reason : NULL;
    }

    /* Per dead letter. */
    uint64_t n_acked = 0, n_taken = 0, n_refused = 0, n_deleted = 0, n_unacked = 0;
    for (size_t k = 0; k < c.nitems; k++) {
        s_item_t *it = &c.items[k];
        size_t nsent = 0, ntaken = 0;
        const s_rec_t *refused = NULL, *unacked = NULL, *rejected = NULL;
        for (size_t i = it->first; i < it->first + it->n; i++) {
            s_rec_t *r = &recs[i];
            if (r->plan == S_REFUSED && !refused)
                refused = r;
            else if (r->plan == S_TAKEN)
                ntaken++;
            else if (r->plan == S_SEND) {
                order[nsent++] = r;
                if (r->outcome == S_NONE && !unacked)
                    unacked = r;
                if (r->outcome == S_REJECTED && !rejected)
                    rejected = r;
            }
        }
        qsort(order, nsent, sizeof *order, s_cmp_ident);
        printf("dl_seq %" PRIu64 ": ", it->dl_seq);
        if (refused) {
            printf("REFUSED: %s\n", refused->why);
            n_refused++;
            failed = 1;
            continue;
        }
        if (nsent == 0) {
            printf("not sent: %s", recs[it->first].why);
        } else {
            printf("%s as source %" PRIu64 " ", unacked || rejected ? "sent" : "resubmitted",
                   source);
            s_print_idents(stdout, order, nsent);
            if (ntaken)
                printf(" (%zu more records already taken)", ntaken);
        }
        if (unacked) {
            printf(", NOT acked (a later run sends it again under the same identity)\n");
            n_unacked++;
            failed = 1;
            continue;
        }
        if (rejected) {
            printf(", REJECTED by floorpost: %s (see its new dead letter)\n", rejected->reason);
            n_refused++;
            failed = 1;
            continue;
        }
        if (nsent)
            printf(", acked");
        nsent ? n_acked++ : n_taken++;
        if (del) {
            int drc = fp_store_delete_deadletter(store, it->dl_seq);
            if (drc == 0) {
                printf(", deleted");
                n_deleted++;
            } else {
                fprintf(stderr, S_ME " resubmit: dl_seq %" PRIu64 ": delete: %s\n", it->dl_seq,
                        fp_store_strerror(drc));
                failed = 1;
            }
        }
        printf("\n");
    }
    fflush(stdout);
    fprintf(stderr,
            S_ME ": %zu dead letters (%zu records) for source %" PRIu64 " via %s: %" PRIu64
                 " acked, %" PRIu64 " already taken, %" PRIu64 " refused, %" PRIu64
                 " not acked, %" PRIu64 " deleted, %" PRIu64 " skipped%s\n",
            c.nitems, nrecs, source, endpoint, n_acked, n_taken, n_refused, n_unacked, n_deleted,
            c.skipped,
            wait_rc == -ETIMEDOUT || send_rc == -EAGAIN ? ", TIMED OUT waiting for acks" : "");
    exit_rc = failed;
done:
    explicit_bzero(&client, sizeof client);
    producer_destroy(&p);
    if (ctx)
        zmq_ctx_term(ctx);
    for (size_t k = 0; k < c.nitems; k++)
        free(c.items[k].pl.buf);
    free(c.items);
    free(c.erp);
    free(c.erp_seq);
    free(c.want);
    free(c.found);
    free(recs);
    free(order);
    free(ids);
    free(st.bad);
    dedup_destroy(&st.d);
    free(rs.v);
    free(fresh);
    return exit_rc;
}
