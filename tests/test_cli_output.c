/* The output format of convert, quantize and export follows the output's name
 * (.gguf: GGUF, .lpk: container, anything else: --format or exit 2), and a
 * GGUF made through a temporary container leaves no temporary file behind,
 * after success, failure or a signal. On the demo model in examples/. */
#include "tutil.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define DEMO "examples/stories260K"
#define TEXT "examples/TinyStories-valid-sample.txt"

static const char lpk_magic[8] = "\x89LPK\r\n\x1a\n";

/* 'g' for a GGUF file, 'l' for a container, '?' for anything else, 0 for none. */
static char kind_of(const char *path)
{
    size_t n = 0;
    char *b = tu_read_file(path, &n);
    if (!b) return 0;
    char k = n >= 8 && !memcmp(b, lpk_magic, 8) ? 'l' : n >= 4 && !memcmp(b, "GGUF", 4) ? 'g' : '?';
    free(b);
    return k;
}

/* The --json report names `path` as output, in format `fmt`. */
static void json_output(const char *out, const char *path, const char *fmt)
{
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (!j) fail_msg("not JSON: %s", out);
    assert_string_equal(json_string_value(json_object_get(j, "output")), path);
    assert_string_equal(json_string_value(json_object_get(j, "format")), fmt);
    json_decref(j);
}

/* The end of every test: no temporary file left in dir; dir removed and freed. */
static void no_temp_left(char *dir)
{
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    tu_rmtree(dir);
    free(dir);
}

static void test_convert_by_extension(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *g = tu_fmt("%s/m.gguf", dir), *l = tu_fmt("%s/m.lpk", dir), *e = tu_fmt("%s/e.gguf", dir);
    tu_run_ok("convert %s -o '%s'", DEMO, g);
    assert_int_equal(kind_of(g), 'g');
    tu_run_ok("convert %s -o '%s'", DEMO, l);
    assert_int_equal(kind_of(l), 'l');
    tu_run_ok("export '%s' -o '%s'", l, e);
    tu_same_bytes(g, e); /* one command = convert + export */

    /* quantizing in the same pass, with the type spelled as llama.cpp does */
    char *qg = tu_fmt("%s/m-Q4_K_M.gguf", dir), *ql = tu_fmt("%s/q.lpk", dir),
         *qe = tu_fmt("%s/q.gguf", dir);
    tu_run_ok("convert %s -o '%s' --type Q4_K_M", DEMO, qg);
    tu_run_ok("convert %s -o '%s' --type Q4_K_M", DEMO, ql);
    tu_run_ok("export '%s' -o '%s'", ql, qe);
    assert_int_equal(kind_of(qg), 'g');
    tu_same_bytes(qg, qe);

    /* the suffix in any case; --format for other names */
    char *up = tu_fmt("%s/M.GGUF", dir), *bin = tu_fmt("%s/m.bin", dir), *bl = tu_fmt("%s/l.bin", dir);
    tu_run_ok("convert %s -o '%s'", DEMO, up);
    tu_same_bytes(up, g);
    tu_run_ok("convert %s -o '%s' --format gguf", DEMO, bin);
    tu_same_bytes(bin, g);
    tu_run_ok("convert %s -o '%s' --format LPK", DEMO, bl);
    tu_same_bytes(bl, l);

    /* JSON names the file asked for and its format */
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "convert %s -o '%s' --force --json", DEMO, g), 0);
    json_output(out, g, "gguf");
    free(out);
    tu_same_bytes(g, e);

    /* an existing output is kept without --force, before any work is done */
    assert_int_equal(tu_llmpack(&out, "convert %s -o '%s'", DEMO, g), 1);
    assert_non_null(strstr(out, "already exists"));
    free(out);
    tu_same_bytes(g, e);
    no_temp_left(dir);
    free(g); free(l); free(e); free(qg); free(ql); free(qe); free(up); free(bin); free(bl);
}

