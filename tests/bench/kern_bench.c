/* kern_bench.c: by-hand micro-benchmark of the decode GEMV: GB/s of weights streamed, per path.
 *
 * Build and run (OpenBLAS is not involved; unset OPENBLAS_CORETYPE anyway for consistency):
 *   make build/lfm2 && gcc -std=c11 -O2 -D_GNU_SOURCE -I. -pthread -o build/kern_bench \
 *       tests/bench/kern_bench.c $(ls build/engine/[a-z]*.o build/quant/[a-z]*.o) -lm
 *   env -u OPENBLAS_CORETYPE build/kern_bench [seconds_per_case]
 * Matrices: 1024 x 4608 (ffn_down of the 350M shape) and 65536 x 1024 (the output head), as
 * Q4_0 -> int4 tiles and Q8_0 -> int8 tiles; batches 1, 4, 8, 16; 1 and 2 threads. GB/s counts
 * the repacked bytes once per call (one pass over the weights serves every token of a batch). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "engine/kern.h"
#include "engine/pool.h"
#include "quant/quant.h"
#include "quant/repack.h"

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

static rp_matrix *make(uint32_t type, int64_t rows, int64_t cols) {
    size_t rs = quant_row_size(type, cols);
    uint8_t *q = malloc(rs * rows);
    float *tmp = malloc(cols * sizeof *tmp);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j++)
            tmp[j] = frand() * 0.05f;
        quant_traits(type)->from_float(tmp, q + r * rs, cols);
    }
    rp_matrix *m = NULL;
    char err[256];
    if (rp_new(&m, type, q, rows, cols, 0, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    free(q), free(tmp);
    return m;
}

typedef struct bjob {
    const rp_matrix *m;
    const kern_act *a;
    float *y;
    int path;
} bjob;

static void btask(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    bjob *j = ctx;
    int64_t lo, hi;
    pool_split(j->m->n_tiles, n_tasks, task, &lo, &hi);
    kern_gemv_tiles_with(j->path, j->m, j->a, j->y + lo * RP_ROWS, j->m->rows, lo, hi);
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    char err[256];
    pool *pools[2] = {pool_new(1, err, sizeof err), pool_new(2, err, sizeof err)};
    static const struct { int64_t rows, cols; } shapes[] = {{1024, 4608}, {65536, 1024}};
    static const uint32_t types[] = {QT_Q4_0, QT_Q8_0};
    static const int batches[] = {1, 4, 8, 16};
    printf("%-14s %-5s %-12s %3s %5s %10s %9s\n", "shape", "type", "path", "thr", "batch",
           "us/call", "GB/s");
    for (int si = 0; si < 2; si++)
        for (int ti = 0; ti < 2; ti++) {
            rp_matrix *m = make(types[ti], shapes[si].rows, shapes[si].cols);
            size_t bytes = m->tile_bytes * m->n_tiles;
            kern_act a;
            kern_act_init(&a, m->cols, 16);
            float *x = malloc(16 * m->cols * sizeof *x), *y = malloc(16 * m->rows * sizeof *y);
            for (int64_t i = 0; i < 16 * m->cols; i++)
                x[i] = frand();
            for (int p = 0; p < KERN_NPATHS; p++) {
                if (!kern_path_available(p)) continue;
                for (int th = 0; th < 2; th++)
                    for (int bi = 0; bi < 4; bi++) {
                        int nb = batches[bi];
                        if (p == KERN_SCALAR && (nb > 1 || si == 1))
                            continue; /* too slow to matter */
                        kern_quantize(&a, x, m->cols, m->cols, nb);
                        bjob j = {m, &a, y, p};
                        int tasks = th ? 8 : 1;
                        pool_run(pools[th], btask, &j, tasks); /* warm */
                        double best = 1e30;
                        for (int rep = 0; rep < 5; rep++) {
                            int iters = 0;
                            double t0 = now(), t;
                            do {
                                pool_run(pools[th], btask, &j, tasks);
                                iters++;
                            } while ((t = now()) - t0 < secs / 5);
                            double per = (t - t0) / iters;
                            if (per < best) best = per;
                        }
                        printf("%5lldx%-8lld %-5s %-12s %3d %5d %10.1f %9.1f\n", (long long)m->rows,
                               (long long)m->cols, quant_traits(types[ti])->name, kern_path_name(p),
                               th + 1, nb, best * 1e6, bytes / best / 1e9);
                        fflush(stdout);
                    }
            }
            free(x), free(y);
            kern_act_release(&a);
            rp_free(m);
        }
    pool_free(pools[0]);
    pool_free(pools[1]);
    return 0;
}
