/* test_kern.c: every kernel path equals the scalar twin bit for bit, and the scalar twin equals
 * dequantize-then-dot; quantization, SwiGLU, RMSNorm and the threaded drivers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "engine/cpu.h"
#include "engine/kern.h"
#include "engine/pool.h"
#include "quant/quant.h"
#include "quant/repack.h"
#include "tests/check.h"
#include "tests/cpu_want.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

typedef struct fixture {
    uint32_t type;
    int64_t rows, cols;
    int n;     /* tokens */
    float *w;  /* rows x cols: the source's dequantized weights */
    float *wr; /* rows x cols: the repacked weights, dequantized */
    float *x;  /* n x cols */
    rp_matrix *m;
    kern_act a;
} fixture;

static int fixture_make(fixture *f, uint32_t type, int64_t rows, int64_t cols, int n) {
    const qtype_traits *tr = quant_traits(type);
    f->type = type, f->rows = rows, f->cols = cols, f->n = n;
    size_t rs = quant_row_size(type, cols);
    uint8_t *q = malloc(rs * rows);
    f->w = malloc((size_t)rows * cols * sizeof(float));
    f->wr = malloc((size_t)rows * cols * sizeof(float));
    f->x = malloc((size_t)n * cols * sizeof(float));
    float *tmp = malloc((size_t)cols * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        float amp = 0.02f * (1 + r % 5);
        for (int64_t j = 0; j < cols; j++)
            tmp[j] = frand() * amp + (type == QT_Q4_1 ? 0.01f : 0);
        tr->from_float(tmp, q + r * rs, cols);
        tr->to_float(q + r * rs, f->w + r * cols, cols);
    }
    for (int64_t i = 0; i < n * cols; i++)
        f->x[i] = frand() * (1 + (i % 3)) + ((i % 97) == 0 ? 8.0f : 0);
    char err[256];
    int rc = rp_new(&f->m, type, q, rows, cols, RP_ALLOW_LOSSY, err, sizeof err);
    if (rc) fprintf(stderr, "rp_new: %s\n", err);
    CHECK_EQ_INT(rc, 0);
    free(q), free(tmp);
    if (rc) return rc;
    rp_rows_to_float(f->m, 0, rows, f->wr);
    CHECK_EQ_INT(kern_act_init(&f->a, cols, n), 0);
    kern_quantize(&f->a, f->x, cols, cols, n);
    return 0;
}

static void fixture_free(fixture *f) {
    rp_free(f->m);
    kern_act_release(&f->a);
    free(f->w), free(f->wr), free(f->x);
}

static void test_quantize(void) {
    int64_t cols = 96;
    float x[96];
    for (int j = 0; j < 96; j++)
        x[j] = frand() * (j < 32 ? 0.001f : 3.0f);
    for (int j = 64; j < 96; j++)
        x[j] = 0; /* an all-zero block */
    x[5] = 0.5f * (x[5] < 0 ? -1 : 1) * 0.001f;
    kern_act a;
    CHECK_EQ_INT(kern_act_init(&a, cols, 2), 0);
    CHECK_EQ_INT(kern_act_init(&(kern_act){0}, 33, 1), -1);
    kern_quantize(&a, x, cols, cols, 1);
    CHECK_EQ_INT(a.n, 1);
    for (int b = 0; b < 3; b++) {
        int32_t s = 0;
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        CHECK_NEAR(a.d[b], amax / 127.0f, 0);
        for (int j = 0; j < 32; j++) {
            s += a.q[b * 32 + j];
            CHECK(fabsf(a.d[b] * a.q[b * 32 + j] - x[b * 32 + j]) <= a.d[b] * 0.5001f);
            CHECK(a.q[b * 32 + j] >= -127 && a.q[b * 32 + j] <= 127);
        }
        CHECK_EQ_INT(a.s[b], s);
    }
    CHECK_EQ_INT(a.d[2] == 0, 1);
    /* ties round to even, like nearbyintf: amax 127 makes the scale exactly 1 */
    float tie[32] = {127.0f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f, 126.5f, -126.5f, 1.4999f};
    kern_quantize(&a, tie, 32, 32, 1);
    static const int want[10] = {127, 2, 4, -2, -4, 0, 0, 126, -126, 1};
    for (int j = 0; j < 10; j++)
        CHECK_EQ_INT(a.q[j], want[j]);
    for (int j = 0; j < 32 * 3; j++)
        x[j] = frand() * 100;
    kern_quantize(&a, x, 96, 96, 1);
    for (int b = 0; b < 3; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        for (int j = 0; j < 32; j++)
            CHECK_EQ_INT(a.q[b * 32 + j], (int)nearbyintf(x[b * 32 + j] * (127.0f / amax)));
    }
    /* narrower than the buffers: the width follows the call */
    float x2[192];
    for (int j = 0; j < 192; j++)
        x2[j] = frand();
    kern_quantize(&a, x2 + 96, 64, 96, 1);
    int8_t alone[64];
    memcpy(alone, a.q, 64);
    float dalone = a.d[1];
    kern_quantize(&a, x2, 64, 96, 2);
    CHECK_EQ_INT(a.cols, 64);
    CHECK_EQ_INT(a.n, 2);
    CHECK(!memcmp(a.q + 64, alone, 64)); /* token 1: at 64 in the buffer, at 96 in x2 */
    CHECK_NEAR(a.d[3], dalone, 0);
    kern_act_release(&a);
}

