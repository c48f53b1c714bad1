/* tok.c: LFM2's byte-level BPE tokenizer and detokenizer, token for token like llama.cpp. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tok.h"
#include "engine/util.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Effective attributes (llama.cpp's token attributes, reduced to what tokenizing needs). */
enum {
    ATTR_HIDDEN = 1, /* CONTROL or UNKNOWN: rendered only with render_special, matched only with
                        parse_special */
    ATTR_SPLIT = 2,  /* matched as text before pre-tokenizing (CONTROL, UNKNOWN, USER_DEFINED) */
};

typedef struct merge_slot {
    uint64_t key;   /* (left id << 32 | right id) + 1; 0 = empty */
    int32_t rank;   /* index in tokenizer.ggml.merges (the first one wins on duplicates) */
    int32_t merged; /* id of left+right */
} merge_slot;

struct tok {
    int n_vocab;
    char *text;         /* all token texts, as stored in the file (byte-level encoded for NORMAL) */
    uint32_t *text_off; /* (n_vocab + 1) offsets into text */
    char *piece;        /* rendered bytes of each token (byte-level decoded for NORMAL) */
    uint32_t *piece_off; /* (n_vocab + 1) offsets into piece */
    uint8_t *type;       /* (n_vocab) effective token type (enum tok_type, 0 = undefined) */
    uint8_t *attr;       /* (n_vocab) ATTR_* */
    int32_t *vocab_hash; /* (vocab_mask + 1) ids, -1 = empty; text -> id */
    uint32_t vocab_mask;
    merge_slot *merges; /* (merge_mask + 1) */
    uint32_t merge_mask;
    int32_t *split_ids; /* ids with ATTR_SPLIT, longest text first */
    int n_split;
    int bos, eos, pad;
    bool add_bos;
    size_t max_piece;
    int32_t byte_tok[256];   /* id of the one-char token of each byte, or -1 */
    int32_t byte_fb[256][2]; /* llama.cpp's fallback for a byte without a token: 1-byte lookups */
    unsigned char benc[256][2]; /* byte-level (GPT-2) encoding of each byte as UTF-8 */
    uint8_t benc_len[256];
    pcre2_code *re;
    pcre2_match_context *mctx; /* limits raised: a long whitespace run backtracks once per byte */
    bool jit;
};

/* ---- small helpers ---- */

static const char *tok_text(const tok *t, int id, size_t *len) {
    *len = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}

static int vocab_lookup(const tok *t, const void *s, size_t n) {
    uint32_t i = (uint32_t)util_hash_bytes(s, n) & t->vocab_mask;
    for (;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_hash[i];
        if (id < 0) return -1;
        size_t len;
        const char *txt = tok_text(t, id, &len);
        if (len == n && memcmp(txt, s, n) == 0) return id;
    }
}

static const merge_slot *merge_lookup(const tok *t, int32_t l, int32_t r) {
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    uint32_t i = (uint32_t)util_mix64(key) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        if (t->merges[i].key == key) return &t->merges[i];
        if (t->merges[i].key == 0) return NULL;
    }
}

static int utf8_put(uint32_t c, unsigned char *o) {
    if (c < 0x80) {
        o[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | (c >> 6));
        o[1] = (unsigned char)(0x80 | (c & 63));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (c >> 12));
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 63));
        o[2] = (unsigned char)(0x80 | (c & 63));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (c >> 18));
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 63));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 63));
    o[3] = (unsigned char)(0x80 | (c & 63));
    return 4;
}

/* Decodes one code point the way llama.cpp does (no overlong or surrogate checks); returns the
 * byte length consumed, or 0 for an invalid byte (llama.cpp then substitutes U+FFFD, 1 byte). */
static int llama_utf8_decode(const unsigned char *s, size_t n, uint32_t *cpt) {
    unsigned char b = s[0];
    if (!(b & 0x80)) {
        *cpt = b;
        return 1;
    }
    if (!(b & 0x40)) return 0;
    int len = !(b & 0x20) ? 2 : !(b & 0x10) ? 3 : !(b & 0x08) ? 4 : 0;
    if (!len || (size_t)len > n) return 0;
    uint32_t c = b & (0x7F >> len);
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[k] & 0x3F);
    }
    *cpt = c;
    return len;
}

/* GPT-2's byte-to-unicode map keeps the printable Latin-1 bytes as they are. */
static bool byte_is_self(uint32_t b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_cpt(unsigned char b) {
    if (byte_is_self(b)) return b;
    uint32_t n = 0;
    for (uint32_t c = 0; c < b; c++)
        n += !byte_is_self(c);
    return 256u + n;
}

/* Inverse of tok_byte_cpt, or -1. */
static int cpt_to_byte(uint32_t c) {
    if (byte_is_self(c)) return (int)c;
    if (c < 256 || c >= 256 + 68) return -1;
    int n = (int)(c - 256);
    for (uint32_t b = 0; b < 256; b++)
        if (!byte_is_self(b) && n-- == 0) return (int)b;
    return -1;
}

/* ---- construction ---- */

/* Token texts that llama.cpp forces to CONTROL (end-of-generation and fill-in-the-middle markers).
 */
static const char *const forced_control[] = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|eom_id|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "[e~[",
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81"
    "of\xe2\x96\x81"
    "sentence\xef\xbd\x9c>",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
};

/* Whitespace as llama.cpp defines it (Unicode White_Space); PCRE2's \s also takes U+180E. */
#define WS                                                                                         \
    "\\t\\n\\x0B\\f\\r "                                                                           \
    "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
