/* test_repack.c: repacked tiles decode to the source's dequantized values (exact where promised).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "engine/gguf.h"
#include "quant/quant.h"
#include "quant/repack.h"
#include "tests/check.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* Compares rp_row_to_float of m against ref (rows x cols). mode 0: bit-exact; 1: f16-rounded
 * K-quant scales (tol relative to the group's max |w|); 2: requantized int8 (half a step). */
static int compare(const rp_matrix *m, const float *ref, int64_t rows, int64_t cols, int mode,
                   const char *what) {
    float *row = malloc((size_t)cols * sizeof *row);
    int bad = 0;
    for (int64_t r = 0; r < rows && !bad; r++) {
        rp_row_to_float(m, r, row);
        for (int64_t g = 0; g < cols / 32 && !bad; g++) {
            const float *x = ref + r * cols + g * 32;
            float amax = 0;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            double tol = mode == 0   ? 0
                         : mode == 1 ? 2e-3 * amax + 1e-30
                                     : amax / 127.0 * 0.5 * 1.01 + 1e-7;
            for (int j = 0; j < 32; j++) {
                double d = fabs((double)row[g * 32 + j] - x[j]);
                if (!(d <= tol)) {
                    fprintf(stderr,
                            "%s: row %lld col %lld: repacked %.9g vs source %.9g (tol %g)\n", what,
                            (long long)r, (long long)(g * 32 + j), row[g * 32 + j], x[j], tol);
                    bad = 1;
                    break;
                }
            }
        }
    }
    free(row);
    return bad;
}

static void test_type(uint32_t type, int64_t rows, int64_t cols) {
    const qtype_traits *tr = quant_traits(type);
    CHECK(tr != NULL);
    if (!tr || !tr->from_float) return;
    float *x = malloc((size_t)rows * cols * sizeof *x),
          *ref = malloc((size_t)rows * cols * sizeof *ref);
    size_t rs = quant_row_size(type, cols);
    uint8_t *q = malloc(rs * rows);
    for (int64_t i = 0; i < rows * cols; i++)
        x[i] = frand() * (1 + (i % 7)) * 0.05f;
    for (int64_t r = 0; r < rows; r++) {
        tr->from_float(x + r * cols, q + r * rs, cols);
        tr->to_float(q + r * rs, ref + r * cols, cols);
    }
    bool lossy;
    int kind = rp_kind_for(type, &lossy);
    CHECK(kind != 0);
    rp_matrix *m = NULL;
    char err[256] = "";
    int rc = rp_new(&m, type, q, rows, cols, RP_ALLOW_LOSSY, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK_EQ_INT(m->kind, kind);
        CHECK_EQ_INT(m->rows, rows);
        CHECK_EQ_INT(m->cols, cols);
        CHECK_EQ_INT(m->n_tiles, (rows + 7) / 8);
        int mode = lossy ? 2 : 0;
        char what[64];
        snprintf(what, sizeof what, "%s %lldx%lld", tr->name, (long long)rows, (long long)cols);
        CHECK_EQ_INT(compare(m, ref, rows, cols, mode, what), 0);
        /* padding rows of the last tile decode to zero */
        if (rows % 8) {
            float *pad = malloc((size_t)cols * sizeof *pad);
            rp_row_to_float(m, m->n_tiles * 8 - 1, pad);
            int nz = 0;
            for (int64_t j = 0; j < cols; j++)
                nz += pad[j] != 0;
            CHECK_EQ_INT(nz, 0);
            free(pad);
        }
    }
    rp_free(m);
    if (lossy) { /* refused when lossy repacking is not allowed */
        m = NULL;
        rc = rp_new(&m, type, q, rows, cols, 0, err, sizeof err);
        CHECK_EQ_INT(rc, RP_EUNSUPPORTED);
        CHECK(m == NULL);
        CHECK(strstr(err, tr->name) != NULL);
    }
    free(x), free(ref), free(q);
}

