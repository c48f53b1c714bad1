/* bpe_train.c: byte-level BPE training with incremental pair counts and a lazy max-heap. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "synth/bpe_train.h"
#include "engine/tok.h"
#include "engine/util.h"
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const specials[BPE_N_SPECIAL] = {
    "<|pad|>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|fim_pre|>",
    "<|fim_mid|>",
    "<|fim_suf|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|tool_list_start|>",
    "<|tool_list_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|tool_response_start|>",
    "<|tool_response_end|>",
    "<think>",
    "</think>",
};

const char *bpe_special(int i) {
    return i >= 0 && i < BPE_N_SPECIAL ? specials[i] : NULL;
}

/* ---- GPT-2 byte <-> unicode ---- */

/* Internal id of byte b: the rank of its code point among the 256 (0 for '!'). */
static int32_t byte_rank(unsigned b) {
    unsigned cp = tok_byte_cpt(b);
    if (cp >= 256) return (int32_t)(cp - 256 + 188);
    return (int32_t)(cp > 173 ? cp - 68 : cp > 160 ? cp - 67 : cp - 33);
}

size_t bpe_bytes_to_unicode(const unsigned char *src, size_t n, char *dst) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned cp = tok_byte_cpt(src[i]);
        if (cp < 0x80) {
            dst[o++] = (char)cp;
        } else {
            dst[o++] = (char)(0xC0 | (cp >> 6));
            dst[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    dst[o] = 0;
    return o;
}

/* ---- small growable arrays and a byte-string hash ---- */

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q) return false;
    *p = q;
    *cap = nc;
    return true;
}

/* Byte strings stored in one arena, looked up by an open-addressing table of ids. */
typedef struct strtab {
    unsigned char *arena;
    size_t arena_len, arena_cap;
    size_t *off;   /* [n] offset of string i */
    uint32_t *len; /* [n] */
    size_t n, cap;
    int32_t *slots; /* [nslots] id or -1 */
    size_t nslots;
} strtab;

static bool strtab_rehash(strtab *t, size_t nslots) {
    int32_t *s = malloc(nslots * sizeof *s);
    if (!s) return false;
    for (size_t i = 0; i < nslots; i++)
        s[i] = -1;
    for (size_t id = 0; id < t->n; id++) {
        size_t h = util_hash_bytes(t->arena + t->off[id], t->len[id]) & (nslots - 1);
        while (s[h] >= 0)
            h = (h + 1) & (nslots - 1);
        s[h] = (int32_t)id;
    }
    free(t->slots);
    t->slots = s;
    t->nslots = nslots;
    return true;
}

static int64_t strtab_find(const strtab *t, const unsigned char *p, size_t n) {
    if (!t->nslots) return -1;
    size_t h = util_hash_bytes(p, n) & (t->nslots - 1);
    for (; t->slots[h] >= 0; h = (h + 1) & (t->nslots - 1)) {
        int32_t id = t->slots[h];
        if (t->len[id] == n && !memcmp(t->arena + t->off[id], p, n)) return id;
    }
    return -1;
}

/* Adds a string known to be absent; returns its id or -1 on allocation failure. */
static int64_t strtab_add(strtab *t, const unsigned char *p, size_t n) {
    if ((t->n + 1) * 2 > t->nslots && !strtab_rehash(t, t->nslots ? t->nslots * 2 : 1024))
        return -1;
    if (!grow((void **)&t->arena, &t->arena_cap, t->arena_len + n + 1, 1)) return -1;
    size_t cap = t->cap;
    if (!grow((void **)&t->off, &cap, t->n + 1, sizeof *t->off)) return -1;
    if (!grow((void **)&t->len, &t->cap, t->n + 1, sizeof *t->len)) return -1;
    if (n) memcpy(t->arena + t->arena_len, p, n);
    t->off[t->n] = t->arena_len;
    t->len[t->n] = (uint32_t)n;
    t->arena_len += n;
    size_t h = util_hash_bytes(p, n) & (t->nslots - 1);
    while (t->slots[h] >= 0)
        h = (h + 1) & (t->nslots - 1);
    t->slots[h] = (int32_t)t->n;
    return (int64_t)t->n++;
}

static void strtab_free(strtab *t) {
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->slots);
}

/* ---- trainer state ---- */

