/* LPK_WRITE_DIRECT: the writer's temporary file written with O_DIRECT from its
 * own aligned buffer. The same bytes as a buffered writer (every fallback
 * included), and the data pages of the output not left in the page cache. */
#include "tutil.h"
#include "tlpk.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../format/lpk.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

/* Odd sizes, so the tensors end mid-block, the padding varies and the file's
 * tail is not a whole block: 60 bytes, one below the writer's 8 MiB direct
 * buffer and two above it. */
static const lpk_tensor decls[] = {
    {.name = "small", .type = LPK_TYPE_F32, .n_dims = 2, .dims = {3, 5}},
    {.name = "below", .type = LPK_TYPE_F16, .n_dims = 2, .dims = {7, 500009}},
    {.name = "above", .type = LPK_TYPE_F32, .n_dims = 2, .dims = {3, 1000003}},
    {.name = "two", .type = LPK_TYPE_F16, .n_dims = 1, .dims = {9000011}},
    {.name = "last", .type = LPK_TYPE_F32, .n_dims = 1, .dims = {4099}},
};
#define N_DECLS (sizeof decls / sizeof decls[0])

/* Writes the container (GGUF with LPK_WRITE_GGUF in flags) to path: tl_byte
 * content, each tensor in pieces of odd sizes (a byte, a few KiB, about a
 * MiB, more than the buffer). */
static void write_set(const char *path, unsigned flags)
{
    static const size_t pieces[] = {1, 4093, 999983, 9000013, 77};
    lpk_error err = {0};
    lpk_meta *meta = lpk_meta_new();
    assert_non_null(meta);
    assert_int_equal(lpk_meta_set_str(meta, "general.name", "direct"), 0);
    lpk_writer *w;
    int st = lpk_writer_open(path, meta, decls, N_DECLS, flags | LPK_WRITE_FORCE, &w, &err);
    if (st) fail_msg("%s", err.msg);
    lpk_meta_free(meta);
    size_t p = 0;
    for (size_t i = 0; i < N_DECLS; i++) {
        size_t size = 1;
        for (int d = 0; d < decls[i].n_dims; d++) size *= (size_t)decls[i].dims[d];
        size *= decls[i].type == LPK_TYPE_F32 ? 4 : 2;
        uint8_t *b = malloc(size);
        assert_non_null(b);
        for (size_t j = 0; j < size; j++) b[j] = tl_byte(i, j);
        assert_int_equal(lpk_writer_tensor_begin(w, decls[i].name, &err), 0);
        for (size_t off = 0; off < size;) {
            size_t k = pieces[p++ % (sizeof pieces / sizeof pieces[0])];
            if (k > size - off) k = size - off;
            st = lpk_writer_tensor_write(w, b + off, k, &err);
            if (st) fail_msg("%s", err.msg);
            off += k;
        }
        assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
        free(b);
    }
    st = lpk_writer_finish(w, &err);
    if (st) fail_msg("%s", err.msg);
}

static char *read_all(const char *path, size_t *len)
{
    char *file = tu_read_file(path, len);
    assert_non_null(file);
    return file;
}

/* Every tensor of the container at path holds tl_byte and its checksum. */
static void check_lpk(const char *path)
{
    lpk_error err = {0};
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(path, &r, &err), 0);
    assert_int_equal(lpk_reader_n_tensors(r), N_DECLS);
    for (size_t i = 0; i < N_DECLS; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        const uint8_t *b = t->data;
        for (uint64_t j = 0; j < t->size; j++)
            if (b[j] != tl_byte(i, j))
                fail_msg("tensor %zu byte %llu differs", i, (unsigned long long)j);
        assert_int_equal(lpk_reader_verify_tensor(r, i, &err), 0);
    }
    lpk_reader_close(r);
}

/* Pages of path resident in the page cache, of the whole file (*total). */
static size_t resident_pages(const char *path, size_t *total)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = ((size_t)sb.st_size + pg - 1) / pg;
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(m != MAP_FAILED);
    unsigned char *v = malloc(n);
    assert_non_null(v);
    assert_int_equal(mincore(m, (size_t)sb.st_size, v), 0);
    size_t in = 0;
    for (size_t i = 0; i < n; i++) in += v[i] & 1;
    free(v);
    munmap(m, (size_t)sb.st_size);
    close(fd);
    *total = n;
    return in;
}

/* Does dir's file system take O_DIRECT writes (and keep them out of the page
 * cache: tmpfs takes the flag, but its pages are the file)? */
