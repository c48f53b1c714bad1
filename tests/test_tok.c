/* test_tok.c: tokenizer vs llama.cpp goldens; round trips, streaming, bad vocabs, cost, threads. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/tok.h"
#include "tests/check.h"

/* ---------- helpers ---------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static tok *load_tok(const char *path, gguf **gout) {
    char err[512] = "";
    gguf *g = NULL;
    tok *t = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0) {
        fprintf(stderr, "cannot open %s: %s\n", path, err);
        CHECK(0);
        return NULL;
    }
    if (tok_new(&t, g, err, sizeof err) < 0) {
        fprintf(stderr, "tok_new %s: %s\n", path, err);
        CHECK(0);
    }
    if (gout)
        *gout = g;
    else
        gguf_close(g);
    return t;
}

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Parses "1 2 3" into ids; returns the count. */
static int parse_ids(const char *s, int32_t *ids, int cap) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (n < cap) ids[n] = (int32_t)v;
        n++;
        s = end;
    }
    return n;
}

static int encode_all(const tok *t, const char *s, size_t len, bool bos, bool special,
                      int32_t **out) {
    int n = tok_encode(t, s, len, bos, special, NULL, 0);
    CHECK(n >= 0);
    *out = malloc(sizeof **out * ((size_t)(n > 0 ? n : 0) + 1));
    int m = tok_encode(t, s, len, bos, special, *out, n);
    CHECK_EQ_INT(m, n);
    return n;
}

/* What llama.cpp makes of a byte string before tokenizing: each code point decoded without
 * overlong/surrogate checks and re-encoded canonically; U+FFFD for each byte it cannot decode. */
static size_t llama_normalize(const unsigned char *s, size_t n, unsigned char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned b = s[i], len = 0;
        if (b < 0x80)
            len = 1;
        else if ((b & 0xE0) == 0xC0)
            len = 2;
        else if ((b & 0xF0) == 0xE0)
            len = 3;
        else if ((b & 0xF8) == 0xF0)
            len = 4;
        uint32_t c = 0;
        bool ok = len > 0 && i + len <= n;
        if (ok) {
            c = len == 1 ? b : (b & (0xFFu >> (len + 1)));
            for (unsigned k = 1; k < len; k++) {
                if ((s[i + k] & 0xC0) != 0x80) ok = false;
                c = (c << 6) | (s[i + k] & 0x3F);
            }
        }
        if (!ok || c > 0x10FFFF) {
            c = 0xFFFD;
            len = ok ? len : 1;
        }
        i += len;
        if (c < 0x80)
            out[o++] = (unsigned char)c;
        else if (c < 0x800)
            out[o++] = (unsigned char)(0xC0 | c >> 6), out[o++] = (unsigned char)(0x80 | (c & 63));
        else if (c < 0x10000)
            out[o++] = (unsigned char)(0xE0 | c >> 12),
            out[o++] = (unsigned char)(0x80 | ((c >> 6) & 63)),
            out[o++] = (unsigned char)(0x80 | (c & 63));
        else
            out[o++] = (unsigned char)(0xF0 | c >> 18),
            out[o++] = (unsigned char)(0x80 | ((c >> 12) & 63)),
            out[o++] = (unsigned char)(0x80 | ((c >> 6) & 63)),
            out[o++] = (unsigned char)(0x80 | (c & 63));
    }
    return o;
}

/* Reference for tok_utf8_len, written the other way round: decode the code point by the lead
 * byte's mask, then reject overlong forms, surrogates and anything above U+10FFFF. */
static int ref_utf8_len(const unsigned char *p, size_t n) {
    unsigned c = p[0], cp;
    int k;
    if (c < 0x80) return 1;
    if (c >= 0xC0 && c < 0xE0)
        k = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c < 0xF0)
        k = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c < 0xF8)
        k = 4, cp = c & 0x07;
    else
        return 0;
    if (n < (size_t)k) return 0;
    for (int i = 1; i < k; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    static const unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[k] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
    return k;
}

static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = (size_t)ref_utf8_len(s + i, n - i))) return false;
    return true;
}