const char tok_split_pattern[] = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
                                    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
                                    "|\\p{N}{1,3}"
                                    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
                                    "|[" WS "]*[\\r\\n]+"
                                    "|[" WS "]+(?![^" WS "])"
                                    "|[" WS "]+";

static int cmp_split(const void *a, const void *b, void *ctx) {
    const tok *t = ctx;
    int x = *(const int32_t *)a, y = *(const int32_t *)b;
    size_t lx = t->text_off[x + 1] - t->text_off[x], ly = t->text_off[y + 1] - t->text_off[y];
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Renders token id's text as llama.cpp's token_to_piece(special=true) does into out (NULL: count).
 */
static size_t render_piece(const tok *t, int id, char *out) {
    size_t len;
    const char *txt = tok_text(t, id, &len);
    int ty = t->type[id];
    if (ty == TOK_CONTROL || ty == TOK_UNKNOWN || ty == TOK_USER) {
        if (out) memcpy(out, txt, len);
        return len;
    }
    if (ty == TOK_BYTE) {
        /* llama.cpp: one byte, strtol(text[3..4], 16) (meant for "<0xXX>"); it aborts on a text
         * shorter than 3 bytes, we render nothing */
        if (len < 3) return 0;
        char hex[3] = {len > 3 ? txt[3] : 0, len > 4 ? txt[4] : 0, 0};
        if (out) out[0] = (char)strtol(hex, NULL, 16);
        return 1;
    }
    if (ty != TOK_NORMAL) return 0;
    size_t n = 0;
    const unsigned char *s = (const unsigned char *)txt;
    for (size_t i = 0; i < len;) {
        uint32_t c = 0xFFFD;
        int k = llama_utf8_decode(s + i, len - i, &c);
        i += k ? (size_t)k : 1;
        int b = cpt_to_byte(c);
        if (b >= 0) {
            if (out) out[n] = (char)b;
            n++;
            continue;
        }
        /* llama.cpp's marker for a character outside the byte map */
        unsigned char u[4];
        int ul = utf8_put(c > 0x10FFFF ? 0xFFFD : c, u);
        char tmp[32];
        int m = snprintf(tmp, sizeof tmp, "[UNK_BYTE_0x");
        for (int j = 0; j < ul; j++)
            m += snprintf(tmp + m, sizeof tmp - (size_t)m, "%02x", u[j]);
        if (out) {
            memcpy(out + n, tmp, (size_t)m);
            memcpy(out + n + m, txt, len);
            out[n + (size_t)m + len] = ']';
        }
        n += (size_t)m + len + 1;
    }
    return n;
}

/* A short printable excerpt of s (not NUL-terminated) for messages: escapes bytes < 0x20 and 0x7F.
 */
static const char *excerpt(char out[100], const char *s, size_t len) {
    size_t o = 0;
    for (size_t i = 0; i < len && o < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F || c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, 100 - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    if (o >= 80 && len) o += (size_t)snprintf(out + o, 100 - o, "...");
    out[o] = 0;
    return out;
}

static int get_special_id(const gguf *g, const char *key, int n_vocab, int *out, char *err,
                          size_t errlen) {
    *out = -1;
    if (gguf_find_key(g, key) < 0) return 0;
    bool bad = false;
    int64_t v = gguf_get_int(g, key, -1, &bad);
    if (bad) return util_fail(err, errlen, TOK_ERR_FORMAT, "%s: not an integer", key);
    if (v < 0 || v >= n_vocab)
        return util_fail(err, errlen, TOK_ERR_FORMAT, "%s = %lld: outside the vocab (0..%d)", key,
                         (long long)v, n_vocab - 1);
    *out = (int)v;
    return 0;
}

int tok_new(tok **out, const gguf *g, char *err, size_t errlen) {
    *out = NULL;
    int rc = TOK_ERR_NOMEM;
    tok *t = calloc(1, sizeof *t);
    if (!t) return util_fail(err, errlen, TOK_ERR_NOMEM, "tokenizer: out of memory");

    bool bad = false;
    const char *model = gguf_get_str(g, "tokenizer.ggml.model", NULL, &bad);
    if (!model || bad) {
        rc = util_fail(err, errlen, TOK_ERR_FORMAT, "tokenizer.ggml.model: %s",
                       bad ? "not a string" : "missing (expected \"gpt2\")");
        goto fail;
    }
    if (strcmp(model, "gpt2") != 0) {
        rc = util_fail(
            err, errlen, TOK_ERR_FORMAT,
            "tokenizer.ggml.model = \"%.64s\": unsupported (only \"gpt2\", byte-level BPE)", model);
        goto fail;
    }
    const char *pre = gguf_get_str(g, "tokenizer.ggml.pre", NULL, &bad);
    if (bad) {
        rc = util_fail(err, errlen, TOK_ERR_FORMAT, "tokenizer.ggml.pre: not a string");
        goto fail;
    }
    static const char *const pres[] = {"lfm2",      "llama3",  "llama-v3", "llama-bpe",   "falcon3",
                                       "falcon-h1", "pixtral", "midm-2.0", "jina-v5-nano"};
    if (pre) {
        bool ok = false;
        for (size_t i = 0; i < sizeof pres / sizeof pres[0]; i++)
            ok |= !strcmp(pre, pres[i]);
        if (!ok) {
            rc = util_fail(
                err, errlen, TOK_ERR_FORMAT,
                "tokenizer.ggml.pre = \"%.64s\": unsupported pre-tokenizer (expected \"lfm2\" "
                "or another Llama-3 pattern name)",
                pre);
            goto fail;
        }
    }

    /* tokens */
    int64_t ki = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (ki < 0 || gguf_kv_type(g, ki) != GGUF_ARR || gguf_arr_type(g, ki) != GGUF_STR) {
        rc = util_fail(err, errlen, TOK_ERR_FORMAT, "tokenizer.ggml.tokens: %s",
                       ki < 0 ? "missing" : "not an array of strings");
        goto fail;
    }
    uint64_t nv = gguf_arr_len(g, ki);
    if (nv == 0 || nv > (1u << 24)) {
        rc = util_fail(err, errlen, TOK_ERR_FORMAT,
                       "tokenizer.ggml.tokens: %llu tokens (limit 1..%u)", (unsigned long long)nv,
                       1u << 24);
        goto fail;
    }
    int n = t->n_vocab = (int)nv;
    t->bos = t->eos = t->pad = -1;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        gguf_arr_str(g, ki, (uint64_t)i, &len);
        total += len ? len : 32;
        if (total > 0xF0000000u) {
            rc = util_fail(err, errlen, TOK_ERR_FORMAT,
                           "tokenizer.ggml.tokens: %zu bytes of text (limit %u)", total,
                           0xF0000000u);
            goto fail;
        }
    }
    t->text = malloc(total + 1);
    t->text_off = malloc(sizeof *t->text_off * ((size_t)n + 1));
    t->type = malloc((size_t)n);
    t->attr = calloc((size_t)n, 1);
    if (!t->text || !t->text_off || !t->type || !t->attr) goto nomem;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *s = gguf_arr_str(g, ki, (uint64_t)i, &len);
        t->text_off[i] = (uint32_t)off;
        if (len)
            memcpy(t->text + off, s, len);
        else
            len = (size_t)sprintf(t->text + off, "[EMPTY_%d]", i); /* as llama.cpp names it */
        off += len;
    }
    t->text_off[n] = (uint32_t)off;

    /* types */
    int64_t ti = gguf_find_key(g, "tokenizer.ggml.token_type");
    if (ti >= 0) {
        enum gguf_vtype at =
            gguf_kv_type(g, ti) == GGUF_ARR ? gguf_arr_type(g, ti) : GGUF_VTYPE_COUNT;
        if (at != GGUF_I32 && at != GGUF_U32 && at != GGUF_I8 && at != GGUF_U8 && at != GGUF_I16 &&
            at != GGUF_U16 && at != GGUF_I64 && at != GGUF_U64) {
            rc = util_fail(err, errlen, TOK_ERR_FORMAT,
                           "tokenizer.ggml.token_type: not an array of integers");
            goto fail;
        }
        if (gguf_arr_len(g, ti) != nv) {
            rc = util_fail(err, errlen, TOK_ERR_FORMAT,
                           "tokenizer.ggml.token_type: %llu entries, expected %d (one per token)",
                           (unsigned long long)gguf_arr_len(g, ti), n);
            goto fail;
        }
    }
    for (int i = 0; i < n; i++) {
        int64_t ty = ti >= 0 ? gguf_arr_int(g, ti, (uint64_t)i) : TOK_NORMAL;
        if (ty < 0 || ty > TOK_BYTE) {
            rc = util_fail(err, errlen, TOK_ERR_FORMAT,
                           "tokenizer.ggml.token_type[%d] = %lld: outside 0..%d", i, (long long)ty,
                           TOK_BYTE);
            goto fail;
        }
        t->type[i] = (uint8_t)ty;
    }

    /* text -> id */
    uint32_t cap = 1;
    while (cap < 2u * (uint32_t)n)
        cap <<= 1;
    t->vocab_mask = cap - 1;
    t->vocab_hash = malloc(sizeof *t->vocab_hash * cap);
    if (!t->vocab_hash) goto nomem;
    memset(t->vocab_hash, 0xFF, sizeof *t->vocab_hash * cap);
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *s = tok_text(t, i, &len);
        int prev = vocab_lookup(t, s, len);
        if (prev >= 0) {
            char ex[100];
            rc = util_fail(err, errlen, TOK_ERR_FORMAT,
                           "tokenizer.ggml.tokens[%d] = \"%s\": duplicate of token %d", i,
                           excerpt(ex, s, len), prev);
            goto fail;
        }
        uint32_t h = (uint32_t)util_hash_bytes(s, len) & t->vocab_mask;
        while (t->vocab_hash[h] >= 0)
            h = (h + 1) & t->vocab_mask;
        t->vocab_hash[h] = i;
    }
    for (size_t i = 0; i < sizeof forced_control / sizeof forced_control[0]; i++) {
        int id = vocab_lookup(t, forced_control[i], strlen(forced_control[i]));
        if (id >= 0 && t->type[id] != TOK_CONTROL && t->type[id] != TOK_UNKNOWN)
            t->type[id] = TOK_CONTROL;
    }
    /* llama.cpp's per-family overrides, in its order: gpt-oss markers always render; "<|end|>"
     * is plain text next to <|return|>+<|call|> or <|calls|>+<|flush|>; "</s>" next to
     * "<|tool_response>" is NORMAL */
    static const char *const always_user[] = {"<|channel|>", "<|message|>", "<|start|>",
                                              "<|constrain|>"};
    for (size_t i = 0; i < sizeof always_user / sizeof always_user[0]; i++) {
        int id = vocab_lookup(t, always_user[i], strlen(always_user[i]));
        if (id >= 0) t->type[id] = TOK_USER;
    }
