/* schema.c: a JSON Schema walked once into gram nodes; response_format read into a gram. */
#include "api/schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_MAX_NEST 256 /* schemas compiled inside one another ($ref chains included) */

/* Schema object -> node id, so that a $ref compiles its target once and recursion closes. */
typedef struct memo {
    const cJSON **key;
    int *val;
    size_t cap, n;
} memo;

typedef struct ctx {
    gram *g;
    const cJSON *root;
    memo mm;
    int nest;
    char path[256]; /* where the schema being compiled is, for messages */
    char *err;
    size_t errlen;
    int any; /* gram_any, made on first use */
} ctx;

static size_t ptr_hash(const void *p, size_t cap) {
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 17;
    x *= 0xed5ad4bbu;
    x ^= x >> 11;
    return (size_t)x & (cap - 1);
}

static int memo_get(const memo *m, const cJSON *k) {
    if (!m->cap) return -1;
    for (size_t i = ptr_hash(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (!m->key[i]) return -1;
        if (m->key[i] == k) return m->val[i];
    }
}

static bool memo_put(memo *m, const cJSON *k, int v) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        memo nm = {calloc(cap, sizeof *nm.key), calloc(cap, sizeof *nm.val), cap, 0};
        if (!nm.key || !nm.val) {
            free(nm.key);
            free(nm.val);
            return false;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->key[i]) memo_put(&nm, m->key[i], m->val[i]);
        free(m->key);
        free(m->val);
        *m = nm;
    }
    size_t i = ptr_hash(k, m->cap);
    while (m->key[i])
        i = (i + 1) & (m->cap - 1);
    m->key[i] = k;
    m->val[i] = v;
    m->n++;
    return true;
}

static int fail(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (c->err && c->errlen) vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return GRAM_EINVAL;
}

/* Appends "/seg" to the path; returns the old length to restore. */
static size_t path_push(ctx *c, const char *seg) {
    size_t n = strlen(c->path);
    snprintf(c->path + n, sizeof c->path - n, "/%s", seg);
    return n;
}

static size_t path_pushi(ctx *c, const char *seg, int i) {
    char b[64];
    snprintf(b, sizeof b, "%s/%d", seg, i);
    return path_push(c, b);
}

static void label(ctx *c, int node) {
    gram_label(c->g, node, c->path);
}

static const char *const annotations[] = {"title",    "description", "$schema", "$id",
                                          "$comment", "examples",    "default", "deprecated",
                                          "readOnly", "writeOnly",   "$anchor", NULL};
static const char *const keywords[] = {"type",
                                       "properties",
                                       "required",
                                       "additionalProperties",
                                       "enum",
                                       "const",
                                       "items",
                                       "prefixItems",
                                       "minItems",
                                       "maxItems",
                                       "anyOf",
                                       "oneOf",
                                       "allOf",
                                       "minLength",
                                       "maxLength",
                                       "minimum",
                                       "maximum",
                                       "exclusiveMinimum",
                                       "exclusiveMaximum",
                                       "$ref",
                                       "$defs",
                                       "definitions",
                                       NULL};

static bool in_list(const char *const *l, const char *s) {
    for (; *l; l++)
        if (!strcmp(*l, s)) return true;
    return false;
}

static const cJSON *kw(const cJSON *s, const char *name) {
    return cJSON_GetObjectItemCaseSensitive(s, name);
}

static int compile(ctx *c, const cJSON *s);

/* A compiled sub-schema at path + seg. */
static int compile_at(ctx *c, const cJSON *s, const char *seg) {
    size_t n = path_push(c, seg);
    int id = compile(c, s);
    c->path[n] = 0;
    return id;
}

static int any_node(ctx *c) {
    if (c->any < 0) c->any = gram_any(c->g, c->err, c->errlen);
    return c->any;
}

