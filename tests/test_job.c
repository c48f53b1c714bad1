/* test_job.c: requests become the expected jobs (ids, sampling, stops); bad values and allocation
 * failures become the expected errors; scheduler events become the expected chunks and bodies. */
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

/* Each conversation of tests/data/chat/mini.golden.json (tools aside: they are given there as
 * bare strings, which the template takes as they are and requests refuse)
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
static int realloc_left; /* reallocs that succeed before the next one fails; < 0: all do */
static int realloc_calls;
static void *failing_realloc(void *p, size_t size) {
    realloc_calls++;
    if (realloc_left == 0) return NULL;
    if (realloc_left > 0) realloc_left--;
    return realloc(p, size);
}

static void test_oom(void) {
    api_request q;
    job_ctx jc = ctx_for(CHAT_LFM2);
    jc.realloc_fn = failing_realloc;
    if (parse(&q, API_COMPLETION,
              "{\"prompt\":[5,6,7],\"stop\":[\"a\",\"bb\",\"ccc\"],\"logit_bias\":{\"9\":1}}"))
        return;
    realloc_left = -1;
    realloc_calls = 0;
    sched_job *j = NULL;
    api_error e;
    CHECK_EQ_INT(job_build(&jc, &q, 7, &j, &e), 0);
    int total = realloc_calls;
    CHECK_EQ_INT(total, 5); /* the job, the bias array, three stop strings */
    sched_job_free(j);
    for (int k = 0; k < total; k++) {
        realloc_left = k;
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

/* ---------- the answer ---------- */

typedef struct sink {
    char *piece[32];
    int n;
} sink;

static void sink_emit(void *ud, const char *data, size_t len) {
    sink *k = ud;
    if (k->n < 32) k->piece[k->n++] = strndup(data, len);
}

static void sink_free(sink *k) {
    for (int i = 0; i < k->n; i++)
        free(k->piece[i]);
    k->n = 0;
}

static sched_event ev_of(int kind, int index, const char *text) {
    sched_event ev = {.job = 1, .kind = kind, .index = index};
    if (text) ev.text = (char *)text, ev.len = strlen(text);
    return ev;
}

/* The string at choices[0].<a>.<b> of a chunk (b NULL: choices[0].<a>), or NULL. */
static const char *choice_str(const cJSON *root, const char *a, const char *b) {
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0);
    const cJSON *v = cJSON_GetObjectItem(c, a);
    if (b) v = cJSON_GetObjectItem(v, b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int choice_index(const cJSON *root) {
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0);
    const cJSON *v = cJSON_GetObjectItem(c, "index");
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

/* A streamed chat with two choices: role chunks at START, text and finish chunks per choice, the
 * usage chunk, then [DONE]; every chunk carries the id and model given. */
static void test_answer_stream(void) {
    api_request q;
    if (parse(&q, API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"n\":2,"
              "\"stream\":true,\"stream_options\":{\"include_usage\":true}}"))
        return;
    job_answer a;
    CHECK_EQ_INT(job_answer_init(&a, &q, TK, "chatcmpl-x1", 1700000000, "m1"), 0);
    api_request_free(&q);
    sink k = {0};
    sched_event evs[] = {ev_of(SCHED_EV_START, 0, NULL),  ev_of(SCHED_EV_TEXT, 0, "Hel"),
                         ev_of(SCHED_EV_TEXT, 1, "Yo"),   ev_of(SCHED_EV_TEXT, 7, "bad index"),
                         ev_of(SCHED_EV_FINISH, 0, NULL), ev_of(SCHED_EV_FINISH, 1, NULL),
                         ev_of(SCHED_EV_DONE, 0, NULL)};
    evs[4].finish = SCHED_FINISH_LENGTH;
    evs[5].finish = SCHED_FINISH_STOP;
    evs[6].n_prompt = 5, evs[6].n_completion = 3;
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        job_answer_event(&a, &evs[i], sink_emit, &k);
    CHECK(a.started && a.done && !a.failed);
    /* 2 roles, 2 texts (the bad index is dropped), 2 finishes, usage, [DONE] */
    CHECK_EQ_INT(k.n, 8);
    if (k.n == 8) {
        cJSON *c[7];
        for (int i = 0; i < 7; i++) {
            c[i] = cJSON_Parse(k.piece[i]);
            CHECK(c[i] != NULL);
            CHECK_STR(cJSON_GetObjectItem(c[i], "id")->valuestring, "chatcmpl-x1");
            CHECK_STR(cJSON_GetObjectItem(c[i], "model")->valuestring, "m1");
        }
        CHECK_STR(choice_str(c[0], "delta", "role"), "assistant");
        CHECK_EQ_INT(choice_index(c[1]), 1);
        CHECK_STR(choice_str(c[2], "delta", "content"), "Hel");
        CHECK_STR(choice_str(c[3], "delta", "content"), "Yo");
        CHECK_EQ_INT(choice_index(c[3]), 1);
        CHECK_STR(choice_str(c[4], "finish_reason", NULL), "length");
        CHECK_STR(choice_str(c[5], "finish_reason", NULL), "stop");
        const cJSON *u = cJSON_GetObjectItem(c[6], "usage");
        CHECK(cJSON_GetObjectItem(u, "prompt_tokens")->valueint == 5 &&
              cJSON_GetObjectItem(u, "completion_tokens")->valueint == 3);
        CHECK_STR(k.piece[7], "[DONE]");
        for (int i = 0; i < 7; i++)
            cJSON_Delete(c[i]);
    }
    sink_free(&k);
    job_answer_free(&a);
    job_answer_free(&a); /* zeroed: no-op */
}

/* An error after START: the error object, then no usage and no [DONE]. */
static void test_answer_stream_error(void) {
    api_request q;
    if (parse(&q, API_COMPLETION, "{\"prompt\":\"x\",\"stream\":true}")) return;
    job_answer a;
    CHECK_EQ_INT(job_answer_init(&a, &q, TK, "cmpl-2", 1, "m"), 0);
    api_request_free(&q);
    sink k = {0};
    sched_event start = ev_of(SCHED_EV_START, 0, NULL), err = ev_of(SCHED_EV_ERROR, 0, NULL),
                done = ev_of(SCHED_EV_DONE, 0, NULL);
    snprintf(err.message, sizeof err.message, "the server is shutting down");
    job_answer_event(&a, &start, sink_emit, &k);
    CHECK_EQ_INT(k.n, 0); /* completions have no role chunk */
    job_answer_event(&a, &err, sink_emit, &k);
    job_answer_event(&a, &done, sink_emit, &k);
    CHECK(a.failed && a.done);
    CHECK_STR(a.errmsg, "the server is shutting down");
    CHECK_EQ_INT(k.n, 1);
    if (k.n == 1) {
        cJSON *e = cJSON_Parse(k.piece[0]);
        const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "message");
        CHECK(cJSON_IsString(m) && !strcmp(m->valuestring, "the server is shutting down"));
        cJSON_Delete(e);
    }
    sink_free(&k);
    job_answer_free(&a);
}

/* A non-streamed completion with logprobs: nothing emitted, the body holds the joined text, the
 * finish reason, the tokens and their log-probs, and the usage. */
static void test_answer_body(void) {
    api_request q;
    if (parse(&q, API_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":2}")) return;
    job_answer a;
    CHECK_EQ_INT(job_answer_init(&a, &q, TK, "cmpl-3", 1, "m"), 0);
    api_request_free(&q);
    sink k = {0};
    sched_tokinfo ti[2] = {
        {.id = 6, .logprob = -0.5f, .n_top = 2, .top_id = {6, 7}, .top_logprob = {-0.5f, -1.5f}},
        {.id = 7, .logprob = -0.25f, .n_top = 2, .top_id = {7, 6}, .top_logprob = {-0.25f, -2.0f}}};
    sched_event evs[] = {ev_of(SCHED_EV_START, 0, NULL), ev_of(SCHED_EV_TEXT, 0, "ab"),
                         ev_of(SCHED_EV_TEXT, 0, "c"), ev_of(SCHED_EV_FINISH, 0, NULL),
                         ev_of(SCHED_EV_DONE, 0, NULL)};
    evs[1].toks = &ti[0], evs[1].n_toks = 1;
    evs[2].toks = &ti[1], evs[2].n_toks = 1;
    evs[3].finish = SCHED_FINISH_LENGTH;
    evs[4].n_prompt = 2, evs[4].n_completion = 2;
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        job_answer_event(&a, &evs[i], sink_emit, &k);
    CHECK_EQ_INT(k.n, 0);
    char *json = job_answer_json(&a);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    CHECK(root != NULL);
    CHECK_STR(choice_str(root, "text", NULL), "abc");
    CHECK_STR(choice_str(root, "finish_reason", NULL), "length");
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0);
    const cJSON *lp = cJSON_GetObjectItem(c, "logprobs");
    const cJSON *toks = cJSON_GetObjectItem(lp, "tokens");
    CHECK_EQ_INT(cJSON_GetArraySize(toks), 2);
    size_t len = 0;
    const char *p7 = tok_piece(TK, 7, &len);
    CHECK(cJSON_IsString(cJSON_GetArrayItem(toks, 1)) && p7 &&
          !strncmp(cJSON_GetArrayItem(toks, 1)->valuestring, p7, len));
    CHECK_NEAR(cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "token_logprobs"), 0)->valuedouble, -0.5,
               1e-6);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "top_logprobs"), 1)),
                 2);
    const cJSON *u = cJSON_GetObjectItem(root, "usage");
    CHECK_EQ_INT(cJSON_GetObjectItem(u, "total_tokens")->valueint, 4);
    cJSON_Delete(root);
    free(json);
    job_answer_free(&a);
}

