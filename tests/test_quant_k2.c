/* quant/: q5_k, q3_k, q2_k, iq4_nl, iq4_xs. Dequantization against GGML's
 * formulas (hand-made blocks) and against llama.cpp's own files of the same
 * weights, round-trip error, SIMD == reference, importance weights, edge values,
 * and our quantizer's error beside llama.cpp's on the same tensors. */
#include "tutil.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../format/lpk.h"
#include "../quant/quant.h"

static const int new_types[] = {LPK_TYPE_Q5_K, LPK_TYPE_Q3_K, LPK_TYPE_Q2_K, LPK_TYPE_IQ4_NL,
                                LPK_TYPE_IQ4_XS};
#define N_NEW (sizeof new_types / sizeof new_types[0])

/* ---------------------------------------------------------------- formulas */
/* Hand-made blocks; expected values worked out from GGML's definitions. */
static void test_formulas(void **state)
{
    (void)state;
    float y[256];
    assert_true(lpk_type_get(LPK_TYPE_Q5_K)->type_size == (int)sizeof(block_q5_K));
    assert_true(lpk_type_get(LPK_TYPE_IQ4_XS)->type_size == (int)sizeof(block_iq4_xs));
    {
        /* q5_k: sub-block 2 (c = 1, low nibbles) scale 3, min 5 (j < 4: 6 bits in
         * scales[j], scales[j + 4]); sub-block 5 (j >= 4) scale 33, min 18 */
        block_q5_K b;
        memset(&b, 0, sizeof b);
        b.d = 0x3800;    /* 0.5 */
        b.dmin = 0x3400; /* 0.25 */
        b.scales[2] = 3;
        b.scales[6] = 5;
        b.scales[9] = (uint8_t)((33 & 15) | ((18 & 15) << 4));
        b.scales[1] |= (uint8_t)((33 >> 4) << 6);
        b.scales[5] |= (uint8_t)((18 >> 4) << 6);
        b.qs[32 + 7] = 0x0b;   /* element 64 + 7: low nibble 11 */
        b.qh[7] = 1 << 2;      /* its 5th bit (c = 1, low half) */
        b.qs[64 + 1] = 0x90;   /* element 128 + 32 + 1 (sub-block 5): high nibble 9 */
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q5_K, &b, 1, 256, y), LPK_OK);
        assert_true(y[64 + 7] == 0.5f * 3 * 27 - 0.25f * 5);
        assert_true(y[64 + 8] == -0.25f * 5);
        assert_true(y[160 + 1] == 0.5f * 33 * 9 - 0.25f * 18);
        assert_true(y[0] == 0.0f);
    }
    {
        /* q2_k: element 128 + 32 * 2 + 16 + 3 = 211: qs[32 + 16 + 3] bits 4..5,
         * sub-block 13 */
        block_q2_K b;
        memset(&b, 0, sizeof b);
        b.d = 0x3c00;    /* 1 */
        b.dmin = 0x3800; /* 0.5 */
        b.scales[13] = 0x37; /* scale 7, min 3 */
        b.qs[51] = 2 << 4;
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q2_K, &b, 1, 256, y), LPK_OK);
        assert_true(y[211] == 7.0f * 2 - 1.5f);
        assert_true(y[210] == -1.5f);
        assert_true(y[0] == 0.0f);
    }
    {
        /* q3_k: element 100 (chunk 0, j = 3, l = 4, sub-block 6): low bits qs[4]
         * bits 6..7, high bit hmask[4] bit 3; scale 6 stored 6 bits: low nibble in
         * scales[6], top 2 bits in scales[8 + 2] bits 2..3 */
        block_q3_K b;
        memset(&b, 0, sizeof b);
        b.d = 0x3800; /* 0.5 */
        int u = -5 + 32;
        b.scales[6] = (uint8_t)(u & 15);
        b.scales[10] = (uint8_t)((u >> 4) << 2);
        b.qs[4] = 3 << 6;
        b.hmask[4] = 1 << 3;     /* high bit set: q = 3 */
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q3_K, &b, 1, 256, y), LPK_OK);
        assert_true(y[100] == 0.5f * -5 * 3);
        assert_true(y[101] == 0.5f * -5 * -4); /* all bits clear: q = -4 */
        /* scale 0 is stored as 0 -> -32 */
        assert_true(y[0] == 0.5f * -32 * -4);
    }
    {
        block_iq4_nl b;
        memset(&b, 0, sizeof b);
        b.d = 0x4000; /* 2 */
        b.qs[3] = 0xf8;
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_IQ4_NL, &b, 1, 32, y), LPK_OK);
        assert_true(y[3] == 2.0f && y[19] == 226.0f && y[0] == -254.0f);
    }
    {
        /* iq4_xs: sub-block 3 ls = 0x2a (low nibble in scales_l[1] high half,
         * high 2 bits in scales_h bits 6..7) -> 42 - 32 = 10 */
        block_iq4_xs b;
        memset(&b, 0, sizeof b);
        b.d = 0x3400; /* 0.25 */
        b.scales_l[1] = 0xa0;
        b.scales_h = 2 << 6;
        b.qs[16 * 3 + 2] = 0x0f;
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_IQ4_XS, &b, 1, 256, y), LPK_OK);
        assert_true(y[96 + 2] == 0.25f * 10 * 113);
        assert_true(y[96 + 18] == 0.25f * 10 * -127);
        assert_true(y[0] == 0.25f * -32 * -127);
    }
}

