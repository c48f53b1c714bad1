// serve_tool_choice.mjs: tool_choice "required", a named function and parallel_tool_calls false
// through the official OpenAI Node SDK. The synthetic model's weights are random, so every call
// that parses, names a declared tool and has arguments valid against its parameters is the
// constraint's work.
import OpenAI from "openai";
import { validate } from "./jsonschema.mjs";
setTimeout(() => { console.error("FAIL: still running after 300 s"); process.exit(1); }, 300000).unref();

const BASE = process.env.BASE, KEY = process.env.KEY;
const client = new OpenAI({ baseURL: BASE + "/v1", apiKey: KEY, maxRetries: 0, timeout: 120000 });
let failures = 0;
function check(cond, what) {
  if (!cond) { failures++; console.error("FAIL: " + what); }
}

const params = {
  get_weather: { type: "object", properties: { city: { type: "string", minLength: 1, maxLength: 12 },
    days: { type: "integer", minimum: 1, maximum: 7 }, units: { enum: ["c", "f"] }, hourly: { type: "boolean" } },
    required: ["city"], additionalProperties: false },
  get_time: { type: "object", properties: {} },
  "Calendar.add": { type: "object", properties: { title: { type: "string", maxLength: 10 },
    attendees: { type: "array", items: { type: "string", maxLength: 6 }, maxItems: 2 },
    when: { type: "object", properties: { day: { type: "integer", minimum: 1, maximum: 31 } }, required: ["day"] } },
    required: ["title", "when"] },
};
const tools = Object.entries(params).map(([name, parameters]) => ({ type: "function", function: { name, parameters } }));
const msgs = [{ role: "user", content: "Use a tool." }];

function checkCalls(choice, what, only, max) {
  check(choice.finish_reason === "tool_calls", `${what}: finish_reason ${choice.finish_reason}`);
  const calls = choice.message.tool_calls ?? [];
  check(calls.length >= 1, `${what}: no tool call in ${JSON.stringify(choice.message)}`);
  if (max) check(calls.length <= max, `${what}: ${calls.length} calls, at most ${max}`);
  check(choice.message.content === null || choice.message.content === "", `${what}: content ${JSON.stringify(choice.message.content)}`);
  for (const c of calls) {
    check(c.type === "function" && /^call_/.test(c.id), `${what}: call shape ${JSON.stringify(c)}`);
    check(c.function.name in params, `${what}: undeclared tool ${c.function.name}`);
    if (only) check(c.function.name === only, `${what}: ${c.function.name}, want ${only}`);
    let args;
    try { args = JSON.parse(c.function.arguments); } catch { check(false, `${what}: arguments not JSON: ${c.function.arguments}`); continue; }
    const e = validate(params[c.function.name], args);
    check(e === null, `${what}: ${c.function.name} arguments ${c.function.arguments}: ${e}`);
  }
  return calls;
}

// required: every choice that ends calls declared tools with valid arguments. The random weights
// pick "," or "]" after each call at random, so an unbounded list may run to max_tokens: at least
// some of these seeds must end.
let ended = 0;
for (let seed = 1; seed <= 6; seed++) {
  const r = await client.chat.completions.create({ model: "tiny", messages: msgs, tools, tool_choice: "required",
    max_tokens: 500, temperature: 1, seed, n: 2 });
  for (const c of r.choices) {
    if (c.finish_reason === "length") continue;
    ended++;
    checkCalls(c, `required seed ${seed} choice ${c.index}`);
  }
}
check(ended >= 4, `required: only ${ended} of 12 choices ended`);
// one call at temperature 0, whole and streamed: the same call
for (const temperature of [0, 1]) {
  const req = { model: "tiny", messages: msgs, tools, tool_choice: "required", parallel_tool_calls: false,
    max_tokens: 400, temperature, seed: 3, n: 2 };
  const r = await client.chat.completions.create(req);
  r.choices.forEach((c) => checkCalls(c, `required t=${temperature} choice ${c.index}`, null, 1));
  if (temperature === 0) check(JSON.stringify(r.choices[0].message.tool_calls.map((t) => t.function)) ===
    JSON.stringify(r.choices[1].message.tool_calls.map((t) => t.function)), "greedy choices agree");
  const acc = [[], []];
  for await (const ch of await client.chat.completions.create({ ...req, stream: true }))
    for (const c of ch.choices) for (const t of c.delta.tool_calls ?? []) {
      const a = (acc[c.index][t.index] ??= { name: "", arguments: "" });
      if (t.function?.name) a.name += t.function.name;
      if (t.function?.arguments) a.arguments += t.function.arguments;
    }
  for (let i = 0; i < 2; i++) {
    const whole = (r.choices[i].message.tool_calls ?? []).map((t) => [t.function.name, JSON.parse(t.function.arguments)]);
    const streamed = acc[i].map((t) => [t.name, JSON.parse(t.arguments)]);
    check(JSON.stringify(whole) === JSON.stringify(streamed), `required t=${temperature}: streamed calls ${JSON.stringify(streamed)} = ${JSON.stringify(whole)}`);
  }
}
console.log("ok: tool_choice required");

// a named function: only that one
for (const name of ["Calendar.add", "get_time"]) {
  for (let seed = 1; seed <= 3; seed++) {
    const r = await client.chat.completions.create({ model: "tiny", messages: msgs, tools,
      tool_choice: { type: "function", function: { name } }, max_tokens: 400, temperature: 1, seed });
    checkCalls(r.choices[0], `named ${name} seed ${seed}`, name);
  }
}
console.log("ok: tool_choice naming a function");

// parallel_tool_calls false: exactly one call
for (let seed = 1; seed <= 4; seed++) {
  const r = await client.chat.completions.create({ model: "tiny", messages: msgs, tools, tool_choice: "required",
    parallel_tool_calls: false, max_tokens: 400, temperature: 1, seed });
  const calls = checkCalls(r.choices[0], `one call seed ${seed}`, null, 1);
  check(calls.length === 1, `parallel_tool_calls false: ${calls.length} calls`);
}
console.log("ok: parallel_tool_calls false");

// errors: an undeclared name, and parameters that cannot be keyword arguments
for (const [body, want] of [
  [{ tools, tool_choice: { type: "function", function: { name: "nope" } } }, "nope"],
  [{ tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: { "bad-key": { type: "string" } }, required: ["bad-key"] } } }],
    tool_choice: "required" }, "bad-key"],
  [{ tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: { a: { type: "string", pattern: "x" } } } } }],
    tool_choice: "required" }, "\"pattern\" at tools[0].function.parameters/properties/a"],
]) {
  try {
    await client.chat.completions.create({ model: "tiny", messages: msgs, max_tokens: 5, ...body });
    check(false, `accepted: ${JSON.stringify(body)}`);
  } catch (e) {
    check(e.status === 400 && String(e.message).includes(want), `400 naming ${want}: got ${e.status} ${e.message}`);
  }
}
console.log("ok: tool_choice errors");

if (failures) { console.error(`${failures} failure(s)`); process.exit(1); }
console.log("serve_tool_choice: all ok");
