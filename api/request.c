/* request.c: OpenAI request parsing with cJSON; every error names the field and the limit. */
#include "api/request.h"
#include "api/schema.h"
#include "api/tojson.h"
#include "engine/tok.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_limits_default(api_limits *l) {
    l->n_vocab = 0;
    l->max_tokens = 32768;
    l->max_n = 8;
    l->max_total_tokens = 131072;
    l->max_messages = 1024;
    l->max_parts = 256;
    l->max_prompt_tokens = 1 << 20;
    l->max_logit_bias = 1024;
    l->max_depth = 32;
    l->max_tools = 128;
}

const char *api_role_name(enum api_role r) {
    switch (r) {
    case API_ROLE_SYSTEM:
        return "system";
    case API_ROLE_USER:
        return "user";
    case API_ROLE_ASSISTANT:
        return "assistant";
    case API_ROLE_TOOL:
        return "tool";
    }
    return "user";
}

int api_error_set(api_error *e, int status, const char *param, const char *code, const char *fmt,
                  ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    snprintf(e->type, sizeof e->type, "%s",
             status >= 500 ? "server_error" : "invalid_request_error");
    return status >= 500 ? API_ENOMEM : API_EINVAL;
}

static int oom(api_error *e) {
    return api_error_set(e, 500, NULL, NULL, "out of memory while parsing the request");
}

/* ---- UTF-8 ---- */

bool api_utf8_valid(const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        int k = tok_utf8_len(s + i, len - i);
        if (!k) return false;
        i += (size_t)k;
    }
    return true;
}

size_t api_utf8_complete(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    /* look back at most 3 bytes for a lead byte whose character is cut off */
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned c = u[len - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking */
        size_t need = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? len - back : len;
    }
    return len;
}

/* ---- body pre-scan: UTF-8, nesting depth, NUL escapes (cJSON would truncate at them) ---- */

static int prescan(const char *body, size_t len, int max_depth, api_error *e) {
    const unsigned char *u = (const unsigned char *)body;
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len;) {
        unsigned c = u[i];
        if (c >= 0x80) {
            int k = tok_utf8_len(body + i, len - i);
            if (!k)
                return api_error_set(
                    e, 400, NULL, "invalid_encoding",
                    "request body is not valid UTF-8 (bad byte 0x%02X at offset %zu)", c, i);
            i += (size_t)k;
            continue;
        }
        if (c == 0)
            return api_error_set(e, 400, NULL, "invalid_json",
                                 "request body contains a NUL byte at offset %zu", i);
        if (in_str) {
            if (c == '\\' && i + 1 < len) {
                if (u[i + 1] == 'u' && i + 5 < len && !memcmp(body + i + 2, "0000", 4))
                    return api_error_set(e, 400, NULL, "invalid_value",
                                         "request body contains a NUL character (\\u0000) in a "
                                         "string at offset %zu; NUL is not accepted",
                                         i);
                i += 2;
                continue;
            }
            if (c == '"') in_str = false;
            if (c < 0x20) /* RFC 8259: escaped in strings (cJSON would take them raw) */
                return api_error_set(e, 400, NULL, "invalid_json",
                                     "request body has a raw control character 0x%02X in a string at "
                                     "offset %zu; JSON strings must escape it (\\n, \\t, \\u%04X)",
                                     c, i, c);
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            /* not JSON whitespace (cJSON would skip it as if it were) */
            return api_error_set(e, 400, NULL, "invalid_json",
                                 "request body has a control character 0x%02X at offset %zu; only "
                                 "space, tab, CR and LF may separate JSON tokens",
                                 c, i);
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return api_error_set(
                    e, 400, NULL, "invalid_value",
                    "request body nests arrays/objects deeper than the limit of %d", max_depth);
        } else if (c == ']' || c == '}') {
            depth--;
        }
        i++;
    }
    return 0;
}

static int parse_body(cJSON **out, const char *body, size_t len, int max_depth, api_error *e) {
    *out = NULL;
    if (!body || len == 0)
        return api_error_set(e, 400, NULL, "invalid_json",
                             "request body is empty; expected a JSON object");
    int rc = prescan(body, len, max_depth, e);
    if (rc) return rc;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t off = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return api_error_set(e, 400, NULL, "invalid_json",
                             "request body is not valid JSON (error near byte %zu of %zu)", off,
                             len);
    }
    size_t off = (size_t)(end - body);
    while (off < len &&
           (body[off] == ' ' || body[off] == '\t' || body[off] == '\n' || body[off] == '\r'))
        off++;
    if (off < len) {
        cJSON_Delete(root);
        return api_error_set(e, 400, NULL, "invalid_json",
                             "request body has extra data after the JSON value (at byte %zu)", off);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return api_error_set(e, 400, NULL, "invalid_json", "request body must be a JSON object");
    }
    *out = root;
    return 0;
}

/* ---- typed field readers: return 1 = present, 0 = absent or null, negative = error ---- */

static const char *type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsNull(v)) return "null";
    return "an invalid value";
}

static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* d printed with the fewest digits (up to 17) that read back as d, so a value just outside a
 * limit never prints as the limit itself ("top_p is 1; it must be <= 1"). */
static const char *exact_g(char *buf, size_t cap, double d) {
    for (int prec = 6; prec < 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) return buf;
    }
    snprintf(buf, cap, "%.17g", d);
    return buf;
}

/* A number field within [lo, hi] (lo excluded when lo_open), stored in *out as the float the
 * request keeps: the range holds for that float too (1e-50 is > 0 as a double, 0 as a float). */
