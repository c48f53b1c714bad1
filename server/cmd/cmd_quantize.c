/* cmd_quantize.c: `lfm2 quantize IN OUT TYPE`: rewrites a GGUF with llama-quantize's type mix,
 * streaming. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/clock.h"
#include "engine/gguf.h"
#include "engine/pool.h"
#include "quant/quant.h"
#include "server/cmd/cli.h"

/* Weights converted per task: big enough to amortize the pool's barrier, small enough that the
 * per-thread f32 scratch stays tiny (256 KiB) and the progress bar moves. */
#define QZ_CHUNK_FLOATS 65536

typedef struct qz_state {
    pool *pool;
    float **scratch;        /* [n_threads][scratch_floats] */
    int64_t scratch_floats; /* per thread */
    uint64_t total_bytes;   /* source tensor bytes, for the progress bar */
    _Atomic uint64_t done;  /* source bytes converted or copied so far */
    int tty;                /* stderr is a terminal: draw the bar */
    double t0, last_draw;   /* seconds (monotonic) */
    const char *cur_name;   /* tensor being converted, for the bar */
} qz_state;

typedef struct qz_job {
    qz_state *st;
    const gguf_tensor *src;
    uint32_t dst_type;
    int64_t rows, row_len, chunk_rows;
    size_t src_row_bytes, dst_row_bytes;
    uint8_t *dst;
    _Atomic int failed;
} qz_job;

static double mib(uint64_t b) {
    return (double)b / (1024.0 * 1024.0);
}

static void qz_draw(qz_state *st, int force) {
    if (!st->tty) return;
    double t = clock_now_s();
    if (!force && t - st->last_draw < 0.1) return;
    st->last_draw = t;
    uint64_t done = atomic_load(&st->done);
    double frac = st->total_bytes ? (double)done / (double)st->total_bytes : 1.0;
    if (frac > 1) frac = 1;
    enum { W = 30 };
    char bar[W + 1];
    int fill = (int)(frac * W + 0.5);
    for (int i = 0; i < W; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[W] = 0;
    fprintf(stderr, "\r\033[K[%s] %3d%%  %.1f/%.1f MiB  %5.1fs  %.40s", bar,
            (int)(frac * 100 + 0.5), mib(done), mib(st->total_bytes), t - st->t0,
            st->cur_name ? st->cur_name : "");
    fflush(stderr);
}

/* One task: rows [task*chunk_rows, ...) of the tensor, through this thread's f32 scratch. */
static void qz_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    qz_job *j = ctx;
    int64_t r0 = (int64_t)task * j->chunk_rows, nr = j->chunk_rows;
    if (r0 + nr > j->rows) nr = j->rows - r0;
    float *buf = j->st->scratch[thread];
    const uint8_t *src = (const uint8_t *)j->src->data + (size_t)r0 * j->src_row_bytes;
    if (quant_dequantize_rows(j->src->type, src, buf, nr, j->row_len) ||
        quant_quantize_rows(j->dst_type, buf, j->dst + (size_t)r0 * j->dst_row_bytes, nr,
                            j->row_len)) {
        atomic_store(&j->failed, 1);
        return;
    }
    atomic_fetch_add(&j->st->done, (uint64_t)nr * j->src_row_bytes);
    if (thread == 0) qz_draw(j->st, 0);
}

/* Drops the source tensor's pages from our resident set once it is converted: the input is a
 * read-only private file mapping, so the pages are only page cache and come back from the file
 * if touched again (a page shared with the next tensor). Keeps peak RSS near one tensor. */
static void qz_release_source(const gguf_tensor *t) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)t->data, lo = a - a % pg, hi = a + t->nbytes;
    hi -= hi % pg;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* gguf writer callback: produces the tensor's bytes straight into the output file's mapping. */
static int qz_fill(void *ctx, void *dst, size_t nbytes) {
    qz_job *j = ctx;
    qz_state *st = j->st;
    st->cur_name = j->src->name;
    if (j->dst_type ==
        j->src->type) { /* like llama-quantize: same type, bytes copied as they are */
        if (nbytes != j->src->nbytes) return -1;
        memcpy(dst, j->src->data, nbytes);
        qz_release_source(j->src);
        atomic_fetch_add(&st->done, nbytes);
        qz_draw(st, 0);
        return 0;
    }
    if (nbytes != (size_t)j->rows * j->dst_row_bytes) return -1;
    j->dst = dst;
    int64_t n_tasks = (j->rows + j->chunk_rows - 1) / j->chunk_rows;
    pool_run(st->pool, qz_task, j, (int)n_tasks);
    qz_release_source(j->src);
    qz_draw(st, 0);
    return atomic_load(&j->failed) ? -1 : 0;
}

