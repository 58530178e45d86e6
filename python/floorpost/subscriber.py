"""floorpost.subscriber - follows floorpost's checkpoint feed, decodes each
event, tells you when events were lost and, given the replay endpoint,
fetches them: you see every committed event once, in global_seq order.

The same client as the C library (src/gateway/subscriber.h, installed as
<floorpost/subscriber.h>); docs/subscribers.md describes the feed, the
heartbeat and the replay protocol.

    from floorpost import Subscriber, Event, Gap, Lost

    with Subscriber("tcp://mes1:5570", prefix="completion/",
                    replay="tcp://mes1:5572", from_global_seq=stored + 1) as sub:
        for msg in sub:
            if isinstance(msg, Event):
                post(msg.checkpoint)               # then store msg.checkpoint.global_seq
            elif isinstance(msg, Lost):
                alarm(msg.first, msg.next - 1, msg.reason)

Messages (one per recv()):
  Event      a checkpoint (.topic, .checkpoint, .data, .replayed)
  Gap        numbers .first .. .next - 1 are missing: of the topic's
             stream_seq, or of global_seq when .topic is "". Only without a
             replay endpoint: with one, gaps are filled (or reported Lost)
  Reset      a number went back (.last, .got): floorpost restarted without its
             state, or it was restored from an older copy
  Lost       replay on: global_seq .first .. .next - 1 could not be replayed
  Bad        a message that is not a checkpoint, skipped (.reason)
  Heartbeat  the feed's heartbeat (.global_seq, .feeds, .wall_ns)
  Refused    CURVE: floorpost refused the handshake (.status, .reason)
  DeadLetter only after accept_deadletters(): a message of the dead-letter
             feed (.topic "deadletter/REASON", .detail the JSON detail as
             a dict, .text the same on one line, .data the original bytes)
A Gap or Reset comes just before the event that revealed it.

Not thread-safe: use a Subscriber from one thread (its sockets are pyzmq's).
"""
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Optional

import zmq

from floorpost.decode import Checkpoint, DecodeError, decode

REPLAY_BATCH = 1000        # events asked per REPLAY request
REPLAY_TIMEOUT_MS = 5000   # wait for a replay answer
_REPLAY_MAX = 10000        # the server's limit per answer
_RETRIES = 3               # asks again after a hole or an endpoint behind
_RETRY_DELAY = 0.1         # s, before asking again an endpoint that was behind


@dataclass
class Event:
    topic: str
    checkpoint: Checkpoint
    data: bytes
    replayed: bool = False


@dataclass
class Gap:
    topic: str  # "" = global_seq
    first: int
    next: int

    @property
    def missing(self):
        return self.next - self.first


@dataclass
class Reset:
    topic: str  # "" = the live global_seq
    last: int
    got: int


@dataclass
class Lost:
    first: int
    next: int
    reason: str

    @property
    def missing(self):
        return self.next - self.first


@dataclass
class Bad:
    topic: str
    reason: str
    data: bytes = b""


@dataclass
class Heartbeat:
    instance: str
    global_seq: int
    feeds: Dict[str, int]
    wall_ns: int


@dataclass
class Refused:
    """CURVE: floorpost refused the feed's handshake. status: the ZAP status
    (400 = the key is not on floorpost's allow list; 0 = a protocol error,
    e.g. a wrong server key). libzmq tries again: a key added later gets
    through."""
    status: int
    reason: str


@dataclass
class DeadLetter:
    """A message of floorpost's dead-letter feed (`deadletter`, default port
    5571): [deadletter/REASON][JSON detail][the original bytes]. No
    sequence numbers, no heartbeat, no replay (docs/subscribers.md)."""
    topic: str
    detail: dict   # its integers exact (source_id may exceed 2^63 - 1)
    text: str      # the detail as floorpost sent it, on one line
    data: bytes

    @property
    def reason(self):
        return self.topic[len("deadletter/"):]