static int read_number(const cJSON *obj, const char *name, double lo, double hi, bool lo_open,
                       float *out, api_error *e) {
    const cJSON *v = field(obj, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v))
        return api_error_set(e, 400, name, "invalid_type", "%s must be a number, got %s", name,
                             type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d))
        return api_error_set(e, 400, name, "invalid_value", "%s must be a finite number", name);
    float f = (float)d;
    if (d < lo || d > hi || f < lo || f > hi || (lo_open && f == lo)) {
        char shown[32];
        return api_error_set(e, 400, name, "invalid_value", "%s is %s; it must be %s %g and <= %g",
                             name, exact_g(shown, sizeof shown, d), lo_open ? ">" : ">=", lo, hi);
    }
    *out = f;
    return 1;
}

static int read_int(const cJSON *obj, const char *name, long long lo, long long hi, long long *out,
                    api_error *e) {
    const cJSON *v = field(obj, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v))
        return api_error_set(e, 400, name, "invalid_type", "%s must be an integer, got %s", name,
                             type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return api_error_set(e, 400, name, "invalid_type", "%s must be an integer, got %g", name,
                             d);
    if (d < (double)lo || d > (double)hi)
        return api_error_set(e, 400, name, "invalid_value",
                             "%s is %.15g; it must be between %lld and %lld", name, d, lo, hi);
    *out = (long long)d;
    return 1;
}

static int read_bool(const cJSON *obj, const char *name, bool *out, api_error *e) {
    const cJSON *v = field(obj, name);
    if (!v) return 0;
    if (!cJSON_IsBool(v))
        return api_error_set(e, 400, name, "invalid_type", "%s must be a boolean, got %s", name,
                             type_name(v));
    *out = cJSON_IsTrue(v);
    return 1;
}

/* Optional string field: copies it to *out (NULL when absent). */
static int read_string(const cJSON *obj, const char *name, char **out, api_error *e) {
    const cJSON *v = field(obj, name);
    *out = NULL;
    if (!v) return 0;
    if (!cJSON_IsString(v))
        return api_error_set(e, 400, name, "invalid_type", "%s must be a string, got %s", name,
                             type_name(v));
    *out = strdup(v->valuestring);
    return *out ? 1 : oom(e);
}

/* ---- messages ---- */

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 64);
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* content: string, null, or an array of {"type":"text","text":...} parts (joined as they are). */
static int parse_content(const cJSON *msg, int idx, int max_parts, api_message *m, api_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", idx);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!c || cJSON_IsNull(c)) {
        if (m->role != API_ROLE_ASSISTANT)
            return api_error_set(
                e, 400, param, "missing_field",
                "%s is required for role '%s' (a string or an array of text parts)", param,
                api_role_name(m->role));
        if (append(&buf, &len, &cap, "", 0)) return oom(e);
    } else if (cJSON_IsString(c)) {
        if (append(&buf, &len, &cap, c->valuestring, strlen(c->valuestring))) return oom(e);
    } else if (cJSON_IsArray(c)) {
        int n = cJSON_GetArraySize(c);
        if (n > max_parts)
            return api_error_set(e, 400, param, "invalid_value", "%s has %d parts; the limit is %d",
                                 param, n, max_parts);
        if (append(&buf, &len, &cap, "", 0)) return oom(e);
        int i = 0;
        for (const cJSON *p = c->child; p; p = p->next, i++) {
            char pp[96];
            snprintf(pp, sizeof pp, "%s[%d]", param, i);
            if (!cJSON_IsObject(p)) {
                free(buf);
                return api_error_set(
                    e, 400, pp, "invalid_type",
                    "%s must be an object like {\"type\":\"text\",\"text\":\"...\"}, got %s", pp,
                    type_name(p));
            }
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "type");
            if (!cJSON_IsString(t)) {
                free(buf);
                return api_error_set(e, 400, pp, "invalid_type",
                                     "%s.type must be a string (only \"text\" is supported)", pp);
            }
            if (strcmp(t->valuestring, "text") != 0) {
                free(buf);
                return api_error_set(e, 400, pp, "not_supported",
                                     "%s.type '%.64s' is not supported; only \"text\" parts are",
                                     pp, t->valuestring);
            }
            const cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
            if (!cJSON_IsString(tx)) {
                free(buf);
                return api_error_set(e, 400, pp, "invalid_type", "%s.text must be a string, got %s",
                                     pp, tx ? type_name(tx) : "nothing");
            }
            if (append(&buf, &len, &cap, tx->valuestring, strlen(tx->valuestring))) {
                free(buf);
                return oom(e);
            }
        }
    } else {
        return api_error_set(e, 400, param, "invalid_type",
                             "%s must be a string or an array of text parts, got %s", param,
                             type_name(c));
    }
    m->content = buf;
    m->len = len;
    return 0;
}

/* fn.name, a function name: 1..API_MAX_TOOL_NAME bytes of [A-Za-z0-9_.-] (OpenAI's set plus
 * '.', which LFM2 writes in dotted names such as Calendar.create_event), copied into *out. param
 * names fn ("tools[0]" for tools[0].function). */
static int take_name(const cJSON *fn, const char *param, char **out, api_error *e) {
    char pp[128];
    snprintf(pp, sizeof pp, "%s.function.name", param);
    const cJSON *nm = field(fn, "name");
    if (!cJSON_IsString(nm))
        return api_error_set(e, 400, pp, nm ? "invalid_type" : "missing_field",
                             "%s is required: a string", pp);
    const char *name = nm->valuestring;
    param = pp;
    size_t n = strlen(name);
    if (n == 0 || n > API_MAX_TOOL_NAME)
        return api_error_set(e, 400, param, "invalid_value",
                             "%s must be 1 to %d characters long, got %zu", param,
                             API_MAX_TOOL_NAME, n);
    for (size_t k = 0; k < n; k++) {
        char c = name[k];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return api_error_set(e, 400, param, "invalid_value",
                                 "%s '%.64s' may only contain letters, digits, '_', '-' and '.'",
                                 param, name);
    }
    if (!(*out = strdup(name))) return oom(e);
    return 0;
}

