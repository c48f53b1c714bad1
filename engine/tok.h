/* tok.h: LFM2's byte-level BPE tokenizer, built from a GGUF's tokenizer.ggml.* metadata. */
#ifndef LFM2_TOK_H
#define LFM2_TOK_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "engine/gguf.h"

typedef struct tok tok; /* immutable after tok_new: safe to share between threads */

/* Error codes (negative); tok_new also writes a message naming the field, value and limit. */
enum { TOK_ERR_FORMAT = -1, TOK_ERR_NOMEM = -2, TOK_ERR_TOO_LONG = -3 };

enum tok_type {
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,
    TOK_USER = 4,
    TOK_UNUSED = 5,
    TOK_BYTE = 6
};

/* Builds the tokenizer from g's metadata (g may be closed afterwards). Validates the vocab:
 * model "gpt2", pre "lfm2" (or another Llama-3 pattern name, or absent), tokens unique, types
 * 0..6, bos/eos/padding ids inside the vocab, every merge "A B" with A, B and AB all tokens.
 * Returns 0, or TOK_ERR_FORMAT / TOK_ERR_NOMEM with a message naming key, value and limit. */
int tok_new(tok **out, const gguf *g, char *err, size_t errlen);
void tok_free(tok *t); /* NULL is a no-op */

int tok_n_vocab(const tok *t);
int tok_bos(const tok *t); /* -1 if none */
int tok_eos(const tok *t);
int tok_pad(const tok *t);
bool tok_add_bos(const tok *t);
/* The effective type: the file's, after llama.cpp's overrides (e.g. "<|im_end|>" is always
 * CONTROL); -1 for a bad id. */
int tok_type_of(const tok *t, int id);
/* The token's bytes as llama.cpp renders it with special=true: byte-level decoded for NORMAL,
 * the text itself for CONTROL, UNKNOWN and USER_DEFINED, one byte for BYTE, empty for UNUSED
 * and undefined. Owned by t. NULL (and *len 0) for a bad id. */
const char *tok_piece(const tok *t, int id, size_t *len);
/* Token id of an exact vocab string (e.g. "<|im_end|>"), or -1. */
int tok_find(const tok *t, const char *text, size_t len);
/* The token's text as stored in the file (byte-level encoded for NORMAL tokens); NULL: bad id. */
const char *tok_text_of(const tok *t, int id, size_t *len);
/* Length of the longest piece: tok_stream buffers need 4 + this. */
size_t tok_max_piece(const tok *t);

/* Tokenizes len bytes of text exactly as llama.cpp's llama_tokenize does. add_bos: prepend
 * BOS (caller decides, usually tok_add_bos()); parse_special: match CONTROL (and UNKNOWN)
 * token text as single tokens; USER_DEFINED token text always matches. Writes up to cap ids to
 * out (out may be NULL when cap is 0) and returns the total count (which may exceed cap: call
 * again with a larger buffer), or TOK_ERR_NOMEM, or TOK_ERR_TOO_LONG past 1 GiB of text.
 * Allocates scratch per call; thread-safe. */
int tok_encode(const tok *t, const char *text, size_t len, bool add_bos, bool parse_special,
               int32_t *out, int cap);
/* Same, and adds to *work a count of the inner steps done (bytes scanned, regex matches, merge
 * candidates pushed and popped): lets tests bound the cost without timing anything.
 * Invalid UTF-8 is handled as llama.cpp does: each invalid byte becomes U+FFFD (EF BF BD), so
 * those bytes do not come back from tok_decode. */
int tok_encode_counted(const tok *t, const char *text, size_t len, bool add_bos, bool parse_special,
                       int32_t *out, int cap, uint64_t *work);

/* Writes the bytes of ids to buf (cap bytes, NUL-terminated when there is room); returns the
 * byte count needed (without the NUL). CONTROL tokens render as their text only when
 * render_special; ids outside the vocab render as nothing. */
size_t tok_decode(const tok *t, const int32_t *ids, int n, bool render_special, char *buf,
                  size_t cap);

/* Length (1 to 4) of the valid UTF-8 character at s, n bytes available; 0 if s starts with an
 * invalid or cut-off one. Valid: shortest form, no surrogates, nothing above U+10FFFF (PCRE2's
 * and the JSON parsers' definition). */
int tok_utf8_len(const char *s, size_t n);
/* GPT-2 byte-to-unicode: the code point that stands for raw byte b in byte-level BPE token text
 * (b itself for printable Latin-1, U+0100 + rank among the other 68 bytes). */
uint32_t tok_byte_cpt(unsigned char b);

/* The pre-tokenizer's split pattern (PCRE2, compiled with UTF and UCP): the Llama-3 pattern
 * with ASCII-only contractions and llama.cpp's whitespace set, as llama.cpp runs it for "lfm2".
 * The tokenizer splits text with it, and the BPE trainer (synth/bpe_train.c) the corpus. */
extern const char tok_split_pattern[];

/* Incremental detokenizer: feed ids one at a time, get back only complete UTF-8 characters.
 * Bytes of an incomplete character are held until the next id (or tok_stream_flush). */

typedef struct tok_stream {
    const tok *t;
    bool render_special;
    unsigned char pending[8]; /* bytes of a UTF-8 character not yet complete */
    int n_pending;
} tok_stream;
void tok_stream_init(tok_stream *s, const tok *t, bool render_special);
/* Writes the text now complete into buf (cap bytes, >= 4 + tok_max_piece); returns its length.
 * If that length exceeds cap nothing is written or consumed: call again with a larger buffer. */
size_t tok_stream_push(tok_stream *s, int32_t id, char *buf, size_t cap);
/* Emits what is still held (invalid UTF-8 comes out as it was). */
size_t tok_stream_flush(tok_stream *s, char *buf, size_t cap);

#endif
