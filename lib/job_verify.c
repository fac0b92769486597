/* The verify job: perplexity of models on a text and their divergence from a
 * reference (vf_eval over the chunks), limits, per-tensor errors. The
 * measuring is verify/'s; this file opens the inputs, runs the chunks with
 * progress and cancellation, and gathers what a report needs. */
#include "job_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../tok/tok.h"

int llmpack_checksums_of(const lpk_reader *r)
{
    if (!lpk_reader_has_checksums(r)) return LLMPACK_SUMS_NONE;
    return lpk_reader_default_flags() & LPK_OPEN_NO_VERIFY ? LLMPACK_SUMS_SKIPPED
                                                           : LLMPACK_SUMS_VERIFIED;
}

/* What the job holds while it runs. */
typedef struct run {
    llmpack_job *j;
    const llmpack_verify_opts *o;
    llmpack_verify_result *res;
    lpk_reader *ref_r, **rs;   /* n_models readers */
    vf_model *ref_m, **ms;     /* n_models models */
    vf_eval *ev;
    char item[96];             /* the statistics as of the last chunk ("" before one) */
} run;

/* Opens one input as a model; m->opened once its reader is open. */
static int load(run *rn, llmpack_verify_model *m, lpk_reader **r, vf_model **vm)
{
    int st = job_open_model(rn->j, m->path, lpk_reader_default_flags(), r);
    if (st) return st;
    llmpack_model_describe(*r, &m->desc);
    m->checksums = llmpack_checksums_of(*r);
    m->opened = 1;
    st = vf_model_open(*r, vm, job_err(rn->j));
    if (!st) {
        m->loaded = 1;
        m->trained_ctx = vf_model_config(*vm)->seq_len;
    }
    return st;
}

/* The text's size and hash: of the file's bytes, with the trailing newline the
 * protocol drops (the file is then one byte longer than the text). */
static int hash_text(run *rn, const char *text, size_t n)
{
    llmpack_verify_result *res = rn->res;
    XXH3_state_t *hs = XXH3_createState();
    if (!hs) return lpk_err(job_err(rn->j), LPK_ENOMEM, "out of memory");
    XXH3_64bits_reset(hs);
    XXH3_64bits_update(hs, text, n);
    res->text_bytes = n;
    struct stat sb;
    if (!stat(rn->o->text, &sb) && (uint64_t)sb.st_size == (uint64_t)n + 1) {
        XXH3_64bits_update(hs, "\n", 1);
        res->text_bytes = n + 1;
    }
    res->text_xxh3 = XXH3_64bits_digest(hs);
    XXH3_freeState(hs);
    res->text_read = 1;
    return LPK_OK;
}

/* vf_eval's progress inside a chunk: an update (a chunk's end is the loop's,
 * with its statistics) and a cancellation point. */
static int on_block(void *user, uint64_t done, uint64_t total)
{
    run *rn = user;
    (void)total;
    if (done % (uint64_t)rn->res->ctx == 0) return job_check_cancel(rn->j, rn->o->text);
    return job_update(rn->j, done, rn->item[0] ? rn->item : NULL, rn->o->text);
}

/* The LLMPACK_MAX_* bits of the limits r exceeds. */
static unsigned exceeded(const llmpack_verify_opts *o, const vf_ppl_result *r)
{
    unsigned x = 0;
    if ((o->limits & LLMPACK_MAX_PPL_DELTA) && !(r->ppl_delta <= o->max_ppl_delta))
        x |= LLMPACK_MAX_PPL_DELTA;
    if ((o->limits & LLMPACK_MAX_PPL_RATIO) && !(r->ppl_ratio <= o->max_ppl_ratio))
        x |= LLMPACK_MAX_PPL_RATIO;
    if ((o->limits & LLMPACK_MAX_KLD) && !(r->kld_mean <= o->max_kld)) x |= LLMPACK_MAX_KLD;
    return x;
}

