/* gemm.c: prefill GEMM over repacked weights: AMX-int8 tiles + AVX-512 scaling, kern_matmul
 * fallback. */
#include "engine/gemm.h"
#include "engine/cpu.h"
#include "engine/vtree.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const char *const path_names[GEMM_NPATHS] = {"kern", "amx-int8"};
static bool avail[GEMM_NPATHS];
static int best_path = GEMM_KERN;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) && defined(__GNUC__)
#define GEMM_X86 1
#include <immintrin.h>
#endif

static void pick_best(void) {
    avail[GEMM_KERN] = true;
    avail[GEMM_AMX] = cpu_amx(); /* engine/cpu.h: only at CPU_AVX512 */
    best_path = avail[GEMM_AMX] ? GEMM_AMX : GEMM_KERN;
    const char *env = getenv("LFM2_GEMM");
    if (env && !strcmp(env, "kern")) best_path = GEMM_KERN;
}

int gemm_best(void) {
    pthread_once(&best_once, pick_best);
    return best_path;
}

bool gemm_path_available(int path) {
    gemm_best();
    return path >= 0 && path < GEMM_NPATHS && avail[path];
}

const char *gemm_path_name(int path) {
    return path >= 0 && path < GEMM_NPATHS ? path_names[path] : "unknown";
}

bool gemm_kind_supported(int path, int kind) {
    if (path == GEMM_KERN) return true;
    if (path == GEMM_AMX) return kind >= RP_I4 && kind <= RP_I5K;
    return false;
}

#ifdef GEMM_X86

#define GC 64               /* groups expanded at once (32 KiB of int8 codes on the stack) */
#define RB 4                /* row blocks sharing a token block in rb_matmul */
#define TOK GEMM_MIN_TOKENS /* tokens per AMX tile (its rows) */

/* 16 weight rows (two repacked tiles) expanded for groups [g0, g0 + GC): codes[g][c] is the
 * AMX B tile of group g: row c holds, for each of the 16 weight rows, 4 consecutive codes
 * (k = 4c..4c+3 for c < 4, 16 + 4(c-4).. for c >= 4), as kern's chunks; s, b: f32 per row. */
typedef struct panel {
    _Alignas(64) int8_t codes[GC][8][64];
    _Alignas(64) float s[GC][16];
    _Alignas(64) float b[GC][16];
} panel;

typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* Tiles 0-3: C (nt tokens x 16 rows int32), 4-5: A (nt tokens x 32 codes), 6-7: B (8 x 64).
 * half (RP_I6, a scale per 16 weights): A holds 16 codes, B 4 rows, one tile per half group. */
static void cfg_make(amx_cfg *c, int nt, int half) {
    memset(c, 0, sizeof *c);
    c->palette = 1;
    for (int i = 0; i < 4; i++)
        c->colsb[i] = 64, c->rows[i] = (uint8_t)nt;
    for (int i = 4; i < 6; i++)
        c->colsb[i] = half ? 16 : 32, c->rows[i] = (uint8_t)nt;
    for (int i = 6; i < 8; i++)
        c->colsb[i] = 64, c->rows[i] = half ? 4 : 8;
}

/* kern_swiglu's combination: kern_silu_mul, row by row. */
static void silu_mul(float *y, int64_t ldy, const float *u, int nt, int nr) {
    for (int t = 0; t < nt; t++)
        kern_silu_mul(y + (size_t)t * ldy, y + (size_t)t * ldy, u + t * 16, nr);
}

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,amx-tile,amx-int8,prfchw")

static inline __m512i ld2(const uint8_t *p, const uint8_t *q) {
    __m256i lo = _mm256_loadu_si256((const __m256i *)p);
    __m256i hi = q ? _mm256_loadu_si256((const __m256i *)q) : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* 8 f16 of tile p and 8 of tile q (NULL: zeros) as 16 floats; 8 bytes of each as 16 bytes. */
static inline __m512 h2(const uint8_t *p, const uint8_t *q) {
    __m128i lo = _mm_loadu_si128((const __m128i *)p);
    __m128i hi = q ? _mm_loadu_si128((const __m128i *)q) : _mm_setzero_si128();
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}
static inline __m128i b2(const uint8_t *p, const uint8_t *q) {
    return _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)p),
                              q ? _mm_loadl_epi64((const __m128i *)q) : _mm_setzero_si128());
}

/* Expands groups [g0, g1) of tiles tp (and tq, NULL past the last tile) into pn. SIGNED: codes
 * minus the zero point as s8 (kinds without min), else the unsigned codes. */
