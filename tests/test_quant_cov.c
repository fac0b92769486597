/* quant/: the 32-block searches scored with the input covariance
 * (quant_quantize_rows_err's cov32). The error e^T C_b e of each block is
 * recomputed here from the dequantized values, in double. */
#include "tutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../format/lpk.h"
#include "../quant/quant.h"
#include "../quant/quant_internal.h"

static const int cov_types[] = {LPK_TYPE_Q4_0, LPK_TYPE_Q5_0, LPK_TYPE_Q4_1, LPK_TYPE_Q5_1,
                                LPK_TYPE_IQ4_NL};
#define N_COV_TYPES (sizeof cov_types / sizeof cov_types[0])
/* the super-block types: their own search, then values moved under C */
static const int polish_types[] = {LPK_TYPE_Q2_K, LPK_TYPE_Q3_K, LPK_TYPE_Q4_K,
                                   LPK_TYPE_Q5_K, LPK_TYPE_Q6_K, LPK_TYPE_IQ4_XS};
#define N_POLISH_TYPES (sizeof polish_types / sizeof polish_types[0])

/* Random SPD blocks: C_b = A A^T / 32 + eps I with A's rows sharing a common
 * factor (strongly correlated columns, as layer inputs are), or with diag set
 * a diagonal C_b of random positive values. */
static void rand_cov(uint64_t *s, int64_t ncols, int diag, float *cov)
{
    for (int64_t b = 0; b < ncols / 32; b++) {
        float *C = cov + 1024 * b;
        if (diag) {
            memset(C, 0, 1024 * sizeof *C);
            for (int i = 0; i < 32; i++) C[33 * i] = 0.05f + fabsf(tu_randn(s)) * 2.0f;
            continue;
        }
        double A[32][32], common[32];
        for (int k = 0; k < 32; k++) common[k] = tu_randn(s);
        for (int i = 0; i < 32; i++) {
            double a = 0.3 + 0.6 * (double)(tu_rand(s) % 1000) / 1000.0;
            for (int k = 0; k < 32; k++) A[i][k] = a * common[k] + tu_randn(s);
        }
        for (int i = 0; i < 32; i++)
            for (int j = 0; j <= i; j++) {
                double v = 0;
                for (int k = 0; k < 32; k++) v += A[i][k] * A[j][k];
                v /= 32.0;
                if (i == j) v += 0.01;
                C[32 * i + j] = C[32 * j + i] = (float)v;
            }
    }
}

static void rand_rows(uint64_t *s, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = tu_randn(s);
        /* a few outliers, as real weights have */
        x[i] = tu_rand(s) % 50 == 0 ? 6.0f * v : v;
    }
}

/* e^T C_b e of block k of a row (x, y its dequantized values). */
static double block_err(const float *x, const float *y, const float *C)
{
    double e[32], t = 0;
    for (int i = 0; i < 32; i++) e[i] = (double)x[i] - (double)y[i];
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 32; j++) t += e[i] * (double)C[32 * i + j] * e[j];
    return t;
}

/* A block's min, max and the value of largest |x|. */
static void block_range(const float *xb, float *mn, float *mx, float *am)
{
    *mn = *mx = xb[0];
    *am = 0;
    for (int i = 0; i < 32; i++) {
        *mn = xb[i] < *mn ? xb[i] : *mn;
        *mx = xb[i] > *mx ? xb[i] : *mx;
        *am = fabsf(xb[i]) > fabsf(*am) ? xb[i] : *am;
    }
}

static void quantize_deq(int type, const float *x, int64_t nr, int64_t nc, const float *im,
                         const float *cov, float *y)
{
    lpk_error err = {0};
    void *q = malloc(tu_qbytes(type, nr, nc));
    assert_non_null(q);
    assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, q, im, cov, 0, NULL,
                                             NULL, &err), LPK_OK);
    assert_int_equal(quant_dequantize_rows(type, q, nr, nc, y), LPK_OK);
    free(q);
}

/* The levels of a 32-block type: value = d * (q - off) + m, q in [0, nl). */
static void type_levels(int type, int *nl, int *off, int *asym)
{
    *asym = type == LPK_TYPE_Q4_1 || type == LPK_TYPE_Q5_1;
    *nl = type == LPK_TYPE_Q4_0 || type == LPK_TYPE_Q4_1 ? 16 : 32;
    *off = *asym ? 0 : *nl / 2;
}

