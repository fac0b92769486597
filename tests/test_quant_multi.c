/* quantize with several types into a folder (`--type A,B,C -o DIR/`): one read
 * of the input, DIR/<name>-<TYPE>.lpk|.gguf per type, each byte-identical to
 * the run of that type alone; the options that apply to every output, those
 * refused, the reports. On the demo model in examples/, and on llama2-20m when
 * ../shared has it. (Signals and failures mid-run: test_integrity.c.) */
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#define TEXT "examples/TinyStories-valid-sample.txt"

/* `quantize in --type T1,T2,.. -o DIR/ EXTRA` into a fresh folder, then each
 * type alone (`-o SINGLE/<name>-<T>.<ext>`: the same file name, so a GGUF
 * named after its file gets the same name): the files must be equal. */
static void check_same_as_single(const char *in, const char *name, const char *types,
                                 const char *ext, const char *extra)
{
    char *dir = tu_tmpdir(), *multi = tu_fmt("%s/multi", dir), *single = tu_fmt("%s/single", dir);
    assert_int_equal(mkdir(multi, 0700), 0);
    assert_int_equal(mkdir(single, 0700), 0);
    tu_run_ok("quantize '%s' --type %s -o '%s/' --format %s -q %s", in, types, multi, ext, extra);
    char *list = strdup(types);
    int n = 0;
    for (char *t = strtok(list, ","); t; t = strtok(NULL, ","), n++) {
        char *up = strdup(t);
        for (char *p = up; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        char *m = tu_fmt("%s/%s-%s.%s", multi, name, up, ext);
        char *s = tu_fmt("%s/%s-%s.%s", single, name, up, ext);
        tu_run_ok("quantize '%s' --type %s -o '%s' -q %s", in, t, s, extra);
        tu_same_bytes(m, s);
        free(up); free(m); free(s);
    }
    /* nothing else in the folder: one file per type, no temporary file */
    assert_int_equal(tu_dir_entries(multi, 0), n);
    print_message("%s %s %s: %d outputs equal to their single runs\n", types, ext, extra, n);
    free(list);
    tu_rmtree(dir);
    free(dir); free(multi); free(single);
}

static void test_same_bytes_demo(void **state)
{
    (void)state;
    const char *in = tu_demo("demo-f16.lpk", "");
    /* a k-quant mix, a 32-block type, iq4_xs; with --pure a k-quant, 32-block types */
    for (int g = 0; g < 2; g++) {
        const char *ext = g ? "gguf" : "lpk";
        check_same_as_single(in, "stories260K", "Q4_K_M,q8_0,IQ4_XS", ext, "");
        check_same_as_single(in, "stories260K", "q4_k_s,Q5_0,q4_1", ext, "--pure");
    }
    /* an importance matrix, computed once from a text or read, for every output */
    check_same_as_single(in, "stories260K", "Q4_K_M,Q4_0", "lpk", "--calib " TEXT " --chunks 2");
    char *dir = tu_tmpdir(), *im = tu_fmt("%s/im.dat", dir);
    tu_run_ok("calibrate '%s' --text " TEXT " --chunks 2 -o '%s' -q", in, im);
    char *extra = tu_fmt("--imatrix '%s'", im);
    check_same_as_single(in, "stories260K", "Q3_K_M,iq4_nl", "gguf", extra);
    /* GPTQ: one collection of Hessians, each output quantized with it */
    check_same_as_single(in, "stories260K", "q4_k,q4_0", "lpk",
                         "--calib " TEXT " --chunks 2 --method gptq");
    /* --name: the outputs' general.name, and the files' name (made a file name) */
    check_same_as_single(in, "my-model-v2.1", "q8_0,q6_k", "gguf", "--name 'my model/v2.1'");
    tu_rmtree(dir);
    free(dir); free(im); free(extra);
}

/* llama2-20m (a bf16 container of it), three recipes, both formats. */
static void test_same_bytes_llama2_20m(void **state)
{
    (void)state;
    TU_NEED_SHARED(hf, "models/llama2-20m/hf");
    char *dir = tu_tmpdir(), *in = tu_fmt("%s/l.lpk", dir);
    tu_run_ok("convert '%s' -o '%s' --name llama2-20m -q", hf, in);
    const char *nm = "llama2-20m";
    check_same_as_single(in, nm, "Q4_K_M,Q8_0,Q4_0", "lpk", "");
    check_same_as_single(in, nm, "Q4_K_M,Q8_0,Q4_0", "gguf", "");
    check_same_as_single(in, nm, "Q5_K_S,Q5_1", "lpk", "--pure");
    tu_rmtree(dir);
    free(dir); free(in);
}

/* What the multi form refuses (exit 2, or 1 for a folder that is not there),
 * each before anything is written. */
static void test_refused(void **state)
{
    (void)state;
    const char *in = tu_demo("demo-f16.lpk", "");
    char *dir = tu_tmpdir();
    tu_expect(2, "several types write one file each into a folder",
           "quantize '%s' --type q8_0,q4_0 -o '%s/x.lpk'", in, dir);
    tu_expect(2, "are the same recipe (q4_k_m)", "quantize '%s' --type q4_k,Q4_K_M -o '%s/'", in, dir);
    tu_expect(2, "q8_0 and Q8_0 are the same recipe", "quantize '%s' --type q8_0,Q8_0 -o '%s/'", in,
           dir);
    tu_expect(2, "an empty type", "quantize '%s' --type q8_0,,q4_0 -o '%s/'", in, dir);
    tu_expect(2, "unknown --type 'q9'", "quantize '%s' --type q8_0,q9 -o '%s/'", in, dir);
    tu_expect(2, "--format: 'ggml' is not gguf or lpk",
           "quantize '%s' --type q8_0,q4_0 -o '%s/' --format ggml", in, dir);
    tu_expect(2, "not a folder",
           "quantize '%s' --target-bpw 6 --calib " TEXT " -o '%s/'", in, dir);
    tu_expect(2, "is a folder (to write",
           "quantize '%s' --max-size 300KB --calib " TEXT " -o '%s'", in, dir);
    /* one type and a folder without the '/': refused as before */
    tu_expect(2, "end it with '/'", "quantize '%s' --type q8_0 -o '%s'", in, dir);
    tu_expect(2, "at most 16 types",
           "quantize '%s' --type q2_k,q3_k_s,q3_k_m,q3_k_l,q4_0,q4_1,q4_k_s,q4_k_m,q5_0,q5_1,"
           "q5_k_s,q5_k_m,q6_k,q8_0,iq4_nl,iq4_xs,f16 -o '%s/'", in, dir);
    tu_expect(1, "no such folder (create it first)", "quantize '%s' --type q8_0,q4_0 -o '%s/no/'",
           in, dir);
    assert_int_equal(tu_dir_entries(dir, 0), 0);
    /* a tensor to requantize, in any output: refused before writing */
    char *q8 = tu_fmt("%s/stories260K-Q8_0.lpk", dir);
    tu_run_ok("quantize '%s' --type q8_0 -o '%s/' -q", in, dir);
    tu_expect(2, "already q8_0; quantizing it to q4_0", "quantize '%s' --type q8_0,q4_0 -o '%s/' --force",
           q8, dir);
    assert_int_equal(tu_dir_entries(dir, 0), 1);
    /* an existing output is kept without --force, before any work */
    tu_expect(1, "stories260K-Q8_0.lpk: already exists", "quantize '%s' --type q4_0,q8_0 -o '%s'", in,
           dir);
    assert_int_equal(tu_dir_entries(dir, 0), 1);
    tu_run_ok("quantize '%s' --type q4_0,q8_0 -o '%s' --force -q", in, dir);
    assert_int_equal(tu_dir_entries(dir, 0), 2);
    tu_rmtree(dir);
    free(dir); free(q8);
}

/* --json: one object, an array of outputs each with the single run's keys;
 * the text report: one table per output. One type into a folder is fine. */
static void test_reports(void **state)
{
    (void)state;
    const char *in = tu_demo("demo-f16.lpk", "");
    char *dir = tu_tmpdir(), *one = tu_fmt("%s/one.lpk", dir), *out = NULL;
    assert_int_equal(tu_llmpack(&out, "quantize '%s' --type q4_k_m -o '%s' --json", in, one), 0);
    json_t *s = json_loads(out, 0, NULL);
    assert_non_null(s);
    free(out);
    char *sub = tu_fmt("%s/m", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' --type Q4_K_M,q8_0 -o '%s' --json "
                                "--format gguf", in, sub), 0);
    json_t *m = json_loads(out, 0, NULL);
    if (!m) fail_msg("not JSON: %s", out);
    free(out);
    assert_string_equal(json_string_value(json_object_get(m, "format")), "gguf");
    assert_string_equal(json_string_value(json_object_get(m, "input")), in);
    assert_true(json_is_real(json_object_get(m, "seconds")));
    json_t *arr = json_object_get(m, "outputs");
    assert_int_equal(json_array_size(arr), 2);
    static const char *const want[][2] = {{"stories260K-Q4_K_M.gguf", "Q4_K_M"},
                                          {"stories260K-Q8_0.gguf", "q8_0"}};
    for (size_t k = 0; k < 2; k++) {
        json_t *o = json_array_get(arr, k);
        char *p = tu_fmt("%s/%s", sub, want[k][0]);
        assert_string_equal(json_string_value(json_object_get(o, "output")), p);
        assert_string_equal(json_string_value(json_object_get(o, "type")), want[k][1]);
        assert_string_equal(json_string_value(json_object_get(o, "format")), "gguf");
        /* the keys of a single run's report */
        const char *key;
        json_t *v;
        json_object_foreach(s, key, v) if (!json_object_get(o, key))
            fail_msg("output %zu has no '%s'", k, key);
        free(p);
    }
    /* the first output's tensors as in the single run of Q4_K_M */
    assert_true(json_equal(json_object_get(json_array_get(arr, 0), "tensors"),
                           json_object_get(s, "tensors")));
    json_decref(m);
    json_decref(s);
    /* text: a heading and a table per output, a closing line */
    assert_int_equal(tu_llmpack(&out, "quantize '%s' --type q5_0,q6_k -o '%s/'", in, dir), 0);
    char *h1 = tu_fmt("== %s/stories260K-Q5_0.lpk (q5_0)", dir);
    char *h2 = tu_fmt("== %s/stories260K-Q6_K.lpk (q6_k)", dir);
    assert_non_null(strstr(out, h1));
    assert_non_null(strstr(out, h2));
    assert_non_null(strstr(out, "2 files from one read of"));
    assert_non_null(strstr(strstr(out, h2), "pooled rel. RMSE"));
    free(out);
    tu_rmtree(dir);
    free(dir); free(one); free(sub); free(h1); free(h2);
}

