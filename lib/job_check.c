/* The check job: every structural rule and every checksum of a container. */
#include "job_internal.h"

#include <string.h>

int llmpack_check(llmpack_job *j, const llmpack_check_opts *o, llmpack_check_result *res)
{
    llmpack_check_result local;
    llmpack_check_result *s = res ? res : &local;
    memset(s, 0, sizeof *s);
    job_start(j);
    if (!o->path) return job_finish(j, lpk_err(job_err(j), LPK_EINVAL, "check: no file given"));
    lpk_reader *r = NULL;
    int st = job_open_input(j, o->path, 0, &r); /* flags 0: the checksums are verified */
    if (st) return job_finish(j, st);
    s->opened = 1;
    s->kind = lpk_reader_kind(r);
    s->checksums = llmpack_checksums_of(r) == LLMPACK_SUMS_NONE ? LLMPACK_SUMS_NONE
                                                                : LLMPACK_SUMS_VERIFIED;
    s->n_tensors = lpk_reader_n_tensors(r);
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < s->n_tensors; i++) total += lpk_reader_tensor(r, i)->size;
    st = job_begin(j, "checking", "B", total, o->path);
    for (size_t i = 0; i < s->n_tensors && !st; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        const void *data;
        st = lpk_reader_tensor_data(r, i, &data, job_err(j));
        if (st) {
            s->failed = 1;
            memcpy(s->tensor, t->name, strlen(t->name) + 1);
            s->offset = t->offset;
        } else {
            s->tensors_checked++;
        }
        done += t->size;
        lpk_reader_release_tensor(r, i);
        if (!st) st = job_update(j, done, t->name, o->path);
    }
    lpk_reader_close(r);
    return job_finish(j, st);
}
