/* test_mkmodel.c: synthetic models (layout, types, determinism, shapes) and the BPE trainer. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth/bpe_train.h"
#include "engine/gguf.h"
#include "synth/mkmodel.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "quant/quant.h"
#include "tests/check.h"

static char tmpdir[512];

static const char *tmp_path(const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/mkmodel-%s", tmpdir, name);
    return buf[k];
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool in_sorted(char **sorted, int n, const char *s) {
    return bsearch(&s, sorted, (size_t)n, sizeof *sorted, cmp_str) != NULL;
}

/* Every invariant of a trained vocab: size, layout, uniqueness, merges valid. */
static void check_vocab(const bpe_vocab *v, int n_vocab) {
    CHECK_EQ_INT(v->n_tokens, n_vocab);
    for (int i = 0; i < BPE_N_SPECIAL; i++) {
        CHECK_STR(v->tokens[i], bpe_special(i));
        CHECK_EQ_INT(v->types[i], 3);
    }
    /* byte tokens: GPT-2 order = increasing code point, every byte once */
    bool seen[256] = {0};
    char u[8];
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        bpe_bytes_to_unicode(&c, 1, u);
        int found = -1;
        for (int i = BPE_N_SPECIAL; i < BPE_N_BASE; i++)
            if (!strcmp(v->tokens[i], u)) found = i;
        CHECK(found >= 0);
        if (found >= 0) seen[found - BPE_N_SPECIAL] = true;
    }
    for (int i = 0; i < 256; i++)
        CHECK(seen[i]);
    CHECK_STR(v->tokens[BPE_N_SPECIAL], "!");
    CHECK_STR(v->tokens[BPE_N_BASE - 1], "\xc5\x83"); /* U+0143, byte 0xAD */
    for (int i = BPE_N_SPECIAL; i < n_vocab; i++)
        CHECK_EQ_INT(v->types[i], 1);
    char **sorted = malloc((size_t)n_vocab * sizeof *sorted);
    memcpy(sorted, v->tokens, (size_t)n_vocab * sizeof *sorted);
    qsort(sorted, (size_t)n_vocab, sizeof *sorted, cmp_str);
    int dups = 0;
    for (int i = 1; i < n_vocab; i++)
        dups += !strcmp(sorted[i - 1], sorted[i]);
    CHECK_EQ_INT(dups, 0);
    CHECK(v->n_merges >= n_vocab - BPE_N_BASE);
    CHECK(v->n_learned <= v->n_merges);
    int bad = 0;
    char **ms = malloc((size_t)(v->n_merges + 1) * sizeof *ms);
    for (int i = 0; i < v->n_merges; i++) {
        const char *m = v->merges[i], *sp = strchr(m, ' ');
        if (!sp || strchr(sp + 1, ' ')) {
            bad++;
            continue;
        }
        char left[1024], right[1024], both[2048];
        snprintf(left, sizeof left, "%.*s", (int)(sp - m), m);
        snprintf(right, sizeof right, "%s", sp + 1);
        snprintf(both, sizeof both, "%s%s", left, right);
        if (!in_sorted(sorted, n_vocab, left) || !in_sorted(sorted, n_vocab, right) ||
            !in_sorted(sorted, n_vocab, both))
            bad++;
        ms[i] = v->merges[i];
    }
    CHECK_EQ_INT(bad, 0);
    if (!bad) {
        qsort(ms, (size_t)v->n_merges, sizeof *ms, cmp_str);
        int mdups = 0;
        for (int i = 1; i < v->n_merges; i++)
            mdups += !strcmp(ms[i - 1], ms[i]);
        CHECK_EQ_INT(mdups, 0);
    }
    /* every non-base token is the result of some merge */
    int unreached = 0;
    char **res = malloc((size_t)(v->n_merges + 1) * sizeof *res);
    for (int i = 0; i < v->n_merges; i++) {
        res[i] = malloc(strlen(v->merges[i]) + 1);
        const char *sp = strchr(v->merges[i], ' ');
        size_t la = sp ? (size_t)(sp - v->merges[i]) : 0;
        memcpy(res[i], v->merges[i], la);
        strcpy(res[i] + la, sp ? sp + 1 : "");
    }
    qsort(res, (size_t)v->n_merges, sizeof *res, cmp_str);
    for (int i = BPE_N_BASE; i < n_vocab; i++)
        unreached += !in_sorted(res, v->n_merges, v->tokens[i]);
    CHECK_EQ_INT(unreached, 0);
    for (int i = 0; i < v->n_merges; i++)
        free(res[i]);
    free(res);
    free(ms);
    free(sorted);
}

