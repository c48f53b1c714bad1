/* cpu_want.h: the dispatch level a test expects, worked out from engine/cpu.h's documented rule. */
#ifndef LFM2_TESTS_CPU_WANT_H
#define LFM2_TESTS_CPU_WANT_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "engine/cpu.h"

/* The supported level at or below l. */
static inline int cpu_want_capped(int l) {
    while (l > CPU_SCALAR && !cpu_level_supported(l))
        l--;
    return l;
}

/* The level LFM2_KERNEL and this CPU should give: the highest supported level at or below the
 * one named, the best supported when unset or unknown. Computed here, not asked of cpu.c, so a
 * test that compares the two notices when cpu.c breaks the rule. */
static inline int cpu_want_level(void) {
    static const char *const names[CPU_NLEVELS][2] = {{"scalar", "scalar"},
                                                      {"base", "base"},
                                                      {"avx2", "avx2"},
                                                      {"avxvnni", "avx-vnni"},
                                                      {"avx512", "avx512-vnni"}};
    const char *env = getenv("LFM2_KERNEL");
    int l = CPU_NLEVELS - 1;
    for (int i = 0; env && i < CPU_NLEVELS; i++)
        if (!strcmp(env, names[i][0]) || !strcmp(env, names[i][1])) l = i;
    return cpu_want_capped(l);
}
/* The first line this test program prints when run again as a child with LFM2_KERNEL=kernel and
 * the one argument flag (the dispatch is read once per process, so each level needs a process);
 * "" when it cannot run. */
static inline void cpu_want_child(const char *kernel, const char *flag, char *out, size_t cap) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "LFM2_KERNEL=%s /proc/%d/exe %s", kernel, (int)getpid(), flag);
    out[0] = 0;
    FILE *f = popen(cmd, "r");
    if (!f) return;
    if (!fgets(out, (int)cap, f)) out[0] = 0;
    pclose(f);
    out[strcspn(out, "\n")] = 0;
}
#endif
