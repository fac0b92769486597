/* Every command parses its options the same way (getopt_long: `--opt value`,
 * `--opt=value`, llama.cpp's short forms) and exits with the codes `llmpack
 * --help` documents: 2 for a bad command line, 1 for an input that does not
 * exist, 3 for an input that is not what it claims; progress in a log is plain
 * lines, -q silences it. On the demo model. */
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

/* The value at a dotted path ("results.0.ppl": a number steps into an array). */
static json_t *at(json_t *j, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); j && k; k = strtok_r(NULL, ".", &save))
        j = json_is_array(j) ? json_array_get(j, strtoul(k, NULL, 10)) : json_object_get(j, k);
    return j;
}

/* Two --json reports (a, b: freed) with equal values at paths k1 and k2 (the
 * timings differ). */
static void same_keys(char *a, char *b, const char *k1, const char *k2)
{
    json_error_t je;
    json_t *ja = json_loads(a, 0, &je), *jb = json_loads(b, 0, &je);
    if (!ja || !jb) fail_msg("not JSON:\n%s\n---\n%s", a, b);
    const char *keys[] = {k1, k2};
    for (size_t i = 0; i < 2; i++)
        if (!at(ja, keys[i]) || !json_equal(at(ja, keys[i]), at(jb, keys[i])))
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
              run(0, "verify -m '%s' -f %s -c 64 --chunks=2 -t 0 --json", m, TEXT),
              "results.0.ppl", "text.tokens_scored");
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

/* tmpl with every @IN@ replaced by in and @OUT@ by out (malloc'ed). */
static char *subst(const char *tmpl, const char *in, const char *out)
{
    size_t cap = strlen(tmpl) + 4 * (strlen(in) + strlen(out)) + 1, k = 0;
    char *r = malloc(cap);
    assert_non_null(r);
    while (*tmpl) {
        const char *v = !strncmp(tmpl, "@IN@", 4) ? in : !strncmp(tmpl, "@OUT@", 5) ? out : NULL;
        if (v) {
            size_t n = strlen(v);
            assert_true(k + n < cap);
            memcpy(r + k, v, n);
            k += n;
            tmpl += v == in ? 4 : 5;
        } else {
            assert_true(k + 1 < cap);
            r[k++] = *tmpl++;
        }
    }
    r[k] = 0;
    return r;
}

/* Each command with @IN@ the input under test (@MODEL@ a good model), and
 * @OUT@ a folder for outputs; `missing` leaves out a required option. */
static const struct {
    const char *args, *missing;
} commands[] = {
    {"convert '@IN@' -o '@OUT@/o.lpk'", "convert -o '@OUT@/o.lpk'"},
    {"quantize '@IN@' -o '@OUT@/o.lpk' --type q8_0", "quantize '@IN@' --type q8_0"},
    {"calibrate '@IN@' -o '@OUT@/o.imatrix' -f " TEXT, "calibrate '@IN@' -f " TEXT},
    {"verify '@IN@' -f " TEXT " --chunks 1", "verify '@IN@'"},
    {"verify @MODEL@ --ref '@IN@' -f " TEXT " --chunks 1", "verify --ref '@IN@' -f " TEXT},
    {"info '@IN@'", "info"},
    {"check '@IN@'", "check"},
    {"export '@IN@' -o '@OUT@/o.gguf'", "export '@IN@'"},
    {"tokenize '@IN@' --text hi", "tokenize '@IN@'"},
    {"generate '@IN@' -p hi -n 1", "generate '@IN@'"},
};

