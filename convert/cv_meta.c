/* Meta checkpoint folders: params.json + consolidated.00.pth ... .NN.pth.
 *
 * Model-parallel shards split each weight: wq/wk/wv/w1/w3/output along dim 0,
 * wo/w2 along dim 1, tok_embeddings along dim 1 (LLaMA 1/2) or dim 0 (LLaMA 3,
 * recognised by shards holding full `dim`-wide rows); 1-D norms are replicated.
 * The merged tensor is never materialised: read_rows copies each requested
 * row's slices from the shards' mappings and drops those pages. */
#include "cv_internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

enum { M_DIM0, M_DIM1, M_REPL };

typedef struct meta_tensor {
    int merge;
    const cv_pt_tensor **parts;  /* one per shard */
    int64_t part_rows, part_cols;
    size_t esize;
} meta_tensor;

typedef struct meta_src {
    cv_source base;
    cv_torch_file **shards;
    size_t n_shards;
    meta_tensor *mt;             /* parallel to base.tensors */
    const cv_pt_tensor **part_store;
} meta_src;

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* ---------------------------------------------------------------- reading */
static int meta_read_rows(cv_source *s, const cv_tensor *t, int64_t row0, int64_t nrows,
                          void *dst, lpk_error *err)
{
    meta_src *m = (meta_src *)s;
    const meta_tensor *mt = t->priv;
    int64_t rows = 1;
    for (int d = 0; d + 1 < t->n_dims; d++) rows *= t->dims[d];
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return lpk_err(err, LPK_EINVAL, "%s: rows [%lld, +%lld) of '%s' out of range (%lld rows)",
                       s->path, (long long)row0, (long long)nrows, t->name, (long long)rows);
    uint8_t *o = dst;
    size_t prow = (size_t)mt->part_cols * mt->esize;
    /* Each range copied is released at once: rows are read once, in order, so
     * resident mapped pages stay at about one block. */
    if (mt->merge == M_REPL || m->n_shards == 1) {
        const uint8_t *p = mt->parts[0]->data + (size_t)row0 * prow;
        memcpy(o, p, (size_t)nrows * prow);
        cv_torch_file_release(m->shards[0], p, (size_t)nrows * prow);
    } else if (mt->merge == M_DIM0) {
        for (int64_t r = row0; r < row0 + nrows;) {
            int64_t sh = r / mt->part_rows, lr = r % mt->part_rows;
            int64_t k = mt->part_rows - lr;
            if (k > row0 + nrows - r) k = row0 + nrows - r;
            const uint8_t *p = mt->parts[sh]->data + (size_t)lr * prow;
            memcpy(o, p, (size_t)k * prow);
            cv_torch_file_release(m->shards[sh], p, (size_t)k * prow);
            o += (size_t)k * prow;
            r += k;
        }
    } else {
        for (int64_t r = row0; r < row0 + nrows; r++)
            for (size_t sh = 0; sh < m->n_shards; sh++) {
                memcpy(o, mt->parts[sh]->data + (size_t)r * prow, prow);
                o += prow;
            }
        for (size_t sh = 0; sh < m->n_shards; sh++)
            cv_torch_file_release(m->shards[sh], mt->parts[sh]->data + (size_t)row0 * prow,
                                  (size_t)nrows * prow);
    }
    return 0;
}

static void meta_release(cv_source *s, const cv_tensor *t)
{
    meta_src *m = (meta_src *)s;
    const meta_tensor *mt = t->priv;
    for (size_t sh = 0; sh < m->n_shards; sh++)
        cv_torch_file_release(m->shards[sh], mt->parts[sh]->data, mt->parts[sh]->nbytes);
}

static void meta_close(cv_source *s)
{
    meta_src *m = (meta_src *)s;
    if (!m) return;
    for (size_t i = 0; i < m->n_shards; i++) cv_torch_file_close(m->shards[i]);
    free(m->shards);
    free(m->mt);
    free(m->part_store);
    cv_source_free_base(&m->base);
    free(m);
}

