/* verify/: the forward pass over a batch of tokens (RunState + transformer). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#endif

#include "vf_gemm.h"
#include "../quant/quant.h"
#include "vf_math.h"
#include "vf_model.h"

/* Element-operations below which a loop runs on one thread: waking a team
 * costs more than the work. */
#define VF_PAR_MIN (1 << 16)
/* Queries per attention tile: their scores share each key load, their weighted
 * sums each value load (vf_attn_scores takes up to 4). */
#define VF_ATT_QT 4

void vf_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    /* in vectors (-O2 leaves it scalar): two float multiplies per lane, the same bits */
#pragma omp simd
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * scale);
}

void vf_rmsnorm_rows(float *out, const float *x, const float *w, int n_tok, int n, float eps)
{
    int t = 0;
    for (; t + 8 <= n_tok; t += 8) {
        const float *xt = x + (size_t)t * n;
        double ss[8] = {0};
        for (int i = 0; i < n; i++)
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) ss[k] += (double)xt[(size_t)k * n + i] * xt[(size_t)k * n + i];
        for (int k = 0; k < 8; k++) {
            float scale = (float)(1.0 / sqrt(ss[k] / n + eps));
            float *o = out + (size_t)(t + k) * n;
            const float *xr = xt + (size_t)k * n;
#pragma omp simd
            for (int i = 0; i < n; i++) o[i] = w[i] * (xr[i] * scale);
        }
    }
    for (; t < n_tok; t++) vf_rmsnorm(out + (size_t)t * n, x + (size_t)t * n, w, n, eps);
}

/* x += y over n floats, in vectors and on the threads when there is enough
 * work (one float add per element: the same bits either way) */
static void add_par(float *restrict x, const float *restrict y, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > VF_PAR_MIN)
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

/* vf_rmsnorm_rows on the threads, 8 rows per iteration when there is enough work */
static void rmsnorm_par(float *out, const float *x, const float *w, int n_tok, int n, float eps)
{
    int ng = (n_tok + 7) / 8;
#pragma omp parallel for schedule(static) if ((int64_t)n_tok * n > VF_PAR_MIN)
    for (int g = 0; g < ng; g++) {
        int nt = n_tok - 8 * g < 8 ? n_tok - 8 * g : 8;
        vf_rmsnorm_rows(out + (size_t)g * 8 * n, x + (size_t)g * 8 * n, w, nt, n, eps);
    }
}

void vf_rope_rotate(float *vec, int n_heads, int head_dim, int n_rot, const float *cos_row,
                    const float *sin_row)
{
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * head_dim;
        for (int i = 0; i < n_rot / 2; i++) {
            float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * cos_row[i] - b * sin_row[i];
            v[2 * i + 1] = a * sin_row[i] + b * cos_row[i];
        }
    }
}

void vf_state_free(vf_state *s)
{
    free(s->x); free(s->xb); free(s->q); free(s->att_out); free(s->xb2);
    free(s->hb); free(s->hb2); free(s->att); free(s->kt);
    free(s->key_cache); free(s->value_cache); free(s->rope_cos); free(s->rope_sin);
    memset(s, 0, sizeof *s);
}

static float *alloc_f(size_t a, size_t b, size_t c, int *fail)
{
    /* every factor is bounded by vf_model's limits times an int, so the product
     * is checked once here against SIZE_MAX */
    if (*fail) return NULL;
    if (b && a > SIZE_MAX / sizeof(float) / b) { *fail = 1; return NULL; }
    size_t n = a * b;
    if (c && n > SIZE_MAX / sizeof(float) / c) { *fail = 1; return NULL; }
    n *= c;
    float *p = lpk_alloc_big(n * sizeof(float));
    if (!p) *fail = 1;
    return p;
}

/* Grows the state to hold a batch of n_tok tokens and positions < n_ctx in a KV
 * cache of kv_layers blocks; the cache keeps its contents (positions <
 * s->n_past of the blocks it held) when it grows. */