/* e^T C e of x rounded to nearest with stored scale dh (and min mh). */
static double rtn_err(int type, const float *x, uint16_t dh, uint16_t mh, const float *C)
{
    int nl, off, asym;
    type_levels(type, &nl, &off, &asym);
    float d = lpk_f16_to_f32(dh), m = asym ? lpk_f16_to_f32(mh) : 0.0f, y[32];
    if (type == LPK_TYPE_IQ4_NL) {
        /* GGML's kvalues_iq4nl: the level nearest x / d, by scanning */
        static const int kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};
        for (int i = 0; i < 32; i++) {
            double v = d != 0.0f ? (double)x[i] / d : 0.0, bd = INFINITY;
            int bk = 0;
            for (int k = 0; k < 16; k++)
                if (fabs(v - kv[k]) < bd) { bd = fabs(v - kv[k]); bk = k; }
            y[i] = d * (float)kv[bk];
        }
        return block_err(x, y, C);
    }
    for (int i = 0; i < 32; i++) {
        double v = d != 0.0f ? ((double)x[i] - m) / d : 0.0;
        double q = nearbyint(v);
        if (q < -off) q = -off;
        if (q > nl - 1 - off) q = nl - 1 - off;
        y[i] = (float)(d * q) + m;
    }
    return block_err(x, y, C);
}

/* With correlated C: every block's e^T C e is at most that of round to nearest
 * with the plain scale (the grid's middle candidate: max |x| to the extra
 * level; min/max for the types with a min), and the sum over the blocks is
 * well below the diagonal search's (the importance diag(C)) and the plain
 * search's. */
static void test_cov_below_rtn_and_diag(void **state)
{
    (void)state;
    uint64_t s = 11;
    const int64_t nr = 24, nc = 256;
    float *x = malloc(sizeof(float) * nr * nc), *cov = malloc(sizeof(float) * nc * 32);
    float *y = malloc(sizeof(float) * nr * nc), *yd = malloc(sizeof(float) * nr * nc);
    float *yp = malloc(sizeof(float) * nr * nc), im[256];
    assert_true(x && cov && y && yd && yp);
    rand_rows(&s, x, nr * nc);
    rand_cov(&s, nc, 0, cov);
    for (int64_t c = 0; c < nc; c++) im[c] = cov[(c / 32) * 1024 + 33 * (c % 32)];
    for (size_t t = 0; t < N_COV_TYPES; t++) {
        int type = cov_types[t], nl, off, asym;
        type_levels(type, &nl, &off, &asym);
        quantize_deq(type, x, nr, nc, NULL, cov, y);
        quantize_deq(type, x, nr, nc, im, NULL, yd);
        quantize_deq(type, x, nr, nc, NULL, NULL, yp);
        double ec = 0, ed = 0, ep = 0;
        for (int64_t r = 0; r < nr; r++)
            for (int64_t b = 0; b < nc / 32; b++) {
                const float *xb = x + r * nc + 32 * b, *C = cov + 1024 * b;
                double e = block_err(xb, y + r * nc + 32 * b, C);
                float mn, mx, am;
                block_range(xb, &mn, &mx, &am);
                double er = type == LPK_TYPE_IQ4_NL ? rtn_err(type, xb, lpk_f32_to_f16(am / -127.0f), 0, C)
                            : asym ? rtn_err(type, xb, lpk_f32_to_f16((mx - mn) / (float)(nl - 1)),
                                             lpk_f32_to_f16(mn), C)
                                   : rtn_err(type, xb, lpk_f32_to_f16(-am / (float)off), 0, C);
                assert_true(e <= er * (1 + 1e-9) + 1e-12);
                ec += e;
                ed += block_err(xb, yd + r * nc + 32 * b, C);
                ep += block_err(xb, yp + r * nc + 32 * b, C);
            }
        /* measured: 0.35-0.6 of the diagonal search's */
        assert_true(ec < 0.8 * ed);
        assert_true(ec < 0.8 * ep);
    }
    free(x);
    free(cov);
    free(y);
    free(yd);
    free(yp);
}

/* With a diagonal C the best assignment for a scale is round to nearest, so
 * no greedy move applies: each block's values are its own scale's rounding,
 * and its error lies between the best over every f16 scale near the grid and
 * the best of the grid's candidates. */
