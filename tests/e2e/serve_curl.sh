#!/usr/bin/env bash
# serve_curl.sh: every endpoint of `lfm2 serve` over real HTTP with curl: shapes, streaming, errors, limits.
. "$(dirname "$0")/serve_common.inc"
make_model
start_server main --alias tiny-test --ctx 256 --body-limit 4k --cors '*' --parallel 2
T=$TMPDIR

# /health and /v1/models
http $T/h.json "$BASE/health"
expect_eq "health status" "$CODE" 200
expect_eq "health body" "$(jget $T/h.json d.status)" ok
http $T/models.json "$BASE/v1/models"
expect_eq "models status" "$CODE" 200
expect_eq "models object" "$(jget $T/models.json d.object)" list
expect_eq "model id" "$(jget $T/models.json d.data[0].id)" tiny-test
ok "health, models"

# chat, not streamed, greedy
CHAT='{"model":"tiny-test","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}],"max_tokens":12,"temperature":0}'
http $T/chat.json "$BASE/v1/chat/completions" -H 'Content-Type: application/json' -d "$CHAT"
expect_eq "chat status" "$CODE" 200
expect_eq "chat object" "$(jget $T/chat.json d.object)" chat.completion
expect_eq "chat id prefix" "$(jget $T/chat.json 'd.id.startsWith("chatcmpl-")')" true
expect_eq "chat model" "$(jget $T/chat.json d.model)" tiny-test
expect_eq "chat role" "$(jget $T/chat.json d.choices[0].message.role)" assistant
expect_eq "chat choices" "$(jget $T/chat.json d.choices.length)" 1
fr=$(jget $T/chat.json d.choices[0].finish_reason)
ct=$(jget $T/chat.json d.usage.completion_tokens)
pt=$(jget $T/chat.json d.usage.prompt_tokens)
[ "$pt" -gt 5 ] || fail "prompt_tokens $pt"
[ "$ct" -ge 1 ] && [ "$ct" -le 12 ] || fail "completion_tokens $ct"
expect_eq "total_tokens" "$(jget $T/chat.json d.usage.total_tokens)" $((pt + ct))
if [ "$fr" = length ]; then expect_eq "length means max_tokens" "$ct" 12;
else expect_eq "finish_reason" "$fr" stop; fi
# the prompt is the chat template: tokenize it the same way and compare the count
TPL='<|startoftext|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n'
http $T/tpl.json "$BASE/tokenize" -d "{\"content\":\"$TPL\",\"parse_special\":true}"
expect_eq "templated prompt tokens" "$(jget $T/tpl.json d.tokens.length)" "$pt"
ok "chat completion: shape, usage, template ($pt prompt tokens, $ct generated, $fr)"
# special-token text typed by a user stays text: "<|im_end|>" costs several tokens, not one
http $T/inj0.json "$BASE/v1/chat/completions" -d '{"messages":[{"role":"user","content":""}],"max_tokens":1}'
http $T/inj1.json "$BASE/v1/chat/completions" -d '{"messages":[{"role":"user","content":"<|im_end|>"}],"max_tokens":1}'
p0=$(jget $T/inj0.json d.usage.prompt_tokens); p1=$(jget $T/inj1.json d.usage.prompt_tokens)
[ "$p1" -gt $((p0 + 1)) ] || fail "user text <|im_end|> became a control token ($p0 -> $p1 prompt tokens)"
ok "special-token text in user content is not parsed ($p0 -> $p1 prompt tokens)"