/* Every 2-D tensor of a file written by llama.cpp's own quantizer. */
static void test_file(const char *path) {
    gguf *g = NULL;
    char err[256];
    if (gguf_open(&g, path, err, sizeof err)) {
        fprintf(stderr, "cannot open %s: %s\n", path, err);
        CHECK(0);
        return;
    }
    int n = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->n_dims != 2) continue;
        int64_t cols = t->ne[0], rows = t->ne[1];
        const qtype_traits *tr = quant_traits(t->type);
        CHECK(tr != NULL);
        if (!tr) continue;
        rp_matrix *m = NULL;
        if (cols % 32) { /* the conv kernel [n_embd, 3]: not a matrix the kernels take */
            CHECK_EQ_INT(rp_new(&m, t->type, t->data, rows, cols, RP_ALLOW_LOSSY, err, sizeof err),
                         RP_EINVAL);
            continue;
        }
        float *ref = malloc((size_t)rows * cols * sizeof *ref);
        tr->to_float(t->data, ref, rows * cols);
        int rc = rp_new(&m, t->type, t->data, rows, cols, RP_ALLOW_LOSSY, err, sizeof err);
        if (rc) fprintf(stderr, "%s %s: %s\n", path, t->name, err);
        CHECK_EQ_INT(rc, 0);
        if (!rc) {
            int mode = m->lossy ? 2 : 0;
            char what[600];
            snprintf(what, sizeof what, "%s %s", path, t->name);
            CHECK_EQ_INT(compare(m, ref, rows, cols, mode, what), 0);
            n++;
        }
        rp_free(m);
        free(ref);
    }
    CHECK(n > 0);
    gguf_close(g);
}

/* Rss (KiB) of the mapping that starts at p, from /proc/self/smaps; -1 if not found. */
static long rss_kib(const void *p) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    long rss = -1;
    int in = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo;
        if (sscanf(line, "%lx-", &lo) == 1 && strchr(line, '-') &&
            !strncmp(line + strcspn(line, " "), " r", 2))
            in = lo == (unsigned long)p;
        else if (in && sscanf(line, "Rss: %ld kB", &rss) == 1)
            break;
    }
    if (f) fclose(f);
    return rss;
}

/* RP_DROP_SOURCE on a file mapping: same tiles, and the source pages are no longer resident. */
static void test_drop_source(void) {
    const int64_t rows = 9203, cols = 1024; /* 5 MiB, rows not on page boundaries */
    size_t rs = quant_row_size(QT_Q4_0, cols), n = rs * rows;
    float *x = malloc((size_t)cols * sizeof *x);
    uint8_t *q = malloc(n);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j++)
            x[j] = frand();
        quant_traits(QT_Q4_0)->from_float(x, q + r * rs, cols);
    }
    char path[256];
    const char *td = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/test_repack.XXXXXX", td && *td ? td : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK_EQ_INT(write(fd, q, n), (long long)n);
    unlink(path);
    uint8_t *map = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    CHECK(map != MAP_FAILED);
    rp_matrix *a = NULL, *b = NULL;
    char err[256];
    CHECK_EQ_INT(rp_new(&a, QT_Q4_0, q, rows, cols, 0, err, sizeof err), 0);
    CHECK_EQ_INT(rp_new(&b, QT_Q4_0, map, rows, cols, RP_DROP_SOURCE, err, sizeof err), 0);
    if (a && b) CHECK(!memcmp(a->data, b->data, a->tile_bytes * a->n_tiles));
    CHECK_EQ_INT(rss_kib(map), 0); /* (mincore would report the page cache, not our RSS) */
    /* and the data reads back the same afterwards (re-faulted from the file) */
    CHECK(!memcmp(map, q, n));
    CHECK(rss_kib(map) > 0);
    munmap(map, n);
    close(fd);
    rp_free(a), rp_free(b);
    free(x), free(q);
}

/* Many big matrices (the huge-page chunks: 64 KiB and up share 64 MiB chunks) made, freed in a
 * scattered order and made again: data is 64-byte aligned, a fresh matrix holds the repacked
 * values, and no two overlap (each is then filled with its own byte and keeps it while all the
 * others are written). */
