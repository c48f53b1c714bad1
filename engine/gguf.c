/* gguf.c: GGUF v2/v3 reader (memory-mapped, every structural field validated) and v3 writer. */
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/util.h"
#include "quant/quant.h"

#define GGUF_MAX_KEY 65535   /* longest key or tensor name we accept, bytes */
#define GGUF_MAX_ARR_DEPTH 4 /* arrays of arrays are parsed (and skipped) up to this depth */
#define GGUF_MAX_ALIGNMENT (1u << 30)

/* One metadata pair. Values stay in the mapping; strings are copied so they are NUL-terminated. */
typedef struct gguf_kv {
    char *key;
    enum gguf_vtype type;
    const uint8_t *val; /* the value's bytes in the mapping (after the type field) */
    size_t val_size;    /* bytes of the value, for verbatim copies */
    char *str;          /* GGUF_STR: NUL-terminated copy */
    size_t str_len;
    enum gguf_vtype arr_type; /* GGUF_ARR: element type */
    uint64_t arr_n;           /* GGUF_ARR: element count */
    const uint8_t *arr_data;  /* GGUF_ARR: first element */
    uint64_t *str_off;        /* GGUF_ARR of GGUF_STR: offset of element j from arr_data */
} gguf_kv;

/* Open-addressing hash from names to indices (keys, tensor names). */
typedef struct name_index {
    int64_t *slot; /* -1 empty, else an index */
    size_t cap;    /* power of two */
} name_index;

struct gguf {
    const uint8_t *base; /* the whole file */
    size_t size;
    bool mapped; /* base is our mmap (munmap on close) */
    uint32_t version;
    size_t alignment;
    size_t data_off; /* start of the data section */
    int64_t n_kv;
    gguf_kv *kv;
    name_index kv_idx;
    int64_t n_tensors;
    gguf_tensor *tensors;
    name_index t_idx;
};

static const size_t vtype_size[GGUF_VTYPE_COUNT] = {
    [GGUF_U8] = 1,  [GGUF_I8] = 1,  [GGUF_U16] = 2,  [GGUF_I16] = 2, [GGUF_U32] = 4,
    [GGUF_I32] = 4, [GGUF_F32] = 4, [GGUF_BOOL] = 1, [GGUF_STR] = 0, [GGUF_ARR] = 0,
    [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8,
};

static const char *vtype_name(uint32_t t) {
    static const char *names[GGUF_VTYPE_COUNT] = {"u8",   "i8",  "u16", "i16", "u32", "i32", "f32",
                                                  "bool", "str", "arr", "u64", "i64", "f64"};
    return t < GGUF_VTYPE_COUNT ? names[t] : "?";
}

static int index_init(name_index *ix, int64_t n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap *= 2;
    ix->slot = malloc(cap * sizeof *ix->slot);
    if (!ix->slot) return -1;
    for (size_t i = 0; i < cap; i++)
        ix->slot[i] = -1;
    ix->cap = cap;
    return 0;
}

/* Looks name up; names(i) gives the name of index i. Returns the index or -1, and the free slot. */
static int64_t index_find(const name_index *ix, const char *name,
                          const char *(*names)(const void *, int64_t), const void *ctx,
                          size_t *free_slot) {
    if (!ix->slot) return -1;
    size_t mask = ix->cap - 1, s = util_fnv1a(name, strlen(name)) & mask;
    for (;;) {
        int64_t i = ix->slot[s];
        if (i < 0) {
            if (free_slot) *free_slot = s;
            return -1;
        }
        if (!strcmp(names(ctx, i), name)) return i;
        s = (s + 1) & mask;
    }
}

static const char *kv_name_of(const void *ctx, int64_t i) {
    return ((const gguf *)ctx)->kv[i].key;
}
static const char *t_name_of(const void *ctx, int64_t i) {
    return ((const gguf *)ctx)->tensors[i].name;
}

/* ---------------------------------------------------------------- reading */

typedef struct cursor {
    const uint8_t *p;
    size_t size, pos;
    char *err;
    size_t errlen;
} cursor;

static size_t remaining(const cursor *c) {
    return c->size - c->pos;
}

static int need(cursor *c, size_t n, const char *what) {
    if (n > remaining(c)) {
        util_seterr(c->err, c->errlen,
                    "file truncated: %s needs %zu bytes at offset %zu, file size %zu", what, n,
                    c->pos, c->size);
        return -1;
    }
    return 0;
}

static uint32_t ld_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t ld_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    *v = ld_u32(c->p + c->pos);
    c->pos += 4;
    return 0;
}
static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    *v = ld_u64(c->p + c->pos);
    c->pos += 8;
    return 0;
}

/* Reads a GGUF string (u64 length + bytes) in place. */
static int rd_str(cursor *c, const uint8_t **s, uint64_t *len, const char *what) {
    if (rd_u64(c, len, what)) return -1;
    if (*len > remaining(c)) {
        util_seterr(c->err, c->errlen,
                    "%s: string length %" PRIu64
                    " at offset %zu exceeds the %zu bytes left in the file",
                    what, *len, c->pos - 8, remaining(c));
        return -1;
    }
    *s = c->p + c->pos;
    c->pos += (size_t)*len;
    return 0;
}