/* ---------------------------------------------------------------- round trip */
static float *rand_rows(int64_t n, uint64_t seed)
{
    float *x = malloc((size_t)n * sizeof(float));
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        float v = tu_randn(&s);
        /* some heavy tails and an offset per row, like real weights */
        if (tu_rand(&s) % 50 == 0) v *= 6.0f;
        x[i] = 0.02f * v + ((i / 512) % 3 == 0 ? 0.004f : 0.0f);
    }
    return x;
}

/* Bounds on N(0,1)-like data: about what each bit width allows. */
/* Measured on these Gaussian rows (deterministic on every kernel path): rel.
 * RMSE, and the importance-weighted error with and without the weights. */
static const struct { int type; double rmse, e_plain, e_weighted; } measured[] = {
    {LPK_TYPE_Q5_K, 0.0436070, 0.0813341, 0.0766141},
    {LPK_TYPE_Q3_K, 0.193265, 1.60050, 1.46141},
    {LPK_TYPE_Q2_K, 0.296731, 3.72446, 3.21808},
    {LPK_TYPE_IQ4_NL, 0.0984794, 0.412634, 0.401931},
    {LPK_TYPE_IQ4_XS, 0.0996309, 0.421059, 0.411177},
};

static size_t measured_of(int type)
{
    for (size_t i = 0; i < sizeof measured / sizeof measured[0]; i++)
        if (measured[i].type == type) return i;
    fail_msg("no measured values for %s", lpk_type_get(type)->name);
    return 0;
}

static void test_roundtrip(void **state)
{
    (void)state;
    int64_t rows = 24, cols = 512;
    float *x = rand_rows(rows * cols, 7);
    float *w = malloc((size_t)cols * sizeof(float));
    uint64_t s = 3;
    for (int64_t c = 0; c < cols; c++) w[c] = (float)(tu_rand(&s) % 1000) / 100.0f + 0.01f;
    for (size_t i = 0; i < N_NEW; i++) {
        int t = new_types[i];
        double r = tu_rel_rmse(t, x, rows, cols, NULL);
        print_message("%-6s rel. RMSE %.6g\n", lpk_type_get(t)->name, r);
        const size_t mi = measured_of(t);
        tu_near(lpk_type_get(t)->name, r, measured[mi].rmse, 0.01);
        /* importance weights lower the weighted error */
        size_t nb = tu_qbytes(t, rows, cols);
        void *q0 = malloc(nb), *q1 = malloc(nb);
        lpk_error err = {0};
        assert_int_equal(quant_quantize_rows(t, x, rows, cols, q0, NULL, &err), LPK_OK);
        assert_int_equal(quant_quantize_rows(t, x, rows, cols, q1, w, &err), LPK_OK);
        float *y0 = malloc((size_t)(rows * cols) * sizeof(float));
        float *y1 = malloc((size_t)(rows * cols) * sizeof(float));
        quant_dequantize_rows(t, q0, rows, cols, y0);
        quant_dequantize_rows(t, q1, rows, cols, y1);
        double e0 = 0, e1 = 0;
        for (int64_t k = 0; k < rows * cols; k++) {
            double a = x[k] - y0[k], b = x[k] - y1[k];
            e0 += w[k % cols] * a * a;
            e1 += w[k % cols] * b * b;
        }
        print_message("%-6s weighted error %.6g without weights, %.6g with\n",
                      lpk_type_get(t)->name, e0, e1);
        assert_true(e1 < 0.99 * e0);
        tu_near("weighted error without weights", e0, measured[mi].e_plain, 0.01);
        tu_near("weighted error with weights", e1, measured[mi].e_weighted, 0.01);
        free(q0); free(q1); free(y0); free(y1);
    }
    free(x);
    free(w);
}

/* Reference on 1 thread vs the SIMD path on 2: same bytes, with and without
 * importance weights; and from f16 sources. */
