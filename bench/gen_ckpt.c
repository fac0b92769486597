/* Writes a shape-true synthetic LLaMA checkpoint of random bf16 weights, for
 * benchmarking `llmpack convert`:
 *
 *   hf:   config.json, N safetensors shards, model.safetensors.index.json
 *   meta: params.json, consolidated.00.pth ... (N model-parallel torch zips,
 *         each weight split the way Meta's code splits it)
 *
 *   gen_ckpt --shape 7b|13b|1b|tiny --out DIR [--format hf|meta] [--shards N]
 *            [--seed S] [--zip64] [--tied]
 *   gen_ckpt --custom DIM,FFN,LAYERS,HEADS,KV_HEADS,VOCAB ...
 *
 * --tied leaves lm_head.weight out of HF checkpoints (tie_word_embeddings);
 * --custom gives any shape (tests write real repos' metadata beside it).
 *
 * Every value is a function of (seed, canonical tensor, canonical row), so the
 * two layouts of one seed hold the same model: converting either gives the
 * same tensors. HF q/k rows are written in HF's rotary order. --zip64 writes
 * zip64 headers and end records even where sizes would not need them.
 *
 * Memory stays at one 8 MiB buffer whatever the model size. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct shape {
    const char *name;
    int64_t dim, ffn, layers, heads, kv, vocab, ctx;
} shape;

static const shape shapes[] = {
    {"7b", 4096, 11008, 32, 32, 32, 32000, 4096},   /* LLaMA-2-7B */
    {"13b", 5120, 13824, 40, 40, 40, 32000, 4096},  /* LLaMA-2-13B */
    {"1b", 2048, 5632, 22, 32, 4, 32000, 2048},     /* TinyLlama-1.1B shapes (GQA) */
    {"tiny", 256, 768, 4, 8, 4, 1024, 512},         /* smoke test */
};

enum { SPLIT_DIM0, SPLIT_DIM1, SPLIT_REPL };
enum { K_WEIGHT, K_NORM, K_FREQS };

typedef struct tdesc {
    char canon[64], hf[96], meta[96];  /* hf[0] == 0: not in HF checkpoints */
    int64_t rows, cols;  /* merged shape; cols 0: 1-D */
    int split, kind;
    int64_t perm_hd;     /* > 0: HF rows in rotary order, heads of this size */
    int shard;           /* HF shard */
    uint64_t off;        /* within the HF shard's data section */
} tdesc;

static uint64_t seed = 0x9e3779b97f4a7c15ull;
static int tied_hf;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static int64_t cols_of(const tdesc *t) { return t->cols ? t->cols : t->rows; }
static int64_t rows_of(const tdesc *t) { return t->cols ? t->rows : 1; }
static uint64_t nbytes(const tdesc *t) { return (uint64_t)(t->rows * (t->cols ? t->cols : 1)) * 2; }

/* Canonical row r of t: random bf16 with weight-like magnitudes (|x| in about
 * [2^-10, 2^-3]), ~1.0 for norm gains, Meta's rotary frequencies for rope.freqs. */
static void fill_row(const tdesc *t, int64_t r, uint16_t *p)
{
    int64_t n = cols_of(t);
    if (t->kind == K_FREQS) {
        for (int64_t i = 0; i < n; i++) {
            float f = (float)pow(10000.0, -2.0 * (double)i / (double)(2 * n));
            uint32_t u;
            memcpy(&u, &f, 4);
            p[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        }
        return;
    }
    uint64_t s = mix(seed ^ mix(name_hash(t->canon) + (uint64_t)r)) | 1;
    for (int64_t i = 0; i < n; i += 4) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        for (int64_t k = 0; k < 4 && i + k < n; k++) {
            uint16_t b = (uint16_t)(s >> (16 * k));
            if (t->kind == K_NORM) p[i + k] = (uint16_t)(0x3f80 | (b & 0x1f));
            else p[i + k] = (uint16_t)((b & 0x8000) | ((0x75 + ((b >> 7) & 7)) << 7) | (b & 0x7f));
        }
    }
}

/* The canonical row stored at HF row j: the inverse of HF's q/k permutation
 * (canonical row h*hd + 2i + k sits at HF row h*hd + k*hd/2 + i). */