static void test_cov_diagonal_brute_force(void **state)
{
    (void)state;
    uint64_t s = 5;
    const int64_t nr = 6, nc = 128;
    float x[6 * 128], y[6 * 128], cov[128 * 32];
    rand_rows(&s, x, nr * nc);
    rand_cov(&s, nc, 1, cov);
    for (size_t t = 0; t < N_COV_TYPES; t++) {
        int type = cov_types[t], nl, off, asym;
        type_levels(type, &nl, &off, &asym);
        lpk_error err = {0};
        uint8_t q[6 * 128];
        assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, q, NULL, cov, 0,
                                                 NULL, NULL, &err), LPK_OK);
        assert_int_equal(quant_dequantize_rows(type, q, nr, nc, y), LPK_OK);
        size_t bs = tu_qbytes(type, 1, 32);
        for (int64_t r = 0; r < nr; r++)
            for (int64_t b = 0; b < nc / 32; b++) {
                const float *xb = x + r * nc + 32 * b, *C = cov + 1024 * b;
                const uint8_t *blk = q + (size_t)(r * (nc / 32) + b) * bs;
                uint16_t dh = (uint16_t)(blk[0] | blk[1] << 8);
                uint16_t mh = asym ? (uint16_t)(blk[2] | blk[3] << 8) : 0;
                double e = block_err(xb, y + r * nc + 32 * b, C);
                /* the values are the rounding of the stored scale (and min) */
                assert_true(fabs(e - rtn_err(type, xb, dh, mh, C)) <= 1e-9 * (e + 1e-30));
                float mn, mx, am;
                block_range(xb, &mn, &mx, &am);
                /* the grid: offsets -1 .. 1 by 0.25 around the level count */
                double grid = INFINITY, all = INFINITY;
                for (int k = -4; k <= 4 && type == LPK_TYPE_IQ4_NL; k++)
                    for (int end = 0; end < 2; end++) {
                        /* either end of the table, steps of 2 levels' worth */
                        float e0 = end ? 113.0f - 2.0f * (float)k : -127.0f + 2.0f * (float)k;
                        double eg = rtn_err(type, xb, lpk_f32_to_f16(am / e0), 0, C);
                        grid = eg < grid ? eg : grid;
                    }
                for (int k = -4; k <= 4 && type != LPK_TYPE_IQ4_NL; k++) {
                    float g = (float)k / 4.0f;
                    double eg = asym ? rtn_err(type, xb, lpk_f32_to_f16((mx - mn) / ((float)(nl - 1) + g)),
                                               lpk_f32_to_f16(mn), C)
                                     : rtn_err(type, xb, lpk_f32_to_f16(-am / ((float)off + g)), 0, C);
                    grid = eg < grid ? eg : grid;
                }
                assert_true(e <= grid * (1 + 1e-9));
                if (asym) continue; /* the min moves too: no one-dimensional brute force */
                /* every f16 scale of either sign within a factor 2 of the plain one */
                uint16_t h0 = lpk_f32_to_f16(fabsf(am) / (type == LPK_TYPE_IQ4_NL ? 120.0f : (float)off));
                for (int sg = 0; sg < 2; sg++)
                    for (int dv = -1100; dv <= 1100; dv++) {
                        uint16_t h = (uint16_t)((h0 + dv) | (sg ? 0x8000 : 0));
                        double eh = rtn_err(type, xb, h, 0, C);
                        all = eh < all ? eh : all;
                    }
                assert_true(e >= all * (1 - 1e-9));
            }
    }
}