static void test_trainer(void) {
    char err[256];
    size_t len;
    char *corpus = mkmodel_corpus(&len);
    CHECK(corpus != NULL && len > 20000);
    int sizes[] = {BPE_N_BASE, 300, 1024, 4096, 65536};
    bpe_vocab *prev = NULL;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        bpe_vocab *v = NULL;
        int rc = bpe_train(&v, corpus, len, sizes[k], err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        if (rc) {
            fprintf(stderr, "bpe_train(%d): %s\n", sizes[k], err);
            continue;
        }
        check_vocab(v, sizes[k]);
        if (sizes[k] == 4096) CHECK_EQ_INT(v->n_learned, v->n_merges); /* no fill needed */
        if (sizes[k] == 65536) CHECK(v->n_learned < v->n_merges);      /* corpus too small */
        /* greedy training: a smaller vocab's learned merges are a prefix of a larger one's */
        if (prev) {
            int same = 1;
            for (int i = 0; i < prev->n_learned && i < v->n_merges; i++)
                same &= !strcmp(prev->merges[i], v->merges[i]);
            CHECK(same);
        }
        bpe_vocab_free(prev);
        prev = v;
    }
    bpe_vocab_free(prev);
    /* the most frequent pair of English text with spaces comes early */
    bpe_vocab *v = NULL;
    CHECK_EQ_INT(bpe_train(&v, corpus, len, 300, err, sizeof err), 0);
    if (v) {
        int th = 0;
        for (int i = 0; i < v->n_merges; i++)
            th |= !strcmp(v->merges[i], "\xc4\xa0 t");
        CHECK(th); /* "Ġ t" */
    }
    bpe_vocab_free(v);
    free(corpus);

    /* tiny text: runs out of pairs at once; the fill still reaches the size with valid merges */
    const char tinytext[] = "aaa bbb aaa";
    v = NULL;
    CHECK_EQ_INT(bpe_train(&v, tinytext, strlen(tinytext), 2000, err, sizeof err), 0);
    if (v) {
        check_vocab(v, 2000);
        CHECK(v->n_learned < 10);
    }
    bpe_vocab_free(v);
    /* empty text and invalid UTF-8 are fine too */
    v = NULL;
    CHECK_EQ_INT(bpe_train(&v, "", 0, 400, err, sizeof err), 0);
    if (v) check_vocab(v, 400);
    bpe_vocab_free(v);
    const char badutf[] = "caf\xc3 \xff\xfe na\xefve \xe2\x82 ok ok ok \xf0\x9f\x98";
    v = NULL;
    CHECK_EQ_INT(bpe_train(&v, badutf, sizeof badutf - 1, 600, err, sizeof err), 0);
    if (v) check_vocab(v, 600);
    bpe_vocab_free(v);
    /* pieces: the LFM2 split, and a run of invalid bytes is one piece of its own */
    const char split[] = "Hello world  123\xff\xfe!";
    v = NULL;
    CHECK_EQ_INT(bpe_train(&v, split, sizeof split - 1, 300, err, sizeof err), 0);
    if (v) CHECK_EQ_INT(v->n_pieces, 6); /* Hello, " world", " " (twice), 123, ff fe, ! */
    bpe_vocab_free(v);
    /* sizes out of range */
    v = NULL;
    err[0] = 0;
    CHECK(bpe_train(&v, "x", 1, BPE_N_BASE - 1, err, sizeof err) < 0);
    CHECK(v == NULL);
    CHECK(strstr(err, "271") != NULL && strstr(err, "272") != NULL);
}

