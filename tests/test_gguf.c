/* format/gguf.c: GGUF parsing and header building.
 *
 * Truth: the GGUF spec (docs/GGUF.md) for crafted files, and the GGUF files that
 * llama.cpp's own tools wrote (../shared/gguf) for real ones.
 * With LLMPACK_WRITE_CORPUS=DIR the crafted files are also written to DIR
 * (that is how tests/fuzz/corpus_gguf was seeded).
 */
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../format/lpk_internal.h"

/* ---------------------------------------------------------------- file builder */
typedef tu_buf fb;
static void fb_le(fb *b, uint64_t v, unsigned n)
{
    uint8_t t[8];
    for (unsigned i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    tu_buf_put(b, t, n);
}
static void fb_u32(fb *b, uint32_t v) { fb_le(b, v, 4); }
static void fb_u64(fb *b, uint64_t v) { fb_le(b, v, 8); }
static void fb_str(fb *b, const char *s) { fb_u64(b, strlen(s)); tu_buf_put(b, s, strlen(s)); }
static void fb_pad(fb *b, size_t align) { while (b->n % align) tu_buf_put(b, "", 1); }
static void fb_kv_u32(fb *b, const char *k, uint32_t v) { fb_str(b, k); fb_u32(b, LPK_V_U32); fb_u32(b, v); }
static void fb_kv_str(fb *b, const char *k, const char *v) { fb_str(b, k); fb_u32(b, LPK_V_STR); fb_str(b, v); }

typedef struct tinfo {
    const char *name;
    uint32_t nd;
    uint64_t ne[4]; /* GGML order */
    uint32_t type;
    uint64_t off;
} tinfo;

static void fb_tensor(fb *b, const tinfo *t)
{
    fb_str(b, t->name);
    fb_u32(b, t->nd);
    for (uint32_t i = 0; i < t->nd; i++) fb_u64(b, t->ne[i < 4 ? i : 0]);
    fb_u32(b, t->type);
    fb_u64(b, t->off);
}

/* A small valid file: 3 keys, two tensors "a" f32 ne (3,2) at 0 and "b" q8_0
 * ne (32,1) at 32, then 32 + 34 bytes of data. */
static const tinfo good_t[2] = {
    {"a", 2, {3, 2}, LPK_TYPE_F32, 0},
    {"b", 2, {32, 1}, LPK_TYPE_Q8_0, 32},
};

static fb good_file(void)
{
    fb b = {0};
    tu_buf_put(&b, "GGUF", 4);
    fb_u32(&b, 3);
    fb_u64(&b, 2);
    fb_u64(&b, 3);
    fb_kv_str(&b, "general.architecture", "llama");
    fb_kv_u32(&b, "llama.block_count", 1);
    fb_str(&b, "tokenizer.ggml.tokens");
    fb_u32(&b, LPK_V_ARR);
    fb_u32(&b, LPK_V_STR);
    fb_u64(&b, 2);
    fb_str(&b, "<s>");
    fb_str(&b, "");
    for (int i = 0; i < 2; i++) fb_tensor(&b, &good_t[i]);
    fb_pad(&b, 32);
    for (int i = 0; i < 32 + 34; i++) tu_buf_put(&b, &(uint8_t){(uint8_t)i}, 1);
    return b;
}

static int parse(const fb *b, lpk_meta **meta, lpk_tensor **t, size_t *nt, lpk_error *err)
{
    lpk_error_clear(err);
    *meta = lpk_meta_new();
    uint32_t v = 0;
    int st = gguf_parse(b->p, b->n, "x.gguf", *meta, t, nt, &v, err);
    if (st) assert_int_equal(err->status, st);
    return st;
}

static void save_corpus(const char *name, const fb *b)
{
    const char *dir = getenv("LLMPACK_WRITE_CORPUS");
    if (!dir || !*dir) return;
    char *p = tu_fmt("%s/%s", dir, name);
    tu_write_file(p, b->p, b->n);
    free(p);
}

/* Parses b, expects status st and msg in the message; frees b. */
static void expect_bad(fb *b, const char *corpus_name, int st, const char *msg)
{
    lpk_meta *m;
    lpk_tensor *t = (lpk_tensor *)1;
    size_t nt = 7;
    lpk_error err;
    save_corpus(corpus_name, b);
    int got = parse(b, &m, &t, &nt, &err);
    if (got != st || !strstr(err.msg, msg))
        fail_msg("%s: got %s '%s', want %s '%s'", corpus_name, lpk_status_name(got), err.msg,
                 lpk_status_name(st), msg);
    assert_null(t);
    assert_int_equal(nt, 0);
    lpk_meta_free(m);
    free(b->p);
}

/* ---------------------------------------------------------------- tests */
static void test_good_small(void **state)
{
    (void)state;
    fb b = good_file();
    save_corpus("good_small.gguf", &b);
    lpk_meta *m;
    lpk_tensor *t;
    size_t nt;
    lpk_error err;
    assert_int_equal(parse(&b, &m, &t, &nt, &err), LPK_OK);
    assert_int_equal(nt, 2);
    assert_string_equal(lpk_meta_get_str(m, "general.architecture"), "llama");
    const lpk_kv *kv = lpk_meta_find(m, "tokenizer.ggml.tokens");
    assert_int_equal(kv->count, 2);
    assert_int_equal(lpk_kv_str_at(kv, 1).n, 0);
    assert_string_equal(t[0].name, "a");
    assert_int_equal(t[0].n_dims, 2);
    assert_int_equal(t[0].dims[0], 2); /* outermost first */
    assert_int_equal(t[0].dims[1], 3);
    assert_int_equal(t[0].size, 24);
    assert_int_equal(t[0].offset % 32, 0);
    assert_int_equal(t[1].offset, t[0].offset + 32);
    assert_int_equal(t[1].size, 34);
    assert_int_equal(t[1].type, LPK_TYPE_Q8_0);
    assert_int_equal(t[0].has_xxh3, 0);
    assert_ptr_equal(t[1].data, b.p + t[1].offset);
    assert_int_equal(t[1].offset + t[1].size, b.n);
    free(t);
    lpk_meta_free(m);

    /* every proper prefix is truncated, never a crash or a success */
    for (size_t n = 0; n < b.n; n++) {
        fb c = {b.p, n, n};
        lpk_meta *m2;
        lpk_tensor *t2;
        size_t nt2;
        int st = parse(&c, &m2, &t2, &nt2, &err);
        if (st != LPK_ETRUNC) fail_msg("prefix %zu: %s %s", n, lpk_status_name(st), err.msg);
        lpk_meta_free(m2);
    }
    free(b.p);
}

/* Header of a file with the given counts; the caller appends kvs and infos. */
static fb head(uint32_t version, uint64_t n_t, uint64_t n_kv)
{
    fb b = {0};
    tu_buf_put(&b, "GGUF", 4);
    fb_u32(&b, version);
    fb_u64(&b, n_t);
    fb_u64(&b, n_kv);
    return b;
}

/* A file with one key (general.alignment = align unless 0) and the given tensors,
 * padded and followed by data_size bytes. */
static fb with_tensors(uint32_t align, const tinfo *t, int n, size_t data_size)
{
    fb b = head(3, (uint64_t)n, align ? 1 : 0);
    if (align) fb_kv_u32(&b, "general.alignment", align);
    for (int i = 0; i < n; i++) fb_tensor(&b, &t[i]);
    fb_pad(&b, align && (align & (align - 1)) == 0 ? align : 32);
    for (size_t i = 0; i < data_size; i++) tu_buf_put(&b, "\x55", 1);
    return b;
}

static void test_bad_header(void **state)
{
    (void)state;
    fb b = head(1, 0, 0);
    expect_bad(&b, "v1.gguf", LPK_EUNSUPPORTED, "GGUF version 1 is not supported");
    b = head(4, 0, 0);
    expect_bad(&b, "v4.gguf", LPK_EUNSUPPORTED, "version 4");
    b = head(0x03000000u, 0, 0);
    expect_bad(&b, "bigendian.gguf", LPK_EUNSUPPORTED, "big-endian");
    b = head(3, 0, 0);
    memcpy(b.p, "GGML", 4);
    expect_bad(&b, "magic.gguf", LPK_ECORRUPT, "not a GGUF file");
    b = head(3, 0, 1ull << 40);
    expect_bad(&b, "huge_kv_count.gguf", LPK_ETRUNC, "1099511627776 metadata keys declared");
    b = head(3, 1ull << 40, 0);
    expect_bad(&b, "huge_tensor_count.gguf", LPK_ETRUNC, "1099511627776 tensors declared");
    /* a vocabulary-only file (no tensors) may end right after its keys */
    b = head(3, 0, 1);
    fb_kv_str(&b, "general.name", "x");
    lpk_meta *m;
    lpk_tensor *t;
    size_t nt;
    lpk_error err;
    assert_int_equal(parse(&b, &m, &t, &nt, &err), LPK_OK);
    assert_int_equal(nt, 0);
    free(t);
    lpk_meta_free(m);
    free(b.p);
}

/* A file with one key whose value starts right after the type. */
static fb one_key(const char *key, uint32_t type)
{
    fb b = head(3, 0, 1);
    fb_str(&b, key);
    fb_u32(&b, type);
    return b;
}

static void test_bad_kv(void **state)
{
    (void)state;
    fb b = head(3, 0, 1);
    fb_u64(&b, 1ull << 60);
    tu_buf_put(&b, "general.name", 12);
    expect_bad(&b, "huge_key_len.gguf", LPK_ETRUNC, "declares 1152921504606846976 bytes");

    b = one_key("general.name", LPK_V_STR);
    fb_u64(&b, 1ull << 60);
    tu_buf_put(&b, "abcd", 4);
    expect_bad(&b, "huge_str_len.gguf", LPK_ETRUNC, "declares 1152921504606846976 bytes");

    b = one_key("tokenizer.ggml.scores", LPK_V_ARR);
    fb_u32(&b, LPK_V_F32);
    fb_u64(&b, 1ull << 40);
    tu_buf_put(&b, "abcdefgh", 8);
    expect_bad(&b, "huge_arr.gguf", LPK_ETRUNC, "declares 1099511627776 f32 values");

    b = one_key("tokenizer.ggml.tokens", LPK_V_ARR);
    fb_u32(&b, LPK_V_STR);
    fb_u64(&b, 1ull << 62);
    fb_str(&b, "a");
    expect_bad(&b, "huge_str_arr.gguf", LPK_ETRUNC, "declares 4611686018427387904 strings");

    b = one_key("x.nested", LPK_V_ARR);
    fb_u32(&b, LPK_V_ARR);
    fb_u64(&b, 1);
    fb_u32(&b, LPK_V_U8);
    fb_u64(&b, 0);
    expect_bad(&b, "nested.gguf", LPK_EUNSUPPORTED, "nested arrays");

    b = one_key("x.bad", 13);
    fb_u32(&b, 0);
    expect_bad(&b, "vtype.gguf", LPK_ECORRUPT, "unknown value type 13");

    b = one_key("x.flag", LPK_V_BOOL);
    tu_buf_put(&b, "\x02", 1);
    expect_bad(&b, "bool.gguf", LPK_ECORRUPT, "bool value 2");

    b = head(3, 0, 2);
    fb_kv_u32(&b, "llama.block_count", 1);
    fb_kv_u32(&b, "llama.block_count", 2);
    expect_bad(&b, "dupkey.gguf", LPK_ECORRUPT, "duplicate metadata key 'llama.block_count'");

    b = head(3, 0, 1);
    fb_kv_u32(&b, "", 1);
    expect_bad(&b, "emptykey.gguf", LPK_ECORRUPT, "empty key");

    b = head(3, 0, 1);
    fb_kv_str(&b, "general.alignment", "32");
    expect_bad(&b, "align_str.gguf", LPK_ECORRUPT, "general.alignment has type str");
}

static void test_bad_tensors(void **state)
{
    (void)state;
    fb b;
    b = with_tensors(48, good_t, 2, 66);
    expect_bad(&b, "align48.gguf", LPK_ECORRUPT, "general.alignment 48 is not a power of two");
    b = with_tensors(0, good_t, 2, 66);
    lpk_meta *m;
    lpk_tensor *t;
    size_t nt;
    lpk_error err;
    assert_int_equal(parse(&b, &m, &t, &nt, &err), LPK_OK); /* default alignment 32 */
    free(t);
    lpk_meta_free(m);
    free(b.p);
    /* alignment 0: keep the 32-byte layout so only the key is wrong */
    b = head(3, 0, 1);
    fb_kv_u32(&b, "general.alignment", 0);
    expect_bad(&b, "align0.gguf", LPK_ECORRUPT, "general.alignment 0 is not a power of two");

    tinfo x[2] = {good_t[0], good_t[1]};
    x[1].off = 36;
    b = with_tensors(32, x, 2, 100);
    expect_bad(&b, "misaligned.gguf", LPK_ECORRUPT,
               "tensor 'b': data offset 36 is not a multiple of the alignment 32");

    x[1] = good_t[1];
    x[1].type = 77;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "type77.gguf", LPK_EUNSUPPORTED, "tensor 'b': unknown GGML type id 77");
    x[1].type = 16;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "type_iq2xxs.gguf", LPK_EUNSUPPORTED,
               "tensor 'b': GGML type 16 (iq2_xxs) is not");
    x[1].type = LPK_TYPE_Q8_K;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "type_q8k.gguf", LPK_EUNSUPPORTED, "GGML type 15 (q8_k)");

    x[1] = good_t[1];
    x[1].off = 0; /* both at 0 */
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "overlap.gguf", LPK_ECORRUPT, "overlap");

    x[1] = good_t[1];
    x[1].off = 64;
    b = with_tensors(32, x, 2, 66); /* 'b' would end at 98 */
    expect_bad(&b, "past_eof.gguf", LPK_ETRUNC, "tensor 'b': data at");
    x[1].off = 1ull << 62;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "far_offset.gguf", LPK_ETRUNC, "extends past the end of the file");

    x[1] = good_t[1];
    x[1].name = "a";
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "dupname.gguf", LPK_ECORRUPT, "duplicate tensor name 'a'");

    x[1] = good_t[1];
    x[1].ne[0] = 16;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "rowblock.gguf", LPK_ECORRUPT,
               "tensor 'b': row length 16 is not a multiple of the q8_0 block size 32");

    x[1] = good_t[1];
    x[1].nd = 5;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "ndims5.gguf", LPK_EUNSUPPORTED, "tensor 'b': 5 dimensions");
    x[1].nd = 0;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "ndims0.gguf", LPK_ECORRUPT, "tensor 'b': 0 dimensions");

    x[1] = good_t[1];
    x[1].ne[0] = 1ull << 40;
    x[1].ne[1] = 1ull << 40;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "nelem_overflow.gguf", LPK_ECORRUPT, "tensor 'b': element count overflows");
    x[1].ne[0] = UINT64_MAX;
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "negdim.gguf", LPK_ECORRUPT, "is negative");

    x[1] = good_t[1];
    x[1].name = "";
    b = with_tensors(32, x, 2, 66);
    expect_bad(&b, "emptyname.gguf", LPK_ECORRUPT, "empty tensor name");

    /* header ends exactly where the padding should start */
    b = with_tensors(32, good_t, 2, 0);
    b.n -= b.n % 32 ? 0 : 1;
    expect_bad(&b, "nodata.gguf", LPK_ETRUNC, "");
}

