/* test_gguf.c: GGUF reader/writer: broken files of every class, every truncation, roundtrips. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "quant/quant.h"
#include "tests/check.h"

/* ------------------------------------------------------------ a tiny file builder */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void u8(buf *b, uint8_t v) {
    put(b, &v, 1);
}
static void u32(buf *b, uint32_t v) {
    put(b, &v, 4);
}
static void u64(buf *b, uint64_t v) {
    put(b, &v, 8);
}
static void str(buf *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad(buf *b, size_t a) {
    while (b->n % a)
        u8(b, 0);
}

/* Ways to break the standard small file; M_NONE keeps it valid. */
enum mut {
    M_NONE,
    M_MAGIC,
    M_V1,
    M_V4,
    M_BIGENDIAN,
    M_NKV_HUGE,
    M_NKV_MAX,
    M_NT_HUGE,
    M_NT_MAX,
    M_NKV_PLUS1,
    M_NT_PLUS1,
    M_KEYLEN_HUGE,
    M_KEYLEN_MAX,
    M_KEY_EMPTY,
    M_KEY_CTRL,
    M_KEY_NUL,
    M_KEY_UTF8,
    M_DUP_KEY,
    M_VTYPE_BAD,
    M_ARR_ETYPE_BAD,
    M_ARR_LEN_HUGE,
    M_ARR_LEN_MAX,
    M_ARR_STRLEN_HUGE,
    M_STRLEN_HUGE,
    M_NESTED_DEEP,
    M_ALIGN_0,
    M_ALIGN_3,
    M_ALIGN_STR,
    M_ALIGN_NEG,
    M_ALIGN_HUGE,
    M_NDIMS_0,
    M_NDIMS_5,
    M_DIM_ZERO,
    M_DIM_NEG,
    M_NEL_OVERFLOW,
    M_BYTES_OVERFLOW,
    M_TYPE_99,
    M_TYPE_4,
    M_TYPE_HUGE,
    M_ROW_BLOCK,
    M_DATA_PAST,
    M_DATA_OFF_MAX,
    M_MISALIGNED,
    M_OVERLAP,
    M_DUP_TENSOR,
    M_TNAME_EMPTY,
    M_TNAME_CTRL,
    M_DATA_SHORT,
    M_ALIGN_64,
    M_V2,
    M_TYPE_IQ4XS,
    M_COUNT
};

static const struct {
    enum mut m;
    const char *what;   /* short name */
    const char *expect; /* substring the message must contain (NULL: must load) */
} cases[] = {
    {M_NONE, "valid", NULL},
    {M_V2, "valid v2", NULL},
    {M_ALIGN_64, "valid alignment 64", NULL},
    {M_MAGIC, "bad magic", "magic"},
    {M_V1, "version 1", "version 1"},
    {M_V4, "version 4", "version 4"},
    {M_BIGENDIAN, "big-endian", "big-endian"},
    {M_NKV_HUGE, "kv count 2^40", "kv count 1099511627776"},
    {M_NKV_MAX, "kv count 2^64-1", "kv count 18446744073709551615"},
    {M_NT_HUGE, "tensor count 2^40", "tensor count 1099511627776"},
    {M_NT_MAX, "tensor count 2^64-1", "tensor count 18446744073709551615"},
    {M_NKV_PLUS1, "kv count one too many", "tensor #0 name: string length"},
    {M_NT_PLUS1, "tensor count one too many", "tensor #3"},
    {M_KEYLEN_HUGE, "key length 2^40", "string length 1099511627776"},
    {M_KEYLEN_MAX, "key length 2^64-1", "string length 18446744073709551615"},
    {M_KEY_EMPTY, "empty key", "is empty"},
    {M_KEY_CTRL, "key with a newline", "0x0a"},
    {M_KEY_NUL, "key with a NUL byte", "0x00"},
    {M_KEY_UTF8, "key with a non-ASCII byte", "0xc3"},
    {M_DUP_KEY, "duplicate key", "duplicate key 'test.u8'"},
    {M_VTYPE_BAD, "value type 13", "unknown value type 13"},
    {M_ARR_ETYPE_BAD, "array element type 77", "unknown array element type 77"},
    {M_ARR_LEN_HUGE, "array length 2^40", "array length 1099511627776"},
    {M_ARR_LEN_MAX, "array length 2^64-1", "array length 18446744073709551615"},
    {M_ARR_STRLEN_HUGE, "string array element length 2^40", "string length 1099511627776"},
    {M_STRLEN_HUGE, "string value length 2^40", "test.str: string length 1099511627776"},
    {M_NESTED_DEEP, "arrays nested 6 deep", "nested deeper"},
    {M_ALIGN_0, "alignment 0", "general.alignment 0"},
    {M_ALIGN_3, "alignment 3", "general.alignment 3 is invalid"},
    {M_ALIGN_STR, "alignment as a string", "general.alignment has type str"},
    {M_ALIGN_NEG, "alignment -32", "general.alignment -32"},
    {M_ALIGN_HUGE, "alignment 2^31", "general.alignment 2147483648"},
    {M_NDIMS_0, "n_dims 0", "tensor 'b': n_dims 0"},
    {M_NDIMS_5, "n_dims 5", "tensor 'b': n_dims 5"},
    {M_DIM_ZERO, "zero dim", "tensor 'a': dim 1 is 0"},
    {M_DIM_NEG, "negative dim", "tensor 'a': dim 0 is 18446744073709551615"},
    {M_NEL_OVERFLOW, "element count overflow", "tensor 'a': element count overflows"},
    {M_BYTES_OVERFLOW, "byte size overflow", "tensor 'a': byte size overflows"},
    {M_TYPE_99, "tensor type 99", "tensor 'b': unknown or unsupported tensor type 99"},
    {M_TYPE_4, "removed tensor type 4", "unsupported tensor type 4"},
    {M_TYPE_IQ4XS, "tensor type iq4_xs",
     "tensor 'b': unknown or unsupported tensor type 23 (ggml's iq4_xs, which lfm2 cannot read)"},
    {M_TYPE_HUGE, "tensor type 2^32-1", "unsupported tensor type 4294967295"},
    {M_ROW_BLOCK, "q8_0 row of 48",
     "tensor 'c': row length 48 is not a multiple of the q8_0 block size 32"},
    {M_DATA_PAST, "data past the end", "tensor 'c': data ends at "},
    {M_DATA_OFF_MAX, "data offset 2^64-32",
     "tensor 'a': data ends at 18446744073709551615 past file size"},
    {M_MISALIGNED, "misaligned offset",
     "tensor 'b': data offset 40 is not a multiple of the alignment 32"},
    {M_OVERLAP, "overlapping tensors", "overlaps tensor"},
    {M_DUP_TENSOR, "duplicate tensor name", "duplicate tensor name 'a'"},
    {M_TNAME_EMPTY, "empty tensor name", "tensor #1 name at offset"},
    {M_TNAME_CTRL, "tensor name with a tab", "0x09"},
    {M_DATA_SHORT, "data section cut short", "past file size"},
};

/* Sizes of the standard tensors' data: a f32 [4,2], b f16 [8], c q8_0 [32,2]. */
#define A_BYTES 32
#define B_BYTES 16
#define C_BYTES 68

/* The standard small file: every value type, arrays (numeric, string, nested), three tensors
 * of three types; the last tensor ends exactly at the end of the file, so every truncation
 * of it must fail. */
static buf make_file(enum mut m) {
    buf b = {0};
    const int nkv = 19 + (m == M_DUP_KEY) + (m == M_NESTED_DEEP) +
                    (m >= M_ALIGN_0 && m <= M_ALIGN_HUGE) + (m == M_ALIGN_64);
    const int nt = 3;
    size_t align = m == M_ALIGN_64 ? 64 : 32;
    if (m == M_MAGIC)
        put(&b, "GGUV", 4);
    else
        put(&b, "GGUF", 4);
    uint32_t ver = m == M_V1 ? 1 : m == M_V4 ? 4 : m == M_V2 ? 2 : 3;
    if (m == M_BIGENDIAN) ver = 0x03000000u;
    u32(&b, ver);
    uint64_t ntc = m == M_NT_HUGE ? 1ull << 40 : m == M_NT_MAX ? UINT64_MAX : (uint64_t)nt;
    uint64_t nkc = m == M_NKV_HUGE ? 1ull << 40 : m == M_NKV_MAX ? UINT64_MAX : (uint64_t)nkv;
    u64(&b, ntc + (m == M_NT_PLUS1));
    u64(&b, nkc + (m == M_NKV_PLUS1));

    /* keys */
    if (m == M_KEYLEN_HUGE)
        u64(&b, 1ull << 40), put(&b, "general.architecture", 20);
    else if (m == M_KEYLEN_MAX)
        u64(&b, UINT64_MAX), put(&b, "general.architecture", 20);
    else if (m == M_KEY_EMPTY)
        str(&b, "");
    else if (m == M_KEY_CTRL)
        str(&b, "general.archi\ntecture");
    else if (m == M_KEY_NUL)
        u64(&b, 5), put(&b, "ab\0cd", 5);
    else if (m == M_KEY_UTF8)
        str(&b, "general.caf\xc3\xa9");
    else
        str(&b, "general.architecture");
    u32(&b, GGUF_STR), str(&b, "test");
    str(&b, "test.u8"), u32(&b, m == M_VTYPE_BAD ? 13 : GGUF_U8), u8(&b, 200);
    str(&b, "test.i8"), u32(&b, GGUF_I8), u8(&b, (uint8_t)-100);
    str(&b, "test.u16"), u32(&b, GGUF_U16), u8(&b, 0x34), u8(&b, 0xf2);
    str(&b, "test.i16"), u32(&b, GGUF_I16), u8(&b, 0xfe), u8(&b, 0xff);
    str(&b, "test.u32"), u32(&b, GGUF_U32), u32(&b, 4000000000u);
    str(&b, "test.i32"), u32(&b, GGUF_I32), u32(&b, (uint32_t)-7);
    str(&b, "test.f32"), u32(&b, GGUF_F32);
    float f = 1.5f;
    put(&b, &f, 4);
    str(&b, "test.b"), u32(&b, GGUF_BOOL), u8(&b, 1);
    str(&b, "test.u64"), u32(&b, GGUF_U64), u64(&b, 1ull << 62);
    str(&b, "test.i64"), u32(&b, GGUF_I64), u64(&b, (uint64_t)-5);
    str(&b, "test.f64"), u32(&b, GGUF_F64);
    double d = -2.25;
    put(&b, &d, 8);
    str(&b, "test.str"), u32(&b, GGUF_STR);
    if (m == M_STRLEN_HUGE)
        u64(&b, 1ull << 40), put(&b, "hello", 5);
    else
        str(&b, "hello");
    str(&b, "test.arr_i32"), u32(&b, GGUF_ARR);
    u32(&b, m == M_ARR_ETYPE_BAD ? 77 : GGUF_I32);
    u64(&b, m == M_ARR_LEN_HUGE ? 1ull << 40 : m == M_ARR_LEN_MAX ? UINT64_MAX : 3);
    u32(&b, 1), u32(&b, (uint32_t)-2), u32(&b, 3);
    str(&b, "test.arr_str"), u32(&b, GGUF_ARR), u32(&b, GGUF_STR), u64(&b, 3);
    str(&b, "a");
    if (m == M_ARR_STRLEN_HUGE)
        u64(&b, 1ull << 40), put(&b, "bc", 2);
    else
        str(&b, "bc");
    str(&b, "");
    str(&b, "test.arr_f32"), u32(&b, GGUF_ARR), u32(&b, GGUF_F32), u64(&b, 2);
    f = 0.25f;
    put(&b, &f, 4);
    f = -8.0f;
    put(&b, &f, 4);
    str(&b, "test.arr_u8"), u32(&b, GGUF_ARR), u32(&b, GGUF_U8), u64(&b, 0);
    str(&b, "test.nested"), u32(&b, GGUF_ARR), u32(&b, GGUF_ARR), u64(&b, 2);
    u32(&b, GGUF_I16), u64(&b, 2), u8(&b, 1), u8(&b, 0), u8(&b, 2), u8(&b, 0);
    u32(&b, GGUF_STR), u64(&b, 1), str(&b, "x");
    str(&b, "test.last"), u32(&b, GGUF_U32), u32(&b, 42);
    if (m == M_DUP_KEY) str(&b, "test.u8"), u32(&b, GGUF_U8), u8(&b, 1);
    if (m == M_NESTED_DEEP) {
        str(&b, "test.deep"), u32(&b, GGUF_ARR);
        for (int i = 0; i < 5; i++)
            u32(&b, GGUF_ARR), u64(&b, 1);
        u32(&b, GGUF_U8), u64(&b, 1), u8(&b, 9);
    }
    if (m == M_ALIGN_0 || m == M_ALIGN_3 || m == M_ALIGN_64 || m == M_ALIGN_HUGE)
        str(&b, "general.alignment"), u32(&b, GGUF_U32),
            u32(&b, m == M_ALIGN_0    ? 0
                    : m == M_ALIGN_3  ? 3
                    : m == M_ALIGN_64 ? 64
                                      : 1u << 31);
    if (m == M_ALIGN_NEG) str(&b, "general.alignment"), u32(&b, GGUF_I32), u32(&b, (uint32_t)-32);
    if (m == M_ALIGN_STR) str(&b, "general.alignment"), u32(&b, GGUF_STR), str(&b, "32");

    /* tensor infos */
    uint64_t off_b = m == M_ALIGN_64 ? 64 : 32, off_c = off_b + 32;
    if (m == M_ALIGN_64) off_c = off_b + 64;
    /* a: f32 [4, 2] at 0 */
    str(&b, "a");
    u32(&b, 2);
    if (m == M_NEL_OVERFLOW)
        u64(&b, 1ull << 32), u64(&b, 1ull << 32);
    else if (m == M_BYTES_OVERFLOW)
        u64(&b, 1ull << 62), u64(&b, 1);
    else if (m == M_DIM_NEG)
        u64(&b, UINT64_MAX), u64(&b, 2);
    else
        u64(&b, 4), u64(&b, m == M_DIM_ZERO ? 0 : 2);
    u32(&b, QT_F32);
    u64(&b, m == M_DATA_OFF_MAX ? UINT64_MAX - 31 : 0);
    /* b: f16 [8] */
    if (m == M_DUP_TENSOR)
        str(&b, "a");
    else if (m == M_TNAME_EMPTY)
        str(&b, "");
    else if (m == M_TNAME_CTRL)
        str(&b, "b\tb");
    else
        str(&b, "b");
    u32(&b, m == M_NDIMS_0 ? 0 : m == M_NDIMS_5 ? 5 : 1);
    if (m == M_NDIMS_5)
        for (int i = 0; i < 4; i++)
            u64(&b, 1);
    if (m != M_NDIMS_0) u64(&b, 8);
    u32(&b, m == M_TYPE_99      ? 99
            : m == M_TYPE_4     ? 4
            : m == M_TYPE_IQ4XS ? 23
            : m == M_TYPE_HUGE  ? UINT32_MAX
                                : QT_F16);
    u64(&b, m == M_MISALIGNED ? 40 : m == M_OVERLAP ? 0 : off_b);
    /* c: q8_0 [32, 2] */
    str(&b, "c");
    u32(&b, 2);
    u64(&b, m == M_ROW_BLOCK ? 48 : 32), u64(&b, 2);
    u32(&b, QT_Q8_0);
    u64(&b, m == M_DATA_PAST ? off_c + 32 : off_c);
    if (m == M_NT_PLUS1) { /* the claimed 4th tensor is simply not there */
    }
    pad(&b, align);
    /* data: a distinct byte pattern per tensor */
    for (size_t i = 0; i < A_BYTES; i++)
        u8(&b, (uint8_t)(i + 1));
    pad(&b, align);
    for (size_t i = 0; i < B_BYTES; i++)
        u8(&b, (uint8_t)(0x40 + i));
    pad(&b, align);
    for (size_t i = 0; i < C_BYTES; i++)
        u8(&b, (uint8_t)(0x80 + i));
    if (m == M_DATA_SHORT) b.n -= 1;
    return b;
}

/* Checks everything the standard valid file holds. */
static void check_std(const gguf *g, enum mut m) {
    CHECK_EQ_INT(gguf_version(g), m == M_V2 ? 2 : 3);
    CHECK_EQ_INT(gguf_alignment(g), m == M_ALIGN_64 ? 64 : 32);
    CHECK_EQ_INT(gguf_n_kv(g), m == M_ALIGN_64 ? 20 : 19);
    CHECK_STR(gguf_kv_key(g, 0), "general.architecture");
    CHECK_STR(gguf_get_str(g, "general.architecture", NULL, NULL), "test");
    bool bad = false;
    CHECK_EQ_INT(gguf_get_int(g, "test.u8", -1, &bad), 200);
    CHECK_EQ_INT(gguf_get_int(g, "test.i8", -1, &bad), -100);
    CHECK_EQ_INT(gguf_get_int(g, "test.u16", -1, &bad), 0xf234);
    CHECK_EQ_INT(gguf_get_int(g, "test.i16", -1, &bad), -2);
    CHECK_EQ_INT(gguf_get_int(g, "test.u32", -1, &bad), 4000000000ll);
    CHECK_EQ_INT(gguf_get_int(g, "test.i32", -1, &bad), -7);
    CHECK_EQ_INT(gguf_get_int(g, "test.u64", -1, &bad), 1ll << 62);
    CHECK_EQ_INT(gguf_get_int(g, "test.i64", -1, &bad), -5);
    CHECK_EQ_INT(gguf_get_int(g, "test.b", -1, &bad), 1);
    CHECK(gguf_get_bool(g, "test.b", false, &bad));
    CHECK_NEAR(gguf_get_float(g, "test.f32", 0, &bad), 1.5, 0);
    CHECK_NEAR(gguf_get_float(g, "test.f64", 0, &bad), -2.25, 0);
    CHECK_NEAR(gguf_get_float(g, "test.i32", 0, &bad), -7, 0);
    CHECK(!bad);
    /* defaults and wrong kinds */
    CHECK_EQ_INT(gguf_get_int(g, "test.absent", 77, &bad), 77);
    CHECK(!bad);
    CHECK_EQ_INT(gguf_get_int(g, "test.str", 77, &bad), 77);
    CHECK(bad);
    bad = false;
    CHECK_STR(gguf_get_str(g, "test.u8", "dflt", &bad), "dflt");
    CHECK(bad);
    bad = false;
    CHECK_NEAR(gguf_get_float(g, "test.arr_f32", 3.0, &bad), 3.0, 0);
    CHECK(bad);
    bad = false;
    CHECK(gguf_get_bool(g, "test.str", true, &bad));
    CHECK(bad);
    size_t len = 0;
    int64_t i = gguf_find_key(g, "test.str");
    CHECK_STR(gguf_kv_str(g, i, &len), "hello");
    CHECK_EQ_INT(len, 5);
    CHECK_EQ_INT(gguf_find_key(g, "test.nope"), -1);
    i = gguf_find_key(g, "test.arr_i32");
    CHECK_EQ_INT(gguf_kv_type(g, i), GGUF_ARR);
    CHECK_EQ_INT(gguf_arr_type(g, i), GGUF_I32);
    CHECK_EQ_INT(gguf_arr_len(g, i), 3);
    CHECK_EQ_INT(gguf_arr_int(g, i, 1), -2);
    CHECK_EQ_INT(gguf_arr_int(g, i, 2), 3);
    CHECK_EQ_INT(gguf_arr_int(g, i, 3), 0); /* out of range */
    i = gguf_find_key(g, "test.arr_str");
    CHECK_EQ_INT(gguf_arr_type(g, i), GGUF_STR);
    CHECK_EQ_INT(gguf_arr_len(g, i), 3);
    const char *s = gguf_arr_str(g, i, 1, &len);
    CHECK(s && len == 2 && !memcmp(s, "bc", 2));
    s = gguf_arr_str(g, i, 2, &len);
    CHECK(s && len == 0);
    CHECK(gguf_arr_str(g, i, 3, &len) == NULL);
    i = gguf_find_key(g, "test.arr_f32");
    CHECK_NEAR(gguf_arr_float(g, i, 1), -8.0, 0);
    CHECK_EQ_INT(gguf_arr_len(g, gguf_find_key(g, "test.arr_u8")), 0);
    i = gguf_find_key(g, "test.nested");
    CHECK_EQ_INT(gguf_arr_type(g, i), GGUF_ARR);
    CHECK_EQ_INT(gguf_arr_len(g, i), 2);
    CHECK_EQ_INT(gguf_get_int(g, "test.last", 0, NULL), 42); /* parsing went past the nest */
    CHECK_EQ_INT(gguf_n_tensors(g), 3);
    const gguf_tensor *a = gguf_find_tensor(g, "a"), *b = gguf_find_tensor(g, "b"),
                      *c = gguf_find_tensor(g, "c");
    CHECK(a && b && c && gguf_tensor_at(g, 2) == c && !gguf_find_tensor(g, "d"));
    if (!a || !b || !c) return;
    CHECK_EQ_INT(a->n_dims, 2);
    CHECK_EQ_INT(a->ne[0], 4);
    CHECK_EQ_INT(a->ne[1], 2);
    CHECK_EQ_INT(a->ne[2], 1);
    CHECK_EQ_INT(a->nbytes, A_BYTES);
    CHECK_EQ_INT(b->nbytes, B_BYTES);
    CHECK_EQ_INT(c->nbytes, C_BYTES);
    CHECK_EQ_INT(c->type, QT_Q8_0);
    CHECK_EQ_INT(((const uint8_t *)a->data)[0], 1);
    CHECK_EQ_INT(((const uint8_t *)b->data)[3], 0x43);
    CHECK_EQ_INT(((const uint8_t *)c->data)[C_BYTES - 1], 0x80 + C_BYTES - 1);
    CHECK_EQ_INT((const uint8_t *)c->data + C_BYTES - (const uint8_t *)a->data,
                 (m == M_ALIGN_64 ? 128 : 64) + C_BYTES);
}

static const char *g_write_dir; /* --write-broken DIR: also save each broken file there */

static void save(const char *name, const void *p, size_t n) {
    if (!g_write_dir) return;
    char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", g_write_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n)) {
        fprintf(stderr, "cannot write %s\n", path);
        check_failures++;
    }
    if (f) fclose(f);
}