static int state_reserve(vf_model *m, int n_tok, int n_ctx, int kv_layers, lpk_error *err)
{
    vf_state *s = &m->s;
    const vf_config *c = &m->config;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    int fail = 0;
    if (n_tok > s->cap_tok) {
        int cap = n_tok;
        float *x = alloc_f((size_t)cap, (size_t)c->dim, 1, &fail);
        float *xb = alloc_f((size_t)cap, (size_t)c->dim, 1, &fail);
        float *xb2 = alloc_f((size_t)cap, (size_t)c->dim, 1, &fail);
        float *q = alloc_f((size_t)cap, qd, 1, &fail);
        float *ao = alloc_f((size_t)cap, qd, 1, &fail);
        float *hb = alloc_f((size_t)cap, (size_t)c->hidden_dim, 1, &fail);
        float *hb2 = alloc_f((size_t)cap, (size_t)c->hidden_dim, 1, &fail);
        if (fail) {
            free(x); free(xb); free(xb2); free(q); free(ao); free(hb); free(hb2);
            return lpk_err(err, LPK_ENOMEM, "out of memory for a batch of %d tokens", n_tok);
        }
        free(s->x); free(s->xb); free(s->xb2); free(s->q); free(s->att_out);
        free(s->hb); free(s->hb2);
        s->x = x; s->xb = xb; s->xb2 = xb2; s->q = q; s->att_out = ao; s->hb = hb; s->hb2 = hb2;
        s->cap_tok = cap;
    }
    if (n_ctx > s->cap_ctx || kv_layers > s->kv_layers) {
        int cap = n_ctx > s->cap_ctx ? n_ctx : s->cap_ctx;
        if (n_ctx > s->cap_ctx && s->cap_ctx && cap < 2 * s->cap_ctx && s->cap_ctx < (1 << 29))
            cap = 2 * s->cap_ctx;
        cap = (cap + 63) / 64 * 64;   /* attention works in blocks of up to 64 positions */
        if (kv_layers < s->kv_layers) kv_layers = s->kv_layers;
        size_t nl = (size_t)kv_layers, half = (size_t)c->n_rot / 2;
        float *kc = alloc_f(nl, (size_t)cap, kvd, &fail);
        float *vc = alloc_f(nl, (size_t)cap, kvd, &fail);
        float *att = alloc_f((size_t)c->n_heads * VF_ATT_QT, (size_t)cap, 1, &fail);
        float *kt = alloc_f((size_t)c->n_kv_heads, (size_t)cap, (size_t)c->head_dim, &fail);
        float *rc = alloc_f((size_t)cap, half, 1, &fail);
        float *rs = alloc_f((size_t)cap, half, 1, &fail);
        if (fail) {
            free(kc); free(vc); free(att); free(kt); free(rc); free(rs);
            return lpk_err(err, LPK_ENOMEM, "out of memory for a context of %d positions", n_ctx);
        }
        for (size_t l = 0; l < (size_t)s->kv_layers && s->n_past > 0; l++) {
            memcpy(kc + l * cap * kvd, s->key_cache + l * s->cap_ctx * kvd,
                   (size_t)s->n_past * kvd * sizeof(float));
            memcpy(vc + l * cap * kvd, s->value_cache + l * s->cap_ctx * kvd,
                   (size_t)s->n_past * kvd * sizeof(float));
        }
        /* angles in double: pos * freq loses nothing to float rounding */
        for (int p = 0; p < cap; p++)
            for (size_t i = 0; i < half; i++) {
                double a = p * m->rope_freq[i];
                rc[(size_t)p * half + i] = (float)cos(a);
                rs[(size_t)p * half + i] = (float)sin(a);
            }
        free(s->key_cache); free(s->value_cache); free(s->att); free(s->kt); free(s->rope_cos);
        free(s->rope_sin);
        s->key_cache = kc; s->value_cache = vc; s->att = att; s->kt = kt;
        s->rope_cos = rc; s->rope_sin = rs;
        s->cap_ctx = cap;
        s->kv_layers = kv_layers;
    }
    return LPK_OK;
}

static int embed(vf_model *m, const int32_t *tokens, int n_tok, float *x, lpk_error *err)
{
    const vf_weights *w = &m->w;
    int dim = m->config.dim, st = LPK_OK;
    for (int t = 0; t < n_tok && !st; t++) {
        const uint8_t *row = (const uint8_t *)w->token_embd + (size_t)tokens[t] * w->token_embd_row;
        float *dst = x + (size_t)t * dim;
        if (lpk_to_f32_row(w->token_embd_type, row, dst, (size_t)dim) != LPK_OK &&
            quant_dequantize_rows(w->token_embd_type, row, 1, dim, dst) != LPK_OK)
            st = lpk_err(err, LPK_EUNSUPPORTED, "token_embd.weight: cannot dequantize type %s",
                         lpk_type_get(w->token_embd_type)->name);
    }
    return st;
}

