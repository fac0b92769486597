/* verify (and calibrate, generate, tokenize) against anything convert reads: a
 * Hugging Face or Meta folder or an archive is converted on the fly, in memory,
 * at its source precision, so the numbers equal those against the container
 * `llmpack convert` writes from the same folder, bit for bit. */
#include "tutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

static const char *const text_demo = "examples/TinyStories-valid-sample.txt";

/* Runs `llmpack ARGS --json`: the document (the whole output must be JSON:
 * with --json nothing else goes to stderr); fails unless it exits `want`. */
static json_t *verify_json(int want, const char *args)
{
    char *out = NULL;
    int rc = tu_llmpack(&out, "verify %s --json", args);
    if (rc != want) fail_msg("verify %s --json: exit %d, not %d: %s", args, rc, want,
                             out ? out : "");
    json_error_t je;
    json_t *doc = out ? json_loads(out, 0, &je) : NULL;
    if (!doc) fail_msg("verify %s --json: not JSON alone (%s): %s", args, out ? je.text : "-",
                       out ? out : "");
    free(out);
    return doc;
}

static json_t *result0(const json_t *doc)
{
    json_t *r = json_array_get(json_object_get(doc, "results"), 0);
    if (!json_is_object(r)) fail_msg("no results[0]");
    return r;
}

/* The measured numbers of two runs are the same doubles (as printed). */
static void assert_same_numbers(const json_t *a, const json_t *b, const char *what)
{
    static const char *const keys[] = {"ppl", "ref_ppl", "kld_mean", "kld_p99", "kld_max",
                                       "top1_agreement", "ppl_delta", "size_bytes"};
    const json_t *ra = result0(a), *rb = result0(b);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const json_t *x = json_object_get(ra, keys[i]), *y = json_object_get(rb, keys[i]);
        if (!json_is_number(x) || !json_is_number(y) ||
            json_number_value(x) != json_number_value(y))
            fail_msg("%s: %s differs: %.17g vs %.17g", what, keys[i], json_number_value(x),
                     json_number_value(y));
    }
}

static const char *ref_file(const json_t *doc)
{
    return json_string_value(json_object_get(json_object_get(doc, "reference"), "file"));
}

/* The demo model: --ref its HF folder equals --ref its conversion; the JSON
 * names the folder; the model under test may be a folder too; the stderr line
 * says what happens, and -q and --json silence it. */
static void test_demo_folder(void **state)
{
    (void)state;
    const char *lpk = tu_demo("s.lpk", "");
    const char *q = tu_demo("q.lpk", "--type q4_k_m");
    char *args = tu_fmt("'%s' --ref examples/stories260K -f %s -c 128", q, text_demo);
    json_t *a = verify_json(0, args);
    char *args2 = tu_fmt("'%s' --ref '%s' -f %s -c 128", q, lpk, text_demo);
    json_t *b = verify_json(0, args2);
    assert_same_numbers(a, b, "--ref examples/stories260K vs its .lpk");
    assert_string_equal(ref_file(a), "examples/stories260K");
    assert_string_equal(json_string_value(json_object_get(json_object_get(a, "reference"),
                                                          "checksums")), "verified");
    /* the folder as the model under test: the same weights as the reference */
    json_t *c = verify_json(0, "examples/stories260K --ref examples/stories260K -f "
                               "examples/TinyStories-valid-sample.txt -c 128 --chunks 4");
    assert_string_equal(json_string_value(json_object_get(result0(c), "file")),
                        "examples/stories260K");
    assert_true(json_number_value(json_object_get(result0(c), "kld_mean")) == 0.0);
    json_decref(a);
    json_decref(b);
    json_decref(c);

    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "verify %s --chunks 2", args), 0);
    assert_non_null(strstr(out, "llmpack verify: converting examples/stories260K "
                                "(hf-safetensors, source precision kept) into memory: "));
    assert_non_null(strstr(out, "nothing written to disk\n"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "verify %s --chunks 2 -q", args), 0);
    assert_null(strstr(out, "converting"));
    free(out);
    free(args);
    free(args2);
}

/* Points TMPDIR at dir for the commands run next; returns the old value
 * (malloc'ed, NULL when unset) for tmpdir_restore. */
