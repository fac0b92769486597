/* convert/: Hugging Face safetensors and llama2.c checkpoints into containers,
 * checked against the source bytes read independently here (safetensors
 * headers parsed with jansson, HF q/k un-permuted by this file's own loop). */
#include "tutil.h"

#include <jansson.h>
#include <dirent.h>
#include <xxhash.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../convert/convert.h"
#include "../convert/cv_internal.h"
#include "../format/lpk.h"
#include "../quant/quant.h"

/* ---------------------------------------------------------------- independent source reading */
typedef struct st_file {
    char *buf;
    size_t len;
    json_t *hdr;
    size_t data_off;
} st_file;

static void st_load(st_file *f, const char *path)
{
    f->buf = tu_read_file(path, &f->len);
    assert_non_null(f->buf);
    assert_true(f->len >= 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | (uint8_t)f->buf[i];
    f->hdr = json_loadb(f->buf + 8, (size_t)n, 0, NULL);
    assert_non_null(f->hdr);
    f->data_off = 8 + (size_t)n;
}

static void st_free(st_file *f)
{
    json_decref(f->hdr);
    free(f->buf);
}

/* Bytes and size of a tensor by HF name; NULL if absent. */
static const uint8_t *st_get(const st_file *f, const char *name, size_t *n, const char **dtype)
{
    json_t *e = json_object_get(f->hdr, name);
    if (!e) return NULL;
    json_t *o = json_object_get(e, "data_offsets");
    size_t b = (size_t)json_integer_value(json_array_get(o, 0));
    *n = (size_t)json_integer_value(json_array_get(o, 1)) - b;
    if (dtype) *dtype = json_string_value(json_object_get(e, "dtype"));
    return (const uint8_t *)f->buf + f->data_off + b;
}

static const char *hf_of(const char *canon, char *buf, size_t n)
{
    static const char *map[][2] = {
        {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"},
        {"attn_k", "self_attn.k_proj"},   {"attn_v", "self_attn.v_proj"},
        {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
        {"ffn_gate", "mlp.gate_proj"},    {"ffn_down", "mlp.down_proj"},
        {"ffn_up", "mlp.up_proj"}};
    if (!strcmp(canon, "token_embd.weight")) return "model.embed_tokens.weight";
    if (!strcmp(canon, "output_norm.weight")) return "model.norm.weight";
    if (!strcmp(canon, "output.weight")) return "lm_head.weight";
    int l;
    char part[64];
    if (sscanf(canon, "blk.%d.%63[a-z_].weight", &l, part) != 2) return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(part, map[i][0])) {
            snprintf(buf, n, "model.layers.%d.%s.weight", l, map[i][1]);
            return buf;
        }
    return NULL;
}

/* Source value as f32. */
static float src_val(const char *dtype, const uint8_t *p, size_t i)
{
    if (!strcmp(dtype, "F32")) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return !strcmp(dtype, "F16") ? lpk_f16_to_f32(h) : lpk_bf16_to_f32(h);
}

/* Every tensor of the container equals the HF source (list of shard files):
 * 2-D raw bytes in the source dtype (q/k rows un-permuted here), 1-D as f32.
 * want_type < 0: keep source type; else values must be the rounding of the
 * source value to that type. */
static void check_against_hf(const char *lpk, const char *const *shards, int n_shards,
                             int head_dim, int want_type)
{
    st_file f[4];
    for (int i = 0; i < n_shards; i++) st_load(&f[i], shards[i]);
    lpk_reader *r;
    lpk_error err;
    lpk_error_clear(&err);
    assert_int_equal(lpk_reader_open(lpk, &r, &err), 0);
    size_t seen = 0;
    for (size_t ti = 0; ti < lpk_reader_n_tensors(r); ti++) {
        const lpk_tensor *t = lpk_reader_tensor(r, ti);
        char hb[256];
        const char *hn = hf_of(t->name, hb, sizeof hb);
        assert_non_null(hn);
        const uint8_t *src = NULL;
        size_t n = 0;
        const char *dtype = NULL;
        for (int i = 0; i < n_shards && !src; i++) src = st_get(&f[i], hn, &n, &dtype);
        assert_non_null(src);
        seen++;
        int es = !strcmp(dtype, "F32") ? 4 : 2;
        size_t ne = n / (size_t)es;
        assert_int_equal(lpk_tensor_nelems(t), ne);
        int perm = strstr(hn, "q_proj") || strstr(hn, "k_proj");
        int64_t cols = lpk_tensor_ncols(t), rows = lpk_tensor_nrows(t);
        int srct = !strcmp(dtype, "F32") ? LPK_TYPE_F32 : !strcmp(dtype, "F16") ? LPK_TYPE_F16
                                                                                 : LPK_TYPE_BF16;
        int expect = t->n_dims == 1 ? LPK_TYPE_F32 : want_type < 0 ? srct : want_type;
        assert_int_equal(t->type, expect);
        const uint8_t *out = t->data;
        for (int64_t row = 0; row < rows; row++) {
            int64_t sr = row;
            if (perm) {
                /* Meta row h*hd + 2j + t <- HF row h*hd + t*hd/2 + j */
                int64_t h = row / head_dim, rem = row % head_dim, j = rem / 2, tt = rem % 2;
                sr = h * head_dim + tt * (head_dim / 2) + j;
            }
            if (expect == srct) {
                assert_memory_equal(out + (size_t)(row * cols) * (size_t)es,
                                    src + (size_t)(sr * cols) * (size_t)es, (size_t)cols * (size_t)es);
                continue;
            }
            for (int64_t c = 0; c < cols; c++) {
                float v = src_val(dtype, src, (size_t)(sr * cols + c));
                size_t oi = (size_t)(row * cols + c);
                if (expect == LPK_TYPE_F32) {
                    float g;
                    memcpy(&g, out + 4 * oi, 4);
                    assert_memory_equal(&g, &v, 4);
                } else {
                    uint16_t g;
                    memcpy(&g, out + 2 * oi, 2);
                    uint16_t w = expect == LPK_TYPE_F16 ? lpk_f32_to_f16(v) : lpk_f32_to_bf16(v);
                    assert_int_equal(g, w);
                }
            }
        }
        assert_int_equal(lpk_reader_verify_tensor(r, ti, &err), 0);
    }
    /* every source tensor is in the container (lm_head may be dropped when tied) */
    size_t total = 0;
    for (int i = 0; i < n_shards; i++) {
        const char *k;
        json_t *v;
        json_object_foreach(f[i].hdr, k, v) total += strcmp(k, "__metadata__") != 0;
    }
    assert_int_equal(seen, total);
    lpk_reader_close(r);
    for (int i = 0; i < n_shards; i++) st_free(&f[i]);
}

static void meta_u32(const lpk_meta *m, const char *key, uint32_t want)
{
    uint32_t v = 0;
    if (lpk_meta_get_u32(m, key, &v)) fail_msg("missing %s", key);
    if (v != want) fail_msg("%s = %u, want %u", key, v, want);
}

/* ---------------------------------------------------------------- real models */
/* stories260K's HF folder: the demo model (f16, file type 1) always, and the f32
 * original (file type 0) when ../shared has it. */
static void check_hf_stories(const char *src, uint32_t file_type)
{
    char *dir = tu_tmpdir();
    char *out = tu_fmt("%s/s.lpk", dir), *log = NULL;
    assert_int_equal(tu_llmpack(&log, "convert '%s' -o '%s' --no-tokenizer --json", src, out), 0);
    assert_non_null(strstr(log, "\"tied\": true"));
    free(log);
    char *st = tu_fmt("%s/model.safetensors", src);
    const char *sh[] = {st};
    check_against_hf(out, sh, 1, 8, -1);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(out, &r, NULL), 0);
    const lpk_meta *m = lpk_reader_meta(r);
    assert_string_equal(lpk_meta_get_str(m, "general.architecture"), "llama");
    assert_string_equal(lpk_meta_get_str(m, "general.name"), "stories260K");
    assert_string_equal(lpk_meta_get_str(m, "source.format"), "hf-safetensors");
    meta_u32(m, "llama.embedding_length", 64);
    meta_u32(m, "llama.feed_forward_length", 172);
    meta_u32(m, "llama.block_count", 5);
    meta_u32(m, "llama.attention.head_count", 8);
    meta_u32(m, "llama.attention.head_count_kv", 4);
    meta_u32(m, "llama.rope.dimension_count", 8);
    meta_u32(m, "llama.vocab_size", 512);
    meta_u32(m, "llama.context_length", 512);
    meta_u32(m, "general.file_type", file_type);
    float eps = 0, theta = 0;
    assert_int_equal(lpk_meta_get_f32(m, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
    assert_true(eps == 1e-5f);
    assert_int_equal(lpk_meta_get_f32(m, "llama.rope.freq_base", &theta), 0);
    assert_true(theta == 10000.0f);
    assert_null(lpk_reader_find(r, "output.weight"));
    assert_int_equal(lpk_reader_n_tensors(r), 2 + 5 * 9);
    const lpk_kv *toks = lpk_meta_find(m, "tokenizer.ggml.tokens");
    assert_non_null(toks);
    assert_int_equal(toks->count, 512);
    /* canonical order */
    assert_string_equal(lpk_reader_tensor(r, 0)->name, "token_embd.weight");
    assert_string_equal(lpk_reader_tensor(r, 1)->name, "blk.0.attn_norm.weight");
    assert_string_equal(lpk_reader_tensor(r, 46)->name, "output_norm.weight");
    lpk_reader_close(r);
    free(st);
    /* --context-length overrides */
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --force --context-length 1024", src,
                                out), 0);
    assert_int_equal(lpk_reader_open(out, &r, NULL), 0);
    meta_u32(lpk_reader_meta(r), "llama.context_length", 1024);
    lpk_reader_close(r);
    /* no --force: refuses to replace */
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer", src, out), 1);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

static void test_hf_stories(void **state)
{
    (void)state;
    check_hf_stories("examples/stories260K", 1);
    const char *src = tu_shared("models/stories260K/hf");
    if (src) {
        char *s = strdup(src);
        check_hf_stories(s, 0);
        free(s);
    }
}

static void test_hf_f16_and_types(void **state)
{
    (void)state;
    TU_NEED_SHARED(src, "models/stories260K/hf-f16");
    char *dir = tu_tmpdir();
    char *out = tu_fmt("%s/f.lpk", dir);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer", src, out), 0);
    char *st = tu_fmt("%s/model.safetensors", src);
    const char *sh[] = {st};
    check_against_hf(out, sh, 1, 8, -1);  /* f16 kept bit-exact */
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(out, &r, NULL), 0);
    meta_u32(lpk_reader_meta(r), "general.file_type", 1);
    lpk_reader_close(r);
    /* f16 -> f32 and bf16 (exact widening; RNE narrowing checked per value) */
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --force --type f32", src, out), 0);
    check_against_hf(out, sh, 1, 8, LPK_TYPE_F32);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --force --type bf16", src, out), 0);
    check_against_hf(out, sh, 1, 8, LPK_TYPE_BF16);
    free(st);
    /* f32 source -> f16: round to nearest even (the demo model has no f32 twin) */
    const char *src32 = tu_shared("models/stories260K/hf");
    if (src32) {
        char *st32 = tu_fmt("%s/model.safetensors", src32);
        assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --force --type f16 "
                                    "--threads 2", src32, out), 0);
        const char *sh32[] = {st32};
        check_against_hf(out, sh32, 1, 8, LPK_TYPE_F16);
        free(st32);
    } else {
        print_message("NOTE: ../shared/models/stories260K/hf not found: f32 -> f16 not checked\n");
    }
    free(out);
    tu_rmtree(dir);
    free(dir);
}

