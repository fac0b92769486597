/* Importance matrices from calibration text (calib.h). */
#include "calib.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tok/tok.h"

/* The weights whose inputs are collected, in forward-pass order. */
static const char *const kinds[] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                    "ffn_gate", "ffn_up", "ffn_down"};
#define N_KINDS (int)(sizeof kinds / sizeof kinds[0])

/* The 32x32 diagonal blocks of X^T X (the cov32 entries), per input: in
 * double, the lower triangle of each block by rows, row i padded to a
 * multiple of 4 (4 * (i/4 + 1) values from column 0), 576 per block. */
#define CB 32
#define TRI 576
#define TT 64           /* tokens converted to double at a time */

static int tri_off(int i)
{
    int g = i / 4;
    return 8 * g * (g + 1) + 4 * (g + 1) * (i % 4);
}

/* Tile rows xd (nt x 32 doubles) into a block's sums, row i of the lower
 * triangle at a time, its values in registers across the tokens. */
static void cov_tile(double *acc, const double *xd, int nt)
{
    for (int i = 0; i < CB; i++) {
        double *a = acc + tri_off(i);
        int len = 4 * (i / 4 + 1);
        double r[CB];
        for (int j = 0; j < len; j++) r[j] = a[j];
        for (int t = 0; t < nt; t++) {
            const double *v = xd + t * CB;
            double xi = v[i];
#pragma omp simd
            for (int j = 0; j < len; j++) r[j] += xi * v[j];
        }
        for (int j = 0; j < len; j++) a[j] = r[j];
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

/* Row i (nv vectors of 4: a constant once inlined) of cov_tile. The fused
 * multiply-add gives the plain path's bits: the product of two floats is
 * exact in double. */
LPK_TARGET_INLINE("avx2,fma") static void cov_row_avx2(double *a, const double *xd, int nt,
                                                       int i, const int nv)
{
    __m256d r[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        if (k < nv) r[k] = _mm256_loadu_pd(a + 4 * k);
    for (int t = 0; t < nt; t++) {
        const double *v = xd + t * CB;
        __m256d xi = _mm256_broadcast_sd(v + i);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            if (k < nv) r[k] = _mm256_fmadd_pd(xi, _mm256_loadu_pd(v + 4 * k), r[k]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        if (k < nv) _mm256_storeu_pd(a + 4 * k, r[k]);
}

LPK_TARGET("avx2,fma") static void cov_tile_avx2(double *acc, const double *xd, int nt)
{
    for (int i = 0; i < CB; i++) {
        double *a = acc + tri_off(i);
        switch (i / 4) {
        case 0: cov_row_avx2(a, xd, nt, i, 1); break;
        case 1: cov_row_avx2(a, xd, nt, i, 2); break;
        case 2: cov_row_avx2(a, xd, nt, i, 3); break;
        case 3: cov_row_avx2(a, xd, nt, i, 4); break;
        case 4: cov_row_avx2(a, xd, nt, i, 5); break;
        case 5: cov_row_avx2(a, xd, nt, i, 6); break;
        case 6: cov_row_avx2(a, xd, nt, i, 7); break;
        default: cov_row_avx2(a, xd, nt, i, 8); break;
        }
    }
}
#endif

/* acc += the lower triangle of x^T x over n_tok rows of 32 values (stride
 * apart). Every value sums its tokens in order, in double, of products of
 * two floats (exact in double): the same bits on every path and for any order
 * of the loops, and calib_gptq's Hessian entries. */
static void cov_block(double *acc, const float *x, int n_tok, int64_t stride, int avx2)
{
    double xd[TT * CB];
    for (int t0 = 0; t0 < n_tok; t0 += TT) {
        int nt = n_tok - t0 < TT ? n_tok - t0 : TT;
        for (int t = 0; t < nt; t++)
            for (int j = 0; j < CB; j++) xd[t * CB + j] = x[(size_t)(t0 + t) * (size_t)stride + j];
#if defined(__x86_64__)
        if (avx2) {
            cov_tile_avx2(acc, xd, nt);
            continue;
        }
#endif
        (void)avx2;
        cov_tile(acc, xd, nt);
    }
}

/* The blocks of an input of n columns (n / 32 blocks) over n_tok rows of x;
 * the blocks on the pass's threads (each block's sums in token order: the
 * same for any thread count). */
static void cov_add(double *acc, const float *x, int n_tok, int64_t n)
{
    int64_t nb = n / CB;
    unsigned want = LPK_CPU_AVX2 | LPK_CPU_FMA;
    int avx2 = (lpk_cpu_features() & want) == want;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) cov_block(acc + b * TRI, x + b * CB, n_tok, n, avx2);
}

typedef struct {
    int n_layers;
    int64_t *ncols;     /* (n_layers * N_KINDS + 1) row length of each weight */
    float **sum;        /* the same: per-column sums of squares (NULL: not collected) */
    double **cov;       /* the same, for the first weight of each input (attn_q for
                         * q/k/v, ffn_gate for gate/up): cov_block's sums, or NULL */
    uint64_t *count;    /* tokens seen per weight */
    int *calls;         /* chunks seen per weight */
    int bad;            /* a hook call did not match the model's shapes */
} acc;

static int slot(const acc *a, int layer, const char *name)
{
    if (layer < 0) return strcmp(name, "output") ? -1 : a->n_layers * N_KINDS;
    if (layer >= a->n_layers) return -1;
    for (int k = 0; k < N_KINDS; k++)
        if (!strcmp(name, kinds[k])) return layer * N_KINDS + k;
    return -1;
}

/* The slot whose input slot s shares (q/k/v: attn_q's, gate/up: ffn_gate's). */
static int lead(const acc *a, int s)
{
    if (s == a->n_layers * N_KINDS) return s;
    int k = s % N_KINDS;
    return k == 1 || k == 2 ? s - k : k == 5 ? s - 1 : s;
}

/* The last slot that uses lead slot s's blocks. */
static int last_user(int s, int n_slots)
{
    if (s == n_slots - 1) return s;
    int k = s % N_KINDS;
    return k == 0 ? s + 2 : k == 4 ? s + 1 : s;
}

static void hook(void *user, int layer, const char *name, const float *x, int n_tok, int n_in)
{
    acc *a = user;
    int s = slot(a, layer, name);
    if (s < 0 || !a->sum[s]) return;
    if (n_in != a->ncols[s]) { a->bad = 1; return; }
    if (a->cov[s]) cov_add(a->cov[s], x, n_tok, n_in);
    /* float sums, token by token, as llama-imatrix adds them: its files and
     * ours then agree to a few 1e-6 (double sums differ from its by up to
     * 2e-4 on 100K tokens, its float rounding) */
    float *sum = a->sum[s];
    for (int t = 0; t < n_tok; t++) {
        const float *r = x + (size_t)t * n_in;
        for (int j = 0; j < n_in; j++) sum[j] += r[j] * r[j];
    }
    a->count[s] += (uint64_t)n_tok;
    a->calls[s]++;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int plain(int type)
{
    return type == LPK_TYPE_F32 || type == LPK_TYPE_F16 || type == LPK_TYPE_BF16;
}

/* Where the token ids come from: an array (calib_run) or a text read piece by
 * piece (calib_reader). */
typedef struct {
    const int32_t *v;
    size_t n, at;
    calib_text *s;
} id_source;

static int source_read(id_source *x, int32_t *dst, size_t n, size_t *got, lpk_error *err)
{
    if (x->s) return calib_text_read(x->s, dst, n, got, err);
    *got = x->n - x->at < n ? x->n - x->at : n;
    memcpy(dst, x->v + x->at, *got * sizeof *dst);
    x->at += *got;
    return LPK_OK;
}

/* calib_run over src, which holds n_tokens ids (or, from a text, at least
 * that many: the count may stop at the chunks asked for). */
static int run(vf_model *m, id_source *src, size_t n_tokens, int32_t bos, const calib_opts *o,
               const char *text_path, lpk_imatrix **out, lpk_error *err)
{
    *out = NULL;
    const vf_config *c = vf_model_config(m);
    const lpk_reader *r = vf_model_reader(m);
    int ctx = o && o->ctx > 0 ? o->ctx : 512;
    if (ctx < 2 || (size_t)ctx > n_tokens)
        return lpk_err(err, LPK_EINVAL, "calibration needs at least one chunk of %d tokens; the "
                       "text has %zu", ctx, n_tokens);
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (t->n_dims >= 2 && !plain(t->type))
            return lpk_err(err, LPK_EUNSUPPORTED, "%s: %s is %s: calibration runs the fp32 "
                           "reference pass and needs f32/f16/bf16 weights",
                           lpk_reader_path(r), t->name, lpk_type_get(t->type)->name);
    }
    size_t n_chunks = n_tokens / (size_t)ctx;
    if (o && o->max_chunks > 0 && (size_t)o->max_chunks < n_chunks) n_chunks = (size_t)o->max_chunks;
    if (n_chunks > INT32_MAX) n_chunks = INT32_MAX;

    int ns = c->n_layers * N_KINDS + 1, st = LPK_OK;
    acc a = {0};
    a.n_layers = c->n_layers;
    a.ncols = calloc((size_t)ns, sizeof *a.ncols);
    a.sum = calloc((size_t)ns, sizeof *a.sum);
    a.cov = calloc((size_t)ns, sizeof *a.cov);
    a.count = calloc((size_t)ns, sizeof *a.count);
    a.calls = calloc((size_t)ns, sizeof *a.calls);
    int32_t *chunk = malloc((size_t)ctx * sizeof *chunk);
    lpk_imatrix *im = NULL;
    if (!a.ncols || !a.sum || !a.cov || !a.count || !a.calls || !chunk) goto nomem;
    int qd = c->n_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        int64_t nc[N_KINDS] = {c->dim, c->dim, c->dim, qd, c->dim, c->dim, c->hidden_dim};
        for (int k = 0; k < N_KINDS; k++) a.ncols[l * N_KINDS + k] = nc[k];
    }
    a.ncols[ns - 1] = c->dim;
    for (int s = 0; s < ns; s++) {
        if (s == ns - 1 && o && o->no_output) continue;
        if (!(a.sum[s] = calloc((size_t)a.ncols[s], sizeof(float)))) goto nomem;
        if (o && o->no_cov) continue;
        if (lead(&a, s) == s && a.ncols[s] % CB == 0 &&
            !(a.cov[s] = calloc((size_t)(a.ncols[s] / CB) * TRI, sizeof(double))))
            goto nomem;
    }

    vf_model_set_act_hook(m, hook, &a);
    vf_model_set_kv_f16(m, 1);
    double t0 = now();
    for (size_t ch = 0; ch < n_chunks && !st; ch++) {
        size_t got;
        if ((st = source_read(src, chunk, (size_t)ctx, &got, err))) break;
        if (got < (size_t)ctx) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: the text changed while it was read",
                         text_path ? text_path : "calibration");
            break;
        }
        if (bos >= 0) chunk[0] = bos;
        st = vf_forward(m, chunk, ctx, 0, 0, NULL, err);
        if (!st && a.bad)
            st = lpk_err(err, LPK_ECORRUPT, "%s: a weight's input does not match its shape",
                         lpk_reader_path(r));
        if (!st && o && o->progress &&
            o->progress(o->user, (int)ch + 1, (int)n_chunks, (uint64_t)(ch + 1) * (uint64_t)ctx,
                        now() - t0))
            st = lpk_err(err, LPK_EINTR, "%s: cancelled", text_path ? text_path : "calibration");
    }
    vf_model_set_act_hook(m, NULL, NULL);
    vf_model_set_kv_f16(m, 0);
    if (st) goto done;

    if (!(im = lpk_imatrix_new())) goto nomem;
    im->chunks = (int32_t)n_chunks;
    im->chunk_size = ctx;
    if (o && o->dataset && lpk_imatrix_set_dataset(im, o->dataset)) goto nomem;
    for (int s = 0; s < ns; s++) {
        if (!a.sum[s] || !a.count[s]) continue;
        char name[LPK_MAX_NAME + 1];
        if (s == ns - 1)
            snprintf(name, sizeof name, "%s", c->tied ? "token_embd.weight" : "output.weight");
        else
            snprintf(name, sizeof name, "blk.%d.%s.weight", s / N_KINDS, kinds[s % N_KINDS]);
        lpk_imatrix_entry *e;
        if ((st = lpk_imatrix_add(im, name, a.ncols[s], &e))) goto nomem;
        memcpy(e->sum2, a.sum[s], (size_t)e->n * sizeof(float));
        e->count = (float)a.count[s];
        e->ncall = a.calls[s];
        for (int64_t j = 0; j < e->n; j++)
            if (!isfinite(e->sum2[j])) {
                st = lpk_err(err, LPK_EBADVALUE, "%s: activations entering %s overflow (column "
                             "%lld)", lpk_reader_path(r), name, (long long)j);
                goto done;
            }
        int l = lead(&a, s);
        if (!a.cov[l]) continue;
        if ((st = lpk_imatrix_add_cov32(e))) goto nomem;
        for (int64_t col = 0; col < e->n; col++) {
            const double *blk = a.cov[l] + (col / CB) * TRI;
            int i = (int)(col % CB);
            for (int j = 0; j < CB; j++) {
                double v = j <= i ? blk[tri_off(i) + j] : blk[tri_off(j) + i];
                if (!((e->cov32[col * CB + j] = (float)v) <= FLT_MAX &&
                      e->cov32[col * CB + j] >= -FLT_MAX)) {
                    st = lpk_err(err, LPK_EBADVALUE, "%s: activations entering %s overflow "
                                 "(block sums of column %lld)", lpk_reader_path(r), name,
                                 (long long)col);
                    goto done;
                }
            }
        }
        if (last_user(l, ns) == s) {
            free(a.cov[l]);
            a.cov[l] = NULL;
        }
    }
    if ((st = lpk_imatrix_rehash(im))) {
        if (st != LPK_EBADVALUE) goto nomem;
        st = lpk_err(err, st, "%s: the activations' squares overflow a float once averaged",
                     lpk_reader_path(r));
    }
    goto done;
nomem:
    st = lpk_err(err, LPK_ENOMEM, "out of memory for the calibration statistics");
done:
    if (a.sum)
        for (int s = 0; s < ns; s++) free(a.sum[s]);
    if (a.cov)
        for (int s = 0; s < ns; s++) free(a.cov[s]);
    free(a.sum);
    free(a.cov);
    free(a.ncols);
    free(a.count);
    free(a.calls);
    free(chunk);
    if (st) lpk_imatrix_free(im);
    else *out = im;
    return st;
}

int calib_run(vf_model *m, const int32_t *tokens, size_t n_tokens, int32_t bos,
              const calib_opts *o, lpk_imatrix **out, lpk_error *err)
{
    id_source src = {tokens, n_tokens, 0, NULL};
    return run(m, &src, n_tokens, bos, o, NULL, out, err);
}

int calib_file(const char *model_path, const char *text_path, const calib_opts *o,
               lpk_imatrix **out, lpk_error *err)
{
    lpk_reader *r = NULL;
    *out = NULL;
    int st = lpk_reader_open(model_path, &r, err);
    if (!st) st = calib_reader(r, text_path, o, out, err);
    lpk_reader_close(r);
    return st;
}

int calib_reader(const lpk_reader *r, const char *text_path, const calib_opts *o,
                 lpk_imatrix **out, lpk_error *err)
{
    vf_model *m = NULL;
    tok_tokenizer *tok = NULL;
    calib_text *txt = NULL;
    size_t n_ids = 0;
    *out = NULL;
    calib_opts oo = o ? *o : (calib_opts){0};
    if (!oo.dataset) oo.dataset = text_path;
    int ctx = oo.ctx > 0 ? oo.ctx : 512;
    /* counting stops at the chunks asked for (a short text is counted whole,
     * so run's message names its length) */
    size_t max = SIZE_MAX;
    if (ctx >= 2 && oo.max_chunks > 0 && (size_t)oo.max_chunks <= SIZE_MAX / (size_t)ctx)
        max = (size_t)oo.max_chunks * (size_t)ctx;
    int st = vf_model_open(r, &m, err);
    if (!st) st = tok_tokenizer_new(lpk_reader_meta(r), &tok, err);
    if (!st) st = calib_text_open(text_path, tok, oo.text_block, &txt, err);
    if (!st) st = calib_text_count(txt, max, &n_ids, err);
    if (!st) {
        id_source src = {NULL, 0, 0, txt};
        st = run(m, &src, n_ids, tok_tokenizer_bos(tok), &oo, text_path, out, err);
    }
    calib_text_close(txt);
    tok_tokenizer_free(tok);
    vf_model_free(m);
    return st;
}
