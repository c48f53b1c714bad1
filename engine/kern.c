/* kern.c: kernel dispatch, the scalar reference kernels, activation quantization, fused helpers. */
#include "engine/kern.h"

#ifdef __clang__ /* clang contracts a * b + c into FMA by default; GCC does not under -std=c11 */
#pragma STDC FP_CONTRACT OFF
#endif
#include "engine/vexp.h" /* after the pragma: its lanes must not contract either */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "engine/cpu.h"
#include "engine/invariant.h"
#include "quant/quant.h"

/* ---- dispatch: engine/cpu.h decides, each function here runs its best code at or below ---- */

static const char *const path_names[KERN_NPATHS] = {"scalar", "avx2", "avx-vnni", "avx512-vnni"};
static const kern_tiles_fn path_fns[KERN_NPATHS] = {kern_tiles_scalar, kern_tiles_avx2,
                                                    kern_tiles_avxvnni, kern_tiles_avx512};
/* the level each path needs, and the tile path each level runs */
static const cpu_level path_level[KERN_NPATHS] = {CPU_SCALAR, CPU_AVX2, CPU_AVXVNNI, CPU_AVX512};
static const int level_path[CPU_NLEVELS] = {KERN_SCALAR, KERN_SCALAR, KERN_AVX2, KERN_AVXVNNI,
                                            KERN_AVX512};

/* The highest level this CPU supports at or below path's (a path the CPU lacks runs the best
 * code below it). */
static cpu_level cap(int path) {
    return cpu_level_at_most(path >= 0 && path < KERN_NPATHS ? path_level[path] : CPU_SCALAR);
}

int kern_best(void) {
    return level_path[cpu_level_best()];
}

bool kern_path_available(int path) {
    return path >= 0 && path < KERN_NPATHS && cpu_level_supported(path_level[path]);
}

const char *kern_path_name(int path) {
    return path >= 0 && path < KERN_NPATHS ? path_names[path] : "unknown";
}
const char *kern_name(void) {
    return kern_path_name(kern_best());
}

/* The tile kernel level lvl runs, counted as having run on the calling thread. */
static kern_tiles_fn tiles_fn(cpu_level lvl) {
    const int path = level_path[lvl];
    cpu_ran(CPU_SITE_TILES, path_level[path]);
    return path_fns[path];
}

/* ---- activations ---- */

int kern_act_init(kern_act *a, int64_t cols, int cap) {
    memset(a, 0, sizeof *a);
    if (cols <= 0 || cols % 32 || cap <= 0) return -1;
    int64_t nb = cols / 32;
    a->cols = a->max_cols = cols;
    a->cap = cap;
    a->q = aligned_alloc(64, ((size_t)cap * cols + 63) / 64 * 64);
    a->d = malloc((size_t)cap * nb * sizeof *a->d);
    a->s = malloc((size_t)cap * nb * sizeof *a->s);
    a->s16 = malloc((size_t)cap * nb * 2 * sizeof *a->s16);
    const size_t nr = (size_t)(cap + 7) / 8 * 8 * (size_t)nb; /* runs of 8 x blocks */
    a->gq = aligned_alloc(64, nr * 32);
    a->gr = malloc(nr * 2 * sizeof *a->gr);
    a->g6 = malloc(nr * 2 * sizeof *a->g6);
    if (!a->q || !a->d || !a->s || !a->s16 || !a->gq || !a->gr || !a->g6) {
        kern_act_release(a);
        return -1;
    }
    return 0;
}

void kern_act_release(kern_act *a) {
    free(a->q);
    free(a->d);
    free(a->s);
    free(a->s16);
    free(a->gq);
    free(a->gr);
    free(a->g6);
    memset(a, 0, sizeof *a);
}

void kern_quantize(kern_act *a, const float *x, int64_t cols, int64_t ldx, int n) {
    cpu_ran(CPU_SITE_QUANT, CPU_SCALAR);
    a->cols = cols;
    kern_quantize_range(a, x, ldx, 0, n, 0, cols / 32);
    if (n >= 2) kern_act_pack(a, 0, n, 0, cols / 32);
    a->n = n;
}

