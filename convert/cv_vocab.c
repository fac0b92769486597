/* The whole vocabulary of a checkpoint folder, as llama.cpp's converter builds
 * it (convert_hf_to_gguf.py: _create_vocab_sentencepiece, get_vocab_base and
 * gguf-py's SpecialVocab; docs/CONVERT.md "Vocabulary and special ids"):
 *
 * - the tokenizer file's tokens, then added_tokens.json (user-defined) and
 *   tokenizer_config.json's added_tokens_decoder (control when "special" or
 *   "<|...|>", else user-defined), each at its id;
 * - padded with [PAD<id>] (unused) up to the embedding's rows; added tokens at
 *   or past the rows are dropped with a warning naming them; a base
 *   vocabulary larger than the embedding is bad input;
 * - special ids: tokenizer_config.json's bos/eos/unk/sep/pad/cls/mask_token
 *   (a string or {"content": ...}) looked up among tokenizer.json's
 *   added_tokens, else config.json's *_token_id, else the tokenizer file's
 *   own; Code Llama's prefix/suffix/middle/eot for a 32016-token vocabulary.
 *   generation_config.json and special_tokens_map.json are not read for ids
 *   (llama.cpp reads neither: Llama 2's generation_config.json says pad 0,
 *   and its GGUF has no pad id). */
#include "cv_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5 };

/* The special token kinds gguf-py's SpecialVocab knows, with GGUF keys. */
static const struct { const char *typ, *key; } special_kinds[CV_N_SPECIAL] = {
    {"bos", "tokenizer.ggml.bos_token_id"},
    {"eos", "tokenizer.ggml.eos_token_id"},
    {"unk", "tokenizer.ggml.unknown_token_id"},
    {"sep", "tokenizer.ggml.seperator_token_id"}, /* sic: llama.cpp's spelling */
    {"pad", "tokenizer.ggml.padding_token_id"},
    {"cls", "tokenizer.ggml.cls_token_id"},
    {"mask", "tokenizer.ggml.mask_token_id"},
};

void cv_special_snapshot(const lpk_meta *m, cv_special_ids *own)
{
    for (int i = 0; i < CV_N_SPECIAL; i++) {
        uint32_t v;
        own->id[i] = lpk_meta_get_u32(m, special_kinds[i].key, &v) ? -1 : (int64_t)v;
    }
}

/* A JSON file of dir, parsed (NULL if absent or dir is NULL). Bad JSON in a
 * file the conversion needs is an error; *rc says which. */
static json_t *folder_json(const char *dir, const char *name, int *rc, lpk_error *err)
{
    *rc = LPK_OK;
    if (!dir) return NULL;
    char p[4096];
    if (cv_path_join(p, sizeof p, dir, name)) return NULL;
    uint8_t *buf;
    size_t n;
    int st = cv_read_small_file(p, 64u << 20, &buf, &n, err);
    if (st == LPK_ENOTFOUND) {
        lpk_error_clear(err);
        return NULL;
    }
    if (st) {
        *rc = st;
        return NULL;
    }
    json_t *j = cv_json_load(p, buf, n, 0, err);
    free(buf);
    if (!j) *rc = err ? err->status : LPK_ECORRUPT;
    return j;
}

/* gguf-py's does_token_look_special, for the families converted here. */
static int looks_special(const char *s)
{
    size_t n = strlen(s);
    return n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>");
}

/* A non-negative integer JSON value (an integral real too). */
static int64_t json_id(json_t *v)
{
    if (json_is_integer(v)) return json_integer_value(v) >= 0 ? json_integer_value(v) : -1;
    if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) < 4e9 &&
        json_real_value(v) == (double)(int64_t)json_real_value(v))
        return (int64_t)json_real_value(v);
    return -1;
}

typedef struct vocab {
    char **tok;       /* owned */
    float *score;
    int32_t *type;
    size_t n;
    int spm;          /* "llama" (scores) or "gpt2" */
} vocab;

