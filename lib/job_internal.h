/* lib/'s own helpers for the job implementations (not installed). */
#ifndef LLMPACK_JOB_INTERNAL_H
#define LLMPACK_JOB_INTERNAL_H

#include <signal.h>

#include "jobs.h"

struct llmpack_job {
    lpk_error err;
    llmpack_progress_fn progress;
    void *progress_user;
    llmpack_notice_fn notice;
    void *notice_user;
    volatile sig_atomic_t cancel;
    const char *stage;   /* the stage begun and not ended, or NULL */
    const char *unit;
    uint64_t total;
};

/* The error a job fills (passed down to the modules' functions). */
static inline lpk_error *job_err(llmpack_job *j) { return &j->err; }
/* Starts a job: clears the status and message (not a cancellation). */
void job_start(llmpack_job *j);
/* Ends a job with status rc: ends a stage left open, records rc on the handle
 * (with the status name as message if the job set none) and returns it. */
int job_finish(llmpack_job *j, int rc);
/* Progress: a stage begins (total 0: unknown), moves to done, ends. Each
 * returns LPK_EINTR (message "PATH: cancelled", what names the work) once
 * the job is cancelled, else LPK_OK. */
int job_begin(llmpack_job *j, const char *stage, const char *unit, uint64_t total,
              const char *what);
int job_update(llmpack_job *j, uint64_t done, const char *item, const char *what);
void job_end(llmpack_job *j);
/* LPK_EINTR naming what once cancelled, else LPK_OK. */
int job_check_cancel(llmpack_job *j, const char *what);
/* llmpack_open_input / llmpack_open_model inside a job (no start or finish). */
int job_open_input(llmpack_job *j, const char *path, unsigned flags, lpk_reader **r);
int job_open_model(llmpack_job *j, const char *path, unsigned flags, lpk_reader **r);
/* llmpack_export inside a job (no start or finish); res is not NULL. */
int job_export(llmpack_job *j, const llmpack_export_opts *o, llmpack_export_result *res);
/* A calib_progress_fn (calib/calib.h) over the stage begun on j, in chunks:
 * the total, the token rate as item, and a cancellation point (what names
 * the work). user: a job_chunks. */
typedef struct job_chunks {
    llmpack_job *j;
    const char *what;
    char item[64];
} job_chunks;
int job_chunk_progress(void *user, int done, int total, uint64_t tokens, double seconds);
/* Monotonic seconds. */
double job_now(void);
/* "dir/llama2-20m.q4_k.lpk" -> "llama2-20m.q4_k" (malloc'ed; NULL when out of
 * memory): the general.name a GGUF gets from its container's file name. */
char *job_name_from_path(const char *path);
/* Outputs made in two steps (a container, then a GGUF or a quantized file
 * from it): creates an empty `.BASE.tmp-XXXXXX` beside out (the writers'
 * naming: what a SIGKILL leaves is swept by the next run there), its name in
 * path (n bytes), registered so that the cleanup signals remove it. Write it
 * with LPK_WRITE_FORCE; job_tmp_hold once it is complete (a lock that keeps
 * other runs' sweeps off it); job_tmp_remove on every path out (a path not
 * made here: no-op). At most 20 at a time in a process. */
int job_tmp_beside(const char *out, char *path, size_t n, lpk_error *err);
void job_tmp_hold(const char *path);
void job_tmp_remove(const char *path);
/* A notice, printf-style. */
void job_notice(llmpack_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