static inline __attribute__((always_inline)) void expand_k(const rp_matrix *m, const uint8_t *tp,
                                                           const uint8_t *tq, int64_t g0,
                                                           int64_t g1, panel *pn, const int sgn,
                                                           const int kind) {
    const int I5 = kind == RP_I5K, I6 = kind == RP_I6;
    const int I4 = kind == RP_I4 || kind == RP_I4M || kind == RP_I4K || I5 || I6;
    const int KC = kind == RP_I4K || I5;
    const size_t gb = m->group_bytes, cb = I5 ? 160 : I4 ? 128 : 256;
    const int64_t ng = m->n_groups;
    const __m512i m4 = _mm512_set1_epi8(15), m10 = _mm512_set1_epi8(0x10);
    const __m512i m30 = _mm512_set1_epi8(0x30), z32 = _mm512_set1_epi8(32);
    const __m512i z8 = _mm512_set1_epi8(8), x80 = _mm512_set1_epi8((char)0x80);
    const __m512 zf = _mm512_setzero_ps();
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *gp = tp + (size_t)g * gb, *gq = tq ? tq + (size_t)g * gb : NULL;
        __m512i w[8];
        if (I4) {
            for (int c = 0; c < 4; c++) {
                __m512i v = ld2(gp + 32 * c, gq ? gq + 32 * c : NULL);
                w[c] = _mm512_and_si512(v, m4);
                w[4 + c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
            if (I5) { /* bit c / 4+c of the plane bytes -> bit 4 of lo / hi chunk c */
                const __m512i pl = ld2(gp + 128, gq ? gq + 128 : NULL);
                for (int c = 0; c < 4; c++) {
                    __m512i l = c == 0   ? _mm512_slli_epi16(pl, 4)
                                : c == 1 ? _mm512_slli_epi16(pl, 3)
                                : c == 2 ? _mm512_slli_epi16(pl, 2)
                                         : _mm512_slli_epi16(pl, 1);
                    __m512i h = c == 0   ? pl
                                : c == 1 ? _mm512_srli_epi16(pl, 1)
                                : c == 2 ? _mm512_srli_epi16(pl, 2)
                                         : _mm512_srli_epi16(pl, 3);
                    w[c] = _mm512_or_si512(w[c], _mm512_and_si512(l, m10));
                    w[4 + c] = _mm512_or_si512(w[4 + c], _mm512_and_si512(h, m10));
                }
            }
            if (I6) { /* bits 2c..2c+1 of the plane bytes -> bits 4..5 of chunk c */
                const __m512i p0 = ld2(gp + 128, gq ? gq + 128 : NULL);
                const __m512i p1 = ld2(gp + 160, gq ? gq + 160 : NULL);
                for (int c = 0; c < 4; c++) {
                    __m512i l = c == 0   ? _mm512_slli_epi16(p0, 4)
                                : c == 1 ? _mm512_slli_epi16(p0, 2)
                                : c == 2 ? p0
                                         : _mm512_srli_epi16(p0, 2);
                    __m512i h = c == 0   ? _mm512_slli_epi16(p1, 4)
                                : c == 1 ? _mm512_slli_epi16(p1, 2)
                                : c == 2 ? p1
                                         : _mm512_srli_epi16(p1, 2);
                    w[c] = _mm512_or_si512(w[c], _mm512_and_si512(l, m30));
                    w[4 + c] = _mm512_or_si512(w[4 + c], _mm512_and_si512(h, m30));
                }
            }
            if (sgn)
                for (int c = 0; c < 8; c++)
                    w[c] = _mm512_sub_epi8(w[c], I6 ? z32 : z8);
        } else {
            for (int c = 0; c < 8; c++) {
                w[c] = ld2(gp + 32 * c, gq ? gq + 32 * c : NULL);
                if (sgn) w[c] = _mm512_xor_si512(w[c], x80); /* u - 128 as s8 */
            }
        }
        for (int c = 0; c < 8; c++)
            _mm512_store_si512((__m512i *)pn->codes[g - g0][c], w[c]);
        /* scales with kern_tiles_scalar's operations (f16 -> f32 is exact either way; the
         * negation flips the sign bit as -(x) does, also for zeros) */
        __m512 sv, bv = zf;
        if (I6) { /* s = d * sc per half (b holds the second half's): exact */
            const size_t so = (size_t)ng * gb + (size_t)(g / 8) * 16;
            __m512 dv = h2(tp + so, tq ? tq + so : NULL);
            sv = _mm512_mul_ps(
                dv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b2(gp + 192, gq ? gq + 192 : NULL))));
            bv = _mm512_mul_ps(
                dv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b2(gp + 200, gq ? gq + 200 : NULL))));
        } else if (KC) {
            const size_t so = (size_t)ng * gb + (size_t)(g / 8) * 32;
            __m512 dv = h2(tp + so, tq ? tq + so : NULL),
                   mv = h2(tp + so + 16, tq ? tq + so + 16 : NULL);
            sv = _mm512_mul_ps(
                dv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b2(gp + cb, gq ? gq + cb : NULL))));
            bv = _mm512_mul_ps(mv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                       b2(gp + cb + 8, gq ? gq + cb + 8 : NULL))));
            bv = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(bv), sign));
        } else {
            sv = h2(gp + cb, gq ? gq + cb : NULL);
            if (m->has_min) bv = h2(gp + cb + 16, gq ? gq + cb + 16 : NULL);
        }
        _mm512_store_ps(pn->s[g - g0], sv);
        _mm512_store_ps(pn->b[g - g0], bv);
    }
}

static void expand(const rp_matrix *m, const uint8_t *tp, const uint8_t *tq, int64_t g0, int64_t g1,
                   panel *pn, int sgn) {
    switch (m->kind) { /* one instance per kind: no per-group branching on it */
    case RP_I4:
        expand_k(m, tp, tq, g0, g1, pn, 1, RP_I4);
        break;
    case RP_I4M:
        expand_k(m, tp, tq, g0, g1, pn, 0, RP_I4M);
        break;
    case RP_I8:
        expand_k(m, tp, tq, g0, g1, pn, 1, RP_I8);
        break;
    case RP_I8M:
        expand_k(m, tp, tq, g0, g1, pn, 0, RP_I8M);
        break;
    case RP_I4K:
        expand_k(m, tp, tq, g0, g1, pn, 0, RP_I4K);
        break;
    case RP_I6:
        expand_k(m, tp, tq, g0, g1, pn, 1, RP_I6);
        break;
    case RP_I5K:
        expand_k(m, tp, tq, g0, g1, pn, 0, RP_I5K);
        break;
    default:
        expand_k(m, tp, tq, g0, g1, pn, sgn, m->kind);
        break;
    }
}