/* One answer of two text events with logprobs, streamed or not, while allocation k of the answer
 * fails (k < 0: none does). Returns the pieces emitted in *k_out and whether it failed. */
static bool answer_with_failure(bool stream, int k, sink *out, job_answer *a) {
    api_request q;
    char body[160];
    snprintf(body, sizeof body, "{\"prompt\":\"x\",\"logprobs\":2,\"stream\":%s}",
             stream ? "true" : "false");
    if (parse(&q, API_COMPLETION, body)) return false;
    CHECK_EQ_INT(job_answer_init(a, &q, TK, "cmpl-oom", 1, "m"), 0);
    api_request_free(&q);
    a->realloc_fn = failing_realloc;
    realloc_left = k;
    sched_tokinfo ti[2] = {{.id = 6, .logprob = -0.5f, .n_top = 1, .top_id = {6}},
                           {.id = 7, .logprob = -0.25f, .n_top = 1, .top_id = {7}}};
    sched_event evs[] = {ev_of(SCHED_EV_START, 0, NULL), ev_of(SCHED_EV_TEXT, 0, "ab"),
                         ev_of(SCHED_EV_TEXT, 0, "c"), ev_of(SCHED_EV_FINISH, 0, NULL),
                         ev_of(SCHED_EV_DONE, 0, NULL)};
    evs[1].toks = &ti[0], evs[1].n_toks = 1;
    evs[2].toks = &ti[1], evs[2].n_toks = 1;
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        job_answer_event(a, &evs[i], sink_emit, out);
    return a->failed;
}