/* One shape: every path bit-identical to scalar; scalar close to exact dots. */
static void test_gemv(uint32_t type, int64_t rows, int64_t cols, int n) {
    fixture f = {0};
    if (fixture_make(&f, type, rows, cols, n)) return;
    int64_t ldy = rows + 3;
    float *ys = malloc((size_t)n * ldy * sizeof(float)),
          *yp = malloc((size_t)n * ldy * sizeof(float));
    for (int64_t i = 0; i < n * ldy; i++)
        ys[i] = yp[i] = -999.0f; /* canaries between tokens */
    kern_gemv_tiles_with(KERN_SCALAR, f.m, &f.a, ys, ldy, 0, f.m->n_tiles);
    const char *tn = quant_traits(type)->name;
    int nb = (int)(cols / 32);
    for (int t = 0; t < n; t++) {
        for (int64_t r = rows; r < ldy; r++)
            CHECK_NEAR(ys[t * ldy + r], -999.0f, 0);
        for (int64_t r = 0; r < rows; r++) {
            /* exact dot of the repacked weights with the quantized activations */
            double e = 0, tol = 0, tr = 0, bound = 0;
            for (int64_t j = 0; j < cols; j++) {
                double xq = (double)f.a.d[t * nb + j / 32] * f.a.q[t * cols + j];
                e += (double)f.wr[r * cols + j] * xq;
                tol += fabs((double)f.wr[r * cols + j] * xq);
                tr += (double)f.w[r * cols + j] * f.x[t * cols + j];
                /* activation quantization: <= d/2 per value; repacking: K-scale rounding or
                 * requantization bounded per weight */
                bound +=
                    fabs((double)f.w[r * cols + j]) * f.a.d[t * nb + j / 32] * 0.5 +
                    fabs((double)f.wr[r * cols + j] - f.w[r * cols + j]) * fabs(f.x[t * cols + j]);
            }
            double y = ys[t * ldy + r];
            if (!(fabs(y - e) <= 1e-5 * tol + 1e-6)) {
                fprintf(stderr, "%s %lldx%lld n=%d t=%d r=%lld: scalar %.9g vs exact %.9g\n", tn,
                        (long long)rows, (long long)cols, n, t, (long long)r, y, e);
                CHECK(0);
            }
            if (!(fabs(y - tr) <= bound + 1e-5 * tol + 1e-6)) {
                fprintf(stderr, "%s %lldx%lld t=%d r=%lld: %.9g vs f32 truth %.9g (bound %g)\n", tn,
                        (long long)rows, (long long)cols, t, (long long)r, y, tr, bound);
                CHECK(0);
            }
        }
    }
    for (int p = KERN_AVX2; p < KERN_NPATHS; p++) {
        if (!kern_path_available(p)) continue;
        for (int64_t i = 0; i < n * ldy; i++)
            yp[i] = -999.0f;
        /* in two tile ranges, to check the offsets */
        int64_t mid = f.m->n_tiles / 2;
        kern_gemv_tiles_with(p, f.m, &f.a, yp, ldy, 0, mid);
        kern_gemv_tiles_with(p, f.m, &f.a, yp + mid * RP_ROWS, ldy, mid, f.m->n_tiles);
        if (memcmp(ys, yp, (size_t)n * ldy * sizeof(float))) {
            for (int64_t i = 0; i < n * ldy; i++)
                if (memcmp(&ys[i], &yp[i], sizeof(float))) {
                    fprintf(stderr, "%s %lldx%lld n=%d path %s: y[%lld] %.9g vs scalar %.9g\n", tn,
                            (long long)rows, (long long)cols, n, kern_path_name(p), (long long)i,
                            yp[i], ys[i]);
                    break;
                }
            CHECK(0);
        }
    }
    free(ys), free(yp);
    fixture_free(&f);
}

