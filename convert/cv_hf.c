/* Hugging Face folders: names, config.json / generation_config.json, and the
 * safetensors source (one file or shards + model.safetensors.index.json). */
#include "cv_internal.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- names */
static const struct { const char *hf, *canon; int permute; } hf_layer_names[] = {
    {"input_layernorm.weight", "attn_norm.weight", CV_PERMUTE_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", CV_PERMUTE_Q},
    {"self_attn.k_proj.weight", "attn_k.weight", CV_PERMUTE_K},
    {"self_attn.v_proj.weight", "attn_v.weight", CV_PERMUTE_NONE},
    {"self_attn.o_proj.weight", "attn_output.weight", CV_PERMUTE_NONE},
    {"post_attention_layernorm.weight", "ffn_norm.weight", CV_PERMUTE_NONE},
    {"mlp.gate_proj.weight", "ffn_gate.weight", CV_PERMUTE_NONE},
    {"mlp.down_proj.weight", "ffn_down.weight", CV_PERMUTE_NONE},
    {"mlp.up_proj.weight", "ffn_up.weight", CV_PERMUTE_NONE},
};

static const struct { const char *meta, *canon; } meta_layer_names[] = {
    {"attention_norm.weight", "attn_norm.weight"},
    {"attention.wq.weight", "attn_q.weight"},
    {"attention.wk.weight", "attn_k.weight"},
    {"attention.wv.weight", "attn_v.weight"},
    {"attention.wo.weight", "attn_output.weight"},
    {"ffn_norm.weight", "ffn_norm.weight"},
    {"feed_forward.w1.weight", "ffn_gate.weight"},
    {"feed_forward.w2.weight", "ffn_down.weight"},
    {"feed_forward.w3.weight", "ffn_up.weight"},
};

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* "PREFIXN.rest": layer number (no sign, no leading zeros, < 1e6) and rest. */
static int split_layer(const char *s, const char *prefix, long *layer, const char **rest)
{
    size_t pl = strlen(prefix);
    if (strncmp(s, prefix, pl)) return 0;
    const char *p = s + pl;
    long v = 0;
    int nd = 0;
    while (*p >= '0' && *p <= '9') {
        if (++nd > 6 || (nd == 2 && v == 0)) return 0;
        v = v * 10 + (*p++ - '0');
    }
    if (!nd || *p != '.') return 0;
    *layer = v;
    *rest = p + 1;
    return 1;
}

int cv_name_from_hf(const char *hf, char *out, size_t n, int *permute)
{
    *permute = CV_PERMUTE_NONE;
    if (ends_with(hf, ".rotary_emb.inv_freq")) return CV_NAME_SKIP;
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, n, "token_embd.weight"), 0;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(out, n, "output_norm.weight"), 0;
    if (!strcmp(hf, "lm_head.weight")) return snprintf(out, n, "output.weight"), 0;
    long l;
    const char *rest;
    if (!split_layer(hf, "model.layers.", &l, &rest)) return CV_NAME_UNKNOWN;
    for (size_t i = 0; i < sizeof hf_layer_names / sizeof hf_layer_names[0]; i++)
        if (!strcmp(rest, hf_layer_names[i].hf)) {
            snprintf(out, n, "blk.%ld.%s", l, hf_layer_names[i].canon);
            *permute = hf_layer_names[i].permute;
            return CV_NAME_OK;
        }
    return CV_NAME_UNKNOWN;
}

int cv_name_from_meta(const char *m, char *out, size_t n)
{
    if (!strcmp(m, "rope.freqs")) return CV_NAME_SKIP;
    if (!strcmp(m, "tok_embeddings.weight")) return snprintf(out, n, "token_embd.weight"), 0;
    if (!strcmp(m, "norm.weight")) return snprintf(out, n, "output_norm.weight"), 0;
    if (!strcmp(m, "output.weight")) return snprintf(out, n, "output.weight"), 0;
    long l;
    const char *rest;
    if (!split_layer(m, "layers.", &l, &rest)) return CV_NAME_UNKNOWN;
    if (!strcmp(rest, "attention.inner_attention.rope.freqs")) return CV_NAME_SKIP;
    for (size_t i = 0; i < sizeof meta_layer_names / sizeof meta_layer_names[0]; i++)
        if (!strcmp(rest, meta_layer_names[i].meta)) {
            snprintf(out, n, "blk.%ld.%s", l, meta_layer_names[i].canon);
            return CV_NAME_OK;
        }
    return CV_NAME_UNKNOWN;
}