#define HAS(s) (vocab_lookup(t, s, sizeof s - 1) >= 0)
    int end_id = vocab_lookup(t, "<|end|>", 7);
    if (end_id >= 0 &&
        ((HAS("<|return|>") && HAS("<|call|>")) || (HAS("<|calls|>") && HAS("<|flush|>"))))
        t->type[end_id] = TOK_USER;
    int s_id = vocab_lookup(t, "</s>", 4);
    if (s_id >= 0 && HAS("<|tool_response>")) t->type[s_id] = TOK_NORMAL;
#undef HAS
    for (int i = 0; i < n; i++) {
        int ty = t->type[i];
        if (ty == TOK_CONTROL || ty == TOK_UNKNOWN)
            t->attr[i] = ATTR_HIDDEN | ATTR_SPLIT;
        else if (ty == TOK_USER)
            t->attr[i] = ATTR_SPLIT;
    }

    /* merges */
    int64_t mi = gguf_find_key(g, "tokenizer.ggml.merges");
    if (mi < 0 || gguf_kv_type(g, mi) != GGUF_ARR || gguf_arr_type(g, mi) != GGUF_STR) {
        rc = util_fail(err, errlen, TOK_ERR_FORMAT, "tokenizer.ggml.merges: %s",
                       mi < 0 ? "missing" : "not an array of strings");
        goto fail;
    }
    uint64_t nm = gguf_arr_len(g, mi);
    if (nm > (1u << 26)) {
        rc = util_fail(err, errlen, TOK_ERR_FORMAT, "tokenizer.ggml.merges: %llu merges (limit %u)",
                       (unsigned long long)nm, 1u << 26);
        goto fail;
    }
    cap = 16;
    while (cap < 2u * (uint32_t)nm)
        cap <<= 1;
    t->merge_mask = cap - 1;
    t->merges = calloc(cap, sizeof *t->merges);
    char *buf = NULL;
    size_t buf_cap = 0;
    if (!t->merges) goto nomem;
    for (uint64_t j = 0; j < nm; j++) {
        size_t len;
        const char *s = gguf_arr_str(g, mi, j, &len);
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        int l = -1, r = -1, m = -1;
        if (sp && sp + 1 < s + len) {
            l = vocab_lookup(t, s, (size_t)(sp - s));
            r = vocab_lookup(t, sp + 1, (size_t)(s + len - sp - 1));
            if (len > buf_cap) {
                char *nb = realloc(buf, len);
                if (!nb) {
                    free(buf);
                    goto nomem;
                }
                buf = nb, buf_cap = len;
            }
            memcpy(buf, s, (size_t)(sp - s));
            memcpy(buf + (sp - s), sp + 1, (size_t)(s + len - sp - 1));
            m = vocab_lookup(t, buf, len - 1);
        }
        if (l < 0 || r < 0 || m < 0) {
            free(buf);
            char ex[100];
            rc = util_fail(err, errlen, TOK_ERR_FORMAT, "tokenizer.ggml.merges[%llu] = \"%s\": %s",
                           (unsigned long long)j, excerpt(ex, s, len),
                           !sp || sp + 1 >= s + len ? "not two tokens separated by a space"
                           : l < 0                  ? "left half is not a token"
                           : r < 0                  ? "right half is not a token"
                                                    : "merged text is not a token");
            goto fail;
        }
        uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
        uint32_t h = (uint32_t)util_mix64(key) & t->merge_mask;
        while (t->merges[h].key && t->merges[h].key != key)
            h = (h + 1) & t->merge_mask;
        if (!t->merges[h].key) t->merges[h] = (merge_slot){key, (int32_t)j, m};
    }
    free(buf);

    /* special ids */
    if ((rc = get_special_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos, err, errlen)) < 0)
        goto fail;
    if ((rc = get_special_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos, err, errlen)) < 0)
        goto fail;
    if ((rc = get_special_id(g, "tokenizer.ggml.padding_token_id", n, &t->pad, err, errlen)) < 0)
        goto fail;
    t->add_bos = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", true, &bad);
    if (bad) {
        rc = util_fail(err, errlen, TOK_ERR_FORMAT, "tokenizer.ggml.add_bos_token: not a boolean");
        goto fail;
    }
    if (t->add_bos && t->bos < 0) {
        rc = util_fail(
            err, errlen, TOK_ERR_FORMAT,
            "tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing");
        goto fail;
    }

    /* byte-level map */
    for (int b = 0; b < 256; b++) {
        unsigned char u[4];
        int k = utf8_put(tok_byte_cpt((unsigned char)b), u);
        memcpy(t->benc[b], u, 2);
        t->benc_len[b] = (uint8_t)k;
        t->byte_tok[b] = vocab_lookup(t, u, (size_t)k);
        for (int j = 0; j < 2; j++)
            t->byte_fb[b][j] = j < k ? vocab_lookup(t, u + j, 1) : -1;
    }

    /* special tokens matched in text, longest first */
    t->split_ids = malloc(sizeof *t->split_ids * (size_t)n);
    if (!t->split_ids) goto nomem;
    for (int i = 0; i < n; i++)
        if (t->attr[i] & ATTR_SPLIT) t->split_ids[t->n_split++] = i;
    qsort_r(t->split_ids, (size_t)t->n_split, sizeof *t->split_ids, cmp_split, t);

    /* rendered pieces */
    size_t ptotal = 0;
    for (int i = 0; i < n; i++)
        ptotal += render_piece(t, i, NULL);
    t->piece = malloc(ptotal + 1);
    t->piece_off = malloc(sizeof *t->piece_off * ((size_t)n + 1));
    if (!t->piece || !t->piece_off) goto nomem;
    if (ptotal > 0xF0000000u) {
        rc = util_fail(err, errlen, TOK_ERR_FORMAT,
                       "tokenizer.ggml.tokens: rendered text too large");
        goto fail;
    }
    size_t po = 0;
    for (int i = 0; i < n; i++) {
        t->piece_off[i] = (uint32_t)po;
        size_t k = render_piece(t, i, t->piece + po);
        if (k > t->max_piece) t->max_piece = k;
        po += k;
    }
    t->piece_off[n] = (uint32_t)po;

    /* the split pattern */
    int ecode;
    PCRE2_SIZE eoff;
    t->re = pcre2_compile((PCRE2_SPTR)tok_split_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                          &ecode, &eoff, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        rc = util_fail(err, errlen, TOK_ERR_NOMEM,
                       "tokenizer: PCRE2 rejected the split pattern at %zu: %s", (size_t)eoff,
                       (const char *)msg);
        goto fail;
    }
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->mctx) goto nomem;
    pcre2_set_match_limit(t->mctx, UINT32_MAX);
    pcre2_set_depth_limit(t->mctx, UINT32_MAX);
    pcre2_set_heap_limit(t->mctx, UINT32_MAX);

    *out = t;
    return 0;
