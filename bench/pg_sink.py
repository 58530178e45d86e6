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
   and 5000. Each on a fresh database. CPU: the sink's thread, this
   server's processes (the postmaster's tree) and the sink's one backend
   (rows per backend CPU second: the single session's limit).
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


def _stat(pid):
    """(ppid, own CPU s, reaped children's CPU s) of pid, from /proc/PID/stat."""
    with open("/proc/%s/stat" % pid) as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[1]), (int(st[11]) + int(st[12])) / bench.CLK_TCK,
            (int(st[13]) + int(st[14])) / bench.CLK_TCK)


def server_cpu_s(root):
    """CPU seconds (user + system) of the PostgreSQL server whose postmaster
    is root: the postmaster, its live processes (backends, walwriter,
    checkpointer, ...) and, through the postmaster's cutime, those that
    exited. Only this server's: other PostgreSQL servers on the machine (other
    sessions' tests, run as the same user) are not counted."""
    stats = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stats[int(pid)] = _stat(pid)
            except OSError:
                continue
    if root not in stats:
        return 0.0
    tree, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                todo.append(pid)
    return stats[root][2] + sum(stats[pid][1] for pid in tree)


def backend_cpu_s(pg, appname):
    """CPU seconds of the live backends of the sessions named appname (the
    sink's connection: floorpost-SINK, and with connections = N its further
    ones, floorpost-SINK-2 ...), and their pids."""
    pids = [r[0] for r in pg.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                                 "OR application_name LIKE %s", (appname, appname + "-%"))]
    total = 0.0
    for pid in pids:
        try:
            total += _stat(pid)[1]
        except OSError:
            continue
    return total, pids


