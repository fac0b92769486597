/* quant/ recipes: the type every tensor gets, against llama.cpp's
 * llama_tensor_get_type. A built-in table covers the rules without ../shared;
 * ../shared/gguf/recipe-types.tsv (what llama-quantize b4748 chose for every
 * tensor of four model shapes, every recipe, with and without an imatrix) is
 * checked row by row. */
#include "tutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../format/lpk.h"
#include "../quant/quant.h"

/* The shapes of recipe-types.tsv (../shared/gguf/README.md) and a few more. */
static const struct {
    const char *name;
    quant_model_shape s;
} shapes[] = {
    {"mha32", {32, 256, 768, 8, 8, 32000, 0}},
    {"gqa32", {32, 256, 768, 8, 1, 32000, 0}},
    {"llama2-20m", {6, 256, 768, 8, 4, 32000, 0}},
    {"stories260K", {5, 64, 172, 8, 4, 512, 1}},
    {"mha16", {16, 256, 768, 8, 8, 1000, 0}},
    {"gqa16", {16, 256, 768, 8, 2, 1000, 0}},
    {"l80", {80, 256, 768, 8, 1, 1000, 0}},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

static const quant_model_shape *shape_find(const char *name)
{
    for (size_t i = 0; i < N_SHAPES; i++)
        if (strcmp(shapes[i].name, name) == 0) return &shapes[i].s;
    return NULL;
}

/* The shape's tensors (malloc'ed), *n their number. */
static lpk_tensor *shape_tensors(const char *name, size_t *n)
{
    const quant_model_shape *s = shape_find(name);
    assert_non_null(s);
    *n = quant_shape_tensors(s, NULL);
    assert_true(*n > 0);
    lpk_tensor *ts = calloc(*n, sizeof *ts);
    assert_int_equal(quant_shape_tensors(s, ts), *n);
    return ts;
}

static size_t find_tensor(const lpk_tensor *ts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0) return i;
    fail_msg("no tensor %s", name);
    return 0;
}

static const char *tn(int type)
{
    const lpk_type_info *ti = lpk_type_get(type);
    return ti ? ti->name : "?";
}

/* ---------------------------------------------------------------- rules */
/* Expected choices, read off llama_tensor_get_type (llama-quant.cpp, b4748):
 * shape, recipe, imatrix, tensor, type (and the type it fell back from, "" if
 * none). mha16/gqa16: 16 layers, so use_more_bits is layers 0,1,4,7,10,13,14,15,
 * n/8 = 2, n/16 = 1. */
