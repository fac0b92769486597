#!/bin/sh
# make check-deps: the real tree passes; a small tree with each kind of fault
# (an upward include, an upward call, files calling each other in a loop) fails
# naming it. Usage: sh tests/test_check_deps.sh BUILD_DIR  (make test runs it).
O=${1:-build}
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/llmpack-deps.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() { echo "FAIL: $*"; exit 1; }

out=$(sh scripts/check-deps.sh "$O" 2>&1) || { echo "$out"; fail "the tree breaks its own rules"; }
echo "$out"

# format/ (the floor) with three faults, quant/ above it.
mkdir -p "$tmp/src/format" "$tmp/src/quant" "$tmp/build/format" "$tmp/build/quant"
cat > "$tmp/src/quant/quant.h" <<'H'
int q_fn(void);
H
cat > "$tmp/src/quant/q1.c" <<'C'
#include "quant.h"
int q_fn(void) { return 1; }
C
cat > "$tmp/src/format/f1.c" <<'C'
#include "../quant/quant.h"
int f2(int);
int f1(int x) { return x ? f2(x - 1) : q_fn(); }
C
cat > "$tmp/src/format/f2.c" <<'C'
int f1(int);
int f2(int x) { return f1(x); }
C
for c in format/f1.c format/f2.c quant/q1.c; do
    ${CC:-cc} -c "$tmp/src/$c" -o "$tmp/build/${c%.c}.o" || fail "cc $c"
done
out=$(sh "$root/scripts/check-deps.sh" "$tmp/build" "$tmp/src" 2>&1) && fail "faulty tree passed: $out"
echo "$out"
echo "$out" | grep -q 'format/f1.c includes "../quant/quant.h": format/ may not use quant/' ||
    fail "upward include not reported"
echo "$out" | grep -q 'format/f1.c calls q_fn (defined in quant/q1.c): format/ may not use quant/' ||
    fail "upward call not reported"
echo "$out" | grep -q 'cycle: format/f1.c format/f2.c' || fail "cycle not reported"
echo "PASS: the tree keeps its layers; an upward include, an upward call and a cycle fail"
