/* Recipes: which type each tensor gets. Non-pure recipes follow llama.cpp's
 * llama_tensor_get_type (src/llama-quant.cpp, b4748) for the matching file
 * type, so the tensor data of our files equals llama-quantize's in size. */
#include "quant_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

/* llama.cpp's llama_ftype ids (recorded as general.file_type) */
enum {
    FT_F32 = 0, FT_F16 = 1, FT_Q4_0 = 2, FT_Q4_1 = 3, FT_Q8_0 = 7, FT_Q5_0 = 8, FT_Q5_1 = 9,
    FT_Q2_K = 10, FT_Q3_K_S = 11, FT_Q3_K_M = 12, FT_Q3_K_L = 13, FT_Q4_K_S = 14,
    FT_Q4_K_M = 15, FT_Q5_K_S = 16, FT_Q5_K_M = 17, FT_Q6_K = 18, FT_IQ4_NL = 25,
    FT_IQ4_XS = 30, FT_BF16 = 32
};

static const struct recipe {
    const char *name;
    int type;       /* base type */
    uint32_t ftype;
    const char *alias_of; /* the recipe this name means, or NULL */
} recipes[] = {
    {"f32", LPK_TYPE_F32, FT_F32, NULL},          {"f16", LPK_TYPE_F16, FT_F16, NULL},
    {"bf16", LPK_TYPE_BF16, FT_BF16, NULL},       {"q8_0", LPK_TYPE_Q8_0, FT_Q8_0, NULL},
    {"q6_k", LPK_TYPE_Q6_K, FT_Q6_K, NULL},       {"q5_1", LPK_TYPE_Q5_1, FT_Q5_1, NULL},
    {"q5_0", LPK_TYPE_Q5_0, FT_Q5_0, NULL},       {"q5_k_m", LPK_TYPE_Q5_K, FT_Q5_K_M, NULL},
    {"q5_k_s", LPK_TYPE_Q5_K, FT_Q5_K_S, NULL},   {"q5_k", LPK_TYPE_Q5_K, FT_Q5_K_M, "q5_k_m"},
    {"q4_1", LPK_TYPE_Q4_1, FT_Q4_1, NULL},       {"q4_0", LPK_TYPE_Q4_0, FT_Q4_0, NULL},
    {"q4_k_m", LPK_TYPE_Q4_K, FT_Q4_K_M, NULL},   {"q4_k_s", LPK_TYPE_Q4_K, FT_Q4_K_S, NULL},
    {"q4_k", LPK_TYPE_Q4_K, FT_Q4_K_M, "q4_k_m"}, {"iq4_nl", LPK_TYPE_IQ4_NL, FT_IQ4_NL, NULL},
    {"iq4_xs", LPK_TYPE_IQ4_XS, FT_IQ4_XS, NULL}, {"q3_k_l", LPK_TYPE_Q3_K, FT_Q3_K_L, NULL},
    {"q3_k_m", LPK_TYPE_Q3_K, FT_Q3_K_M, NULL},   {"q3_k_s", LPK_TYPE_Q3_K, FT_Q3_K_S, NULL},
    {"q3_k", LPK_TYPE_Q3_K, FT_Q3_K_M, "q3_k_m"}, {"q2_k", LPK_TYPE_Q2_K, FT_Q2_K, NULL},
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
    return "f32, f16, bf16, q8_0, q6_k, q5_1, q5_0, q5_k_m, q5_k_s, q5_k, q4_1, q4_0, "
           "q4_k_m, q4_k_s, q4_k, iq4_nl, iq4_xs, q3_k_l, q3_k_m, q3_k_s, q3_k, q2_k";
}

size_t quant_recipe_count(void) { return N_RECIPES; }

const char *quant_recipe_name(size_t i, const char **alias_of)
{
    if (i >= N_RECIPES) return NULL;
    if (alias_of) *alias_of = recipes[i].alias_of;
    return recipes[i].name;
}