static void vocab_free(vocab *v)
{
    for (size_t i = 0; v->tok && i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->score);
    free(v->type);
}

static int vocab_load(const lpk_meta *m, vocab *v, size_t cap)
{
    const lpk_kv *t = lpk_meta_find(m, "tokenizer.ggml.tokens");
    const lpk_kv *ty = lpk_meta_find(m, "tokenizer.ggml.token_type");
    const lpk_kv *sc = lpk_meta_find(m, "tokenizer.ggml.scores");
    const char *model = lpk_meta_get_str(m, "tokenizer.ggml.model");
    v->spm = model && !strcmp(model, "llama");
    v->n = (size_t)t->count;
    if (cap < v->n) cap = v->n;
    v->tok = calloc(cap + 1, sizeof *v->tok);
    v->score = calloc(cap + 1, sizeof *v->score);
    v->type = calloc(cap + 1, sizeof *v->type);
    if (!v->tok || !v->score || !v->type) return LPK_ENOMEM;
    for (size_t i = 0; i < v->n; i++) {
        lpk_str s = lpk_kv_str_at(t, i);
        if (!(v->tok[i] = strndup(s.p, (size_t)s.n))) return LPK_ENOMEM;
        v->type[i] = TT_NORMAL;
        if (ty && ty->type == LPK_V_ARR && ty->elem == LPK_V_I32 && i < ty->count)
            memcpy(&v->type[i], (const uint8_t *)ty->data + 4 * i, 4);
        if (sc && sc->type == LPK_V_ARR && sc->elem == LPK_V_F32 && i < sc->count)
            memcpy(&v->score[i], (const uint8_t *)sc->data + 4 * i, 4);
    }
    return LPK_OK;
}

static int vocab_store(lpk_meta *m, const vocab *v)
{
    int rc = lpk_meta_set_str_arr(m, "tokenizer.ggml.tokens", (const char *const *)v->tok, NULL,
                                  v->n);
    if (!rc) rc = lpk_meta_set_arr(m, "tokenizer.ggml.token_type", LPK_V_I32, v->type, v->n);
    if (!rc && v->spm) rc = lpk_meta_set_arr(m, "tokenizer.ggml.scores", LPK_V_F32, v->score, v->n);
    return rc;
}

static int vocab_set(vocab *v, size_t id, const char *text, int type, float score)
{
    char *d = strdup(text);
    if (!d) return LPK_ENOMEM;
    free(v->tok[id]);
    v->tok[id] = d;
    v->type[id] = type;
    v->score[id] = score;
    return LPK_OK;
}

/* Appends "'name'(id)" to a warning list, as far as it fits. */
static void note_dropped(char *list, size_t cap, size_t *n, const char *name, int64_t id)
{
    size_t l = strlen(list);
    if (l + 40 < cap)
        snprintf(list + l, cap - l, "%s'%.24s'(%lld)", *n ? ", " : "", name, (long long)id);
    else if (l + 5 < cap && !strstr(list, "..."))
        snprintf(list + l, cap - l, ", ...");
    (*n)++;
}

/* User-defined text is stored pre-normalized: U+2581 -> space (as llama.cpp). */
static char *user_text(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(n + 1), *q = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n;) {
        if (i + 2 < n && (unsigned char)s[i] == 0xe2 && (unsigned char)s[i + 1] == 0x96 &&
            (unsigned char)s[i + 2] == 0x81) {
            *q++ = ' ';
            i += 3;
        } else {
            *q++ = s[i++];
        }
    }
    *q = 0;
    return o;
}

/* Id of a token name among tokenizer.json's added_tokens, or -1. */
static int64_t added_id(json_t *tokjson, const char *content)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(tokjson, "added_tokens"), i, e) {
        const char *c = json_string_value(json_object_get(e, "content"));
        if (c && !strcmp(c, content)) return json_id(json_object_get(e, "id"));
    }
    return -1;
}

