#!/usr/bin/env bash
# broken_gguf_oracle.sh: lfm2's model validation agrees with llama.cpp (the oracle): variants of a
# reference model that lfm2 accepts (untied output, sliding window, no vocab_size, no rope base)
# load and run in llama.cpp, and a sample of the variants lfm2 rejects are rejected by llama.cpp
# too. `ALL=1` checks every variant and prints the full table (about 3 minutes). Where lfm2 is
# deliberately stricter than llama.cpp (as of 3.22.1): rope base NaN, special ids outside the
# vocab, merges that are not two tokens, lfm2.vocab_size disagreeing with the token list.
set -u
cd "$(dirname "$0")/../.."
: "${LFM2:?set LFM2 to the lfm2 binary}" "${TMPDIR:?}"
[ -d tests/oracle/node_modules/node-llama-cpp ] || { echo "FAIL: oracle not installed (make oracle)"; exit 1; }
gen=$(dirname "$LFM2")/tests/test_model
[ -x "$gen" ] || { echo "FAIL: $gen not built"; exit 1; }
"$gen" --write-broken "$TMPDIR/bad" --write-valid "$TMPDIR/good" >/dev/null || { echo "FAIL: $gen"; exit 1; }
fail=0
die() { echo "FAIL: $*"; fail=1; }

stricter="model-rope-base-nan model-tok-bos-outside-the-vocab model-tok-merge-of-one-token
model-tok-merge-of-unknown-tokens model-vocab_size-5000"
if [ -n "${ALL:-}" ]; then
  bad=("$TMPDIR"/bad/*.gguf)
else
  bad=()
  for n in missing-ffn_up attn_k-wrong-shape head_count_kv-short stray-tensor l_cache-4 \
           conv-layer-marked-attention; do bad+=("$TMPDIR/bad/model-$n.gguf"); done
fi
good=("$TMPDIR"/good/*.gguf)
[ ${#good[@]} -ge 4 ] || die "only ${#good[@]} valid variants"

# One node process for many files; llama.cpp aborts the process on some inputs (GGML_ASSERT),
# which counts as a rejection: the file is marked and the rest run in a new process.
out=$TMPDIR/verdicts
: >"$out"
rest=("${good[@]}" "${bad[@]}")
while [ ${#rest[@]} -gt 0 ]; do
  node tests/oracle/broken_gguf_oracle.mjs "${rest[@]}" >>"$out" 2>"$TMPDIR/node.err"
  next=()
  for f in "${rest[@]}"; do grep -qF " $f" "$out" || next+=("$f"); done
  if [ ${#next[@]} -gt 0 ]; then
    echo "crashed ${next[0]}: llama.cpp aborted: $(grep -m1 -o 'GGML_ASSERT.*' "$TMPDIR/node.err")" >>"$out"
    next=("${next[@]:1}")
  fi
  rest=("${next[@]}")
done

for f in "${good[@]}"; do
  grep -qxF "ok $f" "$out" || die "llama.cpp does not load $(basename "$f"), which lfm2 accepts: $(grep -F " $f" "$out")"
  "$LFM2" info -m "$f" >/dev/null 2>"$TMPDIR/err" || die "lfm2 rejects $(basename "$f"): $(cat "$TMPDIR/err")"
done
for f in "${bad[@]}"; do
  b=$(basename "$f" .gguf)
  "$LFM2" info -m "$f" >/dev/null 2>&1 && die "lfm2 accepts $b"
  if grep -qxF "ok $f" "$out"; then
    case " $(echo $stricter) " in
      *" $b "*) echo "note: $b: llama.cpp loads it, lfm2 rejects it (deliberately stricter)";;
      *) die "$b: llama.cpp loads it but lfm2 rejects it";;
    esac
  fi
done
sed "s|$TMPDIR/||" "$out"
exit $fail
