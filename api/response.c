/* response.c: OpenAI wire-format JSON built with cJSON; text made valid UTF-8 first. */
#include "api/response.h"
#include "engine/tok.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copy of s with every invalid UTF-8 sequence and NUL byte replaced by U+FFFD. */
static char *utf8_fix(const char *s, size_t len) {
    char *out = malloc(len * 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t k = (size_t)tok_utf8_len(s + i, len - i);
        if (k && s[i] != 0) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
    }
    out[o] = 0;
    return out;
}

/* Adds a string member built from raw bytes; returns the item or NULL on OOM. */
static cJSON *add_text(cJSON *obj, const char *name, const char *s, size_t len) {
    char *fixed = utf8_fix(s ? s : "", s ? len : 0);
    if (!fixed) return NULL;
    cJSON *item = cJSON_AddStringToObject(obj, name, fixed);
    free(fixed);
    return item;
}

static cJSON *text_item(const char *s, size_t len) {
    char *fixed = utf8_fix(s, len);
    if (!fixed) return NULL;
    cJSON *item = cJSON_CreateString(fixed);
    free(fixed);
    return item;
}

static double lp_value(float lp) {
    return isfinite(lp) ? (double)lp : -9999.0;
}

static char *finish(cJSON *root, bool ok) {
    char *s = ok && root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

void api_make_id(char *buf, size_t cap, const char *prefix, uint64_t r1, uint64_t r2) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    char tail[25];
    for (int i = 0; i < 24; i++) {
        uint64_t *r = i < 12 ? &r1 : &r2;
        tail[i] = al[*r % 62];
        *r /= 62;
    }
    tail[24] = 0;
    snprintf(buf, cap, "%s%s", prefix, tail);
}

static bool add_meta(cJSON *root, const api_resp_meta *m, const char *object) {
    return cJSON_AddStringToObject(root, "id", m->id ? m->id : "") &&
           cJSON_AddStringToObject(root, "object", object) &&
           cJSON_AddNumberToObject(root, "created", (double)m->created) &&
           add_text(root, "model", m->model, m->model ? strlen(m->model) : 0);
}

static bool add_usage(cJSON *root, const api_usage *u) {
    cJSON *us = cJSON_AddObjectToObject(root, "usage"), *ptd;
    return us && cJSON_AddNumberToObject(us, "prompt_tokens", u->prompt_tokens) &&
           cJSON_AddNumberToObject(us, "completion_tokens", u->completion_tokens) &&
           cJSON_AddNumberToObject(us, "total_tokens",
                                   (double)u->prompt_tokens + u->completion_tokens) &&
           (ptd = cJSON_AddObjectToObject(us, "prompt_tokens_details")) &&
           cJSON_AddNumberToObject(ptd, "cached_tokens", u->cached_tokens);
}

static bool add_finish(cJSON *obj, const char *fr) {
    return fr ? cJSON_AddStringToObject(obj, "finish_reason", fr) != NULL
              : cJSON_AddNullToObject(obj, "finish_reason") != NULL;
}

/* "bytes": [..] of raw token text */
static bool add_bytes(cJSON *obj, const char *s, size_t len) {
    cJSON *b = cJSON_AddArrayToObject(obj, "bytes");
    if (!b) return false;
    for (size_t i = 0; i < len; i++) {
        cJSON *n = cJSON_CreateNumber((unsigned char)s[i]);
        if (!n) return false;
        cJSON_AddItemToArray(b, n);
    }
    return true;
}

