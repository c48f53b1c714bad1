// serve_nginx.mjs: the client side of serve_nginx.sh, with the official OpenAI Node SDK.
// `routes`: through both nginx servers (NJS: docker/nginx.conf, MAP: the docs' map variant)
// to replicas A and B (host:port, as nginx's X-Lfm2-Replica header names them); writes each
// key's replica to STATE. `failover`: after B has stopped, every key reaches A.
import fs from "node:fs";
import OpenAI from "openai";
setTimeout(() => { console.error("FAIL: still running after 200 s"); process.exit(1); }, 200000).unref();

const { NJS, MAP, A, B, BASE_A, BASE_B, STATE } = process.env;
const mode = process.argv[2];
let failures = 0;
const check = (cond, what) => { if (!cond) { failures++; console.error("FAIL: " + what); } };
const name = r => (r === A ? "A" : r === B ? "B" : `?${r}`);
const clients = { njs: new OpenAI({ baseURL: NJS + "/v1", apiKey: "none", maxRetries: 0, timeout: 60000 }),
                  map: new OpenAI({ baseURL: MAP + "/v1", apiKey: "none", maxRetries: 0, timeout: 60000 }) };
const served = { [A]: 0, [B]: 0 };  // prompt tokens each replica answered, by nginx's header
const reused = { [A]: 0, [B]: 0 };  // and cached tokens

// One request; key.header -> X-Session-Id, key.user -> the body's "user". Returns the replica,
// the usage and the answer.
async function ask(variant, messages, key = {}, stream = false) {
  const params = { model: "tiny", messages, max_tokens: 6, temperature: 0, ...(key.user ? { user: key.user } : {}) };
  const opts = key.header ? { headers: { "X-Session-Id": key.header } } : {};
  if (stream) Object.assign(params, { stream: true, stream_options: { include_usage: true } });
  const { data, response } = await clients[variant].chat.completions.create(params, opts).withResponse();
  // $upstream_addr lists every replica tried ("B, A" when B refused): the last one answered
  const replica = (response.headers.get("x-lfm2-replica") ?? "").split(", ").pop();
  let usage, text = "";
  if (stream) {
    for await (const ch of data) { if (ch.usage) usage = ch.usage; for (const c of ch.choices) text += c.delta.content ?? ""; }
  } else { usage = data.usage; text = data.choices[0].message.content; }
  if (replica in served) { served[replica] += usage.prompt_tokens; reused[replica] += cached(usage) ?? 0; }
  return { replica, usage, text };
}
const cached = u => u?.prompt_tokens_details?.cached_tokens;
const words = (i, n) => Array.from({ length: n }, (_, j) => ["river", "stone", "lamp", "orbit", "maple", "signal", "harbor", "violet"][(i * 7 + j) % 8]).join(" ");

// A chat of `turns` turns (the last one streamed): one replica throughout, cached tokens on turn 2+.
async function chat(variant, key, turns, label) {
  const before = failures;
  const messages = [{ role: "system", content: `You answer briefly. Conversation ${label}.` }];
  const seen = [];
  let prev = 0;
  for (let t = 1; t <= turns; t++) {
    messages.push({ role: "user", content: `Turn ${t}: ${words(t, 40)}` });
    const r = await ask(variant, messages, key, t === turns);
    seen.push(`${name(r.replica)}:${r.usage.prompt_tokens}/${cached(r.usage)}`);
    check(r.replica === A || r.replica === B, `${label} turn ${t}: X-Lfm2-Replica ${r.replica} is neither replica`);
    check(typeof cached(r.usage) === "number", `${label} turn ${t}: usage.prompt_tokens_details.cached_tokens missing: ${JSON.stringify(r.usage)}`);
    // the whole previous prompt is reused: only the replica that served it holds it (another
    // one could at most share the system prompt's first tokens)
    if (t > 1) check(cached(r.usage) >= prev, `${label} turn ${t}: ${cached(r.usage)} cached tokens through nginx, ` +
                     `the previous turn's prompt was ${prev} (${seen.join(" ")})`);
    prev = r.usage.prompt_tokens;
    messages.push({ role: "assistant", content: r.text });
  }
  const reps = new Set(seen.map(s => s.split(":")[0]));
  check(reps.size === 1, `${label}: turns reached more than one replica: ${seen.join(" ")}`);
  if (failures === before) console.log(`ok: ${variant} ${label}: ${turns} turns on replica ${[...reps]} (replica:prompt/cached ${seen.join(" ")})`);
  return [...reps][0];
}

