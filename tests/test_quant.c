/* quant/: dequantization against GGML's block definitions, round-trip error,
 * SIMD == reference, edge values, recipes against llama.cpp's files, and a
 * cross-check with llama.cpp's quantized tensors of llama2-20m. */
#include "tutil.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../format/lpk.h"
#include "../quant/quant.h"

static const int block_types[] = {LPK_TYPE_Q8_0, LPK_TYPE_Q4_0, LPK_TYPE_Q4_1, LPK_TYPE_Q5_0,
                                  LPK_TYPE_Q5_1, LPK_TYPE_Q4_K, LPK_TYPE_Q6_K};
#define N_BLOCK_TYPES (sizeof block_types / sizeof block_types[0])

/* ---------------------------------------------------------------- formulas */
/* Hand-written blocks; expected values from GGML's block definitions. */
static void test_dequant_formulas(void **state)
{
    (void)state;
    float y[256];
    {
        block_q4_0 b = {0};
        b.d = 0x3800; /* 0.5 */
        b.qs[0] = 0x9f; /* element 0: 15, element 16: 9 */
        b.qs[7] = 0x08; /* element 7: 8 -> 0, element 23: 0 -> -8 */
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q4_0, &b, 1, 32, y), LPK_OK);
        assert_true(y[0] == 3.5f && y[16] == 0.5f && y[7] == 0.0f && y[23] == -4.0f);
        assert_true(y[1] == -4.0f);
    }
    {
        block_q4_1 b = {0};
        b.d = 0x3400; /* 0.25 */
        b.m = 0xbc00; /* -1 */
        b.qs[1] = 0x21;
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q4_1, &b, 1, 32, y), LPK_OK);
        assert_true(y[1] == -0.75f && y[17] == -0.5f && y[0] == -1.0f);
    }
    {
        block_q5_0 b = {0};
        b.d = 0x3c00; /* 1 */
        b.qs[3] = 0x25;  /* element 3 low nibble 5, element 19 high nibble 2 */
        b.qh[0] = 0x08;  /* 5th bit of element 3 */
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q5_0, &b, 1, 32, y), LPK_OK);
        assert_true(y[3] == 5.0f && y[19] == -14.0f && y[0] == -16.0f);
    }
    {
        block_q5_1 b = {0};
        b.d = 0x3800; /* 0.5 */
        b.m = 0x3c00; /* 1 */
        b.qs[0] = 0xf0;
        b.qh[2] = 0x01; /* bit 16: 5th bit of element 16 */
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q5_1, &b, 1, 32, y), LPK_OK);
        assert_true(y[0] == 1.0f && y[16] == 16.5f);
    }
    {
        block_q8_0 b = {0};
        b.d = 0x4000; /* 2 */
        b.qs[5] = -3;
        b.qs[31] = -128;
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q8_0, &b, 1, 32, y), LPK_OK);
        assert_true(y[5] == -6.0f && y[31] == -256.0f && y[0] == 0.0f);
    }
    {
        /* q4_K: sub-block 0 (sc 3, m 2), sub-block 5 (sc 37, m 50: 6-bit packing) */
        block_q4_K b = {0};
        b.d = 0x3c00;    /* 1 */
        b.dmin = 0x3800; /* 0.5 */
        b.scales[0] = 3;
        b.scales[4] = 2;
        b.scales[9] = (37 & 15) | ((50 & 15) << 4);
        b.scales[1] = (uint8_t)((37 >> 4) << 6);
        b.scales[5] = (uint8_t)((50 >> 4) << 6);
        b.qs[0] = 0x07;        /* element 0 (sub-block 0), element 32 (sub-block 1) */
        b.qs[64 + 4] = 0x90;   /* element 164 = sub-block 5, l = 4: high nibble */
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q4_K, &b, 1, 256, y), LPK_OK);
        assert_true(y[0] == 20.0f);            /* 1*3*7 - 0.5*2 */
        assert_true(y[32] == 0.0f);            /* sub-block 1: sc 0, m 0 */
        assert_true(y[164] == 308.0f);         /* 37*9 - 0.5*50 */
        assert_true(y[160] == -25.0f);         /* q 0 */
        assert_true(y[128] == 0.0f);           /* sub-block 4: sc 0, m 0 */
    }
    {
        /* q6_K: element e of chunk c = e / 128, l = e % 32, group g = (e % 128) / 32:
         * low 4 bits in ql[64c + l + 32*(g&1)] (low nibble for g < 2), high 2 bits in
         * qh[32c + l] at bit 2g; scale scales[e / 16]; x = d * sc * (q - 32). */
        block_q6_K b = {0};
        b.d = 0x3800; /* 0.5 */
        b.scales[0] = -2;
        b.scales[7] = 5;
        b.scales[12] = 1;
        b.ql[0] = 0x0a;
        b.qh[0] = 0x02;          /* element 0: q = 10 | (2 << 4) = 42 */
        b.ql[48] = 0x30;         /* element 112: g 3 -> ql[l+32] high nibble, l = 16 */
        b.ql[64 + 8] = 0xf0;     /* element 200: chunk 1, e' 72, g 2, l 8: high nibble */
        b.qh[32 + 8] = 0x30;     /* bits 4-5 = 3 */
        assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q6_K, &b, 1, 256, y), LPK_OK);
        assert_true(y[0] == -10.0f);          /* 0.5 * -2 * (42 - 32) */
        assert_true(y[112] == -72.5f);        /* 0.5 * 5 * (3 - 32) */
        assert_true(y[200] == 15.5f);         /* 0.5 * 1 * (63 - 32) */
        assert_true(y[1] == 32.0f);           /* 0.5 * -2 * (0 - 32) */
    }
    /* plain types */
    uint16_t h[2] = {0x3c00, 0xc000};
    assert_int_equal(quant_dequantize_rows(LPK_TYPE_F16, h, 1, 2, y), LPK_OK);
    assert_true(y[0] == 1.0f && y[1] == -2.0f);
    assert_int_equal(quant_dequantize_rows(LPK_TYPE_Q4_K, h, 1, 100, y), LPK_EINVAL);
}

/* Encoding then decoding hand-picked values that are exactly representable. */
static void test_exact_values(void **state)
{
    (void)state;
    float x[256], y[256];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16) * 0.25f; /* -4 .. 3.75 */
    void *q = malloc(1024);
    lpk_error err = {0};
    /* q5_0 has levels -16..15: d = 0.25 reproduces these exactly */
    assert_int_equal(quant_quantize_rows(LPK_TYPE_Q5_0, x, 1, 32, q, NULL, &err), LPK_OK);
    quant_dequantize_rows(LPK_TYPE_Q5_0, q, 1, 32, y);
    assert_memory_equal(x, y, 32 * sizeof(float));
    assert_int_equal(quant_quantize_rows(LPK_TYPE_Q8_0, x, 1, 32, q, NULL, &err), LPK_OK);
    quant_dequantize_rows(LPK_TYPE_Q8_0, q, 1, 32, y);
    assert_memory_equal(x, y, 32 * sizeof(float));
    assert_int_equal(quant_quantize_rows(LPK_TYPE_Q5_1, x, 1, 32, q, NULL, &err), LPK_OK);
    quant_dequantize_rows(LPK_TYPE_Q5_1, q, 1, 32, y);
    assert_memory_equal(x, y, 32 * sizeof(float));
    for (int i = 0; i < 256; i++) x[i] = (float)((i % 16) - 8) * 0.5f;
    assert_int_equal(quant_quantize_rows(LPK_TYPE_Q6_K, x, 1, 256, q, NULL, &err), LPK_OK);
    quant_dequantize_rows(LPK_TYPE_Q6_K, q, 1, 256, y);
    assert_memory_equal(x, y, 256 * sizeof(float));
    /* q4_k: the 6-bit sub-block scales times an f16 super scale come close */
    assert_int_equal(quant_quantize_rows(LPK_TYPE_Q4_K, x, 1, 256, q, NULL, &err), LPK_OK);
    quant_dequantize_rows(LPK_TYPE_Q4_K, q, 1, 256, y);
    float worst = 0;
    for (int i = 0; i < 256; i++) worst = fmaxf(worst, fabsf(x[i] - y[i]));
    print_message("q4_k on exact values: largest error %.6g\n", worst);
    tu_near("q4_k largest error on exact values", worst, 0.0009765625, 0);   /* 2^-10 */
    free(q);
}

