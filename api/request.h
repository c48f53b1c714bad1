/* request.h: OpenAI request bodies parsed and validated into plain C structs. */
#ifndef LFM2_API_REQUEST_H
#define LFM2_API_REQUEST_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define API_MAX_STOP 4           /* OpenAI's limit on stop strings */
#define API_MAX_STOP_LEN 512     /* bytes per stop string */
#define API_MAX_TOP_LOGPROBS 20  /* chat top_logprobs 0..20 */
#define API_MAX_LOGPROBS_COMPL 5 /* completions logprobs 0..5 */

/* Error codes (negative). Every error also fills an api_error. */
enum { API_EINVAL = -1, API_ENOMEM = -2 };

/* What the server turns into {"error":{"message","type","param","code"}} (see response.h). */
typedef struct api_error {
    int status;        /* HTTP status: 400 for client mistakes, 500 for allocation failure */
    char message[512]; /* names the field, the value's problem and the limit */
    char param[64];    /* the offending field ("messages[1].content", "temperature"); "" = null */
    char code[48];     /* machine code ("invalid_value", "not_supported", ...); "" = null */
    char type[48];     /* "invalid_request_error" or "server_error" */
} api_error;

/* Limits the server applies; api_limits_default fills sane values. */
typedef struct api_limits {
    int n_vocab; /* token ids (prompt arrays, logit_bias keys) must be < n_vocab; 0 = unchecked */
    int max_tokens;        /* largest max_tokens / max_completion_tokens accepted */
    int max_n;             /* largest n */
    long max_total_tokens; /* largest n * max_tokens */
    int max_messages;      /* messages per request */
    int max_parts;         /* content parts per message */
    int max_prompt_tokens; /* length of a token-id prompt array */
    int max_logit_bias;    /* entries in logit_bias */
    int max_depth;         /* JSON nesting depth of the body */
    int max_tools;         /* entries in tools, and tool_calls per assistant message */
} api_limits;
void api_limits_default(api_limits *l);

enum api_kind { API_CHAT = 0, API_COMPLETION = 1 };
enum api_role { API_ROLE_SYSTEM = 0, API_ROLE_USER, API_ROLE_ASSISTANT, API_ROLE_TOOL };
const char *api_role_name(enum api_role r); /* "system", "user", "assistant", "tool" */

#define API_MAX_TOOL_NAME 64 /* bytes of a function name */

/* One call of an assistant message's tool_calls (history sent back by the client). */
typedef struct api_tool_call {
    char *id;        /* tool_calls[i].id; "" when absent */
    char *name;      /* function.name: 1..64 bytes of [A-Za-z0-9_.-] */
    char *arguments; /* function.arguments re-serialized as compact JSON text of an object
                      * (cJSON_PrintUnformatted, keys in the client's order); the client may send
                      * a JSON string (OpenAI) or an object */
} api_tool_call;

/* One chat message; every string is valid UTF-8 without NUL bytes, owned by the request. */
typedef struct api_message {
    enum api_role role; /* "developer" is accepted as system */
    char *content;      /* NUL-terminated, text parts joined; "" for null content */
    size_t len;         /* bytes of content */
    /* assistant only: */
    char *reasoning;           /* reasoning_content; NULL when absent or null */
    api_tool_call *tool_calls; /* n_tool_calls entries (NULL when none) */
    int n_tool_calls;
    /* tool only: */
    char *tool_call_id; /* tool_call_id; NULL when absent */
} api_message;

/* One entry of tools ({"type":"function","function":{...}}). */
typedef struct api_tool {
    char *name;        /* function.name: 1..64 bytes of [A-Za-z0-9_.-], unique in the request */
    char *description; /* function.description; NULL when absent */
    char *parameters;  /* function.parameters (a JSON Schema object) as compact JSON text
                        * (cJSON_PrintUnformatted: cJSON_Parse gives it back); NULL when absent */
    bool strict;       /* function.strict */
    char *json;        /* the whole tool object as Jinja's tojson writes it (", " and ": "
                        * separators, keys in the client's order): what templates render */
} api_tool;

/* tool_choice. REQUIRED and FUNCTION need constrained decoding (see job_tool_constraint). */
enum api_tool_choice {
    API_TOOL_CHOICE_NONE = 0, /* "none" (the default without tools): the model may not call */
    API_TOOL_CHOICE_AUTO,     /* "auto" (the default with tools) */
    API_TOOL_CHOICE_REQUIRED, /* "required": at least one call of a declared tool */
    API_TOOL_CHOICE_FUNCTION  /* {"type":"function","function":{"name"}}: tool_choice_index */
};

/* reasoning_format (llama-server's field): what happens to <think>...</think> in the output. */
enum api_reasoning_format {
    API_REASONING_AUTO = 0, /* "auto" / "deepseek" (default): the text goes to reasoning_content */
    API_REASONING_NONE      /* "none": the tags and text stay in content */
};

typedef struct api_logit_bias {
    int32_t id; /* token id */
    float bias; /* -100..100; -100 bans the token (the server maps it to -INFINITY) */
} api_logit_bias;