static char *tmpdir_set(const char *dir)
{
    const char *old = getenv("TMPDIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("TMPDIR", dir, 1);
    return saved;
}

static void tmpdir_restore(char *saved)
{
    if (saved) setenv("TMPDIR", saved, 1);
    else unsetenv("TMPDIR");
    free(saved);
}

/* Counts the entries of dir (the run's TMPDIR) after a run. */
static void assert_empty(const char *dir, const char *what)
{
    int n = tu_dir_entries(dir, 0);
    if (n != 0) fail_msg("%s: %d entries left in TMPDIR %s", what, n, dir);
}

/* Archives (.tar, .zip) of the demo folder; and LLMPACK_MEMFD_MAX=0, which
 * sends the converted model to an unlinked file in TMPDIR: the same numbers,
 * nothing left in TMPDIR. */
static void test_demo_archive_and_spool(void **state)
{
    (void)state;
    const char *q = tu_demo("q.lpk", "--type q4_k_m");
    const char *lpk = tu_demo("s.lpk", "");
    char *dir = tu_tmpdir(), *tmpd = tu_fmt("%s/tmp", dir);
    assert_int_equal(mkdir(tmpd, 0700), 0);
    char *tar = tu_fmt("%s/stories260K.tar", dir), *zip = tu_fmt("%s/stories260K.zip", dir);
    char *cmd = tu_fmt("tar -C examples -cf '%s' stories260K && cd examples && "
                       "zip -q -r '%s' stories260K", tar, zip);
    if (system(cmd) != 0) fail_msg("%s failed", cmd);
    free(cmd);
    char *base = tu_fmt("'%s' --ref '%s' -f %s -c 128 --chunks 20", q, lpk, text_demo);
    json_t *want = verify_json(0, base);
    char *saved = tmpdir_set(tmpd);

    char *args = tu_fmt("'%s' --ref '%s' -f %s -c 128 --chunks 20", q, tar, text_demo);
    json_t *got = verify_json(0, args);
    assert_same_numbers(got, want, ".tar");
    assert_string_equal(ref_file(got), tar);
    json_decref(got);
    assert_empty(tmpd, ".tar");

    free(args);
    args = tu_fmt("'%s' --ref '%s' -f %s -c 128 --chunks 20", q, zip, text_demo);
    got = verify_json(0, args);
    assert_same_numbers(got, want, ".zip");
    json_decref(got);
    assert_empty(tmpd, ".zip");

    setenv("LLMPACK_MEMFD_MAX", "0", 1);
    free(args);
    args = tu_fmt("'%s' --ref examples/stories260K -f %s -c 128 --chunks 20", q, text_demo);
    got = verify_json(0, args);
    assert_same_numbers(got, want, "LLMPACK_MEMFD_MAX=0");
    json_decref(got);
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "verify %s", args), 0);
    char *line = tu_fmt("into an unlinked temporary file in %s: ", tmpd);
    if (!strstr(out, line)) fail_msg("no '%s' in: %s", line, out);
    free(line);
    free(out);
    assert_empty(tmpd, "LLMPACK_MEMFD_MAX=0");
    unsetenv("LLMPACK_MEMFD_MAX");

    tmpdir_restore(saved);
    json_decref(want);
    free(args);
    free(base);
    free(tar);
    free(zip);
    free(tmpd);
    tu_rmtree(dir);
    free(dir);
}

/* llama2-20m: --ref the HF folder (2 safetensors shards), the Meta folder (2
 * consolidated shards, merged) and a .tar of the Meta folder (unpacked into
 * TMPDIR, removed) each equal --ref the container convert writes from it. */
static void test_llama2_20m(void **state)
{
    (void)state;
    TU_NEED_SHARED(hf_s, "models/llama2-20m/hf");
    char *hf = strdup(hf_s);
    TU_NEED_SHARED(meta_s, "models/llama2-20m/meta");
    char *meta = strdup(meta_s);
    TU_NEED_SHARED(text, "text/docs-valid.txt");
    char *dir = tu_tmpdir(), *tmpd = tu_fmt("%s/tmp", dir);
    assert_int_equal(mkdir(tmpd, 0700), 0);
    char *l = tu_fmt("%s/l.lpk", dir), *lm = tu_fmt("%s/lm.lpk", dir),
         *l8 = tu_fmt("%s/l8.lpk", dir), *tar = tu_fmt("%s/llama2-20m-meta.tar", dir);
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' -q", hf, l), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' -q", meta, lm), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0 -q", l, l8), 0);
    free(out);
    char *cmd = tu_fmt("tar -C '%s/..' -cf '%s' meta", meta, tar);
    if (system(cmd) != 0) fail_msg("%s failed", cmd);
    free(cmd);

    char *saved = tmpdir_set(tmpd);
    const char *pairs[][2] = {{hf, l}, {meta, lm}, {tar, lm}};
    for (size_t i = 0; i < 3; i++) {
        char *a = tu_fmt("'%s' --ref '%s' -f '%s' --chunks 2", l8, pairs[i][0], text);
        char *b = tu_fmt("'%s' --ref '%s' -f '%s' --chunks 2", l8, pairs[i][1], text);
        json_t *ja = verify_json(0, a), *jb = verify_json(0, b);
        assert_same_numbers(ja, jb, pairs[i][0]);
        assert_string_equal(ref_file(ja), pairs[i][0]);
        assert_empty(tmpd, pairs[i][0]);
        json_decref(ja);
        json_decref(jb);
        free(a);
        free(b);
    }
    tmpdir_restore(saved);
    free(l);
    free(lm);
    free(l8);
    free(tar);
    free(tmpd);
    free(hf);
    free(meta);
    tu_rmtree(dir);
    free(dir);
}

/* A bad folder: convert's error naming the file, exit 3 (bad content); in
 * --json the reference's error; a folder that does not exist: exit 1. */
