#!/bin/sh
# Mutation check of the test suite (`make mutants`, docs/TESTING.md): applies each
# one-line mutation of scripts/mutants.list to a scratch copy of the tree, rebuilds
# it, runs the test binaries (fastest first, stopping at the first failure) and
# reports which mutants survive. Not part of CI: a survivor takes a whole suite run.
#
#   sh scripts/mutants.sh                 every mutation
#   sh scripts/mutants.sh q4_k kld_dir    only these ids (or id prefixes)
#   sh scripts/mutants.sh -n              check that every pattern still applies (no build)
#
# Environment: MUTANTS_DIR (scratch folder, default /tmp/llmpack-mutants.PID, removed at
# the end unless MUTANTS_KEEP=1), MUTANTS_TIMEOUT (seconds per test binary, 900; a mutant
# whose only failure is a time-out is reported as "timeout", to be looked at: a hang the
# mutation caused, or a loaded machine), MUTANTS_LOG (default build/mutants.log),
# LLMPACK_SHARED (../shared), MUTANTS_JOBS (make -j, 2), MUTANTS_TESTS ("test_a test_b":
# run only these binaries and skip the unmutated baseline run; for a quick check that a
# new test kills a mutant).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
list="$root/scripts/mutants.list"
dry=0
if [ "${1:-}" = "-n" ]; then dry=1; shift; fi
work=${MUTANTS_DIR:-/tmp/llmpack-mutants.$$}
limit=${MUTANTS_TIMEOUT:-900}
jobs=${MUTANTS_JOBS:-2}
log=${MUTANTS_LOG:-$root/build/mutants.log}
shared=${LLMPACK_SHARED:-$root/../shared}
[ -d "$shared" ] && shared=$(cd "$shared" && pwd)
src="$work/src"

selected() { # id -> 0 when it was asked for (or nothing was)
    [ -z "$SEL" ] && return 0
    for want in $SEL; do
        case "$1" in "$want"*) return 0;; esac
    done
    return 1
}
SEL="$*"

mkdir -p "$src" "$(dirname "$log")" || exit 1
: > "$log"
say() { echo "$*"; echo "$*" >> "$log"; }

# the tree as it is in the worktree (tracked and new files, not build outputs)
(cd "$root" && git ls-files --cached --others --exclude-standard | tar -cf - -T -) |
    (cd "$src" && tar -xf -) || exit 1
commit=$(git -C "$root" rev-parse --short HEAD)
dirty=$(git -C "$root" status --porcelain --untracked-files=no | head -n 1)
say "mutants of $commit${dirty:+ (with uncommitted changes)}, $(date -u '+%Y-%m-%d %H:%M UTC')"

