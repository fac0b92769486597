/* The job handle: callbacks, cancellation, the error of the last job. */
#include "job_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

llmpack_job *llmpack_job_new(void) { return calloc(1, sizeof(llmpack_job)); }

void llmpack_job_free(llmpack_job *j) { free(j); }

void llmpack_job_set_progress(llmpack_job *j, llmpack_progress_fn fn, void *user)
{
    j->progress = fn;
    j->progress_user = user;
}

void llmpack_job_set_notice(llmpack_job *j, llmpack_notice_fn fn, void *user)
{
    j->notice = fn;
    j->notice_user = user;
}

void llmpack_job_cancel(llmpack_job *j) { j->cancel = 1; }

int llmpack_job_cancelled(const llmpack_job *j) { return j->cancel != 0; }

int llmpack_job_status(const llmpack_job *j) { return j->err.status; }

const char *llmpack_job_error(const llmpack_job *j) { return j->err.msg; }

const lpk_error *llmpack_job_lpk_error(const llmpack_job *j) { return &j->err; }

void llmpack_job_reset(llmpack_job *j)
{
    lpk_error_clear(&j->err);
    j->cancel = 0;
    j->stage = NULL;
}

void job_start(llmpack_job *j)
{
    lpk_error_clear(&j->err);
    j->stage = NULL;
}

int job_finish(llmpack_job *j, int rc)
{
    job_end(j);
    if (rc && !j->err.status) lpk_err(&j->err, rc, "%s", lpk_status_name(rc));
    if (rc) j->err.status = rc;
    return rc;
}

static void emit(llmpack_job *j, int event, uint64_t done, const char *item)
{
    if (!j->progress) return;
    llmpack_progress p = {.event = event, .stage = j->stage, .unit = j->unit, .done = done,
                          .total = j->total, .item = item};
    j->progress(j->progress_user, &p);
}

int job_check_cancel(llmpack_job *j, const char *what)
{
    if (!j->cancel) return LPK_OK;
    return lpk_err(&j->err, LPK_EINTR, "%s: cancelled", what ? what : "job");
}

int job_begin(llmpack_job *j, const char *stage, const char *unit, uint64_t total,
              const char *what)
{
    job_end(j);
    j->stage = stage;
    j->unit = unit;
    j->total = total;
    emit(j, LLMPACK_PROGRESS_BEGIN, 0, NULL);
    return job_check_cancel(j, what);
}

int job_update(llmpack_job *j, uint64_t done, const char *item, const char *what)
{
    if (j->stage) emit(j, LLMPACK_PROGRESS_UPDATE, done, item);
    return job_check_cancel(j, what);
}

void job_end(llmpack_job *j)
{
    if (!j->stage) return;
    emit(j, LLMPACK_PROGRESS_END, 0, NULL);
    j->stage = NULL;
}

void job_notice(llmpack_job *j, const char *fmt, ...)
{
    if (!j->notice) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    j->notice(j->notice_user, msg);
}

int job_chunk_progress(void *user, int done, int total, uint64_t tokens, double seconds)
{
    job_chunks *c = user;
    c->j->total = (uint64_t)total;
    snprintf(c->item, sizeof c->item, "%.0f tokens/s",
             seconds > 0 ? (double)tokens / seconds : 0.0);
    return job_update(c->j, (uint64_t)done, c->item, c->what) != LPK_OK;
}

double job_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
