/* convert/ archives: a Meta checkpoint packed as .tar.zst, .tar.gz, .tar and
 * .zip (packed here with tar/zip) reads to the same tensors as the folder;
 * the temporary copy disappears on close, on failure and on SIGTERM; unsafe
 * member names are refused. */
#include "tutil.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "../convert/cv_internal.h"

static int open_meta(const char *dir, const cv_torch_opts *o, cv_source **out, lpk_error *err)
{
    return cv_meta_open(dir, o, out, err);
}

static int open_hf(const char *dir, const cv_torch_opts *o, cv_source **out, lpk_error *err)
{
    (void)o;
    cv_open_opts oo = {0};
    return cv_hf_safetensors_open(dir, &oo, out, err);
}

/* Number of leftover temporary folders in dir. */
static int leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, ".llmpack-unpack-", 16)) n++;
    closedir(d);
    return n;
}

static uint64_t tensor_hash(cv_source *s, const cv_tensor *t)
{
    int64_t rows = 1, cols = t->dims[t->n_dims - 1];
    for (int d = 0; d + 1 < t->n_dims; d++) rows *= t->dims[d];
    size_t es = t->dtype == LPK_TYPE_F32 ? 4 : 2;
    uint8_t *b = malloc((size_t)(rows * cols) * es);
    lpk_error err = {0};
    /* rows ascending, in two reads, as the pipeline does */
    int64_t h = rows / 2;
    assert_int_equal(s->ops->read_rows(s, t, 0, h, b, &err), 0);
    assert_int_equal(s->ops->read_rows(s, t, h, rows - h, b + (size_t)(h * cols) * es, &err), 0);
    uint64_t x = XXH3_64bits(b, (size_t)(rows * cols) * es);
    s->ops->release(s, t);
    free(b);
    return x;
}

/* Every tensor of a equals b's of the same name; b may hold `extra` more. */
static void same_tensors_but(cv_source *a, cv_source *b, size_t extra)
{
    assert_int_equal(a->n_tensors + extra, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const cv_tensor *x = &a->tensors[i], *y = NULL;
        for (size_t k = 0; k < b->n_tensors; k++)
            if (!strcmp(b->tensors[k].name, x->name)) y = &b->tensors[k];
        assert_non_null(y);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->n_dims, y->n_dims);
        assert_memory_equal(x->dims, y->dims, sizeof x->dims);
        if (tensor_hash(a, x) != tensor_hash(b, y)) fail_msg("%s differs", x->name);
    }
}

static void same_tensors(cv_source *a, cv_source *b)
{
    same_tensors_but(a, b, 0);
}

static int skipped_has(const cv_source *s, const char *name)
{
    for (size_t i = 0; i < s->n_skipped; i++)
        if (!strcmp(s->skipped[i], name)) return 1;
    return 0;
}

/* `llmpack convert ARCHIVE` gives the tensors of ref_lpk and leaves no
 * temporary folder behind; the archive is removed afterwards. */
static void convert_matches(const char *archive, const char *dir, const char *ref_lpk)
{
    char *a = tu_fmt("%s/a.lpk", dir), *out = NULL, why[512];
    if (tu_llmpack(&out, "convert '%s' -o '%s'", archive, a)) fail_msg("%s", out);
    free(out);
    if (tu_lpk_same_tensors(ref_lpk, a, why, sizeof why)) fail_msg("%s: %s", archive, why);
    assert_int_equal(leftovers(dir), 0);
    unlink(a);
    free(a);
    unlink(archive);
}

static int sh(const char *cmd)
{
    int rc = system(cmd);
    return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}

/* A Meta folder of random bf16 weights in `shards` model-parallel torch zips
 * (bench/gen_ckpt, dim 128, ffn 512, 4 layers, vocab 512, 2.2 MB) with the demo
 * model's tokenizer.model, in dir/meta; returns its path. */
