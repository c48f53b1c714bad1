/* attn.c: attention over an f16 cache in one order of operations: a scalar twin, a vector body per
 * ISA. */
#include "engine/attn.h"

#ifdef __clang__ /* clang contracts a * b + c into FMA by default; GCC does not under -std=c11 */
#pragma STDC FP_CONTRACT OFF
#endif

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "engine/cpu.h"
#include "engine/invariant.h"
#include "engine/vexp.h"
#include "engine/vtree.h"
#include "quant/quant.h"

/* GCC vector extension for the base and AVX-512 bodies: lane-wise ops lower to SSE or AVX-512 with
 * the same per-lane results (under an AVX2 target these 64-byte vectors go through the stack, so
 * AVX2 has its own __m256 body below); -std=c11 keeps fp-contract off, so no FMA changes a rounding
 * (tests/test_attn.c compares every path bit for bit). */
typedef float v16f __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

#define AT_INLINE static inline __attribute__((always_inline))
/* Rows ahead prefetched in the V pass and the K pass. A KV head's rows are contiguous in the
 * engine's cache ([head][pos][hd]), so this is a sequential stream; 64 rows (8 KiB at hd 64)
 * beat shorter and longer distances on a cold unit (docs/benchmarks.md, "What we tried"). */
#define ATTN_PREFETCH 64
#define ATTN_KPF 64

/* ---- storing: floats to halves, round to nearest even, nan -> sign | 0x7e00 (quant.h's) ---- */

#if defined(__x86_64__) && defined(__GNUC__)
/* 16 floats with nans made sign | 0x7fc00000 (which F16C rounds to sign | 0x7e00, the twin's) */
AT_INLINE void canon_nan(v16f *d, const float *src) {
    v16u x;
    memcpy(&x, src, sizeof x);
    const v16u nan = (v16u)((x & 0x7fffffffu) > 0x7f800000u);
    *d = (v16f)((x & ~nan) | (((x & 0x80000000u) | 0x7fc00000u) & nan));
}

__attribute__((target("avx512f"))) static int store_512(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v16f x;
        canon_nan(&x, src + i);
        __m512 v;
        memcpy(&v, &x, sizeof v);
        _mm256_storeu_si256((__m256i *)(void *)(dst + i),
                            _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    return i;
}

__attribute__((target("avx2,f16c"))) static int store_f16c(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v16f x;
        canon_nan(&x, src + i);
        __m256 a, b;
        memcpy(&a, &x, sizeof a);
        memcpy(&b, (const char *)&x + sizeof a, sizeof b);
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm_storeu_si128((__m128i *)(void *)(dst + i + 8),
                         _mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    return i;
}
#endif

/* The level an isa asks for: AUTO is engine/cpu.h's choice; an explicit one is capped by what
 * this CPU supports. */
static cpu_level level_for(attn_isa isa) {
    static const cpu_level asked[] = {[ATTN_ISA_SCALAR] = CPU_SCALAR,
                                      [ATTN_ISA_BASE] = CPU_BASE,
                                      [ATTN_ISA_AVX2] = CPU_AVX2,
                                      [ATTN_ISA_AVX512] = CPU_AVX512};
    if (isa == ATTN_ISA_AUTO || isa < 0 || isa > ATTN_ISA_AVX512) return cpu_level_best();
    return cpu_level_at_most(asked[isa]);
}

void attn_store(uint16_t *dst, const float *src, int n, attn_isa isa) {
    int i = 0;
    const cpu_level lvl = level_for(isa);
#if defined(__x86_64__) && defined(__GNUC__)
    if (lvl == CPU_AVX512) {
        cpu_ran(CPU_SITE_STORE, CPU_AVX512);
        i = store_512(dst, src, n);
    } else if (lvl >= CPU_AVX2) {
        cpu_ran(CPU_SITE_STORE, CPU_AVX2);
        i = store_f16c(dst, src, n);
    } else
#endif
        cpu_ran(CPU_SITE_STORE, CPU_SCALAR);
    for (; i < n; i++) /* the scalar twin, and the tail */
        dst[i] = quant_f32_to_f16(src[i]);
}

size_t attn_scratch_floats(int n_keys) {
    return (size_t)ATTN_MAX_Q * ((size_t)(n_keys > 0 ? n_keys : 1) + 16);
}

static void key_range(const attn_kv *kv, int pos, int *lo, int *hi) {
    *lo = kv->n_swa > 0 && pos - kv->n_swa + 1 > 0 ? pos - kv->n_swa + 1 : 0;
    *hi = pos;
}

/* The vector bodies' plan: each query's key range, their union [*ulo, *uhi], and a row of
 * scratch per query for its scores over the union (rows[qi][j - ulo], 16-aligned widths). */
static void union_rows(const attn_kv *kv, const attn_query *qs, int n_q, float *scratch, int *lo,
                       int *hi, int *ulo, int *uhi, float **rows) {
    *ulo = INT_MAX, *uhi = -1;
    for (int qi = 0; qi < n_q; qi++) {
        key_range(kv, qs[qi].pos, &lo[qi], &hi[qi]);
        if (lo[qi] < *ulo) *ulo = lo[qi];
        if (hi[qi] > *uhi) *uhi = hi[qi];
    }
    const size_t rs = ((size_t)(*uhi - *ulo + 1) + 15) & ~(size_t)15;
    for (int qi = 0; qi < n_q; qi++)
        rows[qi] = scratch + (size_t)qi * rs;
}

/* Zero weights for the union's keys outside [lo, hi] in a row over [ulo, uhi]. */
static void zero_outside(float *r, int lo, int hi, int ulo, int uhi) {
    for (int j = ulo; j < lo; j++)
        r[j - ulo] = 0;
    for (int j = hi + 1; j <= uhi; j++)
        r[j - ulo] = 0;
}

/* ---- the scalar twin: the definition of the order, any head dim ---- */

static float dot_scalar(const float *q, const uint16_t *kh, int hd) {
    float x[16] = {0};
    for (int i = 0; i < hd; i++) {
        const float k = quant_f16_to_f32(kh[i]);
        x[i & 15] = i < 16 ? q[i] * k : x[i & 15] + q[i] * k;
    }
    for (int l = 0; l < 8; l++)
        x[l] = x[l] + x[l + 8];
    for (int l = 0; l < 4; l++)
        x[l] = x[l] + x[l + 4];
    for (int l = 0; l < 2; l++)
        x[l] = x[l] + x[l + 2];
    return x[0] + x[1];
}

/* scores s[0..n) of one query (its own keys) into probabilities: w_j = exp(s_j - max); sum of the
 * w_j in double in 8 lanes (lane j mod 8, j order) reduced by halving; s_j = w_j * (1 / sum) */
static void softmax_scalar(float *s, int n) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++)
        if (s[j] > mx) mx = s[j];
    double l8[8] = {0};
    for (int j = 0; j < n; j++) {
        s[j] = vexp_scalar(s[j] - mx);
        l8[j & 7] += s[j];
    }
    for (int l = 0; l < 4; l++)
        l8[l] = l8[l] + l8[l + 4];
    for (int l = 0; l < 2; l++)
        l8[l] = l8[l] + l8[l + 2];
    float inv = (float)(1.0 / (l8[0] + l8[1]));
    for (int j = 0; j < n; j++)
        s[j] *= inv;
}