/* Names must be printable ASCII without NUL: they are compared and printed as C strings. */
static int check_name(cursor *c, const uint8_t *s, uint64_t len, const char *what, size_t at) {
    if (len == 0) {
        util_seterr(c->err, c->errlen, "%s at offset %zu is empty", what, at);
        return -1;
    }
    if (len > GGUF_MAX_KEY) {
        util_seterr(c->err, c->errlen, "%s at offset %zu: length %" PRIu64 " exceeds limit %d",
                    what, at, len, GGUF_MAX_KEY);
        return -1;
    }
    for (uint64_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] > 0x7e) {
            util_seterr(c->err, c->errlen,
                        "%s at offset %zu: byte %" PRIu64 " is 0x%02x, not printable ASCII", what,
                        at, i, s[i]);
            return -1;
        }
    return 0;
}

static char *dup_mem(const uint8_t *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* Skips one value of type t (validating counts); depth limits nested arrays. */
static int skip_value(cursor *c, uint32_t t, int depth, const char *key) {
    if (t >= GGUF_VTYPE_COUNT) {
        util_seterr(c->err, c->errlen, "key '%s': unknown value type %" PRIu32 " (max %d)", key, t,
                    GGUF_VTYPE_COUNT - 1);
        return -1;
    }
    if (t == GGUF_STR) {
        const uint8_t *s;
        uint64_t n;
        return rd_str(c, &s, &n, key);
    }
    if (t != GGUF_ARR) return need(c, vtype_size[t], key) ? -1 : (c->pos += vtype_size[t], 0);
    if (depth >= GGUF_MAX_ARR_DEPTH) {
        util_seterr(c->err, c->errlen, "key '%s': arrays nested deeper than %d", key,
                    GGUF_MAX_ARR_DEPTH);
        return -1;
    }
    uint32_t et;
    uint64_t n;
    if (rd_u32(c, &et, key) || rd_u64(c, &n, key)) return -1;
    if (et >= GGUF_VTYPE_COUNT) {
        util_seterr(c->err, c->errlen, "key '%s': unknown array element type %" PRIu32 " (max %d)",
                    key, et, GGUF_VTYPE_COUNT - 1);
        return -1;
    }
    size_t min = et == GGUF_STR ? 8 : et == GGUF_ARR ? 12 : vtype_size[et];
    if (n > remaining(c) / min) {
        util_seterr(c->err, c->errlen,
                    "key '%s': array length %" PRIu64 " of %s needs at least %" PRIu64
                    " bytes, only %zu left in the file",
                    key, n, vtype_name(et), n > UINT64_MAX / min ? UINT64_MAX : n * min,
                    remaining(c));
        return -1;
    }
    if (et != GGUF_STR && et != GGUF_ARR) {
        c->pos += (size_t)(n * min);
        return 0;
    }
    for (uint64_t j = 0; j < n; j++)
        if (skip_value(c, et, depth + 1, key)) return -1;
    return 0;
}

static int parse_kv(gguf *g, cursor *c, gguf_kv *kv, int64_t i) {
    size_t at = c->pos;
    const uint8_t *ks;
    uint64_t klen;
    char what[64];
    snprintf(what, sizeof what, "key #%" PRId64, i);
    if (rd_str(c, &ks, &klen, what) || check_name(c, ks, klen, what, at)) return -1;
    if (!(kv->key = dup_mem(ks, (size_t)klen))) goto oom;
    size_t slot = 0;
    if (index_find(&g->kv_idx, kv->key, kv_name_of, g, &slot) >= 0) {
        util_seterr(c->err, c->errlen, "duplicate key '%s' (key #%" PRId64 " at offset %zu)",
                    kv->key, i, at);
        return -1;
    }
    g->kv_idx.slot[slot] = i;
    uint32_t t;
    if (rd_u32(c, &t, kv->key)) return -1;
    if (t >= GGUF_VTYPE_COUNT) {
        util_seterr(c->err, c->errlen, "key '%s': unknown value type %" PRIu32 " (max %d)", kv->key,
                    t, GGUF_VTYPE_COUNT - 1);
        return -1;
    }
    kv->type = (enum gguf_vtype)t;
    kv->val = c->p + c->pos;
    size_t start = c->pos;
    if (t == GGUF_STR) {
        const uint8_t *s;
        uint64_t n;
        if (rd_str(c, &s, &n, kv->key)) return -1;
        if (!(kv->str = dup_mem(s, (size_t)n))) goto oom;
        kv->str_len = (size_t)n;
    } else if (t == GGUF_ARR) {
        if (skip_value(c, GGUF_ARR, 0, kv->key)) return -1;
        kv->arr_type = (enum gguf_vtype)ld_u32(kv->val);
        kv->arr_n = ld_u64(kv->val + 4);
        kv->arr_data = kv->val + 12;
        if (kv->arr_type == GGUF_STR) {
            /* the lengths were validated by skip_value; record where each element starts */
            kv->str_off = malloc((size_t)(kv->arr_n ? kv->arr_n : 1) * sizeof *kv->str_off);
            if (!kv->str_off) goto oom;
            uint64_t off = 0;
            for (uint64_t j = 0; j < kv->arr_n; j++) {
                kv->str_off[j] = off;
                off += 8 + ld_u64(kv->arr_data + off);
            }
        }
    } else if (skip_value(c, t, 0, kv->key)) {
        return -1;
    }
    kv->val_size = c->pos - start;
    return 0;
oom:
    util_seterr(c->err, c->errlen, "out of memory reading key #%" PRId64, i);
    return -1;
}

static int is_int_type(enum gguf_vtype t) {
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 ||
           t == GGUF_I32 || t == GGUF_U64 || t == GGUF_I64;
}

/* Decodes one integer (or bool) of type t at p; *ok false when it does not fit an int64. */
static int64_t decode_int(enum gguf_vtype t, const uint8_t *p, bool *ok) {
    *ok = true;
    switch (t) {
    case GGUF_U8:
    case GGUF_BOOL:
        return p[0];
    case GGUF_I8:
        return (int8_t)p[0];
    case GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case GGUF_U32:
        return ld_u32(p);
    case GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case GGUF_U64: {
        uint64_t v = ld_u64(p);
        if (v > INT64_MAX) {
            *ok = false;
            return 0;
        }
        return (int64_t)v;
    }
    case GGUF_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    default:
        *ok = false;
        return 0;
    }
}

static double decode_float(enum gguf_vtype t, const uint8_t *p, bool *ok) {
    if (t == GGUF_F32) {
        float v;
        memcpy(&v, p, 4);
        *ok = true;
        return v;
    }
    if (t == GGUF_F64) {
        double v;
        memcpy(&v, p, 8);
        *ok = true;
        return v;
    }
    if (t == GGUF_U64) {
        *ok = true;
        return (double)ld_u64(p);
    }
    return (double)decode_int(t, p, ok);
}

static int parse_tensor(gguf *g, cursor *c, gguf_tensor *t, int64_t i) {
    size_t at = c->pos;
    const uint8_t *ns;
    uint64_t nlen;
    char what[64];
    snprintf(what, sizeof what, "tensor #%" PRId64 " name", i);
    if (rd_str(c, &ns, &nlen, what) || check_name(c, ns, nlen, what, at)) return -1;
    char *name = dup_mem(ns, (size_t)nlen);
    if (!name) {
        util_seterr(c->err, c->errlen, "out of memory reading tensor #%" PRId64, i);
        return -1;
    }
    t->name = name;
    size_t slot = 0;
    if (index_find(&g->t_idx, name, t_name_of, g, &slot) >= 0) {
        util_seterr(c->err, c->errlen, "duplicate tensor name '%s' (tensor #%" PRId64 ")", name, i);
        return -1;
    }
    g->t_idx.slot[slot] = i;
    if (rd_u32(c, &t->n_dims, name)) return -1;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS) {
        util_seterr(c->err, c->errlen, "tensor '%s': n_dims %" PRIu32 " outside 1..%d", name,
                    t->n_dims, GGUF_MAX_DIMS);
        return -1;
    }
    int64_t nel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t v;
        if (rd_u64(c, &v, name)) return -1;
        if (v == 0 || v > INT64_MAX) {
            util_seterr(c->err, c->errlen,
                        "tensor '%s': dim %" PRIu32 " is %" PRIu64 " (must be 1..%" PRId64 ")",
                        name, d, v, (int64_t)INT64_MAX);
            return -1;
        }
        t->ne[d] = (int64_t)v;
        if (nel > INT64_MAX / t->ne[d]) {
            util_seterr(c->err, c->errlen,
                        "tensor '%s': element count overflows int64 at dim %" PRIu32 " (%" PRIu64
                        ")",
                        name, d, v);
            return -1;
        }
        nel *= t->ne[d];
    }
    if (rd_u32(c, &t->type, name) || rd_u64(c, &t->offset, name)) return -1;
    const qtype_traits *tr = quant_traits(t->type);
    if (!tr) {
        /* ggml's names for the types lfm2 cannot read, so the user learns what the file holds */
        static const char *ggml_names[] = {
            [3] = "q4_1",   [6] = "q5_0",    [7] = "q5_1",     [9] = "q8_1",    [10] = "q2_K",
            [11] = "q3_K",  [15] = "q8_K",   [16] = "iq2_xxs", [17] = "iq2_xs", [18] = "iq3_xxs",
            [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s",   [22] = "iq2_s",  [23] = "iq4_xs",
            [24] = "i8",    [25] = "i16",    [26] = "i32",     [27] = "i64",    [28] = "f64",
            [29] = "iq1_m", [34] = "tq1_0",  [35] = "tq2_0",   [39] = "mxfp4",  [40] = "nvfp4",
            [41] = "q1_0"};
        const char *gn =
            t->type < sizeof ggml_names / sizeof ggml_names[0] ? ggml_names[t->type] : NULL;
        util_seterr(c->err, c->errlen,
                    "tensor '%s': unknown or unsupported tensor type %" PRIu32 "%s%s%s", name,
                    t->type, gn ? " (ggml's " : "", gn ? gn : "",
                    gn ? ", which lfm2 cannot read)" : "");
        return -1;
    }
    if (t->ne[0] % tr->block_size) {
        util_seterr(c->err, c->errlen,
                    "tensor '%s': row length %" PRId64 " is not a multiple of the %s block size %d",
                    name, t->ne[0], tr->name, tr->block_size);
        return -1;
    }
    uint64_t blocks = (uint64_t)(nel / tr->block_size);
    if (blocks > SIZE_MAX / tr->type_size || blocks * tr->type_size > (uint64_t)INT64_MAX) {
        util_seterr(c->err, c->errlen,
                    "tensor '%s': byte size overflows (%" PRIu64 " blocks of %zu)", name, blocks,
                    tr->type_size);
        return -1;
    }
    t->nbytes = (size_t)(blocks * tr->type_size);
    return 0;
}

