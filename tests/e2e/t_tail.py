"""e2e: `floorpost tail` on the subscriber library (src/gateway/subscriber.h).
The dead-letter feed of a real floorpost, printed line for line as its
frames came (the library's dead-letter API: a u64 above INT64_MAX and a
\\u0000 in the detail, a frame-level dead letter); and gaps on a feed that
loses events (a fake publisher sending a real floorpost's events, one lost
in the middle and the last one lost at the end of the burst, which only the
heartbeat shows): reported exactly without --replay, filled from the real
replay endpoint with it."""
import json
import queue
import subprocess
import threading
import time

import zmq

from fp import (FLOORPOST, MATERIAL, PART, SCRAP, COMPLETED, STARTED, Floorpost, Producer, eq,
                extra_test, free_port, rec)

CTX = zmq.Context.instance()
PROBE_SOURCE = 40


def lines_of(stream):
    """A queue the stream's lines go to, from a reader thread (None at EOF)."""
    q = queue.Queue()

    def run():
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)
    threading.Thread(target=run, daemon=True).start()
    return q


def raw_replay(endpoint, from_seq=1, max_events=10000):
    """The replay endpoint's answer as raw frames [(topic, checkpoint)]."""
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send(b"REPLAY %d %d" % (from_seq, max_events))
    out = []
    try:
        while True:
            assert s.poll(10000), "replay: no answer"
            a, b = s.recv_multipart()
            if a == b"END":
                return out
            out.append((a, b))
    finally:
        s.close()