/* The bytes and error sums are the same for any thread count and path. */
static void test_cov_threads_paths(void **state)
{
    (void)state;
    uint64_t s = 3;
    const int64_t nr = 40, nc = 512;
    float *x = malloc(sizeof(float) * nr * nc), *cov = malloc(sizeof(float) * nc * 32);
    uint8_t *a = malloc(tu_qbytes(LPK_TYPE_Q6_K, nr, nc)), *b = malloc(tu_qbytes(LPK_TYPE_Q6_K, nr, nc));
    assert_true(x && cov && a && b);
    rand_rows(&s, x, nr * nc);
    rand_cov(&s, nc, 0, cov);
    lpk_error err = {0};
    for (size_t t = 0; t < N_COV_TYPES + N_POLISH_TYPES; t++) {
        int type = t < N_COV_TYPES ? cov_types[t] : polish_types[t - N_COV_TYPES];
        size_t n = tu_qbytes(type, nr, nc);
        double e0, s0, e, s2;
        quant_set_path(QUANT_PATH_SCALAR);
        omp_set_num_threads(1);
        assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, a, NULL, cov,
                                                 QUANT_ROWS_OUTPUT_WEIGHTING, &e0, &s0, &err),
                         LPK_OK);
        for (int p = 0; p < 3; p++)
            for (int th = 1; th <= 4; th *= 2) {
                quant_set_path(p == 2 ? QUANT_PATH_SCALAR : p ? QUANT_PATH_AVX2 : QUANT_PATH_AUTO);
                omp_set_num_threads(th);
                memset(b, 0xaa, n);
                assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, b, NULL,
                                                         cov, QUANT_ROWS_OUTPUT_WEIGHTING, &e,
                                                         &s2, &err), LPK_OK);
                assert_memory_equal(a, b, n);
                assert_memory_equal(&e, &e0, sizeof e);
                assert_memory_equal(&s2, &s0, sizeof s2);
            }
    }
    quant_set_path(QUANT_PATH_AUTO);
    free(x);
    free(cov);
    free(a);
    free(b);
}

/* A type without a covariance search ignores cov32; a block whose C_b is 0
 * (columns never active) gets the plain search's bytes; NaN, Inf and a
 * negative diagonal value are refused. */
static void test_cov_other_types_and_bad(void **state)
{
    (void)state;
    uint64_t s = 9;
    const int64_t nr = 4, nc = 256;
    float x[4 * 256], cov[256 * 32], im[256];
    uint8_t a[4 * 256 * 2], b[4 * 256 * 2];
    rand_rows(&s, x, nr * nc);
    rand_cov(&s, nc, 0, cov);
    for (int c = 0; c < 256; c++) im[c] = 0.5f + (float)(c % 7);
    lpk_error err = {0};
    const int others[] = {LPK_TYPE_Q8_0, LPK_TYPE_F16, LPK_TYPE_BF16};
    for (size_t t = 0; t < sizeof others / sizeof others[0]; t++) {
        assert_false(quant_type_uses_cov(others[t]));
        size_t n = tu_qbytes(others[t], nr, nc);
        assert_int_equal(quant_quantize_rows_err(others[t], LPK_TYPE_F32, x, nr, nc, a, im, NULL,
                                                 QUANT_ROWS_OUTPUT_WEIGHTING, NULL, NULL, &err), 0);
        assert_int_equal(quant_quantize_rows_err(others[t], LPK_TYPE_F32, x, nr, nc, b, im, cov,
                                                 QUANT_ROWS_OUTPUT_WEIGHTING, NULL, NULL, &err), 0);
        assert_memory_equal(a, b, n);
    }
    assert_true(quant_type_uses_cov(LPK_TYPE_Q4_0));
    for (size_t t = 0; t < N_COV_TYPES; t++) {
        int type = cov_types[t];
        if (!quant_type_uses_cov(type)) continue;
        /* block 2 dead: the plain search's bytes there, and the rest differs */
        float c2[256 * 32];
        memcpy(c2, cov, sizeof c2);
        memset(c2 + 2 * 1024, 0, 1024 * sizeof(float));
        size_t bs = tu_qbytes(type, 1, 32);
        assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, a, NULL, NULL, 0,
                                                 NULL, NULL, &err), 0);
        assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, b, NULL, c2, 0,
                                                 NULL, NULL, &err), 0);
        for (int r = 0; r < nr; r++)
            assert_memory_equal(a + (size_t)(r * 8 + 2) * bs, b + (size_t)(r * 8 + 2) * bs, bs);
        assert_memory_not_equal(a, b, tu_qbytes(type, nr, nc));
        /* refused */
        float bad[3] = {NAN, INFINITY, -1.0f};
        for (int k = 0; k < 3; k++) {
            memcpy(c2, cov, sizeof c2);
            c2[5 * 1024 + (k == 2 ? 33 * 7 : 32 * 3 + 9)] = bad[k];
            memset(&err, 0, sizeof err);
            assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, b, NULL, c2,
                                                     0, NULL, NULL, &err), LPK_EINVAL);
            assert_non_null(strstr(err.msg, "covariance block 5"));
        }
    }
}

