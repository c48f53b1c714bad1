/* sample.h: next-token sampling with llama.cpp's semantics, per-sequence state, seeded RNG. */
#ifndef LFM2_SAMPLE_H
#define LFM2_SAMPLE_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define SAMPLE_MAX_TOP 20 /* most top log-probs a result can carry (OpenAI allows 20) */

typedef struct sample_bias {
    int32_t id;
    float bias; /* added to the logit; -INFINITY bans the token */
} sample_bias;

/* Applied in llama.cpp's order: logit bias, penalties, top-k, top-p, min-p, temperature, draw.
 * temperature <= 0 is greedy (argmax after bias and penalties). */
typedef struct sample_params {
    float temperature;       /* default 0.8; <= 0: greedy */
    int top_k;               /* default 40; <= 0: off */
    float top_p;             /* default 0.95; >= 1: off */
    float min_p;             /* default 0.05; <= 0: off */
    float repeat_penalty;    /* default 1 (off): logit > 0 divided by it, <= 0 multiplied */
    float presence_penalty;  /* default 0: subtracted once if the token occurs in the window */
    float frequency_penalty; /* default 0: subtracted once per occurrence in the window */
    int penalty_last_n;      /* window of recent tokens for the penalties; default 64, 0 = off */
    uint64_t seed;           /* RNG seed: same seed + same logits = same tokens */
    const sample_bias *bias; /* copied by sampler_new */
    int n_bias;
    int n_top;               /* top log-probs to report, 0..SAMPLE_MAX_TOP */
} sample_params;

typedef struct sample_result {
    int32_t id;      /* the chosen token */
    float logprob;   /* log-softmax of the raw logits (the model's distribution) at id */
    int n_top;       /* entries below, = params n_top (fewer only if n_vocab is smaller) */
    int32_t top_id[SAMPLE_MAX_TOP];   /* most probable tokens of the raw distribution, best first */
    float top_logprob[SAMPLE_MAX_TOP];
} sample_result;

typedef struct sampler sampler; /* one per sequence: params, recent tokens, RNG, scratch */

void sample_params_default(sample_params *p);

/* Checks p against n_vocab (bias ids, ranges) without allocating: 0, or negative with err naming
 * the field and its range. sampler_new accepts exactly the parameters this accepts. */
int sample_params_check(const sample_params *p, int n_vocab, char *err, size_t errlen);
/* Validates p (sample_params_check) and allocates the scratch (never again later).
 * Negative + err naming the field on bad parameters. */
int sampler_new(sampler **out, int n_vocab, const sample_params *p, char *err, size_t errlen);
void sampler_free(sampler *s); /* NULL is a no-op */
/* Records a token in the penalty window (call for prompt tokens too, as llama.cpp does). */
void sampler_accept(sampler *s, int32_t id);
void sampler_reset(sampler *s); /* forgets recent tokens, re-seeds the RNG from params */
/* Chooses the next token from n_vocab raw logits (not modified). Does NOT accept it: call
 * sampler_accept with res->id. Returns res->id. */
int32_t sampler_sample(sampler *s, const float *logits, sample_result *res);

/* sampler_sample restricted to the n_ids distinct tokens ids (the others as if banned): the same
 * bias, penalties, top-k, top-p, min-p, temperature and draw over the allowed ones, in O(n_ids +
 * n_bias + penalty window) instead of O(n_vocab). When bias bans all of them, the one of highest
 * raw logit. res (may be NULL) as sampler_sample: log-probs of the raw logits. */
int32_t sampler_sample_among(sampler *s, const float *logits, const int32_t *ids, int n_ids,
                             sample_result *res);

/* Log-softmax of logits at id, and the n best (id, log-prob) pairs (best first): helpers for
 * callers that score without sampling. */
void sample_top_logprobs(const float *logits, int n_vocab, int n, int32_t *ids, float *lp);
/* Greedy choice: the first index of the largest of x[0..n), as `if (x[i] > x[best]) best = i`
 * gives it (NaNs never win; 0 when n <= 0 or x[0] is NaN and nothing beats it), vectorized
 * at engine/cpu.h's level (a 65536-entry vocabulary per token per sequence is a visible share of
 * a decode step), that loop itself at CPU_SCALAR. */
int32_t sample_argmax(const float *x, int n);
float sample_logprob(const float *logits, int n_vocab, int32_t id);

#endif
