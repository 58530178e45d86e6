#!/usr/bin/python3
"""floorpost benchmark suite driver (issue 3). Run with Debian's /usr/bin/python3.

    make bench        quick suite (< 5 minutes)
    make bench-full   everything (1e7 keys, all thread layouts, ipc and acked; no burst yet)

Every scenario starts a fresh processor (build/floorpost, or the forwarder
for the ceiling) on free loopback ports, runs build/bench/fpload against it
(its own process), waits for "SENT", reads the processor's peak RSS (VmHWM)
from /proc, sends SIGTERM, reaps it with wait4 (CPU seconds, max RSS
including the drain), parses its `msg="drained"` log line, closes fpload's
stdin so it checks the totals, and collects fpload's JSON.

A run whose totals are not exact (fpload FAILURE, records_accepted !=
unique records sent, or a processor exit code != 0) makes the whole suite
fail (exit 1) after writing its results.

Output in build/bench/results/: run-<stamp>.json (machine, parameters,
every figure), run-<stamp>.md (tables), latency.png and keys.png (gnuplot),
and latest.{json,md} copies.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource  # noqa: F401  (wait4 rusage fields)
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    try:
        import zmq
        zmq_version = zmq.zmq_version()
    except Exception:  # noqa: BLE001
        zmq_version = sh("dpkg-query -W -f '${Version}' libzmq5")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mib": mem_kb // 1024,
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "libzmq": zmq_version,
        "flatbuffers": sh("flatc --version"),
        "jemalloc": sh("dpkg-query -W -f '${Version}' libjemalloc2"),
        "gcc": sh("gcc --version | head -1"),
        "git_commit": sh("git -C %s rev-parse --short HEAD" % ROOT),
        "git_dirty": bool(sh("git -C %s status --porcelain -- src bench" % ROOT)),
    }


class Suite:
    def __init__(self, build, outdir, verbose=True):
        self.build = build
        self.fp = os.path.join(build, "floorpost")
        self.fpload = os.path.join(build, "bench", "fpload")
        self.fwd = os.path.join(build, "bench", "forwarder")
        self.outdir = outdir
        self.tmp = tempfile.mkdtemp(prefix="fpbench-")
        self.runs = []
        self.failures = []

    def _config(self, ports, workers, shards, transport, posting_ms):
        if transport == "ipc":
            ep = {k: "ipc://%s/%s.sock" % (self.tmp, k) for k in ("router", "pull", "pub", "dl")}
        else:
            ep = {k: "tcp://127.0.0.1:%d" % ports[k] for k in ("router", "pull", "pub", "dl")}
        path = os.path.join(self.tmp, "floorpost.ini")
        with open(path, "w") as f:
            f.write("""# written by bench/run.py