/* ---------------------------------------------------------------- hparams */
int cv_hparams_to_meta(const cv_hparams *hp, lpk_meta *m, lpk_error *err)
{
    int rc = lpk_meta_set_str(m, "general.architecture", "llama");
    if (!rc) rc = lpk_meta_set_u32(m, "llama.context_length", (uint32_t)hp->ctx);
    if (!rc) rc = lpk_meta_set_u32(m, "llama.embedding_length", (uint32_t)hp->dim);
    if (!rc) rc = lpk_meta_set_u32(m, "llama.block_count", (uint32_t)hp->n_layers);
    if (!rc) rc = lpk_meta_set_u32(m, "llama.feed_forward_length", (uint32_t)hp->ffn);
    if (!rc) rc = lpk_meta_set_u32(m, "llama.attention.head_count", (uint32_t)hp->n_head);
    if (!rc) rc = lpk_meta_set_u32(m, "llama.attention.head_count_kv", (uint32_t)hp->n_kv);
    if (!rc) rc = lpk_meta_set_f32(m, "llama.attention.layer_norm_rms_epsilon", (float)hp->eps);
    if (!rc) rc = lpk_meta_set_u32(m, "llama.rope.dimension_count", (uint32_t)hp->head_dim);
    if (!rc) rc = lpk_meta_set_f32(m, "llama.rope.freq_base", (float)hp->rope_theta);
    if (!rc) rc = lpk_meta_set_u32(m, "llama.vocab_size", (uint32_t)hp->vocab);
    return rc ? lpk_err(err, LPK_ENOMEM, "out of memory") : LPK_OK;
}

int cv_hparams_from_meta(const lpk_meta *m, cv_hparams *hp, const char *what, lpk_error *err)
{
    static const char *keys[] = {
        "llama.embedding_length", "llama.feed_forward_length", "llama.block_count",
        "llama.attention.head_count", "llama.attention.head_count_kv", "llama.vocab_size",
        "llama.rope.dimension_count", "llama.context_length"};
    int64_t *dst[] = {&hp->dim, &hp->ffn, &hp->n_layers, &hp->n_head,
                      &hp->n_kv, &hp->vocab, &hp->head_dim, &hp->ctx};
    int tie = hp->tie;
    memset(hp, 0, sizeof *hp);
    hp->tie = tie;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        uint32_t v;
        if (lpk_meta_get_u32(m, keys[i], &v))
            return lpk_err(err, LPK_ENOTFOUND, "%s: no %s", what, keys[i]);
        *dst[i] = v;
    }
    float f;
    if (!lpk_meta_get_f32(m, "llama.attention.layer_norm_rms_epsilon", &f)) hp->eps = f;
    if (!lpk_meta_get_f32(m, "llama.rope.freq_base", &f)) hp->rope_theta = f;
    return LPK_OK;
}

/* Positive integer field fitting u32; def if absent (def < 0: required). */
static int cfg_int(const char *name, json_t *root, const char *key, int64_t def, int64_t *out,
                   lpk_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return lpk_err(err, LPK_ENOTFOUND, "%s: no \"%s\"", name, key);
        *out = def;
        return LPK_OK;
    }
    double d = json_is_integer(v) ? (double)json_integer_value(v)
               : json_is_real(v)  ? json_real_value(v) : -1;
    if (!(d > 0) || d > (double)UINT32_MAX || d != (double)(int64_t)d)
        return lpk_err(err, LPK_ECORRUPT, "%s: \"%s\" must be a positive integer", name, key);
    *out = (int64_t)d;
    return LPK_OK;
}

