/* test_quant.c: weight formats against ggml's own goldens, plus round trips and edge cases. */
#include "engine/gguf.h"
#include "quant/quant.h"
#include "tests/check.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>

#define GOLDEN_DIR "tests/data/quant/"

static uint64_t rng = 12345;
static uint32_t rnd(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}
static float urand(void) {
    return (rnd() >> 8) * (1.0f / 16777216.0f);
}
static float gauss(void) {
    float u = urand() + 1e-7f, v = urand();
    return sqrtf(-2 * logf(u)) * cosf(6.2831853f * v);
}

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A golden file: "QGLD", kind, type, count, payload (see tests/oracle/gen_quant_golden.c). */
typedef struct golden {
    uint8_t *buf;
    size_t size;
    uint32_t kind, type, count;
    const uint8_t *payload;
} golden;

static int golden_load(golden *g, const char *name, uint32_t kind) {
    char path[512];
    snprintf(path, sizeof path, GOLDEN_DIR "%s", name);
    memset(g, 0, sizeof *g);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (run from the repo root)\n", path);
        check_failures++;
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    g->buf = malloc((size_t)sz);
    g->size = (size_t)sz;
    if (!g->buf || fread(g->buf, 1, g->size, f) != g->size || sz < 16 ||
        memcmp(g->buf, "QGLD", 4)) {
        fprintf(stderr, "%s: bad golden file\n", path);
        check_failures++;
        fclose(f);
        free(g->buf);
        g->buf = NULL;
        return -1;
    }
    fclose(f);
    memcpy(&g->kind, g->buf + 4, 4);
    memcpy(&g->type, g->buf + 8, 4);
    memcpy(&g->count, g->buf + 12, 4);
    g->payload = g->buf + 16;
    CHECK_EQ_INT(g->kind, kind);
    return 0;
}

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Counts bitwise mismatches between two float arrays, printing the first few. */
static int64_t count_float_mismatch(const char *what, const float *a, const float *b, int64_t n) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fbits(a[i]) != fbits(b[i])) {
            if (bad < 3)
                fprintf(stderr, "%s[%lld]: ours %.9g (0x%08x) ggml %.9g (0x%08x)\n", what,
                        (long long)i, a[i], fbits(a[i]), b[i], fbits(b[i]));
            bad++;
        }
    }
    return bad;
}

static const char *deq_names[] = {"f16",  "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0",
                                  "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K"};

/* Our to_float equals ggml's to_float bit for bit, for random-but-valid blocks of each type. */
static void test_dequant_golden(void) {
    for (size_t k = 0; k < sizeof deq_names / sizeof *deq_names; k++) {
        char fname[64];
        snprintf(fname, sizeof fname, "deq_%s.bin", deq_names[k]);
        golden g;
        if (golden_load(&g, fname, 1)) continue;
        const qtype_traits *t = quant_traits(g.type);
        CHECK(t != NULL);
        if (!t) goto next;
        CHECK_STR(t->name, deq_names[k]);
        uint32_t bs = rd32(g.payload), ts = rd32(g.payload + 4);
        CHECK_EQ_INT(t->block_size, bs);
        CHECK_EQ_INT(t->type_size, ts);
        int64_t n = (int64_t)g.count * bs;
        size_t nb = (size_t)g.count * ts;
        CHECK(16 + 8 + nb + (size_t)n * 4 == g.size);
        if (16 + 8 + nb + (size_t)n * 4 != g.size) goto next;
        const uint8_t *raw = g.payload + 8;
        float *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        memcpy(want, raw + nb, (size_t)n * 4);
        /* whole buffer, through the table */
        memset(got, 0xAB, (size_t)n * 4);
        t->to_float(raw, got, n);
        int64_t bad = count_float_mismatch(deq_names[k], got, want, n);
        CHECK_EQ_INT(bad, 0);
        /* rows of one block at an odd address, through quant_dequantize_rows */
        uint8_t *odd = malloc(nb + 1);
        memcpy(odd + 1, raw, nb);
        memset(got, 0xAB, (size_t)n * 4);
        CHECK_EQ_INT(quant_dequantize_rows(g.type, odd + 1, got, g.count, bs), 0);
        CHECK_EQ_INT(count_float_mismatch(deq_names[k], got, want, n), 0);
        free(odd);
        free(want);
        free(got);
    next:
        free(g.buf);
    }
}

/* Sum of squared errors of decoding q (of type) against x, per stretch of `stretch` weights. */
static double sq_err(const qtype_traits *t, const void *q, const float *x, int64_t n) {
    float *y = malloc((size_t)n * 4);
    t->to_float(q, y, n);
    double e = 0;
    for (int64_t i = 0; i < n; i++)
        e += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
    free(y);
    return e;
}

static const char *qnt_names[] = {"f16",  "bf16", "q4_0", "q4_1", "q5_0", "q5_1",
                                  "q8_0", "q4_K", "q5_K", "q6_K", "q8_K"};

