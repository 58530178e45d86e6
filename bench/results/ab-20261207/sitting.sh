#!/bin/bash
# One quiet sitting: issue 8 (ed73735 vs main, max+latency), issue 11 (8e9756c vs main, max), replay on main.
cd /work/main
R=bench/results/ab-20261207
NEW=/work/main/build/floorpost
cp build/floorpost /tmp/fp-new-floorpost
NEW=/tmp/fp-new-floorpost
for i in 1 2 3 4 5; do
  for b in base new; do
    if [ $b = base ]; then F=/tmp/fp-ed73735/build/floorpost; else F=$NEW; fi
    mkdir -p $R/i8-$b-$i
    /usr/bin/python3 bench/run.py --only max,latency --pairs 5 --floorpost $F --out $R/i8-$b-$i > $R/i8-$b-$i/stdout.txt 2>&1
    echo "i8 $b $i rc=$? $(date +%T) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> $R/sitting.log
  done
done
for i in 1 2 3 4 5; do
  for b in base new; do
    if [ $b = base ]; then F=/tmp/fp-8e9756c/build/floorpost; else F=$NEW; fi
    mkdir -p $R/i11-$b-$i
    /usr/bin/python3 bench/run.py --only max --pairs 5 --floorpost $F --out $R/i11-$b-$i > $R/i11-$b-$i/stdout.txt 2>&1
    echo "i11 $b $i rc=$? $(date +%T) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> $R/sitting.log
  done
done
mkdir -p $R/replay
/usr/bin/python3 bench/run.py --only replay --replay-pairs 5 --floorpost $NEW --out $R/replay > $R/replay/stdout.txt 2>&1
echo "replay rc=$? $(date +%T) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> $R/sitting.log
bash /tmp/s2.sh            