static char *gen_meta(const char *dir, int shards)
{
    char *meta = tu_fmt("%s/meta", dir);
    char *args = tu_fmt("--custom 128,512,4,8,4,512 --format meta --shards %d --seed 7", shards);
    tu_gen_ckpt(meta, args);
    free(args);
    char *cmd = tu_fmt("cp examples/stories260K/tokenizer.model '%s/'", meta);
    assert_int_equal(sh(cmd), 0);
    free(cmd);
    return meta;
}

/* The Meta folder m packed as each kind of archive (kinds: bits of the names
 * below) opens as the folder does and converts to the same tensors. tied: its
 * output.weight is a copy of the embedding (stories260K's). */
static void check_archives(const char *m, int ref_shards, unsigned kinds, int tied)
{
    char *meta = strdup(m);
    char *dir = tu_tmpdir();
    cv_source *ref;
    lpk_error err = {0};
    assert_int_equal(cv_meta_open(meta, NULL, &ref, &err), 0);
    /* one top-level folder (tar) and files at the root (zip) */
    char *cmds[] = {
        tu_fmt("tar --zstd -cf '%s/m.tar.zst' -C '%s/..' meta", dir, meta),
        tu_fmt("tar -czf '%s/m.tar.gz' -C '%s' .", dir, meta),
        tu_fmt("tar -cf '%s/m.tar' -C '%s/..' meta", dir, meta),
        tu_fmt("cd '%s' && zip -q -1 -r '%s/m.zip' .", meta, dir),
        tu_fmt("tar -cJf '%s/m.txz' -C '%s/..' meta", dir, meta),  /* xz, known by content */
    };
    const char *names[] = {"m.tar.zst", "m.tar.gz", "m.tar", "m.zip", "m.txz"};
    char *ref_lpk = tu_fmt("%s/ref.lpk", dir);
    char *out = NULL;
    if (tu_llmpack(&out, "convert '%s' -o '%s'", meta, ref_lpk)) fail_msg("%s", out);
    free(out);
    for (int i = 0; i < 5; i++) {
        if (!(kinds & (1u << i))) {
            free(cmds[i]);
            continue;
        }
        if (sh(cmds[i]) != 0) fail_msg("packing failed: %s", cmds[i]);
        char *p = tu_fmt("%s/%s", dir, names[i]);
        assert_true(cv_archive_detect(p));
        cv_torch_opts o = {.spool_dir = dir};
        cv_source *s;
        if (cv_archive_open(p, &o, open_meta, &s, &err)) fail_msg("%s: %s", names[i], err.msg);
        assert_string_equal(lpk_meta_get_str(s->meta, "source.format"), "meta");
        assert_int_equal(s->n_files, 1);
        assert_string_equal(s->files[0], p);
        assert_string_equal(lpk_meta_get_str(s->meta, "general.name"), "m");
        if (ref_shards == 1) {
            /* one shard streams: nothing unpacked, tensors in arrival order,
             * a tied output.weight (equal to tok_embeddings) left out */
            assert_int_equal(s->streaming, 1);
            assert_int_equal(leftovers(dir), 0);
            assert_non_null(lpk_meta_get_str(s->meta, "tokenizer.ggml.model"));
            assert_int_equal(skipped_has(s, "output.weight"), tied);
            same_tensors_but(s, ref, (size_t)tied);
        } else {
            assert_int_equal(s->streaming, 0);
            same_tensors(ref, s);
            assert_int_equal(leftovers(dir), 1);
        }
        s->ops->close(s);
        assert_int_equal(leftovers(dir), 0);
        /* and through `llmpack convert`: the same tensors as the folder */
        convert_matches(p, dir, ref_lpk);
        free(p);
        free(cmds[i]);
    }
    ref->ops->close(ref);
    free(ref_lpk);
    tu_rmtree(dir);
    free(dir);
    free(meta);
}

/* One shard (streamed): a generated Meta folder (untied) always, stories260K's
 * (torch.save's file, tied) when ../shared has it. */
