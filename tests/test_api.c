/* test_api.c: request validation (bad-request suite, happy paths), exact response JSON. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "api/request.h"
#include "api/response.h"
#include "tests/check.h"

static api_limits lim;

/* ---------------- bad requests ---------------- */

typedef struct bad_case {
    int kind; /* API_CHAT, API_COMPLETION, 2 = /tokenize, 3 = /detokenize */
    const char *body;
    const char *param; /* "" = null */
    const char *msg;   /* substring of the message */
} bad_case;

#define U "{\"role\":\"user\",\"content\":\"hi\"}"
#define CHAT(extra) "{\"model\":\"m\",\"messages\":[" U "]" extra "}"
#define COMPL(extra) "{\"model\":\"m\",\"prompt\":\"hi\"" extra "}"

static const bad_case bad[] = {
    /* body */
    {API_CHAT, "", "", "empty"},
    {API_CHAT, "not json", "", "not valid JSON"},
    {API_CHAT, "[1,2]", "", "must be a JSON object"},
    {API_CHAT, "\"str\"", "", "must be a JSON object"},
    {API_CHAT, CHAT("") " x", "", "extra data"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\xff\"}]}", "", "not valid UTF-8"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xC0\xAF\"}]}", "",
     "not valid UTF-8"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xED\xA0\x80\"}]}", "",
     "not valid UTF-8"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xF4\x90\x80\x80\"}]}", "",
     "not valid UTF-8"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"cut \xE6\x97\"}]}", "",
     "not valid UTF-8"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}", "",
     "not valid JSON"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", "", "NUL"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\nb\"}]}", "",
     "raw control character 0x0A in a string at offset 40"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\x1f\"}]}", "",
     "raw control character 0x1F"},
    {API_CHAT, "{\"messages\":[" U "]\x01}", "", "control character 0x01 at offset"},
    {API_CHAT, "{\x0c\"messages\":[" U "]}", "", "only space, tab, CR and LF"},
    {API_CHAT,
     "{\"temperature\":NaN,"
     "\"messages\":[" U "]}",
     "", "not valid JSON"},
    {API_CHAT, "{\"messages\":[" U "],}", "", "not valid JSON"},
    {API_CHAT, "{\"messages\":[" U "]", "", "not valid JSON"},
    {API_CHAT,
     "{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"
     "\"messages\":[" U "]}",
     "", "deeper than the limit of 32"},
    /* messages */
    {API_CHAT, "{\"model\":\"m\"}", "messages", "messages is required"},
    {API_CHAT, "{\"messages\":\"hi\"}", "messages", "must be an array"},
    {API_CHAT, "{\"messages\":[]}", "messages", "at least 1"},
    {API_CHAT, "{\"messages\":[" U "," U "," U "," U "," U "]}", "messages", "limit is 4"},
    {API_CHAT, "{\"messages\":[1]}", "messages[0]", "must be an object"},
    {API_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role", "required"},
    {API_CHAT, "{\"messages\":[{\"role\":3,\"content\":\"x\"}]}", "messages[0].role",
     "must be a string"},
    {API_CHAT, "{\"messages\":[" U ",{\"role\":\"bot\",\"content\":\"x\"}]}", "messages[1].role",
     "not one of system, user, assistant, tool"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content", "required"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":null}]}", "messages[0].content",
     "required"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content",
     "string or an array of text parts"},
    {API_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{"
     "\"url\":\"x\"}}]}]}",
     "messages[0].content[0]", "'image_url' is not supported"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[\"text\"]}]}",
     "messages[0].content[0]", "must be an object"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}",
     "messages[0].content[0]", "type must be a string"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":1}]}]}",
     "messages[0].content[0]", "text must be a string"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
     "messages[0].content[0]", "text must be a string"},
    {API_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":"
     "\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":"
     "\"a\"}]}]}",
     "messages[0].content", "the limit is 3"},
    /* tool calls in history */
    {API_CHAT,
     "{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"1\"}]}]}",
     "messages[0].tool_calls[0].function", "must be an object"},
    {API_CHAT,
     "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"function\",\"function\":"
     "{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]}]}",
     "messages[0].tool_calls[0].function.arguments", "must be a JSON object"},
    {API_CHAT,
     "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"function\",\"function\":"
     "{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}",
     "messages[0].tool_calls[0].function.arguments", "must be a JSON object"},
    {API_CHAT,
     "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"function\",\"function\":"
     "{\"name\":\"a b\",\"arguments\":\"{}\"}}]}]}",
     "messages[0].tool_calls[0].function.name", "may only contain"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}",
     "messages[0].tool_calls", "only allowed in assistant messages"},
    {API_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":{}}]}",
     "messages[0].tool_calls", "must be an array"},
    {API_CHAT,
     "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"reasoning_content\":1}]}",
     "messages[0].reasoning_content", "must be a string"},
    {API_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\",\"tool_call_id\":5}]}",
     "messages[0].tool_call_id", "must be a string"},
    /* tools */
    {API_CHAT, CHAT(",\"tools\":{}"), "tools", "must be an array"},
    {API_CHAT, CHAT(",\"tools\":[1]"), "tools[0]", "must be an object"},
    {API_CHAT, CHAT(",\"tools\":[{\"type\":\"web_search\"}]"), "tools[0].type",
     "only \"function\" tools are"},
    {API_CHAT, CHAT(",\"tools\":[{\"type\":\"function\"}]"), "tools[0].function", "is required"},
    {API_CHAT, CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{}}]"),
     "tools[0].function.name", "is required"},
    {API_CHAT, CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"\"}}]"),
     "tools[0].function.name", "1 to 64 characters"},
    {API_CHAT,
     CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]"),
     "tools[0].function.parameters", "must be a JSON Schema object"},
    {API_CHAT,
     CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":1}}]"),
     "tools[0].function.description", "must be a string"},
    {API_CHAT,
     CHAT(
         ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\","
         "\"function\":{\"name\":\"f\"}}]"),
     "tools[1].function.name", "declared twice"},
    {API_CHAT, CHAT(",\"tool_choice\":\"required\""), "tool_choice", "needs a non-empty tools"},
    {API_CHAT, CHAT(",\"tool_choice\":\"any\""), "tool_choice", "is not one of"},
    {API_CHAT, CHAT(",\"tool_choice\":7"), "tool_choice", "must be a string or an object"},
    {API_CHAT,
     CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":"
          "{\"type\":\"function\",\"function\":{\"name\":\"g\"}}"),
     "tool_choice", "names function 'g', which is not in tools"},
    {API_CHAT, CHAT(",\"tool_choice\":{\"type\":\"function\"}"), "tool_choice",
     "must be {\"type\":\"function\""},
    {API_CHAT, CHAT(",\"parallel_tool_calls\":1"), "parallel_tool_calls", "must be a boolean"},
    {API_CHAT, CHAT(",\"reasoning_format\":\"hidden\""), "reasoning_format", "is not supported"},
    {API_CHAT, CHAT(",\"reasoning_format\":false"), "reasoning_format", "must be a string"},
    /* unsupported features */
    {API_CHAT, CHAT(",\"functions\":[{\"name\":\"f\"}]"), "functions", "not supported yet"},
    {API_CHAT, CHAT(",\"function_call\":\"auto\""), "function_call", "use tools and tool_choice"},
    {API_CHAT, CHAT(",\"response_format\":{\"type\":\"json_object\"}"), "response_format",
     "not supported yet"},
    {API_CHAT, CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{}}"),
     "response_format", "'json_schema' is not supported yet"},
    {API_CHAT, CHAT(",\"response_format\":\"text\""), "response_format", "must be an object"},
    /* strings */
    {API_CHAT, "{\"model\":7,\"messages\":[" U "]}", "model", "model must be a string"},
    {API_CHAT, CHAT(",\"user\":[1]"), "user", "user must be a string, got an array"},
    /* max_tokens */
    {API_CHAT, CHAT(",\"max_tokens\":0"), "max_tokens", "between 1 and 1000"},
    {API_CHAT, CHAT(",\"max_tokens\":-5"), "max_tokens", "between 1 and 1000"},
    {API_CHAT, CHAT(",\"max_tokens\":1.5"), "max_tokens", "must be an integer"},
    {API_CHAT, CHAT(",\"max_tokens\":\"100\""), "max_tokens", "must be an integer, got a string"},
    {API_CHAT, CHAT(",\"max_tokens\":1001"), "max_tokens", "between 1 and 1000"},
    {API_CHAT, CHAT(",\"max_tokens\":1e400"), "max_tokens", "must be an integer"},
    {API_CHAT, CHAT(",\"max_tokens\":99999999999999999999999"), "max_tokens", "between 1 and 1000"},
    {API_CHAT, CHAT(",\"max_tokens\":5,\"max_completion_tokens\":5000"), "max_completion_tokens",
     "between 1 and 1000"},
    {API_CHAT, CHAT(",\"max_completion_tokens\":true"), "max_completion_tokens",
     "must be an integer, got a boolean"},
    /* sampling numbers */
    {API_CHAT, CHAT(",\"temperature\":2.5"), "temperature", "<= 2"},
    {API_CHAT, CHAT(",\"temperature\":-0.1"), "temperature", ">= 0"},
    {API_CHAT, CHAT(",\"temperature\":\"hot\""), "temperature", "must be a number"},
    {API_CHAT, CHAT(",\"temperature\":1e999"), "temperature", "finite"},
    {API_CHAT, CHAT(",\"temperature\":{}"), "temperature", "got an object"},
    {API_CHAT, CHAT(",\"top_p\":0"), "top_p", "> 0"},
    {API_CHAT, CHAT(",\"top_p\":1.5"), "top_p", "<= 1"},
    {API_CHAT, CHAT(",\"top_k\":-1"), "top_k", "between 0 and"},
    {API_CHAT, CHAT(",\"top_k\":2.5"), "top_k", "must be an integer"},
    {API_CHAT, CHAT(",\"min_p\":1.1"), "min_p", "<= 1"},
    {API_CHAT, CHAT(",\"presence_penalty\":3"), "presence_penalty", "<= 2"},
    {API_CHAT, CHAT(",\"frequency_penalty\":-2.5"), "frequency_penalty", ">= -2"},
    {API_CHAT, CHAT(",\"repetition_penalty\":0"), "repetition_penalty", "> 0"},
    /* the range holds for the float the request keeps, and the message shows the value given */
    {API_CHAT, CHAT(",\"top_p\":1e-50"), "top_p", "top_p is 1e-50; it must be > 0"},
    {API_CHAT, CHAT(",\"repetition_penalty\":1e-300"), "repetition_penalty",
     "repetition_penalty is 1e-300; it must be > 0"},
    {API_CHAT, CHAT(",\"top_p\":1.0000001"), "top_p", "top_p is 1.0000001; it must be"},
    {API_CHAT, CHAT(",\"temperature\":2.0000000000000004"), "temperature",
     "temperature is 2.0000000000000004; it must be >= 0 and <= 2"},
    {API_CHAT, CHAT(",\"top_p\":1e9"), "top_p", "top_p is 1e+09; it must be > 0 and <= 1"},
    {API_CHAT, CHAT(",\"logit_bias\":{\"5\":100.0000001}"), "logit_bias",
     "logit_bias[\"5\"] is 100.0000001; it must be between -100 and 100"},
    {API_CHAT, CHAT(",\"repetition_penalty\":11"), "repetition_penalty", "<= 10"},
    {API_CHAT, CHAT(",\"seed\":\"x\""), "seed", "must be an integer"},
    {API_CHAT, CHAT(",\"seed\":-2"), "seed", "between -1 and"},
    {API_CHAT, CHAT(",\"seed\":1.5"), "seed", "must be an integer"},
    /* stop */
    {API_CHAT, CHAT(",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]"), "stop", "limit is 4"},
    {API_CHAT, CHAT(",\"stop\":5"), "stop", "string or an array of up to 4 strings"},
    {API_CHAT, CHAT(",\"stop\":[\"a\",1]"), "stop", "stop[1] must be a string"},
    {API_CHAT, CHAT(",\"stop\":\"\""), "stop", "must not be empty"},
    {API_CHAT, CHAT(",\"stop\":{\"a\":1}"), "stop", "got an object"},
    /* logit_bias */
    {API_CHAT, CHAT(",\"logit_bias\":[1]"), "logit_bias", "must be an object"},
    {API_CHAT, CHAT(",\"logit_bias\":{\"abc\":1}"), "logit_bias",
     "'abc' is not a token id between 0 and 4095"},
    {API_CHAT, CHAT(",\"logit_bias\":{\"-1\":1}"), "logit_bias", "not a token id"},
    {API_CHAT, CHAT(",\"logit_bias\":{\"4096\":1}"), "logit_bias", "between 0 and 4095"},
    {API_CHAT, CHAT(",\"logit_bias\":{\"12x\":1}"), "logit_bias", "not a token id"},
    {API_CHAT, CHAT(",\"logit_bias\":{\"5\":101}"), "logit_bias", "between -100 and 100"},
    {API_CHAT, CHAT(",\"logit_bias\":{\"5\":\"x\"}"), "logit_bias", "must be a number"},
    {API_CHAT, CHAT(",\"logit_bias\":{\"1\":1,\"2\":1,\"3\":1}"), "logit_bias", "limit is 2"},
    /* logprobs, n, stream */
    {API_CHAT, CHAT(",\"logprobs\":\"yes\""), "logprobs", "must be a boolean"},
    {API_CHAT, CHAT(",\"logprobs\":true,\"top_logprobs\":21"), "top_logprobs", "between 0 and 20"},
    {API_CHAT, CHAT(",\"top_logprobs\":2"), "top_logprobs", "requires logprobs"},
    {API_CHAT, CHAT(",\"n\":0"), "n", "between 1 and 4"},
    {API_CHAT, CHAT(",\"n\":9"), "n", "between 1 and 4"},
    {API_CHAT, CHAT(",\"n\":4,\"max_tokens\":1000"), "n",
     "n * max_tokens is 4000; the limit is 2000"},
    {API_CHAT, CHAT(",\"stream\":\"true\""), "stream", "must be a boolean"},
    {API_CHAT, CHAT(",\"cache_prompt\":0"), "cache_prompt", "must be a boolean"},
    {API_CHAT, CHAT(",\"stream_options\":{\"include_usage\":true}"), "stream_options",
     "only allowed when stream is true"},
    {API_CHAT, CHAT(",\"stream\":true,\"stream_options\":[]"), "stream_options",
     "must be an object"},
    {API_CHAT, CHAT(",\"stream\":true,\"stream_options\":{\"include_usage\":1}"),
     "stream_options.include_usage", "must be a boolean"},
    {API_CHAT, CHAT(",\"chat_template_kwargs\":true"), "chat_template_kwargs", "must be an object"},
    {API_CHAT, CHAT(",\"chat_template_kwargs\":{\"keep_past_thinking\":\"yes\"}"),
     "chat_template_kwargs.keep_past_thinking", "must be a boolean"},
    /* completions */
    {API_COMPLETION, "{\"model\":\"m\"}", "prompt", "prompt is required"},
    {API_COMPLETION, "{\"prompt\":12}", "prompt", "string or an array of token ids"},
    {API_COMPLETION, "{\"prompt\":[]}", "prompt", "empty array"},
    {API_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt", "array of 2 strings is not supported"},
    {API_COMPLETION, "{\"prompt\":[[1,2],[3]]}", "prompt",
     "array of token arrays is not supported"},
    {API_COMPLETION, "{\"prompt\":[1,\"a\"]}", "prompt[1]", "integer token id"},
    {API_COMPLETION, "{\"prompt\":[4096]}", "prompt[0]", "between 0 and 4095"},
    {API_COMPLETION, "{\"prompt\":[-1]}", "prompt[0]", "between 0 and 4095"},
    {API_COMPLETION, "{\"prompt\":[1,2.5]}", "prompt[1]", "integer token id"},
    {API_COMPLETION, "{\"prompt\":[1,2,3,4,5,6,7,8,9]}", "prompt", "the limit is 8"},
    {API_COMPLETION, "{\"prompt\":{\"text\":\"a\"}}", "prompt", "got an object"},
    {API_COMPLETION, COMPL(",\"logprobs\":6"), "logprobs", "between 0 and 5"},
    {API_COMPLETION, COMPL(",\"logprobs\":true"), "logprobs", "must be an integer, got a boolean"},
    {API_COMPLETION, COMPL(",\"echo\":true"), "echo", "not supported yet"},
    {API_COMPLETION, COMPL(",\"echo\":\"no\""), "echo", "must be a boolean"},
    {API_COMPLETION, COMPL(",\"best_of\":3"), "best_of", "not supported yet"},
    {API_COMPLETION, COMPL(",\"suffix\":\"end\""), "suffix", "not supported yet"},
    {API_COMPLETION, COMPL(",\"max_tokens\":0"), "max_tokens", "between 1 and 1000"},
    {API_COMPLETION, COMPL(",\"temperature\":3"), "temperature", "<= 2"},
    {API_COMPLETION, "{\"prompt\":\"\xfe\"}", "", "not valid UTF-8"},
    /* /tokenize, /detokenize */
    {2, "{}", "content", "content is required"},
    {2, "{\"content\":5}", "content", "must be a string"},
    {2, "{\"content\":\"a\",\"add_special\":\"x\"}", "add_special", "must be a boolean"},
    {2, "{\"content\":\"a\",\"with_pieces\":1}", "with_pieces", "must be a boolean"},
    {2, "nope", "", "not valid JSON"},
    {3, "{}", "tokens", "tokens is required"},
    {3, "{\"tokens\":\"1 2\"}", "tokens", "must be an array"},
    {3, "{\"tokens\":[1,\"a\"]}", "tokens[1]", "between 0 and 4095"},
    {3, "{\"tokens\":[99999]}", "tokens[0]", "between 0 and 4095"},
    {3, "{\"tokens\":[1,2,3,4,5,6,7,8,9]}", "tokens", "limit is 8"},
};

static int parse_any(int kind, const char *body, size_t len, api_error *e) {
    if (kind == 2) {
        api_tokenize_req r;
        int rc = api_tokenize_parse(&r, body, len, e);
        api_tokenize_free(&r);
        return rc;
    }
    if (kind == 3) {
        api_detokenize_req r;
        int rc = api_detokenize_parse(&r, body, len, &lim, e);
        api_detokenize_free(&r);
        return rc;
    }
    api_request r;
    int rc = api_request_parse(&r, (enum api_kind)kind, body, len, &lim, e);
    api_request_free(&r);
    return rc;
}

static void check_bad(int kind, const char *body, size_t len, const char *param, const char *msg,
                      const char *label) {
    api_error e;
    memset(&e, 0x5a, sizeof e);
    int rc = parse_any(kind, body, len, &e);
    int fails = check_failures;
    CHECK_EQ_INT(rc, API_EINVAL);
    CHECK_EQ_INT(e.status / 100, 4);
    CHECK_STR(e.type, "invalid_request_error");
    CHECK_STR(e.param, param);
    CHECK(e.code[0] != 0);
    if (!strstr(e.message, msg)) {
        fprintf(stderr, "  message lacks '%s'\n", msg);
        CHECK(0);
    }
    /* the error JSON the server sends */
    char *j = api_error_json(&e);
    cJSON *root = j ? cJSON_Parse(j) : NULL;
    cJSON *err = root ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
    CHECK(err != NULL);
    if (err) {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(err, "param");
        if (param[0])
            CHECK(cJSON_IsString(p) && !strcmp(p->valuestring, param));
        else
            CHECK(cJSON_IsNull(p));
        cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
        CHECK(cJSON_IsString(m) && !strcmp(m->valuestring, e.message));
    }
    cJSON_Delete(root);
    free(j);
    if (check_failures != fails)
        fprintf(stderr, "  in case %s: %.200s\n  got param '%s' message '%s'\n", label, body,
                e.param, e.message);
}