static int64_t hf_canon_row(const tdesc *t, int64_t j)
{
    int64_t hd = t->perm_hd;
    if (hd <= 1) return j;
    int64_t h = j / hd, jj = j % hd;
    return h * hd + (jj < hd / 2 ? 2 * jj : 2 * (jj - hd / 2) + 1);
}

/* ---------------------------------------------------------------- output */
typedef struct wfile {
    int fd;
    const char *path;
    uint8_t *buf;
    size_t n, cap;
    uint64_t pos;   /* bytes written so far, buffered included */
    uint32_t crc;   /* running CRC-32 of the current zip member */
    int bad;
} wfile;

static uint32_t crc_tab[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c >> 1 ^ (0xedb88320u & (0u - (c & 1)));
        crc_tab[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_tab[t][i] = crc_tab[t - 1][i] >> 8 ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

/* CRC-32 (zip's), slicing by 8. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t c = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t a = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                          (uint32_t)p[3] << 24);
        c = crc_tab[7][a & 0xff] ^ crc_tab[6][a >> 8 & 0xff] ^ crc_tab[5][a >> 16 & 0xff] ^
            crc_tab[4][a >> 24] ^ crc_tab[3][p[4]] ^ crc_tab[2][p[5]] ^ crc_tab[1][p[6]] ^
            crc_tab[0][p[7]];
    }
    while (n--) c = crc_tab[0][(c ^ *p++) & 0xff] ^ c >> 8;
    return ~c;
}

static void w_flush(wfile *w)
{
    const uint8_t *b = w->buf;
    size_t n = w->n;
    while (n && !w->bad) {
        ssize_t k = write(w->fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) w->bad = 1;
        else {
            b += k;
            n -= (size_t)k;
        }
    }
    w->n = 0;
}

static void w_put(wfile *w, const void *p, size_t n)
{
    w->crc = crc_update(w->crc, p, n);
    w->pos += n;
    while (n) {
        if (w->n == w->cap) w_flush(w);
        size_t k = w->cap - w->n < n ? w->cap - w->n : n;
        memcpy(w->buf + w->n, p, k);
        w->n += k;
        p = (const uint8_t *)p + k;
        n -= k;
    }
}

static void w_le(wfile *w, uint64_t v, int k)
{
    uint8_t b[8];
    for (int i = 0; i < k; i++) b[i] = (uint8_t)(v >> (8 * i));
    w_put(w, b, (size_t)k);
}

static int w_open(wfile *w, const char *path, uint8_t *buf, size_t cap)
{
    memset(w, 0, sizeof *w);
    w->path = path;
    w->buf = buf;
    w->cap = cap;
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w->fd < 0) {
        fprintf(stderr, "gen_ckpt: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int w_close(wfile *w)
{
    w_flush(w);
    if (close(w->fd)) w->bad = 1;
    if (w->bad) fprintf(stderr, "gen_ckpt: %s: write failed: %s\n", w->path, strerror(errno));
    return w->bad ? -1 : 0;
}

/* ---------------------------------------------------------------- tensors */
static size_t build_tensors(const shape *sh, tdesc *t)
{
    size_t k = 0;
    int64_t hd = sh->dim / sh->heads;
#define T(C, H, M, R, CO, SP, KI, PH)                                                    \
    do {                                                                                 \
        snprintf(t[k].canon, sizeof t[k].canon, "%s", C);                                \
        snprintf(t[k].hf, sizeof t[k].hf, "%s", H);                                      \
        snprintf(t[k].meta, sizeof t[k].meta, "%s", M);                                  \
        t[k].rows = R; t[k].cols = CO; t[k].split = SP; t[k].kind = KI; t[k].perm_hd = PH; \
        k++;                                                                             \
    } while (0)
    T("token_embd.weight", "model.embed_tokens.weight", "tok_embeddings.weight", sh->vocab,
      sh->dim, SPLIT_DIM1, K_WEIGHT, 0);
    for (int64_t l = 0; l < sh->layers; l++) {
        static const struct { const char *canon, *hf, *meta; int split, kind, perm; } p[] = {
            {"attn_norm", "input_layernorm", "attention_norm", SPLIT_REPL, K_NORM, 0},
            {"attn_q", "self_attn.q_proj", "attention.wq", SPLIT_DIM0, K_WEIGHT, 1},
            {"attn_k", "self_attn.k_proj", "attention.wk", SPLIT_DIM0, K_WEIGHT, 1},
            {"attn_v", "self_attn.v_proj", "attention.wv", SPLIT_DIM0, K_WEIGHT, 0},
            {"attn_output", "self_attn.o_proj", "attention.wo", SPLIT_DIM1, K_WEIGHT, 0},
            {"ffn_norm", "post_attention_layernorm", "ffn_norm", SPLIT_REPL, K_NORM, 0},
            {"ffn_gate", "mlp.gate_proj", "feed_forward.w1", SPLIT_DIM0, K_WEIGHT, 0},
            {"ffn_down", "mlp.down_proj", "feed_forward.w2", SPLIT_DIM1, K_WEIGHT, 0},
            {"ffn_up", "mlp.up_proj", "feed_forward.w3", SPLIT_DIM0, K_WEIGHT, 0},
        };
        int64_t rc[9][2] = {{sh->dim, 0}, {sh->heads * hd, sh->dim}, {sh->kv * hd, sh->dim},
                            {sh->kv * hd, sh->dim}, {sh->dim, sh->heads * hd}, {sh->dim, 0},
                            {sh->ffn, sh->dim}, {sh->dim, sh->ffn}, {sh->ffn, sh->dim}};
        for (int i = 0; i < 9; i++) {
            char c[64], h[96], m[96];
            snprintf(c, sizeof c, "blk.%lld.%s.weight", (long long)l, p[i].canon);
            snprintf(h, sizeof h, "model.layers.%lld.%s.weight", (long long)l, p[i].hf);
            snprintf(m, sizeof m, "layers.%lld.%s.weight", (long long)l, p[i].meta);
            T(c, h, m, rc[i][0], rc[i][1], p[i].split, p[i].kind, p[i].perm ? hd : 0);
        }
    }
    T("output_norm.weight", "model.norm.weight", "norm.weight", sh->dim, 0, SPLIT_REPL, K_NORM, 0);
    T("output.weight", tied_hf ? "" : "lm_head.weight", "output.weight", sh->vocab, sh->dim,
      SPLIT_DIM0,
      K_WEIGHT, 0);
    T("rope.freqs", "", "rope.freqs", hd / 2, 0, SPLIT_REPL, K_FREQS, 0);
#undef T
    return k;
}

/* ---------------------------------------------------------------- HF */
static int write_hf(const shape *sh, tdesc *t, size_t nt, const char *out, int shards,
                    uint8_t *buf, size_t bufn)
{
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++)
        if (t[i].hf[0]) total += nbytes(&t[i]);
    /* Shards of about total/shards bytes, in order. */
    uint64_t per = total / (uint64_t)shards + 1, acc = 0, off = 0;
    int cur = 0;
    for (size_t i = 0; i < nt; i++) {
        if (!t[i].hf[0]) continue;
        if (acc >= per * (uint64_t)(cur + 1) && cur + 1 < shards) {
            cur++;
            off = 0;
        }
        t[i].shard = cur;
        t[i].off = off;
        off += nbytes(&t[i]);
        acc += nbytes(&t[i]);
    }
    shards = cur + 1;
    char path[4096];
    size_t cap = 1u << 20;
    char *h = malloc(cap);
    uint16_t *row = malloc((size_t)sh->ffn * 2 + (size_t)sh->vocab * 2);
    if (!h || !row) return -1;
    for (int s = 0; s < shards; s++) {
        /* Header: a JSON object of this shard's tensors. */
        size_t hl = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
        for (size_t i = 0; i < nt; i++) {
            if (!t[i].hf[0] || t[i].shard != s) continue;
            char shp[64];
            if (t[i].cols) snprintf(shp, sizeof shp, "[%lld,%lld]", (long long)t[i].rows, (long long)t[i].cols);
            else snprintf(shp, sizeof shp, "[%lld]", (long long)t[i].rows);
            if (hl + 512 > cap) {
                fprintf(stderr, "gen_ckpt: header too large\n");
                return -1;
            }
            hl += (size_t)snprintf(h + hl, cap - hl,
                                   ",\"%s\":{\"dtype\":\"BF16\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}",
                                   t[i].hf, shp, (unsigned long long)t[i].off,
                                   (unsigned long long)(t[i].off + nbytes(&t[i])));
        }
        hl += (size_t)snprintf(h + hl, cap - hl, "}");
        while (hl % 8) h[hl++] = ' ';
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", out, s + 1, shards);
        wfile w;
        if (w_open(&w, path, buf, bufn)) return -1;
        w_le(&w, hl, 8);
        w_put(&w, h, hl);
        for (size_t i = 0; i < nt; i++) {
            if (!t[i].hf[0] || t[i].shard != s) continue;
            size_t rb = (size_t)cols_of(&t[i]) * 2;
            for (int64_t j = 0; j < rows_of(&t[i]); j++) {
                fill_row(&t[i], hf_canon_row(&t[i], j), row);
                w_put(&w, row, rb);
            }
        }
        if (w_close(&w)) return -1;
    }
    free(h);
    free(row);
    /* Index and config. */
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"metadata\":{\"total_size\":%llu},\"weight_map\":{", (unsigned long long)total);
    for (size_t i = 0, first = 1; i < nt; i++) {
        if (!t[i].hf[0]) continue;
        fprintf(f, "%s\"%s\":\"model-%05d-of-%05d.safetensors\"", first ? "" : ",", t[i].hf,
                t[i].shard + 1, shards);
        first = 0;
    }
    fprintf(f, "}}\n");
    if (fclose(f)) return -1;
    snprintf(path, sizeof path, "%s/config.json", out);
    if (!(f = fopen(path, "w"))) return -1;
    fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\","
               "\"hidden_size\":%lld,\"intermediate_size\":%lld,\"num_hidden_layers\":%lld,"
               "\"num_attention_heads\":%lld,\"num_key_value_heads\":%lld,\"vocab_size\":%lld,"
               "\"max_position_embeddings\":%lld,\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,"
               "\"tie_word_embeddings\":false,\"bos_token_id\":1,\"eos_token_id\":2,"
               "\"torch_dtype\":\"bfloat16\"}\n",
            (long long)sh->dim, (long long)sh->ffn, (long long)sh->layers, (long long)sh->heads,
            (long long)sh->kv, (long long)sh->vocab, (long long)sh->ctx);
    if (fclose(f)) return -1;
    printf("%s: %s, hf, %d shards, %llu bytes of bf16 weights\n", out, sh->name, shards,
           (unsigned long long)total);
    return 0;
}

