/* format/ basics: type table, f16/bf16 conversions, the metadata store. */
#include "tutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../format/lpk.h"

static void test_type_table(void **state)
{
    (void)state;
    /* Block facts from GGML's type traits. */
    static const struct { int id; const char *name; int bs, ts; } want[] = {
        {LPK_TYPE_F32, "f32", 1, 4},     {LPK_TYPE_F16, "f16", 1, 2},
        {LPK_TYPE_BF16, "bf16", 1, 2},   {LPK_TYPE_Q8_0, "q8_0", 32, 34},
        {LPK_TYPE_Q4_0, "q4_0", 32, 18}, {LPK_TYPE_Q4_1, "q4_1", 32, 20},
        {LPK_TYPE_Q5_0, "q5_0", 32, 22}, {LPK_TYPE_Q5_1, "q5_1", 32, 24},
        {LPK_TYPE_Q4_K, "q4_k", 256, 144}, {LPK_TYPE_Q6_K, "q6_k", 256, 210},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const lpk_type_info *t = lpk_type_get(want[i].id);
        assert_non_null(t);
        assert_string_equal(t->name, want[i].name);
        assert_int_equal(t->block_size, want[i].bs);
        assert_int_equal(t->type_size, want[i].ts);
        assert_int_equal(lpk_type_from_name(want[i].name), want[i].id);
    }
    assert_null(lpk_type_get(5));
    assert_int_equal(lpk_type_from_name("Q4_K"), LPK_TYPE_Q4_K);
    uint64_t n;
    assert_int_equal(lpk_type_nbytes(LPK_TYPE_Q4_K, 512, &n), LPK_OK);
    assert_int_equal(n, 288);
    assert_int_equal(lpk_type_nbytes(LPK_TYPE_Q4_0, 33, &n), LPK_EINVAL);
    assert_int_equal(lpk_type_nbytes(LPK_TYPE_F32, UINT64_MAX / 2, &n), LPK_ENOMEM);
}