void kern_quantize_range(kern_act *a, const float *x, int64_t ldx, int t0, int t1, int64_t b0,
                         int64_t b1) {
    const int64_t nb = a->cols / 32;
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * ldx;
        int8_t *q = a->q + (size_t)t * a->cols;
        for (int64_t b = b0; b < b1; b++) {
            const float *xb = xt + b * 32;
            float amax = 0;
            for (int j = 0; j < 32; j++) {
                float v = fabsf(xb[j]);
                amax = v > amax ? v : amax; /* (fmaxf is a libm call at baseline x86-64) */
            }
            float id = amax > 0 ? 127.0f / amax : 0.0f;
            int32_t s = 0, s_lo = 0;
            for (int j = 0; j < 32; j++) {
                /* round half to even by the 1.5 * 2^23 trick (|x * id| <= 127.5): what
                 * nearbyintf does, without the call */
                float r = (xb[j] * id + 12582912.0f) - 12582912.0f;
                int v = r >= -127.0f && r <= 127.0f ? (int)r : r > 0 ? 127 : r < 0 ? -127 : 0;
                q[b * 32 + j] = (int8_t)v;
                s += v;
                if (j == 15) s_lo = s;
            }
            a->d[(size_t)t * nb + b] = amax / 127.0f;
            a->s[(size_t)t * nb + b] = s;
            a->s16[((size_t)t * nb + b) * 2] = s_lo;
            a->s16[((size_t)t * nb + b) * 2 + 1] = s - s_lo;
        }
    }
}

void kern_act_pack(kern_act *a, int t0, int t1, int64_t b0, int64_t b1) {
    if (!kern_path_available(KERN_AVX512)) return; /* its batch kernel is the only reader */
    const int64_t nb = a->cols / 32;
    for (int64_t b = b0; b < b1; b++)
        for (int t = t0; t < t1; t++) {
            const size_t i = (size_t)t * nb + b, k = kern_act_at(a, b, t);
            memcpy(a->gq + k * 32, a->q + (size_t)t * a->cols + b * 32, 32);
            memcpy(&a->gr[2 * k], &a->d[i], sizeof a->gr[0]);
            a->gr[2 * k + 1] = -8 * a->s[i];
            a->g6[2 * k] = -32 * a->s16[2 * i];
            a->g6[2 * k + 1] = -32 * a->s16[2 * i + 1];
        }
}

void kern_act_view(kern_act *v, const kern_act *a, int t0, int n) {
    INVARIANT(t0 >= 0 && n >= 0 && t0 + n <= a->cap && (n < 2 || t0 % 8 == 0));
    *v = *a;
    v->cap = a->cap - t0;
    v->n = n;
    v->q = a->q + (size_t)t0 * a->cols;
    v->d = a->d + (size_t)t0 * (a->cols / 32);
    v->s = a->s + (size_t)t0 * (a->cols / 32);
    v->s16 = a->s16 + (size_t)t0 * (a->cols / 32) * 2;
    /* runs of 8 tokens: a run holds 8 x nb blocks at a->cols */
    const size_t run = (size_t)(t0 / 8) * (size_t)(a->cols / 32) * 8;
    v->gq = a->gq + run * 32;
    v->gr = a->gr + run * 2;
    v->g6 = a->g6 + run * 2;
}

void kern_act_gather(kern_act *dst, const kern_act *src, const int *tok, int n) {
    INVARIANT(n <= dst->cap && src->cols <= dst->max_cols);
    const int64_t cols = src->cols, nb = cols / 32;
    dst->cols = cols;
    for (int i = 0; i < n; i++) {
        const size_t t = (size_t)tok[i];
        memcpy(dst->q + (size_t)i * cols, src->q + t * cols, (size_t)cols);
        memcpy(dst->d + (size_t)i * nb, src->d + t * nb, (size_t)nb * sizeof *dst->d);
        memcpy(dst->s + (size_t)i * nb, src->s + t * nb, (size_t)nb * sizeof *dst->s);
        memcpy(dst->s16 + (size_t)i * nb * 2, src->s16 + t * nb * 2,
               (size_t)nb * 2 * sizeof *dst->s16);
    }
    if (n >= 2) kern_act_pack(dst, 0, n, 0, nb);
    dst->n = n;
}

/* ---- the scalar reference: same operations, in the same order, as kern_x86.h's lanes ---- */

