/* The jobs API (lib/jobs.h) as a program using the library sees it: progress
 * events in order and adding up to what was written, cancellation from the
 * progress callback or before the job (LPK_EINTR, nothing left at the
 * output), the error and status on the handle, a handle reused after reset,
 * notices. On the demo model (examples/), so it runs without ../shared. */
#include "tutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../lib/jobs.h"
#include "../convert/convert.h"

static const char *const demo = "examples/stories260K";

/* What the callbacks saw. */
typedef struct seen {
    int begins, ends, updates, open;  /* open: a stage begun and not ended */
    int cancel_at;                    /* cancel at this update (0: never) */
    llmpack_job *j;
    uint64_t last_done, last_total;
    char stages[256];                 /* "stage1,stage2," */
    char notices[2048];
} seen;

static void on_progress(void *user, const llmpack_progress *p)
{
    seen *s = user;
    switch (p->event) {
    case LLMPACK_PROGRESS_BEGIN:
        if (s->open) fail_msg("stage %s begun inside another", p->stage);
        s->open = 1;
        s->begins++;
        s->last_done = 0;
        strncat(s->stages, p->stage, sizeof s->stages - strlen(s->stages) - 2);
        strcat(s->stages, ",");
        break;
    case LLMPACK_PROGRESS_UPDATE:
        if (!s->open) fail_msg("update outside a stage");
        if (p->done < s->last_done) fail_msg("progress went back: %llu after %llu",
                                             (unsigned long long)p->done,
                                             (unsigned long long)s->last_done);
        if (p->total && p->done > p->total) fail_msg("done %llu over total %llu",
                                                     (unsigned long long)p->done,
                                                     (unsigned long long)p->total);
        s->last_done = p->done;
        s->last_total = p->total;
        if (++s->updates == s->cancel_at) llmpack_job_cancel(s->j);
        break;
    case LLMPACK_PROGRESS_END:
        if (!s->open) fail_msg("end outside a stage");
        s->open = 0;
        s->ends++;
        break;
    default: fail_msg("unknown progress event %d", p->event);
    }
}

static void on_notice(void *user, const char *msg)
{
    seen *s = user;
    strncat(s->notices, msg, sizeof s->notices - strlen(s->notices) - 2);
    strcat(s->notices, "\n");
}

static llmpack_job *new_job(seen *s)
{
    memset(s, 0, sizeof *s);
    llmpack_job *j = llmpack_job_new();
    assert_non_null(j);
    s->j = j;
    llmpack_job_set_progress(j, on_progress, s);
    llmpack_job_set_notice(j, on_notice, s);
    return j;
}

/* The demo model as an f16 container in dir (through convert/'s library call). */
static char *demo_container(const char *dir)
{
    char *path = tu_fmt("%s/demo.lpk", dir);
    lpk_error err = {0};
    cv_options o = {.src = demo, .out = path};
    if (cv_convert(&o, NULL, &err)) fail_msg("convert %s: %s", demo, err.msg);
    return path;
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    if (stat(path, &sb)) fail_msg("%s: missing", path);
    return (uint64_t)sb.st_size;
}

/* export to GGUF and to a container: progress adds up to the tensor bytes,
 * the result describes the file, the container copy has the same tensors. */
static void test_export(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir);
    char *gguf = tu_fmt("%s/demo.gguf", dir), *copy = tu_fmt("%s/copy.lpk", dir);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_export_opts o = {.in = in, .out = gguf, .format = LLMPACK_FMT_GGUF};
    llmpack_export_result res;
    assert_int_equal(llmpack_export(j, &o, &res), LPK_OK);
    assert_int_equal(llmpack_job_status(j), LPK_OK);
    assert_string_equal(llmpack_job_error(j), "");
    assert_int_equal(s.begins, 1);
    assert_int_equal(s.ends, 1);
    assert_string_equal(s.stages, "export,");
    assert_true(s.updates >= (int)res.n_tensors);
    assert_true(s.last_total == res.data_bytes && s.last_done == res.data_bytes);
    assert_int_equal(res.file_size, file_size(gguf));

    lpk_reader *r = NULL, *rin = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(gguf, &r, &err), LPK_OK);
    assert_int_equal(lpk_reader_kind(r), LPK_KIND_GGUF);
    assert_int_equal(lpk_reader_n_tensors(r), res.n_tensors);
    /* no general.name in the demo's container: the GGUF takes the file's name */
    assert_int_equal(lpk_reader_open(in, &rin, &err), LPK_OK);
    const char *name = lpk_meta_get_str(lpk_reader_meta(r), "general.name");
    const char *name_in = lpk_meta_get_str(lpk_reader_meta(rin), "general.name");
    assert_non_null(name);
    if (!name_in) assert_string_equal(name, "demo");
    else assert_string_equal(name, name_in);
    lpk_reader_close(r);
    lpk_reader_close(rin);

    /* the same handle runs a second job: a copy with a new name */
    o = (llmpack_export_opts){.in = in, .out = copy, .format = LLMPACK_FMT_LPK,
                              .set_name = "renamed"};
    assert_int_equal(llmpack_export(j, &o, &res), LPK_OK);
    char why[512];
    if (tu_lpk_same_tensors(in, copy, why, sizeof why)) fail_msg("copy differs: %s", why);
    assert_int_equal(lpk_reader_open(copy, &r, &err), LPK_OK);
    assert_string_equal(lpk_meta_get_str(lpk_reader_meta(r), "general.name"), "renamed");
    lpk_reader_close(r);

    /* an existing output without force: LPK_EEXIST on the handle, file kept */
    uint64_t before = file_size(copy);
    assert_int_equal(llmpack_export(j, &o, &res), LPK_EEXIST);
    assert_int_equal(llmpack_job_status(j), LPK_EEXIST);
    assert_non_null(strstr(llmpack_job_error(j), copy));
    assert_int_equal(file_size(copy), before);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(in);
    free(gguf);
    free(copy);
}

