/* repack.h: the engine's own weight layouts (int4/int8, 8 rows interleaved) and load-time
 * repacking. */
#ifndef LFM2_REPACK_H
#define LFM2_REPACK_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/*
 * A repacked matrix holds `rows` rows of `cols` weights (cols a multiple of 32) as tiles of
 * RP_ROWS consecutive rows (the last tile padded with zero rows). Each row is cut into groups
 * of 32 weights; a weight is an unsigned code u and its value is
 *
 *     w = s * (u - z) + b          s, b: f16 per (row, group); b = 0 when the kind has no min
 *
 * with the zero point z fixed by the kind. Tile layout, group after group (rp_group_bytes each):
 *   codes: int4: 4 chunks x 8 rows x 4 bytes; byte k of chunk c = u[4c+k] | u[16+4c+k] << 4
 *          int8: 8 chunks x 8 rows x 4 bytes; byte k of chunk c = u[4c+k]
 *   s:     8 x f16 (row order), then b: 8 x f16 only for kinds with a min.
 *   RP_I4K instead: 8 x u8 scale codes sc, 8 x u8 min codes mc per group, and after all groups,
 *          per 256 weights (8 groups): 8 x f16 d, 8 x f16 dmin; s = d * sc, b = -(dmin * mc), both
 *          exact in f32, so w equals Q4_K's dequantized value bit for bit.
 *   RP_I6: the int4 codes hold the low 4 bits; then a 2-bit plane of 2 x 32 bytes (chunk layout,
 *          bits 2c..2c+1 of byte (r, k): high bits of weight 4c+k, then of 16+4c+k); 8 x int8
 *          scale codes of weights 0..15, 8 of 16..31; after all groups, per 256 weights 8 x f16 d.
 *          s = d * sc per half group, exact in f32: Q6_K's values bit for bit.
 *   RP_I5K: int4 codes, a 1-bit plane of 32 bytes (bit c of byte (r, k): bit 4 of weight 4c+k,
 *          bit 4+c: of 16+4c+k), then sc and mc codes and the superblock factors as RP_I4K.
 * So one 32-byte load gives 4 codes of each of 8 rows: a SIMD lane per row, and one broadcast
 * activation dword serves all 8 rows (and the same weights serve every token of a batch).
 *
 * Sources and fidelity (w compared with quant's to_float of the source):
 *   Q4_0 -> I4 (z=8) exact; Q4_1 -> I4M exact; Q8_0 -> I8 (z=128) exact; Q5_0 -> I8 exact;
 *   Q5_1 -> I8M (z=0) exact; Q4_K -> I4K, Q5_K -> I5K and Q6_K -> I6 exact (and as compact as
 *   the source, so RSS stays near the file size); Q2_K, Q3_K, F16, BF16, F32 -> I8 by per-32
 *   requantization of the dequantized
 *   values (Q8_0-class loss: |error| <= half a step of amax/127 per group), only when the
 *   caller allows lossy repacking.
 */
#define RP_ROWS 8   /* rows interleaved per tile */
#define RP_GROUP 32 /* weights per group (one f16 scale, and min) */

enum rp_kind {
    RP_I4 = 1,  /* 4-bit codes, z = 8, no min (Q4_0) */
    RP_I4M = 2, /* 4-bit codes, z = 0, f16 min (Q4_1) */
    RP_I8 = 3,  /* 8-bit codes stored as q + 128, z = 128, no min (Q8_0, Q5_0; Q2_K, Q3_K and
                   float weights requantized, lossy) */
    RP_I8M = 4, /* 8-bit codes, z = 0, f16 min (Q5_1) */
    RP_I4K = 5, /* 4-bit codes, z = 0, Q4_K's own 6-bit scale and min codes: exact, 4.625 bits */
    RP_I6 = 6,  /* 6-bit codes (int4 nibbles + a 2-bit plane), z = 32, Q6_K's int8 scale per 16
                   weights and f16 d per 256: exact, 6.5625 bits like Q6_K itself */
    RP_I5K = 7, /* 5-bit codes (int4 nibbles + a 1-bit plane), z = 0, as RP_I4K otherwise: Q5_K
                   exact, 5.625 bits */
};

enum {
    RP_EINVAL = -1, /* shape not supported (cols not a multiple of 32 / of the source block) */
    RP_EUNSUPPORTED = -2, /* source type has no repacking (or only a lossy one that was refused) */
    RP_ENOMEM = -3,
};

typedef struct rp_matrix {
    int kind;           /* enum rp_kind */
    int zero;           /* z: 8, 0, 128 or 0 by kind */
    bool has_min;       /* b present */
    bool lossy;         /* requantized: values differ from the source's beyond f16 rounding */
    uint32_t src_type;  /* GGML type it came from */
    int64_t rows;       /* valid rows (output length) */
    int64_t cols;       /* weights per row, multiple of 32 */
    int64_t n_groups;   /* cols / 32 */
    int64_t n_tiles;    /* ceil(rows / RP_ROWS) */
    size_t group_bytes; /* bytes per group in a tile */
    size_t tile_bytes;  /* n_groups * group_bytes + n_groups / 8 * (32 for RP_I4K/I5K, 16 for I6) */
    uint8_t *data;      /* n_tiles * tile_bytes, 64-byte aligned, owned (in huge pages when big) */
    void *owner;        /* private: the huge-page chunk holding data, or NULL for malloc's */
} rp_matrix;

/* Bytes of one tile group for a kind (144, 160, 272, 288, 144, 208, 176). */
size_t rp_group_bytes(int kind);
/* Kind used for a source type: RP_I4.. or 0 when the type cannot be repacked at all.
 * *lossy (may be NULL) says whether that repacking requantizes. */
int rp_kind_for(uint32_t src_type, bool *lossy);

enum {
    RP_ALLOW_LOSSY = 1, /* accept the requantizing sources (else RP_EUNSUPPORTED) */
    RP_DROP_SOURCE = 2, /* give the source pages back while repacking (2 MiB behind the reader,
                           then all, including pages shared with neighbouring data), so a big
                           tensor's source and its repacked copy are never both resident. The
                           source MUST lie in a read-only file mapping (re-read on next touch) */
};
/* Repacks `rows` rows of `cols` weights of src_type (rows contiguous, row stride
 * quant_row_size(src_type, cols)) into a new matrix; flags are RP_* above. Returns 0 or a
 * negative RP_* code with a message naming the field, value and limit. Free with rp_free. */
int rp_new(rp_matrix **out, uint32_t src_type, const void *src, int64_t rows, int64_t cols,
           unsigned flags, char *err, size_t errlen);
void rp_free(rp_matrix *m); /* NULL is a no-op */

/* Dequantizes row r of m into dst[cols]: w = s * (u - z) + b, in float. */
void rp_row_to_float(const rp_matrix *m, int64_t r, float *dst);
/* Same for rows [r0, r1) into dst (row-major, cols floats per row): the float reference the
 * kernels' tests and benchmarks compare with. */
void rp_rows_to_float(const rp_matrix *m, int64_t r0, int64_t r1, float *dst);
/* Gives back to the kernel the whole pages inside [src, src + n) of a read-only file mapping
 * (madvise DONTNEED) once a tensor is repacked: they are re-read from the page cache if touched
 * again. Keeps peak RSS near the repacked size instead of file + repacked. */
void rp_drop_source(const void *src, size_t n);
/* Bytes held by m (data plus header). */
size_t rp_bytes(const rp_matrix *m);

#endif
