/* .lpk writer -> reader: every metadata type and every tensor type come back
 * exactly, in plain and zstd-compressed metadata, and the writer's rules hold. */
#include "tutil.h"
#include "tlpk.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "../format/lpk_internal.h"

static void roundtrip(uint64_t n_big, size_t chunk, int want_zstd)
{
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/m.lpk", dir);
    lpk_meta *m = tl_meta_all_types(n_big);
    lpk_tensor d[16];
    size_t n = tl_decls_all_types(d);
    lpk_error err = {0};
    int st = tl_write(path, m, d, n, 0, chunk, &err);
    if (st) print_error("%s\n", err.msg);
    assert_int_equal(st, LPK_OK);

    lpk_reader *r;
    st = lpk_reader_open(path, &r, &err);
    if (st) print_error("%s\n", err.msg);
    assert_int_equal(st, LPK_OK);
    assert_int_equal(lpk_reader_kind(r), LPK_KIND_LPK);
    assert_int_equal(lpk_reader_version(r), 1);
    assert_int_equal(lpk_reader_flags(r) & 1u, want_zstd);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(lpk_reader_file_size(r), (uint64_t)sb.st_size);
    tl_assert_meta_equal(m, lpk_reader_meta(r));
    assert_int_equal(lpk_reader_verify_header(r, &err), LPK_OK);
    assert_int_equal(lpk_reader_n_tensors(r), n);
    uint64_t prev_end = 0;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        assert_string_equal(t->name, d[i].name);
        assert_int_equal(t->type, d[i].type);
        assert_int_equal(t->n_dims, d[i].n_dims);
        for (int k = 0; k < LPK_MAX_DIMS; k++)
            assert_int_equal(t->dims[k], k < d[i].n_dims ? d[i].dims[k] : 0);
        uint64_t size;
        assert_int_equal(lpk_type_nbytes(t->type, lpk_tensor_nelems(t), &size), 0);
        assert_int_equal(t->size, size);
        assert_int_equal(t->offset % 64, 0);
        assert_true(t->offset >= prev_end);
        prev_end = t->offset + t->size;
        assert_non_null(t->data);
        const uint8_t *b = t->data;
        for (uint64_t j = 0; j < size; j++)
            if (b[j] != tl_byte(i, j)) fail_msg("tensor %zu byte %llu differs", i, (unsigned long long)j);
        assert_true(t->has_xxh3);
        assert_int_equal(t->xxh3, XXH3_64bits(b, size));
        assert_int_equal(lpk_reader_verify_tensor(r, i, &err), LPK_OK);
        assert_ptr_equal(lpk_reader_find(r, d[i].name), t);
        lpk_reader_release_tensor(r, i);
        assert_int_equal(((const uint8_t *)t->data)[0], tl_byte(i, 0)); /* re-readable */
    }
    assert_int_equal(prev_end, (uint64_t)sb.st_size);
    assert_null(lpk_reader_find(r, "nope"));
    assert_null(lpk_reader_tensor(r, n));
    lpk_reader_close(r);
    /* no temp file left behind */
    char *ls = tu_fmt("test $(ls -A %s | wc -l) -eq 1", dir);
    assert_int_equal(system(ls), 0);
    free(ls);
    lpk_meta_free(m);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

static void test_roundtrip_plain(void **state)
{
    (void)state;
    roundtrip(0, 7, 0);
}

static void test_roundtrip_zstd(void **state)
{
    (void)state;
    /* a merges-sized array: the section exceeds the compression threshold */
    roundtrip(20000, 1u << 20, 1);
}

static void test_roundtrip_mem(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/m.lpk", dir);
    lpk_meta *m = tl_meta_all_types(0);
    lpk_tensor d[16];
    size_t n = tl_decls_all_types(d);
    lpk_error err = {0};
    assert_int_equal(tl_write(path, m, d, n, 0, 100, &err), LPK_OK);
    size_t len;
    char *buf = tu_read_file(path, &len);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open_buffer(buf, len, "mem", &r, &err), LPK_OK);
    tl_assert_meta_equal(m, lpk_reader_meta(r));
    assert_int_equal(lpk_reader_verify_header(r, &err), LPK_OK);
    for (size_t i = 0; i < n; i++) assert_int_equal(lpk_reader_verify_tensor(r, i, &err), 0);
    lpk_reader_close(r);
    free(buf);
    lpk_meta_free(m);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

