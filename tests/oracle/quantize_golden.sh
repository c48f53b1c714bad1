#!/usr/bin/env bash
# quantize_golden.sh: regenerates tests/data/quantize/ from llama.cpp's own quantizer (the oracle's
# libllama, through tests/oracle/quantize_golden.c): per-tensor type + FNV-1a hash, and the sha256
# of each whole output file, for the reference models converted to each file type.
# Needs `make oracle` first. Test aid only: never part of build/lfm2.
set -euo pipefail
cd "$(dirname "$0")/../.."
LIBDIR=tests/oracle/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
[ -f "$LIBDIR/libllama.v0.5.0.so" ] || { echo "missing $LIBDIR/libllama.v0.5.0.so: run make oracle" >&2; exit 1; }
mkdir -p build/oracle tests/data/quantize
cc -std=c11 -Wall -Wextra -Wpedantic -D_GNU_SOURCE -O2 -I. -o build/oracle/quantize_golden \
   tests/oracle/quantize_golden.c engine/gguf.c quant/quant.c -ldl -lm
# llama.cpp's LLAMA_FTYPE_* value of each mix (as quant/quant.c's table)
declare -A FT=([F32]=0 [F16]=1 [BF16]=32 [Q8_0]=7 [Q4_0]=2 [Q4_1]=3 [Q5_0]=8 [Q5_1]=9
               [Q4_K_S]=14 [Q4_K_M]=15 [Q5_K_S]=16 [Q5_K_M]=17 [Q6_K]=18)
# input file : mixes
CASES=(
  "mini-F16:F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K"
  "mini-BF16:F32 F16 Q8_0 Q4_K_M"
  "mini-Q8_0:F32 Q4_0 Q4_K_M"
  "mini-Q4_K_M:F32 Q8_0 Q5_K_M"
  "mini-Q6_K:Q4_K_S Q6_K"
)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tensors=tests/data/quantize/tensors.txt files=tests/data/quantize/SHA256SUMS
{
  echo "# llama.cpp (node-llama-cpp 3.22.1, llama.cpp v0.5.0) llama_model_quantize outputs:"
  echo "# INPUT MIX name type fnv1a64(data); 'INPUT MIX file_type N' gives general.file_type"
} >"$tensors"
: >"$files"
for c in "${CASES[@]}"; do
  in=${c%%:*}
  for mix in ${c#*:}; do
    out="$tmp/$in.$mix.gguf"
    build/oracle/quantize_golden "$LIBDIR" "tests/data/models/$in.gguf" "$out" "${FT[$mix]}" "$mix" |
      sed "s/^/$in /" >>"$tensors"
    (cd "$tmp" && sha256sum "$in.$mix.gguf") >>"$files"
  done
done
# lfm2moe: a mini-moe file written by lfm2 mkmodel (the same arguments as tests/test_quantize.c and
# tests/e2e/quantize.sh), with its 3-D expert tensors, through llama.cpp's quantizer
MOE_MK=(--preset mini-moe --layers 3 --type f16 --seed 31)
[ -x build/lfm2 ] || { echo "missing build/lfm2: run make first" >&2; exit 1; }
build/lfm2 mkmodel "${MOE_MK[@]}" -o "$tmp/mini-moe-F16.gguf"
moe=tests/data/quantize/moe-tensors.txt
{
  echo "# llama.cpp (node-llama-cpp 3.22.1, llama.cpp v0.5.0) llama_model_quantize outputs of"
  echo "# lfm2 mkmodel ${MOE_MK[*]}: INPUT MIX name type fnv1a64(data)"
} >"$moe"
for mix in Q8_0 Q4_0 Q4_K_M Q5_K_M; do
  build/oracle/quantize_golden "$LIBDIR" "$tmp/mini-moe-F16.gguf" "$tmp/moe.$mix.gguf" "${FT[$mix]}" "$mix" |
    sed "s/^/mini-moe-F16 /" >>"$moe"
done
echo "wrote $moe ($(wc -l <"$moe") lines)"
echo "wrote $tensors ($(wc -l <"$tensors") lines) and $files ($(wc -l <"$files") files)"
