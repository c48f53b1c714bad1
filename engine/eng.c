/* eng.c: the LFM2 forward pass over a batch of sequences, their hybrid state, and its lifecycle. */
#include "quant/hugemem.h"
#include "engine/util.h"
#include "engine/eng.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/attn.h"
#include "engine/gemm.h"
#include "engine/kern.h"
#include "engine/pool.h"
#include "quant/quant.h"
#include "quant/repack.h"

#define PANEL_FLOATS (1 << 18) /* dequantized weight panel: 1 MiB of f32 */
#define LOGIT_CHUNK 16         /* rows of logits computed per pass over the output head */
#define HALF_MAX_TOK 16        /* f16/bf16 weights: steps up to this size use kern's GEMV, else sgemm */
#define LAYER_MATS 9           /* matrices per layer in the list of mat_at */

/* How a weight matrix is multiplied: chosen once at load from its type (weights_resolve), read
 * by matmul, matmul_n and ffn_swiglu. */
enum w_path {
    W_REPACKED, /* int8 activations x the repacked matrix (quant/repack.h, engine/gemm.h) */
    W_HALF,     /* f16/bf16 from the file: kern's GEMV up to HALF_MAX_TOK tokens, else as W_PANEL */
    W_F32,      /* f32 in the mapping: OpenBLAS reads it in place */
    W_PANEL,    /* any other type: dequantized to f32 panel by panel, then OpenBLAS */
};

/* One weight matrix W, [n_out][n_in] row-major: y = x W^T. */
typedef struct eng_weight {
    const gguf_tensor *t; /* the tensor in the mapping; NULL: the layer has no such matrix */
    rp_matrix *rp;        /* owned: its repacked copy when path is W_REPACKED, else NULL */
    enum w_path path;
    int n_in, n_out; /* t->ne[0], t->ne[1] */
} eng_weight;

/* The matrices of one layer: conv layers have in_proj and out_proj, attention layers wq..wo. */
typedef struct eng_layer {
    eng_weight ffn_gate, ffn_up; /* [n_ff][n_embd] */
    eng_weight ffn_down;         /* [n_embd][n_ff] */
    eng_weight in_proj;          /* [3*n_embd][n_embd] -> B, C, X */
    eng_weight out_proj;         /* [n_embd][n_embd] */
    eng_weight wq, wk, wv;       /* [n_head*hd | kv*hd][n_embd] */
    eng_weight wo;               /* [n_embd][n_head*hd] */
    struct eng_moe *moe;         /* MoE layers: router and experts, else NULL */
} eng_layer;

/* One MoE layer: the router in f32 and every expert's three matrices. Each expert matrix is a
 * 2-D slice of the file's 3-D tensor with its own gguf_tensor, so it takes the same weight paths
 * (repacked, f16/bf16, f32, panels) as a dense matrix and a step reads only the chosen ones. */
typedef struct eng_moe {
    float *router;         /* [n_expert][n_embd]: ffn_gate_inp */
    float *bias;           /* [n_expert]: exp_probs_b, added for the choice only */
    gguf_tensor *slices;   /* [3][n_expert]: gate, up, down slices of the mapping */
    eng_weight *gate, *up; /* [n_expert], each [n_ff_exp][n_embd] */
    eng_weight *down;      /* [n_expert], each [n_embd][n_ff_exp] */
    bool repacked;         /* every expert matrix W_REPACKED (n_ff_exp a multiple of 32): the
                              layer runs in two parallel regions (moe_ffn) */
} eng_moe;

/* one batch item's share of a layer's attention (attn_layer) */
struct attn_part {
    const uint16_t *K, *V; /* [n_kv_head][n_ctx][head_dim] halves (f16) of this layer: each
                              head's rows contiguous, so attention streams them instead of
                              striding across positions */
    float *scratch;        /* [threads][n_scratch]: the sequence's */
    size_t n_scratch;
    int pos, r0, n, u0; /* first position, first row, tokens, first unit */
    int n_ctx;          /* rows per head */
};

struct eng {
    lfm2_model *m;
    tok *t;
    eng_params p;
    int n_vocab;
    int n_live;                       /* live sequences */
    int n_conv;                       /* conv layers */
    int conv_idx[LFM2_MAX_LAYERS];    /* layer -> conv index, -1 for attention layers */
    int kv_cum[LFM2_MAX_LAYERS];      /* attention layer -> halves per position before it (K+V) */
    int kv_per_pos;                   /* halves of K+V per position over all attention layers */
    int ring;                         /* conv ring length R = n_restore + L - 1 */
    /* small f32 copies of the 1-D weights (norms, conv kernels), converted at load */
    float *attn_norm[LFM2_MAX_LAYERS], *ffn_norm[LFM2_MAX_LAYERS]; /* [n_embd] */
    float *conv_w[LFM2_MAX_LAYERS];                                 /* [L][n_embd] */
    float *q_norm[LFM2_MAX_LAYERS], *k_norm[LFM2_MAX_LAYERS];       /* [hd] */
    float *out_norm;                                                /* [n_embd] */
    float *small;                     /* one allocation behind the pointers above */
    /* scratch, sized for max_batch_tokens = T */
    float *x;      /* [T, n_embd] residual stream */
    float *xn;     /* [T, n_embd] normed input of an operator */
    float *a;      /* [T, a_w]: B|C|X, or q,k,v, or ffn gate */
    float *b;      /* [T, b_w]: conv y, attention heads, ffn up */
    float *o;      /* [T, n_embd]: operator output; rows wanting logits at the end */
    float *panel;  /* [n_threads][PANEL_FLOATS] dequantized weight rows, one panel per thread */
    float *lchunk; /* [LOGIT_CHUNK, n_vocab] */
    int *lrow_item, *lrow_off; /* [T] which item / which logits row a gathered row goes to */
    struct attn_part *attn_parts; /* [T] per batch item: its attention job (attn_layer) */
    /* MoE scratch (NULL for dense models), k = n_expert_used, X = n_expert */
    float *moe_p;              /* [T][X] router probabilities (sigmoid) */
    int *moe_sel;              /* [T][k] chosen experts, best first */
    float *moe_w;              /* [T][k] their weights */
    int *moe_at;               /* [T][k] row of moe_y holding that choice's output */
    int *moe_tok;              /* [P] the token of each row, grouped by expert */
    int *moe_off;              /* [X][2] each expert's first row and rows: groups of 2 or more
                                  rows start at a multiple of 8 (kern_act_view), so P, the rows
                                  of a step, is at most T*k + 8*X */
    float *moe_x;              /* [T][n_embd] one expert's gathered input rows (unfused path) */
    float *moe_h;              /* [P][n_ff_exp] every chosen expert's SwiGLU activations */
    float *moe_h2;             /* [T][n_ff_exp] unfused scratch */
    float *moe_y;              /* [P][n_embd] every chosen expert's output, grouped by expert */
    kern_act moe_xq;           /* [P][n_embd] the groups' gathered quantized inputs */
    kern_act moe_hq;           /* [P][n_ff_exp] moe_h quantized (the downs' input) */
    kern_act *moe_views;       /* [2X]: per expert, views of its input and of its moe_hq rows */
    kern_set *moe_sets;        /* [2X]: the SwiGLU sets, then the downs */
    eng_router_fn router_hook; /* optional observer of the choices (tests) */
    void *router_ctx;
    /* every matrix with its kernel path, resolved at load (weights_resolve) */
    eng_layer layers[LFM2_MAX_LAYERS];
    eng_weight output; /* the output head [n_vocab][n_embd]: output.weight, or tok_embd when tied */
    pool *pool;        /* p.n_threads workers, used by the kernels */
    kern_act act;      /* [T] quantized activations of one input */
    /* state blocks of freed sequences, kept for the next sequence of the same n_ctx: their pages
     * are mapped already (a fresh block faults its huge pages in on first touch, mostly at
     * prefill). At most max_seqs, so memory stays within what live sequences held. */
    struct eng_spare {
        int n_ctx;
        void *mem;
        size_t mapped;
    } *spare;          /* [p.max_seqs] */
    int n_spare;
};

struct eng_seq {
    eng *e;
    int pos, n_ctx;
    int ring_lo;  /* lowest position whose bx column is still in the ring */
    bool in_step; /* duplicate detection inside eng_step */
    float *ring;  /* [n_conv][R][n_embd]: bx columns, slot = position % R */
    uint16_t *kv; /* f16, per attention layer: K [nkv][n_ctx][hd] then V [nkv][n_ctx][hd] */
    float *scores; /* [pool threads][attn_scratch_floats(n_ctx)]: attention scratch per thread */
    void *mem;     /* one block holds kv, ring and scores (quant/hugemem.h) */
    size_t mapped, bytes;
};

void eng_params_default(eng_params *p) {
    memset(p, 0, sizeof *p);
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    p->n_threads = nc > 0 ? (int)nc : 1;
    p->max_seqs = 64;
    p->n_ctx = 0; /* resolved against the model in eng_new */
    p->max_batch_tokens = 512;
    p->n_restore = 64;
}

const lfm2_model *eng_model(const eng *e) { return e->m; }
const lfm2_hparams *eng_hparams(const eng *e) { return &e->m->hp; }
const tok *eng_tok(const eng *e) { return e->t; }
int eng_n_vocab(const eng *e) { return e->n_vocab; }
int eng_eos(const eng *e) { return tok_eos(e->t); }
int eng_max_batch_tokens(const eng *e) { return e->p.max_batch_tokens; }
int eng_default_ctx(const eng *e) { return e->p.n_ctx; }

