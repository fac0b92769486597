/* quantize's pipeline: a container (.lpk or GGUF) -> one or several outputs,
 * each with a recipe's types, streamed tensor by tensor: every source tensor
 * is read (and its checksum verified) once, converted to f32 once, and
 * quantized, measured and written once per output. A GGUF output is a
 * container beside it, exported (cmd_export.c) and removed. */
#include "cli_quantize.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "../verify/verify.h"

static const char *tname(int type)
{
    const lpk_type_info *ti = lpk_type_get(type);
    return ti ? ti->name : "?";
}

/* Source tensor -> f32 (dequantizing block types). */
static int to_f32(const lpk_tensor *t, float *x, lpk_error *err)
{
    int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
    int rc = quant_type_is_block(t->type) ? quant_dequantize_rows(t->type, t->data, nr, nc, x)
                                          : lpk_to_f32_row(t->type, t->data, x,
                                                           (size_t)(nr * nc));
    if (rc) return lpk_err(err, LPK_EUNSUPPORTED, "%s: cannot read type %s", t->name,
                           tname(t->type));
    return LPK_OK;
}

/* Bytes of a GGUF file of the keys in m and the n tensors that are not
 * tensor data (the header, key/values, tensor infos, alignment padding at
 * most): what export adds to the tensors, near enough for a budget (its keys
 * are m's give or take a few; the exported file's exact size is checked). */
static uint64_t gguf_overhead(const lpk_meta *m, const lpk_tensor *decls, size_t n)
{
    uint64_t b = 4 + 4 + 8 + 8 + 31;
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        b += 8 + strlen(kv->key) + 4;
        if (kv->type == LPK_V_STR) {
            b += 8 + kv->str.n;
        } else if (kv->type != LPK_V_ARR) {
            b += lpk_vtype_size(kv->type);
        } else {
            b += 4 + 8;
            if (kv->elem != LPK_V_STR) b += kv->count * lpk_vtype_size(kv->elem);
            else for (uint64_t k = 0; k < kv->count; k++) b += 8 + lpk_kv_str_at(kv, k).n;
        }
    }
    for (size_t i = 0; i < n; i++)
        b += 8 + strlen(decls[i].name) + 4 + 8 * (uint64_t)decls[i].n_dims + 4 + 8 + 31;
    return b;
}

/* The container path an output's tensors go to: the output itself, or a GGUF
 * output's temporary container. */
static const char *container_of(const cli_quant_out *q)
{
    return q->fmt == LLMPACK_FMT_GGUF ? q->tmp : q->path;
}

/* The size-target plan of the single output (budget in bytes of tensors). */
static int plan_target(const cli_quant_opts *o, cli_quant_run *run, cli_quant_out *q,
                       const float *const *imw, const double *gains, uint64_t budget,
                       lpk_error *err)
{
    for (size_t i = 0; i < run->n; i++) q->decls[i] = *lpk_reader_tensor(run->r, i);
    int rc = quant_plan_target(q->decls, run->n, imw, gains, NULL, 0, budget, q->ch,
                               &run->tres, err);
    if (rc == LPK_ENOSPC) {
        /* a budget no plan fits: the limit asked for is the problem (exit 2) */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        rc = lpk_err(err, LPK_EINVAL, "%s: %s", o->in, msg);
    }
    return rc;
}

/* Everything about output q that follows from its plan: the refusal of a
 * tensor to requantize, the declarations' sizes, the metadata, its buffer;
 * then its writer is opened. */
