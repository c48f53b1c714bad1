/* test_hugemem.c: huge_alloc gives zeroed, writable, aligned memory of at least the size asked,
 * advised MADV_HUGEPAGE (the "hg" flag in /proc/self/smaps), and huge_free returns it. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "quant/hugemem.h"
#include "tests/check.h"

#define HUGE ((size_t)2 << 20)

/* the VmFlags line of the mapping that holds p, into flags ("" if none) */
static void vm_flags(const void *p, char *flags, size_t n) {
    flags[0] = 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return;
    char line[512];
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        if (in && !strncmp(line, "VmFlags:", 8)) {
            snprintf(flags, n, "%s", line + 8);
            break;
        }
    }
    fclose(f);
}

int main(void) {
    const size_t sizes[] = {1, 100, 4096, HUGE - 1, HUGE, 5 * HUGE + 17};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k], mapped = 12345;
        uint8_t *p = huge_alloc(n, &mapped);
        CHECK(p != NULL);
        if (!p) continue;
        CHECK((uintptr_t)p % 64 == 0);
#if !defined(__SANITIZE_ADDRESS__)
        CHECK((uintptr_t)p % HUGE == 0);
        CHECK(mapped >= n && mapped % HUGE == 0);
        char flags[512];
        vm_flags(p, flags, sizeof flags);
#ifdef __linux__
        CHECK(strstr(flags, " hg") != NULL); /* MADV_HUGEPAGE applied */
#endif
#else
        CHECK_EQ_INT(mapped, 0);
#endif
        size_t nonzero = 0;
        for (size_t i = 0; i < n; i++)
            nonzero += p[i] != 0;
        CHECK_EQ_INT(nonzero, 0);
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)(i * 7 + k);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += p[i] != (uint8_t)(i * 7 + k);
        CHECK_EQ_INT(bad, 0);
        huge_free(p, mapped);
    }
    huge_free(NULL, 0);
    return check_done("test_hugemem");
}
