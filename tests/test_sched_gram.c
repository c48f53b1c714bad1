/* test_sched_gram.c: constrained jobs in the scheduler on a real tiny model (random weights):
 * every choice's text is valid JSON of its schema and ends with "stop"; a constrained job's
 * tokens are the same alone and beside seven other jobs (constrained or not), sampled or greedy;
 * a prompt ending inside <think> is free until </think>. */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "api/schema.h"
#include "engine/eng.h"
#include "engine/gram.h"
#include "server/sched.h"
#include "synth/mkmodel.h"
#include "tests/check.h"

#define MAXJ 8
#define MAXC 2

typedef struct result {
    char text[MAXC][8192];
    size_t len[MAXC];
    int finish[MAXC];
    bool done, error;
    int n_completion;
    char message[256];
} result;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int pokes;
static eng *E;

static void notify(void *ud) {
    (void)ud;
    pthread_mutex_lock(&mu);
    pokes++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static gram *compile(const char *schema) {
    char err[512];
    cJSON *j = cJSON_Parse(schema);
    gram *g = gram_new(false);
    int root = schema_compile(g, j, "#", err, sizeof err);
    if (root < 0 || gram_finish(g, root, err, sizeof err) < 0) {
        fprintf(stderr, "schema: %s\n", err);
        gram_free(g);
        g = NULL;
    }
    cJSON_Delete(j);
    return g;
}

/* prompt_special: the prompt's special-token text becomes control tokens (<think>). */
static sched_job *job_new(const char *prompt, bool prompt_special, int n, float temp, uint64_t seed,
                          gram *g) {
    sched_job *j = calloc(1, sizeof *j);
    const tok *tk = eng_tok(E);
    j->prompt = malloc(4096 * sizeof(int32_t));
    j->n_prompt =
        tok_encode(tk, prompt, strlen(prompt), tok_add_bos(tk), prompt_special, j->prompt, 4096);
    j->n_choices = n;
    j->max_tokens = 700;
    sample_params_default(&j->samp);
    j->samp.temperature = temp;
    j->samp.seed = seed;
    j->gram = g ? gram_ref(g) : NULL;
    return j;
}

static void collect(sched *s, const uint64_t *ids, result *res, int n) {
    int done = 0;
    for (int spins = 0; done < n && spins < 200000; spins++) {
        sched_event ev[32];
        int k = sched_poll(s, ev, 32);
        for (int i = 0; i < k; i++) {
            for (int r = 0; r < n; r++) {
                if (ev[i].job != ids[r]) continue;
                result *o = &res[r];
                switch (ev[i].kind) {
                case SCHED_EV_TEXT:
                    if (o->len[ev[i].index] + ev[i].len < sizeof o->text[0]) {
                        memcpy(o->text[ev[i].index] + o->len[ev[i].index], ev[i].text, ev[i].len);
                        o->len[ev[i].index] += ev[i].len;
                    }
                    break;
                case SCHED_EV_FINISH:
                    o->finish[ev[i].index] = ev[i].finish;
                    break;
                case SCHED_EV_ERROR:
                    o->error = true;
                    snprintf(o->message, sizeof o->message, "%s", ev[i].message);
                    break;
                case SCHED_EV_DONE:
                    o->done = true;
                    o->n_completion = ev[i].n_completion;
                    done++;
                    break;
                }
            }
            sched_event_clear(&ev[i]);
        }
        if (!k) {
            pthread_mutex_lock(&mu);
            if (!pokes) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 1000000;
                if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
                pthread_cond_timedwait(&cv, &mu, &ts);
            }
            pokes = 0;
            pthread_mutex_unlock(&mu);
        }
    }
}

static void run(sched *s, sched_job **jobs, result *res, int n) {
    uint64_t ids[MAXJ];
    char err[256];
    memset(res, 0, (size_t)n * sizeof *res);
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(sched_submit(s, jobs[i], &ids[i], err, sizeof err), 0);
    collect(s, ids, res, n);
}

/* The text parses with cJSON; checks that schema 0's bounds hold. */
static void check_json(const result *r, int c, int which) {
    char buf[8200];
    memcpy(buf, r->text[c], r->len[c]);
    buf[r->len[c]] = 0;
    cJSON *j = cJSON_Parse(buf);
    if (!j) fprintf(stderr, "not JSON (schema %d): %s\n", which, buf);
    CHECK(j != NULL);
    if (j && which == 0) {
        const cJSON *a = cJSON_GetObjectItem(j, "age"), *n = cJSON_GetObjectItem(j, "name");
        CHECK(cJSON_IsNumber(a) && a->valuedouble >= 0 && a->valuedouble <= 120);
        CHECK(cJSON_IsString(n) && strlen(n->valuestring) <= 4 * 12);
    }
    cJSON_Delete(j);
}

static const char *schemas[] = {
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},\"ok\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"age\"]}",
    "{\"type\":\"array\",\"items\":{\"enum\":[\"x\",\"yy\",3,null]},\"minItems\":1,\"maxItems\":4}",
};

