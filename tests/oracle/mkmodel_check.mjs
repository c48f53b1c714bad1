// mkmodel_check.mjs: loads GGUF files written by `lfm2 mkmodel` in llama.cpp (node-llama-cpp
// 3.22.1) and checks that their next-token distributions are peaked but not degenerate.
// Usage: node tests/oracle/mkmodel_check.mjs [--report] FILE...
// For each file, over a few prompts: the median top-1 probability must lie in [0.2, 0.9] and
// not every position may have top-1 >= 0.99; a 32-token greedy continuation must hold >= 8
// distinct tokens, must not be one token repeated, and must not merely repeat the prompt's
// last token. Prints one line per file; exit status 1 if any check fails.
// --negative FILE...: control that the checks can fail: each FILE is copied with its final norm
// (token_embd_norm, F32) scaled by 1000, which makes every distribution one-hot; the copy must
// FAIL the checks.
import {getLlama, readGgufFileInfo} from "node-llama-cpp";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const PROMPTS = [
    "The quick brown fox jumps over the lazy dog. It was a sunny day and the children",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "1, 2, 3, 5, 8, 13, 21, 34, 55, 89,",
];
const GREEDY = 32;

const args = process.argv.slice(2);
const report = args[0] === "--report" ? (args.shift(), true) : false;
const negative = args[0] === "--negative" ? (args.shift(), true) : false;
if (!args.length) {
    console.error("usage: node mkmodel_check.mjs [--report] [--negative] FILE...");
    process.exit(2);
}

async function degenerateCopy(file) {
    const info = await readGgufFileInfo(file, {readTensorInfo: true});
    const t = info.tensorInfo.find(x => x.name === "token_embd_norm.weight");
    if (!t || t.ggmlType !== 0) throw new Error(`${file}: no F32 token_embd_norm.weight`);
    const buf = fs.readFileSync(file);
    const n = Number(t.dimensions[0]), off = Number(t.fileOffset);
    for (let i = 0; i < n; i++) buf.writeFloatLE(buf.readFloatLE(off + 4 * i) * 1000, off + 4 * i);
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mkcheck-")), path.basename(file));
    fs.writeFileSync(out, buf);
    return out;
}
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
let failed = 0;

const median = a => {
    const s = [...a].sort((x, y) => x - y);
    return s[Math.floor(s.length / 2)];
};

for (const arg of args) {
    const file = negative ? await degenerateCopy(arg) : arg;
    const problems = [];
    const model = await llama.loadModel({modelPath: file});
    const top1 = [], distinct = [];
    let repeatsLast = 0;
    for (const text of PROMPTS) {
        const ids = [model.tokens.bos, ...model.tokenize(text, true)];
        const ctx = await model.createContext({contextSize: 256, batchSize: 256, threads: 1});
        const seq = ctx.getSequence();
        const items = ids.map(t => [t, {generateNext: {probabilities: true}}]);
        const res = await seq.controlledEvaluate(items);
        for (const r of res) top1.push(r.next.probabilities.values().next().value);
        // greedy continuation, one token at a time, from the last distribution
        const gen = [];
        let probs = res[res.length - 1].next.probabilities;
        for (let i = 0; i < GREEDY; i++) {
            const tok = probs.keys().next().value;
            gen.push(tok);
            const r = await seq.controlledEvaluate([[tok, {generateNext: {probabilities: true}}]]);
            probs = r[0].next.probabilities;
        }
        const nd = new Set(gen).size;
        distinct.push(nd);
        if (gen.every(t => t === ids[ids.length - 1])) repeatsLast++;
        if (nd < 8) problems.push(`greedy continuation of "${text.slice(0, 20)}..." has ${nd} distinct tokens (< 8): ${gen.join(" ")}`);
        if (report) console.log(`  ${JSON.stringify(text.slice(0, 24))}: greedy ${gen.join(" ")}`);
        await ctx.dispose();
    }
    const med = median(top1);
    const nPeaked = top1.filter(p => p >= 0.99).length;
    if (!(med >= 0.2 && med <= 0.9)) problems.push(`median top-1 probability ${med.toFixed(3)} outside [0.2, 0.9]`);
    if (nPeaked === top1.length) problems.push(`every position has top-1 >= 0.99 (degenerate)`);
    if (repeatsLast) problems.push(`${repeatsLast} greedy continuation(s) only repeat the prompt's last token`);
    const summary = `top-1 median ${med.toFixed(3)} min ${Math.min(...top1).toFixed(3)} ` +
        `max ${Math.max(...top1).toFixed(3)} (${top1.length} positions), greedy distinct ${distinct.join("/")}`;
    if (negative) {
        if (problems.length) console.log(`ok   ${file} (degenerate copy) fails as it must: ${problems[0]}`);
        else {
            failed++;
            console.log(`FAIL ${file} (degenerate copy) passed the checks: ${summary}`);
        }
    } else if (problems.length) {
        failed++;
        console.log(`FAIL ${file}: ${summary}`);
        for (const p of problems) console.log(`  ${p}`);
    } else {
        console.log(`ok   ${file}: ${summary}`);
    }
    await model.dispose();
    if (negative) fs.rmSync(path.dirname(file), {recursive: true, force: true});
}
process.exit(failed ? 1 : 0);
