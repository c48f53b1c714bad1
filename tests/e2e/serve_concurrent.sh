#!/usr/bin/env bash
# serve_concurrent.sh: continuous batching: 8 concurrent greedy streams equal their solo runs.
. "$(dirname "$0")/serve_common.inc"
make_model
start_server conc --parallel 8 --ctx 8192
BASE=$BASE node "$E2E_DIR/serve_concurrent.mjs" || fail "serve_concurrent.mjs"
curl -s "$BASE/metrics" | grep -q '^lfm2_active_sequences 0' || fail "sequences left active"
stop_server "$PID" || fail "exit status $? after SIGTERM"
