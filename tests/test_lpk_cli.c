/* llmpack info / check on golden and corrupt containers: exit codes, text and
 * JSON output (parsed with jansson). */
#include "tutil.h"
#include "tlpk.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <xxhash.h>

#define ALL "tests/golden/all_types.lpk"
#define ZSTD "tests/golden/zstd_meta.lpk"

static json_t *parse(const char *out)
{
    json_error_t je;
    json_t *j = json_loads(out, JSON_ALLOW_NUL, &je);
    if (!j) fail_msg("not JSON (%s): %s", je.text, out);
    return j;
}

static void test_info_text(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(tu_llmpack(&out, "info %s", ALL), 0);
    assert_non_null(strstr(out, "architecture: llama"));
    assert_non_null(strstr(out, "vocab size             4"));
    assert_non_null(strstr(out, "q4_k: 1"));
    assert_non_null(strstr(out, "llama.block_count"));
    assert_null(strstr(out, "token_embd.weight")); /* no tensor list without --tensors */
    free(out);
    assert_int_equal(tu_llmpack(&out, "info --tensors %s", ALL), 0);
    assert_non_null(strstr(out, "blk.0.ffn_down.weight"));
    assert_non_null(strstr(out, "q6_k"));
    free(out);
    /* the token array is summarized, not dumped */
    assert_int_equal(tu_llmpack(&out, "info %s", ZSTD), 0);
    assert_non_null(strstr(out, "vocab size             4200"));
    assert_null(strstr(out, "tok04199"));
    free(out);
}

static void test_info_json(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(tu_llmpack(&out, "info --json %s", ALL), 0);
    json_t *j = parse(out);
    assert_int_equal(json_integer_value(json_object_get(j, "format_version")), 1);
    json_t *meta = json_object_get(j, "metadata");
    assert_string_equal(json_string_value(json_object_get(meta, "general.architecture")), "llama");
    assert_int_equal(json_integer_value(json_object_get(meta, "test.i8")), -7);
    assert_true(json_is_true(json_object_get(meta, "tokenizer.ggml.add_bos_token")));
    json_t *toks = json_object_get(meta, "tokenizer.ggml.tokens");
    assert_int_equal(json_array_size(toks), 4);
    size_t n;
    const char *s = json_string_value(json_array_get(toks, 2));
    n = json_string_length(json_array_get(toks, 2));
    assert_int_equal(n, 3);
    assert_memory_equal(s, "a\0b", 3);
    json_t *tensors = json_object_get(j, "tensors");
    lpk_tensor d[16];
    size_t nt = tl_decls_all_types(d);
    assert_int_equal(json_array_size(tensors), nt);
    uint64_t elems = 0, bytes = 0;
    for (size_t i = 0; i < nt; i++) {
        json_t *t = json_array_get(tensors, i);
        assert_string_equal(json_string_value(json_object_get(t, "name")), d[i].name);
        assert_string_equal(json_string_value(json_object_get(t, "type")),
                            lpk_type_get(d[i].type)->name);
        json_t *shape = json_object_get(t, "shape");
        assert_int_equal(json_array_size(shape), d[i].n_dims);
        for (int k = 0; k < d[i].n_dims; k++)
            assert_int_equal(json_integer_value(json_array_get(shape, k)), d[i].dims[k]);
        uint64_t size = (uint64_t)json_integer_value(json_object_get(t, "size"));
        uint64_t off = (uint64_t)json_integer_value(json_object_get(t, "offset"));
        assert_int_equal(off % 64, 0);
        uint8_t *want = malloc(size);
        for (uint64_t q = 0; q < size; q++) want[q] = tl_byte(i, q);
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(want, size));
        free(want);
        assert_string_equal(json_string_value(json_object_get(t, "xxh3")), hex);
        elems += lpk_tensor_nelems(&d[i]);
        bytes += size;
    }
    size_t flen;
    free(tu_read_file(ALL, &flen));
    assert_int_equal(json_integer_value(json_object_get(j, "file_size")), flen);
    double bpw = json_number_value(json_object_get(j, "bits_per_weight"));
    assert_true(bpw > 8.0 * (double)bytes / (double)elems - 1e-9 &&
                bpw < 8.0 * (double)bytes / (double)elems + 1e-9);
    json_decref(j);
    free(out);

    /* big arrays are summarized */
    assert_int_equal(tu_llmpack(&out, "info --json %s", ZSTD), 0);
    j = parse(out);
    toks = json_object_get(json_object_get(j, "metadata"), "tokenizer.ggml.tokens");
    assert_string_equal(json_string_value(json_object_get(toks, "type")), "arr");
    assert_string_equal(json_string_value(json_object_get(toks, "elem")), "str");
    assert_int_equal(json_integer_value(json_object_get(toks, "count")), 4200);
    json_decref(j);
    free(out);
}

