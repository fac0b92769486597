/* The calibrate job: a model and a text -> an importance matrix file. */
#include "job_internal.h"

#include <string.h>

#include "../calib/calib.h"

void llmpack_calibrate_result_free(llmpack_calibrate_result *res)
{
    if (!res) return;
    lpk_imatrix_free(res->imatrix);
    memset(res, 0, sizeof *res);
}

int llmpack_calibrate(llmpack_job *j, const llmpack_calibrate_opts *o,
                      llmpack_calibrate_result *res)
{
    job_start(j);
    if (res) memset(res, 0, sizeof *res);
    lpk_error *err = job_err(j);
    if (!o->model || !o->text || !o->out)
        return job_finish(j, lpk_err(err, LPK_EINVAL, "calibrate: no %s given",
                                     !o->model ? "model" : !o->text ? "text" : "output"));
    if (o->ctx < 0 || o->chunks < 0)
        return job_finish(j, lpk_err(err, LPK_EINVAL, "calibrate: bad ctx %d or chunks %d",
                                     o->ctx, o->chunks));
    lpk_reader *r = NULL;
    lpk_imatrix *im = NULL;
    double t0 = job_now();
    int st = job_open_model(j, o->model, lpk_reader_default_flags(), &r);
    job_chunks c = {.j = j, .what = o->text};
    calib_opts co = {.ctx = o->ctx, .max_chunks = o->chunks, .no_output = o->no_output,
                     .no_cov = o->no_cov,
                     .progress = job_chunk_progress, .user = &c, .dataset = o->text};
    if (!st) st = job_begin(j, "calibrate", "chunks", 0, o->text);
    if (!st) st = calib_reader(r, o->text, &co, &im, err);
    job_end(j);
    lpk_reader_close(r);
    double secs = job_now() - t0;
    if (!st) st = lpk_imatrix_write(o->out, im, LPK_IMATRIX_AUTO, o->force ? LPK_WRITE_FORCE : 0,
                                    err);
    if (!st && res) {
        res->imatrix = im;
        res->seconds = secs;
    } else {
        lpk_imatrix_free(im);
    }
    return job_finish(j, st);
}
