/* pcache.c: the prompt cache: entries of token ids, K/V rows and conv snapshots; longest-prefix
 * lookup, merging of entries a longer one extends, eviction under the byte budget. */
#include "server/pcache.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#define EVICT_MEMO 4096 /* prefixes of evicted entries remembered, to name the "evicted" misses */

typedef struct pc_entry {
    int32_t *ids; /* n */
    int n;
    uint16_t *kv; /* n * kv_halves, eng_seq_kv_read's layout for a block of n rows */
    pcache_snaps sn;
    size_t bytes;
    uint64_t last_use; /* the cache's clock at its last lookup or insertion */
} pc_entry;

struct pcache {
    eng *e;
    size_t budget, sf, kh; /* bytes; floats per snapshot; halves of K/V per position */
    int32_t think;
    pc_entry **v;
    int n, cap;
    uint64_t clock;
    pcache_stats st;
    struct { /* (length, hash of the ids up to it) at the snapshots of evicted entries */
        int len;
        uint64_t h;
    } memo[EVICT_MEMO];
    int n_memo, memo_next;
};

static const char *const reason_names[PCACHE_N_REASONS] = {"hit", "no_entry", "evicted",
                                                           "disabled"};

const char *pcache_reason_name(int reason) {
    return reason >= 0 && reason < PCACHE_N_REASONS ? reason_names[reason] : "unknown";
}

