/* Every command parses its options the same way (getopt_long: `--opt value`,
 * `--opt=value`, llama.cpp's short forms). On the demo model. */
#include "tutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#define DEMO "examples/stories260K"
#define TEXT "examples/TinyStories-valid-sample.txt"

/* Runs llmpack (args printf-style); wants exit `want`; returns its output (malloc'ed). */
static char *run(int want, const char *args_fmt, ...) __attribute__((format(printf, 2, 3)));
static char *run(int want, const char *args_fmt, ...)
{
    char args[4096], *out = NULL;
    va_list ap;
    va_start(ap, args_fmt);
    vsnprintf(args, sizeof args, args_fmt, ap);
    va_end(ap);
    int rc = tu_llmpack(&out, "%s", args);
    if (rc != want) fail_msg("llmpack %s: exit %d, want %d: %s", args, rc, want, out ? out : "");
    return out ? out : strdup("");
}

static void same_output(char *a, char *b, const char *what)
{
    if (strcmp(a, b)) fail_msg("%s: outputs differ:\n%s\n---\n%s", what, a, b);
    free(a);
    free(b);
}

static void same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    char *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
    assert_non_null(x);
    assert_non_null(y);
    if (na != nb || memcmp(x, y, na)) fail_msg("%s and %s differ", a, b);
    free(x);
    free(y);
}

/* Two --json reports (a, b: freed) with equal values of keys k1 and k2 (the
 * timings differ). */
static void same_keys(char *a, char *b, const char *k1, const char *k2)
{
    json_error_t je;
    json_t *ja = json_loads(a, 0, &je), *jb = json_loads(b, 0, &je);
    if (!ja || !jb) fail_msg("not JSON:\n%s\n---\n%s", a, b);
    const char *keys[] = {k1, k2};
    for (size_t i = 0; i < 2; i++)
        if (!json_object_get(ja, keys[i]) ||
            !json_equal(json_object_get(ja, keys[i]), json_object_get(jb, keys[i])))
            fail_msg("%s differs:\n%s\n---\n%s", keys[i], a, b);
    json_decref(ja);
    json_decref(jb);
    free(a);
    free(b);
}

/* A container of the demo model in dir (dir/m.lpk); returns its path. */
static char *demo_lpk(const char *dir)
{
    char *m = tu_fmt("%s/m.lpk", dir);
    free(run(0, "convert %s -o '%s'", DEMO, m));
    return m;
}

static void test_short_and_equals_forms(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *m = demo_lpk(dir);
    /* convert: -m, --output=, -t 0 (all cores), -q (nothing printed) */
    char *a = tu_fmt("%s/a.lpk", dir);
    char *out = run(0, "convert -m %s --output='%s' -t 0 -q", DEMO, a);
    assert_string_equal(out, "");
    free(out);
    same_file(a, m);
    /* quantize: the same file whichever way the options are spelled */
    char *q1 = tu_fmt("%s/q1.lpk", dir), *q2 = tu_fmt("%s/q2.lpk", dir);
    free(run(0, "quantize '%s' -o '%s' --type q4_0 --threads 1 --quiet", m, q1));
    free(run(0, "quantize --type=q4_0 -qt0 --model='%s' -o'%s'", m, q2));
    same_file(q1, q2);
    /* verify: -m, -f, -c, --chunks= against the long forms */
    same_keys(run(0, "verify '%s' --text %s --ctx 64 --chunks 2 --json", m, TEXT),
              run(0, "verify -m '%s' -f %s -c 64 --chunks=2 -t 0 --json", m, TEXT), "ppl",
              "tokens_scored");
    /* options after the operands, and -- ending the options */
    same_output(run(0, "info --json '%s'", m), run(0, "info '%s' --json", m), "info");
    same_output(run(0, "info '%s'", m), run(0, "info -- '%s'", m), "info --");
    same_output(run(0, "tokenize '%s' --text 'Once upon a time'", m),
                run(0, "tokenize -m '%s' -p 'Once upon a time'", m), "tokenize");
    same_keys(run(0, "generate '%s' --prompt Once -n 4 --json", m),
              run(0, "generate --model='%s' -p Once --n-predict=4 -t 1 --json", m), "text", "tokens");
    char *i1 = tu_fmt("%s/1.imatrix", dir), *i2 = tu_fmt("%s/2.imatrix", dir);
    free(run(0, "calibrate '%s' --text %s --ctx 64 --chunks 2 -o '%s' --quiet", m, TEXT, i1));
    free(run(0, "calibrate -m '%s' -f %s -c 64 --chunks=2 -o '%s' -q -t 0", m, TEXT, i2));
    same_file(i1, i2);
    char *g = tu_fmt("%s/g.gguf", dir);
    out = run(0, "export -m '%s' --output '%s' -q --json", m, g);
    assert_non_null(strstr(out, "\"format\": \"gguf\""));
    free(out);
    free(run(0, "check -q -m '%s'", g));
    /* bad values and missing values */
    out = run(2, "quantize '%s' -o '%s/x.lpk' --type q4_0 --threads 1025", m, dir);
    assert_non_null(strstr(out, "--threads: '1025' is not a thread count"));
    free(out);
    out = run(2, "verify '%s' -f %s --threads=-1", m, TEXT);
    assert_non_null(strstr(out, "not a thread count"));
    free(out);
    out = run(2, "convert %s -o", DEMO);
    assert_non_null(strstr(out, "option '-o' needs a value"));
    free(out);
    out = run(2, "quantize '%s' --type q4_0 --output", m);
    assert_non_null(strstr(out, "option '--output' needs a value"));
    free(out);
    out = run(2, "calibrate '%s' -f %s -o '%s/x.imatrix' --ctx=two", m, TEXT, dir);
    assert_non_null(strstr(out, "--ctx: 'two' is not a valid value"));
    free(out);
    out = run(2, "generate '%s' -p x -Z", m);
    assert_non_null(strstr(out, "unknown option '-Z'"));
    free(out);
    out = run(2, "quantize '%s' -o '%s/x.lpk' --type q4_0 --damp=lots", m, dir);
    assert_non_null(strstr(out, "--damp: bad value 'lots'"));
    free(out);
    assert_int_equal(tu_dir_entries(dir, 0), 7); /* m a q1 q2 1.imatrix 2.imatrix g: no x.* */
    tu_rmtree(dir);
    free(dir); free(m); free(a); free(q1); free(q2); free(i1); free(i2); free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_and_equals_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
