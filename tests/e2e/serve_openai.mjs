// serve_openai.mjs: drives `lfm2 serve` with the official OpenAI Node SDK (BASE, KEY from the env).
import OpenAI from "openai";
setTimeout(() => { console.error("FAIL: still running after 240 s"); process.exit(1); }, 240000).unref();

const BASE = process.env.BASE, KEY = process.env.KEY;
const client = new OpenAI({ baseURL: BASE + "/v1", apiKey: KEY, maxRetries: 0, timeout: 60000 });
let failures = 0;
function check(cond, what) {
  if (!cond) { failures++; console.error("FAIL: " + what); }
}
function eq(a, b, what) {
  check(JSON.stringify(a) === JSON.stringify(b), `${what}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`);
}
const msgs = [{ role: "system", content: "You are terse." }, { role: "user", content: "Name three colors." }];
// the tokenizer's id for <|im_end|> (EOS): banned where a test needs an exact length
const eos = (await (await fetch(BASE + "/tokenize", { method: "POST", headers: { Authorization: "Bearer " + KEY },
  body: JSON.stringify({ content: "<|im_end|>" }) })).json()).tokens[0];
const noEos = { [eos]: -100 };

async function streamChat(params) {
  const s = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  const text = {}, finish = {};
  let usage = null, first = true;
  for await (const ch of s) {
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) {
      if (first) { eq(c.delta.role, "assistant", "first delta role"); first = false; }
      text[c.index] = (text[c.index] ?? "") + (c.delta.content ?? "");
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { text, finish, usage };
}

// chat, not streamed and streamed: same text at temperature 0, usage on both
const chat = await client.chat.completions.create({ model: "tiny", messages: msgs, max_tokens: 16, temperature: 0 });
eq(chat.object, "chat.completion", "chat object");
eq(chat.choices.length, 1, "one choice");
eq(chat.choices[0].message.role, "assistant", "role");
check(typeof chat.choices[0].message.content === "string", "content is a string");
check(["stop", "length"].includes(chat.choices[0].finish_reason), "finish_reason");
eq(chat.usage.total_tokens, chat.usage.prompt_tokens + chat.usage.completion_tokens, "total_tokens");
const sc = await streamChat({ model: "tiny", messages: msgs, max_tokens: 16, temperature: 0 });
eq(sc.text[0], chat.choices[0].message.content, "streamed chat text = non-streamed");
eq(sc.finish[0], chat.choices[0].finish_reason, "streamed finish_reason");
eq(sc.usage?.completion_tokens, chat.usage.completion_tokens, "streamed usage");
console.log("ok: chat streamed and not, usage");

// completions, not streamed and streamed
const cm = await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 12, temperature: 0 });
eq(cm.object, "text_completion", "completion object");
let ctext = "", cfin = null, cusage = null;
for await (const ch of await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 12,
  temperature: 0, stream: true, stream_options: { include_usage: true } })) {
  if (ch.usage) cusage = ch.usage;
  for (const c of ch.choices) { ctext += c.text; if (c.finish_reason) cfin = c.finish_reason; }
}
eq(ctext, cm.choices[0].text, "streamed completion text");
eq(cfin, cm.choices[0].finish_reason, "streamed completion finish");
eq(cusage?.prompt_tokens, cm.usage.prompt_tokens, "streamed completion usage");
console.log("ok: completions streamed and not");

// length: EOS banned, exactly max_tokens tokens and finish_reason length
const len = await client.chat.completions.create({ model: "tiny", messages: msgs, max_tokens: 5, temperature: 0, logit_bias: noEos });
eq(len.choices[0].finish_reason, "length", "finish_reason length");
eq(len.usage.completion_tokens, 5, "length: completion_tokens");
console.log("ok: length");

// stop: a string from the middle of the greedy text cuts the output just before it
const long = await client.completions.create({ model: "tiny", prompt: "The weather today", max_tokens: 40, temperature: 0, logit_bias: noEos });
const full = long.choices[0].text;
let stop = null;
for (let i = 6; i + 3 <= full.length && !stop; i++) {
  const cand = full.slice(i, i + 3);
  if (cand.trim().length === 3 && full.indexOf(cand) === i && /^[\x20-\x7e]+$/.test(cand)) stop = cand;
}
check(stop !== null, "found a stop candidate in " + JSON.stringify(full));
if (stop) {
  const st = await client.completions.create({ model: "tiny", prompt: "The weather today", max_tokens: 40, temperature: 0, logit_bias: noEos, stop: [stop, "zzzqqqnever"] });
  eq(st.choices[0].text, full.slice(0, full.indexOf(stop)), "text before the stop string (" + JSON.stringify(stop) + ")");
  eq(st.choices[0].finish_reason, "stop", "finish_reason stop");
  let stext = "", sfin = null;
  for await (const ch of await client.completions.create({ model: "tiny", prompt: "The weather today", max_tokens: 40, temperature: 0, logit_bias: noEos, stop, stream: true }))
    for (const c of ch.choices) { stext += c.text; if (c.finish_reason) sfin = c.finish_reason; }
  eq(stext, st.choices[0].text, "streamed text before the stop string");
  eq(sfin, "stop", "streamed finish_reason stop");
  // logprobs stop with the text: the tokens that start inside the stop string are not listed
  const req = { model: "tiny", prompt: "The weather today", max_tokens: 40, temperature: 0, logit_bias: noEos, logprobs: 1 };
  const fl = await client.completions.create(req), sl = await client.completions.create({ ...req, stop });
  const cut = Buffer.byteLength(full.slice(0, full.indexOf(stop)), "utf8"); /* text_offset counts bytes */
  const want = fl.choices[0].logprobs.text_offset.filter(o => o < cut).length;
  check(want < fl.choices[0].logprobs.tokens.length, "the stop string starts a token or lies inside one");
  eq(sl.choices[0].logprobs.tokens.length, want, "logprobs end with the text before the stop string");
  eq(sl.choices[0].logprobs.tokens.join(""), fl.choices[0].logprobs.tokens.slice(0, want).join(""), "the same tokens as without the stop");
  let slp = 0;
  for await (const ch of await client.completions.create({ ...req, stop, stream: true }))
    for (const c of ch.choices) slp += c.logprobs ? c.logprobs.tokens.length : 0;
  eq(slp, want, "streamed logprobs end with the text before the stop string");
}
console.log("ok: stop (" + JSON.stringify(stop) + ")");

