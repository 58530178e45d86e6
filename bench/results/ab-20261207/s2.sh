#!/bin/bash
# Second part: issue 8's own change, ed73735 vs c6a1892 (its merge), max + latency.
cd /work/main
R=bench/results/ab-20261207
[ -x /tmp/fp-c6a1892/build/floorpost ] || make -C /tmp/fp-c6a1892 -j2 > /tmp/b3.log 2>&1
for i in 1 2 3 4; do
  for b in base new; do
    if [ $b = base ]; then F=/tmp/fp-ed73735/build/floorpost; else F=/tmp/fp-c6a1892/build/floorpost; fi
    mkdir -p $R/i8c-$b-$i
    /usr/bin/python3 bench/run.py --only max,latency --pairs 5 --floorpost $F --out $R/i8c-$b-$i > $R/i8c-$b-$i/stdout.txt 2>&1
    echo "i8c $b $i rc=$? $(date +%T) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> $R/sitting.log
  done
done
echo DONE >> $R/sitting.log
