/* kern_avx512.c: AVX-512 VL+VNNI kernels: 256-bit instance of the tile kernel, and a 512-bit one
 * that runs two tiles (16 rows) per pass, used for batches where vpdpbusd throughput bounds. */
#include "engine/kern.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <string.h>

void kern_tiles_avx512_ymm(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                           int64_t ldy, int64_t t0, int64_t t1);

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")
#define KX_DP(acc, u, a) _mm256_dpbusd_epi32((acc), (u), (a))
#define KX_DPS(acc, w, a) KX_DP(acc, w, a) /* unused: KX_SIGNED_I8 is 0 */
#define KX_SIGNED_I8 0
#define KX_NTMAX 8
#define KX(name) kx_avx512_##name
#define KX_ENTRY kern_tiles_avx512_ymm
#include "engine/kern_x86.h"

static inline __m512i z_ld2(const uint8_t *p, const uint8_t *q) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p)),
                              _mm256_loadu_si256((const __m256i *)q), 1);
}

static inline __m512 z_h2(const uint8_t *p, const uint8_t *q) {
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p)),
                                        _mm_loadu_si128((const __m128i *)q), 1);
    return _mm512_cvtph_ps(h);
}

static inline __m512i z_bc(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Distance for small activations: twice KX_PFD (one token's): several tokens per weight group
 * consume the stream slower, so the lines must be asked for earlier (with it the output head
 * streams from memory as fast as from cache; docs/benchmarks.md). */
#ifndef Z_PFD
#define Z_PFD 16384
#endif
#ifndef Z_PFD_BIG
#define Z_PFD_BIG 2048
#endif
/* With large activations, also 32 KiB ahead into L2 (prefetcht1): the short L1 distance alone
 * leaves the stream waiting on memory; with small activations the extra hint costs more than it
 * gives, so there is none (docs/benchmarks.md). */
#ifndef Z_PFD_L2
#define Z_PFD_L2 32768
#endif
/* Tiles tile and tile+1 (rows 16*k .. +16, nr of them valid) for NT tokens: lane = row, the
 * same per-lane operations as kern_x86.h and kern_tiles_scalar. */
static inline __attribute__((always_inline)) void z_tile2(const rp_matrix *m, const kern_act *a,
                                                          int tok, float *y, int64_t ldy,
                                                          const uint8_t *tp, int nr, const int KIND,
                                                          const int NT) {
    const int I6 = KIND == RP_I6, I5 = KIND == RP_I5K;
    const int I4 = KIND == RP_I4 || KIND == RP_I4M || KIND == RP_I4K || I6 || I5;
    const int KC = KIND == RP_I4K || I5; /* scale/min codes with superblock factors */
    const int HAS_MIN = KIND == RP_I4M || KIND == RP_I8M || KC;
    const int Z = KIND == RP_I4 ? 8 : KIND == RP_I8 ? 128 : 0; /* (I6: 32 per half, below) */
    const size_t cb = I5 ? 160 : I4 ? 128 : 256, gb = m->group_bytes, tb = m->tile_bytes;
    /* prefetch distance in whole groups: Z_PFD, shorter when the tokens' activations fill
     * much of L1 (ffn_down's 4608 columns x 8 tokens = 36 KiB of 48: 8 KiB ahead on two tiles
     * would evict them) */
    const size_t act = (size_t)NT * (size_t)m->cols;
    const size_t pfd = (act > 16384 ? Z_PFD_BIG : act > 8192 ? KX_PFD / 2 : Z_PFD) / gb * gb;
    const int64_t ng = m->n_groups;
    const __m512i m4 = _mm512_set1_epi8(15);
    __m512 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        const uint8_t *gp = tp + (size_t)g * gb, *gq = gp + tb;
        _mm_prefetch((const char *)gp + pfd, _MM_HINT_T0);
        _mm_prefetch((const char *)gp + pfd + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)gp + pfd + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)gq + pfd, _MM_HINT_T0);
        _mm_prefetch((const char *)gq + pfd + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)gq + pfd + 128, _MM_HINT_T0);
        if (act > 16384) { /* the short L1 distance, and a long one into L2 */
            _mm_prefetch((const char *)gp + Z_PFD_L2, _MM_HINT_T1);
            _mm_prefetch((const char *)gp + Z_PFD_L2 + 64, _MM_HINT_T1);
            _mm_prefetch((const char *)gp + Z_PFD_L2 + 128, _MM_HINT_T1);
            _mm_prefetch((const char *)gq + Z_PFD_L2, _MM_HINT_T1);
            _mm_prefetch((const char *)gq + Z_PFD_L2 + 64, _MM_HINT_T1);
            _mm_prefetch((const char *)gq + Z_PFD_L2 + 128, _MM_HINT_T1);
        }
        if (!I4) {
            _mm_prefetch((const char *)gp + pfd + 192, _MM_HINT_T0);
            _mm_prefetch((const char *)gp + pfd + 256, _MM_HINT_T0);
            _mm_prefetch((const char *)gq + pfd + 192, _MM_HINT_T0);
            _mm_prefetch((const char *)gq + pfd + 256, _MM_HINT_T0);
        }
        __m512i w[8];
        if (I4) {
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                __m512i v = z_ld2(gp + 32 * c, gq + 32 * c);
                w[c] = _mm512_and_si512(v, m4);
                w[4 + c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
            if (I5) { /* bit c / 4+c of the plane bytes -> bit 4 of lo / hi chunk c */
                const __m512i m10 = _mm512_set1_epi8(0x10);
                const __m512i pl = z_ld2(gp + 128, gq + 128);
                w[0] = _mm512_or_si512(w[0], _mm512_and_si512(_mm512_slli_epi16(pl, 4), m10));
                w[1] = _mm512_or_si512(w[1], _mm512_and_si512(_mm512_slli_epi16(pl, 3), m10));
                w[2] = _mm512_or_si512(w[2], _mm512_and_si512(_mm512_slli_epi16(pl, 2), m10));
                w[3] = _mm512_or_si512(w[3], _mm512_and_si512(_mm512_slli_epi16(pl, 1), m10));
                w[4] = _mm512_or_si512(w[4], _mm512_and_si512(pl, m10));
                w[5] = _mm512_or_si512(w[5], _mm512_and_si512(_mm512_srli_epi16(pl, 1), m10));
                w[6] = _mm512_or_si512(w[6], _mm512_and_si512(_mm512_srli_epi16(pl, 2), m10));
                w[7] = _mm512_or_si512(w[7], _mm512_and_si512(_mm512_srli_epi16(pl, 3), m10));
            }
            if (I6) { /* bits 2c..2c+1 of the plane bytes -> bits 4..5 of chunk c */
                const __m512i m30 = _mm512_set1_epi8(0x30);
                const __m512i p0 = z_ld2(gp + 128, gq + 128), p1 = z_ld2(gp + 160, gq + 160);
                w[0] = _mm512_or_si512(w[0], _mm512_and_si512(_mm512_slli_epi16(p0, 4), m30));
                w[1] = _mm512_or_si512(w[1], _mm512_and_si512(_mm512_slli_epi16(p0, 2), m30));
                w[2] = _mm512_or_si512(w[2], _mm512_and_si512(p0, m30));
                w[3] = _mm512_or_si512(w[3], _mm512_and_si512(_mm512_srli_epi16(p0, 2), m30));
                w[4] = _mm512_or_si512(w[4], _mm512_and_si512(_mm512_slli_epi16(p1, 4), m30));
                w[5] = _mm512_or_si512(w[5], _mm512_and_si512(_mm512_slli_epi16(p1, 2), m30));
                w[6] = _mm512_or_si512(w[6], _mm512_and_si512(p1, m30));
                w[7] = _mm512_or_si512(w[7], _mm512_and_si512(_mm512_srli_epi16(p1, 2), m30));
            }
        } else {
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++)
                w[c] = z_ld2(gp + 32 * c, gq + 32 * c);
        }
        __m512 sf, bf = _mm512_setzero_ps(), s1f = _mm512_setzero_ps();
        if (I6) { /* s = d * sc per half: exact */
            const uint8_t *h = tp + (size_t)ng * gb + (size_t)(g >> 3) * 16;
            __m512 dv = z_h2(h, h + tb);
            __m128i c0 = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(gp + 192)),
                                            _mm_loadl_epi64((const __m128i *)(gq + 192)));
            __m128i c1 = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(gp + 200)),
                                            _mm_loadl_epi64((const __m128i *)(gq + 200)));
            sf = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c0)));
            s1f = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c1)));
        } else if (KC) { /* s = d * sc, b = -(dmin * mc): exact */
            const uint8_t *h = tp + (size_t)ng * gb + (size_t)(g >> 3) * 32, *h2 = h + tb;
            __m512 dv = z_h2(h, h2), mv = z_h2(h + 16, h2 + 16);
            __m128i sc = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(gp + cb)),
                                            _mm_loadl_epi64((const __m128i *)(gq + cb)));
            __m128i mc = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(gp + cb + 8)),
                                            _mm_loadl_epi64((const __m128i *)(gq + cb + 8)));
            sf = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc)));
            bf = _mm512_sub_ps(_mm512_setzero_ps(),
                               _mm512_mul_ps(mv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mc))));
        } else {
            sf = z_h2(gp + cb, gq + cb);
            if (HAS_MIN) bf = z_h2(gp + cb + 16, gq + cb + 16);
        }
        /* the tokens' run of this block (kern_act gq/gr/g6): codes, d and the zero-point terms,
         * which start the integer sums (the same integers as subtracting them after); s for the
         * min kinds is -(-8 s) / 8 */
        const size_t at = kern_act_at(a, g, tok); /* tok % 8 == 0: one run */
        const int8_t *ga = a->gq + at * 32;
        const int32_t *gr = a->gr + at * 2, *g6 = a->g6 + at * 2;
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const int8_t *aq = ga + t * 32;
            float da;
            memcpy(&da, &gr[2 * t], sizeof da);
            const __m512i z0 = I6       ? _mm512_set1_epi32(g6[2 * t])
                               : Z == 8 ? _mm512_set1_epi32(gr[2 * t + 1])
                               : Z      ? _mm512_slli_epi32(_mm512_set1_epi32(gr[2 * t + 1]), 4)
                                        : _mm512_setzero_si512(); /* -Z s */
            const __m512i z1 = I6 ? _mm512_set1_epi32(g6[2 * t + 1]) : _mm512_setzero_si512();
            __m512i is = _mm512_dpbusd_epi32(z0, w[0], z_bc(aq));
            __m512i i1 = _mm512_dpbusd_epi32(z1, w[4], z_bc(aq + 16));