static const struct rule_case {
    const char *shape, *recipe;
    int imatrix;
    const char *tensor, *type, *from;
} rule_cases[] = {
    /* output matrix: q6_k unless q8_0; token_embd keeps the base type */
    {"mha16", "q4_k_m", 0, "output.weight", "q6_k", ""},
    {"mha16", "q4_0", 0, "output.weight", "q6_k", ""},
    {"mha16", "q8_0", 0, "output.weight", "q8_0", ""},
    {"mha16", "iq4_nl", 0, "output.weight", "q6_k", ""},
    {"mha16", "q2_k", 0, "output.weight", "q6_k", ""},
    {"mha16", "q2_k", 0, "token_embd.weight", "q2_k", ""},
    {"mha16", "q4_k_m", 0, "token_embd.weight", "q4_k", ""},
    /* Q4_K_M / Q5_K_M: attn_v and ffn_down at q6_k on use_more_bits layers */
    {"mha16", "q4_k_m", 0, "blk.0.attn_v.weight", "q6_k", ""},
    {"mha16", "q4_k_m", 0, "blk.2.attn_v.weight", "q4_k", ""},
    {"mha16", "q4_k_m", 0, "blk.4.attn_v.weight", "q6_k", ""},
    {"mha16", "q4_k_m", 0, "blk.12.attn_v.weight", "q4_k", ""},
    {"mha16", "q4_k_m", 0, "blk.13.attn_v.weight", "q6_k", ""},
    {"mha16", "q4_k_m", 0, "blk.7.ffn_down.weight", "q6_k", ""},
    {"mha16", "q4_k_m", 0, "blk.3.ffn_down.weight", "q4_k", ""},
    {"mha16", "q4_k_m", 0, "blk.3.attn_output.weight", "q4_k", ""},
    {"mha16", "q4_k", 1, "blk.10.ffn_down.weight", "q6_k", ""},
    {"mha16", "q5_k_m", 0, "blk.1.attn_v.weight", "q6_k", ""},
    {"mha16", "q5_k_m", 0, "blk.2.attn_v.weight", "q5_k", ""},
    {"mha16", "q5_k", 0, "blk.10.ffn_down.weight", "q6_k", ""},
    {"mha16", "Q5_K_M", 0, "blk.11.ffn_down.weight", "q5_k", ""},
    /* Q4_K_S: attn_v of layers 0-3 and ffn_down of the first n/8 at q5_k */
    {"mha16", "q4_k_s", 0, "blk.3.attn_v.weight", "q5_k", ""},
    {"mha16", "q4_k_s", 0, "blk.4.attn_v.weight", "q4_k", ""},
    {"mha16", "q4_k_s", 0, "blk.1.ffn_down.weight", "q5_k", ""},
    {"mha16", "q4_k_s", 0, "blk.2.ffn_down.weight", "q4_k", ""},
    /* Q5_K_S: only the output changes */
    {"mha16", "q5_k_s", 0, "blk.0.attn_v.weight", "q5_k", ""},
    {"mha16", "q5_k_s", 0, "blk.0.ffn_down.weight", "q5_k", ""},
    {"mha16", "q5_k_s", 0, "output.weight", "q6_k", ""},
    /* Q3_K_S: only the output */
    {"mha16", "q3_k_s", 0, "blk.0.attn_v.weight", "q3_k", ""},
    {"mha16", "q3_k_s", 0, "blk.0.ffn_down.weight", "q3_k", ""},
    {"mha16", "q3_k_s", 0, "blk.0.attn_output.weight", "q3_k", ""},
    /* Q3_K_M: attn_v q5_k for the first 2, else q4_k; ffn_down q5_k below n/16,
     * else q4_k; attn_output q4_k */
    {"mha16", "q3_k_m", 0, "blk.1.attn_v.weight", "q5_k", ""},
    {"mha16", "q3_k_m", 0, "blk.2.attn_v.weight", "q4_k", ""},
    {"mha16", "q3_k", 0, "blk.0.ffn_down.weight", "q5_k", ""},
    {"mha16", "q3_k_m", 0, "blk.1.ffn_down.weight", "q4_k", ""},
    {"mha16", "q3_k_m", 0, "blk.5.attn_output.weight", "q4_k", ""},
    {"mha16", "q3_k_m", 0, "blk.5.attn_q.weight", "q3_k", ""},
    /* Q3_K_L: attn_v, ffn_down, attn_output at q5_k */
    {"mha16", "q3_k_l", 0, "blk.9.attn_v.weight", "q5_k", ""},
    {"mha16", "q3_k_l", 0, "blk.9.ffn_down.weight", "q5_k", ""},
    {"mha16", "q3_k_l", 0, "blk.9.attn_output.weight", "q5_k", ""},
    {"mha16", "q3_k_l", 0, "blk.9.ffn_up.weight", "q3_k", ""},
    /* Q2_K: attn_v q3_k, or q4_k with GQA >= 4; ffn_down and attn_output q3_k */
    {"mha16", "q2_k", 0, "blk.0.attn_v.weight", "q3_k", ""},
    {"gqa16", "q2_k", 0, "blk.0.attn_v.weight", "q4_k", ""},
    {"gqa16", "q2_k", 1, "blk.8.ffn_down.weight", "q3_k", ""},
    {"gqa16", "q2_k", 0, "blk.8.attn_output.weight", "q3_k", ""},
    {"gqa16", "q2_k", 0, "blk.8.ffn_gate.weight", "q2_k", ""},
    /* IQ4_NL / IQ4_XS: attn_v q5_k with GQA >= 4; ffn_down of the first n/8 at
     * q5_k only without an imatrix */
    {"mha16", "iq4_nl", 0, "blk.0.attn_v.weight", "iq4_nl", ""},
    {"gqa16", "iq4_nl", 0, "blk.0.attn_v.weight", "q5_k", ""},
    {"gqa16", "iq4_xs", 1, "blk.5.attn_v.weight", "q5_k", ""},
    {"mha16", "iq4_xs", 0, "blk.1.ffn_down.weight", "q5_k", ""},
    {"mha16", "iq4_xs", 1, "blk.1.ffn_down.weight", "iq4_xs", ""},
    {"mha16", "iq4_nl", 0, "blk.2.ffn_down.weight", "iq4_nl", ""},
    /* Q4_0 / Q5_0 with an imatrix: ffn_down of the first n/8 at q4_1 / q5_1 */
    {"mha16", "q4_0", 0, "blk.0.ffn_down.weight", "q4_0", ""},
    {"mha16", "q4_0", 1, "blk.0.ffn_down.weight", "q4_1", ""},
    {"mha16", "q4_0", 1, "blk.2.ffn_down.weight", "q4_0", ""},
    {"mha16", "q5_0", 1, "blk.1.ffn_down.weight", "q5_1", ""},
    {"mha16", "q4_1", 1, "blk.1.ffn_down.weight", "q4_1", ""},
    {"mha16", "q6_k", 0, "blk.1.attn_v.weight", "q6_k", ""},
    /* 70B (80 layers, GQA): attn_v at q3_k or q4_k goes to q5_k */
    {"l80", "q4_k_m", 0, "blk.11.attn_v.weight", "q5_k", ""},
    {"l80", "q4_k_m", 0, "blk.12.attn_v.weight", "q6_k", ""},
    {"l80", "q3_k_s", 0, "blk.40.attn_v.weight", "q5_k", ""},
    {"l80", "q2_k", 0, "blk.40.attn_v.weight", "q5_k", ""},
    {"l80", "q4_k_m", 0, "blk.11.ffn_down.weight", "q4_k", ""},
    /* tied (stories260K shapes: dim 64, ffn 172, 5 layers): the embedding is the
     * output matrix; fallbacks for rows that do not fit */
    {"stories260K", "q4_k_m", 0, "token_embd.weight", "q8_0", ""},
    {"stories260K", "q4_0", 0, "token_embd.weight", "q8_0", "q6_k"},
    {"stories260K", "q4_k_m", 0, "blk.2.attn_v.weight", "q8_0", "q6_k"},
    {"stories260K", "q4_k_m", 0, "blk.1.attn_v.weight", "q5_0", "q4_k"},
    {"stories260K", "q4_k_m", 0, "blk.1.ffn_down.weight", "f16", "q4_k"},
    {"stories260K", "q3_k_m", 0, "blk.3.attn_q.weight", "iq4_nl", "q3_k"},
    {"stories260K", "q2_k", 0, "blk.3.ffn_down.weight", "f16", "q3_k"},
    {"stories260K", "iq4_xs", 0, "blk.3.attn_k.weight", "iq4_nl", "iq4_xs"},
    {"stories260K", "iq4_nl", 0, "blk.3.attn_k.weight", "iq4_nl", ""},
    {"stories260K", "q5_k_s", 0, "blk.3.attn_k.weight", "q5_1", "q5_k"},
    {"stories260K", "q5_0", 0, "blk.3.ffn_down.weight", "f16", "q5_0"},
    {"stories260K", "q4_k_m", 0, "blk.3.attn_norm.weight", "f32", ""},
};

