/* repack.c: GGUF weight blocks -> the engine's interleaved int4/int8 tiles (see repack.h). */
#include "quant/repack.h"
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "quant/hugemem.h"
#include "quant/quant.h"

size_t rp_group_bytes(int kind) {
    switch (kind) {
    case RP_I4:
        return 128 + 16;
    case RP_I4M:
        return 128 + 32;
    case RP_I8:
        return 256 + 16;
    case RP_I8M:
        return 256 + 32;
    case RP_I4K:
        return 128 + 16;
    case RP_I6:
        return 128 + 64 + 16;
    case RP_I5K:
        return 128 + 32 + 16;
    default:
        return 0;
    }
}

static size_t codes_bytes(int kind) {
    return (kind == RP_I4 || kind == RP_I4M || kind == RP_I4K || kind == RP_I6) ? 128 : 256;
}

int rp_kind_for(uint32_t t, bool *lossy) {
    bool l = false;
    int k = 0;
    switch (t) {
    case QT_Q4_0:
        k = RP_I4;
        break;
    case QT_Q4_1:
        k = RP_I4M;
        break;
    case QT_Q4_K:
        k = RP_I4K;
        break;
    case QT_Q8_0:
    case QT_Q5_0:
        k = RP_I8;
        break;
    case QT_Q5_1:
        k = RP_I8M;
        break;
    case QT_Q5_K:
        k = RP_I5K;
        break;
    case QT_Q6_K:
        k = RP_I6;
        break;
    case QT_Q2_K:
    case QT_Q3_K:
    case QT_F16:
    case QT_BF16:
    case QT_F32:
        k = RP_I8;
        l = true;
        break;
    default:
        k = 0;
    }
    if (lossy) *lossy = l;
    return k;
}

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}
static void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* One group g of a row of an exactly-repackable type: codes u[32], f16 s and b. */
static void decode_exact(uint32_t t, const uint8_t *row, int64_t g, uint8_t *u, uint16_t *s,
                         uint16_t *b, uint16_t *kd) {
    *b = 0;
    switch (t) {
    case QT_Q4_0: {
        const block_q4_0 *x = (const block_q4_0 *)row + g;
        for (int j = 0; j < 16; j++) {
            u[j] = x->qs[j] & 15;
            u[j + 16] = x->qs[j] >> 4;
        }
        *s = rd16(x->d);
        break;
    }
    case QT_Q4_1: {
        const block_q4_1 *x = (const block_q4_1 *)row + g;
        for (int j = 0; j < 16; j++) {
            u[j] = x->qs[j] & 15;
            u[j + 16] = x->qs[j] >> 4;
        }
        *s = rd16(x->d);
        *b = rd16(x->m);
        break;
    }
    case QT_Q8_0: {
        const block_q8_0 *x = (const block_q8_0 *)row + g;
        for (int j = 0; j < 32; j++)
            u[j] = (uint8_t)(x->qs[j] + 128);
        *s = rd16(x->d);
        break;
    }
    case QT_Q5_0:
    case QT_Q5_1: {
        const uint8_t *qh, *qs;
        if (t == QT_Q5_0) {
            const block_q5_0 *x = (const block_q5_0 *)row + g;
            qh = x->qh, qs = x->qs, *s = rd16(x->d);
        } else {
            const block_q5_1 *x = (const block_q5_1 *)row + g;
            qh = x->qh, qs = x->qs, *s = rd16(x->d), *b = rd16(x->m);
        }
        uint32_t h =
            (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
        int off = t == QT_Q5_0 ? 128 - 16 : 0;
        for (int j = 0; j < 16; j++) {
            int x0 = (qs[j] & 15) | (int)(((h >> j) << 4) & 0x10);
            int x1 = (qs[j] >> 4) | (int)((h >> (j + 12)) & 0x10);
            u[j] = (uint8_t)(x0 + off);
            u[j + 16] = (uint8_t)(x1 + off);
        }
        break;
    }
    case QT_Q4_K:
    case QT_Q5_K: {
        int64_t sb = g / 8;
        int gi = (int)(g % 8);
        const uint8_t *d2, *dm2, *scales, *qs, *qh = NULL;
        if (t == QT_Q4_K) {
            const block_q4_K *x = (const block_q4_K *)row + sb;
            d2 = x->d, dm2 = x->dmin, scales = x->scales, qs = x->qs;
        } else {
            const block_q5_K *x = (const block_q5_K *)row + sb;
            d2 = x->d, dm2 = x->dmin, scales = x->scales, qs = x->qs, qh = x->qh;
        }
        uint8_t sc, m;
        quant_scale_min_k4(gi, scales, &sc, &m);
        float d = quant_f16_to_f32(rd16(d2)), dmin = quant_f16_to_f32(rd16(dm2));
        const uint8_t *q = qs + 32 * (gi / 2);
        for (int l = 0; l < 32; l++) {
            int v = (gi & 1) ? q[l] >> 4 : q[l] & 15;
            if (qh) v += ((qh[l] >> gi) & 1) << 4;
            u[l] = (uint8_t)v;
        }
        /* RP_I4K / RP_I5K keep the codes: s, b carry sc, m; kd the f16 factors */
        *s = sc, *b = m, kd[0] = rd16(d2), kd[1] = rd16(dm2);
        (void)d, (void)dmin;
        break;
    }
    case QT_Q6_K: { /* as q6_K_to_float: s carries sc0 | sc1 << 8, kd[0] the f16 d */
        const block_q6_K *x = (const block_q6_K *)row + g / 8;
        int gi = (int)(g % 8), h = gi / 4, part = gi % 4; /* 128-half, then 32-weight part */
        const uint8_t *ql = x->ql + 64 * h, *qh = x->qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            int v;
            switch (part) {
            case 0:
                v = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                break;
            case 1:
                v = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                break;
            case 2:
                v = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                break;
            default:
                v = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                break;
            }
            u[l] = (uint8_t)v;
        }
        const int8_t *sc = x->scales + 8 * h + 2 * part;
        *s = (uint16_t)((uint8_t)sc[0] | (uint8_t)sc[1] << 8);
        kd[0] = rd16(x->d);
        break;
    }
    default:
        break;
    }
}