static int cmp_by_offset(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int parse(gguf *g, char *err, size_t errlen) {
    cursor c = {g->base, g->size, 0, err, errlen};
    if (g->size >= 4 && memcmp(g->base, "GGUF", 4)) {
        util_seterr(err, errlen,
                    "bad magic: not a GGUF file (expected \"GGUF\" in the first 4 bytes)");
        return -1;
    }
    if (g->size < GGUF_HEADER_BYTES) {
        util_seterr(err, errlen, "file size %zu is too small for a GGUF header (%d bytes)", g->size,
                    GGUF_HEADER_BYTES);
        return -1;
    }
    c.pos = 4;
    if (rd_u32(&c, &g->version, "version")) return -1;
    if (g->version == 0x03000000u || g->version == 0x02000000u) {
        util_seterr(err, errlen,
                    "big-endian GGUF files are not supported (version field 0x%08" PRIx32 ")",
                    g->version);
        return -1;
    }
    if (g->version != 2 && g->version != 3) {
        util_seterr(err, errlen, "unsupported GGUF version %" PRIu32 " (supported: 2, 3)",
                    g->version);
        return -1;
    }
    uint64_t nt, nkv;
    if (rd_u64(&c, &nt, "tensor count") || rd_u64(&c, &nkv, "kv count")) return -1;
    /* each pair takes >= 13 bytes (key length, 1 key byte, type, 1 value byte) */
    if (nkv > remaining(&c) / 13) {
        util_seterr(err, errlen,
                    "kv count %" PRIu64
                    " too large: the %zu bytes left hold at most %zu (truncated or corrupt file)",
                    nkv, remaining(&c), remaining(&c) / 13);
        return -1;
    }
    /* each tensor info takes >= 33 bytes (name length, 1 name byte, n_dims, 1 dim, type, offset) */
    if (nt > remaining(&c) / 33) {
        util_seterr(err, errlen,
                    "tensor count %" PRIu64
                    " too large: the %zu bytes left hold at most %zu (truncated or corrupt file)",
                    nt, remaining(&c), remaining(&c) / 33);
        return -1;
    }
    g->n_kv = (int64_t)nkv;
    g->kv = calloc(nkv ? nkv : 1, sizeof *g->kv);
    if (!g->kv || index_init(&g->kv_idx, g->n_kv)) goto oom;
    for (int64_t i = 0; i < g->n_kv; i++) {
        if (parse_kv(g, &c, &g->kv[i], i)) {
            g->n_kv = i + 1; /* free what was allocated */
            return -1;
        }
    }
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        bool ok = false;
        int64_t a =
            is_int_type(g->kv[ai].type) ? decode_int(g->kv[ai].type, g->kv[ai].val, &ok) : 0;
        if (!ok) {
            util_seterr(err, errlen, "general.alignment has type %s, expected an integer",
                        vtype_name(g->kv[ai].type));
            return -1;
        }
        if (a <= 0 || (a & (a - 1)) || a > (int64_t)GGUF_MAX_ALIGNMENT) {
            util_seterr(err, errlen,
                        "general.alignment %" PRId64 " is invalid: must be a power of two in 1..%u",
                        a, GGUF_MAX_ALIGNMENT);
            return -1;
        }
        g->alignment = (size_t)a;
    }
    g->n_tensors = (int64_t)nt;
    g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->tensors || index_init(&g->t_idx, g->n_tensors)) goto oom;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if (parse_tensor(g, &c, &g->tensors[i], i)) return -1;
    }
    size_t a = g->alignment;
    size_t data_off = c.pos + (a - c.pos % a) % a;
    if (nt > 0 && data_off > g->size) {
        util_seterr(err, errlen, "data section starts at %zu, past file size %zu", data_off,
                    g->size);
        return -1;
    }
    g->data_off = data_off;
    if (nt == 0) return 0;
    size_t data_size = g->size - data_off;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset % a) {
            util_seterr(err, errlen,
                        "tensor '%s': data offset %" PRIu64
                        " is not a multiple of the alignment %zu",
                        t->name, t->offset, a);
            return -1;
        }
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            /* report absolute positions, saturating on absurd offsets */
            uint64_t end = t->offset > UINT64_MAX - data_off - t->nbytes
                               ? UINT64_MAX
                               : data_off + t->offset + t->nbytes;
            util_seterr(err, errlen, "tensor '%s': data ends at %" PRIu64 " past file size %zu",
                        t->name, end, g->size);
            return -1;
        }
        t->data = g->base + data_off + t->offset;
    }
    gguf_tensor **by = malloc((size_t)nt * sizeof *by);
    if (!by) goto oom;
    for (int64_t i = 0; i < g->n_tensors; i++)
        by[i] = &g->tensors[i];
    qsort(by, (size_t)nt, sizeof *by, cmp_by_offset);
    for (int64_t i = 0; i + 1 < g->n_tensors; i++) {
        if (by[i]->offset + by[i]->nbytes > by[i + 1]->offset) {
            util_seterr(err, errlen,
                        "tensor '%s': data [%" PRIu64 ", %" PRIu64
                        ") overlaps tensor '%s' at %" PRIu64,
                        by[i + 1]->name, by[i + 1]->offset, by[i + 1]->offset + by[i + 1]->nbytes,
                        by[i]->name, by[i]->offset);
            free(by);
            return -1;
        }
    }
    free(by);
    return 0;