/* Quantizers: byte-equal to ggml's reference for the simple types; for the K-quants (searching
 * quantizers) an encoding whose error per 256-weight stretch is close to ggml's and in total no
 * worse than 2% above it, and (today) byte-equal as well. */
static void test_quant_golden(void) {
    for (size_t k = 0; k < sizeof qnt_names / sizeof *qnt_names; k++) {
        char fname[64];
        snprintf(fname, sizeof fname, "qnt_%s.bin", qnt_names[k]);
        golden g;
        if (golden_load(&g, fname, 2)) continue;
        const qtype_traits *t = quant_traits(g.type);
        CHECK(t && t->from_float);
        if (!t || !t->from_float) {
            free(g.buf);
            continue;
        }
        int64_t n = g.count;
        size_t nb = rd32(g.payload);
        CHECK_EQ_INT(nb, quant_row_size(g.type, n));
        CHECK(16 + 4 + (size_t)n * 4 + nb == g.size);
        if (16 + 4 + (size_t)n * 4 + nb != g.size || nb != quant_row_size(g.type, n)) {
            free(g.buf);
            continue;
        }
        float *x = malloc((size_t)n * 4);
        memcpy(x, g.payload + 4, (size_t)n * 4);
        const uint8_t *want = g.payload + 4 + n * 4;
        uint8_t *got = malloc(nb);
        memset(got, 0xCD, nb);
        t->from_float(x, got, n);
        bool kquant = t->block_size == QK_K && g.type != QT_Q8_K;
        if (!kquant) {
            size_t first = nb;
            for (size_t i = 0; i < nb; i++)
                if (got[i] != want[i]) {
                    first = i;
                    break;
                }
            if (first != nb)
                fprintf(stderr, "%s: first differing byte %zu (block %zu): ours %02x ggml %02x\n",
                        qnt_names[k], first, first / t->type_size, got[first], want[first]);
            CHECK(first == nb);
        } else {
            double tot_ours = 0, tot_ggml = 0;
            int64_t bad = 0;
            for (int64_t s = 0; s < n; s += QK_K) {
                size_t off = (size_t)(s / QK_K) * t->type_size;
                double eo = sq_err(t, got + off, x + s, QK_K),
                       eg = sq_err(t, want + off, x + s, QK_K);
                tot_ours += eo;
                tot_ggml += eg;
                /* per stretch: at most 15% worse, or negligibly small either way */
                if (eo > eg * 1.15 + 1e-12) {
                    if (bad < 3)
                        fprintf(stderr, "%s stretch %lld (kind %lld): err ours %.6g ggml %.6g\n",
                                qnt_names[k], (long long)(s / QK_K), (long long)((s / QK_K) % 8),
                                eo, eg);
                    bad++;
                }
            }
            int64_t same = 0;
            for (size_t off = 0; off < nb; off += t->type_size)
                same += memcmp(got + off, want + off, t->type_size) == 0;
            printf("%s: total squared error ours %.6g, ggml %.6g (ratio %.4f); %lld of %lld blocks "
                   "byte-equal\n",
                   qnt_names[k], tot_ours, tot_ggml, tot_ours / tot_ggml, (long long)same,
                   (long long)(n / QK_K));
            CHECK_EQ_INT(bad, 0);
            CHECK(tot_ours <= tot_ggml * 1.02);
            /* stronger than the format needs: our search does ggml's arithmetic in ggml's order, so
             * the bytes agree too; a change that breaks this should be deliberate */
            CHECK_EQ_INT(same, n / QK_K);
        }
        free(x);
        free(got);
        free(g.buf);
    }
}

/* f32 -> f16/bf16 for edge and random floats, and f16 -> f32 for all halves, equal ggml's. */
static void test_conv_golden(void) {
    golden g;
    if (golden_load(&g, "conv.bin", 3)) return;
    uint32_t n = g.count;
    CHECK(16 + (size_t)n * 8 + 65536 * 4 == g.size);
    if (16 + (size_t)n * 8 + 65536 * 4 != g.size) {
        free(g.buf);
        return;
    }
    const uint8_t *in = g.payload, *out = g.payload + (size_t)n * 4, *tab = out + (size_t)n * 4;
    int bad_h = 0, bad_b = 0, bad_f = 0;
    for (uint32_t i = 0; i < n; i++) {
        float v = bitsf(rd32(in + 4 * i));
        uint16_t wh, wb;
        memcpy(&wh, out + 4 * i, 2);
        memcpy(&wb, out + 4 * i + 2, 2);
        uint16_t h = quant_f32_to_f16(v), b = quant_f32_to_bf16(v);
        if (h != wh && bad_h++ < 3)
            fprintf(stderr, "f32->f16 0x%08x: ours %04x ggml %04x\n", fbits(v), h, wh);
        if (b != wb && bad_b++ < 3)
            fprintf(stderr, "f32->bf16 0x%08x: ours %04x ggml %04x\n", fbits(v), b, wb);
    }
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t want = rd32(tab + 4 * h), got = fbits(quant_f16_to_f32((uint16_t)h));
        if (want != got && bad_f++ < 3)
            fprintf(stderr, "f16->f32 %04x: ours %08x ggml %08x\n", h, got, want);
    }
    CHECK_EQ_INT(bad_h, 0);
    CHECK_EQ_INT(bad_b, 0);
    CHECK_EQ_INT(bad_f, 0);
    free(g.buf);
}

