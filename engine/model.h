/* model.h: an LFM2 model file: hyper-parameters and weight tensors, checked together. */
#ifndef LFM2_MODEL_H
#define LFM2_MODEL_H
#include "engine/gguf.h"

#define LFM2_MAX_LAYERS 256
#define LFM2_MAX_L_CACHE 64 /* conv length accepted */

typedef struct lfm2_hparams {
    int n_embd;                     /* hidden size */
    int n_layer;                    /* block count */
    int n_ff;                       /* SwiGLU width */
    int n_head;                     /* query heads */
    int n_head_kv[LFM2_MAX_LAYERS]; /* per layer; 0 = short-conv layer */
    int head_dim;                   /* n_embd / n_head */
    int n_vocab;                    /* rows of token_embd */
    int n_ctx_train;                /* lfm2.context_length */
    int l_cache;                    /* conv kernel length L */
    int n_swa;                      /* sliding window, 0 = full attention */
    float eps;                      /* RMSNorm epsilon */
    float rope_base;                /* RoPE freq base */
    int n_attn_layers;              /* layers with n_head_kv > 0 */
} lfm2_hparams;

typedef struct lfm2_layer {
    const gguf_tensor *attn_norm, *ffn_norm; /* [n_embd] f32 */
    const gguf_tensor *ffn_gate, *ffn_up;    /* [n_ff, n_embd] */
    const gguf_tensor *ffn_down;             /* [n_embd, n_ff] */
    /* conv layers (n_head_kv == 0), else NULL */
    const gguf_tensor *in_proj;  /* [3*n_embd, n_embd] -> B, C, X */
    const gguf_tensor *conv;     /* [n_embd, L] */
    const gguf_tensor *out_proj; /* [n_embd, n_embd] */
    /* attention layers, else NULL */
    const gguf_tensor *wq, *wk, *wv;    /* [n_head*hd | kv*hd, n_embd] */
    const gguf_tensor *q_norm, *k_norm; /* [hd] */
    const gguf_tensor *wo;              /* [n_embd, n_head*hd] */
} lfm2_layer;

typedef struct lfm2_model {
    gguf *g; /* owns the mapping every tensor points into */
    lfm2_hparams hp;
    const gguf_tensor *tok_embd; /* [n_vocab, n_embd] */
    const gguf_tensor *out_norm; /* token_embd_norm: the final norm, [n_embd] */
    const gguf_tensor *output;   /* output.weight, or tok_embd when tied */
    lfm2_layer layers[LFM2_MAX_LAYERS];
} lfm2_model;

/* Opens path, checks it is an lfm2 model whose keys and tensor shapes agree, and resolves every
 * tensor. Rejects lfm2moe and other architectures with a message. Negative code + err on error. */
int lfm2_model_open(lfm2_model **out, const char *path, char *err, size_t errlen);
/* Same on an already opened gguf; takes ownership of g on success only. */
int lfm2_model_from_gguf(lfm2_model **out, gguf *g, char *err, size_t errlen);
void lfm2_model_close(lfm2_model *m); /* NULL is a no-op */

#endif
