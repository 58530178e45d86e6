/*  commit.h - the commit core: rounds filed by sender, completion when every
    MARK is in, stream_seq/global_seq stamped, one LMDB transaction per
    round in key order, and roll-back when the commit fails.

    Pure logic: no thread, no socket. Emit (emit.c) is the thin loop around
    it: it receives each stage's messages into fp_commit_item_t and hands
    them here, asks whether the oldest round is complete, commits it,
    publishes its items and releases it. Unit-tested without a pipeline in
    tests/core/test_commit.c.

    Semantics
    - Senders are slots 0 .. nsenders-1 (ingest 0, worker w 1 + w, shard s
      1 + N + s: see fp_emit_hdr_t in stage.h). A sender's messages after
      its MARK of round r-1 and before its MARK of round r belong to round
      r; rounds start at start_round. A round is complete when all nsenders
      MARKs of it are in; MARKs of later rounds may come first (one sender
      runs ahead of another), and never complete an earlier round.
    - Committing the oldest complete round (fp_commit_round) stamps every
      event of it, in filing order, with the next stream_seq of its topic
      (per topic, gap-free) and the next global_seq (per instance,
      gap-free), written into the Checkpoint buffer; then, with a store, it
      writes ONE transaction: the events (the outbox), the dedup sources
      and cumulative counters,
      the dead letters, the aggregation keys in LMDB key order (bytes, then
      the shorter first; for a key filed twice the later filing wins, so a
      key released and created again in one round ends created), each
      touched feed's last stream_seq once, the round and the last
      global_seq, and the readers' positions reported since the last
      commit. Everything or nothing: when the commit fails (FP_STORE_FULL
      for a full map or disk, or another store error) every counter is
      rolled back and the round stays, unchanged, to be retried as is.
    - Without a store (durability off) there is nothing to commit: an event
      is stamped and a dead letter passed on at once (the publish callback
      runs inside fp_commit_take), keys and sources are dropped, and rounds
      still complete (their MARKs still gate the producers' acks).

    Thread contract: an fp_commit_t belongs to one thread (emit's); it
    writes the store, so it is the store's single writer. The publish
    callback runs on that thread, inside fp_commit_take (durability off) or
    fp_commit_publish.

    Ownership: fp_commit_take takes the item's frames (the caller's item is
    emptied); the publish callback may send (and so consume) an item's
    frames with zmq_msg_send; whatever it leaves is closed when the round is
    released.
*/
#ifndef FP_COMMIT_H
#define FP_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "stage.h"

struct fp_store;

typedef struct fp_commit fp_commit_t;

/* One message filed under a round: its frames after the header. */
typedef struct {
    uint32_t type;   /* FP_EMIT_EVENT, FP_EMIT_KEY, FP_EMIT_SOURCE, FP_EMIT_COUNTER, FP_EMIT_DEAD */
    uint32_t reason; /* FP_EMIT_DEAD: fp_dl_reason_t (the header's flags) */
    int nparts;
    zmq_msg_t part[4]; /* DEAD: [topic][json][bytes][logfmt fields, logged only] */
} fp_commit_item_t;

/* What emit needs to know of a committed round. */
typedef struct {
    uint64_t round;
    uint32_t flags;       /* union of the senders' barrier flags (FP_BARRIER_*) */
    int64_t wall_ns;      /* when ingest injected the barrier (CLOCK_REALTIME) */
    uint64_t global_seq;  /* the last global_seq committed with it (or before it) */
    size_t events;        /* events in the round */
} fp_commit_round_t;

/* Called for every event and dead letter to publish: a stamped event
   (durability off), or each event and dead letter of a committed round. */
typedef void (*fp_commit_publish_fn)(void *ctx, fp_commit_item_t *item);

/* A core for nsenders senders whose first round is start_round; store NULL
   = durability off. Restores the feeds' stream_seq and the last global_seq
   from the store. NULL on out of memory or a damaged feed table (err says
   which). Free with fp_commit_destroy. */
fp_commit_t *fp_commit_new(int nsenders, uint64_t start_round, struct fp_store *store,
                           fp_commit_publish_fn publish, void *ctx, char *err, size_t errlen);

/* Frees the core and every round it holds; *self_p = NULL; NULL-safe. */
void fp_commit_destroy(fp_commit_t **self_p);

