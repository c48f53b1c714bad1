/* kern_avx2.c: AVX2 (maddubs) and AVX-VNNI (VEX vpdpbusd) instances of the 256-bit tile kernel. */
#include "engine/kern.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <string.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
/* u8 x s8 -> s16 pairs cannot saturate here: codes are <= 31 (int4, I8M) and |a| <= 127 */
#define KX_DP(acc, u, a)                                                                           \
    _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (a)), _mm256_set1_epi16(1)))
/* s8 x s8 through |w| and sign(a, w): |w| <= 128, |a| <= 127, pairs <= 32512 */
#define KX_DPS(acc, w, a) KX_DP((acc), _mm256_sign_epi8((w), (w)), _mm256_sign_epi8((a), (w)))
#define KX_SIGNED_I8 1
#define KX_NTMAX 4
#define KX(name) kx_avx2_##name
#define KX_ENTRY kx_avx2_tiles
#define KX_LINKAGE static
#include "engine/kern_x86.h"
#undef KX_DP
#undef KX_DPS
#undef KX_SIGNED_I8
#undef KX
#undef KX_ENTRY

/* A tile's 8 row results for one token, of which the first nr are rows of the matrix. */
static inline void store_rows(float *y, __m256 acc, int nr) {
    if (nr == 8) {
        _mm256_storeu_ps(y, acc);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, acc);
        memcpy(y, tmp, (size_t)nr * sizeof(float));
    }
}

/* Group g's float factors of the 4-bit tile at tp (group_bytes gb, ng groups): each row's
 * scale s and, for the kinds with a min, the term b its code-sum pairs with (the generic
 * kernel's values, so the bits are the same). */
static inline __attribute__((always_inline)) void i4_factors(const uint8_t *tp, size_t gb,
                                                             int64_t ng, int64_t g, const int KIND,
                                                             __m256 *sf, __m256 *bf) {
    const uint8_t *bp = tp + (size_t)g * gb;
    if (KIND == RP_I4K) { /* s = d * sc, b = -(dmin * mc): exact */
        const uint8_t *hp = tp + (size_t)ng * gb + (size_t)(g >> 3) * 32;
        const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hp));
        const __m256 mv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(hp + 16)));
        *sf = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                                    _mm_loadl_epi64((const __m128i *)(bp + 128)))));
        *bf = _mm256_sub_ps(_mm256_setzero_ps(),
                            _mm256_mul_ps(mv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                                                  _mm_loadl_epi64((const __m128i *)(bp + 136))))));
    } else {
        *sf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(bp + 128)));
        *bf = KIND == RP_I4M ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(bp + 144)))
                             : _mm256_setzero_ps();
    }
}

/* RP_I6's factors of group g, half h: s = d * sc of the half (exact) */
static inline __attribute__((always_inline)) __m256 i6_factor(const uint8_t *tp, size_t gb,
                                                              int64_t ng, int64_t g, int h) {
    const uint8_t *hp = tp + (size_t)ng * gb + (size_t)(g >> 3) * 16;
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hp));
    return _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                                 (const __m128i *)(tp + (size_t)g * gb + 192 + 8 * h)))));
}

/* RP_I6 codes of chunk c, half h of the group at gp, one byte each: nibble h of load c with
 * bits 4..5 from plane h (pl, its 32 bytes) */
static inline __attribute__((always_inline)) __m256i i6_codes(const uint8_t *gp, __m256i pl, int h,
                                                              int c) {
    __m256i v = _mm256_loadu_si256((const __m256i *)(gp + 32 * c));
    if (h) v = _mm256_srli_epi16(v, 4);
    const __m256i hb = c == 0   ? _mm256_slli_epi16(pl, 4)
                       : c == 1 ? _mm256_slli_epi16(pl, 2)
                       : c == 2 ? pl
                                : _mm256_srli_epi16(pl, 2);
    return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi8(15)),
                           _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
}