#pragma GCC unroll 4
            for (int c = 1; c < 4; c++) {
                is = _mm512_dpbusd_epi32(is, w[c], z_bc(aq + 4 * c));
                i1 = _mm512_dpbusd_epi32(i1, w[4 + c], z_bc(aq + 16 + 4 * c));
            }
            if (I6) {
                const __m512 dav = _mm512_set1_ps(da);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(sf, dav), acc[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_mul_ps(s1f, dav), acc[t]);
                continue;
            }
            is = _mm512_add_epi32(is, i1);
            if (!HAS_MIN) {
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is),
                                         _mm512_mul_ps(sf, _mm512_set1_ps(da)), acc[t]);
            } else {
                __m512 tt = _mm512_mul_ps(_mm512_cvtepi32_ps(is), sf);
                tt = _mm512_fmadd_ps(bf, _mm512_set1_ps((float)(-gr[2 * t + 1] / 8)), tt);
                acc[t] = _mm512_fmadd_ps(tt, _mm512_set1_ps(da), acc[t]);
            }
        }
    }
    const __mmask16 k = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        _mm512_mask_storeu_ps(y + t * ldy, k, acc[t]);
}

#define Z_CASE(K, N)                                                                               \
    case (K)*16 + (N):                                                                             \
        z_tile2(m, a, tok, yt, ldy, tp, nr, K, N);                                                 \
        break;
