/* Tokenizer files -> tokenizer.* metadata: detection, Meta's Llama 3 tiktoken
 * file, tokenizer_config.json. SentencePiece protobuf is in tok_spm_proto.c,
 * Hugging Face tokenizer.json in tok_hfjson.c. */
#include "tok.h"
#include "tok_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

/* ---------------------------------------------------------------- tiktoken */

static int b64_val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard base64 (with '=' padding) into out (capacity >= n*3/4);
 * returns the length or -1. */
static long b64_decode(const uint8_t *s, size_t n, uint8_t *out)
{
    if (n == 0 || n % 4) return -1;
    size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (int j = 0; j < 4; j++) {
            int d = (i + (size_t)j >= n - pad) ? 0 : b64_val(s[i + (size_t)j]);
            if (d < 0) return -1;
            v = v << 6 | (uint32_t)d;
        }
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    return (long)(o - pad);
}

/* True if buf looks like "BASE64 RANK\n" lines. */
static int is_tiktoken(const uint8_t *buf, size_t n)
{
    size_t i = 0, nb = 0;
    while (i < n && b64_val(buf[i]) >= 0) i++, nb++;
    while (i < n && buf[i] == '=') i++, nb++;
    if (nb == 0 || i >= n || buf[i] != ' ') return 0;
    i++;
    size_t nd = 0;
    while (i < n && buf[i] >= '0' && buf[i] <= '9') i++, nd++;
    return nd > 0 && (i == n || buf[i] == '\n' || buf[i] == '\r');
}

/* Bytes -> rank, open addressing. */
typedef struct tk_map {
    int32_t *slot;      /* rank or -1 */
    size_t mask;
    const uint8_t *const *bytes;
    const uint32_t *lens;
} tk_map;