static const cv_source_ops meta_ops = {meta_read_rows, meta_release, meta_close};

/* ---------------------------------------------------------------- params.json */
typedef struct meta_params {
    int64_t dim, n_layers, n_heads, n_kv, vocab, multiple_of, max_seq_len;
    double ffn_mult, eps, theta;
    int scaled_rope;
} meta_params;

static int json_int(json_t *o, const char *k, int64_t *v, const char *path, lpk_error *err)
{
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x)) return 0;
    if (json_is_real(x) && json_real_value(x) == floor(json_real_value(x)) &&
        fabs(json_real_value(x)) < 1e15) {
        *v = (int64_t)json_real_value(x);
        return 0;
    }
    if (!json_is_integer(x))
        return lpk_err(err, LPK_ECORRUPT, "%s: \"%s\" is not an integer", path, k);
    *v = json_integer_value(x);
    return 0;
}

static int json_num(json_t *o, const char *k, double *v, const char *path, lpk_error *err)
{
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_number(x))
        return lpk_err(err, LPK_ECORRUPT, "%s: \"%s\" is not a number", path, k);
    *v = json_number_value(x);
    return 0;
}

static int read_params(const char *path, meta_params *p, lpk_error *err)
{
    memset(p, 0, sizeof *p);
    p->vocab = -1;
    p->theta = 10000.0;
    p->eps = 1e-5;
    struct stat st;
    if (stat(path, &st) != 0)
        return lpk_err(err, errno == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: %s", path,
                       strerror(errno));
    if (st.st_size > (1 << 20))
        return lpk_err(err, LPK_ECORRUPT, "%s: %lld bytes, too large for params.json", path,
                       (long long)st.st_size);
    json_error_t je;
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        return lpk_err(err, LPK_ECORRUPT, "%s: line %d: %s", path, je.line, je.text);
    int rc = 0;
    if (!json_is_object(o)) rc = lpk_err(err, LPK_ECORRUPT, "%s: not a JSON object", path);
    if (!rc) rc = json_int(o, "dim", &p->dim, path, err);
    if (!rc) rc = json_int(o, "n_layers", &p->n_layers, path, err);
    if (!rc) rc = json_int(o, "n_heads", &p->n_heads, path, err);
    if (!rc) rc = json_int(o, "n_kv_heads", &p->n_kv, path, err);
    if (!rc) rc = json_int(o, "vocab_size", &p->vocab, path, err);
    if (!rc) rc = json_int(o, "multiple_of", &p->multiple_of, path, err);
    if (!rc) rc = json_int(o, "max_seq_len", &p->max_seq_len, path, err);
    if (!rc) rc = json_num(o, "ffn_dim_multiplier", &p->ffn_mult, path, err);
    if (!rc) rc = json_num(o, "norm_eps", &p->eps, path, err);
    if (!rc) rc = json_num(o, "rope_theta", &p->theta, path, err);
    json_t *sr = json_object_get(o, "use_scaled_rope");
    if (!rc && sr && json_is_boolean(sr)) p->scaled_rope = json_is_true(sr);
    json_decref(o);
    if (rc) return rc;
    if (p->dim <= 0 || p->n_layers <= 0 || p->n_heads <= 0 || p->dim % p->n_heads)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: needs positive dim, n_layers, n_heads with dim a multiple of n_heads "
                       "(dim %lld, n_layers %lld, n_heads %lld)", path, (long long)p->dim,
                       (long long)p->n_layers, (long long)p->n_heads);
    if (p->n_kv <= 0) p->n_kv = p->n_heads;
    if (p->n_heads % p->n_kv)
        return lpk_err(err, LPK_ECORRUPT, "%s: n_heads %lld is not a multiple of n_kv_heads %lld",
                       path, (long long)p->n_heads, (long long)p->n_kv);
    if (p->dim > (1 << 20) || p->n_layers > 10000 || p->max_seq_len < 0 ||
        p->max_seq_len > UINT32_MAX || !(p->eps > 0) || !(p->theta > 0))
        return lpk_err(err, LPK_ECORRUPT, "%s: implausible hyperparameters", path);
    return 0;
}

