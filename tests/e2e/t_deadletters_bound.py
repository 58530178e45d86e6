"""e2e: dead letters bounded by construction (issue 9, items 1, 2, 7, 8).

One hostile frame (2,000 strings of 80 bytes, 500 records of kind 0) on a
64 MiB map: producers stay acked within a second, the state grows by less
than 1 MB, what is not kept is counted; a source_id and an epoch above
INT64_MAX come back exact in every dead letter; invalid UTF-8 and cut
characters give valid JSON details; NUL bytes in a key are refused with
their own reason; stored dead letters are trimmed by count and age."""
import json
import os
import subprocess
import time

import flatbuffers
import zmq

from fp import (FLOORPOST, PART, Floorpost, Producer, Subscriber, TB, TR, decode_ack,
                encode_batch, eq, extra_test, free_port, parse_metrics, rec, scrape, totals)

CTX = zmq.Context.instance()


def with_options(fp, **durability):
    """Adds [durability] options fp.py does not know to fp's config file."""
    with open(fp.config) as f:
        text = f.read()
    extra = "".join("%s = %s\n" % kv for kv in durability.items())
    with open(fp.config, "w") as f:
        f.write(text.replace("[durability]\n", "[durability]\n" + extra, 1))
    return fp


def metrics(port):
    """{'name{labels}': value} scraped from /metrics."""
    status, text = scrape(port)
    eq(status, 200, "GET /metrics")
    return parse_metrics(text)


def stored(fp):
    """`floorpost deadletters list --json`, parsed (Python keeps big integers exact)."""
    out = subprocess.run([FLOORPOST, "deadletters", "-c", fp.config, "list", "--json"],
                         capture_output=True, timeout=60)
    eq(out.returncode, 0, "deadletters list: %r" % out.stderr)
    text = out.stdout.decode("utf-8")  # strict: valid UTF-8 or this raises
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def state_disk_bytes(fp):
    """Blocks data.mdb really takes (the file is sparse, as long as the map)."""
    return os.stat(os.path.join(fp.dir, "state", "data.mdb")).st_blocks * 512


def amplification_frame(source_id, nstrings=2000, nrecords=500):
    """The issue's frame: nstrings strings of 80 bytes, nrecords records of
    kind 0, each naming nine different strings of the table."""
    b = flatbuffers.Builder(1 << 18)
    soffs = [b.CreateString(("%05d" % i).encode() + b"s" * 75) for i in range(nstrings)]
    TB.StartStringsVector(b, len(soffs))
    for o in reversed(soffs):
        b.PrependUOffsetTRelative(o)
    svec = b.EndVector()
    TB.StartRecordsVector(b, nrecords)
    for i in reversed(range(nrecords)):
        idx = [(i * 9 + f) % nstrings + 1 for f in range(9)]
        TR.CreateRecord(b, i + 1, 1763870000000000000 + i, 1, *idx, 0, 0, 0)
    rvec = b.EndVector()
    TB.Start(b)
    TB.AddSourceId(b, source_id)
    TB.AddEpoch(b, 1)
    TB.AddStrings(b, svec)
    TB.AddRecords(b, rvec)
    b.Finish(TB.End(b), file_identifier=b"FPT1")
    return bytes(b.Output())


def read_acks(prod, acked_at, until):
    """Reads prod's acks until `until`: acked_at[batch_last_seq] = arrival."""
    while time.time() < until:
        if prod.sock.poll(10):
            ack = decode_ack(prod.sock.recv())
            eq(ack["status"], 0, "healthy batch accepted")
            acked_at.setdefault(ack["batch_last_seq"], time.time())