static void plan_shape(const char *shape, const char *recipe, unsigned flags, lpk_tensor **ts,
                       size_t *n, quant_choice **ch)
{
    *ts = shape_tensors(shape, n);
    *ch = calloc(*n, sizeof **ch);
    lpk_error err = {0};
    assert_int_equal(quant_plan(recipe, flags, NULL, *ts, *n, *ch, &err), LPK_OK);
}

static void test_rules(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof rule_cases / sizeof rule_cases[0]; i++) {
        const struct rule_case *c = &rule_cases[i];
        lpk_tensor *ts;
        quant_choice *ch;
        size_t n;
        plan_shape(c->shape, c->recipe, c->imatrix ? QUANT_PLAN_IMATRIX : 0, &ts, &n, &ch);
        size_t k = find_tensor(ts, n, c->tensor);
        int want = lpk_type_from_name(c->type);
        int from = c->from[0] ? lpk_type_from_name(c->from) : -1;
        if (ch[k].type != want || ch[k].fallback_from != from) {
            print_message("%s %s imatrix %d %s: %s (from %s), expected %s (from %s)\n",
                          c->shape, c->recipe, c->imatrix, c->tensor, tn(ch[k].type),
                          ch[k].fallback_from >= 0 ? tn(ch[k].fallback_from) : "-", c->type,
                          c->from[0] ? c->from : "-");
            bad++;
        }
        if (from >= 0) assert_non_null(strstr(ch[k].note, "rows of"));
        free(ts);
        free(ch);
    }
    assert_int_equal(bad, 0);
}

/* --pure: the base type everywhere (fallbacks still apply); 1-D stays f32 */
static void test_pure(void **state)
{
    (void)state;
    static const char *const recipes[] = {"q3_k_m", "q5_k_s", "iq4_xs", "q2_k", "q4_k_m"};
    for (size_t r = 0; r < sizeof recipes / sizeof recipes[0]; r++) {
        lpk_tensor *ts;
        quant_choice *ch;
        size_t n;
        plan_shape("gqa16", recipes[r], QUANT_PLAN_PURE | QUANT_PLAN_IMATRIX, &ts, &n, &ch);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(ch[i].type,
                             ts[i].n_dims == 1 ? LPK_TYPE_F32 : quant_recipe_type(recipes[r]));
        free(ts);
        free(ch);
    }
}

/* The head counts come from the metadata when it has them. */
static void test_meta_gqa(void **state)
{
    (void)state;
    size_t n;
    lpk_tensor *ts = shape_tensors("mha16", &n);
    quant_choice *ch = calloc(n, sizeof *ch);
    lpk_meta *m = lpk_meta_new();
    assert_int_equal(lpk_meta_set_u32(m, "llama.attention.head_count", 8), 0);
    assert_int_equal(lpk_meta_set_u32(m, "llama.attention.head_count_kv", 2), 0);
    lpk_error err = {0};
    size_t v = find_tensor(ts, n, "blk.0.attn_v.weight");
    assert_int_equal(quant_plan("q2_k", 0, NULL, ts, n, ch, &err), 0);
    assert_int_equal(ch[v].type, LPK_TYPE_Q3_K);
    assert_int_equal(quant_plan("q2_k", 0, m, ts, n, ch, &err), 0);
    assert_int_equal(ch[v].type, LPK_TYPE_Q4_K);
    lpk_meta_free(m);
    free(ts);
    free(ch);
}