void vf_model_set_act_hook(vf_model *m, vf_act_hook hook, void *user)
{
    m->act_hook = hook;
    m->act_user = user;
}

void vf_model_set_kv_f16(vf_model *m, int mode)
{
    m->kv_f16 = mode >= VF_KV_F16_ATTN ? VF_KV_F16_ATTN : mode > 0 ? VF_KV_F16_CACHE : 0;
}

/* x = the f16 value nearest x (ties to even), for n floats */
static void round_f16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = lpk_f16_to_f32(lpk_f32_to_f16(x[i]));
}

static int matmul(vf_model *m, const void *w, int wtype, int n_out, int n_in, const float *x,
                  int n_tok, float *y, const char *what, int layer, lpk_error *err)
{
    /* (the output matrix's hook runs in vf_forward, over every token) */
    if (m->act_hook && layer >= 0) m->act_hook(m->act_user, layer, what, x, n_tok, n_in);
    int st = vf_matmul(w, wtype, n_out, n_in, x, n_tok, y);
    if (st)
        return lpk_err(err, st, "matmul of %s (layer %d, type %s, [%d, %d]) failed: %s", what,
                       layer, lpk_type_get(wtype) ? lpk_type_get(wtype)->name : "?", n_out, n_in,
                       lpk_status_name(st));
    return LPK_OK;
}

/* matmul of n matrices (what[j]: their names) on the same input: one
 * vf_matmul_n call (the activations quantized once where the types agree). */
static int matmul_n(vf_model *m, const vf_mat *mats, int n, int n_in, const float *x, int n_tok,
                    const char *const *what, int layer, lpk_error *err)
{
    if (m->act_hook)
        for (int j = 0; j < n; j++) m->act_hook(m->act_user, layer, what[j], x, n_tok, n_in);
    int st = vf_matmul_n(mats, n, n_in, x, n_tok);
    if (st) {
        const lpk_type_info *ti = lpk_type_get(mats[0].wtype);
        return lpk_err(err, st, "matmul of %s (layer %d, type %s, [%lld, %d]) failed: %s",
                       what[0], layer, ti ? ti->name : "?", (long long)mats[0].n_out, n_in,
                       lpk_status_name(st));
    }
    return LPK_OK;
}

/* Causal attention of the batch's queries (positions pos0 .. pos0+n_tok-1, batch
 * rows row0 .. row0+n_tok-1) over cached keys/values of positions 0 .. pos
 * (cache rows row0 .. row0+pos: a sequence's positions start at its row0). The keys of each kv head are first
 * transposed (head_dim rows of positions, zero-padded to a multiple of 64);
 * then one query head per OpenMP task, VF_ATT_QT queries at a time. Each
 * output element is computed by one thread in a fixed order (vf_math.h): a
 * score is q[0]k[0] + q[1]k[1] + ... and an output the sum over positions in
 * order (with VF_KV_F16_ATTN, of the softmax weights rounded to f16). */