/* chat: {"content":[{"token","logprob","bytes","top_logprobs":[{"token","logprob","bytes"}]}]} */
static bool add_chat_logprobs(cJSON *choice, const api_choice *c) {
    if (!c->logprobs) return cJSON_AddNullToObject(choice, "logprobs") != NULL;
    cJSON *lp = cJSON_AddObjectToObject(choice, "logprobs");
    cJSON *content = lp ? cJSON_AddArrayToObject(lp, "content") : NULL;
    if (!content) return false;
    for (int i = 0; i < c->n_logprobs; i++) {
        const api_token_logprob *t = &c->logprobs[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) return false;
        cJSON_AddItemToArray(content, o);
        if (!add_text(o, "token", t->token, t->len) ||
            !cJSON_AddNumberToObject(o, "logprob", lp_value(t->logprob)) ||
            !add_bytes(o, t->token, t->len))
            return false;
        cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
        if (!tops) return false;
        for (int j = 0; j < t->n_top; j++) {
            cJSON *to = cJSON_CreateObject();
            if (!to) return false;
            cJSON_AddItemToArray(tops, to);
            if (!add_text(to, "token", t->top[j].token, t->top[j].len) ||
                !cJSON_AddNumberToObject(to, "logprob", lp_value(t->top[j].logprob)) ||
                !add_bytes(to, t->top[j].token, t->top[j].len))
                return false;
        }
    }
    return true;
}

/* completions: {"tokens":[..],"token_logprobs":[..],"top_logprobs":[{tok:lp}],"text_offset":[..]}
 */
static bool add_text_logprobs(cJSON *choice, const api_choice *c) {
    if (!c->logprobs) return cJSON_AddNullToObject(choice, "logprobs") != NULL;
    cJSON *lp = cJSON_AddObjectToObject(choice, "logprobs");
    if (!lp) return false;
    cJSON *toks = cJSON_AddArrayToObject(lp, "tokens");
    cJSON *tlps = cJSON_AddArrayToObject(lp, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(lp, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(lp, "text_offset");
    if (!toks || !tlps || !tops || !offs) return false;
    size_t off = c->text_offset;
    for (int i = 0; i < c->n_logprobs; i++) {
        const api_token_logprob *t = &c->logprobs[i];
        cJSON *a = text_item(t->token, t->len), *b = cJSON_CreateNumber(lp_value(t->logprob));
        cJSON *d = cJSON_CreateNumber((double)off), *top = cJSON_CreateObject();
        if (a) cJSON_AddItemToArray(toks, a);
        if (b) cJSON_AddItemToArray(tlps, b);
        if (d) cJSON_AddItemToArray(offs, d);
        if (top) cJSON_AddItemToArray(tops, top);
        if (!a || !b || !d || !top) return false;
        for (int j = 0; j < t->n_top; j++) {
            char *k = utf8_fix(t->top[j].token, t->top[j].len);
            cJSON *v = cJSON_CreateNumber(lp_value(t->top[j].logprob));
            if (k && v)
                cJSON_AddItemToObject(top, k, v);
            else
                cJSON_Delete(v);
            free(k);
            if (!k || !v) return false;
        }
        off += t->len;
    }
    return true;
}

/* "tool_calls": [...] of c: in a message every call complete and without "index"; in a chunk
 * with "index" (see api_call_out). */
static bool add_calls(cJSON *obj, const api_choice *c, bool chunk) {
    if (c->n_calls <= 0) return true;
    cJSON *arr = cJSON_AddArrayToObject(obj, "tool_calls");
    if (!arr) return false;
    for (int i = 0; i < c->n_calls; i++) {
        const api_call_out *t = &c->calls[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) return false;
        cJSON_AddItemToArray(arr, o);
        if (chunk && !cJSON_AddNumberToObject(o, "index", t->index)) return false;
        if (t->id && (!add_text(o, "id", t->id, strlen(t->id)) ||
                      !cJSON_AddStringToObject(o, "type", "function")))
            return false;
        cJSON *fn = cJSON_AddObjectToObject(o, "function");
        if (!fn) return false;
        if (t->id && !add_text(fn, "name", t->name, t->name ? strlen(t->name) : 0)) return false;
        if (!add_text(fn, "arguments", t->arguments, t->arguments ? strlen(t->arguments) : 0))
            return false;
    }
    return true;
}

char *api_chat_completion_json(const api_resp_meta *m, const api_choice *c, int n,
                               const api_usage *u) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root && add_meta(root, m, "chat.completion");
    cJSON *choices = ok ? cJSON_AddArrayToObject(root, "choices") : NULL;
    ok = choices != NULL;
    for (int i = 0; ok && i < n; i++) {
        cJSON *ch = cJSON_CreateObject();
        if (!ch) {
            ok = false;
            break;
        }
        cJSON_AddItemToArray(choices, ch);
        cJSON *msg;
        ok = cJSON_AddNumberToObject(ch, "index", c[i].index) &&
             (msg = cJSON_AddObjectToObject(ch, "message")) &&
             cJSON_AddStringToObject(msg, "role", "assistant") &&
             (c[i].content_null ? cJSON_AddNullToObject(msg, "content") != NULL
                                : add_text(msg, "content", c[i].text, c[i].len) != NULL) &&
             (!c[i].reasoning ||
              add_text(msg, "reasoning_content", c[i].reasoning, c[i].reasoning_len)) &&
             add_calls(msg, &c[i], false) && add_chat_logprobs(ch, &c[i]) &&
             add_finish(ch, c[i].finish_reason);
    }
    ok = ok && add_usage(root, u);
    return finish(root, ok);
}

char *api_text_completion_json(const api_resp_meta *m, const api_choice *c, int n,
                               const api_usage *u) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root && add_meta(root, m, "text_completion");
    cJSON *choices = ok ? cJSON_AddArrayToObject(root, "choices") : NULL;
    ok = choices != NULL;
    for (int i = 0; ok && i < n; i++) {
        cJSON *ch = cJSON_CreateObject();
        if (!ch) {
            ok = false;
            break;
        }
        cJSON_AddItemToArray(choices, ch);
        ok = add_text(ch, "text", c[i].text, c[i].len) &&
             cJSON_AddNumberToObject(ch, "index", c[i].index) && add_text_logprobs(ch, &c[i]) &&
             add_finish(ch, c[i].finish_reason);
    }
    ok = ok && add_usage(root, u);
    return finish(root, ok);
}