/* Cancelled from the progress callback, or before it starts: LPK_EINTR, the
 * message names the output, nothing at it or beside it; after a reset the
 * handle runs the job to the end. */
static void test_export_cancel(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir);
    char *out = tu_fmt("%s/out.gguf", dir);
    seen s;
    llmpack_job *j = new_job(&s);
    s.cancel_at = 2;
    llmpack_export_opts o = {.in = in, .out = out, .format = LLMPACK_FMT_GGUF};
    assert_int_equal(llmpack_export(j, &o, NULL), LPK_EINTR);
    assert_int_equal(llmpack_job_status(j), LPK_EINTR);
    assert_true(llmpack_job_cancelled(j));
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    assert_non_null(strstr(llmpack_job_error(j), out));
    assert_int_equal(s.updates, 2); /* it stopped at the update that cancelled */
    assert_int_equal(s.ends, 1);    /* and closed its stage */
    assert_false(tu_exists(out));
    assert_int_equal(tu_dir_entries(dir, 1), 0);

    /* still cancelled: the next job stops before writing anything */
    s.updates = 0;
    assert_int_equal(llmpack_export(j, &o, NULL), LPK_EINTR);
    assert_false(tu_exists(out));

    llmpack_job_reset(j);
    assert_false(llmpack_job_cancelled(j));
    assert_int_equal(llmpack_job_status(j), LPK_OK);
    s.cancel_at = 0;
    assert_int_equal(llmpack_export(j, &o, NULL), LPK_OK);
    assert_true(tu_exists(out));
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(in);
    free(out);
}

/* Errors are the documented statuses with a message naming the file. */
static void test_errors(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *junk = tu_fmt("%s/junk.lpk", dir), *out = tu_fmt("%s/o.gguf", dir);
    assert_int_equal(tu_write_file(junk, "\x89LPK not really", 15), 0);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_export_opts o = {.in = junk, .out = out, .format = LLMPACK_FMT_GGUF};
    int st = llmpack_export(j, &o, NULL);
    assert_true(st == LPK_ETRUNC || st == LPK_ECORRUPT);
    assert_int_equal(llmpack_job_status(j), st);
    assert_non_null(strstr(llmpack_job_error(j), junk));
    assert_false(tu_exists(out));

    o.in = NULL;
    assert_int_equal(llmpack_export(j, &o, NULL), LPK_EINVAL);
    o.in = junk;
    o.format = 7;
    assert_int_equal(llmpack_export(j, &o, NULL), LPK_EINVAL);

    lpk_reader *r = (lpk_reader *)1;
    assert_int_equal(llmpack_open_input(j, junk, 0, &r), st);
    assert_null(r);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(junk);
    free(out);
}

/* A folder opens as a model: converted in memory, a notice says so, the
 * "converting" stage reports bytes; cancelled, it returns no reader. */
static void test_open_model(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir);
    seen s;
    llmpack_job *j = new_job(&s);
    lpk_reader *r = NULL, *rc = NULL;
    assert_int_equal(llmpack_open_model(j, demo, 0, &r), LPK_OK);
    assert_non_null(r);
    assert_non_null(strstr(s.notices, "into memory"));
    assert_string_equal(s.stages, "converting,");
    assert_true(s.updates > 0 && s.last_done == s.last_total && s.last_total > 0);
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(in, &rc, &err), LPK_OK);
    assert_int_equal(lpk_reader_n_tensors(r), lpk_reader_n_tensors(rc));
    llmpack_model_desc d1, d2;
    llmpack_model_describe(r, &d1);
    llmpack_model_describe(rc, &d2);
    assert_string_equal(d1.type, d2.type);
    assert_int_equal(d1.tensor_bytes, d2.tensor_bytes);
    lpk_reader_close(r);
    lpk_reader_close(rc);

    /* a container opens as itself: no notice, no stage */
    memset(s.notices, 0, sizeof s.notices);
    s.stages[0] = '\0';
    assert_int_equal(llmpack_open_model(j, in, 0, &r), LPK_OK);
    assert_string_equal(s.notices, "");
    assert_string_equal(s.stages, "");
    lpk_reader_close(r);

    s.cancel_at = s.updates + 1;
    r = (lpk_reader *)1;
    assert_int_equal(llmpack_open_model(j, demo, 0, &r), LPK_EINTR);
    assert_null(r);
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export),
        cmocka_unit_test(test_export_cancel),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_open_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
