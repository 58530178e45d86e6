/*  sink_pg.c - `type = postgresql`: checkpoints as rows of interface tables
    (consumption, completion, scrap) in a PostgreSQL schema, exactly once in
    effect, and the ERP import job's verdicts (rows it set to ERROR) back as
    posting dead letters (docs/sinks.md, "type = postgresql").

    Options
      conninfo              libpq connection string (key=value ... or a
                            postgresql:// URI); required
      schema                [a-z_][a-z0-9_]{0,62} (default floorpost)
      connect_timeout_ms    100..600000 (default 10000)
      statement_timeout_ms  100..3600000 (default 30000)
      verdict_poll_ms       0 (off) or 100..3600000 (default 1000); the
                            reader calls cb_idle at most about once a second,
                            so less than 1000 polls once a second
      connections           1..8 (default 1): sessions a delivery of at least
                            2 x S_PART_MIN events is split over (s_deliver)
      synchronous_commit    the session's (default true); false: a crash of
                            PostgreSQL may lose the last commits, rows and
                            position together, and the sink writes them
                            again from the outbox (docs: what it costs)

    DESIGN
    - One delivery = one transaction in one simple query (one round trip
      and the commit): BEGIN, a COPY FROM STDIN (FORMAT binary) straight
      into each table the batch has rows for, the upsert of this sink's row
      of sink_position (the batch's last global_seq), COMMIT. The rows and
      the position are committed together or not at all. Binary, because
      the single backend is the limit and no longer parses timestamps,
      dates, numbers and booleans from text. Each table's data is encoded
      when its COPY asks for it and handed to libpq every 32 KiB, so the
      backend parses and inserts the first rows while the sink's thread
      encodes the rest. Both together: 1.24 to 1.30 times the rows per
      backend CPU second of the text format, 1.3 to 1.4 times its rows/s
      (docs/benchmarks.md).
    - connections = N > 1: the backend is the limit (about 11 us of CPU a
      row), so a delivery of at least 2 x S_PART_MIN events is split into
      up to N contiguous parts, each the transaction above on its own
      session, all sent at once and driven with poll(2) on nonblocking
      sessions (s_run_parts): N backends insert in parallel while this
      thread encodes. Only the first part writes sink_position (a prefix:
      every event before the delivery is in); deliver returns the parts
      committed from the first on; a later part that is in while the
      position is before it comes again through staging (below), which
      skips its rows; the position catches up when idle and at close
      (s_pos_catch_up).
    - Pipelined with one session (s_pipelined): while more committed events
      wait than the batch holds, deliver encodes every table's data, sends
      the transaction, hands over the first table's data and returns
      without waiting for the commit (the reader defers: accepted is not
      finished), so the reader reads and decodes the next batch while the
      backend inserts; the next deliver (or cb_idle, or cb_close) reads
      the result first (s_inflight_end) and only then finishes the batch
      (fp_sink_finished). One transaction in flight at a time, the position
      still in it with the rows; a failure there offers everything from
      the finished position again. A split delivery (connections > 1,
      below) is pipelined the same way: every part's data encoded, the
      parts sent and driven until each has its first table's data in the
      socket (s_parts_drive with handover), their results read at the
      next call (s_split_end); the next delivery's first part writes the
      position only after every part of this one is in. The last batch of
      a backlog, and every delivery through staging, waits for its commits
      as before.
    - cb_open reads sink_position and rewinds the reader to it: after a
      crash the reader goes on exactly after the last committed row, and a
      database restored from a backup makes it deliver again from the
      backup's position (what the outbox no longer keeps is a gap, reader.c).
      So an event_id already in a table means something else wrote it
      (another instance, a position set back by hand): COPY fails with
      23505, the transaction is rolled back, and this delivery and the next
      S_STAGED_AFTER_CONFLICT go through session temp tables (ON COMMIT
      DELETE ROWS) and INSERT ... SELECT ... ON CONFLICT (event_id) DO
      NOTHING (the staging tables have the same column types, so the same
      binary data). Straight COPY measured 1.1 to 1.9 times faster than
      staging (docs/benchmarks.md).
    - DDL (schema/sql/postgresql.sql, embedded as build/gen/postgresql_sql.h)
      is applied at open when a table is missing or lacks the period
      columns (an older floorpost's: the DDL's ALTER TABLE ... ADD COLUMN
      IF NOT EXISTS upgrades it in place): one transaction under
      pg_advisory_xact_lock, every statement IF NOT EXISTS / OR REPLACE, so
      two floorposts opening at once do not race.
    - Verdicts: a BEFORE UPDATE trigger gives a row moving into ERROR
      (verdict_xid = its transaction's xid8, verdict_seq = nextval). cb_idle
      polls the rows with (verdict_xid, verdict_seq) above the sink's aux
      cursor whose transaction ended (verdict_xid below the xmin of a
      current snapshot: no verdict can appear below the cursor later), in
      that order, and hands each to fp_sink_dead_letter with its (xid, seq)
      as the new cursor: emit commits the dead letter and the cursor in one
      LMDB transaction, so no verdict is reported twice or lost. The stored
      event is not at hand then: the Checkpoint is rebuilt from the row
      (times at the row's microseconds). A cursor at or past the cluster's
      next xid (a new or restored cluster) polls from 0 instead: a verdict
      may come twice then, never not at all.
    - A session lost while idle is opened again by the verdict poll (a
      quiet shift still gets its verdicts); if sink_position is not what
      this sink last committed, the next delivery returns FP_READER_REOPEN
      so that cb_open rewinds (only cb_open may).
    - Error classes: the connection gone (or SQLSTATE 08xxx, 57P01..03) is
      `connect` and returns FP_READER_REOPEN; 57014 (statement_timeout) is
      `timeout`; any other SQL error is `server` with its SQLSTATE. sinks.c
      backs off and opens the circuit breaker.
    - Text from producers may not be UTF-8; PostgreSQL would refuse the
      whole batch for ever, so invalid sequences are written as U+FFFD.

    Thread contract (sink.h): s_new and s_free on the controlling thread
    (s_new does no I/O: libpq's parser checks conninfo); everything else on
    the sink's thread, which owns the connection. fp_sink_pg_resubmit: any
    thread, its own connection.
*/
#include "sink_pg.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "codec.h"
#include "grow.h"
#include "log.h"
#include "sink.h"
#include "utf8.h"

/* The DDL as a C string (generated from schema/sql/postgresql.sql). */
#include "postgresql_sql.h"

#define S_SCHEMA_MAX 63
#define S_POLL_LIMIT 1000 /* verdicts per poll */
#define S_PLACEHOLDER "@SCHEMA@"

static const char *const s_tables[FP_CK_KINDS] = {"consumption", "completion", "scrap"};

#define S_COMMON_COLS                                                                  \
    "event_id, global_seq, instance, plant, line, order_no, operation, posting_date, " \
    "first_event_at, last_event_at, record_count, late, lineage, lineage_truncated, "   \
    "checkpoint_no, stream_seq, topic, period, period_start, period_end, backfill, "    \
    "original_posting_date, original_period_start"
static const char *const s_kind_cols[FP_CK_KINDS] = {"material, lot, unit, quantity",
                                                     "yield_qty, scrap_qty, final",
                                                     "reason, parts"};

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} s_out_t;

#define S_CONN_MAX 8        /* connections */
#define S_PART_MIN 500       /* events a part of a split delivery has at least */

/* One part of a delivery: a contiguous run of its events, one transaction
   on one session. */
typedef struct {
    PGconn *conn;
    s_out_t rows[FP_CK_KINDS]; /* COPY data (binary format) per table */
    uint64_t nrows[FP_CK_KINDS];
    bool encoded[FP_CK_KINDS]; /* rows[k] holds this delivery's data (a second attempt) */
    const fp_sink_event_t *evs; /* the part's events, while s_deliver runs */
    size_t nevs;
    uint64_t first_seq, last_seq; /* their global_seqs (kept after s_deliver) */
    bool oom;                  /* s_feed ran out of memory */
    s_out_t q;                 /* the part's one query */
    /* one attempt (s_attempt_send .. s_attempt_end) */
    int kinds[FP_CK_KINDS], nk, fed;
    bool staged, has_pos;      /* through staging; writes the position */
    bool active, flush;        /* flush: output queued (nonblocking) */
    PGresult *bad;             /* the first error */
    uint64_t merged;           /* "INSERT 0 n" of every statement */
} s_part_t;

typedef struct {
    char conninfo[FP_SINK_VALUE_MAX];
    char schema[S_SCHEMA_MAX + 1];
    char qschema[S_SCHEMA_MAX + 3]; /* "schema": a quoted identifier */
    char name[FP_SINK_NAME_MAX + 1];
    char component[FP_SINK_NAME_MAX + 8];
    int64_t connect_timeout_ms, statement_timeout_ms, verdict_poll_ms;
    bool synchronous_commit;
    /* SQL built once in cb_new */
    char *ddl, *sql_have, *sql_poll;
    char sql_copy[FP_CK_KINDS][768];    /* straight into the table */
    char sql_stage[FP_CK_KINDS][768];   /* into the session's staging table */
    char sql_merge[FP_CK_KINDS][1536];  /* staging -> table, ON CONFLICT DO NOTHING */
    int64_t connections;       /* sessions a large delivery is split over */
    /* the sink's thread */
    PGconn *conn;              /* the first session: deliveries, verdicts, DDL */
    s_part_t part[S_CONN_MAX]; /* a delivery's parts; part[j].conn: j's session
                                  (part[0].conn is conn, set per delivery) */
    int64_t next_poll_ns;
    int staged;                /* deliveries left that go through staging (after a conflict) */
    bool cursor_ahead;         /* the aux cursor is past this cluster's next xid: poll from 0 */
    uint64_t db_pos;           /* sink_position as last read or committed (S_NO_POS: no row) */
    uint64_t done_pos;         /* the last event of a split delivery all committed (0: none) */
    bool reopen;               /* reconnected while idle to a changed position: reopen first */
    /* Pipelined (s_pipelined, and split deliveries in s_deliver): the
       transaction(s) sent and the data handed over, the results not read
       yet; part[j].first_seq/last_seq say which events. */
    bool inflight;
    int inflight_before;       /* staged before it */
    int inflight_np;           /* 0: part[0] alone (one session); else a split delivery's parts */
    int parts_rc[S_CONN_MAX];  /* s_run_parts' results, kept while a split delivery is in flight */
    uint64_t parts_ins[S_CONN_MAX], parts_pos[S_CONN_MAX];
    int64_t parts_deadline;
    fp_sink_t *inflight_sink;  /* for s_close, which has no fp_sink_t */
    fp_codec_t *codec;         /* rebuilds a refused row's Checkpoint */
} pg_t;