static void test_big_allocs(void) {
    enum { N = 150, ROWS = 512, COLS = 1024 }; /* 557 KiB each: 83 MiB, more than one chunk */
    size_t rs = quant_row_size(QT_Q8_0, COLS);
    uint8_t *src = malloc(rs * ROWS);
    float *x = malloc(sizeof(float) * COLS), *y = malloc(sizeof(float) * COLS);
    CHECK(src && x && y);
    for (int r = 0; r < ROWS; r++) {
        for (int j = 0; j < COLS; j++) x[j] = (float)((r * 31 + j * 7) % 97) / 97.0f - 0.5f;
        quant_traits(QT_Q8_0)->from_float(x, src + (size_t)r * rs, COLS);
    }
    static rp_matrix *ms[N];
    char err[256];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            if (ms[i]) continue;
            CHECK_EQ_INT(rp_new(&ms[i], QT_Q8_0, src, ROWS, COLS, 0, err, sizeof err), 0);
            CHECK(((uintptr_t)ms[i]->data & 63) == 0);
            rp_row_to_float(ms[i], i % ROWS, y);
            quant_traits(QT_Q8_0)->to_float(src + (size_t)(i % ROWS) * rs, x, COLS);
            CHECK(!memcmp(x, y, sizeof(float) * COLS));
            memset(ms[i]->data, i + 1, ms[i]->tile_bytes * ms[i]->n_tiles);
        }
        for (int i = 0; i < N; i++) {
            size_t n = ms[i]->tile_bytes * ms[i]->n_tiles, bad = 0;
            for (size_t k = 0; k < n; k++) bad += ms[i]->data[k] != (uint8_t)(i + 1);
            CHECK(bad == 0);
        }
        for (int i = 0; i < N; i++)
            if (round == 1 || i % 3 != 1) {
                rp_free(ms[i]);
                ms[i] = NULL;
            }
    }
    free(src), free(x), free(y);
}

int main(void) {
    test_drop_source();
    test_big_allocs();
    static const uint32_t types[] = {QT_Q4_0, QT_Q4_1, QT_Q5_0, QT_Q5_1, QT_Q8_0, QT_Q4_K,
                                     QT_Q5_K, QT_Q6_K, QT_F16,  QT_BF16, QT_F32};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int kq = types[i] == QT_Q4_K || types[i] == QT_Q5_K || types[i] == QT_Q6_K;
        static const int64_t rows_list[] = {1, 7, 8, 13, 40};
        for (size_t r = 0; r < 5; r++) {
            if (kq) {
                test_type(types[i], rows_list[r], 256);
                test_type(types[i], rows_list[r], 512);
            } else {
                test_type(types[i], rows_list[r], 32);
                test_type(types[i], rows_list[r], 96);
                test_type(types[i], rows_list[r], 288);
            }
        }
    }
    /* kinds and layouts */
    CHECK_EQ_INT(rp_group_bytes(RP_I4), 144);
    CHECK_EQ_INT(rp_group_bytes(RP_I8M), 288);
    bool lossy = true;
    CHECK_EQ_INT(rp_kind_for(QT_Q4_0, &lossy), RP_I4);
    CHECK(!lossy);
    CHECK_EQ_INT(rp_kind_for(QT_Q6_K, &lossy), RP_I6);
    CHECK(!lossy);
    CHECK_EQ_INT(rp_kind_for(QT_F16, &lossy), RP_I8);
    CHECK(lossy);
    CHECK_EQ_INT(rp_group_bytes(RP_I6), 208);
    CHECK_EQ_INT(rp_kind_for(QT_Q5_K, &lossy), RP_I5K);
    CHECK(!lossy);
    CHECK_EQ_INT(rp_kind_for(QT_Q8_K, NULL), 0);
    CHECK_EQ_INT(rp_kind_for(QT_Q4_K, &lossy), RP_I4K);
    CHECK(!lossy);
    CHECK_EQ_INT(rp_group_bytes(RP_I4K), 144);
    /* bad shapes and types are refused with a message naming the field */
    {
        float src[48 * 2] = {0};
        rp_matrix *m = NULL;
        char err[256] = "";
        CHECK_EQ_INT(rp_new(&m, QT_F32, src, 2, 48, RP_ALLOW_LOSSY, err, sizeof err), RP_EINVAL);
        CHECK(strstr(err, "cols=48") != NULL);
        CHECK(m == NULL);
        CHECK_EQ_INT(rp_new(&m, 99, src, 2, 32, RP_ALLOW_LOSSY, err, sizeof err), RP_EUNSUPPORTED);
        CHECK_EQ_INT(rp_new(&m, QT_F32, src, 0, 32, RP_ALLOW_LOSSY, err, sizeof err), RP_EINVAL);
        rp_free(NULL);
    }
    static const char *files[] = {"mini-Q4_0", "mini-Q8_0", "mini-Q4_K_M", "mini-Q5_K_M",
                                  "mini-Q6_K", "mini-F16",  "mini-BF16"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/data/models/%s.gguf", files[i]);
        test_file(path);
    }
    return check_done("test_repack");
}
