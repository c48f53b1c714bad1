/* fuzz_request.c: libFuzzer harness: request parsers, chat renderer and JSON builders. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api/chat.h"
#include "api/request.h"
#include "api/response.h"
#include "tests/fuzz/fuzz.h"

/* The input is one request body, parsed as a chat completion, a completion, a /tokenize and a
 * /detokenize body, under the default limits and under tight ones. Accepted requests must hold
 * only what request.h promises (valid UTF-8 strings, values in range, ids below n_vocab);
 * refused ones must leave the request empty and an error whose JSON is valid. The accepted
 * messages are rendered in both chat formats, and the raw body goes through the response
 * builders as generated text (which must always give valid JSON). */

static void check_str(const char *s, size_t len) {
    FUZZ_CHECK(s != NULL);
    FUZZ_CHECK(strlen(s) == len);
    FUZZ_CHECK(api_utf8_valid(s, len));
}

/* JSON text from a builder: valid UTF-8, parses, and is an object. */
static cJSON *parse_json(char *js) {
    FUZZ_CHECK(js != NULL);
    FUZZ_CHECK(api_utf8_valid(js, strlen(js)));
    cJSON *root = cJSON_Parse(js);
    if (!root) fprintf(stderr, "not JSON: %s\n", js);
    FUZZ_CHECK(root != NULL && cJSON_IsObject(root));
    free(js);
    return root;
}

static void check_error(const api_error *e, int rc) {
    FUZZ_CHECK(rc == API_EINVAL || rc == API_ENOMEM);
    FUZZ_CHECK(e->status == (rc == API_EINVAL ? 400 : 500));
    FUZZ_CHECK(e->message[0] != 0 && e->type[0] != 0);
    cJSON *root = parse_json(api_error_json(e));
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    FUZZ_CHECK(cJSON_IsString(msg));
    if (api_utf8_valid(e->message, strlen(e->message))) /* else U+FFFD stands in */
        FUZZ_CHECK(!strcmp(msg->valuestring, e->message));
    cJSON_Delete(root);
}

static bool is_control_text(const char *s, size_t len) {
    static const char *const known[] = {"<|startoftext|>",
                                        "<|im_start|>",
                                        "<|im_end|>",
                                        "<think>",
                                        "</think>",
                                        "<|tool_call_start|>",
                                        "<|tool_call_end|>",
                                        "<|tool_list_start|>",
                                        "<|tool_list_end|>",
                                        "<|tool_response_start|>",
                                        "<|tool_response_end|>"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i]) == len && !memcmp(known[i], s, len)) return true;
    return false;
}

static void render(const api_request *r) {
    const char *tools[8];
    int nt = r->n_tools < 8 ? r->n_tools : 8;
    for (int i = 0; i < nt; i++)
        tools[i] = r->tools[i].json;
    for (int f = 0; f < 3; f++) {
        chat_opts o = {.format = f == 2 ? CHAT_LFM25_DATED
                                 : f    ? CHAT_LFM25
                                        : CHAT_LFM2,
                       .bos = "<|startoftext|>",
                       .add_generation_prompt = true,
                       .keep_past_thinking = r->keep_past_thinking,
                       .tools = tools,
                       .n_tools = nt,
                       .date = "2026-01-01"};
        chat_prompt p;
        char err[256];
        FUZZ_CHECK(chat_render(&p, &o, r->messages, r->n_messages, err, sizeof err) == 0);
        size_t total = 0;
        int turns = 0;
        for (int i = 0; i < p.n_segs; i++) {
            const chat_seg *s = &p.segs[i];
            FUZZ_CHECK(s->text == p.arena + total);
            total += s->len;
            if (s->special) {
                FUZZ_CHECK(is_control_text(s->text, s->len));
                if (s->len == 12 && !memcmp(s->text, "<|im_start|>", 12)) turns++;
            } else {
                FUZZ_CHECK(s->len > 0);
                FUZZ_CHECK(i == 0 || p.segs[i - 1].special); /* plain texts are merged */
            }
        }
        FUZZ_CHECK(total == p.arena_len);
        /* one turn per message (an empty leading system message is dropped) + the prompt */
        bool empty_sys = r->messages[0].role == API_ROLE_SYSTEM && r->messages[0].len == 0;
        FUZZ_CHECK(turns == r->n_messages + 1 - empty_sys);
        char *all = chat_prompt_text(&p);
        FUZZ_CHECK(all && strlen(all) == p.arena_len);
        free(all);
        chat_prompt_free(&p);
    }
}

