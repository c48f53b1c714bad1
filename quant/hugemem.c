/* hugemem.c: see hugemem.h. Why huge pages: decode streams the weights every token (with 4 KiB
 * pages the prefetchers stop at each page and the TLB misses ~50 times per MiB), and a sequence's
 * KV cache in 4 KiB pages takes a page fault every 32 positions of each head and layer. */
#include "quant/hugemem.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

void *huge_alloc(size_t size, size_t *mapped) {
    *mapped = 0;
#if defined(__SANITIZE_ADDRESS__)
    size = (size + 63) / 64 * 64;
    void *p = aligned_alloc(64, size ? size : 64);
    if (p) memset(p, 0, size);
    return p;
#else
    size = (size + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (!size) size = HUGE_PAGE;
    uint8_t *raw =
        mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uint8_t *base = (uint8_t *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (base > raw) munmap(raw, (size_t)(base - raw)); /* trim to the aligned range */
    if (base + size < raw + size + HUGE_PAGE)
        munmap(base + size, (size_t)(raw + size + HUGE_PAGE - (base + size)));
#ifdef MADV_HUGEPAGE
    madvise(base, size, MADV_HUGEPAGE);
#endif
    *mapped = size;
    return base;
#endif
}

void huge_free(void *p, size_t mapped) {
    if (!p) return;
    if (mapped)
        munmap(p, mapped);
    else
        free(p);
}