/* LLaMA's FeedForward hidden size from dim, multiple_of, ffn_dim_multiplier. */
static int64_t meta_ffn(const meta_params *p)
{
    int64_t h = 4 * p->dim;
    h = 2 * h / 3;
    if (p->ffn_mult > 0) h = (int64_t)(p->ffn_mult * (double)h);
    int64_t m = p->multiple_of > 0 ? p->multiple_of : 1;
    return m * ((h + m - 1) / m);
}

/* ---------------------------------------------------------------- shards */
static int list_shards(const char *dir, char ***names, size_t *n, lpk_error *err)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return lpk_err(err, errno == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: %s", dir,
                           strerror(errno));
    int have[100] = {0}, max = -1, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned k;
        int used = 0;
        if (sscanf(e->d_name, "consolidated.%u.pth%n", &k, &used) == 1 &&
            e->d_name[used] == 0 && strlen(e->d_name) == 19) {
            if (k >= 100) continue;
            have[k] = 1;
            if ((int)k > max) max = (int)k;
        }
    }
    closedir(d);
    if (max < 0) return lpk_err(err, LPK_ENOTFOUND, "%s: no consolidated.NN.pth files", dir);
    for (int k = 0; k <= max; k++)
        if (!have[k])
            return lpk_err(err, LPK_ENOTFOUND, "%s: consolidated.%02d.pth is missing (found up "
                           "to consolidated.%02d.pth)", dir, k, max);
    *names = calloc((size_t)max + 1, sizeof **names);
    if (!*names) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", dir);
    for (int k = 0; k <= max && !rc; k++) {
        size_t l = strlen(dir) + 32;
        if (!((*names)[k] = malloc(l))) rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory", dir);
        else snprintf((*names)[k], l, "%s/consolidated.%02d.pth", dir, k);
        *n = (size_t)k + 1;
    }
    return rc;
}

/* Shards must hold the same names, dtypes and ranks, and 2-D shapes that
 * merge (checked per tensor in plan_tensor). */
static int check_shards_agree(meta_src *m, lpk_error *err)
{
    const cv_torch_file *a = m->shards[0];
    for (size_t s = 1; s < m->n_shards; s++) {
        const cv_torch_file *b = m->shards[s];
        for (size_t i = 0; i < a->n_tensors; i++) {
            const cv_pt_tensor *x = &a->tensors[i], *y = cv_torch_file_find(b, x->name);
            if (!y)
                return lpk_err(err, LPK_ECORRUPT, "shards disagree: '%s' is in %s but not in %s",
                               x->name, a->path, b->path);
            if (x->stype != y->stype || x->n_dims != y->n_dims)
                return lpk_err(err, LPK_ECORRUPT,
                               "shards disagree: '%s' is %s with %d dims in %s but %s with %d "
                               "dims in %s", x->name, cv_pt_stype_name(x->stype), x->n_dims,
                               a->path, cv_pt_stype_name(y->stype), y->n_dims, b->path);
        }
        for (size_t i = 0; i < b->n_tensors; i++)
            if (!cv_torch_file_find(a, b->tensors[i].name))
                return lpk_err(err, LPK_ECORRUPT, "shards disagree: '%s' is in %s but not in %s",
                               b->tensors[i].name, b->path, a->path);
    }
    return 0;
}

/* Only float/half/bfloat16 tensors of 1 or 2 dims convert. */
static int check_kind(const char *f0, const char *name, int stype, int n_dims, lpk_error *err)
{
    if (cv_pt_stype_lpk(stype) < 0)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s' is %s; only float, half and "
                       "bfloat16 tensors can be converted", f0, name, cv_pt_stype_name(stype));
    if (n_dims < 1 || n_dims > 2)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s' has %d dims (1 or 2 expected)", f0,
                       name, n_dims);
    return 0;
}