static void test_archive_one_shard(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *meta = gen_meta(dir, 1);
    check_archives(meta, 1, 31, 0);
    free(meta);
    tu_rmtree(dir);
    free(dir);
    const char *m = tu_shared("models/stories260K/meta");
    if (m) check_archives(m, 1, 31, 1);
    else print_message("NOTE: ../shared/models/stories260K/meta not found: not checked\n");
}

/* Two shards (unpacked, not streamed): a generated Meta folder always,
 * llama2-20m's when ../shared has it. */
static void test_archive_two_shards(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *meta = gen_meta(dir, 2);
    check_archives(meta, 2, tu_long() ? 15 : 9, 0);  /* .tar.zst, .zip */
    free(meta);
    tu_rmtree(dir);
    free(dir);
    const char *m = tu_shared("models/llama2-20m/meta");
    if (m) check_archives(m, 2, tu_long() ? 15 : 9, 0);
    else print_message("NOTE: ../shared/models/llama2-20m/meta not found: not checked\n");
}

/* HF safetensors archives stream: nothing is unpacked (no temporary folder
 * once open), tensors come in archive order, and they equal the folder's. */
static void check_stream(const char *model, const char *h, int n_kinds)
{
    char *hf = strdup(h);
    const char *hfdir = strrchr(hf, '/') ? strrchr(hf, '/') + 1 : hf;
    char *dir = tu_tmpdir();
    cv_source *ref;
    cv_open_opts oo = {0};
    lpk_error err = {0};
    assert_int_equal(cv_hf_safetensors_open(hf, &oo, &ref, &err), 0);
    char *ref_lpk = tu_fmt("%s/ref.lpk", dir), *out = NULL;
    if (tu_llmpack(&out, "convert '%s' -o '%s'", hf, ref_lpk)) fail_msg("%s", out);
    free(out);
    char *cmds[] = {
        tu_fmt("tar --zstd -cf '%s/%s.tar.zst' -C '%s/..' %s", dir, model, hf, hfdir),
        tu_fmt("cd '%s' && zip -q -1 -r '%s/%s.zip' .", hf, dir, model),
    };
    const char *ext[] = {"tar.zst", "zip"};
    for (int i = 0; i < 2; i++) {
        if (i >= n_kinds) {
            free(cmds[i]);
            continue;
        }
        if (sh(cmds[i]) != 0) fail_msg("packing failed: %s", cmds[i]);
        char *p = tu_fmt("%s/%s.%s", dir, model, ext[i]);
        cv_torch_opts o = {.spool_dir = dir};
        cv_source *s;
        if (cv_archive_open(p, &o, open_hf, &s, &err)) fail_msg("%s: %s", p, err.msg);
        assert_int_equal(s->streaming, 1);
        assert_int_equal(leftovers(dir), 0);
        assert_string_equal(lpk_meta_get_str(s->meta, "source.format"), "hf-safetensors");
        assert_string_equal(lpk_meta_get_str(s->meta, "general.name"), model);
        assert_int_equal(s->n_files, 1);
        same_tensors(s, ref);  /* s first: read in its own order */
        s->ops->close(s);
        convert_matches(p, dir, ref_lpk);
        free(p);
        free(cmds[i]);
    }
    ref->ops->close(ref);
    free(ref_lpk);
    tu_rmtree(dir);
    free(dir);
    free(hf);
}

/* The demo model always, ../shared's f32 original when present. */
static void test_stream_stories260k(void **state)
{
    (void)state;
    check_stream("stories260K", "examples/stories260K", 2);
    const char *hf = tu_shared("models/stories260K/hf");
    if (hf) check_stream("stories260K", hf, 2);
}

/* Two shards + index: generated random weights (bench/gen_ckpt, with the demo
 * model's tokenizer) always, llama2-20m when ../shared has it. */