/* A non-negative integer keyword (absent: dflt). */
static int read_count(ctx *c, const cJSON *s, const char *name, long dflt, long *out) {
    const cJSON *v = kw(s, name);
    *out = dflt;
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble > 1e9)
        return fail(c, "%s at %s must be a non-negative integer up to 1000000000", name, c->path);
    *out = (long)v->valuedouble;
    return 0;
}

/* ---- literals (enum, const) ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\') {
            e[0] = '\\', e[1] = (char)*p;
            sb_put(b, e, 2);
        } else if (*p < 0x20) {
            const char *x = *p == '\n'   ? "\\n"
                            : *p == '\t' ? "\\t"
                            : *p == '\r' ? "\\r"
                            : *p == '\b' ? "\\b"
                            : *p == '\f' ? "\\f"
                                         : NULL;
            if (x) {
                sb_put(b, x, 2);
            } else {
                snprintf(e, sizeof e, "\\u%04x", *p);
                sb_put(b, e, 6);
            }
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* v written compactly, as the model must write it (Python spellings in py mode). */
static void sb_value(sbuf *b, const cJSON *v, bool py) {
    char num[40];
    if (cJSON_IsNull(v))
        sb_put(b, py ? "None" : "null", 4);
    else if (cJSON_IsTrue(v))
        sb_put(b, py ? "True" : "true", 4);
    else if (cJSON_IsFalse(v))
        sb_put(b, py ? "False" : "false", 5);
    else if (cJSON_IsString(v))
        sb_str(b, v->valuestring);
    else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 1e15)
            snprintf(num, sizeof num, "%.0f", d);
        else {
            for (int prec = 1; prec <= 17; prec++) {
                snprintf(num, sizeof num, "%.*g", prec, d);
                if (strtod(num, NULL) == d) break;
            }
        }
        sb_put(b, num, strlen(num));
    } else if (cJSON_IsArray(v)) {
        sb_put(b, "[", 1);
        int i = 0;
        for (const cJSON *x = v->child; x; x = x->next, i++) {
            if (i) sb_put(b, ",", 1);
            sb_value(b, x, py);
        }
        sb_put(b, "]", 1);
    } else if (cJSON_IsObject(v)) {
        sb_put(b, "{", 1);
        int i = 0;
        for (const cJSON *x = v->child; x; x = x->next, i++) {
            if (i) sb_put(b, ",", 1);
            sb_str(b, x->string);
            sb_put(b, ":", 1);
            sb_value(b, x, py);
        }
        sb_put(b, "}", 1);
    }
}

static bool py_mode(const ctx *c);

static int lit_of(ctx *c, const cJSON *vals, bool single) {
    int id = gram_node(c->g, GRAM_LIT, c->err, c->errlen);
    if (id < 0) return id;
    label(c, id);
    sbuf b = {0};
    int rc = 0;
    for (const cJSON *v = single ? vals : vals->child; v && rc >= 0; v = single ? NULL : v->next) {
        b.n = 0;
        sb_value(&b, v, py_mode(c));
        if (b.oom)
            rc = fail(c, "out of memory");
        else
            rc = gram_lit_add(c->g, id, b.p ? b.p : "", b.n, c->err, c->errlen);
    }
    free(b.p);
    return rc < 0 ? rc : id;
}

/* ---- typed nodes ---- */

/* One side of a number's range: name (inclusive) and exname (exclusive: a number, or draft 4's
 * boolean flag on name); the tighter of the two wins, the exclusive one on a tie. */
static int read_bound(ctx *c, const cJSON *s, const char *name, const char *exname, bool lower,
                      bool *has, double *v, bool *ex) {
    const cJSON *b = kw(s, name), *x = kw(s, exname);
    *has = false;
    *ex = false;
    if (b) {
        if (!cJSON_IsNumber(b)) return fail(c, "%s at %s must be a number", name, c->path);
        *has = true;
        *v = b->valuedouble;
    }
    if (!x) return 0;
    if (cJSON_IsBool(x)) {
        *ex = cJSON_IsTrue(x) && *has;
        return 0;
    }
    if (!cJSON_IsNumber(x)) return fail(c, "%s at %s must be a number", exname, c->path);
    double xv = x->valuedouble;
    if (!*has || (lower ? xv >= *v : xv <= *v)) {
        *has = true;
        *v = xv;
        *ex = true;
    }
    return 0;
}