static int prepare_output(const cli_quant_opts *o, cli_quant_run *run, cli_quant_out *q,
                          lpk_error *err)
{
    lpk_reader *r = run->r;
    uint64_t max_bytes = 1;
    for (size_t i = 0; i < run->n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        int src = t->type, dst = q->ch[i].type;
        if (quant_type_is_block(src) && src != dst && !o->requant)
            return lpk_err(err, LPK_EINVAL,
                           "%s: %s is already %s; quantizing it to %s would dequantize it "
                           "first (add --allow-requantize)", o->in, t->name, tname(src),
                           tname(dst));
        q->decls[i] = *t;
        q->decls[i].type = dst;
        q->decls[i].data = NULL;
        if (lpk_type_nbytes(dst, lpk_tensor_nelems(t), &q->decls[i].size))
            return lpk_err(err, LPK_EINVAL, "%s: %s does not fit type %s", o->in, t->name,
                           tname(dst));
        if (q->decls[i].size > max_bytes) max_bytes = q->decls[i].size;
    }
    if (o->requant && !o->quiet)
        for (size_t i = 0; i < run->n; i++) {
            const lpk_tensor *t = lpk_reader_tensor(r, i);
            if (quant_type_is_block(t->type) && t->type != q->ch[i].type)
                fprintf(stderr, "llmpack quantize: %s: dequantizing %s to requantize it as %s\n",
                        t->name, tname(t->type), tname(q->ch[i].type));
        }
    lpk_meta *meta = lpk_meta_new();
    int rc = meta ? lpk_meta_copy(meta, lpk_reader_meta(r)) : LPK_ENOMEM;
    if (!rc && o->name) rc = lpk_meta_set_str(meta, "general.name", o->name);
    if (!rc)
        rc = q->recipe ? quant_plan_record(q->recipe, o->pure, q->decls, q->ch, run->n, meta)
                       : quant_plan_record_target(run->target_str, &run->tres, q->decls, q->ch,
                                                  run->n, meta);
    if (!rc && run->im) rc = lpk_imatrix_record(run->im, o->im_path, meta);
    if (!rc && run->g) rc = calib_gptq_record(run->g, meta);
    if (rc) {
        lpk_meta_free(meta);
        return lpk_err(err, rc, "cannot record the recipe in the metadata");
    }
    if (max_bytes > SIZE_MAX || !(q->qbuf = malloc((size_t)max_bytes))) {
        lpk_meta_free(meta);
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    /* the temporary container of a GGUF output exists already (empty) */
    unsigned flags = o->force || q->fmt == LLMPACK_FMT_GGUF ? LPK_WRITE_FORCE : 0;
    rc = lpk_writer_open(container_of(q), meta, q->decls, run->n, flags, &q->w, err);
    lpk_meta_free(meta);
    return rc;
}

/* All outputs together must fit the free space of their folder (each writer
 * checks its own file only): the containers, and the largest GGUF beside
 * them while it is exported. */
static int check_space(const cli_quant_out *outs, size_t n_out, lpk_error *err)
{
    uint64_t need = 0, gguf = 0;
    for (size_t k = 0; k < n_out; k++) {
        uint64_t s = lpk_writer_file_size(outs[k].w);
        need += s;
        if (outs[k].fmt == LLMPACK_FMT_GGUF && s > gguf) gguf = s;
    }
    need += gguf;
    char dir[4096];
    const char *slash = strrchr(outs[0].path, '/');
    int dl = slash ? (int)(slash - outs[0].path) + 1 : 0;
    snprintf(dir, sizeof dir, "%.*s", dl, dl ? outs[0].path : ".");
    struct statvfs vs;
    if (statvfs(dir, &vs) != 0 || !vs.f_frsize || vs.f_bavail > UINT64_MAX / vs.f_frsize)
        return LPK_OK;
    uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
    if (avail < need)
        return lpk_err(err, LPK_ENOSPC, "%s: the %zu outputs need about %" PRIu64 " bytes, %"
                       PRIu64 " free", dir, n_out, need, avail);
    return LPK_OK;
}

/* Output q's version of tensor i (t, its f32 values in x when converted):
 * quantized (or the source bytes), measured, written. */
static int write_tensor(const char *in, cli_quant_run *run, cli_quant_out *q, size_t i,
                        const lpk_tensor *t, const void *bytes, const float *x, float *wbuf,
                        lpk_error *err)
{
    int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
    int type = q->ch[i].type, rc = LPK_OK;
    cli_quant_stat *st = &q->st[i];
    if (t->type != type) {
        lpk_error qe = {0};
        const float *iw = NULL;
        if (run->im && quant_type_is_block(type)) {
            const lpk_imatrix_entry *e = lpk_imatrix_find(run->im, t->name);
            if (e) {
                lpk_imatrix_weights(e, wbuf);
            } else {
                /* no entry: every column of equal importance */
                for (int64_t c = 0; c < nc; c++) wbuf[c] = 1.0f;
                q->no_entry[q->n_no_entry++] = t->name;
            }
            iw = wbuf;
        }
        if (run->g && calib_gptq_applies(run->g, t->name, type))
            rc = calib_gptq_quantize(run->g, t->name, type, x, nr, nc, q->qbuf, &qe);
        else
            rc = quant_quantize_rows_ex(type, LPK_TYPE_F32, x, nr, nc, q->qbuf, iw,
                                        quant_rows_flags(t->name, q->decls, run->n), &qe);
        if (rc) return lpk_err(err, rc, "%s: tensor %s: %s", in, t->name, qe.msg);
        if (t->n_dims >= 2) {
            quant_error(type, x, q->qbuf, nr, nc, &st->sse, &st->ssx);
            st->has_err = 1;
        }
        bytes = q->qbuf;
    } else if (t->n_dims >= 2) {
        /* copied as is: no error, but its weights count in the pooled figure */
        for (uint64_t k = 0; k < lpk_tensor_nelems(t); k++) st->ssx += (double)x[k] * x[k];
        st->has_err = 1;
    }
    rc = lpk_writer_tensor_begin(q->w, t->name, err);
    if (!rc) rc = lpk_writer_tensor_write(q->w, bytes, (size_t)q->decls[i].size, err);
    if (!rc) rc = lpk_writer_tensor_end(q->w, err);
    return rc;
}

/* Forgets what a pass over the tensors did to the outputs (before another). */
static void reset_outputs(cli_quant_out *outs, size_t n_out, size_t n)
{
    for (size_t k = 0; k < n_out; k++) {
        lpk_writer_abort(outs[k].w);
        outs[k].w = NULL;
        free(outs[k].qbuf);
        outs[k].qbuf = NULL;
        memset(outs[k].st, 0, n * sizeof *outs[k].st);
        outs[k].n_no_entry = 0;
    }
}

int cli_quantize_run(const cli_quant_opts *o, cli_quant_out *outs, size_t n_out,
                     cli_quant_run *run, lpk_error *err)
{
    memset(run, 0, sizeof *run);
    const int target = o->target_bpw_s || o->max_size_s;
    if (!n_out || n_out > CLI_QUANT_MAX_OUTPUTS || (target && n_out != 1))
        return lpk_err(err, LPK_EINVAL, "quantize: %zu outputs", n_out);
    double *gains = NULL;
    float **imw = NULL, *x = NULL, *wbuf = NULL;
    uint64_t budget = 0;
    int tries = 0, rc = LPK_OK;
    for (size_t k = 0; k < n_out; k++) {
        outs[k].tmp[0] = '\0';
        outs[k].written = 0;
        outs[k].w = NULL;
        outs[k].qbuf = NULL;
    }
    /* every target before any work; GGUF outputs get their temporary container */
    for (size_t k = 0; k < n_out && !rc; k++) {
        rc = lpk_writer_check_target(outs[k].path, o->force ? LPK_WRITE_FORCE : 0, err);
        if (!rc && outs[k].fmt == LLMPACK_FMT_GGUF)
            rc = llmpack_tmp_beside(outs[k].path, outs[k].tmp, sizeof outs[k].tmp, err);
    }
    if (!rc) rc = cli_open_input(o->in, lpk_reader_default_flags(), &run->r, err);
    if (rc) goto done;
    lpk_reader *r = run->r;
    size_t n = run->n = lpk_reader_n_tensors(r);
    for (size_t k = 0; k < n_out && !rc; k++) {
        outs[k].decls = calloc(n ? n : 1, sizeof *outs[k].decls);
        outs[k].ch = calloc(n ? n : 1, sizeof *outs[k].ch);
        outs[k].st = calloc(n ? n : 1, sizeof *outs[k].st);
        outs[k].no_entry = calloc(n ? n : 1, sizeof *outs[k].no_entry);
        if (!outs[k].decls || !outs[k].ch || !outs[k].st || !outs[k].no_entry)
            rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        for (size_t i = 0; i < n && !rc; i++) outs[k].decls[i] = *lpk_reader_tensor(r, i);
    }
    if (rc) goto done;
    lpk_tensor *src_decls = outs[0].decls; /* the input's declarations until planned */
    for (size_t i = 0; i < n; i++) run->in_bytes += lpk_reader_tensor(r, i)->size;

    /* the importance matrix or GPTQ's Hessians: once for all outputs */
    if (o->im_path) {
        rc = lpk_imatrix_read(o->im_path, &run->im, err);
    } else if (o->calib_text && o->gptq) {
        calib_gptq_opts go = o->go;
        go.chunks = (int)o->chunks;
        cli_progress cp;
        cli_progress_start(&cp, "gptq calibration", "chunks", 0, o->quiet);
        rc = calib_gptq_collect(r, o->calib_text, &go, cli_chunk_progress, &cp, &run->g, err);
        cli_progress_end(&cp);
    } else if (o->calib_text) {
        calib_opts co = {.ctx = 512, .max_chunks = (int)o->chunks};
        if (!o->quiet) fprintf(stderr, "llmpack quantize: calibrating on %s\n", o->calib_text);
        rc = calib_file(o->in, o->calib_text, &co, &run->im, err);
    }
    if (!rc && run->im)
        rc = lpk_imatrix_check(run->im, o->im_path ? o->im_path : o->calib_text, src_decls, n,
                               err);
    if (rc) goto done;

    /* the plans */
    if (target) {
        /* the budget for all tensors: bits per weight over every tensor, or the
         * file size less the input's non-tensor bytes and some slack (the
         * writer's exact size is checked below) */
        uint64_t elems = 0, in_tensors = 0;
        for (size_t i = 0; i < n; i++) {
            elems += lpk_tensor_nelems(&src_decls[i]);
            in_tensors += src_decls[i].size;
        }
        if (o->target_bpw_s) {
            budget = (uint64_t)(o->target_bpw * (double)elems / 8.0);
            snprintf(run->target_str, sizeof run->target_str, "bpw %s", o->target_bpw_s);
        } else {
            uint64_t fsz = lpk_reader_file_size(r);
            uint64_t overhead = outs[0].fmt == LLMPACK_FMT_GGUF
                                    ? gguf_overhead(lpk_reader_meta(r), src_decls, n)
                                    : fsz > in_tensors ? fsz - in_tensors : 0;
            overhead += 4096 + 64 * (uint64_t)n;
            budget = o->max_size > overhead ? o->max_size - overhead : 0;
            snprintf(run->target_str, sizeof run->target_str, "max-size %s", o->max_size_s);
        }
        gains = calloc(n ? n : 1, sizeof *gains);
        imw = calloc(n ? n : 1, sizeof *imw);
        if (!gains || !imw) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); goto done; }
        for (size_t i = 0; i < n && run->im; i++) {
            const lpk_imatrix_entry *e = lpk_imatrix_find(run->im, src_decls[i].name);
            if (!e) continue;
            imw[i] = malloc((size_t)e->n * sizeof(float));
            if (!imw[i]) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); goto done; }
            lpk_imatrix_weights(e, imw[i]);
        }
        if (!o->quiet)
            fprintf(stderr, "llmpack quantize: measuring each matrix's sensitivity on %s\n",
                    o->calib_text);
        rc = vf_target_gains_text(r, o->calib_text, 512, (int)o->calib_chunks,
                                  (const float *const *)imw, gains, err);
        if (!rc) rc = plan_target(o, run, &outs[0], (const float *const *)imw, gains, budget, err);
    } else {
        unsigned flags = (o->pure ? QUANT_PLAN_PURE : 0u) |
                         (run->im || run->g ? QUANT_PLAN_IMATRIX : 0u);
        for (size_t k = 0; k < n_out && !rc; k++)
            rc = quant_plan(outs[k].recipe, flags, lpk_reader_meta(r), outs[k].decls, n,
                            outs[k].ch, err);
    }
    if (rc) goto done;

    /* one f32 copy of the largest tensor, one importance row */
    uint64_t max_elems = 1;
    int64_t max_cols = 1;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (lpk_tensor_nelems(t) > max_elems) max_elems = lpk_tensor_nelems(t);
        if (lpk_tensor_ncols(t) > max_cols) max_cols = lpk_tensor_ncols(t);
    }
    if (max_elems > SIZE_MAX / sizeof(float)) {
        rc = lpk_err(err, LPK_ENOMEM, "tensor too large");
        goto done;
    }
    x = malloc((size_t)max_elems * sizeof *x);
    wbuf = run->im ? malloc((size_t)max_cols * sizeof *wbuf) : NULL;
    if (!x || (run->im && !wbuf)) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); goto done; }

    for (;;) { /* more than once only when a size target is missed */
        uint64_t excess = 0;
        for (size_t k = 0; k < n_out && !rc; k++) rc = prepare_output(o, run, &outs[k], err);
        if (rc) goto done;
        if (o->max_size_s && outs[0].fmt == LLMPACK_FMT_LPK &&
            lpk_writer_file_size(outs[0].w) > o->max_size) {
            if (tries++ >= 8) {
                rc = lpk_err(err, LPK_ENOSPC, "%s: no plan found within %" PRIu64 " bytes",
                             outs[0].path, o->max_size);
                goto done;
            }
            /* the metadata and alignment took more than estimated: plan again with
             * a budget smaller by the excess and a step that doubles each time (the
             * plan moves in whole tensors' steps) */
            excess = lpk_writer_file_size(outs[0].w) - o->max_size + ((uint64_t)4096 << tries);
        }
        if (!excess && n_out > 1) rc = check_space(outs, n_out, err);
        if (rc) goto done;

        if (!excess) {
            cli_progress prog, gp;
            cli_progress_start(&prog, "quantize", "B", run->in_bytes, o->quiet);
            /* GPTQ: the blocks' calibration passes with their own ETA */
            cli_progress_start(&gp, "gptq blocks", "chunks", 0, o->quiet || !run->g);
            calib_gptq_set_progress(run->g, run->g ? cli_chunk_progress : NULL, &gp);
            uint64_t done_bytes = 0;
            double t0 = cli_now();
            for (size_t i = 0; i < n && !rc; i++) {
                const lpk_tensor *t = lpk_reader_tensor(r, i);
                const void *bytes;
                rc = lpk_reader_tensor_data(r, i, &bytes, err);
                if (rc) break;
                int need_f32 = t->n_dims >= 2;
                for (size_t k = 0; k < n_out; k++) need_f32 |= t->type != outs[k].ch[i].type;
                if (need_f32) rc = to_f32(t, x, err);
                for (size_t k = 0; k < n_out && !rc; k++)
                    rc = write_tensor(o->in, run, &outs[k], i, t, bytes, x, wbuf, err);
                lpk_reader_release_tensor(r, i);
                done_bytes += t->size;
                cli_progress_update(&prog, done_bytes, t->name);
            }
            cli_progress_end(&prog);
            cli_progress_end(&gp);
            calib_gptq_set_progress(run->g, NULL, NULL);
            /* complete each output in order; a GGUF output's container waits */
            for (size_t k = 0; k < n_out && !rc; k++) {
                rc = lpk_writer_finish(outs[k].w, err);
                outs[k].w = NULL;
                if (!rc && outs[k].fmt == LLMPACK_FMT_GGUF) llmpack_tmp_hold(outs[k].tmp);
                else if (!rc) outs[k].written = 1;
            }
            for (size_t k = 0; k < n_out && !rc; k++) {
                cli_quant_out *q = &outs[k];
                if (q->fmt != LLMPACK_FMT_GGUF) continue;
                llmpack_export_result es;
                char *name = llmpack_name_from_path(q->path);
                rc = cli_export_gguf(q->tmp, q->path, name, o->force, o->quiet,
                                     o->max_size_s ? o->max_size : 0, &es, err);
                free(name);
                if (rc == LPK_ENOSPC && o->max_size_s && es.file_size > o->max_size &&
                    tries++ < 8) {
                    /* the GGUF came out larger than estimated: quantize again */
                    excess = es.file_size - o->max_size + ((uint64_t)4096 << tries);
                    lpk_error_clear(err);
                    rc = LPK_OK;
                    break;
                }
                /* the container is not needed any more, whatever happened */
                llmpack_tmp_remove(q->tmp);
                q->tmp[0] = '\0';
                if (!rc) q->written = 1;
            }
            if (rc) goto done;
            run->seconds = cli_now() - t0;
            if (!excess) break;
        }
        reset_outputs(outs, n_out, n);
        budget = budget > excess ? budget - excess : 0;
        rc = plan_target(o, run, &outs[0], (const float *const *)imw, gains, budget, err);
        if (rc) goto done;
    }

done:
    for (size_t k = 0; k < n_out; k++) {
        lpk_writer_abort(outs[k].w);
        outs[k].w = NULL;
        if (outs[k].tmp[0]) llmpack_tmp_remove(outs[k].tmp);
        outs[k].tmp[0] = '\0';
        free(outs[k].qbuf);
        outs[k].qbuf = NULL;
    }
    free(x);
    free(wbuf);
    free(gains);
    for (size_t i = 0; imw && i < run->n; i++) free(imw[i]);
    free(imw);
    return rc;
}

void cli_quantize_free(cli_quant_out *outs, size_t n_out, cli_quant_run *run)
{
    for (size_t k = 0; k < n_out; k++) {
        free(outs[k].decls);
        free(outs[k].ch);
        free(outs[k].st);
        free(outs[k].no_entry);
        outs[k].decls = NULL;
        outs[k].ch = NULL;
        outs[k].st = NULL;
        outs[k].no_entry = NULL;
    }
    lpk_imatrix_free(run->im);
    calib_gptq_free(run->g);
    lpk_reader_close(run->r);
    memset(run, 0, sizeof *run);
}
