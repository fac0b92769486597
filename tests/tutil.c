#include "tutil.h"

#include "../quant/quant.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../format/lpk.h"

int tu_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int tu_dir_entries(const char *dir, int only_temp)
{
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open folder %s", dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        const char *s = e->d_name;
        if (!strcmp(s, ".") || !strcmp(s, "..")) continue;
        if (!only_temp || (s[0] == '.' && (strstr(s, ".tmp-") || strstr(s, "llmpack-unpack-"))))
            n++;
    }
    closedir(d);
    return n;
}

/* Files of ../shared that examples/ ships byte for byte (the demo model is
 * shared's stories260K/hf-f16; its tokenizer is stories260K's; the text is
 * shared's sample): without ../shared, tests use these. */
static const struct { const char *shared, *local; } in_examples[] = {
    {"models/stories260K/hf-f16", "examples/stories260K"},
    {"models/stories260K/hf/tokenizer.model", "examples/stories260K/tokenizer.model"},
    {"text/TinyStories-valid-sample.txt", "examples/TinyStories-valid-sample.txt"},
};

const char *tu_shared(const char *rel)
{
    static char buf[4096];
    const char *base = getenv("LLMPACK_SHARED");
    if (!base || !*base) base = "../shared";
    snprintf(buf, sizeof buf, "%s/%s", base, rel ? rel : "");
    if (tu_exists(buf)) return buf;
    for (size_t i = 0; rel && i < sizeof in_examples / sizeof in_examples[0]; i++) {
        size_t n = strlen(in_examples[i].shared);
        if (!strncmp(rel, in_examples[i].shared, n) && (rel[n] == 0 || rel[n] == '/')) {
            snprintf(buf, sizeof buf, "%s%s", in_examples[i].local, rel + n);
            return tu_exists(buf) ? buf : NULL;
        }
    }
    return NULL;
}

/* Inputs made from the demo model or by gen_ckpt (tu_shared_or_demo, tu_demo,
 * tu_kernel_check): one folder per process, removed at exit by the process that
 * made it (not by a forked child). */
static char *demo_dir;
static pid_t demo_owner;
static struct { char *rel, *path; } demo_made[16];

static void demo_cleanup(void)
{
    if (demo_dir && getpid() == demo_owner) tu_rmtree(demo_dir);
}

/* The folder demo inputs go to (made on first use). */
static const char *demo_folder(void)
{
    if (!demo_dir) {
        demo_dir = tu_tmpdir();
        if (!demo_dir) fail_msg("tutil: no temporary folder");
        demo_owner = getpid();
        atexit(demo_cleanup);
    }
    return demo_dir;
}

/* Converts src to name in demo_dir (cached per process under key). */
static const char *demo_convert(const char *key, const char *src, const char *name,
                                const char *args, const char *why)
{
    size_t i = 0;
    for (; i < sizeof demo_made / sizeof demo_made[0] && demo_made[i].rel; i++)
        if (!strcmp(demo_made[i].rel, key)) return demo_made[i].path;
    if (i == sizeof demo_made / sizeof demo_made[0]) fail_msg("tutil: too many demo inputs");
    char *path = tu_fmt("%s/%s", demo_folder(), name), *log = NULL;
    int rc = tu_llmpack(&log, "convert '%s' -o '%s' %s -q", src, path, args);
    if (rc != 0)
        fail_msg("%sconvert %s -o %s %s failed (exit %d): %s", why, src, name, args, rc,
                 log ? log : "");
    free(log);
    demo_made[i].rel = strdup(key);
    demo_made[i].path = path;
    return path;
}

const char *tu_demo(const char *name, const char *convert_args)
{
    return demo_convert(name, "examples/stories260K", name, convert_args, "");
}