/* An assistant message's tool_calls[k]: {"id","type":"function","function":{"name",
 * "arguments"}} with arguments a JSON string holding an object (or the object itself). */
static int parse_tool_call(const cJSON *c, const char *param, api_tool_call *tc, api_error *e) {
    char pp[112];
    if (!cJSON_IsObject(c))
        return api_error_set(e, 400, param, "invalid_type", "%s must be an object, got %s", param,
                             type_name(c));
    const cJSON *ty = field(c, "type");
    if (ty && !(cJSON_IsString(ty) && !strcmp(ty->valuestring, "function"))) {
        snprintf(pp, sizeof pp, "%s.type", param);
        return api_error_set(e, 400, pp, "invalid_value", "%s must be \"function\"", pp);
    }
    const cJSON *id = field(c, "id");
    if (id && !cJSON_IsString(id)) {
        snprintf(pp, sizeof pp, "%s.id", param);
        return api_error_set(e, 400, pp, "invalid_type", "%s must be a string, got %s", pp,
                             type_name(id));
    }
    if (!(tc->id = strdup(id ? id->valuestring : ""))) return oom(e);
    const cJSON *fn = field(c, "function");
    snprintf(pp, sizeof pp, "%s.function", param);
    if (!cJSON_IsObject(fn))
        return api_error_set(e, 400, pp, fn ? "invalid_type" : "missing_field",
                             "%s must be an object with name and arguments", pp);
    int rc = take_name(fn, param, &tc->name, e);
    if (rc) return rc;
    const cJSON *args = field(fn, "arguments");
    snprintf(pp, sizeof pp, "%s.function.arguments", param);
    cJSON *parsed = NULL;
    const cJSON *obj = args;
    if (!args) {
        if (!(tc->arguments = strdup("{}"))) return oom(e);
        return 0;
    }
    if (cJSON_IsString(args)) {
        const char *end = NULL;
        parsed = cJSON_ParseWithOpts(args->valuestring, &end, 1);
        obj = parsed;
    }
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(parsed);
        return api_error_set(e, 400, pp, "invalid_value",
                             "%s must be a JSON object (as a string, e.g. \"{\\\"city\\\": "
                             "\\\"Paris\\\"}\")",
                             pp);
    }
    tc->arguments = cJSON_PrintUnformatted(obj);
    cJSON_Delete(parsed);
    return tc->arguments ? 0 : oom(e);
}

/* reasoning_content and tool_calls (assistant), tool_call_id (tool). */
static int parse_message_extras(const cJSON *m, int i, const api_limits *lim, api_message *am,
                                api_error *e) {
    char param[64];
    const cJSON *tc = field(m, "tool_calls");
    if (tc) {
        snprintf(param, sizeof param, "messages[%d].tool_calls", i);
        if (am->role != API_ROLE_ASSISTANT)
            return api_error_set(e, 400, param, "invalid_value",
                                 "%s is only allowed in assistant messages", param);
        if (!cJSON_IsArray(tc))
            return api_error_set(e, 400, param, "invalid_type", "%s must be an array, got %s",
                                 param, type_name(tc));
        int n = cJSON_GetArraySize(tc);
        if (n > lim->max_tools)
            return api_error_set(e, 400, param, "invalid_value", "%s has %d calls; the limit is %d",
                                 param, n, lim->max_tools);
        if (n > 0) {
            am->tool_calls = calloc((size_t)n, sizeof *am->tool_calls);
            if (!am->tool_calls) return oom(e);
        }
        int k = 0;
        for (const cJSON *c = tc->child; c; c = c->next, k++) {
            char pp[80];
            snprintf(pp, sizeof pp, "%s[%d]", param, k);
            am->n_tool_calls = k + 1;
            int rc = parse_tool_call(c, pp, &am->tool_calls[k], e);
            if (rc) return rc;
        }
    }
    const cJSON *rc_ = field(m, "reasoning_content");
    if (rc_) {
        snprintf(param, sizeof param, "messages[%d].reasoning_content", i);
        if (!cJSON_IsString(rc_))
            return api_error_set(e, 400, param, "invalid_type", "%s must be a string, got %s",
                                 param, type_name(rc_));
        if (am->role == API_ROLE_ASSISTANT && !(am->reasoning = strdup(rc_->valuestring)))
            return oom(e);
    }
    const cJSON *id = field(m, "tool_call_id");
    if (id) {
        snprintf(param, sizeof param, "messages[%d].tool_call_id", i);
        if (!cJSON_IsString(id))
            return api_error_set(e, 400, param, "invalid_type", "%s must be a string, got %s",
                                 param, type_name(id));
        if (am->role == API_ROLE_TOOL && !(am->tool_call_id = strdup(id->valuestring)))
            return oom(e);
    }
    return 0;
}

