"""e2e: exactly once through every documented path (issue 9, items A-C).

`floorpost send` with a refused batch counts it, releases it and goes on;
acks are not lost when a round holds thousands of batches of one
connection; producer restarts with late resends of committed batches of
earlier epochs are acknowledged duplicates, never dead letters, and the
totals equal an independently computed truth; `deadletters resubmit`
counts each truly stale record once, however often it runs, refuses what
floorpost can no longer tell, and does nothing for a record that was
counted through another copy; `send` batches per source and flushes by
time, also from a pipe."""
import json
import os
import random
import re
import subprocess
import time
import urllib.request

import zmq

from fp import (FLOORPOST, PART, Floorpost, Subscriber, decode_ack, encode_batch, eq,
                extra_test, free_port, nonzero, rec, replay_all, totals)

CTX = zmq.Context.instance()
PLANT = "1000"


def line(source, epoch, seq, kind="PartCount", order="EX-1", op="0010", qty=1, **kw):
    d = dict(source_id=source, epoch=epoch, seq=seq, kind=kind, plant=PLANT, order=order,
             operation=op, quantity=qty, time_ns=1763900000000000000 + seq)
    d.update(kw)
    return d


def write_jsonl(path, lines):
    with open(path, "w") as f:
        for d in lines:
            f.write(json.dumps(d) + "\n")


def send(fp, path, *opts, timeout=120):
    return subprocess.run([FLOORPOST, "send"] + list(opts) + [fp.endpoints["router"], path],
                          capture_output=True, text=True, timeout=timeout)


SUMMARY = re.compile(r"floorpost send: (\d+) records in (\d+) batches, (\d+) acked, (\d+) "
                     r"rejected \((\d+) records\), (\d+) resent, (\d+) unacked, (\d+) bad lines, "
                     r"(\d+) records dead-lettered in accepted batches")


def summary(r):
    m = SUMMARY.search(r.stderr)
    assert m, r.stderr
    keys = ("records", "batches", "acked", "rejected", "rejected_records", "resent", "unacked",
            "bad", "dead")
    return dict(zip(keys, (int(x) for x in m.groups())))