static void test_llama2c_matches_hf(void **state)
{
    (void)state;
    TU_NEED_SHARED(bin0, "models/stories260K/llama2c/stories260K.bin");
    char *bin = strdup(bin0);
    const char *hf = tu_shared("models/stories260K/hf");
    assert_non_null(hf);
    char *hfd = strdup(hf);
    char *tok = tu_fmt("%s/tokenizer.model", hfd);
    char *dir = tu_tmpdir();
    char *a = tu_fmt("%s/a.lpk", dir), *b = tu_fmt("%s/b.lpk", dir), *log = NULL;
    assert_int_equal(tu_llmpack(&log, "convert '%s' -o '%s' --no-tokenizer --tokenizer '%s' --json", bin, a,
                                tok), 0);
    assert_non_null(strstr(log, "freq_cis_real"));
    free(log);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer", hfd, b), 0);
    lpk_reader *ra, *rb;
    assert_int_equal(lpk_reader_open(a, &ra, NULL), 0);
    assert_int_equal(lpk_reader_open(b, &rb, NULL), 0);
    assert_int_equal(lpk_reader_n_tensors(ra), lpk_reader_n_tensors(rb));
    for (size_t i = 0; i < lpk_reader_n_tensors(ra); i++) {
        const lpk_tensor *x = lpk_reader_tensor(ra, i);
        const lpk_tensor *y = lpk_reader_find(rb, x->name);
        assert_non_null(y);
        assert_int_equal(x->type, LPK_TYPE_F32);
        assert_int_equal(x->size, y->size);
        if (x->xxh3 != y->xxh3) fail_msg("%s: xxh3 differs between llama2c and hf", x->name);
        assert_memory_equal(x->data, y->data, (size_t)x->size);
    }
    const lpk_meta *m = lpk_reader_meta(ra);
    assert_string_equal(lpk_meta_get_str(m, "source.format"), "llama2c");
    meta_u32(m, "llama.context_length", 512);
    meta_u32(m, "llama.attention.head_count_kv", 4);
    assert_null(lpk_reader_find(ra, "output.weight"));
    lpk_reader_close(ra);
    lpk_reader_close(rb);
    free(a); free(b); free(tok); free(bin); free(hfd);
    tu_rmtree(dir);
    free(dir);
}

