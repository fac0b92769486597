/* Tokenizers end to end: tokenizer files -> tokenizer.* metadata (convert/) ->
 * encoding and decoding (verify/), against llama.cpp's expected ids and the
 * token counts published with the test models. */
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../tok/tok.h"
#include "tstandin.h"

static tok_tokenizer *load_tok(const char *path)
{
    lpk_meta *m = lpk_meta_new();
    lpk_error err = {0};
    int rc = tok_load(path, m, &err);
    if (rc) print_message("%s\n", err.msg);
    assert_int_equal(rc, LPK_OK);
    tok_tokenizer *t = NULL;
    rc = tok_tokenizer_new(m, &t, &err);
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

static char *decode_all(const tok_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t cap = 16 * n + 16, o = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        int r = tok_decode_token(t, ids[i], s + o, cap - o);
        assert_true(r >= 0);
        o += (size_t)r;
    }
    *len = o;
    return s;
}

/* Encodes every case, compares with the expected ids and checks that decoding
 * gives the text back (SentencePiece: after the dummy-prefix space). */
static void run_cases(const tok_tokenizer *t, const char *inp, int dummy_prefix)
{
    vcase *c;
    size_t n = load_cases(inp, &c);
    assert_int_equal(n, 46);
    for (size_t i = 0; i < n; i++) {
        int32_t *ids;
        size_t nid;
        lpk_error err = {0};
        assert_int_equal(tok_encode(t, c[i].text, c[i].n, 0, 0, &ids, &nid, &err), LPK_OK);
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

/* Without ../shared, on the Llama 2 stand-in (tests/tstandin.h): everything but
 * llama.cpp's cases, which need the real pieces. */
static void test_spm_llama2_cases(void **state)
{
    (void)state;
    int standin = 0;
    tok_tokenizer *t = load_tok(ts_tokenizer("tokenizers/llama2/tokenizer.model", &standin));
    const char *inp = tu_shared("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf.inp");
    char *in = inp && !standin ? strdup(inp) : NULL;
    assert_int_equal(tok_tokenizer_n_vocab(t), 32000);
    assert_int_equal(tok_tokenizer_bos(t), 1);
    assert_int_equal(tok_tokenizer_eos(t), 2);
    if (in)
        run_cases(t, in, 1);
    else
        print_message("NOTE: ../shared/tokenizers not found: llama.cpp's Llama 2 cases not run; "
                      "BOS, special pieces and byte pieces checked on the stand-in\n");
    /* BOS on request; special-token text only with parse_special */
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(t, "<s>Hi", 5, 1, 0, &ids, &n, NULL), LPK_OK);
    assert_true(n > 2 && ids[0] == 1 && ids[1] != 1);
    free(ids);
    assert_int_equal(tok_encode(t, "<s>Hi", 5, 0, 1, &ids, &n, NULL), LPK_OK);
    assert_true(n >= 2 && ids[0] == 1);
    free(ids);
    char buf[16];
    assert_int_equal(tok_decode_token(t, 13, buf, sizeof buf), 1); /* <0x0A> */
    assert_int_equal(buf[0], '\n');
    assert_int_equal(tok_decode_token(t, 32000, buf, sizeof buf), LPK_EINVAL);
    tok_tokenizer_free(t);
    free(in);
}

/* Counts tokens of a whole file (BOS first), optionally dropping one trailing
 * newline as llama.cpp's -f does. */
static size_t count_file(const tok_tokenizer *t, const char *path, int drop_nl, int32_t **ids)
{
    size_t n, nid;
    char *s = tu_read_file(path, &n);
    assert_non_null(s);
    if (drop_nl && n && s[n - 1] == '\n') n--;
    lpk_error err = {0};
    assert_int_equal(tok_encode(t, s, n, 1, 0, ids, &nid, &err), LPK_OK);
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
    tok_tokenizer *t = load_tok(model);
    assert_int_equal(tok_tokenizer_n_vocab(t), 512);
    int32_t *ids;
    assert_int_equal(count_file(t, text, 0, &ids), 15555);
    static const int32_t want[] = {1, 353, 331, 407, 261, 378, 383, 286, 261, 376, 298, 315};
    assert_memory_equal(ids, want, sizeof want);
    int has_cr = 0;
    for (size_t i = 0; i < 15555; i++) has_cr |= ids[i] == 16;
    assert_true(has_cr);
    free(ids);
    tok_tokenizer_free(t);
    free(text);
}

static void test_spm_llama2_20m_texts(void **state)
{
    (void)state;
    TU_NEED_SHARED(model, "models/llama2-20m/hf/tokenizer.model");
    tok_tokenizer *t = load_tok(model);
    TU_NEED_SHARED(docs, "text/docs-valid.txt");
    int32_t *ids;
    assert_int_equal(count_file(t, docs, 1, &ids), 271204);
    free(ids);
    TU_NEED_SHARED(wiki, "text/wiki.test.raw");
    assert_int_equal(count_file(t, wiki, 1, &ids), 335687);
    free(ids);
    tok_tokenizer_free(t);
}

/* Without ../shared, on the Llama 3 stand-in (tests/tstandin.h): everything but
 * llama.cpp's cases, which need the real pieces and merges. */
static void test_bpe_llama3_cases(void **state)
{
    (void)state;
    int standin = 0;
    char *model = strdup(ts_tokenizer("tokenizers/llama3/tokenizer.json", &standin));
    const char *inp = tu_shared("tokenizers/llama.cpp-vocab/ggml-vocab-llama-bpe.gguf.inp");
    char *in = inp && !standin ? strdup(inp) : NULL;
    tok_tokenizer *t = load_tok(model);
    assert_int_equal(tok_tokenizer_n_vocab(t), 128256);
    assert_int_equal(tok_tokenizer_bos(t), 128000);
    assert_int_equal(tok_tokenizer_eos(t), 128001);
    if (in)
        run_cases(t, in, 0);
    else
        print_message("NOTE: ../shared/tokenizers not found: llama.cpp's Llama 3 cases not run; "
                      "BOS, special tokens and the byte alphabet checked on the stand-in\n");
    /* special tokens: text unless parse_special; they split the text, each part
     * encoded on its own */
    static const char chat[] = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
    int32_t *ids, *user, *hi;
    size_t n, nu, nh;
    assert_int_equal(tok_encode(t, chat, strlen(chat), 1, 1, &ids, &n, NULL), LPK_OK);
    assert_int_equal(tok_encode(t, "user", 4, 0, 0, &user, &nu, NULL), LPK_OK);
    assert_int_equal(tok_encode(t, "\n\nHi", 4, 0, 0, &hi, &nh, NULL), LPK_OK);
    assert_int_equal(n, 4 + nu + nh);
    assert_int_equal(ids[0], 128000);
    assert_int_equal(ids[1], 128006);
    assert_memory_equal(ids + 2, user, nu * sizeof *ids);
    assert_int_equal(ids[2 + nu], 128007);
    assert_memory_equal(ids + 3 + nu, hi, nh * sizeof *ids);
    assert_int_equal(ids[n - 1], 128009);
    if (!standin) assert_int_equal(ids[3], 128007); /* "user" is one token */
    free(user);
    free(hi);
    free(ids);
    assert_int_equal(tok_encode(t, chat, strlen(chat), 0, 0, &ids, &n, NULL), LPK_OK);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] < 128000);
    free(ids);
    char buf[64];
    assert_int_equal(tok_decode_token(t, 128009, buf, sizeof buf), 10);
    assert_memory_equal(buf, "<|eot_id|>", 10);
    assert_int_equal(tok_decode_token(t, 220, buf, sizeof buf), 1); /* "Ġ" */
    assert_int_equal(buf[0], ' ');
    tok_tokenizer_free(t);

    /* GGUF files from llama.cpp name the pre-tokenizer ("llama-bpe") and carry
     * neither tokenizer.pre_regex nor tokenizer.ignore_merges: same ids. */
    if (!in) {
        free(model);
        return;
    }
    lpk_meta *m = lpk_meta_new();
    assert_int_equal(tok_load(model, m, NULL), LPK_OK);
    assert_int_equal(lpk_meta_remove(m, "tokenizer.pre_regex"), LPK_OK);
    assert_int_equal(lpk_meta_remove(m, "tokenizer.ignore_merges"), LPK_OK);
    assert_string_equal(lpk_meta_get_str(m, "tokenizer.ggml.pre"), "llama-bpe");
    assert_int_equal(tok_tokenizer_new(m, &t, NULL), LPK_OK);
    run_cases(t, in, 0);
    tok_tokenizer_free(t);
    lpk_meta_free(m);
    free(in);
    free(model);
}

