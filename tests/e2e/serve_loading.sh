#!/usr/bin/env bash
# serve_loading.sh: the socket listens before the model loads: /health and completions answer 503
# while loading (the "model" is a FIFO, so loading blocks until we open it), and a model that
# fails to load ends the server with exit status 1 and a message.
. "$(dirname "$0")/serve_common.inc"
T=$TMPDIR
mkfifo $T/model.fifo
LOG=$T/loading.log
"$LFM2" serve -m $T/model.fifo --port 0 2>"$LOG" &
PID=$!; SERVER_PIDS+=($PID)
PORT=""
for _ in $(seq 1 200); do
  PORT=$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\) .*|\1|p' "$LOG" | head -n 1)
  [ -n "$PORT" ] && break; sleep 0.05
done
[ -n "$PORT" ] || fail "server never listened"
BASE=http://127.0.0.1:$PORT
http $T/h.json "$BASE/health"
expect_eq "health while loading" "$CODE" 503
expect_eq "health body while loading" "$(jget $T/h.json d.error.code)" loading
curl -s -D $T/hdr -o $T/c.json -w '%{http_code}' "$BASE/v1/chat/completions" \
  -d '{"messages":[{"role":"user","content":"hi"}]}' > $T/code
expect_eq "completion while loading" "$(cat $T/code)" 503
grep -qi '^Retry-After: ' $T/hdr || fail "503 while loading without Retry-After"
http $T/m.json "$BASE/metrics"
expect_eq "metrics while loading" "$CODE" 200
grep -q '^lfm2_model_ready 0' $T/m.json || fail "model_ready should be 0 while loading"
ok "503 + Retry-After while loading, metrics served"
: > $T/model.fifo # a writer opens and closes the FIFO: the load goes on and fails (not a file)
wait_exit $PID 30; rc=$EXIT_RC
expect_eq "exit status after a failed load" "$rc" 1
grep -q 'error: .*model.fifo' "$LOG" || fail "no error naming the model file: $(cat "$LOG")"
ok "failed load: exit 1 with '$(grep error: "$LOG" | head -n 1)'"
rc=0; "$LFM2" serve -m $T/missing.gguf --port 0 2> $T/missing.log || rc=$?
expect_eq "exit status for a missing model" "$rc" 1
grep -q "missing.gguf" $T/missing.log || fail "no message naming the missing file"
grep -q "listening" $T/missing.log && fail "listened before noticing the model is missing"
ok "missing model: exit 1 before listening"