/* A bf16 HF checkpoint in two shards (untied; head_dim, vocab): every tensor
 * equals the shards' bytes, provenance hashes; and the Meta folder meta (NULL:
 * none) holding the same values gives the same tensors. */
static void check_bf16_shards(const char *src0, const char *meta, int head_dim, uint32_t vocab)
{
    char *src = strdup(src0);
    char *dir = tu_tmpdir();
    char *out = tu_fmt("%s/l.lpk", dir), *log = NULL;
    assert_int_equal(tu_llmpack(&log, "convert '%s' -o '%s' --no-tokenizer --json --hash-sources", src, out), 0);
    assert_non_null(strstr(log, "\"tied\": false"));
    free(log);
    char *s1 = tu_fmt("%s/model-00001-of-00002.safetensors", src);
    char *s2 = tu_fmt("%s/model-00002-of-00002.safetensors", src);
    const char *sh[] = {s1, s2};
    check_against_hf(out, sh, 2, head_dim, -1);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(out, &r, NULL), 0);
    const lpk_meta *m = lpk_reader_meta(r);
    assert_non_null(lpk_reader_find(r, "output.weight"));
    assert_int_equal(lpk_reader_find(r, "blk.0.attn_q.weight")->type, LPK_TYPE_BF16);
    meta_u32(m, "general.file_type", 32);
    meta_u32(m, "llama.vocab_size", vocab);
    meta_u32(m, "tokenizer.ggml.bos_token_id", 1);
    meta_u32(m, "tokenizer.ggml.eos_token_id", 2);
    const lpk_kv *files = lpk_meta_find(m, "source.files");
    const lpk_kv *hash = lpk_meta_find(m, "source.xxh3");
    assert_non_null(files);
    assert_non_null(hash);
    assert_int_equal(files->count, hash->count);
    int found = 0;
    for (uint64_t i = 0; i < files->count; i++) {
        lpk_str fn = lpk_kv_str_at(files, i), hx = lpk_kv_str_at(hash, i);
        assert_int_equal(hx.n, 16);
        if (!strcmp(fn.p, "model-00002-of-00002.safetensors")) {
            size_t n;
            char *buf = tu_read_file(s2, &n);
            char want[17];
            snprintf(want, sizeof want, "%016llx", (unsigned long long)XXH3_64bits(buf, n));
            assert_string_equal(hx.p, want);
            free(buf);
            found = 1;
        }
    }
    assert_true(found);
    /* the Meta folder holds the same bf16 values: same tensors through the
     * Meta reader (shards merged) and the HF reader (q/k un-permuted) */
    if (meta) {
        char *out2 = tu_fmt("%s/m.lpk", dir);
        assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --hash-sources", meta, out2), 0);
        lpk_reader *r2;
        assert_int_equal(lpk_reader_open(out2, &r2, NULL), 0);
        /* provenance: params.json, both shards and the tokenizer, each hashed */
        const lpk_kv *mf = lpk_meta_find(lpk_reader_meta(r2), "source.files");
        const lpk_kv *mh = lpk_meta_find(lpk_reader_meta(r2), "source.xxh3");
        const lpk_kv *ms = lpk_meta_find(lpk_reader_meta(r2), "source.file_sizes");
        assert_non_null(mf);
        assert_non_null(mh);
        assert_non_null(ms);
        assert_int_equal(mf->count, 4);
        assert_int_equal(mh->count, 4);
        assert_int_equal(ms->count, 4);
        assert_string_equal(lpk_kv_str_at(mf, 3).p, "tokenizer.model");
        assert_non_null(lpk_meta_find(lpk_reader_meta(r2), "tokenizer.ggml.tokens"));
        assert_int_equal(lpk_reader_n_tensors(r2), lpk_reader_n_tensors(r));
        for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
            const lpk_tensor *x = lpk_reader_tensor(r, i), *y = lpk_reader_tensor(r2, i);
            assert_string_equal(x->name, y->name);
            if (x->xxh3 != y->xxh3) fail_msg("%s differs between meta/ and hf/", x->name);
        }
        const lpk_kv *sk = lpk_meta_find(lpk_reader_meta(r2), "source.skipped_tensors");
        assert_non_null(sk);
        assert_string_equal(lpk_kv_str_at(sk, 0).p, "rope.freqs");
        lpk_reader_close(r2);
        free(out2);
    }
    lpk_reader_close(r);
    free(s1); free(s2); free(out); free(src);
    tu_rmtree(dir);
    free(dir);
}

/* bench/gen_ckpt's model of dim 256 (head_dim 32, vocab 512; random bf16
 * weights, one seed in both layouts, the demo model's tokenizer beside the Meta
 * shards) always; llama2-20m when ../shared has it. */
static void test_bf16_shards(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *hf = tu_fmt("%s/hf", dir), *meta = tu_fmt("%s/meta", dir);
    tu_gen_ckpt(hf, "--custom 256,768,4,8,4,512 --format hf --shards 2 --seed 3");
    tu_gen_ckpt(meta, "--custom 256,768,4,8,4,512 --format meta --shards 2 --seed 3");
    char *cmd = tu_fmt("cp examples/stories260K/tokenizer.model '%s/'", meta);
    if (system(cmd)) fail_msg("%s failed", cmd);
    free(cmd);
    check_bf16_shards(hf, meta, 32, 512);
    free(hf);
    free(meta);
    tu_rmtree(dir);
    free(dir);
    char *l20 = tu_shared_dup("models/llama2-20m/hf"),
         *l20m = tu_shared_dup("models/llama2-20m/meta");
    if (l20) check_bf16_shards(l20, l20m, 32, 32000);
    else print_message("NOTE: ../shared/models/llama2-20m not found: not checked\n");
    free(l20);
    free(l20m);
}

