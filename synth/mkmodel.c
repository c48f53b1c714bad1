/* mkmodel.c: synthetic LFM2 models: preset shapes, llama.cpp's type mix, seeded weights, vocab. */
#include "synth/mkmodel.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "synth/bpe_train.h"
#include "engine/gguf.h"
#include "engine/rng.h"
#include "engine/util.h"
#include "quant/quant.h"

/* ---- presets ---- */

static void set_attn(mkmodel_shape *s, const int *idx, int n) {
    memset(s->attn, 0, sizeof s->attn);
    for (int i = 0; i < n; i++)
        s->attn[idx[i]] = true;
}

int mkmodel_preset(const char *name, mkmodel_shape *s, char *err, size_t errlen) {
    static const int small[] = {2, 5, 8, 10, 12, 14};
    /* LFM2-2.6B's layer_types (its config.json): 8 attention layers among 30 */
    static const int big[] = {2, 5, 9, 13, 17, 21, 24, 27};
    static const int mini[] = {2, 4};
    static const int tiny[] = {1, 3};
    memset(s, 0, sizeof *s);
    s->n_ctx = 32768;
    s->n_vocab = 65536;
    if (!strcmp(name, "tiny")) {
        *s = (mkmodel_shape){.n_embd = 128,
                             .n_layer = 4,
                             .n_head = 4,
                             .n_head_kv = 2,
                             .n_ff = 256,
                             .n_vocab = 1024,
                             .n_ctx = 32768};
        set_attn(s, tiny, 2);
    } else if (!strcmp(name, "mini")) {
        *s = (mkmodel_shape){.n_embd = 256,
                             .n_layer = 6,
                             .n_head = 4,
                             .n_head_kv = 2,
                             .n_ff = 512,
                             .n_vocab = 4096,
                             .n_ctx = 32768};
        set_attn(s, mini, 2);
    } else if (!strcmp(name, "350m")) {
        s->n_embd = 1024, s->n_layer = 16, s->n_head = 16, s->n_head_kv = 8, s->n_ff = 4608;
        set_attn(s, small, 6);
    } else if (!strcmp(name, "700m")) {
        s->n_embd = 1536, s->n_layer = 16, s->n_head = 24, s->n_head_kv = 8, s->n_ff = 6912;
        set_attn(s, small, 6);
    } else if (!strcmp(name, "1.2b")) {
        s->n_embd = 2048, s->n_layer = 16, s->n_head = 32, s->n_head_kv = 8, s->n_ff = 8192;
        set_attn(s, small, 6);
    } else if (!strcmp(name, "2.6b")) {
        s->n_embd = 2048, s->n_layer = 30, s->n_head = 32, s->n_head_kv = 8, s->n_ff = 10752;
        set_attn(s, big, 8);
    } else {
        util_seterr(err, errlen, "preset '%s' unknown (tiny, mini, 350m, 700m, 1.2b, 2.6b)", name);
        return -1;
    }
    return 0;
}

static const struct {
    const char *name;
    int ftype;
} ftypes[] = {
    {"f32", MK_F32},   {"f16", MK_F16},       {"bf16", MK_BF16},     {"q8_0", MK_Q8_0},
    {"q4_0", MK_Q4_0}, {"q4_k_m", MK_Q4_K_M}, {"q5_k_m", MK_Q5_K_M}, {"q6_k", MK_Q6_K},
};

int mkmodel_ftype_from_name(const char *name) {
    for (size_t i = 0; i < sizeof ftypes / sizeof ftypes[0]; i++)
        if (!strcasecmp(name, ftypes[i].name)) return ftypes[i].ftype;
    return -1;
}

const char *mkmodel_ftype_name(int ftype) {
    for (size_t i = 0; i < sizeof ftypes / sizeof ftypes[0]; i++)
        if (ftypes[i].ftype == ftype) return ftypes[i].name;
    return NULL;
}

