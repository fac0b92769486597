/* Committed golden containers (tests/golden/) read back to their known
 * content, and the writer still produces the plain one byte for byte.
 * LLMPACK_REGEN_GOLDEN=1 rewrites them (and seeds the fuzz corpus) with the
 * writer under test, so the files are checked twice: through lpk_reader, and
 * by spec_check() below, a decoder written here from docs/FORMAT.md alone (its
 * own field offsets, type table and rules; libzstd and libxxhash only) that
 * compares every byte of each file with the fixtures it was made from
 * (tests/tlpk.c). A writer bug that a regenerated golden file would carry is
 * caught there, not hidden by the reader agreeing with the writer. */
#include "tutil.h"
#include "tlpk.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#include <zstd.h>

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

/* ---------------------------------------------------------------- spec decoder */
/* Everything below follows docs/FORMAT.md, not format/: little-endian fields at
 * the offsets of its tables, the type table's ids and block sizes. */
static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* docs/FORMAT.md's type table: name, id, elements per block, bytes per block */
static const struct { const char *name; uint32_t id, block, bytes; } spec_types[] = {
    {"f32", 0, 1, 4},      {"f16", 1, 1, 2},      {"bf16", 30, 1, 2},
    {"q8_0", 8, 32, 34},   {"q4_0", 2, 32, 18},   {"q4_1", 3, 32, 20},
    {"q5_0", 6, 32, 22},   {"q5_1", 7, 32, 24},   {"q4_k", 12, 256, 144},
    {"q6_k", 14, 256, 210},
};

/* bytes of one scalar of vtype t (0 for str/arr), from the vtype table */
static uint64_t spec_vsize(uint32_t t)
{
    static const uint8_t sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : 0;
}

