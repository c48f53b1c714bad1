/* job.h: an OpenAI request as a scheduler job (prompt ids, sampling, stops) and its answer. */
#ifndef LFM2_JOB_H
#define LFM2_JOB_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "api/chat.h"
#include "api/request.h"
#include "api/response.h"
#include "api/toolcall.h"
#include "engine/tok.h"
#include "server/sched.h"

/* Error codes (negative); every error also fills an api_error (status 400 or 500). */
enum { JOB_EINVAL = -1, JOB_ENOMEM = -2 };

/* What the builder needs from the loaded model; filled once at load, read-only afterwards. */
typedef struct job_ctx {
    const tok *tk;
    enum chat_format chat_format; /* the template chat requests are rendered with */
    bool chat_think_open;         /* its generation prompt opens <think> (chat_think_open) */
    int n_vocab;                  /* sampling parameters (logit_bias ids) are checked against it */
    /* realloc for the job, its logit_bias and stop strings (called with NULL: memory
     * sched_job_free frees with free()); NULL = realloc. Tests set it to inject allocation
     * failures, as sched_opts.realloc_fn and job_answer.realloc_fn. */
    void *(*realloc_fn)(void *p, size_t size);
} job_ctx;

/* Turns q into a job: the chat template rendered and tokenized (chat), the text prompt tokenized
 * with special tokens parsed and BOS added as the model says, or the given ids (completions);
 * sampling parameters copied (logit_bias -100 becomes a ban) and checked as the sampler will
 * check them, without building one; seed used when q has none. On success returns 0 and *out
 * is the caller's (sched_submit takes it). Otherwise *out is NULL and the return is JOB_EINVAL
 * (e: 400, an empty prompt or a parameter the sampler refuses, naming it) or JOB_ENOMEM (e: 500;
 * an allocation failed, so no job rather than one without the logit_bias or stops asked for). */
int job_build(const job_ctx *c, const api_request *q, uint64_t seed, sched_job **out, api_error *e);

/* The ids of text (BOS first when add_bos and the model has one) in a malloc'd array *ids (the
 * caller frees; NULL when *n is 0). 0, or JOB_ENOMEM with *ids NULL and *n 0. */
int job_tokenize(const tok *tk, const char *text, size_t len, bool add_bos, bool parse_special,
                 int32_t **ids, int *n);

/* The answer to one job, assembled from its scheduler events: the chunks of a stream as they
 * come, or the whole body at the end. */
typedef struct job_choice job_choice; /* one choice's text, finish reason and logprobs */
typedef struct job_answer {
    enum api_kind kind;
    bool stream, include_usage, want_logprobs;
    int n_top; /* top logprobs per token */
    int n;     /* choices */
    const tok *tk;
    char id[64];
    api_resp_meta meta; /* id, created, model of every chunk and body */
    job_choice *ch;     /* n */
    api_usage usage;    /* final once done */
    bool started;       /* START seen: a stream may send its headers */
    bool done;          /* DONE seen: the last event of the job */
    bool failed;        /* ERROR seen, or the answer could not be built: errmsg says why */
    char errmsg[256];
    /* realloc for the answer's own buffers (text, logprob records); NULL = realloc. Tests set it
     * to inject allocation failures. */
    void *(*realloc_fn)(void *p, size_t size);
    /* chat: the generated text split into content, reasoning_content and tool_calls
     * (api/toolcall.h) with these options; the tool names are copies owned by the answer */
    toolcall_opts split;
    char **tool_names;
    /* the prompt ended inside <think>: the text starts as reasoning. Set after job_answer_init
     * (from job_ctx.chat_think_open) and before the first event. */
    bool start_reasoning;
} job_answer;

/* Prepares a for the job built from q; id, created and model are what the responses report
 * (model is borrowed and must outlive a). Chat answers split the text (toolcall_stream):
 * reasoning into reasoning_content unless q->reasoning_format is "none", calls of q's tools into
 * tool_calls unless tool_choice is "none" (at most one without parallel_tool_calls), with
 * finish_reason "tool_calls" when a choice that stopped made calls. 0, or JOB_ENOMEM (a is still
 * safe to free). */
int job_answer_init(job_answer *a, const api_request *q, const tok *tk, const char *id,
                    long long created, const char *model);
void job_answer_free(job_answer *a); /* zeroes a; a zeroed answer is a no-op */

/* Receives one piece of a stream: a JSON chunk, or "[DONE]" after the last one (data is len
 * bytes and NUL-terminated, valid during the call only). */
typedef void (*job_emit_fn)(void *ud, const char *data, size_t len);
/* Applies one event of the job. A streamed answer passes what the client is to get next to emit:
 * the role chunks at START (chat), a chunk per text and per finish, then the usage chunk (if asked
 * for) and [DONE]; after an ERROR only the error object. When memory runs out for a piece of the
 * answer (text, logprobs, a chunk) the answer fails as after an ERROR ("out of memory"): the
 * client gets an error, never an answer with a piece missing. */
void job_answer_event(job_answer *a, const sched_event *ev, job_emit_fn emit, void *ud);
/* The non-streamed response body (malloc'd, the caller frees), NULL when out of memory. */
char *job_answer_json(job_answer *a);

#endif
