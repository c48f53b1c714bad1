/* test_quantize.c: `lfm2 quantize` (cmd_quantize) against llama.cpp's quantizer, exact f32 dequantization, errors. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "quant/quant.h"
#include "server/cmd/cli.h"
#include "synth/mkmodel.h"
#include "tests/check.h"

#define MODELS "tests/data/models/"
#define GOLDEN "tests/data/quantize/tensors.txt"
#define MOE_GOLDEN "tests/data/quantize/moe-tensors.txt"

static char tmpdir[512];

static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Runs `lfm2 quantize` in-process with up to 6 arguments; returns its exit status. Its stderr
 * goes to the test log. */
static int run_quantize(const char *a1, const char *a2, const char *a3, const char *a4,
                        const char *a5) {
    char *argv[8] = {"quantize", (char *)a1, (char *)a2, (char *)a3, (char *)a4, (char *)a5, NULL};
    int argc = 1;
    while (argc < 7 && argv[argc]) argc++;
    return cmd_quantize(argc, argv);
}

static gguf *open_or_fail(const char *path) {
    char err[512];
    gguf *g = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0) {
        fprintf(stderr, "gguf_open(%s): %s\n", path, err);
        check_failures++;
        return NULL;
    }
    return g;
}

/* One golden line: INPUT MIX name type hash. */
typedef struct gline {
    char in[32], mix[16], name[96], type[16];
    uint64_t hash;
} gline;

static gline *load_golden(const char *file, int *n_out) {
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", file);
        check_failures++;
        *n_out = 0;
        return NULL;
    }
    int cap = 2048, n = 0;
    gline *v = malloc(sizeof *v * (size_t)cap);
    char line[512];
    while (v && fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        gline g;
        char hs[40];
        int k = sscanf(line, "%31s %15s %95s %15s %39s", g.in, g.mix, g.name, g.type, hs);
        if (k == 4 && !strcmp(g.name, "file_type")) g.hash = 0; /* type holds the value */
        else if (k == 5) g.hash = strtoull(hs, NULL, 16);
        else continue;
        if (n == cap) {
            gline *nv = realloc(v, sizeof *v * (size_t)(cap *= 2));
            if (!nv) break;
            v = nv;
        }
        v[n++] = g;
    }
    fclose(f);
    *n_out = n;
    return v;
}

/* Our output of IN converted to MIX equals llama-quantize's tensor for tensor (type and bytes),
 * and general.file_type matches. Runs with the given thread count. */
static void check_vs_llama_at(const gline *gl, int ng, const char *in, const char *src,
                              const char *mix, const char *threads) {
    char out[768];
    snprintf(out, sizeof out, "%s/%s.%s.t%s.gguf", tmpdir, in, mix, threads);
    int rc = run_quantize(src, out, mix, "-t", threads);
    CHECK_EQ_INT(rc, 0);
    if (rc) return;
    gguf *g = open_or_fail(out);
    if (!g) return;
    int seen = 0, bad = 0;
    for (int i = 0; i < ng; i++) {
        if (strcmp(gl[i].in, in) || strcmp(gl[i].mix, mix)) continue;
        if (!strcmp(gl[i].name, "file_type")) {
            CHECK_EQ_INT(gguf_get_int(g, "general.file_type", -1, NULL), atoi(gl[i].type));
            continue;
        }
        seen++;
        const gguf_tensor *t = gguf_find_tensor(g, gl[i].name);
        if (!t) {
            fprintf(stderr, "%s %s: tensor %s missing\n", in, mix, gl[i].name);
            check_failures++;
            continue;
        }
        const char *tn = quant_traits(t->type)->name;
        uint64_t h = fnv1a(t->data, t->nbytes);
        if (strcmp(tn, gl[i].type) || h != gl[i].hash) {
            if (bad++ < 5)
                fprintf(stderr, "%s -> %s (-t %s): %s is %s %016" PRIx64 ", llama.cpp %s %016" PRIx64 "\n",
                        in, mix, threads, gl[i].name, tn, h, gl[i].type, gl[i].hash);
        }
    }
    CHECK(seen > 0);
    CHECK_EQ_INT(seen, gguf_n_tensors(g));
    CHECK_EQ_INT(bad, 0);
    gguf_close(g);
    unlink(out);
}

static void check_vs_llama(const gline *gl, int ng, const char *in, const char *mix,
                           const char *threads) {
    char src[256];
    snprintf(src, sizeof src, MODELS "%s.gguf", in);
    check_vs_llama_at(gl, ng, in, src, mix, threads);
}