int mkmodel_check_shape(const mkmodel_shape *s, char *err, size_t errlen) {
#define RANGE(field, lo, hi)                                                                       \
    if (s->field < (lo) || s->field > (hi)) {                                                      \
        util_seterr(err, errlen, #field " = %d out of range [%d, %d]", s->field, (int)(lo),        \
                    (int)(hi));                                                                    \
        return -1;                                                                                 \
    }
    RANGE(n_embd, 2, 1 << 16);
    RANGE(n_layer, 1, LFM2_MAX_LAYERS);
    RANGE(n_head, 1, s->n_embd);
    RANGE(n_ff, 1, 1 << 18);
    RANGE(n_vocab, BPE_N_BASE, BPE_MAX_VOCAB);
    RANGE(n_ctx, 1, 1 << 30);
    RANGE(n_swa, 0, 1 << 30);
#undef RANGE
    if (s->n_embd % s->n_head || (s->n_embd / s->n_head) % 2) {
        util_seterr(err, errlen, "n_embd = %d / n_head = %d must give a whole, even head_dim",
                    s->n_embd, s->n_head);
        return -1;
    }
    int n_attn = 0;
    for (int i = 0; i < s->n_layer; i++)
        n_attn += s->attn[i];
    for (int i = s->n_layer; i < LFM2_MAX_LAYERS; i++)
        if (s->attn[i]) {
            util_seterr(err, errlen, "attention layer %d >= n_layer = %d", i, s->n_layer);
            return -1;
        }
    if (n_attn && (s->n_head_kv < 1 || s->n_head % s->n_head_kv)) {
        util_seterr(err, errlen, "n_head_kv = %d must be >= 1 and divide n_head = %d", s->n_head_kv,
                    s->n_head);
        return -1;
    }
    return 0;
}

/* ---- tensor types: llama-quantize's mix (quant_mix_plan), as if quantizing an F32 file ---- */

static const char *mix_name(int ftype) {
    switch (ftype) {
    case MK_F32:
        return "F32";
    case MK_F16:
        return "F16";
    case MK_BF16:
        return "BF16";
    case MK_Q8_0:
        return "Q8_0";
    case MK_Q4_0:
        return "Q4_0";
    case MK_Q4_K_M:
        return "Q4_K_M";
    case MK_Q5_K_M:
        return "Q5_K_M";
    case MK_Q6_K:
        return "Q6_K";
    default:
        return NULL;
    }
}

/* ---- seeded weights ---- */

/* Approximately N(0, 1): the sum of four 16-bit uniforms, centred and scaled. Integer and
 * plain double arithmetic only, so every machine draws the same numbers. */
static float gauss(uint64_t *s) {
    uint64_t u = rng_splitmix64(s);
    double sum = (double)(u & 0xFFFF) + (double)((u >> 16) & 0xFFFF) +
                 (double)((u >> 32) & 0xFFFF) + (double)(u >> 48);
    return (float)((sum - 131070.0) / 37837.23);
}

enum wkind { W_EMBD, W_PROJ, W_NORM, W_OUT_NORM, W_CONV };

typedef struct tspec {
    char name[64];
    uint32_t type;
    int64_t ne[2];
    int n_dims;
    enum wkind kind;
    float scale; /* std (EMBD, PROJ, CONV) or gain (OUT_NORM) */
    uint64_t seed;
    char *err; /* where fill reports (the caller's buffer) */
    size_t errlen;
} tspec;

/* Logit spread through the tied head: std of the logits is about LOGIT_STD * sqrt(2 ln V)
 * (the expected gap between the best tokens grows with it). Embedding rows have norm ~1; the
 * final norm carries the gain, so the residual stream is dominated by the blocks' outputs and
 * the prompt's last token gets no bonus of its own (no degenerate repetition). */
#define LOGIT_STD 1.6
#define NORM_JITTER 0.1f
#define CONV_STD 0.5f

