/* kern.h: decode kernels: int8 activations x repacked int4/int8 weights, fused helpers, dispatch.
 */
#ifndef LFM2_KERN_H
#define LFM2_KERN_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "engine/pool.h"
#include "quant/repack.h"

/* Kernel paths. The one in use follows engine/cpu.h's level (the best the CPU and OS support,
 * capped by env LFM2_KERNEL=scalar|avx2|avxvnni|avx512); every function below without a path
 * argument runs at that level, and its _with twin at the given path's level, capped by the CPU
 * (a path the CPU lacks runs the best code below it). */
enum kern_path {
    KERN_SCALAR = 0,  /* plain C, the reference every other path is tested against */
    KERN_AVX2 = 1,    /* AVX2+FMA+F16C, maddubs-based integer dots */
    KERN_AVXVNNI = 2, /* AVX-VNNI (VEX vpdpbusd, 256-bit) */
    KERN_AVX512 =
        3, /* AVX-512 VL/VNNI (EVEX vpdpbusd on 256-bit vectors: faster than 512 for GEMV) */
    KERN_NPATHS
};
int kern_best(void);                  /* the tile path in use (CPU_BASE runs KERN_SCALAR's) */
bool kern_path_available(int path);   /* compiled in and supported by this CPU */
const char *kern_path_name(int path); /* "scalar", "avx2", "avx-vnni", "avx512-vnni" */
const char *kern_name(void);          /* kern_path_name(kern_best()) */

/* Activations quantized once per matrix input: for each token, int8 blocks of 32 with an f32
 * scale and the block sum of the int8 values (for zero points and mins): x ~ d * q. */
typedef struct kern_act {
    int64_t cols;     /* of the tokens now held: multiple of 32, <= max_cols */
    int64_t max_cols; /* the buffers' width */
    int cap;          /* tokens the buffers hold */
    int n;            /* tokens currently quantized */
    int8_t *q;        /* [cap][cols] */
    float *d;         /* [cap][cols/32] */
    int32_t *s;       /* [cap][cols/32] sum of the block's q */
    int32_t *s16;     /* [cap][cols/16] sums of each half block (for RP_I6's per-16 zero point) */
    /* The same for the AVX-512 batch kernel, in runs of 8 tokens ([cap/8][cols/32][8], index
     * kern_act_at) so a run's tokens sit at fixed offsets, contiguous over the blocks, with the
     * zero-point terms that start its integer sums: */
    int8_t *gq;  /* [..][32] the codes */
    int32_t *gr; /* [..][2] d's bits, -8 s */
    int32_t *g6; /* [..][2] -32 s16[0], -32 s16[1] */
} kern_act;
/* Index of block b of token t in gq, gr, g6 (units of 32 codes, 2 int32) */
static inline size_t kern_act_at(const kern_act *a, int64_t b, int t) {
    return ((size_t)(t >> 3) * (size_t)(a->cols / 32) + (size_t)b) * 8 + (size_t)(t & 7);
}

/* Allocates buffers for cap tokens of up to max_cols values (a positive multiple of 32); the
 * width starts at max_cols. 0 or -1. */
int kern_act_init(kern_act *a, int64_t max_cols, int cap);
void kern_act_release(kern_act *a); /* frees the buffers; the struct may be re-initialized */
/* Quantizes n tokens (n <= cap) of cols values (a multiple of 32, <= max_cols): token t is
 * x[t*ldx .. t*ldx + cols). Round-half-even codes, d = amax/127 (0 for an all-zero block).
 * Sets a->cols = cols and a->n = n. */
void kern_quantize(kern_act *a, const float *x, int64_t cols, int64_t ldx, int n);
/* kern_quantize's work for tokens [t0, t1) and blocks of 32 columns [b0, b1) only (x + t*ldx is
 * token t), at a->cols, without the copy in runs (kern_act_pack) and leaving a->n alone. Threads
 * may quantize disjoint ranges at once. */
void kern_quantize_range(kern_act *a, const float *x, int64_t ldx, int t0, int t1, int64_t b0,
                         int64_t b1);
/* Copies tokens [t0, t1) x blocks [b0, b1), already quantized at a->cols, into gq/gr/g6. Only
 * the AVX-512 kernel's batches of 2 or more tokens read them: nothing is copied on a CPU without
 * that path, and kern_quantize and gemm_quantize skip it for one token. */