/* Names: every listed recipe is valid in any case; the aliases plan as the
 * recipe they mean; unknown names fail naming the name. */
static void test_names(void **state)
{
    (void)state;
    size_t n = quant_recipe_count();
    assert_true(n >= 22);
    const char *list = quant_recipe_list();
    for (size_t i = 0; i < n; i++) {
        const char *alias = NULL, *name = quant_recipe_name(i, &alias);
        assert_non_null(name);
        assert_non_null(strstr(list, name));
        char up[32];
        size_t k = 0;
        for (; name[k] && k + 1 < sizeof up; k++) up[k] = (char)(name[k] >= 'a' && name[k] <= 'z' ? name[k] - 32 : name[k]);
        up[k] = '\0';
        assert_true(quant_recipe_valid(up));
        if (alias) {
            size_t nt;
            lpk_tensor *ts;
            quant_choice *a, *b;
            plan_shape("gqa16", name, 0, &ts, &nt, &a);
            free(ts);
            plan_shape("gqa16", alias, 0, &ts, &nt, &b);
            for (size_t j = 0; j < nt; j++) assert_int_equal(a[j].type, b[j].type);
            free(ts);
            free(a);
            free(b);
        }
    }
    assert_null(quant_recipe_name(n, NULL));
    assert_string_equal(quant_recipe_name(0, NULL), "f32");
    assert_true(quant_recipe_valid("Q3_K"));
    assert_true(quant_recipe_valid("iq4_XS"));
    assert_int_equal(quant_recipe_type("q3_k"), LPK_TYPE_Q3_K);
    assert_int_equal(quant_recipe_type("q5_k_s"), LPK_TYPE_Q5_K);
    assert_int_equal(quant_recipe_type("q2_k_s"), -1);
    lpk_tensor t;
    quant_choice c;
    lpk_error err = {0};
    memset(&t, 0, sizeof t);
    assert_int_equal(quant_plan("q2_k_s", 0, NULL, &t, 1, &c, &err), LPK_EINVAL);
    assert_non_null(strstr(err.msg, "q2_k_s"));
}

/* Bits per weight over all tensors, checked against a hand count: pure q4_k
 * on a shape where every row fits is 4.5 bits for the matrices, 32 for the
 * norms. */
static void test_bpw(void **state)
{
    (void)state;
    size_t n;
    lpk_tensor *ts = shape_tensors("llama2-20m", &n);
    double n2 = 0, n1 = 0, bpw = 0;
    for (size_t i = 0; i < n; i++)
        *(ts[i].n_dims == 1 ? &n1 : &n2) += (double)lpk_tensor_nelems(&ts[i]);
    lpk_error err = {0};
    assert_int_equal(quant_plan_bpw("q4_k", QUANT_PLAN_PURE, NULL, ts, n, &bpw, &err), 0);
    assert_true(fabs(bpw - (4.5 * n2 + 32 * n1) / (n1 + n2)) < 1e-9);
    /* the mixes order by size as their names say */
    static const char *const order[] = {"q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "iq4_xs",
                                        "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "q8_0"};
    double prev = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        assert_int_equal(quant_plan_bpw(order[i], 0, NULL, ts, n, &bpw, &err), 0);
        assert_true(bpw > prev);
        prev = bpw;
    }
    free(ts);
}

/* ---------------------------------------------------------------- llama.cpp */
typedef struct tsv_row {
    char *shape, *recipe, *imatrix, *tensor, *type;
} tsv_row;

static size_t tsv_read(char *buf, tsv_row **rows_out)
{
    size_t cap = 1024, n = 0;
    tsv_row *rows = malloc(cap * sizeof *rows);
    char *save = NULL;
    int first = 1;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (first) { first = 0; continue; } /* header */
        char *f[5], *s2 = NULL;
        int k = 0;
        for (char *p = strtok_r(line, "\t", &s2); p && k < 5; p = strtok_r(NULL, "\t", &s2))
            f[k++] = p;
        assert_int_equal(k, 5);
        if (n == cap) rows = realloc(rows, (cap *= 2) * sizeof *rows);
        rows[n++] = (tsv_row){f[0], f[1], f[2], f[3], f[4]};
    }
    *rows_out = rows;
    return n;
}

/* Every recipe x imatrix x shape x tensor of recipe-types.tsv: our choice is
 * llama-quantize's. */