static int cfg_num(const char *name, json_t *root, const char *key, double def, double *out,
                   lpk_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LPK_OK;
    }
    if (!json_is_number(v) || !(json_number_value(v) > 0))
        return lpk_err(err, LPK_ECORRUPT, "%s: \"%s\" must be a positive number", name, key);
    *out = json_number_value(v);
    return LPK_OK;
}

static int cfg_rope_scaling(const char *name, json_t *rs, lpk_meta *m, lpk_error *err)
{
    if (!rs || json_is_null(rs)) return LPK_OK;
    if (!json_is_object(rs))
        return lpk_err(err, LPK_ECORRUPT, "%s: \"rope_scaling\" must be an object", name);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : NULL;
    if (!type) return lpk_err(err, LPK_ECORRUPT, "%s: rope_scaling has no type", name);
    if (!strcmp(type, "default")) return LPK_OK;
    double factor;
    int rc = cfg_num(name, rs, "factor", 0, &factor, err);
    if (rc) return rc;
    if (!(factor > 0)) return lpk_err(err, LPK_ECORRUPT, "%s: rope_scaling has no factor", name);
    if (!strcmp(type, "linear")) {
        rc = lpk_meta_set_str(m, "llama.rope.scaling.type", "linear");
        if (!rc) rc = lpk_meta_set_f32(m, "llama.rope.scaling.factor", (float)factor);
        return rc ? lpk_err(err, LPK_ENOMEM, "out of memory") : LPK_OK;
    }
    if (!strcmp(type, "llama3")) {
        double lo, hi;
        int64_t orig;
        if ((rc = cfg_num(name, rs, "low_freq_factor", 1.0, &lo, err)) ||
            (rc = cfg_num(name, rs, "high_freq_factor", 4.0, &hi, err)) ||
            (rc = cfg_int(name, rs, "original_max_position_embeddings", -1, &orig, err)))
            return rc;
        rc = lpk_meta_set_str(m, "llama.rope.scaling.type", "llama3");
        if (!rc) rc = lpk_meta_set_f32(m, "llama.rope.scaling.factor", (float)factor);
        if (!rc)
            rc = lpk_meta_set_u32(m, "llama.rope.scaling.original_context_length", (uint32_t)orig);
        if (!rc) rc = lpk_meta_set_f32(m, "llama.rope.scaling.low_freq_factor", (float)lo);
        if (!rc) rc = lpk_meta_set_f32(m, "llama.rope.scaling.high_freq_factor", (float)hi);
        return rc ? lpk_err(err, LPK_ENOMEM, "out of memory") : LPK_OK;
    }
    return lpk_err(err, LPK_EUNSUPPORTED, "%s: rope_scaling type \"%s\" not supported "
                   "(linear, llama3 are)", name, type);
}

/* A token id: a non-negative integer (or integral real) below 2^32, else -1. */
static int64_t cfg_id(json_t *v)
{
    double d = json_is_integer(v) ? (double)json_integer_value(v)
               : json_is_real(v)  ? json_real_value(v) : -1;
    return d >= 0 && d <= (double)UINT32_MAX && d == (double)(int64_t)d ? (int64_t)d : -1;
}

/* bos/eos: an integer, or (eos) a list of integers; anything else (null, a
 * string, a negative number) says nothing. The final ids are decided by
 * cv_vocab_finish with llama.cpp's precedence; these are fallbacks. */
