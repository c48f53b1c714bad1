#!/usr/bin/env bash
# run_cli.sh: `lfm2 run`: JSON lines per token, greedy == oracle golden path, seeded sampling, -n, clear errors.
set -u
cd "$(dirname "$0")/../.."
: "${LFM2:?set LFM2 to the lfm2 binary}" "${TMPDIR:?}"
fail=0
die() { echo "FAIL: $*"; fail=1; }
M=tests/data/models/mini-Q8_0.gguf

# --json: one object per token with id, text, logprob and 5 top entries; -n bounds the count
out=$("$LFM2" run -m "$M" -p "Hello world" -n 7 --temp 0 --json) || die "run --json exit $?"
[ "$(printf '%s\n' "$out" | wc -l)" = 7 ] || die "expected 7 JSON lines, got: $out"
printf '%s\n' "$out" | node -e '
  const lines = require("fs").readFileSync(0, "utf8").trim().split("\n");
  for (const l of lines) {
    const o = JSON.parse(l);
    if (!Number.isInteger(o.id) || typeof o.text !== "string" || !(o.logprob <= 0)) throw new Error("bad line " + l);
    if (o.top.length !== 5 || o.top[0][0] !== o.id || Math.abs(o.top[0][1] - o.logprob) > 1e-6) throw new Error("greedy top " + l);
    for (let i = 1; i < 5; i++) if (!(o.top[i][1] <= o.top[i - 1][1])) throw new Error("top order " + l);
  }' || die "JSON lines malformed"

# greedy path == the path recorded in the fidelity golden (prompt 0 of ref-Q8_0), first 16 tokens
prompt="The quick brown fox jumps over the lazy dog. It was a sunny day and the children"
want=$(awk '/^path 0 /{np=$3; getline; for (i = np + 1; i <= np + 16; i++) printf "%s ", $i; exit}' \
       tests/data/fidelity/ref-Q8_0.txt)
got=$("$LFM2" run -m "$M" -p "$prompt" -n 16 --temp 0 --ignore-eos --json | node -e '
  process.stdout.write(require("fs").readFileSync(0, "utf8").trim().split("\n").map(l => JSON.parse(l).id + " ").join(""))')
[ "$got" = "$want" ] || die "greedy path: got '$got' want '$want'"

# text mode prints the same text as the JSON pieces
txt=$("$LFM2" run -m "$M" -p "Hello world" -n 7 --temp 0)
jtxt=$(printf '%s\n' "$out" | node -e '
  process.stdout.write(require("fs").readFileSync(0, "utf8").trim().split("\n").map(l => JSON.parse(l).text).join(""))')
[ "$txt" = "$jtxt" ] || die "text mode '$txt' != json text '$jtxt'"

# sampling: same seed, same tokens; another seed, other tokens
a=$("$LFM2" run -m "$M" -p "Once upon a time" -n 24 --temp 1.2 --top-k 0 --top-p 1 --min-p 0 --seed 5 --ignore-eos)
b=$("$LFM2" run -m "$M" -p "Once upon a time" -n 24 --temp 1.2 --top-k 0 --top-p 1 --min-p 0 --seed 5 --ignore-eos)
c=$("$LFM2" run -m "$M" -p "Once upon a time" -n 24 --temp 1.2 --top-k 0 --top-p 1 --min-p 0 --seed 6 --ignore-eos)
[ "$a" = "$b" ] || die "same seed gave different text"
[ "$a" != "$c" ] || die "different seeds gave the same 24 tokens"

# errors: missing file, non-LFM2 file, prompt longer than the context, bad option values
expect_err() { # expect_err PATTERN ARGS...: non-zero exit and PATTERN on stderr
  local pat=$1; shift
  if "$LFM2" run "$@" >"$TMPDIR/o" 2>"$TMPDIR/e"; then die "run $* succeeded"; fi
  grep -q -- "$pat" "$TMPDIR/e" || die "run $*: stderr lacks '$pat': $(cat "$TMPDIR/e")"
}
expect_err "nope.gguf" -m "$TMPDIR/nope.gguf" -p hi
grep -qx "error: $TMPDIR/nope.gguf: No such file or directory" "$TMPDIR/e" ||
  die "missing file: the path should be named once: $(cat "$TMPDIR/e")"
printf 'not a gguf at all' >"$TMPDIR/junk.gguf"
expect_err "error" -m "$TMPDIR/junk.gguf" -p hi
expect_err "context size 4" -m "$M" -p "one two three four five six seven" --ctx 4
expect_err "--temp" -m "$M" -p hi --temp abc
expect_err "needs -m" -p hi
# a prompt that fills the context exactly still generates one token
n=$("$LFM2" tokenize -m "$M" "one two three" | wc -w)
"$LFM2" run -m "$M" -p "one two three" --ctx "$n" -n 5 --temp 0 --json >"$TMPDIR/full" 2>"$TMPDIR/fe" \
  || die "prompt == ctx failed: $(cat "$TMPDIR/fe")"
[ "$(wc -l <"$TMPDIR/full")" = 1 ] || die "prompt == ctx: expected 1 token"

[ $fail = 0 ] && echo "run_cli: ok"
exit $fail