/* ---------------------------------------------------------------- build -> parse */
static void kv_equal(const lpk_kv *a, const lpk_kv *b)
{
    assert_string_equal(a->key, b->key);
    assert_int_equal(a->type, b->type);
    if (a->type == LPK_V_STR) {
        assert_int_equal(a->str.n, b->str.n);
        assert_memory_equal(a->str.p, b->str.p, a->str.n);
    } else if (a->type == LPK_V_ARR) {
        assert_int_equal(a->elem, b->elem);
        assert_int_equal(a->count, b->count);
        for (uint64_t i = 0; i < a->count; i++) {
            if (a->elem == LPK_V_STR) {
                lpk_str x = lpk_kv_str_at(a, i), y = lpk_kv_str_at(b, i);
                assert_int_equal(x.n, y.n);
                assert_memory_equal(x.p, y.p, x.n);
            }
        }
        if (a->elem != LPK_V_STR && a->count)
            assert_memory_equal(a->data, b->data, a->count * lpk_vtype_size(a->elem));
    } else {
        assert_memory_equal(a->data, b->data, lpk_vtype_size(a->type));
    }
}

static void test_build_roundtrip(void **state)
{
    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        lpk_meta *m = lpk_meta_new();
        lpk_meta_set_str(m, "general.architecture", "llama");
        if (pass) lpk_meta_set_u32(m, "general.alignment", 64);
        uint8_t u8 = 200; int8_t i8 = -3; uint16_t u16 = 65000; int16_t i16 = -30000;
        lpk_meta_set_scalar(m, "t.u8", LPK_V_U8, &u8);
        lpk_meta_set_scalar(m, "t.i8", LPK_V_I8, &i8);
        lpk_meta_set_scalar(m, "t.u16", LPK_V_U16, &u16);
        lpk_meta_set_scalar(m, "t.i16", LPK_V_I16, &i16);
        lpk_meta_set_i32(m, "t.i32", -123456);
        lpk_meta_set_u64(m, "t.u64", 0x0123456789abcdefull);
        lpk_meta_set_i64(m, "t.i64", -5);
        lpk_meta_set_f32(m, "t.f32", 1e-5f);
        lpk_meta_set_f64(m, "t.f64", 3.141592653589793);
        lpk_meta_set_bool(m, "t.bool", 1);
        lpk_meta_set_strn(m, "t.str", "a\0b", 3);
        const char *strs[] = {"<unk>", "", "\xe2\x96\x81the"};
        lpk_meta_set_str_arr(m, "t.strs", strs, NULL, 3);
        float f[3] = {0.5f, -1, 2};
        lpk_meta_set_arr(m, "t.f32s", LPK_V_F32, f, 3);
        int32_t i32s[2] = {-1, 6};
        lpk_meta_set_arr(m, "t.i32s", LPK_V_I32, i32s, 2);
        uint64_t u64s[2] = {1, UINT64_MAX};
        lpk_meta_set_arr(m, "t.u64s", LPK_V_U64, u64s, 2);
        uint8_t bools[3] = {1, 0, 1};
        lpk_meta_set_arr(m, "t.bools", LPK_V_BOOL, bools, 3);
        lpk_meta_set_arr(m, "t.empty", LPK_V_U16, NULL, 0);

        lpk_tensor d[5];
        memset(d, 0, sizeof d);
        struct { const char *n; int type, nd; int64_t dims[4]; } spec[5] = {
            {"norm.weight", LPK_TYPE_F32, 1, {7}},
            {"w.f16", LPK_TYPE_F16, 2, {3, 5}},
            {"w.q8", LPK_TYPE_Q8_0, 2, {2, 64}},
            {"w.q4k", LPK_TYPE_Q4_K, 2, {3, 256}},
            {"w.bf16", LPK_TYPE_BF16, 3, {2, 3, 4}},
        };
        for (int i = 0; i < 5; i++) {
            snprintf(d[i].name, sizeof d[i].name, "%s", spec[i].n);
            d[i].type = spec[i].type;
            d[i].n_dims = spec[i].nd;
            memcpy(d[i].dims, spec[i].dims, sizeof d[i].dims);
        }
        uint8_t *hdr;
        uint64_t hsz;
        lpk_error err = {0};
        assert_int_equal(gguf_header_build(m, d, 5, &hdr, &hsz, &err), LPK_OK);
        uint32_t align = pass ? 64 : 32;
        assert_int_equal(hsz % align, 0);
        uint64_t want_size[5] = {28, 30, 2 * 2 * 34, 3 * 144, 48};
        uint64_t end = hsz;
        for (int i = 0; i < 5; i++) {
            assert_int_equal(d[i].size, want_size[i]);
            assert_int_equal(d[i].offset % align, 0);
            assert_true(d[i].offset >= end);
            assert_true(d[i].offset - end < align);
            end = d[i].offset + d[i].size;
        }
        fb file = {0};
        tu_buf_put(&file, hdr, (size_t)hsz);
        free(hdr);
        while (file.n < end) tu_buf_put(&file, &(uint8_t){(uint8_t)(file.n * 7)}, 1);
        if (pass == 0) save_corpus("built_all_types.gguf", &file);

        lpk_meta *m2;
        lpk_tensor *t;
        size_t nt;
        assert_int_equal(parse(&file, &m2, &t, &nt, &err), LPK_OK);
        assert_int_equal(lpk_meta_count(m2), lpk_meta_count(m));
        for (size_t i = 0; i < lpk_meta_count(m); i++)
            kv_equal(lpk_meta_at(m, i), lpk_meta_at(m2, i));
        assert_int_equal(nt, 5);
        for (int i = 0; i < 5; i++) {
            assert_string_equal(t[i].name, d[i].name);
            assert_int_equal(t[i].type, d[i].type);
            assert_int_equal(t[i].n_dims, d[i].n_dims);
            assert_memory_equal(t[i].dims, d[i].dims, sizeof(int64_t) * (size_t)d[i].n_dims);
            assert_int_equal(t[i].offset, d[i].offset);
            assert_int_equal(t[i].size, d[i].size);
        }
        /* GGML order on disk: the first tensor info's ne[0] is the innermost dim */
        free(t);
        lpk_meta_free(m2);
        free(file.p);
        lpk_meta_free(m);
    }
}