@extra_test
def tail_prints_the_dead_letter_feed_through_the_library():
    big_src = (1 << 63) + 1
    fp = Floorpost().start()
    tail = None
    try:
        raw = CTX.socket(zmq.SUB)
        raw.setsockopt(zmq.SUBSCRIBE, b"")
        raw.connect(fp.endpoints["dl"])
        tail = subprocess.Popen([FLOORPOST, "tail", "--timeout", "4000", fp.endpoints["dl"]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = lines_of(tail.stdout)
        prod = Producer(CTX, fp.endpoints["router"])
        # probes (a record of an unknown kind, one batch each) until both the
        # tail and our own SUB see the feed: no sleep-based guess
        probes, tail_got, raw_got = 0, [], []
        end = time.time() + 30
        while (not tail_got or not raw_got) and time.time() < end:
            probes += 1
            prod.send(PROBE_SOURCE, 1, [rec(probes, 9, qty=1)])
            t0 = time.time()
            while time.time() < t0 + 0.3:
                if raw.poll(20):
                    raw_got.append(raw.recv_multipart())
                try:
                    tail_got.append(out.get(timeout=0.02))
                except queue.Empty:
                    pass
        assert tail_got and raw_got, "the dead-letter feed reached neither the tail nor the SUB"
        assert prod.wait_acks(probes, timeout=30), prod.acks
        # what is tested: a record-level batch (missing_field, a NUL byte in
        # a string, the source above INT64_MAX) and a frame-level dead letter
        prod.send(big_src, 1, [rec(1, PART, qty=2), rec(2, SCRAP, qty=1, reason=None),
                               rec(3, PART, qty=1, plant="P\x00A")])
        prod.send_raw(b"\x07" * 24)
        assert prod.wait_acks(probes + 2, timeout=30), prod.acks
        frames = []
        end = time.time() + 20
        while len(frames) < 3 and time.time() < end:
            if raw.poll(200):
                f = raw.recv_multipart()
                if json.loads(f[1]).get("source_id") != PROBE_SOURCE:
                    frames.append(f)
        raw.close(0)
        eq(len(frames), 3, "dead letters on our own SUB")
        tail.wait(timeout=30)  # --timeout: 4 s without a dead letter
        err = tail.stderr.read()
        eq(tail.returncode, 0, "tail's exit code: " + err)
        eq(err, "", "tail's stderr")
        printed = tail_got
        while printed[-1] is not None:
            printed.append(out.get(timeout=10))
        printed.pop()
        mine = [line for line in printed
                if json.loads(line)["detail"].get("source_id") != PROBE_SOURCE]
        probe_lines = [line for line in printed if line not in mine]
        assert probe_lines and all(json.loads(p)["topic"] == "deadletter/unknown_kind"
                                   for p in probe_lines), probe_lines
        # exactly the frames: topic, the payload's size, the detail as sent
        want = ['{"topic":"%s","payload_bytes":%d,"detail":%s}'
                % (t.decode(), len(p), d.decode()) for t, d, p in frames]
        eq(mine, want, "tail's lines are the dead letters' frames")
        by = {json.loads(line)["topic"]: json.loads(line) for line in mine}
        eq(sorted(by), ["deadletter/missing_field", "deadletter/string_has_nul",
                        "deadletter/wrong_identifier"], "reasons")
        eq(by["deadletter/missing_field"]["detail"]["source_id"], big_src, "u64 source_id exact")
        eq(by["deadletter/missing_field"]["detail"]["seq"], 2, "the record without a reason")
        assert '"P\\u0000A"' in [l for l in mine if "string_has_nul" in l][0], mine
        eq(by["deadletter/wrong_identifier"]["payload_bytes"], 24, "the frame's bytes")
        prod.close()
        rc, _ = fp.stop()
        eq(rc, 0, "stop")
    finally:
        if tail and tail.poll() is None:
            tail.kill()
        fp.kill()


def _events(fp):
    """A few real events (two topics, several orders) and their raw frames."""
    prod = Producer(CTX, fp.endpoints["router"])
    recs, seq = [], 0
    for k in range(4):
        order = "T%d" % k
        for kind, kw in ((STARTED, {}), (PART, dict(qty=k + 2)),
                         (MATERIAL, dict(qty=1000 + k, material="RM-1", lot="L%d" % k, unit="KG")),
                         (COMPLETED, {})):
            seq += 1
            recs.append(rec(seq, kind, order=order, **kw))
    prod.send(61, 1, recs)
    assert prod.wait_acks(1), prod.acks
    prod.close()
    end = time.time() + 20
    frames = []
    while time.time() < end:
        frames = raw_replay(fp.endpoints["replay"])
        if len(frames) >= 8:
            break
        time.sleep(0.1)
    eq(len(frames), 8, "a completion and a consumption per order")
    return frames


def _header(frame):
    from fp import decode_checkpoint
    ck = decode_checkpoint(frame[0].decode(), frame[1])
    return frame[0].decode(), ck["stream_seq"], ck["global_seq"]


def _tail_on_fake_feed(args, frames, lost=(), heartbeat=None, subscriptions=(b"\x01",)):
    """Runs `floorpost tail ARGS ENDPOINT [...]` against a fake floorpost
    feed (an XPUB on a free port: it sees the subscriptions). Once the
    tail's subscriptions have come, sends the frames except those at the
    indexes in lost, then the heartbeat (JSON text), if any. Returns
    (exit code, stdout lines, stderr lines)."""
    port = free_port()
    xpub = CTX.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.bind("tcp://127.0.0.1:%d" % port)
    ep = "tcp://127.0.0.1:%d" % port
    cmd = [FLOORPOST, "tail"] + [ep if a == "FEED" else a for a in args]
    tail = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got = []
        while len(got) < len(subscriptions):
            assert xpub.poll(20000), "the tail did not subscribe: %r" % got
            got.append(xpub.recv())
        eq(sorted(got), sorted(subscriptions), "the tail's subscriptions")
        for i, f in enumerate(frames):
            if i not in lost:
                xpub.send_multipart(f)
        if heartbeat:
            xpub.send_multipart([b"heartbeat", heartbeat.encode()])
        out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
        xpub.close()
    return tail.returncode, out.splitlines(), err.splitlines()


@extra_test
def tail_detects_and_fills_gaps_through_the_library():
    fp = Floorpost(posting_interval_ms=100).start()
    try:
        frames = _events(fp)
        heads = [_header(f) for f in frames]
        eq([h[2] for h in heads], list(range(1, 9)), "global_seq 1..8")
        # what tail prints for each event: its lines from the replay endpoint
        ref = subprocess.run([FLOORPOST, "tail", "--replay", fp.endpoints["replay"], "--from", "1",
                              "--count", "8", "--timeout", "10000", fp.endpoints["pub"]],
                             capture_output=True, text=True, timeout=60)
        eq(ref.returncode, 0, "reference tail: " + ref.stderr)
        lines = ref.stdout.splitlines()
        eq([json.loads(l)["global_seq"] for l in lines], list(range(1, 9)), "reference lines")
        # global_seq 3 (a completion after the first) lost in the middle, 8
        # (the last consumption) at the end of the burst: only the heartbeat
        # (global_seq 8 and each topic's last stream_seq) shows that one
        lost = {2, 7}
        feeds = {}
        for topic, sseq, _ in heads:
            feeds[topic] = sseq
        hb = json.dumps({"instance": "e2e", "global_seq": 8, "feeds": feeds, "wall_ns": 1})

        # without --replay: every gap reported, on stderr, exactly
        rc, out, err = _tail_on_fake_feed(["--timeout", "1500", "FEED"], frames, lost, hb)
        eq(rc, 0, "tail: %r" % err)
        eq(out, [l for i, l in enumerate(lines) if i not in lost], "events printed")
        # what the library reports for this loss, in the order it does
        want, gaps, missing, last_g, last = [], 0, 0, 0, {}

        def global_gap(first, nxt):
            want.append("tail: gap in global_seq: expected %d, got %d (%d events missing)"
                        % (first, nxt, nxt - first))

        def topic_gap(topic, first, nxt):
            want.append("tail: gap on %s: expected stream_seq %d, got %d" % (topic, first, nxt))
            return 1, nxt - first
        for i, (topic, sseq, g) in enumerate(heads):
            if i in lost:
                continue
            if last_g and g > last_g + 1:
                global_gap(last_g + 1, g)
            last_g = g
            if topic in last and sseq > last[topic] + 1:
                n, m = topic_gap(topic, last[topic] + 1, sseq)
                gaps, missing = gaps + n, missing + m
            last[topic] = sseq
        global_gap(last_g + 1, 9)  # the heartbeat's global_seq 8
        for topic, hseq in feeds.items():
            if topic in last and hseq > last[topic]:
                n, m = topic_gap(topic, last[topic] + 1, hseq + 1)
                gaps, missing = gaps + n, missing + m
        want.append("floorpost tail: %d gaps, %d events missing" % (gaps, missing))
        eq((gaps, missing), (2, 2), "two topic gaps of one event each: %r" % heads)
        eq(err, want, "tail's gap reports")

        # with --replay: the same lossy feed, both holes filled from the real
        # replay endpoint, every event once, in order
        rc, out, err = _tail_on_fake_feed(["--replay", fp.endpoints["replay"], "--count", "8",
                                           "--timeout", "10000", "FEED"], frames, lost, hb)
        eq(rc, 0, "tail --replay: %r" % err)
        eq(out, lines, "every event, filled in order")
        eq(err, ["floorpost tail: 2 events replayed, 0 unrecoverable"], "stderr")

        # --human: the same events as readable lines, the lost one missing
        rc, out, err = _tail_on_fake_feed(["--human", "--count", "4", "--timeout", "10000", "FEED",
                                           "completion/"], frames,
                                          subscriptions=(b"\x01completion/", b"\x01heartbeat"))
        eq(rc, 0, "tail --human: %r" % err)
        comps = [json.loads(l) for l in lines if json.loads(l)["kind"] == "completion"]
        want = ["completion  1000/L01  order %s op 0010  yield %+d scrap %+d  FINAL%s"
                "  [seq %d, %d records]"
                % (c["order"], c["yield"], c["scrap"],
                   "  %s %s" % (c["posting_date"], c["period"]) if c.get("posting_date") else "",
                   c["stream_seq"], c["record_count"]) for c in comps]
        eq(out, want, "--human lines")
        rc, _ = fp.stop()
        eq(rc, 0, "stop")
    finally:
        fp.kill()


@extra_test
def tail_timeout_counts_events_not_heartbeats():
    """`--timeout MS`: that long without an event. The feed's heartbeat
    (every 200 ms here) is none, so an idle feed still ends the tail."""
    fp = Floorpost(feed_heartbeat_ms=200).start()
    try:
        hb = CTX.socket(zmq.SUB)
        hb.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
        hb.connect(fp.endpoints["pub"])
        assert hb.poll(10000), "the feed's heartbeat"
        hb.close(0)
        t0 = time.time()
        r = subprocess.run([FLOORPOST, "tail", "--timeout", "1500", fp.endpoints["pub"]],
                           capture_output=True, text=True, timeout=30)
        took = time.time() - t0
        eq((r.returncode, r.stdout, r.stderr), (0, "", ""), "an idle feed: no output, exit 0")
        assert 1.4 < took < 15, "ended by --timeout after %.1f s" % took
        rc, _ = fp.stop()
        eq(rc, 0, "stop")
    finally:
        fp.kill()
