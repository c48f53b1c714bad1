/* test_sample.c: each sampler stage on hand-made logits, penalties, seeded determinism, log-probs. */
#include <math.h>

#include "engine/sample.h"
#include "tests/check.h"

static sample_params greedy(void) {
    sample_params p;
    sample_params_default(&p);
    p.temperature = 0;
    return p;
}

static int32_t pick(const sample_params *p, const float *l, int n, const int32_t *hist, int nh) {
    sampler *s;
    char err[256];
    if (sampler_new(&s, n, p, err, sizeof err) < 0) {
        fprintf(stderr, "sampler_new: %s\n", err);
        return -99;
    }
    for (int i = 0; i < nh; i++) sampler_accept(s, hist[i]);
    int32_t id = sampler_sample(s, l, NULL);
    sampler_free(s);
    return id;
}

/* Fraction of n draws (one sampler, consecutive draws) that pick each id. */
static void histogram(const sample_params *p, const float *l, int nv, int n, double *freq) {
    sampler *s;
    char err[256];
    for (int i = 0; i < nv; i++) freq[i] = 0;
    if (sampler_new(&s, nv, p, err, sizeof err) < 0) {
        fprintf(stderr, "sampler_new: %s\n", err);
        return;
    }
    for (int i = 0; i < n; i++) freq[sampler_sample(s, l, NULL)] += 1.0 / n;
    sampler_free(s);
}

static void test_greedy_and_bias(void) {
    float l[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, 0.0f};
    sample_params p = greedy();
    CHECK_EQ_INT(pick(&p, l, 6, NULL, 0), 1); /* tie 1/3: lowest id */
    sample_bias b[2] = {{1, -INFINITY}, {3, -0.2f}};
    p.bias = b;
    p.n_bias = 2;
    CHECK_EQ_INT(pick(&p, l, 6, NULL, 0), 4);
    sample_bias up = {5, 10.0f};
    p.bias = &up;
    p.n_bias = 1;
    CHECK_EQ_INT(pick(&p, l, 6, NULL, 0), 5);
    /* banned token never drawn at temperature 1 */
    sample_params q;
    sample_params_default(&q);
    q.temperature = 1;
    q.top_k = 0, q.top_p = 1, q.min_p = 0;
    sample_bias ban = {1, -INFINITY};
    q.bias = &ban, q.n_bias = 1;
    double f[6];
    histogram(&q, l, 6, 3000, f);
    CHECK(f[1] == 0);
    CHECK(f[3] > 0.2);
}

static void test_penalties(void) {
    sample_params p = greedy();
    float l[4] = {2.0f, 1.9f, 0.0f, -5.0f};
    int32_t h0[1] = {0};
    p.repeat_penalty = 1.1f; /* 2/1.1 = 1.82 < 1.9 */
    CHECK_EQ_INT(pick(&p, l, 4, h0, 1), 1);
    p.repeat_penalty = 1.02f; /* 1.96 > 1.9 */
    CHECK_EQ_INT(pick(&p, l, 4, h0, 1), 0);
    float n[3] = {-1.0f, -1.05f, -9.0f}; /* negative logit is multiplied */
    p.repeat_penalty = 1.1f;
    CHECK_EQ_INT(pick(&p, n, 3, h0, 1), 1);
    p.repeat_penalty = 1.0f;
    CHECK_EQ_INT(pick(&p, n, 3, h0, 1), 0);

    float m[3] = {2.0f, 1.5f, 0.0f};
    int32_t h2[2] = {0, 0};
    p = greedy();
    p.frequency_penalty = 0.3f; /* 2 - 2*0.3 = 1.4 < 1.5 */
    CHECK_EQ_INT(pick(&p, m, 3, h2, 2), 1);
    p.frequency_penalty = 0.2f; /* 1.6 */
    CHECK_EQ_INT(pick(&p, m, 3, h2, 2), 0);
    p.frequency_penalty = 0;
    p.presence_penalty = 0.4f; /* once, whatever the count: 1.6 */
    CHECK_EQ_INT(pick(&p, m, 3, h2, 2), 0);
    p.presence_penalty = 0.6f; /* 1.4 */
    CHECK_EQ_INT(pick(&p, m, 3, h2, 2), 1);
    /* window: token 0 falls out of the last 2 */
    int32_t h3[3] = {0, 2, 2};
    p.penalty_last_n = 2;
    CHECK_EQ_INT(pick(&p, m, 3, h3, 3), 0);
    p.penalty_last_n = 3;
    CHECK_EQ_INT(pick(&p, m, 3, h3, 3), 1);
    p.penalty_last_n = 0; /* off */
    CHECK_EQ_INT(pick(&p, m, 3, h3, 3), 0);
}