static int n_broken;

static void test_cases(void) {
    CHECK_EQ_INT(sizeof cases / sizeof cases[0], M_COUNT);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        buf b = make_file(cases[k].m);
        char err[512] = "";
        gguf *g = NULL;
        int rc = gguf_open_mem(&g, b.p, b.n, err, sizeof err);
        if (!cases[k].expect) {
            if (rc) fprintf(stderr, "case '%s' should load: %s\n", cases[k].what, err);
            CHECK_EQ_INT(rc, 0);
            if (g) check_std(g, cases[k].m);
        } else {
            n_broken++;
            if (!rc) fprintf(stderr, "case '%s' loaded but should fail\n", cases[k].what);
            CHECK(rc < 0 && g == NULL);
            if (!strstr(err, cases[k].expect))
                fprintf(stderr, "case '%s': message \"%s\" lacks \"%s\"\n", cases[k].what, err,
                        cases[k].expect);
            CHECK(strstr(err, cases[k].expect) != NULL);
            char name[64];
            snprintf(name, sizeof name, "case%02zu", k);
            save(name, b.p, b.n);
        }
        gguf_close(g);
        free(b.p);
    }
}

/* Every proper prefix of the valid file must be rejected with a message, never read past len. */
static void test_truncations(void) {
    buf b = make_file(M_NONE);
    for (size_t len = 0; len < b.n; len++) {
        /* a fresh exact-size copy so ASan catches any read past len */
        uint8_t *p = malloc(len ? len : 1);
        memcpy(p, b.p, len);
        char err[512] = "";
        gguf *g = NULL;
        int rc = gguf_open_mem(&g, p, len, err, sizeof err);
        n_broken++;
        if (rc == 0) fprintf(stderr, "truncation to %zu bytes loaded\n", len);
        CHECK(rc < 0 && g == NULL);
        CHECK(err[0] != 0);
        CHECK(strstr(err, "truncated") || strstr(err, "past file size") || strstr(err, "left") ||
              strstr(err, "too small"));
        /* shorter than the 24-byte header: said so, whatever part of it is there */
        if (len < 24) CHECK(strstr(err, "too small for a GGUF header (24 bytes)") != NULL);
        if (len >= 24 && len < 200) CHECK(strstr(err, "past file size") == NULL);
        if (g_write_dir && (len < 64 || len % 37 == 0 || len + 1 == b.n)) {
            char name[64];
            snprintf(name, sizeof name, "trunc%04zu", len);
            save(name, p, len);
        }
        gguf_close(g);
        free(p);
    }
    free(b.p);
}

