#!/usr/bin/env bash
# serve_openai.sh: the official OpenAI Node SDK against `lfm2 serve` (see serve_openai.mjs).
. "$(dirname "$0")/serve_common.inc"
[ -d "$E2E_DIR/node_modules/openai" ] || fail "the openai npm package is missing: run make e2e-deps"
make_model
start_server sdk --alias tiny --api-key test-key --ctx 2048 --parallel 4
BASE=$BASE KEY=test-key node "$E2E_DIR/serve_openai.mjs" || fail "serve_openai.mjs"
stop_server "$PID" || fail "exit status $? after SIGTERM"
