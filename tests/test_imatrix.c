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
    lpk_meta *m = lpk_meta_new();
    assert_int_equal(lpk_imatrix_record(im, NULL, m), LPK_OK);
    assert_null(lpk_meta_find(m, "quant.imatrix.cov32_count"));
    lpk_meta_free(m);
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

/* ---------------------------------------------------------------- cov32 blocks */
/* Gives make_im's entries cov32 sums: a Gram matrix of made-up activations
 * whose diagonal is the entry's sums. Entry 0 (64 columns) gets blocks, entry
 * 1 (96) too. */
static void add_cov(lpk_imatrix *im)
{
    for (size_t k = 0; k < im->n; k++) {
        lpk_imatrix_entry *e = &im->e[k];
        assert_int_equal(lpk_imatrix_add_cov32(e), LPK_OK);
        for (int64_t c = 0; c < e->n; c++)
            for (int j = 0; j < 32; j++) {
                int64_t c2 = c - c % 32 + j;
                e->cov32[c * 32 + j] = c2 == c ? e->sum2[c]
                                               : (float)(0.01 * (double)((c * 7 + c2 * 7) % 23 - 11));
            }
    }
}

/* An independent legacy encoder: entries (name, ncall, n values). */
typedef struct { const char *name; int32_t ncall, n; const float *v; } leg_entry;

static uint8_t *leg_bytes(const leg_entry *es, int n, size_t *len)
{
    tu_buf b = {0};
    int32_t v = n;
    tu_buf_put(&b, &v, 4);
    for (int i = 0; i < n; i++) {
        v = (int32_t)strlen(es[i].name);
        tu_buf_put(&b, &v, 4);
        tu_buf_put(&b, es[i].name, strlen(es[i].name));
        tu_buf_put(&b, &es[i].ncall, 4);
        tu_buf_put(&b, &es[i].n, 4);
        tu_buf_put(&b, es[i].v, (size_t)es[i].n * 4);
    }
    *len = b.n;
    return (uint8_t *)b.p;
}

/* cov32 blocks: written after llama-imatrix's entries in the legacy layout
 * (NAME.cov32, the same call count, values scaled as NAME's), as NAME.cov32
 * tensors in GGUF; read back to the same means (lpk_imatrix_cov32), written
 * again byte for byte; the accessor's diagonal equals the importance. */
