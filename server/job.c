/* job.c: parsed requests into scheduler jobs, and their events into OpenAI answers. */
#include "server/job.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/sample.h"

/* A growing token array; oom latches the first allocation failure. */
typedef struct tokbuf {
    int32_t *ids;
    int n, cap;
    bool oom;
} tokbuf;

static void tb_push(tokbuf *b, int32_t id) {
    if (b->oom) return;
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 256;
        int32_t *p = realloc(b->ids, (size_t)cap * sizeof *p);
        if (!p) {
            b->oom = true;
            return;
        }
        b->ids = p;
        b->cap = cap;
    }
    b->ids[b->n++] = id;
}

/* Tokenizes text onto b (no BOS). */
static void tb_text(tokbuf *b, const tok *tk, const char *s, size_t len, bool parse_special) {
    if (b->oom || !len) return;
    int32_t small[256];
    int n = tok_encode(tk, s, len, false, parse_special, small, 256);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if (n <= 256) {
        for (int i = 0; i < n; i++)
            tb_push(b, small[i]);
        return;
    }
    int32_t *big = malloc((size_t)n * sizeof *big);
    if (!big) {
        b->oom = true;
        return;
    }
    int m = tok_encode(tk, s, len, false, parse_special, big, n);
    if (m != n) { /* out of memory inside the tokenizer: no prompt with a piece missing */
        b->oom = true;
        free(big);
        return;
    }
    for (int i = 0; i < n; i++)
        tb_push(b, big[i]);
    free(big);
}

int job_tokenize(const tok *tk, const char *text, size_t len, bool add_bos, bool parse_special,
                 int32_t **ids, int *n) {
    tokbuf b = {0};
    if (add_bos && tok_bos(tk) >= 0) tb_push(&b, tok_bos(tk));
    tb_text(&b, tk, text ? text : "", len, parse_special);
    if (b.oom) {
        free(b.ids);
        b.ids = NULL;
        b.n = 0;
    }
    *ids = b.ids;
    *n = b.n;
    return b.oom ? JOB_ENOMEM : 0;
}

/* The chat template rendered (BOS text first when the model adds one) and tokenized segment by
 * segment: special segments are single ids when the vocabulary has them. bounds gets the
 * position where each message ends (before every <|im_start|> but the first): the prompt cache
 * snapshots the state there, so a later request that branches after any message resumes there. */
static int chat_tokens(const job_ctx *c, const api_request *q, tokbuf *b, tokbuf *bounds,
                       api_error *e) {
    const tok *tk = c->tk;
    chat_opts co = {0};
    co.format = c->chat_format;
    co.add_generation_prompt = true;
    co.keep_past_thinking = q->keep_past_thinking;
    co.think_open = c->chat_think_open;
    const char *tool_json[64];
    const char **tools = q->n_tools <= 64 ? tool_json : malloc((size_t)q->n_tools * sizeof *tools);
    if (!tools) {
        api_error_set(e, 500, NULL, NULL, "out of memory rendering the chat template");
        return JOB_ENOMEM;
    }
    for (int i = 0; i < q->n_tools; i++)
        tools[i] = q->tools[i].json;
    co.tools = tools;
    co.n_tools = q->n_tools;
    int bos = tok_bos(tk);
    size_t bl = 0;
    const char *bos_text = bos >= 0 && tok_add_bos(tk) ? tok_piece(tk, bos, &bl) : NULL;
    char bosbuf[64] = "";
    if (bos_text && bl < sizeof bosbuf) {
        memcpy(bosbuf, bos_text, bl);
        bosbuf[bl] = 0;
        co.bos = bosbuf;
    }
    chat_prompt p;
    char err[256];
    int n_start = 0;
    int rrc = chat_render(&p, &co, q->messages, q->n_messages, err, sizeof err);
    if (tools != tool_json) free(tools);
    if (rrc < 0) {
        chat_prompt_free(&p);
        api_error_set(e, 500, NULL, NULL, "%s", err);
        return JOB_ENOMEM;
    }
    for (int i = 0; i < p.n_segs; i++) {
        const chat_seg *sg = &p.segs[i];
        if (sg->special && sg->len == 12 && !memcmp(sg->text, "<|im_start|>", 12) &&
            n_start++ > 0 && (!bounds->n || bounds->ids[bounds->n - 1] < b->n))
            tb_push(bounds, b->n);
        int id = sg->special ? tok_find(tk, sg->text, sg->len) : -1;
        if (id >= 0)
            tb_push(b, id);
        else
            tb_text(b, tk, sg->text, sg->len, false);
    }
    chat_prompt_free(&p);
    return 0;
}

