/* fuzz_tok.c: libFuzzer harness: tokenizer round trips and streaming decode on a real vocab. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api/request.h"
#include "engine/gguf.h"
#include "engine/tok.h"
#include "tests/fuzz/fuzz.h"

/* Input: [flags] then the text. flags bit 0: parse_special, bit 1: add_bos, bit 2: also read
 * the text as little-endian 16-bit token ids (any id, even outside the vocab) for the streaming
 * check, bits 3..5: the first buffer size tried by tok_stream_push.
 * The vocab: tests/data/models/mini-F16.gguf (4096 tokens, llama.cpp-written), or the file
 * named by LFM2_FUZZ_TOK_MODEL; loaded once, read-only afterwards. */

static const tok *vocab(void) {
    static tok *t;
    if (t) return t;
    const char *path = getenv("LFM2_FUZZ_TOK_MODEL");
    if (!path) path = "tests/data/models/mini-F16.gguf";
    char err[512];
    gguf *g = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0 || tok_new(&t, g, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_tok: %s: %s (run from the repository root)\n", path, err);
        abort();
    }
    gguf_close(g); /* the tokenizer keeps its own copy */
    return t;
}

/* The whole-decoder text of ids must equal what the streaming decoder emits piece by piece. */
static void check_stream(const tok *t, const int32_t *ids, int n, bool render, size_t first_cap) {
    size_t need = tok_decode(t, ids, n, render, NULL, 0);
    char *whole = malloc(need + 1);
    FUZZ_CHECK(whole != NULL);
    FUZZ_CHECK(tok_decode(t, ids, n, render, whole, need + 1) == need);
    FUZZ_CHECK(whole[need] == 0);
    size_t cap = 4 + tok_max_piece(t);
    char *piece = malloc(cap);
    char *streamed = malloc(need + cap + 1);
    FUZZ_CHECK(piece && streamed);
    size_t got = 0;
    tok_stream s;
    tok_stream_init(&s, t, render);
    for (int i = 0; i < n; i++) {
        size_t small = first_cap < cap ? first_cap : cap;
        size_t k = tok_stream_push(&s, ids[i], piece, small);
        if (k > small) /* nothing written or consumed: the same push again, with room */
            FUZZ_CHECK(tok_stream_push(&s, ids[i], piece, cap) == k);
        FUZZ_CHECK(k <= cap);
        FUZZ_CHECK(got + k <= need);
        memcpy(streamed + got, piece, k);
        got += k;
        FUZZ_CHECK(s.n_pending >= 0 && s.n_pending < 8);
    }
    size_t k = tok_stream_flush(&s, piece, cap);
    FUZZ_CHECK(k <= cap && got + k <= need);
    memcpy(streamed + got, piece, k);
    got += k;
    FUZZ_CHECK(got == need);
    FUZZ_CHECK(!memcmp(streamed, whole, need));
    free(whole);
    free(piece);
    free(streamed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const tok *t = vocab();
    if (size < 1) return 0;
    bool special = data[0] & 1, bos = data[0] & 2, raw_ids = data[0] & 4;
    size_t first_cap = (size_t)(data[0] >> 3 & 7) * 3;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int nv = tok_n_vocab(t);

    /* counting call, then the real one, then a short buffer: same total, same prefix */
    int32_t dummy[1];
    int n = tok_encode(t, text, len, bos, special, dummy, 0);
    FUZZ_CHECK(n >= 0);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    FUZZ_CHECK(ids != NULL);
    FUZZ_CHECK(tok_encode(t, text, len, bos, special, ids, n) == n);
    for (int i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv);
    if (n > 1) {
        int32_t *half = malloc((size_t)(n / 2) * sizeof *half);
        FUZZ_CHECK(half != NULL);
        FUZZ_CHECK(tok_encode(t, text, len, bos, special, half, n / 2) == n);
        FUZZ_CHECK(!memcmp(half, ids, (size_t)(n / 2) * sizeof *half));
        free(half);
    }
    int skip = 0;
    if (bos && tok_bos(t) >= 0) {
        FUZZ_CHECK(n >= 1 && ids[0] == tok_bos(t));
        skip = 1;
    }
    FUZZ_CHECK(len == 0 ? n == skip : n > skip);
    /* without special parsing no CONTROL token comes out of text */
    if (!special)
        for (int i = skip; i < n; i++)
            FUZZ_CHECK(tok_type_of(t, ids[i]) != TOK_CONTROL);

    /* decode(encode(x)) == x for valid UTF-8; special tokens come back as their text */
    if (api_utf8_valid(text, len)) {
        for (int render = 0; render < 2; render++) {
            if (special && !render) continue;
            size_t need = tok_decode(t, ids + skip, n - skip, render, NULL, 0);
            FUZZ_CHECK(need == len);
            char *back = malloc(need + 1);
            FUZZ_CHECK(back != NULL);
            FUZZ_CHECK(tok_decode(t, ids + skip, n - skip, render, back, need + 1) == need);
            FUZZ_CHECK(!memcmp(back, text, len));
            free(back);
        }
    }
    /* streaming equals whole decoding for every text, valid UTF-8 or not */
    check_stream(t, ids, n, true, first_cap);
    check_stream(t, ids, n, false, first_cap);
    free(ids);

    if (raw_ids) {
        int m = (int)(len / 2);
        int32_t *r = malloc(((size_t)m + 1) * sizeof *r);
        FUZZ_CHECK(r != NULL);
        for (int i = 0; i < m; i++) { /* mostly inside the vocab, a few outside or negative */
            int v = (uint8_t)text[2 * i] | (uint8_t)text[2 * i + 1] << 8;
            r[i] = v >= 0xff00 ? -(v & 0xff) : v % (nv + 16);
        }
        check_stream(t, r, m, true, first_cap);
        check_stream(t, r, m, false, first_cap);
        free(r);
    }
    return 0;
}