static void test_drivers(pool *pl, uint32_t type, int64_t rows, int64_t cols, int n) {
    fixture f = {0}, g = {0};
    if (fixture_make(&f, type, rows, cols, n)) return;
    if (fixture_make(&g, type, rows, cols, n)) return;
    float *ref = malloc((size_t)n * rows * sizeof(float)),
          *y = malloc((size_t)n * rows * sizeof(float));
    float *y2 = malloc((size_t)n * rows * sizeof(float));
    kern_gemv_tiles_with(kern_best(), f.m, &f.a, ref, rows, 0, f.m->n_tiles);
    kern_gemv_tiles_with(KERN_SCALAR, f.m, &f.a, y, rows, 0, f.m->n_tiles);
    CHECK(!memcmp(ref, y, (size_t)n * rows * sizeof(float)));
    kern_matmul(pl, f.m, &f.a, y, rows);
    CHECK(!memcmp(ref, y, (size_t)n * rows * sizeof(float)));
    /* two matrices, one region: g.m on f's activations */
    float *refg = malloc((size_t)n * rows * sizeof(float));
    kern_gemv_tiles_with(kern_best(), g.m, &f.a, refg, rows, 0, g.m->n_tiles);
    const rp_matrix *ms[2] = {f.m, g.m};
    float *ys[2] = {y, y2};
    int64_t ld[2] = {rows, rows};
    memset(y, 0, (size_t)n * rows * sizeof(float));
    kern_matmul_n(pl, 2, ms, &f.a, ys, ld);
    CHECK(!memcmp(ref, y, (size_t)n * rows * sizeof(float)));
    CHECK(!memcmp(refg, y2, (size_t)n * rows * sizeof(float)));
    /* SwiGLU: silu(f) * g, every path and the threaded driver identical */
    float *sw = malloc((size_t)n * rows * sizeof(float));
    kern_swiglu(pl, f.m, g.m, &f.a, sw, rows);
    float *want = malloc((size_t)n * rows * sizeof(float));
    kern_silu_mul_with(KERN_SCALAR, want, ref, refg, n * rows);
    CHECK(!memcmp(sw, want, (size_t)n * rows * sizeof(float)));
    free(want);
    for (int p = 0; p < KERN_NPATHS; p++) {
        if (!kern_path_available(p)) continue;
        kern_swiglu_with(p, f.m, g.m, &f.a, y, rows, 0, f.m->n_tiles);
        CHECK(!memcmp(sw, y, (size_t)n * rows * sizeof(float)));
    }
    free(ref), free(refg), free(y), free(y2), free(sw);
    fixture_free(&f);
    fixture_free(&g);
}

/* A MoE layer's shape in small: experts of different token counts (0, 1, several; gathered
 * from a shared act, read in place, or views of one) run by kern_swiglu_sets (quantizing their
 * outputs) and kern_matmul_sets on every path, bit for bit the scalar products of each expert
 * alone on its own freshly quantized rows. */