/* Meta ships Llama 3 as a tiktoken file; tokenizer.json is Hugging Face's
 * conversion of it. Writing the tiktoken file back from tokenizer.json's vocab
 * and loading it must give the same tokens, specials and merges. */
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

static void test_tiktoken_llama3(void **state)
{
    (void)state;
    TU_NEED_SHARED(model, "tokenizers/llama3/tokenizer.json");
    lpk_meta *hf = lpk_meta_new(), *tk = lpk_meta_new();
    lpk_error err = {0};
    assert_int_equal(tok_load(model, hf, &err), LPK_OK);
    const lpk_kv *toks = lpk_meta_find(hf, "tokenizer.ggml.tokens");
    tok_tokenizer *t;
    assert_int_equal(tok_tokenizer_new(hf, &t, &err), LPK_OK);
    /* raw bytes of each base token = its decoding */
    size_t cap = 128000 * 40, o = 0;
    char *file = malloc(cap), piece[256], enc[400];
    for (int32_t id = 0; id < 128000; id++) {
        int n = tok_decode_token(t, id, piece, sizeof piece);
        assert_true(n > 0);
        int m = b64((const uint8_t *)piece, (size_t)n, enc);
        o += (size_t)snprintf(file + o, cap - o, "%.*s %d\n", m, enc, id);
    }
    assert_int_equal(tok_load_mem("tokenizer.model", (const uint8_t *)file, o, tk, &err),
                     LPK_OK);
    const lpk_kv *tt = lpk_meta_find(tk, "tokenizer.ggml.tokens");
    assert_int_equal(tt->count, toks->count);
    for (uint64_t i = 0; i < tt->count; i++) {
        lpk_str a = lpk_kv_str_at(tt, i), b = lpk_kv_str_at(toks, i);
        assert_int_equal(a.n, b.n);
        assert_memory_equal(a.p, b.p, a.n);
    }
    const lpk_kv *ma = lpk_meta_find(tk, "tokenizer.ggml.merges");
    const lpk_kv *mb = lpk_meta_find(hf, "tokenizer.ggml.merges");
    assert_int_equal(ma->count, 280147);
    assert_int_equal(mb->count, 280147);
    for (uint64_t i = 0; i < ma->count; i++) {
        lpk_str a = lpk_kv_str_at(ma, i), b = lpk_kv_str_at(mb, i);
        assert_int_equal(a.n, b.n);
        assert_memory_equal(a.p, b.p, a.n);
    }
    assert_string_equal(lpk_meta_get_str(tk, "tokenizer.ggml.pre"), "llama-bpe");
    assert_string_equal(lpk_kv_str_at(lpk_meta_find(tk, "tokenizer.pre_regex"), 0).p,
                        lpk_kv_str_at(lpk_meta_find(hf, "tokenizer.pre_regex"), 0).p);
    const lpk_kv *eos = lpk_meta_find(tk, "tokenizer.eos_token_ids");
    assert_int_equal(eos->count, 2);
    assert_int_equal(((const uint32_t *)eos->data)[1], 128009);
    free(file);
    tok_tokenizer_free(t);
    lpk_meta_free(hf);
    lpk_meta_free(tk);
}