/* lfm2moe: `lfm2 mkmodel --preset mini-moe --layers 3 --type f16 --seed 31` (as
 * tests/oracle/quantize_golden.sh writes it) quantized with its 3-D expert tensors equals
 * llama-quantize's output for every mix of tests/data/quantize/moe-tensors.txt. */
static void check_moe(void) {
    char src[768], err[512];
    snprintf(src, sizeof src, "%s/mini-moe-F16.gguf", tmpdir);
    mkmodel_opts o = {.seed = 31, .ftype = MK_F16, .preset = "mini-moe"};
    CHECK_EQ_INT(mkmodel_preset("mini-moe", &o.shape, err, sizeof err), 0);
    o.shape.n_layer = 3;
    for (int i = 3; i < LFM2_MAX_LAYERS; i++)
        o.shape.attn[i] = false;
    if (mkmodel_write(&o, src, err, sizeof err) < 0) {
        fprintf(stderr, "mini-moe: %s\n", err);
        CHECK(!"mkmodel mini-moe");
        return;
    }
    int ng = 0, mixes = 0;
    gline *gl = load_golden(MOE_GOLDEN, &ng);
    for (int i = 0; i < ng; i++) {
        if (strcmp(gl[i].name, "file_type")) continue;
        check_vs_llama_at(gl, ng, gl[i].in, src, gl[i].mix, "2");
        mixes++;
    }
    CHECK(mixes >= 4);
    free(gl);
    unlink(src);
}

/* IN -> f32: every tensor that was not f32 is now f32 holding exactly (bit for bit) the
 * dequantization of the source; f32 tensors are unchanged; metadata is all copied. */
