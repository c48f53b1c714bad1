/* toolcall.c: parser for LFM2's Python-style and JSON tool-call lists, and the incremental
 * splitter of generated text into content, reasoning and calls. */
#include "api/toolcall.h"
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

/* ---------------- the call-list parser ---------------- */

typedef struct parser {
    const char *s;
    size_t n, i;
    int depth;
    bool oom;
} parser;

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static void skip_ws(parser *p) {
    while (p->i < p->n && is_space(p->s[p->i]))
        p->i++;
}

static bool eat(parser *p, char c) {
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == c) {
        p->i++;
        return true;
    }
    return false;
}

static bool peek(parser *p, char c) {
    skip_ws(p);
    return p->i < p->n && p->s[p->i] == c;
}

static bool ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool ident_char(char c) {
    return ident_start(c) || (c >= '0' && c <= '9') || c == '-';
}

/* A growable byte buffer for string literals. */
typedef struct bytes {
    char *b;
    size_t len, cap;
} bytes;

static bool bput(bytes *x, const char *s, size_t n) {
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 64;
        while (cap < x->len + n + 1)
            cap *= 2;
        char *q = realloc(x->b, cap);
        if (!q) return false;
        x->b = q;
        x->cap = cap;
    }
    if (n) memcpy(x->b + x->len, s, n);
    x->len += n;
    x->b[x->len] = 0;
    return true;
}

/* Code point cp as UTF-8 (surrogates and out-of-range values become U+FFFD). */
static bool put_cp(bytes *x, uint32_t cp) {
    char u[4];
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = 0xFFFD;
    if (cp < 0x80) {
        u[0] = (char)cp;
        return bput(x, u, 1);
    }
    if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        return bput(x, u, 2);
    }
    if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        return bput(x, u, 3);
    }
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    return bput(x, u, 4);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* k hex digits at s[i..]; -1 if not all hex. */
static long hexn(const parser *p, size_t i, int k) {
    if (i + (size_t)k > p->n) return -1;
    long v = 0;
    for (int j = 0; j < k; j++) {
        int h = hexval(p->s[i + (size_t)j]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* A string literal in ' or " (or tripled), with Python's escapes (JSON's are a subset; \/ is
 * '/'); unknown escapes keep their backslash as Python does. NUL characters are refused (the
 * arguments become C strings). Returns a malloc'd string or NULL (error or p->oom). */
static char *string_lit(parser *p) {
    skip_ws(p);
    if (p->i >= p->n || (p->s[p->i] != '"' && p->s[p->i] != '\'')) return NULL;
    char q = p->s[p->i];
    bool triple = p->i + 2 < p->n && p->s[p->i + 1] == q && p->s[p->i + 2] == q;
    p->i += triple ? 3 : 1;
    bytes x = {0};
    if (!bput(&x, "", 0)) goto oom;
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == q) {
            if (!triple) {
                p->i++;
                return x.b;
            }
            if (p->i + 2 < p->n && p->s[p->i + 1] == q && p->s[p->i + 2] == q) {
                p->i += 3;
                return x.b;
            }
        }
        if (c == 0) break;
        if (c != '\\') {
            if (!bput(&x, &c, 1)) goto oom;
            p->i++;
            continue;
        }
        if (p->i + 1 >= p->n) break;
        char e = p->s[p->i + 1];
        p->i += 2;
        const char *lit = NULL;
        long cp = -2;
        switch (e) {
        case '\\':
            lit = "\\";
            break;
        case '\'':
            lit = "'";
            break;
        case '"':
            lit = "\"";
            break;
        case '/':
            lit = "/";
            break;
        case 'n':
            lit = "\n";
            break;
        case 't':
            lit = "\t";
            break;
        case 'r':
            lit = "\r";
            break;
        case 'b':
            lit = "\b";
            break;
        case 'f':
            lit = "\f";
            break;
        case 'v':
            lit = "\v";
            break;
        case 'a':
            lit = "\a";
            break;
        case '\n':
            lit = "";
            break; /* line continuation */
        case 'x':
            cp = hexn(p, p->i, 2);
            if (cp >= 0) p->i += 2;
            break;
        case 'u':
            cp = hexn(p, p->i, 4);
            if (cp >= 0) {
                p->i += 4;
                /* a JSON-style surrogate pair */
                if (cp >= 0xD800 && cp <= 0xDBFF && p->i + 6 <= p->n && p->s[p->i] == '\\' &&
                    p->s[p->i + 1] == 'u') {
                    long lo = hexn(p, p->i + 2, 4);
                    if (lo >= 0xDC00 && lo <= 0xDFFF) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        p->i += 6;
                    }
                }
            }
            break;
        case 'U':
            cp = hexn(p, p->i, 8);
            if (cp >= 0) p->i += 8;
            break;
        default:
            break;
        }
        if (lit) {
            if (!bput(&x, lit, strlen(lit))) goto oom;
        } else if (cp >= 0) {
            if (cp == 0) break; /* \x00, \u0000: refused */
            if (!put_cp(&x, (uint32_t)cp)) goto oom;
        } else if (cp == -1) {
            break; /* \x, \u, \U without their hex digits: a syntax error in Python */
        } else {
            char k[2] = {'\\', e};
            if (!bput(&x, k, 2)) goto oom;
        }
    }
    free(x.b); /* unterminated or refused */
    return NULL;
oom:
    free(x.b);
    p->oom = true;
    return NULL;
}

