#!/bin/sh
# Forward-pass speed of `llmpack verify` on llama2-20m: tokens per second of the
# fp32 reference (bf16 weights) and of the int8 path for every quantized type,
# at --ctx 512 with 1 and 2 threads, and each run's peak RSS. Appends one JSON
# object per run to bench/results.json.
#
#   sh bench/bench_verify.sh [BUILD_DIR] [CHUNKS]     (default: 4 chunks)
#
# Tokens per second count every token of the evaluated chunks (chunks x ctx)
# over the whole command's wall time (loading and tokenizing included; the
# model's pages warm). The text is the first 64 KiB of wiki.test.raw (enough
# for 8 chunks): tokenizing the whole file would take most of the time and hide
# the forward pass.
cd "$(dirname "$0")/.." || exit 1
O=${1:-build}
chunks=${2:-4}
bin=./llmpack
[ "$O" = build ] || bin=$O/llmpack
model=../shared/models/llama2-20m/hf
text=../shared/text/wiki.test.raw
if [ ! -d "$model" ] || [ ! -f "$text" ]; then
    echo "verify bench skipped: $model or $text not found"
    exit 0
fi
if ! "$bin" verify --help 2>&1 | grep -q '^usage: llmpack verify'; then
    echo "verify bench skipped: '$bin verify' is not available in this build"
    exit 0
fi
work=bench/work/verify
rm -rf "$work"
mkdir -p "$work"
head -c 65536 "$text" > "$work/text.txt"
text=$work/text.txt
ref=$work/bf16.lpk
"$bin" convert "$model" -o "$ref" --force > "$work/convert.log" 2>&1 ||
    { cat "$work/convert.log"; exit 1; }
ctx=512
printf '%-6s %-8s %4s %10s %10s %12s %8s\n' type path thr seconds tokens/s "peak RSS MiB" PPL
for t in bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q6_k; do
    m=$ref
    path=fp32
    if [ "$t" != bf16 ]; then
        m=$work/$t.lpk
        path=int8
        "$bin" quantize "$ref" -o "$m" --type "$t" --pure --force -q > "$work/q.log" 2>&1 ||
            { cat "$work/q.log"; exit 1; }
    fi
    # quantize writes its output past the page cache (O_DIRECT): every run
    # starts warm, as the reference's does
    cat "$m" > /dev/null
    for thr in 1 2; do
        t0=$(date +%s.%N)
        /usr/bin/time -v "$bin" verify "$m" --text "$text" --ctx $ctx --chunks "$chunks" \
            --threads $thr --json -q > "$work/v.json" 2> "$work/v.time" ||
            { cat "$work/v.time"; exit 1; }
        t1=$(date +%s.%N)
        rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\).*/\1/p' "$work/v.time")
        # results[0].ppl (docs/verify.schema.json): the first "ppl" key
        ppl=$(sed -n 's/.*"ppl": \([0-9.e+-]*\).*/\1/p' "$work/v.json" | head -n 1)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        tps=$(awk -v s="$secs" -v n="$chunks" -v c="$ctx" 'BEGIN { printf "%.1f", n * c / s }')
        rss=$(awk -v r="${rss_kb:-0}" 'BEGIN { printf "%.1f", r / 1024 }')
        printf '{"bench": "verify", "model": "llama2-20m", "type": "%s", "path": "%s", "threads": %d, "ctx": %d, "tokens": %d, "seconds": %s, "tokens_per_s": %s, "peak_rss_mib": %s, "ppl": %s}\n' \
            "$t" "$path" "$thr" "$ctx" $((chunks * ctx)) "$secs" "$tps" "$rss" "${ppl:-null}" >> bench/results.json
        printf '%-6s %-8s %4s %10s %10s %12s %8s\n' "$t" "$path" "$thr" "$secs" "$tps" "$rss" "${ppl:--}"
    done
    [ "$m" = "$ref" ] || rm -f "$m"
done
rm -rf "$work"