static mkmodel_opts opts_for(const char *preset, int ftype, uint64_t seed) {
    mkmodel_opts o = {0};
    char err[256];
    if (mkmodel_preset(preset, &o.shape, err, sizeof err) < 0) {
        fprintf(stderr, "preset %s: %s\n", preset, err);
        abort();
    }
    o.ftype = ftype;
    o.seed = seed;
    o.preset = preset;
    return o;
}

static int write_model(const mkmodel_opts *o, const char *path) {
    char err[512] = "";
    int rc = mkmodel_write(o, path, err, sizeof err);
    if (rc < 0) fprintf(stderr, "mkmodel_write %s: %s\n", path, err);
    return rc;
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *pa = check_slurp(a, &na), *pb = check_slurp(b, &nb);
    bool same = pa && pb && na == nb && !memcmp(pa, pb, na);
    free(pa);
    free(pb);
    return same;
}

/* Opens path as a model and as a tokenizer; checks the hyper-parameters against the shape. */
static void check_model(const char *path, const mkmodel_shape *s) {
    char err[512] = "";
    lfm2_model *m = NULL;
    int rc = lfm2_model_open(&m, path, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "lfm2_model_open %s: %s\n", path, err);
        return;
    }
    CHECK_EQ_INT(m->hp.n_embd, s->n_embd);
    CHECK_EQ_INT(m->hp.n_layer, s->n_layer);
    CHECK_EQ_INT(m->hp.n_head, s->n_head);
    CHECK_EQ_INT(m->hp.n_ff, s->n_ff);
    CHECK_EQ_INT(m->hp.n_vocab, s->n_vocab);
    CHECK_EQ_INT(m->hp.n_ctx_train, s->n_ctx);
    CHECK_EQ_INT(m->hp.n_swa, s->n_swa);
    CHECK_EQ_INT(m->hp.l_cache, 3);
    CHECK_NEAR(m->hp.eps, 1e-5, 1e-9);
    CHECK_NEAR(m->hp.rope_base, 1e6, 1e-3);
    for (int l = 0; l < s->n_layer; l++)
        CHECK_EQ_INT(m->hp.n_head_kv[l], s->attn[l] ? s->n_head_kv : 0);
    CHECK(m->output == m->tok_embd); /* tied */
    tok *t = NULL;
    rc = tok_new(&t, m->g, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "tok_new %s: %s\n", path, err);
    if (t) {
        CHECK_EQ_INT(tok_n_vocab(t), s->n_vocab);
        CHECK_EQ_INT(tok_bos(t), 1);
        CHECK_EQ_INT(tok_eos(t), 7);
        CHECK(tok_add_bos(t));
        CHECK_EQ_INT(tok_find(t, "<|im_end|>", 10), 7);
    }
    tok_free(t);
    lfm2_model_close(m);
}

/* Dequantized tensor statistics: mean and standard deviation. */
static void tensor_stats(const gguf *g, const char *name, double *mean, double *sd) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    *mean = *sd = NAN;
    if (!t) return;
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    float *f = malloc((size_t)n * sizeof *f);
    quant_traits(t->type)->to_float(t->data, f, n);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++)
        s += f[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        s2 += (f[i] - *mean) * (f[i] - *mean);
    *sd = sqrt(s2 / (double)n);
    free(f);
}

