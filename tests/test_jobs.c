/* The jobs API (lib/jobs.h) as a program using the library sees it: progress
 * events in order and adding up to what was written, cancellation from the
 * progress callback or before the job (LPK_EINTR, nothing left at the
 * output), the error and status on the handle, a handle reused after reset,
 * notices. On the demo model (examples/), so it runs without ../shared. */
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

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

/* ---------------------------------------------------------------- convert */
/* A folder dir/name with n of the demo's files. */
static char *demo_part(const char *dir, const char *name, const char *const *files, size_t n)
{
    char *d = tu_fmt("%s/%s", dir, name);
    if (mkdir(d, 0755)) fail_msg("mkdir %s", d);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *from = tu_fmt("%s/%s", demo, files[i]), *to = tu_fmt("%s/%s", d, files[i]);
        char *data = tu_read_file(from, &len);
        assert_non_null(data);
        assert_int_equal(tu_write_file(to, data, len), 0);
        free(data);
        free(from);
        free(to);
    }
    return d;
}

/* The demo's weights and config, no tokenizer. */
static char *demo_without_tokenizer(const char *dir)
{
    static const char *const files[] = {"config.json", "model.safetensors"};
    return demo_part(dir, "notok", files, 2);
}

/* To a container: one "convert" stage whose bytes add up to the report's,
 * the same bytes as convert/'s own call; a warning as a notice. */
static void test_convert_lpk(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *ref = demo_container(dir), *out = tu_fmt("%s/job.lpk", dir);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_convert_opts o = {.src = demo, .out = out, .format = LLMPACK_FMT_LPK};
    llmpack_convert_result res;
    assert_int_equal(llmpack_convert(j, &o, &res), LPK_OK);
    assert_int_equal(llmpack_job_status(j), LPK_OK);
    assert_string_equal(llmpack_job_error(j), "");
    assert_string_equal(s.stages, "convert,");
    assert_int_equal(s.ends, 1);
    assert_true(s.updates > 1);
    assert_true(s.last_done == res.report.bytes_in && s.last_total == res.report.bytes_in);
    assert_int_equal(res.file_size, file_size(out));
    assert_int_equal(res.report.bytes_out, file_size(out));
    assert_string_equal(res.report.source_format, "hf-safetensors");
    assert_int_equal(res.report.n_tensors, 47);
    assert_string_equal(s.notices, "");
    llmpack_convert_result_free(&res);
    tu_same_bytes(ref, out);

    /* no tokenizer: converted with no_tokenizer, the warning as a notice */
    char *notok = demo_without_tokenizer(dir), *out2 = tu_fmt("%s/notok.lpk", dir);
    o = (llmpack_convert_opts){.src = notok, .out = out2, .format = LLMPACK_FMT_LPK,
                               .no_tokenizer = 1, .type = "q8_0"};
    assert_int_equal(llmpack_convert(j, &o, NULL), LPK_OK);
    assert_non_null(strstr(s.notices, "warning: no tokenizer ("));
    assert_true(tu_exists(out2));
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(ref);
    free(out);
    free(notok);
    free(out2);
}

/* To a GGUF: "convert" then "export", the bytes of `llmpack convert` with the
 * same options (general.name from the output's file name: same name in two
 * folders), no temporary left beside it. */
static void test_convert_gguf(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *cli_dir = tu_fmt("%s/cli", dir);
    char *out = tu_fmt("%s/demo-Q4_K_M.gguf", dir), *cli_out = tu_fmt("%s/demo-Q4_K_M.gguf", cli_dir);
    assert_int_equal(mkdir(cli_dir, 0755), 0);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_convert_opts o = {.src = demo, .out = out, .format = LLMPACK_FMT_GGUF,
                              .type = "q4_k_m", .threads = 2};
    llmpack_convert_result res;
    assert_int_equal(llmpack_convert(j, &o, &res), LPK_OK);
    assert_string_equal(s.stages, "convert,export,");
    assert_int_equal(s.ends, 2);
    assert_int_equal(res.file_size, file_size(out));
    assert_int_equal(res.report.n_by_type[LPK_TYPE_Q5_0], 28); /* rows of 64: no q4_k */
    llmpack_convert_result_free(&res);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    lpk_reader *r = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(out, &r, &err), LPK_OK);
    assert_int_equal(lpk_reader_kind(r), LPK_KIND_GGUF);
    lpk_reader_close(r);

    tu_run_ok("convert %s -o '%s' --type q4_k_m -q", demo, cli_out);
    tu_same_bytes(cli_out, out);

    /* the same handle, an existing output without force: EEXIST, kept */
    uint64_t before = file_size(out);
    assert_int_equal(llmpack_convert(j, &o, NULL), LPK_EEXIST);
    assert_non_null(strstr(llmpack_job_error(j), out));
    assert_int_equal(file_size(out), before);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(cli_dir);
    free(out);
    free(cli_out);
}

/* Cancelled in the conversion (a container, a GGUF) and in a GGUF's export:
 * LPK_EINTR naming the output, the stage closed, nothing at or beside it. */
static void test_convert_cancel(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *lpk = tu_fmt("%s/c.lpk", dir), *gguf = tu_fmt("%s/c.gguf", dir);
    seen s;
    llmpack_job *j = new_job(&s);
    /* a run to the end counts the updates of both stages */
    llmpack_convert_opts o = {.src = demo, .out = gguf, .format = LLMPACK_FMT_GGUF};
    assert_int_equal(llmpack_convert(j, &o, NULL), LPK_OK);
    int all = s.updates;
    assert_int_equal(remove(gguf), 0);

    const struct { const char *out; int fmt, at; } cases[] = {
        {lpk, LLMPACK_FMT_LPK, 2}, {gguf, LLMPACK_FMT_GGUF, 2}, {gguf, LLMPACK_FMT_GGUF, all}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        llmpack_job_reset(j);
        memset(s.stages, 0, sizeof s.stages);
        s.updates = s.begins = s.ends = 0;
        s.cancel_at = cases[k].at;
        o = (llmpack_convert_opts){.src = demo, .out = cases[k].out, .format = cases[k].fmt};
        llmpack_convert_result res;
        assert_int_equal(llmpack_convert(j, &o, &res), LPK_EINTR);
        llmpack_convert_result_free(&res);
        assert_int_equal(llmpack_job_status(j), LPK_EINTR);
        assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
        assert_non_null(strstr(llmpack_job_error(j), cases[k].out));
        assert_int_equal(s.updates, cases[k].at);
        assert_int_equal(s.begins, s.ends);
        assert_string_equal(s.stages, k < 2 ? "convert," : "convert,export,");
        assert_false(tu_exists(cases[k].out));
        assert_int_equal(tu_dir_entries(dir, 0), 0);
    }
    /* cancelled before it starts: nothing written, no stage run to its end */
    s.cancel_at = 0;
    s.updates = 0;
    assert_int_equal(llmpack_convert(j, &o, NULL), LPK_EINTR);
    assert_int_equal(s.updates, 0);
    assert_int_equal(tu_dir_entries(dir, 0), 0);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(lpk);
    free(gguf);
}