enum { SETS = 5, SRC_T = 12 };
static void test_sets(pool *pl, uint32_t type) {
    const int64_t E = 256, F = 256, D = 77; /* gate/up [F][E], down [D][F] */
    static const int ntok[SETS] = {3, 0, 1, 9, 2};
    static const int toks[SETS][9] = {{0, 2, 5}, {0}, {4}, {0, 1, 2, 3, 4, 5, 6, 7, 8}, {1, 3}};
    fixture src = {0}, g[SETS] = {{0}}, u[SETS] = {{0}}, d[SETS] = {{0}};
    if (fixture_make(&src, type, 8, E, SRC_T)) return; /* its x and act: the layer's rows */
    for (int i = 0; i < SETS; i++)
        if (fixture_make(&g[i], type, F, E, 1) || fixture_make(&u[i], type, F, E, 1) ||
            fixture_make(&d[i], type, D, F, 1))
            return;
    /* the scalar reference, one expert at a time on its own rows */
    const int64_t ldh = F + 3, ldo = D + 5;
    float *href[SETS], *oref[SETS];
    kern_act qref[SETS];
    for (int i = 0; i < SETS; i++) {
        const int n = ntok[i] ? ntok[i] : 1;
        float *x = malloc((size_t)n * E * sizeof(float));
        for (int t = 0; t < ntok[i]; t++)
            memcpy(x + t * E, src.x + toks[i][t] * E, E * sizeof(float));
        kern_act xa;
        CHECK_EQ_INT(kern_act_init(&xa, E, n), 0);
        CHECK_EQ_INT(kern_act_init(&qref[i], F, n), 0);
        href[i] = malloc((size_t)n * ldh * sizeof(float));
        oref[i] = malloc((size_t)n * ldo * sizeof(float));
        kern_quantize(&xa, x, E, E, ntok[i]);
        kern_swiglu_with(KERN_SCALAR, g[i].m, u[i].m, &xa, href[i], ldh, 0, g[i].m->n_tiles);
        kern_quantize(&qref[i], href[i], F, ldh, ntok[i]);
        kern_gemv_tiles_with(KERN_SCALAR, d[i].m, &qref[i], oref[i], ldo, 0, d[i].m->n_tiles);
        kern_act_release(&xa);
        free(x);
    }
    /* the layer's layout: groups of 2 or more rows at multiples of 8 */
    int start[SETS], pos = 0;
    for (int i = 0; i < SETS; i++) {
        if (ntok[i] >= 2) pos = (pos + 7) / 8 * 8;
        start[i] = pos;
        pos += ntok[i];
    }
    kern_act xq, hq, xv[SETS], hv[SETS];
    CHECK_EQ_INT(kern_act_init(&xq, E, pos), 0);
    CHECK_EQ_INT(kern_act_init(&hq, F, pos), 0);
    float *h = malloc((size_t)pos * ldh * sizeof(float)),
          *o = malloc((size_t)pos * ldo * sizeof(float));
    for (int p = 0; p < KERN_NPATHS; p++) {
        if (!kern_path_available(p)) continue;
        for (int64_t i = 0; i < pos * ldh; i++)
            h[i] = -999.0f;
        for (int64_t i = 0; i < pos * ldo; i++)
            o[i] = -999.0f;
        kern_set sw[SETS], dn[SETS];
        for (int i = 0; i < SETS; i++) {
            if (i == 3) /* tokens 0..8 in order: read in place */
                kern_act_view(&xv[i], &src.a, 0, ntok[i]);
            else if (ntok[i] == 1)
                kern_act_view(&xv[i], &src.a, toks[i][0], 1);
            else {
                kern_act_view(&xv[i], &xq, start[i], ntok[i]);
                kern_act_gather(&xv[i], &src.a, toks[i], ntok[i]);
            }
            kern_act_view(&hv[i], &hq, start[i], ntok[i]);
            sw[i] = (kern_set){g[i].m, u[i].m, &xv[i], h + start[i] * ldh, ldh, &hv[i]};
            dn[i] = (kern_set){d[i].m, NULL, &hv[i], o + start[i] * ldo, ldo, NULL};
        }
        kern_swiglu_sets_with(p, pl, SETS, sw, NULL);
        kern_matmul_sets_with(p, pl, SETS, dn);
        for (int i = 0; i < SETS; i++) {
            const int n = ntok[i], nb = (int)(F / 32);
            CHECK_EQ_INT(hv[i].n, n);
            CHECK_EQ_INT(hv[i].cols, F);
            bool same = true;
            for (int t = 0; t < n; t++) {
                same = same && !memcmp(h + (start[i] + t) * ldh, href[i] + t * ldh, F * 4);
                same = same && !memcmp(o + (start[i] + t) * ldo, oref[i] + t * ldo, D * 4);
                same = same && h[(start[i] + t) * ldh + F] == -999.0f &&
                       o[(start[i] + t) * ldo + D] == -999.0f;
            }
            same = same && !memcmp(hv[i].q, qref[i].q, (size_t)n * F) &&
                   !memcmp(hv[i].d, qref[i].d, (size_t)n * nb * 4) &&
                   !memcmp(hv[i].s, qref[i].s, (size_t)n * nb * 4) &&
                   !memcmp(hv[i].s16, qref[i].s16, (size_t)n * nb * 8);
            if (!same)
                fprintf(stderr, "sets %s path %s threads %d: expert %d (%d tokens) differs\n",
                        quant_traits(type)->name, kern_path_name(p), pool_n_threads(pl), i, n);
            CHECK(same);
        }
        /* rows of no expert (the padding before the groups at 8 and 24) are not written */
        CHECK(start[3] == 8 && start[4] == 24);
        CHECK_NEAR(h[5 * ldh], -999.0f, 0);
        CHECK_NEAR(o[20 * ldo], -999.0f, 0);
    }
    for (int i = 0; i < SETS; i++) {
        kern_act_release(&qref[i]);
        free(href[i]), free(oref[i]);
        fixture_free(&g[i]), fixture_free(&u[i]), fixture_free(&d[i]);
    }
    kern_act_release(&xq), kern_act_release(&hq);
    free(h), free(o);
    fixture_free(&src);
}

