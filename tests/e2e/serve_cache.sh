#!/usr/bin/env bash
# serve_cache.sh: the prompt cache: hits give the same tokens and logprobs as cache_prompt false
# (appended turn, edited message, mid-message divergence, identical prompt, regenerated answer,
# n > 1, interleaved chats, streamed usage), metrics, the per-request log line, a tiny budget,
# --cache-ram 0, --cache-dir across a restart with good and broken files, and an LFM2.5 history
# whose earlier <think> the template drops.
. "$(dirname "$0")/serve_common.inc"
# Q4_0 weights: the int8 path computes a token's row the same whatever the step's size, so a
# resumed prefill gives the bits of a full one (float weights: see docs/api.md)
MODEL=$TMPDIR/q.gguf
"$LFM2" mkmodel --preset tiny --type q4_0 --seed 1 -o "$MODEL" >/dev/null 2>"$TMPDIR/mk.log" ||
  { cat "$TMPDIR/mk.log" >&2; fail "mkmodel"; }
# --ctx 16384: room for the stop-button answer below to run for seconds on a quiet machine
start_server cache --parallel 4 --ctx 16384 --cache-snap-every 32
BASE=$BASE MODE=main node "$E2E_DIR/serve_cache.mjs" || fail "serve_cache.mjs main"
grep -q 'prompt [0-9]* tokens (cached [1-9][0-9]*, new [0-9]*), generated' "$LOG" ||
  fail "no log line with the cached tokens"
ok "log line per request"
# a client that stops reading mid-answer (a chat app's stop button) still leaves its state
http $TMPDIR/eos.json "$BASE/tokenize" -d '{"content":"<|im_end|>","parse_special":true}'
EOS=$(jget $TMPDIR/eos.json d.tokens[0])
SP='{"messages":[{"role":"system","content":"A brand new system prompt for the stop button."},{"role":"user","content":"Go on forever."}],"temperature":0'
curl -s -N --max-time 1 "$BASE/v1/chat/completions" \
  -d "$SP,\"stream\":true,\"max_tokens\":16000,\"logit_bias\":{\"$EOS\":-100}}" >$TMPDIR/cut.sse
grep -q '\[DONE\]' $TMPDIR/cut.sse && fail "the long answer finished before the client left"
sleep 1 # the server notices the closed socket within its 200 ms tick
http $TMPDIR/again.json "$BASE/v1/chat/completions" -d "$SP,\"max_tokens\":2}"
ca=$(jget $TMPDIR/again.json d.usage.prompt_tokens_details.cached_tokens)
expect_eq "after a cancelled answer: cached tokens" "$ca" $(( $(jget $TMPDIR/again.json d.usage.prompt_tokens) - 1 ))
ok "a cancelled answer's state is kept ($ca tokens reused)"
stop_server "$PID" || fail "exit status $? after SIGTERM"

# the same on a file written by llama.cpp's quantizer (Q4_0 weights, Q6_K embedding and output)
MODEL=$E2E_DIR/../data/models/mini-Q4_0.gguf
start_server quick --parallel 4 --ctx 2048
BASE=$BASE MODE=quick node "$E2E_DIR/serve_cache.mjs" || fail "serve_cache.mjs on mini-Q4_0"
stop_server "$PID" || fail "exit status $? after SIGTERM"
MODEL=$TMPDIR/q.gguf

start_server tiny_budget --parallel 2 --ctx 2048 --cache-ram 1
BASE=$BASE MODE=tiny_budget node "$E2E_DIR/serve_cache.mjs" || fail "serve_cache.mjs tiny budget"
stop_server "$PID" || fail "exit status $? after SIGTERM"

# --cache-ram 0: no cache, every request reports 0 cached tokens and no cache metrics
start_server nocache --cache-ram 0
B='{"messages":[{"role":"user","content":"Hello there"}],"max_tokens":4,"temperature":0}'
for i in 1 2; do
  http $TMPDIR/nc.json "$BASE/v1/chat/completions" -d "$B"
  expect_eq "cache off: cached tokens" "$(jget $TMPDIR/nc.json d.usage.prompt_tokens_details.cached_tokens)" 0
done
curl -s "$BASE/metrics" | grep -q lfm2_prompt_cache && fail "cache metrics with the cache off"
grep -q 'prompt cache: off' "$LOG" || fail "no log line saying the cache is off"
ok "--cache-ram 0 turns the cache off"
stop_server "$PID" || fail "exit status $? after SIGTERM"