static int typed(ctx *c, const cJSON *s, const char *type);

static int obj_node(ctx *c, const cJSON *s, int id) {
    const cJSON *props = kw(s, "properties"), *req = kw(s, "required"),
                *add = kw(s, "additionalProperties");
    if (props && !cJSON_IsObject(props))
        return fail(c, "properties at %s must be an object", c->path);
    if (req && !cJSON_IsArray(req))
        return fail(c, "required at %s must be an array of strings", c->path);
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
        if (!cJSON_IsString(r))
            return fail(c, "required at %s must be an array of strings", c->path);
        if (!props || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring))
            return fail(c, "required property \"%.64s\" at %s is not in properties", r->valuestring,
                        c->path);
    }
    size_t n0 = path_push(c, "properties");
    for (const cJSON *p = props ? props->child : NULL; p; p = p->next) {
        bool required = false;
        for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
            if (!strcmp(r->valuestring, p->string)) required = true;
        int v = compile_at(c, p, p->string);
        if (v < 0) return v;
        int rc =
            gram_obj_prop(c->g, id, p->string, strlen(p->string), v, required, c->err, c->errlen);
        if (rc < 0) return rc;
    }
    c->path[n0] = 0;
    if (add && cJSON_IsBool(add)) {
        if (cJSON_IsTrue(add)) {
            int a = any_node(c);
            if (a < 0) return a;
            return gram_obj_extra(c->g, id, a, c->err, c->errlen);
        }
    } else if (add) {
        int a = compile_at(c, add, "additionalProperties");
        if (a < 0) return a;
        return gram_obj_extra(c->g, id, a, c->err, c->errlen);
    }
    return 0;
}

static int arr_node(ctx *c, const cJSON *s, int id) {
    const cJSON *pre = kw(s, "prefixItems"), *items = kw(s, "items");
    if (items && cJSON_IsArray(items)) { /* draft 4 tuples */
        if (pre) return fail(c, "items at %s is an array beside prefixItems", c->path);
        pre = items;
        items = NULL;
    }
    if (pre && !cJSON_IsArray(pre)) return fail(c, "prefixItems at %s must be an array", c->path);
    int i = 0;
    for (const cJSON *p = pre ? pre->child : NULL; p; p = p->next, i++) {
        size_t n = path_pushi(c, "prefixItems", i);
        int v = compile(c, p);
        c->path[n] = 0;
        if (v < 0) return v;
        int rc = gram_arr_prefix(c->g, id, v, c->err, c->errlen);
        if (rc < 0) return rc;
    }
    int it;
    if (!items)
        it = any_node(c);
    else if (cJSON_IsFalse(items))
        it = -1;
    else
        it = compile_at(c, items, "items");
    if (items && !cJSON_IsFalse(items) && it < 0) return it;
    if (!items && it < 0) return it;
    long mn, mx;
    int rc = read_count(c, s, "minItems", 0, &mn);
    if (rc < 0 || (rc = read_count(c, s, "maxItems", -1, &mx)) < 0) return rc;
    return gram_arr_set(c->g, id, it, mn, mx, c->err, c->errlen);
}

static int new_typed_node(ctx *c, const cJSON *s, const char *type, enum gram_kind *kind) {
    (void)s;
    if (!strcmp(type, "object"))
        *kind = GRAM_OBJ;
    else if (!strcmp(type, "array"))
        *kind = GRAM_ARR;
    else if (!strcmp(type, "string"))
        *kind = GRAM_STR;
    else if (!strcmp(type, "integer"))
        *kind = GRAM_INT;
    else if (!strcmp(type, "number"))
        *kind = GRAM_NUM;
    else if (!strcmp(type, "boolean") || !strcmp(type, "null"))
        *kind = GRAM_LIT;
    else
        return fail(c, "type \"%.32s\" at %s is not a JSON Schema type", type, c->path);
    int id = gram_node(c->g, *kind, c->err, c->errlen);
    if (id >= 0) label(c, id);
    return id;
}