static void qz_usage(FILE *f) {
    fprintf(f, "usage: lfm2 quantize IN.gguf OUT.gguf TYPE [-t N]\n"
               "  Rewrites IN with every weight matrix converted to TYPE (through f32), choosing\n"
               "  per-tensor types exactly as llama-quantize does for that file type (e.g. Q4_K_M\n"
               "  gives some attn_v/ffn_down Q6_K, the output matrix Q6_K); norms and the conv\n"
               "  kernel keep their type. All metadata is copied; general.file_type is updated.\n"
               "  TYPE (case-insensitive):");
    for (int i = 0; quant_mix_at(i); i++) {
        fputc(' ', f);
        for (const char *p = quant_mix_at(i)->name; *p; p++)
            fputc(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p, f);
    }
    fprintf(f,
            "\n  -t N   threads (default: number of cores)\n"
            "  A progress bar is drawn on stderr when it is a terminal; a summary line follows.\n"
            "  Exit status: 0 done, 1 the input could not be read or the output written, 2 bad "
            "usage.\n");
}

static void print_types(FILE *f) {
    for (int i = 0; quant_mix_at(i); i++) {
        fputs(i ? ", " : "", f);
        for (const char *p = quant_mix_at(i)->name; *p; p++)
            fputc(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p, f);
    }
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0;
    long n_threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            qz_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: %s needs a number of threads\n", a);
                return 2;
            }
            if (cli_parse_long(a, argv[++i], 1, 256, &n_threads)) return 2;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: unknown option '%s'\n", a);
            qz_usage(stderr);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "error: unexpected argument '%s' (IN OUT TYPE already given)\n", a);
            qz_usage(stderr);
            return 2;
        }
    }
    if (n_pos < 3) {
        fprintf(stderr, "error: missing %s\n",
                n_pos == 0   ? "IN, OUT and TYPE"
                : n_pos == 1 ? "OUT and TYPE"
                             : "TYPE");
        qz_usage(stderr);
        return 2;
    }
    const char *in = pos[0], *out = pos[1];
    const quant_mix *mix = quant_mix_find(pos[2]);
    if (!mix) {
        fprintf(stderr, "error: unknown type '%s': valid types are ", pos[2]);
        print_types(stderr);
        fputc('\n', stderr);
        return 2;
    }
    if (n_threads == 0) {
        n_threads = sysconf(_SC_NPROCESSORS_ONLN);
        if (n_threads < 1) n_threads = 1;
        if (n_threads > 256) n_threads = 256;
    }
    struct stat sin, sout;
    if (!strcmp(in, out) || (stat(in, &sin) == 0 && stat(out, &sout) == 0 &&
                             sin.st_dev == sout.st_dev && sin.st_ino == sout.st_ino)) {
        fprintf(stderr, "error: output '%s' is the input file: write to another path\n", out);
        return 2;
    }
    if (stat(out, &sout) == 0 && S_ISDIR(sout.st_mode)) {
        fprintf(stderr, "error: output '%s' is a directory\n", out);
        return 1;
    }

    double t0 = clock_now_s();
    char err[512] = "";
    gguf *g = NULL;
    if (gguf_open(&g, in, err, sizeof err) < 0) {
        cli_file_error(in, err);
        return 1;
    }
    int rc = 1;
    int64_t n_t = gguf_n_tensors(g);
    quant_tensor_desc *descs = calloc((size_t)(n_t ? n_t : 1), sizeof *descs);
    uint32_t *types = calloc((size_t)(n_t ? n_t : 1), sizeof *types);
    qz_job *jobs = calloc((size_t)(n_t ? n_t : 1), sizeof *jobs);
    gguf_writer *w = gguf_writer_new();
    qz_state st = {0};
    int64_t n_conv = 0;
    if (!descs || !types || !jobs || !w) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    for (int64_t i = 0; i < n_t; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const qtype_traits *tr = quant_traits(t->type);
        if (!tr || !tr->to_float) {
            fprintf(stderr, "error: %s: tensor '%s' has type %u, which lfm2 cannot read\n", in,
                    t->name, t->type);
            goto done;
        }
        descs[i] = (quant_tensor_desc){t->name, t->n_dims, t->ne[0], t->type};
    }
    quant_mix_plan(mix, descs, n_t, types);

    int64_t max_row = 1;
    for (int64_t i = 0; i < n_t; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const qtype_traits *dt = quant_traits(types[i]);
        qz_job *j = &jobs[i];
        j->st = &st;
        j->src = t;
        j->dst_type = types[i];
        j->row_len = t->ne[0];
        j->rows = t->ne[1] * t->ne[2] * t->ne[3];
        j->src_row_bytes = quant_row_size(t->type, t->ne[0]);
        j->dst_row_bytes = quant_row_size(types[i], t->ne[0]);
        if (!dt || !dt->from_float || !j->dst_row_bytes || !j->src_row_bytes) {
            fprintf(stderr, "error: %s: tensor '%s' (row length %lld) cannot be written as %s\n",
                    in, t->name, (long long)t->ne[0], dt ? dt->name : "?");
            goto done;
        }
        j->chunk_rows = QZ_CHUNK_FLOATS / j->row_len;
        if (j->chunk_rows < 1) j->chunk_rows = 1;
        if (j->row_len > max_row) max_row = j->row_len;
        st.total_bytes += t->nbytes;
        n_conv += types[i] != t->type;
        int64_t ne[GGUF_MAX_DIMS] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        if (gguf_writer_add_tensor_fill(w, t->name, types[i], t->n_dims, ne, qz_fill, j)) {
            fprintf(stderr, "error: tensor '%s': could not be added to the output\n", t->name);
            goto done;
        }
    }
    /* metadata: everything, in order; then the fields llama-quantize rewrites */
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        if (gguf_writer_copy_kv(w, g, i)) {
            fprintf(stderr, "error: metadata key '%s' could not be copied\n", gguf_kv_key(g, i));
            goto done;
        }
    }
    gguf_writer_set_alignment(w, gguf_alignment(g));
    if (gguf_writer_set_int(w, "general.file_type", GGUF_U32, mix->file_type) ||
        gguf_writer_set_int(w, "general.quantization_version", GGUF_U32, 2)) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }

    char perr[256];
    st.pool = n_threads > 1 ? pool_new((int)n_threads, perr, sizeof perr) : NULL;
    if (n_threads > 1 && !st.pool) {
        fprintf(stderr, "error: threads: %s\n", perr);
        goto done;
    }
    st.scratch_floats = max_row > QZ_CHUNK_FLOATS ? max_row : QZ_CHUNK_FLOATS;
    st.scratch = calloc((size_t)n_threads, sizeof *st.scratch);
    for (long i = 0; st.scratch && i < n_threads; i++) {
        st.scratch[i] = malloc((size_t)st.scratch_floats * sizeof(float));
        if (!st.scratch[i]) {
            fprintf(stderr, "error: out of memory (%lld floats of scratch)\n",
                    (long long)st.scratch_floats);
            goto done;
        }
    }
    if (!st.scratch) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    st.tty = isatty(STDERR_FILENO);
    st.t0 = st.last_draw = clock_now_s();
    qz_draw(&st, 1);
    int wrc = gguf_writer_write(w, out, err, sizeof err);
    if (st.tty && !wrc) { /* leave the finished bar (100%) on its line */
        qz_draw(&st, 1);
        fputc('\n', stderr);
    } else if (st.tty) {
        fprintf(stderr, "\r\033[K");
    }
    if (wrc) {
        fprintf(stderr, "error: cannot write '%s': %s\n", out, err);
        goto done;
    }
    double dt = clock_now_s() - t0;
    uint64_t out_size = stat(out, &sout) == 0 ? (uint64_t)sout.st_size : 0;
    fprintf(stderr,
            "quantize: %s (%.2f MiB) -> %s %s (%.2f MiB, %.1f%%): %lld tensors, %lld converted, "
            "%lld copied, %ld threads, %.2f s\n",
            in, mib(gguf_file_size(g)), out, mix->name, mib(out_size),
            gguf_file_size(g) ? 100.0 * (double)out_size / (double)gguf_file_size(g) : 0.0,
            (long long)n_t, (long long)n_conv, (long long)(n_t - n_conv), n_threads, dt);
    rc = 0;
done:
    if (st.scratch)
        for (long i = 0; i < n_threads; i++)
            free(st.scratch[i]);
    free(st.scratch);
    pool_free(st.pool);
    gguf_writer_free(w);
    free(jobs);
    free(types);
    free(descs);
    gguf_close(g);
    return rc;
}