/* One block of nt tokens (the tile configuration's rows) from tok through the panel's groups
 * [g0, g1): per group, exact int32 dots on AMX, then per token acc = fma(dot, s * d, acc) (or
 * the min form) in group order, as kern_tiles_scalar. first: start from 0, else from y. */
static inline __attribute__((always_inline)) void block(const panel *pn, int64_t g0, int64_t g1,
                                                        const kern_act *a, int tok, int nt,
                                                        float *y, int64_t ldy, __mmask16 k,
                                                        int first, const int SGN, const int MIN) {
    const int64_t cols = a->cols, ng = cols / 32;
    _Alignas(64) int32_t cb[4][TOK][16];
    if (nt < TOK) memset(cb, 0, sizeof cb); /* rows past nt are never written by the tiles */
    __m512 acc[TOK];
    for (int t = 0; t < TOK; t++)
        acc[t] = first || t >= nt ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(k, y + t * ldy);
    const int8_t *aq = a->q + (size_t)tok * cols;
    const float *dp = a->d + (size_t)tok * ng;
    const int32_t *sp = a->s + (size_t)tok * ng;
    for (int64_t g = g0; g < g1; g += 4) {
        const int n4 = g1 - g < 4 ? (int)(g1 - g) : 4;
        const int8_t *cg = pn->codes[g - g0][0];
#define DP(c, x, w)                                                                                \
    do {                                                                                           \
        if (SGN)                                                                                   \
            _tile_dpbssd(c, x, w);                                                                 \
        else                                                                                       \
            _tile_dpbsud(c, x, w);                                                                 \
    } while (0)
        _tile_loadd(4, aq + g * 32, cols);
        _tile_loadd(6, cg, 64);
        _tile_zero(0);
        DP(0, 4, 6);
        if (n4 > 1) {
            _tile_loadd(5, aq + (g + 1) * 32, cols);
            _tile_loadd(7, cg + 512, 64);
            _tile_zero(1);
            DP(1, 5, 7);
        }
        if (n4 > 2) {
            _tile_loadd(4, aq + (g + 2) * 32, cols);
            _tile_loadd(6, cg + 1024, 64);
            _tile_zero(2);
            DP(2, 4, 6);
        }
        if (n4 > 3) {
            _tile_loadd(5, aq + (g + 3) * 32, cols);
            _tile_loadd(7, cg + 1536, 64);
            _tile_zero(3);
            DP(3, 5, 7);
        }
#undef DP
        _tile_stored(0, cb[0], 64);
        if (n4 > 1) _tile_stored(1, cb[1], 64);
        if (n4 > 2) _tile_stored(2, cb[2], 64);
        if (n4 > 3) _tile_stored(3, cb[3], 64);
        for (int j = 0; j < n4; j++) {
            const int64_t gg = g + j;
            const __m512 sf = _mm512_load_ps(pn->s[gg - g0]);
            const __m512 bf = _mm512_load_ps(pn->b[gg - g0]);
#pragma GCC unroll 16
            for (int t = 0; t < TOK; t++) {
                const int tt = t < nt ? t : nt - 1; /* rows past nt: computed, never stored */
                const __m512 da = _mm512_set1_ps(dp[(size_t)tt * ng + gg]);
                const __m512 iv = _mm512_cvtepi32_ps(_mm512_load_si512(cb[j][t]));
                if (!MIN) {
                    acc[t] = _mm512_fmadd_ps(iv, _mm512_mul_ps(sf, da), acc[t]);
                } else {
                    __m512 u = _mm512_mul_ps(iv, sf);
                    u = _mm512_fmadd_ps(bf, _mm512_set1_ps((float)sp[(size_t)tt * ng + gg]), u);
                    acc[t] = _mm512_fmadd_ps(u, da, acc[t]);
                }
            }
        }
    }
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(y + t * ldy, k, acc[t]);
}

/* block() for RP_I6 (tiles configured with half = 1): two half-group dots per group, each with
 * its zero point folded into the s8 codes and its own scale, applied low half first as
 * kern_tiles_scalar does. Two groups (four C tiles) per step. */
static inline __attribute__((always_inline)) void block6(const panel *pn, int64_t g0, int64_t g1,
                                                         const kern_act *a, int tok, int nt,
                                                         float *y, int64_t ldy, __mmask16 k,
                                                         int first) {
    const int64_t cols = a->cols, ng = cols / 32;
    _Alignas(64) int32_t cb[4][TOK][16];
    if (nt < TOK) memset(cb, 0, sizeof cb);
    __m512 acc[TOK];
    for (int t = 0; t < TOK; t++)
        acc[t] = first || t >= nt ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(k, y + t * ldy);
    const int8_t *aq = a->q + (size_t)tok * cols;
    const float *dp = a->d + (size_t)tok * ng;
    for (int64_t g = g0; g < g1; g += 2) {
        const int n2 = g1 - g < 2 ? 1 : 2;
        const int8_t *cg = pn->codes[g - g0][0];
        _tile_loadd(4, aq + g * 32, cols);
        _tile_loadd(6, cg, 64);
        _tile_zero(0);
        _tile_dpbssd(0, 4, 6);
        _tile_loadd(5, aq + g * 32 + 16, cols);
        _tile_loadd(7, cg + 256, 64);
        _tile_zero(1);
        _tile_dpbssd(1, 5, 7);
        if (n2 > 1) {
            _tile_loadd(4, aq + (g + 1) * 32, cols);
            _tile_loadd(6, cg + 512, 64);
            _tile_zero(2);
            _tile_dpbssd(2, 4, 6);
            _tile_loadd(5, aq + (g + 1) * 32 + 16, cols);
            _tile_loadd(7, cg + 768, 64);
            _tile_zero(3);
            _tile_dpbssd(3, 5, 7);
        }
        _tile_stored(0, cb[0], 64);
        _tile_stored(1, cb[1], 64);
        if (n2 > 1) {
            _tile_stored(2, cb[2], 64);
            _tile_stored(3, cb[3], 64);
        }
        for (int j = 0; j < n2; j++) {
            const int64_t gg = g + j;
            const __m512 s0 = _mm512_load_ps(pn->s[gg - g0]), s1 = _mm512_load_ps(pn->b[gg - g0]);
#pragma GCC unroll 16
            for (int t = 0; t < TOK; t++) {
                const int tt = t < nt ? t : nt - 1;
                const __m512 da = _mm512_set1_ps(dp[(size_t)tt * ng + gg]);
                const __m512 i0 = _mm512_cvtepi32_ps(_mm512_load_si512(cb[2 * j][t]));
                const __m512 i1 = _mm512_cvtepi32_ps(_mm512_load_si512(cb[2 * j + 1][t]));
                acc[t] = _mm512_fmadd_ps(i0, _mm512_mul_ps(s0, da), acc[t]);
                acc[t] = _mm512_fmadd_ps(i1, _mm512_mul_ps(s1, da), acc[t]);
            }
        }
    }
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(y + t * ldy, k, acc[t]);
}