/* Every first and second byte, the boundary values for the third and fourth, every length. */
static void check_utf8_len(void) {
    static const unsigned char tail[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90,
                                         0x9F, 0xA0, 0xBF, 0xC0, 0xF4, 0xFF};
    const size_t nt = sizeof tail;
    long bad = 0;
    for (unsigned a = 0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++)
            for (size_t i = 0; i < nt; i++)
                for (size_t j = 0; j < nt; j++) {
                    unsigned char p[4] = {(unsigned char)a, (unsigned char)b, tail[i], tail[j]};
                    for (size_t n = 1; n <= 4; n++) {
                        int got = tok_utf8_len((const char *)p, n), want = ref_utf8_len(p, n);
                        if (got != want && bad++ < 5)
                            fprintf(stderr,
                                    "tok_utf8_len(%02X %02X %02X %02X, %zu) = %d, want %d\n", a, b,
                                    tail[i], tail[j], n, got, want);
                    }
                }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(tok_utf8_len("", 0), 0);
    CHECK_EQ_INT(tok_utf8_len("\xF0\x9F\x98\x80", 4), 4); /* U+1F600 */
    CHECK_EQ_INT(tok_utf8_len("\xED\xA0\x80", 3), 0);     /* a surrogate */
}

/* ---------- goldens ---------- */

static void check_golden(const char *golden) {
    FILE *f = fopen(golden, "r");
    CHECK(f != NULL);
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    tok *t = NULL;
    int cases = 0, mismatches = 0, roundtrips = 0;
    bool roundtrip = true;
    unsigned char *text = NULL, *norm = NULL;
    char *dec = NULL;
    int32_t *want = NULL;
    while ((got = getline(&line, &cap, f)) > 0) {
        if (line[got - 1] == '\n') line[--got] = 0;
        if (!strncmp(line, "# model ", 8)) {
            t = load_tok(line + 8, NULL);
            if (!t) break;
            continue;
        }
        if (!strncmp(line, "# roundtrip ", 12)) roundtrip = atoi(line + 12) != 0;
        if (line[0] == '#' || !line[0]) continue;
        CHECK(t != NULL);
        if (!t) break;
        char *fields[5];
        int nf = 0;
        for (char *p = line; nf < 5; nf++) {
            fields[nf] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                nf++;
                break;
            }
            *tab = 0;
            p = tab + 1;
        }
        CHECK_EQ_INT(nf, 5);
        if (nf != 5) continue;
        size_t hl = strlen(fields[0]), n = hl / 2;
        text = realloc(text, n + 1);
        for (size_t i = 0; i < n; i++)
            text[i] = (unsigned char)(hexval(fields[0][2 * i]) * 16 + hexval(fields[0][2 * i + 1]));
        cases++;
        for (int col = 0; col < 4; col++) {
            bool special = col & 1, bos = (col & 2) && tok_add_bos(t);
            want = realloc(want, sizeof *want * (strlen(fields[col + 1]) + 1));
            int nw = parse_ids(fields[col + 1], want, (int)strlen(fields[col + 1]) + 1);
            int32_t *ids;
            int ng = encode_all(t, (const char *)text, n, bos, special, &ids);
            bool same = ng == nw && (ng == 0 || memcmp(ids, want, sizeof *ids * (size_t)ng) == 0);
            if (!same) {
                if (mismatches++ < 8) {
                    fprintf(stderr, "%s: case %s column %d:\n  want %s\n  got ", golden, fields[0],
                            col + 1, fields[col + 1]);
                    for (int i = 0; i < ng; i++)
                        fprintf(stderr, "%d ", ids[i]);
                    fprintf(stderr, "\n");
                }
                check_failures++;
            }
            /* detokenize(tokenize(s)) == s, as llama.cpp normalizes s (invalid bytes -> U+FFFD) */
            if (!bos && roundtrip) {
                norm = realloc(norm, 3 * n + 1);
                size_t nn = llama_normalize(text, n, norm);
                size_t dl = tok_decode(t, ids, ng, special, NULL, 0);
                dec = realloc(dec, dl + 1);
                CHECK_EQ_INT(tok_decode(t, ids, ng, special, dec, dl + 1), dl);
                if (dl != nn || memcmp(dec, norm, nn) != 0) {
                    fprintf(stderr, "%s: round trip of %s (special %d) gave %zu bytes, want %zu\n",
                            golden, fields[0], special, dl, nn);
                    check_failures++;
                } else {
                    roundtrips++;
                }
                if (valid_utf8(text, n)) CHECK(nn == n && memcmp(norm, text, n) == 0);
            }
            free(ids);
        }
    }
    printf("%s: %d cases x 4 columns, %d mismatches, %d round trips\n", golden, cases, mismatches,
           roundtrips);
    CHECK(cases >= 250);
    free(line);
    free(text);
    free(norm);
    free(dec);
    free(want);
    tok_free(t);
    fclose(f);
}