/* Converts a small tensor (norm, conv kernel) of n values to f32. */
static int to_f32(const gguf_tensor *t, float *dst, int64_t n, char *err, size_t errlen) {
    const qtype_traits *tr = quant_traits(t->type);
    int64_t have = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (!tr || have != n || n % tr->block_size)
        return util_fail(err, errlen, ENG_EMODEL, "tensor '%s': %lld values of type %u, expected %lld",
                    t->name, (long long)have, t->type, (long long)n);
    tr->to_float(t->data, dst, n);
    return 0;
}

/* A matrix of the model: its tensor and the engine's description of it. */
typedef struct mat_ref {
    const gguf_tensor *t; /* NULL: the layer's kind has no such matrix */
    eng_weight *w;
} mat_ref;

/* The model's matrices as one list: LAYER_MATS per layer, then the output head (n_mats in all).
 * Loading, repacking and eng_free walk it. */
static int n_mats(const eng *e) {
    return e->m ? e->m->hp.n_layer * LAYER_MATS + 1 : 0;
}

static mat_ref mat_at(eng *e, int i) {
    const int l = i / LAYER_MATS;
    if (l == e->m->hp.n_layer) return (mat_ref){e->m->output, &e->output};
    const lfm2_layer *m = &e->m->layers[l];
    eng_layer *ly = &e->layers[l];
    const mat_ref r[LAYER_MATS] = {
        {m->ffn_gate, &ly->ffn_gate},
        {m->ffn_up, &ly->ffn_up},
        {m->ffn_down, &ly->ffn_down},
        {m->in_proj, &ly->in_proj},
        {m->out_proj, &ly->out_proj},
        {m->wq, &ly->wq},
        {m->wk, &ly->wk},
        {m->wv, &ly->wv},
        {m->wo, &ly->wo},
    };
    return r[i % LAYER_MATS];
}

static double weight_bytes(const eng_weight *w) {
    if (!w->t) return 0;
    return w->rp ? (double)w->rp->tile_bytes * (double)w->rp->n_tiles : (double)w->t->nbytes;
}

double eng_decode_bytes(const eng *e) {
    const lfm2_hparams *hp = &e->m->hp;
    double sum = 0;
    for (int i = 0; i < n_mats(e); i++)
        sum += weight_bytes(mat_at((eng *)e, i).w);
    for (int l = 0; l < hp->n_layer; l++) {
        const eng_moe *mo = e->layers[l].moe;
        if (!mo) continue;
        double ex = 0;
        for (int x = 0; x < hp->n_expert; x++)
            ex += weight_bytes(&mo->gate[x]) + weight_bytes(&mo->up[x]) +
                  weight_bytes(&mo->down[x]);
        sum += ex / hp->n_expert * hp->n_expert_used +
               (double)hp->n_expert * hp->n_embd * sizeof(float);
    }
    return sum;
}

/* Fills w for tensor t: quantized sources are repacked (f16/bf16/f32 keep the exact sgemm path,
 * see quant/repack.h) and give their source pages back, so peak RSS stays near the repacked
 * size; the path follows from the type and whether the repacking took. */
static int weight_resolve(eng_weight *w, const gguf_tensor *t, char *err, size_t errlen) {
    *w = (eng_weight){t, NULL, W_PANEL, (int)t->ne[0], (int)t->ne[1]};
    if (t->type == QT_F32) {
        w->path = W_F32;
        return 0;
    }
    if (t->type == QT_F16 || t->type == QT_BF16) {
        w->path = W_HALF;
        return 0;
    }
    if (!rp_kind_for(t->type, NULL) || t->ne[0] % RP_GROUP) return 0;
    rp_matrix *m;
    char rerr[256];
    int rc = rp_new(&m, t->type, t->data, t->ne[1], t->ne[0], RP_ALLOW_LOSSY | RP_DROP_SOURCE, rerr,
                    sizeof rerr);
    if (rc == RP_ENOMEM) return util_fail(err, errlen, ENG_ENOMEM, "tensor '%s': %s", t->name, rerr);
    if (rc < 0) return 0; /* not repackable: stays on the sgemm path */
    w->rp = m;
    w->path = W_REPACKED;
    return 0;
}

static int weights_resolve(eng *e, char *err, size_t errlen) {
    int rc;
    for (int i = 0; i < n_mats(e); i++) {
        mat_ref r = mat_at(e, i);
        if (r.t && (rc = weight_resolve(r.w, r.t, err, errlen)) < 0) return rc;
    }
    /* repacking a tensor maps a few pages of its neighbours back in: give them back again */
    for (int i = 0; i < n_mats(e); i++) {
        const eng_weight *w = mat_at(e, i).w;
        if (w->rp) rp_drop_source(w->t->data, w->t->nbytes);
    }
    return 0;
}

/* The experts of every MoE layer: the router and selection bias in f32, each expert's gate, up
 * and down matrices as slices of the 3-D tensors, resolved like the dense matrices (repacked
 * quantized experts give their source pages back as they go). */
static int moe_load(eng *e, char *err, size_t errlen) {
    const lfm2_hparams *hp = &e->m->hp;
    const int E = hp->n_embd, X = hp->n_expert;
    int rc;
    for (int l = 0; l < hp->n_layer; l++) {
        if (!lfm2_layer_is_moe(hp, l)) continue;
        const lfm2_layer *ml = &e->m->layers[l];
        eng_moe *mo = calloc(1, sizeof *mo);
        if (!mo) return util_fail(err, errlen, ENG_ENOMEM, "out of memory");
        e->layers[l].moe = mo;
        mo->router = malloc(((size_t)X * E + X) * sizeof(float));
        mo->slices = calloc(3 * (size_t)X, sizeof *mo->slices);
        mo->gate = calloc(3 * (size_t)X, sizeof *mo->gate);
        if (!mo->router || !mo->slices || !mo->gate)
            return util_fail(err, errlen, ENG_ENOMEM, "out of memory");
        mo->bias = mo->router + (size_t)X * E;
        mo->up = mo->gate + X;
        mo->down = mo->gate + 2 * X;
        if ((rc = to_f32(ml->ffn_gate_inp, mo->router, (int64_t)X * E, err, errlen)) < 0 ||
            (rc = to_f32(ml->exp_probs_b, mo->bias, X, err, errlen)) < 0)
            return rc;
        const gguf_tensor *src[3] = {ml->ffn_gate_exps, ml->ffn_up_exps, ml->ffn_down_exps};
        eng_weight *dst[3] = {mo->gate, mo->up, mo->down};
        for (int m = 0; m < 3; m++) {
            const gguf_tensor *t = src[m];
            if (!quant_traits(t->type) || !quant_row_size(t->type, t->ne[0]))
                return util_fail(err, errlen, ENG_EMODEL,
                                 "tensor '%s': type %u unsupported for rows of %lld", t->name,
                                 t->type, (long long)t->ne[0]);
            const size_t nb = t->nbytes / (size_t)X; /* one expert's [ne1][ne0] block */
            for (int x = 0; x < X; x++) {
                gguf_tensor *sl = &mo->slices[(size_t)m * X + x];
                *sl = *t;
                sl->n_dims = 2;
                sl->ne[2] = 1;
                sl->nbytes = nb;
                sl->offset = t->offset + (uint64_t)x * nb;
                sl->data = (const char *)t->data + (size_t)x * nb;
                if ((rc = weight_resolve(&dst[m][x], sl, err, errlen)) < 0) return rc;
            }
        }
        mo->repacked = hp->n_ff_exp % 32 == 0;
        for (int i = 0; i < 3 * X; i++)
            mo->repacked = mo->repacked && mo->gate[i].path == W_REPACKED;
    }
    /* as weights_resolve: repacking maps a few neighbouring pages back in */
    for (int l = 0; l < hp->n_layer; l++) {
        const eng_moe *mo = e->layers[l].moe;
        for (int i = 0; mo && i < 3 * X; i++)
            if (mo->gate[i].rp) rp_drop_source(mo->gate[i].t->data, mo->gate[i].t->nbytes);
    }
    return 0;
}

static void moe_free(eng *e) {
    for (int l = 0; e->m && l < e->m->hp.n_layer; l++) {
        eng_moe *mo = e->layers[l].moe;
        if (!mo) continue;
        for (int i = 0; mo->gate && i < 3 * e->m->hp.n_expert; i++)
            rp_free(mo->gate[i].rp);
        free(mo->gate);
        free(mo->slices);
        free(mo->router);
        free(mo);
        e->layers[l].moe = NULL;
    }
    free(e->moe_p);
    free(e->moe_sel);
    free(e->moe_w);
    free(e->moe_at);
    free(e->moe_tok);
    free(e->moe_off);
    free(e->moe_x);
    free(e->moe_h);
    free(e->moe_h2);
    free(e->moe_y);
    kern_act_release(&e->moe_xq);
    kern_act_release(&e->moe_hq);
    free(e->moe_views);
    free(e->moe_sets);
}

void eng_set_router_hook(eng *e, eng_router_fn fn, void *ctx) {
    e->router_hook = fn;
    e->router_ctx = fn ? ctx : NULL;
}