static __attribute__((noinline)) void block_any(const panel *pn, int64_t g0, int64_t g1,
                                                const kern_act *a, int tok, float *y, int64_t ldy,
                                                __mmask16 k, int first, int sgn, int min, int six) {
    if (six)
        block6(pn, g0, g1, a, tok, TOK, y, ldy, k, first);
    else if (sgn)
        block(pn, g0, g1, a, tok, TOK, y, ldy, k, first, 1, 0);
    else if (min)
        block(pn, g0, g1, a, tok, TOK, y, ldy, k, first, 0, 1);
    else
        block(pn, g0, g1, a, tok, TOK, y, ldy, k, first, 0, 0);
}

#define GEMM_MAX_MATS 8

typedef struct amx_job {
    int n;      /* matrices sharing the activations (1 for SwiGLU: gate, with up beside it) */
    int swiglu; /* y = silu(gate . x) * (up . x) */
    const rp_matrix *ms[GEMM_MAX_MATS], *up;
    float *ys[GEMM_MAX_MATS];
    int64_t ldys[GEMM_MAX_MATS];
    int64_t first[GEMM_MAX_MATS + 1]; /* prefix sums of row blocks (16 rows, two tiles) */
    const kern_act *a;
} amx_job;

/* Asks for the next token block's output lines in exclusive state: without it the stores of a
 * large output (9 MiB for 512 x 4608) miss, fill the store buffer and stall the tile stores
 * queued behind them (35% of the time on 4608 x 1024). */
static inline void prefetch_out(const float *y, int64_t ldy, int n) {
    for (int t = 0; t < TOK && t < n; t++)
        __builtin_prefetch(y + t * ldy, 1, 3);
}

/* Row blocks [rb0, rb0 + nrb) of m for every token: y points at row 0's output. Each token block
 * runs through the nrb blocks in turn, so a token's outputs are written nrb lines at a time. The
 * last n % 16 tokens go through kern's AVX-512 tile kernel (the same bits; a partial AMX tile would
 * cost a full one). */
static void rb_matmul(const rp_matrix *m, const kern_act *a, float *y, int64_t ldy, int64_t rb0,
                      int nrb, panel *pn, const amx_cfg *cfg) {
    const int sgn = !m->has_min, six = m->kind == RP_I6; /* I4, I8, I6: codes minus z as s8 */
    const int n = a->n, nfull = n / TOK * TOK;
    const int64_t ng = m->n_groups,
                  t1 = 2 * (rb0 + nrb) < m->n_tiles ? 2 * (rb0 + nrb) : m->n_tiles;
    __mmask16 k[RB];
    for (int r = 0; r < nrb; r++) {
        const int64_t left = m->rows - (rb0 + r) * 16;
        k[r] = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
    }
    float *yr = y + rb0 * 16;
    _tile_loadconfig(cfg);
    for (int64_t g0 = 0; g0 < ng; g0 += GC) {
        const int64_t g1 = ng - g0 < GC ? ng : g0 + GC;
        for (int r = 0; r < nrb; r++) {
            const uint8_t *tp = m->data + (size_t)(2 * (rb0 + r)) * m->tile_bytes;
            const uint8_t *tq = 2 * (rb0 + r) + 1 < m->n_tiles ? tp + m->tile_bytes : NULL;
            expand(m, tp, tq, g0, g1, &pn[r], sgn);
        }
        for (int tok = 0; tok < nfull; tok += TOK) {
            if (tok + TOK < n)
                for (int r = 0; r < nrb; r++)
                    prefetch_out(yr + r * 16 + (size_t)(tok + TOK) * ldy, ldy, n - tok - TOK);
            for (int r = 0; r < nrb; r++)
                block_any(&pn[r], g0, g1, a, tok, yr + r * 16 + (size_t)tok * ldy, ldy, k[r],
                          g0 == 0, sgn, m->has_min, six);
        }
    }
    if (n > nfull)
        kern_tiles_avx512(m, a, nfull, n - nfull, yr + (size_t)nfull * ldy, ldy, 2 * rb0, t1);
}

/* Row blocks [rb0, rb0 + nrb) (nrb <= RB / 2) of gate and up (n_groups <= GC) for every token:
 * y = silu(gate) * up. pn holds nrb gate panels, then nrb up panels. */
