// broken_gguf_oracle.mjs: asks llama.cpp (node-llama-cpp 3.22.1) whether it loads each GGUF file
// and evaluates one token. Prints "ok FILE" or "rejected FILE: message" per file; exit 0.
// Used by tests/e2e/broken_gguf_oracle.sh to compare llama.cpp's verdicts with lfm2's.
// Usage: node tests/oracle/broken_gguf_oracle.mjs FILE...
import {getLlama} from "node-llama-cpp";

const files = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error", logger: () => {}});
for (const f of files) {
    let model = null, ctx = null;
    try {
        model = await llama.loadModel({modelPath: f});
        ctx = await model.createContext({contextSize: 64});
        const seq = ctx.getSequence();
        const bos = model.tokens.bos ?? 1;
        await seq.controlledEvaluate([[bos, {generateNext: {probabilities: true}}]]);
        console.log(`ok ${f}`);
    } catch (e) {
        console.log(`rejected ${f}: ${String(e && e.message || e).split("\n")[0]}`);
    } finally {
        if (ctx) await ctx.dispose();
        if (model) await model.dispose();
    }
}
