/* test_toolcall.c: the tool-call list parser and the content/reasoning/calls splitter. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api/tojson.h"
#include "api/toolcall.h"
#include "tests/check.h"

/* ---------------- the parser ---------------- */

typedef struct parse_case {
    const char *in;
    const char *want; /* "name args|name args" (args compact JSON); NULL = malformed */
} parse_case;

static const parse_case parse_cases[] = {
    /* the model-card example and everyday shapes */
    {"[get_candidate_status(candidate_id=\"12345\")]",
     "get_candidate_status {\"candidate_id\":\"12345\"}"},
    {"[get_status(candidate_id=\"12345\"), f(x=1)]",
     "get_status {\"candidate_id\":\"12345\"}|f {\"x\":1}"},
    {" \n[f()]\n ", "f {}"},
    {"[f( ) ]", "f {}"},
    {"f(x=1)", "f {\"x\":1}"}, /* no brackets */
    {"[Calendar.create_event(title='Stand-up', when=\"09:00\")]",
     "Calendar.create_event {\"title\":\"Stand-up\",\"when\":\"09:00\"}"},
    {"[a.b.c(x=1,)]", "a.b.c {\"x\":1}"}, /* trailing comma */
    {"[f(x=1),]", "f {\"x\":1}"},
    /* quotes inside strings */
    {"[say(text=\"She said \\\"hi\\\" and 'bye'\")]",
     "say {\"text\":\"She said \\\"hi\\\" and 'bye'\"}"},
    {"[say(text='it\\'s \"quoted\"')]", "say {\"text\":\"it's \\\"quoted\\\"\"}"},
    {"[say(text='''triple 'single' \"and\" double''')]",
     "say {\"text\":\"triple 'single' \\\"and\\\" double\"}"},
    {"[say(text=\"\"\"line1\nline2\"\"\")]", "say {\"text\":\"line1\\nline2\"}"},
    /* escapes and code with backslashes */
    {"[run(code=\"print(\\\"a\\\\nb\\\")\\nx = 1\")]",
     "run {\"code\":\"print(\\\"a\\\\nb\\\")\\nx = 1\"}"},
    {"[grep(pattern='\\d+\\.\\w*')]",
     "grep {\"pattern\":\"\\\\d+\\\\.\\\\w*\"}"}, /* kept as Python */
    {"[path(p=\"C:\\\\Users\\\\me\")]", "path {\"p\":\"C:\\\\Users\\\\me\"}"},
    {"[t(s=\"tab\\there\\r\\n\\x41\\u00e9\\U0001F600\")]",
     "t {\"s\":\"tab\\there\\r\\nA\xc3\xa9\xf0\x9f\x98\x80\"}"},
    {"[t(s=\"\\ud83d\\ude00\")]", "t {\"s\":\"\xf0\x9f\x98\x80\"}"}, /* JSON surrogate pair */
    {"[t(s=\"raw\nnewline\")]", "t {\"s\":\"raw\\nnewline\"}"},      /* lenient */
    /* unicode */
    {"[traduire(texte=\"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\")]",
     "traduire {\"texte\":\"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\"}"},
    /* literals and numbers */
    {"[f(a=True, b=False, c=None, d=true, e=null)]",
     "f {\"a\":true,\"b\":false,\"c\":null,\"d\":true,\"e\":null}"},
    {"[f(a=-1, b=2.5, c=1e-3, d=+4, e=.5, g=3., h=12345678901234567890)]",
     "f {\"a\":-1,\"b\":2.5,\"c\":1e-3,\"d\":4,\"e\":0.5,\"g\":3.0,\"h\":12345678901234567890}"},
    /* nested values */
    {"[ns.g(c=[1, {'k': True}])]", "ns.g {\"c\":[1,{\"k\":true}]}"},
    {"[f(d={\"a\": [1, 2, {\"b\": None}], 'c': (1, 2,)}, e=[])]",
     "f {\"d\":{\"a\":[1,2,{\"b\":null}],\"c\":[1,2]},\"e\":[]}"},
    {"[f(d={1: 'one', True: 'yes'})]", "f {\"d\":{\"1\":\"one\",\"true\":\"yes\"}}"},
    /* the JSON form */
    {"[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}]",
     "get_weather {\"city\":\"Paris\",\"days\":3}"},
    {"[{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"parameters\": {\"x\": [true]}}]",
     "a {}|b {\"x\":[true]}"},
    {"{\"name\": \"a\", \"arguments\": \"{\\\"x\\\": 1}\"}", "a {\"x\":1}"},
    {"[{\"name\": \"a\"}]", "a {}"},
    /* malformed: stays content */
    {"", NULL},
    {"[]", NULL},
    {"[f(x=1)", NULL},
    {"[f(x=1)] trailing", NULL},
    {"[f(\"positional\")]", NULL},
    {"[f(x=1, x=2)]", NULL},
    {"[f(x=)]", NULL},
    {"[f(x=\"unterminated)]", NULL},
    {"[f(x=007)]", NULL},
    {"[f(x=1.2.3)]", NULL},
    {"[f(x=\"\\x4\")]", NULL},
    {"[f(x=\"nul\\x00\")]", NULL},
    {"[f(x=undefined)]", NULL},
    {"[1 + 2]", NULL},
    {"[{\"arguments\": {}}]", NULL},
    {"[{\"name\": \"a\", \"arguments\": [1]}]", NULL},
    /* arguments as a string that is not JSON text of an object */
    {"[{\"name\": \"a\", \"arguments\": \"not json\"}]", NULL},
    {"[{\"name\": \"a\", \"arguments\": \"[1]\"}]", NULL},
    /* a dict key whose string is refused is not read again from inside the string */
    {"[f(d={'\\x001: 2})]", NULL},
    {"[f(d={\"\\x 1: 2})]", NULL},
    {"[.f(x=1)]", NULL},
    {"I will call f(x=1) now", NULL},
};

