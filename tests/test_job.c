/* test_job.c: requests become the expected jobs (ids, sampling, stops); bad values and allocation
 * failures become the expected errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "api/request.h"
#include "engine/gguf.h"
#include "engine/tok.h"
#include "server/job.h"
#include "tests/check.h"

static const tok *TK;

static job_ctx ctx_for(enum chat_format f) {
    job_ctx c = {.tk = TK, .chat_format = f, .n_vocab = tok_n_vocab(TK)};
    return c;
}

static int parse(api_request *q, enum api_kind kind, const char *body) {
    api_error e;
    int rc = api_request_parse(q, kind, body, strlen(body), NULL, &e);
    if (rc < 0) fprintf(stderr, "parse: %s in %.200s\n", e.message, body);
    CHECK_EQ_INT(rc, 0);
    return rc;
}

/* Each conversation of tests/data/chat/mini.golden.json (tools aside: requests refuse them)
 * as a request body gives a job whose prompt is llama.cpp's ids for the rendered template. */
static void test_chat_golden(void) {
    size_t n = 0;
    char *buf = (char *)check_slurp("tests/data/chat/mini.golden.json", &n);
    CHECK(buf != NULL);
    if (!buf) return;
    cJSON *root = cJSON_ParseWithLength(buf, n);
    free(buf);
    CHECK(cJSON_IsArray(root));
    int n_cases = 0;
    for (cJSON *c = root ? root->child : NULL; c; c = c->next) {
        if (cJSON_GetArraySize(cJSON_GetObjectItem(c, "tools")) > 0) continue;
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        cJSON *body = cJSON_CreateObject();
        cJSON_AddItemToObject(body, "messages",
                              cJSON_Duplicate(cJSON_GetObjectItem(c, "messages"), true));
        char *text = cJSON_PrintUnformatted(body);
        cJSON_Delete(body);
        bool v25 = !strcmp(cJSON_GetObjectItem(c, "format")->valuestring, "lfm2.5");
        api_request q;
        sched_job *j = NULL;
        api_error e;
        job_ctx jc = ctx_for(v25 ? CHAT_LFM25 : CHAT_LFM2);
        int fails = check_failures;
        if (parse(&q, API_CHAT, text) == 0) {
            CHECK_EQ_INT(job_build(&jc, &q, 7, &j, &e), 0);
            cJSON *want = cJSON_GetObjectItem(c, "ids");
            CHECK(j != NULL);
            if (j) {
                CHECK_EQ_INT(j->n_prompt, cJSON_GetArraySize(want));
                int k = 0;
                for (cJSON *x = want->child; x && k < j->n_prompt; x = x->next, k++)
                    CHECK_EQ_INT(j->prompt[k], x->valueint);
            }
            n_cases++;
        }
        if (check_failures != fails) fprintf(stderr, "  in golden case %s\n", name);
        sched_job_free(j);
        api_request_free(&q);
        free(text);
    }
    cJSON_Delete(root);
    CHECK(n_cases >= 6);
}