static void run_scalar(const attn_kv *kv, const attn_query *qs, int n_q, float *scratch) {
    const int hd = kv->hd;
    for (int qi = 0; qi < n_q; qi++) {
        int lo, hi;
        key_range(kv, qs[qi].pos, &lo, &hi);
        float *p = scratch; /* p[j - lo] */
        for (int j = lo; j <= hi; j++)
            p[j - lo] = dot_scalar(qs[qi].q, kv->K + (size_t)j * kv->stride, hd) * kv->scale;
        softmax_scalar(p, hi - lo + 1);
        for (int i = 0; i < hd; i++) {
            float o = 0;
            for (int j = lo; j <= hi; j++)
                o += p[j - lo] * quant_f16_to_f32(kv->V[(size_t)j * kv->stride + i]);
            qs[qi].out[i] = o;
        }
    }
}

/* ---- the vector body (head dim a multiple of 16) of the base and AVX-512 paths ---- */

AT_INLINE void ld(v16f *d, const float *p) {
    memcpy(d, p, sizeof *d);
}

/* How 16 halves become floats (all exact, so all give the same bits): integer steps or AVX-512F
 * (the AVX2 body below converts with F16C, 8 lanes at a time) */
enum { CVT_SOFT, CVT_512 };

#if defined(__x86_64__) && defined(__GNUC__)
/* not always_inline: run_avx512 (flatten, same target) inlines it, nothing else can */
__attribute__((target("avx512f"))) static inline void cvt_512(v16f *d, const uint16_t *p) {
    __m512 a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
    memcpy(d, &a, sizeof a);
}
#endif

/* quant_f16_to_f32 lane by lane: rebias the exponent; subnormals m * 2^-24 as
 * (1 + m/1024) * 2^-14 - 2^-14 (exact); inf and nan (made quiet) get the all-ones exponent.
 * Not inlined: only CPUs without F16C (before 2013) run it, and inlined it is ~700 KiB of code. */
