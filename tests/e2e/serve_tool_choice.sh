#!/usr/bin/env bash
# serve_tool_choice.sh: tool_choice "required", a named function and parallel_tool_calls false,
# enforced by constrained decoding, through the OpenAI Node SDK (serve_tool_choice.mjs).
. "$(dirname "$0")/serve_common.inc"
[ -d "$E2E_DIR/node_modules/openai" ] || fail "the openai npm package is missing: run make e2e-deps"
make_model
start_server tool_choice --alias tiny --api-key test-key --ctx 2048 --parallel 4
BASE=$BASE KEY=test-key node "$E2E_DIR/serve_tool_choice.mjs" || fail "serve_tool_choice.mjs"
stop_server "$PID" || fail "exit status $? after SIGTERM"