static char *calls_text(const toolcall *c, int n) {
    size_t cap = 16;
    for (int i = 0; i < n; i++)
        cap += strlen(c[i].name) + strlen(c[i].arguments) + 2;
    char *s = malloc(cap);
    s[0] = 0;
    for (int i = 0; i < n; i++) {
        if (i) strcat(s, "|");
        strcat(s, c[i].name);
        strcat(s, " ");
        strcat(s, c[i].arguments);
    }
    return s;
}

static void test_parse(void) {
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const parse_case *pc = &parse_cases[i];
        toolcall *c = NULL;
        int n = toolcall_parse(pc->in, strlen(pc->in), &c);
        if (!pc->want) {
            if (n != -1) fprintf(stderr, "case %zu should be malformed: %s\n", i, pc->in);
            CHECK_EQ_INT(n, -1);
            CHECK(c == NULL);
            if (n > 0) toolcall_free_all(c, n);
            continue;
        }
        if (n < 1) {
            fprintf(stderr, "case %zu did not parse: %s\n", i, pc->in);
            CHECK(n >= 1);
            continue;
        }
        char *got = calls_text(c, n);
        CHECK_STR(got, pc->want);
        free(got);
        toolcall_free_all(c, n);
    }
    /* deep nesting is bounded, not a stack overflow */
    size_t depth = 100000;
    char *deep = malloc(depth * 2 + 16);
    strcpy(deep, "[f(x=");
    size_t o = strlen(deep);
    for (size_t k = 0; k < depth; k++)
        deep[o++] = '[';
    for (size_t k = 0; k < depth; k++)
        deep[o++] = ']';
    strcpy(deep + o, ")]");
    toolcall *c = NULL;
    CHECK_EQ_INT(toolcall_parse(deep, strlen(deep), &c), -1);
    free(deep);
}

/* ---------------- the splitter ---------------- */

typedef struct split_case {
    const char *text;
    int flags; /* R reasoning, S start in reasoning, T tools, 1 max one call, N declared names */
    const char *content;   /* expected content */
    const char *reasoning; /* expected reasoning */
    const char *calls;     /* expected calls as calls_text, "" = none */
} split_case;

enum { R = 1, S = 2, T = 4, ONE = 8, N = 16 };