/* A node for s restricted to one type (its keywords for other types do not apply). When memo_s
 * is set, the node is remembered for it before its children compile (recursion). */
static int typed_node(ctx *c, const cJSON *s, const char *type, const cJSON *memo_s) {
    enum gram_kind kind = GRAM_ALT;
    int id = new_typed_node(c, s, type, &kind);
    if (id < 0) return id;
    if (memo_s && !memo_put(&c->mm, memo_s, id)) return fail(c, "out of memory");
    int rc = 0;
    switch (kind) {
    case GRAM_OBJ:
        rc = obj_node(c, s, id);
        break;
    case GRAM_ARR:
        rc = arr_node(c, s, id);
        break;
    case GRAM_STR: {
        long mn, mx;
        if ((rc = read_count(c, s, "minLength", 0, &mn)) < 0) break;
        if ((rc = read_count(c, s, "maxLength", -1, &mx)) < 0) break;
        rc = gram_str_set(c->g, id, mn, mx, c->err, c->errlen);
        break;
    }
    case GRAM_INT:
    case GRAM_NUM: {
        bool hl, hh, el, eh;
        double lo = 0, hi = 0;
        if ((rc = read_bound(c, s, "minimum", "exclusiveMinimum", true, &hl, &lo, &el)) < 0) break;
        if ((rc = read_bound(c, s, "maximum", "exclusiveMaximum", false, &hh, &hi, &eh)) < 0) break;
        rc = gram_num_set(c->g, id, hl, lo, el, hh, hi, eh, c->err, c->errlen);
        break;
    }
    case GRAM_LIT: {
        bool py = py_mode(c);
        if (!strcmp(type, "null")) {
            rc = gram_lit_add(c->g, id, py ? "None" : "null", 4, c->err, c->errlen);
        } else {
            rc = gram_lit_add(c->g, id, py ? "True" : "true", 4, c->err, c->errlen);
            if (rc >= 0) rc = gram_lit_add(c->g, id, py ? "False" : "false", 5, c->err, c->errlen);
        }
        break;
    }
    default:
        break;
    }
    return rc < 0 ? rc : id;
}

static int typed(ctx *c, const cJSON *s, const char *type) {
    return typed_node(c, s, type, NULL);
}

/* The target of a "#..." reference (JSON pointer, ~0 ~1 escapes), or NULL. */
static const cJSON *resolve(const ctx *c, const char *ref) {
    if (ref[0] != '#') return NULL;
    const cJSON *cur = c->root;
    const char *p = ref + 1;
    if (*p && *p != '/') return NULL;
    while (*p == '/') {
        p++;
        char seg[256];
        size_t n = 0;
        while (*p && *p != '/' && n + 1 < sizeof seg) {
            if (p[0] == '~' && p[1] == '0')
                seg[n++] = '~', p += 2;
            else if (p[0] == '~' && p[1] == '1')
                seg[n++] = '/', p += 2;
            else
                seg[n++] = *p++;
        }
        seg[n] = 0;
        if (*p && *p != '/') return NULL;
        if (cJSON_IsArray(cur)) {
            char *end;
            long i = strtol(seg, &end, 10);
            if (*end || i < 0) return NULL;
            cur = cJSON_GetArrayItem(cur, (int)i);
        } else if (cJSON_IsObject(cur)) {
            cur = cJSON_GetObjectItemCaseSensitive(cur, seg);
        } else {
            return NULL;
        }
        if (!cur) return NULL;
    }
    return cur;
}