static int plan_tensor(meta_src *m, const meta_params *p, const cv_pt_tensor *x, cv_tensor *t,
                       meta_tensor *mt, lpk_error *err)
{
    size_t S = m->n_shards;
    const char *f0 = m->shards[0]->path;
    int rc = check_kind(f0, x->name, x->stype, x->n_dims, err);
    if (rc) return rc;
    for (size_t s = 0; s < S; s++) {
        mt->parts[s] = cv_torch_file_find(m->shards[s], x->name);
        if (!mt->parts[s])
            return lpk_err(err, LPK_ECORRUPT, "shards disagree: '%s' missing from %s", x->name,
                           m->shards[s]->path);
    }
    mt->esize = (size_t)cv_pt_stype_size(x->stype);
    t->dtype = x->type;
    t->n_dims = x->n_dims;
    if (x->n_dims == 1) {
        mt->merge = M_REPL;
        mt->part_rows = 1;
        mt->part_cols = x->dims[0];
        t->dims[0] = x->dims[0];
        for (size_t s = 1; s < S; s++) {
            int differ = mt->parts[s]->nbytes != x->nbytes ||
                         memcmp(mt->parts[s]->data, x->data, x->nbytes);
            cv_torch_file_release(m->shards[s], mt->parts[s]->data, mt->parts[s]->nbytes);
            if (differ)
                return lpk_err(err, LPK_ECORRUPT,
                               "shards disagree: replicated tensor '%s' differs between %s and %s",
                               x->name, f0, m->shards[s]->path);
        }
        cv_torch_file_release(m->shards[0], x->data, x->nbytes);
        return 0;
    }
    int64_t r = x->dims[0], c = x->dims[1];
    for (size_t s = 1; s < S; s++)
        if (mt->parts[s]->dims[0] != r || mt->parts[s]->dims[1] != c)
            return lpk_err(err, LPK_ECORRUPT,
                           "shards disagree: '%s' is [%lld, %lld] in %s but [%lld, %lld] in %s",
                           x->name, (long long)r, (long long)c, f0,
                           (long long)mt->parts[s]->dims[0], (long long)mt->parts[s]->dims[1],
                           m->shards[s]->path);
    mt->part_rows = r;
    mt->part_cols = c;
    if (has_suffix(t->name, "attn_output.weight") || has_suffix(t->name, "ffn_down.weight"))
        mt->merge = M_DIM1;
    else if (!strcmp(t->name, "token_embd.weight"))
        mt->merge = S > 1 && c == p->dim ? M_DIM0 : M_DIM1;
    else
        mt->merge = M_DIM0;
    if (S > 1 && mt->merge == M_DIM1 && (c > INT64_MAX / (int64_t)S))
        return lpk_err(err, LPK_ECORRUPT, "%s: '%s' too large", f0, x->name);
    t->dims[0] = mt->merge == M_DIM0 ? r * (int64_t)S : r;
    t->dims[1] = mt->merge == M_DIM1 ? c * (int64_t)S : c;
    return 0;
}

/* ---------------------------------------------------------------- metadata */
/* Context length of a Meta release: Llama 3.1 (llama3 RoPE scaling) 131072,
 * Llama 3 (128256 tokens, rope_theta 500000) 8192, Code Llama (rope_theta 1e6)
 * 16384, Llama 2 (norm_eps 1e-5) 4096, LLaMA 1 2048. */
static int64_t meta_default_ctx(const meta_params *p, int64_t vocab)
{
    if (vocab == 128256 && p->theta == 500000.0) return p->scaled_rope ? 131072 : 8192;
    if (p->theta == 1000000.0) return 16384;
    if (p->eps == 1e-5) return 4096;
    return 2048;
}

static const cv_tensor *find_t(const cv_source *s, const char *name)
{
    for (size_t i = 0; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i].name, name)) return &s->tensors[i];
    return NULL;
}