static void check_request(const api_request *r, enum api_kind kind, const api_limits *l) {
    FUZZ_CHECK(r->kind == kind);
    check_str(r->model, strlen(r->model));
    check_str(r->user, strlen(r->user));
    if (kind == API_CHAT) {
        FUZZ_CHECK(r->n_messages >= 1 && r->n_messages <= l->max_messages);
        for (int i = 0; i < r->n_messages; i++) {
            const api_message *m = &r->messages[i];
            FUZZ_CHECK(m->role <= API_ROLE_TOOL);
            check_str(m->content, m->len);
            if (m->reasoning) check_str(m->reasoning, strlen(m->reasoning));
            if (m->tool_call_id) check_str(m->tool_call_id, strlen(m->tool_call_id));
            FUZZ_CHECK(m->n_tool_calls >= 0 && m->n_tool_calls <= l->max_tools);
            FUZZ_CHECK(!m->n_tool_calls || m->role == API_ROLE_ASSISTANT);
            for (int k = 0; k < m->n_tool_calls; k++) {
                const api_tool_call *c = &m->tool_calls[k];
                check_str(c->id, strlen(c->id));
                size_t nl = strlen(c->name);
                FUZZ_CHECK(nl >= 1 && nl <= API_MAX_TOOL_NAME);
                FUZZ_CHECK(strspn(c->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                           "0123456789_-.") == nl);
                cJSON *args = cJSON_Parse(c->arguments);
                FUZZ_CHECK(cJSON_IsObject(args));
                cJSON_Delete(args);
            }
        }
        FUZZ_CHECK(r->n_tools >= 0 && r->n_tools <= l->max_tools);
        for (int i = 0; i < r->n_tools; i++) {
            const api_tool *t = &r->tools[i];
            size_t nl = strlen(t->name);
            FUZZ_CHECK(nl >= 1 && nl <= API_MAX_TOOL_NAME);
            for (int k = 0; k < i; k++)
                FUZZ_CHECK(strcmp(r->tools[k].name, t->name) != 0);
            if (t->description) check_str(t->description, strlen(t->description));
            if (t->parameters) {
                cJSON *p = cJSON_Parse(t->parameters);
                FUZZ_CHECK(cJSON_IsObject(p));
                cJSON_Delete(p);
            }
            cJSON *j = cJSON_Parse(t->json); /* tojson text is JSON */
            FUZZ_CHECK(cJSON_IsObject(j));
            cJSON_Delete(j);
        }
        FUZZ_CHECK(r->tool_choice <= API_TOOL_CHOICE_FUNCTION);
        FUZZ_CHECK((r->tool_choice == API_TOOL_CHOICE_FUNCTION) ==
                   (r->tool_choice_index >= 0 && r->tool_choice_index < r->n_tools));
        FUZZ_CHECK(r->tool_choice != API_TOOL_CHOICE_REQUIRED || r->n_tools > 0);
        FUZZ_CHECK(r->n_tools > 0 || r->tool_choice == API_TOOL_CHOICE_NONE);
        FUZZ_CHECK(!r->prompt && !r->prompt_tokens);
        FUZZ_CHECK(r->top_logprobs >= 0 && r->top_logprobs <= API_MAX_TOP_LOGPROBS);
        render(r);
    } else {
        FUZZ_CHECK(r->n_messages == 0 && !r->messages);
        FUZZ_CHECK(!r->prompt != !r->prompt_tokens);
        if (r->prompt) check_str(r->prompt, r->prompt_len);
        FUZZ_CHECK(r->n_prompt_tokens >= 0 && r->n_prompt_tokens <= l->max_prompt_tokens);
        if (r->prompt_tokens) FUZZ_CHECK(r->n_prompt_tokens >= 1);
        for (int i = 0; i < r->n_prompt_tokens; i++)
            FUZZ_CHECK(r->prompt_tokens[i] >= 0 && r->prompt_tokens[i] < l->n_vocab);
        FUZZ_CHECK(r->top_logprobs >= 0 && r->top_logprobs <= API_MAX_LOGPROBS_COMPL);
    }
    FUZZ_CHECK(r->max_tokens == -1 || (r->max_tokens >= 1 && r->max_tokens <= l->max_tokens));
    FUZZ_CHECK(r->n >= 1 && r->n <= l->max_n);
    if (r->max_tokens > 0) FUZZ_CHECK((long)r->n * r->max_tokens <= l->max_total_tokens);
    FUZZ_CHECK(r->temperature >= 0 && r->temperature <= 2);
    FUZZ_CHECK(r->top_p > 0 && r->top_p <= 1);
    FUZZ_CHECK(r->top_k >= 0);
    FUZZ_CHECK(r->min_p >= 0 && r->min_p <= 1);
    FUZZ_CHECK(fabsf(r->presence_penalty) <= 2 && fabsf(r->frequency_penalty) <= 2);
    FUZZ_CHECK(r->repetition_penalty > 0 && r->repetition_penalty <= 10);
    FUZZ_CHECK(r->n_stop >= 0 && r->n_stop <= API_MAX_STOP);
    for (int i = 0; i < r->n_stop; i++) {
        size_t len = strlen(r->stop[i]);
        FUZZ_CHECK(len >= 1 && len <= API_MAX_STOP_LEN);
        check_str(r->stop[i], len);
    }
    FUZZ_CHECK(r->n_logit_bias >= 0 && r->n_logit_bias <= l->max_logit_bias);
    for (int i = 0; i < r->n_logit_bias; i++) {
        FUZZ_CHECK(r->logit_bias[i].id >= 0 && r->logit_bias[i].id < l->n_vocab);
        FUZZ_CHECK(r->logit_bias[i].bias >= -100 && r->logit_bias[i].bias <= 100);
    }
    FUZZ_CHECK(!r->include_usage || r->stream);
}

