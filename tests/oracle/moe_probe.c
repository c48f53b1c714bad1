/* moe_probe.c: test tool: from an F32 lfm2moe file, a model whose output embedding is the router
 * input of one MoE layer, so llama.cpp itself computes it (gen_fidelity_golden.mjs routes it).
 *
 * The probe zeroes layer L's ffn_down_exps (its expert FFN then adds exactly 0) and every later
 * layer's output matrices (shortconv.out_proj, attn_output, ffn_down, ffn_down_exps: those layers
 * add exactly 0 too), and replaces the final norm token_embd_norm.weight by layer L's
 * ffn_norm.weight: the final hidden state rmsnorm(h, ffn_norm_L) is then what layer L's router
 * multiplies. (Dropping the later layers instead can leave no attention layer, and llama.cpp
 * cannot allocate an empty KV cache.)
 * It also prints what routing needs, as text: "K X E", the X biases, then the router's X rows
 * of E weights.
 * usage: moe_probe IN.gguf OUT.gguf L */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "quant/quant.h"

static int zero(void *ctx, void *dst, size_t n) {
    (void)ctx;
    memset(dst, 0, n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: moe_probe IN.gguf OUT.gguf LAYER\n");
        return 2;
    }
    char err[512];
    gguf *g;
    if (gguf_open(&g, argv[1], err, sizeof err) < 0) {
        fprintf(stderr, "moe_probe: %s\n", err);
        return 1;
    }
    const int L = atoi(argv[3]);
    char down[96], norm[96];
    snprintf(down, sizeof down, "blk.%d.ffn_down_exps.weight", L);
    snprintf(norm, sizeof norm, "blk.%d.ffn_norm.weight", L);
    const gguf_tensor *fn = gguf_find_tensor(g, norm);
    if (!gguf_find_tensor(g, down) || !fn || fn->type != QT_F32) {
        fprintf(stderr, "moe_probe: layer %d is not an F32 MoE layer of %s\n", L, argv[1]);
        return 1;
    }
    char inp[96], bias[96];
    snprintf(inp, sizeof inp, "blk.%d.ffn_gate_inp.weight", L);
    snprintf(bias, sizeof bias, "blk.%d.exp_probs_b.bias", L);
    const gguf_tensor *ti = gguf_find_tensor(g, inp), *tb = gguf_find_tensor(g, bias);
    if (!ti || !tb || ti->type != QT_F32 || tb->type != QT_F32) {
        fprintf(stderr, "moe_probe: layer %d has no f32 router and bias\n", L);
        return 1;
    }
    const int64_t X = ti->ne[1], E = ti->ne[0];
    printf("%lld %lld %lld\n", (long long)gguf_get_int(g, "lfm2moe.expert_used_count", 0, NULL),
           (long long)X, (long long)E);
    for (int64_t x = 0; x < X; x++)
        printf("%.9g%c", ((const float *)tb->data)[x], x + 1 < X ? ' ' : '\n');
    for (int64_t i = 0; i < X * E; i++)
        printf("%.9g%c", ((const float *)ti->data)[i], (i + 1) % E ? ' ' : '\n');
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_alignment(w, gguf_alignment(g));
    int rc = 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        rc |= gguf_writer_copy_kv(w, g, i);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        int l = -1;
        const bool later = sscanf(t->name, "blk.%d.", &l) == 1 && l > L;
        const bool out =
            strstr(t->name, "out_proj.weight") || strstr(t->name, "attn_output.weight") ||
            strstr(t->name, "ffn_down.weight") || strstr(t->name, "ffn_down_exps.weight");
        if (!strcmp(t->name, down) || (later && out))
            rc |= gguf_writer_add_tensor_fill(w, t->name, t->type, t->n_dims, t->ne, zero, NULL);
        else if (!strcmp(t->name, "token_embd_norm.weight"))
            rc |= gguf_writer_add_tensor(w, t->name, fn->type, fn->n_dims, fn->ne, fn->data,
                                         fn->nbytes);
        else
            rc |= gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
    }
    if (rc || gguf_writer_write(w, argv[2], err, sizeof err) < 0) {
        fprintf(stderr, "moe_probe: cannot write %s: %s\n", argv[2], rc ? "bad tensor" : err);
        return 1;
    }
    gguf_writer_free(w);
    gguf_close(g);
    return 0;
}