static void test_bad_folder(void **state)
{
    (void)state;
    const char *q = tu_demo("q.lpk", "--type q4_k_m");
    char *dir = tu_tmpdir(), *bad = tu_fmt("%s/bad", dir), *bare = tu_fmt("%s/bare", dir);
    assert_int_equal(mkdir(bad, 0700), 0);
    assert_int_equal(mkdir(bare, 0700), 0);
    static const char *const files[] = {"config.json", "tokenizer.model", "model.safetensors"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = 0;
        char *src = tu_fmt("examples/stories260K/%s", files[i]);
        char *b = tu_read_file(src, &n);
        assert_non_null(b);
        char *dst = tu_fmt("%s/%s", bad, files[i]);
        /* the safetensors file cut short: its tensors run past the end */
        assert_int_equal(tu_write_file(dst, b, i == 2 ? n / 2 : n), 0);
        free(dst);
        if (i == 0) {
            dst = tu_fmt("%s/%s", bare, files[i]);
            assert_int_equal(tu_write_file(dst, b, n), 0);
            free(dst);
        }
        free(b);
        free(src);
    }
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' -f %s -c 128", q, bad, text_demo), 3);
    char *want = tu_fmt("llmpack verify: %s/model.safetensors: ", bad);
    if (!strstr(out, want)) fail_msg("no '%s' in: %s", want, out);
    free(want);
    free(out);
    json_t *doc = NULL;
    char *args = tu_fmt("'%s' --ref '%s' -f %s -c 128", q, bad, text_demo);
    {
        assert_int_equal(tu_llmpack(&out, "verify %s --json", args), 3);
        const char *brace = out ? strchr(out, '{') : NULL;
        assert_non_null(brace);
        doc = json_loads(brace, 0, NULL);
        assert_non_null(doc);
        const char *e = json_string_value(json_object_get(json_object_get(doc, "reference"),
                                                          "error"));
        assert_non_null(e);
        assert_non_null(strstr(e, "model.safetensors"));
        assert_string_equal(ref_file(doc), bad);
        json_decref(doc);
        free(out);
    }
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' -f %s -c 128", q, bare, text_demo), 3);
    assert_non_null(strstr(out, "config.json alone has no weights"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s/none' -f %s -c 128", q, dir,
                                text_demo), 1);
    assert_non_null(strstr(out, "/none: cannot open"));
    free(out);
    /* the model under test, and the other commands, the same way */
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f %s -c 128", bad, text_demo), 3);
    free(out);
    assert_int_equal(tu_llmpack(&out, "generate '%s' -p Once -n 2", bad), 3);
    free(out);
    free(args);
    free(bad);
    free(bare);
    tu_rmtree(dir);
    free(dir);
}

/* calibrate, generate and tokenize open models through the same function: a
 * folder gives what its .lpk gives (the importance matrix byte for byte). */
static void test_other_commands(void **state)
{
    (void)state;
    const char *lpk = tu_demo("s.lpk", "");
    char *dir = tu_tmpdir();
    char *a = NULL, *b = NULL;
    assert_int_equal(tu_llmpack(&a, "calibrate examples/stories260K -f %s -c 128 --chunks 8 "
                                "-o '%s/a.dat' -q", text_demo, dir), 0);
    assert_int_equal(tu_llmpack(&b, "calibrate '%s' -f %s -c 128 --chunks 8 -o '%s/b.dat' -q",
                                lpk, text_demo, dir), 0);
    free(a);
    free(b);
    size_t na = 0, nb = 0;
    char *pa = tu_fmt("%s/a.dat", dir), *pb = tu_fmt("%s/b.dat", dir);
    char *da = tu_read_file(pa, &na), *db = tu_read_file(pb, &nb);
    assert_non_null(da);
    assert_non_null(db);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(da);
    free(db);
    free(pa);
    free(pb);

    assert_int_equal(tu_llmpack(&a, "generate examples/stories260K -p 'Once upon a time' -n 12 "
                                "--json"), 0);
    assert_int_equal(tu_llmpack(&b, "generate '%s' -p 'Once upon a time' -n 12 --json", lpk), 0);
    json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
    if (!ja || !jb) fail_msg("generate --json is not JSON alone: %s / %s", a, b);
    assert_true(json_equal(json_object_get(ja, "tokens"), json_object_get(jb, "tokens")));
    assert_string_equal(json_string_value(json_object_get(ja, "text")),
                        json_string_value(json_object_get(jb, "text")));
    json_decref(ja);
    json_decref(jb);
    free(a);
    free(b);

    assert_int_equal(tu_llmpack(&a, "tokenize examples/stories260K -p 'Hello there, Lily!' "
                                "--json"), 0);
    assert_int_equal(tu_llmpack(&b, "tokenize '%s' -p 'Hello there, Lily!' --json", lpk), 0);
    assert_string_equal(a, b);
    free(a);
    free(b);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_folder),
        cmocka_unit_test(test_demo_archive_and_spool),
        cmocka_unit_test(test_llama2_20m),
        cmocka_unit_test(test_bad_folder),
        cmocka_unit_test(test_other_commands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
