#!/usr/bin/python3
"""One max run of BINARY under perf record (the fp-shard-0 thread's profile)."""
import os, subprocess, sys, time, signal
sys.path.insert(0, "/work/main/tests/e2e")
from ports import free_port
fp, out = sys.argv[1], sys.argv[2]
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
perf = subprocess.Popen(["perf", "record", "-F", "2000", "-g", "-o", out + ".data", "-p", str(proc.pid)],
                        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
time.sleep(0.5)
ld = subprocess.run(["/work/main/build/bench/fpload", "--push", "tcp://127.0.0.1:%d" % p["pull"],
                     "--sub", "tcp://127.0.0.1:%d" % p["pub"], "--records", "5000000", "--keys", "10000",
                     "--json", out + ".json"], capture_output=True, text=True)
perf.send_signal(signal.SIGINT); perf.wait()
proc.send_signal(signal.SIGTERM); proc.wait()
print(ld.stdout.strip().splitlines()[-1])
