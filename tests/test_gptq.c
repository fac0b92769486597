/* GPTQ: quant/quant_gptq.c's output error against round-to-nearest with the
 * same importance, the diagonal-Hessian identity with the row quantizers,
 * thread-count independence and bad input; calib/'s Hessians against
 * calib_run's importance matrix; end to end through quantize and verify. */
#include "tutil.h"

#include <jansson.h>

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../calib/calib.h"
#include "../format/lpk.h"
#include "../quant/quant.h"
#include "../tok/tok.h"
#include "../verify/verify.h"

#define S260 "gguf/stories260K-f32.gguf"
#define S260_ARGS "--type f32" /* without ../shared: llmpack's f32 GGUF of the demo model */
#define TINY "text/TinyStories-valid-sample.txt"

static const int gptq_types[] = {LPK_TYPE_Q8_0,  LPK_TYPE_Q4_0,  LPK_TYPE_Q4_1, LPK_TYPE_Q5_0,
                                 LPK_TYPE_Q5_1,  LPK_TYPE_Q4_K,  LPK_TYPE_Q6_K, LPK_TYPE_Q5_K,
                                 LPK_TYPE_Q3_K,  LPK_TYPE_Q2_K,  LPK_TYPE_IQ4_NL,
                                 LPK_TYPE_IQ4_XS};
#define N_GPTQ_TYPES (sizeof gptq_types / sizeof gptq_types[0])

#define ROWS 48
#define COLS 256
#define TOKENS 1024

static size_t qbytes(int type, int64_t nrows, int64_t ncols)
{
    uint64_t n;
    assert_int_equal(lpk_type_nbytes(type, (uint64_t)(nrows * ncols), &n), LPK_OK);
    return (size_t)n;
}

/* A layer with correlated inputs: x = g M, g ~ N(0,1) per token, M = a random
 * mixing matrix times per-input scales spread over two decades (outlier
 * channels); H = X^T X in double. Weights ~ N(0,1) with a few large ones. */
static void make_layer(uint64_t seed, float *w, double *h, int correlated)
{
    uint64_t s = seed;
    float *m = malloc(sizeof(float) * COLS * COLS), *x = malloc(sizeof(float) * TOKENS * COLS);
    float *sc = malloc(sizeof(float) * COLS), *g = malloc(sizeof(float) * COLS);
    assert_non_null(m);
    assert_non_null(x);
    for (int c = 0; c < COLS; c++) sc[c] = expf(1.2f * tu_randn(&s));
    for (int a = 0; a < COLS; a++)
        for (int b = 0; b < COLS; b++)
            m[a * COLS + b] = correlated ? (a == b ? 1.0f : 0.0f) + 0.15f * tu_randn(&s) : (a == b);
    for (int t = 0; t < TOKENS; t++) {
        for (int a = 0; a < COLS; a++) g[a] = tu_randn(&s);
        for (int b = 0; b < COLS; b++) {
            float v = 0.0f;
            for (int a = 0; a < COLS; a++) v += g[a] * m[a * COLS + b];
            x[t * COLS + b] = v * sc[b];
        }
    }
    for (int a = 0; a < COLS; a++)
        for (int b = 0; b < COLS; b++) {
            double v = 0.0;
            for (int t = 0; t < TOKENS; t++) v += (double)x[t * COLS + a] * x[t * COLS + b];
            h[a * COLS + b] = v;
        }
    for (int i = 0; i < ROWS * COLS; i++) {
        float v = tu_randn(&s) * 0.05f;
        w[i] = (tu_rand(&s) % 97 == 0) ? v * 6.0f : v;
    }
    free(m);
    free(x);
    free(sc);
    free(g);
}

/* ||(W - deq Q) X||^2 = sum over rows of d^T H d. */
static double out_err(int type, const float *w, const void *q, const double *h)
{
    float *y = malloc(sizeof(float) * ROWS * COLS);
    assert_int_equal(quant_dequantize_rows(type, q, ROWS, COLS, y), LPK_OK);
    double tot = 0.0;
    double *d = malloc(sizeof(double) * COLS);
    for (int r = 0; r < ROWS; r++) {
        for (int c = 0; c < COLS; c++) d[c] = (double)w[r * COLS + c] - y[r * COLS + c];
        for (int a = 0; a < COLS; a++) {
            double s = 0.0;
            for (int b = 0; b < COLS; b++) s += h[a * COLS + b] * d[b];
            tot += d[a] * s;
        }
    }
    free(d);
    free(y);
    return tot;
}

static void diag_of(const double *h, float *im)
{
    for (int c = 0; c < COLS; c++) im[c] = (float)h[c * COLS + c];
}

/* For every type and every order, GPTQ's output error is below round-to-nearest
 * with importance = diag(H) (the imatrix of the same activations). */
