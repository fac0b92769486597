/* GPTQ's Hessians from the fp32 forward pass over calibration text (through
 * verify's activation hook), and the per-tensor GPTQ quantization with them.
 * See docs/QUANT.md, "GPTQ". */
#include "calib.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "../quant/quant.h"
#include "../tok/tok.h"
#include "../verify/verify.h"

/* The inputs with a Hessian, per block. */
enum { H_ATTN_IN, H_ATTN_OUT, H_FFN_IN, H_FFN_OUT, H_PER_LAYER };

typedef struct {
    int64_t n;          /* input width */
    double *h;          /* n x n; lower triangle accumulated, mirrored by finish() */
    uint64_t tokens;    /* rows of X seen */
    float *imatrix;     /* diag(H) / tokens, made on demand */
    quant_gptq_factor *f[2]; /* built on demand: [0] group 32, [1] group 256 */
} hess;

struct calib_gptq {
    int n_layers;
    hess *layer;        /* n_layers x H_PER_LAYER */
    hess output;
    calib_gptq_opts o;
    uint64_t text_hash, tokens;
    int chunks;
    int finished;
};

void calib_gptq_opts_default(calib_gptq_opts *o)
{
    o->ctx = 512;
    o->chunks = 0;
    o->damp = 0.01;
    o->order = QUANT_GPTQ_ORDER_NONE;
    o->text_block = 0;
}

static void hess_free(hess *h)
{
    free(h->h);
    free(h->imatrix);
    quant_gptq_factor_free(h->f[0]);
    quant_gptq_factor_free(h->f[1]);
}

void calib_gptq_free(calib_gptq *g)
{
    if (!g) return;
    for (int i = 0; g->layer && i < g->n_layers * H_PER_LAYER; i++) hess_free(&g->layer[i]);
    free(g->layer);
    hess_free(&g->output);
    free(g);
}

static int hess_init(hess *h, int64_t n)
{
    h->n = n;
    h->h = calloc((size_t)n * (size_t)n, sizeof *h->h);
    return h->h ? 0 : -1;
}

/* H += X^T X over the lower triangle. Every entry sums its tokens in order, in
 * double, whatever the tiling (4 rows of H share each load of a token's row)
 * or the thread count. xd: n_tok x n doubles of scratch. */
static void hess_add(hess *h, const float *x, int n_tok, double *xd)
{
    const int64_t n = h->n;
    for (size_t i = 0; i < (size_t)n_tok * (size_t)n; i++) xd[i] = x[i];
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t a0 = 0; a0 < n; a0 += 4) {
        int na = n - a0 < 4 ? (int)(n - a0) : 4;
        double *h0 = h->h + a0 * n;
        for (int t = 0; t < n_tok; t++) {
            const double *xt = xd + (size_t)t * (size_t)n;
            if (na == 4) {
                double x0 = xt[a0], x1 = xt[a0 + 1], x2 = xt[a0 + 2], x3 = xt[a0 + 3];
                double *r0 = h0, *r1 = h0 + n, *r2 = h0 + 2 * n, *r3 = h0 + 3 * n;
#pragma omp simd
                for (int64_t b = 0; b < a0; b++) {
                    double v = xt[b];
                    r0[b] += x0 * v;
                    r1[b] += x1 * v;
                    r2[b] += x2 * v;
                    r3[b] += x3 * v;
                }
            } else {
                for (int k = 0; k < na; k++)
                    for (int64_t b = 0; b < a0; b++) h0[k * n + b] += xt[a0 + k] * xt[b];
            }
            /* the triangle inside the tile */
            for (int k = 0; k < na; k++)
                for (int64_t b = a0; b <= a0 + k; b++) h0[k * n + b] += xt[a0 + k] * xt[b];
        }
    }
    h->tokens += (uint64_t)n_tok;
}

typedef struct {
    calib_gptq *g;
    int bad;    /* a hook call did not match the shapes */
    double *xd; /* ctx x widest input: hess_add's scratch */
} hook_ctx;

static hess *hess_for(calib_gptq *g, int layer, const char *kind)
{
    if (layer < 0) return !strcmp(kind, "output") && g->output.h ? &g->output : NULL;
    if (layer >= g->n_layers) return NULL;
    hess *L = g->layer + (size_t)layer * H_PER_LAYER;
    if (!strcmp(kind, "attn_q") || !strcmp(kind, "attn_k") || !strcmp(kind, "attn_v"))
        return &L[H_ATTN_IN];
    if (!strcmp(kind, "attn_output")) return &L[H_ATTN_OUT];
    if (!strcmp(kind, "ffn_gate") || !strcmp(kind, "ffn_up")) return &L[H_FFN_IN];
    if (!strcmp(kind, "ffn_down")) return &L[H_FFN_OUT];
    return NULL;
}