static const split_case split_cases[] = {
    /* plain text is untouched, with or without tools */
    {"Hello world.\n", R | T, "Hello world.\n", "", ""},
    {"  Hello  ", R, "  Hello  ", "", ""},
    {"<think>no reasoning wanted</think>x", 0, "<think>no reasoning wanted</think>x", "", ""},
    /* reasoning */
    {"<think>\nLet me think.\n</think>\n\nThe answer is 4.", R, "The answer is 4.", "Let me think.",
     ""},
    {"  <think>a</think>b", R, "b", "a", ""},
    {"<think>unfinished thought  ", R, "", "unfinished thought", ""},
    {"<thin", R, "<thin", "", ""},
    {"started inside</think>\nanswer", R | S, "answer", "started inside", ""},
    {"later <think>x</think>", R, "later <think>x</think>", "", ""}, /* only at the start */
    /* calls: the model card's turn */
    {"<|tool_call_start|>[get_candidate_status(candidate_id=\"12345\")]<|tool_call_end|>"
     "Checking the current status of candidate ID 12345.",
     R | T, "Checking the current status of candidate ID 12345.", "",
     "get_candidate_status {\"candidate_id\":\"12345\"}"},
    {"I'll look that up.\n<|tool_call_start|>[f(x=1), g(y='z')]<|tool_call_end|>", R | T,
     "I'll look that up.", "", "f {\"x\":1}|g {\"y\":\"z\"}"},
    /* missing end token */
    {"<|tool_call_start|>[f(x=1)]", T, "", "", "f {\"x\":1}"},
    {"<|tool_call_start|>[f(x=1", T, "<|tool_call_start|>[f(x=1", "", ""},
    /* echo after the end token */
    {"<|tool_call_start|>[f(x=1)]<|tool_call_end|>[f(x=1)]", T, "", "", "f {\"x\":1}"},
    {"<|tool_call_start|>[f(x=1)]<|tool_call_end|>\n[f(x=1)]\nDone.", T, "Done.", "",
     "f {\"x\":1}"},
    {"<|tool_call_start|>[f(x=1)]<|tool_call_end|>[f(x=2)]", T, "[f(x=2)]", "", "f {\"x\":1}"},
    /* content on both sides of a block: the whitespace before it (else after it) joins them */
    {"I'll check.\n<|tool_call_start|>[f(x=1)]<|tool_call_end|>\nDone.", T, "I'll check.\nDone.",
     "", "f {\"x\":1}"},
    {"I'll check.<|tool_call_start|>[f(x=1)]<|tool_call_end|>  Done.", T, "I'll check.  Done.", "",
     "f {\"x\":1}"},
    {"A <|tool_call_start|>[a()]<|tool_call_end|>\n<|tool_call_start|>[b()]<|tool_call_end|>\nC", T,
     "A C", "", "a {}|b {}"},
    {"A <|tool_call_start|>[f(x=1)]<|tool_call_end|> [f(x=1)] Done.", T, "A Done.", "",
     "f {\"x\":1}"},
    {"A<|tool_call_start|>[a()]<|tool_call_end|>C", T, "AC", "", "a {}"},
    {"A <|tool_call_start|>[a()]<|tool_call_end|> <|tool_call_start|>[f(x=]<|tool_call_end|>", T,
     "A <|tool_call_start|>[f(x=]<|tool_call_end|>", "", "a {}"},
    {"<think>r</think> <|tool_call_start|>[a()]<|tool_call_end|> C", R | T, "C", "r", "a {}"},
    /* malformed: content, tags included, whitespace kept */
    {"Sure.\n<|tool_call_start|>[f(x=]<|tool_call_end|> ok", T,
     "Sure.\n<|tool_call_start|>[f(x=]<|tool_call_end|> ok", "", ""},
    /* no tools: tags are content */
    {"<|tool_call_start|>[f(x=1)]<|tool_call_end|>", R,
     "<|tool_call_start|>[f(x=1)]<|tool_call_end|>", "", ""},
    /* reasoning then a call */
    {"<think>need the weather</think>\n<|tool_call_start|>[w(city=\"Paris\")]<|tool_call_end|>",
     R | T, "", "need the weather", "w {\"city\":\"Paris\"}"},
    /* two blocks, and parallel_tool_calls false keeps the first call */
    {"<|tool_call_start|>[a()]<|tool_call_end|><|tool_call_start|>[b()]<|tool_call_end|>", T, "",
     "", "a {}|b {}"},
    {"<|tool_call_start|>[a(), b()]<|tool_call_end|><|tool_call_start|>[c()]<|tool_call_end|>",
     T | ONE, "", "", "a {}"},
    /* a call of an undeclared function stays content (declared: f, g) */
    {"<|tool_call_start|>[h(x=1)]<|tool_call_end|>", T | N,
     "<|tool_call_start|>[h(x=1)]<|tool_call_end|>", "", ""},
    {"<|tool_call_start|>[g(x=1)]<|tool_call_end|>", T | N, "", "", "g {\"x\":1}"},
    /* JSON form */
    {"<|tool_call_start|>[{\"name\": \"f\", \"arguments\": {\"q\": \"a \\\"b\\\"\"}}]"
     "<|tool_call_end|>",
     T, "", "", "f {\"q\":\"a \\\"b\\\"\"}"},
    /* a lone partial tag at the end is text */
    {"value <|tool_call", T, "value <|tool_call", "", ""},
};