/* Random byte flips of the valid file: must never crash; loads or fails with a message. */
static void test_flips(void) {
    buf b = make_file(M_NONE);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int fails = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t *p = malloc(b.n);
        memcpy(p, b.p, b.n);
        int nflip = 1 + it % 3;
        for (int k = 0; k < nflip; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            p[(s >> 8) % b.n] ^= (uint8_t)(1u << (s % 8));
        }
        char err[512] = "";
        gguf *g = NULL;
        if (gguf_open_mem(&g, p, b.n, err, sizeof err)) {
            CHECK(err[0] != 0);
            fails++;
        } else {
            /* walk everything a consumer might touch */
            for (int64_t i = 0; i < gguf_n_kv(g); i++) {
                size_t len;
                (void)gguf_kv_str(g, i, &len);
                for (uint64_t j = 0; j < gguf_arr_len(g, i) && j < 8; j++) {
                    (void)gguf_arr_int(g, i, j);
                    (void)gguf_arr_str(g, i, j, &len);
                }
            }
            for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
                const gguf_tensor *t = gguf_tensor_at(g, i);
                volatile uint8_t x = ((const uint8_t *)t->data)[t->nbytes - 1];
                (void)x;
            }
        }
        gguf_close(g);
        free(p);
    }
    CHECK(fails > 1000); /* most flips in the header break something */
    free(b.p);
}