def drain_into_pg(s, state, batch_max, events_expected, sync=True, variant=None):
    """floorpost on the pre-filled state, a postgresql sink, no load: rows/s.
    variant: {"label", "fp" (the binary), "opts" (more sink options)}."""
    variant = variant or {"label": "build", "fp": s.fp, "opts": {}}
    with PgServer(durable=True) as pg:
        ports = {k: bench.free_port() for k in ("router", "pull", "pub", "dl", "replay",
                                                 "metrics")}
        s.sinks = {"erp": {"type": "postgresql", "conninfo": pg.conninfo,
                           "batch_max": batch_max, "synchronous_commit": str(sync).lower()}}
        s.sinks["erp"].update(variant["opts"])
        cfg, _ = s._config(ports, 1, 1, "tcp", 60000, state, 50, 100000, 4096)
        s.sinks = {}
        err = open(os.path.join(s.tmp, "drain.err"), "w")
        pg.sql("SELECT pg_stat_reset_shared('wal')")
        pg_cpu0 = server_cpu_s(pg.proc.pid)
        t0 = time.monotonic()
        proc = subprocess.Popen([variant["fp"], "run", "-c", cfg], stdout=subprocess.DEVNULL,
                                stderr=err)
        samples, first, threads, pg_cpu, sink_cpu = [], None, {}, 0.0, 0.0
        be_cpu, be_pids = 0.0, []
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
            # the sink's threads: fp-r-erp and its connections' (fp-pg-erp-N)
            sink_cpu = sum(v for k, v in threads.items() if k == "fp-r-erp" or
                           k.startswith("fp-pg-"))
            pg_cpu = server_cpu_s(pg.proc.pid) - pg_cpu0
            # the sink's own backend (its whole life: the session's setup too)
            be_cpu, be_pids = backend_cpu_s(pg, "floorpost-erp")
        finally:
            proc.terminate()
            proc.wait()
            err.close()
        total = time.monotonic() - t0
        st_end = samples[-1] if samples else (0, 0)
        wal = pg.sql("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")[0]
        rows = pg.sql("SELECT (SELECT count(*) FROM floorpost.consumption) + "
                      "(SELECT count(*) FROM floorpost.completion) + "
                      "(SELECT count(*) FROM floorpost.scrap)")[0][0]
        # the rate while delivering: from the first sample that saw rows to the end
        t_first, d_first = first if first else (0, 0)
        dt = st_end[0] - t_first
        r = {"variant": variant["label"], "sink_opts": variant["opts"],
             "batch_max": batch_max, "synchronous_commit": sync, "rows": rows, "events_expected": events_expected,
             "seconds_from_start": round(total, 2),
             "rows_per_s_from_start": round(rows / total) if total else 0,
             "rows_per_s_delivering": round((rows - d_first) / dt) if dt > 0 else 0,
             "exact": rows == events_expected,
             # CPU seconds of the sink's thread (fp-r-erp) against the wall time
             "sink_thread_cpu_s": round(sink_cpu, 2), "threads_cpu_s": threads,
             # the CPU seconds of this benchmark's PostgreSQL server (its
             # postmaster's process tree, nobody else's) and of the sink's one
             # backend in the drain: rows per backend CPU second is what one
             # session can take on a core of its own, whatever else runs
             "postgres_cpu_s": round(pg_cpu, 2),
             "rows_per_postgres_cpu_s": round(rows / pg_cpu) if pg_cpu else 0,
             "backend_cpu_s": round(be_cpu, 2), "backend_pids": be_pids,
             "rows_per_backend_cpu_s": round(rows / be_cpu) if be_cpu else 0,
             "us_per_row_backend": round(be_cpu * 1e6 / rows, 2) if rows else 0,
             "rows_per_sink_thread_cpu_s": round(rows / sink_cpu) if sink_cpu else 0,
             "wal_records": int(wal[0]), "wal_fpi": int(wal[1]), "wal_mib": round(int(wal[2]) / 2**20, 1),
             "loadavg": open("/proc/loadavg").read().split()[:3]}
        print("  [%s] drain into PostgreSQL, batch_max %5d%s: %d rows in %.2f s: %d rows/s (%d while "
              "delivering); %d rows per backend CPU s, %d per PostgreSQL CPU s, %d per sink thread "
              "CPU s, WAL %.0f MiB (%d full pages)%s" % (variant["label"], batch_max, "" if sync else ", synchronous_commit off", rows, total, r["rows_per_s_from_start"],
                                     r["rows_per_s_delivering"], r["rows_per_backend_cpu_s"],
                                     r["rows_per_postgres_cpu_s"],
                                     r["rows_per_sink_thread_cpu_s"], r["wal_mib"], r["wal_fpi"],
                                     "" if r["exact"] else "  NOT EXACT"), flush=True)
        return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--events", type=int, default=400000, help="events pre-filled (rows)")
    ap.add_argument("--records", type=int, default=6000000, help="records per ingest run")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--only", choices=("drain", "ingest"), default=None)
    ap.add_argument("--variant", action="append", default=[],
                    help="LABEL=FLOORPOST[;opt=value;...]: drain with this binary and these "
                    "more sink options; several alternate, in turns (A/B in one sitting)")
    ap.add_argument("--rounds", type=int, default=1, help="drain turns per variant and setting")
    ap.add_argument("--settings", default="1000:on,5000:on,5000:off",
                    help="the drains' batch_max:synchronous_commit, comma-separated")
    ap.add_argument("--prefilled", default=None,
                    help="a directory for the pre-filled state: made when missing, kept, "
                    "reused when there")
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


def variants(a, s):
    out = []
    for v in a.variant:
        label, _, rest = v.partition("=")
        parts = rest.split(";")
        opts = dict(o.split("=", 1) for o in parts[1:] if o)
        out.append({"label": label, "fp": os.path.abspath(parts[0]) if parts[0] else s.fp,
                    "opts": opts})
    return out or [{"label": "build", "fp": s.fp, "opts": {}}]


