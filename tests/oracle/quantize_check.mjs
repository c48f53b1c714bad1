// quantize_check.mjs: llama.cpp (node-llama-cpp 3.22.1) loads and evaluates GGUF files written by
// `lfm2 quantize`, and their next-token distributions stay close to a reference file's.
// Usage: node tests/oracle/quantize_check.mjs REF.gguf FILE[:MIN_AGREE[:MAX_TV]]...
// For each FILE, over a few prompts (every position): every distribution is finite and sums to
// ~1; the fraction of positions whose top-1 token equals REF's must be >= MIN_AGREE (default
// 0.9), and the mean total-variation distance to REF's distribution (over the union of both
// top-k lists) must be <= MAX_TV (default 0.1). Prints one line per file; exit status 1 if any
// file fails.
import {getLlama} from "node-llama-cpp";

const PROMPTS = [
    "The quick brown fox jumps over the lazy dog. It was a sunny day and the children",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
];

const args = process.argv.slice(2);
if (args.length < 2) {
    console.error("usage: node quantize_check.mjs REF.gguf FILE[:MIN_AGREE[:MAX_TV]]...");
    process.exit(2);
}
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});

// Distributions (Map id -> prob) at every position of every prompt.
async function dists(file) {
    const model = await llama.loadModel({modelPath: file});
    const out = [];
    for (const text of PROMPTS) {
        const ids = [model.tokens.bos, ...model.tokenize(text, true)];
        const ctx = await model.createContext({contextSize: 256, batchSize: 256, threads: 2});
        const seq = ctx.getSequence();
        const res = await seq.controlledEvaluate(ids.map(t => [t, {generateNext: {probabilities: true}}]));
        for (const r of res) out.push(r.next.probabilities);
        await ctx.dispose();
    }
    await model.dispose();
    return out;
}

const ref = await dists(args[0]);
let failed = 0;
for (const spec of args.slice(1)) {
    const [file, a, t] = spec.split(":");
    const minAgree = a ? Number(a) : 0.9, maxTv = t ? Number(t) : 0.1;
    const problems = [];
    let d;
    try {
        d = await dists(file);
    } catch (e) {
        console.log(`FAIL ${file}: llama.cpp could not load or evaluate it: ${e.message}`);
        failed++;
        continue;
    }
    let agree = 0, tvSum = 0, bad = 0;
    for (let i = 0; i < d.length; i++) {
        let sum = 0;
        for (const p of d[i].values()) {
            if (!Number.isFinite(p) || p < 0) bad++;
            sum += p;
        }
        if (!(sum > 0.98 && sum < 1.02)) bad++;
        const top = d[i].keys().next().value, rtop = ref[i].keys().next().value;
        if (top === rtop) agree++;
        const ids = new Set([...d[i].keys()].slice(0, 64).concat([...ref[i].keys()].slice(0, 64)));
        let tv = 0;
        for (const id of ids) tv += Math.abs((d[i].get(id) ?? 0) - (ref[i].get(id) ?? 0));
        tvSum += tv / 2;
    }
    const fracAgree = agree / d.length, tvMean = tvSum / d.length;
    if (d.length !== ref.length) problems.push(`${d.length} positions, reference has ${ref.length}`);
    if (bad) problems.push(`${bad} distributions are not finite or do not sum to 1`);
    if (fracAgree < minAgree) problems.push(`top-1 agreement ${fracAgree.toFixed(3)} < ${minAgree}`);
    if (tvMean > maxTv) problems.push(`mean total variation ${tvMean.toFixed(4)} > ${maxTv}`);
    const summary = `${d.length} positions, top-1 agreement ${fracAgree.toFixed(3)}, mean TV ${tvMean.toFixed(4)}`;
    if (problems.length) {
        failed++;
        console.log(`FAIL ${file}: ${summary}: ${problems.join("; ")}`);
    } else {
        console.log(`ok   ${file}: ${summary}`);
    }
}
process.exit(failed ? 1 : 0);