#define Z_CASES(K)                                                                                 \
    Z_CASE(K, 1)                                                                                   \
    Z_CASE(K, 2) Z_CASE(K, 3) Z_CASE(K, 4) Z_CASE(K, 5) Z_CASE(K, 6) Z_CASE(K, 7) Z_CASE(K, 8)

void kern_tiles_avx512(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                       int64_t ldy, int64_t t0, int64_t t1) {
    int64_t tile = t0;
    /* one token: memory-bound, the 256-bit kernel streams as fast and splits finer; batches
     * from a token that does not start a run of 8 in kern_act gq (no caller has them) too */
    if (ntok >= 2 && tok0 % 8 == 0)
        for (; tile + 1 < t1; tile += 2) {
            const uint8_t *tp = m->data + (size_t)tile * m->tile_bytes;
            int64_t left = m->rows - tile * RP_ROWS;
            int nr = left < 2 * RP_ROWS ? (int)left : 2 * RP_ROWS;
            for (int tb = 0; tb < ntok; tb += 8) {
                int nt = ntok - tb < 8 ? ntok - tb : 8, tok = tok0 + tb;
                float *yt = y + (tile - t0) * RP_ROWS + tb * ldy;
                switch (m->kind * 16 + nt) {
                    Z_CASES(RP_I4)
                    Z_CASES(RP_I4M)
                    Z_CASES(RP_I8)
                    Z_CASES(RP_I8M)
                    Z_CASES(RP_I4K)
                    Z_CASES(RP_I6)
                    Z_CASES(RP_I5K)
                default:
                    break;
                }
            }
        }
    if (tile < t1)
        kern_tiles_avx512_ymm(m, a, tok0, ntok, y + (tile - t0) * RP_ROWS, ldy, tile, t1);
}
#undef Z_CASE
#undef Z_CASES
#pragma GCC pop_options

#else
void kern_tiles_avx512(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                       int64_t ldy, int64_t t0, int64_t t1) {
    kern_tiles_scalar(m, a, tok0, ntok, y, ldy, t0, t1);
}
#endif
