/* replay.c: runs a fuzz harness without libFuzzer: the corpus, then seeded mutations of it. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "tests/fuzz/fuzz.h"

/* usage: replay [-n MUTATIONS] [-s SEED] [-m MAXLEN] [DIR|FILE ...]
 * Defaults: the corpus tests/fuzz/corpus/FUZZ_NAME (relative to the repository root, where
 * tests/run.sh runs), LFM2_FUZZ_ITERS mutations (default 10000; gguf 30000, request 4000, sample
 * 3000), seed 1. Exit 0 when every input ran; a broken property aborts (the harness's FUZZ_CHECK or
 * a sanitizer). LFM2_FUZZ_LAST=FILE writes each mutated input to FILE before running it. */

#ifndef FUZZ_NAME
#error "compile with -DFUZZ_NAME='\"gguf\"' (the harness name)"
#endif

typedef struct input {
    char *path;
    uint8_t *data;
    size_t len;
} input;

typedef struct corpus {
    input *v;
    int n, cap;
} corpus;

static int add_file(corpus *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb, cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    fclose(f);
    if (!buf) return -1;
    if (c->n == c->cap) {
        int nc = c->cap ? 2 * c->cap : 64;
        input *nv = realloc(c->v, (size_t)nc * sizeof *nv);
        if (!nv) {
            free(buf);
            return -1;
        }
        c->v = nv, c->cap = nc;
    }
    c->v[c->n++] = (input){strdup(path), buf, len};
    return 0;
}

static int cmp_input(const void *a, const void *b) {
    return strcmp(((const input *)a)->path, ((const input *)b)->path);
}

static int add_path(corpus *c, const char *path) {
    struct stat st;
    if (stat(path, &st)) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) return add_file(c, path);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    int first = c->n, rc = 0;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && add_file(c, p)) rc = -1;
        }
    closedir(d);
    /* directory order is not stable: sort so a seed always means the same inputs */
    qsort(c->v + first, (size_t)(c->n - first), sizeof *c->v, cmp_input);
    return rc;
}

static uint64_t rng(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Values that tend to sit on boundaries of counts, lengths and types. */
static const uint64_t interesting[] = {0,
                                       1,
                                       2,
                                       3,
                                       4,
                                       7,
                                       8,
                                       16,
                                       31,
                                       32,
                                       33,
                                       63,
                                       64,
                                       127,
                                       128,
                                       255,
                                       256,
                                       1023,
                                       1024,
                                       4096,
                                       32767,
                                       32768,
                                       65535,
                                       65536,
                                       0x7fffffff,
                                       0x80000000,
                                       0xffffffff,
                                       0x100000000ull,
                                       0x7fffffffffffffffull,
                                       0xffffffffffffffffull};
static const char *const tokens[] = {
    "{",        "}",        "[",    "]",          "\"",           ":",
    ",",        "null",     "true", "-1",         "1e999",        "\\u0000",
    "\\ud800",  "\xc3\xa9", "\xff", "<|im_end|>", "<|im_start|>", "<think>",
    "\xe2\x82", "\x00"};

/* Applies 1..4 random edits to buf (len bytes, cap room); returns the new length. */
static size_t mutate(uint8_t *buf, size_t len, size_t cap, const corpus *c, uint64_t *s) {
    int edits = 1 + (int)(rng(s) % 4);
    for (int k = 0; k < edits; k++) {
        /* half the edits land in the first few KB, where headers and metadata live */
        size_t span = rng(s) & 1 ? len : (len < (size_t)1024 << k ? len : (size_t)1024 << k);
        size_t at = span ? (size_t)(rng(s) % span) : 0;
        switch (rng(s) % 9) {
        case 0: /* flip a bit */
            if (len) buf[at] ^= (uint8_t)(1u << (rng(s) % 8));
            break;
        case 1: /* random byte */
            if (len) buf[at] = (uint8_t)rng(s);
            break;
        case 2: { /* an interesting value, little-endian, 1/2/4/8 bytes */
            size_t w = (size_t)1 << (rng(s) % 4);
            uint64_t v = interesting[rng(s) % (sizeof interesting / sizeof interesting[0])];
            if (rng(s) & 1) v = ~v + 1; /* and its negation */
            for (size_t i = 0; i < w && at + i < len; i++)
                buf[at + i] = (uint8_t)(v >> (8 * i));
            break;
        }
        case 3: { /* delete a range */
            size_t n = len ? (size_t)(rng(s) % (len - at < 64 ? len - at + 1 : 65)) : 0;
            memmove(buf + at, buf + at + n, len - at - n);
            len -= n;
            break;
        }
        case 4: { /* insert random bytes */
            size_t n = 1 + (size_t)(rng(s) % 16);
            if (len + n > cap) break;
            memmove(buf + at + n, buf + at, len - at);
            for (size_t i = 0; i < n; i++)
                buf[at + i] = (uint8_t)rng(s);
            len += n;
            break;
        }
        case 5: { /* insert a token */
            const char *t = tokens[rng(s) % (sizeof tokens / sizeof tokens[0])];
            size_t n = t[0] ? strlen(t) : 1;
            if (len + n > cap) break;
            memmove(buf + at + n, buf + at, len - at);
            memcpy(buf + at, t, n);
            len += n;
            break;
        }
        case 6: /* truncate */
            len = at;
            break;
        case 7: { /* copy a range of another input over this one */
            const input *o = &c->v[rng(s) % (uint64_t)c->n];
            if (!o->len || !len) break;
            size_t from = (size_t)(rng(s) % o->len);
            size_t n = 1 + (size_t)(rng(s) % 64);
            if (n > o->len - from) n = o->len - from;
            if (n > len - at) n = len - at;
            memcpy(buf + at, o->data + from, n);
            break;
        }
        case 8: { /* duplicate a range */
            size_t n = len ? 1 + (size_t)(rng(s) % (len - at < 32 ? len - at : 32)) : 0;
            if (!n || len + n > cap) break;
            memmove(buf + at + n, buf + at, len - at); /* [at, at+n) now appears twice */
            len += n;
            break;
        }
        }
    }
    return len;
}

/* Runs the harness on an exact-size heap copy, so a read past the end is an ASan error. */
static void run(const uint8_t *data, size_t len) {
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) abort();
    if (len) memcpy(copy, data, len);
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
}

