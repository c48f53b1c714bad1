/* test_eng.c: engine fidelity against oracle goldens (teacher-forced), batch step and sequence state. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/attn.h"
#include "engine/eng.h"
#include "engine/gguf.h"
#include "engine/sample.h"
#include "quant/quant.h"
#include "server/cmd/cli.h"
#include "tests/check.h"

#define GOLD_DIR "tests/data/fidelity"
#define MAX_PATHS 8
#define MAX_STEPS 64
#define GTOP 10 /* log-probs stored per step */
#define CMP 5   /* compared per step: the exact top 5 */

static char tmpdir[512];

typedef struct gpath {
    int n_prompt, n;
    int32_t *ids;
    int32_t e_id[MAX_STEPS][GTOP]; /* exact top-10 */
    float e_lp[MAX_STEPS][GTOP];
    int32_t q_arg[MAX_STEPS];      /* oracle on the quantized file: argmax */
    float q_lp[MAX_STEPS][GTOP];   /* and log-probs at the exact top-10 ids */
} gpath;

typedef struct golden {
    char mk[512];   /* mkmodel arguments, or "" */
    char file[512]; /* committed model file, or "" */
    long size;
    int f32, n_paths;
    gpath p[MAX_PATHS];
} golden;

static void golden_free(golden *g) {
    for (int i = 0; i < g->n_paths; i++) free(g->p[i].ids);
    free(g);
}

/* Parses tests/data/fidelity/<name>.txt (see tests/oracle/gen_fidelity_golden.mjs). */
static golden *golden_load(const char *name) {
    char fn[600], line[1 << 16];
    snprintf(fn, sizeof fn, GOLD_DIR "/%s.txt", name);
    FILE *f = fopen(fn, "r");
    if (!f) {
        fprintf(stderr, "%s: missing golden (run node tests/oracle/gen_fidelity_golden.mjs %s)\n", fn,
                name);
        return NULL;
    }
    golden *g = calloc(1, sizeof *g);
    gpath *cur = NULL;
    int ok = 1;
    while (ok && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        int k, s, a, b;
        if (line[0] == '#' || !line[0]) continue;
        if (!strncmp(line, "mkmodel ", 8)) snprintf(g->mk, sizeof g->mk, "%.500s", line + 8);
        else if (!strncmp(line, "file ", 5)) snprintf(g->file, sizeof g->file, "%.500s", line + 5);
        else if (sscanf(line, "size %ld", &g->size) == 1 || sscanf(line, "f32 %d", &g->f32) == 1 ||
                 !strncmp(line, "prompts ", 8)) {
        } else if (sscanf(line, "path %d %d %d", &k, &a, &b) == 3) {
            if (k != g->n_paths || k >= MAX_PATHS || b - a > MAX_STEPS || a < 1) {
                ok = 0;
                break;
            }
            cur = &g->p[g->n_paths++];
            cur->n_prompt = a, cur->n = b;
            cur->ids = malloc((size_t)b * sizeof(int32_t));
            char *q = fgets(line, sizeof line, f) ? line : NULL;
            for (int i = 0; ok && i < b; i++) {
                char *end;
                long v = q ? strtol(q, &end, 10) : 0;
                if (!q || end == q) ok = 0;
                else cur->ids[i] = (int32_t)v, q = end;
            }
        } else if (cur && (line[0] == 'e' || line[0] == 'q') && sscanf(line + 2, "%d", &s) == 1 &&
                   s >= 0 && s < MAX_STEPS) {
            char *q = strchr(line + 2, ' ');
            if (line[0] == 'q') cur->q_arg[s] = (int32_t)strtol(q, &q, 10);
            for (int i = 0; i < GTOP && q; i++) {
                if (line[0] == 'e') {
                    cur->e_id[s][i] = (int32_t)strtol(q, &q, 10);
                    q = strchr(q, ':');
                    if (!q) ok = 0;
                    else cur->e_lp[s][i] = strtof(q + 1, &q);
                } else {
                    cur->q_lp[s][i] = strtof(q, &q);
                }
            }
            if (!q) ok = 0;
        } else {
            ok = 0;
        }
    }
    fclose(f);
    if (!ok || !g->n_paths || (!g->mk[0] && !g->file[0])) {
        fprintf(stderr, "%s: malformed golden near '%.80s'\n", fn, line);
        golden_free(g);
        return NULL;
    }
    return g;
}

static void remove_models(void) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -f '%s'/*.gguf", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not clean %s\n", tmpdir);
}

/* Writes a mkmodel file from its argument string into tmpdir; returns the path (static). */
static const char *make_model(const char *name, const char *args) {
    static char out[700];
    char buf[512], *argv[40];
    int argc = 0;
    snprintf(out, sizeof out, "%s/%s.gguf", tmpdir, name);
    if (access(out, R_OK) == 0) return out;
    remove_models(); /* keep one generated model on disk at a time (350m F32 is 1.4 GB) */
    snprintf(buf, sizeof buf, "%s", args);
    argv[argc++] = "mkmodel";
    for (char *t = strtok(buf, " "); t && argc < 36; t = strtok(NULL, " ")) argv[argc++] = t;
    argv[argc++] = "-o";
    argv[argc++] = out;
    argv[argc] = NULL;
    fflush(stdout);
    int saved = dup(1); /* mkmodel may print a summary: keep test output readable */
    FILE *nul = freopen("/dev/null", "w", stdout);
    int rc = cmd_mkmodel(argc, argv);
    fflush(stdout);
    if (nul) dup2(saved, 1);
    close(saved);
    if (rc != 0) {
        fprintf(stderr, "mkmodel %s failed (%d)\n", args, rc);
        return NULL;
    }
    return out;
}

/* Teacher-forced log-probs along one path: prompt minus its last token in one step, the rest in a
 * second step with logits everywhere. logits: [n - n_prompt + 1 - 1... ] = [steps][V]. */