@extra_test
def deadletters_amplification_frame_bounded_producers_acked():
    port = free_port()
    fp = Floorpost(map_size_mb=64, max_frame_bytes=262144, metrics_port=port,
                   round_interval_ms=50).start()
    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)
    prod = Producer(CTX, fp.endpoints["router"])
    push = CTX.socket(zmq.PUSH)
    push.connect(fp.endpoints["pull"])
    frame = amplification_frame(777)
    assert 195000 < len(frame) < 215000, len(frame)
    sent_at, acked_at = {}, {}
    bad_at = None
    before = None
    for seq in range(1, 61):
        if seq == 21:
            time.sleep(0.3)  # let the last rounds commit, then measure the state
            before = state_disk_bytes(fp)
            push.send(frame)
            bad_at = time.time()
        prod.send(31, 1, [rec(seq, PART, order="HEALTHY", qty=2)])
        sent_at[seq] = time.time()
        read_acks(prod, acked_at, time.time() + 0.05)
    end = time.time() + 5
    while len(acked_at) < 60 and time.time() < end:
        read_acks(prod, acked_at, time.time() + 0.05)
    eq(sorted(acked_at), list(range(1, 61)), "every healthy batch acked")
    late = {s: round(acked_at[s] - sent_at[s], 3) for s in sent_at if acked_at[s] - sent_at[s] > 1.0}
    eq(late, {}, "healthy batches acked more than 1 s after they were sent")
    assert acked_at[21] - bad_at < 1.0, acked_at[21] - bad_at
    m = metrics(port)
    eq(m["floorpost_commit_stalled"], 0.0, "commits never stalled")
    kept = m['floorpost_dead_letters_total{reason="unknown_kind"}']
    dropped = m['floorpost_dead_letters_dropped_total{reason="unknown_kind"}']
    eq(kept + dropped, 500.0, "every bad record kept or counted as dropped")
    assert kept >= 50 and dropped >= 1, (kept, dropped)
    growth = state_disk_bytes(fp) - before
    assert growth < 1000000, "the state grew by %d bytes" % growth
    assert m["floorpost_deadletters_bytes"] < 1000000, m["floorpost_deadletters_bytes"]
    worst = max(acked_at[s] - sent_at[s] for s in sent_at)
    print("     amplification frame: %d bytes; dead letters kept %d, dropped %d; state +%d bytes;"
          " slowest ack %.3f s" % (len(frame), kept, dropped, growth, worst), flush=True)
    dls = stored(fp)
    eq(len(dls), int(kept), "stored = kept")
    for d in dls:
        eq(d["reason"], "unknown_kind", "reason")
        eq(d["detail"]["source_id"], 777, "source")
        assert d["payload_bytes"] <= 1536, d["payload_bytes"]
        eq((d["records"], d["resubmittable"]), (1, True), "the record, resubmittable")
    log = fp.log()
    assert 'msg="dead letter dropped: the round' in log, log[-3000:]
    assert "commit failed" not in log, log[-3000:]
    prod.close()
    push.close(0)
    rc, _ = fp.stop()
    time.sleep(0.3)
    sub.stop()
    eq(rc, 0, "exit code")
    comp, _, _, _ = totals(sub.snapshot())
    eq({k: v for k, v in comp.items() if v != [0, 0]}, {("1000", "HEALTHY", "0010"): [120, 0]},
       "the healthy producer's totals, exactly")
    summary = fp.summary()
    eq(summary["dead_letters_dropped"], int(dropped), "summary counts the drops")


@extra_test
def deadletters_u64_above_int64_max_exact():
    """source_id 2^63+1 with version 2 (frame-level) and epoch 2^63+5 with
    a bad record (record-level): dead-lettered, the integers exact in the
    feed, the store and the log (and no out-of-bounds read under ASan)."""
    big_src, big_epoch = (1 << 63) + 1, (1 << 63) + 5
    fp = Floorpost().start()
    dl = Subscriber(CTX, fp.endpoints["dl"], dead_letter=True)
    dl.start()
    time.sleep(0.3)
    prod = Producer(CTX, fp.endpoints["router"])
    prod.send_raw(encode_batch(big_src, 1, [rec(1, PART, qty=1)], version=2))
    prod.send(big_src, big_epoch, [rec(1, 9, qty=1), rec(2, PART, order="BIG", qty=5)])
    assert prod.wait_acks(2), prod.acks
    eq(sorted(a["status"] for a in prod.acks), [0, 1], "one refused, one accepted")
    assert dl.wait_for(lambda items: len(items) >= 2), dl.snapshot()
    by = {d["reason"]: d for d in stored(fp)}
    eq(sorted(by), ["unknown_kind", "unsupported_version"], "stored")
    eq(by["unsupported_version"]["detail"]["source_id"], big_src, "frame: source_id exact")
    eq((by["unknown_kind"]["detail"]["source_id"], by["unknown_kind"]["detail"]["epoch"]),
       (big_src, big_epoch), "record: source_id and epoch exact")
    feed = {d["topic"]: d["detail"] for d in dl.snapshot()}
    eq(feed["deadletter/unknown_kind"]["epoch"], big_epoch, "feed: epoch exact")
    log = fp.log()
    assert "source=%d" % big_src in log and "epoch=%d" % big_epoch in log, log[-2000:]
    prod.close()
    rc, _ = fp.stop()
    dl.stop()
    eq(rc, 0, "exit code")
    assert "AddressSanitizer" not in fp.log(), fp.log()[-3000:]