static uint64_t hash_step(uint64_t h, int32_t id) { /* FNV-1a over the id's 4 bytes */
    uint32_t u = (uint32_t)id;
    for (int i = 0; i < 4; i++, u >>= 8) {
        h ^= u & 0xff;
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define HASH_INIT 0xcbf29ce484222325ULL

int pcache_snaps_reserve(pcache_snaps *s, size_t sf, int more) {
    if (s->n + more <= s->cap) return 0;
    int cap = s->cap ? s->cap : 8;
    while (cap < s->n + more)
        cap *= 2;
    int *p = realloc(s->pos, (size_t)cap * sizeof *p);
    if (!p) return -1;
    s->pos = p;
    float *d = realloc(s->data, (size_t)cap * sf * sizeof *d + 1);
    if (!d) return -1;
    s->data = d;
    s->cap = cap;
    return 0;
}

void pcache_snaps_free(pcache_snaps *s) {
    free(s->pos);
    free(s->data);
    memset(s, 0, sizeof *s);
}

/* Index of the snapshot at pos in s, or -1. */
static int snaps_find(const pcache_snaps *s, int pos) {
    for (int k = 0; k < s->n; k++)
        if (s->pos[k] == pos) return k;
    return -1;
}

/* Adds to dst, in position order, the snapshots of src at positions <= max that dst lacks. */
static int snaps_merge(pcache_snaps *dst, const pcache_snaps *src, int max, size_t sf) {
    for (int k = 0; src && k < src->n; k++) {
        int p = src->pos[k];
        if (p > max || snaps_find(dst, p) >= 0) continue;
        if (pcache_snaps_reserve(dst, sf, 1) < 0) return -1;
        int at = dst->n;
        while (at > 0 && dst->pos[at - 1] > p)
            at--;
        memmove(dst->pos + at + 1, dst->pos + at, (size_t)(dst->n - at) * sizeof *dst->pos);
        memmove(dst->data + (at + 1) * sf, dst->data + at * sf,
                (size_t)(dst->n - at) * sf * sizeof *dst->data);
        dst->pos[at] = p;
        memcpy(dst->data + at * sf, src->data + k * sf, sf * sizeof *dst->data);
        dst->n++;
    }
    return 0;
}

int pcache_new(pcache **out, eng *e, size_t budget, int32_t think_id) {
    pcache *c = calloc(1, sizeof *c);
    *out = c;
    if (!c) return -1;
    c->e = e;
    c->budget = budget;
    c->sf = eng_snap_floats(e);
    c->kh = eng_kv_halves(e);
    c->think = think_id;
    return 0;
}

static void entry_free(pc_entry *x) {
    if (!x) return;
    free(x->ids);
    free(x->kv);
    pcache_snaps_free(&x->sn);
    free(x);
}

void pcache_free(pcache *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++)
        entry_free(c->v[i]);
    free(c->v);
    free(c);
}

size_t pcache_budget(const pcache *c) { return c->budget; }

void pcache_stats_get(const pcache *c, pcache_stats *st) { *st = c->st; }

void pcache_count_disabled(pcache *c) { c->st.lookups[PCACHE_MISS_DISABLED]++; }

/* Removes entry i (its slot takes the last one); evicted: remember its prefixes. */
static void entry_drop(pcache *c, int i, bool evicted) {
    pc_entry *x = c->v[i];
    if (evicted) {
        c->st.evictions++;
        uint64_t h = HASH_INIT;
        for (int p = 0, k = 0; p < x->n && k < x->sn.n; p++) {
            h = hash_step(h, x->ids[p]);
            if (p + 1 == x->sn.pos[k]) {
                c->memo[c->memo_next].len = p + 1;
                c->memo[c->memo_next].h = h;
                c->memo_next = (c->memo_next + 1) % EVICT_MEMO;
                if (c->n_memo < EVICT_MEMO) c->n_memo++;
                k++;
            }
        }
    }
    c->st.bytes -= x->bytes;
    c->st.entries--;
    entry_free(x);
    c->v[i] = c->v[--c->n];
}

/* Whether an evicted entry held a snapshot inside ids[0, limit]. */
static bool memo_covers(const pcache *c, const int32_t *ids, int limit) {
    if (!c->n_memo || limit < 1) return false;
    uint64_t *h = malloc(((size_t)limit + 1) * sizeof *h);
    if (!h) return false;
    h[0] = HASH_INIT;
    for (int p = 0; p < limit; p++)
        h[p + 1] = hash_step(h[p], ids[p]);
    bool hit = false;
    for (int k = 0; k < c->n_memo && !hit; k++)
        hit = c->memo[k].len <= limit && c->memo[k].h == h[c->memo[k].len];
    free(h);
    return hit;
}

/* The best entry for ids[0, n): the deepest snapshot *u <= limit inside a common prefix (*k its
 * index; NULL when none), and in *rewrite whether an entry sharing the longest prefix has
 * think (<think>) where the prompt departs from it: the template rewrote that turn. */
static pc_entry *best_entry(const pcache *c, const int32_t *ids, int n, int limit, int *u_out,
                            int *k_out, bool *rewrite) {
    pc_entry *best = NULL;
    bool rw = false;
    int best_u = 0, best_k = -1, lm = 0;
    if (limit > n) limit = n;
    for (int i = 0; i < c->n; i++) {
        pc_entry *x = c->v[i];
        int m = 0, top = n < x->n ? n : x->n;
        while (m < top && ids[m] == x->ids[m])
            m++;
        /* every entry tied for the longest prefix counts: the one the template rewrote may
         * share it with an earlier turn's entry */
        bool think_here = m < x->n && m < n && c->think >= 0 && x->ids[m] == c->think;
        if (m > lm) rw = think_here, lm = m;
        else if (m == lm && m > 0) rw = rw || think_here;
        int lim = m < limit ? m : limit, k = x->sn.n - 1;
        while (k >= 0 && x->sn.pos[k] > lim)
            k--;
        if (k < 0) continue;
        int u = x->sn.pos[k];
        if (u > best_u || (u == best_u && best && x->last_use > best->last_use))
            best = x, best_u = u, best_k = k;
    }
    *u_out = best_u;
    *k_out = best_k;
    if (rewrite) *rewrite = rw;
    return best;
}

int pcache_peek(const pcache *c, const int32_t *ids, int n, int limit) {
    int u, k;
    return c->budget && best_entry(c, ids, n, limit, &u, &k, NULL) ? u : 0;
}

int pcache_resume(pcache *c, const int32_t *ids, int n, int limit, eng_seq *s, pcache_snaps *carry,
                  int *reason) {
    if (!c->budget) {
        c->st.lookups[*reason = PCACHE_MISS_DISABLED]++;
        return 0;
    }
    if (limit > n) limit = n;
    bool rewrite;
    int best_u, best_k;
    pc_entry *best = best_entry(c, ids, n, limit, &best_u, &best_k, &rewrite);
    if (rewrite)
        c->st.rewrites++;
    char err[256];
    int from = carry->n;
    if (best && snaps_merge(carry, &best->sn, best_u, c->sf) == 0 &&
        eng_seq_restore(s, best_u, best->kv, best->n, best->sn.data + (size_t)best_k * c->sf, err,
                        sizeof err) == 0) {
        best->last_use = ++c->clock;
        c->st.lookups[*reason = PCACHE_HIT]++;
        c->st.tokens_reused += (uint64_t)best_u;
        return best_u;
    }
    carry->n = from; /* nothing reused: nothing carried */
    *reason = memo_covers(c, ids, limit) ? PCACHE_MISS_EVICTED : PCACHE_MISS_NO_ENTRY;
    c->st.lookups[*reason]++;
    return 0;
}

static int entry_add(pcache *c, pc_entry *x);

/* What x holds: its snapshot arrays count by capacity, as allocated. */
static size_t entry_bytes(const pcache *c, const pc_entry *x) {
    return sizeof *x + (size_t)x->n * (sizeof(int32_t) + c->kh * sizeof(uint16_t)) +
           (size_t)x->sn.cap * (sizeof(int) + c->sf * sizeof(float));
}

/* Gives back the snapshot room past the n held (reserve grows it by doubling); a failed shrink
 * keeps cap, which entry_bytes then counts (an entry's snapshots never grow once it is added). */
static void snaps_shrink(pcache_snaps *s, size_t sf) {
    if (s->n == s->cap || s->n < 1) return;
    int *p = realloc(s->pos, (size_t)s->n * sizeof *p);
    if (!p) return;
    s->pos = p;
    float *d = realloc(s->data, (size_t)s->n * sf * sizeof *d);
    if (!d) return; /* pos already holds exactly n: cap stays, counted */
    s->data = d;
    s->cap = s->n;
}

int pcache_insert(pcache *c, const int32_t *a, int na, const int32_t *b, const eng_seq *s,
                  const pcache_snaps *sa, const pcache_snaps *sb) {
    const int n = eng_seq_pos(s);
    if (!c->budget || n < 1) return -1;
    pc_entry *x = calloc(1, sizeof *x);
    if (!x) return -1;
    x->n = n;
    x->ids = malloc((size_t)n * sizeof *x->ids);
    char err[256];
    if (!x->ids) goto fail;
    int head = na < n ? na : n;
    memcpy(x->ids, a, (size_t)head * sizeof *x->ids);
    if (n > head) memcpy(x->ids + head, b, (size_t)(n - head) * sizeof *x->ids);
    if (snaps_merge(&x->sn, sa, n, c->sf) < 0 || snaps_merge(&x->sn, sb, n, c->sf) < 0) goto fail;
    if (snaps_find(&x->sn, n) < 0) {
        if (pcache_snaps_reserve(&x->sn, c->sf, 1) < 0) goto fail;
        eng_seq_snap(s, x->sn.data + (size_t)x->sn.n * c->sf);
        x->sn.pos[x->sn.n++] = n; /* the end is the last position: order holds */
    }
    /* an entry that extends this one holds its K/V already: it takes the snapshots instead of
     * a second copy (a one-token answer to a prompt seen before, a cancelled request) */
    for (int i = 0; i < c->n; i++) {
        pc_entry *y = c->v[i];
        if (y->n < n || memcmp(y->ids, x->ids, (size_t)n * sizeof *y->ids)) continue;
        c->st.bytes -= y->bytes; /* out while it grows, back in through entry_add */
        c->st.entries--;
        c->v[i] = c->v[--c->n];
        const int rc = snaps_merge(&y->sn, &x->sn, n, c->sf);
        entry_free(x);
        return entry_add(c, y) < 0 || rc < 0 ? -1 : 0;
    }
    x->kv = malloc((size_t)n * c->kh * sizeof *x->kv + 1);
    if (!x->kv || eng_seq_kv_read(s, n, x->kv, err, sizeof err) < 0) goto fail;
    /* entries this one extends: their snapshots join it and they go */
    for (int i = 0; i < c->n;) {
        pc_entry *y = c->v[i];
        if (y->n <= n && !memcmp(y->ids, x->ids, (size_t)y->n * sizeof *y->ids)) {
            if (snaps_merge(&x->sn, &y->sn, y->n, c->sf) < 0) goto fail;
            entry_drop(c, i, false);
        } else {
            i++;
        }
    }
    return entry_add(c, x);
fail:
    entry_free(x);
    return -1;
}

/* Adds x (ownership passes, also on failure): evicts until it fits; one larger than the whole
 * budget is dropped. 0, or -1 when x was not kept. */
static int entry_add(pcache *c, pc_entry *x) {
    snaps_shrink(&x->sn, c->sf);
    x->bytes = entry_bytes(c, x);
    if (x->bytes > c->budget) {
        c->st.evictions++;
        goto fail;
    }
    while (c->n && c->st.bytes + x->bytes > c->budget) {
        /* the lowest prefill saved per step of age goes first */
        int worst = 0;
        double ws = 0;
        for (int i = 0; i < c->n; i++) {
            double sc = (double)c->v[i]->n / (double)(c->clock - c->v[i]->last_use + 1);
            if (i == 0 || sc < ws) worst = i, ws = sc;
        }
        entry_drop(c, worst, true);
    }
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        pc_entry **p = realloc(c->v, (size_t)cap * sizeof *p);
        if (!p) goto fail;
        c->v = p;
        c->cap = cap;
    }
    x->last_use = ++c->clock;
    c->v[c->n++] = x;
    c->st.bytes += x->bytes;
    c->st.entries++;
    return 0;
fail:
    entry_free(x);
    return -1;
}