__attribute__((noinline)) static void cvt_soft(v16f *d, const uint16_t *p) {
    v16h hh;
    memcpy(&hh, p, sizeof hh);
    const v16u h = __builtin_convertvector(hh, v16u);
    const v16u em = (h & 0x7fff) << 13, e = em & 0x0f800000;
    const v16u is_sub = (v16u)(e == 0), is_inf = (v16u)(e == 0x0f800000);
    v16u o = em + (112u << 23);
    const v16f sub = (v16f)(em + (113u << 23)) - 0x1p-14f;
    const v16u nan_q = (v16u)((em & 0x7fffff) != 0) & 0x400000u;
    o = (o & ~(is_sub | is_inf)) | ((v16u)sub & is_sub) | ((em | 0x7f800000u | nan_q) & is_inf);
    *d = (v16f)(o | (h & 0x8000) << 16);
}

AT_INLINE void ldh(v16f *d, const uint16_t *p, const int CV) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (CV == CVT_512) {
        cvt_512(d, p);
        return;
    }
#endif
    cvt_soft(d, p);
}

/* softmax_scalar, 16 scores at a time (rows need no alignment) */
AT_INLINE void softmax_vec(float *s, int n) {
    float mx = -INFINITY;
    int j = 0;
    if (n >= 16) {
        v16f m;
        ld(&m, s);
        for (j = 16; j + 16 <= n; j += 16) {
            v16f v;
            ld(&v, s + j);
            const v16u gt = (v16u)(v > m);
            m = (v16f)(((v16u)v & gt) | ((v16u)m & ~gt));
        }
        for (int l = 0; l < 16; l++)
            if (m[l] > mx) mx = m[l];
    }
    for (; j < n; j++)
        if (s[j] > mx) mx = s[j];
    v8d acc = {0};
    for (j = 0; j + 16 <= n; j += 16) {
        v16f v;
        ld(&v, s + j);
        v -= mx;
        vexp16(&v); /* vexp_scalar, lane by lane */
        memcpy(s + j, &v, sizeof v);
        acc += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
        acc += __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15),
                                       v8d);
    }
    if (j < n) { /* the tail padded with -inf: weights 0, which add +0 to lanes never -0 */
        v16f v = {0};
        v -= INFINITY;
        memcpy(&v, s + j, (size_t)(n - j) * sizeof(float));
        v -= mx;
        vexp16(&v); /* vexp_scalar, lane by lane */
        memcpy(s + j, &v, (size_t)(n - j) * sizeof(float));
        acc += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
        acc += __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15),
                                       v8d);
    }
    double l8[8];
    memcpy(l8, &acc, sizeof l8);
    for (int l = 0; l < 4; l++)
        l8[l] = l8[l] + l8[l + 4];
    for (int l = 0; l < 2; l++)
        l8[l] = l8[l] + l8[l + 2];
    const float inv = (float)(1.0 / (l8[0] + l8[1]));
    for (j = 0; j + 16 <= n; j += 16) {
        v16f v;
        ld(&v, s + j);
        v *= inv;
        memcpy(s + j, &v, sizeof v);
    }
    for (; j < n; j++)
        s[j] *= inv;
}

/* scaled dots of NQ (1 or 2) queries with keys j0..j0+nk-1 (nk <= 16) into d[q][0..nk);
 * nc = hd / 16. Each key's halves become floats once for both queries (conversions bound this
 * loop: a core converts one 16-lane vector a cycle), a pair of keys at a time into the first step
 * of the tree, so 2 x 8 partial sums stay in registers. */
AT_INLINE void qk_block(const float *const *q, const int NQ, int nc, const uint16_t *K,
                        size_t stride, int j0, int nk, float scale, int prefetch, float *const *d,
                        const int CV) {
    v16f t[2][8];
#pragma GCC unroll 8
    for (int m = 0; m < 8; m++) {
        v16f a[2][2];
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const int k = 2 * m + h;
#pragma GCC unroll 2
            for (int qi = 0; qi < NQ; qi++)
                a[qi][h] = (v16f){0};
            if (k >= nk) continue;
            const uint16_t *kr = K + (size_t)(j0 + k) * stride;
            if (prefetch) /* 32 halves a line */
#pragma GCC unroll 4
                for (int c = 0; c < nc; c += 2)
                    __builtin_prefetch(kr + ATTN_KPF * (size_t)stride + 16 * c);
            v16f ka, qa;
            ldh(&ka, kr, CV);
#pragma GCC unroll 2
            for (int qi = 0; qi < NQ; qi++) {
                ld(&qa, q[qi]);
                a[qi][h] = qa * ka;
            }
#pragma GCC unroll 4
            for (int c = 1; c < nc; c++) {
                ldh(&ka, kr + 16 * c, CV);
#pragma GCC unroll 2
                for (int qi = 0; qi < NQ; qi++) {
                    ld(&qa, q[qi] + 16 * c);
                    a[qi][h] += qa * ka;
                }
            }
        }
#pragma GCC unroll 2
        for (int qi = 0; qi < NQ; qi++)
            t[qi][m] = VTREE_PAIR(a[qi][0], a[qi][1], VTREE_ADD); /* dot_scalar's tree */
    }