static void test_tiny_and_determinism(void) {
    mkmodel_opts o = opts_for("tiny", MK_F32, 1);
    const char *a = tmp_path("tiny-a.gguf"), *b = tmp_path("tiny-b.gguf"),
               *c = tmp_path("tiny-c.gguf");
    CHECK_EQ_INT(write_model(&o, a), 0);
    CHECK_EQ_INT(write_model(&o, b), 0);
    CHECK(same_file(a, b));
    o.seed = 2;
    CHECK_EQ_INT(write_model(&o, c), 0);
    CHECK(!same_file(a, c));
    size_t na, nc;
    unsigned char *pa = check_slurp(a, &na), *pc = check_slurp(c, &nc);
    CHECK_EQ_INT(na, nc); /* only the weights (and the name) differ */
    free(pa);
    free(pc);
    check_model(a, &o.shape);

    /* weight scales: projections ~ N(0, 1/fan_in), norms ~ 1, embedding rows of norm ~1 */
    char err[256];
    gguf *g = NULL;
    CHECK_EQ_INT(gguf_open(&g, a, err, sizeof err), 0);
    if (g) {
        double m, sd;
        tensor_stats(g, "blk.0.ffn_gate.weight", &m, &sd);
        CHECK_NEAR(m, 0, 0.01);
        CHECK_NEAR(sd, 1 / sqrt(128.0), 0.05 / sqrt(128.0));
        tensor_stats(g, "blk.0.ffn_down.weight", &m, &sd);
        CHECK_NEAR(sd, 1 / sqrt(256.0), 0.05 / sqrt(256.0));
        tensor_stats(g, "blk.1.attn_norm.weight", &m, &sd);
        CHECK_NEAR(m, 1, 0.05);
        CHECK(sd > 0.02 && sd < 0.2);
        tensor_stats(g, "token_embd.weight", &m, &sd);
        CHECK_NEAR(sd * sqrt(128.0), 1, 0.05);
        tensor_stats(g, "token_embd_norm.weight", &m, &sd);
        CHECK(m > 3 && m < 20); /* the output gain sits in the final norm */
        CHECK_EQ_INT(gguf_get_int(g, "general.file_type", -1, NULL), MK_F32);
        CHECK_STR(gguf_get_str(g, "general.name", NULL, NULL), "synthetic-lfm2-tiny-seed1");
        CHECK(gguf_find_key(g, "lfm2.attention.sliding_window") < 0);
        CHECK(gguf_find_tensor(g, "output.weight") == NULL);
        CHECK_STR(gguf_get_str(g, "tokenizer.chat_template", NULL, NULL), mkmodel_chat_template());
        gguf_close(g);
    }
}

/* The tokenizer built from a written model gives back the training text exactly. */
static void test_roundtrip(int n_vocab) {
    mkmodel_opts o = opts_for("tiny", MK_Q8_0, 3);
    o.shape.n_vocab = n_vocab;
    char name[64];
    snprintf(name, sizeof name, "rt-%d.gguf", n_vocab);
    const char *path = tmp_path(name);
    CHECK_EQ_INT(write_model(&o, path), 0);
    check_model(path, &o.shape);
    char err[256];
    gguf *g = NULL;
    tok *t = NULL;
    CHECK_EQ_INT(gguf_open(&g, path, err, sizeof err), 0);
    if (g) CHECK_EQ_INT(tok_new(&t, g, err, sizeof err), 0);
    size_t len;
    char *corpus = mkmodel_corpus(&len);
    if (t && corpus) {
        int cap = (int)len + 16;
        int32_t *ids = malloc((size_t)cap * sizeof *ids);
        int n = tok_encode(t, corpus, len, false, false, ids, cap);
        CHECK(n > 0 && n < cap);
        /* trained on this very text: it compresses, more with a bigger vocab */
        CHECK(n < (int)len / (n_vocab >= 4096 ? 3 : 2));
        for (int i = 0; i < n; i++)
            CHECK(ids[i] >= BPE_N_SPECIAL && ids[i] < n_vocab);
        char *back = malloc(len + 1);
        size_t m = tok_decode(t, ids, n, false, back, len + 1);
        CHECK_EQ_INT(m, len);
        CHECK(m == len && !memcmp(back, corpus, len));
        /* special-token text is one token only when asked */
        const char *sp = "<|im_start|>user\nhi<|im_end|>";
        int k = tok_encode(t, sp, strlen(sp), false, true, ids, cap);
        CHECK(k > 0 && ids[0] == 6 && ids[k - 1] == 7);
        free(back);
        free(ids);
    }
    free(corpus);
    tok_free(t);
    gguf_close(g);
}

