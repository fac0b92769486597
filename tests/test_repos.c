/* Real repositories' metadata on tiny weights (tests/repos/, README.md there).
 *
 * Each fixture folder holds the metadata files of one public checkpoint layout
 * and a script, `expect`, read line by line:
 *
 *   setup lines     build the checkpoint in a temporary folder: `weights` writes
 *                   tiny random weights with bench/gen_ckpt, `patch` puts the
 *                   tiny shape into config.json / params.json (every other byte
 *                   stays as published), `touch` / `replace` / `copy` set up a
 *                   variant, `shared` copies a real tokenizer from ../shared (or
 *                   its stand-in), `tokjson-llama2` / `tokjson-llama31` / `tiktoken`
 *                   write tokenizer files derived from those;
 *   `convert DIR`   the folder converted (`also DIR`: another one, for the
 *                   expectations that follow) (then quantized to q8_0, exported to
 *                   GGUF, checked, verified); `refused EXIT TEXT` expects the
 *                   folder as set up so far to fail with that exit and text;
 *   expectations    what llama.cpp's convert_hf_to_gguf.py (c392e50) writes for
 *                   that folder, as each fixture's README.md derives it, checked
 *                   on the exported GGUF; `tokenize IDS TEXT`: the ids llama.cpp's
 *                   llama-tokenize gave for TEXT on that GGUF.
 *
 * The fixtures use ../shared's tokenizers; without them, stand-ins of the same
 * shapes (tests/tstandin.h) written by the test: every expectation but the
 * real pieces is then checked the same way, and `oracle` compares the
 * vocabulary with the stand-in's pieces instead of llama.cpp's file (a NOTE
 * says so); `tokenize` lines then only compare llmpack with llama.cpp (their
 * ids are the real tokenizers').
 * test_llama_cpp runs them all again where LLAMA_CPP_DIR points at a llama.cpp
 * build: llama-tokenize must give each `tokenize` line's ids too, and
 * llama-simple must load each exported GGUF and generate. */
#include "tutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "../format/lpk.h"
#include "tstandin.h"

#define REPOS "tests/repos/"

typedef struct fx {
    const char *name;
    char *root;      /* temporary download folder */
    char *model;     /* the converted folder */
    char *lpk, *q, *gguf;
    lpk_reader *r;   /* the exported GGUF */
    const lpk_meta *m;
    int standin;     /* stand-in tokenizers (no ../shared): the real pieces go unchecked */
} fx;

/* ---------------------------------------------------------------- setup helpers */
static void copy_tree(const char *from, const char *to)
{
    mkdir(to, 0755);
    DIR *d = opendir(from);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "expect") || !strcmp(e->d_name, "README.md"))
            continue;
        char *a = tu_fmt("%s/%s", from, e->d_name), *b = tu_fmt("%s/%s", to, e->d_name);
        struct stat st;
        assert_int_equal(stat(a, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            copy_tree(a, b);
        } else {
            size_t n;
            char *buf = tu_read_file(a, &n);
            assert_non_null(buf);
            assert_int_equal(tu_write_file(b, buf, n), 0);
            free(buf);
        }
        free(a);
        free(b);
    }
    closedir(d);
}

/* Replaces the number after `"key":` (first occurrence) with value. */
static char *patch_number(char *text, const char *key, const char *value)
{
    char *pat = tu_fmt("\"%s\":", key);
    char *p = strstr(text, pat);
    if (!p) fail_msg("patch: no \"%s\" in the file", key);
    p += strlen(pat);
    while (*p == ' ') p++;
    char *e = p;
    while (*e == '-' || *e == '.' || *e == 'e' || *e == '+' || (*e >= '0' && *e <= '9')) e++;
    assert_true(e > p);
    char *out = tu_fmt("%.*s%s%s", (int)(p - text), text, value, e);
    free(pat);
    free(text);
    return out;
}

/* GPT-2's byte-level alphabet, reversed: code point -> byte (or -1). */
static int byte_of_cp(uint32_t cp)
{
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        if (printable && (uint32_t)b == cp) return b;
        if (!printable && cp == 0x100u + (uint32_t)k) return b;
        if (!printable) k++;
    }
    return -1;
}

static int b64(const uint8_t *p, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = i + 1 < n ? a[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? a[v & 63] : '=';
    }
    return o;
}

/* Meta's tiktoken file for Llama 3, rebuilt from tokenizer.json's vocab (the
 * same 128000 byte strings with their ranks). */
static void write_tiktoken(const char *tokjson, const char *dest)
{
    json_error_t je;
    json_t *root = json_load_file(tokjson, 0, &je);
    assert_non_null(root);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    size_t n = json_object_size(vocab), cap = n * 48 + 1, o = 0;
    char *out = malloc(cap), **by_id = calloc(n, sizeof *by_id);
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        assert_true(id >= 0 && (size_t)id < n);
        by_id[id] = (char *)k;
    }
    uint8_t raw[512];
    char enc[800];
    for (size_t id = 0; id < n; id++) {
        const unsigned char *s = (const unsigned char *)by_id[id];
        size_t nr = 0;
        while (*s) {
            uint32_t cp = *s < 0x80 ? *s++ : (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
            if (cp >= 0x80) s += 2;
            int b = byte_of_cp(cp);
            assert_true(b >= 0 && nr < sizeof raw);
            raw[nr++] = (uint8_t)b;
        }
        int m = b64(raw, nr, enc);
        o += (size_t)snprintf(out + o, cap - o, "%.*s %zu\n", m, enc, id);
    }
    assert_int_equal(tu_write_file(dest, out, o), 0);
    free(out);
    free(by_id);
    json_decref(root);
}

