#!/bin/bash
# Replay thread at SCHED_IDLE (/tmp/idle: 882e175 + -DFP_REPLAY_IDLE=1, the patch in
# replay-idle.patch here) vs nice 10 (882e175), alternating, 5 pairs each run.
cd /work/main
R=bench/results/replay-idle-20261207
for t in nice-1 idle-1 nice-2 idle-2; do
  case $t in idle*) F=/tmp/idle/floorpost;; *) F=/tmp/fp-882e175;; esac
  mkdir -p $R/$t
  /usr/bin/python3 bench/run.py --only replay --replay-pairs 5 --floorpost $F --out $R/$t > $R/$t/stdout.txt 2>&1
  echo "$t rc=$? $(date +%T) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> $R/log
done
echo DONE >> $R/log