# the same request streamed gives the same text
http $T/chat.sse "$BASE/v1/chat/completions" -N -d "${CHAT%\}},\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
expect_eq "stream status" "$CODE" 200
grep -v '^$' $T/chat.sse | grep -v '^data: ' && fail "non-data line in SSE"
tail -n 2 $T/chat.sse | head -n 1 | grep -qx 'data: \[DONE\]' || fail "stream does not end with [DONE]"
node -e '
  const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(l => l.startsWith("data: ") && l !== "data: [DONE]");
  const ev = lines.map(l => JSON.parse(l.slice(6)));
  const want = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
  const fail = m => { console.error("FAIL: " + m); process.exit(1); };
  if (ev[0].choices[0].delta.role !== "assistant") fail("first chunk has no role");
  if (ev.some(e => e.object !== "chat.completion.chunk")) fail("object");
  if (new Set(ev.map(e => e.id)).size !== 1) fail("ids differ between chunks");
  let text = "", fin = null;
  for (const e of ev.slice(0, -1)) {
    const c = e.choices[0];
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) { fin = c.finish_reason; if (Object.keys(c.delta).length) fail("last delta not empty"); }
    if (e.usage !== null) fail("usage must be null before the usage chunk");
  }
  const u = ev[ev.length - 1];
  if (u.choices.length !== 0 || !u.usage) fail("no usage chunk");
  if (text !== want.choices[0].message.content) fail("stream text " + JSON.stringify(text) + " != " + JSON.stringify(want.choices[0].message.content));
  if (fin !== want.choices[0].finish_reason) fail("finish " + fin);
  if (u.usage.completion_tokens !== want.usage.completion_tokens) fail("usage differs");
' $T/chat.sse $T/chat.json || fail "stream check"
ok "chat stream: role chunk, deltas, finish chunk, usage chunk, [DONE], same text as non-streamed"

# completions
http $T/cmpl.json "$BASE/v1/completions" -d '{"prompt":"The quick brown fox","max_tokens":6,"temperature":0,"logprobs":2}'
expect_eq "completion status" "$CODE" 200
expect_eq "completion object" "$(jget $T/cmpl.json d.object)" text_completion
expect_eq "completion text type" "$(jget $T/cmpl.json 'typeof d.choices[0].text')" string
ct=$(jget $T/cmpl.json d.usage.completion_tokens)
[ "$(jget $T/cmpl.json d.choices[0].finish_reason)" = stop ] || expect_eq "completion length" "$ct" 6
expect_eq "logprobs per token" "$(jget $T/cmpl.json d.choices[0].logprobs.tokens.length)" "$ct"
expect_eq "top logprobs" "$(jget $T/cmpl.json 'Object.keys(d.choices[0].logprobs.top_logprobs[0]).length')" 2
http $T/cmplt.json "$BASE/v1/completions" -d '{"prompt":[1,2,3,4],"max_tokens":3,"temperature":0}'
expect_eq "token-id prompt" "$CODE" 200
expect_eq "token-id prompt usage" "$(jget $T/cmplt.json d.usage.prompt_tokens)" 4
ok "completions: text, logprobs, token-id prompt"

# tokenize / detokenize
http $T/tok.json "$BASE/tokenize" -d '{"content":"Hello world, hello!"}'
expect_eq "tokenize status" "$CODE" 200
n=$(jget $T/tok.json d.tokens.length)
[ "$n" -ge 2 ] || fail "tokenize gave $n tokens"
http $T/tokb.json "$BASE/tokenize" -d '{"content":"Hello world, hello!","add_special":true}'
expect_eq "add_special adds BOS" "$(jget $T/tokb.json d.tokens.length)" $((n + 1))
http $T/tokp.json "$BASE/tokenize" -d '{"content":"Hello world, hello!","with_pieces":true}'
expect_eq "pieces joined" "$(jget $T/tokp.json 'd.tokens.map(t=>t.piece).join("")')" "Hello world, hello!"
http $T/detok.json "$BASE/detokenize" -d "{\"tokens\":$(jget $T/tok.json d.tokens)}"
expect_eq "detokenize status" "$CODE" 200
expect_eq "round trip" "$(jget $T/detok.json d.content)" "Hello world, hello!"
ok "tokenize, detokenize"

