#!/usr/bin/env bash
# serve_keepalive.sh: a stream's headers go out when it starts running, before a long prefill ends,
# and ": keep-alive" comments flow while the prefill keeps it silent (--keepalive 1).
. "$(dirname "$0")/serve_common.inc"
make_model
start_server ka --parallel 2 --ctx 8192 --batch 16 --keepalive 1
BASE=$BASE node --input-type=module -e '
const BASE = process.env.BASE;
const fail = m => { console.error("FAIL: " + m); process.exit(1); };
const unit = "The history of the world is long and full of turns. "; // 12 tokens
// measure this machine: prefill time of 60 units, then size the prompt for a prefill of >= 2.5 s
let t0 = performance.now();
const probe = await fetch(BASE + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ prompt: unit.repeat(60), max_tokens: 1, temperature: 0 }) });
if (probe.status !== 200) fail("probe status " + probe.status);
await probe.text();
const reps = Math.min(300, Math.ceil(60 * 2500 / (performance.now() - t0)));
const prompt = unit.repeat(reps);
t0 = performance.now();
const res = await fetch(BASE + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ prompt, max_tokens: 3, temperature: 0, stream: true }) });
const tHeaders = performance.now() - t0;
if (res.status !== 200) fail("status " + res.status);
if (res.headers.get("content-type") !== "text/event-stream") fail("content-type " + res.headers.get("content-type"));
const dec = new TextDecoder(); let buf = "", tFirstData = null, comments = 0, commentsBefore = 0, done = false;
for await (const part of res.body) {
  buf += dec.decode(part, { stream: true });
  let i;
  while ((i = buf.indexOf("\n\n")) >= 0) {
    const ev = buf.slice(0, i); buf = buf.slice(i + 2);
    if (ev.startsWith(":")) { comments++; if (tFirstData === null) commentsBefore++; }
    else if (ev === "data: [DONE]") done = true;
    else if (ev.startsWith("data: ") && tFirstData === null) tFirstData = performance.now() - t0;
  }
}
if (!done) fail("no [DONE]");
console.log(`headers after ${tHeaders.toFixed(0)} ms, first token after ${tFirstData.toFixed(0)} ms, ${commentsBefore} keep-alive comment(s) before it`);
if (tFirstData < 1500) { console.log(`prefill of ${reps} units too fast here to check keep-alives (needs > 1.5 s)`); }
else {
  if (tHeaders > tFirstData - 1000) fail("headers did not go out before the prefill finished");
  if (commentsBefore < 1) fail("no keep-alive comment during a " + tFirstData.toFixed(0) + " ms prefill");
}
console.log("serve_keepalive: ok");
' || fail "keep-alive check"
stop_server "$PID" || fail "exit status $? after SIGTERM"