static void test_gptq_beats_rtn(void **state)
{
    (void)state;
    float *w = malloc(sizeof(float) * ROWS * COLS), *im = malloc(sizeof(float) * COLS);
    double *h = malloc(sizeof(double) * COLS * COLS);
    make_layer(7, w, h, 1);
    diag_of(h, im);
    lpk_error err = {0};
    static const int orders[] = {QUANT_GPTQ_ORDER_NONE, QUANT_GPTQ_ORDER_STATIC,
                                 QUANT_GPTQ_ORDER_BLOCK};
    for (size_t t = 0; t < N_GPTQ_TYPES; t++) {
        int type = gptq_types[t];
        void *q = malloc(qbytes(type, ROWS, COLS));
        assert_int_equal(quant_quantize_rows(type, w, ROWS, COLS, q, im, &err), LPK_OK);
        double e_rtn = out_err(type, w, q, h);
        for (size_t o = 0; o < 3; o++) {
            quant_gptq_factor *f = NULL;
            assert_int_equal(quant_gptq_factor_new(h, COLS, 0.01, orders[o], 32, &f, &err), LPK_OK);
            assert_int_equal(quant_gptq_rows(type, w, ROWS, COLS, f, q, &err), LPK_OK);
            double e = out_err(type, w, q, h);
            print_message("%-5s order %d: gptq/rtn output error %.3f\n",
                          lpk_type_get(type)->name, orders[o], e / e_rtn);
            assert_true(e < 0.9 * e_rtn);
            quant_gptq_factor_free(f);
        }
        free(q);
    }
    free(w);
    free(im);
    free(h);
}

/* With a diagonal H there is nothing to propagate: every order must give
 * exactly the bytes of the row quantizer with importance diag(H) + damping
 * (checks the level packing of every type against the quantizers' own). */
static void test_gptq_diagonal_is_rtn(void **state)
{
    (void)state;
    float *w = malloc(sizeof(float) * ROWS * COLS), *im = malloc(sizeof(float) * COLS);
    double *h = malloc(sizeof(double) * COLS * COLS);
    make_layer(11, w, h, 0);
    /* keep only the diagonal (the generated inputs are independent, so the
     * off-diagonal is sampling noise) */
    double mean = 0.0;
    for (int a = 0; a < COLS; a++) {
        for (int b = 0; b < COLS; b++)
            if (a != b) h[a * COLS + b] = 0.0;
        mean += h[a * COLS + a];
    }
    mean /= COLS;
    for (int c = 0; c < COLS; c++) im[c] = (float)(h[c * COLS + c] + 0.01 * mean);
    lpk_error err = {0};
    for (size_t t = 0; t < N_GPTQ_TYPES; t++) {
        int type = gptq_types[t];
        size_t nb = qbytes(type, ROWS, COLS);
        void *a = malloc(nb), *b = malloc(nb);
        assert_int_equal(quant_quantize_rows(type, w, ROWS, COLS, a, im, &err), LPK_OK);
        for (int o = QUANT_GPTQ_ORDER_NONE; o <= QUANT_GPTQ_ORDER_BLOCK; o++) {
            quant_gptq_factor *f = NULL;
            assert_int_equal(quant_gptq_factor_new(h, COLS, 0.01, o, 256, &f, &err), LPK_OK);
            memset(b, 0xa5, nb);
            assert_int_equal(quant_gptq_rows(type, w, ROWS, COLS, f, b, &err), LPK_OK);
            if (memcmp(a, b, nb) != 0)
                fail_msg("%s order %d: bytes differ from the row quantizer",
                         lpk_type_get(type)->name, o);
            quant_gptq_factor_free(f);
        }
        free(a);
        free(b);
    }
    free(w);
    free(im);
    free(h);
}

/* Byte-identical output for 1 and 2 threads (factor and sweep). */
static void test_gptq_threads(void **state)
{
    (void)state;
    float *w = malloc(sizeof(float) * ROWS * COLS);
    double *h = malloc(sizeof(double) * COLS * COLS);
    make_layer(3, w, h, 1);
    lpk_error err = {0};
    int type = LPK_TYPE_Q4_K;
    size_t nb = qbytes(type, ROWS, COLS);
    void *out[2] = {malloc(nb), malloc(nb)};
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k + 1);
        quant_gptq_factor *f = NULL;
        assert_int_equal(quant_gptq_factor_new(h, COLS, 0.01, QUANT_GPTQ_ORDER_NONE, 0, &f, &err),
                         LPK_OK);
        assert_int_equal(quant_gptq_rows(type, w, ROWS, COLS, f, out[k], &err), LPK_OK);
        quant_gptq_factor_free(f);
    }
    omp_set_num_threads(2);
    assert_memory_equal(out[0], out[1], nb);
    free(out[0]);
    free(out[1]);
    free(w);
    free(h);
}