/* Several passes over the same tiles (prefill, batched decode) run them in chunks of XK groups,
 * each chunk prepared once for all its passes: every group's codes spread to one byte each (a
 * tile group's 8 loads of 32 bytes: RP_I4*: chunk c's low then high nibbles at 2c, 2c + 1;
 * RP_I6: half h's chunk c at 4h + c, its 6-bit codes assembled) and, for RP_I4K and RP_I6, its
 * float factors (16 a group: s then b; RP_I6: half 0's s then half 1's). A pass then loads
 * codes where it would unpack them, the integer sums are the same, and the float steps run in
 * the same order, accumulators carried from chunk to chunk through y. */
#define XK 32
static void prepare_chunk(const rp_matrix *m, const uint8_t *tp, int nb, int64_t g0, int64_t g1,
                          size_t pfd, uint8_t *xc, float *fac) {
    const size_t gb = m->group_bytes;
    const int64_t ng = m->n_groups;
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int b = 0; b < nb; b++) {
        const uint8_t *bt = tp + (size_t)b * m->tile_bytes;
        for (int64_t g = g0; g < g1; g++) {
            const uint8_t *gp = bt + (size_t)g * gb;
            __m256i *xo = (__m256i *)(xc + ((size_t)b * XK + (size_t)(g - g0)) * 256);
            float *fo = fac + ((size_t)b * XK + (size_t)(g - g0)) * 16;
            kx_avx2_pf_lines(gp + pfd, m->kind == RP_I6 ? 4 : 3);
            __m256 s, z;
            switch (m->kind) {
            case RP_I6:
                for (int h = 0; h < 2; h++) {
                    const __m256i pl = _mm256_loadu_si256((const __m256i *)(gp + 128 + 32 * h));
                    for (int c = 0; c < 4; c++)
                        _mm256_store_si256(xo + 4 * h + c, i6_codes(gp, pl, h, c));
                }
                s = i6_factor(bt, gb, ng, g, 0);
                z = i6_factor(bt, gb, ng, g, 1);
                _mm256_store_ps(fo, s);
                _mm256_store_ps(fo + 8, z);
                break;
            default:
                for (int c = 0; c < 4; c++) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(gp + 32 * c));
                    _mm256_store_si256(xo + 2 * c, _mm256_and_si256(v, m4));
                    _mm256_store_si256(xo + 2 * c + 1,
                                       _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
                }
                if (m->kind == RP_I4K) {
                    i4_factors(bt, gb, ng, g, RP_I4K, &s, &z);
                    _mm256_store_ps(fo, s);
                    _mm256_store_ps(fo + 8, z);
                }
                break;
            }
        }
    }
}

/* A tile's 8 row accumulators for one token as store_rows left them (nr rows, 0 beyond) */
static inline __m256 load_rows(const float *y, int nr) {
    if (nr == 8) return _mm256_loadu_ps(y);
    float tmp[8] = {0};
    memcpy(tmp, y, (size_t)nr * sizeof(float));
    return _mm256_loadu_ps(tmp);
}

/* The 4-bit kinds without a bit plane (RP_I4, RP_I4M, RP_I4K) on maddubs, chunk by chunk, for
 * NB adjacent tiles (1 or 2) at once: each 32-byte load of codes gives the low chunk c and the
 * high chunk 4 + c of a tile's 8 rows; every token's int16 pair sums of the 8 chunks add up
 * before one widening (exact: codes <= 15 and |a| <= 127 keep 16 products under 32768). Two
 * tiles share each activation broadcast (on AMD a broadcast costs a vector-pipe uop, as much as
 * the multiply it feeds), so NB = 2 takes 3 tokens a pass (2 x 3 int16 sums, 4 code registers
 * and 2 broadcasts fill 16 registers; the float accumulators live in L1), NB = 1 takes 4. The
 * float steps of each tile are the generic kernel's (kern_tiles_scalar's), so the bits are the
 * same. Tile b's rows go to y + 8 b; nr[b] of them are rows of the matrix. */
