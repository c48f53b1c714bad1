/* eng.h: the LFM2 engine: sequences with hybrid state (conv ring + KV) and one batched forward step. */
#ifndef LFM2_ENG_H
#define LFM2_ENG_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "engine/model.h"
#include "engine/tok.h"

/* Error codes (negative). A message naming the field, value and limit goes into err. */
enum {
    ENG_EINVAL = -1,  /* bad argument (token id out of vocab, empty item, bad parameter) */
    ENG_ENOMEM = -2,  /* allocation failed */
    ENG_EMODEL = -3,  /* model file could not be opened / is not a supported LFM2 model */
    ENG_ECTX = -4,    /* the sequence's context (n_ctx chosen at creation) would overflow */
    ENG_EBATCH = -5,  /* batch exceeds max_batch_tokens or max_seqs, or a sequence appears twice */
    ENG_ESTATE = -6,  /* truncate/fork to a position whose conv state is no longer kept */
    ENG_ELIMIT = -7,  /* too many live sequences (max_seqs) */
};

typedef struct eng_params {
    int n_threads;        /* threads for the forward pass; 0 = number of cores */
    int max_seqs;         /* live sequences at once; 0 = 64 */
    int n_ctx;            /* default context for eng_seq_new(n_ctx = 0); 0 = min(4096, n_ctx_train) */
    int max_batch_tokens; /* tokens in one eng_step (all items together); 0 = 512 */
    int n_restore;        /* positions back that eng_seq_truncate/fork can always reach; 0 = 64 */
} eng_params;

typedef struct eng eng;         /* the model, the tokenizer and per-engine scratch */
typedef struct eng_seq eng_seq; /* one sequence: position, conv ring, KV for attention layers */

/* Fills p with the defaults above (all zero = defaults, so this is optional). */
void eng_params_default(eng_params *p);

/* Opens an LFM2 GGUF (lfm2 or lfm2moe, any supported weight type), builds the tokenizer and
 * allocates scratch for p->max_batch_tokens (p may be NULL: defaults). Rejects other
 * architectures.
 * Returns 0 or a negative ENG_* code with a message in err. */
int eng_new(eng **out, const char *model_path, const eng_params *p, char *err, size_t errlen);
void eng_free(eng *e); /* NULL is a no-op; all sequences must have been freed first */

const lfm2_model *eng_model(const eng *e);
const lfm2_hparams *eng_hparams(const eng *e);
const tok *eng_tok(const eng *e); /* owned by e */
int eng_n_vocab(const eng *e);
int eng_eos(const eng *e);
int eng_max_batch_tokens(const eng *e);
int eng_default_ctx(const eng *e);
/* Bytes of weights one single-sequence decode step reads: every matrix as stored for the
 * kernels (repacked or as in the file) and the output head; in MoE layers the router and, per
 * chosen expert, one expert's three matrices (the mean over the layer's experts). Norms, conv
 * kernels and the embedding row are left out (< 0.1%). Memory bandwidth / this = the decode
 * speed no engine reading these weights can pass. */
double eng_decode_bytes(const eng *e);

/* Creates a sequence at position 0 with room for n_ctx positions (0 = the engine default).
 * Memory is allocated here once (eng_seq_bytes) and never grows. */
int eng_seq_new(eng *e, int n_ctx, eng_seq **out, char *err, size_t errlen);
void eng_seq_free(eng_seq *s); /* NULL is a no-op */

int eng_seq_pos(const eng_seq *s);   /* tokens consumed so far = position of the next token */
int eng_seq_n_ctx(const eng_seq *s); /* capacity chosen at creation */
size_t eng_seq_bytes(const eng_seq *s); /* bytes of state held (KV + conv ring + bookkeeping) */
/* Lowest position the sequence can be truncated back to (0 is always reachable too: the state
 * at position 0 is empty). Positions in [eng_seq_min_restorable, eng_seq_pos] are restorable. */
int eng_seq_min_restorable(const eng_seq *s);

/* Moves the sequence back to position pos (0 <= pos <= current). KV entries >= pos are dropped;
 * the conv state is restored from the ring of the last n_restore positions. ENG_ESTATE if pos is
 * neither 0 nor >= eng_seq_min_restorable. The sequence is unchanged on error. */