/* quant_gptq_factor_take (built in H's own memory) makes the factor
 * quant_gptq_factor_new (from a copy) makes: the same bytes from every order,
 * and after dampening retries (an indefinite H); it takes H on errors too. */
static void test_gptq_factor_take(void **state)
{
    (void)state;
    float *w = malloc(sizeof(float) * ROWS * COLS);
    double *h = malloc(sizeof(double) * COLS * COLS);
    make_layer(11, w, h, 1);
    lpk_error err = {0};
    int type = LPK_TYPE_Q4_K;
    size_t nb = qbytes(type, ROWS, COLS);
    void *out[2] = {malloc(nb), malloc(nb)};
    for (int pass = 0; pass < 4; pass++) {
        int order = pass < 3 ? pass : QUANT_GPTQ_ORDER_NONE;
        if (pass == 3) {
            /* indefinite: a diagonal H but inputs 0 and 1 with a correlation of 3
             * (needs a dampening above 2 * mean(diag): the fourth attempt, 10) */
            memset(h, 0, sizeof(double) * COLS * COLS);
            for (int i = 0; i < COLS; i++) h[i * COLS + i] = 1.0 + 0.001 * i;
            h[0 * COLS + 1] = h[1 * COLS + 0] = 3.0;
        }
        quant_gptq_factor *f[2] = {NULL, NULL};
        double *copy = malloc(sizeof(double) * COLS * COLS);
        memcpy(copy, h, sizeof(double) * COLS * COLS);
        assert_int_equal(quant_gptq_factor_new(h, COLS, 0.01, order, 32, &f[0], &err), LPK_OK);
        assert_int_equal(quant_gptq_factor_take(copy, COLS, 0.01, order, 32, &f[1], &err), LPK_OK);
        assert_true(quant_gptq_factor_damp(f[0]) == quant_gptq_factor_damp(f[1]));
        if (pass == 3) assert_true(quant_gptq_factor_damp(f[0]) > 0.01);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(quant_gptq_rows(type, w, ROWS, COLS, f[k], out[k], &err), LPK_OK);
            quant_gptq_factor_free(f[k]);
        }
        assert_memory_equal(out[0], out[1], nb);
    }
    double *bad = malloc(sizeof(double) * COLS * COLS);
    memcpy(bad, h, sizeof(double) * COLS * COLS);
    bad[7] = NAN;
    quant_gptq_factor *f = NULL;
    assert_int_equal(quant_gptq_factor_take(bad, COLS, 0.01, QUANT_GPTQ_ORDER_NONE, 0, &f, &err),
                     LPK_EBADVALUE);
    assert_null(f);
    free(out[0]);
    free(out[1]);
    free(w);
    free(h);
}

static void test_gptq_bad_input(void **state)
{
    (void)state;
    enum { N = 64 };
    double h[N * N];
    float w[2 * N];
    memset(h, 0, sizeof h);
    for (int i = 0; i < N; i++) h[i * N + i] = 1.0 + i;
    for (int i = 0; i < 2 * N; i++) w[i] = 0.01f * (float)(i % 7);
    lpk_error err = {0};
    quant_gptq_factor *f = NULL;
    /* a dead input (zero row and column) is accepted */
    h[5 * N + 5] = 0.0;
    assert_int_equal(quant_gptq_factor_new(h, N, 0.01, QUANT_GPTQ_ORDER_NONE, 0, &f, &err), LPK_OK);
    uint8_t q[2 * 2 * 34];
    assert_int_equal(quant_gptq_rows(LPK_TYPE_Q8_0, w, 2, N, f, q, &err), LPK_OK);
    /* wrong width, type without blocks, non-finite weight */
    assert_int_equal(quant_gptq_rows(LPK_TYPE_Q8_0, w, 1, N / 2, f, q, &err), LPK_EINVAL);
    lpk_error_clear(&err);
    assert_int_equal(quant_gptq_rows(LPK_TYPE_F16, w, 2, N, f, q, &err), LPK_EINVAL);
    lpk_error_clear(&err);
    w[N + 3] = NAN;
    assert_int_equal(quant_gptq_rows(LPK_TYPE_Q8_0, w, 2, N, f, q, &err), LPK_EBADVALUE);
    assert_non_null(strstr(err.msg, "row 1, column 3"));
    lpk_error_clear(&err);
    quant_gptq_factor_free(f);
    /* non-finite Hessian; group that does not divide the width */
    h[3 * N + 4] = INFINITY;
    assert_int_equal(quant_gptq_factor_new(h, N, 0.01, QUANT_GPTQ_ORDER_NONE, 0, &f, &err),
                     LPK_EBADVALUE);
    assert_null(f);
    lpk_error_clear(&err);
    h[3 * N + 4] = 0.0;
    assert_int_equal(quant_gptq_factor_new(h, N, 0.01, QUANT_GPTQ_ORDER_BLOCK, 48, &f, &err),
                     LPK_EINVAL);
    lpk_error_clear(&err);
    assert_int_equal(quant_gptq_factor_new(h, N, -1.0, QUANT_GPTQ_ORDER_NONE, 0, &f, &err),
                     LPK_EINVAL);
}

