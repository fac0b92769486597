/* verify/: a LLaMA model over a container's mapping (Config + Weights). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vf_model.h"

/* Limits that keep every size product far from overflow; real models are well
 * inside them (a 405B model has dim 16384, vocab 128256, 126 layers). */
#define VF_MAX_DIM (1 << 20)
#define VF_MAX_VOCAB (1 << 24)
#define VF_MAX_LAYERS 4096

static int get_u32(const lpk_reader *r, const char *key, int required, uint32_t def,
                   uint32_t max, int *out, lpk_error *err)
{
    uint32_t v = def;
    int st = lpk_meta_get_u32(lpk_reader_meta(r), key, &v);
    if (st == LPK_ENOTFOUND && !required) st = LPK_OK, v = def;
    if (st == LPK_ENOTFOUND)
        return lpk_err(err, LPK_ENOTFOUND, "%s: metadata key %s is missing", lpk_reader_path(r),
                       key);
    if (st != LPK_OK)
        return lpk_err(err, LPK_ECORRUPT, "%s: metadata key %s is not an unsigned integer",
                       lpk_reader_path(r), key);
    if (v > max)
        return lpk_err(err, LPK_ECORRUPT, "%s: %s = %u is out of range (max %u)",
                       lpk_reader_path(r), key, v, max);
    *out = (int)v;
    return LPK_OK;
}

static int get_f32(const lpk_reader *r, const char *key, float def, float *out, lpk_error *err)
{
    float v = def;
    int st = lpk_meta_get_f32(lpk_reader_meta(r), key, &v);
    if (st == LPK_ENOTFOUND) v = def;
    else if (st != LPK_OK)
        return lpk_err(err, LPK_ECORRUPT, "%s: metadata key %s is not a float",
                       lpk_reader_path(r), key);
    if (!isfinite(v))
        return lpk_err(err, LPK_EBADVALUE, "%s: %s is not finite", lpk_reader_path(r), key);
    *out = v;
    return LPK_OK;
}

