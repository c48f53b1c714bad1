/* gen_quant_golden.c: test-tool (not product) that asks ggml itself, via dlopen, for golden quant
 * data. */
/*
 * Writes into OUTDIR (default tests/data/quant):
 *   deq_<type>.bin   random-but-valid blocks and ggml's to_float of them
 *   qnt_<type>.bin   awkward random floats and ggml's from_float_ref bytes for them
 *   f16.bin          ggml_fp16_to_fp32 of all 65536 halves; ggml_fp32_to_fp16/bf16 of edge floats
 * File layout (little-endian): "QGLD", u32 kind (1 deq, 2 qnt, 3 conv), u32 type, u32 count,
 * then the payload described at each writer below. The test (tests/test_quant.c) reads these.
 * Usage: gen_quant_golden LIBDIR [OUTDIR]   (LIBDIR holds libggml-base.so)
 */
#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ggml's public struct ggml_type_traits (ggml.h), as of the release inside node-llama-cpp 3.22.1 */
struct ggml_type_traits {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    void (*to_float)(const void *x, float *y, int64_t k);
    void (*from_float_ref)(const float *x, void *y, int64_t k);
};

typedef const struct ggml_type_traits *(*get_traits_fn)(int type);
typedef float (*h2f_fn)(uint16_t);
typedef uint16_t (*f2h_fn)(float);

static void *lib; /* libggml-base.so */

typedef void (*to_float_fn)(const void *x, float *y, int64_t k);
typedef void (*from_float_fn)(const float *x, void *y, int64_t k);

/* ggml's dequantizer for a type: the traits' to_float, else the exported dequantize_row_<name>. */
static to_float_fn find_to_float(const struct ggml_type_traits *t) {
    if (t->to_float) return t->to_float;
    char name[64];
    snprintf(name, sizeof name, "dequantize_row_%s", t->type_name);
    void *p = dlsym(lib, name);
    to_float_fn f = NULL;
    if (p) memcpy(&f, &p, sizeof f);
    return f;
}

static from_float_fn find_from_float(const struct ggml_type_traits *t) {
    if (t->from_float_ref) return t->from_float_ref;
    char name[64];
    snprintf(name, sizeof name, "quantize_row_%s_ref", t->type_name);
    void *p = dlsym(lib, name);
    from_float_fn f = NULL;
    if (p) memcpy(&f, &p, sizeof f);
    return f;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) { /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}
static float urand(void) {
    return (rnd() >> 8) * (1.0f / 16777216.0f);
} /* [0,1) */
static float gauss(void) {
    float u = urand() + 1e-7f, v = urand();
    return sqrtf(-2 * logf(u)) * cosf(6.2831853f * v);
}

static void put_u32(FILE *f, uint32_t v) {
    fwrite(&v, 4, 1, f);
}

static FILE *open_out(const char *dir, const char *prefix, const char *name, uint32_t kind,
                      uint32_t type, uint32_t count) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s%s.bin", dir, prefix, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite("QGLD", 1, 4, f);
    put_u32(f, kind);
    put_u32(f, type);
    put_u32(f, count);
    return f;
}

/* A random finite half of moderate size (|x| in about 2^-12 .. 2^2), either sign. */
static uint16_t rand_scale_f16(void) {
    uint16_t e = (uint16_t)(3 + rnd() % 14), m = (uint16_t)(rnd() & 0x3ff),
             s = (uint16_t)((rnd() & 1) << 15);
    return (uint16_t)(s | (e << 10) | m);
}

/* Byte offsets of the f16 (or f32 for q8_K) scale fields inside a block, per type id. */
static void fix_scales(int type, uint8_t *blk) {
    int off[2] = {-1, -1};
    switch (type) {
    case 1:
    case 30:
        return; /* f16/bf16: any bits but keep them finite below */
    case 2:
    case 6:
    case 8:
        off[0] = 0;
        break; /* q4_0 q5_0 q8_0: d first */
    case 3:
    case 7:
        off[0] = 0;
        off[1] = 2;
        break; /* q4_1 q5_1: d, m */
    case 12:
    case 13:
        off[0] = 0;
        off[1] = 2;
        break; /* q4_K q5_K: d, dmin */
    case 10:
        off[0] = 80;
        off[1] = 82;
        break; /* q2_K: d, dmin at the end */
    case 11:
        off[0] = 108;
        break; /* q3_K: d at the end */
    case 14:
        off[0] = 208;
        break; /* q6_K: d at the end */
    case 15: { /* q8_K: f32 d first */
        float d = (urand() * 2 - 1) * 0.01f;
        memcpy(blk, &d, 4);
        return;
    }
    default:
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (off[i] < 0) continue;
        uint16_t h = rand_scale_f16();
        if (type == 3 || type == 7 || type == 12 || type == 13 || type == 10) {
            if (i == 0)
                h &= 0x7fff; /* d positive as a quantizer writes it (the format allows either) */
        }
        memcpy(blk + off[i], &h, 2);
    }
}

