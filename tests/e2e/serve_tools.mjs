// serve_tools.mjs: tools, tool_choice, streamed tool calls and reasoning through the official OpenAI
// Node SDK (BASE, FAMILY, MODEL_PATH, JINJA from serve_tools.sh).
//
// The synthetic model's weights are random, so its output is forced: the model is made with flat
// logits (mkmodel --logit-scale 0.02), every token of the vocab is banned with logit_bias except
// the tokens of the wanted text, which get decreasing biases (100 down to 15), and
// repetition_penalty 10 divides the biased logit of a token once it was used (and of every token
// of the prompt's last 64, which hold none of them). So each step takes the next token of the
// text, and the last one ("~") is a stop string. The raw output is checked to be the wanted text
// (test 1), so a forcing that breaks fails loudly.
import OpenAI from "openai";
import path from "node:path";
import { pathToFileURL } from "node:url";
setTimeout(() => { console.error("FAIL: still running after 240 s"); process.exit(1); }, 240000).unref();

const { BASE, FAMILY, MODEL_PATH, JINJA } = process.env;
const client = new OpenAI({ baseURL: BASE + "/v1", apiKey: "none", maxRetries: 0, timeout: 60000 });
let failures = 0;
function check(cond, what) {
  if (!cond) { failures++; console.error(`FAIL (${FAMILY}): ${what}`); }
}
function eq(a, b, what) {
  check(JSON.stringify(a) === JSON.stringify(b), `${what}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`);
}