nomem:
    rc = util_fail(err, errlen, TOK_ERR_NOMEM, "tokenizer: out of memory");
fail:
    tok_free(t);
    return rc;
}

void tok_free(tok *t) {
    if (!t) return;
    pcre2_code_free(t->re);
    pcre2_match_context_free(t->mctx);
    free(t->text);
    free(t->text_off);
    free(t->piece);
    free(t->piece_off);
    free(t->type);
    free(t->attr);
    free(t->vocab_hash);
    free(t->merges);
    free(t->split_ids);
    free(t);
}

int tok_n_vocab(const tok *t) {
    return t->n_vocab;
}
int tok_bos(const tok *t) {
    return t->bos;
}
int tok_eos(const tok *t) {
    return t->eos;
}
int tok_pad(const tok *t) {
    return t->pad;
}
bool tok_add_bos(const tok *t) {
    return t->add_bos;
}
size_t tok_max_piece(const tok *t) {
    return t->max_piece;
}

int tok_type_of(const tok *t, int id) {
    if (id < 0 || id >= t->n_vocab) return -1;
    return t->type[id];
}

const char *tok_piece(const tok *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece + t->piece_off[id];
}

const char *tok_text_of(const tok *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    size_t l;
    const char *s = tok_text(t, id, &l);
    if (len) *len = l;
    return s;
}

