/* attn.h: causal attention over one KV head of an f16 cache: the same bits on every ISA. */
#ifndef LFM2_ENGINE_ATTN_H
#define LFM2_ENGINE_ATTN_H

#include <stddef.h>
#include <stdint.h>

#define ATTN_MAX_Q 8 /* queries per attn_run call */

/* Which code runs: AUTO is engine/cpu.h's level (LFM2_KERNEL=scalar runs the scalar twin); an
 * explicit choice the CPU lacks runs the widest one below it. Every choice returns the same bits
 * (the order of operations below is fixed, lane-wise float ops, no contraction). */
typedef enum {
    ATTN_ISA_AUTO,
    ATTN_ISA_SCALAR,
    ATTN_ISA_BASE,
    ATTN_ISA_AVX2,
    ATTN_ISA_AVX512
} attn_isa;

/* One KV head of a cache of IEEE binary16 values (written by attn_store): position j's key at
 * K + j * stride, its value at V + j * stride. Halves become floats exactly when read. */
typedef struct attn_kv {
    const uint16_t *K, *V;
    size_t stride; /* halves between consecutive positions */
    int hd;        /* head dim, >= 1 */
    int n_swa;     /* > 0: a query at position p sees keys [p - n_swa + 1, p]; else [0, p] */
    float scale;   /* multiplies q.k (1/sqrt(hd)) */
} attn_kv;

typedef struct attn_query {
    const float *q; /* [hd] */
    float *out;     /* [hd] softmax(scale * q.K) @ V over the keys the query sees */
    int pos;        /* >= 0; keys up to pos must be stored */
} attn_query;

/* Stores n floats as halves: round to nearest, ties to even, as llama.cpp's f16 cache; nan ->
 * sign | 0x7e00 (quant_f32_to_f16's bits on every isa; BASE is the scalar loop). */
void attn_store(uint16_t *dst, const float *src, int n, attn_isa isa);

/* Floats of scratch attn_run needs when the largest query position is < n_keys. */
size_t attn_scratch_floats(int n_keys);

/* Computes n_q (1..ATTN_MAX_Q) queries over kv. A query's result depends only on it and the
 * cache: not on the other queries in the call, their number, or isa. The order, per query,
 * with k_j, v_j the stored halves as floats: s_j = scale * dot(q, k_j), dot = 16 lane sums
 * (lane l adds q[i]*k[i] for i = l mod 16, in i order, starting from the first product)
 * reduced by halving (l + 8, then + 4, + 2, + 1);
 * w_j = exp(s_j - max s) by vexp_scalar (engine/vexp.h) (Cephes' polynomial in float, 0 below -87);
 * sum = the w_j in double in 8 lanes (j - first key mod 8, in j order) reduced by halving;
 * p_j = w_j * (float)(1/sum); out[i] = 0 + p_j * v_j[i] added in j order. Head dims not a
 * multiple of 16 always run the scalar path. out must not overlap q, K, V or scratch. */
void attn_run(const attn_kv *kv, const attn_query *qs, int n_q, float *scratch, attn_isa isa);

#endif