static void test_bad_requests(void) {
    int n = (int)(sizeof bad / sizeof bad[0]);
    for (int i = 0; i < n; i++) {
        char label[32];
        snprintf(label, sizeof label, "bad[%d]", i);
        check_bad(bad[i].kind, bad[i].body, strlen(bad[i].body), bad[i].param, bad[i].msg, label);
    }
    printf("%d bad-request cases\n", n);
    if (n < 60) CHECK(0);

    /* generated: huge arrays, deep nesting at the cJSON limit, NUL bytes, a body without NUL end */
    size_t cap = 4 << 20;
    char *b = malloc(cap);
    size_t o = (size_t)snprintf(b, cap, "{\"messages\":[");
    for (int i = 0; i < 100000; i++)
        o += (size_t)snprintf(b + o, cap - o, "%s" U, i ? "," : "");
    o += (size_t)snprintf(b + o, cap - o, "]}");
    check_bad(API_CHAT, b, o, "messages", "messages has 100000 entries; the limit is 4",
              "huge messages");
    o = (size_t)snprintf(b, cap, "{\"prompt\":[");
    for (int i = 0; i < 200000; i++)
        o += (size_t)snprintf(b + o, cap - o, "%s1", i ? "," : "");
    o += (size_t)snprintf(b + o, cap - o, "]}");
    check_bad(API_COMPLETION, b, o, "prompt", "prompt has 200000 token ids", "huge prompt");
    o = 0;
    for (int i = 0; i < 5000; i++)
        b[o++] = '[';
    for (int i = 0; i < 5000; i++)
        b[o++] = ']';
    check_bad(API_CHAT, b, o, "", "deeper than the limit", "deep array");
    o = 0;
    for (int i = 0; i < 100000; i++)
        o += (size_t)snprintf(b + o, cap - o, "{\"a\":");
    check_bad(API_CHAT, b, o, "", "deeper than the limit", "deep objects, unterminated");
    static const char nul[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\0b\"}]}";
    check_bad(API_CHAT, nul, sizeof nul - 1, "", "NUL byte at offset 40", "raw NUL");
    /* the parser must not read past len: a valid body followed by garbage outside len */
    const char *body = CHAT("") "GARBAGE";
    api_request r;
    api_error e;
    CHECK_EQ_INT(api_request_parse(&r, API_CHAT, body, strlen(body) - 7, &lim, &e), 0);
    api_request_free(&r);
    check_bad(API_CHAT, body, strlen(body) - 8, "", "not valid JSON", "cut body");
    /* 64 KiB stop string */
    o = (size_t)snprintf(b, cap, "{\"messages\":[" U "],\"stop\":\"");
    memset(b + o, 'x', 600);
    o += 600;
    o += (size_t)snprintf(b + o, cap - o, "\"}");
    check_bad(API_CHAT, b, o, "stop", "600 bytes long; the limit is 512", "long stop");
    free(b);
}

/* ---------------- happy paths ---------------- */

static void parse_ok(api_request *r, int kind, const char *body) {
    api_error e;
    int rc = api_request_parse(r, (enum api_kind)kind, body, strlen(body), &lim, &e);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "  unexpected error: %s (param %s) for %s\n", e.message, e.param, body);
}