int eng_new(eng **out, const char *model_path, const eng_params *pp, char *err, size_t errlen) {
    *out = NULL;
    eng_params p;
    eng_params_default(&p);
    if (pp) {
        if (pp->n_threads > 0) p.n_threads = pp->n_threads;
        if (pp->max_seqs > 0) p.max_seqs = pp->max_seqs;
        if (pp->n_ctx > 0) p.n_ctx = pp->n_ctx;
        if (pp->max_batch_tokens > 0) p.max_batch_tokens = pp->max_batch_tokens;
        if (pp->n_restore > 0) p.n_restore = pp->n_restore;
        if (pp->n_threads < 0 || pp->max_seqs < 0 || pp->n_ctx < 0 || pp->max_batch_tokens < 0 ||
            pp->n_restore < 0)
            return util_fail(err, errlen, ENG_EINVAL, "engine parameters: negative value");
    }
    if (p.max_batch_tokens > 1 << 20)
        return util_fail(err, errlen, ENG_EINVAL, "max_batch_tokens %d exceeds limit %d",
                    p.max_batch_tokens, 1 << 20);
    eng *e = calloc(1, sizeof *e);
    if (!e) return util_fail(err, errlen, ENG_ENOMEM, "out of memory");
    int rc = lfm2_model_open(&e->m, model_path, err, errlen);
    if (rc < 0) {
        free(e);
        return ENG_EMODEL;
    }
    rc = tok_new(&e->t, e->m->g, err, errlen);
    if (rc < 0) {
        rc = ENG_EMODEL;
        goto fail;
    }
    const lfm2_hparams *hp = &e->m->hp;
    e->n_vocab = hp->n_vocab;
    if (!p.n_ctx) p.n_ctx = hp->n_ctx_train > 0 && hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    e->p = p;
    const int E = hp->n_embd, hd = hp->head_dim, L = hp->l_cache;
    if (hp->head_dim * hp->n_head != E || L < 1 || hd % 2) {
        rc = util_fail(err, errlen, ENG_EMODEL, "model: head_dim %d * heads %d != n_embd %d or bad L %d",
                  hd, hp->n_head, E, L);
        goto fail;
    }
    e->ring = p.n_restore + (L > 1 ? L - 1 : 1);
    int max_kv = 0;
    size_t n_small = (size_t)E; /* out_norm */
    for (int l = 0; l < hp->n_layer; l++) {
        int nkv = hp->n_head_kv[l];
        n_small += 2 * (size_t)E;
        if (nkv == 0) {
            e->conv_idx[l] = e->n_conv++;
            n_small += (size_t)E * L;
        } else {
            e->conv_idx[l] = -1;
            e->kv_cum[l] = e->kv_per_pos;
            e->kv_per_pos += 2 * nkv * hd;
            if (nkv > max_kv) max_kv = nkv;
            n_small += 2 * (size_t)hd;
        }
    }
    e->small = malloc(n_small * sizeof(float));
    if (!e->small) goto oom;
    float *s = e->small;
    if ((rc = to_f32(e->m->out_norm, s, E, err, errlen)) < 0) goto fail;
    e->out_norm = s, s += E;
    for (int l = 0; l < hp->n_layer; l++) {
        const lfm2_layer *ly = &e->m->layers[l];
        if ((rc = to_f32(ly->attn_norm, s, E, err, errlen)) < 0) goto fail;
        e->attn_norm[l] = s, s += E;
        if ((rc = to_f32(ly->ffn_norm, s, E, err, errlen)) < 0) goto fail;
        e->ffn_norm[l] = s, s += E;
        if (hp->n_head_kv[l] == 0) {
            if ((rc = to_f32(ly->conv, s, (int64_t)E * L, err, errlen)) < 0) goto fail;
            /* transposed to [L][n_embd]: the conv reads each tap's weights contiguously */
            float *tmp = malloc((size_t)E * L * sizeof *tmp);
            if (!tmp) goto oom;
            memcpy(tmp, s, (size_t)E * L * sizeof *tmp);
            for (int c = 0; c < E; c++)
                for (int k = 0; k < L; k++) s[(size_t)k * E + c] = tmp[(size_t)c * L + k];
            free(tmp);
            e->conv_w[l] = s, s += (size_t)E * L;
        } else {
            if ((rc = to_f32(ly->q_norm, s, hd, err, errlen)) < 0) goto fail;
            e->q_norm[l] = s, s += hd;
            if ((rc = to_f32(ly->k_norm, s, hd, err, errlen)) < 0) goto fail;
            e->k_norm[l] = s, s += hd;
        }
    }
    /* every matrix, and the embeddings, must be dequantizable row by row */
    for (int i = 0; i <= n_mats(e); i++) {
        const gguf_tensor *t = i < n_mats(e) ? mat_at(e, i).t : e->m->tok_embd;
        if (t && (!quant_traits(t->type) || !quant_row_size(t->type, t->ne[0]))) {
            rc = util_fail(err, errlen, ENG_EMODEL,
                           "tensor '%s': type %u unsupported for rows of %lld", t->name, t->type,
                           (long long)t->ne[0]);
            goto fail;
        }
    }
    if ((rc = weights_resolve(e, err, errlen)) < 0) goto fail;
    if (hp->moe && (rc = moe_load(e, err, errlen)) < 0) goto fail;
    size_t T = (size_t)p.max_batch_tokens;
    size_t a_w = 3 * (size_t)E, b_w = (size_t)E;
    size_t qkv = (size_t)(hp->n_head + 2 * max_kv) * hd;
    if (qkv > a_w) a_w = qkv;
    if ((size_t)hp->n_ff > a_w) a_w = hp->n_ff;
    if ((size_t)hp->n_ff > b_w) b_w = hp->n_ff;
    e->x = malloc(T * E * sizeof(float));
    e->xn = malloc(T * E * sizeof(float));
    e->a = malloc(T * a_w * sizeof(float));
    e->b = malloc(T * b_w * sizeof(float));
    e->o = malloc(T * E * sizeof(float));
    e->panel = malloc((size_t)p.n_threads * PANEL_FLOATS * sizeof(float)); /* one per thread */
    e->lchunk = malloc((size_t)LOGIT_CHUNK * e->n_vocab * sizeof(float));
    e->lrow_item = malloc(T * sizeof(int));
    e->lrow_off = malloc(T * sizeof(int));
    e->attn_parts = malloc(T * sizeof *e->attn_parts);
    e->spare = malloc((size_t)p.max_seqs * sizeof *e->spare);
    if (!e->x || !e->xn || !e->a || !e->b || !e->o || !e->panel || !e->lchunk || !e->lrow_item ||
        !e->lrow_off || !e->attn_parts || !e->spare)
        goto oom;
    if (hp->moe) {
        const size_t X = (size_t)hp->n_expert, K = (size_t)hp->n_expert_used;
        const size_t P = T * K + 8 * X, F = (size_t)hp->n_ff_exp;
        e->moe_p = malloc(T * X * sizeof(float));
        e->moe_sel = malloc(T * K * sizeof(int));
        e->moe_w = malloc(T * K * sizeof(float));
        e->moe_at = malloc(T * K * sizeof(int));
        e->moe_tok = malloc(P * sizeof(int));
        e->moe_off = malloc(2 * X * sizeof(int));
        e->moe_x = malloc(T * E * sizeof(float));
        e->moe_h = malloc(P * F * sizeof(float));
        e->moe_h2 = malloc(T * F * sizeof(float));
        e->moe_y = malloc(P * E * sizeof(float));
        e->moe_views = malloc(2 * X * sizeof *e->moe_views);
        e->moe_sets = malloc(2 * X * sizeof *e->moe_sets);
        if (!e->moe_p || !e->moe_sel || !e->moe_w || !e->moe_at || !e->moe_tok || !e->moe_off ||
            !e->moe_x || !e->moe_h || !e->moe_h2 || !e->moe_y || !e->moe_views || !e->moe_sets ||
            kern_act_init(&e->moe_xq, (E + 31) / 32 * 32, (int)P) < 0 ||
            kern_act_init(&e->moe_hq, (int64_t)(F + 31) / 32 * 32, (int)P) < 0)
            goto oom;
    }
    int max_in = E > hp->n_ff ? E : hp->n_ff;
    if (hp->moe && hp->n_ff_exp > max_in) max_in = hp->n_ff_exp;
    if (max_in > PANEL_FLOATS) {
        rc = util_fail(err, errlen, ENG_EMODEL, "row length %d exceeds engine limit %d", max_in,
                  PANEL_FLOATS);
        goto fail;
    }
    char perr[256];
    if (!(e->pool = pool_new(p.n_threads, perr, sizeof perr))) {
        rc = util_fail(err, errlen, ENG_ENOMEM, "%s", perr);
        goto fail;
    }
    int max_cols = E > hp->n_ff ? E : hp->n_ff;
    if (hp->n_head * hd > max_cols) max_cols = hp->n_head * hd;
    if (hp->moe && hp->n_ff_exp > max_cols) max_cols = hp->n_ff_exp;
    if (kern_act_init(&e->act, (max_cols + 31) / 32 * 32, p.max_batch_tokens) < 0) goto oom;
    openblas_set_num_threads(1); /* our pool splits the rows (see matmul) */
    *out = e;
    return 0;
oom:
    rc = util_fail(err, errlen, ENG_ENOMEM, "out of memory allocating engine scratch for %d tokens",
              p.max_batch_tokens);
fail:
    eng_free(e);
    return rc;
}

void eng_free(eng *e) {
    if (!e) return;
    tok_free(e->t);
    pool_free(e->pool);
    kern_act_release(&e->act);
    for (int i = 0; i < e->n_spare; i++)
        huge_free(e->spare[i].mem, e->spare[i].mapped);
    free(e->spare);
    for (int i = 0; i < n_mats(e); i++)
        rp_free(mat_at(e, i).w->rp);
    moe_free(e);
    lfm2_model_close(e->m);
    free(e->small);
    free(e->x);
    free(e->xn);
    free(e->a);
    free(e->b);
    free(e->o);
    free(e->panel);
    free(e->lchunk);
    free(e->lrow_item);
    free(e->lrow_off);
    free(e->attn_parts);
    free(e);
}