/* Bad input and bad options: the documented status, the message naming the
 * file, nothing written. */
static void test_convert_errors(void **state)
{
    (void)state;
    static const char *const files[] = {"model.safetensors", "tokenizer.model"};
    char *dir = tu_tmpdir(), *src = demo_part(dir, "nocfg", files, 2);
    char *out = tu_fmt("%s/o.gguf", dir);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_convert_opts o = {.src = src, .out = out, .format = LLMPACK_FMT_GGUF};
    assert_int_equal(llmpack_convert(j, &o, NULL), LPK_ENOTFOUND);
    assert_int_equal(llmpack_job_status(j), LPK_ENOTFOUND);
    assert_non_null(strstr(llmpack_job_error(j), src));
    assert_non_null(strstr(llmpack_job_error(j), "config.json"));
    assert_false(tu_exists(out));
    assert_int_equal(tu_dir_entries(dir, 1), 0);

    /* the tokenizer missing is an error naming the folder, after the warning */
    char *notok = demo_without_tokenizer(dir);
    o.src = notok;
    assert_int_equal(llmpack_convert(j, &o, NULL), LPK_ENOTFOUND);
    assert_non_null(strstr(llmpack_job_error(j), notok));
    assert_non_null(strstr(s.notices, "warning: no tokenizer"));
    assert_false(tu_exists(out));

    /* options the CLI refuses as usage errors */
    const llmpack_convert_opts bad[] = {
        {.src = demo, .format = LLMPACK_FMT_LPK},
        {.src = demo, .out = out, .format = 9},
        {.src = demo, .out = out, .format = LLMPACK_FMT_LPK, .pure = 1},
        {.src = demo, .out = out, .format = LLMPACK_FMT_GGUF, .no_tokenizer = 1},
        {.src = demo, .out = out, .format = LLMPACK_FMT_LPK, .type = "q3_x"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        assert_int_equal(llmpack_convert(j, &bad[k], NULL), LPK_EINVAL);
        assert_int_equal(llmpack_job_status(j), LPK_EINVAL);
        assert_true(strlen(llmpack_job_error(j)) > 0);
    }
    assert_false(tu_exists(out));
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(src);
    free(out);
    free(notok);
}

/* on_progress without the "gptq blocks" events the quantize stage holds. */
static void on_outer_progress(void *user, const llmpack_progress *p)
{
    if (strcmp(p->stage, "gptq blocks")) on_progress(user, p);
}

/* The quantize step (GPTQ): the bytes of `llmpack convert --method gptq`,
 * quantize's stages after "convert", its report in the result; cancelled in
 * it, nothing at or beside the output. */
static void test_convert_gptq(void **state)
{
    (void)state;
    const char *text = "examples/TinyStories-valid-sample.txt";
    char *dir = tu_tmpdir(), *cli_dir = tu_fmt("%s/cli", dir);
    char *out = tu_fmt("%s/g.gguf", dir), *cli_out = tu_fmt("%s/g.gguf", cli_dir);
    assert_int_equal(mkdir(cli_dir, 0755), 0);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_job_set_progress(j, on_outer_progress, &s);
    llmpack_quantize_opts qo;
    llmpack_quantize_opts_init(&qo);
    qo.gptq = 1;
    qo.calib_text = text;
    qo.chunks = 2;
    llmpack_convert_opts o = {.src = demo, .out = out, .format = LLMPACK_FMT_GGUF,
                              .type = "q4_0", .quantize = &qo};
    llmpack_convert_result res;
    assert_int_equal(llmpack_convert(j, &o, &res), LPK_OK);
    assert_non_null(res.quantize);
    assert_int_equal(res.quantize->n_out, 1);
    assert_true(res.quantize->gptq);
    assert_int_equal(res.file_size, file_size(out));
    assert_int_equal(strncmp(s.stages, "convert,", 8), 0);
    assert_non_null(strstr(s.stages, ",quantize,"));
    assert_non_null(strstr(s.stages, ",export,"));
    assert_int_equal(s.begins, s.ends);
    llmpack_convert_result_free(&res);
    assert_null(res.quantize);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    tu_run_ok("convert %s -o '%s' --type q4_0 --method gptq --calib %s --chunks 2 -q", demo,
              cli_out, text);
    tu_same_bytes(cli_out, out);

    /* cancelled in the quantize step */
    assert_int_equal(remove(out), 0);
    int all = s.updates;
    s.updates = s.begins = s.ends = 0;
    s.cancel_at = all - 1;
    assert_int_equal(llmpack_convert(j, &o, &res), LPK_EINTR);
    llmpack_convert_result_free(&res);
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    assert_int_equal(s.begins, s.ends);
    assert_false(tu_exists(out));
    assert_int_equal(tu_dir_entries(dir, 1), 0);

    /* a quantize step needs a type */
    llmpack_job_reset(j);
    o.type = NULL;
    assert_int_equal(llmpack_convert(j, &o, NULL), LPK_EINVAL);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(cli_dir);
    free(out);
    free(cli_out);
}

/* ---------------------------------------------------------------- tokenize, generate */
/* The same tokenizer from a checkpoint folder, its container and its
 * tokenizer file; a file that is none of them is an error naming it. */
static void test_open_tokenizer(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir);
    char *tok_file = tu_fmt("%s/tokenizer.model", demo), *junk = tu_fmt("%s/junk.txt", dir);
    const char *paths[] = {demo, in, tok_file};
    seen s;
    llmpack_job *j = new_job(&s);
    int32_t *first = NULL;
    size_t n_first = 0;
    for (size_t k = 0; k < 3; k++) {
        tok_tokenizer *tok = NULL;
        assert_int_equal(llmpack_open_tokenizer(j, paths[k], &tok), LPK_OK);
        int32_t *ids = NULL;
        size_t n = 0;
        lpk_error err = {0};
        assert_int_equal(tok_encode(tok, "Once upon a time", 16, 1, 0, &ids, &n, &err), LPK_OK);
        assert_true(n > 2);
        if (!first) {
            first = ids;
            n_first = n;
        } else {
            assert_int_equal(n, n_first);
            assert_memory_equal(ids, first, n * sizeof *ids);
            free(ids);
        }
        tok_tokenizer_free(tok);
    }
    free(first);
    assert_non_null(strstr(s.notices, "into memory")); /* the folder was converted */

    assert_int_equal(tu_write_file(junk, "not a tokenizer\n", 16), 0);
    tok_tokenizer *tok = (tok_tokenizer *)1;
    int st = llmpack_open_tokenizer(j, junk, &tok);
    assert_true(st != LPK_OK);
    assert_null(tok);
    assert_int_equal(llmpack_job_status(j), st);
    assert_non_null(strstr(llmpack_job_error(j), junk));
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(in);
    free(tok_file);
    free(junk);
}

