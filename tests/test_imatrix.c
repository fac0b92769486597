/* format/imatrix.c: llama.cpp's importance-matrix files (legacy and GGUF). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tutil.h"
#include "../format/lpk.h"

#define LLAMA_IMATRIX "gguf/llama2-20m-docs-calib.imatrix"

/* A small matrix with known values. */
static lpk_imatrix *make_im(void)
{
    lpk_imatrix *im = lpk_imatrix_new();
    assert_non_null(im);
    const char *names[] = {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"};
    const int64_t ns[] = {64, 96};
    for (int k = 0; k < 2; k++) {
        lpk_imatrix_entry *e;
        assert_int_equal(lpk_imatrix_add(im, names[k], ns[k], &e), LPK_OK);
        for (int64_t i = 0; i < e->n; i++) e->sum2[i] = (float)(i * 0.37 + k) + 0.125f;
        e->count = 1536.0f;
        e->ncall = 3;
    }
    im->chunks = 3;
    im->chunk_size = 512;
    assert_int_equal(lpk_imatrix_set_dataset(im, "calib.txt"), LPK_OK);
    return im;
}

static void same_weights(const lpk_imatrix *a, const lpk_imatrix *b, double tol)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const lpk_imatrix_entry *x = &a->e[i], *y = lpk_imatrix_find(b, x->name);
        assert_non_null(y);
        assert_int_equal(x->n, y->n);
        float *wx = malloc((size_t)x->n * 4), *wy = malloc((size_t)x->n * 4);
        lpk_imatrix_weights(x, wx);
        lpk_imatrix_weights(y, wy);
        for (int64_t k = 0; k < x->n; k++) {
            if (tol == 0) assert_true(wx[k] == wy[k]);
            else assert_true(fabs(wx[k] - wy[k]) <= tol * fabs(wx[k]));
        }
        free(wx);
        free(wy);
    }
}

/* Written legacy and GGUF files read back to the same weights; a legacy file
 * read and written again is byte-identical. */
static void test_roundtrip(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    lpk_imatrix *im = make_im();
    lpk_error err = {0};
    for (int f = 0; f < 2; f++) {
        char *p = tu_fmt("%s/m%s", dir, f ? ".gguf" : ".dat");
        assert_int_equal(lpk_imatrix_write(p, im, LPK_IMATRIX_AUTO, 0, &err), LPK_OK);
        lpk_imatrix *back = NULL;
        assert_int_equal(lpk_imatrix_read(p, &back, &err), LPK_OK);
        assert_int_equal(back->format, f ? LPK_IMATRIX_GGUF : LPK_IMATRIX_LEGACY);
        assert_string_equal(back->dataset, "calib.txt");
        assert_int_equal(back->chunks, 3);
        /* legacy stores sum/count*ncall in float: equal to rounding */
        same_weights(im, back, f ? 0.0 : 1e-6);
        if (f) {
            assert_true(back->e[0].count == im->e[0].count);
            assert_true(back->e[1].sum2[5] == im->e[1].sum2[5]);
        }
        /* read -> write -> identical bytes, and the same hash */
        char *p2 = tu_fmt("%s/again%s", dir, f ? ".gguf" : ".dat");
        assert_int_equal(lpk_imatrix_write(p2, back, LPK_IMATRIX_AUTO, 0, &err), LPK_OK);
        size_t n1, n2;
        char *b1 = tu_read_file(p, &n1), *b2 = tu_read_file(p2, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(b1, b2, n1);
        lpk_imatrix *again = NULL;
        assert_int_equal(lpk_imatrix_read(p2, &again, &err), LPK_OK);
        assert_true(again->hash == back->hash);
        /* an existing target is not replaced without the force flag */
        assert_int_equal(lpk_imatrix_write(p2, back, LPK_IMATRIX_AUTO, 0, &err), LPK_EEXIST);
        lpk_imatrix_free(again);
        lpk_imatrix_free(back);
        free(b1);
        free(b2);
        free(p);
        free(p2);
    }
    lpk_imatrix_free(im);
    tu_rmtree(dir);
    free(dir);
}

/* llama.cpp's own file: 42 entries (7 weights x 6 layers, no output), 206
 * chunks, the dataset name; written back byte for byte. */
static void test_llama_file(void **state)
{
    (void)state;
    TU_NEED_SHARED(path, LLAMA_IMATRIX);
    lpk_error err = {0};
    lpk_imatrix *im = NULL;
    assert_int_equal(lpk_imatrix_read(path, &im, &err), LPK_OK);
    assert_int_equal(im->format, LPK_IMATRIX_LEGACY);
    assert_int_equal(im->n, 42);
    assert_int_equal(im->chunks, 206);
    assert_non_null(im->dataset);
    assert_non_null(strstr(im->dataset, "docs-calib.txt"));
    const lpk_imatrix_entry *e = lpk_imatrix_find(im, "blk.3.ffn_down.weight");
    assert_non_null(e);
    assert_int_equal(e->n, 768);
    assert_int_equal(e->ncall, 206);
    assert_null(lpk_imatrix_find(im, "output.weight"));
    char *dir = tu_tmpdir();
    char *p = tu_fmt("%s/x.imatrix", dir);
    assert_int_equal(lpk_imatrix_write(p, im, LPK_IMATRIX_LEGACY, 0, &err), LPK_OK);
    size_t n1, n2;
    char *b1 = tu_read_file(path, &n1), *b2 = tu_read_file(p, &n2);
    /* llama.cpp writes its entries in hash-map order; we keep the file's order */
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1);
    free(b2);
    free(p);
    lpk_imatrix_free(im);
    tu_rmtree(dir);
    free(dir);
}

