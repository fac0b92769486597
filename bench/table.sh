#!/bin/sh
# The summary table of a `make bench` run: every figure in bench/results.json
# (JSON Lines) as one row, each with its ratio to the machine's limit measured
# in the same run (read/write bandwidth, vector peak).
#
#   sh bench/table.sh [RESULTS]      (default: bench/results.json)
f=${1:-bench/results.json}
[ -f "$f" ] || { echo "bench/table.sh: $f not found (run make bench first)"; exit 1; }
awk '
function val(k,   m) {
    # flat objects only: "key": number or "key": "string"
    if (match($0, "\"" k "\": \"[^\"]*\"")) { m = substr($0, RSTART, RLENGTH); sub(/^[^:]*: "/, "", m); sub(/"$/, "", m); return m }
    if (match($0, "\"" k "\": [-0-9.eE+a-z]+")) { m = substr($0, RSTART, RLENGTH); sub(/^[^:]*: /, "", m); return m }
    return ""
}
function pct(x) { return x == "" ? "-" : sprintf("%.0f%%", 100 * x) }
{ b = val("bench") }
b == "machine" { printf "machine: %s, %s cores, %s (%s)\n", val("cpu"), val("cores"), val("simd"), val("date") }
b == "convert" {
    if (!nc++) { printf "\nconvert %-10s %7s %7s %7s %7s %7s %8s %8s %8s %8s\n", "model", "GB", "GB/s", "read", "write", "copy", "of read", "of write", "of copy", "RSS MiB" }
    printf "        %-10s %7.2f %7.3f %7.3f %7.3f %7.3f %8s %8s %8s %8.1f\n", val("model"), val("bytes") / 1e9, val("gb_per_s"),
        val("read_gb_per_s"), val("write_gb_per_s"), val("copy_gb_per_s"), pct(val("of_read")), pct(val("of_write")),
        pct(val("of_copy")), val("peak_rss_mib")
}
b == "quant" {
    if (!nq++) { printf "\nquant   %-6s %3s %10s %10s %8s %10s  %s\n", "type", "thr", "GB/s in", "read GB/s", "of read", "ns/weight", "path" }
    printf "        %-6s %3s %10.3f %10.2f %8s %10.2f  %s\n", val("type"), val("threads"), val("gb_per_s"),
        val("read_gb_per_s"), pct(val("ratio")), val("cpu_ns_per_weight"), val("path")
}
b == "quant-quality" {
    if (!nqq++) { printf "\nquality %-6s %8s %12s\n", "type", "bpw", "rel. RMSE" }
    printf "        %-6s %8.4f %12.5f\n", val("type"), val("bpw"), val("rel_rmse")
}
b == "peak" {
    if (!np++) { printf "\npeak    %3s %12s %12s\n", "thr", "fp32 GFLOP/s", "int8 GOP/s" }
    printf "        %3s %12.1f %12.1f\n", val("threads"), val("fp32_gflops"), val("int8_gops")
}
b == "kernels" {
    if (!nk++) { printf "\nkernels %-6s %-12s %-11s %3s %10s %10s %8s %9s\n", "type", "path", "shape", "thr", "ms/call", "G(FL)OP/s", "of peak", "of local" }
    r = val("gops"); if (r == "") r = val("gflops")
    printf "        %-6s %-12s %-11s %3s %10.2f %10.1f %8s %9s\n", val("type"), val("path"), val("shape"), val("threads"),
        val("ms_per_call"), r, pct(val("frac_of_peak")), pct(val("frac_of_local_peak"))
}
b == "quant-multi" {
    if (!nm++) { printf "\nquant-multi %-18s %3s %9s %9s %8s %8s %9s  %s\n", "types", "thr", "single s", "one run s", "saving", "CPU sav.", "same", "load" }
    printf "            %-18s %3s %9.2f %9.2f %8s %8s %9s  %s\n", val("types"), val("threads"), val("single_s"),
        val("multi_s"), pct(val("saving")), pct(val("cpu_saving")), val("same_bytes"), val("load")
}
b == "verify" {
    if (!nv++) { printf "\nverify  %-6s %-5s %3s %10s %9s %8s\n", "type", "path", "thr", "tokens/s", "RSS MiB", "PPL" }
    printf "        %-6s %-5s %3s %10.1f %9.1f %8s\n", val("type"), val("path"), val("threads"), val("tokens_per_s"),
        val("peak_rss_mib"), val("ppl")
}
b == "gptq" {
    if (!ng++) { printf "\ngptq    %-7s %6s %6s %9s %9s %9s  %s\n", "type", "blocks", "chunks", "wall s", "CPU s", "RSS MiB", "load" }
    printf "        %-7s %6s %6s %9.1f %9.1f %9.1f  %s\n", val("type"), val("layers"), val("chunks"), val("wall_s"),
        val("cpu_s"), val("peak_rss_mib"), val("load")
}
b == "gptq-7b" {
    printf "gptq 7B shape, 128 chunks (extrapolated): peak RSS %s MiB; per block %s + %s CPU s a chunk; at most %s CPU h\n",
        val("peak_rss_mib"), val("block_fixed_cpu_s") == "" ? "-" : val("block_fixed_cpu_s"),
        val("block_chunk_cpu_s") == "" ? "-" : val("block_chunk_cpu_s"), val("cpu_hours") == "" ? "-" : val("cpu_hours")
}
b == "calib" {
    if (!ncb++) { printf "\ncalib   %-12s %3s %10s %9s %12s %6s  %s\n", "model", "thr", "tokens/s", "RSS MiB", "imatrix t/s", "ratio", "load" }
    printf "        %-12s %3s %10.1f %9.1f %12s %6s  %s\n", val("model"), val("threads"), val("tokens_per_s"),
        val("peak_rss_mib"), val("imatrix_tokens_per_s") == "null" ? "-" : val("imatrix_tokens_per_s"),
        val("ratio") == "null" ? "-" : val("ratio"), val("load")
}
' "$f"
