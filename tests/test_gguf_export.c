/* llmpack export: containers -> GGUF, read back through lpk_reader.
 *
 * Truth: the container's own bytes (every tensor must come back bit-identical),
 * llama.cpp's GGUF files in ../shared/gguf (key names, types and values), and
 * llama.cpp's converter's LLaMA-3 RoPE factor formula, evaluated here in double.
 */
#include "tutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../convert/convert.h"
#include "../format/lpk.h"
#include "../tok/tok.h"

/* ---------------------------------------------------------------- fixtures */
typedef struct tspec {
    const char *name;
    int type;
    int nd;
    int64_t dims[4];
} tspec;

/* Writes a container with meta and tensors of deterministic bytes. */
static void write_container(const char *path, const lpk_meta *m, const tspec *ts, size_t n)
{
    lpk_tensor *d = calloc(n, sizeof *d);
    for (size_t i = 0; i < n; i++) {
        snprintf(d[i].name, sizeof d[i].name, "%s", ts[i].name);
        d[i].type = ts[i].type;
        d[i].n_dims = ts[i].nd;
        memcpy(d[i].dims, ts[i].dims, sizeof d[i].dims);
    }
    lpk_writer *w;
    lpk_error err = {0};
    if (lpk_writer_open(path, m, d, n, LPK_WRITE_FORCE, &w, &err)) fail_msg("%s", err.msg);
    uint64_t rs = 42;
    for (size_t i = 0; i < n; i++) {
        uint64_t nb;
        assert_int_equal(lpk_type_nbytes(d[i].type, lpk_tensor_nelems(&d[i]), &nb), 0);
        uint8_t *buf = malloc(nb);
        if (d[i].type == LPK_TYPE_F32) {
            for (uint64_t j = 0; j < nb / 4; j++) {
                float f = tu_randn(&rs);
                memcpy(buf + 4 * j, &f, 4);
            }
        } else {
            /* opaque bytes; keep f16 scales finite (high byte < 0x7c) */
            for (uint64_t j = 0; j < nb; j++) buf[j] = (uint8_t)(tu_rand(&rs) & 0x3f);
        }
        assert_int_equal(lpk_writer_tensor_begin(w, d[i].name, &err), 0);
        assert_int_equal(lpk_writer_tensor_write(w, buf, nb, &err), 0);
        assert_int_equal(lpk_writer_tensor_end(w, &err), 0);
        free(buf);
    }
    if (lpk_writer_finish(w, &err)) fail_msg("%s", err.msg);
    free(d);
}

/* llama2-20m's hyperparameters and tokenizer as docs/MODEL.md types them;
 * wide = 1 stores the counts and special-token ids as u64 and eps/freq_base as
 * f64 (export must narrow). */
static lpk_meta *llama2_20m_meta(const char *tok_model, const char *tok_config, int wide)
{
    lpk_meta *m = lpk_meta_new();
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_meta_set_str(m, "general.name", "llama2-20m");
    static const struct { const char *k; uint32_t v; } u[] = {
        {"llama.context_length", 512}, {"llama.embedding_length", 256},
        {"llama.block_count", 6}, {"llama.feed_forward_length", 768},
        {"llama.rope.dimension_count", 32}, {"llama.attention.head_count", 8},
        {"llama.attention.head_count_kv", 4}, {"llama.vocab_size", 32000},
    };
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        if (wide) lpk_meta_set_u64(m, u[i].k, u[i].v);
        else lpk_meta_set_u32(m, u[i].k, u[i].v);
    }
    if (wide) {
        lpk_meta_set_f64(m, "llama.attention.layer_norm_rms_epsilon", 1e-5);
        lpk_meta_set_f64(m, "llama.rope.freq_base", 10000.0);
    } else {
        lpk_meta_set_f32(m, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
        lpk_meta_set_f32(m, "llama.rope.freq_base", 10000.0f);
    }
    lpk_error err = {0};
    if (tok_load(tok_model, m, &err)) fail_msg("%s", err.msg);
    size_t n;
    char *cfg = tu_read_file(tok_config, &n);
    assert_non_null(cfg);
    if (tok_config_load_mem(tok_config, (const uint8_t *)cfg, n, m, &err))
        fail_msg("%s", err.msg);
    free(cfg);
    if (wide) {
        /* the special ids as wider integers too: llama.cpp reads them only as u32 */
        static const char *const ids[] = {"tokenizer.ggml.bos_token_id",
                                          "tokenizer.ggml.eos_token_id",
                                          "tokenizer.ggml.unknown_token_id"};
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
            uint32_t id;
            if (lpk_meta_get_u32(m, ids[i], &id)) fail_msg("%s: no %s", tok_config, ids[i]);
            lpk_meta_set_u64(m, ids[i], id);
        }
    }
    lpk_meta_set_u32(m, "general.file_type", 7);
    lpk_meta_set_str(m, "source.format", "hf-safetensors");
    const char *files[] = {"model.safetensors"};
    lpk_meta_set_str_arr(m, "source.files", files, NULL, 1);
    return m;
}