/* Every allocation of the answer failing in turn: the answer fails with "out of memory" (a 500
 * for a body; the error object and nothing after it in a stream), never an answer that lacks a
 * piece of text or a logprob record. */
static void test_answer_oom(void) {
    for (int stream = 0; stream < 2; stream++) {
        job_answer a;
        sink k = {0};
        realloc_calls = 0;
        CHECK(!answer_with_failure(stream, -1, &k, &a));
        int total = realloc_calls;
        CHECK(total >= 2); /* the test reaches the answer's allocations */
        CHECK_EQ_INT(k.n, stream ? 4 : 0);
        sink_free(&k);
        job_answer_free(&a);
        for (int f = 0; f < total; f++) {
            int fails = check_failures;
            CHECK(answer_with_failure(stream, f, &k, &a));
            CHECK_STR(a.errmsg, "out of memory");
            if (stream) {
                /* what came before the failure, then one error object, no [DONE] */
                CHECK(k.n >= 1 && strstr(k.piece[k.n - 1], "\"error\"") != NULL);
                for (int i = 0; i + 1 < k.n; i++)
                    CHECK(strstr(k.piece[i], "\"error\"") == NULL && strcmp(k.piece[i], "[DONE]"));
            } else {
                CHECK_EQ_INT(k.n, 0);
            }
            if (check_failures != fails)
                fprintf(stderr, "  when allocation %d of %d fails (stream %d)\n", f, total, stream);
            sink_free(&k);
            job_answer_free(&a);
        }
    }
}

/* chat_template_kwargs.keep_past_thinking reaches the LFM2.5 renderer: the <think> text of an
 * assistant turn before the last stays in the prompt only when it is asked for. */
static int think_prompt_tokens(bool keep) {
    api_request q;
    sched_job *j = NULL;
    api_error e;
    job_ctx jc = ctx_for(CHAT_LFM25);
    char body[512];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\","
             "\"content\":\"<think>a long line of private reasoning</think>Hello\"},"
             "{\"role\":\"user\",\"content\":\"Again\"},"
             "{\"role\":\"assistant\",\"content\":\"Hello again\"},"
             "{\"role\":\"user\",\"content\":\"Bye\"}],"
             "\"chat_template_kwargs\":{\"keep_past_thinking\":%s}}",
             keep ? "true" : "false");
    if (parse(&q, API_CHAT, body)) return -1;
    CHECK_EQ_INT(job_build(&jc, &q, 1, &j, &e), 0);
    int n = j ? j->n_prompt : -1;
    sched_job_free(j);
    api_request_free(&q);
    return n;
}

static void test_keep_past_thinking(void) {
    int dropped = think_prompt_tokens(false), kept = think_prompt_tokens(true);
    CHECK(dropped > 0);
    CHECK(kept > dropped + 4); /* "<think>a long line of private reasoning</think>" */
}

/* ---------- tools and reasoning ---------- */

