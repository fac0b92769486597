/* Integrity on every path (docs/RELIABILITY.md): checksums checked by every
 * command, NaN/Inf in weights, scales and logits, files truncated while
 * mapped, signals at several points, stale temporary files, special output
 * files, links in archives, structurally broken GGUF. Each case runs the real
 * binary (or the library) and checks the exit code, the message and that no
 * output or temporary file is left. */
#include "tutil.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "../format/lpk.h"

#define WAIT_S 180

static int sh(const char *cmd) { return system(cmd); }

static void expect_fail(int want, const char *sub, const char *no_file, const char *args_fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Runs llmpack, wants exit `want` with `sub` in its output and no file no_file. */
static void expect_fail(int want, const char *sub, const char *no_file, const char *args_fmt, ...)
{
    va_list ap;
    va_start(ap, args_fmt);
    char args[4096];
    vsnprintf(args, sizeof args, args_fmt, ap);
    va_end(ap);
    char *out = NULL;
    int rc = tu_llmpack(&out, "%s", args);
    if (rc != want || (sub && (!out || !strstr(out, sub))))
        fail_msg("llmpack %s: exit %d (want %d), output: %s (want '%s')", args, rc, want,
                 out ? out : "", sub ? sub : "");
    if (no_file && tu_exists(no_file)) fail_msg("llmpack %s left %s", args, no_file);
    free(out);
}

/* A small, real model: stories260K converted to f32 (from ../shared's f32
 * original, else from the demo model's f16 values). */
static char *small_model(const char *dir)
{
    const char *src = tu_shared("models/stories260K/hf");
    if (!src) src = "examples/stories260K";
    char *m = tu_fmt("%s/m.lpk", dir), *out = NULL;
    if (tu_llmpack(&out, "convert '%s' -o '%s' --type f32", src, m)) fail_msg("convert: %s", out);
    free(out);
    return m;
}

static void copy_flip(const char *from, const char *to, size_t off, uint8_t x)
{
    size_t n;
    char *b = tu_read_file(from, &n);
    assert_non_null(b);
    assert_true(off < n);
    b[off] ^= (char)x;
    assert_int_equal(tu_write_file(to, b, n), 0);
    free(b);
}

static const lpk_tensor *tensor_of(const char *path, const char *name, lpk_reader **r)
{
    assert_int_equal(lpk_reader_open_flags(path, LPK_OPEN_NO_VERIFY, r, NULL), 0);
    const lpk_tensor *t = lpk_reader_find(*r, name);
    assert_non_null(t);
    return t;
}

/* Rewrites container `from` as `to` (valid checksums) after edit() changed
 * the bytes of tensor `name`. */
static void rewrite(const char *from, const char *to, const char *name,
                    void (*edit)(const lpk_tensor *t, uint8_t *bytes))
{
    lpk_reader *r;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(from, &r, &err), 0);
    size_t n = lpk_reader_n_tensors(r);
    lpk_tensor *d = calloc(n, sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = *lpk_reader_tensor(r, i);
    lpk_writer *w;
    assert_int_equal(lpk_writer_open(to, lpk_reader_meta(r), d, n, LPK_WRITE_FORCE, &w, &err), 0);
    int edited = 0;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        uint8_t *b = malloc(t->size);
        memcpy(b, t->data, t->size);
        if (!strcmp(t->name, name)) edit(t, b), edited = 1;
        assert_int_equal(lpk_writer_tensor_begin(w, t->name, &err), 0);
        assert_int_equal(lpk_writer_tensor_write(w, b, t->size, &err), 0);
        assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
        free(b);
    }
    assert_true(edited);
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    free(d);
    lpk_reader_close(r);
}

/* ---------------------------------------------------------------- 1. checksums */
static void test_checksums_every_command(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *m = small_model(dir);
    const char *text = tu_shared("text/TinyStories-valid-sample.txt");
    char *text_p = text ? strdup(text) : NULL;
    assert_non_null(text_p);
    char *o = tu_fmt("%s/out.lpk", dir), *g = tu_fmt("%s/out.gguf", dir);

    /* one letter of general.name flipped: the header checksum fails */
    size_t n;
    char *b = tu_read_file(m, &n);
    char *name = memmem(b, n, "general.name", 12);
    assert_non_null(name);
    size_t name_off = (size_t)(name - b) + 8; /* the 'n' of "name" */
    free(b);
    char *hdr = tu_fmt("%s/hdr.lpk", dir);
    copy_flip(m, hdr, name_off, 0x20);
    const char *H = "header+metadata+directory";
    expect_fail(3, H, NULL, "info '%s'", hdr);
    expect_fail(3, H, NULL, "check '%s'", hdr);
    expect_fail(3, H, o, "quantize '%s' -o '%s' --type q8_0", hdr, o);
    expect_fail(3, H, g, "export '%s' -o '%s'", hdr, g);
    expect_fail(3, H, NULL, "verify '%s' --text '%s' --ctx 64 --chunks 1", hdr, text_p);
    expect_fail(3, H, NULL, "tokenize '%s' --text hello", hdr);
    expect_fail(3, H, NULL, "generate '%s' --prompt hello -n 2", hdr);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    /* on purpose, the check can be skipped (check itself never skips it) */
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0 --no-verify-checksums",
                                hdr, o), 0);
    free(out);
    assert_true(tu_exists(o));
    unlink(o);
    expect_fail(3, H, NULL, "check --no-verify-checksums '%s'", hdr);

    /* one byte of a tensor flipped: named, nothing written */
    lpk_reader *r;
    const lpk_tensor *t = tensor_of(m, "blk.0.attn_q.weight", &r);
    size_t toff = (size_t)t->offset + 40;
    lpk_reader_close(r);
    char *ten = tu_fmt("%s/ten.lpk", dir);
    copy_flip(m, ten, toff, 0x01);
    const char *T = "tensor 'blk.0.attn_q.weight'";
    expect_fail(3, T, NULL, "check '%s'", ten);
    expect_fail(3, T, o, "quantize '%s' -o '%s' --type q8_0", ten, o);
    expect_fail(3, T, g, "export '%s' -o '%s'", ten, g);
    expect_fail(3, T, NULL, "verify '%s' --text '%s' --ctx 64 --chunks 1", ten, text_p);
    expect_fail(3, T, NULL, "verify '%s' --ref '%s' --text '%s' --ctx 64 --chunks 1", m, ten,
                text_p);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    /* the last tensor's and a middle one's: quantize reads them on its read-ahead
     * thread first, and the loop reports them all the same, for every output */
    assert_int_equal(lpk_reader_open_flags(m, LPK_OPEN_NO_VERIFY, &r, NULL), 0);
    size_t nt = lpk_reader_n_tensors(r);
    for (size_t pick = 0; pick < 2; pick++) {
        t = lpk_reader_tensor(r, pick ? nt / 2 : nt - 1);
        copy_flip(m, ten, (size_t)t->offset + t->size - 1, 0x01);
        char *want = tu_fmt("tensor '%s'", t->name);
        /* through the mapping (these tensors are small) and read into buffers */
        for (int rd = 0; rd < 2; rd++) {
            if (rd) setenv("LLMPACK_QUANT_READ_MIN", "0", 1);
            expect_fail(3, want, o, "quantize '%s' -o '%s' --type q8_0", ten, o);
            expect_fail(3, want, NULL, "quantize '%s' -o '%s/' --type q8_0,q4_0", ten, dir);
            unsetenv("LLMPACK_QUANT_READ_MIN");
            assert_int_equal(tu_dir_entries(dir, 1), 0);
        }
        free(want);
    }
    lpk_reader_close(r);

    /* GGUF has no checksums, and info and verify say so */
    char *gp = strdup(tu_shared_or_demo("gguf/stories260K-f32.gguf", "--type f32"));
    assert_int_equal(tu_llmpack(&out, "info '%s'", gp), 0);
    assert_non_null(strstr(out, "checksums:    none (GGUF carries no checksums"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "verify '%s' --text '%s' --ctx 64 --chunks 1 -q", gp,
                                text_p), 0);
    assert_non_null(strstr(out, "GGUF carries no checksums"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "info --json '%s'", m), 0);
    assert_non_null(strstr(out, "\"checksums\": \"xxh3\""));
    free(out);
    free(gp);
    tu_rmtree(dir);
    free(dir); free(m); free(o); free(g); free(hdr); free(ten); free(text_p);
}