# One mutation: mut ID FILE SED-EXPRESSION DESCRIPTION (called by the list).
n_total=0; n_killed=0; n_survived=0; n_stale=0; n_build=0; n_hang=0; survivors=""; hangs=""
runs="$work/runs"
mut() {
    id=$1; file=$2; expr=$3; desc=$4
    selected "$id" || return 0
    n_total=$((n_total + 1))
    f="$src/$file"
    if [ ! -f "$f" ]; then
        n_stale=$((n_stale + 1)); say "STALE    $id: $file does not exist"; return 0
    fi
    cp "$f" "$work/orig" || exit 1
    sed -e "$expr" "$work/orig" > "$work/new"
    changed=$(diff "$work/orig" "$work/new" | grep -c '^>')
    if [ "$changed" -ne 1 ]; then
        n_stale=$((n_stale + 1))
        say "STALE    $id: '$expr' changes $changed lines of $file (want exactly 1)"
        return 0
    fi
    if [ $dry -eq 1 ]; then say "applies  $id ($file): $desc"; return 0; fi
    cp "$work/new" "$f"
    t0=$(date +%s)
    if ! (cd "$src" && nice make -j"$jobs" tests > "$work/build.log" 2>&1); then
        n_build=$((n_build + 1))
        say "BUILD    $id: the mutant does not compile ($file); fix the list"
        tail -n 5 "$work/build.log" >> "$log"
        cp "$work/orig" "$f"
        return 0
    fi
    killer=""; hung=""
    for t in $(cat "$runs"); do
        (cd "$src" && LLMPACK_SHARED="$shared" LLMPACK_BIN="$src/llmpack" \
            LLMPACK_GEN_CKPT="$src/build/bench/gen_ckpt" \
            nice timeout -k 10 "$limit" "build/tests/$t" > "$work/test.log" 2>&1)
        rc=$?
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            hung="$hung $t"   # keep going: another binary may fail for real
        elif [ $rc -ne 0 ]; then
            killer="$t"
            break
        fi
    done
    secs=$(( $(date +%s) - t0 ))
    if [ -n "$killer" ]; then
        n_killed=$((n_killed + 1)); say "killed   $id by $killer (${secs}s)"
    elif [ -n "$hung" ]; then
        n_hang=$((n_hang + 1)); hangs="$hangs $id"
        say "timeout  $id: only failure a time-out of$hung after ${limit}s ($file): $desc"
    else
        n_survived=$((n_survived + 1)); survivors="$survivors $id"
        say "SURVIVED $id ($file): $desc"
    fi
    cp "$work/orig" "$f"
}

if [ $dry -eq 0 ] && [ -n "${MUTANTS_TESTS:-}" ]; then
    (cd "$src" && nice make -j"$jobs" tests > "$work/build.log" 2>&1) || {
        tail -n 20 "$work/build.log"; say "the unmutated tree does not build"; exit 1; }
    for t in $MUTANTS_TESTS; do echo "$t"; done > "$runs"
    say "only: $MUTANTS_TESTS (no baseline run)"
elif [ $dry -eq 0 ]; then
    # the unmutated tree must build and pass; its times order the runs
    say "building and running the unmutated tree in $src"
    if ! (cd "$src" && nice make -j"$jobs" tests > "$work/build.log" 2>&1); then
        tail -n 20 "$work/build.log"; say "the unmutated tree does not build"; exit 1
    fi
    : > "$runs.t"
    for t in "$src"/build/tests/test_* "$src"/build/tests/replay_*; do
        case "$t" in *.o|*.d|*.log) continue;; esac
        [ -x "$t" ] || continue
        name=$(basename "$t")
        t0=$(date +%s)
        (cd "$src" && LLMPACK_SHARED="$shared" LLMPACK_BIN="$src/llmpack" \
            LLMPACK_GEN_CKPT="$src/build/bench/gen_ckpt" \
            nice timeout -k 10 "$limit" "build/tests/$name" > "$work/test.log" 2>&1)
        rc=$?
        if [ $rc -ne 0 ]; then
            tail -n 20 "$work/test.log"; say "the unmutated tree fails $name (exit $rc)"; exit 1
        fi
        echo "$(( $(date +%s) - t0 )) $name" >> "$runs.t"
    done
    sort -n "$runs.t" | cut -d' ' -f2 > "$runs"
    say "baseline passes ($(wc -l < "$runs") binaries)"
fi

. "$list"

if [ $dry -eq 1 ]; then
    say "$n_total mutants: $((n_total - n_stale)) apply, $n_stale stale"
else
    say "$n_total mutants: $n_killed killed, $n_survived survived, $n_hang timed out," \
        "$n_stale stale, $n_build not compiling"
fi
[ -n "$survivors" ] && say "survivors:$survivors"
[ -n "$hangs" ] && say "timed out (look at them):$hangs"
[ "${MUTANTS_KEEP:-0}" = 1 ] || rm -rf "$work"
[ $n_survived -eq 0 ] && [ $n_hang -eq 0 ] && [ $n_stale -eq 0 ] && [ $n_build -eq 0 ]