/* The prompt's token ids: the chat template, a text prompt (special tokens parsed, BOS added as
 * the model says), or the given ids. */
static int prompt_tokens(const job_ctx *c, const api_request *q, tokbuf *b, tokbuf *bounds,
                         api_error *e) {
    const tok *tk = c->tk;
    if (q->kind == API_CHAT) {
        int rc = chat_tokens(c, q, b, bounds, e);
        if (rc < 0) return rc;
    } else if (q->prompt_tokens) {
        for (int i = 0; i < q->n_prompt_tokens; i++)
            tb_push(b, q->prompt_tokens[i]);
    } else {
        if (tok_add_bos(tk) && tok_bos(tk) >= 0) tb_push(b, tok_bos(tk));
        tb_text(b, tk, q->prompt ? q->prompt : "", q->prompt_len, true);
    }
    if (b->oom || bounds->oom) {
        api_error_set(e, 500, NULL, NULL, "out of memory while tokenizing the prompt");
        return JOB_ENOMEM;
    }
    if (b->n == 0) {
        api_error_set(e, 400, q->kind == API_CHAT ? "messages" : "prompt", "invalid_value",
                      "the prompt is empty: give at least one token of text");
        return JOB_EINVAL;
    }
    return 0;
}

static void *job_alloc(const job_ctx *c, size_t size) {
    return c->realloc_fn ? c->realloc_fn(NULL, size) : malloc(size);
}

static int32_t find_special(const tok *tk, const char *text) {
    return tok_find(tk, text, strlen(text));
}

/* Chat jobs: the model's markup tokens are output text (the answer splits them out), tool_choice
 * "none" with tools declared bans the call-start token, and parallel_tool_calls false ends the
 * generation at the first call block's end (a stop string: the answer sees the block without its
 * end token and still takes the call). */
static int job_tools(const job_ctx *c, const api_request *q, sched_job *j) {
    if (q->kind != API_CHAT) return 0;
    static const char *const shown[] = {TOOLCALL_THINK, TOOLCALL_THINK_END, TOOLCALL_START,
                                        TOOLCALL_END};
    for (size_t k = 0; k < sizeof shown / sizeof shown[0]; k++) {
        int32_t id = find_special(c->tk, shown[k]);
        if (id >= 0) j->show_special[j->n_show_special++] = id;
    }
    int32_t start = find_special(c->tk, TOOLCALL_START);
    if (q->n_tools > 0 && q->tool_choice == API_TOOL_CHOICE_NONE && start >= 0) {
        sample_bias *nb = c->realloc_fn
                              ? c->realloc_fn(j->bias, (size_t)(j->samp.n_bias + 1) * sizeof *nb)
                              : realloc(j->bias, (size_t)(j->samp.n_bias + 1) * sizeof *nb);
        if (!nb) return JOB_ENOMEM;
        j->bias = nb;
        j->bias[j->samp.n_bias].id = start;
        j->bias[j->samp.n_bias].bias = -INFINITY;
        j->samp.bias = j->bias;
        j->samp.n_bias++;
    }
    int max_stop = (int)(sizeof j->stop / sizeof j->stop[0]);
    if (q->n_tools > 0 && q->tool_choice != API_TOOL_CHOICE_NONE && !q->parallel_tool_calls &&
        j->n_stop < max_stop) {
        size_t n = strlen(TOOLCALL_END) + 1;
        if (!(j->stop[j->n_stop] = job_alloc(c, n))) return JOB_ENOMEM;
        memcpy(j->stop[j->n_stop], TOOLCALL_END, n);
        j->n_stop++;
    }
    return 0;
}

