/* llama_cbench.c: llama.cpp's speed on a GGUF through its C API, the same procedure as
 * llama.cpp's own llama-bench (tools/llama-bench in the oracle's source bundle): n_batch 2048,
 * n_ubatch 512, flash attention auto, f16 KV cache; one warm-up prompt and one warm-up decode;
 * then per repetition: clear the memory, decode the P-token prompt (random ids, BOS first when the
 * vocab adds one) in one batch, time it; clear again and decode N single tokens one call each,
 * llama_synchronize after each, time that (llama-bench's tg, at depth 0); with -d D, also clear,
 * decode a D-token prompt untimed and time N more single tokens after it (llama-bench -d D: the
 * depth lfm2 bench decodes at, after its own prompt).
 * Built by tests/bench/vs-llama.sh against the libllama inside node-llama-cpp (never part of the
 * product). Output: one JSON line:
 * {"pp_tok_s":..,"tg_tok_s":..,"pp_runs":[..],"tg_runs":[..],"tgd_tok_s":..,"tgd_runs":[..],"depth":D,
 *  "peak_rss_mib":..,"threads":..,"engine":".."}   (tg: depth 0; tgd: depth D, when D > 0)
 * usage: llama_cbench BINDIR MODEL [-p 512] [-n 128] [-d 0] [-t 2] [-r 3] */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include "llama.h"
#include "ggml-backend.h"

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *xs, int n) {
    double s[64];
    memcpy(s, xs, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return s[n / 2];
}

/* random ids like llama-bench (rand() % n_vocab), BOS first when the vocab adds one */
static int prompt(struct llama_context *ctx, const struct llama_vocab *vocab, llama_token *toks, int n) {
    int nv = llama_vocab_n_tokens(vocab);
    for (int i = 0; i < n; i++)
        toks[i] = rand() % nv;
    if (llama_vocab_get_add_bos(vocab))
        toks[0] = llama_vocab_bos(vocab);
    if (llama_decode(ctx, llama_batch_get_one(toks, n)) != 0)
        return -1;
    llama_synchronize(ctx);
    return 0;
}

static int gen(struct llama_context *ctx, const struct llama_vocab *vocab, int n) {
    int nv = llama_vocab_n_tokens(vocab);
    llama_token t = llama_vocab_get_add_bos(vocab) ? llama_vocab_bos(vocab) : rand() % nv;
    for (int i = 0; i < n; i++) {
        if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0)
            return -1;
        llama_synchronize(ctx);
        t = rand() % nv;
    }
    return 0;
}

static void print_runs(const char *name, const double *xs, int n) {
    printf("\"%s\":[", name);
    for (int i = 0; i < n; i++)
        printf("%s%.2f", i ? "," : "", xs[i]);
    printf("],");
}

