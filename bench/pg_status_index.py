#!/usr/bin/python3
"""What the process_status index costs an insert, and whether a partial index
(WHERE process_status = 'PENDING', what an import job polls) would cost less
(docs/benchmarks.md, "PostgreSQL sink"). A real PostgreSQL 15 with its
durable defaults (tests/e2e/pg.py); three tables with the posting tables'
event_id UNIQUE (COLLATE "C"), jsonb lineage, process_status default and
CHECK, differing only in the process_status index (full, partial, none);
INSERT ... SELECT of N rows with md5 event_ids into each in turns, after a
TRUNCATE and a CHECKPOINT; rows/s per turn. Run with Debian's /usr/bin/python3:

    bench/pg_status_index.py [--rows N] [--rounds R]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "e2e"))
from pg import PgServer  # noqa: E402

VARIANTS = (("full", "CREATE INDEX ON t_full (process_status)"),
            ("partial", "CREATE INDEX ON t_partial (process_status) "
                        "WHERE process_status = 'PENDING'"),
            ("none", None))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with PgServer(durable=True) as pg:
        c = pg.connect()
        cur = c.cursor()
        for v, idx in VARIANTS:
            cur.execute("CREATE TABLE t_%s (event_id text COLLATE \"C\" NOT NULL UNIQUE, "
                        "global_seq bigint NOT NULL, lineage jsonb NOT NULL, "
                        "process_status text NOT NULL DEFAULT 'PENDING' CHECK (process_status "
                        "IN ('PENDING', 'PROCESSING', 'DONE', 'ERROR')), pad text)" % v)
            if idx:
                cur.execute(idx)
        res = {v: [] for v, _ in VARIANTS}
        for r in range(a.rounds):
            for v, _ in VARIANTS:
                cur.execute("TRUNCATE t_%s" % v)
                cur.execute("CHECKPOINT")
                t0 = time.monotonic()
                cur.execute("INSERT INTO t_%s (event_id, global_seq, lineage, pad) SELECT "
                            "md5(%d::text || g::text), g, '[{\"source_id\":1,\"epoch\":2,"
                            "\"first_seq\":3,\"last_seq\":4}]', 'x' FROM generate_series(1, %d) g"
                            % (v, r, a.rows))
                res[v].append(round(a.rows / (time.monotonic() - t0)))
        c.close()
    for v, _ in VARIANTS:
        print("%-8s rows/s per turn: %s" % (v, " / ".join(str(x) for x in res[v])))
    print("loadavg", open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