static void test_config(void **state)
{
    (void)state;
    lpk_meta *m = lpk_meta_new();
    lpk_error err = {0};
    const char *toks[] = {"<unk>", "<s>", "</s>", "a"};
    assert_int_equal(lpk_meta_set_str_arr(m, "tokenizer.ggml.tokens", toks, NULL, 4), 0);
    static const char cfg[] =
        "{\"add_bos_token\": false, \"add_eos_token\": true, \"bos_token\": {\"content\": "
        "\"<s>\"}, \"eos_token\": \"</s>\", \"chat_template\": [{\"name\": \"default\", "
        "\"template\": \"T1\"}, {\"name\": \"tool_use\", \"template\": \"T2\"}]}";
    assert_int_equal(tok_config_load_mem("tokenizer_config.json", (const uint8_t *)cfg,
                                         strlen(cfg), m, &err), LPK_OK);
    int b;
    uint32_t u;
    assert_int_equal(lpk_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_false(b);
    assert_int_equal(lpk_meta_get_bool(m, "tokenizer.ggml.add_eos_token", &b), 0);
    assert_true(b);
    assert_int_equal(lpk_meta_get_u32(m, "tokenizer.ggml.bos_token_id", &u), 0);
    assert_int_equal(u, 1);
    assert_int_equal(lpk_meta_get_u32(m, "tokenizer.ggml.eos_token_id", &u), 0);
    assert_int_equal(u, 2);
    assert_string_equal(lpk_meta_get_str(m, "tokenizer.chat_template"), "T1");
    assert_string_equal(lpk_meta_get_str(m, "tokenizer.chat_template.tool_use"), "T2");
    static const char cfg2[] = "{\"chat_template\": \"{{ x }}\"}";
    assert_int_equal(tok_config_load_mem("c2", (const uint8_t *)cfg2, strlen(cfg2), m,
                                         &err), LPK_OK);
    assert_string_equal(lpk_meta_get_str(m, "tokenizer.chat_template"), "{{ x }}");
    static const char bad[] = "{\"chat_template\": 5}";
    assert_int_equal(tok_config_load_mem("c3", (const uint8_t *)bad, strlen(bad), m,
                                         &err), LPK_ECORRUPT);
    lpk_error_clear(&err);
    assert_int_equal(tok_config_load_mem("c4", (const uint8_t *)"{", 1, m, &err),
                     LPK_ECORRUPT);
    assert_non_null(strstr(err.msg, "c4"));
    /* loading the SentencePiece model afterwards keeps the config's flags */
    TU_NEED_SHARED(model, "models/stories260K/hf/tokenizer.model");
    assert_int_equal(tok_load(model, m, &err), LPK_OK);
    assert_int_equal(lpk_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_false(b);
    lpk_meta_free(m);
}

/* Special and added tokens split the text as llama.cpp's tokenizer_st_partition
 * does: by the token's stored text, longest first, user-defined always,
 * control only with parse_special. Code Llama's user-defined `▁<PRE>` (U+2581
 * then "<PRE>") matches that text, never " <PRE>"; the dummy prefix follows a
 * special token. */
static void encode_ids(const tok_tokenizer *t, const char *s, int special, int32_t **ids,
                       size_t *n)
{
    assert_int_equal(tok_encode(t, s, strlen(s), 0, special, ids, n, NULL), LPK_OK);
}

/* A copy of m's tokenizer metadata with n_add tokens appended (score -1000). */
static lpk_meta *with_added_tokens(const lpk_meta *m, const char *const *add,
                                   const int32_t *add_types, size_t n_add)
{
    const lpk_kv *tk = lpk_meta_find(m, "tokenizer.ggml.tokens");
    const lpk_kv *ty = lpk_meta_find(m, "tokenizer.ggml.token_type");
    const lpk_kv *sc = lpk_meta_find(m, "tokenizer.ggml.scores");
    size_t n = (size_t)tk->count;
    const char **strs = malloc((n + n_add) * sizeof *strs);
    int32_t *types = malloc((n + n_add) * sizeof *types);
    float *scores = malloc((n + n_add) * sizeof *scores);
    for (size_t i = 0; i < n; i++) {
        strs[i] = strndup(lpk_kv_str_at(tk, i).p, (size_t)lpk_kv_str_at(tk, i).n);
        memcpy(&types[i], (const uint8_t *)ty->data + 4 * i, 4);
        memcpy(&scores[i], (const uint8_t *)sc->data + 4 * i, 4);
    }
    for (size_t i = 0; i < n_add; i++) {
        strs[n + i] = add[i];
        types[n + i] = add_types[i];
        scores[n + i] = -1000;
    }
    lpk_meta *m2 = lpk_meta_new();
    assert_int_equal(lpk_meta_copy(m2, m), 0);
    assert_int_equal(lpk_meta_set_str_arr(m2, "tokenizer.ggml.tokens", strs, NULL, n + n_add), 0);
    assert_int_equal(lpk_meta_set_arr(m2, "tokenizer.ggml.token_type", LPK_V_I32, types,
                                      n + n_add), 0);
    assert_int_equal(lpk_meta_set_arr(m2, "tokenizer.ggml.scores", LPK_V_F32, scores, n + n_add),
                     0);
    for (size_t i = 0; i < n; i++) free((char *)strs[i]);
    free(strs);
    free(types);
    free(scores);
    return m2;
}

static void test_special_partition(void **state)
{
    (void)state;
    TU_NEED_SHARED(model, "models/stories260K/hf/tokenizer.model");
    lpk_meta *m = lpk_meta_new();
    assert_int_equal(tok_load(model, m, NULL), LPK_OK);
    size_t n = (size_t)lpk_meta_find(m, "tokenizer.ggml.tokens")->count;
    /* two added tokens: user-defined "▁<PRE>" (n) and control "<EOT>" (n + 1) */
    static const char *const add[] = {"\xe2\x96\x81<PRE>", "<EOT>"};
    static const int32_t add_types[] = {4, 3};
    lpk_meta *m2 = with_added_tokens(m, add, add_types, 2);
    tok_tokenizer *base, *ext;
    assert_int_equal(tok_tokenizer_new(m, &base, NULL), LPK_OK);
    assert_int_equal(tok_tokenizer_new(m2, &ext, NULL), LPK_OK);
    int32_t *a, *b, *c;
    size_t na, nb, nc;
    /* " <PRE>" is plain text: the same ids as without the added tokens */
    encode_ids(ext, "a <PRE> b", 0, &a, &na);
    encode_ids(base, "a <PRE> b", 0, &b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    free(a);
    free(b);
    /* the literal token text splits (user-defined: even without parse_special):
     * "a" | ▁<PRE> | " b", the dummy prefix again after the special token */
    encode_ids(ext, "a\xe2\x96\x81<PRE> b", 0, &a, &na);
    encode_ids(base, "a", 0, &b, &nb);
    encode_ids(base, " b", 0, &c, &nc); /* " b" with the dummy prefix: U+2581 U+2581 b */
    assert_int_equal(na, nb + 1 + nc);
    assert_memory_equal(a, b, nb * sizeof *a);
    assert_int_equal(a[nb], (int32_t)n);
    assert_memory_equal(a + nb + 1, c, nc * sizeof *a);
    free(a);
    free(b);
    free(c);
    /* control text splits only with parse_special */
    encode_ids(ext, "x<EOT>", 0, &a, &na);
    for (size_t i = 0; i < na; i++) assert_true(a[i] != (int32_t)n + 1);
    free(a);
    encode_ids(ext, "x<EOT>", 1, &a, &na);
    assert_int_equal(a[na - 1], (int32_t)n + 1);
    free(a);
    tok_tokenizer_free(base);
    tok_tokenizer_free(ext);
    lpk_meta_free(m);
    lpk_meta_free(m2);
}

/* Encoding in pieces (tok_cut_point, tok_encode_cont): at every place the cut
 * rule allows, the ids of the part before (with BOS) followed by those of the
 * part after equal the whole text's; on texts built to be hard: runs of
 * newlines and spaces, CR LF, punctuation and digits against newlines,
 * contractions, multi-byte and broken UTF-8 just before a newline, U+2581. */
static const char *const hard_parts[] = {
    "a\n", "\n\n", " \n", "  \nb", "\r\n", "!!\n\n", "x\nY", "'s\nt", "123\n456", "\xc3\xa9\n",
    "\xe2\x96\x81\n", "\xf0\x9f\x98\x80\nq", "\xf0" "ab\nX", "\x80\nz", "\xe2\n!", "\t\n", "  ",
    " the", "Hello", ",", "\n", ".\n", "x", "ab\ncd", "\n ", "\xe2\x96\x81", "'ll", "1234567",
    " \xc3\xa9t\xc3\xa9", "?!\n", "\n\nThe", "-\n-", "\xc3\n", "x\n\xc3\xa9"};

static char *hard_text(unsigned seed, size_t parts, size_t *n)
{
    size_t cap = parts * 16 + 1, len = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < parts; i++) {
        seed = seed * 1103515245u + 12345u;
        const char *p = hard_parts[(seed >> 16) % (sizeof hard_parts / sizeof *hard_parts)];
        size_t k = strlen(p);
        assert_true(len + k < cap);
        memcpy(s + len, p, k);
        len += k;
    }
    *n = len;
    return s;
}

/* Every cut the rule allows in text[0..n); returns how many were checked. */
static size_t check_cuts(const tok_tokenizer *t, const char *text, size_t n)
{
    int32_t *w, *a, *b;
    size_t nw, na, nb, checked = 0;
    assert_int_equal(tok_encode(t, text, n, 1, 0, &w, &nw, NULL), LPK_OK);
    for (size_t p = 3; p < n; p++) {
        if (tok_cut_point(t, text, p + 1) != p) continue;
        assert_int_equal(tok_encode(t, text, p, 1, 0, &a, &na, NULL), LPK_OK);
        assert_int_equal(tok_encode_cont(t, text + p, n - p, 0, &b, &nb, NULL), LPK_OK);
        if (na + nb != nw || memcmp(a, w, na * sizeof *a) || memcmp(b, w + na, nb * sizeof *b))
            fail_msg("cut at %zu of %zu: the parts' ids differ from the whole's", p, n);
        free(a);
        free(b);
        checked++;
    }
    free(w);
    return checked;
}

static void test_cut_points(void **state)
{
    (void)state;
    /* the demo model's tokenizer; Llama 2's and Llama 3's (without ../shared,
     * their stand-ins: the same pre-tokenizers and special pieces) */
    const char *paths[] = {"examples/stories260K/tokenizer.model",
                           "tokenizers/llama2/tokenizer.model", "tokenizers/llama3/tokenizer.json"};
    for (int k = 0; k < 3; k++) {
        int standin = 0;
        char *path = strdup(k ? ts_tokenizer(paths[k], &standin) : paths[k]);
        tok_tokenizer *t = load_tok(path);
        assert_true(tok_tokenizer_can_cut(t));
        size_t checked = 0;
        for (unsigned seed = 1; seed <= 6; seed++) {
            size_t n;
            char *s = hard_text(seed, 300, &n);
            checked += check_cuts(t, s, n);
            free(s);
        }
        print_message("%s%s: %zu cuts checked\n", paths[k], standin ? " (stand-in)" : "",
                      checked);
        assert_true(checked > 100);
        /* the rule's own limits: nothing at the very start, nor where the
         * newline has a space or CR before it, or a space or newline after */
        assert_int_equal(tok_cut_point(t, "ab\ncd", 5), 3);
        assert_int_equal(tok_cut_point(t, "a\ncd", 4), 0);
        assert_int_equal(tok_cut_point(t, "ab \ncd", 6), 0);
        assert_int_equal(tok_cut_point(t, "ab\r\ncd", 6), 0);
        assert_int_equal(tok_cut_point(t, "ab\n cd", 6), 0);
        assert_int_equal(tok_cut_point(t, "ab\n\ncd", 6), 0);
        assert_int_equal(tok_cut_point(t, "ab\n", 3), 0);
        tok_tokenizer_free(t);
        free(path);
    }
    /* a tokenizer the rule is not proven for never cuts: a pre-tokenizer
     * pattern other than Llama 3's or GPT-2's ... */
    tok_tokenizer *t = load_tok("tests/fuzz/corpus_tokenizer/bpe_small.json");
    assert_false(tok_tokenizer_can_cut(t));
    assert_int_equal(tok_cut_point(t, "ab\ncd", 5), 0);
    tok_tokenizer_free(t);
    /* ... and a user-defined token holding a newline */
    lpk_meta *m = lpk_meta_new();
    assert_int_equal(tok_load("examples/stories260K/tokenizer.model", m, NULL), LPK_OK);
    static const char *const add[] = {"b\nc"};
    static const int32_t add_types[] = {4};
    lpk_meta *m2 = with_added_tokens(m, add, add_types, 1);
    assert_int_equal(tok_tokenizer_new(m2, &t, NULL), LPK_OK);
    assert_false(tok_tokenizer_can_cut(t));
    assert_int_equal(tok_cut_point(t, "ab\ncd", 5), 0);
    tok_tokenizer_free(t);
    lpk_meta_free(m);
    lpk_meta_free(m2);
}

/* Corrupt SentencePiece files: each fails with one specific status. */
static void test_spm_corrupt(void **state)
{
    (void)state;
    TU_NEED_SHARED(model, "models/stories260K/hf/tokenizer.model");
    size_t n;
    uint8_t *buf = (uint8_t *)tu_read_file(model, &n);
    lpk_meta *m = lpk_meta_new();
    lpk_error err = {0};
    /* cut in the middle of a piece */
    assert_int_equal(tok_load_mem("cut", buf, 100, m, &err), LPK_ETRUNC);
    assert_non_null(strstr(err.msg, "cut"));
    /* a piece whose length swallows the next pieces: garbage inside */
    uint8_t *c = malloc(n);
    memcpy(c, buf, n);
    c[1] = 0x7f;
    lpk_error_clear(&err);
    assert_int_equal(tok_load_mem("len", c, n, m, &err), LPK_ECORRUPT);
    /* an endless varint */
    memset(c, 0xff, 16);
    lpk_error_clear(&err);
    assert_int_equal(tok_load_mem("varint", c, 16, m, &err), LPK_ECORRUPT);
    /* wire types 3/4 (groups) */
    static const uint8_t grp[] = {0x0b};
    lpk_error_clear(&err);
    assert_int_equal(tok_load_mem("grp", grp, 1, m, &err), LPK_ECORRUPT);
    /* no pieces at all */
    static const uint8_t empty_spec[] = {0x12, 0x00};
    lpk_error_clear(&err);
    assert_int_equal(tok_load_mem("nopieces", empty_spec, 2, m, &err), LPK_ECORRUPT);
    /* tiktoken with a repeated rank and bad base64 */
    static const char tk1[] = "IQ== 0\nIg== 0\n", tk2[] = "IQ== 0\nI!== 1\n";
    lpk_error_clear(&err);
    assert_int_equal(tok_load_mem("tk1", (const uint8_t *)tk1, strlen(tk1), m, &err),
                     LPK_ECORRUPT);
    lpk_error_clear(&err);
    assert_int_equal(tok_load_mem("tk2", (const uint8_t *)tk2, strlen(tk2), m, &err),
                     LPK_ECORRUPT);
    /* tokenizer.json that is not BPE */
    static const char wp[] = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    lpk_error_clear(&err);
    assert_int_equal(tok_load_mem("wp", (const uint8_t *)wp, strlen(wp), m, &err),
                     LPK_EUNSUPPORTED);
    lpk_error_clear(&err);
    assert_int_equal(tok_load("/nonexistent/tokenizer.model", m, &err), LPK_EIO);
    free(c);
    free(buf);
    lpk_meta_free(m);
}

/* Metadata without the keys a tokenizer needs. */
static void test_tokenizer_meta_errors(void **state)
{
    (void)state;
    lpk_meta *m = lpk_meta_new();
    tok_tokenizer *t = (tok_tokenizer *)1;
    lpk_error err = {0};
    assert_int_equal(tok_tokenizer_new(m, &t, &err), LPK_ENOTFOUND);
    assert_null(t);
    lpk_meta_set_str(m, "tokenizer.ggml.model", "bert");
    lpk_error_clear(&err);
    assert_int_equal(tok_tokenizer_new(m, &t, &err), LPK_EUNSUPPORTED);
    lpk_meta_set_str(m, "tokenizer.ggml.model", "llama");
    lpk_error_clear(&err);
    assert_int_equal(tok_tokenizer_new(m, &t, &err), LPK_ENOTFOUND);
    const char *toks[] = {"<unk>", "a", "\xe2\x96\x81"};
    lpk_meta_set_str_arr(m, "tokenizer.ggml.tokens", toks, NULL, 3);
    float sc[2] = {0, 0};
    lpk_meta_set_arr(m, "tokenizer.ggml.scores", LPK_V_F32, sc, 2);
    lpk_error_clear(&err);
    assert_int_equal(tok_tokenizer_new(m, &t, &err), LPK_ECORRUPT);
    lpk_meta_remove(m, "tokenizer.ggml.scores");
    lpk_meta_set_u32(m, "tokenizer.ggml.unknown_token_id", 0);
    assert_int_equal(tok_tokenizer_new(m, &t, &err), LPK_OK);
    /* no byte tokens: unknown characters become <unk> */
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(t, "a b", 3, 0, 0, &ids, &n, &err), LPK_OK);
    static const int32_t want[] = {2, 1, 2, 0}; /* ▁ a ▁ <unk> */
    assert_int_equal(n, 4);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    assert_int_equal(tok_encode(t, "a", 1, 1, 0, &ids, &n, &err), LPK_ENOTFOUND);
    tok_tokenizer_free(t);
    lpk_meta_free(m);
}

/* convert/'s metadata from tokenizer.model equals what llama.cpp's converter
 * wrote into GGUF files from the same tokenizer (tokens, scores, types, ids). */
static void compare_with_gguf(const char *model, const char *gguf)
{
    lpk_meta *m = lpk_meta_new();
    lpk_error err = {0};
    assert_int_equal(tok_load(model, m, &err), LPK_OK);
    lpk_reader *r = NULL;
    int rc = lpk_reader_open(gguf, &r, &err);
    if (rc) print_message("%s\n", err.msg);
    assert_int_equal(rc, LPK_OK);
    const lpk_meta *g = lpk_reader_meta(r);
    assert_string_equal(lpk_meta_get_str(g, "tokenizer.ggml.model"),
                        lpk_meta_get_str(m, "tokenizer.ggml.model"));
    static const char *const arrays[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                         "tokenizer.ggml.token_type"};
    for (int k = 0; k < 3; k++) {
        const lpk_kv *a = lpk_meta_find(m, arrays[k]), *b = lpk_meta_find(g, arrays[k]);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(a->count, b->count);
        assert_int_equal(a->elem, b->elem);
        for (uint64_t i = 0; i < a->count; i++) {
            if (a->elem == LPK_V_STR) {
                lpk_str x = lpk_kv_str_at(a, i), y = lpk_kv_str_at(b, i);
                assert_int_equal(x.n, y.n);
                assert_memory_equal(x.p, y.p, x.n);
            } else {
                assert_memory_equal((const char *)a->data + 4 * i, (const char *)b->data + 4 * i,
                                    4);
            }
        }
    }
    static const char *const ids[] = {"tokenizer.ggml.bos_token_id",
                                      "tokenizer.ggml.eos_token_id",
                                      "tokenizer.ggml.unknown_token_id"};
    for (int k = 0; k < 3; k++) {
        uint32_t a, b;
        if (lpk_meta_get_u32(g, ids[k], &b)) continue;
        assert_int_equal(lpk_meta_get_u32(m, ids[k], &a), LPK_OK);
        assert_int_equal(a, b);
    }
    int x, y;
    if (lpk_meta_get_bool(g, "tokenizer.ggml.add_space_prefix", &y) == LPK_OK) {
        assert_int_equal(lpk_meta_get_bool(m, "tokenizer.ggml.add_space_prefix", &x), LPK_OK);
        assert_int_equal(x, y);
    }
    lpk_reader_close(r);
    lpk_meta_free(m);
}

static void test_spm_matches_gguf(void **state)
{
    (void)state;
    TU_NEED_SHARED(g1, "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
    char *gguf = strdup(g1);
    TU_NEED_SHARED(m1, "tokenizers/llama2/tokenizer.model");
    compare_with_gguf(m1, gguf);
    free(gguf);
    TU_NEED_SHARED(g2, "gguf/stories260K-f32.gguf");
    gguf = strdup(g2);
    TU_NEED_SHARED(m2, "models/stories260K/hf/tokenizer.model");
    compare_with_gguf(m2, gguf);
    /* llama2.c's own tokenizer.bin of the same model gives the same metadata */
    TU_NEED_SHARED(m3, "models/stories260K/llama2c/tok512.bin");
    compare_with_gguf(m3, gguf);
    /* and the GGUF's own metadata encodes llama.cpp's test set */
    free(gguf);
    TU_NEED_SHARED(g3, "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
    gguf = strdup(g3);
    lpk_reader *r = NULL;
    tok_tokenizer *t = NULL;
    assert_int_equal(lpk_reader_open(gguf, &r, NULL), LPK_OK);
    assert_int_equal(tok_tokenizer_new(lpk_reader_meta(r), &t, NULL), LPK_OK);
    lpk_reader_close(r);
    TU_NEED_SHARED(inp, "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf.inp");
    run_cases(t, inp, 1);
    tok_tokenizer_free(t);
    free(gguf);
}

/* A SentencePiece model as a SentencePiece-style tokenizer.json (what Hugging
 * Face's LlamaConverter writes: vocab, byte_fallback, merges of every split of a
 * piece into two pieces, in piece order, no pre-tokenizer) encodes like
 * tokenizer.model does: stories260K's (the demo model's) on the TinyStories
 * sample always, Llama 2's on llama.cpp's test set when ../shared has them. */
static int32_t piece_find(const lpk_kv *toks, const int32_t *tab, size_t mask, const char *s,
                          size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        if (tab[i] < 0) return -1;
        lpk_str t = lpk_kv_str_at(toks, (uint64_t)tab[i]);
        if (t.n == n && !memcmp(t.p, s, n)) return tab[i];
    }
}

typedef struct merge_ent {
    float score;      /* of the merged piece */
    uint32_t seq;     /* order found: piece id, then split position */
    int32_t id, k;    /* merged piece, length of its left half */
} merge_ent;

static int cmp_merge_score(const void *a, const void *b)
{
    const merge_ent *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* The tokenizer.json form of the SentencePiece model at path, loaded (its
 * metadata in *hm_out, to free after the tokenizer). */
static tok_tokenizer *spm_as_json(const char *model, lpk_meta **hm_out)
{
    lpk_meta *m = lpk_meta_new();
    assert_int_equal(tok_load(model, m, NULL), LPK_OK);
    const lpk_kv *toks = lpk_meta_find(m, "tokenizer.ggml.tokens");
    const int32_t *types = lpk_meta_find(m, "tokenizer.ggml.token_type")->data;
    size_t mask = 65535;
    int32_t *tab = malloc((mask + 1) * sizeof *tab);
    memset(tab, 0xff, (mask + 1) * sizeof *tab);
    json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
    for (uint64_t id = 0; id < toks->count; id++) {
        lpk_str t = lpk_kv_str_at(toks, id);
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < t.n; i++) h = (h ^ (uint8_t)t.p[i]) * 1099511628211ull;
        size_t i = h & mask;
        while (tab[i] >= 0) i = (i + 1) & mask;
        tab[i] = (int32_t)id;
        json_object_set_new(vocab, t.p, json_integer((json_int_t)id));
        if (types[id] == 3) {
            json_t *a = json_pack("{s:I, s:s, s:b}", "id", (json_int_t)id, "content", t.p,
                                  "special", 1);
            json_array_append_new(added, a);
        }
    }
    /* merges ordered by the score of the merged piece (descending), then by
     * the ids of the halves */
    const float *sc = lpk_meta_find(m, "tokenizer.ggml.scores")->data;
    size_t nm = 0, capm = 1 << 18;
    merge_ent *ml = malloc(capm * sizeof *ml);
    for (uint64_t id = 0; id < toks->count; id++) {
        lpk_str t = lpk_kv_str_at(toks, id);
        for (size_t k = 1; k < t.n; k++) {
            if (((uint8_t)t.p[k] & 0xc0) == 0x80) continue;
            if (piece_find(toks, tab, mask, t.p, k) < 0 ||
                piece_find(toks, tab, mask, t.p + k, t.n - k) < 0)
                continue;
            assert_true(nm < capm);
            ml[nm] = (merge_ent){sc[id], (uint32_t)nm, (int32_t)id, (int32_t)k};
            nm++;
        }
    }
    qsort(ml, nm, sizeof *ml, cmp_merge_score);
    for (size_t i = 0; i < nm; i++) {
        lpk_str t = lpk_kv_str_at(toks, (uint64_t)ml[i].id);
        char *mg = tu_fmt("%.*s %s", ml[i].k, t.p, t.p + ml[i].k);
        json_array_append_new(merges, json_string(mg));
        free(mg);
    }
    free(ml);
    json_t *root = json_pack("{s:o, s:n, s:{s:s, s:b, s:s, s:o, s:o}}", "added_tokens", added,
                             "pre_tokenizer", "model", "type", "BPE", "byte_fallback", 1,
                             "unk_token", "<unk>", "vocab", vocab, "merges", merges);
    char *js = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    lpk_meta *hm = lpk_meta_new();
    lpk_error err = {0};
    int rc = tok_load_mem("tokenizer.json", (const uint8_t *)js, strlen(js), hm, &err);
    if (rc) print_message("%s\n", err.msg);
    assert_int_equal(rc, LPK_OK);
    assert_string_equal(lpk_meta_get_str(hm, "tokenizer.ggml.model"), "llama");
    const int32_t *ht = lpk_meta_find(hm, "tokenizer.ggml.token_type")->data;
    assert_memory_equal(ht, types, toks->count * sizeof *types);
    tok_tokenizer *t = NULL;
    assert_int_equal(tok_tokenizer_new(hm, &t, &err), LPK_OK);
    assert_int_equal(tok_tokenizer_bos(t), 1);
    free(js);
    free(tab);
    lpk_meta_free(m);
    *hm_out = hm;
    return t;
}

static void test_spm_style_json(void **state)
{
    (void)state;
    TU_NEED_SHARED(txt, "text/TinyStories-valid-sample.txt");
    char *text = strdup(txt);
    lpk_meta *hm = NULL;
    tok_tokenizer *j = spm_as_json("examples/stories260K/tokenizer.model", &hm),
                  *t = load_tok("examples/stories260K/tokenizer.model");
    int32_t *a, *b;
    assert_int_equal(count_file(t, text, 0, &a), 15555);
    assert_int_equal(count_file(j, text, 0, &b), 15555);
    static const int32_t want[] = {1, 353, 331, 407, 261, 378, 383, 286, 261, 376, 298, 315};
    assert_memory_equal(b, want, sizeof want);
    assert_memory_equal(a, b, 15555 * sizeof *a);
    free(a);
    free(b);
    tok_tokenizer_free(j);
    tok_tokenizer_free(t);
    lpk_meta_free(hm);
    free(text);
    char *mp = tu_shared_dup("tokenizers/llama2/tokenizer.model"),
         *ip = tu_shared_dup("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf.inp");
    if (!mp || !ip) {
        print_message("NOTE: ../shared/tokenizers not found: Llama 2's not checked\n");
        free(mp);
        free(ip);
        return;
    }
    j = spm_as_json(mp, &hm);
    run_cases(j, ip, 1);
    tok_tokenizer_free(j);
    lpk_meta_free(hm);
    free(ip);
    free(mp);
}

/* Small byte-level tokenizer.json files (the fuzz seeds): merges as "a b"
 * strings and as [a, b] pairs give the same metadata; a non-special added
 * token splits the text even without parse_special; TemplateProcessing names
 * BOS. */
static void test_bpe_small_json(void **state)
{
    (void)state;
    static const char *const files[] = {"tests/fuzz/corpus_tokenizer/bpe_small.json",
                                        "tests/fuzz/corpus_tokenizer/bpe_pairs.json"};
    lpk_meta *m[2];
    for (int f = 0; f < 2; f++) {
        m[f] = lpk_meta_new();
        lpk_error err = {0};
        int rc = tok_load(files[f], m[f], &err);
        if (rc) print_message("%s\n", err.msg);
        assert_int_equal(rc, LPK_OK);
        tok_tokenizer *t = NULL;
        assert_int_equal(tok_tokenizer_new(m[f], &t, &err), LPK_OK);
        assert_int_equal(tok_tokenizer_bos(t), 267);
        int32_t *ids;
        size_t n;
        assert_int_equal(tok_encode(t, "hello world<s>", 14, 1, 0, &ids, &n, &err), LPK_OK);
        static const int32_t want[] = {267, 259, 32, 119, 111, 114, 108, 100, 267};
        assert_int_equal(n, 9);
        assert_memory_equal(ids, want, sizeof want);
        free(ids);
        /* a control token is text unless parse_special */
        assert_int_equal(tok_encode(t, "<|eot_id|>", 10, 0, 0, &ids, &n, &err), LPK_OK);
        assert_true(n > 1);
        free(ids);
        assert_int_equal(tok_encode(t, "<|eot_id|>", 10, 0, 1, &ids, &n, &err), LPK_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], 265);
        free(ids);
        tok_tokenizer_free(t);
    }
    const lpk_kv *a = lpk_meta_find(m[0], "tokenizer.ggml.merges");
    const lpk_kv *b = lpk_meta_find(m[1], "tokenizer.ggml.merges");
    assert_int_equal(a->count, 6);
    assert_int_equal(b->count, 6);
    for (uint64_t i = 0; i < a->count; i++)
        assert_string_equal(lpk_kv_str_at(a, i).p, lpk_kv_str_at(b, i).p);
    /* token 266 is a hole between the added tokens: an unused [PAD266] */
    const lpk_kv *tk = lpk_meta_find(m[0], "tokenizer.ggml.tokens");
    assert_string_equal(lpk_kv_str_at(tk, 266).p, "[PAD266]");
    assert_int_equal(((const int32_t *)lpk_meta_find(m[0], "tokenizer.ggml.token_type")->data)[266],
                     5);
    lpk_meta_free(m[0]);
    lpk_meta_free(m[1]);
}

/* The CLI on a tokenizer file and on a container carrying its metadata: text
 * and its ids with BOS; a text with a leading space (no BOS, JSON): its token
 * count and the id of the extra space; a piece --pieces prints. */
typedef struct {
    const char *text, *ids, *space_text, *n_space, *space_id, *piece;
} cli_case;

static void check_cli_tokenize(const char *model, const cli_case *c)
{
    char *path = strdup(model);
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "tokenize %s --text '%s'", path, c->text), 0);
    assert_string_equal(out, c->ids);
    free(out);
    assert_int_equal(tu_llmpack(&out, "tokenize %s --text '%s' --no-bos --json", path,
                                c->space_text), 0);
    assert_non_null(strstr(out, c->n_space));
    assert_non_null(strstr(out, c->space_id));
    free(out);
    assert_int_equal(tu_llmpack(&out, "tokenize %s", path), 2);
    free(out);
    assert_int_equal(tu_llmpack(&out, "tokenize /nonexistent.model --text x"), 1);
    free(out);

    /* a container with only the tokenizer metadata */
    char *dir = tu_tmpdir(), *lpk = tu_fmt("%s/tok.lpk", dir);
    lpk_meta *m = lpk_meta_new();
    lpk_error err = {0};
    assert_int_equal(tok_load(path, m, &err), LPK_OK);
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_writer *w = NULL;
    int rc = lpk_writer_open(lpk, m, NULL, 0, 0, &w, &err);
    if (rc) print_message("%s\n", err.msg);
    assert_int_equal(rc, LPK_OK);
    assert_int_equal(lpk_writer_finish(w, &err), LPK_OK);
    assert_int_equal(tu_llmpack(&out, "tokenize %s --text '%s' --pieces", lpk, c->text), 0);
    assert_non_null(strstr(out, c->piece));
    free(out);
    lpk_meta_free(m);
    tu_rmtree(dir);
    free(lpk);
    free(dir);
    free(path);
}