int main(int argc, char **argv) {
    int P = 512, N = 128, D = 0, T = 2, R = 3;
    if (argc < 3 || (argc - 3) % 2) {
        fprintf(stderr, "usage: llama_cbench BINDIR MODEL [-p 512] [-n 128] [-d 0] [-t 2] [-r 3]\n");
        return 2;
    }
    for (int i = 3; i < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "-p")) P = v;
        else if (!strcmp(argv[i], "-n")) N = v;
        else if (!strcmp(argv[i], "-d")) D = v;
        else if (!strcmp(argv[i], "-t")) T = v;
        else if (!strcmp(argv[i], "-r")) R = v;
        else {
            fprintf(stderr, "llama_cbench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (P < 1 || P > 2048 || N < 1 || D < 0 || D > 2048 || T < 1 || R < 1 || R > 64) {
        fprintf(stderr, "llama_cbench: -p must be 1..2048, -d 0..2048, -n and -t >= 1, -r 1..64\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[1]);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    if (!model) {
        fprintf(stderr, "llama_cbench: cannot load %s\n", argv[2]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)((P > D ? P : D) + N);
    cp.n_batch = 2048;
    cp.n_ubatch = 512;
    cp.n_threads = T;
    cp.n_threads_batch = T;
    cp.type_k = GGML_TYPE_F16;
    cp.type_v = GGML_TYPE_F16;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
    cp.swa_full = false;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "llama_cbench: cannot create a context\n");
        return 1;
    }
    /* a persistent thread pool attached to the context, as llama-bench does (poll 50): without one,
     * ggml makes and joins its threads on every graph, which costs single-token decode ~half */
    ggml_backend_reg_t cpu = ggml_backend_reg_by_name("CPU");
    typedef struct ggml_threadpool *(*tp_new_fn)(struct ggml_threadpool_params *);
    typedef void (*tp_free_fn)(struct ggml_threadpool *);
    tp_new_fn tp_new = cpu ? (tp_new_fn)ggml_backend_reg_get_proc_address(cpu, "ggml_threadpool_new") : NULL;
    tp_free_fn tp_free = cpu ? (tp_free_fn)ggml_backend_reg_get_proc_address(cpu, "ggml_threadpool_free") : NULL;
    if (!tp_new || !tp_free) {
        fprintf(stderr, "llama_cbench: the CPU backend has no ggml_threadpool_new\n");
        return 1;
    }
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(T);
    tpp.poll = 50;
    struct ggml_threadpool *pool = tp_new(&tpp);
    if (!pool) {
        fprintf(stderr, "llama_cbench: cannot make a %d-thread pool\n", T);
        return 1;
    }
    llama_attach_threadpool(ctx, pool, NULL);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    llama_token *toks = malloc((size_t)(P > D ? P : D) * sizeof *toks);
    double pp[64], tg[64], tgd[64];
    srand(1);
    llama_memory_clear(llama_get_memory(ctx), false);
    if (prompt(ctx, vocab, toks, P) || gen(ctx, vocab, 1)) {
        fprintf(stderr, "llama_cbench: warm-up decode failed\n");
        return 1;
    }
    for (int r = 0; r < R; r++) {
        llama_memory_clear(llama_get_memory(ctx), false);
        double t0 = now_s();
        if (prompt(ctx, vocab, toks, P)) {
            fprintf(stderr, "llama_cbench: prompt decode failed\n");
            return 1;
        }
        pp[r] = P / (now_s() - t0);
        llama_memory_clear(llama_get_memory(ctx), false);
        t0 = now_s();
        if (gen(ctx, vocab, N)) {
            fprintf(stderr, "llama_cbench: token decode failed\n");
            return 1;
        }
        tg[r] = N / (now_s() - t0);
        if (D > 0) {
            llama_memory_clear(llama_get_memory(ctx), false);
            if (prompt(ctx, vocab, toks, D)) {
                fprintf(stderr, "llama_cbench: depth prompt decode failed\n");
                return 1;
            }
            t0 = now_s();
            if (gen(ctx, vocab, N)) {
                fprintf(stderr, "llama_cbench: token decode at depth failed\n");
                return 1;
            }
            tgd[r] = N / (now_s() - t0);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"pp_tok_s\":%.2f,\"tg_tok_s\":%.2f,", median(pp, R), median(tg, R));
    print_runs("pp_runs", pp, R);
    print_runs("tg_runs", tg, R);
    if (D > 0) {
        printf("\"tgd_tok_s\":%.2f,", median(tgd, R));
        print_runs("tgd_runs", tgd, R);
    }
    printf("\"depth\":%d,", D);
    printf("\"peak_rss_mib\":%.1f,\"threads\":%d,\"engine\":\"llama.cpp C API (llama-bench procedure), %s\"}\n",
           (double)ru.ru_maxrss / 1024.0, T, llama_print_system_info());
    free(toks);
    llama_free(ctx);
    tp_free(pool);
    llama_model_free(model);
    return 0;
}
