/* eng_bench.c: by-hand timing of the engine's prefill, decode and batched decode, and peak RSS.
 *
 *   make build/lfm2 && gcc -std=c11 -O2 -D_GNU_SOURCE -I. -pthread -o build/eng_bench \
 *       tests/bench/eng_bench.c $(ls build/engine/[a-z]*.o build/quant/[a-z]*.o) \
 *       -lopenblas -lpcre2-8 -lm
 *   env -u OPENBLAS_CORETYPE build/eng_bench MODEL.gguf [threads] [prompt] [gen] [batch]
 * Prints load time, peak RSS after load (vs file size), prefill tok/s, single-sequence decode
 * tok/s and aggregate tok/s of `batch` sequences decoding together (medians of 3 runs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include "engine/eng.h"
#include "engine/kern.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double rss_peak_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: eng_bench MODEL [threads] [prompt] [gen] [batch]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 0, P = argc > 3 ? atoi(argv[3]) : 128,
        N = argc > 4 ? atoi(argv[4]) : 64, B = argc > 5 ? atoi(argv[5]) : 8;
    struct stat st;
    if (stat(argv[1], &st)) {
        perror(argv[1]);
        return 1;
    }
    eng_params ep;
    eng_params_default(&ep);
    if (threads > 0) ep.n_threads = threads;
    ep.max_batch_tokens = P > B ? P : B;
    char err[512];
    eng *e;
    double t0 = now();
    if (eng_new(&e, argv[1], &ep, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    double t_load = now() - t0, rss_load = rss_peak_mib();
    printf("kernel %s, threads %d, load %.2f s, peak RSS after load %.1f MiB = %.3fx file (%.1f "
           "MiB)\n",
           kern_name(), ep.n_threads, t_load, rss_load, rss_load / (st.st_size / 1048576.0),
           st.st_size / 1048576.0);
    int V = eng_n_vocab(e);
    float *logits = malloc((size_t)B * V * sizeof(float));
    int32_t *ids = malloc((size_t)(P + N) * sizeof(int32_t));
    for (int i = 0; i < P + N; i++)
        ids[i] = 16 + (int32_t)((i * 2654435761u) % (unsigned)(V - 16));
    double pp[3], tg[3], bt[3], tg_cpu[3], pp_cpu[3];
    for (int rep = 0; rep < 3; rep++) {
        eng_seq *s;
        if (eng_seq_new(e, P + N + 8, &s, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        eng_batch_item it = {s, ids, P, ENG_LOGITS_LAST, logits};
        eng_batch b = {&it, 1};
        t0 = now();
        double cp = cpu_now();
        if (eng_step(e, &b, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        pp[rep] = P / (now() - t0);
        pp_cpu[rep] = (cpu_now() - cp) / P * 1e3;
        t0 = now();
        double c0 = cpu_now();
        for (int i = 0; i < N; i++) {
            eng_batch_item d = {s, ids + P + i, 1, ENG_LOGITS_LAST, logits};
            eng_batch bd = {&d, 1};
            if (eng_step(e, &bd, err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
        }
        tg[rep] = N / (now() - t0);
        tg_cpu[rep] = (cpu_now() - c0) / N * 1e3;
        eng_seq_free(s);
        /* batched decode: B sequences, one token each per step */
        eng_seq *seqs[64];
        eng_batch_item items[64];
        int nb = B > 64 ? 64 : B;
        for (int j = 0; j < nb; j++) {
            if (eng_seq_new(e, N + 8, &seqs[j], err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
        }
        t0 = now();
        for (int i = 0; i < N; i++) {
            for (int j = 0; j < nb; j++)
                items[j] = (eng_batch_item){seqs[j], ids + (i + 7 * j) % (P + N - 1), 1,
                                            ENG_LOGITS_LAST, logits + (size_t)j * V};
            eng_batch bb = {items, nb};
            if (eng_step(e, &bb, err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
        }
        bt[rep] = (double)N * nb / (now() - t0);
        for (int j = 0; j < nb; j++)
            eng_seq_free(seqs[j]);
    }
    qsort(pp, 3, sizeof(double), cmp_d);
    qsort(tg, 3, sizeof(double), cmp_d);
    qsort(bt, 3, sizeof(double), cmp_d);
    qsort(tg_cpu, 3, sizeof(double), cmp_d);
    qsort(pp_cpu, 3, sizeof(double), cmp_d);
    printf("prefill %d: %.1f tok/s [%.1f..%.1f], CPU time %.2f ms/token\n", P, pp[1], pp[0], pp[2],
           pp_cpu[1]);
    printf("decode %d: %.1f tok/s [%.1f..%.1f], CPU time %.2f ms/token (all threads; on a loaded "
           "machine the fair measure)\n",
           N, tg[1], tg[0], tg[2], tg_cpu[1]);
    printf("batched decode x%d: %.1f tok/s aggregate [%.1f..%.1f] = %.2fx single\n", B, bt[1],
           bt[0], bt[2], bt[1] / tg[1]);
    printf("peak RSS overall %.1f MiB\n", rss_peak_mib());
    free(logits);
    free(ids);
    eng_free(e);
    return 0;
}