void kern_act_pack(kern_act *a, int t0, int t1, int64_t b0, int64_t b1);
/* v = tokens [t0, t0 + n) of a (t0 + n <= a->cap) as a kern_act of its own: pointers into a's
 * buffers laid out at a->cols (v is used at that width only), n tokens, not to be released. t0
 * is a multiple of 8 when n >= 2 (gq's runs of 8 then line up). Writing through v writes a's
 * tokens. */
void kern_act_view(kern_act *v, const kern_act *a, int t0, int n);
/* dst's tokens [0, n) = src's tokens tok[0..n) (quantized at src->cols): codes, scales and
 * sums copied, runs packed when n >= 2; dst->cols = src->cols, dst->n = n (n <= dst->cap). */
void kern_act_gather(kern_act *dst, const kern_act *src, const int *tok, int n);

/* y[t*ldy + (r - 8*t0)] = dot(row r of m, token t of a) for every token t < a->n and every valid
 * row r of tiles [t0, t1): y points at the output of row 8*t0. a->cols must equal m->cols.
 * _with runs a given path (tests, benchmarks); the plain one runs kern_best(). */
void kern_gemv_tiles(const rp_matrix *m, const kern_act *a, float *y, int64_t ldy, int64_t t0,
                     int64_t t1);
void kern_gemv_tiles_with(int path, const rp_matrix *m, const kern_act *a, float *y, int64_t ldy,
                          int64_t t0, int64_t t1);

/* y = m * a for every token (y[t*ldy + r]), rows split across the pool (p may be NULL). */
void kern_matmul(pool *p, const rp_matrix *m, const kern_act *a, float *y, int64_t ldy);
/* Several matrices reading the same activations (q/k/v, in_proj...), one parallel region,
 * one barrier. ys[i] gets n_rows of ms[i] per token with stride ldys[i]. */
void kern_matmul_n(pool *p, int n, const rp_matrix *const *ms, const kern_act *a, float *const *ys,
                   const int64_t *ldys);
/* Several products, each with its own matrix and activations (a MoE layer's experts), in one
 * parallel region: the tasks split the sets' tiles, each set weighted by its tiles x (tokens +
 * 2) (streaming a tile costs even for one token). A set of 0 tokens costs nothing. */
typedef struct kern_set {
    const rp_matrix *m;  /* the matrix; SwiGLU: gate */
    const rp_matrix *up; /* SwiGLU: up, m's shape; else unused */
    const kern_act *a;   /* this set's tokens (a->n, may be 0), a->cols == m->cols */
    float *y;            /* y[t*ldy + r], r < m->rows, t < a->n */
    int64_t ldy;
    kern_act *q; /* SwiGLU, optional (else NULL): y quantized as kern_quantize would (the next
                    product's input), by the task that wrote it; m->rows % 32 == 0, q's
                    max_cols >= m->rows and cap >= a->n; sets q->cols = m->rows, q->n = a->n */
} kern_set;
/* A quantizer with kern_quantize_range's contract and bits: kern_quantize_range itself, or
 * gemm's vectorized one (gemm_swiglu_sets passes it: kern does not depend on gemm). */
typedef void (*kern_quant_fn)(kern_act *a, const float *x, int64_t ldx, int t0, int t1,
                              int64_t b0, int64_t b1);
/* y = m * a for every set (kern_matmul's contract per set) */
void kern_matmul_sets(pool *p, int n, const kern_set *sets);
void kern_matmul_sets_with(int path, pool *p, int n, const kern_set *sets);
/* y = silu(m a) * (up a) for every set (kern_swiglu's contract and bits per set); the sets' q
 * quantized by quant (NULL: kern_quantize_range, counted as CPU_SITE_QUANT's scalar code; the
 * caller counts any other). */
void kern_swiglu_sets(pool *p, int n, const kern_set *sets, kern_quant_fn quant);
void kern_swiglu_sets_with(int path, pool *p, int n, const kern_set *sets, kern_quant_fn quant);

/* SwiGLU: y[t*ldy + r] = silu(gate_r . x_t) * (up_r . x_t); gate and up have the same shape. */
void kern_swiglu(pool *p, const rp_matrix *gate, const rp_matrix *up, const kern_act *a, float *y,
                 int64_t ldy);