static int read_config(const lpk_reader *r, vf_config *c, lpk_error *err)
{
    const lpk_meta *m = lpk_reader_meta(r);
    const char *path = lpk_reader_path(r);
    const char *arch = lpk_meta_get_str(m, "general.architecture");
    if (arch && strcmp(arch, "llama"))
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: architecture '%s' is not supported (llama only)",
                       path, arch);
    memset(c, 0, sizeof *c);
    int st;
    if ((st = get_u32(r, "llama.embedding_length", 1, 0, VF_MAX_DIM, &c->dim, err)) ||
        (st = get_u32(r, "llama.feed_forward_length", 1, 0, VF_MAX_DIM, &c->hidden_dim, err)) ||
        (st = get_u32(r, "llama.block_count", 1, 0, VF_MAX_LAYERS, &c->n_layers, err)) ||
        (st = get_u32(r, "llama.attention.head_count", 1, 0, VF_MAX_DIM, &c->n_heads, err)))
        return st;
    if ((st = get_u32(r, "llama.attention.head_count_kv", 0, (uint32_t)c->n_heads, VF_MAX_DIM,
                      &c->n_kv_heads, err)) ||
        (st = get_u32(r, "llama.context_length", 0, 0, UINT32_MAX / 2, &c->seq_len, err)))
        return st;
    if (c->dim == 0 || c->hidden_dim == 0 || c->n_layers == 0 || c->n_heads == 0 ||
        c->n_kv_heads == 0)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: zero hyperparameter (dim %d, ffn %d, layers %d, heads %d, kv heads %d)",
                       path, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads);
    if (c->n_heads % c->n_kv_heads)
        return lpk_err(err, LPK_ECORRUPT, "%s: head_count %d is not a multiple of head_count_kv %d",
                       path, c->n_heads, c->n_kv_heads);
    uint32_t def_hd = c->dim % c->n_heads ? 0 : (uint32_t)(c->dim / c->n_heads);
    if ((st = get_u32(r, "llama.attention.key_length", 0, def_hd, VF_MAX_DIM, &c->head_dim, err)))
        return st;
    if (c->head_dim == 0 || (int64_t)c->head_dim * c->n_heads > VF_MAX_DIM)
        return lpk_err(err, LPK_ECORRUPT, "%s: no usable head dimension (dim %d, %d heads)", path,
                       c->dim, c->n_heads);
    int vlen = c->head_dim;
    if ((st = get_u32(r, "llama.attention.value_length", 0, (uint32_t)c->head_dim, VF_MAX_DIM,
                      &vlen, err)))
        return st;
    if (vlen != c->head_dim)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: value_length %d differs from key_length %d",
                       path, vlen, c->head_dim);
    if ((st = get_u32(r, "llama.rope.dimension_count", 0, (uint32_t)c->head_dim, VF_MAX_DIM,
                      &c->n_rot, err)))
        return st;
    if (c->n_rot > c->head_dim || c->n_rot % 2)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: rope.dimension_count %d must be even and at most head_dim %d", path,
                       c->n_rot, c->head_dim);
    if ((st = get_f32(r, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &c->norm_eps, err)) ||
        (st = get_f32(r, "llama.rope.freq_base", 10000.0f, &c->rope_theta, err)))
        return st;
    if (c->norm_eps < 0 || c->rope_theta <= 0)
        return lpk_err(err, LPK_ECORRUPT, "%s: rms epsilon %g or rope freq_base %g out of range",
                       path, (double)c->norm_eps, (double)c->rope_theta);
    c->rope_scaling = VF_ROPE_NONE;
    c->rope_factor = 1.0f;
    const char *stype = lpk_meta_get_str(m, "llama.rope.scaling.type");
    if (stype && strcmp(stype, "none")) {
        if (!strcmp(stype, "linear")) c->rope_scaling = VF_ROPE_LINEAR;
        else if (!strcmp(stype, "llama3")) c->rope_scaling = VF_ROPE_LLAMA3;
        else
            return lpk_err(err, LPK_EUNSUPPORTED, "%s: rope scaling type '%s' is not supported",
                           path, stype);
        if ((st = get_f32(r, "llama.rope.scaling.factor", 1.0f, &c->rope_factor, err)) ||
            (st = get_f32(r, "llama.rope.scaling.low_freq_factor", 1.0f,
                          &c->rope_low_freq_factor, err)) ||
            (st = get_f32(r, "llama.rope.scaling.high_freq_factor", 4.0f,
                          &c->rope_high_freq_factor, err)) ||
            (st = get_u32(r, "llama.rope.scaling.original_context_length", 0, 8192,
                          UINT32_MAX / 2, &c->rope_orig_ctx, err)))
            return st;
        if (c->rope_factor <= 0 || (c->rope_scaling == VF_ROPE_LLAMA3 &&
                                    (c->rope_high_freq_factor <= c->rope_low_freq_factor ||
                                     c->rope_low_freq_factor <= 0 || c->rope_orig_ctx == 0)))
            return lpk_err(err, LPK_ECORRUPT, "%s: rope scaling parameters out of range", path);
    }
    return LPK_OK;
}

/* A 2-D weight [rows, cols]; any stored type (vf_matmul rejects what it cannot run). */
static int find_2d(int shape_only, const lpk_reader *r, const char *name, int64_t rows, int64_t cols,
                   const void **data, int *type, lpk_error *err)
{
    const lpk_tensor *t = lpk_reader_find(r, name);
    if (!t) return lpk_err(err, LPK_ENOTFOUND, "%s: tensor %s is missing", lpk_reader_path(r), name);
    if (t->n_dims != 2 || t->dims[0] != rows || t->dims[1] != cols)
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor %s has shape [%lld, %lld] (%d dims), expected "
                       "[%lld, %lld]", lpk_reader_path(r), name, (long long)t->dims[0],
                       t->n_dims > 1 ? (long long)t->dims[1] : 0LL, t->n_dims, (long long)rows,
                       (long long)cols);
    const lpk_type_info *ti = lpk_type_get(t->type);
    if (!ti || t->type == LPK_TYPE_Q8_K)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor %s has unsupported type %d",
                       lpk_reader_path(r), name, t->type);
    *type = t->type;
    if (shape_only) return LPK_OK;
    int st = lpk_reader_tensor_data(r, lpk_reader_index(r, t), data, err);
    if (st) return st;
    return LPK_OK;
}