static void test_chat_ok(void) {
    api_request r;
    parse_ok(&r, API_CHAT,
             "{\"model\":\"lfm2\",\"messages\":["
             "{\"role\":\"developer\",\"content\":\"Be terse.\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello, \"},"
             "{\"type\":\"text\",\"text\":\"caf\\u00e9 \\ud83d\\ude00 \xe6\x97\xa5\"}]},"
             "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]},"
             "{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"c1\"}],"
             "\"max_tokens\":100,\"temperature\":0,\"top_p\":0.5,\"top_k\":7,\"min_p\":0.1,"
             "\"seed\":12345678901,\"stop\":[\"\\n\\n\",\"END\"],\"presence_penalty\":-1.5,"
             "\"frequency_penalty\":2,\"repetition_penalty\":1.1,"
             "\"logit_bias\":{\"7\":-100,\"42\":2.5},\"logprobs\":true,\"top_logprobs\":3,\"n\":2,"
             "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"user\":\"u1\","
             "\"tools\":[],\"tool_choice\":\"none\",\"response_format\":{\"type\":\"text\"},"
             "\"unknown_field\":{\"nested\":[1,2,{\"x\":null}]},\"metadata\":null}");
    CHECK_EQ_INT(r.kind, API_CHAT);
    CHECK_STR(r.model, "lfm2");
    CHECK_EQ_INT(r.n_messages, 4);
    if (r.n_messages == 4) {
        CHECK_EQ_INT(r.messages[0].role, API_ROLE_SYSTEM);
        CHECK_STR(r.messages[0].content, "Be terse.");
        CHECK_EQ_INT(r.messages[1].role, API_ROLE_USER);
        CHECK_STR(r.messages[1].content, "Hello, caf\xc3\xa9 \xf0\x9f\x98\x80 \xe6\x97\xa5");
        CHECK_EQ_INT(r.messages[1].len, strlen(r.messages[1].content));
        CHECK_EQ_INT(r.messages[2].role, API_ROLE_ASSISTANT);
        CHECK_STR(r.messages[2].content, "");
        CHECK_EQ_INT(r.messages[3].role, API_ROLE_TOOL);
        CHECK_STR(r.messages[3].content, "42");
    }
    CHECK_EQ_INT(r.max_tokens, 100);
    CHECK_NEAR(r.temperature, 0, 0);
    CHECK_NEAR(r.top_p, 0.5, 1e-7);
    CHECK_EQ_INT(r.top_k, 7);
    CHECK_NEAR(r.min_p, 0.1, 1e-7);
    CHECK(r.has_seed);
    CHECK(r.seed == 12345678901ULL);
    CHECK_EQ_INT(r.n_stop, 2);
    CHECK_STR(r.stop[0], "\n\n");
    CHECK_STR(r.stop[1], "END");
    CHECK_NEAR(r.presence_penalty, -1.5, 0);
    CHECK_NEAR(r.frequency_penalty, 2, 0);
    CHECK_NEAR(r.repetition_penalty, 1.1, 1e-6);
    CHECK_EQ_INT(r.n_logit_bias, 2);
    if (r.n_logit_bias == 2) {
        CHECK_EQ_INT(r.logit_bias[0].id, 7);
        CHECK_NEAR(r.logit_bias[0].bias, -100, 0);
        CHECK_EQ_INT(r.logit_bias[1].id, 42);
        CHECK_NEAR(r.logit_bias[1].bias, 2.5, 0);
    }
    CHECK(r.logprobs);
    CHECK_EQ_INT(r.top_logprobs, 3);
    CHECK_EQ_INT(r.n, 2);
    CHECK(r.stream);
    CHECK(r.include_usage);
    CHECK_STR(r.user, "u1");
    api_request_free(&r);
    CHECK(r.messages == NULL && r.n_messages == 0);
    api_request_free(&r); /* zeroed: no-op */

    /* defaults are llama-server's */
    parse_ok(&r, API_CHAT, "{\"messages\":[" U "]}");
    CHECK_STR(r.model, "");
    CHECK_STR(r.user, "");
    CHECK_EQ_INT(r.max_tokens, -1);
    CHECK_NEAR(r.temperature, 0.8, 1e-7);
    CHECK_NEAR(r.top_p, 0.95, 1e-7);
    CHECK_EQ_INT(r.top_k, 40);
    CHECK_NEAR(r.min_p, 0.05, 1e-7);
    CHECK_NEAR(r.repetition_penalty, 1, 0);
    CHECK_NEAR(r.presence_penalty, 0, 0);
    CHECK(!r.has_seed);
    CHECK_EQ_INT(r.n_stop, 0);
    CHECK_EQ_INT(r.n, 1);
    CHECK(!r.stream && !r.include_usage && !r.logprobs);
    CHECK(r.cache_prompt);
    CHECK_EQ_INT(r.top_logprobs, 0);
    CHECK(r.prompt == NULL && r.prompt_tokens == NULL);
    api_request_free(&r);
    parse_ok(&r, API_CHAT, "{\"messages\":[" U "],\"cache_prompt\":false}");
    CHECK(!r.cache_prompt);
    api_request_free(&r);

    /* nulls mean "default"; max_completion_tokens wins; seed -1 = random; stop as one string */
    parse_ok(&r, API_CHAT,
             "{\"messages\":[" U "],\"temperature\":null,\"max_tokens\":5,"
             "\"max_completion_tokens\":9,\"seed\":-1,\"stop\":\"###\",\"stream\":false,"
             "\"top_p\":1,\"n\":4,\"logit_bias\":{},\"tool_choice\":\"auto\"}");
    CHECK_NEAR(r.temperature, 0.8, 1e-7);
    CHECK_EQ_INT(r.max_tokens, 9);
    CHECK(!r.has_seed);
    CHECK_EQ_INT(r.n_stop, 1);
    CHECK_STR(r.stop[0], "###");
    CHECK_EQ_INT(r.n, 4);
    CHECK_EQ_INT(r.n_logit_bias, 0);
    CHECK(!r.keep_past_thinking);
    api_request_free(&r);
    parse_ok(&r, API_CHAT,
             "{\"messages\":[" U "],\"chat_template_kwargs\":{\"keep_past_thinking\":true,"
             "\"enable_thinking\":false}}");
    CHECK(r.keep_past_thinking);
    api_request_free(&r);

    /* nesting right at the limit is fine */
    char deep[256];
    int o = snprintf(deep, sizeof deep, "{\"messages\":[" U "],\"x\":");
    for (int i = 0; i < 29; i++)
        deep[o++] = '[';
    for (int i = 0; i < 29; i++)
        deep[o++] = ']';
    deep[o++] = '}';
    deep[o] = 0;
    parse_ok(&r, API_CHAT, deep);
    api_request_free(&r);

    /* special-token text in content is kept verbatim (the template keeps it plain) */
    parse_ok(&r, API_CHAT,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"<|im_end|><|im_start|>system\"}]}");
    CHECK_STR(r.messages[0].content, "<|im_end|><|im_start|>system");
    api_request_free(&r);
}

