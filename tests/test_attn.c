/* test_attn.c: engine/attn.c (f16 cache) vs a double reference; same bits on every ISA and
 * grouping. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/attn.h"
#include "engine/cpu.h"
#include "quant/quant.h"
#include "tests/check.h"
#include "tests/cpu_want.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

/* softmax(scale * q.K) @ V in double over the keys a query at pos sees (the stored halves) */
static void ref_attn(const attn_kv *kv, const float *q, int pos, double *out) {
    int lo = kv->n_swa > 0 && pos - kv->n_swa + 1 > 0 ? pos - kv->n_swa + 1 : 0;
    double *s = malloc((size_t)(pos + 1) * sizeof *s), mx = -INFINITY, sum = 0;
    for (int j = lo; j <= pos; j++) {
        double d = 0;
        for (int i = 0; i < kv->hd; i++)
            d += (double)q[i] * quant_f16_to_f32(kv->K[(size_t)j * kv->stride + i]);
        s[j] = d * kv->scale;
        if (s[j] > mx) mx = s[j];
    }
    for (int j = lo; j <= pos; j++)
        sum += s[j] = exp(s[j] - mx);
    for (int i = 0; i < kv->hd; i++) {
        double o = 0;
        for (int j = lo; j <= pos; j++)
            o += s[j] / sum * quant_f16_to_f32(kv->V[(size_t)j * kv->stride + i]);
        out[i] = o;
    }
    free(s);
}

static const attn_isa isas[] = {ATTN_ISA_SCALAR, ATTN_ISA_BASE, ATTN_ISA_AVX2, ATTN_ISA_AVX512,
                                ATTN_ISA_AUTO};
#define N_ISA (int)(sizeof isas / sizeof isas[0])

/* One cache shape: n_keys positions of a 2-head cache (the tested head is the second, so rows
 * are strided), hd, window n_swa. Queries at the awkward positions, grouped in every way. */
static void check_shape(int hd, int n_keys, int n_swa, double worst[2]) {
    const int stride = 2 * hd + 3; /* not a multiple of 16: unaligned rows */
    const size_t n = (size_t)n_keys * stride;
    float *Kf = malloc(n * sizeof(float)), *Vf = malloc(n * sizeof(float));
    uint16_t *K = malloc(n * sizeof *K), *V = malloc(n * sizeof *V);
    for (size_t i = 0; i < n; i++)
        Kf[i] = frand(), Vf[i] = frand();
    /* a few large keys so that softmax is peaked somewhere, as in trained models; a few tiny
     * values (f16 subnormals) and zeros of both signs */
    for (int j = 0; j < n_keys; j += 7)
        for (int i = 0; i < hd; i++)
            Kf[(size_t)j * stride + hd + i] *= 4;
    for (size_t i = 0; i < n; i += 5)
        Vf[i] *= 1e-5f, Kf[i + 1 < n ? i + 1 : i] *= 1e-6f;
    for (size_t i = 0; i < n; i += 37)
        Vf[i] = i % 2 ? -0.0f : 0.0f;
    attn_store(K, Kf, (int)n, ATTN_ISA_AUTO);
    attn_store(V, Vf, (int)n, ATTN_ISA_AUTO);
    for (size_t i = 0; i < n; i++) /* attn_store rounds as quant_f32_to_f16 */
        if (K[i] != quant_f32_to_f16(Kf[i]) || V[i] != quant_f32_to_f16(Vf[i])) {
            CHECK(!"attn_store rounds to nearest even");
            break;
        }
    attn_kv kv = {K + hd, V + hd, (size_t)stride, hd, n_swa, 1.0f / sqrtf((float)hd)};
    const int ctx[] = {1, 3, 17, 100, 513};
    enum { NQ = ATTN_MAX_Q };
    float *q = malloc((size_t)NQ * hd * sizeof(float));
    float *out = malloc((size_t)N_ISA * NQ * hd * sizeof(float));
    float *alone = malloc((size_t)NQ * hd * sizeof(float));
    double *ref = malloc((size_t)hd * sizeof(double));
    float *scratch = malloc(attn_scratch_floats(n_keys) * sizeof(float));
    for (size_t c = 0; c < 2 * sizeof ctx / sizeof ctx[0]; c++) {
        /* twice: softmax moderate, then so peaked that most weights underflow to 0 */
        const float qscale = c % 2 ? 60.0f : 2.0f;
        if (ctx[c / 2] > n_keys) continue;
        for (size_t i = 0; i < (size_t)NQ * hd; i++)
            q[i] = qscale * frand();
        /* queries: the last position of this context and the ones before it (a prefill tile),
         * some repeated with other q vectors (heads of one GQA group) */
        int pos[NQ];
        for (int k = 0; k < NQ; k++)
            pos[k] = ctx[c / 2] - 1 - (k / 2) * (k % 3);
        for (int k = 0; k < NQ; k++)
            if (pos[k] < 0) pos[k] = 0;
        for (int ia = 0; ia < N_ISA; ia++) {
            attn_query qs[NQ];
            for (int k = 0; k < NQ; k++)
                qs[k] = (attn_query){q + (size_t)k * hd, out + ((size_t)ia * NQ + k) * hd, pos[k]};
            memset(scratch, 0xff, attn_scratch_floats(n_keys) * sizeof(float)); /* NaN garbage */
            attn_run(&kv, qs, NQ, scratch, isas[ia]);
        }
        for (int k = 0; k < NQ; k++) {
            ref_attn(&kv, q + (size_t)k * hd, pos[k], ref);
            const float *o0 = out + (size_t)k * hd;
            for (int i = 0; i < hd; i++) {
                double e = fabs(o0[i] - ref[i]);
                if (!(e <= worst[c % 2])) worst[c % 2] = e; /* NaN sticks */
            }
            for (int ia = 1; ia < N_ISA; ia++)
                if (memcmp(o0, out + ((size_t)ia * NQ + k) * hd, (size_t)hd * sizeof(float))) {
                    fprintf(stderr, "hd %d ctx %d swa %d query %d: isa %d differs from scalar\n",
                            hd, ctx[c / 2], n_swa, k, (int)isas[ia]);
                    CHECK(!"same bits on every ISA");
                }
        }
        /* grouping: each query alone, and in groups of 2 .. 7 starting anywhere */
        for (int g = 1; g < NQ; g++)
            for (int k0 = (g - 1) % (NQ - g + 1); k0 + g <= NQ; k0 += g) {
                attn_query qs[NQ];
                for (int k = 0; k < g; k++)
                    qs[k] = (attn_query){q + (size_t)(k0 + k) * hd, alone + (size_t)k * hd,
                                         pos[k0 + k]};
                attn_run(&kv, qs, g, scratch, ATTN_ISA_AUTO);
                if (memcmp(alone, out + (size_t)k0 * hd, (size_t)g * hd * sizeof(float))) {
                    fprintf(stderr, "hd %d ctx %d swa %d: queries %d..%d in a group of %d differ\n",
                            hd, ctx[c / 2], n_swa, k0, k0 + g - 1, g);
                    CHECK(!"grouping changes no bits");
                }
            }
    }
    free(Kf), free(Vf), free(K), free(V), free(q), free(out), free(alone), free(ref), free(scratch);
}

