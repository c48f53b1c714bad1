/* fuzz_toolcall.c: libFuzzer harness: the tool-call list parser and the content/reasoning/calls
 * splitter. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api/toolcall.h"
#include "tests/fuzz/fuzz.h"

/* Input: [flags][seed][text]. flags: bit 0 reasoning, 1 start in reasoning, 2 tools, 3 at most
 * one call, 4 only functions "f" and "g" are declared. The seed decides how the text is split
 * into pushes. What must hold:
 * - toolcall_parse of the text: -1, or calls with a dotted name of [A-Za-z0-9_-] words and
 *   arguments that parse as a JSON object; the same answer twice;
 * - the splitter gives the same content, reasoning and calls for the whole text at once, byte by
 *   byte and in random pieces; content + reasoning are never longer than the text plus the tags
 *   given back; every call's arguments are a JSON object; at most one call when asked;
 * - text without '<' (and not starting in reasoning) comes out as content unchanged. */

typedef struct out {
    char *content, *reasoning;
    size_t cl, rl;
    char *calls; /* "name\targs\n" per call */
    size_t kl;
    int n;
} out;

static void app(char **b, size_t *l, const char *s, size_t n) {
    char *p = realloc(*b, *l + n + 1);
    FUZZ_CHECK(p != NULL);
    memcpy(p + *l, s, n);
    *l += n;
    p[*l] = 0;
    *b = p;
}

static void take(out *o, const toolcall_delta *d) {
    app(&o->content, &o->cl, d->content, d->content_len);
    app(&o->reasoning, &o->rl, d->reasoning, d->reasoning_len);
    FUZZ_CHECK(d->first_call == o->n && d->n_calls >= 0);
    for (int i = 0; i < d->n_calls; i++) {
        const toolcall *c = &d->calls[i];
        FUZZ_CHECK(c->name && c->name[0] && c->arguments);
        cJSON *a = cJSON_Parse(c->arguments);
        FUZZ_CHECK(cJSON_IsObject(a));
        cJSON_Delete(a);
        app(&o->calls, &o->kl, c->name, strlen(c->name));
        app(&o->calls, &o->kl, "\t", 1);
        app(&o->calls, &o->kl, c->arguments, strlen(c->arguments));
        app(&o->calls, &o->kl, "\n", 1);
    }
    o->n += d->n_calls;
}

static out run(const toolcall_opts *opt, const char *t, size_t len, int mode, uint32_t seed) {
    out o = {0};
    app(&o.content, &o.cl, "", 0);
    app(&o.reasoning, &o.rl, "", 0);
    app(&o.calls, &o.kl, "", 0);
    toolcall_stream *s = toolcall_stream_new(opt);
    FUZZ_CHECK(s != NULL);
    toolcall_delta d;
    for (size_t i = 0; i < len;) {
        size_t k = mode == 0 ? len : mode == 1 ? 1 : 1 + (seed = seed * 1664525u + 1013904223u) % 9;
        if (k > len - i) k = len - i;
        FUZZ_CHECK(toolcall_stream_push(s, t + i, k, &d) == 0);
        take(&o, &d);
        i += k;
    }
    FUZZ_CHECK(toolcall_stream_finish(s, &d) == 0);
    take(&o, &d);
    FUZZ_CHECK(toolcall_stream_n_calls(s) == o.n);
    toolcall_stream_free(s);
    return o;
}

static void out_free(out *o) {
    free(o->content);
    free(o->reasoning);
    free(o->calls);
}

static bool name_ok(const char *n) {
    size_t len = strlen(n);
    if (!len || n[0] == '.' || n[len - 1] == '.' || strstr(n, "..")) return false;
    return strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") == len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int flags = data[0];
    uint32_t seed = data[1];
    const char *text = (const char *)data + 2;
    size_t len = size - 2;

    toolcall *c = NULL;
    int n = toolcall_parse(text, len, &c);
    FUZZ_CHECK(n == -1 || n >= 1);
    if (n >= 1) {
        toolcall *c2 = NULL;
        FUZZ_CHECK(toolcall_parse(text, len, &c2) == n);
        for (int i = 0; i < n; i++) {
            FUZZ_CHECK(name_ok(c[i].name));
            FUZZ_CHECK(!strcmp(c[i].name, c2[i].name) && !strcmp(c[i].arguments, c2[i].arguments));
            cJSON *a = cJSON_Parse(c[i].arguments);
            FUZZ_CHECK(cJSON_IsObject(a));
            cJSON_Delete(a);
        }
        toolcall_free_all(c2, n);
        toolcall_free_all(c, n);
    } else {
        FUZZ_CHECK(c == NULL);
    }

    static const char *const names[] = {"f", "g"};
    toolcall_opts o = {.reasoning = flags & 1,
                       .start_reasoning = flags & 2,
                       .tools = flags & 4,
                       .max_calls = flags & 8 ? 1 : 0,
                       .names = flags & 16 ? names : NULL,
                       .n_names = 2};
    out whole = run(&o, text, len, 0, seed), bytes = run(&o, text, len, 1, seed),
        rnd = run(&o, text, len, 2, seed);
    FUZZ_CHECK(whole.cl == bytes.cl && !memcmp(whole.content, bytes.content, whole.cl));
    FUZZ_CHECK(whole.cl == rnd.cl && !memcmp(whole.content, rnd.content, whole.cl));
    FUZZ_CHECK(whole.rl == bytes.rl && !memcmp(whole.reasoning, bytes.reasoning, whole.rl));
    FUZZ_CHECK(whole.rl == rnd.rl && !memcmp(whole.reasoning, rnd.reasoning, whole.rl));
    FUZZ_CHECK(whole.kl == bytes.kl && !memcmp(whole.calls, bytes.calls, whole.kl));
    FUZZ_CHECK(whole.kl == rnd.kl && !memcmp(whole.calls, rnd.calls, whole.kl));
    if (flags & 8) FUZZ_CHECK(whole.n <= 1);
    if (!(flags & 4)) FUZZ_CHECK(whole.n == 0);
    /* a malformed block at the very end gives back its start tag, which was not in the text
     * only when the text itself held it: content never holds more than the text */
    FUZZ_CHECK(whole.cl + whole.rl <= len);
    if (!memchr(text, '<', len) && !(flags & 2))
        FUZZ_CHECK(whole.cl == len && !memcmp(whole.content, text, len) && whole.n == 0);
    out_free(&whole);
    out_free(&bytes);
    out_free(&rnd);
    return 0;
}
