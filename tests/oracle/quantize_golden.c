/* quantize_golden.c: test tool (not product): llama.cpp's own llama_model_quantize, via dlopen, on a
 * GGUF; prints every output tensor's name, type and FNV-1a 64 hash of its data for golden files.
 * usage: quantize_golden LIBDIR IN.gguf OUT.gguf FTYPE MIXNAME   (FTYPE = LLAMA_FTYPE_* value) */
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "quant/quant.h"

/* llama_model_quantize_params is returned by value; its size differs between releases, so it is
 * received into a buffer much larger than any version of it (returned through a hidden pointer
 * on x86-64 since it is larger than 16 bytes). The fields used here have kept their offsets
 * since 2024: int32 nthread @0, int32 ftype @4, int32 output_tensor_type @8, int32
 * token_embedding_type @12, bool allow_requantize @16, bool quantize_output_tensor @17. */
typedef struct {
    unsigned char bytes[1024];
} qparams_buf;
typedef qparams_buf (*default_params_fn)(void);
typedef uint32_t (*quantize_fn)(const char *in, const char *out, const void *params);
typedef void (*backend_init_fn)(void);
typedef void (*log_set_fn)(void (*cb)(int, const char *, void *), void *);

static void quiet(int level, const char *text, void *ud) {
    (void)level;
    (void)text;
    (void)ud;
}

static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: quantize_golden LIBDIR IN.gguf OUT.gguf FTYPE MIXNAME\n");
        return 2;
    }
    char lib[4096];
    snprintf(lib, sizeof lib, "%s/libllama.v0.5.0.so", argv[1]);
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen %s: %s\n", lib, dlerror());
        return 1;
    }
    default_params_fn defp = (default_params_fn)(uintptr_t)dlsym(h, "llama_model_quantize_default_params");
    quantize_fn quant = (quantize_fn)(uintptr_t)dlsym(h, "llama_model_quantize");
    backend_init_fn binit = (backend_init_fn)(uintptr_t)dlsym(h, "llama_backend_init");
    log_set_fn logset = (log_set_fn)(uintptr_t)dlsym(h, "llama_log_set");
    if (!defp || !quant || !binit) {
        fprintf(stderr, "missing llama_model_quantize* / llama_backend_init in %s\n", lib);
        return 1;
    }
    if (logset) logset(quiet, NULL);
    binit();
    qparams_buf pb = defp();
    int32_t out_t, emb_t;
    memcpy(&out_t, pb.bytes + 8, 4);
    memcpy(&emb_t, pb.bytes + 12, 4);
    /* sanity: defaults are "no override" (GGML_TYPE_COUNT), no requantize, quantize output */
    if (out_t < 30 || out_t != emb_t || pb.bytes[16] != 0 || pb.bytes[17] != 1) {
        fprintf(stderr, "unexpected llama_model_quantize_params layout (%d %d %d %d)\n", out_t,
                emb_t, pb.bytes[16], pb.bytes[17]);
        return 1;
    }
    int32_t nthread = 1, ftype = atoi(argv[4]);
    memcpy(pb.bytes, &nthread, 4);
    memcpy(pb.bytes + 4, &ftype, 4);
    pb.bytes[16] = 1; /* allow requantize: quantized inputs are converted through f32 as we do */
    if (quant(argv[2], argv[3], pb.bytes)) {
        fprintf(stderr, "llama_model_quantize(%s -> %s, ftype %d) failed\n", argv[2], argv[3], ftype);
        return 1;
    }
    char err[512];
    gguf *g;
    if (gguf_open(&g, argv[3], err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("%s file_type %" PRId64 "\n", argv[5], gguf_get_int(g, "general.file_type", -1, NULL));
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const qtype_traits *tr = quant_traits(t->type);
        printf("%s %s %s %016" PRIx64 "\n", argv[5], t->name, tr ? tr->name : "?",
               fnv1a(t->data, t->nbytes));
    }
    gguf_close(g);
    return 0;
}