def deadletters(fp, *args, timeout=60):
    return subprocess.run([FLOORPOST, "deadletters", "-c", fp.config] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def stored(fp):
    out = deadletters(fp, "list", "--json")
    eq(out.returncode, 0, "list: " + out.stderr)
    return [json.loads(x) for x in out.stdout.splitlines() if x.strip()]


def metric(port, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    for x in text.splitlines():
        if x.startswith(name + " "):
            return int(float(x.split()[1]))
    raise AssertionError("no metric " + name)


def edit_config(fp, section, text):
    """Adds option lines to a [section] of fp's config (options fp.py has no key for)."""
    with open(fp.config) as f:
        c = f.read()
    assert "[%s]\n" % section in c, c
    with open(fp.config, "w") as f:
        f.write(c.replace("[%s]\n" % section, "[%s]\n%s\n" % (section, text), 1))


def yields(fp):
    """Completion totals of everything floorpost committed: drained (partials
    posted), restarted, the whole outbox replayed; floorpost is running
    again afterwards."""
    rc, _ = fp.stop()
    eq(rc, 0, "drain")
    fp.start()
    events, _, _ = replay_all(CTX, fp.endpoints["replay"])
    comp, _, _, _ = totals(events)
    return nonzero(comp)


@extra_test
def send_refused_batch_counted_released_and_goes_on():
    """Two lines, a record of epoch 2 then one of epoch 1: the second batch
    is refused once, named, counted and dropped; send ends at once, reads
    its whole input, resends nothing, and floorpost holds one dead letter."""
    fp = Floorpost().start()
    path = os.path.join(fp.dir, "two.jsonl")
    write_jsonl(path, [line(7, 2, 1, qty=5), line(7, 1, 1, qty=3),
                       line(8, 1, 1, qty=2)])  # and the input goes on after it
    t0 = time.time()
    r = send(fp, path, "--resend-ms", "200", "--timeout", "5000")
    took = time.time() - t0
    eq(r.returncode, 1, "a refused batch fails the run: " + r.stderr)
    eq(summary(r), dict(records=3, batches=3, acked=2, rejected=1, rejected_records=1, resent=0,
                        unacked=0, bad=0, dead=0), "summary")
    assert "refused the batch of source 7 epoch 1 seq 1..1 (1 records): stale_epoch" in r.stderr, \
        r.stderr
    assert took < 4, "send waited: %.1f s" % took
    dls = stored(fp)
    eq([(d["reason"], d["records"]) for d in dls], [("stale_epoch", 1)], "one dead letter")
    eq(yields(fp), {(PLANT, "EX-1", "0010"): [7, 0]}, "the epoch-2 record and source 8 count")
    fp.stop()


@extra_test
def two_thousand_one_record_batches_in_one_round_lose_no_ack():
    """2000 one-record batches of one connection inside one round, through
    `floorpost send`: every ack arrives, nothing is resent. Then a producer
    that reads no ack until it has sent 5000 batches (its receive queue and
    buffer small), with ingest_hwm 1 (the ROUTER's ack queue at its floor of
    1000): the acks that find the queue full wait in ingest and go later;
    every one of the 5000 arrives, none twice."""
    port = free_port()
    fp = Floorpost(round_interval_ms=1000, metrics_port=port).start()
    path = os.path.join(fp.dir, "many.jsonl")
    write_jsonl(path, [line(5, 1, s) for s in range(1, 2001)])
    r = send(fp, path, "--batch", "1")
    eq(r.returncode, 0, r.stderr)
    eq(summary(r), dict(records=2000, batches=2000, acked=2000, rejected=0, rejected_records=0,
                        resent=0, unacked=0, bad=0, dead=0), "summary")
    eq(metric(port, "floorpost_acks_total"), 2000, "acks sent")
    eq(metric(port, "floorpost_acks_dropped_total"), 0, "acks dropped")
    assert metric(port, "floorpost_rounds_total") <= 6, "a few rounds only"
    fp.stop()

    port = free_port()
    fp = Floorpost(round_interval_ms=500, metrics_port=port)
    edit_config(fp, "pipeline", "ingest_hwm = 1")
    fp.start()
    sock = CTX.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fp.endpoints["router"])
    n = 5000
    for s in range(1, n + 1):
        sock.send(encode_batch(6, 1, [rec(s, PART, order="EX-1", qty=1)]))
    t0 = time.time()
    while metric(port, "floorpost_acks_retried_total") == 0 and time.time() - t0 < 20:
        time.sleep(0.1)
    assert metric(port, "floorpost_acks_retried_total") > 0, "no ack had to wait"
    got = []
    while len(got) < n and sock.poll(5000):
        got.append(decode_ack(sock.recv()))
    time.sleep(0.2)
    while sock.poll(0):
        got.append(decode_ack(sock.recv()))
    sock.close()
    eq(len(got), n, "every ack, once")
    eq(sorted(a["batch_last_seq"] for a in got), list(range(1, n + 1)), "one ack per batch")
    eq({a["status"] for a in got}, {0}, "all accepted")
    eq(metric(port, "floorpost_acks_dropped_total"), 0, "acks dropped")
    fp.stop()


def restart_stream(rng, sources=6, epochs=4):
    """Lines of `sources` producers, each restarting `epochs` times (a new
    epoch, seqs from 1), interleaved. After each restart a producer also
    sends late copies of lines of its previous two epochs (resends of
    committed batches) and, now and then, lines of the previous epoch it
    never sent before (truly stale). Within an epoch: duplicates."""
    per = {}
    for s in range(1, sources + 1):
        out, sent = [], {}
        for e in range(1, epochs + 1):
            n = rng.randint(80, 200)
            for q in range(1, n + 1):
                d = line(s, e, q, order="EX-%d" % (q % 5), qty=rng.randint(1, 9))
                out.append(d)
                sent.setdefault(e, []).append(d)
                if rng.random() < 0.05:
                    out.append(dict(out[-1 - rng.randint(0, min(5, len(out) - 1))]))
                if q == n // 3 and e > 1:
                    # after the restart: late resends of the two epochs before
                    for old in (e - 1, e - 2):
                        if old >= 1:
                            k = rng.randint(5, 30)
                            start = rng.randint(0, len(sent[old]) - k)
                            out.extend(dict(x) for x in sent[old][start:start + k])
                    if rng.random() < 0.7:
                        # never sent: seqs past the end of the previous epoch
                        last = len(sent[e - 1])
                        for x in range(rng.randint(1, 4)):
                            out.append(line(s, e - 1, last + 1 + x, order="EX-STALE",
                                            qty=100))
        per[s] = out
    lines = []
    queues = {s: list(v) for s, v in per.items()}
    while queues:
        s = rng.choice(sorted(queues))
        take = rng.randint(1, 6)
        lines.extend(queues[s][:take])
        del queues[s][:take]
        if not queues[s]:
            del queues[s]
    return lines


def truth_of(lines):
    """The independent truth: a record counts once, the first time its
    (source, epoch, seq) comes, unless its source has already moved on to
    a newer epoch (then it is stale: a dead letter, never counted). A late
    copy of a counted record is a duplicate."""
    current, seen, stale, comp = {}, set(), [], {}
    for d in lines:
        s, e, q = d["source_id"], d["epoch"], d["seq"]
        if (s, e, q) in seen:
            continue
        if e < current.get(s, 0):
            stale.append((s, e, q))  # each copy is a dead letter: it is never marked seen
            continue
        current[s] = max(current.get(s, 0), e)
        seen.add((s, e, q))
        k = (PLANT, d["order"], d["operation"])
        comp.setdefault(k, [0, 0])[0] += d["quantity"]
    return comp, seen, stale


@extra_test
def producer_restarts_with_stale_resends_exact_and_resubmit_once():
    """Six producers, four epochs each, interleaved, through `floorpost send`:
    late resends of committed batches of earlier epochs are acknowledged
    duplicates; only the records that were never counted are dead letters;
    the totals equal the independent truth. Resubmitting the dead letters
    counts each of them once (also one that was dead-lettered twice); a
    second and a third run count nothing more."""
    rng = random.Random(11)
    lines = restart_stream(rng)
    comp, seen, stale = truth_of(lines)
    assert len(set(stale)) >= 5 and len(lines) > len(seen) + 200, (len(stale), len(seen))
    fp = Floorpost(dedup_window=1024).start()
    path = os.path.join(fp.dir, "restarts.jsonl")
    write_jsonl(path, lines)
    r = send(fp, path, "--batch", "64", "--resend-ms", "2000")
    sm = summary(r)
    eq((sm["records"], sm["resent"], sm["unacked"], sm["bad"]), (len(lines), 0, 0, 0), r.stderr)
    eq(r.returncode, 1 if sm["rejected"] or sm["dead"] else 0, "exit code: " + r.stderr)
    # every stale copy is a dead letter: in a refused batch or counted by its Ack
    eq(sm["rejected_records"] + sm["dead"], len(stale), "refused + dead-lettered: " + r.stderr)
    eq(sm["acked"] + sm["rejected"], sm["batches"], "every batch answered")
    dls = stored(fp)
    eq(sorted({d["reason"] for d in dls}), ["stale_epoch"], "only stale dead letters")
    eq(sum(d["records"] for d in dls), len(stale), "one dead-lettered record per stale record")
    got = {(d["detail"]["source_id"], d["detail"]["epoch"], d["detail"]["seq"])
           for d in dls if "seq" in d["detail"]}
    assert got <= set(stale), got - set(stale)
    eq(yields(fp), nonzero(comp), "totals equal the truth")

    # a run whose sends never arrive (nobody listens there): identities are
    # stored first, so the next run sends the records under the same ones
    nowhere = "tcp://127.0.0.1:%d" % free_port()
    out = deadletters(fp, "resubmit", "--source", "900100", "--all", "--to", nowhere,
                      "--timeout", "300")
    eq(out.returncode, 1, "resubmit to nowhere: " + out.stdout + out.stderr)
    eq(out.stdout.count("NOT acked"), len(dls), out.stdout)
    epoch = re.search(r"as source 900100 epoch (\d+) ", out.stdout).group(1)
    # resubmit: each truly stale record is counted once, under the new source
    out = deadletters(fp, "resubmit", "--source", "900100", "--all")
    eq(out.returncode, 0, "resubmit: " + out.stdout + out.stderr)
    eq(out.stdout.count(", acked"), len(dls), out.stdout)
    eq(set(re.findall(r"as source 900100 epoch (\d+) ", out.stdout)), {epoch}, "the same identities")
    want = dict(comp)
    want[(PLANT, "EX-STALE", "0010")] = [100 * len(set(stale)), 0]
    eq(yields(fp), nonzero(want), "the stale records counted once")
    # again, and again with --delete: nothing is sent, nothing counted twice
    out = deadletters(fp, "resubmit", "--source", "900100", "--all")
    eq(out.returncode, 0, "second resubmit: " + out.stdout + out.stderr)
    eq(out.stdout.count("not sent: resubmitted before, and taken"), len(dls), out.stdout)
    out = deadletters(fp, "resubmit", "--source", "900100", "--all", "--delete")
    eq(out.returncode, 0, "third resubmit: " + out.stdout + out.stderr)
    eq(out.stdout.count(", deleted"), len(dls), out.stdout)
    eq(stored(fp), [], "all deleted")
    eq(yields(fp), nonzero(want), "still counted once")
    fp.stop()


@extra_test
def resubmit_of_a_counted_record_is_a_noop_and_of_an_unknown_one_refused():
    """A batch refused as too_many_sources and later counted when the same
    lines are sent again: resubmitting its dead letter sends nothing (with a
    state directory a full table makes room by evicting a committed source,
    so the refusal needs the table full of uncommitted ones: both sources
    in one long round). A
    counted batch resent after its epoch dropped out of the kept past
    epochs is refused whole as stale_epoch: resubmitting it is refused
    (floorpost can no longer tell), and nothing is counted twice."""
    fp = Floorpost(workers=1, shards=1, round_interval_ms=3000)
    edit_config(fp, "dedup", "max_sources = 1")
    fp.start()
    ab = os.path.join(fp.dir, "ab.jsonl")
    b = os.path.join(fp.dir, "b.jsonl")
    lines_b = [line(22, 1, q, order="EX-B", qty=3) for q in range(1, 6)]
    write_jsonl(ab, [line(21, 1, q, order="EX-A", qty=2) for q in range(1, 6)] + lines_b)
    write_jsonl(b, lines_b)
    r = send(fp, ab, "--resend-ms", "20000")  # no resend before the round's acks
    eq((r.returncode, summary(r)["rejected"]), (1, 1),
       "source 21 taken, 22 refused in the same round: " + r.stderr)
    assert "too_many_sources" in r.stderr, r.stderr
    fp.stop()
    with open(fp.config) as f:
        c = f.read()
    with open(fp.config, "w") as f:
        f.write(c.replace("max_sources = 1", "max_sources = 3")
                 .replace("round_interval_ms = 3000", "round_interval_ms = 20"))
    fp.start()
    eq(send(fp, b).returncode, 0, "source 22 again, now tracked")
    dls = stored(fp)
    assert len(dls) == 1, dls
    [dl] = dls
    eq(dl["reason"], "too_many_sources", "its dead letter")
    out = deadletters(fp, "resubmit", "--source", "900200", "--delete", str(dl["dl_seq"]))
    eq(out.returncode, 0, out.stdout + out.stderr)
    assert "not sent: already counted" in out.stdout and "deleted" in out.stdout, out.stdout

    # source 23: six epochs; then (another sender: a gateway that resends
    # what it had of its first session) epoch 1 again, which is not kept
    c1, c2 = os.path.join(fp.dir, "c1.jsonl"), os.path.join(fp.dir, "c2.jsonl")
    write_jsonl(c1, [line(23, e, q, order="EX-C", qty=1) for e in range(1, 7)
                     for q in range(1, 4)])
    write_jsonl(c2, [line(23, 1, q, order="EX-C", qty=1) for q in range(1, 4)])
    eq(send(fp, c1).returncode, 0, "six epochs")
    r = send(fp, c2)
    eq((r.returncode, summary(r)["rejected"]), (1, 1), "the old epoch refused: " + r.stderr)
    [dl] = stored(fp)
    eq((dl["reason"], dl["records"]), ("stale_epoch", 3), "its dead letter")
    out = deadletters(fp, "resubmit", "--source", "900200", "--delete", "--all")
    eq(out.returncode, 1, out.stdout + out.stderr)
    assert "REFUSED: floorpost can no longer tell whether it counted" in out.stdout, out.stdout
    eq(len(stored(fp)), 1, "kept")
    eq(yields(fp), {(PLANT, "EX-A", "0010"): [10, 0], (PLANT, "EX-B", "0010"): [15, 0],
                    (PLANT, "EX-C", "0010"): [18, 0]}, "each record once")
    fp.stop()


@extra_test
def send_batches_per_source_and_flushes_by_time_from_a_pipe():
    """Lines of two sources taking turns fill one batch per source; from a
    pipe that stays open, a line goes out after --flush-ms without waiting
    for a full batch or the end of the input."""
    fp = Floorpost().start()
    path = os.path.join(fp.dir, "turns.jsonl")
    write_jsonl(path, [line(31 + i % 2, 1, 1 + i // 2) for i in range(200)])
    r = send(fp, path, "--batch", "50")
    eq(r.returncode, 0, r.stderr)
    eq((summary(r)["records"], summary(r)["batches"]), (200, 4), "two full batches per source")

    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)
    p = subprocess.Popen([FLOORPOST, "send", "--flush-ms", "100", fp.endpoints["router"], "-"],
                         stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    for d in (line(33, 1, 1, kind="OperationStarted", order="EX-PIPE", qty=0),
              line(33, 1, 2, kind="PartCount", order="EX-PIPE", qty=4),
              line(33, 1, 3, kind="OperationCompleted", order="EX-PIPE", qty=0)):
        p.stdin.write(json.dumps(d) + "\n")
    p.stdin.flush()
    ok = sub.wait_for(lambda ev: any(e["order"] == "EX-PIPE" and e.get("final") for e in ev),
                      timeout=5)
    took = time.time() - t0
    assert ok, "the final completion did not come while the pipe stayed open"
    assert p.poll() is None, "send ended early"
    assert took < 3, took
    p.stdin.close()
    err = p.stderr.read()
    eq(p.wait(10), 0, err)
    eq(summary(subprocess.CompletedProcess([], 0, "", err))["batches"], 1, err)
    sub.stop()
    fp.stop()