/* ---- sequences ---- */

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define SEQ_GAP 64 /* poisoned bytes between a sequence's kv, ring and scores: overruns still trap */
#else
#define SEQ_GAP 0
#endif

static size_t ring_floats(const eng *e) {
    return (size_t)e->n_conv * e->ring * e->m->hp.n_embd;
}

int eng_seq_new(eng *e, int n_ctx, eng_seq **out, char *err, size_t errlen) {
    *out = NULL;
    if (n_ctx == 0) n_ctx = e->p.n_ctx;
    if (n_ctx < 1 || n_ctx > (1 << 24))
        return util_fail(err, errlen, ENG_EINVAL, "n_ctx %d outside [1, %d]", n_ctx, 1 << 24);
    if (e->n_live >= e->p.max_seqs)
        return util_fail(err, errlen, ENG_ELIMIT, "live sequences %d at limit max_seqs %d", e->n_live,
                    e->p.max_seqs);
    eng_seq *s = calloc(1, sizeof *s);
    if (!s) return util_fail(err, errlen, ENG_ENOMEM, "out of memory");
    s->e = e;
    s->n_ctx = n_ctx;
    size_t nr = ring_floats(e), nkv = (size_t)n_ctx * e->kv_per_pos;
    size_t nsc = attn_scratch_floats(n_ctx) * pool_n_threads(e->pool);
    /* kv first (64-byte multiples keep every part aligned), then ring and scores */
    size_t kv_bytes = (nkv * sizeof(uint16_t) + 63) / 64 * 64 + SEQ_GAP;
    size_t ring_bytes = (nr * sizeof(float) + 63) / 64 * 64 + SEQ_GAP;
    for (int i = e->n_spare - 1; i >= 0; i--)
        if (e->spare[i].n_ctx == n_ctx) { /* the same sizes; contents are never read unwritten */
            s->mem = e->spare[i].mem, s->mapped = e->spare[i].mapped;
            e->spare[i] = e->spare[--e->n_spare];
            break;
        }
    if (!s->mem) s->mem = huge_alloc(kv_bytes + ring_bytes + nsc * sizeof(float), &s->mapped);
    if (!s->mem) {
        free(s);
        return util_fail(err, errlen, ENG_ENOMEM,
                    "out of memory allocating a sequence of n_ctx %d (%zu bytes of KV)", n_ctx,
                    nkv * sizeof(uint16_t));
    }
    s->kv = s->mem;
    s->ring = (float *)((char *)s->mem + kv_bytes);
    s->scores = (float *)((char *)s->mem + kv_bytes + ring_bytes);
#if SEQ_GAP
    ASAN_POISON_MEMORY_REGION((char *)s->ring - SEQ_GAP, SEQ_GAP);
    ASAN_POISON_MEMORY_REGION((char *)s->scores - SEQ_GAP, SEQ_GAP);
#endif
    s->bytes = sizeof *s + (nr + nsc) * sizeof(float) + nkv * sizeof(uint16_t);
    e->n_live++;
    *out = s;
    return 0;
}

void eng_seq_free(eng_seq *s) {
    if (!s) return;
    eng *e = s->e;
    e->n_live--;
    if (e->spare && e->n_spare < e->p.max_seqs) {
        e->spare[e->n_spare++] = (struct eng_spare){s->n_ctx, s->mem, s->mapped};
        free(s);
        return;
    }
    huge_free(s->mem, s->mapped);
    free(s);
}

int eng_seq_pos(const eng_seq *s) { return s->pos; }
int eng_seq_n_ctx(const eng_seq *s) { return s->n_ctx; }
size_t eng_seq_bytes(const eng_seq *s) { return s->bytes; }

int eng_seq_min_restorable(const eng_seq *s) {
    /* restoring q needs the bx columns of q-(L-1)..q-1; the ring holds [ring_lo, pos-1] */
    return s->ring_lo == 0 ? 0 : s->ring_lo + s->e->m->hp.l_cache - 1;
}

static int check_restorable(const eng_seq *s, int pos, const char *what, char *err, size_t errlen) {
    if (pos < 0 || pos > s->pos)
        return util_fail(err, errlen, ENG_EINVAL, "%s: position %d outside [0, %d]", what, pos, s->pos);
    if (pos != 0 && pos != s->pos && pos < eng_seq_min_restorable(s))
        return util_fail(err, errlen, ENG_ESTATE,
                    "%s: position %d is older than the conv state kept (lowest restorable %d, "
                    "n_restore %d)",
                    what, pos, eng_seq_min_restorable(s), s->e->p.n_restore);
    return 0;
}

int eng_seq_truncate(eng_seq *s, int pos, char *err, size_t errlen) {
    int rc = check_restorable(s, pos, "truncate", err, errlen);
    if (rc < 0) return rc;
    s->pos = pos;
    if (pos == 0) s->ring_lo = 0;
    return 0;
}

/* Layer l's K cache of sequence s: [n_kv_head][n_ctx][head_dim] halves, its V right after. */
static uint16_t *seq_k(const eng *e, const eng_seq *s, int l) {
    return s->kv + (size_t)s->n_ctx * e->kv_cum[l];
}

int eng_seq_fork(const eng_seq *src, int pos, int n_ctx, eng_seq **out, char *err, size_t errlen) {
    *out = NULL;
    if (pos < 0) pos = src->pos;
    int rc = check_restorable(src, pos, "fork", err, errlen);
    if (rc < 0) return rc;
    if (n_ctx <= 0) n_ctx = src->n_ctx;
    if (n_ctx < pos)
        return util_fail(err, errlen, ENG_ECTX, "fork: n_ctx %d smaller than the %d positions copied",
                    n_ctx, pos);
    eng *e = src->e;
    eng_seq *s;
    rc = eng_seq_new(e, n_ctx, &s, err, errlen);
    if (rc < 0) return rc;
    memcpy(s->ring, src->ring, ring_floats(e) * sizeof(float));
    s->ring_lo = pos == 0 ? 0 : src->ring_lo;
    s->pos = pos;
    const lfm2_hparams *hp = &e->m->hp;
    const size_t hd = (size_t)hp->head_dim;
    for (int l = 0; l < hp->n_layer; l++) {
        int nkv = hp->n_head_kv[l];
        if (!nkv) continue;
        const uint16_t *sk = seq_k(e, src, l);
        uint16_t *dk = seq_k(e, s, l);
        /* K then V, each [n_kv_head][n_ctx][head_dim]: the first pos rows of every head */
        for (int h = 0; h < 2 * nkv; h++)
            memcpy(dk + (size_t)h * s->n_ctx * hd, sk + (size_t)h * src->n_ctx * hd,
                   (size_t)pos * hd * sizeof *dk);
    }
    *out = s;
    return 0;
}

/* ---- saved state: KV rows and conv snapshots ---- */

size_t eng_snap_floats(const eng *e) {
    const int L = e->m->hp.l_cache;
    return (size_t)e->n_conv * (size_t)(L > 1 ? L - 1 : 0) * (size_t)e->m->hp.n_embd;
}

size_t eng_kv_halves(const eng *e) { return (size_t)e->kv_per_pos; }

void eng_seq_snap(const eng_seq *s, float *dst) {
    const eng *e = s->e;
    const int E = e->m->hp.n_embd, L = e->m->hp.l_cache, R = e->ring;
    for (int c = 0; c < e->n_conv; c++)
        for (int k = 0; k < L - 1; k++) {
            const int q = s->pos - (L - 1) + k;
            float *d = dst + ((size_t)c * (L - 1) + k) * E;
            if (q < 0)
                memset(d, 0, (size_t)E * sizeof *d);
            else
                memcpy(d, s->ring + ((size_t)c * R + q % R) * E, (size_t)E * sizeof *d);
        }
}

/* Copies rows [0, n) of every attention layer's K and V heads between a sequence (n_ctx rows
 * per head) and a block of rows rows per head; to_seq picks the direction. */
static void kv_copy(const eng *e, eng_seq *s, uint16_t *blk, int rows, int n, bool to_seq) {
    const lfm2_hparams *hp = &e->m->hp;
    const size_t hd = (size_t)hp->head_dim;
    uint16_t *b = blk;
    for (int l = 0; l < hp->n_layer; l++) {
        const int nkv = hp->n_head_kv[l];
        if (!nkv) continue;
        uint16_t *k = s->kv + (size_t)s->n_ctx * e->kv_cum[l];
        for (int h = 0; h < 2 * nkv; h++, b += (size_t)rows * hd) {
            uint16_t *sh = k + (size_t)h * s->n_ctx * hd;
            if (to_seq)
                memcpy(sh, b, (size_t)n * hd * sizeof *b);
            else
                memcpy(b, sh, (size_t)n * hd * sizeof *b);
        }
    }
}

int eng_seq_kv_read(const eng_seq *s, int n, uint16_t *dst, char *err, size_t errlen) {
    if (n < 0 || n > s->pos)
        return util_fail(err, errlen, ENG_EINVAL, "kv_read: %d rows outside [0, %d]", n, s->pos);
    kv_copy(s->e, (eng_seq *)s, dst, n, n, false);
    return 0;
}

