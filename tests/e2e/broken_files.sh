#!/usr/bin/env bash
# broken_files.sh: `lfm2 info -m` rejects every broken GGUF with "error: ..." and exit 1, never crashes.
# Broken files come from the unit-test generators (--write-broken) and from head/dd on a real model.
set -u
cd "$(dirname "$0")/../.."
: "${LFM2:?set LFM2 to the lfm2 binary}" "${TMPDIR:?}"
bin=$(dirname "$LFM2")/tests
dir=$TMPDIR/broken
mkdir -p "$dir"
fail=0
die() { echo "FAIL: $*"; fail=1; }

for gen in test_gguf test_model; do
  [ -x "$bin/$gen" ] || { echo "FAIL: $bin/$gen not built"; exit 1; }
  "$bin/$gen" --write-broken "$dir" >"$TMPDIR/$gen.log" 2>&1 || { cat "$TMPDIR/$gen.log"; die "$gen --write-broken"; }
done

M=tests/data/models/mini-Q4_0.gguf
size=$(stat -c %s "$M")
# truncations of a real model: header, metadata, tensor infos, data, last byte
for n in 0 1 3 4 7 8 16 23 24 31 32 40 63 64 65 100 500 1000 5000 20000 50000 100000 \
         1000000 $((size/2)) $((size-4096)) $((size-1)); do
  head -c "$n" "$M" >"$dir/head$n.gguf"
done
# byte patches: patch NAME OFFSET PRINTF-BYTES
patch() { cp "$M" "$dir/$1.gguf"; printf "$3" | dd of="$dir/$1.gguf" bs=1 seek="$2" conv=notrunc status=none; }
patch magic 0 'GGML'
patch version1 4 '\001\000\000\000'
patch version9 4 '\011\000\000\000'
patch bigendian 4 '\000\000\000\003'
patch ntensors_huge 8 '\377\377\377\377\377\377\377\177'
patch nkv_huge 16 '\377\377\377\377\377\377\377\377'
patch keylen_huge 24 '\000\000\000\000\000\001\000\000'
patch key_ctrl 33 '\001'
patch arch_value 64 'lfmX'
patch arch_type 52 '\004\000\000\000'
# a directory and a missing file
mkdir -p "$dir/adir.gguf"

# the control: every reference model passes and is described right (shape in its README)
for ref in tests/data/models/*.gguf; do
  out=$("$LFM2" info -m "$ref" 2>&1) || die "valid model $ref rejected: $out"
  for want in "gguf: version 3, $(stat -c %s "$ref") bytes" "architecture: lfm2" \
      "n_embd 256, n_layer 6, n_ff 512, n_head 4, head_dim 64, n_vocab 4096" \
      "n_ctx_train 32768, l_cache 3, sliding_window 0, rms_eps 1e-05, rope_base 1e+06" \
      "layers: 4 conv + 2 attention: 0 conv, 1 conv, 2 attn(kv=2), 3 conv, 4 attn(kv=2), 5 conv" \
      "output: tied to token_embd.weight" "tokenizer: model gpt2, pre lfm2, vocab 4096, merges 3824" \
      "bos 1 '<|startoftext|>', eos 7 '<|im_end|>', pad 0 '<|pad|>', add_bos true" \
      "chat template: present" "blk.5.shortconv.out_proj.weight"; do
    echo "$out" | grep -qF -- "$want" || die "$ref: info lacks: $want"
  done
done
out=$("$LFM2" info -m tests/data/models/mini-Q4_0.gguf)
echo "$out" | grep -qE "^tensor types: f32 x21 .*, q4_0 x34 .*, q6_K x1 " || die "Q4_0 type histogram: $(echo "$out" | grep '^tensor types')"
echo "$out" | grep -qE "^  token_embd.weight +q6_K +\[256, 4096\]" || die "Q4_0 embedding line"

# usage errors: 2; a missing -m is a failure (1), as docs/cli.md says
"$LFM2" info --bogus >/dev/null 2>&1; [ $? -eq 2 ] || die "info --bogus: expected exit 2"
"$LFM2" info -m >/dev/null 2>&1; [ $? -eq 2 ] || die "info -m (no file): expected exit 2"
"$LFM2" info >/dev/null 2>"$TMPDIR/err"; [ $? -eq 1 ] || die "info without -m: expected exit 1"
grep -q "^error: no model file" "$TMPDIR/err" || die "info without -m: message"
"$LFM2" info --help | grep -q "usage: lfm2 info -m FILE" || die "info --help"

n=0
for f in "$dir"/*.gguf "$dir/missing.gguf"; do
  n=$((n+1))
  "$LFM2" info -m "$f" >"$TMPDIR/out" 2>"$TMPDIR/err"
  rc=$?
  base=$(basename "$f")
  [ "$rc" -eq 1 ] || die "$base: exit status $rc, expected 1"
  grep -q "^error: ." "$TMPDIR/err" || die "$base: no 'error:' message: $(head -c 300 "$TMPDIR/err")"
  if grep -q "AddressSanitizer\|runtime error\|LeakSanitizer" "$TMPDIR/err"; then
    die "$base: sanitizer report"; head -n 30 "$TMPDIR/err"
  fi
  [ -s "$TMPDIR/out" ] && die "$base: printed to stdout despite failing"
  cat "$TMPDIR/err" >>"$TMPDIR/all_errors"
done
# messages name the field and the limit, from each layer: gguf, model, tokenizer
for want in "unsupported GGUF version 1" "kv count 18446744073709551615 too large" \
    "missing key 'lfm2moe.embedding_length'" "'lfm2.embedding_length_out' is present" \
    "missing tensor 'blk.3.ffn_up.weight'" "'lfm2.shortconv.l_cache' = 0 outside 1..64" \
    "tokenizer: tokenizer.ggml.bos_token_id = 5000: outside the vocab" \
    "not two tokens separated by a space" "data ends at" "not a regular file" \
    "No such file or directory"; do
  grep -qF "$want" "$TMPDIR/all_errors" || die "no message contains: $want"
done
[ "$n" -ge 100 ] || die "only $n broken files"
# a sample of messages, for the log
for f in magic version1 nkv_huge arch_value arch_type head1000 model-head_count-missing case20; do
  "$LFM2" info -m "$dir/$f.gguf" 2>&1 | head -n 1
done
echo "$n broken files rejected"
exit $fail