/* Llama 3.1's names of the 256 special tokens (transformers'
 * convert_llama_weights_to_hf.py, DEFAULT_LLAMA_SPECIAL_TOKENS["3.1"]). */
static void llama31_name(int i, char *out, size_t cap)
{
    static const char *const first[] = {
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"};
    if (i < 11) snprintf(out, cap, "%s", first[i]);
    else snprintf(out, cap, "<|reserved_special_token_%d|>", i - 8);
}

/* Llama 3's tokenizer.json with 3.1's special-token names. */
static void write_tokjson_llama31(const char *tokjson, const char *dest)
{
    json_error_t je;
    json_t *root = json_load_file(tokjson, 0, &je);
    assert_non_null(root);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(root, "added_tokens"), i, e) {
        json_int_t id = json_integer_value(json_object_get(e, "id"));
        assert_true(id >= 128000 && id < 128256);
        char nm[64];
        llama31_name((int)(id - 128000), nm, sizeof nm);
        json_object_set_new(e, "content", json_string(nm));
    }
    assert_int_equal(json_dump_file(root, dest, JSON_COMPACT), 0);
    json_decref(root);
}

/* Llama 2's tokenizer.json as far as gguf-py's SpecialVocab reads it (the
 * added_tokens list Hugging Face's LlamaConverter writes); the vocabulary
 * itself comes from tokenizer.model, which takes precedence. */
static void write_tokjson_llama2(const char *dest)
{
    static const char text[] =
        "{\"version\": \"1.0\", \"added_tokens\": ["
        "{\"id\": 0, \"content\": \"<unk>\", \"single_word\": false, \"lstrip\": false, "
        "\"rstrip\": false, \"normalized\": false, \"special\": true}, "
        "{\"id\": 1, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": false, "
        "\"rstrip\": false, \"normalized\": false, \"special\": true}, "
        "{\"id\": 2, \"content\": \"</s>\", \"single_word\": false, \"lstrip\": false, "
        "\"rstrip\": false, \"normalized\": false, \"special\": true}]}\n";
    assert_int_equal(tu_write_file(dest, text, sizeof text - 1), 0);
}