/* Every token's piece, with and without special rendering, against llama_token_to_piece. */
static void check_pieces(const char *golden) {
    FILE *f = fopen(golden, "r");
    CHECK(f != NULL);
    if (!f) return;
    char *line = NULL, *want = NULL;
    size_t cap = 0;
    ssize_t got;
    tok *t = NULL;
    int n = 0, bad = 0;
    while ((got = getline(&line, &cap, f)) > 0) {
        if (line[got - 1] == '\n') line[--got] = 0;
        if (!strncmp(line, "# model ", 8)) t = load_tok(line + 8, NULL);
        if (line[0] == '#' || !t) continue;
        char *f1 = strchr(line, '\t'), *f2 = f1 ? strchr(f1 + 1, '\t') : NULL;
        CHECK(f1 && f2);
        if (!f1 || !f2) break;
        *f1++ = 0, *f2++ = 0;
        int32_t id = atoi(line);
        for (int special = 0; special < 2; special++) {
            const char *hx = special ? f2 : f1;
            size_t wl = strlen(hx) / 2;
            want = realloc(want, wl + 1);
            for (size_t i = 0; i < wl; i++)
                want[i] = (char)(hexval(hx[2 * i]) * 16 + hexval(hx[2 * i + 1]));
            char buf[4096];
            size_t gl = tok_decode(t, &id, 1, special, buf, sizeof buf);
            if (gl != wl || memcmp(buf, want, wl) != 0) {
                if (bad++ < 5)
                    fprintf(stderr, "%s: token %d (special %d): got %zu bytes, want %s\n", golden,
                            id, special, gl, hx);
                check_failures++;
            }
        }
        n++;
    }
    CHECK(t && n == tok_n_vocab(t));
    printf("%s: %d tokens, %d bad pieces\n", golden, n, bad);
    free(line);
    free(want);
    tok_free(t);
    fclose(f);
}

/* ---------- round trips of random text ---------- */

static size_t put_cpt(uint32_t c, unsigned char *o) {
    if (c < 0x80) return o[0] = (unsigned char)c, 1;
    if (c < 0x800)
        return o[0] = (unsigned char)(0xC0 | c >> 6), o[1] = (unsigned char)(0x80 | (c & 63)), 2;
    if (c < 0x10000)
        return o[0] = (unsigned char)(0xE0 | c >> 12),
               o[1] = (unsigned char)(0x80 | ((c >> 6) & 63)),
               o[2] = (unsigned char)(0x80 | (c & 63)), 3;
    return o[0] = (unsigned char)(0xF0 | c >> 18), o[1] = (unsigned char)(0x80 | ((c >> 12) & 63)),
           o[2] = (unsigned char)(0x80 | ((c >> 6) & 63)), o[3] = (unsigned char)(0x80 | (c & 63)),
           4;
}

static uint32_t random_cpt(void) {
    static const uint32_t pool[] = {' ',  ' ',   '\n',   '\t',    '\r',   '\'',   'a',   'e', 's',
                                    'S',  'L',   '1',    '7',     '.',    '!',    '<',   '|', '>',
                                    0xA0, 0x301, 0x4E2D, 0x1F600, 0x200D, 0x3000, 0x180E};
    switch (rnd(4)) {
    case 0:
        return pool[rnd(sizeof pool / sizeof pool[0])];
    case 1:
        return 0x20 + rnd(0x5F);
    case 2:
        return 0x80 + rnd(0x800 - 0x80);
    default: {
        uint32_t c;
        do
            c = rnd(0x110000);
        while (c >= 0xD800 && c <= 0xDFFF);
        return c;
    }
    }
}

static void check_random_roundtrips(const tok *t) {
    unsigned char buf[512], norm[3 * 512 + 8];
    char *dec = malloc(1 << 16);
    for (int it = 0; it < 400; it++) {
        size_t n = 0;
        int ncp = 1 + (int)rnd(60);
        bool raw = it % 4 == 3; /* every 4th: arbitrary bytes */
        for (int k = 0; k < ncp && n + 4 < sizeof buf; k++) {
            if (raw)
                buf[n++] = (unsigned char)rnd(256);
            else
                n += put_cpt(random_cpt(), buf + n);
        }
        for (int special = 0; special < 2; special++) {
            int32_t *ids;
            int ng = encode_all(t, (const char *)buf, n, false, special, &ids);
            size_t dl = tok_decode(t, ids, ng, special, dec, 1 << 16);
            size_t nn = llama_normalize(buf, n, norm);
            if (dl != nn || memcmp(dec, norm, nn) != 0) {
                fprintf(stderr, "random round trip %d (special %d, raw %d) differs\n", it, special,
                        raw);
                check_failures++;
            }
            free(ids);
        }
    }
    free(dec);
}

/* ---------- streaming ---------- */

/* GPT-2 byte-to-unicode: the code point that stands for byte b in the vocab. */
static uint32_t byte_cpt(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    int k = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF)))
            k++;
    return 256u + (uint32_t)k;
}

