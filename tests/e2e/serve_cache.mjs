// serve_cache.mjs: the prompt cache over real HTTP: every request is sent with the cache on and
// again with cache_prompt: false, and both must give the same tokens and logprobs; the cached
// token counts show where each one resumed. BASE = the server; MODE = "main", "quick" (a few
// cases on another file) or "tiny_budget" (the server runs with --cache-ram 1: evictions, the
// budget held, "evicted" misses).
const BASE = process.env.BASE;
const MODE = process.env.MODE || "main";
const fail = (m) => {
  console.error("FAIL: " + m);
  process.exit(1);
};

let seed = 12345;
const WORDS = ("the harbour light over grey water where boats return at dusk and the keeper " +
  "counts them one by one while the tide turns slowly against the old stone pier bread flour " +
  "salt yeast oven morning village market river bridge winter summer letter story").split(" ");
function words(n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    out.push(WORDS[seed % WORDS.length]);
  }
  return out.join(" ");
}

async function post(body) {
  const r = await fetch(BASE + "/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  if (r.status !== 200) fail(`status ${r.status}: ${text}`);
  return JSON.parse(text);
}
const cached = (d) => d.usage.prompt_tokens_details.cached_tokens;

// The request with the cache (first: it may resume from earlier ones) and without it.
async function pair(name, body) {
  const hit = await post({ ...body, cache_prompt: true });
  const ref = await post({ ...body, cache_prompt: false });
  same(name, hit, ref);
  return hit;
}
function same(name, hit, ref) {
  if (cached(ref) !== 0) fail(`${name}: cache_prompt false reported ${cached(ref)} cached tokens`);
  if (hit.usage.prompt_tokens !== ref.usage.prompt_tokens) fail(`${name}: prompt tokens differ`);
  const a = JSON.stringify(hit.choices), b = JSON.stringify(ref.choices);
  if (a !== b) fail(`${name}: answers differ with the cache\n  on:  ${a}\n  off: ${b}`);
  console.log(`ok: ${name}: ${hit.usage.prompt_tokens} prompt tokens, ${cached(hit)} cached, ` +
    `same tokens and logprobs as cache_prompt false`);
}
const greedy = { temperature: 0, max_tokens: 12, logprobs: true, top_logprobs: 3 };
const sys = (t) => ({ role: "system", content: t });
const user = (t) => ({ role: "user", content: t });
const asst = (t) => ({ role: "assistant", content: t });
const answer = (d, i = 0) => asst(d.choices[i].message.content);
function expect(cond, msg) {
  if (!cond) fail(msg);
}

async function metric(name) {
  const t = await (await fetch(BASE + "/metrics")).text();
  const line = t.split("\n").find((l) => l.startsWith(name + " "));
  if (!line) fail(`no metric ${name}`);
  return Number(line.split(" ")[1]);
}

if (MODE === "quick") {
  // another file's weight types (llama-quantize's Q4_0 mix: Q6_K embedding and output)
  const S = sys("You are a careful assistant. " + words(60));
  const U1 = user(words(80));
  const t1 = await pair("quick: first turn", { messages: [S, U1], ...greedy });
  const m2 = [S, U1, answer(t1), user(words(90))];
  const t2 = await pair("quick: appended turn", { messages: m2, ...greedy });
  expect(cached(t2) >= t1.usage.prompt_tokens, `quick: appended turn reused ${cached(t2)}`);
  const t3 = await pair("quick: n = 2", { messages: m2, n: 2, temperature: 0.7, seed: 3,
    max_tokens: 8, logprobs: true, top_logprobs: 2 });
  expect(cached(t3) === t2.usage.prompt_tokens - 1, `quick: n = 2 reused ${cached(t3)}`);
} else if (MODE === "main") {
  const S = sys("You are a careful assistant. " + words(120));
  const U1 = user("Tell me a story about " + words(150));
  const t1 = await pair("first turn", { messages: [S, U1], ...greedy });
  expect(cached(t1) === 0, `first turn reused ${cached(t1)} tokens from an empty cache`);

  const U2 = "Now continue it with " + words(300);
  const m2 = [S, U1, answer(t1), user(U2)];
  const t2 = await pair("appended turn", { messages: m2, ...greedy });
  expect(cached(t2) >= t1.usage.prompt_tokens,
    `appended turn: ${cached(t2)} cached, the first turn had ${t1.usage.prompt_tokens}`);

  // the last message edited from its start: everything before it is reused
  const t3 = await pair("edited last message",
    { messages: [S, U1, answer(t1), user("Instead " + U2)], ...greedy });
  expect(cached(t3) > t1.usage.prompt_tokens && cached(t3) < t2.usage.prompt_tokens - 250,
    `edited last message: ${cached(t3)} cached (first turn ${t1.usage.prompt_tokens}, ` +
    `second ${t2.usage.prompt_tokens})`);

  // divergence 2/3 into the last message: snapshots every 32 tokens inside it
  const w = U2.split(" ");
  w[200] = "lighthouse";
  const t4 = await pair("divergence in the middle of a message",
    { messages: [S, U1, answer(t1), user(w.join(" "))], ...greedy });
  expect(cached(t4) > cached(t3) + 150,
    `divergence mid-message: ${cached(t4)} cached, the message starts at ${cached(t3)}`);

  // the same prompt again: all but its last token
  const t5 = await pair("identical prompt", { messages: m2, ...greedy });
  expect(cached(t5) === t2.usage.prompt_tokens - 1,
    `identical prompt: ${cached(t5)} cached of ${t2.usage.prompt_tokens}`);
  const t6 = await pair("regenerated answer",
    { messages: m2, temperature: 0.9, seed: 7, max_tokens: 12, logprobs: true, top_logprobs: 2 });
  expect(cached(t6) === t2.usage.prompt_tokens - 1,
    `regenerated answer: ${cached(t6)} cached of ${t2.usage.prompt_tokens}`);

  // n > 1: the shared system prompt is reused, and a follow-up on the third choice resumes
  // after its prompt
  const U3 = user("Write a poem about " + words(60));
  const n3 = await pair("n = 3", {
    messages: [S, U3], n: 3, temperature: 0.8, seed: 5,
    max_tokens: 10, logprobs: true, top_logprobs: 2,
  });
  expect(cached(n3) > 100, `n = 3: only ${cached(n3)} tokens of the system prompt reused`);
  const n3b = await pair("turn after n = 3", {
    messages: [S, U3, answer(n3, 2), user("Shorter.")],
    ...greedy,
  });
  expect(cached(n3b) >= n3.usage.prompt_tokens,
    `turn after n = 3: ${cached(n3b)} cached, its prompt had ${n3.usage.prompt_tokens}`);

  // three chats taking turns, each turn's three requests at once
  const chats = [0, 1, 2].map((k) => [sys(`Chat ${k}. ` + words(80)), user(words(100))]);
  let prev = [0, 0, 0];
  for (let turn = 0; turn < 3; turn++) {
    const hits = await Promise.all(chats.map((m) => post({ messages: m, ...greedy })));
    const refs = await Promise.all(
      chats.map((m) => post({ messages: m, ...greedy, cache_prompt: false })));
    for (let k = 0; k < 3; k++) {
      same(`interleaved chat ${k} turn ${turn + 1}`, hits[k], refs[k]);
      expect(turn === 0 || cached(hits[k]) >= prev[k],
        `chat ${k} turn ${turn + 1}: ${cached(hits[k])} cached, previous prompt ${prev[k]}`);
      prev[k] = hits[k].usage.prompt_tokens;
      chats[k].push(answer(hits[k]), user(words(60)));
    }
  }

  // two requests that arrive together with the same new system prompt share its prefill, and
  // answer as they do alone without the cache
  const S2 = sys("Another assistant. " + words(300));
  const two = [[S2, user(words(20))], [S2, user(words(30))]];
  const together = await Promise.all(two.map((m) => post({ messages: m, ...greedy })));
  for (let k = 0; k < 2; k++)
    same(`arriving together ${k + 1}`, together[k],
      await post({ messages: two[k], ...greedy, cache_prompt: false }));
  expect(Math.max(cached(together[0]), cached(together[1])) > 300,
    `arriving together: ${cached(together[0])} and ${cached(together[1])} cached`);

  // /v1/completions: a longer prompt resumes inside the earlier one (every 32 tokens)
  const cpost = async (body) => {
    const r = await fetch(BASE + "/v1/completions", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (r.status !== 200) fail(`completions status ${r.status}`);
    return r.json();
  };
  const P = "Once upon a time " + words(200);
  const c1 = await cpost({ prompt: P, max_tokens: 4, temperature: 0 });
  const cb = { prompt: P + " and then " + words(30), max_tokens: 8, temperature: 0, logprobs: 2 };
  const c2 = await cpost(cb), c2off = await cpost({ ...cb, cache_prompt: false });
  same("completions, longer prompt", c2, c2off);
  expect(cached(c2) >= c1.usage.prompt_tokens - 32,
    `completions: ${cached(c2)} cached, the first prompt had ${c1.usage.prompt_tokens}`);

  // the streamed usage chunk carries the count too
  const r = await fetch(BASE + "/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ messages: m2, ...greedy, stream: true,
      stream_options: { include_usage: true } }),
  });
  const ev = (await r.text()).split("\n").filter((l) => l.startsWith("data: {"))
    .map((l) => JSON.parse(l.slice(6)));
  const u = ev.find((e) => e.usage)?.usage;
  expect(u && u.prompt_tokens_details.cached_tokens === t2.usage.prompt_tokens - 1,
    `streamed usage: ${JSON.stringify(u)}`);
  const text = ev.map((e) => e.choices[0]?.delta?.content || "").join("");
  expect(text === t5.choices[0].message.content, "streamed text differs");
  console.log("ok: streamed usage chunk: cached_tokens " + u.prompt_tokens_details.cached_tokens);

  expect(await metric("lfm2_prompt_cache_hits_total") >= 10, "hits counter");
  expect(await metric('lfm2_prompt_cache_misses_total{reason="disabled"}') >= 17,
    "disabled misses counter");
  expect(await metric('lfm2_prompt_cache_misses_total{reason="no_entry"}') >= 1,
    "no_entry misses counter");
  expect(await metric("lfm2_prompt_cache_tokens_reused_total") > 3000, "tokens reused counter");
  expect(await metric("lfm2_prompt_cache_entries") >= 4, "entries gauge");
  expect(await metric("lfm2_prompt_cache_bytes") > 0, "bytes gauge");
  console.log("ok: /metrics counts hits, misses, tokens reused, entries, bytes");
} else {
  // --cache-ram 1: four chats of ~600 tokens do not fit together; each one's second turn comes
  // right after its first and resumes from it, then the first chat's comes back evicted
  const BUDGET = 1 << 20;
  const chats = [0, 1, 2, 3].map((k) => [sys(`Chat ${k}. ` + words(100)), user(words(200))]);
  const check = async () => {
    const bytes = await metric("lfm2_prompt_cache_bytes");
    expect(bytes > 0 && bytes <= BUDGET, `cache holds ${bytes} bytes, budget ${BUDGET}`);
  };
  let again;
  for (let k = 0; k < 4; k++)
    for (let turn = 0; turn < 2; turn++) {
      const d = await pair(`tiny budget: chat ${k} turn ${turn + 1}`,
        { messages: chats[k], ...greedy });
      expect(turn === 0 || cached(d) > 300, `tiny budget: chat ${k} turn 2 reused ${cached(d)}`);
      if (k === 0 && turn === 1) again = chats[k].slice();
      chats[k].push(answer(d), user(words(40)));
      await check();
    }
  const d = await pair("tiny budget: chat 0 turn 2 again", { messages: again, ...greedy });
  expect(cached(d) === 0, `an evicted chat reused ${cached(d)} tokens`);
  await check();
  expect(await metric("lfm2_prompt_cache_evictions_total") > 0, "no eviction under 1 MiB");
  expect(await metric('lfm2_prompt_cache_misses_total{reason="evicted"}') > 0,
    "no miss counted as evicted");
  console.log("ok: tiny budget: held to 1 MiB, evictions and evicted misses counted, " +
    "answers the same");
}
