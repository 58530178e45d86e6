/*  store.h - floorpost's durable state on LMDB (DIR/data.mdb).

    Pure storage: no threads, no sockets. One write transaction per commit
    round holds everything the round changed (dirty aggregate keys, source
    watermarks, feed counters, the round's events, the readers' positions,
    its dead letters and the round number), so after a crash the store holds
    exactly the last committed round: all of it or none of it. The outbox
    (events and reader positions) is its own module on the same env and
    txns: src/store/outbox.h.

    Thread contract:
      - Writes (fp_store_begin .. fp_store_commit/abort, fp_outbox_trim,
        fp_outbox_detach_lagging, fp_store_trim_deadletters,
        fp_store_delete_deadletter, fp_store_put_resubmits) happen on ONE
        thread, the commit thread,
        and never while that thread has an fp_store_txn_t open (asserted).
      - Reads (fp_store_last_round, fp_store_each_*, fp_store_usage,
        fp_store_deadletter_usage, and
        outbox.h's fp_outbox_read, fp_outbox_oldest, fp_outbox_reader,
        fp_outbox_each_reader, fp_outbox_usage) may run on any thread at any
        time, concurrently with the writer and each other: each call takes
        its own LMDB read transaction (the env is opened with MDB_NOTLS, so
        read transactions are not bound to threads). A read sees the last
        commit that finished before it began. Keep callbacks short: a read
        transaction pins the pages of its snapshot, and a long one makes the
        map fill up faster.
      - fp_store_open/fp_store_close: one thread, with no other call running.
        Do not fork with the store open and use it in the child.
      - Other processes: fp_store_open takes an exclusive flock on DIR, so a
        second floorpost is refused. Tools (`floorpost deadletters`) use
        fp_store_open_tool instead, which skips that flock: LMDB itself lets
        several processes share the env (DIR/lock.mdb; one writer at a time,
        readers never blocked), so a tool reads and deletes dead letters
        while floorpost runs. A tool does not open rounds (fp_store_begin).
      - Pointers handed to callbacks point into LMDB's map: valid only during
        the call, read-only, and NOT 8-byte aligned in general. Copy a value
        into aligned memory before reading it as a struct.

    On disk (format version 5, every integer big-endian; since version 5
    every value below ends with a 4-byte checksum, fp_store_value_sum, not
    shown, and meta "digest" holds each table's entry count and checksum
    sum, kept by every write txn; src/store/verify.h walks it all):
      meta         "magic" -> "floorpost-state", "version" -> u32 (5),
                   "instance" -> name bytes, "created_ns" -> u64 (CLOCK_REALTIME),
                   "round" -> u64 last committed round, "global_seq" -> u64 last
                   event global_seq, "dl_seq" -> u64 last dead-letter seq,
                   "trimmed_ns" -> u64 (see fp_outbox_trim)
      keys         aggregation key bytes -> state bytes (opaque)
      sources      u64 source_id -> state bytes (opaque: dedup.h's own format,
                   which carries its version in its first byte; a version-4
                   file holds dedup states of version 1 or 2, an older file
                   only of version 1)
      feeds        topic bytes -> u64 last stream_seq
      outbox       u64 global_seq -> u64 commit wall ns, u64 round, u16 topic
                   length, topic, event bytes
      deadletters  u64 dl_seq -> u64 wall ns, u16 reason length (counting a
                   trailing NUL), reason, NUL, u32 json length, json, payload
      readers      (version 2) reader name (1..63 bytes of [A-Za-z0-9._-], no
                   NUL) -> u64 position (the last global_seq the reader has
                   finished with), u32 flags (outbox.h FP_OUTBOX_READER_*),
                   u64 wall ns of the last put, then (written since
                   2026-12; a 20-byte value reads as zeros) u64 aux[2]: the
                   reader's own cursor (fp_outbox_put_reader_aux)
      counters     (version 3) counter key bytes -> state bytes (opaque; the
                   workers' cumulative counter readings, src/core/counter.h)
      resubmits    (version 4) u64 source_id, u64 epoch, u64 seq of a
                   dead-lettered record (or 0, dl_seq, record index when it
                   has no usable identity: source 0 or seq 0) -> u64
                   source_id, u64 epoch, u64 seq it is resubmitted under, u64
                   wall ns of the assignment (fp_store_put_resubmits)
    Version 4 is version 5 without the checksums and the digest; version 3
    is version 4 without the resubmits table and with dedup states of
    version 1 only; version 2 is version 3 without the counters table,
    version 1 also without the readers table. fp_store_open upgrades a
    version-1 to -4 file in place, in its open transaction (creates the
    empty tables it lacks, seals every value with its checksum, writes the
    digest, sets "version" to 5; every value's own bytes stay byte for
    byte) and says so through fp_store_upgraded_from; an older floorpost
    then refuses the file (its version check).
    fp_store_open_tool refuses a version-1 to -4 file (a tool never writes
    the format) and tells the operator to start floorpost once.
    Versions above 5 are refused.
    data.mdb is extended (sparse) to the map size at open, so that a file
    shorter than its last committed page can only be a damaged one (LMDB
    itself may legitimately leave freed pages at the end unwritten).

    Full: the map is the operator's budget and is never grown. When a round
    does not fit (MDB_MAP_FULL), or the disk is full (ENOSPC, EDQUOT, EFBIG,
    or LMDB's EIO for a short write while the filesystem has < 64 MiB free),
    the commit returns FP_STORE_FULL and stores nothing of the round. Room
    comes back through fp_outbox_trim (or the disk freeing up); LMDB
    reuses the pages a commit freed only from the second commit after it, so
    after a FULL the trim makes that second commit itself.

    Errors: 0 or a negative code. FP_STORE_FULL (the map or the disk is
    full: abort, keep the data, retry later), FP_STORE_EMPTY,
    FP_STORE_NOTFOUND, FP_STORE_CORRUPT (a record with an impossible layout),
    -errno from the system, or LMDB's own negative MDB_* codes (MDB_PANIC:
    close and reopen the store). fp_store_strerror names each.
*/
#ifndef FP_STORE_H
#define FP_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct fp_store fp_store_t;
typedef struct fp_store_txn fp_store_txn_t;

