#!/usr/bin/env bash
# serve_badinput.sh: the bad-input suite (serve_badinput.mjs) against a running server.
. "$(dirname "$0")/serve_common.inc"
make_model
start_server bad --parallel 4 --ctx 4096
EOS=$(curl -s "$BASE/tokenize" -d '{"content":"<|im_end|>"}' | node -e 'process.stdin.on("data",d=>console.log(JSON.parse(d).tokens[0]))')
BASE=$BASE EOS=$EOS node "$E2E_DIR/serve_badinput.mjs" || fail "serve_badinput.mjs"
kill -0 "$PID" || fail "server died"
stop_server "$PID" || fail "exit status $? after SIGTERM"
