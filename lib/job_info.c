/* The info job: a model file described as data (what `llmpack info` prints). */
#include "job_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every key under prefix (a key equal to the prefix is not under it) into g. */
static int group(const lpk_meta *m, const char *prefix, llmpack_key_group *g, lpk_error *err)
{
    size_t pl = strlen(prefix), n = 0;
    g->prefix_len = pl;
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        n += !strncmp(kv->key, prefix, pl) && kv->key[pl];
    }
    if (!n) return LPK_OK;
    if (!(g->kv = malloc(n * sizeof *g->kv))) return lpk_err(err, LPK_ENOMEM, "out of memory");
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        if (!strncmp(kv->key, prefix, pl) && kv->key[pl]) g->kv[g->n++] = kv;
    }
    return LPK_OK;
}

static void special(const lpk_meta *m, const char *name, const char *key,
                    llmpack_special_token *t)
{
    t->name = name;
    t->key = key;
    if (lpk_meta_get_u32(m, key, &t->id) != LPK_OK) return;
    t->has = 1;
    const lpk_kv *toks = lpk_meta_find(m, "tokenizer.ggml.tokens");
    if (toks && toks->type == LPK_V_ARR && toks->elem == LPK_V_STR && t->id < toks->count) {
        t->piece = lpk_kv_str_at(toks, t->id);
        t->has_piece = 1;
    }
}

static int describe(llmpack_info_result *s, lpk_error *err)
{
    const lpk_reader *r = s->r;
    const lpk_meta *m = lpk_reader_meta(r);
    s->kind = lpk_reader_kind(r);
    s->version = lpk_reader_version(r);
    s->metadata_compressed = (lpk_reader_flags(r) & 1u) != 0;
    s->checksums = llmpack_checksums_of(r);
    llmpack_model_describe(r, &s->desc);
    s->n_tensors = lpk_reader_n_tensors(r);
    for (size_t i = 0; i < s->n_tensors; i++) {
        int t = lpk_reader_tensor(r, i)->type;
        if (t >= 0 && t < LPK_TYPE_COUNT) s->type_count[t]++;
    }
    s->arch = lpk_meta_get_str(m, "general.architecture");
    s->name = lpk_meta_get_str(m, "general.name");
    snprintf(s->arch_prefix, sizeof s->arch_prefix, "%s.", s->arch ? s->arch : "llama");
    const lpk_tensor *out = lpk_reader_find(r, "output.weight");
    s->tied_output = !out;
    s->output_type = out ? out->type : -1;
    char k[128];
    snprintf(k, sizeof k, "%scontext_length", s->arch_prefix);
    s->context_length = lpk_meta_find(m, k);
    snprintf(k, sizeof k, "%srope.freq_base", s->arch_prefix);
    s->rope_freq_base = lpk_meta_find(m, k);
    snprintf(k, sizeof k, "%srope.scaling.", s->arch_prefix);
    int st = group(m, k, &s->rope_scaling, err);
    special(m, "bos", "tokenizer.ggml.bos_token_id", &s->special[0]);
    special(m, "eos", "tokenizer.ggml.eos_token_id", &s->special[1]);
    special(m, "eot", "tokenizer.ggml.eot_token_id", &s->special[2]);
    special(m, "pad", "tokenizer.ggml.padding_token_id", &s->special[3]);
    const lpk_kv *ct = lpk_meta_find(m, "tokenizer.chat_template");
    s->chat_template = ct && ct->type == LPK_V_STR;
    s->chat_template_bytes = s->chat_template ? ct->str.n : 0;
    s->quant_recipe = lpk_meta_find(m, "quant.recipe");
    s->quant_pure = lpk_meta_find(m, "quant.pure");
    s->quant_method = lpk_meta_get_str(m, "quant.method");
    if (!s->quant_method && s->quant_recipe) s->quant_method = "rtn";
    if (!st) st = group(m, "quant.imatrix.", &s->imatrix, err);
    if (!st && !s->imatrix.n) st = group(m, "quantize.imatrix.", &s->imatrix, err);
    if (!st) st = group(m, "quant.gptq.", &s->gptq, err);
    if (!st) st = group(m, "quant.target.", &s->target, err);
    return st;
}

int llmpack_info(llmpack_job *j, const llmpack_info_opts *o, llmpack_info_result *res)
{
    memset(res, 0, sizeof *res);
    job_start(j);
    if (!o->path) return job_finish(j, lpk_err(job_err(j), LPK_EINVAL, "info: no file given"));
    int st = job_open_input(j, o->path, lpk_reader_default_flags(), &res->r);
    if (!st) st = describe(res, job_err(j));
    return job_finish(j, st);
}

void llmpack_info_result_free(llmpack_info_result *res)
{
    if (!res) return;
    free(res->rope_scaling.kv);
    free(res->imatrix.kv);
    free(res->gptq.kv);
    free(res->target.kv);
    lpk_reader_close(res->r);
    memset(res, 0, sizeof *res);
}