static void test_exit_codes_every_command(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *m = demo_lpk(dir), *out_dir = tu_fmt("%s/out", dir);
    assert_int_equal(mkdir(out_dir, 0700), 0);
    /* inputs that are not what they claim: random bytes named .lpk and .gguf, a
     * folder without a checkpoint */
    char *junk_lpk = tu_fmt("%s/junk.lpk", dir), *junk_gguf = tu_fmt("%s/junk.gguf", dir);
    char *empty = tu_fmt("%s/empty", dir), *nope = tu_fmt("%s/nope.lpk", dir);
    unsigned char bytes[4096];
    uint64_t seed = 20;
    for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (unsigned char)tu_rand(&seed);
    assert_int_equal(tu_write_file(junk_lpk, bytes, sizeof bytes), 0);
    assert_int_equal(tu_write_file(junk_gguf, bytes, sizeof bytes), 0);
    assert_int_equal(mkdir(empty, 0700), 0);
    char *note = tu_fmt("%s/README", empty);
    assert_int_equal(tu_write_file(note, "no model here\n", 14), 0);
    char *qm = tu_fmt("'%s'", m);

    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
        char *tmpl = subst(commands[c].args, "@IN@", out_dir), *o, *line;
        /* @MODEL@: the good model (replace it first, @IN@ stays) */
        char *at = strstr(tmpl, "@MODEL@");
        if (at) {
            char *t2 = tu_fmt("%.*s%s%s", (int)(at - tmpl), tmpl, qm, at + 7);
            free(tmpl);
            tmpl = t2;
        }
        int is_convert = !strncmp(tmpl, "convert", 7);
        const char *good = is_convert ? DEMO : m;
        /* 2: an unknown option; a required option left out */
        line = subst(tmpl, good, out_dir);
        o = run(2, "%s --no-such-option", line);
        if (!strstr(o, "unknown option '--no-such-option'"))
            fail_msg("%s: the unknown option is not named: %s", line, o);
        free(o);
        free(line);
        line = subst(commands[c].missing, good, out_dir);
        free(run(2, "%s", line));
        free(line);
        /* 1: an input that does not exist */
        line = subst(tmpl, nope, out_dir);
        o = run(1, "%s", line);
        if (!strstr(o, "nope.lpk: cannot open")) fail_msg("%s: no 'cannot open' naming it: %s", line, o);
        free(o);
        free(line);
        /* 3: random bytes named .lpk and .gguf; a folder without a checkpoint */
        const char *bad[] = {junk_lpk, junk_gguf, is_convert ? empty : NULL};
        for (size_t b = 0; b < 3 && bad[b]; b++) {
            line = subst(tmpl, bad[b], out_dir);
            o = run(3, "%s", line);
            if (!strstr(o, strrchr(bad[b], '/') + 1)) fail_msg("%s: the file is not named: %s", line, o);
            free(o);
            free(line);
        }
        free(tmpl);
        assert_int_equal(tu_dir_entries(out_dir, 0), 0); /* nothing written */
    }
    /* the other inputs a command names: texts, an importance matrix, a tokenizer */
    static const char *const others[] = {
        "verify '@IN@' -f '@OUT@/nope.txt'",
        "calibrate '@IN@' -f '@OUT@/nope.txt' -o '@OUT@/o.imatrix'",
        "quantize '@IN@' -o '@OUT@/o.lpk' --type q4_k --imatrix '@OUT@/nope.dat'",
        "quantize '@IN@' -o '@OUT@/o.gguf' --type q4_k --calib '@OUT@/nope.txt'",
        "convert " DEMO " -o '@OUT@/o.gguf' --tokenizer '@OUT@/nope.model'",
        "tokenize '@IN@' -f '@OUT@/nope.txt'",
    };
    for (size_t c = 0; c < sizeof others / sizeof others[0]; c++) {
        char *line = subst(others[c], m, out_dir), *o = run(1, "%s", line);
        if (!strstr(o, ": cannot open")) fail_msg("%s: no 'cannot open': %s", line, o);
        free(o);
        free(line);
        assert_int_equal(tu_dir_entries(out_dir, 0), 0);
    }
    tu_rmtree(dir);
    free(dir); free(m); free(out_dir); free(junk_lpk); free(junk_gguf); free(empty); free(nope);
    free(note); free(qm);
}

/* Lines of out starting with prefix. */
static int count_lines(const char *out, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = out; p && *p;) {
        if (!strncmp(p, prefix, pl)) n++;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return n;
}

/* Progress on a stderr that is not a terminal (a CI log): plain lines with the
 * rate and ETA, none for a run shorter than the interval (10 s;
 * LLMPACK_PROGRESS_INTERVAL shortens it here), none with -q or --json. verify's
 * counts the text's tokens and advances after each block of each forward pass,
 * not only at a chunk's end, and says first how long the run will take when
 * that is over three intervals. */