/* --type q8_0 --pure: every 2-D tensor whose rows fit is quant/'s q8_0 of the
 * source rows as f32 (taken from the f32 conversion, itself checked against the
 * safetensors bytes above); ffn_down (172 columns) falls back to f16. The demo
 * model (f16) always, the f32 original when ../shared has it. */
static void check_quantized(const char *src0)
{
    char *src = strdup(src0);
    char *dir = tu_tmpdir();
    char *f = tu_fmt("%s/f.lpk", dir), *q = tu_fmt("%s/q.lpk", dir);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --type f32", src, f), 0);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --type q8_0 --pure --threads 2", src,
                                q), 0);
    lpk_reader *rf, *rq;
    assert_int_equal(lpk_reader_open(f, &rf, NULL), 0);
    assert_int_equal(lpk_reader_open(q, &rq, NULL), 0);
    int n_q8 = 0, n_f16 = 0;
    for (size_t i = 0; i < lpk_reader_n_tensors(rq); i++) {
        const lpk_tensor *t = lpk_reader_tensor(rq, i), *x = lpk_reader_find(rf, t->name);
        assert_non_null(x);
        int64_t rows = lpk_tensor_nrows(x), cols = lpk_tensor_ncols(x);
        if (t->n_dims == 1) {
            assert_int_equal(t->type, LPK_TYPE_F32);
            assert_memory_equal(t->data, x->data, (size_t)x->size);
        } else if (cols % 32 == 0) {
            assert_int_equal(t->type, LPK_TYPE_Q8_0);
            void *want = malloc((size_t)t->size);
            assert_int_equal(quant_quantize_rows(LPK_TYPE_Q8_0, x->data, rows, cols, want, NULL,
                                                 NULL), 0);
            assert_memory_equal(t->data, want, (size_t)t->size);
            free(want);
            n_q8++;
        } else {
            assert_int_equal(t->type, LPK_TYPE_F16);
            const float *xf = x->data;
            const uint16_t *h = t->data;
            for (int64_t k = 0; k < rows * cols; k++) assert_int_equal(h[k], lpk_f32_to_f16(xf[k]));
            n_f16++;
        }
    }
    assert_int_equal(n_q8, 1 + 5 * 6);
    assert_int_equal(n_f16, 5);
    const lpk_meta *m = lpk_reader_meta(rq);
    assert_string_equal(lpk_meta_get_str(m, "quant.recipe"), "q8_0");
    meta_u32(m, "general.file_type", 7);  /* LLAMA_FTYPE_MOSTLY_Q8_0 */
    lpk_reader_close(rf);
    lpk_reader_close(rq);
    /* unknown type: usage error, nothing written */
    char *bad = tu_fmt("%s/b.lpk", dir);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --type q3_x", src, bad), 2);
    assert_false(tu_exists(bad));
    free(bad); free(f); free(q); free(src);
    tu_rmtree(dir);
    free(dir);
}

static void test_quantized(void **state)
{
    (void)state;
    check_quantized("examples/stories260K");
    const char *src = tu_shared("models/stories260K/hf");
    if (src) check_quantized(src);
}

/* ---------------------------------------------------------------- crafted checkpoints */
/* A tiny LLaMA: dim 8, 2 heads, 1 kv head (head dim 4), ffn 12, 2 layers, vocab 16. */
enum { T_DIM = 8, T_HEADS = 2, T_KV = 1, T_HD = 4, T_FFN = 12, T_LAYERS = 2, T_VOCAB = 16 };

typedef struct tiny {
    json_t *hdr;       /* safetensors header being built */
    uint8_t *data;
    size_t n, cap;
    uint64_t seed;
} tiny;

static void tiny_add(tiny *t, const char *name, const char *dtype, int64_t rows, int64_t cols)
{
    int es = !strcmp(dtype, "F32") ? 4 : !strcmp(dtype, "F8_E4M3") ? 1 : !strcmp(dtype, "I32") ? 4 : 2;
    size_t ne = (size_t)(rows * (cols ? cols : 1)), nb = ne * (size_t)es;
    if (t->n + nb > t->cap) {
        t->cap = (t->n + nb) * 2;
        t->data = realloc(t->data, t->cap);
    }
    for (size_t i = 0; i < ne; i++) {
        float v = tu_randn(&t->seed) * 0.1f;
        if (es == 4) memcpy(t->data + t->n + 4 * i, &v, 4);
        else if (es == 2) {
            uint16_t h = !strcmp(dtype, "F16") ? lpk_f32_to_f16(v) : lpk_f32_to_bf16(v);
            memcpy(t->data + t->n + 2 * i, &h, 2);
        } else t->data[t->n + i] = (uint8_t)i;
    }
    json_t *shape = cols ? json_pack("[II]", (json_int_t)rows, (json_int_t)cols)
                         : json_pack("[I]", (json_int_t)rows);
    json_object_set_new(t->hdr, name, json_pack("{s:s, s:o, s:[II]}", "dtype", dtype, "shape",
                                                shape, "data_offsets", (json_int_t)t->n,
                                                (json_int_t)(t->n + nb)));
    t->n += nb;
}

