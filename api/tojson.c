/* tojson.c: Jinja tojson (Python json.dumps) and Python str() renderings of cJSON values. */
#include "api/tojson.h"
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void puts_(sbuf *b, const char *s) {
    put(b, s, strlen(s));
}

static char *finish(sbuf *b) {
    if (!b->oom && !b->s) puts_(b, "");
    if (b->oom) {
        free(b->s);
        return NULL;
    }
    return b->s;
}

/* A JSON string literal as json.dumps(ensure_ascii=False) writes it. */
static void json_string(sbuf *b, const char *s) {
    puts_(b, "\"");
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (!esc) continue;
        put(b, run, (size_t)(s - run));
        puts_(b, esc);
        run = s + 1;
    }
    put(b, run, (size_t)(s - run));
    puts_(b, "\"");
}

/* Python's float repr (shortest round-trip text, ".0" on integral-looking values); integral
 * values below 2^53 as integers, since cJSON does not say whether the text had a dot. */
static void number(sbuf *b, double d) {
    char buf[40];
    if (!isfinite(d)) { /* cJSON never produces these; json.dumps would write NaN/Infinity */
        puts_(b, isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (d == floor(d) && fabs(d) < 9007199254740992.0) {
        snprintf(buf, sizeof buf, "%.0f", d);
        if (!strcmp(buf, "-0")) snprintf(buf, sizeof buf, "0");
        puts_(b, buf);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, d);
        if (strtod(buf, NULL) == d) break;
    }
    /* Python writes exponents from 1e16 and below 1e-4; %g switches at the precision instead */
    double a = fabs(d);
    if (strchr(buf, 'e') && a >= 1e-4 && a < 1e16) {
        for (int p = 0; p <= 17; p++) {
            snprintf(buf, sizeof buf, "%.*f", p, d);
            if (strtod(buf, NULL) == d) break;
        }
    }
    if (!strchr(buf, '.') && !strchr(buf, 'e') && !strchr(buf, 'n') && !strchr(buf, 'N'))
        strcat(buf, ".0");
    puts_(b, buf);
}

static void dump(sbuf *b, const cJSON *v) {
    if (cJSON_IsObject(v)) {
        puts_(b, "{");
        for (const cJSON *c = v->child; c; c = c->next) {
            if (c != v->child) puts_(b, ", ");
            json_string(b, c->string ? c->string : "");
            puts_(b, ": ");
            dump(b, c);
        }
        puts_(b, "}");
    } else if (cJSON_IsArray(v)) {
        puts_(b, "[");
        for (const cJSON *c = v->child; c; c = c->next) {
            if (c != v->child) puts_(b, ", ");
            dump(b, c);
        }
        puts_(b, "]");
    } else if (cJSON_IsString(v)) {
        json_string(b, v->valuestring ? v->valuestring : "");
    } else if (cJSON_IsNumber(v)) {
        number(b, v->valuedouble);
    } else if (cJSON_IsTrue(v)) {
        puts_(b, "true");
    } else if (cJSON_IsFalse(v)) {
        puts_(b, "false");
    } else {
        puts_(b, "null");
    }
}

char *tojson_print(const cJSON *v) {
    sbuf b = {0};
    dump(&b, v);
    return finish(&b);
}

/* Python's repr of a str: single quotes unless the text has ' and no ", escapes for \\, the
 * chosen quote, \n \r \t and other control characters (\xNN). */
static void py_repr_str(sbuf *b, const char *s) {
    char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    put(b, &q, 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[8];
        if (c == '\\' || c == (unsigned char)q) {
            e[0] = '\\';
            e[1] = (char)c;
            put(b, e, 2);
        } else if (c == '\n') {
            puts_(b, "\\n");
        } else if (c == '\r') {
            puts_(b, "\\r");
        } else if (c == '\t') {
            puts_(b, "\\t");
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(e, sizeof e, "\\x%02x", c);
            puts_(b, e);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    put(b, &q, 1);
}

static void py(sbuf *b, const cJSON *v, bool top) {
    if (cJSON_IsObject(v)) {
        puts_(b, "{");
        for (const cJSON *c = v->child; c; c = c->next) {
            if (c != v->child) puts_(b, ", ");
            py_repr_str(b, c->string ? c->string : "");
            puts_(b, ": ");
            py(b, c, false);
        }
        puts_(b, "}");
    } else if (cJSON_IsArray(v)) {
        puts_(b, "[");
        for (const cJSON *c = v->child; c; c = c->next) {
            if (c != v->child) puts_(b, ", ");
            py(b, c, false);
        }
        puts_(b, "]");
    } else if (cJSON_IsString(v)) {
        if (top)
            puts_(b, v->valuestring ? v->valuestring : "");
        else
            py_repr_str(b, v->valuestring ? v->valuestring : "");
    } else if (cJSON_IsNumber(v)) {
        number(b, v->valuedouble);
    } else if (cJSON_IsTrue(v)) {
        puts_(b, "True");
    } else if (cJSON_IsFalse(v)) {
        puts_(b, "False");
    } else {
        puts_(b, "None");
    }
}

char *tojson_pystr(const cJSON *v) {
    sbuf b = {0};
    py(&b, v, true);
    return finish(&b);
}