static int fill_tensor(void *ctx, void *dst, size_t nbytes) {
    tspec *t = ctx;
    const qtype_traits *tr = quant_traits(t->type);
    size_t row_bytes = quant_row_size(t->type, t->ne[0]);
    if (!tr || !row_bytes || row_bytes * (size_t)t->ne[1] != nbytes ||
        (t->type != QT_F32 && !tr->from_float)) {
        util_seterr(t->err, t->errlen, "tensor '%s': cannot write type %u (row of %lld)", t->name,
                    t->type, (long long)t->ne[0]);
        return -1;
    }
    int64_t rows_per = (1 << 20) / t->ne[0];
    if (rows_per < 1) rows_per = 1;
    if (rows_per > t->ne[1]) rows_per = t->ne[1];
    float *buf = malloc((size_t)(rows_per * t->ne[0]) * sizeof *buf);
    if (!buf) {
        util_seterr(t->err, t->errlen, "tensor '%s': out of memory", t->name);
        return -1;
    }
    uint64_t s = t->seed;
    for (int64_t r0 = 0; r0 < t->ne[1]; r0 += rows_per) {
        int64_t nr = t->ne[1] - r0 < rows_per ? t->ne[1] - r0 : rows_per;
        int64_t n = nr * t->ne[0];
        for (int64_t i = 0; i < n; i++) {
            float g = gauss(&s);
            switch (t->kind) {
            case W_NORM:
                buf[i] = 1.0f + NORM_JITTER * g;
                break;
            case W_OUT_NORM:
                buf[i] = t->scale * (1.0f + NORM_JITTER * g);
                break;
            default:
                buf[i] = t->scale * g;
                break;
            }
        }
        char *out = (char *)dst + (size_t)r0 * row_bytes;
        if (t->type == QT_F32)
            memcpy(out, buf, (size_t)n * sizeof *buf);
        else
            tr->from_float(buf, out, n);
    }
    free(buf);
    return 0;
}

static uint64_t name_seed(uint64_t seed, const char *name) {
    uint64_t s = seed ^ util_fnv1a(name, strlen(name));
    return rng_splitmix64(&s);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const tspec *)a)->name, ((const tspec *)b)->name);
}

/* Builds the tensor list in the order llama.cpp's tools write it. */
static tspec *make_specs(const mkmodel_opts *o, const mkmodel_shape *s, int *count) {
    int hd = s->n_embd / s->n_head;
    tspec *v = calloc((size_t)(2 + 11 * s->n_layer), sizeof *v);
    if (!v) return NULL;
    int n = 0;
#define ADD(layer, nm, kind_, sc, ne0, ne1, nd)                                                    \
    do {                                                                                           \
        tspec *t = &v[n++];                                                                        \
        if ((layer) >= 0)                                                                          \
            snprintf(t->name, sizeof t->name, "blk.%d.%s", (layer), (nm));                         \
        else                                                                                       \
            snprintf(t->name, sizeof t->name, "%s", (nm));                                         \
        t->ne[0] = (ne0);                                                                          \
        t->ne[1] = (ne1);                                                                          \
        t->n_dims = (nd);                                                                          \
        t->kind = (kind_);                                                                         \
        t->scale = (sc);                                                                           \
        t->seed = name_seed(o->seed, t->name);                                                     \
    } while (0)
    double logit_std = LOGIT_STD * sqrt(2.0 * log((double)s->n_vocab)) *
                       (o->logit_scale > 0 ? o->logit_scale : 1.0);
    ADD(-1, "token_embd.weight", W_EMBD, (float)(1.0 / sqrt((double)s->n_embd)), s->n_embd,
        s->n_vocab, 2);
    ADD(-1, "token_embd_norm.weight", W_OUT_NORM, (float)logit_std, s->n_embd, 1, 1);
    for (int l = 0; l < s->n_layer; l++) {
        int first = n;
        float pe = (float)(1.0 / sqrt((double)s->n_embd)),
              pf = (float)(1.0 / sqrt((double)s->n_ff));
        ADD(l, "attn_norm.weight", W_NORM, 0, s->n_embd, 1, 1);
        ADD(l, "ffn_norm.weight", W_NORM, 0, s->n_embd, 1, 1);
        ADD(l, "ffn_gate.weight", W_PROJ, pe, s->n_embd, s->n_ff, 2);
        ADD(l, "ffn_up.weight", W_PROJ, pe, s->n_embd, s->n_ff, 2);
        ADD(l, "ffn_down.weight", W_PROJ, pf, s->n_ff, s->n_embd, 2);
        if (s->attn[l]) {
            int q = s->n_head * hd, kv = s->n_head_kv * hd;
            ADD(l, "attn_q.weight", W_PROJ, pe, s->n_embd, q, 2);
            ADD(l, "attn_k.weight", W_PROJ, pe, s->n_embd, kv, 2);
            ADD(l, "attn_v.weight", W_PROJ, pe, s->n_embd, kv, 2);
            ADD(l, "attn_q_norm.weight", W_NORM, 0, hd, 1, 1);
            ADD(l, "attn_k_norm.weight", W_NORM, 0, hd, 1, 1);
            ADD(l, "attn_output.weight", W_PROJ, (float)(1.0 / sqrt((double)q)), q, s->n_embd, 2);
        } else {
            ADD(l, "shortconv.in_proj.weight", W_PROJ, pe, s->n_embd, 3 * s->n_embd, 2);
            ADD(l, "shortconv.conv.weight", W_CONV, CONV_STD, 3, s->n_embd, 2);
            ADD(l, "shortconv.out_proj.weight", W_PROJ, pe, s->n_embd, s->n_embd, 2);
        }
        qsort(v + first, (size_t)(n - first), sizeof *v, by_name);
    }
#undef ADD
    /* types: llama-quantize's choice for an F32 file of this layout (norms, conv kernel stay F32)
     */
    quant_tensor_desc *d = calloc((size_t)n, sizeof *d);
    uint32_t *types = calloc((size_t)n, sizeof *types);
    const quant_mix *mix = mix_name(o->ftype) ? quant_mix_find(mix_name(o->ftype)) : NULL;
    if (!d || !types || !mix) {
        free(d);
        free(types);
        free(v);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        d[i] = (quant_tensor_desc){v[i].name, (uint32_t)v[i].n_dims, v[i].ne[0], QT_F32};
    quant_mix_plan(mix, d, n, types);
    for (int i = 0; i < n; i++)
        v[i].type = types[i];
    free(d);
    free(types);
    *count = n;
    return v;
}

/* ---- metadata ---- */

static int set_vocab(gguf_writer *w, const bpe_vocab *v) {
    size_t *lens =
        malloc((size_t)(v->n_tokens > v->n_merges ? v->n_tokens : v->n_merges + 1) * sizeof *lens);
    if (!lens) return -1;
    int rc = 0;
    for (int i = 0; i < v->n_tokens; i++)
        lens[i] = strlen(v->tokens[i]);
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, lens,
                                  (uint64_t)v->n_tokens);
    rc |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, v->types,
                              (uint64_t)v->n_tokens);
    for (int i = 0; i < v->n_merges; i++)
        lens[i] = strlen(v->merges[i]);
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, lens,
                                  (uint64_t)v->n_merges);
    free(lens);
    return rc ? -1 : 0;
}

