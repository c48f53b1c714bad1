/* sample.c: bias, penalties, top-k/top-p/min-p, temperature and a seeded draw, as llama.cpp does. */
#include "engine/util.h"
#include "engine/cpu.h"
#include "engine/rng.h"
#include "engine/sample.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    int32_t id;
    float logit;
} cand;

struct sampler {
    sample_params p;
    sample_bias *bias; /* [n_bias], own copy */
    int n_vocab;
    int32_t *recent;   /* ring of the last penalty_last_n accepted tokens */
    int n_recent, recent_head;
    uint64_t rng[4];   /* xoshiro256** state */
    float *work;       /* [n_vocab] logits after bias and penalties */
    cand *cands;       /* [n_vocab] */
};

void sample_params_default(sample_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->penalty_last_n = 64;
    p->seed = 0;
}

void sampler_reset(sampler *s) {
    s->n_recent = s->recent_head = 0;
    rng_xoshiro_seed(s->rng, s->p.seed);
}

int sample_params_check(const sample_params *p, int n_vocab, char *err, size_t errlen) {
    if (n_vocab < 1) return util_fail(err, errlen, -1, "n_vocab %d, need >= 1", n_vocab);
    if (!(p->temperature <= 1e4f)) /* <= 0 is greedy */
        return util_fail(err, errlen, -1, "temperature %g is not a number <= 10000", (double)p->temperature);
    if (!(p->top_p >= 0) || p->top_p > 1)
        return util_fail(err, errlen, -1, "top_p %g outside [0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0) || p->min_p > 1)
        return util_fail(err, errlen, -1, "min_p %g outside [0, 1]", (double)p->min_p);
    if (!(p->repeat_penalty > 0) || p->repeat_penalty > 1e4f)
        return util_fail(err, errlen, -1, "repeat_penalty %g outside (0, 10000]", (double)p->repeat_penalty);
    if (!(fabsf(p->presence_penalty) <= 1e4f) || !(fabsf(p->frequency_penalty) <= 1e4f))
        return util_fail(err, errlen, -1, "presence/frequency penalty outside [-10000, 10000]");
    if (p->penalty_last_n < 0 || p->penalty_last_n > 1 << 20)
        return util_fail(err, errlen, -1, "penalty_last_n %d outside [0, %d]", p->penalty_last_n, 1 << 20);
    if (p->n_top < 0 || p->n_top > SAMPLE_MAX_TOP)
        return util_fail(err, errlen, -1, "n_top %d outside [0, %d]", p->n_top, SAMPLE_MAX_TOP);
    if (p->n_bias < 0 || (p->n_bias > 0 && !p->bias))
        return util_fail(err, errlen, -1, "n_bias %d without a bias array", p->n_bias);
    for (int i = 0; i < p->n_bias; i++) {
        if (p->bias[i].id < 0 || p->bias[i].id >= n_vocab)
            return util_fail(err, errlen, -1, "logit_bias[%d]: token id %d outside [0, %d)", i,
                        p->bias[i].id, n_vocab);
        if (p->bias[i].bias != p->bias[i].bias)
            return util_fail(err, errlen, -1, "logit_bias[%d]: bias is NaN", i);
    }
    return 0;
}

int sampler_new(sampler **out, int n_vocab, const sample_params *p, char *err, size_t errlen) {
    *out = NULL;
    if (sample_params_check(p, n_vocab, err, errlen) < 0) return -1;
    sampler *s = calloc(1, sizeof *s);
    if (!s) return util_fail(err, errlen, -1, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->bias = malloc(((size_t)p->n_bias + 1) * sizeof *s->bias);
    s->recent = malloc(((size_t)p->penalty_last_n + 1) * sizeof *s->recent);
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    if (!s->bias || !s->recent || !s->work || !s->cands) {
        sampler_free(s);
        return util_fail(err, errlen, -1, "out of memory for a sampler over %d tokens", n_vocab);
    }
    if (p->n_bias) memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof *s->bias);
    s->p.bias = s->bias;
    sampler_reset(s);
    *out = s;
    return 0;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->bias);
    free(s->recent);
    free(s->work);
    free(s->cands);
    free(s);
}