/* Per-32 symmetric int8 requantization of floats: scale rounded UP to f16 so no code clips. */
static void requant_group(const float *x, uint8_t *u, uint16_t *s) {
    float amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    if (!(amax > 0) || !isfinite(amax)) {
        *s = 0;
        for (int j = 0; j < 32; j++)
            u[j] = 128;
        return;
    }
    float d = amax / 127.0f;
    uint16_t h = quant_f32_to_f16(d);
    if (quant_f16_to_f32(h) < d && (h & 0x7c00) != 0x7c00) h++;
    float ds = quant_f16_to_f32(h);
    *s = h;
    for (int j = 0; j < 32; j++) {
        float q = ds > 0 ? nearbyintf(x[j] / ds) : 0;
        if (q > 127) q = 127;
        if (q < -127) q = -127;
        u[j] = (uint8_t)((int)q + 128);
    }
}

static void put_group(const rp_matrix *m, int64_t tile, int64_t g, int r, const uint8_t *u,
                      uint16_t s, uint16_t b) {
    uint8_t *p = m->data + (size_t)tile * m->tile_bytes + (size_t)g * m->group_bytes;
    if (m->kind == RP_I6) {
        for (int k = 0; k < 4; k++) {
            uint8_t p0 = 0, p1 = 0;
            for (int c = 0; c < 4; c++) {
                p[c * 32 + r * 4 + k] =
                    (uint8_t)((u[4 * c + k] & 15) | (u[16 + 4 * c + k] & 15) << 4);
                p0 |= (uint8_t)(((u[4 * c + k] >> 4) & 3) << (2 * c));
                p1 |= (uint8_t)(((u[16 + 4 * c + k] >> 4) & 3) << (2 * c));
            }
            p[128 + r * 4 + k] = p0;
            p[160 + r * 4 + k] = p1;
        }
        p[192 + r] = (uint8_t)s;
        p[200 + r] = (uint8_t)(s >> 8);
        return;
    }
    if (m->kind == RP_I5K) {
        for (int k = 0; k < 4; k++) {
            uint8_t pl = 0;
            for (int c = 0; c < 4; c++) {
                p[c * 32 + r * 4 + k] =
                    (uint8_t)((u[4 * c + k] & 15) | (u[16 + 4 * c + k] & 15) << 4);
                pl |= (uint8_t)(((u[4 * c + k] >> 4) & 1) << c | ((u[16 + 4 * c + k] >> 4) & 1)
                                                                     << (4 + c));
            }
            p[128 + r * 4 + k] = pl;
        }
        p[160 + r] = (uint8_t)s;
        p[168 + r] = (uint8_t)b;
        return;
    }
    if (m->kind == RP_I4 || m->kind == RP_I4M || m->kind == RP_I4K) {
        for (int c = 0; c < 4; c++)
            for (int k = 0; k < 4; k++)
                p[c * 32 + r * 4 + k] = (uint8_t)(u[4 * c + k] | u[16 + 4 * c + k] << 4);
    } else {
        for (int c = 0; c < 8; c++)
            for (int k = 0; k < 4; k++)
                p[c * 32 + r * 4 + k] = u[4 * c + k];
    }
    size_t cb = codes_bytes(m->kind);
    if (m->kind == RP_I4K) {
        p[cb + r] = (uint8_t)s;
        p[cb + 8 + r] = (uint8_t)b;
        return;
    }
    wr16(p + cb + 2 * r, s);
    if (m->has_min) wr16(p + cb + 16 + 2 * r, b);
}

