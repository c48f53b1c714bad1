#!/usr/bin/env bash
# load.sh: N streaming clients against `lfm2 serve` on loopback: aggregate tok/s and TTFT, next to
# the engine's own figures from `lfm2 bench` (a measurement script, not a test).
# usage: tests/bench/load.sh [-m MODEL] [-c CLIENTS] [-n TOKENS] [-p PROMPT_TOKENS] [-t THREADS]
# Default model: build/bench/lfm2-350m-q4_0.gguf (made with `lfm2 mkmodel --preset 350m --type q4_0`).
set -u
cd "$(dirname "$0")/../.."
LFM2=${LFM2:-$PWD/build/lfm2}
MODEL=build/bench/lfm2-350m-q4_0.gguf; CLIENTS=8; TOKENS=64; PROMPT=100; THREADS=0
while [ $# -gt 0 ]; do
  case $1 in
    -m) MODEL=$2; shift 2;; -c) CLIENTS=$2; shift 2;; -n) TOKENS=$2; shift 2;;
    -p) PROMPT=$2; shift 2;; -t) THREADS=$2; shift 2;;
    -h|--help) sed -n '2,5p' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
[ -x "$LFM2" ] || { echo "build the binary first: make build/lfm2" >&2; exit 1; }
if [ ! -f "$MODEL" ]; then
  echo "making $MODEL ..." >&2
  mkdir -p "$(dirname "$MODEL")"
  "$LFM2" mkmodel --preset 350m --type q4_0 -o "$MODEL" >&2 || exit 1
fi
TMP=$(mktemp -d); SRV=""
trap '[ -n "$SRV" ] && kill -9 $SRV 2>/dev/null; rm -rf "$TMP"' EXIT

echo "engine: lfm2 bench -p $PROMPT -n $TOKENS -b $CLIENTS ..." >&2
tflag=(); [ "$THREADS" -gt 0 ] && tflag=(-t "$THREADS")
"$LFM2" bench -m "$MODEL" -p "$PROMPT" -n "$TOKENS" -b "$CLIENTS" -r 3 "${tflag[@]}" --json > "$TMP/bench.json" ||
  { echo "lfm2 bench failed" >&2; exit 1; }

"$LFM2" serve -m "$MODEL" --port 0 --parallel "$CLIENTS" --ctx $((PROMPT + TOKENS + 64)) \
  --threads "$THREADS" 2> "$TMP/serve.log" &