/* A number: JSON's grammar plus a leading '+', "1." and ".5" (rewritten to JSON text). Kept as
 * raw text so big integers and decimals come out exactly as written. */
static cJSON *number_lit(parser *p) {
    skip_ws(p);
    size_t i = p->i, st = i;
    char buf[64];
    size_t o = 0;
    if (i < p->n && (p->s[i] == '-' || p->s[i] == '+')) {
        if (p->s[i] == '-') buf[o++] = '-';
        i++;
    }
    size_t d0 = i;
    while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9' && o < 40)
        buf[o++] = p->s[i++];
    size_t nint = i - d0;
    if (nint == 0) buf[o++] = '0';
    if (nint > 1 && p->s[d0] == '0') return NULL; /* 007: not a number in either language */
    size_t nfrac = 0;
    if (i < p->n && p->s[i] == '.') {
        i++;
        buf[o++] = '.';
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9' && o < 58) {
            buf[o++] = p->s[i++];
            nfrac++;
        }
        if (!nfrac) buf[o++] = '0';
    }
    if (nint == 0 && nfrac == 0) return NULL;
    if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
        size_t k = i + 1;
        char eb[8];
        size_t eo = 0;
        eb[eo++] = 'e';
        if (k < p->n && (p->s[k] == '+' || p->s[k] == '-')) eb[eo++] = p->s[k++];
        size_t e0 = k;
        while (k < p->n && p->s[k] >= '0' && p->s[k] <= '9' && eo < 7)
            eb[eo++] = p->s[k++];
        if (k == e0) return NULL;
        if (o + eo >= sizeof buf) return NULL;
        memcpy(buf + o, eb, eo);
        o += eo;
        i = k;
    }
    if (i < p->n && (ident_char(p->s[i]) || p->s[i] == '.')) return NULL; /* 1x, 1.2.3 */
    if (o >= sizeof buf || i - st > 60) return NULL;
    buf[o] = 0;
    p->i = i;
    cJSON *v = cJSON_CreateRaw(buf);
    if (!v) p->oom = true;
    return v;
}

static cJSON *value(parser *p);

/* [a, b] or (a, b) with an optional trailing comma. */
static cJSON *array_lit(parser *p, char open, char close) {
    if (!eat(p, open)) return NULL;
    cJSON *a = cJSON_CreateArray();
    if (!a) {
        p->oom = true;
        return NULL;
    }
    while (!eat(p, close)) {
        cJSON *v = value(p);
        if (!v) goto fail;
        cJSON_AddItemToArray(a, v);
        if (!eat(p, ',')) {
            if (eat(p, close)) return a;
            goto fail;
        }
    }
    return a;
fail:
    cJSON_Delete(a);
    return NULL;
}