typedef struct acc {
    char *content, *reasoning;
    size_t cl, rl;
    toolcall *calls;
    int n;
} acc;

static void acc_add(acc *a, const toolcall_delta *d) {
    a->content = realloc(a->content, a->cl + d->content_len + 1);
    memcpy(a->content + a->cl, d->content, d->content_len);
    a->cl += d->content_len;
    a->content[a->cl] = 0;
    a->reasoning = realloc(a->reasoning, a->rl + d->reasoning_len + 1);
    memcpy(a->reasoning + a->rl, d->reasoning, d->reasoning_len);
    a->rl += d->reasoning_len;
    a->reasoning[a->rl] = 0;
    CHECK_EQ_INT(d->first_call, a->n);
    if (d->n_calls) {
        a->calls = realloc(a->calls, (size_t)(a->n + d->n_calls) * sizeof *a->calls);
        for (int i = 0; i < d->n_calls; i++) {
            a->calls[a->n + i].name = strdup(d->calls[i].name);
            a->calls[a->n + i].arguments = strdup(d->calls[i].arguments);
        }
        a->n += d->n_calls;
    }
}

static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Runs text through a splitter in pieces (piece 0 = whole text at once). */
static acc split(const char *text, int flags, int piece) {
    static const char *const names[] = {"f", "g"};
    toolcall_opts o = {.reasoning = flags & R,
                       .start_reasoning = flags & S,
                       .tools = flags & T,
                       .max_calls = flags & ONE ? 1 : 0,
                       .names = flags & N ? names : NULL,
                       .n_names = 2};
    toolcall_stream *s = toolcall_stream_new(&o);
    acc a = {0};
    acc_add(&a, &(toolcall_delta){.content = "", .reasoning = ""});
    size_t len = strlen(text);
    toolcall_delta d;
    for (size_t i = 0; i < len;) {
        size_t k = piece == 0 ? len : piece > 0 ? (size_t)piece : 1 + rnd() % 7;
        if (k > len - i) k = len - i;
        CHECK_EQ_INT(toolcall_stream_push(s, text + i, k, &d), 0);
        acc_add(&a, &d);
        i += k;
    }
    CHECK_EQ_INT(toolcall_stream_finish(s, &d), 0);
    acc_add(&a, &d);
    CHECK_EQ_INT(toolcall_stream_n_calls(s), a.n);
    toolcall_stream_free(s);
    return a;
}

static void acc_free(acc *a) {
    free(a->content);
    free(a->reasoning);
    toolcall_free_all(a->calls, a->n);
}

