"""The HTTP sink (`type = http`) end to end: the real binary delivering into
a real HTTP server started here (erp_standin.Erp, an ERP stand-in that
records every request and answers 200, 500, 429, 400 or hangs as told).

What an ERP relies on, checked from what the stand-in recorded:
- counting each event once per idempotency key (as an ERP with repeatable
  requests books), the totals equal the generator's truth exactly;
- no event_id is in two requests answered 2xx under different keys, and a
  key always carries the same events (a retry repeats its request exactly).
"""
import email.utils
import json
import os
import random
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import zmq

from erp_standin import Erp
from fp import (COMPLETED, FLOORPOST, PART, Floorpost, Producer, Subscriber, eq, extra_test,
                free_port, nonzero, read_truth, rec, totals)

CTX = zmq.Context.instance()
CRASHGEN = os.path.join(os.path.dirname(FLOORPOST), "tools", "crashgen")


def http_sink(erp, **opts):
    """[sink erp] options: a quick back-off and no circuit breaker, so a
    test's outages cost seconds."""
    o = dict(type="http", url=erp.url(), retry_ms=100, retry_max_ms=800, breaker_failures=1000)
    o.update(opts)
    return o


def as_event(j):
    """A sink JSON event as fp.totals() reads it."""
    e = dict(j)
    if e["kind"] == "completion":
        e["yield_"] = e["yield"]
    if e["kind"] == "consumption":
        e["lot"] = e.get("lot") or ""
    return e


def check_keys(erp):
    """The ERP's view: a key names one content; an event is under one key."""
    reqs, _ = erp.snapshot()
    ok = [r for r in reqs if r["status"] is not None and 200 <= r["status"] < 300]
    content, key_of = {}, {}
    for r in ok:
        eq(r["key"], r["body_key"], "header and body key")
        eq(r["body"]["count"], len(r["ids"]), "count")
        eq(content.setdefault(r["key"], r["ids"]), r["ids"], "a key's events on a repeat")
        for i in r["ids"]:
            k = key_of.setdefault(i, r["key"])
            if k != r["key"]:
                raise AssertionError("event %s answered 2xx under keys %s and %s" % (i, k, r["key"]))
    return ok


def erp_totals(erp):
    return totals([as_event(e) for e in erp.booked_events()])


def crashgen(fp, records, rate, seed):
    truth = os.path.join(fp.dir, "truth.tsv")
    p = subprocess.Popen([CRASHGEN, fp.endpoints["router"], truth, "--records", str(records),
                          "--rate", str(rate), "--seed", str(seed), "--dup-pct", "10",
                          "--restart-every", "2500", "--resend-ms", "400", "--batch", "64",
                          "--timeout-ms", "300000"], stderr=subprocess.PIPE, text=True)
    return p, truth


def wait_totals(erp, truth_path, timeout):
    """Waits until the ERP's booked totals equal the truth; asserts they do."""
    comp, cons, scr, records = read_truth(truth_path)
    want = (nonzero(comp), nonzero(cons), nonzero(scr), records)
    end = time.time() + timeout
    while True:
        c, m, s, n = erp_totals(erp)
        got = (nonzero(c), nonzero(m), nonzero(s), n)
        if got == want or time.time() > end:
            break
        time.sleep(0.2)
    eq(got[3], want[3], "records summed at the ERP")
    eq(got[0], want[0], "completion totals at the ERP")
    eq(got[1], want[1], "consumption totals at the ERP")
    eq(got[2], want[2], "scrap totals at the ERP")


def wait_booked(erp, sub, timeout, what):
    """Waits until the ERP booked exactly the events published so far."""
    want = {e["event_id"] for e in sub.snapshot()}
    end = time.time() + timeout
    while {e["event_id"] for e in erp.booked_events()} != want and time.time() < end:
        time.sleep(0.1)
    eq({e["event_id"] for e in erp.booked_events()}, want, what)


