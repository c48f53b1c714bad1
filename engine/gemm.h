/* gemm.h: prefill GEMM: many tokens x repacked weights (AMX-int8 fast path), same bits as kern. */
#ifndef LFM2_GEMM_H
#define LFM2_GEMM_H
#include <stdbool.h>
#include <stdint.h>
#include "engine/kern.h"
#include "engine/pool.h"
#include "quant/repack.h"

/* Paths. GEMM_KERN is kern_matmul (its own AVX-512/AVX2/scalar dispatch): the portable path and
 * the fallback for the kinds and CPUs the fast path does not cover. GEMM_AMX expands 16 weight
 * rows to int8 once and runs AMX TDPBSSD/TDPBSUD tiles of 16 tokens x 16 rows per 32-group,
 * then scales each group's exact int32 dots into f32 accumulators with AVX-512 in the same
 * per-(row, token) order as kern_tiles_scalar: results are bit-identical to kern_gemv_tiles.
 * Every rp kind runs on AMX (RP_I6 as two half-group dots with its two scales).
 * The best path is chosen once: AMX when the CPU has AMX-TILE/INT8, the OS grants the tile
 * state (arch_prctl) and kern_best() is KERN_AVX512; env LFM2_GEMM=kern forces GEMM_KERN. */
enum gemm_path { GEMM_KERN = 0, GEMM_AMX = 1, GEMM_NPATHS };
int gemm_best(void);
bool gemm_path_available(int path);
const char *gemm_path_name(int path); /* "kern", "amx-int8" */
/* Whether a path runs this kind itself (else it falls back to kern_matmul). */
bool gemm_kind_supported(int path, int kind);

/* Tokens per AMX tile. gemm_* with fewer tokens than this run kern's kernels (faster there),
 * and the last n % 16 tokens of a call go through kern's AVX-512 tile kernel: so every call may
 * go through gemm_*, whatever its token count. */
#define GEMM_MIN_TOKENS 16

/* Exactly kern_matmul's contract: y[t*ldy + r] = dot(row r of m, token t of a) for every token
 * t < a->n and row r < m->rows, rows split across the pool (p may be NULL). a->cols == m->cols. */
void gemm_matmul(pool *p, const rp_matrix *m, const kern_act *a, float *y, int64_t ldy);
void gemm_matmul_with(int path, pool *p, const rp_matrix *m, const kern_act *a, float *y,
                      int64_t ldy);
/* kern_matmul_n's contract: several matrices reading the same activations, one parallel region
 * per 8 matrices. Any matrix the path does not cover sends the whole set to kern_matmul_n. */
void gemm_matmul_n(pool *p, int n, const rp_matrix *const *ms, const kern_act *a, float *const *ys,
                   const int64_t *ldys);
void gemm_matmul_n_with(int path, pool *p, int n, const rp_matrix *const *ms, const kern_act *a,
                        float *const *ys, const int64_t *ldys);
/* kern_swiglu's contract and bits: y[t*ldy + r] = silu(gate_r . x_t) * (up_r . x_t), the same
 * expression; gate and up of one kind and shape with cols <= 2048 on AMX, else kern_swiglu. */
void gemm_swiglu(pool *p, const rp_matrix *gate, const rp_matrix *up, const kern_act *a, float *y,
                 int64_t ldy);
void gemm_swiglu_with(int path, pool *p, const rp_matrix *gate, const rp_matrix *up,
                      const kern_act *a, float *y, int64_t ldy);

/* kern_matmul_sets' and kern_swiglu_sets' contracts and bits: on the AMX path each set of
 * GEMM_MIN_TOKENS tokens or more that it covers runs as gemm_matmul_with / gemm_swiglu_with (its
 * output then quantized into q by gemm_quantize), the other sets together in one kern region. */
void gemm_matmul_sets(pool *p, int n, const kern_set *sets);
void gemm_matmul_sets_with(int path, pool *p, int n, const kern_set *sets);
void gemm_swiglu_sets(pool *p, int n, const kern_set *sets);
void gemm_swiglu_sets_with(int path, pool *p, int n, const kern_set *sets);

/* kern_quantize's contract and bits (codes, scales, block and half-block sums), with AVX-512
 * or AVX2 code by the dispatch level (engine/cpu.h), and tokens split across the pool (p may be
 * NULL): the prefill quantizes 512 x 1024 activations several times per layer. */
void gemm_quantize(pool *p, kern_act *a, const float *x, int64_t cols, int64_t ldx, int n);

#endif