/* ---------------------------------------------------------------- round trip */
/* Plain round-to-nearest with the max-abs scale (GGML's q4_0 reference), as the
 * baseline the search must beat. */
static double rtn_q4_0_sse(const float *x, int64_t n)
{
    double e = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0, mx = 0;
        for (int i = 0; i < 32; i++)
            if (fabsf(x[32 * b + i]) > amax) { amax = fabsf(x[32 * b + i]); mx = x[32 * b + i]; }
        float d = lpk_f16_to_f32(lpk_f32_to_f16(mx / -8.0f));
        for (int i = 0; i < 32; i++) {
            float v = d ? x[32 * b + i] / d : 0;
            float q = fminf(fmaxf(roundf(v), -8), 7);
            double r = x[32 * b + i] - q * d;
            e += r * r;
        }
    }
    return e;
}

/* Error of the blocks q against x (nr rows of nc), each value weighted by
 * im[c] (1 if NULL; its square root when root_im) times |x| (k < 0) or
 * sqrt(k sigma^2 + x^2), sigma^2 the row's mean square: the rules of
 * QUANT_ROWS_OUTPUT_WEIGHTING / QUANT_ROWS_LOOKUP written out. */
static double rule_error(int type, const void *q, const float *x, int64_t nr, int64_t nc,
                         const float *im, int root_im, double k)
{
    float *y = malloc(nr * nc * sizeof(float));
    quant_dequantize_rows(type, q, nr, nc, y);
    double e = 0;
    for (int64_t r = 0; r < nr; r++) {
        const float *xr = x + r * nc, *yr = y + r * nc;
        double s2 = 0;
        for (int64_t i = 0; i < nc; i++) s2 += (double)xr[i] * xr[i];
        s2 = k * s2 / (double)nc;
        for (int64_t i = 0; i < nc; i++) {
            double a = k < 0 ? fabs(xr[i]) : sqrt(s2 + (double)xr[i] * xr[i]);
            double c = !im ? 1.0 : root_im ? sqrt(im[i]) : im[i];
            e += c * a * pow(xr[i] - yr[i], 2);
        }
    }
    free(y);
    return e;
}

static void test_roundtrip_random(void **state)
{
    (void)state;
    const int64_t nr = 16, nc = 512;
    float *x = malloc(nr * nc * sizeof(float)), *w = malloc(nc * sizeof(float));
    uint64_t s = 11;
    for (int64_t i = 0; i < nr * nc; i++) x[i] = tu_randn(&s) * 0.02f;
    for (int64_t i = 0; i < nc; i++) w[i] = 0.1f + (float)(tu_rand(&s) % 1000) / 100.0f;
    /* rel. RMSE on Gaussian weights, as measured (deterministic: the same on
     * every kernel path; 1% either way fails) */
    static const struct { int type; double want; } bound[] = {
        {LPK_TYPE_Q8_0, 0.00529905}, {LPK_TYPE_Q6_K, 0.0169141}, {LPK_TYPE_Q5_0, 0.039979},
        {LPK_TYPE_Q5_1, 0.033368},   {LPK_TYPE_Q4_0, 0.0801772}, {LPK_TYPE_Q4_1, 0.0696975},
        {LPK_TYPE_Q4_K, 0.0702414},  {LPK_TYPE_F16, 0.000203871}, {LPK_TYPE_BF16, 0.00165385},
        {LPK_TYPE_F32, 0.0},
    };
    for (size_t i = 0; i < sizeof bound / sizeof bound[0]; i++) {
        double r = tu_rel_rmse(bound[i].type, x, nr, nc, NULL);
        print_message("%-5s rel. RMSE %.6g\n", lpk_type_get(bound[i].type)->name, r);
        tu_near(lpk_type_get(bound[i].type)->name, r, bound[i].want, 0.01);
    }
    /* the search beats round-to-nearest with the max-abs scale */
    double ssx = 0;
    for (int64_t i = 0; i < nr * nc; i++) ssx += (double)x[i] * x[i];
    double rtn = sqrt(rtn_q4_0_sse(x, nr * nc) / ssx);
    double ours = tu_rel_rmse(LPK_TYPE_Q4_0, x, nr, nc, NULL);
    print_message("q4_0 round-to-nearest %.6g, search %.6g\n", rtn, ours);
    assert_true(ours < rtn * 0.97);
    /* importance weights lower the weighted error they are given (to the
     * measured values, 1%) */
    static const struct { int type; double plain, weighted; } imp[] = {
        {LPK_TYPE_Q8_0, 0.000478232, 0.000404232}, {LPK_TYPE_Q4_0, 0.109605, 0.105764},
        {LPK_TYPE_Q4_1, 0.082941, 0.0778024},      {LPK_TYPE_Q5_0, 0.0271053, 0.0260525},
        {LPK_TYPE_Q5_1, 0.0189076, 0.0177857},     {LPK_TYPE_Q4_K, 0.0840763, 0.0791071},
        {LPK_TYPE_Q6_K, 0.00490473, 0.00463318},
    };
    for (size_t t = 0; t < N_BLOCK_TYPES; t++) {
        int type = block_types[t];
        void *q1 = malloc(tu_qbytes(type, nr, nc)), *q2 = malloc(tu_qbytes(type, nr, nc));
        float *y = malloc(nr * nc * sizeof(float));
        lpk_error err = {0};
        assert_int_equal(quant_quantize_rows(type, x, nr, nc, q1, NULL, &err), 0);
        assert_int_equal(quant_quantize_rows(type, x, nr, nc, q2, w, &err), 0);
        double e1 = 0, e2 = 0;
        quant_dequantize_rows(type, q1, nr, nc, y);
        for (int64_t i = 0; i < nr * nc; i++) e1 += w[i % nc] * pow(x[i] - y[i], 2);
        quant_dequantize_rows(type, q2, nr, nc, y);
        for (int64_t i = 0; i < nr * nc; i++) e2 += w[i % nc] * pow(x[i] - y[i], 2);
        print_message("%-5s weighted error: plain %.6g, with importance %.6g\n",
                      lpk_type_get(type)->name, e1, e2);
        assert_true(e2 < e1);
        size_t k = 0;
        while (k < sizeof imp / sizeof imp[0] && imp[k].type != type) k++;
        if (k == sizeof imp / sizeof imp[0]) fail_msg("no measured errors for %s", lpk_type_get(type)->name);
        tu_near("weighted error, plain", e1, imp[k].plain, 0.01);
        tu_near("weighted error, with importance", e2, imp[k].weighted, 0.01);
        free(q1); free(q2); free(y);
    }
    /* the output weighting lowers the error it weights by (|x| e^2) for the
     * super-block types and leaves the 32-block types' bytes as they are */
    for (size_t t = 0; t < N_BLOCK_TYPES; t++) {
        int type = block_types[t];
        size_t nb = tu_qbytes(type, nr, nc);
        void *q1 = malloc(nb), *q2 = malloc(nb);
        lpk_error err = {0};
        assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, q1, NULL, 0, &err), 0);
        assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, q2, NULL,
                                                QUANT_ROWS_OUTPUT_WEIGHTING, &err), 0);
        if (lpk_type_get(type)->block_size < QK_K) {
            assert_memory_equal(q1, q2, nb);
        } else {
            double e1 = rule_error(type, q1, x, nr, nc, NULL, 0, -1.0),
                   e2 = rule_error(type, q2, x, nr, nc, NULL, 0, -1.0);
            print_message("%-6s |x|-weighted error: plain %.4g, output weighting %.4g\n",
                          lpk_type_get(type)->name, e1, e2);
            assert_true(e2 < e1);
        }
        free(q1); free(q2);
    }
    /* a lookup table (QUANT_ROWS_LOOKUP): the k-quants weight by
     * sqrt(sigma^2 + x^2), lower on that weighted error than the |x| rule (and
     * for q5_k the bytes of the output weighting with an importance of 1
     * everywhere, which is that rule for q5_k); iq4_xs keeps |x|; the 32-block
     * types stay unweighted */
    float *ones = malloc(nc * sizeof(float));
    for (int64_t c = 0; c < nc; c++) ones[c] = 1.0f;
    static const int all_types[] = {LPK_TYPE_Q8_0, LPK_TYPE_Q4_0, LPK_TYPE_Q4_1, LPK_TYPE_Q5_0,
                                    LPK_TYPE_Q5_1, LPK_TYPE_IQ4_NL, LPK_TYPE_Q2_K, LPK_TYPE_Q3_K,
                                    LPK_TYPE_Q4_K, LPK_TYPE_Q5_K, LPK_TYPE_Q6_K, LPK_TYPE_IQ4_XS};
    for (size_t t = 0; t < sizeof all_types / sizeof all_types[0]; t++) {
        int type = all_types[t];
        size_t nb = tu_qbytes(type, nr, nc);
        void *ql = malloc(nb), *qo = malloc(nb), *qs = malloc(nb);
        lpk_error err = {0};
        assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, ql, NULL,
                                                QUANT_ROWS_OUTPUT_WEIGHTING | QUANT_ROWS_LOOKUP,
                                                &err), 0);
        assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, qo, NULL,
                                                QUANT_ROWS_OUTPUT_WEIGHTING, &err), 0);
        assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, qs, ones,
                                                QUANT_ROWS_OUTPUT_WEIGHTING, &err), 0);
        if (lpk_type_get(type)->block_size < QK_K) {
            assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, qo, NULL, 0,
                                                    &err), 0);
            assert_memory_equal(ql, qo, nb);
        } else if (type == LPK_TYPE_IQ4_XS) {
            assert_memory_equal(ql, qo, nb);
        } else {
            if (type == LPK_TYPE_Q5_K) assert_memory_equal(ql, qs, nb);
            else assert_memory_not_equal(ql, qs, nb);
            double e[2] = {rule_error(type, qo, x, nr, nc, NULL, 0, 1.0),
                           rule_error(type, ql, x, nr, nc, NULL, 0, 1.0)};
            print_message("%-6s sqrt(sigma^2+x^2)-weighted error: |x| rule %.4g, lookup %.4g\n",
                          lpk_type_get(type)->name, e[0], e[1]);
            assert_true(e[1] < e[0]);
        }
        free(ql); free(qo); free(qs);
    }
    /* with an importance matrix every type weights by importance x
     * sqrt(k sigma^2 + x^2), k = 1/4 (q5_k: 1; q2_k: sqrt(importance) x |x|):
     * lower on that error than the importance alone; iq4_nl takes the
     * importance to the power 1/10 alone (the bytes of that vector given as the
     * importance), and the output matrix at iq4_nl/iq4_xs (QUANT_ROWS_HEAD) the
     * importance as given */
    float *w10 = malloc(nc * sizeof(float));
    for (int64_t c = 0; c < nc; c++) w10[c] = (float)pow((double)w[c], 0.1);
    for (size_t t = 0; t < sizeof all_types / sizeof all_types[0]; t++) {
        int type = all_types[t];
        double k = type == LPK_TYPE_Q5_K ? 1.0 : 0.25;
        size_t nb = tu_qbytes(type, nr, nc);
        void *qi = malloc(nb), *qw = malloc(nb), *qh = malloc(nb);
        lpk_error err = {0};
        assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, qi, w, 0, &err), 0);
        assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, qw, w,
                                                QUANT_ROWS_OUTPUT_WEIGHTING, &err), 0);
        assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, qh, w,
                                                QUANT_ROWS_OUTPUT_WEIGHTING | QUANT_ROWS_HEAD,
                                                &err), 0);
        if (type == LPK_TYPE_IQ4_NL || type == LPK_TYPE_IQ4_XS) {
            assert_memory_equal(qh, qi, nb);
        } else {
            assert_memory_equal(qh, qw, nb);
        }
        if (type == LPK_TYPE_IQ4_NL) {
            assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, qi, w10, 0,
                                                    &err), 0);
            assert_memory_equal(qw, qi, nb);
            free(qi); free(qw); free(qh);
            continue;
        }
        int q2 = type == LPK_TYPE_Q2_K;
        double e[2] = {rule_error(type, qi, x, nr, nc, w, q2, q2 ? -1.0 : k),
                       rule_error(type, qw, x, nr, nc, w, q2, q2 ? -1.0 : k)};
        print_message("%-6s weighted error (k %.2f): importance alone %.4g, output weighting "
                      "%.4g\n", lpk_type_get(type)->name, k, e[0], e[1]);
        assert_true(e[1] < e[0]);
        free(qi); free(qw); free(qh);
    }
    free(w10);
    free(ones);
    /* which tensors are lookup tables, which the output matrix */
    lpk_tensor ts[3];
    memset(ts, 0, sizeof ts);
    snprintf(ts[0].name, sizeof ts[0].name, "token_embd.weight");
    snprintf(ts[1].name, sizeof ts[1].name, "blk.0.attn_q.weight");
    snprintf(ts[2].name, sizeof ts[2].name, "output.weight");
    assert_int_equal(quant_rows_flags("token_embd.weight", ts, 3),
                     QUANT_ROWS_OUTPUT_WEIGHTING | QUANT_ROWS_LOOKUP);
    assert_int_equal(quant_rows_flags("blk.0.attn_q.weight", ts, 3), QUANT_ROWS_OUTPUT_WEIGHTING);
    assert_int_equal(quant_rows_flags("output.weight", ts, 3),
                     QUANT_ROWS_OUTPUT_WEIGHTING | QUANT_ROWS_HEAD);
    /* tied: the embedding is also the output matrix */
    assert_int_equal(quant_rows_flags("token_embd.weight", ts, 2),
                     QUANT_ROWS_OUTPUT_WEIGHTING | QUANT_ROWS_HEAD);
    free(x);
    free(w);
}

