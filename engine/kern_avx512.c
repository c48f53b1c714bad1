/* kern_avx512.c: AVX-512 VL+VNNI instance (EVEX vpdpbusd on 256-bit vectors) of the tile kernel. */
#include "engine/kern.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <string.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")
#define KX_DP(acc, u, a) _mm256_dpbusd_epi32((acc), (u), (a))
#define KX_DPS(acc, w, a) KX_DP(acc, w, a) /* unused: KX_SIGNED_I8 is 0 */
#define KX_SIGNED_I8 0
#define KX(name) kx_avx512_##name
#define KX_ENTRY kern_tiles_avx512
#include "engine/kern_x86.h"
#pragma GCC pop_options

#else
void kern_tiles_avx512(const rp_matrix *m, const kern_act *a, int tok0, int ntok, float *y,
                       int64_t ldy, int64_t t0, int64_t t1) {
    kern_tiles_scalar(m, a, tok0, ntok, y, ldy, t0, t1);
}
#endif