/* What the token callback saw, and when it stops the run. */
typedef struct tokens_seen {
    int32_t ids[64];
    int n, stop_at;
    char text[1024];
    llmpack_job *cancel;  /* cancel this handle at stop_at instead of returning 1 */
} tokens_seen;

static int on_token(void *user, int32_t id, const char *piece, size_t len)
{
    tokens_seen *t = user;
    if (t->n < 64) t->ids[t->n] = id;
    t->n++;
    strncat(t->text, piece, len < sizeof t->text - strlen(t->text) - 1
                                ? len : sizeof t->text - strlen(t->text) - 1);
    if (t->n != t->stop_at) return 0;
    if (!t->cancel) return 1;
    llmpack_job_cancel(t->cancel);
    return 0;
}

/* Greedy generation gives the tokens of `llmpack generate --json`; the
 * callback or a cancel stops it with LPK_EINTR; errors name the file. */
static void test_generate(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir);
    seen s;
    llmpack_job *j = new_job(&s);
    tokens_seen t = {0};
    llmpack_generate_opts o = {.model = in, .prompt = "Once upon a time", .n_predict = 24,
                               .on_token = on_token, .user = &t};
    llmpack_generate_result res;
    assert_int_equal(llmpack_generate(j, &o, &res), LPK_OK);
    assert_int_equal(res.n_generated, 24);
    assert_int_equal(t.n, 24);
    assert_true(res.n_prompt > 1);
    assert_true(strlen(t.text) > 24);
    assert_string_equal(s.stages, ""); /* a container: no stage */

    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "generate '%s' -p 'Once upon a time' -n 24 --json", in), 0);
    char want[1024] = "\"tokens\": [";
    for (int i = 0; i < t.n; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s\n    %d", i ? "," : "",
                 t.ids[i]);
    assert_non_null(strstr(out, want));
    free(out);

    /* the same seed samples the same tokens; the callback stops the run */
    tokens_seen a = {0}, b = {.stop_at = 5};
    o.temp = 0.9;
    o.seed = 3;
    o.user = &a;
    assert_int_equal(llmpack_generate(j, &o, NULL), LPK_OK);
    o.user = &b;
    assert_int_equal(llmpack_generate(j, &o, &res), LPK_EINTR);
    assert_int_equal(b.n, 5);
    assert_int_equal(res.n_generated, 5);
    assert_memory_equal(a.ids, b.ids, 5 * sizeof a.ids[0]);
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));

    /* cancelled from the callback: seen before the next token */
    tokens_seen c = {.stop_at = 3, .cancel = j};
    o.user = &c;
    assert_int_equal(llmpack_generate(j, &o, NULL), LPK_EINTR);
    assert_int_equal(c.n, 3);
    llmpack_job_reset(j);

    /* a checkpoint folder is converted first ("converting"); bad inputs */
    o = (llmpack_generate_opts){.model = demo, .prompt = "Once", .n_predict = 2};
    assert_int_equal(llmpack_generate(j, &o, &res), LPK_OK);
    assert_string_equal(s.stages, "converting,");
    char *junk = tu_fmt("%s/junk.lpk", dir);
    assert_int_equal(tu_write_file(junk, "\x89LPK not really", 15), 0);
    o.model = junk;
    int st = llmpack_generate(j, &o, NULL);
    assert_true(st == LPK_ETRUNC || st == LPK_ECORRUPT);
    assert_non_null(strstr(llmpack_job_error(j), junk));
    o.model = in;
    o.n_predict = -1;
    assert_int_equal(llmpack_generate(j, &o, NULL), LPK_EINVAL);
    o.n_predict = 1;
    o.prompt = NULL;
    assert_int_equal(llmpack_generate(j, &o, NULL), LPK_EINVAL);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(in);
    free(junk);
}

/* ---------------------------------------------------------------- verify, check, info */
static const char *const demo_text = "examples/TinyStories-valid-sample.txt";

/* The demo model as a q8_0 container in dir. */
static char *demo_q8(const char *dir)
{
    char *path = tu_fmt("%s/demo.q8_0.lpk", dir);
    lpk_error err = {0};
    cv_options o = {.src = demo, .out = path, .type = "q8_0"};
    if (cv_convert(&o, NULL, &err)) fail_msg("convert %s: %s", demo, err.msg);
    return path;
}

/* What verify's callbacks saw of the evaluation. */
typedef struct vseen {
    seen s;
    uint64_t ctx;
    int chunk_ends, items;       /* updates at a chunk's end; of them with "ppl " items */
    int cancel_chunk;            /* cancel at the end of this chunk (0: never) */
    int cancel_block;            /* cancel at this update inside a chunk (0: never) */
    int blocks;
} vseen;

static void on_verify_progress(void *user, const llmpack_progress *p)
{
    vseen *v = user;
    on_progress(&v->s, p);
    if (p->event != LLMPACK_PROGRESS_UPDATE || strcmp(p->stage, "evaluating")) return;
    assert_string_equal(p->unit, "tokens");
    if (p->done % v->ctx) {
        if (++v->blocks == v->cancel_block) llmpack_job_cancel(v->s.j);
        return;
    }
    v->chunk_ends++;
    v->items += p->item && !strncmp(p->item, "ppl ", 4);
    if (v->chunk_ends == v->cancel_chunk) llmpack_job_cancel(v->s.j);
}

static llmpack_job *new_verify_job(vseen *v, uint64_t ctx)
{
    llmpack_job *j = new_job(&v->s);
    v->ctx = ctx;
    v->chunk_ends = v->items = v->cancel_chunk = v->cancel_block = v->blocks = 0;
    llmpack_job_set_progress(j, on_verify_progress, v);
    return j;
}

/* A number of a --json document: results[0].key, or the top-level path. */
static double json_num(json_t *doc, const char *key)
{
    json_t *r = json_array_get(json_object_get(doc, "results"), 0);
    json_t *v = json_object_get(r, key);
    if (!json_is_number(v)) fail_msg("--json has no number %s", key);
    return json_number_value(v);
}

/* llmpack_verify of a q8_0 against the f16 original: the numbers are what
 * `llmpack verify --json` prints for the same inputs; one "evaluating" stage
 * whose chunk ends carry the statistics; the result describes the inputs; a
 * limit exceeded is a result, not an error. */
