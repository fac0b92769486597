# Shared set-up of the bench scripts (sourced with `. bench/common.sh` from the
# repository root, after `O=` is set): the llmpack binary and bench/gen_ckpt of
# build folder O (exits when they are not built), and llama_tool.
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
