#!/usr/bin/env bash
# serve_tools.sh: tool calls, streamed tool calls, reasoning and tool_choice through the official
# OpenAI Node SDK (serve_tools.mjs), for every chat-template family mkmodel writes. The weights are
# random, so the output is forced with logit_bias over flat logits (--logit-scale 0.02, see
# serve_tools.mjs); the vocab is trained on text holding the calls, so each call is a few
# distinct tokens.
. "$(dirname "$0")/serve_common.inc"
[ -d "$E2E_DIR/node_modules/openai" ] || fail "the openai npm package is missing: run make e2e-deps"
JINJA=$E2E_DIR/../oracle/node_modules/@huggingface/jinja
[ -d "$JINJA" ] || fail "@huggingface/jinja (node-llama-cpp's) is missing: run make oracle"
TRAIN=$TMPDIR/train.txt
for i in $(seq 1 300); do
  echo 'Sure. [get_weather(city="Paris"), get_time(zone=1)] Checking the weather now. ~'
  echo '<think>The user wants the weather</think> I will call the tool.'
  echo 'The weather in Paris is sunny, 18 degrees. Done ~'
done >"$TRAIN"
for fam in lfm2 lfm2.5 lfm2.5-dated; do
  MODEL=$TMPDIR/tools-$fam.gguf
  "$LFM2" mkmodel --preset tiny --seed 1 --train "$TRAIN" --logit-scale 0.02 --chat-template "$fam" -o "$MODEL" \
    >/dev/null 2>"$TMPDIR/mk-$fam.log" || { cat "$TMPDIR/mk-$fam.log" >&2; fail "mkmodel $fam"; }
  start_server "tools-$fam" --ctx 2048 --parallel 2
  grep -q "chat template: $fam\$" "$LOG" || fail "server did not detect the $fam template"
  BASE=$BASE FAMILY=$fam MODEL_PATH=$MODEL JINJA=$JINJA node "$E2E_DIR/serve_tools.mjs" ||
    fail "serve_tools.mjs ($fam)"
  stop_server "$PID" || fail "exit status $? after SIGTERM ($fam)"
  ok "family $fam"
done
