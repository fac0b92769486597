/* The tokenize and generate commands' library side: a tokenizer from any
 * model or tokenizer file, and a prompt's continuation (the prompt as one
 * batch, then one token per step over the KV cache). */
#include "job_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../verify/verify.h"

int llmpack_open_tokenizer(llmpack_job *j, const char *path, tok_tokenizer **tok)
{
    job_start(j);
    lpk_error *err = job_err(j);
    *tok = NULL;
    const char *kind = llmpack_model_convert_kind(path);
    int st;
    if (llmpack_is_container(path) || (kind && strcmp(kind, "llama2c"))) {
        lpk_reader *r = NULL;
        st = job_open_model(j, path, lpk_reader_default_flags(), &r);
        if (!st) st = tok_tokenizer_new(lpk_reader_meta(r), tok, err);
        lpk_reader_close(r);
        return job_finish(j, st);
    }
    lpk_meta *m = lpk_meta_new();
    st = m ? tok_load(path, m, err) : lpk_err(err, LPK_ENOMEM, "out of memory");
    if (!st) st = tok_tokenizer_new(m, tok, err);
    lpk_meta_free(m);
    return job_finish(j, st);
}

/* The next token: the largest logit (temp 0), else a draw from
 * softmax(logits / temp) with xorshift64* (rng: its state). */
static int pick(const float *logits, int n, double temp, uint64_t *rng)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    if (temp <= 0) return best;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((logits[i] - logits[best]) / temp);
    /* a uniform double in [0, 1) */
    *rng ^= *rng >> 12; *rng ^= *rng << 25; *rng ^= *rng >> 27;
    double u = (double)((*rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0 * sum;
    for (int i = 0; i < n; i++) {
        u -= exp((logits[i] - logits[best]) / temp);
        if (u < 0) return i;
    }
    return best;
}

/* The loop over an open model: s->n_prompt, s->n_generated and the times. */
static int generate(llmpack_job *j, const llmpack_generate_opts *o, vf_model *m,
                    const tok_tokenizer *tok, llmpack_generate_result *s)
{
    lpk_error *err = job_err(j);
    int32_t *ids = NULL, *seq = NULL;
    float *logits = NULL;
    size_t n_ids = 0;
    int st = tok_encode(tok, o->prompt, strlen(o->prompt), 1, 0, &ids, &n_ids, err);
    if (!st && (n_ids == 0 || n_ids > (size_t)INT32_MAX - (size_t)o->n_predict))
        st = lpk_err(err, LPK_EINVAL, "the prompt has %zu tokens", n_ids);
    const vf_config *c = vf_model_config(m);
    if (!st) {
        s->n_prompt = n_ids;
        logits = malloc((size_t)c->vocab_size * sizeof(float));
        seq = malloc((n_ids + (size_t)o->n_predict) * sizeof *seq);
        if (!logits || !seq) st = lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    if (!st) memcpy(seq, ids, n_ids * sizeof *seq);
    double t0 = job_now();
    if (!st) st = vf_forward(m, seq, (int)n_ids, 0, 1, logits, err);
    s->prompt_seconds = job_now() - t0;
    int n_seq = (int)n_ids;
    uint64_t rng = o->seed * 0x9E3779B97F4A7C15ULL + 1;
    int32_t eos = tok_tokenizer_eos(tok);
    t0 = job_now();
    while (!st && s->n_generated < o->n_predict) {
        if ((st = job_check_cancel(j, o->model))) break;
        int next = pick(logits, c->vocab_size, o->temp, &rng);
        if (next == eos) break;
        seq[n_seq++] = next;
        s->n_generated++;
        char piece[256];
        int len = tok_decode_token(tok, next, piece, sizeof piece);
        if (o->on_token && o->on_token(o->user, next, piece, len > 0 ? (size_t)len : 0)) {
            st = lpk_err(err, LPK_EINTR, "%s: cancelled", o->model);
            break;
        }
        if (s->n_generated < o->n_predict)
            st = vf_forward(m, &seq[n_seq - 1], 1, n_seq - 1, 1, logits, err);
    }
    s->gen_seconds = job_now() - t0;
    free(logits);
    free(seq);
    free(ids);
    return st;
}

int llmpack_generate(llmpack_job *j, const llmpack_generate_opts *o, llmpack_generate_result *res)
{
    llmpack_generate_result local;
    llmpack_generate_result *s = res ? res : &local;
    memset(s, 0, sizeof *s);
    job_start(j);
    lpk_error *err = job_err(j);
    if (!o->model || !o->prompt)
        return job_finish(j, lpk_err(err, LPK_EINVAL, "generate: no %s given",
                                     o->model ? "prompt" : "model"));
    if (o->n_predict < 0 || o->n_predict > LLMPACK_GENERATE_MAX || !(o->temp >= 0))
        return job_finish(j, lpk_err(err, LPK_EINVAL, "generate: n_predict %ld or temp %g "
                                     "out of range", o->n_predict, o->temp));
#ifdef _OPENMP
    if (o->threads > 0) omp_set_num_threads(o->threads);
#endif
    lpk_reader *r = NULL;
    vf_model *m = NULL;
    tok_tokenizer *tok = NULL;
    int st = job_open_model(j, o->model, lpk_reader_default_flags(), &r);
    if (!st) st = vf_model_open(r, &m, err);
    if (!st) st = tok_tokenizer_new(lpk_reader_meta(r), &tok, err);
    if (!st) st = generate(j, o, m, tok, s);
    tok_tokenizer_free(tok);
    vf_model_free(m);
    lpk_reader_close(r);
    return job_finish(j, st);
}
