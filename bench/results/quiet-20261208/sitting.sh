#!/bin/bash
# One quiet sitting (nothing else running): 7345f85 (this session's start)
# against main (bounded flushes, fewer compact-store probes, 192-byte
# entries, ingest's wait rounded up). Same driver, fpload and forwarder
# (main's); --floorpost swaps the processor. base and new alternate.
set -u
cd "$(dirname "$0")/../../.."
R=bench/results/quiet-20261208
BASE=${BASE:-/tmp/base-m}
cp build/floorpost /tmp/fp-new-floorpost
cp build/bench/bench_micro /tmp/fp-new-bench_micro
NEW=/tmp/fp-new-floorpost
log() { echo "$* $(date +%T) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> $R/sitting.log; }
for i in 1 2 3; do
  for b in base new; do
    if [ $b = base ]; then F=$BASE/build/floorpost; else F=$NEW; fi
    mkdir -p $R/ml-$b-$i
    /usr/bin/python3 bench/run.py --only max,latency --pairs 3 --floorpost $F --out $R/ml-$b-$i > $R/ml-$b-$i/stdout.txt 2>&1
    log "ml $b $i rc=$?"
  done
done
for i in 1 2 3 4; do
  for b in base new; do
    if [ $b = base ]; then M=$BASE/build/bench/bench_micro; else M=/tmp/fp-new-bench_micro; fi
    $M > $R/micro-$b-$i.txt 2>&1
    log "micro $b $i rc=$?"
  done
done
for i in 1 2; do
  for b in base new; do
    if [ $b = base ]; then F=$BASE/build/floorpost; else F=$NEW; fi
    mkdir -p $R/keys-$b-$i
    /usr/bin/python3 bench/run.py --only keys --no-rss-bounds --floorpost $F --out $R/keys-$b-$i > $R/keys-$b-$i/stdout.txt 2>&1
    log "keys $b $i rc=$?"
  done
done
for b in base new; do
  if [ $b = base ]; then F=$BASE/build/floorpost; else F=$NEW; fi
  mkdir -p $R/dur-$b
  /usr/bin/python3 bench/run.py --only durability --floorpost $F --out $R/dur-$b > $R/dur-$b/stdout.txt 2>&1
  log "durability $b rc=$?"
done
/usr/bin/python3 bench/ab_summary.py $R ml --json $R/ml-summary.json > $R/ml-summary.txt 2>&1
log "done"
