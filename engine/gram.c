/* gram.c: the value graph, its byte tries, the pushdown matcher (a small set of persistent frame
 * stacks, one per live parse) and vocabulary masks by a pruned walk of the token trie. */
#include "engine/gram.h"
#include "engine/sample.h"
#include "engine/util.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

__extension__ typedef __int128 i128;

#define H_INF (1 << 28) /* least nesting of a node that cannot be finished */

/* ---------------------------------------------------------------- byte tries */

typedef struct tnode {
    int32_t e0, ne; /* edges [e0, e0 + ne), sorted by byte */
    int32_t p0, np; /* payloads of the strings ending here */
    int32_t k0, nk; /* payloads of the strings below (keys: ascending), when asked for */
} tnode;

typedef struct tedge {
    uint8_t c;
    int32_t to;
} tedge;

typedef struct trie {
    tnode *n;
    int nn, cn;
    tedge *e;
    int ne, ce;
    int32_t *p; /* payload pool */
    int np, cp;
    int32_t *k; /* below pool */
    int nk, ck;
} trie;

static bool grow(void **p, int *cap, int need, size_t elt) {
    if (need <= *cap) return true;
    int c = *cap ? *cap : 16;
    while (c < need) {
        if (c > INT_MAX / 2) return false;
        c *= 2;
    }
    void *q = realloc(*p, (size_t)c * elt);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static void trie_free(trie *t) {
    free(t->n);
    free(t->e);
    free(t->p);
    free(t->k);
    memset(t, 0, sizeof *t);
}

static int32_t trie_edge(const trie *t, int32_t node, unsigned c) {
    const tnode *n = &t->n[node];
    int lo = n->e0, hi = n->e0 + n->ne - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (t->e[mid].c == c) return t->e[mid].to;
        if (t->e[mid].c < c)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

typedef struct tstr {
    const uint8_t *s;
    size_t n;
    int32_t payload;
} tstr;

static int tstr_cmp(const void *x, const void *y) {
    const tstr *a = x, *b = y;
    size_t m = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, m);
    if (c) return c;
    return a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
}

/* Temporary node while building: children as a sorted sibling list. */
typedef struct bnode {
    int32_t first, last, next;
    uint8_t c;
    int32_t np;
} bnode;

/* Adds the strings (sorted here) as one trie in t; returns its root, or -1 out of memory.
 * below: also record, on every node, the payloads of the strings passing through it, in the
 * order the strings were given. */
static int32_t trie_add(trie *t, tstr *ss, int n, bool below) {
    tstr *sorted = malloc(((size_t)n + 1) * sizeof *sorted);
    bnode *b = NULL;
    int nb = 0, cb = 0;
    int32_t *path = NULL, *ends = NULL, *order = NULL;
    int cpath = 0;
    int32_t root = -1;
    if (!sorted) goto out;
    if (n) memcpy(sorted, ss, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, tstr_cmp);
    if (!grow((void **)&b, &cb, 1, sizeof *b)) goto out;
    b[nb++] = (bnode){-1, -1, -1, 0, 0};
    ends = malloc(((size_t)n + 1) * sizeof *ends);
    if (!ends) goto out;
    size_t plen = 0; /* the previous string's path: path[0..plen] nodes */
    if (!grow((void **)&path, &cpath, 1, sizeof *path)) goto out;
    path[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t l = 0;
        if (i > 0) {
            const tstr *p = &sorted[i - 1];
            while (l < p->n && l < sorted[i].n && p->s[l] == sorted[i].s[l])
                l++;
        }
        if (l > plen) l = plen;
        if (!grow((void **)&path, &cpath, (int)sorted[i].n + 1, sizeof *path)) goto out;
        for (size_t k = l; k < sorted[i].n; k++) {
            if (!grow((void **)&b, &cb, nb + 1, sizeof *b)) goto out;
            int32_t id = nb++;
            b[id] = (bnode){-1, -1, -1, sorted[i].s[k], 0};
            bnode *par = &b[path[k]];
            if (par->last >= 0)
                b[par->last].next = id;
            else
                par->first = id;
            par->last = id;
            path[k + 1] = id;
        }
        plen = sorted[i].n;
        ends[i] = path[plen];
        b[ends[i]].np++;
    }
    /* flatten breadth first: each node's edges contiguous */
    order = malloc((size_t)nb * sizeof *order);
    int32_t *map = malloc((size_t)nb * sizeof *map);
    if (!order || !map) {
        free(map);
        goto out;
    }
    int head = 0, tail = 0;
    order[tail++] = 0;
    map[0] = 0;
    int base = t->nn;
    if (!grow((void **)&t->n, &t->cn, t->nn + nb, sizeof *t->n) ||
        !grow((void **)&t->e, &t->ce, t->ne + nb, sizeof *t->e) ||
        !grow((void **)&t->p, &t->cp, t->np + n, sizeof *t->p)) {
        free(map);
        goto out;
    }
    while (head < tail) {
        int32_t bi = order[head++];
        tnode *tn = &t->n[base + map[bi]];
        tn->e0 = t->ne;
        tn->ne = 0;
        tn->k0 = tn->nk = 0;
        for (int32_t ch = b[bi].first; ch >= 0; ch = b[ch].next) {
            map[ch] = tail;
            order[tail++] = ch;
            t->e[t->ne++] = (tedge){b[ch].c, base + map[ch]};
            tn->ne++;
        }
    }
    /* payloads: counts, offsets, fill */
    int off = t->np;
    for (int k = 0; k < nb; k++) {
        tnode *tn = &t->n[base + map[order[k]]];
        tn->p0 = off;
        tn->np = 0;
        off += b[order[k]].np;
    }
    for (int i = 0; i < n; i++) {
        tnode *tn = &t->n[base + map[ends[i]]];
        t->p[tn->p0 + tn->np++] = sorted[i].payload;
    }
    t->np = off;
    t->nn += nb;
    root = base;
    free(map);
    if (below) { /* walk each string in the given order */
        int total = 0;
        for (int i = 0; i < n; i++)
            total += (int)ss[i].n + 1;
        if (!grow((void **)&t->k, &t->ck, t->nk + total, sizeof *t->k)) {
            root = -1;
            goto out;
        }
        for (int pass = 0; pass < 2; pass++) {
            for (int i = 0; i < n; i++) {
                int32_t nd = root;
                for (size_t k = 0;; k++) {
                    tnode *tn = &t->n[nd];
                    if (pass == 0)
                        tn->nk++;
                    else
                        t->k[tn->k0 + tn->nk++] = ss[i].payload;
                    if (k == ss[i].n) break;
                    nd = trie_edge(t, nd, ss[i].s[k]);
                }
            }
            if (pass == 0) {
                int o = t->nk;
                for (int k = base; k < t->nn; k++) {
                    t->n[k].k0 = o;
                    o += t->n[k].nk;
                    t->n[k].nk = 0;
                }
                t->nk = o;
            }
        }
    }
out:
    free(sorted);
    free(b);
    free(path);
    free(ends);
    free(order);
    return root;
}

/* ---------------------------------------------------------------- the graph */

typedef struct gprop {
    int32_t key_off, key_len; /* raw name in g->bytes */
    int32_t value;
    bool required;
    bool ident; /* the name is an identifier: writable as a keyword argument */
} gprop;

typedef struct gnode {
    uint8_t kind;
    bool set;
    int32_t h;     /* least frames to finish (H_INF: never) */
    int32_t *kids; /* ALT: alternatives; ARR: prefix items; CALLS: params nodes */
    int nkids, ckids;
    gprop *props; /* OBJ; CALLS: names (value = params) */
    int nprops, cprops;
    int32_t *next_req;          /* OBJ: [nprops + 1] first required index >= i, or nprops */
    int32_t extra;              /* OBJ: extra-key value node or -1 */
    int32_t items;              /* ARR: node beyond the prefix or -1 */
    long min_n, max_n;          /* STR: code points; ARR: items; CALLS: max calls (-1: none) */
    i128 lo, hi;                /* INT/NUM in units (1 or 10^-GRAM_MAX_FRAC_DIGITS) */
    int32_t *lit_off, *lit_len; /* LIT strings in g->bytes */
    int nlit, clit;
    int32_t troot, troot_kw; /* LIT: literal trie; OBJ: key tries (JSON, keyword); CALLS: names */
    char *label;
} gnode;

struct gram {
    bool py, finished;
    int32_t root, any;
    gnode *nodes;
    int nn, cn;
    char *bytes; /* literals and keys */
    int nbytes, cbytes;
    trie t;
    int refs;
};

static i128 pow10_i(int k) {
    i128 r = 1;
    while (k-- > 0)
        r *= 10;
    return r;
}

static i128 num_scale(const gnode *n) {
    return n->kind == GRAM_NUM ? pow10_i(GRAM_MAX_FRAC_DIGITS) : 1;
}

static i128 num_maxmag(const gnode *n) {
    return pow10_i(GRAM_MAX_INT_DIGITS) * num_scale(n) - 1;
}

gram *gram_new(bool py) {
    gram *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->py = py;
    g->root = g->any = -1;
    g->refs = 1;
    return g;
}

void gram_free(gram *g) {
    if (!g) return;
    if (__atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    for (int i = 0; i < g->nn; i++) {
        gnode *n = &g->nodes[i];
        free(n->kids);
        free(n->props);
        free(n->next_req);
        free(n->lit_off);
        free(n->lit_len);
        free(n->label);
    }
    free(g->nodes);
    free(g->bytes);
    trie_free(&g->t);
    free(g);
}

gram *gram_ref(gram *g) {
    if (g) __atomic_add_fetch(&g->refs, 1, __ATOMIC_ACQ_REL);
    return g;
}

bool gram_py(const gram *g) {
    return g->py;
}

int gram_node_kind(const gram *g, int node) {
    return node >= 0 && node < g->nn ? g->nodes[node].kind : -1;
}

int gram_n_nodes(const gram *g) {
    return g->nn;
}

bool gram_uses_calls(const gram *g) {
    return g->root >= 0 && g->nodes[g->root].kind == GRAM_CALLS;
}

void gram_label(gram *g, int node, const char *label) {
    if (node < 0 || node >= g->nn || !label) return;
    free(g->nodes[node].label);
    g->nodes[node].label = strdup(label);
}

static const char *label_of(const gram *g, int node) {
    return node >= 0 && node < g->nn && g->nodes[node].label ? g->nodes[node].label : "#";
}

static int oom(char *err, size_t errlen) {
    return util_fail(err, errlen, GRAM_ENOMEM, "out of memory while compiling the schema");
}

static gnode *node_of(gram *g, int id, int kind, char *err, size_t errlen) {
    if (g->finished || id < 0 || id >= g->nn || (kind && g->nodes[id].kind != kind)) {
        util_seterr(err, errlen, "grammar: bad node %d", id);
        return NULL;
    }
    return &g->nodes[id];
}

int gram_node(gram *g, enum gram_kind kind, char *err, size_t errlen) {
    if (g->finished || kind < GRAM_ALT || kind > GRAM_CALLS)
        return util_fail(err, errlen, GRAM_EINVAL, "grammar: bad node kind %d", (int)kind);
    if (g->nn >= GRAM_MAX_NODES)
        return util_fail(err, errlen, GRAM_EINVAL,
                         "the schema needs more than %d nodes; simplify it", GRAM_MAX_NODES);
    if (!grow((void **)&g->nodes, &g->cn, g->nn + 1, sizeof *g->nodes)) return oom(err, errlen);
    gnode *n = &g->nodes[g->nn];
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)kind;
    n->extra = n->items = -1;
    n->max_n = -1;
    n->troot = n->troot_kw = -1;
    /* an ALT, LIT, OBJ and CALLS are usable as they are; STR, numbers and ARR get defaults */
    n->set = true;
    if (kind == GRAM_INT || kind == GRAM_NUM) {
        n->lo = -num_maxmag(n);
        n->hi = num_maxmag(n);
    }
    if (kind == GRAM_CALLS) n->max_n = -1;
    return g->nn++;
}

static int add_bytes(gram *g, const char *s, size_t n, char *err, size_t errlen) {
    if (n > GRAM_MAX_LIT_BYTES || g->nbytes + (long)n > GRAM_MAX_LIT_BYTES)
        return util_fail(err, errlen, GRAM_EINVAL, "the schema's literals and keys exceed %d bytes",
                         GRAM_MAX_LIT_BYTES);
    if (!grow((void **)&g->bytes, &g->cbytes, g->nbytes + (int)n + 1, 1)) return oom(err, errlen);
    if (n) memcpy(g->bytes + g->nbytes, s, n);
    int off = g->nbytes;
    g->nbytes += (int)n;
    return off;
}

static int add_kid(gnode *n, int kid, char *err, size_t errlen) {
    if (!grow((void **)&n->kids, &n->ckids, n->nkids + 1, sizeof *n->kids)) return oom(err, errlen);
    n->kids[n->nkids++] = kid;
    return 0;
}

int gram_alt_add(gram *g, int alt, int node, char *err, size_t errlen) {
    gnode *n = node_of(g, alt, GRAM_ALT, err, errlen);
    if (!n || !node_of(g, node, 0, err, errlen)) return GRAM_EINVAL;
    return add_kid(&g->nodes[alt], node, err, errlen);
}

int gram_lit_add(gram *g, int lit, const char *s, size_t len, char *err, size_t errlen) {
    if (!node_of(g, lit, GRAM_LIT, err, errlen)) return GRAM_EINVAL;
    int off = add_bytes(g, s, len, err, errlen);
    if (off < 0) return off;
    gnode *n = &g->nodes[lit];
    int c = n->clit;
    if (!grow((void **)&n->lit_off, &c, n->nlit + 1, sizeof *n->lit_off)) return oom(err, errlen);
    c = n->clit;
    if (!grow((void **)&n->lit_len, &c, n->nlit + 1, sizeof *n->lit_len)) return oom(err, errlen);
    n->clit = c;
    n->lit_off[n->nlit] = off;
    n->lit_len[n->nlit] = (int32_t)len;
    n->nlit++;
    return 0;
}

int gram_str_set(gram *g, int str, long min_len, long max_len, char *err, size_t errlen) {
    gnode *n = node_of(g, str, GRAM_STR, err, errlen);
    if (!n) return GRAM_EINVAL;
    n->min_n = min_len < 0 ? 0 : min_len;
    n->max_n = max_len;
    return 0;
}

/* value * scale rounded up (ceil) or down, clamped to +-(maxmag + 1). */
static i128 to_units(double v, i128 scale, i128 maxmag, bool up) {
    long double x = (long double)v * (long double)scale;
    long double lim = (long double)maxmag + 1;
    if (x > lim) return maxmag + 1;
    if (x < -lim) return -maxmag - 1;
    long double r = up ? ceill(x) : floorl(x);
    return (i128)r;
}

int gram_num_set(gram *g, int num, bool has_lo, double lo, bool ex_lo, bool has_hi, double hi,
                 bool ex_hi, char *err, size_t errlen) {
    gnode *n = node_of(g, num, 0, err, errlen);
    if (!n || (n->kind != GRAM_INT && n->kind != GRAM_NUM)) return GRAM_EINVAL;
    i128 s = num_scale(n), m = num_maxmag(n);
    i128 L = -m, H = m;
    if (has_lo && !isnan(lo)) {
        i128 u = to_units(lo, s, m, true);
        if (ex_lo && (long double)u == (long double)lo * (long double)s) u++;
        if (u > L) L = u;
    }
    if (has_hi && !isnan(hi)) {
        i128 u = to_units(hi, s, m, false);
        if (ex_hi && (long double)u == (long double)hi * (long double)s) u--;
        if (u < H) H = u;
    }
    n->lo = L;
    n->hi = H;
    return 0;
}

/* A named entry of an OBJ (property) or CALLS (callable) node. */
static int add_prop(gram *g, int obj, const char *key, size_t key_len, int value, bool required,
                    char *err, size_t errlen) {
    gnode *n = &g->nodes[obj];
    for (int i = 0; i < n->nprops; i++)
        if ((size_t)n->props[i].key_len == key_len &&
            !memcmp(g->bytes + n->props[i].key_off, key, key_len))
            return util_fail(err, errlen, GRAM_EINVAL, "property \"%.*s\" declared twice",
                             (int)(key_len > 64 ? 64 : key_len), key);
    int off = add_bytes(g, key, key_len, err, errlen);
    if (off < 0) return off;
    n = &g->nodes[obj];
    if (!grow((void **)&n->props, &n->cprops, n->nprops + 1, sizeof *n->props))
        return oom(err, errlen);
    n->props[n->nprops++] = (gprop){off, (int32_t)key_len, value, required, false};
    return 0;
}

int gram_obj_prop(gram *g, int obj, const char *key, size_t key_len, int value, bool required,
                  char *err, size_t errlen) {
    if (!node_of(g, obj, GRAM_OBJ, err, errlen) || !node_of(g, value, 0, err, errlen))
        return GRAM_EINVAL;
    return add_prop(g, obj, key, key_len, value, required, err, errlen);
}

int gram_obj_extra(gram *g, int obj, int extra, char *err, size_t errlen) {
    gnode *n = node_of(g, obj, GRAM_OBJ, err, errlen);
    if (!n || (extra >= 0 && !node_of(g, extra, 0, err, errlen))) return GRAM_EINVAL;
    g->nodes[obj].extra = extra < 0 ? -1 : extra;
    return 0;
}

int gram_arr_prefix(gram *g, int arr, int item, char *err, size_t errlen) {
    if (!node_of(g, arr, GRAM_ARR, err, errlen) || !node_of(g, item, 0, err, errlen))
        return GRAM_EINVAL;
    return add_kid(&g->nodes[arr], item, err, errlen);
}

int gram_arr_set(gram *g, int arr, int items, long min_items, long max_items, char *err,
                 size_t errlen) {
    gnode *n = node_of(g, arr, GRAM_ARR, err, errlen);
    if (!n || (items >= 0 && !node_of(g, items, 0, err, errlen))) return GRAM_EINVAL;
    n = &g->nodes[arr];
    n->items = items < 0 ? -1 : items;
    n->min_n = min_items < 0 ? 0 : min_items;
    n->max_n = max_items;
    return 0;
}

int gram_calls_add(gram *g, int calls, const char *name, size_t name_len, int params, char *err,
                   size_t errlen) {
    if (!node_of(g, calls, GRAM_CALLS, err, errlen) || !node_of(g, params, GRAM_OBJ, err, errlen))
        return GRAM_EINVAL;
    return add_prop(g, calls, name, name_len, params, false, err, errlen);
}

int gram_calls_set_max(gram *g, int calls, int max_calls) {
    gnode *n = node_of(g, calls, GRAM_CALLS, NULL, 0);
    if (!n) return GRAM_EINVAL;
    n->max_n = max_calls;
    return 0;
}

static int lit_node(gram *g, const char *const *words, int n, char *err, size_t errlen) {
    int id = gram_node(g, GRAM_LIT, err, errlen);
    for (int i = 0; id >= 0 && i < n; i++) {
        int rc = gram_lit_add(g, id, words[i], strlen(words[i]), err, errlen);
        if (rc < 0) return rc;
    }
    return id;
}

int gram_any(gram *g, char *err, size_t errlen) {
    if (g->any >= 0) return g->any;
    int alt = gram_node(g, GRAM_ALT, err, errlen);
    int obj = gram_node(g, GRAM_OBJ, err, errlen);
    int arr = gram_node(g, GRAM_ARR, err, errlen);
    int str = gram_node(g, GRAM_STR, err, errlen);
    int num = gram_node(g, GRAM_NUM, err, errlen);
    static const char *const json[] = {"true", "false", "null"}, *const py[] = {"True", "False",
                                                                                "None"};
    int lit = alt < 0 || obj < 0 || arr < 0 || str < 0 || num < 0
                  ? -1
                  : lit_node(g, g->py ? py : json, 3, err, errlen);
    if (lit < 0) return lit < -1 ? lit : GRAM_ENOMEM;
    int rc = 0;
    rc |= gram_obj_extra(g, obj, alt, err, errlen);
    rc |= gram_arr_set(g, arr, alt, 0, -1, err, errlen);
    rc |= gram_str_set(g, str, 0, -1, err, errlen);
    int kids[] = {obj, arr, str, num, lit};
    for (int i = 0; i < 5; i++)
        rc |= gram_alt_add(g, alt, kids[i], err, errlen);
    if (rc) return GRAM_ENOMEM;
    g->any = alt;
    return alt;
}

/* ---- finishing ---- */

/* Writes s as the body of a JSON string (no quotes) into out (6 * n + 1 bytes). */
static size_t json_escape(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            const char *e = c == '\n'   ? "\\n"
                            : c == '\t' ? "\\t"
                            : c == '\r' ? "\\r"
                            : c == '\b' ? "\\b"
                            : c == '\f' ? "\\f"
                                        : NULL;
            if (e) {
                memcpy(out + o, e, 2);
                o += 2;
            } else {
                static const char hex[] = "0123456789abcdef";
                memcpy(out + o, "\\u00", 4);
                out[o + 4] = hex[c >> 4];
                out[o + 5] = hex[c & 15];
                o += 6;
            }
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

static int32_t item_node(const gnode *n, long i) {
    return i < n->nkids ? n->kids[i] : n->items;
}

static int32_t h_of(const gram *g, int id) {
    return id < 0 ? H_INF : g->nodes[id].h;
}

static int32_t node_h(const gram *g, const gnode *n) {
    switch (n->kind) {
    case GRAM_ALT: {
        int32_t best = H_INF;
        for (int i = 0; i < n->nkids; i++)
            if (h_of(g, n->kids[i]) < best) best = h_of(g, n->kids[i]);
        return best;
    }
    case GRAM_LIT:
        return n->nlit > 0 ? 1 : H_INF;
    case GRAM_STR:
        return n->max_n >= 0 && n->max_n < n->min_n ? H_INF : 1;
    case GRAM_INT:
    case GRAM_NUM:
        return n->lo <= n->hi ? 1 : H_INF;
    case GRAM_OBJ: {
        int32_t h = 0;
        for (int i = 0; i < n->nprops; i++)
            if (n->props[i].required && h_of(g, n->props[i].value) > h)
                h = h_of(g, n->props[i].value);
        return h >= H_INF ? H_INF : h + 1;
    }
    case GRAM_ARR: {
        if (n->max_n >= 0 && n->max_n < n->min_n) return H_INF;
        int32_t h = 0;
        long lim = n->min_n < n->nkids ? n->min_n : n->nkids;
        for (long i = 0; i < lim; i++)
            if (h_of(g, n->kids[i]) > h) h = h_of(g, n->kids[i]);
        if (n->min_n > n->nkids && h_of(g, n->items) > h) h = h_of(g, n->items);
        return h >= H_INF ? H_INF : h + 1;
    }
    case GRAM_CALLS: {
        int32_t best = H_INF;
        for (int i = 0; i < n->nprops; i++)
            if (h_of(g, n->props[i].value) < best) best = h_of(g, n->props[i].value);
        return best >= H_INF || n->max_n == 0 ? H_INF : best + 1;
    }
    }
    return H_INF;
}

/* The node to blame for an unfinishable root: follow what must be written to a node whose own
 * constraints are impossible (or that needs itself endlessly). */
static int blame(const gram *g, int id, uint8_t *seen) {
    if (id < 0 || seen[id]) return id;
    seen[id] = 1;
    const gnode *n = &g->nodes[id];
    switch (n->kind) {
    case GRAM_ALT:
        for (int i = 0; i < n->nkids; i++)
            if (!seen[n->kids[i]]) return blame(g, n->kids[i], seen);
        return id;
    case GRAM_OBJ:
        for (int i = 0; i < n->nprops; i++)
            if (n->props[i].required && h_of(g, n->props[i].value) >= H_INF &&
                !seen[n->props[i].value])
                return blame(g, n->props[i].value, seen);
        return id;
    case GRAM_ARR:
        for (long i = 0; i < n->min_n && i < n->nkids; i++)
            if (h_of(g, n->kids[i]) >= H_INF && !seen[n->kids[i]])
                return blame(g, n->kids[i], seen);
        if (n->min_n > n->nkids && n->items >= 0 && h_of(g, n->items) >= H_INF && !seen[n->items])
            return blame(g, n->items, seen);
        return id;
    default:
        return id;
    }
}

static bool is_ident(const char *s, size_t n) {
    if (!n) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (i > 0 && c >= '0' && c <= '9') || (c == '.' && i > 0 && i + 1 < n);
        if (!ok) return false;
    }
    return true;
}

static int build_tries(gram *g, char *err, size_t errlen) {
    for (int id = 0; id < g->nn; id++) {
        gnode *n = &g->nodes[id];
        if (n->kind == GRAM_LIT) {
            tstr *ss = malloc(((size_t)n->nlit + 1) * sizeof *ss);
            if (!ss) return oom(err, errlen);
            for (int i = 0; i < n->nlit; i++)
                ss[i] = (tstr){(const uint8_t *)g->bytes + n->lit_off[i], (size_t)n->lit_len[i], 0};
            int32_t r = trie_add(&g->t, ss, n->nlit, false);
            free(ss);
            if (r < 0) return oom(err, errlen);
            g->nodes[id].troot = r;
        } else if (n->kind == GRAM_OBJ || n->kind == GRAM_CALLS) {
            size_t tot = 0;
            for (int i = 0; i < n->nprops; i++)
                tot += (size_t)n->props[i].key_len * 6 + 2;
            tstr *ss = malloc(((size_t)n->nprops + 1) * sizeof *ss);
            tstr *kw = malloc(((size_t)n->nprops + 1) * sizeof *kw);
            char *buf = malloc(tot + 1), *kbuf = malloc(tot + 1);
            if (!ss || !kw || !buf || !kbuf) {
                free(ss), free(kw), free(buf), free(kbuf);
                return oom(err, errlen);
            }
            size_t o = 0, ko = 0;
            int nkw = 0;
            for (int i = 0; i < n->nprops; i++) {
                const char *k = g->bytes + n->props[i].key_off;
                size_t kl = (size_t)n->props[i].key_len;
                size_t l = json_escape(k, kl, buf + o);
                buf[o + l] = '"';
                ss[i] = (tstr){(const uint8_t *)buf + o, l + 1, i};
                o += l + 1;
                n->props[i].ident = is_ident(k, kl);
                if (n->props[i].ident) {
                    memcpy(kbuf + ko, k, kl);
                    kbuf[ko + kl] = n->kind == GRAM_CALLS ? '(' : '=';
                    kw[nkw++] = (tstr){(const uint8_t *)kbuf + ko, kl + 1, i};
                    ko += kl + 1;
                }
            }
            int32_t r = n->kind == GRAM_OBJ ? trie_add(&g->t, ss, n->nprops, true) : 0;
            int32_t rk = r >= 0 ? trie_add(&g->t, kw, nkw, true) : -1;
            free(ss), free(kw), free(buf), free(kbuf);
            if (r < 0 || rk < 0) return oom(err, errlen);
            n = &g->nodes[id];
            n->troot = r;
            n->troot_kw = rk;
            n->next_req = malloc(((size_t)n->nprops + 1) * sizeof *n->next_req);
            if (!n->next_req) return oom(err, errlen);
            n->next_req[n->nprops] = n->nprops;
            for (int i = n->nprops - 1; i >= 0; i--)
                n->next_req[i] = n->props[i].required ? i : n->next_req[i + 1];
        }
    }
    return 0;
}

int gram_finish(gram *g, int root, char *err, size_t errlen) {
    if (g->finished || root < 0 || root >= g->nn)
        return util_fail(err, errlen, GRAM_EINVAL, "grammar: bad root %d", root);
    /* least nesting: a node with least nesting k is right after k rounds */
    for (int i = 0; i < g->nn; i++)
        g->nodes[i].h = H_INF;
    for (int round = 0; round <= GRAM_MAX_DEPTH + 1; round++) {
        bool changed = false;
        for (int i = 0; i < g->nn; i++) {
            int32_t h = node_h(g, &g->nodes[i]);
            if (h > GRAM_MAX_DEPTH) h = H_INF;
            if (h != g->nodes[i].h) {
                g->nodes[i].h = h;
                changed = true;
            }
        }
        if (!changed) break;
    }
    if (g->nodes[root].h >= H_INF) {
        uint8_t *seen = calloc((size_t)g->nn, 1);
        if (!seen) return oom(err, errlen);
        int b = blame(g, root, seen);
        free(seen);
        return util_fail(err, errlen, GRAM_EINVAL,
                         "the schema at %s admits no value that can be written within %d levels "
                         "of nesting (contradictory bounds, an empty enum, or a reference that "
                         "requires itself)",
                         label_of(g, b), GRAM_MAX_DEPTH);
    }
    for (int i = 0; i < g->nn; i++) {
        const gnode *n = &g->nodes[i];
        if (n->kind == GRAM_CALLS)
            for (int k = 0; k < n->nprops; k++)
                if (!is_ident(g->bytes + n->props[k].key_off, (size_t)n->props[k].key_len))
                    return util_fail(err, errlen, GRAM_EINVAL,
                                     "function name \"%.*s\" cannot be written as a Python call",
                                     n->props[k].key_len > 64 ? 64 : n->props[k].key_len,
                                     g->bytes + n->props[k].key_off);
        for (int k = 0; n->kind == GRAM_CALLS && k < n->nprops; k++) { /* keyword arguments */
            const gnode *pn = &g->nodes[n->props[k].value];
            for (int q = 0; q < pn->nprops; q++)
                if (pn->props[q].required &&
                    !is_ident(g->bytes + pn->props[q].key_off, (size_t)pn->props[q].key_len))
                    return util_fail(err, errlen, GRAM_EINVAL,
                                     "required parameter \"%.*s\" of %.*s cannot be written as a "
                                     "Python keyword argument",
                                     pn->props[q].key_len > 64 ? 64 : pn->props[q].key_len,
                                     g->bytes + pn->props[q].key_off,
                                     n->props[k].key_len > 64 ? 64 : n->props[k].key_len,
                                     g->bytes + n->props[k].key_off);
        }
    }
    int rc = build_tries(g, err, errlen);
    if (rc < 0) return rc;
    g->root = root;
    g->finished = true;
    return 0;
}

/* ---------------------------------------------------------------- the vocabulary */

struct gram_vocab {
    int n_vocab, eos, call_start, call_end;
    trie t;
    int32_t root;
    char *pieces;   /* every trie token's bytes */
    int32_t *p_off; /* [n_vocab]: offset, -1 when the token is not in the trie */
    int32_t *p_len;
};

int gram_vocab_new(gram_vocab **out, const tok *t, char *err, size_t errlen) {
    *out = NULL;
    gram_vocab *v = calloc(1, sizeof *v);
    if (!v) return oom(err, errlen);
    int n = tok_n_vocab(t);
    v->n_vocab = n;
    v->eos = tok_eos(t);
    v->call_start = tok_find(t, "<|tool_call_start|>", 19);
    v->call_end = tok_find(t, "<|tool_call_end|>", 17);
    v->p_off = malloc((size_t)n * sizeof *v->p_off);
    v->p_len = malloc((size_t)n * sizeof *v->p_len);
    tstr *ss = malloc((size_t)n * sizeof *ss);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t l = 0;
        tok_piece(t, i, &l);
        total += l;
    }
    v->pieces = malloc(total + 1);
    if (!v->p_off || !v->p_len || !ss || !v->pieces) goto nomem;
    size_t o = 0;
    int ns = 0;
    for (int i = 0; i < n; i++) {
        size_t l = 0;
        const char *p = tok_piece(t, i, &l);
        int ty = tok_type_of(t, i);
        v->p_off[i] = -1;
        v->p_len[i] = 0;
        if (!p || !l || i == v->eos || !(ty == TOK_NORMAL || ty == TOK_BYTE || ty == TOK_USER))
            continue;
        memcpy(v->pieces + o, p, l);
        v->p_off[i] = (int32_t)o;
        v->p_len[i] = (int32_t)l;
        ss[ns++] = (tstr){(const uint8_t *)v->pieces + o, l, i};
        o += l;
    }
    v->root = trie_add(&v->t, ss, ns, false);
    if (v->root < 0) goto nomem;
    free(ss);
    *out = v;
    return 0;
nomem:
    free(ss);
    gram_vocab_free(v);
    return oom(err, errlen);
}

