"""Free loopback ports for the tests' servers.

Not port 0's answer: the kernel hands out bind(0) ports from the ephemeral
range (ip_local_port_range, 32768-60999 here), the same range every outgoing
connection takes its local port from, so a port that was free when asked can
be a producer's, a subscriber's or libpq's local end a moment later, before
the server binds it ("Address already in use" at start, seen in CI). These
ports come from below that range, at random, each handed out once per
process, and are checked free on both TCP bind and listen before they are
given out.
"""
import random
import socket

LOW, HIGH = 20000, 32000
_given = set()
_rng = random.Random()


def _ephemeral():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    lo, hi = _ephemeral()
    for _ in range(1000):
        port = _rng.randrange(LOW, HIGH)
        if port in _given or lo <= port <= hi:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                s.listen(1)
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free loopback port in %d-%d" % (LOW, HIGH))