@extra_test
def deadletters_valid_utf8_and_nul_refused():
    """Invalid UTF-8 and a character cut at 64 bytes give valid JSON details
    (never null in `list --json`), every log line is valid UTF-8; "P\\0A" and
    "P\\0B" are refused as string_has_nul, never two keys that print "P"."""
    fp = Floorpost().start()
    sub = Subscriber(CTX, fp.endpoints["pub"])
    sub.start()
    time.sleep(0.3)
    prod = Producer(CTX, fp.endpoints["router"])
    cut = b"o" * 63 + "\u00e4".encode()  # the 2-byte character crosses byte 64
    recs = [rec(1, PART, plant=b"P\x00A", qty=1), rec(2, PART, plant=b"P\x00B", qty=1),
            rec(3, 9, order=b"\xff\xfeX", qty=1), rec(4, 9, order=cut, qty=1),
            rec(5, PART, order="GOOD", qty=3), rec(6, PART, order=b"O\x00", qty=1,
                                                   line=b"L\xc3")]
    prod.send(41, 1, recs)
    assert prod.wait_acks(1), prod.acks
    eq(prod.acks[0]["status"], 0, "accepted (record-level dead letters)")
    time.sleep(0.3)
    dls = stored(fp)
    eq(sorted(d["reason"] for d in dls), ["string_has_nul"] * 3 + ["unknown_kind"] * 2, "reasons")
    for d in dls:
        assert isinstance(d["detail"], dict), d
    by_seq = {d["detail"]["seq"]: d["detail"] for d in dls}
    eq((by_seq[1]["plant"], by_seq[2]["plant"]), ("P\x00A", "P\x00B"), "NULs shown, not cut")
    eq(by_seq[1]["detail"], "a string field has a NUL byte in it", "detail text")
    eq(by_seq[3]["order"], "\ufffd\ufffdX", "invalid bytes as U+FFFD")
    eq(by_seq[4]["order"], "o" * 63, "cut before the character, not inside it")
    eq(by_seq[6]["order"], "O\x00", "order with NUL")
    prod.close()
    rc, _ = fp.stop()
    time.sleep(0.3)
    sub.stop()
    eq(rc, 0, "exit code")
    comp, _, _, _ = totals(sub.snapshot())
    eq({k: v for k, v in comp.items() if v != [0, 0]}, {("1000", "GOOD", "0010"): [3, 0]},
       "only the good record counts")
    with open(fp.stderr_path, "rb") as f:
        f.read().decode("utf-8")  # strict: every log line is valid UTF-8
    eq(fp.summary()["dead_letter_string_has_nul"], 3, "counted by its reason")


@extra_test
def deadletters_trimmed_by_count_and_age():
    """deadletter_max_count = 5: the newest 5 of 20 are kept; after
    deadletter_retention_ms = 1500 none is; every deletion counted and
    logged; new dead letters keep their seqs going."""
    port = free_port()
    fp = with_options(Floorpost(metrics_port=port, deadletter_retention_ms=1500),
                      deadletter_max_count=5).start()
    prod = Producer(CTX, fp.endpoints["router"])
    prod.send(51, 1, [rec(s, 9, qty=1) for s in range(1, 21)])
    assert prod.wait_acks(1), prod.acks
    end = time.time() + 5
    while time.time() < end and len(stored(fp)) > 5:
        time.sleep(0.1)
    left = stored(fp)
    eq([d["detail"]["seq"] for d in left], list(range(16, 21)), "the newest five kept")
    end = time.time() + 6
    while time.time() < end and stored(fp):
        time.sleep(0.2)
    eq(stored(fp), [], "all older than deadletter_retention_ms: trimmed")
    m = metrics(port)
    eq(m["floorpost_dead_letters_trimmed_total"], 20.0, "trimmed, counted")
    eq(m["floorpost_deadletters_stored"], 0.0, "gauge")
    log = fp.log()
    assert 'msg="dead letters trimmed"' in log and "by_count=15" in log, log[-2000:]
    prod.send(51, 1, [rec(21, 9, qty=1)])
    assert prod.wait_acks(2), prod.acks
    time.sleep(0.3)
    eq([d["dl_seq"] for d in stored(fp)], [21], "dl_seq goes on")
    prod.close()
    rc, _ = fp.stop()
    eq(rc, 0, "exit code")