#pragma GCC unroll 2
    for (int qi = 0; qi < NQ; qi++) {
        v16f o;
        VTREE_REST(v16f, t[qi], o, VTREE_ADD);
        o *= scale;
        memcpy(d[qi], &o, (size_t)nk * sizeof(float));
    }
}

/* out[q][i0 .. i0 + 16 * NV) for NQ queries: probabilities p[q][j - ulo], keys ulo..uhi */
AT_INLINE void pv_chunk(const uint16_t *V, size_t stride, int i0, const float *const *p,
                        float *const *out, const int NQ, const int NV, int ulo, int uhi,
                        const int CV) {
    v16f o[4][4];
#pragma GCC unroll 4
    for (int q = 0; q < NQ; q++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            o[q][v] = (v16f){0};
    for (int j = ulo; j <= uhi; j++) {
        const uint16_t *vr = V + (size_t)j * stride + i0;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v += 2) /* rows are strided: the next ones are misses otherwise */
            __builtin_prefetch(vr + (size_t)ATTN_PREFETCH * stride + 16 * v);
        v16f vv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            ldh(&vv[v], vr + 16 * v, CV);
#pragma GCC unroll 4
        for (int q = 0; q < NQ; q++) {
            const float w = p[q][j - ulo];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                o[q][v] += w * vv[v];
        }
    }
#pragma GCC unroll 4
    for (int q = 0; q < NQ; q++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            memcpy(out[q] + i0 + 16 * v, &o[q][v], sizeof o[q][v]);
}

/* NQ queries at a time (<= 4), NV vectors of 16 outputs per pass (<= 4): register blocking only,
 * the per-element order is the same for any choice */
AT_INLINE void pv_queries(const attn_kv *kv, const float *const *p, float *const *out, int nq,
                          const int NQ, const int NV, int ulo, int uhi, const int CV) {
    const int hd = kv->hd;
    int qi = 0;
    for (; qi + NQ <= nq; qi += NQ) {
        int i0 = 0;
        for (; i0 + 16 * NV <= hd; i0 += 16 * NV)
            pv_chunk(kv->V, kv->stride, i0, p + qi, out + qi, NQ, NV, ulo, uhi, CV);
        for (; i0 < hd; i0 += 16)
            pv_chunk(kv->V, kv->stride, i0, p + qi, out + qi, NQ, 1, ulo, uhi, CV);
    }
    if (NQ > 2 && qi + 2 <= nq) {
        int i0 = 0;
        for (; i0 + 16 * NV <= hd; i0 += 16 * NV)
            pv_chunk(kv->V, kv->stride, i0, p + qi, out + qi, 2, NV, ulo, uhi, CV);
        for (; i0 < hd; i0 += 16)
            pv_chunk(kv->V, kv->stride, i0, p + qi, out + qi, 2, 1, ulo, uhi, CV);
        qi += 2;
    }
    for (; qi < nq; qi++) {
        int i0 = 0;
        for (; i0 + 16 * NV <= hd; i0 += 16 * NV)
            pv_chunk(kv->V, kv->stride, i0, p + qi, out + qi, 1, NV, ulo, uhi, CV);
        for (; i0 < hd; i0 += 16)
            pv_chunk(kv->V, kv->stride, i0, p + qi, out + qi, 1, 1, ulo, uhi, CV);
    }
}

/* Scores of every query over the union of their key ranges (blocks of 16 keys, each block read
 * once from cache into L1 and reused by all queries), softmax over each query's own range with
 * zeros elsewhere, then the weighted V sum over the union: the zero weights add +-0 to sums that
 * are never -0, so a query's bits do not depend on its neighbours. */
AT_INLINE void run_vec(const attn_kv *kv, const attn_query *qs, int n_q, float *scratch,
                       const int NQ, const int NV, const int CV) {
    const int hd = kv->hd, nc = hd / 16;
    int lo[ATTN_MAX_Q], hi[ATTN_MAX_Q], ulo, uhi;
    float *rows[ATTN_MAX_Q]; /* rows[qi][j - ulo] */
    union_rows(kv, qs, n_q, scratch, lo, hi, &ulo, &uhi, rows);
    for (int j0 = ulo; j0 <= uhi; j0 += 16) {
        const int nk = uhi + 1 - j0 < 16 ? uhi + 1 - j0 : 16;
        /* the queries with keys in this block, in pairs; the first pair prefetches the next
         * block (the rest read this one from L1) */
        int sel[ATTN_MAX_Q], ns = 0;
        for (int qi = 0; qi < n_q; qi++)
            if (!(j0 > hi[qi] || j0 + nk - 1 < lo[qi])) sel[ns++] = qi;
        for (int i = 0; i < ns; i += 2) {
            const int a = sel[i], b = sel[i + 1 < ns ? i + 1 : i];
            const float *qq[2] = {qs[a].q, qs[b].q};
            float *dd[2] = {rows[a] + (j0 - ulo), rows[b] + (j0 - ulo)};
            const int pf = i == 0 && j0 + 16 + ATTN_KPF <= uhi + 1;
            if (i + 1 < ns) {
                if (nk == 16 && nc == 4)
                    qk_block(qq, 2, 4, kv->K, kv->stride, j0, 16, kv->scale, pf, dd, CV);
                else
                    qk_block(qq, 2, nc, kv->K, kv->stride, j0, nk, kv->scale, pf, dd, CV);
            } else {
                if (nk == 16 && nc == 4)
                    qk_block(qq, 1, 4, kv->K, kv->stride, j0, 16, kv->scale, pf, dd, CV);
                else
                    qk_block(qq, 1, nc, kv->K, kv->stride, j0, nk, kv->scale, pf, dd, CV);
            }
        }
    }
    const float *p[ATTN_MAX_Q];
    float *out[ATTN_MAX_Q];
    for (int qi = 0; qi < n_q; qi++) {
        float *r = rows[qi];
        softmax_vec(r + (lo[qi] - ulo), hi[qi] - lo[qi] + 1);
        zero_outside(r, lo[qi], hi[qi], ulo, uhi);
        p[qi] = r;
        out[qi] = qs[qi].out;
    }
    pv_queries(kv, p, out, n_q, NQ, NV, ulo, uhi, CV);
}

static void run_base(const attn_kv *kv, const attn_query *qs, int n_q, float *scratch) {
    run_vec(kv, qs, n_q, scratch, 2, 1, CVT_SOFT); /* 16 xmm: 2 x 4 accumulators + 4 of V */
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ATTN_X86 1
__attribute__((target("avx512f"), flatten)) static void
run_avx512(const attn_kv *kv, const attn_query *qs, int n_q, float *scratch) {
    run_vec(kv, qs, n_q, scratch, 4, 4, CVT_512); /* 32 zmm: 4 x 4 accumulators + 4 of V */
}

/* ---- the AVX2 body: a 16-lane value of the order above is two __m256 (lanes 0-7, 8-15) ---- */

/* Every helper of the AVX2 body is inlined into run_avx2 (same target, no "fma": a mul and an add
 * stay two roundings). Native __m256 values stay in registers, where 64-byte GCC vectors under an
 * AVX2 target went through the stack. */
#define A2 static inline __attribute__((target("avx2,f16c"), always_inline))
/* Floats of the buffer a block of K or V rows is converted into, once per call, for all queries */
#define A2_BUF 4096
#define A2_MAX_KB 64 /* keys in such a block at most */

/* 8 floats of a row at element i: from the converted block (BUF) or straight from the cache */
A2 __m256 a2_row(const float *f, const uint16_t *h, int i, const int BUF) {
    if (BUF) return _mm256_loadu_ps(f + i);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(h + i)));
}

