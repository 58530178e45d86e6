"""e2e: what the parsers extracted for fuzzing (fuzz/README.md) changed at
the edges of the running binary: the replay endpoint refuses a request the
old sscanf took (a sign wrapping to 2^64-1, text after the numbers) and
still answers the exact ones, and the jsonl sink refuses a damaged position
file ("-1 1 -1" was read as position 2^64-1: every event skipped) until the
operator removes it, then delivers everything once."""
import glob
import json
import os
import shutil
import tempfile
import time
import urllib.request

import zmq

from fp import (Floorpost, PART, Producer, eq, extra_test, free_port, rec, replay)
from t_jsonl import read_files

CTX = zmq.Context.instance()
ERROR = b'ERROR expected "REPLAY <from_global_seq> <max_events>"'


def wait_sink(port, pred, timeout):
    """The first sink's status once pred(status) holds (or the last one)."""
    end = time.time() + timeout
    while True:
        st = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/sinks" % port).read())[0]
        if pred(st) or time.time() > end:
            return st
        time.sleep(0.1)


def ask(endpoint, frame, timeout=5.0):
    """One raw request frame; the frames of every answer until END."""
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send(frame)
    got = []
    end = time.time() + timeout
    try:
        while time.time() < end:
            if not s.poll(200):
                continue
            parts = s.recv_multipart()
            got.append(parts)
            if parts[0] == b"END":
                return got
        raise AssertionError("no END for %r" % frame)
    finally:
        s.close()


@extra_test
def replay_request_parsed_exactly():
    fp = Floorpost(posting_interval_ms=100).start()
    prod = Producer(CTX, fp.endpoints["router"])
    prod.send(7, 1, [rec(i, PART, qty=1, order="O%d" % i) for i in range(1, 4)])
    assert prod.wait_acks(1), "ack"
    end = time.time() + 10
    while time.time() < end:
        events, (nxt, oldest, last) = replay(CTX, fp.endpoints["replay"], 1)
        if last >= 3:
            break
        time.sleep(0.1)
    assert last >= 3, "three partial checkpoints committed"
    ep = fp.endpoints["replay"]
    for bad in (b"REPLAY -1 10", b"REPLAY +1 10", b"REPLAY1 10", b"REPLAY 1 10 junk",
                b"REPLAY 1 -10", b"REPLAY 18446744073709551616 1", b"REPLAY 0 10",
                b"REPLAY 1 " + b"9" * 70, b"replay 1 10", b""):
        got = ask(ep, bad)
        eq(got, [[b"END", ERROR]], "refused: %r" % bad[:40])
    # exact ones, with what C clients and line-based tools add
    for good in (b"REPLAY 2 1", b"REPLAY 2 1\0", b"REPLAY\t2  1\r\n", b"REPLAY 0002 1"):
        got = ask(ep, good)
        eq(len(got), 2, "one event and END for %r" % good)
        eq(got[1][0], b"END", "END")
        eq(got[1][1].split()[0], b"3", "next after one event from 2")
    got = ask(ep, b"REPLAY 1 18446744073709551615")  # max: capped at 10000, not refused
    eq(len(got), last + 1, "every event, then END")
    prod.close()
    rc, _ = fp.stop()
    eq(rc, 0, "drain")


@extra_test
def jsonl_sink_refuses_damaged_position():
    out = tempfile.mkdtemp(prefix="fp-jsonl-pos-")
    pos = os.path.join(out, ".f.position")
    with open(pos, "w") as f:
        f.write("-1 1 -1\n")  # sscanf: position 2^64-1, every event skipped
    port = free_port()
    fp = Floorpost(sinks={"f": dict(type="jsonl", directory=out, max_age_ms=200, retry_ms=100,
                                    retry_max_ms=200)},
                   posting_interval_ms=200, metrics_port=port).start()
    prod = Producer(CTX, fp.endpoints["router"])
    for i in range(1, 11):
        prod.send(9, 1, [rec(i, PART, order="O%d" % (i % 3), qty=2)])
    assert prod.wait_acks(10), "acked while the sink cannot open"
    st = wait_sink(port, lambda st: "damaged" in (st.get("last_error") or ""), 10)
    assert "damaged" in st["last_error"] and ".f.position" in st["last_error"], st
    eq(glob.glob(os.path.join(out, "f-*.jsonl")), [], "nothing written past a damaged position")
    os.unlink(pos)  # the operator's fix: start from the oldest event again
    st = wait_sink(port, lambda st: st["lag_events"] == 0 and st["position"] > 0, 15)
    eq(st["lag_events"], 0, "caught up after the fix: %r" % st)
    prod.close()
    rc, _ = fp.stop()
    eq(rc, 0, "drain")
    evs = read_files(out, "f")  # names match their global_seq range
    eq([e["global_seq"] for e in evs], list(range(1, len(evs) + 1)), "all, once, in order")
    eq(sum(e["record_count"] for e in evs), 10, "every record")
    with open(pos) as f:
        eq(int(f.read().split()[0]), len(evs), "the position written again")
    shutil.rmtree(out)
