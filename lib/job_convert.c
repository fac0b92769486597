/* The convert job: a checkpoint into a container (convert/'s cv_convert), or
 * into a GGUF through a temporary container beside it and the export job. */
#include "job_internal.h"

#include <stdlib.h>
#include <string.h>

/* cv_options.progress: bytes of source tensors, and a cancellation check. */
typedef struct convert_progress {
    llmpack_job *j;
    const char *out;
} convert_progress;

static int on_bytes(void *ctx, uint64_t done, uint64_t total)
{
    convert_progress *p = ctx;
    p->j->total = total;
    return job_update(p->j, done, NULL, p->out) != LPK_OK;
}

/* What the library refuses that the CLI catches as usage errors first. */
static int check_opts(llmpack_job *j, const llmpack_convert_opts *o)
{
    lpk_error *err = job_err(j);
    if (!o->src || !o->out)
        return lpk_err(err, LPK_EINVAL, "convert: no %s given", o->src ? "output" : "source");
    if (o->format != LLMPACK_FMT_LPK && o->format != LLMPACK_FMT_GGUF)
        return lpk_err(err, LPK_EINVAL, "%s: unknown output format %d", o->out, o->format);
    if ((o->pure || o->imatrix) && !o->type)
        return lpk_err(err, LPK_EINVAL, "convert: %s needs a type",
                       o->pure ? "pure" : "an importance matrix");
    if (o->format == LLMPACK_FMT_GGUF && o->no_tokenizer)
        return lpk_err(err, LPK_EINVAL, "%s: a GGUF output needs the tokenizer", o->out);
    if (o->quantize && (!o->type || o->imatrix))
        return lpk_err(err, LPK_EINVAL, "convert: a quantize step needs a type and no "
                       "importance matrix");
    return LPK_OK;
}

/* cv_convert into path (out itself, or with tmp set a temporary container
 * beside it: replaced, not synced, removed once read), the report's warning
 * and note as notices. */
static int convert_into(llmpack_job *j, const llmpack_convert_opts *o, const char *path,
                        int tmp, cv_report *rep)
{
    lpk_error *err = job_err(j);
    lpk_imatrix *im = NULL;
    int st = o->imatrix ? lpk_imatrix_read(o->imatrix, &im, err) : LPK_OK;
    if (!st) st = job_begin(j, "convert", "B", 0, o->out);
    if (st) {
        lpk_imatrix_free(im);
        return st;
    }
    convert_progress pr = {.j = j, .out = o->out};
    cv_options co = {.src = o->src, .out = path, .type = o->type, .pure = o->pure,
                     .tokenizer = o->tokenizer, .context_length = o->context_length,
                     .name = o->name, .hash_sources = o->hash_sources, .threads = o->threads,
                     .force = tmp || o->force, .scratch = tmp, .no_tokenizer = o->no_tokenizer, .progress = on_bytes,
                     .progress_ctx = &pr, .imatrix = im, .imatrix_path = o->imatrix};
    st = cv_convert(&co, rep, err);
    job_end(j);
    lpk_imatrix_free(im);
    /* a GGUF's container is cv_convert's out: the message names the GGUF */
    if (st == LPK_EINTR) lpk_err(err, LPK_EINTR, "%s: cancelled", o->out);
    if (rep->warning[0]) job_notice(j, "warning: %s", rep->warning);
    if (rep->note[0]) job_notice(j, "%s", rep->note);
    return st;
}

/* A GGUF: the container beside out (general.name: out's file name when the
 * model has none), exported, removed whatever happens. */
static int convert_gguf(llmpack_job *j, const llmpack_convert_opts *o, llmpack_convert_result *s)
{
    lpk_error *err = job_err(j);
    char tmp[4096] = "";
    int st = lpk_writer_check_target(o->out, o->force ? LPK_WRITE_FORCE : 0, err);
    if (!st) st = job_tmp_beside(o->out, tmp, sizeof tmp, err);
    if (!st) st = convert_into(j, o, tmp, 1, &s->report);
    char *name = NULL;
    if (!st && !(name = job_name_from_path(o->out)))
        st = lpk_err(err, LPK_ENOMEM, "out of memory");
    if (!st) {
        job_tmp_hold(tmp);
        llmpack_export_opts eo = {.in = tmp, .out = o->out, .format = LLMPACK_FMT_GGUF,
                                  .name = name, .force = o->force};
        llmpack_export_result er;
        st = job_export(j, &eo, &er);
        s->file_size = er.file_size;
    }
    free(name);
    job_tmp_remove(tmp);
    return st;
}

/* The quantize step: the source precision into a container beside out, out
 * quantized from it (its report malloc'ed into s->quantize), the container
 * removed whatever happens. */
static int convert_quantize(llmpack_job *j, const llmpack_convert_opts *o,
                            llmpack_convert_result *s)
{
    lpk_error *err = job_err(j);
    char tmp[4096] = "";
    int st = lpk_writer_check_target(o->out, o->force ? LPK_WRITE_FORCE : 0, err);
    if (!st) st = job_tmp_beside(o->out, tmp, sizeof tmp, err);
    llmpack_convert_opts co = *o;
    co.type = NULL;
    co.pure = 0;
    if (!st) st = convert_into(j, &co, tmp, 1, &s->report);
    if (!st && !(s->quantize = calloc(1, sizeof *s->quantize)))
        st = lpk_err(err, LPK_ENOMEM, "out of memory");
    if (!st) {
        job_tmp_hold(tmp);
        llmpack_quantize_opts qo = *o->quantize;
        qo.in = tmp;
        qo.pure = o->pure;
        qo.force = o->force;
        llmpack_quantize_out out = {.path = o->out, .recipe = o->type, .format = o->format};
        /* a job inside this one: its status and message are this job's */
        st = llmpack_quantize(j, &qo, &out, 1, s->quantize);
        if (s->quantize->n_out) s->file_size = s->quantize->outputs[0].file_size;
    }
    job_tmp_remove(tmp);
    return st;
}

int llmpack_convert(llmpack_job *j, const llmpack_convert_opts *o, llmpack_convert_result *res)
{
    llmpack_convert_result local;
    llmpack_convert_result *s = res ? res : &local;
    memset(s, 0, sizeof *s);
    job_start(j);
    int st = check_opts(j, o);
    if (!st && o->quantize) {
        st = convert_quantize(j, o, s);
    } else if (!st && o->format == LLMPACK_FMT_GGUF) {
        st = convert_gguf(j, o, s);
    } else if (!st) {
        st = convert_into(j, o, o->out, 0, &s->report);
        s->file_size = s->report.bytes_out;
    }
    if (!res) llmpack_convert_result_free(&local);
    return job_finish(j, st);
}

void llmpack_convert_result_free(llmpack_convert_result *res)
{
    if (!res) return;
    cv_report_free(&res->report);
    llmpack_quantize_report_free(res->quantize);
    free(res->quantize);
    memset(res, 0, sizeof *res);
}
