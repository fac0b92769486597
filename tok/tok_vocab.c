/* Tokenizer from a container's tokenizer.* metadata: construction, special
 * tokens, tok_encode and tok_decode_token. The merge loop is in tok_merge.c,
 * the byte-level pre-tokenizer in tok_regex.c. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

/* ---------------------------------------------------------------- maps */

static int strmap_build(tok_tokenizer *t)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)t->n_vocab) cap <<= 1;
    t->vocab.slot = malloc(cap * sizeof *t->vocab.slot);
    if (!t->vocab.slot) return LPK_ENOMEM;
    memset(t->vocab.slot, 0xff, cap * sizeof *t->vocab.slot);
    t->vocab.mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *k = t->key_pool + t->key_off[id];
        size_t n = t->key_len[id];
        for (size_t i = XXH3_64bits(k, n) & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
            int32_t o = t->vocab.slot[i];
            if (o < 0 || (t->key_len[o] == n && !memcmp(t->key_pool + t->key_off[o], k, n))) {
                t->vocab.slot[i] = id; /* a later duplicate wins, as in llama.cpp */
                break;
            }
        }
    }
    return LPK_OK;
}

/* ---------------------------------------------------------------- byte-level map */

static int byte_printable(uint32_t b)
{
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/* Code point -> byte of GPT-2's bytes_to_unicode, or -1. */
static int unicode_to_byte(uint32_t cp)
{
    if (cp < 0x100) return byte_printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    for (uint32_t b = 0; b < 256; b++)
        if (!byte_printable(b) && k-- == 0) return (int)b;
    return -1;
}

/* Decodes one UTF-8 sequence; *len = bytes used (1 for invalid input). */
static uint32_t utf8_decode(const uint8_t *p, size_t n, size_t *len)
{
    uint32_t c = p[0];
    size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (l == 0 || l > n) {
        *len = 1;
        return 0xFFFFFFFFu;
    }
    if (l == 1) {
        *len = 1;
        return c;
    }
    c &= 0x7fu >> l;
    for (size_t i = 1; i < l; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            *len = 1;
            return 0xFFFFFFFFu;
        }
        c = c << 6 | (p[i] & 0x3fu);
    }
    *len = l;
    return c;
}

/* Undoes the byte-level map into out (capacity >= n); returns bytes written.
 * Code points outside the map are copied unchanged. */
static size_t bytelevel_unmap(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l;
        uint32_t cp = utf8_decode((const uint8_t *)s + i, n - i, &l);
        int b = cp == 0xFFFFFFFFu ? -1 : unicode_to_byte(cp);
        if (b >= 0) {
            out[o++] = (char)b;
        } else {
            memcpy(out + o, s + i, l);
            o += l;
        }
        i += l;
    }
    return o;
}