static void test_build_rejects(void **state)
{
    (void)state;
    lpk_meta *m = lpk_meta_new();
    lpk_tensor d[2];
    memset(d, 0, sizeof d);
    strcpy(d[0].name, "a");
    d[0].type = LPK_TYPE_Q4_0;
    d[0].n_dims = 2;
    d[0].dims[0] = 2;
    d[0].dims[1] = 32;
    d[1] = d[0];
    strcpy(d[1].name, "b");
    uint8_t *h;
    uint64_t hs;
    lpk_error err = {0};
    assert_int_equal(gguf_header_build(m, d, 2, &h, &hs, &err), LPK_OK);
    free(h);
    d[1].dims[1] = 48;
    lpk_error_clear(&err);
    assert_int_equal(gguf_header_build(m, d, 2, &h, &hs, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "row length 48"));
    assert_null(h);
    strcpy(d[1].name, "a");
    d[1].dims[1] = 32;
    lpk_error_clear(&err);
    assert_int_equal(gguf_header_build(m, d, 2, &h, &hs, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "duplicate tensor name 'a'"));
    memset(d[1].name, 'x', 64);
    d[1].name[64] = 0;
    lpk_error_clear(&err);
    assert_int_equal(gguf_header_build(m, d, 2, &h, &hs, &err), LPK_EINVAL);
    strcpy(d[1].name, "b");
    d[1].type = LPK_TYPE_Q8_K;
    lpk_error_clear(&err);
    assert_int_equal(gguf_header_build(m, d, 2, &h, &hs, &err), LPK_EINVAL);
    d[1].type = LPK_TYPE_Q4_0;
    lpk_meta_set_u32(m, "general.alignment", 24);
    lpk_error_clear(&err);
    assert_int_equal(gguf_header_build(m, d, 2, &h, &hs, &err), LPK_EINVAL);
    lpk_meta_set_u64(m, "general.alignment", 32);
    lpk_error_clear(&err);
    assert_int_equal(gguf_header_build(m, d, 2, &h, &hs, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "must be u32"));
    lpk_meta_free(m);
}