/* ---------------------------------------------------------------- 2. NaN/Inf */
static void put_nan(const lpk_tensor *t, uint8_t *b)
{
    float v = NAN;
    memcpy(b + 4 * (size_t)(1 * t->dims[1] + 5), &v, 4); /* row 1, column 5 */
}

static void put_inf_scale(const lpk_tensor *t, uint8_t *b)
{
    assert_int_equal(t->type, LPK_TYPE_Q8_0);
    b[34 * 3] = 0x00; /* block 3's f16 scale: +Inf */
    b[34 * 3 + 1] = 0x7c;
}

static void put_huge_row(const lpk_tensor *t, uint8_t *b)
{
    float v = 3e38f;
    for (int64_t c = 0; c < t->dims[1]; c++) memcpy(b + 4 * (size_t)(7 * t->dims[1] + c), &v, 4);
}

/* The JSON object in out (stderr's message line may come first). */
static json_t *keys_of(const char *out)
{
    json_error_t je;
    const char *b = out ? strchr(out, '{') : NULL;
    json_t *j = b ? json_loads(b, 0, &je) : NULL;
    if (!j) fail_msg("not JSON: %s", out ? out : "");
    return j;
}

static void test_nonfinite(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *m = small_model(dir);
    char *text = strdup(tu_shared("text/TinyStories-valid-sample.txt"));
    char *nan = tu_fmt("%s/nan.lpk", dir), *o = tu_fmt("%s/o.lpk", dir), *g = tu_fmt("%s/o.gguf", dir);
    rewrite(m, nan, "blk.0.attn_q.weight", put_nan);
    const char *N = "blk.0.attn_q.weight: NaN at row 1, column 5";
    expect_fail(3, N, NULL, "check '%s'", nan);
    expect_fail(3, N, g, "export '%s' -o '%s'", nan, g);
    expect_fail(3, N, o, "quantize '%s' -o '%s' --type q8_0", nan, o);
    setenv("LLMPACK_QUANT_READ_MIN", "0", 1); /* read into a buffer: the same message */
    expect_fail(3, N, o, "quantize '%s' -o '%s' --type q8_0", nan, o);
    unsetenv("LLMPACK_QUANT_READ_MIN");
    /* several outputs: none is left, complete or not */
    char *od = tu_fmt("%s/multi", dir);
    assert_int_equal(mkdir(od, 0700), 0);
    expect_fail(3, N, NULL, "quantize '%s' -o '%s/' --type q8_0,q4_k_m --format gguf", nan, od);
    assert_int_equal(tu_dir_entries(od, 0), 0);
    free(od);
    expect_fail(3, N, NULL, "verify '%s' --text '%s' --ctx 64 --chunks 1", nan, text);

    /* verify --json: the same keys as a good run, unmeasured ones null, the error */
    char *good = NULL, *bad = NULL;
    assert_int_equal(tu_llmpack(&good, "verify '%s' --ref '%s' --text '%s' --ctx 64 --chunks 1 "
                                "--json --max-kld 1", m, m, text), 0);
    assert_int_equal(tu_llmpack(&bad, "verify '%s' --ref '%s' --text '%s' --ctx 64 --chunks 1 "
                                "--json --max-kld 1", nan, m, text), 3);
    json_t *dg = keys_of(good), *db = keys_of(bad);
    /* the document and its first result: the same keys in both runs */
    json_t *jg = json_array_get(json_object_get(dg, "results"), 0);
    json_t *jb = json_array_get(json_object_get(db, "results"), 0);
    const json_t *pairs[][2] = {{dg, db}, {jg, jb}};
    for (size_t p = 0; p < 2; p++) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)pairs[p][0], k, v) {
            if (!json_object_get(pairs[p][1], k))
                fail_msg("key %s missing from the failed run's JSON", k);
        }
        json_object_foreach((json_t *)pairs[p][1], k, v) {
            if (!json_object_get(pairs[p][0], k))
                fail_msg("key %s missing from the good run's JSON", k);
        }
    }
    assert_true(json_is_null(json_object_get(jb, "ppl")));
    assert_true(json_is_null(json_object_get(jb, "kld_mean")));
    assert_true(json_is_false(json_object_get(jb, "pass")));
    assert_true(json_is_false(json_object_get(db, "pass")));
    assert_non_null(strstr(json_string_value(json_object_get(jb, "error")), N));
    assert_non_null(strstr(json_string_value(json_object_get(db, "error")), N));
    json_t *lim = json_array_get(json_object_get(jb, "limits"), 0);
    assert_true(json_is_null(json_object_get(lim, "measured")));
    assert_true(json_is_false(json_object_get(lim, "pass")));
    assert_true(json_is_null(json_object_get(jg, "error")));
    assert_true(json_is_true(json_object_get(jg, "pass")));
    assert_true(json_is_true(json_object_get(dg, "pass")));
    json_decref(dg);
    json_decref(db);
    /* both against the published schema (skipped without python3-jsonschema) */
    tu_json_schema_valid("docs/verify.schema.json", good, "verify --json, good run");
    tu_json_schema_valid("docs/verify.schema.json", bad, "verify --json, NaN weights");
    free(good);
    free(bad);

    /* an Inf scale in a q8_0 block */
    char *q8 = tu_fmt("%s/q8.lpk", dir), *inf = tu_fmt("%s/inf.lpk", dir), *out = NULL;
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0 --pure", m, q8), 0);
    free(out);
    rewrite(q8, inf, "blk.1.attn_q.weight", put_inf_scale);
    const char *I = "blk.1.attn_q.weight: q8_0 block 3 (row 1, columns 32..63) has a NaN or "
                    "infinite scale";
    expect_fail(3, I, NULL, "check '%s'", inf);
    expect_fail(3, I, NULL, "verify '%s' --text '%s' --ctx 64 --chunks 1", inf, text);
    expect_fail(3, I, g, "export '%s' -o '%s'", inf, g);

    /* finite weights whose logits overflow: verify measures nothing and says so */
    char *huge = tu_fmt("%s/huge.lpk", dir);
    rewrite(m, huge, "token_embd.weight", put_huge_row);
    expect_fail(3, "NaN or infinite", NULL, "verify '%s' --text '%s' --ctx 64 --chunks 1", huge,
                text);
    /* several chunks in one forward pass name the same chunk and position as
     * one chunk a pass does */
    char *o1 = NULL, *o3 = NULL;
    assert_int_equal(tu_llmpack(&o1, "verify '%s' --text '%s' --ctx 64 --chunks 3 --batch 1 -q",
                                huge, text), 3);
    assert_int_equal(tu_llmpack(&o3, "verify '%s' --text '%s' --ctx 64 --chunks 3 --batch 3 -q",
                                huge, text), 3);
    assert_non_null(strstr(o1, ": chunk "));
    assert_string_equal(o1, o3);
    free(o1);
    free(o3);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    tu_rmtree(dir);
    free(dir); free(m); free(text); free(nan); free(o); free(g); free(q8); free(inf); free(huge);
}

/* ---------------------------------------------------------------- big input */
#define BIG_T 4
#define BIG_ROWS 2048
#define BIG_COLS 8192 /* f32: 64 MiB per tensor */

/* A 256 MiB container of finite f32 weights, big enough that a command is
 * still reading it when a fault arrives. */