static int cfg_special_ids(json_t *root, lpk_meta *m, lpk_error *err)
{
    int64_t b = cfg_id(json_object_get(root, "bos_token_id"));
    if (b >= 0 && lpk_meta_set_u32(m, "tokenizer.ggml.bos_token_id", (uint32_t)b))
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    json_t *e = json_object_get(root, "eos_token_id");
    uint32_t ids[64];
    size_t n = 0;
    if (cfg_id(e) >= 0) {
        ids[n++] = (uint32_t)cfg_id(e);
    } else if (json_is_array(e)) {
        size_t i;
        json_t *x;
        json_array_foreach(e, i, x)
            if (cfg_id(x) >= 0 && n < 64) ids[n++] = (uint32_t)cfg_id(x);
    }
    if (!n) return LPK_OK;
    int rc = lpk_meta_set_u32(m, "tokenizer.ggml.eos_token_id", ids[0]);
    if (!rc && n > 1) rc = lpk_meta_set_arr(m, "tokenizer.eos_token_ids", LPK_V_U32, ids, n);
    return rc ? lpk_err(err, LPK_ENOMEM, "out of memory") : LPK_OK;
}

static json_t *load_json(const char *name, const uint8_t *buf, size_t n, lpk_error *err)
{
    return cv_json_load(name, buf, n, 0, err);
}

int cv_hf_config_parse(const char *name, const uint8_t *buf, size_t n, cv_hparams *hp,
                       lpk_meta *m, lpk_error *err)
{
    json_t *root = load_json(name, buf, n, err);
    if (!root) return err ? err->status : LPK_ECORRUPT;
    int rc = LPK_OK;
    memset(hp, 0, sizeof *hp);
    /* Architecture: LlamaForCausalLM (or model_type "llama"). */
    json_t *arch = json_object_get(root, "architectures");
    json_t *mt = json_object_get(root, "model_type");
    const char *a0 = json_is_array(arch) && json_is_string(json_array_get(arch, 0))
                         ? json_string_value(json_array_get(arch, 0)) : NULL;
    const char *mts = json_is_string(mt) ? json_string_value(mt) : NULL;
    /* Mistral 7B is LLaMA's architecture with a sliding attention window;
     * llama.cpp converts it as llama too. */
    if (a0 && strcmp(a0, "LlamaForCausalLM") && strcmp(a0, "LLaMAForCausalLM") &&
        strcmp(a0, "MistralForCausalLM")) {
        rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: architecture %s not supported "
                     "(LlamaForCausalLM and MistralForCausalLM are)", name, a0);
        goto out;
    }
    if (mts && strcmp(mts, "llama") && strcmp(mts, "mistral")) {
        rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: model_type \"%s\" not supported (llama and "
                     "mistral are)", name, mts);
        goto out;
    }
    if (!a0 && !mts) {
        rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: names no architecture (architectures / "
                     "model_type)", name);
        goto out;
    }
    json_t *act = json_object_get(root, "hidden_act");
    if (json_is_string(act) && strcmp(json_string_value(act), "silu")) {
        rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: hidden_act \"%s\" not supported (silu is)",
                     name, json_string_value(act));
        goto out;
    }
    if (json_is_true(json_object_get(root, "attention_bias")) ||
        json_is_true(json_object_get(root, "mlp_bias"))) {
        rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: bias tensors (attention_bias / mlp_bias) "
                     "not supported", name);
        goto out;
    }
    if ((rc = cfg_int(name, root, "hidden_size", -1, &hp->dim, err)) ||
        (rc = cfg_int(name, root, "intermediate_size", -1, &hp->ffn, err)) ||
        (rc = cfg_int(name, root, "num_hidden_layers", -1, &hp->n_layers, err)) ||
        (rc = cfg_int(name, root, "num_attention_heads", -1, &hp->n_head, err)) ||
        (rc = cfg_int(name, root, "vocab_size", -1, &hp->vocab, err)) ||
        (rc = cfg_int(name, root, "num_key_value_heads", hp->n_head, &hp->n_kv, err)) ||
        (rc = cfg_int(name, root, "max_position_embeddings", 2048, &hp->ctx, err)) ||
        (rc = cfg_num(name, root, "rms_norm_eps", 1e-6, &hp->eps, err)) ||
        (rc = cfg_num(name, root, "rope_theta", 10000.0, &hp->rope_theta, err)))
        goto out;
    if (hp->dim % hp->n_head && !json_object_get(root, "head_dim")) {
        rc = lpk_err(err, LPK_ECORRUPT, "%s: hidden_size %lld is not a multiple of "
                     "num_attention_heads %lld", name, (long long)hp->dim, (long long)hp->n_head);
        goto out;
    }
    if ((rc = cfg_int(name, root, "head_dim", hp->dim / hp->n_head, &hp->head_dim, err)))
        goto out;
    if (hp->n_head % hp->n_kv || hp->head_dim % 2) {
        rc = lpk_err(err, LPK_ECORRUPT, "%s: %lld heads, %lld kv heads, head dim %lld: kv "
                     "heads must divide heads and the head dim must be even", name,
                     (long long)hp->n_head, (long long)hp->n_kv, (long long)hp->head_dim);
        goto out;
    }
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    /* LlamaConfig's default is untied */
    hp->tie = json_is_boolean(tie) && json_is_true(tie) ? CV_TIE_TIED : CV_TIE_UNTIED;
    if ((rc = cv_hparams_to_meta(hp, m, err)) ||
        (rc = cfg_rope_scaling(name, json_object_get(root, "rope_scaling"), m, err)) ||
        (rc = cfg_special_ids(root, m, err)))
        goto out;
    /* config's name: "meta-llama/Llama-2-7b-hf" -> "Llama-2-7b-hf" (a local
     * path as well: its last component); cv_hf_folder_meta prefers the
     * folder's name unless that one says nothing */
    const char *np = json_string_value(json_object_get(root, "_name_or_path"));
    if (np) {
        char nb[256];
        snprintf(nb, sizeof nb, "%s", np);
        size_t l = strlen(nb);
        while (l && nb[l - 1] == '/') nb[--l] = 0;
        const char *b = strrchr(nb, '/');
        b = b ? b + 1 : nb;
        if (*b && lpk_meta_set_str(m, "general.name", b)) {
            rc = lpk_err(err, LPK_ENOMEM, "out of memory");
            goto out;
        }
    }
    int64_t sw = cfg_id(json_object_get(root, "sliding_window"));
    if (sw > 0 && lpk_meta_set_u32(m, "llama.attention.sliding_window", (uint32_t)sw))
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
out:
    json_decref(root);
    return rc;
}