/* {key: value, ...}; keys are strings (numbers, booleans and None become their JSON text, as
 * json.dumps does with such keys). A repeated key keeps the last value, as Python does. */
static cJSON *dict_lit(parser *p) {
    if (!eat(p, '{')) return NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        p->oom = true;
        return NULL;
    }
    while (!eat(p, '}')) {
        /* a quoted key that string_lit refuses is malformed: never read again from inside it */
        bool quoted = p->i < p->n && (p->s[p->i] == '"' || p->s[p->i] == '\'');
        char *key = string_lit(p);
        if (!key && !p->oom && !quoted) {
            cJSON *k = value(p);
            if (k && (cJSON_IsRaw(k) || cJSON_IsBool(k) || cJSON_IsNull(k))) {
                key = cJSON_IsRaw(k)     ? strdup(k->valuestring)
                      : cJSON_IsTrue(k)  ? strdup("true")
                      : cJSON_IsFalse(k) ? strdup("false")
                                         : strdup("null");
                if (!key) p->oom = true;
            }
            cJSON_Delete(k);
        }
        if (!key) goto fail;
        if (!eat(p, ':')) {
            free(key);
            goto fail;
        }
        cJSON *v = value(p);
        if (!v) {
            free(key);
            goto fail;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(o, key);
        cJSON_AddItemToObject(o, key, v);
        free(key);
        if (!eat(p, ',')) {
            if (eat(p, '}')) return o;
            goto fail;
        }
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* A word at the cursor (no dots); its length, 0 if none. */
static size_t word_at(parser *p) {
    skip_ws(p);
    size_t k = p->i;
    if (k >= p->n || !ident_start(p->s[k])) return 0;
    while (k < p->n && ident_char(p->s[k]))
        k++;
    return k - p->i;
}

static bool word_is(const parser *p, size_t wl, const char *w) {
    return wl == strlen(w) && !memcmp(p->s + p->i, w, wl);
}

static cJSON *value(parser *p) {
    if (++p->depth > MAX_DEPTH) return NULL;
    cJSON *v = NULL;
    skip_ws(p);
    if (p->i >= p->n) goto out;
    char c = p->s[p->i];
    if (c == '"' || c == '\'') {
        char *s = string_lit(p);
        if (s) {
            v = cJSON_CreateString(s);
            if (!v) p->oom = true;
            free(s);
        }
    } else if (c == '[') {
        v = array_lit(p, '[', ']');
    } else if (c == '(') {
        v = array_lit(p, '(', ')');
    } else if (c == '{') {
        v = dict_lit(p);
    } else if (c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9')) {
        v = number_lit(p);
    } else {
        size_t wl = word_at(p);
        if (word_is(p, wl, "True") || word_is(p, wl, "true"))
            v = cJSON_CreateTrue();
        else if (word_is(p, wl, "False") || word_is(p, wl, "false"))
            v = cJSON_CreateFalse();
        else if (word_is(p, wl, "None") || word_is(p, wl, "null"))
            v = cJSON_CreateNull();
        else
            goto out;
        if (!v)
            p->oom = true;
        else
            p->i += wl;
    }
out:
    p->depth--;
    return v;
}

/* A dotted function name: word(.word)*; malloc'd, NULL if none. */
static char *func_name(parser *p) {
    size_t st;
    skip_ws(p);
    st = p->i;
    size_t k = p->i;
    for (;;) {
        if (k >= p->n || !ident_start(p->s[k])) return NULL;
        while (k < p->n && ident_char(p->s[k]))
            k++;
        if (k + 1 < p->n && p->s[k] == '.' && ident_start(p->s[k + 1])) {
            k++;
            continue;
        }
        break;
    }
    if (k - st > 256) return NULL;
    char *name = malloc(k - st + 1);
    if (!name) {
        p->oom = true;
        return NULL;
    }
    memcpy(name, p->s + st, k - st);
    name[k - st] = 0;
    p->i = k;
    return name;
}

/* name(k=v, ...) into c. */
static bool py_call(parser *p, toolcall *c) {
    char *name = func_name(p);
    if (!name) return false;
    cJSON *args = NULL;
    if (!eat(p, '(')) goto fail;
    if (!(args = cJSON_CreateObject())) goto oom;
    while (!eat(p, ')')) {
        size_t wl = word_at(p);
        if (!wl) goto fail;
        char key[128];
        if (wl >= sizeof key) goto fail;
        memcpy(key, p->s + p->i, wl);
        key[wl] = 0;
        p->i += wl;
        if (!eat(p, '=')) goto fail;
        cJSON *v = value(p);
        if (!v) goto fail;
        if (cJSON_GetObjectItemCaseSensitive(args, key)) { /* Python: a SyntaxError */
            cJSON_Delete(v);
            goto fail;
        }
        cJSON_AddItemToObject(args, key, v);
        if (!eat(p, ',')) {
            if (eat(p, ')')) break;
            goto fail;
        }
    }
    c->arguments = cJSON_PrintUnformatted(args);
    if (!c->arguments) goto oom;
    cJSON_Delete(args);
    c->name = name;
    return true;
oom:
    p->oom = true;
fail:
    cJSON_Delete(args);
    free(name);
    return false;
}

/* {"name": "f", "arguments": {...}} (or "parameters"; the object may also be a string holding
 * it) into c. */
static bool json_call(parser *p, toolcall *c) {
    cJSON *o = dict_lit(p);
    if (!o) return false;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!args) args = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    cJSON *parsed = NULL;
    bool ok = false;
    if (!cJSON_IsString(name) || !name->valuestring[0]) goto done;
    if (cJSON_IsString(args)) {
        /* a string that is not JSON text of an object is malformed, not an empty call */
        if (!(parsed = cJSON_Parse(args->valuestring))) goto done;
        args = parsed;
    }
    if (args && !cJSON_IsObject(args)) goto done;
    c->arguments = args ? cJSON_PrintUnformatted(args) : strdup("{}");
    c->name = strdup(name->valuestring);
    if (!c->arguments || !c->name) {
        free(c->arguments);
        free(c->name);
        c->arguments = c->name = NULL;
        p->oom = true;
        goto done;
    }
    ok = true;
done:
    cJSON_Delete(parsed);
    cJSON_Delete(o);
    return ok;
}

void toolcall_free_all(toolcall *c, int n) {
    for (int i = 0; c && i < n; i++) {
        free(c[i].name);
        free(c[i].arguments);
    }
    free(c);
}

int toolcall_parse(const char *s, size_t len, toolcall **out) {
    *out = NULL;
    parser p = {s, len, 0, 0, false};
    toolcall *calls = NULL;
    int n = 0, cap = 0;
    bool list = eat(&p, '[');
    for (;;) {
        if (list && eat(&p, ']')) break;
        if (n == cap) {
            cap = cap ? cap * 2 : 4;
            toolcall *nc = realloc(calls, (size_t)cap * sizeof *nc);
            if (!nc) {
                p.oom = true;
                goto fail;
            }
            calls = nc;
        }
        toolcall *c = &calls[n];
        c->name = c->arguments = NULL;
        bool ok = peek(&p, '{') ? json_call(&p, c) : py_call(&p, c);
        if (!ok) goto fail;
        n++;
        if (!list) break;
        if (!eat(&p, ',')) {
            if (eat(&p, ']')) break;
            goto fail;
        }
    }
    skip_ws(&p);
    if (p.i != p.n || n == 0) goto fail;
    *out = calls;
    return n;
fail:
    toolcall_free_all(calls, n);
    return p.oom ? -2 : -1;
}

/* ---------------- the incremental splitter ---------------- */

enum { ST_START, ST_REASON, ST_AFTER_THINK, ST_CONTENT, ST_CALL, ST_ECHO };

struct toolcall_stream {
    toolcall_opts o;
    int st;
    bool reason_started; /* a non-space reasoning byte was seen */
    bool oom;
    bytes hold;        /* undecided text, in order */
    bytes call;        /* the text of the open call block */
    bytes pre_ws;      /* whitespace dropped before the open block (given back if it fails) */
    bytes echo;        /* the last parsed block's list text, trimmed: an echo of it is dropped */
    bytes gap;         /* whitespace of parsed blocks owed to the content, written only when
                        * more content follows (so text on both sides of a call stays apart) */
    bool gap_after;    /* the block had no whitespace before it: take the whitespace after it */
    bool any_content;  /* some content has been written */
    bytes out_content; /* decided in the current push */
    bytes out_reason;
    toolcall *calls; /* every call so far */
    int n_calls, cap_calls;
};

toolcall_stream *toolcall_stream_new(const toolcall_opts *o) {
    toolcall_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->o = *o;
    s->st = ST_START;
    /* every buffer exists from the start, so no pointer below is ever NULL */
    bytes *all[] = {&s->hold,        &s->call,       &s->pre_ws, &s->echo,
                    &s->out_content, &s->out_reason, &s->gap};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!bput(all[i], "", 0)) {
            toolcall_stream_free(s);
            return NULL;
        }
    return s;
}