static int parse_messages(api_request *r, const cJSON *root, const api_limits *lim, api_error *e) {
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!ms || cJSON_IsNull(ms))
        return api_error_set(e, 400, "messages", "missing_field",
                             "messages is required: an array of {\"role\",\"content\"} objects");
    if (!cJSON_IsArray(ms))
        return api_error_set(e, 400, "messages", "invalid_type",
                             "messages must be an array, got %s", type_name(ms));
    int n = cJSON_GetArraySize(ms);
    if (n == 0)
        return api_error_set(e, 400, "messages", "invalid_value",
                             "messages must contain at least 1 message");
    if (n > lim->max_messages)
        return api_error_set(e, 400, "messages", "invalid_value",
                             "messages has %d entries; the limit is %d", n, lim->max_messages);
    r->messages = calloc((size_t)n, sizeof *r->messages);
    if (!r->messages) return oom(e);
    int i = 0;
    for (const cJSON *m = ms->child; m; m = m->next, i++) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m))
            return api_error_set(e, 400, param, "invalid_type", "%s must be an object, got %s",
                                 param, type_name(m));
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!role || cJSON_IsNull(role))
            return api_error_set(e, 400, param, "missing_field",
                                 "%s is required (system, user, assistant or tool)", param);
        if (!cJSON_IsString(role))
            return api_error_set(e, 400, param, "invalid_type", "%s must be a string, got %s",
                                 param, type_name(role));
        const char *rs = role->valuestring;
        api_message *am = &r->messages[i];
        if (!strcmp(rs, "system") || !strcmp(rs, "developer"))
            am->role = API_ROLE_SYSTEM;
        else if (!strcmp(rs, "user"))
            am->role = API_ROLE_USER;
        else if (!strcmp(rs, "assistant"))
            am->role = API_ROLE_ASSISTANT;
        else if (!strcmp(rs, "tool"))
            am->role = API_ROLE_TOOL;
        else
            return api_error_set(e, 400, param, "invalid_value",
                                 "%s '%.64s' is not one of system, user, assistant, tool", param,
                                 rs);
        int rc = parse_content(m, i, lim->max_parts, am, e);
        if (rc) return rc;
        r->n_messages = i + 1;
        if ((rc = parse_message_extras(m, i, lim, am, e))) return rc;
    }
    return 0;
}

/* ---- prompt (completions) ---- */

static int parse_prompt(api_request *r, const cJSON *root, const api_limits *lim, api_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p || cJSON_IsNull(p))
        return api_error_set(e, 400, "prompt", "missing_field",
                             "prompt is required: a string or an array of token ids");
    if (cJSON_IsString(p)) {
        r->prompt_len = strlen(p->valuestring);
        r->prompt = strdup(p->valuestring);
        return r->prompt ? 0 : oom(e);
    }
    if (!cJSON_IsArray(p))
        return api_error_set(e, 400, "prompt", "invalid_type",
                             "prompt must be a string or an array of token ids, got %s",
                             type_name(p));
    int n = cJSON_GetArraySize(p);
    if (n == 0)
        return api_error_set(e, 400, "prompt", "invalid_value",
                             "prompt is an empty array; give a string or at least 1 token id");
    if (cJSON_IsString(p->child)) {
        if (n == 1 && cJSON_IsString(p->child)) {
            r->prompt_len = strlen(p->child->valuestring);
            r->prompt = strdup(p->child->valuestring);
            return r->prompt ? 0 : oom(e);
        }
        return api_error_set(e, 400, "prompt", "not_supported",
                             "prompt as an array of %d strings is not supported; send one string "
                             "(or an array of token ids)",
                             n);
    }
    if (cJSON_IsArray(p->child))
        return api_error_set(e, 400, "prompt", "not_supported",
                             "prompt as an array of token arrays is not supported; send one array "
                             "of token ids");
    if (n > lim->max_prompt_tokens)
        return api_error_set(e, 400, "prompt", "invalid_value",
                             "prompt has %d token ids; the limit is %d", n, lim->max_prompt_tokens);
    r->prompt_tokens = malloc((size_t)n * sizeof *r->prompt_tokens);
    if (!r->prompt_tokens) return oom(e);
    int i = 0;
    long long hi = lim->n_vocab > 0 ? lim->n_vocab - 1 : INT32_MAX;
    for (const cJSON *t = p->child; t; t = t->next, i++) {
        char param[48];
        snprintf(param, sizeof param, "prompt[%d]", i);
        double d = cJSON_IsNumber(t) ? t->valuedouble : NAN;
        if (!cJSON_IsNumber(t) || !isfinite(d) || d != floor(d))
            return api_error_set(e, 400, param, "invalid_type",
                                 "%s must be an integer token id (prompt arrays may not mix types)",
                                 param);
        if (d < 0 || d > (double)hi)
            return api_error_set(e, 400, param, "invalid_value",
                                 "%s is token id %.0f; ids must be between 0 and %lld", param, d,
                                 hi);
        r->prompt_tokens[i] = (int32_t)d;
    }
    r->n_prompt_tokens = n;
    return 0;
}

/* ---- stop, logit_bias ---- */