int cv_hf_genconfig_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *m,
                          lpk_error *err)
{
    json_t *root = load_json(name, buf, n, err);
    if (!root) return err ? err->status : LPK_ECORRUPT;
    int rc = cfg_special_ids(root, m, err);
    json_decref(root);
    return rc;
}

/* Sources that write source.files / file_sizes themselves (the torch readers
 * keep s->files empty): append one more file to those arrays. */
static int append_meta_file(lpk_meta *m, const char *path, lpk_error *err)
{
    const lpk_kv *f = lpk_meta_find(m, "source.files"), *z = lpk_meta_find(m, "source.file_sizes");
    if (!f || f->type != LPK_V_ARR || f->elem != LPK_V_STR) return LPK_OK;
    uint64_t n = f->count;
    char **names = calloc((size_t)n + 2, sizeof *names);
    uint64_t *sizes = calloc((size_t)n + 2, sizeof *sizes);
    int rc = names && sizes ? LPK_OK : LPK_ENOMEM;
    for (uint64_t i = 0; !rc && i < n; i++) {
        if (!(names[i] = strdup(lpk_kv_str_at(f, i).p))) rc = LPK_ENOMEM;
        if (z && z->type == LPK_V_ARR && z->elem == LPK_V_U64 && i < z->count)
            memcpy(&sizes[i], (const uint8_t *)z->data + 8 * i, 8);
    }
    const char *b = strrchr(path, '/');
    if (!rc && !(names[n] = strdup(b ? b + 1 : path))) rc = LPK_ENOMEM;
    struct stat st;
    sizes[n] = !rc && !stat(path, &st) ? (uint64_t)st.st_size : 0;
    if (!rc) rc = lpk_meta_set_str_arr(m, "source.files", (const char *const *)names, NULL, n + 1);
    if (!rc) rc = lpk_meta_set_arr(m, "source.file_sizes", LPK_V_U64, sizes, n + 1);
    for (uint64_t i = 0; names && i <= n; i++) free(names[i]);
    free(names);
    free(sizes);
    return rc ? lpk_err(err, LPK_ENOMEM, "out of memory") : LPK_OK;
}

