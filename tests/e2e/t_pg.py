"""The PostgreSQL sink (`type = postgresql`) against a real PostgreSQL 15
started by each test (pg.py): totals by SQL equal crashgen's truth through
duplicates, producer restarts, SIGKILLs of floorpost and a 30 s database
outage; the ERP import job's verdicts come back as dead letters exactly once
and are resubmitted exactly once; bad and unreachable databases; deliveries
split over several sessions (connections = N) exact through SIGKILLs and a
first part that fails after a later one committed."""
import json
import random
import subprocess
import time

import zmq

from fp import (COMPLETED, FLOORPOST, PART, Floorpost, Producer, Subscriber, crashgen, eq, extra_test,
                free_port, nonzero, parse_metrics, read_truth, rec, replay_all,
                scrape, totals)
from pg import PgServer

CTX = zmq.Context.instance()
TABLES = ("consumption", "completion", "scrap")


def metric(port, name):
    status, text = scrape(port)
    eq(status, 200, "GET /metrics")
    return parse_metrics(text)[name]


def sink_status(port, name="erp"):
    status, text = scrape(port, "/sinks")
    eq(status, 200, "GET /sinks")
    for s in json.loads(text):
        if s["name"] == name:
            return s
    raise AssertionError("no sink " + name)


def pg_sink(pg, **extra):
    opts = dict(type="postgresql", conninfo=pg.conninfo, batch_max=2000, retry_ms=100,
                retry_max_ms=1000, breaker_open_ms=1000)
    opts.update(extra)
    return {"erp": opts}


def pg_totals(pg, schema="floorpost"):
    """What the ERP would book: sums per key by SQL, in read_truth's shape."""
    comp = {tuple(r[:3]): [int(r[3]), int(r[4])] for r in pg.sql(
        "SELECT plant, order_no, operation, sum(yield_qty), sum(scrap_qty) FROM %s.completion "
        "GROUP BY 1, 2, 3" % schema)}
    cons = {}
    for r in pg.sql("SELECT plant, order_no, operation, coalesce(material, ''), coalesce(lot, ''), "
                    "coalesce(unit, ''), sum(quantity) FROM %s.consumption GROUP BY 1, 2, 3, 4, 5, 6"
                    % schema):
        q = r[6] * 1000
        assert q == int(q), "quantity not in thousandths: %r" % r[6]
        cons[tuple(r[:6])] = int(q)
    scr = {tuple(r[:4]): int(r[4]) for r in pg.sql(
        "SELECT plant, order_no, operation, reason, sum(parts) FROM %s.scrap GROUP BY 1, 2, 3, 4"
        % schema)}
    records = sum(int(pg.sql("SELECT coalesce(sum(record_count), 0) FROM %s.%s" % (schema, t))[0][0])
                  for t in TABLES)
    return comp, cons, scr, records


def db_ids(pg, schema="floorpost"):
    """[(global_seq, event_id)] of every row of the three tables."""
    rows = []
    for t in TABLES:
        rows += pg.sql("SELECT global_seq, event_id FROM %s.%s" % (schema, t))
    return sorted(rows)


def us(ns):
    """ns as the sink writes a timestamptz: microseconds, rounded down."""
    return ns // 1000