static float ld_h(const uint8_t *p) {
    return quant_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

void kern_tiles_scalar(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                       int64_t ldy, int64_t t0, int64_t t1) {
    const bool i5 = m->kind == RP_I5K;
    const bool i4 = m->kind == RP_I4 || m->kind == RP_I4M || m->kind == RP_I4K || i5;
    const bool i6 = m->kind == RP_I6;
    /* where the scale (and min) fields start */
    const size_t cb = i5 ? 160 : i4 || i6 ? 128 : 256;
    const int64_t ng = m->n_groups, cols = m->cols;
    for (int64_t tile = t0; tile < t1; tile++) {
        const uint8_t *tp = m->data + (size_t)tile * m->tile_bytes;
        int64_t left = m->rows - tile * RP_ROWS;
        int nr = left < RP_ROWS ? (int)left : RP_ROWS;
        for (int t = 0; t < ntok; t++) {
            const int8_t *aq = a->q + (size_t)(tok0 + t) * cols;
            const float *ad = a->d + (size_t)(tok0 + t) * ng;
            const int32_t *as = a->s + (size_t)(tok0 + t) * ng;
            float acc[RP_ROWS] = {0};
            for (int64_t g = 0; g < ng; g++) {
                const uint8_t *gp = tp + (size_t)g * m->group_bytes;
                const int8_t *ab = aq + g * 32;
                for (int r = 0; r < RP_ROWS; r++) {
                    int32_t is = 0;
                    if (i6) { /* two halves of 16, each with its scale and zero point 32 */
                        int32_t i0 = 0, i1 = 0;
                        for (int c = 0; c < 4; c++)
                            for (int k = 0; k < 4; k++) {
                                uint8_t byte = gp[c * 32 + r * 4 + k];
                                int lo = (byte & 15) | ((gp[128 + r * 4 + k] >> (2 * c)) & 3) << 4;
                                int hi = (byte >> 4) | ((gp[160 + r * 4 + k] >> (2 * c)) & 3) << 4;
                                i0 += lo * ab[4 * c + k];
                                i1 += hi * ab[16 + 4 * c + k];
                            }
                        const uint8_t *h = tp + (size_t)ng * m->group_bytes + (size_t)(g / 8) * 16;
                        float d = ld_h(h + 2 * r);
                        float s0 = d * (float)(int8_t)gp[192 + r],
                              s1 = d * (float)(int8_t)gp[200 + r];
                        const int32_t *s16 = a->s16 + ((size_t)(tok0 + t) * ng + g) * 2;
                        acc[r] = fmaf((float)(i0 - 32 * s16[0]), s0 * ad[g], acc[r]);
                        acc[r] = fmaf((float)(i1 - 32 * s16[1]), s1 * ad[g], acc[r]);
                        continue;
                    }
                    if (i4) {
                        for (int c = 0; c < 4; c++)
                            for (int k = 0; k < 4; k++) {
                                uint8_t byte = gp[c * 32 + r * 4 + k];
                                int lo = byte & 15, hi = byte >> 4;
                                if (i5) {
                                    uint8_t pl = gp[128 + r * 4 + k];
                                    lo |= ((pl >> c) & 1) << 4;
                                    hi |= ((pl >> (4 + c)) & 1) << 4;
                                }
                                is += lo * ab[4 * c + k] + hi * ab[16 + 4 * c + k];
                            }
                    } else {
                        for (int c = 0; c < 8; c++)
                            for (int k = 0; k < 4; k++)
                                is += gp[c * 32 + r * 4 + k] * ab[4 * c + k];
                    }
                    float s, b;
                    if (m->kind == RP_I4K || i5) { /* exact: f16 factors times 6-bit codes */
                        const uint8_t *h = tp + (size_t)ng * m->group_bytes + (size_t)(g / 8) * 32;
                        s = ld_h(h + 2 * r) * (float)gp[cb + r];
                        b = -(ld_h(h + 16 + 2 * r) * (float)gp[cb + 8 + r]);
                    } else {
                        s = ld_h(gp + cb + 2 * r);
                        b = m->has_min ? ld_h(gp + cb + 16 + 2 * r) : 0.0f;
                    }
                    if (!m->has_min) {
                        acc[r] = fmaf((float)(is - m->zero * as[g]), s * ad[g], acc[r]);
                    } else {
                        float tt = (float)is * s;
                        tt = fmaf(b, (float)as[g], tt);
                        acc[r] = fmaf(tt, ad[g], acc[r]);
                    }
                }
            }
            memcpy(y + (size_t)t * ldy + (tile - t0) * RP_ROWS, acc, (size_t)nr * sizeof(float));
        }
    }
}

void kern_gemv_tiles_with(int path, const rp_matrix *m, const kern_act *a, float *y, int64_t ldy,
                          int64_t t0, int64_t t1) {
    tiles_fn(cap(path))(m, a, 0, a->n, y, ldy, t0, t1);
}

void kern_gemv_tiles(const rp_matrix *m, const kern_act *a, float *y, int64_t ldy, int64_t t0,
                     int64_t t1) {
    tiles_fn(cpu_level_best())(m, a, 0, a->n, y, ldy, t0, t1);
}

/* ---- parallel drivers ---- */

#define KERN_MAX_MATS 8

typedef struct mm_job {
    int n;
    const rp_matrix *const *ms;
    const kern_act *a;
    float *const *ys;
    const int64_t *ldys;
    int64_t first[KERN_MAX_MATS + 1]; /* prefix sums of n_tiles */
    kern_tiles_fn fn;
} mm_job;

/* pool_split over pairs of tiles (the AVX-512 path's unit for batches): [lo, hi) of n tiles. */
static void split_pairs(int64_t n, int n_tasks, int task, int64_t *lo, int64_t *hi) {
    pool_split((n + 1) / 2, n_tasks, task, lo, hi);
    *lo *= 2;
    *hi = *hi * 2 < n ? *hi * 2 : n;
    if (*lo > n) *lo = n;
}

/* Cache blocking of a prefill's tiles [t0, t1) x all tokens: runs of tiles of at most
 * MM_CHUNK_BYTES (an even number of tiles: the AVX-512 path's pairs), each crossed by blocks of
 * tokens whose codes take about MM_ACT_BYTES (multiples of 8 tokens: its runs), so a run's
 * weights and a block's codes both stay in L2 instead of every tile streaming all the tokens'
 * codes from L3. Batches of at most MM_TOK_MIN tokens (decode) run in one pass. The AVX2 path
 * gets blocks of KERN_AVX2_CO_TOKENS on the matrices it runs chunk-outer (kern.h), whose codes
 * then exceed MM_ACT_BYTES: only a chunk of them needs to stay in L2 there. The order of the
 * work changes no result. */
#ifndef MM_TOK_MIN
#define MM_TOK_MIN 64
#endif
#define MM_CHUNK_BYTES (192 << 10)
#define MM_ACT_BYTES (256 << 10)

static void mm_range(kern_tiles_fn fn, const rp_matrix *m, const kern_act *a, float *y, int64_t ldy,
                     int64_t t0, int64_t t1) {
    const int n = a->n;
    if (n <= MM_TOK_MIN) {
        fn(m, a, 0, n, y, ldy, t0, t1);
        return;
    }
    int64_t ch = MM_CHUNK_BYTES / (int64_t)m->tile_bytes, tb = MM_ACT_BYTES / m->cols;
    ch = ch < 2 ? 2 : ch & ~(int64_t)1;
    tb = tb < 16 ? 16 : tb > 128 ? 128 : tb & ~(int64_t)7;
    if (fn == kern_tiles_avx2 && kern_avx2_chunk_outer(m, KERN_AVX2_CO_TOKENS))
        tb = KERN_AVX2_CO_TOKENS; /* chunk-outer there: a chunk's codes stay in L2 */
    for (int64_t c0 = t0; c0 < t1; c0 += ch) {
        const int64_t c1 = c0 + ch < t1 ? c0 + ch : t1;
        for (int k = 0; k < n; k += (int)tb) {
            const int nt = n - k < tb ? n - k : (int)tb;
            fn(m, a, k, nt, y + (size_t)k * ldy + (c0 - t0) * RP_ROWS, ldy, c0, c1);
        }
    }
}

static void mm_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    mm_job *j = ctx;
    int64_t lo, hi;
    split_pairs(j->first[j->n], n_tasks, task, &lo, &hi);
    for (int i = 0; i < j->n && lo < hi; i++) {
        int64_t a0 = j->first[i], a1 = j->first[i + 1];
        if (hi <= a0 || lo >= a1) continue;
        int64_t t0 = (lo > a0 ? lo : a0) - a0, t1 = (hi < a1 ? hi : a1) - a0;
        mm_range(j->fn, j->ms[i], j->a, j->ys[i] + t0 * RP_ROWS, j->ldys[i], t0, t1);
    }
}