/* Conversion properties that hold regardless of the goldens. */
static void test_conv_props(void) {
    /* every non-nan half and bfloat round-trips; nan stays nan */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = quant_f16_to_f32((uint16_t)h), b = quant_bf16_to_f32((uint16_t)h);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            bad += !isnan(f) || (quant_f32_to_f16(f) & 0x7c00) != 0x7c00 ||
                   !(quant_f32_to_f16(f) & 0x3ff);
        } else {
            bad += quant_f32_to_f16(f) != h;
        }
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
            bad += !isnan(b) || !isnan(quant_bf16_to_f32(quant_f32_to_bf16(b)));
        else
            bad += quant_f32_to_bf16(b) != h;
    }
    CHECK_EQ_INT(bad, 0);
    /* named values */
    CHECK_EQ_INT(quant_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(quant_f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ_INT(quant_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(quant_f32_to_f16(65519.99f), 0x7bff);
    CHECK_EQ_INT(quant_f32_to_f16(65520.0f), 0x7c00);
    CHECK_EQ_INT(quant_f32_to_f16(-INFINITY), 0xfc00);
    CHECK((quant_f32_to_f16(NAN) & 0x7fff) > 0x7c00);
    CHECK_EQ_INT(quant_f32_to_f16(0x1p-24f), 0x0001);        /* smallest subnormal */
    CHECK_EQ_INT(quant_f32_to_f16(0x1p-25f), 0x0000);        /* tie: to even (0) */
    CHECK_EQ_INT(quant_f32_to_f16(0x1.8p-24f), 0x0002);      /* tie 1.5 ulp: to even (2) */
    CHECK_EQ_INT(quant_f32_to_f16(0x1.000002p-25f), 0x0001); /* just above the tie */
    CHECK_EQ_INT(quant_f32_to_f16(-0x1p-14f), 0x8400);       /* smallest normal */
    CHECK_EQ_INT(quant_f32_to_f16(0x1.ff8p-15f), 0x03ff);    /* largest subnormal */
    CHECK_EQ_INT(quant_f32_to_f16(0x1.ffcp-15f), 0x0400);    /* tie rounds up out of subnormals */
    CHECK_EQ_INT(quant_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie to even (down) */
    CHECK_EQ_INT(quant_f32_to_f16(1.0f + 0x3p-11f), 0x3c02); /* tie to even (up) */
    CHECK_EQ_INT(quant_f32_to_f16(1e-30f), 0x0000);
    CHECK_NEAR(quant_f16_to_f32(0x0001), 0x1p-24, 0);
    CHECK_NEAR(quant_f16_to_f32(0x3555), 0.333251953125, 0);
    CHECK(isinf(quant_f16_to_f32(0x7c00)) && quant_f16_to_f32(0xfc00) < 0);
    CHECK(signbit(quant_f16_to_f32(0x8000)) && quant_f16_to_f32(0x8000) == 0.0f);
    CHECK_EQ_INT(quant_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(quant_f32_to_bf16(bitsf(0x3f808000)), 0x3f80); /* tie to even (down) */
    CHECK_EQ_INT(quant_f32_to_bf16(bitsf(0x3f818000)), 0x3f82); /* tie to even (up) */
    CHECK_EQ_INT(quant_f32_to_bf16(bitsf(0x3f808001)), 0x3f81);
    CHECK_EQ_INT(quant_f32_to_bf16(bitsf(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
    CHECK_EQ_INT(quant_f32_to_bf16(bitsf(0x00000001)), 0x0000); /* f32 subnormal */
    CHECK_EQ_INT(quant_f32_to_bf16(bitsf(0x00018000)), 0x0002); /* subnormal tie to even (up) */
    CHECK_EQ_INT(quant_f32_to_bf16(bitsf(0x7f800001)) & 0x7fc0, 0x7fc0); /* snan -> quiet nan */
    /* random floats: f16 result is the nearest half (ties to even) */
    int nbad = 0;
    for (int i = 0; i < 200000; i++) {
        float v = bitsf((rnd() & 0x807fffff) | ((uint32_t)(100 + rnd() % 42) << 23)); /* < 2^15 */
        uint16_t h = quant_f32_to_f16(v);
        double d = fabs((double)quant_f16_to_f32(h) - v);
        /* neighbours one step away must not be closer */
        uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
        double du = (h & 0x7fff) < 0x7bff ? fabs((double)quant_f16_to_f32(up) - v) : INFINITY;
        double dd = (h & 0x7fff) > 0 ? fabs((double)quant_f16_to_f32(dn) - v) : INFINITY;
        if (du < d || dd < d || ((du == d || dd == d) && (h & 1))) nbad++;
    }
    CHECK_EQ_INT(nbad, 0);
}

static void test_names_sizes(void) {
    CHECK_EQ_INT(quant_type_from_name("q4_0"), QT_Q4_0);
    CHECK_EQ_INT(quant_type_from_name("Q8_0"), QT_Q8_0);
    CHECK_EQ_INT(quant_type_from_name("F16"), QT_F16);
    CHECK_EQ_INT(quant_type_from_name("bf16"), QT_BF16);
    CHECK_EQ_INT(quant_type_from_name("f32"), QT_F32);
    CHECK_EQ_INT(quant_type_from_name("q4_K"), QT_Q4_K);
    CHECK_EQ_INT(quant_type_from_name("Q6_K"), QT_Q6_K);
    CHECK_EQ_INT(quant_type_from_name("q5_k"), QT_Q5_K);
    CHECK_EQ_INT(quant_type_from_name("q4_k_m"), -1);
    CHECK_EQ_INT(quant_type_from_name("q4"), -1);
    CHECK_EQ_INT(quant_type_from_name(""), -1);
    CHECK_EQ_INT(quant_type_from_name(NULL), -1);
    CHECK(quant_traits(4) == NULL); /* q4_2, removed from ggml */
    CHECK(quant_traits(QT_Q8_1) == NULL);
    CHECK(quant_traits(29) == NULL);
    CHECK(quant_traits(QT_COUNT) == NULL);
    CHECK(quant_traits(0xffffffffu) == NULL);
    for (int i = 0; i < QT_COUNT; i++) {
        const qtype_traits *t = quant_traits((uint32_t)i);
        if (!t) continue;
        CHECK_EQ_INT(quant_type_from_name(t->name), i);
        CHECK(t->to_float != NULL);
    }
    CHECK_EQ_INT(quant_row_size(QT_F32, 5), 20);
    CHECK_EQ_INT(quant_row_size(QT_F16, 7), 14);
    CHECK_EQ_INT(quant_row_size(QT_BF16, 3), 6);
    CHECK_EQ_INT(quant_row_size(QT_Q4_0, 64), 36);
    CHECK_EQ_INT(quant_row_size(QT_Q4_0, 33), 0);
    CHECK_EQ_INT(quant_row_size(QT_Q4_1, 96), 60);
    CHECK_EQ_INT(quant_row_size(QT_Q5_0, 32), 22);
    CHECK_EQ_INT(quant_row_size(QT_Q5_1, 32), 24);
    CHECK_EQ_INT(quant_row_size(QT_Q8_0, 2048), 2176);
    CHECK_EQ_INT(quant_row_size(QT_Q4_K, 512), 288);
    CHECK_EQ_INT(quant_row_size(QT_Q5_K, 256), 176);
    CHECK_EQ_INT(quant_row_size(QT_Q6_K, 2560), 2100);
    CHECK_EQ_INT(quant_row_size(QT_Q6_K, 2048 + 32), 0);
    CHECK_EQ_INT(quant_row_size(QT_Q8_0, 0), 0);
    CHECK_EQ_INT(quant_row_size(QT_Q8_0, -32), 0);
    CHECK_EQ_INT(quant_row_size(99, 32), 0);
    CHECK_EQ_INT(quant_row_size(QT_F32, INT64_MAX), 0); /* overflows size_t */
    float y[32];
    uint8_t q[64] = {0};
    CHECK_EQ_INT(quant_dequantize_rows(QT_Q8_1, q, y, 1, 32), QUANT_EUNSUPPORTED);
    CHECK_EQ_INT(quant_dequantize_rows(QT_Q8_0, q, y, 1, 31), QUANT_EROWLEN);
    CHECK_EQ_INT(quant_dequantize_rows(QT_Q8_0, q, y, 1, 0), QUANT_EROWLEN);
    CHECK_EQ_INT(quant_quantize_rows(QT_Q2_K, y, q, 0, 256), QUANT_EUNSUPPORTED);
    CHECK_EQ_INT(quant_quantize_rows(QT_Q4_0, y, q, 1, 48), QUANT_EROWLEN);
}

static const uint32_t writable[] = {QT_F32,  QT_F16,  QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q5_0,
                                    QT_Q5_1, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K, QT_Q8_K};

/* Relative RMS error bound of a round trip on gaussian weights, per type: about 1.25x the worst
 * seen over the test's trials (4-bit ~0.08, 5-bit ~0.04, 6-bit ~0.018, 8-bit ~0.006). */
static double rel_bound(uint32_t type) {
    switch (type) {
    case QT_F32:
        return 0;
    case QT_F16:
        return 3e-4;
    case QT_BF16:
        return 2.5e-3;
    case QT_Q4_0:
    case QT_Q4_1:
        return 0.1;
    case QT_Q4_K:
        return 0.09;
    case QT_Q5_0:
    case QT_Q5_1:
        return 0.055;
    case QT_Q5_K:
        return 0.046;
    case QT_Q6_K:
        return 0.023;
    case QT_Q8_0:
        return 0.007;
    case QT_Q8_K:
        return 0.009;
    default:
        return 0;
    }
}

/* Round trips: awkward row counts and lengths, odd addresses, rows == whole buffer, error bounds,
 * re-quantizing a decoded row is (nearly) lossless, special blocks decode sanely. */
static void test_round_trips(void) {
    for (size_t k = 0; k < sizeof writable / sizeof *writable; k++) {
        uint32_t type = writable[k];
        const qtype_traits *t = quant_traits(type);
        CHECK(t && t->from_float);
        if (!t || !t->from_float) continue;
        for (int trial = 0; trial < 6; trial++) {
            int64_t nblk = 1 + rnd() % 7, row_len = nblk * t->block_size;
            if (t->block_size == 1)
                row_len = 1 + rnd() % 301; /* awkward lengths for plain floats */
            int64_t n_rows = 1 + rnd() % 5, n = row_len * n_rows;
            size_t rs = quant_row_size(type, row_len), nb = rs * (size_t)n_rows;
            CHECK(rs > 0);
            float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4),
                  *y2 = malloc((size_t)n * 4);
            uint8_t *qa = malloc(nb + 3), *q = qa + 3; /* deliberately misaligned */
            uint8_t *qb = malloc(nb);
            float scale = 0.001f + urand() * 3;
            for (int64_t i = 0; i < n; i++)
                x[i] = gauss() * scale;
            CHECK_EQ_INT(quant_quantize_rows(type, x, q, n_rows, row_len), 0);
            CHECK_EQ_INT(quant_dequantize_rows(type, q, y, n_rows, row_len), 0);
            /* rows are independent: one big call over blocks equals the row-wise calls */
            if (t->block_size > 1) {
                t->from_float(x, qb, n);
                CHECK(memcmp(qb, q, nb) == 0);
                t->to_float(qb, y2, n);
                CHECK(memcmp(y, y2, (size_t)n * 4) == 0);
            }
            double e2 = 0, x2 = 0;
            for (int64_t i = 0; i < n; i++) {
                e2 += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                x2 += (double)x[i] * x[i];
            }
            double rel = sqrt(e2 / x2);
            if (!(rel <= rel_bound(type)))
                fprintf(stderr, "%s: relative rms error %.5f > %.5f (rows %lld x %lld)\n", t->name,
                        rel, rel_bound(type), (long long)n_rows, (long long)row_len);
            CHECK(rel <= rel_bound(type));
            if (getenv("QUANT_VERBOSE")) printf("%s rel %.5f\n", t->name, rel);
            /* a decoded row is on the grid: quantizing it again loses (almost) nothing */
            CHECK_EQ_INT(quant_quantize_rows(type, y, qb, n_rows, row_len), 0);
            CHECK_EQ_INT(quant_dequantize_rows(type, qb, y2, n_rows, row_len), 0);
            double r2 = 0;
            for (int64_t i = 0; i < n; i++)
                r2 += ((double)y2[i] - y[i]) * ((double)y2[i] - y[i]);
            if (!(sqrt(r2 / x2) <= rel_bound(type) * 0.5))
                fprintf(stderr, "%s: requantize error %.5f\n", t->name, sqrt(r2 / x2));
            CHECK(sqrt(r2 / x2) <= rel_bound(type) * 0.5);
            free(x);
            free(y);
            free(y2);
            free(qa);
            free(qb);
        }
    }
}

/* Special blocks: zeros decode to zeros, a constant block to (nearly) the constant, one outlier
 * keeps its sign and rough size, all-positive and all-negative blocks. */
static void test_special_blocks(void) {
    for (size_t k = 0; k < sizeof writable / sizeof *writable; k++) {
        uint32_t type = writable[k];
        const qtype_traits *t = quant_traits(type);
        int64_t n = QK_K; /* a multiple of every block size */
        size_t nb = quant_row_size(type, n);
        float x[QK_K], y[QK_K];
        uint8_t *q = malloc(nb);
        /* zeros */
        memset(x, 0, sizeof x);
        t->from_float(x, q, n);
        t->to_float(q, y, n);
        int bad = 0;
        for (int i = 0; i < n; i++)
            bad += y[i] != 0.0f;
        CHECK_EQ_INT(bad, 0);
        /* constant */
        for (int i = 0; i < n; i++)
            x[i] = 0.75f;
        t->from_float(x, q, n);
        t->to_float(q, y, n);
        for (int i = 0; i < n; i++)
            bad += fabsf(y[i] - 0.75f) > 0.75f * 0.02f;
        if (bad) fprintf(stderr, "%s: constant block decodes to %g\n", t->name, y[0]);
        CHECK_EQ_INT(bad, 0);
        /* one outlier among small values */
        for (int i = 0; i < n; i++)
            x[i] = gauss() * 0.01f;
        x[77] = -5.0f;
        t->from_float(x, q, n);
        t->to_float(q, y, n);
        CHECK(y[77] < -4.5f && y[77] > -5.5f);
        /* all-positive block offset from zero, and its negative */
        for (int s = 0; s < 2; s++) {
            float sign = s ? -1.0f : 1.0f;
            double e2 = 0, x2 = 0;
            for (int i = 0; i < n; i++)
                x[i] = sign * (1.0f + urand());
            t->from_float(x, q, n);
            t->to_float(q, y, n);
            for (int i = 0; i < n; i++) {
                e2 += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                x2 += (double)x[i] * x[i];
            }
            if (!(sqrt(e2 / x2) <= rel_bound(type)))
                fprintf(stderr, "%s: offset block error %g\n", t->name, sqrt(e2 / x2));
            CHECK(sqrt(e2 / x2) <= rel_bound(type));
        }
        free(q);
    }
}

/* The dequantizers read bytes only: any bytes (with finite scales) decode to finite values, and
 * flipping one quant bit changes exactly the weights that bit belongs to. */
static void test_bit_locality(void) {
    const uint32_t types[] = {QT_Q4_0, QT_Q4_1, QT_Q5_0, QT_Q5_1,
                              QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        const qtype_traits *t = quant_traits(types[k]);
        int64_t n = t->block_size;
        uint8_t blk[512], blk2[512];
        float x[QK_K], y[QK_K], y2[QK_K];
        for (int i = 0; i < n; i++)
            x[i] = gauss();
        t->from_float(x, blk, n);
        t->to_float(blk, y, n);
        int total_changed = 0, bits = 0;
        for (size_t byte = 0; byte < t->type_size; byte++) {
            for (int bit = 0; bit < 8; bit++) {
                memcpy(blk2, blk, t->type_size);
                blk2[byte] ^= (uint8_t)(1u << bit);
                t->to_float(blk2, y2, n);
                int changed = 0;
                for (int i = 0; i < n; i++)
                    changed += fbits(y[i]) != fbits(y2[i]);
                total_changed += changed;
                bits++;
            }
        }
        /* every bit of the block matters to some weight (no padding in these layouts), except
         * where a scale/min is multiplied by zero; on random data almost all do */
        CHECK(total_changed > bits / 2);
    }
}

/* The reference files llama.cpp's quantizer wrote from one F32 original: every tensor of every
 * quantized file decodes to the F16 file's tensor within the type's error, and our quantizer,
 * applied to the F16 values, lands as close to them as llama.cpp's bytes do. Also checks the
 * type mix the README promises (the Q4_0 file keeps its embedding in Q6_K, norms in F32). */
static void test_reference_models(void) {
    static const char *files[] = {"BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"};
    char err[256], path[256];
    gguf *ref = NULL;
    if (gguf_open(&ref, "tests/data/models/mini-F16.gguf", err, sizeof err) < 0) {
        fprintf(stderr, "mini-F16.gguf: %s\n", err);
        check_failures++;
        return;
    }
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        snprintf(path, sizeof path, "tests/data/models/mini-%s.gguf", files[f]);
        gguf *g = NULL;
        if (gguf_open(&g, path, err, sizeof err) < 0) {
            fprintf(stderr, "%s: %s\n", path, err);
            check_failures++;
            continue;
        }
        CHECK_EQ_INT(gguf_n_tensors(g), gguf_n_tensors(ref));
        int seen[QT_COUNT] = {0};
        double worst_ratio = 0;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const gguf_tensor *t = gguf_tensor_at(g, i), *r = gguf_find_tensor(ref, t->name);
            CHECK(r != NULL);
            if (!r) continue;
            const qtype_traits *tr = quant_traits(t->type);
            CHECK(tr != NULL);
            if (!tr) continue;
            seen[t->type]++;
            int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3], rows = n / t->ne[0];
            CHECK_EQ_INT(t->nbytes, quant_row_size(t->type, t->ne[0]) * (size_t)rows);
            float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4),
                  *z = malloc((size_t)n * 4);
            uint8_t *q = malloc(t->nbytes);
            CHECK_EQ_INT(quant_dequantize_rows(r->type, r->data, x, rows, r->ne[0]), 0);
            CHECK_EQ_INT(quant_dequantize_rows(t->type, t->data, y, rows, t->ne[0]), 0);
            double e_file = 0, x2 = 0;
            for (int64_t k = 0; k < n; k++) {
                e_file += ((double)y[k] - x[k]) * ((double)y[k] - x[k]);
                x2 += (double)x[k] * x[k];
            }
            double rel = x2 > 0 ? sqrt(e_file / x2) : 0;
            double bound = t->type == QT_F32 ? 0 : rel_bound(t->type == QT_F16 ? QT_BF16 : t->type);
            if (!(rel <= bound))
                fprintf(stderr, "%s %s (%s): relative error %.5f vs F16 > %.5f\n", files[f],
                        t->name, tr->name, rel, bound);
            CHECK(rel <= bound);
            if (tr->from_float && t->type != QT_F32 && x2 > 0) {
                CHECK_EQ_INT(quant_quantize_rows(t->type, x, q, rows, t->ne[0]), 0);
                CHECK_EQ_INT(quant_dequantize_rows(t->type, q, z, rows, t->ne[0]), 0);
                double e_ours = 0;
                for (int64_t k = 0; k < n; k++)
                    e_ours += ((double)z[k] - x[k]) * ((double)z[k] - x[k]);
                /* the file was quantized from F32, we from F16: allow the F16 rounding on top */
                double ratio = sqrt(e_ours / x2) / (rel + 3e-4);
                if (ratio > worst_ratio) worst_ratio = ratio;
                if (!(ratio <= 1.05))
                    fprintf(stderr, "%s %s (%s): our error %.5f vs llama.cpp's %.5f\n", files[f],
                            t->name, tr->name, sqrt(e_ours / x2), rel);
                CHECK(ratio <= 1.05);
            }
            free(x);
            free(y);
            free(z);
            free(q);
        }
        printf("mini-%s: types", files[f]);
        for (int k = 0; k < QT_COUNT; k++)
            if (seen[k]) printf(" %s x%d", quant_traits((uint32_t)k)->name, seen[k]);
        printf("; worst error ratio ours/llama.cpp %.3f\n", worst_ratio);
        const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
        CHECK(emb != NULL);
        if (emb && strcmp(files[f], "Q4_0") == 0) CHECK_EQ_INT(emb->type, QT_Q6_K);
        gguf_close(g);
    }
    gguf_close(ref);
}

/* quant_mix_plan, run on the F16 file's tensor list, picks exactly the types llama-quantize
 * picked for each reference file; plus the rules on shapes those files do not exercise. */
static void test_mix_plan(void) {
    static const char *files[] = {"F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"};
    char err[256], path[256];
    gguf *ref = NULL;
    if (gguf_open(&ref, "tests/data/models/mini-F16.gguf", err, sizeof err) < 0) {
        fprintf(stderr, "mini-F16.gguf: %s\n", err);
        check_failures++;
        return;
    }
    int64_t n = gguf_n_tensors(ref);
    quant_tensor_desc *d = calloc((size_t)n, sizeof *d);
    uint32_t *types = calloc((size_t)n, sizeof *types);
    for (int64_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(ref, i);
        d[i] = (quant_tensor_desc){t->name, t->n_dims, t->ne[0], t->type};
    }
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        const quant_mix *mix = quant_mix_find(files[f]);
        CHECK(mix != NULL);
        snprintf(path, sizeof path, "tests/data/models/mini-%s.gguf", files[f]);
        gguf *g = NULL;
        if (!mix || gguf_open(&g, path, err, sizeof err) < 0) {
            check_failures++;
            continue;
        }
        CHECK_EQ_INT(gguf_get_int(g, "general.file_type", -1, NULL), mix->file_type);
        quant_mix_plan(mix, d, n, types);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            const gguf_tensor *t = gguf_find_tensor(g, d[i].name);
            if (t && t->type == types[i]) continue;
            if (bad++ < 3)
                fprintf(stderr, "%s %s: planned %s, llama.cpp wrote %s\n", files[f], d[i].name,
                        quant_traits(types[i])->name,
                        t ? quant_traits(t->type)->name : "(missing)");
        }
        CHECK_EQ_INT(bad, 0);
        gguf_close(g);
    }
    free(d);
    free(types);
    gguf_close(ref);
    /* shapes and names the mini files lack */
    quant_tensor_desc t[] = {
        {"output.weight", 2, 1024, QT_F32}, /* separate head: Q6_K, embedding then plain */
        {"token_embd.weight", 2, 1024, QT_F32},
        {"blk.0.ffn_down.weight", 2, 4608, QT_F32}, /* 4608 = 18 x 256 */
        {"blk.0.ffn_up.weight", 2, 1000, QT_F32},   /* K-quant fallback, then F16 (1000 % 32) */
        {"blk.0.attn_q.weight", 2, 96, QT_F32},     /* K-quant fallback: Q4_K -> Q5_0 */
        {"blk.0.shortconv.conv.weight", 2, 3, QT_F32},
        {"blk.0.attn_norm.weight", 1, 1024, QT_F32},
        {"rope_freqs", 1, 64, QT_F32},
    };
    uint32_t out[8];
    quant_mix_plan(quant_mix_find("q4_k_m"), t, 8, out);
    CHECK_EQ_INT(out[0], QT_Q6_K);
    CHECK_EQ_INT(out[1], QT_Q4_K);
    CHECK_EQ_INT(out[2], QT_Q6_K); /* the only ffn_down: rank 0 of 1 */
    CHECK_EQ_INT(out[3], QT_F16);
    CHECK_EQ_INT(out[4], QT_Q5_0);
    CHECK_EQ_INT(out[5], QT_F32);
    CHECK_EQ_INT(out[6], QT_F32);
    CHECK_EQ_INT(out[7], QT_F32);
    quant_mix_plan(quant_mix_find("Q6_K"), t, 8, out);
    CHECK_EQ_INT(out[4], QT_Q8_0);
    quant_mix_plan(quant_mix_find("Q8_0"), t, 8, out);
    CHECK_EQ_INT(out[0], QT_Q8_0);
    CHECK_EQ_INT(out[3], QT_F16);
    CHECK_EQ_INT(out[4], QT_Q8_0);
    /* 16 layers of ffn_down: use_more_bits ranks for Q5_K_M, first eighth Q5_K for Q4_K_S */
    quant_tensor_desc L[16];
    char names[16][32];
    for (int i = 0; i < 16; i++) {
        snprintf(names[i], sizeof names[i], "blk.%d.ffn_down.weight", i);
        L[i] = (quant_tensor_desc){names[i], 2, 512, QT_F16};
    }
    uint32_t lt[16];
    quant_mix_plan(quant_mix_find("Q5_K_M"), L, 16, lt);
    const char *want = "QQ__Q__Q__Q__QQQ"; /* i < 2, i >= 14, (i - 2) % 3 == 2 */
    for (int i = 0; i < 16; i++)
        CHECK_EQ_INT(lt[i], want[i] == 'Q' ? QT_Q6_K : QT_Q5_K);
    quant_mix_plan(quant_mix_find("Q4_K_S"), L, 16, lt);
    for (int i = 0; i < 16; i++)
        CHECK_EQ_INT(lt[i], i < 2 ? QT_Q5_K : QT_Q4_K);
    CHECK(quant_mix_find("Q4_K") == NULL);
    CHECK(quant_mix_find(NULL) == NULL);
    for (int i = 0; quant_mix_at(i); i++)
        CHECK(quant_mix_find(quant_mix_at(i)->name) == quant_mix_at(i));
}