static void test_rmsnorm(void) {
    float x[1000], w[1000], y0[1000], y1[1000];
    for (int i = 0; i < 1000; i++)
        x[i] = frand() * 3, w[i] = 1 + frand() * 0.1f;
    for (int n = 1; n <= 1000; n += 333) {
        double ss = 0;
        for (int i = 0; i < n; i++)
            ss += (double)x[i] * x[i];
        float sc = 1.0f / sqrtf((float)(ss / n) + 1e-5f);
        kern_rmsnorm_with(KERN_SCALAR, y0, x, w, n, 1e-5f);
        kern_rmsnorm_with(kern_best(), y1, x, w, n, 1e-5f);
        for (int i = 0; i < n; i++) {
            CHECK_NEAR(y0[i], (x[i] * sc) * w[i], 0);
            CHECK_NEAR(y1[i], y0[i], 1e-6 * fabs(y0[i]) + 1e-7);
        }
    }
    memcpy(y0, x, sizeof x);
    kern_rmsnorm(y0, y0, w, 1000, 1e-5f); /* in place */
    kern_rmsnorm_with(KERN_SCALAR, y1, x, w, 1000, 1e-5f);
    for (int i = 0; i < 1000; i++)
        CHECK_NEAR(y0[i], y1[i], 1e-6 * fabs(y1[i]) + 1e-7);
}

/* LFM2_KERNEL caps the path (the best available at or below the one named), read once at first
 * use: checked in a child. */
static void test_env_override(void) {
    static const char *const names[] = {"scalar", "avx2", "avxvnni", "avx512"};
    for (int p = 0; p < KERN_NPATHS; p++) {
        char out[64];
        cpu_want_child(names[p], "--print-kernel", out, sizeof out);
        CHECK(out[0] != 0);
        int want = KERN_SCALAR; /* the best available at or below p */
        for (int q = 0; q <= p; q++)
            if (kern_path_available(q)) want = q;
        CHECK_STR(out, kern_path_name(want));
    }
}

/* ---- which code ran: engine/cpu.h's per-thread counts ---- */

typedef struct ran {
    uint64_t n[CPU_NSITES][CPU_NLEVELS];
} ran;

static ran ran_now(void) {
    ran r;
    for (int s = 0; s < CPU_NSITES; s++)
        for (int l = 0; l < CPU_NLEVELS; l++)
            r.n[s][l] = cpu_runs((cpu_site)s, l);
    return r;
}

/* Since before, site ran code of level lvl and of no other level. */
static void check_ran(const ran *before, cpu_site site, int lvl, const char *what) {
    for (int l = 0; l < CPU_NLEVELS; l++) {
        unsigned long long d = cpu_runs(site, l) - before->n[site][l];
        if (l == lvl ? d == 0 : d != 0) {
            fprintf(stderr, "%s: %s code ran %llu times at level %s; want it only at %s\n", what,
                    cpu_site_name(site), d, cpu_level_name(l), cpu_level_name(lvl));
            CHECK(!"the chosen path runs, and only it");
        }
    }
}

static const int path_level[KERN_NPATHS] = {CPU_SCALAR, CPU_AVX2, CPU_AVXVNNI, CPU_AVX512};
static int silu_at(int lvl) { /* kern_silu_mul: scalar, baseline-vector, AVX2 and AVX-512 code */
    return lvl == CPU_SCALAR || lvl == CPU_AVX512 ? lvl : lvl >= CPU_AVX2 ? CPU_AVX2 : CPU_BASE;
}
static int avx2_at(int lvl) { /* RMSNorm and the f16 GEMV: plain C or AVX2 */
    return lvl >= CPU_AVX2 ? CPU_AVX2 : CPU_SCALAR;
}

/* Every entry point without a path argument runs the code of the level LFM2_KERNEL and the CPU
 * give (LFM2_KERNEL=scalar: the plain C twins, nothing else), and each _with(path) that path's. */