static void test_stream_shards(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *hf = tu_fmt("%s/hf", dir);
    tu_gen_ckpt(hf, "--custom 128,344,4,8,4,512 --format hf --shards 2 --seed 7");
    char *cmd = tu_fmt("cp examples/stories260K/tokenizer.model '%s/'", hf);
    assert_int_equal(sh(cmd), 0);
    free(cmd);
    check_stream("gen", hf, tu_long() ? 2 : 1);
    free(hf);
    tu_rmtree(dir);
    free(dir);
    const char *l20 = tu_shared("models/llama2-20m/hf");
    if (l20) check_stream("llama2-20m", l20, tu_long() ? 2 : 1);
    else print_message("NOTE: ../shared/models/llama2-20m/hf not found: not checked\n");
}

/* A one-member ustar archive, written from the format's description. */
static void write_tar(const char *path, const char *name, const char *data)
{
    uint8_t b[2048] = {0};
    size_t n = strlen(data);
    snprintf((char *)b, 100, "%s", name);
    memcpy(b + 100, "0000644", 8);
    memcpy(b + 108, "0000000", 8);
    memcpy(b + 116, "0000000", 8);
    snprintf((char *)b + 124, 12, "%011o", (unsigned)n);
    memcpy(b + 136, "00000000000", 12);
    b[156] = '0';
    memcpy(b + 257, "ustar", 6);
    memcpy(b + 263, "00", 2);
    memset(b + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += b[i];
    snprintf((char *)b + 148, 8, "%06o", sum);
    memcpy(b + 512, data, n);
    assert_int_equal(tu_write_file(path, b, 1024 + 1024), 0);
}

static void test_archive_bad(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    cv_torch_opts o = {.spool_dir = dir};
    cv_source *s = NULL;
    lpk_error err = {0};
    /* a member escaping the folder */
    char *p = tu_fmt("%s/evil.tar", dir);
    write_tar(p, "../evil.txt", "x");
    assert_true(cv_archive_detect(p));
    assert_int_equal(cv_archive_open(p, &o, open_meta, &s, &err), LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, "points outside"));
    assert_int_equal(leftovers(dir), 0);
    free(p);
    /* absolute names, ".." further down, "." and empty components */
    static const char *const unsafe[] = {"/llmpack-evil.txt", "/etc/llmpack-evil.txt",
                                         "model/../../evil.txt", "./../evil.txt",
                                         "model/./params.json", "model//params.json"};
    for (size_t i = 0; i < sizeof unsafe / sizeof unsafe[0]; i++) {
        p = tu_fmt("%s/unsafe%zu.tar", dir, i);
        write_tar(p, unsafe[i], "x");
        lpk_error_clear(&err);
        assert_int_equal(cv_archive_open(p, &o, open_meta, &s, &err), LPK_ECORRUPT);
        char *want = tu_fmt("member name '%s' points outside", unsafe[i]);
        if (!strstr(err.msg, want)) fail_msg("%s: %s", unsafe[i], err.msg);
        assert_null(s);
        assert_int_equal(leftovers(dir), 0);
        assert_false(tu_exists("/llmpack-evil.txt"));
        free(want);
        free(p);
    }
    /* a well-formed archive without a checkpoint: the folder reader's error,
     * naming the archive */
    p = tu_fmt("%s/readme.tar", dir);
    write_tar(p, "model/README", "hello");
    lpk_error_clear(&err);
    assert_int_equal(cv_archive_open(p, &o, open_meta, &s, &err), LPK_ENOTFOUND);
    assert_non_null(strstr(err.msg, "readme.tar:params.json"));
    assert_null(s);
    assert_int_equal(leftovers(dir), 0);
    /* truncated compressed archive */
    char *q = tu_fmt("%s/cut.tar.gz", dir);
    char *cmd = tu_fmt("gzip -c '%s' | head -c 40 > '%s'", p, q);
    assert_int_equal(sh(cmd), 0);
    lpk_error_clear(&err);
    assert_int_equal(cv_archive_open(q, &o, open_meta, &s, &err), LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, "cut.tar.gz"));
    assert_int_equal(leftovers(dir), 0);
    free(cmd); free(q); free(p);
    /* a torch checkpoint (a zip not named .zip) is not an archive */
    const char *pth = tu_shared("models/stories260K/meta/consolidated.00.pth");
    if (pth) assert_false(cv_archive_detect(pth));
    tu_rmtree(dir);
    free(dir);
}