/* tok_byte_cpt against the twin above: all 256 bytes, onto 256 distinct code points. */
static void check_byte_cpt(void) {
    bool seen[512] = {false};
    for (int b = 0; b < 256; b++) {
        uint32_t c = tok_byte_cpt((unsigned char)b);
        CHECK_EQ_INT(c, byte_cpt(b));
        CHECK(c < 512 && !seen[c]);
        if (c < 512) seen[c] = true;
    }
    CHECK_EQ_INT(tok_byte_cpt(' '), 0x120);  /* 'Ġ' */
    CHECK_EQ_INT(tok_byte_cpt('\n'), 0x10A); /* 'Ċ' */
    CHECK_EQ_INT(tok_byte_cpt('a'), 'a');
}

static int byte_token(const tok *t, int b) {
    unsigned char u[4];
    size_t l = put_cpt(byte_cpt(b), u);
    return tok_find(t, (const char *)u, l);
}

static void check_stream(const tok *t) {
    size_t cap = 4 + tok_max_piece(t);
    char *chunk = malloc(cap + 1), *whole = malloc(1 << 16), *joined = malloc(1 << 16);
    int32_t ids[200];
    for (int it = 0; it < 300; it++) {
        int n = 1 + (int)rnd(200);
        bool render = rnd(2);
        bool from_text = it % 2 == 0;
        if (from_text) {
            /* ids of valid UTF-8 text: every chunk must then be valid UTF-8 on its own */
            unsigned char text[160]; /* fewer bytes than ids[] holds: no sequence gets cut */
            size_t tl = 0;
            while (tl + 4 < sizeof text)
                tl += put_cpt(random_cpt(), text + tl);
            int32_t *all;
            int k = encode_all(t, (const char *)text, tl, false, false, &all);
            CHECK(k <= 200);
            n = k < 200 ? k : 200;
            memcpy(ids, all, sizeof *ids * (size_t)n);
            free(all);
        } else {
            for (int i = 0; i < n; i++)
                ids[i] = (int32_t)rnd((uint32_t)tok_n_vocab(t) + 3) - 1; /* incl. bad ids */
        }
        size_t wl = tok_decode(t, ids, n, render, whole, 1 << 16);
        tok_stream s;
        tok_stream_init(&s, t, render);
        size_t jl = 0;
        bool chunks_valid = true;
        for (int i = 0; i < n; i++) {
            size_t need = tok_stream_push(&s, ids[i], chunk, cap);
            CHECK(need <= cap);
            if (!valid_utf8((unsigned char *)chunk, need)) chunks_valid = false;
            memcpy(joined + jl, chunk, need);
            jl += need;
        }
        size_t fl = tok_stream_flush(&s, chunk, cap);
        CHECK(fl <= 3);
        memcpy(joined + jl, chunk, fl);
        jl += fl;
        CHECK_EQ_INT(jl, wl);
        CHECK(memcmp(joined, whole, wl) == 0);
        if (from_text) {
            CHECK(chunks_valid);
            CHECK_EQ_INT(fl, 0);
        }
    }
    /* a character split over three tokens comes out whole, once */
    int a = byte_token(t, 0xE4), b = byte_token(t, 0xB8), c = byte_token(t, 0xAD); /* U+4E2D */
    if (a >= 0 && b >= 0 && c >= 0) {
        tok_stream s;
        tok_stream_init(&s, t, false);
        CHECK_EQ_INT(tok_stream_push(&s, a, chunk, cap), 0);
        CHECK_EQ_INT(tok_stream_push(&s, b, chunk, cap), 0);
        CHECK_EQ_INT(tok_stream_push(&s, c, chunk, cap), 3);
        CHECK(memcmp(chunk, "\xe4\xb8\xad", 3) == 0); /* U+4E2D */
        /* a buffer too small: nothing consumed, the size needed comes back */
        tok_stream_init(&s, t, false);
        CHECK_EQ_INT(tok_stream_push(&s, a, chunk, cap), 0);
        CHECK_EQ_INT(tok_stream_push(&s, b, chunk, cap), 0);
        CHECK_EQ_INT(tok_stream_push(&s, c, chunk, 2), 3);
        CHECK_EQ_INT(tok_stream_push(&s, c, chunk, cap), 3);
        /* an unfinished character is flushed as it is */
        tok_stream_init(&s, t, false);
        CHECK_EQ_INT(tok_stream_push(&s, a, chunk, cap), 0);
        CHECK_EQ_INT(tok_stream_flush(&s, chunk, cap), 1);
        CHECK((unsigned char)chunk[0] == 0xE4);
        CHECK_EQ_INT(tok_stream_flush(&s, chunk, cap), 0);
    } else {
        CHECK(!"byte tokens missing from the vocab");
    }
    free(chunk);
    free(whole);
    free(joined);
}

