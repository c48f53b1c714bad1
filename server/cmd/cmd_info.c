/* cmd_info.c: `lfm2 info -m FILE`: validates a model file and prints what it contains. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "quant/quant.h"
#include "server/cmd/cli.h"

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: lfm2 info -m FILE\n"
            "  Validates FILE (GGUF structure, lfm2 hyper-parameters, tensor shapes, tokenizer)\n"
            "  and prints its version, hyper-parameters, layer kinds, tensor types and tokenizer.\n"
            "  Exit status 1 with 'error: ...' on stderr when the file is not a usable model,\n"
            "  2 for bad usage (unknown option, -m without a file).\n");
}

static const char *qname(uint32_t type) {
    const qtype_traits *tr = quant_traits(type);
    return tr ? tr->name : "?";
}

/* Prints up to max bytes of a metadata string, control bytes escaped (UTF-8 passes through). */
static void print_text(const char *s, size_t max) {
    for (size_t i = 0; s[i] && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

/* Prints a special token's id and text, control bytes escaped. */
static void print_tok_id(const tok *tk, const char *label, int id) {
    printf(", %s ", label);
    size_t n = 0;
    const char *s = id >= 0 ? tok_piece(tk, id, &n) : NULL;
    if (!s) {
        printf("none");
        return;
    }
    printf("%d '", id);
    for (size_t i = 0; i < n && i < 48; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    printf("'");
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            info_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: %s needs a file argument\n", argv[i]);
                return 2;
            }
            path = argv[++i];
        } else {
            fprintf(stderr, "error: unknown option '%s'\n", argv[i]);
            info_usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "error: no model file: use -m FILE\n");
        info_usage(stderr);
        return 1;
    }
    char err[512] = "";
    lfm2_model *m = NULL;
    if (lfm2_model_open(&m, path, err, sizeof err)) {
        cli_file_error(path, err);
        return 1;
    }
    tok *tk = NULL;
    if (tok_new(&tk, m->g, err, sizeof err)) {
        fprintf(stderr, "error: %s: tokenizer: %s\n", path, err);
        lfm2_model_close(m);
        return 1;
    }
    const gguf *g = m->g;
    const lfm2_hparams *hp = &m->hp;
    size_t fsize = gguf_file_size(g);
    printf("file: %s\n", path);
    printf("gguf: version %" PRIu32 ", %zu bytes (%.2f MiB), alignment %zu, %" PRId64
           " keys, %" PRId64 " tensors\n",
           gguf_version(g), fsize, fsize / 1048576.0, gguf_alignment(g), gguf_n_kv(g),
           gguf_n_tensors(g));
    printf("architecture: %s", hp->moe ? "lfm2moe" : "lfm2");
    const char *name = gguf_get_str(g, "general.name", NULL, NULL);
    if (name) {
        printf(" (name: ");
        print_text(name, 80);
        printf(")");
    }
    printf("\n");
    printf("hyper-parameters: n_embd %d, n_layer %d, n_ff %d, n_head %d, head_dim %d, n_vocab %d,\n"
           "  n_ctx_train %d, l_cache %d, sliding_window %d, rms_eps %g, rope_base %g\n",
           hp->n_embd, hp->n_layer, hp->n_ff, hp->n_head, hp->head_dim, hp->n_vocab,
           hp->n_ctx_train, hp->l_cache, hp->n_swa, hp->eps, hp->rope_base);
    printf("layers: %d conv + %d attention:", hp->n_layer - hp->n_attn_layers, hp->n_attn_layers);
    for (int l = 0; l < hp->n_layer; l++) {
        if (hp->n_head_kv[l])
            printf(" %d attn(kv=%d)", l, hp->n_head_kv[l]);
        else
            printf(" %d conv", l);
        printf(l + 1 < hp->n_layer ? "," : "\n");
    }
    if (hp->moe) {
        printf("experts: %d per MoE layer, %d used per token, expert ffn %d; ", hp->n_expert,
               hp->n_expert_used, hp->n_ff_exp);
        if (hp->n_dense_lead)
            printf("layers 0..%d dense (ffn %d), ", hp->n_dense_lead - 1, hp->n_ff);
        if (hp->n_dense_lead < hp->n_layer)
            printf("layers %d..%d MoE\n", hp->n_dense_lead, hp->n_layer - 1);
        else
            printf("no MoE layer\n");
        printf("routing: sigmoid gate (expert_gating_func %d), top-%d by probability + "
               "exp_probs_b, weights p / max(sum, 6.1035e-05)\n",
               hp->gating_func, hp->n_expert_used);
    }
    printf("output: %s\n",
           m->output == m->tok_embd ? "tied to token_embd.weight" : "output.weight");

    /* type histogram */
    int64_t count[QT_COUNT] = {0}, bytes[QT_COUNT] = {0}, params = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->type < QT_COUNT) {
            count[t->type]++;
            bytes[t->type] += (int64_t)t->nbytes;
        }
        params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    }
    printf("tensor types:");
    bool first = true;
    for (int ty = 0; ty < QT_COUNT; ty++)
        if (count[ty]) {
            printf("%s %s x%" PRId64 " (%.2f MiB)", first ? "" : ",", qname((uint32_t)ty),
                   count[ty], bytes[ty] / 1048576.0);
            first = false;
        }
    printf("; %" PRId64 " parameters\n", params);
    printf("tensors:\n");
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char shape[96];
        int k = snprintf(shape, sizeof shape, "[%" PRId64, t->ne[0]);
        for (uint32_t d = 1; d < t->n_dims; d++)
            k += snprintf(shape + k, sizeof shape - (size_t)k, ", %" PRId64, t->ne[d]);
        snprintf(shape + k, sizeof shape - (size_t)k, "]");
        printf("  %-36s %-5s %-14s %10zu bytes @ %" PRIu64 "\n", t->name, qname(t->type), shape,
               t->nbytes, t->offset);
    }

    /* tokenizer summary */
    const char *tmodel = gguf_get_str(g, "tokenizer.ggml.model", "?", NULL);
    const char *pre = gguf_get_str(g, "tokenizer.ggml.pre", "?", NULL);
    int64_t mi = gguf_find_key(g, "tokenizer.ggml.merges");
    size_t tlen = 0;
    const char *tmpl = gguf_kv_str(g, gguf_find_key(g, "tokenizer.chat_template"), &tlen);
    printf("tokenizer: model ");
    print_text(tmodel, 32);
    printf(", pre ");
    print_text(pre, 32);
    printf(", vocab %d, merges %" PRIu64, tok_n_vocab(tk), gguf_arr_len(g, mi));
    print_tok_id(tk, "bos", tok_bos(tk));
    print_tok_id(tk, "eos", tok_eos(tk));
    print_tok_id(tk, "pad", tok_pad(tk));
    printf(", add_bos %s\n", tok_add_bos(tk) ? "true" : "false");
    if (tmpl)
        printf("chat template: present (%zu bytes)\n", tlen);
    else
        printf("chat template: absent\n");
    tok_free(tk);
    lfm2_model_close(m);
    return 0;
}