/* Rows j0 .. j0 + nk - 1 of K or V as floats into buf[k * hd + i]; prefetches rows up to
 * ATTN_KPF ahead while they are below end (one past the last row the call reads). */
A2 void a2_convert(float *buf, const uint16_t *X, size_t stride, int hd, int j0, int nk, int end) {
    for (int k = 0; k < nk; k++) {
        const uint16_t *r = X + (size_t)(j0 + k) * stride;
        if (j0 + k + ATTN_KPF < end) /* 32 halves a line */
            for (int i = 0; i < hd; i += 32)
                __builtin_prefetch(r + ATTN_KPF * stride + i);
        for (int i = 0; i < hd; i += 16) {
            _mm256_storeu_ps(
                buf + (size_t)k * hd + i,
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(r + i))));
            _mm256_storeu_ps(
                buf + (size_t)k * hd + i + 8,
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(r + i + 8))));
        }
    }
}

/* The tree's step + 4 for two keys' 8-lane vectors x (lanes 0-3) and y (lanes 4-7 of the result) */
A2 __m256 a2_step4(__m256 x, __m256 y) {
    return _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
}

/* The step + 2 of two a2_step4 results (keys a|e and b|f): lanes a a b b | e e f f */
A2 __m256 a2_step2(__m256 x, __m256 y) {
    return _mm256_add_ps(_mm256_shuffle_ps(x, y, 0x44), _mm256_shuffle_ps(x, y, 0xee));
}

/* The last step (+ 1) of two a2_step2 results: keys a b c d | e f g h */
A2 __m256 a2_step1(__m256 x, __m256 y) {
    return _mm256_add_ps(_mm256_shuffle_ps(x, y, 0x88), _mm256_shuffle_ps(x, y, 0xdd));
}

