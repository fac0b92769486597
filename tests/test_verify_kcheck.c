/* llmpack verify on llama.cpp's kernel-check files (../shared/gguf, written by
 * llama-quantize --pure in q5_k, q3_k, q2_k, iq4_nl, iq4_xs): our int8 path on
 * GGML's own blocks against the PPL llama-perplexity computes on the same files
 * (../shared/gguf/README.md: TinyStories-valid-sample.txt, ctx 128, all 121
 * chunks). The fast tier runs iq4_nl; make test-long runs all five. */
#include "tutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static double run_ppl(const char *model, const char *text)
{
    char *out = NULL;
    int rc = tu_llmpack(&out, "verify '%s' --text '%s' --ctx 128 -q --json", model, text);
    if (rc != 0) fail_msg("verify %s exited %d: %s", model, rc, out ? out : "");
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (!j) fail_msg("not JSON: %s", out);
    const json_t *v = json_object_get(j, "ppl");
    const json_t *c = json_object_get(j, "chunks");
    assert_true(json_is_number(v) && json_is_integer(c));
    assert_int_equal(json_integer_value(c), 121);
    double ppl = json_number_value(v);
    json_decref(j);
    free(out);
    return ppl;
}

static void test_kernel_check_ppl(void **state)
{
    (void)state;
    /* llama.cpp b4748's llama-perplexity on each file (the README's table) and
     * how far ours may be from it */
    static const struct { const char *t; double ppl, tol; int fast; } f[] = {
        {"IQ4_NL", 819.1755, 0.001, 1}, {"Q3_K", 830.0697, 0.001, 0},
        {"Q5_K", 820.5333, 0.001, 0},   {"IQ4_XS", 820.9034, 0.002, 0},
        {"Q2_K", 853.9672, 0.002, 0},
    };
    TU_NEED_SHARED(text, "text/TinyStories-valid-sample.txt");
    char *tp = strdup(text);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!f[i].fast && !tu_long()) continue;
        char *rel = tu_fmt("gguf/kernel-check-%s.gguf", f[i].t);
        const char *p = tu_shared(rel);
        if (!p) {
            print_message("SKIP: ../shared/%s not found\n", rel);
            free(rel);
            continue;
        }
        double ppl = run_ppl(p, tp);
        double d = ppl / f[i].ppl - 1.0;
        print_message("kernel-check-%-6s llmpack %.4f llama.cpp %.4f (%+.3f%%)\n", f[i].t, ppl,
                      f[i].ppl, 100.0 * d);
        assert_true(fabs(d) <= f[i].tol);
        free(rel);
    }
    free(tp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_check_ppl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