int eng_seq_restore(eng_seq *s, int n, const uint16_t *kv, int kv_rows, const float *snap,
                    char *err, size_t errlen) {
    const eng *e = s->e;
    const int E = e->m->hp.n_embd, L = e->m->hp.l_cache, R = e->ring;
    if (n < 0 || kv_rows < n)
        return util_fail(err, errlen, ENG_EINVAL, "restore: position %d outside [0, %d]", n, kv_rows);
    if (n > s->n_ctx)
        return util_fail(err, errlen, ENG_ECTX, "restore: position %d exceeds the sequence's n_ctx %d",
                         n, s->n_ctx);
    kv_copy(e, s, (uint16_t *)kv, kv_rows, n, true);
    for (int c = 0; c < e->n_conv; c++)
        for (int k = 0; k < L - 1; k++) {
            const int q = n - (L - 1) + k;
            if (q >= 0)
                memcpy(s->ring + ((size_t)c * R + q % R) * E, snap + ((size_t)c * (L - 1) + k) * E,
                       (size_t)E * sizeof(float));
        }
    s->pos = n;
    s->ring_lo = n > L - 1 ? n - (L - 1) : 0;
    return 0;
}

/* ---- matrix products, norms, RoPE and residual adds of the forward pass ---- */

/* One thread's share of the f32 path: rows [lo, hi) of W, dequantized panel by panel into that
 * thread's own panel (never the whole matrix), or read in place when W is f32. */
typedef struct blas_job {
    eng *e;
    const eng_weight *w;
    const float *x;
    int n_tok;
    float *y;
} blas_job;

static void blas_task(void *ctx, int task, int n_tasks, int thread) {
    blas_job *j = ctx;
    const gguf_tensor *t = j->w->t;
    const int n_in = j->w->n_in, n_out = j->w->n_out, n_tok = j->n_tok;
    int64_t lo, hi;
    pool_split(n_out, n_tasks, task, &lo, &hi);
    if (lo >= hi) return;
    if (j->w->path == W_F32) { /* already f32 in the mapping: no panel copy */
        const float *w = (const float *)t->data + (size_t)lo * n_in;
        if (n_tok == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)(hi - lo), n_in, 1.0f, w, n_in, j->x, 1,
                        0.0f, j->y + lo, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_tok, (int)(hi - lo), n_in, 1.0f,
                        j->x, n_in, w, n_in, 0.0f, j->y + lo, n_out);
        return;
    }
    const qtype_traits *tr = quant_traits(t->type);
    const size_t rs = quant_row_size(t->type, n_in);
    float *panel = j->e->panel + (size_t)thread * PANEL_FLOATS;
    int rows = PANEL_FLOATS / n_in;
    for (int64_t r0 = lo; r0 < hi; r0 += rows) {
        int nr = hi - r0 < rows ? (int)(hi - r0) : rows;
        tr->to_float((const char *)t->data + (size_t)r0 * rs, panel, (int64_t)nr * n_in);
        if (n_tok == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, nr, n_in, 1.0f, panel, n_in, j->x, 1, 0.0f,
                        j->y + r0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_tok, nr, n_in, 1.0f, j->x, n_in,
                        panel, n_in, 0.0f, j->y + r0, n_out);
    }
}

/* y[n_tok, n_out] = x[n_tok, n_in] @ W^T, by w's path. The f32 paths run OpenBLAS
 * single-threaded inside each of our pool's threads on its share of the rows: OpenBLAS's own
 * threads would compete with the pool's for the same cores. */
static void matmul(eng *e, const eng_weight *w, const float *x, int n_tok, float *y) {
    switch (w->path) {
    case W_REPACKED: /* int8 activations x repacked weights, for every step size: prefill and
                      * decode compute alike, and the kernels take less CPU than sgemm on
                      * dequantized f32 panels */
        gemm_quantize(e->pool, &e->act, x, w->n_in, w->n_in, n_tok);
        gemm_matmul(e->pool, w->rp, &e->act, y, w->n_out);
        return;
    case W_HALF:
        if (n_tok <= HALF_MAX_TOK) { /* decode: straight from the file, no f32 panel */
            kern_matmul_half(e->pool, w->t->data, w->t->type == QT_BF16, w->n_out, w->n_in, x,
                             w->n_in, n_tok, y, w->n_out);
            return;
        }
        break; /* longer steps: sgemm on f32 panels */
    case W_F32:
    case W_PANEL:
        break;
    }
    blas_job j = {e, w, x, n_tok, y};
    int nt = pool_n_threads(e->pool);
    pool_run(e->pool, blas_task, &j, w->n_out < 64 * nt ? 1 : nt);
}

/* Matrices reading the same input x (q/k/v): one quantization and one parallel region when they
 * are all repacked; else one matmul each. */
static void matmul_n(eng *e, int n, const eng_weight *const *ws, const float *x, int n_tok,
                     float *const *ys) {
    const rp_matrix *ms[4];
    int64_t ld[4];
    bool all = n <= 4;
    for (int i = 0; i < n && all; i++) {
        ms[i] = ws[i]->rp;
        ld[i] = ws[i]->n_out;
        all = ws[i]->path == W_REPACKED && ws[i]->n_in == ws[0]->n_in;
    }
    if (!all) {
        for (int i = 0; i < n; i++) matmul(e, ws[i], x, n_tok, ys[i]);
        return;
    }
    gemm_quantize(e->pool, &e->act, x, ws[0]->n_in, ws[0]->n_in, n_tok);
    gemm_matmul_n(e->pool, n, ms, &e->act, ys, ld);
}

/* a = silu(gate x) * (up x), [n_tok, n_ff]; b is scratch for the unfused path. */
static void ffn_swiglu(eng *e, const eng_weight *gate, const eng_weight *up, const float *x,
                       int n_tok, float *a, float *b) {
    const int64_t n_ff = gate->n_out;
    if (gate->path == W_REPACKED && up->path == W_REPACKED && gate->n_in == up->n_in &&
        gate->n_out == up->n_out) {
        gemm_quantize(e->pool, &e->act, x, gate->n_in, gate->n_in, n_tok);
        gemm_swiglu(e->pool, gate->rp, up->rp, &e->act, a, n_ff);
        return;
    }
    matmul(e, gate, x, n_tok, a);
    matmul(e, up, x, n_tok, b);
    kern_silu_mul(a, a, b, (int64_t)n_tok * n_ff);
}

/* ggml's rms_norm then mul: sum of squares in double, scale in float. */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    kern_rmsnorm(out, x, w, n, eps); /* its sum of squares in double lanes with AVX2 */
}

static void embed(const eng *e, int32_t id, float *dst) {
    const gguf_tensor *t = e->m->tok_embd;
    size_t rs = quant_row_size(t->type, t->ne[0]);
    quant_traits(t->type)->to_float((const char *)t->data + (size_t)id * rs, dst, t->ne[0]);
}

/* NEOX RoPE as ggml computes it, on the n_heads heads of each of n vectors at one position:
 * theta_i = p * theta_scale^i by repeated f32 multiplication; cos/sin computed once per position
 * for all heads (q's and k's). */
static void rope_neox(float *const *vs, const int *n_heads, int n, int hd, int pos,
                      float theta_scale) {
    const int half = hd / 2;
    float theta = (float)pos, c[64], sn[64];
    for (int i0 = 0; i0 < half; i0 += 64) {
        const int m = half - i0 < 64 ? half - i0 : 64;
        for (int i = 0; i < m; i++) {
            c[i] = cosf(theta), sn[i] = sinf(theta);
            theta *= theta_scale;
        }
        for (int k = 0; k < n; k++)
            for (int h = 0; h < n_heads[k]; h++) {
                float *x = vs[k] + (size_t)h * hd + i0;
                for (int i = 0; i < m; i++) {
                    float x0 = x[i], x1 = x[i + half];
                    x[i] = x0 * c[i] - x1 * sn[i];
                    x[i + half] = x0 * sn[i] + x1 * c[i];
                }
            }
    }
}

/* 4 lanes: this file's baseline flags have SSE2 registers only, and GCC lowers wider vectors
 * through the stack */
typedef float ev4f __attribute__((vector_size(16)));

/* x[i] += o[i] for i < n (the residual adds), 4 lanes at a time: a plain loop reloads x and o
 * for every float, since its stores might alias them */
static void vec_add(float *x, const float *o, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        ev4f vx, vo;
        memcpy(&vx, x + i, sizeof vx);
        memcpy(&vo, o + i, sizeof vo);
        vx = vx + vo;
        memcpy(x + i, &vx, sizeof vx);
    }
    for (; i < n; i++) x[i] += o[i];
}

/* Short conv for one item, channels [c0, c1): rows r0..r0+n-1 of e->a hold B|C|X; writes C*y
 * into e->b rows. Per channel: bx = B * X; y = 0 + w_k * bx(p - L + 1 + k) for k = 0..L-1 (taps
 * before position 0 skipped); y * C. One pass per token, 4 channels at a time: the bx of the
 * item's own tokens is computed again from their rows (in cache), earlier ones come from the
 * ring, which is only written (the last R tokens' bx: what it keeps). Storing bx and reading it
 * back in five passes took twice the time in a decode step (the ring's rows are cold). The same
 * float operations in the same order as before. */
