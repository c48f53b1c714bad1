/* test_gemm.c: gemm_matmul(_n) and gemm_swiglu equal the scalar twins bit for bit, every kind,
 * awkward shapes. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "engine/gemm.h"
#include "engine/kern.h"
#include "engine/pool.h"
#include "quant/quant.h"
#include "quant/repack.h"
#include "tests/check.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static rp_matrix *make(uint32_t type, int64_t rows, int64_t cols) {
    size_t rs = quant_row_size(type, cols);
    uint8_t *q = malloc(rs * rows);
    float *tmp = malloc((size_t)cols * sizeof *tmp);
    for (int64_t r = 0; r < rows; r++) {
        float amp = 0.02f * (1 + r % 5), off = r % 3 == 0 ? 0.01f : 0;
        for (int64_t j = 0; j < cols; j++)
            tmp[j] = frand() * amp + off;
        if (r % 7 == 3) tmp[r % cols] = 0.5f; /* an outlier: big scale for its group */
        quant_traits(type)->from_float(tmp, q + r * rs, cols);
    }
    rp_matrix *m = NULL;
    char err[256];
    int rc = rp_new(&m, type, q, rows, cols, RP_ALLOW_LOSSY, err, sizeof err);
    if (rc) fprintf(stderr, "rp_new: %s\n", err);
    free(q);
    free(tmp);
    return m;
}

static int same_bits(const float *x, const float *y, size_t n, size_t *where) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(x + i, y + i, sizeof *x)) {
            *where = i;
            return 0;
        }
    return 1;
}

/* One case: n tokens of random activations (some blocks all zero, some with one spike) through
 * gemm_matmul_with(path) with and without a pool, against kern_tiles_scalar. */
static void run(pool *pl, uint32_t type, int64_t rows, int64_t cols, int n) {
    rp_matrix *m = make(type, rows, cols);
    CHECK(m != NULL);
    if (!m) return;
    kern_act a;
    CHECK_EQ_INT(kern_act_init(&a, cols, n), 0);
    float *x = malloc((size_t)n * cols * sizeof *x);
    for (int64_t i = 0; i < (int64_t)n * cols; i++)
        x[i] = frand() * (1 + (i / 32) % 4);
    for (int t = 0; t < n; t += 5)
        memset(x + (size_t)t * cols, 0, 32 * sizeof *x);
    for (int t = 1; t < n; t += 3)
        x[(size_t)t * cols + (t * 37) % cols] = 40.0f;
    kern_quantize(&a, x, cols, cols, n);
    const int64_t ldy = rows + 3; /* outputs must not spill into the gaps */
    const size_t ny = (size_t)n * ldy;
    float *ref = malloc(ny * sizeof *ref), *got = malloc(ny * sizeof *got);
    for (size_t i = 0; i < ny; i++)
        ref[i] = -1234.5f;
    kern_gemv_tiles_with(KERN_SCALAR, m, &a, ref, ldy, 0, m->n_tiles);
    for (int path = 0; path < GEMM_NPATHS; path++)
        for (int pi = 0; pi < 2; pi++) {
            for (size_t i = 0; i < ny; i++)
                got[i] = -1234.5f;
            gemm_matmul_with(path, pi ? pl : NULL, m, &a, got, ldy);
            size_t w = 0;
            if (!same_bits(ref, got, ny, &w)) {
                fprintf(stderr,
                        "type %u kind %d rows %lld cols %lld n %d path %s pool %d: token %zu row "
                        "%zu: %.9g vs %.9g\n",
                        type, m->kind, (long long)rows, (long long)cols, n, gemm_path_name(path),
                        pi, w / ldy, w % ldy, ref[w], got[w]);
                CHECK(0);
            }
        }
    /* the default entry point too */
    for (size_t i = 0; i < ny; i++)
        got[i] = -1234.5f;
    gemm_matmul(pl, m, &a, got, ldy);
    size_t w = 0;
    CHECK(same_bits(ref, got, ny, &w));
    free(x);
    free(ref);
    free(got);
    kern_act_release(&a);
    rp_free(m);
}

/* gemm_matmul_n over matrices of different heights sharing the activations (with an I6 among
 * them: the whole set falls back), and gemm_swiglu, against the scalar twins. */