static void test_simd_same_bytes(void **state)
{
    (void)state;
    int64_t rows = 9, cols = 768;
    float *x = rand_rows(rows * cols, 11);
    float *w = malloc((size_t)cols * sizeof(float));
    uint64_t s = 5;
    for (int64_t c = 0; c < cols; c++) w[c] = (float)(tu_rand(&s) % 100) / 10.0f;
    for (size_t i = 0; i < N_NEW; i++) {
        int t = new_types[i];
        size_t nb = tu_qbytes(t, rows, cols);
        for (int wi = 0; wi < 2; wi++) {
            void *a = malloc(nb), *b = malloc(nb);
            lpk_error err = {0};
            quant_set_path(QUANT_PATH_SCALAR);
            omp_set_num_threads(1);
            assert_int_equal(quant_quantize_rows(t, x, rows, cols, a, wi ? w : NULL, &err), LPK_OK);
            quant_set_path(QUANT_PATH_AUTO);
            omp_set_num_threads(2);
            assert_int_equal(quant_quantize_rows(t, x, rows, cols, b, wi ? w : NULL, &err), LPK_OK);
            assert_memory_equal(a, b, nb);
            free(a);
            free(b);
        }
    }
    free(x);
    free(w);
}

/* All-zero, constant, a lone spike, huge and tiny values: finite output, zeros
 * stay zero, and a constant block comes back close. */
static void test_edges(void **state)
{
    (void)state;
    float x[512], y[512];
    for (size_t i = 0; i < N_NEW; i++) {
        int t = new_types[i];
        uint8_t q[2 * 176];
        lpk_error err = {0};
        memset(x, 0, sizeof x);
        assert_int_equal(quant_quantize_rows(t, x, 1, 512, q, NULL, &err), LPK_OK);
        quant_dequantize_rows(t, q, 1, 512, y);
        for (int k = 0; k < 512; k++) assert_true(y[k] == 0.0f);
        for (int k = 0; k < 512; k++) x[k] = 0.5f;
        assert_int_equal(quant_quantize_rows(t, x, 1, 512, q, NULL, &err), LPK_OK);
        quant_dequantize_rows(t, q, 1, 512, y);
        for (int k = 0; k < 512; k++) assert_true(fabsf(y[k] - 0.5f) < 0.02f);
        memset(x, 0, sizeof x);
        x[37] = 3.0f;
        x[300] = -1e-30f;
        for (int k = 400; k < 512; k++) x[k] = (k & 1) ? 3.0e38f : -3.0e38f;
        assert_int_equal(quant_quantize_rows(t, x, 1, 512, q, NULL, &err), LPK_OK);
        quant_dequantize_rows(t, q, 1, 512, y);
        for (int k = 0; k < 512; k++) assert_true(isfinite(y[k]));
        assert_true(fabsf(y[37] - 3.0f) < 0.2f);
        x[5] = NAN;
        assert_int_equal(quant_quantize_rows(t, x, 1, 512, q, NULL, &err), LPK_EBADVALUE);
    }
}

/* ---------------------------------------------------------------- llama.cpp */
/* kernel-check-T.gguf (llama-quantize --pure) against kernel-check-f32.gguf:
 * llama.cpp's blocks decoded by our dequantizer land near the f32 weights
 * (type-appropriate error), and our quantizer of the same f32 weights has an
 * error comparable to llama.cpp's. */