char *api_chat_chunk_json(const api_resp_meta *m, const api_choice *c, bool role, bool usage_null) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root && add_meta(root, m, "chat.completion.chunk");
    cJSON *choices = ok ? cJSON_AddArrayToObject(root, "choices") : NULL;
    cJSON *ch = choices ? cJSON_CreateObject() : NULL;
    ok = ch != NULL;
    if (ok) cJSON_AddItemToArray(choices, ch);
    cJSON *delta = NULL;
    ok = ok && cJSON_AddNumberToObject(ch, "index", c->index) &&
         (delta = cJSON_AddObjectToObject(ch, "delta"));
    if (ok && role)
        ok = cJSON_AddStringToObject(delta, "role", "assistant") &&
             (c->text ? true : cJSON_AddStringToObject(delta, "content", "") != NULL);
    if (ok && c->text) ok = add_text(delta, "content", c->text, c->len) != NULL;
    if (ok && c->reasoning)
        ok = add_text(delta, "reasoning_content", c->reasoning, c->reasoning_len) != NULL;
    ok = ok && add_calls(delta, c, true) && add_chat_logprobs(ch, c) &&
         add_finish(ch, c->finish_reason);
    if (ok && usage_null) ok = cJSON_AddNullToObject(root, "usage") != NULL;
    return finish(root, ok);
}

