"""e2e: closed keys at rest (issue 13 item 3). A closed operation waiting
out closed_key_grace_ms is held compactly once its last change is
committed; a late record for it is a late correction that counts on from
its checkpoint_no, the same across a restart, and after the grace the
operation is released: the next record opens it again at checkpoint 1."""
import re
import time

import zmq

from fp import COMPLETED, MATERIAL, PART, Floorpost, Producer, Subscriber, eq, extra_test, rec

CTX = zmq.Context.instance()


def s_subscribe(fp):
    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)  # PUB/SUB: let the subscription arrive
    return sub


def s_send(prod, records, nacks):
    prod.send(1, 1, records)
    assert prod.wait_acks(nacks), "no ack"


def s_completions(sub, n):
    assert sub.wait_for(lambda ev: len([e for e in ev if e["kind"] == "completion"]) >= n), \
        sub.snapshot()
    return [e for e in sub.snapshot() if e["kind"] == "completion"]


@extra_test
def late_correction_of_a_compacted_key_across_a_restart_then_release():
    fp = Floorpost(closed_key_grace_ms=5000).start()
    sub = s_subscribe(fp)
    prod = Producer(CTX, fp.endpoints["router"])
    s_send(prod, [rec(1, PART, qty=5),
                  rec(2, MATERIAL, qty=700, material="RM-1", lot="LOT-1", unit="KG"),
                  rec(3, COMPLETED)], 1)
    c = s_completions(sub, 1)
    eq([(e["checkpoint_no"], e["final"], e["late"], e["yield_"]) for e in c], [(1, True, False, 5)],
       "the final completion")
    time.sleep(0.5)  # many 20 ms rounds: committed, then compacted
    s_send(prod, [rec(4, PART, qty=2)], 2)
    c = s_completions(sub, 2)
    eq((c[1]["checkpoint_no"], c[1]["late"], c[1]["final"], c[1]["yield_"], c[1]["line"]),
       (2, True, False, 2, "L01"), "a late correction of the compacted completion")
    time.sleep(0.5)  # committed, then compacted again
    rc, _ = fp.stop()
    sub.stop()
    eq(rc, 0, "exit code")
    # two keys (completion, consumption), compacted in whichever shard has O1
    held = [(int(k), int(c)) for k, c in
            re.findall(r'msg="drained" keys=(\d+) compact_keys=(\d+)', fp.log())]
    eq(sorted(held)[-1], (2, 2), "the closed keys at rest at the drain")

    # restart on the same state: the compacted key's checkpoint_no goes on
    fp.start()
    sub = s_subscribe(fp)
    prod.close()
    prod = Producer(CTX, fp.endpoints["router"])
    time.sleep(0.3)
    s_send(prod, [rec(5, PART, qty=3, line="L99"),
                  rec(6, MATERIAL, qty=10, material="RM-1", lot="LOT-1", unit="KG")], 1)
    c = s_completions(sub, 1)
    eq((c[0]["checkpoint_no"], c[0]["late"], c[0]["yield_"], c[0]["line"]), (3, True, 3, "L01"),
       "after the restart: late, counting on, the first record's line")
    assert sub.wait_for(lambda ev: any(e["kind"] == "consumption" for e in ev))
    m = [e for e in sub.snapshot() if e["kind"] == "consumption"]
    eq([(e["checkpoint_no"], e["late"], e["quantity"]) for e in m], [(2, True, 10)],
       "the compacted consumption key, late")

    # the grace passes: released; the operation opens again from 1
    time.sleep(5.5)
    s_send(prod, [rec(7, PART, qty=4)], 2)
    rc, _ = fp.stop()
    time.sleep(0.3)
    sub.stop()
    eq(rc, 0, "exit code")
    c = [e for e in sub.snapshot() if e["kind"] == "completion"]
    eq([(e["checkpoint_no"], e["late"], e["yield_"]) for e in c], [(3, True, 3), (1, False, 4)],
       "released after the grace, then a new operation")
    ids = [e["event_id"] for e in sub.snapshot()]
    eq(len(ids), len(set(ids)), "event ids unique")
    prod.close()