int mkmodel_write(const mkmodel_opts *o, const char *path, char *err, size_t errlen) {
    mkmodel_shape s = o->shape;
    gguf *src = NULL;
    bpe_vocab *v = NULL;
    gguf_writer *w = NULL;
    tspec *specs = NULL;
    char *corpus = NULL;
    int rc = -1, n_specs = 0;
    if (!mkmodel_ftype_name(o->ftype)) {
        util_seterr(err, errlen, "file type %d unknown", o->ftype);
        return -1;
    }
    if (o->vocab_from) {
        char e2[256];
        if (gguf_open(&src, o->vocab_from, e2, sizeof e2) < 0) {
            util_seterr(err, errlen, "--vocab-from %s: %s", o->vocab_from, e2);
            return -1;
        }
        int64_t ki = gguf_find_key(src, "tokenizer.ggml.tokens");
        if (ki < 0 || gguf_kv_type(src, ki) != GGUF_ARR || gguf_arr_type(src, ki) != GGUF_STR) {
            util_seterr(err, errlen, "--vocab-from %s: no tokenizer.ggml.tokens string array",
                        o->vocab_from);
            goto done;
        }
        s.n_vocab = (int)gguf_arr_len(src, ki);
    }
    if (mkmodel_check_shape(&s, err, errlen) < 0) goto done;
    if (!src) {
        size_t len = o->train_len;
        const char *text = o->train_text;
        if (!text) {
            corpus = mkmodel_corpus(&len);
            if (!corpus) {
                util_seterr(err, errlen, "out of memory");
                goto done;
            }
            text = corpus;
        }
        if (bpe_train(&v, text, len, s.n_vocab, err, errlen) < 0) goto done;
    }
    specs = make_specs(o, &s, &n_specs);
    if (!specs) {
        util_seterr(err, errlen, "out of memory (or no quantization mix for file type %d)",
                    o->ftype);
        goto done;
    }
    for (int i = 0; i < n_specs; i++) {
        const qtype_traits *tr = quant_traits(specs[i].type);
        if (!tr || (specs[i].type != QT_F32 && !tr->from_float) ||
            !quant_row_size(specs[i].type, specs[i].ne[0])) {
            util_seterr(err, errlen, "tensor '%s': type %u cannot be written (row of %lld)",
                        specs[i].name, specs[i].type, (long long)specs[i].ne[0]);
            goto done;
        }
    }
    w = gguf_writer_new();
    if (!w) {
        util_seterr(err, errlen, "out of memory");
        goto done;
    }
    char name[128];
    if (o->name)
        snprintf(name, sizeof name, "%s", o->name);
    else
        snprintf(name, sizeof name, "synthetic-lfm2-%s-seed%llu", o->preset ? o->preset : "custom",
                 (unsigned long long)o->seed);
    int32_t kv_arr[LFM2_MAX_LAYERS];
    for (int i = 0; i < s.n_layer; i++)
        kv_arr[i] = s.attn[i] ? s.n_head_kv : 0;
    int e = 0;
    e |= gguf_writer_set_str(w, "general.architecture", "lfm2");
    e |= gguf_writer_set_str(w, "general.name", name);
    e |= gguf_writer_set_int(w, "lfm2.context_length", GGUF_U32, s.n_ctx);
    e |= gguf_writer_set_int(w, "lfm2.embedding_length", GGUF_U32, s.n_embd);
    e |= gguf_writer_set_int(w, "lfm2.feed_forward_length", GGUF_U32, s.n_ff);
    e |= gguf_writer_set_int(w, "lfm2.block_count", GGUF_U32, s.n_layer);
    e |= gguf_writer_set_int(w, "lfm2.attention.head_count", GGUF_U32, s.n_head);
    e |= gguf_writer_set_arr(w, "lfm2.attention.head_count_kv", GGUF_I32, kv_arr,
                             (uint64_t)s.n_layer);
    e |= gguf_writer_set_float(w, "lfm2.rope.freq_base", GGUF_F32, 1e6);
    e |= gguf_writer_set_float(w, "lfm2.attention.layer_norm_rms_epsilon", GGUF_F32, 1e-5);
    e |= gguf_writer_set_int(w, "lfm2.vocab_size", GGUF_U32, s.n_vocab);
    e |= gguf_writer_set_int(w, "lfm2.shortconv.l_cache", GGUF_U32, 3);
    if (s.n_swa > 0)
        e |= gguf_writer_set_int(w, "lfm2.attention.sliding_window", GGUF_U32, s.n_swa);
    const char *tmpl = mkmodel_chat_template_named(o->chat_template);
    if (!tmpl) {
        util_seterr(err, errlen, "chat template '%s' unknown (lfm2, lfm2.5, lfm2.5-dated)",
                    o->chat_template);
        goto done;
    }
    if (src) {
        for (int64_t i = 0; i < gguf_n_kv(src); i++)
            if (!strncmp(gguf_kv_key(src, i), "tokenizer.", 10) &&
                !(o->chat_template && !strcmp(gguf_kv_key(src, i), "tokenizer.chat_template")))
                e |= gguf_writer_copy_kv(w, src, i);
        if (o->chat_template) e |= gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
    } else {
        e |= gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
        e |= gguf_writer_set_str(w, "tokenizer.ggml.pre", "lfm2");
        e |= set_vocab(w, v);
        e |= gguf_writer_set_int(w, "tokenizer.ggml.bos_token_id", GGUF_U32, 1);
        e |= gguf_writer_set_int(w, "tokenizer.ggml.eos_token_id", GGUF_U32, 7);
        e |= gguf_writer_set_int(w, "tokenizer.ggml.padding_token_id", GGUF_U32, 0);
        e |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
        e |= gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false);
        e |= gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
    }
    e |= gguf_writer_set_int(w, "general.quantization_version", GGUF_U32, 2);
    e |= gguf_writer_set_int(w, "general.file_type", GGUF_U32, o->ftype);
    for (int i = 0; i < n_specs && !e; i++) {
        specs[i].err = err;
        specs[i].errlen = errlen;
        e |= gguf_writer_add_tensor_fill(w, specs[i].name, specs[i].type, (uint32_t)specs[i].n_dims,
                                         specs[i].ne, fill_tensor, &specs[i]);
    }
    if (e) {
        util_seterr(err, errlen, "building the GGUF metadata failed (out of memory?)");
        goto done;
    }
    if (err && errlen) err[0] = 0;
    if (gguf_writer_write(w, path, err, errlen) < 0) {
        if (err && errlen && !err[0]) util_seterr(err, errlen, "writing %s failed", path);
        goto done;
    }
    rc = 0;
