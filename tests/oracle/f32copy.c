/* f32copy.c: test tool: writes a GGUF whose every tensor is the exact f32 dequantization of IN's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "quant/quant.h"

typedef struct job {
    const gguf_tensor *t;
} job;

/* Dequantizes the whole tensor into dst (f32, row-major as stored). */
static int fill(void *ctx, void *dst, size_t nbytes) {
    const gguf_tensor *t = ((job *)ctx)->t;
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    const qtype_traits *tr = quant_traits(t->type);
    if (!tr || nbytes != (size_t)n * sizeof(float)) return -1;
    tr->to_float(t->data, dst, n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: f32copy IN.gguf OUT.gguf\n");
        return 2;
    }
    char err[512];
    gguf *g;
    if (gguf_open(&g, argv[1], err, sizeof err) < 0) {
        fprintf(stderr, "error: %s: %s\n", argv[1], err);
        return 1;
    }
    gguf_writer *w = gguf_writer_new();
    int64_t nt = gguf_n_tensors(g);
    job *jobs = calloc((size_t)nt + 1, sizeof *jobs);
    if (!w || !jobs) return 1;
    gguf_writer_set_alignment(w, gguf_alignment(g));
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        if (gguf_writer_copy_kv(w, g, i) < 0) return 1;
    gguf_writer_set_int(w, "general.file_type", GGUF_U32, 0); /* ALL_F32 */
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (!quant_traits(t->type)) {
            fprintf(stderr, "error: tensor '%s': type %u cannot be dequantized\n", t->name, t->type);
            return 1;
        }
        jobs[i].t = t;
        if (gguf_writer_add_tensor_fill(w, t->name, QT_F32, t->n_dims, t->ne, fill, &jobs[i]) < 0)
            return 1;
    }
    if (gguf_writer_write(w, argv[2], err, sizeof err) < 0) {
        fprintf(stderr, "error: %s: %s\n", argv[2], err);
        return 1;
    }
    gguf_writer_free(w);
    gguf_close(g);
    free(jobs);
    return 0;
}