#define S_STAGED_AFTER_CONFLICT 64 /* deliveries through staging after a conflict */
#define S_STAGED_AFTER_OPEN 2      /* ... after an open or a failed split (connections > 1) */
#define S_CONFLICT 1               /* s_attempt: an event_id is in the table already */
#define S_NO_POS UINT64_MAX        /* db_pos: the sink has no row in sink_position */

/* ---- output buffer ---- */

static char *s_room(s_out_t *o, size_t n)
{
    if (o->failed || fp_grow(&o->p, &o->cap, o->len + n + 1, 1, 1 << 16) != 0) {
        o->failed = true;
        return NULL;
    }
    return o->p + o->len;
}

static void s_raw(s_out_t *o, const char *s, size_t n)
{
    char *d = s_room(o, n);
    if (d) {
        memcpy(d, s, n);
        o->len += n;
        o->p[o->len] = 0;
    }
}

static void s_str(s_out_t *o, const char *s)
{
    s_raw(o, s, strlen(s));
}

/* v as decimal digits (the lineage's JSON). */
static void s_u64(s_out_t *o, uint64_t v)
{
    char b[24];
    int i = sizeof b;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    s_raw(o, b + i, sizeof b - (size_t)i);
}

/* ---- COPY's binary format ----
   The data is the signature "PGCOPY\n\377\r\n\0", int32 flags 0, int32
   header extension length 0; per tuple an int16 field count, then per
   field an int32 length (-1: NULL) and the value in the type's binary send
   format, network byte order; the trailer int16 -1. The backend then parses
   no text: int8, bool and date are copied, timestamptz is an int64, numeric
   its digits, jsonb still goes through the JSON parser (version byte 1, then
   the text). */

#define S_PG_EPOCH_DAYS 10957                        /* 1970-01-01 to 2000-01-01 */
#define S_PG_EPOCH_US (S_PG_EPOCH_DAYS * 86400000000LL) /* in microseconds */
#define S_NUMERIC_NEG 0x4000
#define S_COMMON_FIELDS 23 /* S_COMMON_COLS */
static const int s_kind_fields[FP_CK_KINDS] = {4, 3, 2};

/* v's low `bytes` bytes, most significant first. */
static void s_be(s_out_t *o, uint64_t v, int bytes)
{
    char *d = s_room(o, (size_t)bytes);
    if (!d)
        return;
    for (int i = 0; i < bytes; i++)
        d[i] = (char)(v >> (8 * (bytes - 1 - i)));
    o->len += (size_t)bytes;
}

static void s_null(s_out_t *o)
{
    s_be(o, UINT32_MAX, 4); /* length -1 */
}

static void s_int8(s_out_t *o, uint64_t v)
{
    s_be(o, 8, 4);
    s_be(o, v, 8);
}

static void s_bool(s_out_t *o, bool v)
{
    s_be(o, 1, 4);
    s_be(o, v ? 1 : 0, 1);
}

/* A field whose length is known once written: its length word, patched by
   s_end. */
static size_t s_begin(s_out_t *o)
{
    size_t at = o->len;
    s_be(o, 0, 4);
    return at;
}

static void s_end(s_out_t *o, size_t at)
{
    if (o->failed)
        return;
    uint32_t n = (uint32_t)(o->len - at - 4);
    unsigned char *d = (unsigned char *)o->p + at;
    d[0] = (unsigned char)(n >> 24);
    d[1] = (unsigned char)(n >> 16);
    d[2] = (unsigned char)(n >> 8);
    d[3] = (unsigned char)n;
}

/* The n bytes of s as UTF-8: invalid sequences as U+FFFD (PostgreSQL's
   textrecv checks the encoding and would refuse the whole batch for ever). */
static void s_utf8(s_out_t *o, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t run = i; /* the ASCII bytes, copied at once */
        while (run < n && p[run] < 0x80)
            run++;
        if (run > i) {
            s_raw(o, s + i, run - i);
            i = run;
            continue;
        }
        int l = fp_utf8_seq(p + i, n - i);
        if (l <= 0) { /* starts no character, or one cut short by the end */
            s_raw(o, FP_UTF8_REPLACEMENT, 3);
            i++;
        } else {
            s_raw(o, s + i, (size_t)l);
            i += (size_t)l;
        }
    }
}

/* A text field of the n bytes of s; NULL or (when empty_null) "" as NULL. */
static void s_textn(s_out_t *o, const char *s, size_t n, bool empty_null)
{
    if (!s || (empty_null && n == 0)) {
        s_null(o);
        return;
    }
    size_t at = s_begin(o);
    s_utf8(o, s, n);
    s_end(o, at);
}

static void s_text(s_out_t *o, const char *s, bool empty_null)
{
    s_textn(o, s, s ? strlen(s) : 0, empty_null);
}

/* ns since the Unix epoch as a timestamptz: microseconds (rounded down)
   since 2000-01-01 00:00 UTC. */
static void s_ts(s_out_t *o, int64_t ns)
{
    int64_t us = ns / 1000 - (ns % 1000 < 0);
    s_int8(o, (uint64_t)(us - S_PG_EPOCH_US));
}

/* "YYYY-MM-DD" (fp_sink_date_shaped) as days since 2000-01-01; false when
   it is no calendar date. */
static bool s_days(const char *s, int32_t *days)
{
    if (!fp_sink_date_shaped(s))
        return false;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1] || (m == 2 && d == 29 && !leap))
        return false;
    /* days from the civil date (H. Hinnant's algorithm; y >= 0 here) */
    y -= m <= 2;
    int era = y / 400, yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *days = era * 146097 + doe - 719468 - S_PG_EPOCH_DAYS;
    return true;
}

/* A date field; NULL when s is no date (posting_date is NOT NULL: the
   server then refuses the batch, as it would the text). */
static void s_date(s_out_t *o, const char *s)
{
    int32_t days;
    if (!s_days(s, &days)) {
        s_null(o);
        return;
    }
    s_be(o, 4, 4);
    s_be(o, (uint32_t)days, 4);
}

/* thousandths as numeric with dscale 3 (1250 -> 1.250, -5 -> -0.005):
   int16 ndigits, weight, sign, dscale, then the base-10000 digits, most
   significant first, weight the power of 10000 of the first; no leading
   or trailing zero digits (as the server's own numeric_send). */
static void s_qty(s_out_t *o, int64_t q)
{
    uint64_t u = q < 0 ? (uint64_t)0 - (uint64_t)q : (uint64_t)q, ip = u / 1000;
    uint16_t lo[5], dig[6];
    int ni = 0, n = 0;
    while (ip) {
        lo[ni++] = (uint16_t)(ip % 10000);
        ip /= 10000;
    }
    for (int i = ni - 1; i >= 0; i--)
        dig[n++] = lo[i];
    dig[n++] = (uint16_t)(u % 1000 * 10); /* .250 -> 2500 */
    int weight = ni - 1;
    while (n > 0 && dig[n - 1] == 0)
        n--;
    if (n == 0)
        weight = 0; /* zero */
    s_be(o, 8 + 2 * (uint64_t)n, 4);
    s_be(o, (uint64_t)n, 2);
    s_be(o, (uint16_t)(int16_t)weight, 2);
    s_be(o, q < 0 && n ? S_NUMERIC_NEG : 0, 2);
    s_be(o, 3, 2);
    for (int i = 0; i < n; i++)
        s_be(o, dig[i], 2);
}

/* The lineage as jsonb: version 1, then the JSON text. */
static void s_lineage(s_out_t *o, const fp_checkpoint_t *c)
{
    size_t at = s_begin(o);
    s_be(o, 1, 1);
    s_raw(o, "[", 1);
    for (uint32_t i = 0; i < c->nlineage && i < FP_LINEAGE_MAX; i++) {
        s_str(o, i ? ",{\"source_id\":" : "{\"source_id\":");
        s_u64(o, c->lineage[i].source_id);
        s_str(o, ",\"epoch\":");
        s_u64(o, c->lineage[i].epoch);
        s_str(o, ",\"first_seq\":");
        s_u64(o, c->lineage[i].first_seq);
        s_str(o, ",\"last_seq\":");
        s_u64(o, c->lineage[i].last_seq);
        s_raw(o, "}", 1);
    }
    s_raw(o, "]", 1);
    s_end(o, at);
}

/* One COPY tuple for ev into its table's buffer: the columns of
   S_COMMON_COLS and s_kind_cols, in that order; NULL where the columns
   allow it and the checkpoint has no value. */
