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
    if (chat_render(&p, &co, q->messages, q->n_messages, err, sizeof err) < 0) {
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
    size_t text_offset; /* completions: bytes of text already sent (stream) */
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
    return a->ch ? 0 : JOB_ENOMEM;
}

void job_answer_free(job_answer *a) {
    for (int i = 0; a->ch && i < a->n; i++) {
        free(a->ch[i].text);
        free(a->ch[i].lp);
        free(a->ch[i].top);
    }
    free(a->ch);
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
    for (int i = 0; i < a->n; i++) {
        c[i].index = i;
        c[i].text = a->ch[i].text ? a->ch[i].text : "";
        c[i].len = a->ch[i].len;
        c[i].finish_reason = a->ch[i].finish ? a->ch[i].finish : "stop";
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
    char *json = a->kind == API_CHAT ? api_chat_completion_json(&a->meta, c, a->n, &a->usage)
                                     : api_text_completion_json(&a->meta, c, a->n, &a->usage);
    free(c);
    return json;
}
