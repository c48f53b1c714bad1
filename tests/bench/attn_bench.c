/* attn_bench.c: by-hand micro-benchmark of attention over the f16 cache (engine/attn.c), per path.
 *
 * Build and run:
 *   make build/attn_bench && build/attn_bench [depth] [repetitions]
 * Shapes of the 350M model (head dim 64, 8 KV heads, 2 query heads each): a prefill of depth
 * tokens in the engine's units (4 tokens x 2 heads = 8 queries a call, every KV head), and decode
 * at depth (2 queries a call, each KV head, 50 steps). Prints the best of the repetitions in ms
 * and ns per (query, key) pair, for each path this CPU supports. The cache (8 heads x 4096
 * positions) is larger than L2, as a layer's is in the engine. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/attn.h"
#include "engine/cpu.h"

enum { HD = 64, HEADS = 8, N_CTX = 4096 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One pass: prefill (tt 4) or decode (tt 1) at depth; returns the (query, key) pairs computed. */
static double pass(const uint16_t *K, const uint16_t *V, const float *q, float *out, float *scratch,
                   int depth, int tt, attn_isa isa) {
    const size_t per = (size_t)N_CTX * HD;
    double pairs = 0;
    for (int h = 0; h < HEADS; h++) {
        attn_kv kv = {K + h * per, V + h * per, HD, HD, 0, 0.125f};
        attn_query qs[ATTN_MAX_Q];
        if (tt > 1) {
            for (int p0 = 0; p0 < depth; p0 += tt) {
                int n = 0;
                for (int t = 0; t < tt; t++)
                    for (int g = 0; g < 2; g++, n++) {
                        qs[n] = (attn_query){q + n * HD, out + n * HD, p0 + t};
                        pairs += p0 + t + 1;
                    }
                attn_run(&kv, qs, n, scratch, isa);
            }
        } else {
            for (int step = 0; step < 50; step++) {
                for (int n = 0; n < 2; n++)
                    qs[n] = (attn_query){q + n * HD, out + n * HD, depth - 1};
                attn_run(&kv, qs, 2, scratch, isa);
                pairs += 2.0 * depth;
            }
        }
    }
    return pairs;
}

int main(int argc, char **argv) {
    const int depth = argc > 1 ? atoi(argv[1]) : 512, reps = argc > 2 ? atoi(argv[2]) : 15;
    if (depth < 1 || depth > N_CTX - ATTN_MAX_Q || reps < 1) {
        fprintf(stderr, "usage: attn_bench [depth 1..%d] [repetitions]\n", N_CTX - ATTN_MAX_Q);
        return 2;
    }
    const size_t per = (size_t)N_CTX * HD;
    uint16_t *K = malloc(per * HEADS * sizeof *K), *V = malloc(per * HEADS * sizeof *V);
    float *f = malloc(per * sizeof *f), q[ATTN_MAX_Q * HD], out[ATTN_MAX_Q * HD];
    float *scratch = malloc(attn_scratch_floats(N_CTX) * sizeof(float));
    if (!K || !V || !f || !scratch) return 1;
    uint64_t r = 88172645463325252ull;
    for (size_t i = 0; i < per; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        f[i] = (float)((r >> 40) * (1.0 / 8388608.0)) - 1.0f;
    }
    for (int h = 0; h < HEADS; h++) {
        attn_store(K + h * per, f, (int)per, ATTN_ISA_AUTO);
        attn_store(V + h * per, f, (int)per, ATTN_ISA_AUTO);
    }
    for (int i = 0; i < ATTN_MAX_Q * HD; i++)
        q[i] = 2 * f[(size_t)i * 7 % per];
    static const attn_isa isas[] = {ATTN_ISA_SCALAR, ATTN_ISA_BASE, ATTN_ISA_AVX2, ATTN_ISA_AVX512};
    static const char *names[] = {"scalar", "base", "avx2", "avx512"};
    static const int levels[] = {CPU_SCALAR, CPU_BASE, CPU_AVX2, CPU_AVX512};
    printf("attn_bench: head dim %d, %d KV heads x 2 queries, depth %d, best of %d\n", HD, HEADS,
           depth, reps);
    for (int ia = 0; ia < 4; ia++) {
        if (!cpu_level_supported(levels[ia])) continue;
        for (int tt = 4; tt >= 1; tt -= 3) {
            double best = 1e30, pairs = 0;
            for (int k = 0; k < reps; k++) {
                const double t0 = now();
                pairs = pass(K, V, q, out, scratch, depth, tt, isas[ia]);
                const double t = now() - t0;
                if (t < best) best = t;
            }
            printf("  %-6s %-18s %9.3f ms %7.2f ns a pair\n", names[ia],
                   tt > 1 ? "prefill (8 q/call)" : "decode x50 (2 q)", best * 1e3,
                   best * 1e9 / pairs);
        }
    }
    free(K), free(V), free(f), free(scratch);
    return 0;
}
