#include "tutil.h"
#include "tlpk.h"

#include <stdlib.h>
#include <string.h>

lpk_meta *tl_meta_all_types(uint64_t n_big)
{
    lpk_meta *m = lpk_meta_new();
    uint8_t u8 = 250; int8_t i8 = -7; uint16_t u16 = 65000; int16_t i16 = -30000;
    uint32_t u32 = 4000000000u; int32_t i32 = -2000000000; float f32 = -1.25e-3f;
    uint64_t u64 = 0xfedcba9876543210ull; int64_t i64 = -(int64_t)0x123456789abcll;
    double f64 = 3.141592653589793;
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_meta_set_scalar(m, "test.u8", LPK_V_U8, &u8);
    lpk_meta_set_scalar(m, "test.i8", LPK_V_I8, &i8);
    lpk_meta_set_scalar(m, "test.u16", LPK_V_U16, &u16);
    lpk_meta_set_scalar(m, "test.i16", LPK_V_I16, &i16);
    lpk_meta_set_u32(m, "llama.block_count", u32);
    lpk_meta_set_i32(m, "test.i32", i32);
    lpk_meta_set_f32(m, "llama.rope.freq_base", f32);
    lpk_meta_set_bool(m, "tokenizer.ggml.add_bos_token", 1);
    lpk_meta_set_bool(m, "test.false", 0);
    lpk_meta_set_u64(m, "test.u64", u64);
    lpk_meta_set_i64(m, "test.i64", i64);
    lpk_meta_set_f64(m, "test.f64", f64);
    lpk_meta_set_str(m, "test.empty", "");
    lpk_meta_set_strn(m, "test.nul", "a\0b\0", 4);
    uint8_t au8[] = {0, 1, 255}; int8_t ai8[] = {-128, 127};
    uint16_t au16[] = {1, 65535}; int16_t ai16[] = {-1, 2, -3};
    uint32_t au32[] = {7}; int32_t ai32[] = {1, -2, 3, -4};
    float af32[] = {0.5f, -0.0f, 1e30f}; uint8_t abool[] = {1, 0, 1};
    uint64_t au64[] = {UINT64_MAX, 0}; int64_t ai64[] = {INT64_MIN, INT64_MAX};
    double af64[] = {1e-300, -2.5};
    lpk_meta_set_arr(m, "test.arr.u8", LPK_V_U8, au8, 3);
    lpk_meta_set_arr(m, "test.arr.i8", LPK_V_I8, ai8, 2);
    lpk_meta_set_arr(m, "test.arr.u16", LPK_V_U16, au16, 2);
    lpk_meta_set_arr(m, "test.arr.i16", LPK_V_I16, ai16, 3);
    lpk_meta_set_arr(m, "test.arr.u32", LPK_V_U32, au32, 1);
    lpk_meta_set_arr(m, "test.arr.i32", LPK_V_I32, ai32, 4);
    lpk_meta_set_arr(m, "test.arr.f32", LPK_V_F32, af32, 3);
    lpk_meta_set_arr(m, "test.arr.bool", LPK_V_BOOL, abool, 3);
    lpk_meta_set_arr(m, "test.arr.u64", LPK_V_U64, au64, 2);
    lpk_meta_set_arr(m, "test.arr.i64", LPK_V_I64, ai64, 2);
    lpk_meta_set_arr(m, "test.arr.f64", LPK_V_F64, af64, 2);
    lpk_meta_set_arr(m, "test.arr.empty", LPK_V_U32, NULL, 0);
    lpk_meta_set_str_arr(m, "test.arr.str_empty", NULL, NULL, 0);
    const char *strs[] = {"<unk>", "", "a\0b", "\xe2\x96\x81the"};
    uint64_t lens[] = {5, 0, 3, 6};
    lpk_meta_set_str_arr(m, "tokenizer.ggml.tokens", strs, lens, 4);
    lpk_meta_set_u32(m, "tokenizer.ggml.bos_token_id", 1);
    lpk_meta_set_u32(m, "tokenizer.ggml.eos_token_id", 2);
    lpk_meta_set_str(m, "tokenizer.ggml.model", "llama");
    if (n_big) {
        char **bs = malloc(n_big * sizeof *bs);
        uint64_t *bl = malloc(n_big * sizeof *bl);
        uint64_t rs = 99;
        for (uint64_t i = 0; i < n_big; i++) {
            bs[i] = tu_fmt("tok%llu_%c%c", (unsigned long long)i,
                           (char)('a' + tu_rand(&rs) % 26), 0 /* embedded NUL */);
            bl[i] = strlen(bs[i]) + 2;
        }
        lpk_meta_set_str_arr(m, "tokenizer.ggml.merges", (const char *const *)bs, bl, n_big);
        for (uint64_t i = 0; i < n_big; i++) free(bs[i]);
        free(bs);
        free(bl);
    }
    return m;
}

