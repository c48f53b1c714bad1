/* invariant.h: always-on assertions for broken invariants (bugs), on in every build type. */
#ifndef LFM2_ENGINE_INVARIANT_H
#define LFM2_ENGINE_INVARIANT_H
#include <stdio.h>
#include <stdlib.h>

/* Bad input is an error code and a message (STYLE.md); a broken invariant is a bug: these print
 * file:line, the condition and, for INVARIANT_CMP, both values, then abort. NDEBUG does not turn
 * them off. Operands of INVARIANT_CMP are integers (compared as long long). */
#define INVARIANT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define INVARIANT_CMP(a, op, b)                                                                    \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (!(va_ op vb_)) {                                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s %s %s (%lld vs %lld)\n", __FILE__,        \
                    __LINE__, #a, #op, #b, va_, vb_);                                              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