int cv_load_tokenizer(const char *path, cv_source *s, char *warn, size_t warn_n,
                      lpk_error *err)
{
    int rc = tok_load(path, s->meta, err);
    if (!rc) snprintf(s->tokenizer, sizeof s->tokenizer, "%s", path);
    if (rc == LPK_EUNSUPPORTED && err) {
        /* A tokenizer kind not read yet does not stop the weights. */
        if (warn) snprintf(warn, warn_n, "no tokenizer: %s", err->msg);
        lpk_error_clear(err);
        return LPK_OK;
    }
    if (rc) return rc;
    if (s->n_files || !lpk_meta_find(s->meta, "source.files"))
        return cv_source_add_file(s, path, err);
    return append_meta_file(s->meta, path, err);
}

/* A folder name that does not name a model: "model", "checkpoint", a commit
 * hash (a snapshot outside Hugging Face's cache layout), ... */
static int generic_name(const char *s)
{
    static const char *const generic[] = {"model", "models", "checkpoint", "checkpoints",
                                          "weights", "original", "snapshot", "download", "."};
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        if (!strcasecmp(s, generic[i])) return 1;
    size_t n = strlen(s), hex = strspn(s, "0123456789abcdef");
    return n >= 7 && hex == n;
}

int cv_hf_folder_meta(const char *dir, const char *tokenizer_path, cv_hparams *hp,
                      cv_source *s, char *warn, size_t warn_n, lpk_error *err)
{
    char p[4096];
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc;
    if ((rc = cv_path_join(p, sizeof p, dir, "config.json"), rc)) return lpk_err(err, rc, "%s: path too long", dir);
    rc = cv_read_small_file(p, 16u << 20, &buf, &n, err);
    if (rc == LPK_ENOTFOUND) {
        lpk_error_clear(err);
        return lpk_err(err, LPK_ENOTFOUND, "%s: no config.json", dir);
    }
    if (rc) return rc;
    if ((rc = cv_source_add_file(s, p, err))) goto out;
    /* Tokenizer first: config.json / generation_config.json ids override its own. */
    char tp[4096] = "";
    if (tokenizer_path) {
        snprintf(tp, sizeof tp, "%s", tokenizer_path);
    } else {
        static const char *cands[] = {"tokenizer.model", "tokenizer.json"};
        for (size_t i = 0; i < 2 && !tp[0]; i++) {
            char c[4096];
            if (!cv_path_join(c, sizeof c, dir, cands[i]) && !access(c, R_OK))
                snprintf(tp, sizeof tp, "%s", c);
        }
    }
    if (tp[0]) {
        if ((rc = cv_load_tokenizer(tp, s, warn, warn_n, err))) goto out;
    } else if (warn) {
        snprintf(warn, warn_n, "no tokenizer (no tokenizer.model or tokenizer.json in %s)", dir);
    }
    cv_special_ids own;
    cv_special_snapshot(s->meta, &own);
    if ((rc = cv_hf_config_parse(p, buf, n, hp, s->meta, err))) goto out;
    free(buf);
    buf = NULL;
    static const char *extra[] = {"generation_config.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        if (cv_path_join(p, sizeof p, dir, extra[i])) continue;
        rc = cv_read_small_file(p, 64u << 20, &buf, &n, err);
        if (rc == LPK_ENOTFOUND) {
            lpk_error_clear(err);
            rc = LPK_OK;
            continue;
        }
        if (rc) goto out;
        if (i == 0) {
            rc = cv_hf_genconfig_parse(p, buf, n, s->meta, err);
        } else {
            rc = tok_config_load_mem(p, buf, n, s->meta, err);
        }
        free(buf);
        buf = NULL;
        if (rc || (rc = cv_source_add_file(s, p, err))) goto out;
    }
    static const char *more[] = {"added_tokens.json", "chat_template.json"};
    for (int i = 0; i < 2; i++)
        if (!cv_path_join(p, sizeof p, dir, more[i]) && !access(p, R_OK) &&
            (rc = cv_source_add_file(s, p, err)))
            goto out;
    if ((rc = cv_vocab_finish(dir, s->meta, hp->vocab, &own, warn, warn_n, err))) goto out;
    /* The folder's name, unless it is a generic one and config.json names the
     * model: fine-tunes keep their base model's _name_or_path (alpaca-7b's
     * says huggyllama/llama-7b), so the folder a user named wins. */
    char name[256];
    cv_default_name(dir, name, sizeof name);
    if ((!generic_name(name) || !lpk_meta_find(s->meta, "general.name")) &&
        lpk_meta_set_str(s->meta, "general.name", name))
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
out:
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- safetensors source */
static int safe_shard_name(const char *s)
{
    return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

/* Adds the entries of one safetensors file; `index` (may be NULL) is the
 * weight_map, and every entry must be mapped to this shard by it. */
static int add_entries(cv_msrc *m, const cv_hparams *hp, const char *path, const char *shard,
                       json_t *index, size_t *found, lpk_error *err)
{
    cv_st_entry *e;
    size_t n;
    uint64_t data_off;
    int idx = cv_st_open_file(m, path, &e, &n, &data_off, err);
    if (idx < 0) {
        free(e);
        return idx;
    }
    cv_source *s = cv_msrc_source(m);
    int rc = LPK_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        if (index) {
            json_t *w = json_object_get(index, e[i].name);
            if (!w) {
                rc = lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s' is not in "
                             "model.safetensors.index.json", path, e[i].name);
                break;
            }
            if (!json_is_string(w) || strcmp(json_string_value(w), shard)) {
                rc = lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s' is in %s but the index maps "
                             "it to %s", path, e[i].name, shard,
                             json_is_string(w) ? json_string_value(w) : "?");
                break;
            }
            (*found)++;
        }
        char canon[LPK_MAX_NAME + 1];
        int perm;
        int k = cv_name_from_hf(e[i].name, canon, sizeof canon, &perm);
        if (k == CV_NAME_SKIP) {
            rc = cv_source_add_skipped(s, e[i].name, err);
            continue;
        }
        if (k == CV_NAME_UNKNOWN) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: unexpected tensor '%s' (not part of a "
                         "LLaMA model)", path, e[i].name);
            break;
        }
        rc = cv_msrc_add_tensor(m, canon, e[i].name, e[i].dtype, e[i].n_dims, e[i].dims, idx,
                                data_off + e[i].begin, perm ? hp->head_dim : 0, err);
    }
    free(e);
    return rc;
}

