import importlib.util, os, sys, time, json
ROOT = "/work/main"
spec = importlib.util.spec_from_file_location("pgb", ROOT + "/bench/pg_sink.py")
pgb = importlib.util.module_from_spec(spec); spec.loader.exec_module(pgb)
import pg as pgmod
orig_init = pgmod.PgServer.__init__
def init(self, settings=None, durable=False):
    orig_init(self, {"track_wal_io_timing": "on", "track_io_timing": "on"}, durable)
pgmod.PgServer.__init__ = init
orig_exit = pgmod.PgServer.__exit__
def ex(self, *e):
    try:
        print(self.sql("SELECT wal_records, wal_bytes, wal_buffers_full, wal_write, wal_sync, wal_write_time, wal_sync_time FROM pg_stat_wal"), flush=True)
        print(self.sql("SELECT buffers_backend, buffers_backend_fsync, buffers_checkpoint, buffers_clean, checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter"), flush=True)
    except Exception as x: print("EXC", x)
    return orig_exit(self, *e)
pgmod.PgServer.__exit__ = ex
s = pgb.PgSuite(ROOT + "/build", "/tmp/pgexp")
for c in sys.argv[1:]:
    os.system("rm -rf /tmp/pgexp/state; cp -a /tmp/pg-prefill-conn /tmp/pgexp/state")
    bm, conn = c.split(":")
    r = pgb.drain_into_pg(s, "/tmp/pgexp/state", int(bm), 329140, True, {"label":"c"+conn,"fp":s.fp,"opts":{"connections":conn}})
