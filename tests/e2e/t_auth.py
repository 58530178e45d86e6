"""e2e: key-to-source binding and source aging (issue 9, item 4). Real
CURVE keys from `floorpost keygen`: a key bound in the allow file
(KEY sources=LIST) that sends another source's batch is refused, counted
(floorpost_sources_not_allowed_total) and dead-lettered as
source_not_allowed, while its own sources and an unbound key's traffic
stay exact; a changed allow file applies without a restart. Without
CURVE: a flood of new source ids from one connection is bounded
([dedup] new_sources_per_peer, too_many_new_sources) while another
producer's new source gets in; a source that left memory ([dedup]
source_idle_ms) comes back from the state: a resend of an old batch is an
acked duplicate (totals exact), also after a restart."""
import os
import subprocess
import threading
import time

import zmq

from fp import (COMPLETED, FLOORPOST, PART, Floorpost, Producer, Subscriber, eq, extra_test,
                free_port, parse_metrics, rec, scrape)

CTX = zmq.Context.instance()


def batch(order, seq0):
    """One final completion of order: 2 records from seq0."""
    return [rec(seq0, PART, order, qty=1), rec(seq0 + 1, COMPLETED, order)]


def metric(fp, name):
    status, body = scrape(fp.ports["metrics"])
    eq(status, 200, "metrics")
    return parse_metrics(body).get(name, 0.0)


def with_metrics(**opts):
    port = free_port()
    fp = Floorpost(metrics_port=port, **opts)
    fp.ports["metrics"] = port
    return fp


def set_dedup(fp, text):
    with open(fp.config) as f:
        cfg = f.read()
    with open(fp.config, "w") as f:
        f.write(cfg.replace("[dedup]\n", "[dedup]\n" + text, 1))


def keygen(fp, name):
    base = os.path.join(fp.dir, name)
    out = subprocess.run([FLOORPOST, "keygen", "-o", base], capture_output=True, text=True)
    eq(out.returncode, 0, "keygen: " + out.stderr)
    keys = {}
    for ext in ("pub", "key"):
        with open(base + "." + ext) as f:
            for line in f:
                name, _, value = line.partition("=")
                if name.strip() in ("public", "secret"):
                    keys[ext if name.strip() == "secret" or ext == "pub" else "-"] = \
                        value.strip().encode()
    return keys


def send_ack(prod, source, epoch, recs):
    n = len(prod.acks)
    prod.send(source, epoch, recs)
    assert prod.wait_acks(n + 1, timeout=20), "no ack for source %d" % source
    a = prod.acks[n]
    eq(a["source_id"], source, "ack's source")
    return a


def orders(sub):
    return sorted(e["order"] for e in sub.snapshot() if e["kind"] == "completion")


def write_allow(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(l + "\n" for l in lines))
    os.rename(tmp, path)  # a new inode: the watch sees the change whatever the mtime