static void test_filters(void) {
    /* probabilities 0.5 0.3 0.2 */
    float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    sample_params p;
    sample_params_default(&p);
    p.temperature = 1, p.top_k = 0, p.top_p = 1, p.min_p = 0, p.seed = 7;
    double f[3];
    histogram(&p, l, 3, 20000, f);
    CHECK_NEAR(f[0], 0.5, 0.02);
    CHECK_NEAR(f[1], 0.3, 0.02);
    CHECK_NEAR(f[2], 0.2, 0.02);

    p.top_k = 1;
    histogram(&p, l, 3, 2000, f);
    CHECK_NEAR(f[0], 1.0, 1e-9);
    p.top_k = 2;
    histogram(&p, l, 3, 20000, f);
    CHECK(f[2] == 0);
    CHECK_NEAR(f[0], 0.625, 0.02);

    p.top_k = 0;
    p.top_p = 0.6f; /* 0.5 < 0.6 <= 0.8: keeps two */
    histogram(&p, l, 3, 20000, f);
    CHECK(f[2] == 0);
    CHECK_NEAR(f[0], 0.625, 0.02);
    p.top_p = 0.5f; /* cumulative 0.5 reaches 0.5 with one */
    histogram(&p, l, 3, 2000, f);
    CHECK_NEAR(f[0], 1.0, 1e-9);

    p.top_p = 1;
    p.min_p = 0.5f; /* keeps p >= 0.25 */
    histogram(&p, l, 3, 20000, f);
    CHECK(f[2] == 0);
    CHECK_NEAR(f[1], 0.375, 0.02);
    p.min_p = 0.61f; /* keeps only 0 */
    histogram(&p, l, 3, 2000, f);
    CHECK_NEAR(f[0], 1.0, 1e-9);

    /* temperature 0.5 squares the odds: 25:9:4 */
    p.min_p = 0;
    p.temperature = 0.5f;
    histogram(&p, l, 3, 30000, f);
    CHECK_NEAR(f[0], 25.0 / 38, 0.02);
    CHECK_NEAR(f[2], 4.0 / 38, 0.015);
    /* temperature 2 flattens: sqrt odds */
    p.temperature = 2.0f;
    histogram(&p, l, 3, 30000, f);
    double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.2);
    CHECK_NEAR(f[0], sqrt(0.5) / z, 0.02);
    CHECK_NEAR(f[2], sqrt(0.2) / z, 0.02);
}

/* top-p over a large vocab (the nucleus outgrows the first partial sort): exactly the tokens of
 * the reference nucleus (full sort) are drawn, up to its last member. */
static void test_top_p_large(void) {
    enum { V = 1000 };
    static float l[V];
    static int rank_of[V];
    for (int i = 0; i < V; i++) rank_of[i] = i;
    unsigned x = 3;
    for (int i = V - 1; i > 0; i--) { /* shuffle ranks over ids */
        x = x * 1103515245u + 12345u;
        int j = (int)((x >> 8) % (unsigned)(i + 1)), t = rank_of[i];
        rank_of[i] = rank_of[j], rank_of[j] = t;
    }
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(-0.004 * i);
    for (int id = 0; id < V; id++) l[id] = -0.004f * (float)rank_of[id];
    for (int t = 0; t < 2; t++) {
        float top_p = t ? 0.5f : 0.05f;
        int nucleus = 0;
        for (double cum = 0; cum < top_p; nucleus++) cum += exp(-0.004 * nucleus) / z;
        sample_params p;
        sample_params_default(&p);
        p.temperature = 1, p.top_k = 0, p.min_p = 0, p.top_p = top_p, p.seed = 3;
        static double f[V];
        histogram(&p, l, V, 40000, f);
        int max_rank = -1, outside = 0;
        for (int id = 0; id < V; id++)
            if (f[id] > 0) {
                if (rank_of[id] >= nucleus) outside++;
                if (rank_of[id] > max_rank) max_rank = rank_of[id];
            }
        CHECK(nucleus > 64 || t == 0);
        CHECK_EQ_INT(outside, 0);
        CHECK(max_rank >= nucleus - 3);
    }
}