/* ---- the cache in a file (--cache-dir) ----
 * Little-endian as the machine writes it (the file never leaves the machine that wrote it):
 *   "LFM2PCH\0", u32 version, u32 0, u64 model key, u64 kv_halves, u64 snap_floats, u64 entries
 *   per entry: u32 n, u32 n_snap, i32 ids[n], u16 kv[n * kv_halves], i32 pos[n_snap],
 *              f32 snap[n_snap * snap_floats], u64 hash of the entry's bytes before it
 * Entries go oldest first, so reading them back in order keeps their recency. */
#define FILE_MAGIC "LFM2PCH"
#define FILE_VERSION 1u
#define FILE_MAX_TOKENS (1 << 24)

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { /* a word at a time: files are hundreds of MiB */
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

uint64_t pcache_model_key(const eng *e) {
    const gguf *g = eng_model(e)->g;
    size_t hl, fs = gguf_file_size(g);
    const void *hb = gguf_header_bytes(g, &hl);
    uint64_t h = hash_bytes(HASH_INIT, &fs, sizeof fs);
    h = hash_bytes(h, hb, hl);
    /* and the first bytes of every tensor: two files with one layout and other weights differ */
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        h = hash_bytes(h, t->data, t->nbytes < 64 ? t->nbytes : 64);
    }
    return h;
}

