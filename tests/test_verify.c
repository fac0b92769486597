/* verify/: the forward pass against an independent double-precision
 * implementation written here from the architecture's definition, the pieces
 * against hand-computed values, the perplexity protocol, and the reference
 * perplexities of the real models in ../shared. */
#include "tutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../quant/quant.h"
#include "../tok/tok.h"
#include "../verify/vf_gemm.h"
#include "../verify/vf_math.h"
#include "../verify/vf_model.h"

/* ---------------------------------------------------------------- pieces */

static void test_rmsnorm(void **state)
{
    (void)state;
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 0.5f, 2, -1};
    float out[4];
    vf_rmsnorm(out, x, w, 4, 0);
    /* mean square 30/4 = 7.5, 1/sqrt(7.5) = 0.3651483717 */
    const double s = 0.3651483716701107;
    const double want[4] = {1 * s, 0.5 * 2 * s, 2 * 3 * s, -4 * s};
    for (int i = 0; i < 4; i++) assert_true(fabs(out[i] - want[i]) < 1e-6);
    vf_rmsnorm(out, x, w, 4, 0.5f);  /* 1/sqrt(8) */
    assert_true(fabs(out[0] - 0.35355339) < 1e-6);
}

/* vf_rmsnorm_rows (8 rows' sums side by side) gives each row's vf_rmsnorm bit
 * for bit, for row counts around multiples of 8 and widths with wide value
 * ranges (where the order of the double sum shows). */
static void test_rmsnorm_rows(void **state)
{
    (void)state;
    enum { N = 203, T = 19 };
    float *x = malloc(sizeof(float) * N * T), *w = malloc(sizeof(float) * N);
    float *got = malloc(sizeof(float) * N * T), *want = malloc(sizeof(float) * N);
    uint64_t rs = 5;
    for (int i = 0; i < N; i++) w[i] = (float)((tu_rand(&rs) >> 40) * 0x1p-24 * 4.0 - 2.0);
    for (int i = 0; i < N * T; i++) {
        double u = (double)(tu_rand(&rs) >> 11) * 0x1p-53;
        x[i] = (float)((u - 0.5) * ldexp(1.0, (int)(tu_rand(&rs) % 40) - 20));
    }
    for (int nt = 0; nt <= T; nt++) {
        memset(got, 0, sizeof(float) * N * T);
        vf_rmsnorm_rows(got, x, w, nt, N, 1e-5f);
        for (int t = 0; t < nt; t++) {
            vf_rmsnorm(want, x + t * N, w, N, 1e-5f);
            assert_memory_equal(got + t * N, want, sizeof(float) * N);
        }
    }
    free(x); free(w); free(got); free(want);
}

static void test_rope(void **state)
{
    (void)state;
    vf_config c = {0};
    c.n_rot = 4;
    c.head_dim = 4;
    c.rope_theta = 10000;
    c.rope_factor = 1;
    double f[2];
    vf_rope_freqs(&c, f);
    assert_true(f[0] == 1.0);
    assert_true(fabs(f[1] - 0.01) < 1e-15);   /* 10000^(-2/4) */

    /* pairs (0,1) and (2,3) rotate; at position 2: angles 2 and 0.02 */
    float v[8] = {1, 0, 0, 1, 3, 4, 5, 6};
    float co[2] = {(float)cos(2.0), (float)cos(0.02)}, si[2] = {(float)sin(2.0), (float)sin(0.02)};
    vf_rope_rotate(v, 2, 4, 4, co, si);
    const float want[8] = {-0.41614684f, 0.90929743f, -0.01999867f, 0.99980001f,
                           3 * -0.41614684f - 4 * 0.90929743f, 3 * 0.90929743f + 4 * -0.41614684f,
                           5 * 0.99980001f - 6 * 0.01999867f, 5 * 0.01999867f + 6 * 0.99980001f};
    for (int i = 0; i < 8; i++) assert_true(fabs(v[i] - want[i]) < 1e-6);
    /* n_rot < head_dim: the last pair stays */
    float u[4] = {1, 0, 7, 8};
    vf_rope_rotate(u, 1, 4, 2, co, si);
    assert_true(fabs(u[0] + 0.41614684f) < 1e-6 && u[2] == 7 && u[3] == 8);

    /* linear scaling divides every frequency (= positions / factor) */
    c.rope_scaling = VF_ROPE_LINEAR;
    c.rope_factor = 4;
    vf_rope_freqs(&c, f);
    assert_true(f[0] == 0.25 && fabs(f[1] - 0.0025) < 1e-15);

    /* llama3 scaling with Llama 3.1's parameters; values from Meta's
     * apply_scaling (theta 500000, 128 rotated dims, factor 8, low 1, high 4,
     * original context 8192) */
    vf_config l3 = {0};
    l3.n_rot = 128;
    l3.rope_theta = 500000;
    l3.rope_scaling = VF_ROPE_LLAMA3;
    l3.rope_factor = 8;
    l3.rope_low_freq_factor = 1;
    l3.rope_high_freq_factor = 4;
    l3.rope_orig_ctx = 8192;
    double g[64];
    vf_rope_freqs(&l3, g);
    assert_true(g[0] == 1.0);                                  /* high frequency: kept */
    assert_true(fabs(g[20] / pow(500000.0, -40.0 / 128) - 1) < 1e-12); /* wavelen 1.2e2: kept */
    /* i = 44: freq 500000^(-88/128) = 1.20770e-4, wavelen 52026 > 8192: divided by 8 */
    assert_true(fabs(g[44] - 1.20770e-4 / 8) < 1e-9);
    /* i = 32: freq 500000^(-64/128) = 1/707.107 = 1.414214e-3, wavelen 4442.88
     * between 2048 and 8192: smooth = (8192 / 4442.88 - 1) / 3 = 0.281283,
     * freq * ((1 - smooth) / 8 + smooth) = 5.248462e-4 */
    assert_true(fabs(g[32] - 5.248462e-4) < 1e-9);
    /* i = 35: wavelen 8218.7, just above the original context: divided by 8 */
    assert_true(fabs(g[35] - 7.644970e-4 / 8) < 1e-9);
}

static void test_softmax_kld(void **state)
{
    (void)state;
    /* logits log(1), log(2), log(3): probabilities 1/6, 2/6, 3/6 */
    const float l[3] = {0, (float)log(2.0), (float)log(3.0)};
    int am = -1;
    double lse = vf_logsumexp(l, 3, &am);
    assert_int_equal(am, 2);
    assert_true(fabs(lse - log(6.0)) < 1e-7);
    /* NLL of token 0 = log 6 */
    assert_true(fabs((lse - l[0]) - 1.791759469) < 1e-6);
    /* shifting logits changes nothing */
    const float l2[3] = {100, 100 + (float)log(2.0), 100 + (float)log(3.0)};
    assert_true(fabs(vf_logsumexp(l2, 3, NULL) - 100 - log(6.0)) < 1e-5);
    /* first index of the maximum wins ties */
    const float t[4] = {1, 5, 5, 2};
    vf_logsumexp(t, 4, &am);
    assert_int_equal(am, 1);

    /* KL([0.5, 0.5] || [0.9, 0.1]) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5108256 */
    const float p[2] = {0, 0}, q[2] = {(float)log(0.9), (float)log(0.1)};
    double kl = vf_kld(p, vf_logsumexp(p, 2, NULL), q, vf_logsumexp(q, 2, NULL), 2);
    assert_true(fabs(kl - 0.5108256238) < 1e-6);
    /* KL(P || P) = 0 and KL is not symmetric */
    assert_true(fabs(vf_kld(q, 0, q, 0, 2)) < 1e-12);
    double kl2 = vf_kld(q, vf_logsumexp(q, 2, NULL), p, vf_logsumexp(p, 2, NULL), 2);
    assert_true(fabs(kl2 - 0.3680642071) < 1e-6);  /* 0.9 ln 1.8 + 0.1 ln 0.2 */
}

static void test_percentile(void **state)
{
    (void)state;
    const float s[5] = {1, 2, 3, 4, 5};
    assert_true(fabs(vf_percentile(s, 5, 0.99) - 4.96) < 1e-9);
    assert_true(vf_percentile(s, 5, 0.5) == 3);
    assert_true(vf_percentile(s, 5, 1) == 5 && vf_percentile(s, 5, 0) == 1);
    assert_true(vf_percentile(s, 0, 0.5) == 0);
}

static void test_chunk_positions(void **state)
{
    (void)state;
    /* llama.cpp: first = n_ctx/2, n_ctx - 1 - first positions scored */
    assert_int_equal(vf_chunk_first(512), 256);
    assert_int_equal(vf_chunk_scored(512), 255);
    assert_int_equal(vf_chunk_first(128), 64);
    assert_int_equal(vf_chunk_scored(128), 63);
    assert_int_equal(vf_chunk_scored(7), 3);   /* positions 3, 4, 5 predict 4, 5, 6 */
    /* stories260K's table: 121 chunks of 128 -> 7623 positions */
    assert_int_equal(121 * vf_chunk_scored(128), 7623);
}

/* ---------------------------------------------------------------- a synthetic model */