/* A 1-D norm of n values: used in place when f32, else converted into *owned. */
static int find_norm(int shape_only, const lpk_reader *r, const char *name, int64_t n, float **owned,
                     const float **out, lpk_error *err)
{
    const lpk_tensor *t = lpk_reader_find(r, name);
    if (!t) return lpk_err(err, LPK_ENOTFOUND, "%s: tensor %s is missing", lpk_reader_path(r), name);
    if (t->n_dims != 1 || t->dims[0] != n)
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor %s has %d dims [%lld...], expected [%lld]",
                       lpk_reader_path(r), name, t->n_dims, (long long)t->dims[0], (long long)n);
    const float *v;
    const void *data;
    if (shape_only) {
        if (t->type != LPK_TYPE_F32 && t->type != LPK_TYPE_F16 && t->type != LPK_TYPE_BF16)
            return lpk_err(err, LPK_EUNSUPPORTED, "%s: norm %s has type %s (f32, f16 or bf16 "
                           "expected)", lpk_reader_path(r), name,
                           lpk_type_get(t->type) ? lpk_type_get(t->type)->name : "?");
        return LPK_OK;
    }
    int st = lpk_reader_tensor_data(r, lpk_reader_index(r, t), &data, err);
    if (st) return st;
    if (t->type == LPK_TYPE_F32) {
        if ((uintptr_t)data % sizeof(float))
            return lpk_err(err, LPK_ECORRUPT, "%s: tensor %s is not 4-byte aligned",
                           lpk_reader_path(r), name);
        v = data;
    } else if (t->type == LPK_TYPE_F16 || t->type == LPK_TYPE_BF16) {
        lpk_to_f32_row(t->type, data, *owned, (size_t)n);
        v = *owned;
        *owned += n;
    } else {
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: norm %s has type %s (f32, f16 or bf16 expected)",
                       lpk_reader_path(r), name,
                       lpk_type_get(t->type) ? lpk_type_get(t->type)->name : "?");
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return lpk_err(err, LPK_EBADVALUE, "%s: tensor %s: element %lld is not finite",
                           lpk_reader_path(r), name, (long long)i);
    *out = v;
    return LPK_OK;
}

static int load_weights(vf_model *m, lpk_error *err)
{
    const lpk_reader *r = m->reader;
    vf_config *c = &m->config;
    vf_weights *w = &m->w;
    if (!m->shape_only) {
        /* the first touch of every tensor (its checksum and finiteness checks:
         * a pass over the whole file) on the threads, a tensor at a time;
         * what fails is found again, in the same order and with the same
         * error, by the lookups below */
        int64_t nt = (int64_t)lpk_reader_n_tensors(r);
#pragma omp parallel for schedule(dynamic, 1) if (nt > 1)
        for (int64_t i = 0; i < nt; i++) {
            const void *d;
            lpk_error e = {0};
            (void)lpk_reader_tensor_data(r, (size_t)i, &d, &e);
        }
    }
    const lpk_tensor *emb = lpk_reader_find(r, "token_embd.weight");
    if (!emb)
        return lpk_err(err, LPK_ENOTFOUND, "%s: tensor token_embd.weight is missing",
                       lpk_reader_path(r));
    if (emb->n_dims != 2 || emb->dims[0] <= 0 || emb->dims[0] > VF_MAX_VOCAB)
        return lpk_err(err, LPK_ECORRUPT, "%s: token_embd.weight must be [vocab, dim] with vocab "
                       "in 1..%d", lpk_reader_path(r), VF_MAX_VOCAB);
    c->vocab_size = (int)emb->dims[0];
    int st;
    uint32_t vs;
    if (lpk_meta_get_u32(lpk_reader_meta(r), "llama.vocab_size", &vs) == LPK_OK &&
        vs != (uint32_t)c->vocab_size)
        return lpk_err(err, LPK_ECORRUPT, "%s: llama.vocab_size %u differs from token_embd rows %d",
                       lpk_reader_path(r), vs, c->vocab_size);
    if ((st = find_2d(m->shape_only, r, "token_embd.weight", c->vocab_size, c->dim, &w->token_embd,
                      &w->token_embd_type, err)))
        return st;
    uint64_t rb;
    if (lpk_type_nbytes(w->token_embd_type, (uint64_t)c->dim, &rb) != LPK_OK)
        return lpk_err(err, LPK_ECORRUPT, "%s: token_embd.weight: dim %d is not a whole number of "
                       "%s blocks", lpk_reader_path(r), c->dim,
                       lpk_type_get(w->token_embd_type)->name);
    w->token_embd_row = (size_t)rb;
    c->tied = lpk_reader_find(r, "output.weight") == NULL;
    if (c->tied) {
        w->output = w->token_embd;
        w->output_type = w->token_embd_type;
    } else if ((st = find_2d(m->shape_only, r, "output.weight", c->vocab_size, c->dim, &w->output,
                             &w->output_type, err))) {
        return st;
    }

    /* room for every norm in case none is stored as f32 */
    size_t n_norm = ((size_t)c->n_layers * 2 + 1) * (size_t)c->dim;
    w->owned = malloc(n_norm * sizeof(float));
    w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
    if (!w->owned || !w->layers)
        return lpk_err(err, LPK_ENOMEM, "%s: out of memory for the model", lpk_reader_path(r));
    float *own = w->owned;
    if ((st = find_norm(m->shape_only, r, "output_norm.weight", c->dim, &own, &w->output_norm, err)))
        return st;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        vf_layer *L = &w->layers[l];
        char n[LPK_MAX_NAME + 1];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d." s ".weight", l), n)
        if ((st = find_norm(m->shape_only, r, NAME("attn_norm"), c->dim, &own, &L->attn_norm, err)) ||
            (st = find_norm(m->shape_only, r, NAME("ffn_norm"), c->dim, &own, &L->ffn_norm, err)) ||
            (st = find_2d(m->shape_only, r, NAME("attn_q"), qd, c->dim, &L->wq, &L->wq_type, err)) ||
            (st = find_2d(m->shape_only, r, NAME("attn_k"), kvd, c->dim, &L->wk, &L->wk_type, err)) ||
            (st = find_2d(m->shape_only, r, NAME("attn_v"), kvd, c->dim, &L->wv, &L->wv_type, err)) ||
            (st = find_2d(m->shape_only, r, NAME("attn_output"), c->dim, qd, &L->wo, &L->wo_type, err)) ||
            (st = find_2d(m->shape_only, r, NAME("ffn_gate"), c->hidden_dim, c->dim, &L->w1, &L->w1_type, err)) ||
            (st = find_2d(m->shape_only, r, NAME("ffn_down"), c->dim, c->hidden_dim, &L->w2, &L->w2_type, err)) ||
            (st = find_2d(m->shape_only, r, NAME("ffn_up"), c->hidden_dim, c->dim, &L->w3, &L->w3_type, err)))
            return st;
#undef NAME
    }
    return LPK_OK;
}