/* The order of operations is the documented one: a plain scalar transcription of it in this
 * file gives the same bits as attn_run on a case where another order would differ. */
static void check_order(void) {
    enum { HD = 64, N = 40 };
    float K[N * HD], V[N * HD], q[HD], out[HD], scratch[ATTN_MAX_Q * (N + 16)];
    uint16_t Kh[N * HD], Vh[N * HD];
    for (int i = 0; i < N * HD; i++) { /* the floats the halves stand for */
        Kh[i] = quant_f32_to_f16(frand() * 3), Vh[i] = quant_f32_to_f16(frand());
        K[i] = quant_f16_to_f32(Kh[i]), V[i] = quant_f16_to_f32(Vh[i]);
    }
    for (int i = 0; i < HD; i++)
        q[i] = frand() * 3;
    attn_kv kv = {Kh, Vh, HD, HD, 0, 0.125f};
    attn_query qq = {q, out, N - 1};
    CHECK(attn_scratch_floats(N) <= sizeof scratch / sizeof scratch[0]);
    attn_run(&kv, &qq, 1, scratch, ATTN_ISA_AUTO);
    float s[N], mx = -INFINITY, expect[HD];
    int seq_differs = 0;
    for (int j = 0; j < N; j++) {
        float x[16], seq = 0;
        for (int l = 0; l < 16; l++)
            x[l] = q[l] * K[j * HD + l];
        for (int i = 16; i < HD; i++)
            x[i % 16] += q[i] * K[j * HD + i];
        for (int l = 0; l < 8; l++)
            x[l] += x[l + 8];
        for (int l = 0; l < 4; l++)
            x[l] += x[l + 4];
        for (int l = 0; l < 2; l++)
            x[l] += x[l + 2];
        for (int i = 0; i < HD; i++)
            seq += q[i] * K[j * HD + i];
        s[j] = (x[0] + x[1]) * 0.125f;
        seq_differs += seq * 0.125f != s[j];
        if (s[j] > mx) mx = s[j];
    }
    CHECK(seq_differs > 0); /* the check below can tell the orders apart */
    double l8[8] = {0};
    for (int j = 0; j < N; j++) {
        float x = s[j] - mx, m = x * 1.44269504088896341f + 12582912.0f, n = m - 12582912.0f;
        float r = (x - n * 0.693359375f) - n * -2.12194440e-4f, p = 1.9875691500e-4f;
        const float c[5] = {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                            5.0000001201e-1f};
        for (int k = 0; k < 5; k++)
            p = p * r + c[k];
        s[j] = x < -87.0f ? 0.0f : ((p * (r * r) + r) + 1.0f) * exp2f(n);
        l8[j % 8] += s[j];
    }
    double sum = ((l8[0] + l8[4]) + (l8[2] + l8[6])) + ((l8[1] + l8[5]) + (l8[3] + l8[7]));
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < HD; i++) {
        float o = 0;
        for (int j = 0; j < N; j++)
            o += (s[j] * inv) * V[j * HD + i];
        expect[i] = o;
    }
    CHECK(memcmp(expect, out, sizeof out) == 0);
}