/* HOOK for constrained decoding (branch wt-grammar fills it): tool_choice "required" (a call of
 * one of q->tools whose arguments satisfy its parameters schema) and a named function
 * (q->tools[q->tool_choice_index] only) constrain the output; parse the tools' schemas from
 * api_tool.parameters and attach the constraint to j here. Until then such requests get 400
 * not_supported, never a silent "auto". Returns 0 or JOB_EINVAL / JOB_ENOMEM with e filled. */
static int job_tool_constraint(const job_ctx *c, const api_request *q, sched_job *j, api_error *e) {
    (void)c;
    (void)j;
    if (q->tool_choice != API_TOOL_CHOICE_REQUIRED && q->tool_choice != API_TOOL_CHOICE_FUNCTION)
        return 0;
    api_error_set(e, 400, "tool_choice", "not_supported",
                  "tool_choice %s is not supported yet (it needs constrained decoding); use "
                  "\"auto\" or \"none\"",
                  q->tool_choice == API_TOOL_CHOICE_REQUIRED ? "\"required\""
                                                             : "naming a function");
    return JOB_EINVAL;
}

int job_build(const job_ctx *c, const api_request *q, uint64_t seed, sched_job **out,
              api_error *e) {
    *out = NULL;
    memset(e, 0, sizeof *e);
    tokbuf b = {0}, bounds = {0};
    int rc = prompt_tokens(c, q, &b, &bounds, e);
    if (rc < 0) {
        free(b.ids);
        free(bounds.ids);
        return rc;
    }
    sched_job *j = job_alloc(c, sizeof *j);
    if (!j) {
        free(b.ids);
        free(bounds.ids);
        api_error_set(e, 500, NULL, NULL, "out of memory");
        return JOB_ENOMEM;
    }
    memset(j, 0, sizeof *j);
    j->prompt = b.ids;
    j->n_prompt = b.n;
    j->bounds = bounds.ids;
    j->n_bounds = bounds.n;
    j->no_cache = !q->cache_prompt;
    j->n_choices = q->n;
    j->max_tokens = q->max_tokens > 0 ? q->max_tokens : 0;
    sample_params_default(&j->samp);
    j->samp.temperature = q->temperature;
    j->samp.top_k = q->top_k;
    j->samp.top_p = q->top_p;
    j->samp.min_p = q->min_p;
    j->samp.repeat_penalty = q->repetition_penalty;
    j->samp.presence_penalty = q->presence_penalty;
    j->samp.frequency_penalty = q->frequency_penalty;
    j->samp.seed = q->has_seed ? q->seed : seed;
    j->samp.n_top = q->logprobs ? q->top_logprobs : 0;
    if (q->n_logit_bias) {
        j->bias = job_alloc(c, (size_t)q->n_logit_bias * sizeof *j->bias);
        if (!j->bias) goto oom;
        for (int i = 0; i < q->n_logit_bias; i++) {
            j->bias[i].id = q->logit_bias[i].id;
            j->bias[i].bias = q->logit_bias[i].bias <= -100 ? -INFINITY : q->logit_bias[i].bias;
        }
        j->samp.bias = j->bias;
        j->samp.n_bias = q->n_logit_bias;
    }
    for (int i = 0; i < q->n_stop && i < (int)(sizeof j->stop / sizeof j->stop[0]); i++) {
        size_t n = strlen(q->stop[i]) + 1;
        if (!(j->stop[i] = job_alloc(c, n))) goto oom;
        memcpy(j->stop[i], q->stop[i], n);
        j->n_stop = i + 1;
    }
    j->want_logprobs = q->logprobs;
    if (job_tools(c, q, j) < 0) goto oom;
    if ((rc = job_tool_constraint(c, q, j, e)) < 0) {
        sched_job_free(j);
        return rc;
    }
    /* the sampler's own checks, so a bad value is a 400 now rather than an error event later */
    char err[256];
    if (sample_params_check(&j->samp, c->n_vocab, err, sizeof err) < 0) {
        sched_job_free(j);
        api_error_set(e, 400, NULL, "invalid_value", "%s", err);
        return JOB_EINVAL;
    }
    *out = j;
    return 0;
oom: /* a job without the bias or stop strings asked for would run, just wrongly */
    sched_job_free(j);
    api_error_set(e, 500, NULL, NULL, "out of memory while building the request");
    return JOB_ENOMEM;
}

