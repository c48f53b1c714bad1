/* fuzz_gguf.c: libFuzzer harness: any bytes through the GGUF reader, model and tokenizer. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "quant/quant.h"
#include "tests/fuzz/fuzz.h"

/* Whatever the bytes, the reader either refuses them with a message or hands out only values
 * and pointers that lie inside the buffer; the model and tokenizer builders on top of an
 * accepted file either refuse it with a message or give consistent objects. No leak either way
 * (ASan's leak checker runs at exit). */

static volatile unsigned sink; /* keeps the reads below from being optimized away */

static bool inside(const void *p, size_t n, const uint8_t *buf, size_t size) {
    const uint8_t *q = p;
    return q >= buf && q <= buf + size && n <= (size_t)(buf + size - q);
}

static void walk_kv(const gguf *g, const uint8_t *buf, size_t size) {
    int64_t n = gguf_n_kv(g);
    FUZZ_CHECK(n >= 0);
    for (int64_t i = 0; i < n; i++) {
        const char *key = gguf_kv_key(g, i);
        FUZZ_CHECK(key != NULL);
        FUZZ_CHECK(gguf_find_key(g, key) == i); /* keys are unique */
        enum gguf_vtype t = gguf_kv_type(g, i);
        FUZZ_CHECK((int)t >= 0 && t < GGUF_VTYPE_COUNT);
        bool bad = false;
        switch (t) {
        case GGUF_STR: {
            size_t len = 0;
            const char *s = gguf_kv_str(g, i, &len);
            FUZZ_CHECK(s != NULL && s[len] == 0);
            for (size_t j = 0; j < len; j++)
                sink += (unsigned char)s[j];
            FUZZ_CHECK(gguf_get_str(g, key, NULL, &bad) == s && !bad);
            break;
        }
        case GGUF_ARR: {
            enum gguf_vtype at = gguf_arr_type(g, i);
            uint64_t len = gguf_arr_len(g, i);
            FUZZ_CHECK(len <= size); /* every element takes at least a byte of the file */
            for (uint64_t j = 0; j < len && j < 100000; j++) {
                if (at == GGUF_STR) {
                    size_t sl = 0;
                    const char *s = gguf_arr_str(g, i, j, &sl);
                    FUZZ_CHECK(inside(s, sl, buf, size));
                    if (sl) sink += (unsigned char)s[0] + (unsigned char)s[sl - 1];
                } else if (at == GGUF_F32 || at == GGUF_F64) {
                    sink += (unsigned)(gguf_arr_float(g, i, j) != 0);
                } else if (at != GGUF_ARR) {
                    sink += (unsigned)gguf_arr_int(g, i, j);
                }
            }
            (void)gguf_get_int(g, key, 0, &bad);
            FUZZ_CHECK(bad); /* an array is not an integer */
            break;
        }
        case GGUF_F32:
        case GGUF_F64:
            sink += (unsigned)(gguf_kv_float(g, i) != 0);
            (void)gguf_get_float(g, key, 0, &bad);
            FUZZ_CHECK(!bad);
            break;
        default: /* integers and bool */
            sink += (unsigned)gguf_kv_int(g, i);
            sink += (unsigned)(gguf_kv_float(g, i) != 0);
            (void)gguf_get_bool(g, key, false, &bad);
            break;
        }
    }
    FUZZ_CHECK(gguf_find_key(g, "no.such.key.in.any.file") == -1);
}

static void walk_tensors(const gguf *g, const uint8_t *buf, size_t size) {
    int64_t n = gguf_n_tensors(g);
    FUZZ_CHECK(n >= 0);
    size_t align = gguf_alignment(g);
    FUZZ_CHECK(align > 0 && (align & (align - 1)) == 0);
    float row[512];
    for (int64_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        FUZZ_CHECK(t && t->name);
        FUZZ_CHECK(gguf_find_tensor(g, t->name) == t);
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        int64_t count = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            FUZZ_CHECK(t->ne[d] >= 1);
            FUZZ_CHECK(count <= INT64_MAX / t->ne[d]);
            count *= t->ne[d];
        }
        const qtype_traits *q = quant_traits(t->type);
        FUZZ_CHECK(q != NULL);
        FUZZ_CHECK(t->ne[0] % q->block_size == 0);
        size_t row_bytes = quant_row_size(t->type, t->ne[0]);
        FUZZ_CHECK(row_bytes > 0);
        FUZZ_CHECK(t->nbytes == row_bytes * (size_t)(count / t->ne[0]));
        FUZZ_CHECK(inside(t->data, t->nbytes, buf, size));
        FUZZ_CHECK(((uintptr_t)t->data - (uintptr_t)buf) % align == 0 || size == 0);
        /* any bit pattern dequantizes (NaN and Inf allowed); one short row of each tensor */
        int64_t nw = t->ne[0] <= 512 ? t->ne[0] : 0;
        if (nw && q->to_float) FUZZ_CHECK(quant_dequantize_rows(t->type, t->data, row, 1, nw) == 0);
        if (t->nbytes) sink += ((const uint8_t *)t->data)[t->nbytes - 1];
    }
    FUZZ_CHECK(gguf_find_tensor(g, "no.such.tensor") == NULL);
}