static void attention(vf_model *m, int kl, int n_tok, int pos0, int row0)
{
    const vf_config *c = &m->config;
    vf_state *s = &m->s;
    int hd = c->head_dim, kv_mul = c->n_heads / c->n_kv_heads, n_all = pos0 + n_tok;
    size_t qd = (size_t)c->n_heads * hd, kvd = (size_t)c->n_kv_heads * hd;
    size_t ld = (size_t)s->cap_ctx;   /* a multiple of 64 */
    const float *kc = s->key_cache + ((size_t)kl * s->cap_ctx + (size_t)row0) * kvd;
    const float *vc = s->value_cache + ((size_t)kl * s->cap_ctx + (size_t)row0) * kvd;
    float scale = 1.0f / sqrtf((float)hd);
    int n_pad = (n_all + 63) / 64 * 64;
    /* threads only pay off when there is enough work per head */
    int64_t work = (int64_t)n_tok * n_all * hd;
#pragma omp parallel for schedule(static) if (work > VF_PAR_MIN)
    for (int g = 0; g < c->n_kv_heads; g++) {
        float *kt = s->kt + (size_t)g * hd * ld;   /* (hd, ld) */
        const float *k = kc + (size_t)g * hd;
        for (int p0 = 0; p0 < n_all; p0 += 16) {
            int p1 = p0 + 16 < n_all ? p0 + 16 : n_all;
            for (int i = 0; i < hd; i++)
                for (int p = p0; p < p1; p++) kt[(size_t)i * ld + p] = k[(size_t)p * kvd + i];
        }
        for (int i = 0; i < hd; i++)
            for (int p = n_all; p < n_pad; p++) kt[(size_t)i * ld + p] = 0;
    }
#pragma omp parallel for schedule(static) if (work > VF_PAR_MIN)
    for (int h = 0; h < c->n_heads; h++) {
        float *att = s->att + (size_t)h * VF_ATT_QT * ld;   /* (VF_ATT_QT, ld) */
        const float *kt = s->kt + (size_t)(h / kv_mul) * hd * ld;
        const float *v = vc + (size_t)(h / kv_mul) * hd;
        for (int t0 = 0; t0 < n_tok; t0 += VF_ATT_QT) {
            int nq = n_tok - t0 < VF_ATT_QT ? n_tok - t0 : VF_ATT_QT;
            int n0 = pos0 + t0 + 1;   /* keys seen by the first query of the tile */
            const float *q = s->q + (size_t)(row0 + t0) * qd + (size_t)h * hd;
            float *o = s->att_out + (size_t)(row0 + t0) * qd + (size_t)h * hd;
            vf_attn_scores(att, ld, q, qd, nq, kt, ld, hd, n0 + nq - 1);
            for (int j = 0; j < nq; j++) vf_softmax(att + (size_t)j * ld, n0 + j, scale);
            if (m->kv_f16 == VF_KV_F16_ATTN)
                for (int j = 0; j < nq; j++) round_f16(att + (size_t)j * ld, (size_t)(n0 + j));
            /* positions all queries see, then each query's further ones */
            vf_attn_wsum(o, qd, att, ld, nq, v, kvd, hd, 0, n0, 0);
            for (int j = 1; j < nq; j++)
                vf_attn_wsum(o + (size_t)j * qd, qd, att + (size_t)j * ld, ld, 1, v, kvd, hd, n0,
                             n0 + j, 1);
        }
    }
}

/* Block l (weights L) on the batch in s->x: n_seq sequences of n_seq_tok
 * tokens each, one after another, at positions pos0 .. pos0+n_seq_tok-1 of
 * each (n_seq > 1 only with pos0 = 0: sequence j's keys/values fill the cache
 * rows of batch rows j * n_seq_tok ..): attention over the cache's block kl,
 * each sequence on its own, then the FFN, both added to s->x. */
