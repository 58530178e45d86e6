"""A real PostgreSQL 15 (Debian's package) for the e2e tests and the
benchmark: a fresh cluster made with initdb in a temporary directory, run as
an unprivileged system user (PostgreSQL refuses to run as root), on a free
loopback port, its unix socket in that directory. fsync is off: the tests
check floorpost's transactions, not the disk.

    with PgServer() as pg:
        pg.sql("SELECT 1")          # rows as tuples (psycopg2)
        pg.conninfo                 # for [sink NAME] conninfo
        pg.stop(); pg.start()       # same data, same port

Always stopped at the end of the with block (also on failure) and at exit.
"""
import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg2

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_USER = "fptest"


from ports import free_port  # noqa: E402


def _ensure_user():
    """The user PostgreSQL runs as: fptest (a system user, made when
    missing) when we are root, else ourselves."""
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid())
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", PG_USER], check=True)
    return pwd.getpwnam(PG_USER)


def _as_user(pw):
    """preexec_fn: drop from root to the test user (when root)."""
    def drop():
        if os.getuid() == 0:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
    return drop


_LIVE = []


@atexit.register
def _stop_all():
    for pg in list(_LIVE):
        pg.close()


class PgServer:
    def __init__(self, settings=None, durable=False):
        """durable: fsync and synchronous_commit on (PostgreSQL's defaults,
        for the benchmark); the tests run without."""
        self.pw = _ensure_user()
        self.dir = tempfile.mkdtemp(prefix="fp-pg-")
        os.chown(self.dir, self.pw.pw_uid, self.pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.settings = dict(settings or {})
        self.durable = durable
        self.proc = None
        self.log_path = os.path.join(self.dir, "postgres.log")
        r = subprocess.run([PG_BIN + "/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                            "-E", "UTF8", "--no-sync", "--locale=C"], capture_output=True,
                           text=True, preexec_fn=_as_user(self.pw), cwd=self.dir)
        if r.returncode != 0:
            raise AssertionError("initdb failed: " + r.stdout + r.stderr)
        _LIVE.append(self)
        self.start()

    @property
    def conninfo(self):
        return "host=127.0.0.1 port=%d user=postgres dbname=postgres" % self.port

    def start(self, timeout=20):
        args = [PG_BIN + "/postgres", "-D", self.data, "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + self.dir,
                "-c", "max_connections=40", "-c", "shared_buffers=128MB"]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c",
                     "full_page_writes=off"]
        for k, v in self.settings.items():
            args += ["-c", "%s=%s" % (k, v)]
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, preexec_fn=_as_user(self.pw),
                                     cwd=self.dir)
        log.close()
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError("postgres exited at start:\n" + self.log())
            try:
                psycopg2.connect(self.conninfo, connect_timeout=2).close()
                return self
            except psycopg2.OperationalError:
                time.sleep(0.05)
        raise AssertionError("postgres did not start:\n" + self.log())

    def stop(self, timeout=30):
        """Fast shutdown (SIGINT): sessions are ended, like a DBA's restart."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self):
        self.stop()
        if self in _LIVE:
            _LIVE.remove(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def connect(self):
        c = psycopg2.connect(self.conninfo)
        c.autocommit = True
        return c

    def sql(self, query, args=None):
        """Runs one statement in its own connection; the rows, or [] for none."""
        c = self.connect()
        try:
            cur = c.cursor()
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []
        finally:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