# --cache-dir: a draining server writes the cache, the next one reads it and turn 2 resumes
D=$TMPDIR/cdir
start_server persist1 --cache-dir "$D"
grep -q "prompt cache: no $D/lfm2-prompt-cache.bin yet" "$LOG" || fail "no note about a missing file"
M1='[{"role":"system","content":"You keep notes for a lighthouse keeper."},{"role":"user","content":"What did the keeper write about the storm on the first night of winter?"}]'
G='"max_tokens":8,"temperature":0,"logprobs":true,"top_logprobs":2'
http $TMPDIR/p1.json "$BASE/v1/chat/completions" -d "{\"messages\":$M1,$G}"
expect_eq "turn 1 status" "$CODE" 200
pt1=$(jget $TMPDIR/p1.json d.usage.prompt_tokens)
A1=$(jget $TMPDIR/p1.json 'JSON.stringify(d.choices[0].message.content)')
stop_server "$PID" || fail "exit status $? after SIGTERM"
grep -q "prompt cache: wrote 1 entries" "$LOG" || fail "the draining server did not write its cache"
[ -s "$D/lfm2-prompt-cache.bin" ] || fail "no cache file in $D"
cp "$D/lfm2-prompt-cache.bin" "$TMPDIR/good.bin"
M2="${M1%]},{\"role\":\"assistant\",\"content\":$A1},{\"role\":\"user\",\"content\":\"And the second night?\"}]"
start_server persist2 --cache-dir "$D"
grep -q "prompt cache: read 1 entries" "$LOG" || fail "the starting server did not read the cache"
http $TMPDIR/p2.json "$BASE/v1/chat/completions" -d "{\"messages\":$M2,$G}"
http $TMPDIR/p2off.json "$BASE/v1/chat/completions" -d "{\"messages\":$M2,$G,\"cache_prompt\":false}"
c2=$(jget $TMPDIR/p2.json d.usage.prompt_tokens_details.cached_tokens)
[ "$c2" -ge "$pt1" ] || fail "turn 2 after a restart reused $c2 tokens, turn 1 had $pt1"
expect_eq "turn 2 after a restart: same answer" "$(jget $TMPDIR/p2.json 'JSON.stringify(d.choices)')" \
  "$(jget $TMPDIR/p2off.json 'JSON.stringify(d.choices)')"
ok "--cache-dir: turn 2 after a restart reuses $c2 tokens (turn 1 had $pt1), same answer"
stop_server "$PID" || fail "exit status $? after SIGTERM"

# broken files are skipped with a log line; the server serves as without a cache
broken() { # broken NAME EXPECTED-LOG-TEXT: the file is already in place
  start_server "broken_$1" --cache-dir "$D"
  grep -q "prompt cache: skipped: .*$2" "$LOG" || fail "$1: no 'skipped: ...$2' in the log"
  http $TMPDIR/b.json "$BASE/v1/chat/completions" -d "{\"messages\":$M2,$G}"
  expect_eq "$1: status" "$CODE" 200
  expect_eq "$1: cached tokens" "$(jget $TMPDIR/b.json d.usage.prompt_tokens_details.cached_tokens)" 0
  kill -9 "$PID"; wait "$PID" 2>/dev/null
  ok "--cache-dir: $1 file skipped"
}
head -c 100 "$TMPDIR/good.bin" >"$D/lfm2-prompt-cache.bin"; broken truncated "truncated"
cp "$TMPDIR/good.bin" "$D/lfm2-prompt-cache.bin"
printf '\x7f' | dd of="$D/lfm2-prompt-cache.bin" bs=1 seek=2000 conv=notrunc status=none
broken corrupt "corrupt"
head -c 4096 /dev/urandom >"$D/lfm2-prompt-cache.bin"; broken garbage "bad magic"
# a cache written for another model file
MODEL=$TMPDIR/q2.gguf
"$LFM2" mkmodel --preset tiny --type q4_0 --seed 2 -o "$MODEL" >/dev/null 2>&1 || fail "mkmodel 2"
D2=$TMPDIR/cdir2
start_server other --cache-dir "$D2"
http $TMPDIR/o.json "$BASE/v1/chat/completions" -d "{\"messages\":$M1,$G}"
stop_server "$PID" || fail "exit status $? after SIGTERM"
MODEL=$TMPDIR/q.gguf
cp "$D2/lfm2-prompt-cache.bin" "$D/lfm2-prompt-cache.bin"; broken stale "another model"