/* Each type the reference files use: same tensor names, order, shapes and types as the files
 * llama.cpp's quantizer wrote (mini shape), and the same metadata keys in the same order. */
static void test_types_vs_reference(void) {
    static const struct {
        const char *ref;
        int ftype;
    } refs[] = {
        {"F16", MK_F16},       {"BF16", MK_BF16},     {"Q8_0", MK_Q8_0}, {"Q4_0", MK_Q4_0},
        {"Q4_K_M", MK_Q4_K_M}, {"Q5_K_M", MK_Q5_K_M}, {"Q6_K", MK_Q6_K},
    };
    for (size_t k = 0; k < sizeof refs / sizeof refs[0]; k++) {
        char refpath[256], err[256], name[64];
        snprintf(refpath, sizeof refpath, "tests/data/models/mini-%s.gguf", refs[k].ref);
        snprintf(name, sizeof name, "mini-%s.gguf", refs[k].ref);
        mkmodel_opts o = opts_for("mini", refs[k].ftype, 7);
        const char *path = tmp_path(name);
        CHECK_EQ_INT(write_model(&o, path), 0);
        gguf *r = NULL, *g = NULL;
        CHECK_EQ_INT(gguf_open(&r, refpath, err, sizeof err), 0);
        CHECK_EQ_INT(gguf_open(&g, path, err, sizeof err), 0);
        if (r && g) {
            CHECK_EQ_INT(gguf_n_kv(g), gguf_n_kv(r));
            for (int64_t i = 0; i < gguf_n_kv(r) && i < gguf_n_kv(g); i++) {
                CHECK_STR(gguf_kv_key(g, i), gguf_kv_key(r, i));
                CHECK_EQ_INT(gguf_kv_type(g, i), gguf_kv_type(r, i));
                if (gguf_kv_type(r, i) == GGUF_ARR)
                    CHECK_EQ_INT(gguf_arr_type(g, i), gguf_arr_type(r, i));
            }
            CHECK_EQ_INT(gguf_get_int(g, "general.file_type", -1, NULL),
                         gguf_get_int(r, "general.file_type", -2, NULL));
            CHECK_STR(gguf_get_str(g, "tokenizer.chat_template", NULL, NULL),
                      gguf_get_str(r, "tokenizer.chat_template", "", NULL));
            CHECK_EQ_INT(gguf_n_tensors(g), gguf_n_tensors(r));
            for (int64_t i = 0; i < gguf_n_tensors(r) && i < gguf_n_tensors(g); i++) {
                const gguf_tensor *a = gguf_tensor_at(g, i), *b = gguf_tensor_at(r, i);
                CHECK_STR(a->name, b->name);
                CHECK_EQ_INT(a->type, b->type);
                CHECK_EQ_INT(a->n_dims, b->n_dims);
                for (int d = 0; d < GGUF_MAX_DIMS; d++)
                    CHECK_EQ_INT(a->ne[d], b->ne[d]);
                CHECK_EQ_INT(a->nbytes, b->nbytes);
            }
            /* the reference's specials and byte tokens are ours too */
            int64_t ti = gguf_find_key(r, "tokenizer.ggml.tokens"),
                    tg = gguf_find_key(g, "tokenizer.ggml.tokens");
            for (uint64_t j = 0; j < BPE_N_BASE; j++) {
                size_t la, lb;
                const char *sa = gguf_arr_str(g, tg, j, &la), *sb = gguf_arr_str(r, ti, j, &lb);
                CHECK(la == lb && !memcmp(sa, sb, la));
            }
        }
        if (g) check_model(path, &o.shape);
        gguf_close(r);
        gguf_close(g);
    }
}