static void tiny_build(tiny *t, int lm_head)
{
    memset(t, 0, sizeof *t);
    t->seed = 42;
    t->hdr = json_object();
    json_object_set_new(t->hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
    tiny_add(t, "model.embed_tokens.weight", "F32", T_VOCAB, T_DIM);
    for (int l = 0; l < T_LAYERS; l++) {
        char n[128];
#define L(part, r, c) snprintf(n, sizeof n, "model.layers.%d.%s.weight", l, part), tiny_add(t, n, "F32", r, c)
        L("input_layernorm", T_DIM, 0);
        L("self_attn.q_proj", T_HEADS * T_HD, T_DIM);
        L("self_attn.k_proj", T_KV * T_HD, T_DIM);
        L("self_attn.v_proj", T_KV * T_HD, T_DIM);
        L("self_attn.o_proj", T_DIM, T_HEADS * T_HD);
        L("post_attention_layernorm", T_DIM, 0);
        L("mlp.gate_proj", T_FFN, T_DIM);
        L("mlp.down_proj", T_DIM, T_FFN);
        L("mlp.up_proj", T_FFN, T_DIM);
#undef L
    }
    tiny_add(t, "model.norm.weight", "F32", T_DIM, 0);
    if (lm_head) tiny_add(t, "lm_head.weight", "F32", T_VOCAB, T_DIM);
}

static void tiny_free(tiny *t)
{
    json_decref(t->hdr);
    free(t->data);
}

/* Writes a safetensors file from a header object and data (hdr_len_override
 * != 0 replaces the length prefix; cut drops bytes from the end). */
static void write_st(const char *path, json_t *hdr, const uint8_t *data, size_t n,
                     uint64_t hdr_len_override, size_t cut)
{
    char *js = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t jl = strlen(js), total = 8 + jl + n;
    uint8_t *buf = malloc(total);
    uint64_t L = hdr_len_override ? hdr_len_override : jl;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(L >> (8 * i));
    memcpy(buf + 8, js, jl);
    memcpy(buf + 8 + jl, data, n);
    assert_int_equal(tu_write_file(path, buf, total - cut), 0);
    free(buf);
    free(js);
}

static json_t *tiny_config(void)
{
    return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:i, s:i}",
                     "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size",
                     T_DIM, "intermediate_size", T_FFN, "num_hidden_layers", T_LAYERS,
                     "num_attention_heads", T_HEADS, "num_key_value_heads", T_KV, "vocab_size",
                     T_VOCAB, "max_position_embeddings", 64, "rms_norm_eps", 1e-6, "rope_theta",
                     500000.0, "tie_word_embeddings", 1, "bos_token_id", 1, "eos_token_id", 2);
}

static void write_json(const char *path, json_t *j)
{
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
    json_decref(j);
}

/* A fresh folder with config.json and model.safetensors from t. */
static char *tiny_folder(const char *root, const char *name, tiny *t, json_t *config)
{
    char *d = tu_fmt("%s/%s", root, name);
    assert_int_equal(mkdir(d, 0755), 0);
    char *p = tu_fmt("%s/config.json", d);
    if (config) write_json(p, config);
    free(p);
    p = tu_fmt("%s/model.safetensors", d);
    write_st(p, t->hdr, t->data, t->n, 0, 0);
    free(p);
    return d;
}

static int dir_has_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) found = 1;
    if (d) closedir(d);
    return found;
}

/* The conversion fails with exit 3, says `want`, and leaves no file behind. */
static void expect_bad(const char *root, const char *src, const char *want)
{
    char *out = tu_fmt("%s/out.lpk", root), *log = NULL;
    int rc = tu_llmpack(&log, "convert '%s' -o '%s' --no-tokenizer", src, out);
    if (rc != 3 || !log || !strstr(log, want))
        fail_msg("%s: exit %d, output '%s', want exit 3 and '%s'", src, rc, log ? log : "", want);
    /* one line, naming the input */
    assert_non_null(strstr(log, src));
    assert_false(tu_exists(out));
    assert_false(dir_has_prefix(root, ".out.lpk"));
    free(log);
    free(out);
}

static void test_tiny_ok_and_tied(void **state)
{
    (void)state;
    char *root = tu_tmpdir();
    tiny t;
    tiny_build(&t, 0);
    char *d = tiny_folder(root, "ok", &t, tiny_config());
    char *out = tu_fmt("%s/ok.lpk", root);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer", d, out), 0);
    char *st = tu_fmt("%s/model.safetensors", d);
    const char *sh[] = {st};
    check_against_hf(out, sh, 1, T_HD, -1);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(out, &r, NULL), 0);
    const lpk_meta *m = lpk_reader_meta(r);
    assert_string_equal(lpk_meta_get_str(m, "general.name"), "ok");
    float theta;
    assert_int_equal(lpk_meta_get_f32(m, "llama.rope.freq_base", &theta), 0);
    assert_true(theta == 500000.0f);
    meta_u32(m, "llama.rope.dimension_count", T_HD);
    lpk_reader_close(r);
    free(st);
    tiny_free(&t);

    /* lm_head byte-equal to the embedding: dropped, model tied, reported */
    tiny_build(&t, 1);
    json_t *e = json_object_get(json_object_get(t.hdr, "model.embed_tokens.weight"), "data_offsets");
    json_t *o = json_object_get(json_object_get(t.hdr, "lm_head.weight"), "data_offsets");
    memcpy(t.data + json_integer_value(json_array_get(o, 0)),
           t.data + json_integer_value(json_array_get(e, 0)), T_VOCAB * T_DIM * 4);
    json_t *cfg = tiny_config();
    json_object_set_new(cfg, "tie_word_embeddings", json_false());
    d = (free(d), tiny_folder(root, "same", &t, cfg));
    char *log = NULL;
    assert_int_equal(tu_llmpack(&log, "convert '%s' -o '%s' --no-tokenizer --force --json", d, out), 0);
    assert_non_null(strstr(log, "\"tied\": true"));
    assert_non_null(strstr(log, "lm_head.weight"));
    free(log);
    assert_int_equal(lpk_reader_open(out, &r, NULL), 0);
    assert_null(lpk_reader_find(r, "output.weight"));
    const lpk_kv *sk = lpk_meta_find(lpk_reader_meta(r), "source.skipped_tensors");
    assert_non_null(sk);
    assert_int_equal(sk->count, 1);
    assert_string_equal(lpk_kv_str_at(sk, 0).p, "lm_head.weight");
    lpk_reader_close(r);
    tiny_free(&t);

    /* lm_head different: kept */
    tiny_build(&t, 1);
    d = (free(d), tiny_folder(root, "untied", &t, tiny_config()));
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer --force", d, out), 0);
    st = tu_fmt("%s/model.safetensors", d);
    sh[0] = st;
    check_against_hf(out, sh, 1, T_HD, -1);
    free(st);
    tiny_free(&t);

    /* no lm_head while the config says untied */
    tiny_build(&t, 0);
    cfg = tiny_config();
    json_object_set_new(cfg, "tie_word_embeddings", json_false());
    d = (free(d), tiny_folder(root, "nohead", &t, cfg));
    expect_bad(root, d, "missing tensor output.weight");
    tiny_free(&t);
    free(d);
    free(out);
    tu_rmtree(root);
    free(root);
}

/* Entry helpers for mutations. */
static json_t *ent(tiny *t, const char *name) { return json_object_get(t->hdr, name); }
static void set_offsets(tiny *t, const char *name, json_int_t b, json_int_t e)
{
    json_object_set_new(ent(t, name), "data_offsets", json_pack("[II]", b, e));
}
static json_int_t off_of(tiny *t, const char *name, int i)
{
    return json_integer_value(json_array_get(json_object_get(ent(t, name), "data_offsets"), (size_t)i));
}

