#!/usr/bin/python3
"""subscriber.py - a minimal floorpost checkpoint subscriber in Python.

    subscriber.py [--count N] [--timeout MS] ENDPOINT [TOPIC_PREFIX]

Connects a SUB socket to floorpost's checkpoint feed (the `publish`
endpoint), subscribes to a topic prefix ("" = everything, "completion/" =
every completion), decodes each Checkpoint with the readers flatc generates
from schema/checkpoint.fbs and prints one line per event. It tracks
stream_seq per topic: a `gap` line means events were lost on the way, a
`reset` line that the sequence started over (floorpost restarted). Prints
exactly the same lines as examples/subscriber.c.

Needs python3-zmq, python3-flatbuffers and the generated readers:
    flatc --python -o gen/py schema/checkpoint.fbs
    FP_PYGEN=gen/py python3 subscriber.py tcp://127.0.0.1:5570 completion/
(inside the floorpost tree, `make` generates them in build/py, the default).
"""
import argparse
import json
import os
import sys

import zmq

sys.path.insert(0, os.environ.get("FP_PYGEN", "build/py"))
from floorpost.checkpoint.Body import Body  # noqa: E402
from floorpost.checkpoint.Checkpoint import Checkpoint  # noqa: E402
from floorpost.checkpoint.Completion import Completion  # noqa: E402
from floorpost.checkpoint.Consumption import Consumption  # noqa: E402
from floorpost.checkpoint.Scrap import Scrap  # noqa: E402


def s(v):
    """A FlatBuffers string (bytes or None) as str; absent = ""."""
    return (v or b"").decode("utf-8", "replace")


def describe(topic, buf):
    """One output line for a Checkpoint; raises ValueError if it is not one."""
    if not Checkpoint.CheckpointBufferHasIdentifier(buf, 0):
        raise ValueError("not a Checkpoint (file identifier is not FPC1)")
    ck = Checkpoint.GetRootAs(buf, 0)
    if ck.Version() != 1:
        raise ValueError("unsupported version %d" % ck.Version())
    h = ck.Header()
    body, t = ck.Body(), ck.BodyType()
    if t == Body.Consumption:
        c = Consumption()
        c.Init(body.Bytes, body.Pos)
        kind, tail = "consumption", "material=%s lot=%s unit=%s quantity=%d" % (
            s(c.Material()), s(c.Lot()), s(c.Unit()), c.Quantity())
    elif t == Body.Completion:
        c = Completion()
        c.Init(body.Bytes, body.Pos)
        kind, tail = "completion", "yield=%d scrap=%d final=%d" % (
            c.Yield_(), c.Scrap(), 1 if c.Final() else 0)
    elif t == Body.Scrap:
        c = Scrap()
        c.Init(body.Bytes, body.Pos)
        kind, tail = "scrap", "reason=%s parts=%d" % (s(c.Reason()), c.Parts())
    else:
        raise ValueError("unknown body type %d" % t)
    return h.StreamSeq(), "%s topic=%s seq=%d event_id=%s order=%s op=%s late=%d %s" % (
        kind, topic, h.StreamSeq(), s(h.EventId()), s(h.Order()), s(h.Operation()),
        1 if h.Late() else 0, tail)


def main():
    ap = argparse.ArgumentParser(description="floorpost checkpoint subscriber")
    ap.add_argument("--count", type=int, default=0, help="stop after N events (0 = never)")
    ap.add_argument("--timeout", type=int, default=-1, help="stop after MS idle (-1 = never)")
    ap.add_argument("endpoint")
    ap.add_argument("prefix", nargs="?", default="")
    a = ap.parse_args()

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)  # never drop on our side: a gap means loss upstream
    sub.setsockopt(zmq.SUBSCRIBE, a.prefix.encode())
    sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")  # the end of a burst: see below
    sub.connect(a.endpoint)
    print('subscriber: connected to %s, prefix "%s"' % (a.endpoint, a.prefix),
          file=sys.stderr, flush=True)

    last = {}  # topic -> last stream_seq
    events = gaps = missing = bad = 0
    while a.count == 0 or events < a.count:
        if not sub.poll(None if a.timeout < 0 else a.timeout):
            break  # idle for --timeout ms
        parts = sub.recv_multipart()
        if len(parts) != 2:
            bad += 1
            print("subscriber: unexpected message (%d frames)" % len(parts), file=sys.stderr)
            continue
        topic = parts[0].decode("utf-8", "replace")
        if topic == "heartbeat":
            # each topic's last stream_seq: one we follow that is ahead of
            # ours lost its last events; say so now, not at the next event
            try:
                feeds = json.loads(parts[1])["feeds"]
            except Exception:
                bad += 1
                continue
            for t, hseq in feeds.items():
                prev = last.get(t)
                if t.startswith(a.prefix) and prev and hseq > prev:
                    gaps += 1
                    missing += hseq - prev
                    print("gap topic=%s expected=%d got=%d missing=%d" % (t, prev + 1, hseq + 1,
                                                                         hseq - prev), flush=True)
                    last[t] = hseq
            continue
        try:
            seq, line = describe(topic, parts[1])
        except Exception as e:  # untrusted bytes: never let one message stop us
            bad += 1
            print("subscriber: %s: undecodable checkpoint: %s" % (topic, e), file=sys.stderr)
            continue
        prev = last.get(topic)
        if prev and seq > prev + 1:
            gaps += 1
            missing += seq - prev - 1
            print("gap topic=%s expected=%d got=%d missing=%d" % (topic, prev + 1, seq,
                                                                 seq - prev - 1))
        elif prev and seq <= prev:
            print("reset topic=%s last=%d got=%d" % (topic, prev, seq))
        last[topic] = seq
        events += 1
        print(line, flush=True)
    print("subscriber: %d events, %d gaps, %d missing, %d bad" % (events, gaps, missing, bad),
          file=sys.stderr)
    sub.close(0)


if __name__ == "__main__":
    main()