int main(int argc, char **argv) {
    /* default mutations: a few seconds per harness under ASan (most gguf mutants fail early;
     * request and sample do the most work per input) */
    long iters = !strcmp(FUZZ_NAME, "gguf")      ? 30000
                 : !strcmp(FUZZ_NAME, "request") ? 4000
                 : !strcmp(FUZZ_NAME, "sample")  ? 3000
                 : !strcmp(FUZZ_NAME, "schema")  ? 3000
                                                 : 10000;
    long maxlen = 1 << 20;
    uint64_t seed = 1;
    const char *env = getenv("LFM2_FUZZ_ITERS");
    if (env) iters = atol(env);
    corpus c = {0};
    int npaths = 0, rc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            iters = atol(argv[++i]);
        } else if (!strcmp(argv[i], "-s") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "-m") && i + 1 < argc) {
            maxlen = atol(argv[++i]);
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [-n MUTATIONS] [-s SEED] [-m MAXLEN] [DIR|FILE ...]\n",
                    argv[0]);
            return 2;
        } else {
            npaths++;
            if (add_path(&c, argv[i])) rc = 1;
        }
    }
    if (!npaths && add_path(&c, "tests/fuzz/corpus/" FUZZ_NAME)) rc = 1;
    if (rc || c.n == 0) {
        fprintf(stderr, "replay %s: no corpus (run from the repository root)\n", FUZZ_NAME);
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < c.n; i++)
        run(c.v[i].data, c.v[i].len);
    size_t biggest = 0;
    for (int i = 0; i < c.n; i++)
        if (c.v[i].len > biggest) biggest = c.v[i].len;
    size_t cap = biggest + 4096;
    uint8_t *buf = malloc(cap);
    if (!buf) return 1;
    const char *last = getenv("LFM2_FUZZ_LAST");
    for (long it = 0; it < iters; it++) {
        uint64_t s = seed * 1000003u + (uint64_t)it; /* each mutation reproducible on its own */
        const input *in = &c.v[rng(&s) % (uint64_t)c.n];
        const input *alt = &c.v[rng(&s) % (uint64_t)c.n];
        if (alt->len > in->len && (rng(&s) & 1)) in = alt; /* lean to the richer (larger) seeds */
        size_t len = in->len;
        memcpy(buf, in->data, len);
        len = mutate(buf, len, cap, &c, &s);
        if ((long)len > maxlen) len = (size_t)maxlen;
        if (last) { /* LFM2_FUZZ_LAST=FILE keeps the input being run, to reproduce a crash */
            FILE *f = fopen(last, "wb");
            if (f) fwrite(buf, 1, len, f), fclose(f);
            fprintf(stderr, "mutation %ld of %s\n", it, in->path);
        }
        run(buf, len);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("replay %s: %d corpus files, %ld mutations (seed %llu), %.1f s\n", FUZZ_NAME, c.n, iters,
           (unsigned long long)seed,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    free(buf);
    for (int i = 0; i < c.n; i++)
        free(c.v[i].path), free(c.v[i].data);
    free(c.v);
    return 0;
}
