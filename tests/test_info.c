/* llmpack info in words (the "summary" of --json and its text lines) on real
 * files: the demo model converted and quantized (examples/, or ../shared), and
 * llama.cpp's GGUF files in ../shared when present; the names convert and
 * quantize give (general.name). */
#include "tutil.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static json_t *summary(const char *path, char **text)
{
    char *out = NULL;
    int rc = tu_llmpack(&out, "info --json '%s'", path);
    if (rc) fail_msg("info --json %s: exit %d: %s", path, rc, out ? out : "");
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (!j) fail_msg("not JSON (%s): %s", je.text, out);
    free(out);
    json_t *s = json_incref(json_object_get(j, "summary"));
    json_decref(j);
    if (!json_is_object(s)) fail_msg("%s: no summary object", path);
    assert_int_equal(tu_llmpack(text, "info '%s'", path), 0);
    return s;
}

static const char *str(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) fail_msg("%s is not a string", key);
    return json_string_value(v);
}

static json_t *obj(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_object(v)) fail_msg("%s is not an object", key);
    return v;
}

/* The special token `which`: id and piece. */
static void token_is(const json_t *s, const char *which, long id, const char *piece)
{
    json_t *t = json_object_get(obj(s, "special_tokens"), which);
    if (id < 0) {
        assert_true(json_is_null(t));
        return;
    }
    assert_int_equal(json_integer_value(json_object_get(t, "id")), id);
    assert_string_equal(str(t, "piece"), piece);
}

static void test_demo_model(void **state)
{
    (void)state;
    TU_NEED_SHARED(hf, "models/stories260K/hf-f16");
    char *src = strdup(hf);
    TU_NEED_SHARED(t0, "text/TinyStories-valid-sample.txt");
    char *text = strdup(t0);
    char *dir = tu_tmpdir(), *out = NULL;
    char *f16 = tu_fmt("%s/s.lpk", dir), *q = tu_fmt("%s/q.lpk", dir), *g = tu_fmt("%s/g.lpk", dir);
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' -q", src, f16), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_k_m --calib '%s' "
                                      "--chunks 4 -q", f16, q, text), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 --pure --method gptq "
                                      "--calib '%s' --chunks 4 -q", f16, g, text), 0);
    free(out);

    /* the conversion: f16 by its file type, tied, no quantization record */
    char *t = NULL;
    json_t *s = summary(f16, &t);
    assert_string_equal(str(s, "type"), "F16");
    assert_string_equal(str(s, "type_from"), "file_type");
    assert_true(json_is_true(json_object_get(s, "tied_output")));
    assert_true(json_is_null(json_object_get(s, "output_type")));
    assert_int_equal(json_integer_value(json_object_get(s, "context_length")), 512);
    assert_true(json_number_value(json_object_get(obj(s, "rope"), "freq_base")) == 10000.0);
    assert_true(json_is_null(json_object_get(obj(s, "rope"), "scaling")));
    token_is(s, "bos", 1, "<s>");
    token_is(s, "eos", 2, "</s>");
    token_is(s, "eot", -1, NULL);
    assert_true(json_is_false(json_object_get(obj(s, "chat_template"), "present")));
    assert_true(json_is_null(json_object_get(obj(s, "quantization"), "method")));
    assert_non_null(strstr(t, "type:         F16 (from general.file_type)"));
    assert_non_null(strstr(t, "output:       tied (the token embedding is the output matrix)"));
    assert_non_null(strstr(t, "context:      512 tokens"));
    assert_non_null(strstr(t, "rope:         freq base 10000.0, scaling none"));
    assert_non_null(strstr(t, "special:      bos 1 \"<s>\", eos 2 \"</s>\", eot none, pad none"));
    assert_non_null(strstr(t, "chat template: no"));
    assert_non_null(strstr(t, "quantized:    no record of how"));
    json_decref(s);
    free(t);

    /* Q4_K_M with an importance matrix from --calib: the recipe by name, rtn */
    s = summary(q, &t);
    assert_string_equal(str(s, "type"), "Q4_K_M");
    assert_string_equal(str(s, "type_from"), "recipe");
    json_t *qz = obj(s, "quantization");
    assert_string_equal(str(qz, "recipe"), "q4_k_m");
    assert_string_equal(str(qz, "method"), "rtn");
    assert_true(json_is_false(json_object_get(qz, "pure")));
    assert_int_equal(strlen(str(obj(qz, "imatrix"), "hash")), 16);
    assert_true(json_is_null(json_object_get(qz, "gptq")));
    assert_non_null(strstr(t, "type:         Q4_K_M (the recipe quantize recorded)"));
    assert_non_null(strstr(t, "quantized:    method rtn, recipe q4_k_m; imatrix: hash \""));
    json_decref(s);
    free(t);

    /* pure q4_0 by GPTQ: its calibration keys */
    s = summary(g, &t);
    assert_string_equal(str(s, "type"), "Q4_0");
    qz = obj(s, "quantization");
    assert_string_equal(str(qz, "method"), "gptq");
    assert_true(json_is_true(json_object_get(qz, "pure")));
    json_t *gp = obj(qz, "gptq");
    assert_int_equal(json_integer_value(json_object_get(gp, "chunks")), 4);
    assert_int_equal(strlen(str(gp, "calib_xxh3")), 16);
    assert_non_null(strstr(t, "quantized:    method gptq, recipe q4_0 (pure); gptq: "));
    json_decref(s);
    free(t);

    /* a chat template (tokenizer_config.json's): present, its length */
    char *ct = tu_fmt("%s/ct", dir), *cm = tu_fmt("%s/ct.lpk", dir);
    char *cmd = tu_fmt("mkdir -p '%s' && cp '%s'/* '%s'/", ct, src, ct);
    assert_int_equal(system(cmd), 0);
    static const char tc[] = "{\"chat_template\": \"{% for m in messages %}{{ m.content }}{% endfor %}\"}";
    char *tp = tu_fmt("%s/tokenizer_config.json", ct);
    assert_int_equal(tu_write_file(tp, tc, strlen(tc)), 0);
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' -q", ct, cm), 0);
    free(out);
    s = summary(cm, &t);
    json_t *cj = obj(s, "chat_template");
    assert_true(json_is_true(json_object_get(cj, "present")));
    assert_int_equal(json_integer_value(json_object_get(cj, "bytes")),
                     strlen("{% for m in messages %}{{ m.content }}{% endfor %}"));
    assert_non_null(strstr(t, "chat template: yes (50 bytes)"));
    json_decref(s);
    free(t);
    free(ct); free(cm); free(cmd); free(tp);

    free(f16); free(q); free(g); free(src); free(text);
    tu_rmtree(dir);
    free(dir);
}

