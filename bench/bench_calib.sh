#!/bin/sh
# Speed of `llmpack calibrate` (importance matrices, docs/QUANT.md): tokens per
# second at --ctx 512 with 1 and 2 threads, and each run's peak RSS, on
# llama2-20m and docs-calib.txt from ../shared (or $LLMPACK_SHARED; without it:
# the demo model in examples/ and its TinyStories text, at --ctx 128). Where
# LLAMA_CPP_DIR points at a llama.cpp build, llama-imatrix runs on the same GGUF
# file, text, context, chunks and threads, and the ratio is printed. The machine and its load
# average are printed first and recorded with every run: on a shared machine
# the figures move with the load: each run's CPU seconds (user + sys) are
# printed and recorded too, and compare better than wall time under load.
# Appends one JSON object per run to bench/results.json.
#
#   sh bench/bench_calib.sh [BUILD_DIR] [CHUNKS]     (default: 16 chunks)
#
# Tokens per second count every token of the chunks run (chunks x ctx) over
# the whole command's wall time (loading and tokenizing included), for both
# tools alike.
cd "$(dirname "$0")/.." || exit 1
O=${1:-build}
chunks=${2:-16}
. bench/common.sh
shared=${LLMPACK_SHARED:-../shared}
src=$shared/models/llama2-20m/hf
text=$shared/text/docs-calib.txt
name=llama2-20m
ctx=512
if [ ! -d "$src" ] || [ ! -f "$text" ]; then
    src=examples/stories260K
    text=examples/TinyStories-valid-sample.txt
    name=stories260K
    ctx=128
    echo "calib bench: no llama2-20m in $shared, the demo model instead ($src, $text, ctx $ctx)"
fi
if ! "$bin" calibrate --help 2>&1 | grep -q '^usage: llmpack calibrate'; then
    echo "calib bench skipped: '$bin calibrate' is not available in this build"
    exit 0
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "machine: $cpu, $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
imatrix=$(llama_tool llama-imatrix)
[ -n "$LLAMA_CPP_DIR" ] && [ -z "$imatrix" ] &&
    echo "calib bench: no llama-imatrix under LLAMA_CPP_DIR=$LLAMA_CPP_DIR"
work=bench/work/calib
rm -rf "$work"
mkdir -p "$work"
# one f16 GGUF for both tools: what llama-imatrix is given in practice
model=$work/$name.f16.gguf
"$bin" convert "$src" -o "$model" --type f16 --force > "$work/convert.log" 2>&1 ||
    { cat "$work/convert.log"; exit 1; }

# run OUT_PREFIX CMD...: wall seconds, CPU seconds (user + sys) and peak RSS
# (KiB) of CMD into $secs, $cpus, $rss_kb
run() {
    p=$1
    shift
    t0=$(date +%s.%N)
    /usr/bin/time -v "$@" > "$p.out" 2> "$p.time" || { tail -n 30 "$p.time"; exit 1; }
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\).*/\1/p' "$p.time")
    cpus=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 }
                       END { printf "%.2f", s }' "$p.time")
}

tokens=$((chunks * ctx))
printf '%-12s %4s %8s %10s %10s %8s %12s %12s %8s %10s  %s\n' model thr tokens seconds tokens/s \
    "CPU s" "peak RSS MiB" "imatrix t/s" ratio "im CPU s" load
for thr in 1 2; do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    run "$work/ours" "$bin" calibrate "$model" -f "$text" -o "$work/ours.dat" -c $ctx \
        --chunks "$chunks" -t $thr --force -q
    tps=$(awk -v s="$secs" -v n="$tokens" 'BEGIN { printf "%.1f", n / s }')
    rss=$(awk -v r="${rss_kb:-0}" 'BEGIN { printf "%.1f", r / 1024 }')
    ours_secs=$secs
    ours_cpu=$cpus
    ltps=null
    ratio=null
    lcpu=null
    if [ -n "$imatrix" ]; then
        run "$work/theirs" "$imatrix" -m "$model" -f "$text" -o "$work/theirs.dat" -c $ctx \
            --chunks "$chunks" -t $thr
        ltps=$(awk -v s="$secs" -v n="$tokens" 'BEGIN { printf "%.1f", n / s }')
        ratio=$(awk -v a="$secs" -v b="$ours_secs" 'BEGIN { printf "%.3f", a / b }')
        lcpu=$cpus
    fi
    printf '{"bench": "calib", "model": "%s", "threads": %d, "ctx": %d, "tokens": %d, "seconds": %s, "tokens_per_s": %s, "peak_rss_mib": %s, "imatrix_tokens_per_s": %s, "ratio": %s, "cpu_seconds": %s, "imatrix_cpu_seconds": %s, "load": "%s"}\n' \
        "$name" "$thr" "$ctx" "$tokens" "$ours_secs" "$tps" "$rss" "$ltps" "$ratio" "$ours_cpu" "$lcpu" "$load" \
        >> bench/results.json
    printf '%-12s %4s %8s %10s %10s %8s %12s %12s %8s %10s  %s\n' "$name" "$thr" "$tokens" \
        "$ours_secs" "$tps" "$ours_cpu" "$rss" "$([ "$ltps" = null ] && echo - || echo "$ltps")" \
        "$([ "$ratio" = null ] && echo - || echo "$ratio")" \
        "$([ "$lcpu" = null ] && echo - || echo "$lcpu")" "$load"
done
[ -n "$imatrix" ] || echo "(llama-imatrix not timed: set LLAMA_CPP_DIR to a llama.cpp build)"
echo "ratio: llmpack's tokens/s over llama-imatrix's (above 1: llmpack is faster)"
rm -rf "$work"