static int parse_stop(api_request *r, const cJSON *root, api_error *e) {
    const cJSON *s = field(root, "stop");
    if (!s) return 0;
    const cJSON *items[API_MAX_STOP];
    int n = 0;
    if (cJSON_IsString(s)) {
        items[n++] = s;
    } else if (cJSON_IsArray(s)) {
        int cnt = cJSON_GetArraySize(s);
        if (cnt > API_MAX_STOP)
            return api_error_set(e, 400, "stop", "invalid_value",
                                 "stop has %d strings; the limit is %d", cnt, API_MAX_STOP);
        for (const cJSON *c = s->child; c; c = c->next) {
            if (!cJSON_IsString(c))
                return api_error_set(e, 400, "stop", "invalid_type",
                                     "stop[%d] must be a string, got %s", n, type_name(c));
            items[n++] = c;
        }
    } else {
        return api_error_set(e, 400, "stop", "invalid_type",
                             "stop must be a string or an array of up to %d strings, got %s",
                             API_MAX_STOP, type_name(s));
    }
    for (int i = 0; i < n; i++) {
        size_t l = strlen(items[i]->valuestring);
        if (l == 0)
            return api_error_set(e, 400, "stop", "invalid_value",
                                 "stop strings must not be empty (stop entry %d is \"\")", i);
        if (l > API_MAX_STOP_LEN)
            return api_error_set(e, 400, "stop", "invalid_value",
                                 "stop entry %d is %zu bytes long; the limit is %d bytes", i, l,
                                 API_MAX_STOP_LEN);
        r->stop[i] = strdup(items[i]->valuestring);
        if (!r->stop[i]) return oom(e);
        r->n_stop = i + 1;
    }
    return 0;
}

static int parse_logit_bias(api_request *r, const cJSON *root, const api_limits *lim,
                            api_error *e) {
    const cJSON *lb = field(root, "logit_bias");
    if (!lb) return 0;
    if (!cJSON_IsObject(lb))
        return api_error_set(e, 400, "logit_bias", "invalid_type",
                             "logit_bias must be an object mapping token ids to -100..100, got %s",
                             type_name(lb));
    int n = cJSON_GetArraySize(lb);
    if (n > lim->max_logit_bias)
        return api_error_set(e, 400, "logit_bias", "invalid_value",
                             "logit_bias has %d entries; the limit is %d", n, lim->max_logit_bias);
    if (n == 0) return 0;
    r->logit_bias = calloc((size_t)n, sizeof *r->logit_bias);
    if (!r->logit_bias) return oom(e);
    long long hi = lim->n_vocab > 0 ? lim->n_vocab - 1 : INT32_MAX;
    for (const cJSON *c = lb->child; c; c = c->next) {
        const char *k = c->string ? c->string : "";
        char *end = NULL;
        errno = 0;
        long long id = strtoll(k, &end, 10);
        if (!*k || *end || errno || k[0] == '+' || k[0] == ' ' || id < 0 || id > hi)
            return api_error_set(e, 400, "logit_bias", "invalid_value",
                                 "logit_bias key '%.32s' is not a token id between 0 and %lld", k,
                                 hi);
        if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble))
            return api_error_set(e, 400, "logit_bias", "invalid_type",
                                 "logit_bias[\"%s\"] must be a number between -100 and 100, got %s",
                                 k, type_name(c));
        double b = c->valuedouble;
        char shown[32];
        if (b < -100 || b > 100)
            return api_error_set(e, 400, "logit_bias", "invalid_value",
                                 "logit_bias[\"%s\"] is %s; it must be between -100 and 100", k,
                                 exact_g(shown, sizeof shown, b));
        r->logit_bias[r->n_logit_bias].id = (int32_t)id;
        r->logit_bias[r->n_logit_bias].bias = (float)b;
        r->n_logit_bias++;
    }
    return 0;
}

/* ---- tools, tool_choice, parallel_tool_calls, reasoning_format ---- */

static int parse_tool(const cJSON *t, int k, api_tool *tl, api_error *e) {
    char param[48], pp[80];
    snprintf(param, sizeof param, "tools[%d]", k);
    if (!cJSON_IsObject(t))
        return api_error_set(
            e, 400, param, "invalid_type",
            "%s must be an object like {\"type\":\"function\",\"function\":{...}}, "
            "got %s",
            param, type_name(t));
    const cJSON *ty = field(t, "type");
    snprintf(pp, sizeof pp, "%s.type", param);
    if (!cJSON_IsString(ty))
        return api_error_set(e, 400, pp, ty ? "invalid_type" : "missing_field",
                             "%s is required: \"function\"", pp);
    if (strcmp(ty->valuestring, "function") != 0)
        return api_error_set(e, 400, pp, "not_supported",
                             "%s '%.32s' is not supported; only \"function\" tools are", pp,
                             ty->valuestring);
    const cJSON *fn = field(t, "function");
    snprintf(pp, sizeof pp, "%s.function", param);
    if (!cJSON_IsObject(fn))
        return api_error_set(e, 400, pp, fn ? "invalid_type" : "missing_field",
                             "%s is required: an object with name, description, parameters", pp);
    int rc = take_name(fn, param, &tl->name, e);
    if (rc) return rc;
    const cJSON *d = field(fn, "description");
    snprintf(pp, sizeof pp, "%s.function.description", param);
    if (d && !cJSON_IsString(d))
        return api_error_set(e, 400, pp, "invalid_type", "%s must be a string, got %s", pp,
                             type_name(d));
    if (d && !(tl->description = strdup(d->valuestring))) return oom(e);
    const cJSON *pa = field(fn, "parameters");
    snprintf(pp, sizeof pp, "%s.function.parameters", param);
    if (pa && !cJSON_IsObject(pa))
        return api_error_set(e, 400, pp, "invalid_type", "%s must be a JSON Schema object, got %s",
                             pp, type_name(pa));
    if (pa && !(tl->parameters = cJSON_PrintUnformatted(pa))) return oom(e);
    const cJSON *st = field(fn, "strict");
    snprintf(pp, sizeof pp, "%s.function.strict", param);
    if (st && !cJSON_IsBool(st))
        return api_error_set(e, 400, pp, "invalid_type", "%s must be a boolean, got %s", pp,
                             type_name(st));
    tl->strict = st && cJSON_IsTrue(st);
    return (tl->json = tojson_print(t)) ? 0 : oom(e);
}

