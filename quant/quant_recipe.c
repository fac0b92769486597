/* Recipes: which type each tensor gets. Non-pure recipes follow llama.cpp's
 * llama_tensor_get_type (src/llama-quant.cpp) for the matching file type, so
 * sizes and accuracy compare one to one with llama-quantize's files. */
#include "quant_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

enum { R_PLAIN, R_QUANT, R_Q4_K_M, R_Q4_K_S };

static const struct recipe {
    const char *name;
    int type;       /* base type */
    uint32_t ftype; /* llama.cpp's llama_ftype, recorded as general.file_type */
    int kind;
} recipes[] = {
    {"f32", LPK_TYPE_F32, 0, R_PLAIN},       {"f16", LPK_TYPE_F16, 1, R_PLAIN},
    {"bf16", LPK_TYPE_BF16, 32, R_PLAIN},    {"q8_0", LPK_TYPE_Q8_0, 7, R_QUANT},
    {"q4_0", LPK_TYPE_Q4_0, 2, R_QUANT},     {"q4_1", LPK_TYPE_Q4_1, 3, R_QUANT},
    {"q5_0", LPK_TYPE_Q5_0, 8, R_QUANT},     {"q5_1", LPK_TYPE_Q5_1, 9, R_QUANT},
    {"q6_k", LPK_TYPE_Q6_K, 18, R_QUANT},    {"q4_k", LPK_TYPE_Q4_K, 15, R_Q4_K_M},
    {"q4_k_m", LPK_TYPE_Q4_K, 15, R_Q4_K_M}, {"q4_k_s", LPK_TYPE_Q4_K, 14, R_Q4_K_S},
};
#define N_RECIPES (sizeof recipes / sizeof recipes[0])

static const struct recipe *recipe_find(const char *name)
{
    for (size_t i = 0; name && i < N_RECIPES; i++)
        if (strcasecmp(recipes[i].name, name) == 0)
            return &recipes[i];
    return NULL;
}

int quant_recipe_valid(const char *recipe) { return recipe_find(recipe) != NULL; }

int quant_recipe_type(const char *recipe)
{
    const struct recipe *r = recipe_find(recipe);
    return r ? r->type : -1;
}

const char *quant_recipe_list(void)
{
    return "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k, q4_k_m, q4_k_s";
}