static int open_sharded(cv_msrc *m, const cv_hparams *hp, const char *dir, const char *ipath,
                        lpk_error *err)
{
    uint8_t *buf;
    size_t n;
    int rc = cv_read_small_file(ipath, 64u << 20, &buf, &n, err);
    if (rc) return rc;
    json_t *root = load_json(ipath, buf, n, err);
    free(buf);
    if (!root) return err ? err->status : LPK_ECORRUPT;
    rc = cv_source_add_file(cv_msrc_source(m), ipath, err);
    json_t *wm = json_object_get(root, "weight_map");
    if (!rc && (!json_is_object(wm) || !json_object_size(wm)))
        rc = lpk_err(err, LPK_ECORRUPT, "%s: no weight_map", ipath);
    /* Shards in the order they first appear. */
    json_t *shards = json_array();
    json_t *seen = json_object();
    const char *key;
    json_t *v;
    if (!rc) json_object_foreach(wm, key, v) {
        if (!json_is_string(v) || !safe_shard_name(json_string_value(v))) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s' maps to a bad file name", ipath,
                         key);
            break;
        }
        if (!json_object_get(seen, json_string_value(v))) {
            json_object_set_new(seen, json_string_value(v), json_true());
            json_array_append(shards, v);
        }
    }
    /* Every shard exists before any is read. */
    for (size_t i = 0; !rc && i < json_array_size(shards); i++) {
        const char *sh = json_string_value(json_array_get(shards, i));
        char p[4096];
        if (cv_path_join(p, sizeof p, dir, sh))
            rc = lpk_err(err, LPK_EINVAL, "%s: path too long", dir);
        else if (access(p, F_OK))
            rc = lpk_err(err, LPK_ENOTFOUND, "%s: names shard %s, which does not exist", ipath,
                         sh);
    }
    size_t found = 0;
    for (size_t i = 0; !rc && i < json_array_size(shards); i++) {
        const char *sh = json_string_value(json_array_get(shards, i));
        char p[4096];
        cv_path_join(p, sizeof p, dir, sh);
        rc = add_entries(m, hp, p, sh, wm, &found, err);
    }
    if (!rc && found != json_object_size(wm)) {
        /* Some index entry was found in no shard: name it. */
        json_object_foreach(wm, key, v) {
            int hit = 0;
            cv_source *s = cv_msrc_source(m);
            for (size_t i = 0; i < s->n_tensors && !hit; i++)
                hit = !strcmp(s->tensors[i].src_name, key);
            for (size_t i = 0; i < s->n_skipped && !hit; i++) hit = !strcmp(s->skipped[i], key);
            if (!hit) {
                rc = lpk_err(err, LPK_ENOTFOUND, "%s: tensor '%s' is not in %s as the index "
                             "says", ipath, key, json_string_value(v));
                break;
            }
        }
        if (!rc) rc = lpk_err(err, LPK_ECORRUPT, "%s: index and shards disagree", ipath);
    }
    json_decref(shards);
    json_decref(seen);
    json_decref(root);
    return rc;
}

