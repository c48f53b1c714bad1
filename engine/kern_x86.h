/* kern_x86.h: PRIVATE to engine/kern_avx2.c and engine/kern_avx512.c: the 256-bit tile kernel. */
/* No include guard: each includer instantiates it once per ISA, after setting
 *   KX(name)      name mangling for the instance's static functions
 *   KX_ENTRY      the exported entry point (a kern_tiles_fn)
 *   KX_DP(acc,u,a)  acc(int32 x8) += 4-byte dot of u (u8) and a (s8), exact
 *   KX_SIGNED_I8  1: RP_I8 codes are turned into s8 and dotted with KX_DPS (no zero point)
 *   KX_NTMAX      tokens per pass over a tile (4 with 16 vector registers, 8 with 32)
 * inside a `#pragma GCC target` region. One lane = one row of the 8-row tile; the float steps
 * mirror kern_tiles_scalar operation for operation, so every path gives bit-identical results. */

/* Software prefetch distance (bytes, rounded down to whole groups) for the weight stream. The
 * stream is sequential, but the hardware prefetchers alone do not keep one thread's GEMV fed
 * from memory; 8 KiB ahead is the best distance measured on Intel and AMD machines
 * (docs/benchmarks.md, "What we tried"). */
#ifndef KX_PFD
#define KX_PFD 8192
#endif
/* The distance when each tile gets one pass (at most a pass's tokens: decode): the stream is
 * consumed fastest then, so lines must be asked for earlier; prefill's revisited tiles gain
 * nothing from it (docs/benchmarks.md, "What we tried"). The AVX-512 kernel's Z_PFD for small
 * activations is the same distance. */
#ifndef KX_PFD_GEMV
#define KX_PFD_GEMV 16384
#endif

/* The prefetch distance for a call over ntok tokens, npass tokens a pass over each tile. */
static inline size_t KX(pf_bytes)(int ntok, int npass) {
    return ntok <= npass ? KX_PFD_GEMV : KX_PFD;
}

/* Prefetches the n 64-byte lines from p into L1 (a group's lines at the prefetch distance). */
static inline __attribute__((always_inline)) void KX(pf_lines)(const uint8_t *p, const int n) {
#pragma GCC unroll 8
    for (int i = 0; i < n; i++)
        _mm_prefetch((const char *)p + 64 * i, _MM_HINT_T0);
}

