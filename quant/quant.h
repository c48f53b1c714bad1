/* quant.h: the weight formats lfm2 reads and writes (ggml's block layouts), one table. */
#ifndef LFM2_QUANT_H
#define LFM2_QUANT_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* GGML type ids as stored in GGUF tensor infos. Only those with traits are supported. */
enum qtype {
    QT_F32 = 0, QT_F16 = 1, QT_Q4_0 = 2, QT_Q4_1 = 3, QT_Q5_0 = 6, QT_Q5_1 = 7,
    QT_Q8_0 = 8, QT_Q8_1 = 9, QT_Q2_K = 10, QT_Q3_K = 11, QT_Q4_K = 12, QT_Q5_K = 13,
    QT_Q6_K = 14, QT_Q8_K = 15, QT_BF16 = 30,
    QT_COUNT = 64 /* ids below this are looked up; unknown ids have no traits */
};

typedef struct qtype_traits {
    const char *name;      /* "q4_0", lowercase as llama.cpp prints it */
    int block_size;        /* weights per block (1 for f32/f16/bf16) */
    size_t type_size;      /* bytes per block */
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

/* IEEE half and bfloat16 conversions (round to nearest even). */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

#endif
