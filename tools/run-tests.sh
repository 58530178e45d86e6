#!/bin/sh
# Runs each unit test binary in its own process with a timeout (libuv-style)
# and prints the closing line "N passed, N failed".
pass=0; fail=0; failed=""
for t in "$@"; do
    if timeout 120 "$t" > "$t.log" 2>&1; then
        pass=$((pass + 1)); echo "ok   $t"
    else
        fail=$((fail + 1)); failed="$failed $t"; echo "FAIL $t"; sed 's/^/    /' "$t.log" | tail -30
    fi
done
echo "unit: $pass passed, $fail failed"
[ -n "${FP_TALLY:-}" ] && echo "$pass $fail" >> "$FP_TALLY"
[ "$fail" -eq 0 ]