static int takes_direct(const char *dir)
{
    struct statfs fs;
    if (statfs(dir, &fs) == 0 && fs.f_type == TMPFS_MAGIC) return 0;
    char *p = tu_fmt("%s/probe", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    int ok = 0;
    void *b = NULL;
    if (fd >= 0 && posix_memalign(&b, 4096, 4096) == 0) {
        memset(b, 0, 4096);
        ok = write(fd, b, 4096) == 4096;
    }
    free(b);
    if (fd >= 0) close(fd);
    unlink(p);
    free(p);
    return ok;
}

/* The same bytes with and without LPK_WRITE_DIRECT, .lpk and GGUF, and with
 * every fallback of the test hook LLMPACK_WRITE_DIRECT_FAULT: O_DIRECT
 * refused at open; a direct write refused with EINVAL (the first one, one in
 * the middle); a write cut short at an unaligned offset (buffered from
 * there), and at an aligned one (direct writes go on). Where the file system
 * takes O_DIRECT, the pages left in the page cache show which bytes went
 * which way: the direct ones are not there (8 MiB writes of whole 4 KiB
 * pages; the head's patch at finish and the tail are buffered). */
static void test_same_bytes(void **state)
{
    (void)state;
    static const struct {
        const char *fault;
        long resident; /* pages in the page cache: -1 = all */
    } runs[] = {{NULL, 2},          {"refuse", -1},         {"einval:0", -1},
                {"einval:20000000", -4096 + 1}, /* 16 MiB direct, then buffered */
                {"short:12345677", -2048 + 1},  /* 8 MiB direct, then buffered */
                {"short:12582912", 2}};         /* 4 MiB of 8 written, then the rest */
    char *dir = tu_tmpdir();
    int direct = takes_direct(dir);
    if (!direct)
        print_message("NOTE: the file system of %s refuses O_DIRECT (or is tmpfs): only the "
                      "bytes are checked\n", dir);
    for (int g = 0; g < 2; g++) {
        unsigned fmt = g ? LPK_WRITE_GGUF : 0;
        char *ref = tu_fmt("%s/ref.%s", dir, g ? "gguf" : "lpk");
        char *out = tu_fmt("%s/direct.%s", dir, g ? "gguf" : "lpk");
        size_t rlen, len, total;
        write_set(ref, fmt);
        char *want = read_all(ref, &rlen);
        assert_true(rlen > 3 * (8u << 20));
        for (size_t f = 0; f < sizeof runs / sizeof runs[0]; f++) {
            const char *what = runs[f].fault ? runs[f].fault : "direct";
            if (runs[f].fault) setenv("LLMPACK_WRITE_DIRECT_FAULT", runs[f].fault, 1);
            write_set(out, fmt | LPK_WRITE_DIRECT);
            unsetenv("LLMPACK_WRITE_DIRECT_FAULT");
            size_t in = resident_pages(out, &total);
            long want_in = runs[f].resident < 0 ? (long)total + runs[f].resident + 1
                                                : runs[f].resident;
            if (direct && labs((long)in - want_in) > 2)
                fail_msg("%s, %s: %zu of %zu pages in the page cache, expected about %ld",
                         g ? "GGUF" : "lpk", what, in, total, want_in);
            char *got = read_all(out, &len);
            assert_int_equal(len, rlen);
            if (memcmp(got, want, len) != 0)
                fail_msg("%s, %s: the bytes differ", g ? "GGUF" : "lpk", what);
            if (!g) check_lpk(out);
            free(got);
        }
        if (!g) check_lpk(ref);
        assert_int_equal(tu_dir_entries(dir, 1), 0); /* no temporary file left */
        free(want);
        free(ref);
        free(out);
    }
    tu_rmtree(dir);
    free(dir);
}

/* With the flag the output's data does not stay in the page cache (only the
 * pages of the patched head and of the tail, written buffered at finish);
 * without it, it does. */
static void test_page_cache(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    if (!takes_direct(dir)) {
        print_message("SKIP: the file system of %s refuses O_DIRECT (or is tmpfs): the "
                      "writer stays buffered there\n", dir);
        tu_rmtree(dir);
        free(dir);
        skip();
    }
    char *b = tu_fmt("%s/buffered.lpk", dir), *d = tu_fmt("%s/direct.lpk", dir);
    size_t total;
    write_set(b, 0);
    size_t in_b = resident_pages(b, &total);
    print_message("buffered: %zu of %zu pages in the page cache\n", in_b, total);
    assert_true(in_b >= total / 2);
    /* in one write per tensor this time */
    lpk_error err = {0};
    lpk_writer *w;
    assert_int_equal(lpk_writer_open(d, NULL, decls, N_DECLS, LPK_WRITE_DIRECT, &w, &err), 0);
    for (size_t i = 0; i < N_DECLS; i++) {
        size_t size = (size_t)lpk_tensor_nelems(&decls[i]) *
                      (decls[i].type == LPK_TYPE_F32 ? 4 : 2);
        uint8_t *buf = malloc(size);
        assert_non_null(buf);
        for (size_t j = 0; j < size; j++) buf[j] = tl_byte(i, j);
        assert_int_equal(lpk_writer_tensor_begin(w, decls[i].name, &err), 0);
        assert_int_equal(lpk_writer_tensor_write(w, buf, size, &err), 0);
        assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
        free(buf);
    }
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    size_t in_d = resident_pages(d, &total);
    print_message("direct: %zu of %zu pages in the page cache\n", in_d, total);
    assert_true(in_d <= 4);
    check_lpk(d);
    free(b);
    free(d);
    tu_rmtree(dir);
    free(dir);
}

/* A write that fails while the writer's thread writes the direct buffers:
 * the failure comes back from a later call (a tensor's write or the finish)
 * with the message a buffered writer gives, and nothing is left: no output,
 * no temporary file. The file size limit (RLIMIT_FSIZE, SIGXFSZ ignored)
 * makes the writes past 20 MiB fail with EFBIG, in a child process. */
static void test_write_error(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    for (int direct = 0; direct < 2; direct++) {
        char *path = tu_fmt("%s/limited.lpk", dir);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {20u << 20, 20u << 20};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(2);
            lpk_error err = {0};
            lpk_writer *w;
            if (lpk_writer_open(path, NULL, decls, N_DECLS, direct ? LPK_WRITE_DIRECT : 0, &w,
                                &err))
                _exit(3);
            int st = 0;
            for (size_t i = 0; i < N_DECLS && !st; i++) {
                size_t size = (size_t)lpk_tensor_nelems(&decls[i]) *
                              (decls[i].type == LPK_TYPE_F32 ? 4 : 2);
                uint8_t *b = malloc(size);
                if (!b) _exit(4);
                for (size_t j = 0; j < size; j++) b[j] = tl_byte(i, j);
                st = lpk_writer_tensor_begin(w, decls[i].name, &err);
                if (!st) st = lpk_writer_tensor_write(w, b, size, &err);
                if (!st) st = lpk_writer_tensor_end(w, &err);
                free(b);
            }
            if (!st) st = lpk_writer_finish(w, &err);
            else lpk_writer_abort(w);
            if (st != LPK_EIO || !strstr(err.msg, "write failed: File too large")) {
                fprintf(stderr, "status %d: %s\n", st, err.msg);
                _exit(5);
            }
            _exit(0);
        }
        int ws = tu_wait_child(pid, 120, "writer over the file size limit");
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
            fail_msg("%s writer: child status %d", direct ? "direct" : "buffered", ws);
        assert_false(tu_exists(path));
        assert_int_equal(tu_dir_entries(dir, 1), 0);
        free(path);
    }
    tu_rmtree(dir);
    free(dir);
}