/* ---------------------------------------------------------------- Meta (torch zip) */
typedef struct pbuf {
    uint8_t *p;
    size_t n, cap;
    int bad;
} pbuf;

static void p_put(pbuf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        size_t c = (b->n + n) * 2 + 256;
        uint8_t *q = realloc(b->p, c);
        if (!q) {
            b->bad = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void p_u8(pbuf *b, unsigned v) { uint8_t x = (uint8_t)v; p_put(b, &x, 1); }
static void p_le(pbuf *b, uint64_t v, int k)
{
    for (int i = 0; i < k; i++) p_u8(b, (unsigned)(v >> (8 * i)) & 0xff);
}
static void p_str(pbuf *b, const char *s)  /* BINUNICODE */
{
    p_u8(b, 'X');
    p_le(b, strlen(s), 4);
    p_put(b, s, strlen(s));
}
static void p_int(pbuf *b, int64_t v)
{
    if (v >= 0 && v < 256) { p_u8(b, 'K'); p_le(b, (uint64_t)v, 1); }
    else if (v >= 0 && v < 65536) { p_u8(b, 'M'); p_le(b, (uint64_t)v, 2); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { p_u8(b, 'J'); p_le(b, (uint64_t)v, 4); }
    else { p_u8(b, 0x8a); p_u8(b, 8); p_le(b, (uint64_t)v, 8); }  /* LONG1 */
}
static void p_global(pbuf *b, const char *mod, const char *name)
{
    p_u8(b, 'c');
    p_put(b, mod, strlen(mod));
    p_u8(b, '\n');
    p_put(b, name, strlen(name));
    p_u8(b, '\n');
}

/* Shard s's part of t: rows x cols. */
static void part_shape(const tdesc *t, int S, int64_t *r, int64_t *c)
{
    *r = t->rows;
    *c = t->cols;
    if (t->split == SPLIT_DIM0) *r /= S;
    if (t->split == SPLIT_DIM1) *c /= S;
}

/* The state dict pickle (protocol 2, as torch.save writes it): an OrderedDict
 * name -> _rebuild_tensor_v2(persistent_load(('storage', BFloat16Storage,
 * key, 'cpu', numel)), 0, size, stride, False, OrderedDict()). */
static int meta_pickle(const tdesc *t, size_t nt, int S, pbuf *b)
{
    p_u8(b, 0x80); p_u8(b, 2);
    p_global(b, "collections", "OrderedDict");
    p_u8(b, ')'); p_u8(b, 'R');
    p_u8(b, '(');
    for (size_t i = 0; i < nt; i++) {
        int64_t r, c;
        part_shape(&t[i], S, &r, &c);
        char key[32];
        snprintf(key, sizeof key, "%zu", i);
        p_str(b, t[i].meta);
        p_global(b, "torch._utils", "_rebuild_tensor_v2");
        p_u8(b, '(');
        p_u8(b, '(');
        p_str(b, "storage");
        p_global(b, "torch", "BFloat16Storage");
        p_str(b, key);
        p_str(b, "cpu");
        p_int(b, c ? r * c : r);
        p_u8(b, 't');
        p_u8(b, 'Q');  /* BINPERSID */
        p_int(b, 0);
        p_u8(b, '(');
        p_int(b, r);
        if (c) p_int(b, c);
        p_u8(b, 't');
        p_u8(b, '(');
        if (c) p_int(b, c);
        p_int(b, 1);
        p_u8(b, 't');
        p_u8(b, 0x89);  /* NEWFALSE */
        p_global(b, "collections", "OrderedDict");
        p_u8(b, ')'); p_u8(b, 'R');
        p_u8(b, 't'); p_u8(b, 'R');
    }
    p_u8(b, 'u');
    p_u8(b, '.');
    return b->bad ? -1 : 0;
}

typedef struct zent {
    char name[96];
    uint64_t off, size;
    uint32_t crc;
} zent;

#define Z32 0xffffffffu

/* Local header of a stored member; zip64 extra when the size needs it (or
 * force), then a padding extra field ("FB", as torch's writer names it) that
 * puts the data on a 64-byte boundary. The CRC is patched in afterwards. */
static void zip_local(wfile *w, zent *e, int force)
{
    int z64 = force || e->size >= Z32;
    size_t nl = strlen(e->name), xl = z64 ? 20 : 0;
    e->off = w->pos;
    size_t pad = (size_t)((64 - (e->off + 30 + nl + xl + 4) % 64) % 64);
    w_le(w, 0x04034b50, 4);
    w_le(w, z64 ? 45 : 20, 2);
    w_le(w, 0, 2); w_le(w, 0, 2);          /* flags, method: stored */
    w_le(w, 0, 4);                         /* time, date */
    w_le(w, 0, 4);                         /* crc, patched */
    w_le(w, z64 ? Z32 : e->size, 4);
    w_le(w, z64 ? Z32 : e->size, 4);
    w_le(w, nl, 2);
    w_le(w, xl + 4 + pad, 2);
    w_put(w, e->name, nl);
    if (z64) {
        w_le(w, 1, 2); w_le(w, 16, 2);
        w_le(w, e->size, 8); w_le(w, e->size, 8);
    }
    w_le(w, 0x4246, 2); w_le(w, pad, 2);
    static const uint8_t zeros[64];
    w_put(w, zeros, pad);
    w->crc = 0;
}

static void zip_central(wfile *w, const zent *e, size_t n, int force)
{
    uint64_t cd_off = w->pos;
    for (size_t i = 0; i < n; i++) {
        int zs = force || e[i].size >= Z32, zo = force || e[i].off >= Z32;
        size_t nl = strlen(e[i].name), xl = zs || zo ? 4 + 16 * (size_t)zs + 8 * (size_t)zo : 0;
        w_le(w, 0x02014b50, 4);
        w_le(w, xl ? 45 : 20, 2); w_le(w, xl ? 45 : 20, 2);
        w_le(w, 0, 2); w_le(w, 0, 2); w_le(w, 0, 4);
        w_le(w, e[i].crc, 4);
        w_le(w, zs ? Z32 : e[i].size, 4);
        w_le(w, zs ? Z32 : e[i].size, 4);
        w_le(w, nl, 2); w_le(w, xl, 2); w_le(w, 0, 2);
        w_le(w, 0, 2); w_le(w, 0, 2); w_le(w, 0, 4);
        w_le(w, zo ? Z32 : e[i].off, 4);
        w_put(w, e[i].name, nl);
        if (xl) {
            w_le(w, 1, 2); w_le(w, xl - 4, 2);
            if (zs) { w_le(w, e[i].size, 8); w_le(w, e[i].size, 8); }
            if (zo) w_le(w, e[i].off, 8);
        }
    }
    uint64_t cd_size = w->pos - cd_off;
    int z64 = force || cd_off >= Z32 || cd_size >= Z32 || n >= 0xffff;
    if (z64) {
        uint64_t rec = w->pos;
        w_le(w, 0x06064b50, 4); w_le(w, 44, 8);
        w_le(w, 45, 2); w_le(w, 45, 2);
        w_le(w, 0, 4); w_le(w, 0, 4);
        w_le(w, n, 8); w_le(w, n, 8);
        w_le(w, cd_size, 8); w_le(w, cd_off, 8);
        w_le(w, 0x07064b50, 4); w_le(w, 0, 4); w_le(w, rec, 8); w_le(w, 1, 4);
    }
    w_le(w, 0x06054b50, 4); w_le(w, 0, 2); w_le(w, 0, 2);
    w_le(w, n >= 0xffff ? 0xffff : n, 2); w_le(w, n >= 0xffff ? 0xffff : n, 2);
    w_le(w, cd_size >= Z32 || z64 ? Z32 : cd_size, 4);
    w_le(w, cd_off >= Z32 || z64 ? Z32 : cd_off, 4);
    w_le(w, 0, 2);
}

static int patch_crcs(const char *path, const zent *e, size_t n)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    int bad = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        uint8_t b[4] = {(uint8_t)e[i].crc, (uint8_t)(e[i].crc >> 8), (uint8_t)(e[i].crc >> 16),
                        (uint8_t)(e[i].crc >> 24)};
        bad = pwrite(fd, b, 4, (off_t)(e[i].off + 14)) != 4;
    }
    return close(fd) || bad ? -1 : 0;
}

static int write_meta(const shape *sh, const tdesc *t, size_t nt, const char *out, int S,
                      int force64, uint8_t *buf, size_t bufn)
{
    for (size_t i = 0; i < nt; i++)
        if ((t[i].split == SPLIT_DIM0 && t[i].rows % S) ||
            (t[i].split == SPLIT_DIM1 && t[i].cols % S)) {
            fprintf(stderr, "gen_ckpt: %s does not split into %d shards\n", t[i].meta, S);
            return -1;
        }
    zent *e = calloc(nt + 3, sizeof *e);
    uint16_t *row = malloc((size_t)(sh->ffn > sh->vocab ? sh->ffn : sh->vocab) * 2 +
                           (size_t)sh->dim * 2);
    pbuf pk = {0};
    if (!e || !row || meta_pickle(t, nt, S, &pk)) return -1;
    char path[4096];
    uint64_t total = 0;
    for (int s = 0; s < S; s++) {
        snprintf(path, sizeof path, "%s/consolidated.%02d.pth", out, s);
        wfile w;
        if (w_open(&w, path, buf, bufn)) return -1;
        char arch[32];
        snprintf(arch, sizeof arch, "consolidated.%02d", s);
        size_t n = 0;
        snprintf(e[n].name, sizeof e[n].name, "%s/data.pkl", arch);
        e[n].size = pk.n;
        zip_local(&w, &e[n], force64);
        w_put(&w, pk.p, pk.n);
        e[n++].crc = w.crc;
        snprintf(e[n].name, sizeof e[n].name, "%s/byteorder", arch);
        e[n].size = 6;
        zip_local(&w, &e[n], force64);
        w_put(&w, "little", 6);
        e[n++].crc = w.crc;
        for (size_t i = 0; i < nt; i++) {
            int64_t r, c;
            part_shape(&t[i], S, &r, &c);
            snprintf(e[n].name, sizeof e[n].name, "%s/data/%zu", arch, i);
            e[n].size = (uint64_t)(c ? r * c : r) * 2;
            zip_local(&w, &e[n], force64);
            int64_t r0 = t[i].split == SPLIT_DIM0 ? s * r : 0;
            int64_t c0 = t[i].split == SPLIT_DIM1 ? s * c : 0;
            size_t pb = (size_t)(c ? c : r) * 2;
            for (int64_t y = 0; y < (c ? r : 1); y++) {
                fill_row(&t[i], r0 + y, row);
                w_put(&w, row + c0, pb);
            }
            total += s == 0 || t[i].split != SPLIT_REPL ? e[n].size : 0;
            e[n++].crc = w.crc;
        }
        snprintf(e[n].name, sizeof e[n].name, "%s/version", arch);
        e[n].size = 2;
        zip_local(&w, &e[n], force64);
        w_put(&w, "3\n", 2);
        e[n++].crc = w.crc;
        zip_central(&w, e, n, force64);
        if (w_close(&w) || patch_crcs(path, e, n)) {
            fprintf(stderr, "gen_ckpt: %s: write failed\n", path);
            return -1;
        }
    }
    free(pk.p);
    free(e);
    free(row);
    snprintf(path, sizeof path, "%s/params.json", out);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"dim\": %lld, \"multiple_of\": 256, \"n_heads\": %lld, ", (long long)sh->dim,
            (long long)sh->heads);
    if (sh->kv != sh->heads) fprintf(f, "\"n_kv_heads\": %lld, ", (long long)sh->kv);
    fprintf(f, "\"n_layers\": %lld, \"norm_eps\": 1e-05, \"vocab_size\": -1}\n",
            (long long)sh->layers);
    if (fclose(f)) return -1;
    printf("%s: %s, meta, %d shards, %llu bytes of bf16 weights\n", out, sh->name, S,
           (unsigned long long)total);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: gen_ckpt (--shape 7b|13b|1b|tiny | --custom D,FFN,L,H,KV,VOCAB) "
                    "--out DIR [--format hf|meta] [--shards N] [--seed S] [--zip64] [--tied]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const shape *sh = NULL;
    shape custom = {"custom", 0, 0, 0, 0, 0, 0, 4096};
    const char *out = NULL;
    int shards = 0, meta = 0, force64 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
                if (!strcmp(argv[i + 1], shapes[k].name)) sh = &shapes[k];
            i++;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            i++;
            if (!strcmp(argv[i], "meta")) meta = 1;
            else if (strcmp(argv[i], "hf")) return usage();
        } else if (!strcmp(argv[i], "--shards") && i + 1 < argc) {
            shards = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--custom") && i + 1 < argc) {
            long long v[6];
            if (sscanf(argv[++i], "%lld,%lld,%lld,%lld,%lld,%lld", &v[0], &v[1], &v[2], &v[3],
                       &v[4], &v[5]) != 6 || v[0] <= 0 || v[1] <= 0 || v[2] <= 0 || v[3] <= 0 ||
                v[4] <= 0 || v[5] <= 0 || v[0] % v[3] || v[3] % v[4] || v[0] > 65536 ||
                v[1] > 1 << 20 || v[2] > 1000 || v[5] > 1 << 22)
                return usage();
            custom.dim = v[0], custom.ffn = v[1], custom.layers = v[2], custom.heads = v[3];
            custom.kv = v[4], custom.vocab = v[5];
            sh = &custom;
        } else if (!strcmp(argv[i], "--tied")) {
            tied_hf = 1;
        } else if (!strcmp(argv[i], "--zip64")) {
            force64 = 1;
        } else {
            return usage();
        }
    }
    if (!sh || !out) return usage();
    if (shards <= 0) shards = meta ? (sh->dim >= 5120 ? 2 : 1) : sh->dim >= 5120 ? 3 : 2;
    if (shards > 99) return usage();
    if (mkdir(out, 0755) && errno != EEXIST) {
        fprintf(stderr, "gen_ckpt: %s: %s\n", out, strerror(errno));
        return 1;
    }
    size_t nt = 4 + 9 * (size_t)sh->layers;
    tdesc *t = calloc(nt, sizeof *t);
    size_t bufn = 8u << 20;
    uint8_t *buf = malloc(bufn);
    if (!t || !buf) return 1;
    crc_init();
    nt = build_tensors(sh, t);
    int rc = meta ? write_meta(sh, t, nt, out, shards, force64, buf, bufn)
                  : write_hf(sh, t, nt, out, shards, buf, bufn);
    free(buf);
    free(t);
    return rc ? 1 : 0;
}