static void test_bad_hf_inputs(void **state)
{
    (void)state;
    char *root = tu_tmpdir();
    tiny t;
    char *d, *p;
    json_t *cfg;
    const char *Q = "model.layers.0.self_attn.q_proj.weight";
    const char *K = "model.layers.0.self_attn.k_proj.weight";

    tiny_build(&t, 0);
    d = tiny_folder(root, "noconfig", &t, NULL);
    expect_bad(root, d, "no config.json");
    free(d);

    json_object_del(t.hdr, "model.layers.1.mlp.up_proj.weight");
    d = tiny_folder(root, "missing", &t, tiny_config());
    expect_bad(root, d, "missing tensor blk.1.ffn_up.weight");
    free(d);
    tiny_free(&t);

    tiny_build(&t, 0);
    cfg = tiny_config();
    json_object_set_new(cfg, "intermediate_size", json_integer(14));
    d = tiny_folder(root, "shape", &t, cfg);
    expect_bad(root, d, "has shape [12, 8], the config implies [14, 8]");
    free(d);

    cfg = tiny_config();
    json_object_set_new(cfg, "architectures", json_pack("[s]", "GPT2LMHeadModel"));
    d = tiny_folder(root, "arch", &t, cfg);
    expect_bad(root, d, "architecture GPT2LMHeadModel not supported");
    free(d);

    cfg = tiny_config();
    json_object_set_new(cfg, "num_hidden_layers", json_integer(3));
    d = tiny_folder(root, "layers", &t, cfg);
    expect_bad(root, d, "missing tensor blk.2.attn_norm.weight");
    free(d);

    /* truncated data section */
    d = tiny_folder(root, "trunc", &t, tiny_config());
    p = tu_fmt("%s/model.safetensors", d);
    write_st(p, t.hdr, t.data, t.n, 0, 10);
    expect_bad(root, d, "outside the data section");
    free(p);
    free(d);

    /* header length beyond 100 MB */
    d = tiny_folder(root, "hdrlen", &t, tiny_config());
    p = tu_fmt("%s/model.safetensors", d);
    write_st(p, t.hdr, t.data, t.n, 200000000, 0);
    expect_bad(root, d, "exceeds the 100 MB limit");
    free(p);
    free(d);

    /* header length past the end of the file */
    d = tiny_folder(root, "hdrpast", &t, tiny_config());
    p = tu_fmt("%s/model.safetensors", d);
    write_st(p, t.hdr, t.data, t.n, 99999999, 0);
    expect_bad(root, d, "runs past the end of the file");
    free(p);
    free(d);

    /* file shorter than the length prefix */
    d = tiny_folder(root, "tiny", &t, tiny_config());
    p = tu_fmt("%s/model.safetensors", d);
    assert_int_equal(tu_write_file(p, "\x10\0\0", 3), 0);
    expect_bad(root, d, "too short for a safetensors header");
    free(p);
    free(d);

    /* not JSON */
    d = tiny_folder(root, "json", &t, tiny_config());
    p = tu_fmt("%s/model.safetensors", d);
    assert_int_equal(tu_write_file(p, "\x04\0\0\0\0\0\0\0{{{{", 12), 0);
    expect_bad(root, d, "not valid JSON");
    free(p);
    free(d);
    tiny_free(&t);

    /* overlapping tensors (same size, shifted into the previous one) */
    tiny_build(&t, 0);
    json_int_t qb = off_of(&t, Q, 0), kb = off_of(&t, K, 0), ke = off_of(&t, K, 1);
    set_offsets(&t, K, qb + 4, qb + 4 + (ke - kb));
    d = tiny_folder(root, "overlap", &t, tiny_config());
    expect_bad(root, d, "overlap");
    free(d);
    tiny_free(&t);

    /* offsets beyond the file */
    tiny_build(&t, 0);
    set_offsets(&t, K, (json_int_t)t.n, (json_int_t)t.n + (ke - kb));
    d = tiny_folder(root, "outside", &t, tiny_config());
    expect_bad(root, d, "outside the data section");
    free(d);
    tiny_free(&t);

    /* end < begin, and a span that disagrees with shape x dtype */
    tiny_build(&t, 0);
    set_offsets(&t, K, kb + 8, kb);
    d = tiny_folder(root, "backwards", &t, tiny_config());
    expect_bad(root, d, "outside the data section");
    free(d);
    set_offsets(&t, K, kb, ke - 4);
    d = tiny_folder(root, "span", &t, tiny_config());
    expect_bad(root, d, "shape and dtype need");
    free(d);
    tiny_free(&t);

    /* unsupported dtypes */
    tiny_build(&t, 0);
    tiny_add(&t, "model.layers.0.extra_f8.weight", "F8_E4M3", 4, 4);
    d = tiny_folder(root, "f8", &t, tiny_config());
    expect_bad(root, d, "dtype F8_E4M3 not supported");
    free(d);
    tiny_free(&t);
    tiny_build(&t, 0);
    tiny_add(&t, "model.layers.0.extra_i32.weight", "I32", 4, 4);
    d = tiny_folder(root, "i32", &t, tiny_config());
    expect_bad(root, d, "dtype I32 not supported");
    free(d);
    tiny_free(&t);

    /* a tensor a LLaMA does not have; a layer beyond the config */
    tiny_build(&t, 0);
    tiny_add(&t, "model.layers.0.self_attn.q_proj.bias", "F32", 8, 0);
    d = tiny_folder(root, "bias", &t, tiny_config());
    expect_bad(root, d, "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'");
    free(d);
    tiny_free(&t);
    tiny_build(&t, 0);
    tiny_add(&t, "model.layers.2.input_layernorm.weight", "F32", T_DIM, 0);
    d = tiny_folder(root, "extralayer", &t, tiny_config());
    expect_bad(root, d, "layer beyond the configured count");
    free(d);
    tiny_free(&t);

    /* NaN and Inf weights: named by tensor and index */
    tiny_build(&t, 0);
    json_int_t db = off_of(&t, "model.layers.1.mlp.down_proj.weight", 0);
    float nanv = NAN;
    memcpy(t.data + db + 4 * 13, &nanv, 4);
    d = tiny_folder(root, "nan", &t, tiny_config());
    expect_bad(root, d, "tensor 'model.layers.1.mlp.down_proj.weight' (blk.1.ffn_down.weight): "
                        "value nan at index 13 (row 1, column 1)");
    free(d);
    tiny_free(&t);

    /* --type f16 of a value beyond f16's range */
    tiny_build(&t, 0);
    float big = 1e6f;
    memcpy(t.data + db, &big, 4);
    d = tiny_folder(root, "big", &t, tiny_config());
    char *out = tu_fmt("%s/out.lpk", root), *log = NULL;
    assert_int_equal(tu_llmpack(&log, "convert '%s' -o '%s' --no-tokenizer --type f16", d, out), 3);
    assert_non_null(strstr(log, "does not fit f16"));
    assert_false(tu_exists(out));
    free(log);
    free(out);
    free(d);
    tiny_free(&t);

    /* not a checkpoint at all */
    d = tu_fmt("%s/empty", root);
    assert_int_equal(mkdir(d, 0755), 0);
    expect_bad(root, d, "no checkpoint here");
    free(d);
    tu_rmtree(root);
    free(root);
}

