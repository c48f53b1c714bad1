#!/usr/bin/env bash
# mkmodel_oracle.sh: files written by `lfm2 mkmodel` load and run in llama.cpp (the oracle), with
# peaked, non-degenerate next-token distributions (tests/oracle/mkmodel_check.mjs); CLI errors.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${LFM2:?LFM2 must point at the lfm2 binary}"
T=${TMPDIR:-/tmp}
if [ ! -d tests/oracle/node_modules/node-llama-cpp ]; then
  echo "FAIL: the oracle is not installed (tests/oracle/node_modules/node-llama-cpp missing): run 'make oracle'" >&2
  exit 1
fi
fail() { echo "FAIL: $*" >&2; exit 1; }

# CLI: bad input gives a message naming the problem and a non-zero status
expect_err() { # pattern, args...
  local pat=$1; shift
  if "$LFM2" mkmodel "$@" >"$T/out" 2>"$T/err"; then fail "mkmodel $* succeeded"; fi
  grep -q -- "$pat" "$T/err" || fail "mkmodel $*: message lacks '$pat': $(cat "$T/err")"
}
expect_err "preset 'huge' unknown" --preset huge -o "$T/x.gguf"
expect_err "--type 'q3_k' unknown" --preset tiny --type q3_k -o "$T/x.gguf"
expect_err "-o is required" --preset tiny
expect_err "--vocab-size '100'" --preset tiny --vocab-size 100 -o "$T/x.gguf"
expect_err "n_head = 3" --preset tiny --heads 3 -o "$T/x.gguf"
expect_err "--attn-layers '9'" --preset tiny --attn-layers 9 -o "$T/x.gguf"
expect_err "no-such.txt" --preset tiny --train "$T/no-such.txt" -o "$T/x.gguf"
expect_err "--vocab-size and --vocab-from exclude" --preset tiny --vocab-size 500 --vocab-from tests/data/models/mini-F16.gguf -o "$T/x.gguf"
[ ! -e "$T/x.gguf" ] || fail "a failed mkmodel left $T/x.gguf behind"

# determinism from the command line: same seed, same bytes; another seed, other bytes
"$LFM2" mkmodel --preset tiny --seed 4 -o "$T/a.gguf"
"$LFM2" mkmodel --preset tiny --seed 4 -o "$T/b.gguf"
"$LFM2" mkmodel --preset tiny --seed 5 -o "$T/c.gguf"
cmp -s "$T/a.gguf" "$T/b.gguf" || fail "same seed, different files"
! cmp -s "$T/a.gguf" "$T/c.gguf" || fail "different seeds, same file"

files=()
for t in f32 f16 bf16 q8_0 q4_0 q4_k_m q5_k_m q6_k; do
  "$LFM2" mkmodel --preset tiny --type "$t" --seed 21 -o "$T/tiny-$t.gguf"
  files+=("$T/tiny-$t.gguf")
done
"$LFM2" mkmodel --preset tiny --swa 8 --seed 22 -o "$T/tiny-swa.gguf"
"$LFM2" mkmodel --preset tiny --hidden 256 --layers 5 --heads 8 --kv-heads 2 --ffn 512 \
  --attn-layers 0,3 --vocab-size 2000 --ctx 4096 --seed 23 -o "$T/custom.gguf"
printf 'Some text of our own to train on: the cat sat on the mat, twice. 12345\n' >"$T/train.txt"
"$LFM2" mkmodel --preset tiny --train "$T/train.txt" --vocab-size 600 --seed 24 -o "$T/trained.gguf"
"$LFM2" mkmodel --preset tiny --vocab-from tests/data/models/mini-F16.gguf --seed 25 -o "$T/vfrom.gguf"
"$LFM2" mkmodel --preset mini --type f16 --seed 26 -o "$T/mini-f16.gguf"
"$LFM2" mkmodel --preset mini --type q4_k_m --seed 27 -o "$T/mini-q4_k_m.gguf"
"$LFM2" mkmodel --preset 350m --type q4_0 --seed 28 -o "$T/350m-q4_0.gguf"
# lfm2moe presets (the 8b-a1b and 24b-a2b shapes are too big for a test: made by tests/bench)
"$LFM2" mkmodel --preset tiny-moe --type q8_0 --seed 29 -o "$T/tiny-moe-q8_0.gguf"
"$LFM2" mkmodel --preset tiny-moe --swa 8 --seed 30 -o "$T/tiny-moe-swa.gguf"
"$LFM2" mkmodel --preset mini-moe --type q4_k_m --seed 31 -o "$T/mini-moe-q4_k_m.gguf"
"$LFM2" info -m "$T/mini-moe-q4_k_m.gguf" >"$T/moe.info"
grep -q "^experts: 12 per MoE layer, 3 used per token" "$T/moe.info" ||
  fail "lfm2 info on mini-moe does not show its experts"
files+=("$T/tiny-swa.gguf" "$T/custom.gguf" "$T/trained.gguf" "$T/vfrom.gguf" \
        "$T/mini-f16.gguf" "$T/mini-q4_k_m.gguf" "$T/350m-q4_0.gguf" \
        "$T/tiny-moe-q8_0.gguf" "$T/tiny-moe-swa.gguf" "$T/mini-moe-q4_k_m.gguf")

node tests/oracle/mkmodel_check.mjs "${files[@]}"
# and the checks can fail: a copy with a 1000x output gain (one-hot distributions) must not pass
node tests/oracle/mkmodel_check.mjs --negative "$T/tiny-f16.gguf"
