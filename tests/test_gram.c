/* test_gram.c: the schema compiler (every keyword, errors naming it), the matcher (accept/reject
 * corpus, completion), token masks against a token-by-token brute force over the whole vocab, and
 * random constrained walks that always end in JSON the schema accepts. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "api/schema.h"
#include "engine/gguf.h"
#include "engine/gram.h"
#include "engine/rng.h"
#include "engine/sample.h"
#include "engine/tok.h"
#include "tests/check.h"

static gram *compile_py(const char *schema, bool py, char *err, size_t errlen) {
    cJSON *j = cJSON_Parse(schema);
    if (!j) {
        snprintf(err, errlen, "test: bad JSON %s", schema);
        return NULL;
    }
    gram *g = gram_new(py);
    int root = schema_compile(g, j, "#", err, errlen);
    if (root >= 0 && gram_finish(g, root, err, errlen) < 0) root = -1;
    cJSON_Delete(j);
    if (root < 0) {
        gram_free(g);
        return NULL;
    }
    return g;
}

static gram *compile(const char *schema, char *err, size_t errlen) {
    return compile_py(schema, false, err, errlen);
}

static gram_vocab *V; /* the mini model's vocabulary */
static const tok *TK;

/* Whether text is a complete value of schema (fed byte-wise in one piece and in single bytes). */
static int accepts(const char *schema, const char *text) {
    char err[512];
    gram *g = compile(schema, err, sizeof err);
    if (!g) {
        fprintf(stderr, "compile failed: %s: %s\n", schema, err);
        return -1;
    }
    gram_matcher *m = NULL, *m1 = NULL;
    CHECK_EQ_INT(gram_matcher_new(&m, g, V, err, sizeof err), 0);
    CHECK_EQ_INT(gram_matcher_new(&m1, g, V, err, sizeof err), 0);
    bool ok = gram_matcher_feed(m, text, strlen(text)) && gram_matcher_complete(m);
    bool ok1 = true;
    for (size_t i = 0; text[i] && ok1; i++)
        ok1 = gram_matcher_feed(m1, text + i, 1);
    ok1 = ok1 && gram_matcher_complete(m1);
    CHECK_EQ_INT(ok, ok1);
    gram_matcher_free(m);
    gram_matcher_free(m1);
    gram_free(g);
    return ok;
}

typedef struct acase {
    const char *schema, *text;
    int want;
} acase;