static void test_verify(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *f16 = demo_container(dir), *q8 = demo_q8(dir);
    vseen v;
    llmpack_job *j = new_verify_job(&v, 128);
    const char *models[] = {q8};
    llmpack_verify_opts o = {.models = models, .n_models = 1, .ref = f16, .text = demo_text,
                             .ctx = 128, .max_chunks = 3, .limits = LLMPACK_MAX_KLD,
                             .max_kld = 0, .tensor_errors = 1, .batch = 1};
    llmpack_verify_result res;
    assert_int_equal(llmpack_verify(j, &o, &res), LPK_OK);
    assert_int_equal(llmpack_job_status(j), LPK_OK);
    assert_string_equal(v.s.stages, "evaluating,");
    assert_int_equal(v.s.ends, 1);
    assert_int_equal(v.chunk_ends, 3);
    assert_int_equal(v.items, 3);
    assert_true(v.blocks > 3);  /* inside the chunks too */
    assert_int_equal(v.s.last_done, 3 * 128);
    assert_int_equal(v.s.last_total, 3 * 128);
    assert_string_equal(v.s.notices, "");

    assert_int_equal(res.n_models, 1);
    assert_int_equal(res.chunks, 3);
    assert_int_equal(res.n_chunks, 3);
    assert_int_equal(res.tokens_scored, 3 * (128 - 1 - 64));
    assert_true(res.measured && res.text_read && res.tokenized);
    size_t n_text = 0;
    free(tu_read_file(demo_text, &n_text));
    assert_int_equal(res.text_bytes, n_text);
    const llmpack_verify_model *m = &res.models[0];
    assert_true(m->opened && m->loaded && res.ref.opened && res.ref.loaded);
    assert_string_equal(m->desc.type, "Q8_0");
    assert_int_equal(m->checksums, LLMPACK_SUMS_VERIFIED);
    assert_int_equal(m->trained_ctx, 512);
    assert_int_equal(m->ppl.chunks, 3);
    assert_int_equal(m->n_kld, res.tokens_scored);
    assert_non_null(m->chunks);
    assert_true(m->te && m->n_te > 0);
    /* max_kld 0: exceeded, and the job still succeeded */
    assert_int_equal(m->exceeded, LLMPACK_MAX_KLD);
    assert_true(res.limit_exceeded);

    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' --text '%s' --ctx 128 --chunks 3 "
                                "--max-kld 0 --json", q8, f16, demo_text), 4);
    json_error_t je;
    json_t *doc = json_loads(out, 0, &je);
    if (!doc) fail_msg("verify --json: %s\n%s", je.text, out);
    tu_near("ppl", m->ppl.ppl, json_num(doc, "ppl"), 1e-9);
    tu_near("ref_ppl", m->ppl.ref_ppl, json_num(doc, "ref_ppl"), 1e-9);
    tu_near("kld_mean", m->ppl.kld_mean, json_num(doc, "kld_mean"), 1e-9);
    tu_near("kld_p99", m->ppl.kld_p99, json_num(doc, "kld_p99"), 1e-9);
    tu_near("top1", m->ppl.top1_agreement, json_num(doc, "top1_agreement"), 1e-9);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "text"), "tokens")),
                     res.n_tokens);
    json_decref(doc);
    free(out);

    /* the default batch (2 chunks a forward pass, then 1): the same numbers bit
     * for bit, a chunk-end update per forward pass */
    llmpack_verify_result r2;
    j = (llmpack_job_free(j), new_verify_job(&v, 128));
    o.batch = 0;
    assert_int_equal(llmpack_verify(j, &o, &r2), LPK_OK);
    assert_int_equal(v.items, 2);
    assert_int_equal(v.s.last_done, 3 * 128);
    const llmpack_verify_model *m2 = &r2.models[0];
    assert_int_equal(m2->ppl.chunks, 3);
    assert_true(m2->ppl.ppl == m->ppl.ppl && m2->ppl.ref_ppl == m->ppl.ref_ppl);
    assert_true(m2->ppl.kld_mean == m->ppl.kld_mean && m2->ppl.kld_p99 == m->ppl.kld_p99);
    assert_true(m2->ppl.top1_agreement == m->ppl.top1_agreement);
    assert_int_equal(m2->n_kld, m->n_kld);
    assert_memory_equal(m2->kld, m->kld, m->n_kld * sizeof *m->kld);
    assert_memory_equal(m2->chunks, m->chunks, 3 * sizeof *m->chunks);
    llmpack_verify_result_free(&r2);
    llmpack_verify_result_free(&res);

    /* a checkpoint as the model: converted first; a context above the trained
     * one is measured, with a warning */
    j = (llmpack_job_free(j), new_verify_job(&v, 1024));
    models[0] = demo;
    o = (llmpack_verify_opts){.models = models, .n_models = 1, .ref = f16, .text = demo_text,
                              .ctx = 1024, .max_chunks = 1};
    assert_int_equal(llmpack_verify(j, &o, &res), LPK_OK);
    assert_string_equal(v.s.stages, "converting,evaluating,");
    assert_non_null(strstr(v.s.notices, "into memory"));
    assert_non_null(strstr(v.s.notices, "warning: --ctx 1024 is above the 512 tokens"));
    assert_int_equal(res.chunks, 1);
    /* the same weights: no divergence */
    assert_true(res.models[0].ppl.kld_max < 1e-9);
    assert_int_equal(res.models[0].exceeded, 0);
    llmpack_verify_result_free(&res);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(f16);
    free(q8);
}

/* Cancelled at the end of the first chunk, or inside it: LPK_EINTR on the
 * handle, the stage closed, nothing measured; the inputs' part of the result
 * is still there. */
static void test_verify_cancel(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *f16 = demo_container(dir);
    vseen v;
    llmpack_job *j = new_verify_job(&v, 64);
    v.cancel_chunk = 1;
    const char *models[] = {f16};
    llmpack_verify_opts o = {.models = models, .n_models = 1, .text = demo_text, .ctx = 64,
                             .max_chunks = 5, .batch = 1};
    llmpack_verify_result res;
    assert_int_equal(llmpack_verify(j, &o, &res), LPK_EINTR);
    assert_int_equal(llmpack_job_status(j), LPK_EINTR);
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    assert_int_equal(v.chunk_ends, 1);
    assert_int_equal(v.s.ends, 1);
    assert_int_equal(v.s.open, 0);
    assert_false(res.measured);
    assert_true(res.models[0].opened && res.tokenized);
    assert_int_equal(res.n_chunks, 5);
    llmpack_verify_result_free(&res);

    /* inside a chunk: the forward pass stops at the block that cancelled */
    llmpack_job_reset(j);
    v.cancel_chunk = 0;
    v.cancel_block = 2;
    v.blocks = v.chunk_ends = 0;
    assert_int_equal(llmpack_verify(j, &o, &res), LPK_EINTR);
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    assert_int_equal(v.blocks, 2);
    assert_int_equal(v.chunk_ends, 0);
    assert_false(res.measured);
    llmpack_verify_result_free(&res);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(f16);
}