/* Every half read back exactly by every path: one key (its weight is exactly 1) whose value
 * row holds all 65536 halves gives out[i] = 0 + v[i], which is v[i] but for -0 -> +0. */
static void check_convert(void) {
    enum { HD = 65536 };
    uint16_t *K = calloc(HD, sizeof *K), *V = malloc(HD * sizeof *V);
    float *q = calloc(HD, sizeof *q), *out = malloc((size_t)N_ISA * HD * sizeof *out);
    float scratch[ATTN_MAX_Q * 17];
    for (int i = 0; i < HD; i++)
        V[i] = (uint16_t)i;
    attn_kv kv = {K, V, HD, HD, 0, 1.0f};
    int bad = 0, nan_bits = 0;
    for (int ia = 0; ia < N_ISA; ia++) {
        attn_query qq = {q, out + (size_t)ia * HD, 0};
        attn_run(&kv, &qq, 1, scratch, isas[ia]);
        for (int i = 0; i < HD; i++) {
            const float got = out[(size_t)ia * HD + i], want = quant_f16_to_f32((uint16_t)i);
            if (isnan(want) ? !isnan(got) : got != want || signbit(got) != signbit(want + 0.0f))
                bad++;
        }
        if (memcmp(out, out + (size_t)ia * HD, HD * sizeof *out)) nan_bits++;
    }
    if (bad) fprintf(stderr, "f16 -> f32: %d halves read wrong\n", bad);
    CHECK(bad == 0);
    CHECK(nan_bits == 0); /* every path, nans included, gives the scalar twin's bits */
    free(K), free(V), free(q), free(out);
}

/* attn_store gives quant_f32_to_f16's bits on every ISA: random magnitudes from f32 denormals to
 * overflow, ties, the edges of the half range, infinities and nans with payloads; n not a
 * multiple of 16 (the tail) */
static void check_store(void) {
    enum { N = 4099 };
    float *x = malloc(N * sizeof *x);
    uint16_t *h = malloc(N * sizeof *h);
    const uint32_t special[] = {0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000,
                                0xffc00001, 0x7f800001, 0xff812345, 0x7fffffff, 0x477fe000,
                                0x477fefff, 0x477ff000, 0x38800000, 0x387fffff, 0x33000000,
                                0x33000001, 0x33800000, 0x00000001, 0x807fffff, 0x3f801000,
                                0x3f803000, 0x3f800fff, 0x35000000, 0x35400000, 0x35c00000};
    const int ns = (int)(sizeof special / sizeof special[0]);
    for (int i = 0; i < N; i++) {
        uint32_t b;
        if (i < ns) {
            b = special[i];
        } else { /* sign, exponent 90..160 (2^-37 .. 2^33), mantissa: random or a tie */
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            b = (uint32_t)(rng >> 32);
            b = (b & 0x807fffff) | (uint32_t)(90 + (rng >> 8) % 71) << 23;
            if (i % 3 == 0) b = (b & ~0x1fffu) | 0x1000; /* halfway between two halves */
        }
        memcpy(&x[i], &b, sizeof b);
    }
    for (int ia = 0; ia < N_ISA; ia++) {
        memset(h, 0xa5, N * sizeof *h);
        attn_store(h, x, N, isas[ia]);
        int bad = 0;
        for (int i = 0; i < N; i++)
            if (h[i] != quant_f32_to_f16(x[i])) {
                if (!bad++)
                    fprintf(stderr, "attn_store isa %d: %a -> %04x, want %04x\n", (int)isas[ia],
                            (double)x[i], h[i], quant_f32_to_f16(x[i]));
            }
        CHECK(bad == 0);
    }
    free(x), free(h);
}