static inline __attribute__((always_inline)) void
i4_tile(const rp_matrix *m, const kern_act *a, int tok, float *y, int64_t ldy, const uint8_t *tp,
        const int *nr, size_t pfb, const uint8_t *xc, const float *fac, int64_t g0, int64_t g1,
        const int KIND, const int NT, const int NB, const int X) {
    const int HAS_MIN = KIND != RP_I4;  /* RP_I4: zero point 8 */
    const int XF = X && KIND == RP_I4K; /* factors prepared */
    const size_t gb = m->group_bytes, tb = m->tile_bytes, pfd = (pfb / gb) * gb;
    const int64_t cols = m->cols, ng = m->n_groups;
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi16(1);
    const int8_t *aq[4];
    const int32_t *as[4];
    const float *ad[4];
    __m256 acc[2][4];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        aq[t] = a->q + (size_t)(tok + t) * cols;
        as[t] = a->s + (size_t)(tok + t) * ng;
        ad[t] = a->d + (size_t)(tok + t) * ng;
#pragma GCC unroll 2
        for (int b = 0; b < NB; b++)
            acc[b][t] = X && g0 ? load_rows(y + t * ldy + b * RP_ROWS, nr[b]) : _mm256_setzero_ps();
    }
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *gp = tp + (size_t)g * gb;
        const __m256i *xg = (const __m256i *)(xc + (size_t)(g - g0) * 256);
        if (!X)
#pragma GCC unroll 2
            for (int b = 0; b < NB; b++)
                kx_avx2_pf_lines(gp + b * tb + pfd, 3);
        __m256i h[2][4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m256i lo[2], hi[2];
#pragma GCC unroll 2
            for (int b = 0; b < NB; b++) {
                if (X) {
                    lo[b] = _mm256_load_si256(xg + b * XK * 8 + 2 * c);
                    hi[b] = _mm256_load_si256(xg + b * XK * 8 + 2 * c + 1);
                } else {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(gp + b * tb + 32 * c));
                    lo[b] = _mm256_and_si256(v, m4);
                    hi[b] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const int8_t *q = aq[t] + g * 32;
                const __m256i al = kx_avx2_bc(q + 4 * c), ah = kx_avx2_bc(q + 16 + 4 * c);
#pragma GCC unroll 2
                for (int b = 0; b < NB; b++) {
                    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo[b], al),
                                                       _mm256_maddubs_epi16(hi[b], ah));
                    h[b][t] = c ? _mm256_add_epi16(h[b][t], p) : p;
                    /* keeps the sums in chunk order: GCC otherwise computes all 8 x NT
                     * products first and spills them */
                    __asm__("" : "+x"(h[b][t]));
                }
            }
        }