static uint64_t tk_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int32_t tk_find(const tk_map *m, const uint8_t *p, size_t n)
{
    for (size_t i = tk_hash(p, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t r = m->slot[i];
        if (r < 0) return -1;
        if (m->lens[r] == n && !memcmp(m->bytes[r], p, n)) return r;
    }
}

typedef struct tk_pair {
    int32_t l, r;
} tk_pair;

static int tk_pair_cmp(const void *a, const void *b)
{
    const tk_pair *x = a, *y = b;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

/* Llama 3's 256 special tokens, in Meta's order after the base tokens. */
static void llama3_special(int i, char *out, size_t cap)
{
    static const char *const first[] = {
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
        "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|reserved_special_token_4|>", "<|eot_id|>"};
    if (i < 10)
        snprintf(out, cap, "%s", first[i]);
    else
        snprintf(out, cap, "<|reserved_special_token_%d|>", i - 5);
}

enum { TK_N_SPECIAL = 256 };

/* Byte-level string of raw bytes (each byte -> 1 or 2 UTF-8 bytes). */
static size_t tk_mapped(const uint8_t *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) o += (size_t)tok_byte_to_utf8(p[i], out + o);
    return o;
}

int tok_tiktoken_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                       lpk_error *err)
{
    int rc = LPK_OK;
    size_t n_lines = 0;
    for (size_t i = 0; i < n; i++) n_lines += buf[i] == '\n';
    if (n && buf[n - 1] != '\n') n_lines++;
    if (n_lines == 0 || n_lines > INT32_MAX - TK_N_SPECIAL)
        return lpk_err(err, LPK_ECORRUPT, "%s: empty tiktoken file", name);

    size_t n_tok = n_lines + TK_N_SPECIAL, n_merges = 0, cap_merges = 0;
    uint8_t *raw = malloc(n);                 /* decoded bytes of every token, packed */
    uint8_t **bytes = calloc(n_lines, sizeof *bytes);
    uint32_t *lens = calloc(n_lines, sizeof *lens);
    char *mapped = malloc(2 * n + (size_t)TK_N_SPECIAL * 40); /* token strings, packed */
    const char **strs = malloc(n_tok * sizeof *strs);
    uint64_t *slens = malloc(n_tok * sizeof *slens);
    int32_t *types = malloc(n_tok * sizeof *types);
    tk_map map = {0};
    size_t cap = 1;
    while (cap < 2 * n_lines) cap <<= 1;
    map.slot = malloc(cap * sizeof *map.slot);
    map.mask = cap - 1;
    char **merges = NULL;
    tk_pair *local = NULL;
    char *mbuf = NULL;
    if (!raw || !bytes || !lens || !mapped || !strs || !slens || !types || !map.slot) {
        rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory for %zu tokens", name, n_lines);
        goto out;
    }
    memset(map.slot, 0xff, cap * sizeof *map.slot);
    map.bytes = (const uint8_t *const *)bytes;
    map.lens = lens;

    /* Lines: base64 token, space, rank. Ranks must be 0..n-1, each once. */
    size_t pos = 0, rawo = 0, line = 0;
    while (pos < n) {
        size_t e = pos;
        while (e < n && buf[e] != '\n') e++;
        size_t le = e;
        if (le > pos && buf[le - 1] == '\r') le--;
        line++;
        if (le == pos) { /* blank lines are skipped */
            pos = e + 1;
            n_lines--;
            continue;
        }
        size_t sp = pos;
        while (sp < le && buf[sp] != ' ') sp++;
        char *endp;
        char num[24];
        size_t nl = le - sp - (sp < le);
        if (sp == le || nl == 0 || nl >= sizeof num) goto bad_line;
        memcpy(num, buf + sp + 1, nl);
        num[nl] = '\0';
        errno = 0;
        unsigned long long rank = strtoull(num, &endp, 10);
        if (errno || *endp || num[0] < '0' || num[0] > '9') goto bad_line;
        if (rank >= n_lines || bytes[rank]) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: line %zu: rank %llu is %s", name, line, rank,
                         rank >= n_lines ? "out of range" : "repeated");
            goto out;
        }
        long len = b64_decode(buf + pos, sp - pos, raw + rawo);
        if (len <= 0) goto bad_line;
        bytes[rank] = raw + rawo;
        lens[rank] = (uint32_t)len;
        rawo += (size_t)len;
        if (tk_find(&map, bytes[rank], lens[rank]) >= 0) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: line %zu: token repeated", name, line);
            goto out;
        }
        for (size_t i = tk_hash(bytes[rank], lens[rank]) & map.mask;; i = (i + 1) & map.mask)
            if (map.slot[i] < 0) {
                map.slot[i] = (int32_t)rank;
                break;
            }
        pos = e + 1;
        continue;
    bad_line:
        rc = lpk_err(err, LPK_ECORRUPT, "%s: line %zu is not \"BASE64 RANK\"", name, line);
        goto out;
    }
    for (size_t r = 0; r < n_lines; r++)
        if (!bytes[r]) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: rank %zu is missing", name, r);
            goto out;
        }
    n_tok = n_lines + TK_N_SPECIAL;

    /* Token strings: byte-level mapped, then the special tokens. */
    size_t mo = 0;
    for (size_t r = 0; r < n_lines; r++) {
        strs[r] = mapped + mo;
        slens[r] = tk_mapped(bytes[r], lens[r], mapped + mo);
        mo += slens[r];
        types[r] = 1;
    }
    for (int i = 0; i < TK_N_SPECIAL; i++) {
        llama3_special(i, mapped + mo, 40);
        strs[n_lines + (size_t)i] = mapped + mo;
        slens[n_lines + (size_t)i] = strlen(mapped + mo);
        mo += slens[n_lines + (size_t)i];
        types[n_lines + (size_t)i] = 3;
    }

    /* Merges as Hugging Face derives them from ranks: for every token, each
     * split into two tokens, ordered by (left rank, right rank); tokens in rank
     * order. */
    size_t max_len = 0;
    for (size_t r = 0; r < n_lines; r++) max_len = lens[r] > max_len ? lens[r] : max_len;
    local = malloc((max_len + 1) * sizeof *local);
    if (!local) {
        rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory", name);
        goto out;
    }
    size_t mbuf_len = 0, mbuf_cap = 0;
    size_t *moff = NULL;
    for (size_t r = 0; r < n_lines; r++) {
        size_t nl = 0;
        for (uint32_t k = 1; k < lens[r]; k++) {
            int32_t a = tk_find(&map, bytes[r], k), b = tk_find(&map, bytes[r] + k, lens[r] - k);
            if (a >= 0 && b >= 0) local[nl++] = (tk_pair){a, b};
        }
        qsort(local, nl, sizeof *local, tk_pair_cmp);
        for (size_t j = 0; j < nl; j++) {
            size_t need = slens[local[j].l] + 1 + slens[local[j].r] + 1;
            if (mbuf_len + need > mbuf_cap) {
                size_t nc = mbuf_cap ? mbuf_cap * 2 : (size_t)1 << 20;
                while (nc < mbuf_len + need) nc *= 2;
                char *nb = realloc(mbuf, nc);
                if (!nb) goto nomem;
                mbuf = nb;
                mbuf_cap = nc;
            }
            if (n_merges == cap_merges) {
                size_t nc = cap_merges ? cap_merges * 2 : 4096;
                size_t *no = realloc(moff, nc * sizeof *no);
                if (!no) goto nomem;
                moff = no;
                cap_merges = nc;
            }
            moff[n_merges++] = mbuf_len;
            memcpy(mbuf + mbuf_len, strs[local[j].l], slens[local[j].l]);
            mbuf_len += slens[local[j].l];
            mbuf[mbuf_len++] = ' ';
            memcpy(mbuf + mbuf_len, strs[local[j].r], slens[local[j].r]);
            mbuf_len += slens[local[j].r];
            mbuf[mbuf_len++] = '\0';
        }
    }
    merges = malloc((n_merges ? n_merges : 1) * sizeof *merges);
    if (!merges) goto nomem;
    for (size_t j = 0; j < n_merges; j++) merges[j] = mbuf + moff[j];
    free(moff);
    moff = NULL;

    const char *pat = tok_llama3_pattern;
    uint32_t eos_ids[2] = {(uint32_t)n_lines + 1, (uint32_t)n_lines + 9};
    if ((rc = lpk_meta_set_str(meta, "tokenizer.ggml.model", "gpt2")) ||
        (rc = lpk_meta_set_str(meta, "tokenizer.ggml.pre", "llama-bpe")) ||
        (rc = lpk_meta_set_str_arr(meta, "tokenizer.ggml.tokens", strs, slens, n_tok)) ||
        (rc = lpk_meta_set_arr(meta, "tokenizer.ggml.token_type", LPK_V_I32, types, n_tok)) ||
        (rc = lpk_meta_set_str_arr(meta, "tokenizer.ggml.merges", (const char *const *)merges,
                                   NULL, n_merges)) ||
        (rc = lpk_meta_set_u32(meta, "tokenizer.ggml.bos_token_id", (uint32_t)n_lines)) ||
        (rc = lpk_meta_set_u32(meta, "tokenizer.ggml.eos_token_id", eos_ids[0])) ||
        (rc = lpk_meta_set_arr(meta, "tokenizer.eos_token_ids", LPK_V_U32, eos_ids, 2)) ||
        (rc = lpk_meta_set_str_arr(meta, "tokenizer.pre_regex", &pat, NULL, 1)) ||
        (rc = lpk_meta_set_bool(meta, "tokenizer.ignore_merges", 1)) ||
        (rc = lpk_meta_set_bool(meta, "tokenizer.ggml.add_space_prefix", 0)) ||
        (rc = tok_meta_default_bool(meta, "tokenizer.ggml.add_bos_token", 1)) ||
        (rc = tok_meta_default_bool(meta, "tokenizer.ggml.add_eos_token", 0)))
        rc = lpk_err(err, rc, "%s: cannot store tokenizer metadata", name);
    goto out;