/* Thread safety: two threads quantizing and decoding the same inputs at once get exactly the
 * single-threaded bytes and floats (no shared scratch, no lazily built tables). */
typedef struct qjob {
    uint32_t type;
    const float *x;
    int64_t n;
    uint8_t *q;
    float *y;
} qjob;

static void *qjob_run(void *arg) {
    qjob *j = arg;
    for (int rep = 0; rep < 3; rep++) {
        quant_quantize_rows(j->type, j->x, j->q, 1, j->n);
        quant_dequantize_rows(j->type, j->q, j->y, 1, j->n);
    }
    return NULL;
}

static void test_threads(void) {
    const uint32_t types[] = {QT_F16, QT_Q4_0, QT_Q5_1, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    int64_t n = QK_K * 16;
    float *x = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        x[i] = gauss() * 0.1f;
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        size_t nb = quant_row_size(types[k], n);
        qjob jobs[3];
        for (int t = 0; t < 3; t++)
            jobs[t] = (qjob){types[k], x, n, malloc(nb), malloc((size_t)n * 4)};
        qjob_run(&jobs[0]); /* serial reference */
        pthread_t th[2];
        for (int t = 0; t < 2; t++)
            CHECK_EQ_INT(pthread_create(&th[t], NULL, qjob_run, &jobs[1 + t]), 0);
        for (int t = 0; t < 2; t++)
            pthread_join(th[t], NULL);
        for (int t = 1; t < 3; t++) {
            CHECK(memcmp(jobs[t].q, jobs[0].q, nb) == 0);
            CHECK(memcmp(jobs[t].y, jobs[0].y, (size_t)n * 4) == 0);
        }
        for (int t = 0; t < 3; t++) {
            free(jobs[t].q);
            free(jobs[t].y);
        }
    }
    free(x);
}

int main(void) {
    test_names_sizes();
    test_conv_props();
    test_conv_golden();
    test_dequant_golden();
    test_quant_golden();
    test_round_trips();
    test_special_blocks();
    test_bit_locality();
    test_reference_models();
    test_mix_plan();
    test_threads();
    return check_done("test_quant");
}