typedef struct tmodel {
    int dim, hid, nl, nh, nkv, hd, vocab, tied;
    float rope_factor;         /* linear scaling; 1 = none */
    float *emb, *out, *onorm;  /* out == emb when tied */
    float *an[2], *fn[2], *wq[2], *wk[2], *wv[2], *wo[2], *w1[2], *w2[2], *w3[2];
} tmodel;

static float *randv(size_t n, float scale, float bias, uint64_t *s)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = bias + scale * tu_randn(s);
    return v;
}

static void tm_init(tmodel *m, int tied, float rope_factor, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->dim = 64; m->hid = 96; m->nl = 2; m->nh = 4; m->nkv = 2; m->hd = 16; m->vocab = 96;
    m->tied = tied;
    m->rope_factor = rope_factor;
    uint64_t s = seed;
    size_t d = (size_t)m->dim, qd = (size_t)m->nh * m->hd, kvd = (size_t)m->nkv * m->hd;
    m->emb = randv((size_t)m->vocab * d, 1.0f, 0, &s);
    m->out = tied ? m->emb : randv((size_t)m->vocab * d, 0.15f, 0, &s);
    m->onorm = randv(d, 0.1f, 1, &s);
    for (int l = 0; l < m->nl; l++) {
        m->an[l] = randv(d, 0.1f, 1, &s);
        m->fn[l] = randv(d, 0.1f, 1, &s);
        m->wq[l] = randv(qd * d, 0.25f, 0, &s);
        m->wk[l] = randv(kvd * d, 0.25f, 0, &s);
        m->wv[l] = randv(kvd * d, 0.15f, 0, &s);
        m->wo[l] = randv(d * qd, 0.15f, 0, &s);
        m->w1[l] = randv((size_t)m->hid * d, 0.15f, 0, &s);
        m->w2[l] = randv(d * (size_t)m->hid, 0.15f, 0, &s);
        m->w3[l] = randv((size_t)m->hid * d, 0.15f, 0, &s);
    }
}

static void tm_free(tmodel *m)
{
    free(m->emb);
    if (!m->tied) free(m->out);
    free(m->onorm);
    for (int l = 0; l < m->nl; l++) {
        free(m->an[l]); free(m->fn[l]); free(m->wq[l]); free(m->wk[l]); free(m->wv[l]);
        free(m->wo[l]); free(m->w1[l]); free(m->w2[l]); free(m->w3[l]);
    }
}

/* Writes m as a container; 2-D weights stored as wtype (f32, f16, bf16 or a
 * block type with rows of a multiple of 32). */
static void tm_write(const tmodel *m, const char *path, int wtype)
{
    lpk_meta *meta = lpk_meta_new();
    lpk_meta_set_str(meta, "general.architecture", "llama");
    lpk_meta_set_u32(meta, "llama.embedding_length", (uint32_t)m->dim);
    lpk_meta_set_u32(meta, "llama.feed_forward_length", (uint32_t)m->hid);
    lpk_meta_set_u32(meta, "llama.block_count", (uint32_t)m->nl);
    lpk_meta_set_u32(meta, "llama.attention.head_count", (uint32_t)m->nh);
    lpk_meta_set_u32(meta, "llama.attention.head_count_kv", (uint32_t)m->nkv);
    lpk_meta_set_f32(meta, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    lpk_meta_set_f32(meta, "llama.rope.freq_base", 10000.0f);
    lpk_meta_set_u32(meta, "llama.context_length", 256);
    if (m->rope_factor != 1) {
        lpk_meta_set_str(meta, "llama.rope.scaling.type", "linear");
        lpk_meta_set_f32(meta, "llama.rope.scaling.factor", m->rope_factor);
    }
    lpk_tensor decls[32];
    const float *data[32];
    size_t n = 0;
#define DECL(nm, ptr, t, r, c)                                                          \
    do {                                                                                \
        memset(&decls[n], 0, sizeof decls[n]);                                          \
        snprintf(decls[n].name, sizeof decls[n].name, "%s", nm);                        \
        decls[n].type = (t);                                                            \
        decls[n].n_dims = (c) ? 2 : 1;                                                  \
        decls[n].dims[0] = (r);                                                         \
        decls[n].dims[1] = (c);                                                         \
        data[n++] = (ptr);                                                              \
    } while (0)
    int qd = m->nh * m->hd, kvd = m->nkv * m->hd;
    DECL("token_embd.weight", m->emb, wtype, m->vocab, m->dim);
    DECL("output_norm.weight", m->onorm, LPK_TYPE_F32, m->dim, 0);
    if (!m->tied) DECL("output.weight", m->out, wtype, m->vocab, m->dim);
    char nm[64];
    for (int l = 0; l < m->nl; l++) {
#define N(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        DECL(N("attn_norm"), m->an[l], LPK_TYPE_F32, m->dim, 0);
        DECL(N("attn_q"), m->wq[l], wtype, qd, m->dim);
        DECL(N("attn_k"), m->wk[l], wtype, kvd, m->dim);
        DECL(N("attn_v"), m->wv[l], wtype, kvd, m->dim);
        DECL(N("attn_output"), m->wo[l], wtype, m->dim, qd);
        DECL(N("ffn_norm"), m->fn[l], LPK_TYPE_F32, m->dim, 0);
        DECL(N("ffn_gate"), m->w1[l], wtype, m->hid, m->dim);
        DECL(N("ffn_down"), m->w2[l], wtype, m->dim, m->hid);
        DECL(N("ffn_up"), m->w3[l], wtype, m->hid, m->dim);
#undef N
    }
#undef DECL
    lpk_writer *w = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_writer_open(path, meta, decls, n, LPK_WRITE_FORCE, &w, &err), LPK_OK);
    for (size_t i = 0; i < n; i++) {
        size_t ne = (size_t)decls[i].dims[0] * (size_t)(decls[i].n_dims == 2 ? decls[i].dims[1] : 1);
        assert_int_equal(lpk_writer_tensor_begin(w, decls[i].name, &err), LPK_OK);
        if (decls[i].type == LPK_TYPE_F32) {
            assert_int_equal(lpk_writer_tensor_write(w, data[i], ne * 4, &err), LPK_OK);
        } else if (quant_type_is_block(decls[i].type)) {
            uint64_t nb = 0;
            assert_int_equal(lpk_type_nbytes(decls[i].type, ne, &nb), LPK_OK);
            void *q = malloc((size_t)nb);
            assert_int_equal(quant_quantize_rows(decls[i].type, data[i], decls[i].dims[0],
                                                 decls[i].dims[1], q, NULL, &err), LPK_OK);
            assert_int_equal(lpk_writer_tensor_write(w, q, (size_t)nb, &err), LPK_OK);
            free(q);
        } else {
            uint16_t *h = malloc(ne * 2);
            if (decls[i].type == LPK_TYPE_F16) lpk_f32_to_f16_row(data[i], h, ne);
            else lpk_f32_to_bf16_row(data[i], h, ne);
            assert_int_equal(lpk_writer_tensor_write(w, h, ne * 2, &err), LPK_OK);
            free(h);
        }
        assert_int_equal(lpk_writer_tensor_end(w, &err), LPK_OK);
    }
    assert_int_equal(lpk_writer_finish(w, &err), LPK_OK);
    lpk_meta_free(meta);
}

static void dmatvec(const float *w, int rows, int cols, const double *x, double *y)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += (double)w[(size_t)r * cols + c] * x[c];
        y[r] = s;
    }
}

static void drmsnorm(double *o, const double *x, const float *w, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double sc = 1 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++) o[i] = x[i] * sc * w[i];
}

/* RoPE as in Meta's reference: complex rotation of pairs (2i, 2i+1) by
 * (pos / factor) * theta^(-2i/hd). */
static void drope(double *v, int n_heads, int hd, int pos, double factor)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            double a = (pos / factor) * pow(10000.0, -2.0 * i / hd);
            double *p = v + h * hd + 2 * i, re = p[0], im = p[1];
            p[0] = re * cos(a) - im * sin(a);
            p[1] = re * sin(a) + im * cos(a);
        }
}

static double f16v(double x) { return lpk_f16_to_f32(lpk_f32_to_f16((float)x)); }

/* The whole model in double, one position at a time, recomputing every key
 * and value from scratch: logits (n x vocab). f16: llama.cpp's f16 KV cache
 * (queries, keys, values and softmax weights rounded to f16). */