static void on_act(void *user, int layer, const char *name, const float *x, int n_tok, int n_in)
{
    hook_ctx *c = user;
    /* q/k/v and gate/up see the same input: count it once */
    if (!strcmp(name, "attn_k") || !strcmp(name, "attn_v") || !strcmp(name, "ffn_up")) return;
    hess *h = hess_for(c->g, layer, name);
    if (!h) return;
    if (h->n != n_in || n_tok > c->g->o.ctx) {
        c->bad = 1;
        return;
    }
    hess_add(h, x, n_tok, c->xd);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Mirrors the lower triangles (the factor wants the whole matrix). */
static void hess_finish(hess *h)
{
    for (int64_t a = 0; a < h->n; a++)
        for (int64_t b = 0; b < a; b++) h->h[b * h->n + a] = h->h[a * h->n + b];
}

int calib_gptq_collect(const lpk_reader *r, const char *calib_path, const calib_gptq_opts *o,
                       calib_progress_fn progress, void *user, calib_gptq **out,
                       lpk_error *err)
{
    *out = NULL;
    if (!o || o->ctx < 4 || o->chunks < 0 || !(o->damp >= 0.0) ||
        o->order < QUANT_GPTQ_ORDER_NONE || o->order > QUANT_GPTQ_ORDER_BLOCK)
        return lpk_err(err, LPK_EINVAL, "gptq: bad calibration options");
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (t->n_dims >= 2 && quant_type_is_block(t->type))
            return lpk_err(err, LPK_EUNSUPPORTED,
                           "gptq: %s is already quantized (%s); GPTQ needs the f32/f16/bf16 "
                           "weights for the calibration pass", t->name, lpk_type_get(t->type)->name);
    }
    vf_model *m = NULL;
    tok_tokenizer *tok = NULL;
    calib_text *txt = NULL;
    size_t n_ids = 0;
    calib_gptq *g = calloc(1, sizeof *g);
    if (!g) return lpk_err(err, LPK_ENOMEM, "gptq: out of memory");
    g->o = *o;
    int st = vf_model_open(r, &m, err);
    if (!st) st = tok_tokenizer_new(lpk_reader_meta(r), &tok, err);
    if (!st) st = calib_text_open(calib_path, tok, o->text_block, &txt, err);
    /* counting stops at the chunks asked for; a text shorter than one chunk
     * is counted whole for the message */
    size_t max = o->chunks > 0 ? (size_t)o->chunks * (size_t)o->ctx : SIZE_MAX;
    if (!st) st = calib_text_count(txt, max, &n_ids, err);
    if (st) goto fail;
    const vf_config *c = vf_model_config(m);
    size_t whole_chunks = n_ids / (size_t)o->ctx;
    int n_chunks = whole_chunks > INT32_MAX ? INT32_MAX : (int)whole_chunks;
    if (o->chunks > 0 && o->chunks < n_chunks) n_chunks = o->chunks;
    if (n_chunks < 1) {
        st = lpk_err(err, LPK_EINVAL, "%s: %zu tokens, fewer than one chunk of %d", calib_path,
                     n_ids, o->ctx);
        goto fail;
    }
    g->n_layers = c->n_layers;
    g->layer = calloc((size_t)c->n_layers * H_PER_LAYER, sizeof *g->layer);
    if (!g->layer) goto nomem;
    int qd = c->n_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        hess *L = g->layer + (size_t)l * H_PER_LAYER;
        if (hess_init(&L[H_ATTN_IN], c->dim) || hess_init(&L[H_ATTN_OUT], qd) ||
            hess_init(&L[H_FFN_IN], c->dim) || hess_init(&L[H_FFN_OUT], c->hidden_dim))
            goto nomem;
    }
    if (!c->tied && hess_init(&g->output, c->dim)) goto nomem;

    int64_t widest = c->dim > qd ? c->dim : qd;
    if (c->hidden_dim > widest) widest = c->hidden_dim;
    hook_ctx hc = {g, 0, malloc((size_t)o->ctx * (size_t)widest * sizeof(double))};
    int32_t *chunk = malloc((size_t)o->ctx * sizeof *chunk);
    if (!hc.xd || !chunk) {
        free(hc.xd);
        free(chunk);
        goto nomem;
    }
    vf_model_set_act_hook(m, on_act, &hc);
    vf_model_set_kv_f16(m, 1);
    double t0 = now_s();
    int32_t bos = tok_tokenizer_bos(tok);
    for (int k = 0; k < n_chunks && !st; k++) {
        size_t got;
        if ((st = calib_text_read(txt, chunk, (size_t)o->ctx, &got, err))) break;
        if (got < (size_t)o->ctx) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: the text changed while it was read", calib_path);
            break;
        }
        if (bos >= 0) chunk[0] = bos;
        st = vf_forward(m, chunk, o->ctx, 0, 0, NULL, err);
        if (!st && hc.bad)
            st = lpk_err(err, LPK_ECORRUPT, "gptq: a layer input does not match its weight's width");
        if (!st) {
            g->chunks++;
            g->tokens += (uint64_t)o->ctx;
            if (progress) progress(user, k + 1, n_chunks, g->tokens, now_s() - t0);
        }
    }
    free(chunk);
    free(hc.xd);
    vf_model_set_act_hook(m, NULL, NULL);
    if (!st) st = calib_text_hash(txt, &g->text_hash, err);
    if (st) goto fail;
    for (int i = 0; i < g->n_layers * H_PER_LAYER; i++) hess_finish(&g->layer[i]);
    if (g->output.h) hess_finish(&g->output);
    g->finished = 1;
    calib_text_close(txt);
    tok_tokenizer_free(tok);
    vf_model_free(m);
    *out = g;
    return LPK_OK;