int tok_find(const tok *t, const char *text, size_t len) {
    return vocab_lookup(t, text, len);
}

/* ---- encoding ---- */

/* Unicode 15/15.1 letters (L) and numbers (N) that llama.cpp knows but PCRE2 built on an older
 * Unicode may not: substituted (same UTF-8 length) before matching so both classify alike. */
static const struct {
    uint32_t lo, hi;
    char cls;
} newer_unicode[] = {
    {0x1123F, 0x11240, 'L'}, {0x11F02, 0x11F02, 'L'}, {0x11F04, 0x11F10, 'L'},
    {0x11F12, 0x11F33, 'L'}, {0x11F50, 0x11F59, 'N'}, {0x1342F, 0x1342F, 'L'},
    {0x13441, 0x13446, 'L'}, {0x1B132, 0x1B132, 'L'}, {0x1B155, 0x1B155, 'L'},
    {0x1D2C0, 0x1D2D3, 'N'}, {0x1DF25, 0x1DF2A, 'L'}, {0x1E030, 0x1E06D, 'L'},
    {0x1E4D0, 0x1E4EB, 'L'}, {0x1E4F0, 0x1E4F9, 'N'}, {0x2B739, 0x2B739, 'L'},
    {0x2EBF0, 0x2EE5D, 'L'}, {0x31350, 0x323AF, 'L'},
};

static char newer_class(uint32_t c) {
    for (size_t i = 0; i < sizeof newer_unicode / sizeof newer_unicode[0]; i++)
        if (c >= newer_unicode[i].lo && c <= newer_unicode[i].hi) return newer_unicode[i].cls;
    return 0;
}

typedef struct sym {
    int32_t id;   /* token id, or -1: a byte whose one-char token is missing */
    int32_t prev; /* neighbour indices, -1 at the ends */
    int32_t next;
} sym;

typedef struct cand {
    uint64_t key;     /* rank << 32 | left symbol index: lowest rank first, then leftmost */
    int32_t lid, rid; /* ids of left and its right neighbour when pushed: stale if either changed */
} cand;

typedef struct enc_ctx {
    const tok *t;
    int32_t *out;
    int cap;
    long long count;
    uint64_t work;
    /* scratch sized for the longest raw fragment */
    unsigned char *norm; /* the fragment as llama.cpp sees it (invalid bytes -> U+FFFD) */
    unsigned char
        *safe; /* same length, what PCRE2 matches (surrogates, newer letters substituted) */
    pcre2_match_data *md;
    /* scratch grown to the longest piece */
    unsigned char *word; /* (2 * piece_cap) byte-level encoded piece */
    sym *syms;           /* (piece_cap) */
    size_t piece_cap;
    cand *heap; /* (heap_cap) merge candidates */
    size_t heap_cap, nh;
} enc_ctx;

static void emit(enc_ctx *c, int32_t id) {
    if (c->count < c->cap) c->out[c->count] = id;
    c->count++;
}