static void run_n(pool *pl, uint32_t type, uint32_t odd_type, int64_t cols, int n) {
    const int64_t heights[3] = {40, 17, 64};
    rp_matrix *ms[3];
    for (int i = 0; i < 3; i++)
        ms[i] = make(i == 1 ? odd_type : type, heights[i], cols);
    rp_matrix *up = make(type, heights[0], cols);
    for (int i = 0; i < 3; i++)
        CHECK(ms[i] != NULL);
    CHECK(up != NULL);
    if (!ms[0] || !ms[1] || !ms[2] || !up) return;
    kern_act a;
    CHECK_EQ_INT(kern_act_init(&a, cols, n), 0);
    float *x = malloc((size_t)n * cols * sizeof *x);
    for (int64_t i = 0; i < (int64_t)n * cols; i++)
        x[i] = frand() * 2;
    kern_quantize(&a, x, cols, cols, n);
    float *ref[3], *got[3], *ys[3];
    int64_t ld[3];
    for (int i = 0; i < 3; i++) {
        ld[i] = heights[i] + 1 + i;
        ref[i] = malloc((size_t)n * ld[i] * sizeof(float));
        got[i] = malloc((size_t)n * ld[i] * sizeof(float));
        for (int64_t k = 0; k < n * ld[i]; k++)
            ref[i][k] = got[i][k] = 7.25f;
        kern_gemv_tiles_with(KERN_SCALAR, ms[i], &a, ref[i], ld[i], 0, ms[i]->n_tiles);
        ys[i] = got[i];
    }
    for (int path = 0; path < GEMM_NPATHS; path++) {
        gemm_matmul_n_with(path, pl, 3, (const rp_matrix *const *)ms, &a, ys, ld);
        for (int i = 0; i < 3; i++) {
            size_t w = 0;
            if (!same_bits(ref[i], got[i], (size_t)n * ld[i], &w)) {
                fprintf(stderr, "matmul_n type %u/%u path %s matrix %d: element %zu\n", type,
                        odd_type, gemm_path_name(path), i, w);
                CHECK(0);
            }
        }
    }
    /* SwiGLU on ms[0] and up */
    float *sref = malloc((size_t)n * ld[0] * sizeof(float)), *sgot = malloc((size_t)n * ld[0] * 4);
    for (int64_t k = 0; k < n * ld[0]; k++)
        sref[k] = sgot[k] = -3.5f;
    kern_swiglu_with(KERN_SCALAR, ms[0], up, &a, sref, ld[0], 0, ms[0]->n_tiles);
    for (int path = 0; path < GEMM_NPATHS; path++) {
        gemm_swiglu_with(path, pl, ms[0], up, &a, sgot, ld[0]);
        size_t w = 0;
        if (!same_bits(sref, sgot, (size_t)n * ld[0], &w)) {
            fprintf(stderr, "swiglu type %u cols %lld n %d path %s: element %zu: %.9g vs %.9g\n",
                    type, (long long)cols, n, gemm_path_name(path), w, sref[w], sgot[w]);
            CHECK(0);
        }
    }
    gemm_swiglu(pl, ms[0], up, &a, sgot, ld[0]);
    size_t w = 0;
    CHECK(same_bits(sref, sgot, (size_t)n * ld[0], &w));
    free(sref), free(sgot), free(x);
    for (int i = 0; i < 3; i++)
        free(ref[i]), free(got[i]), rp_free(ms[i]);
    rp_free(up);
    kern_act_release(&a);
}

/* A MoE layer's experts: gemm_swiglu_sets_with (quantizing each expert's output with gemm's
 * quantizer) then gemm_matmul_sets_with on every path, with and without a pool, bit for bit the
 * scalar products of each expert alone; token counts 0, 1, a decode batch's, an AMX tile's and
 * a prefill's (kern's runs of tiles x blocks of tokens). */