static void check_empty(const api_request *r) {
    FUZZ_CHECK(!r->model && !r->user && !r->messages && !r->n_messages && !r->prompt &&
               !r->prompt_tokens && !r->n_prompt_tokens && !r->n_stop && !r->logit_bias &&
               !r->n_logit_bias);
}

/* The body as generated text: builders must escape anything into valid JSON, and text that is
 * valid UTF-8 without NUL comes back byte for byte. */
static void build_responses(const char *text, size_t len) {
    bool exact = api_utf8_valid(text, len) && !memchr(text, 0, len);
    api_resp_meta m = {"chatcmpl-fuzz", 1700000000, "fuzz-model"};
    api_choice c = {.index = 0, .text = text, .len = len, .finish_reason = "stop"};
    api_usage u = {3, 4, 1};
    cJSON *root = parse_json(api_chat_completion_json(&m, &c, 1, &u));
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0), "message"),
        "content");
    FUZZ_CHECK(cJSON_IsString(content));
    if (exact)
        FUZZ_CHECK(strlen(content->valuestring) == len && !memcmp(content->valuestring, text, len));
    cJSON_Delete(root);
    cJSON_Delete(parse_json(api_chat_chunk_json(&m, &c, true, true)));
    cJSON_Delete(parse_json(api_text_chunk_json(&m, &c, false)));
    api_top_logprob top = {text, len < 7 ? len : 7, -0.5f};
    api_token_logprob lp = {text, len, -0.25f, &top, 1};
    c.logprobs = &lp, c.n_logprobs = 1;
    cJSON_Delete(parse_json(api_text_completion_json(&m, &c, 1, &u)));
    root = parse_json(api_detokenize_json(text, len));
    content = cJSON_GetObjectItemCaseSensitive(root, "content");
    FUZZ_CHECK(cJSON_IsString(content));
    if (exact)
        FUZZ_CHECK(strlen(content->valuestring) == len && !memcmp(content->valuestring, text, len));
    cJSON_Delete(root);
    /* tokenize with pieces: the text cut into 3-byte pieces, some not valid UTF-8 */
    int n = (int)(len / 3 < 64 ? len / 3 : 64);
    if (n > 0) {
        int32_t ids[64];
        const char *pieces[64];
        size_t lens[64];
        for (int i = 0; i < n; i++)
            ids[i] = i, pieces[i] = text + 3 * i, lens[i] = 3;
        cJSON_Delete(parse_json(api_tokenize_json(ids, n, pieces, lens)));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *body = (const char *)data;
    api_limits lims[2];
    api_limits_default(&lims[0]);
    lims[0].n_vocab = 65536;
    lims[1] = (api_limits){.n_vocab = 100,
                           .max_tokens = 16,
                           .max_n = 2,
                           .max_total_tokens = 20,
                           .max_messages = 2,
                           .max_parts = 2,
                           .max_prompt_tokens = 4,
                           .max_logit_bias = 2,
                           .max_depth = 4};
    for (int li = 0; li < 2; li++) {
        const api_limits *l = &lims[li];
        for (int k = 0; k < 2; k++) {
            enum api_kind kind = k ? API_COMPLETION : API_CHAT;
            api_request r;
            api_error e;
            int rc = api_request_parse(&r, kind, body, size, l, &e);
            if (rc == 0) {
                check_request(&r, kind, l);
            } else {
                check_empty(&r);
                check_error(&e, rc);
            }
            api_request_free(&r);
            api_request_free(&r); /* a zeroed request is a no-op */
        }
        api_detokenize_req d;
        api_error e;
        int rc = api_detokenize_parse(&d, body, size, l, &e);
        if (rc == 0) {
            FUZZ_CHECK(d.n_tokens >= 0 && (d.n_tokens == 0 || d.tokens));
            for (int i = 0; i < d.n_tokens; i++)
                FUZZ_CHECK(d.tokens[i] >= 0 && d.tokens[i] < l->n_vocab);
        } else {
            check_error(&e, rc);
        }
        api_detokenize_free(&d);
    }
    api_tokenize_req t;
    api_error e;
    int rc = api_tokenize_parse(&t, body, size, &e);
    if (rc == 0)
        check_str(t.content, t.len);
    else
        check_error(&e, rc);
    api_tokenize_free(&t);
    build_responses(body, size);
    return 0;
}