void gram_vocab_free(gram_vocab *v) {
    if (!v) return;
    trie_free(&v->t);
    free(v->pieces);
    free(v->p_off);
    free(v->p_len);
    free(v);
}

int gram_vocab_n(const gram_vocab *v) {
    return v->n_vocab;
}
int gram_vocab_eos(const gram_vocab *v) {
    return v->eos;
}
bool gram_vocab_has_calls(const gram_vocab *v) {
    return v->call_start >= 0 && v->call_end >= 0;
}

/* ---------------------------------------------------------------- the matcher */

enum { FR_ROOT = 0 }; /* frame kinds: FR_ROOT or a node kind */

enum { R_START, R_DONE };
enum { O_OPEN, O_KEY, O_KEYEND, O_COLON, O_AFTER, O_COMMA };
enum { A_OPEN, A_AFTER, A_COMMA };
enum { S_IN, S_ESC, S_U };
enum { N_NEG, N_ZERO, N_INT, N_DOT, N_FRAC };
enum { K_START, K_OPEN, K_NAME, K_AFTER, K_SEP, K_CLOSE };

enum { FL_KW = 1, FL_NEG = 2, FL_BS = 4, FL_SURR = 8 };

/* One frame of a parse stack. Stacks are persistent: a step copies only the frames it changes,
 * so parses share their common bottoms and a state is a handful of indices. */
