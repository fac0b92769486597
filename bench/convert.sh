#!/bin/sh
# Convert benchmark: generates one synthetic LLaMA checkpoint at a time
# (bench/gen_ckpt: random bf16, true shapes) in bench/work/, runs
# `llmpack convert` under /usr/bin/time -v, reports GB/s and peak RSS, and
# deletes it before the next one.
#
#   sh bench/convert.sh [BUILD_DIR] [MODEL ...]     (default: 7b 13b-meta)
#
# MODEL is tiny, 1b, 7b or 13b for Hugging Face layout (safetensors shards as
# the real repos have them: 2 for 7B, 3 for 13B), or the same with -meta for
# Meta's layout (params.json + consolidated.NN.pth torch zips split the way
# Meta splits them: 1 shard for 7B, 2 for 13B).
#
# Each model needs about twice its size in free space (checkpoint + output);
# a model that does not fit is skipped with a message. Results are appended to
# bench/results.json (one JSON object per line).
#
# The machine's limits for the same bytes, measured in the same run: read
# bandwidth = `cat` of the generated checkpoint from disk, write bandwidth =
# `dd` of as many bytes to the same disk with fdatasync at the end (convert
# fsyncs its output too), copy bandwidth = the checkpoint's files `cat` into
# one file on the same disk, fdatasync at the end (reads and writes the bytes
# convert reads and writes, and does nothing else). Where /proc/sys/vm/drop_caches is writable (root),
# the page cache is dropped before the read and before the convert so both
# start cold; otherwise the figures say "cache": "warm".
set -e
cd "$(dirname "$0")/.."
O=${1:-build}
[ $# -gt 0 ] && shift
models=${*:-7b 13b-meta}
bin=./llmpack
[ "$O" = build ] || bin=$O/llmpack
gen=$O/bench/gen_ckpt
[ -x "$bin" ] && [ -x "$gen" ] || { echo "build first: make all $gen"; exit 1; }
work=bench/work
mkdir -p "$work"
cold() {
    sync
    if [ -w /proc/sys/vm/drop_caches ] && echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; then
        cache=cold
    else
        cache=warm
    fi
}
now() { date +%s.%N; }
for m in $models; do
    shape=${m%-meta} format=hf
    [ "$shape" = "$m" ] || format=meta
    case $shape in
        tiny) need_gb=1 ;;
        1b) need_gb=5 ;;
        7b) need_gb=28 ;;
        13b) need_gb=54 ;;
        *) echo "unknown model $m (tiny, 1b, 7b, 13b, optionally with -meta)"; continue ;;
    esac
    avail_gb=$(df -Pk "$work" | awk 'NR==2 { printf "%d", $4 / 1048576 }')
    if [ "$avail_gb" -lt "$need_gb" ]; then
        echo "skip $m: needs ${need_gb} GB free in $work, $avail_gb GB available"
        continue
    fi
    src=$work/$m-src out=$work/$m.lpk
    rm -rf "$src" "$out"
    t0=$(date +%s)
    "$gen" --shape "$shape" --format "$format" --out "$src"
    echo "generated in $(( $(date +%s) - t0 )) s"
    # the machine's limits for these bytes: read them back, write as many
    cold
    t0=$(now)
    find "$src" -type f -exec cat {} + > /dev/null
    t1=$(now)
    src_bytes=$(du -sb "$src" | cut -f1)
    read_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    t0=$(now)
    dd if=/dev/zero of="$work/dd.tmp" bs=1M count=$(( src_bytes / 1048576 + 1 )) conv=fdatasync 2>/dev/null
    t1=$(now)
    rm -f "$work/dd.tmp"
    write_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    # a plain copy of the same files (what convert does at the least)
    cold
    t0=$(now)
    find "$src" -type f -exec cat {} + | dd of="$work/dd.tmp" bs=1M iflag=fullblock conv=fdatasync 2>/dev/null
    t1=$(now)
    rm -f "$work/dd.tmp"
    copy_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    cold
    /usr/bin/time -v "$bin" convert "$src" -o "$out" --force --json --no-tokenizer \
        > "$work/$m.json" 2> "$work/$m.time" || { cat "$work/$m.time"; rm -rf "$src" "$out"; exit 1; }
    bytes=$(sed -n 's/.*"bytes_in": \([0-9]*\).*/\1/p' "$work/$m.json")
    secs=$(sed -n 's/.*"seconds": \([0-9.e+-]*\).*/\1/p' "$work/$m.json")
    rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\).*/\1/p' "$work/$m.time")
    user=$(sed -n 's/.*User time (seconds): \([0-9.]*\).*/\1/p' "$work/$m.time")
    sys=$(sed -n 's/.*System time (seconds): \([0-9.]*\).*/\1/p' "$work/$m.time")
    line=$(awk -v m="$m" -v b="$bytes" -v s="$secs" -v r="$rss_kb" -v u="$user" -v y="$sys" \
               -v sb="$src_bytes" -v rs="$read_s" -v ws="$write_s" -v cs="$copy_s" -v c="$cache" 'BEGIN {
        rbw = sb / rs / 1e9; wbw = 1048576 * (int(sb / 1048576) + 1) / ws / 1e9; cbw = b / s / 1e9; pbw = sb / cs / 1e9
        printf "{\"bench\": \"convert\", \"model\": \"%s\", \"bytes\": %.0f, \"seconds\": %.2f, \"gb_per_s\": %.3f, \"peak_rss_mib\": %.1f, \"user_s\": %.1f, \"sys_s\": %.1f, \"cache\": \"%s\", \"read_gb_per_s\": %.3f, \"write_gb_per_s\": %.3f, \"copy_gb_per_s\": %.3f, \"of_read\": %.2f, \"of_write\": %.2f, \"of_copy\": %.2f}",
               m, b, s, cbw, r / 1024, u, y, c, rbw, wbw, pbw, cbw / rbw, cbw / wbw, cbw / pbw }')
    echo "$line"
    echo "$line" >> bench/results.json
    rm -rf "$src" "$out" "$work/$m.json" "$work/$m.time"
done