SRV=$!
PORT=""
for _ in $(seq 1 600); do
  PORT=$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\) .*|\1|p' "$TMP/serve.log" | head -n 1)
  [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { cat "$TMP/serve.log" >&2; exit 1; }

BASE=http://127.0.0.1:$PORT CLIENTS=$CLIENTS TOKENS=$TOKENS PROMPT=$PROMPT BENCH=$TMP/bench.json node --input-type=module -e '
const { BASE, BENCH } = process.env;
const C = +process.env.CLIENTS, N = +process.env.TOKENS, P = +process.env.PROMPT;
const post = (path, body) => fetch(BASE + path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
let text = "";
for (let i = 0; (await (await post("/tokenize", { content: text })).json()).tokens.length < P + 8; i++)
  text += ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dogs. "][i % 8] + i + " ";
const ids = (await (await post("/tokenize", { content: text, add_special: true })).json()).tokens;
const eos = (await (await post("/tokenize", { content: "<|im_end|>" })).json()).tokens[0];
// one stream; k varies the prompt so no two clients share a prefix. node:http with the SSE events
// cut at blank lines and one JSON.parse each: fetch (undici web streams) took ~1.8x the CPU,
// and on loopback every cycle the client burns is taken from the server under test
const http = await import("node:http");
function stream(k, maxTokens) {
  const prompt = ids.slice(0, P); prompt[P - 1] = ids[(P + k) % ids.length];
  const body = JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, stream: true,
    logit_bias: { [eos]: -100 }, stream_options: { include_usage: true } });
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(BASE + "/v1/completions", { method: "POST", agent: false,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } }, res => {
      res.setEncoding("utf8");
      let buf = "", first = null, n = 0; const times = [];
      res.on("data", part => {
        buf += part;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          if (!ev.startsWith("data: {")) continue;
          const d = JSON.parse(ev.slice(6));
          if (d.choices?.[0]?.text) { const t = performance.now(); if (first === null) first = t; times.push(t); }
          if (d.usage) n = d.usage.completion_tokens;
        }
      });
      res.on("end", () => resolve({ t0, ttft: first - t0, first, end: performance.now(), n, times }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}
const median = a => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
await stream(0, 2); // warm-up
const idle = [];
for (let r = 0; r < 5; r++) idle.push((await stream(r, 1)).ttft);
const cpu0 = process.cpuUsage();
const runs = await Promise.all(Array.from({ length: C }, (_, k) => stream(k + 1, N)));
const cpu = process.cpuUsage(cpu0);
const start = Math.min(...runs.map(r => r.t0)), end = Math.max(...runs.map(r => r.end));
const total = runs.reduce((a, r) => a + r.n, 0);
// steady state: the window in which every client is decoding (from the last first token to the
// earliest last token); the rate of each stream in it counts intervals between its tokens, not tokens
// (a window of k steps holds k + 1 or k token arrivals, which biased short runs by a step)
const w0 = Math.max(...runs.map(r => r.first)), w1 = Math.min(...runs.map(r => r.times[r.times.length - 1]));
let steady = 0;
for (const r of runs) {
  const tw = r.times.filter(t => t >= w0 && t <= w1);
  if (tw.length < 2 || tw[tw.length - 1] <= tw[0]) { steady = NaN; break; }
  steady += (tw.length - 1) / ((tw[tw.length - 1] - tw[0]) / 1000);
}
const b = JSON.parse((await import("node:fs")).readFileSync(BENCH, "utf8"));
const engB = b.batched_tok_s[String(C)], pp = b.pp_tok_s, tg = b.tg_tok_s;
const ttftIdeal = 1000 * (P / pp + 1 / tg);
const out = { clients: C, tokens: N, prompt_tokens: P, aggregate_tok_s: +(total / ((end - start) / 1000)).toFixed(2),
  steady_tok_s: +steady.toFixed(2), engine_batched_tok_s: engB, steady_vs_engine: +(steady / engB).toFixed(3),
  ttft_idle_ms: +median(idle).toFixed(1), ttft_ideal_ms: +ttftIdeal.toFixed(1), ttft_vs_ideal: +(median(idle) / ttftIdeal).toFixed(3),
  ttft_loaded_median_ms: +median(runs.map(r => r.ttft)).toFixed(1), ttft_loaded_max_ms: +Math.max(...runs.map(r => r.ttft)).toFixed(1),
  engine_prefill_tok_s: pp, engine_decode_tok_s: tg,
  client_cpu_ms_per_token: +((cpu.user + cpu.system) / 1000 / total).toFixed(4) };
console.log(JSON.stringify(out));
console.error(`${C} clients x ${N} tokens, ${P}-token prompts:
  aggregate ${out.aggregate_tok_s} tok/s (with prefill); steady decode ${out.steady_tok_s} tok/s = ${(100 * out.steady_vs_engine).toFixed(1)}% of lfm2 bench -b ${C} (${engB} tok/s; target >= 85%)
  TTFT idle ${out.ttft_idle_ms} ms vs prefill + one decode step ${out.ttft_ideal_ms} ms = ${(100 * out.ttft_vs_ideal).toFixed(1)}% (target <= 120%)
  TTFT under load: median ${out.ttft_loaded_median_ms} ms, max ${out.ttft_loaded_max_ms} ms
  client CPU ${(1000 * out.client_cpu_ms_per_token).toFixed(1)} us per token (on loopback, taken from the cores the server runs on)`);
' 2>&1 || { echo "load client failed" >&2; exit 1; }
kill -TERM $SRV; wait $SRV; SRV=""