/* An ALT node for s (remembered before its alternatives compile). */
static int alt_begin(ctx *c, const cJSON *s) {
    int id = gram_node(c->g, GRAM_ALT, c->err, c->errlen);
    if (id < 0) return id;
    label(c, id);
    if (!memo_put(&c->mm, s, id)) return fail(c, "out of memory");
    return id;
}

static int compile_obj(ctx *c, const cJSON *s) {
    int constraints = 0;
    for (const cJSON *k = s->child; k; k = k->next) {
        if (in_list(annotations, k->string)) continue;
        if (!in_list(keywords, k->string))
            return fail(c, "JSON Schema keyword \"%.64s\" at %s is not supported", k->string,
                        c->path);
        if (strcmp(k->string, "$defs") && strcmp(k->string, "definitions")) constraints++;
    }
    const cJSON *ref = kw(s, "$ref");
    if (ref) {
        if (!cJSON_IsString(ref)) return fail(c, "$ref at %s must be a string", c->path);
        if (constraints > 1)
            return fail(c, "$ref at %s has sibling keywords; put them in the referenced schema",
                        c->path);
        const cJSON *t = resolve(c, ref->valuestring);
        if (!t)
            return fail(c, "$ref \"%.100s\" at %s does not point inside this schema",
                        ref->valuestring, c->path);
        int id = alt_begin(c, s);
        if (id < 0) return id;
        int k = compile_at(c, t, "$ref");
        if (k < 0) return k;
        return gram_alt_add(c->g, id, k, c->err, c->errlen) < 0 ? GRAM_ENOMEM : id;
    }
    const char *comb = kw(s, "anyOf")   ? "anyOf"
                       : kw(s, "oneOf") ? "oneOf"
                       : kw(s, "allOf") ? "allOf"
                                        : NULL;
    if (comb) {
        const cJSON *l = kw(s, comb);
        if (!cJSON_IsArray(l) || !l->child)
            return fail(c, "%s at %s must be a non-empty array of schemas", comb, c->path);
        if (constraints > 1)
            return fail(c, "%s at %s has sibling keywords; move them into each alternative", comb,
                        c->path);
        if (!strcmp(comb, "allOf") && l->child->next)
            return fail(c, "allOf with more than one schema at %s is not supported", c->path);
        int id = alt_begin(c, s);
        if (id < 0) return id;
        int i = 0;
        for (const cJSON *a = l->child; a; a = a->next, i++) {
            size_t n = path_pushi(c, comb, i);
            int k = compile(c, a);
            c->path[n] = 0;
            if (k < 0) return k;
            if (gram_alt_add(c->g, id, k, c->err, c->errlen) < 0) return GRAM_ENOMEM;
        }
        return id;
    }
    const cJSON *en = kw(s, "enum"), *cn = kw(s, "const");
    if (en) {
        if (!cJSON_IsArray(en) || !en->child)
            return fail(c, "enum at %s must be a non-empty array", c->path);
        size_t n = path_push(c, "enum");
        int id = lit_of(c, en, false);
        c->path[n] = 0;
        return id;
    }
    if (cn) {
        size_t n = path_push(c, "const");
        int id = lit_of(c, cn, true);
        c->path[n] = 0;
        return id;
    }
    const cJSON *ty = kw(s, "type");
    if (ty && cJSON_IsString(ty)) return typed_node(c, s, ty->valuestring, s);
    if (ty && cJSON_IsArray(ty)) {
        if (!ty->child) return fail(c, "type at %s is an empty list", c->path);
        int id = alt_begin(c, s);
        if (id < 0) return id;
        for (const cJSON *t = ty->child; t; t = t->next) {
            if (!cJSON_IsString(t))
                return fail(c, "type at %s must be a string or a list of strings", c->path);
            int k = typed(c, s, t->valuestring);
            if (k < 0) return k;
            if (gram_alt_add(c->g, id, k, c->err, c->errlen) < 0) return GRAM_ENOMEM;
        }
        return id;
    }
    if (ty) return fail(c, "type at %s must be a string or a list of strings", c->path);
    /* no type: what the keywords imply, or any value */
    if (kw(s, "properties") || kw(s, "required") || kw(s, "additionalProperties"))
        return typed_node(c, s, "object", s);
    if (kw(s, "items") || kw(s, "prefixItems") || kw(s, "minItems") || kw(s, "maxItems"))
        return typed_node(c, s, "array", s);
    if (kw(s, "minLength") || kw(s, "maxLength")) return typed_node(c, s, "string", s);
    if (kw(s, "minimum") || kw(s, "maximum") || kw(s, "exclusiveMinimum") ||
        kw(s, "exclusiveMaximum"))
        return typed_node(c, s, "number", s);
    return any_node(c);
}

