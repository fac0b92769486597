/* verify/: perplexity, KL divergence and top-1 agreement (llama.cpp's protocol
 * and statistics), and per-tensor errors against a reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../quant/quant.h"
#include "vf_math.h"
#include "vf_model.h"

#ifdef _OPENMP
#include <omp.h>
#endif

double vf_logsumexp(const float *logits, int n, int *argmax)
{
    int im;
    float mx = vf_max_index(logits, n, &im);
    double sum = vf_sum_exp(logits, n, mx);
    if (argmax) *argmax = im;
    return mx + log(sum);
}

double vf_kld(const float *p_logits, double p_lse, const float *q_logits, double q_lse, int n)
{
    return vf_kld_sum(p_logits, p_lse, q_logits, q_lse, n);
}

double vf_percentile(const float *sorted, size_t n, double f)
{
    if (n == 0) return 0;
    if (f <= 0) return sorted[0];
    if (f >= 1) return sorted[n - 1];
    double p = f * (double)(n - 1);
    size_t ip = (size_t)p;
    p -= (double)ip;
    size_t next = ip + 1 < n ? ip + 1 : n - 1;
    return (1 - p) * sorted[ip] + p * sorted[next];
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Running sums of one model (llama.cpp's kl_divergence_result). */
typedef struct vf_acc {
    double sum_nll, sum_nll2;
    double sum_nll_ref, sum_nll_ref2, sum_nll_nll_ref;
    double sum_kld, sum_kld2;
    uint64_t n_same_top, count;
    /* paired against models[0] (models after the first, with a reference) */
    double sum_dkld, sum_dkld2;      /* of KLD - KLD(models[0]) */
    uint64_t n_top_gained, n_top_lost;   /* top-1 agrees here and not in models[0], and back */
    float *kld;          /* (n_chunks * n_scored) KLD of every scored position */
    /* per chunk (n_chunks): sums over its scored positions */
    double *chunk_nll, *chunk_nll_ref, *chunk_kld;
    uint32_t *chunk_same;
    double seconds;
    uint64_t tokens_run;
} vf_acc;

struct vf_eval {
    vf_model *ref;
    vf_model *const *models;
    int n_models;
    const int32_t *tokens;
    int32_t bos;
    int ctx, n_scored, n_vocab, n_chunks, next;
    int batch;            /* chunks per forward pass (vf_eval_set_batch), >= 1 */
    int cur;              /* chunks in the step running: 1 .. batch */
    /* below, B = batch: the current step's chunks one after another */
    int32_t *chunk;       /* (B, ctx) tokens of the current chunks, each's first set to BOS */
    int32_t *in;          /* (B, ctx - 1) the forward pass's input: each chunk minus its last */
    float *ref_logits;    /* (B * n_scored, n_vocab) */
    float *logits;        /* (B * n_scored, n_vocab) */
    double *ref_lse;      /* (B * n_scored) */
    int *ref_top;         /* (B * n_scored) argmax of the reference */
    double *nll, *kld;    /* (B * n_scored) per-position results of the model being scored */
    int *top;             /* (B * n_scored) */
    double *kld0;         /* (B * n_scored) models[0]'s KLD and same top-1 in the current */
    unsigned char *same0; /* chunks, to pair the others' with (several models, a reference) */
    vf_acc *acc;          /* (n_models) */
    vf_progress_fn progress;   /* vf_eval_set_progress, or NULL */
    void *progress_user;
    int pass;             /* the forward pass running in the current chunk: 0 .. n_pass - 1 */
};

void vf_eval_free(vf_eval *e)
{
    if (!e) return;
    for (int i = 0; e->acc && i < e->n_models; i++) {
        vf_acc *a = &e->acc[i];
        free(a->kld); free(a->chunk_nll); free(a->chunk_nll_ref); free(a->chunk_kld);
        free(a->chunk_same);
    }
    free(e->acc);
    free(e->chunk); free(e->in); free(e->ref_logits); free(e->logits); free(e->ref_lse);
    free(e->ref_top); free(e->nll); free(e->kld); free(e->top); free(e->kld0); free(e->same0);
    free(e);
}