typedef struct word {
    int32_t *sym; /* token ids (internal: 0..255 bytes in GPT-2 order, then merges) */
    int32_t len;
    int64_t cnt;   /* occurrences in the text */
    int32_t stamp; /* last merge step that visited this word */
} word;

typedef struct pair {
    int32_t a, b;
    int64_t cnt;
    int32_t *wl; /* words that contain (or once contained) the pair; may repeat */
    size_t nwl, capwl;
    int32_t touch; /* last step whose counts changed this pair */
    bool done;     /* merged (or rejected): never chosen again */
} pair;

typedef struct heapent {
    int64_t cnt;
    int32_t a, b;
} heapent;

typedef struct trainer {
    strtab toks;   /* internal token strings (raw bytes), ids as in word.sym */
    int64_t *freq; /* [toks.n] byte count / pair count at merge time (fill order) */
    size_t freq_cap;
    int32_t (*mg)[2]; /* merges as internal (left, right) */
    size_t n_mg, cap_mg;
    word *w;
    size_t nw, capw;
    pair *p;
    size_t np, capp;
    int32_t *pslots; /* open addressing over pair indices */
    size_t npslots;
    heapent *heap;
    size_t nheap, capheap;
    int32_t *touched;
    size_t ntouched, captouched;
    int32_t specials_base; /* internal ids [specials_base, +16) hold the special texts */
} trainer;

static uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static bool pairs_rehash(trainer *t, size_t nslots) {
    int32_t *s = malloc(nslots * sizeof *s);
    if (!s) return false;
    for (size_t i = 0; i < nslots; i++)
        s[i] = -1;
    for (size_t i = 0; i < t->np; i++) {
        size_t h = util_mix64(pair_key(t->p[i].a, t->p[i].b)) & (nslots - 1);
        while (s[h] >= 0)
            h = (h + 1) & (nslots - 1);
        s[h] = (int32_t)i;
    }
    free(t->pslots);
    t->pslots = s;
    t->npslots = nslots;
    return true;
}

/* Index of pair (a, b), creating it when create; -1 if absent (or allocation failed). */
static int64_t pair_get(trainer *t, int32_t a, int32_t b, bool create) {
    if (t->npslots) {
        size_t h = util_mix64(pair_key(a, b)) & (t->npslots - 1);
        for (; t->pslots[h] >= 0; h = (h + 1) & (t->npslots - 1)) {
            pair *q = &t->p[t->pslots[h]];
            if (q->a == a && q->b == b) return t->pslots[h];
        }
    }
    if (!create) return -1;
    if ((t->np + 1) * 2 > t->npslots && !pairs_rehash(t, t->npslots ? t->npslots * 2 : 4096))
        return -1;
    if (!grow((void **)&t->p, &t->capp, t->np + 1, sizeof *t->p)) return -1;
    pair *q = &t->p[t->np];
    memset(q, 0, sizeof *q);
    q->a = a;
    q->b = b;
    q->touch = -1;
    size_t h = util_mix64(pair_key(a, b)) & (t->npslots - 1);
    while (t->pslots[h] >= 0)
        h = (h + 1) & (t->npslots - 1);
    t->pslots[h] = (int32_t)t->np;
    return (int64_t)t->np++;
}

/* Heap order: higher count first, then lower left id, then lower right id. */
static bool heap_before(const heapent *x, const heapent *y) {
    if (x->cnt != y->cnt) return x->cnt > y->cnt;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static bool heap_push(trainer *t, int64_t cnt, int32_t a, int32_t b) {
    if (!grow((void **)&t->heap, &t->capheap, t->nheap + 1, sizeof *t->heap)) return false;
    size_t i = t->nheap++;
    heapent e = {cnt, a, b};
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!heap_before(&e, &t->heap[par])) break;
        t->heap[i] = t->heap[par];
        i = par;
    }
    t->heap[i] = e;
    return true;
}

static heapent heap_pop(trainer *t) {
    heapent top = t->heap[0], e = t->heap[--t->nheap];
    size_t i = 0, n = t->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(&t->heap[c + 1], &t->heap[c])) c++;
        if (!heap_before(&t->heap[c], &e)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n) t->heap[i] = e;
    return top;
}

/* Adds d * w.cnt to every adjacent pair of word wi; on d > 0, new pairs containing `fresh`
 * (or all pairs when fresh < 0) get wi appended to their word list. */
