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
    /* mixture of experts (general.architecture "lfm2moe"); all 0 for lfm2 */
    bool moe;          /* the file is lfm2moe: layers >= n_dense_lead have an expert FFN */
    int n_expert;      /* expert_count: experts per MoE layer */
    int n_expert_used; /* expert_used_count: k, experts chosen per token */
    int n_ff_exp;      /* expert_feed_forward_length: each expert's SwiGLU width */
    int n_dense_lead;  /* leading_dense_block_count: layers [0, n) have the dense FFN */
    int gating_func;   /* expert_gating_func: LFM2_GATING_SIGMOID is the one supported */
} lfm2_hparams;

#define LFM2_MAX_EXPERTS 256  /* expert_count accepted */
#define LFM2_GATING_SIGMOID 2 /* llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID */

/* Whether layer l has the expert FFN (else the dense SwiGLU). */
static inline bool lfm2_layer_is_moe(const lfm2_hparams *hp, int l) {
    return hp->moe && l >= hp->n_dense_lead;
}

typedef struct lfm2_layer {
    const gguf_tensor *attn_norm, *ffn_norm; /* [n_embd] f32 */
    /* dense FFN layers, else NULL */
    const gguf_tensor *ffn_gate, *ffn_up;    /* [n_ff, n_embd] */
    const gguf_tensor *ffn_down;             /* [n_embd, n_ff] */
    /* MoE layers (lfm2_layer_is_moe), else NULL; row-major shapes, expert slowest */
    const gguf_tensor *ffn_gate_inp;                /* router [n_expert, n_embd] */
    const gguf_tensor *exp_probs_b;                 /* selection bias [n_expert], f32 */
    const gguf_tensor *ffn_gate_exps, *ffn_up_exps; /* [n_expert][n_ff_exp, n_embd] */
    const gguf_tensor *ffn_down_exps;               /* [n_expert][n_embd, n_ff_exp] */
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

/* Opens path, checks it is an lfm2 or lfm2moe model whose keys and tensor shapes agree, and
 * resolves every tensor. Rejects other architectures, and what the engine does not compute
 * (another expert gating function, embedding_length_out), with a message. Negative code + err
 * on error. */
int lfm2_model_open(lfm2_model **out, const char *path, char *err, size_t errlen);
/* Same on an already opened gguf; takes ownership of g on success only. */
int lfm2_model_from_gguf(lfm2_model **out, gguf *g, char *err, size_t errlen);
void lfm2_model_close(lfm2_model *m); /* NULL is a no-op */

#endif