static void rb_swiglu(const rp_matrix *gate, const rp_matrix *up, const kern_act *a, float *y,
                      int64_t ldy, int64_t rb0, int nrb, panel *pn, const amx_cfg *cfg) {
    const int sgn = !gate->has_min, six = gate->kind == RP_I6;
    const int n = a->n;
    const int64_t ng = gate->n_groups;
    int nr[RB / 2];
    __mmask16 k[RB / 2];
    for (int r = 0; r < nrb; r++) {
        const int64_t rb = rb0 + r, left = gate->rows - rb * 16;
        const size_t off = (size_t)(2 * rb) * gate->tile_bytes;
        const int two = 2 * rb + 1 < gate->n_tiles;
        nr[r] = left < 16 ? (int)left : 16;
        k[r] = (__mmask16)(nr[r] >= 16 ? 0xffff : (1u << nr[r]) - 1);
        if (n >= TOK) {
            expand(gate, gate->data + off, two ? gate->data + off + gate->tile_bytes : NULL, 0, ng,
                   &pn[r], sgn);
            expand(up, up->data + off, two ? up->data + off + up->tile_bytes : NULL, 0, ng,
                   &pn[nrb + r], sgn);
        }
    }
    _Alignas(64) float ub[TOK * 16];
    _tile_loadconfig(cfg);
    for (int tok = 0; tok < n; tok += TOK) {
        const int nt = n - tok < TOK ? n - tok : TOK;
        if (tok + TOK < n)
            for (int r = 0; r < nrb; r++)
                prefetch_out(y + (rb0 + r) * 16 + (size_t)(tok + TOK) * ldy, ldy, n - tok - TOK);
        for (int r = 0; r < nrb; r++) {
            const int64_t rb = rb0 + r,
                          t1 = 2 * rb + 2 < gate->n_tiles ? 2 * rb + 2 : gate->n_tiles;
            float *yt = y + rb * 16 + (size_t)tok * ldy;
            if (nt == TOK) {
                block_any(&pn[r], 0, ng, a, tok, yt, ldy, k[r], 1, sgn, gate->has_min, six);
                block_any(&pn[nrb + r], 0, ng, a, tok, ub, 16, k[r], 1, sgn, gate->has_min, six);
            } else {
                kern_tiles_avx512(gate, a, tok, nt, yt, ldy, 2 * rb, t1);
                kern_tiles_avx512(up, a, tok, nt, ub, 16, 2 * rb, t1);
            }
            silu_mul(yt, ldy, ub, nt, nr[r]);
        }
    }
}

static void amx_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    const amx_job *j = ctx;
    int64_t lo, hi;
    pool_split(j->first[j->n], n_tasks, task, &lo, &hi);
    if (lo >= hi) return;
    panel pn[RB];   /* 160 KiB of stack: no allocation per call */
    amx_cfg cfg[2]; /* [half] */
    cfg_make(&cfg[0], TOK, 0);
    cfg_make(&cfg[1], TOK, 1);
    for (int i = 0; i < j->n; i++) {
        const amx_cfg *c = &cfg[j->ms[i]->kind == RP_I6];
        const int64_t end = hi < j->first[i + 1] ? hi : j->first[i + 1];
        for (int64_t r = lo > j->first[i] ? lo : j->first[i]; r < end;) {
            const int nrb = end - r < RB ? (int)(end - r) : RB;
            if (j->swiglu) {
                const int ns = nrb < RB / 2 ? nrb : RB / 2;
                rb_swiglu(j->ms[i], j->up, j->a, j->ys[i], j->ldys[i], r - j->first[i], ns, pn, c);
                r += ns;
            } else {
                rb_matmul(j->ms[i], j->a, j->ys[i], j->ldys[i], r - j->first[i], nrb, pn, c);
                r += nrb;
            }
        }
    }
    _tile_release();
}
#pragma GCC pop_options

static void amx_run(pool *p, amx_job *j) {
    cpu_ran(CPU_SITE_AMX, CPU_AVX512);
    j->first[0] = 0;
    for (int i = 0; i < j->n; i++)
        j->first[i + 1] = j->first[i] + (j->ms[i]->n_tiles + 1) / 2;
    int nt = pool_n_threads(p);
    int64_t want = nt == 1 ? 1 : (int64_t)nt * 4, rbs = j->first[j->n];
    pool_run(p, amx_task, j, (int)(want < rbs ? want : rbs));
}
#endif

/* AMX runs this matrix (set) on this path. */
static bool use_amx(int path, const rp_matrix *m) {
#ifdef GEMM_X86
    return path == GEMM_AMX && gemm_path_available(GEMM_AMX) && gemm_kind_supported(path, m->kind);
#else
    (void)path, (void)m;
    return false;
#endif
}

void gemm_matmul_with(int path, pool *p, const rp_matrix *m, const kern_act *a, float *y,
                      int64_t ldy) {
    gemm_matmul_n_with(path, p, 1, &m, a, &y, &ldy);
}

void gemm_matmul(pool *p, const rp_matrix *m, const kern_act *a, float *y, int64_t ldy) {
    gemm_matmul_n_with(gemm_best(), p, 1, &m, a, &y, &ldy);
}