/* ---------------------------------------------------------------- expectations */
static const char *special_key(const char *n)
{
    static const struct { const char *n, *k; } t[] = {
        {"bos", "tokenizer.ggml.bos_token_id"},       {"eos", "tokenizer.ggml.eos_token_id"},
        {"unk", "tokenizer.ggml.unknown_token_id"},   {"pad", "tokenizer.ggml.padding_token_id"},
        {"sep", "tokenizer.ggml.seperator_token_id"}, {"eot", "tokenizer.ggml.eot_token_id"},
        {"prefix", "tokenizer.ggml.prefix_token_id"}, {"suffix", "tokenizer.ggml.suffix_token_id"},
        {"middle", "tokenizer.ggml.middle_token_id"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(t[i].n, n)) return t[i].k;
    fail_msg("unknown special id %s", n);
    return NULL;
}

static int32_t type_of(const lpk_meta *m, uint64_t id)
{
    const lpk_kv *t = lpk_meta_find(m, "tokenizer.ggml.token_type");
    assert_non_null(t);
    assert_true(id < t->count);
    int32_t v;
    memcpy(&v, (const uint8_t *)t->data + 4 * id, 4);
    return v;
}

/* llama.cpp's rope factors for llama3 scaling (convert_hf_to_gguf.py's
 * generate_extra_tensors), in double. */
static void llama3_factors(int dim, double base, double factor, double lo, double hi,
                           double orig, double *out)
{
    double low_wl = orig / lo, high_wl = orig / hi;
    for (int i = 0; i < dim / 2; i++) {
        double freq = 1.0 / pow(base, (double)(2 * i) / dim);
        double wl = 2 * M_PI / freq;
        if (wl < high_wl) out[i] = 1;
        else if (wl > low_wl) out[i] = factor;
        else {
            double smooth = (orig / wl - lo) / (hi - lo);
            out[i] = 1 / ((1 - smooth) / factor + smooth);
        }
    }
}

/* The chat template the fixture's file holds: tokenizer_config.json's
 * chat_template string, or a file's text. */
static char *template_text(const fx *f, const char *what)
{
    char *p = tu_fmt("%s/%s", f->model, what);
    size_t n;
    char *text = tu_read_file(p, &n);
    if (!text) fail_msg("%s: cannot read %s", f->name, p);
    free(p);
    if (strstr(what, ".json")) {
        json_error_t je;
        json_t *root = json_loads(text, JSON_DECODE_INT_AS_REAL, &je);
        if (!root) fail_msg("%s: %s: %s", f->name, what, je.text);
        const char *t = json_string_value(json_object_get(root, "chat_template"));
        assert_non_null(t);
        free(text);
        text = strdup(t);
        json_decref(root);
    }
    return text;
}

/* Full tokens, scores and types equal another GGUF's (llama.cpp's own). */
static void compare_oracle(const fx *f, const char *path)
{
    lpk_reader *o;
    assert_int_equal(lpk_reader_open(path, &o, NULL), 0);
    const lpk_meta *om = lpk_reader_meta(o);
    static const char *const keys[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                       "tokenizer.ggml.token_type"};
    for (int k = 0; k < 3; k++) {
        const lpk_kv *a = lpk_meta_find(f->m, keys[k]), *b = lpk_meta_find(om, keys[k]);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(a->count, b->count);
        for (uint64_t i = 0; i < a->count; i++) {
            if (a->elem == LPK_V_STR) {
                lpk_str x = lpk_kv_str_at(a, i), y = lpk_kv_str_at(b, i);
                if (x.n != y.n || memcmp(x.p, y.p, (size_t)x.n))
                    fail_msg("%s: token %llu differs from %s", f->name, (unsigned long long)i,
                             path);
            } else if (memcmp((const uint8_t *)a->data + 4 * i, (const uint8_t *)b->data + 4 * i,
                              4)) {
                fail_msg("%s: %s[%llu] differs from %s", f->name, keys[k], (unsigned long long)i,
                         path);
            }
        }
    }
    lpk_reader_close(o);
}

/* Every key of a's metadata but general.name and source.* is in b with the
 * same value (the name and provenance name the input, archive or folder). */
static void same_meta(const char *name, const char *a, const char *b)
{
    lpk_reader *ra, *rb;
    assert_int_equal(lpk_reader_open(a, &ra, NULL), 0);
    assert_int_equal(lpk_reader_open(b, &rb, NULL), 0);
    const lpk_meta *ma = lpk_reader_meta(ra), *mb = lpk_reader_meta(rb);
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        const lpk_meta *x = pass ? mb : ma, *y = pass ? ma : mb;
        for (size_t i = 0; i < lpk_meta_count(x); i++) {
            const lpk_kv *k = lpk_meta_at(x, i);
            if (!strcmp(k->key, "general.name") || !strncmp(k->key, "source.", 7)) continue;
            const lpk_kv *o = lpk_meta_find(y, k->key);
            if (!o) fail_msg("%s: %s only in %s", name, k->key, pass ? b : a);
            n += !pass;
            int same = o->type == k->type && o->elem == k->elem && o->count == k->count;
            if (same && k->type == LPK_V_STR) {
                same = o->str.n == k->str.n && !memcmp(o->str.p, k->str.p, (size_t)k->str.n);
            } else if (same && k->type == LPK_V_ARR && k->elem == LPK_V_STR) {
                for (uint64_t j = 0; same && j < k->count; j++) {
                    lpk_str u = lpk_kv_str_at(k, j), v = lpk_kv_str_at(o, j);
                    same = u.n == v.n && !memcmp(u.p, v.p, (size_t)u.n);
                }
            } else if (same) {
                size_t sz = k->type == LPK_V_ARR ? lpk_vtype_size(k->elem) * (size_t)k->count
                                                 : lpk_vtype_size(k->type);
                same = !memcmp(k->data, o->data, sz);
            }
            if (!same) fail_msg("%s: %s differs between %s and %s", name, k->key, a, b);
        }
    }
    assert_true(n > 10);
    lpk_reader_close(ra);
    lpk_reader_close(rb);
}

/* Without llama.cpp's vocab GGUF: tokens, scores and kinds equal the stand-in
 * SentencePiece model's pieces (what the converter writes for that model). */
static void compare_standin(const fx *f)
{
    const lpk_kv *t = lpk_meta_find(f->m, "tokenizer.ggml.tokens");
    const lpk_kv *sc = lpk_meta_find(f->m, "tokenizer.ggml.scores");
    assert_non_null(t);
    assert_non_null(sc);
    assert_int_equal(t->count, 32000);
    assert_int_equal(sc->count, 32000);
    char want[64];
    for (int id = 0; id < 32000; id++) {
        float score, got;
        int type;
        ts_llama2_piece(id, want, sizeof want, &score, &type);
        lpk_str s = lpk_kv_str_at(t, (uint64_t)id);
        memcpy(&got, (const uint8_t *)sc->data + 4 * id, 4);
        if (s.n != strlen(want) || memcmp(s.p, want, (size_t)s.n) || got != score ||
            type_of(f->m, (uint64_t)id) != type)
            fail_msg("%s: token %d is '%.*s' (score %g, type %d), the stand-in's '%s' (%g, %d)",
                     f->name, id, (int)s.n, s.p, got, type_of(f->m, (uint64_t)id), want, score,
                     type);
    }
}

/* ---------------------------------------------------------------- llama.cpp */
/* set by test_llama_cpp: llama-tokenize and llama-simple, else NULL */
static char *llama_tokenize, *llama_simple;

