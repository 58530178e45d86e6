#!/usr/bin/python3
"""floorpost against a peer (issue 13 item 5): the same job through Fluent
Bit's stream processor, alternating with floorpost. Run with Debian's
/usr/bin/python3:

    FLUENT_BIT=/path/to/fluent-bit make bench-peer
    bench/peer.py --fluent-bit PATH [--records N] [--keys K] [--pairs P]
                  [--window-s S] [--out DIR]

Nothing is built or fetched from outside the project: it runs the Fluent
Bit binary it is given (5.x was the one measured by hand for issue 13).

The job: fpload's plant stream (plantgen, K open keys over 8 lines, 200
quantity records per operation), SUM of quantity per key, floorpost's keys
(kind, order, operation, material, lot, scrap reason). Each pair runs
floorpost first, exactly as bench/run.py's max scenario (fpload, batches
of 256, durability off, the suite's config), then Fluent Bit with:
  - the forward input on a free loopback port, fed by bench/fbload.c with
    the same records as Fluent Bit records (msgpack Forward messages of
    256 records, the stream encoded before the clock starts, one
    connection, as fast as Fluent Bit reads);
  - a stream task: CREATE STREAM agg WITH (tag='agg') AS SELECT kind,
    order_no, operation, material, lot, reason, SUM(quantity) AS qty,
    COUNT(*) AS n FROM TAG:'plant' WINDOW TUMBLING (S SECOND) GROUP BY
    kind, order_no, operation, material, lot, reason;
  - its results through the tcp output (json_lines) into a counting
    receiver here (free port), the raw records to the null output.
Exact when the receiver's COUNT(*) total is the records sent and its sums,
folded with fbload's key hash, are fbload's (sum_quantity,
sum_quantity_hash). records/s e2e: records / (last result row's arrival -
the first byte sent), so it includes up to one window; records/s in: until
the last byte was taken. CPU: the process's user + system seconds; peak
RSS: its VmHWM, polled from /proc until it exits (Fluent Bit does not log
its own).

Output in build/bench/results/ (or --out): peer-<stamp>.json (every run,
the medians) and peer-<stamp>.md (the table). Exit 1 when any run is not
exact, 2 when the binary is missing.
"""
import argparse
import atexit
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import run as suite  # noqa: E402  (bench/run.py: Suite, free_port, /proc readers)

MASK = (1 << 64) - 1


def key_hash(kind, order, operation, material, lot, reason):
    """fbload.c's s_key_hash: FNV-1a 64 of kind and the key strings."""
    h = 0xcbf29ce484222325
    for b in "\x1f".join([str(kind), order, operation, material, lot, reason]).encode():
        h = ((h ^ b) * 0x100000001b3) & MASK
    return h


class Receiver(threading.Thread):
    """Fluent Bit's tcp output (json_lines) on a free port: every result
    row folded into count, sum, the hashed sum and the distinct keys."""

    def __init__(self):
        super().__init__(daemon=True)
        self.port = suite.free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(4)
        self.lock = threading.Lock()
        self.records = self.sum_q = self.sum_qh = self.rows = self.bad = 0
        self.keys = set()
        self.last_wall = None

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c):
        with c, c.makefile("r") as f:
            for line in f:
                try:
                    x = json.loads(line)
                    q = int(round(float(x["qty"])))
                    k = (int(x["kind"]), x["order_no"], x["operation"], x.get("material", ""),
                         x.get("lot", ""), x.get("reason", ""))
                    n = int(x["n"])
                except (ValueError, KeyError, TypeError):
                    with self.lock:
                        self.bad += 1
                    continue
                with self.lock:
                    self.rows += 1
                    self.records += n
                    self.sum_q += q
                    self.sum_qh = (self.sum_qh + q * key_hash(*k)) & MASK
                    self.keys.add(k)
                    self.last_wall = time.time()

    def close(self):
        self.sock.close()


def fb_config(tmp, in_port, out_port, window_s):
    streams = os.path.join(tmp, "fb-streams.conf")
    with open(streams, "w") as f:
        f.write("""# written by bench/peer.py
[STREAM_TASK]
    Name agg
    Exec CREATE STREAM agg WITH (tag='agg') AS SELECT kind, order_no, operation, material, lot, reason, SUM(quantity) AS qty, COUNT(*) AS n FROM TAG:'plant' WINDOW TUMBLING (%d SECOND) GROUP BY kind, order_no, operation, material, lot, reason;
""" % window_s)
    conf = os.path.join(tmp, "fluent-bit.conf")
    with open(conf, "w") as f:
        f.write("""# written by bench/peer.py
[SERVICE]
    Flush        1
    Grace        5
    Log_Level    warn
    HTTP_Server  Off
    Streams_File %s

[INPUT]
    Name   forward
    Listen 127.0.0.1
    Port   %d

[OUTPUT]
    Name   null
    Match  plant

[OUTPUT]
    Name   tcp
    Match  agg
    Host   127.0.0.1
    Port   %d
    Format json_lines
""" % (streams, in_port, out_port))
    return conf