oom:
    util_seterr(err, errlen, "out of memory");
    return -1;
}

static int open_common(gguf **out, gguf *g, char *err, size_t errlen) {
    if (parse(g, err, errlen)) {
        gguf_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

int gguf_open_mem(gguf **out, const void *buf, size_t size, char *err, size_t errlen) {
    *out = NULL;
    gguf *g = calloc(1, sizeof *g);
    if (!g) {
        util_seterr(err, errlen, "out of memory");
        return -1;
    }
    g->base = buf;
    g->size = size;
    return open_common(out, g, err, errlen);
}

int gguf_open(gguf **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        util_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st)) {
        util_seterr(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        util_seterr(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) { /* nothing to map; parse() checks every other size */
        util_seterr(err, errlen, "%s: file size 0 is too small for a GGUF header (%d bytes)", path,
                    GGUF_HEADER_BYTES);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) {
        util_seterr(err, errlen, "%s: mmap: %s", path, strerror(e));
        return -1;
    }
    gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, (size_t)st.st_size);
        util_seterr(err, errlen, "out of memory");
        return -1;
    }
    g->base = map;
    g->size = (size_t)st.st_size;
    g->mapped = true;
    return open_common(out, g, err, errlen);
}

void gguf_close(gguf *g) {
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].str);
            free(g->kv[i].str_off);
        }
    free(g->kv);
    if (g->tensors)
        for (int64_t i = 0; i < g->n_tensors; i++)
            free((char *)g->tensors[i].name);
    free(g->tensors);
    free(g->kv_idx.slot);
    free(g->t_idx.slot);
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g);
}