/* Errors on the handle, naming the file; the result says how far it got. */
static void test_verify_errors(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *f16 = demo_container(dir);
    char *none = tu_fmt("%s/none.txt", dir), *shorty = tu_fmt("%s/short.txt", dir);
    assert_int_equal(tu_write_file(shorty, "Once upon a time", 16), 0);
    vseen v;
    llmpack_job *j = new_verify_job(&v, 128);
    const char *models[] = {f16};
    llmpack_verify_opts o = {.models = models, .n_models = 1, .text = none, .ctx = 128};
    llmpack_verify_result res;
    assert_int_equal(llmpack_verify(j, &o, &res), LPK_EIO);
    assert_non_null(strstr(llmpack_job_error(j), none));
    assert_false(res.text_read);
    assert_false(res.models[0].opened);
    llmpack_verify_result_free(&res);

    o.text = shorty; /* fewer tokens than one chunk */
    assert_int_equal(llmpack_verify(j, &o, &res), LPK_EINVAL);
    assert_non_null(strstr(llmpack_job_error(j), "fewer than one chunk"));
    assert_true(res.text_read && res.tokenized && res.models[0].loaded);
    assert_false(res.measured);
    llmpack_verify_result_free(&res);

    o.text = demo_text; /* limits without a reference */
    o.limits = LLMPACK_MAX_KLD;
    assert_int_equal(llmpack_verify(j, &o, &res), LPK_EINVAL);
    llmpack_verify_result_free(&res);

    /* a vocabulary unlike the reference's (the demo has 512 tokens, llama2 32000) */
    const char *big = tu_shared("gguf/llama2-20m-Q8_0.gguf");
    if (big) {
        models[0] = big;
        o = (llmpack_verify_opts){.models = models, .n_models = 1, .ref = f16,
                                  .text = demo_text, .ctx = 128, .max_chunks = 1};
        assert_int_equal(llmpack_verify(j, &o, &res), LPK_EINVAL);
        assert_non_null(strstr(llmpack_job_error(j), "vocabulary"));
        assert_non_null(strstr(llmpack_job_error(j), big));
        assert_int_equal(res.models[0].checksums, LLMPACK_SUMS_NONE);
        assert_int_equal(v.s.begins, 0);
        llmpack_verify_result_free(&res);
    } else {
        print_message("note: ../shared/gguf/llama2-20m-Q8_0.gguf not found: vocabulary "
                      "mismatch not checked\n");
    }
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(f16);
    free(none);
    free(shorty);
}

/* check: every tensor's bytes, then one byte flipped in a tensor:
 * LPK_ECHECKSUM naming it, the tensors before it counted intact. */
static void test_check(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *f16 = demo_container(dir), *bad = tu_fmt("%s/bad.lpk", dir);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_check_opts o = {.path = f16};
    llmpack_check_result res;
    assert_int_equal(llmpack_check(j, &o, &res), LPK_OK);
    lpk_reader *r = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(f16, &r, &err), LPK_OK);
    size_t n = lpk_reader_n_tensors(r), victim = n / 2;
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += lpk_reader_tensor(r, i)->size;
    const lpk_tensor *t = lpk_reader_tensor(r, victim);
    char name[LPK_MAX_NAME + 1];
    memcpy(name, t->name, strlen(t->name) + 1);
    uint64_t off = t->offset;
    lpk_reader_close(r);
    assert_true(res.opened);
    assert_int_equal(res.kind, LPK_KIND_LPK);
    assert_int_equal(res.checksums, LLMPACK_SUMS_VERIFIED);
    assert_int_equal(res.n_tensors, n);
    assert_int_equal(res.tensors_checked, n);
    assert_false(res.failed);
    assert_string_equal(s.stages, "checking,");
    assert_true(s.last_done == bytes && s.last_total == bytes);

    size_t len = 0;
    char *b = tu_read_file(f16, &len);
    b[off + 3] ^= 0x10;
    assert_int_equal(tu_write_file(bad, b, len), 0);
    free(b);
    o.path = bad;
    assert_int_equal(llmpack_check(j, &o, &res), LPK_ECHECKSUM);
    assert_int_equal(llmpack_job_status(j), LPK_ECHECKSUM);
    assert_non_null(strstr(llmpack_job_error(j), name));
    assert_non_null(strstr(llmpack_job_error(j), bad));
    assert_true(res.failed);
    assert_string_equal(res.tensor, name);
    assert_int_equal(res.offset, off);
    assert_int_equal(res.tensors_checked, victim);

    /* cancelled at the first tensor */
    o.path = f16;
    s.cancel_at = 1;
    s.updates = 0;
    assert_int_equal(llmpack_check(j, &o, &res), LPK_EINTR);
    assert_int_equal(res.tensors_checked, 1);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(f16);
    free(bad);
}

/* info: the description agrees with what lpk_reader says of the file. */
static void test_info(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *q8 = demo_q8(dir), *junk = tu_fmt("%s/junk.lpk", dir);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_info_opts o = {.path = q8};
    llmpack_info_result in;
    assert_int_equal(llmpack_info(j, &o, &in), LPK_OK);
    lpk_reader *r = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(q8, &r, &err), LPK_OK);
    const lpk_meta *m = lpk_reader_meta(r);
    assert_int_equal(in.kind, lpk_reader_kind(r));
    assert_int_equal(in.version, lpk_reader_version(r));
    assert_int_equal(in.checksums, LLMPACK_SUMS_VERIFIED);
    assert_int_equal(in.n_tensors, lpk_reader_n_tensors(r));
    llmpack_model_desc d;
    llmpack_model_describe(r, &d);
    assert_string_equal(in.desc.type, d.type);
    assert_int_equal(in.desc.tensor_bytes, d.tensor_bytes);
    assert_int_equal(in.desc.file_size, lpk_reader_file_size(r));
    uint64_t counted = 0, q8_count = 0;
    for (int t = 0; t < LPK_TYPE_COUNT; t++) counted += in.type_count[t];
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++)
        q8_count += lpk_reader_tensor(r, i)->type == LPK_TYPE_Q8_0;
    assert_int_equal(counted, lpk_reader_n_tensors(r));
    assert_int_equal(in.type_count[LPK_TYPE_Q8_0], q8_count);
    assert_true(q8_count > 0);
    assert_string_equal(in.arch, lpk_meta_get_str(m, "general.architecture"));
    assert_string_equal(in.arch_prefix, "llama.");
    assert_int_equal(in.tied_output, lpk_reader_find(r, "output.weight") == NULL);
    uint32_t bos;
    assert_int_equal(lpk_meta_get_u32(m, "tokenizer.ggml.bos_token_id", &bos), LPK_OK);
    assert_string_equal(in.special[0].name, "bos");
    assert_true(in.special[0].has && in.special[0].has_piece);
    assert_int_equal(in.special[0].id, bos);
    assert_non_null(in.context_length);
    assert_ptr_equal(in.context_length,
                     lpk_meta_find(lpk_reader_meta(in.r), "llama.context_length"));
    lpk_reader_close(r);
    llmpack_info_result_free(&in);
    assert_null(in.r);

    assert_int_equal(tu_write_file(junk, "\x89LPK not really", 15), 0);
    o.path = junk;
    int st = llmpack_info(j, &o, &in);
    assert_true(st == LPK_ETRUNC || st == LPK_ECORRUPT);
    assert_non_null(strstr(llmpack_job_error(j), junk));
    assert_null(in.r);
    llmpack_info_result_free(&in);
    assert_string_equal(s.stages, "");
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(q8);
    free(junk);
}