def finish(fp, *others):
    """Stops floorpost (a clean drain), then the subscribers, producers and
    stand-ins given."""
    rc, _ = fp.stop()
    eq(rc, 0, "exit code of the drain")
    for o in others:
        (o.close if isinstance(o, Producer) else o.stop)()


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sink_status(fp, name="erp"):
    st, body = get(fp.metrics_port, "/sinks")
    eq(st, 200, "/sinks")
    return {s["name"]: s for s in json.loads(body)}[name]


def metric(fp, series):
    _, text = get(fp.metrics_port, "/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError("no series %s in:\n%s" % (series, text[:3000]))


def started_with_metrics(**kw):
    port = free_port()
    fp = Floorpost(metrics_port=port, **kw).start()
    fp.metrics_port = port
    return fp


def completions(prod, source, orders, first_seq=1, plant="1000"):
    """One final completion per order (a PART then OperationCompleted):
    len(orders) events, flushed at once."""
    recs, seq = [], first_seq
    for o in orders:
        recs.append(rec(seq, PART, order=o, qty=3, plant=plant))
        recs.append(rec(seq + 1, COMPLETED, order=o, plant=plant))
        seq += 2
    for i in range(0, len(recs), 200):
        prod.send(source, 1, recs[i:i + 200])
    return seq


@extra_test
def http_sink_totals_exact_under_duplicates_and_producer_restarts():
    """A plant stream with duplicates and producer restarts, posted with 4
    requests in flight that the ERP answers out of order: exact totals, one
    key per event, the contiguous prefix only (every event booked)."""
    erp = Erp(jitter_ms=15)
    fp = Floorpost(sinks={"erp": http_sink(erp, events_per_request=25, concurrency=4)},
                   posting_interval_ms=300, round_interval_ms=30, dedup_window=65536).start()
    gen, truth = crashgen(fp, records=24000, rate=12000, seed=5)
    _, err = gen.communicate(timeout=120)
    eq(gen.returncode, 0, "crashgen: " + err)
    wait_totals(erp, truth, timeout=30)
    finish(fp)
    ok = check_keys(erp)
    reqs, booked = erp.snapshot()
    assert len(booked) >= 20, "only %d requests booked" % len(booked)
    assert all(r["path"] == "/erp/postings" for r in reqs), set(r["path"] for r in reqs)
    h = reqs[0]["headers"]
    eq(h.get("Content-Type"), "application/json", "content type")
    assert 2 <= erp.peak_in_flight <= 4, "in flight at once: %d" % erp.peak_in_flight
    # each event: the fields of `tail --json` plus posting_date
    e = reqs[0]["body"]["events"][0]
    for k in ("event_id", "global_seq", "topic", "kind", "plant", "order", "operation",
              "record_count", "lineage", "posting_date", "instance"):
        assert k in e, (k, e)
    seqs = sorted(x["global_seq"] for x in erp.booked_events())
    eq(seqs, list(range(1, len(seqs) + 1)), "every committed event booked once")
    print("     %d events in %d requests (%d answered 2xx)" % (len(seqs), len(reqs), len(ok)))
    erp.stop()


@extra_test
def http_sink_500s_hangs_and_kill9_totals_exact():
    """500s for a while, then requests that hang past timeout_ms (the ERP
    books them anyway), and floorpost killed with SIGKILL 4 times mid-stream:
    the ERP, deduplicating by key, books the truth exactly; every retry
    repeated its key."""
    rng = random.Random(3)
    erp = Erp(jitter_ms=10)
    fp = Floorpost(sinks={"erp": http_sink(erp, events_per_request=10, concurrency=4,
                                           timeout_ms=700,
                                           header_first_sent="Repeatability-First-Sent")},
                   posting_interval_ms=300, round_interval_ms=30, dedup_window=65536).start()
    gen, truth = crashgen(fp, records=30000, rate=6000, seed=9)
    time.sleep(0.8)
    erp.set_mode("500")
    time.sleep(1.2)
    erp.set_mode("hang", hang_s=1.2)
    time.sleep(1.5)
    erp.set_mode("ok")
    fp.kill_restarts(4, rng, gap=(0.2, 0.6))
    _, err = gen.communicate(timeout=120)
    eq(gen.returncode, 0, "crashgen: " + err)
    wait_totals(erp, truth, timeout=40)
    finish(fp)
    check_keys(erp)
    reqs, booked = erp.snapshot()
    n500 = sum(1 for r in reqs if r["status"] == 500)
    hung = sum(1 for r in reqs if r.get("hung"))
    keys = [r["key"] for r in reqs]
    repeated = len(keys) - len(set(keys))
    assert n500 >= 1 and hung >= 1, (n500, hung)
    assert repeated >= 1, "no request was repeated"
    # a stable "first sent" per key: the newest event time of its checkpoints
    first = {}
    for r in reqs:
        v = r["headers"]["Repeatability-First-Sent"]
        eq(first.setdefault(r["key"], v), v, "Repeatability-First-Sent on a repeat")
        newest = max(e["last_time_ns"] for e in r["body"]["events"]) // 10**9
        eq(email.utils.parsedate_to_datetime(v).timestamp(), float(newest), "first sent " + v)
    log = fp.log()
    assert "server: POST http://127.0.0.1:%d/erp/postings: HTTP 500" % erp.port in log, log[-3000:]
    assert "timeout: POST" in log, log[-3000:]
    print("     %d requests: %d answered 500, %d hung, %d repeats of a key, %d booked"
          % (len(reqs), n500, hung, repeated, len(booked)))
    erp.stop()


@extra_test
def http_sink_429_retry_after_and_rate_limit():
    """429 with Retry-After (seconds, then an HTTP date): no request starts
    before it elapsed; rate_limit holds under 4 requests in flight."""
    rate = 25
    erp = Erp()
    erp.set_mode("429", count=1, retry_after="2")
    fp = started_with_metrics(sinks={"erp": http_sink(erp, events_per_request=5, concurrency=4,
                                                      rate_limit=rate)})
    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)
    prod = Producer(CTX, fp.endpoints["router"])
    orders = ["R%03d" % i for i in range(300)]
    seq = completions(prod, 61, orders[:150])
    assert sub.wait_for(lambda evs: len(evs) >= 150, 20), len(sub.snapshot())
    end = time.time() + 20
    while len(erp.booked_events()) < 150 and time.time() < end:
        time.sleep(0.05)
    # a second 429, with an HTTP date 3 s ahead
    until = time.time() + 3
    erp.set_mode("429", count=1, retry_after=email.utils.formatdate(until, usegmt=True))
    completions(prod, 61, orders[150:], first_seq=seq)
    assert sub.wait_for(lambda evs: len(evs) >= 300, 20), len(sub.snapshot())
    wait_booked(erp, sub, 30, "every event booked")
    assert metric(fp, 'floorpost_sink_errors_total{sink="erp",class="throttled"}') == 2
    finish(fp, sub, prod)
    check_keys(erp)
    reqs, _ = erp.snapshot()
    ts = [r["t"] for r in reqs]
    throttled = [r["t"] for r in reqs if r["status"] == 429]
    eq(len(throttled), 2, "429s answered")
    # nothing started after a 429 before its Retry-After (requests already
    # in flight when it was answered arrive within a few ms of it)
    for t429, wait_until in ((throttled[0], throttled[0] + 2.0), (throttled[1], int(until))):
        early = [t - t429 for t in ts if t429 + 0.25 < t < wait_until - 0.02]
        eq(early, [], "requests before Retry-After elapsed")
        assert any(t >= wait_until - 0.02 for t in ts), "nothing after the Retry-After"
    # the rate: at most rate + 1 starts in any second (a bucket of one
    # token; + 1 for the jitter of arrival times at the stand-in),
    # and the sink did go as fast as allowed
    worst = max(sum(1 for u in ts if t <= u < t + 1.0) for t in ts)
    assert worst <= rate + 2, "%d requests within one second (rate_limit %d)" % (worst, rate)
    # while the backlog of the first 150 events (30 requests) lasts
    burst = [t for t in ts if t > throttled[0] + 1.9][:20]
    got = (len(burst) - 1) / (burst[-1] - burst[0])
    assert rate * 0.8 <= got <= rate * 1.1, "rate %.1f/s, limit %d/s" % (got, rate)
    print("     %d requests; %.1f requests/s at rate_limit %d; worst second %d"
          % (len(ts), got, rate, worst))
    erp.stop()