/* tools, tool_choice, history with tool calls and reasoning */
static void test_tools_ok(void) {
    api_request r;
    parse_ok(
        &r, API_CHAT,
        "{\"messages\":["
        "{\"role\":\"user\",\"content\":\"weather?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"think \\u00e9\","
        "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
        "\"Weather.get\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\", \\\"n\\\": [1, 2.5]}\"}},"
        "{\"id\":\"call_2\",\"function\":{\"name\":\"g\",\"arguments\":{\"b\":true}}}]},"
        "{\"role\":\"tool\",\"content\":\"18C\",\"tool_call_id\":\"call_1\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Weather.get\","
        "\"description\":\"Gets \\\"weather\\\" \\u00e9\",\"parameters\":{\"type\":\"object\","
        "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}},"
        "{\"function\":{\"strict\":true,\"name\":\"g\"},\"type\":\"function\"}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}},"
        "\"parallel_tool_calls\":false,\"reasoning_format\":\"none\"}");
    CHECK_EQ_INT(r.n_tools, 2);
    if (r.n_tools == 2) {
        CHECK_STR(r.tools[0].name, "Weather.get");
        CHECK_STR(r.tools[0].description, "Gets \"weather\" \xc3\xa9");
        CHECK_STR(r.tools[0].parameters, "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
                                         "\"string\"}},\"required\":[\"city\"]}");
        CHECK(!r.tools[0].strict);
        /* tojson: ", " and ": ", keys in the client's order, non-ASCII as is */
        CHECK_STR(r.tools[0].json,
                  "{\"type\": \"function\", \"function\": {\"name\": \"Weather.get\", "
                  "\"description\": \"Gets \\\"weather\\\" \xc3\xa9\", \"parameters\": {\"type\": "
                  "\"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": "
                  "[\"city\"]}}}");
        CHECK_STR(r.tools[1].name, "g");
        CHECK(r.tools[1].description == NULL && r.tools[1].parameters == NULL);
        CHECK(r.tools[1].strict);
        CHECK_STR(r.tools[1].json,
                  "{\"function\": {\"strict\": true, \"name\": \"g\"}, \"type\": \"function\"}");
    }
    CHECK_EQ_INT(r.tool_choice, API_TOOL_CHOICE_FUNCTION);
    CHECK_EQ_INT(r.tool_choice_index, 1);
    CHECK(!r.parallel_tool_calls);
    CHECK_EQ_INT(r.reasoning_format, API_REASONING_NONE);
    CHECK_EQ_INT(r.n_messages, 3);
    if (r.n_messages == 3) {
        const api_message *a = &r.messages[1];
        CHECK_STR(a->content, "");
        CHECK_STR(a->reasoning, "think \xc3\xa9");
        CHECK_EQ_INT(a->n_tool_calls, 2);
        if (a->n_tool_calls == 2) {
            CHECK_STR(a->tool_calls[0].id, "call_1");
            CHECK_STR(a->tool_calls[0].name, "Weather.get");
            CHECK_STR(a->tool_calls[0].arguments, "{\"city\":\"Paris\",\"n\":[1,2.5]}");
            CHECK_STR(a->tool_calls[1].id, "call_2");
            CHECK_STR(a->tool_calls[1].arguments, "{\"b\":true}");
        }
        CHECK_STR(r.messages[2].tool_call_id, "call_1");
        CHECK(r.messages[0].reasoning == NULL && r.messages[0].tool_calls == NULL);
    }
    api_request_free(&r);

    /* defaults: no tools = "none"; tools = "auto"; "auto" without tools stays "none" */
    parse_ok(&r, API_CHAT, CHAT(""));
    CHECK_EQ_INT(r.tool_choice, API_TOOL_CHOICE_NONE);
    CHECK_EQ_INT(r.tool_choice_index, -1);
    CHECK(r.parallel_tool_calls);
    CHECK_EQ_INT(r.reasoning_format, API_REASONING_AUTO);
    api_request_free(&r);
    parse_ok(&r, API_CHAT,
             CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]"));
    CHECK_EQ_INT(r.tool_choice, API_TOOL_CHOICE_AUTO);
    api_request_free(&r);
    parse_ok(&r, API_CHAT, CHAT(",\"tool_choice\":\"auto\",\"reasoning_format\":\"deepseek\""));
    CHECK_EQ_INT(r.tool_choice, API_TOOL_CHOICE_NONE);
    api_request_free(&r);
    parse_ok(&r, API_CHAT,
             CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                  "\"tool_choice\":\"required\""));
    CHECK_EQ_INT(r.tool_choice, API_TOOL_CHOICE_REQUIRED);
    api_request_free(&r);
    parse_ok(&r, API_COMPLETION, COMPL(""));
    CHECK_EQ_INT(r.tool_choice_index, -1);
    CHECK(r.parallel_tool_calls);
    api_request_free(&r);
}