/* diag(H) / tokens of every input equals calib_run's importance matrix of the
 * same text (its float sums: to 1e-4); the Hessians and the GPTQ bytes do not
 * depend on the thread count; a tied model's output (token_embd) has none. */
static void test_gptq_hessians(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    char *text = strdup(t0);
    lpk_error err = {0};
    calib_opts co = {.ctx = 128};
    lpk_imatrix *im = NULL;
    assert_int_equal(calib_file(model, text, &co, &im, &err), LPK_OK);
    lpk_reader *r = NULL;
    assert_int_equal(lpk_reader_open(model, &r, &err), LPK_OK);
    calib_gptq_opts go;
    calib_gptq_opts_default(&go);
    go.ctx = 128;
    calib_gptq *g[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k + 1);
        assert_int_equal(calib_gptq_collect(r, text, &go, NULL, NULL, &g[k], &err), LPK_OK);
    }
    omp_set_num_threads(2);
    int checked = 0, blocks = 0;
    float *cov = malloc(172 * 32 * sizeof(float)), *w = malloc(172 * sizeof(float));
    for (size_t i = 0; i < im->n; i++) {
        const lpk_imatrix_entry *e = &im->e[i];
        /* calibrate's cov32 blocks are H's 32x32 diagonal blocks rounded to
         * float, bit for bit (both sum exact products in token order in
         * double), over the same tokens; their diagonal is the importance */
        uint64_t tok = 0;
        const double *h = calib_gptq_hessian(g[0], e->name, e->n, &tok);
        if (e->cov32 && h) {
            assert_true((double)e->count == (double)tok);
            for (int64_t c = 0; c < e->n; c++)
                for (int j = 0; j < 32; j++) {
                    float want = (float)h[c * e->n + (c - c % 32 + j)];
                    if (e->cov32[c * 32 + j] != want)
                        fail_msg("%s column %lld, %d: cov32 %.9g, H %.9g", e->name, (long long)c,
                                 j, (double)e->cov32[c * 32 + j], (double)want);
                }
            assert_int_equal(lpk_imatrix_cov32(im, e->name, e->n, cov), 1);
            lpk_imatrix_weights(e, w);
            for (int64_t c = 0; c < e->n; c++)
                if (fabs(cov[c * 32 + c % 32] - w[c]) > 1e-4 * w[c] + 1e-12)
                    fail_msg("%s column %lld: diagonal %g, importance %g", e->name, (long long)c,
                             (double)cov[c * 32 + c % 32], (double)w[c]);
            blocks++;
        } else {
            /* no blocks: ffn_down's 172 columns; no Hessian: the tied embedding */
            assert_true(!strcmp(e->name, "token_embd.weight") || strstr(e->name, "ffn_down"));
        }
        const float *d = calib_gptq_imatrix(g[0], e->name, e->n);
        if (!strcmp(e->name, "token_embd.weight")) {
            assert_null(d);
            assert_false(calib_gptq_applies(g[0], e->name, LPK_TYPE_Q8_0));
            continue;
        }
        assert_non_null(d);
        for (int64_t j = 0; j < e->n; j++) {
            double want = e->sum2[j] / e->count;
            if (fabs(d[j] - want) > 1e-4 * want + 1e-12)
                fail_msg("%s column %lld: diag(H)/tokens %g, imatrix %g", e->name, (long long)j,
                         (double)d[j], want);
        }
        checked++;
    }
    assert_int_equal(checked, 35); /* 5 layers x 7 weights */
    assert_int_equal(blocks, 30);  /* all but ffn_down */
    free(cov);
    free(w);
    /* GPTQ bytes of one weight from both collections */
    const lpk_tensor *t = lpk_reader_find(r, "blk.2.attn_q.weight");
    assert_non_null(t);
    int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
    float *x = malloc(sizeof(float) * (size_t)(nr * nc));
    assert_int_equal(lpk_to_f32_row(t->type, t->data, x, (size_t)(nr * nc)), LPK_OK);
    size_t nb = qbytes(LPK_TYPE_Q8_0, nr, nc);
    void *q[2] = {malloc(nb), malloc(nb)};
    for (int k = 0; k < 2; k++)
        assert_int_equal(calib_gptq_quantize(g[k], t->name, LPK_TYPE_Q8_0, x, nr, nc, q[k], &err),
                         LPK_OK);
    assert_memory_equal(q[0], q[1], nb);
    /* no Hessian for names outside the model, or types GPTQ does not write */
    assert_false(calib_gptq_applies(g[0], "blk.9.attn_q.weight", LPK_TYPE_Q8_0));
    assert_false(calib_gptq_applies(g[0], "blk.2.attn_q.weight", LPK_TYPE_F16));
    assert_int_equal(calib_gptq_quantize(g[0], "blk.2.attn_q.weight", LPK_TYPE_Q8_0, x, nr, 32,
                                         q[0], &err), LPK_EINVAL);
    free(q[0]);
    free(q[1]);
    free(x);
    calib_gptq_free(g[0]);
    calib_gptq_free(g[1]);
    lpk_reader_close(r);
    lpk_imatrix_free(im);
    free(model);
    free(text);
}

