/* Test support shared by every suite (linked into each test binary). */
#ifndef TUTIL_H
#define TUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/types.h>

/* ../shared (or $LLMPACK_SHARED) joined with rel, or NULL when that path does
 * not exist; for the few files examples/ ships identically (the demo model =
 * models/stories260K/hf-f16, its tokenizer.model, the TinyStories sample) the
 * copy in examples/ when ../shared is absent. The returned string is static
 * storage, valid until the next call. */
const char *tu_shared(const char *rel);
/* tu_shared(rel) in a malloc'ed copy (NULL when absent). */
char *tu_shared_dup(const char *rel);
/* Skips the current test with a message naming what is missing. */
#define TU_NEED_SHARED(var, rel)                                                 \
    const char *var = tu_shared(rel);                                            \
    if (!var) {                                                                  \
        print_message("SKIP: ../shared/%s not found (set LLMPACK_SHARED)\n", rel); \
        skip();                                                                  \
    }
/* For an input ../shared holds that llmpack can also make from the demo model:
 * ../shared/rel (or $LLMPACK_SHARED/rel) when it exists; otherwise
 * `llmpack convert examples/stories260K -o DIR/BASE convert_args` (BASE = rel's
 * last component), run once per process into a temporary folder that is removed
 * at exit, with a note saying so. Fails the test if that conversion fails.
 * Example: tu_shared_or_demo(
 * "gguf/stories260K-f32.gguf", "--type f32") gives llama.cpp's f32 GGUF of
 * stories260K, or llmpack's f32 GGUF of the same (f16) weights. The string is
 * tu_shared's static storage when ../shared has rel, else valid until exit. */
const char *tu_shared_or_demo(const char *rel, const char *convert_args);
/* `llmpack convert examples/stories260K -o DIR/name convert_args`, whether or not
 * ../shared exists (once per process and name; removed at exit; fails the test
 * if the conversion fails). The string stays valid until exit. */
const char *tu_demo(const char *name, const char *convert_args);
/* Runs bench/gen_ckpt ($LLMPACK_GEN_CKPT, else build/bench/gen_ckpt) with args
 * (gen_ckpt's options but --out) writing the checkpoint to out; fails the test
 * naming the command if it fails. */
void tu_gen_ckpt(const char *out, const char *args);
/* ../shared/gguf/kernel-check-f32.gguf (llama.cpp's f32 GGUF of a random model
 * with k-quant shapes: dim 256, ffn 768, 4 layers, 8 heads, 4 kv heads, untied,
 * stories260K's tokenizer); without ../shared, a model of the same shapes made
 * by bench/gen_ckpt ($LLMPACK_GEN_CKPT, seed 1) and converted to an f32 GGUF
 * with the demo model's tokenizer (once per process, removed at exit). */
const char *tu_kernel_check(void);
/* True when `make test-long` runs (LLMPACK_TEST_LONG=1). */
int tu_long(void);
/* llama.cpp's program NAME under $LLAMA_CPP_DIR (build/bin/, bin/ or the
 * folder itself, as bench/common.sh looks; malloc'ed), or NULL. */
char *tu_llama_tool(const char *name);
/* A fresh temporary directory for this test (removed by tu_rmtree). */
char *tu_tmpdir(void);
void tu_rmtree(const char *dir);
/* printf into a malloc'ed string. */
char *tu_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Runs the llmpack binary ($LLMPACK_BIN, else ./llmpack) with a shell-quoted
 * argument string; stdout+stderr go to *out (malloc'ed, may be NULL). Returns
 * the exit code, or -1 if it did not exit normally. */
int tu_llmpack(char **out, const char *args_fmt, ...) __attribute__((format(printf, 2, 3)));
/* tu_llmpack, failing the test unless it exits `want` and, when sub is not
 * NULL, prints sub (stdout or stderr). */
void tu_vexpect(int want, const char *sub, const char *args_fmt, va_list ap);
void tu_expect(int want, const char *sub, const char *args_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* tu_expect(0, NULL, ...): the command must succeed. */
void tu_run_ok(const char *args_fmt, ...) __attribute__((format(printf, 1, 2)));
/* Fails the test unless files a and b hold the same bytes. */
void tu_same_bytes(const char *a, const char *b);
/* Starts the llmpack binary with argv (argv[0] is ignored; NULL-terminated) in a
 * child with default signals, stdin /dev/null, stdout and stderr to the file
 * log (NULL: /dev/null). Returns the child's pid. */
pid_t tu_llmpack_spawn(const char *log, char *const *argv);
/* Checks the JSON document in `json` (from its first '{', so a message line
 * before it is ignored) against the JSON Schema file `schema` with an
 * independent validator: python3's jsonschema (Debian's python3-jsonschema).
 * Returns 1 when valid; fails the test with the validator's message (and
 * `what`) when not; returns 0 after printing why when python3 or the module
 * is absent (the caller skips or goes on). */
int tu_json_schema_valid(const char *schema, const char *json, const char *what);
/* Size of the temporary file a writer keeps for target `base` in dir
 * (`.BASE.tmp-XXXXXX`), or -1 if there is none. */
long long tu_tmp_size(const char *dir, const char *base);
/* A byte buffer that grows as bytes are appended (files built in memory);
 * start from {0}, free(p) when done. */
typedef struct tu_buf {
    uint8_t *p;
    size_t n, cap;
} tu_buf;
void tu_buf_put(tu_buf *b, const void *d, size_t n);
/* Reads a whole file (malloc'ed, NUL-terminated); NULL on error. */
char *tu_read_file(const char *path, size_t *len);
int tu_write_file(const char *path, const void *data, size_t len);
int tu_exists(const char *path);
/* Entries of dir other than . and ..; with only_temp, only llmpack's temporary
 * files and unpack folders (`.NAME.tmp-XXXXXX`, `.llmpack-unpack-XXXXXX`). */
int tu_dir_entries(const char *dir, int only_temp);
/* Compares two containers tensor by tensor (name, type, shape, xxh3 of the
 * bytes). Returns 0 when they hold the same tensors, else -1 with why filled. */
int tu_lpk_same_tensors(const char *a, const char *b, char *why, size_t why_n);
/* For a test (or a forked child) that sends signals: every signal the tests send (INT,
 * TERM, HUP, QUIT, PIPE, USR1, USR2) that is ignored goes back to its default
 * action, and none is blocked, whatever the test runner inherited (a background
 * job of a non-interactive shell starts with SIGINT ignored). Handlers the
 * process installed itself stay. */
void tu_unignore_signals(void);
/* waitpid with a deadline: after `seconds` the child gets SIGKILL and the test
 * fails naming `what`, instead of hanging. Returns the wait status. */
int tu_wait_child(int pid, int seconds, const char *what);
/* Fails the test (naming what, got and want) unless |got / want - 1| <= rel
 * (or got == want exactly when want is 0). For measured, deterministic values:
 * a regression of a few percent fails, and so does an improvement nobody
 * re-measured. */
void tu_near(const char *what, double got, double want, double rel);
/* Bytes of nrows x ncols values stored as type (fails the test if they do not fit). */
size_t tu_qbytes(int type, int64_t nrows, int64_t ncols);
/* Relative RMSE of quantizing x (nrows x ncols) to type with importance weights w
 * (NULL: none), through quant_quantize_rows and quant_error. */
double tu_rel_rmse(int type, const float *x, int64_t nrows, int64_t ncols, const float *w);
/* Deterministic random numbers (xorshift), for fixtures. */
uint64_t tu_rand(uint64_t *state);
float tu_randn(uint64_t *state);   /* ~N(0,1) */

#endif
