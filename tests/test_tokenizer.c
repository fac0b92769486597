/* Tokenizers end to end: tokenizer files -> tokenizer.* metadata (convert/) ->
 * encoding and decoding (verify/), against llama.cpp's expected ids and the
 * token counts published with the test models. */
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../convert/convert.h"
#include "../verify/verify.h"

static vf_tokenizer *load_tok(const char *path)
{
    lpk_meta *m = lpk_meta_new();
    lpk_error err = {0};
    int rc = cv_tokenizer_load(path, m, &err);
    if (rc) print_message("%s\n", err.msg);
    assert_int_equal(rc, LPK_OK);
    vf_tokenizer *t = NULL;
    rc = vf_tokenizer_new(m, &t, &err);
    if (rc) print_message("%s\n", err.msg);
    assert_int_equal(rc, LPK_OK);
    lpk_meta_free(m);
    return t;
}

/* llama.cpp's test set: .inp holds strings each followed by a line
 * "__ggml_vocab_test__", .out one line of ids per string. */
typedef struct vcase {
    char *text;
    size_t n;
    int32_t *ids;
    size_t n_ids;
} vcase;

static size_t load_cases(const char *inp, vcase **out)
{
    size_t ni, no;
    char *in = tu_read_file(inp, &ni);
    char *outp = tu_fmt("%.*s.out", (int)(strlen(inp) - 4), inp);
    char *ids = tu_read_file(outp, &no);
    assert_non_null(in);
    assert_non_null(ids);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t n = 0, cap = 64;
    vcase *c = calloc(cap, sizeof *c);
    char *p = in, *q = ids;
    for (char *s; (s = strstr(p, sep)); p = s + strlen(sep)) {
        assert_true(n < cap);
        c[n].n = (size_t)(s - p);
        c[n].text = malloc(c[n].n + 1);
        memcpy(c[n].text, p, c[n].n);
        c[n].text[c[n].n] = '\0';
        char *eol = strchr(q, '\n');
        assert_non_null(eol);
        *eol = '\0';
        c[n].ids = malloc(sizeof(int32_t) * (strlen(q) / 2 + 1));
        for (char *e; ; q = e) {
            long v = strtol(q, &e, 10);
            if (e == q) break;
            c[n].ids[c[n].n_ids++] = (int32_t)v;
        }
        q = eol + 1;
        n++;
    }
    free(in);
    free(ids);
    free(outp);
    *out = c;
    return n;
}

static void free_cases(vcase *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].text);
        free(c[i].ids);
    }
    free(c);
}

static char *decode_all(const vf_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t cap = 16 * n + 16, o = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        int r = vf_decode_token(t, ids[i], s + o, cap - o);
        assert_true(r >= 0);
        o += (size_t)r;
    }
    *len = o;
    return s;
}

/* Encodes every case, compares with the expected ids and checks that decoding
 * gives the text back (SentencePiece: after the dummy-prefix space). */
static void run_cases(const vf_tokenizer *t, const char *inp, int dummy_prefix)
{
    vcase *c;
    size_t n = load_cases(inp, &c);
    assert_int_equal(n, 46);
    for (size_t i = 0; i < n; i++) {
        int32_t *ids;
        size_t nid;
        lpk_error err = {0};
        assert_int_equal(vf_encode(t, c[i].text, c[i].n, 0, 0, &ids, &nid, &err), LPK_OK);
        int same = nid == c[i].n_ids && !memcmp(ids, c[i].ids, nid * sizeof *ids);
        if (!same) {
            print_message("case %zu \"%s\": got", i, c[i].text);
            for (size_t j = 0; j < nid; j++) print_message(" %d", ids[j]);
            print_message("\n  want");
            for (size_t j = 0; j < c[i].n_ids; j++) print_message(" %d", c[i].ids[j]);
            print_message("\n");
        }
        assert_true(same);
        size_t dl;
        char *d = decode_all(t, ids, nid, &dl);
        size_t skip = dummy_prefix && c[i].n ? 1 : 0;
        assert_int_equal(dl, c[i].n + skip);
        if (skip) assert_int_equal(d[0], ' ');
        assert_memory_equal(d + skip, c[i].text, c[i].n);
        free(d);
        free(ids);
    }
    free_cases(c, n);
}

