#!/bin/sh
# Runs every test binary in $1/tests (cmocka suites and fuzz-corpus replays) and
# prints one closing line: "N passed, N failed, N skipped".
O=${1:-build}
pass=0; fail=0; skip=0; bad=""
for t in "$O"/tests/test_* "$O"/tests/replay_*; do
    [ -x "$t" ] || continue
    case "$t" in *.o|*.d) continue;; esac
    name=$(basename "$t")
    log="$O/tests/$name.log"
    if [ "${name#replay_}" != "$name" ]; then
        if "$t" > "$log" 2>&1; then pass=$((pass + 1)); echo "ok   $name ($(tail -n 1 "$log"))"
        else fail=$((fail + 1)); bad="$bad $name"; echo "FAIL $name"; tail -n 20 "$log"; fi
        continue
    fi
    "$t" > "$log" 2>&1
    rc=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    p=${p:-0}; f=${f:-0}; s=${s:-0}
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or aborted
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    if [ "$f" -ne 0 ]; then
        bad="$bad $name"; echo "FAIL $name"; grep -v '^\[ *\(RUN\|OK\) *\]' "$log" | tail -n 40
    else
        echo "ok   $name ($p passed, $s skipped)"
        grep '^\[  SKIPPED \]\|SKIP:' "$log" | grep -v 'test(s)' | sort -u | sed 's/^/     /' | head -n 5
    fi
done
[ -n "$bad" ] && echo "failing:$bad"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