/* ------------------------------------------------------------ writer */

static int fill_pattern(void *ctx, void *dst, size_t n) {
    uint8_t seed = *(uint8_t *)ctx;
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)dst)[i] = (uint8_t)(seed + i * 7);
    return 0;
}
static int fill_fail(void *ctx, void *dst, size_t n) {
    (void)ctx, (void)dst, (void)n;
    return -1;
}

static void tmp_path(char *out, size_t n, const char *name) {
    const char *d = getenv("TMPDIR");
    snprintf(out, n, "%s/%s.%ld", d && *d ? d : "/tmp", name, (long)getpid());
}

static void test_writer(size_t alignment) {
    gguf_writer *w = gguf_writer_new();
    if (alignment != GGUF_DEFAULT_ALIGNMENT) gguf_writer_set_alignment(w, alignment);
    CHECK_EQ_INT(gguf_writer_set_int(w, "w.u8", GGUF_U8, 255), 0);
    CHECK_EQ_INT(gguf_writer_set_int(w, "w.i8", GGUF_I8, -128), 0);
    CHECK_EQ_INT(gguf_writer_set_int(w, "w.u16", GGUF_U16, 65535), 0);
    CHECK_EQ_INT(gguf_writer_set_int(w, "w.i16", GGUF_I16, -32768), 0);
    CHECK_EQ_INT(gguf_writer_set_int(w, "w.u32", GGUF_U32, 4294967295ll), 0);
    CHECK_EQ_INT(gguf_writer_set_int(w, "w.i32", GGUF_I32, INT32_MIN), 0);
    CHECK_EQ_INT(gguf_writer_set_int(w, "w.u64", GGUF_U64, INT64_MAX), 0);
    CHECK_EQ_INT(gguf_writer_set_int(w, "w.i64", GGUF_I64, INT64_MIN), 0);
    CHECK_EQ_INT(gguf_writer_set_float(w, "w.f32", GGUF_F32, 0.1), 0);
    CHECK_EQ_INT(gguf_writer_set_float(w, "w.f64", GGUF_F64, 0.1), 0);
    CHECK_EQ_INT(gguf_writer_set_bool(w, "w.bool", true), 0);
    CHECK_EQ_INT(gguf_writer_set_str(w, "w.str", "first"), 0);
    CHECK_EQ_INT(gguf_writer_set_str(w, "w.str", "h\xc3\xa9llo"), 0); /* replaces */
    CHECK_EQ_INT(gguf_writer_set_str(w, "w.empty", ""), 0);
    int16_t a16[5] = {-1, 2, -3, 4, 32767};
    CHECK_EQ_INT(gguf_writer_set_arr(w, "w.arr_i16", GGUF_I16, a16, 5), 0);
    double a64[2] = {1e300, -0.5};
    CHECK_EQ_INT(gguf_writer_set_arr(w, "w.arr_f64", GGUF_F64, a64, 2), 0);
    uint8_t bools[3] = {1, 0, 1};
    CHECK_EQ_INT(gguf_writer_set_arr(w, "w.arr_bool", GGUF_BOOL, bools, 3), 0);
    CHECK_EQ_INT(gguf_writer_set_arr(w, "w.arr_empty", GGUF_U32, NULL, 0), 0);
    const char *strs[3] = {"x", "with\0nul", ""};
    size_t lens[3] = {1, 8, 0};
    CHECK_EQ_INT(gguf_writer_set_arr_str(w, "w.arr_str", strs, lens, 3), 0);
    /* tensors of several types */
    float f32[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    int64_t ne_f32[2] = {3, 2};
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t.f32", QT_F32, 2, ne_f32, f32, sizeof f32), 0);
    uint16_t f16[4] = {0x3c00, 0xc000, 0, 0x7bff};
    int64_t ne_f16[1] = {4};
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t.f16", QT_F16, 1, ne_f16, f16, sizeof f16), 0);
    uint8_t q8[34 * 3];
    for (size_t i = 0; i < sizeof q8; i++)
        q8[i] = (uint8_t)(i * 13);
    int64_t ne_q8[3] = {32, 3, 1};
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t.q8_0", QT_Q8_0, 3, ne_q8, q8, sizeof q8), 0);
    uint8_t seed = 5;
    int64_t ne_q4k[4] = {256, 2, 1, 1};
    size_t q4k_bytes = quant_row_size(QT_Q4_K, 256) * 2;
    CHECK(q4k_bytes > 0);
    CHECK_EQ_INT(gguf_writer_add_tensor_fill(w, "t.q4_K", QT_Q4_K, 4, ne_q4k, fill_pattern, &seed),
                 0);
    /* a multi-page tensor filled in place at an offset that is not page-aligned */
    uint8_t seed2 = 9;
    int64_t ne_big[2] = {1000, 300};
    CHECK_EQ_INT(gguf_writer_add_tensor_fill(w, "t.big", QT_F32, 2, ne_big, fill_pattern, &seed2),
                 0);
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "writer.gguf");
    CHECK_EQ_INT(gguf_writer_write(w, path, err, sizeof err), 0);
    if (err[0]) fprintf(stderr, "write: %s\n", err);
    gguf_writer_free(w);

    gguf *g = NULL;
    CHECK_EQ_INT(gguf_open(&g, path, err, sizeof err), 0);
    if (!g) {
        fprintf(stderr, "reopen: %s\n", err);
        return;
    }
    CHECK_EQ_INT(gguf_version(g), 3);
    CHECK_EQ_INT(gguf_alignment(g), alignment);
    CHECK_EQ_INT(gguf_n_kv(g), 18 + (alignment != GGUF_DEFAULT_ALIGNMENT));
    CHECK_EQ_INT(gguf_get_int(g, "w.u8", 0, NULL), 255);
    CHECK_EQ_INT(gguf_kv_type(g, gguf_find_key(g, "w.u8")), GGUF_U8);
    CHECK_EQ_INT(gguf_get_int(g, "w.i8", 0, NULL), -128);
    CHECK_EQ_INT(gguf_kv_type(g, gguf_find_key(g, "w.i8")), GGUF_I8);
    CHECK_EQ_INT(gguf_get_int(g, "w.u16", 0, NULL), 65535);
    CHECK_EQ_INT(gguf_get_int(g, "w.i16", 0, NULL), -32768);
    CHECK_EQ_INT(gguf_get_int(g, "w.u32", 0, NULL), 4294967295ll);
    CHECK_EQ_INT(gguf_get_int(g, "w.i32", 0, NULL), INT32_MIN);
    CHECK_EQ_INT(gguf_get_int(g, "w.u64", 0, NULL), INT64_MAX);
    CHECK_EQ_INT(gguf_kv_type(g, gguf_find_key(g, "w.u64")), GGUF_U64);
    CHECK_EQ_INT(gguf_get_int(g, "w.i64", 0, NULL), INT64_MIN);
    CHECK_NEAR(gguf_get_float(g, "w.f32", 0, NULL), (double)0.1f, 0);
    CHECK_NEAR(gguf_get_float(g, "w.f64", 0, NULL), 0.1, 0);
    CHECK_EQ_INT(gguf_kv_type(g, gguf_find_key(g, "w.f64")), GGUF_F64);
    CHECK(gguf_get_bool(g, "w.bool", false, NULL));
    CHECK_STR(gguf_get_str(g, "w.str", NULL, NULL), "h\xc3\xa9llo");
    CHECK_STR(gguf_get_str(g, "w.empty", NULL, NULL), "");
    int64_t i = gguf_find_key(g, "w.arr_i16");
    CHECK_EQ_INT(gguf_arr_type(g, i), GGUF_I16);
    CHECK_EQ_INT(gguf_arr_len(g, i), 5);
    for (int j = 0; j < 5; j++)
        CHECK_EQ_INT(gguf_arr_int(g, i, (uint64_t)j), a16[j]);
    i = gguf_find_key(g, "w.arr_f64");
    CHECK_NEAR(gguf_arr_float(g, i, 0), 1e300, 0);
    CHECK_NEAR(gguf_arr_float(g, i, 1), -0.5, 0);
    i = gguf_find_key(g, "w.arr_bool");
    CHECK_EQ_INT(gguf_arr_type(g, i), GGUF_BOOL);
    CHECK_EQ_INT(gguf_arr_int(g, i, 1), 0);
    CHECK_EQ_INT(gguf_arr_int(g, i, 2), 1);
    CHECK_EQ_INT(gguf_arr_len(g, gguf_find_key(g, "w.arr_empty")), 0);
    i = gguf_find_key(g, "w.arr_str");
    size_t len = 0;
    const char *s = gguf_arr_str(g, i, 1, &len);
    CHECK(s && len == 8 && !memcmp(s, "with\0nul", 8));
    s = gguf_arr_str(g, i, 2, &len);
    CHECK(s && len == 0);
    const gguf_tensor *t = gguf_find_tensor(g, "t.f32");
    CHECK(t && t->type == QT_F32 && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 2 &&
          !memcmp(t->data, f32, sizeof f32));
    t = gguf_find_tensor(g, "t.f16");
    CHECK(t && t->n_dims == 1 && t->nbytes == sizeof f16 && !memcmp(t->data, f16, sizeof f16));
    t = gguf_find_tensor(g, "t.q8_0");
    CHECK(t && t->n_dims == 3 && t->ne[2] == 1 && !memcmp(t->data, q8, sizeof q8));
    t = gguf_find_tensor(g, "t.q4_K");
    CHECK(t && t->n_dims == 4 && t->nbytes == q4k_bytes);
    if (t) {
        uint8_t *want = malloc(q4k_bytes);
        fill_pattern(&seed, want, q4k_bytes);
        CHECK(!memcmp(t->data, want, q4k_bytes));
        free(want);
    }
    t = gguf_find_tensor(g, "t.big");
    CHECK(t && t->nbytes == 1200000 && gguf_n_tensors(g) == 5);
    if (t) {
        uint8_t *want = malloc(t->nbytes);
        fill_pattern(&seed2, want, t->nbytes);
        CHECK(!memcmp(t->data, want, t->nbytes));
        free(want);
    }
    for (int64_t k = 0; k < gguf_n_tensors(g); k++)
        CHECK_EQ_INT(gguf_tensor_at(g, k)->offset % alignment, 0);
    CHECK_EQ_INT(gguf_file_size(g) % alignment, 0);
    gguf_close(g);
    unlink(path);
}