static void conv_item(eng *e, int l, eng_seq *s, int r0, int n, int c0, int c1) {
    const lfm2_hparams *hp = &e->m->hp;
    const int E = hp->n_embd, L = hp->l_cache, R = e->ring;
    const float *cw = e->conv_w[l]; /* [L][E] */
    float *ring = s->ring + (size_t)e->conv_idx[l] * R * E;
    for (int t = 0; t < n; t++) {
        const int p = s->pos + t;
        const float *C = e->a + (size_t)(r0 + t) * 3 * E + E;
        float *y = e->b + (size_t)(r0 + t) * E;
        float *keep = p >= s->pos + n - R ? ring + (size_t)(p % R) * E : NULL;
        /* tap k reads bx(q) as u[k] * v[k] (a batch row's B and X) or as u[k] alone (the ring) */
        const float *u[LFM2_MAX_L_CACHE], *v[LFM2_MAX_L_CACHE], *w[LFM2_MAX_L_CACHE];
        int nk = 0;
        for (int k = 0; k < L; k++) {
            const int q = p - (L - 1) + k;
            if (q < 0) continue;
            w[nk] = cw + (size_t)k * E;
            if (q >= s->pos) {
                u[nk] = e->a + (size_t)(r0 + q - s->pos) * 3 * E;
                v[nk] = u[nk] + 2 * E;
            } else {
                u[nk] = ring + (size_t)(q % R) * E;
                v[nk] = NULL;
            }
            nk++;
        }
        int c = c0;
        for (; c + 4 <= c1; c += 4) {
            ev4f acc = {0}, bx = {0}, a, b, wk;
            for (int k = 0; k < nk; k++) {
                memcpy(&a, u[k] + c, sizeof a);
                if (v[k]) {
                    memcpy(&b, v[k] + c, sizeof b);
                    a = a * b;
                }
                memcpy(&wk, w[k] + c, sizeof wk);
                acc = acc + wk * a;
                bx = a; /* the last tap is position p itself */
            }
            if (keep) memcpy(keep + c, &bx, sizeof bx);
            memcpy(&b, C + c, sizeof b);
            acc = acc * b;
            memcpy(y + c, &acc, sizeof acc);
        }
        for (; c < c1; c++) {
            float acc = 0, bx = 0;
            for (int k = 0; k < nk; k++) {
                bx = v[k] ? u[k][c] * v[k][c] : u[k][c];
                acc = acc + w[k][c] * bx;
            }
            if (keep) keep[c] = bx;
            y[c] = acc * C[c];
        }
    }
}

/* ---- per-row work of a batch, split across the pool when there are several rows ---- */

typedef void (*rows_fn)(void *ctx, int r0, int r1);
typedef struct rows_job {
    rows_fn fn;
    void *ctx;
    int n;
} rows_job;

static void rows_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    rows_job *j = ctx;
    int64_t lo, hi;
    pool_split(j->n, n_tasks, task, &lo, &hi);
    if (lo < hi) j->fn(j->ctx, (int)lo, (int)hi);
}

/* fn(ctx, r0, r1) over [0, n) in contiguous parts: inline for one row (a decode step of one
 * sequence: a parallel region would cost more than the work), else one part per thread. */
static void rows_run(eng *e, rows_fn fn, void *ctx, int n) {
    int nt = pool_n_threads(e->pool);
    if (n <= 1 || nt <= 1) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    rows_job j = {fn, ctx, n};
    pool_run(e->pool, rows_task, &j, n < nt ? n : nt);
}

/* The batch row r's item and token within it. */
static void row_item(const eng_batch *b, int r, int *item, int *tok) {
    int i = 0;
    while (r >= b->items[i].n_tokens) r -= b->items[i++].n_tokens;
    *item = i, *tok = r;
}

/* attention's per-row preparation: q/k head norms, RoPE, K/V stored at the row's position */
typedef struct prep_job {
    eng *e;
    int l;
    const eng_batch *b;
    int T;
    float theta_scale;
} prep_job;

static void prep_task(void *ctx, int r0, int r1) {
    const prep_job *j = ctx;
    eng *e = j->e;
    const lfm2_hparams *hp = &e->m->hp;
    const int l = j->l, H = hp->n_head, KV = hp->n_head_kv[l], hd = hp->head_dim;
    const int qw = H * hd, kw = KV * hd;
    float *q_all = e->a, *k_all = e->a + (size_t)j->T * qw, *v_all = k_all + (size_t)j->T * kw;
    for (int r = r0; r < r1; r++) {
        int i, t;
        row_item(j->b, r, &i, &t);
        eng_seq *s = j->b->items[i].seq;
        uint16_t *K = seq_k(e, s, l);
        uint16_t *V = K + (size_t)s->n_ctx * kw;
        int p = s->pos + t;
        float *q = q_all + (size_t)r * qw;
        float *k = k_all + (size_t)r * kw;
        float *v = v_all + (size_t)r * kw;
        for (int h = 0; h < H; h++) rmsnorm(q + h * hd, q + h * hd, e->q_norm[l], hd, hp->eps);
        for (int h = 0; h < KV; h++) rmsnorm(k + h * hd, k + h * hd, e->k_norm[l], hd, hp->eps);
        float *const qk[2] = {q, k};
        const int nh[2] = {H, KV};
        rope_neox(qk, nh, 2, hd, p, j->theta_scale);
        for (int h = 0; h < KV; h++) { /* f16, as llama.cpp's */
            size_t at = ((size_t)h * s->n_ctx + p) * hd;
            attn_store(K + at, k + (size_t)h * hd, hd, ATTN_ISA_AUTO);
            attn_store(V + at, v + (size_t)h * hd, hd, ATTN_ISA_AUTO);
        }
    }
}

/* RMSNorm of rows [r0, r1): out = norm(x) * w */
typedef struct norm_job {
    float *out;
    const float *x, *w;
    int E;
    float eps;
} norm_job;

static void norm_task(void *ctx, int r0, int r1) {
    const norm_job *j = ctx;
    for (int r = r0; r < r1; r++)
        rmsnorm(j->out + (size_t)r * j->E, j->x + (size_t)r * j->E, j->w, j->E, j->eps);
}

/* A decode step's norms (up to NORM_INLINE floats) run on the calling thread: its vec_add just
 * wrote x and its quantizer reads the result next, so a pool region would only move those lines
 * between cores, at a cost larger than the arithmetic. */
#define NORM_INLINE 16384
static void norm_rows(eng *e, norm_job *j, int T) {
    if ((int64_t)T * j->E <= NORM_INLINE)
        norm_task(j, 0, T);
    else
        rows_run(e, norm_task, j, T);
}

/* the short convolution of every item, channels [c0, c1) (channels are independent: a part
 * runs every token of every item on its channels, in token order) */
typedef struct conv_job {
    eng *e;
    int l;
    const eng_batch *b;
    const eng_snap_req *snaps; /* NULL or one per item */
} conv_job;

/* The snapshots item it asked for, channels [c0, c1) of conv layer l, taken before conv_item
 * moves the ring on: a column of the item's own tokens is B*X of its row (the product conv_item
 * computes), an earlier one comes from the ring, one before position 0 is zero. */
static void snap_item(eng *e, int l, const eng_batch_item *it, const eng_snap_req *sr, int r0,
                      int c0, int c1) {
    const int E = e->m->hp.n_embd, L = e->m->hp.l_cache, R = e->ring;
    const eng_seq *s = it->seq;
    const size_t per = eng_snap_floats(e);
    const float *ring = s->ring + (size_t)e->conv_idx[l] * R * E;
    for (int k = 0; k < sr->n; k++)
        for (int t = 0; t < L - 1; t++) {
            const int q = sr->at[k] - (L - 1) + t;
            float *d = sr->dst + k * per + ((size_t)e->conv_idx[l] * (L - 1) + t) * E;
            if (q < 0) {
                memset(d + c0, 0, (size_t)(c1 - c0) * sizeof *d);
            } else if (q >= s->pos) {
                const float *u = e->a + (size_t)(r0 + q - s->pos) * 3 * E, *v = u + 2 * E;
                for (int c = c0; c < c1; c++) d[c] = u[c] * v[c];
            } else {
                memcpy(d + c0, ring + (size_t)(q % R) * E + c0, (size_t)(c1 - c0) * sizeof *d);
            }
        }
}

static void conv_task(void *ctx, int c0, int c1) {
    const conv_job *j = ctx;
    for (int i = 0, r0 = 0; i < j->b->n_items; r0 += j->b->items[i].n_tokens, i++) {
        if (j->snaps && j->snaps[i].n > 0)
            snap_item(j->e, j->l, &j->b->items[i], &j->snaps[i], r0, c0, c1);
        conv_item(j->e, j->l, j->b->items[i].seq, r0, j->b->items[i].n_tokens, c0, c1);
    }
}

static void conv_split_task(void *ctx, int g0, int g1) { /* in groups of 16 channels */
    const int E = ((const conv_job *)ctx)->e->m->hp.n_embd;
    conv_task(ctx, 16 * g0, 16 * g1 < E ? 16 * g1 : E);
}

/* A layer's attention for the whole batch (engine/attn.c) in one pool run, in units of (item,
 * tile of tokens, KV head, group of the query heads reading it): up to ATTN_MAX_Q queries that
 * share each K/V row read. A query's bits depend only on it and its cache, never on the tiling
 * or on the other items (struct attn_part, one per item, is at the top). */
typedef struct attn_job {
    const float *q_all; /* [T][qw] */
    float *out;         /* e->b: [T][qw] */
    const struct attn_part *parts;
    int n_parts, n_units;
    int KV, group, hd, qw, kw, n_swa;
    int hs, n_hsub, tt; /* heads per unit, units per KV head, tokens per unit */
    float kq_scale;
} attn_job;