static void sift_down(cand *h, size_t n, size_t i) {
    cand x = h[i];
    for (;;) {
        size_t l = 2 * i + 1, m = l;
        if (l >= n) break;
        if (l + 1 < n && h[l + 1].key < h[l].key) m = l + 1;
        if (h[m].key >= x.key) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = x;
}

static int heap_push(enc_ctx *c, cand x) {
    if (c->nh == c->heap_cap) {
        size_t nc = c->heap_cap ? 2 * c->heap_cap : 64;
        cand *nhp = realloc(c->heap, sizeof *nhp * nc);
        if (!nhp) return TOK_ERR_NOMEM;
        c->heap = nhp, c->heap_cap = nc;
    }
    size_t i = c->nh++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c->heap[p].key <= x.key) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = x;
    return 0;
}

/* The candidate for merging symbol left with its right neighbour, if the vocab has that merge. */
static bool pair_cand(enc_ctx *c, int left, cand *out) {
    if (left < 0) return false;
    const sym *s = c->syms;
    int right = s[left].next;
    if (right < 0 || s[left].id < 0 || s[right].id < 0) return false;
    c->work++;
    const merge_slot *m = merge_lookup(c->t, s[left].id, s[right].id);
    if (!m) return false;
    *out = (cand){(uint64_t)(uint32_t)m->rank << 32 | (uint32_t)left, s[left].id, s[right].id};
    return true;
}

static int grow_piece(enc_ctx *c, size_t n) {
    if (n <= c->piece_cap) return 0;
    size_t nc = n < 64 ? 64 : n + n / 2;
    unsigned char *w = realloc(c->word, 2 * nc);
    if (w) c->word = w;
    sym *sy = w ? realloc(c->syms, sizeof *sy * nc) : NULL;
    if (sy) c->syms = sy;
    if (!w || !sy) return TOK_ERR_NOMEM;
    c->piece_cap = nc;
    return 0;
}

/* One pre-tokenized piece (raw bytes) -> ids: whole-piece lookup, else BPE: merge the adjacent
 * pair of lowest rank (leftmost on ties) until none is left, as llama.cpp does. */
static int encode_piece(enc_ctx *c, const unsigned char *p, int n) {
    const tok *t = c->t;
    if (grow_piece(c, (size_t)n) < 0) return TOK_ERR_NOMEM;
    size_t wl = 0;
    for (int i = 0; i < n; i++) {
        memcpy(c->word + wl, t->benc[p[i]], t->benc_len[p[i]]);
        wl += t->benc_len[p[i]];
    }
    c->work += (uint64_t)n;
    int whole = vocab_lookup(t, c->word, wl);
    if (whole >= 0) {
        emit(c, whole);
        return 0;
    }
    sym *s = c->syms;
    for (int i = 0; i < n; i++)
        s[i] = (sym){t->byte_tok[p[i]], i - 1, i + 1 < n ? i + 1 : -1};
    if (n <= 16) {
        /* short piece: scan for the best pair each round (at most 15 rounds of 15) */
        for (;;) {
            int best = -1;
            int32_t best_rank = 0, best_merged = 0;
            for (int i = 0; i >= 0 && s[i].next >= 0; i = s[i].next) {
                if (s[i].id < 0 || s[s[i].next].id < 0) continue;
                const merge_slot *m = merge_lookup(t, s[i].id, s[s[i].next].id);
                c->work++;
                if (m && (best < 0 || m->rank < best_rank))
                    best = i, best_rank = m->rank, best_merged = m->merged;
            }
            if (best < 0) break;
            int r = s[best].next;
            s[best].id = best_merged;
            s[best].next = s[r].next;
            if (s[r].next >= 0) s[s[r].next].prev = best;
        }
    } else {
        c->nh = 0;
        cand x;
        for (int i = 0; i + 1 < n; i++)
            if (pair_cand(c, i, &x) && heap_push(c, x) < 0) return TOK_ERR_NOMEM;
        while (c->nh > 0) {
            cand b = c->heap[0];
            c->heap[0] = c->heap[--c->nh];
            if (c->nh) sift_down(c->heap, c->nh, 0);
            c->work++;
            int left = (int)(uint32_t)b.key, right = s[left].next;
            if (s[left].id != b.lid || right < 0 || s[right].id != b.rid) continue; /* stale */
            s[left].id = merge_lookup(t, b.lid, b.rid)->merged;
            s[right].id = -2; /* dead: its own candidates go stale */
            s[left].next = s[right].next;
            if (s[right].next >= 0) s[s[right].next].prev = left;
            if (pair_cand(c, s[left].prev, &x) && heap_push(c, x) < 0) return TOK_ERR_NOMEM;
            if (pair_cand(c, left, &x) && heap_push(c, x) < 0) return TOK_ERR_NOMEM;
        }
    }
    for (int i = 0; i >= 0; i = s[i].next) {
        if (s[i].id >= 0) {
            emit(c, s[i].id);
        } else {
            /* a byte without its own token: llama.cpp looks up each byte of its encoding */
            for (int j = 0; j < 2; j++)
                if (t->byte_fb[p[i]][j] >= 0) emit(c, t->byte_fb[p[i]][j]);
        }
    }
    return 0;
}

