"""e2e: a damaged state file is never loaded and never crashes floorpost
(issue 9, item 3).

A real state (300 records through floorpost, a clean drain: its events and
their sums are the committed truth) is damaged in dozens of ways: pages
zeroed, filled with random bytes, bits flipped (both meta pages and the
data pages), the file cut. For every case `floorpost state verify` and
`floorpost run` agree: either both refuse (verify exit 1, run exit 1 with
"state refused" naming data.mdb and the damage; neither dies of a signal),
or both accept, and then the outbox replays exactly the truth (or, when
LMDB opened the other meta page, exactly a prefix of it that ends at a
committed round), the dedup watermarks hold (a resent batch counts
nothing), and a new record adds exactly its own quantity."""
import os
import random
import re
import shutil
import subprocess
import time

import zmq

from fp import FLOORPOST, PART, Floorpost, Producer, eq, extra_test, rec, replay_all, totals

CTX = zmq.Context.instance()
PAGE = 4096
MAP_MB = 2


def make_state():
    """A state with 600 records in 300 batches, each its own operation (300
    events at the drain, a tree of several levels); returns (the
    floorpost, the events replayed, the batches)."""
    fp = Floorpost(map_size_mb=MAP_MB).start()
    p = Producer(CTX, fp.endpoints["router"])
    batches = []
    for b in range(300):
        recs = [rec(2 * b + i + 1, PART, order="O%03d" % (b // 5), op="%04d" % (10 * (b % 5 + 1)),
                    qty=2 * b + i + 1) for i in range(2)]
        batches.append(recs)
        p.send(7, 1, recs)
        if b % 50 == 49:
            assert p.wait_acks(b + 1, 20), "acks"
    assert p.wait_acks(300, 20), "acks"
    p.close()
    rc, _ = fp.stop()
    eq(rc, 0, "clean drain")
    fp.start()
    events, _, _ = replay_all(CTX, fp.endpoints["replay"])
    rc, _ = fp.stop()
    eq(rc, 0, "second drain")
    assert len(events) >= 300, "events: %d" % len(events)
    return fp, events, batches


def verify(state_dir):
    r = subprocess.run([FLOORPOST, "state", "verify", "--state", state_dir],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode >= 0, "state verify died of signal %d" % -r.returncode
    return r.returncode, r.stdout + r.stderr


def pages_of(state_dir):
    rc, out = verify(state_dir)
    eq(rc, 0, "the clean state verifies: " + out)
    m = re.search(r"(\d+) pages of (\d+) bytes", out)
    assert m and int(m.group(2)) == PAGE, "no page count in: " + out
    return int(m.group(1))


def damage_cases(npages, rng):
    """(name, function(bytearray) -> bytes) for every case."""
    cases = []

    def zero(pg):
        def f(b):
            b[pg * PAGE:(pg + 1) * PAGE] = bytes(PAGE)
            return b
        return f

    def rand(pg):
        def f(b):
            b[pg * PAGE:(pg + 1) * PAGE] = bytes(rng.getrandbits(8) for _ in range(PAGE))
            return b
        return f

    def flips(pg, n, seed):
        def f(b):
            r = random.Random(seed)
            for _ in range(n):
                off = pg * PAGE + r.randrange(PAGE)
                b[off] ^= 1 << r.randrange(8)
            return b
        return f

    def cut(n):
        return lambda b: b[:n]

    data_pages = list(range(2, npages))
    for pg in (0, 1):
        cases.append(("zero meta page %d" % pg, zero(pg)))
        cases.append(("random meta page %d" % pg, rand(pg)))
        cases.append(("1 bit in meta page %d" % pg, flips(pg, 1, pg)))
    for pg in rng.sample(data_pages, min(30, len(data_pages))):
        cases.append(("zero page %d" % pg, zero(pg)))
    for pg in rng.sample(data_pages, min(15, len(data_pages))):
        cases.append(("random page %d" % pg, rand(pg)))
    for i, pg in enumerate(rng.sample(data_pages, min(25, len(data_pages)))):
        cases.append(("1 bit in page %d" % pg, flips(pg, 1, 100 + i)))
    for i, pg in enumerate(rng.sample(data_pages, min(10, len(data_pages)))):
        cases.append(("16 bits in page %d" % pg, flips(pg, 16, 200 + i)))
    for n in (0, 100, PAGE, 2 * PAGE + 7, (npages // 2) * PAGE, (npages - 1) * PAGE):
        cases.append(("cut at %d bytes" % n, cut(n)))
    return cases


def is_prefix_at_round(got, truth):
    """got equals truth[:len(got)]: the truth, or what an earlier committed
    round had published (the other meta page)."""
    return got == truth[:len(got)]


def check_started(proc, fp, truth, batches):
    """floorpost accepted the damaged file: it must be the truth."""
    got, _, _ = replay_all(CTX, fp.endpoints["replay"])
    assert is_prefix_at_round(got, truth), \
        "loaded a changed outbox: %d events, truth %d" % (len(got), len(truth))
    full = len(got) == len(truth)
    # a resent batch counts nothing (dedup watermarks intact); a new record
    # adds exactly its quantity
    p = Producer(CTX, fp.endpoints["router"])
    p.send(7, 1, batches[0])
    p.send(7, 1, [rec(10001, PART, order="O0", op="0010", qty=5)])
    assert p.wait_acks(2, 20), "acks after the start"
    p.close()
    proc.send_signal(15)
    eq(proc.wait(30), 0, "drain of the accepted state")
    return full


@extra_test
def test_state_verify_damage():
    t0 = time.time()
    base, truth, batches = make_state()
    state = os.path.join(base.dir, "state")
    npages = pages_of(state)
    with open(os.path.join(state, "data.mdb"), "rb") as f:
        clean = f.read()
    want = totals(truth)
    rng = random.Random(9)
    cases = damage_cases(npages, rng)
    refused = started = 0
    for name, hurt in cases:
        fp = Floorpost(map_size_mb=MAP_MB)
        sdir = os.path.join(fp.dir, "state")
        os.makedirs(sdir)
        with open(os.path.join(sdir, "data.mdb"), "wb") as f:
            f.write(bytes(hurt(bytearray(clean))))
        vrc, vout = verify(sdir)
        assert vrc in (0, 1), "%s: verify exit %d: %s" % (name, vrc, vout)
        fp.err = open(fp.stderr_path, "a")
        proc = subprocess.Popen([FLOORPOST, "run", "-c", fp.config], stdout=subprocess.DEVNULL,
                                stderr=fp.err)
        fp.proc = proc
        Floorpost.running.append(fp)
        end = time.time() + 30
        while time.time() < end and proc.poll() is None and 'msg="running"' not in fp.log():
            time.sleep(0.02)
        if proc.poll() is not None:
            rc = proc.returncode
            log = fp.log()
            assert rc == 1, "%s: exit %d (a signal is a crash):\n%s" % (name, rc, log[-2000:])
            assert 'msg="start failed: state refused"' in log and "data.mdb" in log, \
                "%s: no clear reason:\n%s" % (name, log[-2000:])
            assert vrc == 1, "%s: run refused, verify said clean: %s" % (name, vout)
            refused += 1
            if os.environ.get("FP_TEST_VERBOSE"):
                print("    %s: refused: %s" % (name, vout.strip().splitlines()[-1]))
        else:
            assert 'msg="running"' in fp.log(), "%s: did not start" % name
            assert vrc == 0, "%s: run started, verify said damaged: %s" % (name, vout)
            full = check_started(proc, fp, truth, batches)
            if full:
                # the truth plus exactly the new record
                fp.start()
                got, _, _ = replay_all(CTX, fp.endpoints["replay"])
                comp, cons, scr, _ = totals(got)
                wcomp = dict(want[0])
                k = ("1000", "O0", "0010")
                wcomp[k] = [wcomp.get(k, [0, 0])[0] + 5, wcomp.get(k, [0, 0])[1]]
                eq({k2: v for k2, v in comp.items() if v != [0, 0]},
                   {k2: v for k2, v in wcomp.items() if v != [0, 0]}, name + ": sums after")
                rc, _ = fp.stop()
                eq(rc, 0, name + ": last drain")
            started += 1
            if os.environ.get("FP_TEST_VERBOSE"):
                print("    %s: started (%s)" % (name, "the truth" if full else "an earlier round"))
        fp.err.close()
        shutil.rmtree(fp.dir, ignore_errors=True)
    print("    %d damage cases: %d refused, %d started from a consistent state (%.1f s)"
          % (len(cases), refused, started, time.time() - t0))
    assert refused >= len(cases) // 2, "too few refusals: the damage did not reach the data?"
    shutil.rmtree(base.dir, ignore_errors=True)