static lpk_tensor mk_tensor(const char *name, int64_t rows, int64_t cols)
{
    lpk_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", name);
    t.type = LPK_TYPE_F32;
    t.n_dims = 2;
    t.dims[0] = rows;
    t.dims[1] = cols;
    return t;
}

/* Errors name the entry: a tensor the model lacks, a wrong length, NaN/Inf,
 * truncation anywhere. */
static void test_errors(void **state)
{
    (void)state;
    lpk_error err = {0};
    lpk_imatrix *im = make_im();
    lpk_tensor ts[3] = {mk_tensor("blk.0.attn_q.weight", 64, 64),
                        mk_tensor("blk.0.ffn_down.weight", 64, 96),
                        mk_tensor("output.weight", 100, 64)};
    assert_int_equal(lpk_imatrix_check(im, "m", ts, 3, &err), LPK_OK);
    /* another model: no such tensor */
    ts[1] = mk_tensor("blk.0.ffn_up.weight", 96, 64);
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_check(im, "m", ts, 3, &err), LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, "blk.0.ffn_down.weight"));
    /* wrong length */
    ts[1] = mk_tensor("blk.0.ffn_down.weight", 64, 128);
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_check(im, "m", ts, 3, &err), LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, "blk.0.ffn_down.weight"));
    assert_non_null(strstr(err.msg, "96"));

    uint8_t *b;
    size_t n;
    assert_int_equal(lpk_imatrix_legacy_bytes(im, &b, &n), LPK_OK);
    lpk_imatrix *r = NULL;
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_read_buffer(b, n, "m", &r, &err), LPK_OK);
    lpk_imatrix_free(r);
    /* every truncation fails, none crashes; inside the second entry's values
     * the message names it */
    size_t entries_end = n - 8 - strlen("calib.txt");   /* older files end there */
    for (size_t cut = 0; cut < n; cut++) {
        lpk_error_clear(&err);
        int st = lpk_imatrix_read_buffer(b, cut, "m", &r, &err);
        if (cut == entries_end) {
            assert_int_equal(st, LPK_OK);
            lpk_imatrix_free(r);
            continue;
        }
        assert_null(r);
        if (st != LPK_ETRUNC && st != LPK_ECORRUPT) fail_msg("cut %zu: status %d", cut, st);
    }
    size_t second = 4 + 4 + strlen("blk.0.attn_q.weight") + 8 + 64 * 4;
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_read_buffer(b, second + 40, "m", &r, &err), LPK_ETRUNC);
    assert_non_null(strstr(err.msg, "blk.0.ffn_down.weight"));
    /* NaN, Inf and negative values */
    size_t v0 = second + 4 + strlen("blk.0.ffn_down.weight") + 8;
    const float bad[] = {NAN, INFINITY, -1.0f};
    for (int k = 0; k < 3; k++) {
        uint8_t *c = malloc(n);
        memcpy(c, b, n);
        memcpy(c + v0 + 4 * 7, &bad[k], 4);
        lpk_error_clear(&err);
        assert_int_equal(lpk_imatrix_read_buffer(c, n, "m", &r, &err), LPK_EBADVALUE);
        assert_non_null(strstr(err.msg, "blk.0.ffn_down.weight"));
        assert_non_null(strstr(err.msg, "column 7"));
        free(c);
    }
    /* trailing garbage */
    uint8_t *c = malloc(n + 3);
    memcpy(c, b, n);
    memset(c + n, 0x55, 3);
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_read_buffer(c, n + 3, "m", &r, &err), LPK_ECORRUPT);
    free(c);
    free(b);

    /* GGUF: truncation and a non-imatrix GGUF */
    char *dir = tu_tmpdir();
    char *p = tu_fmt("%s/m.gguf", dir);
    assert_int_equal(lpk_imatrix_write(p, im, LPK_IMATRIX_AUTO, 0, &err), LPK_OK);
    char *g = tu_read_file(p, &n);
    /* (the file ends with alignment padding after the last count: cuts there
     * lose nothing) */
    for (size_t cut = 4; cut + 32 < n; cut += 7) {
        lpk_error_clear(&err);
        int st = lpk_imatrix_read_buffer(g, cut, "m.gguf", &r, &err);
        if (r) fail_msg("cut %zu of %zu read", cut, n);
        assert_true(st < 0);
    }
    free(g);
    const char *model = tu_shared_or_demo("gguf/stories260K-f32.gguf", "--type f32");
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_read(model, &r, &err), LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, "not an importance matrix"));
    free(p);
    tu_rmtree(dir);
    free(dir);
    lpk_imatrix_free(im);
}