/* llama.cpp's files: the type from general.file_type, an untied output of
 * llama2-20m, its context and rope. */
static void test_llama_cpp_gguf(void **state)
{
    (void)state;
    TU_NEED_SHARED(q, "gguf/stories260K-Q4_K_M.gguf");
    char *t = NULL;
    json_t *s = summary(q, &t);
    assert_string_equal(str(s, "type"), "Q4_K_M");
    assert_string_equal(str(s, "type_from"), "file_type");
    assert_true(json_is_true(json_object_get(s, "tied_output")));
    token_is(s, "bos", 1, "<s>");
    assert_non_null(strstr(t, "type:         Q4_K_M (from general.file_type)"));
    json_decref(s);
    free(t);
    TU_NEED_SHARED(l, "gguf/llama2-20m-Q8_0.gguf");
    s = summary(l, &t);
    assert_string_equal(str(s, "type"), "Q8_0");
    assert_true(json_is_false(json_object_get(s, "tied_output")));
    assert_string_equal(str(s, "output_type"), "q8_0");
    assert_non_null(strstr(t, "output:       own matrix output.weight (q8_0)"));
    json_decref(s);
    free(t);
}

/* general.name of info's "architecture:" line */
static char *model_name(const char *path)
{
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "info --json '%s'", path), 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (!j) fail_msg("not JSON: %s", out);
    const char *n = json_string_value(json_object_get(json_object_get(j, "metadata"),
                                                      "general.name"));
    char *r = n ? strdup(n) : NULL;
    json_decref(j);
    free(out);
    return r;
}

/* `export IN -o OUT opts` succeeds and OUT's general.name is want */
static void export_named(const char *in, const char *out_path, const char *opts, const char *want)
{
    char *out = NULL;
    if (tu_llmpack(&out, "export '%s' -o '%s' %s -q", in, out_path, opts))
        fail_msg("export %s %s: %s", in, opts, out ? out : "");
    free(out);
    char *n = model_name(out_path);
    if (!n || strcmp(n, want))
        fail_msg("export %s: general.name %s, want %s", opts, n ? n : "(none)", want);
    free(n);
}