void kern_swiglu_with(int path, const rp_matrix *gate, const rp_matrix *up, const kern_act *a,
                      float *y, int64_t ldy, int64_t t0, int64_t t1);

/* y[i] = silu(g[i]) * u[i] for i < n (y may be g or u): the SwiGLU combination of every path
 * (fused kernels, the AMX GEMM, the unfused f16/f32 path), one definition so they all give the
 * same bits. silu(g) = g * s, s = 1 / (1 + e) for g >= 0 and e / (1 + e) below, e = e^-|g| by a
 * Cephes polynomial in float (within 2 ulp; 0 below -87), lane-wise float ops without
 * contraction, so its SSE, AVX2, AVX-512 and scalar forms agree. */
void kern_silu_mul(float *y, const float *g, const float *u, int64_t n);
/* The same on a given path's instructions (a plain C loop for KERN_SCALAR, AVX-512 for
 * KERN_AVX512, AVX2 for KERN_AVX2 and KERN_AVXVNNI when available, else the baseline vector
 * form): every path gives the same bits (tests/test_kern.c). */
void kern_silu_mul_with(int path, float *y, const float *g, const float *u, int64_t n);

/* Half-precision weights kept as they are in the file (f16 and bf16 are not repacked: an int8
 * copy would lose precision): y[t*ldy + r] = dot(w row r, x_t) in f32 for rows [r0, r1) and
 * ntok tokens (x_t = x + t*ldx). w: rows of cols u16 (f16, or bf16 when bf16 is true). */
void kern_gemv_half(const uint16_t *w, bool bf16, int64_t cols, int64_t r0, int64_t r1,
                    const float *x, int64_t ldx, int ntok, float *y, int64_t ldy);
void kern_gemv_half_with(int path, const uint16_t *w, bool bf16, int64_t cols, int64_t r0,
                         int64_t r1, const float *x, int64_t ldx, int ntok, float *y, int64_t ldy);
/* The same over all rows, split across the pool. */
void kern_matmul_half(pool *p, const uint16_t *w, bool bf16, int64_t rows, int64_t cols,
                      const float *x, int64_t ldx, int ntok, float *y, int64_t ldy);

/* RMSNorm of n values as ggml computes it: sum of squares in double, scale = 1/sqrtf(mean + eps)
 * in float, y = (x * scale) * w (y may equal x). Paths differ only in the double summation order.
 */
void kern_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);
void kern_rmsnorm_with(int path, float *y, const float *x, const float *w, int64_t n, float eps);

/* Internal: per-path entry points (kern_avx2.c, kern_avx512.c). ntok tokens from tok0. */
typedef void (*kern_tiles_fn)(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                              int64_t ldy, int64_t t0, int64_t t1);
void kern_tiles_scalar(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                       int64_t ldy, int64_t t0, int64_t t1);
void kern_tiles_avx2(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                     int64_t ldy, int64_t t0, int64_t t1);
/* kern_tiles_avx2 runs a call on the kinds with prepared factors (RP_I4K, RP_I6) chunk-outer
 * when its tokens' codes (ntok x cols bytes) exceed KERN_AVX2_CO_BYTES; the prefill blocking
 * (kern.c, mm_range) gives it blocks of KERN_AVX2_CO_TOKENS tokens on such matrices (at 128
 * tokens: more than 6144 columns, ffn_down of the 1.2B shape and up) */
#define KERN_AVX2_CO_BYTES (768 << 10)
#define KERN_AVX2_CO_TOKENS 128
static inline int kern_avx2_chunk_outer(const rp_matrix *m, int64_t ntok) {
    return (m->kind == RP_I4K || m->kind == RP_I6) && ntok * m->cols > KERN_AVX2_CO_BYTES;
}
void kern_tiles_avxvnni(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                        int64_t ldy, int64_t t0, int64_t t1);
void kern_tiles_avx512(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                       int64_t ldy, int64_t t0, int64_t t1);
double kern_sumsq_avx2(const float *x, int64_t n);
void kern_scale_mul_avx2(float *y, const float *x, float scale, const float *w, int64_t n);
void kern_gemv_half_avx2(const uint16_t *w, bool bf16, int64_t cols, int64_t r0, int64_t r1,
                         const float *x, int64_t ldx, int ntok, float *y, int64_t ldy);

#endif