/* ---------------------------------------------------------------- f16/bf16 input */
/* quant_quantize_rows_from on f16 and bf16 rows gives the bytes of converting
 * the tensor to f32 first, for every type, and reports a NaN in the source. */
static void test_rows_from_halfs(void **state)
{
    (void)state;
    const int64_t nr = 41, nc = 512;
    float *x = malloc(nr * nc * sizeof(float));
    uint16_t *h = malloc(nr * nc * 2);
    uint64_t s = 11;
    for (int64_t i = 0; i < nr * nc; i++) x[i] = tu_randn(&s) * (i % 89 == 0 ? 0.2f : 0.02f);
    const int types[] = {LPK_TYPE_Q4_0, LPK_TYPE_Q4_1, LPK_TYPE_Q5_0, LPK_TYPE_Q5_1,
                         LPK_TYPE_Q8_0, LPK_TYPE_Q4_K, LPK_TYPE_Q6_K, LPK_TYPE_Q3_K,
                         LPK_TYPE_Q2_K, LPK_TYPE_Q5_K, LPK_TYPE_F16,
                         LPK_TYPE_BF16, LPK_TYPE_F32};
    for (int src = 0; src < 2; src++) {
        int st = src ? LPK_TYPE_BF16 : LPK_TYPE_F16;
        float *y = malloc(nr * nc * sizeof(float));
        for (int64_t i = 0; i < nr * nc; i++) {
            h[i] = st == LPK_TYPE_F16 ? lpk_f32_to_f16(x[i]) : lpk_f32_to_bf16(x[i]);
            y[i] = st == LPK_TYPE_F16 ? lpk_f16_to_f32(h[i]) : lpk_bf16_to_f32(h[i]);
        }
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            size_t nb = tu_qbytes(types[t], nr, nc);
            uint8_t *want = malloc(nb), *got = malloc(nb);
            lpk_error err = {0};
            for (unsigned fl = 0; fl < 2; fl++) {
                quant_set_path(QUANT_PATH_SCALAR);
                assert_int_equal(quant_quantize_rows_ex(types[t], LPK_TYPE_F32, y, nr, nc, want,
                                                        NULL, fl, &err), 0);
                /* every path, converting row by row or inside the many-block kernels */
                for (int p = 0; p < 3; p++) {
                    quant_set_path(p);
                    memset(got, 0xaa, nb);
                    assert_int_equal(quant_quantize_rows_ex(types[t], st, h, nr, nc, got, NULL, fl,
                                                            &err), 0);
                    assert_memory_equal(want, got, nb);
                }
            }
            quant_set_path(QUANT_PATH_AUTO);
            free(want);
            free(got);
        }
        free(y);
    }
    uint8_t *q = malloc(tu_qbytes(LPK_TYPE_Q8_0, nr, nc));
    lpk_error err = {0};
    h[7 * nc + 100] = 0x7e00; /* f16 NaN */
    assert_int_equal(quant_quantize_rows_from(LPK_TYPE_Q8_0, LPK_TYPE_F16, h, nr, nc, q, NULL, &err),
                     LPK_EBADVALUE);
    assert_non_null(strstr(err.msg, "NaN at row 7, column 100"));
    assert_int_equal(quant_quantize_rows_from(LPK_TYPE_Q8_0, LPK_TYPE_Q8_0, h, nr, nc, q, NULL, &err),
                     LPK_EINVAL);
    free(q);
    free(h);
    free(x);
}

