/* job.c: a parsed request becomes a sched_job: chat template, tokenizing, sampling checks. */
#include "server/job.h"
#include <math.h>
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
    for (int i = 0; i < m && i < n; i++)
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
 * segment: special segments are single ids when the vocabulary has them. */
static int chat_tokens(const job_ctx *c, const api_request *q, tokbuf *b, api_error *e) {
    const tok *tk = c->tk;
    chat_opts co = {0};
    co.format = c->chat_format;
    co.add_generation_prompt = true;
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
    if (chat_render(&p, &co, q->messages, q->n_messages, err, sizeof err) < 0) {
        chat_prompt_free(&p);
        api_error_set(e, 500, NULL, NULL, "%s", err);
        return JOB_ENOMEM;
    }
    for (int i = 0; i < p.n_segs; i++) {
        const chat_seg *sg = &p.segs[i];
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
static int prompt_tokens(const job_ctx *c, const api_request *q, tokbuf *b, api_error *e) {
    const tok *tk = c->tk;
    if (q->kind == API_CHAT) {
        int rc = chat_tokens(c, q, b, e);
        if (rc < 0) return rc;
    } else if (q->prompt_tokens) {
        for (int i = 0; i < q->n_prompt_tokens; i++)
            tb_push(b, q->prompt_tokens[i]);
    } else {
        if (tok_add_bos(tk) && tok_bos(tk) >= 0) tb_push(b, tok_bos(tk));
        tb_text(b, tk, q->prompt ? q->prompt : "", q->prompt_len, true);
    }
    if (b->oom) {
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
    return c->alloc ? c->alloc(size) : malloc(size);
}

int job_build(const job_ctx *c, const api_request *q, uint64_t seed, sched_job **out,
              api_error *e) {
    *out = NULL;
    memset(e, 0, sizeof *e);
    tokbuf b = {0};
    int rc = prompt_tokens(c, q, &b, e);
    if (rc < 0) {
        free(b.ids);
        return rc;
    }
    sched_job *j = job_alloc(c, sizeof *j);
    if (!j) {
        free(b.ids);
        api_error_set(e, 500, NULL, NULL, "out of memory");
        return JOB_ENOMEM;
    }
    memset(j, 0, sizeof *j);
    j->prompt = b.ids;
    j->n_prompt = b.n;
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