static void s_row(s_out_t *o, const fp_sink_event_t *ev)
{
    const fp_checkpoint_t *c = &ev->ck;
    int k = c->kind - 1;
    s_be(o, (uint64_t)(S_COMMON_FIELDS + s_kind_fields[k]), 2);
    s_text(o, c->event_id, false);
    s_int8(o, ev->raw->global_seq);
    s_text(o, c->instance, false);
    s_text(o, c->plant, false);
    s_text(o, c->line, true);
    s_text(o, c->order, false);
    s_text(o, c->operation, false);
    s_date(o, ev->posting_date);
    s_ts(o, c->first_time_ns);
    s_ts(o, c->last_time_ns);
    s_int8(o, c->record_count);
    s_bool(o, c->late);
    s_lineage(o, c);
    s_bool(o, c->lineage_truncated);
    s_int8(o, c->checkpoint_no);
    s_int8(o, c->stream_seq);
    /* the topic up to a NUL, at most 255 bytes (as ever) */
    size_t tl = ev->raw->tlen < 255 ? ev->raw->tlen : 255;
    const char *nul = memchr(ev->raw->topic, 0, tl);
    s_textn(o, ev->raw->topic, nul ? (size_t)(nul - ev->raw->topic) : tl, false);
    /* The period: only with the checkpoint's own posting date (an event
       without one, from a floorpost before periods, has NULLs). */
    if (fp_sink_date_shaped(c->posting_date) && c->period && *c->period) {
        s_text(o, c->period, false);
        s_ts(o, c->period_start_ns);
        s_ts(o, c->period_end_ns);
    } else {
        s_null(o);
        s_null(o);
        s_null(o);
    }
    s_bool(o, c->backfill);
    if (fp_sink_date_shaped(c->original_posting_date)) {
        s_date(o, c->original_posting_date);
        s_ts(o, c->original_period_start_ns);
    } else {
        s_null(o);
        s_null(o);
    }
    switch (c->kind) {
    case FP_CK_CONSUMPTION:
        s_text(o, c->material, true);
        s_text(o, c->lot, true);
        s_text(o, c->unit, true);
        s_qty(o, c->quantity);
        break;
    case FP_CK_COMPLETION:
        s_int8(o, (uint64_t)c->yield);
        s_int8(o, (uint64_t)c->scrap);
        s_bool(o, c->final);
        break;
    default:
        s_text(o, c->reason, true);
        s_int8(o, (uint64_t)c->parts);
        break;
    }
}

/* The events of evs[0..n) per table: nrows[k] those of kind k + 1.
   Events of no table's kind are left out. */
static void s_count(uint64_t nrows[FP_CK_KINDS], const fp_sink_event_t *evs, size_t n)
{
    for (int k = 0; k < FP_CK_KINDS; k++)
        nrows[k] = 0;
    for (size_t i = 0; i < n; i++) {
        int k = evs[i].ck.kind - 1;
        if (k >= 0 && k < FP_CK_KINDS)
            nrows[k]++;
    }
}

#define S_CHUNK (32u << 10) /* COPY data handed to libpq while encoding, bytes */

/* The COPY data of the events of kind k + 1 of evs[0..n) into o (emptied
   first): the header, a tuple each, the trailer. With c (a COPY waiting
   for its data), each S_CHUNK encoded goes out at once, so the backend
   parses and inserts while the rest is encoded; the caller sends what
   is left. false when c refused data (the connection failed; o then holds
   a part) or o failed (out of memory). */
static bool s_encode_kind(s_out_t *o, PGconn *c, size_t *sent, const fp_sink_event_t *evs,
                          size_t n, int k)
{
    static const char sig[11] = "PGCOPY\n\377\r\n"; /* its NUL the 11th byte */
    o->len = 0;
    o->failed = false;
    *sent = 0;
    s_raw(o, sig, sizeof sig);
    s_be(o, 0, 4); /* flags */
    s_be(o, 0, 4); /* header extension length */
    for (size_t i = 0; i < n; i++) {
        if (evs[i].ck.kind - 1 != k)
            continue;
        s_row(o, &evs[i]);
        if (c && !o->failed && o->len - *sent >= S_CHUNK) {
            if (PQputCopyData(c, o->p + *sent, (int)(o->len - *sent)) != 1)
                return false;
            *sent = o->len;
        }
    }
    s_be(o, UINT16_MAX, 2); /* field count -1: the end */
    return !o->failed;
}

/* ---- options, SQL ---- *//* ---- options, SQL ---- */

static bool s_schema_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > S_SCHEMA_MAX || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/* text with every S_PLACEHOLDER replaced by rep (malloc'd; NULL on OOM). */
static char *s_subst(const char *text, const char *rep)
{
    size_t pl = strlen(S_PLACEHOLDER), rl = strlen(rep), n = 0;
    for (const char *p = text; (p = strstr(p, S_PLACEHOLDER)) != NULL; p += pl)
        n++;
    char *out = malloc(strlen(text) + n * rl + 1);
    if (!out)
        return NULL;
    char *d = out;
    const char *p = text, *hit;
    while ((hit = strstr(p, S_PLACEHOLDER)) != NULL) {
        memcpy(d, p, (size_t)(hit - p));
        d += hit - p;
        memcpy(d, rep, rl);
        d += rl;
        p = hit + pl;
    }
    strcpy(d, p);
    return out;
}

static int s_build_sql(pg_t *p)
{
    p->ddl = s_subst(fp_sql_postgresql, p->qschema);
    char have[4096], poll_sql[8192]; /* have: 454 bytes + 10 schema names of at most S_SCHEMA_MAX + 2 */
    snprintf(have, sizeof have,
             "SELECT to_regclass('%1$s.consumption') IS NOT NULL AND "
             "to_regclass('%1$s.completion') IS NOT NULL AND "
             "to_regclass('%1$s.scrap') IS NOT NULL AND "
             "to_regclass('%1$s.sink_position') IS NOT NULL AND "
             "to_regclass('%1$s.verdict_seq') IS NOT NULL AND "
             "(SELECT count(*) FROM pg_attribute WHERE attrelid IN "
             "(to_regclass('%1$s.posting_template'), to_regclass('%1$s.consumption'), "
             "to_regclass('%1$s.completion'), to_regclass('%1$s.scrap')) AND "
             "attname = 'original_period_start' AND NOT attisdropped) = 4",
             p->qschema);
    p->sql_have = strdup(have);
    for (int k = 0; k < FP_CK_KINDS; k++) {
        int c0 = snprintf(p->sql_copy[k], sizeof p->sql_copy[k],
                          "COPY %s.%s (" S_COMMON_COLS ", %s) FROM STDIN (FORMAT binary)", p->qschema,
                          s_tables[k], s_kind_cols[k]);
        int c1 = snprintf(p->sql_stage[k], sizeof p->sql_stage[k],
                 "COPY pg_temp.fp_in_%s (" S_COMMON_COLS ", %s) FROM STDIN (FORMAT binary)", s_tables[k],
                 s_kind_cols[k]);
        int c2 = snprintf(p->sql_merge[k], sizeof p->sql_merge[k],
                 "INSERT INTO %s.%s (" S_COMMON_COLS ", %s) SELECT " S_COMMON_COLS
                 ", %s FROM pg_temp.fp_in_%s ON CONFLICT (event_id) DO NOTHING;",
                 p->qschema, s_tables[k], s_kind_cols[k], s_kind_cols[k], s_tables[k]);
        assert(c0 < (int)sizeof p->sql_copy[k] && c1 < (int)sizeof p->sql_stage[k] &&
               c2 < (int)sizeof p->sql_merge[k]);
    }
    /* The verdicts above the cursor ($1 xid, $2 seq) of ended transactions,
       in cursor order, with what rebuilds the Checkpoint. Columns: 0 kind,
       1 xid, 2 seq, 3 error_code, 4 error_text, 5 event_id, 6 global_seq,
       7 instance, 8 plant, 9 line, 10 order_no, 11 operation,
       12 posting_date, 13 first us, 14 last us, 15 record_count, 16 late,
       17 lineage "s e f l,...", 18 lineage_truncated, 19 checkpoint_no,
       20 stream_seq, 21 topic, 22 material|reason, 23 lot, 24 unit,
       25 quantity|yield|parts, 26 scrap, 27 final, 28 period, 29 period_start
       us, 30 period_end us, 31 backfill, 32 original_posting_date,
       33 original_period_start us. */
    static const char *const tail[FP_CK_KINDS] = {
        "material, lot, unit, quantity::text, NULL::bigint, NULL::boolean",
        "NULL::text, NULL::text, NULL::text, yield_qty::text, scrap_qty, final",
        "reason, NULL::text, NULL::text, parts::text, NULL::bigint, NULL::boolean"};
    size_t n = 0;
    for (int k = 0; k < FP_CK_KINDS; k++)
        n += (size_t)snprintf(
            poll_sql + n, sizeof poll_sql - n,
            "%sSELECT %d AS kind, verdict_xid AS vx, verdict_seq AS vs, error_code, error_text, "
            "event_id, global_seq, instance, plant, line, order_no, operation, "
            "posting_date::text, (extract(epoch FROM first_event_at) * 1000000)::bigint, "
            "(extract(epoch FROM last_event_at) * 1000000)::bigint, record_count, late, "
            "(SELECT string_agg(concat_ws(' ', e->>'source_id', e->>'epoch', e->>'first_seq', "
            "e->>'last_seq'), ',') FROM jsonb_array_elements(lineage) e), lineage_truncated, "
            "checkpoint_no, stream_seq, topic, %s, period, "
            "(extract(epoch FROM period_start) * 1000000)::bigint, "
            "(extract(epoch FROM period_end) * 1000000)::bigint, backfill, "
            "original_posting_date::text, "
            "(extract(epoch FROM original_period_start) * 1000000)::bigint "
            "FROM %s.%s WHERE verdict_xid IS NOT NULL "
            "AND process_status = 'ERROR' AND (verdict_xid, verdict_seq) > ($1::xid8, "
            "$2::bigint) AND verdict_xid < pg_snapshot_xmin(pg_current_snapshot())",
            k ? " UNION ALL " : "", k + 1, tail[k], p->qschema, s_tables[k]);
    n += (size_t)snprintf(poll_sql + n, sizeof poll_sql - n, " ORDER BY vx, vs LIMIT %d",
                          S_POLL_LIMIT);
    assert(n < sizeof poll_sql);
    p->sql_poll = strdup(poll_sql);
    return p->ddl && p->sql_have && p->sql_poll ? 0 : -1;
}

