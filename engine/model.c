/* model.c: turns a validated GGUF into an lfm2_model: the lfm2.* (or lfm2moe.*) keys and every
 * tensor. */
#include "engine/model.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/util.h"
#include "quant/quant.h"

#define LFM2_MAX_DIM (1 << 24) /* any hidden/ffn/vocab size beyond this is a corrupt file */

static const char *type_name(const gguf *g, const char *key) {
    static const char *names[GGUF_VTYPE_COUNT] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                  "i32", "f32", "bool", "string", "array",
                                                  "u64", "i64", "f64"};
    enum gguf_vtype t = gguf_kv_type(g, gguf_find_key(g, key));
    return t < GGUF_VTYPE_COUNT ? names[t] : "?";
}

/* Reads an integer key into [lo, hi]; required keys must be present. */
static int get_int_key(const gguf *g, const char *key, bool required, int64_t def, int64_t lo,
                       int64_t hi, int *out, char *err, size_t errlen) {
    if (gguf_find_key(g, key) < 0) {
        if (required) {
            util_seterr(err, errlen, "missing key '%s'", key);
            return -1;
        }
        *out = (int)def;
        return 0;
    }
    bool bad = false;
    int64_t v = gguf_get_int(g, key, 0, &bad);
    if (bad || gguf_kv_type(g, gguf_find_key(g, key)) == GGUF_BOOL) {
        util_seterr(err, errlen, "key '%s' has type %s, expected an integer", key,
                    type_name(g, key));
        return -1;
    }
    if (v < lo || v > hi) {
        util_seterr(err, errlen, "key '%s' = %" PRId64 " outside %" PRId64 "..%" PRId64, key, v, lo,
                    hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int get_float_key(const gguf *g, const char *key, bool required, double def, float *out,
                         char *err, size_t errlen) {
    if (gguf_find_key(g, key) < 0) {
        if (required) {
            util_seterr(err, errlen, "missing key '%s'", key);
            return -1;
        }
        *out = (float)def;
        return 0;
    }
    bool bad = false;
    double v = gguf_get_float(g, key, 0, &bad);
    if (bad) {
        util_seterr(err, errlen, "key '%s' has type %s, expected a number", key, type_name(g, key));
        return -1;
    }
    if (!(v > 0) || !isfinite(v) || v > 1e30) {
        util_seterr(err, errlen, "key '%s' = %g must be a positive finite number", key, v);
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* "<arch>.<suffix>" into buf: the architecture's key names (lfm2.*, lfm2moe.*) */
static const char *akey(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
    return buf;
}

/* The expert keys of lfm2moe, checked against each other and against the layer count. */
static int read_moe_hparams(const gguf *g, const char *a, lfm2_hparams *hp, char *err,
                            size_t errlen) {
    char k[6][96];
    if (get_int_key(g, akey(k[0], 96, a, "expert_count"), true, 0, 1, LFM2_MAX_EXPERTS,
                    &hp->n_expert, err, errlen) ||
        get_int_key(g, akey(k[1], 96, a, "expert_used_count"), true, 0, 0, INT_MAX,
                    &hp->n_expert_used, err, errlen) ||
        get_int_key(g, akey(k[2], 96, a, "expert_feed_forward_length"), true, 0, 1, LFM2_MAX_DIM,
                    &hp->n_ff_exp, err, errlen) ||
        get_int_key(g, akey(k[3], 96, a, "leading_dense_block_count"), false, 0, 0, LFM2_MAX_LAYERS,
                    &hp->n_dense_lead, err, errlen) ||
        get_int_key(g, akey(k[4], 96, a, "expert_gating_func"), true, 0, 0, INT_MAX,
                    &hp->gating_func, err, errlen))
        return -1;
    if (hp->n_expert_used < 1 || hp->n_expert_used > hp->n_expert) {
        util_seterr(err, errlen, "key '%s' = %d outside 1..%s = %d", k[1], hp->n_expert_used, k[0],
                    hp->n_expert);
        return -1;
    }
    if (hp->n_dense_lead > hp->n_layer) {
        util_seterr(err, errlen, "key '%s' = %d exceeds %s.block_count = %d", k[3],
                    hp->n_dense_lead, a, hp->n_layer);
        return -1;
    }
    if (hp->gating_func != LFM2_GATING_SIGMOID) {
        util_seterr(err, errlen,
                    "key '%s' = %d is not supported: only %d (sigmoid, as LFM2's MoE models use)",
                    k[4], hp->gating_func, LFM2_GATING_SIGMOID);
        return -1;
    }
    return 0;
}

static int read_hparams(const gguf *g, const char *a, lfm2_hparams *hp, char *err, size_t errlen) {
    char k[10][96];
    if (get_int_key(g, akey(k[0], 96, a, "embedding_length"), true, 0, 1, LFM2_MAX_DIM, &hp->n_embd,
                    err, errlen) ||
        get_int_key(g, akey(k[1], 96, a, "block_count"), true, 0, 1, LFM2_MAX_LAYERS, &hp->n_layer,
                    err, errlen) ||
        get_int_key(g, akey(k[2], 96, a, "feed_forward_length"), true, 0, 1, LFM2_MAX_DIM,
                    &hp->n_ff, err, errlen) ||
        get_int_key(g, akey(k[3], 96, a, "context_length"), true, 0, 1, INT_MAX, &hp->n_ctx_train,
                    err, errlen) ||
        get_int_key(g, akey(k[4], 96, a, "attention.head_count"), true, 0, 1, LFM2_MAX_DIM,
                    &hp->n_head, err, errlen) ||
        get_int_key(g, akey(k[5], 96, a, "shortconv.l_cache"), true, 0, 1, LFM2_MAX_L_CACHE,
                    &hp->l_cache, err, errlen) ||
        get_int_key(g, akey(k[6], 96, a, "attention.sliding_window"), false, 0, 0, INT_MAX,
                    &hp->n_swa, err, errlen) ||
        get_float_key(g, akey(k[7], 96, a, "attention.layer_norm_rms_epsilon"), true, 0, &hp->eps,
                      err, errlen) ||
        get_float_key(g, akey(k[8], 96, a, "rope.freq_base"), false, 10000.0, &hp->rope_base, err,
                      errlen))
        return -1;
    /* retrieval checkpoints (LFM2-ColBERT) project the final hidden state to another width
     * through dense_2: not a language model's logits, so refused by name */
    if (gguf_find_key(g, akey(k[9], 96, a, "embedding_length_out")) >= 0) {
        util_seterr(err, errlen,
                    "key '%s' is present: embedding/retrieval checkpoints (an output projection "
                    "dense_2.weight instead of logits) are not supported",
                    k[9]);
        return -1;
    }
    hp->moe = !strcmp(a, "lfm2moe");
    if (hp->moe && read_moe_hparams(g, a, hp, err, errlen)) return -1;
    if (hp->n_embd % hp->n_head) {
        util_seterr(err, errlen, "%s %d is not a multiple of %s %d", k[0], hp->n_embd, k[4],
                    hp->n_head);
        return -1;
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2) {
        util_seterr(err, errlen,
                    "head dim %d (embedding_length %d / head_count %d) must be even for RoPE",
                    hp->head_dim, hp->n_embd, hp->n_head);
        return -1;
    }
    char kvkey[96];
    akey(kvkey, sizeof kvkey, a, "attention.head_count_kv");
    int64_t ki = gguf_find_key(g, kvkey);
    if (ki < 0) {
        util_seterr(err, errlen, "missing key '%s'", kvkey);
        return -1;
    }
    if (gguf_kv_type(g, ki) != GGUF_ARR) {
        util_seterr(err, errlen,
                    "key '%s' has type %s: %s needs an array with one entry per layer (0 = conv)",
                    kvkey, type_name(g, kvkey), a);
        return -1;
    }
    enum gguf_vtype et = gguf_arr_type(g, ki);
    if (!(et == GGUF_U8 || et == GGUF_I8 || et == GGUF_U16 || et == GGUF_I16 || et == GGUF_U32 ||
          et == GGUF_I32 || et == GGUF_U64 || et == GGUF_I64)) {
        util_seterr(err, errlen, "key '%s': array elements are not integers", kvkey);
        return -1;
    }
    if (gguf_arr_len(g, ki) != (uint64_t)hp->n_layer) {
        util_seterr(err, errlen, "key '%s' has %" PRIu64 " entries, expected %s = %d", kvkey,
                    gguf_arr_len(g, ki), k[1], hp->n_layer);
        return -1;
    }
    hp->n_attn_layers = 0;
    for (int l = 0; l < hp->n_layer; l++) {
        int64_t kv = gguf_arr_int(g, ki, (uint64_t)l);
        if (et == GGUF_U64 && gguf_arr_float(g, ki, (uint64_t)l) >= 9223372036854775807.0)
            kv = INT64_MAX; /* a u64 past int64 reads back as 0: keep it out of range */
        if (kv < 0 || kv > hp->n_head || (kv > 0 && hp->n_head % kv)) {
            util_seterr(err, errlen,
                        "key '%s'[%d] = %" PRId64 ": must be 0 (conv) or divide head_count %d",
                        kvkey, l, kv, hp->n_head);
            return -1;
        }
        hp->n_head_kv[l] = (int)kv;
        hp->n_attn_layers += kv > 0;
    }
    /* vocab: <arch>.vocab_size, else the token list */
    char vkey[96];
    akey(vkey, sizeof vkey, a, "vocab_size");
    if (gguf_find_key(g, vkey) >= 0) {
        if (get_int_key(g, vkey, true, 0, 1, LFM2_MAX_DIM, &hp->n_vocab, err, errlen)) return -1;
    } else {
        int64_t ti = gguf_find_key(g, "tokenizer.ggml.tokens");
        if (ti < 0 || gguf_arr_type(g, ti) != GGUF_STR) {
            util_seterr(err, errlen,
                        "no vocab size: neither '%s' nor a 'tokenizer.ggml.tokens' string array "
                        "is present",
                        vkey);
            return -1;
        }
        uint64_t n = gguf_arr_len(g, ti);
        if (n < 1 || n > LFM2_MAX_DIM) {
            util_seterr(err, errlen, "tokenizer.ggml.tokens has %" PRIu64 " entries (limit 1..%d)",
                        n, LFM2_MAX_DIM);
            return -1;
        }
        hp->n_vocab = (int)n;
    }
    int64_t ti = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (ti >= 0 && gguf_arr_len(g, ti) != (uint64_t)hp->n_vocab) {
        util_seterr(err, errlen, "tokenizer.ggml.tokens has %" PRIu64 " entries, but %s is %d",
                    gguf_arr_len(g, ti), vkey, hp->n_vocab);
        return -1;
    }
    return 0;
}

static void fmt_ne(char *buf, size_t n, const int64_t *ne) {
    int nd = GGUF_MAX_DIMS;
    while (nd > 1 && ne[nd - 1] == 1)
        nd--;
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < nd && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, d ? ", " : "", ne[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Finds a tensor and checks its shape (ggml order: ne0 = row length). Marks it used. */
static const gguf_tensor *want(const gguf *g, bool *used, const char *name, int64_t ne0,
                               int64_t ne1, int64_t ne2, bool f32_only, bool optional, int *rc,
                               char *err, size_t errlen) {
    if (*rc) return NULL;
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t) {
        if (!optional) {
            util_seterr(err, errlen, "missing tensor '%s'", name);
            *rc = -1;
        }
        return NULL;
    }
    int64_t exp[GGUF_MAX_DIMS] = {ne0, ne1, ne2, 1};
    if (memcmp(exp, t->ne, sizeof exp)) {
        char a[96], b[96];
        fmt_ne(a, sizeof a, t->ne);
        fmt_ne(b, sizeof b, exp);
        util_seterr(err, errlen,
                    "tensor '%s': shape %s does not match the hyper-parameters: expected %s "
                    "(dims fastest first)",
                    name, a, b);
        *rc = -1;
        return NULL;
    }
    if (f32_only && t->type != QT_F32) {
        const qtype_traits *tr = quant_traits(t->type);
        util_seterr(err, errlen, "tensor '%s': type %s, expected f32", name, tr ? tr->name : "?");
        *rc = -1;
        return NULL;
    }
    used[t - gguf_tensor_at(g, 0)] = true;
    return t;
}

int lfm2_model_from_gguf(lfm2_model **out, gguf *g, char *err, size_t errlen) {
    *out = NULL;
    bool bad = false;
    const char *arch = gguf_get_str(g, "general.architecture", NULL, &bad);
    if (bad) {
        util_seterr(err, errlen, "key 'general.architecture' has type %s, expected a string",
                    type_name(g, "general.architecture"));
        return -1;
    }
    if (!arch) {
        util_seterr(err, errlen, "missing key 'general.architecture'");
        return -1;
    }
    if (strcmp(arch, "lfm2") && strcmp(arch, "lfm2moe")) {
        char shown[65]; /* the name as text: control and non-ASCII bytes shown as '?' */
        size_t n = 0;
        for (; arch[n] && n < sizeof shown - 1; n++)
            shown[n] = arch[n] >= 0x20 && arch[n] < 0x7f ? arch[n] : '?';
        shown[n] = 0;
        util_seterr(err, errlen,
                    "unsupported architecture '%s' (general.architecture; supported: lfm2, "
                    "lfm2moe)",
                    shown);
        return -1;
    }
    lfm2_model *m = calloc(1, sizeof *m);
    int64_t nt = gguf_n_tensors(g);
    bool *used = calloc((size_t)(nt ? nt : 1), sizeof *used);
    if (!m || !used) {
        util_seterr(err, errlen, "out of memory");
        goto fail;
    }
    lfm2_hparams *hp = &m->hp;
    if (read_hparams(g, arch, hp, err, errlen)) goto fail;
    int rc = 0;
    int64_t E = hp->n_embd, F = hp->n_ff, V = hp->n_vocab, HD = hp->head_dim;
    int64_t X = hp->n_expert, FX = hp->n_ff_exp;
    if (gguf_find_tensor(g, "dense_2.weight")) {
        util_seterr(err, errlen,
                    "tensor 'dense_2.weight' is present: embedding/retrieval checkpoints (an "
                    "output projection instead of logits) are not supported");
        goto fail;
    }
    m->tok_embd = want(g, used, "token_embd.weight", E, V, 1, false, false, &rc, err, errlen);
    m->out_norm = want(g, used, "token_embd_norm.weight", E, 1, 1, true, false, &rc, err, errlen);
    m->output = want(g, used, "output.weight", E, V, 1, false, true, &rc, err, errlen);
    if (!m->output) m->output = m->tok_embd;
    char name[96];
#define WX(field, suffix, kind, ne0, ne1, ne2, f32)                                                \
    do {                                                                                           \
        snprintf(name, sizeof name, "blk.%d.%s.%s", l, suffix, kind);                              \
        L->field = want(g, used, name, ne0, ne1, ne2, f32, false, &rc, err, errlen);               \
    } while (0)
#define W(field, suffix, ne0, ne1, f32) WX(field, suffix, "weight", ne0, ne1, 1, f32)
    for (int l = 0; l < hp->n_layer && !rc; l++) {
        lfm2_layer *L = &m->layers[l];
        int64_t kv = hp->n_head_kv[l];
        W(attn_norm, "attn_norm", E, 1, true);
        W(ffn_norm, "ffn_norm", E, 1, true);
        if (lfm2_layer_is_moe(hp, l)) {
            W(ffn_gate_inp, "ffn_gate_inp", E, X, false);
            WX(exp_probs_b, "exp_probs_b", "bias", X, 1, 1, true);
            WX(ffn_gate_exps, "ffn_gate_exps", "weight", E, FX, X, false);
            WX(ffn_up_exps, "ffn_up_exps", "weight", E, FX, X, false);
            WX(ffn_down_exps, "ffn_down_exps", "weight", FX, E, X, false);
        } else {
            W(ffn_gate, "ffn_gate", E, F, false);
            W(ffn_up, "ffn_up", E, F, false);
            W(ffn_down, "ffn_down", F, E, false);
        }
        if (kv == 0) {
            W(in_proj, "shortconv.in_proj", E, 3 * E, false);
            W(conv, "shortconv.conv", hp->l_cache, E, false);
            W(out_proj, "shortconv.out_proj", E, E, false);
        } else {
            W(wq, "attn_q", E, hp->n_head * HD, false);
            W(wk, "attn_k", E, kv * HD, false);
            W(wv, "attn_v", E, kv * HD, false);
            W(q_norm, "attn_q_norm", HD, 1, true);
            W(k_norm, "attn_k_norm", HD, 1, true);
            W(wo, "attn_output", hp->n_head * HD, E, false);
        }
    }
#undef W
#undef WX
    if (rc) goto fail;
    for (int64_t i = 0; i < nt; i++)
        if (!used[i]) {
            const char *n = gguf_tensor_at(g, i)->name;
            int l = -1;
            if (sscanf(n, "blk.%d.", &l) == 1 && l >= 0 && l < hp->n_layer)
                util_seterr(err, errlen,
                            "unexpected tensor '%s': layer %d is a %s layer (head_count_kv[%d] = "
                            "%d) with a%s FFN",
                            n, l, hp->n_head_kv[l] ? "attention" : "conv", l, hp->n_head_kv[l],
                            lfm2_layer_is_moe(hp, l) ? "n expert" : " dense");
            else
                util_seterr(err, errlen,
                            "unexpected tensor '%s' (not part of an %s model with %d layers)", n,
                            arch, hp->n_layer);
            goto fail;
        }
    free(used);
    m->g = g;
    *out = m;
    return 0;
fail:
    free(used);
    free(m);
    return -1;
}

int lfm2_model_open(lfm2_model **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    gguf *g;
    if (gguf_open(&g, path, err, errlen)) return -1;
    if (lfm2_model_from_gguf(out, g, err, errlen)) {
        gguf_close(g);
        return -1;
    }
    return 0;
}

void lfm2_model_close(lfm2_model *m) {
    if (!m) return;
    gguf_close(m->g);
    free(m);
}