static int file_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int file_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* fwrite of n bytes that also hashes them */
static bool put(FILE *f, uint64_t *h, const void *p, size_t n) {
    *h = hash_bytes(*h, p, n);
    return fwrite(p, 1, n, f) == n;
}

int pcache_save(const pcache *c, const char *path, uint64_t key, char *err, size_t errlen) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return file_fail(err, errlen, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return file_fail(err, errlen, "%s: %s", tmp, strerror(errno));
    uint64_t h = 0;
    char magic[8] = FILE_MAGIC;
    uint32_t ver[2] = {FILE_VERSION, 0};
    uint64_t hdr[4] = {key, c->kh, c->sf, (uint64_t)c->n};
    bool ok = put(f, &h, magic, 8) && put(f, &h, ver, sizeof ver) && put(f, &h, hdr, sizeof hdr);
    /* oldest first */
    pc_entry **order = malloc(((size_t)c->n + 1) * sizeof *order);
    if (!order) ok = false;
    for (int i = 0; ok && i < c->n; i++) {
        int k = i;
        order[i] = c->v[i];
        while (k > 0 && order[k - 1]->last_use > order[k]->last_use) {
            pc_entry *t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
            k--;
        }
    }
    for (int i = 0; ok && i < c->n; i++) {
        const pc_entry *x = order[i];
        h = HASH_INIT;
        uint32_t nn[2] = {(uint32_t)x->n, (uint32_t)x->sn.n};
        ok = put(f, &h, nn, sizeof nn) && put(f, &h, x->ids, (size_t)x->n * sizeof *x->ids) &&
             put(f, &h, x->kv, (size_t)x->n * c->kh * sizeof *x->kv) &&
             put(f, &h, x->sn.pos, (size_t)x->sn.n * sizeof *x->sn.pos) &&
             put(f, &h, x->sn.data, (size_t)x->sn.n * c->sf * sizeof *x->sn.data);
        uint64_t sum = h;
        ok = ok && fwrite(&sum, 1, sizeof sum, f) == sizeof sum;
    }
    free(order);
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    if (fclose(f) != 0) ok = false;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return file_fail(err, errlen, "%s: cannot write: %s", path, strerror(e ? e : EIO));
    }
    return 0;
}