static void naive_forward_kv(const tmodel *m, const int32_t *tok, int n, double *logits, int f16)
{
    int d = m->dim, hd = m->hd, qd = m->nh * hd, kvd = m->nkv * hd;
    double *x = calloc((size_t)n * d, sizeof(double));
    double *xb = malloc((size_t)d * sizeof(double)), *o = malloc((size_t)qd * sizeof(double));
    double *q = malloc((size_t)n * qd * sizeof(double));
    double *k = malloc((size_t)n * kvd * sizeof(double)), *v = malloc((size_t)n * kvd * sizeof(double));
    double *g = malloc((size_t)m->hid * sizeof(double)), *u = malloc((size_t)m->hid * sizeof(double));
    double *y = malloc((size_t)d * sizeof(double)), *att = malloc((size_t)n * sizeof(double));
    for (int t = 0; t < n; t++)
        for (int i = 0; i < d; i++) x[(size_t)t * d + i] = m->emb[(size_t)tok[t] * d + i];
    for (int l = 0; l < m->nl; l++) {
        for (int t = 0; t < n; t++) {
            drmsnorm(xb, x + (size_t)t * d, m->an[l], d);
            dmatvec(m->wq[l], qd, d, xb, q + (size_t)t * qd);
            dmatvec(m->wk[l], kvd, d, xb, k + (size_t)t * kvd);
            dmatvec(m->wv[l], kvd, d, xb, v + (size_t)t * kvd);
            drope(q + (size_t)t * qd, m->nh, hd, t, m->rope_factor);
            drope(k + (size_t)t * kvd, m->nkv, hd, t, m->rope_factor);
            for (int i = 0; f16 && i < qd; i++) q[(size_t)t * qd + i] = f16v(q[(size_t)t * qd + i]);
            for (int i = 0; f16 && i < kvd; i++) {
                k[(size_t)t * kvd + i] = f16v(k[(size_t)t * kvd + i]);
                v[(size_t)t * kvd + i] = f16v(v[(size_t)t * kvd + i]);
            }
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < m->nh; h++) {
                int kh = h / (m->nh / m->nkv);   /* grouped-query: heads share kv heads */
                double mx = -1e300, sum = 0;
                for (int s = 0; s <= t; s++) {
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                        dot += q[(size_t)t * qd + h * hd + i] * k[(size_t)s * kvd + kh * hd + i];
                    att[s] = dot / sqrt((double)hd);
                    if (att[s] > mx) mx = att[s];
                }
                for (int s = 0; s <= t; s++) sum += (att[s] = exp(att[s] - mx));
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int s = 0; s <= t; s++) {
                        double w = att[s] / sum;
                        acc += (f16 ? f16v(w) : w) * v[(size_t)s * kvd + kh * hd + i];
                    }
                    o[h * hd + i] = acc;
                }
            }
            dmatvec(m->wo[l], d, qd, o, y);
            for (int i = 0; i < d; i++) x[(size_t)t * d + i] += y[i];
        }
        for (int t = 0; t < n; t++) {
            drmsnorm(xb, x + (size_t)t * d, m->fn[l], d);
            dmatvec(m->w1[l], m->hid, d, xb, g);
            dmatvec(m->w3[l], m->hid, d, xb, u);
            for (int i = 0; i < m->hid; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            dmatvec(m->w2[l], d, m->hid, g, y);
            for (int i = 0; i < d; i++) x[(size_t)t * d + i] += y[i];
        }
    }
    for (int t = 0; t < n; t++) {
        drmsnorm(xb, x + (size_t)t * d, m->onorm, d);
        dmatvec(m->out, m->vocab, d, xb, logits + (size_t)t * m->vocab);
    }
    free(x); free(xb); free(o); free(q); free(k); free(v); free(g); free(u); free(y); free(att);
}

static void naive_forward(const tmodel *m, const int32_t *tok, int n, double *logits)
{
    naive_forward_kv(m, tok, n, logits, 0);
}

typedef struct opened {
    lpk_reader *r;
    vf_model *m;
} opened;

static opened open_model(const char *path)
{
    opened o = {0};
    lpk_error err = {0};
    int st = lpk_reader_open(path, &o.r, &err);
    if (!st) st = vf_model_open(o.r, &o.m, &err);
    if (st) fail_msg("%s: %s", path, err.msg);
    return o;
}

static void close_model(opened *o)
{
    vf_model_free(o->m);
    lpk_reader_close(o->r);
}

/* A synthetic model written to a fresh temporary directory. */
typedef struct fixture {
    char *dir, *path;
    tmodel tm;
} fixture;

static fixture fx_new(int tied, float rope_factor, uint64_t seed, int wtype)
{
    fixture f;
    f.dir = tu_tmpdir();
    assert_non_null(f.dir);
    f.path = tu_fmt("%s/m.lpk", f.dir);
    tm_init(&f.tm, tied, rope_factor, seed);
    tm_write(&f.tm, f.path, wtype);
    return f;
}

static void fx_free(fixture *f)
{
    tm_free(&f->tm);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f->path);
}

static void make_tokens(int32_t *tok, int n, int vocab, uint64_t seed)
{
    uint64_t s = seed;
    for (int i = 0; i < n; i++) tok[i] = (int32_t)(tu_rand(&s) % (uint64_t)vocab);
}

static double max_rel_diff(const float *a, const double *b, size_t n)
{
    double mx = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(a[i] - b[i]));
    return mx / scale;
}

/* The batched forward pass equals the naive double-precision model (untied
 * and tied output, linear RoPE scaling, f32 and bf16 storage). */
static void test_forward_matches_naive(void **state)
{
    (void)state;
    const struct { int tied; float factor; int type; double tol; } cases[] = {
        {0, 1, LPK_TYPE_F32, 2e-5}, {1, 1, LPK_TYPE_F32, 2e-5}, {0, 4, LPK_TYPE_F32, 2e-5},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        fixture f = fx_new(cases[ci].tied, cases[ci].factor, 11 + ci, cases[ci].type);
        int V = f.tm.vocab;
        opened o = open_model(f.path);
        const vf_config *c = vf_model_config(o.m);
        assert_int_equal(c->tied, cases[ci].tied);
        assert_int_equal(c->head_dim, 16);
        assert_int_equal(c->rope_scaling, cases[ci].factor != 1 ? VF_ROPE_LINEAR : VF_ROPE_NONE);
        enum { N = 40 };
        int32_t tok[N];
        make_tokens(tok, N, V, 5);
        double *want = malloc((size_t)N * V * sizeof(double));
        float *got = malloc((size_t)N * V * sizeof(float));
        naive_forward(&f.tm, tok, N, want);
        lpk_error err = {0};
        assert_int_equal(vf_forward(o.m, tok, N, 0, N, got, &err), LPK_OK);
        double d = max_rel_diff(got, want, (size_t)N * V);
        if (d > cases[ci].tol) fail_msg("case %zu: max rel. diff %g", ci, d);
        close_model(&o);
        free(want);
        free(got);
        fx_free(&f);
    }
}

/* VF_KV_F16_ATTN (verify --kv-f16) computes attention as llama.cpp's f16 KV
 * cache does: the naive model with queries, keys, values and softmax weights
 * rounded to f16, much closer to it than to the exact one; VF_KV_F16_CACHE
 * rounds keys and values only (between the two). */
static void test_forward_kv_f16(void **state)
{
    (void)state;
    fixture f = fx_new(0, 1, 21, LPK_TYPE_F32);
    int V = f.tm.vocab;
    opened o = open_model(f.path);
    enum { N = 40 };
    int32_t tok[N];
    make_tokens(tok, N, V, 6);
    double *exact = malloc((size_t)N * V * sizeof(double));
    double *half = malloc((size_t)N * V * sizeof(double));
    float *got = malloc((size_t)N * V * sizeof(float));
    naive_forward_kv(&f.tm, tok, N, exact, 0);
    naive_forward_kv(&f.tm, tok, N, half, 1);
    lpk_error err = {0};
    double d[3][2];
    const int modes[3] = {0, VF_KV_F16_CACHE, VF_KV_F16_ATTN};
    for (int k = 0; k < 3; k++) {
        vf_model_set_kv_f16(o.m, modes[k]);
        assert_int_equal(vf_forward(o.m, tok, N, 0, N, got, &err), LPK_OK);
        d[k][0] = max_rel_diff(got, exact, (size_t)N * V);
        d[k][1] = max_rel_diff(got, half, (size_t)N * V);
        print_message("kv mode %d: max rel. diff %.3g from the exact model, %.3g from the f16 one\n",
                      modes[k], d[k][0], d[k][1]);
    }
    /* (f16 roundings that flip between float and double sums keep mode 2
     * from the f16 model's bits: 2.1e-4 here, against 1.1e-3 for the others) */
    assert_true(d[0][0] < 2e-5);
    assert_true(d[2][1] < 3e-4);
    assert_true(d[0][1] > 4 * d[2][1] && d[2][0] > 4 * d[2][1]);
    assert_true(d[1][0] > d[0][0] && d[1][1] > d[2][1]);
    vf_model_set_kv_f16(o.m, 0);
    close_model(&o);
    free(exact);
    free(half);
    free(got);
    fx_free(&f);
}

/* One batch, token-by-token over the KV cache, and a prefix + continuation
 * agree; results do not depend on the thread count. */
static void test_batch_cache_threads(void **state)
{
    (void)state;
    fixture f = fx_new(0, 1, 3, LPK_TYPE_BF16);
    opened o = open_model(f.path);
    enum { N = 33 };
    int V = f.tm.vocab;
    int32_t tok[N];
    make_tokens(tok, N, V, 9);
    float *all = malloc((size_t)N * V * 4), *one = malloc((size_t)N * V * 4);
    lpk_error err = {0};
    assert_int_equal(vf_forward(o.m, tok, N, 0, N, all, &err), LPK_OK);
    for (int t = 0; t < N; t++)
        assert_int_equal(vf_forward(o.m, tok + t, 1, t, 1, one + (size_t)t * V, &err), LPK_OK);
    double mx = 0;
    for (size_t i = 0; i < (size_t)N * V; i++) mx = fmax(mx, fabs(all[i] - one[i]));
    assert_true(mx < 1e-4);
    /* prefix of 20 then 13 more continuing the cache */
    assert_int_equal(vf_forward(o.m, tok, 20, 0, 0, NULL, &err), LPK_OK);
    assert_int_equal(vf_forward(o.m, tok + 20, 13, 20, 13, one, &err), LPK_OK);
    mx = 0;
    for (size_t i = 0; i < (size_t)13 * V; i++) mx = fmax(mx, fabs(all[20 * V + i] - one[i]));
    assert_true(mx < 1e-4);
    /* bad arguments */
    assert_int_equal(vf_forward(o.m, tok, 5, 40, 1, one, &err), LPK_EINVAL);
    int32_t bad = V;
    lpk_error_clear(&err);
    assert_int_equal(vf_forward(o.m, &bad, 1, 0, 1, one, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "out of range"));
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    for (int th = 1; th <= 3; th++) {
        omp_set_num_threads(th);
        assert_int_equal(vf_forward(o.m, tok, N, 0, N, one, &err), LPK_OK);
        assert_memory_equal(all, one, (size_t)N * V * 4);
    }
    omp_set_num_threads(nt);
#endif
    close_model(&o);
    free(all);
    free(one);
    fx_free(&f);
}

