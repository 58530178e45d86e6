"""e2e: one committed outbox event damaged in data.mdb (docs/sinks.md
"A damaged event", docs/subscribers.md): a sink counts it (class damaged,
its global_seq in the log and the status), goes past it and delivers every
other event exactly once in order; a REPLAY across it sends the events
before it and ends with END "ERROR damaged event G; not sent"; the next
start refuses the state (the start's walk checks every value).

The damage happens while floorpost runs, behind a jsonl sink that cannot
write (its directory is gone): a state damaged while floorpost is stopped
never reaches a reader, the start refuses it first (t_state_verify.py).
The value is found by its LMDB leaf node: key size 8, the event's
global_seq big-endian, a value holding a distinctive order name; a byte of
that name is flipped in place (every copy in the file: freed pages may
hold older copies of the leaf), so its checksum no longer matches."""
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time

import zmq

from fp import (FLOORPOST, PART, Floorpost, Producer, eq, extra_test,
                free_port, parse_metrics, rec, scrape)
from fp import replay as fp_replay
from t_jsonl import read_files, sinks_cli

CTX = zmq.Context.instance()
MARK = b"ZZDAMAGEDORDERZZ"


def raw_replay(endpoint, from_seq):
    """(events, END's text): END's text as it is (an ERROR is not raised)."""
    return fp_replay(CTX, endpoint, from_seq, raw_end=True)


def damage_event(path, gseq):
    """Flips one byte of MARK in every stored copy of outbox event gseq's
    value (its LMDB leaf node: u16 lo, u16 hi data size, u16 flags, u16
    key size 8, the key, the value). Returns how many copies."""
    with open(path, "rb") as f:
        data = f.read()
    head = struct.pack("<H", 8) + struct.pack(">Q", gseq)
    copies, at = 0, data.find(head)
    while at >= 0:
        node = at - 6
        vlen = struct.unpack_from("<H", data, node)[0] | struct.unpack_from("<H", data,
                                                                            node + 2)[0] << 16
        vstart = at + len(head)
        m = data.find(MARK, vstart, vstart + vlen) if node >= 0 and vlen < 65536 else -1
        if m >= 0:
            with open(path, "r+b") as f:
                f.seek(m + 3)
                f.write(bytes([data[m + 3] ^ 0x20]))
            copies += 1
        at = data.find(head, at + 1)
    return copies


def sinks_status(port):
    return json.loads(scrape(port, "/sinks")[1])[0]


def wait_committed(fp, records):
    """The outbox's events once they hold `records` records."""
    end = time.time() + 15
    while time.time() < end:
        evs, _ = raw_replay(fp.endpoints["replay"], 1)
        if sum(e["record_count"] for e in evs) == records:
            return evs
        time.sleep(0.2)
    raise AssertionError("not all %d records in committed events" % records)


@extra_test
def damaged_outbox_event_counted_and_passed():
    damaged_case(last=False)


@extra_test
def damaged_last_outbox_event_passed_by_a_deferring_sink():
    """The damaged event is the last committed one: the jsonl sink (it
    defers: finished at its file's fsync) is past it at once, not when the
    next event is finished."""
    damaged_case(last=True)