static void check_f32_exact(const char *in) {
    char src[256], out[768];
    snprintf(src, sizeof src, MODELS "%s.gguf", in);
    snprintf(out, sizeof out, "%s/%s.f32.gguf", tmpdir, in);
    int rc = run_quantize(src, out, "f32", NULL, NULL);
    CHECK_EQ_INT(rc, 0);
    if (rc) return;
    gguf *a = open_or_fail(src), *b = open_or_fail(out);
    if (a && b) {
        CHECK_EQ_INT(gguf_n_tensors(a), gguf_n_tensors(b));
        for (int64_t i = 0; i < gguf_n_tensors(a) && i < gguf_n_tensors(b); i++) {
            const gguf_tensor *s = gguf_tensor_at(a, i), *d = gguf_tensor_at(b, i);
            CHECK_STR(s->name, d->name);
            for (int k = 0; k < GGUF_MAX_DIMS; k++) CHECK_EQ_INT(s->ne[k], d->ne[k]);
            int64_t n = s->ne[0] * s->ne[1] * s->ne[2] * s->ne[3];
            CHECK_EQ_INT(d->type, QT_F32);
            if (d->type != QT_F32 || d->nbytes != (size_t)n * 4) continue;
            float *ref = malloc((size_t)n * sizeof *ref);
            quant_traits(s->type)->to_float(s->data, ref, n);
            if (memcmp(ref, d->data, d->nbytes)) {
                fprintf(stderr, "%s -> f32: %s differs from its dequantization\n", in, s->name);
                check_failures++;
            }
            free(ref);
        }
        /* every key copied with its type; file_type now LLAMA_FTYPE_ALL_F32 */
        for (int64_t i = 0; i < gguf_n_kv(a); i++) {
            const char *key = gguf_kv_key(a, i);
            int64_t j = gguf_find_key(b, key);
            CHECK(j >= 0);
            if (j < 0) continue;
            CHECK_EQ_INT(gguf_kv_type(a, i), gguf_kv_type(b, j));
            if (gguf_kv_type(a, i) == GGUF_STR) {
                CHECK_STR(gguf_kv_str(a, i, NULL), gguf_kv_str(b, j, NULL));
            } else if (gguf_kv_type(a, i) == GGUF_ARR) {
                CHECK_EQ_INT(gguf_arr_len(a, i), gguf_arr_len(b, j));
            } else if (strcmp(key, "general.file_type")) {
                CHECK_NEAR(gguf_kv_float(a, i), gguf_kv_float(b, j), 0);
            }
        }
        CHECK_EQ_INT(gguf_get_int(b, "general.file_type", -1, NULL), 0);
    }
    gguf_close(a);
    gguf_close(b);
    unlink(out);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void check_errors(void) {
    char out[768], dir_out[768], trunc[768], src_copy[768];
    snprintf(out, sizeof out, "%s/err.gguf", tmpdir);
    const char *src = MODELS "mini-F16.gguf";
    /* bad usage (status 2): unknown type, missing arguments, bad thread count, unknown option */
    CHECK_EQ_INT(run_quantize(src, out, "q3_k_xl", NULL, NULL), 2);
    CHECK_EQ_INT(run_quantize(src, out, "", NULL, NULL), 2);
    CHECK_EQ_INT(run_quantize(src, out, NULL, NULL, NULL), 2);
    CHECK_EQ_INT(run_quantize(src, out, "q8_0", "-t", "0"), 2);
    CHECK_EQ_INT(run_quantize(src, out, "q8_0", "-t", "x"), 2);
    CHECK_EQ_INT(run_quantize(src, out, "q8_0", "--frobnicate", NULL), 2);
    CHECK(!file_exists(out));
    /* failures (status 1): missing input, input that is not a GGUF, truncated input */
    snprintf(trunc, sizeof trunc, "%s/trunc.gguf", tmpdir);
    CHECK_EQ_INT(run_quantize("tests/data/models/no-such.gguf", out, "q8_0", NULL, NULL), 1);
    CHECK_EQ_INT(run_quantize("tests/data/models/README.md", out, "q8_0", NULL, NULL), 1);
    FILE *fi = fopen(src, "rb"), *fo = fopen(trunc, "wb");
    CHECK(fi && fo);
    if (fi && fo) {
        char buf[65536];
        size_t k = fread(buf, 1, sizeof buf, fi);
        fwrite(buf, 1, k, fo);
    }
    if (fi) fclose(fi);
    if (fo) fclose(fo);
    CHECK_EQ_INT(run_quantize(trunc, out, "q8_0", NULL, NULL), 1);
    CHECK(!file_exists(out));
    /* IN == OUT (same path, and the same file through another path): refused, input intact */
    snprintf(src_copy, sizeof src_copy, "%s/copy.gguf", tmpdir);
    CHECK_EQ_INT(run_quantize(src, src_copy, "f16", NULL, NULL), 0);
    struct stat before, after;
    CHECK(stat(src_copy, &before) == 0);
    CHECK_EQ_INT(run_quantize(src_copy, src_copy, "q8_0", NULL, NULL), 2);
    char alias[800];
    snprintf(alias, sizeof alias, "%s/./copy.gguf", tmpdir);
    CHECK_EQ_INT(run_quantize(src_copy, alias, "q8_0", NULL, NULL), 2);
    CHECK(stat(src_copy, &after) == 0);
    CHECK_EQ_INT(before.st_size, after.st_size);
    CHECK_EQ_INT(before.st_mtime, after.st_mtime);
    /* output not writable: missing directory, a directory as output */
    snprintf(dir_out, sizeof dir_out, "%s/no/such/dir/out.gguf", tmpdir);
    CHECK_EQ_INT(run_quantize(src, dir_out, "q8_0", NULL, NULL), 1);
    CHECK_EQ_INT(run_quantize(src, tmpdir, "q8_0", NULL, NULL), 1);
    /* case-insensitive type names */
    CHECK_EQ_INT(run_quantize(src, out, "Q4_k_M", NULL, NULL), 0);
    gguf *g = open_or_fail(out);
    if (g) CHECK_EQ_INT(gguf_get_int(g, "general.file_type", -1, NULL), 15);
    gguf_close(g);
    unlink(out);
    unlink(src_copy);
    unlink(trunc);
}

int main(void) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s", t && *t ? t : "/tmp");
    int ng = 0;
    gline *gl = load_golden(GOLDEN, &ng);
    CHECK(ng > 1000);
    /* every (input, mix) pair of the golden, once with 1 thread and once with 3 (a different
     * split of the rows must give the same bytes) */
    for (int i = 0; i < ng; i++) {
        if (strcmp(gl[i].name, "file_type")) continue;
        check_vs_llama(gl, ng, gl[i].in, gl[i].mix, "1");
        check_vs_llama(gl, ng, gl[i].in, gl[i].mix, "3");
    }
    free(gl);
    const char *refs[] = {"mini-F16", "mini-BF16", "mini-Q8_0", "mini-Q4_0", "mini-Q4_K_M",
                          "mini-Q5_K_M", "mini-Q6_K"};
    for (size_t i = 0; i < sizeof refs / sizeof *refs; i++) check_f32_exact(refs[i]);
    check_moe();
    check_errors();
    return check_done("test_quantize");
}