/* scaled dots of NQ (1 or 2) queries with 8 keys (rows k < nk; the others give 0) into
 * d[q][0..8); key k's row: f + k * hd (BUF) or h + k * stride. Each key's lane sums are one lo
 * and one hi vector; lo + hi is the tree's first step, and the keys go through the rest in pairs
 * (k, k + 4) so that the results come out in key order. QREG (NQ 1, nc 4): the query's
 * vectors stay in registers, so the loop loads only the key. */
A2 void a2_qk8(const float *const *q, const int NQ, int nc, const float *f, const uint16_t *h,
               size_t stride, int hd, int nk, __m256 scale, float *const *d, const int BUF,
               const int QREG) {
    __m256 x2[2][2], w4[2][2], qr[16];
    if (QREG)
#pragma GCC unroll 16
        for (int i = 0; i < 2 * nc; i++)
            qr[i] = _mm256_loadu_ps(q[0] + 8 * i);
#pragma GCC unroll 4
    for (int pr = 0; pr < 4; pr++) {
        __m256 s[2][2];
#pragma GCC unroll 2
        for (int e = 0; e < 2; e++) {
            const int k = pr + 4 * e;
#pragma GCC unroll 2
            for (int qi = 0; qi < NQ; qi++)
                s[qi][e] = _mm256_setzero_ps();
            if (k >= nk) continue;
            const float *fr = BUF ? f + (size_t)k * hd : NULL;
            const uint16_t *hr = BUF ? NULL : h + (size_t)k * stride;
            __m256 lo[2], hi[2];
            __m256 k0 = a2_row(fr, hr, 0, BUF), k1 = a2_row(fr, hr, 8, BUF);
#pragma GCC unroll 2
            for (int qi = 0; qi < NQ; qi++) {
                lo[qi] = _mm256_mul_ps(QREG ? qr[0] : _mm256_loadu_ps(q[qi]), k0);
                hi[qi] = _mm256_mul_ps(QREG ? qr[1] : _mm256_loadu_ps(q[qi] + 8), k1);
            }
#pragma GCC unroll 8
            for (int c = 1; c < nc; c++) {
                k0 = a2_row(fr, hr, 16 * c, BUF), k1 = a2_row(fr, hr, 16 * c + 8, BUF);
#pragma GCC unroll 2
                for (int qi = 0; qi < NQ; qi++) {
                    lo[qi] =
                        _mm256_add_ps(lo[qi], _mm256_mul_ps(_mm256_loadu_ps(q[qi] + 16 * c), k0));
                    hi[qi] = _mm256_add_ps(hi[qi],
                                           _mm256_mul_ps(_mm256_loadu_ps(q[qi] + 16 * c + 8), k1));
                }
            }
#pragma GCC unroll 2
            for (int qi = 0; qi < NQ; qi++)
                s[qi][e] = _mm256_add_ps(lo[qi], hi[qi]);
        }
#pragma GCC unroll 2
        for (int qi = 0; qi < NQ; qi++) {
            const __m256 t = a2_step4(s[qi][0], s[qi][1]); /* keys pr | pr + 4 */
            if (pr % 2 == 0)
                w4[qi][pr / 2] = t;
            else
                x2[qi][pr / 2] = a2_step2(w4[qi][pr / 2], t);
        }
    }
#pragma GCC unroll 2
    for (int qi = 0; qi < NQ; qi++)
        _mm256_storeu_ps(d[qi], _mm256_mul_ps(a2_step1(x2[qi][0], x2[qi][1]), scale));
}

/* w in lanes j mod 8 of the double sums lo (lanes 0-3) and hi (4-7) */
A2 void a2_sum8(__m256d *lo, __m256d *hi, __m256 w) {
    *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(w)));
    *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)));
}

/* softmax_scalar, 8 scores at a time */
A2 void a2_softmax(float *s, int n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 v = _mm256_loadu_ps(s + j);
        m = _mm256_blendv_ps(m, v, _mm256_cmp_ps(v, m, _CMP_GT_OQ));
    }
    float ml[8], mx = -INFINITY;
    _mm256_storeu_ps(ml, m);
    for (int l = 0; l < 8; l++)
        if (ml[l] > mx) mx = ml[l];
    for (int i = j; i < n; i++)
        if (s[i] > mx) mx = s[i];
    const __m256 vm = _mm256_set1_ps(mx);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    for (j = 0; j + 8 <= n; j += 8) {
        const __m256 w = vexp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, w);
        a2_sum8(&lo, &hi, w);
    }
    if (j < n) { /* the tail padded with -inf: weights 0, which add +0 to lanes never -0 */
        float t[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                      -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        memcpy(t, s + j, (size_t)(n - j) * sizeof(float));
        const __m256 w = vexp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(t), vm));
        _mm256_storeu_ps(t, w);
        memcpy(s + j, t, (size_t)(n - j) * sizeof(float));
        a2_sum8(&lo, &hi, w);
    }
    double l8[4];
    _mm256_storeu_pd(l8, _mm256_add_pd(lo, hi));
    const float inv = (float)(1.0 / ((l8[0] + l8[2]) + (l8[1] + l8[3])));
    const __m256 vi = _mm256_set1_ps(inv);
    for (j = 0; j + 8 <= n; j += 8)
        _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), vi));
    for (; j < n; j++)
        s[j] *= inv;
}

