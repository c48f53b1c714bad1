/* fuzz_schema.c: libFuzzer harness: JSON schemas compiled into a gram, then the matcher fed
 * arbitrary bytes and driven by random allowed tokens to a finish on the mini vocab.
 *
 * Input: [flags][schema JSON][NUL][text]. flags bit 0: Python literals; bit 1: the schema as the
 * parameters of a callable in a tool-call list; bit 2: at most one call; bit 6: after the text,
 * every token of the vocab checked one by one against the allowed list; the bits from 3 seed
 * the token walk.
 * Properties: compile either succeeds or fails with a message; every state reached has an allowed
 * token (no dead end), the allowed list equals a token-by-token check of the whole vocab, holds
 * each token once, includes EOS exactly when the value is complete; a complete JSON value (not
 * Python mode) parses with cJSON. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api/schema.h"
#include "engine/gguf.h"
#include "engine/gram.h"
#include "engine/tok.h"
#include "tests/fuzz/fuzz.h"

static const tok *T;
static gram_vocab *V;

static void setup(void) {
    if (V) return;
    char err[256];
    gguf *g = NULL;
    tok *t = NULL;
    const char *path = getenv("LFM2_FUZZ_TOK_MODEL");
    if (!path) path = "tests/data/models/mini-F16.gguf";
    if (gguf_open(&g, path, err, sizeof err) < 0 || tok_new(&t, g, err, sizeof err) < 0 ||
        gram_vocab_new(&V, t, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_schema: %s: %s\n", path, err);
        abort();
    }
    gguf_close(g);
    T = t;
}

static uint32_t next(uint32_t *s) {
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return *s;
}

/* The allowed list against gram_matcher_allows for every token; returns the count. */
static int check_allowed(gram_matcher *m, int32_t *ids, uint8_t *seen, bool full) {
    int n_vocab = tok_n_vocab(T);
    int n = gram_matcher_allowed(m, ids);
    FUZZ_CHECK(n > 0);
    memset(seen, 0, (size_t)n_vocab);
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab);
        FUZZ_CHECK(!seen[ids[i]]);
        seen[ids[i]] = 1;
        if (!full) FUZZ_CHECK(gram_matcher_allows(m, ids[i]));
    }
    FUZZ_CHECK(seen[gram_vocab_eos(V)] == gram_matcher_complete(m));
    if (full)
        for (int id = 0; id < n_vocab; id++)
            FUZZ_CHECK(gram_matcher_allows(m, id) == (seen[id] != 0));
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    if (size < 2) return 0;
    uint8_t flags = data[0];
    const uint8_t *nul = memchr(data + 1, 0, size - 1);
    size_t slen = nul ? (size_t)(nul - data - 1) : size - 1;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t tlen = nul ? size - (size_t)(nul - data) - 1 : 0;
    cJSON *j = cJSON_ParseWithLength((const char *)data + 1, slen);
    if (!j) return 0;
    bool py = flags & 1, calls = flags & 2;
    char err[512] = "";
    gram *g = gram_new(py);
    FUZZ_CHECK(g);
    int root = schema_compile(g, j, "#", err, sizeof err);
    if (root >= 0 && calls) {
        int c = gram_node(g, GRAM_CALLS, err, sizeof err);
        FUZZ_CHECK(c >= 0);
        if (gram_calls_add(g, c, "f", 1, root, err, sizeof err) < 0)
            root = -1; /* not an object */
        else
            root = c;
        if (flags & 4) gram_calls_set_max(g, c, 1);
    }
    int rc = root < 0 ? root : gram_finish(g, root, err, sizeof err);
    cJSON_Delete(j);
    if (rc < 0) {
        FUZZ_CHECK(err[0] != 0);
        gram_free(g);
        return 0;
    }
    gram_matcher *m = NULL;
    FUZZ_CHECK(gram_matcher_new(&m, g, V, err, sizeof err) == 0);
    int n_vocab = tok_n_vocab(T);
    int32_t *ids = malloc((size_t)n_vocab * sizeof *ids);
    uint8_t *seen = malloc((size_t)n_vocab);
    char *out = malloc(1 << 16);
    size_t olen = 0;
    FUZZ_CHECK(ids && seen && out);
    int32_t cs = tok_find(T, "<|tool_call_start|>", 19), ce = tok_find(T, "<|tool_call_end|>", 17);
    if (calls) FUZZ_CHECK(gram_matcher_accept(m, cs));
    /* the input's bytes, as far as they continue a valid prefix */
    for (size_t i = 0; i < tlen && olen < 4096; i++) {
        if (!gram_matcher_feed(m, text + i, 1)) continue; /* refused: skipped, state unchanged */
        out[olen++] = text[i];
        if (i % 64 == 0) check_allowed(m, ids, seen, false);
    }
    check_allowed(m, ids, seen, (flags & 0x40) != 0); /* the whole vocab, token by token */
    /* then random allowed tokens, preferring closers after a while, until EOS or the bound */
    uint32_t s = 0x9e3779b9u ^ (uint32_t)(flags >> 3) ^ (uint32_t)size;
    bool ended = false;
    for (int step = 0; step < 300 && olen < 60000; step++) {
        int32_t pick = -1;
        if (step % 16 == 0 || step > 40) { /* the whole allowed list, checked */
            int n = check_allowed(m, ids, seen, false);
            pick = ids[next(&s) % (uint32_t)n];
            if (step > 40) /* closers, EOS: the value ends soon */
                for (int i = 0; i < n; i++) {
                    size_t pl;
                    const char *p = tok_piece(T, ids[i], &pl);
                    if (ids[i] == gram_vocab_eos(V) || ids[i] == ce ||
                        (pl == 1 && strchr("\"]})0", p[0]))) {
                        pick = ids[i];
                        break;
                    }
                }
        } else { /* a random token the matcher allows (cheap), else the list */
            for (int tries = 0; tries < 64 && pick < 0; tries++) {
                int32_t id = (int32_t)(next(&s) % (uint32_t)n_vocab);
                if (gram_matcher_allows(m, id)) pick = id;
            }
            if (pick < 0) {
                int n = check_allowed(m, ids, seen, false);
                pick = ids[next(&s) % (uint32_t)n];
            }
        }
        if (pick == gram_vocab_eos(V)) {
            FUZZ_CHECK(gram_matcher_complete(m));
            FUZZ_CHECK(gram_matcher_accept(m, pick));
            ended = true;
            break;
        }
        FUZZ_CHECK(gram_matcher_accept(m, pick));
        if (pick != cs && pick != ce) {
            size_t pl;
            const char *p = tok_piece(T, pick, &pl);
            memcpy(out + olen, p, pl);
            olen += pl;
        }
    }
    if (ended && !py && !calls) { /* a complete JSON value */
        cJSON *v = cJSON_ParseWithLength(out, olen);
        if (!v) fprintf(stderr, "not JSON: %.*s\n", (int)(olen > 400 ? 400 : olen), out);
        FUZZ_CHECK(v != NULL);
        cJSON_Delete(v);
    }
    free(ids);
    free(seen);
    free(out);
    gram_matcher_free(m);
    gram_free(g);
    return 0;
}