/* RP_I4K: the f16 d and dmin of superblock sb of a tile (RP_I6: its f16 d). */
static uint8_t *k_hdr(const rp_matrix *m, int64_t tile, int64_t sb) {
    return m->data + (size_t)tile * m->tile_bytes + (size_t)m->n_groups * m->group_bytes +
           (size_t)sb * (m->kind == RP_I6 ? 16 : 32);
}

/* ---- where repacked data lives ----
 * Decode streams every weight once per token, so the data sits in 2 MiB transparent huge pages
 * when the kernel allows (madvise mode is the common default): with 4 KiB pages the hardware
 * prefetchers stop at every page and the TLB misses ~50 times per MiB.
 * Matrices of 64 KiB and more are bump-allocated in 2 MiB-aligned chunks from quant/hugemem.h
 * (CHUNK bytes, or one chunk of their own when bigger); a chunk is unmapped when its last matrix
 * is freed. The untouched tail of a chunk is never faulted in, so RSS stays the
 * data's size (rounded up to a huge page per chunk). Smaller ones use aligned_alloc. */
#define CHUNK ((size_t)64 << 20)
#define BIG_MIN ((size_t)64 << 10)

typedef struct chunk {
    uint8_t *base; /* 2 MiB aligned */
    size_t size, mapped, used;
    int refs;
    struct chunk *next;
} chunk;

static pthread_mutex_t chunk_mu = PTHREAD_MUTEX_INITIALIZER;
static chunk *chunks; /* newest first; only the newest takes new data */

static chunk *chunk_map(size_t size) {
    size_t mapped;
    uint8_t *base = huge_alloc(size, &mapped);
    if (!base) return NULL;
    if (mapped) size = mapped; /* the whole rounded-up mapping is usable */
    chunk *c = malloc(sizeof *c);
    if (!c) {
        huge_free(base, mapped);
        return NULL;
    }
    *c = (chunk){base, size, mapped, 0, 0, NULL};
    return c;
}