/* The Hessians as one vf_forward per chunk with the activation hook makes them
 * (what calib_gptq_collect did before it went block by block): every input's
 * X^T X summed token after token, chunk after chunk, in double. */
typedef struct {
    int n_layers;
    int64_t n[5];     /* widths: attention in, attn_output in, FFN in, ffn_down in, output */
    double **h;       /* n_layers * 4 + 1 matrices */
} ref_hess;

static void ref_hook(void *user, int layer, const char *name, const float *x, int n_tok, int n_in)
{
    ref_hess *R = user;
    int k;
    if (!strcmp(name, "attn_q")) k = 0;
    else if (!strcmp(name, "attn_output")) k = 1;
    else if (!strcmp(name, "ffn_gate")) k = 2;
    else if (!strcmp(name, "ffn_down")) k = 3;
    else if (!strcmp(name, "output")) k = 4;
    else return;
    double *h = R->h[k == 4 ? R->n_layers * 4 : layer * 4 + k];
    assert_int_equal(n_in, R->n[k]);
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * (size_t)n_in;
        for (int a = 0; a < n_in; a++)
            for (int b = 0; b < n_in; b++) h[(size_t)a * n_in + b] += (double)xt[a] * xt[b];
    }
}

/* calib_gptq's block-by-block GPTQ (inputs: the original model's) writes every
 * weight of model_path bitwise as GPTQ with the Hessians of the full forward
 * pass: the same file as before it kept one block's Hessians at a time; a
 * weight asked for again (an earlier block) starts over and still agrees. */
static void check_layerwise(const char *model_path, const char *text, int type, int chunks)
{
    enum { CTX = 128 };
    lpk_error err = {0};
    lpk_reader *r = NULL;
    assert_int_equal(lpk_reader_open(model_path, &r, &err), LPK_OK);
    vf_model *m = NULL;
    tok_tokenizer *tok = NULL;
    char *txt = NULL;
    size_t n_txt = 0, n_ids = 0;
    int32_t *ids = NULL;
    assert_int_equal(vf_model_open(r, &m, &err), LPK_OK);
    assert_int_equal(tok_tokenizer_new(lpk_reader_meta(r), &tok, &err), LPK_OK);
    assert_int_equal(vf_read_text(text, &txt, &n_txt, &err), LPK_OK);
    assert_int_equal(tok_encode(tok, txt, n_txt, 1, 0, &ids, &n_ids, &err), LPK_OK);
    assert_true(n_ids >= (size_t)chunks * CTX);
    const vf_config *c = vf_model_config(m);
    ref_hess R = {c->n_layers, {c->dim, c->n_heads * c->head_dim, c->dim, c->hidden_dim, c->dim},
                  calloc((size_t)c->n_layers * 4 + 1, sizeof(double *))};
    for (int i = 0; i <= c->n_layers * 4; i++) {
        int64_t n = R.n[i == c->n_layers * 4 ? 4 : i % 4];
        R.h[i] = calloc((size_t)(n * n), sizeof(double));
    }
    vf_model_set_act_hook(m, ref_hook, &R);
    vf_model_set_kv_f16(m, 1);
    for (int k = 0; k < chunks; k++) {
        int32_t *chunk = ids + (size_t)k * CTX;
        chunk[0] = tok_tokenizer_bos(tok);
        assert_int_equal(vf_forward(m, chunk, CTX, 0, 0, NULL, &err), LPK_OK);
    }
    calib_gptq_opts go;
    calib_gptq_opts_default(&go);
    go.ctx = CTX;
    go.chunks = chunks;
    calib_gptq *g = NULL;
    assert_int_equal(calib_gptq_collect(r, text, &go, NULL, NULL, &g, &err), LPK_OK);
    int group = lpk_type_get(type)->block_size, checked = 0, want = 1;
    size_t first = SIZE_MAX;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
            const lpk_tensor *t = lpk_reader_tensor(r, i);
            if (!calib_gptq_applies(g, t->name, type) ||
                lpk_tensor_ncols(t) % lpk_type_get(type)->block_size)
                continue; /* (stories260K's ffn_down: 172 columns) */
            if (first == SIZE_MAX) first = i;
            want += pass == 0;
            if (pass == 1 && i != first) break; /* again: the first block's first weight */
            int layer = -1, k = 4;
            char kind[64];
            if (sscanf(t->name, "blk.%d.%63[a-z_]", &layer, kind) == 2) {
                k = !strcmp(kind, "attn_output") ? 1 : !strncmp(kind, "attn", 4) ? 0
                  : !strcmp(kind, "ffn_down") ? 3 : 2;
            }
            const double *h = R.h[k == 4 ? c->n_layers * 4 : layer * 4 + k];
            int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
            float *x = malloc(sizeof(float) * (size_t)(nr * nc));
            const void *data = NULL;
            assert_int_equal(lpk_reader_tensor_data(r, i, &data, &err), LPK_OK);
            assert_int_equal(lpk_to_f32_row(t->type, data, x, (size_t)(nr * nc)), LPK_OK);
            size_t nb = qbytes(type, nr, nc);
            void *q0 = malloc(nb), *q1 = malloc(nb);
            quant_gptq_factor *f = NULL;
            assert_int_equal(quant_gptq_factor_new(h, nc, go.damp, go.order, group, &f, &err),
                             LPK_OK);
            assert_int_equal(quant_gptq_rows(type, x, nr, nc, f, q0, &err), LPK_OK);
            assert_int_equal(calib_gptq_quantize(g, t->name, type, x, nr, nc, q1, &err), LPK_OK);
            if (memcmp(q0, q1, nb)) fail_msg("%s: %s differs from the full pass's GPTQ", model_path,
                                             t->name);
            checked++;
            quant_gptq_factor_free(f);
            free(q0);
            free(q1);
            free(x);
        }
    assert_int_equal(checked, want);
    assert_true(checked > c->n_layers * 5);
    calib_gptq_free(g);
    for (int i = 0; i <= c->n_layers * 4; i++) free(R.h[i]);
    free(R.h);
    free(ids);
    free(txt);
    tok_tokenizer_free(tok);
    vf_model_free(m);
    lpk_reader_close(r);
}