/* Tasks for a parallel region over `tiles` tiles: 8 per thread. The pool hands each thread a
 * contiguous run of them first (engine/pool.c), so each thread's reads stay one sequential stream
 * (memory bound decode: +10% over tasks claimed round robin) and the last ones even out threads
 * that run at different speeds. */
static int n_tasks_for(pool *p, int64_t tiles) {
    int nt = pool_n_threads(p);
    int64_t want = nt == 1 ? 1 : (int64_t)nt * 8;
    return (int)(want < tiles ? want : tiles);
}

void kern_matmul_n(pool *p, int n, const rp_matrix *const *ms, const kern_act *a, float *const *ys,
                   const int64_t *ldys) {
    for (int base = 0; base < n; base += KERN_MAX_MATS) {
        mm_job j = {.n = n - base < KERN_MAX_MATS ? n - base : KERN_MAX_MATS,
                    .ms = ms + base,
                    .a = a,
                    .ys = ys + base,
                    .ldys = ldys + base,
                    .fn = tiles_fn(cpu_level_best())};
        j.first[0] = 0;
        for (int i = 0; i < j.n; i++)
            j.first[i + 1] = j.first[i] + j.ms[i]->n_tiles;
        pool_run(p, mm_task, &j, n_tasks_for(p, j.first[j.n]));
    }
}

