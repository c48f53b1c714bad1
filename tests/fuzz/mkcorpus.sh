#!/usr/bin/env bash
# mkcorpus.sh: regenerates the generated seeds of tests/fuzz/corpus/gguf (tiny valid models from lfm2 mkmodel, hand-made headers).
# usage: tests/fuzz/mkcorpus.sh [path/to/lfm2]   (default build/lfm2; run from anywhere)
# The other corpora (request, tok, stop, toolcall) are small hand-written files, committed as they are;
# files named crash-* anywhere are regression inputs found by fuzzing: never delete them.
set -euo pipefail
cd "$(dirname "$0")/../.."
LFM2=${1:-build/lfm2}
out=tests/fuzz/corpus/gguf
mkdir -p "$out"
tiny=(--preset tiny --seed 7 --vocab-size 272 --ctx 64)
# Smallest real layouts: one conv and one attention layer, f32 / f16 / bf16 weights.
"$LFM2" mkmodel "${tiny[@]}" --hidden 8 --layers 2 --heads 2 --kv-heads 1 --ffn 8 \
  --attn-layers 1 --type f32 -o "$out/tiny-f32"
"$LFM2" mkmodel "${tiny[@]}" --hidden 8 --layers 2 --heads 2 --kv-heads 2 --ffn 16 \
  --attn-layers 0 --swa 4 --type f16 -o "$out/tiny-f16-swa"
"$LFM2" mkmodel "${tiny[@]}" --hidden 8 --layers 1 --heads 2 --kv-heads 1 --ffn 8 \
  --attn-layers none --type bf16 -o "$out/tiny-bf16-conv-only"
# Block formats need rows of 32 (q8_0, q4_0) or 256 (k-quants) weights.
"$LFM2" mkmodel "${tiny[@]}" --hidden 32 --layers 2 --heads 4 --kv-heads 2 --ffn 32 \
  --attn-layers 1 --type q8_0 -o "$out/tiny-q8_0"
"$LFM2" mkmodel "${tiny[@]}" --hidden 32 --layers 2 --heads 4 --kv-heads 2 --ffn 64 \
  --attn-layers 0 --type q4_0 -o "$out/tiny-q4_0"
# A vocab with merges (300 tokens: 28 merges over the 272 base tokens).
"$LFM2" mkmodel --preset tiny --seed 3 --vocab-size 300 --ctx 64 --hidden 8 --layers 2 \
  --heads 2 --kv-heads 1 --ffn 8 --attn-layers 1 --type f32 -o "$out/tiny-merges"
# Hand-made headers: GGUF v2 and v3 with no tensors; one string, one u32 array, one nested array.
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 24 & 255)))"; }
le64() { le32 "$1"; le32 0; }
str() { le64 ${#1}; printf '%s' "$1"; }
{ printf GGUF; le32 2; le64 0; le64 1; str general.architecture; le32 8; str lfm2; } \
  >"$out/header-v2-arch"
{ printf GGUF; le32 3; le64 0; le64 2; str a.arr; le32 9; le32 4; le64 3; le32 1; le32 2; le32 3
  str a.nested; le32 9; le32 9; le64 1; le32 5; le64 2; le32 -1; le32 7; } >"$out/header-v3-arrays"
ls -l "$out"