static void test_dispatch(pool *pl) {
    const int lvl = cpu_want_level();
    CHECK_EQ_INT(cpu_level_best(), lvl);
    const int tiles = lvl == CPU_BASE ? CPU_SCALAR : lvl;
    enum { R = 40, C = 64, N = 3 };
    fixture f = {0}, g = {0};
    if (fixture_make(&f, QT_Q4_0, R, C, N) || fixture_make(&g, QT_Q8_0, R, C, N)) return;
    static float y[N * R], u[N * R], w[C];
    static uint16_t h[R * C];
    for (int i = 0; i < C; i++)
        w[i] = 1;
    for (int i = 0; i < R * C; i++)
        h[i] = quant_f32_to_f16(frand());
    ran r = ran_now();
    kern_gemv_tiles(f.m, &f.a, y, R, 0, f.m->n_tiles);
    check_ran(&r, CPU_SITE_TILES, tiles, "kern_gemv_tiles");
    r = ran_now();
    kern_matmul(pl, f.m, &f.a, y, R);
    check_ran(&r, CPU_SITE_TILES, tiles, "kern_matmul");
    r = ran_now();
    kern_swiglu(pl, f.m, g.m, &f.a, y, R);
    check_ran(&r, CPU_SITE_TILES, tiles, "kern_swiglu");
    check_ran(&r, CPU_SITE_SILU, silu_at(lvl), "kern_swiglu");
    r = ran_now();
    kern_silu_mul(u, y, y, N * R);
    check_ran(&r, CPU_SITE_SILU, silu_at(lvl), "kern_silu_mul");
    r = ran_now();
    kern_rmsnorm(y, f.x, w, C, 1e-5f);
    check_ran(&r, CPU_SITE_RMSNORM, avx2_at(lvl), "kern_rmsnorm");
    r = ran_now();
    kern_gemv_half(h, false, C, 0, R, f.x, C, N, y, R);
    kern_matmul_half(pl, h, true, R, C, f.x, C, N, y, R);
    check_ran(&r, CPU_SITE_HALF, avx2_at(lvl), "kern_gemv_half");
    r = ran_now();
    kern_quantize(&f.a, f.x, C, C, N);
    check_ran(&r, CPU_SITE_QUANT, CPU_SCALAR, "kern_quantize");
    for (int p = 0; p < KERN_NPATHS; p++) {
        if (!kern_path_available(p)) continue;
        const int pl_ = path_level[p];
        r = ran_now();
        kern_gemv_tiles_with(p, f.m, &f.a, y, R, 0, f.m->n_tiles);
        kern_swiglu_with(p, f.m, g.m, &f.a, y, R, 0, f.m->n_tiles);
        check_ran(&r, CPU_SITE_TILES, pl_, kern_path_name(p));
        r = ran_now();
        kern_silu_mul_with(p, u, y, y, N * R);
        check_ran(&r, CPU_SITE_SILU, silu_at(pl_), kern_path_name(p));
        r = ran_now();
        kern_rmsnorm_with(p, y, f.x, w, C, 1e-5f);
        check_ran(&r, CPU_SITE_RMSNORM, avx2_at(pl_), kern_path_name(p));
        r = ran_now();
        kern_gemv_half_with(p, h, false, C, 0, R, f.x, C, N, y, R);
        check_ran(&r, CPU_SITE_HALF, avx2_at(pl_), kern_path_name(p));
    }
    fixture_free(&f);
    fixture_free(&g);
}

/* What ran on this thread over the whole test, per site and level. */
static void print_ran(void) {
    static const cpu_site sites[] = {CPU_SITE_TILES, CPU_SITE_SILU, CPU_SITE_RMSNORM, CPU_SITE_HALF,
                                     CPU_SITE_QUANT};
    printf("paths run (calls on the main thread):");
    for (size_t i = 0; i < sizeof sites / sizeof sites[0]; i++) {
        printf(" %s", cpu_site_name(sites[i]));
        for (int l = 0; l < CPU_NLEVELS; l++)
            if (cpu_runs(sites[i], l))
                printf(" %s=%llu", cpu_level_name(l), (unsigned long long)cpu_runs(sites[i], l));
        printf(";");
    }
    printf("\n");
}

