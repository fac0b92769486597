#!/bin/sh
# One read, many outputs (make bench-quant-multi; a figure of make bench): a
# synthetic model of TinyLlama-1.1B's shapes (bench/gen_ckpt --shape 1b, random
# bf16) as an f16 container, quantized to TYPES by one
# `llmpack quantize IN --type T1,T2,... -o DIR/` and by one run per type
# (`-o DIR/<name>-<T>.lpk`), THREADS threads, the page cache warm (the input is
# read once before each run). Per round: wall and CPU seconds and peak RSS of
# the three single runs together and of the one run, the load average before
# and after (the machine may be shared: a busy second core slows 2-thread runs),
# and whether every output is the same bytes both ways. Appends
# {"bench": "quant-multi", ...} to bench/results.json, one line per round.
# Needs about 11 GB free in bench/work/ (skipped otherwise); removes all it
# wrote.
#
#   sh bench/quant_multi.sh [BUILD_DIR] [ROUNDS]
#   TYPES=Q4_K_M,Q5_K_M,Q8_0 THREADS=2 (defaults)
cd "$(dirname "$0")/.." || exit 1
O=${1:-build}
rounds=${2:-1}
. bench/common.sh
types=${TYPES:-Q4_K_M,Q5_K_M,Q8_0}
threads=${THREADS:-2}
out=${BENCH_RESULTS:-bench/results.json}
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
bench_work quant-multi 11
mkdir -p "$work/single" "$work/multi"
t0=$(date +%s)
bench_1b "$work/in.lpk" --no-tokenizer 2> /dev/null || { echo "quant-multi: convert failed"; exit 1; }
in=$work/in.lpk
echo "== quant-multi: 1.1B shape as f16 ($(wc -c < "$in") bytes, made in $(( $(date +%s) - t0 )) s), $types, $threads threads"

load() { cut -d' ' -f1 /proc/loadavg; }
# run LABEL ARGS...: appends "wall user sys maxrss_kib" of the command to $work/LABEL.t
run() {
    label=$1
    shift
    cat "$in" > /dev/null
    /usr/bin/time -f "%e %U %S %M" -a -o "$work/$label.t" "$bin" "$@" -q -t "$threads" || return 1
}
sum() { awk '{ w += $1; c += $2 + $3; if ($4 > m) m = $4 } END { printf "%.2f %.2f %.1f", w, c, m / 1024 }' "$1"; }

status=0
r=1
while [ "$r" -le "$rounds" ]; do
    rm -f "$work"/*.t "$work"/single/* "$work"/multi/*
    l0=$(load)
    for t in $(echo "$types" | tr ',' ' '); do
        run single quantize "$in" --type "$t" -o "$work/single/m-$t.lpk" || status=1
    done
    l1=$(load)
    run multi quantize "$in" --type "$types" -o "$work/multi/" || status=1
    l2=$(load)
    same=true
    for t in $(echo "$types" | tr ',' ' '); do
        cmp -s "$work/single/m-$t.lpk" "$work/multi/m-$t.lpk" || same=false
    done
    [ "$same" = true ] || { echo "quant-multi: outputs differ"; status=1; }
    echo "round $r, single runs (wall user sys maxrss_kib), one per type:"
    sed 's/^/    /' "$work/single.t"
    set -- $(sum "$work/single.t")
    sw=$1 sc=$2 sr=$3
    set -- $(sum "$work/multi.t")
    mw=$1 mc=$2 mr=$3
    saving=$(awk -v s="$sw" -v m="$mw" 'BEGIN { printf "%.3f", (s > 0 ? 1 - m / s : 0) }')
    csaving=$(awk -v s="$sc" -v m="$mc" 'BEGIN { printf "%.3f", (s > 0 ? 1 - m / s : 0) }')
    echo "round $r: single runs ${sw} s wall, ${sc} s CPU, peak RSS ${sr} MiB (load $l0 -> $l1);" \
         "one run ${mw} s wall, ${mc} s CPU, peak RSS ${mr} MiB (load -> $l2);" \
         "saving ${saving} wall, ${csaving} CPU; same bytes: $same"
    printf '{"bench": "quant-multi", "round": %d, "types": "%s", "threads": %s, "single_s": %s, "single_cpu_s": %s, "single_rss_mib": %s, "multi_s": %s, "multi_cpu_s": %s, "multi_rss_mib": %s, "saving": %s, "cpu_saving": %s, "load": "%s %s %s", "same_bytes": %s}\n' \
        "$r" "$types" "$threads" "$sw" "$sc" "$sr" "$mw" "$mc" "$mr" "$saving" "$csaving" \
        "$l0" "$l1" "$l2" "$same" >> "$out"
    r=$((r + 1))
done
exit $status