/* ---------------------------------------------------------------- determinism */
/* x quantized by the reference on 1 thread, and by AVX2 and the automatic path
 * (AVX-512 where the CPU has it) on 2 threads: the same bytes, the same
 * dequantized values and the same error sums, bit for bit (quant_error's and
 * those measured while quantizing). */
static void check_paths(int type, const float *x, int64_t nr, int64_t nc, const float *w,
                        unsigned flags)
{
    size_t nb = tu_qbytes(type, nr, nc);
    uint8_t *a = malloc(nb), *b = malloc(nb);
    float *ya = malloc((size_t)(nr * nc) * sizeof(float)), *yb = malloc((size_t)(nr * nc) * sizeof(float));
    lpk_error err = {0};
    double e0, s0, e, s;
    quant_set_path(QUANT_PATH_SCALAR);
    omp_set_num_threads(1);
    assert_int_equal(quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, a, w, flags, &err), 0);
    assert_int_equal(quant_error(type, x, a, nr, nc, &e0, &s0), 0);
    assert_int_equal(quant_dequantize_rows(type, a, nr, nc, ya), 0);
    for (int p = 0; p < 3; p++) {
        quant_set_path(p == 2 ? QUANT_PATH_SCALAR : p ? QUANT_PATH_AVX2 : QUANT_PATH_AUTO);
        omp_set_num_threads(2);
        memset(b, 0xaa, nb);
        e = s = -1;
        assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, b, w, NULL, flags,
                                                 &e, &s, &err), 0);
        assert_memory_equal(a, b, nb);
        assert_memory_equal(&e, &e0, sizeof e);
        assert_memory_equal(&s, &s0, sizeof s);
        assert_int_equal(quant_error(type, x, b, nr, nc, &e, &s), 0);
        assert_memory_equal(&e, &e0, sizeof e);
        assert_memory_equal(&s, &s0, sizeof s);
        assert_int_equal(quant_dequantize_rows(type, b, nr, nc, yb), 0);
        assert_memory_equal(ya, yb, (size_t)(nr * nc) * sizeof(float));
    }
    quant_set_path(QUANT_PATH_AUTO);
    free(a);
    free(b);
    free(ya);
    free(yb);
}
static void test_simd_and_threads(void **state)
{
    (void)state;
    const int64_t nr = 37, nc = 768;
    float *x = malloc(nr * nc * sizeof(float)), *w = malloc(nc * sizeof(float));
    uint64_t s = 5;
    for (int64_t i = 0; i < nr * nc; i++) {
        x[i] = tu_randn(&s) * (i % 97 == 0 ? 0.3f : 0.02f);
        if (i % 1013 == 0) x[i] = 0.0f;
        if (i > 0 && i % 2039 == 0) x[i] = -x[i - 1];
    }
    for (int i = 0; i < 64; i++) x[5 * nc + i] = 0.0f;      /* all-zero blocks */
    for (int i = 0; i < 64; i++) x[6 * nc + i] = 0.125f;    /* constant blocks */
    for (int64_t i = 0; i < nc; i++) w[i] = (float)(tu_rand(&s) % 100) / 10.0f;
    for (size_t t = 0; t < N_BLOCK_TYPES; t++) {
        /* without and with importance weights, each with and without the
         * output weighting */
        for (int wi = 0; wi < 6; wi++) {
            print_message("%-5s %s%s%s vs scalar, 2 vs 1 threads\n",
                          lpk_type_get(block_types[t])->name, quant_path_name(block_types[t]),
                          wi & 1 ? " (weights)" : "",
                          wi & 4 ? " (lookup)" : wi & 2 ? " (output weighting)" : "");
            check_paths(block_types[t], x, nr, nc, wi & 1 ? w : NULL,
                        wi & 4 ? QUANT_ROWS_OUTPUT_WEIGHTING | QUANT_ROWS_LOOKUP
                        : wi & 2 ? QUANT_ROWS_OUTPUT_WEIGHTING : 0u);
        }
    }
    free(x);
    free(w);
}

/* The error sums that the 32-block kernels add up while they quantize
 * (quant_err_acc) against the separate pass over the rows (the scalar path:
 * the reference quantizer, then the rows dequantized and compared) and
 * quant_error on the f32 values: the same bits, from f32, f16 and bf16 rows,
 * with and without weights, added to a previous figure or not, in shapes whose
 * groups of 8 and 16 blocks span rows (a row of 1, 3, 5, 19 blocks), end in a
 * padded group (257 blocks: one row per chunk) or hold whole rows. A NaN in a
 * whole group, in a padded one or in the last block gives the same error and
 * leaves the sums alone on every path. */
static void test_fused_err_sums(void **state)
{
    (void)state;
    const int64_t shapes[][2] = {{37, 5}, {50, 3}, {9, 19}, {3, 257}, {64, 1}, {11, 16}};
    const int types[] = {LPK_TYPE_Q8_0, LPK_TYPE_Q4_0, LPK_TYPE_Q4_1, LPK_TYPE_Q5_0,
                         LPK_TYPE_Q5_1};
    const int srcs[] = {LPK_TYPE_F32, LPK_TYPE_F16, LPK_TYPE_BF16};
    uint64_t sd = 23;
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        int64_t nr = shapes[sh][0], nc = 32 * shapes[sh][1], n = nr * nc;
        float *x = malloc((size_t)n * sizeof(float)), *xs = malloc((size_t)n * sizeof(float));
        float *w = malloc((size_t)nc * sizeof(float));
        uint16_t *h = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) {
            x[i] = tu_randn(&sd) * (i % 71 == 0 ? 0.4f : 0.02f);
            if (i % 613 == 0) x[i] = -0.0f;
        }
        for (int64_t i = 0; i < nc; i++) w[i] = (float)(tu_rand(&sd) % 90) / 9.0f;
        for (size_t si = 0; si < sizeof srcs / sizeof srcs[0]; si++) {
            int st = srcs[si];
            const void *src = st == LPK_TYPE_F32 ? (const void *)x : h;
            for (int64_t i = 0; i < n; i++) {
                if (st == LPK_TYPE_F16) h[i] = lpk_f32_to_f16(x[i]);
                if (st == LPK_TYPE_BF16) h[i] = lpk_f32_to_bf16(x[i]);
                xs[i] = st == LPK_TYPE_F32 ? x[i] : st == LPK_TYPE_F16 ? lpk_f16_to_f32(h[i])
                                                                       : lpk_bf16_to_f32(h[i]);
            }
            for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
                size_t nb = tu_qbytes(types[t], nr, nc);
                uint8_t *a = malloc(nb), *b = malloc(nb);
                lpk_error err = {0};
                for (int wi = 0; wi < 4; wi++) {
                    const float *im = wi & 1 ? w : NULL;
                    unsigned fl = wi & 2 ? QUANT_ROWS_ADD_ERR : 0u;
                    double e0 = 0.25, s0 = 3.0, e, s;
                    quant_set_path(QUANT_PATH_SCALAR);
                    omp_set_num_threads(1);
                    assert_int_equal(quant_quantize_rows_err(types[t], st, src, nr, nc, a, im, NULL,
                                                             fl, &e0, &s0, &err), 0);
                    if (!fl) {
                        assert_int_equal(quant_error(types[t], xs, a, nr, nc, &e, &s), 0);
                        assert_memory_equal(&e, &e0, sizeof e);
                        assert_memory_equal(&s, &s0, sizeof s);
                    }
                    for (int p = 0; p < 2; p++) {
                        quant_set_path(p ? QUANT_PATH_AVX2 : QUANT_PATH_AUTO);
                        omp_set_num_threads(2);
                        memset(b, 0xaa, nb);
                        e = 0.25;
                        s = 3.0;
                        assert_int_equal(quant_quantize_rows_err(types[t], st, src, nr, nc, b, im,
                                                                 NULL, fl, &e, &s, &err), 0);
                        assert_memory_equal(a, b, nb);
                        assert_memory_equal(&e, &e0, sizeof e);
                        assert_memory_equal(&s, &s0, sizeof s);
                    }
                }
                /* a NaN: the first, in a padded group, at the very end */
                int64_t at[3] = {nr / 2 * nc + nc / 3, n - 33, n - 1};
                for (int k = 0; k < 3; k++) {
                    float keep = x[at[k]];
                    uint16_t hk = h[at[k]];
                    x[at[k]] = NAN;
                    h[at[k]] = st == LPK_TYPE_F16 ? 0x7e00 : 0x7fc0;
                    char want[64];
                    snprintf(want, sizeof want, "NaN at row %lld, column %lld",
                             (long long)(at[k] / nc), (long long)(at[k] % nc));
                    for (int p = 0; p < 3; p++) {
                        quant_set_path(p == 2 ? QUANT_PATH_SCALAR : p ? QUANT_PATH_AVX2
                                                                      : QUANT_PATH_AUTO);
                        double e = 0.5, s = 0.75;
                        lpk_error en = {0};
                        assert_int_equal(quant_quantize_rows_err(types[t], st, src, nr, nc, b,
                                                                 NULL, NULL, 0, &e, &s, &en),
                                         LPK_EBADVALUE);
                        assert_non_null(strstr(en.msg, want));
                        assert_true(e == 0.5 && s == 0.75);
                    }
                    x[at[k]] = keep;
                    h[at[k]] = hk;
                }
                quant_set_path(QUANT_PATH_AUTO);
                free(a);
                free(b);
            }
        }
        free(x);
        free(xs);
        free(w);
        free(h);
    }
}