static void test_writer_errors(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "writer-bad.gguf");
    int64_t ne[2] = {33, 1};
    uint8_t data[33 * 4] = {0};
    /* each bad call is refused, and the writer then refuses to write */
    struct {
        int which;
    } k[] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}};
    for (size_t c = 0; c < sizeof k / sizeof k[0]; c++) {
        gguf_writer *w = gguf_writer_new();
        int rc = 0;
        switch (k[c].which) {
        case 0:
            rc = gguf_writer_set_int(w, "x", GGUF_U8, 256);
            break;
        case 1:
            rc = gguf_writer_set_int(w, "", GGUF_U8, 1);
            break;
        case 2:
            rc = gguf_writer_add_tensor(w, "q", QT_Q8_0, 2, ne, data, 34);
            break;
        case 3:
            rc = gguf_writer_add_tensor(w, "q", 99, 1, ne, data, 33);
            break;
        case 4:
            CHECK_EQ_INT(gguf_writer_add_tensor(w, "d", QT_F32, 1, ne, data, 33 * 4), 0);
            rc = gguf_writer_add_tensor(w, "d", QT_F32, 1, ne, data, 33 * 4);
            break;
        case 5:
            rc = gguf_writer_set_float(w, "f", GGUF_I32, 1.0);
            break;
        case 6:
            rc = gguf_writer_set_int(w, "general.alignment", GGUF_U32, 48);
            break;
        case 7:
            rc = gguf_writer_set_arr(w, "a", GGUF_STR, data, 1);
            break;
        /* general.alignment that is not an integer: gguf_open would refuse the file */
        case 8:
            rc = gguf_writer_set_float(w, "general.alignment", GGUF_F32, 64);
            break;
        case 9:
            rc = gguf_writer_set_str(w, "general.alignment", "64");
            break;
        case 10:
            rc = gguf_writer_set_bool(w, "general.alignment", true);
            break;
        case 11:
            rc = gguf_writer_set_int(w, "general.alignment", GGUF_BOOL, 1);
            break;
        case 12: /* tensor names follow the key rules: printable ASCII */
            rc = gguf_writer_add_tensor(w, "bad\tname", QT_F32, 1, ne, data, 33 * 4);
            break;
        }
        CHECK(rc < 0);
        err[0] = 0;
        CHECK(gguf_writer_write(w, path, err, sizeof err) < 0);
        CHECK(err[0] != 0);
        gguf_writer_free(w);
        CHECK(access(path, F_OK) != 0);
    }
    /* a failing fill callback aborts the write and leaves nothing behind */
    gguf_writer *w = gguf_writer_new();
    int64_t ne1[1] = {8};
    CHECK_EQ_INT(gguf_writer_add_tensor_fill(w, "t", QT_F32, 1, ne1, fill_fail, NULL), 0);
    CHECK(gguf_writer_write(w, path, err, sizeof err) < 0);
    CHECK(strstr(err, "tensor 't'") != NULL);
    CHECK(access(path, F_OK) != 0);
    gguf_writer_free(w);
    gguf_writer_free(NULL);
    gguf_close(NULL);
}