/* A truncated one-shard Meta archive fails cleanly: exit 3, no output, no
 * temporary folder left. */
static void test_stream_meta_truncated(void **state)
{
    (void)state;
    /* stories260K's, else a generated one (2.2 MB: the cut falls in a tensor) */
    char *dir = tu_tmpdir(), *gdir = tu_fmt("%s/gen", dir);
    const char *sm = tu_shared("models/stories260K/meta");
    assert_int_equal(mkdir(gdir, 0700), 0);
    char *meta = sm ? strdup(sm) : gen_meta(gdir, 1);
    const char *names[] = {"m.tar.zst", "m.tar"};
    for (int i = 0; i < 2; i++) {
        char *cmd = tu_fmt("tar %s -cf '%s/%s' -C '%s' .", i ? "" : "--zstd", dir, names[i], meta);
        assert_int_equal(sh(cmd), 0);
        free(cmd);
        char *p = tu_fmt("%s/%s", dir, names[i]), *q = tu_fmt("%s/cut-%s", dir, names[i]);
        cmd = tu_fmt("head -c 600000 '%s' > '%s'", p, q);
        assert_int_equal(sh(cmd), 0);
        char *o = tu_fmt("%s/cut.lpk", dir), *out = NULL;
        assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s'", q, o), 3);
        assert_non_null(strstr(out, "cut-m.tar"));
        assert_int_not_equal(access(o, F_OK), 0);
        assert_int_equal(leftovers(dir), 0);
        free(out); free(o); free(cmd); free(q); free(p);
    }
    tu_rmtree(dir);
    free(dir);
    free(gdir);
    free(meta);
}

static void test_archive_signal(void **state)
{
    (void)state;
    /* two shards: unpacked (one shard would stream); llama2-20m's, else generated */
    char *dir = tu_tmpdir(), *gdir = tu_fmt("%s/gen", dir);
    const char *lm = tu_shared("models/llama2-20m/meta");
    assert_int_equal(mkdir(gdir, 0700), 0);
    char *meta = lm ? strdup(lm) : gen_meta(gdir, 2);
    char *cmd = tu_fmt("tar -cf '%s/m.tar' -C '%s' .", dir, meta);
    assert_int_equal(sh(cmd), 0);
    free(cmd);
    free(meta);
    free(gdir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tu_unignore_signals();
        cv_torch_opts o = {.spool_dir = dir};
        cv_source *s;
        lpk_error err = {0};
        char *p = tu_fmt("%s/m.tar", dir);
        if (cv_archive_open(p, &o, open_meta, &s, &err)) _exit(2);
        if (leftovers(dir) != 1) _exit(3);
        raise(SIGTERM);
        _exit(4);
    }
    int st = tu_wait_child(pid, 120, "archive child raising SIGTERM");
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGTERM);
    assert_int_equal(leftovers(dir), 0);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    /* the spool's signal cleanup is armed once per process, at the first spool
     * file: let it see default actions even under a runner ignoring SIGTERM */
    tu_unignore_signals();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_archive_one_shard),
        cmocka_unit_test(test_archive_two_shards),
        cmocka_unit_test(test_stream_stories260k),
        cmocka_unit_test(test_stream_shards),
        cmocka_unit_test(test_stream_meta_truncated),
        cmocka_unit_test(test_archive_bad),
        cmocka_unit_test(test_archive_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