#define FP_STORE_FORMAT_VERSION 5u
#define FP_STORE_MAGIC "floorpost-state"

#define FP_STORE_FULL (-28)     /* like -ENOSPC: MDB_MAP_FULL, ENOSPC, EDQUOT, EFBIG */
#define FP_STORE_EMPTY (-61)    /* like -ENODATA: nothing stored */
#define FP_STORE_NOTFOUND (-2)  /* like -ENOENT: no such entry */
#define FP_STORE_CORRUPT (-74)  /* like -EBADMSG: a stored record is malformed */

#define FP_STORE_KEY_MAX 511u   /* aggregation key and topic bytes at most (LMDB's key limit) */
#define FP_STORE_INSTANCE_MAX 255u

/* Opens (creating DIR with mkdir -p, mode 0750, and DIR/data.mdb if needed)
   the state of `instance` with a map of map_bytes (the operator's disk
   budget; never grown by the store). Takes an exclusive flock on DIR, so a
   second process is refused. Refuses, returning NULL with a one-line reason
   in err, a file that is not a floorpost state, another instance's state,
   a format version other than 1 to 5, an empty or truncated data.mdb,
   or any LMDB error: never half-loaded. A version-1 to -4 file is upgraded
   to 5 in the open's one write txn (see "On disk"; logs nothing: ask
   fp_store_upgraded_from). Free with fp_store_close. */
fp_store_t *fp_store_open(const char *dir, uint64_t map_bytes, const char *instance, char *err,
                          size_t errlen);

/* Opens an EXISTING state for a tool that may run beside a running floorpost
   (`floorpost deadletters`): no flock, creates nothing (no DIR, no data.mdb,
   no tables), checks in a read txn (never waits for floorpost's writer),
   does not extend the file. Refuses like fp_store_open (magic, version,
   instance, truncated, LMDB errors), a version-1, -2 or -3 file (it does not
   upgrade: "state format version N: start floorpost once to upgrade it"),
   and "no floorpost state here" when DIR/data.mdb does not exist.
   map_bytes: the same as floorpost's (the config's map_size_mb), so a
   tool's write can never move the end of the data past floorpost's map.
   Allowed on it: the read side, fp_store_delete_deadletter and
   fp_store_put_resubmits; fp_store_begin asserts. Free with
   fp_store_close. */
fp_store_t *fp_store_open_tool(const char *dir, uint64_t map_bytes, const char *instance,
                               char *err, size_t errlen);

/* The format version this open upgraded the file from (1, 2 or 3), or 0 when
   the file was created or already at FP_STORE_FORMAT_VERSION. For the
   caller's log line ("upgraded state from version N"). */