static const acase corpus[] = {
    /* types */
    {"{\"type\":\"string\"}", "\"abc\"", 1},
    {"{\"type\":\"string\"}", "\"a\\\"b\\\\c\\n\\u00e9\"", 1},
    {"{\"type\":\"string\"}", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", 1},
    {"{\"type\":\"string\"}", "\"bad \xc3\"", 0},
    {"{\"type\":\"string\"}", "\"\xed\xa0\x80\"", 0}, /* a surrogate in UTF-8 */
    {"{\"type\":\"string\"}", "\"\\ud800\"", 0},      /* a surrogate escape */
    {"{\"type\":\"string\"}", "\"a\nb\"", 0},         /* raw control character */
    {"{\"type\":\"string\"}", "\"abc", 0},
    {"{\"type\":\"string\"}", "abc", 0},
    {"{\"type\":\"integer\"}", "0", 1},
    {"{\"type\":\"integer\"}", "-12", 1},
    {"{\"type\":\"integer\"}", "012", 0},
    {"{\"type\":\"integer\"}", "1.5", 0},
    {"{\"type\":\"integer\"}", "-", 0},
    {"{\"type\":\"integer\"}", "1e5", 0},
    {"{\"type\":\"number\"}", "-0.25", 1},
    {"{\"type\":\"number\"}", "3.", 0},
    {"{\"type\":\"number\"}", "123456789012345", 1},
    {"{\"type\":\"number\"}", "1234567890123456", 0}, /* beyond 15 integer digits */
    {"{\"type\":\"number\"}", "0.123456789", 1},
    {"{\"type\":\"number\"}", "0.1234567891", 0}, /* beyond 9 fraction digits */
    {"{\"type\":\"boolean\"}", "true", 1},
    {"{\"type\":\"boolean\"}", "false", 1},
    {"{\"type\":\"boolean\"}", "True", 0},
    {"{\"type\":\"null\"}", "null", 1},
    {"{\"type\":[\"string\",\"null\"]}", "null", 1},
    {"{\"type\":[\"string\",\"null\"]}", "\"x\"", 1},
    {"{\"type\":[\"string\",\"null\"]}", "1", 0},
    {"{}", "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}", 1},
    {"true", "[true,false,null,-1.5,\"s\"]", 1},
    /* whitespace policy */
    {"{}", " {\"a\" : 1}", 0}, /* no space before ':' */
    {"{}", "{ \"a\": 1 , \"b\":\n  [ 1 ,2 ] }", 1},
    {"{}", "{\"a\": 1}\n", 0},                               /* nothing after the value */
    {"{}", "\n\n{\"a\": 1}", 1},                             /* before it, some */
    {"{\"type\":\"array\"}", "[                     1]", 0}, /* 21 spaces */
    {"{\"type\":\"array\"}", "[                    1]", 1},  /* 20 */
    /* string lengths (code points) */
    {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"a\"", 0},
    {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"ab\"", 1},
    {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"\xc3\xa9\xc3\xa9\\n\"", 1},
    {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"abcd\"", 0},
    /* number bounds */
    {"{\"type\":\"integer\",\"minimum\":10,\"maximum\":20}", "15", 1},
    {"{\"type\":\"integer\",\"minimum\":10,\"maximum\":20}", "9", 0},
    {"{\"type\":\"integer\",\"minimum\":10,\"maximum\":20}", "21", 0},
    {"{\"type\":\"integer\",\"minimum\":10,\"maximum\":20}", "-15", 0},
    {"{\"type\":\"integer\",\"exclusiveMinimum\":10,\"exclusiveMaximum\":20}", "10", 0},
    {"{\"type\":\"integer\",\"exclusiveMinimum\":10,\"exclusiveMaximum\":20}", "11", 1},
    {"{\"type\":\"integer\",\"exclusiveMinimum\":10,\"exclusiveMaximum\":20}", "19", 1},
    {"{\"type\":\"integer\",\"exclusiveMinimum\":10,\"exclusiveMaximum\":20}", "20", 0},
    {"{\"type\":\"integer\",\"minimum\":10,\"exclusiveMinimum\":true}", "10", 0},
    {"{\"type\":\"number\",\"minimum\":-1.5,\"maximum\":2.25}", "-1.5", 1},
    {"{\"type\":\"number\",\"minimum\":-1.5,\"maximum\":2.25}", "-1.51", 0},
    {"{\"type\":\"number\",\"minimum\":-1.5,\"maximum\":2.25}", "2.25", 1},
    {"{\"type\":\"number\",\"minimum\":-1.5,\"maximum\":2.25}", "2.250000001", 0},
    {"{\"type\":\"number\",\"exclusiveMaximum\":0}", "-0.000000001", 1},
    {"{\"type\":\"number\",\"exclusiveMaximum\":0}", "0", 0},
    {"{\"type\":\"integer\",\"minimum\":-1e300}", "-999999999999999", 1},
    /* objects */
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}"
     "},"
     "\"required\":[\"b\"]}",
     "{\"b\":\"x\"}", 1},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}"
     "},"
     "\"required\":[\"b\"]}",
     "{\"a\":1,\"b\":\"x\"}", 1},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}"
     "},"
     "\"required\":[\"b\"]}",
     "{\"a\":1}", 0}, /* b missing */
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}"
     "},"
     "\"required\":[\"b\"]}",
     "{\"b\":\"x\",\"a\":1}", 0}, /* declared order */
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"a\":1,\"a\":2}", 0},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"c\":1}", 0},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{}", 1},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
     "\"additionalProperties\":true}",
     "{\"c\":[1],\"a\":1,\"ab\":2}", 1},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
     "\"additionalProperties\":true}",
     "{\"a\":1,\"a\":2}", 0}, /* declared key twice */
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
     "\"additionalProperties\":{\"type\":\"boolean\"}}",
     "{\"x\":true,\"a\":3}", 1},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
     "\"additionalProperties\":{\"type\":\"boolean\"}}",
     "{\"x\":1}", 0},
    {"{\"properties\":{\"q\\\"k\":{\"const\":1}},\"required\":[\"q\\\"k\"]}", "{\"q\\\"k\":1}", 1},
    /* enum, const */
    {"{\"enum\":[\"red\",\"green\",1,null,{\"a\":[true]}]}", "\"green\"", 1},
    {"{\"enum\":[\"red\",\"green\",1,null,{\"a\":[true]}]}", "{\"a\":[true]}", 1},
    {"{\"enum\":[\"red\",\"green\",1,null,{\"a\":[true]}]}", "\"blue\"", 0},
    {"{\"enum\":[1,12]}", "1", 1},
    {"{\"enum\":[1,12]}", "12", 1},
    {"{\"enum\":[1,12]}", "123", 0},
    {"{\"const\":\"x\\ny\"}", "\"x\\ny\"", 1},
    /* arrays */
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}", "[]",
     0},
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}", "[1]",
     1},
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}", "[1,2]",
     1},
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}",
     "[1,2,3]", 0},
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}", "[1,\"a\"]", 0},
    {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],"
     "\"items\":false}",
     "[\"a\",1]", 1},
    {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],"
     "\"items\":false}",
     "[\"a\",1,2]", 0},
    {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"}],\"items\":{\"type\":\"null\"}}",
     "[\"a\",null,null]", 1},
    {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"}]}", "[\"a\",{},1]", 1},
    /* anyOf, oneOf, allOf */
    {"{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":["
     "\"a\"]},"
     "{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"integer\"}},\"required\":[\"b\"]}]}",
     "{\"b\":2}", 1},
    {"{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}", "\"s\"", 1},
    {"{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}", "true", 0},
    {"{\"allOf\":[{\"type\":\"integer\"}]}", "3", 1},
    /* $ref, $defs, recursion */
    {"{\"$defs\":{\"n\":{\"type\":\"integer\",\"minimum\":0}},\"type\":\"array\","
     "\"items\":{\"$ref\":\"#/$defs/n\"}}",
     "[0,5]", 1},
    {"{\"$defs\":{\"n\":{\"type\":\"integer\",\"minimum\":0}},\"type\":\"array\","
     "\"items\":{\"$ref\":\"#/$defs/n\"}}",
     "[-1]", 0},
    {"{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"next\":{\"anyOf\":["
     "{\"$ref\":\"#\"},{\"type\":\"null\"}]}},\"required\":[\"v\",\"next\"]}",
     "{\"v\":1,\"next\":{\"v\":2,\"next\":null}}", 1},
    {"{\"definitions\":{\"t\":{\"type\":\"object\",\"properties\":{\"kids\":{\"type\":\"array\","
     "\"items\":{\"$ref\":\"#/definitions/t\"}}}}},\"$ref\":\"#/definitions/t\"}",
     "{\"kids\":[{\"kids\":[]},{}]}", 1},
    /* annotations are ignored */
    {"{\"title\":\"T\",\"description\":\"d\",\"$schema\":\"x\",\"examples\":[1],\"default\":2,"
     "\"type\":\"integer\"}",
     "2", 1},
};