static int forced(eng *e, const gpath *p, float *logits, char *err, size_t errlen) {
    eng_seq *s;
    int rc = eng_seq_new(e, p->n + 8, &s, err, errlen);
    if (rc < 0) return rc;
    int pre = p->n_prompt - 1, steps = p->n - p->n_prompt;
    if (pre > 0) {
        eng_batch_item it = {s, p->ids, pre, ENG_LOGITS_NONE, NULL};
        eng_batch b = {&it, 1};
        if ((rc = eng_step(e, &b, err, errlen)) < 0) goto out;
    }
    eng_batch_item it = {s, p->ids + pre, steps, ENG_LOGITS_ALL, logits};
    eng_batch b = {&it, 1};
    rc = eng_step(e, &b, err, errlen);
out:
    eng_seq_free(s);
    return rc;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Logsumexp of a row. */
static double lse(const float *x, int n) {
    float mx = x[argmax(x, n)];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

static double lp_gap(const float *a, const float *b, int V);
static int router_check(const char *name, eng *e, const golden *g);

static void fidelity(const char *name) {
    golden *g = golden_load(name);
    CHECK(g != NULL);
    if (!g) return;
    char path[700], err[512];
    const char *file = path;
    if (g->mk[0]) file = make_model(name, g->mk);
    else snprintf(path, sizeof path, "%s", g->file);
    CHECK(file != NULL);
    if (!file) goto out;
    FILE *f = fopen(file, "rb");
    long size = -1;
    if (f && fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (f) fclose(f);
    if (size != g->size)
        fprintf(stderr, "%s: model file is %ld bytes, golden says %ld: mkmodel changed? regenerate "
                "the golden\n", name, size, g->size);
    CHECK_EQ_INT(size, g->size);
    eng *e;
    eng_params ep;
    eng_params_default(&ep);
    ep.max_batch_tokens = 256;
    if (eng_new(&e, file, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        CHECK(!"eng_new");
        goto out;
    }
    const int V = eng_n_vocab(e);
    float *logits = malloc((size_t)MAX_STEPS * V * sizeof(float));
    double ours_max = 0, ours_sum = 0, orc_max = 0, orc_sum = 0;
    long n_cmp = 0;
    int ours_dep = 0, orc_dep = 0, hard_miss = 0, n_steps = 0;
    for (int k = 0; k < g->n_paths; k++) {
        const gpath *p = &g->p[k];
        if (forced(e, p, logits, err, sizeof err) < 0) {
            fprintf(stderr, "%s path %d: %s\n", name, k, err);
            CHECK(!"eng_step");
            continue;
        }
        if (k == 0) { /* the same path token by token (decode path) == one prefill step */
            float *one = malloc((size_t)V * sizeof(float));
            eng_seq *s1;
            double worst = 0, sum = 0;
            int n_one = 0;
            CHECK(eng_seq_new(e, p->n + 8, &s1, err, sizeof err) == 0);
            for (int i = 0; i < p->n - 1; i++) {
                eng_batch_item it = {s1, p->ids + i, 1, ENG_LOGITS_LAST, one};
                eng_batch b1 = {&it, 1};
                if (eng_step(e, &b1, err, sizeof err) < 0) {
                    CHECK(!"token-by-token step");
                    break;
                }
                if (i < p->n_prompt - 1) continue;
                double gap = lp_gap(logits + (size_t)(i - (p->n_prompt - 1)) * V, one, V);
                worst = fmax(worst, gap);
                sum += gap;
                n_one++;
            }
            printf("fidelity %-14s prefill vs token-by-token on path 0: max %.2e mean %.2e\n", name,
                   worst, sum / (n_one ? n_one : 1));
            CHECK(worst <= 0.02);
            CHECK(sum / (n_one ? n_one : 1) <= 0.003);
            eng_seq_free(s1);
            free(one);
        }
        for (int s = 0; s < p->n - p->n_prompt; s++, n_steps++) {
            const float *l = logits + (size_t)s * V;
            double z = lse(l, V);
            for (int i = 0; i < CMP; i++) {
                double gap = fabs((l[p->e_id[s][i]] - z) - p->e_lp[s][i]);
                ours_max = fmax(ours_max, gap);
                ours_sum += gap;
                if (!g->f32) {
                    double og = fabs((double)p->q_lp[s][i] - p->e_lp[s][i]);
                    orc_max = fmax(orc_max, og);
                    orc_sum += og;
                }
                n_cmp++;
            }
            int am = argmax(l, V);
            ours_dep += am != p->e_id[s][0];
            orc_dep += !g->f32 && p->q_arg[s] != p->e_id[s][0];
            if (p->e_lp[s][0] - p->e_lp[s][1] >= 0.01 && am != p->e_id[s][0]) hard_miss++;
        }
    }
    double ours_mean = ours_sum / (double)(n_cmp ? n_cmp : 1);
    double orc_mean = orc_sum / (double)(n_cmp ? n_cmp : 1);
    printf("fidelity %-14s %d steps: ours max %.5f mean %.6f argmax-departures %d", name, n_steps,
           ours_max, ours_mean, ours_dep);
    if (!g->f32)
        printf(" | oracle on the file: max %.5f mean %.6f departures %d", orc_max, orc_mean, orc_dep);
    printf("\n");
    CHECK_EQ_INT(n_steps, g->n_paths * MAX_STEPS);
    if (g->f32) {
        CHECK(ours_max <= 0.02);
        CHECK(ours_mean <= 0.003);
        CHECK_EQ_INT(hard_miss, 0);
    } else {
        CHECK(ours_max <= fmax(1.5 * orc_max, 0.02));
        CHECK(ours_mean <= fmax(1.5 * orc_mean, 0.003));
        CHECK(ours_dep <= 1.5 * orc_dep + 1);
    }
    if (strstr(name, "moe") && g->f32) CHECK(router_check(name, e, g) >= 60);
    free(logits);
    eng_free(e);
out:
    golden_free(g);
}

/* ---- MoE router choices against the oracle's (tests/data/fidelity/<name>.router.txt) ---- */

#define RT_MAX_LAYERS 8
#define RT_MAX_K 8
/* what the engine chose for each batch row of a step, per MoE layer (sorted expert ids) */
typedef struct route_log {
    int n_rows;
    int sel[RT_MAX_LAYERS][MAX_STEPS + 128][RT_MAX_K];
    int k;
} route_log;

static void route_hook(void *ctx, int layer, int row, const int *experts, const float *w, int k) {
    route_log *r = ctx;
    (void)w;
    if (layer >= RT_MAX_LAYERS || row >= MAX_STEPS + 128 || k > RT_MAX_K) return;
    r->k = k;
    for (int j = 0; j < k; j++)
        r->sel[layer][row][j] = experts[j];
    for (int a = 1; a < k; a++) /* as a set: sorted */
        for (int b = a; b > 0 && r->sel[layer][row][b - 1] > r->sel[layer][row][b]; b--) {
            int t = r->sel[layer][row][b];
            r->sel[layer][row][b] = r->sel[layer][row][b - 1];
            r->sel[layer][row][b - 1] = t;
        }
}

#define NEAR_TIE 1e-4 /* score margin (p + bias) below which a choice may go either way */

/* Runs each golden path's tokens in one step with the router observed and compares the chosen
 * sets with the oracle's where the margin between the k-th and (k+1)-th score is not a near tie.
 * Returns the number of choices compared (mismatches are checks). */
static int router_check(const char *name, eng *e, const golden *g) {
    char fn[600], line[512], err[512];
    snprintf(fn, sizeof fn, GOLD_DIR "/%s.router.txt", name);
    FILE *f = fopen(fn, "r");
    if (!f) return -1;
    route_log *rl = calloc(1, sizeof *rl);
    eng_set_router_hook(e, route_hook, rl);
    int cur_path = -1, compared = 0, ties = 0, miss = 0;
    while (fgets(line, sizeof line, f)) {
        int L, k, pos, n = 0;
        char sel[128];
        double margin;
        if (line[0] != 'r' || sscanf(line, "r %d %d %d %127s %lf", &L, &k, &pos, sel, &margin) != 5)
            continue;
        CHECK(k < g->n_paths && L < RT_MAX_LAYERS && pos < g->p[k].n);
        if (k >= g->n_paths || L >= RT_MAX_LAYERS || pos >= g->p[k].n) break;
        if (k != cur_path) { /* run path k: rows = positions */
            eng_seq *s;
            CHECK(eng_seq_new(e, g->p[k].n + 8, &s, err, sizeof err) == 0);
            eng_batch_item it = {s, g->p[k].ids, g->p[k].n - 1, ENG_LOGITS_NONE, NULL};
            eng_batch b = {&it, 1};
            CHECK(eng_step(e, &b, err, sizeof err) == 0);
            eng_seq_free(s);
            cur_path = k;
        }
        int want[RT_MAX_K];
        char shown[128]; /* strtok cuts sel */
        snprintf(shown, sizeof shown, "%s", sel);
        for (char *q = strtok(sel, ","); q && n < RT_MAX_K; q = strtok(NULL, ","))
            want[n++] = atoi(q);
        CHECK_EQ_INT(n, rl->k);
        for (int a = 1; a < n; a++)
            for (int b2 = a; b2 > 0 && want[b2 - 1] > want[b2]; b2--) {
                int t = want[b2];
                want[b2] = want[b2 - 1];
                want[b2 - 1] = t;
            }
        if (margin < NEAR_TIE) {
            ties++;
            continue;
        }
        compared++;
        if (memcmp(want, rl->sel[L][pos], (size_t)n * sizeof(int))) {
            miss++;
            fprintf(stderr,
                    "%s: layer %d path %d pos %d: oracle chose %s (margin %.2e), lfm2 differs\n",
                    name, L, k, pos, shown, margin);
        }
    }
    fclose(f);
    eng_set_router_hook(e, NULL, NULL);
    free(rl);
    printf("router %-14s %d choices equal to the oracle's, %d mismatches, %d near ties skipped\n",
           name, compared - miss, miss, ties);
    CHECK_EQ_INT(miss, 0);
    return compared;
}

/* ---- state and batch tests on the tiny model ---- */

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* Largest log-prob gap over the top-5 of a, between rows a and b (F32 fidelity measure). */
static double lp_gap(const float *a, const float *b, int V) {
    int32_t id[CMP];
    float lp[CMP];
    sample_top_logprobs(a, V, CMP, id, lp);
    double zb = lse(b, V), m = 0;
    for (int i = 0; i < CMP; i++) m = fmax(m, fabs(lp[i] - (b[id[i]] - zb)));
    return m;
}

static int step1(eng *e, eng_seq *s, const int32_t *ids, int n, int mode, float *logits) {
    char err[512];
    eng_batch_item it = {s, ids, n, mode, logits};
    eng_batch b = {&it, 1};
    int rc = eng_step(e, &b, err, sizeof err);
    if (rc < 0) fprintf(stderr, "eng_step: %s\n", err);
    return rc;
}

static void test_state(const char *file) {
    char err[512];
    eng *e;
    eng_params ep;
    eng_params_default(&ep);
    ep.n_restore = 6;
    ep.max_batch_tokens = 64;
    if (eng_new(&e, file, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        CHECK(!"eng_new");
        return;
    }
    const int V = eng_n_vocab(e), N = 40;
    const lfm2_hparams *hp = eng_hparams(e);
    int32_t ids[40];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
    float *all = malloc((size_t)N * V * sizeof(float)), *one = malloc((size_t)N * V * sizeof(float));
    float *x = malloc((size_t)V * sizeof(float)), *y = malloc((size_t)V * sizeof(float));

    /* prefill in one step == token by token */
    eng_seq *a, *b2;
    CHECK(eng_seq_new(e, 64, &a, err, sizeof err) == 0);
    CHECK(eng_seq_new(e, 64, &b2, err, sizeof err) == 0);
    CHECK(step1(e, a, ids, N, ENG_LOGITS_ALL, all) == 0);
    CHECK_EQ_INT(eng_seq_pos(a), N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        CHECK(step1(e, b2, ids + i, 1, ENG_LOGITS_LAST, one + (size_t)i * V) == 0);
        worst = fmax(worst, lp_gap(all + (size_t)i * V, one + (size_t)i * V, V));
    }
    printf("prefill vs token-by-token: max top-5 log-prob gap %.2e\n", worst);
    CHECK(worst <= 1e-3);

    /* a new sequence takes a freed one's buffers (kept for reuse): it computes as a fresh one,
     * bit for bit, whatever the old one held */
    int32_t rev[20];
    for (int i = 0; i < 20; i++) rev[i] = ids[N - 1 - i];
    CHECK(step1(e, b2, rev, 20, ENG_LOGITS_NONE, NULL) == 0);
    eng_seq_free(b2);
    CHECK(eng_seq_new(e, 64, &b2, err, sizeof err) == 0);
    CHECK_EQ_INT(eng_seq_pos(b2), 0);
    CHECK(step1(e, b2, ids, N, ENG_LOGITS_ALL, one) == 0);
    CHECK(max_abs_diff(one, all, (size_t)N * V) == 0);

    /* truncate back and re-feed == original */
    CHECK_EQ_INT(eng_seq_min_restorable(a), N - 6);
    CHECK(eng_seq_truncate(a, N - 4, err, sizeof err) == 0);
    CHECK_EQ_INT(eng_seq_pos(a), N - 4);
    CHECK(step1(e, a, ids + N - 4, 4, ENG_LOGITS_ALL, one) == 0);
    CHECK(max_abs_diff(one, all + (size_t)(N - 4) * V, (size_t)4 * V) <= 1e-3);
    int rc = eng_seq_truncate(a, N - 10, err, sizeof err); /* conv state no longer kept */
    CHECK_EQ_INT(rc, ENG_ESTATE);
    CHECK(strstr(err, "restorable") != NULL);
    CHECK_EQ_INT(eng_seq_pos(a), N);
    CHECK(eng_seq_truncate(a, N + 1, err, sizeof err) == ENG_EINVAL);
    CHECK(eng_seq_truncate(a, 0, err, sizeof err) == 0); /* back to empty always works */
    CHECK(step1(e, a, ids, 5, ENG_LOGITS_LAST, x) == 0);
    CHECK(max_abs_diff(x, all + (size_t)4 * V, V) <= 1e-3);

    /* fork: the child continues exactly like its parent, and they are independent */
    CHECK(step1(e, a, ids + 5, 20, ENG_LOGITS_NONE, NULL) == 0);
    eng_seq *c;
    CHECK(eng_seq_fork(a, -1, 0, &c, err, sizeof err) == 0);
    CHECK_EQ_INT(eng_seq_pos(c), 25);
    CHECK(step1(e, c, ids + 25, 3, ENG_LOGITS_LAST, y) == 0);
    CHECK(step1(e, a, ids + 25, 3, ENG_LOGITS_LAST, x) == 0);
    CHECK(max_abs_diff(x, y, V) == 0);
    CHECK(max_abs_diff(x, all + (size_t)27 * V, V) <= 1e-3);
    int32_t other = 5;
    CHECK(step1(e, c, &other, 1, ENG_LOGITS_LAST, y) == 0); /* diverge the child */
    CHECK(step1(e, a, ids + 28, 1, ENG_LOGITS_LAST, x) == 0);
    CHECK(max_abs_diff(x, all + (size_t)28 * V, V) <= 1e-3);
    eng_seq_free(c);
    /* fork of a prefix (within the restorable range) */
    CHECK(eng_seq_fork(a, 27, 48, &c, err, sizeof err) == 0);
    CHECK_EQ_INT(eng_seq_n_ctx(c), 48);
    CHECK(step1(e, c, ids + 27, 2, ENG_LOGITS_LAST, y) == 0);
    CHECK(max_abs_diff(y, all + (size_t)28 * V, V) <= 1e-3);
    eng_seq_free(c);
    CHECK(eng_seq_fork(a, 3, 0, &c, err, sizeof err) == ENG_ESTATE);

    /* one batch mixing a prefill chunk and a decode token == separate steps */
    eng_seq *p, *d;
    CHECK(eng_seq_new(e, 64, &p, err, sizeof err) == 0);
    CHECK(eng_seq_new(e, 64, &d, err, sizeof err) == 0);
    CHECK(step1(e, d, ids, 9, ENG_LOGITS_NONE, NULL) == 0);
    eng_batch_item items[2] = {{d, ids + 9, 1, ENG_LOGITS_LAST, x}, {p, ids, 7, ENG_LOGITS_LAST, y}};
    eng_batch bb = {items, 2};
    CHECK(eng_step(e, &bb, err, sizeof err) == 0);
    CHECK(max_abs_diff(x, all + (size_t)9 * V, V) <= 1e-3);
    CHECK(max_abs_diff(y, all + (size_t)6 * V, V) <= 1e-3);

    /* logits everywhere for two items and last-only for a third, rows spread over output chunks */
    {
        eng_seq *q1, *q2, *q3;
        CHECK(eng_seq_new(e, 64, &q1, err, sizeof err) == 0);
        CHECK(eng_seq_new(e, 64, &q2, err, sizeof err) == 0);
        CHECK(eng_seq_new(e, 64, &q3, err, sizeof err) == 0);
        CHECK(step1(e, q3, ids, 3, ENG_LOGITS_NONE, NULL) == 0);
        float *l1 = malloc((size_t)12 * V * sizeof(float)), *l3 = malloc((size_t)11 * V * sizeof(float));
        eng_batch_item three[3] = {{q1, ids, 12, ENG_LOGITS_ALL, l1},
                                   {q2, ids, 5, ENG_LOGITS_LAST, x},
                                   {q3, ids + 3, 11, ENG_LOGITS_ALL, l3}};
        eng_batch tb = {three, 3};
        CHECK(eng_step(e, &tb, err, sizeof err) == 0);
        CHECK(max_abs_diff(l1, all, (size_t)12 * V) <= 1e-3);
        CHECK(max_abs_diff(x, all + (size_t)4 * V, V) <= 1e-3);
        CHECK(max_abs_diff(l3, all + (size_t)3 * V, (size_t)11 * V) <= 1e-3);
        free(l1);
        free(l3);
        eng_seq_free(q1);
        eng_seq_free(q2);
        eng_seq_free(q3);
    }

    /* errors leave everything unchanged */
    int32_t bad = V;
    items[1].tokens = &bad, items[1].n_tokens = 1;
    CHECK_EQ_INT(eng_step(e, &bb, err, sizeof err), ENG_EINVAL);
    CHECK(strstr(err, "outside") != NULL);
    CHECK_EQ_INT(eng_seq_pos(d), 10);
    CHECK_EQ_INT(eng_seq_pos(p), 7);
    items[1] = items[0]; /* the same sequence twice */
    CHECK_EQ_INT(eng_step(e, &bb, err, sizeof err), ENG_EBATCH);
    CHECK_EQ_INT(eng_seq_pos(d), 10);
    int32_t many[65] = {0};
    CHECK_EQ_INT(step1(e, p, many, 65, ENG_LOGITS_NONE, NULL), ENG_EBATCH); /* > max_batch_tokens */
    eng_seq *small;
    CHECK(eng_seq_new(e, 8, &small, err, sizeof err) == 0);
    CHECK(step1(e, small, ids, 6, ENG_LOGITS_NONE, NULL) == 0);
    eng_batch_item over = {small, ids, 3, ENG_LOGITS_NONE, NULL};
    eng_batch ob = {&over, 1};
    CHECK_EQ_INT(eng_step(e, &ob, err, sizeof err), ENG_ECTX);
    CHECK(strstr(err, "n_ctx 8") != NULL);
    CHECK_EQ_INT(eng_seq_pos(small), 6);
    over.n_tokens = 2;
    CHECK_EQ_INT(eng_step(e, &ob, err, sizeof err), 0); /* exactly full is fine */
    eng_seq_free(small);

    /* the live-sequence limit is an error, not a crash */
    {
        eng_params lp;
        eng_params_default(&lp);
        lp.max_seqs = 2;
        eng *e2;
        eng_seq *u1, *u2, *u3;
        if (eng_new(&e2, file, &lp, err, sizeof err) == 0) {
            CHECK(eng_seq_new(e2, 16, &u1, err, sizeof err) == 0);
            CHECK(eng_seq_fork(u1, -1, 0, &u2, err, sizeof err) == 0);
            CHECK_EQ_INT(eng_seq_new(e2, 16, &u3, err, sizeof err), ENG_ELIMIT);
            CHECK(strstr(err, "max_seqs 2") != NULL);
            eng_seq_free(u2);
            CHECK(eng_seq_new(e2, 16, &u3, err, sizeof err) == 0);
            eng_seq_free(u1);
            eng_seq_free(u3);
            eng_free(e2);
        } else {
            CHECK(!"eng_new max_seqs");
        }
    }

    /* memory: conv ring fixed, KV only for attention layers, linear in n_ctx */
    eng_seq *s1, *s2;
    CHECK(eng_seq_new(e, 100, &s1, err, sizeof err) == 0);
    CHECK(eng_seq_new(e, 300, &s2, err, sizeof err) == 0);
    size_t per_pos = 0;
    for (int l = 0; l < hp->n_layer; l++) per_pos += 2 * (size_t)hp->n_head_kv[l] * hp->head_dim;
    /* K and V as halves (f16, as llama.cpp's cache), + attention scratch: ATTN_MAX_Q scores per
     * position per thread (engine/attn.h) */
    per_pos = per_pos * sizeof(uint16_t) + (size_t)ATTN_MAX_Q * ep.n_threads * sizeof(float);
    CHECK_EQ_INT(eng_seq_bytes(s2) - eng_seq_bytes(s1), 200 * per_pos);
    CHECK(eng_seq_bytes(s1) < 100 * per_pos + 64 * 1024 + (size_t)hp->n_layer * hp->n_embd * 16 * 4);
    eng_seq_free(s1);
    eng_seq_free(s2);

    eng_seq_free(a);
    eng_seq_free(b2);
    eng_seq_free(p);
    eng_seq_free(d);
    free(all);
    free(one);
    free(x);
    free(y);
    eng_free(e);
}

/* A decode step gives the same bits alone or beside 7 others, some of them prefilling (on a
 * quantized model: its kernels quantize each row on its own, so only attention could mix rows). */
static void test_batch_bits(const char *file) {
    char err[512];
    eng *e;
    eng_params ep;
    eng_params_default(&ep);
    if (eng_new(&e, file, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        CHECK(!"eng_new");
        return;
    }
    const int V = eng_n_vocab(e);
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
    float *x = malloc((size_t)V * sizeof(float)), *y = malloc((size_t)V * sizeof(float));
    eng_seq *solo, *twin, *oth[7];
    CHECK(eng_seq_new(e, 64, &solo, err, sizeof err) == 0);
    CHECK(eng_seq_new(e, 64, &twin, err, sizeof err) == 0);
    CHECK(step1(e, solo, ids, 21, ENG_LOGITS_NONE, NULL) == 0);
    CHECK(step1(e, twin, ids, 21, ENG_LOGITS_NONE, NULL) == 0);
    eng_batch_item its[8] = {{twin, ids + 21, 1, ENG_LOGITS_LAST, y}};
    for (int k = 0; k < 7; k++) {
        CHECK(eng_seq_new(e, 64, &oth[k], err, sizeof err) == 0);
        CHECK(step1(e, oth[k], ids + k, 2 + 3 * k, ENG_LOGITS_NONE, NULL) == 0);
        its[1 + k] = (eng_batch_item){oth[k], ids + 5 + k, k % 3 == 0 ? 4 : 1, ENG_LOGITS_NONE, NULL};
    }
    eng_batch eight = {its, 8};
    CHECK(eng_step(e, &eight, err, sizeof err) == 0);
    CHECK(step1(e, solo, ids + 21, 1, ENG_LOGITS_LAST, x) == 0);
    CHECK(memcmp(x, y, (size_t)V * sizeof(float)) == 0);
    /* and a prefill in chunks equals the prefill in one step */
    eng_seq *chunked;
    CHECK(eng_seq_new(e, 64, &chunked, err, sizeof err) == 0);
    CHECK(step1(e, chunked, ids, 9, ENG_LOGITS_NONE, NULL) == 0);
    CHECK(step1(e, chunked, ids + 9, 3, ENG_LOGITS_NONE, NULL) == 0);
    CHECK(step1(e, chunked, ids + 12, 10, ENG_LOGITS_LAST, y) == 0);
    CHECK(memcmp(x, y, (size_t)V * sizeof(float)) == 0);
    eng_seq_free(chunked);
    eng_seq_free(solo);
    eng_seq_free(twin);
    for (int k = 0; k < 7; k++) eng_seq_free(oth[k]);
    free(x);
    free(y);
    eng_free(e);
}

/* Snapshots taken inside a step equal the state of a sequence stepped to that position, and a
 * sequence restored from KV rows + a snapshot continues with the same bits as the original. */
static void test_snapshots(const char *file) {
    char err[512];
    eng *e;
    if (eng_new(&e, file, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        CHECK(!"eng_new");
        return;
    }
    const int V = eng_n_vocab(e);
    const size_t sf = eng_snap_floats(e), kh = eng_kv_halves(e);
    CHECK(sf > 0 && kh > 0);
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
    float *x = malloc((size_t)V * sizeof(float)), *y = malloc((size_t)V * sizeof(float));
    float *snaps = malloc(4 * sf * sizeof(float)), *ref = malloc(sf * sizeof(float));
    uint16_t *kv = malloc(40 * kh * sizeof(uint16_t));
    eng_seq *whole, *part, *back;
    CHECK(eng_seq_new(e, 64, &whole, err, sizeof err) == 0);
    CHECK(step1(e, whole, ids, 3, ENG_LOGITS_NONE, NULL) == 0);
    /* positions 4 (a column from the ring, one from the step), 5, 13 and the step's end 24 */
    const int at[4] = {4, 5, 13, 24};
    eng_batch_item it = {whole, ids + 3, 21, ENG_LOGITS_NONE, NULL};
    eng_batch b = {&it, 1};
    eng_snap_req bad = {at, 4, NULL};
    CHECK_EQ_INT(eng_step_snap(e, &b, &bad, err, sizeof err), ENG_EINVAL); /* no buffer */
    const int late[1] = {25};
    eng_snap_req out = {late, 1, snaps};
    CHECK_EQ_INT(eng_step_snap(e, &b, &out, err, sizeof err), ENG_EINVAL); /* past the step */
    CHECK_EQ_INT(eng_seq_pos(whole), 3);
    eng_snap_req req = {at, 4, snaps};
    CHECK(eng_step_snap(e, &b, &req, err, sizeof err) == 0);
    CHECK(step1(e, whole, ids + 24, 1, ENG_LOGITS_LAST, x) == 0);
    for (int k = 0; k < 4; k++) {
        CHECK(eng_seq_new(e, 64, &part, err, sizeof err) == 0);
        CHECK(step1(e, part, ids, 1, ENG_LOGITS_NONE, NULL) == 0);
        if (at[k] > 1) CHECK(step1(e, part, ids + 1, at[k] - 1, ENG_LOGITS_NONE, NULL) == 0);
        eng_seq_snap(part, ref);
        CHECK(memcmp(ref, snaps + k * sf, sf * sizeof(float)) == 0);
        /* restored at that position from part's KV and the in-step snapshot, then fed the rest */
        CHECK(eng_seq_kv_read(part, at[k], kv, err, sizeof err) == 0);
        CHECK_EQ_INT(eng_seq_kv_read(part, at[k] + 1, kv, err, sizeof err), ENG_EINVAL);
        CHECK(eng_seq_new(e, 64, &back, err, sizeof err) == 0);
        CHECK(eng_seq_restore(back, at[k], kv, at[k], snaps + k * sf, err, sizeof err) == 0);
        CHECK_EQ_INT(eng_seq_pos(back), at[k]);
        CHECK(step1(e, back, ids + at[k], 25 - at[k], ENG_LOGITS_LAST, y) == 0);
        CHECK(memcmp(x, y, (size_t)V * sizeof(float)) == 0);
        eng_seq_free(back);
        eng_seq_free(part);
    }
    CHECK(eng_seq_new(e, 8, &back, err, sizeof err) == 0);
    CHECK_EQ_INT(eng_seq_restore(back, 13, kv, 13, snaps, err, sizeof err), ENG_ECTX);
    CHECK_EQ_INT(eng_seq_restore(back, 13, kv, 12, snaps, err, sizeof err), ENG_EINVAL);
    eng_seq_free(back);
    eng_seq_free(whole);
    free(x);
    free(y);
    free(snaps);
    free(ref);
    free(kv);
    eng_free(e);
}

static void test_bad_files(void) {
    char err[512] = "", path[700];
    eng *e = NULL;
    snprintf(path, sizeof path, "%s/missing.gguf", tmpdir);
    CHECK_EQ_INT(eng_new(&e, path, NULL, err, sizeof err), ENG_EMODEL);
    CHECK(e == NULL && strstr(err, "missing.gguf") != NULL);
    /* a valid GGUF of another architecture */
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    float v[32] = {0};
    int64_t ne[4] = {32, 1, 1, 1};
    gguf_writer_add_tensor(w, "token_embd.weight", 0, 1, ne, v, sizeof v);
    snprintf(path, sizeof path, "%s/llama.gguf", tmpdir);
    CHECK(gguf_writer_write(w, path, err, sizeof err) == 0);
    gguf_writer_free(w);
    err[0] = 0;
    CHECK_EQ_INT(eng_new(&e, path, NULL, err, sizeof err), ENG_EMODEL);
    CHECK(strstr(err, "llama") != NULL);
    printf("non-LFM2 file: %s\n", err);
    w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "lfm2moe");
    gguf_writer_add_tensor(w, "token_embd.weight", 0, 1, ne, v, sizeof v);
    snprintf(path, sizeof path, "%s/moe.gguf", tmpdir);
    CHECK(gguf_writer_write(w, path, err, sizeof err) == 0);
    gguf_writer_free(w);
    err[0] = 0;
    CHECK_EQ_INT(eng_new(&e, path, NULL, err, sizeof err), ENG_EMODEL);
    CHECK(strstr(err, "lfm2moe") != NULL);
    printf("MoE file: %s\n", err);
}

/* A copy of src with a separate output.weight = scale * token_embd (f32): the head must use it. */
static int write_untied(const char *src, const char *dst, float scale) {
    char err[512];
    gguf *g;
    if (gguf_open(&g, src, err, sizeof err) < 0) return -1;
    const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te || te->type != 0) { /* the tiny model is F32 */
        gguf_close(g);
        return -1;
    }
    size_t n = (size_t)(te->ne[0] * te->ne[1]);
    float *out = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) out[i] = ((const float *)te->data)[i] * scale;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_alignment(w, gguf_alignment(g));
    for (int64_t i = 0; i < gguf_n_kv(g); i++) gguf_writer_copy_kv(w, g, i);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
    }
    gguf_writer_add_tensor(w, "output.weight", 0, 2, te->ne, out, n * sizeof(float));
    int rc = gguf_writer_write(w, dst, err, sizeof err);
    if (rc < 0) fprintf(stderr, "write_untied: %s\n", err);
    gguf_writer_free(w);
    free(out);
    gguf_close(g);
    return rc;
}

static void test_untied_head(const char *tiny) {
    char path[700], err[512];
    snprintf(path, sizeof path, "%s/untied.gguf", tmpdir);
    CHECK(write_untied(tiny, path, 2.0f) == 0);
    eng *a, *b;
    if (eng_new(&a, tiny, NULL, err, sizeof err) < 0 || eng_new(&b, path, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        CHECK(!"eng_new untied");
        return;
    }
    const int V = eng_n_vocab(a);
    float *x = malloc((size_t)V * sizeof(float)), *y = malloc((size_t)V * sizeof(float));
    int32_t ids[4] = {1, 100, 200, 300};
    eng_seq *sa, *sb;
    CHECK(eng_seq_new(a, 16, &sa, err, sizeof err) == 0);
    CHECK(eng_seq_new(b, 16, &sb, err, sizeof err) == 0);
    CHECK(step1(a, sa, ids, 4, ENG_LOGITS_LAST, x) == 0);
    CHECK(step1(b, sb, ids, 4, ENG_LOGITS_LAST, y) == 0);
    double worst = 0; /* the separate head is 2x the embedding: logits double */
    for (int i = 0; i < V; i++) worst = fmax(worst, fabs(2.0 * x[i] - y[i]));
    CHECK(worst <= 1e-4);
    CHECK(fabs(x[0]) + fabs(x[1]) > 0);
    eng_seq_free(sa);
    eng_seq_free(sb);
    eng_free(a);
    eng_free(b);
    free(x);
    free(y);
}

/* A copy of src with every tensor dequantized to f32 (quant's to_float): the same weight values,
 * multiplied on the engine's f32 path instead of the repacked one. Returns the number of 2-D
 * quantized tensors of src (the matrices the engine repacks), or -1. */
static int write_f32_twin(const char *src, const char *dst) {
    char err[512];
    gguf *g;
    if (gguf_open(&g, src, err, sizeof err) < 0) {
        fprintf(stderr, "write_f32_twin: %s\n", err);
        return -1;
    }
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_alignment(w, gguf_alignment(g));
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        gguf_writer_copy_kv(w, g, i);
    int64_t nt = gguf_n_tensors(g);
    float **bufs = calloc((size_t)nt, sizeof *bufs);
    int n_quant = 0, rc = 0;
    for (int64_t i = 0; i < nt && rc == 0; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->type == QT_F32) {
            rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
            continue;
        }
        size_t n = (size_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        const qtype_traits *tr = quant_traits(t->type);
        if (!tr || !(bufs[i] = malloc(n * sizeof(float)))) {
            rc = -1;
            break;
        }
        tr->to_float(t->data, bufs[i], (int64_t)n);
        n_quant += t->n_dims == 2 && t->type != QT_F16 && t->type != QT_BF16;
        rc = gguf_writer_add_tensor(w, t->name, QT_F32, t->n_dims, t->ne, bufs[i],
                                    n * sizeof(float));
    }
    if (rc == 0 && (rc = gguf_writer_write(w, dst, err, sizeof err)) < 0)
        fprintf(stderr, "write_f32_twin: %s\n", err);
    gguf_writer_free(w);
    for (int64_t i = 0; i < nt; i++)
        free(bufs[i]);
    free(bufs);
    gguf_close(g);
    return rc < 0 ? -1 : n_quant;
}

/* A vocab larger than 65536 (LFM2 ships 65536; other checkpoints of the family may not): the
 * file loads, a step gives finite logits over every id, ids past 65535 can be fed back. */
static void test_big_vocab(void) {
    const char *f = make_model("bigvocab", "--preset tiny --vocab-size 70000 --hidden 64 --heads 2 "
                                           "--kv-heads 1 --ffn 64 --type q8_0 --seed 3");
    CHECK(f != NULL);
    if (!f) return;
    char err[512];
    eng *e;
    if (eng_new(&e, f, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "bigvocab: %s\n", err);
        CHECK(!"eng_new bigvocab");
        return;
    }
    const int V = eng_n_vocab(e);
    CHECK_EQ_INT(V, 70000);
    float *x = malloc((size_t)V * sizeof(float));
    int32_t ids[3] = {1, 66000, 69999};
    eng_seq *s;
    CHECK(eng_seq_new(e, 16, &s, err, sizeof err) == 0);
    CHECK(step1(e, s, ids, 3, ENG_LOGITS_LAST, x) == 0);
    int finite = 0;
    for (int i = 0; i < V; i++)
        finite += isfinite(x[i]) != 0;
    CHECK_EQ_INT(finite, V);
    CHECK(x[69999] != x[0]);
    eng_seq_free(s);
    free(x);
    eng_free(e);
}

/* eng_decode_bytes of F32 files (weights read in place: their bytes are the file's) against the
 * tensor table: every layer matrix and the output head, and in MoE layers the router and
 * expert_used_count / expert_count of the expert tensors. */
static void test_decode_bytes(const char *file) {
    static const char *const mats[] = {"ffn_gate.weight", "ffn_up.weight",  "ffn_down.weight",
                                       "in_proj.weight",  "out_proj.weight", "attn_q.weight",
                                       "attn_k.weight",   "attn_v.weight",   "attn_output.weight",
                                       "ffn_gate_inp.weight"};
    static const char *const experts[] = {"ffn_gate_exps.weight", "ffn_up_exps.weight",
                                          "ffn_down_exps.weight"};
    char err[512];
    gguf *g;
    eng *e;
    CHECK(gguf_open(&g, file, err, sizeof err) == 0);
    CHECK(eng_new(&e, file, NULL, err, sizeof err) == 0);
    if (!g || !e) {
        gguf_close(g);
        eng_free(e);
        return;
    }
    const lfm2_hparams *hp = eng_hparams(e);
    double want = 0;
    bool has_output = gguf_find_tensor(g, "output.weight") != NULL;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const char *dot = strncmp(t->name, "blk.", 4) ? NULL : strchr(t->name + 4, '.');
        if (!strcmp(t->name, has_output ? "output.weight" : "token_embd.weight"))
            want += (double)t->nbytes;
        for (size_t k = 0; dot && k < sizeof mats / sizeof mats[0]; k++)
            if (!strcmp(dot + 1, mats[k]) ||
                (!strncmp(dot + 1, "shortconv.", 10) && !strcmp(dot + 11, mats[k])))
                want += (double)t->nbytes;
        for (size_t k = 0; dot && k < sizeof experts / sizeof experts[0]; k++)
            if (!strcmp(dot + 1, experts[k]))
                want += (double)t->nbytes * hp->n_expert_used / hp->n_expert;
    }
    CHECK(want > 0);
    CHECK(fabs(eng_decode_bytes(e) - want) <= 1e-9 * want);
    if (fabs(eng_decode_bytes(e) - want) > 1e-9 * want)
        fprintf(stderr, "decode bytes %s: %.0f, tensor table says %.0f\n", file,
                eng_decode_bytes(e), want);
    eng_free(e);
    gguf_close(g);
}

/* Pearson correlation of two rows of logits. */
static double corr(const float *a, const float *b, int n) {
    double ma = 0, mb = 0, ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++)
        ma += a[i], mb += b[i];
    ma /= n, mb /= n;
    for (int i = 0; i < n; i++) {
        ab += (a[i] - ma) * (b[i] - mb);
        aa += (a[i] - ma) * (a[i] - ma);
        bb += (b[i] - mb) * (b[i] - mb);
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

/* A deep quantized model (256 thin layers: over 1280 repacked matrices) loads and runs, and its
 * logits follow its f32 twin's (the same weight values on the f32 path). Not closely: 256 random
 * layers amplify the int8 activation rounding of the repacked path (correlation 0.997 and more
 * at 4 layers, 0.7 to 0.97 at 256), while a model of another seed correlates below 0.05. The
 * alarm turns a hang at load into a failure. */
static void test_deep(void) {
    const char *q = make_model("deep-q4_0", "--preset tiny --type q4_0 --layers 256 --hidden 64 "
                                            "--heads 2 --kv-heads 1 --ffn 64 --seed 13");
    CHECK(q != NULL);
    if (!q) return;
    char qpath[700], fpath[700], err[512];
    snprintf(qpath, sizeof qpath, "%s", q);
    snprintf(fpath, sizeof fpath, "%s/deep-f32.gguf", tmpdir);
    int n_mat = write_f32_twin(qpath, fpath);
    printf("deep model: %d quantized matrices\n", n_mat);
    CHECK(n_mat > 1024);
    alarm(120);
    eng *a, *b;
    if (eng_new(&a, qpath, NULL, err, sizeof err) < 0 ||
        eng_new(&b, fpath, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        CHECK(!"eng_new deep");
        alarm(0);
        return;
    }
    const int V = eng_n_vocab(a);
    CHECK_EQ_INT(eng_n_vocab(b), V);
    int32_t ids[6] = {1, 100, 200, 300, 400, 500};
    float *x = malloc((size_t)6 * V * sizeof(float)), *y = malloc((size_t)6 * V * sizeof(float));
    eng_seq *sa, *sb;
    CHECK(eng_seq_new(a, 16, &sa, err, sizeof err) == 0);
    CHECK(eng_seq_new(b, 16, &sb, err, sizeof err) == 0);
    /* a prefill of four tokens, then two decode steps */
    CHECK(step1(a, sa, ids, 4, ENG_LOGITS_ALL, x) == 0);
    CHECK(step1(b, sb, ids, 4, ENG_LOGITS_ALL, y) == 0);
    for (int i = 4; i < 6; i++) {
        CHECK(step1(a, sa, ids + i, 1, ENG_LOGITS_LAST, x + (size_t)i * V) == 0);
        CHECK(step1(b, sb, ids + i, 1, ENG_LOGITS_LAST, y + (size_t)i * V) == 0);
    }
    alarm(0);
    double worst = 1;
    for (int i = 0; i < 6; i++)
        worst = fmin(worst, corr(x + (size_t)i * V, y + (size_t)i * V, V));
    printf("deep model vs its f32 twin: lowest logit correlation over 6 rows %.3f\n", worst);
    CHECK(worst >= 0.5);
    CHECK(max_abs_diff(x, y, (size_t)6 * V) > 0); /* the two engines took different paths */
    eng_seq_free(sa);
    eng_seq_free(sb);
    eng_free(a);
    eng_free(b);
    free(x);
    free(y);
}

int main(int argc, char **argv) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_eng.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    if (argc > 1) { /* named goldens only (e.g. 350m, see tests/fidelity_350m.sh) */
        for (int i = 1; i < argc; i++) fidelity(argv[i]);
    } else {
        const char *tiny = make_model("tiny", "--preset tiny --type f32 --seed 11"); /* = the golden's */
        CHECK(tiny != NULL);
        if (tiny) {
            char keep[700];
            snprintf(keep, sizeof keep, "%s", tiny);
            test_state(keep);
            test_untied_head(keep);
            test_decode_bytes(keep);
        }
        test_bad_files();
        const char *tq = make_model("tiny-q4_0", "--preset tiny --type q4_0 --seed 12");
        CHECK(tq != NULL);
        if (tq) test_batch_bits(tq);
        if (tq) test_snapshots(tq);
        /* lfm2moe: a row's expert choices and outputs do not depend on its batch neighbours */
        const char *mq = make_model("tiny-moe-q4_0", "--preset tiny-moe --type q4_0 --seed 12");
        CHECK(mq != NULL);
        if (mq) test_batch_bits(mq);
        mq = make_model("tiny-moe-f32", "--preset tiny-moe --type f32 --seed 12");
        CHECK(mq != NULL);
        if (mq) test_decode_bytes(mq);
        mq = make_model("mini-moe-q4_k_m", "--preset mini-moe --type q4_k_m --seed 12");
        CHECK(mq != NULL);
        if (mq) test_batch_bits(mq);
        test_deep();
        test_big_vocab();
        /* 350m: F32, 1.4 GB written to TMPDIR, ~18 s here (tests/fidelity_350m.sh runs it alone) */
        const char *names[] = {"tiny",
                               "mini",
                               "tiny-swa",
                               "350m",
                               "mk-mini-q8_0",
                               "mk-mini-q4_0",
                               "ref-F16",
                               "ref-BF16",
                               "ref-Q8_0",
                               "ref-Q4_0",
                               "ref-Q4_K_M",
                               "ref-Q5_K_M",
                               "ref-Q6_K",
                               "tiny-moe",
                               "mini-moe",
                               "mk-mini-moe-q4_0",
                               "mk-mini-moe-q4_k_m"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) fidelity(names[i]);
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_done("test_eng");
}