static const char *token_content(json_t *v)
{
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* One special id by llama.cpp's precedence (first valid wins). */
static int64_t pick_id(json_t *tc, json_t *tokjson, json_t *cfg, const char *typ, int64_t own,
                       int64_t n_vocab)
{
    char k[48];
    int64_t c[3] = {-1, -1, own};
    snprintf(k, sizeof k, "%s_token", typ);
    const char *name = token_content(json_object_get(tc, k));
    if (name && tokjson) c[0] = added_id(tokjson, name);
    snprintf(k, sizeof k, "%s_token_id", typ);
    c[1] = json_id(json_object_get(cfg, k));
    for (int i = 0; i < 3; i++)
        if (c[i] >= 0 && c[i] < n_vocab) return c[i];
    return -1;
}

static int set_or_remove(lpk_meta *m, const char *key, int64_t id)
{
    if (id >= 0) return lpk_meta_set_u32(m, key, (uint32_t)id);
    int rc = lpk_meta_remove(m, key);
    return rc == LPK_ENOTFOUND ? LPK_OK : rc;
}

int cv_vocab_finish(const char *dir, lpk_meta *m, int64_t n_rows, const cv_special_ids *own,
                    char *warn, size_t warn_n, lpk_error *err)
{
    const lpk_kv *tk = lpk_meta_find(m, "tokenizer.ggml.tokens");
    if (!tk || tk->type != LPK_V_ARR || tk->elem != LPK_V_STR || n_rows <= 0) return LPK_OK;
    int rc = LPK_OK;
    vocab v = {0};
    json_t *tc = NULL, *cfg = NULL, *tokjson = NULL, *added = NULL, *ctj = NULL;
    char dropped[400] = "";
    size_t n_dropped = 0;
    if (vocab_load(m, &v, (size_t)n_rows)) goto nomem;
    if ((tc = folder_json(dir, "tokenizer_config.json", &rc, err), rc) ||
        (cfg = folder_json(dir, "config.json", &rc, err), rc) ||
        (added = folder_json(dir, "added_tokens.json", &rc, err), rc) ||
        (ctj = folder_json(dir, "chat_template.json", &rc, err), rc))
        goto out;
    /* tokenizer.json only when tokenizer_config.json names special tokens */
    static const char *const typs[] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask",
                                       "prefix", "suffix", "middle", "eot"};
    int want_tokjson = 0;
    for (size_t i = 0; i < sizeof typs / sizeof typs[0]; i++) {
        char k[48];
        snprintf(k, sizeof k, "%s_token", typs[i]);
        want_tokjson |= token_content(json_object_get(tc, k)) != NULL;
    }
    if (want_tokjson && (tokjson = folder_json(dir, "tokenizer.json", &rc, err), rc)) goto out;

    /* Tokens past the embedding: added ones are dropped, base ones are bad input. */
    if (v.n > (size_t)n_rows) {
        size_t n_base_over = 0;
        for (size_t i = (size_t)n_rows; i < v.n; i++)
            if (v.type[i] != TT_CONTROL && v.type[i] != TT_USER && v.type[i] != TT_UNUSED)
                n_base_over++;
        if (n_base_over) {
            rc = lpk_err(err, LPK_EBADVALUE, "%s: the tokenizer has %zu tokens, %zu of them "
                         "base (not added) tokens past the %lld rows of token_embd.weight",
                         dir ? dir : "checkpoint", v.n, n_base_over, (long long)n_rows);
            goto out;
        }
        for (size_t i = (size_t)n_rows; i < v.n; i++) {
            if (v.type[i] != TT_UNUSED) note_dropped(dropped, sizeof dropped, &n_dropped,
                                                     v.tok[i], (int64_t)i);
            free(v.tok[i]);
            v.tok[i] = NULL;
        }
        v.n = (size_t)n_rows;
    }
    /* Pad to the embedding's rows (llama.cpp: [PAD<id>], unused, score -10000). */
    for (size_t i = v.n; i < (size_t)n_rows; i++) {
        char b[32];
        snprintf(b, sizeof b, "[PAD%zu]", i);
        if (!(v.tok[i] = strdup(b))) goto nomem;
        v.type[i] = TT_UNUSED;
        v.score[i] = -10000.0f;
    }
    v.n = (size_t)n_rows;

    /* added_tokens.json: {"text": id}; user-defined (SentencePiece vocabularies). */
    if (json_is_object(added) && v.spm) {
        const char *key;
        json_t *val;
        json_object_foreach(added, key, val) {
            int64_t id = json_id(val);
            if (id < 0) continue;
            if (id >= n_rows) {
                note_dropped(dropped, sizeof dropped, &n_dropped, key, id);
                continue;
            }
            if (vocab_set(&v, (size_t)id, key, TT_USER, -1000.0f)) goto nomem;
        }
    }
    /* added_tokens_decoder: {"id": {"content": ..., "special": ...}}. */
    json_t *atd = json_object_get(tc, "added_tokens_decoder");
    if (json_is_object(atd)) {
        const char *key;
        json_t *val;
        json_object_foreach(atd, key, val) {
            char *end;
            long long id = strtoll(key, &end, 10);
            const char *content = json_string_value(json_object_get(val, "content"));
            if (*end || end == key || id < 0 || !content) continue;
            if (id >= n_rows) {
                note_dropped(dropped, sizeof dropped, &n_dropped, content, id);
                continue;
            }
            int ctl = json_is_true(json_object_get(val, "special")) || looks_special(content);
            char *text = ctl ? strdup(content) : user_text(content);
            if (!text) goto nomem;
            rc = vocab_set(&v, (size_t)id, text, ctl ? TT_CONTROL : TT_USER, -1000.0f);
            free(text);
            if (rc) goto nomem;
        }
    }
    if (vocab_store(m, &v)) goto nomem;

    /* Special ids. */
    for (int i = 0; i < CV_N_SPECIAL; i++) {
        int64_t id = pick_id(tc, tokjson, cfg, special_kinds[i].typ,
                             own ? own->id[i] : -1, n_rows);
        if (set_or_remove(m, special_kinds[i].key, id)) goto nomem;
    }
    if (n_rows == 32016 && v.spm) {
        /* Code Llama: the infill pieces of its tokenizer.model */
        static const struct { const char *typ, *key; int64_t id; } cl[] = {
            {"prefix", "tokenizer.ggml.prefix_token_id", 32007},
            {"suffix", "tokenizer.ggml.suffix_token_id", 32008},
            {"middle", "tokenizer.ggml.middle_token_id", 32009},
            {"eot", "tokenizer.ggml.eot_token_id", 32010}};
        for (size_t i = 0; i < 4; i++) {
            int64_t id = pick_id(tc, tokjson, cfg, cl[i].typ, cl[i].id, n_rows);
            if (set_or_remove(m, cl[i].key, id)) goto nomem;
        }
    }
    /* add_prefix_space (llama.cpp writes it when the key is there; null -> false) */
    json_t *aps = json_object_get(tc, "add_prefix_space");
    if (aps && lpk_meta_set_bool(m, "tokenizer.ggml.add_space_prefix", json_is_true(aps)))
        goto nomem;
    /* chat_template.json when tokenizer_config.json has none */
    const char *ct = json_string_value(json_object_get(ctj, "chat_template"));
    if (ct && !lpk_meta_find(m, "tokenizer.chat_template") &&
        lpk_meta_set_str(m, "tokenizer.chat_template", ct))
        goto nomem;
    if (n_dropped && warn)
        snprintf(warn + strlen(warn), warn_n - strlen(warn), "%s%zu added token%s at or past "
                 "the embedding's %lld rows dropped: %s", warn[0] ? "; " : "", n_dropped,
                 n_dropped == 1 ? "" : "s", (long long)n_rows, dropped);
    goto out;
nomem:
    rc = lpk_err(err, LPK_ENOMEM, "out of memory");
out:
    vocab_free(&v);
    json_decref(tc);
    json_decref(cfg);
    json_decref(tokjson);
    json_decref(added);
    json_decref(ctj);
    return rc;
}
