#!/usr/bin/env bash
# gram.sh: what a json_schema constraint costs (issue 14, target 7): builds build/gram_bench and
# runs it on the 350M-shape Q4_0 synthetic model (made like vs-llama.sh makes it when missing),
# single sequence and 8 batched, plus a 100-property schema's compile time.
#   tests/bench/gram.sh [-m MODEL] [-t THREADS] [-n STEPS] [-r ROUNDS]
# The decode-step ratio is wall time (noisy on a busy machine); the sampling overhead is the
# sampling thread's CPU time, which other load does not inflate much.
set -eu
cd "$(dirname "$0")/../.."
model=build/bench/lfm2-350m-q4_0.gguf threads=2 steps=64 rounds=5
while getopts m:t:n:r: o; do
  case $o in m) model=$OPTARG ;; t) threads=$OPTARG ;; n) steps=$OPTARG ;; r) rounds=$OPTARG ;; *) exit 2 ;; esac
done
make --no-print-directory build/lfm2 build/gram_bench >&2
if [ ! -f "$model" ]; then
  mkdir -p "$(dirname "$model")"
  echo "making $model (lfm2 mkmodel --preset 350m --type q4_0 --seed 1)..." >&2
  build/lfm2 mkmodel --preset 350m --type q4_0 --seed 1 -o "$model" >&2
fi
build/gram_bench "$model" -t "$threads" -b 1,8 -n "$steps" -r "$rounds"