uint32_t gguf_version(const gguf *g) {
    return g->version;
}
size_t gguf_alignment(const gguf *g) {
    return g->alignment;
}
const void *gguf_header_bytes(const gguf *g, size_t *len) {
    *len = g->data_off;
    return g->base;
}

size_t gguf_file_size(const gguf *g) {
    return g->size;
}

int64_t gguf_n_kv(const gguf *g) {
    return g->n_kv;
}
int64_t gguf_find_key(const gguf *g, const char *key) {
    return index_find(&g->kv_idx, key, kv_name_of, g, NULL);
}
const char *gguf_kv_key(const gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}
enum gguf_vtype gguf_kv_type(const gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].type : GGUF_VTYPE_COUNT;
}

int64_t gguf_get_int(const gguf *g, const char *key, int64_t def, bool *bad) {
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return def;
    bool ok = false;
    int64_t v = (is_int_type(g->kv[i].type) || g->kv[i].type == GGUF_BOOL)
                    ? decode_int(g->kv[i].type, g->kv[i].val, &ok)
                    : 0;
    if (!ok) {
        if (bad) *bad = true;
        return def;
    }
    return v;
}

double gguf_get_float(const gguf *g, const char *key, double def, bool *bad) {
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return def;
    enum gguf_vtype t = g->kv[i].type;
    bool ok = false;
    double v =
        (t == GGUF_F32 || t == GGUF_F64 || is_int_type(t)) ? decode_float(t, g->kv[i].val, &ok) : 0;
    if (!ok) {
        if (bad) *bad = true;
        return def;
    }
    return v;
}

bool gguf_get_bool(const gguf *g, const char *key, bool def, bool *bad) {
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return def;
    enum gguf_vtype t = g->kv[i].type;
    bool ok = false;
    int64_t v = (t == GGUF_BOOL || is_int_type(t)) ? decode_int(t, g->kv[i].val, &ok) : 0;
    if (!ok) {
        if (bad) *bad = true;
        return def;
    }
    return v != 0;
}

const char *gguf_get_str(const gguf *g, const char *key, const char *def, bool *bad) {
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return def;
    if (g->kv[i].type != GGUF_STR) {
        if (bad) *bad = true;
        return def;
    }
    return g->kv[i].str;
}

int64_t gguf_kv_int(const gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_kv) return 0;
    bool ok;
    return decode_int(g->kv[i].type, g->kv[i].val, &ok);
}

double gguf_kv_float(const gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_kv) return 0;
    bool ok;
    return decode_float(g->kv[i].type, g->kv[i].val, &ok);
}

const char *gguf_kv_str(const gguf *g, int64_t i, size_t *len) {
    if (i < 0 || i >= g->n_kv || g->kv[i].type != GGUF_STR) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = g->kv[i].str_len;
    return g->kv[i].str;
}

enum gguf_vtype gguf_arr_type(const gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv && g->kv[i].type == GGUF_ARR ? g->kv[i].arr_type
                                                              : GGUF_VTYPE_COUNT;
}

uint64_t gguf_arr_len(const gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv && g->kv[i].type == GGUF_ARR ? g->kv[i].arr_n : 0;
}

