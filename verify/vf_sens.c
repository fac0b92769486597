/* Per-tensor sensitivity: how far the model's output distribution moves (mean
 * KL divergence from the original's) when one tensor alone is quantized. The
 * size-targeted recipes scale each tensor's expected weight error by it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../quant/quant.h"
#include "../tok/tok.h"
#include "vf_model.h"

/* Points the weight `name` of m at data of type (row_bytes per row for the
 * embedding). LPK_ENOTFOUND when m has no such 2-D weight. */
static int set_weight(vf_model *m, const char *name, int type, const void *data,
                      size_t row_bytes)
{
    vf_weights *w = &m->w;
    if (strcmp(name, "token_embd.weight") == 0) {
        w->token_embd = data;
        w->token_embd_type = type;
        w->token_embd_row = row_bytes;
        if (m->config.tied) {
            w->output = data;
            w->output_type = type;
        }
        return LPK_OK;
    }
    if (strcmp(name, "output.weight") == 0 && !m->config.tied) {
        w->output = data;
        w->output_type = type;
        return LPK_OK;
    }
    int l, k = 0;
    char part[LPK_MAX_NAME + 1];
    if (sscanf(name, "blk.%d.%n", &l, &k) != 1 || k <= 0 || l < 0 || l >= m->config.n_layers)
        return LPK_ENOTFOUND;
    snprintf(part, sizeof part, "%s", name + k);
    vf_layer *L = &w->layers[l];
    static const struct { const char *part; size_t ptr, type; } map[] = {
        {"attn_q.weight", offsetof(vf_layer, wq), offsetof(vf_layer, wq_type)},
        {"attn_k.weight", offsetof(vf_layer, wk), offsetof(vf_layer, wk_type)},
        {"attn_v.weight", offsetof(vf_layer, wv), offsetof(vf_layer, wv_type)},
        {"attn_output.weight", offsetof(vf_layer, wo), offsetof(vf_layer, wo_type)},
        {"ffn_gate.weight", offsetof(vf_layer, w1), offsetof(vf_layer, w1_type)},
        {"ffn_down.weight", offsetof(vf_layer, w2), offsetof(vf_layer, w2_type)},
        {"ffn_up.weight", offsetof(vf_layer, w3), offsetof(vf_layer, w3_type)},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(part, map[i].part) != 0) continue;
        *(const void **)((char *)L + map[i].ptr) = data;
        *(int *)((char *)L + map[i].type) = type;
        return LPK_OK;
    }
    return LPK_ENOTFOUND;
}

/* Tensor i quantized to type (with its importance weights); *out malloc'ed. */
static int probe_bytes(const lpk_tensor *t, int type, const float *imatrix, void **out,
                       size_t *row_bytes, lpk_error *err)
{
    int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
    uint64_t nb = 0;
    if (lpk_type_nbytes(type, (uint64_t)(nr * nc), &nb)) return LPK_EINVAL;
    float *x = malloc((size_t)(nr * nc) * sizeof *x);
    void *q = malloc(nb ? (size_t)nb : 1);
    int rc = x && q ? LPK_OK : lpk_err(err, LPK_ENOMEM, "out of memory");
    if (!rc)
        rc = quant_type_is_block(t->type) ? quant_dequantize_rows(t->type, t->data, nr, nc, x)
                                          : lpk_to_f32_row(t->type, t->data, x, (size_t)(nr * nc));
    if (!rc) rc = quant_quantize_rows(type, x, nr, nc, q, imatrix, err);
    free(x);
    if (rc) {
        free(q);
        return rc;
    }
    *out = q;
    *row_bytes = (size_t)(nb / (uint64_t)(nr ? nr : 1));
    return LPK_OK;
}