def check_columns(pg, by_id):
    """Every column the sink writes, of every row, equals its event in the
    outbox (COPY's binary format round trip: dates, times at microseconds,
    numerics, booleans, jsonb, NULLs)."""
    common = ("event_id, global_seq, instance, plant, line, order_no, operation, "
              "posting_date::text, (extract(epoch FROM first_event_at) * 1000000)::bigint, "
              "(extract(epoch FROM last_event_at) * 1000000)::bigint, record_count, late, "
              "lineage, lineage_truncated, checkpoint_no, stream_seq, topic, period, "
              "(extract(epoch FROM period_start) * 1000000)::bigint, "
              "(extract(epoch FROM period_end) * 1000000)::bigint, backfill, "
              "original_posting_date::text, "
              "(extract(epoch FROM original_period_start) * 1000000)::bigint, process_status")
    own = {"consumption": "material, lot, unit, quantity::text",
           "completion": "yield_qty, scrap_qty, final", "scrap": "reason, parts"}
    for t in TABLES:
        for r in pg.sql("SELECT %s, %s FROM floorpost.%s" % (common, own[t], t)):
            e = by_id[r[0]]
            has = bool(e["posting_date"] and e["period"])
            want = [e["event_id"], e["global_seq"], e["instance"], e["plant"], e["line"] or None,
                    e["order"], e["operation"], e["posting_date"] or r[7],
                    us(e["first_time_ns"]), us(e["last_time_ns"]), e["record_count"],
                    e["late"], [dict(source_id=a, epoch=b, first_seq=c, last_seq=d)
                                for a, b, c, d in e["lineage"]],
                    e["lineage_truncated"], e["checkpoint_no"], e["stream_seq"], e["topic"],
                    e["period"] if has else None, us(e["period_start_ns"]) if has else None,
                    us(e["period_end_ns"]) if has else None, e["backfill"],
                    e["original_posting_date"] or None,
                    us(e["original_period_start_ns"]) if e["original_posting_date"] else None,
                    "PENDING"]
            if t == "consumption":
                q = e["quantity"]
                want += [e["material"] or None, e["lot"] or None, e["unit"] or None,
                         "%s%d.%03d" % ("-" if q < 0 else "", abs(q) // 1000, abs(q) % 1000)]
            elif t == "completion":
                want += [e["yield_"], e["scrap"], e["final"]]
            else:
                want += [e["reason"] or None, e["parts"]]
            eq(list(r), want, "every column of row %s of %s" % (r[0], t))


def check_against_truth(pg, fp, truth_path, what):
    """The tables hold every event of the outbox exactly once, and their
    sums equal the truth."""
    fp.start()
    events, oldest, last = replay_all(CTX, fp.endpoints["replay"])
    rc, _ = fp.stop()
    eq(rc, 0, "stop after replay")
    eq(oldest, 1, "outbox kept everything")
    rows = db_ids(pg)
    eq(len(rows), len(set(e for _, e in rows)), "no event_id twice")
    eq(rows, sorted((e["global_seq"], e["event_id"]) for e in events),
       "rows = the outbox's events, each once (%s)" % what)
    # every row is its event: the business fields as the outbox has them
    by_id = {e["event_id"]: e for e in events}
    for t, cols in (("completion", "yield_qty, scrap_qty"), ("consumption", "quantity * 1000"),
                    ("scrap", "parts")):
        for r in pg.sql("SELECT event_id, record_count, plant, order_no, operation, %s FROM "
                        "floorpost.%s" % (cols, t)):
            e = by_id[r[0]]
            want = (e["record_count"], e["plant"], e["order"], e["operation"]) + (
                (e["yield_"], e["scrap"]) if t == "completion" else
                (e["quantity"],) if t == "consumption" else (e["parts"],))
            eq(tuple(int(v) if not isinstance(v, str) else v for v in r[1:]), want,
               "row %s of %s" % (r[0], t))
    check_columns(pg, by_id)
    comp, cons, scr, records = read_truth(truth_path)
    eq(totals(events)[3], records, "record_count of the outbox (%s)" % what)
    got = pg_totals(pg)
    eq(nonzero(got[0]), nonzero(comp), "completion totals by SQL (%s)" % what)
    eq(nonzero(got[1]), nonzero(cons), "consumption totals by SQL (%s)" % what)
    eq(nonzero(got[2]), nonzero(scr), "scrap totals by SQL (%s)" % what)
    eq(got[3], records, "record_count sum (%s)" % what)
    pos = pg.sql("SELECT position FROM floorpost.sink_position WHERE sink = 'erp'")
    eq(pos, [(last,)], "sink_position")
    return len(rows)


def crash_fp(pg, **sink_extra):
    return Floorpost(sinks=pg_sink(pg, **sink_extra), posting_interval_ms=60000,
                     round_interval_ms=50, dedup_window=65536, workers=2, shards=2)


@extra_test
def pg_totals_exact_with_duplicates_and_producer_restarts():
    with PgServer() as pg:
        fp = crash_fp(pg).start()
        gen, truth = crashgen(fp, records=30000, rate=20000, seed=5, restart_every=2000)
        _, err = gen.communicate(timeout=300)
        eq(gen.returncode, 0, "crashgen: " + err)
        rc, _ = fp.stop()
        eq(rc, 0, "drain")
        assert 'msg="tables created" schema=floorpost' in fp.log(), fp.log()
        n = check_against_truth(pg, fp, truth, "no crash")
        # the import job's columns: every row waits for it
        eq(pg.sql("SELECT process_status, count(*) FROM floorpost.completion GROUP BY 1"),
           [("PENDING", pg.sql("SELECT count(*) FROM floorpost.completion")[0][0])], "status")
        # a second start finds the tables and its position: nothing new written
        fp.start()
        time.sleep(1.0)
        fp.stop()
        eq(fp.log().count('msg="tables created"'), 1, "DDL applied once")
        eq(len(db_ids(pg)), n, "rows after a restart")
        # a position older than the rows (a restored position row, another
        # writer): everything is offered again, the rows there are skipped
        # (ON CONFLICT DO NOTHING through the staging tables), nothing twice
        pg.sql("UPDATE floorpost.sink_position SET position = 0")
        fp.start()
        end = time.time() + 20
        while time.time() < end and pg.sql("SELECT position FROM floorpost.sink_position")[0][0] \
                < max(g for g, _ in db_ids(pg)):
            time.sleep(0.2)
        fp.stop()
        assert "an event_id is in the table already" in fp.log(), fp.log()
        eq(len(db_ids(pg)), n, "rows after delivering everything again")
        comp, cons, scr, records = read_truth(truth)
        eq(pg_totals(pg)[3], records, "record_count sum after delivering everything again")
        eq(nonzero(pg_totals(pg)[0]), nonzero(comp), "completion totals after it")
        # the same while floorpost runs idle, with a database restart: it
        # reconnects for the verdicts, sees the position changed, and its
        # next delivery reopens and goes on from the database's position
        fp.start()
        end = time.time() + 10
        while time.time() < end and not pg.sql(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'floorpost-erp' AND "
                "state = 'idle' AND (query LIKE 'SELECT pg_snapshot_xmax%' OR "
                "query LIKE 'SELECT 1 AS kind%')"):
            time.sleep(0.05)  # the sink's open done (its last statement), or a verdict poll
        pg.sql("UPDATE floorpost.sink_position SET position = 0")
        pg.stop()
        pg.start()
        end = time.time() + 15
        while time.time() < end and "position_changed=yes" not in fp.log():
            time.sleep(0.1)
        assert 'msg="reconnected while idle" position_changed=yes' in fp.log(), fp.log()
        prod = Producer(CTX, fp.endpoints["router"])
        prod.send(99, 1, [rec(1, PART, "O-NEW", "0010", qty=2), rec(2, COMPLETED, "O-NEW", "0010")])
        assert prod.wait_acks(1), "ack"
        prod.close()
        end = time.time() + 20
        while time.time() < end and len(db_ids(pg)) < n + 1:
            time.sleep(0.2)
        fp.stop()
        eq(len(db_ids(pg)), n + 1, "every row once, and the new one")
        assert "sink_position changed while the sink was idle" in fp.log(), fp.log()
        eq(pg.sql("SELECT yield_qty, final FROM floorpost.completion WHERE order_no = 'O-NEW'"),
           [(2, True)], "the new row")
        print("     %d rows" % n)


@extra_test
def pg_totals_exact_after_ten_sigkills():
    rng = random.Random(3)
    with PgServer() as pg:
        fp = crash_fp(pg).start()
        gen, truth = crashgen(fp, records=30000, rate=6000, seed=7, restart_every=2000)
        fp.kill_restarts(10, rng, gap=(0.2, 0.6))
        _, err = gen.communicate(timeout=300)
        eq(gen.returncode, 0, "crashgen: " + err)
        rc, _ = fp.stop()
        eq(rc, 0, "drain after the kills")
        n = check_against_truth(pg, fp, truth, "10 SIGKILLs")
        assert fp.log().count('msg="state opened"') >= 12
        print("     %d rows" % n)


@extra_test
def pg_pipelined_backlog_exact_after_sigkills():
    """A backlog is pipelined (sink_pg.c s_pipelined, and split deliveries
    likewise: deliver returns once the data is handed over, the next
    batch is read while the backends insert, the commits are read at the
    next deliver): exact through SIGKILLs in the middle of the drain, with
    one session and small batches, and with two sessions and split
    deliveries."""
    pipelined_backlog(dict(batch_max=40), 30000, 13)
    pipelined_backlog(dict(batch_max=1000, connections=2), 60000, 17)


def pipelined_backlog(sink_opts, records, seed):
    rng = random.Random(seed)
    with PgServer() as pg:
        pg.stop()
        mport = free_port()
        fp = Floorpost(sinks=pg_sink(pg, **sink_opts), posting_interval_ms=60000,
                       round_interval_ms=50, dedup_window=65536, workers=2, shards=2,
                       metrics_port=mport).start()
        gen, truth = crashgen(fp, records=records, rate=20000, seed=seed, restart_every=3000)
        _, err = gen.communicate(timeout=300)
        eq(gen.returncode, 0, "crashgen: " + err)
        lag0 = sink_status(mport)["lag_events"]
        assert lag0 > 2000, "a backlog of %d events only" % lag0
        pg.start()
        fp.kill_restarts(4, rng, gap=(0.3, 0.8))
        end = time.time() + 60
        while time.time() < end and sink_status(mport)["lag_events"] > 0:
            time.sleep(0.2)
        eq(sink_status(mport)["lag_events"], 0, "the backlog delivered")
        rc, _ = fp.stop()
        eq(rc, 0, "drain after the kills")
        n = check_against_truth(pg, fp, truth, "pipelined backlog, 4 SIGKILLs")
        print("     %d rows, a backlog of %d events, %r" % (n, lag0, sink_opts))


@extra_test
def pg_down_30s_ingest_goes_on_totals_exact():
    with PgServer() as pg:
        mport = free_port()
        fp = Floorpost(sinks=pg_sink(pg), posting_interval_ms=60000, round_interval_ms=50,
                       dedup_window=65536, metrics_port=mport).start()
        gen, truth = crashgen(fp, records=44000, rate=1000, seed=9, restart_every=5000)
        time.sleep(4)
        assert sink_status(mport)["delivered_events"] > 0, sink_status(mport)
        pg.stop()
        t_down = time.time()
        time.sleep(3)
        s0, acks0 = sink_status(mport), metric(mport, "floorpost_acks_total")
        time.sleep(25)
        s1, acks1 = sink_status(mport), metric(mport, "floorpost_acks_total")
        # ingest went on: acks and commits, while nothing reached the database
        assert acks1 > acks0 + 50, (acks0, acks1)
        assert s1["committed"] > s0["committed"], (s0, s1)
        eq(s1["position"], s0["position"], "no delivery while down")
        assert s1["lag_events"] > 0 and s1["errors"]["connect"] > 0, s1
        assert s1["state"] in ("connecting", "backing_off", "open"), s1
        time.sleep(max(0.0, 30 - (time.time() - t_down)))
        pg.start()
        _, err = gen.communicate(timeout=300)
        eq(gen.returncode, 0, "crashgen: " + err)
        end = time.time() + 30
        while time.time() < end:
            s = sink_status(mport)
            if s["lag_events"] == 0 and s["state"] in ("idle", "delivering"):
                break
            time.sleep(0.2)
        assert sink_status(mport)["lag_events"] == 0, sink_status(mport)
        rc, _ = fp.stop()
        eq(rc, 0, "drain")
        n = check_against_truth(pg, fp, truth, "30 s outage")
        print("     %d rows, %d acks during the outage" % (n, acks1 - acks0))


def send_plant(ctx, fp, source, n_ops, seq0=1):
    """One completion per operation (a final one), with consumption and
    scrap: 3 events per operation."""
    prod = Producer(ctx, fp.endpoints["router"])
    recs, seq = [], seq0
    for i in range(n_ops):
        order, op = "O%04d" % i, "0010"
        recs.append(rec(seq, PART, order, op, qty=3))
        recs.append(rec(seq + 1, 2, order, op, qty=1250 + i, material="RM-1", lot="L-%d" % i,
                        unit="KG"))
        recs.append(rec(seq + 2, 3, order, op, qty=1, reason="SCR-DIM"))
        recs.append(rec(seq + 3, 5, order, op))
        seq += 4
    for k in range(0, len(recs), 200):
        prod.send(source, 1, recs[k:k + 200])
    assert prod.wait_acks((len(recs) + 199) // 200, 20), "acks"
    prod.close()
    return seq


def deadletters(fp, *args):
    return subprocess.run([FLOORPOST, "deadletters", "-c", fp.config] + list(args),
                          capture_output=True, text=True, timeout=60)


def erp_dead_letters(fp):
    out = deadletters(fp, "list", "--json")
    eq(out.returncode, 0, "deadletters list: " + out.stderr)
    return [d for d in (json.loads(line) for line in out.stdout.splitlines() if line.strip())
            if d["reason"] == "erp_rejected"]


def import_job(pg, rng, pct, code):
    """The ERP's import job: every PENDING row through PROCESSING, pct % of
    them to ERROR with a code and a text, the rest DONE. Returns the
    (table, event_id) set it refused."""
    refused = set()
    for t in TABLES:
        c = pg.connect()
        c.autocommit = False
        cur = c.cursor()
        cur.execute("UPDATE floorpost.%s SET process_status = 'PROCESSING' WHERE "
                    "process_status = 'PENDING' RETURNING event_id" % t)
        ids = sorted(r[0] for r in cur.fetchall())
        c.commit()
        bad = [i for i in ids if rng.random() < pct / 100.0]
        for i in bad:
            cur.execute("UPDATE floorpost.%s SET process_status = 'ERROR', error_code = %%s, "
                        "error_text = %%s, processed_at = now() WHERE event_id = %%s" % t,
                        (code, "material %s: no stock in storage location 0001" % i, i))
            refused.add((t, i))
        cur.execute("UPDATE floorpost.%s SET process_status = 'DONE', processed_at = now() "
                    "WHERE process_status = 'PROCESSING'" % t)
        c.commit()
        c.close()
    return refused


def wait_dead_letters(fp, n, timeout=20):
    end = time.time() + timeout
    got = []
    while time.time() < end:
        got = erp_dead_letters(fp)
        if len(got) >= n:
            return got
        time.sleep(0.3)
    return got


@extra_test
def pg_erp_verdicts_dead_lettered_once_and_resubmitted_once():
    rng = random.Random(17)
    with PgServer() as pg:
        fp = Floorpost(sinks=pg_sink(pg, verdict_poll_ms=200), posting_interval_ms=60000).start()
        dl = Subscriber(CTX, fp.endpoints["dl"], dead_letter=True)
        dl.start()
        time.sleep(0.3)
        seq = send_plant(CTX, fp, 11, 400)
        end = time.time() + 20
        while time.time() < end and len(db_ids(pg)) < 1200:
            time.sleep(0.2)
        eq(len(db_ids(pg)), 1200, "rows delivered")
        # transaction ids well past a new cluster's (for the move below)
        c = pg.connect()
        for _ in range(3000):
            c.cursor().execute("SELECT pg_current_xact_id()")
        c.close()
        refused = import_job(pg, rng, 1, "M7-021")
        assert 5 <= len(refused) <= 30, len(refused)
        got = wait_dead_letters(fp, len(refused))
        time.sleep(1.0)  # more polls: nothing more may come
        got = erp_dead_letters(fp)
        keys = sorted((d["detail"]["table"], d["detail"]["event_id"]) for d in got)
        eq(keys, sorted(refused), "exactly the refused rows, each once")
        for d in got:
            det = d["detail"]
            eq(det["sink"], "erp", "sink")
            eq(det["error_code"], "M7-021", "error code")
            assert det["error_text"].startswith("material "), det
            assert det["plant"] == "1000" and det["order"].startswith("O"), det
        assert dl.wait_for(lambda items: len([i for i in items if i["topic"] ==
                                              "deadletter/erp_rejected"]) >= len(refused), 10)
        # the payload is the row's event, rebuilt as a Checkpoint
        from fp import decode_checkpoint
        for item in dl.snapshot():
            ev = decode_checkpoint("x", item["payload"])
            eq(ev["event_id"], item["detail"]["event_id"], "payload's event_id")
        # a restart (and a SIGKILL) reports nothing again ...
        rc, _ = fp.stop()
        eq(rc, 0, "stop")
        fp.start()
        time.sleep(1.5)
        fp.kill()
        fp.start()
        time.sleep(1.5)
        eq(len(erp_dead_letters(fp)), len(refused), "no verdict twice across restarts")
        # ... and new verdicts after it come once, also when PostgreSQL
        # restarted while the sink had nothing to deliver (a quiet shift)
        send_plant(CTX, fp, 12, 100, seq0=seq)
        end = time.time() + 20
        while time.time() < end and len(db_ids(pg)) < 1500:
            time.sleep(0.2)
        eq(len(db_ids(pg)), 1500, "rows delivered")
        pg.stop()
        pg.start()
        more = import_job(pg, rng, 5, "M7-022")
        assert more, "the second import job refused nothing"
        refused |= more
        got = wait_dead_letters(fp, len(refused))
        time.sleep(1.0)
        got = erp_dead_letters(fp)
        eq(sorted((d["detail"]["table"], d["detail"]["event_id"]) for d in got), sorted(refused),
           "the new verdicts, once")
        # resubmit: exactly those rows back to PENDING, once
        dls = [str(d["dl_seq"]) for d in got]
        r = deadletters(fp, "resubmit", *dls)
        eq(r.returncode, 0, "resubmit: " + r.stdout + r.stderr)
        pending = set()
        for t in TABLES:
            for (i, code) in pg.sql("SELECT event_id, error_code FROM floorpost.%s WHERE "
                                    "process_status = 'PENDING'" % t):
                eq(code, None, "error_code cleared")
                pending.add((t, i))
        eq(pending, refused, "the resubmitted rows are PENDING, no others")
        eq(sum(pg.sql("SELECT count(*) FROM floorpost.%s WHERE process_status = 'ERROR'" % t)[0][0]
               for t in TABLES), 0, "no ERROR left")
        r2 = deadletters(fp, "resubmit", *dls)
        eq(r2.returncode, 1, "a second resubmit changes nothing: " + r2.stdout + r2.stderr)
        assert r2.stdout.count("0 rows") == len(dls), r2.stdout
        # the row refused again is a new verdict, a new dead letter; the old
        # one still does nothing
        t, i = sorted(refused)[0]
        pg.sql("UPDATE floorpost.%s SET process_status = 'ERROR', error_code = 'M7-023' WHERE "
               "event_id = %%s" % t, (i,))
        got2 = wait_dead_letters(fp, len(refused) + 1)
        eq(len(got2), len(refused) + 1, "a new verdict for the same row")
        r3 = deadletters(fp, "resubmit", dls[0])
        eq(r3.returncode, 1, "the old dead letter: " + r3.stdout)
        new = [d for d in got2 if str(d["dl_seq"]) not in dls]
        r4 = deadletters(fp, "resubmit", "--delete", str(new[0]["dl_seq"]))
        eq(r4.returncode, 0, "the new one: " + r4.stdout + r4.stderr)
        assert "deleted" in r4.stdout, r4.stdout
        eq(pg.sql("SELECT process_status FROM floorpost.%s WHERE event_id = %%s" % t, (i,)),
           [("PENDING",)], "resubmitted again")
        eq(len(erp_dead_letters(fp)), len(refused), "the resubmitted one deleted")
        assert "the ERP rejected a posting" in fp.log()
        assert 'msg="reconnected while idle" position_changed=no' in fp.log(), fp.log()
        # the sink moved to a new cluster (a dump restored elsewhere): its
        # transaction ids are far below the cursor, and its verdicts still
        # come, once
        fp.stop()
        before = len(erp_dead_letters(fp))
        with PgServer() as pg2:
            with open(fp.config) as f:
                text = f.read()
            with open(fp.config, "w") as f:
                f.write(text.replace("port=%d " % pg.port, "port=%d " % pg2.port))
            fp.start()
            send_plant(CTX, fp, 13, 100)
            end = time.time() + 20
            while time.time() < end:
                try:
                    if len(db_ids(pg2)) >= 300:
                        break
                except Exception:  # noqa: BLE001  (the tables are not there yet)
                    pass
                time.sleep(0.2)
            eq(len(db_ids(pg2)), 300, "rows in the new cluster")
            moved = import_job(pg2, rng, 5, "M7-030")
            assert moved, "nothing refused in the new cluster"
            got3 = wait_dead_letters(fp, before + len(moved))
            time.sleep(1.0)
            got3 = erp_dead_letters(fp)
            eq(sorted((d["detail"]["table"], d["detail"]["event_id"]) for d in got3
                      if d["detail"]["error_code"] == "M7-030"), sorted(moved),
               "the new cluster's verdicts, once")
            eq(len(got3), before + len(moved), "and nothing else")
            assert "the verdict cursor is ahead of this database" in fp.log(), fp.log()
            fp.stop()
        dl.stop()
        print("     %d verdicts" % (len(refused) + len(moved)))


@extra_test
def pg_bad_conninfo_refused_unreachable_reported_pipeline_goes_on():
    # a malformed conninfo: an error at run --check, with file:line
    fp = Floorpost(sinks={"erp": dict(type="postgresql", conninfo="host=127.0.0.1 dbname")})
    r = subprocess.run([FLOORPOST, "run", "--check", "-c", fp.config], capture_output=True,
                       text=True)
    eq(r.returncode, 2, "run --check: " + r.stdout + r.stderr)
    assert "floorpost.ini:" in r.stderr and "[sink erp]" in r.stderr and "conninfo" in r.stderr, \
        r.stderr
    for bad in (dict(conninfo="hots=x"), dict(conninfo="host=x", schema="Bad-Name"),
                dict(conninfo="host=x", verdict_poll_ms=5), dict(schema="x"),
                dict(conninfo="host=x", connections=0), dict(conninfo="host=x", connections=9)):
        fp = Floorpost(sinks={"erp": dict(type="postgresql", **bad)})
        r = subprocess.run([FLOORPOST, "run", "--check", "-c", fp.config], capture_output=True,
                           text=True)
        eq(r.returncode, 2, "run --check %r: %s" % (bad, r.stdout + r.stderr))
        assert "[sink erp]" in r.stderr and "allowed" in r.stderr, r.stderr
    # nobody listening: the sink says so; ingest and the feed go on
    mport, dead = free_port(), free_port()
    fp = Floorpost(sinks={"erp": dict(type="postgresql", retry_ms=100, retry_max_ms=500,
                                      conninfo="host=127.0.0.1 port=%d user=x dbname=x" % dead)},
                   metrics_port=mport).start()
    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)
    send_plant(CTX, fp, 21, 20)
    assert sub.wait_for(lambda evs: len(evs) >= 60, 10), "events published"
    end = time.time() + 10
    while time.time() < end and sink_status(mport)["errors"]["connect"] < 2:
        time.sleep(0.1)
    s = sink_status(mport)
    assert s["state"] in ("connecting", "backing_off", "open"), s
    eq(s["last_error_class"], "connect", "class")
    assert s["errors"]["connect"] >= 2 and "connect" in s["last_error"], s
    eq(s["position"], 0, "nothing delivered")
    assert metric(mport, 'floorpost_sink_errors_total{sink="erp",class="connect"}') >= 2
    st = subprocess.run([FLOORPOST, "sinks", "-c", fp.config, "status", "--json"],
                        capture_output=True, text=True, timeout=30)
    eq(st.returncode, 1, "sinks status: a failing sink: " + st.stdout + st.stderr)
    cli = [x for x in json.loads(st.stdout) if x["name"] == "erp"]
    assert cli and cli[0]["state"] in ("connecting", "backing_off", "open") and \
        cli[0]["last_error_class"] == "connect", st.stdout
    log = fp.log()
    assert 'component=reader-erp msg="open failed; retrying"' in log and "connect:" in log, log
    rc, _ = fp.stop()
    eq(rc, 0, "stop with the sink down")
    sub.stop()


def wait_log(fp, text, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if text in fp.log():
            return
        time.sleep(0.05)
    raise AssertionError("not logged within %.0f s: %s\n%s" % (timeout, text, fp.log()[-2000:]))


def rows_per_transaction(pg):
    """[(xmin, rows)] over the three tables: a transaction's rows."""
    return pg.sql("SELECT xmin::text, count(*) FROM (SELECT xmin FROM floorpost.consumption "
                  "UNION ALL SELECT xmin FROM floorpost.completion UNION ALL "
                  "SELECT xmin FROM floorpost.scrap) t GROUP BY 1")


@extra_test
def pg_split_deliveries_exact_after_sigkills():
    """connections = 3: a backlog (the database down while the plant
    sends) is delivered in deliveries of batch_max = 3,000 events split
    over three sessions, each part its own transaction; floorpost killed
    with SIGKILL 5 times while it delivers: every event once, the sums
    exact, and no transaction holds more than a third of a delivery."""
    rng = random.Random(11)
    with PgServer() as pg:
        fp = crash_fp(pg, connections=3, batch_max=3000).start()
        wait_log(fp, 'msg="tables created"')
        pg.stop()
        gen, truth = crashgen(fp, records=40000, rate=20000, seed=13, restart_every=5000)
        _, err = gen.communicate(timeout=300)
        eq(gen.returncode, 0, "crashgen: " + err)
        pg.start()
        fp.kill_restarts(5, rng, gap=(0.3, 0.8))
        end = time.time() + 60
        while time.time() < end and 'floorpost-erp-3' not in str(
                pg.sql("SELECT application_name FROM pg_stat_activity")):
            time.sleep(0.1)
        apps = [r[0] for r in pg.sql("SELECT application_name FROM pg_stat_activity")]
        assert "floorpost-erp" in apps and "floorpost-erp-2" in apps and \
            "floorpost-erp-3" in apps, apps
        rc, _ = fp.stop()
        eq(rc, 0, "drain after the kills")
        n = check_against_truth(pg, fp, truth, "split deliveries, 5 SIGKILLs")
        per = [c for _, c in rows_per_transaction(pg)]
        assert max(per) <= 1000, "a transaction with more than a third of 3,000: %d" % max(per)
        assert sum(1 for c in per if c >= 900) >= 3, "no split delivery of full parts: %r" % \
            sorted(per)[-10:]
        print("     %d rows in %d transactions, largest %d" % (n, len(per), max(per)))


@extra_test
def pg_split_first_part_fails_after_a_later_one_committed():
    """connections = 2: the first part of a delivery fails in the database
    (a trigger refuses one row) while the second part commits; the
    delivery comes again and again, its second part through staging, and
    once the trigger is gone every event is in the tables once. The
    staging after a failed split is no conflict: nothing is logged as one."""
    with PgServer() as pg:
        fp = crash_fp(pg, connections=2, batch_max=2000).start()
        wait_log(fp, 'msg="tables created"')
        pg.sql("CREATE TABLE public.fail_on (global_seq bigint)")
        pg.sql("CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "IF EXISTS (SELECT 1 FROM public.fail_on f WHERE f.global_seq = NEW.global_seq) "
               "THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$")
        for t in TABLES:
            pg.sql("CREATE TRIGGER refuse BEFORE INSERT ON floorpost.%s FOR EACH ROW "
                   "EXECUTE FUNCTION public.refuse()" % t)
        pg.sql("INSERT INTO public.fail_on VALUES (250)")
        gen, truth = crashgen(fp, records=40000, rate=20000, seed=17, restart_every=5000)
        _, err = gen.communicate(timeout=300)
        eq(gen.returncode, 0, "crashgen: " + err)
        # the reader is before 250; its deliveries of 2,000 events put 250
        # into the first part; the second part commits
        end = time.time() + 30
        later = 0
        while time.time() < end:
            later = pg.sql("SELECT count(*) FROM (SELECT global_seq FROM floorpost.completion "
                           "UNION ALL SELECT global_seq FROM floorpost.consumption UNION ALL "
                           "SELECT global_seq FROM floorpost.scrap) t WHERE global_seq > 1000"
                           )[0][0]
            if later > 0:
                break
            time.sleep(0.2)
        assert later > 0, "no later part committed while the first one failed"
        eq(pg.sql("SELECT count(*) FROM floorpost.completion WHERE global_seq = 250")[0][0] +
           pg.sql("SELECT count(*) FROM floorpost.consumption WHERE global_seq = 250")[0][0] +
           pg.sql("SELECT count(*) FROM floorpost.scrap WHERE global_seq = 250")[0][0], 0,
           "the refused row is not in")
        time.sleep(1.5)  # a few more tries, through staging
        pg.sql("DELETE FROM public.fail_on")
        rc, _ = fp.stop()
        eq(rc, 0, "drain")
        assert "refused by the test" in fp.log(), "the part's error is logged"
        assert "in the table already" not in fp.log(), "a failed split logged as a conflict"
        n = check_against_truth(pg, fp, truth, "a first part failed after a later one committed")
        print("     %d rows, %d of them committed while the first part failed" % (n, later))