static void s_free(void *ctx)
{
    pg_t *p = ctx;
    if (!p)
        return;
    if (p->conn)
        PQfinish(p->conn);
    for (int j = 0; j < S_CONN_MAX; j++) {
        if (j > 0 && p->part[j].conn)
            PQfinish(p->part[j].conn);
        for (int k = 0; k < FP_CK_KINDS; k++)
            free(p->part[j].rows[k].p);
        free(p->part[j].q.p);
    }
    free(p->ddl);
    free(p->sql_have);
    free(p->sql_poll);
    fp_codec_destroy(&p->codec);
    free(p);
}

/* conninfo's syntax, as libpq reads it. 0, or -1 with err. */
static int s_conninfo_check(const char *conninfo, char *err, size_t errlen)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    if (!opts) {
        size_t l = msg ? strlen(msg) : 0;
        while (l && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
            l--;
        snprintf(err, errlen, "%.*s", (int)l, msg ? msg : "out of memory");
        PQfreemem(msg);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}

static void *s_new(fp_sink_opts_t *o)
{
    pg_t *p = calloc(1, sizeof *p);
    if (!p) {
        fp_sink_opt_fail(o, NULL, "out of memory");
        return NULL;
    }
    snprintf(p->name, sizeof p->name, "%s", fp_sink_opts_name(o));
    snprintf(p->component, sizeof p->component, "sink-%s", p->name);
    char err[256];
    if (fp_sink_opt_str(o, "conninfo", "", p->conninfo, sizeof p->conninfo,
                        "a libpq connection string") ||
        fp_sink_opt_str(o, "schema", "floorpost", p->schema, sizeof p->schema,
                        "[a-z_][a-z0-9_]{0,62}") ||
        fp_sink_opt_int(o, "connect_timeout_ms", 10000, 100, 600000, &p->connect_timeout_ms) ||
        fp_sink_opt_int(o, "statement_timeout_ms", 30000, 100, 3600000,
                        &p->statement_timeout_ms) ||
        fp_sink_opt_int(o, "verdict_poll_ms", 1000, 0, 3600000, &p->verdict_poll_ms) ||
        fp_sink_opt_bool(o, "synchronous_commit", true, &p->synchronous_commit) ||
        fp_sink_opt_int(o, "connections", 1, 1, S_CONN_MAX, &p->connections))
        goto fail;
    if (!p->conninfo[0]) {
        fp_sink_opt_fail(o, NULL, "conninfo is required; allowed: a libpq connection string, "
                         "e.g. \"host=db.plant port=5432 dbname=erp user=floorpost\"");
        goto fail;
    }
    if (s_conninfo_check(p->conninfo, err, sizeof err) != 0) {
        /* The value itself is not repeated: it may hold a password. */
        fp_sink_opt_fail(o, "conninfo", "conninfo: not a valid connection string: %s; allowed: "
                         "key=value pairs (host=... dbname=...) or a postgresql:// URI", err);
        goto fail;
    }
    if (!s_schema_ok(p->schema)) {
        fp_sink_opt_fail(o, "schema", "schema = '%.80s': not a plain identifier; allowed: "
                         "[a-z_][a-z0-9_]{0,62}", p->schema);
        goto fail;
    }
    if (p->verdict_poll_ms > 0 && p->verdict_poll_ms < 100) {
        fp_sink_opt_fail(o, "verdict_poll_ms", "verdict_poll_ms = %lld: too short; allowed: 0 "
                         "(off) or 100..3600000", (long long)p->verdict_poll_ms);
        goto fail;
    }
    snprintf(p->qschema, sizeof p->qschema, "\"%s\"", p->schema);
    if (s_build_sql(p) != 0) {
        fp_sink_opt_fail(o, NULL, "out of memory");
        goto fail;
    }
    return p;
fail:
    s_free(p);
    return NULL;
}

/* ---- connection ---- */

/* The error text of r (or of the connection), one line, without the
   trailing newline. */
static void s_errtext(PGconn *c, const PGresult *r, char *out, size_t cap)
{
    const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!m || !*m)
        m = r ? PQresultErrorMessage(r) : NULL;
    if ((!m || !*m) && c)
        m = PQerrorMessage(c);
    if (!m || !*m)
        m = "unknown error";
    size_t n = 0;
    for (; *m && n + 1 < cap; m++) {
        bool space = *m == '\n' || *m == '\r' || *m == '\t' || *m == ' ';
        if (!space)
            out[n++] = *m;
        else if (n && out[n - 1] != ' ')
            out[n++] = ' '; /* libpq's "...\n\tIs the server running" on one line */
    }
    while (n && out[n - 1] == ' ')
        n--;
    out[n] = 0;
}

/* Connects within timeout_ms (PQconnectStartParams + poll, so the deadline
   holds for every host conninfo names). NULL with err. */
static PGconn *s_connect(const char *conninfo, const char *appname, int64_t timeout_ms,
                         char *err, size_t errlen)
{
    /* Ours first: conninfo (dbname, expanded) may override them. */
    const char *keys[] = {"application_name", "client_encoding", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "dbname", NULL};
    const char *vals[] = {appname, "UTF8", "1", "10", "5", "3", conninfo, NULL};
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int64_t deadline = fp_now_ns() + timeout_ms * 1000000;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left = deadline - fp_now_ns();
        if (left <= 0) {
            snprintf(err, errlen, "no connection within connect_timeout_ms = %lld",
                     (long long)timeout_ms);
            PQfinish(c);
            return NULL;
        }
        struct pollfd pfd = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
        int r = pfd.fd >= 0 ? poll(&pfd, 1, (int)(left / 1000000) + 1) : 1;
        if (r < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            PQfinish(c);
            return NULL;
        }
        if (r > 0)
            st = PQconnectPoll(c);
    }
    if (PQstatus(c) != CONNECTION_OK) {
        s_errtext(c, NULL, err, errlen);
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs sql (no result rows wanted). 0, or -1 with *res kept for the
   caller's classification (PQclear it). */
static int s_exec(PGconn *c, const char *sql, PGresult **res)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        *res = NULL;
        return 0;
    }
    *res = r;
    return -1;
}

/* Classifies a failure of what (r may be NULL: the connection's error),
   records it with fp_sink_fail and says what to return from deliver. */
static int s_failed_on(pg_t *p, PGconn *c, fp_sink_t *s, PGresult *r, const char *what)
{
    char msg[200];
    s_errtext(c, r, msg, sizeof msg);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    bool gone = !c || PQstatus(c) == CONNECTION_BAD ||
                (state && (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
                           strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0));
    int rc;
    if (gone) {
        fp_sink_fail(s, FP_SINK_ERR_connect, "%s: connection lost: %s", what, msg);
        rc = FP_READER_REOPEN;
    } else if (state && strcmp(state, "57014") == 0) {
        fp_sink_fail(s, FP_SINK_ERR_timeout, "%s: statement_timeout_ms = %lld: %s", what,
                     (long long)p->statement_timeout_ms, msg);
        rc = -1;
    } else {
        fp_sink_fail(s, FP_SINK_ERR_server, "%s: SQLSTATE %s: %s", what, state ? state : "?",
                     msg);
        rc = -1;
    }
    if (r)
        PQclear(r);
    if (!gone && PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
    }
    return rc;
}

static int s_failed(pg_t *p, fp_sink_t *s, PGresult *r, const char *what)
{
    return s_failed_on(p, p->conn, s, r, what);
}

static void s_pos_catch_up(pg_t *p);

static int s_inflight_end(pg_t *p, fp_sink_t *s);

static void s_close(void *ctx)
{
    pg_t *p = ctx;
    if (p->inflight && p->conn)
        s_inflight_end(p, p->inflight_sink); /* committed: finished; else it comes again */
    p->inflight = false;
    s_pos_catch_up(p);
    if (p->conn)
        PQfinish(p->conn);
    p->conn = NULL;
    p->part[0].conn = NULL;
    for (int j = 1; j < S_CONN_MAX; j++) {
        if (p->part[j].conn)
            PQfinish(p->part[j].conn);
        p->part[j].conn = NULL;
    }
}

/* Applies the DDL when a table is missing. 0, or -1 after fp_sink_fail. */
static int s_ensure_tables(pg_t *p, fp_sink_t *s)
{
    PGresult *r = PQexec(p->conn, p->sql_have);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        s_failed(p, s, r, "checking the tables");
        return -1;
    }
    bool have = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (have)
        return 0;
    char lock[160];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(hashtext('floorpost ddl %s'))",
             p->schema);
    if (s_exec(p->conn, "BEGIN", &r) != 0 || s_exec(p->conn, lock, &r) != 0 ||
        s_exec(p->conn, p->ddl, &r) != 0 || s_exec(p->conn, "COMMIT", &r) != 0) {
        s_failed(p, s, r, "creating the tables (schema/sql/postgresql.sql)");
        return -1;
    }
    fp_log(FP_LOG_INFO, p->component, "tables created", "schema=%s", p->schema);
    return 0;
}

/* The session's settings. 0, or -1 with *r (see s_exec). */
static int s_settings(pg_t *p, PGconn *c, PGresult **r)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SET statement_timeout = %lld; SET synchronous_commit = %s",
             (long long)p->statement_timeout_ms, p->synchronous_commit ? "on" : "off");
    return s_exec(c, sql, r);
}

/* The session's staging tables (the tables exist). 0, or -1 with *r. */
static int s_staging(pg_t *p, PGconn *c, PGresult **r)
{
    char sql[512];
    for (int k = 0; k < FP_CK_KINDS; k++) {
        snprintf(sql, sizeof sql, "CREATE TEMP TABLE IF NOT EXISTS fp_in_%s (LIKE %s.%s "
                 "INCLUDING DEFAULTS) ON COMMIT DELETE ROWS", s_tables[k], p->qschema,
                 s_tables[k]);
        if (s_exec(c, sql, r) != 0)
            return -1;
    }
    return 0;
}

