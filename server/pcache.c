/* pcache.c: the prompt cache: entries of token ids, K/V rows and conv snapshots; longest-prefix
 * lookup, merging of entries a longer one extends, eviction under the byte budget. */
#include "server/pcache.h"
#include <stdlib.h>
#include <string.h>

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
 * index; NULL when none), and the entry sharing the longest prefix (*longest, *longest_m). */
static pc_entry *best_entry(const pcache *c, const int32_t *ids, int n, int limit, int *u_out,
                            int *k_out, pc_entry **longest_out, int *longest_m) {
    pc_entry *best = NULL, *longest = NULL;
    int best_u = 0, best_k = -1, lm = 0;
    if (limit > n) limit = n;
    for (int i = 0; i < c->n; i++) {
        pc_entry *x = c->v[i];
        int m = 0, top = n < x->n ? n : x->n;
        while (m < top && ids[m] == x->ids[m])
            m++;
        if (m > lm) longest = x, lm = m;
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
    if (longest_out) *longest_out = longest, *longest_m = lm;
    return best;
}

int pcache_peek(const pcache *c, const int32_t *ids, int n, int limit) {
    int u, k;
    return c->budget && best_entry(c, ids, n, limit, &u, &k, NULL, NULL) ? u : 0;
}

int pcache_resume(pcache *c, const int32_t *ids, int n, int limit, eng_seq *s, pcache_snaps *carry,
                  int *reason) {
    if (!c->budget) {
        c->st.lookups[*reason = PCACHE_MISS_DISABLED]++;
        return 0;
    }
    if (limit > n) limit = n;
    pc_entry *longest;
    int best_u, best_k, longest_m;
    pc_entry *best = best_entry(c, ids, n, limit, &best_u, &best_k, &longest, &longest_m);
    if (longest && longest_m < longest->n && longest_m < n && c->think >= 0 &&
        longest->ids[longest_m] == c->think)
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

static size_t entry_bytes(const pcache *c, const pc_entry *x) {
    return sizeof *x + (size_t)x->n * (sizeof(int32_t) + c->kh * sizeof(uint16_t)) +
           (size_t)x->sn.n * (sizeof(int) + c->sf * sizeof(float));
}

int pcache_insert(pcache *c, const int32_t *a, int na, const int32_t *b, const eng_seq *s,
                  const pcache_snaps *sa, const pcache_snaps *sb) {
    const int n = eng_seq_pos(s);
    if (!c->budget || n < 1) return -1;
    pc_entry *x = calloc(1, sizeof *x);
    if (!x) return -1;
    x->n = n;
    x->ids = malloc((size_t)n * sizeof *x->ids);
    x->kv = malloc((size_t)n * c->kh * sizeof *x->kv + 1);
    char err[256];
    if (!x->ids || !x->kv || eng_seq_kv_read(s, n, x->kv, err, sizeof err) < 0) goto fail;
    int head = na < n ? na : n;
    memcpy(x->ids, a, (size_t)head * sizeof *x->ids);
    if (n > head) memcpy(x->ids + head, b, (size_t)(n - head) * sizeof *x->ids);
    if (snaps_merge(&x->sn, sa, n, c->sf) < 0 || snaps_merge(&x->sn, sb, n, c->sf) < 0) goto fail;
    if (snaps_find(&x->sn, n) < 0) {
        if (pcache_snaps_reserve(&x->sn, c->sf, 1) < 0) goto fail;
        eng_seq_snap(s, x->sn.data + (size_t)x->sn.n * c->sf);
        x->sn.pos[x->sn.n++] = n; /* the end is the last position: order holds */
    }
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