static lpk_reader *open_or_fail(const char *path)
{
    lpk_reader *r;
    lpk_error err = {0};
    if (lpk_reader_open(path, &r, &err)) fail_msg("%s", err.msg);
    return r;
}

static int kv_same_value(const lpk_kv *a, const lpk_kv *b)
{
    if (a->type != b->type) return 0;
    if (a->type == LPK_V_STR) return a->str.n == b->str.n && !memcmp(a->str.p, b->str.p, a->str.n);
    if (a->type == LPK_V_ARR) {
        if (a->elem != b->elem || a->count != b->count) return 0;
        if (a->elem != LPK_V_STR)
            return !a->count || !memcmp(a->data, b->data, a->count * lpk_vtype_size(a->elem));
        for (uint64_t i = 0; i < a->count; i++) {
            lpk_str x = lpk_kv_str_at(a, i), y = lpk_kv_str_at(b, i);
            if (x.n != y.n || memcmp(x.p, y.p, x.n)) return 0;
        }
        return 1;
    }
    return !memcmp(a->data, b->data, lpk_vtype_size(a->type));
}

/* Every tensor of `ref` is in `got` with the same type, dims and bytes. */
static void same_tensors(const lpk_reader *ref, const lpk_reader *got)
{
    for (size_t i = 0; i < lpk_reader_n_tensors(ref); i++) {
        const lpk_tensor *a = lpk_reader_tensor(ref, i);
        const lpk_tensor *b = lpk_reader_find(got, a->name);
        if (!b) fail_msg("tensor %s missing", a->name);
        assert_int_equal(a->type, b->type);
        assert_int_equal(a->n_dims, b->n_dims);
        assert_memory_equal(a->dims, b->dims, sizeof(int64_t) * (size_t)a->n_dims);
        assert_int_equal(a->size, b->size);
        if (memcmp(a->data, b->data, a->size)) fail_msg("tensor %s: bytes differ", a->name);
        assert_int_equal(b->offset % 32, 0);
    }
}

/* Keys in ours that llama.cpp's file lacks, and keys whose values may differ. */
static int allowed_extra(const char *k)
{
    return !strcmp(k, "general.alignment") || !strncmp(k, "source.", 7) ||
           !strncmp(k, "quant.", 6) || !strcmp(k, "tokenizer.ggml.add_space_prefix") ||
           !strcmp(k, "tokenizer.pre_regex") || !strcmp(k, "tokenizer.ignore_merges") ||
           !strcmp(k, "tokenizer.eos_token_ids") || !strcmp(k, "tokenizer.chat_template");
}

/* Compares the key sets, types and values of our GGUF with llama.cpp's. */
static void compare_with_llamacpp(const char *ours, const char *theirs, int check_file_type)
{
    lpk_reader *a = open_or_fail(ours), *b = open_or_fail(theirs);
    const lpk_meta *ma = lpk_reader_meta(a), *mb = lpk_reader_meta(b);
    for (size_t i = 0; i < lpk_meta_count(mb); i++) {
        const lpk_kv *kb = lpk_meta_at(mb, i);
        const lpk_kv *ka = lpk_meta_find(ma, kb->key);
        if (!ka) fail_msg("%s: key %s (in %s) missing", ours, kb->key, theirs);
        if (ka->type != kb->type || (ka->type == LPK_V_ARR && ka->elem != kb->elem))
            fail_msg("%s: key %s is %s/%s, llama.cpp writes %s/%s", ours, kb->key,
                     lpk_vtype_name(ka->type), lpk_vtype_name(ka->elem),
                     lpk_vtype_name(kb->type), lpk_vtype_name(kb->elem));
        if (!strcmp(kb->key, "general.name")) continue;
        if (!strcmp(kb->key, "general.file_type") && !check_file_type) continue;
        if (!kv_same_value(ka, kb)) fail_msg("%s: key %s differs from llama.cpp's", ours, kb->key);
    }
    for (size_t i = 0; i < lpk_meta_count(ma); i++) {
        const char *k = lpk_meta_at(ma, i)->key;
        if (!lpk_meta_find(mb, k) && !allowed_extra(k))
            fail_msg("%s: key %s is not in llama.cpp's file", ours, k);
    }
    lpk_reader_close(a);
    lpk_reader_close(b);
}