def deadletters_json(fp):
    out = subprocess.run([FLOORPOST, "deadletters", "-c", fp.config, "list", "--json"],
                         capture_output=True, text=True, timeout=60)
    eq(out.returncode, 0, "deadletters list: " + out.stderr)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@extra_test
def http_sink_400_dead_letters_erp_rejected():
    """Requests with an event of order BAD* are answered 400: their events
    (all of each such request) come back as dead letters erp_rejected with
    the status, the start of the answer and the url's path; the rest is
    booked; the position moves past them."""
    erp = Erp(key_header="Repeatability-Request-ID")
    erp.reject = lambda e: e["order"].startswith("BAD")
    fp = started_with_metrics(sinks={"erp": http_sink(
        erp, events_per_request=5, concurrency=3, key_format="hex",
        header_idempotency="Repeatability-Request-ID")})
    sub = Subscriber(CTX, fp.endpoints["pub"])
    dls = Subscriber(CTX, fp.endpoints["dl"], dead_letter=True)
    sub.start()
    dls.start()
    time.sleep(0.3)
    prod = Producer(CTX, fp.endpoints["router"])
    orders = ["G%03d" % i for i in range(60)]
    for i in (7, 23, 41):
        orders[i] = "BAD%03d" % i
    seq = completions(prod, 71, orders)
    assert sub.wait_for(lambda evs: len(evs) >= 60, 20), len(sub.snapshot())
    # and more after them: the position moves on
    completions(prod, 71, ["H%03d" % i for i in range(20)], first_seq=seq)
    assert sub.wait_for(lambda evs: len(evs) >= 80, 20), len(sub.snapshot())
    events = {e["event_id"]: e for e in sub.snapshot()}
    end = time.time() + 20
    while time.time() < end:
        st = sink_status(fp)
        if st["lag_events"] == 0 and st["position"] >= 80:
            break
        time.sleep(0.2)
    eq((st["lag_events"], st["position"]), (0, 80), "caught up past the rejected requests")
    reqs, _ = erp.snapshot()
    refused = [r for r in reqs if r["status"] == 400]
    refused_ids = {i for r in refused for i in r["ids"]}
    eq(len(refused), 3, "requests answered 400")
    assert all(re.fullmatch("[0-9a-f]{32}", r["key"]) for r in reqs), reqs[0]["key"]
    booked = {e["event_id"] for e in erp.booked_events()}
    eq(booked & refused_ids, set(), "nothing both booked and refused")
    eq(booked | refused_ids, set(events), "every event booked or refused")
    # committed by emit with a round after the sink handed them over
    end = time.time() + 10
    while True:
        stored = [d for d in deadletters_json(fp) if d["reason"] == "erp_rejected"]
        if len(stored) >= len(refused_ids) or time.time() > end:
            break
        time.sleep(0.2)
    eq(sorted(d["detail"]["event_id"] for d in stored), sorted(refused_ids),
       "dead letters erp_rejected: exactly the refused requests' events")
    d = stored[0]["detail"]
    eq((d["http_status"], d["url_path"], d["sink"]), (400, "/erp/postings", "erp"), "fields")
    assert d["response"].startswith('{"error":{"code":"ERP-4711","message":"order BAD'), d
    assert len(d["response"]) <= 200 and "\n" not in d["response"], d["response"]
    assert d["idempotency_key"] in {r["key"] for r in refused}, d
    assert dls.wait_for(lambda items: len([x for x in items if "erp_rejected" in x["topic"]])
                        >= len(refused_ids), 10), dls.snapshot()
    eq(st["rejected"], len(refused_ids), "status: rejected events")
    eq(metric(fp, 'floorpost_sink_errors_total{sink="erp",class="rejected"}'), 3.0,
       "errors{class=rejected}: one per refused request")
    eq(metric(fp, 'floorpost_sink_rejected_total{sink="erp"}'), float(len(refused_ids)),
       "rejected_total")
    finish(fp, sub, dls, prod, erp)