static const uint8_t *arr_elem(const gguf *g, int64_t i, uint64_t j) {
    if (i < 0 || i >= g->n_kv || g->kv[i].type != GGUF_ARR || j >= g->kv[i].arr_n) return NULL;
    enum gguf_vtype t = g->kv[i].arr_type;
    if (t == GGUF_STR || t == GGUF_ARR) return NULL;
    return g->kv[i].arr_data + j * vtype_size[t];
}

int64_t gguf_arr_int(const gguf *g, int64_t i, uint64_t j) {
    const uint8_t *p = arr_elem(g, i, j);
    bool ok;
    return p ? decode_int(g->kv[i].arr_type, p, &ok) : 0;
}

double gguf_arr_float(const gguf *g, int64_t i, uint64_t j) {
    const uint8_t *p = arr_elem(g, i, j);
    bool ok;
    return p ? decode_float(g->kv[i].arr_type, p, &ok) : 0;
}

const char *gguf_arr_str(const gguf *g, int64_t i, uint64_t j, size_t *len) {
    if (i < 0 || i >= g->n_kv || g->kv[i].type != GGUF_ARR || g->kv[i].arr_type != GGUF_STR ||
        j >= g->kv[i].arr_n) {
        if (len) *len = 0;
        return NULL;
    }
    const uint8_t *p = g->kv[i].arr_data + g->kv[i].str_off[j];
    if (len) *len = (size_t)ld_u64(p);
    return (const char *)p + 8;
}

int64_t gguf_n_tensors(const gguf *g) {
    return g->n_tensors;
}
const gguf_tensor *gguf_tensor_at(const gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}
const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name) {
    int64_t i = index_find(&g->t_idx, name, t_name_of, g, NULL);
    return i >= 0 ? &g->tensors[i] : NULL;
}

/* ---------------------------------------------------------------- writing */

/* A metadata pair as it will appear in the file: type, then the serialized value. */
typedef struct wkv {
    char *key;
    uint32_t type;
    uint8_t *val;
    size_t val_size;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t nbytes;
    uint64_t offset;
    const void *data;
    gguf_fill_fn fill;
    void *ctx;
} wtensor;

struct gguf_writer {
    size_t alignment;
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    int bad; /* a set_* or add_* failed: write refuses */
};

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

void gguf_writer_set_alignment(gguf_writer *w, size_t alignment) {
    if (alignment == 0 || (alignment & (alignment - 1)) || alignment > GGUF_MAX_ALIGNMENT) {
        w->bad = 1;
        return;
    }
    w->alignment = alignment;
}

/* A key or tensor name gguf_open accepts (see check_name): 1..GGUF_MAX_KEY printable ASCII. */
static bool name_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > GGUF_MAX_KEY) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return false;
    return true;
}

/* Takes ownership of val (malloc'd). Replaces an existing key. */
static int put_kv(gguf_writer *w, const char *key, uint32_t type, uint8_t *val, size_t n) {
    /* gguf_open takes general.alignment only as an integer: refuse to write anything else */
    if (!name_ok(key) ||
        (!strcmp(key, "general.alignment") && !is_int_type((enum gguf_vtype)type))) {
        free(val);
        w->bad = 1;
        return -1;
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].val_size = n;
            return 0;
        }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv *k = realloc(w->kv, cap * sizeof *k);
        if (!k) goto oom;
        w->kv = k;
        w->cap_kv = cap;
    }
    char *kc = strdup(key);
    if (!kc) goto oom;
    w->kv[w->n_kv++] = (wkv){kc, type, val, n};
    return 0;
oom:
    free(val);
    w->bad = 1;
    return -1;
}

static int put_copy(gguf_writer *w, const char *key, uint32_t type, const void *src, size_t n) {
    uint8_t *v = malloc(n ? n : 1);
    if (!v) {
        w->bad = 1;
        return -1;
    }
    if (n) memcpy(v, src, n);
    return put_kv(w, key, type, v, n);
}

/* Keeps the alignment key and the writer's alignment in agreement. */
static int note_alignment_key(gguf_writer *w, const char *key, int64_t v) {
    if (strcmp(key, "general.alignment")) return 0;
    if (v <= 0 || (v & (v - 1)) || v > (int64_t)GGUF_MAX_ALIGNMENT) {
        w->bad = 1;
        return -1;
    }
    w->alignment = (size_t)v;
    return 0;
}

int gguf_writer_set_int(gguf_writer *w, const char *key, enum gguf_vtype t, int64_t v) {
    uint8_t b[8];
    switch (t) {
    case GGUF_U8:
        if (v < 0 || v > UINT8_MAX) goto range;
        b[0] = (uint8_t)v;
        break;
    case GGUF_I8:
        if (v < INT8_MIN || v > INT8_MAX) goto range;
        b[0] = (uint8_t)(int8_t)v;
        break;
    case GGUF_U16: {
        if (v < 0 || v > UINT16_MAX) goto range;
        uint16_t x = (uint16_t)v;
        memcpy(b, &x, 2);
        break;
    }
    case GGUF_I16: {
        if (v < INT16_MIN || v > INT16_MAX) goto range;
        int16_t x = (int16_t)v;
        memcpy(b, &x, 2);
        break;
    }
    case GGUF_U32: {
        if (v < 0 || v > (int64_t)UINT32_MAX) goto range;
        uint32_t x = (uint32_t)v;
        memcpy(b, &x, 4);
        break;
    }
    case GGUF_I32: {
        if (v < INT32_MIN || v > INT32_MAX) goto range;
        int32_t x = (int32_t)v;
        memcpy(b, &x, 4);
        break;
    }
    case GGUF_U64: {
        if (v < 0) goto range;
        uint64_t x = (uint64_t)v;
        memcpy(b, &x, 8);
        break;
    }
    case GGUF_I64:
        memcpy(b, &v, 8);
        break;
    case GGUF_BOOL:
        b[0] = v != 0;
        break;
    default:
        goto range;
    }
    if (note_alignment_key(w, key ? key : "", v)) return -1;
    return put_copy(w, key, t, b, vtype_size[t]);
range:
    w->bad = 1;
    return -1;
}