#pragma GCC unroll 2
        for (int b = 0; b < NB; b++) {
            __m256 sf, bf = _mm256_setzero_ps();
            if (XF) {
                const float *fp = fac + ((size_t)b * XK + (size_t)(g - g0)) * 16;
                sf = _mm256_load_ps(fp);
                if (HAS_MIN) bf = _mm256_load_ps(fp + 8);
            } else {
                i4_factors(tp + b * tb, gb, ng, g, KIND, &sf, &bf);
            }
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                __m256i is = _mm256_madd_epi16(h[b][t], one);
                const __m256 da = _mm256_broadcast_ss(ad[t] + g);
                if (!HAS_MIN) {
                    is = _mm256_sub_epi32(is, _mm256_slli_epi32(_mm256_set1_epi32(as[t][g]), 3));
                    acc[b][t] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(sf, da), acc[b][t]);
                } else {
                    __m256 tt = _mm256_mul_ps(_mm256_cvtepi32_ps(is), sf);
                    tt = _mm256_fmadd_ps(bf, _mm256_cvtepi32_ps(_mm256_set1_epi32(as[t][g])), tt);
                    acc[b][t] = _mm256_fmadd_ps(tt, da, acc[b][t]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 2
        for (int b = 0; b < NB; b++)
            store_rows(y + t * ldy + b * RP_ROWS, acc[b][t], nr[b]);
}

/* RP_I6 (Q6_K) on maddubs, one half group (16 codes a row, its own scale) at a time: chunk c of
 * half h is nibble h of load c with bits 4..5 from plane h (or, prepared, load 4h + c). 6-bit
 * codes (<= 63) with |a| <= 127 allow two chunks of int16 pair sums before widening, so each
 * token holds an int16 sum and the half's int32 sum per tile. On prepared codes NB = 2 adjacent
 * tiles share each activation broadcast, 3 tokens a pass (2 x 3 x 2 sums, 2 code registers and
 * a broadcast fit 16 registers); unpacking in the pass takes one tile and 4 tokens.
 * The float steps are the generic kernel's (half 0, then half 1), so the bits are the same. */
static inline __attribute__((always_inline)) void
i6_tile(const rp_matrix *m, const kern_act *a, int tok, float *y, int64_t ldy, const uint8_t *tp,
        const int *nr, size_t pfb, const uint8_t *xc, const float *fac, int64_t g0, int64_t g1,
        const int NT, const int NB, const int X) {
    const size_t gb = m->group_bytes, pfd = (pfb / gb) * gb;
    const int64_t cols = m->cols, ng = m->n_groups;
    const __m256i one = _mm256_set1_epi16(1);
    const int8_t *aq[4];
    const int32_t *a16[4];
    const float *ad[4];
    __m256 acc[2][4];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        aq[t] = a->q + (size_t)(tok + t) * cols;
        a16[t] = a->s16 + (size_t)(tok + t) * ng * 2;
        ad[t] = a->d + (size_t)(tok + t) * ng;
#pragma GCC unroll 2
        for (int b = 0; b < NB; b++)
            acc[b][t] = X && g0 ? load_rows(y + t * ldy + b * RP_ROWS, nr[b]) : _mm256_setzero_ps();
    }
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *gp = tp + (size_t)g * gb;
        const __m256i *xg = (const __m256i *)(xc + (size_t)(g - g0) * 256);
        if (!X) kx_avx2_pf_lines(gp + pfd, 4);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i pl =
                X ? one : _mm256_loadu_si256((const __m256i *)(gp + 128 + 32 * h)); /* X: unused */
            __m256i h16[2][4], is[2][4];
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                __m256i w[2];
#pragma GCC unroll 2
                for (int b = 0; b < NB; b++) /* unprepared: NB is 1 */
                    w[b] =
                        X ? _mm256_load_si256(xg + b * XK * 8 + 4 * h + c) : i6_codes(gp, pl, h, c);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const __m256i av = kx_avx2_bc(aq[t] + g * 32 + 16 * h + 4 * c);
#pragma GCC unroll 2
                    for (int b = 0; b < NB; b++) {
                        const __m256i p = _mm256_maddubs_epi16(w[b], av);
                        h16[b][t] = c & 1 ? _mm256_add_epi16(h16[b][t], p) : p;
                        if (c == 1) is[b][t] = _mm256_madd_epi16(h16[b][t], one);
                        if (c == 3)
                            is[b][t] =
                                _mm256_add_epi32(is[b][t], _mm256_madd_epi16(h16[b][t], one));
                        /* keeps the sums in chunk order: GCC otherwise computes all the
                         * products first and spills them */
                        __asm__("" : "+x"(h16[b][t]));
                    }
                }
            }
            /* the factors are loaded where they are used: held in registers across the
             * tokens they push the sums of the two-tile passes out */
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const __m256 da = _mm256_broadcast_ss(ad[t] + g);
                const __m256i z =
                    _mm256_slli_epi32(_mm256_set1_epi32(a16[t][2 * g + h]), 5); /* 32 s16 */