[service]
instance = bench
ingest_router = %s
ingest_pull = %s
publish = %s
deadletter = %s
[pipeline]
workers = %d
shards = %d
# small producer-side buffers: the sender feels back-pressure at once, so
# records/s in is what the pipeline sustains
ingest_hwm = 32
[aggregate]
posting_interval_ms = %d
[metrics]
metrics_port = 0
""" % (ep["router"], ep["pull"], ep["pub"], ep["dl"], workers, shards, posting_ms))
        return path, ep

    def run(self, name, target="floorpost", workers=1, shards=1, transport="tcp", acked=False,
            posting_ms=60000, **load):
        ports = {k: free_port() for k in ("router", "pull", "pub", "dl")}
        cfg, ep = self._config(ports, workers, shards, transport, posting_ms)
        errlog = os.path.join(self.tmp, "proc.err")
        if target == "forwarder":
            args = [self.fwd, "--router" if acked else "--pull",
                    ep["router"] if acked else ep["pull"], "--pub", ep["pub"]]
        else:
            args = [self.fp, "run", "-c", cfg]
        with open(errlog, "w") as ef:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=ef)
        time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit("bench: %s exited at start: %s" % (target, open(errlog).read()))
        jpath = os.path.join(self.tmp, "load.json")
        largs = [self.fpload, "--router" if acked else "--push",
                 ep["router"] if acked else ep["pull"], "--sub", ep["pub"], "--wait-stdin",
                 "--json", jpath]
        if target == "forwarder":
            largs.append("--forwarder")
        for k, v in load.items():
            largs += ["--" + k.replace("_", "-"), str(v)]
        t0 = time.monotonic()
        ld = subprocess.Popen(largs, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        sent_line = ld.stdout.readline()
        if not sent_line.startswith("SENT"):
            proc.kill()
            proc.wait()
            raise SystemExit("bench: fpload failed before SENT: %r" % sent_line)
        hwm_kb = 0
        with open("/proc/%d/status" % proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM"):
                    hwm_kb = int(line.split()[1])
        with open("/proc/%d/stat" % proc.pid) as f:
            st = f.read().rsplit(")", 1)[1].split()
            cpu_at_sent = (int(st[11]) + int(st[12])) / CLK_TCK  # utime, stime
        proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop_s = time.monotonic() - t_term
        ld.stdin.close()
        rest = ld.stdout.read()
        lrc = ld.wait()
        wall = time.monotonic() - t0
        err = open(errlog).read()
        drained = [line for line in err.splitlines() if 'msg="drained"' in line and
                   ("component=main" in line or "who=forwarder" in line)]
        kv = dict(re.findall(r"(\w+)=(\d+)", drained[-1])) if drained else {}
        shard_keys = sum(int(m) for m in re.findall(r'component=shard-\d+ msg="drained" keys=(\d+)',
                                                     err))
        lj = json.load(open(jpath)) if os.path.exists(jpath) else {"ok": False}
        uniq = lj.get("sent", {}).get("unique_records", 0)
        proc_cpu = ru.ru_utime + ru.ru_stime
        problems = []
        if lrc != 0 or not lj.get("ok"):
            problems.append("fpload: " + (lj.get("failure") or rest.strip()))
        if proc.returncode != 0:
            problems.append("%s exit code %s" % (target, proc.returncode))
        marks = lj.get("sent", {}).get("marker_records", 0)
        if target == "floorpost" and int(kv.get("records_accepted", -1)) != uniq + marks:
            problems.append("records_accepted %s != unique records sent %d + %d end markers" %
                            (kv.get("records_accepted"), uniq, marks))
        drain_ms = int(kv.get("ms", 0))
        r = {
            "name": name, "target": target, "workers": workers, "shards": shards,
            "transport": transport, "acked": acked, "posting_interval_ms": posting_ms,
            "load": load, "fpload": lj, "exact": not problems, "problems": problems,
            # until the last send (the sender feels back-pressure: small HWMs)
            "records_per_s_in": lj.get("sent", {}).get("send_records_per_s", 0),
            # until every source's end marker came out of the processor's feed
            "records_per_s_e2e": lj.get("sent", {}).get("records_per_s", 0),
            "drain_ms": drain_ms, "stop_s": round(stop_s, 3),
            "peak_rss_mib_before_term": round(hwm_kb / 1024, 1),
            "peak_rss_mib": round(max(hwm_kb, ru.ru_maxrss) / 1024, 1),
            "cpu_s": round(proc_cpu, 3), "cpu_s_until_sent": round(cpu_at_sent, 3),
            "cpu_s_per_m_records": round(proc_cpu / (uniq / 1e6), 3) if uniq else None,
            "keys_held_at_drain": shard_keys if target == "floorpost" else None,
            "processor_summary": kv, "wall_s": round(wall, 2),
        }
        self.runs.append(r)
        lat = lj.get("latency_ms", {})
        print("  %-28s %-9s %s %7.3f M rec/s in, %7.3f e2e, p50 %8.3f p99 %8.3f ms, rss %6.1f MiB,"
              " cpu %.2f s/M%s" % (name, target, "OK  " if not problems else "FAIL",
                                   r["records_per_s_in"] / 1e6, r["records_per_s_e2e"] / 1e6,
                                   lat.get("p50", 0), lat.get("p99", 0), r["peak_rss_mib"],
                                   r["cpu_s_per_m_records"] or 0,
                                   "" if not problems else "  " + "; ".join(problems)),
              flush=True)
        if problems:
            self.failures.append((name, problems))
        return r


def gnuplot(script):
    if not shutil.which("gnuplot"):
        print("bench: gnuplot not found; no plots")
        return
    subprocess.run(["gnuplot"], input=script, text=True, check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = a.out or os.path.join(a.build, "bench", "results")
    os.makedirs(out, exist_ok=True)
    s = Suite(a.build, out)
    full = a.full
    cores = os.cpu_count() or 1
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    t_start = time.monotonic()
    res = {"suite": "full" if full else "quick", "started": stamp, "machine": machine()}
    print("bench: %s suite, %d cores, results in %s" % (res["suite"], cores, out), flush=True)

    # 1. micro benchmarks (one core)
    mj = os.path.join(out, "micro-%s.json" % stamp)
    mic = subprocess.run([os.path.join(a.build, "bench", "bench_micro"), "--json", mj] +
                         ([] if full else ["--quick"]), text=True, capture_output=True)
    print(mic.stdout, end="")
    if mic.returncode != 0:
        s.failures.append(("micro", [mic.stderr.strip()]))
    res["micro"] = json.load(open(mj)) if os.path.exists(mj) else None

    n_max = 12_000_000 if full else 5_000_000
    keys = 10000
    # 2. ceiling and max sustained throughput, 10,000 open keys, default layout
    dw = max(1, cores // 2)
    print("max throughput, %d open keys, batch 256, tcp:" % keys, flush=True)
    ceil = s.run("ceiling", target="forwarder", records=n_max, keys=keys)
    best = s.run("max", workers=dw, shards=dw, records=n_max, keys=keys)
    res["ceiling_records_per_s"] = ceil["records_per_s_e2e"]
    res["max_records_per_s"] = best["records_per_s_e2e"]
    res["ratio_to_ceiling"] = best["records_per_s_e2e"] / ceil["records_per_s_e2e"]
    if full:
        s.run("ceiling ipc", target="forwarder", transport="ipc", records=n_max, keys=keys)
        s.run("max ipc", workers=dw, shards=dw, transport="ipc", records=n_max, keys=keys)
        s.run("max acked", workers=dw, shards=dw, acked=True, records=n_max, keys=keys)

    # 3. latency at 10/50/90 % of max (open loop)
    print("latency at fractions of max (%.2f M rec/s):" % (best["records_per_s_e2e"] / 1e6),
          flush=True)
    dur = 10 if full else 3
    res["latency"] = []
    for frac in (0.1, 0.5, 0.9):
        rate = int(best["records_per_s_e2e"] * frac)
        r = s.run("latency %d%%" % int(frac * 100), workers=dw, shards=dw, rate=rate,
                  records=max(rate * dur, 100000), keys=keys)
        res["latency"].append({"load_pct": int(frac * 100), "rate": rate,
                               **r["fpload"].get("latency_ms", {}),
                               "sender_late_batches": r["fpload"]["sent"]["late_batches"]})

    # 4. key cardinality sweep
    print("key cardinality sweep:", flush=True)
    res["keys"] = []
    for k in ([1000, 100000, 1000000, 10000000] if full else [1000, 100000, 1000000]):
        # ~5 records per key so that nearly every key has been touched
        r = s.run("keys %g" % k, workers=dw, shards=dw, records=max(3_000_000, 5 * k), keys=k)
        res["keys"].append({"keys_nominal": k, "keys_held": r["keys_held_at_drain"],
                            "records_per_s": r["records_per_s_e2e"],
                            "records_per_s_in": r["records_per_s_in"],
                            "peak_rss_mib": r["peak_rss_mib"],
                            "cpu_s_per_m_records": r["cpu_s_per_m_records"],
                            "drain_ms": r["drain_ms"]})

    # 5. thread scaling
    print("thread scaling (workers x shards):", flush=True)
    res["scaling"] = []
    layouts = [(w, sh_) for w in range(1, cores + 1) for sh_ in range(1, cores + 1)] if full \
        else [(1, 1), (cores, cores)]
    for w, sh_ in layouts:
        if (w, sh_) == (dw, dw):
            r = best
        else:
            r = s.run("scaling %dx%d" % (w, sh_), workers=w, shards=sh_, records=n_max, keys=keys)
        res["scaling"].append({"workers": w, "shards": sh_, "records_per_s": r["records_per_s_e2e"],
                               "cpu_s_per_m_records": r["cpu_s_per_m_records"]})

    # 6. dedup-heavy: 30 % duplicate batches, 5 % reordered, 2 producer restarts, acked
    print("dedup-heavy:", flush=True)
    r = s.run("dedup-heavy", workers=dw, shards=dw, acked=True, records=n_max // 2, keys=keys,
              dup_pct=30, reorder_pct=5, restarts=2)
    res["dedup_heavy"] = {"records_per_s": r["records_per_s_e2e"],
                          "duplicates": r["processor_summary"].get("duplicates"),
                          "epoch_changes": r["processor_summary"].get("epoch_changes")}

    # 7. shift-change burst (10x base rate for 5 s, time to recover): NOT YET
    #    IMPLEMENTED - fpload needs a rate profile (--burst-at/--burst-secs/
    #    --burst-mult) and per-100 ms latency windows first.

    res["runs"] = s.runs
    res["failures"] = s.failures
    res["exact"] = not s.failures
    res["seconds"] = round(time.monotonic() - t_start, 1)

    # ---- outputs ----
    jpath = os.path.join(out, "run-%s.json" % stamp)
    with open(jpath, "w") as f:
        json.dump(res, f, indent=1)
    md = []
    m = res["micro"] or {}
    md.append("# floorpost benchmark %s (%s suite, %s, %d cores)\n" %
              (stamp, res["suite"], res["machine"]["cpu_model"], cores))
    if m:
        v = m["verify_read_dedup"]
        md.append("| micro (one core) | ns/record | M/s |\n|---|---:|---:|")
        md.append("| verify+read+dedup, batch 256 | %.2f | %.1f |" % (v["ns_per_record"],
                                                                    v["m_records_per_s"]))
        for u in m["agg_upsert"]:
            md.append("| agg_add upserts, %d keys | %.2f | %.1f |" % (u["keys"], u["ns_per_record"],
                                                                   u["m_upserts_per_s"]))
        md.append("")
    md.append("| run | target | workers x shards | M rec/s in | M rec/s e2e | p50 ms | p90 ms | "
              "p99 ms | p99.9 ms | max ms | peak RSS MiB | CPU s / M rec | exact |")
    md.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in s.runs:
        lat = r["fpload"].get("latency_ms", {})
        md.append("| %s | %s | %dx%d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.1f | %s | %s |"
                  % (r["name"], r["target"], r["workers"], r["shards"],
                     r["records_per_s_in"] / 1e6, r["records_per_s_e2e"] / 1e6,
                     lat.get("p50", 0), lat.get("p90", 0), lat.get("p99", 0), lat.get("p999", 0),
                     lat.get("max", 0), r["peak_rss_mib"], r["cpu_s_per_m_records"],
                     "yes" if r["exact"] else "**NO**"))
    md.append("")
    md.append("floorpost / ceiling at %d open keys: %.1f %% (%.3f / %.3f M records/s)" %
              (keys, 100 * res["ratio_to_ceiling"], res["max_records_per_s"] / 1e6,
               res["ceiling_records_per_s"] / 1e6))
    if "burst" in res:
        md.append("")
        md.append("shift-change burst: %s" % json.dumps(res["burst"]))
    md.append("")
    md.append("Latency is timed on final completions (OperationCompleted); partial checkpoints "
              "follow the posting interval (60 s here) and the drain, and are not timed.")
    md.append("Exact totals in every run: %s" % ("yes" if res["exact"] else "NO: %s" % s.failures))
    mdpath = os.path.join(out, "run-%s.md" % stamp)
    with open(mdpath, "w") as f:
        f.write("\n".join(md) + "\n")

    lat_dat = os.path.join(out, "latency.dat")
    with open(lat_dat, "w") as f:
        f.write("# load_pct rate p50 p90 p99 p999 max (ms)\n")
        for x in res["latency"]:
            f.write("%d %d %f %f %f %f %f\n" % (x["load_pct"], x["rate"], x.get("p50", 0),
                                                 x.get("p90", 0), x.get("p99", 0),
                                                 x.get("p999", 0), x.get("max", 0)))
    keys_dat = os.path.join(out, "keys.dat")
    with open(keys_dat, "w") as f:
        f.write("# keys_nominal keys_held Mrec_per_s peak_rss_mib\n")
        for x in res["keys"]:
            f.write("%d %d %f %f\n" % (x["keys_nominal"], x["keys_held"] or 0,
                                       x["records_per_s"] / 1e6, x["peak_rss_mib"]))
    gnuplot("""