typedef struct ecase {
    const char *schema, *want; /* want: a substring of the message */
} ecase;

static const ecase errors[] = {
    {"{\"type\":\"string\",\"pattern\":\"a+\"}", "\"pattern\" at #"},
    {"{\"type\":\"string\",\"format\":\"date\"}", "\"format\" at #"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"multipleOf\":2}}}",
     "\"multipleOf\" at #/properties/a"},
    {"{\"type\":\"array\",\"uniqueItems\":true}", "\"uniqueItems\""},
    {"{\"type\":\"object\",\"patternProperties\":{}}", "\"patternProperties\""},
    {"{\"not\":{}}", "\"not\""},
    {"{\"if\":{}}", "\"if\""},
    {"{\"type\":\"strnig\"}", "type \"strnig\""},
    {"{\"type\":\"object\",\"required\":[\"x\"]}", "required property \"x\""},
    {"{\"type\":\"string\",\"minLength\":5,\"maxLength\":2}", "admits no value"},
    {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":2}", "admits no value"},
    {"{\"type\":\"integer\",\"exclusiveMinimum\":1,\"exclusiveMaximum\":2}", "admits no value"},
    {"{\"type\":\"integer\",\"minimum\":1e300}", "admits no value"},
    {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":1}", "admits no value"},
    {"{\"type\":\"array\",\"items\":false,\"minItems\":1}", "admits no value"},
    {"{\"$ref\":\"#\"}", "admits no value"},
    {"{\"type\":\"object\",\"properties\":{\"s\":{\"$ref\":\"#\"}},\"required\":[\"s\"]}",
     "admits no value"},
    {"{\"$ref\":\"#/$defs/missing\"}", "does not point inside"},
    {"{\"$ref\":\"http://x/y\"}", "does not point inside"},
    {"{\"anyOf\":[]}", "anyOf at #"},
    {"{\"allOf\":[{},{}]}", "allOf with more than one"},
    {"{\"enum\":[]}", "enum at #"},
    {"{\"type\":\"string\",\"minLength\":-1}", "minLength at #"},
    {"{\"type\":\"string\",\"maxLength\":1.5}", "maxLength at #"},
    {"{\"type\":\"integer\",\"minimum\":\"1\"}", "minimum at #"},
    {"{\"$ref\":\"#/$defs/a\",\"type\":\"string\",\"$defs\":{\"a\":{}}}", "sibling"},
    {"[1]", "must be an object or a boolean"},
    {"false", "admits no value"},
    {"{\"properties\":{\"a\":{\"type\":\"string\",\"contentEncoding\":\"x\"}}}",
     "\"contentEncoding\" at #/properties/a"},
};

