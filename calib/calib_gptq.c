/* GPTQ's Hessians, one block at a time from the hidden states of the calibration
 * tokens (verify's block forward and activation hook), and the per-tensor GPTQ
 * quantization with them.
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
    double *h;          /* n x n; lower triangle accumulated, mirrored by finish();
                         * NULL once a factor was built in its memory */
    double *diag;       /* (n) diag(H), kept by finish() */
    uint64_t tokens;    /* rows of X seen */
    float *imatrix;     /* diag(H) / tokens, made on demand */
    quant_gptq_factor *f[2]; /* built on demand: [0] group 32 (and every group when
                              * the order does not depend on it), [1] group 256 */
} hess;

struct calib_gptq {
    vf_model *m;        /* over the caller's reader */
    int n_layers;
    hess L[H_PER_LAYER];/* the Hessians of block `cur` */
    hess output;        /* the output matrix's, when cur == n_layers */
    int cur;            /* the block whose Hessians are held (n_layers: output), -1: none */
    int hs_layer;       /* the block hs enter (n_layers: the final norm) */
    float *hs;          /* (chunks * ctx, dim): hidden states of every calibration token */
    float *scratch;     /* (ctx, dim) */
    double *xd;         /* ctx x widest input: hess_add's scratch */
    int32_t *ids;       /* (chunks * ctx) the chunks' tokens, first of each set to BOS */
    float *qw[VF_LAYER_MATRICES]; /* sequential: block cur's quantized matrices (f32), or NULL */
    int bad;            /* a hook call did not match the shapes */
    calib_gptq_opts o;
    uint64_t text_hash, tokens;
    int chunks;
    calib_progress_fn progress; /* calib_gptq_set_progress */
    void *progress_user;
    int64_t passed;     /* chunks run through blocks since set_progress */
    double progress_t0;
};

void calib_gptq_opts_default(calib_gptq_opts *o)
{
    o->ctx = 512;
    o->chunks = 0;
    o->damp = 0.01;
    o->order = QUANT_GPTQ_ORDER_NONE;
    o->text_block = 0;
    o->sequential = 0;
}

static void hess_free(hess *h)
{
    free(h->h);
    free(h->diag);
    free(h->imatrix);
    quant_gptq_factor_free(h->f[0]);
    quant_gptq_factor_free(h->f[1]);
}

static void free_qw(calib_gptq *g)
{
    for (int k = 0; k < VF_LAYER_MATRICES; k++) {
        free(g->qw[k]);
        g->qw[k] = NULL;
    }
}

void calib_gptq_free(calib_gptq *g)
{
    if (!g) return;
    for (int i = 0; i < H_PER_LAYER; i++) hess_free(&g->L[i]);
    hess_free(&g->output);
    free_qw(g);
    free(g->hs);
    free(g->scratch);
    free(g->xd);
    free(g->ids);
    vf_model_free(g->m);
    free(g);
}