@extra_test
def auth_bound_key_refused_and_reload():
    fp = with_metrics()
    server, a, b = keygen(fp, "server"), keygen(fp, "a"), keygen(fp, "b")
    c = keygen(fp, "subscriber")
    allow = os.path.join(fp.dir, "allow.txt")
    write_allow(allow, ["%s sources=100-101,105 gateway A" % a["pub"].decode(),
                        "public = %s gateway B, unbound" % b["pub"].decode(),
                        "%s subscriber" % c["pub"].decode()])
    with open(fp.config, "a") as f:
        f.write("[security]\ncurve_secret_key_file = %s\ncurve_allow_file = %s\n"
                % (os.path.join(fp.dir, "server.key"), allow))
    fp.start()
    ck = (server["pub"], c["pub"], c["key"])
    sub = CurveSubscriber(fp.endpoints["pub"], ck)
    dl = CurveSubscriber(fp.endpoints["dl"], ck, dead_letter=True)
    sub.start()
    dl.start()
    time.sleep(0.5)  # PUB/SUB: the subscriptions arrive
    pa = Producer(CTX, fp.endpoints["router"], curve=(server["pub"], a["pub"], a["key"]))
    pb = Producer(CTX, fp.endpoints["router"], curve=(server["pub"], b["pub"], b["key"]))
    eq(send_ack(pa, 100, 1, batch("A100", 1))["status"], 0, "A's own source 100")
    eq(send_ack(pa, 105, 1, batch("A105", 1))["status"], 0, "A's own source 105")
    r = send_ack(pa, 200, 1, batch("A200", 1))
    eq((r["status"], r["reason"]), (1, "source_not_allowed"), "A as source 200")
    r = send_ack(pa, 102, 1, batch("A102", 1))
    eq((r["status"], r["reason"]), (1, "source_not_allowed"), "A as source 102")
    eq(send_ack(pb, 200, 1, batch("B200", 1))["status"], 0, "unbound B as 200")
    eq(send_ack(pb, 101, 1, batch("B101", 1))["status"], 0, "unbound B as A's 101")
    assert dl.wait_for(lambda d: len(d) >= 2), dl.snapshot()
    eq(sorted(d["detail"].get("reason") for d in dl.snapshot()),
       ["source_not_allowed"] * 2, "dead letters")
    eq(metric(fp, "floorpost_sources_not_allowed_total"), 2.0, "metric")
    assert sub.wait_for(lambda s: len(orders_of(s)) >= 4), orders(sub)

    # the binding changes: A may now send as 200-299, no longer as 105
    write_allow(allow, ["%s sources=100-101 gateway A" % a["pub"].decode(),
                        "%s sources=200-299" % a["pub"].decode(),
                        "public = %s gateway B" % b["pub"].decode(),
                        "%s subscriber" % c["pub"].decode()])
    end = time.time() + 20
    early = 0  # refused before the input saw the change
    while True:  # the input looks at the file once a second
        r = send_ack(pa, 250, 1, batch("A250", 1))
        if r["status"] == 0:
            break
        eq(r["reason"], "source_not_allowed", "before the change")
        early += 1
        assert time.time() < end, "the new binding was not applied"
        time.sleep(0.3)
    r = send_ack(pa, 105, 1, batch("A105b", 3))
    eq((r["status"], r["reason"]), (1, "source_not_allowed"), "105 no longer A's")
    eq(send_ack(pa, 100, 1, batch("A100b", 3))["status"], 0, "100 still A's")
    assert sub.wait_for(lambda s: len(orders_of(s)) >= 6), orders(sub)
    time.sleep(0.5)
    eq(orders(sub), ["A100", "A100b", "A105", "A250", "B101", "B200"], "exactly the allowed")
    eq(metric(fp, "floorpost_sources_not_allowed_total"), 3.0 + early, "metric after the reload")
    assert dl.wait_for(lambda d: len(d) >= 3 + early), dl.snapshot()
    eq([d["detail"].get("reason") for d in dl.snapshot()], ["source_not_allowed"] * (3 + early),
       "every refusal dead-lettered")
    pa.close()
    pb.close()
    rc, _ = fp.stop()
    sub.stop()
    dl.stop()
    eq(rc, 0, "exit code")


class CurveSubscriber(Subscriber):
    """A Subscriber over CURVE: with CURVE on, every endpoint asks for a
    listed key (curve: server public, public, secret)."""

    def __init__(self, endpoint, curve, dead_letter=False):
        threading.Thread.__init__(self, daemon=True)
        self.sock = CTX.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.connect(endpoint)
        self.dead_letter = dead_letter
        self.items = []
        self.heartbeats = []
        self.stopping = False
        self.lock = threading.Lock()


def orders_of(items):
    return [e["order"] for e in items if e["kind"] == "completion"]