/* Every sampling field of a request arrives in the job; defaults and the given seed. */
static void test_chat_params(void) {
    api_request q;
    sched_job *j = NULL;
    api_error e;
    job_ctx jc = ctx_for(CHAT_LFM2);
    if (parse(&q, API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello world\"}],\"max_tokens\":9,"
              "\"temperature\":0.25,\"top_p\":0.5,\"top_k\":7,\"min_p\":0.125,"
              "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"repetition_penalty\":1.5,"
              "\"seed\":42,\"stop\":[\"x\",\"yy\"],\"logit_bias\":{\"5\":-100,\"6\":2.5},"
              "\"logprobs\":true,\"top_logprobs\":3,\"n\":2}"))
        return;
    CHECK_EQ_INT(job_build(&jc, &q, 7, &j, &e), 0);
    CHECK(j != NULL);
    if (j) {
        CHECK_EQ_INT(j->n_prompt, 14); /* user_only of the golden file */
        CHECK_EQ_INT(j->n_choices, 2);
        CHECK_EQ_INT(j->max_tokens, 9);
        CHECK_NEAR(j->samp.temperature, 0.25, 0);
        CHECK_NEAR(j->samp.top_p, 0.5, 0);
        CHECK_EQ_INT(j->samp.top_k, 7);
        CHECK_NEAR(j->samp.min_p, 0.125, 0);
        CHECK_NEAR(j->samp.presence_penalty, 0.5, 0);
        CHECK_NEAR(j->samp.frequency_penalty, -0.5, 0);
        CHECK_NEAR(j->samp.repeat_penalty, 1.5, 0);
        CHECK_EQ_INT(j->samp.penalty_last_n, 64);
        CHECK_EQ_INT(j->samp.seed, 42);
        CHECK_EQ_INT(j->samp.n_top, 3);
        CHECK(j->want_logprobs);
        CHECK_EQ_INT(j->n_stop, 2);
        if (j->n_stop == 2) {
            CHECK_STR(j->stop[0], "x");
            CHECK_STR(j->stop[1], "yy");
        }
        CHECK_EQ_INT(j->samp.n_bias, 2);
        CHECK(j->samp.bias == j->bias);
        if (j->samp.n_bias == 2) {
            CHECK_EQ_INT(j->bias[0].id, 5);
            CHECK(isinf(j->bias[0].bias) && j->bias[0].bias < 0); /* -100 bans */
            CHECK_EQ_INT(j->bias[1].id, 6);
            CHECK_NEAR(j->bias[1].bias, 2.5, 0);
        }
    }
    sched_job_free(j);
    api_request_free(&q);

    /* no seed: the one given to job_build; no max_tokens: 0 (until the context is full) */
    if (parse(&q, API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}")) return;
    CHECK_EQ_INT(job_build(&jc, &q, 0x1234567890ull, &j, &e), 0);
    if (j) {
        CHECK_EQ_INT(j->samp.seed, 0x1234567890ull);
        CHECK_EQ_INT(j->max_tokens, 0);
        CHECK_NEAR(j->samp.temperature, 0.8, 1e-7);
        CHECK_EQ_INT(j->samp.n_bias, 0);
        CHECK_EQ_INT(j->n_stop, 0);
        CHECK(!j->want_logprobs);
    }
    sched_job_free(j);
    api_request_free(&q);
}

/* Completions: a text prompt with special tokens parsed and BOS as the model says; token ids
 * as they are. */
static void test_completion(void) {
    api_request q;
    sched_job *j = NULL;
    api_error e;
    job_ctx jc = ctx_for(CHAT_LFM2);
    CHECK(tok_add_bos(TK) && tok_bos(TK) == 1);
    /* "<|im_start|>user\nHello world" is the start of golden user_only after its BOS */
    if (parse(&q, API_COMPLETION, "{\"prompt\":\"<|im_start|>user\\nHello world\"}")) return;
    CHECK_EQ_INT(job_build(&jc, &q, 7, &j, &e), 0);
    static const int32_t want[] = {1, 6, 1878, 214};
    if (j) {
        CHECK(j->n_prompt > 4);
        for (int i = 0; i < 4 && i < j->n_prompt; i++)
            CHECK_EQ_INT(j->prompt[i], want[i]);
        CHECK_EQ_INT(j->n_choices, 1);
    }
    sched_job_free(j);
    api_request_free(&q);
    if (parse(&q, API_COMPLETION, "{\"prompt\":[5,6,7],\"max_tokens\":3}")) return;
    CHECK_EQ_INT(job_build(&jc, &q, 7, &j, &e), 0);
    if (j) {
        CHECK_EQ_INT(j->n_prompt, 3);
        for (int i = 0; i < 3 && i < j->n_prompt; i++)
            CHECK_EQ_INT(j->prompt[i], 5 + i);
        CHECK_EQ_INT(j->max_tokens, 3);
    }
    sched_job_free(j);
    api_request_free(&q);

    int32_t *ids = NULL;
    int n = -1;
    CHECK_EQ_INT(job_tokenize(TK, "<|im_start|>", 12, true, true, &ids, &n), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) CHECK(ids[0] == 1 && ids[1] == 6);
    free(ids);
    CHECK_EQ_INT(job_tokenize(TK, "", 0, false, true, &ids, &n), 0);
    CHECK(n == 0 && ids == NULL);
}

/* Values the sampler refuses (requests that did not come through api_request_parse's limits),
 * and an empty prompt: 400 naming the field and its limit, no job. */
static void check_refused(const api_request *q, const job_ctx *jc, const char *param,
                          const char *msg) {
    sched_job *j = (sched_job *)q; /* must be reset to NULL */
    api_error e;
    int fails = check_failures;
    CHECK_EQ_INT(job_build(jc, q, 7, &j, &e), JOB_EINVAL);
    CHECK(j == NULL);
    CHECK_EQ_INT(e.status, 400);
    CHECK_STR(e.type, "invalid_request_error");
    CHECK_STR(e.param, param);
    CHECK(strstr(e.message, msg) != NULL);
    if (check_failures != fails) fprintf(stderr, "  want '%s', got '%s'\n", msg, e.message);
}

static void test_refused(void) {
    api_request q;
    job_ctx jc = ctx_for(CHAT_LFM2);
    if (parse(&q, API_COMPLETION, "{\"prompt\":[5,6,7]}")) return;
    q.top_p = 1.5f;
    check_refused(&q, &jc, "", "top_p 1.5 outside [0, 1]");
    q.top_p = 0.5f;
    q.repetition_penalty = 0;
    check_refused(&q, &jc, "", "repeat_penalty 0 outside (0, 10000]");
    q.repetition_penalty = 1;
    q.logprobs = true;
    q.top_logprobs = 21;
    check_refused(&q, &jc, "", "n_top 21 outside [0, 20]");
    q.logprobs = false;
    api_logit_bias lb[2] = {{3, 1}, {70000, 1}};
    q.logit_bias = lb;
    q.n_logit_bias = 2;
    char want[96];
    snprintf(want, sizeof want, "logit_bias[1]: token id 70000 outside [0, %d)", jc.n_vocab);
    check_refused(&q, &jc, "", want);
    q.logit_bias = NULL;
    q.n_logit_bias = 0;
    api_request_free(&q);

    /* no ids at all (api_request_parse refuses an empty array; the builder does not rely on it) */
    int32_t none = 0;
    api_request empty = {.kind = API_COMPLETION,
                         .prompt_tokens = &none,
                         .n = 1,
                         .top_p = 1,
                         .repetition_penalty = 1};
    check_refused(&empty, &jc, "prompt", "the prompt is empty");
}

/* Allocation failure anywhere while building (the job, a logit_bias, a stop string) is a 500 and
 * no job, never a job that silently lost what the request asked for. */
static int alloc_left; /* allocations that succeed before the next one fails; < 0: all do */
static int alloc_calls;
static void *failing_alloc(size_t size) {
    alloc_calls++;
    if (alloc_left == 0) return NULL;
    if (alloc_left > 0) alloc_left--;
    return malloc(size);
}

static void test_oom(void) {
    api_request q;
    job_ctx jc = ctx_for(CHAT_LFM2);
    jc.alloc = failing_alloc;
    if (parse(&q, API_COMPLETION,
              "{\"prompt\":[5,6,7],\"stop\":[\"a\",\"bb\",\"ccc\"],\"logit_bias\":{\"9\":1}}"))
        return;
    alloc_left = -1;
    alloc_calls = 0;
    sched_job *j = NULL;
    api_error e;
    CHECK_EQ_INT(job_build(&jc, &q, 7, &j, &e), 0);
    int total = alloc_calls;
    CHECK_EQ_INT(total, 5); /* the job, the bias array, three stop strings */
    sched_job_free(j);
    for (int k = 0; k < total; k++) {
        alloc_left = k;
        j = (sched_job *)&q;
        memset(&e, 0, sizeof e);
        int rc = job_build(&jc, &q, 7, &j, &e);
        int fails = check_failures;
        CHECK_EQ_INT(rc, JOB_ENOMEM);
        CHECK(j == NULL);
        CHECK_EQ_INT(e.status, 500);
        CHECK_STR(e.type, "server_error");
        CHECK(strstr(e.message, "out of memory") != NULL);
        if (rc == 0) sched_job_free(j);
        if (check_failures != fails) fprintf(stderr, "  when allocation %d fails\n", k);
    }
    api_request_free(&q);
}

int main(void) {
    gguf *g = NULL;
    tok *t = NULL;
    char err[256];
    if (gguf_open(&g, "tests/data/models/mini-F16.gguf", err, sizeof err) < 0 ||
        tok_new(&t, g, err, sizeof err) < 0) {
        fprintf(stderr, "mini-F16 tokenizer: %s\n", err);
        return 1;
    }
    TK = t;
    test_chat_golden();
    test_chat_params();
    test_completion();
    test_refused();
    test_oom();
    tok_free(t);
    gguf_close(g);
    return check_done("test_job");
}
