/* response.h: OpenAI response JSON: completions, stream chunks, logprobs, errors. */
#ifndef LFM2_API_RESPONSE_H
#define LFM2_API_RESPONSE_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "api/request.h"

/* Every builder returns a malloc'd NUL-terminated compact JSON string the caller frees, or NULL
 * when out of memory. Text is copied; invalid UTF-8 in it (e.g. a token that is half of a
 * character) is replaced by U+FFFD so the output is always valid JSON. */

typedef struct api_resp_meta {
    const char *id;    /* "chatcmpl-..." / "cmpl-..." (api_make_id), same for every chunk */
    long long created; /* Unix seconds, same for every chunk */
    const char *model; /* the model id the server reports */
} api_resp_meta;

typedef struct api_usage {
    int prompt_tokens;
    int completion_tokens; /* total_tokens is their sum */
    int cached_tokens;     /* prompt_tokens_details.cached_tokens: restored, not prefilled */
} api_usage;

typedef struct api_top_logprob {
    const char *token; /* raw bytes of the token's text (may be part of a UTF-8 character) */
    size_t len;
    float logprob;
} api_top_logprob;

typedef struct api_token_logprob {
    const char *token; /* raw bytes of the chosen token's text */
    size_t len;
    float logprob;
    const api_top_logprob *top; /* n_top alternatives, best first */
    int n_top;
} api_token_logprob;

/* One tool call in a message or a stream chunk's delta. */
typedef struct api_call_out {
    int index;             /* position in the choice's tool_calls */
    const char *id;        /* "call_..."; NULL in a stream chunk that continues a call: then only
                            * index and function.arguments are written */
    const char *name;      /* function.name (with id) */
    const char *arguments; /* function.arguments: JSON text (a fragment of it in a stream) */
} api_call_out;

typedef struct api_choice {
    int index;
    const char *text; /* the (new) text; NULL = none */
    size_t len;
    const char *finish_reason;         /* "stop", "length" or NULL (JSON null) */
    const api_token_logprob *logprobs; /* NULL: "logprobs": null */
    int n_logprobs;
    size_t text_offset; /* completions logprobs: offset of this text's first byte */
    /* chat only */
    bool content_null;     /* message "content": null (text ignored) */
    const char *reasoning; /* "reasoning_content" (reasoning_len bytes); NULL: absent */
    size_t reasoning_len;
    const api_call_out *calls; /* "tool_calls" (n_calls entries); 0: absent */
    int n_calls;
} api_choice;

/* Writes "<prefix><24 alphanumerics>" from two random words into buf (cap >= 40). */
void api_make_id(char *buf, size_t cap, const char *prefix, uint64_t r1, uint64_t r2);

/* Non-streamed responses: {"id","object":"chat.completion","created","model","choices":[{"index",
 * "message":{"role":"assistant","content","reasoning_content"?,"tool_calls"?:[{"id","type":
 * "function","function":{"name","arguments"}}]},"logprobs","finish_reason"}],"usage":{...}} and the
 * same with "object":"text_completion" and choices [{"text","index","logprobs","finish_reason"}].
 */
char *api_chat_completion_json(const api_resp_meta *m, const api_choice *c, int n,
                               const api_usage *u);
char *api_text_completion_json(const api_resp_meta *m, const api_choice *c, int n,
                               const api_usage *u);

/* One chat.completion.chunk for choice c. role: include "role":"assistant" in the delta (the
 * first chunk: delta {"role":"assistant","content":""} when c->text is NULL). c->text non-NULL:
 * "content" in the delta; c->reasoning: "reasoning_content"; c->n_calls: "tool_calls" (a call's
 * first chunk has index, id, type and function.name + arguments, later ones index and
 * function.arguments). None: empty delta {} (the last chunk, with c->finish_reason).
 * usage_null: add "usage": null (OpenAI does on every chunk when include_usage is on). */
char *api_chat_chunk_json(const api_resp_meta *m, const api_choice *c, bool role, bool usage_null);
/* One text_completion chunk: choices [{"text","index","logprobs","finish_reason"}]. */
char *api_text_chunk_json(const api_resp_meta *m, const api_choice *c, bool usage_null);
/* The final usage chunk: "choices": [] and "usage" (object of the kind's chunks). */
char *api_usage_chunk_json(const api_resp_meta *m, enum api_kind kind, const api_usage *u);

/* {"error":{"message","type","param","code"}}; empty param/code become null. */
char *api_error_json(const api_error *e);

/* GET /v1/models: {"object":"list","data":[{"id","object":"model","created","owned_by"}]}. */
char *api_models_json(const char *model_id, long long created, const char *owned_by);

/* llama-server's /tokenize answer: {"tokens":[ids]} or, with pieces,
 * {"tokens":[{"id":N,"piece":"text"}]} where a piece that is not valid UTF-8 is an array of
 * byte values. pieces[i]/piece_lens[i] are the raw bytes of ids[i] (only read when pieces). */
char *api_tokenize_json(const int32_t *ids, int n, const char *const *pieces,
                        const size_t *piece_lens);
/* llama-server's /detokenize answer: {"content": text}. */
char *api_detokenize_json(const char *text, size_t len);

#endif