/* ---- random constrained walks: every walk ends in a value, the masks match a brute force ---- */

static int n_vocab;

static void check_mask_brute(gram_matcher *m) {
    uint8_t *mask = malloc((size_t)n_vocab);
    int n = gram_matcher_mask(m, mask);
    CHECK(n > 0);
    int cnt = 0, bad = 0;
    for (int id = 0; id < n_vocab; id++) {
        bool a = gram_matcher_allows(m, id);
        cnt += a;
        if (a != (mask[id] != 0) && bad++ < 3)
            fprintf(stderr, "mask mismatch at token %d: mask %d, token check %d\n", id, mask[id],
                    a);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(cnt, n);
    free(mask);
}

/* Walks: random allowed tokens, then (after `patience` steps) tokens that close things; returns
 * the text written (malloc'd). Checks the mask against the brute force every `brute` steps. */
static char *walk(const gram *g, uint64_t seed, int patience, int brute, int *steps) {
    char err[256];
    gram_matcher *m = NULL;
    CHECK_EQ_INT(gram_matcher_new(&m, g, V, err, sizeof err), 0);
    uint64_t rng[4];
    rng_xoshiro_seed(rng, seed);
    uint8_t *mask = malloc((size_t)n_vocab);
    int32_t *ids = malloc((size_t)n_vocab * sizeof *ids);
    size_t cap = 1 << 16, len = 0;
    char *text = calloc(cap, 1);
    int eos = gram_vocab_eos(V);
    int s = 0;
    for (; s < 4000; s++) {
        if (brute && s % brute == 0) check_mask_brute(m);
        int n = gram_matcher_mask(m, mask);
        CHECK(n > 0);
        if (n <= 0) break;
        int k = 0;
        if (s >= patience && mask[eos]) break;
        if (s >= patience) { /* prefer the tokens that close: one byte of "]}) or a digit */
            for (int id = 0; id < n_vocab; id++) {
                size_t pl;
                const char *p = tok_piece(TK, id, &pl);
                if (mask[id] && pl == 1 && strchr("\"]})0", p[0])) ids[k++] = id;
            }
        }
        if (!k)
            for (int id = 0; id < n_vocab; id++)
                if (mask[id] && id != eos) ids[k++] = id;
        if (!k) break;
        int32_t id = ids[(int)(rng_xoshiro_uniform(rng) * k) % k];
        CHECK(gram_matcher_accept(m, id));
        size_t pl;
        const char *p = tok_piece(TK, id, &pl);
        if (len + pl + 1 < cap) {
            memcpy(text + len, p, pl);
            len += pl;
        }
    }
    CHECK(gram_matcher_complete(m));
    if (steps) *steps = s;
    free(mask);
    free(ids);
    gram_matcher_free(m);
    return text;
}

static const char *walk_schemas[] = {
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",\"cd\"]},\"maxItems\":3},"
    "\"score\":{\"type\":\"number\",\"exclusiveMinimum\":-1,\"maximum\":1},"
    "\"ok\":{\"type\":\"boolean\"},\"note\":{\"type\":[\"string\",\"null\"],\"minLength\":2,"
    "\"maxLength\":5}},\"required\":[\"name\",\"age\",\"ok\"]}",
    "{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"next\":{\"anyOf\":["
    "{\"$ref\":\"#\"},{\"type\":\"null\"}]}},\"required\":[\"v\",\"next\"]}",
    "{\"type\":\"array\",\"prefixItems\":[{\"const\":\"x\"},{\"type\":\"integer\",\"minimum\":100,"
    "\"maximum\":105}],\"items\":{\"type\":\"string\",\"maxLength\":3},\"minItems\":3,\"maxItems\":"
    "4}",
    "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\",\"minimum\":-5,"
    "\"maximum\":-3}}",
};

/* The walk's text parsed with cJSON and checked for the parts each schema pins down. */
static void check_walk(int w, const char *text) {
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL);
    if (!j) {
        fprintf(stderr, "walk %d wrote invalid JSON: %s\n", w, text);
        return;
    }
    if (w == 0) {
        const cJSON *name = cJSON_GetObjectItem(j, "name"), *age = cJSON_GetObjectItem(j, "age");
        CHECK(cJSON_IsString(name) && cJSON_IsNumber(age));
        CHECK(cJSON_IsBool(cJSON_GetObjectItem(j, "ok")));
        if (age) CHECK(age->valuedouble >= 0 && age->valuedouble <= 150);
        const cJSON *sc = cJSON_GetObjectItem(j, "score");
        if (sc) CHECK(cJSON_IsNumber(sc) && sc->valuedouble > -1 && sc->valuedouble <= 1);
    } else if (w == 2) {
        CHECK(cJSON_IsArray(j) && cJSON_GetArraySize(j) >= 3 && cJSON_GetArraySize(j) <= 4);
        const cJSON *n = cJSON_GetArrayItem(j, 1);
        CHECK(cJSON_IsNumber(n) && n->valuedouble >= 100 && n->valuedouble <= 105);
    } else if (w == 3) {
        for (const cJSON *x = j->child; x; x = x->next)
            CHECK(cJSON_IsNumber(x) && x->valuedouble >= -5 && x->valuedouble <= -3);
    }
    cJSON_Delete(j);
}