nomem:
    free(moff);
    rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory for merges", name);
out:
    free(raw);
    free(bytes);
    free(lens);
    free(mapped);
    free(strs);
    free(slens);
    free(types);
    free(map.slot);
    free(merges);
    free(mbuf);
    free(local);
    return rc;
}

/* ---------------------------------------------------------------- dispatch */

int tok_load_mem(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                 lpk_error *err)
{
    if (!name || (!buf && n) || !meta)
        return lpk_err(err, LPK_EINVAL, "tok_load_mem: bad arguments");
    size_t i = 0;
    while (i < n && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')) i++;
    if (i < n && buf[i] == '{') return tok_hfjson_parse(name, buf, n, meta, err);
    if (is_tiktoken(buf, n)) return tok_tiktoken_parse(name, buf, n, meta, err);
    if (tok_is_llama2c(buf, n)) return tok_llama2c_parse(name, buf, n, meta, err);
    if (n == 0) return lpk_err(err, LPK_ECORRUPT, "%s: empty tokenizer file", name);
    return tok_spm_parse(name, buf, n, meta, err);
}

int tok_load(const char *path, lpk_meta *meta, lpk_error *err)
{
    if (!path || !meta) return lpk_err(err, LPK_EINVAL, "tok_load: bad arguments");
    FILE *f = fopen(path, "rb");
    if (!f) return lpk_err(err, LPK_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return lpk_err(err, LPK_EIO, "%s: not a regular file", path);
    }
    /* Tokenizer files are megabytes; refuse absurd sizes rather than mapping them. */
    if ((uint64_t)st.st_size > ((uint64_t)1 << 31)) {
        fclose(f);
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: %lld bytes is too large for a tokenizer",
                       path, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return lpk_err(err, LPK_ENOMEM, "%s: out of memory (%zu bytes)", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int ferr = ferror(f);
    fclose(f);
    int rc;
    if (got != n)
        rc = lpk_err(err, ferr ? LPK_EIO : LPK_ETRUNC, "%s: read %zu of %zu bytes", path, got,
                     n);
    else
        rc = tok_load_mem(path, buf, n, meta, err);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- config */

/* "tok" or {"content": "tok", ...} -> the string, else NULL. */
static const char *token_content(json_t *v)
{
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Id of a token string in meta's tokenizer.ggml.tokens, or -1. */
static int64_t find_token(const lpk_meta *meta, const char *s)
{
    const lpk_kv *kv = lpk_meta_find(meta, "tokenizer.ggml.tokens");
    if (!kv || kv->type != LPK_V_ARR || kv->elem != LPK_V_STR) return -1;
    size_t n = strlen(s);
    for (uint64_t i = 0; i < kv->count; i++) {
        lpk_str t = lpk_kv_str_at(kv, i);
        if (t.n == n && !memcmp(t.p, s, n)) return (int64_t)i;
    }
    return -1;
}

static int sanitize_name(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 1 < cap; s++)
        out[o++] = ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                    (*s >= '0' && *s <= '9') || *s == '-') ? *s : '_';
    out[o] = '\0';
    return o > 0;
}

static int config_chat_template(const char *name, json_t *ct, lpk_meta *meta, lpk_error *err)
{
    if (json_is_string(ct))
        return lpk_meta_set_str(meta, "tokenizer.chat_template", json_string_value(ct));
    if (!json_is_array(ct))
        return lpk_err(err, LPK_ECORRUPT, "%s: chat_template is neither a string nor a list",
                       name);
    /* [{"name": N, "template": T}, ...]: "default" is the chat template, the
     * others go to tokenizer.chat_template.N (GGUF's convention). */
    size_t i, n = json_array_size(ct), n_named = 0;
    const char **names = calloc(n ? n : 1, sizeof *names);
    char (*keys)[96] = calloc(n ? n : 1, sizeof *keys);
    int rc = (!names || !keys) ? LPK_ENOMEM : LPK_OK;
    json_t *e;
    json_array_foreach(ct, i, e) {
        if (rc) break;
        const char *nm = json_string_value(json_object_get(e, "name"));
        const char *t = json_string_value(json_object_get(e, "template"));
        if (!nm || !t) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: chat_template[%zu] lacks name/template", name,
                         i);
            break;
        }
        if (!strcmp(nm, "default")) {
            rc = lpk_meta_set_str(meta, "tokenizer.chat_template", t);
            continue;
        }
        char clean[64];
        if (!sanitize_name(nm, clean, sizeof clean)) continue;
        snprintf(keys[n_named], sizeof keys[n_named], "tokenizer.chat_template.%s", clean);
        names[n_named] = keys[n_named] + strlen("tokenizer.chat_template.");
        rc = lpk_meta_set_str(meta, keys[n_named], t);
        n_named++;
    }
    if (!rc && n_named)
        rc = lpk_meta_set_str_arr(meta, "tokenizer.chat_templates", names, NULL, n_named);
    free(names);
    free(keys);
    if (rc && err && err->status == LPK_OK)
        lpk_err(err, rc, "%s: cannot store chat templates", name);
    return rc;
}

int tok_config_load_mem(const char *name, const uint8_t *buf, size_t n,
                        lpk_meta *meta, lpk_error *err)
{
    if (!name || (!buf && n) || !meta)
        return lpk_err(err, LPK_EINVAL, "tok_config_load_mem: bad arguments");
    json_error_t je;
    /* transformers writes integers past int64 (model_max_length's "no limit") */
    size_t rn = 0;
    char *relaxed = lpk_json_relax_bigints((const char *)buf, n, &rn);
    if (!relaxed) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", name);
    json_t *root = json_loadb(relaxed, rn, JSON_REJECT_DUPLICATES, &je);
    free(relaxed);
    if (!root)
        return lpk_err(err, LPK_ECORRUPT, "%s: invalid JSON at line %d column %d: %s", name,
                       je.line, je.column, je.text);
    int rc = LPK_OK;
    if (!json_is_object(root)) {
        rc = lpk_err(err, LPK_ECORRUPT, "%s: not a JSON object", name);
        goto out;
    }
    static const char *const flags[][2] = {
        {"add_bos_token", "tokenizer.ggml.add_bos_token"},
        {"add_eos_token", "tokenizer.ggml.add_eos_token"}};
    for (size_t i = 0; i < 2 && !rc; i++) {
        json_t *v = json_object_get(root, flags[i][0]);
        if (json_is_boolean(v)) rc = lpk_meta_set_bool(meta, flags[i][1], json_is_true(v));
    }
    /* Special tokens named by text: mapped to ids when the vocabulary is known. */
    static const char *const specials[][2] = {
        {"bos_token", "tokenizer.ggml.bos_token_id"},
        {"eos_token", "tokenizer.ggml.eos_token_id"},
        {"unk_token", "tokenizer.ggml.unknown_token_id"},
        {"pad_token", "tokenizer.ggml.padding_token_id"}};
    for (size_t i = 0; i < 4 && !rc; i++) {
        const char *s = token_content(json_object_get(root, specials[i][0]));
        int64_t id = s ? find_token(meta, s) : -1;
        if (id >= 0) rc = lpk_meta_set_u32(meta, specials[i][1], (uint32_t)id);
    }
    if (rc) {
        rc = lpk_err(err, rc, "%s: cannot store tokenizer metadata", name);
        goto out;
    }
    json_t *ct = json_object_get(root, "chat_template");
    if (ct && !json_is_null(ct)) rc = config_chat_template(name, ct, meta, err);
out:
    json_decref(root);
    return rc;
}