/* `llmpack quantize` writes its .lpk outputs directly (one or several): the
 * same bytes as buffered (O_DIRECT refused through the test hook), and their
 * data not in the page cache where the file system takes O_DIRECT. */
static void test_quantize(void **state)
{
    (void)state;
    const char *in = tu_demo("demo-f16.lpk", "");
    char *dir = tu_tmpdir();
    int direct = takes_direct(dir);
    char *a = tu_fmt("%s/direct.lpk", dir), *b = tu_fmt("%s/buffered.lpk", dir);
    char *m = tu_fmt("%s/multi", dir);
    assert_int_equal(mkdir(m, 0700), 0);
    tu_run_ok("quantize '%s' --type q4_k_m -o '%s' -q", in, a);
    tu_run_ok("quantize '%s' --type q8_0,q4_k_m -o '%s/' -q", in, m);
    size_t total, in_a = resident_pages(a, &total);
    print_message("quantize: %zu of %zu pages in the page cache\n", in_a, total);
    if (direct) assert_true(in_a < total / 2);
    else print_message("NOTE: the file system of %s refuses O_DIRECT (or is tmpfs)\n", dir);
    setenv("LLMPACK_WRITE_DIRECT_FAULT", "refuse", 1);
    tu_run_ok("quantize '%s' --type q4_k_m -o '%s' -q", in, b);
    unsetenv("LLMPACK_WRITE_DIRECT_FAULT");
    assert_true(resident_pages(b, &total) == total);
    tu_same_bytes(a, b);
    /* the multi-output run's Q4_K_M (named after the model) */
    char *ma = NULL;
    DIR *d = opendir(m);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, "-Q4_K_M.lpk")) ma = tu_fmt("%s/%s", m, e->d_name);
    closedir(d);
    assert_non_null(ma);
    if (direct) assert_true(resident_pages(ma, &total) < total / 2);
    tu_same_bytes(a, ma);
    assert_int_equal(tu_dir_entries(m, 0), 2);
    assert_int_equal(tu_dir_entries(dir, 1), 0);
    free(ma);
    free(a);
    free(b);
    free(m);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bytes),
        cmocka_unit_test(test_page_cache),
        cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_quantize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