static const char *tname(int type)
{
    const lpk_type_info *ti = lpk_type_get(type);
    return ti ? ti->name : "?";
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* llama.cpp's layer pattern that gets more bits in Q4_K_M. */
static int use_more_bits(int i_layer, int n_layers)
{
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 ||
           (i_layer - n_layers / 8) % 3 == 2;
}

/* Layer number from "blk.N.", else the running count. */
static int layer_of(const char *name, int counter)
{
    int l;
    if (sscanf(name, "blk.%d.", &l) == 1 && l >= 0)
        return l;
    return counter;
}

int quant_plan(const char *recipe, unsigned flags, const lpk_meta *meta,
               const lpk_tensor *tensors, size_t n, quant_choice *choices, lpk_error *err)
{
    (void)meta;
    const int pure = (flags & QUANT_PLAN_PURE) != 0;
    const struct recipe *r = recipe_find(recipe);
    if (!r)
        return lpk_err(err, LPK_EINVAL, "unknown quantization type '%s' (known: %s)",
                       recipe ? recipe : "(null)", quant_recipe_list());
    if (n && (!tensors || !choices))
        return lpk_err(err, LPK_EINVAL, "quant_plan: NULL tensors or choices");
    int has_output = 0, n_attn_v = 0, n_ffn_down = 0;
    for (size_t i = 0; i < n; i++) {
        has_output |= strcmp(tensors[i].name, "output.weight") == 0;
        n_attn_v += strstr(tensors[i].name, "attn_v.weight") != NULL;
        n_ffn_down += strstr(tensors[i].name, "ffn_down") != NULL;
    }
    int i_attn_v = 0, i_ffn_down = 0;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = &tensors[i];
        quant_choice *c = &choices[i];
        c->fallback_from = -1;
        c->note[0] = '\0';
        int64_t ncols = lpk_tensor_ncols(t);
        if (t->n_dims < 2) {
            c->type = LPK_TYPE_F32;
            continue;
        }
        if (r->kind == R_PLAIN) {
            c->type = r->type;
            continue;
        }
        if (!ends_with(t->name, "weight") || strstr(t->name, "_norm.weight")) {
            /* not a matrix llama.cpp quantizes: keep it unquantized */
            c->type = t->type == LPK_TYPE_F16 || t->type == LPK_TYPE_BF16 ? t->type : LPK_TYPE_F32;
            continue;
        }
        int type = r->type;
        const char *name = t->name;
        int is_attn_v = strstr(name, "attn_v.weight") != NULL;
        int is_ffn_down = strstr(name, "ffn_down") != NULL;
        int is_output = strcmp(name, "output.weight") == 0 ||
                        (!has_output && strcmp(name, "token_embd.weight") == 0);
        if (!pure) {
            if (is_output) {
                /* the output matrix (or the tied embedding) gets more bits */
                int bs = lpk_type_get(type)->block_size;
                if (ncols % bs != 0) {
                    c->fallback_from = type == LPK_TYPE_Q8_0 ? -1 : LPK_TYPE_Q6_K;
                    type = LPK_TYPE_Q8_0;
                } else if (type != LPK_TYPE_Q8_0) {
                    type = LPK_TYPE_Q6_K;
                }
            } else if (is_attn_v) {
                int l = layer_of(name, i_attn_v);
                if (r->kind == R_Q4_K_M && use_more_bits(l, n_attn_v)) {
                    type = LPK_TYPE_Q6_K;
                } else if (r->kind == R_Q4_K_S && l < 4) {
                    type = LPK_TYPE_Q6_K;
                    snprintf(c->note, sizeof c->note, "llama.cpp uses q5_k here; q6_k instead");
                }
            } else if (is_ffn_down) {
                int l = layer_of(name, i_ffn_down);
                if (r->kind == R_Q4_K_M && use_more_bits(l, n_ffn_down)) {
                    type = LPK_TYPE_Q6_K;
                } else if (r->kind == R_Q4_K_S && l < n_ffn_down / 8) {
                    type = LPK_TYPE_Q6_K;
                    snprintf(c->note, sizeof c->note, "llama.cpp uses q5_k here; q6_k instead");
                }
            }
        }
        i_attn_v += is_attn_v;
        i_ffn_down += is_ffn_down;
        /* rows that do not fit the type: llama.cpp's fallbacks, then f16 */
        int want = c->fallback_from >= 0 ? c->fallback_from : type;
        if (!quant_row_fits(type, ncols)) {
            c->fallback_from = type;
            want = type;
            if (type == LPK_TYPE_Q4_K) type = LPK_TYPE_Q5_0;
            else if (type == LPK_TYPE_Q6_K) type = LPK_TYPE_Q8_0;
            if (!quant_row_fits(type, ncols)) type = LPK_TYPE_F16;
        }
        c->type = type;
        if (c->fallback_from >= 0)
            snprintf(c->note, sizeof c->note, "%s -> %s: rows of %lld values", tname(want),
                     tname(type), (long long)ncols);
    }
    return LPK_OK;
}

int quant_plan_record(const char *recipe, int pure, const lpk_tensor *tensors,
                      const quant_choice *choices, size_t n, lpk_meta *meta)
{
    const struct recipe *r = recipe_find(recipe);
    if (!r || !meta || (n && (!tensors || !choices)))
        return LPK_EINVAL;
    int rc = lpk_meta_set_u32(meta, "general.file_type", r->ftype);
    if (!rc) rc = lpk_meta_set_str(meta, "quant.recipe", r->name);
    if (!rc) rc = lpk_meta_set_bool(meta, "quant.pure", pure != 0);
    const char *names[LPK_TYPE_COUNT];
    uint32_t counts[LPK_TYPE_COUNT];
    uint64_t nt = 0;
    for (int type = 0; type < LPK_TYPE_COUNT; type++) {
        uint32_t k = 0;
        for (size_t i = 0; i < n; i++) k += choices[i].type == type;
        if (k) {
            names[nt] = tname(type);
            counts[nt++] = k;
        }
    }
    if (!rc) rc = lpk_meta_set_str_arr(meta, "quant.types", names, NULL, nt);
    if (!rc) rc = lpk_meta_set_arr(meta, "quant.type_counts", LPK_V_U32, counts, nt);
    size_t nf = 0;
    for (size_t i = 0; i < n; i++) nf += choices[i].fallback_from >= 0;
    if (!rc && nf) {
        char **lines = calloc(nf, sizeof *lines);
        if (!lines) return LPK_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n && !rc; i++) {
            if (choices[i].fallback_from < 0) continue;
            size_t len = strlen(tensors[i].name) + strlen(choices[i].note) + 3;
            lines[k] = malloc(len);
            if (!lines[k]) { rc = LPK_ENOMEM; break; }
            snprintf(lines[k++], len, "%s: %s", tensors[i].name, choices[i].note);
        }
        if (!rc) rc = lpk_meta_set_str_arr(meta, "quant.fallbacks", (const char *const *)lines,
                                           NULL, nf);
        for (size_t i = 0; i < nf; i++) free(lines[i]);
        free(lines);
    } else if (!rc && lpk_meta_find(meta, "quant.fallbacks")) {
        lpk_meta_remove(meta, "quant.fallbacks");
    }
    return rc;
}