static int fill_meta(cv_source *s, const char *dir, const char *ppath, const meta_params *p,
                     const cv_torch_opts *opts, lpk_error *err)
{
    const cv_tensor *emb = find_t(s, "token_embd.weight"),
                    *gate = find_t(s, "blk.0.ffn_gate.weight");
    if (!emb || emb->n_dims != 2 || emb->dims[1] != p->dim)
        return lpk_err(err, LPK_ECORRUPT, "%s: tok_embeddings.weight missing or not [vocab, %lld]",
                       dir, (long long)p->dim);
    if (!gate || gate->n_dims != 2)
        return lpk_err(err, LPK_ECORRUPT, "%s: layers.0.feed_forward.w1.weight missing", dir);
    cv_hparams hp = {.dim = p->dim, .n_layers = p->n_layers, .n_head = p->n_heads,
                     .n_kv = p->n_kv, .head_dim = p->dim / p->n_heads, .eps = p->eps,
                     .rope_theta = p->theta, .vocab = emb->dims[0], .ffn = gate->dims[0]};
    if (p->vocab > 0 && p->vocab != hp.vocab)
        return lpk_err(err, LPK_ECORRUPT, "%s: vocab_size %lld, but tok_embeddings has %lld rows",
                       ppath, (long long)p->vocab, (long long)hp.vocab);
    if (p->multiple_of > 0 && meta_ffn(p) != hp.ffn)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: dim/multiple_of/ffn_dim_multiplier imply a feed-forward size of %lld, "
                       "but w1 has %lld rows", ppath, (long long)meta_ffn(p), (long long)hp.ffn);
    if (hp.vocab > UINT32_MAX || hp.ffn > UINT32_MAX)
        return lpk_err(err, LPK_ECORRUPT, "%s: implausible tensor shapes", dir);
    /* params.json gives no context length (llama2.c's exports excepted): the
     * model's, as Meta's reference code and llama.cpp's convert_legacy_llama.py
     * know them, unless told. */
    hp.ctx = opts && opts->context_length ? opts->context_length
             : p->max_seq_len > 0         ? p->max_seq_len
                                          : meta_default_ctx(p, hp.vocab);
    int rc = cv_hparams_to_meta(&hp, s->meta, err);
    if (rc) return rc;
    lpk_meta *md = s->meta;
    char name[256];
    cv_default_name(dir, name, sizeof name);
    if (!rc) rc = lpk_meta_set_str(md, "general.name", name[0] ? name : "model");
    if (p->scaled_rope) {
        /* Meta's apply_scaling constants (Llama 3.1). */
        if (!rc) rc = lpk_meta_set_str(md, "llama.rope.scaling.type", "llama3");
        if (!rc) rc = lpk_meta_set_f32(md, "llama.rope.scaling.factor", 8.0f);
        if (!rc) rc = lpk_meta_set_u32(md, "llama.rope.scaling.original_context_length", 8192);
        if (!rc) rc = lpk_meta_set_f32(md, "llama.rope.scaling.low_freq_factor", 1.0f);
        if (!rc) rc = lpk_meta_set_f32(md, "llama.rope.scaling.high_freq_factor", 4.0f);
    }
    if (!rc) rc = lpk_meta_set_str(md, "source.format", "meta");
    if (rc) return lpk_err(err, LPK_ENOMEM, "out of memory");
    return 0;
}

int cv_meta_describe(const char *dir, const char *ppath, const cv_pk_tensor *pk, size_t n,
                     const char *pth, const cv_torch_opts *opts, cv_source *s, lpk_error *err)
{
    meta_params p;
    int rc = read_params(ppath, &p, err);
    if (rc) return rc;
    if (!s->meta && !(s->meta = lpk_meta_new())) return lpk_err(err, LPK_ENOMEM, "out of memory");
    if (!(s->tensors = calloc(n ? n : 1, sizeof *s->tensors)))
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        cv_tensor *t = &s->tensors[s->n_tensors];
        int k = cv_name_from_meta(pk[i].name, t->name, sizeof t->name);
        if (k == CV_NAME_SKIP) {
            if ((rc = cv_source_add_skipped(s, pk[i].name, err))) return rc;
            continue;
        }
        if (k != CV_NAME_OK)
            return lpk_err(err, LPK_EUNSUPPORTED, "%s: unknown tensor '%s' (not a LLaMA weight)",
                           pth, pk[i].name);
        if ((rc = check_kind(pth, pk[i].name, pk[i].stype, pk[i].n_dims, err))) return rc;
        snprintf(t->src_name, sizeof t->src_name, "%s", pk[i].name);
        t->dtype = cv_pt_stype_lpk(pk[i].stype);
        t->n_dims = pk[i].n_dims;
        for (int d = 0; d < t->n_dims; d++) t->dims[d] = pk[i].dims[d];
        t->priv = (void *)(uintptr_t)i;
        s->n_tensors++;
    }
    return fill_meta(s, dir, ppath, &p, opts, err);
}

