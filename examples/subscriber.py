#!/usr/bin/python3
"""subscriber.py - a floorpost checkpoint subscriber in Python, on the
floorpost package (python/ in the source tree, installed with pip).

    subscriber.py [--count N] [--timeout MS] [--replay ENDPOINT [--from N]]
                  [--server-key FILE --key FILE] ENDPOINT [TOPIC_PREFIX]

Follows floorpost's checkpoint feed (the `publish` endpoint) for a topic
prefix ("" = everything, "completion/" = every completion) and prints one
line per event. A `gap` line means a topic's stream_seq skipped numbers
(events lost on the way; the feed's heartbeat shows a loss at the end of a
burst too), a `reset` line that it went back (floorpost restarted without
its state). With --replay (floorpost's replay endpoint) gaps are filled
instead, and only what floorpost no longer keeps is printed as a `lost`
line; --from N first catches up from global_seq N. With CURVE, --server-key
is floorpost's .pub and --key this subscriber's .key (exit 3 when floorpost
refuses the key). Prints exactly the same lines as examples/subscriber.c.

    python3 -m venv --system-site-packages venv
    venv/bin/pip install --no-build-isolation --no-deps ./python
    venv/bin/python examples/subscriber.py tcp://127.0.0.1:5570 completion/

(in the source tree without installing: PYTHONPATH=python python3 examples/subscriber.py ...)
"""
import argparse
import sys
import time

from floorpost import Bad, CurveKeys, Event, Gap, Lost, Refused, Reset, Subscriber


def line(topic, ck):
    """One output line for a Checkpoint (the C example's format)."""
    head = "%s topic=%s seq=%d event_id=%s order=%s op=%s late=%d " % (
        ck.kind, topic, ck.stream_seq, ck.event_id, ck.order, ck.operation, 1 if ck.late else 0)
    if ck.kind == "consumption":
        return head + "material=%s lot=%s unit=%s quantity=%d" % (ck.material, ck.lot, ck.unit,
                                                                  ck.quantity)
    if ck.kind == "completion":
        return head + "yield=%d scrap=%d final=%d" % (ck.yield_, ck.scrap, 1 if ck.final else 0)
    if ck.kind == "counter_reset":  # a notice, not a posting
        return head + "station=%s counter=%s previous=%d reading=%d" % (
            ck.station, ck.counter, ck.previous, ck.reading)
    return head + "reason=%s parts=%d" % (ck.reason, ck.parts)


def number(lo, hi):
    def parse(s):
        if not s.isdigit() or not lo <= int(s) <= hi:
            raise argparse.ArgumentTypeError("expected a number %d..%d, got \"%s\"" % (lo, hi, s))
        return int(s)
    return parse


def main():
    ap = argparse.ArgumentParser(description="floorpost checkpoint subscriber")
    ap.add_argument("--count", type=number(1, 2**64 - 1), default=0, help="stop after N events")
    ap.add_argument("--timeout", type=number(0, 86400000), default=-1,
                    help="stop after MS without an event")
    ap.add_argument("--replay", help="floorpost's replay endpoint: fill gaps from it")
    ap.add_argument("--from", dest="from_seq", type=number(1, 2**64 - 2), default=0,
                    help="first catch up from this global_seq (needs --replay)")
    ap.add_argument("--server-key", help="CURVE: floorpost's public key file (.pub)")
    ap.add_argument("--key", help="CURVE: this subscriber's key file (.key)")
    ap.add_argument("endpoint")
    ap.add_argument("prefix", nargs="?", default="")
    a = ap.parse_args()
    if bool(a.server_key) != bool(a.key):
        ap.error("--server-key and --key go together")

    try:
        curve = CurveKeys.from_files(a.server_key, a.key) if a.server_key else None
        sub = Subscriber(a.endpoint, a.prefix, replay=a.replay, from_global_seq=a.from_seq,
                         curve=curve)
    except (OSError, ValueError) as e:
        print("subscriber: %s" % e, file=sys.stderr)
        sys.exit(1)
    print('subscriber: connected to %s, prefix "%s"' % (a.endpoint, a.prefix),
          file=sys.stderr, flush=True)

    events = gaps = missing = bad = 0
    refused = False
    idle_until = None if a.timeout < 0 else time.monotonic() + a.timeout / 1000.0
    while a.count == 0 or events < a.count:
        wait = None if idle_until is None else max(0, int((idle_until - time.monotonic()) * 1000))
        m = sub.recv(wait)
        if m is None:
            break  # --timeout ms without an event
        if isinstance(m, Event):
            events += 1
            print(line(m.topic, m.checkpoint))
            if a.timeout >= 0:
                idle_until = time.monotonic() + a.timeout / 1000.0
        elif isinstance(m, Gap) and m.topic:  # a global_seq gap shows per topic too
            gaps += 1
            missing += m.missing
            print("gap topic=%s expected=%d got=%d missing=%d" % (m.topic, m.first, m.next,
                                                                  m.missing))
        elif isinstance(m, Reset) and m.topic:
            print("reset topic=%s last=%d got=%d" % (m.topic, m.last, m.got))
        elif isinstance(m, Lost):
            print("lost first=%d last=%d missing=%d" % (m.first, m.next - 1, m.missing))
            print("subscriber: global_seq %d..%d lost: %s" % (m.first, m.next - 1, m.reason),
                  file=sys.stderr)
        elif isinstance(m, Bad):
            bad += 1
            print("subscriber: %s%s" % (m.topic + ": " if m.topic else "", m.reason),
                  file=sys.stderr)
        elif isinstance(m, Refused):
            print("subscriber: authentication refused: %s" % m.reason, file=sys.stderr)
            refused = True
            break
        sys.stdout.flush()
    print("subscriber: %d events, %d gaps, %d missing, %d bad" % (events, gaps, missing, bad),
          file=sys.stderr)
    if a.replay:
        print("subscriber: %d replayed, position %d" % (sub.stats.replayed, sub.position),
              file=sys.stderr)
    sub.close()
    sys.exit(3 if refused else 0)


if __name__ == "__main__":
    main()
