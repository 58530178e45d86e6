"""e2e: the rest of issue 12. `send` counts the records floorpost
dead-lettered inside accepted batches (the Ack's dead_letters) and fails;
its progress lines; strict number options on every verb; the log's
rate-limit report soon after a flood ends."""
import json
import os
import re
import subprocess
import threading
import time

import zmq

from fp import FLOORPOST, Floorpost, eq, extra_test, replay_all, totals

CTX = zmq.Context.instance()
T0 = 1763900000000000000


def jline(seq, kind="PartCount", qty=1, **kw):
    d = dict(source_id=31, epoch=1, seq=seq, kind=kind, plant="1000", line="L01",
             order="DL-1", operation="0010", quantity=qty, time_ns=T0 + seq)
    d.update(kw)
    return {k: v for k, v in d.items() if v is not None}


SUMMARY = re.compile(r"floorpost send: (\d+) records in (\d+) batches, (\d+) acked, (\d+) "
                     r"rejected \((\d+) records\), (\d+) resent, (\d+) unacked, (\d+) bad lines, "
                     r"(\d+) records dead-lettered in accepted batches")


@extra_test
def send_counts_records_dead_lettered_in_accepted_batches():
    fp = Floorpost().start()
    try:
        lines, good = [], 0
        seq = 0
        for i in range(40):
            seq += 1
            if i % 10 == 3:
                lines.append(jline(seq, plant=None))                   # missing_field
            elif i % 10 == 7:
                lines.append(jline(seq, kind="Scrap", reason=None))    # missing_field
            else:
                lines.append(jline(seq, qty=i + 1))
                good += i + 1
        lines.append(lines[0])                                         # a duplicate: no dead letter
        seq += 1
        lines.append(jline(seq, kind="OperationCompleted", qty=0))
        path = os.path.join(fp.dir, "mixed.jsonl")
        with open(path, "w") as f:
            for d in lines:
                f.write(json.dumps(d) + "\n")
        r = subprocess.run([FLOORPOST, "send", "--batch", "16", "--quiet", fp.endpoints["router"],
                            path], capture_output=True, text=True, timeout=60)
        m = SUMMARY.search(r.stderr)
        assert m, r.stderr
        records, batches, acked, rejected, _, _, unacked, bad, dead = (int(x) for x in m.groups())
        eq((records, rejected, unacked, bad, dead), (len(lines), 0, 0, 0, 8), r.stderr)
        eq(acked, batches, "every batch acked")
        eq(r.returncode, 1, "dead letters fail the run: " + r.stderr)
        assert "floorpost dead-lettered 8 records" in r.stderr, r.stderr
        assert "progress:" not in r.stderr, r.stderr
        # the dead-letter store agrees, and the good records are counted exactly
        out = subprocess.run([FLOORPOST, "deadletters", "-c", fp.config, "list", "--json"],
                             capture_output=True, text=True, timeout=30)
        eq(out.returncode, 0, out.stderr)
        dls = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
        eq(sorted((d["reason"], d["records"]) for d in dls), [("missing_field", 1)] * 8, "stored")
        end = time.time() + 20
        comp = {}
        while time.time() < end:
            evs, _, _ = replay_all(CTX, fp.endpoints["replay"])
            comp = totals(evs)[0]
            if any(e["kind"] == "completion" and e["final"] for e in evs):
                break
            time.sleep(0.2)
        eq(comp, {("1000", "DL-1", "0010"): [good, 0]}, "good records exactly counted")
        # a clean file exits 0 and says 0
        clean = os.path.join(fp.dir, "clean.jsonl")
        with open(clean, "w") as f:
            f.write(json.dumps(dict(jline(1, qty=5), source_id=32)) + "\n")
        r = subprocess.run([FLOORPOST, "send", fp.endpoints["router"], clean],
                           capture_output=True, text=True, timeout=60)
        eq(r.returncode, 0, r.stderr)
        eq(SUMMARY.search(r.stderr).group(9), "0", r.stderr)

        # strict numbers on a verb that opens the state: deadletters
        for args, opt in ((["list", "--from", "x"], "--from"), (["list", "--from", "1x"], "--from"),
                          (["list", "--from", "-3"], "--from"),
                          (["resubmit", "--source", "99999999999999999999", "--all"], "--source"),
                          (["resubmit", "--source", "1", "--timeout", "5s", "--all"], "--timeout"),
                          (["resubmit", "--source", "1", "--timeout", "3600001", "--all"],
                           "--timeout")):
            out = subprocess.run([FLOORPOST, "deadletters", "-c", fp.config] + args,
                                 capture_output=True, text=True, timeout=30)
            eq(out.returncode, 2, "deadletters %r: %s" % (args, out.stderr))
            assert opt in out.stderr and "allowed:" in out.stderr, (args, out.stderr)
        rc, _ = fp.stop()
        eq(rc, 0, "exit")
    finally:
        fp.kill()


BAD_NUMBERS = ["x", "", "-1", "+1", " 5", "5 ", "5junk", "0x10", "1e3", "18446744073709551616",
               "99999999999999999999999"]


