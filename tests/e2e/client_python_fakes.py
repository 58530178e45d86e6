"""The floorpost Python package's Subscriber against a fake feed (an XPUB)
and a fake replay endpoint (a ROUTER): the cases of
tests/gateway/test_subscriber.c, so the two libraries behave alike. Run by
tests/e2e/t_client.py with the interpreter of a venv the package was
pip-installed into; prints "ok N cases" or raises."""
import sys
import time

import flatbuffers
import zmq

import floorpost
from floorpost import Bad, DeadLetter, Event, Gap, Heartbeat, Lost, Reset, Subscriber, decode
from floorpost.checkpoint import Checkpoint as C
from floorpost.checkpoint import Completion as P
from floorpost.checkpoint import Header as H
from floorpost.checkpoint.Body import Body

TOPIC = "completion/1000/L01"
CTX = zmq.Context.instance()
N = [0]


def encode(stream_seq, g):
    b = flatbuffers.Builder(256)
    strs = [b.CreateString(s) for s in ("t-%d" % g, "t", "1000", "L01", "O1", "0010")]
    H.Start(b)
    for add, s in zip((H.AddEventId, H.AddInstance, H.AddPlant, H.AddLine, H.AddOrder,
                       H.AddOperation), strs):
        add(b, s)
    H.AddStreamSeq(b, stream_seq)
    H.AddGlobalSeq(b, g)
    h = H.End(b)
    P.Start(b)
    P.AddYield_(b, g)
    P.AddFinal(b, True)
    body = P.End(b)
    C.Start(b)
    C.AddHeader(b, h)
    C.AddBodyType(b, Body.Completion)
    C.AddBody(b, body)
    b.Finish(C.End(b), file_identifier=b"FPC1")
    return bytes(b.Output())


class Fake:
    def __init__(self, replay=False, **kw):
        N[0] += 1
        self.feed = "inproc://feed-%d" % N[0]
        self.rep = "inproc://replay-%d" % N[0]
        self.pub = CTX.socket(zmq.XPUB)
        self.pub.bind(self.feed)
        self.router = None
        if replay:
            self.router = CTX.socket(zmq.ROUTER)
            self.router.bind(self.rep)
        self.sub = Subscriber(self.feed, replay=self.rep if replay else None, context=CTX, **kw)
        assert self.pub.poll(2000) and self.pub.recv()[0] == 1, "subscription"

    def publish(self, stream_seq, g, topic=TOPIC):
        self.pub.send_multipart([topic.encode(), encode(stream_seq, g)])

    def expect(self, kind):
        m = self.sub.recv(2000)
        assert isinstance(m, kind), "expected %s, got %r" % (kind.__name__, m)
        return m

    def request(self):
        assert self.router.poll(2000), "no REPLAY request"
        ident, req = self.router.recv_multipart()
        w = req.split()
        assert w[0] == b"REPLAY", req
        return ident, int(w[1]), int(w[2])

    def answer(self, ident, events, end):
        for s, g in events:
            self.router.send_multipart([ident, TOPIC.encode(), encode(s, g)])
        self.router.send_multipart([ident, b"END", end.encode()])

    def close(self):
        self.sub.close()
        self.pub.close(0)
        if self.router:
            self.router.close(0)


def case_decode():
    ck = decode(encode(3, 7))
    assert (ck.kind, ck.stream_seq, ck.global_seq, ck.event_id, ck.yield_, ck.final) == \
        ("completion", 3, 7, "t-7", 7, True), ck
    assert ck.to_dict()["order"] == "O1"
    for junk, why in ((b"x", "truncated"), (b"\x5a" * 64, "wrong_identifier")):
        try:
            decode(junk)
            raise AssertionError("decoded junk")
        except floorpost.DecodeError as e:
            assert str(e) == why, e


def case_options_refused():
    for kw, text in ((dict(from_global_seq=5), "needs a replay endpoint"),
                     (dict(replay="inproc://r", replay_batch=0), "replay_batch")):
        try:
            Subscriber("inproc://nothing", context=CTX, **kw)
            raise AssertionError("took %r" % kw)
        except ValueError as e:
            assert text in str(e), e


