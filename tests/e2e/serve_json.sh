#!/usr/bin/env bash
# serve_json.sh: response_format json_schema / json_object through the OpenAI Node SDK (see
# serve_json.mjs): random weights, so every valid answer is the constraint's work.
. "$(dirname "$0")/serve_common.inc"
[ -d "$E2E_DIR/node_modules/openai" ] || fail "the openai npm package is missing: run make e2e-deps"
make_model
start_server json --alias tiny --api-key test-key --ctx 2048 --parallel 4
BASE=$BASE KEY=test-key node "$E2E_DIR/serve_json.mjs" || fail "serve_json.mjs"
stop_server "$PID" || fail "exit status $? after SIGTERM"