/* The text of a `tokenize` line: \n, \t and \\ unescaped. */
static char *unescape(const char *s)
{
    char *out = malloc(strlen(s) + 1), *o = out;
    for (; *s; s++) {
        if (*s == '\\' && (s[1] == 'n' || s[1] == 't' || s[1] == '\\')) {
            s++;
            *o++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : '\\';
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
    return out;
}

/* "[1, 2, 3]" (llama-tokenize --ids) or {"ids": [1, 2, 3], ...} (llmpack
 * tokenize --json): the ids as "1,2,3" */
static char *ids_of(const char *out)
{
    const char *a = out ? strchr(out, '[') : NULL, *b = a ? strchr(a, ']') : NULL;
    if (!b) return NULL;
    char *r = malloc((size_t)(b - a) + 1), *o = r;
    for (const char *p = a + 1; p < b; p++)
        if (*p != ' ' && *p != '\n') *o++ = *p;
    *o = 0;
    return r;
}

/* tokenize IDS TEXT on the exported GGUF: llmpack (special tokens parsed, BOS
 * as the GGUF says) and, under test_llama_cpp, llama-tokenize give IDS. With
 * stand-in tokenizers IDS (the real tokenizers' ids) do not apply: llmpack's ids
 * must then equal llama-tokenize's, where it runs. */
static void check_tokenize(const fx *f, const char *want, const char *escaped)
{
    char *text = unescape(escaped), *file = tu_fmt("%s/tokenize.txt", f->root);
    assert_int_equal(tu_write_file(file, text, strlen(text)), 0);
    char *out = NULL;
    int rc = tu_llmpack(&out, "tokenize '%s' -f '%s' --special --json", f->gguf, file);
    char *got = rc ? NULL : ids_of(out), *mine = NULL;
    if (!got || (!f->standin && strcmp(got, want)))
        fail_msg("%s: llmpack tokenize '%s': %s, want %s", f->name, escaped,
                 got ? got : out ? out : "no output", f->standin ? "ids" : want);
    if (f->standin) want = mine = got;
    else free(got);
    free(out);
    if (llama_tokenize) {
        char *res = tu_fmt("%s/llama-tokenize.out", f->root);
        char *cmd = tu_fmt("'%s' -m '%s' -f '%s' --ids --no-escape --log-disable > '%s' 2>&1",
                           llama_tokenize, f->gguf, file, res);
        rc = system(cmd);
        out = tu_read_file(res, NULL);
        got = rc ? NULL : ids_of(out);
        if (!got || strcmp(got, want))
            fail_msg("%s: llama-tokenize '%s': %s, want %s", f->name, escaped,
                     got ? got : out ? out : "no output", want);
        free(got);
        free(out);
        free(cmd);
        free(res);
    }
    free(mine);
    free(text);
    free(file);
}

/* under test_llama_cpp: llama-simple loads the GGUF and generates 2 tokens */
static void check_llama_loads(const fx *f)
{
    if (!llama_simple) return;
    char *res = tu_fmt("%s/llama-simple.out", f->root);
    char *cmd = tu_fmt("'%s' -m '%s' -n 2 Hello > '%s' 2>&1", llama_simple, f->gguf, res);
    if (system(cmd)) {
        char *out = tu_read_file(res, NULL);
        fail_msg("%s: llama-simple did not run %s: %s", f->name, f->gguf, out ? out : "");
    }
    free(cmd);
    free(res);
}

/* ---------------------------------------------------------------- the run */
static int split_words(char *line, char **w, int max)
{
    int n = 0;
    for (char *p = strtok(line, " \t"); p && n < max; p = strtok(NULL, " \t")) w[n++] = p;
    return n;
}

static void run_fixture(const char *name)
{
    fx f = {.name = name};
    char *dir = tu_fmt(REPOS "%s", name), *exp = tu_fmt("%s/expect", dir);
    size_t n;
    char *script = tu_read_file(exp, &n);
    if (!script) fail_msg("%s: no expect file", exp);
    f.root = tu_tmpdir();
    copy_tree(dir, f.root);
    f.model = strdup(f.root);
    char *log = NULL, *text = strdup(script);
    int converted = 0, noted = 0;
    char *lines[512];
    int nl = 0;
    for (char *p = text; *p && nl < 512;) {
        char *e = strchr(p, '\n');
        if (e) *e = 0;
        lines[nl++] = p;
        if (!e) break;
        p = e + 1;
    }
    for (int li = 0; li < nl; li++) {
        const char *line = lines[li];
        char *l = strdup(line), *w[16];
        int nw = split_words(l, w, 16);
        if (f.standin && !noted) {
            noted = 1;
            print_message("NOTE: %s: ../shared/tokenizers not found: stand-in tokenizers (the "
                          "real sizes, special pieces at their real ids, made-up ordinary "
                          "pieces, tests/tstandin.h); not checked: the real pieces, scores and "
                          "merges\n", name);
        }
        if (!nw || w[0][0] == '#') goto next_line;
        if (!strcmp(w[0], "convert") || !strcmp(w[0], "also")) {
            /* also DIR: the expectations that follow are about DIR's conversion */
            if (!strcmp(w[0], "also")) {
                assert_true(converted);
                converted = 0;
                lpk_reader_close(f.r);
                f.r = NULL;
                free(f.lpk);
                free(f.q);
                free(f.gguf);
                f.lpk = f.q = f.gguf = NULL;
            }
            free(f.model);
            f.model = tu_fmt("%s/%s", f.root, w[1]);
        } else if (!strcmp(w[0], "weights")) {
            /* weights DIR FORMAT SHAPE [shards N] [tied] */
            char *out = tu_fmt("%s/%s", f.root, w[1]);
            const char *shards = "1", *tied = "";
            for (int i = 4; i < nw; i++) {
                if (!strcmp(w[i], "shards") && i + 1 < nw) shards = w[++i];
                if (!strcmp(w[i], "tied")) tied = " --tied";
            }
            char *args = tu_fmt("--custom %s --format %s --shards %s --seed 1234%s", w[3], w[2],
                                shards, tied);
            tu_gen_ckpt(out, args);
            free(args);
            free(out);
        } else if (!strcmp(w[0], "patch")) {
            /* patch FILE key=value ...: the fixture's file (FILE, else its base name),
             * patched, written to FILE */
            char *p = tu_fmt("%s/%s", f.root, w[1]), *src = tu_fmt("%s/%s", dir, w[1]);
            if (!tu_exists(src)) {
                free(src);
                const char *b = strrchr(w[1], '/');
                src = tu_fmt("%s/%s", dir, b ? b + 1 : w[1]);
            }
            size_t len;
            char *t = tu_read_file(src, &len);
            if (!t) fail_msg("%s: no %s", name, src);
            for (int i = 2; i < nw; i++) {
                char *eq = strchr(w[i], '=');
                assert_non_null(eq);
                *eq = 0;
                t = patch_number(t, w[i], eq + 1);
            }
            assert_int_equal(tu_write_file(p, t, strlen(t)), 0);
            free(t);
            free(p);
            free(src);
        } else if (!strcmp(w[0], "shared")) {
            const char *s = ts_tokenizer(w[1], &f.standin);
            size_t len;
            char *t = tu_read_file(s, &len), *p = tu_fmt("%s/%s", f.root, w[2]);
            assert_non_null(t);
            assert_int_equal(tu_write_file(p, t, len), 0);
            free(t);
            free(p);
        } else if (!strcmp(w[0], "tokjson-llama2")) {
            char *p = tu_fmt("%s/%s", f.root, w[1]);
            write_tokjson_llama2(p);
            free(p);
        } else if (!strcmp(w[0], "tokjson-llama31")) {
            char *p = tu_fmt("%s/%s", f.root, w[1]);
            write_tokjson_llama31(ts_tokenizer("tokenizers/llama3/tokenizer.json", &f.standin),
                                  p);
            free(p);
        } else if (!strcmp(w[0], "touch")) {
            /* touch FILE: an empty file (pytorch_model*.bin beside safetensors) */
            char *p = tu_fmt("%s/%s", f.root, w[1]);
            assert_int_equal(tu_write_file(p, "", 0), 0);
            free(p);
        } else if (!strcmp(w[0], "replace")) {
            /* replace FILE OLD NEW: the first OLD in the file becomes NEW */
            char *p = tu_fmt("%s/%s", f.root, w[1]);
            size_t len;
            char *t = tu_read_file(p, &len), *hit = t ? strstr(t, w[2]) : NULL;
            if (!hit) fail_msg("%s: no '%s' in %s", name, w[2], w[1]);
            char *o = tu_fmt("%.*s%s%s", (int)(hit - t), t, w[3], hit + strlen(w[2]));
            assert_int_equal(tu_write_file(p, o, strlen(o)), 0);
            free(o);
            free(t);
            free(p);
        } else if (!strcmp(w[0], "copy")) {
            char *a = tu_fmt("%s/%s", f.root, w[1]), *b = tu_fmt("%s/%s", f.root, w[2]);
            size_t len;
            char *t = tu_read_file(a, &len);
            assert_non_null(t);
            assert_int_equal(tu_write_file(b, t, len), 0);
            free(t);
            free(a);
            free(b);
        } else if (!strcmp(w[0], "refused") || !strcmp(w[0], "warned")) {
            /* refused EXIT TEXT / warned TEXT: converting the folder as set up so far
             * fails with that exit / succeeds, and says TEXT */
            int want_rc = !strcmp(w[0], "refused") ? atoi(w[1]) : 0;
            const char *want = strstr(line, w[want_rc ? 2 : 1]);
            char *out = tu_fmt("%s/refused.lpk", f.root), *rlog = NULL;
            int rc = tu_llmpack(&rlog, "convert '%s' -o '%s' --force", f.model, out);
            if (rc != want_rc || !rlog || !strstr(rlog, want))
                fail_msg("%s: convert exit %d '%s', want exit %d and '%s'", name, rc,
                         rlog ? rlog : "", want_rc, want);
            assert_int_equal(tu_exists(out), want_rc == 0);
            unlink(out);
            free(rlog);
            free(out);
        } else if (!strcmp(w[0], "archive")) {
            /* archive NAME ENTRY...: NAME (.tar, .tar.zst, .zip) packs ENTRY... of the
             * download folder as they lie there */
            char *list = strdup("");
            for (int i = 2; i < nw; i++) {
                char *nl2 = tu_fmt("%s '%s'", list, w[i]);
                free(list);
                list = nl2;
            }
            const char *b = w[1];
            size_t bl = strlen(b);
            char *cmd = bl > 4 && !strcmp(b + bl - 4, ".zip")
                            ? tu_fmt("cd '%s' && zip -q -0 -r '%s' %s", f.root, b, list)
                        : bl > 8 && !strcmp(b + bl - 8, ".tar.zst")
                            ? tu_fmt("tar --zstd -cf '%s/%s' -C '%s' %s", f.root, b, f.root, list)
                            : tu_fmt("tar -cf '%s/%s' -C '%s' %s", f.root, b, f.root, list);
            if (system(cmd)) fail_msg("%s: %s failed", name, cmd);
            free(cmd);
            free(list);
        } else if (!strcmp(w[0], "tiktoken")) {
            char *p = tu_fmt("%s/%s", f.root, w[1]);
            write_tiktoken(ts_tokenizer("tokenizers/llama3/tokenizer.json", &f.standin), p);
            free(p);
        } else {
            /* expectations: convert, quantize, export, check, verify once */
            if (!converted) {
                converted = 1;
                f.lpk = tu_fmt("%s.a.lpk", f.model);
                f.q = tu_fmt("%s.q.lpk", f.model);
                f.gguf = tu_fmt("%s.q.gguf", f.model);
                free(log);
                log = NULL;
                int rc = tu_llmpack(&log, "convert '%s' -o '%s'", f.model, f.lpk);
                if (rc) fail_msg("%s: convert exit %d: %s", name, rc, log ? log : "");
                if ((rc = tu_llmpack(NULL, "quantize '%s' --type q8_0 -o '%s'", f.lpk, f.q)) ||
                    (rc = tu_llmpack(NULL, "export '%s' -o '%s'", f.q, f.gguf)) ||
                    (rc = tu_llmpack(NULL, "check '%s'", f.gguf)))
                    fail_msg("%s: quantize/export/check exit %d", name, rc);
                /* without ../shared, the TinyStories sample examples/ ships */
                const char *txt = tu_shared("text/wiki.test.raw");
                if (!txt) txt = tu_shared("text/TinyStories-valid-sample.txt");
                if (txt) {
                    char *vlog = NULL;
                    rc = tu_llmpack(&vlog, "verify '%s' --ref '%s' --text '%s' --ctx 64 --chunks 1",
                                    f.q, f.lpk, txt);
                    if (rc) fail_msg("%s: verify exit %d: %s", name, rc, vlog ? vlog : "");
                    free(vlog);
                }
                assert_int_equal(lpk_reader_open(f.gguf, &f.r, NULL), 0);
                f.m = lpk_reader_meta(f.r);
                check_llama_loads(&f);
            }
            const lpk_meta *m = f.m;
            uint32_t u;
            float fl;
            if (!strcmp(w[0], "vocab")) {
                const lpk_kv *t = lpk_meta_find(m, "tokenizer.ggml.tokens");
                assert_non_null(t);
                if (t->count != strtoull(w[1], NULL, 10))
                    fail_msg("%s: %llu tokens, want %s", name, (unsigned long long)t->count, w[1]);
                const lpk_tensor *e = lpk_reader_find(f.r, "token_embd.weight");
                assert_int_equal(e->dims[0], (int64_t)t->count);
            } else if (!strcmp(w[0], "id")) {
                int st = lpk_meta_get_u32(m, special_key(w[1]), &u);
                if (!strcmp(w[2], "-")) {
                    if (st != LPK_ENOTFOUND) fail_msg("%s: %s is %u, want none", name, w[1], u);
                } else if (st || u != strtoul(w[2], NULL, 10)) {
                    fail_msg("%s: %s is %s%u, want %s", name, w[1], st ? "missing " : "",
                             st ? 0 : u, w[2]);
                }
            } else if (!strcmp(w[0], "bool")) {
                /* the value llama.cpp runs with: the key, else its loader's default for
                 * a SentencePiece (`llama`) or Llama 3 (`llama-bpe`) vocabulary: add
                 * BOS, no EOS */
                char *k = tu_fmt("tokenizer.ggml.%s", w[1]);
                int b, st = lpk_meta_get_bool(m, k, &b);
                const char *tm = lpk_meta_get_str(m, "tokenizer.ggml.model");
                const char *pre = lpk_meta_get_str(m, "tokenizer.ggml.pre");
                if (st == LPK_ENOTFOUND && tm &&
                    (!strcmp(tm, "llama") || (pre && !strcmp(pre, "llama-bpe")))) {
                    b = !strcmp(w[1], "add_bos_token");
                    st = 0;
                }
                if (st || b != !strcmp(w[2], "true"))
                    fail_msg("%s: %s is %s, want %s", name, k, st ? "missing" : b ? "true" : "false",
                             w[2]);
                free(k);
            } else if (!strcmp(w[0], "ctx")) {
                assert_int_equal(lpk_meta_get_u32(m, "llama.context_length", &u), 0);
                if (u != strtoul(w[1], NULL, 10))
                    fail_msg("%s: context length %u, want %s", name, u, w[1]);
            } else if (!strcmp(w[0], "freq_base")) {
                /* llama.cpp's default when the key is absent: 10000 */
                if (lpk_meta_get_f32(m, "llama.rope.freq_base", &fl)) fl = 10000.0f;
                assert_true(fl == strtof(w[1], NULL));
            } else if (!strcmp(w[0], "scaling")) {
                const char *t = lpk_meta_get_str(m, "llama.rope.scaling.type");
                if (!strcmp(w[1], "-")) {
                    if (t) fail_msg("%s: rope scaling %s, want none", name, t);
                } else {
                    if (!t || strcmp(t, w[1])) fail_msg("%s: rope scaling %s, want %s", name,
                                                         t ? t : "none", w[1]);
                    assert_int_equal(lpk_meta_get_f32(m, "llama.rope.scaling.factor", &fl), 0);
                    assert_true(fl == strtof(w[2], NULL));
                }
            } else if (!strcmp(w[0], "rope_freqs")) {
                const lpk_tensor *t = lpk_reader_find(f.r, "rope_freqs.weight");
                if (!strcmp(w[1], "-")) {
                    if (t) fail_msg("%s: rope_freqs.weight present, want none", name);
                } else {
                    /* rope_freqs llama3 FACTOR LOW HIGH ORIG */
                    if (!t) fail_msg("%s: no rope_freqs.weight", name);
                    uint32_t rot;
                    assert_int_equal(lpk_meta_get_u32(m, "llama.rope.dimension_count", &rot), 0);
                    if (lpk_meta_get_f32(m, "llama.rope.freq_base", &fl)) fl = 10000.0f;
                    double want[512];
                    assert_true(rot / 2 <= 512 && t->dims[0] == rot / 2);
                    llama3_factors((int)rot, fl, strtod(w[2], NULL), strtod(w[3], NULL),
                                   strtod(w[4], NULL), strtod(w[5], NULL), want);
                    const float *got = (const float *)t->data;
                    for (uint32_t i = 0; i < rot / 2; i++)
                        if (fabs(got[i] - want[i]) > 1e-5 * fabs(want[i]))
                            fail_msg("%s: rope factor %u is %g, want %g", name, i, got[i],
                                     want[i]);
                    assert_int_equal(lpk_meta_find(m, "llama.rope.scaling.type") == NULL, 1);
                }
            } else if (!strcmp(w[0], "swa")) {
                int st = lpk_meta_get_u32(m, "llama.attention.sliding_window", &u);
                if (!strcmp(w[1], "-")) assert_int_equal(st, LPK_ENOTFOUND);
                else if (st || u != strtoul(w[1], NULL, 10))
                    fail_msg("%s: sliding window %s, want %s", name, st ? "missing" : "wrong", w[1]);
            } else if (!strcmp(w[0], "template")) {
                const char *t = lpk_meta_get_str(m, "tokenizer.chat_template");
                if (!strcmp(w[1], "-")) {
                    if (t) fail_msg("%s: a chat template, want none", name);
                } else {
                    char *want = template_text(&f, w[1]);
                    if (!t || strcmp(t, want)) fail_msg("%s: chat template differs", name);
                    free(want);
                }
            } else if (!strcmp(w[0], "type")) {
                int32_t ty = type_of(m, strtoull(w[1], NULL, 10));
                if (ty != atoi(w[2])) fail_msg("%s: token %s has type %d, want %s", name, w[1], ty,
                                               w[2]);
            } else if (!strcmp(w[0], "typecount")) {
                const lpk_kv *t = lpk_meta_find(m, "tokenizer.ggml.token_type");
                uint64_t c = 0;
                for (uint64_t i = 0; i < t->count; i++) c += type_of(m, i) == atoi(w[1]);
                if (c != strtoull(w[2], NULL, 10))
                    fail_msg("%s: %llu tokens of type %s, want %s", name, (unsigned long long)c,
                             w[1], w[2]);
            } else if (!strcmp(w[0], "token")) {
                const lpk_kv *t = lpk_meta_find(m, "tokenizer.ggml.tokens");
                lpk_str s = lpk_kv_str_at(t, strtoull(w[1], NULL, 10));
                if (s.n != strlen(w[2]) || memcmp(s.p, w[2], (size_t)s.n))
                    fail_msg("%s: token %s is '%.*s', want '%s'", name, w[1], (int)s.n, s.p, w[2]);
            } else if (!strcmp(w[0], "warn")) {
                /* the rest of the line, as printed */
                const char *want = strstr(line, w[1]);
                if (!log || !strstr(log, want))
                    fail_msg("%s: convert did not say '%s': %s", name, want, log ? log : "");
            } else if (!strcmp(w[0], "u32")) {
                if (lpk_meta_get_u32(m, w[1], &u) || u != strtoul(w[2], NULL, 10))
                    fail_msg("%s: %s is not %s", name, w[1], w[2]);
            } else if (!strcmp(w[0], "str")) {
                const char *v = lpk_meta_get_str(m, w[1]);
                if (!v || strcmp(v, w[2])) fail_msg("%s: %s is %s, want %s", name, w[1],
                                                     v ? v : "missing", w[2]);
            } else if (!strcmp(w[0], "tokenize")) {
                /* tokenize IDS TEXT: TEXT is the rest of the line after IDS */
                assert_true(nw > 2);
                check_tokenize(&f, w[1], line + (w[2] - l));
            } else if (!strcmp(w[0], "tied")) {
                int has = lpk_reader_find(f.r, "output.weight") != NULL;
                assert_int_equal(has, !atoi(w[1]));
            } else if (!strcmp(w[0], "oracle")) {
                const char *o = tu_shared(w[1]);
                if (o) {
                    compare_oracle(&f, o);
                } else {
                    print_message("NOTE: %s: ../shared/%s not found: the vocabulary is compared "
                                  "with the stand-in's pieces, not with llama.cpp's\n", name,
                                  w[1]);
                    compare_standin(&f);
                }
            } else if (!strcmp(w[0], "same_archive")) {
                /* same_archive ARCHIVE [TEXT]: the archive converts exactly as the folder
                 * (tensors and every metadata key but the name and provenance), and
                 * says TEXT */
                char *arc = tu_fmt("%s/%s", f.root, w[1]), *b = tu_fmt("%s/b.lpk", f.root);
                char *alog = NULL;
                int rc = tu_llmpack(&alog, "convert '%s' -o '%s' --force", arc, b);
                if (rc) fail_msg("%s: convert %s exit %d: %s", name, arc, rc, alog ? alog : "");
                const char *want = nw > 2 ? strstr(line, w[2]) : NULL;
                if (want && (!alog || !strstr(alog, want)))
                    fail_msg("%s: convert %s did not say '%s': %s", name, arc, want,
                             alog ? alog : "");
                char why[256];
                if (tu_lpk_same_tensors(f.lpk, b, why, sizeof why))
                    fail_msg("%s: %s and %s: %s", name, f.model, arc, why);
                same_meta(name, f.lpk, b);
                free(alog);
                free(arc);
                free(b);
            } else if (!strcmp(w[0], "same_tensors")) {
                char *other = tu_fmt("%s/%s", f.root, w[1]), *b = tu_fmt("%s/b.lpk", f.root);
                char *olog = NULL;
                int rc = tu_llmpack(&olog, "convert '%s' -o '%s' --force", other, b);
                if (rc) fail_msg("%s: convert %s exit %d: %s", name, other, rc, olog ? olog : "");
                char why[256];
                if (tu_lpk_same_tensors(f.lpk, b, why, sizeof why))
                    fail_msg("%s: %s and %s: %s", name, f.model, other, why);
                free(olog);
                free(other);
                free(b);
            } else {
                fail_msg("%s: unknown expect line '%s'", name, line);
            }
        }
    next_line:
        free(l);
    }
    assert_true(converted);
    lpk_reader_close(f.r);
    tu_rmtree(f.root);
    free(log);
    free(text);
    free(script);
    free(exp);
    free(dir);
    free(f.root);
    free(f.model);
    free(f.lpk);
    free(f.q);
    free(f.gguf);
}

#define FIXTURE(fn, dir) \
    static void fn(void **state) { (void)state; run_fixture(dir); }
FIXTURE(test_llama2_7b_hf, "llama-2-7b-hf")
FIXTURE(test_llama2_7b_chat_hf, "llama-2-7b-chat-hf")
FIXTURE(test_codellama_7b_hf, "codellama-7b-hf")
FIXTURE(test_vicuna_7b_16k, "vicuna-7b-v1.5-16k")
FIXTURE(test_alpaca_32001, "alpaca-7b-32001")
FIXTURE(test_tinyllama_chat, "tinyllama-1.1b-chat-v1.0")
FIXTURE(test_llama3_8b_instruct, "meta-llama-3-8b-instruct")
FIXTURE(test_llama31_8b_instruct, "llama-3.1-8b-instruct")
FIXTURE(test_llama32_1b, "llama-3.2-1b")
FIXTURE(test_mistral_7b, "mistral-7b-v0.1")
FIXTURE(test_meta_llama2_7b, "meta-llama-2-7b")
FIXTURE(test_meta_llama2_70b, "meta-llama-2-70b")
FIXTURE(test_meta_llama31_8b, "meta-llama-3.1-8b-instruct")

/* Every fixture again, against llama.cpp's own programs (LLAMA_CPP_DIR). */
static void test_llama_cpp(void **state)
{
    (void)state;
    llama_tokenize = tu_llama_tool("llama-tokenize");
    llama_simple = tu_llama_tool("llama-simple");
    if (!llama_tokenize || !llama_simple) {
        print_message("SKIP: no llama-tokenize and llama-simple under LLAMA_CPP_DIR (%s)\n",
                      getenv("LLAMA_CPP_DIR") ? getenv("LLAMA_CPP_DIR") : "unset");
        free(llama_tokenize);
        free(llama_simple);
        llama_tokenize = llama_simple = NULL;
        skip();
    }
    static const char *const all[] = {
        "llama-2-7b-hf", "llama-2-7b-chat-hf", "codellama-7b-hf", "vicuna-7b-v1.5-16k",
        "alpaca-7b-32001", "tinyllama-1.1b-chat-v1.0", "meta-llama-3-8b-instruct",
        "llama-3.1-8b-instruct", "llama-3.2-1b", "mistral-7b-v0.1", "meta-llama-2-7b",
        "meta-llama-2-70b", "meta-llama-3.1-8b-instruct"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        print_message("llama.cpp: %s\n", all[i]);
        run_fixture(all[i]);
    }
    free(llama_tokenize);
    free(llama_simple);
    llama_tokenize = llama_simple = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama2_7b_hf),        cmocka_unit_test(test_llama2_7b_chat_hf),
        cmocka_unit_test(test_codellama_7b_hf),     cmocka_unit_test(test_vicuna_7b_16k),
        cmocka_unit_test(test_alpaca_32001),        cmocka_unit_test(test_tinyllama_chat),
        cmocka_unit_test(test_llama3_8b_instruct),  cmocka_unit_test(test_llama31_8b_instruct),
        cmocka_unit_test(test_llama32_1b),          cmocka_unit_test(test_mistral_7b),
        cmocka_unit_test(test_meta_llama2_7b),      cmocka_unit_test(test_meta_llama2_70b),
        cmocka_unit_test(test_meta_llama31_8b),     cmocka_unit_test(test_llama_cpp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