static int layer_run(vf_model *m, const vf_layer *L, int l, int kl, int n_seq, int n_seq_tok,
                     int pos0, lpk_error *err)
{
    int n_tok = n_seq * n_seq_tok;
    const vf_config *c = &m->config;
    vf_state *s = &m->s;
    int dim = c->dim, hd = c->head_dim, hid = c->hidden_dim, half = c->n_rot / 2;
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd, st;
    int big = (int64_t)n_tok * dim > VF_PAR_MIN;   /* worth waking threads for */
    float *kc = s->key_cache + ((size_t)kl * s->cap_ctx + pos0) * kvd;
    float *vc = s->value_cache + ((size_t)kl * s->cap_ctx + pos0) * kvd;
    rmsnorm_par(s->xb, s->x, L->attn_norm, n_tok, dim, c->norm_eps);
    /* k and v go straight into the cache rows of their positions */
    static const char *const qkv_names[3] = {"attn_q", "attn_k", "attn_v"};
    const vf_mat qkv[3] = {{L->wq, L->wq_type, qd, s->q}, {L->wk, L->wk_type, kvd, kc},
                           {L->wv, L->wv_type, kvd, vc}};
    if ((st = matmul_n(m, qkv, 3, dim, s->xb, n_tok, qkv_names, l, err)))
        return st;
#pragma omp parallel for schedule(static) if (big)
    for (int t = 0; t < n_tok; t++) {
        const float *cr = s->rope_cos + (size_t)(pos0 + t % n_seq_tok) * half;
        const float *sr = s->rope_sin + (size_t)(pos0 + t % n_seq_tok) * half;
        vf_rope_rotate(s->q + (size_t)t * qd, c->n_heads, hd, c->n_rot, cr, sr);
        vf_rope_rotate(kc + (size_t)t * kvd, c->n_kv_heads, hd, c->n_rot, cr, sr);
    }
    if (m->kv_f16) {
        round_f16(kc, (size_t)n_tok * kvd);
        round_f16(vc, (size_t)n_tok * kvd);
    }
    if (m->kv_f16 == VF_KV_F16_ATTN) round_f16(s->q, (size_t)n_tok * qd);
    for (int j = 0; j < n_seq; j++) attention(m, kl, n_seq_tok, pos0, j * n_seq_tok);
    if ((st = matmul(m, L->wo, L->wo_type, dim, qd, s->att_out, n_tok, s->xb2, "attn_output", l,
                     err)))
        return st;
    int64_t nx = (int64_t)n_tok * dim;
    add_par(s->x, s->xb2, nx);

    rmsnorm_par(s->xb, s->x, L->ffn_norm, n_tok, dim, c->norm_eps);
    static const char *const gu_names[2] = {"ffn_gate", "ffn_up"};
    const vf_mat gu[2] = {{L->w1, L->w1_type, hid, s->hb}, {L->w3, L->w3_type, hid, s->hb2}};
    if ((st = matmul_n(m, gu, 2, dim, s->xb, n_tok, gu_names, l, err)))
        return st;
    /* SwiGLU: silu(gate) * up (vf_swiglu: glibc's expf to the bit, in
     * vectors), a token per iteration */
#pragma omp parallel for schedule(static) if (big)
    for (int t = 0; t < n_tok; t++)
        vf_swiglu(s->hb + (size_t)t * hid, s->hb2 + (size_t)t * hid, (size_t)hid);
    if ((st = matmul(m, L->w2, L->w2_type, dim, hid, s->hb, n_tok, s->xb2, "ffn_down", l, err)))
        return st;
    add_par(s->x, s->xb2, nx);
    return LPK_OK;
}

/* Step done of a forward pass is complete: the step hook's say, which may stop
 * the pass (LPK_EINTR). */
static int step(vf_model *m, int done, lpk_error *err)
{
    if (!m->step_hook || !m->step_hook(m->step_user, done, m->config.n_layers + 1))
        return LPK_OK;
    return lpk_err(err, LPK_EINTR, "%s: cancelled", lpk_reader_path(m->reader));
}

/* vf_forward (n_seq = 1) and vf_forward_seqs (pos0 = 0, no act hook): n_seq
 * sequences of n_seq_tok tokens one after another in the batch. */