static uint8_t *data_alloc(size_t n, void **owner) {
    *owner = NULL;
#if defined(__SANITIZE_ADDRESS__)
    if (n) return aligned_alloc(64, n); /* under ASan: malloc's redzones catch overruns */
#endif
    if (n < BIG_MIN) return aligned_alloc(64, n);
    pthread_mutex_lock(&chunk_mu);
    chunk *c = chunks;
    if (!c || c->size - c->used < n) {
        c = chunk_map(n > CHUNK ? n : CHUNK);
        if (c) {
            c->next = chunks;
            chunks = c;
        }
    }
    uint8_t *p = NULL;
    if (c) {
        p = c->base + c->used;
        c->used += n; /* n is a multiple of 64 */
        c->refs++;
        *owner = c;
    }
    pthread_mutex_unlock(&chunk_mu);
    return p ? p : aligned_alloc(64, n);
}

static void data_free(uint8_t *p, void *owner) {
    if (!owner) {
        free(p);
        return;
    }
    pthread_mutex_lock(&chunk_mu);
    chunk *c = owner;
    if (--c->refs == 0) {
        for (chunk **pp = &chunks; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        huge_free(c->base, c->mapped);
        free(c);
    }
    pthread_mutex_unlock(&chunk_mu);
}

int rp_new(rp_matrix **out, uint32_t t, const void *src, int64_t rows, int64_t cols, unsigned flags,
           char *err, size_t errlen) {
    bool allow_lossy = flags & RP_ALLOW_LOSSY;
    *out = NULL;
    const qtype_traits *tr = quant_traits(t);
    bool lossy;
    int kind = rp_kind_for(t, &lossy);
    if (!tr || !kind || (lossy && !allow_lossy)) {
        snprintf(err, errlen, "repack: tensor type %u (%s) has no %srepacking", t,
                 tr ? tr->name : "unknown", kind ? "lossless " : "");
        return RP_EUNSUPPORTED;
    }
    if (rows <= 0 || cols <= 0 || cols % RP_GROUP || cols % tr->block_size) {
        snprintf(err, errlen,
                 "repack: shape rows=%lld cols=%lld: cols must be a positive multiple of %d "
                 "and of the %s block size %d",
                 (long long)rows, (long long)cols, RP_GROUP, tr->name, tr->block_size);
        return RP_EINVAL;
    }
    rp_matrix *m = calloc(1, sizeof *m);
    float *tmp = NULL;
    if (!m) goto nomem;
    m->kind = kind;
    m->has_min = kind == RP_I4M || kind == RP_I8M || kind == RP_I4K || kind == RP_I5K;
    m->zero = kind == RP_I4 ? 8 : kind == RP_I8 ? 128 : kind == RP_I6 ? 32 : 0;
    m->lossy = lossy;
    m->src_type = t;
    m->rows = rows;
    m->cols = cols;
    m->n_groups = cols / RP_GROUP;
    m->n_tiles = (rows + RP_ROWS - 1) / RP_ROWS;
    m->group_bytes = rp_group_bytes(kind);
    m->tile_bytes = m->group_bytes * (size_t)m->n_groups;
    if (kind == RP_I4K || kind == RP_I5K) m->tile_bytes += (size_t)(m->n_groups / 8) * 32;
    if (kind == RP_I6) m->tile_bytes += (size_t)(m->n_groups / 8) * 16;
    size_t total = m->tile_bytes * (size_t)m->n_tiles;
    m->data = data_alloc((total + 63) / 64 * 64, &m->owner);
    if (!m->data) goto nomem;
    if (lossy && !(tmp = malloc((size_t)cols * sizeof *tmp))) goto nomem;
    size_t row_size = quant_row_size(t, cols);
    uint8_t u[32];
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), dropped = (uintptr_t)src & ~(pg - 1);
    for (int64_t r = 0; r < m->n_tiles * RP_ROWS; r++) {
        int64_t tile = r / RP_ROWS;
        int rr = (int)(r % RP_ROWS);
        const uint8_t *row = (const uint8_t *)src + (size_t)r * row_size;
        if (r >= rows) { /* padding: codes at the zero point, scale 0 */
            memset(u, m->zero, sizeof u);
            for (int64_t g = 0; g < m->n_groups; g++) {
                put_group(m, tile, g, rr, u, 0, 0);
                if ((kind == RP_I4K || kind == RP_I5K || kind == RP_I6) && g % 8 == 0) {
                    uint8_t *h = k_hdr(m, tile, g / 8);
                    wr16(h + 2 * rr, 0);
                    if (kind != RP_I6) wr16(h + 16 + 2 * rr, 0);
                }
            }
            continue;
        }
        if (lossy) tr->to_float(row, tmp, cols);
        for (int64_t g = 0; g < m->n_groups; g++) {
            uint16_t s = 0, b = 0, kd[2] = {0, 0};
            if (lossy)
                requant_group(tmp + g * RP_GROUP, u, &s);
            else
                decode_exact(t, row, g, u, &s, &b, kd);
            put_group(m, tile, g, rr, u, s, b);
            if ((kind == RP_I4K || kind == RP_I5K || kind == RP_I6) && g % 8 == 0) {
                uint8_t *h = k_hdr(m, tile, g / 8);
                wr16(h + 2 * rr, kd[0]);
                if (kind != RP_I6) wr16(h + 16 + 2 * rr, kd[1]);
            }
        }
        if ((flags & RP_DROP_SOURCE) && rr == RP_ROWS - 1) {
            /* A fault maps the cached pages around it (fault-around, large folios), so pages
             * are given back 2 MiB behind the reader, then all of them at the end: dropping
             * right behind the reader would see them mapped again. */
            uintptr_t e = (uintptr_t)src + (uintptr_t)(r + 1) * row_size;
            uintptr_t upto = e > dropped + (4u << 20) ? (e - (2u << 20)) & ~(pg - 1) : dropped;
            if (upto > dropped) {
                rp_drop_source((const void *)dropped, upto - dropped);
                dropped = upto;
            }
        }
    }
    if (flags & RP_DROP_SOURCE) {
        uintptr_t a = (uintptr_t)src & ~(pg - 1);
        uintptr_t e = ((uintptr_t)src + (uintptr_t)rows * row_size + pg - 1) & ~(pg - 1);
        rp_drop_source((const void *)a, e - a);
    }
    free(tmp);
    *out = m;
    return 0;
nomem:
    free(tmp);
    rp_free(m);
    snprintf(err, errlen, "repack: out of memory for %lld x %lld matrix", (long long)rows,
             (long long)cols);
    return RP_ENOMEM;
}