void gemm_matmul_n_with(int path, pool *p, int n, const rp_matrix *const *ms, const kern_act *a,
                        float *const *ys, const int64_t *ldys) {
    bool all = a->n >= GEMM_MIN_TOKENS; /* fewer tokens: kern's kernels are faster */
    for (int i = 0; i < n; i++)
        all = all && use_amx(path, ms[i]);
    if (!all) {
        kern_matmul_n(p, n, ms, a, ys, ldys);
        return;
    }
#ifdef GEMM_X86
    for (int base = 0; base < n; base += GEMM_MAX_MATS) {
        amx_job j = {.n = n - base < GEMM_MAX_MATS ? n - base : GEMM_MAX_MATS, .a = a};
        for (int i = 0; i < j.n; i++)
            j.ms[i] = ms[base + i], j.ys[i] = ys[base + i], j.ldys[i] = ldys[base + i];
        amx_run(p, &j);
    }
#endif
}

void gemm_matmul_n(pool *p, int n, const rp_matrix *const *ms, const kern_act *a, float *const *ys,
                   const int64_t *ldys) {
    gemm_matmul_n_with(gemm_best(), p, n, ms, a, ys, ldys);
}

void gemm_swiglu_with(int path, pool *p, const rp_matrix *gate, const rp_matrix *up,
                      const kern_act *a, float *y, int64_t ldy) {
#ifdef GEMM_X86
    if (a->n >= GEMM_MIN_TOKENS && use_amx(path, gate) && up->kind == gate->kind &&
        up->rows == gate->rows && up->cols == gate->cols && gate->n_groups <= GC) {
        amx_job j = {.n = 1, .swiglu = 1, .ms = {gate}, .up = up, .ys = {y}, .ldys = {ldy}, .a = a};
        amx_run(p, &j);
        return;
    }
#endif
    (void)path;
    kern_swiglu(p, gate, up, a, y, ldy);
}

void gemm_swiglu(pool *p, const rp_matrix *gate, const rp_matrix *up, const kern_act *a, float *y,
                 int64_t ldy) {
    gemm_swiglu_with(gemm_best(), p, gate, up, a, y, ldy);
}

/* ---- activation quantization: kern_quantize's bits, AVX-512 and split across the pool ---- */

typedef struct q_job {
    kern_act *a;
    const float *x;
    int64_t cols, ldx;
    int n;
    cpu_level code; /* quant_level() */
    int by_blocks;  /* tasks take column blocks of every token, else tokens */
} q_job;

#ifdef GEMM_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq")
/* Tokens [t0, t1): per block of 32, amax ignoring NaN (as `v > amax ? v : amax`), id = 127/amax,
 * r = (x * id + 1.5 * 2^23) - 1.5 * 2^23 without contraction, clamped to +-127, NaN -> 0,
 * d = amax / 127: operation for operation kern_quantize. */
typedef int32_t q16i __attribute__((vector_size(64)));

static inline q16i q_max(q16i a, q16i b) {
    __m512i x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    x = _mm512_max_epi32(x, y);
    memcpy(&a, &x, sizeof a);
    return a;
}

/* out lane k = OP over the 16 lanes of v[k] (engine/vtree.h's tree over all 16 vectors at once),
 * instead of a horizontal reduction per vector */
#define Q_TREE16(v, out, OP)                                                                       \
    do {                                                                                           \
        q16i t_[8];                                                                                \
        _Pragma("GCC unroll 8") for (int m_ = 0; m_ < 8; m_++) t_[m_] =                            \
            VTREE_PAIR(v[2 * m_], v[2 * m_ + 1], OP);                                              \
        VTREE_REST(q16i, t_, out, OP);                                                             \
    } while (0)

/* A block's 32 values (x0, x1): lane-wise max of |x| with NaN as 0 */
static inline __m512 q_absmax(__m512 x0, __m512 x1) {
    __m512 a0 = _mm512_abs_ps(x0), a1 = _mm512_abs_ps(x1);
    a0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a0, a0, _CMP_ORD_Q), a0);
    a1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a1, a1, _CMP_ORD_Q), a1);
    return _mm512_max_ps(a0, a1);
}

/* Its codes at scale iv (id in every lane) stored at q[0..32); the two halves' codes as int32 */
static inline void q_codes(__m512 x0, __m512 x1, __m512 iv, int8_t *q, __m512i *v0, __m512i *v1) {
    const __m512 magic = _mm512_set1_ps(12582912.0f), lo = _mm512_set1_ps(-127.0f),
                 hi = _mm512_set1_ps(127.0f);
    __m512 r0 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x0, iv), magic), magic);
    __m512 r1 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x1, iv), magic), magic);
    __mmask16 k0 = _mm512_cmp_ps_mask(r0, r0, _CMP_ORD_Q);
    __mmask16 k1 = _mm512_cmp_ps_mask(r1, r1, _CMP_ORD_Q);
    *v0 = _mm512_maskz_cvtps_epi32(k0, _mm512_min_ps(_mm512_max_ps(r0, lo), hi));
    *v1 = _mm512_maskz_cvtps_epi32(k1, _mm512_min_ps(_mm512_max_ps(r1, lo), hi));
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(*v0));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(*v1));
}

/* Blocks [b, b + 8) of one token: the same operations as the per-block loop below, with the
 * block maxima and the half-block sums reduced 16 vectors at a time and the two divisions done
 * for 8 blocks at once (per-block horizontal reductions and scalar divisions would be most of
 * its time). Maxima of values >= 0 (NaN masked to 0)
 * compare as their bits; integer sums are exact in any order: the same bits. */
