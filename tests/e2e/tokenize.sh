#!/usr/bin/env bash
# tokenize.sh: `lfm2 tokenize` prints llama.cpp's ids (goldens) in all four modes, reads raw bytes with -f, rejects bad use.
set -u
cd "$(dirname "$0")/../.."
: "${LFM2:?set LFM2 to the lfm2 binary}" "${TMPDIR:?}"
fail=0
die() { echo "FAIL: $*"; fail=$((fail+1)); [ "$fail" -lt 10 ] || exit 1; }

# every 20th golden case of each vocab, through the real binary, all four flag combinations
for golden in tests/data/tok/mini.golden tests/data/tok/vocab65536.golden tests/data/tok/types.golden; do
  model=$(sed -n 's/^# model //p' "$golden")
  n=0 checked=0
  while IFS=$'\t' read -r hex plain special bos both; do
    case "$hex" in '#'*) continue;; esac
    n=$((n+1)); [ $((n % 20)) -eq 1 ] || continue
    perl -e 'print pack("H*", $ARGV[0])' "$hex" >"$TMPDIR/text"
    got=$("$LFM2" tokenize -m "$model" --no-bos --no-special -f "$TMPDIR/text") || die "exit status on $hex"
    [ "$got" = "$plain" ] || die "$golden $hex plain: got '$got' want '$plain'"
    got=$("$LFM2" tokenize -m "$model" --no-bos -f "$TMPDIR/text")
    [ "$got" = "$special" ] || die "$golden $hex special: got '$got' want '$special'"
    got=$("$LFM2" tokenize -m "$model" --no-special -f "$TMPDIR/text")
    [ "$got" = "$bos" ] || die "$golden $hex bos: got '$got' want '$bos'"
    got=$("$LFM2" tokenize -m "$model" -f - <"$TMPDIR/text")
    [ "$got" = "$both" ] || die "$golden $hex default: got '$got' want '$both'"
    checked=$((checked+1))
  done <"$golden"
  [ "$checked" -ge 20 ] || die "$golden: only $checked cases checked"
  echo "$golden: $checked cases x 4 modes"
done

# --batch: every golden case in all four modes through one process per vocab
for golden in tests/data/tok/mini.golden tests/data/tok/vocab65536.golden tests/data/tok/types.golden; do
  model=$(sed -n 's/^# model //p' "$golden")
  grep -v '^#' "$golden" | awk -F'\t' '{print "N " $1; print "S " $1; print "B " $1; print "A " $1}' >"$TMPDIR/batch.in"
  grep -v '^#' "$golden" | awk -F'\t' '{print $2; print $3; print $4; print $5}' >"$TMPDIR/batch.want"
  "$LFM2" tokenize -m "$model" --batch <"$TMPDIR/batch.in" >"$TMPDIR/batch.got" || die "--batch exit status"
  cmp -s "$TMPDIR/batch.want" "$TMPDIR/batch.got" || die "$golden: --batch output differs from the goldens"
  echo "$golden: $(wc -l <"$TMPDIR/batch.got") tokenizations in one batch"
done
M=tests/data/models/mini-F16.gguf
echo "X 00" | "$LFM2" tokenize -m "$M" --batch >/dev/null 2>&1 && die "--batch accepted a bad line"

# TEXT as an argument (the usual way), defaults: BOS + special parsing
M=tests/data/models/mini-F16.gguf
got=$("$LFM2" tokenize -m "$M" "$(printf '<|im_start|>user\nhi<|im_end|>')")
[ "$got" = "1 6 1878 214 87 88 7" ] || die "chat text: got '$got'"
got=$("$LFM2" tokenize -m "$M" --pieces "Hello world")
[ "$got" = "$(printf '1\t<|startoftext|>\n2925\tHello\n331\t w\n3303\torld')" ] || die "--pieces: got '$got'"
got=$("$LFM2" tokenize -m "$M" "")
[ "$got" = "1" ] || die "empty text: got '$got'"

# bad use: exit 2 (usage) or 1 (the work failed), as docs/cli.md says, and a message naming it
expect_error() { # STATUS WANT-IN-STDERR ARGS...
  local status=$1 want=$2; shift 2
  "$LFM2" tokenize "$@" >"$TMPDIR/out" 2>"$TMPDIR/err"
  local rc=$?
  [ "$rc" -eq "$status" ] || die "tokenize $*: exit $rc, want $status"
  grep -q -- "$want" "$TMPDIR/err" || { die "tokenize $*: stderr lacks '$want'"; cat "$TMPDIR/err"; }
}
expect_error 2 "-m FILE is required" "text"
expect_error 2 "either TEXT or -f" -m "$M"
expect_error 2 "unknown option" -m "$M" --bogus "text"
expect_error 2 "needs a file argument" -m "$M" -f
expect_error 2 "unexpected argument 'b'" -m "$M" a b
expect_error 2 "either TEXT or -f" -m "$M" -f "$TMPDIR/x" text
expect_error 2 "--batch reads its texts from stdin" -m "$M" --batch text
expect_error 1 "cannot read" -m "$M" -f "$TMPDIR/does-not-exist"
expect_error 1 "error: $TMPDIR/none.gguf" -m "$TMPDIR/none.gguf" "text"
# the path is said once, whether the file is missing or not a GGUF
expect_error 1 "^error: $TMPDIR/none.gguf: No such file or directory$" -m "$TMPDIR/none.gguf" "text"
printf 'not a gguf' >"$TMPDIR/junk.gguf"
expect_error 1 "^error: $TMPDIR/junk.gguf: bad magic" -m "$TMPDIR/junk.gguf" "text"
head -c 100000 "$M" >"$TMPDIR/cut.gguf"
expect_error 1 "error:" -m "$TMPDIR/cut.gguf" "text"
"$LFM2" tokenize --help | grep -q "no-special" || die "--help"
[ "$fail" -eq 0 ]