/* ---------- the answer ---------- */

struct job_choice {
    char *text; /* non-streamed: text so far */
    size_t len, cap;
    const char *finish;    /* "stop" / "length" / NULL */
    api_token_logprob *lp; /* non-streamed logprobs, pieces point into the tokenizer */
    api_top_logprob *top;  /* n_lp * n_top entries */
    int n_lp, cap_lp;
    size_t text_offset;     /* completions: bytes of text already sent (stream) */
    toolcall_stream *split; /* chat: content / reasoning / calls (created at the first text) */
    char *reasoning;        /* non-streamed: reasoning_content so far */
    size_t rlen, rcap;
};

int job_answer_init(job_answer *a, const api_request *q, const tok *tk, const char *id,
                    long long created, const char *model) {
    memset(a, 0, sizeof *a);
    a->kind = q->kind;
    a->stream = q->stream;
    a->include_usage = q->stream && q->include_usage;
    a->want_logprobs = q->logprobs;
    a->n_top = q->logprobs ? q->top_logprobs : 0;
    a->n = q->n;
    a->tk = tk;
    snprintf(a->id, sizeof a->id, "%s", id);
    a->meta.id = a->id;
    a->meta.created = created;
    a->meta.model = model;
    a->ch = calloc((size_t)a->n, sizeof *a->ch);
    if (!a->ch) return JOB_ENOMEM;
    if (q->kind == API_CHAT) {
        a->split.reasoning = q->reasoning_format != API_REASONING_NONE;
        a->split.tools = q->n_tools > 0 && q->tool_choice != API_TOOL_CHOICE_NONE;
        a->split.max_calls = q->parallel_tool_calls ? 0 : 1;
        if (a->split.tools) {
            a->tool_names = calloc((size_t)q->n_tools, sizeof *a->tool_names);
            if (!a->tool_names) return JOB_ENOMEM;
            a->split.n_names = q->n_tools;
            for (int i = 0; i < q->n_tools; i++)
                if (!(a->tool_names[i] = strdup(q->tools[i].name))) return JOB_ENOMEM;
            a->split.names = (const char *const *)a->tool_names;
        }
    }
    return 0;
}

void job_answer_free(job_answer *a) {
    for (int i = 0; a->ch && i < a->n; i++) {
        free(a->ch[i].text);
        free(a->ch[i].lp);
        free(a->ch[i].top);
        toolcall_stream_free(a->ch[i].split);
        free(a->ch[i].reasoning);
    }
    free(a->ch);
    for (int i = 0; a->tool_names && i < a->split.n_names; i++)
        free(a->tool_names[i]);
    free(a->tool_names);
    memset(a, 0, sizeof *a);
}

static void *answer_realloc(const job_answer *a, void *p, size_t size) {
    return a->realloc_fn ? a->realloc_fn(p, size) : realloc(p, size);
}

