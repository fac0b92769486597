/* The model mapping of `llmpack export`: container keys and tensors -> what
 * llama.cpp expects in a LLaMA GGUF file (docs/GGUF.md). */
#include "lpk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_EXPORT_ALIGN 32u

enum want { W_U32, W_F32, W_BOOL, W_STR, W_ASTR, W_AF32, W_AI32 };

/* The keys llama.cpp reads for a LLaMA model, in the order they are written. */
static const struct known_key {
    const char *key;
    enum want want;
} known[] = {
    {"general.architecture", W_STR},
    {"general.name", W_STR},
    {"llama.context_length", W_U32},
    {"llama.embedding_length", W_U32},
    {"llama.block_count", W_U32},
    {"llama.feed_forward_length", W_U32},
    {"llama.rope.dimension_count", W_U32},
    {"llama.attention.head_count", W_U32},
    {"llama.attention.head_count_kv", W_U32},
    {"llama.attention.layer_norm_rms_epsilon", W_F32},
    {"llama.rope.freq_base", W_F32},
    {"llama.rope.scaling.type", W_STR},
    {"llama.rope.scaling.factor", W_F32},
    {"llama.rope.scaling.original_context_length", W_U32},
    {"llama.rope.scaling.finetuned", W_BOOL},
    {"llama.vocab_size", W_U32},
    {"tokenizer.ggml.model", W_STR},
    {"tokenizer.ggml.pre", W_STR},
    {"tokenizer.ggml.tokens", W_ASTR},
    {"tokenizer.ggml.scores", W_AF32},
    {"tokenizer.ggml.token_type", W_AI32},
    {"tokenizer.ggml.merges", W_ASTR},
    {"tokenizer.ggml.bos_token_id", W_U32},
    {"tokenizer.ggml.eos_token_id", W_U32},
    {"tokenizer.ggml.unknown_token_id", W_U32},
    {"tokenizer.ggml.seperator_token_id", W_U32}, /* sic: llama.cpp's spelling */
    {"tokenizer.ggml.padding_token_id", W_U32},
    {"tokenizer.ggml.cls_token_id", W_U32},
    {"tokenizer.ggml.mask_token_id", W_U32},
    {"tokenizer.ggml.add_bos_token", W_BOOL},
    {"tokenizer.ggml.add_eos_token", W_BOOL},
    {"tokenizer.ggml.add_space_prefix", W_BOOL},
    {"tokenizer.ggml.remove_extra_whitespaces", W_BOOL},
    {"tokenizer.chat_template", W_STR},
    {"general.file_type", W_U32},
};
#define N_KNOWN (sizeof known / sizeof known[0])

/* Keys export sets itself, whatever the source holds. */
static const char *const own_keys[] = {"general.quantization_version", "general.alignment"};

static int is_known(const char *key)
{
    for (size_t i = 0; i < N_KNOWN; i++)
        if (!strcmp(known[i].key, key)) return 1;
    for (size_t i = 0; i < sizeof own_keys / sizeof own_keys[0]; i++)
        if (!strcmp(own_keys[i], key)) return 1;
    return 0;
}

/* Any numeric scalar or array element as a double; 0 if not numeric. */
static int num_at(const lpk_kv *kv, uint64_t i, double *out)
{
    int t = kv->type == LPK_V_ARR ? kv->elem : kv->type;
    size_t es = lpk_vtype_size(t);
    if (!es || t == LPK_V_BOOL) return 0;
    const uint8_t *p = (const uint8_t *)kv->data + i * es;
    switch (t) {
    case LPK_V_U8: *out = *p; break;
    case LPK_V_I8: *out = (int8_t)*p; break;
    case LPK_V_U16: { uint16_t v; memcpy(&v, p, 2); *out = v; break; }
    case LPK_V_I16: { int16_t v; memcpy(&v, p, 2); *out = v; break; }
    case LPK_V_U32: { uint32_t v; memcpy(&v, p, 4); *out = v; break; }
    case LPK_V_I32: { int32_t v; memcpy(&v, p, 4); *out = v; break; }
    case LPK_V_F32: { float v; memcpy(&v, p, 4); *out = v; break; }
    case LPK_V_U64: { uint64_t v; memcpy(&v, p, 8); *out = (double)v; break; }
    case LPK_V_I64: { int64_t v; memcpy(&v, p, 8); *out = (double)v; break; }
    case LPK_V_F64: memcpy(out, p, 8); break;
    default: return 0;
    }
    return 1;
}