const char *tu_shared_or_demo(const char *rel, const char *convert_args)
{
    const char *s = tu_shared(rel);
    if (s) return s;
    const char *base = strrchr(rel, '/');
    char *why = tu_fmt("../shared/%s not found, and ", rel), *key = tu_fmt("shared:%s", rel);
    int first = 1;
    for (size_t i = 0; i < sizeof demo_made / sizeof demo_made[0] && demo_made[i].rel; i++)
        if (!strcmp(demo_made[i].rel, key)) first = 0;
    const char *p = demo_convert(key, "examples/stories260K", base ? base + 1 : rel,
                                 convert_args, why);
    if (first)
        print_message("NOTE: ../shared/%s not found: using examples/stories260K converted with "
                      "%s\n", rel, convert_args);
    free(why);
    free(key);
    return p;
}

void tu_gen_ckpt(const char *out, const char *args)
{
    const char *gen = getenv("LLMPACK_GEN_CKPT");
    if (!gen || !*gen) gen = "build/bench/gen_ckpt";
    char *cmd = tu_fmt("'%s' %s --out '%s' > /dev/null", gen, args, out);
    int rc = system(cmd);
    if (rc) fail_msg("%s: exit status %d", cmd, rc);
    free(cmd);
}

const char *tu_kernel_check(void)
{
    const char *s = tu_shared("gguf/kernel-check-f32.gguf");
    if (s) return s;
    static int noted;
    char *hf = tu_fmt("%s/kernel-check-hf", demo_folder());
    if (!tu_exists(hf)) tu_gen_ckpt(hf, "--custom 256,768,4,8,4,512 --format hf --seed 1");
    const char *p = demo_convert("kernel-check", hf, "kernel-check-f32.gguf",
                                 "--type f32 --tokenizer examples/stories260K/tokenizer.model",
                                 "../shared/gguf/kernel-check-f32.gguf not found, and ");
    free(hf);
    if (!noted++)
        print_message("NOTE: ../shared/gguf/kernel-check-f32.gguf not found: using a model of its "
                      "shapes made by bench/gen_ckpt (random weights, seed 1)\n");
    return p;
}

char *tu_shared_dup(const char *rel)
{
    const char *s = tu_shared(rel);
    return s ? strdup(s) : NULL;
}

int tu_long(void)
{
    const char *e = getenv("LLMPACK_TEST_LONG");
    return e && *e && strcmp(e, "0") != 0;
}

char *tu_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *t = tu_fmt("%s/llmpack-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(t)) { free(t); return NULL; }
    return t;
}

