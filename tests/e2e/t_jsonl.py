"""e2e: the jsonl file sink (docs/sinks.md): exact totals across rotations
and kill -9, files named by their global_seq range, the sink's own position
file, bad configuration, a directory that goes away and comes back, and
`floorpost sinks status|detach|attach`."""
import glob
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import urllib.request

import zmq

from fp import (FLOORPOST, Floorpost, crashgen, eq, extra_test, free_port, nonzero,
                read_truth, replay_all, totals)

CTX = zmq.Context.instance()


def read_files(out, prefix):
    """Every event in the sink's final files, checked against their names."""
    events = []
    for path in sorted(glob.glob(os.path.join(out, prefix + "-*.jsonl"))):
        name = os.path.basename(path)[len(prefix) + 1:-len(".jsonl")]
        first, last = (int(x) for x in name.split("-"))
        with open(path) as f:
            evs = [json.loads(line) for line in f]
        assert evs, "empty file " + path
        eq(evs[0]["global_seq"], first, "first global_seq of " + name)
        eq(evs[-1]["global_seq"], last, "last global_seq of " + name)
        events.extend(evs)
    for e in events:
        if e["kind"] == "completion":
            e["yield_"] = e["yield"]
    return events


def check_exact(events, truth_path, outbox):
    """The files hold exactly the committed outbox (every event once, the
    same event_id, the same sums), and the sums are the truth's."""
    seqs = [e["global_seq"] for e in events]
    eq(seqs, list(range(1, len(seqs) + 1)), "global_seq 1..N once each, in order")
    ids = [e["event_id"] for e in events]
    eq(len(ids), len(set(ids)), "no event_id twice")
    eq(ids, [e["event_id"] for e in outbox], "the files hold the outbox's events")
    eq([e["record_count"] for e in events], [e["record_count"] for e in outbox], "record counts")
    comp, cons, scr, records = read_truth(truth_path)
    gc, gn, gs, grec = totals(events)
    eq(nonzero(gc), nonzero(comp), "completion totals")
    eq(nonzero(gn), nonzero(cons), "consumption totals")
    eq(nonzero(gs), nonzero(scr), "scrap totals")
    eq(grec, records, "records summed")
    for e in events:
        assert len(e["posting_date"]) == 10 and e["posting_date"][4] == "-", e


def sinks_cli(fp, *args):
    return subprocess.run([FLOORPOST, "sinks", "-c", fp.config] + list(args), capture_output=True,
                          text=True, timeout=30)


@extra_test
def jsonl_sink_exact_across_rotations_and_kill9():
    out = tempfile.mkdtemp(prefix="fp-jsonl-")
    port = free_port()
    fp = Floorpost(sinks={"files": dict(type="jsonl", directory=out, max_bytes=20000,
                                        max_age_ms=300, batch_max=200)},
                   posting_interval_ms=60000, round_interval_ms=50, dedup_window=65536,
                   metrics_port=port).start()
    gen, truth = crashgen(fp, 40000, 20000, 5, restart_every=7000, timeout_ms=300000)
    fp.kill_restarts(4, random.Random(5))
    _, err = gen.communicate(timeout=300)
    eq(gen.returncode, 0, "crashgen: " + err)
    # caught up: the status says so (exit 0 = nothing failing)
    end = time.time() + 30
    while time.time() < end:
        st = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/sinks" % port).read())
        if st[0]["lag_events"] == 0 and st[0]["position"] > 0:
            break
        time.sleep(0.2)
    eq(st[0]["name"], "files", "status names the sink")
    eq(st[0]["type"], "jsonl", "status type")
    eq(st[0]["lag_events"], 0, "sink caught up: %r" % st)
    r = sinks_cli(fp, "status")
    eq(r.returncode, 0, "sinks status exit: " + r.stdout + r.stderr)
    assert "files" in r.stdout and "jsonl" in r.stdout, r.stdout
    rc, _ = fp.stop()
    eq(rc, 0, "drain")
    assert not glob.glob(os.path.join(out, ".files-*.tmp")), os.listdir(out)
    events = read_files(out, "files")
    assert len(glob.glob(os.path.join(out, "files-*.jsonl"))) >= 5, "rotated"
    fp.start()
    outbox, oldest, last = replay_all(CTX, fp.endpoints["replay"])
    rc, _ = fp.stop()
    eq(rc, 0, "stop after replay")
    eq(oldest, 1, "outbox kept everything")
    check_exact(events, truth, outbox)
    with open(os.path.join(out, ".files.position")) as f:
        eq(int(f.read().split()[0]), len(events), "the sink's own position")
    # the ERP's import job takes the files away: a restart must not post again
    for p in glob.glob(os.path.join(out, "files-*.jsonl")):
        os.unlink(p)
    fp.start()
    time.sleep(1.5)
    rc, _ = fp.stop()
    eq(rc, 0, "stop after restart")
    eq(glob.glob(os.path.join(out, "files-*.jsonl")), [], "nothing delivered twice")
    shutil.rmtree(out)


