#!/usr/bin/env bash
# serve_disconnect.sh: a client that goes away (streaming, waiting for a non-streamed answer, or
# still queued) has its sequence freed within 1 s, and the server keeps serving.
. "$(dirname "$0")/serve_common.inc"
make_model
start_server disc --parallel 1 --queue 4 --ctx 8192
T=$TMPDIR
EOS=$(curl -s "$BASE/tokenize" -d '{"content":"<|im_end|>"}' | node -e 'process.stdin.on("data",d=>console.log(JSON.parse(d).tokens[0]))')
LONG="\"prompt\":\"Once upon a time\",\"max_tokens\":8000,\"temperature\":1,\"logit_bias\":{\"$EOS\":-100}"

now_ms() { date +%s%3N; }
# wait_metric NAME VALUE MAX_MS: polls /metrics until NAME == VALUE; prints the ms it took
wait_metric() {
  local t0; t0=$(now_ms)
  while :; do
    [ "$(metric "$1")" = "$2" ] && { echo $(( $(now_ms) - t0 )); return 0; }
    [ $(( $(now_ms) - t0 )) -gt "$3" ] && { echo "timeout"; return 1; }
    sleep 0.02
  done
}

# 1. a streaming client disconnects mid-stream
curl -sN -o $T/s1.sse "$BASE/v1/completions" -d "{$LONG,\"stream\":true}" & C=$!; CLIENT_PIDS+=($C)
wait_metric lfm2_active_sequences 1 5000 >/dev/null || fail "stream never became active"
for _ in $(seq 1 100); do [ "$(grep -c '^data: ' $T/s1.sse)" -ge 3 ] && break; sleep 0.02; done
[ "$(grep -c '^data: ' $T/s1.sse)" -ge 3 ] || fail "no tokens streamed"
kill -9 $C; wait $C 2>/dev/null
ms=$(wait_metric lfm2_active_sequences 0 1000) || fail "streamed sequence still active 1 s after the client left"
ok "streaming client gone: sequence freed after ${ms} ms"

# 2. a non-streaming client (its connection suspended while it waits) disconnects, and
# 3. a client still waiting in the queue disconnects
curl -s -o /dev/null "$BASE/v1/completions" -d "{$LONG}" & A=$!; CLIENT_PIDS+=($A)
wait_metric lfm2_active_sequences 1 5000 >/dev/null || fail "request A never became active"
curl -s -o /dev/null "$BASE/v1/completions" -d "{$LONG}" & B=$!; CLIENT_PIDS+=($B)
wait_metric lfm2_queue_depth 1 5000 >/dev/null || fail "request B never queued"
kill -9 $B; wait $B 2>/dev/null
ms=$(wait_metric lfm2_queue_depth 0 1000) || fail "queued request still queued 1 s after its client left"
ok "queued client gone: dequeued after ${ms} ms"
[ "$(metric lfm2_active_sequences)" = 1 ] || fail "request A should still run"
kill -9 $A; wait $A 2>/dev/null
ms=$(wait_metric lfm2_active_sequences 0 1000) || fail "non-streamed sequence still active 1 s after the client left"
ok "waiting non-streamed client gone: sequence freed after ${ms} ms"

# the server still answers, and counted the abandoned requests
http $T/after.json "$BASE/v1/completions" -d '{"prompt":"Hi","max_tokens":4,"temperature":0}'
expect_eq "request after disconnects" "$CODE" 200
expect_eq "tokens after disconnects" "$(jget $T/after.json d.usage.completion_tokens)" 4
curl -s "$BASE/metrics" | grep -q '^lfm2_requests_total{status="499"} [1-9]' || fail "abandoned requests not counted as 499"
ok "server keeps serving"
stop_server "$PID" || fail "exit status $? after SIGTERM"
