/* gram_bench.c: what a json_schema constraint adds to a decode step, single and batched, and what
 * compiling a schema of 100 properties costs. Built by `make build/gram_bench`:
 *
 *   build/gram_bench MODEL.gguf [-t threads] [-b 1,8] [-n steps] [-r rounds] [-s schema.json]
 *
 * For each batch size it decodes `steps` tokens per sequence, twice per round in alternating order
 * (unconstrained, constrained), each from the same freshly prefilled sequences; a step is
 * eng_step + sampling every sequence (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, the
 * server's defaults) and, when constrained, the matcher's check and (when the model's own choice is
 * refused) the full mask. A matcher whose value is complete starts a new value, so every step is
 * constrained. Prints the median step time of each and their ratio, and how often the full mask
 * was needed. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "api/schema.h"
#include "engine/eng.h"
#include "engine/gram.h"
#include "engine/sample.h"

#define MAXB 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *default_schema =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"maxLength\":40},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},"
    "\"email\":{\"type\":\"string\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":20},\"maxItems\":5},"
    "\"address\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
    "\"zip\":{\"type\":\"string\",\"maxLength\":10}},\"required\":[\"city\"]},"
    "\"score\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1},"
    "\"status\":{\"enum\":[\"active\",\"inactive\",\"banned\"]},"
    "\"verified\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"age\",\"status\"]}";

static gram *compile_schema(const char *text, char *err, size_t errlen) {
    cJSON *j = cJSON_Parse(text);
    if (!j) {
        snprintf(err, errlen, "schema is not JSON");
        return NULL;
    }
    gram *g = gram_new(false);
    int root = g ? schema_compile(g, j, "#", err, errlen) : -1;
    if (root >= 0 && gram_finish(g, root, err, errlen) < 0) root = -1;
    cJSON_Delete(j);
    if (root < 0) {
        gram_free(g);
        return NULL;
    }
    return g;
}

/* CPU time of this thread: the sampling part runs on it alone, so other load does not count. */
static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int dbl_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct run {
    double step_ms;   /* median step */
    double sample_ms; /* mean CPU time of the sampling part of a step (all sequences) */
    long kept, masked;
} run;

