/* The writer killed mid-write: SIGKILL leaves nothing at the target (and an
 * existing target untouched); SIGINT/SIGTERM also remove the temporary file.
 * The child writes a ~200 MB container, tells the parent once 100 MB are in the
 * temporary file, then waits to be killed, so the kill always lands mid-write.
 * The child starts with default signal actions (the runner may have inherited
 * SIGINT ignored) and every wait is bounded, so a regression fails, never hangs. */
#include "tutil.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../format/lpk.h"

#define N_TENSORS 4
#define ROWS 1024
#define COLS 12800 /* f32: 52,428,800 bytes per tensor */
#define CHUNK (1u << 20)
#define WAIT_S 120 /* for the child to write 100 MB, or to die once signalled */

static void child(const char *path, unsigned flags, int ready_fd, int hold_fd)
{
    lpk_tensor d[N_TENSORS];
    memset(d, 0, sizeof d);
    for (int i = 0; i < N_TENSORS; i++) {
        snprintf(d[i].name, sizeof d[i].name, "blk.%d.ffn_up.weight", i);
        d[i].type = LPK_TYPE_F32;
        d[i].n_dims = 2;
        d[i].dims[0] = ROWS;
        d[i].dims[1] = COLS;
    }
    lpk_meta *m = lpk_meta_new();
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_error err = {0};
    lpk_writer *w;
    if (lpk_writer_open(path, m, d, N_TENSORS, flags, &w, &err)) _exit(10);
    uint8_t *buf = malloc(CHUNK);
    for (size_t i = 0; i < CHUNK; i++) buf[i] = (uint8_t)(i * 7);
    uint64_t total = 0;
    int told = 0;
    for (int i = 0; i < N_TENSORS; i++) {
        if (lpk_writer_tensor_begin(w, d[i].name, &err)) _exit(11);
        for (uint64_t k = 0; k < (uint64_t)ROWS * COLS * 4; k += CHUNK) {
            if (lpk_writer_tensor_write(w, buf, CHUNK, &err)) _exit(12);
            total += CHUNK;
            if (!told && total >= (100u << 20)) {
                told = 1;
                char c = 'r';
                if (write(ready_fd, &c, 1) != 1) _exit(13);
                if (read(hold_fd, &c, 1) < 0) _exit(14); /* parent never writes: wait here */
            }
        }
        if (lpk_writer_tensor_end(w, &err)) _exit(15);
    }
    lpk_writer_finish(w, &err);
    _exit(0);
}

/* Forks a writer, kills it with sig once 100 MB are written; returns the wait status. */
static int run_and_kill(const char *dir, const char *path, unsigned flags, int sig)
{
    int ready[2], hold[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(hold), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tu_unignore_signals();
        close(ready[0]);
        close(hold[1]);
        child(path, flags, ready[1], hold[0]);
    }
    close(ready[1]);
    close(hold[0]);
    char c = 0;
    struct pollfd pf = {.fd = ready[0], .events = POLLIN};
    ssize_t got = poll(&pf, 1, WAIT_S * 1000) == 1 ? read(ready[0], &c, 1) : -1;
    if (got != 1) {
        kill(pid, SIGKILL);
        int ws = tu_wait_child(pid, WAIT_S, "writer child");
        fail_msg("writer child did not write 100 MB (wait status %d)", ws);
    }
    const char *base = strrchr(path, '/') + 1;
    long long in_tmp = tu_tmp_size(dir, base);
    int killed = kill(pid, sig);
    char *what = tu_fmt("writer child sent signal %d", sig);
    int ws = tu_wait_child(pid, WAIT_S, what);
    free(what);
    close(ready[0]);
    close(hold[1]);
    assert_int_equal(killed, 0);
    /* the data went to the temp file (all but the last write buffer) */
    assert_true(in_tmp >= (99ll << 20));
    return ws;
}