/* A GGUF matrix whose sums are large and whose count is tiny reads (every
 * value finite), but its legacy values (sum/count * calls) are past a float's
 * range: writing or hashing the legacy layout is EBADVALUE naming the entry,
 * never an Inf that the legacy reader would then refuse. Found by fuzz_imatrix;
 * the GGUF is kept in its corpus (LLMPACK_IMATRIX_CRASH_OUT writes it there). */
static void test_legacy_overflow(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    lpk_imatrix *im = make_im();
    lpk_error err = {0};
    im->e[1].sum2[5] = 3.0e38f;
    im->e[1].count = 0.5f;
    char *g = tu_fmt("%s/big.gguf", dir);
    assert_int_equal(lpk_imatrix_write(g, im, LPK_IMATRIX_AUTO, 0, &err), LPK_OK);
    const char *keep = getenv("LLMPACK_IMATRIX_CRASH_OUT");
    if (keep) assert_int_equal(lpk_imatrix_write(keep, im, LPK_IMATRIX_GGUF, LPK_WRITE_FORCE,
                                                 &err), LPK_OK);
    lpk_imatrix *r = NULL;
    assert_int_equal(lpk_imatrix_read(g, &r, &err), LPK_OK);
    uint8_t *b = NULL;
    size_t n = 0;
    assert_int_equal(lpk_imatrix_legacy_bytes(r, &b, &n), LPK_EBADVALUE);
    assert_null(b);
    assert_int_equal(lpk_imatrix_rehash(r), LPK_EBADVALUE);
    char *l = tu_fmt("%s/big.dat", dir);
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_write(l, r, LPK_IMATRIX_AUTO, 0, &err), LPK_EBADVALUE);
    assert_non_null(strstr(err.msg, "blk.0.ffn_down.weight"));
    assert_non_null(strstr(err.msg, ".gguf"));
    assert_false(tu_exists(l));
    /* one step inside the range writes, and reads back finite */
    r->e[1].count = 1.0f;
    r->e[1].ncall = 1;
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_write(l, r, LPK_IMATRIX_AUTO, 0, &err), LPK_OK);
    lpk_imatrix *back = NULL;
    assert_int_equal(lpk_imatrix_read(l, &back, &err), LPK_OK);
    assert_true(back->e[1].sum2[5] == 3.0e38f);
    lpk_imatrix_free(back);
    lpk_imatrix_free(r);
    lpk_imatrix_free(im);
    free(g);
    free(l);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_llama_file),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_legacy_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
