#!/usr/bin/env bash
# serve_longtoken.sh: tokens longer than the stop matcher's first buffer reach the client intact.
# The mini vocab (tests/data/models, trained like real vocabs) holds a token of 70 spaces; forced
# with logit_bias it must come back as exactly those bytes through every endpoint and mode, with
# and without stop strings, at the start of a generation and after held-back text.
. "$(dirname "$0")/serve_common.inc"
MODEL=$E2E_DIR/../data/models/mini-Q4_0.gguf
start_server longtoken --parallel 2
T=$TMPDIR
SP70=$(printf '%70s' '')

http $T/tok.json "$BASE/tokenize" -d "{\"content\":\"$SP70\"}"
expect_eq "tokenize status" "$CODE" 200
expect_eq "70 spaces are one token" "$(jget $T/tok.json d.tokens.length)" 1
ID=$(jget $T/tok.json d.tokens[0])
http $T/detok.json "$BASE/detokenize" -d "{\"tokens\":[$ID]}"
expect_eq "detokenize length" "$(jget $T/detok.json d.content.length)" 70
ok "token $ID is 70 spaces"

# check_text FILE WANT_LEN STREAMED KIND: the response's text (joined over SSE chunks) is WANT_LEN
# spaces and nothing else; every logprobs entry (when present) is the 70-space token.
check_text() {
  node -e '
    const fs = require("fs");
    const [file, want, streamed, kind] = process.argv.slice(1);
    const raw = fs.readFileSync(file, "utf8");
    const docs = streamed === "1"
      ? raw.split("\n").filter(l => l.startsWith("data: ") && l !== "data: [DONE]").map(l => JSON.parse(l.slice(6)))
      : [JSON.parse(raw)];
    let text = "", lps = [];
    for (const d of docs) for (const c of d.choices || []) {
      text += kind === "chat" ? ((streamed === "1" ? c.delta.content : c.message.content) || "") : (c.text || "");
      const lp = c.logprobs;
      if (lp && kind === "chat" && lp.content) lps.push(...lp.content.map(e => e.token));
      if (lp && kind !== "chat" && lp.tokens) lps.push(...lp.tokens);
    }
    const bad = [...text].findIndex(ch => ch !== " ");
    if (text.length !== Number(want) || bad >= 0) {
      console.error(`FAIL: ${file}: ${text.length} chars (want ${want} spaces), first other at ${bad}: ${JSON.stringify(text.slice(0, 80))}`);
      process.exit(1);
    }
    if (lps.some(t => t !== " ".repeat(70))) { console.error(`FAIL: ${file}: logprob tokens ${JSON.stringify(lps)}`); process.exit(1); }
    console.log(`${file}: ${text.length} spaces, ${lps.length} logprob entries`);
  ' "$@" || fail "text of $1"
}

BIAS="\"logit_bias\":{\"$ID\":100},\"temperature\":0"
# no stop strings: the matcher's first buffer is 64 bytes, the first token already outgrows it
for s in false true; do
  sf=0; [ $s = true ] && sf=1
  http $T/c-$s.json "$BASE/v1/completions" -N -d "{\"prompt\":\"hello\",\"max_tokens\":2,$BIAS,\"stream\":$s}"
  expect_eq "completion status (stream $s)" "$CODE" 200
  check_text $T/c-$s.json 140 $sf text
  http $T/cl-$s.json "$BASE/v1/completions" -N -d "{\"prompt\":\"hello\",\"max_tokens\":3,$BIAS,\"logprobs\":2,\"stream\":$s}"
  check_text $T/cl-$s.json 210 $sf text
  http $T/ch-$s.json "$BASE/v1/chat/completions" -N \
    -d "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2,$BIAS,\"stream\":$s}"
  expect_eq "chat status (stream $s)" "$CODE" 200
  check_text $T/ch-$s.json 140 $sf chat
  http $T/chl-$s.json "$BASE/v1/chat/completions" -N \
    -d "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":4,$BIAS,\"logprobs\":true,\"top_logprobs\":3,\"stream\":$s}"
  check_text $T/chl-$s.json 280 $sf chat
done
ok "no stop strings: completions and chat, streamed and not, with logprobs"

# "   Q" (buffer 72 bytes): each token ends with 3 spaces held back as a possible start of the stop,
# so from the second token on the held bytes plus the token outgrow the buffer mid-generation;
# "S" (buffer 66 bytes): the first token outgrows it at the start
for stop in '"   Q"' '["S","\n\n"]'; do
  for s in false true; do
    sf=0; [ $s = true ] && sf=1
    http $T/s.json "$BASE/v1/completions" -N -d "{\"prompt\":\"hello\",\"max_tokens\":4,$BIAS,\"stop\":$stop,\"stream\":$s}"
    expect_eq "completion with stop $stop status" "$CODE" 200
    check_text $T/s.json 280 $sf text
    http $T/sc.json "$BASE/v1/chat/completions" -N \
      -d "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":3,$BIAS,\"stop\":$stop,\"logprobs\":true,\"stream\":$s}"
    check_text $T/sc.json 210 $sf chat
  done
done
ok "stop strings: the long token at the start and after held-back text"

# several at once, n > 1: the texts stay intact while the scheduler batches them
pids=()
for i in 1 2 3 4; do
  curl -s --max-time 120 -o $T/par$i.json "$BASE/v1/completions" \
    -d "{\"prompt\":\"hello $i\",\"max_tokens\":3,\"n\":2,$BIAS,\"stop\":\"   Q\"}" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "parallel request failed"; done
for i in 1 2 3 4; do
  check_text $T/par$i.json 420 0 text
done
ok "4 parallel requests with n=2"
stop_server "$PID" || fail "server exit status $EXIT_RC"
grep -q "AddressSanitizer\|runtime error" "$LOG" && fail "sanitizer report in the server log"
ok "clean exit"