/* f16/bf16 GEMV: every path within float rounding of a double-precision dot. */
static void test_half(pool *pl) {
    static const int64_t shapes[][2] = {{1, 16}, {7, 40}, {33, 256}, {5, 1000}};
    for (int bf = 0; bf < 2; bf++)
        for (size_t si = 0; si < 4; si++) {
            int64_t rows = shapes[si][0], cols = shapes[si][1];
            int n = 3;
            uint16_t *w = malloc((size_t)rows * cols * 2);
            float *x = malloc((size_t)n * cols * 4), *y = malloc((size_t)n * rows * 4);
            for (int64_t i = 0; i < rows * cols; i++)
                w[i] = bf ? quant_f32_to_bf16(frand()) : quant_f32_to_f16(frand());
            for (int64_t i = 0; i < n * cols; i++)
                x[i] = frand();
            for (int p = 0; p <= KERN_NPATHS; p++) {
                if (p < KERN_NPATHS && !kern_path_available(p)) continue;
                if (p < KERN_NPATHS)
                    kern_gemv_half_with(p, w, bf, cols, 0, rows, x, cols, n, y, rows);
                else
                    kern_matmul_half(pl, w, bf, rows, cols, x, cols, n, y, rows);
                for (int t = 0; t < n; t++)
                    for (int64_t r = 0; r < rows; r++) {
                        double e = 0, mag = 0;
                        for (int64_t j = 0; j < cols; j++) {
                            double wv = bf ? quant_bf16_to_f32(w[r * cols + j])
                                           : quant_f16_to_f32(w[r * cols + j]);
                            e += wv * x[t * cols + j];
                            mag += fabs(wv * x[t * cols + j]);
                        }
                        CHECK_NEAR(y[t * rows + r], e, 1e-6 * mag + 1e-7);
                    }
            }
            free(w), free(x), free(y);
        }
}

/* kern_silu_mul: the same bits on every path (awkward lengths: 16-lane blocks and padded
 * tails, y aliasing g), close to silu(g) * u computed in double, and the edge values. */
