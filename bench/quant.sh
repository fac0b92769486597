#!/bin/sh
# Quantizer throughput (make bench-quant): GB/s of f16 input per type at 1 and 2
# threads, as a share of the read bandwidth of the same input from the page
# cache (cat), plus CPU time per weight. Input: llama2-20m converted to f16.
# Usage: sh bench/quant.sh [BUILD_DIR]
O=${1:-build}
if [ "$O" = build ]; then BIN=./llmpack; else BIN=$O/llmpack; fi
SHARED=${LLMPACK_SHARED:-../shared}
SRC=$SHARED/models/llama2-20m/hf
if [ ! -d "$SRC" ]; then
    echo "bench-quant: $SRC not found (set LLMPACK_SHARED); skipped"
    exit 0
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/llmpack-bench-quant-XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT INT TERM
"$BIN" convert "$SRC" -o "$T/in.f16.lpk" --type f16 >/dev/null || exit 1
IN=$T/in.f16.lpk
size=$(wc -c < "$IN")
# read bandwidth: best of 5 timed passes of 10 cats each, file already cached
cat "$IN" > /dev/null
best=0
for pass in 1 2 3 4 5; do
    t0=$(date +%s%N)
    for i in 1 2 3 4 5 6 7 8 9 10; do cat "$IN" > /dev/null; done
    t1=$(date +%s%N)
    bw=$(awk -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 10 * s / ((b - a) / 1e9) }')
    [ "$bw" -gt "$best" ] && best=$bw
done
echo "== bench-quant: llama2-20m as f16 ($size bytes), cat from page cache: $(awk -v b="$best" 'BEGIN { printf "%.2f", b / 1e9 }') GB/s"
"$O/bench/bench_quant" --read-bw "$best" --types q8_0,q4_0,q4_1,q5_0,q4_k,q6_k --threads 1,2 "$IN"
