"""e2e: posting periods, backfill and cumulative counters (issue 11).

- counters_through_kill9_exact_per_key_and_period: cumulative PLC counter
  readings (16- and 32-bit, rollovers, scripted resets, an implausible
  jump) through three kill -9; the totals per (key, hour period) against
  the parts the generated plant really made, the counter_reset events and
  the counter_jump dead letters.
- outage_across_midnight_backfill_marked: a producer cut off for six hours
  of event time across local midnight delivers its buffer while live
  records flow: no checkpoint spans midnight, the records of the flushed
  day are backfill checkpoints of their own, totals exact per (key, day).

Event time is compressed: the records carry the times; floorpost's clock
only paces the posting flushes.
"""
import json
import os
import random
import subprocess
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import zmq

from fp import (FLOORPOST, MATERIAL, PART, PART_COUNTER, SCRAP, SCRAP_COUNTER, Floorpost,
                decode_ack, encode_batch, eq, extra_test, rec, replay_all)

CTX = zmq.Context.instance()
NS = 1000000000


def configure(fp, aggregate, counters=None):
    """Appends [aggregate] and [counters] options to fp's generated config
    (fp.Floorpost knows only the options every test sets)."""
    with open(fp.config, "a") as f:
        f.write("[aggregate]\n")
        for k, v in aggregate.items():
            f.write('%s = "%s"\n' % (k, v) if isinstance(v, str) else "%s = %s\n" % (k, v))
        if counters:
            f.write("[counters]\n")
            for k, v in counters.items():
                f.write('%s = "%s"\n' % (k, v) if isinstance(v, str) else "%s = %s\n" % (k, v))


class AckedSender:
    """Lockstep acked producer: a batch is sent again (after a timeout, or
    to a restarted floorpost) until an Ack covers its last seq."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.sock = None
        self.resends = 0
        self.connect()

    def connect(self):
        if self.sock:
            self.sock.close(0)
        self.sock = CTX.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def send(self, source, epoch, records, deadline=30.0):
        last = max(r["seq"] for r in records)
        buf = encode_batch(source, epoch, records)
        end = time.time() + deadline
        while time.time() < end:
            self.sock.send(buf)
            t1 = time.time() + 1.0
            while time.time() < t1:
                if not self.sock.poll(50):
                    continue
                a = decode_ack(self.sock.recv())
                if a["source_id"] == source and a["status"] == 0 and a["acked_seq"] >= last:
                    return
            self.resends += 1
            self.connect()  # floorpost may have been killed: a fresh connection
        raise AssertionError("batch up to seq %d never acked" % last)


def hour_start(t_ns, zone):
    """The local clock hour's start (ns) of event time t_ns: an independent
    computation of floorpost's hour periods."""
    dt = datetime.fromtimestamp(t_ns / NS, zone)
    return int(dt.replace(minute=0, second=0, microsecond=0).timestamp()) * NS