const one = [{ role: "user", content: "Hi" }];
if (mode === "routes") {
  const keys = Array.from({ length: 24 }, (_, i) => `session-${i}-${Math.random().toString(36).slice(2, 8)}`);
  const where = {};
  for (const variant of ["njs", "map"]) {
    // conversations keyed by the header and by the body's user field
    await chat(variant, { header: `chat-h-${variant}` }, 4, `X-Session-Id chat-h-${variant}`);
    await chat(variant, { user: `chat-u-${variant}` }, 4, `user chat-u-${variant}`);
    // every key three times, by header and by user: always the same replica, both replicas used
    for (const k of keys) {
      const got = [];
      for (const key of [{ header: k }, { user: k }, { header: k }]) got.push((await ask(variant, one, key)).replica);
      check(new Set(got).size === 1, `${variant} key ${k} reached ${got.map(name)}`);
      if (variant === "njs") where[k] = got[0];
      else check(got[0] === where[k], `key ${k}: njs sends it to ${name(where[k])}, map to ${name(got[0])}`);
    }
    const per = keys.reduce((m, k) => (m[name(where[k])] = (m[name(where[k])] ?? 0) + 1, m), {});
    check(Object.keys(per).length === 2, `${keys.length} keys all on one replica: ${JSON.stringify(per)}`);
    // the header wins over "user"
    const ka = keys.find(k => where[k] === A), kb = keys.find(k => where[k] === B);
    if (ka && kb) {
      check((await ask(variant, one, { header: kb, user: ka })).replica === B, `${variant}: header ${kb} (B) with user ${ka} (A) did not reach B`);
      check((await ask(variant, one, { header: ka, user: kb })).replica === A, `${variant}: header ${ka} (A) with user ${kb} (B) did not reach A`);
    }
    // no key: spread over both
    const free = new Set();
    for (let i = 0; i < 6; i++) free.add((await ask(variant, one)).replica);
    check(free.size === 2, `${variant}: requests without a key all reached ${[...free].map(name)}`);
    console.log(`ok: ${variant}: ${keys.length} keys x 3 requests each on one replica (${JSON.stringify(per)}), header over user, keyless spread`);
  }
  // the replicas' own counters agree with nginx's header
  for (const [r, base] of [[A, BASE_A], [B, BASE_B]]) {
    const m = await (await fetch(base + "/metrics")).text();
    const n = +(m.match(/^lfm2_prompt_tokens_total (\d+)/m) || [])[1];
    check(n === served[r], `replica ${name(r)} counted ${n} prompt tokens, nginx's header attributes ${served[r]} to it`);
    const c = +(m.match(/^lfm2_prompt_cache_tokens_reused_total (\d+)/m) || [])[1];
    check(c === reused[r], `replica ${name(r)} counted ${c} reused tokens, the responses nginx attributes to it ${reused[r]}`);
  }
  console.log(`ok: the replicas' lfm2_prompt_tokens_total and lfm2_prompt_cache_tokens_reused_total match the header ` +
              `(A ${served[A]}/${reused[A]}, B ${served[B]}/${reused[B]})`);
  fs.writeFileSync(STATE, JSON.stringify(where));
} else if (mode === "failover") {
  const where = JSON.parse(fs.readFileSync(STATE, "utf8"));
  for (const variant of ["njs", "map"]) {
    for (const [k, r] of Object.entries(where)) {
      const got = (await ask(variant, one, { header: k })).replica;
      check(got === A, `${variant}: key ${k} (was ${name(r)}) reached ${name(got)} with B stopped`);
    }
    // a conversation on the remaining replica still gets its cache
    await chat(variant, { header: `after-${variant}` }, 3, `after failover ${variant}`);
  }
  console.log(`ok: B stopped: all ${Object.keys(where).length} keys answered by A`);
} else {
  console.error("usage: serve_nginx.mjs routes|failover"); process.exit(2);
}
if (failures) { console.error(`${failures} check(s) failed`); process.exit(1); }
