/* quant.c: scalar reference (de)quantizers for ggml's weight formats, and the one traits table. */
#include "quant/quant.h"

#include <math.h>
#include <string.h>
#include <strings.h>

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K block");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K block");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K block");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K block");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K block");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K block");

/* ---- scalar conversions ---------------------------------------------------------------- */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float quant_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t em = (uint32_t)(h & 0x7fff) << 13; /* exponent and mantissa, in f32 position */
    uint32_t e = em & 0x0f800000, o = em + (112u << 23); /* normal: rebias the exponent */
    if (e == 0x0f800000) /* inf; nan keeps its payload and comes out quiet, as ggml's */
        o = em | 0x7f800000 | ((em & 0x7fffff) ? 0x400000u : 0);
    else if (e == 0) /* zero or subnormal m * 2^-24 = (1 + m/1024) * 2^-14 - 2^-14, exact */
        o = f32_bits(bits_f32(em + (113u << 23)) - 0x1p-14f);
    return bits_f32(o | sign);
}

uint16_t quant_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return sign | 0x7e00;  /* nan -> canonical quiet nan, as ggml */
    if (ax >= 0x477ff000) return sign | 0x7c00; /* >= 65520 rounds to inf */
    if (ax >= 0x38800000) {                     /* normal half: >= 2^-14 */
        ax -= (uint32_t)(127 - 15) << 23;
        ax += 0xfff + ((ax >> 13) & 1); /* round to nearest, ties to even */
        return (uint16_t)(sign | (ax >> 13));
    }
    if (ax <= 0x33000000) return sign; /* <= 2^-25 (a tie with 0) rounds to 0 */
    /* subnormal half: units of 2^-24 */
    uint32_t e = ax >> 23, mant = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float quant_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t quant_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64); /* nan: force quiet */
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

static float ld_f16(const uint8_t p[2]) {
    return quant_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

static void st_f16(uint8_t p[2], float f) {
    uint16_t h = quant_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Rounds to nearest, ties to even, for |x| < 2^22 (every use here): adding 1.5 * 2^23 leaves
 * the rounded integer in the low mantissa bits. Inline and exact, unlike a libm call. */
static int nearest_int(float x) {
    float v = x + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* ---- plain floats ------------------------------------------------------------------------ */

static void f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * 4);
}
static void f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * 4);
}

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = ld_f16(p + 2 * i);
}

static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++)
        st_f16(p + 2 * i, src[i]);
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = quant_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
}

static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = quant_f32_to_bf16(src[i]);
        p[2 * i] = (uint8_t)h;
        p[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

/* ---- 32-weight blocks -------------------------------------------------------------------- */

static void q4_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, b++, dst += QK4_0) {
        float d = ld_f16(b->d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = (float)((b->qs[j] & 0xF) - 8) * d;
            dst[j + QK4_0 / 2] = (float)((b->qs[j] >> 4) - 8) * d;
        }
    }
}

static void q4_1_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++, b++, dst += QK4_1) {
        float d = ld_f16(b->d), m = ld_f16(b->m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            dst[j] = (float)(b->qs[j] & 0xF) * d + m;
            dst[j + QK4_1 / 2] = (float)(b->qs[j] >> 4) * d + m;
        }
    }
}

static uint32_t ld_u32(const uint8_t p[4]) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void st_u32(uint8_t p[4], uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void q5_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++, b++, dst += QK5_0) {
        float d = ld_f16(b->d);
        uint32_t qh = ld_u32(b->qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            dst[j] = (float)(((b->qs[j] & 0xF) | (h0 << 4)) - 16) * d;
            dst[j + QK5_0 / 2] = (float)(((b->qs[j] >> 4) | (h1 << 4)) - 16) * d;
        }
    }
}

static void q5_1_to_float(const void *src, float *dst, int64_t n) {
    const block_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK5_1; i++, b++, dst += QK5_1) {
        float d = ld_f16(b->d), m = ld_f16(b->m);
        uint32_t qh = ld_u32(b->qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            dst[j] = (float)((b->qs[j] & 0xF) | (h0 << 4)) * d + m;
            dst[j + QK5_1 / 2] = (float)((b->qs[j] >> 4) | (h1 << 4)) * d + m;
        }
    }
}