/* The per-step buffers for batches of nb chunks (the old ones freed). */
static int eval_alloc_batch(vf_eval *e, int nb)
{
    size_t ns = (size_t)nb * (size_t)e->n_scored, nv = (size_t)e->n_vocab;
    if (ns > SIZE_MAX / sizeof(float) / nv) return LPK_ENOMEM;
    size_t nl = ns * nv;
    free(e->chunk); free(e->in); free(e->ref_logits); free(e->logits); free(e->ref_lse);
    free(e->ref_top); free(e->nll); free(e->kld); free(e->top); free(e->kld0); free(e->same0);
    e->ref_logits = NULL; e->ref_lse = NULL; e->ref_top = NULL; e->kld0 = NULL; e->same0 = NULL;
    e->chunk = malloc((size_t)nb * (size_t)e->ctx * sizeof *e->chunk);
    e->in = malloc((size_t)nb * (size_t)(e->ctx - 1) * sizeof *e->in);
    e->logits = lpk_alloc_big(nl * sizeof(float));
    e->nll = malloc(ns * sizeof(double));
    e->kld = malloc(ns * sizeof(double));
    e->top = malloc(ns * sizeof(int));
    int ok = e->chunk && e->in && e->logits && e->nll && e->kld && e->top;
    if (ok && e->ref) {
        e->ref_logits = lpk_alloc_big(nl * sizeof(float));
        e->ref_lse = malloc(ns * sizeof(double));
        e->ref_top = malloc(ns * sizeof(int));
        ok = e->ref_logits && e->ref_lse && e->ref_top;
        if (ok && e->n_models > 1) {
            e->kld0 = malloc(ns * sizeof(double));
            e->same0 = malloc(ns);
            ok = e->kld0 && e->same0;
        }
    }
    e->batch = nb;
    return ok ? LPK_OK : LPK_ENOMEM;
}