# errors: 404, 405, 413, 400 (json, context length), 403 host
http $T/e.json "$BASE/v1/nope"
expect_eq "unknown path" "$CODE" 404
expect_eq "404 body" "$(jget $T/e.json d.error.code)" not_found
http $T/e.json "$BASE/v1/chat/completions"
expect_eq "GET on POST endpoint" "$CODE" 405
curl -s -D $T/hdr -o /dev/null -X DELETE "$BASE/v1/models"
grep -qi '^Allow: GET' $T/hdr || fail "405 without Allow header"
head -c 6000 /dev/zero | tr '\0' 'a' > $T/big
http $T/e.json "$BASE/v1/completions" --data-binary @$T/big
expect_eq "body over --body-limit" "$CODE" 413
http $T/e.json "$BASE/v1/completions" -H 'Transfer-Encoding: chunked' --data-binary @$T/big
expect_eq "chunked body over --body-limit" "$CODE" 413
http $T/e.json "$BASE/v1/chat/completions" -d '{"messages": ['
expect_eq "malformed json" "$CODE" 400
expect_eq "error type" "$(jget $T/e.json d.error.type)" invalid_request_error
LONG=$(printf 'word %.0s' $(seq 1 400))
http $T/e.json "$BASE/v1/completions" -d "{\"prompt\":\"$LONG\",\"max_tokens\":4}"
expect_eq "over-long prompt" "$CODE" 400
expect_eq "context_length_exceeded" "$(jget $T/e.json d.error.code)" context_length_exceeded
http $T/e.json "$BASE/v1/models" -H 'Host: evil.example.com'
expect_eq "foreign Host header" "$CODE" 403
http $T/e.json "$BASE/v1/models" -H "Host: localhost:$PORT"
expect_eq "localhost Host header" "$CODE" 200
http $T/e.json "$BASE/v1/models" -H "Host: [::1]:$PORT"
expect_eq "[::1] Host header" "$CODE" 200
http $T/e.json "$BASE/v1/models" -H "Host: 127.0.0.1.evil.com"
expect_eq "lookalike Host header" "$CODE" 403
ok "404, 405 + Allow, 413 (length and chunked), 400, context_length_exceeded, Host check"

# CORS
curl -s -D $T/hdr -o /dev/null -X OPTIONS "$BASE/v1/chat/completions" -H 'Origin: http://app.example' \
  -H 'Access-Control-Request-Method: POST' -w '%{http_code}' > $T/code
expect_eq "preflight status" "$(cat $T/code)" 204
grep -qi '^Access-Control-Allow-Origin: \*' $T/hdr || fail "preflight without Allow-Origin"
grep -qi '^Access-Control-Allow-Headers:.*Authorization' $T/hdr || fail "preflight without Allow-Headers"
curl -s -D $T/hdr -o /dev/null "$BASE/v1/models" -H 'Origin: http://app.example'
grep -qi '^Access-Control-Allow-Origin: \*' $T/hdr || fail "GET without Allow-Origin"
ok "CORS"

# metrics reflect what happened
curl -s "$BASE/metrics" > $T/metrics
grep -q '^lfm2_requests_total{status="200"} [1-9]' $T/metrics || fail "no 200s counted"
grep -q '^lfm2_requests_total{status="404"} [1-9]' $T/metrics || fail "no 404s counted"
grep -q '^lfm2_generated_tokens_total [1-9]' $T/metrics || fail "generated tokens"
grep -q '^lfm2_prompt_tokens_total [1-9]' $T/metrics || fail "prompt tokens"
grep -q '^lfm2_time_to_first_token_seconds_count [1-9]' $T/metrics || fail "ttft histogram"
grep -q '^lfm2_token_latency_seconds_bucket{le="+Inf"} [1-9]' $T/metrics || fail "token latency"
grep -q '^lfm2_active_sequences 0' $T/metrics || fail "active sequences not 0 when idle"
grep -q '^lfm2_kv_memory_bytes ' $T/metrics || fail "kv memory gauge"
grep -q '^lfm2_queue_depth 0' $T/metrics || fail "queue depth"
ok "metrics"
stop_server $PID || fail "exit status $? after SIGTERM"

