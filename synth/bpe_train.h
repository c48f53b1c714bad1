/* bpe_train.h: trains a byte-level BPE vocab (LFM2 layout: 16 specials, 256 bytes, merges). */
#ifndef LFM2_BPE_TRAIN_H
#define LFM2_BPE_TRAIN_H
#include <stddef.h>
#include <stdint.h>

#define BPE_N_SPECIAL 16                 /* ids 0..15: the LFM2 special tokens */
#define BPE_N_BASE (BPE_N_SPECIAL + 256) /* then the 256 byte tokens, GPT-2 order */
#define BPE_MAX_VOCAB (1 << 24)

typedef struct bpe_vocab {
    int n_tokens;   /* vocab size, exactly what was asked */
    char **tokens;  /* [n_tokens] as stored in GGUF: GPT-2 byte-to-unicode text, NUL-ended */
    int32_t *types; /* [n_tokens] 3 (CONTROL) for the specials, 1 (NORMAL) otherwise */
    int n_merges;   /* merges, in rank order */
    char **merges;  /* [n_merges] "left right" in GGUF form */
    int n_learned;  /* merges [0, n_learned) came from pair counts; the rest are fill merges */
    int n_pieces;   /* distinct pre-tokenized pieces seen in the training text */
} bpe_vocab;

/* Text of special token i (0 <= i < BPE_N_SPECIAL), e.g. "<|im_end|>" for 7; NULL otherwise. */
const char *bpe_special(int i);

/* Trains on len bytes of text (any bytes; invalid UTF-8 is kept as byte pieces) until the
 * vocab holds exactly n_vocab tokens. Merges are learned greedily (highest pair count, ties
 * by lower token ids) while any adjacent pair occurs at least once; if the text runs out of
 * pairs first, "fill" merges join frequent learned tokens (left ends in an ASCII letter, right
 * is all lowercase ASCII letters), then any token with one more byte, until n_vocab is
 * reached. Every merge joins two tokens already in the vocab into a new one.
 * Result owned by the caller (bpe_vocab_free). Negative code + err on bad input. */
int bpe_train(bpe_vocab **out, const char *text, size_t len, int n_vocab, char *err, size_t errlen);
void bpe_vocab_free(bpe_vocab *v); /* NULL is a no-op */

/* GPT-2 byte-to-unicode: writes the UTF-8 form of n raw bytes to dst (room for 2*n + 1),
 * NUL-terminates it and returns its length. */
size_t bpe_bytes_to_unicode(const unsigned char *src, size_t n, char *dst);

#endif