/* Every kernel path gives the same logits bit for bit (f32, bf16 and the int8
 * path of q8_0 and q4_0, whose quantized embedding is dequantized per row), and
 * the int8 path stays close to the f32 model. */
static void test_paths_and_int8(void **state)
{
    (void)state;
    const int types[] = {LPK_TYPE_F32, LPK_TYPE_BF16, LPK_TYPE_Q8_0, LPK_TYPE_Q4_0};
    enum { N = 24 };
    int32_t tok[N];
    float *ref = NULL;
    double last_kl = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        fixture f = fx_new(0, 1, 5, types[ti]);
        int V = f.tm.vocab;
        make_tokens(tok, N, V, 13);
        opened o = open_model(f.path);
        float *a = malloc((size_t)N * V * 4), *b = malloc((size_t)N * V * 4);
        lpk_error err = {0};
        assert_int_equal(vf_forward(o.m, tok, N, 0, N, a, &err), LPK_OK);
        vf_gemm_force_path(VF_PATH_SCALAR);
        vf_math_force_path(VF_MATH_PORTABLE);
        assert_int_equal(vf_forward(o.m, tok, N, 0, N, b, &err), LPK_OK);
        vf_gemm_force_path(-1);
        vf_math_force_path(-1);
        assert_memory_equal(a, b, (size_t)N * V * 4);
        if (ti == 0) {
            ref = a;
            a = NULL;
        } else {
            /* mean KL(P_f32 || P_type) over the positions */
            double kl = 0;
            for (int t = 0; t < N; t++) {
                const float *p = ref + (size_t)t * V, *q = b + (size_t)t * V;
                kl += vf_kld(p, vf_logsumexp(p, V, NULL), q, vf_logsumexp(q, V, NULL), V) / N;
            }
            print_message("%s: mean KLD vs f32 %.6g\n", lpk_type_get(types[ti])->name, kl);
            /* a random model is touchier than a trained one: the measured values
             * (deterministic, 2%), in the order of the bit widths */
            const double want = types[ti] == LPK_TYPE_BF16   ? 5.07893e-05
                                : types[ti] == LPK_TYPE_Q8_0 ? 0.000957989
                                                             : 0.120911;
            tu_near(lpk_type_get(types[ti])->name, kl, want, 0.02);
            assert_true(kl > last_kl);
            last_kl = kl;
        }
        free(a);
        free(b);
        close_model(&o);
        fx_free(&f);
    }
    free(ref);
}

/* The kernel paths a test runs on: what the machine has (-1), then each lower
 * one forced (gemm and math), down to the portable code. */
static const int seq_paths[][2] = {{-1, -1},
                                   {VF_PATH_AVX2, VF_MATH_AVX2},
                                   {VF_PATH_SCALAR, VF_MATH_PORTABLE}};
enum { N_SEQ_PATHS = 3 };

static void force_paths(int k)
{
    vf_gemm_force_path(seq_paths[k][0]);
    vf_math_force_path(seq_paths[k][1]);
}

static void no_hook(void *user, int layer, const char *name, const float *x, int n_tok,
                    int n_in)
{
    (void)user; (void)layer; (void)name; (void)x; (void)n_tok; (void)n_in;
}

/* Several sequences in one batch (vf_forward_seqs) give bit for bit the logits
 * of one vf_forward each, on every kernel path and thread count, for fp32
 * weights and the int8 path's types: 3 sequences of 21 tokens put the
 * sequences' boundaries inside the kernels' token groups and tiles. */
static void test_forward_seqs(void **state)
{
    (void)state;
    const int types[] = {LPK_TYPE_F32, LPK_TYPE_F16, LPK_TYPE_BF16, LPK_TYPE_Q8_0,
                         LPK_TYPE_Q4_0, LPK_TYPE_Q4_1, LPK_TYPE_Q5_0, LPK_TYPE_IQ4_NL};
    enum { S = 3, N = 21, NL = 9 };
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        fixture f = fx_new(0, 1, 31 + ti, types[ti]);
        int V = f.tm.vocab;
        int32_t tok[S * N];
        make_tokens(tok, S * N, V, 17 + ti);
        opened o = open_model(f.path);
        size_t nl = (size_t)S * NL * V;
        float *one = malloc(nl * 4), *all = malloc(nl * 4);
        lpk_error err = {0};
        for (int k = 0; k < N_SEQ_PATHS; k++) {
            force_paths(k);
            for (int j = 0; j < S; j++)
                assert_int_equal(vf_forward(o.m, tok + j * N, N, 0, NL,
                                            one + (size_t)j * NL * V, &err), LPK_OK);
#ifdef _OPENMP
            int nt = omp_get_max_threads();
            for (int th = 1; th <= 3; th++) {
                omp_set_num_threads(th);
#endif
                memset(all, 0, nl * 4);
                assert_int_equal(vf_forward_seqs(o.m, tok, S, N, NL, all, &err), LPK_OK);
                if (memcmp(one, all, nl * 4))
                    fail_msg("%s, path %d: the batched logits differ",
                             lpk_type_get(types[ti])->name, k);
#ifdef _OPENMP
            }
            omp_set_num_threads(nt);
#endif
            /* two sequences of the three, all logits (the whole sequence) */
            float *two = malloc((size_t)2 * N * V * 4), *ref = malloc((size_t)N * V * 4);
            assert_int_equal(vf_forward_seqs(o.m, tok + N, 2, N, N, two, &err), LPK_OK);
            for (int j = 0; j < 2; j++) {
                assert_int_equal(vf_forward(o.m, tok + (j + 1) * N, N, 0, N, ref, &err), LPK_OK);
                assert_memory_equal(ref, two + (size_t)j * N * V, (size_t)N * V * 4);
            }
            free(two);
            free(ref);
        }
        vf_gemm_force_path(-1);
        vf_math_force_path(-1);
        /* the cache continues none of the sequences; no act hook with several */
        assert_int_equal(vf_forward_seqs(o.m, tok, S, N, NL, all, &err), LPK_OK);
        assert_int_equal(vf_forward(o.m, tok, 4, 2, 1, one, &err), LPK_EINVAL);
        assert_int_equal(vf_forward_seqs(o.m, tok, 0, N, NL, all, &err), LPK_EINVAL);
        assert_int_equal(vf_forward_seqs(o.m, tok, S, N, N + 1, all, &err), LPK_EINVAL);
        vf_model_set_act_hook(o.m, no_hook, NULL);
        assert_int_equal(vf_forward_seqs(o.m, tok, S, N, NL, all, &err), LPK_EINVAL);
        assert_int_equal(vf_forward_seqs(o.m, tok, 1, N, NL, all, &err), LPK_OK);
        vf_model_set_act_hook(o.m, NULL, NULL);
        free(one);
        free(all);
        close_model(&o);
        fx_free(&f);
    }
}

/* vf_eval follows llama.cpp's protocol: chunks of ctx with BOS first, positions
 * ctx/2 .. ctx-2 scored; checked against the naive model. A model against
 * itself: KLD 0, ratio 1, full top-1 agreement. */
/* vf_eval_set_progress's calls, recorded */
typedef struct progress_log {
    uint64_t done[256], total;
    int n;
} progress_log;

static int log_progress(void *user, uint64_t done, uint64_t total)
{
    progress_log *l = user;
    if (l->n < 256) l->done[l->n] = done;
    l->n++;
    l->total = total;
    return 0;
}

