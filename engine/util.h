/* util.h: PRIVATE to engine/ and synth/ (the generator): error text into a buffer, hashing. */
#ifndef LFM2_ENGINE_UTIL_H
#define LFM2_ENGINE_UTIL_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Formats a message into err (errlen bytes, always NUL-terminated; nothing when err is NULL or
 * errlen 0), the way every library function here reports bad input. Header-only, so the tools
 * that compile a few engine files on their own (tests/oracle) need nothing more. */
static inline void util_vseterr(char *err, size_t errlen, const char *fmt, va_list ap) {
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
}
static inline void util_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void util_seterr(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    util_vseterr(err, errlen, fmt, ap);
    va_end(ap);
}
/* Same, and returns code, for `return util_fail(err, errlen, X_EINVAL, "...", ...);`. */
static inline int util_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int util_fail(char *err, size_t errlen, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    util_vseterr(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* FNV-1a over n bytes (stable: mkmodel derives its weight seeds from it). */
static inline uint64_t util_fnv1a(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

/* FNV-1a with its high bits folded down, for power-of-two hash tables indexed by the low bits. */
static inline uint64_t util_hash_bytes(const void *p, size_t n) {
    uint64_t h = util_fnv1a(p, n);
    return h ^ (h >> 29);
}

/* murmur3's 64-bit finalizer: a well-mixed hash of an integer key. */
static inline uint64_t util_mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

#endif