static void test_spm_llama2_cases(void **state)
{
    (void)state;
    TU_NEED_SHARED(inp, "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf.inp");
    char *in = strdup(inp);
    TU_NEED_SHARED(model, "tokenizers/llama2/tokenizer.model");
    vf_tokenizer *t = load_tok(model);
    assert_int_equal(vf_tokenizer_n_vocab(t), 32000);
    assert_int_equal(vf_tokenizer_bos(t), 1);
    assert_int_equal(vf_tokenizer_eos(t), 2);
    run_cases(t, in, 1);
    /* BOS on request; special-token text only with parse_special */
    int32_t *ids;
    size_t n;
    assert_int_equal(vf_encode(t, "<s>Hi", 5, 1, 0, &ids, &n, NULL), LPK_OK);
    assert_true(n > 2 && ids[0] == 1 && ids[1] != 1);
    free(ids);
    assert_int_equal(vf_encode(t, "<s>Hi", 5, 0, 1, &ids, &n, NULL), LPK_OK);
    assert_true(n >= 2 && ids[0] == 1);
    free(ids);
    char buf[16];
    assert_int_equal(vf_decode_token(t, 13, buf, sizeof buf), 1); /* <0x0A> */
    assert_int_equal(buf[0], '\n');
    assert_int_equal(vf_decode_token(t, 32000, buf, sizeof buf), LPK_EINVAL);
    vf_tokenizer_free(t);
    free(in);
}

/* Counts tokens of a whole file (BOS first), optionally dropping one trailing
 * newline as llama.cpp's -f does. */
static size_t count_file(const vf_tokenizer *t, const char *path, int drop_nl, int32_t **ids)
{
    size_t n, nid;
    char *s = tu_read_file(path, &n);
    assert_non_null(s);
    if (drop_nl && n && s[n - 1] == '\n') n--;
    lpk_error err = {0};
    assert_int_equal(vf_encode(t, s, n, 1, 0, ids, &nid, &err), LPK_OK);
    size_t dl;
    char *d = decode_all(t, *ids + 1, nid - 1, &dl);
    assert_int_equal(dl, n + 1);
    assert_memory_equal(d + 1, s, n);
    free(d);
    free(s);
    return nid;
}

static void test_spm_stories260k(void **state)
{
    (void)state;
    TU_NEED_SHARED(txt, "text/TinyStories-valid-sample.txt");
    char *text = strdup(txt);
    TU_NEED_SHARED(model, "models/stories260K/hf/tokenizer.model");
    vf_tokenizer *t = load_tok(model);
    assert_int_equal(vf_tokenizer_n_vocab(t), 512);
    int32_t *ids;
    assert_int_equal(count_file(t, text, 0, &ids), 15555);
    static const int32_t want[] = {1, 353, 331, 407, 261, 378, 383, 286, 261, 376, 298, 315};
    assert_memory_equal(ids, want, sizeof want);
    int has_cr = 0;
    for (size_t i = 0; i < 15555; i++) has_cr |= ids[i] == 16;
    assert_true(has_cr);
    free(ids);
    vf_tokenizer_free(t);
    free(text);
}

static void test_spm_llama2_20m_texts(void **state)
{
    (void)state;
    TU_NEED_SHARED(model, "models/llama2-20m/hf/tokenizer.model");
    vf_tokenizer *t = load_tok(model);
    TU_NEED_SHARED(docs, "text/docs-valid.txt");
    int32_t *ids;
    assert_int_equal(count_file(t, docs, 1, &ids), 271204);
    free(ids);
    TU_NEED_SHARED(wiki, "text/wiki.test.raw");
    assert_int_equal(count_file(t, wiki, 1, &ids), 335687);
    free(ids);
    vf_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_llama2_cases),
        cmocka_unit_test(test_spm_stories260k),
        cmocka_unit_test(test_spm_llama2_20m_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