static void test_eval_protocol(void **state)
{
    (void)state;
    fixture f = fx_new(1, 1, 21, LPK_TYPE_F32);
    const tmodel tm = f.tm;
    opened a = open_model(f.path), b = open_model(f.path);
    enum { CTX = 16, NT = 3 * CTX + 5 };
    int32_t tok[NT];
    make_tokens(tok, NT, tm.vocab, 77);
    const int32_t bos = 1;
    /* expected: 3 chunks (5 left over), NLL summed by hand */
    double nll = 0, nll2 = 0;
    int count = 0;
    double *lg = malloc((size_t)CTX * tm.vocab * sizeof(double));
    for (int c = 0; c < 3; c++) {
        int32_t ch[CTX];
        memcpy(ch, tok + c * CTX, sizeof ch);
        ch[0] = bos;
        naive_forward(&tm, ch, CTX, lg);
        for (int j = CTX / 2; j <= CTX - 2; j++) {
            const double *r = lg + (size_t)j * tm.vocab;
            double mx = r[0], s = 0;
            for (int i = 0; i < tm.vocab; i++) mx = fmax(mx, r[i]);
            for (int i = 0; i < tm.vocab; i++) s += exp(r[i] - mx);
            double v = mx + log(s) - r[ch[j + 1]];
            nll += v;
            nll2 += v * v;
            count++;
        }
    }
    free(lg);
    double mean = nll / count, ppl = exp(mean);
    double se = ppl * sqrt((nll2 / count - mean * mean) / (count - 1));

    vf_model *ms[2] = {a.m, b.m};
    vf_eval *e = NULL;
    lpk_error err = {0};
    assert_int_equal(vf_eval_new(a.m, ms, 2, tok, NT, bos, CTX, 0, &e, &err), LPK_OK);
    assert_int_equal(vf_eval_n_chunks(e), 3);
    /* progress: after each block and the output matrix of each of the three
     * passes (the reference, two models), in text tokens; each pass takes a
     * third of the chunk's */
    progress_log pl = {0};
    vf_eval_set_progress(e, log_progress, &pl);
    int steps = 0, st;
    while ((st = vf_eval_step(e, &err)) == 1) steps++;
    assert_int_equal(st, 0);
    assert_int_equal(steps, 3);
    const int n_steps = vf_model_config(a.m)->n_layers + 1;
    assert_int_equal(pl.n, 3 * 3 * n_steps);
    assert_int_equal(pl.total, 3 * CTX);
    for (int c = 0, k = 0; c < 3; c++)
        for (int p = 0; p < 3; p++)
            for (int j = 1; j <= n_steps; j++, k++)
                assert_int_equal(pl.done[k], (uint64_t)(c * CTX + (int)((p + (double)j / n_steps) /
                                                                        3 * CTX + 0.5)));
    assert_int_equal(pl.done[pl.n - 1], 3 * CTX);
    vf_ppl_result r;
    for (int i = 0; i < 2; i++) {
        vf_eval_result(e, i, &r);
        assert_int_equal(r.chunks, 3);
        assert_int_equal(r.tokens_scored, 3 * (CTX - 1 - CTX / 2));
        assert_int_equal(r.tokens_scored, count);
        assert_true(fabs(r.ppl / ppl - 1) < 1e-5);
        assert_true(fabs(r.ppl_stderr / se - 1) < 1e-3);
        assert_int_equal(r.has_ref, 1);
        assert_true(r.ref_ppl == r.ppl);
        assert_true(r.ppl_ratio == 1 && r.ppl_delta == 0);
        assert_true(fabs(r.kld_mean) < 1e-12 && r.kld_max < 1e-9);
        assert_true(r.top1_agreement == 1);
    }
    vf_eval_free(e);
    /* max_chunks, no reference */
    assert_int_equal(vf_eval_new(NULL, ms, 1, tok, NT, bos, CTX, 2, &e, &err), LPK_OK);
    assert_int_equal(vf_eval_n_chunks(e), 2);
    while (vf_eval_step(e, &err) == 1) {}
    vf_eval_result(e, 0, &r);
    assert_int_equal(r.has_ref, 0);
    assert_int_equal(r.tokens_scored, 2 * 7);
    vf_eval_free(e);
    /* too few tokens, bad ctx, ids out of range */
    assert_int_equal(vf_eval_new(NULL, ms, 1, tok, CTX - 1, bos, CTX, 0, &e, &err), LPK_EINVAL);
    assert_int_equal(vf_eval_new(NULL, ms, 1, tok, NT, bos, 3, 0, &e, &err), LPK_EINVAL);
    tok[4] = tm.vocab;
    assert_int_equal(vf_eval_new(NULL, ms, 1, tok, NT, bos, CTX, 0, &e, &err), LPK_EINVAL);
    assert_null(e);
    close_model(&a);
    close_model(&b);
    fx_free(&f);
}

/* Everything an evaluation reports of model i, timing left out. */
typedef struct eval_out {
    vf_ppl_result r;
    vf_chunk_result ch[8];
    float kld[8 * 32];
    size_t nk;
} eval_out;

static void eval_get(const vf_eval *e, int i, eval_out *o)
{
    memset(o, 0, sizeof *o);
    vf_eval_result(e, i, &o->r);
    o->r.seconds = o->r.tokens_per_second = 0;
    for (int c = 0; c < o->r.chunks && c < 8; c++) vf_eval_chunk_result(e, i, c, &o->ch[c]);
    const float *k = vf_eval_klds(e, i, &o->nk);
    assert_true(o->nk <= 8 * 32);
    if (k) memcpy(o->kld, k, o->nk * sizeof *k);
}

/* vf_eval_set_batch: several chunks per forward pass give every statistic,
 * per-chunk value and KLD bit for bit as one chunk a pass does (a reference
 * and two models, so the paired sums too), on every kernel path and thread
 * count; vf_eval_step returns the chunks it ran. */
static void test_eval_batch(void **state)
{
    (void)state;
    enum { CTX = 40, NC = 5, NT = NC * CTX + 7, NM = 2 };
    fixture fr = fx_new(0, 1, 41, LPK_TYPE_F32), f8 = fx_new(0, 1, 41, LPK_TYPE_Q8_0),
            f4 = fx_new(0, 1, 41, LPK_TYPE_Q4_0);
    opened r = open_model(fr.path), a = open_model(f8.path), b = open_model(f4.path);
    int32_t tok[NT];
    make_tokens(tok, NT, fr.tm.vocab, 99);
    vf_model *ms[NM] = {a.m, b.m};
    eval_out want[NM], got;
    lpk_error err = {0};
    for (int k = 0; k < N_SEQ_PATHS; k++) {
        force_paths(k);
        for (int batch = 1; batch <= 6; batch++) {
#ifdef _OPENMP
            int nt = omp_get_max_threads();
            omp_set_num_threads(1 + batch % 2);
#endif
            vf_eval *e = NULL;
            assert_int_equal(vf_eval_new(r.m, ms, NM, tok, NT, 1, CTX, 0, &e, &err), LPK_OK);
            assert_int_equal(vf_eval_set_batch(e, batch, &err), LPK_OK);
            int st, done = 0, bn = batch < NC ? batch : NC;
            while ((st = vf_eval_step(e, &err)) > 0) {
                assert_int_equal(st, NC - done < bn ? NC - done : bn);
                done += st;
            }
            assert_int_equal(st, 0);
            assert_int_equal(done, NC);
#ifdef _OPENMP
            omp_set_num_threads(nt);
#endif
            for (int i = 0; i < NM; i++) {
                eval_get(e, i, k == 0 && batch == 1 ? &want[i] : &got);
                if (k == 0 && batch == 1) continue;
                assert_int_equal(got.r.chunks, NC);
                assert_int_equal(got.nk, (size_t)NC * vf_chunk_scored(CTX));
                if (memcmp(&got, &want[i], sizeof got))
                    fail_msg("model %d, path %d, batch %d: the results differ (ppl %.17g / "
                             "%.17g, kld %.17g / %.17g)", i, k, batch, got.r.ppl, want[i].r.ppl,
                             got.r.kld_mean, want[i].r.kld_mean);
            }
            assert_true(want[1].r.has_paired && want[1].r.kld_mean > want[0].r.kld_mean);
            vf_eval_free(e);
        }
    }
    vf_gemm_force_path(-1);
    vf_math_force_path(-1);
    close_model(&r); close_model(&a); close_model(&b);
    fx_free(&fr); fx_free(&f8); fx_free(&f4);
}

/* A two-tensor container (embedding [4, 8], output_norm [n_norm]) with meta:
 * opens, builds the model and returns vf_model_open's status (err says why). */
static int open_small(const char *path, const lpk_meta *meta, int n_norm, lpk_error *err)
{
    lpk_tensor d[2];
    memset(d, 0, sizeof d);
    snprintf(d[0].name, sizeof d[0].name, "token_embd.weight");
    d[0].type = LPK_TYPE_F32; d[0].n_dims = 2; d[0].dims[0] = 4; d[0].dims[1] = 8;
    snprintf(d[1].name, sizeof d[1].name, "output_norm.weight");
    d[1].type = LPK_TYPE_F32; d[1].n_dims = 1; d[1].dims[0] = n_norm;
    float zeros[32] = {0};
    lpk_writer *w = NULL;
    assert_int_equal(lpk_writer_open(path, meta, d, 2, LPK_WRITE_FORCE, &w, err), LPK_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(lpk_writer_tensor_begin(w, d[i].name, err), LPK_OK);
        assert_int_equal(lpk_writer_tensor_write(w, zeros, (size_t)(i ? n_norm : 32) * 4, err), 0);
        assert_int_equal(lpk_writer_tensor_end(w, err), LPK_OK);
    }
    assert_int_equal(lpk_writer_finish(w, err), LPK_OK);
    lpk_reader *r = NULL;
    vf_model *m = NULL;
    assert_int_equal(lpk_reader_open(path, &r, err), LPK_OK);
    lpk_error_clear(err);
    int st = vf_model_open(r, &m, err);
    if (st) assert_null(m);
    vf_model_free(m);
    lpk_reader_close(r);
    return st;
}

