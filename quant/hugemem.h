/* hugemem.h: large zeroed buffers in 2 MiB transparent huge pages when the kernel allows. */
#ifndef LFM2_QUANT_HUGEMEM_H
#define LFM2_QUANT_HUGEMEM_H
#include <stddef.h>

/* size zeroed bytes, 2 MiB aligned, the mapping marked MADV_HUGEPAGE (a hint: madvise mode is
 * the common default, and a refusal leaves ordinary pages); *mapped receives what huge_free needs.
 * Under ASan it is aligned_alloc + memset (the redzones catch overruns). NULL when out of memory. */
void *huge_alloc(size_t size, size_t *mapped);
void huge_free(void *p, size_t mapped);

#endif