static int parse_tools(api_request *r, const cJSON *root, const api_limits *lim, api_error *e) {
    const cJSON *t = field(root, "tools");
    if (t) {
        if (!cJSON_IsArray(t))
            return api_error_set(e, 400, "tools", "invalid_type",
                                 "tools must be an array of function tools, got %s", type_name(t));
        int n = cJSON_GetArraySize(t);
        if (n > lim->max_tools)
            return api_error_set(e, 400, "tools", "invalid_value",
                                 "tools has %d entries; the limit is %d", n, lim->max_tools);
        if (n > 0 && !(r->tools = calloc((size_t)n, sizeof *r->tools))) return oom(e);
        int k = 0;
        for (const cJSON *c = t->child; c; c = c->next, k++) {
            r->n_tools = k + 1;
            int rc = parse_tool(c, k, &r->tools[k], e);
            if (rc) return rc;
            for (int j = 0; j < k; j++)
                if (!strcmp(r->tools[j].name, r->tools[k].name)) {
                    char pp[64];
                    snprintf(pp, sizeof pp, "tools[%d].function.name", k);
                    return api_error_set(e, 400, pp, "invalid_value",
                                         "%s '%s' is declared twice (also tools[%d])", pp,
                                         r->tools[k].name, j);
                }
        }
    }
    r->tool_choice = r->n_tools ? API_TOOL_CHOICE_AUTO : API_TOOL_CHOICE_NONE;
    r->tool_choice_index = -1;
    const cJSON *c = field(root, "tool_choice");
    if (c) {
        if (cJSON_IsString(c)) {
            const char *v = c->valuestring;
            if (!strcmp(v, "none"))
                r->tool_choice = API_TOOL_CHOICE_NONE;
            else if (!strcmp(v, "auto"))
                r->tool_choice = r->n_tools ? API_TOOL_CHOICE_AUTO : API_TOOL_CHOICE_NONE;
            else if (!strcmp(v, "required"))
                r->tool_choice = API_TOOL_CHOICE_REQUIRED;
            else
                return api_error_set(e, 400, "tool_choice", "invalid_value",
                                     "tool_choice '%.32s' is not one of \"none\", \"auto\", "
                                     "\"required\" or {\"type\":\"function\",\"function\":"
                                     "{\"name\":...}}",
                                     v);
        } else if (cJSON_IsObject(c)) {
            const cJSON *ty = field(c, "type");
            const cJSON *fn = field(c, "function");
            const cJSON *name = cJSON_IsObject(fn) ? field(fn, "name") : NULL;
            if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "function") != 0 ||
                !cJSON_IsString(name))
                return api_error_set(e, 400, "tool_choice", "invalid_value",
                                     "tool_choice as an object must be {\"type\":\"function\","
                                     "\"function\":{\"name\":\"...\"}}");
            r->tool_choice = API_TOOL_CHOICE_FUNCTION;
            for (int k = 0; k < r->n_tools; k++)
                if (!strcmp(r->tools[k].name, name->valuestring)) r->tool_choice_index = k;
            if (r->tool_choice_index < 0)
                return api_error_set(e, 400, "tool_choice", "invalid_value",
                                     "tool_choice names function '%.64s', which is not in tools",
                                     name->valuestring);
        } else {
            return api_error_set(e, 400, "tool_choice", "invalid_type",
                                 "tool_choice must be a string or an object, got %s", type_name(c));
        }
        if (r->tool_choice == API_TOOL_CHOICE_REQUIRED && !r->n_tools)
            return api_error_set(e, 400, "tool_choice", "invalid_value",
                                 "tool_choice \"required\" needs a non-empty tools array");
    }
    r->parallel_tool_calls = true;
    int rc = read_bool(root, "parallel_tool_calls", &r->parallel_tool_calls, e);
    if (rc < 0) return rc;
    const cJSON *rf = field(root, "reasoning_format");
    if (rf) {
        if (!cJSON_IsString(rf))
            return api_error_set(e, 400, "reasoning_format", "invalid_type",
                                 "reasoning_format must be a string, got %s", type_name(rf));
        if (!strcmp(rf->valuestring, "none"))
            r->reasoning_format = API_REASONING_NONE;
        else if (!strcmp(rf->valuestring, "auto") || !strcmp(rf->valuestring, "deepseek"))
            r->reasoning_format = API_REASONING_AUTO;
        else
            return api_error_set(e, 400, "reasoning_format", "invalid_value",
                                 "reasoning_format '%.32s' is not supported; use \"none\", "
                                 "\"auto\" or \"deepseek\"",
                                 rf->valuestring);
    }
    return 0;
}

/* ---- unsupported features ---- */

static int check_unsupported(const cJSON *root, enum api_kind kind, api_error *e) {
    const cJSON *t = field(root, "functions");
    if (t && !(cJSON_IsArray(t) && cJSON_GetArraySize(t) == 0))
        return api_error_set(e, 400, "functions", "not_supported",
                             "functions are not supported yet");
    t = field(root, "function_call");
    if (t)
        return api_error_set(e, 400, "function_call", "not_supported",
                             "function_call is not supported; use tools and tool_choice");
    if (kind == API_COMPLETION) {
        t = field(root, "echo");
        if (t && !cJSON_IsBool(t))
            return api_error_set(e, 400, "echo", "invalid_type", "echo must be a boolean, got %s",
                                 type_name(t));
        if (t && cJSON_IsTrue(t))
            return api_error_set(e, 400, "echo", "not_supported", "echo is not supported yet");
        t = field(root, "suffix");
        if (t && !(cJSON_IsString(t) && !t->valuestring[0]))
            return api_error_set(e, 400, "suffix", "not_supported", "suffix is not supported yet");
    }
    return 0;
}