/* The super-block types: with cov32 each 32-value block's e^T C_b e is at
 * most that of the same search without it (the same scales, values moved only
 * while the error drops), the sum well below; with C diagonal no value moves
 * (each is already its level nearest), so the bytes are the search's alone. */
static void test_cov_polish(void **state)
{
    (void)state;
    uint64_t s = 21;
    const int64_t nr = 8, nc = 512;
    float *x = malloc(sizeof(float) * nr * nc), *cov = malloc(sizeof(float) * nc * 32);
    float *dg = malloc(sizeof(float) * nc * 32), *y = malloc(sizeof(float) * nr * nc);
    float *y0 = malloc(sizeof(float) * nr * nc), im[512];
    uint8_t *a = malloc(tu_qbytes(LPK_TYPE_Q6_K, nr, nc)), *b = malloc(tu_qbytes(LPK_TYPE_Q6_K, nr, nc));
    assert_true(x && cov && dg && y && y0 && a && b);
    rand_rows(&s, x, nr * nc);
    rand_cov(&s, nc, 0, cov);
    rand_cov(&s, nc, 1, dg);
    for (int64_t c = 0; c < nc; c++) im[c] = cov[(c / 32) * 1024 + 33 * (c % 32)];
    lpk_error err = {0};
    for (size_t t = 0; t < N_POLISH_TYPES; t++) {
        int type = polish_types[t];
        size_t n = tu_qbytes(type, nr, nc);
        assert_true(quant_type_uses_cov(type));
        assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, a, im, NULL,
                                                 QUANT_ROWS_OUTPUT_WEIGHTING, NULL, NULL, &err), 0);
        assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, b, im, cov,
                                                 QUANT_ROWS_OUTPUT_WEIGHTING, NULL, NULL, &err), 0);
        assert_int_equal(quant_dequantize_rows(type, a, nr, nc, y0), 0);
        assert_int_equal(quant_dequantize_rows(type, b, nr, nc, y), 0);
        double e0 = 0, e1 = 0;
        for (int64_t r = 0; r < nr; r++)
            for (int64_t k = 0; k < nc / 32; k++) {
                const float *xb = x + r * nc + 32 * k, *C = cov + 1024 * k;
                double p0 = block_err(xb, y0 + r * nc + 32 * k, C);
                double p1 = block_err(xb, y + r * nc + 32 * k, C);
                assert_true(p1 <= p0 * (1 + 1e-6) + 1e-12);
                e0 += p0;
                e1 += p1;
            }
        assert_true(e1 < 0.8 * e0);
        /* a diagonal C: nothing moves */
        assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, b, im, dg,
                                                 QUANT_ROWS_OUTPUT_WEIGHTING, NULL, NULL, &err), 0);
        assert_memory_equal(a, b, n);
    }
    free(x);
    free(cov);
    free(dg);
    free(y);
    free(y0);
    free(a);
    free(b);
}

/* quantize and convert with a matrix whose entries carry cov32 blocks
 * (NAME.cov32): each tensor of a type with a covariance search is
 * quant_quantize_rows_err's with the matrix's blocks; q8_0 and the same matrix
 * without the blocks give the bytes they gave before; convert --type gives
 * quantize's tensors. stories260K at f32 (or the demo model's). */
