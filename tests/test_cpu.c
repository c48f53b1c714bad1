/* test_cpu.c: engine/cpu.h's level follows LFM2_KERNEL (capped by the CPU), and the fast paths
 * outside kern and attn (argmax, the activation quantizer) run that level's code. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/cpu.h"
#include "engine/gemm.h"
#include "engine/sample.h"
#include "tests/check.h"
#include "tests/cpu_want.h"

/* One level per name, in order: the child picks the best supported at or below it. */
static void check_env(void) {
    static const char *const names[] = {"scalar", "base", "avx2", "avxvnni", "avx512", "bogus"};
    for (int i = 0; i < 6; i++) {
        char out[64];
        cpu_want_child(names[i], "--print-level", out, sizeof out);
        CHECK(out[0] != 0);
        int l = i < CPU_NLEVELS ? i : CPU_NLEVELS - 1; /* an unknown name is ignored */
        while (l > CPU_SCALAR && !cpu_level_supported(l))
            l--;
        CHECK_STR(out, cpu_level_name(l));
    }
    CHECK(cpu_level_supported(CPU_SCALAR) && cpu_level_supported(CPU_BASE));
}

/* Since before, site ran code of level lvl and of no other level. */
static void check_ran(const uint64_t *before, cpu_site site, int lvl) {
    for (int l = 0; l < CPU_NLEVELS; l++) {
        const uint64_t d = cpu_runs(site, l) - before[l];
        if (l == lvl ? d == 0 : d != 0) {
            fprintf(stderr, "%s ran %llu times at %s; want only %s\n", cpu_site_name(site),
                    (unsigned long long)d, cpu_level_name(l), cpu_level_name(lvl));
            CHECK(!"the chosen path runs, and only it");
        }
    }
}

static void check_paths(void) {
    const int lvl = cpu_level_best();
    uint64_t b[CPU_NLEVELS];
    static float x[1000];
    for (int i = 0; i < 1000; i++)
        x[i] = (float)((i * 7919) % 1009) - 500.0f;
    for (int l = 0; l < CPU_NLEVELS; l++)
        b[l] = cpu_runs(CPU_SITE_ARGMAX, l);
    CHECK_EQ_INT(sample_argmax(x, 1000), 765); /* 7919 * 765 = 1008 mod 1009: the one maximum */
    const int argmax_lvl = lvl == CPU_SCALAR || lvl == CPU_AVX512 ? lvl : CPU_BASE;
    check_ran(b, CPU_SITE_ARGMAX, argmax_lvl);
    kern_act a;
    CHECK_EQ_INT(kern_act_init(&a, 1024, 4), 0);
    for (int l = 0; l < CPU_NLEVELS; l++)
        b[l] = cpu_runs(CPU_SITE_QUANT, l);
    gemm_quantize(NULL, &a, x, 960, 0, 1);
    const int quant_lvl = lvl == CPU_AVX512 ? CPU_AVX512 : lvl >= CPU_AVX2 ? CPU_AVX2 : CPU_SCALAR;
    check_ran(b, CPU_SITE_QUANT, quant_lvl);
    kern_act_release(&a);
    CHECK(!cpu_amx() || lvl == CPU_AVX512); /* the AMX GEMM only at the AVX-512 level */
    printf("level %s (LFM2_KERNEL=%s): argmax ran %s code, the quantizer %s\n", cpu_level_name(lvl),
           getenv("LFM2_KERNEL") ? getenv("LFM2_KERNEL") : "", cpu_level_name(argmax_lvl),
           cpu_level_name(quant_lvl));
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--print-level")) {
        printf("%s\n", cpu_level_name(cpu_level_best()));
        return 0;
    }
    check_env();
    check_paths();
    return check_done("test_cpu");
}
