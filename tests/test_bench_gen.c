/* bench/gen_ckpt: the synthetic checkpoints the convert benchmark runs on.
 * One seed written in Hugging Face layout and as 2-shard Meta torch zips
 * (plain and zip64) must convert to the same tensors, which also runs the
 * Meta reader on generated multi-shard zips. Tiny shape only. */
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *gen_bin(void)
{
    const char *g = getenv("LLMPACK_GEN_CKPT");
    return g && tu_exists(g) ? g : NULL;
}

static void gen(const char *args)
{
    char *cmd = tu_fmt("'%s' %s > /dev/null", gen_bin(), args);
    int rc = system(cmd);
    if (rc) fail_msg("%s: exit status %d", cmd, rc);
    free(cmd);
}

static void convert(const char *src, const char *out)
{
    char *log = NULL;
    int rc = tu_llmpack(&log, "convert '%s' -o '%s' --no-tokenizer --force", src, out);
    if (rc) fail_msg("convert %s: %s", src, log ? log : "");
    free(log);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The end of a zip: EOCD last (no comment), preceded by the zip64 locator iff zip64. */
static int has_zip64_end(const char *path)
{
    size_t n;
    unsigned char *b = (unsigned char *)tu_read_file(path, &n);
    assert_non_null(b);
    assert_true(n > 42);
    assert_int_equal(le32(b + n - 22), 0x06054b50u);
    int z = le32(b + n - 42) == 0x07064b50u;
    free(b);
    return z;
}

static void same(const char *a, const char *b)
{
    char why[512];
    if (tu_lpk_same_tensors(a, b, why, sizeof why)) fail_msg("%s vs %s: %s", a, b, why);
}

static void test_meta_equals_hf(void **state)
{
    (void)state;
    if (!gen_bin()) {
        print_message("SKIP: LLMPACK_GEN_CKPT not set (run through make test)\n");
        skip();
    }
    char *d = tu_tmpdir();
    char *args = tu_fmt("--shape tiny --seed 7 --format meta --shards 2 --out '%s/meta'", d);
    gen(args);
    free(args);
    args = tu_fmt("--shape tiny --seed 7 --format meta --shards 2 --zip64 --out '%s/meta64'", d);
    gen(args);
    free(args);
    args = tu_fmt("--shape tiny --seed 7 --shards 2 --out '%s/hf'", d);
    gen(args);
    free(args);
    args = tu_fmt("--shape tiny --seed 8 --shards 2 --out '%s/hf8'", d);
    gen(args);
    free(args);
    const char *names[] = {"meta", "meta64", "hf", "hf8"};
    char *lpk[4];
    for (int i = 0; i < 4; i++) {
        char *src = tu_fmt("%s/%s", d, names[i]);
        lpk[i] = tu_fmt("%s/%s.lpk", d, names[i]);
        convert(src, lpk[i]);
        free(src);
    }
    char *p0 = tu_fmt("%s/meta/consolidated.01.pth", d), *p1 = tu_fmt("%s/meta64/consolidated.01.pth", d);
    assert_false(has_zip64_end(p0));
    assert_true(has_zip64_end(p1));
    free(p0);
    free(p1);
    same(lpk[0], lpk[2]);
    same(lpk[1], lpk[2]);
    char why[512];
    assert_int_not_equal(tu_lpk_same_tensors(lpk[2], lpk[3], why, sizeof why), 0);
    for (int i = 0; i < 4; i++) free(lpk[i]);
    tu_rmtree(d);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meta_equals_hf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