static void test_llama_cpp_files(void **state)
{
    (void)state;
    /* per tensor: llama.cpp's blocks within [lo, hi]; pooled: llama.cpp's blocks
     * give exactly the measured cpp (1e-5, a layout check), ours the measured
     * ours (1%) */
    static const struct { const char *file; int type; double lo, hi, cpp, ours; } f[] = {
        {"gguf/kernel-check-Q5_K.gguf", LPK_TYPE_Q5_K, 0.01, 0.06, 0.036196, 0.0347645},
        {"gguf/kernel-check-Q3_K.gguf", LPK_TYPE_Q3_K, 0.05, 0.25, 0.150879, 0.145197},
        {"gguf/kernel-check-Q2_K.gguf", LPK_TYPE_Q2_K, 0.10, 0.45, 0.297591, 0.267302},
        {"gguf/kernel-check-IQ4_NL.gguf", LPK_TYPE_IQ4_NL, 0.03, 0.12, 0.0762828, 0.0737852},
        {"gguf/kernel-check-IQ4_XS.gguf", LPK_TYPE_IQ4_XS, 0.03, 0.12, 0.0768571, 0.074227},
    };
    TU_NEED_SHARED(f32p, "gguf/kernel-check-f32.gguf");
    lpk_reader *rf = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(f32p, &rf, &err), LPK_OK);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const char *p = tu_shared(f[i].file);
        assert_non_null(p);
        lpk_reader *r = NULL;
        assert_int_equal(lpk_reader_open(p, &r, &err), LPK_OK);
        double e_cpp = 0, e_ours = 0, sx = 0;
        int n_seen = 0;
        for (size_t k = 0; k < lpk_reader_n_tensors(r); k++) {
            const lpk_tensor *t = lpk_reader_tensor(r, k);
            if (t->n_dims != 2 || t->type != f[i].type) continue;
            const lpk_tensor *tf = lpk_reader_find(rf, t->name);
            assert_non_null(tf);
            assert_int_equal(tf->type, LPK_TYPE_F32);
            int64_t rows = lpk_tensor_nrows(t), cols = lpk_tensor_ncols(t);
            double e, s;
            assert_int_equal(quant_error(t->type, tf->data, t->data, rows, cols, &e, &s), LPK_OK);
            double r1 = sqrt(e / s);
            assert_true(r1 >= f[i].lo && r1 <= f[i].hi);
            e_cpp += e;
            sx += s;
            double ro = tu_rel_rmse(t->type, tf->data, rows, cols, NULL);
            e_ours += ro * ro * s;
            n_seen++;
        }
        assert_true(n_seen >= 4);
        double rc = sqrt(e_cpp / sx), ro = sqrt(e_ours / sx);
        print_message("%-6s %d tensors: rel. RMSE llama.cpp %.6g, llmpack %.6g\n",
                      lpk_type_get(f[i].type)->name, n_seen, rc, ro);
        /* both weight the error by the values (quant_weights_of, llama.cpp x^2 / |x|) */
        assert_true(ro <= 1.02 * rc);
        tu_near("llama.cpp's blocks, pooled", rc, f[i].cpp, 1e-5);
        tu_near("our blocks, pooled", ro, f[i].ours, 0.01);
        lpk_reader_close(r);
    }
    lpk_reader_close(rf);
}

/* quantize (GGUF f32 in) -> .lpk -> export GGUF -> read back: every tensor has
 * the same type and bytes, and general.file_type is llama.cpp's for the type. */
static void test_gguf_export_roundtrip(void **state)
{
    (void)state;
    static const struct { const char *type; int id; unsigned ftype; } f[] = {
        {"q5_k", LPK_TYPE_Q5_K, 17}, {"q3_k", LPK_TYPE_Q3_K, 12}, {"q2_k", LPK_TYPE_Q2_K, 10},
        {"iq4_nl", LPK_TYPE_IQ4_NL, 25}, {"iq4_xs", LPK_TYPE_IQ4_XS, 30},
    };
    const char *src = tu_kernel_check();
    char *dir = tu_tmpdir();
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        char *l = tu_fmt("%s/%s.lpk", dir, f[i].type), *g = tu_fmt("%s/%s.gguf", dir, f[i].type);
        char *out = NULL;
        int rc = tu_llmpack(&out, "quantize '%s' --type %s --pure -o '%s'", src, f[i].type, l);
        if (rc != 0) fail_msg("quantize %s: %s", f[i].type, out ? out : "");
        free(out);
        rc = tu_llmpack(&out, "export '%s' -o '%s'", l, g);
        if (rc != 0) fail_msg("export %s: %s", f[i].type, out ? out : "");
        free(out);
        lpk_reader *a = NULL, *b = NULL;
        lpk_error err = {0};
        assert_int_equal(lpk_reader_open(l, &a, &err), LPK_OK);
        assert_int_equal(lpk_reader_open(g, &b, &err), LPK_OK);
        assert_int_equal(lpk_reader_kind(b), LPK_KIND_GGUF);
        int n_typed = 0;
        for (size_t k = 0; k < lpk_reader_n_tensors(a); k++) {
            const lpk_tensor *ta = lpk_reader_tensor(a, k), *tb = lpk_reader_find(b, ta->name);
            assert_non_null(tb);
            assert_int_equal(ta->type, tb->type);
            assert_int_equal(ta->size, tb->size);
            assert_memory_equal(ta->data, tb->data, (size_t)ta->size);
            n_typed += ta->type == f[i].id;
        }
        assert_true(n_typed >= 28);
        uint32_t ft = 0;
        assert_int_equal(lpk_meta_get_u32(lpk_reader_meta(b), "general.file_type", &ft), LPK_OK);
        assert_int_equal(ft, f[i].ftype);
        lpk_reader_close(a);
        lpk_reader_close(b);
        free(l);
        free(g);
    }
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formulas),        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_simd_same_bytes), cmocka_unit_test(test_edges),
        cmocka_unit_test(test_llama_cpp_files), cmocka_unit_test(test_gguf_export_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
