#!/usr/bin/env bash
# serve_concurrent.sh: continuous batching: 8 concurrent greedy streams equal their solo runs.
. "$(dirname "$0")/serve_common.inc"
make_model
start_server conc --parallel 8 --ctx 8192
BASE=$BASE node "$E2E_DIR/serve_concurrent.mjs" || fail "serve_concurrent.mjs"
curl -s "$BASE/metrics" | grep -q '^lfm2_active_sequences 0' || fail "sequences left active"
stop_server "$PID" || fail "exit status $? after SIGTERM"
# the same on a file written by llama.cpp's quantizer (Q4_0 weights, Q6_K embedding)
MODEL=$E2E_DIR/../data/models/mini-Q4_0.gguf
start_server conc_q4 --parallel 8 --ctx 8192
BASE=$BASE node "$E2E_DIR/serve_concurrent.mjs" || fail "serve_concurrent.mjs on mini-Q4_0"
stop_server "$PID" || fail "exit status $? after SIGTERM"