static bool word_count_pairs(trainer *t, int32_t wi, int d, int32_t fresh, int32_t step) {
    word *w = &t->w[wi];
    for (int32_t i = 0; i + 1 < w->len; i++) {
        int32_t a = w->sym[i], b = w->sym[i + 1];
        int64_t pi = pair_get(t, a, b, d > 0);
        if (pi < 0) {
            if (d > 0) return false;
            continue;
        }
        pair *q = &t->p[pi];
        q->cnt += d * w->cnt;
        if (d > 0 && (fresh < 0 || a == fresh || b == fresh)) {
            if (!grow((void **)&q->wl, &q->capwl, q->nwl + 1, sizeof *q->wl)) return false;
            q->wl[q->nwl++] = wi;
        }
        if (q->touch != step) {
            q->touch = step;
            if (!grow((void **)&t->touched, &t->captouched, t->ntouched + 1, sizeof *t->touched))
                return false;
            t->touched[t->ntouched++] = (int32_t)pi;
        }
    }
    return true;
}

static bool freq_set(trainer *t, int64_t id, int64_t f) {
    if (!grow((void **)&t->freq, &t->freq_cap, (size_t)id + 1, sizeof *t->freq)) return false;
    t->freq[id] = f;
    return true;
}

static bool add_merge(trainer *t, int32_t a, int32_t b) {
    if (!grow((void **)&t->mg, &t->cap_mg, t->n_mg + 1, sizeof *t->mg)) return false;
    t->mg[t->n_mg][0] = a;
    t->mg[t->n_mg][1] = b;
    t->n_mg++;
    return true;
}

/* Concatenation of tokens a and b into buf (grown as needed); returns its length. */
static size_t concat(trainer *t, int32_t a, int32_t b, unsigned char **buf, size_t *cap) {
    size_t la = t->toks.len[a], lb = t->toks.len[b];
    if (!grow((void **)buf, cap, la + lb + 1, 1)) return (size_t)-1;
    memcpy(*buf, t->toks.arena + t->toks.off[a], la);
    memcpy(*buf + la, t->toks.arena + t->toks.off[b], lb);
    return la + lb;
}

typedef struct piece_set {
    strtab tab;
    int64_t *cnt;
    size_t cntcap;
} piece_set;

static bool piece_add(piece_set *ps, const char *p, size_t n) {
    int64_t id = strtab_find(&ps->tab, (const unsigned char *)p, n);
    if (id < 0) {
        id = strtab_add(&ps->tab, (const unsigned char *)p, n);
        if (id < 0 || !grow((void **)&ps->cnt, &ps->cntcap, (size_t)id + 1, sizeof *ps->cnt))
            return false;
        ps->cnt[id] = 0;
    }
    ps->cnt[id]++;
    return true;
}

/* Splits text with the tokenizer's pattern (engine/tok.h) into distinct pieces with counts (t->w). Valid UTF-8 runs
 * are matched one at a time (PCRE2_NO_UTF_CHECK: linear time); each run of invalid bytes is a
 * piece of its own. */
