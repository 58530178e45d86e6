"""The PostgreSQL sink's period columns (issues 10 and 11) against a real
PostgreSQL 15 (pg.py):

- pg_period_backfill_closed_columns_exact: [aggregate] period = shift with
  closed_before; live records of a shift, then of the next shift (the
  first is flushed), then more of the first shift (backfill) and records of
  a closed day (re-posted to the first open period). Every row's period,
  period_start, period_end, backfill, original_posting_date,
  original_period_start and posting_date equal its checkpoint's fields in
  the outbox, exactly; each case occurs.
- pg_old_tables_upgraded_in_place: tables made by the DDL before the period
  columns (the old column set, with a row in them) are upgraded at sink
  open (ALTER TABLE ... ADD COLUMN IF NOT EXISTS) and get the new rows with
  their periods; the old row keeps NULL periods and backfill false.
"""
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import zmq

from fp import MATERIAL, PART, SCRAP, Floorpost, eq, extra_test, rec, replay_all
from pg import PgServer
from t_periods import NS, AckedSender, configure
from t_pg import TABLES, db_ids, pg_sink

CTX = zmq.Context.instance()
ZONE = ZoneInfo("Europe/Berlin")


def at(day, hh, mm=0):
    return int(datetime(2026, 11, day, hh, mm, tzinfo=ZONE).timestamp()) * NS


def ts(ns):
    """A period time as psycopg2 returns a timestamptz (None for none)."""
    return datetime.fromtimestamp(ns / NS, timezone.utc) if ns else None


def period_rows(pg):
    """{event_id: (posting_date, period, period_start, period_end, backfill,
    original_posting_date, original_period_start)} of every row."""
    out = {}
    for t in TABLES:
        for r in pg.sql("SELECT event_id, posting_date::text, period, period_start, period_end, "
                        "backfill, original_posting_date::text, original_period_start "
                        "FROM floorpost.%s" % t):
            out[r[0]] = tuple(r[1:])
    return out


def want_row(e):
    has = bool(e["period"])
    return (e["posting_date"], e["period"] if has else None,
            ts(e["period_start_ns"]) if has else None, ts(e["period_end_ns"]) if has else None,
            bool(e["backfill"]), e["original_posting_date"] or None,
            ts(e["original_period_start_ns"]) if e["original_posting_date"] else None)