#pragma GCC unroll 2
                for (int b = 0; b < NB; b++) {
                    const __m256 sf =
                        X ? _mm256_load_ps(fac + ((size_t)b * XK + (size_t)(g - g0)) * 16 + 8 * h)
                          : i6_factor(tp, gb, ng, g, h);
                    acc[b][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(is[b][t], z)),
                                                _mm256_mul_ps(sf, da), acc[b][t]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 2
        for (int b = 0; b < NB; b++)
            store_rows(y + t * ldy + b * RP_ROWS, acc[b][t], nr[b]);
}

#define I4_CASE(K, N, B, X)                                                                        \
    case (((K)*16 + (N)) * 2 + (B)-1) * 2 + (X):                                                   \
        i4_tile(m, a, tok, yt, ldy, tp, nr, pfb, xc, fac, g0, g1, K, N, B, X);                     \
        break;
#define I4_CASES2(K, X)                                                                            \
    I4_CASE(K, 1, 1, X)                                                                            \
    I4_CASE(K, 2, 1, X)                                                                            \
    I4_CASE(K, 3, 1, X)                                                                            \
    I4_CASE(K, 4, 1, X) I4_CASE(K, 1, 2, X) I4_CASE(K, 2, 2, X) I4_CASE(K, 3, 2, X)
#define I4_CASES(K) I4_CASES2(K, 0) I4_CASES2(K, 1)
#define I6_CASE(N, B, X)                                                                           \
    case ((RP_I6 * 16 + (N)) * 2 + (B)-1) * 2 + (X):                                               \
        i6_tile(m, a, tok, yt, ldy, tp, nr, pfb, xc, fac, g0, g1, N, B, X);                        \
        break;
#define I6_CASES(N) I6_CASE(N, 1, 0) I6_CASE(N, 1, 1)

/* Tiles [tile, tile + nb) (nb = 1 or 2; nr[b] rows of the matrix each) over groups [g0, g1) for
 * ntok tokens in passes: on codes prepare_chunk readies first when x (its prefetches pfd bytes
 * ahead of each group), else unpacked in the passes. */
static inline __attribute__((always_inline)) void
run_tiles(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y, int64_t ldy,
          int64_t tile, int nb, const int *nr, int64_t g0, int64_t g1, int x, size_t pfd,
          uint8_t *xc, float *fac) {
    const int pass = nb == 2 ? 3 : 4;
    const size_t pfb = kx_avx2_pf_bytes(ntok, pass);
    const uint8_t *tp = m->data + (size_t)tile * m->tile_bytes;
    if (x) prepare_chunk(m, tp, nb, g0, g1, pfd, xc, fac);
    for (int tb = 0; tb < ntok; tb += pass) {
        int nt = ntok - tb < pass ? ntok - tb : pass, tok = tok0 + tb;
        float *yt = y + tb * ldy;
        switch (((m->kind * 16 + nt) * 2 + nb - 1) * 2 + x) {
            I4_CASES(RP_I4)
            I4_CASES(RP_I4M)
            I4_CASES(RP_I4K)
            I6_CASES(1)
            I6_CASES(2)
            I6_CASES(3)
            I6_CASES(4)
            I6_CASE(1, 2, 1)
            I6_CASE(2, 2, 1)
            I6_CASE(3, 2, 1)
        default:
            break;
        }
    }
}

/* How many tiles (1 or 2) start at tile, and their rows of the matrix */
static inline int tile_pair(const rp_matrix *m, int64_t tile, int64_t t1, int two, int *nr) {
    const int nb = tile + 1 < t1 && two ? 2 : 1;
    for (int b = 0; b < nb; b++) {
        int64_t left = m->rows - (tile + b) * RP_ROWS;
        nr[b] = left < RP_ROWS ? (int)left : RP_ROWS;
    }
    return nb;
}

