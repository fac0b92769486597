#!/bin/sh
# Quantizer throughput (make bench-quant): GB/s of f16 input per type at 1 and 2
# threads, as a share of the read bandwidth of the same input from the page
# cache (measured by bench_quant beside each run), plus CPU time per weight; then each type's pooled rel. RMSE on the
# original weights. Input: llama2-20m. Results are appended to bench/results.json
# (JSON Lines, "bench": "quant" / "quant-quality").
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
echo "== bench-quant: llama2-20m as f16 ($size bytes)"
OUT=${BENCH_RESULTS:-bench/results.json}
"$O/bench/bench_quant" --jsonl "$OUT" --types q8_0,q4_0,q4_1,q5_0,q4_k,q6_k \
    --threads 1,2 "$IN" || exit 1
# quality of the same types on the original bf16 weights
"$BIN" convert "$SRC" -o "$T/in.lpk" >/dev/null || exit 1
echo "== quality (pooled rel. RMSE over 2-D tensors, pure types)"
"$O/bench/bench_quant" --jsonl "$OUT" --quality --types q8_0,q6_k,q5_1,q5_0,q4_1,q4_k,q4_0 \
    "$T/in.lpk"