nomem:
    st = lpk_err(err, LPK_ENOMEM, "gptq: no memory for the Hessians");
fail:
    calib_text_close(txt);
    tok_tokenizer_free(tok);
    vf_model_free(m);
    calib_gptq_free(g);
    return st;
}

/* blk.N.KIND.weight or output.weight -> its Hessian (NULL if none). */
static hess *hess_of_name(calib_gptq *g, const char *name)
{
    if (!g || !g->finished) return NULL;
    if (!strcmp(name, "output.weight")) return g->output.h ? &g->output : NULL;
    int layer, k = 0;
    char kind[64];
    if (sscanf(name, "blk.%d.%63[a-z_].weight%n", &layer, kind, &k) != 2 || name[k] != '\0')
        return NULL;
    return hess_for(g, layer, kind);
}

int calib_gptq_applies(const calib_gptq *g, const char *name, int type)
{
    return quant_gptq_supports(type) && hess_of_name((calib_gptq *)g, name) != NULL;
}

int calib_gptq_quantize(calib_gptq *g, const char *name, int type, const float *x,
                        int64_t nrows, int64_t ncols, void *dst, lpk_error *err)
{
    hess *h = hess_of_name(g, name);
    if (!h || !quant_gptq_supports(type))
        return lpk_err(err, LPK_EINVAL, "gptq: no Hessian for %s or type not supported", name);
    if (h->n != ncols)
        return lpk_err(err, LPK_EINVAL, "gptq: %s has %lld columns, its input %lld", name,
                       (long long)ncols, (long long)h->n);
    int group = lpk_type_get(type)->block_size, slot = group >= 256;
    if (!h->f[slot]) {
        int st = quant_gptq_factor_new(h->h, h->n, g->o.damp, g->o.order, group, &h->f[slot], err);
        if (st) return st;
    }
    return quant_gptq_rows(type, x, nrows, ncols, h->f[slot], dst, err);
}

const float *calib_gptq_imatrix(calib_gptq *g, const char *name, int64_t ncols)
{
    hess *h = hess_of_name(g, name);
    if (!h || h->n != ncols || h->tokens == 0) return NULL;
    if (!h->imatrix) {
        h->imatrix = malloc((size_t)h->n * sizeof *h->imatrix);
        if (!h->imatrix) return NULL;
        for (int64_t i = 0; i < h->n; i++)
            h->imatrix[i] = (float)(h->h[i * h->n + i] / (double)h->tokens);
    }
    return h->imatrix;
}

int calib_gptq_record(const calib_gptq *g, lpk_meta *meta)
{
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, g->text_hash);
    int st = lpk_meta_set_str(meta, "quant.method", "gptq");
    if (!st) st = lpk_meta_set_str(meta, "quant.gptq.calib_xxh3", hex);
    if (!st) st = lpk_meta_set_u64(meta, "quant.gptq.calib_tokens", g->tokens);
    if (!st) st = lpk_meta_set_u32(meta, "quant.gptq.chunks", (uint32_t)g->chunks);
    if (!st) st = lpk_meta_set_u32(meta, "quant.gptq.ctx", (uint32_t)g->o.ctx);
    if (!st) st = lpk_meta_set_f64(meta, "quant.gptq.damp", g->o.damp);
    if (!st) st = lpk_meta_set_str(meta, "quant.gptq.order", quant_gptq_order_name(g->o.order));
    return st;
}