static void test_cov_imatrix_jobs(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo("gguf/stories260K-f32.gguf", "--type f32");
    char *model = strdup(m0);
    const char *hf0 = tu_shared("models/stories260K/hf");
    char *hf = strdup(hf0 ? hf0 : "examples/stories260K");
    char *dir = tu_tmpdir(), *out = NULL, why[256];
    char *imp = tu_fmt("%s/plain.imatrix", dir), *imc = tu_fmt("%s/cov.imatrix", dir);
    lpk_error err = {0};
    lpk_reader *r = NULL;
    assert_int_equal(lpk_reader_open(model, &r, &err), LPK_OK);
    /* every 2-D matrix but the embedding: random importance and blocks */
    lpk_imatrix *ip = lpk_imatrix_new(), *ic = lpk_imatrix_new();
    uint64_t s = 77;
    size_t ncov = 0;
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (t->n_dims != 2 || !strcmp(t->name, "token_embd.weight")) continue;
        int64_t nc = lpk_tensor_ncols(t);
        lpk_imatrix_entry *ep, *ec;
        assert_int_equal(lpk_imatrix_add(ip, t->name, nc, &ep), LPK_OK);
        assert_int_equal(lpk_imatrix_add(ic, t->name, nc, &ec), LPK_OK);
        float *cov = malloc((size_t)nc * 32 * sizeof *cov);
        assert_non_null(cov);
        if (nc % 32 == 0) {
            rand_cov(&s, nc, 0, cov);
            assert_int_equal(lpk_imatrix_add_cov32(ec), LPK_OK);
            for (int64_t k = 0; k < nc * 32; k++) ec->cov32[k] = cov[k] * 10.0f;
            ncov++;
        }
        for (int64_t c = 0; c < nc; c++)
            ep->sum2[c] = ec->sum2[c] = nc % 32 ? 10.0f : cov[(c / 32) * 1024 + 33 * (c % 32)] * 10.0f;
        ep->count = ec->count = 10.0f;
        ep->ncall = ec->ncall = 1;
        free(cov);
    }
    assert_true(ncov >= 4);
    assert_int_equal(lpk_imatrix_write(imp, ip, LPK_IMATRIX_LEGACY, 0, &err), LPK_OK);
    assert_int_equal(lpk_imatrix_write(imc, ic, LPK_IMATRIX_LEGACY, 0, &err), LPK_OK);
    lpk_imatrix_free(ip);
    lpk_imatrix_free(ic);
    /* what the matrix read back gives (its blocks as the accessor scales them) */
    lpk_imatrix *im = NULL;
    assert_int_equal(lpk_imatrix_read(imc, &im, &err), LPK_OK);
    const char *types[] = {"q4_0", "q4_k", "q8_0"};
    for (size_t k = 0; k < 3; k++) {
        char *qp = tu_fmt("%s/p-%s.lpk", dir, types[k]), *qc = tu_fmt("%s/c-%s.lpk", dir, types[k]);
        char *cv = tu_fmt("%s/v-%s.lpk", dir, types[k]);
        assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type %s --pure --imatrix '%s' -q",
                                    model, qp, types[k], imp), 0);
        free(out);
        assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type %s --pure --imatrix '%s' -q",
                                    model, qc, types[k], imc), 0);
        free(out);
        int same = tu_lpk_same_tensors(qp, qc, why, sizeof why) == 0;
        assert_int_equal(same, k == 2);
        /* convert --type: quantize's tensors */
        assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' --type %s --pure --imatrix '%s' -q",
                                    hf, cv, types[k], imc), 0);
        free(out);
        /* (the f32 source, else the demo model: its f16 values are what the
         * f32 GGUF made from it holds) */
        assert_int_equal(tu_lpk_same_tensors(cv, qc, why, sizeof why), 0);
        /* each matrix with blocks: quant_quantize_rows_err's bytes */
        lpk_reader *rq = NULL;
        assert_int_equal(lpk_reader_open(qc, &rq, &err), LPK_OK);
        size_t nq = lpk_reader_n_tensors(rq);
        lpk_tensor *decls = malloc(nq * sizeof *decls);
        assert_non_null(decls);
        for (size_t i = 0; i < nq; i++) decls[i] = *lpk_reader_tensor(rq, i);
        for (size_t i = 0; i < lpk_reader_n_tensors(r) && k < 2; i++) {
            const lpk_tensor *t = lpk_reader_tensor(r, i), *tq = lpk_reader_find(rq, t->name);
            const lpk_imatrix_entry *e = lpk_imatrix_find(im, t->name);
            if (!e || !e->cov32 || tq->type != lpk_type_from_name(types[k])) continue;
            int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
            const void *src, *qbytes;
            assert_int_equal(lpk_reader_tensor_data(r, i, &src, &err), LPK_OK);
            assert_int_equal(lpk_reader_tensor_data(rq, lpk_reader_index(rq, tq), &qbytes, &err),
                             LPK_OK);
            float *x = malloc((size_t)(nr * nc) * sizeof *x), *w = malloc((size_t)nc * sizeof *w);
            float *cov = malloc((size_t)nc * 32 * sizeof *cov);
            void *want = malloc(tq->size);
            assert_true(x && w && cov && want);
            assert_int_equal(lpk_to_f32_row(t->type, src, x, (size_t)(nr * nc)), 0);
            lpk_imatrix_weights(e, w);
            assert_int_equal(lpk_imatrix_cov32(im, t->name, nc, cov), 1);
            assert_int_equal(quant_quantize_rows_err(tq->type, LPK_TYPE_F32, x, nr, nc, want, w,
                                                     cov, quant_rows_flags(t->name, decls, nq),
                                                     NULL, NULL, &err), LPK_OK);
            assert_memory_equal(want, qbytes, tq->size);
            free(x);
            free(w);
            free(cov);
            free(want);
        }
        lpk_reader_close(rq);
        free(decls);
        free(qp);
        free(qc);
        free(cv);
    }
    lpk_imatrix_free(im);
    lpk_reader_close(r);
    tu_rmtree(dir);
    free(dir);
    free(imp);
    free(imc);
    free(model);
    free(hf);
}