@dataclass
class Stats:
    events: int = 0        # Events handed out (live and replayed)
    replayed: int = 0      # of them from the replay endpoint
    gaps: int = 0          # topic Gaps
    missing: int = 0       # stream_seq numbers in them
    global_gaps: int = 0   # global_seq gaps seen (filled or reported)
    resets: int = 0
    lost: int = 0          # global_seq numbers reported Lost
    bad: int = 0
    heartbeats: int = 0
    duplicates: int = 0    # events skipped: already handed out
    replay_requests: int = 0
    refused: int = 0
    deadletters: int = 0   # DeadLetters handed out


@dataclass
class CurveKeys:
    """CURVE: floorpost's public key and this subscriber's pair, Z85."""
    server_public: str
    public: str
    secret: str

    @classmethod
    def from_files(cls, server_pub_file, key_file):
        """From `floorpost keygen` files: floorpost's NAME.pub, our NAME.key."""
        server = read_key_file(server_pub_file)
        mine = read_key_file(key_file)
        if "secret" not in mine:
            raise ValueError("%s: no secret key (give the .key file)" % key_file)
        return cls(server["public"], mine["public"], mine["secret"])


def read_key_file(path):
    """A `floorpost keygen` file as {"public": Z85, "secret": Z85 (.key only)};
    the format of src/gateway/curve.h ('#' starts a comment line)."""
    keys = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, eq, value = (w.strip() for w in line.partition("="))
            if eq != "=" or name not in ("public", "secret") or len(value) != 40:
                raise ValueError("%s:%d: expected \"public = <40 Z85 characters>\" or "
                                 "\"secret = ...\"" % (path, n))
            keys[name] = value
    if "secret" in keys:
        derived = zmq.curve_public(keys["secret"].encode()).decode()
        if keys.setdefault("public", derived) != derived:
            raise ValueError("%s: the public key does not belong to the secret key" % path)
    if "public" not in keys:
        raise ValueError("%s: no public key" % path)
    return keys