def wait_rows(pg, pred, what, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if pred(period_rows(pg)):
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def ops_records(seq, t_ns, tag="L"):
    """Two operations' records (orders TAG-1 and TAG-2) at event time t_ns."""
    out = []
    for i, op in enumerate((("1000", tag + "-1", "0010"), ("1000", tag + "-2", "0020"))):
        kw = dict(plant=op[0], order=op[1], op=op[2])
        seq[0] += 1
        out.append(rec(seq[0], PART, qty=5 + i, time_ns=t_ns, **kw))
        seq[0] += 1
        out.append(rec(seq[0], SCRAP, qty=1, reason="DENT", time_ns=t_ns + NS, **kw))
        seq[0] += 1
        out.append(rec(seq[0], MATERIAL, qty=1250, material="STEEL", lot="LOT-1", unit="KG",
                       time_ns=t_ns + 2 * NS, **kw))
    return out


@extra_test
def pg_period_backfill_closed_columns_exact():
    with PgServer() as pg:
        fp = Floorpost(sinks=pg_sink(pg), posting_interval_ms=200, round_interval_ms=20,
                       time_zone="Europe/Berlin")
        configure(fp, {"period": "shift", "shifts": "06:00,14:00,22:00",
                       "closed_before": "2026-11-10"})
        fp.start()
        sender = AckedSender(fp.endpoints["router"])
        seq = [0]  # source 900's; the others start at 1
        sender.send(900, 1, ops_records(seq, at(20, 7)))       # shift 06-14, live
        sender.send(900, 1, ops_records(seq, at(20, 15)))      # shift 14-22: 06-14 is flushed
        start2 = ts(at(20, 14))
        wait_rows(pg, lambda rows: any(r[2] == start2 for r in rows.values()),
                  "rows of the 14:00 shift")
        time.sleep(0.6)  # a few more posting flushes at the 15:00 watermark
        sender.send(901, 1, ops_records([0], at(20, 9), tag="B"))   # the flushed shift
        sender.send(902, 1, ops_records([0], at(5, 10), tag="C"))   # a closed day
        rc, _ = fp.stop()
        eq(rc, 0, "drain")
        fp.start()
        events, _, last = replay_all(CTX, fp.endpoints["replay"])
        rc, _ = fp.stop()
        eq(rc, 0, "stop after replay")
        rows = period_rows(pg)
        eq(sorted(rows), sorted(e["event_id"] for e in events), "one row per checkpoint")
        for e in events:
            eq(rows[e["event_id"]], want_row(e), "period columns of %s (%s)" % (
                e["event_id"], e["kind"]))
        eq(len(db_ids(pg)), len(events), "no event_id twice")
        # each case is there, with the values the periods have
        by_line = {}
        for e in events:
            by_line.setdefault(e["order"][0], []).append(rows[e["event_id"]])
        live = by_line["L"]
        eq({(r[0], r[1], r[4]) for r in live},
           {("2026-11-20", "shift-1", False), ("2026-11-20", "shift-2", False)},
           "live rows: the morning and the afternoon shift, no backfill")
        eq({(r[2], r[3]) for r in live if r[1] == "shift-1"}, {(ts(at(20, 6)), ts(at(20, 14)))},
           "shift-1's start and end")
        eq({(r[0], r[1], r[2], r[4], r[5]) for r in by_line["B"]},
           {("2026-11-20", "shift-1", ts(at(20, 6)), True, None)},
           "records of the flushed shift: backfill rows of that shift")
        closed = by_line["C"]
        eq({(r[4], r[5], r[6]) for r in closed}, {(True, "2026-11-05", ts(at(5, 6)))},
           "closed day: backfill, its own date and shift start kept")
        eq({r[0] for r in closed}, {"2026-11-10"}, "closed day posted on the first open date")
        eq(pg.sql("SELECT position FROM floorpost.sink_position WHERE sink = 'erp'"), [(last,)],
           "sink_position")


# The column set of the DDL before the period columns (schema/sql/postgresql.sql
# at b5af297): what an older floorpost made.
OLD_COMMON = """
    event_id text COLLATE "C" NOT NULL UNIQUE, global_seq bigint NOT NULL, instance text NOT NULL,
    plant text NOT NULL, line text, order_no text NOT NULL, operation text NOT NULL,
    posting_date date NOT NULL, first_event_at timestamptz NOT NULL,
    last_event_at timestamptz NOT NULL, record_count bigint NOT NULL, late boolean NOT NULL,
    lineage jsonb NOT NULL, lineage_truncated boolean NOT NULL DEFAULT false,
    checkpoint_no bigint NOT NULL, stream_seq bigint NOT NULL, topic text NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    process_status text NOT NULL DEFAULT 'PENDING'
        CHECK (process_status IN ('PENDING', 'PROCESSING', 'DONE', 'ERROR')),
    error_code text, error_text text, processed_at timestamptz, verdict_seq bigint,
    verdict_xid xid8"""
OLD_DDL = """
CREATE SCHEMA floorpost;
CREATE SEQUENCE floorpost.verdict_seq AS bigint;
CREATE TABLE floorpost.posting_template (%s);
CREATE TABLE floorpost.consumption (LIKE floorpost.posting_template INCLUDING ALL,
    material text, lot text, unit text, quantity numeric(20,3) NOT NULL);
CREATE TABLE floorpost.completion (LIKE floorpost.posting_template INCLUDING ALL,
    yield_qty bigint NOT NULL, scrap_qty bigint NOT NULL, final boolean NOT NULL);
CREATE TABLE floorpost.scrap (LIKE floorpost.posting_template INCLUDING ALL,
    reason text, parts bigint NOT NULL);
CREATE TABLE floorpost.sink_position (sink text PRIMARY KEY, position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO floorpost.completion (event_id, global_seq, instance, plant, order_no, operation,
    posting_date, first_event_at, last_event_at, record_count, late, lineage, checkpoint_no,
    stream_seq, topic, yield_qty, scrap_qty, final)
VALUES ('old-1', 0, 'old', '1000', 'ORD-0', '0010', '2026-11-01', now(), now(), 1, false,
    '[]', 1, 1, 'completion/1000', 3, 0, false);
""" % OLD_COMMON


@extra_test
def pg_old_tables_upgraded_in_place():
    with PgServer() as pg:
        with pg.connect() as c:
            c.cursor().execute(OLD_DDL)
        eq(pg.sql("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                  "'floorpost' AND column_name = 'backfill'"), [(0,)], "the old column set")
        fp = Floorpost(sinks=pg_sink(pg), posting_interval_ms=200, round_interval_ms=20,
                       time_zone="Europe/Berlin")
        configure(fp, {"period": "day"})
        fp.start()
        sender = AckedSender(fp.endpoints["router"])
        sender.send(910, 1, ops_records([0], at(20, 7)))
        rc, _ = fp.stop()
        eq(rc, 0, "drain")
        for t in ("posting_template",) + TABLES:
            eq(sorted(r[0] for r in pg.sql(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'floorpost' AND table_name = %s AND column_name IN ('period', 'period_start', "
                "'period_end', 'backfill', 'original_posting_date', 'original_period_start')",
                (t,))), sorted(["period", "period_start", "period_end", "backfill",
                                "original_posting_date", "original_period_start"]),
               "new columns of " + t)
        rows = period_rows(pg)
        eq(rows.pop("old-1"), ("2026-11-01", None, None, None, False, None, None),
           "the old row: no period, backfill false")
        eq(len(rows), 6, "two completions, two scraps, two consumptions delivered")
        eq(set(rows.values()), {("2026-11-20", "day", ts(at(20, 0)), ts(at(21, 0)), False, None,
                                 None)}, "the new rows' period columns")
        assert 'msg="tables created"' in fp.log(), "the DDL was applied at open"