/* Blocks chosen to hit every branch of the scale rules: both signs at the
 * maximum, -0.0, all-zero, f16-subnormal and underflowing scales, +-FLT_MAX,
 * denormals, a single non-zero value, a +0 minimum beside -0 values; every path
 * gives the reference's bytes, in rows of 1 to 19 blocks (partial groups of 8
 * and 16 blocks). */
static void test_simd_edge_bytes(void **state)
{
    (void)state;
    const int nblk = 40;
    float *x = malloc((size_t)nblk * 32 * sizeof(float)), *w = malloc(32 * 19 * sizeof(float));
    uint64_t s = 77;
    for (int b = 0; b < nblk; b++) {
        float *v = x + 32 * b;
        float scale = b < 10 ? 1e-5f * (float)(b + 1) : b < 20 ? 3e-7f * (float)(b - 9) : 0.05f;
        for (int i = 0; i < 32; i++) v[i] = tu_randn(&s) * scale;
        switch (b % 10) {
        case 0: v[3] = 1.0f; v[17] = -1.0f; break;            /* both signs at max */
        case 1: memset(v, 0, 32 * sizeof(float)); v[5] = -0.0f; break;
        case 2: for (int i = 0; i < 32; i++) v[i] = -0.0f; v[9] = 2e-3f; break;
        case 3: v[0] = 3.4028235e38f; v[1] = -3.4028235e38f; break;
        case 4: for (int i = 0; i < 32; i++) v[i] = (float)(i % 3 - 1) * 1e-40f; break;
        case 5: v[31] = -v[30] * 40.0f; break;              /* one outlier */
        case 6: for (int i = 0; i < 32; i++) v[i] = fabsf(v[i]); break;
        case 7: for (int i = 0; i < 32; i++) v[i] = -fabsf(v[i]); break;
        case 8: for (int i = 0; i < 32; i++) v[i] = 6.0e-8f * (float)(i % 5); break;
        case 9:
            /* minimum +0 with -0 elements: x - m is -0, the q4_1/q5_1 level a
             * zero of either sign (v_round against the reference's additions) */
            for (int i = 0; i < 32; i++) v[i] = i % 3 == 1 ? -0.0f : fabsf(v[i]);
            v[0] = 0.0f;
            break;
        default: break;
        }
    }
    for (int i = 0; i < 32 * 19; i++) w[i] = i % 7 == 0 ? 0.0f : (float)(tu_rand(&s) % 50) / 7.0f;
    for (size_t t = 0; t < N_BLOCK_TYPES; t++) {
        int type = block_types[t];
        if (lpk_type_get(type)->block_size != 32) continue;
        for (int per = 1; per <= 19; per += 3)
            for (int wi = 0; wi < 4; wi++)
                check_paths(type, x, nblk / per, 32 * per, wi & 1 ? w : NULL,
                            wi & 2 ? QUANT_ROWS_OUTPUT_WEIGHTING : 0u);
    }
    free(x);
    free(w);
}

/* The same for the super-block types (lane per super-block kernels): the
 * patterns above over whole super-blocks or one sub-block of them, in rows of
 * 1 to 19 super-blocks (partial groups of 8 and 16), with and without weights,
 * the output weighting and the lookup one. */
static void test_simd_edge_bytes_k(void **state)
{
    (void)state;
    const int nsb = 40, n = 256;
    float *x = malloc((size_t)nsb * n * sizeof(float)), *w = malloc((size_t)n * 19 * sizeof(float));
    uint64_t s = 91;
    for (int b = 0; b < nsb; b++) {
        float *v = x + n * b;
        float scale = b < 10 ? 1e-5f * (float)(b + 1) : b < 20 ? 3e-7f * (float)(b - 9) : 0.05f;
        for (int i = 0; i < n; i++) v[i] = tu_randn(&s) * scale;
        float *u = v + 16 * (b % 16); /* one sub-block */
        switch (b % 12) {
        case 0: v[3] = 1.0f; v[200] = -1.0f; break;           /* both signs at max */
        case 1: memset(v, 0, n * sizeof(float)); v[5] = -0.0f; break;
        case 2: for (int i = 0; i < n; i++) v[i] = -0.0f; v[99] = 2e-3f; break;
        case 3: v[0] = 3.4028235e38f; v[1] = -3.4028235e38f; break;
        case 4: for (int i = 0; i < n; i++) v[i] = (float)(i % 3 - 1) * 1e-40f; break;
        case 5: v[131] = -v[130] * 40.0f; break;            /* one outlier */
        case 6: for (int i = 0; i < n; i++) v[i] = fabsf(v[i]); break;
        case 7: for (int i = 0; i < n; i++) v[i] = -fabsf(v[i]); break;
        case 8: for (int i = 0; i < n; i++) v[i] = 6.0e-8f * (float)(i % 5); break;
        case 9: memset(u, 0, 16 * sizeof(float)); break;     /* a zero sub-block */
        case 10: for (int i = 0; i < 16; i++) u[i] = 0.125f; break; /* a constant one */
        default: u[7] = -u[6] * 60.0f; break;               /* an outlier in one */
        }
    }
    for (int i = 0; i < n * 19; i++) w[i] = i % 7 == 0 ? 0.0f : (float)(tu_rand(&s) % 50) / 7.0f;
    const int types[] = {LPK_TYPE_Q6_K, LPK_TYPE_Q3_K, LPK_TYPE_Q4_K, LPK_TYPE_Q5_K,
                         LPK_TYPE_Q2_K, LPK_TYPE_IQ4_XS};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (int per = 1; per <= 19; per += 3)
            for (int wi = 0; wi < 6; wi++) {
                print_message("%-6s rows of %d super-blocks, case %d\n",
                              lpk_type_get(types[t])->name, per, wi);
                check_paths(types[t], x, nsb / per, n * per, wi & 1 ? w : NULL,
                            wi & 4 ? QUANT_ROWS_OUTPUT_WEIGHTING | QUANT_ROWS_LOOKUP
                            : wi & 2 ? QUANT_ROWS_OUTPUT_WEIGHTING : 0u);
            }
    free(x);
    free(w);
}

