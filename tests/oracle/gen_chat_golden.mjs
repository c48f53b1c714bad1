// gen_chat_golden.mjs: regenerates tests/data/chat/mini.golden.json: llama.cpp's token ids for each rendered chat in cases.json.
//
// Usage (from the repository root, after `make oracle`):  node tests/oracle/gen_chat_golden.mjs
// For every case of tests/data/chat/cases.json (messages, format, hand-written expected prompt text):
//  - "lfm2" cases: the model's own tokenizer.chat_template is rendered with a real Jinja engine
//    (@huggingface/jinja, as node-llama-cpp uses) and must equal the hand-written text, so the
//    expected strings are checked against the template itself (the script fails otherwise);
//  - the text is tokenized by llama.cpp with special-token parsing, as llama-server does with a
//    templated prompt (the text starts with <|startoftext|>, so no BOS is added on top).
// test_chat.c renders the same messages in C, tokenizes segment by segment with our tokenizer and
// must produce these ids.
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {getLlama} from "node-llama-cpp";
import {Template} from "@huggingface/jinja";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const modelPath = path.join(root, "tests/data/models/mini-F16.gguf");
const cases = JSON.parse(fs.readFileSync(path.join(root, "tests/data/chat/cases.json"), "utf8"));

const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath});
const tmplText = model.fileInfo.metadata.tokenizer.chat_template;
if (typeof tmplText !== "string" || !tmplText.includes("<|im_start|>"))
    throw new Error("mini-F16.gguf has no LFM2 chat template");
const tmpl = new Template(tmplText);

let checked = 0;
const out = [];
for (const c of cases) {
    if (c.format === "lfm2") {
        const rendered = tmpl.render({
            messages: c.messages, bos_token: "<|startoftext|>", add_generation_prompt: true,
            tools: c.tools && c.tools.length ? c.tools : undefined,
        });
        if (rendered !== c.text)
            throw new Error(`case ${c.name}: the template renders\n${JSON.stringify(rendered)}\n` +
                            `but cases.json expects\n${JSON.stringify(c.text)}`);
        checked++;
    }
    const ids = Array.from(model.tokenize(c.text, true));
    out.push({...c, ids});
}
fs.writeFileSync(path.join(root, "tests/data/chat/mini.golden.json"), JSON.stringify(out, null, 1) + "\n");
console.log(`${out.length} cases written, ${checked} checked against the Jinja template`);
await model.dispose();
await llama.dispose();