static char *big_input(const char *dir)
{
    char *p = tu_fmt("%s/big.lpk", dir);
    lpk_tensor d[BIG_T];
    memset(d, 0, sizeof d);
    for (int i = 0; i < BIG_T; i++) {
        snprintf(d[i].name, sizeof d[i].name, "blk.%d.ffn_up.weight", i);
        d[i].type = LPK_TYPE_F32;
        d[i].n_dims = 2;
        d[i].dims[0] = BIG_ROWS;
        d[i].dims[1] = BIG_COLS;
    }
    lpk_meta *m = lpk_meta_new();
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_error err = {0};
    lpk_writer *w;
    assert_int_equal(lpk_writer_open(p, m, d, BIG_T, 0, &w, &err), 0);
    float *row = malloc(BIG_COLS * sizeof *row);
    for (int c = 0; c < BIG_COLS; c++) row[c] = 0.001f * (float)((c * 37) % 101 - 50);
    for (int i = 0; i < BIG_T; i++) {
        assert_int_equal(lpk_writer_tensor_begin(w, d[i].name, &err), 0);
        for (int r = 0; r < BIG_ROWS; r++)
            assert_int_equal(lpk_writer_tensor_write(w, row, BIG_COLS * sizeof *row, &err), 0);
        assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
    }
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    free(row);
    lpk_meta_free(m);
    return p;
}

/* Waits until the temporary file of dir/base (.base.tmp-XXXXXX) exists and
 * holds at least min_bytes; fails with `why` and the child's log if the child
 * ends first. */
static void wait_tmp(pid_t pid, const char *dir, const char *base, long long min_bytes,
                     const char *log, const char *why)
{
    struct timespec nap = {0, 1000 * 1000};
    for (long i = 0; i < (long)WAIT_S * 1000; i++) {
        long long s = tu_tmp_size(dir, base);
        if (s >= 0 && s >= min_bytes) return;
        int ws;
        if (waitpid(pid, &ws, WNOHANG) == pid) {
            char *l = tu_read_file(log, NULL);
            fail_msg("%s (status %d): %s", why, ws, l ? l : "");
        }
        nanosleep(&nap, NULL);
    }
    fail_msg("%s: no %s/.%s.tmp-* of %lld bytes after %d s", why, dir, base, min_bytes, WAIT_S);
}

/* Starts `llmpack quantize in -o dir/out.lpk --type q8_0` and returns once its
 * temporary output holds at least min_bytes (0: exists). */
static pid_t start_quantize(const char *dir, const char *in, long long min_bytes, char **log)
{
    char *o = tu_fmt("%s/out.lpk", dir);
    *log = tu_fmt("%s/log.txt", dir);
    char *argv[] = {"llmpack", "quantize", (char *)in, "-o", o, "--type", "q8_0", NULL};
    pid_t pid = tu_llmpack_spawn(*log, argv);
    assert_true(pid > 0);
    wait_tmp(pid, dir, "out.lpk", min_bytes, *log, "quantize ended before the fault point");
    free(o);
    return pid;
}

/* Sends sig to the child pid and wants it to end with exit 1 saying it was
 * interrupted (its output in log); what names the case in a failure. */
static void signal_wants_exit_1(pid_t pid, int sig, const char *log, const char *what)
{
    assert_int_equal(kill(pid, sig), 0);
    int ws = tu_wait_child(pid, WAIT_S, what);
    char *l = tu_read_file(log, NULL);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 1)
        fail_msg("%s: wait status %d (want exit 1): %s", what, ws, l ? l : "");
    if (!l || !strstr(l, "interrupted by a signal"))
        fail_msg("%s: no 'interrupted by a signal' in: %s", what, l ? l : "");
    free(l);
}

/* ---------------------------------------------------------------- 3. truncation */
static void test_truncated_while_mapped_library(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_fmt("%s/t.lpk", dir);
    lpk_tensor d[2];
    memset(d, 0, sizeof d);
    for (int i = 0; i < 2; i++) {
        snprintf(d[i].name, sizeof d[i].name, "t%d", i);
        d[i].type = LPK_TYPE_F32;
        d[i].n_dims = 2;
        d[i].dims[0] = 256;
        d[i].dims[1] = 4096;
    }
    lpk_error err = {0};
    lpk_writer *w;
    assert_int_equal(lpk_writer_open(p, NULL, d, 2, 0, &w, &err), 0);
    float *buf = calloc(256 * 4096, sizeof *buf);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(lpk_writer_tensor_begin(w, d[i].name, &err), 0);
        assert_int_equal(lpk_writer_tensor_write(w, buf, 256 * 4096 * 4, &err), 0);
        assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
    }
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    free(buf);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(p, &r, &err), 0);
    const void *data;
    assert_int_equal(lpk_reader_tensor_data(r, 0, &data, &err), 0);
    /* a pipeline's writer, open while its input is read */
    char *o = tu_fmt("%s/o.lpk", dir);
    assert_int_equal(lpk_writer_open(o, NULL, d, 1, 0, &w, &err), 0);
    /* a second process shrinks the file while it is mapped here */
    pid_t pid = fork();
    if (pid == 0) _exit(truncate(p, 4 << 20) == 0 ? 0 : 1);
    int ws = tu_wait_child(pid, WAIT_S, "truncating child");
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    lpk_error_clear(&err);
    assert_int_equal(lpk_reader_tensor_data(r, 1, &data, &err), LPK_ETRUNC);
    char *want = tu_fmt("%s changed or was truncated while reading", p);
    assert_string_equal(err.msg, want);
    free(want);
    /* the writer refuses to place what it produced from that input */
    assert_int_equal(lpk_writer_tensor_begin(w, d[0].name, &err), 0);
    float *z = calloc(256 * 4096, sizeof *z);
    assert_int_equal(lpk_writer_tensor_write(w, z, 256 * 4096 * 4, &err), 0);
    free(z);
    assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
    lpk_error_clear(&err);
    assert_int_equal(lpk_writer_finish(w, &err), LPK_ETRUNC);
    assert_false(tu_exists(o));
    lpk_reader_close(r);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    tu_rmtree(dir);
    free(dir); free(p); free(o);
}

/* lpk_reader_tensor_read: the bytes of the mapping, and every check of
 * lpk_reader_tensor_data with the same message (checksum, NaN), on the copy;
 * a file that ends early; a reader of a buffer. */