static void test_empty_container(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/e.lpk", dir);
    lpk_error err = {0};
    lpk_writer *w;
    assert_int_equal(lpk_writer_open(path, NULL, NULL, 0, 0, &w, &err), LPK_OK);
    assert_int_equal(lpk_writer_finish(w, &err), LPK_OK);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(path, &r, &err), LPK_OK);
    assert_int_equal(lpk_reader_n_tensors(r), 0);
    assert_int_equal(lpk_meta_count(lpk_reader_meta(r)), 0);
    assert_int_equal(lpk_reader_file_size(r), 128);
    lpk_reader_close(r);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* Call-order and declaration errors are caller errors, and leave no file. */
static void test_writer_misuse(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/x.lpk", dir);
    lpk_tensor d[16];
    size_t n = tl_decls_all_types(d);
    lpk_error err = {0};
    lpk_writer *w;
    /* bad declarations */
    lpk_tensor bad = d[3];
    bad.dims[1] = 33; /* q8_0 rows must be whole blocks */
    assert_int_equal(lpk_writer_open(path, NULL, &bad, 1, 0, &w, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "block size"));
    lpk_error_clear(&err);
    lpk_tensor two[2] = {d[0], d[0]};
    assert_int_equal(lpk_writer_open(path, NULL, two, 2, 0, &w, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "declared twice"));
    lpk_error_clear(&err);
    bad = d[0];
    bad.type = LPK_TYPE_Q8_K;
    assert_int_equal(lpk_writer_open(path, NULL, &bad, 1, 0, &w, &err), LPK_EINVAL);
    lpk_error_clear(&err);
    bad = d[0];
    bad.n_dims = 5;
    assert_int_equal(lpk_writer_open(path, NULL, &bad, 1, 0, &w, &err), LPK_EINVAL);
    lpk_error_clear(&err);
    /* wrong order, too many bytes, short tensor, early finish */
    assert_int_equal(lpk_writer_open(path, NULL, d, n, 0, &w, &err), LPK_OK);
    assert_int_equal(lpk_writer_tensor_begin(w, d[1].name, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "declaration order"));
    lpk_error_clear(&err);
    assert_int_equal(lpk_writer_tensor_write(w, "x", 1, &err), LPK_EINVAL);
    lpk_error_clear(&err);
    assert_int_equal(lpk_writer_tensor_begin(w, d[0].name, &err), LPK_OK);
    static uint8_t zero[4096];
    assert_int_equal(lpk_writer_tensor_write(w, zero, 4096, &err), LPK_EINVAL);
    lpk_error_clear(&err);
    assert_int_equal(lpk_writer_tensor_write(w, zero, 100, &err), LPK_OK);
    assert_int_equal(lpk_writer_tensor_end(w, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "100 of 1280"));
    lpk_error_clear(&err);
    assert_int_equal(lpk_writer_finish(w, &err), LPK_EINVAL);
    assert_false(tu_exists(path));
    char *ls = tu_fmt("test -z \"$(ls -A %s)\"", dir);
    assert_int_equal(system(ls), 0);
    free(ls);
    lpk_writer_abort(NULL);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

static void test_exists_and_force(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/t.lpk", dir);
    assert_int_equal(tu_write_file(path, "precious", 8), 0);
    lpk_meta *m = tl_meta_all_types(0);
    lpk_tensor d[16];
    size_t n = tl_decls_all_types(d);
    lpk_error err = {0};
    assert_int_equal(tl_write(path, m, d, n, 0, 4096, &err), LPK_EEXIST);
    assert_non_null(strstr(err.msg, "already exists"));
    size_t len;
    char *s = tu_read_file(path, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(s, "precious", 8);
    free(s);
    /* target appears while writing: finish must not replace it either */
    lpk_writer *w;
    char *p2 = tu_fmt("%s/late.lpk", dir);
    lpk_error_clear(&err);
    assert_int_equal(lpk_writer_open(p2, NULL, NULL, 0, 0, &w, &err), LPK_OK);
    assert_int_equal(tu_write_file(p2, "late", 4), 0);
    assert_int_equal(lpk_writer_finish(w, &err), LPK_EEXIST);
    s = tu_read_file(p2, &len);
    assert_int_equal(len, 4);
    free(s);
    /* with force it is replaced */
    lpk_error_clear(&err);
    assert_int_equal(tl_write(path, m, d, n, LPK_WRITE_FORCE, 4096, &err), LPK_OK);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(path, &r, &err), LPK_OK);
    lpk_reader_close(r);
    char *ls = tu_fmt("test $(ls -A %s | wc -l) -eq 2", dir);
    assert_int_equal(system(ls), 0);
    free(ls);
    lpk_meta_free(m);
    free(p2);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* Copies every tensor of r into a new container at path (flags: GGUF or not),
 * or with fd >= 0 into that file (lpk_writer_open_fd; path names it). */
static int copy_container_fd(lpk_reader *r, const char *path, int fd, unsigned flags,
                             lpk_error *err)
{
    size_t n = lpk_reader_n_tensors(r);
    lpk_tensor *d = calloc(n ? n : 1, sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = *lpk_reader_tensor(r, i);
    lpk_writer *w;
    int st = fd >= 0 ? lpk_writer_open_fd(fd, path, lpk_reader_meta(r), d, n, flags, &w, err)
                     : lpk_writer_open(path, lpk_reader_meta(r), d, n, flags, &w, err);
    for (size_t i = 0; i < n && !st; i++) {
        st = lpk_writer_tensor_begin(w, d[i].name, err);
        /* in two pieces, to exercise partial writes */
        size_t half = (size_t)d[i].size / 2;
        if (!st) st = lpk_writer_tensor_write(w, d[i].data, half, err);
        if (!st)
            st = lpk_writer_tensor_write(w, (const uint8_t *)d[i].data + half,
                                         (size_t)d[i].size - half, err);
        if (!st) st = lpk_writer_tensor_end(w, err);
    }
    free(d);
    if (st) {
        if (w) lpk_writer_abort(w);
        return st;
    }
    return lpk_writer_finish(w, err);
}

static int copy_container(lpk_reader *r, const char *path, unsigned flags, lpk_error *err)
{
    return copy_container_fd(r, path, -1, flags, err);
}

static void assert_same_tensors(lpk_reader *a, lpk_reader *b)
{
    assert_int_equal(lpk_reader_n_tensors(a), lpk_reader_n_tensors(b));
    for (size_t i = 0; i < lpk_reader_n_tensors(a); i++) {
        const lpk_tensor *x = lpk_reader_tensor(a, i), *y = lpk_reader_tensor(b, i);
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->type, y->type);
        assert_int_equal(x->n_dims, y->n_dims);
        assert_memory_equal(x->dims, y->dims, sizeof x->dims);
        assert_int_equal(x->size, y->size);
        assert_memory_equal(x->data, y->data, x->size);
    }
}

/* .lpk -> GGUF through the same writer -> .lpk again: nothing lost. */
static void test_gguf_write(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *g = tu_fmt("%s/m.gguf", dir), *l = tu_fmt("%s/back.lpk", dir);
    lpk_error err = {0};
    lpk_reader *src, *gr, *lr;
    assert_int_equal(lpk_reader_open("tests/golden/all_types.lpk", &src, &err), 0);
    int st = copy_container(src, g, 0 | LPK_WRITE_GGUF, &err);
    if (st) fail_msg("%s", err.msg);
    st = lpk_reader_open(g, &gr, &err);
    if (st) fail_msg("%s", err.msg);
    assert_int_equal(lpk_reader_kind(gr), LPK_KIND_GGUF);
    assert_same_tensors(src, gr);
    for (size_t i = 0; i < lpk_meta_count(lpk_reader_meta(src)); i++) {
        const lpk_kv *kv = lpk_meta_at(lpk_reader_meta(src), i);
        assert_non_null(lpk_meta_find(lpk_reader_meta(gr), kv->key));
    }
    assert_int_equal(copy_container(gr, l, 0, &err), 0);
    assert_int_equal(lpk_reader_open(l, &lr, &err), 0);
    assert_same_tensors(src, lr);
    assert_int_equal(lpk_reader_verify_header(lr, &err), 0);
    for (size_t i = 0; i < lpk_reader_n_tensors(lr); i++)
        assert_int_equal(lpk_reader_tensor(lr, i)->xxh3, lpk_reader_tensor(src, i)->xxh3);
    lpk_reader_close(lr);
    lpk_reader_close(gr);
    lpk_reader_close(src);
    free(g);
    free(l);
    tu_rmtree(dir);
    free(dir);
}

/* Into a memfd (as verify converts a folder): the same bytes as the file the
 * path writer makes, .lpk and GGUF, whatever the memfd held before; read back
 * through lpk_reader_open_fd after the fd is closed; nothing named anywhere. */
static void test_write_fd(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    lpk_error err = {0};
    lpk_reader *src, *back;
    assert_int_equal(lpk_reader_open("tests/golden/all_types.lpk", &src, &err), 0);
    for (int gguf = 0; gguf < 2; gguf++) {
        unsigned fl = gguf ? LPK_WRITE_GGUF : 0;
        char *path = tu_fmt("%s/m.%s", dir, gguf ? "gguf" : "lpk");
        assert_int_equal(copy_container(src, path, fl, &err), 0);
        size_t n = 0;
        char *want = tu_read_file(path, &n);
        assert_non_null(want);
        int fd = memfd_create("test", MFD_CLOEXEC);
        assert_true(fd >= 0);
        char junk[70000];
        memset(junk, 0x5a, sizeof junk);
        assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
        int st = copy_container_fd(src, "in memory", fd, fl, &err);
        if (st) fail_msg("%s", err.msg);
        struct stat sb;
        assert_int_equal(fstat(fd, &sb), 0);
        assert_int_equal((uint64_t)sb.st_size, (uint64_t)n);
        char *got = malloc(n);
        assert_int_equal(pread(fd, got, n, 0), (ssize_t)n);
        assert_memory_equal(got, want, n);
        assert_int_equal(lpk_reader_open_fd(fd, "in memory", 0, &back, &err), 0);
        close(fd);
        assert_string_equal(lpk_reader_path(back), "in memory");
        assert_same_tensors(src, back);
        for (size_t i = 0; i < lpk_reader_n_tensors(back); i++)
            assert_int_equal(lpk_reader_verify_tensor(back, i, &err), 0);
        lpk_reader_close(back);
        free(got);
        free(want);
        free(path);
    }
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    /* only LPK_WRITE_GGUF applies to a caller's file; no file at all is refused */
    lpk_writer *w = NULL;
    assert_int_equal(lpk_writer_open_fd(0, "x", NULL, NULL, 0, LPK_WRITE_FORCE, &w, &err),
                     LPK_EINVAL);
    assert_int_equal(lpk_writer_open_fd(-1, "x", NULL, NULL, 0, 0, &w, &err), LPK_EINVAL);
    assert_null(w);
    lpk_reader_close(src);
    tu_rmtree(dir);
    free(dir);
}

/* Writes tensors of n0 and n1 f32 values (tl_byte content; the first in
 * pieces below the writer's buffer, the second in one call) through w;
 * returns the bytes whose writeback had started before finish. */
static void write_tensors(lpk_writer *w, const lpk_tensor *d, lpk_error *err)
{
    for (size_t i = 0; i < 2; i++) {
        size_t size = (size_t)d[i].dims[0] * (size_t)d[i].dims[1] * 4;
        uint8_t *b = malloc(size);
        assert_non_null(b);
        for (size_t j = 0; j < size; j++) b[j] = tl_byte(i, j);
        assert_int_equal(lpk_writer_tensor_begin(w, d[i].name, err), 0);
        size_t piece = i ? size : 999983;
        for (size_t off = 0; off < size; off += piece)
            assert_int_equal(lpk_writer_tensor_write(w, b + off, size - off < piece ? size - off
                                                                               : piece, err), 0);
        assert_int_equal(lpk_writer_tensor_end(w, err), 0);
        free(b);
    }
}

static uint64_t write_two(lpk_writer *w, const lpk_tensor *d, lpk_error *err)
{
    write_tensors(w, d, err);
    uint64_t started = lpk_writer_writeback_started(w);
    assert_int_equal(lpk_writer_finish(w, err), 0);
    return started;
}

/* A file of several writeback chunks: the writer starts the writeback of what
 * it wrote as it goes (a caller's file or a scratch file: never), and the
 * bytes are the same. */
static void test_writeback(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/big.lpk", dir);
    lpk_error err = {0};
    lpk_tensor d[2] = {{.name = "a", .type = LPK_TYPE_F32, .n_dims = 2, .dims = {3, 1000003}},
                       {.name = "b", .type = LPK_TYPE_F32, .n_dims = 2, .dims = {7, 2000001}}};
    uint64_t data = (3ull * 1000003 + 7ull * 2000001) * 4;
    assert_true(data > 2 * LPK_WB_CHUNK);
    lpk_writer *w;
    assert_int_equal(lpk_writer_open(path, NULL, d, 2, 0, &w, &err), 0);
    uint64_t started = write_two(w, d, &err);
    /* every whole chunk before the end, none of the bytes not yet written */
    assert_true(started >= data - LPK_WB_CHUNK);
    assert_true(started <= data + 4096);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(path, &r, &err), 0);
    size_t len = 0;
    char *file = tu_read_file(path, &len);
    assert_non_null(file);
    for (size_t i = 0; i < 2; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        const uint8_t *b = t->data;
        for (uint64_t j = 0; j < t->size; j++)
            if (b[j] != tl_byte(i, j)) fail_msg("tensor %zu byte %llu differs", i,
                                                (unsigned long long)j);
        assert_int_equal(lpk_reader_verify_tensor(r, i, &err), 0);
    }
    lpk_reader_close(r);
    /* an intermediate file: placed all the same, no writeback started; a flag
     * the writer does not know is refused */
    assert_int_equal(lpk_writer_open(path, NULL, d, 2, LPK_WRITE_FORCE | (1u << 4), &w, &err),
                     LPK_EINVAL);
    char *scratch = tu_fmt("%s/scratch.lpk", dir);
    assert_int_equal(lpk_writer_open(scratch, NULL, d, 2, LPK_WRITE_SCRATCH, &w, &err), 0);
    assert_int_equal(write_two(w, d, &err), 0);
    size_t slen = 0;
    char *sfile = tu_read_file(scratch, &slen);
    assert_non_null(sfile);
    assert_int_equal(slen, len);
    assert_memory_equal(sfile, file, len);
    free(sfile);
    free(scratch);
    assert_int_equal(tu_dir_entries(dir, 1), 0); /* no temporary file left */
    assert_int_equal(tu_dir_entries(dir, 0), 2);
    /* the same container into a caller's file: same bytes, no writeback started */
    int fd = memfd_create("big", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(lpk_writer_open_fd(fd, "in memory", NULL, d, 2, 0, &w, &err), 0);
    assert_int_equal(write_two(w, d, &err), 0);
    char *got = malloc(len);
    assert_non_null(got);
    assert_int_equal(pread(fd, got, len, 0), (ssize_t)len);
    assert_memory_equal(got, file, len);
    close(fd);
    free(got);
    free(file);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* Early syncs: a file of more than LPK_SYNC_CHUNK bytes is fdatasynced by
 * the writer's thread while it is written (what a completed sync covered
 * grows before finish), a small, scratch or caller's file never; the bytes
 * are the same; a failed early sync fails finish with the fsync's message and
 * places nothing (LLMPACK_WRITE_SYNC_FAULT). */
static void test_early_sync(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/big.lpk", dir), *ref = tu_fmt("%s/scratch.lpk", dir);
    lpk_error err = {0};
    lpk_tensor d[2] = {{.name = "a", .type = LPK_TYPE_F32, .n_dims = 2, .dims = {3, 1000003}},
                       {.name = "b", .type = LPK_TYPE_F32, .n_dims = 2, .dims = {7, 2000001}}};
    uint64_t data = (3ull * 1000003 + 7ull * 2000001) * 4;
    assert_true(data > LPK_SYNC_CHUNK && data < 2 * LPK_SYNC_CHUNK);
    lpk_writer *w;
    for (int mode = 0; mode < 2; mode++) {
        unsigned fl = mode ? LPK_WRITE_DIRECT : 0;
        assert_int_equal(lpk_writer_open(path, NULL, d, 2, fl | LPK_WRITE_FORCE, &w, &err), 0);
        write_tensors(w, d, &err);
        /* one sync asked for, at the first write past the chunk: it completes */
        uint64_t synced = 0;
        for (int k = 0; k < 1200 && !synced; k++) {
            synced = lpk_writer_synced(w);
            if (!synced) usleep(100000);
        }
        assert_true(synced >= LPK_SYNC_CHUNK);
        assert_true(synced <= data + 4096);
        assert_int_equal(lpk_writer_finish(w, &err), 0);
    }
    /* a scratch file: never synced; the same bytes */
    assert_int_equal(lpk_writer_open(ref, NULL, d, 2, LPK_WRITE_SCRATCH, &w, &err), 0);
    write_tensors(w, d, &err);
    usleep(200000);
    assert_int_equal(lpk_writer_synced(w), 0);
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    tu_same_bytes(path, ref);
    /* a small file: no thread, no early sync */
    lpk_tensor s1[2] = {{.name = "a", .type = LPK_TYPE_F32, .n_dims = 2, .dims = {10, 100}},
                        {.name = "b", .type = LPK_TYPE_F32, .n_dims = 2, .dims = {1, 3}}};
    char *small = tu_fmt("%s/small.lpk", dir);
    assert_int_equal(lpk_writer_open(small, NULL, s1, 2, 0, &w, &err), 0);
    write_tensors(w, s1, &err);
    assert_int_equal(lpk_writer_synced(w), 0);
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    assert_true(tu_exists(small));
    /* the early sync fails: so does finish, and nothing is left */
    unlink(path);
    setenv("LLMPACK_WRITE_SYNC_FAULT", "eio", 1);
    assert_int_equal(lpk_writer_open(path, NULL, d, 2, 0, &w, &err), 0);
    write_tensors(w, d, &err);
    unsetenv("LLMPACK_WRITE_SYNC_FAULT");
    lpk_error_clear(&err);
    assert_int_equal(lpk_writer_finish(w, &err), LPK_EIO);
    if (!strstr(err.msg, "fsync failed: Input/output error")) fail_msg("message: %s", err.msg);
    assert_false(tu_exists(path));
    assert_int_equal(tu_dir_entries(dir, 1), 0); /* no temporary file left */
    tu_rmtree(dir);
    free(dir); free(path); free(ref); free(small);
}

/* GGUF files written by llama.cpp (when ../shared has them) and by llmpack
 * (the demo model, f32 and Q4_K_M), copied through our reader and GGUF writer,
 * come out byte for byte the same. */
static void test_gguf_rewrite(void **state)
{
    (void)state;
    static const char *const files[] = {"demo-f32.gguf",
                                        "demo-Q4_K_M.gguf",
                                        "gguf/stories260K-f32.gguf",
                                        "gguf/stories260K-Q4_K_M.gguf",
                                        "gguf/llama2-20m-Q8_0.gguf",
                                        "gguf/llama2-20m-Q4_K_M.gguf"};
    const char *demo_args[] = {"--type f32", "--type q4_k_m"};
    char *dir = tu_tmpdir();
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        const char *sp = f < 2 ? tu_demo(files[f], demo_args[f]) : tu_shared(files[f]);
        if (!sp) {
            print_message("NOTE: ../shared/%s not found: not checked\n", files[f]);
            continue;
        }
        char *src = strdup(sp);
        char *g = tu_fmt("%s/again%zu.gguf", dir, f);
        lpk_error err = {0};
        lpk_reader *r;
        assert_int_equal(lpk_reader_open(src, &r, &err), 0);
        int st = copy_container(r, g, LPK_WRITE_GGUF, &err);
        if (st) fail_msg("%s: %s", files[f], err.msg);
        lpk_reader_close(r);
        size_t la, lb;
        char *a = tu_read_file(src, &la), *b = tu_read_file(g, &lb);
        assert_int_equal(la, lb);
        if (memcmp(a, b, la) != 0) fail_msg("%s: rewritten bytes differ", files[f]);
        free(a);
        free(b);
        free(g);
        free(src);
    }
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_plain),
        cmocka_unit_test(test_roundtrip_zstd),
        cmocka_unit_test(test_roundtrip_mem),
        cmocka_unit_test(test_empty_container),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_exists_and_force),
        cmocka_unit_test(test_gguf_write),
        cmocka_unit_test(test_write_fd),
        cmocka_unit_test(test_writeback),
        cmocka_unit_test(test_early_sync),
        cmocka_unit_test(test_gguf_rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
