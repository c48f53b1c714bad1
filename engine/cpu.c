/* cpu.c: CPUID and XGETBV read once, LFM2_KERNEL applied, and the per-thread counts of what ran. */
#include "engine/cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define CPU_X86 1
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

_Thread_local uint64_t cpu_runs_[CPU_NSITES][CPU_NLEVELS];

static const char *const level_names[CPU_NLEVELS] = {"scalar", "base", "avx2", "avxvnni", "avx512"};
static const char *const site_names[CPU_NSITES] = {"tiles", "half", "rmsnorm", "silu",  "quant",
                                                   "amx",   "attn", "store",   "argmax"};

/* Settings read once (pthread_once): what the CPU supports and the level in use. */
static bool supported[CPU_NLEVELS];
static bool amx_ok;
static cpu_level best = CPU_SCALAR;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#ifdef CPU_X86
static uint64_t xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* CPUID feature bits, each with the register state the OS saves (XCR0): what GCC's
 * __builtin_cpu_supports checks, by hand (clang's does not know every name used here). */
static void detect_x86(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const bool osxsave = c & bit_OSXSAVE, fma = c & bit_FMA, f16c = c & bit_F16C;
    const uint64_t x = osxsave ? xcr0() : 0;
    const bool ymm = (x & 0x6) == 0x6, zmm = (x & 0xe6) == 0xe6;
    unsigned b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) b7 = b, c7 = c, d7 = d;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) a71 = a;
    const bool avx2 = ymm && (b7 & bit_AVX2) && fma && f16c;
    supported[CPU_AVX2] = avx2;
    supported[CPU_AVXVNNI] = avx2 && (a71 & (1u << 4));
    supported[CPU_AVX512] = avx2 && zmm && (b7 & bit_AVX512F) && (b7 & bit_AVX512VL) &&
                            (b7 & bit_AVX512BW) && (c7 & (1u << 11)); /* AVX512_VNNI */
    /* AMX-TILE, AMX-INT8, the tile state in XCR0 (bits 17-18), and Linux >= 5.16 granting this
     * process XTILEDATA (ARCH_REQ_XCOMP_PERM) */
    amx_ok = osxsave && (d7 & (1u << 24)) && (d7 & (1u << 25)) && (x & (3u << 17)) == (3u << 17) &&
             syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}
#endif

static cpu_level at_most(int lvl) {
    int l = lvl < CPU_SCALAR ? CPU_SCALAR : lvl >= CPU_NLEVELS ? CPU_NLEVELS - 1 : lvl;
    while (l > CPU_SCALAR && !supported[l])
        l--;
    return (cpu_level)l;
}

static void decide(void) {
    supported[CPU_SCALAR] = supported[CPU_BASE] = true;
#ifdef CPU_X86
    detect_x86();
#endif
    int cap = CPU_NLEVELS - 1;
    const char *env = getenv("LFM2_KERNEL");
    if (env && *env) {
        static const char *const aliases[CPU_NLEVELS] = {"scalar", "base", "avx2", "avx-vnni",
                                                         "avx512-vnni"}; /* kern_path_name's */
        for (int l = 0; l < CPU_NLEVELS; l++)
            if (!strcmp(env, level_names[l]) || !strcmp(env, aliases[l])) cap = l;
    }
    best = at_most(cap);
    amx_ok = amx_ok && best == CPU_AVX512;
}

cpu_level cpu_level_best(void) {
    pthread_once(&once, decide);
    return best;
}

cpu_level cpu_level_at_most(int lvl) {
    pthread_once(&once, decide);
    return at_most(lvl);
}

bool cpu_level_supported(int lvl) {
    pthread_once(&once, decide);
    return lvl >= 0 && lvl < CPU_NLEVELS && supported[lvl];
}

const char *cpu_level_name(int lvl) {
    return lvl >= 0 && lvl < CPU_NLEVELS ? level_names[lvl] : "unknown";
}

bool cpu_amx(void) {
    pthread_once(&once, decide);
    return amx_ok;
}

uint64_t cpu_runs(cpu_site site, int lvl) {
    return site >= 0 && site < CPU_NSITES && lvl >= 0 && lvl < CPU_NLEVELS ? cpu_runs_[site][lvl]
                                                                           : 0;
}

const char *cpu_site_name(cpu_site site) {
    return site >= 0 && site < CPU_NSITES ? site_names[site] : "unknown";
}