/* out[q][i0 .. i0 + 8 * NV) of NQ queries += p[q][k] * row k, over the nk rows of a block (row k
 * at f + k * hd or h + k * stride), starting from 0 on the call's first block: register blocking
 * only, each element's sum runs in key order */
A2 void a2_pv(const float *f, const uint16_t *h, size_t stride, int hd, int nk, int i0,
              const float *const *p, float *const *out, const int NQ, const int NV, int first,
              const int BUF) {
    __m256 o[4][4];
#pragma GCC unroll 4
    for (int q = 0; q < NQ; q++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            o[q][v] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(out[q] + i0 + 8 * v);
    for (int k = 0; k < nk; k++) {
        const float *fr = BUF ? f + (size_t)k * hd : NULL;
        const uint16_t *hr = BUF ? NULL : h + (size_t)k * stride;
        __m256 vv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            vv[v] = a2_row(fr, hr, i0 + 8 * v, BUF);
#pragma GCC unroll 4
        for (int q = 0; q < NQ; q++) {
            const __m256 w = _mm256_broadcast_ss(p[q] + k);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                o[q][v] = _mm256_add_ps(o[q][v], _mm256_mul_ps(w, vv[v]));
        }
    }
#pragma GCC unroll 4
    for (int q = 0; q < NQ; q++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            _mm256_storeu_ps(out[q] + i0 + 8 * v, o[q][v]);
}

/* a2_pv over the whole head dim for NQ queries: 4 x 2 or 2 x 4 accumulators (+ V and weights:
 * 14 of the 16 ymm) */
A2 void a2_pv_all(const float *f, const uint16_t *h, size_t stride, int hd, int nk,
                  const float *const *p, float *const *out, const int NQ, int first,
                  const int BUF) {
    int i0 = 0;
    if (NQ <= 2)
        for (; i0 + 32 <= hd; i0 += 32)
            a2_pv(f, h, stride, hd, nk, i0, p, out, NQ, 4, first, BUF);
    for (; i0 < hd; i0 += 16)
        a2_pv(f, h, stride, hd, nk, i0, p, out, NQ, 2, first, BUF);
}

/* run_vec's plan on AVX2: scores of every query over the union of their key ranges, softmax over
 * each query's own range with zeros elsewhere, the weighted V sum over the union (the zero
 * weights add +-0 to sums that are never -0). BUF: each block of K, then V, rows becomes floats
 * once in buf and every query reads it from L1; else each read converts the cache. */
A2 void a2_run(const attn_kv *kv, const attn_query *qs, int n_q, float *scratch, float *buf,
               const int BUF) {
    const int hd = kv->hd, nc = hd / 16;
    const size_t st = kv->stride;
    int lo[ATTN_MAX_Q], hi[ATTN_MAX_Q], ulo, uhi;
    float *rows[ATTN_MAX_Q]; /* rows[qi][j - ulo], 8 scores stored at a time */
    union_rows(kv, qs, n_q, scratch, lo, hi, &ulo, &uhi, rows);
    int kb = BUF ? (A2_BUF / hd) & ~7 : A2_MAX_KB;
    if (kb > A2_MAX_KB) kb = A2_MAX_KB;
    const __m256 scale = _mm256_set1_ps(kv->scale);
    for (int j0 = ulo; j0 <= uhi; j0 += kb) {
        const int nb = uhi + 1 - j0 < kb ? uhi + 1 - j0 : kb;
        if (BUF) a2_convert(buf, kv->K, st, hd, j0, nb, uhi + 1);
        for (int b = 0; b < nb; b += 8) {
            const int jb = j0 + b, nk = nb - b < 8 ? nb - b : 8;
            const float *f = BUF ? buf + (size_t)b * hd : buf;
            const uint16_t *h = kv->K + (size_t)jb * st;
            if (!BUF && jb + 8 + ATTN_KPF <= uhi + 1) /* the next rows: misses otherwise */
                for (int k = 0; k < 8; k++)
                    for (int i = 0; i < hd; i += 32)
                        __builtin_prefetch(h + (size_t)(k + ATTN_KPF) * st + i);
            int sel[ATTN_MAX_Q], ns = 0; /* the queries with keys in these 8 */
            for (int qi = 0; qi < n_q; qi++)
                if (!(jb > hi[qi] || jb + nk - 1 < lo[qi])) sel[ns++] = qi;
            if (BUF && nc == 4) /* one query at a time, its 8 vectors in registers */
                for (int i = 0; i < ns; i++) {
                    const float *qq[1] = {qs[sel[i]].q};
                    float *dd[1] = {rows[sel[i]] + (jb - ulo)};
                    a2_qk8(qq, 1, 4, f, h, st, hd, nk, scale, dd, BUF, 1);
                }
            else /* in pairs, each row read once for both */
                for (int i = 0; i < ns; i += 2) {
                    const int a = sel[i], c = sel[i + 1 < ns ? i + 1 : i];
                    const float *qq[2] = {qs[a].q, qs[c].q};
                    float *dd[2] = {rows[a] + (jb - ulo), rows[c] + (jb - ulo)};
                    if (i + 1 < ns)
                        a2_qk8(qq, 2, nc, f, h, st, hd, nk, scale, dd, BUF, 0);
                    else
                        a2_qk8(qq, 1, nc, f, h, st, hd, nk, scale, dd, BUF, 0);
                }
        }
    }
    const float *p[ATTN_MAX_Q];
    float *out[ATTN_MAX_Q];
    for (int qi = 0; qi < n_q; qi++) {
        float *r = rows[qi];
        a2_softmax(r + (lo[qi] - ulo), hi[qi] - lo[qi] + 1);
        zero_outside(r, lo[qi], hi[qi], ulo, uhi);
        out[qi] = qs[qi].out;
    }
    for (int j0 = ulo; j0 <= uhi; j0 += kb) {
        const int nb = uhi + 1 - j0 < kb ? uhi + 1 - j0 : kb;
        const uint16_t *h = kv->V + (size_t)j0 * st;
        if (BUF)
            a2_convert(buf, kv->V, st, hd, j0, nb, uhi + 1);
        else if (j0 + kb + ATTN_PREFETCH <= uhi + 1)
            for (int k = 0; k < nb; k++)
                for (int i = 0; i < hd; i += 32)
                    __builtin_prefetch(h + (size_t)(k + ATTN_PREFETCH) * st + i);
        for (int qi = 0; qi < n_q; qi++)
            p[qi] = rows[qi] + (j0 - ulo);
        int qi = 0;
        for (; qi + 4 <= n_q; qi += 4)
            a2_pv_all(buf, h, st, hd, nb, p + qi, out + qi, 4, j0 == ulo, BUF);
        if (n_q - qi == 3)
            a2_pv_all(buf, h, st, hd, nb, p + qi, out + qi, 3, j0 == ulo, BUF);
        else if (n_q - qi == 2)
            a2_pv_all(buf, h, st, hd, nb, p + qi, out + qi, 2, j0 == ulo, BUF);
        else if (n_q - qi == 1)
            a2_pv_all(buf, h, st, hd, nb, p + qi, out + qi, 1, j0 == ulo, BUF);
    }
}

__attribute__((target("avx2,f16c"))) static void run_avx2(const attn_kv *kv, const attn_query *qs,
                                                          int n_q, float *scratch) {
    float buf[A2_BUF] __attribute__((aligned(32)));
    /* the buffer pays from 3 queries on (decode of 2 heads a KV head runs 6-12% faster without);
     * it holds 8 rows of head dims up to 512 */
    if (kv->hd * 8 <= A2_BUF && n_q > 2)
        a2_run(kv, qs, n_q, scratch, buf, 1);
    else
        a2_run(kv, qs, n_q, scratch, buf, 0);
}
#else
#define ATTN_X86 0
#endif

void attn_run(const attn_kv *kv, const attn_query *qs, int n_q, float *scratch, attn_isa isa) {
    INVARIANT(n_q >= 1 && n_q <= ATTN_MAX_Q && kv->hd >= 1);
    const cpu_level lvl = level_for(isa);
    if (lvl == CPU_SCALAR || kv->hd % 16) {
        cpu_ran(CPU_SITE_ATTN, CPU_SCALAR);
        run_scalar(kv, qs, n_q, scratch);
        return;
    }
#if ATTN_X86
    if (lvl == CPU_AVX512) {
        cpu_ran(CPU_SITE_ATTN, CPU_AVX512);
        run_avx512(kv, qs, n_q, scratch);
        return;
    }
    if (lvl >= CPU_AVX2) {
        cpu_ran(CPU_SITE_ATTN, CPU_AVX2);
        run_avx2(kv, qs, n_q, scratch);
        return;
    }
#endif
    cpu_ran(CPU_SITE_ATTN, CPU_BASE);
    run_base(kv, qs, n_q, scratch);
}