enum { NSETS = 5 };
static void run_sets(pool *pl, uint32_t type, int64_t E, int64_t F, int64_t D) {
    static const int ntok[NSETS] = {20, 0, 1, 5, 70};
    rp_matrix *g[NSETS], *u[NSETS], *d[NSETS];
    kern_act xa[NSETS], hq[NSETS], qref[NSETS];
    float *href[NSETS], *oref[NSETS], *h[NSETS], *o[NSETS];
    const int64_t ldh = F + 1, ldo = D + 2;
    for (int i = 0; i < NSETS; i++) {
        const int n = ntok[i], cap = n ? n : 1;
        g[i] = make(type, F, E), u[i] = make(type, F, E), d[i] = make(type, D, F);
        CHECK(g[i] && u[i] && d[i]);
        if (!g[i] || !u[i] || !d[i]) return;
        float *x = malloc((size_t)cap * E * sizeof *x);
        for (int64_t k = 0; k < (int64_t)n * E; k++)
            x[k] = frand() * (1 + (k / 32) % 4);
        CHECK_EQ_INT(kern_act_init(&xa[i], E, cap), 0);
        CHECK_EQ_INT(kern_act_init(&hq[i], F, cap), 0);
        CHECK_EQ_INT(kern_act_init(&qref[i], F, cap), 0);
        kern_quantize(&xa[i], x, E, E, n);
        href[i] = malloc((size_t)cap * ldh * sizeof(float));
        oref[i] = malloc((size_t)cap * ldo * sizeof(float));
        h[i] = malloc((size_t)cap * ldh * sizeof(float));
        o[i] = malloc((size_t)cap * ldo * sizeof(float));
        for (int64_t k = 0; k < cap * ldh; k++)
            href[i][k] = 1.5f;
        for (int64_t k = 0; k < cap * ldo; k++)
            oref[i][k] = 2.5f;
        kern_swiglu_with(KERN_SCALAR, g[i], u[i], &xa[i], href[i], ldh, 0, g[i]->n_tiles);
        kern_quantize(&qref[i], href[i], F, ldh, n);
        kern_gemv_tiles_with(KERN_SCALAR, d[i], &qref[i], oref[i], ldo, 0, d[i]->n_tiles);
        free(x);
    }
    for (int path = 0; path < GEMM_NPATHS; path++)
        for (int pi = 0; pi < 2; pi++) {
            kern_set sw[NSETS], dn[NSETS];
            for (int i = 0; i < NSETS; i++) {
                const int cap = ntok[i] ? ntok[i] : 1;
                for (int64_t k = 0; k < cap * ldh; k++)
                    h[i][k] = 1.5f;
                for (int64_t k = 0; k < cap * ldo; k++)
                    o[i][k] = 2.5f;
                sw[i] = (kern_set){g[i], u[i], &xa[i], h[i], ldh, &hq[i]};
                dn[i] = (kern_set){d[i], NULL, &hq[i], o[i], ldo, NULL};
            }
            gemm_swiglu_sets_with(path, pi ? pl : NULL, NSETS, sw);
            gemm_matmul_sets_with(path, pi ? pl : NULL, NSETS, dn);
            for (int i = 0; i < NSETS; i++) {
                const int n = ntok[i];
                const size_t nb = (size_t)(F / 32);
                size_t w = 0;
                bool ok = same_bits(href[i], h[i], (size_t)n * ldh, &w) &&
                          same_bits(oref[i], o[i], (size_t)n * ldo, &w) && hq[i].n == n &&
                          hq[i].cols == F && !memcmp(hq[i].q, qref[i].q, (size_t)n * F) &&
                          !memcmp(hq[i].d, qref[i].d, n * nb * 4) &&
                          !memcmp(hq[i].s, qref[i].s, n * nb * 4) &&
                          !memcmp(hq[i].s16, qref[i].s16, n * nb * 8);
                if (!ok)
                    fprintf(stderr, "sets type %u path %s pool %d: expert %d (%d tokens) differs\n",
                            type, gemm_path_name(path), pi, i, n);
                CHECK(ok);
            }
        }
    for (int i = 0; i < NSETS; i++) {
        rp_free(g[i]), rp_free(u[i]), rp_free(d[i]);
        kern_act_release(&xa[i]), kern_act_release(&hq[i]), kern_act_release(&qref[i]);
        free(href[i]), free(oref[i]), free(h[i]), free(o[i]);
    }
}

/* gemm_quantize equals kern_quantize byte for byte: codes, scales, sums, half sums, including
 * zero blocks, huge and tiny values, ties at .5 steps, infinities and NaNs; with and without
 * a pool, a row stride wider than cols; and the runs-of-8 copy, split by tokens or by columns. */