/* Raw text (no special tokens) -> ids. */
static int encode_raw(enc_ctx *c, const unsigned char *text, size_t len) {
    /* llama.cpp decodes the text to code points (U+FFFD for each invalid byte, overlong forms
     * accepted) and re-encodes them: usually that is the text itself, so check that first */
    bool plain = true;
    for (size_t i = 0; i < len && plain;) {
        uint32_t cpt;
        int k = llama_utf8_decode(text + i, len - i, &cpt);
        unsigned char u[4];
        c->work++;
        if (k == 0 || cpt > 0x10FFFF || (cpt >= 0xD800 && cpt <= 0xDFFF) || utf8_put(cpt, u) != k ||
            (cpt >= 0x10000 && newer_class(cpt)))
            plain = false;
        i += k ? (size_t)k : 1;
    }
    size_t nl = len;
    const unsigned char *norm = text, *safe = text;
    if (!plain) {
        nl = 0;
        for (size_t i = 0; i < len;) {
            uint32_t cpt;
            int k = llama_utf8_decode(text + i, len - i, &cpt);
            unsigned char u[4], v[4];
            int ul;
            if (k == 0 || cpt > 0x10FFFF) {
                ul = utf8_put(0xFFFD, u);
                memcpy(v, u, 4);
                k = k ? k : 1;
            } else {
                ul = utf8_put(cpt, u);
                memcpy(v, u, 4);
                if (cpt >= 0xD800 && cpt <= 0xDFFF) utf8_put(0xFFFD, v); /* also 3 bytes, class S */
                char cls = cpt >= 0x10000 ? newer_class(cpt) : 0;
                if (cls == 'L') utf8_put(0x20000, v); /* a CJK letter PCRE2 knows, 4 bytes */
                if (cls == 'N') utf8_put(0x1D7CE, v); /* a digit PCRE2 knows, 4 bytes */
            }
            memcpy(c->norm + nl, u, (size_t)ul);
            memcpy(c->safe + nl, v, (size_t)ul);
            nl += (size_t)ul;
            i += (size_t)k;
            c->work++;
        }
        norm = c->norm, safe = c->safe;
    }

    size_t pos = 0;
    while (pos < nl) {
        uint32_t opts = PCRE2_NO_UTF_CHECK;
        int rc = pcre2_match(c->t->re, safe, nl, pos, opts, c->md, c->t->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(c->t->re, safe, nl, pos, opts | PCRE2_NO_JIT, c->md, c->t->mctx);
        c->work++;
        size_t ms, me;
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
            ms = ov[0], me = ov[1];
        } else if (rc == PCRE2_ERROR_NOMATCH) {
            ms = me = nl;
        } else {
            return TOK_ERR_NOMEM; /* match/heap limit: only on resource exhaustion */
        }
        if (ms > pos && encode_piece(c, norm + pos, (int)(ms - pos)) < 0)
            return TOK_ERR_NOMEM; /* never seen */
        if (me > ms && encode_piece(c, norm + ms, (int)(me - ms)) < 0) return TOK_ERR_NOMEM;
        if (me <= pos) me = pos + 1; /* cannot happen: the pattern never matches empty */
        pos = me;
    }
    return 0;
}

static uint32_t gram4(const char *p) {
    uint32_t x;
    memcpy(&x, p, 4);
    return (x * 2654435761u) >> 16;
}

typedef struct frag {
    size_t off, len;
    int32_t id; /* -1: raw text */
} frag;

int tok_encode_counted(const tok *t, const char *text, size_t len, bool add_bos, bool parse_special,
                       int32_t *out, int cap, uint64_t *work) {
    if (len > (size_t)1 << 30) return TOK_ERR_TOO_LONG;
    enc_ctx c = {.t = t, .out = out, .cap = out ? cap : 0};
    int rc = 0;
    frag *fr = NULL, *nf = NULL;
    size_t nfr = 0;
    if (add_bos && t->bos >= 0) emit(&c, t->bos);
    if (len > 0) {
        fr = malloc(sizeof *fr);
        if (!fr) return TOK_ERR_NOMEM;
        fr[0] = (frag){0, len, -1};
        nfr = 1;
    }
    /* which 4-byte sequences occur in the text (hashed, 2^16 bits): most special tokens can then
     * be skipped without searching (vocabs have hundreds of <|reserved_N|> tokens) */
    uint64_t *grams = NULL;
    if (nfr && len >= 4 && t->n_split > 4) {
        grams = calloc(1024, sizeof *grams);
        if (!grams) {
            rc = TOK_ERR_NOMEM;
            goto done;
        }
        for (size_t i = 0; i + 4 <= len; i++) {
            uint32_t h = gram4(text + i);
            grams[h >> 6] |= 1ull << (h & 63);
        }
        c.work += len / 4;
    }
    /* special tokens first, longest first, each splitting every raw fragment left to right */
    for (int k = 0; k < t->n_split && nfr; k++) {
        int id = t->split_ids[k];
        if (!parse_special && (t->attr[id] & ATTR_HIDDEN)) continue;
        size_t sl;
        const char *st = tok_text(t, id, &sl);
        if (sl > len) continue;
        if (grams && sl >= 4) {
            uint32_t h = gram4(st);
            if (!(grams[h >> 6] >> (h & 63) & 1)) continue;
        }
        size_t extra = 0;
        for (size_t f = 0; f < nfr; f++) {
            if (fr[f].id >= 0 || fr[f].len < sl) continue;
            const char *p = text + fr[f].off, *end = p + fr[f].len;
            c.work += fr[f].len / 16 + 1;
            while ((p = memmem(p, (size_t)(end - p), st, sl)) != NULL)
                extra += 2, p += sl;
        }
        if (!extra) continue;
        nf = malloc(sizeof *nf * (nfr + extra));
        if (!nf) {
            rc = TOK_ERR_NOMEM;
            goto done;
        }
        size_t m = 0;
        for (size_t f = 0; f < nfr; f++) {
            if (fr[f].id >= 0 || fr[f].len < sl) {
                nf[m++] = fr[f];
                continue;
            }
            const char *base = text + fr[f].off, *p = base, *end = base + fr[f].len, *q;
            while ((q = memmem(p, (size_t)(end - p), st, sl)) != NULL) {
                if (q > p) nf[m++] = (frag){(size_t)(p - text), (size_t)(q - p), -1};
                nf[m++] = (frag){(size_t)(q - text), sl, id};
                p = q + sl;
            }
            if (p < end) nf[m++] = (frag){(size_t)(p - text), (size_t)(end - p), -1};
        }
        free(fr);
        fr = nf, nf = NULL, nfr = m;
    }
    size_t longest = 0;
    for (size_t f = 0; f < nfr; f++)
        if (fr[f].id < 0 && fr[f].len > longest) longest = fr[f].len;
    if (longest) {
        /* a code point never grows when normalized: U+FFFD (3 bytes) replaces either one invalid
         * byte or a 4-byte sequence, so allow 3x */
        c.norm = malloc(3 * longest);
        c.safe = malloc(3 * longest);
        c.md = pcre2_match_data_create_from_pattern(t->re, NULL);
        if (!c.norm || !c.safe || !c.md) {
            rc = TOK_ERR_NOMEM;
            goto done;
        }
    }
    for (size_t f = 0; f < nfr; f++) {
        if (fr[f].id >= 0) {
            emit(&c, fr[f].id);
        } else if ((rc = encode_raw(&c, (const unsigned char *)text + fr[f].off, fr[f].len)) < 0) {
            goto done;
        }
    }
    rc = c.count > 0x7FFFFFFF ? TOK_ERR_TOO_LONG : (int)c.count;
done:
    if (work) *work += c.work;
    free(grams);
    free(fr);
    free(nf);
    free(c.norm);
    free(c.safe);
    free(c.word);
    free(c.syms);
    free(c.heap);
    pcre2_match_data_free(c.md);
    return rc;
}

