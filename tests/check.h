/* check.h: always-on test assertions that print file:line and both values. */
#ifndef LFM2_TESTS_CHECK_H
#define LFM2_TESTS_CHECK_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            check_failures++;                                                          \
        }                                                                              \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                             \
    do {                                                                               \
        long long va_ = (long long)(a), vb_ = (long long)(b);                          \
        if (va_ != vb_) {                                                              \
            fprintf(stderr, "%s:%d: CHECK_EQ_INT failed: %s == %s (%lld vs %lld)\n",   \
                    __FILE__, __LINE__, #a, #b, va_, vb_);                             \
            check_failures++;                                                          \
        }                                                                              \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                          \
    do {                                                                               \
        double va_ = (double)(a), vb_ = (double)(b);                                   \
        if (!(va_ - vb_ <= (tol) && vb_ - va_ <= (tol))) {                             \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s ~ %s (%.9g vs %.9g, tol %g)\n", \
                    __FILE__, __LINE__, #a, #b, va_, vb_, (double)(tol));              \
            check_failures++;                                                          \
        }                                                                              \
    } while (0)

#define CHECK_STR(a, b)                                                                \
    do {                                                                               \
        const char *sa_ = (a), *sb_ = (b);                                             \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                   \
            fprintf(stderr, "%s:%d: CHECK_STR failed: %s == %s (\"%s\" vs \"%s\")\n",  \
                    __FILE__, __LINE__, #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)"); \
            check_failures++;                                                          \
        }                                                                              \
    } while (0)

/* The whole file at path in a malloc'd buffer (the caller frees), its size in *n; NULL if it
 * cannot be opened, sized or allocated. Shared by the tests that compare files byte for byte. */
static inline unsigned char *check_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    long sz = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
    unsigned char *p = sz >= 0 && !fseek(f, 0, SEEK_SET) ? malloc(sz > 0 ? (size_t)sz : 1) : NULL;
    *n = p ? fread(p, 1, (size_t)sz, f) : 0;
    fclose(f);
    return p;
}

/* Call at the end of main: prints the outcome and gives the exit status. */
static inline int check_done(const char *name) {
    if (check_failures) fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
    else printf("%s: ok\n", name);
    return check_failures ? 1 : 0;
}
#endif