static void test_tensor_read(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *m = small_model(dir);
    lpk_reader *r;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(m, &r, &err), 0);
    size_t nt = lpk_reader_n_tensors(r);
    size_t n;
    char *file = tu_read_file(m, &n);
    for (size_t i = 0; i < nt; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        uint8_t *b = malloc(t->size + 1);
        assert_int_equal(lpk_reader_tensor_read(r, i, b, &err), 0);
        assert_memory_equal(b, file + t->offset, t->size);
        const void *d;
        assert_int_equal(lpk_reader_tensor_data(r, i, &d, &err), 0);
        assert_memory_equal(b, d, t->size);
        free(b);
    }
    lpk_reader_close(r);
    /* from a buffer: copied */
    assert_int_equal(lpk_reader_open_buffer(file, n, "buffered", &r, &err), 0);
    const lpk_tensor *t0 = lpk_reader_tensor(r, nt - 1);
    uint8_t *b0 = malloc(t0->size);
    assert_int_equal(lpk_reader_tensor_read(r, nt - 1, b0, &err), 0);
    assert_memory_equal(b0, file + t0->offset, t0->size);
    free(b0);
    lpk_reader_close(r);

    /* a flipped byte, a NaN: the messages tensor_data gives */
    char *bad = tu_fmt("%s/bad.lpk", dir), *nan = tu_fmt("%s/nan.lpk", dir);
    assert_int_equal(lpk_reader_open_flags(m, LPK_OPEN_NO_VERIFY, &r, NULL), 0);
    const lpk_tensor *tq = lpk_reader_find(r, "blk.0.attn_q.weight");
    assert_non_null(tq);
    size_t qi = lpk_reader_index(r, tq), qsize = (size_t)tq->size;
    copy_flip(m, bad, (size_t)tq->offset + qsize / 2, 0x04);
    lpk_reader_close(r);
    rewrite(m, nan, "blk.0.attn_q.weight", put_nan);
    const char *files[] = {bad, nan};
    const int want[] = {LPK_ECHECKSUM, LPK_EBADVALUE};
    for (int f = 0; f < 2; f++) {
        lpk_error e1 = {0}, e2 = {0};
        uint8_t *b = malloc(qsize);
        const void *d;
        assert_int_equal(lpk_reader_open(files[f], &r, &err), 0);
        assert_int_equal(lpk_reader_tensor_read(r, qi, b, &e1), want[f]);
        assert_int_equal(lpk_reader_tensor_data(r, qi, &d, &e2), want[f]);
        assert_null(d);
        assert_string_equal(e1.msg, e2.msg);
        lpk_reader_close(r);
        /* the checksum check is the caller's choice, as for tensor_data */
        if (want[f] == LPK_ECHECKSUM) {
            assert_int_equal(lpk_reader_open_flags(files[f], LPK_OPEN_NO_VERIFY, &r, &err), 0);
            assert_int_equal(lpk_reader_tensor_read(r, qi, b, &err), 0);
            lpk_reader_close(r);
        }
        free(b);
    }

    /* the file shrinks after the open: LPK_ETRUNC naming it and the tensor */
    assert_int_equal(lpk_reader_open(m, &r, &err), 0);
    const lpk_tensor *tl = lpk_reader_tensor(r, nt - 1);
    uint8_t *bl = malloc(tl->size);
    assert_int_equal(truncate(m, (off_t)(tl->offset + tl->size / 2)), 0);
    lpk_error_clear(&err);
    assert_int_equal(lpk_reader_tensor_read(r, nt - 1, bl, &err), LPK_ETRUNC);
    char *w1 = tu_fmt("%s changed or was truncated while reading: tensor '%s'", m, tl->name);
    if (!strstr(err.msg, w1)) fail_msg("message: %s (want %s)", err.msg, w1);
    free(w1);
    free(bl);
    lpk_reader_close(r);
    free(file);
    tu_rmtree(dir);
    free(dir); free(m); free(bad); free(nan);
}

/* Reads tensor i of path in parts of `part` bytes (the last shorter); the
 * status of the first part that fails (its message in err), or 0 with the
 * bytes in b. */
static int read_parts(const char *path, size_t i, size_t part, uint8_t *b, lpk_error *err)
{
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(path, &r, err), 0);
    const lpk_tensor *t = lpk_reader_tensor(r, i);
    lpk_part_read *p;
    int rc = lpk_reader_part_begin(r, i, &p, err);
    for (uint64_t at = 0; !rc && at < t->size; at += part) {
        uint64_t k = t->size - at < part ? t->size - at : part;
        rc = lpk_reader_part_read(p, b + at, k, err);
    }
    lpk_reader_part_end(p);
    lpk_reader_close(r);
    return rc;
}

static void put_nan_late(const lpk_tensor *t, uint8_t *b)
{
    float v = NAN;
    memcpy(b + 4 * (size_t)(150 * lpk_tensor_ncols(t) + 5), &v, 4); /* row 150, column 5 */
}

static void put_nan_early(const lpk_tensor *t, uint8_t *b)
{
    float v = INFINITY;
    memcpy(b + 4 * (size_t)(10 * lpk_tensor_ncols(t) + 3), &v, 4); /* row 10, column 3 */
}

/* A tensor read in parts (lpk_reader_part_read, as quantize reads a large
 * tensor in pieces) is checked as a whole read checks it: the same bytes, and
 * the same status and message for a flipped byte in any part, a NaN in a
 * later part (its row and column in the tensor), and a NaN in a part before
 * the flipped byte (the checksum first, as in a whole read); also through
 * `quantize` with pieces of the stories260K ffn_gate (172 rows: 64, 64, 44
 * at LLMPACK_QUANT_SLICE=4096). */
static void test_parts_checked(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *m = small_model(dir);
    const char *name = "blk.0.ffn_gate.weight";
    lpk_reader *r;
    const lpk_tensor *t = tensor_of(m, name, &r);
    size_t ti = lpk_reader_index(r, t), size = (size_t)t->size, row = size / (size_t)lpk_tensor_nrows(t);
    size_t toff = (size_t)t->offset;
    assert_true(lpk_tensor_nrows(t) > 150);
    lpk_reader_close(r);
    char *flip = tu_fmt("%s/flip.lpk", dir), *late = tu_fmt("%s/late.lpk", dir);
    char *both = tu_fmt("%s/both.lpk", dir), *o = tu_fmt("%s/o.lpk", dir);
    copy_flip(m, flip, toff + 100 * row + 9, 0x04);
    rewrite(m, late, name, put_nan_late);
    rewrite(m, both, name, put_nan_early);
    {
        /* the NaN at row 10, then a byte of row 120 flipped */
        char *tmp = tu_fmt("%s/tmp.lpk", dir);
        copy_flip(both, tmp, toff + 120 * row + 2, 0x10);
        assert_int_equal(rename(tmp, both), 0);
        free(tmp);
    }
    size_t n;
    char *file = tu_read_file(m, &n);
    uint8_t *b = malloc(size), *w = malloc(size);
    const size_t parts[] = {4, 64 * row, 1000 * 4, size - 4, size};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        lpk_error e = {0};
        assert_int_equal(read_parts(m, ti, parts[k], b, &e), 0);
        assert_memory_equal(b, file + toff, size);
        const char *bad[] = {flip, late, both};
        const int want[] = {LPK_ECHECKSUM, LPK_EBADVALUE, LPK_ECHECKSUM};
        for (int f = 0; f < 3; f++) {
            lpk_error ew = {0};
            assert_int_equal(lpk_reader_open(bad[f], &r, &ew), 0);
            assert_int_equal(lpk_reader_tensor_read(r, ti, w, &ew), want[f]);
            lpk_reader_close(r);
            lpk_error_clear(&e);
            assert_int_equal(read_parts(bad[f], ti, parts[k], b, &e), want[f]);
            assert_string_equal(e.msg, ew.msg);
        }
    }
    /* a part that is not whole elements, or runs past the end */
    assert_int_equal(lpk_reader_open(m, &r, NULL), 0);
    lpk_part_read *p;
    lpk_error e = {0};
    assert_int_equal(lpk_reader_part_begin(r, ti, &p, &e), 0);
    assert_int_equal(lpk_reader_part_read(p, b, 3, &e), LPK_EINVAL);
    assert_int_equal(lpk_reader_part_read(p, b, size + 4, &e), LPK_EINVAL);
    lpk_reader_part_end(p);
    lpk_reader_close(r);

    /* quantize in pieces: the same messages, nothing written */
    const char *NL = "blk.0.ffn_gate.weight: NaN at row 150, column 5";
    setenv("LLMPACK_QUANT_SLICE", "4096", 1);
    expect_fail(3, NL, o, "quantize '%s' -o '%s' --type q8_0", late, o);
    expect_fail(3, NL, NULL, "quantize '%s' -o '%s/' --type q8_0,q4_k_m", late, dir);
    const char *T = "tensor 'blk.0.ffn_gate.weight' (offset";
    expect_fail(3, T, o, "quantize '%s' -o '%s' --type q4_1", flip, o);
    expect_fail(3, T, o, "quantize '%s' -o '%s' --type q4_1", both, o);
    unsetenv("LLMPACK_QUANT_SLICE");
    expect_fail(3, NL, NULL, "check '%s'", late);
    expect_fail(3, T, NULL, "check '%s'", both);
    free(b);
    free(w);
    free(file);
    tu_rmtree(dir);
    free(dir); free(m); free(flip); free(late); free(both); free(o);
}

