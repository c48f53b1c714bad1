/* fuzz_sample.c: libFuzzer harness: the sampler on any parameters, biases and logits. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/sample.h"
#include "tests/fuzz/fuzz.h"

/* Input: 16 parameter bytes, up to 8 biases of 3 bytes (count in the parameters), then bytes
 * that become logits (int8 / 8, repeated over the vocab with a per-step shift). The server
 * passes request values through to sample_params (logit_bias -100 as -INFINITY), so any of
 * them may arrive here. Checked on every draw: the id is in the vocab, never a banned token
 * while some token is not banned, greedy is the first argmax of logits + bias (when no penalty
 * is on), logprob and the top list are the raw distribution's, and a second sampler with the
 * same parameters and history draws the same tokens. */

static const float bias_values[] = {-INFINITY, -100, -1,  0,
                                    0.5f,      2,    100, 50}; /* as the server maps them */
static const float temps[] = {0, 0.8f, 1, 0.1f, 2, 1e-3f, 100, -1};

static uint8_t at(const uint8_t *d, size_t n, size_t i) {
    return i < n ? d[i] : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 16) return 0;
    int V = 1 + (data[0] | (data[1] & 7) << 8); /* 1..2048 */
    sample_params p;
    sample_params_default(&p);
    p.temperature = temps[data[2] & 7];
    p.top_k = data[3] & 0x80 ? 0 : data[3] % 50;
    p.top_p = data[4] >= 200 ? 1.0f : (float)data[4] / 200.0f;
    p.min_p = data[5] >= 128 ? 0.0f : (float)data[5] / 127.0f;
    bool penalties = data[6] & 1;
    if (penalties) {
        p.repeat_penalty = 0.5f + (float)(data[6] >> 1) / 32.0f;
        p.presence_penalty = (float)(int8_t)data[7] / 64.0f;
        p.frequency_penalty = (float)(int8_t)data[8] / 64.0f;
    }
    p.penalty_last_n = data[9] % 80;
    p.seed = (uint64_t)data[10] * 0x9E3779B97F4A7C15ull;
    p.n_top = data[11] % (SAMPLE_MAX_TOP + 1);
    int n_bias = data[12] % 9;
    int n_steps = 1 + data[13] % 4;
    int n_history = data[14] % 100;
    size_t pos = 16;
    sample_bias bias[8];
    for (int i = 0; i < n_bias; i++, pos += 3) {
        bias[i].id = (at(data, size, pos) | at(data, size, pos + 1) << 8) % V;
        bias[i].bias = bias_values[at(data, size, pos + 2) & 7];
    }
    p.bias = bias;
    p.n_bias = n_bias;
    const uint8_t *lb = data + (pos < size ? pos : size);
    size_t nl = pos < size ? size - pos : 0;

    sampler *s1 = NULL, *s2 = NULL;
    char err[256];
    err[0] = 0;
    if (sampler_new(&s1, V, &p, err, sizeof err) < 0) {
        FUZZ_CHECK(s1 == NULL && err[0]);
        return 0;
    }
    FUZZ_CHECK(sampler_new(&s2, V, &p, err, sizeof err) == 0);
    for (int i = 0; i < n_history; i++) { /* the prompt's tokens, as the scheduler feeds them */
        int32_t id = (int32_t)((i * 7 + data[15]) % V);
        sampler_accept(s1, id);
        sampler_accept(s2, id);
    }
    float *logits = malloc((size_t)V * sizeof *logits), *work = malloc((size_t)V * sizeof *work);
    FUZZ_CHECK(logits && work);
    for (int step = 0; step < n_steps; step++) {
        for (int i = 0; i < V; i++)
            logits[i] = nl ? (float)(int8_t)lb[(size_t)(i + step * 13) % nl] / 8.0f : 0.0f;
        memcpy(work, logits, (size_t)V * sizeof *work);
        for (int i = 0; i < n_bias; i++)
            work[bias[i].id] += bias[i].bias;
        bool any_allowed = false;
        for (int i = 0; i < V; i++)
            if (work[i] > -INFINITY) any_allowed = true;

        sample_result r1, r2;
        memset(&r1, 0xAB, sizeof r1);
        int32_t id = sampler_sample(s1, logits, &r1);
        FUZZ_CHECK(sampler_sample(s2, logits, &r2) == id); /* same seed, same history */
        FUZZ_CHECK(id >= 0 && id < V && r1.id == id);
        if (!penalties && p.temperature <= 0) { /* greedy: first argmax of logits + bias */
            for (int i = 0; i < V; i++)
                FUZZ_CHECK(i < id ? work[i] < work[id] : work[i] <= work[id]);
        }
        if (any_allowed && !(p.temperature <= 0 && penalties)) FUZZ_CHECK(work[id] > -INFINITY);
        FUZZ_CHECK(r1.logprob == sample_logprob(logits, V, id));
        FUZZ_CHECK(r1.logprob <= 1e-5f);
        FUZZ_CHECK(r1.n_top == (p.n_top < V ? p.n_top : V));
        for (int i = 0; i < r1.n_top; i++) {
            FUZZ_CHECK(r1.top_id[i] >= 0 && r1.top_id[i] < V);
            FUZZ_CHECK(r1.top_logprob[i] <= 1e-5f);
            FUZZ_CHECK(r1.top_logprob[i] == sample_logprob(logits, V, r1.top_id[i]));
            if (i > 0) {
                FUZZ_CHECK(r1.top_logprob[i] <= r1.top_logprob[i - 1]);
                for (int j = 0; j < i; j++)
                    FUZZ_CHECK(r1.top_id[j] != r1.top_id[i]);
            }
        }
        /* the top list holds the most probable tokens: nothing outside it is more probable */
        if (r1.n_top > 0)
            for (int i = 0; i < V; i++) {
                bool in_top = false;
                for (int j = 0; j < r1.n_top; j++)
                    in_top |= r1.top_id[j] == i;
                FUZZ_CHECK(in_top || logits[i] <= logits[r1.top_id[r1.n_top - 1]]);
            }
        sampler_accept(s1, id);
        sampler_accept(s2, id);
    }
    /* reset: history forgotten, RNG back to the seed: draws like a new sampler */
    sampler *s3 = NULL;
    FUZZ_CHECK(sampler_new(&s3, V, &p, err, sizeof err) == 0);
    sampler_reset(s1);
    for (int i = 0; i < V; i++)
        logits[i] = nl ? (float)(int8_t)lb[(size_t)i % nl] / 8.0f : 0.0f;
    FUZZ_CHECK(sampler_sample(s1, logits, NULL) == sampler_sample(s3, logits, NULL));
    sampler_free(s3);
    free(logits);
    free(work);
    sampler_free(s1);
    sampler_free(s2);
    sampler_free(NULL);
    return 0;
}