static void test_gptq_layerwise(void **state)
{
    (void)state;
    const char *t0 = tu_shared(TINY);
    char *text = strdup(t0 ? t0 : "examples/TinyStories-valid-sample.txt");
    char *model = strdup(tu_shared_or_demo(S260, S260_ARGS));
    check_layerwise(model, text, LPK_TYPE_Q4_0, 3);
    const char *l20 = tu_shared("models/llama2-20m/hf");
    if (l20) {
        char *dir = tu_tmpdir(), *out = NULL, *lpk = tu_fmt("%s/l20.lpk", dir);
        assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' -q", l20, lpk), 0);
        free(out);
        check_layerwise(lpk, text, LPK_TYPE_Q4_K, 2);
        free(lpk);
        tu_rmtree(dir);
        free(dir);
    } else {
        print_message("NOTE: ../shared/models/llama2-20m not found: demo model only\n");
    }
    free(model);
    free(text);
}

/* --inputs quantized: the first block's weights are those of the original
 * inputs (the embeddings either way), later ones differ; the bytes do not
 * depend on the thread count. */
static void test_gptq_sequential(void **state)
{
    (void)state;
    const char *t0 = tu_shared(TINY);
    char *text = strdup(t0 ? t0 : "examples/TinyStories-valid-sample.txt");
    char *model = strdup(tu_shared_or_demo(S260, S260_ARGS));
    lpk_error err = {0};
    lpk_reader *r = NULL;
    assert_int_equal(lpk_reader_open(model, &r, &err), LPK_OK);
    calib_gptq_opts go;
    calib_gptq_opts_default(&go);
    go.ctx = 128;
    go.chunks = 3;
    const int type = LPK_TYPE_Q4_0;
    size_t n = lpk_reader_n_tensors(r), total = 0, *off = calloc(n + 1, sizeof *off);
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        off[i] = total;
        if (t->n_dims == 2 && lpk_tensor_ncols(t) % 32 == 0)
            total += qbytes(type, lpk_tensor_nrows(t), lpk_tensor_ncols(t));
    }
    off[n] = total;
    uint8_t *q[3] = {calloc(1, total), calloc(1, total), calloc(1, total)};
    for (int run = 0; run < 3; run++) {
        go.sequential = run > 0;
        omp_set_num_threads(run == 2 ? 1 : 2);
        calib_gptq *g = NULL;
        assert_int_equal(calib_gptq_collect(r, text, &go, NULL, NULL, &g, &err), LPK_OK);
        for (size_t i = 0; i < n; i++) {
            const lpk_tensor *t = lpk_reader_tensor(r, i);
            if (!calib_gptq_applies(g, t->name, type) || lpk_tensor_ncols(t) % 32) continue;
            int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
            float *x = malloc(sizeof(float) * (size_t)(nr * nc));
            const void *data = NULL;
            assert_int_equal(lpk_reader_tensor_data(r, i, &data, &err), LPK_OK);
            assert_int_equal(lpk_to_f32_row(t->type, data, x, (size_t)(nr * nc)), LPK_OK);
            if (calib_gptq_quantize(g, t->name, type, x, nr, nc, q[run] + off[i], &err))
                fail_msg("%s", err.msg);
            free(x);
        }
        calib_gptq_free(g);
    }
    omp_set_num_threads(2);
    int same0 = 0, differ = 0;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        size_t nb = off[i + 1] - off[i];
        if (!nb || strncmp(t->name, "blk.", 4)) continue;
        int eq = !memcmp(q[0] + off[i], q[1] + off[i], nb);
        if (!strncmp(t->name, "blk.0.", 6)) {
            if (!eq) fail_msg("%s: block 0 differs between the input kinds", t->name);
            same0++;
        } else {
            differ += !eq;
        }
    }
    assert_int_equal(same0, 6); /* (ffn_down: 172 columns, not q4_0) */
    assert_true(differ > 0);
    assert_memory_equal(q[1], q[2], total);
    for (int k = 0; k < 3; k++) free(q[k]);
    free(off);
    lpk_reader_close(r);
    free(model);
    free(text);
}