char *api_text_chunk_json(const api_resp_meta *m, const api_choice *c, bool usage_null) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root && add_meta(root, m, "text_completion");
    cJSON *choices = ok ? cJSON_AddArrayToObject(root, "choices") : NULL;
    cJSON *ch = choices ? cJSON_CreateObject() : NULL;
    ok = ch != NULL;
    if (ok) cJSON_AddItemToArray(choices, ch);
    ok = ok && add_text(ch, "text", c->text, c->len) &&
         cJSON_AddNumberToObject(ch, "index", c->index) && add_text_logprobs(ch, c) &&
         add_finish(ch, c->finish_reason);
    if (ok && usage_null) ok = cJSON_AddNullToObject(root, "usage") != NULL;
    return finish(root, ok);
}

char *api_usage_chunk_json(const api_resp_meta *m, enum api_kind kind, const api_usage *u) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root &&
              add_meta(root, m, kind == API_CHAT ? "chat.completion.chunk" : "text_completion") &&
              cJSON_AddArrayToObject(root, "choices") && add_usage(root, u);
    return finish(root, ok);
}

char *api_error_json(const api_error *e) {
    cJSON *root = cJSON_CreateObject();
    cJSON *err = root ? cJSON_AddObjectToObject(root, "error") : NULL;
    bool ok = err && add_text(err, "message", e->message, strlen(e->message)) &&
              cJSON_AddStringToObject(err, "type",
                                      e->type[0]         ? e->type
                                      : e->status >= 500 ? "server_error"
                                                         : "invalid_request_error");
    if (ok)
        ok = e->param[0] ? add_text(err, "param", e->param, strlen(e->param)) != NULL
                         : cJSON_AddNullToObject(err, "param") != NULL;
    if (ok)
        ok = e->code[0] ? add_text(err, "code", e->code, strlen(e->code)) != NULL
                        : cJSON_AddNullToObject(err, "code") != NULL;
    return finish(root, ok);
}

char *api_models_json(const char *model_id, long long created, const char *owned_by) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root && cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = ok ? cJSON_AddArrayToObject(root, "data") : NULL;
    cJSON *mo = data ? cJSON_CreateObject() : NULL;
    ok = mo != NULL;
    if (ok) cJSON_AddItemToArray(data, mo);
    ok = ok && add_text(mo, "id", model_id, model_id ? strlen(model_id) : 0) &&
         cJSON_AddStringToObject(mo, "object", "model") &&
         cJSON_AddNumberToObject(mo, "created", (double)created) &&
         add_text(mo, "owned_by", owned_by, owned_by ? strlen(owned_by) : 0);
    return finish(root, ok);
}

char *api_tokenize_json(const int32_t *ids, int n, const char *const *pieces,
                        const size_t *piece_lens) {
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = root ? cJSON_AddArrayToObject(root, "tokens") : NULL;
    bool ok = arr != NULL;
    for (int i = 0; ok && i < n; i++) {
        if (!pieces) {
            cJSON *v = cJSON_CreateNumber(ids[i]);
            ok = v != NULL;
            if (ok) cJSON_AddItemToArray(arr, v);
            continue;
        }
        cJSON *o = cJSON_CreateObject();
        ok = o != NULL;
        if (!ok) break;
        cJSON_AddItemToArray(arr, o);
        ok = cJSON_AddNumberToObject(o, "id", ids[i]) != NULL;
        const char *p = pieces[i] ? pieces[i] : "";
        size_t pl = pieces[i] ? piece_lens[i] : 0;
        if (ok && api_utf8_valid(p, pl) && !memchr(p, 0, pl)) {
            ok = add_text(o, "piece", p, pl) != NULL;
        } else if (ok) {
            cJSON *b = cJSON_AddArrayToObject(o, "piece");
            ok = b != NULL;
            for (size_t j = 0; ok && j < pl; j++) {
                cJSON *v = cJSON_CreateNumber((unsigned char)p[j]);
                ok = v != NULL;
                if (ok) cJSON_AddItemToArray(b, v);
            }
        }
    }
    return finish(root, ok);
}

char *api_detokenize_json(const char *text, size_t len) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root && add_text(root, "content", text, len);
    return finish(root, ok);
}
