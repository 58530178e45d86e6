#!/bin/sh
# Runs each unit test binary (libuv-style): the binary forks one child per
# case with a per-case timeout (tests/test.h) and prints `ok   prog:case` /
# `FAIL prog:case` and a closing `cases: prog passed=N failed=N` line. This
# script sums the cases over all binaries. A binary that dies outside a case
# (no summary line, or a non-zero exit with no failed case), or outlives
# FP_TEST_BINARY_TIMEOUT seconds (default 600), counts as one failed case
# `prog:(binary)`. Prints "unit: N passed, N failed" and appends "N N" to
# $FP_TALLY. Logs go beside each binary ($t.log).
pass=0; fail=0; failed=""
limit=${FP_TEST_BINARY_TIMEOUT:-600}
for t in "$@"; do
    name=$(basename "$t")
    timeout "$limit" "$t" > "$t.log" 2>&1
    rc=$?
    # the per-case lines (and a failed case's output)
    grep -v '^cases: ' "$t.log"
    line=$(grep "^cases: $name " "$t.log" | tail -1)
    p=$(echo "$line" | sed -n 's/.* passed=\([0-9]*\) failed=\([0-9]*\)$/\1/p')
    f=$(echo "$line" | sed -n 's/.* passed=\([0-9]*\) failed=\([0-9]*\)$/\2/p')
    if [ -z "$p" ] || [ -z "$f" ] || { [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; }; then
        if [ "$rc" -eq 124 ]; then why="timed out after $limit s"; else why="exit status $rc"; fi
        echo "FAIL $name:(binary) ($why, outside any case)"
        # no summary line: count the case lines it did print
        [ -n "$p" ] || p=$(grep -c "^ok   $name:" "$t.log")
        [ -n "$f" ] || f=$(grep -c "^FAIL $name:" "$t.log")
        f=$((f + 1))
    fi
    pass=$((pass + p)); fail=$((fail + f))
    [ "$f" -gt 0 ] && failed="$failed $name"
done
[ -n "$failed" ] && echo "failed in:$failed"
echo "unit: $pass passed, $fail failed"
[ -n "${FP_TALLY:-}" ] && echo "$pass $fail" >> "$FP_TALLY"
[ "$fail" -eq 0 ]