#define TOOLS                                                                                      \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\","     \
    "\"function\":{\"name\":\"g\"}}]"

/* tool_choice none bans the call-start token; parallel_tool_calls false stops at the end token;
 * chat jobs show the markup tokens, completions do not; "required" and a named function wait for
 * constrained decoding (400 naming tool_choice). */
static void test_tool_jobs(void) {
    job_ctx jc = ctx_for(CHAT_LFM2);
    int32_t start = tok_find(TK, "<|tool_call_start|>", 19),
            end = tok_find(TK, "<|tool_call_end|>", 17);
    int32_t think = tok_find(TK, "<think>", 7);
    CHECK(start >= 0 && end >= 0 && think >= 0);
    api_request q;
    sched_job *j = NULL;
    api_error e;
    if (parse(&q, API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," TOOLS
              ",\"tool_choice\":\"none\",\"logit_bias\":{\"5\":1}}") == 0) {
        CHECK_EQ_INT(job_build(&jc, &q, 1, &j, &e), 0);
        bool banned = false;
        for (int i = 0; j && i < j->samp.n_bias; i++)
            if (j->samp.bias[i].id == start && isinf(j->samp.bias[i].bias) &&
                j->samp.bias[i].bias < 0)
                banned = true;
        CHECK(banned);
        CHECK(j && j->samp.n_bias == 2 && j->samp.bias[0].id == 5);
        CHECK(j && j->n_stop == 0);
        CHECK_EQ_INT(j ? j->n_show_special : -1, 4);
        bool shows_think = false;
        for (int i = 0; j && i < j->n_show_special; i++)
            shows_think |= j->show_special[i] == think;
        CHECK(shows_think);
        sched_job_free(j);
        api_request_free(&q);
    }
    if (parse(&q, API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," TOOLS
              ",\"parallel_tool_calls\":false,\"stop\":[\"zz\"]}") == 0) {
        CHECK_EQ_INT(job_build(&jc, &q, 1, &j, &e), 0);
        CHECK(j && j->n_stop == 2 && !strcmp(j->stop[1], "<|tool_call_end|>"));
        CHECK(j && j->samp.n_bias == 0); /* auto: nothing banned */
        sched_job_free(j);
        api_request_free(&q);
    }
    /* the request's four stop strings leave room for the end token's */
    if (parse(&q, API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," TOOLS
              ",\"parallel_tool_calls\":false,\"stop\":[\"a\",\"b\",\"c\",\"d\"]}") == 0) {
        CHECK_EQ_INT(job_build(&jc, &q, 1, &j, &e), 0);
        CHECK(j && j->n_stop == 5 && !strcmp(j->stop[3], "d") &&
              !strcmp(j->stop[4], "<|tool_call_end|>"));
        sched_job_free(j);
        api_request_free(&q);
    }
    if (parse(&q, API_COMPLETION, "{\"prompt\":\"x\"}") == 0) {
        CHECK_EQ_INT(job_build(&jc, &q, 1, &j, &e), 0);
        CHECK_EQ_INT(j ? j->n_show_special : -1, 0);
        sched_job_free(j);
        api_request_free(&q);
    }
    const char *wait[] = {"\"required\"", "{\"type\":\"function\",\"function\":{\"name\":\"g\"}}"};
    for (int i = 0; i < 2; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," TOOLS
                 ",\"tool_choice\":%s}",
                 wait[i]);
        if (parse(&q, API_CHAT, body)) continue;
        CHECK_EQ_INT(job_build(&jc, &q, 1, &j, &e), JOB_EINVAL);
        CHECK(j == NULL);
        CHECK_EQ_INT(e.status, 400);
        CHECK_STR(e.param, "tool_choice");
        CHECK_STR(e.code, "not_supported");
        api_request_free(&q);
    }
    /* the tools and a call in the history reach the prompt */
    if (parse(&q, API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\","
              "\"content\":null,\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\",\"function\":"
              "{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},{\"role\":\"tool\",\"content\":"
              "\"ok\"}]," TOOLS "}") == 0) {
        CHECK_EQ_INT(job_build(&jc, &q, 1, &j, &e), 0);
        char text[4096];
        size_t n = j ? tok_decode(TK, j->prompt, j->n_prompt, true, text, sizeof text) : 0;
        CHECK(n > 0 && n < sizeof text);
        if (n < sizeof text) text[n] = 0;
        CHECK(strstr(text, "List of tools: <|tool_list_start|>[{\"type\": \"function\", "
                           "\"function\": {\"name\": \"f\"}}, {\"type\": \"function\", "
                           "\"function\": {\"name\": \"g\"}}]<|tool_list_end|>") != NULL);
        CHECK(strstr(text, "<|im_start|>assistant\n<|tool_call_start|>[f(a=1)]<|tool_call_end|>"
                           "<|im_end|>") != NULL);
        CHECK(strstr(text, "<|tool_response_start|>ok<|tool_response_end|>") != NULL);
        sched_job_free(j);
        api_request_free(&q);
    }
}