const char *quant_recipe_for_ftype(uint32_t ftype)
{
    for (size_t i = 0; i < N_RECIPES; i++)
        if (recipes[i].ftype == ftype && !recipes[i].alias_of) return recipes[i].name;
    return NULL;
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

/* Rows of ncols values make whole blocks of type (layout only: the type table). */
static int row_fits(int type, int64_t ncols)
{
    const lpk_type_info *ti = lpk_type_get(type);
    return ti && ncols > 0 && ncols % ti->block_size == 0;
}

/* llama.cpp's layer pattern that gets more bits: the first and last eighth and
 * every third layer in between. */
static int use_more_bits(int i_layer, int n_layers)
{
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 ||
           (i_layer - n_layers / 8) % 3 == 2;
}

/* Layer number from "blk.N.", else the running count. llama.cpp counts the
 * tensors in layer order, which is the same for a complete model. */
static int layer_of(const char *name, int counter)
{
    int l;
    if (sscanf(name, "blk.%d.", &l) == 1 && l >= 0)
        return l;
    return counter;
}

/* What the rules look at besides the tensor itself. */
typedef struct plan_ctx {
    int ftype;
    int has_imatrix;
    int has_output;     /* an output.weight exists (else the embedding is tied) */
    int n_attn_v;       /* attn_v / attn_qkv tensors */
    int n_layer;
    int n_gqa;          /* n_head / n_head_kv, integer division as llama.cpp */
    int is_70b;         /* llama.cpp's LLM_TYPE_70B: 80 layers with GQA */
} plan_ctx;

static uint32_t meta_u32(const lpk_meta *m, const char *key, uint32_t dflt)
{
    uint32_t v;
    return m && lpk_meta_get_u32(m, key, &v) == LPK_OK ? v : dflt;
}

static void plan_ctx_init(plan_ctx *c, const struct recipe *r, unsigned flags,
                          const lpk_meta *meta, const lpk_tensor *ts, size_t n)
{
    memset(c, 0, sizeof *c);
    c->ftype = (int)r->ftype;
    c->has_imatrix = (flags & QUANT_PLAN_IMATRIX) != 0;
    int64_t q_rows = 0, k_rows = 0;
    int max_layer = -1;
    for (size_t i = 0; i < n; i++) {
        const char *name = ts[i].name;
        c->has_output |= strcmp(name, "output.weight") == 0;
        c->n_attn_v += strstr(name, "attn_v.weight") != NULL ||
                       strstr(name, "attn_qkv.weight") != NULL;
        int l;
        if (sscanf(name, "blk.%d.", &l) == 1 && l > max_layer) max_layer = l;
        if (!q_rows && strstr(name, "attn_q.weight")) q_rows = lpk_tensor_nrows(&ts[i]);
        if (!k_rows && strstr(name, "attn_k.weight")) k_rows = lpk_tensor_nrows(&ts[i]);
    }
    /* hyperparameters from the metadata, else from the shapes */
    uint32_t n_head = meta_u32(meta, "llama.attention.head_count", 0);
    uint32_t n_head_kv = meta_u32(meta, "llama.attention.head_count_kv", n_head);
    if (n_head && n_head_kv) {
        c->n_gqa = (int)(n_head / n_head_kv);
    } else if (q_rows > 0 && k_rows > 0) {
        c->n_gqa = (int)(q_rows / k_rows);
        n_head = (uint32_t)q_rows;
        n_head_kv = (uint32_t)k_rows;
    } else {
        c->n_gqa = 1;
    }
    c->n_layer = (int)meta_u32(meta, "llama.block_count", (uint32_t)(max_layer + 1));
    c->is_70b = c->n_layer == 80 && n_head != n_head_kv;
}

/* The running counts llama.cpp keeps while it walks the tensors. */
typedef struct plan_count {
    int attn_v, ffn_down;
} plan_count;

/* llama_tensor_get_type's choice for one quantizable matrix (before the
 * fallbacks for rows that do not fit), for the file types llmpack makes
 * (dense LLaMA models: no experts, not Falcon). */
static int rule_type(const plan_ctx *c, plan_count *k, const lpk_tensor *t, int type,
                     quant_choice *ch)
{
    const char *name = t->name;
    const int ft = c->ftype;
    if (strcmp(name, "output.weight") == 0 ||
        (!c->has_output && strcmp(name, "token_embd.weight") == 0)) {
        /* the output matrix (or the tied embedding): q6_k, or q8_0 when its rows
         * do not fit the base type */
        if (!row_fits(type, lpk_tensor_ncols(t))) {
            snprintf(ch->note, sizeof ch->note, "output rows of %lld values do not fit %s: q8_0",
                     (long long)lpk_tensor_ncols(t), tname(type));
            return LPK_TYPE_Q8_0;
        }
        return type == LPK_TYPE_Q8_0 ? type : LPK_TYPE_Q6_K;
    }
    if (strcmp(name, "token_embd.weight") == 0) return type;
    if (strstr(name, "attn_v.weight")) {
        int i = layer_of(name, k->attn_v++), n = c->n_attn_v;
        if (ft == FT_Q2_K) type = c->n_gqa >= 4 ? LPK_TYPE_Q4_K : LPK_TYPE_Q3_K;
        else if (ft == FT_Q3_K_M) type = i < 2 ? LPK_TYPE_Q5_K : LPK_TYPE_Q4_K;
        else if (ft == FT_Q3_K_L) type = LPK_TYPE_Q5_K;
        else if ((ft == FT_IQ4_NL || ft == FT_IQ4_XS) && c->n_gqa >= 4) type = LPK_TYPE_Q5_K;
        else if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && use_more_bits(i, n)) type = LPK_TYPE_Q6_K;
        else if (ft == FT_Q4_K_S && i < 4) type = LPK_TYPE_Q5_K;
        /* 70B: attn_v is 8x smaller than attn_q, more bits cost little */
        if (c->is_70b && (type == LPK_TYPE_Q3_K || type == LPK_TYPE_Q4_K)) type = LPK_TYPE_Q5_K;
        return type;
    }
    if (strstr(name, "ffn_down")) {
        int i = layer_of(name, k->ffn_down++), n = c->n_layer;
        if (ft == FT_Q2_K) type = LPK_TYPE_Q3_K;
        else if (ft == FT_Q3_K_M) type = i < n / 16 ? LPK_TYPE_Q5_K : LPK_TYPE_Q4_K;
        else if (ft == FT_Q3_K_L) type = LPK_TYPE_Q5_K;
        else if (ft == FT_Q4_K_M) { if (use_more_bits(i, n)) type = LPK_TYPE_Q6_K; }
        else if (i < n / 8 && (ft == FT_IQ4_NL || ft == FT_IQ4_XS) && !c->has_imatrix)
            type = LPK_TYPE_Q5_K;
        else if (ft == FT_Q5_K_M && use_more_bits(i, n)) type = LPK_TYPE_Q6_K;
        else if (ft == FT_Q4_K_S && i < n / 8) type = LPK_TYPE_Q5_K;
        else if ((ft == FT_Q4_0 || ft == FT_Q5_0) && c->has_imatrix && i < n / 8)
            type = ft == FT_Q4_0 ? LPK_TYPE_Q4_1 : LPK_TYPE_Q5_1;
        return type;
    }
    if (strstr(name, "attn_output.weight")) {
        if (ft == FT_Q2_K) type = LPK_TYPE_Q3_K;
        else if (ft == FT_Q3_K_M) type = LPK_TYPE_Q4_K;
        else if (ft == FT_Q3_K_L) type = LPK_TYPE_Q5_K;
        return type;
    }
    if (strstr(name, "attn_qkv.weight")) {
        k->attn_v++;
        if (ft == FT_Q3_K_M || ft == FT_Q3_K_L) type = LPK_TYPE_Q4_K;
        else if (ft == FT_Q4_K_M) type = LPK_TYPE_Q5_K;
        else if (ft == FT_Q5_K_M) type = LPK_TYPE_Q6_K;
    }
    return type;
}