static void test_cov_roundtrip(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    lpk_imatrix *im = make_im();
    add_cov(im);
    assert_int_equal(lpk_imatrix_n_cov32(im), 2);
    lpk_error err = {0};
    /* provenance: entries_count counts llama-imatrix's entries, cov32_count the blocks */
    lpk_meta *m = lpk_meta_new();
    uint32_t v32;
    assert_int_equal(lpk_imatrix_record(im, NULL, m), LPK_OK);
    assert_int_equal(lpk_meta_get_u32(m, "quantize.imatrix.entries_count", &v32), LPK_OK);
    assert_int_equal(v32, 2);
    assert_int_equal(lpk_meta_get_u32(m, "quant.imatrix.cov32_count", &v32), LPK_OK);
    assert_int_equal(v32, 2);
    lpk_meta_free(m);
    float *want = malloc(96 * 32 * 4), *got = malloc(96 * 32 * 4), *w = malloc(96 * 4);
    for (int f = 0; f < 2; f++) {
        char *p = tu_fmt("%s/c%s", dir, f ? ".gguf" : ".dat");
        assert_int_equal(lpk_imatrix_write(p, im, LPK_IMATRIX_AUTO, 0, &err), LPK_OK);
        size_t n1;
        uint8_t *b1 = (uint8_t *)tu_read_file(p, &n1);
        if (!f) {
            /* 4 entries: the two plain ones first, then their blocks */
            int32_t v;
            memcpy(&v, b1, 4);
            assert_int_equal(v, 4);
            size_t at = 4;
            const char *order[] = {"blk.0.attn_q.weight", "blk.0.ffn_down.weight",
                                   "blk.0.attn_q.weight.cov32", "blk.0.ffn_down.weight.cov32"};
            const int32_t nv[] = {64, 96, 64 * 32, 96 * 32};
            for (int k = 0; k < 4; k++) {
                memcpy(&v, b1 + at, 4);
                assert_int_equal(v, strlen(order[k]));
                assert_memory_equal(b1 + at + 4, order[k], strlen(order[k]));
                at += 4 + strlen(order[k]);
                memcpy(&v, b1 + at, 4);
                assert_int_equal(v, 3);            /* the call count */
                memcpy(&v, b1 + at + 4, 4);
                assert_int_equal(v, nv[k]);
                if (k == 3) {
                    /* value = sum / count * calls, as llama-quantize divides by calls */
                    float x;
                    memcpy(&x, b1 + at + 8 + 4 * 33, 4);
                    assert_true(x == (float)((double)im->e[1].cov32[33] / 1536.0 * 3));
                }
                at += 8 + 4 * (size_t)nv[k];
            }
        }
        lpk_imatrix *back = NULL;
        assert_int_equal(lpk_imatrix_read(p, &back, &err), LPK_OK);
        assert_int_equal(back->n, 2);
        assert_int_equal(lpk_imatrix_n_cov32(back), 2);
        same_weights(im, back, f ? 0.0 : 1e-6);
        for (size_t k = 0; k < 2; k++) {
            const lpk_imatrix_entry *e = &im->e[k];
            assert_int_equal(lpk_imatrix_cov32(im, e->name, e->n, want), 1);
            assert_int_equal(lpk_imatrix_cov32(back, e->name, e->n, got), 1);
            for (int64_t i = 0; i < e->n * 32; i++) {
                double tol = f ? 0 : 1e-6 * fabs(want[i]);
                if (fabs(want[i] - got[i]) > tol) fail_msg("%s %lld", e->name, (long long)i);
                assert_true(want[i] == (float)((double)e->cov32[i] / e->count));
            }
            /* the diagonal is the importance */
            lpk_imatrix_weights(lpk_imatrix_find(back, e->name), w);
            for (int64_t c = 0; c < e->n; c++)
                assert_true(fabs(got[c * 32 + c % 32] - w[c]) <= 1e-6 * w[c]);
            /* the wrong row length or no such tensor: 0, out untouched */
            got[0] = -7.0f;
            assert_int_equal(lpk_imatrix_cov32(back, e->name, e->n + 32, got), 0);
            assert_int_equal(lpk_imatrix_cov32(back, "output.weight", e->n, got), 0);
            assert_true(got[0] == -7.0f);
        }
        char *p2 = tu_fmt("%s/again%s", dir, f ? ".gguf" : ".dat");
        assert_int_equal(lpk_imatrix_write(p2, back, LPK_IMATRIX_AUTO, 0, &err), LPK_OK);
        size_t n2;
        char *b2 = tu_read_file(p2, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(b1, b2, n1);
        if (f) {
            /* GGUF: NAME.cov32 is an f32 tensor of n/32 x 32 x 32 raw sums */
            lpk_reader *r = NULL;
            assert_int_equal(lpk_reader_open(p, &r, &err), LPK_OK);
            const lpk_tensor *t = lpk_reader_find(r, "blk.0.ffn_down.weight.cov32");
            assert_non_null(t);
            assert_int_equal(t->type, LPK_TYPE_F32);
            assert_int_equal(t->n_dims, 3);
            assert_int_equal(t->dims[0], 3);
            assert_int_equal(t->dims[1], 32);
            assert_int_equal(t->dims[2], 32);
            assert_memory_equal(t->data, im->e[1].cov32, 96 * 32 * 4);
            assert_non_null(lpk_reader_find(r, "blk.0.ffn_down.weight.in_sum2"));
            lpk_reader_close(r);
        }
        /* the same matrix without blocks: the plain entries' bytes unchanged */
        lpk_imatrix_free(back);
        free(b1);
        free(b2);
        free(p);
        free(p2);
    }
    /* a legacy file with the blocks first (llama-imatrix --in-file writes its
     * entries in hash-map order) and another call count for one of them */
    float *s0 = malloc(64 * 4), *c0 = malloc(64 * 32 * 4);
    for (int i = 0; i < 64; i++) s0[i] = 2.0f + (float)i;
    for (int i = 0; i < 64 * 32; i++) c0[i] = i % 33 == 0 ? s0[i / 32] : -0.5f;
    for (int i = 0; i < 64 * 32; i++) c0[i] *= 2.0f;   /* stored for 6 calls, not 3 */
    for (int i = 0; i < 64; i++) c0[i * 32 + i % 32] = s0[i] * 2.0f;
    leg_entry es[] = {{"blk.0.attn_q.weight.cov32", 6, 64 * 32, c0},
                      {"blk.0.attn_q.weight", 3, 64, s0}};
    size_t n;
    uint8_t *b = leg_bytes(es, 2, &n);
    lpk_imatrix *r = NULL;
    assert_int_equal(lpk_imatrix_read_buffer(b, n, "m", &r, &err), LPK_OK);
    assert_int_equal(r->n, 1);
    assert_int_equal(lpk_imatrix_cov32(r, "blk.0.attn_q.weight", 64, got), 1);
    lpk_imatrix_weights(&r->e[0], w);
    for (int i = 0; i < 64 * 32; i++) {
        float x = i % 33 == 0 ? w[i / 32] : -0.5f / 3.0f;
        if (i % 32 == (i / 32) % 32) x = w[i / 32];
        if (fabs(got[i] - x) > 1e-6 * fabs(x)) fail_msg("value %d: %g, want %g", i, got[i], x);
    }
    lpk_imatrix_free(r);
    free(b);
    free(s0);
    free(c0);
    free(want);
    free(got);
    free(w);
    lpk_imatrix_free(im);
    tu_rmtree(dir);
    free(dir);
}

/* Expects reading the legacy entries to fail with st, the message naming sub. */
static void leg_fails(const leg_entry *es, int n, int st, const char *sub)
{
    size_t len;
    uint8_t *b = leg_bytes(es, n, &len);
    lpk_imatrix *r = NULL;
    lpk_error err = {0};
    int got = lpk_imatrix_read_buffer(b, len, "m", &r, &err);
    if (got != st || !strstr(err.msg, sub))
        fail_msg("status %d (want %d): %s (want '%s')", got, st, err.msg, sub);
    assert_null(r);
    free(b);
}

/* Bad cov32 entries: without their entry, the wrong length, rows that are no
 * multiple of 32, twice, NaN/Inf anywhere, a negative diagonal value (a
 * negative off-diagonal one is fine); GGUF: the wrong shape or no in_sum2.
 * lpk_imatrix_check refuses blocks of a tensor the model lacks. */
static void test_cov_errors(void **state)
{
    (void)state;
    float *s = malloc(64 * 4), *c = malloc(64 * 33 * 4), *s48 = malloc(48 * 4),
          *c48 = malloc(48 * 32 * 4);
    for (int i = 0; i < 64; i++) s[i] = 1.0f + (float)i;
    for (int i = 0; i < 64 * 33; i++) c[i] = i % 33 == 0 ? 3.0f : -0.25f;
    for (int i = 0; i < 64; i++) c[i * 32 + i % 32] = s[i];
    for (int i = 0; i < 48; i++) s48[i] = 1.0f;
    for (int i = 0; i < 48 * 32; i++) c48[i] = 1.0f;
    const char *q = "blk.0.attn_q.weight", *qc = "blk.0.attn_q.weight.cov32";
    leg_entry ok[] = {{q, 2, 64, s}, {qc, 2, 64 * 32, c}};
    size_t n;
    uint8_t *b = leg_bytes(ok, 2, &n);
    lpk_imatrix *im = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_imatrix_read_buffer(b, n, "m", &im, &err), LPK_OK);
    free(b);
    leg_entry orphan[] = {{"blk.1.attn_q.weight.cov32", 2, 64 * 32, c}, {q, 2, 64, s}};
    leg_fails(orphan, 2, LPK_ECORRUPT, "blk.1.attn_q.weight.cov32 without the entry");
    leg_entry shortc[] = {{q, 2, 64, s}, {qc, 2, 64 * 31, c}};
    leg_fails(shortc, 2, LPK_ECORRUPT, qc);
    leg_entry longc[] = {{q, 2, 64, s}, {qc, 2, 64 * 33, c}};
    leg_fails(longc, 2, LPK_ECORRUPT, "expected 32 per column");
    leg_entry odd[] = {{q, 2, 48, s48}, {qc, 2, 48 * 32, c48}};
    leg_fails(odd, 2, LPK_ECORRUPT, "not a multiple of 32");
    leg_entry twice[] = {{q, 2, 64, s}, {qc, 2, 64 * 32, c}, {qc, 2, 64 * 32, c}};
    leg_fails(twice, 3, LPK_ECORRUPT, "appears twice");
    const struct { int at; float v; } bad[] = {{5, NAN}, {40 * 32 + 3, INFINITY},
                                               {40 * 32 + 8, -INFINITY}, {33 * 2, -1.0f}};
    for (int k = 0; k < 4; k++) {
        float keep = c[bad[k].at];
        c[bad[k].at] = bad[k].v;
        leg_fails(ok, 2, LPK_EBADVALUE, qc);
        c[bad[k].at] = keep;
    }
    /* the model lacks the tensor: check names it (as for plain entries) */
    lpk_tensor ts[2] = {mk_tensor("blk.0.attn_k.weight", 64, 64),
                        mk_tensor("output.weight", 100, 64)};
    assert_int_equal(lpk_imatrix_check(im, "m", ts, 2, &err), LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, q));
    ts[0] = mk_tensor(q, 64, 64);
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_check(im, "m", ts, 2, &err), LPK_OK);
    /* the model's rows are longer: the entry (and its blocks) are another model's */
    ts[0] = mk_tensor(q, 64, 96);
    assert_int_equal(lpk_imatrix_check(im, "m", ts, 2, &err), LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, q));
    /* a block made in memory: NaN is refused by check too */
    im->e[0].cov32[70] = NAN;
    ts[0] = mk_tensor(q, 64, 64);
    lpk_error_clear(&err);
    assert_int_equal(lpk_imatrix_check(im, "m", ts, 2, &err), LPK_EBADVALUE);
    assert_non_null(strstr(err.msg, qc));
    im->e[0].cov32[70] = 0.0f;
    /* add_cov32 needs whole blocks */
    lpk_imatrix_entry *e;
    assert_int_equal(lpk_imatrix_add(im, "blk.0.ffn_down.weight", 48, &e), LPK_OK);
    assert_int_equal(lpk_imatrix_add_cov32(e), LPK_EINVAL);
    assert_null(e->cov32);

    /* GGUF: a cov32 tensor of the wrong shape, or without its in_sum2 */
    char *dir = tu_tmpdir();
    for (int k = 0; k < 2; k++) {
        lpk_meta *m = lpk_meta_new();
        assert_int_equal(lpk_meta_set_str(m, "general.type", "imatrix"), LPK_OK);
        lpk_tensor d[3];
        memset(d, 0, sizeof d);
        snprintf(d[0].name, sizeof d[0].name, "%s.in_sum2", k ? "blk.0.attn_k.weight" : q);
        snprintf(d[1].name, sizeof d[1].name, "%s.counts", k ? "blk.0.attn_k.weight" : q);
        snprintf(d[2].name, sizeof d[2].name, "%s", qc);
        for (int i = 0; i < 3; i++) d[i].type = LPK_TYPE_F32;
        d[0].n_dims = d[1].n_dims = 2;
        d[0].dims[0] = d[1].dims[0] = d[1].dims[1] = 1;
        d[0].dims[1] = 64;
        d[2].n_dims = k ? 3 : 2;
        d[2].dims[0] = k ? 2 : 64;
        d[2].dims[1] = 32;
        d[2].dims[2] = 32;
        char *p = tu_fmt("%s/bad%d.gguf", dir, k);
        lpk_writer *w = NULL;
        assert_int_equal(lpk_writer_open(p, m, d, 3, LPK_WRITE_GGUF, &w, &err), LPK_OK);
        float one = 1.0f;
        const void *src[3] = {s, &one, c};
        const size_t sz[3] = {64 * 4, 4, 64 * 32 * 4};
        for (int i = 0; i < 3; i++) {
            assert_int_equal(lpk_writer_tensor_begin(w, d[i].name, &err), LPK_OK);
            assert_int_equal(lpk_writer_tensor_write(w, src[i], sz[i], &err), LPK_OK);
            assert_int_equal(lpk_writer_tensor_end(w, &err), LPK_OK);
        }
        assert_int_equal(lpk_writer_finish(w, &err), LPK_OK);
        lpk_meta_free(m);
        lpk_imatrix *r = NULL;
        lpk_error_clear(&err);
        assert_int_equal(lpk_imatrix_read(p, &r, &err), LPK_ECORRUPT);
        assert_null(r);
        assert_non_null(strstr(err.msg, k ? "without the entry" : "32 x 32"));
        assert_non_null(strstr(err.msg, qc));
        free(p);
    }
    tu_rmtree(dir);
    free(dir);
    lpk_imatrix_free(im);
    free(s);
    free(c);
    free(s48);
    free(c48);
}

