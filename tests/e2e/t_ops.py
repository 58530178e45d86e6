"""e2e: what operators trip over (issue 12): SIGHUP reloads instead of
killing, other signals drain or are ignored with a log line."""
import os
import signal
import time

from fp import Floorpost, eq, extra_test, free_port  # noqa: F401


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