# API key
start_server auth --api-key 's3cret-key'
http $T/e.json "$BASE/v1/models"
expect_eq "no key" "$CODE" 401
expect_eq "401 type" "$(jget $T/e.json d.error.type)" authentication_error
http $T/e.json "$BASE/v1/models" -H 'Authorization: Bearer s3cret-kez'
expect_eq "wrong key" "$CODE" 401
http $T/e.json "$BASE/v1/models" -H 'Authorization: Bearer s3cret-key-and-more'
expect_eq "longer key" "$CODE" 401
http $T/e.json "$BASE/v1/models" -H 'Authorization: Bearer s3cret-key'
expect_eq "right key" "$CODE" 200
http $T/e.json "$BASE/health"
expect_eq "health needs no key" "$CODE" 200
stop_server $PID || fail "exit status after SIGTERM"
grep -q 's3cret-key' "$LOG" && fail "the API key appears in the server log"
grep -q 'try: curl .*Bearer \$LFM2_API_KEY' "$LOG" || fail "the try line does not show the key placeholder"
ok "api key (never logged)"

# a full queue answers 503 + Retry-After: one running, one waiting, the third is refused
start_server queue --parallel 1 --queue 1 --ctx 4096
EOS=$(curl -s "$BASE/tokenize" -d '{"content":"<|im_end|>"}' | node -e 'process.stdin.on("data",d=>console.log(JSON.parse(d).tokens[0]))')
SLOW="{\"prompt\":\"Once upon a time\",\"max_tokens\":4000,\"temperature\":1,\"logit_bias\":{\"$EOS\":-100}}"
curl -s -o $T/q1.json "$BASE/v1/completions" -d "$SLOW" & CLIENT_PIDS+=($!)
for _ in $(seq 1 100); do [ "$(metric lfm2_active_sequences)" = 1 ] && break; sleep 0.02; done
curl -s -o $T/q2.json "$BASE/v1/completions" -d "$SLOW" & CLIENT_PIDS+=($!)
for _ in $(seq 1 100); do [ "$(metric lfm2_queue_depth)" = 1 ] && break; sleep 0.02; done
expect_eq "queue depth while one waits" "$(metric lfm2_queue_depth)" 1
curl -s -D $T/hdr -o $T/q3.json -w '%{http_code}' "$BASE/v1/completions" -d "$SLOW" > $T/code
expect_eq "full queue" "$(cat $T/code)" 503
grep -qi '^Retry-After: ' $T/hdr || fail "503 without Retry-After"
ok "queue full -> 503 + Retry-After"
kill "${CLIENT_PIDS[@]}" 2>/dev/null # the clients go away: their jobs are cancelled
stop_server $PID || fail "exit status after SIGTERM"
# connection limit and idle timeout: 3 silent connections fill --max-connections 3; a 4th is
# refused; after --idle-timeout 3 the server has closed the silent ones and serves again. The
# timeout leaves a loaded machine seconds to make the 4th attempt while the 3 are still open.
start_server conns --max-connections 3 --idle-timeout 3
t_open=$SECONDS
exec 7<>/dev/tcp/127.0.0.1/$PORT 8<>/dev/tcp/127.0.0.1/$PORT 9<>/dev/tcp/127.0.0.1/$PORT
sleep 0.3
code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$BASE/health")
[ $((SECONDS - t_open)) -lt 3 ] || fail "the 4th connection came $((SECONDS - t_open)) s late (machine too loaded)"
expect_eq "4th connection over the limit" "$code" 000
for _ in $(seq 1 20); do
  code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$BASE/health")
  [ "$code" = 200 ] && break
  sleep 0.5
done
expect_eq "after the idle timeout" "$code" 200
[ $((SECONDS - t_open)) -ge 2 ] || fail "served again after $((SECONDS - t_open)) s, before the idle timeout"
exec 7>&- 8>&- 9>&-
ok "connection limit, idle timeout"
stop_server $PID || fail "exit status after SIGTERM"
echo "serve_curl: all passed"
