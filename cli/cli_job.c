/* The command line's side of a job (lib/jobs.h): progress on stderr and
 * notices as lines, errors printed with the command's name. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

/* "gptq blocks" (GPTQ's block passes, reported inside the open quantize stage):
 * a display of its own, with its ETA, that starts at its first update. */
static void nested_progress(cli_job *cj, const llmpack_progress *p)
{
    if (p->event == LLMPACK_PROGRESS_UPDATE) {
        if (!cj->inner_started) cli_progress_start(&cj->inner, p->stage, p->unit, 0, cj->quiet);
        cj->inner_started = 1;
        cj->inner.total = p->total;
        cli_progress_update(&cj->inner, p->done, p->item);
    } else if (p->event == LLMPACK_PROGRESS_END && cj->inner_started) {
        cli_progress_end(&cj->inner);
        cj->inner_started = 0;
    }
}

void cli_job_progress(cli_job *cj, const llmpack_progress *p)
{
    if (!strcmp(p->stage, "gptq blocks")) {
        nested_progress(cj, p);
        return;
    }
    switch (p->event) {
    case LLMPACK_PROGRESS_BEGIN:
        if (strcmp(p->stage, cj->cmd) && !cj->stage_label)
            snprintf(cj->label, sizeof cj->label, "%s: %s", cj->cmd, p->stage);
        else
            snprintf(cj->label, sizeof cj->label, "%s", p->stage);
        cli_progress_start(&cj->pr, cj->label, p->unit, p->total, cj->quiet);
        break;
    case LLMPACK_PROGRESS_UPDATE:
        cj->pr.total = p->total;
        cli_progress_update(&cj->pr, p->done, p->item);
        break;
    case LLMPACK_PROGRESS_END: cli_progress_end(&cj->pr); break;
    }
}

static void on_progress(void *user, const llmpack_progress *p) { cli_job_progress(user, p); }

static void on_notice(void *user, const char *msg)
{
    cli_job *cj = user;
    if (!cj->quiet) fprintf(stderr, "llmpack %s: %s\n", cj->cmd, msg);
}

int cli_job_init(cli_job *cj, const char *cmd, int quiet)
{
    memset(cj, 0, sizeof *cj);
    cj->cmd = cmd;
    cj->quiet = quiet;
    if (!(cj->j = llmpack_job_new())) return LPK_ENOMEM;
    llmpack_job_set_progress(cj->j, on_progress, cj);
    llmpack_job_set_notice(cj->j, on_notice, cj);
    return LPK_OK;
}

void cli_job_free(cli_job *cj)
{
    llmpack_job_free(cj->j);
    cj->j = NULL;
}

int cli_job_fail(const cli_job *cj)
{
    cli_print_error(cj->cmd, llmpack_job_lpk_error(cj->j));
    return cli_exit_for(llmpack_job_status(cj->j));
}

/* Runs fn's job on a fresh handle and hands its error on in err. */
static int take_error(cli_job *cj, int st, lpk_error *err)
{
    if (st) lpk_err(err, st, "%s", llmpack_job_error(cj->j));
    cli_job_free(cj);
    return st;
}

int cli_open_input(const char *path, unsigned flags, lpk_reader **r, lpk_error *err)
{
    cli_job cj;
    *r = NULL;
    if (cli_job_init(&cj, "", 1)) return lpk_err(err, LPK_ENOMEM, "out of memory");
    return take_error(&cj, llmpack_open_input(cj.j, path, flags, r), err);
}

int cli_open_model(const char *cmd, const char *path, unsigned flags, int quiet, lpk_reader **r,
                   lpk_error *err)
{
    cli_job cj;
    *r = NULL;
    if (cli_job_init(&cj, cmd, quiet)) return lpk_err(err, LPK_ENOMEM, "out of memory");
    return take_error(&cj, llmpack_open_model(cj.j, path, flags, r), err);
}