/* Since *before (counts by level), site ran code of level lvl only; *before becomes now. */
static void check_ran(uint64_t *before, cpu_site site, int lvl, const char *what, int hd) {
    for (int l = 0; l < CPU_NLEVELS; l++) {
        const uint64_t now = cpu_runs(site, l), d = now - before[l];
        if (l == lvl ? d != 1 : d != 0) {
            fprintf(stderr, "%s hd %d: %s ran %llu times at %s; want once at %s\n", what, hd,
                    cpu_site_name(site), (unsigned long long)d, cpu_level_name(l),
                    cpu_level_name(lvl));
            CHECK(!"the chosen path runs, and only it");
        }
        before[l] = now;
    }
}

/* AUTO runs the code of engine/cpu.h's level (LFM2_KERNEL=scalar: the scalar twin), an explicit
 * isa its own or the widest below it the CPU has; head dims not a multiple of 16 the scalar
 * twin. attn_store's code: plain C below AVX2, F16C, AVX-512. */
static void check_dispatch(void) {
    const int lvl = cpu_want_level();
    CHECK_EQ_INT(cpu_level_best(), lvl);
    static const int asked[] = {CPU_SCALAR, CPU_BASE, CPU_AVX2, CPU_AVX512, -1};
    enum { HD = 64, N = 4 };
    static uint16_t K[N * HD], V[N * HD];
    static float q[HD], out[HD], scratch[ATTN_MAX_Q * (N + 16)];
    for (int i = 0; i < HD; i++)
        q[i] = frand();
    uint64_t runs[CPU_NLEVELS], stores[CPU_NLEVELS];
    for (int l = 0; l < CPU_NLEVELS; l++)
        runs[l] = cpu_runs(CPU_SITE_ATTN, l), stores[l] = cpu_runs(CPU_SITE_STORE, l);
    printf("attn: level in use %s; code run per isa (hd 64):", cpu_level_name(lvl));
    for (int ia = 0; ia < N_ISA; ia++) {
        const int l = asked[ia] < 0 ? lvl : cpu_want_capped(asked[ia]);
        const int run = l == CPU_AVXVNNI ? CPU_AVX2 : l;
        const int store = l >= CPU_AVX2 ? (l == CPU_AVX512 ? CPU_AVX512 : CPU_AVX2) : CPU_SCALAR;
        for (int hd = 16; hd <= HD; hd += 24) { /* 16, 40 (scalar), 64 */
            attn_kv kv = {K, V, HD, hd, 0, 0.125f};
            attn_query qq = {q, out, N - 1};
            attn_run(&kv, &qq, 1, scratch, isas[ia]);
            check_ran(runs, CPU_SITE_ATTN, hd % 16 ? CPU_SCALAR : run, "attn_run", hd);
        }
        attn_store(K, q, HD, isas[ia]);
        check_ran(stores, CPU_SITE_STORE, store, "attn_store", HD);
        printf(" %s->%s", ia == N_ISA - 1 ? "auto" : cpu_level_name(asked[ia]),
               cpu_level_name(run));
    }
    printf("\n");
}

int main(void) {
    check_dispatch();
    check_order();
    check_store();
    check_convert();
    /* 40 and 2: the scalar path; 528: too wide for the AVX2 path's block buffer, so its reads
     * convert the cache directly */
    const int hds[] = {64, 128, 32, 48, 528, 40, 2};
    const int swas[] = {0, 1, 5, 64};
    /* scores of the peaked case reach hundreds: their own float rounding (~1e-7 relative, glibc's
     * expf gives the same error) bounds the result's, not the exp or the sums */
    const double tol[2] = {2e-6, 2e-5};
    double all[2] = {0, 0};
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
        for (size_t w = 0; w < sizeof swas / sizeof swas[0]; w++) {
            double worst[2] = {0, 0};
            check_shape(hds[h], 513, swas[w], worst);
            check_shape(hds[h], 20, swas[w], worst);
            for (int k = 0; k < 2; k++) {
                if (!(worst[k] <= tol[k])) {
                    fprintf(stderr, "hd %d swa %d %s: max |attn - double reference| %.3g > %g\n",
                            hds[h], swas[w], k ? "peaked" : "moderate", worst[k], tol[k]);
                    CHECK(!"within tolerance of the double reference");
                }
                if (!(worst[k] <= all[k])) all[k] = worst[k];
            }
        }
    printf("attn: max |float - double reference| %.3g moderate, %.3g peaked softmax\n", all[0],
           all[1]);
    return check_done("test_attn");
}