/* Copies every key and tensor of a reference file, rewrites it and compares everything. */
static void test_roundtrip_file(const char *src) {
    char err[512] = "", path[512];
    gguf *g = NULL;
    CHECK_EQ_INT(gguf_open(&g, src, err, sizeof err), 0);
    if (!g) {
        fprintf(stderr, "%s: %s\n", src, err);
        return;
    }
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_alignment(w, gguf_alignment(g));
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        CHECK_EQ_INT(gguf_writer_copy_kv(w, g, i), 0);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        CHECK_EQ_INT(
            gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes), 0);
    }
    tmp_path(path, sizeof path, "roundtrip.gguf");
    CHECK_EQ_INT(gguf_writer_write(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
    gguf *h = NULL;
    CHECK_EQ_INT(gguf_open(&h, path, err, sizeof err), 0);
    if (h) {
        CHECK_EQ_INT(gguf_n_kv(h), gguf_n_kv(g));
        CHECK_EQ_INT(gguf_n_tensors(h), gguf_n_tensors(g));
        for (int64_t i = 0; i < gguf_n_kv(g) && i < gguf_n_kv(h); i++) {
            CHECK_STR(gguf_kv_key(h, i), gguf_kv_key(g, i));
            CHECK_EQ_INT(gguf_kv_type(h, i), gguf_kv_type(g, i));
            CHECK_EQ_INT(gguf_arr_len(h, i), gguf_arr_len(g, i));
            CHECK_EQ_INT(gguf_kv_int(h, i), gguf_kv_int(g, i));
            CHECK_NEAR(gguf_kv_float(h, i), gguf_kv_float(g, i), 0);
            size_t la = 0, lb = 0;
            const char *sa = gguf_kv_str(g, i, &la), *sb = gguf_kv_str(h, i, &lb);
            CHECK(la == lb && (!sa || !memcmp(sa, sb, la)));
            for (uint64_t j = 0; j < gguf_arr_len(g, i); j++) {
                sa = gguf_arr_str(g, i, j, &la);
                sb = gguf_arr_str(h, i, j, &lb);
                if (la != lb || (sa && memcmp(sa, sb, la)) ||
                    gguf_arr_int(g, i, j) != gguf_arr_int(h, i, j)) {
                    CHECK(!"array element differs");
                    break;
                }
            }
        }
        for (int64_t i = 0; i < gguf_n_tensors(g) && i < gguf_n_tensors(h); i++) {
            const gguf_tensor *a = gguf_tensor_at(g, i), *b = gguf_tensor_at(h, i);
            CHECK_STR(a->name, b->name);
            CHECK(a->type == b->type && a->n_dims == b->n_dims && a->offset == b->offset &&
                  a->nbytes == b->nbytes && !memcmp(a->ne, b->ne, sizeof a->ne));
            CHECK(!memcmp(a->data, b->data, a->nbytes));
        }
        gguf_close(h);
    }
    /* llama.cpp lays files out exactly as we do: the rewrite is byte-identical */
    size_t na = 0, nb = 0;
    uint8_t *pa = check_slurp(src, &na), *pb = check_slurp(path, &nb);
    CHECK(pa && pb);
    CHECK_EQ_INT(na, nb);
    if (pa && pb && na == nb && memcmp(pa, pb, na)) {
        fprintf(stderr, "%s: rewrite differs from the original\n", src);
        check_failures++;
    }
    free(pa);
    free(pb);
    gguf_close(g);
    unlink(path);
}

/* The hand-built file (every value type, a nested array) survives copy + rewrite: nested
 * arrays are copied verbatim and everything reads back the same. */
static void test_copy_std(void) {
    buf b = make_file(M_NONE);
    char err[512] = "", path[512];
    gguf *g = NULL;
    CHECK_EQ_INT(gguf_open_mem(&g, b.p, b.n, err, sizeof err), 0);
    if (!g) return;
    gguf_writer *w = gguf_writer_new();
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        CHECK_EQ_INT(gguf_writer_copy_kv(w, g, i), 0);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        CHECK_EQ_INT(
            gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes), 0);
    }
    tmp_path(path, sizeof path, "copy-std.gguf");
    CHECK_EQ_INT(gguf_writer_write(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
    gguf *h = NULL;
    CHECK_EQ_INT(gguf_open(&h, path, err, sizeof err), 0);
    if (h) {
        check_std(h, M_NONE);
        /* the metadata bytes are identical; only the trailing padding after 'c' differs */
        size_t n = 0;
        uint8_t *p = check_slurp(path, &n);
        CHECK(p && n >= b.n && !memcmp(p, b.p, b.n));
        free(p);
    }
    gguf_close(h);
    gguf_close(g);
    unlink(path);
    free(b.p);
}

static void test_open_errors(void) {
    char err[512] = "";
    gguf *g = NULL;
    CHECK(gguf_open(&g, "/nonexistent/x.gguf", err, sizeof err) < 0);
    CHECK(strstr(err, "/nonexistent/x.gguf") != NULL);
    CHECK(gguf_open(&g, "tests", err, sizeof err) < 0);
    CHECK(strstr(err, "not a regular file") != NULL);
    char path[512];
    tmp_path(path, sizeof path, "empty.gguf");
    FILE *f = fopen(path, "wb");
    if (f) fclose(f);
    CHECK(gguf_open(&g, path, err, sizeof err) < 0);
    CHECK(strstr(err, "too small") != NULL);
    /* the check is the size the message states: 23 bytes of a header are refused as too small */
    f = fopen(path, "wb");
    if (f) {
        static const unsigned char hdr[23] = {'G', 'G', 'U', 'F', 3};
        fwrite(hdr, 1, sizeof hdr, f);
        fclose(f);
    }
    CHECK(gguf_open(&g, path, err, sizeof err) < 0);
    CHECK(strstr(err, "file size 23 is too small for a GGUF header (24 bytes)") != NULL);
    unlink(path);
    /* a valid small file from disk loads through the mmap path too */
    buf b = make_file(M_NONE);
    tmp_path(path, sizeof path, "std.gguf");
    f = fopen(path, "wb");
    if (f) {
        fwrite(b.p, 1, b.n, f);
        fclose(f);
    }
    CHECK_EQ_INT(gguf_open(&g, path, err, sizeof err), 0);
    if (g) check_std(g, M_NONE);
    gguf_close(g);
    unlink(path);
    free(b.p);
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--write-broken")) g_write_dir = argv[i + 1];
    if (g_write_dir) mkdir(g_write_dir, 0755);
    test_cases();
    test_truncations();
    if (g_write_dir) { /* only writing files for the e2e script */
        printf("wrote %d broken files to %s\n", n_broken, g_write_dir);
        return check_done("test_gguf --write-broken");
    }
    CHECK(n_broken >= 40);
    test_flips();
    test_open_errors();
    test_writer(GGUF_DEFAULT_ALIGNMENT);
    test_writer(64);
    test_writer(4096);
    test_writer_errors();
    test_copy_std();
    static const char *models[] = {"mini-F16",    "mini-BF16",   "mini-Q8_0", "mini-Q4_0",
                                   "mini-Q4_K_M", "mini-Q5_K_M", "mini-Q6_K"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "tests/data/models/%s.gguf", models[i]);
        test_roundtrip_file(p);
    }
    printf("%d broken files rejected\n", n_broken);
    return check_done("test_gguf");
}