/* ---- the request ---- */

static int parse_fields(api_request *r, const cJSON *root, enum api_kind kind,
                        const api_limits *lim, api_error *e) {
    int rc;
    long long v;
    if ((rc = check_unsupported(root, kind, e))) return rc;
    if ((rc = schema_response_format(field(root, "response_format"), &r->grammar, e))) return rc;
    if ((rc = read_string(root, "model", &r->model, e)) < 0) return rc;
    if (!r->model && !(r->model = strdup(""))) return oom(e);
    if ((rc = read_string(root, "user", &r->user, e)) < 0) return rc;
    if (!r->user && !(r->user = strdup(""))) return oom(e);

    if (kind == API_CHAT)
        rc = parse_messages(r, root, lim, e);
    else
        rc = parse_prompt(r, root, lim, e);
    if (rc) return rc;
    if (kind == API_CHAT && (rc = parse_tools(r, root, lim, e))) return rc;

    /* max_completion_tokens wins over the deprecated max_tokens when both are given */
    const char *mt_name =
        field(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((rc = read_int(root, mt_name, 1, lim->max_tokens, &v, e)) < 0) return rc;
    if (rc) r->max_tokens = (int)v;
    if ((rc = read_number(root, "temperature", 0, 2, false, &r->temperature, e)) < 0) return rc;
    if ((rc = read_number(root, "top_p", 0, 1, true, &r->top_p, e)) < 0) return rc;
    if ((rc = read_int(root, "top_k", 0, 1000000, &v, e)) < 0) return rc;
    if (rc) r->top_k = (int)v;
    if ((rc = read_number(root, "min_p", 0, 1, false, &r->min_p, e)) < 0) return rc;
    if ((rc = read_number(root, "presence_penalty", -2, 2, false, &r->presence_penalty, e)) < 0)
        return rc;
    if ((rc = read_number(root, "frequency_penalty", -2, 2, false, &r->frequency_penalty, e)) < 0)
        return rc;
    if ((rc = read_number(root, "repetition_penalty", 0, 10, true, &r->repetition_penalty, e)) < 0)
        return rc;
    if ((rc = read_int(root, "seed", -1, 9007199254740991LL, &v, e)) < 0) return rc;
    if (rc && v >= 0) {
        r->has_seed = true;
        r->seed = (uint64_t)v;
    }
    if ((rc = parse_stop(r, root, e))) return rc;
    if ((rc = parse_logit_bias(r, root, lim, e))) return rc;

    if (kind == API_CHAT) {
        if ((rc = read_bool(root, "logprobs", &r->logprobs, e)) < 0) return rc;
        if ((rc = read_int(root, "top_logprobs", 0, API_MAX_TOP_LOGPROBS, &v, e)) < 0) return rc;
        if (rc) {
            if (!r->logprobs)
                return api_error_set(e, 400, "top_logprobs", "invalid_value",
                                     "top_logprobs requires logprobs to be true");
            r->top_logprobs = (int)v;
        }
    } else {
        if ((rc = read_int(root, "logprobs", 0, API_MAX_LOGPROBS_COMPL, &v, e)) < 0) return rc;
        if (rc) {
            r->logprobs = true;
            r->top_logprobs = (int)v;
        }
    }
    if ((rc = read_int(root, "n", 1, lim->max_n, &v, e)) < 0) return rc;
    if (rc) r->n = (int)v;
    if (kind == API_COMPLETION) {
        if ((rc = read_int(root, "best_of", 1, lim->max_n, &v, e)) < 0) return rc;
        if (rc && v != r->n)
            return api_error_set(e, 400, "best_of", "not_supported",
                                 "best_of other than n is not supported yet");
    }
    if (r->max_tokens > 0 && (long)r->n * r->max_tokens > lim->max_total_tokens)
        return api_error_set(e, 400, "n", "invalid_value",
                             "n * max_tokens is %ld; the limit is %ld", (long)r->n * r->max_tokens,
                             lim->max_total_tokens);
    if ((rc = read_bool(root, "stream", &r->stream, e)) < 0) return rc;
    if ((rc = read_bool(root, "cache_prompt", &r->cache_prompt, e)) < 0) return rc;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return api_error_set(e, 400, "stream_options", "invalid_type",
                                 "stream_options must be an object, got %s", type_name(so));
        if (!r->stream)
            return api_error_set(e, 400, "stream_options", "invalid_value",
                                 "stream_options is only allowed when stream is true");
        const cJSON *iu = field(so, "include_usage");
        if (iu && !cJSON_IsBool(iu))
            return api_error_set(e, 400, "stream_options.include_usage", "invalid_type",
                                 "stream_options.include_usage must be a boolean, got %s",
                                 type_name(iu));
        r->include_usage = iu && cJSON_IsTrue(iu);
    }
    /* llama-server's chat_template_kwargs; only keep_past_thinking means anything to us */
    const cJSON *kw = kind == API_CHAT ? field(root, "chat_template_kwargs") : NULL;
    if (kw) {
        if (!cJSON_IsObject(kw))
            return api_error_set(e, 400, "chat_template_kwargs", "invalid_type",
                                 "chat_template_kwargs must be an object, got %s", type_name(kw));
        const cJSON *kp = field(kw, "keep_past_thinking");
        if (kp && !cJSON_IsBool(kp))
            return api_error_set(
                e, 400, "chat_template_kwargs.keep_past_thinking", "invalid_type",
                "chat_template_kwargs.keep_past_thinking must be a boolean, got %s", type_name(kp));
        r->keep_past_thinking = kp && cJSON_IsTrue(kp);
    }
    return 0;
}

