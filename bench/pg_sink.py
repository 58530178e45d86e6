#!/usr/bin/python3
"""The PostgreSQL sink's benchmark (issue 10). Run with Debian's /usr/bin/python3
after `make` (build/floorpost, build/bench/fpload):

    bench/pg_sink.py [--events N] [--pairs N] [--out DIR]

A real PostgreSQL 15 (tests/e2e/pg.py) with its defaults for durability
(fsync and synchronous_commit on), on the same 2 cores as floorpost.

1. Rows/s into PostgreSQL: an outbox pre-filled by one durable floorpost run
   at full speed (fpload, short operations: about one event per 4 records),
   then floorpost started on that state with a [sink erp] of type postgresql
   and no load: the time from its start until the sink's position reaches
   the last committed global_seq (/sinks), for batch_max 1000 (the default)
   and 5000. Each on a fresh database.
2. Ingest while PostgreSQL is down: durable max-rate runs (fpload, as
   bench/run.py's durability scenario) without a sink and with a
   postgresql sink whose server is down (nobody listening on its port),
   in pairs; the median pair's ratio is reported. Also one pair with the
   database up (the sink delivering while ingest runs at full speed).

Results: DIR/pg-<stamp>.json and .md (default build/bench/results); the
figures quoted in docs/benchmarks.md are kept in bench/results/.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import importlib.util
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/run.py by path (tests/e2e has a run.py too)
_spec = importlib.util.spec_from_file_location("fpbench", os.path.join(ROOT, "bench", "run.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from pg import PgServer  # noqa: E402


class PgSuite(bench.Suite):
    """bench/run.py's Suite, with [sink NAME] sections appended to every
    config it writes."""
    sinks = {}

    def _config(self, *args, **kw):
        path, ep = super()._config(*args, **kw)
        with open(path, "a") as f:
            for name, opts in self.sinks.items():
                f.write("[sink %s]\n" % name)
                for k, v in opts.items():
                    f.write('%s = "%s"\n' % (k, v))
        return path, ep


def sinks_status(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/sinks" % port, timeout=5) as r:
        return json.loads(r.read())


def drain_into_pg(s, state, batch_max, events_expected):
    """floorpost on the pre-filled state, a postgresql sink, no load: rows/s."""
    with PgServer(durable=True) as pg:
        ports = {k: bench.free_port() for k in ("router", "pull", "pub", "dl", "replay",
                                                 "metrics")}
        s.sinks = {"erp": {"type": "postgresql", "conninfo": pg.conninfo,
                           "batch_max": batch_max}}
        cfg, _ = s._config(ports, 1, 1, "tcp", 60000, state, 50, 100000, 4096)
        s.sinks = {}
        err = open(os.path.join(s.tmp, "drain.err"), "w")
        t0 = time.monotonic()
        proc = subprocess.Popen([s.fp, "run", "-c", cfg], stdout=subprocess.DEVNULL, stderr=err)
        samples, first, threads = [], None, {}
        try:
            while time.monotonic() - t0 < 600:
                time.sleep(0.1)
                try:
                    sts = sinks_status(ports["metrics"])
                except OSError:
                    continue
                if not sts:
                    continue  # the HTTP server is up before the sinks are
                st = sts[0]
                now = time.monotonic() - t0
                samples.append((round(now, 2), st["position"]))
                if first is None and st["delivered_events"] > 0:
                    first = (now, st["delivered_events"])
                if st["committed"] and st["position"] >= st["committed"]:
                    break
            threads = bench.thread_cpu(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
            err.close()
        total = time.monotonic() - t0
        st_end = samples[-1] if samples else (0, 0)
        rows = pg.sql("SELECT (SELECT count(*) FROM floorpost.consumption) + "
                      "(SELECT count(*) FROM floorpost.completion) + "
                      "(SELECT count(*) FROM floorpost.scrap)")[0][0]
        # the rate while delivering: from the first sample that saw rows to the end
        t_first, d_first = first if first else (0, 0)
        dt = st_end[0] - t_first
        r = {"batch_max": batch_max, "rows": rows, "events_expected": events_expected,
             "seconds_from_start": round(total, 2),
             "rows_per_s_from_start": round(rows / total) if total else 0,
             "rows_per_s_delivering": round((rows - d_first) / dt) if dt > 0 else 0,
             "exact": rows == events_expected,
             # CPU seconds of the sink's thread (fp-r-erp) against the wall time
             "sink_thread_cpu_s": threads.get("fp-r-erp"), "threads_cpu_s": threads}
        print("  drain into PostgreSQL, batch_max %5d: %d rows in %.2f s: %d rows/s (%d while "
              "delivering)%s" % (batch_max, rows, total, r["rows_per_s_from_start"],
                                 r["rows_per_s_delivering"], "" if r["exact"] else "  NOT EXACT"),
              flush=True)
        return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--events", type=int, default=400000, help="events pre-filled (rows)")
    ap.add_argument("--records", type=int, default=6000000, help="records per ingest run")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--only", choices=("drain", "ingest"), default=None)
    a = ap.parse_args()
    out = a.out or os.path.join(a.build, "bench", "results")
    os.makedirs(out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    s = PgSuite(a.build, out)
    keys, dw = 10000, max(1, (os.cpu_count() or 1) // 2)
    res = {"scenario": "pg_sink", "started": stamp, "machine": bench.machine(),
           "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
           "postgresql": "15, fsync on, synchronous_commit on, same machine"}

    # 1. pre-fill, then drain into PostgreSQL
    res["drain"], res["ingest"] = [], {}
    if a.only != "ingest":
        drain(a, s, res, keys, dw)
    if a.only != "drain":
        ingest(a, s, res, keys, dw)
    write(a, s, res, out, stamp)


def drain(a, s, res, keys, dw):
    print("pre-fill the outbox (%d events wanted):" % a.events, flush=True)
    state = os.path.join(s.tmp, "pg-state")
    os.makedirs(state)
    n = int(a.events / 0.25 * 1.05)
    r = s.run("pg: pre-fill", workers=dw, shards=dw, state=state, records=n, keys=keys, rpo=20,
              epoch=1, map_mb=4096)
    events = r["fpload"].get("received", {}).get("events", 0)
    res["prefill"] = {"records": n, "events": events, "exact": r["exact"]}
    for bm in (1000, 5000):
        st = os.path.join(s.tmp, "pg-state-%d" % bm)
        shutil.copytree(state, st)
        res["drain"].append(drain_into_pg(s, st, bm, events))
        shutil.rmtree(st, ignore_errors=True)


def ingest(a, s, res, keys, dw):
    """2. ingest with the database down (and up) against no sink"""
    print("ingest at max, durable: no sink / sink down / sink up, %d pairs:" % a.pairs, flush=True)
    pairs = []
    dead = bench.free_port()
    for i in range(a.pairs):
        s.sinks = {}
        off = s.run("pg: no sink #%d" % (i + 1), workers=dw, shards=dw, records=a.records,
                    keys=keys, durable=True)
        s.sinks = {"erp": {"type": "postgresql", "retry_ms": 500,
                           "conninfo": "host=127.0.0.1 port=%d user=x dbname=x" % dead}}
        down = s.run("pg: sink, database down #%d" % (i + 1), workers=dw, shards=dw,
                     records=a.records, keys=keys, durable=True)
        pairs.append({"no_sink": off["records_per_s_e2e"], "db_down": down["records_per_s_e2e"],
                      "ratio": down["records_per_s_e2e"] / off["records_per_s_e2e"]})
    with PgServer(durable=True) as pg:
        s.sinks = {"erp": {"type": "postgresql", "conninfo": pg.conninfo, "batch_max": 5000}}
        up = s.run("pg: sink, database up", workers=dw, shards=dw, records=a.records, keys=keys,
                   durable=True)
        s.sinks = {}
    mid = sorted(pairs, key=lambda x: x["ratio"])[len(pairs) // 2]
    res["ingest"] = {"records_per_run": a.records, "pairs": pairs,
                     "no_sink_records_per_s": mid["no_sink"],
                     "db_down_records_per_s": mid["db_down"], "ratio_down_vs_no_sink": mid["ratio"],
                     "db_up_records_per_s": up["records_per_s_e2e"],
                     "ratio_up_vs_no_sink": up["records_per_s_e2e"] / mid["no_sink"]}


def write(a, s, res, out, stamp):
    res["failures"] = s.failures
    base = os.path.join(out, "pg-%s" % stamp)
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    ing = res["ingest"]
    with open(base + ".md", "w") as f:
        f.write("# PostgreSQL sink benchmark %s\n\n`%s` on %s\n\n" % (stamp, res["command"],
                                                                   res["machine"].get("cpu", "")))
        f.write("PostgreSQL: %s.\n\n" % res["postgresql"])
        f.write("| rows into PostgreSQL | batch_max | rows | s | rows/s | rows/s delivering |\n"
                "|---|---|---|---|---|---|\n")
        for d in res["drain"]:
            f.write("| pre-filled outbox | %d | %d | %.2f | %d | %d |\n" % (
                d["batch_max"], d["rows"], d["seconds_from_start"], d["rows_per_s_from_start"],
                d["rows_per_s_delivering"]))
        if not ing:
            ing = None
        f.write("\n| ingest, durable, max rate | records/s | vs no sink |\n|---|---|---|\n"
                if ing else "")
        if ing:
            f.write("| no sink | %d | 1.00 |\n| sink, database down | %d | %.3f |\n"
                "| sink, database up (batch_max 5000) | %d | %.3f |\n" % (
                    ing["no_sink_records_per_s"], ing["db_down_records_per_s"],
                    ing["ratio_down_vs_no_sink"], ing["db_up_records_per_s"],
                    ing["ratio_up_vs_no_sink"]))
        if ing:
            f.write("\npairs (no sink, down, ratio): %s\n" % ", ".join(
                "(%d, %d, %.3f)" % (p["no_sink"], p["db_down"], p["ratio"])
                for p in ing["pairs"]))
    print("results: %s.{json,md}" % base)
    print(open(base + ".md").read())
    shutil.rmtree(s.tmp, ignore_errors=True)
    sys.exit(1 if s.failures or not all(d["exact"] for d in res["drain"]) else 0)


if __name__ == "__main__":
    main()