def drain(a, s, res, keys, dw):
    state = a.prefilled or os.path.join(s.tmp, "pg-state")
    meta = os.path.join(state, "prefill.json")
    if a.prefilled and os.path.exists(meta):
        with open(meta) as f:
            res["prefill"] = json.load(f)
        print("pre-filled outbox reused: %s (%d events)" % (state, res["prefill"]["events"]),
              flush=True)
    else:
        print("pre-fill the outbox (%d events wanted):" % a.events, flush=True)
        os.makedirs(state)
        n = int(a.events / 0.25 * 1.05)
        r = s.run("pg: pre-fill", workers=dw, shards=dw, state=state, records=n, keys=keys,
                  rpo=20, epoch=1, map_mb=4096)
        events = r["fpload"].get("received", {}).get("events", 0)
        res["prefill"] = {"records": n, "events": events, "exact": r["exact"]}
        with open(meta, "w") as f:
            json.dump(res["prefill"], f)
    events = res["prefill"]["events"]
    vs = variants(a, s)
    res["variants"] = vs
    for setting in a.settings.split(","):
        bm, _, sync = setting.partition(":")
        for _ in range(a.rounds):
            for v in vs:  # in turns: A, B, A, B, ...
                st = os.path.join(s.tmp, "pg-state-drain")
                shutil.copytree(state, st)
                res["drain"].append(drain_into_pg(s, st, int(bm), events, sync != "off", v))
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
                      "ratio": down["records_per_s_e2e"] / off["records_per_s_e2e"],
                      # CPU seconds per million records: what the down sink costs
                      # floorpost, less exposed to other load on the machine
                      "no_sink_cpu_s_per_m": off["cpu_s_per_m_records"],
                      "db_down_cpu_s_per_m": down["cpu_s_per_m_records"],
                      "loadavg": open("/proc/loadavg").read().split()[:3]})
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
                     "db_up_cpu_s_per_m": up["cpu_s_per_m_records"],
                     "ratio_up_vs_no_sink": up["records_per_s_e2e"] / mid["no_sink"]}


def write(a, s, res, out, stamp):
    res["failures"] = s.failures
    base = os.path.join(out, "pg-%s" % stamp)
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    m, ing = res["machine"], res["ingest"]
    lines = ["# PostgreSQL sink benchmark %s" % stamp, "",
             "`%s` on %s, %s cores, commit %s%s" % (res["command"], m.get("cpu_model", ""),
                                                    m.get("nproc"), m.get("git_commit"),
                                                    " (dirty)" if m.get("git_dirty") else ""),
             "", "PostgreSQL: %s." % res["postgresql"], ""]
    if res["drain"]:
        lines += ["| variant | batch_max | synchronous_commit | rows | s | rows/s | "
                  "rows/s delivering | rows per backend CPU s | rows per PostgreSQL CPU s | "
                  "rows per sink thread CPU s | WAL MiB (full pages) | load avg |",
                  "|---" * 12 + "|"]
        for d in res["drain"]:
            lines.append("| %s | %d | %s | %d | %.2f | %d | %d | %d | %d | %d | %.0f (%d) "
                         "| %s |" % (d["variant"] + (" (%s)" % ", ".join(
                             "%s=%s" % kv for kv in sorted(d["sink_opts"].items()))
                             if d["sink_opts"] else ""),
                             d["batch_max"], "on" if d["synchronous_commit"] else "off",
                                     d["rows"], d["seconds_from_start"],
                                     d["rows_per_s_from_start"], d["rows_per_s_delivering"],
                                     d["rows_per_backend_cpu_s"], d["rows_per_postgres_cpu_s"], d["rows_per_sink_thread_cpu_s"],
                                     d["wal_mib"], d["wal_fpi"], " ".join(d["loadavg"])))
        lines.append("")
    if ing:
        lines += ["| ingest, durable, max rate | records/s | vs no sink |", "|---|---|---|",
                  "| no sink (median pair) | %d | 1.00 |" % ing["no_sink_records_per_s"],
                  "| sink, database down (median pair) | %d | %.3f |" % (
                      ing["db_down_records_per_s"], ing["ratio_down_vs_no_sink"]),
                  "| sink, database up (batch_max 5000) | %d | %.3f |" % (
                      ing["db_up_records_per_s"], ing["ratio_up_vs_no_sink"]), "",
                  "| pair | no sink rec/s | database down rec/s | ratio | CPU s/M no sink | "
                  "CPU s/M down | load avg |", "|---" * 7 + "|"]
        for i, p in enumerate(ing["pairs"]):
            lines.append("| %d | %d | %d | %.3f | %.2f | %.2f | %s |" % (
                i + 1, p["no_sink"], p["db_down"], p["ratio"], p["no_sink_cpu_s_per_m"],
                p["db_down_cpu_s_per_m"], " ".join(p["loadavg"])))
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("results: %s.{json,md}" % base)
    print(open(base + ".md").read())
    shutil.rmtree(s.tmp, ignore_errors=True)
    sys.exit(1 if s.failures or not all(d["exact"] for d in res["drain"]) else 0)


if __name__ == "__main__":
    main()