static int compile(ctx *c, const cJSON *s) {
    int id = memo_get(&c->mm, s);
    if (id >= 0) return id;
    if (++c->nest > SCHEMA_MAX_NEST) {
        c->nest--;
        return fail(c, "the schema nests deeper than %d levels at %s", SCHEMA_MAX_NEST, c->path);
    }
    if (cJSON_IsTrue(s))
        id = any_node(c);
    else if (cJSON_IsFalse(s)) {
        id = gram_node(c->g, GRAM_LIT, c->err, c->errlen); /* no literal: nothing matches */
        if (id >= 0) label(c, id);
    } else if (cJSON_IsObject(s))
        id = compile_obj(c, s);
    else
        id = fail(c, "the schema at %s must be an object or a boolean", c->path);
    c->nest--;
    return id;
}

static bool py_mode(const ctx *c) {
    return gram_py(c->g);
}

int schema_compile(gram *g, const cJSON *schema, const char *root, char *err, size_t errlen) {
    ctx c = {0};
    c.g = g;
    c.root = schema;
    c.err = err;
    c.errlen = errlen;
    c.any = -1;
    snprintf(c.path, sizeof c.path, "%s", root ? root : "#");
    int id = compile(&c, schema);
    free(c.mm.key);
    free(c.mm.val);
    return id;
}

static int gram_from(const cJSON *schema, const char *where, gram **out, api_error *e) {
    char err[400];
    gram *g = gram_new(false);
    if (!g) return api_error_set(e, 500, NULL, NULL, "out of memory while compiling the schema");
    int root;
    if (schema) {
        root = schema_compile(g, schema, where, err, sizeof err);
    } else { /* json_object: any object */
        root = gram_node(g, GRAM_OBJ, err, sizeof err);
        int a = root >= 0 ? gram_any(g, err, sizeof err) : root;
        if (a >= 0) a = gram_obj_extra(g, root, a, err, sizeof err);
        if (a < 0) root = a;
    }
    int rc = root < 0 ? root : gram_finish(g, root, err, sizeof err);
    if (rc < 0) {
        gram_free(g);
        if (rc == GRAM_ENOMEM)
            return api_error_set(e, 500, NULL, NULL, "out of memory while compiling the schema");
        return api_error_set(e, 400, "response_format", "invalid_schema", "%s", err);
    }
    *out = g;
    return 0;
}