static void attn_task(void *ctx, int task, int n_tasks, int thread) {
    const attn_job *a = ctx;
    const int hd = a->hd, per_tile = a->KV * a->n_hsub;
    int ip = 0;
    /* strided units: every task gets early (short) and late (long) tokens alike */
    for (int u = task; u < a->n_units; u += n_tasks) {
        while (ip + 1 < a->n_parts && a->parts[ip + 1].u0 <= u) ip++;
        const struct attn_part *pt = &a->parts[ip];
        const int tile = (u - pt->u0) / per_tile, rest = (u - pt->u0) % per_tile;
        const int kh = rest / a->n_hsub, h0 = kh * a->group + rest % a->n_hsub * a->hs;
        const int h1 = h0 + a->hs < (kh + 1) * a->group ? h0 + a->hs : (kh + 1) * a->group;
        const int t0 = tile * a->tt, t1 = t0 + a->tt < pt->n ? t0 + a->tt : pt->n;
        const size_t head = (size_t)kh * pt->n_ctx * hd; /* [n_kv_head][n_ctx][hd] */
        attn_kv kv = {pt->K + head, pt->V + head, (size_t)hd, hd, a->n_swa, a->kq_scale};
        attn_query qs[ATTN_MAX_Q];
        int nq = 0;
        for (int t = t0; t < t1; t++)
            for (int h = h0; h < h1; h++) {
                size_t off = (size_t)(pt->r0 + t) * a->qw + (size_t)h * hd;
                qs[nq++] = (attn_query){a->q_all + off, a->out + off, pt->pos + t};
            }
        attn_run(&kv, qs, nq, pt->scratch + (size_t)thread * pt->n_scratch, ATTN_ISA_AUTO);
    }
}

/* Attention of layer l for the batch: q|k|v rows in e->a ([T][qw], then [T][kw] twice); per-head
 * norms and RoPE, K/V stored at each item's positions, heads concatenated into e->b rows. */
static void attn_layer(eng *e, int l, const eng_batch *b, int T) {
    const lfm2_hparams *hp = &e->m->hp;
    const int H = hp->n_head, KV = hp->n_head_kv[l], hd = hp->head_dim;
    const int qw = H * hd, kw = KV * hd;
    float *q_all = e->a;
    const float theta_scale = powf(hp->rope_base, -2.0f / hd);
    const int group = H / KV, hs = group < ATTN_MAX_Q ? group : ATTN_MAX_Q;
    const int tt = ATTN_MAX_Q / hs, n_hsub = (group + hs - 1) / hs;
    int n_units = 0;
    prep_job pj = {e, l, b, T, theta_scale};
    rows_run(e, prep_task, &pj, T);
    for (int i = 0, r0 = 0; i < b->n_items; r0 += b->items[i].n_tokens, i++) {
        eng_seq *s = b->items[i].seq;
        const int n = b->items[i].n_tokens;
        uint16_t *K = seq_k(e, s, l);
        uint16_t *V = K + (size_t)s->n_ctx * kw;
        e->attn_parts[i] = (struct attn_part){K, V, s->scores, attn_scratch_floats(s->n_ctx),
                                              s->pos, r0, n, n_units, s->n_ctx};
        n_units += (n + tt - 1) / tt * KV * n_hsub;
    }
    attn_job j = {q_all, e->b, e->attn_parts, b->n_items, n_units, KV, group, hd, qw, kw,
                  hp->n_swa, hs, n_hsub, tt, 1.0f / sqrtf((float)hd)};
    int nt = pool_n_threads(e->pool);
    pool_run(e->pool, attn_task, &j, n_units < 4 * nt ? n_units : 4 * nt);
}

/* ---- the expert FFN of lfm2moe layers ---- */

/* Routing of one token as llama.cpp's build_moe_ffn with sigmoid gating: p = sigmoid(logits),
 * the k experts with the largest p + bias (earlier expert first on equal scores), weights
 * p / max(sum of the chosen p, 2^-14). sel and w get k entries, best first. */
static void moe_route(const float *logits, const float *bias, int X, int k, float *p, int *sel,
                      float *w) {
    for (int x = 0; x < X; x++)
        p[x] = 1.0f / (1.0f + expf(-logits[x]));
    for (int j = 0; j < k; j++) {
        int best = -1;
        float bs = 0;
        for (int x = 0; x < X; x++) {
            bool taken = false;
            for (int i = 0; i < j && !taken; i++)
                taken = sel[i] == x;
            float sc = p[x] + bias[x];
            if (!taken && (best < 0 || sc > bs)) best = x, bs = sc;
        }
        sel[j] = best;
    }
    float sum = 0;
    for (int j = 0; j < k; j++)
        sum += w[j] = p[sel[j]];
    if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
    for (int j = 0; j < k; j++)
        w[j] /= sum;
}

/* dot(a, b) over n floats in 16 lanes with a fixed reduction: the router's logits, the same
 * bits for a token whatever the batch (an sgemv/sgemm pair may round differently, and a flipped
 * near-tie would send the token to another expert). */
static float dot_f32(const float *a, const float *b, int n) {
    ev4f acc[4] = {{0}, {0}, {0}, {0}};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 4; k++) {
            ev4f va, vb;
            memcpy(&va, a + i + 4 * k, sizeof va);
            memcpy(&vb, b + i + 4 * k, sizeof vb);
            acc[k] = acc[k] + va * vb;
        }
    ev4f v = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    float sum = (v[0] + v[1]) + (v[2] + v[3]);
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

/* One router job: rows [r0, r1) of the batch: logits, then routing */
typedef struct route_job {
    eng *e;
    const eng_moe *mo;
    const float *x; /* [T][n_embd] */
} route_job;

static void route_task(void *ctx, int r0, int r1) {
    const route_job *j = ctx;
    eng *e = j->e;
    const lfm2_hparams *hp = &e->m->hp;
    const int E = hp->n_embd, X = hp->n_expert, K = hp->n_expert_used;
    for (int r = r0; r < r1; r++) {
        float *p = e->moe_p + (size_t)r * X;
        for (int xe = 0; xe < X; xe++)
            p[xe] = dot_f32(j->mo->router + (size_t)xe * E, j->x + (size_t)r * E, E);
        moe_route(p, j->mo->bias, X, K, p, e->moe_sel + (size_t)r * K, e->moe_w + (size_t)r * K);
    }
}

/* The experts' work when every expert matrix is repacked: the T rows quantized once, each
 * chosen expert's rows gathered from them (a single row, or rows already in order, read in
 * place), then one parallel region for the SwiGLU of every chosen expert (each task quantizing
 * the activations it wrote, the downs' input) and one for every down: two regions per layer
 * instead of four per expert. The same per-(row, token) products as the dense path's. */
static void moe_experts_repacked(eng *e, const eng_moe *mo, const float *x, int T) {
    const lfm2_hparams *hp = &e->m->hp;
    const int E = hp->n_embd, X = hp->n_expert, F = hp->n_ff_exp;
    gemm_quantize(e->pool, &e->act, x, E, E, T);
    e->moe_xq.cols = E;
    e->moe_hq.cols = F; /* before its views are made */
    kern_set *sw = e->moe_sets, *dn = e->moe_sets + X;
    int ns = 0;
    for (int xe = 0; xe < X; xe++) {
        const int s0 = e->moe_off[2 * xe], n = e->moe_off[2 * xe + 1];
        if (!n) continue;
        const int *tok = e->moe_tok + s0;
        kern_act *xa = &e->moe_views[2 * ns], *ha = &e->moe_views[2 * ns + 1];
        if (n == 1 || (tok[n - 1] - tok[0] == n - 1 && tok[0] % 8 == 0)) {
            kern_act_view(xa, &e->act, tok[0], n);
        } else {
            kern_act_view(xa, &e->moe_xq, s0, n);
            kern_act_gather(xa, &e->act, tok, n);
        }
        kern_act_view(ha, &e->moe_hq, s0, n);
        sw[ns] = (kern_set){mo->gate[xe].rp, mo->up[xe].rp, xa, e->moe_h + (size_t)s0 * F, F, ha};
        dn[ns] = (kern_set){mo->down[xe].rp, NULL, ha, e->moe_y + (size_t)s0 * E, E, NULL};
        ns++;
    }
    gemm_swiglu_sets(e->pool, ns, sw);
    gemm_matmul_sets(e->pool, ns, dn);
}

/* The expert FFN of layer l for the T rows of x (normed), into o: every row routed, the rows
 * grouped by expert so each chosen expert's matrices are read once per step (a decode step
 * reads only its k experts), each expert's output kept per (row, choice) and combined per row
 * in choice order as llama.cpp does (y0 w0 + y1 w1 + ...): a row's bits do not depend on the
 * other rows of the batch. */