static void q8_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, b++, dst += QK8_0) {
        float d = ld_f16(b->d);
        for (int j = 0; j < QK8_0; j++)
            dst[j] = (float)b->qs[j] * d;
    }
}

/* The reference quantizers of the 32-weight formats reproduce ggml's byte for byte: the scale is
 * set by the extreme value (signed for the symmetric types, min/max for the affine ones). */

static void q4_0_from_float(const float *x, void *dst, int64_t n) {
    block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, b++, x += QK4_0) {
        float amax = 0.0f, max = 0.0f; /* the value of largest magnitude, with its sign */
        for (int j = 0; j < QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        float d = max / -8, id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(b->d, d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int q0 = (int8_t)(x[j] * id + 8.5f), q1 = (int8_t)(x[j + QK4_0 / 2] * id + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            b->qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void q4_1_from_float(const float *x, void *dst, int64_t n) {
    block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / QK4_1; i++, b++, x += QK4_1) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < QK4_1; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        float d = (max - min) / 15, id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(b->d, d);
        st_f16(b->m, min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            int q0 = (int8_t)((x[j] - min) * id + 0.5f),
                q1 = (int8_t)((x[j + QK4_1 / 2] - min) * id + 0.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            b->qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void q5_0_from_float(const float *x, void *dst, int64_t n) {
    block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / QK5_0; i++, b++, x += QK5_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK5_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        float d = max / -16, id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(b->d, d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = (int8_t)(x[j] * id + 16.5f), q1 = (int8_t)(x[j + QK5_0 / 2] * id + 16.5f);
            q0 = q0 < 31 ? q0 : 31;
            q1 = q1 < 31 ? q1 : 31;
            b->qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + QK5_0 / 2);
        }
        st_u32(b->qh, qh);
    }
}

static void q5_1_from_float(const float *x, void *dst, int64_t n) {
    block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / QK5_1; i++, b++, x += QK5_1) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < QK5_1; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        float d = (max - min) / 31, id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(b->d, d);
        st_f16(b->m, min);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            int q0 = (uint8_t)((x[j] - min) * id + 0.5f),
                q1 = (uint8_t)((x[j + QK5_1 / 2] - min) * id + 0.5f);
            b->qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + QK5_1 / 2);
        }
        st_u32(b->qh, qh);
    }
}

static void q8_0_from_float(const float *x, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, b++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127, id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(b->d, d);
        for (int j = 0; j < QK8_0; j++)
            b->qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* ---- K-quants: 256-weight super-blocks --------------------------------------------------- */

static void q2_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q2_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        float d = ld_f16(b->d), min = ld_f16(b->dmin);
        const uint8_t *q = b->qs;
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 2; k++) {
                    uint8_t sc = b->scales[is++];
                    float dl = d * (float)(sc & 0xF), ml = min * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *dst++ = dl * (float)((q[l + 16 * k] >> shift) & 3) - ml;
                }
            }
        }
    }
}