void toolcall_stream_free(toolcall_stream *s) {
    if (!s) return;
    free(s->hold.b);
    free(s->call.b);
    free(s->pre_ws.b);
    free(s->echo.b);
    free(s->gap.b);
    free(s->out_content.b);
    free(s->out_reason.b);
    toolcall_free_all(s->calls, s->n_calls);
    free(s);
}

int toolcall_stream_n_calls(const toolcall_stream *s) {
    return s->n_calls;
}

const toolcall *toolcall_stream_calls(const toolcall_stream *s) {
    return s->calls;
}

static void out(toolcall_stream *s, bytes *b, const char *t, size_t n) {
    if (n && !bput(b, t, n)) s->oom = true;
}

/* Content bytes, after the whitespace owed by the blocks before them. */
static void content(toolcall_stream *s, const char *t, size_t n) {
    if (!n) return;
    out(s, &s->out_content, s->gap.b, s->gap.len);
    s->gap.len = 0;
    s->gap_after = false;
    out(s, &s->out_content, t, n);
    s->any_content = true;
}

/* Drops the first n bytes of the held text. */
static void consume(toolcall_stream *s, size_t n) {
    if (!n) return;
    memmove(s->hold.b, s->hold.b + n, s->hold.len - n);
    s->hold.len -= n;
    if (s->hold.b) s->hold.b[s->hold.len] = 0;
}