void kern_matmul(pool *p, const rp_matrix *m, const kern_act *a, float *y, int64_t ldy) {
    kern_matmul_n(p, 1, &m, a, &y, &ldy);
}

/* ---- SwiGLU ---- */

/* Tiles of gate, then of up, per pass: long runs of each weight stream (16 tiles, a 128-row
 * chunk, streams faster than alternating every 2; docs/benchmarks.md); a 16-token block of the
 * chunk's weights (< 300 KiB for 8-bit kinds at 1024 columns) stays in L2 for the prefill's
 * next block. */
#define SW_TILES 16

typedef vexp_f16 kv16f;
typedef vexp_u16 kv16u;

/* g * u * sigmoid(g) on 16 lanes, e = e^-|g| by engine/vexp.h */
static inline __attribute__((always_inline)) void silu16(kv16f *out, const kv16f *gp,
                                                         const kv16f *up) {
    const kv16f g = *gp, u = *up;
    kv16f e = (kv16f)((kv16u)g | 0x80000000u); /* -|g| */
    vexp16(&e);
    const kv16u pos = (kv16u)(g >= 0.0f);
    const kv16f num =
        (kv16f)(((kv16u)(kv16f){1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1} & pos) |
                ((kv16u)e & ~pos));
    *out = g * (num / (1.0f + e)) * u;
}

static inline __attribute__((always_inline)) void silu_mul_body(float *y, const float *g,
                                                                const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        kv16f gv, uv;
        memcpy(&gv, g + i, sizeof gv);
        memcpy(&uv, u + i, sizeof uv);
        silu16(&gv, &gv, &uv);
        memcpy(y + i, &gv, sizeof gv);
    }
    if (i < n) { /* the tail in zero-padded lanes: the same operations on each */
        kv16f gv = {0}, uv = {0};
        memcpy(&gv, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(&uv, u + i, (size_t)(n - i) * sizeof(float));
        silu16(&gv, &gv, &uv);
        memcpy(y + i, &gv, (size_t)(n - i) * sizeof(float));
    }
}

static void silu_mul_base(float *y, const float *g, const float *u, int64_t n) {
    silu_mul_body(y, g, u, n);
}

/* The scalar twin: silu16's operations on one lane at a time (vexp_scalar is vexp16's lane). */
static void silu_mul_scalar(float *y, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i], ui = u[i];
        const float e = vexp_scalar(-fabsf(gi));
        y[i] = gi * ((gi >= 0.0f ? 1.0f : e) / (1.0f + e)) * ui;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void silu_mul_512(float *y, const float *g,
                                                            const float *u, int64_t n) {
    silu_mul_body(y, g, u, n);
}
/* silu16's lane-wise operations on 8 lanes in AVX2 intrinsics (GCC moves the 16-lane vectors'
 * ymm halves through the stack); a short tail in zero-padded lanes */