/* ---------------------------------------------------------------- tests */
static const tspec small_tensors[] = {
    {"token_embd.weight", LPK_TYPE_Q8_0, 2, {512, 64}},
    {"output_norm.weight", LPK_TYPE_F32, 1, {64}},
    {"blk.0.attn_norm.weight", LPK_TYPE_F32, 1, {64}},
    {"blk.0.attn_q.weight", LPK_TYPE_BF16, 2, {64, 64}},
    {"blk.0.attn_k.weight", LPK_TYPE_F16, 2, {32, 64}},
    {"blk.0.attn_v.weight", LPK_TYPE_Q4_0, 2, {32, 64}},
    {"blk.0.attn_output.weight", LPK_TYPE_Q4_1, 2, {64, 64}},
    {"blk.0.ffn_norm.weight", LPK_TYPE_F32, 1, {64}},
    {"blk.0.ffn_gate.weight", LPK_TYPE_Q4_K, 2, {2, 256}},
    {"blk.0.ffn_up.weight", LPK_TYPE_Q6_K, 2, {2, 256}},
    {"blk.0.ffn_down.weight", LPK_TYPE_Q5_0, 2, {64, 32}},
    {"output.weight", LPK_TYPE_Q5_1, 2, {512, 64}},
};
#define N_SMALL (sizeof small_tensors / sizeof small_tensors[0])