@extra_test
def auth_new_source_bound_and_eviction():
    fp = with_metrics()
    set_dedup(fp, "source_idle_ms = 300\nnew_sources_per_peer = 6\n")
    fp.start()
    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)
    p = Producer(CTX, fp.endpoints["router"])
    # an old source first, then a flood of new ids from the same connection
    eq(send_ack(p, 7, 1, batch("S7", 1))["status"], 0, "source 7")
    ok = refused = 0
    for s in range(1000, 1060):
        r = send_ack(p, s, 1, batch("F%d" % s, 1))
        if r["status"] == 0:
            ok += 1
        else:
            eq(r["reason"], "too_many_new_sources", "flood refusal")
            refused += 1
    assert refused >= 30 and ok >= 3, (ok, refused)
    eq(metric(fp, "floorpost_sources_rate_limited_total"), float(refused), "metric")
    # another producer (another peer) still gets its new source in
    q = Producer(CTX, fp.endpoints["router"])
    eq(send_ack(q, 5000, 1, batch("G5000", 1))["status"], 0, "a new gateway")
    # source 7 leaves memory once idle (its state committed) ...
    end = time.time() + 20
    while metric(fp, "floorpost_sources_evicted_total") < 1:
        assert time.time() < end, "no source left memory"
        time.sleep(0.2)
    time.sleep(1.0)  # source 7 is idle past 300 ms and long committed
    # ... and its resend is an acked duplicate, read back from the state,
    # even while the flooding peer has no token for a new source
    dups0 = metric(fp, "floorpost_records_duplicate_total")
    r = send_ack(p, 7, 1, batch("S7", 1))
    eq((r["status"], r["acked_seq"]), (0, 2), "resend after eviction")
    assert metric(fp, "floorpost_sources_reloaded_total") >= 1
    eq(metric(fp, "floorpost_records_duplicate_total") - dups0, 2.0, "two duplicate records")
    eq(send_ack(p, 7, 1, batch("S7b", 3))["acked_seq"], 4, "a new batch of 7")
    want = sorted(["S7", "S7b", "G5000"])
    assert sub.wait_for(lambda s: "S7b" in orders_of(s)), orders(sub)
    time.sleep(0.5)
    got = orders(sub)
    eq(got.count("S7"), 1, "S7 once")
    eq(len([o for o in got if o.startswith("F")]), ok, "the flood's accepted sources")
    eq(sorted(o for o in got if not o.startswith("F")), want, "the others")
    rc, _ = fp.stop()
    eq(rc, 0, "exit code")
    p.close()
    q.close()

    # after a restart: the resend is still a duplicate (from the state)
    fp.start()
    sub2 = Subscriber(CTX, fp.endpoints["pub"])
    sub2.start()
    time.sleep(0.3)
    p = Producer(CTX, fp.endpoints["router"])
    r = send_ack(p, 7, 1, batch("S7", 1))
    eq((r["status"], r["acked_seq"]), (0, 4), "resend after restart")
    r = send_ack(p, 7, 1, batch("S7b", 3))
    eq((r["status"], r["acked_seq"]), (0, 4), "resend of the second batch")
    eq(send_ack(p, 7, 1, batch("S7c", 5))["acked_seq"], 6, "new after restart")
    assert sub2.wait_for(lambda s: "S7c" in orders_of(s)), orders(sub2)
    time.sleep(0.5)
    eq(orders(sub2), ["S7c"], "only the new batch after the restart")
    p.close()
    rc, _ = fp.stop()
    sub.stop()
    sub2.stop()
    eq(rc, 0, "exit code")


@extra_test
def auth_check_refuses_bad_options():
    """run --check names the bad [dedup] aging options and a bad sources=
    list by file and line."""
    fp = Floorpost()
    a = keygen(fp, "a")
    keygen(fp, "server")
    allow = os.path.join(fp.dir, "allow.txt")
    cases = [("[dedup]\nsource_idle_ms = -1\n", "[dedup] source_idle_ms = '-1'"),
             ("[dedup]\nnew_sources_per_peer = 2000000\n", "[dedup] new_sources_per_peer"),
             ("[security]\ncurve_secret_key_file = %s\ncurve_allow_file = %s\n"
              % (os.path.join(fp.dir, "server.key"), allow),
              "allow.txt:2: 'sources=1,,2' is not a list of source ids")]
    write_allow(allow, ["# gateways", "%s sources=1,,2" % a["pub"].decode()])
    for text, want in cases:
        path = os.path.join(fp.dir, "check.ini")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([FLOORPOST, "run", "--check", "-c", path], capture_output=True,
                             text=True)
        eq(out.returncode, 2, "exit code: " + out.stderr)
        assert want in out.stderr, out.stderr
    write_allow(allow, ["%s sources=1-3,7" % a["pub"].decode()])
    out = subprocess.run([FLOORPOST, "run", "--check", "-c", path], capture_output=True, text=True)
    eq(out.returncode, 0, "a good list: " + out.stderr)