__attribute__((target("avx2"))) static inline __m256 silu8(__m256 g, __m256 u) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = vexp8_avx2(_mm256_or_ps(g, _mm256_set1_ps(-0.0f))); /* e^-|g| */
    const __m256 num = _mm256_blendv_ps(e, one, _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_GE_OQ));
    return _mm256_mul_ps(_mm256_mul_ps(g, _mm256_div_ps(num, _mm256_add_ps(one, e))), u);
}
__attribute__((target("avx2"))) static void silu_mul_256(float *y, const float *g, const float *u,
                                                         int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, silu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        float gt[8] = {0}, ut[8] = {0};
        memcpy(gt, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(ut, u + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(gt, silu8(_mm256_loadu_ps(gt), _mm256_loadu_ps(ut)));
        memcpy(y + i, gt, (size_t)(n - i) * sizeof(float));
    }
}
#endif

/* kern_silu_mul at level lvl (supported), not counted */
static void silu_run(cpu_level lvl, float *y, const float *g, const float *u, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (lvl == CPU_AVX512) {
        silu_mul_512(y, g, u, n);
        return;
    }
    if (lvl == CPU_AVX2) {
        silu_mul_256(y, g, u, n);
        return;
    }
#endif
    if (lvl == CPU_SCALAR)
        silu_mul_scalar(y, g, u, n);
    else
        silu_mul_base(y, g, u, n);
}

static cpu_level silu_level(cpu_level lvl) {
    return lvl == CPU_SCALAR || lvl == CPU_AVX512 ? lvl : lvl >= CPU_AVX2 ? CPU_AVX2 : CPU_BASE;
}

void kern_silu_mul(float *y, const float *g, const float *u, int64_t n) {
    const cpu_level lvl = silu_level(cpu_level_best());
    cpu_ran(CPU_SITE_SILU, lvl);
    silu_run(lvl, y, g, u, n);
}

void kern_silu_mul_with(int path, float *y, const float *g, const float *u, int64_t n) {
    const cpu_level lvl = silu_level(cap(path));
    cpu_ran(CPU_SITE_SILU, lvl);
    silu_run(lvl, y, g, u, n);
}

/* kern_swiglu_with's work at level lvl (supported), tiles [t0, t1); counted by the caller */
static void swiglu_run(cpu_level lvl, const rp_matrix *gate, const rp_matrix *up, const kern_act *a,
                       float *y, int64_t ldy, int64_t t0, int64_t t1) {
    const kern_tiles_fn fn = path_fns[level_path[lvl]];
    const cpu_level sl = silu_level(lvl);
    /* SW_TILES tiles (an even number: the AVX-512 path runs pairs as 16-row passes) of gate,
     * then the same of up, then the combination, TB tokens at a time: a call's tiles stay in
     * L2 across the token blocks (2 x 16 tiles of 2048 columns are 295 KB in Q4_K, a block's
     * codes 128 KB), and the AVX2 kernel prepares each chunk of codes once for 64 tokens */
    enum { TB = 64, PR = SW_TILES * RP_ROWS };
    float gb[TB * PR], ub[TB * PR];
    for (int64_t tile = t0; tile < t1; tile += SW_TILES) {
        int64_t te = tile + SW_TILES < t1 ? tile + SW_TILES : t1;
        int64_t left = gate->rows - tile * RP_ROWS, span = (te - tile) * RP_ROWS;
        int nr = (int)(left < span ? left : span);
        for (int tb = 0; tb < a->n; tb += TB) {
            int nt = a->n - tb < TB ? a->n - tb : TB;
            fn(gate, a, tb, nt, gb, PR, tile, te);
            fn(up, a, tb, nt, ub, PR, tile, te);
            for (int t = 0; t < nt; t++)
                silu_run(sl, y + (size_t)(tb + t) * ldy + (tile - t0) * RP_ROWS, gb + t * PR,
                         ub + t * PR, nr);
        }
    }
}

void kern_swiglu_with(int path, const rp_matrix *gate, const rp_matrix *up, const kern_act *a,
                      float *y, int64_t ldy, int64_t t0, int64_t t1) {
    const cpu_level lvl = cap(path);
    tiles_fn(lvl);
    cpu_ran(CPU_SITE_SILU, silu_level(lvl));
    swiglu_run(lvl, gate, up, a, y, ldy, t0, t1);
}

typedef struct sw_job {
    const rp_matrix *gate, *up;
    const kern_act *a;
    float *y;
    int64_t ldy;
    cpu_level lvl;
} sw_job;

static void sw_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    sw_job *j = ctx;
    int64_t lo, hi;
    split_pairs(j->gate->n_tiles, n_tasks, task, &lo, &hi);
    if (lo < hi) swiglu_run(j->lvl, j->gate, j->up, j->a, j->y + lo * RP_ROWS, j->ldy, lo, hi);
}

void kern_swiglu(pool *p, const rp_matrix *gate, const rp_matrix *up, const kern_act *a, float *y,
                 int64_t ldy) {
    sw_job j = {gate, up, a, y, ldy, cpu_level_best()};
    tiles_fn(j.lvl);
    cpu_ran(CPU_SITE_SILU, silu_level(j.lvl));
    pool_run(p, sw_task, &j, n_tasks_for(p, gate->n_tiles));
}

/* ---- several products with their own matrices and activations, one region ---- */