@extra_test
def jsonl_sink_bad_config_and_directory_gone():
    d = tempfile.mkdtemp(prefix="fp-jsonl-cfg-")
    plain = os.path.join(d, "a-file")
    open(plain, "w").close()
    for directory, frag in ((os.path.join(d, "missing"), "No such file or directory"),
                            (plain, "directory = '" + plain)):
        fp = Floorpost(sinks={"f": dict(type="jsonl", directory=directory)})
        r = subprocess.run([FLOORPOST, "run", "-c", fp.config, "--check"], capture_output=True,
                           text=True, timeout=30)
        eq(r.returncode, 2, "--check exit for " + directory)
        assert fp.config + ":" in r.stderr and "[sink f]" in r.stderr and frag in r.stderr, \
            r.stderr
    fp = Floorpost(sinks={"f": dict(type="kafka")})
    r = subprocess.run([FLOORPOST, "run", "-c", fp.config, "--check"], capture_output=True,
                       text=True, timeout=30)
    eq(r.returncode, 2, "unknown type")
    assert "unknown sink type" in r.stderr and "allowed: jsonl" in r.stderr, r.stderr

    # at run time: the directory goes away; the pipeline goes on; it comes back
    out = os.path.join(d, "out")
    os.mkdir(out)
    port = free_port()
    fp = Floorpost(sinks={"f": dict(type="jsonl", directory=out, max_age_ms=200,
                                    retry_ms=100, retry_max_ms=300, breaker_failures=3,
                                    breaker_open_ms=500)},
                   posting_interval_ms=200, metrics_port=port).start()
    from fp import Producer, rec, PART
    import zmq
    ctx = zmq.Context.instance()
    prod = Producer(ctx, fp.endpoints["router"])
    shutil.rmtree(out)
    for i in range(1, 41):
        prod.send(7, 1, [rec(i, PART, order="O%d" % (i % 4), qty=1)])
        time.sleep(0.02)
    assert prod.wait_acks(40), "acks while the sink fails"
    end = time.time() + 10
    while time.time() < end:
        st = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/sinks" % port).read())[0]
        if st["errors"]["io"] > 0:
            break
        time.sleep(0.1)
    assert st["errors"]["io"] > 0 and st["last_error"], st
    assert st["state"] in ("backing_off", "open"), st
    r = sinks_cli(fp, "status")
    eq(r.returncode, 1, "status exit when failing")
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read().decode()
    assert 'floorpost_sink_errors_total{sink="f",class="io"}' in metrics
    os.mkdir(out)
    end = time.time() + 15
    while time.time() < end:
        st = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/sinks" % port).read())[0]
        if st["lag_events"] == 0 and st["position"] > 0:
            break
        time.sleep(0.1)
    eq(st["lag_events"], 0, "delivered after the directory came back: %r" % st)
    prod.close()
    rc, _ = fp.stop()
    eq(rc, 0, "drain")
    evs = read_files(out, "f")
    eq([e["global_seq"] for e in evs], list(range(1, len(evs) + 1)), "all, once")
    eq(sum(e["record_count"] for e in evs), 40, "records")
    assert "level=warn component=reader-f msg=\"delivery failed; retrying\"" in fp.log()
    shutil.rmtree(d)


@extra_test
def sinks_detach_and_attach_by_the_operator():
    out = tempfile.mkdtemp(prefix="fp-jsonl-det-")
    port = free_port()
    fp = Floorpost(sinks={"f": dict(type="jsonl", directory=out, max_age_ms=200)},
                   metrics_port=port).start()
    time.sleep(1.2)  # the sink reports its position once
    r = sinks_cli(fp, "detach", "f")
    eq(r.returncode, 0, "detach: " + r.stderr)
    assert "DETACHED" in r.stderr, r.stderr
    end = time.time() + 5
    while time.time() < end and "DETACHED" not in fp.log():
        time.sleep(0.1)
    assert "level=error component=reader-f msg=\"DETACHED" in fp.log(), fp.log()
    st = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/sinks" % port).read())[0]
    eq(st["state"], "detached", "status state")
    eq(sinks_cli(fp, "status").returncode, 1, "status exit when detached")
    r = sinks_cli(fp, "attach", "f")
    eq(r.returncode, 0, "attach: " + r.stderr)
    end = time.time() + 5
    while time.time() < end and "re-attached" not in fp.log():
        time.sleep(0.1)
    assert "re-attached" in fp.log()
    eq(sinks_cli(fp, "detach", "nosuch").returncode, 2, "unknown sink")
    rc, _ = fp.stop()
    eq(rc, 0, "drain")
    r = sinks_cli(fp, "status", "--json")
    st = json.loads(r.stdout)
    eq(st[0]["state"], "stopped", "offline status")
    shutil.rmtree(out)