done:
    gguf_writer_free(w);
    free(specs);
    bpe_vocab_free(v);
    free(corpus);
    gguf_close(src);
    return rc;
}

const char *mkmodel_chat_template(void) {
    return "{{- bos_token -}}\n"
           "{%- set system_prompt = \"\" -%}\n"
           "{%- set ns = namespace(system_prompt=\"\") -%}\n"
           "{%- if messages[0][\"role\"] == \"system\" -%}\n"
           "\t{%- set ns.system_prompt = messages[0][\"content\"] -%}\n"
           "\t{%- set messages = messages[1:] -%}\n"
           "{%- endif -%}\n"
           "{%- if tools -%}\n"
           "\t{%- set ns.system_prompt = ns.system_prompt + (\"\\n\" if ns.system_prompt else "
           "\"\") + \"List of tools: <|tool_list_start|>[\" -%}\n"
           "\t{%- for tool in tools -%}\n"
           "\t\t{%- if tool is not string -%}\n"
           "\t\t\t{%- set tool = tool | tojson -%}\n"
           "\t\t{%- endif -%}\n"
           "\t\t{%- set ns.system_prompt = ns.system_prompt + tool -%}\n"
           "\t\t{%- if not loop.last -%}\n"
           "\t\t\t{%- set ns.system_prompt = ns.system_prompt + \", \" -%}\n"
           "\t\t{%- endif -%}\n"
           "\t{%- endfor -%}\n"
           "\t{%- set ns.system_prompt = ns.system_prompt + \"]<|tool_list_end|>\" -%}\n"
           "{%- endif -%}\n"
           "{%- if ns.system_prompt -%}\n"
           "\t{{- \"<|im_start|>system\\n\" + ns.system_prompt + \"<|im_end|>\\n\" -}}\n"
           "{%- endif -%}\n"
           "{%- for message in messages -%}\n"
           "\t{{- \"<|im_start|>\" + message[\"role\"] + \"\\n\" -}}\n"
           "\t{%- set content = message[\"content\"] -%}\n"
           "\t{%- if content is not string -%}\n"
           "\t\t{%- set content = content | tojson -%}\n"
           "\t{%- endif -%}\n"
           "\t{%- if message[\"role\"] == \"tool\" -%}\n"
           "\t\t{%- set content = \"<|tool_response_start|>\" + content + "
           "\"<|tool_response_end|>\" -%}\n"
           "\t{%- endif -%}\n"
           "\t{{- content + \"<|im_end|>\\n\" -}}\n"
           "{%- endfor -%}\n"
           "{%- if add_generation_prompt -%}\n"
           "\t{{- \"<|im_start|>assistant\\n\" -}}\n"
           "{%- endif -%}";
}