typedef struct gfr {
    int32_t parent, node;
    uint8_t kind, st, ws, flags;
    int32_t depth;
    int32_t a, b; /* OBJ: cursor, key trie node; ARR: count; STR: length, UTF-8 need;
                     LIT: trie node; NUM: int digits, frac digits; CALLS: calls, trie node */
    int64_t x, y; /* OBJ: chosen property; STR: UTF-8 range, hex digits; NUM: int, frac value */
} gfr;

typedef struct gst {
    int n;
    int32_t t[GRAM_MAX_THREADS];
} gst;

struct gram_matcher {
    const gram *g;
    const gram_vocab *v;
    gfr *ar; /* frames; the committed state's first, scratch after */
    int nar, car;
    gfr *ar2; /* compaction target */
    int car2;
    gst cur;
    bool oom;
    long n_kept, n_masked; /* gram_sample's two paths */
};

static int fr_push(gram_matcher *m, const gfr *f) {
    if (m->nar == m->car && !grow((void **)&m->ar, &m->car, m->nar + 1, sizeof *m->ar)) {
        m->oom = true;
        return -1;
    }
    m->ar[m->nar] = *f;
    return m->nar++;
}

static bool fr_same(const gfr *a, const gfr *b) {
    return a->node == b->node && a->kind == b->kind && a->st == b->st && a->ws == b->ws &&
           a->flags == b->flags && a->a == b->a && a->b == b->b && a->x == b->x && a->y == b->y;
}

