"""An ERP stand-in for the HTTP sink's tests (t_http.py) and benchmark
(bench/run.py): a real HTTP server (http.server.ThreadingHTTPServer) on a
free loopback port, optionally over TLS, that records every request and
answers as the test tells it, the way an ERP API with repeatable requests
does:

- a request whose idempotency key it has booked before is answered 200 again
  and booked no second time (SAP's repeatable requests, Oracle's external
  reference ids);
- otherwise, by `mode`: "ok" books it and answers 200; "500" answers 500;
  "429" answers 429 with Retry-After `retry_after`; "hang" sleeps `hang_s`,
  then books it and tries to answer 200 (the client may have given up: the
  ERP processed it anyway); `mode_count` answers that many requests in the
  mode, then goes back to "ok";
- `reject(event)` true for any of a request's events: 400 with an ERP-style
  JSON error body.

Standard library only (Debian's /usr/bin/python3).
"""
import json
import random
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REJECT_BODY = ('{"error":{"code":"ERP-4711","message":"order %s is closed for postings",'
               '"details":"line 1\\nline \\"2\\""}}')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the sink reuses its connections
    # the headers and the body are two writes: with Nagle the body would
    # wait for the client's delayed ACK (40 ms a request)
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _answer(self, status, body=b"", headers=()):
        try:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout): what was booked stays booked

    def do_POST(self):
        self.server.erp.handle(self)


class Erp:
    def __init__(self, port=0, certfile=None, keyfile=None, parse=True, jitter_ms=0, seed=1,
                 key_header="Idempotency-Key"):
        self.key_header = key_header  # where the idempotency key comes
        self.lock = threading.Lock()
        self.parse = parse          # False: count only (the benchmark)
        self.jitter_ms = jitter_ms  # answer after 0..jitter_ms (requests finish out of order)
        self.rng = random.Random(seed)
        self.requests = []          # every request (parse=True): dict, see handle()
        self.booked = {}            # idempotency key -> its events (the first time)
        self.mode = "ok"
        self.mode_count = None      # requests left in mode (None: until changed)
        self.retry_after = "1"
        self.hang_s = 0.0
        self.reject = None          # fn(event dict) -> bool
        self.in_flight = self.peak_in_flight = 0
        self.n_requests = self.n_events = self.n_bytes = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        # a client gone mid-request (floorpost killed, a timeout) is normal here
        self.server.handle_error = lambda request, address: None
        self.server.erp = self
        self.scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/erp/postings"):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, path)

    def set_mode(self, mode, count=None, **kw):
        with self.lock:
            self.mode, self.mode_count = mode, count
            for k, v in kw.items():
                setattr(self, k, v)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # ---- the server's threads ----

    def _take_mode(self):
        with self.lock:
            mode = self.mode
            if self.mode_count is not None:
                self.mode_count -= 1
                if self.mode_count <= 0:
                    self.mode, self.mode_count = "ok", None
            return mode, self.retry_after, self.hang_s

    def handle(self, h):
        t = time.time()
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            n = int(h.headers.get("Content-Length", 0))
            raw = h.rfile.read(n)
            if not self.parse:
                m = re.search(rb'"count":(\d+)', raw[:300])
                with self.lock:
                    self.n_requests += 1
                    self.n_events += int(m.group(1)) if m else 0
                    self.n_bytes += len(raw)
                h._answer(200, b'{"status":"booked"}')
                return
            body = json.loads(raw)
            key = h.headers.get(self.key_header, "")
            r = dict(t=t, path=h.path, headers=dict(h.headers), key=key,
                     body_key=body.get("idempotency_key"), body=body,
                     ids=[e["event_id"] for e in body["events"]], status=None)
            with self.lock:
                self.requests.append(r)
                repeat = key in self.booked
            mode, retry_after, hang_s = ("ok", None, 0) if repeat else self._take_mode()
            if self.jitter_ms:
                with self.lock:
                    d = self.rng.uniform(0, self.jitter_ms) / 1000.0
                time.sleep(d)
            if mode == "500":
                r["status"] = 500
                h._answer(500, b'{"error":"database is restarting"}')
            elif mode == "429":
                r["status"] = 429
                h._answer(429, b'{"error":"slow down"}', [("Retry-After", retry_after)])
            else:
                if mode == "hang":
                    r["hung"] = True
                    time.sleep(hang_s)
                bad = [e for e in body["events"] if self.reject and self.reject(e)]
                if bad and not repeat:
                    r["status"] = 400
                    h._answer(400, (REJECT_BODY % bad[0]["order"]).encode())
                    return
                with self.lock:
                    if key not in self.booked:
                        self.booked[key] = body["events"]
                r["status"] = 200
                h._answer(200, b'{"status":"booked"}')
        finally:
            with self.lock:
                self.in_flight -= 1

    # ---- what the test looks at ----

    def snapshot(self):
        with self.lock:
            return list(self.requests), dict(self.booked)

    def booked_events(self):
        """Every event the ERP booked, once per idempotency key."""
        _, booked = self.snapshot()
        return [e for evs in booked.values() for e in evs]


def main():
    """A counting stand-in in its own process (the benchmark):
    erp_standin.py PORT_FILE [PORT] listens on PORT (default: any free
    one), writes its port to PORT_FILE, answers 200 to every POST and on
    SIGTERM prints one JSON line: requests, events, bytes, the first and
    last request's arrival (time.time()) and its CPU seconds."""
    import os
    import signal
    import sys
    erp = Erp(port=int(sys.argv[2]) if len(sys.argv) > 2 else 0, parse=False)
    first_last = [None, None]
    orig = erp.handle

    def handle(h):
        t = time.time()
        with erp.lock:
            if first_last[0] is None:
                first_last[0] = t
        orig(h)
        with erp.lock:
            first_last[1] = time.time()
    erp.handle = handle
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write("%d\n" % erp.port)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    done.wait()
    t = os.times()
    with erp.lock:
        print(json.dumps(dict(requests=erp.n_requests, events=erp.n_events, bytes=erp.n_bytes,
                              first_t=first_last[0], last_t=first_last[1],
                              cpu_s=round(t.user + t.system, 3),
                              peak_in_flight=erp.peak_in_flight)), flush=True)


if __name__ == "__main__":
    main()
