/* Writes a shape-true synthetic LLaMA checkpoint in Hugging Face layout:
 * config.json, N safetensors shards of random bf16 weights and
 * model.safetensors.index.json, for benchmarking `llmpack convert`.
 *
 *   gen_ckpt --shape 7b|13b|1b|tiny --out DIR [--shards N] [--seed S]
 *
 * Memory stays at one 8 MiB buffer whatever the model size. */
#include <errno.h>
#include <fcntl.h>
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

typedef struct tdesc {
    char name[128];
    int64_t rows, cols;  /* cols 0: 1-D */
    int shard;
    uint64_t off;        /* within the shard's data section */
} tdesc;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static inline uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Random bf16 with weight-like magnitudes (|x| in about [2^-10, 2^-3]). */
static void fill_bf16(uint16_t *p, size_t n, int norm)
{
    for (size_t i = 0; i < n; i += 4) {
        uint64_t r = next();
        for (size_t k = 0; k < 4 && i + k < n; k++) {
            uint16_t b = (uint16_t)(r >> (16 * k));
            if (norm) p[i + k] = (uint16_t)(0x3f80 | (b & 0x1f)); /* ~1.0, like RMSNorm gains */
            else p[i + k] = (uint16_t)((b & 0x8000) | ((0x75 + ((b >> 7) & 7)) << 7) | (b & 0x7f));
        }
    }
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t nbytes(const tdesc *t) { return (size_t)(t->rows * (t->cols ? t->cols : 1)) * 2; }

int main(int argc, char **argv)
{
    const shape *sh = NULL;
    const char *out = NULL;
    int shards = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
                if (!strcmp(argv[i + 1], shapes[k].name)) sh = &shapes[k];
            i++;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--shards") && i + 1 < argc) {
            shards = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            rng = strtoull(argv[++i], NULL, 10) | 1;
        } else {
            fprintf(stderr, "usage: gen_ckpt --shape 7b|13b|1b|tiny --out DIR [--shards N] [--seed S]\n");
            return 2;
        }
    }
    if (!sh || !out) {
        fprintf(stderr, "usage: gen_ckpt --shape 7b|13b|1b|tiny --out DIR [--shards N] [--seed S]\n");
        return 2;
    }
    if (shards <= 0) shards = sh->dim >= 5120 ? 3 : 2;
    if (mkdir(out, 0755) && errno != EEXIST) {
        fprintf(stderr, "gen_ckpt: %s: %s\n", out, strerror(errno));
        return 1;
    }
    /* Tensors in HF order. */
    size_t nt = 3 + 9 * (size_t)sh->layers;
    tdesc *t = calloc(nt, sizeof *t);
    if (!t) return 1;
    size_t k = 0;
    int64_t hd = sh->dim / sh->heads;
    snprintf(t[k].name, sizeof t[k].name, "model.embed_tokens.weight");
    t[k].rows = sh->vocab; t[k++].cols = sh->dim;
    for (int64_t l = 0; l < sh->layers; l++) {
        static const char *parts[] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                                      "self_attn.v_proj", "self_attn.o_proj",
                                      "post_attention_layernorm", "mlp.gate_proj",
                                      "mlp.down_proj", "mlp.up_proj"};
        int64_t rc[9][2] = {{sh->dim, 0}, {sh->heads * hd, sh->dim}, {sh->kv * hd, sh->dim},
                            {sh->kv * hd, sh->dim}, {sh->dim, sh->heads * hd}, {sh->dim, 0},
                            {sh->ffn, sh->dim}, {sh->dim, sh->ffn}, {sh->ffn, sh->dim}};
        for (int p = 0; p < 9; p++) {
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%lld.%s.weight", (long long)l,
                     parts[p]);
            t[k].rows = rc[p][0];
            t[k++].cols = rc[p][1];
        }
    }
    snprintf(t[k].name, sizeof t[k].name, "model.norm.weight");
    t[k].rows = sh->dim; t[k++].cols = 0;
    snprintf(t[k].name, sizeof t[k].name, "lm_head.weight");
    t[k].rows = sh->vocab; t[k++].cols = sh->dim;
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++) total += nbytes(&t[i]);
    /* Shards of about total/shards bytes, in order. */
    uint64_t per = total / (uint64_t)shards + 1, acc = 0, off = 0;
    int cur = 0;
    for (size_t i = 0; i < nt; i++) {
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
    size_t bufn = 8u << 20;
    uint16_t *buf = malloc(bufn);
    char path[4096];
    for (int s = 0; s < shards; s++) {
        /* Header: a JSON object of this shard's tensors. */
        size_t cap = 1u << 20, hl = 0;
        char *h = malloc(cap);
        hl += (size_t)snprintf(h + hl, cap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
        for (size_t i = 0; i < nt; i++) {
            if (t[i].shard != s) continue;
            char shp[64];
            if (t[i].cols) snprintf(shp, sizeof shp, "[%lld,%lld]", (long long)t[i].rows, (long long)t[i].cols);
            else snprintf(shp, sizeof shp, "[%lld]", (long long)t[i].rows);
            if (hl + 512 > cap) {
                fprintf(stderr, "gen_ckpt: header too large\n");
                return 1;
            }
            hl += (size_t)snprintf(h + hl, cap - hl,
                                   ",\"%s\":{\"dtype\":\"BF16\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}",
                                   t[i].name, shp, (unsigned long long)t[i].off,
                                   (unsigned long long)(t[i].off + nbytes(&t[i])));
        }
        hl += (size_t)snprintf(h + hl, cap - hl, "}");
        while (hl % 8) h[hl++] = ' ';
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", out, s + 1, shards);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            fprintf(stderr, "gen_ckpt: %s: %s\n", path, strerror(errno));
            return 1;
        }
        uint8_t len[8];
        for (int b = 0; b < 8; b++) len[b] = (uint8_t)((uint64_t)hl >> (8 * b));
        int bad = write_all(fd, len, 8) || write_all(fd, h, hl);
        for (size_t i = 0; i < nt && !bad; i++) {
            if (t[i].shard != s) continue;
            size_t left = nbytes(&t[i]);
            while (left && !bad) {
                size_t c = left < bufn ? left : bufn;
                fill_bf16(buf, c / 2, t[i].cols == 0);
                bad = write_all(fd, buf, c);
                left -= c;
            }
        }
        if (bad || close(fd)) {
            fprintf(stderr, "gen_ckpt: %s: write failed: %s\n", path, strerror(errno));
            return 1;
        }
        free(h);
    }
    /* Index and config. */
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "{\"metadata\":{\"total_size\":%llu},\"weight_map\":{", (unsigned long long)total);
    for (size_t i = 0; i < nt; i++)
        fprintf(f, "%s\"%s\":\"model-%05d-of-%05d.safetensors\"", i ? "," : "", t[i].name,
                t[i].shard + 1, shards);
    fprintf(f, "}}\n");
    fclose(f);
    snprintf(path, sizeof path, "%s/config.json", out);
    f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\","
               "\"hidden_size\":%lld,\"intermediate_size\":%lld,\"num_hidden_layers\":%lld,"
               "\"num_attention_heads\":%lld,\"num_key_value_heads\":%lld,\"vocab_size\":%lld,"
               "\"max_position_embeddings\":%lld,\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,"
               "\"tie_word_embeddings\":false,\"bos_token_id\":1,\"eos_token_id\":2,"
               "\"torch_dtype\":\"bfloat16\"}\n",
            (long long)sh->dim, (long long)sh->ffn, (long long)sh->layers, (long long)sh->heads,
            (long long)sh->kv, (long long)sh->vocab, (long long)sh->ctx);
    fclose(f);
    printf("%s: %s, %d shards, %llu bytes of bf16 weights\n", out, sh->name, shards,
           (unsigned long long)total);
    free(buf);
    free(t);
    return 0;
}