static void request_defaults(api_request *r, enum api_kind kind) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->max_tokens = -1;
    r->temperature = 0.8f;
    r->top_p = 0.95f;
    r->top_k = 40;
    r->min_p = 0.05f;
    r->repetition_penalty = 1.0f;
    r->n = 1;
    r->tool_choice_index = -1;
    r->parallel_tool_calls = true;
    r->cache_prompt = true;
}

int api_request_parse(api_request *req, enum api_kind kind, const char *body, size_t len,
                      const api_limits *lim, api_error *e) {
    api_limits dl;
    if (!lim) {
        api_limits_default(&dl);
        lim = &dl;
    }
    memset(e, 0, sizeof *e);
    request_defaults(req, kind);
    cJSON *root = NULL;
    int rc = parse_body(&root, body, len, lim->max_depth, e);
    if (rc) return rc;
    rc = parse_fields(req, root, kind, lim, e);
    cJSON_Delete(root);
    if (rc) {
        api_request_free(req);
        request_defaults(req, kind);
    }
    return rc;
}

void api_request_free(api_request *r) {
    if (!r) return;
    free(r->model);
    for (int i = 0; i < r->n_messages; i++) {
        api_message *m = &r->messages[i];
        free(m->content);
        free(m->reasoning);
        free(m->tool_call_id);
        for (int k = 0; k < m->n_tool_calls; k++) {
            free(m->tool_calls[k].id);
            free(m->tool_calls[k].name);
            free(m->tool_calls[k].arguments);
        }
        free(m->tool_calls);
    }
    free(r->messages);
    for (int i = 0; i < r->n_tools; i++) {
        free(r->tools[i].name);
        free(r->tools[i].description);
        free(r->tools[i].parameters);
        free(r->tools[i].json);
    }
    free(r->tools);
    free(r->prompt);
    free(r->prompt_tokens);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->logit_bias);
    free(r->user);
    gram_free(r->grammar);
    memset(r, 0, sizeof *r);
}

/* ---- /tokenize and /detokenize ---- */

int api_tokenize_parse(api_tokenize_req *r, const char *body, size_t len, api_error *e) {
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->parse_special = true;
    cJSON *root = NULL;
    api_limits dl;
    api_limits_default(&dl);
    int rc = parse_body(&root, body, len, dl.max_depth, e);
    if (rc) return rc;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "content");
    if (!c || cJSON_IsNull(c)) {
        rc = api_error_set(e, 400, "content", "missing_field", "content is required: a string");
    } else if (!cJSON_IsString(c)) {
        rc = api_error_set(e, 400, "content", "invalid_type", "content must be a string, got %s",
                           type_name(c));
    } else if ((rc = read_bool(root, "add_special", &r->add_special, e)) >= 0 &&
               (rc = read_bool(root, "parse_special", &r->parse_special, e)) >= 0 &&
               (rc = read_bool(root, "with_pieces", &r->with_pieces, e)) >= 0) {
        r->len = strlen(c->valuestring);
        r->content = strdup(c->valuestring);
        rc = r->content ? 0 : oom(e);
    }
    cJSON_Delete(root);
    if (rc) api_tokenize_free(r);
    return rc < 0 ? rc : 0;
}

void api_tokenize_free(api_tokenize_req *r) {
    if (!r) return;
    free(r->content);
    memset(r, 0, sizeof *r);
}

int api_detokenize_parse(api_detokenize_req *r, const char *body, size_t len, const api_limits *lim,
                         api_error *e) {
    api_limits dl;
    if (!lim) {
        api_limits_default(&dl);
        lim = &dl;
    }
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    cJSON *root = NULL;
    int rc = parse_body(&root, body, len, lim->max_depth, e);
    if (rc) return rc;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    int n = cJSON_IsArray(t) ? cJSON_GetArraySize(t) : 0;
    long long hi = lim->n_vocab > 0 ? lim->n_vocab - 1 : INT32_MAX;
    if (!t || cJSON_IsNull(t)) {
        rc = api_error_set(e, 400, "tokens", "missing_field",
                           "tokens is required: an array of token ids");
    } else if (!cJSON_IsArray(t)) {
        rc = api_error_set(e, 400, "tokens", "invalid_type",
                           "tokens must be an array of token ids, got %s", type_name(t));
    } else if (n > lim->max_prompt_tokens) {
        rc = api_error_set(e, 400, "tokens", "invalid_value", "tokens has %d ids; the limit is %d",
                           n, lim->max_prompt_tokens);
    } else if (n > 0 && !(r->tokens = malloc((size_t)n * sizeof *r->tokens))) {
        rc = oom(e);
    } else {
        int i = 0;
        for (const cJSON *c = t->child; c; c = c->next, i++) {
            double d = cJSON_IsNumber(c) ? c->valuedouble : NAN;
            if (!isfinite(d) || d != floor(d) || d < 0 || d > (double)hi) {
                char param[48];
                snprintf(param, sizeof param, "tokens[%d]", i);
                rc = api_error_set(e, 400, param, "invalid_value",
                                   "%s must be a token id between 0 and %lld", param, hi);
                break;
            }
            r->tokens[i] = (int32_t)d;
        }
        r->n_tokens = rc ? 0 : n;
    }
    cJSON_Delete(root);
    if (rc) api_detokenize_free(r);
    return rc;
}

void api_detokenize_free(api_detokenize_req *r) {
    if (!r) return;
    free(r->tokens);
    memset(r, 0, sizeof *r);
}
