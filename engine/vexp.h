/* vexp.h: e^x for x <= 0 in plain float ops, one definition for attention's softmax (engine/attn.c)
 * and the SwiGLU combination (engine/kern.c), as one lane and as 16. */
#ifndef LFM2_VEXP_H
#define LFM2_VEXP_H
#include <stdint.h>
#include <string.h>

/* Cephes' expf without FMA, 0 below VEXP_LO: round n = x log2(e) by the 1.5 * 2^23 trick,
 * r = x - n ln2 in two parts, e^r by a degree-7 polynomial, times 2^n built from n's bits
 * (n in [-126, 0] for x in [VEXP_LO, 0]). Within 2 ulp of e^x. */
#define VEXP_LO -87.0f
#define VEXP_LOG2E 1.44269504088896341f
#define VEXP_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define VEXP_MAGIC_BITS 0x4B400000u
#define VEXP_LN2_HI 0.693359375f
#define VEXP_LN2_LO -2.12194440e-4f
#define VEXP_P0 1.9875691500e-4f
#define VEXP_P1 1.3981999507e-3f
#define VEXP_P2 8.3334519073e-3f
#define VEXP_P3 4.1665795894e-2f
#define VEXP_P4 1.6666665459e-1f
#define VEXP_P5 5.0000001201e-1f

/* One lane (callers compile it without FP contraction): e^x for x <= 0, NaN for NaN. */
static inline float vexp_scalar(float x) {
    float m = x * VEXP_LOG2E + VEXP_MAGIC;
    float n = m - VEXP_MAGIC;
    float r = x - n * VEXP_LN2_HI;
    r = r - n * VEXP_LN2_LO;
    float p = VEXP_P0;
    p = p * r + VEXP_P1;
    p = p * r + VEXP_P2;
    p = p * r + VEXP_P3;
    p = p * r + VEXP_P4;
    p = p * r + VEXP_P5;
    float y = (p * (r * r) + r) + 1.0f;
    uint32_t mb, sb;
    memcpy(&mb, &m, sizeof mb);
    sb = (mb - VEXP_MAGIC_BITS + 127u) << 23; /* 2^n: n in [-126, 0] here */
    float sc;
    memcpy(&sc, &sb, sizeof sc);
    return x < VEXP_LO ? 0.0f : y * sc;
}

typedef float vexp_f16 __attribute__((vector_size(64)));
typedef uint32_t vexp_u16 __attribute__((vector_size(64)));

/* vexp_scalar on 16 lanes, the same operations lane by lane (callers compile it
 * without FP contraction, so every ISA gives the same bits): *v = e^*v, each lane <= 0. */
static inline __attribute__((always_inline)) void vexp16(vexp_f16 *v) {
    const vexp_f16 x = *v;
    vexp_f16 m = x * VEXP_LOG2E + VEXP_MAGIC;
    vexp_f16 n = m - VEXP_MAGIC;
    vexp_f16 r = x - n * VEXP_LN2_HI;
    r = r - n * VEXP_LN2_LO;
    vexp_f16 p = r * VEXP_P0 + VEXP_P1;
    p = p * r + VEXP_P2;
    p = p * r + VEXP_P3;
    p = p * r + VEXP_P4;
    p = p * r + VEXP_P5;
    vexp_f16 y = (p * (r * r) + r) + 1.0f;
    y = y * (vexp_f16)(((vexp_u16)m - VEXP_MAGIC_BITS + 127u) << 23);
    *v = (vexp_f16)((vexp_u16)y & ~(vexp_u16)(x < VEXP_LO));
}

#endif