/* The dead letters' budgets (docs/durability.md, "Dead letters"). A dead
   letter's size is its JSON detail plus its payload. A round keeps at most
   round_bytes of them; the store at most store_bytes plus store_bytes / 8
   of headroom, counting what the last fp_commit_dl_stored measured, what
   was committed since and what the rounds held have kept (so between two
   trims the store grows by at most the headroom, however short the rounds
   and however long commits fail; and the rounds held in memory hold at
   most that much). A dead letter over either budget is dropped: `dropped`
   is called with it and why (FP_COMMIT_DL_ROUND or FP_COMMIT_DL_STORE),
   then it is closed: neither stored nor published. 0 = no budget. Without
   a store only round_bytes applies. */
enum { FP_COMMIT_DL_ROUND = 1, FP_COMMIT_DL_STORE = 2 };
typedef struct {
    uint64_t round_bytes, store_bytes;
    void (*dropped)(void *ctx, const fp_commit_item_t *item, int why);
} fp_commit_dl_limits_t;

/* Sets the budgets (from the next dead letter filed on); the callback
   gets the core's ctx. No budgets until called. */
void fp_commit_set_dl_limits(fp_commit_t *self, const fp_commit_dl_limits_t *limits);

/* The store's dead letters take `bytes` now (emit, at start and after each
   trim: store.h fp_store_trim_deadletters). */
void fp_commit_dl_stored(fp_commit_t *self, uint64_t bytes);

/* Takes one message of sender hdr->from (< nsenders, asserted: our own
   stages wrote it): a MARK, a BUNDLE (its entries are filed in order as if
   each came alone) or an item, which is filed under the sender's current
   round. Takes the item's frames. Aborts the process on out of memory (a
   round that cannot be held cannot be committed correctly). */
void fp_commit_take(fp_commit_t *self, const fp_emit_hdr_t *hdr, fp_commit_item_t *item);

/* true when the oldest round held is complete (every MARK in). */
bool fp_commit_ready(const fp_commit_t *self);

/* Commits the oldest complete round (fp_commit_ready must be true): 0, or
   the store's error with every counter rolled back (retry later as is). */
int fp_commit_round(fp_commit_t *self);

/* Publishes the committed oldest round (after fp_commit_round returned 0,
   or at once without a store): the callback for each of its events and
   dead letters, in filing order; then releases the round. *info (may be
   NULL) describes it. */
void fp_commit_publish(fp_commit_t *self, fp_commit_round_t *info);

/* Takes a durable reader's position report (the last global_seq it has
   finished with; reader.h) to be committed with the next round, in the
   round's transaction (outbox.h: fp_outbox_put_reader). A later report of
   the same reader replaces an earlier one not yet committed. A reader the
   store has detached stays detached (only an operator re-attaches it).
   Without a store, reports are dropped. 0, -EINVAL for a bad name,
   -ENOMEM. */
int fp_commit_reader_position(fp_commit_t *self, const char *name, uint64_t position);

/* Takes a dead letter from a durable reader (a posting the ERP refused:
   reader.h fp_reader_dead_letter), which is in no round's barrier: it is
   filed under the oldest round held (the next to commit) and committed in
   its transaction together with aux, the reader's own cursor past what
   the dead letter reports (outbox.h fp_outbox_put_reader_aux), so after a
   crash the two agree: the ERP's verdict is reported once. reason:
   fp_dl_reason_t. item: DEAD parts [topic][json][bytes][logfmt]; its frames
   are taken. Without a store it is published at once. 0, -EINVAL (bad
   name or parts: dropped), -ENOMEM. */
int fp_commit_reader_dead_letter(fp_commit_t *self, const char *name, const uint64_t aux[2],
                                 uint32_t reason, fp_commit_item_t *item);

/* Rounds held (filed, complete or not, and not yet released). */
size_t fp_commit_pending(const fp_commit_t *self);

/* The newest round held: its flags and whether it is complete; false when
   no round is held. */
bool fp_commit_newest(const fp_commit_t *self, uint64_t *round, uint32_t *flags, bool *complete);

/* The round number of the oldest round held (the next to commit). */
uint64_t fp_commit_next_round(const fp_commit_t *self);

/* The last global_seq stamped (committed, or published without a store). */
uint64_t fp_commit_global_seq(const fp_commit_t *self);

/* Topics with a stream_seq. */
size_t fp_commit_feeds(const fp_commit_t *self);

/* The last stream_seq of topic[0..len), 0 if none yet. */
uint64_t fp_commit_feed_seq(const fp_commit_t *self, const char *topic, size_t len);

/* Calls fn for every topic with its last stream_seq (committed, or
   published without a store), in no particular order. */
void fp_commit_each_feed(const fp_commit_t *self,
                         void (*fn)(void *ctx, const char *topic, uint64_t stream_seq), void *ctx);

#endif