/* Splits t's tensors over two shards (first `split` tensors in shard 1). */
static void write_sharded(const char *d, tiny *t, size_t split, json_t *wm_override)
{
    json_t *h[2] = {json_object(), json_object()};
    uint8_t *buf[2] = {malloc(t->n), malloc(t->n)};
    size_t n[2] = {0, 0}, i = 0;
    json_t *wm = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(t->hdr, k, v) {
        if (!strcmp(k, "__metadata__")) continue;
        int s = i++ < split ? 0 : 1;
        json_int_t b = off_of(t, k, 0), e = off_of(t, k, 1);
        memcpy(buf[s] + n[s], t->data + b, (size_t)(e - b));
        json_t *c = json_deep_copy(v);
        json_object_set_new(c, "data_offsets", json_pack("[II]", (json_int_t)n[s],
                                                         (json_int_t)(n[s] + (size_t)(e - b))));
        json_object_set_new(h[s], k, c);
        n[s] += (size_t)(e - b);
        json_object_set_new(wm, k, json_string(s ? "model-00002-of-00002.safetensors"
                                                 : "model-00001-of-00002.safetensors"));
    }
    for (int s = 0; s < 2; s++) {
        char *p = tu_fmt("%s/model-0000%d-of-00002.safetensors", d, s + 1);
        write_st(p, h[s], buf[s], n[s], 0, 0);
        free(p);
        json_decref(h[s]);
        free(buf[s]);
    }
    if (wm_override) json_object_update(wm, wm_override), json_decref(wm_override);
    char *p = tu_fmt("%s/model.safetensors.index.json", d);
    write_json(p, json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)t->n,
                            "weight_map", wm));
    free(p);
}

static char *shard_folder(const char *root, const char *name, tiny *t, json_t *wm_override)
{
    char *d = tu_fmt("%s/%s", root, name);
    assert_int_equal(mkdir(d, 0755), 0);
    char *p = tu_fmt("%s/config.json", d);
    json_t *cfg = tiny_config();
    json_object_set_new(cfg, "tie_word_embeddings", json_false());
    write_json(p, cfg);
    free(p);
    write_sharded(d, t, 10, wm_override);
    return d;
}

static void test_sharded(void **state)
{
    (void)state;
    char *root = tu_tmpdir();
    tiny t;
    tiny_build(&t, 1);
    char *d = shard_folder(root, "good", &t, NULL);
    char *out = tu_fmt("%s/g.lpk", root);
    assert_int_equal(tu_llmpack(NULL, "convert '%s' -o '%s' --no-tokenizer", d, out), 0);
    char *s1 = tu_fmt("%s/model-00001-of-00002.safetensors", d);
    char *s2 = tu_fmt("%s/model-00002-of-00002.safetensors", d);
    const char *sh[] = {s1, s2};
    check_against_hf(out, sh, 2, T_HD, -1);
    free(s1); free(s2); free(d);

    /* the index names a shard that is not there */
    d = shard_folder(root, "missing", &t, json_pack("{s:s}", "lm_head.weight",
                                                    "model-00003-of-00003.safetensors"));
    expect_bad(root, d, "names shard model-00003-of-00003.safetensors, which does not exist");
    free(d);
    /* shards disagree with the index */
    d = shard_folder(root, "disagree", &t, json_pack("{s:s}", "model.embed_tokens.weight",
                                                     "model-00002-of-00002.safetensors"));
    expect_bad(root, d, "but the index maps it to model-00002-of-00002.safetensors");
    free(d);
    /* the index lists a tensor no shard has */
    d = shard_folder(root, "ghost", &t, json_pack("{s:s}", "model.layers.0.mlp.extra.weight",
                                                  "model-00001-of-00002.safetensors"));
    expect_bad(root, d, "tensor 'model.layers.0.mlp.extra.weight' is not in");
    free(d);
    /* a shard name escaping the folder */
    d = shard_folder(root, "escape", &t, json_pack("{s:s}", "lm_head.weight", "../x.safetensors"));
    expect_bad(root, d, "bad file name");
    free(d);
    tiny_free(&t);
    free(out);
    tu_rmtree(root);
    free(root);
}