/* llama.cpp's replacement for a type whose blocks do not fit the row. */
static int fallback_of(int type)
{
    switch (type) {
    case LPK_TYPE_Q2_K:
    case LPK_TYPE_Q3_K:
    case LPK_TYPE_IQ4_XS: return LPK_TYPE_IQ4_NL;
    case LPK_TYPE_Q4_K: return LPK_TYPE_Q5_0;
    case LPK_TYPE_Q5_K: return LPK_TYPE_Q5_1;
    case LPK_TYPE_Q6_K: return LPK_TYPE_Q8_0;
    default: return LPK_TYPE_F16; /* llama.cpp refuses these; f16 keeps the tensor */
    }
}

int quant_tensor_quantizable(const lpk_tensor *t)
{
    return t->n_dims >= 2 && ends_with(t->name, "weight") && !strstr(t->name, "_norm.weight") &&
           !strstr(t->name, "ffn_gate_inp.weight");
}

int quant_plan(const char *recipe, unsigned flags, const lpk_meta *meta,
               const lpk_tensor *tensors, size_t n, quant_choice *choices, lpk_error *err)
{
    const int pure = (flags & QUANT_PLAN_PURE) != 0;
    const struct recipe *r = recipe_find(recipe);
    if (!r)
        return lpk_err(err, LPK_EINVAL, "unknown quantization type '%s' (known: %s)",
                       recipe ? recipe : "(null)", quant_recipe_list());
    if (n && (!tensors || !choices))
        return lpk_err(err, LPK_EINVAL, "quant_plan: NULL tensors or choices");
    plan_ctx ctx;
    plan_ctx_init(&ctx, r, flags, meta, tensors, n);
    plan_count count = {0, 0};
    const int plain = r->type == LPK_TYPE_F32 || r->type == LPK_TYPE_F16 ||
                      r->type == LPK_TYPE_BF16;
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
        if (plain) {
            c->type = r->type;
            continue;
        }
        if (!quant_tensor_quantizable(t)) {
            c->type = t->type == LPK_TYPE_F16 || t->type == LPK_TYPE_BF16 ? t->type : LPK_TYPE_F32;
            continue;
        }
        int type = pure ? r->type : rule_type(&ctx, &count, t, r->type, c);
        if (!row_fits(type, ncols)) {
            c->fallback_from = type;
            type = fallback_of(type);
            if (!row_fits(type, ncols)) type = LPK_TYPE_F16;
            snprintf(c->note, sizeof c->note, "%s -> %s: rows of %lld values",
                     tname(c->fallback_from), tname(type), (long long)ncols);
        }
        c->type = type;
    }
    return LPK_OK;
}