/* Runs every chunk: stage "evaluating". */
static int evaluate(run *rn)
{
    llmpack_verify_result *res = rn->res;
    const uint64_t ctx = (uint64_t)res->ctx;
    int st = job_begin(rn->j, "evaluating", "tokens", (uint64_t)res->n_chunks * ctx,
                       rn->o->text);
    vf_eval_set_progress(rn->ev, on_block, rn);
    while (!st && (st = vf_eval_step(rn->ev, job_err(rn->j))) > 0) {
        vf_ppl_result r;
        vf_eval_result(rn->ev, 0, &r);
        if (r.has_ref)
            snprintf(rn->item, sizeof rn->item, "ppl %.4f (ref %.4f), kld %.6f", r.ppl,
                     r.ref_ppl, r.kld_mean);
        else
            snprintf(rn->item, sizeof rn->item, "ppl %.4f", r.ppl);
        st = job_update(rn->j, (uint64_t)r.chunks * ctx, rn->item, rn->o->text);
    }
    job_end(rn->j);
    return st;
}

/* Every model's numbers, per-chunk values and KLDs out of the evaluation. */
static int gather(run *rn)
{
    llmpack_verify_result *res = rn->res;
    for (int i = 0; i < res->n_models; i++) {
        llmpack_verify_model *m = &res->models[i];
        vf_eval_result(rn->ev, i, &m->ppl);
        m->exceeded = m->ppl.has_ref ? exceeded(rn->o, &m->ppl) : 0;
        res->limit_exceeded |= m->exceeded != 0;
        int nc = m->ppl.chunks;
        m->chunks = calloc(nc ? (size_t)nc : 1, sizeof *m->chunks);
        if (!m->chunks) return lpk_err(job_err(rn->j), LPK_ENOMEM, "out of memory");
        for (int c = 0; c < nc; c++) vf_eval_chunk_result(rn->ev, i, c, &m->chunks[c]);
        size_t nk = 0;
        const float *k = vf_eval_klds(rn->ev, i, &nk);
        if (k && nk) {
            if (!(m->kld = malloc(nk * sizeof *m->kld)))
                return lpk_err(job_err(rn->j), LPK_ENOMEM, "out of memory");
            memcpy(m->kld, k, nk * sizeof *m->kld);
            m->n_kld = nk;
        }
    }
    res->chunks = res->models[0].ppl.chunks;
    res->tokens_scored = res->models[0].ppl.tokens_scored;
    res->measured = 1;
    return LPK_OK;
}

static int verify_run(run *rn)
{
    const llmpack_verify_opts *o = rn->o;
    llmpack_verify_result *res = rn->res;
    lpk_error *err = job_err(rn->j);
    int n = o->n_models;
    char *text = NULL;
    size_t n_text = 0, n_ids = 0;
    int32_t *ids = NULL;
    tok_tokenizer *tok = NULL;
    /* the text first: its hash is reported even when a model is bad */
    int st = vf_read_text(o->text, &text, &n_text, err);
    if (!st) st = hash_text(rn, text, n_text);
    if (!st && o->ref) st = load(rn, &res->ref, &rn->ref_r, &rn->ref_m);
    for (int i = 0; !st && i < n; i++) {
        st = load(rn, &res->models[i], &rn->rs[i], &rn->ms[i]);
        if (!st && o->kv_f16) vf_model_set_kv_f16(rn->ms[i], VF_KV_F16_ATTN);
    }
    if (!st) st = tok_tokenizer_new(lpk_reader_meta(o->ref ? rn->ref_r : rn->rs[0]), &tok, err);
    if (!st) st = tok_encode(tok, text, n_text, 1, 0, &ids, &n_ids, err);
    if (!st) {
        res->tokenized = 1;
        res->n_tokens = n_ids;
    }
    if (!st)
        st = vf_eval_new(rn->ref_m, rn->ms, n, ids, n_ids, tok_tokenizer_bos(tok), res->ctx,
                         o->max_chunks, &rn->ev, err);
    if (!st) st = vf_eval_set_batch(rn->ev, o->batch > 0 ? o->batch : 2, err);
    if (!st) {
        res->n_chunks = vf_eval_n_chunks(rn->ev);
        /* a context past what a model was trained on: measured, but say so */
        for (int i = -1; i < n; i++) {
            const llmpack_verify_model *m = i < 0 ? &res->ref : &res->models[i];
            if (m->path && m->trained_ctx > 0 && res->ctx > m->trained_ctx)
                job_notice(rn->j, "warning: --ctx %d is above the %d tokens %s was trained on",
                           res->ctx, m->trained_ctx, m->path);
        }
        st = evaluate(rn);
    }
    if (!st) st = gather(rn);
    for (int i = 0; !st && o->tensor_errors && i < n; i++) {
        llmpack_verify_model *m = &res->models[i];
        st = job_check_cancel(rn->j, m->path);
        if (!st) st = vf_tensor_errors(rn->rs[i], rn->ref_r, &m->te, &m->n_te, err);
    }
    free(ids);
    free(text);
    tok_tokenizer_free(tok);
    return st;
}