/* The plain LFM2.5 template (LFM2.5-1.2B-Instruct's): tools as "List of tools: [...]", tool
 * results unwrapped, earlier assistant turns cut after their last </think>. */
static const char *lfm25_template(void) {
    return "{{- bos_token -}}\n"
           "{%- set keep_past_thinking = keep_past_thinking | default(false) -%}\n"
           "{%- set ns = namespace(system_prompt=\"\") -%}\n"
           "{%- if messages[0][\"role\"] == \"system\" -%}\n"
           "    {%- set ns.system_prompt = messages[0][\"content\"] -%}\n"
           "    {%- set messages = messages[1:] -%}\n"
           "{%- endif -%}\n"
           "{%- if tools -%}\n"
           "    {%- set ns.system_prompt = ns.system_prompt + (\"\\n\" if ns.system_prompt else "
           "\"\") + \"List of tools: [\" -%}\n"
           "    {%- for tool in tools -%}\n"
           "        {%- if tool is not string -%}\n"
           "            {%- set tool = tool | tojson -%}\n"
           "        {%- endif -%}\n"
           "        {%- set ns.system_prompt = ns.system_prompt + tool -%}\n"
           "        {%- if not loop.last -%}\n"
           "            {%- set ns.system_prompt = ns.system_prompt + \", \" -%}\n"
           "        {%- endif -%}\n"
           "    {%- endfor -%}\n"
           "    {%- set ns.system_prompt = ns.system_prompt + \"]\" -%}\n"
           "{%- endif -%}\n"
           "{%- if ns.system_prompt -%}\n"
           "    {{- \"<|im_start|>system\\n\" + ns.system_prompt + \"<|im_end|>\\n\" -}}\n"
           "{%- endif -%}\n"
           "{%- set ns.last_assistant_index = -1 -%}\n"
           "{%- for message in messages -%}\n"
           "    {%- if message[\"role\"] == \"assistant\" -%}\n"
           "        {%- set ns.last_assistant_index = loop.index0 -%}\n"
           "    {%- endif -%}\n"
           "{%- endfor -%}\n"
           "{%- for message in messages -%}\n"
           "    {{- \"<|im_start|>\" + message[\"role\"] + \"\\n\" -}}\n"
           "    {%- set content = message[\"content\"] -%}\n"
           "    {%- if content is not string -%}\n"
           "        {%- set content = content | tojson -%}\n"
           "    {%- endif -%}\n"
           "    {%- if message[\"role\"] == \"assistant\" and not keep_past_thinking and "
           "loop.index0 != ns.last_assistant_index -%}\n"
           "        {%- if \"</think>\" in content -%}\n"
           "            {%- set content = content.split(\"</think>\")[-1] | trim -%}\n"
           "        {%- endif -%}\n"
           "    {%- endif -%}\n"
           "    {{- content + \"<|im_end|>\\n\" -}}\n"
           "{%- endfor -%}\n"
           "{%- if add_generation_prompt -%}\n"
           "    {{- \"<|im_start|>assistant\\n\" -}}\n"
           "{%- endif -%}";
}