static double json_kld(const char *out, int i)
{
    /* verify --json (docs/verify.schema.json): results[i].kld_mean */
    json_error_t je;
    json_t *doc = json_loads(out, 0, &je);
    if (!doc) fail_msg("not JSON (%s): %s", je.text, out);
    json_t *v = json_object_get(json_array_get(json_object_get(doc, "results"), (size_t)i),
                                "kld_mean");
    if (!json_is_number(v)) fail_msg("no results[%d].kld_mean in: %s", i, out);
    double k = json_number_value(v);
    json_decref(doc);
    return k;
}

/* The calibration text is read a piece at a time (calib_text): a block of 1
 * byte and the default one give the same Hessians and the same GPTQ bytes, and
 * the recorded hash is that of the whole text's bytes (one trailing newline
 * dropped), also when the chunks asked for end before the text does. */
static void test_gptq_stream(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    char *text = strdup(t0);
    lpk_error err = {0};
    lpk_reader *r = NULL;
    assert_int_equal(lpk_reader_open(model, &r, &err), LPK_OK);
    calib_gptq_opts go;
    calib_gptq_opts_default(&go);
    go.ctx = 97;
    go.chunks = 20;
    calib_gptq *g[2] = {NULL, NULL};
    lpk_meta *meta[2];
    for (int k = 0; k < 2; k++) {
        go.text_block = k ? 0 : 1;
        assert_int_equal(calib_gptq_collect(r, text, &go, NULL, NULL, &g[k], &err), LPK_OK);
        meta[k] = lpk_meta_new();
        assert_int_equal(calib_gptq_record(g[k], meta[k]), LPK_OK);
    }
    char *t;
    size_t nt;
    assert_int_equal(vf_read_text(text, &t, &nt, &err), LPK_OK);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(t, nt));
    free(t);
    for (int k = 0; k < 2; k++) {
        assert_string_equal(lpk_meta_get_str(meta[k], "quant.gptq.calib_xxh3"), hex);
        uint64_t tokens = 0;
        assert_int_equal(lpk_meta_get_u64(meta[k], "quant.gptq.calib_tokens", &tokens), 0);
        assert_true(tokens == 20 * 97);
        lpk_meta_free(meta[k]);
    }
    const lpk_tensor *w = lpk_reader_find(r, "blk.1.attn_output.weight");
    assert_non_null(w);
    int64_t nr = lpk_tensor_nrows(w), nc = lpk_tensor_ncols(w);
    const float *d0 = calib_gptq_imatrix(g[0], w->name, nc), *d1 = calib_gptq_imatrix(g[1], w->name, nc);
    assert_non_null(d0);
    assert_memory_equal(d0, d1, (size_t)nc * sizeof *d0);
    float *x = malloc(sizeof(float) * (size_t)(nr * nc));
    assert_int_equal(lpk_to_f32_row(w->type, w->data, x, (size_t)(nr * nc)), LPK_OK);
    size_t nb = qbytes(LPK_TYPE_Q8_0, nr, nc);
    void *q[2] = {malloc(nb), malloc(nb)};
    for (int k = 0; k < 2; k++)
        assert_int_equal(calib_gptq_quantize(g[k], w->name, LPK_TYPE_Q8_0, x, nr, nc, q[k], &err),
                         LPK_OK);
    assert_memory_equal(q[0], q[1], nb);
    free(q[0]);
    free(q[1]);
    free(x);
    calib_gptq_free(g[0]);
    calib_gptq_free(g[1]);
    lpk_reader_close(r);
    free(model);
    free(text);
}