static int types[] = {1, 30, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15};

static void gen_deq(const char *dir, get_traits_fn gt) {
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        int type = types[ti];
        const struct ggml_type_traits *t = gt(type);
        to_float_fn to_float = t ? find_to_float(t) : NULL;
        if (!to_float) {
            fprintf(stderr, "type %d: no to_float\n", type);
            exit(1);
        }
        uint32_t nblk = t->blck_size == 1 ? 1000 : t->blck_size == 32 ? 37 : 9;
        size_t nb = nblk * t->type_size;
        int64_t n = (int64_t)nblk * t->blck_size;
        uint8_t *raw = malloc(nb);
        float *out = malloc((size_t)n * 4);
        for (size_t i = 0; i < nb; i++)
            raw[i] = (uint8_t)rnd();
        if (type == 1) { /* f16: every class, but no nan (payload rules are not the point) */
            for (int64_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, raw + 2 * i, 2);
                if ((h & 0x7c00) == 0x7c00) h &= 0xfc00; /* nan -> inf of same sign */
                memcpy(raw + 2 * i, &h, 2);
            }
        } else if (type == 30) {
            for (int64_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, raw + 2 * i, 2);
                if ((h & 0x7f80) == 0x7f80) h &= 0xff80;
                memcpy(raw + 2 * i, &h, 2);
            }
        } else {
            for (uint32_t b = 0; b < nblk; b++)
                fix_scales(type, raw + b * t->type_size);
        }
        to_float(raw, out, n);
        FILE *f = open_out(dir, "deq_", t->type_name, 1, (uint32_t)type, nblk);
        put_u32(f, (uint32_t)t->blck_size);
        put_u32(f, (uint32_t)t->type_size);
        fwrite(raw, 1, nb, f);
        fwrite(out, 4, (size_t)n, f);
        fclose(f);
        printf("deq_%s.bin: %u blocks (%s, block %lld, %zu bytes)\n", t->type_name, nblk,
               t->type_name, (long long)t->blck_size, t->type_size);
        free(raw);
        free(out);
    }
}

/* Inputs with the shapes real weights and awkward cases have, one kind per 256-weight stretch. */
static void fill_inputs(float *x, int64_t n) {
    for (int64_t s = 0; s < n; s += 256) {
        int kind = (int)((s / 256) % 8);
        float scale = 0.02f * (1 + (float)(rnd() % 50));
        for (int64_t i = s; i < s + 256 && i < n; i++) {
            float v;
            switch (kind) {
            case 0:
                v = gauss() * scale;
                break; /* normal */
            case 1:
                v = (urand() * 2 - 1) * scale;
                break; /* uniform */
            case 2:
                v = gauss() * scale * (rnd() % 64 == 0 ? 20 : 1);
                break; /* outliers */
            case 3:
                v = fabsf(gauss()) * scale + 0.5f;
                break; /* all positive */
            case 4:
                v = -fabsf(gauss()) * scale - 0.1f;
                break; /* all negative */
            case 5:
                v = (i % 32 < 8) ? 0.0f : gauss() * 1e-3f;
                break; /* zero runs, tiny */
            case 6:
                v = (i - s) < 64 ? 0.0f : (i - s) < 128 ? 0.25f : gauss();
                break; /* zero, const */
            default:
                v = gauss() * scale * 100;
                break; /* large */
            }
            x[i] = v;
        }
    }
}

static void gen_qnt(const char *dir, get_traits_fn gt) {
    int qtypes[] = {1, 30, 2, 3, 6, 7, 8, 12, 13, 14, 15};
    for (size_t ti = 0; ti < sizeof qtypes / sizeof *qtypes; ti++) {
        int type = qtypes[ti];
        const struct ggml_type_traits *t = gt(type);
        from_float_fn from_float = t ? find_from_float(t) : NULL;
        if (!from_float) {
            fprintf(stderr, "type %d: no from_float_ref\n", type);
            exit(1);
        }
        int64_t n = 256 * 24; /* 3 stretches of each input kind */
        size_t nb = (size_t)(n / t->blck_size) * t->type_size;
        float *x = malloc((size_t)n * 4);
        uint8_t *q = calloc(1, nb);
        fill_inputs(x, n);
        from_float(x, q, n);
        FILE *f = open_out(dir, "qnt_", t->type_name, 2, (uint32_t)type, (uint32_t)n);
        put_u32(f, (uint32_t)nb);
        fwrite(x, 4, (size_t)n, f);
        fwrite(q, 1, nb, f);
        fclose(f);
        printf("qnt_%s.bin: %lld floats -> %zu bytes\n", t->type_name, (long long)n, nb);
        free(x);
        free(q);
    }
}

