#!/usr/bin/env bash
# gen_quant_golden.sh: rebuilds tests/data/quant/*.bin from ggml itself (the oracle's libggml-base.so).
# Needs `make oracle` first. The tool is a test aid: it is never part of build/lfm2.
set -euo pipefail
cd "$(dirname "$0")/../.."
LIBDIR=tests/oracle/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
[ -f "$LIBDIR/libggml-base.so" ] || { echo "missing $LIBDIR/libggml-base.so: run make oracle" >&2; exit 1; }
mkdir -p build/oracle tests/data/quant
cc -std=c11 -Wall -Wextra -Wpedantic -D_GNU_SOURCE -O2 -o build/oracle/gen_quant_golden \
   tests/oracle/gen_quant_golden.c -ldl -lm
build/oracle/gen_quant_golden "$LIBDIR" tests/data/quant