static lpk_meta *small_meta(const char *tok_model)
{
    lpk_meta *m = lpk_meta_new();
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_meta_set_u32(m, "llama.context_length", 128);
    lpk_meta_set_u32(m, "llama.embedding_length", 64);
    lpk_meta_set_u32(m, "llama.block_count", 1);
    lpk_meta_set_u32(m, "llama.feed_forward_length", 256);
    lpk_meta_set_u32(m, "llama.attention.head_count", 8);
    lpk_meta_set_u32(m, "llama.attention.head_count_kv", 4);
    lpk_meta_set_f32(m, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    lpk_meta_set_str(m, "source.format", "llama2c");
    lpk_meta_set_str(m, "quant.recipe", "mixed");
    lpk_error err = {0};
    if (tok_load(tok_model, m, &err)) fail_msg("%s", err.msg);
    return m;
}

static void test_roundtrip_all_types(void **state)
{
    (void)state;
    TU_NEED_SHARED(tok, "models/stories260K/hf/tokenizer.model");
    char *dir = tu_tmpdir();
    char *in = tu_fmt("%s/small.lpk", dir), *out = tu_fmt("%s/small.gguf", dir);
    lpk_meta *m = small_meta(tok);
    write_container(in, m, small_tensors, N_SMALL);
    char *log = NULL;
    int rc = tu_llmpack(&log, "export '%s' -o '%s' --quiet", in, out);
    if (rc) fail_msg("export failed (%d): %s", rc, log);
    free(log);

    lpk_reader *a = open_or_fail(in), *b = open_or_fail(out);
    assert_int_equal(lpk_reader_kind(b), LPK_KIND_GGUF);
    assert_int_equal(lpk_reader_version(b), 3);
    assert_int_equal(lpk_reader_n_tensors(b), N_SMALL);
    same_tensors(a, b);
    const lpk_meta *g = lpk_reader_meta(b);
    /* every source key comes back with its value (types here are already GGUF's) */
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *k = lpk_meta_at(m, i);
        const lpk_kv *k2 = lpk_meta_find(g, k->key);
        if (!k2 || !kv_same_value(k, k2)) fail_msg("key %s lost or changed", k->key);
    }
    uint32_t v;
    assert_int_equal(lpk_meta_get_u32(g, "general.alignment", &v), 0);
    assert_int_equal(v, 32);
    assert_int_equal(lpk_meta_get_u32(g, "general.quantization_version", &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(lpk_meta_get_u32(g, "llama.rope.dimension_count", &v), 0);
    assert_int_equal(v, 8); /* derived: 64 / 8 */
    assert_int_equal(lpk_meta_get_u32(g, "llama.vocab_size", &v), 0);
    assert_int_equal(v, 512); /* derived from token_embd */
    assert_string_equal(lpk_meta_get_str(g, "general.name"), "small"); /* from the file name */
    lpk_reader_close(b);

    /* This GGUF's shapes are no model's: export of it as input is refused, naming the
     * tensor (every command checks a GGUF model's structure) */
    char *out2 = tu_fmt("%s/again.gguf", dir);
    assert_int_equal(tu_llmpack(&log, "export '%s' -o '%s' --quiet", out, out2), 3);
    assert_non_null(strstr(log, "blk.0.ffn_gate.weight has shape"));
    free(log);
    /* GGUF -> GGUF again on a real model: our export of llama.cpp's file, exported
     * once more, is byte-identical */
    const char *real = tu_shared("gguf/stories260K-Q4_K_M.gguf");
    if (real) {
        char *g1 = tu_fmt("%s/g1.gguf", dir), *g2 = tu_fmt("%s/g2.gguf", dir);
        assert_int_equal(tu_llmpack(NULL, "export '%s' -o '%s' --quiet", real, g1), 0);
        assert_int_equal(tu_llmpack(NULL, "export '%s' -o '%s' --quiet", g1, g2), 0);
        size_t n1, n2;
        char *f1 = tu_read_file(g1, &n1), *f2 = tu_read_file(g2, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(f1, f2, n1);
        free(f1);
        free(f2);
        free(g1);
        free(g2);
    }

    /* --strip drops llmpack's own keys and nothing else */
    assert_int_equal(tu_llmpack(NULL, "export '%s' -o '%s' --quiet --strip --force", in, out2), 0);
    b = open_or_fail(out2);
    assert_null(lpk_meta_find(lpk_reader_meta(b), "source.format"));
    assert_null(lpk_meta_find(lpk_reader_meta(b), "quant.recipe"));
    assert_non_null(lpk_meta_find(lpk_reader_meta(b), "tokenizer.ggml.tokens"));
    same_tensors(a, b);
    lpk_reader_close(b);
    lpk_reader_close(a);
    lpk_meta_free(m);
    free(out2);
    free(in);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

static void test_cli_errors(void **state)
{
    (void)state;
    TU_NEED_SHARED(tok, "models/stories260K/hf/tokenizer.model");
    char *dir = tu_tmpdir();
    char *in = tu_fmt("%s/in.lpk", dir), *out = tu_fmt("%s/out.gguf", dir);
    lpk_meta *m = small_meta(tok);
    write_container(in, m, small_tensors, 2);
    assert_int_equal(tu_write_file(out, "keep", 4), 0);
    char *log = NULL;
    assert_int_equal(tu_llmpack(&log, "export '%s' -o '%s' --quiet", in, out), 1);
    assert_non_null(strstr(log, "already exists"));
    free(log);
    size_t n;
    char *keep = tu_read_file(out, &n);
    assert_int_equal(n, 4); /* untouched */
    free(keep);
    assert_int_equal(tu_llmpack(NULL, "export '%s'", in), 2);
    assert_int_equal(tu_llmpack(NULL, "export '%s' -o x --bogus", in), 2);

    /* not a LLaMA model: bad input, named */
    lpk_meta_set_str(m, "general.architecture", "gpt2");
    write_container(in, m, small_tensors, 2);
    assert_int_equal(tu_llmpack(&log, "export '%s' -o '%s' --force --quiet", in, out), 3);
    assert_non_null(strstr(log, "architecture 'gpt2'"));
    free(log);
    /* a hyperparameter of a type that does not narrow to u32 */
    lpk_meta_set_str(m, "general.architecture", "llama");
    lpk_meta_set_f32(m, "llama.block_count", 1.5f);
    write_container(in, m, small_tensors, 2);
    assert_int_equal(tu_llmpack(&log, "export '%s' -o '%s' --force --quiet", in, out), 3);
    assert_non_null(strstr(log, "key 'llama.block_count' is f32"));
    free(log);
    lpk_meta_remove(m, "llama.block_count");
    write_container(in, m, small_tensors, 2);
    assert_int_equal(tu_llmpack(&log, "export '%s' -o '%s' --force --quiet", in, out), 3);
    assert_non_null(strstr(log, "'llama.block_count' is missing"));
    free(log);
    lpk_meta_free(m);
    free(in);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

/* llama.cpp's converter, in double: 1, factor, or the smooth blend. */
static double llama3_factor_ref(int i, int dim, double base, double factor, double lo, double hi,
                                double octx)
{
    double freq = 1.0 / pow(base, (double)(2 * i) / dim);
    double wl = 2 * M_PI / freq;
    if (wl < octx / hi) return 1.0;
    if (wl > octx / lo) return factor;
    double s = (octx / wl - lo) / (hi - lo);
    return 1.0 / ((1 - s) / factor + s);
}

static void test_llama3_rope_freqs(void **state)
{
    (void)state;
    TU_NEED_SHARED(tok, "models/stories260K/hf/tokenizer.model");
    /* Llama 3.1 8B's parameters */
    float f[64];
    lpk_gguf_llama3_rope_factors(128, 500000.0f, 8.0f, 1.0f, 4.0f, 8192, f);
    int ones = 0, full = 0, mid = 0;
    for (int i = 0; i < 64; i++) {
        double want = llama3_factor_ref(i, 128, 500000.0, 8.0, 1.0, 4.0, 8192.0);
        if (fabs(f[i] - want) > 1e-5 * want) fail_msg("factor %d: %.9g, want %.9g", i, f[i], want);
        ones += f[i] == 1.0f;
        full += f[i] == 8.0f;
        mid += f[i] > 1.0f && f[i] < 8.0f;
    }
    assert_true(ones > 0 && full > 0 && mid > 0);
    for (int i = 1; i < 64; i++) assert_true(f[i] >= f[i - 1]); /* lower frequency, more scaling */

    char *dir = tu_tmpdir();
    char *in = tu_fmt("%s/l3.lpk", dir), *out = tu_fmt("%s/l3.gguf", dir);
    lpk_meta *m = small_meta(tok);
    lpk_meta_set_u32(m, "llama.rope.dimension_count", 8);
    lpk_meta_set_f32(m, "llama.rope.freq_base", 500000.0f);
    lpk_meta_set_str(m, "llama.rope.scaling.type", "llama3");
    lpk_meta_set_f32(m, "llama.rope.scaling.factor", 8.0f);
    lpk_meta_set_u32(m, "llama.rope.scaling.original_context_length", 64);
    lpk_meta_set_f32(m, "llama.rope.scaling.low_freq_factor", 1.0f);
    lpk_meta_set_f32(m, "llama.rope.scaling.high_freq_factor", 4.0f);
    write_container(in, m, small_tensors, N_SMALL);
    assert_int_equal(tu_llmpack(NULL, "export '%s' -o '%s' --quiet", in, out), 0);
    lpk_reader *a = open_or_fail(in), *b = open_or_fail(out);
    same_tensors(a, b);
    const lpk_tensor *t = lpk_reader_find(b, "rope_freqs.weight");
    assert_non_null(t);
    assert_int_equal(t->type, LPK_TYPE_F32);
    assert_int_equal(t->n_dims, 1);
    assert_int_equal(t->dims[0], 4);
    const float *got = t->data;
    for (int i = 0; i < 4; i++) {
        double want = llama3_factor_ref(i, 8, 500000.0, 8.0, 1.0, 4.0, 64.0);
        if (fabs(got[i] - want) > 1e-5 * want) fail_msg("rope_freqs[%d] %g want %g", i, got[i], want);
    }
    const lpk_meta *g = lpk_reader_meta(b);
    assert_null(lpk_meta_find(g, "llama.rope.scaling.type"));
    assert_null(lpk_meta_find(g, "llama.rope.scaling.factor"));
    assert_non_null(lpk_meta_find(g, "llama.rope.scaling.original_context_length"));
    lpk_reader_close(a);
    lpk_reader_close(b);

    /* linear scaling stays as keys */
    lpk_meta_set_str(m, "llama.rope.scaling.type", "linear");
    write_container(in, m, small_tensors, N_SMALL);
    assert_int_equal(tu_llmpack(NULL, "export '%s' -o '%s' --quiet --force", in, out), 0);
    b = open_or_fail(out);
    assert_null(lpk_reader_find(b, "rope_freqs.weight"));
    assert_string_equal(lpk_meta_get_str(lpk_reader_meta(b), "llama.rope.scaling.type"), "linear");
    lpk_reader_close(b);
    lpk_meta_free(m);
    free(in);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

/* The llama2-20m description (tokenizer from its own files, hyperparameters as
 * docs/MODEL.md types them, or wider) exports to the keys llama.cpp wrote. */
static void test_keys_match_llamacpp(void **state)
{
    (void)state;
    TU_NEED_SHARED(ref, "gguf/llama2-20m-Q8_0.gguf");
    char *refp = strdup(ref);
    TU_NEED_SHARED(tok, "models/llama2-20m/hf/tokenizer.model");
    char *tokp = strdup(tok);
    TU_NEED_SHARED(cfg, "models/llama2-20m/hf/tokenizer_config.json");
    char *dir = tu_tmpdir();
    for (int wide = 0; wide < 2; wide++) {
        char *in = tu_fmt("%s/m%d.lpk", dir, wide), *out = tu_fmt("%s/m%d.gguf", dir, wide);
        lpk_meta *m = llama2_20m_meta(tokp, cfg, wide);
        static const tspec t[] = {{"output_norm.weight", LPK_TYPE_F32, 1, {256}}};
        write_container(in, m, t, 1);
        char *log = NULL;
        if (tu_llmpack(&log, "export '%s' -o '%s' --quiet", in, out)) fail_msg("%s", log);
        free(log);
        compare_with_llamacpp(out, refp, 1);
        lpk_meta_free(m);
        free(in);
        free(out);
    }
    tu_rmtree(dir);
    free(dir);
    free(refp);
    free(tokp);
}


/* ---------------------------------------------------------------- real models */
/* Every key of the container comes back with the same value (and type). */
static void same_keys(const lpk_reader *src, const lpk_reader *gguf)
{
    const lpk_meta *a = lpk_reader_meta(src), *b = lpk_reader_meta(gguf);
    for (size_t i = 0; i < lpk_meta_count(a); i++) {
        const lpk_kv *k = lpk_meta_at(a, i);
        const lpk_kv *k2 = lpk_meta_find(b, k->key);
        if (!k2 || !kv_same_value(k, k2)) fail_msg("key %s lost or changed", k->key);
    }
}

static void run_ok(const char *args)
{
    char *log = NULL;
    int rc = tu_llmpack(&log, "%s", args);
    if (rc) fail_msg("llmpack %s: exit %d: %s", args, rc, log ? log : "");
    free(log);
}

/* Same tensor names and types as llama.cpp's file (same recipe). */
static void same_types(const char *ours, const char *theirs)
{
    lpk_reader *a = open_or_fail(ours), *b = open_or_fail(theirs);
    assert_int_equal(lpk_reader_n_tensors(a), lpk_reader_n_tensors(b));
    for (size_t i = 0; i < lpk_reader_n_tensors(b); i++) {
        const lpk_tensor *t = lpk_reader_tensor(b, i), *u = lpk_reader_find(a, t->name);
        if (!u) fail_msg("%s: tensor %s missing", ours, t->name);
        if (u->type != t->type)
            fail_msg("%s: %s is %s, llama.cpp's %s", ours, t->name, lpk_type_get(u->type)->name,
                     lpk_type_get(t->type)->name);
    }
    lpk_reader_close(a);
    lpk_reader_close(b);
}

/* A model converted by llmpack (source precision src_type: bf16 or f16),
 * quantized to each type, exported: the GGUF passes the reader's validation,
 * holds the container's tensors bit for bit and all its keys, and (q8p, q4kmp:
 * the files llama.cpp wrote, when given) its keys match llama.cpp's. The export
 * at the source precision also goes back to .lpk (lpk -> gguf -> lpk) unchanged. */
static void every_type(const char *hfp, const char *src_type, const char *q8p, const char *q4kmp)
{
    char *dir = tu_tmpdir();
    char *base = tu_fmt("%s/%s.lpk", dir, src_type);
    char *cmd = tu_fmt("convert '%s' -o '%s'", hfp, base);
    run_ok(cmd);
    free(cmd);
    /* the source precision; the others go through quantize (f32 through convert) */
    const char *fast[] = {src_type, "q8_0", "q4_k_m"};
    const char *slow[] = {"f32", strcmp(src_type, "f16") ? "f16" : "bf16", "q4_0", "q4_1",
                          "q5_0", "q5_1", "q4_k_s", "q6_k"};
    size_t nf = sizeof fast / sizeof fast[0], ns = tu_long() ? sizeof slow / sizeof slow[0] : 0;
    for (size_t i = 0; i < nf + ns; i++) {
        const char *type = i < nf ? fast[i] : slow[i - nf];
        char *lpk = tu_fmt("%s/%s.lpk", dir, type), *gguf = tu_fmt("%s/%s.gguf", dir, type);
        if (!strcmp(type, src_type)) {
            free(lpk);
            lpk = strdup(base);
        } else if (!strcmp(type, "f32")) {
            cmd = tu_fmt("convert '%s' -o '%s' --type f32", hfp, lpk);
            run_ok(cmd);
            free(cmd);
        } else {
            cmd = tu_fmt("quantize '%s' -o '%s' --type %s -q", base, lpk, type);
            run_ok(cmd);
            free(cmd);
        }
        cmd = tu_fmt("export '%s' -o '%s' --quiet", lpk, gguf);
        run_ok(cmd);
        free(cmd);
        cmd = tu_fmt("check '%s'", gguf);
        run_ok(cmd);
        free(cmd);
        lpk_reader *a = open_or_fail(lpk), *b = open_or_fail(gguf);
        assert_int_equal(lpk_reader_n_tensors(a), lpk_reader_n_tensors(b));
        same_tensors(a, b);
        same_keys(a, b);
        lpk_reader_close(a);
        lpk_reader_close(b);
        if (!strcmp(type, src_type)) {
            /* and back: GGUF -> .lpk through the reader keeps tensors and tokenizer */
            char *back = tu_fmt("%s/back.lpk", dir);
            cmd = tu_fmt("quantize '%s' -o '%s' --type %s -q", gguf, back, src_type);
            run_ok(cmd);
            free(cmd);
            lpk_reader *c = open_or_fail(back), *s0 = open_or_fail(base);
            same_tensors(s0, c);
            const lpk_meta *mc = lpk_reader_meta(c), *m0 = lpk_reader_meta(s0);
            for (size_t k = 0; k < lpk_meta_count(m0); k++) {
                const lpk_kv *kv = lpk_meta_at(m0, k);
                if (strncmp(kv->key, "tokenizer.", 10) && strncmp(kv->key, "llama.", 6)) continue;
                const lpk_kv *kv2 = lpk_meta_find(mc, kv->key);
                if (!kv2 || !kv_same_value(kv, kv2)) fail_msg("round trip: key %s", kv->key);
            }
            lpk_reader_close(c);
            lpk_reader_close(s0);
            free(back);
        }
        int is_q8 = !strcmp(type, "q8_0"), is_q4km = !strcmp(type, "q4_k_m");
        if (q8p) compare_with_llamacpp(gguf, q8p, is_q8);
        if (q4kmp && is_q4km) compare_with_llamacpp(gguf, q4kmp, 1);
        if (q8p && is_q8) same_types(gguf, q8p);
        if (q4kmp && is_q4km) same_types(gguf, q4kmp);
        unlink(gguf);
        if (strcmp(type, src_type)) unlink(lpk);
        free(lpk);
        free(gguf);
    }
    tu_rmtree(dir);
    free(dir);
    free(base);
}

/* The demo model (f16) always; llama2-20m (bf16), with llama.cpp's files to
 * compare with, when ../shared has them. */
static void test_every_type(void **state)
{
    (void)state;
    every_type("examples/stories260K", "f16", NULL, NULL);
    char *hfp = tu_shared_dup("models/llama2-20m/hf"),
         *q8p = tu_shared_dup("gguf/llama2-20m-Q8_0.gguf"),
         *q4kmp = tu_shared_dup("gguf/llama2-20m-Q4_K_M.gguf");
    if (hfp && q8p && q4kmp) every_type(hfp, "bf16", q8p, q4kmp);
    else print_message("NOTE: ../shared's llama2-20m and its llama.cpp GGUFs not found: only the "
                       "demo model checked\n");
    free(hfp);
    free(q8p);
    free(q4kmp);
}

/* llama.cpp's converter and llmpack's agree on stories260K in f32, bit for bit
 * (both store q/k in Meta's order; both leave the tied output out). */
static void test_stories260k_matches_llamacpp(void **state)
{
    (void)state;
    TU_NEED_SHARED(hf, "models/stories260K/hf");
    char *hfp = strdup(hf);
    TU_NEED_SHARED(ref, "gguf/stories260K-f32.gguf");
    char *dir = tu_tmpdir();
    char *lpk = tu_fmt("%s/s.lpk", dir), *gguf = tu_fmt("%s/s.gguf", dir);
    char *cmd = tu_fmt("convert '%s' -o '%s'", hfp, lpk);
    run_ok(cmd);
    free(cmd);
    cmd = tu_fmt("export '%s' -o '%s' --quiet", lpk, gguf);
    run_ok(cmd);
    free(cmd);
    lpk_reader *l = open_or_fail(ref), *o = open_or_fail(gguf), *c = open_or_fail(lpk);
    assert_int_equal(lpk_reader_n_tensors(o), lpk_reader_n_tensors(l));
    assert_null(lpk_reader_find(o, "output.weight"));
    same_tensors(l, o);
    same_tensors(c, o);
    /* tokenizer and hyperparameters: llama.cpp's values (it adds general.type/size_label) */
    static const char *keys[] = {
        "llama.context_length", "llama.embedding_length", "llama.block_count",
        "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
        "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size",
        "llama.rope.dimension_count", "tokenizer.ggml.model", "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "general.file_type",
        "general.quantization_version"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const lpk_kv *a = lpk_meta_find(lpk_reader_meta(o), keys[i]);
        const lpk_kv *b = lpk_meta_find(lpk_reader_meta(l), keys[i]);
        if (!a || !b || !kv_same_value(a, b)) fail_msg("key %s differs from llama.cpp's", keys[i]);
    }
    lpk_reader_close(l);
    lpk_reader_close(o);
    lpk_reader_close(c);
    free(lpk);
    free(gguf);
    free(hfp);
    tu_rmtree(dir);
    free(dir);
}

/* info and check read llmpack's GGUFs of the demo model and llama.cpp's files
 * (those ../shared has); check names what is wrong in a damaged one. */
static void test_cli_info_check(void **state)
{
    (void)state;
    static const char *files[] = {
        "demo-f32.gguf", "demo-Q4_K_M.gguf",
        "gguf/llama2-20m-Q4_K_M.gguf", "gguf/llama2-20m-Q8_0.gguf", "gguf/stories260K-Q4_K_M.gguf",
        "gguf/stories260K-f32.gguf", "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf"};
    const char *demo_args[] = {"--type f32", "--type q4_k_m"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        const char *p = i < 2 ? tu_demo(files[i], demo_args[i]) : tu_shared(files[i]);
        if (!p) {
            print_message("NOTE: ../shared/%s not found: not checked\n", files[i]);
            continue;
        }
        char *log = NULL;
        if (strstr(files[i], "vocab")) {
            /* a vocabulary-only GGUF is a valid file but not a model: check says which
             * tensor a model needs */
            assert_int_equal(tu_llmpack(&log, "check '%s'", p), 3);
            assert_non_null(strstr(log, "token_embd.weight is missing"));
            free(log);
            assert_int_equal(tu_llmpack(&log, "info '%s'", p), 3);
            assert_non_null(strstr(log, "token_embd.weight is missing"));
            free(log);
            continue;
        } else if (tu_llmpack(&log, "check '%s'", p)) {
            fail_msg("check %s: %s", p, log);
        }
        free(log);
        if (tu_llmpack(&log, "info '%s' --json", p)) fail_msg("info %s: %s", p, log);
        assert_non_null(strstr(log, "gguf"));
        free(log);
    }
    const char *f32 = tu_shared_or_demo("gguf/stories260K-f32.gguf", "--type f32");
    size_t n;
    char *buf = tu_read_file(f32, &n);
    char *dir = tu_tmpdir();
    char *cut = tu_fmt("%s/cut.gguf", dir);
    assert_int_equal(tu_write_file(cut, buf, 100000), 0);
    char *log = NULL;
    assert_int_equal(tu_llmpack(&log, "check '%s'", cut), 3);
    assert_non_null(strstr(log, "tensor 'token_embd.weight'"));
    assert_non_null(strstr(log, "extends past the end of the file"));
    free(log);
    buf[4] = 1; /* version 1 */
    assert_int_equal(tu_write_file(cut, buf, n), 0);
    assert_int_equal(tu_llmpack(&log, "info '%s'", cut), 3);
    assert_non_null(strstr(log, "GGUF version 1 is not supported"));
    free(log);
    free(buf);
    free(cut);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all_types),
        cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_llama3_rope_freqs),
        cmocka_unit_test(test_keys_match_llamacpp),
        cmocka_unit_test(test_cli_info_check),
        cmocka_unit_test(test_stories260k_matches_llamacpp),
        cmocka_unit_test(test_every_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