static int is_int_type(int t) { return t != LPK_V_F32 && t != LPK_V_F64 && lpk_vtype_size(t) && t != LPK_V_BOOL; }

/* Copies src's key into dst converted to `want`; LPK_ECORRUPT naming the key when
 * the stored type or value does not convert exactly. */
static int put_converted(lpk_meta *dst, const lpk_kv *kv, enum want want, const char *path,
                         lpk_error *err)
{
    const char *k = kv->key;
    int st = LPK_OK;
    double d;
    switch (want) {
    case W_U32:
        if (kv->type == LPK_V_ARR || !is_int_type(kv->type) || !num_at(kv, 0, &d) || d < 0 ||
            d > 4294967295.0)
            goto bad;
        st = lpk_meta_set_u32(dst, k, (uint32_t)d);
        break;
    case W_F32:
        if (kv->type == LPK_V_ARR || !num_at(kv, 0, &d)) goto bad;
        st = lpk_meta_set_f32(dst, k, (float)d);
        break;
    case W_BOOL:
        if (kv->type != LPK_V_BOOL) goto bad;
        st = lpk_meta_set_bool(dst, k, *(const uint8_t *)kv->data);
        break;
    case W_STR:
        if (kv->type != LPK_V_STR) goto bad;
        st = lpk_meta_set_strn(dst, k, kv->str.p, kv->str.n);
        break;
    case W_ASTR:
        if (kv->type != LPK_V_ARR || kv->elem != LPK_V_STR) goto bad;
        st = lpk_meta_set_kv(dst, kv);
        break;
    case W_AF32:
    case W_AI32: {
        if (kv->type != LPK_V_ARR || kv->elem == LPK_V_STR || kv->elem == LPK_V_BOOL) goto bad;
        if (want == W_AI32 && !is_int_type(kv->elem)) goto bad;
        size_t n = kv->count ? (size_t)kv->count : 1;
        void *v = malloc(n * 4);
        if (!v) { st = LPK_ENOMEM; break; }
        for (uint64_t i = 0; i < kv->count; i++) {
            num_at(kv, i, &d);
            if (want == W_AF32) {
                ((float *)v)[i] = (float)d;
            } else {
                if (d < -2147483648.0 || d > 2147483647.0) { free(v); goto bad; }
                ((int32_t *)v)[i] = (int32_t)d;
            }
        }
        st = lpk_meta_set_arr(dst, k, want == W_AF32 ? LPK_V_F32 : LPK_V_I32, v, kv->count);
        free(v);
        break;
    }
    }
    if (st) return lpk_err(err, st, "%s: key '%s': out of memory", path, k);
    return LPK_OK;
bad:
    return lpk_err(err, LPK_ECORRUPT,
                   "%s: key '%s' is %s%s%s, which does not convert to the %s llama.cpp reads",
                   path, k, lpk_vtype_name(kv->type), kv->type == LPK_V_ARR ? " of " : "",
                   kv->type == LPK_V_ARR ? lpk_vtype_name(kv->elem) : "",
                   want == W_U32 ? "u32" : want == W_F32 ? "f32" : want == W_BOOL ? "bool"
                   : want == W_STR ? "str" : want == W_ASTR ? "str[]"
                   : want == W_AF32 ? "f32[]" : "i32[]");
}

static int is_llmpack_only(const char *key)
{
    return !strncmp(key, "source.", 7) || !strncmp(key, "quant.", 6) ||
           !strcmp(key, "tokenizer.pre_regex") || !strcmp(key, "tokenizer.ignore_merges") ||
           !strcmp(key, "tokenizer.eos_token_ids") ||
           !strcmp(key, "llama.rope.scaling.low_freq_factor") ||
           !strcmp(key, "llama.rope.scaling.high_freq_factor");
}

