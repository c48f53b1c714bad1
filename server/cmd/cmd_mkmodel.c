/* cmd_mkmodel.c: `lfm2 mkmodel`: writes a synthetic LFM2 GGUF (preset or custom shape). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth/bpe_train.h"
#include "synth/mkmodel.h"
#include "server/cmd/cli.h"

static void mk_usage(FILE *f) {
    fprintf(f,
            "usage: lfm2 mkmodel --preset P [options] -o OUT\n"
            "  Writes a synthetic LFM2 model: real layout and metadata, seeded random weights,\n"
            "  a byte-level BPE vocab trained on built-in text (or --train FILE).\n"
            "  --preset P          tiny | mini | 350m | 700m | 1.2b | 2.6b | tiny-moe |\n"
            "                      mini-moe | 8b-a1b | 24b-a2b\n"
            "  --seed S            weight seed (default 1)\n"
            "  --type T            f32 | f16 | bf16 | q8_0 | q4_0 | q4_k_m | q5_k_m | q6_k "
            "(default f16)\n"
            "  --swa N             sliding window of the attention layers (default 0: none)\n"
            "  --vocab-size N      tokens, >= %d (default per preset)\n"
            "  --train FILE        train the vocab on FILE instead of the built-in text\n"
            "  --vocab-from FILE   copy the tokenizer.* keys of another GGUF\n"
            "  --ctx N             lfm2.context_length (default 32768)\n"
            "  --name NAME         general.name\n"
            "  --chat-template F   tokenizer.chat_template family: lfm2 (default), lfm2.5,\n"
            "                      lfm2.5-dated (with --vocab-from: replaces the file's)\n"
            "  --logit-scale X     multiply the logits' spread by X (0 < X <= 100, default 1;\n"
            "                      small: flat logits, so logit_bias alone picks the tokens)\n"
            "  shape overrides: --hidden N --layers N --heads N --kv-heads N --ffn N\n"
            "                   --attn-layers 2,5,8 (0-based; 'none' for no attention)\n"
            "  -o OUT              output path\n",
            BPE_N_BASE);
}

int cmd_mkmodel(int argc, char **argv) {
    const char *preset = NULL, *out = NULL, *train = NULL, *attn = NULL;
    mkmodel_opts o = {0};
    o.seed = 1;
    o.ftype = MK_F16;
    long hidden = 0, layers = 0, heads = 0, kv = 0, ffn = 0, vocab = 0, ctx = 0, swa = 0;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            mk_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s: unknown option or missing value (see --help)\n", a);
            return 2;
        }
        const char *val = argv[++i];
        int r = 0;
        if (!strcmp(a, "--preset"))
            preset = val;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            out = val;
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            seed = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-') {
                fprintf(stderr, "error: --seed '%s': expected an unsigned 64-bit integer\n", val);
                return 2;
            }
        } else if (!strcmp(a, "--type")) {
            o.ftype = mkmodel_ftype_from_name(val);
            if (o.ftype < 0) {
                fprintf(stderr,
                        "error: --type '%s' unknown (f32, f16, bf16, q8_0, q4_0, q4_k_m, "
                        "q5_k_m, q6_k)\n",
                        val);
                return 2;
            }
        } else if (!strcmp(a, "--swa"))
            r = cli_parse_long(a, val, 0, 1L << 30, &swa);
        else if (!strcmp(a, "--vocab-size"))
            r = cli_parse_long(a, val, BPE_N_BASE, BPE_MAX_VOCAB, &vocab);
        else if (!strcmp(a, "--train"))
            train = val;
        else if (!strcmp(a, "--vocab-from"))
            o.vocab_from = val;
        else if (!strcmp(a, "--ctx"))
            r = cli_parse_long(a, val, 1, 1L << 30, &ctx);
        else if (!strcmp(a, "--name"))
            o.name = val;
        else if (!strcmp(a, "--logit-scale")) {
            char *end;
            errno = 0;
            o.logit_scale = strtod(val, &end);
            if (errno || end == val || *end || !(o.logit_scale > 0 && o.logit_scale <= 100)) {
                fprintf(stderr, "error: --logit-scale '%s': expected a number in (0, 100]\n", val);
                return 2;
            }
        } else if (!strcmp(a, "--chat-template")) {
            if (!mkmodel_chat_template_named(val)) {
                fprintf(stderr,
                        "error: --chat-template '%s' unknown (lfm2, lfm2.5, lfm2.5-dated)\n", val);
                return 2;
            }
            o.chat_template = val;
        } else if (!strcmp(a, "--hidden"))
            r = cli_parse_long(a, val, 2, 1L << 16, &hidden);
        else if (!strcmp(a, "--layers"))
            r = cli_parse_long(a, val, 1, LFM2_MAX_LAYERS, &layers);
        else if (!strcmp(a, "--heads"))
            r = cli_parse_long(a, val, 1, 1L << 16, &heads);
        else if (!strcmp(a, "--kv-heads"))
            r = cli_parse_long(a, val, 1, 1L << 16, &kv);
        else if (!strcmp(a, "--ffn"))
            r = cli_parse_long(a, val, 1, 1L << 18, &ffn);
        else if (!strcmp(a, "--attn-layers"))
            attn = val;
        else {
            fprintf(stderr, "error: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (r < 0) return 2;
    }
    if (!preset || !out) {
        fprintf(stderr, "error: %s is required (see --help)\n", !preset ? "--preset" : "-o");
        return 2;
    }
    if ((train || vocab) && o.vocab_from) {
        fprintf(stderr,
                "error: %s and --vocab-from exclude each other (the vocab comes from the "
                "file)\n",
                train ? "--train" : "--vocab-size");
        return 2;
    }
    char err[512];
    if (mkmodel_preset(preset, &o.shape, err, sizeof err) < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    mkmodel_shape *s = &o.shape;
    if (hidden) s->n_embd = (int)hidden;
    if (heads) s->n_head = (int)heads;
    if (kv) s->n_head_kv = (int)kv;
    if (ffn) s->n_ff = (int)ffn;
    if (vocab) s->n_vocab = (int)vocab;
    if (ctx) s->n_ctx = (int)ctx;
    s->n_swa = (int)swa;
    if (layers) {
        /* keep the preset's attention layers that still exist */
        for (int i = (int)layers; i < LFM2_MAX_LAYERS; i++)
            s->attn[i] = false;
        s->n_layer = (int)layers;
    }
    if (attn) {
        memset(s->attn, 0, sizeof s->attn);
        if (strcmp(attn, "none")) {
            const char *p = attn;
            for (;;) {
                char *end;
                errno = 0;
                long v = strtol(p, &end, 10);
                if (errno || end == p || v < 0 || v >= s->n_layer) {
                    fprintf(stderr,
                            "error: --attn-layers '%s': each entry must be a layer index "
                            "in [0, %d)\n",
                            attn, s->n_layer);
                    return 2;
                }
                s->attn[v] = true;
                if (!*end) break;
                if (*end != ',') {
                    fprintf(stderr,
                            "error: --attn-layers '%s': expected numbers separated by "
                            "commas\n",
                            attn);
                    return 2;
                }
                p = end + 1;
            }
        }
    }
    o.seed = seed;
    o.preset = preset;
    char *text = NULL;
    if (train) {
        FILE *f = fopen(train, "rb");
        text = f ? cli_read_all(f, &o.train_len) : NULL;
        if (f) fclose(f);
        if (!text) {
            fprintf(stderr, "error: --train %s: %s\n", train, strerror(errno ? errno : ENOMEM));
            return 1;
        }
        o.train_text = text;
    }
    int rc = mkmodel_write(&o, out, err, sizeof err);
    free(text);
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    return 0;
}