static void test_llama_cpp_tsv(void **state)
{
    (void)state;
    TU_NEED_SHARED(path, "gguf/recipe-types.tsv");
    char *buf = tu_read_file(path, NULL);
    assert_non_null(buf);
    tsv_row *rows;
    size_t nrows = tsv_read(buf, &rows);
    assert_true(nrows > 20000);
    size_t checked = 0, groups = 0, refused = 0;
    int bad = 0;
    for (size_t g = 0; g < nrows;) {
        size_t e = g;
        while (e < nrows && !strcmp(rows[e].shape, rows[g].shape) &&
               !strcmp(rows[e].recipe, rows[g].recipe) && !strcmp(rows[e].imatrix, rows[g].imatrix))
            e++;
        const char *shape = rows[g].shape, *recipe = rows[g].recipe;
        unsigned flags = strcmp(rows[g].imatrix, "yes") == 0 ? QUANT_PLAN_IMATRIX : 0;
        assert_true(quant_recipe_valid(recipe));
        size_t n;
        lpk_tensor *all = shape_tensors(shape, &n);
        quant_choice *ch = calloc(n, sizeof *ch);
        lpk_error err = {0};
        if (!strcmp(rows[g].tensor, "-")) {
            /* llama.cpp refused this recipe on this shape: we fall back to f16
             * for rows it has no fallback for */
            assert_int_equal(quant_plan(recipe, flags, NULL, all, n, ch, &err), 0);
            int f16 = 0;
            for (size_t i = 0; i < n; i++) f16 += ch[i].type == LPK_TYPE_F16;
            assert_true(f16 > 0);
            refused++;
        } else {
            /* the tensors in the tsv's order, shapes from the model's shape */
            assert_int_equal(e - g, n);
            lpk_tensor *ts = calloc(n, sizeof *ts);
            for (size_t i = 0; i < n; i++)
                ts[i] = all[find_tensor(all, n, rows[g + i].tensor)];
            assert_int_equal(quant_plan(recipe, flags, NULL, ts, n, ch, &err), 0);
            for (size_t i = 0; i < n; i++, checked++) {
                int want = lpk_type_from_name(rows[g + i].type);
                if (ch[i].type != want && bad++ < 20)
                    print_message("%s %s imatrix %s %s: llama.cpp %s, ours %s\n", shape, recipe,
                                  rows[g].imatrix, ts[i].name, rows[g + i].type, tn(ch[i].type));
            }
            free(ts);
        }
        free(all);
        free(ch);
        groups++;
        g = e;
    }
    print_message("recipe-types.tsv: %zu tensors in %zu plans checked, %zu refused by "
                  "llama.cpp, %d differences\n", checked, groups - refused, refused, bad);
    assert_int_equal(bad, 0);
    assert_int_equal(groups, 4 * 16 * 2); /* 16 recipes */
    free(rows);
    free(buf);
}

/* ---------------------------------------------------------------- size targets */
/* Random small knapsacks against brute force: never over the budget, and the
 * optimum's error (the DP's rounding is repaired by the local search). */
static void test_alloc_brute(void **state)
{
    (void)state;
    uint64_t rng = 12345;
    enum { N = 6, C = 5 };
    int exact = 0, runs = 200;
    for (int run = 0; run < runs; run++) {
        uint64_t bytes[N][C];
        double errs[N][C];
        quant_alloc_item items[N];
        uint64_t least = 0, most = 0;
        for (int i = 0; i < N; i++) {
            uint64_t b = 1000 + tu_rand(&rng) % 100000;
            double e = 1.0 + (double)(tu_rand(&rng) % 1000);
            for (int c = 0; c < C; c++) {
                bytes[i][c] = b;
                errs[i][c] = e;
                b += 500 + tu_rand(&rng) % 50000;
                e *= 0.2 + 0.7 * (double)(tu_rand(&rng) % 1000) / 1000.0;
            }
            least += bytes[i][0];
            most += bytes[i][C - 1];
            items[i] = (quant_alloc_item){C, NULL, bytes[i], errs[i]};
        }
        uint64_t budget = least + tu_rand(&rng) % (most - least);
        int pick[N];
        lpk_error err = {0};
        assert_int_equal(quant_alloc(items, N, budget, pick, &err), LPK_OK);
        double e = 0, best = INFINITY;
        uint64_t b = 0;
        for (int i = 0; i < N; i++) { e += errs[i][pick[i]]; b += bytes[i][pick[i]]; }
        assert_true(b <= budget);
        int idx[N] = {0};
        for (;;) {
            double te = 0;
            uint64_t tb = 0;
            for (int i = 0; i < N; i++) { te += errs[i][idx[i]]; tb += bytes[i][idx[i]]; }
            if (tb <= budget && te < best) best = te;
            int k = 0;
            while (k < N && ++idx[k] == C) idx[k++] = 0;
            if (k == N) break;
        }
        assert_true(e >= best * (1 - 1e-12));
        exact += e <= best * (1 + 1e-12);
        if (e > best * 1.02) print_message("run %d: %g vs optimum %g\n", run, e, best);
        assert_true(e <= best * 1.02);
    }
    print_message("quant_alloc: optimum in %d of %d random knapsacks\n", exact, runs);
    assert_true(exact >= runs * 95 / 100);
}