static int pretokenize(trainer *t, const char *text, size_t len, char *err, size_t errlen) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)tok_split_pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        util_seterr(err, errlen,
                    "bpe_train: pre-tokenizer pattern does not compile (pcre2 error %d)", ec);
        return -1;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    piece_set ps = {0};
    int rc = -1;
    if (!md) goto oom;
    size_t pos = 0;
    while (pos < len) {
        size_t q = pos;
        while (q < len && !tok_utf8_len(text + q, len - q))
            q++;
        if (q > pos) {
            if (!piece_add(&ps, text + pos, q - pos)) goto oom;
            pos = q;
            continue;
        }
        size_t end = pos, k;
        while (end < len && (k = (size_t)tok_utf8_len(text + end, len - end)))
            end += k;
        const char *seg = text + pos;
        size_t n = end - pos, at = 0;
        while (at < n) {
            int m = pcre2_match(re, (PCRE2_SPTR)seg, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
            size_t s = n, e = n;
            if (m >= 0) {
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                s = ov[0];
                e = ov[1];
            } else if (m != PCRE2_ERROR_NOMATCH) {
                util_seterr(err, errlen,
                            "bpe_train: pre-tokenizer match failed at byte %zu (pcre2 %d)",
                            pos + at, m);
                goto done;
            }
            /* text the pattern skips (none for this pattern) is kept as a piece */
            if (s > at && !piece_add(&ps, seg + at, s - at)) goto oom;
            if (e > s && !piece_add(&ps, seg + s, e - s)) goto oom;
            at = e > at ? e : n;
        }
        pos = end;
    }
    strtab pieces = ps.tab;
    int64_t *cnt = ps.cnt;
    /* words, in first-seen order */
    t->w = calloc(pieces.n ? pieces.n : 1, sizeof *t->w);
    if (!t->w) goto oom;
    t->capw = pieces.n;
    for (size_t i = 0; i < pieces.n; i++) {
        word *w = &t->w[t->nw++];
        w->len = (int32_t)pieces.len[i];
        w->cnt = cnt[i];
        w->stamp = -1;
        w->sym = malloc((w->len ? (size_t)w->len : 1) * sizeof *w->sym);
        if (!w->sym) goto oom;
        const unsigned char *p = pieces.arena + pieces.off[i];
        for (int32_t j = 0; j < w->len; j++) {
            w->sym[j] = byte_rank(p[j]);
            t->freq[w->sym[j]] += w->cnt;
        }
    }
    rc = 0;
    goto done;
oom:
    util_seterr(err, errlen, "bpe_train: out of memory");
done:
    strtab_free(&ps.tab);
    free(ps.cnt);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc;
}

static void trainer_free(trainer *t) {
    strtab_free(&t->toks);
    free(t->freq);
    free(t->mg);
    for (size_t i = 0; i < t->nw; i++)
        free(t->w[i].sym);
    free(t->w);
    for (size_t i = 0; i < t->np; i++)
        free(t->p[i].wl);
    free(t->p);
    free(t->pslots);
    free(t->heap);
    free(t->touched);
}

/* Tokens in the final vocab so far: 256 bytes + 16 specials + learned = every internal id. */
static size_t vocab_now(const trainer *t) {
    return t->toks.n;
}

/* Learns merges from pair counts until none is left or the vocab is full. */
static int learn(trainer *t, size_t n_vocab) {
    for (size_t i = 0; i < t->nw; i++)
        if (!word_count_pairs(t, (int32_t)i, +1, -1, -1)) return -1;
    for (size_t i = 0; i < t->np; i++)
        if (t->p[i].cnt > 0 && !heap_push(t, t->p[i].cnt, t->p[i].a, t->p[i].b)) return -1;
    unsigned char *buf = NULL;
    size_t bufcap = 0;
    int32_t step = 0;
    while (vocab_now(t) < n_vocab && t->nheap) {
        heapent e = heap_pop(t);
        int64_t pi = pair_get(t, e.a, e.b, false);
        if (pi < 0) continue;
        pair *q = &t->p[pi];
        if (q->done || q->cnt <= 0 || q->cnt != e.cnt) continue; /* stale entry */
        q->done = true;
        size_t n = concat(t, e.a, e.b, &buf, &bufcap);
        if (n == (size_t)-1) goto oom;
        int64_t nt = strtab_find(&t->toks, buf, n);
        if (nt >= t->specials_base && nt < t->specials_base + BPE_N_SPECIAL) continue;
        if (nt < 0) {
            nt = strtab_add(&t->toks, buf, n);
            if (nt < 0 || !freq_set(t, nt, e.cnt)) goto oom;
        }
        if (!add_merge(t, e.a, e.b)) goto oom;
        step++;
        t->ntouched = 0;
        /* word lists may grow while we walk this one: copy its length first */
        size_t nwl = q->nwl;
        for (size_t k = 0; k < nwl; k++) {
            int32_t wi = t->p[pi].wl[k];
            word *w = &t->w[wi];
            if (w->stamp == step) continue;
            w->stamp = step;
            bool has = false;
            for (int32_t i = 0; i + 1 < w->len && !has; i++)
                has = w->sym[i] == e.a && w->sym[i + 1] == e.b;
            if (!has) continue;
            if (!word_count_pairs(t, wi, -1, -1, step)) goto oom;
            int32_t o = 0;
            for (int32_t i = 0; i < w->len; i++) {
                if (i + 1 < w->len && w->sym[i] == e.a && w->sym[i + 1] == e.b) {
                    w->sym[o++] = (int32_t)nt;
                    i++;
                } else {
                    w->sym[o++] = w->sym[i];
                }
            }
            w->len = o;
            if (!word_count_pairs(t, wi, +1, (int32_t)nt, step)) goto oom;
        }
        for (size_t k = 0; k < t->ntouched; k++) {
            pair *r = &t->p[t->touched[k]];
            if (!r->done && r->cnt > 0 && !heap_push(t, r->cnt, r->a, r->b)) goto oom;
        }
    }
    free(buf);
    return 0;
oom:
    free(buf);
    return -1;
}