/* Length of the longest proper prefix of tag that ends h (len bytes). */
static size_t tail_prefix(const char *h, size_t len, const char *tag) {
    size_t tl = strlen(tag);
    for (size_t k = tl - 1 < len ? tl - 1 : len; k > 0; k--)
        if (!memcmp(h + len - k, tag, k)) return k;
    return 0;
}

static const char *find(const char *h, size_t len, const char *tag) {
    size_t tl = strlen(tag);
    for (size_t i = 0; i + tl <= len; i++)
        if (h[i] == tag[0] && !memcmp(h + i, tag, tl)) return h + i;
    return NULL;
}

static size_t lead_ws(const char *h, size_t len) {
    size_t k = 0;
    while (k < len && is_space(h[k]))
        k++;
    return k;
}

static bool declared(const toolcall_stream *s, const char *name) {
    if (!s->o.names) return true;
    for (int i = 0; i < s->o.n_names; i++)
        if (s->o.names[i] && !strcmp(s->o.names[i], name)) return true;
    return false;
}

/* The block's list text is decided: calls, or content with its tags given back. */
static void decide_block(toolcall_stream *s, bool ended) {
    toolcall *calls = NULL;
    int n = toolcall_parse(s->call.b ? s->call.b : "", s->call.len, &calls);
    if (n == -2) {
        s->oom = true;
        return;
    }
    bool ok = n > 0;
    for (int i = 0; ok && i < n; i++)
        ok = declared(s, calls[i].name);
    if (!ok) {
        toolcall_free_all(calls, n > 0 ? n : 0);
        content(s, s->pre_ws.b, s->pre_ws.len);
        content(s, TOOLCALL_START, strlen(TOOLCALL_START));
        content(s, s->call.b, s->call.len);
        if (ended) content(s, TOOLCALL_END, strlen(TOOLCALL_END));
        s->call.len = 0;
        s->st = ST_CONTENT;
        return;
    }
    int room = s->o.max_calls > 0 ? s->o.max_calls - s->n_calls : n;
    int keep = n < room ? n : room > 0 ? room : 0;
    if (s->n_calls + keep > s->cap_calls) {
        int cap = (s->n_calls + keep) * 2;
        toolcall *nc = realloc(s->calls, (size_t)cap * sizeof *nc);
        if (!nc) {
            toolcall_free_all(calls, n);
            s->oom = true;
            return;
        }
        s->calls = nc;
        s->cap_calls = cap;
    }
    for (int i = 0; i < n; i++) {
        if (i < keep) {
            s->calls[s->n_calls++] = calls[i];
        } else {
            free(calls[i].name);
            free(calls[i].arguments);
        }
    }
    free(calls);
    /* between content before and after the block: its whitespace before, else after */
    if (s->any_content && !s->gap.len) {
        if (!bput(&s->gap, s->pre_ws.b, s->pre_ws.len)) s->oom = true;
        s->gap_after = !s->pre_ws.len;
    } else {
        s->gap_after = false;
    }
    /* the list text, trimmed, for the echo check */
    size_t a = lead_ws(s->call.b, s->call.len), z = s->call.len;
    while (z > a && is_space(s->call.b[z - 1]))
        z--;
    s->echo.len = 0;
    if (!bput(&s->echo, s->call.b + a, z - a)) s->oom = true;
    s->call.len = 0;
    s->st = ST_ECHO;
}