static void expect_usage(const char *dir, const char *sub, const char *args_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs llmpack: wants exit 2 with `sub` in its output and nothing new in dir. */
static void expect_usage(const char *dir, const char *sub, const char *args_fmt, ...)
{
    int before = tu_dir_entries(dir, 0);
    va_list ap;
    va_start(ap, args_fmt);
    tu_vexpect(2, sub, args_fmt, ap);
    va_end(ap);
    assert_int_equal(tu_dir_entries(dir, 0), before); /* nothing written */
}

static void test_bad_output_name(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *in = tu_fmt("%s/in.lpk", dir), *bin = tu_fmt("%s/model.bin", dir);
    tu_run_ok("convert %s -o '%s'", DEMO, in);
    const char *why = "cannot tell the output format";
    expect_usage(dir, why, "convert %s -o '%s'", DEMO, bin);
    expect_usage(dir, why, "convert %s -o '%s' --type q8_0", DEMO, bin);
    expect_usage(dir, why, "quantize '%s' -o '%s' --type q8_0", in, bin);
    expect_usage(dir, why, "export '%s' -o '%s'", in, bin);
    expect_usage(dir, "model.bin", "export '%s' -o '%s'", in, bin);
    expect_usage(dir, "--format: 'ggml' is not gguf or lpk", "convert %s -o '%s' --format ggml",
                 DEMO, bin);
    char *g = tu_fmt("%s/x.gguf", dir), *l = tu_fmt("%s/x.lpk", dir);
    expect_usage(dir, "names a GGUF file but --format says lpk",
                 "quantize '%s' -o '%s' --type q8_0 --format lpk", in, g);
    expect_usage(dir, "names a .lpk file but --format says gguf",
                 "export '%s' -o '%s' --format gguf", in, l);
    expect_usage(dir, "--strip applies to GGUF outputs only", "export '%s' -o '%s' --strip", in, l);
    expect_usage(dir, "needs the tokenizer", "convert %s -o '%s' --no-tokenizer", DEMO, g);
    /* a folder is no model file, whatever its name */
    char *sub = tu_fmt("%s/sub.gguf", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    expect_usage(dir, "is a folder", "convert %s -o '%s'", DEMO, sub);
    no_temp_left(dir);
    free(in); free(bin); free(g); free(l); free(sub);
}

static void test_quantize_by_extension(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *in = tu_fmt("%s/in.lpk", dir), *g = tu_fmt("%s/q.gguf", dir), *l = tu_fmt("%s/q.lpk", dir),
         *e = tu_fmt("%s/e.gguf", dir);
    tu_run_ok("convert %s -o '%s'", DEMO, in);
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0 --json", in, g), 0);
    json_output(out, g, "gguf");
    free(out);
    tu_run_ok("quantize '%s' -o '%s' --type q8_0 -q", in, l);
    tu_run_ok("export '%s' -o '%s'", l, e);
    assert_int_equal(kind_of(g), 'g');
    assert_int_equal(kind_of(l), 'l');
    tu_same_bytes(g, e);
    /* a GGUF input quantized to a GGUF */
    char *g2 = tu_fmt("%s/q2.gguf", dir);
    tu_run_ok("quantize '%s' -o '%s' --type q8_0 -q", g, g2);
    assert_int_equal(kind_of(g2), 'g');
    /* --max-size bounds the GGUF's bytes (its metadata is not compressed: more
     * than the container's) */
    char *s = tu_fmt("%s/s.gguf", dir), *sl = tu_fmt("%s/s.lpk", dir);
    tu_run_ok("quantize '%s' -o '%s' --max-size 300KB --calib " TEXT " --calib-chunks 1 -q", in, s);
    tu_run_ok("quantize '%s' -o '%s' --max-size 300KB --calib " TEXT " --calib-chunks 1 -q", in, sl);
    size_t ns = 0, nl = 0;
    free(tu_read_file(s, &ns));
    free(tu_read_file(sl, &nl));
    print_message("--max-size 300KB: GGUF %zu bytes, .lpk %zu bytes\n", ns, nl);
    assert_int_equal(kind_of(s), 'g');
    assert_true(ns <= 300000 && ns > 270000);
    assert_true(nl <= 300000 && nl > 270000);
    free(s);
    free(sl);
    no_temp_left(dir);
    free(in); free(g); free(l); free(e); free(g2);
}

static void test_export_lpk(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *g = tu_fmt("%s/m.gguf", dir), *l = tu_fmt("%s/m.lpk", dir), *g2 = tu_fmt("%s/m2.gguf", dir);
    tu_run_ok("convert %s -o '%s'", DEMO, g);
    /* a GGUF from elsewhere into a container: checksummed, and back unchanged */
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "export '%s' -o '%s'", g, l), 0);
    assert_non_null(strstr(out, ".lpk container, 47 tensors"));
    free(out);
    assert_int_equal(kind_of(l), 'l');
    assert_int_equal(tu_llmpack(&out, "check '%s'", l), 0);
    free(out);
    tu_run_ok("export '%s' -o '%s'", l, g2);
    tu_same_bytes(g, g2);
    no_temp_left(dir);
    free(g); free(l); free(g2);
}