/* ---------------------------------------------------------------- llama.cpp's files */
typedef struct hparams {
    uint32_t dim, ffn, layers, heads, kv_heads, rot, vocab, ctx;
} hparams;

static void get_u32_typed(const lpk_meta *m, const char *key, uint32_t *out)
{
    const lpk_kv *kv = lpk_meta_find(m, key);
    if (!kv) fail_msg("key %s missing", key);
    assert_int_equal(kv->type, LPK_V_U32);
    *out = *(const uint32_t *)kv->data;
}

/* The shape MODEL.md gives each canonical name (outermost first). */
static int expected_dims(const char *name, const hparams *h, int64_t *d)
{
    int64_t hd = h->dim / h->heads;
    int l;
    char rest[64];
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output.weight")) {
        d[0] = h->vocab; d[1] = h->dim; return 2;
    }
    if (!strcmp(name, "output_norm.weight")) { d[0] = h->dim; return 1; }
    if (sscanf(name, "blk.%d.%63s", &l, rest) != 2 || l < 0 || (uint32_t)l >= h->layers) return 0;
    if (!strcmp(rest, "attn_norm.weight") || !strcmp(rest, "ffn_norm.weight")) { d[0] = h->dim; return 1; }
    if (!strcmp(rest, "attn_q.weight")) { d[0] = h->heads * hd; d[1] = h->dim; return 2; }
    if (!strcmp(rest, "attn_k.weight") || !strcmp(rest, "attn_v.weight")) { d[0] = h->kv_heads * hd; d[1] = h->dim; return 2; }
    if (!strcmp(rest, "attn_output.weight")) { d[0] = h->dim; d[1] = h->heads * hd; return 2; }
    if (!strcmp(rest, "ffn_gate.weight") || !strcmp(rest, "ffn_up.weight")) { d[0] = h->ffn; d[1] = h->dim; return 2; }
    if (!strcmp(rest, "ffn_down.weight")) { d[0] = h->dim; d[1] = h->ffn; return 2; }
    return 0;
}