/* A session: connected, its settings, the tables (created when missing),
   its staging tables, the verdict cursor checked against this cluster, and
   this sink's row of sink_position (*have false: none). 0, or -1 after
   fp_sink_fail, closed. */
static int s_session(pg_t *p, fp_sink_t *s, uint64_t *pos, bool *have)
{
    s_close(p);
    p->done_pos = 0; /* of the session before: a new one trusts only what it reads */
    char err[256], app[FP_SINK_NAME_MAX + 16];
    snprintf(app, sizeof app, "floorpost-%s", p->name);
    p->conn = s_connect(p->conninfo, app, p->connect_timeout_ms, err, sizeof err);
    if (!p->conn)
        return fp_sink_fail(s, FP_SINK_ERR_connect, "%s", err);
    char sql[512];
    PGresult *r = NULL;
    const char *what = "SET statement_timeout, synchronous_commit";
    if (s_settings(p, p->conn, &r) != 0)
        goto fail;
    if (s_ensure_tables(p, s) != 0) {
        s_close(p);
        return -1;
    }
    what = "creating the session's staging tables";
    if (s_staging(p, p->conn, &r) != 0)
        goto fail;
    what = "reading sink_position";
    snprintf(sql, sizeof sql, "SELECT position FROM %s.sink_position WHERE sink = $1",
             p->qschema);
    const char *args[1] = {p->name};
    r = PQexecParams(p->conn, sql, 1, NULL, args, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
        goto fail;
    *have = PQntuples(r) == 1;
    *pos = *have ? strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    /* xid8 never wraps within a cluster: a cursor at or past the next xid
       is another cluster's (a dump restored into a new one, a restored
       backup). Polling from it would miss every verdict below it; from 0
       a verdict reported before may come again (a resubmit of either dead
       letter is still once: it names its verdict_seq). */
    what = "reading the next transaction id";
    r = PQexec(p->conn, "SELECT pg_snapshot_xmax(pg_current_snapshot())");
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        goto fail;
    uint64_t aux[2], next_xid = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    fp_sink_aux(s, aux);
    p->cursor_ahead = aux[0] >= next_xid;
    if (p->cursor_ahead)
        fp_log(FP_LOG_WARN, p->component, "the verdict cursor is ahead of this database (another "
               "cluster, or restored): verdicts are polled from the start; one reported before "
               "may be reported again", "cursor_xid=%" PRIu64 " next_xid=%" PRIu64, aux[0],
               next_xid);
    return 0;
fail:
    s_failed(p, s, r, what);
    s_close(p);
    return -1;
}

/* The further sessions of connections > 1 (settings, staging tables),
   every session nonblocking (s_run_parts). 0, or -1 after fp_sink_fail,
   closed. */
static int s_more_sessions(pg_t *p, fp_sink_t *s)
{
    char err[256], app[FP_SINK_NAME_MAX + 24];
    for (int j = 1; j < p->connections; j++) {
        snprintf(app, sizeof app, "floorpost-%s-%d", p->name, j + 1);
        PGconn *c = s_connect(p->conninfo, app, p->connect_timeout_ms, err, sizeof err);
        if (!c) {
            s_close(p);
            return fp_sink_fail(s, FP_SINK_ERR_connect, "session %d of connections = %lld: %s",
                                j + 1, (long long)p->connections, err);
        }
        p->part[j].conn = c;
        PGresult *r = NULL;
        if (s_settings(p, c, &r) != 0 || s_staging(p, c, &r) != 0) {
            s_failed_on(p, c, s, r, "preparing a further session");
            s_close(p);
            return -1;
        }
    }
    for (int j = 0; j < p->connections; j++) {
        PGconn *c = j ? p->part[j].conn : p->conn;
        if (PQsetnonblocking(c, 1) != 0) {
            s_failed_on(p, c, s, NULL, "PQsetnonblocking");
            s_close(p);
            return -1;
        }
    }
    return 0;
}

static int s_open(void *ctx, fp_sink_t *s)
{
    pg_t *p = ctx;
    uint64_t pos = 0;
    bool have = false;
    if (s_session(p, s, &pos, &have) != 0)
        return -1;
    if (p->connections > 1 && s_more_sessions(p, s) != 0)
        return -1;
    if (have)
        fp_sink_rewind(s, pos);
    /* Accepted is not finished: a pipelined delivery (s_deliver) is
       finished when its commit is read, after the next batch was read. */
    fp_sink_defer(s);
    p->inflight = false;
    p->db_pos = have ? pos : S_NO_POS;
    p->reopen = false;
    p->next_poll_ns = 0;
    /* Split deliveries commit their later parts without the position
       (s_deliver): rows after sink_position may be in already, so the
       first deliveries go through staging, not into a conflict. */
    if (p->connections > 1 && p->staged < S_STAGED_AFTER_OPEN)
        p->staged = S_STAGED_AFTER_OPEN;
    return 0;
}

/* ---- delivery ---- */

/* Sends the rows of kind k + 1 of part c as the data of the COPY the
   server is waiting for: encoded now, while the backend takes the first
   chunks (s_encode_kind), or, on a second attempt (the staging path after
   a conflict), from the buffer the first one filled. On a nonblocking
   session libpq queues what the socket does not take (c->flush: the
   caller flushes it). false when the connection failed (the results then
   say so) or out of memory (the COPY ended with an error; c->oom). */
static bool s_feed(s_part_t *c, int k)
{
    s_out_t *o = &c->rows[k];
    size_t off = 0;
    if (!c->encoded[k]) {
        if (!s_encode_kind(o, c->conn, &off, c->evs, c->nevs, k)) {
            if (o->failed) {
                c->oom = true;
                PQputCopyEnd(c->conn, "floorpost: out of memory");
            }
            return false;
        }
        c->encoded[k] = true;
    }
    while (off < o->len) {
        size_t n = o->len - off < (1u << 20) ? o->len - off : (1u << 20);
        if (PQputCopyData(c->conn, o->p + off, (int)n) != 1)
            return false;
        off += n;
    }
    int rc = PQputCopyEnd(c->conn, NULL);
    c->flush = PQisnonblocking(c->conn);
    return rc == 1;
}

/* Starts one attempt at part c as one transaction in one simple query
   (one round trip and the commit): BEGIN, a COPY per table with rows
   (straight into the table, or staged: into its staging table, then
   INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING), the position
   (last; 0: none, a later part of a split delivery), COMMIT. The server
   asks for each COPY's data in turn (s_result). 0, or what deliver
   returns. */
static int s_attempt_send(pg_t *p, s_part_t *c, fp_sink_t *s, uint64_t last, bool staged)
{
    c->nk = c->fed = 0;
    c->bad = NULL;
    c->merged = 0;
    c->oom = false;
    c->staged = staged;
    c->has_pos = last != 0;
    c->q.len = 0;
    c->q.failed = false;
    s_str(&c->q, "BEGIN; ");
    for (int k = 0; k < FP_CK_KINDS; k++)
        if (c->nrows[k]) {
            c->kinds[c->nk++] = k;
            s_str(&c->q, staged ? p->sql_stage[k] : p->sql_copy[k]);
            s_str(&c->q, "; ");
        }
    for (int i = 0; staged && i < c->nk; i++)
        s_str(&c->q, p->sql_merge[c->kinds[i]]);
    if (last) {
        char pos[320];
        snprintf(pos, sizeof pos, "INSERT INTO %s.sink_position (sink, position, updated_at) "
                 "VALUES ('%s', %" PRIu64 ", now()) ON CONFLICT (sink) DO UPDATE SET position = "
                 "EXCLUDED.position, updated_at = EXCLUDED.updated_at; ",
                 p->qschema, p->name, last);
        s_str(&c->q, pos);
    }
    s_str(&c->q, "COMMIT");
    if (c->q.failed) {
        fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
        return -1;
    }
    if (!PQsendQuery(c->conn, c->q.p))
        return s_failed_on(p, c->conn, s, NULL, "COPY");
    c->active = true;
    c->flush = PQisnonblocking(c->conn);
    return 0;
}

/* One result of part c's attempt. */
static void s_result(s_part_t *c, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN) {
        PQclear(r);
        if (c->fed < c->nk && s_feed(c, c->kinds[c->fed++]))
            return;
        if (!c->oom) /* (s_feed ended the COPY then) */
            PQputCopyEnd(c->conn, "floorpost: no data for this COPY"); /* not ours: abort */
        return;
    }
    if (!c->bad && st != PGRES_COMMAND_OK) {
        c->bad = r; /* the first error; the rest of the query is skipped */
        return;
    }
    if (!c->bad && strncmp(PQcmdStatus(r), "INSERT", 6) == 0)
        c->merged += strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
}

/* Part c's attempt after its last result: 0 with *inserted (rows new in
   the tables), S_CONFLICT (not staged: an event_id is there already;
   rolled back), or what deliver returns. */
static int s_attempt_end(pg_t *p, s_part_t *c, fp_sink_t *s, uint64_t *inserted)
{
    PGresult *bad = c->bad;
    c->bad = NULL;
    c->active = false;
    if (c->oom) {
        PQclear(bad);
        if (PQtransactionStatus(c->conn) != PQTRANS_IDLE)
            PQclear(PQexec(c->conn, "ROLLBACK"));
        fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
        return -1;
    }
    if (bad) {
        const char *state = PQresultErrorField(bad, PG_DIAG_SQLSTATE);
        if (!c->staged && state && strcmp(state, "23505") == 0 &&
            PQstatus(c->conn) == CONNECTION_OK) {
            PQclear(bad);
            PGresult *rb = PQexec(c->conn, "ROLLBACK");
            bool rolled = rb && PQresultStatus(rb) == PGRES_COMMAND_OK;
            PQclear(rb);
            return rolled ? S_CONFLICT : s_failed_on(p, c->conn, s, NULL, "ROLLBACK");
        }
        return s_failed_on(p, c->conn, s, bad, "COPY");
    }
    if (PQtransactionStatus(c->conn) != PQTRANS_IDLE || c->fed != c->nk)
        return s_failed_on(p, c->conn, s, NULL, "COMMIT");
    *inserted = 0;
    for (int i = 0; i < c->nk; i++)
        *inserted += c->nrows[c->kinds[i]];
    if (c->staged) /* the position's "INSERT 0 1" is not a row */
        *inserted = !c->has_pos ? c->merged : c->merged ? c->merged - 1 : 0;
    return 0;
}