/* quant.types, quant.type_counts and quant.fallbacks of a plan. */
static int record_types(const lpk_tensor *tensors, const quant_choice *choices, size_t n,
                        lpk_meta *meta)
{
    int rc = LPK_OK;
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

int quant_plan_record(const char *recipe, int pure, const lpk_tensor *tensors,
                      const quant_choice *choices, size_t n, lpk_meta *meta)
{
    const struct recipe *r = recipe_find(recipe);
    if (!r || !meta || (n && (!tensors || !choices)))
        return LPK_EINVAL;
    int rc = lpk_meta_set_u32(meta, "general.file_type", r->ftype);
    if (!rc) rc = lpk_meta_set_str(meta, "quant.recipe", r->name);
    if (!rc) rc = lpk_meta_set_bool(meta, "quant.pure", pure != 0);
    if (!rc) rc = record_types(tensors, choices, n, meta);
    return rc;
}

int quant_plan_record_target(const char *target, const quant_target_result *res,
                             const lpk_tensor *tensors, const quant_choice *choices, size_t n,
                             lpk_meta *meta)
{
    if (!target || !res || !meta || (n && (!tensors || !choices)))
        return LPK_EINVAL;
    /* general.file_type: the mix named after the type holding most bytes */
    uint64_t by_type[LPK_TYPE_COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        uint64_t b = 0;
        if (choices[i].type >= 0 && choices[i].type < LPK_TYPE_COUNT && tensors[i].n_dims >= 2 &&
            !lpk_type_nbytes(choices[i].type, lpk_tensor_nelems(&tensors[i]), &b))
            by_type[choices[i].type] += b;
    }
    int top = LPK_TYPE_F32;
    for (int t = 0; t < LPK_TYPE_COUNT; t++)
        if (by_type[t] > by_type[top]) top = t;
    uint32_t ftype = 0;
    for (size_t i = 0; i < N_RECIPES; i++)
        if (recipes[i].type == top) { ftype = recipes[i].ftype; break; }
    int rc = lpk_meta_set_u32(meta, "general.file_type", ftype);
    if (!rc) rc = lpk_meta_set_str(meta, "quant.recipe", "target");
    if (!rc) rc = lpk_meta_set_bool(meta, "quant.pure", 0);
    if (!rc) rc = lpk_meta_set_str(meta, "quant.target", target);
    if (!rc) rc = lpk_meta_set_u64(meta, "quant.target.budget", res->budget);
    if (!rc) rc = lpk_meta_set_u64(meta, "quant.target.predicted_bytes", res->bytes);
    if (!rc) rc = lpk_meta_set_f64(meta, "quant.target.predicted_error", res->err);
    if (!rc) rc = record_types(tensors, choices, n, meta);
    return rc;
}

/* ---------------------------------------------------------------- shapes */
static void shape_tensor(lpk_tensor *t, const char *name, int64_t rows, int64_t cols)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = LPK_TYPE_F32;
    t->n_dims = cols ? 2 : 1;
    t->dims[0] = rows;
    t->dims[1] = cols;
}