/* Decides as much of the held text as can be; final: the text has ended. */
static void run(toolcall_stream *s, bool final) {
    while (!s->oom) {
        const char *h = s->hold.b ? s->hold.b : "";
        size_t len = s->hold.len;
        int st0 = s->st;
        size_t len0 = len;
        switch (s->st) {
        case ST_START: {
            if (!s->o.reasoning) {
                s->st = ST_CONTENT;
                break;
            }
            if (s->o.start_reasoning) {
                s->st = ST_REASON;
                break;
            }
            size_t k = lead_ws(h, len), tl = strlen(TOOLCALL_THINK);
            if (len - k >= tl && !memcmp(h + k, TOOLCALL_THINK, tl)) {
                consume(s, k + tl);
                s->st = ST_REASON;
            } else if ((len - k < tl && !memcmp(h + k, TOOLCALL_THINK, len - k)) && !final) {
                return; /* may still become <think> */
            } else {
                s->st = ST_CONTENT;
            }
            break;
        }
        case ST_REASON: {
            if (!s->reason_started) {
                size_t k = lead_ws(h, len);
                consume(s, k);
                h = s->hold.b ? s->hold.b : "";
                len = s->hold.len;
                if (!len) return;
                s->reason_started = true;
            }
            const char *e = find(h, len, TOOLCALL_THINK_END);
            size_t t = e       ? (size_t)(e - h)
                       : final ? len
                               : len - tail_prefix(h, len, TOOLCALL_THINK_END);
            size_t emit = t;
            while (emit > 0 && is_space(h[emit - 1]))
                emit--;
            out(s, &s->out_reason, h, emit);
            if (e) {
                consume(s, t + strlen(TOOLCALL_THINK_END));
                s->st = ST_AFTER_THINK;
            } else if (final) {
                consume(s, len);
            } else {
                consume(s, emit);
            }
            break;
        }
        case ST_AFTER_THINK: {
            consume(s, lead_ws(h, len));
            if (!s->hold.len) return;
            s->st = ST_CONTENT;
            break;
        }
        case ST_CONTENT: {
            if (!s->o.tools) {
                content(s, h, len);
                consume(s, len);
                return;
            }
            const char *b = find(h, len, TOOLCALL_START);
            if (b) {
                size_t t = (size_t)(b - h), emit = t;
                while (emit > 0 && is_space(h[emit - 1]))
                    emit--;
                content(s, h, emit);
                s->pre_ws.len = 0;
                if (!bput(&s->pre_ws, h + emit, t - emit)) s->oom = true;
                consume(s, t + strlen(TOOLCALL_START));
                s->call.len = 0;
                s->st = ST_CALL;
                break;
            }
            size_t emit = final ? len : len - tail_prefix(h, len, TOOLCALL_START);
            if (!final)
                while (emit > 0 && is_space(h[emit - 1]))
                    emit--;
            content(s, h, emit);
            consume(s, emit);
            return;
        }
        case ST_CALL: {
            size_t from =
                s->call.len >= strlen(TOOLCALL_END) ? s->call.len - strlen(TOOLCALL_END) : 0;
            if (len && !bput(&s->call, h, len)) {
                s->oom = true;
                return;
            }
            consume(s, len);
            const char *e = find(s->call.b + from, s->call.len - from, TOOLCALL_END);
            if (e) {
                size_t at = (size_t)(e - s->call.b), after = at + strlen(TOOLCALL_END);
                /* what follows the end tag goes back to the held text */
                if (!bput(&s->hold, s->call.b + after, s->call.len - after)) {
                    s->oom = true;
                    return;
                }
                s->call.len = at;
                s->call.b[at] = 0;
                decide_block(s, true);
            } else if (final) {
                decide_block(s, false);
            } else {
                return;
            }
            break;
        }
        case ST_ECHO: {
            size_t w = lead_ws(h, len);
            if (s->gap_after && w && !bput(&s->gap, h, w)) s->oom = true;
            consume(s, w);
            h = s->hold.b ? s->hold.b : "";
            len = s->hold.len;
            if (!len) return;
            size_t el = s->echo.len;
            if (el && len >= el && !memcmp(h, s->echo.b, el)) {
                consume(s, el); /* the call written again after its block */
            } else if (el && len < el && !memcmp(h, s->echo.b, len) && !final) {
                return; /* may still be the echo */
            } else {
                s->st = ST_CONTENT;
            }
            break;
        }
        }
        if (s->st == st0 && s->hold.len == len0) return; /* everything decidable is decided */
    }
}

static int take(toolcall_stream *s, toolcall_delta *d, int first) {
    if (s->oom) return -1;
    d->content = s->out_content.b ? s->out_content.b : "";
    d->content_len = s->out_content.len;
    d->reasoning = s->out_reason.b ? s->out_reason.b : "";
    d->reasoning_len = s->out_reason.len;
    d->first_call = first;
    d->n_calls = s->n_calls - first;
    d->calls = s->calls ? s->calls + first : NULL;
    return 0;
}

int toolcall_stream_push(toolcall_stream *s, const char *text, size_t len, toolcall_delta *d) {
    memset(d, 0, sizeof *d);
    s->out_content.len = s->out_reason.len = 0;
    int first = s->n_calls;
    if (len && !bput(&s->hold, text, len)) s->oom = true;
    run(s, false);
    return take(s, d, first);
}

int toolcall_stream_finish(toolcall_stream *s, toolcall_delta *d) {
    memset(d, 0, sizeof *d);
    s->out_content.len = s->out_reason.len = 0;
    int first = s->n_calls;
    run(s, true);
    return take(s, d, first);
}