/* A growing list of emitted pieces. */
typedef struct bigsink {
    char **piece;
    int n, cap;
} bigsink;

static void bigsink_emit(void *ud, const char *data, size_t len) {
    bigsink *k = ud;
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->piece = realloc(k->piece, (size_t)k->cap * sizeof *k->piece);
    }
    k->piece[k->n++] = strndup(data, len);
}

static void bigsink_free(bigsink *k) {
    for (int i = 0; i < k->n; i++)
        free(k->piece[i]);
    free(k->piece);
    memset(k, 0, sizeof *k);
}

/* Runs text (in pieces of 1..5 bytes) through an answer for body; returns the non-streamed body
 * or, streamed, the message accumulated from the chunks as the openai SDK does, as JSON
 * {"message":{...},"finish_reason":...}. */
static cJSON *run_answer(const char *body, const char *text, int finish, bool start_reasoning,
                         bool stream) {
    api_request q;
    if (parse(&q, API_CHAT, body)) return NULL;
    q.stream = stream;
    job_answer a;
    CHECK_EQ_INT(job_answer_init(&a, &q, TK, "chatcmpl-tools", 1700000000, "m"), 0);
    api_request_free(&q);
    a.start_reasoning = start_reasoning;
    bigsink k = {0};
    sched_event ev = ev_of(SCHED_EV_START, 0, NULL);
    job_answer_event(&a, &ev, bigsink_emit, &k);
    unsigned r = 12345;
    for (size_t i = 0, n = strlen(text); i < n;) {
        r = r * 1103515245 + 12345;
        size_t m = 1 + (r >> 16) % 5;
        if (m > n - i) m = n - i;
        char piece[8];
        memcpy(piece, text + i, m);
        piece[m] = 0;
        ev = ev_of(SCHED_EV_TEXT, 0, piece);
        job_answer_event(&a, &ev, bigsink_emit, &k);
        i += m;
    }
    ev = ev_of(SCHED_EV_FINISH, 0, NULL);
    ev.finish = finish;
    job_answer_event(&a, &ev, bigsink_emit, &k);
    ev = ev_of(SCHED_EV_DONE, 0, NULL);
    job_answer_event(&a, &ev, bigsink_emit, &k);
    CHECK(!a.failed);
    cJSON *out = NULL;
    if (!stream) {
        char *js = job_answer_json(&a);
        cJSON *root = cJSON_Parse(js);
        free(js);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0);
        out = cJSON_CreateObject();
        cJSON_AddItemToObject(out, "message",
                              cJSON_Duplicate(cJSON_GetObjectItem(c0, "message"), 1));
        cJSON_AddItemToObject(out, "finish_reason",
                              cJSON_Duplicate(cJSON_GetObjectItem(c0, "finish_reason"), 1));
        cJSON_Delete(root);
    } else {
        /* the SDK's accumulation: content and reasoning concatenated, calls by index */
        cJSON *msg = cJSON_CreateObject(), *calls = NULL;
        char content[4096] = "", reasoning[4096] = "";
        bool any_content = false;
        cJSON *finish_reason = NULL;
        for (int i = 0; i < k.n; i++) {
            if (!strcmp(k.piece[i], "[DONE]")) continue;
            cJSON *ch = cJSON_Parse(k.piece[i]);
            CHECK(ch != NULL);
            cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(ch, "choices"), 0);
            cJSON *d = cJSON_GetObjectItem(c0, "delta");
            cJSON *fr = cJSON_GetObjectItem(c0, "finish_reason");
            if (cJSON_IsString(fr)) {
                cJSON_Delete(finish_reason);
                finish_reason = cJSON_CreateString(fr->valuestring);
            }
            cJSON *x = cJSON_GetObjectItem(d, "content");
            if (cJSON_IsString(x) && x->valuestring[0]) {
                strcat(content, x->valuestring);
                any_content = true;
            }
            x = cJSON_GetObjectItem(d, "reasoning_content");
            if (cJSON_IsString(x)) strcat(reasoning, x->valuestring);
            cJSON *tcs = cJSON_GetObjectItem(d, "tool_calls");
            for (cJSON *t = tcs ? tcs->child : NULL; t; t = t->next) {
                int idx = cJSON_GetObjectItem(t, "index")->valueint;
                if (!calls) calls = cJSON_CreateArray();
                cJSON *fn = cJSON_GetObjectItem(t, "function");
                const char *args = cJSON_GetObjectItem(fn, "arguments")->valuestring;
                if (cJSON_GetObjectItem(t, "id")) {
                    CHECK_EQ_INT(idx, cJSON_GetArraySize(calls));
                    cJSON *nc = cJSON_CreateObject();
                    cJSON_AddStringToObject(nc, "id", cJSON_GetObjectItem(t, "id")->valuestring);
                    cJSON_AddStringToObject(nc, "type",
                                            cJSON_GetObjectItem(t, "type")->valuestring);
                    cJSON *nf = cJSON_AddObjectToObject(nc, "function");
                    cJSON_AddStringToObject(nf, "name",
                                            cJSON_GetObjectItem(fn, "name")->valuestring);
                    cJSON_AddStringToObject(nf, "arguments", args);
                    cJSON_AddItemToArray(calls, nc);
                } else {
                    CHECK(cJSON_GetObjectItem(fn, "name") == NULL);
                    cJSON *cur = cJSON_GetObjectItem(cJSON_GetArrayItem(calls, idx), "function");
                    cJSON *ca = cJSON_GetObjectItem(cur, "arguments");
                    char *joined = malloc(strlen(ca->valuestring) + strlen(args) + 1);
                    strcpy(joined, ca->valuestring);
                    strcat(joined, args);
                    cJSON_SetValuestring(ca, joined);
                    free(joined);
                }
            }
            cJSON_Delete(ch);
        }
        cJSON_AddStringToObject(msg, "role", "assistant");
        if (any_content)
            cJSON_AddStringToObject(msg, "content", content);
        else
            cJSON_AddNullToObject(msg, "content");
        if (reasoning[0]) cJSON_AddStringToObject(msg, "reasoning_content", reasoning);
        if (calls) cJSON_AddItemToObject(msg, "tool_calls", calls);
        out = cJSON_CreateObject();
        cJSON_AddItemToObject(out, "message", msg);
        cJSON_AddItemToObject(out, "finish_reason",
                              finish_reason ? finish_reason : cJSON_CreateNull());
    }
    bigsink_free(&k);
    job_answer_free(&a);
    return out;
}

