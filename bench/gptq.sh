#!/bin/sh
# GPTQ's time and peak RSS on LLaMA-2-7B's widths (make bench-gptq; a figure
# of make bench, tens of minutes on 2 cores). A synthetic
# model (bench/gen_ckpt --custom 4096,11008,LAYERS,32,32,32000, random bf16,
# own output matrix as in LLaMA-2-7B, llama2-20m's tokenizer from ../shared)
# as an f16 container, quantized by `llmpack quantize --type TYPE --method gptq
# --calib docs-calib.txt --chunks C` once for each C in CHUNKS, THREADS
# threads. Per run: wall and CPU seconds, peak RSS, the load average before and
# after (the machine may be shared). Appends {"bench": "gptq", ...} to
# bench/results.json, one line per run, then the extrapolation to the 7B
# shape (32 blocks) with 128 chunks of 512 tokens:
#   - memory: only the hidden states and the chunks' token ids grow with the
#     chunks (512 * (dim * 4 + 4) bytes a chunk, the measured slope is printed
#     beside it); nothing grows with the blocks (one block's Hessians, factors
#     and KV cache at a time; each tensor's mapped pages are released once it
#     is written), so peak(128) = peak(C) + (128 - C) * 512 * (dim * 4 + 4);
#   - time: a block's calibration pass grows with the chunks, its GPTQ sweeps
#     do not; the two runs give per block (LAYERS = 1) the fixed part A and the
#     part per chunk B in CPU seconds (wall seconds too when the load allows a
#     fit), and 32 * (A + 128 * B) is the estimate: an upper bound,
#     since A also holds what happens once per model (loading, token_embd, the
#     output matrix's GPTQ).
# Needs about 3 GB free in bench/work/ (skipped otherwise); removes all it
# wrote.
#
#   sh bench/gptq.sh [BUILD_DIR]
#   CHUNKS="1 3" LAYERS=1 TYPE=Q4_K_M THREADS=2 (defaults)
cd "$(dirname "$0")/.." || exit 1
O=${1:-build}
. bench/common.sh
chunks=${CHUNKS:-1 3}
layers=${LAYERS:-1}
type=${TYPE:-Q4_K_M}
threads=${THREADS:-2}
out=${BENCH_RESULTS:-bench/results.json}
shared=${LLMPACK_SHARED:-../shared}
tokdir=$shared/models/llama2-20m/hf
text=$shared/text/docs-calib.txt
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
if [ ! -f "$tokdir/tokenizer.model" ] || [ ! -f "$text" ]; then
    echo "gptq: needs $tokdir/tokenizer.model and $text; skipped"
    exit 0
fi
dim=4096
bench_work gptq $(( 2 + layers ))
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "machine: $cpu, $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s)
"$gen" --custom "$dim,11008,$layers,32,32,32000" --format hf --out "$work/hf" > /dev/null || exit 1
cp "$tokdir/tokenizer.model" "$work/hf/" || exit 1
"$bin" convert "$work/hf" -o "$work/in.lpk" --type f16 --name gptq-bench -q ||
    { echo "gptq: convert failed"; exit 1; }
rm -rf "$work/hf"
in=$work/in.lpk
echo "== gptq: 7B widths, $layers block(s), f16 ($(wc -c < "$in") bytes, made in" \
     "$(( $(date +%s) - t0 )) s), $type, chunks: $chunks, $threads threads"

load() { cut -d' ' -f1 /proc/loadavg; }
status=0
fit=
for c in $chunks; do
    rm -f "$work/out.lpk" "$work/t"
    l0=$(load)
    /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$bin" quantize "$in" -o "$work/out.lpk" \
        --type "$type" --method gptq --calib "$text" --chunks "$c" -q -t "$threads" ||
        { echo "gptq: quantize --chunks $c failed"; status=1; continue; }
    l1=$(load)
    set -- $(cat "$work/t")
    wall=$1 cpu_s=$(awk -v u="$2" -v s="$3" 'BEGIN { printf "%.1f", u + s }')
    rss=$(awk -v k="$4" 'BEGIN { printf "%.1f", k / 1024 }')
    echo "chunks $c: ${wall} s wall, ${cpu_s} s CPU, peak RSS ${rss} MiB (load $l0 -> $l1)"
    printf '{"bench": "gptq", "layers": %d, "dim": %d, "type": "%s", "threads": %s, "chunks": %d, "wall_s": %s, "cpu_s": %s, "peak_rss_mib": %s, "load": "%s %s"}\n' \
        "$layers" "$dim" "$type" "$threads" "$c" "$wall" "$cpu_s" "$rss" "$l0" "$l1" >> "$out"
    fit="$fit $c $wall $cpu_s $rss"
done
# the extrapolation from the first and last run
echo "$fit" | awk -v L="$layers" -v dim="$dim" -v out="$out" -v type="$type" '
{
    n = NF / 4
    if (n < 1) exit 1
    c1 = $1; w1 = $2; u1 = $3; r1 = $4
    c2 = $(4 * n - 3); w2 = $(4 * n - 2); u2 = $(4 * n - 1); r2 = $(4 * n)
    per_chunk_mib = 512 * (dim * 4 + 4) / 1048576
    rss = r2 + (128 - c2) * per_chunk_mib
    printf "memory: %.2f MiB a chunk (hidden states and ids)", per_chunk_mib
    if (c2 > c1) printf ", measured %.2f MiB a chunk", (r2 - r1) / (c2 - c1)
    printf "; peak RSS at 128 chunks: %.0f MiB (%.2f GiB)\n", rss, rss / 1024
    if (c2 > c1) {
        bw = (w2 - w1) / (c2 - c1) / L; aw = (w1 - c1 * bw * L) / L
        bu = (u2 - u1) / (c2 - c1) / L; au = (u1 - c1 * bu * L) / L
        tw = 32 * (aw + 128 * bw); tu = 32 * (au + 128 * bu)
        printf "time per block: %.0f s CPU fixed + %.1f s CPU a chunk; 7B with 128 chunks: at most" \
               " %.1f h CPU\n", au, bu, tu / 3600
        # wall seconds follow the load of the machine: their fit only when it is sane
        if (bw > 0 && aw > 0)
            printf "    wall: %.0f s fixed + %.1f s a chunk, at most %.1f h\n", aw, bw, tw / 3600
        else
            printf "    wall: no fit (the load changed between the runs)\n"
        wall = bw > 0 && aw > 0 ? sprintf("%.2f", tw / 3600) : "null"
        printf "{\"bench\": \"gptq-7b\", \"type\": \"%s\", \"chunks\": 128, \"peak_rss_mib\": %.0f, \"block_fixed_cpu_s\": %.1f, \"block_chunk_cpu_s\": %.2f, \"hours\": %s, \"cpu_hours\": %.2f}\n", \
               type, rss, au, bu, wall, tu / 3600 >> out
    } else {
        printf "{\"bench\": \"gptq-7b\", \"type\": \"%s\", \"chunks\": 128, \"peak_rss_mib\": %.0f}\n", type, rss >> out
    }
}' || status=1
exit $status