/* ---------- hand-made vocabs: exact BPE behaviour and broken metadata ---------- */

typedef struct vocab_spec {
    const char *model, *pre;
    const char **extra; /* NORMAL tokens after the 256 byte chars */
    int n_extra;
    const char **merges;
    int n_merges;
    int64_t bos, eos; /* -2: absent */
    int bad_type_at;  /* -1: none; else that token gets type 9 */
    int short_types;  /* token_type array one short */
    int dup;          /* repeat token 100 at the end */
    int no_merges, types_as_str, tokens_as_int;
    int add_bos;      /* -1 absent, else value */
    const char *user; /* a USER_DEFINED token */
    int raw_c3;       /* the token for byte 0xE4 ("ä") becomes the raw byte "\xC3" */
} vocab_spec;

static const char *write_vocab(const vocab_spec *v, char *path) {
    static const char *specials[] = {"<|pad|>", "<|startoftext|>", "<|im_start|>", "<|im_end|>",
                                     "<|im_start|>x"};
    const char *strs[700];
    char bytes[256][4];
    int32_t types[700];
    int n = 0;
    for (int i = 0; i < 5; i++)
        strs[n] = specials[i], types[n++] = TOK_CONTROL;
    for (int b = 0; b < 256; b++) {
        size_t l = put_cpt(byte_cpt(b), (unsigned char *)bytes[b]);
        bytes[b][l] = 0;
        if (v->raw_c3 && b == 0xE4) bytes[b][0] = (char)0xC3, bytes[b][1] = 0;
        strs[n] = bytes[b], types[n++] = TOK_NORMAL;
    }
    for (int i = 0; i < v->n_extra; i++)
        strs[n] = v->extra[i], types[n++] = TOK_NORMAL;
    if (v->user) strs[n] = v->user, types[n++] = TOK_USER;
    if (v->dup) strs[n] = strs[100], types[n++] = TOK_NORMAL;
    if (v->bad_type_at >= 0) types[v->bad_type_at] = 9;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "lfm2");
    if (v->model) gguf_writer_set_str(w, "tokenizer.ggml.model", v->model);
    if (v->pre) gguf_writer_set_str(w, "tokenizer.ggml.pre", v->pre);
    if (v->tokens_as_int)
        gguf_writer_set_arr(w, "tokenizer.ggml.tokens", GGUF_I32, types, (uint64_t)n);
    else
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, NULL, (uint64_t)n);
    if (v->types_as_str)
        gguf_writer_set_arr_str(w, "tokenizer.ggml.token_type", strs, NULL, (uint64_t)n);
    else
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types,
                            (uint64_t)(n - v->short_types));
    if (!v->no_merges)
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", v->merges, NULL, (uint64_t)v->n_merges);
    if (v->bos != -2) gguf_writer_set_int(w, "tokenizer.ggml.bos_token_id", GGUF_I32, v->bos);
    if (v->eos != -2) gguf_writer_set_int(w, "tokenizer.ggml.eos_token_id", GGUF_I32, v->eos);
    if (v->add_bos >= 0) gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    char err[256];
    int rc = gguf_writer_write(w, path, err, sizeof err);
    if (rc < 0) fprintf(stderr, "gguf_writer_write: %s\n", err);
    CHECK(rc >= 0);
    gguf_writer_free(w);
    return path;
}

static vocab_spec base_spec(void) {
    static const char *extra[] = {"ab", "bc", "abc", "cd", "abcd", "xy", "Ġx", "ĠĠ", "ĠĠĠĠ"};
    static const char *merges[] = {"b c", "a b", "a bc", "c d",  "ab cd",
                                   "x y", "Ġ x", "Ġ Ġ",  "ĠĠ ĠĠ"};
    vocab_spec v = {.model = "gpt2",
                    .pre = "lfm2",
                    .extra = extra,
                    .n_extra = 9,
                    .merges = merges,
                    .n_merges = 9,
                    .bos = 1,
                    .eos = 3,
                    .bad_type_at = -1,
                    .add_bos = -1};
    return v;
}