static void test_truncated_while_quantizing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *in = big_input(dir), *log = NULL, *o = tu_fmt("%s/out.lpk", dir);
    pid_t pid = start_quantize(dir, in, 0, &log);
    /* from this process, while quantize reads it: the second half goes */
    assert_int_equal(truncate(in, (off_t)(BIG_T / 2) * BIG_ROWS * BIG_COLS * 4), 0);
    int ws = tu_wait_child(pid, WAIT_S, "quantize of a truncated input");
    char *l = tu_read_file(log, NULL);
    char *want = tu_fmt("%s changed or was truncated while reading", in);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 3 || !strstr(l, want))
        fail_msg("status %d, output: %s", ws, l ? l : "");
    assert_false(tu_exists(o));
    unlink(log);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    free(want); free(l);
    tu_rmtree(dir);
    free(dir); free(in); free(log); free(o);
}

/* Whether /proc/pid/maps lists a mapping of path. */
static int maps_hold(pid_t pid, const char *path)
{
    char mp[64];
    snprintf(mp, sizeof mp, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(mp, "r");
    if (!f) return 0;
    char line[8192];
    int hit = 0;
    while (!hit && fgets(line, sizeof line, f)) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        size_t n = strlen(line), k = strlen(path);
        hit = n >= k && !strcmp(line + n - k, path);
    }
    fclose(f);
    return hit;
}

/* Runs llmpack argv; the moment its maps list `victim`, truncates victim to
 * `keep` bytes from this process. Returns 1 and the wait status when the
 * truncation hit the running command, 0 when the command ended first (the
 * race was lost; the caller restores the file and tries again). */
static int truncate_while_mapped(char *const *argv, const char *victim, off_t keep,
                                 const char *log, int *ws)
{
    pid_t pid = tu_llmpack_spawn(log, argv);
    assert_true(pid > 0);
    int hit = 0;
    for (;;) {
        if (maps_hold(pid, victim)) {
            assert_int_equal(truncate(victim, keep), 0);
            hit = 1;
            break;
        }
        if (waitpid(pid, ws, WNOHANG) == pid) return 0;
    }
    *ws = tu_wait_child(pid, WAIT_S, argv[1]);
    return hit;
}

/* convert, export, check and verify each get their input truncated while they
 * have it mapped: exit 3 "FILE changed or was truncated while reading", no
 * output, no temporary file. The model is large enough (about 90M parameters)
 * that each command is still reading when the truncation lands; a run that
 * finished first is repeated on a restored file. */
static void test_truncated_while_reading_every_command(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *hf = tu_fmt("%s/hf", dir);
    tu_gen_ckpt(hf, "--custom 1024,4096,6,16,4,512 --format hf --shards 1 --seed 7");
    char *tok = tu_fmt("%s/tokenizer.model", hf);
    size_t tn;
    char *tb = tu_read_file("examples/stories260K/tokenizer.model", &tn);
    assert_non_null(tb);
    assert_int_equal(tu_write_file(tok, tb, tn), 0);
    free(tb);
    char *st = tu_fmt("%s/model-00001-of-00001.safetensors", hf), *st_keep = tu_fmt("%s/keep.st", dir);
    char *m = tu_fmt("%s/m.lpk", dir), *m_keep = tu_fmt("%s/keep.lpk", dir);
    char *log = tu_fmt("%s/log.txt", dir), *out = NULL;
    if (tu_llmpack(&out, "convert '%s' -o '%s'", hf, m)) fail_msg("convert: %s", out);
    free(out);
    char *cmd = tu_fmt("cp '%s' '%s' && cp '%s' '%s'", st, st_keep, m, m_keep);
    assert_int_equal(sh(cmd), 0);
    free(cmd);
    char *o_lpk = tu_fmt("%s/o.lpk", dir), *o_gguf = tu_fmt("%s/o.gguf", dir);
    char *text = "examples/TinyStories-valid-sample.txt";
    struct { char *argv[12]; const char *victim, *keep, *out; } runs[] = {
        {{"llmpack", "convert", hf, "-o", o_lpk, NULL}, st, st_keep, o_lpk},
        {{"llmpack", "export", m, "-o", o_gguf, NULL}, m, m_keep, o_gguf},
        {{"llmpack", "check", m, NULL}, m, m_keep, NULL},
        {{"llmpack", "verify", m, "--text", text, "--ctx", "64", "--chunks", "1", NULL}, m,
         m_keep, NULL},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        struct stat sb;
        assert_int_equal(stat(runs[i].keep, &sb), 0);
        int ws = 0, won = 0;
        for (int attempt = 0; attempt < 5 && !won; attempt++) {
            cmd = tu_fmt("cp '%s' '%s'", runs[i].keep, runs[i].victim);
            assert_int_equal(sh(cmd), 0);
            free(cmd);
            if (runs[i].out) unlink(runs[i].out);
            won = truncate_while_mapped(runs[i].argv, runs[i].victim, sb.st_size / 3, log, &ws);
            if (!won) print_message("%s: finished before the truncation, again\n", runs[i].argv[1]);
        }
        if (!won) fail_msg("llmpack %s finished before its input could be truncated, 5 times",
                           runs[i].argv[1]);
        char *l = tu_read_file(log, NULL);
        char *want = tu_fmt("%s changed or was truncated while reading", runs[i].victim);
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 3 || !l || !strstr(l, want))
            fail_msg("llmpack %s: status %d (want exit 3 and '%s'), output: %s", runs[i].argv[1],
                     ws, want, l ? l : "");
        if (runs[i].out && tu_exists(runs[i].out))
            fail_msg("llmpack %s left %s", runs[i].argv[1], runs[i].out);
        assert_int_equal(tu_dir_entries(dir, 1), 0);
        free(want);
        free(l);
    }
    tu_rmtree(dir);
    free(dir); free(hf); free(tok); free(st); free(st_keep); free(m); free(m_keep);
    free(log); free(o_lpk); free(o_gguf);
}

/* ---------------------------------------------------------------- 4. signals */
static void test_signals_clean_up_and_exit_1(void **state)
{
    (void)state;
    tu_unignore_signals();
    char *dir = tu_tmpdir();
    char *in = big_input(dir), *o = tu_fmt("%s/out.lpk", dir);
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    static const long long points[] = {0, 24ll << 20}; /* output opened; 24 MiB written */
    for (size_t s = 0; s < sizeof sigs / sizeof sigs[0]; s++)
        for (size_t k = 0; k < sizeof points / sizeof points[0]; k++) {
            char *log = NULL;
            pid_t pid = start_quantize(dir, in, points[k], &log);
            char *what = tu_fmt("quantize sent signal %d at point %zu", sigs[s], k);
            signal_wants_exit_1(pid, sigs[s], log, what);
            assert_false(tu_exists(o));
            unlink(log);
            if (tu_dir_entries(dir, 1)) fail_msg("%s: temporary files left", what);
            free(log); free(what);
        }
    tu_rmtree(dir);
    free(dir); free(in); free(o);
}

/* quantize --type A,B,C -o DIR/: a signal while the outputs are written
 * leaves none of them (the 256 MiB input: all temporary files open, then 24
 * MiB into the first); a signal once the first GGUF is complete, while the
 * next ones are exported, keeps that one (whole: `check` passes) and leaves
 * nothing of the others. */