/* fread of n bytes that also hashes them */
static bool get(FILE *f, uint64_t *h, void *p, size_t n) {
    if (fread(p, 1, n, f) != n) return false;
    *h = hash_bytes(*h, p, n);
    return true;
}

int pcache_load(pcache *c, const char *path, uint64_t key, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return file_fail(err, errlen, "%s: %s", path, strerror(errno));
    struct stat fst;
    /* bytes of the file not read yet: an entry is allocated only when the file holds it */
    uint64_t left = fstat(fileno(f), &fst) == 0 && fst.st_size > 0 ? (uint64_t)fst.st_size : 0;
    pc_entry **got = NULL;
    uint64_t n_got = 0, h = 0, first = 0, dropped = 0; /* got[first, n_got) are held */
    size_t held = 0;
    int rc = -1;
    char magic[8];
    uint32_t ver[2];
    uint64_t hdr[4];
    if (!get(f, &h, magic, 8) || !get(f, &h, ver, sizeof ver) || !get(f, &h, hdr, sizeof hdr)) {
        file_fail(err, errlen, "%s: truncated header", path);
        goto done;
    }
    left = left > 48 ? left - 48 : 0;
    if (memcmp(magic, FILE_MAGIC, 8)) {
        file_fail(err, errlen, "%s: not a prompt cache file (bad magic)", path);
        goto done;
    }
    if (ver[0] != FILE_VERSION) {
        file_fail(err, errlen, "%s: version %u, this build reads %u", path, ver[0], FILE_VERSION);
        goto done;
    }
    if (hdr[0] != key || hdr[1] != c->kh || hdr[2] != c->sf) {
        file_fail(err, errlen, "%s: written for another model file", path);
        goto done;
    }
    if (hdr[3] > (1u << 20)) {
        file_fail(err, errlen, "%s: %llu entries, more than %u", path, (unsigned long long)hdr[3],
                  1u << 20);
        goto done;
    }
    got = calloc(hdr[3] + 1, sizeof *got);
    if (!got) {
        file_fail(err, errlen, "%s: out of memory", path);
        goto done;
    }
    const int32_t n_vocab = eng_n_vocab(c->e);
    for (; n_got < hdr[3]; n_got++) {
        uint32_t nn[2];
        h = HASH_INIT;
        if (!get(f, &h, nn, sizeof nn)) {
            file_fail(err, errlen, "%s: truncated at entry %llu", path, (unsigned long long)n_got);
            goto done;
        }
        if (nn[0] < 1 || nn[0] > FILE_MAX_TOKENS || nn[1] < 1 || nn[1] > nn[0] + 1) {
            file_fail(err, errlen, "%s: entry %llu: %u tokens, %u snapshots (limits 1..%d, "
                      "1..tokens + 1)", path, (unsigned long long)n_got, nn[0], nn[1],
                      FILE_MAX_TOKENS);
            goto done;
        }
        /* n <= 2^24 and the per-token sizes come from the model: no overflow in 64 bits */
        const uint64_t need = 8 + (uint64_t)nn[0] * (sizeof(int32_t) + c->kh * sizeof(uint16_t)) +
                              (uint64_t)nn[1] * (sizeof(int32_t) + c->sf * sizeof(float)) + 8;
        if (need > left) {
            file_fail(err, errlen, "%s: truncated in entry %llu (%llu bytes, %llu left)", path,
                      (unsigned long long)n_got, (unsigned long long)need,
                      (unsigned long long)left);
            goto done;
        }
        left -= need;
        pc_entry *x = calloc(1, sizeof *x);
        if (!x) {
            file_fail(err, errlen, "%s: out of memory", path);
            goto done;
        }
        got[n_got] = x;
        x->n = (int)nn[0];
        x->ids = malloc((size_t)x->n * sizeof *x->ids);
        x->kv = malloc((size_t)x->n * c->kh * sizeof *x->kv + 1);
        if (!x->ids || !x->kv || pcache_snaps_reserve(&x->sn, c->sf, (int)nn[1]) < 0) {
            file_fail(err, errlen, "%s: out of memory for entry %llu (%u tokens)", path,
                      (unsigned long long)n_got, nn[0]);
            goto done;
        }
        x->sn.n = (int)nn[1];
        uint64_t sum;
        if (!get(f, &h, x->ids, (size_t)x->n * sizeof *x->ids) ||
            !get(f, &h, x->kv, (size_t)x->n * c->kh * sizeof *x->kv) ||
            !get(f, &h, x->sn.pos, (size_t)x->sn.n * sizeof *x->sn.pos) ||
            !get(f, &h, x->sn.data, (size_t)x->sn.n * c->sf * sizeof *x->sn.data) ||
            fread(&sum, 1, sizeof sum, f) != sizeof sum) {
            file_fail(err, errlen, "%s: truncated in entry %llu", path, (unsigned long long)n_got);
            goto done;
        }
        if (sum != h) {
            file_fail(err, errlen, "%s: entry %llu is corrupt (checksum)", path,
                      (unsigned long long)n_got);
            goto done;
        }
        for (int i = 0; i < x->n; i++)
            if (x->ids[i] < 0 || x->ids[i] >= n_vocab) {
                file_fail(err, errlen, "%s: entry %llu: token %d outside the vocabulary", path,
                          (unsigned long long)n_got, x->ids[i]);
                goto done;
            }
        for (int k = 0; k < x->sn.n; k++)
            if (x->sn.pos[k] < 1 || x->sn.pos[k] > x->n || (k && x->sn.pos[k] <= x->sn.pos[k - 1])) {
                file_fail(err, errlen, "%s: entry %llu: snapshot positions out of order", path,
                          (unsigned long long)n_got);
                goto done;
            }        /* the entries read so far that fit the budget, newest kept: the file may hold far more
         * than this cache may (written under a larger --cache-ram) */
        snaps_shrink(&x->sn, c->sf);
        held += entry_bytes(c, x);
        while (held > c->budget && first <= n_got) {
            held -= entry_bytes(c, got[first]);
            entry_free(got[first]);
            got[first++] = NULL;
            dropped++;
        }
    }
    if (fgetc(f) != EOF) {
        file_fail(err, errlen, "%s: bytes after the last entry", path);
        goto done;
    }
    /* every entry read and checked: they join the cache, oldest first */
    const uint64_t before = c->st.entries;
    c->st.evictions += dropped;
    for (uint64_t i = first; i < n_got; i++) {
        pc_entry *x = got[i];
        got[i] = NULL;
        entry_add(c, x);
    }
    rc = c->st.entries > before ? (int)(c->st.entries - before) : 0;
done:
    for (uint64_t i = 0; got && i <= n_got && i <= hdr[3]; i++)
        entry_free(got[i]);
    free(got);
    fclose(f);
    return rc;
}
