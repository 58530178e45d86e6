"""e2e: the client libraries (issue 12, item 7): the C library
(<floorpost/subscriber.h> in libfloorpost-gateway.a) and the Python package
(python/floorpost), each under its example subscriber (examples/): the
package pip-installed into a venv, world-readable and importable by another
user; the vendored flatc readers current; gaps filled through the replay
endpoint (a lossy proxy between floorpost and the subscribers, a lost burst
end only the heartbeat shows); what the replay endpoint no longer keeps
reported as lost; CURVE keys."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import zmq

from fp import (COMPLETED, FLOORPOST, PART, PYTHON_PKG, SCRAP, Floorpost, free_port,
                Producer, decode_checkpoint, eq, extra_test, finish_examples, parse_example_line,
                raw_line, rec, replay_all, run_example_subscribers)

CTX = zmq.Context.instance()
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

_VENV = {}


def venv_python():
    """A venv (--system-site-packages: Debian's zmq and flatbuffers) with
    the package pip-installed from a copy of python/, as docs/subscribers.md
    says; made once per run. Returns its interpreter."""
    if "python" in _VENV:
        return _VENV["python"]
    d = tempfile.mkdtemp(prefix="fp-venv-")
    os.chmod(d, 0o755)  # another user imports from it below
    src = os.path.join(d, "src")
    shutil.copytree(PYTHON_PKG, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                   "__pycache__"))
    venv = os.path.join(d, "venv")
    umask = lambda: os.umask(0o022)  # noqa: E731  (pip installs files by the umask)
    for cmd in ([sys.executable, "-m", "venv", "--system-site-packages", venv],
                [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                 "--no-build-isolation", "--no-deps", "--no-index", src]):
        out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=umask)
        eq(out.returncode, 0, "%s: %s" % (" ".join(cmd), out.stdout + out.stderr))
    _VENV.update(python=os.path.join(venv, "bin", "python"), dir=d)
    atexit.register(shutil.rmtree, d, True)
    return _VENV["python"]


def completions(orders, seq0, scrap=True):
    """Records closing one operation per order: a completion (and a scrap)
    checkpoint each."""
    recs, seq = [], seq0
    for o in orders:
        recs.append(rec(seq, PART, "O%04d" % o, qty=o))
        if scrap:
            recs.append(rec(seq + 1, SCRAP, "O%04d" % o, qty=1, reason="SCR-%d" % o))
        recs.append(rec(seq + 2, COMPLETED, "O%04d" % o))
        seq += 3
    return recs


def wait_committed(fp, n, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        evs, _, last = replay_all(CTX, fp.endpoints["replay"])
        if last >= n:
            return evs
        time.sleep(0.05)
    raise AssertionError("fewer than %d events committed" % n)


class LossyProxy(threading.Thread):
    """Forwards floorpost's feed from a SUB to its own XPUB, dropping the
    events whose global_seq is in `drop`: a subscriber behind it sees the
    losses a slow subscriber or a reconnect would."""

    def __init__(self, upstream, drop):
        super().__init__(daemon=True)
        self.sub = CTX.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(upstream)
        self.pub = CTX.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.endpoint = "tcp://127.0.0.1:%d" % self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.drop, self.dropped, self.subscriptions = set(drop), [], []
        self.stopping = False

    def run(self):
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        while not self.stopping:
            for sock, _ in poller.poll(50):
                if sock is self.pub:
                    self.subscriptions.append(self.pub.recv())
                    continue
                parts = self.sub.recv_multipart()
                if parts[0] != b"heartbeat":
                    g = decode_checkpoint(parts[0].decode(), parts[1])["global_seq"]
                    if g in self.drop:
                        self.dropped.append(g)
                        continue
                self.pub.send_multipart(parts)
        self.sub.close(0)
        self.pub.close(0)

    def wait_subscribers(self, n, timeout=10.0):
        end = time.time() + timeout
        while len(self.subscriptions) < n and time.time() < end:
            time.sleep(0.02)
        eq(len(self.subscriptions), n, "subscriptions at the proxy")

    def stop(self):
        self.stopping = True
        self.join(5)


def read_lines(procs, n, timeout=15.0):
    """The first n stdout lines of each process (the rest stays for
    communicate)."""
    out = []
    for p in procs:
        lines = []
        end = time.time() + timeout
        while len(lines) < n and time.time() < end:
            line = raw_line(p.stdout)  # not readline: its read-ahead is lost to communicate
            if not line:
                break
            lines.append(line.rstrip("\n"))
        eq(len(lines), n, "first lines of %s: %r" % (p.args[0], lines))
        out.append(lines)
    return out


API_SCRIPT = r"""
import json, sys
from floorpost import DecodeError, Event, Gap, Heartbeat, Lost, Subscriber, decode
pub, rep = sys.argv[1], sys.argv[2]
try:
    decode(b"FPC1 but not a checkpoint at all")
    sys.exit("decode took garbage")
except DecodeError as e:
    bad = str(e)
got, hbs, notes = [], [], []
def on_message(m):
    if isinstance(m, Event):
        d = m.checkpoint.to_dict()
        d.update(topic=m.topic, replayed=m.replayed)
        got.append(d)
    elif isinstance(m, Heartbeat):
        hbs.append(m.global_seq)
        return len(hbs) >= 2            # stop at the second heartbeat
    elif isinstance(m, (Gap, Lost)):
        notes.append(repr(m))
with Subscriber(pub, prefix="scrap/", replay=rep, from_global_seq=1) as sub:
    sub.run(on_message, idle_timeout_ms=5000)
    print(json.dumps(dict(events=got, heartbeats=hbs, notes=notes, position=sub.position,
                          stats=vars(sub.stats), bad=bad)))
"""


@extra_test
def client_python_package_pip_installs_world_readable():
    """pip install --no-build-isolation --no-deps ./python into a venv,
    offline; every installed file world-readable, importable by another
    user; the package's version is floorpost's."""
    py = venv_python()
    out = subprocess.run([py, "-c", "import floorpost, os; print(os.path.dirname(floorpost.__file__),"
                          " floorpost.__version__)"], capture_output=True, text=True, cwd="/")
    eq(out.returncode, 0, out.stderr)
    pkg, version = out.stdout.split()
    assert pkg.startswith(_VENV["dir"]), "imported %s, not the venv's copy" % pkg
    with open(os.path.join(ROOT, "src", "core", "version.h")) as f:
        want = f.read().split('FP_VERSION "')[1].split('"')[0]
    eq(version, want, "floorpost.__version__ is src/core/version.h's")
    names = set()
    for d, dirs, files in os.walk(pkg):
        assert os.stat(d).st_mode & 0o005 == 0o005, "folder %s is not world-readable" % d
        for f in files:
            p = os.path.join(d, f)
            assert os.stat(p).st_mode & 0o004, "file %s is not world-readable" % p
            names.add(os.path.relpath(p, pkg))
    for f in ("subscriber.py", "decode.py", "checkpoint/Checkpoint.py", "telemetry/Batch.py"):
        assert f in names, "%s not installed: %s" % (f, sorted(names))
    if os.getuid() == 0 and shutil.which("setpriv"):
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py,
                              "-c", "import floorpost.checkpoint.Checkpoint, floorpost.telemetry.Batch,"
                              " floorpost; print('ok')"], capture_output=True, text=True, cwd="/")
        eq((out.returncode, out.stdout.strip()), (0, "ok"), "import as nobody: " + out.stderr)
    # the source tree's files are world-readable too (what git checks out)
    if os.path.isdir(os.path.join(ROOT, ".git")) or os.path.isfile(os.path.join(ROOT, ".git")):
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-s", "python"], capture_output=True,
                             text=True)
        modes = {line.split()[0] for line in out.stdout.splitlines()}
        eq(modes, {"100644"}, "git modes of python/")


@extra_test
def client_python_package_against_fakes_like_the_c_library():
    """tests/e2e/client_python_fakes.py: the cases of
    tests/gateway/test_subscriber.c (gaps, resets, heartbeat, a hole asked
    for again, catch-up with a prefix, lost by retention and by timeout,
    callbacks, dead letters) on the pip-installed package."""
    out = subprocess.run([venv_python(), os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "client_python_fakes.py")],
                         capture_output=True, text=True, timeout=60, cwd="/")
    eq((out.returncode, out.stdout.strip()), (0, "ok 11 cases"), out.stderr)


@extra_test
def client_vendored_flatc_readers_are_current():
    """python/floorpost/{checkpoint,telemetry} are what flatc --python makes
    from schema/*.fbs now (`make python-readers` after a schema change)."""
    d = tempfile.mkdtemp(prefix="fp-flatc-")
    try:
        schemas = [os.path.join(ROOT, "schema", f) for f in ("telemetry.fbs", "checkpoint.fbs")]
        out = subprocess.run(["flatc", "--python", "-o", d] + schemas, capture_output=True, text=True)
        eq(out.returncode, 0, out.stderr)
        for ns in ("checkpoint", "telemetry"):
            fresh, vendored = os.path.join(d, "floorpost", ns), os.path.join(PYTHON_PKG, "floorpost", ns)
            names = sorted(f for f in os.listdir(fresh) if f.endswith(".py"))
            eq(sorted(f for f in os.listdir(vendored) if f.endswith(".py")), names,
               "files in python/floorpost/%s (run `make python-readers`)" % ns)
            for f in names:
                with open(os.path.join(fresh, f)) as a, open(os.path.join(vendored, f)) as b:
                    eq(b.read(), a.read(), "python/floorpost/%s/%s differs from flatc's "
                       "(run `make python-readers`)" % (ns, f))
    finally:
        shutil.rmtree(d)


@extra_test
def client_examples_fill_gaps_through_replay():
    """Both examples (C library; Python package from the venv) catch up from
    global_seq 1, then follow the feed through a proxy that drops a middle
    range and the end of a burst: they fill both from the replay endpoint
    (the end only because the heartbeat shows it) and print every event once,
    in global_seq order. Then the Python API: a prefix with replay, callbacks,
    dicts, the position."""
    fp = Floorpost(feed_heartbeat_ms=200).start()
    proxy = None
    try:
        prod = Producer(CTX, fp.endpoints["router"])
        prod.send(31, 1, completions(range(1, 5), 1))      # 8 events: 1..8
        assert prod.wait_acks(1)
        wait_committed(fp, 8)
        proxy = LossyProxy(fp.endpoints["pub"], drop={11, 12, 13, 19, 20})
        proxy.start()
        procs = run_example_subscribers(proxy.endpoint, ["--replay", fp.endpoints["replay"], "--from",
                                                         "1", "--count", "20", "--timeout", "15000"],
                                        python=venv_python())
        first = read_lines(procs, 8)  # the catch-up, before anything is live
        proxy.wait_subscribers(2)
        prod.send(31, 1, completions(range(5, 11), 100))   # 12 events: 9..20
        assert prod.wait_acks(2)
        lines, py_err, c_err = finish_examples(procs)
        eq(first[0], first[1], "the catch-up lines of both")
        lines = first[0] + lines
        outbox, _, last = replay_all(CTX, fp.endpoints["replay"])
        eq(last, 20, "events committed")
        eq(sorted(proxy.dropped), [11, 12, 13, 19, 20], "events the proxy dropped")
        got = [parse_example_line(l) for l in lines]
        eq([e["kind"] for e in got], [e["kind"] for e in outbox], "\n".join(lines))
        eq([e["event_id"] for e in got], [e["event_id"] for e in outbox],
           "every event once, in global_seq order")
        for err in (py_err, c_err):
            assert "20 events, 0 gaps, 0 missing, 0 bad" in err, err
            replayed = int(err.split(" replayed")[0].rsplit("subscriber: ", 1)[1])
            assert replayed >= 13, err  # the catch-up (8), the middle (3), the burst end (2)
            assert "position 20" in err, err

        out = subprocess.run([venv_python(), "-c", API_SCRIPT, fp.endpoints["pub"],
                              fp.endpoints["replay"]], capture_output=True, text=True, timeout=30,
                             cwd="/")
        eq(out.returncode, 0, out.stderr)
        r = json.loads(out.stdout)
        scraps = [e for e in outbox if e["kind"] == "scrap"]
        eq([(e["event_id"], e["global_seq"], e["reason"], e["parts"], e["topic"])
            for e in r["events"]],
           [(e["event_id"], e["global_seq"], e["reason"], e["parts"], e["topic"]) for e in scraps],
           "scrap/ only, from the catch-up, in order")
        assert all(e["replayed"] and e["kind"] == "scrap" for e in r["events"]), r["events"]
        eq((r["position"], r["heartbeats"][-1], r["notes"], r["bad"]), (20, 20, [], "wrong_identifier"),
           "position, heartbeat, no gaps, decode error")
        eq(r["stats"]["events"], len(scraps), "stats")
    finally:
        if proxy:
            proxy.stop()
        fp.kill()


@extra_test
def client_examples_report_what_replay_no_longer_keeps():
    """A fake feed skips global_seq 3..4 and a fake replay endpoint says its
    oldest is 5: both examples print a `lost` line (and the topic's gap),
    then go on; both asked "REPLAY 3 2"."""
    fp = Floorpost().start()
    raw = CTX.socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"completion/")
    raw.setsockopt(zmq.RCVHWM, 0)
    raw.connect(fp.endpoints["pub"])
    time.sleep(0.3)
    prod = Producer(CTX, fp.endpoints["router"])
    prod.send(32, 1, completions(range(1, 6), 1, scrap=False))  # completions 1..5
    assert prod.wait_acks(1)
    frames = []
    while len(frames) < 5 and raw.poll(5000):
        frames.append(raw.recv_multipart())
    raw.close(0)
    prod.close()
    fp.kill()
    eq([decode_checkpoint(f[0].decode(), f[1])["global_seq"] for f in frames], [1, 2, 3, 4, 5],
       "real frames")
    xpub = CTX.socket(zmq.XPUB)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
    feed = "tcp://127.0.0.1:%d" % xpub.bind_to_random_port("tcp://127.0.0.1")
    router = CTX.socket(zmq.ROUTER)
    rep = "tcp://127.0.0.1:%d" % router.bind_to_random_port("tcp://127.0.0.1")
    try:
        procs = run_example_subscribers(feed, ["--replay", rep, "--count", "3", "--timeout",
                                               "10000"], python=venv_python())
        eq([xpub.recv() for _ in range(2)], [b"\x01"] * 2, "subscriptions")
        for f in frames[:2] + frames[4:]:
            xpub.send_multipart(f)
        asks = []
        while len(asks) < 2 and router.poll(10000):
            ident, req = router.recv_multipart()
            asks.append(req)
            router.send_multipart([ident, b"END", b"3 5 5"])
        eq(asks, [b"REPLAY 3 2"] * 2, "the requests")
        lines, py_err, c_err = finish_examples(procs)
        got = [parse_example_line(l) for l in lines]
        eq([e["kind"] for e in got], ["completion", "completion", "lost", "gap", "completion"],
           "\n".join(lines))
        eq((got[2]["first"], got[2]["last"], got[2]["missing"]), ("3", "4", "2"), "lost line")
        eq((got[3]["expected"], got[3]["got"]), ("3", "5"), "the topic's gap")
        for err in (py_err, c_err):
            assert "lost: no longer retained (the oldest kept is 5)" in err, err
    finally:
        xpub.close(0)
        router.close(0)


@extra_test
def client_examples_with_curve_keys():
    """With CURVE on, both examples take a `floorpost keygen` pair and the
    server's .pub: catch-up and live feed over CURVE; a key floorpost does
    not list is named as refused (exit 3), not a silent feed."""
    fp = Floorpost()
    keys = {}
    for name in ("server", "client"):
        base = os.path.join(fp.dir, name)
        out = subprocess.run([FLOORPOST, "keygen", "-o", base], capture_output=True, text=True)
        eq(out.returncode, 0, "keygen: " + out.stderr)
        keys[name] = base
    allow = os.path.join(fp.dir, "allow.txt")
    producer_pub, producer_secret = zmq.curve_keypair()
    with open(keys["client"] + ".pub") as f, open(allow, "w") as out:
        out.write("%s client\n%s producer\n" % (f.read().split("=", 1)[1].strip(),
                                                producer_pub.decode()))
    with open(fp.config, "a") as f:
        f.write("[security]\ncurve_secret_key_file = %s.key\ncurve_allow_file = %s\n"
                % (keys["server"], allow))
    fp.start()
    with open(keys["server"] + ".pub") as f:
        server_pub = f.read().split("=", 1)[1].strip().encode()
    prod = Producer(CTX, fp.endpoints["router"], curve=(server_pub, producer_pub, producer_secret))
    prod.send(33, 1, completions(range(1, 3), 1, scrap=False))
    assert prod.wait_acks(1), "acks over CURVE"
    procs = run_example_subscribers(fp.endpoints["pub"], [
        "--replay", fp.endpoints["replay"], "--from", "1", "--server-key", keys["server"] + ".pub",
        "--key", keys["client"] + ".key", "--count", "4", "--timeout", "15000"],
        python=venv_python())
    first = read_lines(procs, 2)  # caught up over CURVE
    time.sleep(0.5)               # PUB/SUB: the subscriptions arrive (no signal for it)
    prod.send(33, 1, completions(range(3, 5), 10, scrap=False))
    assert prod.wait_acks(2)
    lines, py_err, c_err = finish_examples(procs)
    eq(first[0], first[1], "catch-up lines")
    got = [parse_example_line(l) for l in first[0] + lines]
    eq([(e["kind"], e["seq"]) for e in got], [("completion", str(i)) for i in range(1, 5)],
       "\n".join(lines))
    eq(sorted(e["order"] for e in got), ["O%04d" % i for i in range(1, 5)], "orders")
    # a key floorpost does not list: named as refused, exit 3 (not a silent feed)
    stranger = os.path.join(fp.dir, "stranger")
    out = subprocess.run([FLOORPOST, "keygen", "-o", stranger], capture_output=True, text=True)
    eq(out.returncode, 0, "keygen: " + out.stderr)
    procs = run_example_subscribers(fp.endpoints["pub"], [
        "--server-key", keys["server"] + ".pub", "--key", stranger + ".key", "--timeout", "10000"],
        python=venv_python())
    for p in procs:
        _, err = p.communicate(timeout=15)
        eq(p.returncode, 3, "exit code with a refused key: " + err)
        assert "authentication refused: floorpost at %s refused this subscriber's CURVE key (ZAP " \
               "400: not on its allow list)" % fp.endpoints["pub"] in err, err
    prod.close()
    fp.kill()


# ---- the Prometheus rules and the Grafana dashboard (configs/) ----------------

RULES = os.path.join(ROOT, "configs", "floorpost-rules.yml")
DASHBOARD = os.path.join(ROOT, "configs", "grafana-floorpost.json")
# Words of PromQL that are not metric names (functions are, followed by "(").
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}
PROMETHEUS_OWN = {"up"}  # made by Prometheus for each scrape, not by floorpost


def promql_metrics(expr):
    """The metric names an expression reads."""
    import re
    e = re.sub(r'"(\\.|[^"\\])*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                     # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                    # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0) in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def dashboard_exprs(dash):
    out = []
    for p in dash["panels"]:
        out.extend(t["expr"] for t in p.get("targets", []))
        for sub in p.get("panels", []):
            out.extend(t["expr"] for t in sub.get("targets", []))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append(v["query"]["query"].replace("label_values(", "").split(",")[0])
    return out


@extra_test
def client_rules_and_dashboard_check_and_use_real_metrics():
    """configs/floorpost-rules.yml passes promtool check rules and its unit
    tests; the Grafana dashboard is valid; every metric either names exists
    in a running floorpost's /metrics (with a sink and a producer, so every
    family is there), and the rules cover the documented alerts."""
    import yaml
    from fp import scrape
    promtool = shutil.which("promtool")
    assert promtool, "no promtool: Debian package prometheus (make deps)"
    out = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True)
    eq(out.returncode, 0, out.stdout + out.stderr)
    test_file = os.path.join(ROOT, "tests", "configs", "floorpost-rules.test.yml")
    out = subprocess.run([promtool, "test", "rules", test_file], capture_output=True, text=True)
    eq(out.returncode, 0, out.stdout + out.stderr)
    with open(RULES) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    with open(DASHBOARD) as f:
        dash = json.load(f)
    ids = [p["id"] for p in dash["panels"]]
    eq(len(ids), len(set(ids)), "panel ids unique")
    for p in dash["panels"]:
        if p["type"] != "row":
            eq(p["datasource"]["uid"], "${datasource}", "panel %r data source" % p["title"])
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
    used = {}
    for r in rules:
        for n in promql_metrics(r["expr"]):
            used.setdefault(n, "rule " + r["alert"])
    for e in dashboard_exprs(dash):
        for n in promql_metrics(e):
            used.setdefault(n, "dashboard: " + e)
    # the documented alerts (docs/operations.md "Alerts", docs/sinks.md)
    for n in ("floorpost_commit_stalled", "floorpost_dead_letters_total",
              "floorpost_round_seconds_bucket", "floorpost_stage_busy_seconds_total",
              "floorpost_stage_queue_messages", "floorpost_rounds_total",
              "floorpost_events_published_total", "floorpost_process_resident_memory_bytes",
              "floorpost_sink_lag_seconds", "floorpost_sink_state", "floorpost_state_used_bytes"):
        assert any(n in promql_metrics(r["expr"]) for r in rules), "no rule reads " + n
    assert any('state=~"open|detached"' in r["expr"] for r in rules), "sink open|detached rule"

    port = free_port()
    d = tempfile.mkdtemp(prefix="fp-metrics-")
    fp = Floorpost(metrics_port=port, sinks={"files": {"type": "jsonl", "directory": d}}).start()
    try:
        prod = Producer(CTX, fp.endpoints["router"])
        prod.send(34, 1, completions([1], 1))
        assert prod.wait_acks(1)
        prod.close()
        time.sleep(0.5)  # a few rounds: every stage has published its gauges
        status, text = scrape(port)
        eq(status, 200, "/metrics")
    finally:
        fp.kill()
        shutil.rmtree(d, ignore_errors=True)
    have = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            have.add(line.split()[2])
        elif line and not line.startswith("#"):
            have.add(line.split("{")[0].split(" ")[0])
    missing = {n: where for n, where in used.items() if n not in have and n not in PROMETHEUS_OWN}
    eq(missing, {}, "metric names the rules and the dashboard use that floorpost does not serve")
    assert len(used) >= 30, sorted(used)


def doc_block(lang, first_line):
    """The fenced code block of docs/subscribers.md that starts with first_line."""
    with open(os.path.join(ROOT, "docs", "subscribers.md")) as f:
        text = f.read()
    start = text.index("```%s\n%s" % (lang, first_line)) + len(lang) + 4
    return text[start:text.index("```", start)]


@extra_test
def client_quick_starts_in_the_docs_work():
    """The two programs of docs/subscribers.md's quick starts: the C one
    built with `pkg-config --cflags --libs floorpost` (pointed at the
    build tree), the Python one run on the pip-installed package. Both
    catch up from global_seq 1, then follow the feed, and print the same
    lines: every committed event once, in order."""
    build = os.path.dirname(FLOORPOST)
    d = tempfile.mkdtemp(prefix="fp-quick-")
    with open(os.path.join(d, "quickstart.c"), "w") as f:
        f.write(doc_block("c", "/* quickstart.c"))
    with open(os.path.join(d, "quickstart.py"), "w") as f:
        f.write(doc_block("python", "# quickstart.py"))
    out = subprocess.run(["pkg-config", "--define-variable=includedir=" + os.path.join(build, "include"),
                          "--define-variable=libdir=" + build, "--cflags", "--libs",
                          os.path.join(build, "floorpost.pc")], capture_output=True, text=True)
    eq(out.returncode, 0, "pkg-config: " + out.stderr)
    san = ["-fsanitize=address,undefined"] if os.environ.get("FP_SAN") == "1" else []
    cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o",
                         os.path.join(d, "quickstart"), os.path.join(d, "quickstart.c")] + san
                        + out.stdout.split(), capture_output=True, text=True)
    eq(cc.returncode, 0, "cc quickstart.c: " + cc.stderr)
    fp = Floorpost(feed_heartbeat_ms=200).start()
    procs = []
    try:
        prod = Producer(CTX, fp.endpoints["router"])
        prod.send(35, 1, completions(range(1, 4), 1))      # 6 events
        assert prod.wait_acks(1)
        wait_committed(fp, 6)
        args = [fp.endpoints["pub"], fp.endpoints["replay"]]
        for cmd in ([os.path.join(d, "quickstart")], [venv_python(), os.path.join(d, "quickstart.py")]):
            procs.append(subprocess.Popen(cmd + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, cwd=d))
        first = read_lines(procs, 6)                       # the catch-up
        prod.send(35, 1, completions(range(4, 6), 20))     # 4 more, live
        assert prod.wait_acks(2)
        more = read_lines(procs, 4)
        prod.close()
        outbox, _, _ = replay_all(CTX, fp.endpoints["replay"])
        want = ["%d %s %s order=%s op=%s" % (e["global_seq"], e["topic"], e["event_id"], e["order"],
                                             e["operation"]) for e in outbox]
        eq(len(want), 10, "events committed")
        for i in range(2):
            eq(first[i] + more[i], want, "quick start %d: every event once, in order" % i)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        fp.kill()
        shutil.rmtree(d, ignore_errors=True)