async function post(route, body) {
  const r = await fetch(BASE + route, { method: "POST", body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}
const tokenize = async (text) => (await post("/tokenize", { content: text })).body.tokens;
const N_VOCAB = 1024; // the tiny preset

// logit_bias that makes the model write exactly `text`
async function forcing(text) {
  const ids = await tokenize(text);
  if (new Set(ids).size !== ids.length) throw new Error(`forced text has a repeated token: ${text}`);
  const bias = {};
  for (let i = 0; i < N_VOCAB; i++) bias[i] = -100;
  ids.forEach((id, i) => { bias[id] = 100 - i * (85 / Math.max(1, ids.length - 1)); });
  return { logit_bias: bias, temperature: 0, repetition_penalty: 10, stop: ["~"], max_tokens: ids.length + 4 };
}

const tools = [
  { type: "function", function: { name: "get_weather", description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } },
  { type: "function", function: { name: "get_time", description: "Local time",
    parameters: { type: "object", properties: { zone: { type: "integer" } } } } },
];
// a user turn of digits: its tokens are none of the forced ones (the penalty window sees it)
const user = { role: "user", content: "0 2 3 4 5 6 7 8 9 ".repeat(9) };
const CALL1 = '[get_weather(city="Paris")]';
const CALL2 = '[get_weather(city="Paris"), get_time(zone=1)]';

// the same request answered whole and streamed (the SDK's stream helper accumulates the chunks;
// reasoning_content, which the SDK does not know, is accumulated here from the raw chunks)
async function both(params, what) {
  const whole = await client.chat.completions.create(params);
  const helper = client.beta.chat.completions.stream(params);
  const final = await helper.finalChatCompletion();
  const raw = await client.chat.completions.create({ ...params, stream: true });
  let reasoning = "", content = "", nChunks = 0, argChunks = 0;
  for await (const ch of raw) {
    nChunks++;
    for (const c of ch.choices) {
      reasoning += c.delta.reasoning_content ?? "";
      content += c.delta.content ?? "";
      for (const t of c.delta.tool_calls ?? []) {
        if (t.id) check(t.function.name && t.type === "function", `${what}: a call's first chunk has name and type`);
        else argChunks++;
      }
    }
  }
  const wm = whole.choices[0].message, fm = final.choices[0].message;
  eq(final.choices[0].finish_reason, whole.choices[0].finish_reason, `${what}: streamed finish_reason`);
  eq(fm.content, wm.content, `${what}: streamed content`);
  eq(content, wm.content ?? "", `${what}: raw streamed content`);
  eq(reasoning, wm.reasoning_content ?? "", `${what}: streamed reasoning_content`);
  const strip = (calls) => (calls ?? []).map((t) => ({ type: t.type, function: { name: t.function.name, arguments: t.function.arguments } }));
  eq(strip(fm.tool_calls), strip(wm.tool_calls), `${what}: streamed tool_calls`);
  for (const t of [...(wm.tool_calls ?? []), ...(fm.tool_calls ?? [])])
    check(/^call_[A-Za-z0-9]{24}$/.test(t.id), `${what}: call id ${t.id}`);
  if ((wm.tool_calls ?? []).length) check(argChunks > 0, `${what}: arguments streamed in fragments`);
  return whole;
}

// 1. content and one call
{
  const p = { model: "m", messages: [user], tools, ...(await forcing(`Sure.<|tool_call_start|>${CALL1}<|tool_call_end|>~`)) };
  const r = await both(p, "one call");
  const m = r.choices[0].message;
  eq(r.choices[0].finish_reason, "tool_calls", "one call: finish_reason");
  eq(m.content, "Sure.", "one call: content");
  eq(m.tool_calls?.length, 1, "one call: count");
  eq(m.tool_calls?.[0]?.function?.name, "get_weather", "one call: name");
  eq(JSON.parse(m.tool_calls?.[0]?.function?.arguments ?? "null"), { city: "Paris" }, "one call: arguments");
  // reasoning_format none: the text is the raw output
  const raw = await client.chat.completions.create({ ...p, tools: undefined });
  eq(raw.choices[0].message.content, `Sure.<|tool_call_start|>${CALL1}<|tool_call_end|>`, "forced text without tools");
}

// 2. two calls in one list; parallel_tool_calls false keeps the first and stops at the end token
{
  const f = await forcing(`<|tool_call_start|>${CALL2}<|tool_call_end|>~`);
  const r = await both({ model: "m", messages: [user], tools, ...f }, "two calls");
  const m = r.choices[0].message;
  eq(m.content, null, "two calls: content null");
  eq((m.tool_calls ?? []).map((t) => [t.function.name, JSON.parse(t.function.arguments)]),
     [["get_weather", { city: "Paris" }], ["get_time", { zone: 1 }]], "two calls");
  check(m.tool_calls?.[0]?.id !== m.tool_calls?.[1]?.id, "two calls: distinct ids");
  const one = await both({ model: "m", messages: [user], tools, ...f, parallel_tool_calls: false }, "parallel false");
  eq(one.choices[0].message.tool_calls?.length, 1, "parallel_tool_calls false: one call");
  eq(one.choices[0].finish_reason, "tool_calls", "parallel_tool_calls false: finish_reason");
  eq(one.usage.completion_tokens, (await tokenize(`<|tool_call_start|>${CALL2}<|tool_call_end|>`)).length,
     "parallel_tool_calls false: generation ends at the call's end token");
}

// 3. reasoning, then a call; reasoning_format none keeps the tags in content
{
  const text = `<think>The user wants the weather</think>Sure.<|tool_call_start|>${CALL1}<|tool_call_end|>~`;
  const p = { model: "m", messages: [user], tools, ...(await forcing(text)) };
  const r = await both(p, "reasoning");
  const m = r.choices[0].message;
  eq(m.reasoning_content, "The user wants the weather", "reasoning_content");
  eq(m.content, "Sure.", "content after reasoning");
  eq(m.tool_calls?.length, 1, "call after reasoning");
  const none = await both({ ...p, reasoning_format: "none" }, "reasoning_format none");
  eq(none.choices[0].message.content, "<think>The user wants the weather</think>Sure.", "reasoning_format none: content");
  eq(none.choices[0].message.reasoning_content, undefined, "reasoning_format none: no reasoning_content");
}

// 4. tool_choice none: the call-start token is banned whatever the bias
{
  const f = await forcing(`Sure.<|tool_call_start|>${CALL1}<|tool_call_end|>~`);
  const r = await both({ model: "m", messages: [user], tools, tool_choice: "none", ...f }, "tool_choice none");
  const m = r.choices[0].message;
  eq(m.tool_calls, undefined, "tool_choice none: no calls");
  check(!m.content.includes("<|tool_call_start|>"), `tool_choice none: content ${JSON.stringify(m.content)}`);
  const auto = await client.chat.completions.create({ model: "m", messages: [user], tools, tool_choice: "auto", ...f });
  eq(auto.choices[0].message.tool_calls?.length, 1, "tool_choice auto: the same bias calls");
}

// 5. tool_choice naming an undeclared function: 400 naming tool_choice; "required" and a named
// function need constrained decoding: 400 not_supported, never a silent "auto"
for (const [tc, code] of [[{ type: "function", function: { name: "nope" } }, "invalid_value"],
                          ["required", "not_supported"],
                          [{ type: "function", function: { name: "get_time" } }, "not_supported"]]) {
  let err = null;
  try { await client.chat.completions.create({ model: "m", messages: [user], tools, tool_choice: tc, max_tokens: 2 }); }
  catch (e) { err = e; }
  eq(err?.status, 400, `tool_choice ${JSON.stringify(tc)}: status`);
  eq(err?.error?.param ?? err?.param, "tool_choice", `tool_choice ${JSON.stringify(tc)}: param`);
  eq(err?.code, code, `tool_choice ${JSON.stringify(tc)}: code`);
}

// 6. the round trip: the call and its result sent back are rendered as the family's template
// does (Jinja, @huggingface/jinja, renders the file's own template; prompt_tokens must equal the
// ids of that text). The LFM2 and plain LFM2.5 templates ignore tool_calls, and lfm2 renders the
// call as the model wrote it: for them the Jinja side gets that text as the assistant content.
{
  const { Template } = await import(pathToFileURL(path.join(JINJA, "dist/index.js")).href);
  const { readGgufFileInfo } = await import(pathToFileURL(path.join(JINJA, "../../node-llama-cpp/dist/index.js")).href);
  const info = await readGgufFileInfo(MODEL_PATH);
  const tmpl = new Template(info.metadata.tokenizer.chat_template);
  const args = { city: "Paris" };
  const history = [
    { role: "system", content: "You are helpful." },
    { role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: null, reasoning_content: "Need the weather",
      tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: JSON.stringify(args) } }] },
    { role: "tool", tool_call_id: "call_1", content: "{\"temp\": 18}" },
  ];
  // tools whose JSON has what tojson must write as Python does: non-ASCII, quotes, backslashes,
  // control characters, nested arrays, floats, booleans and null
  const rich = [...tools, { type: "function", function: { name: "Calendar.create_event",
    description: "Crée un «événement» \"quoted\" C:\\path\ttab\u0001 😀",
    parameters: { type: "object", properties: { when: { type: ["string", "null"], enum: ["a", null] },
      weight: { type: "number", minimum: 0.5, maximum: 2.75 }, ok: { type: "boolean", default: false } },
      required: [], additionalProperties: true } } }];
  const r = await client.chat.completions.create({ model: "m", messages: history, tools: rich, max_tokens: 1, temperature: 0 });
  const dated = FAMILY === "lfm2.5-dated";
  const jinjaMsgs = history.map((m) => {
    if (m.role !== "assistant") return m;
    if (dated) // llama.cpp's conventions: arguments as an object, reasoning as "thinking", null content as ""
      return { role: "assistant", content: "", thinking: m.reasoning_content,
               tool_calls: m.tool_calls.map((t) => ({ ...t, function: { name: t.function.name, arguments: args } })) };
    // plain LFM2.5 keeps the last assistant turn's reasoning as the model wrote it
    const think = FAMILY === "lfm2.5" ? `<think>${m.reasoning_content}</think>` : "";
    return { role: "assistant", content: `${think}<|tool_call_start|>${CALL1}<|tool_call_end|>` };
  });
  const text = tmpl.render({ messages: jinjaMsgs, tools: rich, bos_token: "<|startoftext|>", add_generation_prompt: true });
  eq(r.usage.prompt_tokens, (await tokenize(text)).length, "round trip: prompt tokens = the template's text");
}

if (failures) { console.error(`${failures} check(s) failed`); process.exit(1); }
console.log(`serve_tools (${FAMILY}): ok`);
