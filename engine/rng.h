/* rng.h: the seeded generators (header-only): splitmix64 and xoshiro256**. Seeded outputs (the
 * generated models, sampled tokens) depend on these exact streams. */
#ifndef LFM2_ENGINE_RNG_H
#define LFM2_ENGINE_RNG_H
#include <stdint.h>

/* splitmix64: advances *s by the golden-ratio increment and returns its mix. Used alone (model
 * generation, ids) and to seed xoshiro256**. */
static inline uint64_t rng_splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* xoshiro256** state s[4] from a 64-bit seed: four splitmix64 outputs. */
static inline void rng_xoshiro_seed(uint64_t s[4], uint64_t seed) {
    for (int i = 0; i < 4; i++)
        s[i] = rng_splitmix64(&seed);
}

static inline uint64_t rng_rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

/* The next xoshiro256** output. */
static inline uint64_t rng_xoshiro_next(uint64_t s[4]) {
    const uint64_t r = rng_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) from the top 53 bits of the next output. */
static inline double rng_xoshiro_uniform(uint64_t s[4]) {
    return (double)(rng_xoshiro_next(s) >> 11) * 0x1.0p-53;
}

#endif