/* A model-like menu with synthetic sensitivities (error = s * 4^-bits): the
 * budget is used to within one step, sensitive tensors get more bits, the
 * same input gives the same choice, and a budget below the smallest menu fails
 * naming both sizes. */
static void test_alloc_synthetic(void **state)
{
    (void)state;
    static const int types[] = {LPK_TYPE_Q2_K, LPK_TYPE_Q3_K, LPK_TYPE_IQ4_XS, LPK_TYPE_Q4_K,
                                LPK_TYPE_Q5_K, LPK_TYPE_Q6_K, LPK_TYPE_Q8_0};
    enum { NT = 44, NC = sizeof types / sizeof types[0] };
    uint64_t bytes[NT][NC];
    double errs[NT][NC], sens[NT];
    quant_alloc_item items[NT];
    uint64_t rng = 7, total_elems = 0;
    for (int i = 0; i < NT; i++) {
        uint64_t ne = (uint64_t)256 * 256 * (1 + i % 3);
        total_elems += ne;
        sens[i] = i == 3 ? 1e4 : 1.0 + (double)(tu_rand(&rng) % 100);
        for (int c = 0; c < NC; c++) {
            assert_int_equal(lpk_type_nbytes(types[c], ne, &bytes[i][c]), 0);
            double bits = 8.0 * (double)bytes[i][c] / (double)ne;
            errs[i][c] = sens[i] * (double)ne * pow(4.0, -bits);
        }
        items[i] = (quant_alloc_item){NC, types, bytes[i], errs[i]};
    }
    int pick[NT], pick2[NT];
    lpk_error err = {0};
    uint64_t budget = total_elems * 4 / 8; /* 4.0 bpw */
    assert_int_equal(quant_alloc(items, NT, budget, pick, &err), LPK_OK);
    assert_int_equal(quant_alloc(items, NT, budget, pick2, &err), LPK_OK);
    assert_memory_equal(pick, pick2, sizeof pick);
    uint64_t b = 0;
    for (int i = 0; i < NT; i++) b += bytes[i][pick[i]];
    assert_true(b <= budget);
    /* no single upgrade still fits */
    for (int i = 0; i < NT; i++)
        if (pick[i] + 1 < NC) assert_true(b - bytes[i][pick[i]] + bytes[i][pick[i] + 1] > budget);
    /* the very sensitive tensor is at the top of the menu */
    assert_int_equal(pick[3], NC - 1);
    /* between two tensors of one size, the more sensitive one has no fewer bits */
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NT; j++)
            if (bytes[i][0] == bytes[j][0] && sens[i] > sens[j] * 1.5)
                assert_true(pick[i] >= pick[j]);
    /* too small */
    uint64_t least = 0;
    for (int i = 0; i < NT; i++) least += bytes[i][0];
    lpk_error_clear(&err);
    assert_int_equal(quant_alloc(items, NT, least - 1, pick, &err), LPK_ENOSPC);
    char want[64];
    snprintf(want, sizeof want, "%llu bytes", (unsigned long long)least);
    assert_non_null(strstr(err.msg, want));
    assert_int_equal(quant_alloc(items, NT, least, pick, &err), LPK_OK);
    for (int i = 0; i < NT; i++) assert_int_equal(pick[i], 0);
    /* a bad item */
    double bad[NC];
    memcpy(bad, errs[0], sizeof bad);
    bad[2] = NAN;
    items[0].err = bad;
    assert_int_equal(quant_alloc(items, NT, budget, pick, &err), LPK_EINVAL);
}

/* quant_weighted_error: with unit weights and every row it is quant_error's
 * squared error; weights scale the columns; sampled rows estimate the whole. */