static void test_completion_ok(void) {
    api_request r;
    parse_ok(&r, API_COMPLETION,
             "{\"model\":\"m\",\"prompt\":\"Once upon\",\"max_tokens\":16,\"logprobs\":3,"
             "\"echo\":false,\"best_of\":1,\"suffix\":null,\"stream\":true}");
    CHECK_EQ_INT(r.kind, API_COMPLETION);
    CHECK_STR(r.prompt, "Once upon");
    CHECK_EQ_INT(r.prompt_len, 9);
    CHECK(r.prompt_tokens == NULL);
    CHECK(r.messages == NULL);
    CHECK(r.logprobs);
    CHECK_EQ_INT(r.top_logprobs, 3);
    CHECK_EQ_INT(r.max_tokens, 16);
    api_request_free(&r);

    parse_ok(&r, API_COMPLETION, "{\"prompt\":[1, 4095, 0, 17]}");
    CHECK(r.prompt == NULL);
    CHECK_EQ_INT(r.n_prompt_tokens, 4);
    if (r.n_prompt_tokens == 4) {
        CHECK_EQ_INT(r.prompt_tokens[0], 1);
        CHECK_EQ_INT(r.prompt_tokens[1], 4095);
        CHECK_EQ_INT(r.prompt_tokens[3], 17);
    }
    CHECK(!r.logprobs);
    api_request_free(&r);

    parse_ok(&r, API_COMPLETION, "{\"prompt\":[\"only one\"],\"logprobs\":0}");
    CHECK_STR(r.prompt, "only one");
    CHECK(r.logprobs);
    CHECK_EQ_INT(r.top_logprobs, 0);
    api_request_free(&r);

    parse_ok(&r, API_COMPLETION, "{\"prompt\":\"\"}");
    CHECK_STR(r.prompt, "");
    CHECK_EQ_INT(r.prompt_len, 0);
    api_request_free(&r);

    /* a chat body sent to /v1/completions names the missing field */
    api_error e;
    const char *chat = CHAT("");
    CHECK_EQ_INT(api_request_parse(&r, API_COMPLETION, chat, strlen(chat), &lim, &e), API_EINVAL);
    CHECK_STR(e.param, "prompt");
    api_request_free(&r);
    /* no limits given: the defaults apply (vocab unchecked) */
    const char *big = "{\"prompt\":[100000]}";
    CHECK_EQ_INT(api_request_parse(&r, API_COMPLETION, big, strlen(big), NULL, &e), 0);
    api_request_free(&r);
}

static void test_tokenize_ok(void) {
    api_tokenize_req t;
    api_error e;
    const char *b1 = "{\"content\":\"Hi <|im_end|>\"}";
    CHECK_EQ_INT(api_tokenize_parse(&t, b1, strlen(b1), &e), 0);
    CHECK_STR(t.content, "Hi <|im_end|>");
    CHECK(!t.add_special && t.parse_special && !t.with_pieces);
    api_tokenize_free(&t);
    const char *b2 =
        "{\"content\":\"x\",\"add_special\":true,\"parse_special\":false,\"with_pieces\":true}";
    CHECK_EQ_INT(api_tokenize_parse(&t, b2, strlen(b2), &e), 0);
    CHECK(t.add_special && !t.parse_special && t.with_pieces);
    api_tokenize_free(&t);
    api_detokenize_req d;
    const char *b3 = "{\"tokens\":[1,2,4095]}";
    CHECK_EQ_INT(api_detokenize_parse(&d, b3, strlen(b3), &lim, &e), 0);
    CHECK_EQ_INT(d.n_tokens, 3);
    CHECK_EQ_INT(d.tokens[2], 4095);
    api_detokenize_free(&d);
    const char *b4 = "{\"tokens\":[]}";
    CHECK_EQ_INT(api_detokenize_parse(&d, b4, strlen(b4), &lim, &e), 0);
    CHECK_EQ_INT(d.n_tokens, 0);
    api_detokenize_free(&d);
}

/* ---------------- responses: exact JSON ---------------- */

static void expect_json(char *got, const char *want, int line) {
    if (!got || strcmp(got, want)) {
        fprintf(stderr, "line %d: JSON differs\n got: %s\nwant: %s\n", line, got ? got : "(null)",
                want);
        CHECK(0);
    }
    /* always parseable */
    cJSON *p = got ? cJSON_Parse(got) : NULL;
    CHECK(p != NULL);
    cJSON_Delete(p);
    free(got);
}
#define EXPECT_JSON(got, want) expect_json(got, want, __LINE__)