/* "<0xNN>" -> NN, or -1. */
static int byte_piece(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* ---------------------------------------------------------------- construction */

static int32_t meta_id(const lpk_meta *m, const char *key, int32_t n_vocab)
{
    uint32_t v;
    if (lpk_meta_get_u32(m, key, &v) || v >= (uint32_t)n_vocab) return -1;
    return (int32_t)v;
}

static int build_texts(tok_tokenizer *t, const lpk_kv *toks, lpk_error *err)
{
    uint64_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        lpk_str s = lpk_kv_str_at(toks, (uint64_t)i);
        if (s.n > UINT32_MAX / 2)
            return lpk_err(err, LPK_ECORRUPT, "tokenizer: token %d is %llu bytes", i,
                           (unsigned long long)s.n);
        total += s.n;
    }
    t->key_pool = malloc(total + 1);
    t->dec_pool = malloc(total + 1);
    t->key_off = malloc((size_t)t->n_vocab * sizeof *t->key_off);
    t->dec_off = malloc((size_t)t->n_vocab * sizeof *t->dec_off);
    t->key_len = malloc((size_t)t->n_vocab * sizeof *t->key_len);
    t->dec_len = malloc((size_t)t->n_vocab * sizeof *t->dec_len);
    if (!t->key_pool || !t->dec_pool || !t->key_off || !t->dec_off || !t->key_len ||
        !t->dec_len)
        return lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory for %d tokens", t->n_vocab);
    uint64_t ko = 0, dko = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        lpk_str s = lpk_kv_str_at(toks, (uint64_t)i);
        char *k = t->key_pool + ko, *d = t->dec_pool + dko;
        size_t kn = s.n, dn = 0;
        int tt = t->type[i];
        if (t->kind == TOK_KIND_SPM) {
            memcpy(k, s.p, s.n);
            int b = tt == TOK_TT_BYTE ? byte_piece(s.p, s.n) : -1;
            if (b >= 0) {
                d[dn++] = (char)b;
            } else {
                /* U+2581 -> space; the decoded text is never longer. */
                for (size_t j = 0; j < s.n;) {
                    if (s.n - j >= 3 && !memcmp(s.p + j, "\xe2\x96\x81", 3)) {
                        d[dn++] = ' ';
                        j += 3;
                    } else {
                        d[dn++] = s.p[j++];
                    }
                }
            }
        } else if (tt == TOK_TT_NORMAL || tt == TOK_TT_BYTE || tt == TOK_TT_UNUSED) {
            kn = bytelevel_unmap(s.p, s.n, k);
            memcpy(d, k, kn);
            dn = kn;
        } else {
            memcpy(k, s.p, s.n);
            memcpy(d, s.p, s.n);
            dn = s.n;
        }
        t->key_off[i] = ko;
        t->key_len[i] = (uint32_t)kn;
        t->dec_off[i] = dko;
        t->dec_len[i] = (uint32_t)dn;
        ko += kn;
        dko += dn;
    }
    return LPK_OK;
}

static int build_byte_tokens(tok_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char buf[8];
        t->byte_tok[b] = -1;
        if (t->kind == TOK_KIND_SPM) {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            t->byte_tok[b] = tok_strmap_find(t, buf, 6);
        } else {
            buf[0] = (char)b;
            t->byte_tok[b] = tok_strmap_find(t, buf, 1);
        }
    }
    return LPK_OK;
}

/* Byte-level merges "a b" -> (left id, right id) -> rank, merged token. */
static int build_pairs(tok_tokenizer *t, const lpk_kv *merges, lpk_error *err)
{
    size_t n = merges ? merges->count : 0, cap = 16;
    while (cap < 2 * n) cap <<= 1;
    t->pairs = malloc(cap * sizeof *t->pairs);
    if (!t->pairs) return lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory for merges");
    memset(t->pairs, 0xff, cap * sizeof *t->pairs);
    t->pair_mask = cap - 1;
    size_t maxlen = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = lpk_kv_str_at(merges, i).n;
        maxlen = l > maxlen ? l : maxlen;
    }
    char *buf = malloc(maxlen + 1);
    if (!buf) return lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory for merges");
    int rc = LPK_OK;
    for (size_t i = 0; i < n && i < INT32_MAX; i++) {
        lpk_str m = lpk_kv_str_at(merges, i);
        const char *sp = m.n > 1 ? memchr(m.p + 1, ' ', m.n - 1) : NULL;
        if (!sp) {
            rc = lpk_err(err, LPK_ECORRUPT, "tokenizer: merge %zu is not \"a b\"", i);
            break;
        }
        size_t la = bytelevel_unmap(m.p, (size_t)(sp - m.p), buf);
        size_t lb = bytelevel_unmap(sp + 1, m.n - (size_t)(sp - m.p) - 1, buf + la);
        int32_t a = tok_strmap_find(t, buf, la), b = tok_strmap_find(t, buf + la, lb);
        if (a < 0 || b < 0) continue; /* a merge of unknown tokens never applies */
        int32_t r = tok_strmap_find(t, buf, la + lb);
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint64_t h = key * 0x9e3779b97f4a7c15ull;
        for (size_t j = (size_t)(h >> 20) & t->pair_mask;; j = (j + 1) & t->pair_mask) {
            if (t->pairs[j].key == key) break; /* the first (lowest) rank stays */
            if (t->pairs[j].key == UINT64_MAX) {
                t->pairs[j] = (tok_pair){key, (int32_t)i, r};
                break;
            }
        }
    }
    free(buf);
    return rc;
}