def case_gaps_and_resets_without_replay():
    f = Fake()
    f.publish(1, 1)
    f.publish(2, 2)
    f.publish(4, 4)
    assert f.expect(Event).checkpoint.global_seq == 1
    assert f.expect(Event).checkpoint.global_seq == 2
    assert f.expect(Gap) == Gap("", 3, 4)
    assert f.expect(Gap) == Gap(TOPIC, 3, 4)
    assert f.expect(Event).checkpoint.event_id == "t-4"
    f.pub.send_multipart([b"heartbeat", b'{"instance":"t","global_seq":6,"feeds":{"%s":6},'
                          b'"wall_ns":1}' % TOPIC.encode()])
    assert f.expect(Gap) == Gap("", 5, 7)
    assert f.expect(Gap).missing == 2
    hb = f.expect(Heartbeat)
    assert (hb.global_seq, hb.wall_ns, hb.feeds) == (6, 1, {TOPIC: 6}), hb
    f.publish(1, 1)
    assert f.expect(Reset) == Reset("", 4, 1)
    assert f.expect(Reset) == Reset(TOPIC, 6, 1)
    assert f.expect(Event).checkpoint.global_seq == 1
    f.pub.send_multipart([TOPIC.encode(), b"not a flatbuffer"])
    f.pub.send_multipart([b"heartbeat", b"{]"])
    f.pub.send(b"scrap/x")
    assert "undecodable checkpoint" in f.expect(Bad).reason
    assert "heartbeat" in f.expect(Bad).reason
    assert "1 frames" in f.expect(Bad).reason
    st = f.sub.stats
    assert (st.events, st.gaps, st.missing, st.bad, st.resets) == (4, 2, 3, 3, 2), st
    assert f.sub.recv(0) is None
    f.close()


def case_fill_asks_again_after_a_hole():
    f = Fake(replay=True)
    f.publish(1, 1)
    f.publish(5, 5)
    assert f.expect(Event).checkpoint.global_seq == 1
    assert f.sub.recv(0) is None  # the request is out; the caller is not kept
    ident, first, most = f.request()
    assert (first, most) == (2, 3)
    f.answer(ident, [(2, 2), (4, 4)], "5 1 5")  # a hole at 3
    m = f.expect(Event)
    assert m.checkpoint.global_seq == 2 and m.replayed
    assert f.sub.recv(0) is None
    ident, first, most = f.request()
    assert (first, most) == (3, 2)
    f.answer(ident, [(2, 2), (3, 3), (4, 4)], "5 1 5")
    for g in (3, 4, 5):
        m = f.expect(Event)
        assert (m.checkpoint.global_seq, m.replayed) == (g, g < 5), m
    st = f.sub.stats
    assert (st.replay_requests, st.replayed, st.duplicates, st.gaps) == (2, 3, 1, 0), st
    assert f.sub.position == 5
    f.close()


def case_catch_up_then_live_with_a_prefix():
    f = Fake(replay=True, prefix="completion/", from_global_seq=1)
    assert f.sub.recv(0) is None
    ident, first, most = f.request()
    assert (first, most) == (1, 1000)
    f.answer(ident, [(1, 1), (2, 2)], "3 1 2")
    assert f.expect(Event).checkpoint.global_seq == 1
    assert f.expect(Event).checkpoint.global_seq == 2
    f.publish(2, 2)                        # replayed already: skipped
    f.publish(1, 3, topic="scrap/1000/L01")  # filtered, but counted: no gap
    f.publish(3, 4)
    m = f.expect(Event)
    assert (m.checkpoint.global_seq, m.replayed) == (4, False)
    assert (f.sub.position, f.sub.stats.global_gaps, f.sub.stats.duplicates) == (4, 0, 1)
    f.close()


def case_lost_when_not_retained_or_not_answered():
    f = Fake(replay=True, replay_timeout_ms=300)
    f.publish(1, 1)
    f.publish(9, 9)
    assert f.expect(Event).checkpoint.global_seq == 1
    assert f.sub.recv(0) is None
    ident, _, _ = f.request()
    f.answer(ident, [(6, 6)], "7 6 9")  # 2..5 are gone
    m = f.expect(Lost)
    assert (m.first, m.next) == (2, 6) and "no longer retained" in m.reason, m
    assert f.sub.recv(0) is None
    ident, first, _ = f.request()
    assert first == 6
    f.answer(ident, [(6, 6)], "7 6 9")
    assert f.expect(Gap).first == 2
    assert f.expect(Event).checkpoint.global_seq == 6
    assert f.sub.recv(0) is None
    _, first, _ = f.request()  # never answered
    assert first == 7
    t0 = time.monotonic()
    m = f.expect(Lost)
    assert 0.15 < time.monotonic() - t0 < 1.5
    assert (m.first, m.next) == (7, 9) and "did not answer within 300 ms" in m.reason, m
    assert f.expect(Gap).next == 9
    assert f.expect(Event).checkpoint.global_seq == 9
    assert f.sub.stats.lost == 6
    f.close()