static void test_responses(void) {
    api_resp_meta chat = {"chatcmpl-abc", 1700000000, "lfm2-350m"};
    api_resp_meta cmpl = {"cmpl-xyz", 1700000001, "m"};
    api_usage u = {5, 2, 3};
    api_choice c = {.index = 0, .text = "Hello", .len = 5, .finish_reason = "stop"};
    EXPECT_JSON(
        api_chat_completion_json(&chat, &c, 1, &u),
        "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1700000000,"
        "\"model\":\"lfm2-350m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
        "\"assistant\",\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":3}}}");

    api_top_logprob tops[2] = {{"He", 2, -0.5f}, {"Hi", 2, -1.25f}};
    api_token_logprob lps[2] = {{"He", 2, -0.5f, tops, 2}, {"llo", 3, -0.25f, NULL, 0}};
    api_choice cl[2] = {{.index = 0,
                         .text = "Hello",
                         .len = 5,
                         .finish_reason = "length",
                         .logprobs = lps,
                         .n_logprobs = 2},
                        {.index = 1,
                         .text = "",
                         .len = 0,
                         .finish_reason = "stop",
                         .logprobs = lps,
                         .n_logprobs = 0}};
    EXPECT_JSON(
        api_chat_completion_json(&chat, cl, 2, &u),
        "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1700000000,"
        "\"model\":\"lfm2-350m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
        "\"assistant\",\"content\":\"Hello\"},\"logprobs\":{\"content\":[{\"token\":\"He\","
        "\"logprob\":-0.5,\"bytes\":[72,101],\"top_logprobs\":[{\"token\":\"He\",\"logprob\":"
        "-0.5,\"bytes\":[72,101]},{\"token\":\"Hi\",\"logprob\":-1.25,\"bytes\":[72,105]}]},"
        "{\"token\":\"llo\",\"logprob\":-0.25,\"bytes\":[108,108,111],\"top_logprobs\":[]}]},"
        "\"finish_reason\":\"length\"},{\"index\":1,\"message\":{\"role\":\"assistant\","
        "\"content\":\"\"},\"logprobs\":{\"content\":[]},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":3}}}");

    api_choice tc = {.index = 0,
                     .text = "Hello",
                     .len = 5,
                     .finish_reason = "length",
                     .logprobs = lps,
                     .n_logprobs = 2,
                     .text_offset = 10};
    EXPECT_JSON(api_text_completion_json(&cmpl, &tc, 1, &u),
                "{\"id\":\"cmpl-xyz\",\"object\":\"text_completion\",\"created\":1700000001,"
                "\"model\":\"m\",\"choices\":[{\"text\":\"Hello\",\"index\":0,\"logprobs\":{"
                "\"tokens\":[\"He\",\"llo\"],\"token_logprobs\":[-0.5,-0.25],\"top_logprobs\":"
                "[{\"He\":-0.5,\"Hi\":-1.25},{}],\"text_offset\":[10,12]},\"finish_reason\":"
                "\"length\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,"
                "\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":3}}}");
    api_choice tc2 = {.index = 0, .text = " there", .len = 6, .finish_reason = NULL};
    EXPECT_JSON(api_text_completion_json(&cmpl, &tc2, 1, &u),
                "{\"id\":\"cmpl-xyz\",\"object\":\"text_completion\",\"created\":1700000001,"
                "\"model\":\"m\",\"choices\":[{\"text\":\" there\",\"index\":0,\"logprobs\":null,"
                "\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,"
                "\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":3}}}");

    /* stream chunks */
    api_choice first = {.index = 0};
    EXPECT_JSON(api_chat_chunk_json(&chat, &first, true, false),
                "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":"
                "1700000000,\"model\":\"lfm2-350m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                "\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}");
    api_choice mid = {.index = 1, .text = "lo \"q\"\n", .len = 7};
    EXPECT_JSON(
        api_chat_chunk_json(&chat, &mid, false, true),
        "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":"
        "1700000000,\"model\":\"lfm2-350m\",\"choices\":[{\"index\":1,\"delta\":{\"content\":"
        "\"lo \\\"q\\\"\\n\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}");
    api_choice midlp = {.index = 0, .text = "He", .len = 2, .logprobs = lps, .n_logprobs = 1};
    EXPECT_JSON(
        api_chat_chunk_json(&chat, &midlp, false, false),
        "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":"
        "1700000000,\"model\":\"lfm2-350m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
        "\"He\"},\"logprobs\":{\"content\":[{\"token\":\"He\",\"logprob\":-0.5,\"bytes\":"
        "[72,101],\"top_logprobs\":[{\"token\":\"He\",\"logprob\":-0.5,\"bytes\":[72,101]},"
        "{\"token\":\"Hi\",\"logprob\":-1.25,\"bytes\":[72,105]}]}]},\"finish_reason\":null}]}");
    api_choice last = {.index = 0, .finish_reason = "length"};
    EXPECT_JSON(api_chat_chunk_json(&chat, &last, false, false),
                "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":"
                "1700000000,\"model\":\"lfm2-350m\",\"choices\":[{\"index\":0,\"delta\":{},"
                "\"logprobs\":null,\"finish_reason\":\"length\"}]}");
    EXPECT_JSON(api_usage_chunk_json(&chat, API_CHAT, &u),
                "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":"
                "1700000000,\"model\":\"lfm2-350m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
                "\"completion_tokens\":2,\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":3}}}");
    api_choice tchunk = {.index = 0, .text = "ab", .len = 2};
    EXPECT_JSON(api_text_chunk_json(&cmpl, &tchunk, false),
                "{\"id\":\"cmpl-xyz\",\"object\":\"text_completion\",\"created\":1700000001,"
                "\"model\":\"m\",\"choices\":[{\"text\":\"ab\",\"index\":0,\"logprobs\":null,"
                "\"finish_reason\":null}]}");
    api_choice tlast = {.index = 0, .finish_reason = "stop"};
    EXPECT_JSON(api_text_chunk_json(&cmpl, &tlast, true),
                "{\"id\":\"cmpl-xyz\",\"object\":\"text_completion\",\"created\":1700000001,"
                "\"model\":\"m\",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,"
                "\"finish_reason\":\"stop\"}],\"usage\":null}");
    EXPECT_JSON(api_usage_chunk_json(&cmpl, API_COMPLETION, &u),
                "{\"id\":\"cmpl-xyz\",\"object\":\"text_completion\",\"created\":1700000001,"
                "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
                "\"completion_tokens\":2,\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":3}}}");

    /* errors */
    api_error e;
    api_error_set(&e, 400, "temperature", "invalid_value", "temperature is %g; it must be <= %d",
                  3.0, 2);
    EXPECT_JSON(api_error_json(&e),
                "{\"error\":{\"message\":\"temperature is 3; it must be <= 2\",\"type\":"
                "\"invalid_request_error\",\"param\":\"temperature\",\"code\":\"invalid_value\"}}");
    api_error_set(&e, 401, NULL, NULL, "invalid API key");
    EXPECT_JSON(api_error_json(&e), "{\"error\":{\"message\":\"invalid API key\",\"type\":"
                                    "\"invalid_request_error\",\"param\":null,\"code\":null}}");
    CHECK_EQ_INT(api_error_set(&e, 500, NULL, NULL, "boom"), API_ENOMEM);
    EXPECT_JSON(api_error_json(&e), "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\","
                                    "\"param\":null,\"code\":null}}");
    api_error z = {.status = 503};
    snprintf(z.message, sizeof z.message, "busy");
    EXPECT_JSON(api_error_json(&z), "{\"error\":{\"message\":\"busy\",\"type\":\"server_error\","
                                    "\"param\":null,\"code\":null}}");

    /* models, tokenize, detokenize */
    EXPECT_JSON(api_models_json("lfm2-350m", 1700000000, "lfm2"),
                "{\"object\":\"list\",\"data\":[{\"id\":\"lfm2-350m\",\"object\":\"model\","
                "\"created\":1700000000,\"owned_by\":\"lfm2\"}]}");
    int32_t ids[3] = {1, 2, 300};
    const char *pieces[3] = {"<|startoftext|>", "\xC3", " caf\xC3\xA9"};
    size_t plens[3] = {15, 1, 6};
    EXPECT_JSON(api_tokenize_json(ids, 3, NULL, NULL), "{\"tokens\":[1,2,300]}");
    EXPECT_JSON(api_tokenize_json(ids, 3, pieces, plens),
                "{\"tokens\":[{\"id\":1,\"piece\":\"<|startoftext|>\"},{\"id\":2,\"piece\":[195]},"
                "{\"id\":300,\"piece\":\" caf\xC3\xA9\"}]}");
    EXPECT_JSON(api_tokenize_json(ids, 0, NULL, NULL), "{\"tokens\":[]}");
    EXPECT_JSON(api_detokenize_json("h\xC3\xA9", 3), "{\"content\":\"h\xC3\xA9\"}");

    /* invalid UTF-8 and NUL in text become U+FFFD; -inf log-probs become -9999 */
    api_top_logprob bt[1] = {{"\xE6\x97", 2, -INFINITY}};
    api_token_logprob bl[1] = {{"\xE6\x97", 2, -INFINITY, bt, 1}};
    api_choice bad_text = {
        .index = 0, .text = "a\xC3 b\0c", .len = 6, .logprobs = bl, .n_logprobs = 1};
    EXPECT_JSON(
        api_chat_chunk_json(&chat, &bad_text, false, false),
        "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":"
        "1700000000,\"model\":\"lfm2-350m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
        "\"a\xEF\xBF\xBD b\xEF\xBF\xBD"
        "c\"},\"logprobs\":{\"content\":[{\"token\":"
        "\"\xEF\xBF\xBD\xEF\xBF\xBD\",\"logprob\":-9999,\"bytes\":[230,151],\"top_logprobs\":"
        "[{\"token\":\"\xEF\xBF\xBD\xEF\xBF\xBD\",\"logprob\":-9999,\"bytes\":[230,151]}]}]},"
        "\"finish_reason\":null}]}");
}