/* Every type on the tiny shape (rows of 128 and 256): llama.cpp's mix and fallbacks. */
static void test_every_type_tiny(void) {
    static const struct {
        int ftype;
        uint32_t embd, up0, down1, down2; /* token_embd (row 128), blk.0.ffn_up (128), */
    } want[] = {
        /* blk.1/blk.2.ffn_down (256) */
        {MK_F32, QT_F32, QT_F32, QT_F32, QT_F32},
        {MK_F16, QT_F16, QT_F16, QT_F16, QT_F16},
        {MK_BF16, QT_BF16, QT_BF16, QT_BF16, QT_BF16},
        {MK_Q8_0, QT_Q8_0, QT_Q8_0, QT_Q8_0, QT_Q8_0},
        {MK_Q4_0, QT_Q8_0, QT_Q4_0, QT_Q4_0, QT_Q4_0},
        {MK_Q4_K_M, QT_Q8_0, QT_Q5_0, QT_Q4_K, QT_Q6_K},
        {MK_Q5_K_M, QT_Q8_0, QT_Q5_1, QT_Q5_K, QT_Q6_K},
        {MK_Q6_K, QT_Q8_0, QT_Q8_0, QT_Q6_K, QT_Q6_K},
    };
    char err[256];
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        mkmodel_opts o = opts_for("tiny", want[k].ftype, 5);
        char name[64];
        snprintf(name, sizeof name, "tiny-%s.gguf", mkmodel_ftype_name(want[k].ftype));
        const char *path = tmp_path(name);
        CHECK_EQ_INT(write_model(&o, path), 0);
        check_model(path, &o.shape);
        CHECK_EQ_INT(mkmodel_ftype_from_name(mkmodel_ftype_name(want[k].ftype)), want[k].ftype);
        gguf *g = NULL;
        CHECK_EQ_INT(gguf_open(&g, path, err, sizeof err), 0);
        if (!g) continue;
        const gguf_tensor *t;
        CHECK((t = gguf_find_tensor(g, "token_embd.weight")) && t->type == want[k].embd);
        CHECK((t = gguf_find_tensor(g, "blk.0.ffn_up.weight")) && t->type == want[k].up0);
        CHECK((t = gguf_find_tensor(g, "blk.1.ffn_down.weight")) && t->type == want[k].down1);
        CHECK((t = gguf_find_tensor(g, "blk.2.ffn_down.weight")) && t->type == want[k].down2);
        CHECK((t = gguf_find_tensor(g, "blk.0.shortconv.conv.weight")) && t->type == QT_F32);
        CHECK((t = gguf_find_tensor(g, "blk.1.attn_q_norm.weight")) && t->type == QT_F32);
        CHECK((t = gguf_find_tensor(g, "token_embd_norm.weight")) && t->type == QT_F32);
        CHECK_EQ_INT(gguf_get_int(g, "general.file_type", -1, NULL), want[k].ftype);
        gguf_close(g);
    }
    CHECK_EQ_INT(mkmodel_ftype_from_name("Q4_K_M"), MK_Q4_K_M);
    CHECK_EQ_INT(mkmodel_ftype_from_name("q3_k"), -1);
    CHECK(mkmodel_ftype_name(3) == NULL);
}