/* The 4-bit kinds (two tiles at a time, 3 tokens a pass; a last odd tile alone, 4 tokens a pass)
 * and RP_I6 (on prepared codes the same; else one tile, 4 tokens a pass) here, the other kinds
 * the generic kernel. More than one pass over the same tiles runs chunk by chunk on prepared
 * codes (prepare_chunk) from 16 tokens (RP_I4K, RP_I6) or 64 (RP_I4, RP_I4M, without prepared
 * factors): below, unpacking the codes in every pass measured as fast or faster. A call on
 * RP_I4K or RP_I6 whose tokens' codes exceed KERN_AVX2_CO_BYTES (wide matrices: mm_range gives
 * this kernel blocks of 128 tokens there) runs chunk-outer: each chunk of columns through all
 * the call's tiles, so only a chunk's codes (128 tokens: 128 KiB) need to stay in L2, where the
 * tile-outer order reads all the call's codes once a tile pair, and each chunk is prepared once
 * for 128 tokens instead of 24-32. Each pair's accumulators wait in y between chunks either
 * way, so the bits are the same. RP_I4 and RP_I4M (no prepared factors) ran slower that way. */
void kern_tiles_avx2(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                     int64_t ldy, int64_t t0, int64_t t1) {
    if (m->kind != RP_I4 && m->kind != RP_I4M && m->kind != RP_I4K && m->kind != RP_I6) {
        kx_avx2_tiles(m, a, tok0, ntok, y, ldy, t0, t1);
        return;
    }
    _Alignas(32) uint8_t xc[2 * XK * 256];
    _Alignas(32) float fac[2 * XK * 16];
    const int i6 = m->kind == RP_I6;
    const int64_t ng = m->n_groups;
    const int x = ntok >= (m->kind == RP_I4K || i6 ? 16 : 64), two = !i6 || x;
    int nr[2];
    if (x && kern_avx2_chunk_outer(m, ntok)) {
        /* prefetch the next pair's chunk: the next lines this order reads (the call's last pair
         * prefetches past t1, lines a later call reads). run_tiles is inlined in both orders:
         * one shared call site measured 4-9% slower for Q4_K. */
        const size_t pfd = 2 * m->tile_bytes;
        for (int64_t g0 = 0; g0 < ng; g0 += XK) {
            const int64_t g1 = g0 + XK < ng ? g0 + XK : ng;
            for (int64_t tile = t0; tile < t1;) {
                const int nb = tile_pair(m, tile, t1, two, nr);
                run_tiles(m, a, tok0, ntok, y + (tile - t0) * RP_ROWS, ldy, tile, nb, nr, g0, g1, x,
                          pfd, xc, fac);
                tile += nb;
            }
        }
        return;
    }
    const size_t pfd = (KX_PFD / m->group_bytes) * m->group_bytes;
    for (int64_t tile = t0; tile < t1;) {
        const int nb = tile_pair(m, tile, t1, two, nr);
        for (int64_t g0 = 0; g0 < ng; g0 += x ? XK : ng) {
            const int64_t g1 = x && g0 + XK < ng ? g0 + XK : ng;
            run_tiles(m, a, tok0, ntok, y + (tile - t0) * RP_ROWS, ldy, tile, nb, nr, g0, g1, x,
                      pfd, xc, fac);
        }
        tile += nb;
    }
}
#undef I4_CASE
#undef I4_CASES2
#undef I4_CASES
#undef I6_CASE
#undef I6_CASES

static inline __m256 half8(const uint16_t *p, bool bf16) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

