/* cpu.h: the one CPU-feature dispatch point: which instruction sets every fast path may use. */
#ifndef LFM2_ENGINE_CPU_H
#define LFM2_ENGINE_CPU_H
#include <stdbool.h>
#include <stdint.h>

/* Levels of code, lowest first. The level in use (cpu_level) is the highest this CPU and OS
 * support, capped by env LFM2_KERNEL=scalar|base|avx2|avxvnni|avx512 (the highest supported level
 * at or below the one named; an unknown name is ignored), decided once at first use. The
 * kernels (engine/kern.c), the prefill GEMM and activation quantizer (engine/gemm.c), attention
 * (engine/attn.c) and argmax (engine/sample.c) all follow it, so LFM2_KERNEL=scalar runs the
 * plain C twin of every path. A path that has no code for a level runs its best one below. */
typedef enum cpu_level {
    CPU_SCALAR = 0,  /* plain C loops: the reference twins */
    CPU_BASE = 1,    /* also GCC vector code at the build's baseline (SSE2 on x86-64, NEON) */
    CPU_AVX2 = 2,    /* also AVX2, FMA, F16C */
    CPU_AVXVNNI = 3, /* also AVX-VNNI (VEX vpdpbusd) */
    CPU_AVX512 = 4,  /* AVX2 and AVX-512 F, VL, BW, VNNI (AVX-VNNI not implied) */
    CPU_NLEVELS
} cpu_level;

cpu_level cpu_level_best(void);    /* the level in use */
bool cpu_level_supported(int lvl); /* this CPU and OS run it (LFM2_KERNEL aside) */
/* The highest level this CPU and OS run at or below lvl (LFM2_KERNEL aside): what code asked for a
 * level it cannot have runs. */
cpu_level cpu_level_at_most(int lvl);
const char *cpu_level_name(int lvl); /* "scalar", "base", "avx2", "avxvnni", "avx512" */
/* AMX-TILE and AMX-INT8 present, the tile state enabled by the OS and granted to this process
 * (Linux arch_prctl), and the level in use is CPU_AVX512 (the AMX GEMM scales with AVX-512). */
bool cpu_amx(void);

/* What ran: each dispatching function counts its calls per level on the calling thread (a
 * thread-local increment, once per call, outside inner loops), so tests can assert which code a
 * forced or automatic choice took. */
typedef enum cpu_site {
    CPU_SITE_TILES,   /* kern's int8 x repacked tile kernels (kern_gemv_tiles, matmul, swiglu) */
    CPU_SITE_HALF,    /* f16/bf16 GEMV */
    CPU_SITE_RMSNORM, /* kern_rmsnorm */
    CPU_SITE_SILU,    /* kern_silu_mul */
    CPU_SITE_QUANT,   /* activation quantization (kern_quantize, gemm_quantize) */
    CPU_SITE_AMX,     /* the AMX GEMM (counted at CPU_AVX512) */
    CPU_SITE_ATTN,    /* attn_run */
    CPU_SITE_STORE,   /* attn_store */
    CPU_SITE_ARGMAX,  /* sample_argmax */
    CPU_NSITES
} cpu_site;
/* Calls per site and level, per thread: the one mutable state outside settings, kept so tests
 * can assert which code a dispatch ran (one increment per call, outside the inner loops; per
 * thread, so no two threads share a line). Use cpu_ran / cpu_runs. */
extern _Thread_local uint64_t cpu_runs_[CPU_NSITES][CPU_NLEVELS];
static inline void cpu_ran(cpu_site site, int lvl) {
    if ((unsigned)site < CPU_NSITES && (unsigned)lvl < CPU_NLEVELS) cpu_runs_[site][lvl]++;
}
uint64_t cpu_runs(cpu_site site, int lvl); /* calls counted on this thread so far */
const char *cpu_site_name(cpu_site site);

#endif