int vf_eval_new(vf_model *ref, vf_model *const *models, int n_models, const int32_t *tokens,
                size_t n_tokens, int32_t bos, int ctx, int max_chunks, vf_eval **out,
                lpk_error *err)
{
    *out = NULL;
    if (n_models < 1 || !models) return lpk_err(err, LPK_EINVAL, "no model to evaluate");
    if (ctx < 4) return lpk_err(err, LPK_EINVAL, "context %d is too small (at least 4)", ctx);
    if (n_tokens < (size_t)ctx)
        return lpk_err(err, LPK_EINVAL, "the text has %zu tokens, fewer than one chunk of %d",
                       n_tokens, ctx);
    int n_vocab = vf_model_config(models[0])->vocab_size;
    for (int i = 0; i <= n_models; i++) {
        const vf_model *m = i < n_models ? models[i] : ref;
        if (m && vf_model_config(m)->vocab_size != n_vocab)
            return lpk_err(err, LPK_EINVAL, "%s has a vocabulary of %d tokens, %s of %d",
                           lpk_reader_path(vf_model_reader(m)), vf_model_config(m)->vocab_size,
                           lpk_reader_path(vf_model_reader(models[0])), n_vocab);
    }
    if (bos >= n_vocab) return lpk_err(err, LPK_EINVAL, "BOS id %d is out of range", bos);
    size_t n_chunks = n_tokens / (size_t)ctx;
    if (max_chunks > 0 && (size_t)max_chunks < n_chunks) n_chunks = (size_t)max_chunks;
    if (n_chunks > INT32_MAX / (size_t)ctx)
        return lpk_err(err, LPK_EINVAL, "too many chunks (%zu)", n_chunks);
    for (size_t i = 0; i < n_chunks * (size_t)ctx; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return lpk_err(err, LPK_EINVAL, "token %zu has id %d, out of the vocabulary (%d)", i,
                           tokens[i], n_vocab);

    vf_eval *e = calloc(1, sizeof *e);
    if (!e) return lpk_err(err, LPK_ENOMEM, "out of memory");
    e->ref = ref;
    e->models = models;
    e->n_models = n_models;
    e->tokens = tokens;
    e->bos = bos;
    e->ctx = ctx;
    e->n_scored = vf_chunk_scored(ctx);
    e->n_vocab = n_vocab;
    e->n_chunks = (int)n_chunks;
    size_t ns = (size_t)e->n_scored;
    int ok = eval_alloc_batch(e, 1) == LPK_OK;
    if (ok) {
        e->acc = calloc((size_t)n_models, sizeof *e->acc);
        ok = e->acc != NULL;
        for (int i = 0; ok && i < n_models; i++)
            ok = (e->acc[i].chunk_nll = calloc(n_chunks, sizeof(double))) != NULL;
    }
    if (ok && ref) {
        for (int i = 0; ok && i < n_models; i++) {
            vf_acc *a = &e->acc[i];
            a->kld = malloc(n_chunks * ns * sizeof(float));
            a->chunk_nll_ref = calloc(n_chunks, sizeof(double));
            a->chunk_kld = calloc(n_chunks, sizeof(double));
            a->chunk_same = calloc(n_chunks, sizeof(uint32_t));
            ok = a->kld && a->chunk_nll_ref && a->chunk_kld && a->chunk_same;
        }
    }
    if (!ok) {
        vf_eval_free(e);
        return lpk_err(err, LPK_ENOMEM, "out of memory for the logits of %d positions x %d",
                       vf_chunk_scored(ctx), n_vocab);
    }
    *out = e;
    return LPK_OK;
}

int vf_eval_n_chunks(const vf_eval *e) { return e->n_chunks; }

int vf_eval_set_batch(vf_eval *e, int n, lpk_error *err)
{
    if (n < 1) n = 1;
    if (n > e->n_chunks) n = e->n_chunks;
    if (n == e->batch) return LPK_OK;
    if (eval_alloc_batch(e, n) == LPK_OK) return LPK_OK;
    /* back to one chunk a pass, so that the evaluation stays usable */
    int st = eval_alloc_batch(e, 1);
    return lpk_err(err, LPK_ENOMEM, "out of memory for the logits of %d chunks%s", n,
                   st ? " (nor of one: the evaluation cannot go on)" : "");
}

void vf_eval_set_progress(vf_eval *e, vf_progress_fn fn, void *user)
{
    e->progress = fn;
    e->progress_user = user;
}

/* A block of the current pass is done: the text tokens that stands for. */
static int eval_step_done(void *user, int done, int total)
{
    const vf_eval *e = user;
    int n_pass = e->n_models + (e->ref != NULL);
    double f = (e->pass + (double)done / total) / n_pass;
    uint64_t ctx = (uint64_t)e->ctx;
    return e->progress(e->progress_user,
                       (uint64_t)e->next * ctx + (uint64_t)(f * (double)(e->cur * ctx) + 0.5),
                       (uint64_t)e->n_chunks * ctx);
}

/* The current chunks, each minus its last token (the last token is never an
 * input whose logits are scored, and causality makes the other logits
 * independent of it), in one forward pass. */
static int run_chunk(vf_eval *e, vf_model *m, float *logits, lpk_error *err)
{
    if (e->progress) {
        m->step_hook = eval_step_done;
        m->step_user = e;
    }
    int st = vf_forward_seqs(m, e->in, e->cur, e->ctx - 1, e->n_scored, logits, err);
    m->step_hook = NULL;
    m->step_user = NULL;
    const lpk_reader *r = vf_model_reader(m);
    /* weights read as zeros after the file shrank, or logits that overflowed:
     * no statistic is computed from them (a gate must not pass unmeasured) */
    if (!st) st = lpk_reader_check_io(r, err);
    uint64_t bad;
    uint64_t ns = (uint64_t)e->n_scored;
    if (!st && lpk_check_finite(LPK_TYPE_F32, logits,
                                (uint64_t)e->cur * ns * (uint64_t)e->n_vocab * sizeof(float), &bad)) {
        uint64_t pos = bad / (uint64_t)e->n_vocab;
        st = lpk_err(err, LPK_EBADVALUE, "%s: chunk %d, scored position %llu: a logit is NaN or "
                     "infinite (the model's numbers overflow)", lpk_reader_path(r),
                     e->next + (int)(pos / ns), (unsigned long long)(pos % ns));
    }
    return st;
}

int vf_eval_step(vf_eval *e, lpk_error *err)
{
    if (e->next >= e->n_chunks) return 0;
    int ctx = e->ctx, ns1 = e->n_scored, nv = e->n_vocab, first = vf_chunk_first(ctx);
    int nb = e->n_chunks - e->next < e->batch ? e->n_chunks - e->next : e->batch;
    int ns = nb * ns1;   /* the scored positions of the step's chunks, chunk after chunk */
    memcpy(e->chunk, e->tokens + (size_t)e->next * ctx, (size_t)nb * ctx * sizeof *e->chunk);
    for (int b = 0; b < nb; b++) {
        int32_t *ch = e->chunk + (size_t)b * ctx;
        if (e->bos >= 0) ch[0] = e->bos;
        memcpy(e->in + (size_t)b * (ctx - 1), ch, (size_t)(ctx - 1) * sizeof *ch);
    }
    e->cur = nb;
    /* position first + j of chunk b predicts its token first + j + 1 */
#define TARGET(j) (e->chunk[(size_t)((j) / ns1) * ctx + first + 1 + (j) % ns1])
    int st;
    e->pass = 0;
    if (e->ref) {
        if ((st = run_chunk(e, e->ref, e->ref_logits, err))) return st;
        e->pass++;
#pragma omp parallel for schedule(static) if ((int64_t)ns * nv > (1 << 16))
        for (int j = 0; j < ns; j++)
            e->ref_lse[j] = vf_logsumexp(e->ref_logits + (size_t)j * nv, nv, &e->ref_top[j]);
    }
    for (int i = 0; i < e->n_models; i++) {
        vf_acc *a = &e->acc[i];
        double t0 = now_seconds();
        if ((st = run_chunk(e, e->models[i], e->logits, err))) return st;
        e->pass++;
#pragma omp parallel for schedule(static) if ((int64_t)ns * nv > (1 << 16))
        for (int j = 0; j < ns; j++) {
            const float *lg = e->logits + (size_t)j * nv;
            double lse = vf_logsumexp(lg, nv, &e->top[j]);
            e->nll[j] = lse - lg[TARGET(j)];
            if (e->ref)
                e->kld[j] = vf_kld(e->ref_logits + (size_t)j * nv, e->ref_lse[j], lg, lse, nv);
        }
        /* accumulate in position order: the sums do not depend on the threads */
        for (int j = 0; j < ns; j++) {
            double v = e->nll[j];
            a->sum_nll += v;
            a->sum_nll2 += v * v;
            int c = e->next + j / ns1;
            a->chunk_nll[c] += v;
            if (e->ref) {
                const float *rl = e->ref_logits + (size_t)j * nv;
                double vr = e->ref_lse[j] - rl[TARGET(j)];
                a->sum_nll_ref += vr;
                a->sum_nll_ref2 += vr * vr;
                a->sum_nll_nll_ref += v * vr;
                int same = e->top[j] == e->ref_top[j];
                a->sum_kld += e->kld[j];
                a->sum_kld2 += e->kld[j] * e->kld[j];
                a->n_same_top += same;
                if (i == 0 && e->kld0) {
                    e->kld0[j] = e->kld[j];
                    e->same0[j] = (unsigned char)same;
                } else if (i > 0) {
                    double d = e->kld[j] - e->kld0[j];
                    a->sum_dkld += d;
                    a->sum_dkld2 += d * d;
                    a->n_top_gained += same && !e->same0[j];
                    a->n_top_lost += !same && e->same0[j];
                }
                a->kld[a->count] = (float)e->kld[j];
                a->chunk_nll_ref[c] += vr;
                a->chunk_kld[c] += e->kld[j];
                a->chunk_same[c] += same;
            }
            a->count++;
        }
        a->tokens_run += (uint64_t)nb * ((uint64_t)ctx - 1);
        a->seconds += now_seconds() - t0;
    }
#undef TARGET
    e->next += nb;
    return nb;
}

/* llama.cpp's mean_and_uncertainty: mean and standard error of the mean. */
static void mean_unc(double sum, double sum2, uint64_t n, double *mean, double *unc)
{
    *mean = n ? sum / (double)n : 0;
    double var = n ? sum2 / (double)n - *mean * *mean : 0;
    *unc = var > 0 && n > 1 ? sqrt(var / (double)(n - 1)) : 0;
}

static double covariance(double sa, double sb, double sab, uint64_t n)
{
    if (n < 2) return 0;
    double dn = (double)n;
    return (sab / dn - (sa / dn) * (sb / dn)) / (dn - 1);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void vf_eval_result(const vf_eval *e, int i, vf_ppl_result *r)
{
    const vf_acc *a = &e->acc[i];
    memset(r, 0, sizeof *r);
    r->ctx = e->ctx;
    r->chunks = e->next;
    r->tokens_scored = a->count;
    r->seconds = a->seconds;
    r->tokens_per_second = a->seconds > 0 ? (double)a->tokens_run / a->seconds : 0;
    if (!a->count) return;
    double lp, lp_unc;
    mean_unc(a->sum_nll, a->sum_nll2, a->count, &lp, &lp_unc);
    r->ppl = exp(lp);
    r->ppl_stderr = r->ppl * lp_unc;
    if (!e->ref) return;
    r->has_ref = 1;
    double lb, lb_unc;
    mean_unc(a->sum_nll_ref, a->sum_nll_ref2, a->count, &lb, &lb_unc);
    r->ref_ppl = exp(lb);
    r->ref_ppl_stderr = r->ref_ppl * lb_unc;
    double cov = covariance(a->sum_nll, a->sum_nll_ref, a->sum_nll_nll_ref, a->count);
    double lr = lp - lb, v = lp_unc * lp_unc + lb_unc * lb_unc - 2 * cov;
    double lr_unc = v > 0 ? sqrt(v) : 0;
    r->ppl_ratio = exp(lr);
    r->ppl_ratio_stderr = r->ppl_ratio * lr_unc;
    r->ppl_delta = r->ppl - r->ref_ppl;
    double dv = r->ppl_stderr * r->ppl_stderr + r->ref_ppl_stderr * r->ref_ppl_stderr -
                2 * r->ppl * r->ref_ppl * cov;
    r->ppl_delta_stderr = dv > 0 ? sqrt(dv) : 0;
    mean_unc(a->sum_kld, a->sum_kld2, a->count, &r->kld_mean, &r->kld_stderr);
    double p = (double)a->n_same_top / (double)a->count;
    r->top1_agreement = p;
    r->top1_stderr = a->count > 1 ? sqrt(p * (1 - p) / (double)(a->count - 1)) : 0;
    if (i > 0) {
        /* the per-position differences: d in {-1, 0, 1} for top-1, so their sum
         * is gained - lost and their sum of squares gained + lost */
        r->has_paired = 1;
        mean_unc(a->sum_dkld, a->sum_dkld2, a->count, &r->kld_diff, &r->kld_diff_stderr);
        double g = (double)a->n_top_gained, l = (double)a->n_top_lost;
        mean_unc(g - l, g + l, a->count, &r->top1_diff, &r->top1_diff_stderr);
    }
    float *s = malloc(a->count * sizeof(float));
    if (!s) return;   /* the order statistics stay 0 when memory is short */
    memcpy(s, a->kld, a->count * sizeof(float));
    qsort(s, a->count, sizeof(float), cmp_float);
    size_t n = a->count;
    r->kld_median = n % 2 ? s[n / 2] : 0.5 * ((double)s[n / 2] + s[n / 2 - 1]);
    r->kld_p99 = vf_percentile(s, n, 0.99);
    r->kld_max = s[n - 1];
    free(s);
}

void vf_eval_chunk_result(const vf_eval *e, int i, int c, vf_chunk_result *out)
{
    const vf_acc *a = &e->acc[i];
    double ns = e->n_scored;
    out->ppl = exp(a->chunk_nll[c] / ns);
    out->ref_ppl = e->ref ? exp(a->chunk_nll_ref[c] / ns) : NAN;
    out->kld_mean = e->ref ? a->chunk_kld[c] / ns : NAN;
    out->top1_agreement = e->ref ? a->chunk_same[c] / ns : NAN;
}

const float *vf_eval_klds(const vf_eval *e, int i, size_t *n)
{
    *n = e->ref ? (size_t)e->acc[i].count : 0;
    return e->ref ? e->acc[i].kld : NULL;
}

/* ---------------------------------------------------------------- tensor errors */

static int row_to_f32(const lpk_tensor *t, int64_t row, int64_t ncols, float *dst,
                      lpk_error *err)
{
    uint64_t rb;
    lpk_type_nbytes(t->type, (uint64_t)ncols, &rb);
    const uint8_t *src = (const uint8_t *)t->data + (uint64_t)row * rb;
    if (lpk_to_f32_row(t->type, src, dst, (size_t)ncols) == LPK_OK) return LPK_OK;
    if (quant_dequantize_rows(t->type, src, 1, ncols, dst) != LPK_OK)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: cannot dequantize type %s", t->name,
                       lpk_type_get(t->type) ? lpk_type_get(t->type)->name : "?");
    return LPK_OK;
}

static int cmp_terr(const void *a, const void *b)
{
    const vf_tensor_error *x = a, *y = b;
    if (x->rel_rmse != y->rel_rmse) return x->rel_rmse < y->rel_rmse ? 1 : -1;
    return strcmp(x->name, y->name);
}

int vf_tensor_errors(const lpk_reader *model, const lpk_reader *ref, vf_tensor_error **out,
                     size_t *n_out, lpk_error *err)
{
    *out = NULL;
    *n_out = 0;
    size_t nt = lpk_reader_n_tensors(model), n = 0;
    vf_tensor_error *res = calloc(nt ? nt : 1, sizeof *res);
    if (!res) return lpk_err(err, LPK_ENOMEM, "out of memory");
    int st = LPK_OK;
    for (size_t i = 0; i < nt && !st; i++) {
        const lpk_tensor *t = lpk_reader_tensor(model, i);
        if (t->n_dims != 2) continue;
        const lpk_tensor *u = lpk_reader_find(ref, t->name);
        if (!u) {
            st = lpk_err(err, LPK_ENOTFOUND, "%s: tensor %s is missing (present in %s)",
                         lpk_reader_path(ref), t->name, lpk_reader_path(model));
            break;
        }
        if (u->n_dims != 2 || u->dims[0] != t->dims[0] || u->dims[1] != t->dims[1]) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: tensor %s has a different shape in %s",
                         lpk_reader_path(model), t->name, lpk_reader_path(ref));
            break;
        }
        if (t->type == u->type) continue;
        int64_t rows = t->dims[0], cols = t->dims[1];
        double *se = calloc((size_t)rows, sizeof(double)), *sr = calloc((size_t)rows, sizeof(double));
        float *buf = NULL;
        int nthr = 1;
#ifdef _OPENMP
        nthr = omp_get_max_threads();
#endif
        if (se && sr) buf = malloc((size_t)nthr * 2 * (size_t)cols * sizeof(float));
        if (!buf) st = lpk_err(err, LPK_ENOMEM, "out of memory for tensor %s", t->name);
        int bad = LPK_OK;
        lpk_error terr = {0};
        if (!st) {
#pragma omp parallel for schedule(static) num_threads(nthr)
        for (int64_t rw = 0; rw < rows; rw++) {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            float *a = buf + (size_t)tid * 2 * (size_t)cols, *b = a + cols;
            lpk_error e1 = {0};
            if (row_to_f32(t, rw, cols, a, &e1) || row_to_f32(u, rw, cols, b, &e1)) {
#pragma omp critical
                if (!bad) bad = e1.status ? e1.status : LPK_EUNSUPPORTED, terr = e1;
                continue;
            }
            double s1 = 0, s2 = 0;
            for (int64_t k = 0; k < cols; k++) {
                double d = (double)a[k] - b[k];
                s1 += d * d;
                s2 += (double)b[k] * b[k];
            }
            se[rw] = s1;
            sr[rw] = s2;
        }
        }
        if (!st && bad)
            st = lpk_err(err, bad, "tensor %s: cannot dequantize: %s", t->name,
                         terr.msg[0] ? terr.msg : lpk_status_name(bad));
        if (!st) {
            double s1 = 0, s2 = 0;
            for (int64_t rw = 0; rw < rows; rw++) s1 += se[rw], s2 += sr[rw];
            vf_tensor_error *o = &res[n++];
            snprintf(o->name, sizeof o->name, "%s", t->name);
            o->type = t->type;
            o->ref_type = u->type;
            o->rel_rmse = s2 > 0 ? sqrt(s1 / s2) : sqrt(s1);
        }
        free(se); free(sr); free(buf);
    }
    if (st) {
        free(res);
        return st;
    }
    qsort(res, n, sizeof *res, cmp_terr);
    *out = res;
    *n_out = n;
    return LPK_OK;
}

/* The file as bytes; one trailing '\n' dropped (as llama.cpp's -f does). */
int vf_read_text(const char *path, char **out, size_t *n, lpk_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return lpk_err(err, LPK_EIO, "%s: cannot open", path);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int st = buf ? LPK_OK : LPK_ENOMEM;
    while (!st) {
        if (len == cap) {
            char *nb = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) { st = LPK_ENOMEM; break; }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) st = LPK_EIO;
            break;
        }
    }
    fclose(f);
    if (st) {
        free(buf);
        return lpk_err(err, st, "%s: %s", path, st == LPK_EIO ? "read error" : "out of memory");
    }
    if (len && buf[len - 1] == '\n') len--;
    *out = buf;
    *n = len;
    return LPK_OK;
}
