/* test_model.c: LFM2 model validation: reference files load, every inconsistency is named. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "quant/quant.h"
#include "synth/mkmodel.h"
#include "tests/check.h"

#define SRC "tests/data/models/mini-Q4_0.gguf"

enum kkind { K_NONE, K_DROP, K_INT, K_FLOAT, K_STR, K_ARR_I32, K_ARR_F32, K_ARR_STR1 };
enum tkind { T_NONE, T_DROP, T_SHAPE, T_TYPE, T_ADD };

typedef struct kedit {
    const char *key;
    enum kkind kind;
    enum gguf_vtype vt; /* for K_INT / K_FLOAT */
    int64_t i;
    double f;
    const char *s;
    int n; /* K_ARR_*: entries of a[] */
    int32_t a[8];
} kedit;

typedef struct variant {
    const char *name;
    const char *expect; /* substring of the error; NULL: the file must load */
    /* expect comes from tok_new (the model itself loads): `lfm2 info` must report it too */
    kedit k[2];
    const char *tensor;
    enum tkind tk;
    int64_t ne0, ne1;
    uint32_t type;
} variant;

#define ARCH "general.architecture"
#define KV "lfm2.attention.head_count_kv"

static const variant variants[] = {
    {"arch lfm2moe on a dense file",
     "missing key 'lfm2moe.embedding_length'",
     {{ARCH, K_STR, 0, 0, 0, "lfm2moe", 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"arch llama",
     "unsupported architecture 'llama'",
     {{ARCH, K_STR, 0, 0, 0, "llama", 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"arch missing",
     "missing key 'general.architecture'",
     {{ARCH, K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"arch not a string",
     "'general.architecture' has type u32",
     {{ARCH, K_INT, GGUF_U32, 1, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count 0",
     "'lfm2.attention.head_count' = 0 outside 1..",
     {{"lfm2.attention.head_count", K_INT, GGUF_U32, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count missing",
     "missing key 'lfm2.attention.head_count'",
     {{"lfm2.attention.head_count", K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count as string",
     "'lfm2.attention.head_count' has type string",
     {{"lfm2.attention.head_count", K_STR, 0, 0, 0, "4", 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"n_embd not a multiple of heads",
     "lfm2.embedding_length 256 is not a multiple of "
     "lfm2.attention.head_count 3",
     {{"lfm2.attention.head_count", K_INT, GGUF_U32, 3, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"odd head dim",
     "head dim 1 ",
     {{"lfm2.attention.head_count", K_INT, GGUF_U32, 256, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count_kv scalar",
     "'lfm2.attention.head_count_kv' has type u32",
     {{KV, K_INT, GGUF_U32, 2, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count_kv missing",
     "missing key 'lfm2.attention.head_count_kv'",
     {{KV, K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count_kv short",
     "'lfm2.attention.head_count_kv' has 5 entries, expected "
     "lfm2.block_count = 6",
     {{KV, K_ARR_I32, 0, 0, 0, 0, 5, {0, 0, 2, 0, 2}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count_kv not dividing",
     "'lfm2.attention.head_count_kv'[2] = 3: must be 0 (conv) or "
     "divide head_count 4",
     {{KV, K_ARR_I32, 0, 0, 0, 0, 6, {0, 0, 3, 0, 2, 0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count_kv above heads",
     "'lfm2.attention.head_count_kv'[4] = 8",
     {{KV, K_ARR_I32, 0, 0, 0, 0, 6, {0, 0, 2, 0, 8, 0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count_kv negative",
     "'lfm2.attention.head_count_kv'[0] = -1",
     {{KV, K_ARR_I32, 0, 0, 0, 0, 6, {-1, 0, 2, 0, 2, 0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"head_count_kv floats",
     "array elements are not integers",
     {{KV, K_ARR_F32, 0, 0, 0, 0, 6, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"conv layer marked attention",
     "missing tensor 'blk.1.attn_q.weight'",
     {{KV, K_ARR_I32, 0, 0, 0, 0, 6, {0, 2, 2, 0, 2, 0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"attention layer marked conv",
     "missing tensor 'blk.2.shortconv.in_proj.weight'",
     {{KV, K_ARR_I32, 0, 0, 0, 0, 6, {0, 0, 0, 0, 2, 0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"l_cache 0",
     "'lfm2.shortconv.l_cache' = 0 outside 1..64",
     {{"lfm2.shortconv.l_cache", K_INT, GGUF_U32, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"l_cache 100",
     "'lfm2.shortconv.l_cache' = 100 outside 1..64",
     {{"lfm2.shortconv.l_cache", K_INT, GGUF_U32, 100, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"l_cache 4",
     "tensor 'blk.0.shortconv.conv.weight': shape [3, 256] does not match the "
     "hyper-parameters: expected [4, 256]",
     {{"lfm2.shortconv.l_cache", K_INT, GGUF_U32, 4, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"block_count 0",
     "'lfm2.block_count' = 0 outside 1..256",
     {{"lfm2.block_count", K_INT, GGUF_U32, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"block_count 300",
     "'lfm2.block_count' = 300 outside 1..256",
     {{"lfm2.block_count", K_INT, GGUF_U32, 300, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"block_count 7",
     "has 6 entries, expected lfm2.block_count = 7",
     {{"lfm2.block_count", K_INT, GGUF_U32, 7, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"block_count 5",
     "unexpected tensor 'blk.5.",
     {{"lfm2.block_count", K_INT, GGUF_U32, 5, 0, 0, 0, {0}},
      {KV, K_ARR_I32, 0, 0, 0, 0, 5, {0, 0, 2, 0, 2}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"embedding_length 512",
     "tensor 'token_embd.weight': shape [256, 4096] does not match the "
     "hyper-parameters: expected [512, 4096]",
     {{"lfm2.embedding_length", K_INT, GGUF_U32, 512, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"embedding_length missing",
     "missing key 'lfm2.embedding_length'",
     {{"lfm2.embedding_length", K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"embedding_length huge",
     "'lfm2.embedding_length' = 4294967295 outside",
     {{"lfm2.embedding_length", K_INT, GGUF_U32, 4294967295ll, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"feed_forward_length 1024",
     "tensor 'blk.0.ffn_gate.weight': shape [256, 512] does not "
     "match the hyper-parameters: expected [256, 1024]",
     {{"lfm2.feed_forward_length", K_INT, GGUF_U32, 1024, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"vocab_size 5000",
     "tokenizer.ggml.tokens has 4096 entries, but lfm2.vocab_size is 5000",
     {{"lfm2.vocab_size", K_INT, GGUF_U32, 5000, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"no vocab at all",
     "no vocab size",
     {{"lfm2.vocab_size", K_DROP, 0, 0, 0, 0, 0, {0}},
      {"tokenizer.ggml.tokens", K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"embedding rows differ from the vocab",
     "tensor 'token_embd.weight': shape [256, 4000] does "
     "not match the hyper-parameters: expected [256, 4096]",
     {{0}},
     "token_embd.weight",
     T_SHAPE,
     256,
     4000,
     QT_F16},
    {"context_length missing",
     "missing key 'lfm2.context_length'",
     {{"lfm2.context_length", K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"eps missing",
     "missing key 'lfm2.attention.layer_norm_rms_epsilon'",
     {{"lfm2.attention.layer_norm_rms_epsilon", K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"eps negative",
     "'lfm2.attention.layer_norm_rms_epsilon' = -1 must be a positive",
     {{"lfm2.attention.layer_norm_rms_epsilon", K_FLOAT, GGUF_F32, 0, -1.0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"eps as string",
     "'lfm2.attention.layer_norm_rms_epsilon' has type string",
     {{"lfm2.attention.layer_norm_rms_epsilon", K_STR, 0, 0, 0, "1e-5", 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"rope base nan",
     "'lfm2.rope.freq_base' = nan",
     {{"lfm2.rope.freq_base", K_FLOAT, GGUF_F32, 0, NAN, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"sliding window negative",
     "'lfm2.attention.sliding_window' = -5 outside 0..",
     {{"lfm2.attention.sliding_window", K_INT, GGUF_I32, -5, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"missing ffn_up",
     "missing tensor 'blk.3.ffn_up.weight'",
     {{0}},
     "blk.3.ffn_up.weight",
     T_DROP,
     0,
     0,
     0},
    {"missing final norm",
     "missing tensor 'token_embd_norm.weight'",
     {{0}},
     "token_embd_norm.weight",
     T_DROP,
     0,
     0,
     0},
    {"missing embedding",
     "missing tensor 'token_embd.weight'",
     {{0}},
     "token_embd.weight",
     T_DROP,
     0,
     0,
     0},
    {"missing q_norm",
     "missing tensor 'blk.4.attn_q_norm.weight'",
     {{0}},
     "blk.4.attn_q_norm.weight",
     T_DROP,
     0,
     0,
     0},
    {"attn_k wrong shape",
     "tensor 'blk.2.attn_k.weight': shape [256, 256] does not match the "
     "hyper-parameters: expected [256, 128]",
     {{0}},
     "blk.2.attn_k.weight",
     T_SHAPE,
     256,
     256,
     QT_Q4_0},
    {"in_proj transposed",
     "tensor 'blk.0.shortconv.in_proj.weight': shape [768, 256]",
     {{0}},
     "blk.0.shortconv.in_proj.weight",
     T_SHAPE,
     768,
     256,
     QT_Q4_0},
    {"k_norm wrong size",
     "tensor 'blk.4.attn_k_norm.weight': shape [32] does not match the "
     "hyper-parameters: expected [64]",
     {{0}},
     "blk.4.attn_k_norm.weight",
     T_SHAPE,
     32,
     1,
     QT_F32},
    {"norm in f16",
     "tensor 'blk.1.attn_norm.weight': type f16, expected f32",
     {{0}},
     "blk.1.attn_norm.weight",
     T_TYPE,
     256,
     1,
     QT_F16},
    {"final norm in q8_0",
     "tensor 'token_embd_norm.weight': type q8_0, expected f32",
     {{0}},
     "token_embd_norm.weight",
     T_TYPE,
     256,
     1,
     QT_Q8_0},
    {"attention tensor in a conv layer",
     "unexpected tensor 'blk.1.attn_q.weight': layer 1 is a "
     "conv layer",
     {{0}},
     "blk.1.attn_q.weight",
     T_ADD,
     256,
     256,
     QT_F16},
    {"stray tensor",
     "unexpected tensor 'rope_freqs.weight'",
     {{0}},
     "rope_freqs.weight",
     T_ADD,
     32,
     1,
     QT_F32},
    {"output wrong shape",
     "tensor 'output.weight': shape [256, 4000]",
     {{0}},
     "output.weight",
     T_ADD,
     256,
     4000,
     QT_F16},
    /* tokenizer-level: the model loads, tok_new rejects (TOK_ marks them, see is_tok) */
    {"TOK bos outside the vocab",
     "tokenizer.ggml.bos_token_id = 5000: outside the vocab",
     {{"tokenizer.ggml.bos_token_id", K_INT, GGUF_U32, 5000, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"TOK eos negative",
     "tokenizer.ggml.eos_token_id = -1: outside the vocab",
     {{"tokenizer.ggml.eos_token_id", K_INT, GGUF_I32, -1, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"TOK merge of one token",
     "not two tokens separated by a space",
     {{"tokenizer.ggml.merges", K_ARR_STR1, 0, 0, 0, "abc", 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"TOK merge of unknown tokens",
     "left half is not a token",
     {{"tokenizer.ggml.merges", K_ARR_STR1, 0, 0, 0, "qqqqq zzzzz", 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"TOK tokenizer model llama",
     "tokenizer.ggml.model",
     {{"tokenizer.ggml.model", K_STR, 0, 0, 0, "llama", 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"embedding_length_out (retrieval checkpoint)",
     "'lfm2.embedding_length_out' is present: embedding/retrieval checkpoints",
     {{"lfm2.embedding_length_out", K_INT, GGUF_U32, 128, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"dense_2.weight (retrieval checkpoint)",
     "tensor 'dense_2.weight' is present",
     {{0}},
     "dense_2.weight",
     T_ADD,
     256,
     128,
     QT_F32},
    /* variants that must load */
    {"vocab from the token list",
     NULL,
     {{"lfm2.vocab_size", K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"untied output", NULL, {{0}}, "output.weight", T_ADD, 256, 4096, QT_Q8_0},
    {"sliding window 128",
     NULL,
     {{"lfm2.attention.sliding_window", K_INT, GGUF_U32, 128, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
    {"no rope base (default)",
     NULL,
     {{"lfm2.rope.freq_base", K_DROP, 0, 0, 0, 0, 0, {0}}},
     NULL,
     T_NONE,
     0,
     0,
     0},
};

static int fill_zero(void *ctx, void *dst, size_t n) {
    (void)ctx;
    memset(dst, 0, n);
    return 0;
}

static const kedit *edit_for(const variant *v, const char *key) {
    for (int e = 0; e < 2; e++)
        if (v->k[e].key && !strcmp(v->k[e].key, key)) return &v->k[e];
    return NULL;
}

static int apply_edit(gguf_writer *w, const kedit *k) {
    switch (k->kind) {
    case K_INT:
        return gguf_writer_set_int(w, k->key, k->vt, k->i);
    case K_FLOAT:
        return gguf_writer_set_float(w, k->key, k->vt, k->f);
    case K_STR:
        return gguf_writer_set_str(w, k->key, k->s);
    case K_ARR_I32:
        return gguf_writer_set_arr(w, k->key, GGUF_I32, k->a, (uint64_t)k->n);
    case K_ARR_STR1:
        return gguf_writer_set_arr_str(w, k->key, &k->s, NULL, 1);
    case K_ARR_F32: {
        float f[8] = {0, 0, 2, 0, 2, 0};
        return gguf_writer_set_arr(w, k->key, GGUF_F32, f, (uint64_t)k->n);
    }
    default:
        return 0;
    }
}

/* Writes src with v's edits applied to path; ne2 > 0 makes a T_SHAPE/T_ADD tensor 3-D. */
static int write_variant(const gguf *g, const variant *v, int64_t ne2, const char *path) {
    gguf_writer *w = gguf_writer_new();
    int rc = 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const kedit *k = edit_for(v, gguf_kv_key(g, i));
        if (k && k->kind == K_DROP) continue;
        rc |= k ? apply_edit(w, k) : gguf_writer_copy_kv(w, g, i);
    }
    for (int e = 0; e < 2; e++)
        if (v->k[e].key && gguf_find_key(g, v->k[e].key) < 0) rc |= apply_edit(w, &v->k[e]);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        bool hit = v->tensor && !strcmp(v->tensor, t->name);
        if (hit && v->tk == T_DROP) continue;
        if (hit && (v->tk == T_SHAPE || v->tk == T_TYPE)) {
            int64_t ne[3] = {v->ne0, v->ne1, ne2 ? ne2 : 1};
            rc |= gguf_writer_add_tensor_fill(w, t->name, v->type,
                                              ne2 > 1      ? 3
                                              : v->ne1 > 1 ? 2
                                                           : 1,
                                              ne, fill_zero, NULL);
            continue;
        }
        rc |= gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
    }
    if (v->tk == T_ADD) {
        int64_t ne[3] = {v->ne0, v->ne1, ne2 ? ne2 : 1};
        rc |= gguf_writer_add_tensor_fill(w, v->tensor, v->type,
                                          ne2 > 1      ? 3
                                          : v->ne1 > 1 ? 2
                                                       : 1,
                                          ne, fill_zero, NULL);
    }
    char err[512] = "";
    if (!rc) rc = gguf_writer_write(w, path, err, sizeof err);
    if (rc) fprintf(stderr, "variant '%s': cannot write: %s\n", v->name, err);
    gguf_writer_free(w);
    return rc;
}

static void check_mini(const lfm2_model *m, const char *file) {
    const lfm2_hparams *hp = &m->hp;
    CHECK_EQ_INT(hp->n_embd, 256);
    CHECK_EQ_INT(hp->n_layer, 6);
    CHECK_EQ_INT(hp->n_ff, 512);
    CHECK_EQ_INT(hp->n_head, 4);
    CHECK_EQ_INT(hp->head_dim, 64);
    CHECK_EQ_INT(hp->n_vocab, 4096);
    CHECK_EQ_INT(hp->n_ctx_train, 32768);
    CHECK_EQ_INT(hp->l_cache, 3);
    CHECK_EQ_INT(hp->n_swa, 0);
    CHECK_NEAR(hp->eps, 1e-5, 1e-12);
    CHECK_NEAR(hp->rope_base, 1e6, 0);
    CHECK_EQ_INT(hp->n_attn_layers, 2);
    static const int kv[6] = {0, 0, 2, 0, 2, 0};
    for (int l = 0; l < 6; l++) {
        const lfm2_layer *L = &m->layers[l];
        CHECK_EQ_INT(hp->n_head_kv[l], kv[l]);
        CHECK(L->attn_norm && L->ffn_norm && L->ffn_gate && L->ffn_up && L->ffn_down);
        CHECK(L->attn_norm->type == QT_F32 && L->ffn_norm->type == QT_F32);
        if (kv[l]) {
            CHECK(L->wq && L->wk && L->wv && L->wo && L->q_norm && L->k_norm);
            CHECK(!L->in_proj && !L->conv && !L->out_proj);
            CHECK(L->wk && L->wk->ne[1] == 128 && L->wq->ne[1] == 256);
        } else {
            CHECK(L->in_proj && L->conv && L->out_proj);
            CHECK(!L->wq && !L->wk && !L->wv && !L->wo);
            CHECK(L->conv && L->conv->ne[0] == 3 && L->in_proj->ne[1] == 768);
        }
    }
    CHECK(m->tok_embd && m->output == m->tok_embd); /* tied */
    CHECK(m->out_norm && m->out_norm->type == QT_F32);
    CHECK_STR(m->tok_embd->name, "token_embd.weight");
    if (strstr(file, "Q4_0")) CHECK_EQ_INT(m->tok_embd->type, QT_Q6_K);
    if (strstr(file, "F16") && !strstr(file, "BF16"))
        CHECK_EQ_INT(m->layers[0].ffn_up->type, QT_F16);
    if (strstr(file, "BF16")) CHECK_EQ_INT(m->layers[0].ffn_up->type, QT_BF16);
    if (strstr(file, "Q8_0")) CHECK_EQ_INT(m->layers[0].ffn_up->type, QT_Q8_0);
    if (strstr(file, "Q6_K")) CHECK_EQ_INT(m->layers[0].ffn_up->type, QT_Q6_K);
}

/* Mutates the metadata and tensor infos of a real model (boundary values and bit flips at
 * random places) and runs every layer on what still parses: gguf, model, tokenizer. Any crash
 * or sanitizer report fails the test; the buffer is exactly the file's size so ASan sees any
 * read past it. */
static void fuzz_real_header(const char *file, int iters) {
    FILE *f = fopen(file, "rb");
    CHECK(f != NULL);
    if (!f) return;
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n), *orig = malloc(n);
    CHECK(fread(orig, 1, n, f) == n);
    fclose(f);
    memcpy(p, orig, n);
    char err[512];
    gguf *g = NULL;
    CHECK_EQ_INT(gguf_open_mem(&g, p, n, err, sizeof err), 0);
    if (!g) return;
    size_t meta = (size_t)((const uint8_t *)gguf_tensor_at(g, 0)->data - p); /* header size */
    size_t infos = 0; /* bytes of tensor infos, which end just before the data padding */
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        infos += 8 + strlen(gguf_tensor_at(g, i)->name) + 4 + 8 * gguf_tensor_at(g, i)->n_dims + 12;
    size_t info_start = meta - infos - 32;
    gguf_close(g);
    static const uint64_t vals[] = {0,
                                    1,
                                    2,
                                    3,
                                    5,
                                    7,
                                    31,
                                    33,
                                    64,
                                    255,
                                    256,
                                    4096,
                                    65535,
                                    65536,
                                    0x7fffffffu,
                                    0x80000000u,
                                    0xffffffffu,
                                    1ull << 32,
                                    (1ull << 62),
                                    INT64_MAX,
                                    UINT64_MAX,
                                    UINT64_MAX - 1};
    uint64_t s = 0x243f6a8885a308d3ull;
    int loaded = 0, models = 0, toks = 0;
    for (int it = 0; it < iters; it++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        /* a third each: the fixed header and first keys, the tensor infos, anywhere */
        size_t at = (s >> 60) % 3 == 0   ? (size_t)((s >> 11) % 1024)
                    : (s >> 60) % 3 == 1 ? info_start + (size_t)((s >> 11) % (meta - info_start))
                                         : (size_t)((s >> 11) % meta);
        size_t width = (size_t[]){1, 2, 4, 8}[(s >> 3) % 4];
        if (at + width > n) at = n - width;
        if (s % 3 == 0) {
            p[at] ^= (uint8_t)(1u << ((s >> 5) % 8));
        } else {
            uint64_t v = vals[(s >> 40) % (sizeof vals / sizeof vals[0])];
            memcpy(p + at, &v, width);
        }
        g = NULL;
        err[0] = 0;
        if (gguf_open_mem(&g, p, n, err, sizeof err) == 0) {
            loaded++;
            lfm2_model *m = NULL;
            if (lfm2_model_from_gguf(&m, g, err, sizeof err) == 0) {
                models++;
                tok *tk = NULL;
                if (tok_new(&tk, m->g, err, sizeof err) == 0) {
                    toks++;
                    int32_t ids[64];
                    int k = tok_encode(tk, "Hello, world! 123", 17, true, true, ids, 64);
                    char out[256];
                    if (k > 0 && k <= 64) tok_decode(tk, ids, k, true, out, sizeof out);
                    tok_free(tk);
                } else {
                    CHECK(err[0] != 0);
                }
                lfm2_model_close(m); /* closes g */
            } else {
                CHECK(err[0] != 0);
                gguf_close(g);
            }
        } else {
            CHECK(err[0] != 0);
        }
        memcpy(p + at, orig + at, width); /* undo */
    }
    printf("fuzzed %s: %d mutations, %d parsed, %d models, %d tokenizers\n", file, iters, loaded,
           models, toks);
    CHECK(loaded > 0 && loaded < iters);
    free(p);
    free(orig);
}

static void tmp_path(char *out, size_t n, const char *dir, const char *name) {
    const char *d = dir ? dir : getenv("TMPDIR");
    snprintf(out, n, "%s/%s", d && *d ? d : "/tmp", name);
}

/* lfm2moe: a tiny-moe file (E 128, 6 experts of 64, top 2, layer 0 dense, conv 0 2, attn 1 3)
 * loads with every expert tensor resolved, and each inconsistency is refused by name. */
#define MK "lfm2moe."
/* a variant and, for the expert tensors it writes, their third dimension */
typedef struct moe_variant {
    variant v;
    int64_t ne2;
} moe_variant;

static const moe_variant moe_variants[] = {
    {{"expert_used_count 0",
      "'lfm2moe.expert_used_count' = 0 outside 1..lfm2moe.expert_count = 6",
      {{MK "expert_used_count", K_INT, GGUF_U32, 0, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
    {{"expert_used_count above expert_count",
      "'lfm2moe.expert_used_count' = 7 outside 1..lfm2moe.expert_count = 6",
      {{MK "expert_used_count", K_INT, GGUF_U32, 7, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
    {{"expert_count missing",
      "missing key 'lfm2moe.expert_count'",
      {{MK "expert_count", K_DROP, 0, 0, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
    {{"expert_feed_forward_length missing",
      "missing key 'lfm2moe.expert_feed_forward_length'",
      {{MK "expert_feed_forward_length", K_DROP, 0, 0, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
    {{"softmax gating",
      "'lfm2moe.expert_gating_func' = 1 is not supported",
      {{MK "expert_gating_func", K_INT, GGUF_U32, 1, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
    {{"leading dense beyond the layers",
      "'lfm2moe.leading_dense_block_count' = 5 exceeds lfm2moe.block_count = 4",
      {{MK "leading_dense_block_count", K_INT, GGUF_U32, 5, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
    {{"leading dense covers a MoE layer",
      "missing tensor 'blk.1.ffn_gate.weight'",
      {{MK "leading_dense_block_count", K_INT, GGUF_U32, 2, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
    {{"missing bias",
      "missing tensor 'blk.2.exp_probs_b.bias'",
      {{0}},
      "blk.2.exp_probs_b.bias",
      T_DROP,
      0,
      0,
      0},
     0},
    {{"bias of the wrong length",
      "tensor 'blk.2.exp_probs_b.bias': shape [5] does not match the hyper-parameters: expected "
      "[6]",
      {{0}},
      "blk.2.exp_probs_b.bias",
      T_SHAPE,
      5,
      1,
      QT_F32},
     0},
    {{"bias in f16",
      "tensor 'blk.3.exp_probs_b.bias': type f16, expected f32",
      {{0}},
      "blk.3.exp_probs_b.bias",
      T_TYPE,
      6,
      1,
      QT_F16},
     0},
    {{"router of the wrong width",
      "tensor 'blk.1.ffn_gate_inp.weight': shape [128, 5] does not match",
      {{0}},
      "blk.1.ffn_gate_inp.weight",
      T_SHAPE,
      128,
      5,
      QT_F32},
     0},
    {{"gate experts: one expert short",
      "tensor 'blk.1.ffn_gate_exps.weight': shape [128, 64, 5] does not match the "
      "hyper-parameters: expected [128, 64, 6]",
      {{0}},
      "blk.1.ffn_gate_exps.weight",
      T_SHAPE,
      128,
      64,
      QT_F32},
     5},
    {{"up experts: wrong width",
      "tensor 'blk.2.ffn_up_exps.weight': shape [128, 32, 6] does not match",
      {{0}},
      "blk.2.ffn_up_exps.weight",
      T_SHAPE,
      128,
      32,
      QT_F32},
     6},
    {{"down experts transposed",
      "tensor 'blk.3.ffn_down_exps.weight': shape [128, 64, 6] does not match the "
      "hyper-parameters: expected [64, 128, 6]",
      {{0}},
      "blk.3.ffn_down_exps.weight",
      T_SHAPE,
      128,
      64,
      QT_F32},
     6},
    {{"down experts as a 2-D matrix",
      "tensor 'blk.3.ffn_down_exps.weight': shape [64, 768] does not match",
      {{0}},
      "blk.3.ffn_down_exps.weight",
      T_SHAPE,
      64,
      768,
      QT_F32},
     0},
    {{"dense FFN in a MoE layer",
      "unexpected tensor 'blk.2.ffn_gate.weight': layer 2 is a conv layer (head_count_kv[2] = 0) "
      "with an expert FFN",
      {{0}},
      "blk.2.ffn_gate.weight",
      T_ADD,
      128,
      256,
      QT_F32},
     0},
    {{"experts in the dense layer",
      "unexpected tensor 'blk.0.ffn_gate_exps.weight': layer 0 is a conv layer (head_count_kv[0] "
      "= 0) with a dense FFN",
      {{0}},
      "blk.0.ffn_gate_exps.weight",
      T_ADD,
      128,
      64,
      QT_F32},
     6},
    {{"retrieval head",
      "'lfm2moe.embedding_length_out' is present",
      {{MK "embedding_length_out", K_INT, GGUF_U32, 64, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
    {{"no leading_dense_block_count (0: layer 0 is a MoE layer too)",
      "missing tensor 'blk.0.ffn_gate_inp.weight'",
      {{MK "leading_dense_block_count", K_DROP, 0, 0, 0, 0, 0, {0}}},
      NULL,
      T_NONE,
      0,
      0,
      0},
     0},
};

static void test_moe(const char *dir) {
    char path[512], err[512];
    tmp_path(path, sizeof path, dir, "tiny-moe.gguf");
    mkmodel_opts o = {.seed = 5, .ftype = MK_F32, .preset = "tiny-moe"};
    CHECK_EQ_INT(mkmodel_preset("tiny-moe", &o.shape, err, sizeof err), 0);
    if (mkmodel_write(&o, path, err, sizeof err) < 0) {
        fprintf(stderr, "tiny-moe: %s\n", err);
        CHECK(!"mkmodel tiny-moe");
        return;
    }
    lfm2_model *m = NULL;
    err[0] = 0;
    CHECK_EQ_INT(lfm2_model_open(&m, path, err, sizeof err), 0);
    if (!m) {
        fprintf(stderr, "tiny-moe: %s\n", err);
        return;
    }
    const lfm2_hparams *hp = &m->hp;
    CHECK(hp->moe);
    CHECK_EQ_INT(hp->n_expert, 6);
    CHECK_EQ_INT(hp->n_expert_used, 2);
    CHECK_EQ_INT(hp->n_ff_exp, 64);
    CHECK_EQ_INT(hp->n_dense_lead, 1);
    CHECK_EQ_INT(hp->gating_func, LFM2_GATING_SIGMOID);
    CHECK_EQ_INT(hp->n_ff, 256);
    CHECK(!lfm2_layer_is_moe(hp, 0) && lfm2_layer_is_moe(hp, 1) && lfm2_layer_is_moe(hp, 3));
    const lfm2_layer *d = &m->layers[0];
    CHECK(d->ffn_gate && d->ffn_up && d->ffn_down && !d->ffn_gate_inp && !d->ffn_gate_exps);
    for (int l = 1; l < 4; l++) {
        const lfm2_layer *L = &m->layers[l];
        CHECK(!L->ffn_gate && !L->ffn_up && !L->ffn_down);
        CHECK(L->ffn_gate_inp && L->exp_probs_b && L->ffn_gate_exps && L->ffn_up_exps &&
              L->ffn_down_exps);
        if (L->ffn_down_exps)
            CHECK(L->ffn_down_exps->ne[0] == 64 && L->ffn_down_exps->ne[1] == 128 &&
                  L->ffn_down_exps->ne[2] == 6);
    }
    CHECK(m->output == m->tok_embd && m->out_norm);
    gguf *src = m->g;
    int n_bad = 0;
    for (size_t k = 0; k < sizeof moe_variants / sizeof moe_variants[0]; k++) {
        const variant *v = &moe_variants[k].v;
        char vp[512];
        tmp_path(vp, sizeof vp, dir, "moe-variant.gguf");
        if (write_variant(src, v, moe_variants[k].ne2, vp)) {
            CHECK(!"write_variant");
            continue;
        }
        lfm2_model *mv = NULL;
        err[0] = 0;
        int rc = lfm2_model_open(&mv, vp, err, sizeof err);
        if (v->expect) {
            n_bad++;
            if (rc == 0) fprintf(stderr, "moe variant '%s' loaded but should fail\n", v->name);
            CHECK(rc < 0 && !mv);
            if (!strstr(err, v->expect))
                fprintf(stderr, "moe variant '%s': message \"%s\" lacks \"%s\"\n", v->name, err,
                        v->expect);
            CHECK(strstr(err, v->expect) != NULL);
        } else {
            if (rc) fprintf(stderr, "moe variant '%s' should load: %s\n", v->name, err);
            CHECK_EQ_INT(rc, 0);
        }
        lfm2_model_close(mv);
        unlink(vp);
    }
    CHECK(n_bad >= 18);
    lfm2_model_close(m);
    unlink(path);
}
#undef MK

int main(int argc, char **argv) {
    /* --write-broken DIR: only write the broken variants there (for e2e), named model-SLUG.gguf;
     * --write-valid DIR: also write the variants that must load, named valid-SLUG.gguf */
    const char *write_dir = NULL, *valid_dir = NULL;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--write-broken")) write_dir = argv[i + 1];
        if (!strcmp(argv[i], "--write-valid")) valid_dir = argv[i + 1];
    }
    if (valid_dir && !write_dir) write_dir = valid_dir;
    if (write_dir) mkdir(write_dir, 0755);
    if (valid_dir) mkdir(valid_dir, 0755);
    char err[512];
    if (!write_dir) {
        static const char *models[] = {"mini-F16",    "mini-BF16",   "mini-Q8_0", "mini-Q4_0",
                                       "mini-Q4_K_M", "mini-Q5_K_M", "mini-Q6_K"};
        for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
            char p[256];
            snprintf(p, sizeof p, "tests/data/models/%s.gguf", models[i]);
            lfm2_model *m = NULL;
            err[0] = 0;
            CHECK_EQ_INT(lfm2_model_open(&m, p, err, sizeof err), 0);
            if (!m)
                fprintf(stderr, "%s: %s\n", p, err);
            else
                check_mini(m, p);
            lfm2_model_close(m);
        }
        lfm2_model *m = (lfm2_model *)1;
        CHECK(lfm2_model_open(&m, "/nonexistent.gguf", err, sizeof err) < 0 && m == NULL);
        lfm2_model_close(NULL);
    }
    if (!write_dir) test_moe(NULL);
    if (!write_dir) {
        const char *it = getenv("LFM2_FUZZ_ITERS"); /* longer runs on demand */
        fuzz_real_header("tests/data/models/mini-Q8_0.gguf", it ? atoi(it) : 3000);
    }
    gguf *src = NULL;
    CHECK_EQ_INT(gguf_open(&src, SRC, err, sizeof err), 0);
    if (!src) return check_done("test_model");
    int n_bad = 0;
    for (size_t k = 0; k < sizeof variants / sizeof variants[0]; k++) {
        const variant *v = &variants[k];
        if (write_dir && !v->expect && !valid_dir) continue;
        char name[96], path[512];
        int k0 = snprintf(name, sizeof name, "%s-", v->expect ? "model" : "valid");
        for (const char *c = v->name; *c && k0 < 80; c++) /* slug of the variant's name */
            name[k0++] = (*c >= 'A' && *c <= 'Z') ? (char)(*c - 'A' + 'a')
                         : (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' ? *c
                                                                                             : '-';
        snprintf(name + k0, sizeof name - (size_t)k0, ".gguf");
        tmp_path(path, sizeof path,
                 v->expect   ? write_dir
                 : valid_dir ? valid_dir
                             : write_dir,
                 name);
        if (write_variant(src, v, 0, path)) {
            CHECK(!"write_variant");
            continue;
        }
        if (write_dir) {
            n_bad += v->expect != NULL;
            continue;
        }
        lfm2_model *m = NULL;
        err[0] = 0;
        int rc = lfm2_model_open(&m, path, err, sizeof err);
        if (!strncmp(v->name, "TOK ", 4)) {
            n_bad++;
            if (rc) fprintf(stderr, "variant '%s': model should load: %s\n", v->name, err);
            CHECK_EQ_INT(rc, 0);
            tok *tk = NULL;
            if (m) CHECK(tok_new(&tk, m->g, err, sizeof err) < 0 && !tk);
            if (!strstr(err, v->expect))
                fprintf(stderr, "variant '%s': tok_new said \"%s\", lacks \"%s\"\n", v->name, err,
                        v->expect);
            CHECK(strstr(err, v->expect) != NULL);
            tok_free(tk);
        } else if (v->expect) {
            n_bad++;
            if (rc == 0) fprintf(stderr, "variant '%s' loaded but should fail\n", v->name);
            CHECK(rc < 0 && !m);
            if (!strstr(err, v->expect))
                fprintf(stderr, "variant '%s': message \"%s\" lacks \"%s\"\n", v->name, err,
                        v->expect);
            CHECK(strstr(err, v->expect) != NULL);
        } else {
            if (rc) fprintf(stderr, "variant '%s' should load: %s\n", v->name, err);
            CHECK_EQ_INT(rc, 0);
            if (m) {
                CHECK_EQ_INT(m->hp.n_vocab, 4096);
                if (!strcmp(v->name, "untied output"))
                    CHECK(m->output != m->tok_embd && m->output->type == QT_Q8_0);
                else
                    CHECK(m->output == m->tok_embd);
                if (!strcmp(v->name, "sliding window 128")) CHECK_EQ_INT(m->hp.n_swa, 128);
                if (!strcmp(v->name, "no rope base (default)"))
                    CHECK_NEAR(m->hp.rope_base, 10000, 0);
            }
        }
        lfm2_model_close(m);
        unlink(path);
    }
    gguf_close(src);
    if (write_dir)
        printf("wrote %d broken models to %s\n", n_bad, write_dir);
    else
        CHECK(n_bad >= 40);
    return check_done("test_model");
}