/* Broken models fail with the status and a message naming the tensor/key. */
static void test_model_errors(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/bad.lpk", dir);
    lpk_meta *meta = lpk_meta_new();
    lpk_meta_set_str(meta, "general.architecture", "llama");
    lpk_meta_set_u32(meta, "llama.embedding_length", 8);
    lpk_meta_set_u32(meta, "llama.feed_forward_length", 8);
    lpk_meta_set_u32(meta, "llama.block_count", 1);
    lpk_meta_set_u32(meta, "llama.attention.head_count", 2);
    lpk_error err = {0};

    /* a norm of the wrong length */
    assert_int_equal(open_small(path, meta, 7, &err), LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, "output_norm.weight"));
    /* a layer tensor missing */
    assert_int_equal(open_small(path, meta, 8, &err), LPK_ENOTFOUND);
    assert_non_null(strstr(err.msg, "blk.0.attn_norm.weight"));
    /* a hyperparameter missing */
    lpk_meta_remove(meta, "llama.block_count");
    assert_int_equal(open_small(path, meta, 8, &err), LPK_ENOTFOUND);
    assert_non_null(strstr(err.msg, "llama.block_count"));
    /* heads that do not group */
    lpk_meta_set_u32(meta, "llama.block_count", 1);
    lpk_meta_set_u32(meta, "llama.attention.head_count_kv", 3);
    assert_int_equal(open_small(path, meta, 8, &err), LPK_ECORRUPT);
    lpk_meta_remove(meta, "llama.attention.head_count_kv");
    /* unknown rope scaling */
    lpk_meta_set_str(meta, "llama.rope.scaling.type", "yarn");
    assert_int_equal(open_small(path, meta, 8, &err), LPK_EUNSUPPORTED);
    lpk_meta_remove(meta, "llama.rope.scaling.type");
    /* another architecture */
    lpk_meta_set_str(meta, "general.architecture", "gpt2");
    assert_int_equal(open_small(path, meta, 8, &err), LPK_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "gpt2"));

    lpk_meta_free(meta);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* ---------------------------------------------------------------- real models */

/* Reads a text the way the protocol does and tokenizes it with BOS. */
static int32_t *tokenize_file(const lpk_reader *r, const char *path, size_t *n, int32_t *bos)
{
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    assert_non_null(text);
    if (len && text[len - 1] == '\n') len--;
    tok_tokenizer *t = NULL;
    lpk_error err = {0};
    if (tok_tokenizer_new(lpk_reader_meta(r), &t, &err)) fail_msg("%s", err.msg);
    int32_t *ids = NULL;
    if (tok_encode(t, text, len, 1, 0, &ids, n, &err)) fail_msg("%s", err.msg);
    *bos = tok_tokenizer_bos(t);
    tok_tokenizer_free(t);
    free(text);
    return ids;
}

/* An evaluation run over every chunk (all of them when chunks is 0). */
static vf_eval *run_eval(vf_model *ref, vf_model **models, int n_models, const int32_t *ids,
                         size_t n, int32_t bos, int ctx, int chunks)
{
    vf_eval *e = NULL;
    lpk_error err = {0};
    if (vf_eval_new(ref, models, n_models, ids, n, bos, ctx, chunks, &e, &err))
        fail_msg("%s", err.msg);
    int st;
    while ((st = vf_eval_step(e, &err)) == 1) {}
    if (st) fail_msg("%s", err.msg);
    return e;
}

static vf_ppl_result run_ppl(vf_model *ref, vf_model **models, int n_models, const int32_t *ids,
                             size_t n, int32_t bos, int ctx, int chunks, int which)
{
    vf_eval *e = run_eval(ref, models, n_models, ids, n, bos, ctx, chunks);
    vf_ppl_result r;
    vf_eval_result(e, which, &r);
    vf_eval_free(e);
    return r;
}

/* stories260K on TinyStories, ctx 128, every chunk: the independent numpy
 * implementation's PPL 5.8585, the same for the f32 weights and their f16
 * rounding (../shared/models/README.md). Always on the demo model (f16) converted
 * to an f32 GGUF by llmpack; also on the f32 GGUF written by llama.cpp's
 * converter when ../shared has it. */
static void check_stories260k_ppl(const char *gguf, const char *text)
{
    opened o = open_model(gguf);
    size_t n = 0;
    int32_t bos;
    int32_t *ids = tokenize_file(o.r, text, &n, &bos);
    assert_int_equal(n, 15555);
    const int32_t first[12] = {1, 353, 331, 407, 261, 378, 383, 286, 261, 376, 298, 315};
    assert_memory_equal(ids, first, sizeof first);
    vf_ppl_result r = run_ppl(NULL, &o.m, 1, ids, n, bos, 128, 0, 0);
    assert_int_equal(r.chunks, 121);
    assert_int_equal(r.tokens_scored, 7623);
    print_message("stories260K %s: PPL %.6f +/- %.4f\n", gguf, r.ppl, r.ppl_stderr);
    assert_true(fabs(r.ppl - 5.8585) < 0.00051);
    free(ids);
    close_model(&o);
}

static void test_stories260k_ppl(void **state)
{
    (void)state;
    TU_NEED_SHARED(t0, "text/TinyStories-valid-sample.txt");
    char *text = strdup(t0);
    check_stories260k_ppl(tu_demo("demo-f32.gguf", "--type f32"), text);
    const char *g = tu_shared("gguf/stories260K-f32.gguf");
    if (g) {
        char *gguf = strdup(g);
        check_stories260k_ppl(gguf, text);
        free(gguf);
    }
    free(text);
}

/* Sorts doubles ascending (for the independent order statistics). */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Two DIFFERENT models (stories260K f32 as the reference, a Q4_K_M of it:
 * llama.cpp's files, else llmpack's of the demo model) through vf_eval, against the statistics recomputed here in double from
 * the two models' logits (vf_forward over each whole chunk of 128 tokens), from
 * their definitions: at every scored position (64 .. 126 of each chunk, BOS
 * first, predicting the next token) the log-softmax of each model;
 * KL(P_ref || P_model) = sum_i p_ref(i) (log p_ref(i) - log p_model(i)); its
 * mean, median (middle of the sorted values), p99 (linear interpolation at
 * 0.99 (n - 1)) and max; the fraction of positions where the argmaxes agree;
 * exp(mean NLL) of each model. A model against itself gives 0 in both KL
 * directions, these two do not: the reverse direction KL(P_model || P_ref)
 * is computed too and must differ by more than the tolerance, so the test
 * tells the directions apart. */