static void test_weighted_error(void **state)
{
    (void)state;
    enum { R = 64, NC = 512 };
    float *x = malloc(R * NC * sizeof *x), w1[NC], w[NC];
    uint64_t rng = 3;
    for (int i = 0; i < R * NC; i++) x[i] = tu_randn(&rng);
    for (int c = 0; c < NC; c++) { w1[c] = 1.0f; w[c] = c < 256 ? 4.0f : 0.0f; }
    lpk_error err = {0};
    uint64_t nb;
    assert_int_equal(lpk_type_nbytes(LPK_TYPE_Q4_K, R * NC, &nb), 0);
    void *q = malloc(nb);
    assert_int_equal(quant_quantize_rows(LPK_TYPE_Q4_K, x, R, NC, q, NULL, &err), 0);
    double sse, ssx, e1, e0, ew, es;
    assert_int_equal(quant_error(LPK_TYPE_Q4_K, x, q, R, NC, &sse, &ssx), 0);
    assert_int_equal(quant_weighted_error(LPK_TYPE_Q4_K, x, R, NC, NULL, 1, &e0, &err), 0);
    assert_int_equal(quant_weighted_error(LPK_TYPE_Q4_K, x, R, NC, w1, 1, &e1, &err), 0);
    assert_true(fabs(e0 - sse) <= 1e-9 * sse);
    assert_true(fabs(e1 - sse) <= 1e-9 * sse);
    /* weights 4 on the first half, 0 on the rest: about 2x, and larger than 0 */
    assert_int_equal(quant_weighted_error(LPK_TYPE_Q4_K, x, R, NC, w, 1, &ew, &err), 0);
    assert_true(ew > 1.5 * sse && ew < 2.5 * sse);
    /* every 4th row, scaled to all: within 25% of the whole */
    assert_int_equal(quant_weighted_error(LPK_TYPE_Q4_K, x, R, NC, NULL, 4, &es, &err), 0);
    assert_true(fabs(es - sse) < 0.25 * sse);
    /* fewer bits, more error */
    double e6;
    assert_int_equal(quant_weighted_error(LPK_TYPE_Q6_K, x, R, NC, NULL, 1, &e6, &err), 0);
    assert_true(e6 < e0 / 3);
    assert_int_equal(quant_weighted_error(LPK_TYPE_Q4_K, x, R, 100, NULL, 1, &e6, &err),
                     LPK_EINVAL);
    free(q);
    free(x);
}

/* quant_plan_target on a small model with random weights: the budget holds,
 * 1-D tensors stay f32, a tensor whose inputs are 100x more important gets
 * more bits than its twin, and a budget below the norms fails. */
static void test_plan_target(void **state)
{
    (void)state;
    quant_model_shape sh = {2, 256, 512, 4, 2, 512, 0};
    size_t n = quant_shape_tensors(&sh, NULL);
    lpk_tensor *ts = calloc(n, sizeof *ts);
    quant_shape_tensors(&sh, ts);
    float **data = calloc(n, sizeof *data), **im = calloc(n, sizeof *im);
    uint64_t rng = 11, elems = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t ne = lpk_tensor_nelems(&ts[i]);
        elems += ne;
        data[i] = malloc(ne * sizeof(float));
        for (uint64_t j = 0; j < ne; j++) data[i][j] = 0.02f * tu_randn(&rng);
        ts[i].data = data[i];
        if (ts[i].n_dims == 2) {
            int64_t nc = lpk_tensor_ncols(&ts[i]);
            im[i] = malloc((size_t)nc * sizeof(float));
            int hot = strcmp(ts[i].name, "blk.1.attn_q.weight") == 0;
            for (int64_t c = 0; c < nc; c++) im[i][c] = (hot ? 100.0f : 1.0f) * (1.0f + (float)(c % 7));
        }
    }
    static const int menu[] = {LPK_TYPE_Q4_0, LPK_TYPE_Q4_K, LPK_TYPE_Q6_K, LPK_TYPE_Q8_0};
    quant_choice *ch = calloc(n, sizeof *ch);
    quant_target_result res;
    lpk_error err = {0};
    uint64_t budget = elems * 5 / 8; /* 5 bpw */
    assert_int_equal(quant_plan_target(ts, n, (const float *const *)im, NULL, menu, 4, budget, ch, &res,
                                       &err), 0);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b;
        assert_int_equal(lpk_type_nbytes(ch[i].type, lpk_tensor_nelems(&ts[i]), &b), 0);
        total += b;
        if (ts[i].n_dims == 1) assert_int_equal(ch[i].type, LPK_TYPE_F32);
        else assert_non_null(strstr(ch[i].note, "expected error"));
    }
    assert_int_equal(total, res.bytes);
    assert_true(total <= budget && total > budget * 9 / 10);
    size_t hot = find_tensor(ts, n, "blk.1.attn_q.weight");
    size_t cold = find_tensor(ts, n, "blk.0.attn_q.weight");
    print_message("target 5 bpw: hot attn_q %s, its twin %s, %.3f bpw\n", tn(ch[hot].type),
                  tn(ch[cold].type), 8.0 * (double)total / (double)elems);
    assert_true(lpk_type_get(ch[hot].type)->type_size * 256 / lpk_type_get(ch[hot].type)->block_size >
                lpk_type_get(ch[cold].type)->type_size * 256 / lpk_type_get(ch[cold].type)->block_size);
    /* q4_0 and q4_k cost the same: the one with the lower error is taken */
    for (size_t i = 0; i < n; i++) assert_int_not_equal(ch[i].type, LPK_TYPE_Q4_0);
    /* recorded in the metadata */
    lpk_meta *m = lpk_meta_new();
    assert_int_equal(quant_plan_target(ts, n, (const float *const *)im, NULL, menu, 4, budget, ch,
                                       &res, &err), 0);
    assert_int_equal(quant_plan_record_target("bpw 5", &res, ts, ch, n, m), 0);
    assert_string_equal(lpk_meta_get_str(m, "quant.recipe"), "target");
    assert_string_equal(lpk_meta_get_str(m, "quant.target"), "bpw 5");
    uint64_t pb;
    assert_int_equal(lpk_meta_get_u64(m, "quant.target.predicted_bytes", &pb), 0);
    assert_int_equal(pb, res.bytes);
    assert_non_null(lpk_meta_find(m, "quant.types"));
    lpk_meta_free(m);
    assert_int_equal(quant_plan_target(ts, n, NULL, NULL, menu, 4, 1000, ch, &res, &err), LPK_ENOSPC);
    for (size_t i = 0; i < n; i++) { free(data[i]); free(im[i]); }
    free(data); free(im); free(ch); free(ts);
}