static void test_swa_shapes_vocab_from(void) {
    char err[512];
    /* --swa */
    mkmodel_opts o = opts_for("tiny", MK_F16, 1);
    o.shape.n_swa = 16;
    const char *p = tmp_path("swa.gguf");
    CHECK_EQ_INT(write_model(&o, p), 0);
    check_model(p, &o.shape);
    gguf *g = NULL;
    CHECK_EQ_INT(gguf_open(&g, p, err, sizeof err), 0);
    if (g) CHECK_EQ_INT(gguf_get_int(g, "lfm2.attention.sliding_window", -1, NULL), 16);
    gguf_close(g);

    /* shape overrides */
    o = opts_for("tiny", MK_Q4_0, 9);
    o.shape.n_embd = 64;
    o.shape.n_layer = 3;
    o.shape.n_head = 2;
    o.shape.n_head_kv = 1;
    o.shape.n_ff = 96;
    o.shape.n_ctx = 4096;
    o.shape.n_vocab = 500;
    memset(o.shape.attn, 0, sizeof o.shape.attn);
    o.shape.attn[0] = o.shape.attn[2] = true;
    o.name = "custom-shape";
    p = tmp_path("shape.gguf");
    CHECK_EQ_INT(write_model(&o, p), 0);
    check_model(p, &o.shape);
    g = NULL;
    CHECK_EQ_INT(gguf_open(&g, p, err, sizeof err), 0);
    if (g) {
        CHECK_STR(gguf_get_str(g, "general.name", NULL, NULL), "custom-shape");
        const gguf_tensor *t = gguf_find_tensor(g, "blk.2.attn_k.weight");
        CHECK(t && t->ne[0] == 64 && t->ne[1] == 32);
        CHECK(gguf_find_tensor(g, "blk.1.shortconv.in_proj.weight") != NULL);
        CHECK(gguf_find_tensor(g, "blk.0.shortconv.in_proj.weight") == NULL);
        t = gguf_find_tensor(g, "blk.1.ffn_down.weight"); /* row of 96: Q4_0 blocks of 32 */
        CHECK(t && t->type == QT_Q4_0);
    }
    gguf_close(g);

    /* every preset has the documented shape (no file written for the big ones) */
    mkmodel_shape s;
    CHECK_EQ_INT(mkmodel_preset("350m", &s, err, sizeof err), 0);
    CHECK(s.n_embd == 1024 && s.n_layer == 16 && s.n_head == 16 && s.n_head_kv == 8 &&
          s.n_ff == 4608 && s.n_vocab == 65536);
    CHECK(s.attn[2] && s.attn[5] && s.attn[8] && s.attn[10] && s.attn[12] && s.attn[14] &&
          !s.attn[0] && !s.attn[15]);
    CHECK_EQ_INT(mkmodel_preset("700m", &s, err, sizeof err), 0);
    CHECK(s.n_embd == 1536 && s.n_head == 24 && s.n_ff == 6912);
    CHECK_EQ_INT(mkmodel_preset("1.2b", &s, err, sizeof err), 0);
    CHECK(s.n_embd == 2048 && s.n_head == 32 && s.n_ff == 8192);
    CHECK_EQ_INT(mkmodel_preset("2.6b", &s, err, sizeof err), 0);
    int na = 0;
    for (int i = 0; i < s.n_layer; i++)
        na += s.attn[i];
    CHECK(s.n_layer == 30 && s.n_ff == 10752 && na == 8);
    CHECK_EQ_INT(mkmodel_check_shape(&s, err, sizeof err), 0);
    CHECK(mkmodel_preset("3b", &s, err, sizeof err) < 0);
    CHECK(strstr(err, "3b") != NULL);

    /* bad shapes name the field */
    o = opts_for("tiny", MK_F16, 1);
    o.shape.n_head = 3;
    CHECK(mkmodel_write(&o, tmp_path("bad.gguf"), err, sizeof err) < 0);
    CHECK(strstr(err, "n_head") != NULL);
    o = opts_for("tiny", MK_F16, 1);
    o.shape.n_head_kv = 3;
    CHECK(mkmodel_write(&o, tmp_path("bad.gguf"), err, sizeof err) < 0);
    CHECK(strstr(err, "n_head_kv") != NULL);
    o = opts_for("tiny", MK_F16, 1);
    o.shape.n_vocab = 100;
    CHECK(mkmodel_write(&o, tmp_path("bad.gguf"), err, sizeof err) < 0);
    CHECK(strstr(err, "n_vocab") != NULL);

    /* --vocab-from: the reference tokenizer, copied key for key */
    o = opts_for("tiny", MK_F16, 1);
    o.vocab_from = "tests/data/models/mini-F16.gguf";
    p = tmp_path("vf.gguf");
    CHECK_EQ_INT(write_model(&o, p), 0);
    mkmodel_shape want = o.shape;
    want.n_vocab = 4096;
    check_model(p, &want);
    gguf *r = NULL;
    g = NULL;
    CHECK_EQ_INT(gguf_open(&g, p, err, sizeof err), 0);
    CHECK_EQ_INT(gguf_open(&r, o.vocab_from, err, sizeof err), 0);
    if (g && r) {
        int64_t a = gguf_find_key(g, "tokenizer.ggml.merges"),
                b = gguf_find_key(r, "tokenizer.ggml.merges");
        CHECK(a >= 0 && b >= 0 && gguf_arr_len(g, a) == gguf_arr_len(r, b));
        size_t la, lb;
        const char *sa = gguf_arr_str(g, a, 100, &la), *sb = gguf_arr_str(r, b, 100, &lb);
        CHECK(la == lb && !memcmp(sa, sb, la));
        const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
        CHECK(t && t->ne[1] == 4096);
    }
    gguf_close(g);
    gguf_close(r);
    o.vocab_from = "tests/data/models/no-such-file.gguf";
    CHECK(mkmodel_write(&o, tmp_path("vf2.gguf"), err, sizeof err) < 0);
    CHECK(strstr(err, "no-such-file") != NULL);
}