static void test_seed(void) {
    enum { V = 1000, N = 200 };
    static float l[V];
    unsigned x = 1;
    for (int i = 0; i < V; i++) {
        x = x * 1103515245u + 12345u;
        l[i] = (float)((x >> 8) % 1000) / 250.0f;
    }
    sample_params p;
    sample_params_default(&p);
    p.temperature = 1.0f, p.top_k = 0, p.top_p = 1, p.min_p = 0;
    int32_t a[N], b[N], c[N];
    char err[256];
    for (int run = 0; run < 3; run++) {
        p.seed = run == 2 ? 43 : 42;
        sampler *s;
        if (sampler_new(&s, V, &p, err, sizeof err) < 0) {
            CHECK(!"sampler_new");
            return;
        }
        int32_t *o = run == 0 ? a : run == 1 ? b : c;
        for (int i = 0; i < N; i++) o[i] = sampler_sample(s, l, NULL);
        sampler_reset(s); /* reset re-seeds: the first draw repeats */
        CHECK_EQ_INT(sampler_sample(s, l, NULL), o[0]);
        sampler_free(s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
}

static void test_logprobs(void) {
    float l[5] = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
    double z = 0;
    for (int i = 0; i < 5; i++) z += exp(l[i]);
    sample_params p = greedy();
    p.n_top = 3;
    sample_bias b = {2, 5.0f}; /* bias changes the choice, not the reported distribution */
    p.bias = &b, p.n_bias = 1;
    sampler *s;
    char err[256];
    CHECK(sampler_new(&s, 5, &p, err, sizeof err) == 0);
    sample_result r;
    CHECK_EQ_INT(sampler_sample(s, l, &r), 2);
    CHECK_EQ_INT(r.id, 2);
    CHECK_NEAR(r.logprob, 2.0 - log(z), 1e-5);
    CHECK_EQ_INT(r.n_top, 3);
    CHECK_EQ_INT(r.top_id[0], 1);
    CHECK_EQ_INT(r.top_id[1], 3);
    CHECK_EQ_INT(r.top_id[2], 2);
    CHECK_NEAR(r.top_logprob[0], 3.0 - log(z), 1e-5);
    CHECK_NEAR(r.top_logprob[2], 2.0 - log(z), 1e-5);
    sampler_free(s);
    /* top-n on a larger random vector agrees with a full scan */
    enum { V = 3000 };
    static float big[V];
    unsigned x = 9;
    for (int i = 0; i < V; i++) {
        x = x * 1664525u + 1013904223u;
        big[i] = (float)(x >> 9) / (float)(1 << 23) * 10.0f;
    }
    int32_t ids[SAMPLE_MAX_TOP];
    float lp[SAMPLE_MAX_TOP];
    sample_top_logprobs(big, V, SAMPLE_MAX_TOP, ids, lp);
    for (int k = 0; k < SAMPLE_MAX_TOP; k++) {
        int greater = 0;
        for (int i = 0; i < V; i++) greater += big[i] > big[ids[k]];
        CHECK_EQ_INT(greater, k);
        CHECK_NEAR(lp[k], sample_logprob(big, V, ids[k]), 1e-6);
    }
}

static void test_validation(void) {
    sample_params p;
    sampler *s;
    char err[256] = "";
    sample_params_default(&p);
    sample_bias b = {10, 1.0f};
    p.bias = &b, p.n_bias = 1;
    CHECK(sampler_new(&s, 10, &p, err, sizeof err) < 0);
    CHECK(strstr(err, "logit_bias") && strstr(err, "10"));
    sample_params_default(&p);
    p.n_top = SAMPLE_MAX_TOP + 1;
    CHECK(sampler_new(&s, 10, &p, err, sizeof err) < 0);
    CHECK(strstr(err, "n_top") != NULL);
    sample_params_default(&p);
    p.min_p = 1.5f;
    CHECK(sampler_new(&s, 10, &p, err, sizeof err) < 0);
    CHECK(strstr(err, "min_p") != NULL);
    /* every message states the range its check enforces */
    sample_params_default(&p);
    p.top_p = 1e9f;
    CHECK(sampler_new(&s, 10, &p, err, sizeof err) < 0);
    CHECK(strstr(err, "top_p") && strstr(err, "[0, 1]"));
    p.top_p = 1;
    CHECK_EQ_INT(sample_params_check(&p, 10, err, sizeof err), 0);
    p.temperature = -5; /* greedy */
    CHECK_EQ_INT(sample_params_check(&p, 10, err, sizeof err), 0);
    p.temperature = 2e4f;
    CHECK(sampler_new(&s, 10, &p, err, sizeof err) < 0);
    CHECK(strstr(err, "temperature") && strstr(err, "<= 10000"));
    sampler_free(NULL);
}

/* sample_argmax is the scalar loop's answer on every length (block remainders), with ties,
 * NaNs (never chosen; a NaN first entry wins by default), -0.0 against 0.0 and infinities. */
static int argmax_ref(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void test_argmax(void) {
    enum { N = 300 };
    float x[N];
    uint64_t r = 12345;
    int bad = 0;
    for (int trial = 0; trial < 4000; trial++) {
        int n = 1 + trial % N;
        for (int i = 0; i < n; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            int k = (int)(r >> 33) % 16; /* few distinct values: many ties */
            x[i] = (float)(k - 8);
            if (trial % 5 == 1 && k == 3) x[i] = NAN;
            if (trial % 7 == 2 && k == 8) x[i] = -0.0f;
            if (trial % 7 == 3 && k < 2) x[i] = -INFINITY;
            if (trial % 11 == 4 && k == 15) x[i] = INFINITY;
        }
        if (trial % 13 == 5) x[0] = NAN;
        if (trial % 17 == 6)
            for (int i = 0; i < n; i++) x[i] = i % 2 ? 0.0f : -0.0f;
        if (trial % 19 == 7) x[n - 1] = 100.0f; /* the max in the scalar tail */
        if (sample_argmax(x, n) != argmax_ref(x, n)) {
            if (!bad++)
                fprintf(stderr, "argmax: n %d got %d want %d\n", n, sample_argmax(x, n),
                        argmax_ref(x, n));
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(sample_argmax(x, 0), 0);
    float big[65536];
    for (int i = 0; i < 65536; i++) big[i] = (float)((i * 7919) % 65521) * 1e-3f;
    CHECK_EQ_INT(sample_argmax(big, 65536), argmax_ref(big, 65536));
}

/* Greedy with logit biases (the server's usual request: temperature 0, a few biased ids) equals
 * the argmax of the biased logits, whether or not a bias hits the raw maximum, with duplicate
 * ids (biases add up in order), bans and ties. */
static void test_greedy_bias_sparse(void) {
    enum { V = 500 };
    float l[V], w[V];
    uint64_t r = 777;
    int bad = 0;
    for (int trial = 0; trial < 3000; trial++) {
        for (int i = 0; i < V; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            l[i] = (float)((int)(r >> 33) % 64) * 0.25f; /* many ties */
        }
        sample_bias b[6];
        int nb = trial % 7;
        int top = argmax_ref(l, V);
        for (int k = 0; k < nb && k < 6; k++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            int id = (int)(r >> 33) % V;
            if (k == 0 && trial % 3 == 0) id = top;              /* bias the raw maximum */
            if (k == 1 && trial % 5 == 0) id = b[0].id;          /* a duplicate id */
            float bias = (float)((int)(r >> 40) % 9 - 4) * 0.25f; /* -1 .. +1: ties happen */
            if (k == 2 && trial % 4 == 0) bias = -INFINITY;       /* a ban */
            b[k] = (sample_bias){id, bias};
        }
        memcpy(w, l, sizeof w);
        for (int k = 0; k < nb && k < 6; k++) w[b[k].id] += b[k].bias;
        sample_params p = greedy();
        p.bias = b;
        p.n_bias = nb < 6 ? nb : 6;
        int got = pick(&p, l, V, NULL, 0), want = argmax_ref(w, V);
        if (got != want && bad++ < 3) fprintf(stderr, "greedy bias: trial %d got %d want %d\n", trial, got, want);
    }
    CHECK_EQ_INT(bad, 0);
}

int main(void) {
    test_argmax();
    test_greedy_bias_sparse();
    test_greedy_and_bias();
    test_penalties();
    test_filters();
    test_top_p_large();
    test_seed();
    test_logprobs();
    test_validation();
    return check_done("test_sample");
}