def check_config(sink, expect):
    fp = Floorpost(sinks={"erp": sink})
    out = subprocess.run([FLOORPOST, "run", "--check", "-c", fp.config], capture_output=True,
                         text=True)
    if expect is None:
        eq(out.returncode, 0, "run --check: " + out.stderr)
        return
    eq(out.returncode, 2, "exit code of run --check for %r: %s" % (sink, out.stderr))
    with open(fp.config) as f:
        lines = f.read().splitlines()
    assert "floorpost.ini:" in out.stderr and "[sink erp]" in out.stderr, out.stderr
    line = int(out.stderr.split("floorpost.ini:")[1].split(":")[0])
    assert expect[0] in lines[line - 1] or expect[0] == "[sink", (expect, lines[line - 1])
    for part in expect[1:]:
        assert part in out.stderr, (part, out.stderr)


@extra_test
def http_sink_bad_config_checked_unreachable_url_reported():
    """A bad url or option is an error at `run --check` naming the file and
    line; an unreachable ERP at run time is a log line, errors{class=connect}
    and the /sinks state, while the pipeline keeps publishing; once the ERP
    is up, everything is delivered."""
    d = tempfile.mkdtemp(prefix="fp-http-")
    secret = os.path.join(d, "token")
    with open(secret, "w") as f:
        f.write("Bearer s3cr3t-t0ken\nsecond line ignored\n")
    base = dict(type="http", url="http://127.0.0.1:1/erp")
    check_config(dict(base, url="htp://erp.example.com/x"), ("url", "url = 'htp://erp"))
    check_config(dict(base, url="ftp://erp.example.com/x"), ("url", "not http or https"))
    check_config(dict(base, url="http://"), ("url", "url = 'http://'", "allowed"))
    check_config(dict(type="http"), ("[sink", "url is required"))
    check_config(dict(base, events_per_request=0), ("events_per_request", "1..1000"))
    check_config(dict(base, events_per_request=500, batch_max=100), ("events_per_request",
                                                                      "batch_max"))
    check_config(dict(base, concurrency=65), ("concurrency", "1..64"))
    check_config(dict(base, header_idempotency="Bad Header"), ("header_idempotency",
                                                               "not a header name"))
    check_config(dict(base, authorization_file=os.path.join(d, "missing")),
                 ("authorization_file", "No such file"))
    check_config(dict(base, ca_file=os.path.join(d, "missing.pem")), ("ca_file", "No such file"))
    check_config(dict(base, tls_verify="maybe"), ("tls_verify", "not a boolean"))
    check_config(dict(base, colour="blue"), ("colour", "unknown option"))
    check_config(dict(base, key_format="base64"), ("key_format", "allowed: uuid, hex"))
    check_config(dict(base, header_first_sent="First Sent"), ("header_first_sent",
                                                              "not a header name"))
    check_config(dict(base, authorization_file=secret, rate_limit=10, tls_verify="false"), None)

    # unreachable: nothing listens on the port (yet)
    port = free_port()
    fp = started_with_metrics(sinks={"erp": dict(type="http", url="http://127.0.0.1:%d/erp" % port,
                                                 authorization_file=secret, retry_ms=100,
                                                 retry_max_ms=300, breaker_failures=1000)})
    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)
    prod = Producer(CTX, fp.endpoints["router"])
    completions(prod, 81, ["U%02d" % i for i in range(10)])
    assert sub.wait_for(lambda evs: len(evs) >= 10, 10), "the pipeline stopped publishing"
    end = time.time() + 10
    while time.time() < end:
        st = sink_status(fp)
        if st["errors"]["connect"] >= 2:
            break
        time.sleep(0.1)
    assert st["state"] in ("backing_off", "open"), st
    eq(st["last_error_class"], "connect", "status: last error class")
    assert "127.0.0.1:%d/erp" % port in st["last_error"], st
    eq(st["lag_events"], 10, "status: lag")
    assert metric(fp, 'floorpost_sink_errors_total{sink="erp",class="connect"}') >= 2
    log = fp.log()
    assert "delivery failed; retrying" in log and "connect: POST http://127.0.0.1:%d/erp" % port \
        in log, log[-2000:]
    assert "s3cr3t" not in log, "the token was logged"
    # more input while the ERP is down: still published
    completions(prod, 82, ["V%02d" % i for i in range(10)])
    assert sub.wait_for(lambda evs: len(evs) >= 20, 10), "the pipeline stopped publishing"
    # the ERP comes up on that port: everything arrives, with the token
    erp = Erp(port=port)
    wait_booked(erp, sub, 15, "delivered once the ERP is up")
    reqs, _ = erp.snapshot()
    eq({r["headers"].get("Authorization") for r in reqs}, {"Bearer s3cr3t-t0ken"},
       "Authorization from the file's first line")
    finish(fp, sub, prod, erp)


