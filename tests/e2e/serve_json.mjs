// serve_json.mjs: structured output through the official OpenAI Node SDK. The synthetic model's
// weights are random, so whatever parses and validates here is the constraint's doing. Every answer
// is parsed and checked by the small JSON Schema validator below (the subset lfm2 supports).
import OpenAI from "openai";
import { validate } from "./jsonschema.mjs";
setTimeout(() => { console.error("FAIL: still running after 400 s"); process.exit(1); }, 400000).unref();

const BASE = process.env.BASE, KEY = process.env.KEY;
const client = new OpenAI({ baseURL: BASE + "/v1", apiKey: KEY, maxRetries: 0, timeout: 120000 });
let failures = 0;
function check(cond, what) {
  if (!cond) { failures++; console.error("FAIL: " + what); }
}

const schemas = {
  person: {
    type: "object",
    properties: {
      name: { type: "string", minLength: 1, maxLength: 16 },
      age: { type: "integer", minimum: 0, maximum: 120 },
      email: { type: ["string", "null"], maxLength: 24 },
      tags: { type: "array", items: { enum: ["red", "green", "blue"] }, minItems: 1, maxItems: 3 },
      score: { type: "number", exclusiveMinimum: 0, maximum: 1 },
      address: { type: "object", properties: { city: { type: "string", maxLength: 10 }, zip: { type: "string", maxLength: 5 } },
        required: ["city"], additionalProperties: false },
      active: { type: "boolean" },
    },
    required: ["name", "age", "tags", "active"],
    additionalProperties: false,
  },
  tuple: { type: "array", prefixItems: [{ const: "point" }, { type: "integer", minimum: -5, maximum: 5 }, { type: "integer", minimum: 10, maximum: 12 }], items: false },
  shapes: {
    $defs: {
      circle: { type: "object", properties: { kind: { const: "circle" }, r: { type: "number", minimum: 0, maximum: 10 } }, required: ["kind", "r"] },
      rect: { type: "object", properties: { kind: { const: "rect" }, w: { type: "integer", minimum: 1, maximum: 9 }, h: { type: "integer", minimum: 1, maximum: 9 } }, required: ["kind", "w", "h"] },
    },
    type: "object",
    properties: { shapes: { type: "array", items: { oneOf: [{ $ref: "#/$defs/circle" }, { $ref: "#/$defs/rect" }] }, minItems: 1, maxItems: 3 } },
    required: ["shapes"],
  },
  tree: {
    $defs: { node: { type: "object", properties: { v: { type: "integer", minimum: 0, maximum: 9 },
      kids: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 2 } }, required: ["v"] } },
    $ref: "#/$defs/node",
  },
  word: { type: "string", minLength: 3, maxLength: 8 },
};

const msgs = [{ role: "user", content: "Answer in JSON." }];
function parseValid(text, schema, what) {
  let v;
  try { v = JSON.parse(text); } catch (e) { check(false, `${what}: not JSON: ${JSON.stringify(text)}`); return undefined; }
  const e = validate(schema, v);
  check(e === null, `${what}: ${e} in ${text}`);
  return v;
}

// json_schema: non-streamed and streamed, greedy and sampled, n = 2: every choice validates
for (const [name, schema] of Object.entries(schemas)) {
  const rf = { type: "json_schema", json_schema: { name, schema, strict: true } };
  for (const temperature of [0, 1]) {
    const r = await client.chat.completions.create({ model: "tiny", messages: msgs, response_format: rf, max_tokens: 600,
      temperature, seed: 7, n: 2 });
    for (const c of r.choices) {
      check(c.finish_reason === "stop", `${name} t=${temperature}: finish_reason ${c.finish_reason}`);
      parseValid(c.message.content, schema, `${name} t=${temperature} choice ${c.index}`);
    }
    if (temperature === 0) check(r.choices[0].message.content === r.choices[1].message.content, `${name}: greedy choices agree`);
    const s = await client.chat.completions.create({ model: "tiny", messages: msgs, response_format: rf, max_tokens: 600,
      temperature, seed: 7, n: 2, stream: true });
    const text = ["", ""];
    for await (const ch of s) for (const c of ch.choices) text[c.index] += c.delta.content ?? "";
    for (let i = 0; i < 2; i++) {
      parseValid(text[i], schema, `${name} streamed t=${temperature} choice ${i}`);
      check(text[i] === r.choices[i].message.content, `${name} t=${temperature}: streamed = non-streamed (choice ${i})`);
    }
  }
  console.log(`ok: json_schema ${name}`);
}

