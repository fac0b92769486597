#!/bin/sh
# llmpack quantize against llama.cpp's llama-quantize (a figure of make bench
# where LLAMA_CPP_DIR points at a llama.cpp build; skipped otherwise). A
# synthetic model of TinyLlama-1.1B's shapes (bench/gen_ckpt --shape 1b, random
# bf16, the Llama-2 tokenizer of ../shared, else the demo's is not large
# enough: skipped) as an f16 container and as llmpack's GGUF export of it; each
# recipe quantized by both at THREADS threads with the page cache warm (the
# input read once before each run), with equal durability: llmpack fsyncs its
# output before the rename, so llama-quantize's time includes a `sync` after
# it. Per recipe: wall and CPU seconds of each, and the ratios (llama.cpp's time
# over ours: above 1 means llmpack is faster). The I/O floor `cat IN > OUT &&
# sync` of the same bytes is measured once. CPU seconds do not depend on what
# else the machine runs; wall seconds do (the load average is recorded).
# Appends {"bench": "peer-quant", ...} lines to bench/results.json. Needs
# about 8 GB free in bench/work/.
#
#   LLAMA_CPP_DIR=~/llama.cpp sh bench/peer_quant.sh [BUILD_DIR]
#   RECIPES=Q8_0,Q4_0,... THREADS=2 (defaults: every recipe both have)
cd "$(dirname "$0")/.." || exit 1
O=${1:-build}
. bench/common.sh
lq=$(llama_tool llama-quantize)
if [ -z "$lq" ]; then
    echo "peer-quant: no llama-quantize (set LLAMA_CPP_DIR to a llama.cpp build); skipped"
    exit 0
fi
tok=${LLMPACK_SHARED:-../shared}/tokenizers/llama2/tokenizer.model
[ -f "$tok" ] || { echo "peer-quant: $tok not found (a 32000-piece tokenizer); skipped"; exit 0; }
recipes=${RECIPES:-Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K_S,Q4_K_M,Q5_K_S,Q5_K_M,Q6_K,Q3_K_S,Q3_K_M,Q3_K_L,Q2_K,IQ4_NL,IQ4_XS}
threads=${THREADS:-2}
out=${BENCH_RESULTS:-bench/results.json}
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
bench_work peer-quant 8
bench_1b "$work/in.lpk" --tokenizer "$tok" || { echo "peer-quant: convert failed"; exit 1; }
"$bin" export "$work/in.lpk" -o "$work/in.gguf" -q > /dev/null ||
    { echo "peer-quant: export failed"; exit 1; }
in=$work/in.lpk
echo "== peer-quant: 1.1B shape as f16 ($(wc -c < "$in") bytes), $threads threads, $lq"

load() { cut -d' ' -f1 /proc/loadavg; }
# timed FILE CMD...: "wall user sys" of CMD into FILE
timed() {
    f=$1
    shift
    /usr/bin/time -f "%e %U %S" -o "$f" "$@"
}
cat "$in" > /dev/null
timed "$work/io.t" sh -c "cat '$in' > '$work/io.out' && sync" || exit 1
rm -f "$work/io.out"
# the removal frees 2.2 GB of blocks; let the file system settle before the
# first recipe (otherwise that run pays for it: up to 0.5 s of 3)
sync
sleep 2
io=$(cut -d' ' -f1 "$work/io.t")
echo "I/O floor (cat + sync of the same bytes): $io s"
printf '%-8s %10s %10s %10s %10s %8s %8s %6s\n' recipe ours_wall ours_cpu llama_wall llama_cpu \
    wall_x cpu_x load
status=0
for r in $(echo "$recipes" | tr ',' ' '); do
    l0=$(load)
    cat "$in" > /dev/null
    timed "$work/ours.t" "$bin" quantize "$in" --type "$r" -o "$work/ours.lpk" -q -t "$threads" ||
        { echo "peer-quant: llmpack quantize $r failed"; status=1; continue; }
    rm -f "$work/ours.lpk"
    cat "$work/in.gguf" > /dev/null
    timed "$work/llama.t" sh -c "'$lq' '$work/in.gguf' '$work/llama.gguf' $r $threads \
        > '$work/llama.log' 2>&1 && sync" ||
        { echo "peer-quant: llama-quantize $r failed (see its log)"; tail -3 "$work/llama.log";
          status=1; continue; }
    rm -f "$work/llama.gguf"
    set -- $(cat "$work/ours.t") $(cat "$work/llama.t")
    ow=$1 oc=$(awk -v u="$2" -v s="$3" 'BEGIN { printf "%.2f", u + s }')
    lw=$4 lc=$(awk -v u="$5" -v s="$6" 'BEGIN { printf "%.2f", u + s }')
    wx=$(awk -v a="$lw" -v b="$ow" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    cx=$(awk -v a="$lc" -v b="$oc" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-8s %10s %10s %10s %10s %8s %8s %6s\n' "$r" "$ow" "$oc" "$lw" "$lc" "$wx" "$cx" "$l0"
    printf '{"bench": "peer-quant", "recipe": "%s", "threads": %s, "ours_s": %s, "ours_cpu_s": %s, "llama_s": %s, "llama_cpu_s": %s, "wall_ratio": %s, "cpu_ratio": %s, "io_floor_s": %s, "load": %s}\n' \
        "$r" "$threads" "$ow" "$oc" "$lw" "$lc" "$wx" "$cx" "$io" "$l0" >> "$out"
done
exit $status