static void test_ids_utf8(void) {
    char a[64], b[64], c[64];
    api_make_id(a, sizeof a, "chatcmpl-", 1, 2);
    api_make_id(b, sizeof b, "chatcmpl-", 1, 2);
    api_make_id(c, sizeof c, "chatcmpl-", 1, 3);
    CHECK_STR(a, b);
    CHECK(strcmp(a, c) != 0);
    CHECK_EQ_INT(strlen(a), 9 + 24);
    CHECK(!strncmp(a, "chatcmpl-", 9));
    for (int i = 9; i < 33; i++)
        CHECK((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= 'A' && a[i] <= 'Z') ||
              (a[i] >= '0' && a[i] <= '9'));
    api_make_id(a, sizeof a, "cmpl-", 0xFFFFFFFFFFFFFFFFULL, 0x123456789ULL);
    CHECK_EQ_INT(strlen(a), 5 + 24);

    CHECK(api_utf8_valid("", 0));
    CHECK(api_utf8_valid("a\xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80", 10));
    CHECK(!api_utf8_valid("\xC3", 1));
    CHECK(!api_utf8_valid("\xC1\xBF", 2));         /* overlong */
    CHECK(!api_utf8_valid("\xE0\x80\xAF", 3));     /* overlong */
    CHECK(!api_utf8_valid("\xED\xB0\x80", 3));     /* surrogate */
    CHECK(!api_utf8_valid("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(!api_utf8_valid("\xF8\x88\x80\x80\x80", 5));
    CHECK(!api_utf8_valid("\x80", 1));
    CHECK_EQ_INT(api_utf8_complete("ab", 2), 2);
    CHECK_EQ_INT(api_utf8_complete("a\xC3", 2), 1);
    CHECK_EQ_INT(api_utf8_complete("a\xC3\xA9", 3), 3);
    CHECK_EQ_INT(api_utf8_complete("a\xE6\x97", 3), 1);
    CHECK_EQ_INT(api_utf8_complete("a\xF0\x9F\x98", 4), 1);
    CHECK_EQ_INT(api_utf8_complete("a\xF0\x9F\x98\x80", 5), 5);
    CHECK_EQ_INT(api_utf8_complete("", 0), 0);
    CHECK_STR(api_role_name(API_ROLE_TOOL), "tool");
    CHECK_STR(api_role_name(API_ROLE_SYSTEM), "system");
}

/* Random mutations of a valid body never crash and always give 0 or a 400 with a message. */
static void test_fuzz(void) {
    const char *base =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"hi\"}]}],\"max_tokens\":10,\"temperature\":0.5,\"stop\":[\"a\"],"
        "\"logit_bias\":{\"3\":1},\"n\":2,\"stream\":true,\"stream_options\":{\"include_usage\":"
        "true}}";
    size_t n = strlen(base);
    char *buf = malloc(n + 16);
    unsigned long long s = 12345;
    const char subst[] = "{}[]\",:0-e.9 \\u\xff\xc3tnf";
    int ok = 0, bad400 = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, base, n);
        size_t len = n;
        int muts = 1 + (int)(s % 3);
        for (int m = 0; m < muts; m++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pos = (size_t)(s >> 33) % len;
            int op = (int)((s >> 20) % 3);
            char ch = subst[(s >> 40) % (sizeof subst - 1)];
            if (op == 0)
                buf[pos] = ch;
            else if (op == 1 && len > 1) {
                memmove(buf + pos, buf + pos + 1, len - pos - 1);
                len--;
            } else {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = ch;
                len++;
            }
        }
        for (int kind = 0; kind < 2; kind++) {
            api_request r;
            api_error e;
            int rc = api_request_parse(&r, (enum api_kind)kind, buf, len, &lim, &e);
            if (rc == 0)
                ok++;
            else {
                CHECK_EQ_INT(e.status, 400);
                CHECK(e.message[0] != 0);
                bad400++;
            }
            api_request_free(&r);
        }
    }
    free(buf);
    CHECK(ok > 100 && bad400 > 100);
}

/* Random text (valid and broken UTF-8, quotes, control bytes) always yields parseable JSON, and
 * valid text without NUL comes back byte for byte. */
static void test_random_text_json(void) {
    static const char *atoms[] = {
        "a",    " ",          "\"",          "\\",       "\n",           "\t",
        "\x01", "\x1f",       "\x7f",        "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x98\x80",
        "\xC3", "\xE6\x97",   "\xFF",        "\x80",     "\xED\xA0\x80", "\0",
        "/",    "<|im_end|>", "\xEF\xBF\xBD"};
    unsigned long long s = 99;
    api_resp_meta m = {"chatcmpl-x", 1, "m"};
    for (int it = 0; it < 3000; it++) {
        char text[256];
        size_t len = 0;
        int parts = (int)((s >> 7) % 12);
        for (int k = 0; k < parts; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            const char *a = atoms[(s >> 33) % (sizeof atoms / sizeof atoms[0])];
            size_t al = a[0] ? strlen(a) : 1; /* "\0" is one NUL byte */
            memcpy(text + len, a, al);
            len += al;
        }
        api_top_logprob top = {text, len, -1.5f};
        api_token_logprob lp = {text, len, -0.5f, &top, 1};
        api_choice c = {.index = 0, .text = text, .len = len, .logprobs = &lp, .n_logprobs = 1};
        char *j[3] = {api_chat_chunk_json(&m, &c, false, false),
                      api_text_completion_json(&m, &c, 1, &(api_usage){1, 1, 0}),
                      api_tokenize_json(&(int32_t){5}, 1, (const char *const[]){text}, &len)};
        bool clean = api_utf8_valid(text, len) && !memchr(text, 0, len);
        for (int k = 0; k < 3; k++) {
            cJSON *p = j[k] ? cJSON_Parse(j[k]) : NULL;
            CHECK(p != NULL);
            CHECK(j[k] && api_utf8_valid(j[k], strlen(j[k])));
            if (p && k == 0 && clean) {
                cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(p, "choices"), 0);
                cJSON *d = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content");
                CHECK(cJSON_IsString(d) && strlen(d->valuestring) == len &&
                      !memcmp(d->valuestring, text, len));
                cJSON *b = cJSON_GetObjectItem(
                    cJSON_GetArrayItem(
                        cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "content"), 0),
                    "bytes");
                CHECK_EQ_INT(cJSON_GetArraySize(b), len);
            }
            if (p && k == 2 && !clean) { /* broken pieces come back as byte arrays */
                cJSON *pc = cJSON_GetObjectItem(
                    cJSON_GetArrayItem(cJSON_GetObjectItem(p, "tokens"), 0), "piece");
                CHECK(cJSON_IsArray(pc) && cJSON_GetArraySize(pc) == (int)len);
            }
            cJSON_Delete(p);
            free(j[k]);
        }
    }
}

int main(void) {
    api_limits_default(&lim);
    lim.n_vocab = 4096;
    lim.max_tokens = 1000;
    lim.max_n = 4;
    lim.max_total_tokens = 2000;
    lim.max_messages = 4;
    lim.max_parts = 3;
    lim.max_prompt_tokens = 8;
    lim.max_logit_bias = 2;
    test_bad_requests();
    test_chat_ok();
    test_tools_ok();
    test_completion_ok();
    test_tokenize_ok();
    test_responses();
    test_ids_utf8();
    test_fuzz();
    test_random_text_json();
    return check_done("test_api");
}