static void check_tokenizer_keys(const lpk_meta *m, uint32_t vocab)
{
    assert_string_equal(lpk_meta_get_str(m, "tokenizer.ggml.model"), "llama");
    assert_string_equal(lpk_meta_get_str(m, "tokenizer.ggml.pre"), "default");
    const lpk_kv *tok = lpk_meta_find(m, "tokenizer.ggml.tokens");
    const lpk_kv *sc = lpk_meta_find(m, "tokenizer.ggml.scores");
    const lpk_kv *tt = lpk_meta_find(m, "tokenizer.ggml.token_type");
    assert_non_null(tok); assert_non_null(sc); assert_non_null(tt);
    assert_int_equal(tok->elem, LPK_V_STR);
    assert_int_equal(sc->elem, LPK_V_F32);
    assert_int_equal(tt->elem, LPK_V_I32);
    assert_int_equal(tok->count, vocab);
    assert_int_equal(sc->count, vocab);
    assert_int_equal(tt->count, vocab);
    lpk_str s0 = lpk_kv_str_at(tok, 0), s1 = lpk_kv_str_at(tok, 1), s3 = lpk_kv_str_at(tok, 3);
    assert_string_equal(s0.p, "<unk>");
    assert_string_equal(s1.p, "<s>");
    assert_string_equal(s3.p, "<0x00>");
    const int32_t *ty = tt->data;
    assert_int_equal(ty[0], 2);
    assert_int_equal(ty[1], 3);
    assert_int_equal(ty[3], 6);
    uint32_t v;
    get_u32_typed(m, "tokenizer.ggml.bos_token_id", &v);
    assert_int_equal(v, 1);
    get_u32_typed(m, "tokenizer.ggml.eos_token_id", &v);
    assert_int_equal(v, 2);
}