void kern_gemv_half_avx2(const uint16_t *w, bool bf16, int64_t cols, int64_t r0, int64_t r1,
                         const float *x, int64_t ldx, int ntok, float *y, int64_t ldy) {
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *wr = w + (size_t)r * cols;
        _mm_prefetch((const char *)(wr + cols), _MM_HINT_T0);
        for (int t = 0; t < ntok; t++) {
            const float *xt = x + (size_t)t * ldx;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int64_t j = 0;
            for (; j + 16 <= cols; j += 16) {
                a0 = _mm256_fmadd_ps(half8(wr + j, bf16), _mm256_loadu_ps(xt + j), a0);
                a1 = _mm256_fmadd_ps(half8(wr + j + 8, bf16), _mm256_loadu_ps(xt + j + 8), a1);
            }
            __m256 s8 = _mm256_add_ps(a0, a1);
            __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
            s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
            float acc = _mm_cvtss_f32(s4);
            for (; j < cols; j++) {
                uint32_t u = bf16 ? (uint32_t)wr[j] << 16 : 0;
                float wv;
                if (bf16)
                    memcpy(&wv, &u, 4);
                else
                    wv = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(wr[j])));
                acc += wv * xt[j];
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

double kern_sumsq_avx2(const float *x, int64_t n) {
    /* four pairs of chains: one pair would wait on the FMA's latency */
    __m256d a[8];
    for (int k = 0; k < 8; k++)
        a[k] = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_loadu_ps(x + i + 8 * k);
            __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
            __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
            a[2 * k] = _mm256_fmadd_pd(lo, lo, a[2 * k]);
            a[2 * k + 1] = _mm256_fmadd_pd(hi, hi, a[2 * k + 1]);
        }
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a[0] = _mm256_fmadd_pd(lo, lo, a[0]);
        a[1] = _mm256_fmadd_pd(hi, hi, a[1]);
    }
    __m256d s4 = _mm256_add_pd(_mm256_add_pd(_mm256_add_pd(a[0], a[1]), _mm256_add_pd(a[2], a[3])),
                               _mm256_add_pd(_mm256_add_pd(a[4], a[5]), _mm256_add_pd(a[6], a[7])));
    double t[4];
    _mm256_storeu_pd(t, s4);
    double s = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

/* y[i] = (x[i] * scale) * w[i]: the scalar loop's two roundings, 8 lanes at a time */
void kern_scale_mul_avx2(float *y, const float *x, float scale, const float *w, int64_t n) {
    const __m256 sc = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sc),
                                              _mm256_loadu_ps(w + i)));
    for (; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#define KX_DP(acc, u, a) _mm256_dpbusd_avx_epi32((acc), (u), (a))
#define KX_DPS(acc, w, a) KX_DP(acc, w, a) /* unused: KX_SIGNED_I8 is 0 */
#define KX_SIGNED_I8 0
#define KX_NTMAX 4
#define KX(name) kx_avxvnni_##name
#define KX_ENTRY kern_tiles_avxvnni
#include "engine/kern_x86.h"
#undef KX_DP
#undef KX_DPS
#undef KX_SIGNED_I8
#undef KX
#undef KX_ENTRY
#pragma GCC pop_options

#else /* not x86-64: never selected (kern_path_available says so) */
void kern_tiles_avx2(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                     int64_t ldy, int64_t t0, int64_t t1) {
    kern_tiles_scalar(m, a, tok0, ntok, y, ldy, t0, t1);
}
void kern_tiles_avxvnni(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                        int64_t ldy, int64_t t0, int64_t t1) {
    kern_tiles_scalar(m, a, tok0, ntok, y, ldy, t0, t1);
}
double kern_sumsq_avx2(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}
void kern_scale_mul_avx2(float *y, const float *x, float scale, const float *w, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}
void kern_gemv_half_avx2(const uint16_t *w, bool bf16, int64_t cols, int64_t r0, int64_t r1,
                         const float *x, int64_t ldx, int ntok, float *y, int64_t ldy) {
    kern_gemv_half_with(KERN_SCALAR, w, bf16, cols, r0, r1, x, ldx, ntok, y, ldy);
}
#endif