/* One run: B fresh sequences prefilled with prompt, `steps` decode steps; constrained or not. */
static int one_run(eng *e, const gram *g, const gram_vocab *gv, int B, int steps,
                   const int32_t *prompt, int n_prompt, float *logits, int32_t *ids, run *out) {
    char err[256];
    int V = eng_n_vocab(e);
    eng_seq *seq[MAXB] = {0};
    sampler *smp[MAXB] = {0};
    gram_matcher *gm[MAXB] = {0};
    int32_t last[MAXB];
    eng_batch_item items[MAXB];
    double *times = malloc((size_t)steps * sizeof *times);
    int rc = -1;
    sample_params sp;
    sample_params_default(&sp);
    for (int b = 0; b < B; b++) {
        sp.seed = 1234 + (uint64_t)b;
        if (eng_seq_new(e, n_prompt + steps + 8, &seq[b], err, sizeof err) < 0 ||
            sampler_new(&smp[b], V, &sp, err, sizeof err) < 0 ||
            (g && gram_matcher_new(&gm[b], g, gv, err, sizeof err) < 0)) {
            fprintf(stderr, "setup: %s\n", err);
            goto done;
        }
        items[b] =
            (eng_batch_item){seq[b], prompt, n_prompt, ENG_LOGITS_LAST, logits + (size_t)b * V};
        eng_batch pb = {&items[b], 1};
        if (eng_step(e, &pb, err, sizeof err) < 0) {
            fprintf(stderr, "prefill: %s\n", err);
            goto done;
        }
    }
    for (int s = 0; s < steps; s++) {
        double t0 = now();
        if (s > 0) {
            for (int b = 0; b < B; b++)
                items[b] =
                    (eng_batch_item){seq[b], &last[b], 1, ENG_LOGITS_LAST, logits + (size_t)b * V};
            eng_batch bt = {items, B};
            if (eng_step(e, &bt, err, sizeof err) < 0) {
                fprintf(stderr, "step: %s\n", err);
                goto done;
            }
        }
        double ts = thread_cpu();
        for (int b = 0; b < B; b++) {
            const float *lg = logits + (size_t)b * V;
            int32_t id;
            if (gm[b]) {
                id = gram_sample(gm[b], smp[b], lg, ids, NULL);
                if (id < 0 || !gram_matcher_accept(gm[b], id)) {
                    fprintf(stderr, "constrained sampling failed\n");
                    goto done;
                }
                if (id == eng_eos(e) || gram_matcher_finished(gm[b])) { /* next value */
                    long k, m;
                    gram_matcher_stats(gm[b], &k, &m);
                    out->kept += k;
                    out->masked += m;
                    gram_matcher_free(gm[b]);
                    gm[b] = NULL;
                    if (gram_matcher_new(&gm[b], g, gv, err, sizeof err) < 0) goto done;
                }
            } else {
                id = sampler_sample(smp[b], lg, NULL);
            }
            sampler_accept(smp[b], id);
            last[b] = id;
        }
        times[s] = now() - t0;
        if (s > 0) out->sample_ms += (thread_cpu() - ts) * 1e3 / (steps - 1);
    }
    for (int b = 0; b < B; b++)
        if (gm[b]) {
            long k, m;
            gram_matcher_stats(gm[b], &k, &m);
            out->kept += k;
            out->masked += m;
        }
    qsort(times + 1, (size_t)steps - 1, sizeof *times, dbl_cmp); /* step 0 has no forward */
    out->step_ms = times[1 + (steps - 1) / 2] * 1e3;
    rc = 0;
done:
    for (int b = 0; b < B; b++) {
        eng_seq_free(seq[b]);
        sampler_free(smp[b]);
        gram_matcher_free(gm[b]);
    }
    free(times);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s MODEL.gguf [-t threads] [-b 1,8] [-n steps] [-r rounds] "
                "[-s schema.json]\n",
                argv[0]);
        return 2;
    }
    const char *model = argv[1], *batches = "1,8", *schema_file = NULL;
    int threads = 0, steps = 64, rounds = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-t"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-b"))
            batches = argv[i + 1];
        else if (!strcmp(argv[i], "-n"))
            steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r"))
            rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-s"))
            schema_file = argv[i + 1];
    }
    if (steps < 4) steps = 4;
    char err[512];
    char *schema = (char *)default_schema;
    if (schema_file) {
        FILE *f = fopen(schema_file, "rb");
        if (!f) {
            perror(schema_file);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        schema = calloc((size_t)n + 1, 1);
        if (fread(schema, 1, (size_t)n, f) != (size_t)n) return 1;
        fclose(f);
    }

    /* compile time of a 100-property schema (median of 51) */
    {
        char *s = malloc(1 << 16);
        size_t n = 0;
        n += (size_t)snprintf(s + n, 65536 - n, "{\"type\":\"object\",\"properties\":{");
        for (int i = 0; i < 100; i++)
            n += (size_t)snprintf(
                s + n, 65536 - n,
                "%s\"property_%d\":{\"type\":\"%s\",\"description\":\"field %d\"}", i ? "," : "", i,
                i % 4 == 0   ? "string"
                : i % 4 == 1 ? "integer"
                : i % 4 == 2 ? "boolean"
                             : "number",
                i);
        n += (size_t)snprintf(s + n, 65536 - n, "},\"required\":[");
        for (int i = 0; i < 100; i += 2)
            n += (size_t)snprintf(s + n, 65536 - n, "%s\"property_%d\"", i ? "," : "", i);
        snprintf(s + n, 65536 - n, "],\"additionalProperties\":false}");
        double t[51];
        for (int r = 0; r < 51; r++) {
            double t0 = now();
            cJSON *j = cJSON_Parse(s);
            gram *g = gram_new(false);
            int root = schema_compile(g, j, "#", err, sizeof err);
            if (root < 0 || gram_finish(g, root, err, sizeof err) < 0) {
                fprintf(stderr, "compile: %s\n", err);
                return 1;
            }
            gram_free(g);
            cJSON_Delete(j);
            t[r] = now() - t0;
        }
        qsort(t, 51, sizeof *t, dbl_cmp);
        printf("compile (JSON parse + schema compile + finish), 100 properties: median %.3f ms, "
               "max %.3f ms\n",
               t[25] * 1e3, t[50] * 1e3);
        free(s);
    }

    eng_params ep;
    eng_params_default(&ep);
    ep.n_threads = threads;
    eng *e = NULL;
    if (eng_new(&e, model, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", model, err);
        return 1;
    }
    gram *g = compile_schema(schema, err, sizeof err);
    if (!g) {
        fprintf(stderr, "schema: %s\n", err);
        return 1;
    }
    gram_vocab *gv = NULL;
    double tv = now();
    if (gram_vocab_new(&gv, eng_tok(e), err, sizeof err) < 0) {
        fprintf(stderr, "vocab: %s\n", err);
        return 1;
    }
    tv = now() - tv;
    int V = eng_n_vocab(e);
    printf("model %s, vocab %d (trie built in %.1f ms), threads %d, %d steps, %d rounds\n", model,
           V, tv * 1e3, threads, steps, rounds);
    const char *ptext =
        "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n<|im_start|>assistant\n";
    int32_t prompt[256];
    int n_prompt = tok_encode(eng_tok(e), ptext, strlen(ptext), true, true, prompt, 256);
    float *logits = malloc((size_t)MAXB * V * sizeof *logits);
    int32_t *ids = malloc((size_t)V * sizeof *ids);
    for (const char *p = batches; *p;) {
        int B = atoi(p);
        if (B < 1 || B > MAXB) break;
        double off[32], on[32], soff = 0, son = 0;
        long kept = 0, masked = 0;
        for (int r = 0; r < rounds && r < 32; r++) {
            run a = {0}, b = {0};
            bool con_first = r % 2;
            if (one_run(e, con_first ? g : NULL, gv, B, steps, prompt, n_prompt, logits, ids,
                        con_first ? &b : &a) < 0 ||
                one_run(e, con_first ? NULL : g, gv, B, steps, prompt, n_prompt, logits, ids,
                        con_first ? &a : &b) < 0)
                return 1;
            off[r] = a.step_ms;
            on[r] = b.step_ms;
            soff += a.sample_ms / rounds;
            son += b.sample_ms / rounds;
            kept += b.kept;
            masked += b.masked;
        }
        int R = rounds < 32 ? rounds : 32;
        qsort(off, (size_t)R, sizeof *off, dbl_cmp);
        qsort(on, (size_t)R, sizeof *on, dbl_cmp);
        printf("batch %d: decode step %.3f ms unconstrained, %.3f ms with json_schema: x%.3f "
               "(%+.1f%%); sampling (thread CPU time) %.3f ms vs %.3f ms a step: the constraint "
               "adds %.3f ms = "
               "%.1f%% of the unconstrained step; model's own token kept %ld times, full mask "
               "%ld times\n",
               B, off[R / 2], on[R / 2], on[R / 2] / off[R / 2], (on[R / 2] / off[R / 2] - 1) * 100,
               soff, son, son - soff, (son - soff) / off[R / 2] * 100, kept, masked);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    free(logits);
    free(ids);
    gram_vocab_free(gv);
    gram_free(g);
    eng_free(e);
    return 0;
}