/* Logprob records of one text event as api structs (pieces point into the tokenizer). */
static int build_logprobs(const job_answer *a, const sched_event *ev, api_token_logprob **lp_out,
                          api_top_logprob **top_out) {
    const tok *tk = a->tk;
    int nt = a->n_top;
    size_t n_lp = (size_t)ev->n_toks + 1, n_top = (size_t)ev->n_toks * (size_t)nt + 1;
    api_token_logprob *lp = answer_realloc(a, NULL, n_lp * sizeof *lp);
    api_top_logprob *top = lp ? answer_realloc(a, NULL, n_top * sizeof *top) : NULL;
    if (lp) memset(lp, 0, n_lp * sizeof *lp);
    if (top) memset(top, 0, n_top * sizeof *top);
    if (!lp || !top) {
        free(lp);
        free(top);
        return -1;
    }
    for (int k = 0; k < ev->n_toks; k++) {
        const sched_tokinfo *ti = &ev->toks[k];
        lp[k].token = tok_piece(tk, ti->id, &lp[k].len);
        if (!lp[k].token) lp[k].token = "", lp[k].len = 0;
        lp[k].logprob = ti->logprob;
        int n = ti->n_top < nt ? ti->n_top : nt;
        for (int t = 0; t < n; t++) {
            api_top_logprob *tp = &top[(size_t)k * nt + t];
            tp->token = tok_piece(tk, ti->top_id[t], &tp->len);
            if (!tp->token) tp->token = "", tp->len = 0;
            tp->logprob = ti->top_logprob[t];
        }
        lp[k].top = &top[(size_t)k * nt];
        lp[k].n_top = n;
    }
    *lp_out = lp;
    *top_out = top;
    return 0;
}

static int choice_append_text(const job_answer *a, job_choice *c, const char *s, size_t n) {
    if (c->len + n + 1 > c->cap) {
        size_t cap = (c->len + n + 1) * 2;
        char *p = answer_realloc(a, c->text, cap);
        if (!p) return -1;
        c->text = p;
        c->cap = cap;
    }
    memcpy(c->text + c->len, s, n);
    c->len += n;
    c->text[c->len] = 0;
    return 0;
}

/* Keeps logprob records for the non-streamed answer (top entries copied out of the event); -1
 * when out of memory. */
static int choice_keep_logprobs(const job_answer *a, job_choice *c, const sched_event *ev) {
    api_token_logprob *lp;
    api_top_logprob *top;
    if (!ev->n_toks) return 0;
    if (build_logprobs(a, ev, &lp, &top) < 0) return -1;
    int nt = a->n_top;
    if (c->n_lp + ev->n_toks > c->cap_lp) {
        int cap = (c->n_lp + ev->n_toks) * 2;
        api_token_logprob *p = answer_realloc(a, c->lp, (size_t)cap * sizeof *p);
        api_top_logprob *q =
            p ? answer_realloc(a, c->top, (size_t)cap * (size_t)(nt ? nt : 1) * sizeof *q) : NULL;
        if (p) c->lp = p;
        if (q) c->top = q;
        if (!p || !q) {
            free(lp);
            free(top);
            return -1;
        }
        c->cap_lp = cap;
    }
    for (int k = 0; k < ev->n_toks; k++) {
        c->lp[c->n_lp + k] = lp[k];
        memcpy(&c->top[(size_t)(c->n_lp + k) * (nt ? nt : 1)], &top[(size_t)k * nt],
               (size_t)nt * sizeof *top);
    }
    c->n_lp += ev->n_toks;
    free(lp);
    free(top);
    return 0;
}

static const char *finish_name(int f) {
    return f == SCHED_FINISH_LENGTH ? "length" : "stop";
}

/* Ends the answer as an ERROR would: errmsg, and in a stream that started the error object. */
static void answer_fail(job_answer *a, const char *msg, job_emit_fn emit, void *ud) {
    if (a->failed) return;
    a->failed = true;
    snprintf(a->errmsg, sizeof a->errmsg, "%s", msg);
    if (a->stream && a->started) {
        api_error e = {.status = 500};
        snprintf(e.message, sizeof e.message, "%s", msg);
        snprintf(e.type, sizeof e.type, "server_error");
        char *json = api_error_json(&e);
        if (json) emit(ud, json, strlen(json));
        free(json);
    }
}

/* Hands a chunk to emit and frees it; NULL (out of memory building it) fails the answer. */
static void emit_json(job_answer *a, job_emit_fn emit, void *ud, char *json) {
    if (!json) {
        answer_fail(a, "out of memory", emit, ud);
        return;
    }
    emit(ud, json, strlen(json));
    free(json);
}