int tok_encode(const tok *t, const char *text, size_t len, bool add_bos, bool parse_special,
               int32_t *out, int cap) {
    return tok_encode_counted(t, text, len, add_bos, parse_special, out, cap, NULL);
}

/* ---- decoding ---- */

static bool visible(const tok *t, int32_t id, bool render_special) {
    if (id < 0 || id >= t->n_vocab) return false;
    return render_special || !(t->attr[id] & ATTR_HIDDEN);
}

size_t tok_decode(const tok *t, const int32_t *ids, int n, bool render_special, char *buf,
                  size_t cap) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!visible(t, ids[i], render_special)) continue;
        size_t len;
        const char *p = tok_piece(t, ids[i], &len);
        if (total < cap) memcpy(buf + total, p, len < cap - total ? len : cap - total);
        total += len;
    }
    if (total < cap) buf[total] = 0;
    return total;
}

void tok_stream_init(tok_stream *s, const tok *t, bool render_special) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->render_special = render_special;
}

/* Length of the complete UTF-8 sequence starting at b[0] given avail bytes: >0 complete (or 1 for
 * an invalid byte that goes out as it is), 0 if it is a valid but unfinished prefix. */
static int utf8_complete(const unsigned char *b, size_t avail) {
    unsigned char c = b[0];
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 1;
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= avail) return 0;
        unsigned char x = b[k];
        if (x < (k == 1 ? lo : 0x80) || x > (k == 1 ? hi : 0xBF)) return 1;
    }
    return need;
}

int tok_utf8_len(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    if (!n) return 0;
    if (u[0] < 0x80) return 1;
    int k = utf8_complete(u, n);
    return k > 1 ? k : 0;
}

static unsigned char stream_byte(const tok_stream *s, const char *p, size_t i) {
    return i < (size_t)s->n_pending ? s->pending[i] : (unsigned char)p[i - (size_t)s->n_pending];
}

size_t tok_stream_push(tok_stream *s, int32_t id, char *buf, size_t cap) {
    size_t len = 0;
    const char *p = visible(s->t, id, s->render_special) ? tok_piece(s->t, id, &len) : "";
    size_t total = (size_t)s->n_pending + len, keep_from = total;
    for (size_t i = 0; i < total;) {
        unsigned char b[4];
        size_t av = total - i < 4 ? total - i : 4;
        for (size_t k = 0; k < av; k++)
            b[k] = stream_byte(s, p, i + k);
        int k = utf8_complete(b, av);
        if (k == 0) { /* an unfinished character: at most 3 bytes, held for the next id */
            keep_from = i;
            break;
        }
        i += (size_t)k;
    }
    if (keep_from > cap) return keep_from; /* does not fit: nothing consumed */
    for (size_t k = 0; k < keep_from; k++)
        buf[k] = (char)stream_byte(s, p, k);
    unsigned char held[4];
    size_t nh = total - keep_from;
    for (size_t k = 0; k < nh; k++)
        held[k] = stream_byte(s, p, keep_from + k);
    memcpy(s->pending, held, nh);
    s->n_pending = (int)nh;
    if (keep_from < cap) buf[keep_from] = 0;
    return keep_from;
}

size_t tok_stream_flush(tok_stream *s, char *buf, size_t cap) {
    size_t n = (size_t)s->n_pending;
    if (n > cap) return n;
    memcpy(buf, s->pending, n);
    if (n < cap) buf[n] = 0;
    s->n_pending = 0;
    return n;
}