static inline __m256i KX(bc)(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* NT tokens (1..KX_NTMAX) starting at tok through one tile at tp with nr valid rows. */
static inline __attribute__((always_inline)) void KX(tile)(const rp_matrix *m, const kern_act *a,
                                                           int tok, float *y, int64_t ldy,
                                                           const uint8_t *tp, int nr,
                                                           size_t pfb, const int KIND,
                                                           const int NT) {
    const int I6 = KIND == RP_I6, I5 = KIND == RP_I5K;
    const int I4 = KIND == RP_I4 || KIND == RP_I4M || KIND == RP_I4K || I6 || I5;
    const int KC = KIND == RP_I4K || I5; /* scale/min codes with superblock factors */
    const int HAS_MIN = KIND == RP_I4M || KIND == RP_I8M || KC;
    const int SIGNED = KX_SIGNED_I8 && KIND == RP_I8;
    const int Z = KIND == RP_I4 ? 8 : KIND == RP_I8 ? 128 : 0; /* (I6: 32 per half, below) */
    const size_t cb = I5 ? 160 : I4 ? 128 : 256, gb = m->group_bytes;
    const size_t pfd = (pfb / gb) * gb; /* prefetch distance: whole groups */
    const int64_t cols = m->cols, ng = m->n_groups;
    const __m256i m4 = _mm256_set1_epi8(15), x80 = _mm256_set1_epi8((char)0x80);
    __m256 acc[KX_NTMAX];
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        const uint8_t *gp = tp + (size_t)g * gb;
        KX(pf_lines)(gp + pfd, I4 ? 3 : 5);
        __m256i w[8];
        if (I4) {
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(gp + 32 * c));
                w[c] = _mm256_and_si256(v, m4);
                w[4 + c] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            if (I5) { /* bit c / 4+c of the plane bytes -> bit 4 of lo / hi chunk c */
                const __m256i m10 = _mm256_set1_epi8(0x10);
                const __m256i pl = _mm256_loadu_si256((const __m256i *)(gp + 128));
                w[0] = _mm256_or_si256(w[0], _mm256_and_si256(_mm256_slli_epi16(pl, 4), m10));
                w[1] = _mm256_or_si256(w[1], _mm256_and_si256(_mm256_slli_epi16(pl, 3), m10));
                w[2] = _mm256_or_si256(w[2], _mm256_and_si256(_mm256_slli_epi16(pl, 2), m10));
                w[3] = _mm256_or_si256(w[3], _mm256_and_si256(_mm256_slli_epi16(pl, 1), m10));
                w[4] = _mm256_or_si256(w[4], _mm256_and_si256(pl, m10));
                w[5] = _mm256_or_si256(w[5], _mm256_and_si256(_mm256_srli_epi16(pl, 1), m10));
                w[6] = _mm256_or_si256(w[6], _mm256_and_si256(_mm256_srli_epi16(pl, 2), m10));
                w[7] = _mm256_or_si256(w[7], _mm256_and_si256(_mm256_srli_epi16(pl, 3), m10));
            }
            if (I6) { /* bits 2c..2c+1 of the plane bytes -> bits 4..5 of chunk c */
                const __m256i m30 = _mm256_set1_epi8(0x30);
                const __m256i p0 = _mm256_loadu_si256((const __m256i *)(gp + 128));
                const __m256i p1 = _mm256_loadu_si256((const __m256i *)(gp + 160));
                w[0] = _mm256_or_si256(w[0], _mm256_and_si256(_mm256_slli_epi16(p0, 4), m30));
                w[1] = _mm256_or_si256(w[1], _mm256_and_si256(_mm256_slli_epi16(p0, 2), m30));
                w[2] = _mm256_or_si256(w[2], _mm256_and_si256(p0, m30));
                w[3] = _mm256_or_si256(w[3], _mm256_and_si256(_mm256_srli_epi16(p0, 2), m30));
                w[4] = _mm256_or_si256(w[4], _mm256_and_si256(_mm256_slli_epi16(p1, 4), m30));
                w[5] = _mm256_or_si256(w[5], _mm256_and_si256(_mm256_slli_epi16(p1, 2), m30));
                w[6] = _mm256_or_si256(w[6], _mm256_and_si256(p1, m30));
                w[7] = _mm256_or_si256(w[7], _mm256_and_si256(_mm256_srli_epi16(p1, 2), m30));
            }
        } else {
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                w[c] = _mm256_loadu_si256((const __m256i *)(gp + 32 * c));
                if (SIGNED) w[c] = _mm256_xor_si256(w[c], x80);
            }
        }
        __m256 sf, bf = _mm256_setzero_ps(), s1f = _mm256_setzero_ps();
        if (I6) { /* s = d * sc per half: exact */
            const uint8_t *h = tp + (size_t)ng * gb + (size_t)(g >> 3) * 16;
            __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
            sf = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                       _mm_loadl_epi64((const __m128i *)(gp + 192)))));
            s1f = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                        _mm_loadl_epi64((const __m128i *)(gp + 200)))));
        } else if (KC) { /* s = d * sc, b = -(dmin * mc): exact */
            const uint8_t *h = tp + (size_t)ng * gb + (size_t)(g >> 3) * 32;
            __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
            __m256 mv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 16)));
            sf = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                                       _mm_loadl_epi64((const __m128i *)(gp + cb)))));
            bf = _mm256_sub_ps(
                _mm256_setzero_ps(),
                _mm256_mul_ps(mv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                                      _mm_loadl_epi64((const __m128i *)(gp + cb + 8))))));
        } else {
            sf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gp + cb)));
            if (HAS_MIN) bf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gp + cb + 16)));
        }
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const int8_t *aq = a->q + (size_t)(tok + t) * cols + g * 32;
            const int32_t S = a->s[(size_t)(tok + t) * ng + g];
            const float da = a->d[(size_t)(tok + t) * ng + g];
            /* two independent vpdpbusd chains of 4 (one of 8 is latency-bound in batches) */
            __m256i is, i1;
            if (I4) {
                is = KX_DP(_mm256_setzero_si256(), w[0], KX(bc)(aq));
                i1 = KX_DP(_mm256_setzero_si256(), w[4], KX(bc)(aq + 16));
#pragma GCC unroll 4
                for (int c = 1; c < 4; c++) {
                    is = KX_DP(is, w[c], KX(bc)(aq + 4 * c));
                    i1 = KX_DP(i1, w[4 + c], KX(bc)(aq + 16 + 4 * c));
                }
            } else if (SIGNED) {
                is = KX_DPS(_mm256_setzero_si256(), w[0], KX(bc)(aq));
                i1 = KX_DPS(_mm256_setzero_si256(), w[4], KX(bc)(aq + 16));
#pragma GCC unroll 4
                for (int c = 1; c < 4; c++) {
                    is = KX_DPS(is, w[c], KX(bc)(aq + 4 * c));
                    i1 = KX_DPS(i1, w[4 + c], KX(bc)(aq + 16 + 4 * c));
                }
            } else {
                is = KX_DP(_mm256_setzero_si256(), w[0], KX(bc)(aq));
                i1 = KX_DP(_mm256_setzero_si256(), w[4], KX(bc)(aq + 16));
#pragma GCC unroll 4
                for (int c = 1; c < 4; c++) {
                    is = KX_DP(is, w[c], KX(bc)(aq + 4 * c));
                    i1 = KX_DP(i1, w[4 + c], KX(bc)(aq + 16 + 4 * c));
                }
            }
            if (I6) {
                const int32_t *s16 = a->s16 + ((size_t)(tok + t) * ng + g) * 2;
                const __m256 dav = _mm256_set1_ps(da);
                is = _mm256_sub_epi32(is, _mm256_set1_epi32(32 * s16[0]));
                i1 = _mm256_sub_epi32(i1, _mm256_set1_epi32(32 * s16[1]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(sf, dav), acc[t]);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(s1f, dav), acc[t]);
                continue;
            }
            is = _mm256_add_epi32(is, i1);
            if (!HAS_MIN) {
                if (Z && !SIGNED) is = _mm256_sub_epi32(is, _mm256_set1_epi32(Z * S));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is),
                                         _mm256_mul_ps(sf, _mm256_set1_ps(da)), acc[t]);
            } else {
                __m256 tt = _mm256_mul_ps(_mm256_cvtepi32_ps(is), sf);
                tt = _mm256_fmadd_ps(bf, _mm256_set1_ps((float)S), tt);
                acc[t] = _mm256_fmadd_ps(tt, _mm256_set1_ps(da), acc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) {
        if (nr == 8) {
            _mm256_storeu_ps(y + t * ldy, acc[t]);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, acc[t]);
            memcpy(y + t * ldy, tmp, (size_t)nr * sizeof(float));
        }
    }
}