int eng_seq_truncate(eng_seq *s, int pos, char *err, size_t errlen);
/* New sequence holding the first pos tokens of src (pos = -1: all of it), same n_ctx (or n_ctx if
 * > 0 and >= pos). Full copy: src and the fork then evolve independently. Same pos rules as
 * truncate. */
int eng_seq_fork(const eng_seq *src, int pos, int n_ctx, eng_seq **out, char *err, size_t errlen);

/* ---- saving and restoring a sequence's state (the server's prompt cache) ----
 * A sequence's state at position n is the attention layers' K/V rows [0, n) plus, per conv
 * layer, the L-1 input columns before n (a snapshot). Restoring both gives a sequence that
 * continues bit for bit as the original did from n. */

/* Floats of one conv-state snapshot: [n_conv][L-1][n_embd] (columns of positions n-L+1..n-1;
 * columns of positions below 0 are zero). */
size_t eng_snap_floats(const eng *e);
/* f16 halves of K and V per position over all attention layers. */
size_t eng_kv_halves(const eng *e);
/* The conv state at the sequence's current position into dst (eng_snap_floats floats). */
void eng_seq_snap(const eng_seq *s, float *dst);
/* K/V rows [0, n) (n <= position) into dst, laid out [attention layer][K heads then V heads]
 * [n][head_dim]: n * eng_kv_halves halves. ENG_EINVAL if n is out of range. */
int eng_seq_kv_read(const eng_seq *s, int n, uint16_t *dst, char *err, size_t errlen);
/* Sets s to position n: K/V rows [0, n) from kv (eng_seq_kv_read's layout for a block of
 * kv_rows >= n rows) and the conv state from snap (eng_snap_floats floats, the state at n).
 * ENG_EINVAL when n or kv_rows is out of range, ENG_ECTX when n exceeds the sequence's n_ctx. */
int eng_seq_restore(eng_seq *s, int n, const uint16_t *kv, int kv_rows, const float *snap,
                    char *err, size_t errlen);

/* Where logits are wanted for one batch item. */
enum eng_logits { ENG_LOGITS_NONE = 0, ENG_LOGITS_LAST = 1, ENG_LOGITS_ALL = 2 };

typedef struct eng_batch_item {
    eng_seq *seq;          /* each sequence at most once per batch */
    const int32_t *tokens; /* n_tokens new tokens, appended at the sequence's position */
    int n_tokens;          /* >= 1 */
    int logits_mode;       /* enum eng_logits */
    float *logits;         /* caller-owned: n_vocab floats (LAST) or n_tokens * n_vocab (ALL) */
} eng_batch_item;

typedef struct eng_batch {
    eng_batch_item *items;
    int n_items;
} eng_batch;

/* An observer of the MoE router (tests, debugging): called from eng_step on the calling thread,
 * for every MoE layer and every batch row r (rows in item order, an item's tokens in order), with
 * the k chosen experts (best first by probability + bias) and their normalized weights. */
typedef void (*eng_router_fn)(void *ctx, int layer, int row, const int *experts,
                              const float *weights, int k);
/* Sets (fn != NULL) or clears the router observer. */
void eng_set_router_hook(eng *e, eng_router_fn fn, void *ctx);

/* One forward step over every item (prefill chunks and single decode tokens mixed): appends the
 * tokens to their sequences and writes raw logits where asked. The whole batch is validated
 * first (token ids, context room, batch size, duplicates): on error nothing has changed.
 * Never allocates. Not thread-safe for one engine: one caller (the scheduler) drives it. */
int eng_step(eng *e, eng_batch *b, char *err, size_t errlen);

/* Conv-state snapshots one batch item wants from the step: the state at each of n positions in
 * (pos, pos + n_tokens], ascending (position q = after q tokens), written to
 * dst[k * eng_snap_floats(e)] exactly as eng_seq_snap would give it at that position. */
typedef struct eng_snap_req {
    const int *at;
    int n;      /* 0: none */
    float *dst; /* caller-owned: n * eng_snap_floats(e) floats */
} eng_snap_req;
/* eng_step, also taking the snapshots snaps[i] asks for item i (snaps may be NULL: none). They
 * cost a copy of a few columns per conv layer inside the step, never a split of it. */
int eng_step_snap(eng *e, eng_batch *b, const eng_snap_req *snaps, char *err, size_t errlen);

#endif