#define KERN_MAX_SETS 64 /* sets per region (more run in further regions) */

typedef struct sets_job {
    const kern_set *s;
    int n;
    bool swiglu;
    cpu_level lvl;
    kern_quant_fn quant;
    int64_t unit[KERN_MAX_SETS];  /* tiles per task unit: 4 (whole 32-row blocks) when the set
                                     quantizes its output, else 2 (the AVX-512 path's pairs) */
    int64_t w[KERN_MAX_SETS];     /* cost of one unit */
    int64_t c[KERN_MAX_SETS + 1]; /* prefix sums of the sets' costs */
} sets_job;

/* Task: the units whose cost starts in its share [lo, hi) of the total, set by set. */
static void sets_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    const sets_job *j = ctx;
    int64_t lo, hi;
    pool_split(j->c[j->n], n_tasks, task, &lo, &hi);
    for (int i = 0; i < j->n && lo < hi; i++) {
        const int64_t c0 = j->c[i], w = j->w[i];
        if (hi <= c0 || lo >= j->c[i + 1]) continue;
        const kern_set *s = &j->s[i];
        const int64_t units = (j->c[i + 1] - c0) / w;
        int64_t u0 = lo <= c0 ? 0 : (lo - c0 + w - 1) / w, u1 = (hi - c0 + w - 1) / w;
        if (u1 > units) u1 = units;
        if (u0 >= u1) continue;
        const int64_t t0 = u0 * j->unit[i],
                      t1 = u1 * j->unit[i] < s->m->n_tiles ? u1 * j->unit[i] : s->m->n_tiles;
        float *y = s->y + t0 * RP_ROWS;
        if (!j->swiglu) {
            mm_range(path_fns[level_path[j->lvl]], s->m, s->a, y, s->ldy, t0, t1);
            continue;
        }
        swiglu_run(j->lvl, s->m, s->up, s->a, y, s->ldy, t0, t1);
        if (s->q) { /* its blocks of 32 outputs, complete and still in cache */
            const int64_t r1 = t1 * RP_ROWS < s->m->rows ? t1 * RP_ROWS : s->m->rows;
            j->quant(s->q, s->y, s->ldy, 0, s->a->n, t0 * RP_ROWS / 32, r1 / 32);
            if (s->a->n >= 2) kern_act_pack(s->q, 0, s->a->n, t0 * RP_ROWS / 32, r1 / 32);
        }
    }
}

static void sets_run(cpu_level lvl, pool *p, int n, const kern_set *sets, bool swiglu,
                     kern_quant_fn quant) {
    tiles_fn(lvl);
    if (swiglu) cpu_ran(CPU_SITE_SILU, silu_level(lvl));
    for (int base = 0; base < n; base += KERN_MAX_SETS) {
        sets_job j = {.s = sets + base,
                      .n = n - base < KERN_MAX_SETS ? n - base : KERN_MAX_SETS,
                      .swiglu = swiglu,
                      .lvl = lvl,
                      .quant = quant ? quant : kern_quantize_range};
        int64_t units = 0;
        bool quant_any = false;
        j.c[0] = 0;
        for (int i = 0; i < j.n; i++) {
            const kern_set *s = &j.s[i];
            INVARIANT_CMP(s->a->cols, ==, s->m->cols);
            const bool q = swiglu && s->q;
            if (swiglu) INVARIANT(s->up->rows == s->m->rows && s->up->cols == s->m->cols);
            if (q) {
                INVARIANT(s->m->rows % 32 == 0 && s->q->max_cols >= s->m->rows &&
                          s->q->cap >= s->a->n);
                s->q->cols = s->m->rows;
                s->q->n = s->a->n;
                quant_any = true;
            }
            j.unit[i] = q ? 4 : 2;
            j.w[i] = j.unit[i] * (s->a->n + 2);
            const int64_t u = s->a->n ? (s->m->n_tiles + j.unit[i] - 1) / j.unit[i] : 0;
            units += u;
            j.c[i + 1] = j.c[i] + u * j.w[i];
        }
        if (quant_any && !quant) cpu_ran(CPU_SITE_QUANT, CPU_SCALAR);
        if (units) pool_run(p, sets_task, &j, n_tasks_for(p, units));
    }
}

void kern_matmul_sets(pool *p, int n, const kern_set *sets) {
    sets_run(cpu_level_best(), p, n, sets, false, NULL);
}

void kern_matmul_sets_with(int path, pool *p, int n, const kern_set *sets) {
    sets_run(cap(path), p, n, sets, false, NULL);
}