int main(void) {
    char err[512], path[1024];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/test_sched_gram_%d.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    mkmodel_opts mo = {0};
    CHECK_EQ_INT(mkmodel_preset("tiny", &mo.shape, err, sizeof err), 0);
    mo.seed = 1;
    mo.ftype = MK_F32;
    mo.preset = "tiny";
    if (mkmodel_write(&mo, path, err, sizeof err) < 0) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    eng_params ep;
    eng_params_default(&ep);
    ep.max_seqs = 16;
    ep.n_threads = 2;
    if (eng_new(&E, path, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "eng_new: %s\n", err);
        return 1;
    }
    unlink(path);
    gram *g[2] = {compile(schemas[0]), compile(schemas[1])};
    CHECK(g[0] && g[1]);
    sched_opts o = {.parallel = 8, .queue_max = 16, .prefill_chunk = 256, .n_ctx = 2048};
    sched *s = NULL;
    CHECK_EQ_INT(sched_new(&s, E, &o, NULL, notify, NULL, err, sizeof err), 0);
    static const char *prompts[MAXJ] = {
        "Give a person.", "List things.", "Once upon a time", "def f(x):", "JSON please",
        "2+2=",           "Hello",        "Roses are red,"};

    /* 1. alone, each constrained job: valid JSON, "stop"; n = 2 with different seeds */
    static result solo[MAXJ], together[MAXJ];
    for (int i = 0; i < 4; i++) {
        sched_job *jb =
            job_new(prompts[i], false, 2, i % 2 ? 0.f : 0.9f, 10 + (uint64_t)i, g[i % 2]);
        run(s, &jb, &solo[i], 1);
        CHECK(solo[i].done && !solo[i].error);
        for (int c = 0; c < 2; c++) {
            CHECK_EQ_INT(solo[i].finish[c], SCHED_FINISH_STOP);
            check_json(&solo[i], c, i % 2);
        }
    }
    /* 2. the same four jobs submitted together (8 sequences in every step), then four
     * unconstrained ones that join as sequences free up: the same text, token for token */
    sched_job *jobs[MAXJ];
    for (int i = 0; i < 4; i++)
        jobs[i] = job_new(prompts[i], false, 2, i % 2 ? 0.f : 0.9f, 10 + (uint64_t)i, g[i % 2]);
    for (int i = 4; i < MAXJ; i++)
        jobs[i] = job_new(prompts[i], false, 1, 0.8f, (uint64_t)i, NULL);
    run(s, jobs, together, MAXJ);
    for (int i = 0; i < 4; i++) {
        CHECK(together[i].done && !together[i].error);
        for (int c = 0; c < 2; c++) {
            CHECK_EQ_INT(together[i].len[c], solo[i].len[c]);
            CHECK(together[i].len[c] == solo[i].len[c] &&
                  !memcmp(together[i].text[c], solo[i].text[c], solo[i].len[c]));
        }
    }
    for (int i = 4; i < MAXJ; i++)
        CHECK(together[i].done && !together[i].error);

    /* 3. reasoning: a prompt ending inside <think> is free until </think> (here never within 40
     * tokens: the text need not be JSON and runs to the length), the same prompt closed with
     * </think> is constrained at once */
    const tok *tk = eng_tok(E);
    if (tok_find(tk, "<think>", 7) >= 0 && tok_find(tk, "</think>", 8) >= 0) {
        result r[2];
        sched_job *a = job_new("<|im_start|>assistant\n<think>", true, 1, 0.f, 1, g[0]);
        a->max_tokens = 40;
        int32_t end = tok_find(tk, "</think>", 8);
        a->bias = malloc(sizeof *a->bias);
        a->bias[0] = (sample_bias){end, -INFINITY}; /* never closes: stays free */
        a->samp.bias = a->bias;
        a->samp.n_bias = 1;
        sched_job *b = job_new("<|im_start|>assistant\n<think>x</think>", true, 1, 0.f, 1, g[0]);
        sched_job *both[2] = {a, b};
        run(s, both, r, 2);
        CHECK(r[0].done && !r[0].error && r[1].done && !r[1].error);
        CHECK_EQ_INT(r[0].finish[0], SCHED_FINISH_LENGTH);
        CHECK_EQ_INT(r[0].n_completion, 40);
        char buf[8200];
        memcpy(buf, r[0].text[0], r[0].len[0]);
        buf[r[0].len[0]] = 0;
        cJSON *j = cJSON_Parse(buf);
        CHECK(j == NULL || !cJSON_IsObject(j)); /* unconstrained random text */
        cJSON_Delete(j);
        CHECK_EQ_INT(r[1].finish[0], SCHED_FINISH_STOP);
        check_json(&r[1], 0, 0);
    } else {
        fprintf(stderr, "the tiny vocab lacks <think>/</think>\n");
        CHECK(0);
    }

    sched_free(s);
    gram_free(g[0]);
    gram_free(g[1]);
    eng_free(E);
    if (check_failures) {
        fprintf(stderr, "%d check(s) failed\n", check_failures);
        return 1;
    }
    printf("test_sched_gram: ok\n");
    return 0;
}