/* --chat-template writes each family's text (also over a copied vocab's); --logit-scale scales
 * the output norm and nothing else. */
static void test_chat_template_and_logit_scale(void) {
    char err[512];
    static const char *const fams[] = {"lfm2", "lfm2.5", "lfm2.5-dated"};
    for (int i = 0; i < 3; i++) {
        mkmodel_opts o = opts_for("tiny", MK_F32, 1);
        o.chat_template = fams[i];
        if (i == 2) o.vocab_from = tmp_path("tpl-0.gguf"); /* written in the first round */
        char name[32];
        snprintf(name, sizeof name, "tpl-%d.gguf", i);
        const char *p = tmp_path(name);
        CHECK_EQ_INT(write_model(&o, p), 0);
        gguf *g = NULL;
        CHECK_EQ_INT(gguf_open(&g, p, err, sizeof err), 0);
        if (g)
            CHECK_STR(gguf_get_str(g, "tokenizer.chat_template", NULL, NULL),
                      mkmodel_chat_template_named(fams[i]));
        gguf_close(g);
    }
    mkmodel_opts o = opts_for("tiny", MK_F32, 1);
    o.chat_template = "chatml";
    CHECK(mkmodel_write(&o, tmp_path("tpl-bad.gguf"), err, sizeof err) < 0);
    CHECK(strstr(err, "chatml") != NULL);

    /* the output norm is the default's times the scale; other weights are the same */
    o = opts_for("tiny", MK_F32, 1);
    CHECK_EQ_INT(write_model(&o, tmp_path("ls-1.gguf")), 0);
    o.logit_scale = 0.25;
    CHECK_EQ_INT(write_model(&o, tmp_path("ls-q.gguf")), 0);
    gguf *a = NULL, *b = NULL;
    CHECK_EQ_INT(gguf_open(&a, tmp_path("ls-1.gguf"), err, sizeof err), 0);
    CHECK_EQ_INT(gguf_open(&b, tmp_path("ls-q.gguf"), err, sizeof err), 0);
    if (a && b) {
        const gguf_tensor *na = gguf_find_tensor(a, "token_embd_norm.weight"),
                          *nb = gguf_find_tensor(b, "token_embd_norm.weight");
        CHECK(na && nb);
        if (na && nb) {
            const float *fa = na->data, *fb = nb->data;
            for (int i = 0; i < 8; i++)
                CHECK_NEAR(fb[i], fa[i] * 0.25f, 1e-6 * fabsf(fa[i]) + 1e-9);
        }
        const gguf_tensor *ea = gguf_find_tensor(a, "token_embd.weight"),
                          *eb = gguf_find_tensor(b, "token_embd.weight");
        CHECK(ea && eb && !memcmp(ea->data, eb->data, 64));
    }
    gguf_close(a);
    gguf_close(b);
}

int main(void) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s", t && *t ? t : "/tmp");
    test_trainer();
    test_tiny_and_determinism();
    test_every_type_tiny();
    test_types_vs_reference();
    test_swa_shapes_vocab_from();
    test_chat_template_and_logit_scale();
    test_roundtrip(1024);
    test_roundtrip(65536);
    return check_done("test_mkmodel");
}
