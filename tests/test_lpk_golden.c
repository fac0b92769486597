/* Committed golden containers (tests/golden/) read back to their known
 * content, and the writer still produces the plain one byte for byte.
 * LLMPACK_REGEN_GOLDEN=1 rewrites them (and seeds the fuzz corpus). */
#include "tutil.h"
#include "tlpk.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#define GOLDEN "tests/golden/"

/* A tokenizer-like store big enough (> 64 KiB encoded) to be compressed. */
static lpk_meta *zstd_meta(void)
{
    lpk_meta *m = lpk_meta_new();
    enum { N = 4200 };
    char **s = malloc(N * sizeof *s);
    for (int i = 0; i < N; i++) s[i] = tu_fmt("tok%05d", i);
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_meta_set_str_arr(m, "tokenizer.ggml.tokens", (const char *const *)s, NULL, N);
    lpk_meta_set_u32(m, "tokenizer.ggml.bos_token_id", 1);
    lpk_meta_set_u32(m, "tokenizer.ggml.eos_token_id", 2);
    for (int i = 0; i < N; i++) free(s[i]);
    free(s);
    return m;
}

static void zstd_decls(lpk_tensor *d)
{
    memset(d, 0, sizeof *d);
    strcpy(d->name, "output_norm.weight");
    d->type = LPK_TYPE_F32;
    d->n_dims = 1;
    d->dims[0] = 16;
}

static void regen(void)
{
    lpk_error err = {0};
    lpk_meta *m = tl_meta_all_types(0);
    lpk_tensor d[16];
    size_t n = tl_decls_all_types(d);
    assert_int_equal(tl_write(GOLDEN "all_types.lpk", m, d, n, LPK_WRITE_FORCE, 64, &err), 0);
    lpk_meta_free(m);
    m = zstd_meta();
    zstd_decls(d);
    assert_int_equal(tl_write(GOLDEN "zstd_meta.lpk", m, d, 1, LPK_WRITE_FORCE, 64, &err), 0);
    lpk_meta_free(m);
    lpk_writer *w;
    assert_int_equal(lpk_writer_open(GOLDEN "empty.lpk", NULL, NULL, 0, LPK_WRITE_FORCE, &w,
                                     &err), 0);
    assert_int_equal(lpk_writer_finish(w, &err), 0);
}

static void check_tensors(lpk_reader *r, const lpk_tensor *d, size_t n)
{
    lpk_error err = {0};
    assert_int_equal(lpk_reader_n_tensors(r), n);
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        assert_string_equal(t->name, d[i].name);
        assert_int_equal(t->type, d[i].type);
        assert_int_equal(t->n_dims, d[i].n_dims);
        assert_memory_equal(t->dims, d[i].dims, sizeof t->dims);
        uint8_t *want = malloc(t->size);
        for (uint64_t j = 0; j < t->size; j++) want[j] = tl_byte(i, j);
        assert_memory_equal(t->data, want, t->size);
        assert_int_equal(t->xxh3, XXH3_64bits(want, t->size));
        free(want);
        assert_int_equal(lpk_reader_verify_tensor(r, i, &err), 0);
    }
    assert_int_equal(lpk_reader_verify_header(r, &err), 0);
}

static void test_all_types(void **state)
{
    (void)state;
    lpk_error err = {0};
    lpk_reader *r;
    int st = lpk_reader_open(GOLDEN "all_types.lpk", &r, &err);
    if (st) fail_msg("%s", err.msg);
    lpk_meta *m = tl_meta_all_types(0);
    tl_assert_meta_equal(m, lpk_reader_meta(r));
    lpk_tensor d[16];
    size_t n = tl_decls_all_types(d);
    check_tensors(r, d, n);
    /* spot checks straight from the spec, independent of the reader */
    size_t len;
    uint8_t *b = (uint8_t *)tu_read_file(GOLDEN "all_types.lpk", &len);
    assert_memory_equal(b, "\x89LPK\r\n\x1a\n", 8);
    assert_int_equal(b[8], 1);
    assert_int_equal(len, lpk_reader_file_size(r));
    assert_int_equal(XXH3_64bits(lpk_reader_tensor(r, 0)->data, 1280),
                     lpk_reader_tensor(r, 0)->xxh3);
    lpk_reader_close(r);

    /* the writer is deterministic: same input, same bytes */
    char *dir = tu_tmpdir();
    char *p = tu_fmt("%s/again.lpk", dir);
    assert_int_equal(tl_write(p, m, d, n, 0, 1000, &err), 0);
    size_t len2;
    char *b2 = tu_read_file(p, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(b, b2, len);
    free(b2);
    free(b);
    free(p);
    tu_rmtree(dir);
    free(dir);
    lpk_meta_free(m);
}

static void test_zstd_meta(void **state)
{
    (void)state;
    lpk_error err = {0};
    lpk_reader *r;
    int st = lpk_reader_open(GOLDEN "zstd_meta.lpk", &r, &err);
    if (st) fail_msg("%s", err.msg);
    assert_int_equal(lpk_reader_flags(r), 1);
    lpk_meta *m = zstd_meta();
    tl_assert_meta_equal(m, lpk_reader_meta(r));
    lpk_tensor d;
    zstd_decls(&d);
    check_tensors(r, &d, 1);
    lpk_reader_close(r);
    lpk_meta_free(m);
}

static void test_empty(void **state)
{
    (void)state;
    lpk_error err = {0};
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(GOLDEN "empty.lpk", &r, &err), 0);
    assert_int_equal(lpk_reader_file_size(r), 128);
    assert_int_equal(lpk_reader_n_tensors(r), 0);
    assert_int_equal(lpk_reader_verify_header(r, &err), 0);
    lpk_reader_close(r);
    /* the header hash as the spec computes it, independently of the reader */
    size_t len;
    uint8_t *b = (uint8_t *)tu_read_file(GOLDEN "empty.lpk", &len);
    assert_int_equal(len, 128);
    uint64_t stored = 0;
    for (int i = 7; i >= 0; i--) stored = stored << 8 | b[24 + i];
    memset(b + 24, 0, 8);
    assert_int_equal(stored, XXH3_64bits(b, 128));
    assert_int_equal(stored, 0xae7ab6350eabee7cull); /* the value docs/FORMAT.md shows */
    free(b);
}

int main(void)
{
    const char *g = getenv("LLMPACK_REGEN_GOLDEN");
    if (g && *g == '1') regen();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_types),
        cmocka_unit_test(test_zstd_meta),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