static bool all_lower(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] < 'a' || p[i] > 'z') return false;
    return n > 0;
}

static bool is_alpha(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int sort_ids(int32_t *ids, size_t n, const int64_t *freq) {
    /* bottom-up merge sort: frequency descending, then id; stable and context-free */
    if (n < 2) return 0;
    int32_t *tmp = malloc(n * sizeof *tmp);
    if (!tmp) return -1;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int32_t a = ids[i], b = ids[j];
                bool a_first = freq[a] != freq[b] ? freq[a] > freq[b] : a < b;
                tmp[k++] = a_first ? ids[i++] : ids[j++];
            }
            while (i < mid)
                tmp[k++] = ids[i++];
            while (j < hi)
                tmp[k++] = ids[j++];
        }
        memcpy(ids, tmp, n * sizeof *ids);
    }
    free(tmp);
    return 0;
}

/* Adds merge a+b if its result is new; returns 1 added, 0 skipped, -1 out of memory. */
static int fill_try(trainer *t, int32_t a, int32_t b, unsigned char **buf, size_t *cap) {
    size_t n = concat(t, a, b, buf, cap);
    if (n == (size_t)-1) return -1;
    if (strtab_find(&t->toks, *buf, n) >= 0) return 0;
    int64_t nt = strtab_add(&t->toks, *buf, n);
    if (nt < 0 || !freq_set(t, nt, 0) || !add_merge(t, a, b)) return -1;
    return 1;
}

/* Grows the vocab to n_vocab with merges of frequent tokens (see bpe_train's contract). */
static int fill(trainer *t, size_t n_vocab) {
    if (vocab_now(t) >= n_vocab) return 0;
    size_t n0 = t->toks.n;
    int32_t *left = malloc(n0 * sizeof *left), *right = malloc(n0 * sizeof *right);
    unsigned char *buf = NULL;
    size_t bufcap = 0, nl = 0, nr = 0;
    int rc = -1;
    if (!left || !right) goto done;
    for (size_t id = 0; id < n0; id++) {
        if ((int64_t)id >= t->specials_base && (int64_t)id < t->specials_base + BPE_N_SPECIAL)
            continue;
        const unsigned char *p = t->toks.arena + t->toks.off[id];
        size_t n = t->toks.len[id];
        if (n && is_alpha(p[n - 1])) left[nl++] = (int32_t)id;
        if (all_lower(p, n)) right[nr++] = (int32_t)id;
    }
    if (sort_ids(left, nl, t->freq) || sort_ids(right, nr, t->freq)) goto done;
    /* phase A: pairs by increasing rank sum (diagonals of the left x right grid) */
    size_t maxs = nl && nr ? nl + nr - 1 : 0;
    for (size_t s = 0; s < maxs && vocab_now(t) < n_vocab; s++) {
        size_t i0 = s >= nr ? s - nr + 1 : 0;
        for (size_t i = i0; i <= s && i < nl && vocab_now(t) < n_vocab; i++) {
            int r = fill_try(t, left[i], right[s - i], &buf, &bufcap);
            if (r < 0) goto done;
        }
    }
    /* phase B (tiny texts only): extend every token, old and new, by one byte token */
    for (size_t id = 0; id < t->toks.n && vocab_now(t) < n_vocab; id++) {
        if ((int64_t)id >= t->specials_base && (int64_t)id < t->specials_base + BPE_N_SPECIAL)
            continue;
        for (int32_t b = 0; b < 256 && vocab_now(t) < n_vocab; b++)
            if (fill_try(t, (int32_t)id, b, &buf, &bufcap) < 0) goto done;
    }
    rc = 0;
done:
    free(left);
    free(right);
    free(buf);
    return rc;
}