/* ---------------------------------------------------------------- edge values */
static void test_edge_values(void **state)
{
    (void)state;
    const int64_t nc = 256;
    float x[512], y[512];
    uint8_t q[2048];
    lpk_error err = {0};
    for (size_t t = 0; t < N_BLOCK_TYPES; t++) {
        int type = block_types[t];
        /* all zero */
        memset(x, 0, sizeof x);
        assert_int_equal(quant_quantize_rows(type, x, 2, nc, q, NULL, &err), 0);
        quant_dequantize_rows(type, q, 2, nc, y);
        for (int i = 0; i < 2 * nc; i++) assert_true(y[i] == 0.0f);
        /* constant (positive and negative): reproduced closely */
        for (int i = 0; i < 2 * nc; i++) x[i] = i < nc ? 0.3f : -7.25f;
        assert_int_equal(quant_quantize_rows(type, x, 2, nc, q, NULL, &err), 0);
        quant_dequantize_rows(type, q, 2, nc, y);
        for (int i = 0; i < 2 * nc; i++) assert_true(fabsf(y[i] - x[i]) <= 0.01f * fabsf(x[i]));
        /* +-FLT_MAX and denormals: no NaN/Inf out, signs kept */
        for (int i = 0; i < 2 * nc; i++)
            x[i] = i % 5 == 0 ? 3.4028235e38f : i % 5 == 1 ? -3.4028235e38f
                 : i % 5 == 2 ? 1e-41f : i % 5 == 3 ? -2e-39f : 1.0f;
        assert_int_equal(quant_quantize_rows(type, x, 2, nc, q, NULL, &err), 0);
        quant_dequantize_rows(type, q, 2, nc, y);
        for (int i = 0; i < 2 * nc; i++) assert_true(isfinite(y[i]));
        if (type != LPK_TYPE_Q4_1 && type != LPK_TYPE_Q5_1 && type != LPK_TYPE_Q4_K) {
            assert_true(y[0] > 60000.0f);
            assert_true(y[1] < -60000.0f);
        }
        /* only denormals */
        for (int i = 0; i < 2 * nc; i++) x[i] = (i % 3 - 1) * 1e-40f;
        assert_int_equal(quant_quantize_rows(type, x, 2, nc, q, NULL, &err), 0);
        quant_dequantize_rows(type, q, 2, nc, y);
        for (int i = 0; i < 2 * nc; i++) assert_true(fabsf(y[i]) < 1e-30f);
        /* NaN / Inf: an error naming the first bad row and column */
        for (int i = 0; i < 2 * nc; i++) x[i] = 0.5f;
        x[nc + 7] = NAN;
        x[nc + 9] = INFINITY;
        lpk_error_clear(&err);
        assert_int_equal(quant_quantize_rows(type, x, 2, nc, q, NULL, &err), LPK_EBADVALUE);
        assert_non_null(strstr(err.msg, "NaN at row 1, column 7"));
        x[nc + 7] = 0.0f;
        lpk_error_clear(&err);
        assert_int_equal(quant_quantize_rows(type, x, 2, nc, q, NULL, &err), LPK_EBADVALUE);
        assert_non_null(strstr(err.msg, "+Inf at row 1, column 9"));
        lpk_error_clear(&err);
    }
    /* rows that do not fit */
    assert_int_equal(quant_quantize_rows(LPK_TYPE_Q4_K, x, 1, 172, q, NULL, &err), LPK_EINVAL);
    assert_false(quant_row_fits(LPK_TYPE_Q8_0, 172));
    assert_true(quant_row_fits(LPK_TYPE_F16, 172));
    assert_true(quant_row_fits(LPK_TYPE_Q5_0, 64));
    assert_false(quant_row_fits(LPK_TYPE_Q6_K, 64));
}

/* ---------------------------------------------------------------- recipes */
static void plan_file(const char *path, const char *recipe, int check_types)
{
    lpk_reader *r = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(path, &r, &err), LPK_OK);
    size_t n = lpk_reader_n_tensors(r);
    lpk_tensor *ts = calloc(n, sizeof *ts);
    quant_choice *ch = calloc(n, sizeof *ch);
    for (size_t i = 0; i < n; i++) ts[i] = *lpk_reader_tensor(r, i);
    assert_int_equal(quant_plan(recipe, 0, lpk_reader_meta(r), ts, n, ch, &err), LPK_OK);
    int diff = 0;
    for (size_t i = 0; i < n; i++) {
        if (ch[i].type != ts[i].type) {
            print_message("%s: llama.cpp %s, plan %s (%s)\n", ts[i].name,
                          lpk_type_get(ts[i].type)->name, lpk_type_get(ch[i].type)->name,
                          ch[i].note);
            diff++;
        }
    }
    if (check_types) assert_int_equal(diff, 0);
    free(ts);
    free(ch);
    lpk_reader_close(r);
}

static void test_recipe_llama_cpp(void **state)
{
    (void)state;
    TU_NEED_SHARED(p1, "gguf/llama2-20m-Q4_K_M.gguf");
    plan_file(p1, "q4_k_m", 1);
    TU_NEED_SHARED(p2, "gguf/stories260K-Q4_K_M.gguf");
    plan_file(p2, "q4_k_m", 1);
    TU_NEED_SHARED(p3, "gguf/llama2-20m-Q8_0.gguf");
    plan_file(p3, "q8_0", 1);
}

static void set_t(lpk_tensor *t, const char *name, int nd, int64_t d0, int64_t d1)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = LPK_TYPE_F32;
    t->n_dims = nd;
    t->dims[0] = d0;
    t->dims[1] = d1;
}

static void test_recipe_rules(void **state)
{
    (void)state;
    /* stories260K's shapes: dim 64, ffn 172, tied embedding */
    lpk_tensor ts[6];
    set_t(&ts[0], "token_embd.weight", 2, 512, 64);
    set_t(&ts[1], "blk.0.attn_norm.weight", 1, 64, 0);
    set_t(&ts[2], "blk.0.attn_q.weight", 2, 64, 64);
    set_t(&ts[3], "blk.0.ffn_down.weight", 2, 64, 172);
    set_t(&ts[4], "blk.0.ffn_up.weight", 2, 172, 64);
    set_t(&ts[5], "output_norm.weight", 1, 64, 0);
    quant_choice ch[6];
    lpk_error err = {0};
    assert_int_equal(quant_plan("q4_0", 0, NULL, ts, 6, ch, &err), LPK_OK);
    assert_int_equal(ch[0].type, LPK_TYPE_Q8_0); /* output matrix: q6_k -> q8_0 */
    assert_int_equal(ch[0].fallback_from, LPK_TYPE_Q6_K);
    assert_int_equal(ch[1].type, LPK_TYPE_F32);
    assert_int_equal(ch[2].type, LPK_TYPE_Q4_0);
    assert_int_equal(ch[2].fallback_from, -1);
    assert_int_equal(ch[3].type, LPK_TYPE_F16);
    assert_int_equal(ch[3].fallback_from, LPK_TYPE_Q4_0);
    assert_int_equal(ch[4].type, LPK_TYPE_Q4_0);
    assert_int_equal(quant_plan("q4_k", 1, NULL, ts, 6, ch, &err), LPK_OK);
    assert_int_equal(ch[0].type, LPK_TYPE_Q5_0); /* pure: q4_k -> q5_0 */
    assert_int_equal(ch[0].fallback_from, LPK_TYPE_Q4_K);
    assert_int_equal(ch[3].type, LPK_TYPE_F16);
    assert_int_equal(quant_plan("q6_k", 1, NULL, ts, 6, ch, &err), LPK_OK);
    assert_int_equal(ch[2].type, LPK_TYPE_Q8_0);
    assert_int_equal(quant_plan("f16", 0, NULL, ts, 6, ch, &err), LPK_OK);
    assert_int_equal(ch[0].type, LPK_TYPE_F16);
    assert_int_equal(ch[1].type, LPK_TYPE_F32);
    assert_int_equal(quant_plan("q3_k_xl", 0, NULL, ts, 6, ch, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "q3_k_xl"));

    lpk_meta *m = lpk_meta_new();
    assert_int_equal(quant_plan("q4_k_m", 0, NULL, ts, 6, ch, &err), LPK_OK);
    assert_int_equal(quant_plan_record("q4_k_m", 0, ts, ch, 6, m), LPK_OK);
    uint32_t ft;
    assert_int_equal(lpk_meta_get_u32(m, "general.file_type", &ft), 0);
    assert_int_equal(ft, 15);
    assert_string_equal(lpk_meta_get_str(m, "quant.recipe"), "q4_k_m");
    const lpk_kv *kv = lpk_meta_find(m, "quant.fallbacks");
    assert_non_null(kv);
    /* attn_q, ffn_down, ffn_up; the tied embedding goes to q8_0 by llama.cpp's
     * output rule (its rows do not fit q4_k), which is not a fallback */
    assert_int_equal(kv->count, 3);
    assert_int_equal(ch[0].type, LPK_TYPE_Q8_0);
    assert_int_equal(ch[0].fallback_from, -1);
    assert_non_null(strstr(ch[0].note, "q8_0"));
    lpk_meta_free(m);
}