/* Parses a llama.cpp-written file and checks every tensor against the model's
 * hyperparameters and the GGUF layout rules; returns the parsed pieces. */
typedef struct gfile {
    lpk_meta *m;
    lpk_tensor *t;
    size_t nt;
    char *buf;
} gfile;

static void gfile_free(gfile *g)
{
    free(g->t);
    lpk_meta_free(g->m);
    free(g->buf);
}

static void check_llama_file(const char *path, hparams *h, gfile *g)
{
    size_t len;
    char *buf = tu_read_file(path, &len);
    assert_non_null(buf);
    lpk_meta *m = lpk_meta_new();
    lpk_tensor *t;
    size_t nt;
    uint32_t ver = 0;
    lpk_error err = {0};
    int st = gguf_parse((const uint8_t *)buf, len, path, m, &t, &nt, &ver, &err);
    if (st) fail_msg("%s", err.msg);
    assert_int_equal(ver, 3);
    assert_string_equal(lpk_meta_get_str(m, "general.architecture"), "llama");
    get_u32_typed(m, "llama.embedding_length", &h->dim);
    get_u32_typed(m, "llama.feed_forward_length", &h->ffn);
    get_u32_typed(m, "llama.block_count", &h->layers);
    get_u32_typed(m, "llama.attention.head_count", &h->heads);
    get_u32_typed(m, "llama.attention.head_count_kv", &h->kv_heads);
    get_u32_typed(m, "llama.rope.dimension_count", &h->rot);
    get_u32_typed(m, "llama.vocab_size", &h->vocab);
    get_u32_typed(m, "llama.context_length", &h->ctx);
    assert_int_equal(h->rot, h->dim / h->heads);
    float eps;
    assert_int_equal(lpk_meta_find(m, "llama.attention.layer_norm_rms_epsilon")->type, LPK_V_F32);
    assert_int_equal(lpk_meta_get_f32(m, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
    assert_true(eps == 1e-5f);
    check_tokenizer_keys(m, h->vocab);

    /* tensors tile the data section in file order, each at the next 32-byte boundary */
    uint64_t end = 0;
    for (size_t i = 0; i < nt; i++) {
        int64_t d[4];
        int nd = expected_dims(t[i].name, h, d);
        if (!nd) fail_msg("%s: unexpected tensor %s", path, t[i].name);
        assert_int_equal(t[i].n_dims, nd);
        assert_memory_equal(t[i].dims, d, sizeof(int64_t) * (size_t)nd);
        if (nd == 1) assert_int_equal(t[i].type, LPK_TYPE_F32);
        uint64_t nb;
        assert_int_equal(lpk_type_nbytes(t[i].type, lpk_tensor_nelems(&t[i]), &nb), 0);
        assert_int_equal(t[i].size, nb);
        assert_int_equal(t[i].offset % 32, 0);
        assert_ptr_equal(t[i].data, buf + t[i].offset);
        assert_true(t[i].offset + t[i].size <= len);
        end = t[i].offset + t[i].size;
    }
    g->m = m;
    g->t = t;
    g->nt = nt;
    g->buf = buf;
    (void)end;
}

static const lpk_tensor *find(const lpk_tensor *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    fail_msg("tensor %s missing", name);
    return NULL;
}

static void test_llama2_20m(void **state)
{
    (void)state;
    static const char *files[] = {"gguf/llama2-20m-Q8_0.gguf", "gguf/llama2-20m-Q4_K_M.gguf"};
    for (int f = 0; f < 2; f++) {
        TU_NEED_SHARED(path, files[f]);
        hparams h;
        gfile g;
        check_llama_file(path, &h, &g);
        lpk_meta *m = g.m;
        lpk_tensor *t = g.t;
        size_t nt = g.nt;
        const hparams want = {256, 768, 6, 8, 4, 32, 32000, 512};
        assert_memory_equal(&h, &want, sizeof h);
        assert_int_equal(nt, 2 + 1 + 6 * 9);
        assert_int_equal(lpk_meta_count(m), 24);
        uint32_t v;
        get_u32_typed(m, "general.quantization_version", &v);
        assert_int_equal(v, 2);
        get_u32_typed(m, "general.file_type", &v);
        assert_int_equal(v, f == 0 ? 7 : 15);
        assert_null(lpk_meta_find(m, "general.alignment"));
        /* header is 727284 bytes; data starts at the next multiple of 32 */
        const lpk_tensor *out = find(t, nt, "output.weight");
        const lpk_tensor *emb = find(t, nt, "token_embd.weight");
        assert_int_equal(out->offset, 727296);
        if (f == 0) {
            assert_int_equal(out->type, LPK_TYPE_Q8_0);
            assert_int_equal(emb->type, LPK_TYPE_Q8_0);
            assert_int_equal(emb->offset, 727296 + 8705024);
            assert_int_equal(find(t, nt, "blk.5.ffn_up.weight")->offset, 727296 + 22225920);
        } else {
            assert_int_equal(out->type, LPK_TYPE_Q6_K);
            assert_int_equal(emb->type, LPK_TYPE_Q4_K);
            assert_int_equal(emb->offset, 727296 + 6721024);
            assert_int_equal(find(t, nt, "blk.2.attn_v.weight")->type, LPK_TYPE_Q6_K);
            assert_int_equal(find(t, nt, "blk.5.ffn_down.weight")->type, LPK_TYPE_Q6_K);
            assert_int_equal(find(t, nt, "blk.0.ffn_down.weight")->type, LPK_TYPE_Q4_K);
        }
        gfile_free(&g);
    }
}

static void test_stories260k(void **state)
{
    (void)state;
    static const char *files[] = {"gguf/stories260K-f32.gguf", "gguf/stories260K-Q4_K_M.gguf"};
    for (int f = 0; f < 2; f++) {
        TU_NEED_SHARED(path, files[f]);
        hparams h;
        gfile g;
        check_llama_file(path, &h, &g);
        lpk_tensor *t = g.t;
        size_t nt = g.nt;
        const hparams want = {64, 172, 5, 8, 4, 8, 512, 512};
        assert_memory_equal(&h, &want, sizeof h);
        assert_int_equal(nt, 2 + 5 * 9); /* tied: no output.weight */
        for (size_t i = 0; i < nt; i++) assert_string_not_equal(t[i].name, "output.weight");
        if (f == 0) {
            for (size_t i = 0; i < nt; i++) assert_int_equal(t[i].type, LPK_TYPE_F32);
            assert_int_equal(t[0].offset, 14240); /* 14222 rounded up to 32 */
            assert_string_equal(t[0].name, "token_embd.weight");
            /* f32 data read back: finite, and RMSNorm weights of a trained model are not all 0 */
            const float *w = find(t, nt, "output_norm.weight")->data;
            float s = 0;
            for (int i = 0; i < 64; i++) s += w[i] * w[i];
            assert_true(s > 0.1f);
        } else {
            /* llama.cpp's fallbacks for rows that are not multiples of 256 */
            assert_int_equal(find(t, nt, "token_embd.weight")->type, LPK_TYPE_Q8_0);
            assert_int_equal(find(t, nt, "blk.0.ffn_down.weight")->type, LPK_TYPE_F16);
            assert_int_equal(find(t, nt, "blk.0.attn_q.weight")->type, LPK_TYPE_Q5_0);
            assert_int_equal(find(t, nt, "blk.2.attn_v.weight")->type, LPK_TYPE_Q8_0);
        }
        gfile_free(&g);
    }
}

static void test_vocab_only(void **state)
{
    (void)state;
    TU_NEED_SHARED(path, "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
    size_t len;
    char *buf = tu_read_file(path, &len);
    lpk_meta *m = lpk_meta_new();
    lpk_tensor *t;
    size_t nt;
    lpk_error err = {0};
    assert_int_equal(gguf_parse((const uint8_t *)buf, len, path, m, &t, &nt, NULL, &err), 0);
    assert_int_equal(nt, 0);
    assert_int_equal(lpk_meta_count(m), 22);
    check_tokenizer_keys(m, 32000);
    int b;
    assert_int_equal(lpk_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_true(b);
    const lpk_kv *sc = lpk_meta_find(m, "tokenizer.ggml.scores");
    /* the real LLaMA vocabulary: scores of normal pieces are negative merge ranks */
    assert_true(((const float *)sc->data)[1000] < 0);
    free(t);
    lpk_meta_free(m);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_small),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_bad_kv),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_build_roundtrip),
        cmocka_unit_test(test_build_rejects),
        cmocka_unit_test(test_llama2_20m),
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_vocab_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