/* 1 when the GGUF files a and b hold the same tensors, byte for byte. */
static int same_tensors(const char *a, const char *b)
{
    lpk_reader *ra = NULL, *rb = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(a, &ra, &err), LPK_OK);
    assert_int_equal(lpk_reader_open(b, &rb, &err), LPK_OK);
    int same = lpk_reader_n_tensors(ra) == lpk_reader_n_tensors(rb);
    for (size_t i = 0; same && i < lpk_reader_n_tensors(ra); i++) {
        const lpk_tensor *x = lpk_reader_tensor(ra, i), *y = lpk_reader_find(rb, x->name);
        same = y && x->type == y->type && x->size == y->size &&
               !memcmp(x->data, y->data, (size_t)x->size);
    }
    lpk_reader_close(ra);
    lpk_reader_close(rb);
    return same;
}

/* llama-quantize b4748 (LLAMA_CPP_DIR) takes a legacy file with cov32 entries
 * and ignores them: kernel-check-f32 (rows of 256 and 768) at q4_0 and q4_k_m with a matrix, with the
 * same matrix plus blocks, gives the same tensors; without a matrix others
 * (the matrix is used). */
static void test_llama_quantize(void **state)
{
    (void)state;
    char *lq = tu_llama_tool("llama-quantize");
    if (!lq) {
        print_message("SKIP: no llama-quantize under LLAMA_CPP_DIR (%s)\n",
                      getenv("LLAMA_CPP_DIR") ? getenv("LLAMA_CPP_DIR") : "unset");
        skip();
    }
    TU_NEED_SHARED(model, "gguf/kernel-check-f32.gguf");
    lpk_error err = {0};
    lpk_reader *r = NULL;
    assert_int_equal(lpk_reader_open(model, &r, &err), LPK_OK);
    lpk_imatrix *im = lpk_imatrix_new();
    uint64_t seed = 15;
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (t->n_dims != 2 || !strncmp(t->name, "token_embd", 10)) continue;
        lpk_imatrix_entry *e;
        assert_int_equal(lpk_imatrix_add(im, t->name, lpk_tensor_ncols(t), &e), LPK_OK);
        for (int64_t k = 0; k < e->n; k++) e->sum2[k] = 0.05f + fabsf(tu_randn(&seed)) * 40;
        e->count = 1000.0f;
        e->ncall = 2;
    }
    lpk_reader_close(r);
    im->chunks = 2;
    char *dir = tu_tmpdir();
    char *plain = tu_fmt("%s/plain.imatrix", dir), *cov = tu_fmt("%s/cov.imatrix", dir);
    assert_int_equal(lpk_imatrix_write(plain, im, LPK_IMATRIX_LEGACY, 0, &err), LPK_OK);
    size_t with = 0;
    for (size_t i = 0; i < im->n; i++) {
        lpk_imatrix_entry *e = &im->e[i];
        if (e->n % 32) continue;
        assert_int_equal(lpk_imatrix_add_cov32(e), LPK_OK);
        for (int64_t k = 0; k < e->n * 32; k++)
            e->cov32[k] = k % 33 == 0 ? e->sum2[k / 32] : -5.0f * tu_randn(&seed);
        for (int64_t c = 0; c < e->n; c++) e->cov32[c * 32 + c % 32] = e->sum2[c];
        with++;
    }
    assert_true(with > 0);
    assert_int_equal(lpk_imatrix_write(cov, im, LPK_IMATRIX_LEGACY, 0, &err), LPK_OK);
    static const char *const ft[] = {"Q4_0", "Q4_K_M"};
    for (int f = 0; f < 2; f++) {
        char *o[3];
        for (int k = 0; k < 3; k++) {
            o[k] = tu_fmt("%s/o%d.gguf", dir, k);
            char *cmd = tu_fmt("'%s' %s%s%s '%s' '%s' %s >'%s/log' 2>&1", lq,
                               k < 2 ? "--imatrix '" : "", k == 0 ? plain : k == 1 ? cov : "",
                               k < 2 ? "'" : "", model, o[k], ft[f], dir);
            int rc = system(cmd);
            if (rc != 0) {
                char *log = tu_fmt("%s/log", dir);
                size_t n;
                char *text = tu_read_file(log, &n);
                fail_msg("%s: %d\n%s", cmd, rc, text ? text : "");
            }
            if (k == 1) {
                /* its count of entries is what its map holds: plain + blocks */
                char *log = tu_fmt("%s/log", dir);
                size_t n;
                char *text = tu_read_file(log, &n);
                char *want = tu_fmt("loaded %zu importance matrix entries", im->n + with);
                if (!strstr(text, want)) fail_msg("no '%s' in:\n%s", want, text);
                free(want);
                free(text);
                free(log);
            }
            free(cmd);
        }
        if (!same_tensors(o[0], o[1])) fail_msg("%s: with and without blocks differ", ft[f]);
        assert_false(same_tensors(o[0], o[2]));
        for (int k = 0; k < 3; k++) free(o[k]);
    }
    lpk_imatrix_free(im);
    free(plain);
    free(cov);
    free(lq);
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
        cmocka_unit_test(test_cov_roundtrip),
        cmocka_unit_test(test_cov_errors),
        cmocka_unit_test(test_llama_quantize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