int bpe_train(bpe_vocab **out, const char *text, size_t len, int n_vocab, char *err,
              size_t errlen) {
    *out = NULL;
    if (n_vocab < BPE_N_BASE || n_vocab > BPE_MAX_VOCAB) {
        util_seterr(err, errlen, "vocab size %d out of range [%d, %d] (16 specials + 256 bytes)",
                    n_vocab, BPE_N_BASE, BPE_MAX_VOCAB);
        return -1;
    }
    trainer t = {0};
    bpe_vocab *v = NULL;
    unsigned char bytes[2];
    /* internal ids 0..255: the byte tokens in code-point order; then the 16 special texts
     * (kept so no merge can produce one), then learned tokens. Final id = 16 + internal for
     * bytes, and the specials move to the front. */
    for (unsigned cp = 0; cp < 512; cp++) {
        for (unsigned b = 0; b < 256; b++) {
            if (tok_byte_cpt(b) != cp) continue;
            bytes[0] = (unsigned char)b;
            if (strtab_add(&t.toks, bytes, 1) < 0 || !freq_set(&t, (int64_t)t.toks.n - 1, 0))
                goto oom;
        }
    }
    t.specials_base = (int32_t)t.toks.n;
    for (int i = 0; i < BPE_N_SPECIAL; i++)
        if (strtab_add(&t.toks, (const unsigned char *)specials[i], strlen(specials[i])) < 0 ||
            !freq_set(&t, (int64_t)t.toks.n - 1, 0))
            goto oom;
    if (pretokenize(&t, text, len, err, errlen) < 0) goto fail;
    if (learn(&t, (size_t)n_vocab) < 0) goto oom;
    size_t n_learned = t.n_mg;
    if (fill(&t, (size_t)n_vocab) < 0) goto oom;
    if (t.toks.n != (size_t)n_vocab) {
        util_seterr(err, errlen, "bpe_train: reached %zu tokens, wanted %d", t.toks.n, n_vocab);
        goto fail;
    }
    v = calloc(1, sizeof *v);
    if (!v) goto oom;
    v->n_tokens = n_vocab;
    v->n_merges = (int)t.n_mg;
    v->n_learned = (int)n_learned;
    v->n_pieces = (int)t.nw;
    v->tokens = calloc((size_t)n_vocab, sizeof *v->tokens);
    v->types = calloc((size_t)n_vocab, sizeof *v->types);
    v->merges = calloc(t.n_mg ? t.n_mg : 1, sizeof *v->merges);
    if (!v->tokens || !v->types || !v->merges) goto oom;
    for (size_t id = 0; id < t.toks.n; id++) {
        size_t fid = id < 256                                        ? id + BPE_N_SPECIAL
                     : (int64_t)id < t.specials_base + BPE_N_SPECIAL ? id - 256
                                                                     : id;
        const unsigned char *p = t.toks.arena + t.toks.off[id];
        size_t n = t.toks.len[id];
        char *s = malloc(2 * n + 1);
        if (!s) goto oom;
        if (fid < BPE_N_SPECIAL) {
            memcpy(s, p, n);
            s[n] = 0;
            v->types[fid] = 3;
        } else {
            bpe_bytes_to_unicode(p, n, s);
            v->types[fid] = 1;
        }
        v->tokens[fid] = s;
    }
    for (size_t i = 0; i < t.n_mg; i++) {
        size_t la = t.toks.len[t.mg[i][0]], lb = t.toks.len[t.mg[i][1]];
        char *s = malloc(2 * (la + lb) + 2);
        if (!s) goto oom;
        size_t o = bpe_bytes_to_unicode(t.toks.arena + t.toks.off[t.mg[i][0]], la, s);
        s[o++] = ' ';
        bpe_bytes_to_unicode(t.toks.arena + t.toks.off[t.mg[i][1]], lb, s + o);
        v->merges[i] = s;
    }
    trainer_free(&t);
    *out = v;
    return 0;
oom:
    util_seterr(err, errlen, "bpe_train: out of memory");
fail:
    trainer_free(&t);
    bpe_vocab_free(v);
    return -1;
}

void bpe_vocab_free(bpe_vocab *v) {
    if (!v) return;
    if (v->tokens)
        for (int i = 0; i < v->n_tokens; i++)
            free(v->tokens[i]);
    if (v->merges)
        for (int i = 0; i < v->n_merges; i++)
            free(v->merges[i]);
    free(v->tokens);
    free(v->types);
    free(v->merges);
    free(v);
}