/* llama2.c files written here: header + f32 arrays in run.c's order. */
static void test_llama2c_crafted(void **state)
{
    (void)state;
    char *root = tu_tmpdir();
    int32_t h[7] = {T_DIM, T_FFN, T_LAYERS, T_HEADS, T_KV, -T_VOCAB, 32};
    size_t kvd = T_KV * T_HD;
    size_t ne = (size_t)T_VOCAB * T_DIM + T_LAYERS * (2 * T_DIM + 2 * T_DIM * T_DIM +
                2 * kvd * T_DIM + 3 * (size_t)T_FFN * T_DIM) + T_DIM + 32 * T_HD +
                (size_t)T_VOCAB * T_DIM;
    size_t nb = 28 + 4 * ne;
    uint8_t *buf = malloc(nb);
    memcpy(buf, h, 28);
    uint64_t seed = 5;
    for (size_t i = 0; i < ne; i++) {
        float v = tu_randn(&seed);
        memcpy(buf + 28 + 4 * i, &v, 4);
    }
    char *p = tu_fmt("%s/m.bin", root), *out = tu_fmt("%s/m.lpk", root), *log = NULL;
    assert_int_equal(tu_write_file(p, buf, nb), 0);
    assert_int_equal(tu_llmpack(&log, "convert '%s' -o '%s' --no-tokenizer", p, out), 0);
    assert_non_null(strstr(log, "no tokenizer"));
    free(log);
    lpk_reader *r;
    assert_int_equal(lpk_reader_open(out, &r, NULL), 0);
    /* untied: wcls is the last array; ffn_down of layer 1 sits where run.c puts it */
    const lpk_tensor *o = lpk_reader_find(r, "output.weight");
    assert_non_null(o);
    assert_memory_equal(o->data, buf + nb - (size_t)T_VOCAB * T_DIM * 4, (size_t)T_VOCAB * T_DIM * 4);
    size_t w2 = 28 + 4 * ((size_t)T_VOCAB * T_DIM + T_LAYERS * (T_DIM + 2 * T_DIM * T_DIM +
                2 * kvd * T_DIM + T_DIM + (size_t)T_FFN * T_DIM) + (size_t)T_DIM * T_FFN);
    const lpk_tensor *dn = lpk_reader_find(r, "blk.1.ffn_down.weight");
    assert_non_null(dn);
    assert_int_equal(dn->dims[0], T_DIM);
    assert_int_equal(dn->dims[1], T_FFN);
    assert_memory_equal(dn->data, buf + w2, (size_t)T_DIM * T_FFN * 4);
    assert_string_equal(lpk_meta_get_str(lpk_reader_meta(r), "general.name"), "m");
    lpk_reader_close(r);
    /* one float short, one float long */
    assert_int_equal(tu_write_file(p, buf, nb - 4), 0);
    expect_bad(root, p, "llama2.c header implies");
    uint8_t *longer = calloc(1, nb + 4);
    memcpy(longer, buf, nb);
    assert_int_equal(tu_write_file(p, longer, nb + 4), 0);
    expect_bad(root, p, "llama2.c header implies");
    free(longer);
    /* nonsense header */
    int32_t bad[7] = {7, 3, 1, 2, 1, 16, 8};
    memcpy(buf, bad, 28);
    assert_int_equal(tu_write_file(p, buf, nb), 0);
    expect_bad(root, p, "not a llama2.c checkpoint");
    free(buf);
    free(p);
    free(out);
    tu_rmtree(root);
    free(root);
}

/* ---------------------------------------------------------------- units */
static void test_units(void **state)
{
    (void)state;
    /* un-permute: HF's permute (view(h, 2, hd/2, dim).transpose(1, 2)) inverted */
    int64_t hd = 8;
    for (int64_t h = 0; h < 3; h++)
        for (int64_t j = 0; j < hd / 2; j++)
            for (int64_t t = 0; t < 2; t++)
                assert_int_equal(cv_unpermute_row(h * hd + 2 * j + t, hd),
                                 h * hd + t * (hd / 2) + j);
    char out[256];
    int perm;
    assert_int_equal(cv_name_from_hf("model.layers.12.self_attn.k_proj.weight", out, sizeof out,
                                     &perm), CV_NAME_OK);
    assert_string_equal(out, "blk.12.attn_k.weight");
    assert_int_equal(perm, CV_PERMUTE_K);
    assert_int_equal(cv_name_from_hf("model.layers.0.self_attn.rotary_emb.inv_freq", out,
                                     sizeof out, &perm), CV_NAME_SKIP);
    assert_int_equal(cv_name_from_hf("model.layers.01.mlp.up_proj.weight", out, sizeof out,
                                     &perm), CV_NAME_UNKNOWN);
    assert_int_equal(cv_name_from_hf("model.layers.-1.mlp.up_proj.weight", out, sizeof out,
                                     &perm), CV_NAME_UNKNOWN);
    assert_int_equal(cv_name_from_meta("layers.3.feed_forward.w2.weight", out, sizeof out),
                     CV_NAME_OK);
    assert_string_equal(out, "blk.3.ffn_down.weight");
    assert_int_equal(cv_name_from_meta("rope.freqs", out, sizeof out), CV_NAME_SKIP);

    /* header parsing from memory */
    const char *js = "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                     "\"__metadata__\":{\"format\":\"pt\"},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,16]}}";
    cv_st_entry *e;
    size_t n;
    lpk_error err;
    lpk_error_clear(&err);
    assert_int_equal(cv_st_parse_header("x", (const uint8_t *)js, strlen(js), 16, &e, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(e[0].name, "a");
    assert_int_equal(e[0].dtype, LPK_TYPE_BF16);
    assert_int_equal(e[0].dims[1], 3);
    assert_int_equal(e[1].n_dims, 0);
    free(e);
    /* data section one byte short */
    assert_int_equal(cv_st_parse_header("x", (const uint8_t *)js, strlen(js), 15, &e, &n, &err),
                     LPK_ETRUNC);
    /* shape overflow */
    lpk_error_clear(&err);
    const char *big = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                      "\"data_offsets\":[0,4]}}";
    assert_int_equal(cv_st_parse_header("x", (const uint8_t *)big, strlen(big), 16, &e, &n, &err),
                     LPK_ECORRUPT);
    /* duplicate names are rejected */
    const char *dup = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    assert_int_equal(cv_st_parse_header("x", (const uint8_t *)dup, strlen(dup), 8, &e, &n, &err),
                     LPK_ECORRUPT);
    /* config.json: llama3 rope scaling, eos list */
    const char *cfg = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,"
                      "\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                      "\"num_key_value_heads\":2,\"vocab_size\":100,\"rope_scaling\":{\"rope_type\":"
                      "\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                      "\"original_max_position_embeddings\":8192},\"eos_token_id\":[7,9]}";
    cv_hparams hp;
    lpk_meta *m = lpk_meta_new();
    lpk_error_clear(&err);
    assert_int_equal(cv_hf_config_parse("c", (const uint8_t *)cfg, strlen(cfg), &hp, m, &err), 0);
    assert_int_equal(hp.head_dim, 16);
    assert_int_equal(hp.ctx, 2048);
    assert_true(hp.eps == 1e-6);
    assert_string_equal(lpk_meta_get_str(m, "llama.rope.scaling.type"), "llama3");
    meta_u32(m, "llama.rope.scaling.original_context_length", 8192);
    meta_u32(m, "tokenizer.ggml.eos_token_id", 7);
    const lpk_kv *eos = lpk_meta_find(m, "tokenizer.eos_token_ids");
    assert_non_null(eos);
    assert_int_equal(eos->count, 2);
    assert_int_equal(((const uint32_t *)eos->data)[1], 9);
    lpk_meta_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_hf_stories),
        cmocka_unit_test(test_hf_f16_and_types),
        cmocka_unit_test(test_llama2c_matches_hf),
        cmocka_unit_test(test_bf16_shards),
        cmocka_unit_test(test_quantized),
        cmocka_unit_test(test_tiny_ok_and_tied),
        cmocka_unit_test(test_bad_hf_inputs),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_llama2c_crafted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