def day_of(t_ns, zone):
    return datetime.fromtimestamp(t_ns // NS, zone).strftime("%Y-%m-%d")


def check_periods(events, zone, kind):
    """Every checkpoint's records lie in its period, and its posting date is
    the period's local date."""
    for e in events:
        if e["kind"] == "counter_reset":
            continue
        assert e["posting_date"], e
        assert e["period_start_ns"] <= e["first_time_ns"] <= e["last_time_ns"] < e["period_end_ns"], e
        eq(e["posting_date"], day_of(e["period_start_ns"], zone), "posting date of " + e["event_id"])
        eq(e["period"].split("-")[0], kind, "period name")


@extra_test
def counters_through_kill9_exact_per_key_and_period():
    zone = ZoneInfo("Europe/Berlin")
    fp = Floorpost(posting_interval_ms=300, round_interval_ms=20, workers=2, shards=2,
                   time_zone="Europe/Berlin")
    J = 20000
    configure(fp, {"period": "hour"},
              {"default_modulus": 4294967296, "modulus": "G16=65536", "max_jump": J})
    fp.start()
    rng = random.Random(1103)
    t0 = int(datetime(2026, 11, 20, 9, 40, tzinfo=zone).timestamp()) * NS
    sources = {500: ["S1", "S2", "S3"], 501: ["S4", "S5", "S6"]}
    # per station: the PLC counters (good: 16-bit for S1-S3), the order
    good = {s: (rng.randrange(60000, 65000) if s <= "S3" else rng.randrange(1 << 31, 1 << 32))
            for ss in sources.values() for s in ss}
    scrap = {s: rng.randrange(0, 1000) for s in good}
    order = {s: 1 for s in good}
    truth_comp, truth_scr = {}, {}
    resets, jumps = [], 0
    seq = {src: 0 for src in sources}
    sender = AckedSender(fp.endpoints["router"])
    steps = 120
    kills = sorted(rng.sample(range(10, steps - 5), 3))
    last_reading = {}
    for step in range(steps):
        t = t0 + step * 90 * NS
        for src, stations in sources.items():
            recs = []
            for s in stations:
                if step % 40 == 39:
                    order[s] += 1  # a new order: the parts since the last reading count for it
                key = ("1000", "ORD-%s-%d" % (s, order[s]), "0010")
                name = "G16" if s <= "S3" else "G32"
                m = 65536 if name == "G16" else 1 << 32
                made = rng.randrange(0, 200)
                kind = "delta"
                if step > 0 and step % 23 == 7 + int(s[1]) and good[s] < m - 2 * J:
                    kind = "reset"  # the PLC restarts: counts again from zero
                    good[s] = made if step % 2 else 0
                    made = good[s]
                elif step == 61 and s == "S5":
                    kind = "jump"  # a bogus preset: +30000 that nobody made
                    good[s] = (good[s] + 30000) % m
                    made = 0
                else:
                    good[s] = (good[s] + made) % m
                seq[src] += 1
                r = rec(seq[src], PART_COUNTER, order=key[1], qty=good[s], plant="1000",
                        line="L" + s, station=s, material=name, time_ns=t)
                recs.append(r)
                if step > 0:  # the first reading sets the base
                    if kind == "reset":
                        resets.append((s, name, last_reading[(s, name)], good[s]))
                    if kind == "jump":
                        jumps += 1
                    hk = key + (hour_start(t, zone),)
                    truth_comp.setdefault(hk, [0, 0])[0] += made
                last_reading[(s, name)] = good[s]
                ds = rng.randrange(0, 4)
                scrap[s] += ds
                seq[src] += 1
                recs.append(rec(seq[src], SCRAP_COUNTER, order=key[1], qty=scrap[s], plant="1000",
                                line="L" + s, station=s, material="SCR", reason="DENT", time_ns=t))
                if step > 0:
                    hk = key + (hour_start(t, zone),)
                    truth_comp.setdefault(hk, [0, 0])[1] += ds
                    truth_scr[key + ("DENT", hour_start(t, zone))] = \
                        truth_scr.get(key + ("DENT", hour_start(t, zone)), 0) + ds
            if step in kills and src == 500:
                # kill -9 with this batch in flight: committed or not, the
                # resend below must count it once
                sender.sock.send(encode_batch(src, 1, recs))
                time.sleep(rng.uniform(0.0, 0.06))
                fp.kill()
                fp.start()
            sender.send(src, 1, recs)
    rc, _ = fp.stop()
    eq(rc, 0, "drain")
    fp.start()
    events, oldest, last = replay_all(CTX, fp.endpoints["replay"])
    out = subprocess.run([FLOORPOST, "deadletters", "-c", fp.config, "list", "--json"],
                         capture_output=True, text=True, timeout=60)
    rc, _ = fp.stop()
    eq(rc, 0, "final stop")
    eq(out.returncode, 0, out.stderr)
    eq([e["global_seq"] for e in events], list(range(1, last + 1)), "global_seq gap-free")
    eq(len({e["event_id"] for e in events}), len(events), "event ids unique")
    check_periods(events, zone, "hour")
    comp, scr = {}, {}
    for e in events:
        if e["kind"] == "completion":
            k = (e["plant"], e["order"], e["operation"], e["period_start_ns"])
            t = comp.setdefault(k, [0, 0])
            t[0] += e["yield_"]
            t[1] += e["scrap"]
        elif e["kind"] == "scrap":
            k = (e["plant"], e["order"], e["operation"], e["reason"], e["period_start_ns"])
            scr[k] = scr.get(k, 0) + e["parts"]
    nz = lambda d: {k: v for k, v in d.items() if v not in (0, [0, 0])}  # noqa: E731
    assert len({k[3] for k in truth_comp}) >= 3, "the stream spans several hours"
    eq(nz(comp), nz(truth_comp), "completion totals per (operation, hour) after 3 kills")
    eq(nz(scr), nz(truth_scr), "scrap totals per (operation, reason, hour)")
    got_resets = sorted((e["station"], e["counter"], e["previous"], e["reading"])
                        for e in events if e["kind"] == "counter_reset")
    assert resets, "the script resets counters"
    eq(got_resets, sorted(resets), "one counter_reset event per reset, exactly")
    dls = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    eq(sum(1 for d in dls if d["reason"] == "counter_jump"), jumps, "counter_jump dead letters")
    eq(len(dls), jumps, "no other dead letters")
    restored = [int(w.split("=")[1]) for line in fp.log().splitlines()
                if 'msg="restored"' in line and "component=worker" in line
                for w in line.split() if w.startswith("counters=")]
    assert sum(restored) > 0, "the restarts restored counters from the state"
    eq(fp.log().count('msg="state opened"'), 5, "three kills, a drain and a restart")


@extra_test
def outage_across_midnight_backfill_marked():
    zone = ZoneInfo("America/Chicago")
    fp = Floorpost(posting_interval_ms=200, round_interval_ms=20, workers=2, shards=2,
                   time_zone="America/Chicago")
    configure(fp, {"period": "day"})
    fp.start()
    rng = random.Random(2611)
    # the simulated plant clock: 2026-11-20 20:00 local to 06:00 the next day
    t0 = datetime(2026, 11, 20, 20, 0, tzinfo=zone)
    midnight = int(datetime(2026, 11, 21, 0, 0, tzinfo=zone).timestamp()) * NS
    live, cut = 700, 701  # producers (sources)
    ops = [("1000", "ORD-%d" % i, "0010") for i in range(4)]
    seq = {live: 0, cut: 0}
    truth = {}  # (kind, key..., date) -> sum
    truth_backfill = {}  # the cut-off producer's records of the flushed day

    def add(src, t_ns, kind, op, qty, extra):
        seq[src] += 1
        kw = dict(order=op[1], op=op[2], plant=op[0], qty=qty, time_ns=t_ns,
                  line="L1" if src == live else "L2")
        kw.update(extra)
        r = rec(seq[src], kind, **kw)
        day = day_of(t_ns, zone)
        keys = []
        if kind == PART:
            keys.append(("C",) + op + (day,))
        elif kind == SCRAP:
            keys += [("C",) + op + (day,), ("S",) + op + (r["reason"], day)]
        elif kind == MATERIAL:
            keys.append(("M",) + op + (r["material"], r["lot"], r["unit"], day))
        r["truth"] = [(k, 1 if (k[0] == "C" and kind == SCRAP) else 0, qty) for k in keys]
        for k, i, q in r["truth"]:
            truth.setdefault(k, [0, 0])[i] += q
        return r

    def records(src, t_ns):
        out = []
        for op in ops:
            out.append(add(src, t_ns, PART, op, rng.randrange(1, 20), {}))
            if rng.random() < 0.5:
                out.append(add(src, t_ns + 1, SCRAP, op, rng.randrange(1, 3), {"reason": "DENT"}))
            if rng.random() < 0.5:
                out.append(add(src, t_ns + 2, MATERIAL, op, rng.randrange(100, 900),
                               {"material": "STEEL", "lot": "LOT-1", "unit": "KG"}))
        return out

    sender = AckedSender(fp.endpoints["router"])
    buffered = []  # what the cut-off producer could not deliver
    step = timedelta(minutes=10)
    for i in range(61):  # 20:00 .. 06:00, every 10 minutes
        t = t0 + i * step
        t_ns = int(t.timestamp()) * NS + rng.randrange(0, 9 * 60) * NS
        sender.send(live, 1, records(live, t_ns))
        in_outage = t0 + timedelta(hours=1) <= t < t0 + timedelta(hours=7)  # 21:00 .. 03:00
        cut_recs = records(cut, t_ns + 3 * NS)
        if in_outage:
            buffered.extend(cut_recs)
            for r in cut_recs:  # delivered after Nov 20 was flushed: backfill
                if r["time_ns"] < midnight:
                    for k, i, q in r["truth"]:
                        truth_backfill.setdefault(k, [0, 0])[i] += q
        else:
            if buffered:  # back at 03:00: the buffer first, in batches, live goes on
                for k in range(0, len(buffered), 40):
                    sender.send(cut, 1, buffered[k:k + 40])
                buffered = []
            sender.send(cut, 1, cut_recs)
        time.sleep(0.03)  # ~0.2 s of real time: a posting flush every ~7 simulated steps
    rc, _ = fp.stop()
    eq(rc, 0, "drain")
    fp.start()
    events, oldest, last = replay_all(CTX, fp.endpoints["replay"])
    rc, _ = fp.stop()
    eq(rc, 0, "final stop")
    check_periods(events, zone, "day")
    got, got_backfill = {}, {}
    for e in events:
        if e["kind"] == "completion":
            k, v = ("C", e["plant"], e["order"], e["operation"], e["posting_date"]), \
                [e["yield_"], e["scrap"]]
        elif e["kind"] == "scrap":
            k, v = ("S", e["plant"], e["order"], e["operation"], e["reason"], e["posting_date"]), \
                [e["parts"], 0]
        else:
            k, v = ("M", e["plant"], e["order"], e["operation"], e["material"], e["lot"], e["unit"],
                    e["posting_date"]), [e["quantity"], 0]
        t = got.setdefault(k, [0, 0])
        t[0] += v[0]
        t[1] += v[1]
        if e["backfill"]:
            eq(e["posting_date"], "2026-11-20", "only the flushed day has backfill")
            eq({src for src, _, _, _ in e["lineage"]}, {cut}, "a backfill checkpoint holds only "
               "the cut-off producer's records")
            b = got_backfill.setdefault(k, [0, 0])
            b[0] += v[0]
            b[1] += v[1]
    eq({e["posting_date"] for e in events}, {"2026-11-20", "2026-11-21"}, "two posting dates")
    eq(got, truth, "totals per (key, day)")
    eq(got_backfill, truth_backfill, "the cut-off producer's records of Nov 20, all of them "
       "backfill and nothing else")
    assert any(e["backfill"] for e in events)
    # the records of Nov 21 that the cut-off producer buffered (00:00-03:00)
    # went into live checkpoints of Nov 21: the day was not flushed yet
    assert all(not e["backfill"] for e in events if e["posting_date"] == "2026-11-21")