static void test_signals_during_multi_output(void **state)
{
    (void)state;
    tu_unignore_signals();
    char *dir = tu_tmpdir(), *out = tu_fmt("%s/out", dir), *log = tu_fmt("%s/log.txt", dir);
    char *in = big_input(dir), *o = tu_fmt("%s/", out);
    assert_int_equal(mkdir(out, 0700), 0);
    static const int sigs[] = {SIGINT, SIGTERM};
    static const long long points[] = {0, 24ll << 20};
    for (size_t s = 0; s < sizeof sigs / sizeof sigs[0]; s++)
        for (size_t k = 0; k < sizeof points / sizeof points[0]; k++) {
            char *argv[] = {"llmpack", "quantize", in, "-o", o, "--type", "q8_0,q4_0,q5_0", NULL};
            pid_t pid = tu_llmpack_spawn(log, argv);
            assert_true(pid > 0);
            wait_tmp(pid, out, "big-Q5_0.lpk", 0, log, "quantize ended before its last output opened");
            wait_tmp(pid, out, "big-Q8_0.lpk", points[k], log, "quantize ended before the point");
            char *what = tu_fmt("quantize of 3 outputs sent signal %d at point %zu", sigs[s], k);
            signal_wants_exit_1(pid, sigs[s], log, what);
            if (tu_dir_entries(out, 0)) fail_msg("%s: files left in %s", what, out);
            free(what);
        }

    /* GGUF outputs: exported one after the other once all are quantized */
    char *hf = tu_fmt("%s/hf", dir), *m = tu_fmt("%s/m.lpk", dir), *cl = NULL;
    tu_gen_ckpt(hf, "--custom 512,1536,4,8,4,512 --format hf --seed 3");
    assert_int_equal(tu_llmpack(&cl, "convert '%s' -o '%s' --tokenizer "
                                "examples/stories260K/tokenizer.model -q", hf, m), 0);
    free(cl);
    char *first = tu_fmt("%s/sig-Q4_0.gguf", out);
    char *argv[] = {"llmpack", "quantize", m, "-o", o, "--type", "q4_0,f32,f16,bf16", "--format",
                    "gguf", "--name", "sig", NULL};
    pid_t pid = tu_llmpack_spawn(log, argv);
    assert_true(pid > 0);
    struct timespec nap = {0, 500 * 1000};
    for (long i = 0; !tu_exists(first); i++) {
        int ws;
        if (waitpid(pid, &ws, WNOHANG) == pid || i > (long)WAIT_S * 2000) {
            char *l = tu_read_file(log, NULL);
            fail_msg("quantize ended before its first GGUF was complete (status %d): %s", ws,
                     l ? l : "");
        }
        nanosleep(&nap, NULL);
    }
    signal_wants_exit_1(pid, SIGINT, log, "quantize to 4 GGUFs, SIGINT while exporting the second");
    assert_int_equal(tu_dir_entries(out, 0), 1); /* the first output alone */
    assert_int_equal(tu_llmpack(&cl, "check '%s'", first), 0);
    free(cl);
    tu_rmtree(dir);
    free(dir); free(out); free(log); free(in); free(o); free(hf); free(m); free(first);
}

/* convert --method gptq writes the unquantized model to an intermediate file
 * beside the output, then runs GPTQ on it: a signal during the GPTQ pass
 * removes that file too (a model and a calibration big enough to be running:
 * llama2-20m on docs-calib.txt, else bench/gen_ckpt's model of dim 256, 4
 * layers, with the demo model's tokenizer, on the TinyStories sample). */
static void test_signals_during_convert_gptq(void **state)
{
    (void)state;
    char *gdir = tu_tmpdir();
    const char *h0 = tu_shared("models/llama2-20m/hf");
    char *hf = h0 ? strdup(h0) : tu_fmt("%s/hf", gdir);
    const char *t0 = tu_shared(h0 ? "text/docs-calib.txt" : "text/TinyStories-valid-sample.txt");
    assert_non_null(t0);
    char *text = strdup(t0);
    char *tok_path = strdup("examples/stories260K/tokenizer.model");
    if (!h0) tu_gen_ckpt(hf, "--custom 256,768,4,8,4,512 --format hf --seed 1");
    tu_unignore_signals();
    char *dir = tu_tmpdir();
    char *o = tu_fmt("%s/c.lpk", dir), *log = tu_fmt("%s/log.txt", dir);
    static const int sigs[] = {SIGINT, SIGHUP};
    for (size_t s = 0; s < sizeof sigs / sizeof sigs[0]; s++) {
        char *argv[16] = {"llmpack", "convert", hf, "-o", o, "--type", "q4_k", "--method", "gptq",
                          "--calib", text, "--chunks", "64", NULL};
        if (!h0) {  /* the generated model has no tokenizer: the demo model's */
            argv[13] = "--tokenizer";
            argv[14] = tok_path;
        }
        pid_t pid = tu_llmpack_spawn(log, argv);
        assert_true(pid > 0);
        /* the intermediate (.c.lpk.tmp-XXXXXX) is complete once it is non-empty:
         * its writer renamed it into place and GPTQ has started */
        wait_tmp(pid, dir, "c.lpk", 1, log, "convert ended before its GPTQ pass");
        assert_int_equal(kill(pid, sigs[s]), 0);
        char *what = tu_fmt("convert --method gptq sent signal %d", sigs[s]);
        int ws = tu_wait_child(pid, WAIT_S, what);
        char *l = tu_read_file(log, NULL);
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 1)
            fail_msg("%s: wait status %d (want exit 1): %s", what, ws, l ? l : "");
        unlink(log);
        /* nothing at all is left in the folder, whatever its name */
        int left = tu_dir_entries(dir, 0);
        if (left) fail_msg("%s: %d files left", what, left);
        free(l);
        free(what);
    }
    tu_rmtree(dir);
    tu_rmtree(gdir);
    free(dir); free(o); free(log); free(hf); free(text); free(gdir); free(tok_path);
}

static void test_closed_pipe(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    /* enough tensors that `info --tensors` outgrows a pipe's buffer */
    enum { NT = 3000 };
    lpk_tensor *d = calloc(NT, sizeof *d);
    for (int i = 0; i < NT; i++) {
        snprintf(d[i].name, sizeof d[i].name, "blk.%d.attn_norm.weight", i);
        d[i].type = LPK_TYPE_F32;
        d[i].n_dims = 1;
        d[i].dims[0] = 16;
    }
    char *p = tu_fmt("%s/many.lpk", dir);
    lpk_error err = {0};
    lpk_writer *w;
    assert_int_equal(lpk_writer_open(p, NULL, d, NT, 0, &w, &err), 0);
    float z[16] = {0};
    for (int i = 0; i < NT; i++) {
        assert_int_equal(lpk_writer_tensor_begin(w, d[i].name, &err), 0);
        assert_int_equal(lpk_writer_tensor_write(w, z, sizeof z, &err), 0);
        assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
    }
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    free(d);
    const char *bin = getenv("LLMPACK_BIN");
    char *cmd = tu_fmt("cd '%s' && trap - PIPE; ('%s' info --tensors many.lpk 2>err; echo $? > rc) "
                       "| head -n 1 > first", dir, bin && *bin ? bin : "./llmpack");
    assert_int_equal(sh(cmd), 0);
    free(cmd);
    char *f = tu_fmt("%s/rc", dir), *e = tu_fmt("%s/err", dir), *h = tu_fmt("%s/first", dir);
    char *rc = tu_read_file(f, NULL), *errs = tu_read_file(e, NULL), *first = tu_read_file(h, NULL);
    assert_string_equal(rc, "1\n");   /* stopped, with the documented code */
    assert_string_equal(errs, "");    /* quietly */
    assert_non_null(strstr(first, "many.lpk"));
    free(rc); free(errs); free(first); free(f); free(e); free(h);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    tu_rmtree(dir);
    free(dir); free(p);
}

/* Sets path's modification time an hour back. */
static void age(const char *path)
{
    struct timeval tv[2];
    gettimeofday(&tv[0], NULL);
    tv[0].tv_sec -= 3600;
    tv[1] = tv[0];
    assert_int_equal(utimes(path, tv), 0);
}

