#!/bin/sh
# Alternating runs of two floorpost binaries at a fixed rate (one_run.py:
# 5 M records, 10,000 open keys, batch 256, durability off, fpload open loop).
# usage: pairs.sh BASE NEW RATE PAIRS OUTDIR
base=$1 new=$2 rate=$3 pairs=$4 out=$5
here=$(dirname "$0")
mkdir -p "$out"
i=1
while [ $i -le "$pairs" ]; do
    for v in base new; do
        if [ $v = base ]; then bin=$base; else bin=$new; fi
        /usr/bin/python3 "$here/one_run.py" "$bin" "$out/$v-$i" 5000000 --rate "$rate" > "$out/$v-$i.threads"
    done
    i=$((i + 1))
done
/usr/bin/python3 - "$out" "$pairs" <<'PY'
import json, sys, re, statistics as st
out, n = sys.argv[1], int(sys.argv[2])
rows = {}
for v in ("base", "new"):
    for i in range(1, n + 1):
        d = json.load(open("%s/%s-%d.json" % (out, v, i)))["latency_ms"]
        t = open("%s/%s-%d.threads" % (out, v, i)).read()
        sh = float(re.search(r"fp-shard-0\s+cpu ([0-9.]+)", t).group(1))
        rows.setdefault(v, []).append((d["p50"], d["p90"], d["p99"], d["max"], sh))
for v in ("base", "new"):
    for r in rows[v]:
        print("%-4s p50 %7.3f p90 %7.3f p99 %7.3f max %7.3f shard %.3f s/M" % ((v,) + r))
for v in ("base", "new"):
    print("%-4s median p99 %.3f ms, median max %.3f ms, median shard %.3f s/M" % (
        v, st.median(r[2] for r in rows[v]), st.median(r[3] for r in rows[v]), st.median(r[4] for r in rows[v])))
print("p99 new/base by pairs:", " ".join("%.2f" % (b[2] / a[2]) for a, b in zip(rows["base"], rows["new"])))
PY
