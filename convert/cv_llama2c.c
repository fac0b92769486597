/* llama2.c checkpoints (run.c's legacy format): 7 x int32 header (dim,
 * hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
 * vocab_size means an untied classifier follows), then f32 arrays:
 * token_embedding [vocab, dim], rms_att [layers, dim], wq [layers, dim, dim],
 * wk [layers, kv_dim, dim], wv [layers, kv_dim, dim], wo [layers, dim, dim],
 * rms_ffn [layers, dim], w1 [layers, hidden, dim], w2 [layers, dim, hidden],
 * w3 [layers, hidden, dim], rms_final [dim], freq_cis_real and freq_cis_imag
 * [seq_len, head_size/2] each (not needed), wcls [vocab, dim] if untied.
 * Rows are [out, in]; q/k rows are already in interleaved RoPE order. */
#include "cv_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t rd_i32(const uint8_t *p) { return (int32_t)lpk_rd32(p); }

/* a*b*c elements, overflow-checked into *acc (running element count). */
static int add_elems(uint64_t *acc, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t x;
    if (__builtin_mul_overflow(a, b, &x) || __builtin_mul_overflow(x, c, &x) ||
        __builtin_add_overflow(*acc, x, acc))
        return -1;
    return 0;
}

int cv_llama2c_open(const char *path, cv_open_opts *o, cv_source **out, lpk_error *err)
{
    *out = NULL;
    cv_msrc *m;
    int rc = cv_msrc_new(path, &m, err);
    if (rc) return rc;
    cv_source *s = cv_msrc_source(m);
    int fi = cv_msrc_add_file(m, path, err);
    if (fi < 0) {
        rc = fi;
        goto fail;
    }
    const cv_mapfile *f = cv_msrc_file(m, fi);
    if (f->size < 28) {
        rc = lpk_err(err, LPK_ETRUNC, "%s: %llu bytes, too short for a llama2.c header", path,
                     (unsigned long long)f->size);
        goto fail;
    }
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = rd_i32(f->base + 4 * i);
    int64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kvh = h[4],
            vocab = h[5] < 0 ? -(int64_t)h[5] : h[5], seq = h[6];
    int tied = h[5] > 0;
    if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kvh <= 0 || vocab == 0 ||
        seq <= 0 || dim % heads || heads % kvh || (dim / heads) % 2) {
        rc = lpk_err(err, LPK_ECORRUPT, "%s: not a llama2.c checkpoint: header dim %d, "
                     "hidden %d, layers %d, heads %d, kv_heads %d, vocab %d, seq_len %d", path,
                     h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
        goto fail;
    }
    int64_t hs = dim / heads, kv_dim = dim / heads * kvh;
    uint64_t U = 0; /* total elements */
    if (add_elems(&U, (uint64_t)vocab, (uint64_t)dim, 1) ||
        add_elems(&U, (uint64_t)layers, (uint64_t)dim, 2) ||           /* rms_att, rms_ffn */
        add_elems(&U, (uint64_t)layers, (uint64_t)dim, (uint64_t)dim * 2) ||   /* wq, wo */
        add_elems(&U, (uint64_t)layers, (uint64_t)kv_dim, (uint64_t)dim * 2) || /* wk, wv */
        add_elems(&U, (uint64_t)layers, (uint64_t)hidden, (uint64_t)dim * 3) || /* w1-3 */
        add_elems(&U, (uint64_t)dim, 1, 1) ||
        add_elems(&U, (uint64_t)seq, (uint64_t)hs, 1) ||                /* freq_cis */
        (!tied && add_elems(&U, (uint64_t)vocab, (uint64_t)dim, 1)) ||
        U > (UINT64_MAX - 28) / 4) {
        rc = lpk_err(err, LPK_ECORRUPT, "%s: llama2.c header sizes overflow", path);
        goto fail;
    }
    if (28 + 4 * U != f->size) {
        rc = lpk_err(err, 28 + 4 * U > f->size ? LPK_ETRUNC : LPK_ECORRUPT,
                     "%s: llama2.c header implies %llu bytes, the file has %llu", path,
                     (unsigned long long)(28 + 4 * U), (unsigned long long)f->size);
        goto fail;
    }
    uint64_t off = 28;
    int64_t d[2];
#define ADD(canon, src, rows, cols)                                                     \
    do {                                                                                \
        d[0] = (rows); d[1] = (cols);                                                   \
        if ((rc = cv_msrc_add_tensor(m, canon, src, LPK_TYPE_F32, d[0] == 1 ? 1 : 2,    \
                                     d[0] == 1 ? d + 1 : d, fi, off, 0, err)))          \
            goto fail;                                                                  \
        off += 4 * (uint64_t)d[0] * (uint64_t)d[1];                                     \
    } while (0)
    char cn[64], sn[64];
    ADD("token_embd.weight", "token_embedding_table", vocab, dim);
    static const struct { const char *canon, *src; int rows, cols; } per_layer[] = {
        /* rows/cols: 0 dim, 1 kv_dim, 2 hidden; rows -1: a 1-D [cols] */
        {"attn_norm.weight", "rms_att_weight", -1, 0},
        {"attn_q.weight", "wq", 0, 0},
        {"attn_k.weight", "wk", 1, 0},
        {"attn_v.weight", "wv", 1, 0},
        {"attn_output.weight", "wo", 0, 0},
        {"ffn_norm.weight", "rms_ffn_weight", -1, 0},
        {"ffn_gate.weight", "w1", 2, 0},
        {"ffn_down.weight", "w2", 0, 2},
        {"ffn_up.weight", "w3", 2, 0},
    };
    for (size_t k = 0; k < sizeof per_layer / sizeof per_layer[0]; k++) {
        const int64_t sz[3] = {dim, kv_dim, hidden};
        for (int64_t l = 0; l < layers; l++) {
            snprintf(cn, sizeof cn, "blk.%lld.%s", (long long)l, per_layer[k].canon);
            snprintf(sn, sizeof sn, "%s[%lld]", per_layer[k].src, (long long)l);
            ADD(cn, sn, per_layer[k].rows < 0 ? 1 : sz[per_layer[k].rows], sz[per_layer[k].cols]);
        }
    }
    ADD("output_norm.weight", "rms_final_weight", 1, dim);
    off += 2 * 4 * (uint64_t)seq * (uint64_t)(hs / 2);
    if ((rc = cv_source_add_skipped(s, "freq_cis_real", err)) ||
        (rc = cv_source_add_skipped(s, "freq_cis_imag", err)))
        goto fail;
    if (!tied) ADD("output.weight", "wcls", vocab, dim);
#undef ADD
    s->tie_hint = tied ? CV_TIE_TIED : CV_TIE_UNTIED;
    cv_hparams hp = {.dim = dim, .ffn = hidden, .n_layers = layers, .n_head = heads,
                     .n_kv = kvh, .vocab = vocab, .head_dim = hs, .ctx = seq, .eps = 1e-5,
                     .rope_theta = 10000.0, .tie = s->tie_hint};
    char name[256];
    cv_default_name(path, name, sizeof name);
    if ((rc = cv_hparams_to_meta(&hp, s->meta, err))) goto fail;
    if (lpk_meta_set_str(s->meta, "general.name", name) ||
        lpk_meta_set_str(s->meta, "source.format", "llama2c")) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto fail;
    }
    if (o->tokenizer) {
        if ((rc = cv_load_tokenizer(o->tokenizer, s, o->warn, sizeof o->warn, err))) goto fail;
    } else {
        snprintf(o->warn, sizeof o->warn, "no tokenizer (give one with --tokenizer FILE)");
    }
    *out = s;
    return LPK_OK;
fail:
    s->ops->close(s);
    return rc;
}