/* An empty n x n Hessian (the old one and what was made from it freed). */
static int hess_reset(hess *h, int64_t n)
{
    hess_free(h);
    memset(h, 0, sizeof *h);
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

/* Which Hessian of block `layer` (or the output, layer -1) a weight kind
 * multiplies: H_* or -1. */
static int hess_kind(const char *kind)
{
    if (!strcmp(kind, "attn_q") || !strcmp(kind, "attn_k") || !strcmp(kind, "attn_v"))
        return H_ATTN_IN;
    if (!strcmp(kind, "attn_output")) return H_ATTN_OUT;
    if (!strcmp(kind, "ffn_gate") || !strcmp(kind, "ffn_up")) return H_FFN_IN;
    if (!strcmp(kind, "ffn_down")) return H_FFN_OUT;
    return -1;
}

static void on_act(void *user, int layer, const char *name, const float *x, int n_tok, int n_in)
{
    calib_gptq *g = user;
    /* q/k/v and gate/up see the same input: count it once */
    if (!strcmp(name, "attn_k") || !strcmp(name, "attn_v") || !strcmp(name, "ffn_up")) return;
    int k = hess_kind(name);
    if (k < 0 || layer != g->cur) return;
    hess *h = &g->L[k];
    if (h->n != n_in || n_tok > g->o.ctx) {
        g->bad = 1;
        return;
    }
    hess_add(h, x, n_tok, g->xd);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Mirrors the lower triangles (the factor wants the whole matrix) and keeps
 * the diagonal (the matrix itself may become a factor). */
static int hess_finish(hess *h)
{
    if (!h->h) return 0;
    for (int64_t a = 0; a < h->n; a++)
        for (int64_t b = 0; b < a; b++) h->h[b * h->n + a] = h->h[a * h->n + b];
    h->diag = malloc((size_t)h->n * sizeof *h->diag);
    if (!h->diag) return -1;
    for (int64_t i = 0; i < h->n; i++) h->diag[i] = h->h[i * h->n + i];
    return 0;
}

void calib_gptq_set_progress(calib_gptq *g, calib_progress_fn fn, void *user)
{
    if (!g) return;
    g->progress = fn;
    g->progress_user = user;
    g->passed = 0;
    g->progress_t0 = now_s();
}

/* One more chunk through a block, to the progress function; LPK_EINTR when it
 * asks to stop. */
static int passed_chunk(calib_gptq *g, lpk_error *err)
{
    if (!g->progress) return LPK_OK;
    int64_t total = (int64_t)g->n_layers * g->chunks * (g->o.sequential ? 2 : 1);
    if (g->passed < total) g->passed++;
    if (g->progress(g->progress_user, (int)g->passed, (int)total,
                    (uint64_t)g->passed * (uint64_t)g->o.ctx, now_s() - g->progress_t0))
        return lpk_err(err, LPK_EINTR, "gptq: cancelled");
    return LPK_OK;
}

/* The hidden states back to the embeddings of the chunks' tokens. */
static int restart(calib_gptq *g, lpk_error *err)
{
    int ctx = g->o.ctx, dim = vf_model_config(g->m)->dim;
    free_qw(g);
    g->cur = -1;
    g->hs_layer = 0;
    for (int k = 0; k < g->chunks; k++) {
        int st = vf_embed(g->m, g->ids + (size_t)k * (size_t)ctx, ctx,
                          g->hs + (size_t)k * (size_t)ctx * (size_t)dim, err);
        if (st) return st;
    }
    return LPK_OK;
}

/* Makes the Hessians of block l (l == n_layers: the output matrix's) the ones
 * held. In order (l after cur) the hidden states go on from where they are;
 * before cur, they start again from the embeddings. Chunk after chunk, each
 * Hessian entry sums its tokens in the order of the full forward pass: the
 * same values as one vf_forward per chunk with the hook. */
static int move_to(calib_gptq *g, int l, lpk_error *err)
{
    if (l == g->cur) return LPK_OK;
    const vf_config *c = vf_model_config(g->m);
    int ctx = g->o.ctx, st = LPK_OK;
    size_t chunk_floats = (size_t)ctx * (size_t)c->dim;
    if (g->hs_layer > l && (st = restart(g, err))) return st;
    /* the blocks in between: hidden states only (sequential: through the
     * quantized matrices of block cur) */
    vf_model_set_act_hook(g->m, NULL, NULL);
    while (g->hs_layer < l) {
        int seq = g->o.sequential && g->hs_layer == g->cur;
        for (int k = 0; k < g->chunks && !st; k++) {
            st = vf_layer_forward(g->m, g->hs_layer, g->hs + (size_t)k * chunk_floats, ctx,
                                  seq ? (const float *const *)g->qw : NULL, err);
            if (!st) st = passed_chunk(g, err);
        }
        if (st) {
            g->cur = -1; /* the hidden states are half moved: start again next time */
            g->hs_layer = c->n_layers + 1;
            return st;
        }
        g->hs_layer++;
    }
    free_qw(g);
    g->cur = -1;
    if (l == c->n_layers) {
        for (int i = 0; i < H_PER_LAYER; i++) hess_reset(&g->L[i], 0);
        if (hess_reset(&g->output, c->dim))
            return lpk_err(err, LPK_ENOMEM, "gptq: no memory for the output's Hessian");
        for (int k = 0; k < g->chunks; k++) {
            vf_output_norm(g->m, g->hs + (size_t)k * chunk_floats, ctx, g->scratch);
            hess_add(&g->output, g->scratch, ctx, g->xd);
        }
        if (hess_finish(&g->output))
            return lpk_err(err, LPK_ENOMEM, "gptq: no memory for the output's Hessian");
        g->cur = l;
        return LPK_OK;
    }
    int qd = c->n_heads * c->head_dim;
    hess_reset(&g->output, 0);
    if (hess_reset(&g->L[H_ATTN_IN], c->dim) || hess_reset(&g->L[H_ATTN_OUT], qd) ||
        hess_reset(&g->L[H_FFN_IN], c->dim) || hess_reset(&g->L[H_FFN_OUT], c->hidden_dim))
        return lpk_err(err, LPK_ENOMEM, "gptq: no memory for the Hessians of block %d", l);
    g->cur = l;
    g->bad = 0;
    /* non-sequential: the same pass moves the hidden states on through the
     * original block; sequential: they wait for the quantized one */
    vf_model_set_act_hook(g->m, on_act, g);
    for (int k = 0; k < g->chunks && !st; k++) {
        float *x = g->hs + (size_t)k * chunk_floats;
        if (g->o.sequential) {
            memcpy(g->scratch, x, chunk_floats * sizeof *x);
            x = g->scratch;
        }
        st = vf_layer_forward(g->m, l, x, ctx, NULL, err);
        if (!st && g->bad)
            st = lpk_err(err, LPK_ECORRUPT,
                         "gptq: a layer input does not match its weight's width");
        if (!st) st = passed_chunk(g, err);
    }
    vf_model_set_act_hook(g->m, NULL, NULL);
    if (st) {
        g->cur = -1; /* the hidden states are half moved: start again next time */
        g->hs_layer = c->n_layers + 1;
        return st;
    }
    if (!g->o.sequential) g->hs_layer = l + 1;
    for (int i = 0; i < H_PER_LAYER; i++)
        if (hess_finish(&g->L[i])) {
            g->cur = -1;
            return lpk_err(err, LPK_ENOMEM, "gptq: no memory for the Hessians of block %d", l);
        }
    return LPK_OK;
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
    tok_tokenizer *tok = NULL;
    calib_text *txt = NULL;
    size_t n_ids = 0;
    calib_gptq *g = calloc(1, sizeof *g);
    if (!g) return lpk_err(err, LPK_ENOMEM, "gptq: out of memory");
    g->o = *o;
    g->cur = -1;
    double t0 = now_s();
    int st = vf_model_open(r, &g->m, err);
    if (!st) st = tok_tokenizer_new(lpk_reader_meta(r), &tok, err);
    if (!st) st = calib_text_open(calib_path, tok, o->text_block, &txt, err);
    /* counting stops at the chunks asked for; a text shorter than one chunk
     * is counted whole for the message */
    size_t max = o->chunks > 0 ? (size_t)o->chunks * (size_t)o->ctx : SIZE_MAX;
    if (!st) st = calib_text_count(txt, max, &n_ids, err);
    if (st) goto fail;
    const vf_config *c = vf_model_config(g->m);
    size_t whole_chunks = n_ids / (size_t)o->ctx;
    int n_chunks = whole_chunks > INT32_MAX ? INT32_MAX : (int)whole_chunks;
    if (o->chunks > 0 && o->chunks < n_chunks) n_chunks = o->chunks;
    if (n_chunks < 1) {
        st = lpk_err(err, LPK_EINVAL, "%s: %zu tokens, fewer than one chunk of %d", calib_path,
                     n_ids, o->ctx);
        goto fail;
    }
    g->n_layers = c->n_layers;
    g->chunks = n_chunks;
    g->tokens = (uint64_t)n_chunks * (uint64_t)o->ctx;
    int qd = c->n_heads * c->head_dim;
    int64_t widest = c->dim > qd ? c->dim : qd;
    if (c->hidden_dim > widest) widest = c->hidden_dim;
    size_t n_tok = (size_t)n_chunks * (size_t)o->ctx;
    if (n_tok > SIZE_MAX / sizeof(float) / (size_t)c->dim) goto nomem;
    g->hs = malloc(n_tok * (size_t)c->dim * sizeof *g->hs);
    g->scratch = malloc((size_t)o->ctx * (size_t)c->dim * sizeof *g->scratch);
    g->xd = malloc((size_t)o->ctx * (size_t)widest * sizeof *g->xd);
    g->ids = malloc(n_tok * sizeof *g->ids);
    if (!g->hs || !g->scratch || !g->xd || !g->ids) goto nomem;
    int32_t bos = tok_tokenizer_bos(tok);
    for (int k = 0; k < n_chunks && !st; k++) {
        int32_t *chunk = g->ids + (size_t)k * (size_t)o->ctx;
        size_t got;
        if ((st = calib_text_read(txt, chunk, (size_t)o->ctx, &got, err))) break;
        if (got < (size_t)o->ctx)
            st = lpk_err(err, LPK_ECORRUPT, "%s: the text changed while it was read", calib_path);
        else if (bos >= 0)
            chunk[0] = bos;
    }
    if (!st) st = calib_text_hash(txt, &g->text_hash, err);
    if (st) goto fail;
    vf_model_set_kv_f16(g->m, 1);
    if ((st = restart(g, err))) goto fail;
    if (progress && progress(user, n_chunks, n_chunks, g->tokens, now_s() - t0)) {
        st = lpk_err(err, LPK_EINTR, "%s: cancelled", calib_path);
        goto fail;
    }
    calib_text_close(txt);
    tok_tokenizer_free(tok);
    *out = g;
    return LPK_OK;
nomem:
    st = lpk_err(err, LPK_ENOMEM, "gptq: no memory for the hidden states of %d chunks",
                 g->chunks);
fail:
    calib_text_close(txt);
    tok_tokenizer_free(tok);
    calib_gptq_free(g);
    return st;
}

/* blk.N.KIND.weight or output.weight -> its block (n_layers for the output)
 * and H_* index (-1 for the output); 0 when it has no Hessian. */
static int parse_name(const calib_gptq *g, const char *name, int *layer, int *kind)
{
    if (!g) return 0;
    if (!strcmp(name, "output.weight")) {
        *layer = g->n_layers;
        *kind = -1;
        return !vf_model_config(g->m)->tied;
    }
    int k = 0;
    char buf[64];
    if (sscanf(name, "blk.%d.%63[a-z_].weight%n", layer, buf, &k) != 2 || name[k] != '\0' ||
        *layer < 0 || *layer >= g->n_layers)
        return 0;
    *kind = hess_kind(buf);
    return *kind >= 0;
}

/* The Hessian of tensor name into *out, its block made current. LPK_EINVAL
 * when it has none; move_to's errors. */
static int hess_of_name(calib_gptq *g, const char *name, hess **out, lpk_error *err)
{
    int layer, kind;
    *out = NULL;
    if (!parse_name(g, name, &layer, &kind))
        return lpk_err(err, LPK_EINVAL, "gptq: no Hessian for %s", name);
    int st = move_to(g, layer, err);
    if (!st) *out = kind < 0 ? &g->output : &g->L[kind];
    return st;
}

int calib_gptq_applies(const calib_gptq *g, const char *name, int type)
{
    int layer, kind;
    return quant_gptq_supports(type) && parse_name(g, name, &layer, &kind);
}

/* Which of vf_layer_forward's matrices a weight kind is (-1: none). */
static int matrix_index(const char *name)
{
    static const char *const kinds[VF_LAYER_MATRICES] = {
        "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    int layer, k = 0;
    char buf[64];
    if (sscanf(name, "blk.%d.%63[a-z_].weight%n", &layer, buf, &k) != 2 || name[k] != '\0')
        return -1;
    for (int i = 0; i < VF_LAYER_MATRICES; i++)
        if (!strcmp(buf, kinds[i])) return i;
    return -1;
}

int calib_gptq_quantize(calib_gptq *g, const char *name, int type, const float *x,
                        int64_t nrows, int64_t ncols, void *dst, lpk_error *err)
{
    if (!quant_gptq_supports(type))
        return lpk_err(err, LPK_EINVAL, "gptq: type %s not supported", lpk_type_get(type)->name);
    hess *h;
    int st = hess_of_name(g, name, &h, err);
    if (st) return st;
    if (h->n != ncols)
        return lpk_err(err, LPK_EINVAL, "gptq: %s has %lld columns, its input %lld", name,
                       (long long)ncols, (long long)h->n);
    /* only block-act-order's factor depends on the group: the others build
     * one factor in the Hessian's own memory (no copy; the Hessian is gone) */
    int group = lpk_type_get(type)->block_size;
    int slot = g->o.order == QUANT_GPTQ_ORDER_BLOCK && group >= 256;
    if (!h->f[slot]) {
        if (g->o.order != QUANT_GPTQ_ORDER_BLOCK) {
            st = quant_gptq_factor_take(h->h, h->n, g->o.damp, g->o.order, group, &h->f[slot],
                                        err);
            h->h = NULL;
        } else {
            st = quant_gptq_factor_new(h->h, h->n, g->o.damp, g->o.order, group, &h->f[slot],
                                       err);
        }
        if (st) return st;
    }
    st = quant_gptq_rows(type, x, nrows, ncols, h->f[slot], dst, err);
    int k = matrix_index(name);
    if (st || !g->o.sequential || k < 0) return st;
    /* the block's output for the next one is made with what was just written */
    size_t n = (size_t)nrows * (size_t)ncols;
    if (!g->qw[k] && !(g->qw[k] = malloc(n * sizeof(float))))
        return lpk_err(err, LPK_ENOMEM, "gptq: no memory for %s's quantized copy", name);
    if (quant_dequantize_rows(type, dst, nrows, ncols, g->qw[k]) != LPK_OK)
        return lpk_err(err, LPK_EUNSUPPORTED, "gptq: cannot dequantize %s", name);
    return LPK_OK;
}

const float *calib_gptq_imatrix(calib_gptq *g, const char *name, int64_t ncols)
{
    lpk_error e = {0};
    hess *h;
    if (hess_of_name(g, name, &h, &e) || h->n != ncols || h->tokens == 0) return NULL;
    if (!h->imatrix) {
        h->imatrix = malloc((size_t)h->n * sizeof *h->imatrix);
        if (!h->imatrix) return NULL;
        for (int64_t i = 0; i < h->n; i++)
            h->imatrix[i] = (float)(h->diag[i] / (double)h->tokens);
    }
    return h->imatrix;
}

const double *calib_gptq_hessian(calib_gptq *g, const char *name, int64_t ncols,
                                 uint64_t *tokens)
{
    lpk_error e = {0};
    hess *h;
    if (hess_of_name(g, name, &h, &e) || h->n != ncols || !h->h) return NULL;
    if (tokens) *tokens = h->tokens;
    return h->h;
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
    if (!st)
        st = lpk_meta_set_str(meta, "quant.gptq.inputs",
                              g->o.sequential ? "quantized" : "original");
    return st;
}
