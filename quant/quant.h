/* quant.h: the weight formats lfm2 reads and writes (ggml's block layouts), one table. */
#ifndef LFM2_QUANT_H
#define LFM2_QUANT_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* GGML type ids as stored in GGUF tensor infos. Only those with traits are supported. */
enum qtype {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q8_1 = 9,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,
    QT_BF16 = 30,
    QT_COUNT = 64 /* ids below this are looked up; unknown ids have no traits */
};

typedef struct qtype_traits {
    const char *name; /* "q4_0", lowercase as llama.cpp prints it */
    int block_size;   /* weights per block (1 for f32/f16/bf16) */
    size_t type_size; /* bytes per block */
    /* Dequantize n weights (n a multiple of block_size) from src to dst. Plain C reference. */
    void (*to_float)(const void *src, float *dst, int64_t n);
    /* Quantize n floats (n a multiple of block_size); NULL if lfm2 cannot write the type. */
    void (*from_float)(const float *src, void *dst, int64_t n);
} qtype_traits;

/* Traits for a GGML type id, or NULL when the id is unknown or unsupported. */
const qtype_traits *quant_traits(uint32_t type);
/* Bytes taken by n weights of `type`; 0 if unsupported or n is not a whole number of blocks. */
size_t quant_row_size(uint32_t type, int64_t n);
/* Parses "q4_0", "Q8_0", "f16"...; returns the type id or -1. */
int quant_type_from_name(const char *name);

/* Dequantize n_rows contiguous rows of row_len weights each (row stride quant_row_size(type,
 * row_len) bytes). Returns 0, QUANT_EUNSUPPORTED for a type without to_float, or QUANT_EROWLEN
 * when row_len is not a positive multiple of the block size. Thread-safe, no allocation. */
int quant_dequantize_rows(uint32_t type, const void *src, float *dst, int64_t n_rows,
                          int64_t row_len);
/* The reverse, for types with from_float. Same return codes. */
int quant_quantize_rows(uint32_t type, const float *src, void *dst, int64_t n_rows,
                        int64_t row_len);
enum { QUANT_EUNSUPPORTED = -1, QUANT_EROWLEN = -2 };

/* File-level quantization mixes, named as llama-quantize names them ("Q4_K_M", "Q8_0", "F16"...).
 * A mix gives most matrices its base type and, like llama.cpp, a few others more bits. */
typedef struct quant_mix {
    const char *name; /* "Q4_K_M" */
    uint32_t base;    /* qtype of most matrices */
    int file_type;    /* llama.cpp's LLAMA_FTYPE_* value, for general.file_type */
} quant_mix;
/* Looks a mix up by name (case-insensitive); NULL if unknown. quant_mix_at(i) lists them (NULL
 * past the end), e.g. for a usage message. */
const quant_mix *quant_mix_find(const char *name);
const quant_mix *quant_mix_at(int i);

/* One tensor of the source file, in file order. */
typedef struct quant_tensor_desc {
    const char *name; /* GGUF tensor name, "blk.3.ffn_down.weight" */
    uint32_t n_dims;  /* 1..4 */
    int64_t ne0;      /* row length */
    uint32_t type;    /* its current qtype */
} quant_tensor_desc;
/* Chooses the type of every tensor under `mix` with llama.cpp's rules (llama-quant.cpp, no
 * imatrix, no overrides): tensors that are not matrices (n_dims < 2, norms, the short-conv
 * kernel, names not ending in "weight") keep their type; the output matrix (token_embd.weight
 * when there is no output.weight) becomes Q6_K unless the mix is Q8_0 or a float type; for
 * Q4_K_M and Q5_K_M, attn_v and ffn_down take Q6_K on the ranks llama.cpp's use_more_bits picks
 * (first/last eighth and every third between); Q4_K_S gives the first 4 attn_v and the first
 * eighth of ffn_down Q5_K. A K-quant on rows that are not a multiple of 256 falls back like
 * llama.cpp (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0), and a row that fits no block to F16.
 * Writes n types to types_out. */
void quant_mix_plan(const quant_mix *mix, const quant_tensor_desc *t, int64_t n,
                    uint32_t *types_out);

/* IEEE half and bfloat16 conversions (round to nearest even). */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

/* Block layouts, byte for byte as ggml stores them (little-endian; every field is a byte array so
 * a block may sit at any address: read halves with quant_f16_to_f32 after memcpy). Kernels may
 * use these; the names follow ggml's (d = scale, m/dmin = min, qs = low bits, qh = high bits). */
#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK_K 256
#define K_SCALE_SIZE 12
typedef struct {
    uint8_t d[2];
    uint8_t qs[QK4_0 / 2];
} block_q4_0; /* x[j] = (qs[j] & 15) - 8, x[j + 16] = (qs[j] >> 4) - 8, times d */
typedef struct {
    uint8_t d[2], m[2];
    uint8_t qs[QK4_1 / 2];
} block_q4_1; /* as q4_0 without the - 8, times d, plus m */
typedef struct {
    uint8_t d[2];
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0; /* as q4_0 with bit j of qh (u32 LE) as weight j's 5th bit; - 16 */
typedef struct {
    uint8_t d[2], m[2];
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1; /* as q5_0 without the - 16, plus m */
typedef struct {
    uint8_t d[2];
    int8_t qs[QK8_0];
} block_q8_0; /* x = qs * d */
/* Q4_K: 8 sub-blocks of 32, 6-bit scale and min each packed in `scales`;
 * x = d*sc*nibble - dmin*m. Nibbles: 64-weight groups, low nibbles first, then high. */
typedef struct {
    uint8_t d[2], dmin[2];
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
/* Q5_K: as Q4_K plus a fifth bit per weight in qh (bit 2g / 2g+1 for group g's halves). */
typedef struct {
    uint8_t d[2], dmin[2];
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
/* Q6_K: 16 sub-blocks of 16 with int8 scales; x = d * scales[s] * (q6 - 32). */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint8_t d[2];
} block_q6_K;
/* Q8_K: f32 scale, 256 int8, 16 int16 sums of each 16 (used as the activation side of K dots). */
typedef struct {
    uint8_t d[4];
    int8_t qs[QK_K];
    uint8_t bsums[QK_K / 16 * 2];
} block_q8_K;
/* Q2_K / Q3_K: read-only (dequantize), as found in Q2_K/Q3_K_* files. */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint8_t d[2], dmin[2];
} block_q2_K;
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint8_t d[2];
} block_q3_K;

/* Unpacks the j-th (0..7) 6-bit scale and min of a Q4_K/Q5_K block's `scales`. */
static inline void quant_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif
