// llama_bench.mjs: llama.cpp's speed on a GGUF (via node-llama-cpp), the yardstick for lfm2 bench.
// usage: node tests/bench/llama_bench.mjs MODEL [-p 512] [-n 128] [-t 2] [-r 3]
// Prints one JSON object: {"pp_tok_s":..,"tg_tok_s":..,"pp_runs":[..],"tg_runs":[..],"peak_rss_mib":..,"threads":..}
// (each figure after one warm-up run; prefill = the whole prompt in one batch, decode = n greedy steps after it)
import {createRequire} from "node:module";
import path from "node:path";
import {fileURLToPath} from "node:url";
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../oracle/package.json"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));

const args = process.argv.slice(2);
const opt = {p: 512, n: 128, t: 2, r: 3};
let modelPath = null;
for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a.startsWith("-") && i + 1 < args.length) opt[a.replace(/^-+/, "")] = Number(args[++i]);
    else modelPath = a;
}
if (!modelPath) { console.error("usage: llama_bench.mjs MODEL [-p N] [-n N] [-t N] [-r N]"); process.exit(2); }

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: opt.t});
const model = await llama.loadModel({modelPath, useMmap: true});
const nVocab = model.tokens.vocabularySize ?? 4096;
const ctx = await model.createContext({contextSize: opt.p + opt.n + 16, batchSize: Math.max(opt.p, 1),
                                       threads: {ideal: opt.t, min: opt.t}, sequences: 1,
                                       batching: {dispatchSchedule: (dispatch) => dispatch()}});
// Deterministic pseudo-random prompt of ordinary (non-special) tokens.
let s = 12345;
const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
const prompt = Array.from({length: opt.p}, () => 16 + Math.floor(rnd() * (nVocab - 300)));

const pp = [], tg = [];
const seq = ctx.getSequence();
for (let r = 0; r < opt.r + 1; r++) {
    await seq.clearHistory();
    let t0 = performance.now();
    const items = prompt.map((t, i) => (i === prompt.length - 1 ? [t, {generateNext: {token: true}}] : t));
    const res = await seq.controlledEvaluate(items);
    let dt = (performance.now() - t0) / 1000;
    if (r > 0) pp.push(opt.p / dt); // first run warms up
    let tok = res[res.length - 1]?.next?.token ?? 20;
    t0 = performance.now();
    for (let i = 0; i < opt.n; i++) {
        const out = await seq.controlledEvaluate([[tok, {generateNext: {token: true}}]]);
        tok = out[0].next.token;
    }
    dt = (performance.now() - t0) / 1000;
    if (r > 0) tg.push(opt.n / dt);
}
// peak RSS of this node process (V8 included: an upper bound for llama.cpp's own use)
const peakRssMib = process.resourceUsage().maxRSS / 1024;
console.log(JSON.stringify({pp_tok_s: median(pp), tg_tok_s: median(tg), pp_runs: pp, tg_runs: tg,
                            peak_rss_mib: peakRssMib, threads: opt.t,
                            engine: "llama.cpp (node-llama-cpp 3.22.1)"}));
await model.dispose();