static void test_split(void) {
    for (size_t i = 0; i < sizeof split_cases / sizeof split_cases[0]; i++) {
        const split_case *sc = &split_cases[i];
        for (int piece = 0; piece <= 20; piece++) {
            acc a = split(sc->text, sc->flags, piece <= 3 ? piece : -1);
            char *calls = calls_text(a.calls, a.n);
            if (strcmp(a.content, sc->content) || strcmp(a.reasoning, sc->reasoning) ||
                strcmp(calls, sc->calls))
                fprintf(stderr,
                        "split case %zu, pieces %d:\n  content [%s]\n  reasoning [%s]\n"
                        "  calls [%s]\n",
                        i, piece, a.content, a.reasoning, calls);
            CHECK_STR(a.content, sc->content);
            CHECK_STR(a.reasoning, sc->reasoning);
            CHECK_STR(calls, sc->calls);
            free(calls);
            acc_free(&a);
        }
    }
}

/* Random texts built from markup fragments: any split gives what the whole text gives. */
static void test_split_random(void) {
    static const char *const frag[] = {"<think>",
                                       "</think>",
                                       "<|tool_call_start|>",
                                       "<|tool_call_end|>",
                                       "[f(x=1)]",
                                       "[g(y='a b')]",
                                       " ",
                                       "\n",
                                       "text",
                                       "<|tool",
                                       "</thi",
                                       "[f(",
                                       ")]",
                                       "\"",
                                       "x=2"};
    for (int it = 0; it < 3000; it++) {
        char text[512] = "";
        int nf = 1 + (int)(rnd() % 12);
        for (int k = 0; k < nf; k++)
            strcat(text, frag[rnd() % (sizeof frag / sizeof frag[0])]);
        int flags = (int)(rnd() % 32);
        acc whole = split(text, flags, 0);
        acc bytes1 = split(text, flags, 1);
        acc rand = split(text, flags, -1);
        CHECK_STR(bytes1.content, whole.content);
        CHECK_STR(rand.content, whole.content);
        CHECK_STR(bytes1.reasoning, whole.reasoning);
        CHECK_STR(rand.reasoning, whole.reasoning);
        char *cw = calls_text(whole.calls, whole.n), *c1 = calls_text(bytes1.calls, bytes1.n),
             *cr = calls_text(rand.calls, rand.n);
        CHECK_STR(c1, cw);
        CHECK_STR(cr, cw);
        if (strcmp(c1, cw) || strcmp(cr, cw) || strcmp(rand.content, whole.content))
            fprintf(stderr, "random text [%s] flags %d\n", text, flags);
        /* text without any markup comes out unchanged */
        if (!strchr(text, '<') && !(flags & S)) CHECK_STR(whole.content, text);
        free(cw);
        free(c1);
        free(cr);
        acc_free(&whole);
        acc_free(&bytes1);
        acc_free(&rand);
    }
}

/* ---------------- tojson ---------------- */

static void test_tojson(void) {
    const char *in = "{\"b\":1,\"a\":[true,false,null,1.5,-0.25,100,1e300,\"x\\\"\\\\\\n\\u0001"
                     "\xc3\xa9\"],\"c\":{},\"d\":[]}";
    cJSON *v = cJSON_Parse(in);
    char *s = tojson_print(v);
    CHECK_STR(s, "{\"b\": 1, \"a\": [true, false, null, 1.5, -0.25, 100, 1e+300, "
                 "\"x\\\"\\\\\\n\\u0001\xc3\xa9\"], \"c\": {}, \"d\": []}");
    free(s);
    s = tojson_pystr(v);
    CHECK_STR(s, "{'b': 1, 'a': [True, False, None, 1.5, -0.25, 100, 1e+300, "
                 "'x\"\\\\\\n\\x01\xc3\xa9'], 'c': {}, 'd': []}");
    free(s);
    cJSON_Delete(v);
    v = cJSON_Parse("[\"it's\", \"top\", 0.1, 1e-7, 123456789.5]");
    s = tojson_pystr(v);
    CHECK_STR(s, "[\"it's\", 'top', 0.1, 1e-07, 123456789.5]");
    free(s);
    s = tojson_pystr(v->child->next); /* a top-level string is itself */
    CHECK_STR(s, "top");
    free(s);
    cJSON_Delete(v);
}

int main(void) {
    test_parse();
    test_split();
    test_split_random();
    test_tojson();
    return check_done("test_toolcall");
}