static void expect_answer(const char *body, const char *text, int finish, bool start_reasoning,
                          const char *want, int line) {
    for (int stream = 0; stream < 2; stream++) {
        cJSON *got = run_answer(body, text, finish, start_reasoning, stream);
        char *s = got ? cJSON_PrintUnformatted(got) : NULL;
        if (!s || strcmp(s, want)) {
            fprintf(stderr, "line %d (stream %d):\n got: %s\nwant: %s\n", line, stream,
                    s ? s : "(null)", want);
            CHECK(0);
        }
        free(s);
        cJSON_Delete(got);
    }
}

/* The same text gives the same message whole and streamed (accumulated as the SDK does). */
static void test_answer_tools(void) {
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," TOOLS "}";
    char id0[64], id1[64];
    /* call ids come from the answer id: the same in both forms */
    cJSON *probe = run_answer(body, "<|tool_call_start|>[f(), g()]<|tool_call_end|>",
                              SCHED_FINISH_STOP, false, false);
    cJSON *tc = cJSON_GetObjectItem(cJSON_GetObjectItem(probe, "message"), "tool_calls");
    snprintf(id0, sizeof id0, "%s",
             cJSON_GetObjectItem(cJSON_GetArrayItem(tc, 0), "id")->valuestring);
    snprintf(id1, sizeof id1, "%s",
             cJSON_GetObjectItem(cJSON_GetArrayItem(tc, 1), "id")->valuestring);
    cJSON_Delete(probe);
    CHECK(strlen(id0) == 29 && !strncmp(id0, "call_", 5) && strcmp(id0, id1));
    char want[2048];
    snprintf(want, sizeof want,
             "{\"message\":{\"role\":\"assistant\",\"content\":\"Hi \\\"you\\\"\","
             "\"reasoning_content\":\"plan\",\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\","
             "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\\\"x y \\u00e9\\\"}\"}},"
             "{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":"
             "\"{\\\"b\\\":[1,{\\\"k\\\":true}],\\\"long\\\":"
             "\\\"0123456789012345678901234567890123456789\\\"}\"}}]},"
             "\"finish_reason\":\"tool_calls\"}",
             id0, id1);
    /* cJSON prints the é raw; build the expectation the same way */
    cJSON *w = cJSON_Parse(want);
    char *ws = cJSON_PrintUnformatted(w);
    cJSON_Delete(w);
    expect_answer(body,
                  "<think>plan</think>\nHi \"you\"<|tool_call_start|>[f(a=\"x y \\u00e9\"), "
                  "g(b=[1,{'k':True}], long='0123456789012345678901234567890123456789')]"
                  "<|tool_call_end|>",
                  SCHED_FINISH_STOP, false, ws, __LINE__);
    free(ws);
    /* only a call: content null; cut by length: finish_reason stays "length" */
    snprintf(want, sizeof want,
             "{\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"%s\","
             "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
             "\"finish_reason\":\"length\"}",
             id0);
    expect_answer(body, "<|tool_call_start|>[f()]", SCHED_FINISH_LENGTH, false, want, __LINE__);
    /* a call of an undeclared function stays content */
    expect_answer(body, "<|tool_call_start|>[h()]<|tool_call_end|>", SCHED_FINISH_STOP, false,
                  "{\"message\":{\"role\":\"assistant\",\"content\":\"<|tool_call_start|>[h()]"
                  "<|tool_call_end|>\"},\"finish_reason\":\"stop\"}",
                  __LINE__);
    /* parallel_tool_calls false: the first call only */
    snprintf(want, sizeof want,
             "{\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"%s\","
             "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
             "\"finish_reason\":\"tool_calls\"}",
             id0);
    expect_answer("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," TOOLS
                  ",\"parallel_tool_calls\":false}",
                  "<|tool_call_start|>[f(), g()]", SCHED_FINISH_STOP, false, want, __LINE__);
    /* tool_choice none: markup is content */
    expect_answer("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," TOOLS
                  ",\"tool_choice\":\"none\"}",
                  "<|tool_call_start|>[f()]<|tool_call_end|>", SCHED_FINISH_STOP, false,
                  "{\"message\":{\"role\":\"assistant\",\"content\":\"<|tool_call_start|>[f()]"
                  "<|tool_call_end|>\"},\"finish_reason\":\"stop\"}",
                  __LINE__);
    /* reasoning without tools; a prompt that opened <think>; reasoning_format none */
    const char *plain = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    expect_answer(plain, "<think>a b</think>answer", SCHED_FINISH_STOP, false,
                  "{\"message\":{\"role\":\"assistant\",\"content\":\"answer\","
                  "\"reasoning_content\":\"a b\"},\"finish_reason\":\"stop\"}",
                  __LINE__);
    expect_answer(plain, "thinking...\n</think>\n\nanswer", SCHED_FINISH_STOP, true,
                  "{\"message\":{\"role\":\"assistant\",\"content\":\"answer\","
                  "\"reasoning_content\":\"thinking...\"},\"finish_reason\":\"stop\"}",
                  __LINE__);
    expect_answer("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_format\":"
                  "\"none\"}",
                  "<think>a</think>b", SCHED_FINISH_STOP, false,
                  "{\"message\":{\"role\":\"assistant\",\"content\":\"<think>a</think>b\"},"
                  "\"finish_reason\":\"stop\"}",
                  __LINE__);
}