/* llama.cpp's llama_ftype for a container without general.file_type: from the type
 * holding the most elements among 2-D tensors. */
static uint32_t derive_file_type(const lpk_reader *r)
{
    uint64_t by_type[LPK_TYPE_COUNT] = {0};
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (t->n_dims >= 2 && t->type >= 0 && t->type < LPK_TYPE_COUNT)
            by_type[t->type] += lpk_tensor_nelems(t);
    }
    int best = LPK_TYPE_F32;
    for (int t = 0; t < LPK_TYPE_COUNT; t++)
        if (by_type[t] > by_type[best]) best = t;
    switch (best) {
    case LPK_TYPE_F16: return 1;
    case LPK_TYPE_Q4_0: return 2;
    case LPK_TYPE_Q4_1: return 3;
    case LPK_TYPE_Q8_0: return 7;
    case LPK_TYPE_Q5_0: return 8;
    case LPK_TYPE_Q5_1: return 9;
    case LPK_TYPE_Q4_K: return by_type[LPK_TYPE_Q6_K] ? 15 : 14; /* Q4_K_M : Q4_K_S */
    case LPK_TYPE_Q6_K: return 18;
    /* the ftype llama-quantize records for these types alone (q3_k and q5_k mean
     * Q3_K_M and Q5_K_M there) */
    case LPK_TYPE_Q2_K: return 10;
    case LPK_TYPE_Q3_K: return 12;
    case LPK_TYPE_Q5_K: return 17;
    case LPK_TYPE_IQ4_NL: return 25;
    case LPK_TYPE_IQ4_XS: return 30;
    case LPK_TYPE_BF16: return 32;
    default: return 0;
    }
}