/* sampler_sample_among(ids) == sampler_sample on logits with every other token at -inf, for
 * greedy and random draws, with logit_bias and penalties, over many seeds. */
static void test_sample_among(void) {
    const int V = 3000;
    float *lg = malloc(V * sizeof *lg), *masked = malloc(V * sizeof *masked);
    int32_t *ids = malloc(V * sizeof *ids);
    uint64_t rng[4];
    rng_xoshiro_seed(rng, 99);
    char err[256];
    int diffs = 0;
    for (int trial = 0; trial < 400; trial++) {
        for (int i = 0; i < V; i++)
            lg[i] = (float)(rng_xoshiro_uniform(rng) * 8 - 4);
        int n = 1 + (int)(rng_xoshiro_uniform(rng) * (trial % 3 == 0 ? 5 : 300));
        for (int i = 0; i < n; i++)
            ids[i] = (int32_t)((i * 7919 + trial * 31) % V);
        /* distinct ids: the stride is prime to V... make sure */
        for (int i = 0; i < V; i++)
            masked[i] = -INFINITY;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (masked[ids[i]] == -INFINITY) {
                masked[ids[i]] = lg[ids[i]];
                ids[m++] = ids[i];
            }
        sample_params p;
        sample_params_default(&p);
        p.temperature = trial % 4 == 0 ? 0 : 0.3f + (float)(trial % 5) * 0.4f;
        p.top_k = trial % 7 == 0 ? 0 : 5 + trial % 40;
        p.top_p = trial % 6 == 0 ? 1.0f : 0.9f;
        p.repeat_penalty = trial % 2 ? 1.3f : 1.0f;
        p.presence_penalty = trial % 3 == 1 ? 0.5f : 0;
        p.seed = (uint64_t)trial;
        sample_bias bias[3] = {{ids[0], 2.0f}, {ids[m - 1], -1.5f}, {5, 3.0f}};
        p.bias = bias;
        p.n_bias = trial % 2 ? 3 : 0;
        p.n_top = 3;
        sampler *a = NULL, *b = NULL;
        CHECK_EQ_INT(sampler_new(&a, V, &p, err, sizeof err), 0);
        CHECK_EQ_INT(sampler_new(&b, V, &p, err, sizeof err), 0);
        for (int k = 0; k < 20; k++) {
            sampler_accept(a, ids[k % m]);
            sampler_accept(b, ids[k % m]);
        }
        for (int k = 0; k < 5; k++) {
            sample_result ra, rb;
            int32_t x = sampler_sample(a, masked, &ra);
            int32_t y = sampler_sample_among(b, lg, ids, m, &rb);
            if (x != y) diffs++;
            CHECK_NEAR(rb.logprob, sample_logprob(lg, V, y), 1e-5);
            CHECK_EQ_INT(rb.n_top, 3);
        }
        sampler_free(a);
        sampler_free(b);
    }
    CHECK_EQ_INT(diffs, 0);
    free(lg);
    free(masked);
    free(ids);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void) {
    char err[512];
    gguf *gf = NULL;
    tok *t = NULL;
    if (gguf_open(&gf, "tests/data/models/mini-F16.gguf", err, sizeof err) < 0 ||
        tok_new(&t, gf, err, sizeof err) < 0) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    TK = t;
    n_vocab = tok_n_vocab(t);
    CHECK_EQ_INT(gram_vocab_new(&V, t, err, sizeof err), 0);

    test_sample_among();

    /* 1. accept/reject corpus */
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        int got = accepts(corpus[i].schema, corpus[i].text);
        if (got != corpus[i].want)
            fprintf(stderr, "corpus %zu: %s on %s: got %d want %d\n", i, corpus[i].schema,
                    corpus[i].text, got, corpus[i].want);
        CHECK_EQ_INT(got, corpus[i].want);
    }

    /* 2. errors name the keyword and where it is */
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
        err[0] = 0;
        gram *g = compile(errors[i].schema, err, sizeof err);
        CHECK(g == NULL);
        if (!strstr(err, errors[i].want))
            fprintf(stderr, "error %zu: %s: got \"%s\", want \"%s\"\n", i, errors[i].schema, err,
                    errors[i].want);
        CHECK(strstr(err, errors[i].want) != NULL);
        gram_free(g);
    }

    /* 3. a complete value: EOS allowed exactly then; after a closed object only EOS */
    {
        gram *g = compile("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
                          "\"required\":[\"a\"]}",
                          err, sizeof err);
        CHECK(g != NULL);
        gram_matcher *m = NULL;
        CHECK_EQ_INT(gram_matcher_new(&m, g, V, err, sizeof err), 0);
        int eos = gram_vocab_eos(V);
        CHECK(!gram_matcher_allows(m, eos));
        CHECK(gram_matcher_feed(m, "{\"a\":12", 7));
        CHECK(!gram_matcher_complete(m) && !gram_matcher_allows(m, eos));
        CHECK(gram_matcher_feed(m, "}", 1));
        CHECK(gram_matcher_complete(m) && gram_matcher_finished(m));
        uint8_t *mask = malloc((size_t)n_vocab);
        CHECK_EQ_INT(gram_matcher_mask(m, mask), 1);
        CHECK_EQ_INT(mask[eos], 1);
        CHECK(gram_matcher_accept(m, eos));
        free(mask);
        gram_matcher_free(m);
        gram_free(g);
        /* a number at the top level is complete, yet may go on */
        g = compile("{\"type\":\"integer\",\"maximum\":500}", err, sizeof err);
        CHECK_EQ_INT(gram_matcher_new(&m, g, V, err, sizeof err), 0);
        CHECK(gram_matcher_feed(m, "5", 1));
        CHECK(gram_matcher_complete(m) && !gram_matcher_finished(m));
        CHECK(gram_matcher_feed(m, "0", 1));
        CHECK(!gram_matcher_feed(m, "1", 1)); /* 501 > 500 */
        CHECK(gram_matcher_feed(m, "0", 1));
        CHECK(!gram_matcher_feed(m, "0", 1));
        gram_matcher_free(m);
        gram_free(g);
    }

    /* 4. random walks: always finish, JSON parses, masks match the brute force */
    for (int w = 0; w < (int)(sizeof walk_schemas / sizeof walk_schemas[0]); w++) {
        gram *g = compile(walk_schemas[w], err, sizeof err);
        if (!g) fprintf(stderr, "walk schema %d: %s\n", w, err);
        CHECK(g != NULL);
        if (!g) continue;
        for (int r = 0; r < 12; r++) {
            int steps = 0;
            char *text =
                walk(g, 1000 * (uint64_t)w + (uint64_t)r, 10 + 10 * r, r < 2 ? 7 : 0, &steps);
            CHECK(steps < 4000);
            if (getenv("TEST_VERBOSE"))
                fprintf(stderr, "walk %d/%d (%d tokens): %s\n", w, r, steps, text);
            check_walk(w, text);
            free(text);
        }
        gram_free(g);
    }

    /* 5. the tool-call grammar: Python-style keyword calls between the call tokens */
    CHECK(gram_vocab_has_calls(V));
    for (int max = -1; max <= 1 && gram_vocab_has_calls(V); max += 2) {
        gram *g = gram_new(true);
        int calls = gram_node(g, GRAM_CALLS, err, sizeof err);
        cJSON *p1 =
            cJSON_Parse("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
                        "\"days\":{\"type\":\"integer\",\"minimum\":1},\"metric\":{\"type\":"
                        "\"boolean\"}},\"required\":[\"city\"]}");
        int o1 = schema_compile(g, p1, "tools[0]", err, sizeof err);
        CHECK(o1 >= 0);
        CHECK_EQ_INT(gram_calls_add(g, calls, "get_weather", 11, o1, err, sizeof err), 0);
        int o2 = gram_node(g, GRAM_OBJ, err, sizeof err);
        CHECK_EQ_INT(gram_calls_add(g, calls, "Calendar.now", 12, o2, err, sizeof err), 0);
        if (max > 0) gram_calls_set_max(g, calls, max);
        CHECK_EQ_INT(gram_finish(g, calls, err, sizeof err), 0);
        int cs = tok_find(t, "<|tool_call_start|>", 19), ce = tok_find(t, "<|tool_call_end|>", 17);
        const char *good[] = {"[get_weather(city=\"Paris\", days=3, metric=True)]",
                              "[Calendar.now(), get_weather(city=\"x\")]"};
        const char *bad[] = {"[get_weather(days=3)]", "[get_weather(city='x')]",
                             "[get_weather(city=\"x\", metric=true)]", "[other()]",
                             "[get_weather(metric=False, city=\"x\")]"};
        for (int i = 0; i < 2 + 5; i++) {
            gram_matcher *m = NULL;
            CHECK_EQ_INT(gram_matcher_new(&m, g, V, err, sizeof err), 0);
            CHECK(!gram_matcher_allows(m, 300));
            CHECK(gram_matcher_accept(m, cs));
            const char *s = i < 2 ? good[i] : bad[i - 2];
            bool want = i == 0 || (i == 1 && max < 0);
            bool ok = gram_matcher_feed(m, s, strlen(s)) && gram_matcher_accept(m, ce) &&
                      gram_matcher_complete(m);
            if (ok != want) fprintf(stderr, "calls (max %d): %s: got %d\n", max, s, ok);
            CHECK_EQ_INT(ok, want);
            gram_matcher_free(m);
        }
        for (int r = 0; r < 6; r++) {
            int steps = 0;
            char *text = walk(g, 77 + (uint64_t)r, 20, r == 0 ? 5 : 0, &steps);
            CHECK(steps < 4000);
            if (getenv("TEST_VERBOSE"))
                fprintf(stderr, "calls walk (%d tokens): %s\n", steps, text);
            free(text);
        }
        cJSON_Delete(p1);
        gram_free(g);
    }

    /* 6. hostile schemas: bounded */
    {
        /* 100k-entry enum */
        size_t cap = 100000 * 16 + 64, n = 0;
        char *s = malloc(cap);
        n += (size_t)snprintf(s + n, cap - n, "{\"enum\":[");
        for (int i = 0; i < 100000; i++)
            n += (size_t)snprintf(s + n, cap - n, "%s\"v%d\"", i ? "," : "", i * 7919);
        snprintf(s + n, cap - n, "]}");
        double t0 = now_s();
        gram *g = compile(s, err, sizeof err);
        double dt = now_s() - t0;
        CHECK(g != NULL);
        fprintf(stderr, "100k-entry enum compiled in %.1f ms\n", dt * 1e3);
        CHECK(dt < 5.0);
        if (g) {
            gram_matcher *m = NULL;
            CHECK_EQ_INT(gram_matcher_new(&m, g, V, err, sizeof err), 0);
            CHECK(gram_matcher_feed(m, "\"v7919\"", 7));
            CHECK(gram_matcher_complete(m));
            gram_matcher_free(m);
        }
        gram_free(g);
        /* 100 properties */
        n = 0;
        n += (size_t)snprintf(s + n, cap - n, "{\"type\":\"object\",\"properties\":{");
        for (int i = 0; i < 100; i++)
            n += (size_t)snprintf(s + n, cap - n, "%s\"p%d\":{\"type\":\"%s\"}", i ? "," : "", i,
                                  i % 3 == 0   ? "string"
                                  : i % 3 == 1 ? "integer"
                                               : "boolean");
        n += (size_t)snprintf(s + n, cap - n, "},\"required\":[");
        for (int i = 0; i < 100; i += 2)
            n += (size_t)snprintf(s + n, cap - n, "%s\"p%d\"", i ? "," : "", i);
        snprintf(s + n, cap - n, "]}");
        t0 = now_s();
        g = compile(s, err, sizeof err);
        dt = now_s() - t0;
        CHECK(g != NULL);
        fprintf(stderr, "100-property schema compiled in %.3f ms\n", dt * 1e3);
        gram_free(g);
        /* deep nesting: an array in an array ... 200 deep cannot be written within the depth */
        n = 0;
        for (int i = 0; i < 200; i++)
            n += (size_t)snprintf(s + n, cap - n, "{\"type\":\"array\",\"minItems\":1,\"items\":");
        n += (size_t)snprintf(s + n, cap - n, "{\"type\":\"null\"}");
        for (int i = 0; i < 200; i++)
            n += (size_t)snprintf(s + n, cap - n, "}");
        g = compile(s, err, sizeof err);
        CHECK(g == NULL && strstr(err, "levels of nesting"));
        gram_free(g);
        /* anyOf of many overlapping alternatives stays within the thread bound */
        n = 0;
        n += (size_t)snprintf(s + n, cap - n, "{\"anyOf\":[");
        for (int i = 0; i < 64; i++)
            n += (size_t)snprintf(s + n, cap - n, "%s{\"type\":\"string\",\"maxLength\":%d}",
                                  i ? "," : "", 100 + i);
        snprintf(s + n, cap - n, "]}");
        g = compile(s, err, sizeof err);
        CHECK(g != NULL);
        for (int r = 0; g && r < 3; r++) {
            char *text = walk(g, 5 + (uint64_t)r, 30, r == 0 ? 9 : 0, NULL);
            cJSON *j = cJSON_Parse(text);
            CHECK(cJSON_IsString(j));
            cJSON_Delete(j);
            free(text);
        }
        gram_free(g);
        free(s);
    }

    gram_vocab_free(V);
    tok_free(t);
    gguf_close(gf);
    if (check_failures) {
        fprintf(stderr, "%d check(s) failed\n", check_failures);
        return 1;
    }
    printf("test_gram: ok\n");
    return 0;
}