uint32_t fp_store_upgraded_from(const fp_store_t *self);

/* Closes the env and frees *self_p; sets it to NULL; NULL-safe. No txn may
   be open and no read may be running. */
void fp_store_close(fp_store_t **self_p);

/* ---- Write side: one transaction per commit round (commit thread) ---- */

/* Starts the round's write transaction. 0 or a negative error. */
int fp_store_begin(fp_store_t *self, fp_store_txn_t **txn);

/* Every put returns 0 or a negative error. The first failed put poisons the
   whole transaction: later puts return the same error and fp_store_commit
   aborts it and returns that error, so a round is never partly committed. */

/* Sets (state non-NULL; slen may be 0) or deletes (state NULL; fine if
   absent) an aggregation key. klen 1..FP_STORE_KEY_MAX. */
int fp_store_put_key(fp_store_txn_t *t, const void *key, size_t klen, const void *state,
                     size_t slen);
/* Sets (state non-NULL) or deletes (NULL) a cumulative counter's state
   (counter.h). klen 1..FP_STORE_KEY_MAX. */
int fp_store_put_counter(fp_store_txn_t *t, const void *key, size_t klen, const void *state,
                         size_t slen);
/* Sets (state non-NULL) or deletes (NULL) a source's dedup state. */
int fp_store_put_source(fp_store_txn_t *t, uint64_t source_id, const void *state, size_t slen);
/* Sets the last stream_seq published on a topic. tlen 1..FP_STORE_KEY_MAX. */
int fp_store_put_feed(fp_store_txn_t *t, const char *topic, size_t tlen, uint64_t last_stream_seq);
/* The round's events and reader positions: outbox.h (fp_outbox_put,
   fp_outbox_put_reader), in the same txn. */
/* Appends a dead letter and writes its assigned seq (1, 2, 3, ... across
   restarts; never reused) to *dl_seq_out (may be NULL). reason: a NUL-terminated
   name of at most 255 bytes; json: jlen bytes (not NUL-terminated). */
int fp_store_put_deadletter(fp_store_txn_t *t, int64_t wall_ns, const char *reason,
                            const char *json, size_t jlen, const void *payload, size_t plen,
                            uint64_t *dl_seq_out);
/* Records the round and the last event global_seq this transaction commits. */
int fp_store_set_round(fp_store_txn_t *t, uint64_t round, uint64_t global_seq);

/* Commits (write + fsync: when this returns 0 the round survives a crash or
   power loss) and frees *t, setting it to NULL, whatever the result. 0,
   FP_STORE_FULL (nothing of the round is stored; keep its data and retry
   later), or another negative error. */
int fp_store_commit(fp_store_txn_t **t);

/* Discards the transaction and frees *t; sets it to NULL; NULL-safe. */
void fp_store_abort(fp_store_txn_t **t);

/* Deletes one dead letter (commit thread, or a tool's store from
   fp_store_open_tool; own write txn). 0, FP_STORE_NOTFOUND, or a negative
   error. */
int fp_store_delete_deadletter(fp_store_t *self, uint64_t dl_seq);

/* Retention of the dead letters (commit thread, own write txn, between
   rounds; docs/durability.md "Dead letters"): deletes the oldest (lowest
   dl_seq first) while the first is older than older_than_wall_ns, or the
   table holds more than max_count entries, or its pages take more than
   max_bytes; at most max_delete in one call. Each deletion is counted in
   *deleted under the first of these rules that asked for it. *count and
   *bytes get the table's entries and pages (in bytes) after it. Like
   fp_outbox_trim, after a FULL commit it also makes the tiny second
   commit that lets the next round use the freed pages. 0 or a negative
   error (then nothing was deleted). */
typedef struct {
    uint64_t age, count, bytes; /* deleted for each rule */
} fp_store_dl_trim_t;
int fp_store_trim_deadletters(fp_store_t *self, int64_t older_than_wall_ns, uint64_t max_count,
                              uint64_t max_bytes, uint32_t max_delete,
                              fp_store_dl_trim_t *deleted, uint64_t *count, uint64_t *bytes);

/* ---- Resubmissions (`floorpost deadletters resubmit`) ---- */

/* The identity under which a dead-lettered record is sent again. It is
   chosen once and stored before the record is sent, so every later
   resubmission of that record (of the same dead letter, or of another dead
   letter holding the same record) reuses it, and floorpost's dedup counts
   the record at most once. */
