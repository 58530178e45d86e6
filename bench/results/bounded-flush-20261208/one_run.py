#!/usr/bin/python3
"""One run of BINARY at fpload's --rate (extra args go to fpload): 1 worker,
1 shard, durability off; per-thread CPU and context switches while fpload ran.
usage: one_run.py BINARY OUTPREFIX [RECORDS [fpload args...]]
With SYSCALLS=1 in the environment, also `perf stat --per-thread` of its poll,
getpid, read, write, recvfrom and sendto calls into OUTPREFIX.perfstat."""
import os, subprocess, sys, time, signal, glob
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from ports import free_port
fp, out = sys.argv[1], sys.argv[2]
recs = int(sys.argv[3]) if len(sys.argv) > 3 else 5000000
extra = sys.argv[4:] 
p = {k: free_port() for k in ("router", "pull", "pub", "dl", "replay", "metrics")}
cfg = out + ".ini"
open(cfg, "w").write("""[service]
instance = bench
ingest_router = tcp://127.0.0.1:%(router)d
ingest_pull = tcp://127.0.0.1:%(pull)d
publish = tcp://127.0.0.1:%(pub)d
deadletter = tcp://127.0.0.1:%(dl)d
replay = tcp://127.0.0.1:%(replay)d
publish_hwm = 2000000
[pipeline]
workers = 1
shards = 1
ingest_hwm = 32
round_interval_ms = 50
[aggregate]
posting_interval_ms = 60000
[durability]
state_dir = ""
[metrics]
metrics_port = %(metrics)d
metrics_address = 127.0.0.1
""" % p)
proc = subprocess.Popen([fp, "run", "-c", cfg], stderr=open(out + ".err", "w"))
time.sleep(0.5)
def snap():
    r = {}
    for t in glob.glob("/proc/%d/task/*" % proc.pid):
        try:
            st = open(t + "/stat").read()
            name = st[st.index("(")+1:st.rindex(")")]
            f = st[st.rindex(")")+2:].split()
            cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            s = dict(l.split(":\t") for l in open(t + "/status").read().splitlines() if ":\t" in l)
            r[name] = (cpu, int(s["voluntary_ctxt_switches"]), int(s["nonvoluntary_ctxt_switches"]))
        except Exception:
            pass
    return r
a = snap()
if os.environ.get("SYSCALLS"):
    ps_ = subprocess.Popen(["perf", "stat", "--per-thread", "-e", ",".join(
        "syscalls:sys_enter_" + c for c in ("poll", "getpid", "read", "write", "recvfrom", "sendto")),
        "-o", out + ".perfstat", "-p", str(proc.pid)])
ld = subprocess.run([os.path.join(ROOT, "build", "bench", "fpload"), "--push", "tcp://127.0.0.1:%d" % p["pull"],
                     "--sub", "tcp://127.0.0.1:%d" % p["pub"], "--records", str(recs), "--keys", "10000",
                     "--json", out + ".json"] + extra, capture_output=True, text=True)
b = snap()
if os.environ.get("SYSCALLS"):
    ps_.send_signal(signal.SIGINT)
    ps_.wait()
proc.send_signal(signal.SIGTERM); proc.wait()
print(ld.stdout.strip().splitlines()[-1][:110])
M = recs / 1e6
for k in sorted(b):
    c0, v0, n0 = a.get(k, (0, 0, 0)); c1, v1, n1 = b[k]
    print("%-14s cpu %.3f s/M  vol %7d  invol %6d" % (k, (c1 - c0) / M, v1 - v0, n1 - n0))
