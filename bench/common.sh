# Shared set-up of the bench scripts (sourced with `. bench/common.sh` from the
# repository root, after `O=` is set): the llmpack binary and bench/gen_ckpt of
# build folder O (exits when they are not built), llama_tool, bench_work and
# bench_1b.
bin=./llmpack
[ "$O" = build ] || bin=$O/llmpack
gen=$O/bench/gen_ckpt
[ -x "$bin" ] && [ -x "$gen" ] || { echo "build first: make all $gen"; exit 1; }

# llama_tool NAME: the path of llama.cpp's program NAME under $LLAMA_CPP_DIR
# (build/bin/, bin/ or the folder itself), or nothing when LLAMA_CPP_DIR is
# unset or has no such program.
llama_tool() {
    [ -n "$LLAMA_CPP_DIR" ] || return 0
    for b in "$LLAMA_CPP_DIR/build/bin/$1" "$LLAMA_CPP_DIR/bin/$1" "$LLAMA_CPP_DIR/$1"; do
        [ -x "$b" ] && { echo "$b"; return 0; }
    done
}

# bench_work NAME GB: $work = a fresh bench/work/NAME, removed when the script
# ends, if GB gigabytes are free in bench/work; else says so and exits 0 (the
# figure is skipped).
bench_work() {
    mkdir -p bench/work
    avail_gb=$(df -Pk bench/work | awk 'NR==2 { printf "%d", $4 / 1048576 }')
    if [ "$avail_gb" -lt "$2" ]; then
        echo "$1: needs $2 GB free in bench/work, $avail_gb GB available; skipped"
        exit 0
    fi
    work=bench/work/$1
    rm -rf "$work"
    mkdir -p "$work"
    trap 'rm -rf "$work"' EXIT
    trap 'exit 1' INT TERM
}

# bench_1b OUT [CONVERT_OPTION...]: a random bf16 model of TinyLlama-1.1B's
# shapes (gen_ckpt --shape 1b, in $work/hf, removed after) converted to OUT at
# f16 (a container, or a GGUF by OUT's name) with the options given.
bench_1b() {
    b1_out=$1
    shift
    "$gen" --shape 1b --format hf --out "$work/hf" > /dev/null &&
        "$bin" convert "$work/hf" -o "$b1_out" --type f16 --name m -q "$@"
    b1_st=$?
    rm -rf "$work/hf"
    return $b1_st
}