/* One whole attempt at part c, waiting for it (PQgetResult flushes a
   nonblocking session's output first). */
static int s_attempt(pg_t *p, s_part_t *c, fp_sink_t *s, uint64_t last, bool staged,
                     uint64_t *inserted)
{
    int rc = s_attempt_send(p, c, s, last, staged);
    if (rc != 0)
        return rc;
    PGresult *r;
    while ((r = PQgetResult(c->conn)) != NULL)
        s_result(c, r);
    return s_attempt_end(p, c, s, inserted);
}

/* The log line of a conflict (part c's events; the next deliveries go
   through staging). */
static void s_log_conflict(const pg_t *p, const s_part_t *c)
{
    fp_log(FP_LOG_WARN, p->component, "an event_id is in the table already: delivering "
           "through the staging tables with ON CONFLICT DO NOTHING", "from=%" PRIu64
           " to=%" PRIu64, c->first_seq, c->last_seq);
}

/* Part c's attempt, and once more through staging after a conflict. */
static int s_part(pg_t *p, s_part_t *c, fp_sink_t *s, uint64_t last, uint64_t *inserted)
{
    int rc = s_attempt(p, c, s, last, p->staged > 0, inserted);
    if (rc == S_CONFLICT) {
        s_log_conflict(p, c);
        p->staged = S_STAGED_AFTER_CONFLICT;
        rc = s_attempt(p, c, s, last, true, inserted);
    }
    return rc;
}

/* The parts 0..np-1 at once, each its own transaction on its own
   (nonblocking) session: sent, then driven with poll(2) until every one
   has its last result (libpq: PQflush, PQconsumeInput, PQisBusy), so the
   backends work in parallel while this thread encodes the next part's
   COPY data. rc[j] as s_attempt_end, ins[j] its rows. A session that
   takes longer than statement_timeout_ms + connect_timeout_ms to answer
   is taken for gone. */
static void s_parts_drive(pg_t *p, fp_sink_t *s, int np, int *rc, uint64_t *ins,
                          int64_t deadline, bool handover);

static void s_run_parts(pg_t *p, fp_sink_t *s, int np, const uint64_t *last, int *rc,
                        uint64_t *ins, bool handover)
{
    bool staged = p->staged > 0;
    for (int j = 0; j < np; j++) {
        rc[j] = s_attempt_send(p, &p->part[j], s, last[j], staged);
        ins[j] = 0;
    }
    p->parts_deadline =
        fp_now_ns() + (p->statement_timeout_ms + p->connect_timeout_ms) * 1000000;
    s_parts_drive(p, s, np, rc, ins, p->parts_deadline, handover);
}

/* s_run_parts' poll loop: until every part has its last result, or with
   handover until every part has its first table's data in the kernel's
   socket buffer (the rest is read and fed by a later call). */
static void s_parts_drive(pg_t *p, fp_sink_t *s, int np, int *rc, uint64_t *ins,
                          int64_t deadline, bool handover)
{
    for (;;) {
        struct pollfd pfd[S_CONN_MAX];
        int map[S_CONN_MAX], n = 0, waiting = 0;
        for (int j = 0; j < np; j++) {
            s_part_t *c = &p->part[j];
            if (!c->active)
                continue;
            /* what is there already, without waiting */
            if (c->flush) {
                int f = PQflush(c->conn);
                c->flush = f == 1;
                if (f < 0) {
                    c->active = false;
                    rc[j] = s_failed_on(p, c->conn, s, NULL, "COPY");
                    continue;
                }
            }
            if (PQconsumeInput(c->conn) != 1) {
                c->active = false;
                PQclear(c->bad);
                c->bad = NULL;
                rc[j] = s_failed_on(p, c->conn, s, NULL, "COPY");
                continue;
            }
            bool done = false;
            while (!PQisBusy(c->conn)) {
                PGresult *r = PQgetResult(c->conn);
                if (!r) {
                    done = true;
                    break;
                }
                s_result(c, r);
                if (c->flush) /* COPY data queued: send it before waiting */
                    break;
            }
            if (done) {
                rc[j] = s_attempt_end(p, c, s, &ins[j]);
                continue;
            }
            pfd[n] = (struct pollfd){PQsocket(c->conn), (short)(POLLIN | (c->flush ? POLLOUT : 0)),
                                     0};
            map[n++] = j;
            if (!handover || c->fed == 0 || c->flush)
                waiting++;
        }
        if (n == 0 || waiting == 0)
            return;
        int64_t left = deadline - fp_now_ns();
        if (left <= 0) {
            for (int i = 0; i < n; i++) {
                s_part_t *c = &p->part[map[i]];
                c->active = false;
                PQclear(c->bad);
                c->bad = NULL;
                fp_sink_fail(s, FP_SINK_ERR_timeout, "no answer within statement_timeout_ms + "
                             "connect_timeout_ms: the session is taken for gone");
                PQfinish(c->conn); /* a reopen connects again */
                c->conn = NULL;
                if (map[i] == 0)
                    p->conn = NULL;
                rc[map[i]] = FP_READER_REOPEN;
            }
            return;
        }
        int pr = poll(pfd, (nfds_t)n, (int)(left / 1000000) + 1);
        if (pr < 0 && errno != EINTR) {
            fp_sink_fail(s, FP_SINK_ERR_io, "poll: %s", strerror(errno));
            for (int i = 0; i < n; i++) {
                s_part_t *c = &p->part[map[i]];
                c->active = false;
                PQclear(c->bad);
                c->bad = NULL;
                rc[map[i]] = FP_READER_REOPEN;
            }
            return;
        }
    }
}

/* A conflict in a split delivery: the parts that hit one again through
   staging, one after another (rare: only rows someone else wrote). */
static void s_parts_conflicts(pg_t *p, fp_sink_t *s, int np, const uint64_t *last, int *rc,
                              uint64_t *ins)
{
    for (int j = 0; j < np; j++)
        if (rc[j] == S_CONFLICT) {
            s_log_conflict(p, &p->part[j]);
            p->staged = S_STAGED_AFTER_CONFLICT;
            rc[j] = s_attempt(p, &p->part[j], s, last[j], true, &ins[j]);
        }
}

static void s_part_set(s_part_t *c, const fp_sink_event_t *evs, size_t n)
{
    s_count(c->nrows, evs, n);
    c->evs = evs;
    c->nevs = n;
    c->first_seq = n ? evs[0].raw->global_seq : 0;
    c->last_seq = n ? evs[n - 1].raw->global_seq : 0;
    c->oom = false;
    for (int k = 0; k < FP_CK_KINDS; k++)
        c->encoded[k] = false;
}

/* A split delivery leaves sink_position at the end of its first part
   (s_deliver); once every part is in, the position may say so: when idle
   and at close, one small transaction. A failure changes nothing (the
   position is only behind: what comes again goes through staging). */
static void s_pos_catch_up(pg_t *p)
{
    if (!p->done_pos || p->reopen || (p->db_pos != S_NO_POS && p->done_pos <= p->db_pos) ||
        !p->conn ||
        PQstatus(p->conn) != CONNECTION_OK || PQtransactionStatus(p->conn) != PQTRANS_IDLE)
        return;
    char sql[640];
    snprintf(sql, sizeof sql, "INSERT INTO %s.sink_position (sink, position, updated_at) VALUES "
             "('%s', %" PRIu64 ", now()) ON CONFLICT (sink) DO UPDATE SET position = "
             "GREATEST(%s.sink_position.position, EXCLUDED.position), updated_at = "
             "EXCLUDED.updated_at", p->qschema, p->name, p->done_pos, p->qschema);
    PGresult *r = NULL;
    if (s_exec(p->conn, sql, &r) == 0)
        p->db_pos = p->done_pos;
    PQclear(r);
}

/* Every table's COPY data of part c encoded now (its events are gone
   once deliver returns). 0, or -1 out of memory. */
static int s_encode_all(s_part_t *c)
{
    for (int k = 0; k < FP_CK_KINDS; k++) {
        size_t off = 0;
        if (!c->nrows[k])
            continue;
        if (!s_encode_kind(&c->rows[k], NULL, &off, c->evs, c->nevs, k))
            return -1;
        c->encoded[k] = true;
    }
    return 0;
}

/* A split delivery's parts 0..np-1 after s_run_parts: conflicts once more
   through staging, the rows counted, the parts committed from the first
   on finished (*done: their events). 0 when every part is in; else
   FP_READER_REOPEN (a session is gone) or -1, with the failure recorded. */
static int s_split_end(pg_t *p, fp_sink_t *s, int np, int before, size_t *done)
{
    int *rc = p->parts_rc;
    uint64_t *ins = p->parts_ins;
    s_parts_conflicts(p, s, np, p->parts_pos, rc, ins);
    uint64_t inserted = 0, done_last = 0;
    int first_bad = -1;
    *done = 0;
    for (int j = 0; j < np; j++) {
        inserted += rc[j] == 0 ? ins[j] : 0;
        if (first_bad < 0 && rc[j] != 0)
            first_bad = j;
        if (first_bad < 0) {
            *done += p->part[j].last_seq - p->part[j].first_seq + 1;
            done_last = p->part[j].last_seq;
        }
    }
    if (rc[0] == 0)
        p->db_pos = p->parts_pos[0];
    fp_sink_count_writes(s, inserted);
    if (done_last)
        fp_sink_finished(s, done_last);
    if (first_bad < 0) {
        if (before > 0 && p->staged == before)
            p->staged--;
        p->done_pos = done_last;
        return 0;
    }
    /* A later part may be in: what comes again goes through staging. */
    if (p->staged < S_STAGED_AFTER_OPEN)
        p->staged = S_STAGED_AFTER_OPEN;
    for (int j = first_bad; j < np; j++)
        if (rc[j] == FP_READER_REOPEN)
            return FP_READER_REOPEN;
    return -1;
}