/* The fast products and moves (AVX2 where the CPU has it, and without SIMD)
 * give the bytes of the simple reference form, for every type: dense,
 * diagonal and non-symmetric blocks, rows of ordinary, tiny (f16 scales that
 * collide) and mixed magnitudes, values pushed to the ends of the levels. */
static void test_cov_fast_reference(void **state)
{
    (void)state;
    uint64_t s = 11;
    const int64_t nr = 24, nc = 256;
    float *x = malloc(sizeof(float) * nr * nc), *cov = malloc(sizeof(float) * nc * 32);
    size_t n = tu_qbytes(LPK_TYPE_Q6_K, nr, nc);
    uint8_t *a = malloc(n), *b = malloc(n);
    enum { TRACE_CAP = 1 << 16 };
    double *ta = malloc(TRACE_CAP * sizeof *ta), *tb = malloc(TRACE_CAP * sizeof *tb);
    assert_true(x && cov && a && b && ta && tb);
    for (int v = 0; v < 3; v++) {
        rand_rows(&s, x, nr * nc);
        for (int64_t r = 0; r < nr; r++)
            for (int64_t c = 0; c < nc; c++) {
                float *p = x + r * nc + c;
                if (r % 4 == 1) *p *= 1e-6f;          /* tiny: subnormal f16 scales */
                if (r % 4 == 2 && c % 32 < 4) *p *= 40.0f; /* outliers: values at the ends */
                if (r % 4 == 3 && c % 7 == 0) *p = 0.0f;
            }
        rand_cov(&s, nc, v == 1, cov);
        if (v == 2) /* not symmetric: the searches use the symmetric part */
            for (int64_t k = 0; k < nc * 32; k++) cov[k] *= 1.0f + 0.25f * tu_randn(&s) * 0.1f;
        for (size_t t = 0; t < N_COV_TYPES + N_POLISH_TYPES; t++) {
            int type = t < N_COV_TYPES ? cov_types[t] : polish_types[t - N_COV_TYPES];
            size_t m = tu_qbytes(type, nr, nc);
            lpk_error err = {0};
            size_t na, nb;
            omp_set_num_threads(1);
            quant_cov_set_reference(1);
            quant_cov_trace(ta, TRACE_CAP, &na);
            assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, a, NULL, cov,
                                                     0, NULL, NULL, &err), LPK_OK);
            assert_true(na > 0 && na < TRACE_CAP);
            for (int mode = 0; mode <= 2; mode += 2) {
                quant_cov_set_reference(mode);
                quant_cov_trace(tb, TRACE_CAP, &nb);
                memset(b, 0x55, m);
                assert_int_equal(quant_quantize_rows_err(type, LPK_TYPE_F32, x, nr, nc, b, NULL,
                                                         cov, 0, NULL, NULL, &err), LPK_OK);
                assert_memory_equal(a, b, m);
                /* every candidate's error, bit for bit (a last-bit change of a
                 * sum seldom changes the bytes) */
                assert_int_equal(nb, na);
                assert_memory_equal(ta, tb, na * sizeof *ta);
            }
        }
    }
    quant_cov_trace(NULL, 0, NULL);
    omp_set_num_threads(omp_get_num_procs());
    quant_cov_set_reference(0);
    free(x);
    free(cov);
    free(a);
    free(b);
    free(ta);
    free(tb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cov_below_rtn_and_diag),
        cmocka_unit_test(test_cov_diagonal_brute_force),
        cmocka_unit_test(test_cov_threads_paths),
        cmocka_unit_test(test_cov_other_types_and_bad),
        cmocka_unit_test(test_cov_polish),
        cmocka_unit_test(test_cov_imatrix_jobs),
        cmocka_unit_test(test_cov_fast_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