/* ---------------------------------------------------------------- quantize */
#define TEXT "examples/TinyStories-valid-sample.txt"

/* The demo container's outputs: a Q4_K_M container and a Q8_0 GGUF. */
static void two_outs(llmpack_quantize_out *outs, const char *dir)
{
    memset(outs, 0, 2 * sizeof *outs);
    outs[0] = (llmpack_quantize_out){tu_fmt("%s/a.lpk", dir), "Q4_K_M", LLMPACK_FMT_LPK};
    outs[1] = (llmpack_quantize_out){tu_fmt("%s/b.gguf", dir), "q8_0", LLMPACK_FMT_GGUF};
}

/* A handle on s, and the options' defaults with input in. */
static llmpack_job *quantize_job(seen *s, llmpack_quantize_opts *o, const char *in)
{
    llmpack_quantize_opts_init(o);
    o->in = in;
    return new_job(s);
}

static void free_outs(llmpack_quantize_out *outs, size_t n)
{
    for (size_t k = 0; k < n; k++) free((char *)outs[k].path);
}

/* Two outputs from one read: each file the bytes of its run alone; the
 * stages in order, the quantize stage adding up to the input's tensor bytes;
 * the report describes both. */
static void test_quantize(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir);
    char *multi = tu_fmt("%s/multi", dir), *single = tu_fmt("%s/single", dir);
    assert_int_equal(mkdir(multi, 0700), 0);
    assert_int_equal(mkdir(single, 0700), 0);
    llmpack_quantize_out m[2], one[2];
    two_outs(m, multi);
    two_outs(one, single);
    llmpack_quantize_opts o;
    seen s;
    llmpack_job *j = quantize_job(&s, &o, in);
    llmpack_quantize_report rep;
    assert_int_equal(llmpack_quantize(j, &o, m, 2, &rep), LPK_OK);
    assert_int_equal(llmpack_job_status(j), LPK_OK);
    assert_string_equal(s.stages, "quantize,export,");
    assert_int_equal(s.begins, 2);
    assert_int_equal(s.ends, 2);
    assert_int_equal(rep.n_out, 2);
    assert_true(rep.n_tensors > 0 && rep.in_bytes > 0);
    assert_false(rep.gptq);
    assert_null(rep.imatrix);
    for (size_t k = 0; k < 2; k++) {
        assert_true(rep.outputs[k].written);
        assert_int_equal(rep.outputs[k].file_size, file_size(m[k].path));
        assert_non_null(rep.outputs[k].tensors);
    }
    /* the Q8_0 output's matrices are q8_0 but those whose rows do not fit it
     * (ffn_down's 172 values: f16, and the plan says why); 1-D tensors stay f32 */
    for (size_t i = 0; i < rep.n_tensors; i++) {
        const llmpack_quantize_tensor *t = &rep.outputs[1].tensors[i];
        if (t->in.n_dims == 1) {
            assert_int_equal(t->type, LPK_TYPE_F32);
        } else if (t->fallback_from >= 0) {
            assert_int_equal(t->fallback_from, LPK_TYPE_Q8_0);
            assert_int_equal(t->type, LPK_TYPE_F16);
            assert_non_null(strstr(t->note, "rows of 172 values"));
        } else {
            assert_int_equal(t->type, LPK_TYPE_Q8_0);
        }
        assert_true(t->in.n_dims == 1 || t->has_err);
    }
    uint64_t in_bytes = rep.in_bytes;
    llmpack_quantize_report_free(&rep);
    llmpack_quantize_report_free(&rep); /* freed twice: nothing */
    assert_int_equal(tu_dir_entries(multi, 0), 2);

    /* each alone, the report left out */
    for (size_t k = 0; k < 2; k++) {
        s.stages[0] = '\0';
        assert_int_equal(llmpack_quantize(j, &o, &one[k], 1, NULL), LPK_OK);
        assert_string_equal(s.stages, k ? "quantize,export," : "quantize,");
        if (!k) assert_true(s.last_done == in_bytes && s.last_total == in_bytes);
        tu_same_bytes(m[k].path, one[k].path);
    }
    /* the folder name of the model's files */
    char name[64];
    assert_int_equal(llmpack_quantize_name(j, in, NULL, name, sizeof name), LPK_OK);
    assert_string_equal(name, "stories260K");
    assert_int_equal(llmpack_quantize_name(j, in, "my model/1", name, sizeof name), LPK_OK);
    assert_string_equal(name, "my-model-1");
    llmpack_job_free(j);
    free_outs(m, 2);
    free_outs(one, 2);
    tu_rmtree(dir);
    free(dir); free(in); free(multi); free(single);
}

/* What a quantize job with GPTQ showed: the events of its own stages to
 * on_progress, and the nested "gptq blocks" updates counted apart. */
typedef struct gptq_seen {
    seen s;
    int blocks;        /* "gptq blocks" updates */
    int cancel_block;  /* cancel at this one (0: never) */
} gptq_seen;

static void on_gptq_progress(void *user, const llmpack_progress *p)
{
    gptq_seen *g = user;
    if (strcmp(p->stage, "gptq blocks")) {
        on_progress(&g->s, p);
    } else if (p->event == LLMPACK_PROGRESS_UPDATE && ++g->blocks == g->cancel_block) {
        llmpack_job_cancel(g->s.j);
    }
}

/* GPTQ's block passes are cancellation points: cancelled at the first chunk
 * through the first block, the job stops there (the second chunk of that pass
 * is not run), returns LPK_EINTR naming the input and writes nothing. */