size_t quant_shape_tensors(const quant_model_shape *s, lpk_tensor *out)
{
    if (!s || s->n_layer < 0 || s->dim <= 0 || s->ffn <= 0 || s->vocab <= 0 ||
        s->n_head <= 0 || s->n_head_kv <= 0 || s->dim % s->n_head)
        return 0;
    const int64_t kv = (int64_t)s->dim / s->n_head * s->n_head_kv;
    size_t k = 0;
    char name[64];
    /* llama.cpp's order: non-layer tensors first, each layer's by name */
    if (!s->tied) {
        if (out) shape_tensor(&out[k], "output.weight", s->vocab, s->dim);
        k++;
    }
    if (out) shape_tensor(&out[k], "output_norm.weight", s->dim, 0);
    k++;
    if (out) shape_tensor(&out[k], "token_embd.weight", s->vocab, s->dim);
    k++;
    static const char *const parts[] = {"attn_k", "attn_norm", "attn_output", "attn_q", "attn_v",
                                        "ffn_down", "ffn_gate", "ffn_norm", "ffn_up"};
    for (int l = 0; l < s->n_layer; l++) {
        for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++, k++) {
            if (!out) continue;
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, parts[p]);
            int64_t rows = s->dim, cols = s->dim;
            switch (p) {
            case 0: case 4: rows = kv; break;           /* attn_k, attn_v */
            case 1: case 7: cols = 0; break;            /* norms */
            case 5: cols = s->ffn; break;               /* ffn_down */
            case 6: case 8: rows = s->ffn; break;       /* ffn_gate, ffn_up */
            default: break;
            }
            shape_tensor(&out[k], name, rows, cols);
        }
    }
    return k;
}

int quant_plan_bpw(const char *recipe, unsigned flags, const lpk_meta *meta,
                   const lpk_tensor *tensors, size_t n, double *bpw, lpk_error *err)
{
    quant_choice *ch = calloc(n ? n : 1, sizeof *ch);
    if (!ch) return lpk_err(err, LPK_ENOMEM, "out of memory");
    int rc = quant_plan(recipe, flags, meta, tensors, n, ch, err);
    uint64_t bytes = 0, elems = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t ne = lpk_tensor_nelems(&tensors[i]), b = 0;
        if (lpk_type_nbytes(ch[i].type, ne, &b))
            rc = lpk_err(err, LPK_EINVAL, "%s: %llu values do not fit type %s", tensors[i].name,
                         (unsigned long long)ne, tname(ch[i].type));
        bytes += b;
        elems += ne;
    }
    free(ch);
    if (!rc && bpw) *bpw = elems ? 8.0 * (double)bytes / (double)elems : 0.0;
    return rc;
}

unsigned quant_rows_flags(const char *name, const lpk_tensor *tensors, size_t n)
{
    unsigned f = QUANT_ROWS_OUTPUT_WEIGHTING;
    if (strcmp(name, "output.weight") == 0) return f | QUANT_ROWS_HEAD;
    if (strcmp(name, "token_embd.weight") != 0) return f;
    for (size_t i = 0; i < n; i++)
        if (strcmp(tensors[i].name, "output.weight") == 0) return f | QUANT_ROWS_LOOKUP;
    /* tied: the embedding is also the output matrix */
    return f | QUANT_ROWS_HEAD;
}