/* The options' mistakes, before any work. */
static int check_opts(llmpack_job *j, const llmpack_verify_opts *o)
{
    lpk_error *err = job_err(j);
    if (o->n_models < 1 || !o->models) return lpk_err(err, LPK_EINVAL, "verify: no model given");
    for (int i = 0; i < o->n_models; i++)
        if (!o->models[i]) return lpk_err(err, LPK_EINVAL, "verify: model %d has no path", i);
    if (!o->text) return lpk_err(err, LPK_EINVAL, "verify: no text given");
    if (o->ctx && o->ctx < 4)
        return lpk_err(err, LPK_EINVAL, "verify: context %d is too small (at least 4)", o->ctx);
    if (o->max_chunks < 0 || o->threads < 0 || o->batch < 0)
        return lpk_err(err, LPK_EINVAL, "verify: negative %s",
                       o->max_chunks < 0 ? "max_chunks" : o->threads < 0 ? "threads" : "batch");
    if (!o->ref && (o->limits || o->tensor_errors))
        return lpk_err(err, LPK_EINVAL, "verify: tensor errors and limits need a reference");
    return LPK_OK;
}

int llmpack_verify(llmpack_job *j, const llmpack_verify_opts *o, llmpack_verify_result *res)
{
    memset(res, 0, sizeof *res);
    job_start(j);
    int st = check_opts(j, o);
    if (st) return job_finish(j, st);
    res->ctx = o->ctx ? o->ctx : 512;
#ifdef _OPENMP
    if (o->threads > 0) omp_set_num_threads(o->threads);
    res->threads = omp_get_max_threads();
#else
    res->threads = 1;
#endif
    run rn = {.j = j, .o = o, .res = res};
    size_t n = (size_t)o->n_models;
    res->models = calloc(n, sizeof *res->models);
    rn.rs = calloc(n, sizeof *rn.rs);
    rn.ms = calloc(n, sizeof *rn.ms);
    if (!res->models || !rn.rs || !rn.ms) {
        st = lpk_err(job_err(j), LPK_ENOMEM, "out of memory");
    } else {
        res->n_models = o->n_models;
        res->ref.path = o->ref;
        for (size_t i = 0; i < n; i++) res->models[i].path = o->models[i];
        st = verify_run(&rn);
    }
    vf_eval_free(rn.ev);
    for (size_t i = 0; rn.ms && i < n; i++) vf_model_free(rn.ms[i]);
    for (size_t i = 0; rn.rs && i < n; i++) lpk_reader_close(rn.rs[i]);
    vf_model_free(rn.ref_m);
    lpk_reader_close(rn.ref_r);
    free(rn.ms);
    free(rn.rs);
    return job_finish(j, st);
}

void llmpack_verify_result_free(llmpack_verify_result *res)
{
    if (!res) return;
    for (int i = 0; res->models && i < res->n_models; i++) {
        free(res->models[i].chunks);
        free(res->models[i].kld);
        free(res->models[i].te);
    }
    free(res->models);
    memset(res, 0, sizeof *res);
}