/* stories260K, q4_0 pure: GPTQ beats round-to-nearest with an importance
 * matrix from the same calibration chunks (llama-imatrix's entries only:
 * calibrate --no-cov) in KLD against the f32 model, and the file says how it
 * was made. With the matrix's cov32 blocks (quantize --calib collects them)
 * round-to-nearest is lower than with the plain matrix. */
static void test_gptq_end_to_end(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    char *text = strdup(t0);
    char *dir = tu_tmpdir();
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' --ctx 512 --chunks 15 --no-cov "
                                      "-q -o '%s/plain.imatrix'", model, text, dir), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s/rtn.lpk' --type q4_0 --pure --imatrix "
                                      "'%s/plain.imatrix' -q", model, dir, dir), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s/cov.lpk' --type q4_0 --pure --calib "
                                      "'%s' --chunks 15 -q", model, dir, text), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s/gptq.lpk' --type q4_0 --pure --method "
                                      "gptq --calib '%s' --chunks 15 -q", model, dir, text), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "verify '%s/rtn.lpk' '%s/gptq.lpk' '%s/cov.lpk' --ref '%s' "
                                      "--text '%s' --ctx 128 --json -q", dir, dir, dir, model,
                                text), 0);
    double k_rtn = json_kld(out, 0), k_gptq = json_kld(out, 1), k_cov = json_kld(out, 2);
    free(out);
    print_message("stories260K q4_0: KLD rtn+imatrix %.5f, gptq %.5f (%.2fx), rtn+imatrix+cov32 "
                  "%.5f (%.2fx)\n", k_rtn, k_gptq, k_gptq / k_rtn, k_cov, k_cov / k_rtn);
    assert_true(k_rtn > 0.0 && k_gptq < 0.9 * k_rtn);
    assert_true(k_cov < k_rtn);
    assert_int_equal(tu_llmpack(&out, "info '%s/gptq.lpk'", dir), 0);
    assert_non_null(strstr(out, "quant.method"));
    assert_non_null(strstr(out, "gptq"));
    assert_non_null(strstr(out, "quant.gptq.calib_xxh3"));
    free(out);
    /* convert --method gptq from the HF folder (f32, else the demo model's f16
     * values, which the f32 GGUF made from it holds): the same tensors */
    const char *h0 = tu_shared("models/stories260K/hf");
    if (!h0) h0 = "examples/stories260K";
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s/conv.lpk' --type q4_0 --pure --method "
                                      "gptq --calib '%s' --chunks 15", h0, dir, text), 0);
    free(out);
    char why[256], *a = tu_fmt("%s/gptq.lpk", dir), *b = tu_fmt("%s/conv.lpk", dir);
    if (tu_lpk_same_tensors(a, b, why, sizeof why)) fail_msg("convert vs quantize: %s", why);
    assert_int_equal(tu_tmp_size(dir, "conv.lpk"), -1); /* the intermediate is gone */
    free(a);
    free(b);
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s/x.lpk' --calib '%s'", h0, dir, text), 2);
    free(out);
    /* usage: gptq without calibration text; bad order */
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s/x.lpk' --type q4_0 --method gptq",
                                model, dir), 2);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s/x.lpk' --type q4_0 --method gptq "
                                      "--calib '%s' --order sideways", model, dir, text), 2);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s/x.lpk' --type q4_0 --method gptq "
                                      "--calib '%s' --inputs sideways", model, dir, text), 2);
    free(out);
    /* each type would need its own quantized inputs: one output at a time */
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s/' --type q4_0,q8_0 --method gptq "
                                      "--calib '%s' --inputs quantized", model, dir, text), 2);
    assert_non_null(strstr(out, "--inputs quantized"));
    free(out);
    char *x = tu_fmt("%s/x.lpk", dir);
    assert_false(tu_exists(x));
    free(x);
    tu_rmtree(dir);
    free(dir);
    free(model);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gptq_beats_rtn),
        cmocka_unit_test(test_gptq_diagonal_is_rtn),
        cmocka_unit_test(test_gptq_threads),
        cmocka_unit_test(test_gptq_factor_take),
        cmocka_unit_test(test_gptq_bad_input),
        cmocka_unit_test(test_gptq_hessians),
        cmocka_unit_test(test_gptq_stream),
        cmocka_unit_test(test_gptq_layerwise),
        cmocka_unit_test(test_gptq_sequential),
        cmocka_unit_test(test_gptq_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