int gguf_writer_set_float(gguf_writer *w, const char *key, enum gguf_vtype t, double v) {
    if (t == GGUF_F32) {
        float f = (float)v;
        return put_copy(w, key, t, &f, 4);
    }
    if (t == GGUF_F64) return put_copy(w, key, t, &v, 8);
    w->bad = 1;
    return -1;
}

int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v;
    return put_copy(w, key, GGUF_BOOL, &b, 1);
}

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) {
    size_t n = strlen(v);
    uint8_t *b = malloc(8 + n);
    if (!b) {
        w->bad = 1;
        return -1;
    }
    uint64_t n64 = n;
    memcpy(b, &n64, 8);
    memcpy(b + 8, v, n);
    return put_kv(w, key, GGUF_STR, b, 8 + n);
}

int gguf_writer_set_arr(gguf_writer *w, const char *key, enum gguf_vtype t, const void *data,
                        uint64_t n) {
    if ((unsigned)t >= GGUF_VTYPE_COUNT || t == GGUF_STR || t == GGUF_ARR ||
        n > (SIZE_MAX - 12) / vtype_size[t]) {
        w->bad = 1;
        return -1;
    }
    size_t sz = 12 + (size_t)n * vtype_size[t];
    uint8_t *b = malloc(sz);
    if (!b) {
        w->bad = 1;
        return -1;
    }
    uint32_t t32 = t;
    memcpy(b, &t32, 4);
    memcpy(b + 4, &n, 8);
    if (n) memcpy(b + 12, data, sz - 12);
    return put_kv(w, key, GGUF_ARR, b, sz);
}

int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                            const size_t *lens, uint64_t n) {
    size_t sz = 12;
    for (uint64_t j = 0; j < n; j++)
        sz += 8 + (lens ? lens[j] : strlen(strs[j]));
    uint8_t *b = malloc(sz), *p = b;
    if (!b) {
        w->bad = 1;
        return -1;
    }
    uint32_t t32 = GGUF_STR;
    memcpy(p, &t32, 4);
    memcpy(p + 4, &n, 8);
    p += 12;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t l = lens ? lens[j] : strlen(strs[j]);
        memcpy(p, &l, 8);
        if (l) memcpy(p + 8, strs[j], (size_t)l);
        p += 8 + l;
    }
    return put_kv(w, key, GGUF_ARR, b, sz);
}

int gguf_writer_copy_kv(gguf_writer *w, const gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_kv) {
        w->bad = 1;
        return -1;
    }
    const gguf_kv *kv = &g->kv[i];
    if (is_int_type(kv->type)) {
        bool ok;
        if (note_alignment_key(w, kv->key, decode_int(kv->type, kv->val, &ok))) return -1;
    }
    return put_copy(w, kv->key, kv->type, kv->val, kv->val_size);
}

static int add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                      const int64_t *ne, const void *data, size_t nbytes, gguf_fill_fn fill,
                      void *ctx) {
    if (!name_ok(name) || n_dims == 0 || n_dims > GGUF_MAX_DIMS) goto bad;
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) goto bad;
    const qtype_traits *tr = quant_traits(type);
    if (!tr) goto bad;
    int64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || nel > INT64_MAX / ne[d]) goto bad;
        nel *= ne[d];
    }
    if (ne[0] % tr->block_size) goto bad;
    size_t need = (size_t)(nel / tr->block_size) * tr->type_size;
    if (!fill && nbytes != need) goto bad;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) goto bad;
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) goto bad;
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < (int)n_dims ? ne[d] : 1;
    t->nbytes = need;
    t->data = data;
    t->fill = fill;
    t->ctx = ctx;
    w->n_t++;
    return 0;
bad:
    w->bad = 1;
    return -1;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                           const int64_t *ne, const void *data, size_t nbytes) {
    return add_tensor(w, name, type, n_dims, ne, data, nbytes, NULL, NULL);
}

int gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                const int64_t *ne, gguf_fill_fn fill, void *ctx) {
    if (!fill) {
        w->bad = 1;
        return -1;
    }
    return add_tensor(w, name, type, n_dims, ne, NULL, 0, fill, ctx);
}