static int forward_run(vf_model *m, const int32_t *tokens, int n_seq, int n_seq_tok, int pos0,
                       int n_logits, float *logits, lpk_error *err)
{
    const vf_config *c = &m->config;
    const vf_weights *w = &m->w;
    vf_state *s = &m->s;
    if (n_seq <= 0 || n_seq_tok <= 0 || n_seq_tok > INT32_MAX / n_seq || n_logits < 0 ||
        n_logits > n_seq_tok || pos0 < 0 || pos0 > s->n_past || pos0 > INT32_MAX - n_seq_tok ||
        (n_seq > 1 && (pos0 || m->act_hook)) || (n_logits > 0 && !logits))
        return lpk_err(err, LPK_EINVAL, "vf_forward: bad arguments (%d x %d tokens, pos0 %d of "
                       "%d cached, n_logits %d)", n_seq, n_seq_tok, pos0, s->n_past, n_logits);
    int n_tok = n_seq * n_seq_tok;
    for (int t = 0; t < n_tok; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return lpk_err(err, LPK_EINVAL, "token id %d at batch index %d is out of range "
                           "(vocabulary %d)", tokens[t], t, c->vocab_size);
    int st = state_reserve(m, n_tok, pos0 + n_tok, c->n_layers, err);
    if (st) return st;
    s->n_past = pos0; /* positions >= pos0 are overwritten below */

    int dim = c->dim;
    if ((st = embed(m, tokens, n_tok, s->x, err))) return st;

    for (int l = 0; l < c->n_layers; l++) {
        if ((st = layer_run(m, &w->layers[l], l, l, n_seq, n_seq_tok, pos0, err))) return st;
        if ((st = step(m, l + 1, err))) return st;
    }
    /* several sequences: the cache holds no one sequence to continue */
    s->n_past = n_seq == 1 ? pos0 + n_tok : 0;
    if (n_logits == 0 && !m->act_hook) return step(m, c->n_layers + 1, err);

    const float *xo = s->xb;   /* the output matrix's input rows */
    if (m->act_hook) {
        rmsnorm_par(s->xb, s->x, w->output_norm, n_tok, dim, c->norm_eps);
        m->act_hook(m->act_user, -1, "output", s->xb, n_tok, dim);
        if (n_logits == 0) return step(m, c->n_layers + 1, err);
        xo += (size_t)(n_tok - n_logits) * dim;
    } else {
        /* each sequence's last n_logits rows, normed into consecutive rows of xb */
        for (int j = 0; j < n_seq; j++)
            rmsnorm_par(s->xb + (size_t)j * n_logits * dim,
                        s->x + ((size_t)j * n_seq_tok + (size_t)(n_seq_tok - n_logits)) * dim,
                        w->output_norm, n_logits, dim, c->norm_eps);
    }
    st = matmul(m, w->output, w->output_type, c->vocab_size, dim, xo, n_seq * n_logits,
                logits, "output", -1, err);
    return st ? st : step(m, c->n_layers + 1, err);
}

int vf_forward(vf_model *m, const int32_t *tokens, int n_tok, int pos0, int n_logits,
               float *logits, lpk_error *err)
{
    return forward_run(m, tokens, 1, n_tok, pos0, n_logits, logits, err);
}

int vf_forward_seqs(vf_model *m, const int32_t *tokens, int n_seq, int n_tok, int n_logits,
                    float *logits, lpk_error *err)
{
    return forward_run(m, tokens, n_seq, n_tok, 0, n_logits, logits, err);
}

int vf_embed(vf_model *m, const int32_t *tokens, int n_tok, float *x, lpk_error *err)
{
    for (int t = 0; t < n_tok; t++)
        if (tokens[t] < 0 || tokens[t] >= m->config.vocab_size)
            return lpk_err(err, LPK_EINVAL, "token id %d at batch index %d is out of range "
                           "(vocabulary %d)", tokens[t], t, m->config.vocab_size);
    return embed(m, tokens, n_tok, x, err);
}

int vf_layer_forward(vf_model *m, int l, float *x, int n_tok, const float *const *f32w,
                     lpk_error *err)
{
    const vf_config *c = &m->config;
    vf_state *s = &m->s;
    if (l < 0 || l >= c->n_layers || n_tok <= 0 || !x)
        return lpk_err(err, LPK_EINVAL, "vf_layer_forward: bad arguments (layer %d of %d, n_tok "
                       "%d)", l, c->n_layers, n_tok);
    /* one block's cache (the first of a larger one that is there already) */
    int st = state_reserve(m, n_tok, n_tok, 1, err);
    if (st) return st;
    vf_layer L = m->w.layers[l];
    if (f32w) {
        const void **wp[VF_LAYER_MATRICES] = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w3, &L.w2};
        int *tp[VF_LAYER_MATRICES] = {&L.wq_type, &L.wk_type, &L.wv_type, &L.wo_type,
                                      &L.w1_type, &L.w3_type, &L.w2_type};
        for (int k = 0; k < VF_LAYER_MATRICES; k++)
            if (f32w[k]) {
                *wp[k] = f32w[k];
                *tp[k] = LPK_TYPE_F32;
            }
    }
    size_t nx = (size_t)n_tok * (size_t)c->dim;
    memcpy(s->x, x, nx * sizeof *x);
    s->n_past = 0; /* the cache's first block is rewritten; the others are stale */
    st = layer_run(m, &L, l, 0, 1, n_tok, 0, err);
    if (!st) memcpy(x, s->x, nx * sizeof *x);
    return st;
}

void vf_output_norm(const vf_model *m, const float *x, int n_tok, float *out)
{
    int dim = m->config.dim;
    vf_rmsnorm_rows(out, x, m->w.output_norm, n_tok, dim, m->config.norm_eps);
}