static void quantize8_avx512(kern_act *a, const float *xt, int8_t *q, int64_t nb, int t,
                             int64_t b) {
    const __m512 c127 = _mm512_set1_ps(127.0f);
    q16i v[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        __m512 m =
            q_absmax(_mm512_loadu_ps(xt + (b + i) * 32), _mm512_loadu_ps(xt + (b + i) * 32 + 16));
        memcpy(&v[i], &m, sizeof m);
        v[i + 8] = v[i];
    }
    q16i mx;
    Q_TREE16(v, mx, q_max);
    __m512 amax, id, d;
    memcpy(&amax, &mx, sizeof amax);
    id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ), c127, amax);
    d = _mm512_div_ps(amax, c127);
    _mm512_mask_storeu_ps(a->d + (size_t)t * nb + b, 0xff, d);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        __m512 x0 = _mm512_loadu_ps(xt + (b + i) * 32),
               x1 = _mm512_loadu_ps(xt + (b + i) * 32 + 16);
        __m512i v0, v1;
        q_codes(x0, x1, _mm512_permutexvar_ps(_mm512_set1_epi32(i), id), q + (b + i) * 32, &v0,
                &v1);
        memcpy(&v[2 * i], &v0, sizeof v0);
        memcpy(&v[2 * i + 1], &v1, sizeof v1);
    }
    q16i hs; /* lanes 2i, 2i + 1: block b + i's half sums, s16's order */
    Q_TREE16(v, hs, VTREE_ADD);
    memcpy(a->s16 + ((size_t)t * nb + b) * 2, &hs, sizeof hs);
    const q16i bs =
        hs + __builtin_shufflevector(hs, hs, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    const q16i s8 =
        __builtin_shufflevector(bs, bs, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
    __m512i sv;
    memcpy(&sv, &s8, sizeof sv);
    _mm512_mask_storeu_epi32(a->s + (size_t)t * nb + b, 0xff, sv);
}

static void quantize_avx512(kern_act *a, const float *x, int64_t cols, int64_t ldx, int t0, int t1,
                            int64_t b0, int64_t b1) {
    const int64_t nb = cols / 32;
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * ldx;
        int8_t *q = a->q + (size_t)t * cols;
        int64_t b = b0;
        for (; b + 8 <= b1; b += 8)
            quantize8_avx512(a, xt, q, nb, t, b);
        for (; b < b1; b++) {
            __m512 x0 = _mm512_loadu_ps(xt + b * 32), x1 = _mm512_loadu_ps(xt + b * 32 + 16);
            float amax = _mm512_reduce_max_ps(q_absmax(x0, x1));
            float id = amax > 0 ? 127.0f / amax : 0.0f;
            __m512i v0, v1;
            q_codes(x0, x1, _mm512_set1_ps(id), q + b * 32, &v0, &v1);
            int32_t s0 = _mm512_reduce_add_epi32(v0), s1 = _mm512_reduce_add_epi32(v1);
            a->d[(size_t)t * nb + b] = amax / 127.0f;
            a->s[(size_t)t * nb + b] = s0 + s1;
            a->s16[((size_t)t * nb + b) * 2] = s0;
            a->s16[((size_t)t * nb + b) * 2 + 1] = s1;
        }
    }
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2")
/* kern_quantize_range's operations on 8 lanes: the block's amax as `v > amax ? v : amax` (vmaxps
 * returns its second operand, the running maximum, when v is NaN; maxima are exact in any
 * order), the scalar id and d, r = (x * id + 1.5 * 2^23) - 1.5 * 2^23 without contraction,
 * clamped to +-127 and NaN -> 0, integer sums exact in any order: the same bits. */
static void quantize_avx2(kern_act *a, const float *x, int64_t cols, int64_t ldx, int t0, int t1,
                          int64_t b0, int64_t b1) {
    const int64_t nb = cols / 32;
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 magic = _mm256_set1_ps(12582912.0f), lo = _mm256_set1_ps(-127.0f),
                 hi = _mm256_set1_ps(127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * ldx;
        int8_t *q = a->q + (size_t)t * cols;
        for (int64_t b = b0; b < b1; b++) {
            __m256 xv[4], m = _mm256_setzero_ps();
            for (int k = 0; k < 4; k++) {
                xv[k] = _mm256_loadu_ps(xt + b * 32 + 8 * k);
                m = _mm256_max_ps(_mm256_and_ps(xv[k], absm), m);
            }
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            const float amax = _mm_cvtss_f32(m4);
            const __m256 iv = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
            __m256i v[4];
            for (int k = 0; k < 4; k++) {
                __m256 r = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xv[k], iv), magic), magic);
                const __m256 ord = _mm256_cmp_ps(r, r, _CMP_ORD_Q);
                r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
                v[k] = _mm256_and_si256(_mm256_cvtps_epi32(r), _mm256_castps_si256(ord));
            }
            const __m256i b8 = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]),
                                                  _mm256_packs_epi32(v[2], v[3]));
            _mm256_storeu_si256((__m256i *)(q + b * 32), _mm256_permutevar8x32_epi32(b8, order));
            __m256i h0 = _mm256_add_epi32(v[0], v[1]), h1 = _mm256_add_epi32(v[2], v[3]);
            __m256i hs = _mm256_hadd_epi32(h0, h1); /* lanes: h0 pairs, h1 pairs per 128 */
            hs = _mm256_hadd_epi32(hs, hs);
            const int32_t s0 = _mm256_extract_epi32(hs, 0) + _mm256_extract_epi32(hs, 4);
            const int32_t s1 = _mm256_extract_epi32(hs, 1) + _mm256_extract_epi32(hs, 5);
            a->d[(size_t)t * nb + b] = amax / 127.0f;
            a->s[(size_t)t * nb + b] = s0 + s1;
            a->s16[((size_t)t * nb + b) * 2] = s0;
            a->s16[((size_t)t * nb + b) * 2 + 1] = s1;
        }
    }
}
#pragma GCC pop_options
#endif

/* The quantizer code gemm_quantize runs: CPU_AVX512, CPU_AVX2 or CPU_SCALAR (kern_quantize_range,
 * counted as the scalar code). */
