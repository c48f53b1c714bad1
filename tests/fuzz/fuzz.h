/* fuzz.h: what the harnesses share: the libFuzzer entry point and an always-on check. */
#ifndef LFM2_FUZZ_H
#define LFM2_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Each harness defines this; libFuzzer (make fuzz) or tests/fuzz/replay.c (make test) calls it.
 * Returns 0; a broken property aborts with file:line, which both drivers report as a crash. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