/* convert's general.name: --name, else the folder's name (Hugging Face's
 * cache layout: the repository's), else config.json's _name_or_path when the
 * folder's name is a generic one; a fine-tune's folder wins over the base
 * model its config names. */
static void test_names(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *out = NULL;
    char *cfg = tu_read_file("examples/stories260K/config.json", NULL);
    assert_non_null(cfg);
    char *named = tu_fmt("{\n  \"_name_or_path\": \"some-org/Base-Model-7b/\",%s", strchr(cfg, '{') + 1);
    static const struct { const char *folder; int with_path; const char *want; } cases[] = {
        {"models--some-org--Tiny-Llama/snapshots/0123abcd", 0, "Tiny-Llama"},
        {"model", 1, "Base-Model-7b"},
        {"0123456789abcdef0123", 1, "Base-Model-7b"},
        {"my-finetune", 1, "my-finetune"},
        {"model", 0, "model"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *src = tu_fmt("%s/c%zu/%s", dir, i, cases[i].folder);
        char *cmd = tu_fmt("mkdir -p '%s' && cp examples/stories260K/model.safetensors "
                           "examples/stories260K/tokenizer.model '%s'/", src, src);
        assert_int_equal(system(cmd), 0);
        free(cmd);
        char *c = tu_fmt("%s/config.json", src);
        const char *body = cases[i].with_path ? named : cfg;
        assert_int_equal(tu_write_file(c, body, strlen(body)), 0);
        char *o = tu_fmt("%s/c%zu.lpk", dir, i);
        if (tu_llmpack(&out, "convert '%s' -o '%s' -q", src, o))
            fail_msg("convert %s: %s", src, out);
        free(out);
        char *n = model_name(o);
        if (!n || strcmp(n, cases[i].want))
            fail_msg("%s: general.name %s, expected %s", cases[i].folder, n ? n : "(none)",
                     cases[i].want);
        free(n);
        free(c); free(o); free(src);
    }
    /* --name wins, also through quantize --type in the same pass and a GGUF output */
    char *o = tu_fmt("%s/n.gguf", dir);
    assert_int_equal(tu_llmpack(&out, "convert examples/stories260K -o '%s' --type q8_0 "
                                      "--name 'Stories 260K chat' -q", o), 0);
    free(out);
    char *n = model_name(o);
    assert_string_equal(n, "Stories 260K chat");
    free(n);
    /* quantize --name renames; without it the input's name is kept */
    char *q1 = tu_fmt("%s/q1.lpk", dir), *q2 = tu_fmt("%s/q2.lpk", dir);
    char *c0 = tu_fmt("%s/c0.lpk", dir);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 --name Tiny-Q4 -q", c0,
                                q1), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 -q", c0, q2), 0);
    free(out);
    n = model_name(q1);
    assert_string_equal(n, "Tiny-Q4");
    free(n);
    n = model_name(q2);
    assert_string_equal(n, "Tiny-Llama");
    free(n);
    /* export --name renames, to GGUF and to a container (and only the name:
     * the tensors are the input's); without it the name is kept */
    char *e1 = tu_fmt("%s/e1.gguf", dir), *e2 = tu_fmt("%s/e2.lpk", dir);
    char *e3 = tu_fmt("%s/e3.gguf", dir), *e0 = tu_fmt("%s/e0.lpk", dir);
    export_named(q1, e1, "--name 'Tiny Q4 (GGUF)'", "Tiny Q4 (GGUF)");
    export_named(e1, e2, "--name=Tiny-Q4-again", "Tiny-Q4-again");
    export_named(e2, e3, "", "Tiny-Q4-again");
    export_named(q1, e0, "--name Other", "Other");
    char why[256];
    if (tu_lpk_same_tensors(q1, e0, why, sizeof why)) fail_msg("export --name: %s", why);
    assert_int_equal(tu_llmpack(&out, "export '%s' -o '%s/e4.gguf' --name=", q1, dir), 2);
    assert_non_null(strstr(out, "--name wants a non-empty name"));
    free(out);
    free(e0); free(e1); free(e2); free(e3);
    free(q1); free(q2); free(c0);
    assert_int_equal(tu_llmpack(&out, "convert examples/stories260K -o '%s/x.lpk' --name=", dir), 2);
    assert_non_null(strstr(out, "--name"));
    free(out);
    free(o); free(named); free(cfg);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_model),
        cmocka_unit_test(test_llama_cpp_gguf),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