/* A validated request. Defaults (field absent or null) are llama-server's, so the same request
 * samples the same way: see api_request_parse. */
typedef struct api_request {
    enum api_kind kind;
    char *model; /* "" when absent; the server may check it against its alias */
    /* chat */
    api_message *messages; /* n_messages >= 1 for chat */
    int n_messages;
    /* completions: either a text prompt (prompt != NULL) or token ids (prompt_tokens != NULL) */
    char *prompt;
    size_t prompt_len;
    int32_t *prompt_tokens;
    int n_prompt_tokens;
    /* generation */
    int max_tokens;    /* -1 = not given (server: until the context or its limit) */
    float temperature; /* 0..2, default 0.8; 0 = greedy */
    float top_p;       /* (0..1], default 0.95 */
    int top_k;         /* >= 0, default 40; 0 = off */
    float min_p;       /* 0..1, default 0.05 */
    bool has_seed;
    uint64_t seed;            /* valid when has_seed; -1 in JSON means "random" (has_seed false) */
    char *stop[API_MAX_STOP]; /* non-empty UTF-8 strings, owned by the request */
    int n_stop;
    float presence_penalty;   /* -2..2, default 0 */
    float frequency_penalty;  /* -2..2, default 0 */
    float repetition_penalty; /* (0..10], default 1 (off) */
    api_logit_bias *logit_bias;
    int n_logit_bias;
    bool logprobs;    /* chat: logprobs true; completions: logprobs given (0..5) */
    int top_logprobs; /* chat: top_logprobs 0..20; completions: the logprobs value 0..5 */
    int n;            /* choices, 1..limits.max_n */
    bool stream;
    bool include_usage;      /* stream_options.include_usage */
    char *user;              /* "" when absent */
    bool keep_past_thinking; /* chat_template_kwargs.keep_past_thinking (for chat_opts) */
    bool cache_prompt;       /* llama-server's cache_prompt: reuse/keep state in the prompt
                                cache; default true */
    /* tools (chat only) */
    api_tool *tools; /* n_tools entries, NULL when none (an empty array is none) */
    int n_tools;
    enum api_tool_choice tool_choice; /* NONE without tools, AUTO with them unless given */
    int tool_choice_index;    /* FUNCTION: the index in tools of the named function, else -1 */
    bool parallel_tool_calls; /* default true; false: at most one call is returned */
    enum api_reasoning_format reasoning_format;
} api_request;

/* Parses and validates body (len bytes, need not be NUL-terminated) as a request of the given
 * kind. On success returns 0 and req owns its strings (api_request_free). On error returns
 * API_EINVAL (status 400) or API_ENOMEM (500), fills e, and leaves req empty (freeing it is
 * still fine). Unknown fields are ignored; functions/function_call (the deprecated names),
 * response_format other than {"type":"text"} and echo/best_of/suffix get 400 not_supported.
 * tool_choice naming a function not in tools, or "required"/a function without tools: 400. */
int api_request_parse(api_request *req, enum api_kind kind, const char *body, size_t len,
                      const api_limits *lim, api_error *e);
void api_request_free(api_request *req); /* zeroes req; a zeroed req is a no-op */

/* llama-server's POST /tokenize body: {"content": string, "add_special": bool (default false),
 * "parse_special": bool (default true), "with_pieces": bool (default false)}. */
typedef struct api_tokenize_req {
    char *content;
    size_t len;
    bool add_special, parse_special, with_pieces;
} api_tokenize_req;
/* 0 and r owns content (api_tokenize_free), or API_EINVAL / API_ENOMEM with e filled and r
 * zeroed. */
int api_tokenize_parse(api_tokenize_req *r, const char *body, size_t len, api_error *e);
void api_tokenize_free(api_tokenize_req *r); /* zeroes r; NULL or a zeroed r is a no-op */

/* llama-server's POST /detokenize body: {"tokens": [int, ...]} (ids checked against n_vocab). */
typedef struct api_detokenize_req {
    int32_t *tokens;
    int n_tokens;
} api_detokenize_req;
/* Same contract as api_tokenize_parse; lim NULL = api_limits_default (n_vocab 0: ids are only
 * checked against INT32_MAX). */
int api_detokenize_parse(api_detokenize_req *r, const char *body, size_t len, const api_limits *lim,
                         api_error *e);
void api_detokenize_free(api_detokenize_req *r); /* zeroes r; NULL or a zeroed r is a no-op */

/* Fills e (status 400, type invalid_request_error) from a printf format; returns API_EINVAL.
 * For the server's own 400s (context_length_exceeded, model not found...). */
int api_error_set(api_error *e, int status, const char *param, const char *code, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));

/* UTF-8 helpers: strict validation (no overlongs, surrogates or values > U+10FFFF). */
bool api_utf8_valid(const char *s, size_t len);
/* Length of the longest prefix of s that does not end inside a UTF-8 character. */
size_t api_utf8_complete(const char *s, size_t len);

#endif