static void test_sigkill_no_target(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/big.lpk", dir);
    int ws = run_and_kill(dir, path, 0, SIGKILL);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    assert_false(tu_exists(path));
    /* SIGKILL cannot be caught: the temporary file stays, under its own name */
    assert_true(tu_tmp_size(dir, "big.lpk") >= 0);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

static void test_sigkill_existing_target(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/big.lpk", dir);
    assert_int_equal(tu_write_file(path, "the old model", 13), 0);
    int ws = run_and_kill(dir, path, LPK_WRITE_FORCE, SIGKILL);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    size_t len;
    char *s = tu_read_file(path, &len);
    assert_non_null(s);
    assert_int_equal(len, 13);
    assert_memory_equal(s, "the old model", 13);
    free(s);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

static void signal_removes_temp(int sig)
{
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/big.lpk", dir);
    char *keep = tu_fmt("%s/other", dir);
    assert_int_equal(tu_write_file(keep, "x", 1), 0);
    int ws = run_and_kill(dir, path, 0, sig);
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(WTERMSIG(ws), sig); /* the default action still ends the process */
    assert_false(tu_exists(path));
    assert_int_equal(tu_tmp_size(dir, "big.lpk"), -1);
    assert_true(tu_exists(keep));
    tu_rmtree(dir);
    free(keep);
    free(path);
    free(dir);
}

static void test_sigint_removes_temp(void **state)
{
    (void)state;
    signal_removes_temp(SIGINT);
}

static void test_sigterm_removes_temp(void **state)
{
    (void)state;
    signal_removes_temp(SIGTERM);
}

/* The runner itself started with SIGINT and SIGTERM ignored (`trap '' INT TERM;
 * make test`, a background job of a non-interactive shell): the writer child
 * still gets default actions, so the kill lands instead of hanging the suite. */
static void test_sigint_runner_ignoring(void **state)
{
    (void)state;
    struct sigaction ign, old_int, old_term;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGINT, &ign, &old_int);
    sigaction(SIGTERM, &ign, &old_term);
    signal_removes_temp(SIGINT);
    signal_removes_temp(SIGTERM);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
}

static volatile sig_atomic_t got_int;
static void on_int(int sig) { (void)sig; got_int = 1; }

/* A program that handles SIGINT itself still gets its handler called, the
 * temporary file is gone, the interrupted writer says so, later writers work. */
static void test_handled_sigint(void **state)
{
    (void)state;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_int;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/a.lpk", dir);
    lpk_tensor d;
    memset(&d, 0, sizeof d);
    strcpy(d.name, "output_norm.weight");
    d.type = LPK_TYPE_F32;
    d.n_dims = 1;
    d.dims[0] = 1024;
    lpk_error err = {0};
    lpk_writer *w;
    static float zero[1024];
    assert_int_equal(lpk_writer_open(path, NULL, &d, 1, 0, &w, &err), 0);
    assert_int_equal(lpk_writer_tensor_begin(w, d.name, &err), 0);
    assert_int_equal(tu_tmp_size(dir, "a.lpk") >= 0, 1);
    raise(SIGINT);
    assert_true(got_int);
    assert_int_equal(tu_tmp_size(dir, "a.lpk"), -1);
    assert_int_equal(lpk_writer_tensor_write(w, zero, sizeof zero, &err), LPK_EINTR);
    assert_non_null(strstr(err.msg, "interrupted"));
    lpk_writer_abort(w);
    assert_false(tu_exists(path));
    lpk_error_clear(&err);
    assert_int_equal(lpk_writer_open(path, NULL, &d, 1, 0, &w, &err), 0);
    assert_int_equal(lpk_writer_tensor_begin(w, d.name, &err), 0);
    assert_int_equal(lpk_writer_tensor_write(w, zero, sizeof zero, &err), 0);
    assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
    assert_int_equal(lpk_writer_finish(w, &err), 0);
    assert_true(tu_exists(path));
    sigaction(SIGINT, &old, NULL);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

/* A write that fails mid-stream (here: the file size limit) is reported,
 * removes the temporary file and leaves the target alone. */
static void test_write_failure(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_fmt("%s/f.lpk", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tu_unignore_signals();
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {8u << 20, 8u << 20};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(20);
        lpk_tensor d;
        memset(&d, 0, sizeof d);
        strcpy(d.name, "token_embd.weight");
        d.type = LPK_TYPE_F32;
        d.n_dims = 2;
        d.dims[0] = 1024;
        d.dims[1] = 4096; /* 16 MiB */
        lpk_error err = {0};
        lpk_writer *w;
        if (lpk_writer_open(path, NULL, &d, 1, 0, &w, &err)) _exit(21);
        if (lpk_writer_tensor_begin(w, d.name, &err)) _exit(22);
        uint8_t *buf = calloc(1, CHUNK);
        int st = 0;
        for (int k = 0; k < 16 && !st; k++) st = lpk_writer_tensor_write(w, buf, CHUNK, &err);
        if (st != LPK_EIO || !strstr(err.msg, "write failed")) _exit(23);
        if (tu_tmp_size(dir, "f.lpk") != -1) _exit(24); /* removed at once */
        if (lpk_writer_tensor_write(w, buf, 1, &err) == LPK_OK) _exit(25);
        if (lpk_writer_finish(w, &err) == LPK_OK) _exit(26);
        _exit(0);
    }
    int ws = tu_wait_child(pid, WAIT_S, "size-limited writer child");
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
    assert_false(tu_exists(path));
    tu_rmtree(dir);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_no_target),
        cmocka_unit_test(test_sigkill_existing_target),
        cmocka_unit_test(test_sigint_removes_temp),
        cmocka_unit_test(test_sigterm_removes_temp),
        cmocka_unit_test(test_sigint_runner_ignoring),
        cmocka_unit_test(test_handled_sigint),
        cmocka_unit_test(test_write_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