typedef struct special_ent {
    uint32_t len;
    int32_t id;
} special_ent;

static int cmp_special(const void *a, const void *b)
{
    const special_ent *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int build_special(tok_tokenizer *t)
{
    size_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int tt = t->type[i];
        n += (tt == TOK_TT_CONTROL || tt == TOK_TT_USER || tt == TOK_TT_UNKNOWN) && t->key_len[i];
    }
    special_ent *e = malloc((n ? n : 1) * sizeof *e);
    t->special = malloc((n ? n : 1) * sizeof *t->special);
    if (!e || !t->special) {
        free(e);
        return LPK_ENOMEM;
    }
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int tt = t->type[i];
        if ((tt == TOK_TT_CONTROL || tt == TOK_TT_USER || tt == TOK_TT_UNKNOWN) && t->key_len[i])
            e[t->n_special++] = (special_ent){t->key_len[i], i};
    }
    qsort(e, t->n_special, sizeof *e, cmp_special);
    for (size_t k = 0; k < t->n_special; k++) t->special[k] = e[k].id;
    free(e);
    return LPK_OK;
}

static int setup_regex(tok_tokenizer *t, const lpk_meta *meta, lpk_error *err)
{
    const lpk_kv *kv = lpk_meta_find(meta, "tokenizer.pre_regex");
    if (kv && kv->type == LPK_V_ARR && kv->elem == LPK_V_STR && kv->count) {
        const char **pats = malloc(kv->count * sizeof *pats);
        uint64_t *lens = malloc(kv->count * sizeof *lens);
        int rc = LPK_ENOMEM;
        if (pats && lens) {
            for (uint64_t i = 0; i < kv->count; i++) {
                lpk_str s = lpk_kv_str_at(kv, i);
                pats[i] = s.p;
                lens[i] = s.n;
            }
            rc = tok_regex_compile(t, pats, lens, kv->count, err);
        } else {
            lpk_err(err, rc, "tokenizer: out of memory");
        }
        free(pats);
        free(lens);
        return rc;
    }
    /* GGUF files name the pre-tokenizer instead. */
    const char *pre = lpk_meta_get_str(meta, "tokenizer.ggml.pre");
    const char *pat = tok_gpt2_pattern;
    if (pre && (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "llama-v3")))
        pat = tok_llama3_pattern;
    uint64_t len = strlen(pat);
    return tok_regex_compile(t, &pat, &len, 1, err);
}

/* Whether text may be cut after a newline (tok_cut_point). No special token's
 * text may hold a newline: partition would otherwise find one across the cut,
 * or make the newline itself special (and give the text after it a dummy
 * prefix). SentencePiece: no token of two bytes or more holds one, so the
 * newline's symbol never merges with a neighbour. Byte-level BPE: merges stay
 * inside pre-tokenizer pieces, and the rule is proven for Llama 3's and
 * GPT-2's patterns only (docs/TOKENIZER.md, "Encoding a text in pieces"). */
static int cut_allowed(const tok_tokenizer *t)
{
    if (t->kind == TOK_KIND_BPE && !t->re_known) return 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const char *k = t->key_pool + t->key_off[i];
        uint32_t n = t->key_len[i];
        if (!memchr(k, '\n', n)) continue;
        int tt = t->type[i];
        if (tt == TOK_TT_CONTROL || tt == TOK_TT_USER || tt == TOK_TT_UNKNOWN) return 0;
        if (t->kind == TOK_KIND_SPM && n > 1) return 0;
    }
    return 1;
}