/* tok_new on v must fail with a message containing each of the needles. */
static void expect_reject(const vocab_spec *v, const char *what, const char *n1, const char *n2) {
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/tok_bad.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    write_vocab(v, path);
    gguf *g = NULL;
    tok *t = NULL;
    int rc = gguf_open(&g, path, err, sizeof err);
    if (rc < 0) { /* the reader may already refuse it; that is a clear error too */
        fprintf(stderr, "(%s: rejected by the reader: %s)\n", what, err);
        return;
    }
    rc = tok_new(&t, g, err, sizeof err);
    if (rc >= 0 || !strstr(err, n1) || (n2 && !strstr(err, n2))) {
        fprintf(stderr, "%s: rc %d, message '%s' (want '%s'%s%s)\n", what, rc, err, n1,
                n2 ? " and " : "", n2 ? n2 : "");
        check_failures++;
    } else
        printf("rejected (%s): %s\n", what, err);
    CHECK(t == NULL);
    tok_free(t);
    gguf_close(g);
}

static void ids_are(const tok *t, const char *text, bool special, const char *want) {
    int32_t *ids, w[64];
    int n = encode_all(t, text, strlen(text), false, special, &ids);
    int nw = parse_ids(want, w, 64);
    bool same = n == nw && memcmp(ids, w, sizeof *ids * (size_t)n) == 0;
    if (!same) {
        fprintf(stderr, "tokenize '%s': want %s, got", text, want);
        for (int i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
        check_failures++;
    }
    free(ids);
}

static void check_handmade(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tok_ok.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    vocab_spec v = base_spec();
    const char *user = "@@";
    v.user = user;
    write_vocab(&v, path);
    tok *t = load_tok(path, NULL);
    if (!t) return;
    /* ids: specials 0..4, byte chars 5..260 (byte b -> 5 + b), extra 261..269, user 270 */
    CHECK_EQ_INT(tok_find(t, "ab", 2), 261);
    CHECK_EQ_INT(tok_find(t, "abcd", 4), 265);
    CHECK_EQ_INT(tok_find(t, "zz", 2), -1);
    CHECK_EQ_INT(tok_type_of(t, 270), TOK_USER);
    CHECK_EQ_INT(tok_type_of(t, 2), TOK_CONTROL);
    CHECK_EQ_INT(tok_type_of(t, 9999), -1);
    CHECK_EQ_INT(tok_bos(t), 1);
    CHECK_EQ_INT(tok_eos(t), 3);
    CHECK_EQ_INT(tok_pad(t), -1);
    CHECK(tok_add_bos(t)); /* default for lfm2 */
    char buf[64];
    ids_are(t, "abcd", false, "265");      /* whole piece in the vocab: one token, no merging */
    ids_are(t, "abccd", false, "263 264"); /* b c (rank 0), a bc (2), c d (3); a b (1) went stale */
    ids_are(t, "abab", false, "261 261");  /* equal ranks: leftmost first */
    ids_are(t, "abxd", false, "261 125 105"); /* a b, then no merge for x or d */
    ids_are(t, " x", false, "267");           /* " x" is one piece: "Ġx" */
    ids_are(t, "    x", false, "268 37 267"); /* "   " + " x"; Ġ Ġ merges once, leftmost */
    /* special tokens: longest match first; CONTROL only with parse_special; USER_DEFINED always */
    ids_are(t, "<|im_start|>x", true, "4");
    ids_are(t, "<|im_start|>y", true, "2 126");
    ids_are(t, "a@@b", false, "102 270 103");
    ids_are(t, "a@@b", true, "102 270 103");
    {
        int32_t *ids;
        int n = encode_all(t, "<|im_end|>", 10, false, false, &ids);
        CHECK(n > 1); /* not parsed: plain text */
        for (int i = 0; i < n; i++)
            CHECK(ids[i] != 3);
        free(ids);
        n = encode_all(t, "", 0, true, true, &ids);
        CHECK_EQ_INT(n, 1);
        CHECK_EQ_INT(ids[0], 1);
        free(ids);
        n = encode_all(t, "", 0, false, true, &ids);
        CHECK_EQ_INT(n, 0);
        free(ids);
    }
    /* pieces: CONTROL rendered only when asked; byte-level decoded for NORMAL */
    size_t len;
    const char *p = tok_piece(t, 3, &len);
    CHECK(len == 10 && !memcmp(p, "<|im_end|>", 10));
    p = tok_piece(t, 5 + ' ', &len);
    CHECK(len == 1 && p[0] == ' ');
    p = tok_piece(t, 268, &len);
    CHECK(len == 2 && !memcmp(p, "  ", 2)); /* "ĠĠ" */
    CHECK(tok_piece(t, -1, &len) == NULL);
    int32_t ids[3] = {3, 261, 270};
    CHECK_EQ_INT(tok_decode(t, ids, 3, false, buf, sizeof buf), 4);
    CHECK_STR(buf, "ab@@");
    CHECK_EQ_INT(tok_decode(t, ids, 3, true, buf, sizeof buf), 14);
    CHECK_STR(buf, "<|im_end|>ab@@");
    CHECK_EQ_INT(tok_decode(t, ids, 3, true, buf, 5), 14); /* needed size even when cut */
    tok_free(t);

    /* long piece (> 16 bytes: the heap path): a candidate whose left symbol was absorbed must go
     * stale, or "b c" merges a dead b and the later "c de" is never seen */
    static const char *ex2[] = {"ab", "bc", "de", "cde"};
    static const char *mg2[] = {"a b", "b c", "d e", "c de"};
    v = base_spec();
    v.extra = ex2, v.n_extra = 4, v.merges = mg2, v.n_merges = 4;
    write_vocab(&v, path);
    t = load_tok(path, NULL);
    if (!t) return;
    ids_are(t, "abcdezzzzzzzzzzzzz", false,
            "261 264 127 127 127 127 127 127 127 127 127 127 127 127 127");
    ids_are(t, "abcdez", false, "261 264 127"); /* the same on the short path */
    tok_free(t);

    /* a byte whose one-char token is missing: llama.cpp looks up each byte of its encoding
     * ("ä" = C3 A4) as a one-byte string and keeps those it finds */
    v = base_spec();
    v.raw_c3 = 1;
    write_vocab(&v, path);
    t = load_tok(path, NULL);
    if (!t) return;
    ids_are(t, "\xe4\xb8\xad", false, "233 189 178"); /* "\xC3" (slot of 0xE4), then B8, AD */
    tok_free(t);
}

static void check_rejects(void) {
    vocab_spec v;
    v = base_spec(), v.model = "llama";
    expect_reject(&v, "model llama", "tokenizer.ggml.model", "llama");
    v = base_spec(), v.model = NULL;
    expect_reject(&v, "model missing", "tokenizer.ggml.model", "missing");
    v = base_spec(), v.pre = "qwen2";
    expect_reject(&v, "pre qwen2", "tokenizer.ggml.pre", "qwen2");
    v = base_spec(), v.tokens_as_int = 1;
    expect_reject(&v, "tokens as ints", "tokenizer.ggml.tokens", "strings");
    v = base_spec(), v.types_as_str = 1;
    expect_reject(&v, "types as strings", "tokenizer.ggml.token_type", "integers");
    v = base_spec(), v.short_types = 1;
    expect_reject(&v, "types short", "tokenizer.ggml.token_type", "expected");
    v = base_spec(), v.bad_type_at = 7;
    expect_reject(&v, "type 9", "tokenizer.ggml.token_type[7] = 9", "0..6");
    v = base_spec(), v.dup = 1;
    expect_reject(&v, "duplicate token", "duplicate", "tokenizer.ggml.tokens");
    v = base_spec(), v.no_merges = 1;
    expect_reject(&v, "merges missing", "tokenizer.ggml.merges", "missing");
    static const char *m1[] = {"a b", "abc"};
    v = base_spec(), v.merges = m1, v.n_merges = 2;
    expect_reject(&v, "merge without space", "tokenizer.ggml.merges[1]", "two tokens");
    static const char *m2[] = {"a b", "a qq"};
    v = base_spec(), v.merges = m2, v.n_merges = 2;
    expect_reject(&v, "merge right unknown", "tokenizer.ggml.merges[1]", "right half");
    static const char *m3[] = {"qq a"};
    v = base_spec(), v.merges = m3, v.n_merges = 1;
    expect_reject(&v, "merge left unknown", "tokenizer.ggml.merges[0]", "left half");
    static const char *m4[] = {"a c"};
    v = base_spec(), v.merges = m4, v.n_merges = 1;
    expect_reject(&v, "merged not a token", "tokenizer.ggml.merges[0]", "merged");
    static const char *m5[] = {"a "};
    v = base_spec(), v.merges = m5, v.n_merges = 1;
    expect_reject(&v, "merge trailing space", "tokenizer.ggml.merges[0]", "two tokens");
    v = base_spec(), v.bos = 5000;
    expect_reject(&v, "bos outside", "tokenizer.ggml.bos_token_id = 5000", "outside");
    v = base_spec(), v.eos = -1;
    expect_reject(&v, "eos negative", "tokenizer.ggml.eos_token_id = -1", "outside");
    v = base_spec(), v.bos = -2;
    expect_reject(&v, "add_bos without bos", "add_bos_token", "bos_token_id");
    /* accepted: absent pre (Llama-3 pattern) and add_bos false without bos */
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/tok_ok2.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    v = base_spec(), v.pre = NULL, v.bos = -2, v.add_bos = 0;
    write_vocab(&v, path);
    gguf *g = NULL;
    tok *t = NULL;
    CHECK(gguf_open(&g, path, err, sizeof err) == 0);
    if (g) {
        CHECK(tok_new(&t, g, err, sizeof err) == 0);
        if (t) {
            CHECK_EQ_INT(tok_bos(t), -1);
            CHECK(!tok_add_bos(t));
        }
    }
    tok_free(t);
    gguf_close(g);
}

/* ---------- cost bound on long inputs (counted steps, not time) ---------- */

static void check_cost(const tok *t) {
    size_t n = 100000;
    char *s = malloc(n + 1);
    const char *names[] = {"spaces", "letters", "digits", "newlines", "mixed", "invalid", "cjk"};
    for (int kind = 0; kind < 7; kind++) {
        for (size_t i = 0; i < n; i++) {
            switch (kind) {
            case 0:
                s[i] = ' ';
                break;
            case 1:
                s[i] = 'a';
                break;
            case 2:
                s[i] = (char)('0' + i % 10);
                break;
            case 3:
                s[i] = i % 2 ? '\n' : ' ';
                break;
            case 4:
                s[i] = "ab cd\tef'sgh 12\n!?"[rnd(18)];
                break;
            case 5:
                s[i] = (char)(0x80 + rnd(0x80));
                break;
            default:
                memcpy(s + i, "\xe4\xb8\xad", n - i >= 3 ? 3 : n - i), i += 2;
                break;
            }
        }
        s[n - 1] = 'x';
        uint64_t work = 0;
        int k = tok_encode_counted(t, s, n, true, true, NULL, 0, &work);
        CHECK(k > 0);
        /* linear-time work: a quadratic merge loop would take ~1e10 steps here */
        if (work > 60ull * n) {
            fprintf(stderr, "cost: %s input of %zu bytes took %llu steps (bound %llu)\n",
                    names[kind], n, (unsigned long long)work, 60ull * n);
            check_failures++;
        }
        printf("cost %-8s: %zu bytes -> %d tokens, %llu steps\n", names[kind], n, k,
               (unsigned long long)work);
    }
    free(s);
}

/* ---------- threads share one tok ---------- */

typedef struct job {
    const tok *t;
    int seed;
    int bad;
} job;

static void *thread_main(void *arg) {
    job *j = arg;
    char text[2000];
    for (int it = 0; it < 50; it++) {
        size_t n = 0;
        uint32_t x = (uint32_t)(j->seed * 7919 + it);
        while (n < sizeof text - 8) {
            x = x * 1103515245u + 12345u;
            n += put_cpt(" aeiou\n'S1<|>"[(x >> 16) % 13] == '|'
                             ? 0x4E2D
                             : (uint32_t) " aeiou\n'S1<|>"[(x >> 16) % 13],
                         (unsigned char *)text + n);
        }
        int32_t a[4000], b[4000];
        int na = tok_encode(j->t, text, n, true, true, a, 4000);
        int nb = tok_encode(j->t, text, n, true, true, b, 4000);
        if (na != nb || na < 0 || memcmp(a, b, sizeof *a * (size_t)(na < 4000 ? na : 4000)))
            j->bad++;
    }
    return NULL;
}

static void check_threads(const tok *t) {
    pthread_t th[4];
    job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){t, i % 2, 0}; /* pairs of threads tokenize the same texts */
        pthread_create(&th[i], NULL, thread_main, &jobs[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(jobs[i].bad, 0);
}

int main(void) {
    check_utf8_len();
    check_byte_cpt();
    check_golden("tests/data/tok/mini.golden");
    check_golden("tests/data/tok/vocab65536.golden");
    check_golden("tests/data/tok/types.golden");
    check_pieces("tests/data/tok/mini.pieces");
    check_pieces("tests/data/tok/types.pieces");
    tok *t = load_tok("tests/data/models/mini-F16.gguf", NULL);
    tok *big = load_tok("tests/data/tok/vocab65536.gguf", NULL);
    if (t && big) {
        CHECK_EQ_INT(tok_n_vocab(t), 4096);
        CHECK_EQ_INT(tok_n_vocab(big), 65536);
        CHECK_EQ_INT(tok_bos(t), 1);
        CHECK_EQ_INT(tok_eos(t), 7);
        CHECK_EQ_INT(tok_pad(t), 0);
        CHECK_EQ_INT(tok_find(t, "<|im_end|>", 10), 7);
        CHECK_EQ_INT(tok_type_of(t, 7), TOK_CONTROL);
        check_random_roundtrips(t);
        check_random_roundtrips(big);
        check_stream(t);
        check_stream(big);
        check_cost(t);
        check_cost(big);
        check_threads(big);
    }
    tok_free(t);
    tok_free(big);
    check_handmade();
    check_rejects();
    return check_done("test_tok");
}