static void test_quantize_gptq_cancel(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir), *out = tu_fmt("%s/g.lpk", dir);
    llmpack_quantize_opts o;
    gptq_seen g = {0};
    llmpack_job *j = quantize_job(&g.s, &o, in);
    llmpack_job_set_progress(j, on_gptq_progress, &g);
    o.gptq = 1;
    o.calib_text = TEXT;
    o.chunks = 2;
    llmpack_quantize_out q = {.path = out, .recipe = "q4_0", .format = LLMPACK_FMT_LPK};
    /* run to the end: two updates a block */
    if (llmpack_quantize(j, &o, &q, 1, NULL)) fail_msg("%s", llmpack_job_error(j));
    int all = g.blocks;
    assert_true(all >= 4);
    assert_int_equal(all % 2, 0);
    assert_int_equal(remove(out), 0);

    llmpack_job_reset(j);
    g.blocks = 0;
    g.cancel_block = 1;
    assert_int_equal(llmpack_quantize(j, &o, &q, 1, NULL), LPK_EINTR);
    assert_int_equal(g.blocks, 1);
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    assert_non_null(strstr(llmpack_job_error(j), in));
    assert_false(tu_exists(out));
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    assert_int_equal(tu_dir_entries(dir, 0), 1); /* the input alone */
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir);
    free(in);
    free(out);
}

/* Cancelled while quantizing: LPK_EINTR naming the input, no output and no
 * temporary file. Cancelled while the second output is exported: the first,
 * complete, stays and the report says so. Cancelled while calibrating on a
 * text: nothing written. */
static void test_quantize_cancel(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir), *outdir = tu_fmt("%s/out", dir);
    assert_int_equal(mkdir(outdir, 0700), 0);
    llmpack_quantize_out q[2];
    two_outs(q, outdir);
    llmpack_quantize_opts o;
    seen s;
    llmpack_job *j = quantize_job(&s, &o, in);
    llmpack_quantize_report rep;
    s.cancel_at = 2;
    assert_int_equal(llmpack_quantize(j, &o, q, 2, &rep), LPK_EINTR);
    assert_int_equal(llmpack_job_status(j), LPK_EINTR);
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    assert_non_null(strstr(llmpack_job_error(j), in));
    assert_int_equal(s.updates, 2);
    assert_int_equal(s.begins, s.ends);
    assert_false(rep.outputs[0].written || rep.outputs[1].written);
    size_t n_tensors = rep.n_tensors;
    llmpack_quantize_report_free(&rep);
    assert_int_equal(tu_dir_entries(outdir, 0), 0);

    /* the quantize stage has an update per tensor; the next one is the export's */
    llmpack_job *j2 = new_job(&s);
    s.cancel_at = (int)n_tensors + 1;
    assert_int_equal(llmpack_quantize(j2, &o, q, 2, &rep), LPK_EINTR);
    assert_string_equal(s.stages, "quantize,export,");
    assert_non_null(strstr(llmpack_job_error(j2), q[1].path));
    assert_true(rep.outputs[0].written);
    assert_false(rep.outputs[1].written);
    assert_true(tu_exists(q[0].path));
    assert_false(tu_exists(q[1].path));
    assert_int_equal(tu_dir_entries(outdir, 0), 1);
    llmpack_quantize_report_free(&rep);

    /* in the calibration: the first chunk */
    llmpack_job *j3 = new_job(&s);
    s.cancel_at = 1;
    o.force = 1;
    o.calib_text = TEXT;
    o.chunks = 2;
    assert_int_equal(llmpack_quantize(j3, &o, &q[1], 1, NULL), LPK_EINTR);
    assert_string_equal(s.stages, "calibrating,");
    assert_non_null(strstr(s.notices, "calibrating on " TEXT));
    assert_non_null(strstr(llmpack_job_error(j3), TEXT));
    assert_false(tu_exists(q[1].path));
    assert_int_equal(tu_dir_entries(outdir, 0), 1);
    /* run to the end, it reports the matrix and its chunks */
    llmpack_job_reset(j3);
    s.cancel_at = 0;
    s.stages[0] = '\0';
    assert_int_equal(llmpack_quantize(j3, &o, &q[1], 1, &rep), LPK_OK);
    assert_string_equal(s.stages, "calibrating,quantize,export,");
    assert_non_null(rep.imatrix);
    assert_int_equal(rep.imatrix->chunks, 2);
    llmpack_quantize_report_free(&rep);
    llmpack_job_free(j);
    llmpack_job_free(j2);
    llmpack_job_free(j3);
    free_outs(q, 2);
    tu_rmtree(dir);
    free(dir); free(in); free(outdir);
}

/* A size target: the sensitivities are a stage of their own and can be
 * cancelled there; run to the end, the report gives the target's figures and
 * the file stays within it. */
static void test_quantize_target(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir), *out = tu_fmt("%s/t.lpk", dir);
    llmpack_quantize_out q = {out, NULL, LLMPACK_FMT_LPK};
    llmpack_quantize_opts o;
    seen s;
    llmpack_job *j = quantize_job(&s, &o, in);
    o.calib_text = TEXT;
    o.chunks = 1;
    o.calib_chunks = 1;
    o.target_bpw = 9;
    s.cancel_at = 2; /* the calibration's one chunk, then the first group of matrices */
    assert_int_equal(llmpack_quantize(j, &o, &q, 1, NULL), LPK_EINTR);
    assert_string_equal(s.stages, "calibrating,sensitivities,");
    assert_non_null(strstr(s.notices, "measuring each matrix's sensitivity"));
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    assert_int_equal(tu_dir_entries(dir, 0), 1); /* the input only */

    llmpack_job_reset(j);
    s.cancel_at = 0;
    s.stages[0] = '\0';
    llmpack_quantize_report rep;
    assert_int_equal(llmpack_quantize(j, &o, &q, 1, &rep), LPK_OK);
    assert_string_equal(s.stages, "calibrating,sensitivities,quantize,");
    assert_string_equal(rep.target, "bpw 9");
    assert_true(rep.target_budget > 0 && rep.target_bytes <= rep.target_budget);
    uint64_t bytes = 0, elems = 0;
    for (size_t i = 0; i < rep.n_tensors; i++) {
        bytes += rep.outputs[0].tensors[i].size;
        elems += lpk_tensor_nelems(&rep.outputs[0].tensors[i].in);
    }
    assert_true(8.0 * (double)bytes / (double)elems <= 9.0);
    assert_int_equal(rep.outputs[0].file_size, file_size(out));
    llmpack_quantize_report_free(&rep);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir); free(in); free(out);
}

/* Errors on the handle, nothing written: an unknown recipe, an importance
 * matrix file that is not one, an output that exists, options that do not go
 * together, a tensor already quantized. */