void kern_swiglu_sets(pool *p, int n, const kern_set *sets, kern_quant_fn quant) {
    sets_run(cpu_level_best(), p, n, sets, true, quant);
}

void kern_swiglu_sets_with(int path, pool *p, int n, const kern_set *sets, kern_quant_fn quant) {
    sets_run(cap(path), p, n, sets, true, quant);
}

/* ---- f16 / bf16 weights ---- */

/* kern_gemv_half at level lvl (supported): AVX2 code from CPU_AVX2 up, else plain C; not counted */
static void half_run(cpu_level lvl, const uint16_t *w, bool bf16, int64_t cols, int64_t r0,
                     int64_t r1, const float *x, int64_t ldx, int ntok, float *y, int64_t ldy) {
    if (lvl >= CPU_AVX2) {
        kern_gemv_half_avx2(w, bf16, cols, r0, r1, x, ldx, ntok, y, ldy);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *wr = w + (size_t)r * cols;
        for (int t = 0; t < ntok; t++) {
            const float *xt = x + (size_t)t * ldx;
            float acc = 0;
            for (int64_t j = 0; j < cols; j++)
                acc += (bf16 ? quant_bf16_to_f32(wr[j]) : quant_f16_to_f32(wr[j])) * xt[j];
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

static cpu_level half_level(cpu_level lvl) {
    return lvl >= CPU_AVX2 ? CPU_AVX2 : CPU_SCALAR;
}

void kern_gemv_half_with(int path, const uint16_t *w, bool bf16, int64_t cols, int64_t r0,
                         int64_t r1, const float *x, int64_t ldx, int ntok, float *y, int64_t ldy) {
    const cpu_level lvl = half_level(cap(path));
    cpu_ran(CPU_SITE_HALF, lvl);
    half_run(lvl, w, bf16, cols, r0, r1, x, ldx, ntok, y, ldy);
}

void kern_gemv_half(const uint16_t *w, bool bf16, int64_t cols, int64_t r0, int64_t r1,
                    const float *x, int64_t ldx, int ntok, float *y, int64_t ldy) {
    const cpu_level lvl = half_level(cpu_level_best());
    cpu_ran(CPU_SITE_HALF, lvl);
    half_run(lvl, w, bf16, cols, r0, r1, x, ldx, ntok, y, ldy);
}

typedef struct half_job {
    const uint16_t *w;
    bool bf16;
    int64_t rows, cols, ldx, ldy;
    const float *x;
    int ntok;
    float *y;
    cpu_level lvl;
} half_job;

static void half_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    half_job *j = ctx;
    int64_t lo, hi;
    pool_split(j->rows, n_tasks, task, &lo, &hi);
    if (lo < hi)
        half_run(j->lvl, j->w, j->bf16, j->cols, lo, hi, j->x, j->ldx, j->ntok, j->y, j->ldy);
}

void kern_matmul_half(pool *p, const uint16_t *w, bool bf16, int64_t rows, int64_t cols,
                      const float *x, int64_t ldx, int ntok, float *y, int64_t ldy) {
    half_job j = {w, bf16, rows, cols, ldx, ldy, x, ntok, y, half_level(cpu_level_best())};
    cpu_ran(CPU_SITE_HALF, j.lvl);
    pool_run(p, half_task, &j, n_tasks_for(p, (rows + 7) / 8));
}

/* ---- RMSNorm ---- */

/* kern_rmsnorm at level lvl (supported): AVX2 code from CPU_AVX2 up, else plain C */
static void rmsnorm_run(cpu_level lvl, float *y, const float *x, const float *w, int64_t n,
                        float eps) {
    double ss = 0;
    const bool avx2 = lvl >= CPU_AVX2;
    cpu_ran(CPU_SITE_RMSNORM, avx2 ? CPU_AVX2 : CPU_SCALAR);
    if (avx2) {
        ss = kern_sumsq_avx2(x, n);
    } else {
        for (int64_t i = 0; i < n; i++)
            ss += (double)x[i] * x[i];
    }
    float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps); /* as ggml: rms_norm then mul */
    if (avx2) {
        kern_scale_mul_avx2(y, x, scale, w, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

void kern_rmsnorm_with(int path, float *y, const float *x, const float *w, int64_t n, float eps) {
    rmsnorm_run(cap(path), y, x, w, n, eps);
}

void kern_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    rmsnorm_run(cpu_level_best(), y, x, w, n, eps);
}