/* Meta's Llama 3.1 renamed some of Llama 3's 256 special tokens (Meta's
 * reference tokenizer and Hugging Face's converter): id 128000 + i. */
static void llama31_special(int i, char *out, size_t cap)
{
    static const char *const first[] = {
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"};
    if (i < 11) snprintf(out, cap, "%s", first[i]);
    else snprintf(out, cap, "<|reserved_special_token_%d|>", i - 8);
}

/* A Meta Llama 3.1 folder (use_scaled_rope) with Meta's tiktoken file: 3.1's
 * special-token names and stop ids (eos, eom, eot). */
static int meta_llama31_names(lpk_meta *m, lpk_error *err)
{
    const lpk_kv *t = lpk_meta_find(m, "tokenizer.ggml.tokens");
    const char *sc = lpk_meta_get_str(m, "llama.rope.scaling.type");
    if (!t || t->type != LPK_V_ARR || t->elem != LPK_V_STR || t->count != 128256 || !sc ||
        strcmp(sc, "llama3"))
        return LPK_OK;
    lpk_str b = lpk_kv_str_at(t, 128000);
    if (b.n != 17 || memcmp(b.p, "<|begin_of_text|>", 17)) return LPK_OK;
    const char **v = malloc(128256 * sizeof *v);
    char (*names)[40] = malloc(256 * sizeof *names);
    int rc = v && names ? LPK_OK : LPK_ENOMEM;
    for (uint64_t i = 0; !rc && i < 128256; i++) {
        if (i < 128000) {
            v[i] = lpk_kv_str_at(t, i).p; /* byte-level text: no NUL inside */
            continue;
        }
        llama31_special((int)(i - 128000), names[i - 128000], sizeof names[0]);
        v[i] = names[i - 128000];
    }
    /* the values are copied before the old array is released */
    if (!rc) rc = lpk_meta_set_str_arr(m, "tokenizer.ggml.tokens", v, NULL, 128256);
    uint32_t stop[3] = {128001, 128008, 128009};
    if (!rc) rc = lpk_meta_set_arr(m, "tokenizer.eos_token_ids", LPK_V_U32, stop, 3);
    free(v);
    free(names);
    return rc ? lpk_err(err, rc, "out of memory") : LPK_OK;
}

/* Meta folders carry no tokenizer keys from the reader: tokenizer.model in the
 * model folder, else in its parent (Meta's download puts it next to the
 * llama-2-7b/, llama-2-70b/ folders). */
int cv_meta_tokenizer(const char *dir, const char *label, const char *tokenizer, cv_source *s,
                      char *note, size_t note_n, char *warn, size_t warn_n, lpk_error *err)
{
    char tp[4096];
    int rc;
    if (!label) label = dir;
    if (tokenizer) {
        snprintf(tp, sizeof tp, "%s", tokenizer);
    } else if (!cv_path_join(tp, sizeof tp, dir, "tokenizer.model") && !access(tp, R_OK)) {
        /* in the folder */
    } else if (!cv_path_join(tp, sizeof tp, dir, "../tokenizer.model") && !access(tp, R_OK)) {
        if (note)
            snprintf(note, note_n, "tokenizer.model from the parent folder of %.400s, as Meta's "
                     "download lays it out", label);
    } else {
        snprintf(warn, warn_n, "no tokenizer (no tokenizer.model in %.400s or its parent folder)",
                 label);
        return LPK_OK;
    }
    if ((rc = cv_load_tokenizer(tp, s, warn, warn_n, err)) ||
        (rc = meta_llama31_names(s->meta, err)))
        return rc;
    uint32_t rows = 0;
    lpk_meta_get_u32(s->meta, "llama.vocab_size", &rows);
    cv_special_ids own;
    cv_special_snapshot(s->meta, &own);
    return cv_vocab_finish(dir, s->meta, rows, &own, warn, warn_n, err);
}

/* ---------------------------------------------------------------- open */
int cv_meta_detect(const char *dir)
{
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/params.json", dir);
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    snprintf(p, sizeof p, "%s/consolidated.00.pth", dir);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int cv_meta_open(const char *dir, const cv_torch_opts *opts, cv_source **out, lpk_error *err)
{
    *out = NULL;
    char ppath[4200];
    if (strlen(dir) > 4000) return lpk_err(err, LPK_EINVAL, "path too long");
    snprintf(ppath, sizeof ppath, "%s/params.json", dir);
    meta_params p;
    int rc = read_params(ppath, &p, err);
    if (rc) return rc;
    meta_src *m = calloc(1, sizeof *m);
    if (!m) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", dir);
    m->base.ops = &meta_ops;
    snprintf(m->base.path, sizeof m->base.path, "%s", dir);
    char **names = NULL;
    size_t n_names = 0;
    if (!(m->base.meta = lpk_meta_new())) {
        rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    if ((rc = list_shards(dir, &names, &n_names, err))) goto fail;
    if (!(m->shards = calloc(n_names, sizeof *m->shards))) {
        rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    for (size_t s = 0; s < n_names; s++) {
        if ((rc = cv_torch_file_open(names[s], &m->shards[s], err))) goto fail;
        m->n_shards = s + 1;
    }
    if ((rc = check_shards_agree(m, err))) goto fail;
    const cv_torch_file *f0 = m->shards[0];
    size_t nt = f0->n_tensors, S = m->n_shards;
    m->base.tensors = calloc(nt ? nt : 1, sizeof *m->base.tensors);
    m->mt = calloc(nt ? nt : 1, sizeof *m->mt);
    m->part_store = calloc((nt ? nt : 1) * S, sizeof *m->part_store);
    if (!m->base.tensors || !m->mt || !m->part_store) {
        rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    for (size_t i = 0; i < nt; i++) {
        const cv_pt_tensor *x = &f0->tensors[i];
        cv_tensor *t = &m->base.tensors[m->base.n_tensors];
        int k = cv_name_from_meta(x->name, t->name, sizeof t->name);
        if (k == CV_NAME_SKIP) {
            if ((rc = cv_source_add_skipped(&m->base, x->name, err))) goto fail;
            continue;
        }
        if (k != CV_NAME_OK) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: unknown tensor '%s' (not a LLaMA weight)",
                         f0->path, x->name);
            goto fail;
        }
        snprintf(t->src_name, sizeof t->src_name, "%s", x->name);
        meta_tensor *mt = &m->mt[m->base.n_tensors];
        mt->parts = m->part_store + m->base.n_tensors * S;
        if ((rc = plan_tensor(m, &p, x, t, mt, err))) goto fail;
        t->priv = mt;
        m->base.n_tensors++;
    }
    if ((rc = fill_meta(&m->base, dir, ppath, &p, opts, err)) ||
        (rc = cv_source_add_file(&m->base, ppath, err)))
        goto fail;
    for (size_t s = 0; s < m->n_shards; s++)
        if ((rc = cv_source_add_file(&m->base, m->shards[s]->path, err))) goto fail;
    /* Reading the zip headers and comparing the replicated norms mapped pages
     * all over the shards (a fault maps a whole folio around the byte it
     * needs): give them back before the tensors are read. */
    for (size_t s = 0; s < m->n_shards; s++)
        cv_torch_file_release(m->shards[s], m->shards[s]->map, m->shards[s]->size);
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    *out = &m->base;
    return 0;
fail:
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    meta_close(&m->base);
    return rc;
}
