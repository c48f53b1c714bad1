// serve_concurrent.mjs: 8 streams at once give exactly the tokens each gives alone (temperature 0),
// and a long prompt prefilled in chunks does not stall running streams (BASE from the env).
setTimeout(() => { console.error("FAIL: still running after 240 s"); process.exit(1); }, 240000).unref();
const BASE = process.env.BASE;
let failures = 0;
const fail = m => { failures++; console.error("FAIL: " + m); };

// One streamed completion; returns its text, finish_reason and the arrival times of its chunks.
async function stream(body) {
  const res = await fetch(BASE + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true }) });
  if (res.status !== 200) throw new Error("status " + res.status + ": " + await res.text());
  let buf = "", text = "", finish = null, done = false;
  const times = [];
  const dec = new TextDecoder();
  for await (const part of res.body) {
    buf += dec.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i); buf = buf.slice(i + 2);
      if (!ev.startsWith("data: ")) continue;
      if (ev === "data: [DONE]") { done = true; continue; }
      const d = JSON.parse(ev.slice(6));
      if (d.error) throw new Error("error event: " + JSON.stringify(d.error));
      for (const c of d.choices) { text += c.text; if (c.finish_reason) finish = c.finish_reason; }
      times.push(performance.now());
    }
  }
  if (!done) throw new Error("no [DONE]");
  return { text, finish, times };
}

const prompts = ["Once upon a time", "The capital of France", "def fibonacci(n):", "Hello, my name is",
  "In 1492, Columbus", "The best way to cook rice", "Q: What is 2+2?\nA:", "Roses are red,"];
const req = p => ({ prompt: p, max_tokens: 48, temperature: 0 });
const solo = [];
for (const p of prompts) solo.push(await stream(req(p)));
for (let round = 0; round < 2; round++) {
  const together = await Promise.all(prompts.map(p => stream(req(p))));
  together.forEach((r, i) => {
    if (r.text !== solo[i].text || r.finish !== solo[i].finish)
      fail(`round ${round} prompt ${i}: concurrent ${JSON.stringify(r.text)} (${r.finish}) != solo ${JSON.stringify(solo[i].text)} (${solo[i].finish})`);
  });
}
console.log("ok: 8 concurrent streams equal their solo runs (2 rounds)");

// a long prompt joins while 3 streams run: they keep receiving chunks during its prefill
const bg = prompts.slice(0, 3).map(p => stream({ prompt: p, max_tokens: 200, temperature: 0 }));
await new Promise(r => setTimeout(r, 50));
const longPrompt = "The history of the world is long. ".repeat(160);
const t0 = performance.now();
const lr = await stream({ prompt: longPrompt, max_tokens: 4, temperature: 0 });
const t1 = performance.now();
const bgr = await Promise.all(bg);
const during = bgr.map(r => r.times.filter(t => t >= t0 && t <= t1).length);
console.log(`long prompt: ${(t1 - t0).toFixed(0)} ms; background chunks meanwhile: ${during.join(", ")}`);
if (lr.text.length === 0 && lr.finish !== "stop") fail("long prompt produced nothing");
if (bgr.some(r => r.times.length === 0)) fail("a background stream got nothing");
// a stream still running after the long prompt finished must have flowed during its prefill
bgr.forEach((r, i) => {
  if (r.times[r.times.length - 1] > t1 && during[i] < 2) fail(`stream ${i} stalled during the long prefill`);
});
if (failures) { console.error(failures + " failure(s)"); process.exit(1); }
console.log("serve_concurrent: all passed");