void sampler_accept(sampler *s, int32_t id) {
    int n = s->p.penalty_last_n;
    if (n <= 0) return;
    s->recent[s->recent_head] = id;
    s->recent_head = (s->recent_head + 1) % n;
    if (s->n_recent < n) s->n_recent++;
}

/* Better = higher logit, ties to the lower id (deterministic order). */
static int better(const cand *a, const cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *x, const void *y) {
    const cand *a = x, *b = y;
    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

/* Moves the k best of c[0..n) to the front (unordered), expected O(n). */
static void select_top(cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        cand pivot = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (better(&c[i], &pivot)) i++;
            while (better(&pivot, &c[j])) j--;
            if (i <= j) {
                cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++, j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

static double logsumexp(const float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    if (mx == -INFINITY) return -INFINITY;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + log(sum);
}

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

/* One pass: each lane keeps its largest value and where it first saw it (strict >, lanes start
 * at x[0], index 0: `v > m` is false for NaN on either side, so NaNs are skipped, and a NaN x[0]
 * stays every lane's value, nothing equals it and the answer is 0, as the scalar loop gives);
 * then the first index among the lanes holding the maximum (-0.0 == 0.0: the earlier of
 * either, like the scalar loop), then the tail. */
static inline __attribute__((always_inline)) int32_t argmax_body(const float *x, int n) {
    v16f m;
    v16i at, cur;
    for (int j = 0; j < 16; j++) m[j] = x[0], at[j] = 0, cur[j] = j;
    int i = 0;
    for (; i + 16 <= n; i += 16, cur += 16) {
        v16f v;
        memcpy(&v, x + i, sizeof v);
        v16i gt = v > m;
        m = (v16f)(((v16i)v & gt) | ((v16i)m & ~gt));
        at = (cur & gt) | (at & ~gt);
    }
    float mx = x[0];
    for (int j = 0; j < 16; j++) mx = m[j] > mx ? m[j] : mx;
    int32_t best = 0;
    if (mx == mx) {
        best = INT32_MAX;
        for (int j = 0; j < 16; j++)
            if (m[j] == mx && at[j] < best) best = at[j];
    }
    for (; i < n; i++)
        if (x[i] > mx) mx = x[i], best = i;
    return best;
}

static int32_t argmax_base(const float *x, int n) {
    return argmax_body(x, n);
}

/* The scalar twin, the definition of the answer. */
static int32_t argmax_scalar(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static int32_t argmax_512(const float *x, int n) {
    return argmax_body(x, n);
}
#endif

int32_t sample_argmax(const float *x, int n) {
    if (n <= 0) return 0;
    const cpu_level lvl = cpu_level_best();
#if defined(__x86_64__) && defined(__GNUC__)
    if (lvl == CPU_AVX512) {
        cpu_ran(CPU_SITE_ARGMAX, CPU_AVX512);
        return argmax_512(x, n);
    }
#endif
    if (lvl == CPU_SCALAR) {
        cpu_ran(CPU_SITE_ARGMAX, CPU_SCALAR);
        return argmax_scalar(x, n);
    }
    cpu_ran(CPU_SITE_ARGMAX, CPU_BASE);
    return argmax_base(x, n);
}

float sample_logprob(const float *logits, int n_vocab, int32_t id) {
    return (float)(logits[id] - logsumexp(logits, n_vocab));
}

void sample_top_logprobs(const float *logits, int n_vocab, int n, int32_t *ids, float *lp) {
    if (n > n_vocab) n = n_vocab;
    double lse = logsumexp(logits, n_vocab);
    int have = 0;
    for (int i = 0; i < n_vocab; i++) {
        cand c = {i, logits[i]};
        if (have == n) {
            cand last = {ids[n - 1], logits[ids[n - 1]]};
            if (!better(&c, &last)) continue;
            have--;
        }
        int j = have++;
        while (j > 0) {
            cand prev = {ids[j - 1], logits[ids[j - 1]]};
            if (!better(&c, &prev)) break;
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    for (int i = 0; i < n; i++) lp[i] = (float)(logits[ids[i]] - lse);
}

static void apply_penalties(sampler *s) {
    const sample_params *p = &s->p;
    if (p->penalty_last_n <= 0 || s->n_recent == 0) return;
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f)
        return;
    int n = s->n_recent, cap = p->penalty_last_n;
    int start = (s->recent_head - n + cap) % cap;
    for (int i = 0; i < n; i++) {
        int32_t id = s->recent[(start + i) % cap];
        if (id < 0 || id >= s->n_vocab) continue;
        int seen = 0, count = 0;
        for (int j = 0; j < n; j++) {
            int32_t o = s->recent[(start + j) % cap];
            if (o == id) {
                if (j < i) seen = 1;
                count++;
            }
        }
        if (seen) continue; /* each distinct token once */
        float *l = &s->work[id];
        if (*l <= 0) *l *= p->repeat_penalty;
        else *l /= p->repeat_penalty;
        *l -= (float)count * p->frequency_penalty + (float)(count > 0) * p->presence_penalty;
    }
}

/* Whether the penalties would change any logit (apply_penalties' own early outs). */
static bool penalties_active(const sampler *s) {
    const sample_params *p = &s->p;
    return p->penalty_last_n > 0 && s->n_recent > 0 &&
           (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f ||
            p->frequency_penalty != 0.0f);
}

/* Greedy without penalties: the argmax of logits + bias without copying n_vocab floats. The raw
 * argmax m is the answer unless a biased id beats it (or ties it from a lower index); when m
 * itself is biased, or logits[0] is NaN (the scalar loop's corner), -1: take the full path. */
static int32_t greedy_sparse(const sampler *s, const float *logits) {
    if (logits[0] != logits[0]) return -1;
    const int32_t m = sample_argmax(logits, s->n_vocab);
    int32_t best = m;
    float bv = logits[m];
    for (int i = 0; i < s->p.n_bias; i++)
        if (s->p.bias[i].id == m) return -1;
    for (int i = 0; i < s->p.n_bias; i++) {
        int32_t id = s->p.bias[i].id;
        /* the same id may appear twice: its value is the sum of its biases */
        float v = logits[id];
        for (int k = 0; k < s->p.n_bias; k++)
            if (s->p.bias[k].id == id) v += s->p.bias[k].bias;
        if (v > bv || (v == bv && id < best)) best = id, bv = v;
    }
    return best;
}

/* top-k, top-p, min-p, temperature and the draw over the n candidates in s->cands (n >= 1). */
static int32_t pick(sampler *s, int n) {
    const sample_params *p = &s->p;
    bool sorted = false;
    if (p->top_k > 0 && p->top_k < n) {
        select_top(s->cands, n, p->top_k);
        n = p->top_k;
    }
    if (p->top_p < 1.0f) {
        /* the nucleus is usually small: sort only the best k, growing k until it holds p */
        float mx = -INFINITY;
        for (int i = 0; i < n; i++)
            if (s->cands[i].logit > mx) mx = s->cands[i].logit;
        double sum = 0;
        for (int i = 0; i < n; i++) sum += exp((double)s->cands[i].logit - mx);
        int keep = n;
        for (int k = 64;; k *= 4) {
            if (k >= n) k = n;
            else select_top(s->cands, n, k);
            qsort(s->cands, (size_t)k, sizeof *s->cands, cand_cmp);
            double cum = 0;
            int found = 0;
            for (int i = 0; i < k && !found; i++) {
                cum += exp((double)s->cands[i].logit - mx) / sum;
                if (cum >= p->top_p) keep = i + 1, found = 1;
            }
            if (found || k == n) break;
        }
        n = keep;
        sorted = true;
    }
    if (p->min_p > 0.0f && n > 1) {
        float mx = -INFINITY;
        for (int i = 0; i < n; i++)
            if (s->cands[i].logit > mx) mx = s->cands[i].logit;
        float thr = mx + logf(p->min_p);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (s->cands[i].logit >= thr) s->cands[m++] = s->cands[i];
        n = m > 0 ? m : 1;
    }
    if (!sorted) qsort(s->cands, (size_t)n, sizeof *s->cands, cand_cmp);
    double mx = s->cands[0].logit / p->temperature, sum = 0;
    for (int i = 0; i < n; i++) sum += exp(s->cands[i].logit / p->temperature - mx);
    double u = rng_xoshiro_uniform(s->rng) * sum, cum = 0;
    int32_t chosen = s->cands[n - 1].id;
    for (int i = 0; i < n; i++) {
        cum += exp(s->cands[i].logit / p->temperature - mx);
        if (u < cum) {
            chosen = s->cands[i].id;
            break;
        }
    }
    return chosen;
}

int32_t sampler_sample(sampler *s, const float *logits, sample_result *res) {
    const sample_params *p = &s->p;
    const int V = s->n_vocab;
    int32_t chosen = 0;
    if (p->temperature <= 0 && !penalties_active(s) && (chosen = greedy_sparse(s, logits)) >= 0)
        goto done;
    chosen = 0;
    memcpy(s->work, logits, (size_t)V * sizeof(float));
    for (int i = 0; i < p->n_bias; i++) s->work[p->bias[i].id] += p->bias[i].bias;
    apply_penalties(s);

    if (p->temperature <= 0) {
        chosen = sample_argmax(s->work, V);
    } else {
        int n = 0;
        for (int i = 0; i < V; i++)
            if (s->work[i] > -INFINITY) s->cands[n++] = (cand){i, s->work[i]};
        if (n == 0) { /* everything banned: fall back to the raw argmax */
            chosen = sample_argmax(logits, V);
            goto done;
        }
        chosen = pick(s, n);
    }
done:
    if (res) {
        res->id = chosen;
        res->logprob = sample_logprob(logits, V, chosen);
        res->n_top = p->n_top < V ? p->n_top : V;
        if (res->n_top) sample_top_logprobs(logits, V, res->n_top, res->top_id, res->top_logprob);
    }
    return chosen;
}

int32_t sampler_sample_among(sampler *s, const float *logits, const int32_t *ids, int n_ids,
                             sample_result *res) {
    const sample_params *p = &s->p;
    /* work holds the raw logit of every token the steps below read or write: ids, the biased
     * ones and the penalty window (entries outside ids are written but never read) */
    for (int i = 0; i < n_ids; i++)
        s->work[ids[i]] = logits[ids[i]];
    bool pen = penalties_active(s);
    if (pen) {
        int nr = s->n_recent, cap = p->penalty_last_n;
        for (int i = 0; i < nr; i++) {
            int32_t id = s->recent[(s->recent_head - nr + i + cap) % cap];
            if (id >= 0 && id < s->n_vocab) s->work[id] = logits[id];
        }
    }
    for (int i = 0; i < p->n_bias; i++)
        s->work[p->bias[i].id] = logits[p->bias[i].id];
    for (int i = 0; i < p->n_bias; i++)
        s->work[p->bias[i].id] += p->bias[i].bias;
    if (pen) apply_penalties(s);
    int n = 0;
    for (int i = 0; i < n_ids; i++)
        if (s->work[ids[i]] > -INFINITY) s->cands[n++] = (cand){ids[i], s->work[ids[i]]};
    int32_t chosen;
    if (n == 0) { /* everything banned: the best of ids by raw logit */
        chosen = n_ids > 0 ? ids[0] : 0;
        for (int i = 1; i < n_ids; i++)
            if (logits[ids[i]] > logits[chosen] || (logits[ids[i]] == logits[chosen] && ids[i] < chosen))
                chosen = ids[i];
    } else if (p->temperature <= 0) {
        int b = 0;
        for (int i = 1; i < n; i++)
            if (better(&s->cands[i], &s->cands[b])) b = i;
        chosen = s->cands[b].id;
    } else {
        chosen = pick(s, n);
    }
    if (res) {
        const int V = s->n_vocab;
        res->id = chosen;
        res->logprob = sample_logprob(logits, V, chosen);
        res->n_top = p->n_top < V ? p->n_top : V;
        if (res->n_top) sample_top_logprobs(logits, V, res->n_top, res->top_id, res->top_logprob);
    }
    return chosen;
}