/* The pipelined delivery's result (it feeds the COPY data of its later
   tables as the server asks for them): committed, it is finished; a
   conflict makes the next deliveries go through staging (it comes again
   from the finished position: its events are gone from the reader's
   buffer). 0, or what deliver returns. */
static int s_inflight_end(pg_t *p, fp_sink_t *s)
{
    if (!p->inflight)
        return 0;
    p->inflight = false;
    if (p->inflight_np) {
        int np = p->inflight_np;
        size_t done = 0;
        p->inflight_np = 0;
        s_parts_drive(p, s, np, p->parts_rc, p->parts_ins, p->parts_deadline, false);
        return s_split_end(p, s, np, p->inflight_before, &done);
    }
    s_part_t *c = &p->part[0];
    PGresult *r;
    while ((r = PQgetResult(c->conn)) != NULL)
        s_result(c, r);
    uint64_t inserted = 0;
    int rc = s_attempt_end(p, c, s, &inserted);
    if (rc == S_CONFLICT) {
        s_log_conflict(p, c);
        p->staged = S_STAGED_AFTER_CONFLICT;
        return fp_sink_fail(s, FP_SINK_ERR_server, "an event_id is in the table already: "
                            "offered again through the staging tables");
    }
    if (rc != 0)
        return rc;
    if (p->inflight_before > 0 && p->staged == p->inflight_before)
        p->staged--;
    p->db_pos = c->last_seq;
    fp_sink_count_writes(s, inserted);
    fp_sink_finished(s, c->last_seq);
    return 0;
}

/* One session, more committed events waiting: part c's transaction is
   sent with every table's COPY data encoded first (the events are gone
   once deliver returns) and the first table's handed over; deliver
   returns without waiting for the commit, so the reader reads and decodes
   the next batch while the backend inserts, and the next deliver (or
   idle, or close) reads the result (s_inflight_end). The position is
   still committed with the rows in the one transaction. 0, or what
   deliver returns. */
static int s_pipelined(pg_t *p, s_part_t *c, fp_sink_t *s, const fp_sink_event_t *evs, size_t n)
{
    s_part_set(c, evs, n);
    if (s_encode_all(c) != 0) {
        c->evs = NULL;
        return fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
    }
    uint64_t last = evs[n - 1].raw->global_seq;
    int rc = s_attempt_send(p, c, s, last, false);
    if (rc != 0)
        return rc;
    p->inflight = true;
    p->inflight_before = p->staged;
    p->inflight_sink = s;
    PGresult *r = NULL;
    while (c->fed == 0 && (r = PQgetResult(c->conn)) != NULL)
        s_result(c, r); /* BEGIN, then the first COPY: fed */
    c->evs = NULL;
    c->nevs = 0;
    if (r == NULL) /* the query ended already (an error) */
        return s_inflight_end(p, s);
    return 0;
}

static int s_deliver(void *ctx, fp_sink_t *s, const fp_sink_event_t *evs, size_t n)
{
    pg_t *p = ctx;
    if (p->inflight) {
        int rc = s_inflight_end(p, s);
        if (rc != 0)
            return rc; /* offered again from the finished position */
    }
    if (!p->conn || PQstatus(p->conn) != CONNECTION_OK) {
        fp_sink_fail(s, FP_SINK_ERR_connect, "not connected");
        return FP_READER_REOPEN;
    }
    for (int j = 1; j < p->connections; j++)
        if (!p->part[j].conn || PQstatus(p->part[j].conn) != CONNECTION_OK) {
            fp_sink_fail(s, FP_SINK_ERR_connect, "session %d of connections = %lld not "
                         "connected", j + 1, (long long)p->connections);
            return FP_READER_REOPEN;
        }
    if (p->reopen) {
        p->reopen = false;
        p->done_pos = 0;
        fp_sink_fail(s, FP_SINK_ERR_connect, "sink_position changed while the sink was idle "
                     "(a restored database?): reopening to go on from it");
        return FP_READER_REOPEN;
    }
    p->part[0].conn = p->conn;
    /* Straight COPY into the tables: the position makes a repeat rare (it
       is committed with the rows and read back at open), so an event_id
       already there means something else wrote it (another instance, a
       reset position): then this and the next deliveries go through the
       staging tables, where ON CONFLICT DO NOTHING skips it.
       With connections > 1 a delivery of at least 2 x S_PART_MIN events
       is split into contiguous parts, one transaction each on its own
       session, at once (s_run_parts). Only the first part writes the
       position (its last event): every event before the delivery is
       committed, so that is always a prefix of what is in the tables. A
       later part commits without it; its rows may then be in while the
       position is before them (its part failed after a later one
       committed, or a crash between the commits), so they come again and
       go through staging (S_STAGED_AFTER_OPEN), never twice into a table.
       deliver returns the parts committed from the first on. */
    int np = (int)(n / S_PART_MIN);
    if (np > p->connections)
        np = (int)p->connections;
    if (np < 2) {
        s_part_t *c = &p->part[0];
        if (p->connections == 1 && p->staged == 0 &&
            evs[n - 1].raw->global_seq < fp_sink_committed(s)) {
            int rc = s_pipelined(p, c, s, evs, n);
            return rc != 0 ? rc : (int)n;
        }
        s_part_set(c, evs, n);
        uint64_t inserted = 0, last = evs[n - 1].raw->global_seq;
        int before = p->staged;
        int rc = s_part(p, c, s, last, &inserted);
        if (rc == 0 && before > 0 && p->staged == before)
            p->staged--;
        c->evs = NULL;
        c->nevs = 0;
        if (rc != 0)
            return rc;
        p->db_pos = last;
        fp_sink_count_writes(s, inserted);
        fp_sink_finished(s, last);
        return (int)n;
    }
    uint64_t *last = p->parts_pos;
    size_t at = 0;
    for (int j = 0; j < np; j++) {
        size_t len = (n - at) / (size_t)(np - j);
        s_part_set(&p->part[j], evs + at, len);
        at += len;
        last[j] = j == 0 ? evs[at - 1].raw->global_seq : 0;
    }
    int before = p->staged;
    if (p->staged == 0 && evs[n - 1].raw->global_seq < fp_sink_committed(s)) {
        /* A backlog: pipelined like one session's (s_pipelined), the
           parts' results read at the next deliver (s_inflight_end). */
        for (int j = 0; j < np; j++)
            if (s_encode_all(&p->part[j]) != 0) {
                for (int i = 0; i < np; i++)
                    p->part[i].evs = NULL;
                return fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
            }
        s_run_parts(p, s, np, last, p->parts_rc, p->parts_ins, true);
        for (int j = 0; j < np; j++) {
            p->part[j].evs = NULL;
            p->part[j].nevs = 0;
        }
        p->inflight = true;
        p->inflight_np = np;
        p->inflight_before = before;
        p->inflight_sink = s;
        return (int)n;
    }
    s_run_parts(p, s, np, last, p->parts_rc, p->parts_ins, false);
    size_t done = 0;
    int rc = s_split_end(p, s, np, before, &done); /* (a conflict encodes from evs) */
    for (int j = 0; j < np; j++) {
        p->part[j].evs = NULL;
        p->part[j].nevs = 0;
    }
    if (rc == 0)
        return (int)n;
    return rc == FP_READER_REOPEN && done == 0 ? FP_READER_REOPEN : (int)done;
}

/* ---- the ERP's verdicts ---- */

static uint64_t s_u64_of(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoull(PQgetvalue(r, row, col), NULL, 10);
}

