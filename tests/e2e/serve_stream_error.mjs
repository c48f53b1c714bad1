// serve_stream_error.mjs: an error after a stream started (here: the drain timeout on SIGTERM)
// reaches an OpenAI SDK client as an APIError thrown from the stream (BASE, PID, EOS from env).
import OpenAI from "openai";
setTimeout(() => { console.error("FAIL: still running after 120 s"); process.exit(1); }, 120000).unref();
const client = new OpenAI({ baseURL: process.env.BASE + "/v1", apiKey: "none", maxRetries: 0 });
const stream = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "Go on forever" }],
  max_tokens: 16000, temperature: 1, logit_bias: { [process.env.EOS]: -100 }, stream: true });
let chunks = 0, thrown = null;
try {
  for await (const ch of stream) {
    if (++chunks === 3) process.kill(Number(process.env.PID), "SIGTERM");
  }
} catch (e) { thrown = e; }
if (!(thrown instanceof OpenAI.APIError)) { console.error("FAIL: stream ended without an APIError: " + thrown); process.exit(1); }
if (!/shutting down/.test(thrown.message)) { console.error("FAIL: error message: " + thrown.message); process.exit(1); }
console.log(`ok: APIError after ${chunks} chunks: ${thrown.message}`);