void lpk_gguf_llama3_rope_factors(uint32_t rot_dims, float base, float factor,
                                  float low_freq_factor, float high_freq_factor,
                                  uint32_t original_ctx, float *out)
{
    /* Same order of f32 operations as llama.cpp's converter (torch float32 tensors
     * against Python scalars). */
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    const float low_wavelen = (float)((double)original_ctx / low_freq_factor);
    const float high_wavelen = (float)((double)original_ctx / high_freq_factor);
    for (uint32_t i = 0; i < rot_dims / 2; i++) {
        float e = (float)(2 * i) / (float)rot_dims;
        float freq = 1.0f / powf(base, e);
        float wavelen = two_pi / freq;
        if (wavelen < high_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            out[i] = factor;
        } else {
            float smooth = ((float)original_ctx / wavelen - low_freq_factor) /
                           (high_freq_factor - low_freq_factor);
            out[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
}

void lpk_gguf_plan_free(lpk_gguf_plan *p)
{
    if (!p) return;
    lpk_meta_free(p->meta);
    if (p->extra)
        for (size_t i = 0; i < p->n_tensors; i++) free(p->extra[i]);
    free(p->extra);
    free(p->src);
    free(p->decls);
    memset(p, 0, sizeof *p);
}

static int need_u32(const lpk_meta *m, const char *key, uint32_t *v, const char *path,
                    lpk_error *err)
{
    int st = lpk_meta_get_u32(m, key, v);
    if (st == LPK_ENOTFOUND)
        return lpk_err(err, LPK_ENOTFOUND, "%s: required key '%s' is missing", path, key);
    if (st) return lpk_err(err, LPK_ECORRUPT, "%s: key '%s' is not a u32 value", path, key);
    return LPK_OK;
}

/* Values for keys a container may lack, derived the way llama.cpp derives them
 * (head_dim = dim / heads, no GQA, vocabulary = embedding rows). */
static int derived_keys(const lpk_reader *r, const char *name, lpk_meta **out)
{
    const lpk_meta *s = lpk_reader_meta(r);
    lpk_meta *d = *out = lpk_meta_new();
    if (!d) return LPK_ENOMEM;
    uint32_t dim, heads;
    int st = LPK_OK;
    if (name && *name) st = lpk_meta_set_str(d, "general.name", name);
    if (!st && !lpk_meta_get_u32(s, "llama.attention.head_count", &heads) && heads) {
        st = lpk_meta_set_u32(d, "llama.attention.head_count_kv", heads);
        if (!st && !lpk_meta_get_u32(s, "llama.embedding_length", &dim) && dim % heads == 0)
            st = lpk_meta_set_u32(d, "llama.rope.dimension_count", dim / heads);
    }
    const lpk_tensor *emb = lpk_reader_find(r, "token_embd.weight");
    if (!st && emb && emb->n_dims == 2 && emb->dims[0] <= UINT32_MAX)
        st = lpk_meta_set_u32(d, "llama.vocab_size", (uint32_t)emb->dims[0]);
    if (!st) st = lpk_meta_set_u32(d, "general.file_type", derive_file_type(r));
    return st;
}

/* LLaMA-3 scaling: the factors tensor replaces the scaling keys. */
static int plan_rope_freqs(const lpk_reader *r, lpk_meta *m, lpk_gguf_plan *p, const char *path,
                           lpk_error *err)
{
    const char *type = lpk_meta_get_str(lpk_reader_meta(r), "llama.rope.scaling.type");
    if (!type || strcmp(type, "llama3")) return LPK_OK;
    /* llama.cpp knows no "llama3" scaling type and would apply factor as linear
     * scaling: the factors tensor replaces both keys */
    p->n_dropped += lpk_meta_remove(m, "llama.rope.scaling.type") == LPK_OK;
    p->n_dropped += lpk_meta_remove(m, "llama.rope.scaling.factor") == LPK_OK;
    if (lpk_reader_find(r, "rope_freqs.weight")) return LPK_OK;
    const lpk_meta *s = lpk_reader_meta(r);
    uint32_t rot, octx = 8192;
    float base = 10000.0f, factor = 8.0f, lo = 1.0f, hi = 4.0f;
    int st = lpk_meta_get_u32(m, "llama.rope.dimension_count", &rot);
    if (st || rot < 2 || rot % 2)
        return lpk_err(err, LPK_ECORRUPT, "%s: llama3 RoPE scaling needs an even "
                       "llama.rope.dimension_count", path);
    lpk_meta_get_f32(m, "llama.rope.freq_base", &base);
    lpk_meta_get_f32(s, "llama.rope.scaling.factor", &factor);
    lpk_meta_get_f32(s, "llama.rope.scaling.low_freq_factor", &lo);
    lpk_meta_get_f32(s, "llama.rope.scaling.high_freq_factor", &hi);
    lpk_meta_get_u32(s, "llama.rope.scaling.original_context_length", &octx);
    if (!(hi > lo) || !(lo > 0) || !(factor > 0) || !octx || !(base > 1))
        return lpk_err(err, LPK_EBADVALUE,
                       "%s: llama3 RoPE scaling parameters are unusable (factor %g, low %g, "
                       "high %g, original context %u, base %g)", path, factor, lo, hi, octx,
                       base);
    size_t i = p->n_tensors++;
    lpk_tensor *d = &p->decls[i];
    memset(d, 0, sizeof *d);
    strcpy(d->name, "rope_freqs.weight");
    d->type = LPK_TYPE_F32;
    d->n_dims = 1;
    d->dims[0] = rot / 2;
    d->size = (uint64_t)(rot / 2) * 4;
    p->src[i] = -1;
    p->extra[i] = malloc((size_t)d->size);
    if (!p->extra[i]) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    lpk_gguf_llama3_rope_factors(rot, base, factor, lo, hi, octx, p->extra[i]);
    return LPK_OK;
}

int lpk_gguf_plan_make(const lpk_reader *r, const char *name, unsigned flags,
                       lpk_gguf_plan *p, lpk_error *err)
{
    memset(p, 0, sizeof *p);
    const char *path = lpk_reader_path(r);
    const lpk_meta *s = lpk_reader_meta(r);
    const char *arch = lpk_meta_get_str(s, "general.architecture");
    if (!arch)
        return lpk_err(err, LPK_ENOTFOUND, "%s: required key 'general.architecture' is missing",
                       path);
    if (strcmp(arch, "llama"))
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: architecture '%s' (GGUF export supports 'llama')", path, arch);
    /* llama.cpp refuses a LLaMA GGUF without a vocabulary */
    const lpk_kv *toks = lpk_meta_find(s, "tokenizer.ggml.tokens");
    if (!toks || toks->type != LPK_V_ARR || !toks->count)
        return lpk_err(err, LPK_ENOTFOUND, "%s: no tokenizer (tokenizer.ggml.tokens), which "
                       "llama.cpp needs; convert the checkpoint with its tokenizer (--tokenizer "
                       "FILE)", path);
    size_t nt = lpk_reader_n_tensors(r);
    p->meta = lpk_meta_new();
    p->decls = calloc(nt + 1, sizeof *p->decls);
    p->src = calloc(nt + 1, sizeof *p->src);
    p->extra = calloc(nt + 1, sizeof *p->extra);
    lpk_meta *dflt = NULL;
    int st = LPK_OK;
    if (!p->meta || !p->decls || !p->src || !p->extra) {
        st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    lpk_meta *m = p->meta;
    if ((st = derived_keys(r, name, &dflt))) {
        st = lpk_err(err, st, "%s: out of memory", path);
        goto fail;
    }
    /* known keys in llama.cpp's order; derived values fill the gaps in place, so
     * exporting an export gives the same file */
    for (size_t i = 0; i < N_KNOWN && !st; i++) {
        const lpk_kv *kv = lpk_meta_find(s, known[i].key);
        if (!kv) kv = lpk_meta_find(dflt, known[i].key);
        if (kv) st = put_converted(m, kv, known[i].want, path, err);
    }
    if (st) goto fail;
    /* required hyperparameters */
    static const char *const required[] = {
        "llama.context_length", "llama.embedding_length", "llama.block_count",
        "llama.feed_forward_length", "llama.attention.head_count"};
    uint32_t v[5];
    for (size_t i = 0; i < 5 && !st; i++) st = need_u32(m, required[i], &v[i], path, err);
    if (st) goto fail;
    if (!lpk_meta_find(m, "llama.attention.layer_norm_rms_epsilon")) {
        st = lpk_err(err, LPK_ENOTFOUND,
                     "%s: required key 'llama.attention.layer_norm_rms_epsilon' is missing", path);
        goto fail;
    }
    if (lpk_meta_set_u32(m, "general.quantization_version", 2) ||
        lpk_meta_set_u32(m, "general.alignment", GGUF_EXPORT_ALIGN)) {
        st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if ((st = plan_rope_freqs(r, m, p, path, err))) goto fail;
    /* everything else, in source order; llmpack's own keys unless stripped */
    for (size_t i = 0; i < lpk_meta_count(s) && !st; i++) {
        const lpk_kv *kv = lpk_meta_at(s, i);
        if (is_known(kv->key)) continue;
        if ((flags & LPK_GGUF_STRIP) && is_llmpack_only(kv->key)) {
            p->n_dropped++;
            continue;
        }
        if (lpk_meta_set_kv(m, kv)) st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    }
    if (st) goto fail;

    for (size_t i = 0; i < nt; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        size_t j = p->n_tensors++;
        lpk_tensor *d = &p->decls[j];
        memset(d, 0, sizeof *d);
        memcpy(d->name, t->name, sizeof d->name);
        d->type = t->type;
        d->n_dims = t->n_dims;
        memcpy(d->dims, t->dims, sizeof d->dims);
        d->size = t->size;
        p->src[j] = (long)i;
    }
    lpk_meta_free(dflt);
    return LPK_OK;
fail:
    lpk_meta_free(dflt);
    lpk_gguf_plan_free(p);
    return st;
}