/* The LFM2.5 template with render_tool_calls (LFM2.5-VL's and later ones): "Today's date" and the
 * whole tool list as tojson, message.thinking, tool calls rendered back. The published file wraps
 * the assistant turn in {% generation %} ... {% endgeneration %} (a training-time marker that
 * renders nothing); it is left out here so any Jinja engine renders this text. */
static const char *lfm25_dated_template(void) {
    return "{{- bos_token -}}\n"
           "{%- set keep_past_thinking = keep_past_thinking | default(false) -%}\n"
           "\n"
           "{%- macro format_arg_value(arg_value) -%}\n"
           "    {%- if arg_value is string -%}\n"
           "        {{- '\"' + arg_value + '\"' -}}\n"
           "    {%- elif arg_value is mapping -%}\n"
           "        {{- arg_value | tojson -}}\n"
           "    {%- else -%}\n"
           "        {{- arg_value | string -}}\n"
           "    {%- endif -%}\n"
           "{%- endmacro -%}\n"
           "\n"
           "{%- macro parse_content(content) -%}\n"
           "    {%- if content is string -%}\n"
           "        {{- content -}}\n"
           "    {%- else -%}\n"
           "        {%- set _ns = namespace(result=\"\") -%}\n"
           "        {%- for item in content -%}\n"
           "            {%- if item.type == \"image\" -%}\n"
           "                {%- set _ns.result = _ns.result + \"<image>\" -%}\n"
           "            {%- elif item.type == \"text\" -%}\n"
           "                {%- set _ns.result = _ns.result + item.text -%}\n"
           "            {%- else -%}\n"
           "                {%- set _ns.result = _ns.result + item | tojson -%}\n"
           "            {%- endif -%}\n"
           "        {%- endfor -%}\n"
           "        {{- _ns.result -}}\n"
           "    {%- endif -%}\n"
           "{%- endmacro -%}\n"
           "\n"
           "{%- macro render_tool_calls(tool_calls) -%}\n"
           "    {%- set tool_calls_ns = namespace(tool_calls=[]) -%}\n"
           "    {%- for tool_call in tool_calls -%}\n"
           "        {%- set func_name = tool_call.function.name -%}\n"
           "        {%- set func_args = tool_call.function.arguments -%}\n"
           "        {%- set args_ns = namespace(arg_strings=[]) -%}\n"
           "        {%- for arg_name, arg_value in func_args.items() -%}\n"
           "            {%- set args_ns.arg_strings = args_ns.arg_strings + [arg_name + \"=\" + "
           "format_arg_value(arg_value)] -%}\n"
           "        {%- endfor -%}\n"
           "        {%- set tool_calls_ns.tool_calls = tool_calls_ns.tool_calls + [func_name + "
           "\"(\" + (args_ns.arg_strings | join(\", \")) + \")\"] -%}\n"
           "    {%- endfor -%}\n"
           "    {{- \"<|tool_call_start|>[\" + (tool_calls_ns.tool_calls | join(\", \")) + "
           "\"]<|tool_call_end|>\" -}}\n"
           "{%- endmacro -%}\n"
           "\n"
           "{%- set ns = namespace(system_prompt=\"\", last_assistant_index=-1) -%}\n"
           "{%- if messages[0].role == \"system\" -%}\n"
           "    {%- if messages[0].content is defined -%}\n"
           "        {%- set ns.system_prompt = parse_content(messages[0].content) -%}\n"
           "    {%- endif -%}\n"
           "    {%- set messages = messages[1:] -%}\n"
           "{%- endif -%}\n"
           "{%- if tools -%}\n"
           "    {%- set ns.system_prompt = ns.system_prompt + (\"\\n\\n\" if ns.system_prompt else "
           "\"\") + \"Today's date: \" + strftime_now(\"%Y-%m-%d\") + \"\\n\\nList of tools: \" + "
           "(tools | tojson) -%}\n"
           "{%- endif -%}\n"
           "{%- if ns.system_prompt -%}\n"
           "    {{- \"<|im_start|>system\\n\" + ns.system_prompt + \"<|im_end|>\\n\" -}}\n"
           "{%- endif -%}\n"
           "{%- for message in messages -%}\n"
           "    {%- if message.role == \"assistant\" -%}\n"
           "        {%- set ns.last_assistant_index = loop.index0 -%}\n"
           "    {%- endif -%}\n"
           "{%- endfor -%}\n"
           "{%- for message in messages -%}\n"
           "    {{- \"<|im_start|>\" + message.role + \"\\n\" -}}\n"
           "    {%- if message.role == \"assistant\" -%}\n"
           "        {%- if message.thinking is defined and (keep_past_thinking or loop.index0 == "
           "ns.last_assistant_index) -%}\n"
           "            {{- \"<think>\" + message.thinking + \"</think>\" -}}\n"
           "        {%- endif -%}\n"
           "        {%- if message.tool_calls is defined -%}\n"
           "            {{- render_tool_calls(message.tool_calls) -}}\n"
           "        {%- endif -%}\n"
           "        {%- if message.content is defined -%}\n"
           "            {%- set content = parse_content(message.content) -%}\n"
           "            {%- if not keep_past_thinking and loop.index0 != ns.last_assistant_index "
           "-%}\n"
           "                {%- if \"</think>\" in content -%}\n"
           "                    {%- set content = content.split(\"</think>\")[-1] | trim -%}\n"
           "                {%- endif -%}\n"
           "            {%- endif -%}\n"
           "            {{- content + (\"\" if (continue_final_message and loop.last) else "
           "\"<|im_end|>\\n\") -}}\n"
           "        {%- endif -%}\n"
           "    {%- else %}\n"
           "        {%- if message.content is defined -%}\n"
           "            {{- parse_content(message.content) + \"<|im_end|>\\n\" -}}\n"
           "        {%- endif -%}\n"
           "    {%- endif %}\n"
           "{%- endfor -%}\n"
           "{%- if add_generation_prompt -%}\n"
           "    {{- \"<|im_start|>assistant\\n\" -}}\n"
           "{%- endif -%}";
}

const char *mkmodel_chat_template_named(const char *family) {
    if (!family || !strcmp(family, "lfm2")) return mkmodel_chat_template();
    if (!strcmp(family, "lfm2.5")) return lfm25_template();
    if (!strcmp(family, "lfm2.5-dated")) return lfm25_dated_template();
    return NULL;
}