int tok_tokenizer_new(const lpk_meta *meta, tok_tokenizer **out, lpk_error *err)
{
    if (!out) return lpk_err(err, LPK_EINVAL, "tok_tokenizer_new: out is NULL");
    *out = NULL;
    if (!meta) return lpk_err(err, LPK_EINVAL, "tok_tokenizer_new: meta is NULL");
    const char *model = lpk_meta_get_str(meta, "tokenizer.ggml.model");
    if (!model) return lpk_err(err, LPK_ENOTFOUND, "tokenizer: no tokenizer.ggml.model key");
    int kind = !strcmp(model, "llama") ? TOK_KIND_SPM : !strcmp(model, "gpt2") ? TOK_KIND_BPE : 0;
    if (!kind)
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "tokenizer: tokenizer.ggml.model \"%s\" (supported: llama, gpt2)", model);
    const lpk_kv *toks = lpk_meta_find(meta, "tokenizer.ggml.tokens");
    if (!toks || toks->type != LPK_V_ARR || toks->elem != LPK_V_STR || toks->count == 0)
        return lpk_err(err, LPK_ENOTFOUND, "tokenizer: no tokenizer.ggml.tokens string array");
    if (toks->count > INT32_MAX / 2)
        return lpk_err(err, LPK_ECORRUPT, "tokenizer: %llu tokens",
                       (unsigned long long)toks->count);
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory");
    t->kind = kind;
    t->n_vocab = (int32_t)toks->count;
    int rc = LPK_OK;

    t->type = malloc((size_t)t->n_vocab * sizeof *t->type);
    if (!t->type) {
        rc = lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory");
        goto fail;
    }
    const lpk_kv *tt = lpk_meta_find(meta, "tokenizer.ggml.token_type");
    int tt_ok = tt && tt->type == LPK_V_ARR && (tt->elem == LPK_V_I32 || tt->elem == LPK_V_U32);
    if (tt && (!tt_ok || tt->count != toks->count)) {
        rc = lpk_err(err, LPK_ECORRUPT,
                     "tokenizer: tokenizer.ggml.token_type has %llu entries for %d tokens",
                     (unsigned long long)tt->count, t->n_vocab);
        goto fail;
    }
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int32_t v = TOK_TT_NORMAL;
        if (tt) memcpy(&v, (const char *)tt->data + 4 * (size_t)i, 4);
        t->type[i] = v;
    }
    if (kind == TOK_KIND_SPM) {
        const lpk_kv *sc = lpk_meta_find(meta, "tokenizer.ggml.scores");
        if (sc && (sc->type != LPK_V_ARR || sc->elem != LPK_V_F32 || sc->count != toks->count)) {
            rc = lpk_err(err, LPK_ECORRUPT,
                         "tokenizer: tokenizer.ggml.scores is not f32[%d]", t->n_vocab);
            goto fail;
        }
        t->score = calloc((size_t)t->n_vocab, sizeof *t->score);
        if (!t->score) {
            rc = lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
        if (sc) memcpy(t->score, sc->data, (size_t)t->n_vocab * sizeof *t->score);
    }
    if ((rc = build_texts(t, toks, err))) goto fail;
    if (strmap_build(t) || build_byte_tokens(t) || build_special(t)) {
        rc = lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory");
        goto fail;
    }
    t->bos = meta_id(meta, "tokenizer.ggml.bos_token_id", t->n_vocab);
    t->eos = meta_id(meta, "tokenizer.ggml.eos_token_id", t->n_vocab);
    t->unk = meta_id(meta, "tokenizer.ggml.unknown_token_id", t->n_vocab);
    int b = 1; /* SentencePiece's default */
    lpk_meta_get_bool(meta, "tokenizer.ggml.add_space_prefix", &b);
    t->add_space_prefix = b && kind == TOK_KIND_SPM;
    if (kind == TOK_KIND_BPE) {
        const char *pre = lpk_meta_get_str(meta, "tokenizer.ggml.pre");
        int im = pre && !strcmp(pre, "llama-bpe");
        lpk_meta_get_bool(meta, "tokenizer.ignore_merges", &im);
        t->ignore_merges = im;
        if ((rc = build_pairs(t, lpk_meta_find(meta, "tokenizer.ggml.merges"), err)) ||
            (rc = setup_regex(t, meta, err)))
            goto fail;
    }
    t->can_cut = cut_allowed(t);
    *out = t;
    return LPK_OK;
fail:
    tok_tokenizer_free(t);
    return rc;
}