#define KX_CASE(K, N)                                                                              \
    case (K)*16 + (N):                                                                             \
        KX(tile)(m, a, tok, yt, ldy, tp, nr, pfb, K, (N) < KX_NTMAX ? (N) : KX_NTMAX);             \
        break;
#define KX_CASES(K)                                                                                \
    KX_CASE(K, 1)                                                                                  \
    KX_CASE(K, 2)                                                                                  \
    KX_CASE(K, 3) KX_CASE(K, 4) KX_CASE(K, 5) KX_CASE(K, 6) KX_CASE(K, 7) KX_CASE(K, 8)

#ifndef KX_LINKAGE
#define KX_LINKAGE
#endif
KX_LINKAGE void KX_ENTRY(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y, int64_t ldy,
              int64_t t0, int64_t t1) {
    const size_t pfb = KX(pf_bytes)(ntok, KX_NTMAX);
    for (int64_t tile = t0; tile < t1; tile++) {
        const uint8_t *tp = m->data + (size_t)tile * m->tile_bytes;
        int64_t left = m->rows - tile * RP_ROWS;
        int nr = left < RP_ROWS ? (int)left : RP_ROWS;
        for (int tb = 0; tb < ntok; tb += KX_NTMAX) {
            int nt = ntok - tb < KX_NTMAX ? ntok - tb : KX_NTMAX, tok = tok0 + tb;
            float *yt = y + (tile - t0) * RP_ROWS + tb * ldy;
            switch (m->kind * 16 + nt) {
                KX_CASES(RP_I4)
                KX_CASES(RP_I4M)
                KX_CASES(RP_I8)
                KX_CASES(RP_I8M)
                KX_CASES(RP_I4K)
                KX_CASES(RP_I6)
                KX_CASES(RP_I5K)
            default:
                break;
            }
        }
    }
}
#undef KX_CASE
#undef KX_CASES
#undef KX_NTMAX
#undef KX_LINKAGE