static void run_quantize(pool *pl, int64_t cols, int n) {
    const int64_t ldx = cols + 32, nb = cols / 32;
    float *x = malloc((size_t)n * ldx * sizeof *x);
    for (int64_t i = 0; i < (int64_t)n * ldx; i++) {
        float v = frand();
        switch ((i * 7919) % 97) {
        case 0:
            v = 0;
            break;
        case 1:
            v = 1e30f;
            break;
        case 2:
            v = 1e-38f;
            break;
        case 3:
            v = (float)INFINITY;
            break;
        case 4:
            v = -(float)INFINITY;
            break;
        case 5:
            v = (float)NAN;
            break;
        case 6:
            v = 63.5f;
            break;
        default:
            v *= (float)(1 + (i / 32) % 9);
        }
        x[i] = v;
    }
    for (int t = 0; t < n; t += 3)
        memset(x + (size_t)t * ldx, 0, 32 * sizeof *x);
    for (int t = 1; t < n; t += 4) /* a block of exact halves: round-half-even ties */
        for (int j = 0; j < 32; j++)
            x[(size_t)t * ldx + 32 * (nb - 1) + j] =
                (float)(j - 16) * 0.5f + (j == 0 ? 127.0f : 0.0f);
    kern_act r, g;
    CHECK_EQ_INT(kern_act_init(&r, cols, n), 0);
    CHECK_EQ_INT(kern_act_init(&g, cols, n), 0);
    kern_quantize(&r, x, cols, ldx, n);
    for (int pi = 0; pi < 2; pi++) {
        memset(g.q, 0x55, (size_t)n * cols);
        gemm_quantize(pi ? pl : NULL, &g, x, cols, ldx, n);
        CHECK_EQ_INT(g.n, n);
        CHECK_EQ_INT(g.cols, cols);
        CHECK(!memcmp(r.q, g.q, (size_t)n * cols));
        CHECK(!memcmp(r.d, g.d, (size_t)n * nb * sizeof *r.d));
        CHECK(!memcmp(r.s, g.s, (size_t)n * nb * sizeof *r.s));
        CHECK(!memcmp(r.s16, g.s16, (size_t)n * nb * 2 * sizeof *r.s16));
        size_t bad = 0; /* the runs-of-8 copy the AVX-512 batch kernel reads (made where it runs) */
        for (int t = 0; t < n && n >= 2 && kern_path_available(KERN_AVX512); t++)
            for (int64_t b = 0; b < nb; b++) {
                size_t k = kern_act_at(&r, b, t);
                bad += memcmp(r.gq + k * 32, g.gq + k * 32, 32) != 0;
                bad += memcmp(r.gr + 2 * k, g.gr + 2 * k, 2 * sizeof *r.gr) != 0;
                bad += memcmp(r.g6 + 2 * k, g.g6 + 2 * k, 2 * sizeof *r.g6) != 0;
            }
        CHECK_EQ_INT(bad, 0);
    }
    kern_act_release(&r);
    kern_act_release(&g);
    free(x);
}