/* quantize --target-bpw / --max-size end to end on llama.cpp's kernel-check
 * model, or one of its shapes (k-quant shapes, random weights): within the
 * limit, recorded, chosen from the menu, exported to GGUF; bad limits are usage
 * errors. */
static void test_cli_target(void **state)
{
    (void)state;
    char *src = strdup(tu_kernel_check()); /* tu_shared's buffer is reused */
    TU_NEED_SHARED(text0, "text/TinyStories-valid-sample.txt");
    char *text = strdup(text0);
    char *dir = tu_tmpdir(), *o = tu_fmt("%s/t.lpk", dir), *g = tu_fmt("%s/t.gguf", dir);
    char *out = NULL;
    int rc = tu_llmpack(&out, "quantize '%s' -o '%s' --target-bpw 4.5 --calib '%s' "
                        "--calib-chunks 1 --json", src, o, text);
    if (rc) print_message("%s\n", out);
    assert_int_equal(rc, 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    json_t *t = json_object_get(j, "target");
    double bpw = json_real_value(json_object_get(t, "bpw"));
    json_int_t pred = json_integer_value(json_object_get(t, "predicted_bytes"));
    json_int_t got = json_integer_value(json_object_get(t, "achieved_bytes"));
    print_message("target 4.5 bpw: %.4f bpw, %lld bytes\n", bpw, (long long)got);
    assert_true(bpw <= 4.5 && bpw > 4.3);
    assert_int_equal(pred, got);
    json_decref(j);
    free(out);
    lpk_reader *r = NULL;
    lpk_error err = {0};
    assert_int_equal(lpk_reader_open(o, &r, &err), 0);
    assert_string_equal(lpk_meta_get_str(lpk_reader_meta(r), "quant.recipe"), "target");
    assert_string_equal(lpk_meta_get_str(lpk_reader_meta(r), "quant.target"), "bpw 4.5");
    int kinds = 0, seen[LPK_TYPE_COUNT] = {0};
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *x = lpk_reader_tensor(r, i);
        assert_int_equal(lpk_reader_verify_tensor(r, i, &err), 0);
        if (x->n_dims == 2 && !seen[x->type]++) kinds++;
    }
    assert_true(kinds >= 2); /* a mix, not one type */
    lpk_reader_close(r);
    assert_int_equal(tu_llmpack(NULL, "export '%s' -o '%s'", o, g), 0);
    assert_int_equal(tu_llmpack(NULL, "check '%s'", g), 0);
    /* --max-size: the file fits */
    assert_int_equal(tu_llmpack(NULL, "quantize '%s' -o '%s' --max-size 1.5MB --calib '%s' "
                                "--calib-chunks 1 --force -q", src, o, text), 0);
    size_t len = 0;
    char *bytes = tu_read_file(o, &len);
    print_message("max-size 1.5MB: file %zu bytes\n", len);
    assert_true(len <= 1500000 && len > 1400000);
    free(bytes);
    /* usage errors */
    assert_int_equal(tu_llmpack(NULL, "quantize '%s' -o '%s/u.lpk' --target-bpw 4", src, dir), 2);
    assert_int_equal(tu_llmpack(NULL, "quantize '%s' -o '%s/u.lpk' --target-bpw 4 --type q4_0 "
                                "--calib '%s'", src, dir, text), 2);
    assert_int_equal(tu_llmpack(NULL, "quantize '%s' -o '%s/u.lpk' --max-size 3XB --calib '%s'",
                                src, dir, text), 2);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s/u.lpk' --target-bpw 1 --calib '%s'",
                                src, dir, text), 2);
    assert_non_null(strstr(out, "more than"));
    free(out);
    char *u = tu_fmt("%s/u.lpk", dir);
    assert_false(tu_exists(u));
    free(u);
    tu_rmtree(dir);
    free(dir); free(o); free(g); free(text); free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),     cmocka_unit_test(test_pure),
        cmocka_unit_test(test_meta_gqa),  cmocka_unit_test(test_names),
        cmocka_unit_test(test_bpw),       cmocka_unit_test(test_llama_cpp_tsv),
        cmocka_unit_test(test_alloc_brute), cmocka_unit_test(test_alloc_synthetic),
        cmocka_unit_test(test_weighted_error), cmocka_unit_test(test_plan_target), cmocka_unit_test(test_cli_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