int cv_hf_safetensors_open(const char *dir, cv_open_opts *o, cv_source **out, lpk_error *err)
{
    *out = NULL;
    cv_msrc *m;
    int rc = cv_msrc_new(dir, &m, err);
    if (rc) return rc;
    cv_source *s = cv_msrc_source(m);
    cv_hparams hp;
    rc = cv_hf_folder_meta(dir, o->tokenizer, &hp, s, o->warn, sizeof o->warn, err);
    if (rc) goto fail;
    s->tie_hint = hp.tie;
    if ((rc = lpk_meta_set_str(s->meta, "source.format", "hf-safetensors"))) {
        rc = lpk_err(err, rc, "out of memory");
        goto fail;
    }
    char p[4096];
    if (cv_path_join(p, sizeof p, dir, "model.safetensors.index.json")) {
        rc = lpk_err(err, LPK_EINVAL, "%s: path too long", dir);
        goto fail;
    }
    if (!access(p, F_OK)) {
        rc = open_sharded(m, &hp, dir, p, err);
    } else {
        cv_path_join(p, sizeof p, dir, "model.safetensors");
        if (access(p, F_OK)) {
            /* A single file under another name is fine; several need an index. */
            DIR *d = opendir(dir);
            int cnt = 0;
            char one[1024] = "";
            struct dirent *de;
            while (d && (de = readdir(d)))
                if (ends_with(de->d_name, ".safetensors") && cnt++ == 0)
                    snprintf(one, sizeof one, "%s", de->d_name);
            if (d) closedir(d);
            if (cnt != 1) {
                rc = lpk_err(err, LPK_ENOTFOUND, cnt ? "%s: %d safetensors files and no "
                             "model.safetensors.index.json" : "%s: no safetensors files", dir,
                             cnt);
                goto fail;
            }
            cv_path_join(p, sizeof p, dir, one);
        }
        size_t dummy = 0;
        rc = add_entries(m, &hp, p, NULL, NULL, &dummy, err);
    }
    if (rc) goto fail;
    *out = s;
    return LPK_OK;
fail:
    s->ops->close(s);
    return rc;
}