static char *chunk_json(const job_answer *a, const api_choice *c) {
    return a->kind == API_CHAT ? api_chat_chunk_json(&a->meta, c, false, a->include_usage)
                               : api_text_chunk_json(&a->meta, c, a->include_usage);
}

/* ---- chat: content, reasoning and tool calls ---- */

/* The id of call k of choice ci: "call_" + 24 characters derived from the answer's random id. */
static void call_id(const job_answer *a, int ci, int k, char *buf, size_t cap) {
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = a->id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    uint64_t r1 = h ^ ((uint64_t)ci << 32) ^ (uint64_t)k, r2 = r1 * 0x9E3779B97F4A7C15ULL;
    r1 = (r1 ^ (r1 >> 31)) * 0xBF58476D1CE4E5B9ULL;
    r2 = (r2 ^ (r2 >> 29)) * 0x94D049BB133111EBULL;
    api_make_id(buf, cap, "call_", r1 ^ (r1 >> 27), r2 ^ (r2 >> 31));
}

/* The splitter of choice ci, created at its first text (start_reasoning is known by then). */
static toolcall_stream *choice_split(job_answer *a, job_choice *c) {
    if (!c->split) {
        toolcall_opts o = a->split;
        o.start_reasoning = a->start_reasoning;
        c->split = toolcall_stream_new(&o);
    }
    return c->split;
}

static int choice_append_reasoning(const job_answer *a, job_choice *c, const char *s, size_t n) {
    if (!n) return 0;
    if (c->rlen + n + 1 > c->rcap) {
        size_t cap = (c->rlen + n + 1) * 2;
        char *p = answer_realloc(a, c->reasoning, cap);
        if (!p) return -1;
        c->reasoning = p;
        c->rcap = cap;
    }
    memcpy(c->reasoning + c->rlen, s, n);
    c->rlen += n;
    c->reasoning[c->rlen] = 0;
    return 0;
}

/* Stream chunks for the new calls of d: the head (id, type, name, arguments "") and the arguments
 * in fragments of up to 32 bytes, each whole UTF-8 characters. */
static void emit_calls(job_answer *a, int ci, const toolcall_delta *d, job_emit_fn emit, void *ud) {
    for (int k = 0; k < d->n_calls && !a->failed; k++) {
        const toolcall *tc = &d->calls[k];
        char id[64];
        call_id(a, ci, d->first_call + k, id, sizeof id);
        api_call_out co = {.index = d->first_call + k, .id = id, .name = tc->name, .arguments = ""};
        api_choice c = {.index = ci, .calls = &co, .n_calls = 1};
        emit_json(a, emit, ud, api_chat_chunk_json(&a->meta, &c, false, a->include_usage));
        const char *args = tc->arguments;
        size_t len = strlen(args);
        for (size_t off = 0; off < len && !a->failed;) {
            size_t n = len - off < 32 ? len - off : api_utf8_complete(args + off, 32);
            if (!n) n = len - off < 4 ? len - off : 4; /* not UTF-8: cannot happen for cJSON text */
            char frag[40];
            memcpy(frag, args + off, n);
            frag[n] = 0;
            api_call_out fo = {.index = d->first_call + k, .arguments = frag};
            api_choice fc = {.index = ci, .calls = &fo, .n_calls = 1};
            emit_json(a, emit, ud, api_chat_chunk_json(&a->meta, &fc, false, a->include_usage));
            off += n;
        }
    }
}

/* Applies what the splitter decided for choice ci: kept (non-streamed) or sent (streamed, with
 * the logprobs of the event's tokens, lp/n_lp, on the content chunk). */