void tu_rmtree(const char *dir)
{
    if (!dir) return;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = tu_fmt("%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) tu_rmtree(p);
            else unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

char *tu_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

void tu_buf_put(tu_buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        if (n == cap) { cap *= 2; b = realloc(b, cap + 1); }
        size_t r = fread(b + n, 1, cap - n, f);
        if (!r) break;
        n += r;
    }
    fclose(f);
    b[n] = '\0';
    if (len) *len = n;
    return b;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

int tu_llmpack(char **out, const char *args_fmt, ...)
{
    va_list ap;
    va_start(ap, args_fmt);
    int n = vsnprintf(NULL, 0, args_fmt, ap);
    va_end(ap);
    char *args = malloc((size_t)n + 1);
    va_start(ap, args_fmt);
    vsnprintf(args, (size_t)n + 1, args_fmt, ap);
    va_end(ap);
    const char *bin = getenv("LLMPACK_BIN");
    if (!bin || !*bin) bin = "./llmpack";
    char *dir = tu_tmpdir();
    char *log = tu_fmt("%s/out", dir);
    char *cmd = tu_fmt("%s %s > '%s' 2>&1 < /dev/null", bin, args, log);
    int rc = system(cmd);
    if (out) *out = tu_read_file(log, NULL);
    unlink(log);
    rmdir(dir);
    free(cmd); free(log); free(dir); free(args);
    if (rc == -1 || !WIFEXITED(rc)) return -1;
    return WEXITSTATUS(rc);
}

void tu_vexpect(int want, const char *sub, const char *args_fmt, va_list ap)
{
    char args[4096], *out = NULL;
    vsnprintf(args, sizeof args, args_fmt, ap);
    int rc = tu_llmpack(&out, "%s", args);
    if (rc != want || (sub && (!out || !strstr(out, sub))))
        fail_msg("llmpack %s: exit %d (want %d), output: %s (want '%s')", args, rc, want,
                 out ? out : "", sub ? sub : "");
    free(out);
}

void tu_expect(int want, const char *sub, const char *args_fmt, ...)
{
    va_list ap;
    va_start(ap, args_fmt);
    tu_vexpect(want, sub, args_fmt, ap);
    va_end(ap);
}

void tu_run_ok(const char *args_fmt, ...)
{
    va_list ap;
    va_start(ap, args_fmt);
    tu_vexpect(0, NULL, args_fmt, ap);
    va_end(ap);
}

void tu_same_bytes(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    char *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
    if (!x || !y) fail_msg("cannot read %s or %s", a, b);
    if (na != nb || memcmp(x, y, na))
        fail_msg("%s (%zu bytes) and %s (%zu bytes) differ", a, na, b, nb);
    free(x);
    free(y);
}

int tu_json_schema_valid(const char *schema, const char *json, const char *what)
{
    static const char *py =
        "import json, sys\n"
        "try:\n"
        "    import jsonschema\n"
        "except ImportError:\n"
        "    sys.exit(77)\n"
        "schema = json.load(open(sys.argv[1]))\n"
        "cls = jsonschema.validators.validator_for(schema)\n"
        "cls.check_schema(schema)\n"
        "errs = list(cls(schema).iter_errors(json.load(open(sys.argv[2]))))\n"
        "for e in errs:\n"
        "    print('/'.join(str(p) for p in e.absolute_path) or '(top)', ':', e.message)\n"
        "sys.exit(1 if errs else 0)\n";
    if (!tu_exists(schema)) fail_msg("schema %s not found (run from the source tree)", schema);
    const char *b = json ? strchr(json, '{') : NULL;
    if (!b) fail_msg("%s: no JSON object in: %s", what, json ? json : "(no output)");
    char *dir = tu_tmpdir();
    char *doc = tu_fmt("%s/doc.json", dir), *script = tu_fmt("%s/check.py", dir);
    char *log = tu_fmt("%s/log", dir);
    if (tu_write_file(doc, b, strlen(b)) || tu_write_file(script, py, strlen(py)))
        fail_msg("cannot write to %s", dir);
    char *cmd = tu_fmt("command -v python3 > /dev/null 2>&1 || exit 78; "
                       "python3 '%s' '%s' '%s' > '%s' 2>&1", script, schema, doc, log);
    int rc = system(cmd);
    rc = rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
    char *msg = tu_read_file(log, NULL);
    tu_rmtree(dir);
    free(cmd); free(doc); free(script); free(log); free(dir);
    if (rc == 77 || rc == 78) {
        print_message("SKIP: %s (install python3-jsonschema: scripts/deps-debian.sh)\n",
                      rc == 78 ? "python3 not found" : "python3 has no jsonschema module");
        free(msg);
        return 0;
    }
    if (rc != 0) fail_msg("%s: not valid against %s (exit %d):\n%s\ndocument: %s", what, schema,
                          rc, msg ? msg : "", b);
    free(msg);
    return 1;
}

pid_t tu_llmpack_spawn(const char *log, char *const *argv)
{
    const char *bin = getenv("LLMPACK_BIN");
    if (!bin || !*bin) bin = "./llmpack";
    pid_t pid = fork();
    if (pid != 0) return pid;
    tu_unignore_signals();
    int in = open("/dev/null", O_RDONLY);
    int out = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0) _exit(127);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    execv(bin, argv);
    _exit(127);
}

long long tu_tmp_size(const char *dir, const char *base)
{
    char *prefix = tu_fmt(".%s.tmp-", base);
    long long size = -1;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        char *p = tu_fmt("%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0) size = st.st_size;
        free(p);
    }
    if (d) closedir(d);
    free(prefix);
    return size;
}

uint64_t tu_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

float tu_randn(uint64_t *s)
{
    double u1 = ((double)(tu_rand(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = ((double)(tu_rand(s) >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int tu_lpk_same_tensors(const char *a, const char *b, char *why, size_t why_n)
{
    lpk_reader *ra = NULL, *rb = NULL;
    lpk_error err = {0};
    int rc = -1;
    if (lpk_reader_open(a, &ra, &err) || lpk_reader_open(b, &rb, &err)) {
        snprintf(why, why_n, "%s", err.msg);
        goto out;
    }
    if (lpk_reader_n_tensors(ra) != lpk_reader_n_tensors(rb)) {
        snprintf(why, why_n, "%zu tensors vs %zu", lpk_reader_n_tensors(ra),
                 lpk_reader_n_tensors(rb));
        goto out;
    }
    for (size_t i = 0; i < lpk_reader_n_tensors(ra); i++) {
        const lpk_tensor *x = lpk_reader_tensor(ra, i), *y = lpk_reader_find(rb, x->name);
        if (!y || x->type != y->type || x->n_dims != y->n_dims ||
            memcmp(x->dims, y->dims, sizeof x->dims) || !x->has_xxh3 || !y->has_xxh3 ||
            x->xxh3 != y->xxh3) {
            snprintf(why, why_n, "tensor %s differs", x->name);
            goto out;
        }
    }
    rc = 0;
out:
    lpk_reader_close(ra);
    lpk_reader_close(rb);
    return rc;
}

void tu_unignore_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction cur;
        if (sigaction(sigs[i], NULL, &cur) == 0 && cur.sa_handler == SIG_IGN)
            signal(sigs[i], SIG_DFL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

int tu_wait_child(int pid, int seconds, const char *what)
{
    struct timespec step = {0, 10 * 1000 * 1000};
    for (long waited = 0; waited < (long)seconds * 100; waited++) {
        int ws = 0;
        pid_t got = waitpid((pid_t)pid, &ws, WNOHANG);
        if (got == (pid_t)pid) return ws;
        if (got < 0 && errno != EINTR) fail_msg("%s: waitpid failed: %s", what, strerror(errno));
        nanosleep(&step, NULL);
    }
    kill((pid_t)pid, SIGKILL);
    int ws = 0;
    waitpid((pid_t)pid, &ws, 0);
    fail_msg("%s: child %d still running after %d s (killed)", what, pid, seconds);
    return ws;
}

void tu_near(const char *what, double got, double want, double rel)
{
    int ok = want == 0 ? got == 0 : fabs(got / want - 1) <= rel;
    if (!ok) fail_msg("%s: %.9g, expected %.9g (within %g)", what, got, want, rel);
}

size_t tu_qbytes(int type, int64_t nrows, int64_t ncols)
{
    uint64_t n;
    assert_int_equal(lpk_type_nbytes(type, (uint64_t)(nrows * ncols), &n), LPK_OK);
    return (size_t)n;
}

double tu_rel_rmse(int type, const float *x, int64_t nrows, int64_t ncols, const float *w)
{
    void *q = malloc(tu_qbytes(type, nrows, ncols));
    lpk_error err = {0};
    assert_int_equal(quant_quantize_rows(type, x, nrows, ncols, q, w, &err), LPK_OK);
    double e, s;
    assert_int_equal(quant_error(type, x, q, nrows, ncols, &e, &s), LPK_OK);
    free(q);
    return sqrt(e / s);
}

char *tu_llama_tool(const char *name)
{
    const char *d = getenv("LLAMA_CPP_DIR");
    if (!d || !*d) return NULL;
    static const char *const sub[] = {"build/bin/", "bin/", ""};
    for (int i = 0; i < 3; i++) {
        char *p = tu_fmt("%s/%s%s", d, sub[i], name);
        if (access(p, X_OK) == 0) return p;
        free(p);
    }
    return NULL;
}