/* ---------------------------------------------------------------- real weights */
/* One tensor of a safetensors file as f32 (f32/f16/bf16). NULL if absent. */
static float *st_tensor(const char *path, const char *name, int64_t *rows, int64_t *cols)
{
    size_t len;
    char *buf = tu_read_file(path, &len);
    if (!buf || len < 8) { free(buf); return NULL; }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)(uint8_t)buf[i] << (8 * i);
    float *out = NULL;
    json_t *root = hl <= len - 8 ? json_loadb(buf + 8, hl, 0, NULL) : NULL;
    json_t *v = root ? json_object_get(root, name) : NULL;
    if (v) {
        const char *dt = json_string_value(json_object_get(v, "dtype"));
        json_t *sh = json_object_get(v, "shape"), *of = json_object_get(v, "data_offsets");
        *rows = json_integer_value(json_array_get(sh, 0));
        *cols = json_integer_value(json_array_get(sh, 1));
        uint64_t o0 = (uint64_t)json_integer_value(json_array_get(of, 0));
        int64_t n = *rows * *cols;
        int es = dt && !strcmp(dt, "F32") ? 4 : 2;
        if (n > 0 && 8 + hl + o0 + (uint64_t)n * es <= len) {
            const uint8_t *p = (const uint8_t *)buf + 8 + hl + o0;
            out = malloc((size_t)n * sizeof(float));
            for (int64_t i = 0; i < n; i++) {
                uint16_t u;
                memcpy(&u, p + 2 * i, 2);
                if (es == 4) memcpy(&out[i], p + 4 * i, 4);
                else out[i] = !strcmp(dt, "F16") ? lpk_f16_to_f32(u) : lpk_bf16_to_f32(u);
            }
        }
    }
    json_decref(root);
    free(buf);
    return out;
}

static float *l20_tensor(const char *hf_name, int64_t *rows, int64_t *cols)
{
    const char *f[2] = {"models/llama2-20m/hf/model-00001-of-00002.safetensors",
                        "models/llama2-20m/hf/model-00002-of-00002.safetensors"};
    for (int i = 0; i < 2; i++) {
        const char *p = tu_shared(f[i]);
        float *x = p ? st_tensor(p, hf_name, rows, cols) : NULL;
        if (x) return x;
    }
    return NULL;
}

/* llama.cpp's blocks of a tensor dequantized with ours against the bf16
 * original (layout compatibility: llama.cpp's file gives exactly the error
 * measured, want_cpp, to 1e-5), and our own blocks' error (want_ours, 1%) no
 * worse than theirs. */
static void crosscheck(const lpk_reader *r, const char *gname, const char *hf_name,
                       double want_cpp, double want_ours)
{
    const lpk_tensor *t = lpk_reader_find(r, gname);
    assert_non_null(t);
    int64_t rows = 0, cols = 0;
    float *x = l20_tensor(hf_name, &rows, &cols);
    assert_non_null(x);
    assert_int_equal(rows, lpk_tensor_nrows(t));
    assert_int_equal(cols, lpk_tensor_ncols(t));
    double e_cpp, s;
    assert_int_equal(quant_error(t->type, x, t->data, rows, cols, &e_cpp, &s), LPK_OK);
    double r_cpp = sqrt(e_cpp / s), r_ours = tu_rel_rmse(t->type, x, rows, cols, NULL);
    print_message("%-24s %-5s llama.cpp %.6g  llmpack %.6g\n", gname,
                  lpk_type_get(t->type)->name, r_cpp, r_ours);
    tu_near("llama.cpp's blocks", r_cpp, want_cpp, 1e-5);
    tu_near("our blocks", r_ours, want_ours, 0.01);
    assert_true(r_ours <= r_cpp);
    free(x);
}

static void test_gguf_crosscheck(void **state)
{
    (void)state;
    TU_NEED_SHARED(m, "models/llama2-20m/hf/model-00001-of-00002.safetensors");
    TU_NEED_SHARED(g8, "gguf/llama2-20m-Q8_0.gguf");
    lpk_reader *r = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(g8, &r, &err), LPK_OK);
    crosscheck(r, "blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight", 0.00543169,
               0.00537597);
    crosscheck(r, "blk.4.attn_v.weight", "model.layers.4.self_attn.v_proj.weight", 0.00541105,
               0.00534346);
    lpk_reader_close(r);
    TU_NEED_SHARED(g4, "gguf/llama2-20m-Q4_K_M.gguf");
    assert_int_equal(lpk_reader_open(g4, &r, &err), LPK_OK);
    crosscheck(r, "blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight", 0.0705848,
               0.0691226);
    crosscheck(r, "blk.2.ffn_down.weight", "model.layers.2.mlp.down_proj.weight", 0.0178187,
               0.0170958);
    crosscheck(r, "blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight",
               0.0681936, 0.0667956);
    if (tu_long())
        crosscheck(r, "output.weight", "lm_head.weight", 0.0158357, 0.0152316);
    lpk_reader_close(r);
}

/* Round-trip error of every type on one real tensor, as measured (1%). */
static void test_real_bounds(void **state)
{
    (void)state;
    TU_NEED_SHARED(m, "models/llama2-20m/hf/model-00001-of-00002.safetensors");
    int64_t rows = 0, cols = 0;
    float *x = l20_tensor("model.layers.3.self_attn.o_proj.weight", &rows, &cols);
    assert_non_null(x);
    static const struct { int type; double want; } bound[] = {
        {LPK_TYPE_Q8_0, 0.00500148}, {LPK_TYPE_Q6_K, 0.0160773}, {LPK_TYPE_Q5_1, 0.0320399},
        {LPK_TYPE_Q5_0, 0.0376081},  {LPK_TYPE_Q4_1, 0.0663467}, {LPK_TYPE_Q4_K, 0.0667956},
        {LPK_TYPE_Q4_0, 0.0763253},
    };
    for (size_t i = 0; i < sizeof bound / sizeof bound[0]; i++) {
        double r = tu_rel_rmse(bound[i].type, x, rows, cols, NULL);
        print_message("%-5s blk.3.attn_output rel. RMSE %.6g\n", lpk_type_get(bound[i].type)->name, r);
        tu_near(lpk_type_get(bound[i].type)->name, r, bound[i].want, 0.01);
    }
    free(x);
}

/* Long tier: the whole of llama2-20m through convert + quantize for every
 * recipe, pooled rel. RMSE as measured (1%) and at or below llama.cpp's
 * (models/README.md; q5_1 has no llama.cpp figure: -1). */