int main(int argc, char **argv) {
    (void)argc;
    char err[256];
    if (!getenv("LFM2_KERNEL")) { /* the fallbacks too: kern's AVX2 and scalar paths, no AMX */
        static const char *const paths[] = {"avx2", "scalar"};
        for (int i = 0; i < 2; i++) {
            char cmd[4096];
            snprintf(cmd, sizeof cmd, "LFM2_KERNEL=%s '%s' >/dev/null", paths[i], argv[0]);
            int rc = system(cmd);
            if (rc) fprintf(stderr, "with LFM2_KERNEL=%s: status %d\n", paths[i], rc);
            CHECK(rc == 0);
        }
    }
    pool *pl = pool_new(2, err, sizeof err);
    CHECK(pl != NULL);
    printf("test_gemm: kernel %s, gemm %s (amx %s)\n", kern_name(), gemm_path_name(gemm_best()),
           gemm_path_available(GEMM_AMX) ? "available" : "not available");
    CHECK(gemm_kind_supported(GEMM_KERN, RP_I6));
    CHECK(gemm_kind_supported(GEMM_AMX, RP_I6));
    CHECK(!gemm_kind_supported(GEMM_AMX, 0));
    CHECK(gemm_kind_supported(GEMM_AMX, RP_I4));
    static const struct {
        uint32_t type;
        int64_t rows, cols;
        int n;
    } cases[] = {
        {QT_Q4_0, 37, 32, 5},     {QT_Q4_0, 8, 64, 16},    {QT_Q4_0, 64, 4640, 33},
        {QT_Q4_0, 24, 1024, 600}, {QT_Q4_0, 17, 2080, 47}, {QT_Q4_0, 1, 96, 1},
        {QT_Q4_0, 40, 2048, 31},  {QT_Q4_1, 45, 96, 19},   {QT_Q4_1, 16, 2112, 64},
        {QT_Q8_0, 29, 4640, 21},  {QT_Q8_0, 8, 64, 16},    {QT_Q5_0, 19, 160, 31},
        {QT_Q5_1, 30, 2080, 18},  {QT_Q4_K, 33, 4608, 35}, {QT_Q4_K, 9, 256, 600},
        {QT_Q5_K, 21, 512, 50},   {QT_Q5_K, 16, 2304, 17}, {QT_Q6_K, 23, 256, 20},
        {QT_Q6_K, 40, 2304, 37},  {QT_Q6_K, 8, 4608, 16},  {QT_F32, 11, 256, 17},
        {QT_F16, 16, 128, 48},    {QT_BF16, 50, 192, 2},
        /* prefills cut into runs of tiles x blocks of tokens (engine/kern.c's mm_range) */
        {QT_Q4_0, 200, 4640, 70}, {QT_Q4_K, 130, 4608, 90}, {QT_Q6_K, 100, 2304, 131},
        /* decode batches (2..15 tokens: kern's kernels on every path) */
        {QT_Q4_0, 37, 1024, 2},   {QT_Q4_0, 40, 2048, 8},  {QT_Q4_0, 64, 4640, 4},
        {QT_Q4_1, 45, 96, 3},     {QT_Q8_0, 29, 4640, 7},  {QT_Q5_0, 19, 160, 9},
        {QT_Q5_1, 30, 2080, 6},   {QT_Q4_K, 33, 4608, 8},  {QT_Q5_K, 21, 512, 12},
        {QT_Q6_K, 40, 2304, 4},   {QT_Q6_K, 23, 256, 15},  {QT_Q6_K, 17, 1024, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run(pl, cases[i].type, cases[i].rows, cases[i].cols, cases[i].n);
    run_quantize(pl, 32, 1);
    run_quantize(pl, 1024, 37);
    run_quantize(pl, 4608, 130);
    run_quantize(pl, 4608, 8); /* a decode batch's wide input: quantized in column parts */
    run_quantize(pl, 1024, 16);
    run_quantize(pl, 2080, 3);
    run_n(pl, QT_Q4_0, QT_Q4_0, 1024, 45);
    run_n(pl, QT_Q4_0, QT_Q4_0, 2080, 16); /* more groups than one panel: swiglu falls back */
    run_n(pl, QT_Q8_0, QT_Q5_0, 96, 3);
    run_n(pl, QT_Q4_K, QT_Q4_K, 512, 70);
    run_n(pl, QT_Q5_K, QT_Q6_K, 256, 21); /* kinds mixed in one set */
    run_n(pl, QT_Q6_K, QT_Q6_K, 768, 33);
    run_n(pl, QT_Q4_1, QT_Q5_1, 64, 600);
    run_n(pl, QT_Q4_0, QT_Q4_0, 1024, 8); /* decode batches */
    run_n(pl, QT_Q6_K, QT_Q6_K, 768, 5);
    run_n(pl, QT_Q4_K, QT_Q4_K, 512, 2);
    run_n(pl, QT_Q8_0, QT_Q8_0, 2048, 13);
    run_sets(pl, QT_Q4_0, 256, 96, 40);
    run_sets(pl, QT_Q4_K, 512, 256, 17);
    run_sets(pl, QT_Q6_K, 256, 256, 33);
    run_sets(pl, QT_Q8_0, 96, 64, 8);
    pool_free(pl);
    return check_done("test_gemm");
}