int vf_tensor_sensitivity(const lpk_reader *r, const int32_t *tokens, size_t n_tokens,
                          int32_t bos, int ctx, int max_chunks, int probe_type,
                          const float *const *imatrix, double *kld,
                          vf_sens_progress_fn progress, void *user, lpk_error *err)
{
    size_t n = lpk_reader_n_tensors(r);
    for (size_t i = 0; i < n; i++) kld[i] = NAN;
    vf_model *ref = NULL;
    int rc = vf_model_open(r, &ref, err);
    enum { GROUP = 8 }; /* models evaluated together: the reference runs once per group */
    vf_model *ms[GROUP] = {0};
    void *bytes[GROUP] = {0};
    size_t idx[GROUP];
    size_t i = 0;
    while (!rc && i < n) {
        int g = 0;
        for (; i < n && g < GROUP && !rc; i++) {
            const lpk_tensor *t = lpk_reader_tensor(r, i);
            if (t->n_dims != 2 || !quant_row_fits(probe_type, lpk_tensor_ncols(t))) continue;
            size_t rb = 0;
            rc = vf_model_open(r, &ms[g], err);
            if (!rc) rc = probe_bytes(t, probe_type, imatrix ? imatrix[i] : NULL, &bytes[g], &rb, err);
            if (!rc && set_weight(ms[g], t->name, probe_type, bytes[g], rb) != LPK_OK) {
                vf_model_free(ms[g]); /* not a weight of the forward pass */
                free(bytes[g]);
                ms[g] = NULL;
                bytes[g] = NULL;
                continue;
            }
            idx[g++] = i;
        }
        vf_eval *e = NULL;
        if (!rc && g) rc = vf_eval_new(ref, ms, g, tokens, n_tokens, bos, ctx, max_chunks, &e, err);
        int st = 1;
        while (!rc && e && (st = vf_eval_step(e, err)) > 0) {}
        if (!rc && st < 0) rc = st;
        for (int k = 0; k < g && !rc; k++) {
            vf_ppl_result res;
            vf_eval_result(e, k, &res);
            kld[idx[k]] = res.kld_mean;
        }
        vf_eval_free(e);
        for (int k = 0; k < GROUP; k++) {
            vf_model_free(ms[k]);
            free(bytes[k]);
            ms[k] = NULL;
            bytes[k] = NULL;
        }
        if (!rc && progress && progress(user, i, n))
            rc = lpk_err(err, LPK_EINTR, "%s: cancelled", lpk_reader_path(r));
    }
    vf_model_free(ref);
    return rc;
}

int vf_target_gains(const lpk_reader *r, const int32_t *tokens, size_t n_tokens, int32_t bos,
                    int ctx, int max_chunks, const float *const *imatrix, double *gain,
                    vf_sens_progress_fn progress, void *user, lpk_error *err)
{
    const int probe = LPK_TYPE_Q3_K;
    size_t n = lpk_reader_n_tensors(r);
    int rc = vf_tensor_sensitivity(r, tokens, n_tokens, bos, ctx, max_chunks, probe, imatrix,
                                   gain, progress, user, err);
    double top = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (isnan(gain[i])) continue;
        double e = 0;
        rc = quant_tensor_expected_error(lpk_reader_tensor(r, i), probe, imatrix ? imatrix[i] : NULL,
                                         &e, err);
        /* a probe that changed nothing measurable still counts a little */
        gain[i] = e > 0 ? (gain[i] > 0 ? gain[i] : 1e-12) / e : 0.0;
        top = gain[i] > top ? gain[i] : top;
    }
    /* the matrices not probed (rows that do not fit q3_k): the largest gain */
    for (size_t i = 0; i < n && !rc; i++)
        if (isnan(gain[i])) gain[i] = top > 0 ? top : 1.0;
    return rc;
}

int vf_target_gains_text(const lpk_reader *r, const char *text_path, int ctx, int max_chunks,
                         const float *const *imatrix, double *gain,
                         vf_sens_progress_fn progress, void *user, lpk_error *err)
{
    FILE *f = fopen(text_path, "rb");
    if (!f) return lpk_err(err, LPK_EIO, "%s: cannot open", text_path);
    char *text = NULL;
    size_t n = 0, cap = 0;
    int rc = LPK_OK;
    for (;;) {
        if (n == cap) {
            char *t = cap < SIZE_MAX / 4 ? realloc(text, cap ? cap * 2 : 1 << 16) : NULL;
            if (!t) { rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory", text_path); break; }
            text = t;
            cap = cap ? cap * 2 : 1 << 16;
        }
        size_t got = fread(text + n, 1, cap - n, f);
        n += got;
        if (!got) {
            if (ferror(f)) rc = lpk_err(err, LPK_EIO, "%s: read error", text_path);
            break;
        }
    }
    fclose(f);
    if (!rc && n && text[n - 1] == '\n') n--; /* as llama.cpp's -f */
    tok_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (!rc) rc = tok_tokenizer_new(lpk_reader_meta(r), &tok, err);
    if (!rc) rc = tok_encode(tok, text, n, 1, 0, &ids, &n_ids, err);
    if (!rc && n_ids < (size_t)ctx)
        rc = lpk_err(err, LPK_EINVAL, "%s: %zu tokens, fewer than one chunk of %d", text_path,
                     n_ids, ctx);
    if (!rc) rc = vf_target_gains(r, ids, n_ids, tok_tokenizer_bos(tok), ctx, max_chunks, imatrix,
                                  gain, progress, user, err);
    free(ids);
    tok_tokenizer_free(tok);
    free(text);
    return rc;
}