static void test_check(void **state)
{
    (void)state;
    char *out;
    /* the golden file's byte patterns hold NaN/Inf bit patterns in its f32 tensors */
    assert_int_equal(tu_llmpack(&out, "check %s", ALL), 3);
    assert_non_null(strstr(out, "token_embd.weight: NaN at row 0, column 2"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "check %s --json", ZSTD), 0);
    json_t *j = parse(out);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_int_equal(json_integer_value(json_object_get(j, "tensors_checked")), 1);
    json_decref(j);
    free(out);

    /* corrupt copies: a flipped data byte, a flipped metadata byte, a truncation */
    char *dir = tu_tmpdir();
    size_t len;
    char *b = tu_read_file(ALL, &len);
    char *p = tu_fmt("%s/flip.lpk", dir);
    lpk_reader *gr;
    assert_int_equal(lpk_reader_open(ALL, &gr, NULL), 0);
    const lpk_tensor *t0 = lpk_reader_tensor(gr, 0);
    uint64_t off0 = t0->offset, size0 = t0->size;
    assert_string_equal(t0->name, "token_embd.weight");
    lpk_reader_close(gr);
    b[off0 + 5] ^= 1; /* inside token_embd.weight: its checksum fails before its NaN */
    tu_write_file(p, b, len);
    assert_int_equal(tu_llmpack(&out, "check %s", p), 3);
    char *want = tu_fmt("tensor 'token_embd.weight' (offset %llu, %llu bytes): xxh3 expected",
                        (unsigned long long)off0, (unsigned long long)size0);
    assert_non_null(strstr(out, want));
    free(want);
    free(out);
    assert_int_equal(tu_llmpack(&out, "check --json %s", p), 3);
    j = parse(out);
    assert_true(json_is_false(json_object_get(j, "ok")));
    assert_string_equal(json_string_value(json_object_get(j, "status")), "checksum");
    assert_string_equal(json_string_value(json_object_get(j, "tensor")), "token_embd.weight");
    assert_int_equal(json_integer_value(json_object_get(j, "offset")), off0);
    json_decref(j);
    free(out);
    b[off0 + 5] ^= 1;
    char *arch = memmem(b, len, "llama", 5);
    arch[0] = 'L';
    tu_write_file(p, b, len);
    /* every command that opens a container checks the header first... */
    assert_int_equal(tu_llmpack(&out, "info %s", p), 3);
    assert_non_null(strstr(out, "header+metadata+directory"));
    free(out);
    /* ...unless told not to (and check always does) */
    assert_int_equal(tu_llmpack(&out, "info --no-verify-checksums %s", p), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "check --no-verify-checksums %s", p), 3);
    assert_non_null(strstr(out, "header+metadata+directory"));
    free(out);
    tu_write_file(p, b, 300);
    assert_int_equal(tu_llmpack(&out, "check %s", p), 3);
    assert_non_null(strstr(out, "truncated in the metadata"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "info --json %s", p), 3);
    free(out);
    assert_int_equal(tu_llmpack(&out, "check --json %s", p), 3);
    j = parse(out);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "truncated");
    json_decref(j);
    free(out);
    free(p);
    free(b);
    tu_rmtree(dir);
    free(dir);
}

static void test_usage(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(tu_llmpack(&out, "info --help"), 0);
    assert_non_null(strstr(out, "usage: llmpack info"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "check --help"), 0);
    assert_non_null(strstr(out, "usage: llmpack check"));
    /* the exit codes it promises, each checked below */
    assert_non_null(strstr(out, "3 the file has a problem"));
    assert_non_null(strstr(out, "1 it does not exist or cannot be read (not a\nregular file"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "info --bogus %s", ALL), 2);
    assert_non_null(strstr(out, "--bogus"));
    free(out);
    assert_int_equal(tu_llmpack(&out, "check -x %s", ALL), 2);
    free(out);
    assert_int_equal(tu_llmpack(&out, "check"), 2);
    free(out);
    assert_int_equal(tu_llmpack(&out, "info %s %s", ALL, ALL), 2);
    free(out);
    assert_int_equal(tu_llmpack(&out, "check /nonexistent/x.lpk"), 1);
    assert_non_null(strstr(out, "/nonexistent/x.lpk: cannot open"));
    free(out);
    char *dir = tu_tmpdir();
    assert_int_equal(tu_llmpack(&out, "check '%s'", dir), 1);   /* exists, not a file */
    assert_non_null(strstr(out, "not a regular file"));
    free(out);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_text),
        cmocka_unit_test(test_info_json),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