int vf_model_open(const lpk_reader *r, vf_model **out, lpk_error *err)
{
    *out = NULL;
    if (!r) return lpk_err(err, LPK_EINVAL, "vf_model_open: no reader");
    vf_model *m = calloc(1, sizeof *m);
    if (!m) return lpk_err(err, LPK_ENOMEM, "out of memory");
    m->reader = r;
    int st = read_config(r, &m->config, err);
    if (!st) st = load_weights(m, err);
    if (!st) {
        m->rope_freq = malloc(((size_t)m->config.n_rot / 2 + 1) * sizeof(double));
        if (!m->rope_freq) st = lpk_err(err, LPK_ENOMEM, "out of memory");
        else vf_rope_freqs(&m->config, m->rope_freq);
    }
    if (st) {
        vf_model_free(m);
        return st;
    }
    *out = m;
    return LPK_OK;
}

int vf_model_check(const lpk_reader *r, lpk_error *err)
{
    if (!r) return lpk_err(err, LPK_EINVAL, "vf_model_check: no reader");
    vf_model *m = calloc(1, sizeof *m);
    if (!m) return lpk_err(err, LPK_ENOMEM, "out of memory");
    m->reader = r;
    m->shape_only = 1;
    int st = read_config(r, &m->config, err);
    if (!st) st = load_weights(m, err);
    vf_model_free(m);
    return st;
}

void vf_model_free(vf_model *m)
{
    if (!m) return;
    vf_state_free(&m->s);
    free(m->w.layers);
    free(m->w.owned);
    free(m->rope_freq);
    free(m);
}

const vf_config *vf_model_config(const vf_model *m) { return &m->config; }
const lpk_reader *vf_model_reader(const vf_model *m) { return m->reader; }

void vf_rope_freqs(const vf_config *c, double *freq)
{
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < c->n_rot / 2; i++) {
        double f = pow((double)c->rope_theta, -2.0 * i / c->n_rot);
        if (c->rope_scaling == VF_ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_scaling == VF_ROPE_LLAMA3) {
            /* Meta's apply_scaling: long wavelengths slowed by the factor, short
             * ones kept, a smooth blend in between. */
            double wavelen = 2 * pi / f;
            double low_wl = c->rope_orig_ctx / (double)c->rope_low_freq_factor;
            double high_wl = c->rope_orig_ctx / (double)c->rope_high_freq_factor;
            if (wavelen > low_wl) {
                f /= c->rope_factor;
            } else if (wavelen >= high_wl) {
                double smooth = (c->rope_orig_ctx / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        freq[i] = f;
    }
}