typedef struct {
    uint64_t orig[3];                /* the record's (source_id, epoch, seq), or (0, dl_seq,
                                        record index) when it has no usable identity */
    uint64_t source_id, epoch, seq;  /* the identity it is sent again under */
    int64_t wall_ns;                 /* when that was chosen */
} fp_store_resubmit_t;

/* Stores r[0..n) (keyed by orig; an existing one is replaced) in one write
   txn of its own: all of them or none. For a tool's store, or the commit
   thread with no round open. 0 or a negative error. */
int fp_store_put_resubmits(fp_store_t *self, const fp_store_resubmit_t *r, size_t n);

/* Looks up r->orig and fills the rest of *r. 0, FP_STORE_NOTFOUND, or a
   negative error. Any thread. */
int fp_store_get_resubmit(fp_store_t *self, fp_store_resubmit_t *r);

/* ---- Read side (any thread) ---- */

/* The dead letters stored: their count and the pages of their table, in
   bytes (what floorpost_deadletters_bytes shows). */
int fp_store_deadletter_usage(fp_store_t *self, uint64_t *count, uint64_t *bytes);

/* The last committed round and event global_seq (both 0 in a new store). */
int fp_store_last_round(fp_store_t *self, uint64_t *round, uint64_t *global_seq);

/* The each_* functions call fn for every entry in key order. fn returns 0 to
   go on, non-zero to stop. They return 0 after the last entry, fn's non-zero
   value if it stopped (so fn should stop with a positive value, or one the
   caller can tell from the store's negative codes), or a negative error. */
int fp_store_each_key(fp_store_t *self,
                      int (*fn)(void *ctx, const void *key, size_t klen, const void *state,
                                size_t slen),
                      void *ctx);
int fp_store_each_counter(fp_store_t *self,
                          int (*fn)(void *ctx, const void *key, size_t klen, const void *state,
                                    size_t slen),
                          void *ctx);
int fp_store_each_source(fp_store_t *self,
                         int (*fn)(void *ctx, uint64_t source_id, const void *state, size_t slen),
                         void *ctx);

/* The committed dedup state of one source (a worker bringing back a source
   that left its memory, dedup.h "Aging"): copied into buf[0..cap), its
   length in *len. 0, FP_STORE_NOTFOUND, FP_STORE_CORRUPT (longer than cap, or
   its checksum does not match) or a negative error. Any thread: its own read transaction; it sees at
   least every commit that ended before the call. */
int fp_store_get_source(fp_store_t *self, uint64_t source_id, void *buf, size_t cap,
                        size_t *len);
/* topic is not NUL-terminated. */
int fp_store_each_feed(fp_store_t *self,
                       int (*fn)(void *ctx, const char *topic, size_t tlen, uint64_t last_seq),
                       void *ctx);
/* Dead letters with dl_seq >= from_dl_seq, in order. reason is NUL-terminated;
   json is not. */
int fp_store_each_deadletter(fp_store_t *self, uint64_t from_dl_seq,
                             int (*fn)(void *ctx, uint64_t dl_seq, int64_t wall_ns,
                                       const char *reason, const char *json, size_t jlen,
                                       const void *payload, size_t plen),
                             void *ctx);

/* used_bytes: pages holding live data (all tables and the two meta pages;
   free pages not counted); map_bytes: the map size, the most the store may
   use. When used nears map, commits will soon return FP_STORE_FULL. */
int fp_store_usage(fp_store_t *self, uint64_t *used_bytes, uint64_t *map_bytes);

/* ---- Checksums (pure) ---- */

/* The checksum that ends every value of format 5 (4 bytes, big-endian,
   after the value's own bytes): XXH3 of the value seeded with XXH3 of the
   key seeded with the table's number (its place in "On disk": meta 0,
   keys 1, sources 2, feeds 3, outbox 4, deadletters 5, readers 6,
   counters 7, resubmits 8), cut to 32 bits. */
uint32_t fp_store_value_sum(unsigned table, const void *key, size_t klen, const void *val,
                            size_t vlen);
/* A stored value of len bytes -> *vlen, its length without the checksum:
   0 when the checksum matches, else FP_STORE_CORRUPT. */
int fp_store_value_open(unsigned table, const void *key, size_t klen, const void *val,
                        size_t len, size_t *vlen);

/* A static English text for any code these functions return. */
const char *fp_store_strerror(int rc);

#endif