static void q3_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q3_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        float d_all = ld_f16(b->d);
        /* 16 6-bit scales: low 4 bits in bytes 0..7 (two per byte), high 2 bits in bytes 8..11 */
        int8_t scales[16];
        for (int j = 0; j < 16; j++) {
            int lo = (b->scales[j % 8] >> (4 * (j / 8))) & 0xF;
            int hi = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            scales[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        const uint8_t *q = b->qs;
        uint8_t m = 1;
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int k = 0; k < 2; k++) {
                    float dl = d_all * (float)scales[is++];
                    for (int l = 0; l < 16; l++) {
                        int v =
                            ((q[l + 16 * k] >> shift) & 3) - ((b->hmask[l + 16 * k] & m) ? 0 : 4);
                        *dst++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

static void q4_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        float d = ld_f16(b->d), min = ld_f16(b->dmin);
        const uint8_t *q = b->qs;
        for (int g = 0; g < 4; g++, q += 32) { /* 4 groups of 64: 32 low nibbles, 32 high */
            uint8_t sc, m;
            quant_scale_min_k4(2 * g, b->scales, &sc, &m);
            float d1 = d * sc, m1 = min * m;
            quant_scale_min_k4(2 * g + 1, b->scales, &sc, &m);
            float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++)
                *dst++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *dst++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void q5_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q5_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        float d = ld_f16(b->d), min = ld_f16(b->dmin);
        const uint8_t *ql = b->qs;
        for (int g = 0; g < 4; g++, ql += 32) {
            uint8_t sc, m;
            quant_scale_min_k4(2 * g, b->scales, &sc, &m);
            float d1 = d * sc, m1 = min * m;
            quant_scale_min_k4(2 * g + 1, b->scales, &sc, &m);
            float d2 = d * sc, m2 = min * m;
            uint8_t u1 = (uint8_t)(1u << (2 * g)), u2 = (uint8_t)(2u << (2 * g));
            for (int l = 0; l < 32; l++)
                *dst++ = d1 * (float)((ql[l] & 0xF) + (b->qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *dst++ = d2 * (float)((ql[l] >> 4) + (b->qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void q6_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q6_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        float d = ld_f16(b->d);
        for (int h = 0; h < 2; h++) { /* two halves of 128: ql 64 bytes, qh 32 bytes, 8 scales */
            const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            const int8_t *sc = b->scales + 8 * h;
            float *y = dst + 128 * h;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
        dst += QK_K;
    }
}

static void q8_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        float d;
        memcpy(&d, b->d, 4);
        for (int j = 0; j < QK_K; j++)
            *dst++ = d * (float)b->qs[j];
    }
}

/* Affine fit x ~ scale*L + min (min <= 0, L in 0..nmax) of one sub-block, minimizing the
 * weighted squared error: start from the min/max grid, then try nstep slightly stretched grids,
 * each followed by a closed-form least-squares refit of scale and min for the levels it chose.
 * Writes the levels to L, -min to *neg_min, and returns the scale. */
static float fit_affine(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                        float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0], sum_w = 0, sum_x = 0;
    for (int i = 0; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        l = l < 0 ? 0 : l > nmax ? nmax : l;
        L[i] = (uint8_t)l;
        float diff = scale * l + min - x[i];
        best += w[i] * (diff * diff);
    }
    uint8_t Laux[32];
    for (int s = 0; s <= nstep; s++) {
        float is = (rmin + rdelta * s + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(is * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D <= 0) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) { /* the format's min is <= 0: refit scale alone */
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best) {
            memcpy(L, Laux, (size_t)n);
            best = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

/* Packs 8 six-bit scales and mins into Q4_K/Q5_K's 12 bytes (inverse of quant_scale_min_k4). */
static void pack_scale_min_k4(const uint8_t ls[8], const uint8_t lm[8], uint8_t q[12]) {
    memset(q, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            q[j] = ls[j];
            q[j + 4] = lm[j];
        } else {
            q[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            q[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            q[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per sub-block affine fits, 6-bit quantized
 * scales/mins relative to the super-block's f16 d/dmin, then the final levels against the
 * stored (rounded) scales. Writes d, dmin, scales and the 256 levels. */
static void kquant_affine_block(const float *x, int nmax, float rmin, int nstep, uint8_t d_out[2],
                                uint8_t dmin_out[2], uint8_t scales_out[12], uint8_t L[QK_K]) {
    float scales[8], mins[8], w[32], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            w[l] = av_x + fabsf(xs[l]); /* favour the large weights */
        scales[j] = fit_affine(32, nmax, xs, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        int a = nearest_int(inv_scale * scales[j]), m = nearest_int(inv_min * mins[j]);
        ls[j] = (uint8_t)(a > 63 ? 63 : a);
        lm[j] = (uint8_t)(m > 63 ? 63 : m);
    }
    pack_scale_min_k4(ls, lm, scales_out);
    st_f16(d_out, max_scale / 63.f);
    st_f16(dmin_out, max_min / 63.f);
    float d = ld_f16(d_out), dmin = ld_f16(dmin_out);
    for (int j = 0; j < 8; j++) {
        float ds = d * ls[j];
        if (ds == 0.0f) continue; /* levels from the fit stay: they decode to -dm either way */
        float dm = dmin * lm[j];
        for (int l = 0; l < 32; l++) {
            int q = nearest_int((x[32 * j + l] + dm) / ds);
            L[32 * j + l] = (uint8_t)(q < 0 ? 0 : q > nmax ? nmax : q);
        }
    }
}

static void q4_K_from_float(const float *x, void *dst, int64_t n) {
    block_q4_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        kquant_affine_block(x, 15, -1.0f, 20, b->d, b->dmin, b->scales, L);
        uint8_t *q = b->qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void q5_K_from_float(const float *x, void *dst, int64_t n) {
    block_q5_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        kquant_affine_block(x, 31, -0.5f, 15, b->d, b->dmin, b->scales, L);
        memset(b->qh, 0, sizeof b->qh);
        uint8_t *ql = b->qs, m1 = 1, m2 = 2;
        for (int j = 0; j < QK_K;
             j += 64, ql += 32, m1 = (uint8_t)(m1 << 2), m2 = (uint8_t)(m2 << 2)) {
            for (int l = 0; l < 32; l++) {
                int l1 = L[j + l], l2 = L[j + l + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    b->qh[l] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    b->qh[l] |= m2;
                }
                ql[l] = (uint8_t)(l1 | (l2 << 4));
            }
        }
    }
}

/* Symmetric fit x ~ scale*l, l in -nmax..nmax-1, weights x^2: the grid set by the largest
 * magnitude and 18 neighbouring grids, each scored by its least-squares scale. Writes the levels
 * (offset by nmax) to L and returns the scale (0 for an all-zero group). */
static float fit_symmetric(int n, int nmax, const float *x, uint8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float best_scale = 0, best = -1;
    for (int k = 0; k < 19; k++) {
        int s = k == 0 ? 0 : k <= 9 ? k - 10 : k - 9; /* the plain grid first, then -9..-1, 1..9 */
        float iscale = -(nmax + 0.1f * s) / max, sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        /* error = sum w x^2 - sumlx^2/suml2: maximise sumlx^2/suml2 */
        if (suml2 > 0 && (best < 0 || sumlx * sumlx > best * suml2)) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
                L[i] = (uint8_t)(l + nmax);
            }
            best_scale = sumlx / suml2;
            best = best_scale * sumlx;
        }
    }
    return best_scale;
}

static void q6_K_from_float(const float *x, void *dst, int64_t n) {
    block_q6_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        float scales[QK_K / 16], max_scale = 0, max_abs = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            scales[ib] = fit_symmetric(16, 32, x + 16 * ib, L + 16 * ib);
            if (fabsf(scales[ib]) > max_abs) {
                max_abs = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        memset(b, 0, sizeof *b);
        if (max_abs < 1e-15f) continue; /* all zero: d = 0 decodes to zeros */
        float iscale = -128.f / max_scale;
        st_f16(b->d, 1 / iscale);
        float d = ld_f16(b->d);
        for (int ib = 0; ib < QK_K / 16; ib++) {
            int s = nearest_int(iscale * scales[ib]);
            b->scales[ib] = (int8_t)(s > 127 ? 127 : s);
            float ds = d * b->scales[ib];
            if (ds == 0.0f) continue;
            for (int l = 0; l < 16; l++) {
                int q = nearest_int(x[16 * ib + l] / ds);
                L[16 * ib + l] = (uint8_t)((q < -32 ? -32 : q > 31 ? 31 : q) + 32);
            }
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *Lh = L + 128 * h;
            uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
                qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                  ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
            }
        }
    }
}

static void q8_K_from_float(const float *x, void *dst, int64_t n) {
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        memset(b, 0, sizeof *b);
        if (amax == 0.0f) continue;
        float iscale = -127.f / max, d = 1 / iscale;
        for (int j = 0; j < QK_K; j++) {
            int v = nearest_int(iscale * x[j]);
            b->qs[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += b->qs[16 * j + l];
            b->bsums[2 * j] = (uint8_t)(sum & 0xFF);
            b->bsums[2 * j + 1] = (uint8_t)((sum >> 8) & 0xFF);
        }
        memcpy(b->d, &d, 4);
    }
}

/* ---- the table --------------------------------------------------------------------------- */

static const qtype_traits traits[QT_COUNT] = {
    [QT_F32] = {"f32", 1, 4, f32_to_float, f32_from_float},
    [QT_F16] = {"f16", 1, 2, f16_to_float, f16_from_float},
    [QT_BF16] = {"bf16", 1, 2, bf16_to_float, bf16_from_float},
    [QT_Q4_0] = {"q4_0", QK4_0, sizeof(block_q4_0), q4_0_to_float, q4_0_from_float},
    [QT_Q4_1] = {"q4_1", QK4_1, sizeof(block_q4_1), q4_1_to_float, q4_1_from_float},
    [QT_Q5_0] = {"q5_0", QK5_0, sizeof(block_q5_0), q5_0_to_float, q5_0_from_float},
    [QT_Q5_1] = {"q5_1", QK5_1, sizeof(block_q5_1), q5_1_to_float, q5_1_from_float},
    [QT_Q8_0] = {"q8_0", QK8_0, sizeof(block_q8_0), q8_0_to_float, q8_0_from_float},
    [QT_Q2_K] = {"q2_K", QK_K, sizeof(block_q2_K), q2_K_to_float, NULL},
    [QT_Q3_K] = {"q3_K", QK_K, sizeof(block_q3_K), q3_K_to_float, NULL},
    [QT_Q4_K] = {"q4_K", QK_K, sizeof(block_q4_K), q4_K_to_float, q4_K_from_float},
    [QT_Q5_K] = {"q5_K", QK_K, sizeof(block_q5_K), q5_K_to_float, q5_K_from_float},
    [QT_Q6_K] = {"q6_K", QK_K, sizeof(block_q6_K), q6_K_to_float, q6_K_from_float},
    [QT_Q8_K] = {"q8_K", QK_K, sizeof(block_q8_K), q8_K_to_float, q8_K_from_float},
};

const qtype_traits *quant_traits(uint32_t type) {
    if (type >= QT_COUNT || !traits[type].name) return NULL;
    return &traits[type];
}

size_t quant_row_size(uint32_t type, int64_t n) {
    const qtype_traits *t = quant_traits(type);
    if (!t || n < 0 || n % t->block_size) return 0;
    uint64_t blocks = (uint64_t)(n / t->block_size);
    if (blocks > SIZE_MAX / t->type_size) return 0;
    return (size_t)blocks * t->type_size;
}

int quant_type_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < QT_COUNT; i++)
        if (traits[i].name && strcasecmp(traits[i].name, name) == 0) return i;
    return -1;
}

int quant_dequantize_rows(uint32_t type, const void *src, float *dst, int64_t n_rows,
                          int64_t row_len) {
    const qtype_traits *t = quant_traits(type);
    if (!t || !t->to_float) return QUANT_EUNSUPPORTED;
    if (row_len <= 0 || row_len % t->block_size || n_rows < 0) return QUANT_EROWLEN;
    size_t stride = quant_row_size(type, row_len);
    for (int64_t r = 0; r < n_rows; r++)
        t->to_float((const uint8_t *)src + (size_t)r * stride, dst + r * row_len, row_len);
    return 0;
}

int quant_quantize_rows(uint32_t type, const float *src, void *dst, int64_t n_rows,
                        int64_t row_len) {
    const qtype_traits *t = quant_traits(type);
    if (!t || !t->from_float) return QUANT_EUNSUPPORTED;
    if (row_len <= 0 || row_len % t->block_size || n_rows < 0) return QUANT_EROWLEN;
    size_t stride = quant_row_size(type, row_len);
    for (int64_t r = 0; r < n_rows; r++)
        t->from_float(src + r * row_len, (uint8_t *)dst + (size_t)r * stride, row_len);
    return 0;
}

/* ---- file-level mixes -------------------------------------------------------------------- */

static const quant_mix mixes[] = {
    {"F32", QT_F32, 0},      {"F16", QT_F16, 1},      {"BF16", QT_BF16, 32},
    {"Q8_0", QT_Q8_0, 7},    {"Q4_0", QT_Q4_0, 2},    {"Q4_1", QT_Q4_1, 3},
    {"Q5_0", QT_Q5_0, 8},    {"Q5_1", QT_Q5_1, 9},    {"Q4_K_S", QT_Q4_K, 14},
    {"Q4_K_M", QT_Q4_K, 15}, {"Q5_K_S", QT_Q5_K, 16}, {"Q5_K_M", QT_Q5_K, 17},
    {"Q6_K", QT_Q6_K, 18},
};

const quant_mix *quant_mix_at(int i) {
    return i >= 0 && i < (int)(sizeof mixes / sizeof *mixes) ? &mixes[i] : NULL;
}

const quant_mix *quant_mix_find(const char *name) {
    for (int i = 0; name && quant_mix_at(i); i++)
        if (strcasecmp(mixes[i].name, name) == 0) return &mixes[i];
    return NULL;
}

static bool has(const char *s, const char *sub) {
    return strstr(s, sub) != NULL;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* llama.cpp's choice of the layers that get more bits: the first and last eighth, and every
 * third one in between. */
static bool use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static bool is_float_type(uint32_t t) {
    return t == QT_F32 || t == QT_F16 || t == QT_BF16;
}

void quant_mix_plan(const quant_mix *mix, const quant_tensor_desc *t, int64_t n,
                    uint32_t *types_out) {
    bool has_output = false;
    int n_attn_v = 0, n_ffn_down = 0, i_attn_v = 0, i_ffn_down = 0;
    for (int64_t i = 0; i < n; i++) {
        has_output |= strcmp(t[i].name, "output.weight") == 0;
        n_attn_v += has(t[i].name, "attn_v.weight") || has(t[i].name, "attn_qkv.weight");
        n_ffn_down += has(t[i].name, "ffn_down");
    }
    bool k_m = strcmp(mix->name, "Q4_K_M") == 0 || strcmp(mix->name, "Q5_K_M") == 0;
    bool q4_k_s = strcmp(mix->name, "Q4_K_S") == 0;
    for (int64_t i = 0; i < n; i++) {
        const char *name = t[i].name;
        bool matrix = ends_with(name, "weight") && t[i].n_dims >= 2 && !has(name, "_norm.weight") &&
                      !has(name, "shortconv.conv.weight") && !has(name, "ssm_conv1d.weight") &&
                      !has(name, "ffn_gate_inp.weight");
        uint32_t type = mix->base;
        if (!matrix) {
            types_out[i] = t[i].type;
            continue;
        }
        if (!is_float_type(mix->base)) {
            if (strcmp(name, "output.weight") == 0 ||
                (!has_output && strcmp(name, "token_embd.weight") == 0)) {
                if (t[i].ne0 % QK_K)
                    type = QT_Q8_0;
                else if (type != QT_Q8_0)
                    type = QT_Q6_K;
            } else if (has(name, "attn_v.weight") || has(name, "attn_qkv.weight")) {
                if (k_m && use_more_bits(i_attn_v, n_attn_v))
                    type = QT_Q6_K;
                else if (q4_k_s && i_attn_v < 4)
                    type = QT_Q5_K;
                i_attn_v++;
            } else if (has(name, "ffn_down")) {
                if (k_m && use_more_bits(i_ffn_down, n_ffn_down))
                    type = QT_Q6_K;
                else if (q4_k_s && i_ffn_down < n_ffn_down / 8)
                    type = QT_Q5_K;
                i_ffn_down++;
            }
            if (quant_traits(type)->block_size == QK_K && t[i].ne0 % QK_K) {
                type = type == QT_Q4_K ? QT_Q5_0 : type == QT_Q5_K ? QT_Q5_1 : QT_Q8_0;
            }
        }
        if (t[i].ne0 % quant_traits(type)->block_size) type = QT_F16;
        types_out[i] = type;
    }
}