def case_catch_up_that_fails_is_asked_again_bounded():
    f = Fake(replay=True, from_global_seq=1, replay_timeout_ms=200)
    assert f.sub.recv(0) is None
    f.request()  # never answered
    assert f.sub.recv(500) is None  # a catch-up reports nothing yet
    f.publish(3, 3)  # 1..2 still missing: asked again
    assert f.sub.recv(0) is None
    ident, first, most = f.request()
    assert (first, most) == (1, 2)
    f.answer(ident, [(1, 1), (2, 2)], "3 1 3")
    assert [f.expect(Event).checkpoint.global_seq for _ in range(3)] == [1, 2, 3]
    f.close()


def case_callback_api():
    f = Fake()
    for g in (1, 2, 3):
        f.publish(g, g)
    seen = []
    assert f.sub.run(lambda m: (seen.append(m), len(seen) == 2 and 42)[1], 2000) == 42
    assert f.sub.run(lambda m: seen.append(m), 100) is None  # idle
    assert [m.checkpoint.global_seq for m in seen] == [1, 2, 3]
    f.close()


def case_deadletters_accepted():
    f = Fake()
    f.sub.accept_deadletters()
    detail = (b'{"reason":"string_has_nul",\r\n"source_id":18446744073709551615,'
              b'"detail":"P\\u0000A"}')
    f.publish(1, 1)
    f.pub.send_multipart([b"deadletter/string_has_nul", detail, b"\x01\x02\x03"])
    f.publish(2, 2)
    assert f.expect(Event).checkpoint.global_seq == 1
    m = f.expect(DeadLetter)
    assert (m.topic, m.reason, m.data) == ("deadletter/string_has_nul", "string_has_nul",
                                           b"\x01\x02\x03"), m
    assert m.text == ('{"reason":"string_has_nul",  "source_id":18446744073709551615,'
                      '"detail":"P\\u0000A"}'), m.text
    assert m.detail["source_id"] == 18446744073709551615 and m.detail["detail"] == "P\0A", m
    assert f.expect(Event).checkpoint.global_seq == 2  # no Gap: a dead letter has no seq
    for topic, body in ((b"scrap/1000/L01", b"{}"), (b"deadletter/malformed", b"{]"),
                        (b"deadletter/malformed", b"[1]"), (b"deadletter/", b"{}")):
        f.pub.send_multipart([topic, body, b"x"])
    assert "not deadletter/REASON" in f.expect(Bad).reason
    m = f.expect(Bad)
    assert m.topic == "deadletter/malformed" and "the detail (2 bytes) is not a JSON object" \
        in m.reason, m
    assert "another value" in f.expect(Bad).reason
    assert "not deadletter/REASON" in f.expect(Bad).reason
    f.pub.send_multipart([b"deadletter/envelope", b'{"reason":"envelope"}', b""])
    m = f.expect(DeadLetter)
    assert (m.data, m.text) == (b"", '{"reason":"envelope"}'), m
    st = f.sub.stats
    assert (st.deadletters, st.bad, st.events, st.global_gaps) == (2, 4, 2, 0), st
    f.close()


def case_deadletters_not_accepted_are_bad():
    f = Fake()
    f.pub.send_multipart([b"deadletter/too_old", b'{"reason":"too_old"}', b"x"])
    assert "unexpected message (3 frames)" in f.expect(Bad).reason
    assert f.sub.stats.deadletters == 0
    f.close()


def case_deadletters_filtered_by_prefix():
    f = Fake(replay=True, prefix="deadletter/too_old")
    f.sub.accept_deadletters()
    f.pub.send_multipart([b"deadletter/malformed", b'{"reason":"malformed"}', b"x"])
    f.pub.send_multipart([b"deadletter/too_old", b'{"reason":"too_old","seq":4}', b"yy"])
    m = f.expect(DeadLetter)
    assert (m.topic, m.text, m.data) == ("deadletter/too_old", '{"reason":"too_old","seq":4}',
                                         b"yy"), m
    assert f.sub.recv(100) is None
    assert f.sub.stats.deadletters == 1
    f.close()


if __name__ == "__main__":
    cases = [v for k, v in sorted(globals().items()) if k.startswith("case_")]
    for c in cases:
        try:
            c()
        except Exception:
            print("FAIL %s" % c.__name__, file=sys.stderr)
            raise
    print("ok %d cases" % len(cases))
