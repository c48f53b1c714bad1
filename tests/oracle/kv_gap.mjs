// kv_gap.mjs: llama.cpp's own gap to a fidelity golden (F32 KV) when its KV cache has another type.
// test_eng's measure: |log-prob - golden| over the golden's top 5 at every step of its paths. Puts
// the engine's f16-cache gaps next to llama.cpp's default (F16) cache's on the same file, e.g.
//   lfm2 mkmodel $(sed -n 's/^mkmodel //p' tests/data/fidelity/tiny.txt) -o /tmp/tiny.gguf
//   node tests/oracle/kv_gap.mjs tests/data/fidelity/tiny.txt /tmp/tiny.gguf F16
import {getLlama} from "node-llama-cpp";
import fs from "node:fs";
const [gold, file, kt] = process.argv.slice(2);
const lines = fs.readFileSync(gold, "utf8").split("\n");
const paths = []; let cur = null;
for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith("path ")) { const [, k, np, n] = l.split(" ").map(Number); cur = {nPrompt: np, ids: lines[++i].split(" ").map(Number), e: []}; paths.push(cur); }
    else if (cur && l.startsWith("e ")) { const f = l.split(" "); cur.e[+f[1]] = f.slice(2).map(x => x.split(":").map(Number)); }
}
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: file});
let mx = 0, sum = 0, n = 0;
for (const p of paths) {
    const ctx = await model.createContext({contextSize: 512, batchSize: 512, flashAttention: false,
        experimentalKvCacheKeyType: kt, experimentalKvCacheValueType: kt});
    const seq = ctx.getSequence();
    const items = p.ids.slice(0, -1).map((t, i) => i >= p.nPrompt - 1 ? [t, {generateNext: {probabilities: true}}] : t);
    const res = await seq.controlledEvaluate(items);
    for (let i = p.nPrompt - 1, s = 0; i < p.ids.length - 1; i++, s++) {
        const pr = res[i].next.probabilities;
        for (const [id, elp] of p.e[s].slice(0, 5)) { const g = Math.abs(Math.log(pr.get(id) ?? 1e-30) - elp); mx = Math.max(mx, g); sum += g; n++; }
    }
    await ctx.dispose();
}
console.log(`${gold.split("/").pop()} KV ${kt}: oracle max ${mx.toFixed(5)} mean ${(sum / n).toFixed(6)}`);