static cpu_level quant_level(void) {
#ifdef GEMM_X86
    const cpu_level best = cpu_level_best();
    return best == CPU_AVX512 ? CPU_AVX512 : best >= CPU_AVX2 ? CPU_AVX2 : CPU_SCALAR;
#else
    return CPU_SCALAR;
#endif
}

/* kern_quantize_range's work (at a->cols) with quantizer code `code` (quant_level) */
static void quant_run(cpu_level code, kern_act *a, const float *x, int64_t ldx, int t0, int t1,
                      int64_t b0, int64_t b1) {
#ifdef GEMM_X86
    if (code == CPU_AVX512) {
        quantize_avx512(a, x, a->cols, ldx, t0, t1, b0, b1);
        return;
    }
    if (code == CPU_AVX2) {
        quantize_avx2(a, x, a->cols, ldx, t0, t1, b0, b1);
        return;
    }
#else
    (void)code;
#endif
    kern_quantize_range(a, x, ldx, t0, t1, b0, b1);
}

static void q_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    q_job *j = ctx;
    const int64_t nb = j->cols / 32;
    int64_t lo, hi, b0 = 0, b1 = nb;
    if (j->by_blocks) {
        pool_split(nb, n_tasks, task, &b0, &b1);
        lo = 0, hi = j->n;
    } else {
        pool_split(j->n, n_tasks, task, &lo, &hi);
    }
    if (lo >= hi || b0 >= b1) return;
    quant_run(j->code, j->a, j->x, j->ldx, (int)lo, (int)hi, b0, b1);
    if (j->n >= 2) kern_act_pack(j->a, (int)lo, (int)hi, b0, b1); /* still in cache */
}

void gemm_quantize(pool *p, kern_act *a, const float *x, int64_t cols, int64_t ldx, int n) {
    a->cols = cols; /* quant_run quantizes at a->cols */
    q_job j = {a, x, cols, ldx, n, quant_level(), 0};
    cpu_ran(CPU_SITE_QUANT, j.code);
    int nt = pool_n_threads(p), tasks = n < 8 * nt ? (n + 7) / 8 : nt;
    /* A decode batch's wide input (ffn_down's, 8 x 4608) in column parts, one per thread: the
     * SwiGLU before it wrote each thread's part of the columns, so each reads lines from its own
     * cache (in token parts, half of every token would come from the other core's). Narrow
     * ones (n_embd) are too small to split and stay in one task. */
    if (n >= 2 && n < 8 * nt && (int64_t)n * cols >= 16384 && cols / 32 >= nt) {
        j.by_blocks = 1;
        tasks = nt;
    }
    if (tasks < 1) tasks = 1;
    pool_run(p, q_task, &j, tasks);
    a->n = n;
}

/* ---- several products with their own matrices and activations ---- */

/* Whether the AMX path runs set s itself (the conditions of gemm_matmul_n_with and
 * gemm_swiglu_with). */
static bool set_on_amx(int path, const kern_set *s, bool swiglu) {
    if (s->a->n < GEMM_MIN_TOKENS || !use_amx(path, s->m)) return false;
#ifdef GEMM_X86
    return !swiglu || (s->up->kind == s->m->kind && s->up->rows == s->m->rows &&
                       s->up->cols == s->m->cols && s->m->n_groups <= GC);
#else
    (void)swiglu;
    return false;
#endif
}

/* kern_quantize_range's work with gemm_quantize's code (a kern_quant_fn) */
static void quant_range(kern_act *a, const float *x, int64_t ldx, int t0, int t1, int64_t b0,
                        int64_t b1) {
    quant_run(quant_level(), a, x, ldx, t0, t1, b0, b1);
}

static void sets_with(int path, pool *p, int n, const kern_set *sets, bool swiglu) {
    enum { CHUNK = 64 };
    kern_set rest[CHUNK]; /* the sets kern runs, in order */
    int nr = 0;
    bool quant = false;
    for (int i = 0; i < n && swiglu; i++)
        quant = quant || (sets[i].q && !set_on_amx(path, &sets[i], swiglu));
    if (quant) cpu_ran(CPU_SITE_QUANT, quant_level());
    for (int i = 0; i < n; i++) {
        const kern_set *s = &sets[i];
        if (set_on_amx(path, s, swiglu)) {
            if (!swiglu) {
                gemm_matmul_with(path, p, s->m, s->a, s->y, s->ldy);
                continue;
            }
            gemm_swiglu_with(path, p, s->m, s->up, s->a, s->y, s->ldy);
            if (s->q) gemm_quantize(p, s->q, s->y, s->m->rows, s->ldy, s->a->n);
            continue;
        }
        rest[nr++] = *s;
        if (nr == CHUNK) {
            if (swiglu)
                kern_swiglu_sets(p, nr, rest, quant_range);
            else
                kern_matmul_sets(p, nr, rest);
            nr = 0;
        }
    }
    if (nr) {
        if (swiglu)
            kern_swiglu_sets(p, nr, rest, quant_range);
        else
            kern_matmul_sets(p, nr, rest);
    }
}

void gemm_matmul_sets_with(int path, pool *p, int n, const kern_set *sets) {
    sets_with(path, p, n, sets, false);
}

void gemm_matmul_sets(pool *p, int n, const kern_set *sets) {
    sets_with(gemm_best(), p, n, sets, false);
}

void gemm_swiglu_sets_with(int path, pool *p, int n, const kern_set *sets) {
    sets_with(path, p, n, sets, true);
}

void gemm_swiglu_sets(pool *p, int n, const kern_set *sets) {
    sets_with(gemm_best(), p, n, sets, true);
}