def run_fluent_bit(s, fb, name, records, keys, window_s):
    """One Fluent Bit run; a dict like bench/run.py's runs."""
    rcv = Receiver()
    rcv.start()
    in_port = suite.free_port()
    conf = fb_config(s.tmp, in_port, rcv.port, window_s)
    errlog = os.path.join(s.tmp, "fb.err")
    tjson = os.path.join(s.tmp, "fbload.json")
    if os.path.exists(tjson):
        os.unlink(tjson)
    proc = ld = None
    problems = []
    try:
        with open(errlog, "w") as ef:
            proc = subprocess.Popen([fb, "-c", conf], stdout=ef, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while in_port not in suite.listening_ports(proc.pid):
            if proc.poll() is not None or time.monotonic() - t0 > 20:
                raise SystemExit("bench-peer: Fluent Bit did not listen on %d: %s" %
                                 (in_port, open(errlog).read()[-2000:]))
            time.sleep(0.05)
        idle_kb = suite.proc_status_kb(proc.pid, "VmRSS")
        ld = subprocess.Popen([os.path.join(s.build, "bench", "fbload"), "--port", str(in_port),
                               "--records", str(records), "--keys", str(keys),
                               "--json", tjson], stdout=subprocess.PIPE, text=True)
        if ld.stdout.readline().strip() != "SENDING":
            raise SystemExit("bench-peer: fbload failed before SENDING")
        cpu0 = suite.proc_cpu_s(proc.pid)  # its idle start-up, not the job's
        sent = ld.stdout.readline()
        if not sent.startswith("SENT") or ld.wait() != 0:
            raise SystemExit("bench-peer: fbload failed: %r" % sent)
        truth = json.load(open(tjson))
        # every record out of a window, or nothing new for 3 windows
        last_change, seen = time.monotonic(), -1
        while True:
            with rcv.lock:
                got = rcv.records
            if got >= records:
                break
            if got != seen:
                seen, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > 3 * window_s + 5:
                break
            time.sleep(0.05)
        cpu_s = suite.proc_cpu_s(proc.pid) - cpu0
        threads = suite.thread_cpu(proc.pid)
        hwm_kb = suite.proc_status_kb(proc.pid, "VmHWM") or 0
        proc.send_signal(signal.SIGTERM)
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm_kb = max(hwm_kb, suite.proc_status_kb(proc.pid, "VmHWM") or 0)
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        suite.reap(ld)
        suite.reap(proc)
        rcv.close()
    with rcv.lock:
        got = {"records": rcv.records, "sum_quantity": rcv.sum_q,
               "sum_quantity_hash": rcv.sum_qh, "rows": rcv.rows, "keys": len(rcv.keys),
               "unparsed_rows": rcv.bad}
        last_wall = rcv.last_wall
    for k in ("records", "sum_quantity", "sum_quantity_hash"):
        if got[k] != truth[k]:
            problems.append("%s: %s out, %s in" % (k, got[k], truth[k]))
    if proc.returncode != 0:
        problems.append("fluent-bit exit code %s" % proc.returncode)
    span = (last_wall - truth["start_wall_ns"] / 1e9) if last_wall else 0
    r = {"name": name, "target": "fluent-bit", "records": records, "keys_nominal": keys,
         "window_s": window_s, "fbload": truth, "received": got,
         "records_per_s_in": truth["send_records_per_s"],
         "records_per_s_e2e": round(records / span) if span > 0 else 0,
         "cpu_s": round(cpu_s, 3),
         "cpu_s_per_m_records": round(cpu_s / (records / 1e6), 3),
         "thread_cpu_s": threads,
         "peak_rss_mib": round(hwm_kb / 1024, 1), "peak_rss_source": "poll",
         "idle_rss_mib": round(idle_kb / 1024, 1) if idle_kb else None,
         "exact": not problems, "problems": problems,
         "log_tail": open(errlog).read()[-2000:]}
    print("  %-28s %-10s %s %7.3f M rec/s in, %7.3f e2e, rss %6.1f MiB, cpu %.2f s/M%s" % (
        name, "fluent-bit", "OK  " if not problems else "FAIL", r["records_per_s_in"] / 1e6,
        r["records_per_s_e2e"] / 1e6, r["peak_rss_mib"], r["cpu_s_per_m_records"],
        "" if not problems else "  " + "; ".join(problems)), flush=True)
    if problems:
        s.failures.append((name, problems))
    return r


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fluent-bit", default=os.environ.get("FLUENT_BIT"),
                    help="the Fluent Bit binary (default $FLUENT_BIT)")
    ap.add_argument("--build", default=os.path.join(suite.ROOT, "build"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--window-s", type=int, default=1,
                    help="Fluent Bit's tumbling window, seconds")
    a = ap.parse_args()
    fb = a.fluent_bit
    if not fb or not os.path.isfile(fb) or not os.access(fb, os.X_OK):
        print("bench-peer: FLUENT_BIT=%s is not an executable file; point it at a Fluent Bit "
              "binary (FLUENT_BIT=/path/to/fluent-bit make bench-peer); nothing is built or "
              "fetched here" % (fb or "(unset)"), file=sys.stderr)
        return 2
    fb = os.path.abspath(fb)
    out = a.out or os.path.join(a.build, "bench", "results")
    os.makedirs(out, exist_ok=True)
    s = suite.Suite(a.build, out)
    atexit.register(shutil.rmtree, s.tmp, True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench-peer: SIGTERM"))
    version = suite.sh("%s --version | head -1" % fb)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dw = max(1, (os.cpu_count() or 1) // 2)
    res = {"suite": "peer", "started": stamp, "machine": suite.machine(),
           "loadavg_start": open("/proc/loadavg").read().split()[:3],
           "commands": {"suite": " ".join([os.path.relpath(sys.argv[0], suite.ROOT)] +
                                          sys.argv[1:])},
           "fluent_bit": fb, "fluent_bit_version": version, "records": a.records,
           "keys": a.keys, "window_s": a.window_s, "pairs": []}
    print("bench-peer: floorpost vs %s, %d records, %d open keys, %d pairs" %
          (version or fb, a.records, a.keys, a.pairs), flush=True)
    try:
        for i in range(a.pairs):
            tag = " #%d" % (i + 1)
            f = s.run("floorpost" + tag, workers=dw, shards=dw, records=a.records, keys=a.keys)
            p = run_fluent_bit(s, fb, "fluent-bit" + tag, a.records, a.keys, a.window_s)
            res["pairs"].append({"floorpost": f, "fluent_bit": p})
    finally:
        suite.kill_leftovers(s.failures)
    med = {}
    for who in ("floorpost", "fluent_bit"):
        runs = [x[who] for x in res["pairs"]]
        med[who] = {k: median(r[k] for r in runs) for k in
                    ("records_per_s_in", "records_per_s_e2e", "cpu_s_per_m_records",
                     "peak_rss_mib")}
    res["medians"] = med
    res["failures"] = s.failures
    res["exact"] = not s.failures
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    jpath = os.path.join(out, "peer-%s.json" % stamp)
    with open(jpath, "w") as f:
        json.dump(res, f, indent=1)
    md = ["# floorpost vs %s, %s (%d records, %d open keys, medians of %d pairs)\n" %
          (version or "Fluent Bit", stamp, a.records, a.keys, a.pairs),
          "| system | M rec/s in | M rec/s e2e | CPU s / M rec | peak RSS MiB | exact |",
          "|---|---:|---:|---:|---:|---|"]
    for who, label in (("floorpost", "floorpost"), ("fluent_bit", "Fluent Bit (forward, SQL)")):
        m = med[who]
        md.append("| %s | %.3f | %.3f | %s | %s | %s |" % (
            label, (m["records_per_s_in"] or 0) / 1e6, (m["records_per_s_e2e"] or 0) / 1e6,
            m["cpu_s_per_m_records"], m["peak_rss_mib"],
            "yes" if all(x[who]["exact"] for x in res["pairs"]) else "**NO**"))
    md.append("")
    md.append("Fluent Bit's e2e includes up to one %d s window (its results leave at the "
              "window's end); its peak RSS is polled from /proc (VmHWM), floorpost's is its "
              "own (drained line)." % a.window_s)
    mdpath = os.path.join(out, "peer-%s.md" % stamp)
    with open(mdpath, "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    print("bench-peer: wrote %s, %s" % (jpath, mdpath))
    if s.failures:
        print("bench-peer: FAILURE in %s" % ", ".join(n for n, _ in s.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