int schema_response_format(const cJSON *rf, gram **out, api_error *e) {
    *out = NULL;
    if (!rf || cJSON_IsNull(rf)) return 0;
    const cJSON *ty = cJSON_IsObject(rf) ? cJSON_GetObjectItemCaseSensitive(rf, "type") : NULL;
    if (!cJSON_IsObject(rf) || !cJSON_IsString(ty))
        return api_error_set(e, 400, "response_format", "invalid_type",
                             "response_format must be an object like {\"type\":\"json_object\"}");
    if (!strcmp(ty->valuestring, "text")) return 0;
    if (!strcmp(ty->valuestring, "json_object")) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(rf, "schema");
        return gram_from(s && !cJSON_IsNull(s) ? s : NULL, "response_format.schema", out, e);
    }
    if (strcmp(ty->valuestring, "json_schema") != 0)
        return api_error_set(e, 400, "response_format.type", "invalid_value",
                             "response_format type '%.32s' is not one of \"text\", "
                             "\"json_object\", \"json_schema\"",
                             ty->valuestring);
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
    const char *where = "response_format.json_schema.schema";
    const cJSON *s = NULL;
    if (js && !cJSON_IsNull(js)) {
        if (!cJSON_IsObject(js))
            return api_error_set(e, 400, "response_format.json_schema", "invalid_type",
                                 "response_format.json_schema must be an object with \"name\" "
                                 "and \"schema\"");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(js, "name");
        if (nm && !cJSON_IsNull(nm) && !cJSON_IsString(nm))
            return api_error_set(e, 400, "response_format.json_schema.name", "invalid_type",
                                 "response_format.json_schema.name must be a string");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(js, "strict");
        if (st && !cJSON_IsNull(st) && !cJSON_IsBool(st))
            return api_error_set(e, 400, "response_format.json_schema.strict", "invalid_type",
                                 "response_format.json_schema.strict must be a boolean");
        s = cJSON_GetObjectItemCaseSensitive(js, "schema");
    } else {
        s = cJSON_GetObjectItemCaseSensitive(rf, "schema"); /* llama-server's shape */
        where = "response_format.schema";
    }
    if (!s || cJSON_IsNull(s)) { /* no schema: any JSON value */
        gram *g = gram_new(false);
        char err[256];
        int a = g ? gram_any(g, err, sizeof err) : -1;
        if (a < 0 || gram_finish(g, a, err, sizeof err) < 0) {
            gram_free(g);
            return api_error_set(e, 500, NULL, NULL, "out of memory while compiling the schema");
        }
        *out = g;
        return 0;
    }
    return gram_from(s, where, out, e);
}

int schema_tools(const api_tool *tools, int n_tools, int only, int max_calls, gram **out,
                 api_error *e) {
    *out = NULL;
    char err[400];
    gram *g = gram_new(true);
    if (!g) return api_error_set(e, 500, NULL, NULL, "out of memory while compiling the tools");
    int calls = gram_node(g, GRAM_CALLS, err, sizeof err);
    int rc = calls;
    char where[96] = "tools";
    for (int i = 0; i < n_tools && rc >= 0; i++) {
        if (only >= 0 && i != only) continue;
        snprintf(where, sizeof where, "tools[%d].function.parameters", i);
        int params;
        cJSON *j = tools[i].parameters ? cJSON_Parse(tools[i].parameters) : NULL;
        if (tools[i].parameters && !j) {
            rc = GRAM_ENOMEM;
            break;
        }
        if (!j || (cJSON_IsObject(j) && !j->child)) { /* absent or {}: no arguments */
            params = gram_node(g, GRAM_OBJ, err, sizeof err);
        } else {
            params = schema_compile(g, j, where, err, sizeof err);
            if (params >= 0 && gram_node_kind(g, params) != GRAM_OBJ) {
                snprintf(err, sizeof err,
                         "%s must be an object schema ({\"type\":\"object\",...}) to be written "
                         "as keyword arguments",
                         where);
                params = GRAM_EINVAL;
            }
        }
        cJSON_Delete(j);
        if (params < 0) {
            rc = params;
            break;
        }
        rc =
            gram_calls_add(g, calls, tools[i].name, strlen(tools[i].name), params, err, sizeof err);
    }
    if (rc >= 0 && max_calls > 0) gram_calls_set_max(g, calls, max_calls);
    if (rc >= 0) rc = gram_finish(g, calls, err, sizeof err);
    if (rc < 0) {
        gram_free(g);
        if (rc == GRAM_ENOMEM)
            return api_error_set(e, 500, NULL, NULL, "out of memory while compiling the tools");
        return api_error_set(e, 400, "tools", "invalid_schema", "%s", err);
    }
    *out = g;
    return 0;
}