static void test_silu(void) {
    enum { N = 1000 };
    static float g[N], u[N], y0[N], y1[N], y2[N];
    uint64_t r = 99;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        float v = (float)((int64_t)(r >> 33) % 200001 - 100000) * 1e-3f; /* [-100, 100] */
        if (i % 7 == 0) v *= 0.01f;
        g[i] = v;
        u[i] = 0.5f + (float)(i % 13) * 0.25f;
    }
    g[1] = 0.0f, g[2] = -0.0f, g[3] = 88.0f, g[4] = -88.0f, g[5] = INFINITY, g[6] = 1e-30f;
    g[7] = NAN, g[8] = -INFINITY; /* bits compared only */
    int bad_bits = 0, bad_val = 0;
    for (int n = 1; n <= N; n += n < 40 ? 1 : 97) {
        kern_silu_mul_with(KERN_SCALAR, y0, g, u, n);
        for (int p = 0; p < KERN_NPATHS; p++) {
            kern_silu_mul_with(p, y1, g, u, n);
            memcpy(y2, g, (size_t)n * sizeof *y2);
            kern_silu_mul_with(p, y2, y2, u, n); /* in place on g */
            if (memcmp(y0, y1, (size_t)n * sizeof *y0) || memcmp(y0, y2, (size_t)n * sizeof *y0))
                bad_bits++;
            memcpy(y2, u, (size_t)n * sizeof *y2);
            kern_silu_mul_with(p, y2, g, y2, n); /* in place on u */
            if (memcmp(y0, y2, (size_t)n * sizeof *y0)) bad_bits++;
        }
    }
    kern_silu_mul(y1, g, u, N);
    for (int i = 0; i < N; i++) {
        if (i == 5 || i == 7 || i == 8) continue;
        double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        double tol = 4e-7 * fabs(want) + 1e-35; /* (e^-|g| is 0 below -87) */
        if (!(fabs(y1[i] - want) <= tol)) {
            if (bad_val++ < 5)
                fprintf(stderr, "silu: g %g u %g: got %.9g want %.9g\n", g[i], u[i], y1[i], want);
        }
    }
    CHECK_EQ_INT(bad_bits, 0);
    CHECK_EQ_INT(bad_val, 0);
    CHECK(y1[5] == INFINITY);
    CHECK(y1[1] == 0.0f && y1[2] == 0.0f);
    CHECK(y1[4] <= 0.0f && y1[4] > -1e-30f);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--print-kernel")) {
        printf("%s\n", kern_name());
        return 0;
    }
    test_env_override();
    printf("level in use: %s (LFM2_KERNEL=%s); kernel: %s; tested paths:",
           cpu_level_name(cpu_level_best()), getenv("LFM2_KERNEL") ? getenv("LFM2_KERNEL") : "",
           kern_name());
    for (int p = 0; p < KERN_NPATHS; p++)
        if (kern_path_available(p)) printf(" %s", kern_path_name(p));
    printf("\n");
    CHECK(kern_path_available(KERN_SCALAR));
    CHECK(kern_path_available(kern_best()));
    CHECK_STR(kern_path_name(KERN_AVX512), "avx512-vnni");
    test_quantize();
    static const uint32_t types[] = {QT_Q4_0, QT_Q4_1, QT_Q8_0, QT_Q5_0, QT_Q5_1, QT_F16};
    static const int64_t rows_list[] = {1, 7, 8, 13, 33};
    static const int64_t cols_list[] = {32, 64, 96, 288};
    static const int batch[] = {1, 2, 3, 4, 5, 8, 16};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t ri = 0; ri < 5; ri++)
            for (size_t ci = 0; ci < 4; ci++)
                for (size_t bi = 0; bi < 7; bi += (ri + ci) % 2 ? 2 : 1)
                    test_gemv(types[ti], rows_list[ri], cols_list[ci], batch[bi]);
    static const uint32_t ktypes[] = {QT_Q4_K, QT_Q5_K, QT_Q6_K};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t ri = 0; ri < 5; ri++)
            for (size_t bi = 0; bi < 7; bi++)
                test_gemv(ktypes[ti], rows_list[ri], bi % 2 ? 256 : 512, batch[bi]);
    /* wide rows (ffn_down's shape class): batches whose activations outgrow L1, where the
     * AVX-512 batch kernel shortens its weight prefetch */
    static const uint32_t wtypes[] = {QT_Q4_0, QT_Q4_1, QT_Q8_0};
    static const int wbatch[] = {2, 5, 8, 16};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t bi = 0; bi < 4; bi++)
            test_gemv(wtypes[ti], bi % 2 ? 13 : 33, 1600, wbatch[bi]);
    for (size_t ti = 0; ti < 3; ti++)
        test_gemv(ktypes[ti], 13, 5120, ti == 1 ? 8 : 2);
    /* prefill-sized batches: the AVX2 kernel prepares codes and factors in chunks of 32
     * groups (several a row here, the last one short, partial tiles) */
    test_gemv(QT_Q4_0, 37, 1600, 70);
    test_gemv(QT_Q4_1, 21, 1600, 64);
    for (size_t ti = 0; ti < 3; ti += 2)
        test_gemv(ktypes[ti], 37, 4864, 17);
    char err[256];
    for (int nt = 1; nt <= 3; nt++) {
        pool *pl = pool_new(nt, err, sizeof err);
        CHECK(pl != NULL);
        test_drivers(pl, QT_Q4_0, 77, 256, 3);
        test_drivers(pl, QT_Q8_0, 77, 256, 3);
        test_drivers(pl, QT_Q4_K, 77, 256, 3);
        test_sets(pl, QT_Q4_0);
        test_sets(pl, QT_Q4_K);
        test_sets(pl, QT_Q6_K);
        pool_free(pl);
    }
    test_drivers(NULL, QT_Q5_1, 77, 256, 3);
    /* prefill-sized: SwiGLU's blocks of tiles and of tokens (a last short one of each), the
     * matmul's cache blocking, the AVX2 kernel's prepared chunks (two a row); 6400 columns (200
     * groups: six chunks of 32 and one of 8) over 13 tiles (the last of 4 rows): the AVX2
     * kernel's chunk-outer order for a block of 128 tokens (K kinds), then 9 tokens tile-outer */
    {
        pool *pl = pool_new(2, err, sizeof err);
        CHECK(pl != NULL);
        static const uint32_t ptypes[] = {QT_Q4_0, QT_Q4_K, QT_Q6_K};
        for (size_t ti = 0; ti < 3; ti++) {
            test_drivers(pl, ptypes[ti], 300, 1280, 137);
            test_drivers(pl, ptypes[ti], 100, 6400, 137);
        }
        pool_free(pl);
    }
    /* every repacked kind: I4, I4M, I8 (q8_0, q5_0), I8M, I4K, I5K, I6 */
    static const uint32_t stypes[] = {QT_Q4_0, QT_Q4_1, QT_Q8_0, QT_Q5_0,
                                      QT_Q5_1, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    for (size_t ti = 0; ti < sizeof stypes / sizeof stypes[0]; ti++)
        test_sets(NULL, stypes[ti]);
    {
        pool *pl = pool_new(2, err, sizeof err);
        test_half(pl);
        pool_free(pl);
    }
    test_rmsnorm();
    test_silu();
    {
        pool *pl = pool_new(2, err, sizeof err);
        test_dispatch(pl);
        pool_free(pl);
    }
    print_ran();
    return check_done("test_kern");
}