@extra_test
def http_sink_tls_with_ca_file_and_refused_without():
    """https with the stand-in's self-signed certificate: delivered with
    ca_file; without it the certificate is refused (class connect), and a
    401 makes the sink read authorization_file again (a rotated token)."""
    d = tempfile.mkdtemp(prefix="fp-tls-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    token = os.path.join(d, "token")
    with open(token, "w") as f:
        f.write("Bearer old\n")
    erp = Erp(certfile=cert, keyfile=key)
    fp = started_with_metrics(sinks={
        "erp": http_sink(erp, ca_file=cert, authorization_file=token),
        "noca": http_sink(erp)})
    prod = Producer(CTX, fp.endpoints["router"])
    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)
    completions(prod, 91, ["T%02d" % i for i in range(8)])
    assert sub.wait_for(lambda evs: len(evs) >= 8, 10)
    wait_booked(erp, sub, 10, "delivered over TLS")
    end = time.time() + 10
    while sink_status(fp, "noca")["errors"]["connect"] < 1 and time.time() < end:
        time.sleep(0.1)
    st = sink_status(fp, "noca")
    assert st["errors"]["connect"] >= 1 and st["position"] == 0, st
    assert "certificate" in st["last_error"].lower() or "ssl" in st["last_error"].lower(), st
    # a rotated token: the ERP answers 401 to the old one
    with open(token + ".new", "w") as f:
        f.write("Bearer new\n")
    os.rename(token + ".new", token)
    orig = erp.handle

    def handle(h):
        if h.headers.get("Authorization") != "Bearer new":
            h.rfile.read(int(h.headers.get("Content-Length", 0)))
            h._answer(401, b'{"error":"token expired"}')
            return
        orig(h)
    erp.handle = handle
    completions(prod, 92, ["W%02d" % i for i in range(4)])
    assert sub.wait_for(lambda evs: len(evs) >= 12, 10)
    wait_booked(erp, sub, 10, "delivered with the new token")
    st = sink_status(fp, "erp")
    eq(st["rejected"], 0, "a 401 is not a rejection")
    finish(fp, sub, prod, erp)


@extra_test
def http_sink_sigterm_not_held_by_a_backlog():
    """A backlog behind a slow ERP (rate_limit 2/s) does not hold SIGTERM
    past drain_timeout_ms: the sink says what it leaves for the next start."""
    erp = Erp()
    fp = Floorpost(sinks={"erp": http_sink(erp, events_per_request=1, rate_limit=2)},
                   drain_timeout_ms=1500).start()
    prod = Producer(CTX, fp.endpoints["router"])
    completions(prod, 95, ["S%02d" % i for i in range(30)])
    assert prod.wait_acks(1, 10), "not acked"
    end = time.time() + 10
    while not erp.booked_events() and time.time() < end:
        time.sleep(0.05)
    rc, secs = fp.stop()
    eq(rc, 0, "exit code")
    assert secs < 6, "SIGTERM took %.1f s with a backlog" % secs
    assert "exiting with events not delivered: offered again at the next start" in fp.log(), \
        fp.log()[-2000:]
    n = len(erp.booked_events())
    assert 1 <= n < 30, n
    prod.close()
    erp.stop()