@extra_test
def numeric_options_are_strict_and_exit_2():
    ep = "tcp://127.0.0.1:9"  # never reached: parsing fails first
    cases = []
    for v in BAD_NUMBERS:
        for opt in ("--batch", "--timeout", "--resend-ms", "--flush-ms", "--progress"):
            cases.append((["send", opt, v, ep, "-"], opt))
        for opt in ("--count", "--timeout", "--from"):
            cases.append((["tail", opt, v, "--replay", ep, ep], opt))
    # in range of the type but not of the option
    cases += [(["send", "--batch", "4294967297", ep, "-"], "--batch"),
              (["send", "--batch", "0", ep, "-"], "--batch"),
              (["send", "--batch", "65536", ep, "-"], "--batch"),
              (["send", "--timeout", "2147483648", ep, "-"], "--timeout"),
              (["tail", "--timeout", "4294967296", ep], "--timeout"),
              (["tail", "--from", "0", "--replay", ep, ep], "--from"),
              (["send", "--batch"], "--batch"), (["tail", "--count"], "--count")]
    for args, opt in cases:
        out = subprocess.run([FLOORPOST] + args, capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
        eq(out.returncode, 2, "%r: %s" % (args, out.stderr))
        assert ("floorpost %s: %s" % (args[0], opt)) in out.stderr, (args, out.stderr)
        assert "allowed: " in out.stderr, (args, out.stderr)


@extra_test
def send_prints_progress_on_a_long_send_unless_quiet():
    fp = Floorpost().start()
    try:
        def run(extra, lines_before_wait):
            p = subprocess.Popen([FLOORPOST, "send"] + extra + [fp.endpoints["router"], "-"],
                                 stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            err = []
            t = threading.Thread(target=lambda: err.extend(p.stderr))
            t.start()
            for s in range(1, lines_before_wait + 1):
                p.stdin.write(json.dumps(dict(jline(s), source_id=40 + len(extra))) + "\n")
            p.stdin.flush()
            end = time.time() + 10
            while time.time() < end and not any("progress:" in x for x in err):
                time.sleep(0.1)
            seen = list(err)
            p.stdin.close()
            rc = p.wait(30)
            t.join(10)
            return rc, seen, err

        rc, seen, err = run(["--progress", "1"], 50)
        eq(rc, 0, "".join(err))
        prog = [x for x in seen if "progress:" in x]
        assert prog, "no progress line while the input stayed open:\n" + "".join(err)
        m = re.search(r"progress: (\d+) lines, (\d+) records sent, (\d+) acked", prog[-1])
        assert m and int(m.group(1)) == 50, prog
        # the records are sent and acked within the second (flush-ms 200)
        assert int(m.group(2)) == 50 and int(m.group(3)) == 50, prog
        # --quiet: none, however long it takes (3 s with input open)
        p = subprocess.Popen([FLOORPOST, "send", "--quiet", "--progress", "1",
                              fp.endpoints["router"], "-"], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdin.write(json.dumps(dict(jline(1), source_id=49)) + "\n")
        p.stdin.flush()
        time.sleep(3)
        _, e = p.communicate(timeout=30)  # closes stdin: EOF
        eq(p.returncode, 0, e)
        assert "progress:" not in e and "1 acked" in e, e
        rc, _ = fp.stop()
        eq(rc, 0, "exit")
    finally:
        fp.kill()


def ts_of(line):
    m = re.match(r"ts=(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z", line)
    assert m, line
    h, mi, s, ms = (int(x) for x in m.groups()[3:])
    return ((h * 60 + mi) * 60 + s) + ms / 1000.0


@extra_test
def rate_limit_report_comes_soon_after_the_flood():
    fp = Floorpost().start()
    try:
        push = CTX.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(fp.endpoints["pull"])
        # garbage frames: each is a dead letter with a log line (component emit)
        for i in range(300):
            push.send(b"not a batch %d" % i)
        push.close()
        end = time.time() + 15
        lines = []
        while time.time() < end:
            lines = [x for x in fp.log().splitlines() if "component=emit" in x]
            written = sum(1 for x in lines if 'msg="dead letter"' in x)
            suppressed = sum(int(re.search(r"suppressed=(\d+)", x).group(1)) for x in lines
                             if "log lines suppressed" in x)
            if written + suppressed >= 300:
                break
            time.sleep(0.1)
        eq(written + suppressed, 300, "every line written or reported:\n" + "\n".join(lines[-5:]))
        assert suppressed > 0, "the flood was not rate-limited"
        # the last report: no later emit line brought it, and it came within
        # a few seconds of the flood's last written line
        last_dl = [x for x in lines if 'msg="dead letter"' in x][-1]
        report = [x for x in lines if "log lines suppressed" in x][-1]
        eq(lines[-1], report, "the report is the last emit line")
        delay = ts_of(report) - ts_of(last_dl)
        assert 0 <= delay <= 3.5, "report %.1f s after the flood" % delay
        rc, _ = fp.stop()
        eq(rc, 0, "exit")
    finally:
        fp.kill()