size_t tl_decls_all_types(lpk_tensor *d)
{
    static const struct { const char *name; int type; int nd; int64_t dims[4]; } s[] = {
        {"token_embd.weight", LPK_TYPE_F16, 2, {10, 64}},
        {"output_norm.weight", LPK_TYPE_F32, 1, {64}},
        {"blk.0.attn_q.weight", LPK_TYPE_BF16, 2, {3, 5}},
        {"blk.0.attn_k.weight", LPK_TYPE_Q8_0, 2, {4, 64}},
        {"blk.0.attn_v.weight", LPK_TYPE_Q4_0, 3, {2, 3, 32}},
        {"blk.0.attn_output.weight", LPK_TYPE_Q4_1, 2, {2, 96}},
        {"blk.0.ffn_gate.weight", LPK_TYPE_Q5_0, 2, {5, 32}},
        {"blk.0.ffn_up.weight", LPK_TYPE_Q5_1, 4, {1, 2, 1, 64}},
        {"blk.0.ffn_down.weight", LPK_TYPE_Q4_K, 2, {2, 256}},
        {"output.weight", LPK_TYPE_Q6_K, 2, {3, 512}},
    };
    size_t n = sizeof s / sizeof s[0];
    memset(d, 0, n * sizeof *d);
    for (size_t i = 0; i < n; i++) {
        strcpy(d[i].name, s[i].name);
        d[i].type = s[i].type;
        d[i].n_dims = s[i].nd;
        memcpy(d[i].dims, s[i].dims, sizeof s[i].dims);
    }
    return n;
}

uint8_t tl_byte(size_t i, uint64_t j)
{
    uint64_t x = (j + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)i + 1) * 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return (uint8_t)(x * 0x94d049bb133111ebull >> 56);
}

int tl_write(const char *path, const lpk_meta *m, const lpk_tensor *decls, size_t n,
             unsigned flags, size_t chunk, lpk_error *err)
{
    lpk_writer *w;
    int st = lpk_writer_open(path, m, decls, n, flags, &w, err);
    if (st) return st;
    uint8_t *buf = malloc(chunk);
    for (size_t i = 0; i < n && !st; i++) {
        uint64_t size;
        lpk_type_nbytes(decls[i].type, lpk_tensor_nelems(&decls[i]), &size);
        st = lpk_writer_tensor_begin(w, decls[i].name, err);
        for (uint64_t j = 0; j < size && !st; j += chunk) {
            size_t k = size - j < chunk ? (size_t)(size - j) : chunk;
            for (size_t q = 0; q < k; q++) buf[q] = tl_byte(i, j + q);
            st = lpk_writer_tensor_write(w, buf, k, err);
        }
        if (!st) st = lpk_writer_tensor_end(w, err);
    }
    free(buf);
    if (st) {
        lpk_writer_abort(w);
        return st;
    }
    return lpk_writer_finish(w, err);
}

void tl_assert_meta_equal(const lpk_meta *a, const lpk_meta *b)
{
    assert_int_equal(lpk_meta_count(a), lpk_meta_count(b));
    for (size_t i = 0; i < lpk_meta_count(a); i++) {
        const lpk_kv *x = lpk_meta_at(a, i), *y = lpk_meta_at(b, i);
        assert_string_equal(x->key, y->key);
        assert_int_equal(x->type, y->type);
        assert_int_equal(x->count, y->count);
        if (x->type == LPK_V_STR) {
            assert_int_equal(x->str.n, y->str.n);
            assert_memory_equal(x->str.p, y->str.p, x->str.n + 1);
        } else if (x->type == LPK_V_ARR) {
            assert_int_equal(x->elem, y->elem);
            if (x->elem == LPK_V_STR) {
                for (uint64_t j = 0; j < x->count; j++) {
                    lpk_str s = lpk_kv_str_at(x, j), t = lpk_kv_str_at(y, j);
                    assert_int_equal(s.n, t.n);
                    assert_memory_equal(s.p, t.p, s.n + 1);
                }
            } else if (x->count) {
                assert_memory_equal(x->data, y->data, x->count * lpk_vtype_size(x->elem));
            }
        } else {
            assert_memory_equal(x->data, y->data, lpk_vtype_size(x->type));
        }
    }
}