static void test_l20_recipes(void **state)
{
    (void)state;
    if (!tu_long()) {
        print_message("SKIP: llama2-20m's recipe table runs in make test-long\n");
        skip();
    }
    TU_NEED_SHARED(src, "models/llama2-20m/hf");
    char *dir = tu_tmpdir(), *in = tu_fmt("%s/l20.lpk", dir), *o = tu_fmt("%s/q.lpk", dir);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s'", src, in), 0);
    /* k-quant tensors (and the q6_k output of the q4_0/q4_1 recipes) are weighted
     * for output error (docs/QUANT.md, "Weighting"): their weight RMSE rose a
     * little; pure q4_k's (0.06605) is now above llama.cpp's 0.06561, its KLD
     * below its no-weighting figure (0.001615 vs 0.001885) */
    static const struct { const char *args; double bpw, cpp, ours; } want[] = {
        {"--type q8_0 --pure", 8.5, 0.00473, 0.00468461},
        {"--type q6_k --pure", 6.5625, 0.01598, 0.0155412},
        {"--type q5_0 --pure", 5.5, 0.03782, 0.0352389},
        {"--type q4_1 --pure", 5.0, 0.07233, 0.0641041},
        {"--type q4_k --pure", 4.5, -1, 0.0660472},
        {"--type q4_0 --pure", 4.5, 0.07641, 0.0715252},
        {"--type q4_k_m", 5.3455, 0.02457, 0.0244698},
        {"--type q4_k_s", 5.3069, 0.02480, 0.0247079},
        {"--type q4_1", 5.6066, 0.02641, 0.0242139},
        {"--type q4_0", 5.3007, 0.02813, 0.0267548},
        {"--type q5_1 --pure", 6.0, -1, 0.0309536},
        {"--type f16", 16.0, -1, 3.76379e-09},   /* f16 of the bf16 weights: nearly exact */
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char *out = NULL;
        assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --force --json %s", in, o,
                                    want[i].args), 0);
        json_t *j = json_loads(out, 0, NULL);
        assert_non_null(j);
        json_t *t = json_object_get(j, "totals");
        double bpw = json_real_value(json_object_get(t, "bpw_2d"));
        double r = json_real_value(json_object_get(t, "rel_rmse_2d"));
        print_message("%-20s bpw %.4f rel. RMSE %.6g (llama.cpp %.5f)\n", want[i].args, bpw, r,
                      want[i].cpp);
        assert_true(fabs(bpw - want[i].bpw) < 1e-3);
        tu_near(want[i].args, r, want[i].ours, 0.01);
        if (want[i].cpp > 0) assert_true(r <= want[i].cpp);
        json_decref(j);
        free(out);
    }
    tu_rmtree(dir);
    free(dir); free(in); free(o);
}

/* ---------------------------------------------------------------- CLI */
static void test_cli_recipes(void **state)
{
    (void)state;
    const char *src = tu_shared_or_demo("gguf/stories260K-f32.gguf", "--type f32");
    char *dir = tu_tmpdir(), *out = NULL;
    static const char *recipes[] = {"f32",    "f16",    "bf16",   "q8_0",   "q4_0",   "q4_1",
                                    "q5_0",   "q5_1",   "q4_k",   "q6_k",   "q4_k_m", "q4_k_s",
                                    "q5_k_m", "q5_k_s", "q5_k",   "q3_k_l", "q3_k_m", "q3_k_s",
                                    "q3_k",   "q2_k",   "iq4_nl", "iq4_xs"};
    for (size_t k = 0; k < sizeof recipes / sizeof recipes[0]; k++) {
        for (int pure = 0; pure < 2; pure++) {
            char *o = tu_fmt("%s/%s%d.lpk", dir, recipes[k], pure);
            int rc = tu_llmpack(&out, "quantize '%s' -o '%s' --type %s %s --json", src, o,
                                recipes[k], pure ? "--pure" : "");
            if (rc != 0) print_message("%s\n", out);
            assert_int_equal(rc, 0);
            assert_non_null(strstr(out, "rel_rmse_2d"));
            free(out);
            lpk_reader *r = NULL, *g = NULL;
            lpk_error err = {0};
            assert_int_equal(lpk_reader_open(o, &r, &err), LPK_OK);
            assert_int_equal(lpk_reader_open(src, &g, &err), LPK_OK);
            size_t n = lpk_reader_n_tensors(g);
            assert_int_equal(lpk_reader_n_tensors(r), n);
            lpk_tensor *ts = calloc(n, sizeof *ts);
            quant_choice *ch = calloc(n, sizeof *ch);
            for (size_t i = 0; i < n; i++) ts[i] = *lpk_reader_tensor(g, i);
            assert_int_equal(quant_plan(recipes[k], pure, NULL, ts, n, ch, &err), 0);
            for (size_t i = 0; i < n; i++) {
                assert_int_equal(lpk_reader_tensor(r, i)->type, ch[i].type);
                assert_int_equal(lpk_reader_verify_tensor(r, i, &err), LPK_OK);
            }
            const lpk_meta *m = lpk_reader_meta(r);
            assert_string_equal(lpk_meta_get_str(m, "quant.recipe"), recipes[k]);
            assert_non_null(lpk_meta_find(m, "quant.types"));
            assert_non_null(lpk_meta_find(m, "tokenizer.ggml.tokens"));
            free(ts);
            free(ch);
            lpk_reader_close(r);
            lpk_reader_close(g);
            free(o);
        }
    }
    /* byte-identical output for 1 and 2 threads */
    char *a = tu_fmt("%s/t1.lpk", dir), *b = tu_fmt("%s/t2.lpk", dir);
    assert_int_equal(tu_llmpack(NULL, "quantize '%s' -o '%s' --type q4_k_m --threads 1 -q", src, a), 0);
    assert_int_equal(tu_llmpack(NULL, "quantize '%s' -o '%s' --type q4_k_m --threads 2 -q", src, b), 0);
    size_t la, lb;
    char *da = tu_read_file(a, &la), *db = tu_read_file(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da); free(db);
    /* requantizing is refused unless asked for */
    char *c = tu_fmt("%s/re.lpk", dir);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0", a, c), 2);
    assert_non_null(strstr(out, "--allow-requantize"));
    free(out);
    assert_false(tu_exists(c));
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0 --allow-requantize", a, c), 0);
    assert_non_null(strstr(out, "dequantizing"));
    free(out);
    assert_int_equal(tu_llmpack(NULL, "quantize '%s' -o '%s' --type q9_9", src, c), 2);
    free(a); free(b); free(c);
    tu_rmtree(dir);
    free(dir);
}

static void test_cli_nan(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *in = tu_fmt("%s/nan.lpk", dir), *o = tu_fmt("%s/out.lpk", dir), *out = NULL;
    lpk_tensor d[2];
    set_t(&d[0], "blk.0.attn_norm.weight", 1, 64, 0);
    set_t(&d[1], "blk.0.attn_q.weight", 2, 4, 64);
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = 0.01f * (float)(i % 13);
    x[2 * 64 + 33] = NAN;
    lpk_meta *m = lpk_meta_new();
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_writer *w = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_writer_open(in, m, d, 2, 0, &w, &err), 0);
    assert_int_equal(lpk_writer_tensor_begin(w, d[0].name, &err), 0);
    assert_int_equal(lpk_writer_tensor_write(w, x, 64 * 4, &err), 0);
    assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
    assert_int_equal(lpk_writer_tensor_begin(w, d[1].name, &err), 0);
    assert_int_equal(lpk_writer_tensor_write(w, x, 256 * 4, &err), 0);
    assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    lpk_meta_free(m);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0", in, o), 3);
    assert_non_null(strstr(out, "blk.0.attn_q.weight: NaN at row 2, column 33"));
    assert_false(tu_exists(o));
    free(out);
    tu_rmtree(dir);
    free(dir); free(in); free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dequant_formulas),  cmocka_unit_test(test_exact_values),
        cmocka_unit_test(test_roundtrip_random),  cmocka_unit_test(test_simd_and_threads),
        cmocka_unit_test(test_rows_from_halfs),   cmocka_unit_test(test_simd_edge_bytes),
        cmocka_unit_test(test_simd_edge_bytes_k), cmocka_unit_test(test_fused_err_sums),
        cmocka_unit_test(test_edge_values),       cmocka_unit_test(test_recipe_rules),
        cmocka_unit_test(test_recipe_llama_cpp),  cmocka_unit_test(test_gguf_crosscheck),
        cmocka_unit_test(test_cli_recipes),       cmocka_unit_test(test_cli_nan),
        cmocka_unit_test(test_real_bounds),       cmocka_unit_test(test_l20_recipes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