// n = 2: two choices, usage counts both; streamed too
const two = await client.chat.completions.create({ model: "tiny", messages: msgs, max_tokens: 8, temperature: 1, seed: 7, n: 2, logit_bias: noEos });
eq(two.choices.map(c => c.index), [0, 1], "n=2 indexes");
eq(two.usage.completion_tokens, 16, "n=2 usage counts both choices");
const two_s = await streamChat({ model: "tiny", messages: msgs, max_tokens: 8, temperature: 1, seed: 7, n: 2, logit_bias: noEos });
eq(Object.keys(two_s.text).sort(), ["0", "1"], "n=2 streamed indexes");
eq([two_s.text[0], two_s.text[1]], [two.choices[0].message.content, two.choices[1].message.content], "n=2 streamed = non-streamed (same seed)");
console.log("ok: n=2");

// seed determinism
const seeded = async seed => (await client.chat.completions.create({ model: "tiny", messages: msgs, max_tokens: 16, temperature: 1, top_k: 0, top_p: 1, min_p: 0, seed })).choices[0].message.content;
const a = await seeded(42), b = await seeded(42);
eq(a, b, "same seed, same text");
const others = await Promise.all([43, 44, 45].map(seeded));
check(others.some(t => t !== a), "different seeds all gave the same text");
console.log("ok: seed determinism");

// logprobs
const lp = await client.chat.completions.create({ model: "tiny", messages: msgs, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3, logit_bias: noEos });
eq(lp.choices[0].logprobs.content.length, 6, "one logprob entry per token");
// EOS ends the text and is not listed: pushed to be the first token, it leaves no entry at all
const eosq = await client.completions.create({ model: "tiny", prompt: "The weather today", max_tokens: 20, temperature: 0, logprobs: 1, logit_bias: { [eos]: 100 } });
eq([eosq.choices[0].finish_reason, eosq.usage.completion_tokens, eosq.choices[0].logprobs.tokens.length], ["stop", 1, 0], "EOS has no logprob entry");
check(lp.choices[0].logprobs.content.every(t => t.top_logprobs.length === 3 && t.logprob <= 0), "top_logprobs");
check(lp.choices[0].logprobs.content.every(t => Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4), "greedy token is the top one");
console.log("ok: logprobs");

// errors surface as SDK errors
async function expectError(fn, cls, status, what, param) {
  try { await fn(); check(false, what + ": no error"); }
  catch (e) {
    check(e instanceof cls, `${what}: ${e.constructor.name}, want ${cls.name}`);
    eq(e.status, status, what + " status");
    if (param) check((e.param ?? "") === param || (e.message ?? "").includes(param), `${what}: error names ${param}: ${e.message}`);
  }
}
await expectError(() => client.chat.completions.create({ model: "tiny", messages: msgs, temperature: 5 }), OpenAI.BadRequestError, 400, "temperature 5", "temperature");
await expectError(() => client.chat.completions.create({ model: "tiny", messages: [] }), OpenAI.BadRequestError, 400, "no messages", "messages");
await expectError(() => client.chat.completions.create({ model: "tiny", messages: msgs, tools: [{ type: "function", function: { name: "f", parameters: {} } }], tool_choice: { type: "function", function: { name: "g" } } }), OpenAI.BadRequestError, 400, "tool_choice not in tools", "tool_choice");
await expectError(() => client.completions.create({ model: "tiny", prompt: "word ".repeat(3000), max_tokens: 2 }), OpenAI.BadRequestError, 400, "context length");
await expectError(() => client.chat.completions.create({ model: "tiny", messages: msgs, n: 100 }), OpenAI.BadRequestError, 400, "n=100", "n");
const bad = new OpenAI({ baseURL: BASE + "/v1", apiKey: "wrong", maxRetries: 0 });
await expectError(() => bad.chat.completions.create({ model: "tiny", messages: msgs }), OpenAI.AuthenticationError, 401, "wrong key");
await expectError(() => client.chat.completions.create({ model: "tiny", messages: msgs, stream: true, top_p: -1 }), OpenAI.BadRequestError, 400, "streamed request with bad top_p", "top_p");
const models = await client.models.list();
eq(models.data.map(m => m.id), ["tiny"], "models.list");
console.log("ok: errors as SDK errors, models.list");

if (failures) { console.error(failures + " failure(s)"); process.exit(1); }
console.log("serve_openai: all passed");