static void test_quantize_errors(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir);
    char *out = tu_fmt("%s/o.lpk", dir), *junk = tu_fmt("%s/junk.imatrix", dir);
    assert_int_equal(tu_write_file(junk, "not an importance matrix", 24), 0);
    llmpack_quantize_out q = {out, "Q9_Z", LLMPACK_FMT_LPK};
    llmpack_quantize_opts o;
    seen s;
    llmpack_job *j = quantize_job(&s, &o, in);
    assert_int_equal(llmpack_quantize(j, &o, &q, 1, NULL), LPK_EINVAL);
    assert_non_null(strstr(llmpack_job_error(j), "Q9_Z"));
    assert_false(tu_exists(out));

    q.recipe = "IQ4_XS";
    o.imatrix = junk;
    int st = llmpack_quantize(j, &o, &q, 1, NULL);
    assert_true(st == LPK_ECORRUPT || st == LPK_ETRUNC);
    assert_int_equal(llmpack_job_status(j), st);
    assert_non_null(strstr(llmpack_job_error(j), junk));
    assert_false(tu_exists(out));
    assert_int_equal(tu_dir_entries(dir, 1), 0);

    o.imatrix = NULL;
    o.gptq = 1;
    assert_int_equal(llmpack_quantize(j, &o, &q, 1, NULL), LPK_EINVAL);
    o.gptq = 0;
    o.target_bpw = 6;
    assert_int_equal(llmpack_quantize(j, &o, &q, 1, NULL), LPK_EINVAL); /* no text, a recipe */
    o.target_bpw = 0;
    assert_int_equal(llmpack_quantize(j, &o, &q, 0, NULL), LPK_EINVAL);

    assert_int_equal(tu_write_file(out, "x", 1), 0);
    assert_int_equal(llmpack_quantize(j, &o, &q, 1, NULL), LPK_EEXIST);
    assert_non_null(strstr(llmpack_job_error(j), out));

    /* a Q8_0 container requantized to Q4_0: refused, then allowed with a notice */
    char *q8 = tu_fmt("%s/q8.lpk", dir), *q4 = tu_fmt("%s/q4.lpk", dir);
    llmpack_quantize_out a = {q8, "q8_0", LLMPACK_FMT_LPK}, b = {q4, "q4_0", LLMPACK_FMT_LPK};
    assert_int_equal(llmpack_quantize(j, &o, &a, 1, NULL), LPK_OK);
    o.in = q8;
    o.pure = 1;
    assert_int_equal(llmpack_quantize(j, &o, &b, 1, NULL), LPK_EINVAL);
    assert_non_null(strstr(llmpack_job_error(j), "--allow-requantize"));
    assert_false(tu_exists(q4));
    o.allow_requantize = 1;
    s.notices[0] = '\0';
    assert_int_equal(llmpack_quantize(j, &o, &b, 1, NULL), LPK_OK);
    assert_non_null(strstr(s.notices, "dequantizing q8_0 to requantize it as q4_0"));
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir); free(in); free(out); free(junk); free(q8); free(q4);
}

/* ---------------------------------------------------------------- calibrate */
/* A matrix from the demo folder (converted in memory) and from its
 * container: the same entries; the files read back as written, in both
 * layouts; cancelled at the first chunk, no file. */
static void test_calibrate(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *in = demo_container(dir);
    char *legacy = tu_fmt("%s/m.imatrix", dir), *gguf = tu_fmt("%s/m.gguf", dir);
    seen s;
    llmpack_job *j = new_job(&s);
    llmpack_calibrate_opts o = {.model = demo, .text = TEXT, .out = legacy, .chunks = 2};
    llmpack_calibrate_result res;
    assert_int_equal(llmpack_calibrate(j, &o, &res), LPK_OK);
    assert_string_equal(s.stages, "converting,calibrate,");
    assert_true(s.last_done == 2 && s.last_total == 2);
    assert_non_null(strstr(s.notices, "into memory"));
    assert_non_null(res.imatrix);
    assert_int_equal(res.imatrix->chunks, 2);
    assert_int_equal(res.imatrix->chunk_size, 512);

    lpk_imatrix *back = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_imatrix_read(legacy, &back, &err), LPK_OK);
    assert_int_equal(back->n, res.imatrix->n);
    assert_int_equal(back->hash, res.imatrix->hash);
    assert_int_equal(back->chunks, 2);
    for (size_t i = 0; i < back->n; i++) {
        assert_string_equal(back->e[i].name, res.imatrix->e[i].name);
        assert_int_equal(back->e[i].n, res.imatrix->e[i].n);
    }
    lpk_imatrix_free(back);

    o.model = in;
    o.out = gguf;
    llmpack_calibrate_result r2;
    s.stages[0] = '\0';
    assert_int_equal(llmpack_calibrate(j, &o, &r2), LPK_OK);
    assert_string_equal(s.stages, "calibrate,");
    assert_int_equal(lpk_imatrix_read(gguf, &back, &err), LPK_OK);
    assert_int_equal(back->format, LPK_IMATRIX_GGUF);
    assert_int_equal(back->n, res.imatrix->n);
    for (size_t i = 0; i < back->n; i++)
        assert_memory_equal(back->e[i].sum2, res.imatrix->e[i].sum2,
                            (size_t)back->e[i].n * sizeof(float));
    lpk_imatrix_free(back);
    llmpack_calibrate_result_free(&r2);
    llmpack_calibrate_result_free(&res);

    /* an existing file, then a cancellation: nothing (more) written */
    assert_int_equal(llmpack_calibrate(j, &o, NULL), LPK_EEXIST);
    assert_non_null(strstr(llmpack_job_error(j), gguf));
    char *out3 = tu_fmt("%s/c.imatrix", dir);
    o.out = out3;
    s.cancel_at = s.updates + 1;
    assert_int_equal(llmpack_calibrate(j, &o, &res), LPK_EINTR);
    assert_non_null(strstr(llmpack_job_error(j), "cancelled"));
    assert_null(res.imatrix);
    assert_false(tu_exists(out3));
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    llmpack_job_free(j);
    tu_rmtree(dir);
    free(dir); free(in); free(legacy); free(gguf); free(out3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export),
        cmocka_unit_test(test_export_cancel),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_open_model),
        cmocka_unit_test(test_convert_lpk),
        cmocka_unit_test(test_convert_gguf),
        cmocka_unit_test(test_convert_cancel),
        cmocka_unit_test(test_convert_errors),
        cmocka_unit_test(test_convert_gptq),
        cmocka_unit_test(test_open_tokenizer),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_verify_cancel),
        cmocka_unit_test(test_verify_errors),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_info),
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_quantize_cancel),
        cmocka_unit_test(test_quantize_gptq_cancel),
        cmocka_unit_test(test_quantize_target),
        cmocka_unit_test(test_quantize_errors),
        cmocka_unit_test(test_calibrate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