static bool chain_same(const gram_matcher *m, int32_t a, int32_t b) {
    while (a != b) {
        if (a < 0 || b < 0 || !fr_same(&m->ar[a], &m->ar[b])) return false;
        a = m->ar[a].parent;
        b = m->ar[b].parent;
    }
    return true;
}

static void out_add(gram_matcher *m, gst *o, int32_t fi) {
    if (fi < 0) return;
    for (int i = 0; i < o->n; i++)
        if (chain_same(m, o->t[i], fi)) return;
    if (o->n < GRAM_MAX_THREADS) o->t[o->n++] = fi;
}

static bool fits(const gram *g, int32_t depth, int32_t node) {
    return node >= 0 && depth + g->nodes[node].h <= GRAM_MAX_DEPTH;
}

static bool is_ws(unsigned c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A whitespace byte in a frame whose state allows it: the same frame, one more byte of it. */
static bool take_ws(gram_matcher *m, const gfr *f, unsigned c, gst *o) {
    if (!is_ws(c)) return false;
    if (f->ws < GRAM_MAX_WS) {
        gfr n = *f;
        n.ws++;
        out_add(m, o, fr_push(m, &n));
    }
    return true;
}

/* The Python call syntax's separators (", " between calls and keyword arguments): one space. */
static bool take_space(gram_matcher *m, const gfr *f, unsigned c, gst *o) {
    if (!is_ws(c)) return false;
    if (c == ' ' && f->ws == 0) {
        gfr n = *f;
        n.ws = 1;
        out_add(m, o, fr_push(m, &n));
    }
    return true;
}

/* numbers: can some value written from this prefix fall in [lo, hi]? */
static bool span_ok(const gnode *n, bool neg, i128 a, i128 b) {
    if (neg) {
        i128 t = a;
        a = -b;
        b = -t;
    }
    i128 l = a > n->lo ? a : n->lo, h = b < n->hi ? b : n->hi;
    return l <= h;
}

static bool num_ok(const gnode *n, bool neg, int nI, int64_t I, bool dot, int nF, int64_t F) {
    const i128 S = num_scale(n);
    if (nI == 0) return span_ok(n, neg, 0, num_maxmag(n));
    if (dot) {
        i128 unit = pow10_i(GRAM_MAX_FRAC_DIGITS - nF);
        i128 a = (i128)I * S + (i128)F * unit;
        return span_ok(n, neg, a, a + unit - 1);
    }
    if (I == 0) return span_ok(n, neg, 0, S - 1);
    i128 p = 1;
    for (int j = 0; nI + j <= GRAM_MAX_INT_DIGITS; j++, p *= 10)
        if (span_ok(n, neg, (i128)I * p * S, ((i128)I + 1) * p * S - 1)) return true;
    return false;
}

static bool num_complete(const gnode *n, const gfr *f) {
    if (f->st != N_ZERO && f->st != N_INT && f->st != N_FRAC) return false;
    i128 v = (i128)f->x * num_scale(n);
    if (f->st == N_FRAC) v += (i128)f->y * pow10_i(GRAM_MAX_FRAC_DIGITS - f->b);
    if (f->flags & FL_NEG) v = -v;
    return v >= n->lo && v <= n->hi;
}

/* UTF-8 inside strings: the state is (bytes still needed, allowed range of the next one). */
static bool utf8_step(uint32_t *st, unsigned c, bool *starts_char) {
    *starts_char = false;
    uint32_t need = *st >> 16;
    if (need) {
        unsigned lo = (*st >> 8) & 0xff, hi = *st & 0xff;
        if (c < lo || c > hi) return false;
        need--;
        *st = need ? (need << 16) | (0x80u << 8) | 0xbfu : 0;
        return true;
    }
    *starts_char = true;
    if (c < 0x80) return c >= 0x20;
    if (c >= 0xc2 && c <= 0xdf)
        *st = (1u << 16) | (0x80u << 8) | 0xbf;
    else if (c == 0xe0)
        *st = (2u << 16) | (0xa0u << 8) | 0xbf;
    else if (c == 0xed)
        *st = (2u << 16) | (0x80u << 8) | 0x9f;
    else if (c >= 0xe1 && c <= 0xef)
        *st = (2u << 16) | (0x80u << 8) | 0xbf;
    else if (c == 0xf0)
        *st = (3u << 16) | (0x90u << 8) | 0xbf;
    else if (c >= 0xf1 && c <= 0xf3)
        *st = (3u << 16) | (0x80u << 8) | 0xbf;
    else if (c == 0xf4)
        *st = (3u << 16) | (0x80u << 8) | 0x8f;
    else
        return false;
    return true;
}

static void feed(gram_matcher *m, int32_t fi, unsigned c, gst *o);

/* Starts a value of node under the (already advanced) frame pi with its first byte c. */
static void start_value(gram_matcher *m, int32_t pi, int32_t node, unsigned c, gst *o) {
    const gram *g = m->g;
    const gnode *n = &g->nodes[node];
    gfr f = {0};
    f.parent = pi;
    f.node = node;
    f.kind = n->kind;
    f.depth = m->ar[pi].depth + 1;
    switch (n->kind) {
    case GRAM_ALT:
        for (int i = 0; i < n->nkids; i++)
            if (fits(g, m->ar[pi].depth, n->kids[i])) start_value(m, pi, n->kids[i], c, o);
        return;
    case GRAM_LIT: {
        int32_t ch = trie_edge(&g->t, n->troot, c);
        if (ch < 0) return;
        f.a = ch;
        out_add(m, o, fr_push(m, &f));
        return;
    }
    case GRAM_STR:
        if (c != '"') return;
        f.st = S_IN;
        out_add(m, o, fr_push(m, &f));
        return;
    case GRAM_INT:
    case GRAM_NUM:
        if (c == '-') {
            if (!num_ok(n, true, 0, 0, false, 0, 0)) return;
            f.st = N_NEG;
            f.flags = FL_NEG;
        } else if (c >= '0' && c <= '9') {
            if (!num_ok(n, false, 1, c - '0', false, 0, 0)) return;
            f.st = c == '0' ? N_ZERO : N_INT;
            f.a = 1;
            f.x = c - '0';
        } else {
            return;
        }
        out_add(m, o, fr_push(m, &f));
        return;
    case GRAM_OBJ:
        if (c != '{') return;
        f.st = O_OPEN;
        out_add(m, o, fr_push(m, &f));
        return;
    case GRAM_ARR:
        if (c != '[') return;
        f.st = A_OPEN;
        out_add(m, o, fr_push(m, &f));
        return;
    default:
        return;
    }
}

/* ---- objects ---- */

static int32_t obj_limit(const gnode *n, int32_t cursor) {
    int32_t r = n->next_req[cursor];
    return r < n->nprops ? r : n->nprops - 1;
}

static bool obj_selectable(const gram *g, const gfr *f, const gnode *n, int32_t k) {
    return k >= f->a && k <= obj_limit(n, f->a) && fits(g, f->depth, n->props[k].value) &&
           (!(f->flags & FL_KW) || n->props[k].ident);
}

static bool obj_extra_ok(const gram *g, const gfr *f, const gnode *n) {
    return !(f->flags & FL_KW) && n->extra >= 0 && fits(g, f->depth, n->extra);
}

/* Some key still selectable below trie node tn. */
static bool trie_has_key(const gram *g, const gfr *f, const gnode *n, int32_t tn) {
    const tnode *t = &g->t.n[tn];
    int32_t lim = obj_limit(n, f->a);
    for (int i = 0; i < t->nk; i++) {
        int32_t k = g->t.k[t->k0 + i];
        if (k > lim) break;
        if (obj_selectable(g, f, n, k)) return true;
    }
    return false;
}

static bool obj_any_key(const gram *g, const gfr *f, const gnode *n) {
    if (obj_extra_ok(g, f, n)) return true;
    int32_t lim = obj_limit(n, f->a);
    for (int32_t k = f->a; k <= lim; k++)
        if (obj_selectable(g, f, n, k)) return true;
    return false;
}

static bool obj_can_close(const gnode *n, const gfr *f) {
    return n->next_req[f->a] == n->nprops;
}

static void obj_key_byte(gram_matcher *m, const gfr *f, unsigned c, gst *o) {
    const gram *g = m->g;
    const gnode *n = &g->nodes[f->node];
    bool kw = f->flags & FL_KW;
    unsigned term = kw ? '=' : '"';
    int32_t ch = f->b >= 0 ? trie_edge(&g->t, f->b, c) : -1;
    if (c == term && ch >= 0 && g->t.n[ch].np > 0) { /* exactly a declared key */
        int32_t k = g->t.p[g->t.n[ch].p0];
        if (!obj_selectable(g, f, n, k)) return;
        gfr x = *f;
        x.st = kw ? O_COLON : O_KEYEND;
        x.x = k;
        x.b = -1;
        x.ws = 0;
        out_add(m, o, fr_push(m, &x));
        return;
    }
    if (c == term && !kw && !(ch >= 0 && (f->flags & FL_BS))) { /* an extra key ends */
        if (!obj_extra_ok(g, f, n) || (f->flags & FL_BS) || (f->y >> 16)) return;
        gfr x = *f;
        x.st = O_KEYEND;
        x.x = -1;
        x.b = -1;
        x.y = 0;
        x.ws = 0;
        out_add(m, o, fr_push(m, &x));
        return;
    }
    bool on = ch >= 0 && trie_has_key(g, f, n, ch);
    uint32_t u = (uint32_t)f->y;
    bool sc;
    bool ext = !on && c != '\\' && c != '"' && !(f->flags & FL_BS) && obj_extra_ok(g, f, n) &&
               utf8_step(&u, c, &sc);
    if (!on && !ext) return;
    gfr x = *f;
    x.b = ch;
    if (on) {
        u = (uint32_t)f->y;
        if (!utf8_step(&u, c, &sc)) u = 0; /* escape bytes inside a declared key */
        if (c == '\\') x.flags |= FL_BS;
    }
    x.y = u;
    out_add(m, o, fr_push(m, &x));
}

static void feed_obj(gram_matcher *m, int32_t fi, unsigned c, gst *o) {
    const gram *g = m->g;
    gfr f = m->ar[fi];
    const gnode *n = &g->nodes[f.node];
    bool kw = f.flags & FL_KW;
    unsigned close = kw ? ')' : '}';
    switch (f.st) {
    case O_OPEN:
    case O_COMMA:
        if (!kw && take_ws(m, &f, c, o)) return;
        if (kw && f.st == O_COMMA && take_space(m, &f, c, o)) return;
        if (f.st == O_OPEN && c == close) {
            if (obj_can_close(n, &f)) out_add(m, o, f.parent);
            return;
        }
        if (kw) {
            gfr k = f;
            k.st = O_KEY;
            k.b = n->troot_kw;
            k.y = 0;
            k.ws = 0;
            obj_key_byte(m, &k, c, o);
        } else if (c == '"' && obj_any_key(g, &f, n)) {
            gfr k = f;
            k.st = O_KEY;
            k.b = n->troot;
            k.y = 0;
            k.ws = 0;
            k.flags &= (uint8_t)~FL_BS;
            out_add(m, o, fr_push(m, &k));
        }
        return;
    case O_KEY:
        obj_key_byte(m, &f, c, o);
        return;
    case O_KEYEND:
        if (c == ':') {
            gfr k = f;
            k.st = O_COLON;
            k.ws = 0;
            out_add(m, o, fr_push(m, &k));
        }
        return;
    case O_COLON: {
        if (!kw && take_ws(m, &f, c, o)) return;
        gfr p = f;
        p.st = O_AFTER;
        p.ws = 0;
        p.flags &= (uint8_t)~FL_BS;
        int32_t vn = f.x >= 0 ? n->props[f.x].value : n->extra;
        if (f.x >= 0) p.a = (int32_t)f.x + 1;
        p.x = 0;
        int32_t pi = fr_push(m, &p);
        if (pi < 0) return;
        start_value(m, pi, vn, c, o);
        return;
    }
    case O_AFTER:
        if (!kw && take_ws(m, &f, c, o)) return;
        if (c == ',') {
            if (!obj_any_key(g, &f, n)) return;
            gfr k = f;
            k.st = O_COMMA;
            k.ws = 0;
            out_add(m, o, fr_push(m, &k));
        } else if (c == close && obj_can_close(n, &f)) {
            out_add(m, o, f.parent);
        }
        return;
    }
}

/* ---- arrays ---- */

static void arr_item(gram_matcher *m, const gfr *f, unsigned c, gst *o) {
    const gnode *n = &m->g->nodes[f->node];
    int32_t it = item_node(n, f->a);
    if (!fits(m->g, f->depth, it)) return;
    gfr p = *f;
    p.st = A_AFTER;
    p.a = f->a + 1;
    p.ws = 0;
    int32_t pi = fr_push(m, &p);
    if (pi >= 0) start_value(m, pi, it, c, o);
}

static void feed_arr(gram_matcher *m, int32_t fi, unsigned c, gst *o) {
    gfr f = m->ar[fi];
    const gnode *n = &m->g->nodes[f.node];
    if (take_ws(m, &f, c, o)) return;
    switch (f.st) {
    case A_OPEN:
        if (c == ']') {
            if (n->min_n == 0) out_add(m, o, f.parent);
            return;
        }
        if (n->max_n != 0) arr_item(m, &f, c, o);
        return;
    case A_AFTER:
        if (c == ']') {
            if (f.a >= n->min_n) out_add(m, o, f.parent);
        } else if (c == ',') {
            if ((n->max_n < 0 || f.a < n->max_n) && fits(m->g, f.depth, item_node(n, f.a))) {
                gfr k = f;
                k.st = A_COMMA;
                k.ws = 0;
                out_add(m, o, fr_push(m, &k));
            }
        }
        return;
    case A_COMMA:
        arr_item(m, &f, c, o);
        return;
    }
}

/* ---- strings ---- */

static bool is_hex(unsigned c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static void feed_str(gram_matcher *m, int32_t fi, unsigned c, gst *o) {
    gfr f = m->ar[fi];
    const gnode *n = &m->g->nodes[f.node];
    bool room = n->max_n < 0 || f.a < n->max_n;
    gfr x = f;
    switch (f.st) {
    case S_IN: {
        if (f.b == 0 && c == '"') {
            if (f.a >= n->min_n) out_add(m, o, f.parent);
            return;
        }
        if (f.b == 0 && c == '\\') {
            if (!room) return;
            x.st = S_ESC;
            break;
        }
        uint32_t u = (uint32_t)f.b;
        bool starts;
        if (!utf8_step(&u, c, &starts)) return;
        if (starts) {
            if (!room) return;
            x.a++;
        }
        x.b = (int32_t)u;
        break;
    }
    case S_ESC:
        if (c == 'u') {
            x.st = S_U;
            x.y = 0;
            break;
        }
        if (!strchr("\"\\bfnrt", (int)c) && !(c == '/' && !m->g->py)) return;
        if (!c) return;
        x.st = S_IN;
        x.a++;
        break;
    case S_U:
        if (!is_hex(c)) return;
        if (f.y == 0 && (c == 'd' || c == 'D'))
            x.flags |= FL_SURR;
        else if (f.y == 1 && (f.flags & FL_SURR) && !(c >= '0' && c <= '7'))
            return;
        x.y++;
        if (x.y == 4) {
            x.st = S_IN;
            x.a++;
            x.y = 0;
            x.flags &= (uint8_t)~FL_SURR;
        }
        break;
    }
    out_add(m, o, fr_push(m, &x));
}

/* ---- numbers and literals ---- */

static void feed_num(gram_matcher *m, int32_t fi, unsigned c, gst *o) {
    gfr f = m->ar[fi];
    const gnode *n = &m->g->nodes[f.node];
    bool neg = f.flags & FL_NEG, digit = c >= '0' && c <= '9';
    int d = (int)c - '0';
    gfr x = f;
    bool ok = false;
    switch (f.st) {
    case N_NEG:
        if (digit && num_ok(n, neg, 1, d, false, 0, 0)) {
            x.st = d == 0 ? N_ZERO : N_INT;
            x.a = 1;
            x.x = d;
            ok = true;
        }
        break;
    case N_ZERO:
    case N_INT:
        if (digit && f.st == N_INT && f.a < GRAM_MAX_INT_DIGITS &&
            num_ok(n, neg, f.a + 1, f.x * 10 + d, false, 0, 0)) {
            x.a++;
            x.x = f.x * 10 + d;
            ok = true;
        } else if (c == '.' && n->kind == GRAM_NUM && num_ok(n, neg, f.a, f.x, true, 0, 0)) {
            x.st = N_DOT;
            ok = true;
        }
        break;
    case N_DOT:
    case N_FRAC:
        if (digit && f.b < GRAM_MAX_FRAC_DIGITS &&
            num_ok(n, neg, f.a, f.x, true, f.b + 1, f.y * 10 + d)) {
            x.st = N_FRAC;
            x.b++;
            x.y = f.y * 10 + d;
            ok = true;
        }
        break;
    }
    if (ok) out_add(m, o, fr_push(m, &x));
    if (num_complete(n, &f)) feed(m, f.parent, c, o);
}

static void feed_lit(gram_matcher *m, int32_t fi, unsigned c, gst *o) {
    gfr f = m->ar[fi];
    const trie *t = &m->g->t;
    int32_t ch = trie_edge(t, f.a, c);
    if (ch >= 0) {
        gfr x = f;
        x.a = ch;
        out_add(m, o, fr_push(m, &x));
    }
    if (t->n[f.a].np > 0) feed(m, f.parent, c, o);
}

/* ---- tool calls ---- */

static void calls_name_byte(gram_matcher *m, const gfr *f, unsigned c, gst *o) {
    const gram *g = m->g;
    const gnode *n = &g->nodes[f->node];
    int32_t ch = trie_edge(&g->t, f->b, c);
    if (ch < 0) return;
    if (c == '(' && g->t.n[ch].np > 0) {
        int32_t k = g->t.p[g->t.n[ch].p0];
        int32_t params = n->props[k].value;
        if (!fits(g, f->depth, params)) return;
        gfr p = *f;
        p.st = K_AFTER;
        p.a = f->a + 1;
        p.ws = 0;
        int32_t pi = fr_push(m, &p);
        if (pi < 0) return;
        gfr ob = {0};
        ob.parent = pi;
        ob.node = params;
        ob.kind = GRAM_OBJ;
        ob.st = O_OPEN;
        ob.flags = FL_KW;
        ob.depth = f->depth + 1;
        out_add(m, o, fr_push(m, &ob));
        return;
    }
    /* some callable still fits below */
    const tnode *t = &g->t.n[ch];
    bool any = false;
    for (int i = 0; i < t->nk && !any; i++)
        any = fits(g, f->depth, n->props[g->t.k[t->k0 + i]].value);
    if (!any) return;
    gfr x = *f;
    x.st = K_NAME;
    x.b = ch;
    x.ws = 0;
    out_add(m, o, fr_push(m, &x));
}

static void feed_calls(gram_matcher *m, int32_t fi, unsigned c, gst *o) {
    gfr f = m->ar[fi];
    const gnode *n = &m->g->nodes[f.node];
    switch (f.st) {
    case K_OPEN:
        if (c == '[') {
            gfr x = f;
            x.st = K_NAME;
            x.b = n->troot_kw;
            out_add(m, o, fr_push(m, &x));
        }
        return;
    case K_NAME:
        calls_name_byte(m, &f, c, o);
        return;
    case K_AFTER:
        if (c == ',' && (n->max_n < 0 || f.a < n->max_n)) {
            gfr x = f;
            x.st = K_SEP;
            x.ws = 0;
            out_add(m, o, fr_push(m, &x));
        } else if (c == ']') {
            gfr x = f;
            x.st = K_CLOSE;
            out_add(m, o, fr_push(m, &x));
        }
        return;
    case K_SEP: {
        if (take_space(m, &f, c, o)) return;
        gfr x = f;
        x.b = n->troot_kw;
        calls_name_byte(m, &x, c, o);
        return;
    }
    default:
        return; /* K_START and K_CLOSE take tokens, not bytes */
    }
}

static void feed(gram_matcher *m, int32_t fi, unsigned c, gst *o) {
    if (fi < 0) return;
    const gfr *f = &m->ar[fi];
    switch (f->kind) {
    case FR_ROOT: {
        if (f->st != R_START) return;
        gfr r = *f;
        if (take_ws(m, &r, c, o)) return;
        r.st = R_DONE;
        r.ws = 0;
        int32_t pi = fr_push(m, &r);
        if (pi >= 0) start_value(m, pi, m->g->root, c, o);
        return;
    }
    case GRAM_OBJ:
        feed_obj(m, fi, c, o);
        return;
    case GRAM_ARR:
        feed_arr(m, fi, c, o);
        return;
    case GRAM_STR:
        feed_str(m, fi, c, o);
        return;
    case GRAM_INT:
    case GRAM_NUM:
        feed_num(m, fi, c, o);
        return;
    case GRAM_LIT:
        feed_lit(m, fi, c, o);
        return;
    case GRAM_CALLS:
        feed_calls(m, fi, c, o);
        return;
    }
}

static void step(gram_matcher *m, const gst *in, unsigned c, gst *out) {
    out->n = 0;
    for (int i = 0; i < in->n; i++)
        feed(m, in->t[i], c, out);
}

/* The thread's value is complete: only completed leaves above the finished root. */
static bool thread_complete(const gram_matcher *m, int32_t fi) {
    while (fi >= 0) {
        const gfr *f = &m->ar[fi];
        if (f->kind == FR_ROOT) return f->st == R_DONE;
        if (f->kind == GRAM_LIT && m->g->t.n[f->a].np > 0) {
            fi = f->parent;
            continue;
        }
        if ((f->kind == GRAM_INT || f->kind == GRAM_NUM) &&
            num_complete(&m->g->nodes[f->node], f)) {
            fi = f->parent;
            continue;
        }
        return false;
    }
    return false;
}

static bool state_complete(const gram_matcher *m, const gst *s) {
    for (int i = 0; i < s->n; i++)
        if (thread_complete(m, s->t[i])) return true;
    return false;
}

/* Copies the live stacks of cur to the front of a fresh arena. */
static void compact(gram_matcher *m) {
    int need = 0;
    for (int i = 0; i < m->cur.n; i++)
        need += m->ar[m->cur.t[i]].depth + 1;
    if (!grow((void **)&m->ar2, &m->car2, need + 1, sizeof *m->ar2)) return; /* keep as is */
    int n2 = 0;
    for (int i = 0; i < m->cur.n; i++) {
        int32_t chain[GRAM_MAX_DEPTH + 2];
        int k = 0;
        for (int32_t fi = m->cur.t[i]; fi >= 0 && k < GRAM_MAX_DEPTH + 2; fi = m->ar[fi].parent)
            chain[k++] = fi;
        int32_t parent = -1;
        while (k-- > 0) {
            gfr f = m->ar[chain[k]];
            f.parent = parent;
            m->ar2[n2] = f;
            parent = n2++;
        }
        m->cur.t[i] = parent;
    }
    gfr *t = m->ar;
    int tc = m->car;
    m->ar = m->ar2;
    m->car = m->car2;
    m->ar2 = t;
    m->car2 = tc;
    m->nar = n2;
}

int gram_matcher_new(gram_matcher **out, const gram *g, const gram_vocab *v, char *err,
                     size_t errlen) {
    *out = NULL;
    if (!g->finished) return util_fail(err, errlen, GRAM_EINVAL, "grammar not finished");
    if (gram_uses_calls(g) && !gram_vocab_has_calls(v))
        return util_fail(err, errlen, GRAM_EINVAL,
                         "the model's vocabulary has no <|tool_call_start|>/<|tool_call_end|> "
                         "tokens: tool calls cannot be constrained");
    gram_matcher *m = calloc(1, sizeof *m);
    if (!m) return oom(err, errlen);
    m->g = g;
    m->v = v;
    gfr r = {0};
    r.parent = -1;
    r.node = -1;
    r.kind = FR_ROOT;
    int32_t ri = fr_push(m, &r);
    if (ri < 0) {
        gram_matcher_free(m);
        return oom(err, errlen);
    }
    if (gram_uses_calls(g)) {
        m->ar[ri].st = R_DONE;
        gfr k = {0};
        k.parent = ri;
        k.node = g->root;
        k.kind = GRAM_CALLS;
        k.st = K_START;
        k.depth = 1;
        ri = fr_push(m, &k);
        if (ri < 0) {
            gram_matcher_free(m);
            return oom(err, errlen);
        }
    }
    m->cur.n = 1;
    m->cur.t[0] = ri;
    *out = m;
    return 0;
}

void gram_matcher_free(gram_matcher *m) {
    if (!m) return;
    free(m->ar);
    free(m->ar2);
    free(m);
}

/* The state after token id from s (out->n == 0: refused); frames go to the arena's end. */
static void step_token(gram_matcher *m, const gst *s, int32_t id, gst *out) {
    const gram_vocab *v = m->v;
    out->n = 0;
    if (id < 0 || id >= v->n_vocab) return;
    if (id == v->call_start || id == v->call_end) {
        for (int i = 0; i < s->n; i++) {
            const gfr *f = &m->ar[s->t[i]];
            if (f->kind != GRAM_CALLS) continue;
            if (f->st == K_START && id == v->call_start) {
                gfr x = *f;
                x.st = K_OPEN;
                out_add(m, out, fr_push(m, &x));
            } else if (f->st == K_CLOSE && id == v->call_end) {
                out_add(m, out, f->parent);
            }
        }
        return;
    }
    if (v->p_off[id] < 0) return;
    const uint8_t *p = (const uint8_t *)v->pieces + v->p_off[id];
    gst a = *s, b;
    for (int32_t i = 0; i < v->p_len[id]; i++) {
        step(m, &a, p[i], &b);
        if (!b.n) return;
        a = b;
    }
    *out = a;
}

bool gram_matcher_allows(gram_matcher *m, int32_t id) {
    if (id == m->v->eos) return state_complete(m, &m->cur);
    int mark = m->nar;
    gst o;
    step_token(m, &m->cur, id, &o);
    m->nar = mark;
    return o.n > 0;
}

bool gram_matcher_accept(gram_matcher *m, int32_t id) {
    if (id == m->v->eos) return state_complete(m, &m->cur);
    int mark = m->nar;
    gst o;
    step_token(m, &m->cur, id, &o);
    if (!o.n) {
        m->nar = mark;
        return false;
    }
    m->cur = o;
    compact(m);
    return true;
}

bool gram_matcher_feed(gram_matcher *m, const char *s, size_t n) {
    int mark = m->nar;
    gst a = m->cur, b;
    for (size_t i = 0; i < n; i++) {
        step(m, &a, (uint8_t)s[i], &b);
        if (!b.n) {
            m->nar = mark;
            return false;
        }
        a = b;
    }
    m->cur = a;
    compact(m);
    return true;
}

bool gram_matcher_complete(const gram_matcher *m) {
    return state_complete(m, &m->cur);
}

bool gram_matcher_finished(const gram_matcher *m) {
    for (int i = 0; i < m->cur.n; i++) {
        const gfr *f = &m->ar[m->cur.t[i]];
        if (!(f->kind == FR_ROOT && f->st == R_DONE)) return false;
    }
    return m->cur.n > 0;
}

/* Appends to ids every token below trie node tn whose bytes continue state s. */
static int walk_allowed(gram_matcher *m, int32_t tn, const gst *s, int32_t *ids, int n) {
    const trie *t = &m->v->t;
    const tnode nd = t->n[tn];
    for (int32_t e = nd.e0; e < nd.e0 + nd.ne; e++) {
        int mark = m->nar;
        gst s2;
        step(m, s, t->e[e].c, &s2);
        if (s2.n) {
            const tnode *ch = &t->n[t->e[e].to];
            for (int32_t p = ch->p0; p < ch->p0 + ch->np; p++)
                ids[n++] = t->p[p];
            if (ch->ne) n = walk_allowed(m, t->e[e].to, &s2, ids, n);
        }
        m->nar = mark;
    }
    return n;
}

int gram_matcher_allowed(gram_matcher *m, int32_t *ids) {
    const gram_vocab *v = m->v;
    int mark = m->nar;
    int n = walk_allowed(m, v->root, &m->cur, ids, 0);
    m->nar = mark;
    bool cs = false, ce = false;
    for (int i = 0; i < m->cur.n; i++) {
        const gfr *f = &m->ar[m->cur.t[i]];
        cs |= f->kind == GRAM_CALLS && f->st == K_START;
        ce |= f->kind == GRAM_CALLS && f->st == K_CLOSE;
    }
    if (cs) ids[n++] = v->call_start;
    if (ce) ids[n++] = v->call_end;
    if (v->eos >= 0 && state_complete(m, &m->cur)) ids[n++] = v->eos;
    return n;
}

int gram_matcher_mask(gram_matcher *m, uint8_t *allowed) {
    const gram_vocab *v = m->v;
    int32_t *ids = malloc((size_t)v->n_vocab * sizeof *ids);
    memset(allowed, 0, (size_t)v->n_vocab);
    if (!ids) return 0;
    int n = gram_matcher_allowed(m, ids);
    for (int i = 0; i < n; i++)
        allowed[ids[i]] = 1;
    free(ids);
    return n;
}

int32_t gram_sample(gram_matcher *m, sampler *smp, const float *logits, int32_t *ids,
                    sample_result *res) {
    int32_t id = sampler_sample(smp, logits, res);
    if (gram_matcher_allows(m, id)) {
        m->n_kept++;
        return id;
    }
    m->n_masked++;
    int n = gram_matcher_allowed(m, ids);
    if (n <= 0) return -1;
    id = sampler_sample_among(smp, logits, ids, n, NULL);
    if (res) {
        res->id = id;
        res->logprob = sample_logprob(logits, m->v->n_vocab, id);
    }
    return id;
}

void gram_matcher_stats(const gram_matcher *m, long *n_kept, long *n_masked) {
    *n_kept = m->n_kept;
    *n_masked = m->n_masked;
}