static void test_progress_in_logs(void **state)
{
    (void)state;
    char *text = strdup(TEXT);
    char *dir = tu_tmpdir(), *out = NULL;
    char *m = tu_fmt("%s/m.lpk", dir), *q = tu_fmt("%s/q.lpk", dir);
    /* the default interval: these runs take well under 10 s, nothing is printed */
    unsetenv("LLMPACK_PROGRESS_INTERVAL");
    assert_int_equal(tu_llmpack(&out, "convert examples/stories260K -o '%s'", m), 0);
    assert_int_equal(count_lines(out, "llmpack convert: "), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f '%s' -c 64 --chunks 20", m, text), 0);
    assert_int_equal(count_lines(out, "llmpack verify: "), 0);
    free(out);

    /* an interval of 0: the estimate, a line at every step, then "done in". The
     * demo model has 5 blocks: 6 steps a pass (the blocks, the output matrix),
     * the last one of a chunk reported with the chunk's statistics (one chunk
     * a forward pass: --batch 1) */
    setenv("LLMPACK_PROGRESS_INTERVAL", "0", 1);
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f '%s' -c 64 --chunks 20 --batch 1", m, text),
                     0);
    assert_int_equal(count_lines(out, "llmpack verify: estimated "), 1);
    assert_int_equal(count_lines(out, "llmpack verify: "), 1 + 20 * 6 + 1);
    assert_non_null(strstr(out, " (20 chunks of 64 tokens, 1 forward pass each)\n"
                                "llmpack verify: 11 tokens / 1280 tokens (1%), "));
    assert_non_null(strstr(out, "llmpack verify: 64 tokens / 1280 tokens (5%), "));
    assert_non_null(strstr(out, "llmpack verify: 1280 tokens / 1280 tokens (100%), "));
    assert_non_null(strstr(out, " tokens/s, ETA "));
    assert_non_null(strstr(out, "llmpack verify: done in "));
    free(out);
    /* two chunks a forward pass (the default): 10 passes, a step is a sixth of
     * 128 tokens; the third lands on the first chunk's end and is not printed
     * (the updates at a chunk's end are the statistics', after the pass) */
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f '%s' -c 64 --chunks 20", m, text), 0);
    assert_int_equal(count_lines(out, "llmpack verify: "), 1 + 10 * 5 + 1);
    assert_null(strstr(out, "llmpack verify: 64 tokens / 1280 tokens"));
    assert_non_null(strstr(out, "llmpack verify: 21 tokens / 1280 tokens (2%), "));
    assert_non_null(strstr(out, "llmpack verify: 128 tokens / 1280 tokens (10%), "));
    assert_non_null(strstr(out, "llmpack verify: 1280 tokens / 1280 tokens (100%), "));
    free(out);
    /* with a reference the passes share each chunk: the reference's first
     * block is 5 of 64 tokens, its last step 32 */
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' -f '%s' -c 64 --chunks 2 --batch 1",
                                m, m, text), 0);
    assert_int_equal(count_lines(out, "llmpack verify: "), 1 + 2 * 12 + 1);
    assert_non_null(strstr(out, "(2 chunks of 64 tokens, 2 forward passes each)\n"
                                "llmpack verify: 5 tokens / 128 tokens (4%), "));
    assert_non_null(strstr(out, "llmpack verify: 32 tokens / 128 tokens (25%), "));
    assert_non_null(strstr(out, "llmpack verify: 64 tokens / 128 tokens (50%), "));
    assert_null(strchr(out, '\r'));       /* no terminal control in a log */
    assert_null(strstr(out, "\033["));
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0", m, q), 0);
    assert_true(count_lines(out, "llmpack quantize: ") >= 2);
    assert_non_null(strstr(out, " MiB/s, ETA ")); /* sizes in binary units */
    free(out);
    /* GPTQ: the blocks' calibration passes, each chunk through each block (5
     * blocks, 2 chunks), with their ETA, then "done in" */
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0 --method gptq --calib "
                                "'%s' --chunks 2 --force", m, q, text), 0);
    assert_int_equal(count_lines(out, "llmpack gptq blocks: "), 5 * 2 + 1);
    assert_non_null(strstr(out, "llmpack gptq blocks: 1 chunks / 10 chunks (10%), "));
    assert_non_null(strstr(out, "llmpack gptq blocks: 10 chunks / 10 chunks (100%), "));
    assert_non_null(strstr(out, " chunks/s, ETA "));
    assert_non_null(strstr(out, "llmpack gptq blocks: done in "));
    free(out);
    /* -q and --json: nothing */
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f '%s' -c 64 --chunks 5 -q", m, text), 0);
    assert_int_equal(count_lines(out, "llmpack verify: "), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f '%s' -c 64 --chunks 5 --json", m, text), 0);
    assert_int_equal(count_lines(out, "llmpack verify: "), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 --force -q", m, q), 0);
    assert_string_equal(out, "");
    free(out);
    /* a value that is not a number of seconds: the default */
    setenv("LLMPACK_PROGRESS_INTERVAL", "soon", 1);
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f '%s' -c 64 --chunks 5", m, text), 0);
    assert_int_equal(count_lines(out, "llmpack verify: "), 0);
    free(out);
    unsetenv("LLMPACK_PROGRESS_INTERVAL");
    free(m); free(q); free(text);
    tu_rmtree(dir);
    free(dir);
}

/* --ctx past a model's trained context (the demo model: 512) is measured, with
 * a warning naming both numbers and the file; at or below it, no warning. */
static void test_ctx_above_trained(void **state)
{
    (void)state;
    const char *m = tu_demo("m.lpk", "");
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' -f %s -c 1024 --chunks 2", m, m, TEXT),
                     0);
    char *want = tu_fmt("llmpack verify: warning: --ctx 1024 is above the 512 tokens %s was "
                        "trained on", m);
    assert_int_equal(count_lines(out, want), 2);   /* the reference and the model */
    assert_non_null(strstr(out, "2 chunks x 1024 tokens"));
    free(want);
    free(out);
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f %s -c 512 --chunks 2", m, TEXT), 0);
    assert_null(strstr(out, "warning"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_and_equals_forms),
        cmocka_unit_test(test_exit_codes_every_command),
        cmocka_unit_test(test_progress_in_logs),
        cmocka_unit_test(test_ctx_above_trained),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
