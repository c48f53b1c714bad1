/* vexp.h: e^x for x <= 0 in plain float ops, one definition for attention's softmax (engine/attn.c)
 * and the SwiGLU combination (engine/kern.c), as one lane, as 16 and as 8 in AVX2 intrinsics. */
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

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* vexp16's operations on the 8 lanes of an AVX2 register (attention's softmax, the SwiGLU
 * combination), so each lane has vexp_scalar's bits: callers compile it without FP contraction
 * (-std=c11), which an FMA target would otherwise apply to these separate multiplies and adds. */
static inline __attribute__((target("avx2"), always_inline)) __m256 vexp8_avx2(__m256 x) {
    const __m256 m =
        _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(VEXP_LOG2E)), _mm256_set1_ps(VEXP_MAGIC));
    const __m256 n = _mm256_sub_ps(m, _mm256_set1_ps(VEXP_MAGIC));
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(VEXP_LN2_HI)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(VEXP_LN2_LO)));
    __m256 p = _mm256_add_ps(_mm256_mul_ps(r, _mm256_set1_ps(VEXP_P0)), _mm256_set1_ps(VEXP_P1));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(VEXP_P2));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(VEXP_P3));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(VEXP_P4));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(VEXP_P5));
    __m256 y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r),
                             _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(
            _mm256_sub_epi32(_mm256_castps_si256(m), _mm256_set1_epi32((int)VEXP_MAGIC_BITS)),
            _mm256_set1_epi32(127)),
        23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(VEXP_LO), _CMP_LT_OQ), y);
}
#endif

#endif