void tok_tokenizer_free(tok_tokenizer *t)
{
    if (!t) return;
    tok_regex_free(t);
    free(t->type);
    free(t->score);
    free(t->key_pool);
    free(t->key_off);
    free(t->key_len);
    free(t->dec_pool);
    free(t->dec_off);
    free(t->dec_len);
    free(t->vocab.slot);
    free(t->pairs);
    free(t->special);
    free(t);
}

int32_t tok_tokenizer_n_vocab(const tok_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t tok_tokenizer_bos(const tok_tokenizer *t) { return t ? t->bos : -1; }
int32_t tok_tokenizer_eos(const tok_tokenizer *t) { return t ? t->eos : -1; }

/* ---------------------------------------------------------------- encode */

/* A run of text or one special token. */
typedef struct tok_frag {
    size_t off, n;
    int32_t id;     /* -1: text */
} tok_frag;

typedef struct tok_frags {
    tok_frag *f;
    size_t n, cap;
} tok_frags;

static int frags_insert(tok_frags *fs, size_t at, const tok_frag *add, size_t n_add)
{
    if (fs->n + n_add > fs->cap) {
        size_t nc = fs->cap ? fs->cap * 2 : 16;
        while (nc < fs->n + n_add) nc *= 2;
        tok_frag *nf = realloc(fs->f, nc * sizeof *nf);
        if (!nf) return LPK_ENOMEM;
        fs->f = nf;
        fs->cap = nc;
    }
    memmove(fs->f + at + n_add, fs->f + at, (fs->n - at) * sizeof *fs->f);
    memcpy(fs->f + at, add, n_add * sizeof *add);
    fs->n += n_add;
    return LPK_OK;
}

/* Splits text fragments at special-token text, longest token first (as
 * llama.cpp's tokenizer_st_partition does). User-defined tokens always split;
 * control and unknown tokens only with parse_special. The text matched is the
 * token's own, as stored: Code Llama's `▁<PRE>` matches U+2581 + "<PRE>", not
 * " <PRE>" (llama.cpp compares the token text, not its decoding). */
static int partition(const tok_tokenizer *t, const char *text, size_t n, int parse_special,
                     tok_frags *fs)
{
    tok_frag whole = {0, n, -1};
    if (n && frags_insert(fs, 0, &whole, 1)) return LPK_ENOMEM;
    for (size_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && t->type[id] != TOK_TT_USER) continue;
        const char *s = t->key_pool + t->key_off[id];
        size_t sl = t->key_len[id];
        for (size_t i = 0; i < fs->n; i++) {
            tok_frag f = fs->f[i];
            if (f.id >= 0 || f.n < sl) continue;
            const char *hit = memmem(text + f.off, f.n, s, sl);
            if (!hit) continue;
            size_t at = (size_t)(hit - text);
            tok_frag parts[3] = {{f.off, at - f.off, -1}, {at, sl, id},
                                {at + sl, f.off + f.n - at - sl, -1}};
            /* Replace f by [left] special [right]; right is scanned next. */
            fs->f[i] = parts[1];
            size_t pos = i;
            if (parts[0].n) {
                if (frags_insert(fs, i, &parts[0], 1)) return LPK_ENOMEM;
                pos++;
            }
            if (parts[2].n && frags_insert(fs, pos + 1, &parts[2], 1)) return LPK_ENOMEM;
            i = pos;
        }
    }
    return LPK_OK;
}

/* cont: text continues a text cut at a tok_cut_point (no dummy prefix at its
 * start: the text before the cut ends in plain text). */