/* Drops what differs between two runs of the same work (the time, the
 * output's path or folder) from a report, at every level. */
static void drop_run_keys(json_t *j)
{
    if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++) drop_run_keys(json_array_get(j, i));
        return;
    }
    if (!json_is_object(j)) return;
    json_object_del(j, "seconds");
    json_object_del(j, "output");
    json_object_del(j, "folder");
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) drop_run_keys(v);
}

/* The last large tensor is quantized in slices of rows, each written while
 * the next is quantized (LLMPACK_QUANT_SLICE: a slice's bytes of input, 0 for
 * none; the demo's output matrix, 172 rows, is three slices at 4096), and the
 * input's tensors are read into buffers instead of through the mapping
 * (LLMPACK_QUANT_READ_MIN: from that many bytes; the demo's are all smaller
 * than the default): the same files and the same report (error figures to the
 * last digit) as in one piece through the mapping, for one output and
 * several, in both formats, with an importance matrix. */
static void test_sliced_last_tensor(void **state)
{
    (void)state;
    const char *in = tu_demo("demo-f16.lpk", "");
    char *dir = tu_tmpdir(), *im = tu_fmt("%s/im.dat", dir);
    tu_run_ok("calibrate '%s' --text " TEXT " --chunks 2 -o '%s' -q", in, im);
    const char *runs[][2] = {{"Q4_K_M", ""}, {"q4_1", "--pure"}, {"Q8_0,IQ4_XS,Q5_1", ""},
                             {"Q4_K_M,q6_k", "--format gguf"}, {"q4_0", "IM"}};
    /* (slice, read-min): the first is the reference */
    const char *conf[][2] = {{"0", "999999999"}, {"4096", "999999999"}, {"0", "0"},
                             {"4096", "0"}};
    enum { NC = sizeof conf / sizeof conf[0] };
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        int n_types = 1;
        for (const char *c = runs[k][0]; *c; c++) n_types += *c == ',';
        int multi = n_types > 1;
        char *extra = strcmp(runs[k][1], "IM") ? strdup(runs[k][1])
                                               : tu_fmt("--imatrix '%s'", im);
        char *rep[NC];
        char *path[NC];
        json_t *j[NC];
        for (int s = 0; s < NC; s++) {
            setenv("LLMPACK_QUANT_SLICE", conf[s][0], 1);
            setenv("LLMPACK_QUANT_READ_MIN", conf[s][1], 1);
            path[s] = tu_fmt("%s/%d-%d%s", dir, (int)k, s, multi ? "" : ".lpk");
            if (multi) assert_int_equal(mkdir(path[s], 0700), 0);
            assert_int_equal(tu_llmpack(&rep[s], "quantize '%s' --type %s -o '%s%s' %s --json",
                                        in, runs[k][0], path[s], multi ? "/" : "", extra),
                             0);
            j[s] = json_loads(rep[s], 0, NULL);
            if (!j[s]) fail_msg("not JSON: %s", rep[s]);
            drop_run_keys(j[s]);
        }
        unsetenv("LLMPACK_QUANT_SLICE");
        unsetenv("LLMPACK_QUANT_READ_MIN");
        for (int s = 1; s < NC; s++) {
            if (multi) {
                char *cmd = tu_fmt("diff -r '%s' '%s' > /dev/null", path[0], path[s]);
                assert_int_equal(system(cmd), 0);
                assert_int_equal(tu_dir_entries(path[s], 0), n_types);
                free(cmd);
            } else {
                tu_same_bytes(path[0], path[s]);
            }
            assert_true(json_equal(j[0], j[s]));
            assert_non_null(strstr(rep[s], "rel_rmse"));
        }
        print_message("%s %s: the same files and report with the last tensor in slices and "
                      "the input read into buffers\n", runs[k][0], extra);
        for (int s = 0; s < NC; s++) {
            json_decref(j[s]);
            free(rep[s]);
            free(path[s]);
        }
        free(extra);
    }
    tu_rmtree(dir);
    free(dir);
    free(im);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bytes_demo),
        cmocka_unit_test(test_same_bytes_llama2_20m),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_reports),
        cmocka_unit_test(test_sliced_last_tensor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
