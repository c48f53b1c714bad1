/* mkmodel.h: synthetic LFM2 GGUF files: real layout and metadata, seeded weights, BPE vocab. */
#ifndef LFM2_MKMODEL_H
#define LFM2_MKMODEL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "engine/model.h"

/* llama.cpp's general.file_type values for the types mkmodel writes. */
enum mkmodel_ftype {
    MK_F32 = 0,
    MK_F16 = 1,
    MK_Q4_0 = 2,
    MK_Q8_0 = 7,
    MK_Q4_K_M = 15,
    MK_Q5_K_M = 17,
    MK_Q6_K = 18,
    MK_BF16 = 32
};

typedef struct mkmodel_shape {
    int n_embd;                 /* hidden size */
    int n_layer;                /* blocks */
    int n_head;                 /* query heads; head_dim = n_embd / n_head */
    int n_head_kv;              /* KV heads of every attention layer */
    int n_ff;                   /* SwiGLU width */
    int n_vocab;                /* tokens (16 specials + 256 bytes + merges) */
    int n_ctx;                  /* lfm2.context_length */
    int n_swa;                  /* lfm2.attention.sliding_window, 0 = key absent */
    bool attn[LFM2_MAX_LAYERS]; /* per layer: attention (true) or short conv */
} mkmodel_shape;

typedef struct mkmodel_opts {
    mkmodel_shape shape;
    uint64_t seed;          /* weights (and nothing else) depend on it */
    int ftype;              /* enum mkmodel_ftype */
    const char *name;       /* general.name; NULL: "synthetic-lfm2-<preset>-seed<S>" */
    const char *preset;     /* only used for the default name */
    const char *train_text; /* BPE training text; NULL: the built-in corpus */
    size_t train_len;
    const char *vocab_from;    /* GGUF whose tokenizer.* keys are copied; overrides training */
    double logit_scale;        /* gain on the output norm, so on the logits' spread; 0 = 1. Tests
                                * that force text with logit_bias use a small one (flat logits) */
    const char *chat_template; /* tokenizer.chat_template family (mkmodel_chat_template_named);
                                * NULL: "lfm2", or the vocab_from file's own template */
} mkmodel_opts;

/* Fills s with a preset's shape: "tiny" (hidden 128, 4 layers, attention at 1 and 3, vocab
 * 1024), "mini" (tests/data/models), "350m", "700m", "1.2b", "2.6b". Negative + err if unknown. */
int mkmodel_preset(const char *name, mkmodel_shape *s, char *err, size_t errlen);
/* "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k" (any case): the ftype or -1. */
int mkmodel_ftype_from_name(const char *name);
const char *mkmodel_ftype_name(int ftype); /* NULL if unknown */
/* Checks a shape for consistency (heads divide hidden, head_dim even, kv divides heads, at least
 * one layer, vocab in range...). Negative + err naming the field, value and limit. */
int mkmodel_check_shape(const mkmodel_shape *s, char *err, size_t errlen);
/* Writes the model to path. Tensor types are llama-quantize's for the file type (quant_mix_plan:
 * token_embd Q6_K in q4_0/k-quant files, Q6_K for some attn_v/ffn_down in *_k_m, norms and the
 * conv kernel F32, rows that hold no whole block fall back like llama.cpp, then to F16).
 * Deterministic: the same opts give the same bytes. Generates each tensor while writing, so memory
 * stays small for any size. Negative + err on error. */
int mkmodel_write(const mkmodel_opts *o, const char *path, char *err, size_t errlen);

/* The built-in training text (synth/corpus.c), as one malloc'd NUL-terminated string the
 * caller frees; *len gets its length. NULL on allocation failure. */
char *mkmodel_corpus(size_t *len);

/* The LFM2 chat template mkmodel writes as tokenizer.chat_template (a static string). */
const char *mkmodel_chat_template(void);
/* A published template family's text (static): "lfm2" (= mkmodel_chat_template; also for NULL),
 * "lfm2.5", "lfm2.5-dated"; NULL for another name. */
const char *mkmodel_chat_template_named(const char *family);

#endif