static int encode(const tok_tokenizer *t, const char *text, size_t n, int add_bos,
                  int parse_special, int cont, int32_t **ids, size_t *n_ids, lpk_error *err)
{
    if (!t || (!text && n) || !ids || !n_ids)
        return lpk_err(err, LPK_EINVAL, "tok_encode: bad arguments");
    *ids = NULL;
    *n_ids = 0;
    tok_int_vec out = {0};
    tok_frags fs = {0};
    int rc = LPK_OK;
    if (add_bos) {
        if (t->bos < 0) {
            rc = lpk_err(err, LPK_ENOTFOUND, "tokenizer: BOS requested but the model has none");
            goto out;
        }
        if (tok_ivec_push(&out, t->bos)) goto nomem;
    }
    if (partition(t, text, n, parse_special, &fs)) goto nomem;
    int prev_special = !cont; /* SentencePiece: the dummy prefix goes at the start */
    for (size_t i = 0; i < fs.n && !rc; i++) {
        tok_frag f = fs.f[i];
        if (f.id >= 0) {
            if (tok_ivec_push(&out, f.id)) goto nomem;
            prev_special = 1;
        } else if (t->kind == TOK_KIND_SPM) {
            rc = tok_spm_encode(t, text + f.off, f.n, t->add_space_prefix && prev_special, &out,
                                err);
            prev_special = 0;
        } else {
            rc = tok_bpe_encode(t, text + f.off, f.n, &out, err);
        }
    }
    if (rc) goto out;
    if (out.n == 0) { /* keep *ids non-NULL for callers that test it */
        if (tok_ivec_push(&out, 0)) goto nomem;
        out.n = 0;
    }
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
    goto out;
nomem:
    rc = lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory");
out:
    free(out.v);
    free(fs.f);
    return rc;
}

int tok_encode(const tok_tokenizer *t, const char *text, size_t n, int add_bos, int parse_special,
               int32_t **ids, size_t *n_ids, lpk_error *err)
{
    return encode(t, text, n, add_bos, parse_special, 0, ids, n_ids, err);
}

int tok_encode_cont(const tok_tokenizer *t, const char *text, size_t n, int parse_special,
                    int32_t **ids, size_t *n_ids, lpk_error *err)
{
    return encode(t, text, n, 0, parse_special, 1, ids, n_ids, err);
}

int tok_tokenizer_can_cut(const tok_tokenizer *t) { return t && t->can_cut; }

static int graphic(char c) { return c > 0x20 && c < 0x7f; }

/* The cut p falls after a newline with ASCII around it: text[p-3] < 0x80,
 * text[p-2] and text[p] printable and not a space, text[p-1] == '\n'.
 * - Special tokens: none holds a newline (cut_allowed), so no occurrence spans
 *   the cut, and partition's left-to-right search finds the same ones on both
 *   sides; the text after the cut continues a plain run (no dummy prefix).
 * - SentencePiece: symbols are UTF-8 characters cut by their lead byte's
 *   length (up to 4), so with ASCII at p-3 and p-2 no symbol spans the cut;
 *   the newline's symbol never merges (no longer token holds a newline), and
 *   the merges on either side, best first and leftmost on ties, are those of
 *   each side alone.
 * - Byte-level BPE, Llama 3's and GPT-2's patterns: no alternative matches a
 *   newline together with a printable character after it; the pieces before
 *   p-1 never look past p-1 (runs of one class, a one-character look-ahead);
 *   and the piece holding the newline ends at p whether text[p] is there or
 *   not ([\r\n]*, \s*[\r\n]+, \s+(?!\S) and \s+ all stop before a printable
 *   character and at the end). No lookbehind: matching from p sees what
 *   matching a text that starts at p sees. */
size_t tok_cut_point(const tok_tokenizer *t, const char *text, size_t n)
{
    if (!t || !t->can_cut || !text || n < 4) return 0;
    for (size_t p = n - 1; p >= 3; p--)
        if (text[p - 1] == '\n' && graphic(text[p]) && graphic(text[p - 2]) &&
            (uint8_t)text[p - 3] < 0x80)
            return p;
    return 0;
}

int tok_decode_token(const tok_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    if (!t || id < 0 || id >= t->n_vocab || (!buf && cap)) return LPK_EINVAL;
    size_t n = t->dec_len[id];
    if (n > cap) n = cap;
    if (n > INT32_MAX) n = INT32_MAX;
    memcpy(buf, t->dec_pool + t->dec_off[id], n);
    return (int)n;
}
