#!/usr/bin/env bash
# serve_cache.sh: the prompt cache: hits give the same tokens and logprobs as cache_prompt false
# (appended turn, edited message, mid-message divergence, identical prompt, regenerated answer,
# n > 1, interleaved chats, streamed usage), metrics, the per-request log line, a tiny budget.
. "$(dirname "$0")/serve_common.inc"
# Q4_0 weights: the int8 path computes a token's row the same whatever the step's size, so a
# resumed prefill gives the bits of a full one (float weights: see docs/api.md)
MODEL=$TMPDIR/q.gguf
"$LFM2" mkmodel --preset tiny --type q4_0 --seed 1 -o "$MODEL" >/dev/null 2>"$TMPDIR/mk.log" ||
  { cat "$TMPDIR/mk.log" >&2; fail "mkmodel"; }
start_server cache --parallel 4 --ctx 2048 --cache-snap-every 32
BASE=$BASE MODE=main node "$E2E_DIR/serve_cache.mjs" || fail "serve_cache.mjs main"
grep -q 'prompt [0-9]* tokens (cached [1-9][0-9]*, new [0-9]*), generated' "$LOG" ||
  fail "no log line with the cached tokens"
ok "log line per request"
stop_server "$PID" || fail "exit status $? after SIGTERM"

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