/* Reads the scalar of vtype t at p into a host value's bytes for comparison. */
static void spec_scalar(const uint8_t *p, uint32_t t, uint8_t out[8])
{
    uint64_t v = le(p, (int)spec_vsize(t));
    memset(out, 0, 8);
    switch (spec_vsize(t)) {
    case 1: { uint8_t x = (uint8_t)v; memcpy(out, &x, 1); break; }
    case 2: { uint16_t x = (uint16_t)v; memcpy(out, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(out, &x, 4); break; }
    default: memcpy(out, &v, 8); break;
    }
}

typedef struct { const uint8_t *p; uint64_t n, at; } spec_cur;

static const uint8_t *spec_take(spec_cur *c, uint64_t k)
{
    if (k > c->n - c->at) fail_msg("metadata entry runs past the section (at %llu)",
                                   (unsigned long long)c->at);
    const uint8_t *q = c->p + c->at;
    c->at += k;
    return q;
}

/* One value of vtype t from the section, compared with item `j` of kv (or the
 * scalar/string itself when j < 0). */
static void spec_value(spec_cur *c, uint32_t t, const lpk_kv *kv, int64_t j)
{
    if (t == 8) {
        uint64_t len = le(spec_take(c, 8), 8);
        const uint8_t *b = spec_take(c, len);
        lpk_str want = j < 0 ? kv->str : lpk_kv_str_at(kv, (uint64_t)j);
        assert_int_equal(len, want.n);
        assert_memory_equal(b, want.p, len);
        return;
    }
    uint64_t k = spec_vsize(t);
    assert_true(k > 0);
    uint8_t got[8];
    spec_scalar(spec_take(c, k), t, got);
    if (t == 7) assert_true(got[0] <= 1);
    const uint8_t *want = (const uint8_t *)kv->data + (j < 0 ? 0 : (uint64_t)j * k);
    assert_memory_equal(got, want, k);
}

/* Decodes path by the spec and checks it holds exactly meta (in order) and the
 * tensors d[0..n) with tl_byte() content, laid out and checksummed as the spec
 * says. Returns the flags field. */
static uint32_t spec_check(const char *path, const lpk_meta *meta, const lpk_tensor *d, size_t n)
{
    size_t len;
    uint8_t *b = (uint8_t *)tu_read_file(path, &len);
    assert_non_null(b);
    assert_true(len >= 128);
    /* header */
    assert_memory_equal(b, "\x89LPK\r\n\x1a\n", 8);
    assert_int_equal(le(b + 8, 4), 1);
    uint32_t flags = (uint32_t)le(b + 12, 4);
    assert_int_equal(flags & ~1u, 0);
    assert_int_equal(le(b + 16, 8), len);
    uint64_t meta_off = le(b + 32, 8), meta_size = le(b + 40, 8), raw = le(b + 48, 8);
    uint64_t count = le(b + 56, 8), dir = le(b + 64, 8), nt = le(b + 72, 8);
    uint64_t data_off = le(b + 80, 8), data_size = le(b + 88, 8);
    assert_int_equal(meta_off, 128);
    assert_int_equal(dir, 128 + meta_size);
    assert_int_equal(nt, n);
    assert_int_equal(data_off, (dir + 320 * nt + 63) / 64 * 64);
    assert_int_equal(data_size, len - data_off);
    for (int i = 96; i < 128; i++) assert_int_equal(b[i], 0);
    for (uint64_t i = dir + 320 * nt; i < data_off; i++) assert_int_equal(b[i], 0);
    /* header_xxh3 over [0, data_offset) with its own 8 bytes as zero */
    uint8_t *h = malloc(data_off);
    memcpy(h, b, data_off);
    memset(h + 24, 0, 8);
    assert_int_equal(le(b + 24, 8), XXH3_64bits(h, data_off));
    free(h);

    /* metadata: plain, or exactly one zstd frame of exactly raw bytes */
    uint8_t *sec = b + 128, *dec = NULL;
    if (flags & 1) {
        assert_true(raw > 0 && raw <= (1u << 28));
        assert_int_equal(ZSTD_findFrameCompressedSize(sec, meta_size), meta_size);
        dec = malloc(raw);
        assert_int_equal(ZSTD_decompress(dec, raw, sec, meta_size), raw);
        sec = dec;
    } else {
        assert_int_equal(raw, meta_size);
    }
    assert_int_equal(count, meta ? lpk_meta_count(meta) : 0);
    spec_cur c = {sec, raw, 0};
    for (uint64_t e = 0; e < count; e++) {
        const lpk_kv *kv = lpk_meta_at(meta, e);
        uint64_t kl = le(spec_take(&c, 8), 8);
        assert_true(kl >= 1 && kl <= 65535);
        const uint8_t *key = spec_take(&c, kl);
        assert_int_equal(kl, strlen(kv->key));
        assert_memory_equal(key, kv->key, kl);
        uint32_t t = (uint32_t)le(spec_take(&c, 4), 4);
        assert_int_equal(t, kv->type);
        if (t != 9) {
            spec_value(&c, t, kv, -1);
            continue;
        }
        uint32_t elem = (uint32_t)le(spec_take(&c, 4), 4);
        uint64_t cnt = le(spec_take(&c, 8), 8);
        assert_true(elem < 13 && elem != 9);
        assert_int_equal(elem, kv->elem);
        assert_int_equal(cnt, kv->count);
        for (uint64_t j = 0; j < cnt; j++) spec_value(&c, elem, kv, (int64_t)j);
    }
    assert_int_equal(c.at, raw);   /* nothing left over */
    free(dec);

    /* directory and data */
    uint64_t next = data_off;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *e = b + dir + 320 * i;
        size_t nl = strlen(d[i].name);
        assert_memory_equal(e, d[i].name, nl);
        for (int k = (int)nl; k < 256; k++) assert_int_equal(e[k], 0);
        uint32_t id = (uint32_t)le(e + 256, 4);
        size_t ti = 0;
        while (ti < sizeof spec_types / sizeof spec_types[0] &&
               strcmp(spec_types[ti].name, lpk_type_get(d[i].type)->name) != 0)
            ti++;
        assert_true(ti < sizeof spec_types / sizeof spec_types[0]);
        assert_int_equal(id, spec_types[ti].id);
        uint32_t nd = (uint32_t)le(e + 260, 4);
        assert_int_equal(nd, d[i].n_dims);
        uint64_t elems = 1;
        for (uint32_t k = 0; k < 4; k++) {
            uint64_t dk = le(e + 264 + 8 * k, 8);
            assert_int_equal(dk, k < nd ? (uint64_t)d[i].dims[k] : 0);
            if (k < nd) elems *= dk;
        }
        assert_int_equal(le(e + 264 + 8 * (nd - 1), 8) % spec_types[ti].block, 0);
        uint64_t off = le(e + 296, 8), size = le(e + 304, 8);
        assert_int_equal(size, elems / spec_types[ti].block * spec_types[ti].bytes);
        assert_int_equal(off, (next + 63) / 64 * 64);
        for (uint64_t k = next; k < off; k++) assert_int_equal(b[k], 0);
        uint8_t *want = malloc(size);
        for (uint64_t k = 0; k < size; k++) want[k] = tl_byte(i, k);
        assert_memory_equal(b + off, want, size);
        assert_int_equal(le(e + 312, 8), XXH3_64bits(want, size));
        free(want);
        next = off + size;
    }
    assert_int_equal(next, len);   /* the file ends at the last tensor's last byte */
    free(b);
    return flags;
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
    assert_int_equal(spec_check(GOLDEN "all_types.lpk", m, d, n), 0);
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
    assert_int_equal(spec_check(GOLDEN "zstd_meta.lpk", m, &d, 1), 1);
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
    assert_int_equal(spec_check(GOLDEN "empty.lpk", NULL, NULL, 0), 0);
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