/* dir/in.lpk: one 4-value f32 tensor (the library's writer sweeps the folder). */
static char *tiny_input(const char *dir)
{
    lpk_tensor d;
    memset(&d, 0, sizeof d);
    strcpy(d.name, "output_norm.weight");
    d.type = LPK_TYPE_F32;
    d.n_dims = 1;
    d.dims[0] = 4;
    char *in = tu_fmt("%s/in.lpk", dir);
    lpk_error err = {0};
    lpk_writer *w;
    float x[4] = {1, 2, 3, 4};
    assert_int_equal(lpk_writer_open(in, NULL, &d, 1, 0, &w, &err), 0);
    assert_int_equal(lpk_writer_tensor_begin(w, d.name, &err), 0);
    assert_int_equal(lpk_writer_tensor_write(w, x, sizeof x, &err), 0);
    assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    return in;
}

/* The one registry of temporary paths (lpk_temp_register): folders and the
 * files in them, registered in any order and beyond one chunk of 64, are
 * removed files first and folders innermost first, by lpk_temp_remove (only
 * the paths under the given root) and by a termination signal (all but the
 * unregistered ones). */
static void make_tree(const char *dir, int n, int reg)
{
    char *a = tu_fmt("%s/a", dir), *b = tu_fmt("%s/a/b", dir);
    assert_int_equal(mkdir(a, 0700), 0);
    assert_int_equal(mkdir(b, 0700), 0);
    for (int i = 0; i < n; i++) {
        char *f = tu_fmt("%s/f%d", i % 2 ? a : b, i);
        assert_int_equal(tu_write_file(f, "x", 1), 0);
        if (reg) assert_true(lpk_temp_register(f) >= 0);
        free(f);
        if (reg && i == n / 2) {  /* folders registered between their files */
            int fd = open(a, O_RDONLY | O_DIRECTORY);
            assert_true(fd >= 0);
            assert_true(lpk_temp_register_fd(a, fd) >= 0);
            assert_true(lpk_temp_register(b) >= 0);
        }
    }
    free(a);
    free(b);
}

static void test_temp_registry(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *a = tu_fmt("%s/a", dir), *ab = tu_fmt("%s/ab", dir), *keep = tu_fmt("%s/keep", dir);
    assert_int_equal(mkdir(ab, 0700), 0);
    assert_true(lpk_temp_register(ab) >= 0);
    assert_int_equal(tu_write_file(keep, "k", 1), 0);
    int ks = lpk_temp_register(keep);
    assert_true(ks >= 0);
    make_tree(dir, 150, 1);
    lpk_temp_remove(a);
    assert_false(tu_exists(a));
    assert_true(tu_exists(ab) && tu_exists(keep));
    lpk_temp_unregister(ks);
    lpk_temp_remove(ab);
    assert_false(tu_exists(ab));
    assert_true(tu_exists(keep));
    /* a signal: everything registered goes, the unregistered file stays */
    pid_t pid = fork();
    if (pid == 0) {
        make_tree(dir, 150, 1);
        if (mkdir(ab, 0700) != 0 || lpk_temp_register(ab) < 0) _exit(2);
        raise(SIGTERM);
        _exit(3);
    }
    int ws = tu_wait_child(pid, WAIT_S, "registering child");
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM);
    assert_false(tu_exists(a));
    assert_false(tu_exists(ab));
    assert_true(tu_exists(keep));
    tu_rmtree(dir);
    free(dir); free(a); free(ab); free(keep);
}

static void test_stale_temporary_files_swept(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    /* what SIGKILLed runs leave: a writer's temporary file, an unpack folder */
    char *stale = tu_fmt("%s/.out.lpk.tmp-AbC123", dir);
    assert_int_equal(tu_write_file(stale, "\x89LPK\r\n\x1a\n partial", 17), 0);
    age(stale);
    char *spool = tu_fmt("%s/.llmpack-unpack-XyZ789", dir), *inner = tu_fmt("%s/model.bin", spool);
    assert_int_equal(mkdir(spool, 0700), 0);
    assert_int_equal(tu_write_file(inner, "x", 1), 0);
    age(inner);
    age(spool);
    /* what must stay: someone else's file of the same pattern, a live writer's file */
    char *foreign = tu_fmt("%s/.notes.txt.tmp-QwE456", dir);
    assert_int_equal(tu_write_file(foreign, "my notes", 8), 0);
    age(foreign);
    char *live = tu_fmt("%s/.other.lpk.tmp-LiV000", dir);
    assert_int_equal(tu_write_file(live, "GGUF....", 8), 0);
    age(live);
    int lfd = open(live, O_RDONLY);
    assert_true(lfd >= 0);
    assert_int_equal(flock(lfd, LOCK_EX), 0);
    /* the next run writing into this folder sweeps (this library call: without a
     * message, no notice function is set) */
    char *in = tiny_input(dir), *o = tu_fmt("%s/out.lpk", dir), *out = NULL;
    assert_false(tu_exists(stale));
    assert_false(tu_exists(spool));
    assert_true(tu_exists(foreign));
    assert_true(tu_exists(live));
    /* and the CLI says what it removed */
    assert_int_equal(tu_write_file(stale, "", 0), 0);
    age(stale);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type f16", in, o), 0);
    char *msg = tu_fmt("removed %s, left by an earlier run that was killed", stale);
    if (!strstr(out, msg)) fail_msg("no notice in: %s", out);
    free(msg);
    free(out);
    assert_false(tu_exists(stale));
    assert_true(tu_exists(live));
    close(lfd);
    tu_rmtree(dir);
    free(dir); free(stale); free(spool); free(inner); free(foreign); free(live); free(in); free(o);
}