/* Streaming decode of ids equals the whole decode, whatever the vocab's pieces are. */
static void stream_equals_whole(const tok *t, const int32_t *ids, int n, bool render) {
    size_t need = tok_decode(t, ids, n, render, NULL, 0);
    size_t cap = 4 + tok_max_piece(t);
    char *whole = malloc(need + 1), *piece = malloc(cap), *got = malloc(need + cap);
    FUZZ_CHECK(whole && piece && got);
    FUZZ_CHECK(tok_decode(t, ids, n, render, whole, need + 1) == need);
    size_t k = 0;
    tok_stream st;
    tok_stream_init(&st, t, render);
    for (int i = 0; i < n; i++) {
        size_t m = tok_stream_push(&st, ids[i], piece, cap);
        FUZZ_CHECK(m <= cap && k + m <= need);
        memcpy(got + k, piece, m);
        k += m;
    }
    size_t m = tok_stream_flush(&st, piece, cap);
    FUZZ_CHECK(m <= cap && k + m == need);
    memcpy(got + k, piece, m);
    FUZZ_CHECK(!memcmp(got, whole, need));
    free(whole);
    free(piece);
    free(got);
}

static void use_tok(const tok *t, const uint8_t *data, size_t size) {
    int nv = tok_n_vocab(t);
    FUZZ_CHECK(nv > 0);
    FUZZ_CHECK(tok_bos(t) < nv && tok_eos(t) < nv && tok_pad(t) < nv);
    for (int id = 0; id < nv && id < 1000; id++) {
        size_t len = 0;
        const char *p = tok_piece(t, id, &len);
        FUZZ_CHECK(p != NULL && len <= tok_max_piece(t));
        (void)tok_type_of(t, id);
    }
    FUZZ_CHECK(tok_piece(t, nv, &(size_t){0}) == NULL);
    static const char text[] = "Hi <|im_start|>user\n caf\xc3\xa9 123 \xff!";
    int32_t ids[256];
    for (int sp = 0; sp < 2; sp++) {
        int n = tok_encode(t, text, sizeof text - 1, true, sp, ids, 256);
        FUZZ_CHECK(n >= 0 && n <= 256);
        for (int i = 0; i < n; i++)
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv);
        char out[64];
        size_t need = tok_decode(t, ids, n, sp, out, sizeof out);
        FUZZ_CHECK(need >= sizeof out || out[need] == 0); /* pieces may hold NUL bytes */
    }
    /* the last bytes of the input as text, through this (possibly odd) vocab */
    size_t tl = size < 256 ? size : 256;
    const char *tail = (const char *)data + size - tl;
    for (int sp = 0; sp < 2; sp++) {
        int n = tok_encode(t, tail, tl, sp, sp, ids, 256);
        FUZZ_CHECK(n >= 0);
        if (n > 256) n = 256;
        for (int i = 0; i < n; i++)
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv);
        stream_equals_whole(t, ids, n, sp);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf *g = NULL;
    char err[512];
    err[0] = 0;
    if (gguf_open_mem(&g, data, size, err, sizeof err) < 0) {
        FUZZ_CHECK(g == NULL && err[0] != 0 && strlen(err) < sizeof err);
        return 0;
    }
    FUZZ_CHECK(g != NULL);
    FUZZ_CHECK(gguf_version(g) == 2 || gguf_version(g) == 3);
    FUZZ_CHECK(gguf_file_size(g) == size);
    walk_kv(g, data, size);
    walk_tensors(g, data, size);

    tok *t = NULL;
    err[0] = 0;
    if (tok_new(&t, g, err, sizeof err) == 0) {
        use_tok(t, data, size);
        tok_free(t);
    } else {
        FUZZ_CHECK(t == NULL && err[0] != 0);
    }

    lfm2_model *m = NULL;
    err[0] = 0;
    if (lfm2_model_from_gguf(&m, g, err, sizeof err) == 0) { /* m owns g now */
        const lfm2_hparams *hp = &m->hp;
        FUZZ_CHECK(m->g == g);
        FUZZ_CHECK(hp->n_layer >= 1 && hp->n_layer <= LFM2_MAX_LAYERS);
        FUZZ_CHECK(hp->n_embd >= 1 && hp->n_head >= 1 && hp->head_dim * hp->n_head == hp->n_embd);
        FUZZ_CHECK(m->tok_embd && m->out_norm && m->output);
        FUZZ_CHECK(m->tok_embd->ne[0] == hp->n_embd && m->tok_embd->ne[1] == hp->n_vocab);
        int n_attn = 0;
        for (int l = 0; l < hp->n_layer; l++) {
            const lfm2_layer *L = &m->layers[l];
            FUZZ_CHECK(L->attn_norm && L->ffn_norm && L->ffn_gate && L->ffn_up && L->ffn_down);
            if (hp->n_head_kv[l] > 0) {
                n_attn++;
                FUZZ_CHECK(hp->n_head % hp->n_head_kv[l] == 0);
                FUZZ_CHECK(L->wq && L->wk && L->wv && L->wo && L->q_norm && L->k_norm);
                FUZZ_CHECK(!L->in_proj && !L->conv && !L->out_proj);
            } else {
                FUZZ_CHECK(hp->n_head_kv[l] == 0);
                FUZZ_CHECK(L->in_proj && L->conv && L->out_proj);
                FUZZ_CHECK(!L->wq && !L->wk && !L->wv && !L->wo);
                FUZZ_CHECK(L->conv->ne[0] == hp->l_cache && L->conv->ne[1] == hp->n_embd);
            }
        }
        FUZZ_CHECK(n_attn == hp->n_attn_layers);
        lfm2_model_close(m);
    } else {
        FUZZ_CHECK(m == NULL && err[0] != 0);
        gguf_close(g);
    }
    return 0;
}