// json_object: one JSON object, streamed the same
{
  const r = await client.chat.completions.create({ model: "tiny", messages: msgs, response_format: { type: "json_object" },
    max_tokens: 800, temperature: 0 });
  check(r.choices[0].finish_reason === "stop", `json_object finish_reason ${r.choices[0].finish_reason}`);
  const v = parseValid(r.choices[0].message.content, { type: "object" }, "json_object");
  check(v !== null && typeof v === "object" && !Array.isArray(v), "json_object is an object");
  let t = "";
  for await (const ch of await client.chat.completions.create({ model: "tiny", messages: msgs,
    response_format: { type: "json_object" }, max_tokens: 800, temperature: 0, stream: true })) t += ch.choices[0]?.delta.content ?? "";
  check(t === r.choices[0].message.content, "json_object streamed = non-streamed");
  for (let seed = 1; seed <= 4; seed++) {
    const q = await client.chat.completions.create({ model: "tiny", messages: msgs, response_format: { type: "json_object" },
      max_tokens: 800, temperature: 1, seed });
    if (q.choices[0].finish_reason === "stop") parseValid(q.choices[0].message.content, { type: "object" }, `json_object seed ${seed}`);
    else check(q.choices[0].finish_reason === "length", "json_object finish_reason");
  }
  console.log("ok: json_object");
}

// completions accept response_format too
{
  const r = await client.completions.create({ model: "tiny", prompt: "JSON:", max_tokens: 300, temperature: 0,
    response_format: { type: "json_schema", json_schema: { name: "w", schema: schemas.word } } });
  parseValid(r.choices[0].text, schemas.word, "completions json_schema");
  console.log("ok: completions");
}

// logprobs under the constraint: one entry per token, their text joins to the content
{
  const r = await client.chat.completions.create({ model: "tiny", messages: msgs, max_tokens: 300, temperature: 0, logprobs: true,
    top_logprobs: 2, response_format: { type: "json_schema", json_schema: { name: "t", schema: schemas.tuple } } });
  const lp = r.choices[0].logprobs.content;
  check(lp.map((x) => x.token).join("") === r.choices[0].message.content, "logprob tokens join to the content");
  check(lp.every((x) => x.logprob <= 0 && x.top_logprobs.length === 2), "logprobs present");
  console.log("ok: logprobs");
}

// reasoning: a prompt ending inside <think> is free until </think> (boosted here), then constrained
{
  const tk = async (s) => (await (await fetch(BASE + "/tokenize", { method: "POST", headers: { Authorization: "Bearer " + KEY },
    body: JSON.stringify({ content: s }) })).json()).tokens;
  const endThink = (await tk("</think>"))[0];
  const rf = { type: "json_schema", json_schema: { name: "w", schema: schemas.word } };
  const base = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
  const r = await client.completions.create({ model: "tiny", prompt: base + "<think>", max_tokens: 200, temperature: 0,
    logit_bias: { [endThink]: 100 }, logprobs: 1, response_format: rf });
  const toks = r.choices[0].logprobs.tokens;
  check(toks.length > 1, "reasoning: tokens");
  parseValid(r.choices[0].text.replace(/^<\/think>/, ""), schemas.word, "after </think>");
  // the same bias without an open <think>: the constraint holds from the first token
  const q = await client.completions.create({ model: "tiny", prompt: base, max_tokens: 200, temperature: 0,
    logit_bias: { [endThink]: 100 }, response_format: rf });
  parseValid(q.choices[0].text, schemas.word, "no reasoning: constrained at once");
  console.log("ok: reasoning gate");
}

// unsupported keywords are a 400 naming them
for (const [schema, want] of [[{ type: "string", pattern: "^a" }, "\"pattern\""], [{ type: "object", properties: { d: { type: "string", format: "date" } } }, "\"format\" at response_format.json_schema.schema/properties/d"],
  [{ $ref: "#" }, "admits no value"]]) {
  try {
    await client.chat.completions.create({ model: "tiny", messages: msgs, max_tokens: 5,
      response_format: { type: "json_schema", json_schema: { name: "x", schema } } });
    check(false, `schema ${JSON.stringify(schema)} accepted`);
  } catch (e) {
    check(e.status === 400 && String(e.message).includes(want), `400 naming ${want}: got ${e.status} ${e.message}`);
  }
}
console.log("ok: unsupported keywords are 400");

if (failures) { console.error(`${failures} failure(s)`); process.exit(1); }
console.log("serve_json: all ok");
