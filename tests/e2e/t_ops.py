"""e2e: what operators trip over (issue 12): SIGHUP reloads instead of
killing, other signals drain or are ignored with a log line."""
import os
import signal
import time

import zmq

from fp import (COMPLETED, PART, Floorpost, Producer, eq, extra_test, free_port, parse_metrics,  # noqa: F401
                rec, replay, replay_all, scrape)

CTX = zmq.Context.instance()


def wait_log(fp, text, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        if text in fp.log():
            return True
        time.sleep(0.05)
    return False


@extra_test
def sighup_reloads_and_other_signals_drain_or_are_logged():
    port = free_port()
    fp = Floorpost(metrics_port=port, health_max_round_age_ms=5000).start()
    with open(fp.config) as f:
        text = f.read()
    # applied at once: log level and the health bound; the rest is named
    text = text.replace("health_max_round_age_ms = 5000", "health_max_round_age_ms = 100")
    text = text.replace("[service]\n", "[service]\nlog_level = debug\n", 1)
    text = text.replace("workers = 2", "workers = 1")
    with open(fp.config, "w") as f:
        f.write(text)
    fp.proc.send_signal(signal.SIGHUP)
    assert wait_log(fp, 'msg="reloaded"'), fp.log()
    log = fp.log()
    assert 'msg="reload: applied" option=[service]log_level' in log, log
    assert 'msg="reload: applied" option=[metrics]health_max_round_age_ms value=100' in log, log
    assert ('msg="reload: changed, takes effect at the next restart" option=[pipeline]workers'
            in log), log
    assert fp.proc.poll() is None, "SIGHUP must not end the process"
    # a broken file is refused whole; the service runs on
    with open(fp.config, "a") as f:
        f.write("[pipeline]\nbogus = 1\n")
    fp.proc.send_signal(signal.SIGHUP)
    assert wait_log(fp, 'msg="reload refused: keeping the running configuration"'), fp.log()
    assert "bogus" in fp.log()
    fp.proc.send_signal(signal.SIGUSR1)
    assert wait_log(fp, 'msg="signal ignored" signal=SIGUSR1'), fp.log()
    assert fp.proc.poll() is None
    # SIGQUIT drains like SIGTERM
    t0 = time.time()
    fp.proc.send_signal(signal.SIGQUIT)
    rc = fp.proc.wait(30)
    eq(rc, 0, "exit code after SIGQUIT")
    assert 'signal=SIGQUIT' in fp.log() and 'msg="drained"' in fp.log(), fp.log()
    assert time.time() - t0 < 15


@extra_test
def replay_never_drops_silently_under_a_small_send_limit():
    """publish_hwm = 1000 used to return 1,702 of 5,000 events with an END
    saying "next 5001": an answer now fits the client's queue and END names
    the first event not sent."""
    fp = Floorpost(publish_hwm=1000).start()
    prod = Producer(CTX, fp.endpoints["router"])
    for b in range(10):
        prod.send(61, 1, [rec(b * 500 + k + 1, PART, order="O%d" % (b * 500 + k), qty=1)
                          for k in range(500)])
    assert prod.wait_acks(10)
    prod.close()
    rc, _ = fp.stop()  # the drain posts one partial checkpoint per order
    eq(rc, 0, "drain")
    fp.start()
    evs, (nxt, oldest, last) = replay(CTX, fp.endpoints["replay"], 1, 10000)
    eq(last, 5000, "events committed")
    assert 0 < len(evs) <= 999, len(evs)
    eq([e["global_seq"] for e in evs], list(range(1, len(evs) + 1)), "no hole")
    eq(nxt, len(evs) + 1, "END names the first event not sent")
    # a client that asks again before reading: still no hole, END honest
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(fp.endpoints["replay"])
    for _ in range(4):
        s.send(b"REPLAY 1 10000")
    time.sleep(1.0)
    answers, cur = [], []
    end = time.time() + 20
    while len(answers) < 4 and time.time() < end:
        if not s.poll(200):
            continue
        parts = s.recv_multipart()
        if parts[0] == b"END":
            answers.append((cur, int(parts[1].split()[0])))
            cur = []
        else:
            cur.append(parts[0])
    s.close()
    eq(len(answers), 4, "an END for every request")
    allev, _, _ = replay_all(CTX, fp.endpoints["replay"])
    eq(len(allev), 5000, "the loop gets every event")
    for got, nx in answers:
        eq(nx, len(got) + 1, "END next after a pipelined request")
    rc, _ = fp.stop()
    eq(rc, 0, "stop")


@extra_test
def feed_heartbeat_reveals_a_lost_burst_end():
    """A subscriber that lost the end of a burst (its queue overflowed while
    it was stopped) learns it from the feed's heartbeat and fills it from
    the replay endpoint, without waiting for the next event."""
    import json
    import subprocess
    from fp import FLOORPOST
    fp = Floorpost(publish_hwm=1000, posting_interval_ms=300, feed_heartbeat_ms=200).start()
    # the heartbeat itself: committed global_seq and per-topic stream_seq
    sub = CTX.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    sub.connect(fp.endpoints["pub"])
    tail = subprocess.Popen([FLOORPOST, "tail", "--replay", fp.endpoints["replay"], "--from", "1",
                             "--count", "100000", "--timeout", "60000", fp.endpoints["pub"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    tail.send_signal(signal.SIGSTOP)
    prod = Producer(CTX, fp.endpoints["router"])
    for b in range(200):
        prod.send(71, 1, [rec(b * 500 + k + 1, PART, order="O%06d" % (b * 500 + k), qty=1)
                          for k in range(500)])
    assert prod.wait_acks(200, timeout=60)
    prod.close()
    end = time.time() + 20
    hb = None
    while time.time() < end:
        if sub.poll(300):
            topic, body = sub.recv_multipart()
            eq(topic, b"heartbeat", "topic")
            hb = json.loads(body)
            if hb["global_seq"] >= 100000:
                break
    sub.close()
    eq(hb["global_seq"], 100000, "heartbeat: last committed global_seq")
    eq(hb["instance"], "e2e", "heartbeat: instance")
    eq(sum(hb["feeds"].values()), 100000, "heartbeat: per-topic stream_seq")
    tail.send_signal(signal.SIGCONT)
    out, err = tail.communicate(timeout=60)
    eq(tail.returncode, 0, "tail: " + err[-2000:])
    events = [json.loads(line) for line in out.splitlines()]
    eq([e["global_seq"] for e in events], list(range(1, 100001)), "every event, once, in order")
    rc, _ = fp.stop()
    eq(rc, 0, "stop")


def scrape_metrics(port):
    status, text = scrape(port)
    eq(status, 200, "/metrics")
    return parse_metrics(text)


@extra_test
def queue_metrics_right_under_load_and_at_idle():
    """floorpost_stage_queue_messages{stage="emit"} read 138,331 at idle
    after 2,023 events (the shard counted items, emit messages)."""
    port = free_port()
    fp = Floorpost(metrics_port=port, posting_interval_ms=200, queue_batches=64).start()
    prod = Producer(CTX, fp.endpoints["router"])
    peak = 0
    for b in range(40):
        prod.send(81, 1, [rec(b * 250 + k + 1, PART, order="Q%05d" % (b * 250 + k), qty=1)
                          for k in range(250)])
        if b % 8 == 0:
            m = scrape_metrics(port)
            peak = max(peak, m['floorpost_stage_queue_messages{stage="emit"}'])
    assert prod.wait_acks(40, timeout=30)
    prod.close()
    time.sleep(1.0)  # the posting interval flushes 10,000 partial checkpoints
    m = scrape_metrics(port)
    assert m["floorpost_events_published_total{kind=\"completion\"}"] >= 10000, m
    for stage in ["ingest", "worker-0", "worker-1", "shard-0", "shard-1", "emit"]:
        q = m['floorpost_stage_queue_messages{stage="%s"}' % stage]
        assert 0 <= q <= 4, ("idle queue " + stage, q)
    # the process and the build, the state's size
    from fp import FLOORPOST  # noqa: F401
    assert m["process_cpu_seconds_total"] > 0 and m["process_open_fds"] > 5, m
    assert m["process_max_fds"] >= m["process_open_fds"]
    assert abs(m["process_start_time_seconds"] - time.time()) < 120, m["process_start_time_seconds"]
    assert m["process_resident_memory_bytes"] > 1e6
    assert any(k.startswith("floorpost_build_info{version=") for k in m), "build_info"
    assert 0 < m["floorpost_state_used_bytes"] <= m["floorpost_state_map_bytes"], m
    # under load it can never exceed what the pipes hold (2 x queue_batches
    # per shard pipe, both shards) plus the barriers in flight
    assert peak <= 2 * 64 * 2 + 8, peak
    rc, _ = fp.stop()
    eq(rc, 0, "stop")


@extra_test
def every_verb_has_help_and_version():
    import subprocess
    from fp import FLOORPOST
    for verb in ("run", "send", "tail", "keygen", "deadletters", "sinks"):
        r = subprocess.run([FLOORPOST, verb, "--help"], capture_output=True, text=True, timeout=10)
        eq(r.returncode, 0, verb + " --help")
        lines = [l for l in r.stdout.splitlines() if l.startswith("  floorpost ")]
        assert lines and all(l.startswith("  floorpost " + verb) for l in lines), (verb, r.stdout)
    r = subprocess.run([FLOORPOST, "--version"], capture_output=True, text=True, timeout=10)
    eq(r.returncode, 0, "--version")
    assert r.stdout.startswith("floorpost "), r.stdout


@extra_test
def sighup_applies_reader_max_lag_events_to_a_lagging_sink():
    """[durability] reader_max_lag_events is applied by a reload: an http
    sink whose ERP does not answer (nothing listens on its port) falls 1,200
    events behind under the default bound (10,000,000) and stays attached;
    lowered to 1,000 in the file, SIGHUP detaches it at once, loudly, by the
    new bound."""
    port = free_port()
    fp = Floorpost(sinks={"erp": dict(type="http", url="http://127.0.0.1:%d/erp" % free_port(),
                                      retry_ms=100, retry_max_ms=300)},
                   metrics_port=port).start()
    prod = Producer(CTX, fp.endpoints["router"])
    seq, orders = 1, 1200
    for first in range(0, orders, 50):
        recs = []
        for o in range(first, first + 50):
            recs.append(rec(seq, PART, "L%05d" % o, qty=1))
            recs.append(rec(seq + 1, COMPLETED, "L%05d" % o))  # a final completion each
            seq += 2
        prod.send(41, 1, recs)
    assert prod.wait_acks(orders // 50, timeout=30), "acks"
    lag = 0
    end = time.time() + 15
    while time.time() < end:
        _, text = scrape(port)
        lag = parse_metrics(text).get('floorpost_sink_lag_events{sink="erp"}', 0)
        if lag >= orders:
            break
        time.sleep(0.1)
    assert lag >= orders, "the sink's lag: %s" % lag
    time.sleep(1.5)  # a housekeeping pass or two under the default bound
    assert "reader DETACHED" not in fp.log(), fp.log()[-2000:]
    with open(fp.config) as f:
        text = f.read()
    with open(fp.config, "w") as f:
        f.write(text.replace("[durability]\n", "[durability]\nreader_max_lag_events = 1000\n", 1))
    fp.proc.send_signal(signal.SIGHUP)
    assert wait_log(fp, 'msg="reload: applied" option=[durability]reader_max_lag_events '
                        'value=1000'), fp.log()[-2000:]
    assert wait_log(fp, "reader DETACHED", timeout=5), fp.log()[-2000:]
    line = [ln for ln in fp.log().splitlines() if "reader DETACHED" in ln][0]
    assert "reader_max_lag_events=1000" in line, line
    rc, _ = fp.stop()
    eq(rc, 0, "drain after the detach")
    prod.close()