/* Two choices streamed (and whole) with events interleaved: each choice has its own reasoning,
 * content, calls indexed from 0 with ids of their own, and finish_reason; logprobs cover every
 * generated token of the choice, in order, whether its text went to content, reasoning_content
 * or tool_calls, the same whole and streamed. */
static void test_answer_tools_n2(void) {
    const char *texts[2][3] = {
        {"<think>p</think>", "A", "<|tool_call_start|>[f()]<|tool_call_end|>"},
        {"B ", "<|tool_call_start|>[g(x=1)]", "<|tool_call_end|>"}};
    const int32_t ids[2][3] = {{6, 7, 8}, {9, 10, 11}};
    char *call_ids[2][2] = {{NULL, NULL}, {NULL, NULL}};
    for (int stream = 0; stream < 2; stream++) {
        api_request q;
        char body[512];
        snprintf(body, sizeof body,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," TOOLS
                 ",\"n\":2,\"logprobs\":true,\"stream\":%s}",
                 stream ? "true" : "false");
        if (parse(&q, API_CHAT, body)) return;
        job_answer a;
        CHECK_EQ_INT(job_answer_init(&a, &q, TK, "chatcmpl-n2", 1, "m"), 0);
        api_request_free(&q);
        bigsink k = {0};
        sched_event ev = ev_of(SCHED_EV_START, 0, NULL);
        job_answer_event(&a, &ev, bigsink_emit, &k);
        sched_tokinfo ti[2][3];
        for (int step = 0; step < 3; step++)
            for (int ci = 0; ci < 2; ci++) {
                ti[ci][step] = (sched_tokinfo){.id = ids[ci][step], .logprob = -0.5f};
                ev = ev_of(SCHED_EV_TEXT, ci, texts[ci][step]);
                ev.toks = &ti[ci][step], ev.n_toks = 1;
                job_answer_event(&a, &ev, bigsink_emit, &k);
            }
        for (int ci = 0; ci < 2; ci++) {
            ev = ev_of(SCHED_EV_FINISH, ci, NULL);
            ev.finish = SCHED_FINISH_STOP;
            job_answer_event(&a, &ev, bigsink_emit, &k);
        }
        ev = ev_of(SCHED_EV_DONE, 0, NULL);
        job_answer_event(&a, &ev, bigsink_emit, &k);
        CHECK(!a.failed);
        /* per choice: content, reasoning, "name args id" of each call, logprob ids, finish */
        char content[2][64] = {"", ""}, reasoning[2][64] = {"", ""}, calls[2][256] = {"", ""};
        char lps[2][64] = {"", ""}, finish[2][16] = {"", ""};
        cJSON *roots[40];
        int n_roots = 0;
        if (!stream) {
            char *js = job_answer_json(&a);
            roots[n_roots++] = cJSON_Parse(js);
            free(js);
        } else {
            for (int i = 0; i < k.n && n_roots < 40; i++)
                if (strcmp(k.piece[i], "[DONE]")) roots[n_roots++] = cJSON_Parse(k.piece[i]);
        }
        for (int r = 0; r < n_roots; r++) {
            CHECK(roots[r] != NULL);
            const cJSON *chs = cJSON_GetObjectItem(roots[r], "choices");
            for (const cJSON *c = chs ? chs->child : NULL; c; c = c->next) {
                int ci = cJSON_GetObjectItem(c, "index")->valueint;
                CHECK(ci == 0 || ci == 1);
                if (ci != 0 && ci != 1) continue;
                const cJSON *m = cJSON_GetObjectItem(c, stream ? "delta" : "message");
                const cJSON *x = cJSON_GetObjectItem(m, "content");
                if (cJSON_IsString(x)) strcat(content[ci], x->valuestring);
                x = cJSON_GetObjectItem(m, "reasoning_content");
                if (cJSON_IsString(x)) strcat(reasoning[ci], x->valuestring);
                const cJSON *tcs = cJSON_GetObjectItem(m, "tool_calls");
                for (const cJSON *t = tcs ? tcs->child : NULL; t; t = t->next) {
                    const cJSON *fn = cJSON_GetObjectItem(t, "function");
                    const cJSON *id = cJSON_GetObjectItem(t, "id");
                    const cJSON *idx = cJSON_GetObjectItem(t, "index");
                    CHECK(stream ? cJSON_IsNumber(idx) : idx == NULL);
                    if (stream) CHECK_EQ_INT(idx->valueint, 0);
                    if (cJSON_IsString(id)) {
                        CHECK(call_ids[ci][stream] == NULL); /* one call per choice */
                        call_ids[ci][stream] = strdup(id->valuestring);
                        strcat(calls[ci], cJSON_GetObjectItem(fn, "name")->valuestring);
                        strcat(calls[ci], " ");
                    }
                    strcat(calls[ci], cJSON_GetObjectItem(fn, "arguments")->valuestring);
                }
                const cJSON *lp =
                    cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "content");
                for (const cJSON *t = lp ? lp->child : NULL; t; t = t->next) {
                    const char *tk = cJSON_GetObjectItem(t, "token")->valuestring;
                    for (int s = 0; s < 3; s++) {
                        size_t pl = 0;
                        const char *piece = tok_piece(TK, ids[ci][s], &pl);
                        if (strlen(tk) == pl && !strncmp(tk, piece, pl)) {
                            char d[4] = {(char)('0' + s), 0};
                            strcat(lps[ci], d);
                        }
                    }
                }
                const cJSON *fr = cJSON_GetObjectItem(c, "finish_reason");
                if (cJSON_IsString(fr))
                    snprintf(finish[ci], sizeof finish[ci], "%s", fr->valuestring);
            }
            cJSON_Delete(roots[r]);
        }
        CHECK_STR(content[0], "A");
        CHECK_STR(reasoning[0], "p");
        CHECK_STR(calls[0], "f {}");
        CHECK_STR(content[1], "B");
        CHECK_STR(reasoning[1], "");
        CHECK_STR(calls[1], "g {\"x\":1}");
        for (int ci = 0; ci < 2; ci++) {
            CHECK_STR(lps[ci], "012");
            CHECK_STR(finish[ci], "tool_calls");
        }
        CHECK(call_ids[0][stream] && call_ids[1][stream] &&
              strcmp(call_ids[0][stream], call_ids[1][stream]));
        bigsink_free(&k);
        job_answer_free(&a);
    }
    for (int ci = 0; ci < 2; ci++) {
        CHECK(call_ids[ci][0] && call_ids[ci][1] && !strcmp(call_ids[ci][0], call_ids[ci][1]));
        free(call_ids[ci][0]);
        free(call_ids[ci][1]);
    }
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
    test_answer_stream();
    test_answer_stream_error();
    test_answer_body();
    test_answer_oom();
    test_keep_past_thinking();
    test_tool_jobs();
    test_answer_tools();
    test_answer_tools_n2();
    tok_free(t);
    gguf_close(g);
    return check_done("test_job");
}
