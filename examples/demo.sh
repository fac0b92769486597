#!/bin/sh
# The main job on the demo model shipped here (stories260K, f16, llama2.c's
# MIT-licensed weights in Hugging Face layout): convert it, quantize it two ways,
# and measure what the quantization cost against the original.
set -e
cd "$(dirname "$0")/.."
out=${OUT:-examples/out}
mkdir -p "$out"
set -x
./llmpack convert examples/stories260K -o "$out/stories260K.f16.lpk" --force
./llmpack quantize "$out/stories260K.f16.lpk" -o "$out/stories260K.q8_0.lpk" --type q8_0 --force
./llmpack quantize "$out/stories260K.f16.lpk" -o "$out/stories260K.q4_k_m.lpk" --type q4_k_m --force
./llmpack info "$out/stories260K.q4_k_m.lpk"
./llmpack verify "$out/stories260K.q8_0.lpk" "$out/stories260K.q4_k_m.lpk" \
    --ref "$out/stories260K.f16.lpk" --text examples/TinyStories-valid-sample.txt --ctx 128
