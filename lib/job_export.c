/* The export job: a container (or GGUF) written as GGUF v3 for llama.cpp, or
 * as a container with its keys and tensors as they are. The mapping is
 * format/'s (lpk_gguf_plan_make); this file streams. */
#include "job_internal.h"

#include <stdlib.h>
#include <string.h>

/* Writes n tensors: decls[i]'s bytes from the reader's tensor src[i], or
 * extra[i] when src[i] < 0. Progress stage "export" (bytes). */
static int write_all(llmpack_job *j, const lpk_reader *r, const lpk_tensor *decls,
                     const long *src, void *const *extra, size_t n, lpk_writer *w,
                     const char *out, uint64_t *bytes)
{
    lpk_error *err = job_err(j);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += decls[i].size;
    int st = job_begin(j, "export", "B", total, out);
    uint64_t done = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const lpk_tensor *d = &decls[i];
        const void *data = extra ? extra[i] : NULL;
        if (src[i] >= 0) {
            size_t si = (size_t)src[i];
            if ((st = lpk_reader_tensor_data(r, si, &data, err))) break;
        }
        if ((st = lpk_writer_tensor_begin(w, d->name, err))) break;
        /* in slices, so progress moves and the mapping can be released as we go */
        const size_t slice = 64u << 20;
        for (uint64_t off = 0; off < d->size && !st; off += slice) {
            size_t k = d->size - off < slice ? (size_t)(d->size - off) : slice;
            st = lpk_writer_tensor_write(w, (const uint8_t *)data + off, k, err);
            done += k;
            if (!st) st = job_update(j, done, d->name, out);
        }
        if (!st) st = lpk_writer_tensor_end(w, err);
        if (src[i] >= 0) lpk_reader_release_tensor(r, (size_t)src[i]);
    }
    job_end(j);
    *bytes = done;
    return st;
}

static int export_gguf(llmpack_job *j, const llmpack_export_opts *o, llmpack_export_result *s)
{
    lpk_error *err = job_err(j);
    lpk_reader *r = NULL;
    lpk_gguf_plan plan = {0};
    lpk_writer *w = NULL;
    char *name = o->name ? NULL : job_name_from_path(o->in);
    int st = !o->name && !name ? lpk_err(err, LPK_ENOMEM, "out of memory") : LPK_OK;
    if (!st) st = job_open_input(j, o->in, lpk_reader_default_flags(), &r);
    if (!st)
        st = lpk_gguf_plan_make(r, o->name ? o->name : name, o->strip ? LPK_GGUF_STRIP : 0,
                                &plan, err);
    if (!st && o->set_name && lpk_meta_set_str(plan.meta, "general.name", o->set_name))
        st = lpk_err(err, LPK_ENOMEM, "out of memory");
    if (!st)
        st = lpk_writer_open(o->out, plan.meta, plan.decls, plan.n_tensors,
                             LPK_WRITE_GGUF | (o->force ? LPK_WRITE_FORCE : 0), &w, err);
    if (!st) s->file_size = lpk_writer_file_size(w);
    if (!st && o->max_size && s->file_size > o->max_size)
        st = lpk_err(err, LPK_ENOSPC, "%s: the GGUF would be %llu bytes, over the limit of %llu",
                     o->out, (unsigned long long)s->file_size,
                     (unsigned long long)o->max_size);
    if (!st)
        st = write_all(j, r, plan.decls, plan.src, plan.extra, plan.n_tensors, w, o->out,
                       &s->data_bytes);
    if (!st) {
        st = lpk_writer_finish(w, err); /* frees w */
        w = NULL;
    }
    lpk_writer_abort(w);
    s->n_tensors = plan.n_tensors;
    for (size_t i = 0; i < plan.n_tensors; i++) s->n_added += plan.src[i] < 0;
    s->n_keys = plan.meta ? lpk_meta_count(plan.meta) : 0;
    s->n_dropped = plan.n_dropped;
    lpk_gguf_plan_free(&plan);
    lpk_reader_close(r);
    free(name);
    return st;
}

/* IN's keys and tensors as they are, into a container (general.name set to
 * set_name unless NULL). */
static int copy_container(llmpack_job *j, const llmpack_export_opts *o, llmpack_export_result *s)
{
    lpk_error *err = job_err(j);
    lpk_reader *r = NULL;
    lpk_writer *w = NULL;
    lpk_meta *meta = NULL;
    lpk_tensor *decls = NULL;
    long *src = NULL;
    int st = job_open_input(j, o->in, lpk_reader_default_flags(), &r);
    size_t n = st ? 0 : lpk_reader_n_tensors(r);
    if (!st) {
        decls = calloc(n ? n : 1, sizeof *decls);
        src = calloc(n ? n : 1, sizeof *src);
        if (!decls || !src) st = lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    for (size_t i = 0; !st && i < n; i++) {
        decls[i] = *lpk_reader_tensor(r, i);
        decls[i].data = NULL;
        src[i] = (long)i;
    }
    if (!st && o->set_name) {
        meta = lpk_meta_new();
        if (!meta || lpk_meta_copy(meta, lpk_reader_meta(r)) ||
            lpk_meta_set_str(meta, "general.name", o->set_name))
            st = lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    if (!st)
        st = lpk_writer_open(o->out, meta ? meta : lpk_reader_meta(r), decls, n,
                             o->force ? LPK_WRITE_FORCE : 0, &w, err);
    if (!st) s->file_size = lpk_writer_file_size(w);
    if (!st && o->max_size && s->file_size > o->max_size)
        st = lpk_err(err, LPK_ENOSPC, "%s: the container would be %llu bytes, over the limit "
                     "of %llu", o->out, (unsigned long long)s->file_size,
                     (unsigned long long)o->max_size);
    if (!st) st = write_all(j, r, decls, src, NULL, n, w, o->out, &s->data_bytes);
    if (!st) {
        st = lpk_writer_finish(w, err); /* frees w */
        w = NULL;
    }
    lpk_writer_abort(w);
    s->n_tensors = n;
    s->n_keys = meta ? lpk_meta_count(meta) : r ? lpk_meta_count(lpk_reader_meta(r)) : 0;
    lpk_meta_free(meta);
    free(decls);
    free(src);
    lpk_reader_close(r);
    return st;
}

int job_export(llmpack_job *j, const llmpack_export_opts *o, llmpack_export_result *s)
{
    memset(s, 0, sizeof *s);
    int st;
    if (!o->in || !o->out)
        st = lpk_err(job_err(j), LPK_EINVAL, "export: no %s given", o->in ? "output" : "input");
    else if (o->format == LLMPACK_FMT_GGUF)
        st = export_gguf(j, o, s);
    else if (o->format == LLMPACK_FMT_LPK)
        st = o->strip ? lpk_err(job_err(j), LPK_EINVAL, "%s: strip applies to GGUF outputs only",
                                o->out)
                      : copy_container(j, o, s);
    else
        st = lpk_err(job_err(j), LPK_EINVAL, "%s: unknown output format %d", o->out, o->format);
    return st;
}

int llmpack_export(llmpack_job *j, const llmpack_export_opts *o, llmpack_export_result *res)
{
    llmpack_export_result local;
    job_start(j);
    return job_finish(j, job_export(j, o, res ? res : &local));
}
