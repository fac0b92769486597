#!/bin/sh
# make bench: every benchmark figure, printed as tables and collected in
# bench/results.json (JSON Lines: one object per line; "bench" names the figure).
#
#   sh bench/run.sh [BUILD_DIR] [machine|convert|quant|kernels|verify|calib|gptq ...]
#
# With no figure named, all run and results.json starts afresh; naming figures
# (make bench-convert, make bench-quant) appends theirs. The figures:
#   convert  bench/convert.sh (synthetic checkpoints through llmpack convert)
#   quant    bench/quant.sh (quantizer speed and quality)
#   kernels  bench_kernels: vf_matmul against the machine's measured peak
#   verify   bench/bench_verify.sh: forward-pass tokens/s on llama2-20m
#   quant-multi  bench/quant_multi.sh: quantize --type A,B,C -o DIR/ against
#            one run per type on the 1.1B shape
#   calib    bench/bench_calib.sh: llmpack calibrate's tokens/s on llama2-20m
#            (and llama-imatrix's where LLAMA_CPP_DIR is set)
#   peer-quant  bench/peer_quant.sh: llmpack quantize against llama-quantize,
#            every recipe, 1.1B shape (only where LLAMA_CPP_DIR is set)
#   peer-verify  bench/peer_verify.sh: llmpack verify against llama-perplexity
#            on the same GGUF files, 1.1B shape (only where LLAMA_CPP_DIR is set)
#   gptq     bench/gptq.sh: quantize --method gptq on one block of 7B widths,
#            time and peak RSS, extrapolated to 32 blocks and 128 chunks
# A figure whose script is absent is skipped with a message.
cd "$(dirname "$0")/.." || exit 1
O=${1:-build}
[ $# -gt 0 ] && shift
out=bench/results.json
# the threads wait the way `llmpack` makes them wait (cli/main.c): passively,
# so a figure taken on a machine with other work does not measure spinning
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
if [ $# -eq 0 ]; then
    # convert last: it writes and deletes tens of GB, and the writeback and
    # freeing that follow disturb CPU-bound figures for minutes
    set -- machine quant kernels verify calib quant-multi peer-quant peer-verify gptq convert
    : > "$out"
fi
t_all=$(date +%s)
status=0

json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }

for fig in "$@"; do
    echo "== $fig"
    t0=$(date +%s)
    case $fig in
    machine)
        cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
        fam=$(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
        mod=$(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
        mhz=$(sed -n 's/^cpu MHz[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
        cpu="$cpu (family $fam model $mod, ${mhz%.*} MHz)"
        mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
        cpu="$cpu, $mem"
        cores=$(nproc)
        simd=$("$O"/bench/bench_kernels --describe)
        echo "CPU: $cpu, $cores cores, SIMD paths: $simd"
        printf '{"bench": "machine", "cpu": "%s", "cores": %d, "simd": "%s", "date": "%s"}\n' \
            "$(json_str "$cpu")" "$cores" "$(json_str "$simd")" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$out"
        ;;
    convert|quant)
        if [ -f "bench/$fig.sh" ]; then
            sh "bench/$fig.sh" "$O" || { echo "$fig benchmark failed"; status=1; }
        else
            echo "$fig: bench/$fig.sh not present, skipped"
        fi
        ;;
    kernels)
        "$O"/bench/bench_kernels --jsonl "$out" || { echo "kernel benchmark failed"; status=1; }
        ;;
    verify)
        sh bench/bench_verify.sh "$O" || { echo "verify benchmark failed"; status=1; }
        ;;
    calib)
        sh bench/bench_calib.sh "$O" || { echo "calib benchmark failed"; status=1; }
        ;;
    quant-multi)
        sh bench/quant_multi.sh "$O" || { echo "quant-multi benchmark failed"; status=1; }
        ;;
    peer-quant)
        sh bench/peer_quant.sh "$O" || { echo "peer-quant benchmark failed"; status=1; }
        ;;
    peer-verify)
        sh bench/peer_verify.sh "$O" || { echo "peer-verify benchmark failed"; status=1; }
        ;;
    gptq)
        sh bench/gptq.sh "$O" || { echo "gptq benchmark failed"; status=1; }
        ;;
    *)
        echo "unknown figure $fig (machine, convert, quant, kernels, verify, calib, quant-multi, peer-quant, peer-verify, gptq)"
        status=2
        ;;
    esac
    echo "-- $fig: $(( $(date +%s) - t0 )) s"
done
echo "== all figures: $(( $(date +%s) - t_all )) s; results in $out"
echo
sh bench/table.sh "$out"
exit $status
