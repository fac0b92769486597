#!/bin/sh
# Runs every test binary in $1/tests (cmocka suites and fuzz-corpus replays) and
# prints one closing line: "N passed, N failed, N skipped".
# A cmocka test that skips must say why first (a "SKIP: ..." line, as
# TU_NEED_SHARED prints): a silent skip fails its binary.
# Each binary runs under a time limit of $LLMPACK_TEST_TIMEOUT seconds (default
# 600; `make asan` and `make test-long` raise it): a binary that does not finish
# in time is killed (SIGTERM to its process group, SIGKILL 10 s later) and counted
# as a failure naming it, so a hang can never stall the suite.
O=${1:-build}
limit=${LLMPACK_TEST_TIMEOUT:-600}
if ! command -v timeout > /dev/null 2>&1; then
    echo "tests/run.sh: 'timeout' (coreutils) is needed to bound each test" >&2
    exit 2
fi
pass=0; fail=0; skip=0; bad=""
for t in "$O"/tests/test_* "$O"/tests/replay_*; do
    [ -x "$t" ] || continue
    case "$t" in *.o|*.d|*.log) continue;; esac
    name=$(basename "$t")
    log="$O/tests/$name.log"
    t0=$(date +%s)
    timeout -k 10 "$limit" "$t" > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "TIMEOUT: $name did not finish in $limit s (exit $rc)" >> "$log"
        fail=$((fail + 1)); bad="$bad $name"
        echo "FAIL $name: timed out after $limit s (LLMPACK_TEST_TIMEOUT)"
        grep -v '^\[ *\(RUN\|OK\) *\]' "$log" | tail -n 20
        continue
    fi
    if [ "${name#replay_}" != "$name" ]; then
        if [ $rc -eq 0 ]; then pass=$((pass + 1)); echo "ok   $name (${secs}s; $(tail -n 1 "$log"))"
        else fail=$((fail + 1)); bad="$bad $name"; echo "FAIL $name (exit $rc)"; tail -n 20 "$log"; fi
        continue
    fi
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    p=${p:-0}; f=${f:-0}; s=${s:-0}
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or aborted
    # skips without a reason: a SKIPPED line (the first of each test, before the
    # closing list) with no "SKIP:" line since the test's RUN line
    silent=$(awk '/^\[ RUN      \]/ { why = 0 } /^SKIP:/ { why = 1 }
                  /^\[  SKIPPED \] test/ { if (!seen[$4]++ && !why) printf " %s", $4 }' "$log")
    if [ -n "$silent" ]; then
        echo "$name: skipped without saying why (print a SKIP: line first):$silent"
        f=$((f + 1))
    fi
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    if [ "$f" -ne 0 ]; then
        bad="$bad $name"; echo "FAIL $name (exit $rc)"; grep -v '^\[ *\(RUN\|OK\) *\]' "$log" | tail -n 40
    else
        echo "ok   $name ($p passed, $s skipped, ${secs}s)"
        grep '^\[  SKIPPED \]\|SKIP:' "$log" | grep -v 'test(s)' | sort -u | sed 's/^/     /' | head -n 5
    fi
done
# Shell tests (tests/test_*.sh BUILD_DIR): exit 0 passes, 77 skips (saying why),
# anything else fails.
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .sh)
    log="$O/tests/$name.log"
    t0=$(date +%s)
    timeout -k 10 "$limit" sh "$t" "$O" > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    if [ $rc -eq 0 ]; then pass=$((pass + 1)); echo "ok   $name (${secs}s; $(tail -n 1 "$log"))"
    elif [ $rc -eq 77 ]; then skip=$((skip + 1)); echo "ok   $name (skipped: $(tail -n 1 "$log"))"
    else fail=$((fail + 1)); bad="$bad $name"; echo "FAIL $name (exit $rc)"; tail -n 20 "$log"; fi
done
[ -n "$bad" ] && echo "failing:$bad"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