static void test_f16(void **state)
{
    (void)state;
    /* Bit patterns from IEEE 754 binary16. */
    assert_int_equal(lpk_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(lpk_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(lpk_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(lpk_f32_to_f16(65520.0f), 0x7c00);      /* rounds to inf */
    assert_int_equal(lpk_f32_to_f16(5.9604645e-08f), 0x0001); /* smallest subnormal */
    assert_int_equal(lpk_f32_to_f16(2.9802322e-08f), 0x0000); /* half of it: ties to even */
    assert_int_equal(lpk_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie -> even */
    assert_int_equal(lpk_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
    assert_true(isnan(lpk_f16_to_f32(lpk_f32_to_f16(NAN))));
    assert_true(lpk_f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    assert_true(lpk_f16_to_f32(0xfbff) == -65504.0f);
    /* every finite half round-trips, and the row (SIMD) path agrees with scalar */
    uint16_t *h = malloc(65536 * 2), *h2 = malloc(65536 * 2);
    float *f = malloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    lpk_f16_to_f32_row(h, f, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        float s = lpk_f16_to_f32((uint16_t)i);
        if (isnan(s)) { assert_true(isnan(f[i])); f[i] = 0; continue; }
        assert_memory_equal(&s, &f[i], 4);
        assert_int_equal(lpk_f32_to_f16(s), i);
    }
    uint64_t rs = 7;
    float *g = malloc(4096 * 4);
    for (int i = 0; i < 4096; i++) g[i] = tu_randn(&rs) * (float)(1 << (i % 24)) * 1e-6f;
    lpk_f32_to_f16_row(g, h2, 4096);
    for (int i = 0; i < 4096; i++) assert_int_equal(h2[i], lpk_f32_to_f16(g[i]));
    free(g); free(h); free(h2); free(f);
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(lpk_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(lpk_f32_to_bf16(1.00390625f), 0x3f80);  /* tie -> even */
    assert_int_equal(lpk_f32_to_bf16(1.01171875f), 0x3f82);  /* tie -> even (up) */
    assert_true(lpk_bf16_to_f32(0xc040) == -3.0f);
    assert_true(isnan(lpk_bf16_to_f32(lpk_f32_to_bf16(NAN))));
    uint16_t src[37];
    float a[37];
    for (int i = 0; i < 37; i++) src[i] = (uint16_t)(0x3f00 + i * 77);
    lpk_bf16_to_f32_row(src, a, 37);
    for (int i = 0; i < 37; i++) assert_true(a[i] == lpk_bf16_to_f32(src[i]));
}

/* lpk_check_finite on f32/f16/bf16 arrays: every exponent pattern next to the
 * Inf/NaN one, a bad value at each position of a word and in the tail, the first
 * of two found, an unaligned start. */
static void put(uint8_t *p, int es, uint32_t v)
{
    if (es == 4) lpk_wr32(p, v);
    else { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
}

static void test_check_finite(void **state)
{
    (void)state;
    const int types[] = {LPK_TYPE_F32, LPK_TYPE_F16, LPK_TYPE_BF16};
    enum { N = 9000 };
    uint8_t *buf = malloc(4 * N + 1);
    for (int t = 0; t < 3; t++) {
        int es = t ? 2 : 4;
        uint32_t m = t == 0 ? 0x7f800000u : t == 1 ? 0x7c00u : 0x7f80u;
        uint32_t near = m - (m & (0u - m)); /* largest finite exponent, sign set below */
        uint8_t *p = buf + 1;               /* unaligned */
        for (uint64_t i = 0; i < N; i++) {
            uint32_t v = (i % 3 == 0 ? near : (uint32_t)(i * 2654435761u) & ~m) |
                         (i % 2 ? (es == 4 ? 0x80000000u : 0x8000u) : 0) | (i % 5 ? 1u : 0u);
            put(p + (uint64_t)es * i, es, v);
        }
        uint64_t where = 0;
        assert_int_equal(lpk_check_finite(types[t], p, (uint64_t)N * es, &where), LPK_OK);
        const uint64_t at[] = {0, 1, 2, 3, 4095, 4096, 4097, 8191, N - 2, N - 1};
        for (size_t k = 0; k < sizeof at / sizeof at[0]; k++)
            for (int nan = 0; nan < 2; nan++) {
                uint8_t *e = p + at[k] * es;
                uint32_t old = es == 4 ? lpk_rd32(e) : lpk_rd16(e);
                uint32_t bad = m | (nan ? 1u : 0u) | (k % 2 ? (es == 4 ? 0x80000000u : 0x8000u) : 0);
                put(e, es, bad);
                where = 0;
                assert_int_equal(lpk_check_finite(types[t], p, (uint64_t)N * es, &where),
                                 LPK_EBADVALUE);
                assert_int_equal(where, at[k]);
                if (at[k] + 3 < N) { /* a second one after it: the first is named */
                    uint8_t *f = e + 3 * es;
                    uint32_t o2 = es == 4 ? lpk_rd32(f) : lpk_rd16(f);
                    put(f, es, m);
                    assert_int_equal(lpk_check_finite(types[t], p, (uint64_t)N * es, &where),
                                     LPK_EBADVALUE);
                    assert_int_equal(where, at[k]);
                    put(f, es, o2);
                }
                put(e, es, old);
            }
        assert_int_equal(lpk_check_finite(types[t], p, (uint64_t)N * es, &where), LPK_OK);
        /* every length of the last words (the vector path's remainder of 1-3
         * words, the element tail), a bad value last */
        for (uint64_t n = N - 16; n <= N; n++) {
            uint8_t *e = p + (n - 1) * es;
            uint32_t old = es == 4 ? lpk_rd32(e) : lpk_rd16(e);
            assert_int_equal(lpk_check_finite(types[t], p, n * es, &where), LPK_OK);
            put(e, es, m);
            where = 0;
            assert_int_equal(lpk_check_finite(types[t], p, n * es, &where), LPK_EBADVALUE);
            assert_int_equal(where, n - 1);
            put(e, es, old);
        }
    }
    free(buf);
}

/* lpk_check_finite on block types: the f16 scales at GGML's offsets (written
 * here from the block layouts: d, and dmin where there is one), each made Inf
 * or NaN in blocks on both sides of the 4096-block chunks; other bytes with
 * an all-ones exponent pattern and a partial block at the end are not looked
 * at; the first of two bad blocks is named. */
static void test_check_finite_blocks(void **state)
{
    (void)state;
    static const struct { int type, size, n, off[2]; } L[] = {
        {LPK_TYPE_Q4_0, 18, 1, {0}},       {LPK_TYPE_Q4_1, 20, 2, {0, 2}},
        {LPK_TYPE_Q5_0, 22, 1, {0}},       {LPK_TYPE_Q5_1, 24, 2, {0, 2}},
        {LPK_TYPE_Q8_0, 34, 1, {0}},       {LPK_TYPE_Q2_K, 84, 2, {80, 82}},
        {LPK_TYPE_Q3_K, 110, 1, {108}},    {LPK_TYPE_Q4_K, 144, 2, {0, 2}},
        {LPK_TYPE_Q5_K, 176, 2, {0, 2}},   {LPK_TYPE_Q6_K, 210, 1, {208}},
        {LPK_TYPE_IQ4_NL, 18, 1, {0}},     {LPK_TYPE_IQ4_XS, 136, 1, {0}},
    };
    enum { N = 9000 };
    const uint64_t at[] = {0, 1, 4095, 4096, 4097, 8191, 8192, N - 1};
    for (size_t t = 0; t < sizeof L / sizeof L[0]; t++) {
        assert_int_equal(lpk_type_get(L[t].type)->type_size, L[t].size);
        size_t bs = (size_t)L[t].size, n = N * bs;
        uint8_t *p = malloc(n + bs);
        uint64_t seed = 7 + t;
        for (size_t i = 0; i < n + bs; i++) p[i] = (uint8_t)(tu_rand(&seed) >> 24);
        /* finite scales (the largest exponent below all ones in some) */
        for (size_t b = 0; b < N; b++)
            for (int j = 0; j < L[t].n; j++) {
                uint8_t *q = p + b * bs + L[t].off[j];
                uint16_t v = (uint16_t)(lpk_rd16(q) & (b % 3 ? 0x3fffu : 0xfbffu));
                q[0] = (uint8_t)v; q[1] = (uint8_t)(v >> 8);
            }
        /* the partial block after the last one: never a scale */
        for (size_t i = n; i + 1 < n + bs; i += 2) { p[i] = 0x00; p[i + 1] = 0x7c; }
        uint64_t where = 0;
        assert_int_equal(lpk_check_finite(L[t].type, p, n + bs - 1, &where), LPK_OK);
        for (size_t k = 0; k < sizeof at / sizeof at[0]; k++)
            for (int j = 0; j < L[t].n; j++) {
                uint8_t *q = p + at[k] * bs + L[t].off[j];
                uint8_t o[2] = {q[0], q[1]};
                q[0] = k % 2 ? 0x01 : 0x00;        /* NaN or Inf, */
                q[1] = k % 3 ? 0xfc : 0x7c;        /* either sign */
                where = 0;
                assert_int_equal(lpk_check_finite(L[t].type, p, n, &where), LPK_EBADVALUE);
                assert_int_equal(where, at[k]);
                if (at[k] + 2 < N) { /* a second one after it: the first is named */
                    uint8_t *r = p + (at[k] + 2) * bs + L[t].off[L[t].n - 1];
                    uint8_t o2[2] = {r[0], r[1]};
                    r[0] = 0; r[1] = 0x7c;
                    assert_int_equal(lpk_check_finite(L[t].type, p, n, &where), LPK_EBADVALUE);
                    assert_int_equal(where, at[k]);
                    r[0] = o2[0]; r[1] = o2[1];
                }
                q[0] = o[0]; q[1] = o[1];
            }
        assert_int_equal(lpk_check_finite(L[t].type, p, n, &where), LPK_OK);
        free(p);
    }
}

static void test_meta(void **state)
{
    (void)state;
    lpk_meta *m = lpk_meta_new();
    assert_int_equal(lpk_meta_set_u32(m, "llama.block_count", 6), 0);
    assert_int_equal(lpk_meta_set_f32(m, "llama.rope.freq_base", 10000.0f), 0);
    assert_int_equal(lpk_meta_set_str(m, "general.architecture", "llama"), 0);
    assert_int_equal(lpk_meta_set_bool(m, "tokenizer.ggml.add_bos_token", 1), 0);
    const char *toks[] = {"<unk>", "", "a\0b"};
    uint64_t lens[] = {5, 0, 3};
    assert_int_equal(lpk_meta_set_str_arr(m, "tokenizer.ggml.tokens", toks, lens, 3), 0);
    float sc[3] = {0, -1.5f, 2};
    assert_int_equal(lpk_meta_set_arr(m, "tokenizer.ggml.scores", LPK_V_F32, sc, 3), 0);
    assert_int_equal(lpk_meta_set_i64(m, "x.neg", -5), 0);
    assert_int_equal(lpk_meta_count(m), 7);

    uint32_t u; int64_t i64; uint64_t u64; float f; int b;
    assert_int_equal(lpk_meta_get_u32(m, "llama.block_count", &u), 0);
    assert_int_equal(u, 6);
    assert_int_equal(lpk_meta_get_u64(m, "x.neg", &u64), LPK_EINVAL);
    assert_int_equal(lpk_meta_get_i64(m, "x.neg", &i64), 0);
    assert_int_equal(i64, -5);
    assert_int_equal(lpk_meta_get_f32(m, "llama.rope.freq_base", &f), 0);
    assert_true(f == 10000.0f);
    assert_int_equal(lpk_meta_get_u32(m, "missing", &u), LPK_ENOTFOUND);
    assert_int_equal(lpk_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_true(b);
    assert_string_equal(lpk_meta_get_str(m, "general.architecture"), "llama");
    const lpk_kv *kv = lpk_meta_find(m, "tokenizer.ggml.tokens");
    assert_non_null(kv);
    assert_int_equal(kv->elem, LPK_V_STR);
    lpk_str s = lpk_kv_str_at(kv, 2);
    assert_int_equal(s.n, 3);
    assert_memory_equal(s.p, "a\0b", 3);
    assert_int_equal(lpk_kv_str_at(kv, 1).n, 0);

    /* replacing keeps the position; copy preserves everything */
    assert_int_equal(lpk_meta_set_u32(m, "llama.rope.freq_base", 5), 0);
    assert_string_equal(lpk_meta_at(m, 1)->key, "llama.rope.freq_base");
    lpk_meta *c = lpk_meta_new();
    assert_int_equal(lpk_meta_copy(c, m), 0);
    assert_int_equal(lpk_meta_count(c), 7);
    assert_int_equal(lpk_kv_str_at(lpk_meta_find(c, "tokenizer.ggml.tokens"), 0).n, 5);
    assert_int_equal(lpk_meta_remove(c, "llama.block_count"), 0);
    assert_int_equal(lpk_meta_remove(c, "llama.block_count"), LPK_ENOTFOUND);
    assert_string_equal(lpk_meta_at(c, 0)->key, "llama.rope.freq_base");
    lpk_meta_free(c);
    lpk_meta_free(m);
    lpk_meta_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_check_finite),
        cmocka_unit_test(test_check_finite_blocks),
        cmocka_unit_test(test_meta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