static void gen_conv(const char *dir, h2f_fn h2f, f2h_fn f2h, f2h_fn f2bf) {
    /* edge floats: zeros, f32 subnormals, half subnormal range and its ties, the half overflow
     * boundary, bf16 ties, inf, nans with payloads, then random bit patterns */
    uint32_t edge[] = {
        0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x00400000, 0x33000000, 0x33000001,
        0xb3000000, 0x33800000, 0x33c00000, 0x33c00001, 0x34200000, 0x38000000, 0x387fc000,
        0x387fe000, 0x387ff000, 0x387fffff, 0x38800000, 0x38801000, 0x38803000, 0x3f800000,
        0x3f801000, 0x3f803000, 0x3f801001, 0x3f808000, 0x3f818000, 0x3f808001, 0x477fe000,
        0x477fefff, 0x477ff000, 0x477ff001, 0x47800000, 0x7f7fffff, 0xff7fffff, 0x7f7f8000,
        0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00000, 0xff800001,
        0x7fffffff, 0x3ff80000, 0x3ff88000, 0x40490fdb, 0xc0490fdb, 0x3eaaaaab, 0x00800000,
        0x00ffffff, 0x007f8000, 0x00018000, 0x00008000,
    };
    uint32_t nedge = sizeof edge / sizeof *edge, nrand = 4000, n = nedge + nrand;
    uint32_t *in = malloc(n * 4);
    memcpy(in, edge, sizeof edge);
    for (uint32_t i = nedge; i < n; i++) {
        uint32_t r = rnd();
        /* half the random ones in the half-precision exponent range, where rounding matters */
        if (i & 1) r = (r & 0x80ffffff) | ((uint32_t)(100 + rnd() % 45) << 23);
        in[i] = r;
    }
    FILE *f = open_out(dir, "", "conv", 3, 0, n);
    fwrite(in, 4, n, f);
    for (uint32_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, &in[i], 4);
        uint16_t h = f2h(v), b = f2bf(v);
        fwrite(&h, 2, 1, f);
        fwrite(&b, 2, 1, f);
    }
    for (uint32_t h = 0; h < 65536; h++) {
        float v = h2f((uint16_t)h);
        fwrite(&v, 4, 1, f);
    }
    fclose(f);
    printf("conv.bin: %u floats -> f16/bf16, 65536 halves -> f32\n", n);
    free(in);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s LIBDIR [OUTDIR]\n", argv[0]);
        return 2;
    }
    const char *out = argc > 2 ? argv[2] : "tests/data/quant";
    char path[1024];
    snprintf(path, sizeof path, "%s/libggml-base.so", argv[1]);
    lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    get_traits_fn gt;
    h2f_fn h2f;
    f2h_fn f2h, f2bf;
    /* POSIX guarantees object and function pointers convert; ISO C does not, hence the memcpy */
    void *sym[4] = {dlsym(lib, "ggml_get_type_traits"), dlsym(lib, "ggml_fp16_to_fp32"),
                    dlsym(lib, "ggml_fp32_to_fp16"), dlsym(lib, "ggml_fp32_to_bf16")};
    memcpy(&gt, &sym[0], sizeof gt);
    memcpy(&h2f, &sym[1], sizeof h2f);
    memcpy(&f2h, &sym[2], sizeof f2h);
    memcpy(&f2bf, &sym[3], sizeof f2bf);
    if (!gt || !h2f || !f2h || !f2bf) {
        fprintf(stderr, "dlsym: missing ggml symbol\n");
        return 1;
    }
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const struct ggml_type_traits *t = gt(types[ti]);
        printf("type %2d %-5s block %3lld size %3zu\n", types[ti], t->type_name,
               (long long)t->blck_size, t->type_size);
    }
    gen_deq(out, gt);
    gen_qnt(out, gt);
    gen_conv(out, h2f, f2h, f2bf);
    return 0;
}