static int put_bytes(FILE *f, const void *p, size_t n) {
    return n && fwrite(p, 1, n, f) != n;
}
static int put_u32(FILE *f, uint32_t v) {
    return put_bytes(f, &v, 4);
}
static int put_u64(FILE *f, uint64_t v) {
    return put_bytes(f, &v, 8);
}
static int put_pad(FILE *f, uint64_t pos, size_t a) {
    static const uint8_t zeros[256];
    size_t n = (size_t)((a - pos % a) % a);
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (put_bytes(f, zeros, k)) return -1;
        n -= k;
    }
    return 0;
}

/* Lets t->fill write the tensor's bytes straight into the output file at absolute offset abs
 * through a shared mapping, so no tensor is ever held in our memory (falls back to a heap
 * buffer where the file system cannot map). Leaves f positioned after the data. Returns the
 * fill callback's failure as -1 with *io_bad clear; I/O failures set *io_bad. */
static int fill_in_file(FILE *f, uint64_t abs, const wtensor *t, int *io_bad) {
    int fd = fileno(f);
    if (fflush(f) || ftruncate(fd, (off_t)(abs + t->nbytes))) {
        *io_bad = 1;
        return -1;
    }
    uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), base = abs - abs % pg;
    size_t len = (size_t)(abs + t->nbytes - base);
    int rc;
    uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
    if (map != MAP_FAILED) {
        rc = t->fill(t->ctx, map + (abs - base), t->nbytes);
        if (munmap(map, len)) *io_bad = 1;
    } else {
        uint8_t *buf = malloc(t->nbytes);
        if (!buf) {
            *io_bad = 1;
            return -1;
        }
        rc = t->fill(t->ctx, buf, t->nbytes);
        if (rc >= 0 && (fseeko(f, (off_t)abs, SEEK_SET) || put_bytes(f, buf, t->nbytes)))
            *io_bad = 1;
        free(buf);
    }
    if (rc < 0) return -1;
    if (fseeko(f, (off_t)(abs + t->nbytes), SEEK_SET)) *io_bad = 1;
    return *io_bad ? -1 : 0;
}

int gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t errlen) {
    if (w->bad) {
        util_seterr(err, errlen,
                    "gguf writer: an earlier set/add call failed (bad key, type, "
                    "range, duplicate tensor, or out of memory)");
        return -1;
    }
    if (w->alignment != GGUF_DEFAULT_ALIGNMENT) {
        int has = 0;
        for (size_t i = 0; i < w->n_kv; i++)
            has |= !strcmp(w->kv[i].key, "general.alignment");
        if (!has && gguf_writer_set_int(w, "general.alignment", GGUF_U32, (int64_t)w->alignment)) {
            util_seterr(err, errlen, "out of memory");
            return -1;
        }
    }
    /* rewrite an existing alignment key so it matches what we lay out */
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, "general.alignment") &&
            gguf_writer_set_int(w, "general.alignment", GGUF_U32, (int64_t)w->alignment)) {
            util_seterr(err, errlen, "out of memory");
            return -1;
        }
    size_t a = w->alignment;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += w->t[i].nbytes;
        off += (a - off % a) % a;
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        util_seterr(err, errlen, "out of memory");
        return -1;
    }
    snprintf(tmp, plen + 16, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        util_seterr(err, errlen, "%s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    uint64_t pos = 0;
    int bad = put_bytes(f, "GGUF", 4) || put_u32(f, 3) || put_u64(f, w->n_t) || put_u64(f, w->n_kv);
    pos = 24;
    for (size_t i = 0; i < w->n_kv && !bad; i++) {
        size_t kl = strlen(w->kv[i].key);
        bad = put_u64(f, kl) || put_bytes(f, w->kv[i].key, kl) || put_u32(f, w->kv[i].type) ||
              put_bytes(f, w->kv[i].val, w->kv[i].val_size);
        pos += 8 + kl + 4 + w->kv[i].val_size;
    }
    for (size_t i = 0; i < w->n_t && !bad; i++) {
        wtensor *t = &w->t[i];
        size_t nl = strlen(t->name);
        bad = put_u64(f, nl) || put_bytes(f, t->name, nl) || put_u32(f, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && !bad; d++)
            bad = put_u64(f, (uint64_t)t->ne[d]);
        bad = bad || put_u32(f, t->type) || put_u64(f, t->offset);
        pos += 8 + nl + 4 + 8 * t->n_dims + 4 + 8;
    }
    if (!bad && w->n_t) bad = put_pad(f, pos, a);
    uint64_t data_start = pos + (a - pos % a) % a;
    for (size_t i = 0; i < w->n_t && !bad; i++) {
        wtensor *t = &w->t[i];
        if (t->fill) {
            int rc = fill_in_file(f, data_start + t->offset, t, &bad);
            if (rc < 0 && !bad) {
                util_seterr(err, errlen, "tensor '%s': fill callback failed", t->name);
                goto fail;
            }
        } else {
            bad = put_bytes(f, t->data, t->nbytes);
        }
        if (!bad) bad = put_pad(f, t->offset + t->nbytes, a); /* ggml pads the last one too */
    }
    if (bad || fflush(f) || ferror(f)) {
        util_seterr(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fclose(f)) {
        f = NULL;
        util_seterr(err, errlen, "%s: close failed: %s", tmp, strerror(errno));
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path)) {
        util_seterr(err, errlen, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
        goto fail;
    }
    free(tmp);
    return 0;
fail:
    if (f) fclose(f);
    unlink(tmp);
    free(tmp);
    return -1;
}