void rp_free(rp_matrix *m) {
    if (!m) return;
    data_free(m->data, m->owner);
    free(m);
}

size_t rp_bytes(const rp_matrix *m) {
    return sizeof *m + m->tile_bytes * (size_t)m->n_tiles;
}

/* Values of rows [ra, rb) (inside one tile) of group g into dst + (r - ra) * ld + g * 32. */
static void group_to_float(const rp_matrix *m, int64_t tile, int64_t g, int ra, int rb, float *dst,
                           int64_t ld) {
    const uint8_t *p = m->data + (size_t)tile * m->tile_bytes + (size_t)g * m->group_bytes;
    const size_t cb = codes_bytes(m->kind);
    const bool i4 = m->kind == RP_I4 || m->kind == RP_I4M || m->kind == RP_I4K;
    for (int r = ra; r < rb; r++) {
        int v[32];
        if (m->kind == RP_I6) {
            float d = quant_f16_to_f32(rd16(k_hdr(m, tile, g / 8) + 2 * r));
            float s0 = d * (float)(int8_t)p[192 + r], s1 = d * (float)(int8_t)p[200 + r];
            float *y = dst + (size_t)(r - ra) * ld + g * RP_GROUP;
            for (int c = 0; c < 4; c++)
                for (int k = 0; k < 4; k++) {
                    uint8_t byte = p[c * 32 + r * 4 + k];
                    int lo = (byte & 15) | ((p[128 + r * 4 + k] >> (2 * c)) & 3) << 4;
                    int hi = (byte >> 4) | ((p[160 + r * 4 + k] >> (2 * c)) & 3) << 4;
                    y[4 * c + k] = s0 * (float)(lo - 32);
                    y[16 + 4 * c + k] = s1 * (float)(hi - 32);
                }
            continue;
        }
        if (m->kind == RP_I5K) {
            const uint8_t *h = k_hdr(m, tile, g / 8);
            float s = quant_f16_to_f32(rd16(h + 2 * r)) * (float)p[160 + r];
            float b = -(quant_f16_to_f32(rd16(h + 16 + 2 * r)) * (float)p[168 + r]);
            float *y = dst + (size_t)(r - ra) * ld + g * RP_GROUP;
            for (int c = 0; c < 4; c++)
                for (int k = 0; k < 4; k++) {
                    uint8_t byte = p[c * 32 + r * 4 + k], pl = p[128 + r * 4 + k];
                    int lo = (byte & 15) | ((pl >> c) & 1) << 4;
                    int hi = (byte >> 4) | ((pl >> (4 + c)) & 1) << 4;
                    y[4 * c + k] = s * (float)lo + b;
                    y[16 + 4 * c + k] = s * (float)hi + b;
                }
            continue;
        }
        if (i4) {
            for (int c = 0; c < 4; c++)
                for (int k = 0; k < 4; k++) {
                    uint8_t byte = p[c * 32 + r * 4 + k];
                    v[4 * c + k] = (byte & 15) - m->zero;
                    v[16 + 4 * c + k] = (byte >> 4) - m->zero;
                }
        } else {
            for (int c = 0; c < 8; c++)
                for (int k = 0; k < 4; k++)
                    v[4 * c + k] = p[c * 32 + r * 4 + k] - m->zero;
        }
        float s, b;
        if (m->kind == RP_I4K) {
            const uint8_t *h = k_hdr(m, tile, g / 8);
            s = quant_f16_to_f32(rd16(h + 2 * r)) * (float)p[cb + r];
            b = -(quant_f16_to_f32(rd16(h + 16 + 2 * r)) * (float)p[cb + 8 + r]);
        } else {
            s = quant_f16_to_f32(rd16(p + cb + 2 * r));
            b = m->has_min ? quant_f16_to_f32(rd16(p + cb + 16 + 2 * r)) : 0.0f;
        }
        float *y = dst + (size_t)(r - ra) * ld + g * RP_GROUP;
        for (int j = 0; j < 32; j++)
            y[j] = s * (float)v[j] + b;
    }
}

void rp_rows_to_float(const rp_matrix *m, int64_t r0, int64_t r1, float *dst) {
    for (int64_t r = r0; r < r1;) {
        int64_t tile = r / RP_ROWS, end = (tile + 1) * RP_ROWS < r1 ? (tile + 1) * RP_ROWS : r1;
        for (int64_t g = 0; g < m->n_groups; g++)
            group_to_float(m, tile, g, (int)(r - tile * RP_ROWS), (int)(end - tile * RP_ROWS),
                           dst + (size_t)(r - r0) * m->cols, m->cols);
        r = end;
    }
}

void rp_row_to_float(const rp_matrix *m, int64_t r, float *dst) {
    rp_rows_to_float(m, r, r + 1, dst);
}

void rp_drop_source(const void *src, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = ((uintptr_t)src + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t e = ((uintptr_t)src + n) & ~((uintptr_t)pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}