static int64_t s_i64_of(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* "1.250" / "-0.005" (numeric(20,3)'s text) -> thousandths, exactly. */
static int64_t s_thousandths(const char *t)
{
    bool neg = *t == '-';
    if (neg || *t == '+')
        t++;
    int64_t v = 0;
    for (; *t >= '0' && *t <= '9'; t++)
        v = v * 10 + (*t - '0');
    int digits = 0;
    if (*t == '.')
        for (t++; *t >= '0' && *t <= '9' && digits < 3; t++, digits++)
            v = v * 10 + (*t - '0');
    for (; digits < 3; digits++)
        v *= 10;
    return neg ? -v : v;
}

/* Row i of a poll: the Checkpoint rebuilt, its dead letter, the cursor.
   0, or -1 when emit's pipe refused it (the rest waits for the next poll). */
static int s_verdict(pg_t *p, fp_sink_t *s, const PGresult *r, int i)
{
#define V(col) PQgetvalue(r, i, col)
    fp_checkpoint_t ck = {0};
    ck.kind = (int)s_i64_of(r, i, 0);
    ck.event_id = V(5);
    ck.global_seq = s_u64_of(r, i, 6);
    ck.instance = V(7);
    ck.plant = V(8);
    ck.line = V(9);
    ck.order = V(10);
    ck.operation = V(11);
    ck.first_time_ns = s_i64_of(r, i, 13) * 1000;
    ck.last_time_ns = s_i64_of(r, i, 14) * 1000;
    ck.record_count = s_u64_of(r, i, 15);
    ck.late = V(16)[0] == 't';
    for (const char *l = V(17); *l && ck.nlineage < FP_LINEAGE_MAX;) {
        unsigned long long a, b, c, d;
        int used = 0;
        if (sscanf(l, "%llu %llu %llu %llu%n", &a, &b, &c, &d, &used) != 4)
            break;
        ck.lineage[ck.nlineage++] = (fp_seq_range_t){a, b, c, d};
        l += used;
        if (*l == ',')
            l++;
    }
    ck.lineage_truncated = V(18)[0] == 't';
    ck.checkpoint_no = s_u64_of(r, i, 19);
    ck.stream_seq = s_u64_of(r, i, 20);
    if (ck.kind == FP_CK_CONSUMPTION) {
        ck.material = V(22);
        ck.lot = V(23);
        ck.unit = V(24);
        ck.quantity = s_thousandths(V(25));
    } else if (ck.kind == FP_CK_COMPLETION) {
        ck.yield = s_i64_of(r, i, 25);
        ck.scrap = s_i64_of(r, i, 26);
        ck.final = V(27)[0] == 't';
    } else {
        ck.reason = V(22);
        ck.parts = s_i64_of(r, i, 25);
    }
    if (!PQgetisnull(r, i, 28)) {
        ck.posting_date = V(12);
        ck.period = V(28);
        ck.period_start_ns = s_i64_of(r, i, 29) * 1000;
        ck.period_end_ns = s_i64_of(r, i, 30) * 1000;
    }
    ck.backfill = V(31)[0] == 't';
    if (!PQgetisnull(r, i, 32)) {
        ck.original_posting_date = V(32);
        ck.original_period_start_ns = s_i64_of(r, i, 33) * 1000;
    }
    if (!p->codec && !(p->codec = fp_codec_new()))
        return -1;
    const void *bytes = NULL;
    size_t len = 0;
    if (fp_codec_checkpoint_encode(p->codec, &ck, &bytes, &len) != FP_CODEC_OK)
        bytes = "", len = 0;
    const char *topic = V(21);
    fp_reader_event_t raw = {.global_seq = ck.global_seq, .topic = topic, .tlen = strlen(topic),
                             .ev = bytes, .evlen = len};
    fp_sink_event_t ev = {.raw = &raw, .ck = ck};
    snprintf(ev.posting_date, sizeof ev.posting_date, "%s", V(12));
    const char *table = s_tables[ck.kind >= 1 && ck.kind <= FP_CK_KINDS ? ck.kind - 1 : 0];
    uint64_t aux[2] = {s_u64_of(r, i, 1), s_u64_of(r, i, 2)};
    fp_dl_fields_t f = {.jn = 0};
    fp_dl_fields_str(&f, "table", "table", table, 16);
    fp_dl_fields_u64(&f, "verdict_seq", "verdict_seq", aux[1]);
    fp_dl_fields_u64(&f, "verdict_xid", NULL, aux[0]);
    fp_dl_fields_str(&f, "error_code", "error_code", V(3), 64);
    fp_dl_fields_str(&f, "error_text", "error_text", V(4), 120);
    if (fp_sink_dead_letter(s, aux, &ev, &f) != 0)
        return -1;
    char qid[160], qpl[80], qor[80], qop[80], qcode[80], qtext[300];
    fp_log_quote(qid, sizeof qid, ck.event_id, 128);
    fp_log_quote(qpl, sizeof qpl, ck.plant, 64);
    fp_log_quote(qor, sizeof qor, ck.order, 64);
    fp_log_quote(qop, sizeof qop, ck.operation, 64);
    fp_log_quote(qcode, sizeof qcode, V(3), 64);
    fp_log_quote(qtext, sizeof qtext, V(4), 200);
    fp_log(FP_LOG_WARN, p->component, "the ERP rejected a posting: dead letter erp_rejected",
           "table=%s event_id=%s plant=%s order=%s operation=%s error_code=%s error_text=%s "
           "verdict_seq=%" PRIu64, table, qid, qpl, qor, qop, qcode, qtext, aux[1]);
    return 0;
#undef V
}

static void s_idle(void *ctx, fp_sink_t *s)
{
    pg_t *p = ctx;
    int64_t now = fp_now_ns();
    if (p->inflight && s_inflight_end(p, s) != 0) {
        fp_sink_redo(s); /* offered again from the finished position, after a reopen */
        return;
    }
    s_pos_catch_up(p);
    if (p->verdict_poll_ms == 0 || now < p->next_poll_ns)
        return;
    p->next_poll_ns = now + p->verdict_poll_ms * 1000000;
    if (!p->conn || PQstatus(p->conn) != CONNECTION_OK) {
        /* Lost while idle (a database restart in a quiet shift): a new
           session for the verdicts. The deliveries go on from it only if
           sink_position is what this sink last saw; otherwise the next
           delivery reopens (and rewinds). A failure waits for the next
           poll. */
        uint64_t pos = 0;
        bool have = false;
        if (s_session(p, s, &pos, &have) != 0)
            return;
        if ((have ? pos : S_NO_POS) != p->db_pos)
            p->reopen = true;
        fp_log(FP_LOG_INFO, p->component, "reconnected while idle", "position_changed=%s",
               p->reopen ? "yes" : "no");
    }
    uint64_t aux[2];
    fp_sink_aux(s, aux);
    if (p->cursor_ahead)
        aux[0] = aux[1] = 0;
    char a0[24], a1[24];
    snprintf(a0, sizeof a0, "%" PRIu64, aux[0]);
    snprintf(a1, sizeof a1, "%" PRIu64, aux[1]);
    const char *args[2] = {a0, a1};
    PGresult *r = PQexecParams(p->conn, p->sql_poll, 2, NULL, args, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        s_failed(p, s, r, "polling the verdicts");
        return;
    }
    int rows = PQntuples(r), done = 0;
    while (done < rows && s_verdict(p, s, r, done) == 0) {
        done++;
        p->cursor_ahead = false; /* the cursor is this cluster's now */
    }
    PQclear(r);
    if (done == S_POLL_LIMIT)
        p->next_poll_ns = now; /* more waiting: the next idle call */
}

const fp_sink_type_t fp_sink_postgresql = {"postgresql", s_new,   s_open, s_deliver,
                                           s_idle,       s_close, s_free};

/* ---- the COPY data, for the tests (sink_pg.h) ---- */

int fp_sink_pg_copy_data(const fp_sink_event_t *evs, size_t n, int kind, char **out,
                         size_t *len)
{
    uint64_t nrows[FP_CK_KINDS];
    s_count(nrows, evs, n);
    *out = NULL;
    *len = 0;
    if (kind < 1 || kind > FP_CK_KINDS || nrows[kind - 1] == 0)
        return 0;
    s_out_t o = {0};
    size_t sent;
    if (!s_encode_kind(&o, NULL, &sent, evs, n, kind - 1)) {
        free(o.p);
        return -1;
    }
    *out = o.p;
    *len = o.len;
    return 0;
}

/* ---- resubmission (sink_pg.h) ---- */

int fp_sink_pg_resubmit(const fp_config_t *cfg, const char *sink_name, const char *table,
                        const char *event_id, uint64_t verdict_seq, char *err, size_t errlen)
{
    const fp_sink_config_t *sc = NULL;
    for (int i = 0; i < cfg->nsinks; i++)
        if (strcmp(cfg->sinks[i].name, sink_name) == 0)
            sc = &cfg->sinks[i];
    if (!sc) {
        snprintf(err, errlen, "no [sink %s] in the configuration", sink_name);
        return -1;
    }
    const char *type = fp_sink_config_get(sc, "type", NULL);
    if (!type || strcmp(type, "postgresql") != 0) {
        snprintf(err, errlen, "[sink %s] is not of type postgresql", sink_name);
        return -1;
    }
    const char *conninfo = fp_sink_config_get(sc, "conninfo", NULL);
    const char *schema = fp_sink_config_get(sc, "schema", NULL);
    const char *cto = fp_sink_config_get(sc, "connect_timeout_ms", NULL);
    const char *sto = fp_sink_config_get(sc, "statement_timeout_ms", NULL);
    if (!schema)
        schema = "floorpost";
    char why[256];
    if (!conninfo || s_conninfo_check(conninfo, why, sizeof why) != 0 || !s_schema_ok(schema)) {
        snprintf(err, errlen, "[sink %s]: bad conninfo or schema (floorpost run --check says why)",
                 sink_name);
        return -1;
    }
    int k = 0;
    while (k < FP_CK_KINDS && strcmp(s_tables[k], table) != 0)
        k++;
    if (k == FP_CK_KINDS) {
        snprintf(err, errlen, "table '%.40s': not one of consumption, completion, scrap", table);
        return -1;
    }
    int64_t timeout = cto ? strtoll(cto, NULL, 10) : 10000;
    PGconn *c = s_connect(conninfo, "floorpost-deadletters", timeout > 0 ? timeout : 10000, why,
                          sizeof why);
    if (!c) {
        snprintf(err, errlen, "[sink %s]: connect: %s", sink_name, why);
        return -1;
    }
    char sql[512];
    snprintf(sql, sizeof sql, "SET statement_timeout = %lld", sto ? strtoll(sto, NULL, 10) : 30000);
    PGresult *r = PQexec(c, sql);
    PQclear(r);
    snprintf(sql, sizeof sql,
             "UPDATE \"%s\".%s SET process_status = 'PENDING', error_code = NULL, "
             "error_text = NULL, processed_at = NULL WHERE event_id = $1 AND "
             "process_status = 'ERROR' AND verdict_seq = $2",
             schema, table);
    char vs[24];
    snprintf(vs, sizeof vs, "%" PRIu64, verdict_seq);
    const char *args[2] = {event_id, vs};
    r = PQexecParams(c, sql, 2, NULL, args, NULL, NULL, 0);
    int rc;
    if (r && PQresultStatus(r) == PGRES_COMMAND_OK) {
        rc = atoi(PQcmdTuples(r));
    } else {
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        s_errtext(c, r, why, sizeof why);
        snprintf(err, errlen, "[sink %s]: UPDATE %s.%s: SQLSTATE %s: %s", sink_name, schema, table,
                 state ? state : "?", why);
        rc = -1;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}