static void apply_delta(job_answer *a, int ci, const toolcall_delta *d, const api_token_logprob *lp,
                        int n_lp, job_emit_fn emit, void *ud) {
    job_choice *hc = &a->ch[ci];
    if (!a->stream) {
        if (choice_append_text(a, hc, d->content, d->content_len) < 0 ||
            choice_append_reasoning(a, hc, d->reasoning, d->reasoning_len) < 0)
            answer_fail(a, "out of memory", emit, ud);
        return;
    }
    if (d->reasoning_len) {
        api_choice c = {.index = ci, .reasoning = d->reasoning, .reasoning_len = d->reasoning_len};
        emit_json(a, emit, ud, api_chat_chunk_json(&a->meta, &c, false, a->include_usage));
    }
    if (d->content_len || lp) {
        api_choice c = {.index = ci,
                        .text = d->content,
                        .len = d->content_len,
                        .logprobs = lp,
                        .n_logprobs = n_lp};
        emit_json(a, emit, ud, api_chat_chunk_json(&a->meta, &c, false, a->include_usage));
    }
    emit_calls(a, ci, d, emit, ud);
}

/* A chat TEXT event through the choice's splitter. */
static void chat_text(job_answer *a, const sched_event *ev, job_emit_fn emit, void *ud) {
    job_choice *hc = &a->ch[ev->index];
    toolcall_stream *sp = choice_split(a, hc);
    toolcall_delta d;
    if (!sp || toolcall_stream_push(sp, ev->text ? ev->text : "", ev->len, &d) < 0) {
        answer_fail(a, "out of memory", emit, ud);
        return;
    }
    api_token_logprob *lp = NULL;
    api_top_logprob *top = NULL;
    if (a->want_logprobs && ev->n_toks) {
        if (a->stream ? build_logprobs(a, ev, &lp, &top) < 0
                      : choice_keep_logprobs(a, hc, ev) < 0) {
            answer_fail(a, "out of memory", emit, ud);
            return;
        }
    }
    apply_delta(a, ev->index, &d, lp, lp ? ev->n_toks : 0, emit, ud);
    free(lp);
    free(top);
}

/* The end of choice ci's text: what the splitter still held. */
static void chat_finish_text(job_answer *a, int ci, job_emit_fn emit, void *ud) {
    job_choice *hc = &a->ch[ci];
    toolcall_stream *sp = choice_split(a, hc);
    toolcall_delta d;
    if (!sp || toolcall_stream_finish(sp, &d) < 0) {
        answer_fail(a, "out of memory", emit, ud);
        return;
    }
    apply_delta(a, ci, &d, NULL, 0, emit, ud);
    if (toolcall_stream_n_calls(sp) > 0 && hc->finish && !strcmp(hc->finish, "stop"))
        hc->finish = "tool_calls";
}

void job_answer_event(job_answer *a, const sched_event *ev, job_emit_fn emit, void *ud) {
    switch (ev->kind) {
    case SCHED_EV_START:
        a->started = true;
        if (a->stream && a->kind == API_CHAT)
            for (int i = 0; i < a->n; i++) {
                api_choice c = {.index = i};
                emit_json(a, emit, ud, api_chat_chunk_json(&a->meta, &c, true, a->include_usage));
            }
        break;
    case SCHED_EV_TEXT: {
        if (ev->index < 0 || ev->index >= a->n) break;
        job_choice *hc = &a->ch[ev->index];
        if (a->failed) break; /* after an error the client gets nothing more */
        if (a->kind == API_CHAT) {
            chat_text(a, ev, emit, ud);
            break;
        }
        if (!a->stream) {
            if ((ev->len && choice_append_text(a, hc, ev->text, ev->len) < 0) ||
                (a->want_logprobs && choice_keep_logprobs(a, hc, ev) < 0))
                answer_fail(a, "out of memory", emit, ud);
            break;
        }
        api_choice c = {.index = ev->index, .text = ev->text ? ev->text : "", .len = ev->len};
        api_token_logprob *lp = NULL;
        api_top_logprob *top = NULL;
        if (a->want_logprobs && ev->n_toks) {
            if (build_logprobs(a, ev, &lp, &top) < 0) {
                answer_fail(a, "out of memory", emit, ud);
                break;
            }
            c.logprobs = lp;
            c.n_logprobs = ev->n_toks;
        }
        c.text_offset = hc->text_offset;
        hc->text_offset += ev->len;
        if (ev->len || c.logprobs) emit_json(a, emit, ud, chunk_json(a, &c));
        free(lp);
        free(top);
        break;
    }
    case SCHED_EV_FINISH:
        if (ev->index < 0 || ev->index >= a->n) break;
        a->ch[ev->index].finish = finish_name(ev->finish);
        if (a->kind == API_CHAT && !a->failed) chat_finish_text(a, ev->index, emit, ud);
        if (a->stream && !a->failed) {
            api_choice c = {.index = ev->index, .finish_reason = a->ch[ev->index].finish};
            if (a->kind == API_COMPLETION) c.text = "", c.len = 0;
            c.text_offset = a->ch[ev->index].text_offset;
            emit_json(a, emit, ud, chunk_json(a, &c));
        }
        break;
    case SCHED_EV_ERROR:
        answer_fail(a, ev->message, emit, ud);
        break;
    case SCHED_EV_DONE:
        a->done = true;
        a->usage.prompt_tokens = ev->n_prompt;
        a->usage.completion_tokens = ev->n_completion;
        a->usage.cached_tokens = ev->n_cached;
        if (a->stream && a->started && !a->failed) {
            if (a->include_usage)
                emit_json(a, emit, ud, api_usage_chunk_json(&a->meta, a->kind, &a->usage));
            emit(ud, "[DONE]", 6);
        }
        break;
    }
}