static void test_kld_two_models(void **state)
{
    (void)state;
    /* llama.cpp's files, else llmpack's of the demo model */
    opened ref = open_model(tu_shared_or_demo("gguf/stories260K-f32.gguf", "--type f32"));
    opened q = open_model(tu_shared_or_demo("gguf/stories260K-Q4_K_M.gguf", "--type q4_k_m"));
    TU_NEED_SHARED(text, "text/TinyStories-valid-sample.txt");
    size_t n = 0;
    int32_t bos;
    int32_t *ids = tokenize_file(ref.r, text, &n, &bos);
    /* the first 39 of the 121 chunks (test_stories260k_ppl runs them all): 39 * 63
     * scored positions, an odd count; the first 38 chunks give an even one, so
     * both of the median's cases are checked */
    enum { CTX = 128, FIRST = CTX / 2, NS = CTX - 1 - CTX / 2, CHUNKS = 39 };
    const int chunks = CHUNKS, V = vf_model_config(ref.m)->vocab_size;
    assert_true(n / CTX >= CHUNKS);
    const size_t np = (size_t)chunks * NS;

    /* independent: double precision from the logits of each whole chunk */
    float *lr = malloc((size_t)CTX * V * sizeof(float)), *lq = malloc((size_t)CTX * V * sizeof(float));
    double *kl = malloc(np * sizeof(double)), *klr = malloc(np * sizeof(double));
    double *pr = malloc((size_t)V * sizeof(double)), *pq = malloc((size_t)V * sizeof(double));
    double nll_r = 0, nll_q = 0, kl_sum = 0, nll_r2 = 0, nll_q2 = 0, nll_rq = 0, kl_sum2 = 0;
    long same = 0;
    /* per chunk (what verify --report plots), and every position's KLD in order */
    double c_nr[CHUNKS] = {0}, c_nq[CHUNKS] = {0}, c_kl[CHUNKS] = {0};
    long c_same[CHUNKS] = {0};
    double *kl_order = malloc(np * sizeof(double));
    lpk_error err = {0};
    for (int c = 0; c < chunks; c++) {
        int32_t ch[CTX];
        memcpy(ch, ids + (size_t)c * CTX, sizeof ch);
        ch[0] = bos;
        if (vf_forward(ref.m, ch, CTX, 0, CTX, lr, &err)) fail_msg("%s", err.msg);
        if (vf_forward(q.m, ch, CTX, 0, CTX, lq, &err)) fail_msg("%s", err.msg);
        for (int j = FIRST; j < CTX - 1; j++) {
            const float *a = lr + (size_t)j * V, *b = lq + (size_t)j * V;
            double ma = a[0], mb = b[0], sa = 0, sb = 0;
            int ta = 0, tb = 0;
            for (int i = 1; i < V; i++) {
                if (a[i] > ma) ma = a[i], ta = i;
                if (b[i] > mb) mb = b[i], tb = i;
            }
            for (int i = 0; i < V; i++) sa += exp(a[i] - ma), sb += exp(b[i] - mb);
            double za = ma + log(sa), zb = mb + log(sb), d = 0, dr = 0;
            for (int i = 0; i < V; i++) {
                pr[i] = a[i] - za;   /* log p_ref(i) */
                pq[i] = b[i] - zb;   /* log p_model(i) */
                d += exp(pr[i]) * (pr[i] - pq[i]);
                dr += exp(pq[i]) * (pq[i] - pr[i]);
            }
            size_t k = (size_t)c * NS + (size_t)(j - FIRST);
            kl[k] = d;
            klr[k] = dr;
            kl_sum += d;
            kl_sum2 += d * d;
            nll_r -= pr[ch[j + 1]];
            nll_q -= pq[ch[j + 1]];
            nll_r2 += pr[ch[j + 1]] * pr[ch[j + 1]];
            nll_q2 += pq[ch[j + 1]] * pq[ch[j + 1]];
            nll_rq += pr[ch[j + 1]] * pq[ch[j + 1]];
            same += ta == tb;
            c_nr[c] -= pr[ch[j + 1]];
            c_nq[c] -= pq[ch[j + 1]];
            c_kl[c] += d;
            c_same[c] += ta == tb;
            kl_order[k] = d;
        }
    }
    const size_t ne = np - NS;   /* without the last chunk */
    double *kle = malloc(ne * sizeof(double));
    memcpy(kle, kl, ne * sizeof(double));
    qsort(kle, ne, sizeof *kle, cmp_double);
    const double median_even = 0.5 * (kle[ne / 2 - 1] + kle[ne / 2]);
    assert_true(np % 2 == 1 && ne % 2 == 0);
    qsort(kl, np, sizeof *kl, cmp_double);
    qsort(klr, np, sizeof *klr, cmp_double);
    const double mean = kl_sum / (double)np;
    const double median = np % 2 ? kl[np / 2] : 0.5 * (kl[np / 2 - 1] + kl[np / 2]);
    const double h = 0.99 * (double)(np - 1);
    const size_t lo = (size_t)floor(h);
    const double p99 = kl[lo] + (h - (double)lo) * (kl[lo + 1 < np ? lo + 1 : lo] - kl[lo]);
    const double mx = kl[np - 1], rev_max = klr[np - 1];
    const double rh = klr[lo] + (h - (double)lo) * (klr[lo + 1 < np ? lo + 1 : lo] - klr[lo]);
    const double top1 = (double)same / (double)np;
    const double ppl_r = exp(nll_r / (double)np), ppl_q = exp(nll_q / (double)np);
    /* standard errors (llama.cpp's definitions): of a mean, sqrt(var / (n - 1));
     * PPL's through exp; ratio and delta with the covariance of the two NLLs */
    const double dn = (double)np, mr = nll_r / dn, mq = nll_q / dn;
    const double ur = sqrt((nll_r2 / dn - mr * mr) / (dn - 1));
    const double uq = sqrt((nll_q2 / dn - mq * mq) / (dn - 1));
    const double cov = (nll_rq / dn - mr * mq) / (dn - 1);
    const double kld_se = sqrt((kl_sum2 / dn - mean * mean) / (dn - 1));
    const double top1_se = sqrt(top1 * (1 - top1) / (dn - 1));
    const double ratio_se = ppl_q / ppl_r * sqrt(ur * ur + uq * uq - 2 * cov);
    const double delta_se = sqrt(ppl_q * ppl_q * uq * uq + ppl_r * ppl_r * ur * ur -
                                 2 * ppl_q * ppl_r * cov);

    /* the library */
    vf_ppl_result r = run_ppl(ref.m, &q.m, 1, ids, n, bos, CTX, CHUNKS, 0);
    print_message("stories260K Q4_K_M vs f32, %d chunks: KLD mean %.9g (%.9g) median %.9g "
                  "(%.9g) p99 %.9g (%.9g; reverse %.9g) max %.9g (%.9g; reverse %.9g) top-1 "
                  "%.9g (%.9g) PPL %.9g (%.9g) ref %.9g (%.9g)\n", chunks, r.kld_mean, mean,
                  r.kld_median, median, r.kld_p99, p99, rh, r.kld_max, mx, rev_max,
                  r.top1_agreement, top1, r.ppl, ppl_q, r.ref_ppl, ppl_r);
    assert_int_equal(r.chunks, chunks);
    assert_int_equal(r.tokens_scored, np);
    assert_int_equal(r.has_ref, 1);
    /* the same float logits, double sums (measured: mean 1e-15, order
     * statistics stored as float 6e-8 apart); the directions differ by far more
     * (p99 10%, max 0.4%: checked, so the test can tell them apart) */
    const double tol = 1e-6;
    assert_true(fabs(p99 / rh - 1) > 1000 * tol && fabs(mx / rev_max - 1) > 1000 * tol);
    assert_true(fabs(r.kld_mean / mean - 1) < tol);
    assert_true(fabs(r.kld_median / median - 1) < tol);
    assert_true(fabs(r.kld_p99 / p99 - 1) < tol);
    assert_true(fabs(r.kld_max / mx - 1) < tol);
    assert_true(fabs(r.top1_agreement - top1) < 0.5 / (double)np);   /* the same count */
    assert_true(fabs(r.ppl / ppl_q - 1) < 1e-5);
    assert_true(fabs(r.ref_ppl / ppl_r - 1) < 1e-5);
    assert_true(fabs(r.ppl_ratio / (ppl_q / ppl_r) - 1) < 1e-9);
    assert_true(fabs(r.ppl_delta - (ppl_q - ppl_r)) < 1e-5);
    print_message("stderr: PPL %.9g (%.9g) ref %.9g (%.9g) ratio %.9g (%.9g) delta %.9g (%.9g) "
                  "KLD %.9g (%.9g) top-1 %.9g (%.9g)\n", r.ppl_stderr, ppl_q * uq,
                  r.ref_ppl_stderr, ppl_r * ur, r.ppl_ratio_stderr, ratio_se,
                  r.ppl_delta_stderr, delta_se, r.kld_stderr, kld_se, r.top1_stderr, top1_se);
    assert_true(fabs(r.ppl_stderr / (ppl_q * uq) - 1) < 1e-6);
    assert_true(fabs(r.ref_ppl_stderr / (ppl_r * ur) - 1) < 1e-6);
    assert_true(fabs(r.ppl_ratio_stderr / ratio_se - 1) < 1e-6);
    assert_true(fabs(r.ppl_delta_stderr / delta_se - 1) < 1e-6);
    assert_true(fabs(r.kld_stderr / kld_se - 1) < 1e-6);
    assert_true(fabs(r.top1_stderr / top1_se - 1) < 1e-9);
    /* the per-chunk values and the positions' KLD, from the same evaluation */
    {
        vf_eval *e = NULL;
        if (vf_eval_new(ref.m, &q.m, 1, ids, n, bos, CTX, CHUNKS, &e, &err)) fail_msg("%s", err.msg);
        int st;
        while ((st = vf_eval_step(e, &err)) == 1) {}
        if (st) fail_msg("%s", err.msg);
        for (int c = 0; c < chunks; c++) {
            vf_chunk_result cr;
            vf_eval_chunk_result(e, 0, c, &cr);
            if (fabs(cr.ppl / exp(c_nq[c] / NS) - 1) > 1e-5 ||
                fabs(cr.ref_ppl / exp(c_nr[c] / NS) - 1) > 1e-5 ||
                fabs(cr.kld_mean / (c_kl[c] / NS) - 1) > tol ||
                fabs(cr.top1_agreement - (double)c_same[c] / NS) > 0.5 / NS)
                fail_msg("chunk %d: ppl %.9g (%.9g) ref %.9g (%.9g) kld %.9g (%.9g) top-1 %.9g "
                         "(%.9g)", c, cr.ppl, exp(c_nq[c] / NS), cr.ref_ppl, exp(c_nr[c] / NS),
                         cr.kld_mean, c_kl[c] / NS, cr.top1_agreement, (double)c_same[c] / NS);
        }
        size_t nk = 0;
        const float *kv = vf_eval_klds(e, 0, &nk);
        assert_int_equal(nk, np);
        for (size_t k = 0; k < np; k++)
            if (fabs(kv[k] - kl_order[k]) > 1e-6 * fabs(kl_order[k]) + 1e-9)
                fail_msg("position %zu: KLD %.9g, want %.9g", k, kv[k], kl_order[k]);
        vf_eval_free(e);
        /* without a reference: no KLD, NAN per chunk */
        if (vf_eval_new(NULL, &q.m, 1, ids, n, bos, CTX, 1, &e, &err)) fail_msg("%s", err.msg);
        assert_int_equal(vf_eval_step(e, &err), 1);
        vf_chunk_result cr;
        vf_eval_chunk_result(e, 0, 0, &cr);
        assert_true(fabs(cr.ppl / exp(c_nq[0] / NS) - 1) < 1e-5);
        assert_true(isnan(cr.ref_ppl) && isnan(cr.kld_mean) && isnan(cr.top1_agreement));
        assert_null(vf_eval_klds(e, 0, &nk));
        assert_int_equal(nk, 0);
        vf_eval_free(e);
    }
    /* an even count: the mean of the two middle values */
    vf_ppl_result re = run_ppl(ref.m, &q.m, 1, ids, n, bos, CTX, CHUNKS - 1, 0);
    assert_int_equal(re.tokens_scored, ne);
    print_message("%d chunks: KLD median %.9g (%.9g)\n", CHUNKS - 1, re.kld_median, median_even);
    assert_true(fabs(re.kld_median / median_even - 1) < tol);

    free(lr); free(lq); free(kl); free(klr); free(kle); free(pr); free(pq); free(ids);
    free(kl_order);
    close_model(&q);
    close_model(&ref);
}