/* stories260K's tokenizer (the demo model's) always: the first 12 ids of the
 * TinyStories sample are ../shared/models/README.md's, from llama2.c's
 * tokenizer; LLaMA-2's when ../shared has it. */
static void test_cli_tokenize(void **state)
{
    (void)state;
    static const cli_case stories = {
        "once upon a time there was a little girl",
        "1 353 331 407 261 378 383 286 261 376 298 315 421\n", " once", "\"n_tokens\": 3",
        "410", "407\t' upon'"};
    check_cli_tokenize("examples/stories260K/tokenizer.model", &stories);
    static const cli_case llama2 = {"Hello world", "1 15043 3186\n", " Hello",
                                    "\"n_tokens\": 2", "29871", "15043\t' Hello'"};
    const char *model = tu_shared("tokenizers/llama2/tokenizer.model");
    if (model) check_cli_tokenize(model, &llama2);
    else print_message("NOTE: ../shared/tokenizers/llama2/tokenizer.model not found: not checked\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_llama2_cases),
        cmocka_unit_test(test_spm_stories260k),
        cmocka_unit_test(test_spm_llama2_20m_texts),
        cmocka_unit_test(test_bpe_llama3_cases),
        cmocka_unit_test(test_tiktoken_llama3),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_special_partition),
        cmocka_unit_test(test_spm_corrupt),
        cmocka_unit_test(test_tokenizer_meta_errors),
        cmocka_unit_test(test_cli_tokenize),
        cmocka_unit_test(test_spm_matches_gguf),
        cmocka_unit_test(test_spm_style_json),
        cmocka_unit_test(test_bpe_small_json),
        cmocka_unit_test(test_cut_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