# LFM2.5: the template drops the <think>...</think> of assistant turns before the last one, so
# turn 3's rendering of the first answer differs from turn 2's. Reuse still covers everything
# before that assistant turn, the rewrite is counted, and the answer is cache_prompt false's.
MODEL=$TMPDIR/q25.gguf
"$LFM2" mkmodel --preset tiny --type q4_0 --seed 1 --chat-template lfm2.5 -o "$MODEL" >/dev/null \
  2>"$TMPDIR/mk25.log" || { cat "$TMPDIR/mk25.log" >&2; fail "mkmodel --chat-template lfm2.5"; }
start_server lfm25 --parallel 2 --ctx 2048
grep -q 'prompt cache: up to [0-9]* MiB' "$LOG" || fail "no log line with the cache's budget"
grep -q 'prompt cache: off' "$LOG" && fail "the log says the cache is off with the default budget"
http $TMPDIR/th.json "$BASE/tokenize" -d '{"content":"<think>","parse_special":true}'
expect_eq "<think> is one token" "$(jget $TMPDIR/th.json d.tokens.length)" 1
M1='[{"role":"system","content":"You keep notes for a lighthouse keeper."},{"role":"user","content":"What did the keeper write about the storm?"}]'
http $TMPDIR/t1.json "$BASE/v1/chat/completions" -d "{\"messages\":$M1,\"max_tokens\":2}"
expect_eq "lfm2.5 turn 1 status" "$CODE" 200
pt1=$(jget $TMPDIR/t1.json d.usage.prompt_tokens)
A1='<think>The log says the lamp failed at midnight.</think>The lamp failed at midnight.'
M2="${M1%]},{\"role\":\"assistant\",\"content\":\"$A1\"},{\"role\":\"user\",\"content\":\"And the second night?\"}]"
G='"max_tokens":8,"temperature":0,"logprobs":true,"top_logprobs":2'
# turn 2: the assistant turn with <think> is the last one, so the template keeps its reasoning
http $TMPDIR/t2.json "$BASE/v1/chat/completions" -d "{\"messages\":$M2,$G}"
expect_eq "lfm2.5 turn 2 status" "$CODE" 200
A2=$(jget $TMPDIR/t2.json 'JSON.stringify(d.choices[0].message.content)')
# turn 3: now an earlier turn, its <think>...</think> is dropped from the rendering
M3="${M2%]},{\"role\":\"assistant\",\"content\":$A2},{\"role\":\"user\",\"content\":\"And the third?\"}]"
rw0=$(curl -s "$BASE/metrics" | awk '/^lfm2_prompt_cache_template_rewrites_total/{print $2}')
http $TMPDIR/t3.json "$BASE/v1/chat/completions" -d "{\"messages\":$M3,$G}"
expect_eq "lfm2.5 turn 3 status" "$CODE" 200
rw1=$(curl -s "$BASE/metrics" | awk '/^lfm2_prompt_cache_template_rewrites_total/{print $2}')
http $TMPDIR/t3off.json "$BASE/v1/chat/completions" -d "{\"messages\":$M3,$G,\"cache_prompt\":false}"
c3=$(jget $TMPDIR/t3.json d.usage.prompt_tokens_details.cached_tokens)
# turn 1's entry ends with the snapshot at its prompt's end, through the rewritten turn's header
[ "$c3" -ge "$pt1" ] ||
  fail "lfm2.5 turn 3 reused $c3 tokens, turn 1's prompt before the rewritten answer held $pt1"
expect_eq "lfm2.5 turn 3 counts a template rewrite" "$((${rw1:-0} - ${rw0:-0}))" 1
expect_eq "lfm2.5 turn 3 off: cached tokens" \
  "$(jget $TMPDIR/t3off.json d.usage.prompt_tokens_details.cached_tokens)" 0
expect_eq "lfm2.5 turn 3: same answer as cache_prompt false" \
  "$(jget $TMPDIR/t3.json 'JSON.stringify(d.choices)')" \
  "$(jget $TMPDIR/t3off.json 'JSON.stringify(d.choices)')"
ok "lfm2.5: a history whose <think> the template drops reuses $c3 tokens (turn 1 had $pt1), same answer"
stop_server "$PID" || fail "exit status $? after SIGTERM"
MODEL=$TMPDIR/q.gguf