/* m's argmax at every scored position of the first `chunks` chunks (the
 * protocol's: BOS first, positions ctx/2 .. ctx-2), in the order scored, from
 * the logits of each whole chunk. */
static void scored_tops(vf_model *m, const int32_t *ids, int32_t bos, int ctx, int chunks,
                        int *top)
{
    const int V = vf_model_config(m)->vocab_size, first = ctx / 2, ns = ctx - 1 - first;
    float *lg = malloc((size_t)ctx * V * sizeof(float));
    int32_t *ch = malloc((size_t)ctx * sizeof *ch);
    lpk_error err = {0};
    for (int c = 0; c < chunks; c++) {
        memcpy(ch, ids + (size_t)c * ctx, (size_t)ctx * sizeof *ch);
        ch[0] = bos;
        if (vf_forward(m, ch, ctx, 0, ctx, lg, &err)) fail_msg("%s", err.msg);
        for (int j = 0; j < ns; j++) {
            const float *a = lg + (size_t)(first + j) * V;
            int t = 0;
            for (int i = 1; i < V; i++)
                if (a[i] > a[t]) t = i;
            top[(size_t)c * ns + (size_t)j] = t;
        }
    }
    free(lg);
    free(ch);
}

/* Mean and standard error (sd with n - 1, over sqrt(n)) of x[0 .. n), two passes. */
static void mean_se2(const double *x, size_t n, double *mean, double *se)
{
    double s = 0, v = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    *mean = s / (double)n;
    for (size_t i = 0; i < n; i++) v += (x[i] - *mean) * (x[i] - *mean);
    *se = sqrt(v / (double)(n - 1) / (double)n);
}

/* The paired comparison with the first model (vf_ppl_result.has_paired):
 * models {A, A again (opened twice), B} against the f32 demo model, A its
 * Q4_K_M, B its Q4_0. A against itself: differences exactly 0, standard
 * errors exactly 0. B: the KLD difference is the difference of the means, and
 * its standard error is the one recomputed here (two passes) from the
 * positions' KLDs (vf_eval_klds); the top-1 difference and its standard error
 * are recomputed from each model's argmax at every scored position (the
 * logits of vf_forward over each whole chunk). The same numbers, bit for bit,
 * for 1 and 2 threads. */
static void test_paired(void **state)
{
    (void)state;
    opened ref = open_model(tu_demo("demo-f32.gguf", "--type f32"));
    opened a = open_model(tu_demo("demo-Q4_K_M.gguf", "--type q4_k_m"));
    opened a2 = open_model(tu_demo("demo-Q4_K_M.gguf", "--type q4_k_m"));
    opened b = open_model(tu_demo("demo-Q4_0.gguf", "--type q4_0"));
    size_t n = 0;
    int32_t bos;
    int32_t *ids = tokenize_file(ref.r, "examples/TinyStories-valid-sample.txt", &n, &bos);
    enum { CTX = 128, NS = CTX - 1 - CTX / 2, CHUNKS = 12, NP = CHUNKS * NS };
    vf_model *ms[3] = {a.m, a2.m, b.m};
    vf_eval *e = run_eval(ref.m, ms, 3, ids, n, bos, CTX, CHUNKS);
    vf_ppl_result r[3];
    for (int i = 0; i < 3; i++) vf_eval_result(e, i, &r[i]);
    assert_int_equal(r[0].has_paired, 0);
    assert_int_equal(r[1].has_paired, 1);
    assert_int_equal(r[2].has_paired, 1);
    /* the same model twice */
    assert_true(r[1].kld_diff == 0 && r[1].kld_diff_stderr == 0);
    assert_true(r[1].top1_diff == 0 && r[1].top1_diff_stderr == 0);
    assert_true(r[1].kld_mean == r[0].kld_mean);
    /* B - A from the positions' KLDs */
    size_t n0 = 0, n2 = 0;
    const float *k0 = vf_eval_klds(e, 0, &n0), *k2 = vf_eval_klds(e, 2, &n2);
    assert_int_equal(n0, NP);
    assert_int_equal(n2, NP);
    double *d = malloc(NP * sizeof *d), dm, dse;
    for (size_t k = 0; k < NP; k++) d[k] = (double)k2[k] - k0[k];
    mean_se2(d, NP, &dm, &dse);
    /* top-1, from the argmaxes */
    int *tr = malloc(3 * NP * sizeof *tr), *ta = tr + NP, *tb = ta + NP;
    scored_tops(ref.m, ids, bos, CTX, CHUNKS, tr);
    scored_tops(a.m, ids, bos, CTX, CHUNKS, ta);
    scored_tops(b.m, ids, bos, CTX, CHUNKS, tb);
    int gained = 0, lost = 0;
    for (size_t k = 0; k < NP; k++) {
        d[k] = (tb[k] == tr[k]) - (ta[k] == tr[k]);
        gained += d[k] > 0;
        lost += d[k] < 0;
    }
    double tm, tse;
    mean_se2(d, NP, &tm, &tse);
    print_message("B - A over %d positions: KLD %.9g +- %.9g (here %.9g +- %.9g; the means' "
                  "difference %.9g, unpaired stderr %.9g), top-1 %.9g +- %.9g (here %.9g +- "
                  "%.9g: %d gained, %d lost)\n", NP, r[2].kld_diff, r[2].kld_diff_stderr, dm,
                  dse, r[2].kld_mean - r[0].kld_mean,
                  sqrt(r[0].kld_stderr * r[0].kld_stderr + r[2].kld_stderr * r[2].kld_stderr),
                  r[2].top1_diff, r[2].top1_diff_stderr, tm, tse, gained, lost);
    assert_true(r[2].kld_diff > 0 && dse > 0 && gained + lost > 0);
    assert_true(fabs(r[2].kld_diff - (r[2].kld_mean - r[0].kld_mean)) < 1e-12);
    /* the positions' KLDs are stored as float: 6e-8 relative each */
    assert_true(fabs(r[2].kld_diff / dm - 1) < 1e-6);
    assert_true(fabs(r[2].kld_diff_stderr / dse - 1) < 1e-5);
    assert_true(fabs(r[2].top1_diff - tm) < 1e-12);
    assert_true(fabs(r[2].top1_diff - (r[2].top1_agreement - r[0].top1_agreement)) < 1e-12);
    assert_true(fabs(r[2].top1_diff_stderr / tse - 1) < 1e-9);
    /* by hand from the counts: the differences are -1, 0, 1 */
    double p = (double)(gained - lost) / NP, v = (double)(gained + lost) / NP - p * p;
    assert_true(fabs(r[2].top1_diff_stderr / sqrt(v / (NP - 1)) - 1) < 1e-9);
    vf_eval_free(e);
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        e = run_eval(ref.m, ms, 3, ids, n, bos, CTX, CHUNKS);
        vf_ppl_result t;
        vf_eval_result(e, 2, &t);
        assert_memory_equal(&t.kld_diff, &r[2].kld_diff, sizeof t.kld_diff);
        assert_memory_equal(&t.kld_diff_stderr, &r[2].kld_diff_stderr, sizeof t.kld_diff);
        assert_memory_equal(&t.top1_diff, &r[2].top1_diff, sizeof t.kld_diff);
        assert_memory_equal(&t.top1_diff_stderr, &r[2].top1_diff_stderr, sizeof t.kld_diff);
        vf_eval_free(e);
    }
    omp_set_num_threads(nt);
#endif
    /* one model, or no reference: nothing to pair */
    e = run_eval(ref.m, ms + 2, 1, ids, n, bos, CTX, 1);
    vf_eval_result(e, 0, &r[0]);
    assert_int_equal(r[0].has_paired, 0);
    vf_eval_free(e);
    e = run_eval(NULL, ms, 3, ids, n, bos, CTX, 1);
    vf_eval_result(e, 2, &r[2]);
    assert_int_equal(r[2].has_paired, 0);
    vf_eval_free(e);
    free(d);
    free(tr);
    free(ids);
    close_model(&b);
    close_model(&a2);
    close_model(&a);
    close_model(&ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rmsnorm_rows),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_softmax_kld),
        cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_chunk_positions),
        cmocka_unit_test(test_forward_matches_naive),
        cmocka_unit_test(test_forward_kv_f16),
        cmocka_unit_test(test_batch_cache_threads),
        cmocka_unit_test(test_paths_and_int8),
        cmocka_unit_test(test_forward_seqs),
        cmocka_unit_test(test_eval_protocol),
        cmocka_unit_test(test_eval_batch),
        cmocka_unit_test(test_model_errors),
        cmocka_unit_test(test_stories260k_ppl),
        cmocka_unit_test(test_kld_two_models),
        cmocka_unit_test(test_paired),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