/* A failing run leaves nothing: neither its output nor a temporary file. */
static void test_failure_leaves_nothing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *src = tu_fmt("%s/src", dir), *g = tu_fmt("%s/m.gguf", dir);
    assert_int_equal(mkdir(src, 0700), 0);
    char *cfg = tu_fmt("%s/config.json", src);
    assert_int_equal(tu_write_file(cfg, "{\"model_type\": \"llama\"", 23), 0);
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s'", src, g), 3);
    free(out);
    assert_false(tu_exists(g));
    /* quantize: an importance matrix that is not one */
    char *in = tu_fmt("%s/in.lpk", dir), *im = tu_fmt("%s/bad.imatrix", dir);
    tu_run_ok("convert %s -o '%s'", DEMO, in);
    assert_int_equal(tu_write_file(im, "junk", 4), 0);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_k --imatrix '%s'", in, g, im),
                     3);
    free(out);
    assert_false(tu_exists(g));
    no_temp_left(dir);
    free(src); free(g); free(cfg); free(in); free(im);
}

/* Starts llmpack with argv, waits until a temporary file for target `base`
 * shows up in dir, sends SIGTERM; wants exit 1 and no file left but keep. */
static void kill_mid_run(const char *dir, const char *base, char *const *argv, const char *keep)
{
    char *log = tu_fmt("%s/../%s.log", dir, base);
    pid_t pid = tu_llmpack_spawn(log, argv);
    assert_true(pid > 0);
    struct timespec nap = {0, 2 * 1000 * 1000};
    int seen = 0;
    for (int i = 0; i < 30000 && !seen; i++) {
        seen = tu_tmp_size(dir, base) >= 0;
        int ws;
        if (!seen && waitpid(pid, &ws, WNOHANG) == pid) {
            char *l = tu_read_file(log, NULL);
            fail_msg("ended before its temporary file showed (status %d): %s", ws, l ? l : "");
        }
        if (!seen) nanosleep(&nap, NULL);
    }
    assert_true(seen);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int ws = tu_wait_child(pid, 60, "llmpack after SIGTERM");
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 1);
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, keep))
            fail_msg("left behind after SIGTERM: %s/%s", dir, e->d_name);
    closedir(d);
    unlink(log);
    free(log);
}

static void test_signal_leaves_nothing(void **state)
{
    (void)state;
    tu_unignore_signals();
    char *top = tu_tmpdir(), *dir = tu_fmt("%s/out", top);
    assert_int_equal(mkdir(dir, 0700), 0);
    char *in = tu_fmt("%s/in.lpk", dir), *g = tu_fmt("%s/q.gguf", dir);
    tu_run_ok("convert %s -o '%s'", DEMO, in);
    /* quantize's temporary container exists while it calibrates */
    char *qa[] = {"llmpack", "quantize", in, "-o", g, "--type", "q4_k", "--calib", TEXT, NULL};
    kill_mid_run(dir, "q.gguf", qa, "in.lpk");
    /* convert --method gptq: the source-precision copy, then quantize's */
    char *ca[] = {"llmpack", "convert", DEMO, "-o", g, "--type", "q4_0", "--method", "gptq",
                  "--calib", TEXT, NULL};
    kill_mid_run(dir, "q.gguf", ca, "in.lpk");
    tu_rmtree(top);
    free(top); free(dir); free(in); free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_by_extension),
        cmocka_unit_test(test_bad_output_name),
        cmocka_unit_test(test_quantize_by_extension),
        cmocka_unit_test(test_export_lpk),
        cmocka_unit_test(test_failure_leaves_nothing),
        cmocka_unit_test(test_signal_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