class Subscriber:
    """endpoint: floorpost's feed (`publish`). prefix: topic prefix ("" =
    everything). replay: floorpost's replay endpoint, or None to report gaps
    only. from_global_seq > 0 (needs replay): first catch up from there.
    curve: CurveKeys or None. context: a zmq.Context (default: the shared
    instance)."""

    def __init__(self, endpoint, prefix="", replay=None, from_global_seq=0, curve=None,
                 replay_timeout_ms=REPLAY_TIMEOUT_MS, replay_batch=REPLAY_BATCH, context=None):
        if from_global_seq and not replay:
            raise ValueError("from_global_seq %d needs a replay endpoint" % from_global_seq)
        if not 1 <= replay_batch <= _REPLAY_MAX or replay_timeout_ms < 0:
            raise ValueError("replay_batch must be 1..%d and replay_timeout_ms >= 0" % _REPLAY_MAX)
        self._ctx = context or zmq.Context.instance()
        self._prefix = prefix
        self._replay_ep = replay or None
        self._curve = curve
        self._timeout = replay_timeout_ms / 1000.0
        self._batch = replay_batch
        self._local_filter = bool(replay and prefix)
        self._track_global = bool(replay or not prefix)
        self.stats = Stats()
        self._q = deque()
        self._feeds = {}            # topic -> last stream_seq
        self._last = None           # last global_seq handed out (None: not yet)
        self._last_live = None      # last global_seq on the live feed
        self._fill = None           # the fill in progress
        self._replay = None
        self._deadletters = False   # accept_deadletters()
        self._sub = self._socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 0)  # never drop here: a gap means a loss upstream
        topic = "" if self._local_filter else prefix
        self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if topic:
            self._sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
        self._endpoint = endpoint
        self._monitor = None  # CURVE: a refused key would look like a silent feed
        if curve:
            self._monitor = self._sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                         | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self._poller = zmq.Poller()
        self._poller.register(self._sub, zmq.POLLIN)
        if self._monitor is not None:
            self._poller.register(self._monitor, zmq.POLLIN)
        self._sub.connect(endpoint)
        if from_global_seq:
            # the SUB is connected first: the overlap is skipped as duplicates
            self._last = from_global_seq - 1  # 0: global_seq 1 comes next
            self._fill_start(from_global_seq, None)

    # ---- the API ----

    @property
    def position(self):
        """The last global_seq handed out or passed as Lost (0: none): store
        it with your postings and resume from it + 1."""
        return self._last or 0

    def accept_deadletters(self):
        """From now on, dead letters (3 frames, topic deadletter/REASON) come
        as DeadLetter instead of Bad. Call it before the first recv()."""
        self._deadletters = True

    def recv(self, timeout_ms=None):
        """The next message, or None when nothing came within timeout_ms
        (None: wait forever; 0: do not wait)."""
        until = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        while True:
            if self._q:
                return self._q.popleft()
            if self._fill is not None:
                if self._fill_step(until):
                    return None
            elif not self._read_live(until):
                return None

    def __iter__(self):
        while True:
            yield self.recv()

    def messages(self, idle_timeout_ms=None):
        """Yields messages until none came for idle_timeout_ms."""
        while True:
            m = self.recv(idle_timeout_ms)
            if m is None:
                return
            yield m

    def run(self, callback, idle_timeout_ms=None):
        """Calls callback(msg) for each message until it returns a true
        value (returned) or none came for idle_timeout_ms (returns None)."""
        for m in self.messages(idle_timeout_ms):
            r = callback(m)
            if r:
                return r
        return None

    def close(self):
        if self._monitor is not None:
            self._sub.disable_monitor()
            self._monitor.close(0)
        self._sub.close(0)
        self._replay_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- internals: hand-out and gap checks ----

    def _socket(self, kind):
        s = self._ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if self._curve:
            s.curve_serverkey = self._curve.server_public.encode()
            s.curve_publickey = self._curve.public.encode()
            s.curve_secretkey = self._curve.secret.encode()
        return s

    def _bad(self, topic, reason, data=b""):
        self.stats.bad += 1
        self._q.append(Bad(topic, reason, data))

    def _lost(self, first, nxt, reason):
        if nxt > first:
            self.stats.lost += nxt - first
            self._q.append(Lost(first, nxt, reason))

    def _deliver(self, ev):
        if not ev.topic.startswith(self._prefix):
            return
        seq, prev = ev.checkpoint.stream_seq, self._feeds.get(ev.topic)
        if prev and seq > prev + 1:
            self.stats.gaps += 1
            self.stats.missing += seq - prev - 1
            self._q.append(Gap(ev.topic, prev + 1, seq))
        elif prev and seq <= prev:
            self.stats.resets += 1
            self._q.append(Reset(ev.topic, prev, seq))
        self._feeds[ev.topic] = seq
        self.stats.events += 1
        self.stats.replayed += ev.replayed
        self._q.append(ev)

    def _accept(self, ev):
        g = ev.checkpoint.global_seq
        if self._track_global and g:
            if self._last is not None and g <= self._last:
                self.stats.duplicates += 1
                return
            if self._last is not None and g > self._last + 1:
                self.stats.global_gaps += 1
                if self._replay_ep:
                    self._fill_start(self._last + 1, g, held=ev)
                    return
                self._q.append(Gap("", self._last + 1, g))
            self._last = g
        self._deliver(ev)

    def _live(self, ev):
        g = ev.checkpoint.global_seq
        if self._track_global and g:
            if self._last_live is not None and g <= self._last_live:
                # the live feed went back: another floorpost run
                self.stats.resets += 1
                self._q.append(Reset("", self._last_live, g))
                self._last = g - 1 if g > 1 else None
            self._last_live = g
        self._accept(ev)

    def _heartbeat(self, body):
        try:
            o = json.loads(body)
            gs, feeds = o["global_seq"], o.get("feeds", {})
            if not isinstance(gs, int) or gs < 0 or not isinstance(feeds, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self._bad("heartbeat", "heartbeat: not the expected JSON", body)
            return
        self.stats.heartbeats += 1
        last = self._last
        if self._replay_ep and self._fill is None and last is not None and gs > last:
            self.stats.global_gaps += 1  # the end of a burst was lost: fetch it now
            self._fill_start(last + 1, gs + 1)
        elif not self._replay_ep and self._track_global and last is not None and gs > last:
            self.stats.global_gaps += 1
            self._q.append(Gap("", last + 1, gs + 1))
            self._last = gs
        elif self._track_global and last is None and gs > 0:
            self._last = gs  # no event yet: what is committed now is where we start
        if not self._replay_ep:
            for topic, hseq in feeds.items():
                prev = self._feeds.get(topic)
                if (isinstance(hseq, int) and topic.startswith(self._prefix) and prev
                        and hseq > prev):
                    self.stats.gaps += 1
                    self.stats.missing += hseq - prev
                    self._q.append(Gap(topic, prev + 1, hseq + 1))
                    self._feeds[topic] = hseq
        self._q.append(Heartbeat(str(o.get("instance", "")), gs, feeds, o.get("wall_ns", 0)))

    @staticmethod
    def _wait_ms(until):
        if until is None:
            return None
        return max(0, int((until - time.monotonic()) * 1000 + 0.999))

    def _event(self, parts, what):
        """[topic][bytes] as an Event, or None with a Bad queued."""
        try:
            topic = parts[0].decode("utf-8")
        except UnicodeError:
            self._bad("", "%sunexpected topic (%d bytes)" % (what, len(parts[0])))
            return None
        try:
            return Event(topic, decode(parts[1]), bytes(parts[1]))
        except DecodeError as e:
            self._bad(topic, "%sundecodable checkpoint: %s" % (what, e), bytes(parts[1]))
            return None

    def _refused(self):
        from zmq.utils.monitor import recv_monitor_message
        ev = recv_monitor_message(self._monitor)
        if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            status = ev["value"]
            why = ("ZAP 400: not on its allow list" if status == 400 else "ZAP %d" % status)
            reason = "floorpost at %s refused this subscriber's CURVE key (%s)" % (self._endpoint,
                                                                                  why)
        else:
            status = 0
            reason = ("the CURVE handshake with %s failed (protocol error %#x: a wrong server "
                      "key?)" % (self._endpoint, ev["value"]))
        self.stats.refused += 1
        self._q.append(Refused(status, reason))

    def _read_live(self, until):
        ready = dict(self._poller.poll(self._wait_ms(until)))
        if not ready:
            return False
        if self._monitor is not None and self._monitor in ready:
            self._refused()
            return True
        parts = self._sub.recv_multipart(copy=True)
        if len(parts) == 2 and parts[0] == b"heartbeat":
            self._heartbeat(parts[1])
        elif len(parts) == 3 and self._deadletters:
            self._deadletter(parts)
        elif len(parts) != 2:
            self._bad("", "unexpected message (%d frames)" % len(parts))
        else:
            ev = self._event(parts, "")
            if ev is not None:
                self._live(ev)
        return True

    def _deadletter(self, parts):
        """A dead letter, checked as the C library checks it: its topic, and
        a detail that is a JSON object."""
        topic, body, data = parts
        if (len(topic) <= 11 or len(topic) > 1024 or not topic.startswith(b"deadletter/")
                or b"\0" in topic):
            self._bad("", "unexpected message (3 frames, topic of %d bytes not deadletter/REASON)"
                      % len(topic))
            return
        name = topic.decode("utf-8", "replace")
        if not name.startswith(self._prefix):
            return
        try:
            detail = json.loads(body)
            why = None if isinstance(detail, dict) else "another value"
        except ValueError as e:  # UnicodeDecodeError is one
            why = str(e)
        if why is None and len(body) > 65536:
            why = "too long"
        if why is not None:
            self._bad(name, "dead letter: the detail (%d bytes) is not a JSON object: %s"
                      % (len(body), why), body)
            return
        text = body.decode().replace("\r", " ").replace("\n", " ")
        self.stats.deadletters += 1
        self._q.append(DeadLetter(name, detail, text, data))

    # ---- internals: the fill (a state machine stepped by recv) ----

    def _fill_start(self, first, to, held=None):
        # to None: catch up to what is committed; else global_seq first..to-1
        self._fill = dict(cur=first, to=to, held=held, out=False, holed=False, before=first,
                          retries=0, deadline=0.0, not_before=0.0)

    def _replay_close(self):
        if self._replay is not None:
            self._replay.close(0)
            self._replay = None
        if self._fill:
            self._fill["out"] = False

    def _fill_end(self):
        f, self._fill = self._fill, None
        done = f["to"] - 1 if f["to"] is not None else f["cur"] - 1
        if done > 0 and (self._last is None or self._last < done):
            self._last = done
        if f["held"] is not None:
            self._accept(f["held"])

    def _fill_fail(self, why):
        # bounded: the rest is Lost; a catch-up just stops, and the next
        # event or heartbeat asks again, bounded, for what is still missing
        f = self._fill
        if f["to"] is not None:
            self._lost(f["cur"], f["to"], why)
        self._fill_end()

    def _fill_step(self, until):
        """One step; True when nothing came before `until`."""
        f = self._fill
        if self._replay is None:
            self._replay = self._socket(zmq.DEALER)
            self._replay.connect(self._replay_ep)
        now = time.monotonic()
        if not f["out"]:
            if now < f["not_before"]:
                wake = f["not_before"] if until is None else min(f["not_before"], until)
                time.sleep(max(0.0, wake - now))
                return time.monotonic() < f["not_before"]
            want = self._batch if f["to"] is None else min(self._batch, f["to"] - f["cur"])
            try:
                self._replay.send(b"REPLAY %d %d" % (f["cur"], want), zmq.DONTWAIT)
            except zmq.ZMQError as e:
                self._replay_close()
                self._fill_fail("cannot send to the replay endpoint %s: %s" % (self._replay_ep, e))
                return False
            self.stats.replay_requests += 1
            f.update(out=True, holed=False, before=f["cur"], deadline=now + self._timeout)
        wait_until = f["deadline"] if until is None else min(f["deadline"], until)
        if not self._replay.poll(self._wait_ms(wait_until)):
            if time.monotonic() < f["deadline"]:
                return True  # the caller's timeout; the answer may still come
            self._replay_close()  # a late answer must not be taken for the next one
            self._fill_fail("the replay endpoint %s did not answer within %d ms"
                            % (self._replay_ep, self._timeout * 1000))
            return False
        parts = self._replay.recv_multipart()
        if len(parts) == 2 and parts[0] == b"END":
            self._fill_answered(parts[1].decode("utf-8", "replace"))
        elif len(parts) == 2:
            self._fill_event(parts)
        else:
            self._bad("", "replay: unexpected message (%d frames)" % len(parts))
        return False

    def _fill_answered(self, text):
        f = self._fill
        f["out"] = False
        try:
            _, oldest, committed = (int(w) for w in text.split())
        except ValueError:
            self._fill_fail("the replay endpoint answered \"%s\"" % text[:100])
            return
        if f["holed"] and oldest <= f["cur"]:
            f["retries"] += 1
            if f["retries"] > _RETRIES:
                self._fill_fail("the replay endpoint skipped events")
            return  # ask again from cur
        to = f["to"]
        if (to is None or f["cur"] < to) and oldest > f["cur"]:
            end = to if to is not None and oldest > to else oldest
            self._lost(f["cur"], end, "no longer retained (the oldest kept is %d)" % oldest)
            f["cur"] = end
        if (to is not None and f["cur"] >= to) or (to is None and f["cur"] > committed):
            self._fill_end()
            return
        if f["cur"] == f["before"]:
            # nothing at cur: the endpoint may not have the last commit yet
            if committed < f["cur"] and f["retries"] < _RETRIES:
                f["retries"] += 1
                f["not_before"] = time.monotonic() + _RETRY_DELAY
                return
            self._fill_fail("the replay endpoint has no such events (last committed %d)"
                            % committed)

    def _fill_event(self, parts):
        f = self._fill
        ev = self._event(parts, "replay: ")
        if ev is None:
            return  # the next event shows the hole
        g = ev.checkpoint.global_seq
        if g < f["cur"]:
            self.stats.duplicates += 1
        elif f["holed"] or (f["to"] is not None and g >= f["to"]):
            pass  # after a hole: asked again; >= to: the held live event
        elif g > f["cur"]:
            f["holed"] = True  # not retention (END's oldest says that): ask again
        else:
            ev.replayed = True
            self._last = g
            f["cur"] = g + 1
            self._deliver(ev)