char *job_answer_json(job_answer *a) {
    api_choice *c = calloc((size_t)a->n, sizeof *c);
    if (!c) return NULL;
    int n_calls = 0;
    for (int i = 0; i < a->n; i++) {
        c[i].index = i;
        c[i].text = a->ch[i].text ? a->ch[i].text : "";
        c[i].len = a->ch[i].len;
        c[i].finish_reason = a->ch[i].finish ? a->ch[i].finish : "stop";
        if (a->kind == API_CHAT && a->ch[i].split) {
            int nc = toolcall_stream_n_calls(a->ch[i].split);
            c[i].reasoning = a->ch[i].rlen ? a->ch[i].reasoning : NULL;
            c[i].reasoning_len = a->ch[i].rlen;
            c[i].content_null = nc > 0 && a->ch[i].len == 0;
            n_calls += nc;
        }
        if (a->want_logprobs) {
            int nt = a->n_top ? a->n_top : 1; /* re-point: the top array may have moved */
            for (int k = 0; k < a->ch[i].n_lp; k++)
                a->ch[i].lp[k].top = &a->ch[i].top[(size_t)k * nt];
            c[i].logprobs = a->ch[i].lp;
            c[i].n_logprobs = a->ch[i].n_lp;
            if (!c[i].logprobs) {
                static const api_token_logprob none[1];
                c[i].logprobs = none;
                c[i].n_logprobs = 0;
            }
        }
    }
    /* the tool calls of every choice, with their ids */
    api_call_out *co = n_calls ? calloc((size_t)n_calls, sizeof *co) : NULL;
    char(*ids)[64] = n_calls ? calloc((size_t)n_calls, sizeof *ids) : NULL;
    if (n_calls && (!co || !ids)) {
        free(co);
        free(ids);
        free(c);
        return NULL;
    }
    for (int i = 0, at = 0; a->kind == API_CHAT && i < a->n; i++) {
        int nc = a->ch[i].split ? toolcall_stream_n_calls(a->ch[i].split) : 0;
        if (!nc) continue;
        const toolcall *tc = toolcall_stream_calls(a->ch[i].split);
        for (int k = 0; k < nc; k++) {
            call_id(a, i, k, ids[at + k], sizeof ids[at + k]);
            co[at + k] = (api_call_out){
                .index = k, .id = ids[at + k], .name = tc[k].name, .arguments = tc[k].arguments};
        }
        c[i].calls = co + at;
        c[i].n_calls = nc;
        at += nc;
    }
    char *json = a->kind == API_CHAT ? api_chat_completion_json(&a->meta, c, a->n, &a->usage)
                                     : api_text_completion_json(&a->meta, c, a->n, &a->usage);
    free(co);
    free(ids);
    free(c);
    return json;
}