def damaged_case(last):
    d = tempfile.mkdtemp(prefix="fp-dmg-")
    out = os.path.join(d, "out")
    os.mkdir(out)
    port = free_port()
    fp = Floorpost(sinks={"f": dict(type="jsonl", directory=out, max_age_ms=200, retry_ms=100,
                                    retry_max_ms=300, breaker_failures=1000)},
                   posting_interval_ms=200, metrics_port=port).start()
    prod = Producer(CTX, fp.endpoints["router"])
    # the sink cannot write: it holds every event back, retrying
    shutil.rmtree(out)
    n = 0
    marked = 30 if last else 15
    for i in range(1, 31):
        if i == marked and last:
            assert prod.wait_acks(n, 20), "acks"
            wait_committed(fp, n)  # the marked one is the last event
        order = MARK.decode() if i == marked else "O%02d" % i
        prod.send(7, 1, [rec(i, PART, order=order, qty=i)])
        n += 1
        time.sleep(0.03)
    assert prod.wait_acks(n, 20), "acks"
    # every event committed (no record waits in an open interval)
    evs = wait_committed(fp, n)
    truth = [e["global_seq"] for e in evs]
    eq(truth, list(range(1, len(truth) + 1)), "the outbox before the damage")
    bad = [e["global_seq"] for e in evs if e["order"] == MARK.decode()]
    eq(len(bad), 1, "one event holds the distinctive order")
    g = bad[0]
    if last:
        eq(g, truth[-1], "the damaged event is the last one")
    else:
        assert 1 < g < truth[-1], "the damaged event has neighbours: %d of %r" % (g, truth)
    st = sinks_status(port)
    eq(st["position"], 0, "the sink has delivered nothing yet: %r" % st)

    copies = damage_event(os.path.join(fp.dir, "state", "data.mdb"), g)
    assert copies >= 1, "event %d's value not found in data.mdb" % g

    # REPLAY across it: the events before it, then END names it
    evs, tail = raw_replay(fp.endpoints["replay"], 1)
    eq([e["global_seq"] for e in evs], list(range(1, g)), "replay: the events before it")
    eq(tail, "ERROR damaged event %d; not sent" % g, "replay END")
    evs, tail = raw_replay(fp.endpoints["replay"], g + 1)
    eq([e["global_seq"] for e in evs], list(range(g + 1, truth[-1] + 1)),
       "replay from after it: the rest")
    words = tail.split()
    eq(len(words), 3, "END after the damaged one: " + tail)
    eq(int(words[0]), truth[-1] + 1, "END next after the rest: " + tail)

    # the sink can write again: every other event once, in order, not stuck
    os.mkdir(out)
    end = time.time() + 15
    while time.time() < end:
        st = sinks_status(port)
        if st["position"] >= truth[-1] and st["lag_events"] == 0:
            break
        time.sleep(0.1)
    eq(st["position"], truth[-1], "the sink went past the damaged event: %r" % st)
    eq(st["lag_events"], 0, "caught up")
    eq(st["errors"]["damaged"], 1, "status counts it")
    assert ("global_seq=%d" % g) in st["last_error"], st
    metrics = parse_metrics(scrape(port)[1])
    eq(metrics['floorpost_sink_errors_total{sink="f",class="damaged"}'], 1.0, "metric")
    assert metrics["floorpost_replay_damaged_total"] >= 1, "replay metric"
    r = sinks_cli(fp, "status")
    assert "global_seq=%d" % g in r.stdout, r.stdout
    # a new event after it goes too (the sink is not stuck behind it)
    prod.send(7, 1, [rec(n + 1, PART, order="O99", qty=1)])
    assert prod.wait_acks(n + 1, 20), "ack of the new record"
    end = time.time() + 15
    while time.time() < end and sinks_status(port)["position"] <= truth[-1]:
        time.sleep(0.1)
    last = sinks_status(port)["position"]
    assert last > truth[-1], "the new event was delivered"
    prod.close()
    rc, _ = fp.stop()
    eq(rc, 0, "drain")
    log = fp.log()
    assert ('msg="damaged event in the outbox; skipped" global_seq=%d' % g) in log, log
    assert ('msg="damaged event in the outbox; not sent" global_seq=%d' % g) in log, log
    files = read_files(out, "f")
    seqs = [e["global_seq"] for e in files]
    eq(seqs, [s for s in range(1, seqs[-1] + 1) if s != g], "every other event once, in order")
    assert seqs[-1] >= last, "the files reach the position"
    eq(sum(e["record_count"] for e in files), n, "records: all but the damaged one's, plus one")

    # stopped, the state is refused at the next start: the walk checks it
    r = subprocess.run([FLOORPOST, "state", "verify", "--state", os.path.join(fp.dir, "state")],
                       capture_output=True, text=True, timeout=60)
    eq(r.returncode, 1, "verify refuses: " + r.stdout + r.stderr)
    assert "outbox" in r.stdout + r.stderr, r.stdout + r.stderr
    shutil.rmtree(d)