/* ---------------------------------------------------------------- 5. special files */
static void test_special_outputs(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *in = tiny_input(dir);

    struct stat sb;
    assert_int_equal(stat("/dev/null", &sb), 0);
    dev_t rdev = sb.st_rdev;
    expect_fail(2, "/dev/null is a device", NULL, "quantize '%s' -o /dev/null --type f16 --force",
                in);
    assert_int_equal(lstat("/dev/null", &sb), 0);
    assert_true(S_ISCHR(sb.st_mode) && sb.st_rdev == rdev); /* still the device */
    expect_fail(2, "/dev/stdout is a symbolic link", NULL,
                "quantize '%s' -o /dev/stdout --type f16 --force", in);
    char *fifo = tu_fmt("%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    expect_fail(2, "is a FIFO", NULL, "quantize '%s' -o '%s' --type f16 --force", in, fifo);
    assert_int_equal(lstat(fifo, &sb), 0);
    assert_true(S_ISFIFO(sb.st_mode));
    char *sub = tu_fmt("%s/sub", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    expect_fail(2, "is a folder", NULL, "quantize '%s' -o '%s' --type f16 --force", in, sub);
    char *link = tu_fmt("%s/link.lpk", dir), *target = tu_fmt("%s/target.lpk", dir);
    assert_int_equal(tu_write_file(target, "keep", 4), 0);
    assert_int_equal(symlink(target, link), 0);
    expect_fail(2, "is a symbolic link", NULL, "quantize '%s' -o '%s' --type f16 --force", in,
                link);
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_int_equal(tu_dir_entries(dir, 1), 0);

    /* the new file's mode follows the umask */
    static const struct { const char *mask; unsigned mode; } um[] = {{"027", 0640}, {"002", 0664},
                                                                      {"077", 0600}};
    const char *bin = getenv("LLMPACK_BIN");
    for (size_t i = 0; i < sizeof um / sizeof um[0]; i++) {
        char *o = tu_fmt("%s/m%zu.lpk", dir, i);
        char *cmd = tu_fmt("umask %s && '%s' quantize '%s' -o '%s' --type f16 > /dev/null 2>&1",
                           um[i].mask, bin && *bin ? bin : "./llmpack", in, o);
        assert_int_equal(sh(cmd), 0);
        assert_int_equal(stat(o, &sb), 0);
        if ((sb.st_mode & 0777) != um[i].mode)
            fail_msg("umask %s: mode %o, want %o", um[i].mask, sb.st_mode & 0777, um[i].mode);
        free(cmd);
        free(o);
    }
    tu_rmtree(dir);
    free(dir); free(in); free(fifo); free(sub); free(link); free(target);
}

/* ---------------------------------------------------------------- 6. links in archives */
static void test_archive_links(void **state)
{
    (void)state;
    const char *hf = tu_shared("models/stories260K/hf");
    char *hfa = realpath(hf ? hf : "examples/stories260K", NULL);
    char *dir = tu_tmpdir();
    char *cmd = tu_fmt(
        "cd '%s' && mkdir -p m/blobs && cp '%s/config.json' m/ && "
        "cp '%s/model.safetensors' m/blobs/abc && cp '%s/tokenizer.model' m/blobs/tok && "
        "ln -s blobs/abc m/model.safetensors && ln -s ./blobs/../blobs/tok m/tokenizer.model && "
        "tar -cf sym.tar m && rm -rf h && mkdir h && cp m/config.json m/blobs/tok h/ && "
        "mv h/tok h/tokenizer.model && cp m/blobs/abc h/blob && ln h/blob h/model.safetensors && "
        "tar -cf hard.tar h", dir, hfa, hfa, hfa);
    assert_int_equal(sh(cmd), 0);
    free(cmd);
    char *out = NULL, *plain = tu_fmt("%s/plain.lpk", dir);
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s'", hfa, plain), 0);
    free(out);
    /* links to members: followed (a symlinked snapshot, a hard link) */
    const char *ok[] = {"sym.tar", "hard.tar"};
    for (int i = 0; i < 2; i++) {
        char *o = tu_fmt("%s/%s.lpk", dir, ok[i]);
        if (tu_llmpack(&out, "convert '%s/%s' -o '%s'", dir, ok[i], o)) fail_msg("%s: %s", ok[i], out);
        free(out);
        char why[512];
        if (tu_lpk_same_tensors(plain, o, why, sizeof why)) fail_msg("%s: %s", ok[i], why);
        free(o);
    }
    /* any other link: exit 3 naming member and target, nothing read from outside */
    static const struct { const char *target, *msg; } bad[] = {
        {"/etc/passwd", "link member 'm/tokenizer.json' -> '/etc/passwd': an absolute target is "
                        "outside the archive"},
        {"../../etc/passwd", "link member 'm/tokenizer.json' -> '../../etc/passwd' climbs out of "
                             "the archive"},
        {"blobs/../../../x", "link member 'm/tokenizer.json' -> 'blobs/../../../x' climbs out"},
        {"missing.json", "link member 'm/tokenizer.json' -> 'missing.json': the archive has no "
                         "member 'm/missing.json'"},
        {"blobs", "points at a folder"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cmd = tu_fmt("cd '%s' && rm -f m/tokenizer.json && ln -s '%s' m/tokenizer.json && "
                     "tar -cf bad.tar m", dir, bad[i].target);
        assert_int_equal(sh(cmd), 0);
        free(cmd);
        char *o = tu_fmt("%s/bad.lpk", dir), *tar = tu_fmt("%s/bad.tar", dir);
        expect_fail(3, bad[i].msg, o, "convert '%s' -o '%s'", tar, o);
        free(o);
        free(tar);
    }
    /* a hard link to something not in the archive */
    cmd = tu_fmt("cd '%s' && rm -f m/tokenizer.json && python3 -c \"import tarfile\n"
                 "t=tarfile.open('hl.tar','w'); t.add('m/config.json'); t.add('m/blobs/abc', 'm/model.safetensors')\n"
                 "i=tarfile.TarInfo('m/tokenizer.model'); i.type=tarfile.LNKTYPE; i.linkname='/etc/passwd'; t.addfile(i); t.close()\"",
                 dir);
    if (sh(cmd) == 0) {
        char *o = tu_fmt("%s/hl.lpk", dir), *tar = tu_fmt("%s/hl.tar", dir);
        expect_fail(3, "link member 'm/tokenizer.model' -> '/etc/passwd'", o,
                    "convert '%s' -o '%s'", tar, o);
        free(o);
        free(tar);
    }
    free(cmd);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    tu_rmtree(dir);
    free(dir); free(plain); free(hfa);
}

/* ---------------------------------------------------------------- 7. broken GGUF */
static void gguf_variant(const char *src, const char *dst, const char *find, size_t at,
                         const void *bytes, size_t n)
{
    size_t len;
    char *b = tu_read_file(src, &len);
    assert_non_null(b);
    size_t off = at;
    if (find) {
        char *p = memmem(b, len, find, strlen(find));
        assert_non_null(p);
        off = (size_t)(p - b) + at;
    }
    memcpy(b + off, bytes, n);
    assert_int_equal(tu_write_file(dst, b, len), 0);
    free(b);
}

static void test_broken_gguf(void **state)
{
    (void)state;
    char *g = strdup(tu_shared_or_demo("gguf/stories260K-f32.gguf", "--type f32"));
    TU_NEED_SHARED(ts, "text/TinyStories-valid-sample.txt");
    char *text = strdup(ts);
    char *dir = tu_tmpdir();
    char *v[4];
    for (int i = 0; i < 4; i++) v[i] = tu_fmt("%s/v%d.gguf", dir, i);
    /* llama.block_count destroyed (the key renamed) */
    gguf_variant(g, v[0], "llama.block_count", 12, "X", 1);
    /* zero tensors */
    uint64_t zero = 0;
    gguf_variant(g, v[1], NULL, 8, &zero, 8);
    /* a required tensor missing (renamed) */
    gguf_variant(g, v[2], "blk.2.ffn_up.weight", 6, "X", 1);
    /* feed_forward_length no longer matches the ffn tensors' shapes */
    char *key = "llama.feed_forward_length";
    uint32_t ffn = 999;
    gguf_variant(g, v[3], key, strlen(key) + 4, &ffn, 4);
    const char *why[4] = {"llama.block_count", "", "blk.2.ffn_up.weight", "has shape"};
    char *o = tu_fmt("%s/o.lpk", dir), *og = tu_fmt("%s/o.gguf", dir);
    for (int i = 0; i < 4; i++) {
        expect_fail(3, why[i], NULL, "info '%s'", v[i]);
        expect_fail(3, why[i], NULL, "check '%s'", v[i]);
        expect_fail(3, why[i], o, "quantize '%s' -o '%s' --type q8_0", v[i], o);
        expect_fail(3, why[i], og, "export '%s' -o '%s'", v[i], og);
        expect_fail(3, why[i], NULL, "verify '%s' --text '%s' --ctx 64 --chunks 1", v[i], text);
        expect_fail(3, why[i], NULL, "tokenize '%s' --text hello", v[i]);
    }
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    tu_rmtree(dir);
    for (int i = 0; i < 4; i++) free(v[i]);
    free(dir); free(g); free(text); free(o); free(og);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksums_every_command),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_truncated_while_mapped_library),
        cmocka_unit_test(test_tensor_read),
        cmocka_unit_test(test_parts_checked),
        cmocka_unit_test(test_truncated_while_quantizing),
        cmocka_unit_test(test_truncated_while_reading_every_command),
        cmocka_unit_test(test_signals_clean_up_and_exit_1),
        cmocka_unit_test(test_signals_during_multi_output),
        cmocka_unit_test(test_signals_during_convert_gptq),
        cmocka_unit_test(test_closed_pipe),
        cmocka_unit_test(test_temp_registry),
        cmocka_unit_test(test_stale_temporary_files_swept),
        cmocka_unit_test(test_special_outputs),
        cmocka_unit_test(test_archive_links),
        cmocka_unit_test(test_broken_gguf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
