#!/bin/sh
# llmpack verify against llama.cpp's llama-perplexity (a figure of make bench
# where LLAMA_CPP_DIR points at a llama.cpp build; skipped otherwise). A
# synthetic model of TinyLlama-1.1B's shapes (bench/gen_ckpt --shape 1b, random
# bf16, the Llama-2 tokenizer of ../shared) exported as an f16 GGUF, then
# llama-quantize'd into each type: both tools read the very same GGUF files.
# Per type: `llmpack verify FILE` and `llama-perplexity -m FILE` on the same
# text, ctx 512, CHUNKS chunks, THREADS threads, the file's pages warm; wall and
# CPU seconds of each whole command (loading and tokenizing included), tokens/s
# over wall, and the ratios (llama.cpp's time over ours: above 1 means llmpack
# is faster). CPU seconds do not depend much on what else the machine runs;
# wall seconds do (the load average is recorded). Appends
# {"bench": "peer-verify", ...} lines to bench/results.json. Needs about 12 GB
# free in bench/work/.
#
#   LLAMA_CPP_DIR=~/llama.cpp sh bench/peer_verify.sh [BUILD_DIR]
#   TYPES=F16,Q8_0,... THREADS=2 CHUNKS=4 (defaults: the types below)
cd "$(dirname "$0")/.." || exit 1
O=${1:-build}
. bench/common.sh
lq=$(llama_tool llama-quantize)
lp=$(llama_tool llama-perplexity)
if [ -z "$lq" ] || [ -z "$lp" ]; then
    echo "peer-verify: no llama-quantize / llama-perplexity (set LLAMA_CPP_DIR to a llama.cpp build); skipped"
    exit 0
fi
shared=${LLMPACK_SHARED:-../shared}
tok=$shared/tokenizers/llama2/tokenizer.model
text=$shared/text/wiki.test.raw
for f in "$tok" "$text"; do
    [ -f "$f" ] || { echo "peer-verify: $f not found; skipped"; exit 0; }
done
types=${TYPES:-F16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K_M,Q5_K_M,Q6_K,Q3_K_M,Q2_K,IQ4_NL,IQ4_XS}
threads=${THREADS:-2}
chunks=${CHUNKS:-4}
ctx=512
out=${BENCH_RESULTS:-bench/results.json}
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
bench_work peer-verify 12
# the first 256 KiB of wiki.test.raw: enough tokens for 16 chunks of 512
head -c 262144 "$text" > "$work/text.txt"
bench_1b "$work/F16.gguf" --tokenizer "$tok" || { echo "peer-verify: convert failed"; exit 1; }
echo "== peer-verify: 1.1B shape, ctx $ctx, $chunks chunks, $threads threads, $lp"

load() { cut -d' ' -f1 /proc/loadavg; }
# timed FILE CMD...: "wall user sys" of CMD into FILE
timed() {
    f=$1
    shift
    /usr/bin/time -f "%e %U %S" -o "$f" "$@"
}
printf '%-7s %9s %9s %9s %9s %9s %9s %7s %7s %6s\n' type ours_wall ours_cpu ours_tok/s \
    llama_wall llama_cpu llama_tok/s wall_x cpu_x load
tokens=$((chunks * ctx))
status=0
for t in $(echo "$types" | tr ',' ' '); do
    m=$work/$t.gguf
    if [ "$t" != F16 ]; then
        "$lq" --pure "$work/F16.gguf" "$m" "$t" "$threads" > "$work/q.log" 2>&1 ||
            { echo "peer-verify: llama-quantize $t failed"; tail -3 "$work/q.log"; status=1; continue; }
    fi
    l0=$(load)
    cat "$m" > /dev/null
    timed "$work/ours.t" "$bin" verify "$m" --text "$work/text.txt" --ctx $ctx --chunks "$chunks" \
        -t "$threads" -q --json > "$work/ours.json" 2> "$work/ours.err" ||
        { echo "peer-verify: llmpack verify $t failed"; tail -3 "$work/ours.err"; status=1; continue; }
    cat "$m" > /dev/null
    timed "$work/llama.t" "$lp" -m "$m" -f "$work/text.txt" -c $ctx -b $ctx --chunks "$chunks" \
        -t "$threads" > "$work/llama.log" 2>&1 ||
        { echo "peer-verify: llama-perplexity $t failed"; tail -3 "$work/llama.log"; status=1; continue; }
    [ "$t" = F16 ] || rm -f "$m"
    set -- $(cat "$work/ours.t") $(cat "$work/llama.t")
    ow=$1 oc=$(awk -v u="$2" -v s="$3" 'BEGIN { printf "%.2f", u + s }')
    lw=$4 lc=$(awk -v u="$5" -v s="$6" 'BEGIN { printf "%.2f", u + s }')
    otps=$(awk -v n="$tokens" -v s="$ow" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')
    ltps=$(awk -v n="$tokens" -v s="$lw" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')
    wx=$(awk -v a="$lw" -v b="$ow" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    cx=$(awk -v a="$lc" -v b="$oc" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-7s %9s %9s %9s %9s %9s %9s %7s %7s %6s\n' "$t" "$ow" "$oc" "$otps" "$lw" "$lc" \
        "$ltps" "$wx" "$cx" "$l0"
    printf '{"bench": "peer-verify", "type": "%s", "threads": %s, "ctx": %d, "tokens": %d, "ours_s": %s, "ours_cpu_s": %s, "llama_s": %s, "llama_cpu_s": %s, "wall_ratio": %s, "cpu_ratio": %s, "load": %s}\n' \
        "$t" "$threads" "$ctx" "$tokens" "$ow" "$oc" "$lw" "$lc" "$wx" "$cx" "$l0" >> "$out"
done
exit $status
