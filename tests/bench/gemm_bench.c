/* gemm_bench.c: by-hand prefill matmul benchmark: kern_matmul vs OpenBLAS sgemm vs gemm_matmul.
 *
 * Arguments: [reps (5)] [threads (2)].
 * Build and run (OpenBLAS at full speed: unset its core type and L2 size in that command only):
 *   make build/gemm_bench && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/gemm_bench [reps]
 * For the 350M shapes (Q4_0 -> int4 tiles) and 512 tokens, on 2 threads: (a) kern_matmul with
 * 512 tokens in one kern_act, (b) cblas_sgemm on the f32 weights (y = x W^T), (c) gemm_matmul;
 * best of reps, in ms and GMAC/s, then the whole model's matmuls per 512-token prefill (16
 * layers: 10 conv, 6 attention) as an upper bound on prefill tok/s. Then tokens-per-call
 * sweep for the gemm/kern crossover (GEMM_MIN_TOKENS). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "engine/gemm.h"
#include "engine/kern.h"
#include "engine/pool.h"
#include "quant/quant.h"
#include "quant/repack.h"

char *openblas_get_corename(void);
void openblas_set_num_threads(int);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static rp_matrix *make(int64_t rows, int64_t cols) {
    size_t rs = quant_row_size(QT_Q4_0, cols);
    uint8_t *q = malloc(rs * rows);
    float *tmp = malloc(cols * sizeof *tmp);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j++)
            tmp[j] = frand() * 0.05f;
        quant_traits(QT_Q4_0)->from_float(tmp, q + r * rs, cols);
    }
    rp_matrix *m = NULL;
    char err[256];
    if (rp_new(&m, QT_Q4_0, q, rows, cols, 0, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    free(q), free(tmp);
    return m;
}

enum { A_KERN, B_BLAS, C_GEMM };

static double best_of(int reps, int what, pool *p, const rp_matrix *m, const float *wf,
                      const kern_act *a, const float *x, float *y) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now();
        if (what == A_KERN)
            kern_matmul(p, m, a, y, m->rows);
        else if (what == C_GEMM)
            gemm_matmul(p, m, a, y, m->rows);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->n, (int)m->rows, (int)m->cols,
                        1.0f, x, (int)m->cols, wf, (int)m->cols, 0.0f, y, (int)m->rows);
        t = now() - t;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    const int ntok = 512, nthr = argc > 2 ? atoi(argv[2]) : 2;
    char err[256];
    pool *p = pool_new(nthr, err, sizeof err);
    openblas_set_num_threads(nthr);
    printf("openblas core %s, kernel %s, gemm %s, %d threads, %d tokens, best of %d\n",
           openblas_get_corename(), kern_name(), gemm_path_name(gemm_best()), nthr, ntok, reps);
    static const struct {
        const char *name;
        int64_t rows, cols;
        int per_model; /* matrices of this shape in the 350M model */
    } shapes[] = {{"out/q/o 1024x1024", 1024, 1024, 10 + 12},
                  {"in_proj 3072x1024", 3072, 1024, 10},
                  {"gate/up 4608x1024", 4608, 1024, 32},
                  {"down 1024x4608", 1024, 4608, 16},
                  {"k/v 512x1024", 512, 1024, 12}};
    double tot[3] = {0, 0, 0};
    printf("%-20s %12s %12s %12s   %s\n", "shape", "kern ms", "sgemm ms", "gemm ms",
           "GMAC/s kern/sgemm/gemm");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t rows = shapes[si].rows, cols = shapes[si].cols;
        rp_matrix *m = make(rows, cols);
        float *wf = malloc((size_t)rows * cols * sizeof *wf);
        rp_rows_to_float(m, 0, rows, wf);
        float *x = malloc((size_t)ntok * cols * sizeof *x), *y = malloc((size_t)ntok * rows * 4);
        for (int64_t i = 0; i < ntok * cols; i++)
            x[i] = frand();
        kern_act a;
        kern_act_init(&a, cols, ntok);
        kern_quantize(&a, x, cols, cols, ntok);
        double t[3];
        for (int w = 0; w < 3; w++)
            t[w] = best_of(reps, w, p, m, wf, &a, x, y);
        double mac = (double)rows * cols * ntok;
        printf("%-20s %12.2f %12.2f %12.2f   %.0f / %.0f / %.0f\n", shapes[si].name, t[0] * 1e3,
               t[1] * 1e3, t[2] * 1e3, mac / t[0] * 1e-9, mac / t[1] * 1e-9, mac / t[2] * 1e-9);
        for (int w = 0; w < 3; w++)
            tot[w] += t[w] * shapes[si].per_model;
        kern_act_release(&a);
        free(wf), free(x), free(y);
        rp_free(m);
    }
    printf(
        "350M model, all matmuls of a %d-token prefill: kern %.0f ms (%.0f tok/s), sgemm %.0f ms "
        "(%.0f tok/s), gemm %.0f ms (%.0f tok/s)\n",
        ntok, tot[0] * 1e3, ntok / tot[0], tot[1] * 1e3, ntok / tot[1], tot[2] * 1e3,
        ntok / tot[2]);
    /* crossover: tokens per call on the gate/up shape */
    rp_matrix *m = make(4608, 1024);
    float *x = malloc((size_t)64 * 1024 * sizeof *x), *y = malloc((size_t)64 * 4608 * 4);
    for (int64_t i = 0; i < 64 * 1024; i++)
        x[i] = frand();
    printf("tokens  kern us  gemm us   (4608x1024)\n");
    static const int ns[] = {1, 2, 4, 8, 12, 16, 24, 32, 64};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        kern_act a;
        kern_act_init(&a, 1024, ns[i]);
        kern_quantize(&a, x, 1024, 1024, ns[i]);
        double tk = best_of(reps * 4, A_KERN, p, m, NULL, &a, x, y);
        double tg = best_of(reps * 4, C_GEMM, p, m, NULL, &a, x, y);
        printf("%6d %8.1f %8.1f\n", ns[i], tk * 1e6, tg * 1e6);
        kern_act_release(&a);
    }
    rp_free(m);
    free(x), free(y);
    pool_free(p);
    return 0;
}
