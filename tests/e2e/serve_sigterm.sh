#!/usr/bin/env bash
# serve_sigterm.sh: SIGTERM drains (streams in flight complete, new connections refused, exit 0);
# past the drain timeout streams end with an error event; a second signal exits at once.
. "$(dirname "$0")/serve_common.inc"
make_model
T=$TMPDIR
eos_id() { curl -s "$BASE/tokenize" -d '{"content":"<|im_end|>"}' | node -e 'process.stdin.on("data",d=>console.log(JSON.parse(d).tokens[0]))'; }
# wait_streams N FILES...: until every file holds at least N data events
wait_streams() {
  local n=$1; shift
  for _ in $(seq 1 250); do
    local all=1
    for f in "$@"; do [ "$(cat "$f" 2>/dev/null | grep -c '^data: ')" -ge "$n" ] || all=0; done
    [ $all = 1 ] && return 0
    sleep 0.02
  done
  fail "streams did not start"
}

# 1. drain: three streams in flight complete normally, exit status 0
start_server drain --parallel 4 --ctx 4096
EOS=$(eos_id)
pids=()
for i in 1 2 3; do
  curl -sN -o $T/d$i.sse "$BASE/v1/completions" \
    -d "{\"prompt\":\"Story $i:\",\"max_tokens\":400,\"temperature\":0,\"logit_bias\":{\"$EOS\":-100},\"stream\":true}" &
  pids+=($!); CLIENT_PIDS+=($!)
done
wait_streams 3 $T/d1.sse $T/d2.sse $T/d3.sse
kill -TERM "$PID"
sleep 0.3
curl -s -o /dev/null --max-time 2 "$BASE/health"; rc=$?
[ $rc = 7 ] || [ $rc = 52 ] || [ $rc = 56 ] || fail "a new connection during the drain was not refused (curl exit $rc)"
wait_exit "$PID" 60; rc=$EXIT_RC
expect_eq "exit status after drain" "$rc" 0
for i in 1 2 3; do
  wait "${pids[$((i-1))]}"
  tail -n 2 $T/d$i.sse | head -n 1 | grep -qx 'data: \[DONE\]' || fail "stream $i did not finish with [DONE]"
  grep -q '"finish_reason":"length"' $T/d$i.sse || fail "stream $i has no finish_reason length"
  n=$(grep '^data: {' $T/d$i.sse | grep -vc '"finish_reason":"length"')
  [ "$n" -ge 300 ] || fail "stream $i delivered only $n token events"
done
grep -q 'draining' "$LOG" || fail "no drain message in the log"
ok "SIGTERM: 3 streams in flight completed, new connections refused, exit 0"

# 2. drain timeout: streams that cannot finish in time get an error event, still exit 0
start_server timeout --parallel 4 --ctx 16384 --drain-timeout 1
EOS=$(eos_id)
pids=()
for i in 1 2; do
  curl -sN -o $T/t$i.sse "$BASE/v1/completions" \
    -d "{\"prompt\":\"Story $i:\",\"max_tokens\":16000,\"temperature\":1,\"logit_bias\":{\"$EOS\":-100},\"stream\":true}" &
  pids+=($!); CLIENT_PIDS+=($!)
done
wait_streams 3 $T/t1.sse $T/t2.sse
t0=$(date +%s%3N)
kill -TERM "$PID"
wait_exit "$PID" 60; rc=$EXIT_RC
ms=$(( $(date +%s%3N) - t0 ))
expect_eq "exit status after drain timeout" "$rc" 0
[ $ms -lt 5000 ] || fail "drain with a 1 s timeout took $ms ms"
for i in 1 2; do
  wait "${pids[$((i-1))]}"
  grep -q '^data: {"error":' $T/t$i.sse || fail "stream $i ended without an error event"
  grep -q '^data: \[DONE\]' $T/t$i.sse && fail "stream $i claims [DONE] after an error"
done
ok "drain timeout: error events, exit 0 after $ms ms"

# 2b. the same error reaches an OpenAI SDK client as an APIError from the stream
start_server sdkerr --parallel 2 --ctx 16384 --drain-timeout 1
BASE=$BASE PID=$PID EOS=$(eos_id) node "$E2E_DIR/serve_stream_error.mjs" || fail "serve_stream_error.mjs"
wait_exit "$PID" 30
expect_eq "exit status after drain timeout (SDK client)" "$EXIT_RC" 0

# 3. a second signal exits at once
start_server twice --parallel 2 --ctx 16384
EOS=$(eos_id)
curl -sN -o $T/x.sse "$BASE/v1/completions" \
  -d "{\"prompt\":\"Go\",\"max_tokens\":16000,\"temperature\":1,\"logit_bias\":{\"$EOS\":-100},\"stream\":true}" &
CLIENT_PIDS+=($!)
wait_streams 3 $T/x.sse
t0=$(date +%s%3N)
kill -TERM "$PID"; sleep 0.2; kill -INT "$PID"
wait_exit "$PID" 60; rc=$EXIT_RC
ms=$(( $(date +%s%3N) - t0 ))
[ "$rc" != 0 ] || fail "second signal: exit status 0, want non-zero"
[ $ms -lt 1500 ] || fail "second signal took $ms ms"
ok "second signal: exit $rc after $ms ms"