static void moe_ffn(eng *e, int l, const float *x, int T, float *o) {
    const lfm2_hparams *hp = &e->m->hp;
    const eng_moe *mo = e->layers[l].moe;
    const int E = hp->n_embd, X = hp->n_expert, K = hp->n_expert_used;
    route_job rj = {e, mo, x};
    rows_run(e, route_task, &rj, T);
    if (e->router_hook)
        for (int r = 0; r < T; r++)
            e->router_hook(e->router_ctx, l, r, e->moe_sel + (size_t)r * K,
                           e->moe_w + (size_t)r * K, K);
    /* group the T*K choices by expert, rows in token order within a group; a group of 2 or
     * more rows starts at a multiple of 8 */
    int *off = e->moe_off;
    for (int xe = 0; xe < X; xe++)
        off[2 * xe + 1] = 0;
    for (int i = 0; i < T * K; i++)
        off[2 * e->moe_sel[i] + 1]++;
    for (int xe = 0, pos = 0; xe < X; xe++) {
        if (off[2 * xe + 1] >= 2) pos = (pos + 7) / 8 * 8;
        off[2 * xe] = pos;
        pos += off[2 * xe + 1];
    }
    for (int i = 0; i < T * K; i++) { /* off[2x] counts up to the group's end, then back */
        int at = off[2 * e->moe_sel[i]]++;
        e->moe_at[i] = at;
        e->moe_tok[at] = i / K;
    }
    for (int xe = 0; xe < X; xe++)
        off[2 * xe] -= off[2 * xe + 1];
    if (mo->repacked) {
        moe_experts_repacked(e, mo, x, T);
    } else {
        for (int xe = 0; xe < X; xe++) {
            const int s0 = off[2 * xe], n = off[2 * xe + 1];
            if (!n) continue;
            for (int i = 0; i < n; i++)
                memcpy(e->moe_x + (size_t)i * E, x + (size_t)e->moe_tok[s0 + i] * E,
                       (size_t)E * sizeof(float));
            ffn_swiglu(e, &mo->gate[xe], &mo->up[xe], e->moe_x, n, e->moe_h, e->moe_h2);
            matmul(e, &mo->down[xe], e->moe_h, n, e->moe_y + (size_t)s0 * E);
        }
    }
    for (int r = 0; r < T; r++) {
        float *dst = o + (size_t)r * E;
        for (int j = 0; j < K; j++) {
            const float *y = e->moe_y + (size_t)e->moe_at[r * K + j] * E;
            const float w = e->moe_w[r * K + j];
            if (j == 0)
                for (int c = 0; c < E; c++)
                    dst[c] = y[c] * w;
            else
                for (int c = 0; c < E; c++)
                    dst[c] += y[c] * w;
        }
    }
}

/* ---- the batch step ---- */

int eng_step(eng *e, eng_batch *b, char *err, size_t errlen) {
    return eng_step_snap(e, b, NULL, err, errlen);
}

int eng_step_snap(eng *e, eng_batch *b, const eng_snap_req *snaps, char *err, size_t errlen) {
    const lfm2_hparams *hp = &e->m->hp;
    const int E = hp->n_embd, hd = hp->head_dim;
    if (!b || b->n_items < 1 || !b->items)
        return util_fail(err, errlen, ENG_EINVAL, "batch: %d items, need at least 1", b ? b->n_items : 0);
    int T = 0, rc = 0;
    for (int i = 0; i < b->n_items; i++) {
        eng_batch_item *it = &b->items[i];
        if (!it->seq || it->seq->e != e || !it->tokens) {
            rc = util_fail(err, errlen, ENG_EINVAL, "batch item %d: missing sequence or tokens", i);
            goto unmark;
        }
        if (it->n_tokens < 1) {
            rc = util_fail(err, errlen, ENG_EINVAL, "batch item %d: n_tokens %d, need >= 1", i,
                      it->n_tokens);
            goto unmark;
        }
        if (it->logits_mode < ENG_LOGITS_NONE || it->logits_mode > ENG_LOGITS_ALL ||
            (it->logits_mode != ENG_LOGITS_NONE && !it->logits)) {
            rc = util_fail(err, errlen, ENG_EINVAL, "batch item %d: logits_mode %d without a buffer", i,
                      it->logits_mode);
            goto unmark;
        }
        if (it->seq->in_step) {
            rc = util_fail(err, errlen, ENG_EBATCH, "batch item %d: sequence already in this batch", i);
            goto unmark;
        }
        it->seq->in_step = true;
        if (it->n_tokens > e->p.max_batch_tokens - T) {
            rc = util_fail(err, errlen, ENG_EBATCH, "batch: more than max_batch_tokens %d tokens",
                      e->p.max_batch_tokens);
            goto unmark;
        }
        if (it->n_tokens > it->seq->n_ctx - it->seq->pos) {
            rc = util_fail(err, errlen, ENG_ECTX,
                      "batch item %d: position %d + %d tokens exceeds the sequence's n_ctx %d", i,
                      it->seq->pos, it->n_tokens, it->seq->n_ctx);
            goto unmark;
        }
        const eng_snap_req *sr = snaps ? &snaps[i] : NULL;
        for (int k = 0; sr && k < sr->n; k++)
            if (!sr->dst || !sr->at || sr->at[k] <= it->seq->pos ||
                sr->at[k] > it->seq->pos + it->n_tokens || (k && sr->at[k] <= sr->at[k - 1])) {
                rc = util_fail(err, errlen, ENG_EINVAL,
                               "batch item %d: snapshot %d at %d outside (%d, %d] or not ascending",
                               i, k, sr->at ? sr->at[k] : -1, it->seq->pos,
                               it->seq->pos + it->n_tokens);
                goto unmark;
            }
        for (int j = 0; j < it->n_tokens; j++)
            if (it->tokens[j] < 0 || it->tokens[j] >= e->n_vocab) {
                rc = util_fail(err, errlen, ENG_EINVAL, "batch item %d: token %d = %d outside [0, %d)",
                          i, j, it->tokens[j], e->n_vocab);
                goto unmark;
            }
        T += it->n_tokens;
    }

    /* embeddings */
    for (int i = 0, r = 0; i < b->n_items; i++)
        for (int j = 0; j < b->items[i].n_tokens; j++, r++)
            embed(e, b->items[i].tokens[j], e->x + (size_t)r * E);

    for (int l = 0; l < hp->n_layer; l++) {
        const eng_layer *ly = &e->layers[l];
        norm_job nj = {e->xn, e->x, e->attn_norm[l], E, hp->eps};
        norm_rows(e, &nj, T);
        if (hp->n_head_kv[l] == 0) {
            matmul(e, &ly->in_proj, e->xn, T, e->a);
            conv_job cj = {e, l, b, snaps};
            if (T > 1) /* channel parts of 16 */
                rows_run(e, conv_split_task, &cj, (E + 15) / 16);
            else
                conv_task(&cj, 0, E);
            matmul(e, &ly->out_proj, e->b, T, e->o);
        } else {
            const int qw = hp->n_head * hd, kw = hp->n_head_kv[l] * hd;
            const eng_weight *qkv[3] = {&ly->wq, &ly->wk, &ly->wv};
            float *ys[3] = {e->a, e->a + (size_t)T * qw, e->a + (size_t)T * (qw + kw)};
            matmul_n(e, 3, qkv, e->xn, T, ys);
            attn_layer(e, l, b, T);
            matmul(e, &ly->wo, e->b, T, e->o);
        }
        vec_add(e->x, e->o, (size_t)T * E);
        nj.w = e->ffn_norm[l];
        norm_rows(e, &nj, T);
        if (ly->moe) {
            moe_ffn(e, l, e->xn, T, e->o);
        } else {
            ffn_swiglu(e, &ly->ffn_gate, &ly->ffn_up, e->xn, T, e->a, e->b);
            matmul(e, &ly->ffn_down, e->a, T, e->o);
        }
        vec_add(e->x, e->o, (size_t)T * E);
    }

    /* gather the rows that want logits, final norm, output head in chunks */
    int n_rows = 0;
    for (int i = 0, r0 = 0; i < b->n_items; r0 += b->items[i].n_tokens, i++) {
        eng_batch_item *it = &b->items[i];
        int first = it->logits_mode == ENG_LOGITS_ALL ? 0 : it->n_tokens - 1;
        if (it->logits_mode == ENG_LOGITS_NONE) continue;
        for (int j = first; j < it->n_tokens; j++) {
            rmsnorm(e->o + (size_t)n_rows * E, e->x + (size_t)(r0 + j) * E, e->out_norm, E,
                    hp->eps);
            e->lrow_item[n_rows] = i;
            e->lrow_off[n_rows] = j - first;
            n_rows++;
        }
    }
    for (int c0 = 0; c0 < n_rows; c0 += LOGIT_CHUNK) {
        int nc = n_rows - c0 < LOGIT_CHUNK ? n_rows - c0 : LOGIT_CHUNK;
        /* straight into the callers' buffers when the chunk's rows lie there one after the
         * other (the scheduler's and lfm2 bench's layout): no copy of n_vocab floats a row */
        float *dst[LOGIT_CHUNK];
        bool direct = true;
        for (int r = 0; r < nc; r++) {
            const eng_batch_item *it = &b->items[e->lrow_item[c0 + r]];
            dst[r] = it->logits + (size_t)e->lrow_off[c0 + r] * e->n_vocab;
            direct = direct && dst[r] == dst[0] + (size_t)r * e->n_vocab;
        }
        matmul(e, &e->output, e->o + (size_t)c0 * E, nc, direct ? dst[0] : e->lchunk);
        if (!direct)
            for (int r = 0; r < nc; r++)
                memcpy(dst[r], e->lchunk + (size_t)r * e->n_vocab,
                       (size_t)e->n_vocab * sizeof(float));
    }

    /* advance the sequences */
    for (int i = 0; i < b->n_items; i++) {
        eng_seq *s = b->items[i].seq;
        s->pos += b->items[i].n_tokens;
        int lo = s->pos - e->ring;
        if (lo > s->ring_lo) s->ring_lo = lo;
    }
    rc = 0;
    for (int i = 0; i < b->n_items; i++) b->items[i].seq->in_step = false;
    return rc;
unmark:
    for (int i = 0; i < b->n_items; i++)
        if (b->items[i].seq) b->items[i].seq->in_step = false;
    return rc;
}
