/* gguf.h: read (memory-mapped, fully validated) and write GGUF v2/v3 files. */
#ifndef LFM2_GGUF_H
#define LFM2_GGUF_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum gguf_vtype {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STR = 8,
    GGUF_ARR = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
    GGUF_VTYPE_COUNT
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_HEADER_BYTES 24 /* magic, version, tensor count, key count */

typedef struct gguf_tensor {
    const char *name;          /* NUL-terminated, owned by the gguf */
    uint32_t type;             /* GGML type id, see quant/quant.h */
    uint32_t n_dims;           /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS]; /* dims, fastest first (ne[0] = row length); unused = 1 */
    uint64_t offset;           /* from the start of the data section */
    size_t nbytes;             /* bytes of data */
    const void *data;          /* read-only, inside the mapping */
} gguf_tensor;

typedef struct gguf gguf; /* an opened file: metadata, tensor infos, the mapping */

/* Opens and validates path (structure only, no LFM2 semantics). On error returns a negative
 * code (-1) and writes a message naming the field, the value and the limit into err, without an
 * "error:" prefix (callers add it). Validated: magic, version 2/3 (little-endian), every count
 * and length against the bytes left, keys and tensor names (printable ASCII, unique),
 * general.alignment (power of two), n_dims 1..4, dims >= 1, element/byte counts, tensor type
 * known to quant_traits(), row length a multiple of the block size, data inside the file,
 * aligned and not overlapping. Arrays of arrays are accepted and skipped: gguf_arr_type() says
 * GGUF_ARR, their elements are not readable, gguf_writer_copy_kv copies them verbatim. */
int gguf_open(gguf **out, const char *path, char *err, size_t errlen);
/* Same, on a caller-owned buffer that must outlive the gguf (used by tests and fuzzers). */
int gguf_open_mem(gguf **out, const void *buf, size_t size, char *err, size_t errlen);
void gguf_close(gguf *g); /* NULL is a no-op */

uint32_t gguf_version(const gguf *g);
size_t gguf_alignment(const gguf *g);
size_t gguf_file_size(const gguf *g);
/* The file's bytes before the data section: header, metadata and tensor table (*len bytes). */
const void *gguf_header_bytes(const gguf *g, size_t *len);

/* Metadata. Keys are NUL-terminated. Index-based access plus lookup by key (-1: absent). */
int64_t gguf_n_kv(const gguf *g);
int64_t gguf_find_key(const gguf *g, const char *key);
const char *gguf_kv_key(const gguf *g, int64_t i);
enum gguf_vtype gguf_kv_type(const gguf *g, int64_t i);

/* Typed getters with defaults. Integers convert between widths when the value fits;
 * a present key of the wrong kind yields the default and sets *bad (if non-NULL) to true. */
int64_t gguf_get_int(const gguf *g, const char *key, int64_t def, bool *bad);
double gguf_get_float(const gguf *g, const char *key, double def, bool *bad);
bool gguf_get_bool(const gguf *g, const char *key, bool def, bool *bad);
const char *gguf_get_str(const gguf *g, const char *key, const char *def, bool *bad);

/* Values by index: scalars, strings (NUL-terminated copies owned by g), arrays. */
int64_t gguf_kv_int(const gguf *g, int64_t i);  /* any integer or bool type */
double gguf_kv_float(const gguf *g, int64_t i); /* any numeric type */
const char *gguf_kv_str(const gguf *g, int64_t i, size_t *len);
enum gguf_vtype gguf_arr_type(const gguf *g, int64_t i);
uint64_t gguf_arr_len(const gguf *g, int64_t i);
int64_t gguf_arr_int(const gguf *g, int64_t i, uint64_t j);
double gguf_arr_float(const gguf *g, int64_t i, uint64_t j);
/* Element j of a string array: pointer into the mapping (NOT NUL-terminated) and its length. */
const char *gguf_arr_str(const gguf *g, int64_t i, uint64_t j, size_t *len);

/* Tensors, in file order. */
int64_t gguf_n_tensors(const gguf *g);
const gguf_tensor *gguf_tensor_at(const gguf *g, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name); /* NULL: absent */

/* Writer: collect metadata and tensors, then write a v3 file. Setting a key twice replaces it.
 * Tensor data is borrowed until gguf_writer_write returns. set/add calls return 0 or -1 (bad
 * key, value out of range for the type, a general.alignment that is not an integer power of
 * two, unknown tensor type, nbytes not matching the shape, duplicate tensor name); after any
 * failure gguf_writer_write refuses to write. gguf_writer_free(NULL) is a no-op. The layout is
 * llama.cpp's (tensors in the order added, each padded to the alignment), so copying a file's
 * keys and tensors reproduces it byte for byte. The file appears atomically (temp + rename). */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
void gguf_writer_set_alignment(gguf_writer *w, size_t alignment);
int gguf_writer_set_int(gguf_writer *w, const char *key, enum gguf_vtype t, int64_t v);
int gguf_writer_set_float(gguf_writer *w, const char *key, enum gguf_vtype t, double v);
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
/* Arrays: numeric (elements of type t, packed as in the file) or strings. */
int gguf_writer_set_arr(gguf_writer *w, const char *key, enum gguf_vtype t, const void *data,
                        uint64_t n);
int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                            const size_t *lens, uint64_t n);
/* Copies key i of g (any type) into w. */
int gguf_writer_copy_kv(gguf_writer *w, const gguf *g, int64_t i);
int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                           const int64_t *ne, const void *data, size_t nbytes);
/* Same, but the data is produced while writing: fill(ctx, dst, nbytes) writes the tensor's
 * bytes into dst and returns 0 (or negative to abort the write). dst is a shared mapping of the
 * output file itself, so no tensor is ever held in RAM. */
typedef int (*gguf_fill_fn)(void *ctx, void *dst, size_t nbytes);
int gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                const int64_t *ne, gguf_fill_fn fill, void *ctx);
int gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t errlen);

#endif