set terminal pngcairo size 900,560 font "sans,11"
set output "%(out)s/latency.png"
set title "floorpost end-to-end latency vs offered load (%(keys)d open keys, final completions)"
set xlabel "offered load, %% of max sustained throughput (%(max).2f M records/s)"
set ylabel "latency, ms (log)"
set logscale y
set grid
set key left top
set xrange [0:100]
plot "%(lat)s" using 1:3 with linespoints lw 2 title "p50", \
     "" using 1:4 with linespoints lw 2 title "p90", \
     "" using 1:5 with linespoints lw 2 title "p99", \
     "" using 1:6 with linespoints lw 2 title "p99.9", \
     "" using 1:7 with linespoints lw 2 title "max"
set output "%(out)s/keys.png"
unset logscale
set title "floorpost throughput and peak RSS vs open keys"
set xlabel "open keys (nominal, log)"
set logscale x
set xrange [*:*]
set ylabel "M records/s"
set y2label "peak RSS, MiB"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set key left top
plot "%(kd)s" using 1:3 axes x1y1 with linespoints lw 2 title "throughput (M records/s)", \
     "" using 1:4 axes x1y2 with linespoints lw 2 title "peak RSS (MiB)"
""" % {"out": out, "keys": keys, "max": res["max_records_per_s"] / 1e6, "lat": lat_dat,
       "kd": keys_dat})
    for src, dst in ((jpath, "latest.json"), (mdpath, "latest.md")):
        shutil.copyfile(src, os.path.join(out, dst))
    print("\n".join(md))
    print("bench: wrote %s, %s, latency.png, keys.png in %.0f s" % (jpath, mdpath, res["seconds"]))
    shutil.rmtree(s.tmp, ignore_errors=True)
    if s.failures:
        print("bench: FAILURE: totals not exact in %s" % ", ".join(n for n, _ in s.failures),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
