/* Hugging Face tokenizer.json -> tokenizer.* metadata.
 *
 * Supported: model.type "BPE" either byte-level (a ByteLevel pre-tokenizer or
 * decoder: stored as tokenizer.ggml.model "gpt2" with its merges and split
 * regexes) or SentencePiece-style with byte_fallback and no pre-tokenizer
 * (Llama 2's tokenizer.json: stored as "llama", scores from merge ranks).
 * Added tokens keep their ids: special ones are control tokens, the others
 * user-defined. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct hf_pre {
    const char *pats[16];
    char *owned[16];        /* escaped literal patterns */
    size_t n;
    int byte_level;
    int metaspace, no_prefix;
} hf_pre;

/* A Split pattern {"String": s} matches s literally: escape it with \Q..\E. */
static char *literal_regex(const char *s)
{
    if (strstr(s, "\\E")) return NULL;
    char *r = malloc(strlen(s) + 5);
    if (r) sprintf(r, "\\Q%s\\E", s);
    return r;
}

static int pre_one(const char *name, json_t *p, hf_pre *pre, lpk_error *err)
{
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type) return lpk_err(err, LPK_ECORRUPT, "%s: pre_tokenizer without a type", name);
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(p, "pretokenizers"), i, e) {
            int rc = pre_one(name, e, pre, err);
            if (rc) return rc;
        }
        return LPK_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        pre->byte_level = 1;
        if (json_is_true(json_object_get(p, "add_prefix_space")))
            return lpk_err(err, LPK_EUNSUPPORTED,
                           "%s: ByteLevel pre-tokenizer with add_prefix_space", name);
        if (json_is_false(json_object_get(p, "use_regex"))) return LPK_OK;
        if (pre->n == 16) goto too_many;
        pre->pats[pre->n++] = tok_gpt2_pattern;
        return LPK_OK;
    }
    if (!strcmp(type, "Metaspace")) { /* SentencePiece-style: spaces become U+2581 */
        pre->metaspace = 1;
        const char *ps = json_string_value(json_object_get(p, "prepend_scheme"));
        if ((ps && !strcmp(ps, "never")) || json_is_false(json_object_get(p, "add_prefix_space")))
            pre->no_prefix = 1;
        return LPK_OK;
    }
    if (!strcmp(type, "Split")) {
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        if (!beh || strcmp(beh, "Isolated") || json_is_true(json_object_get(p, "invert")))
            return lpk_err(err, LPK_EUNSUPPORTED,
                           "%s: Split pre-tokenizer with behavior %s%s (only Isolated)", name,
                           beh ? beh : "(none)",
                           json_is_true(json_object_get(p, "invert")) ? ", inverted" : "");
        json_t *pat = json_object_get(p, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        const char *lit = json_string_value(json_object_get(pat, "String"));
        if (pre->n == 16) goto too_many;
        if (re) {
            pre->pats[pre->n++] = re;
        } else if (lit) {
            char *r = literal_regex(lit);
            if (!r) return lpk_err(err, LPK_EUNSUPPORTED, "%s: Split string pattern", name);
            pre->owned[pre->n] = r;
            pre->pats[pre->n++] = r;
        } else {
            return lpk_err(err, LPK_ECORRUPT, "%s: Split pre-tokenizer without a pattern", name);
        }
        return LPK_OK;
    }
    return lpk_err(err, LPK_EUNSUPPORTED, "%s: pre-tokenizer type %s is not supported", name,
                   type);
too_many:
    return lpk_err(err, LPK_EUNSUPPORTED, "%s: more than 16 pre-tokenizer regexes", name);
}

/* The first special token of TemplateProcessing's "single" before $A (BOS) and
 * after it (EOS). */
static void template_specials(json_t *pp, const char **bos, const char **eos)
{
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type) return;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(pp, "processors"), i, e) template_specials(e, bos, eos);
        return;
    }
    if (strcmp(type, "TemplateProcessing")) return;
    int seen_a = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(pp, "single"), i, e) {
        if (json_object_get(e, "Sequence")) {
            seen_a = 1;
            continue;
        }
        const char *id = json_string_value(json_object_get(json_object_get(e, "SpecialToken"),
                                                           "id"));
        if (!id) continue;
        if (!seen_a && !*bos) *bos = id;
        if (seen_a && !*eos) *eos = id;
    }
}

static int64_t vocab_id(json_t *vocab, json_t *added, const char *s)
{
    json_t *v = json_object_get(vocab, s);
    if (json_is_integer(v)) return json_integer_value(v);
    size_t i;
    json_t *e;
    json_array_foreach(added, i, e) {
        const char *c = json_string_value(json_object_get(e, "content"));
        if (c && !strcmp(c, s)) return json_integer_value(json_object_get(e, "id"));
    }
    return -1;
}

static int set_special(lpk_meta *meta, const char *key, int64_t id, size_t n_tok)
{
    if (id < 0 || (uint64_t)id >= n_tok) return LPK_OK;
    return lpk_meta_set_u32(meta, key, (uint32_t)id);
}

int tok_hfjson_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                     lpk_error *err)
{
    json_error_t je;
    json_t *root = json_loadb((const char *)buf, n, 0, &je);
    if (!root)
        return lpk_err(err, LPK_ECORRUPT, "%s: invalid JSON at line %d column %d: %s", name,
                       je.line, je.column, je.text);
    int rc = LPK_OK;
    hf_pre pre = {0};
    const char **strs = NULL;
    uint64_t *lens = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    char **merges = NULL;
    char *pads = NULL;
    size_t n_tok = 0, n_merges = 0;

    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *mj = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(model) || !json_is_object(vocab)) {
        rc = lpk_err(err, LPK_ECORRUPT, "%s: no model.vocab object", name);
        goto out;
    }
    if ((mtype && strcmp(mtype, "BPE")) || !json_is_array(mj)) {
        rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: model type %s (only BPE is supported)", name,
                     mtype ? mtype : "(none, no merges)");
        goto out;
    }
    json_t *pt = json_object_get(root, "pre_tokenizer");
    if (json_is_object(pt) && (rc = pre_one(name, pt, &pre, err))) goto out;
    const char *dtype = json_string_value(json_object_get(json_object_get(root, "decoder"),
                                                          "type"));
    if (dtype && !strcmp(dtype, "ByteLevel")) pre.byte_level = 1;
    int spm = !pre.byte_level;
    if (spm && (!json_is_true(json_object_get(model, "byte_fallback")) || pre.n)) {
        rc = lpk_err(err, LPK_EUNSUPPORTED,
                     "%s: BPE that is neither byte-level nor SentencePiece-style (byte_fallback "
                     "without pre-tokenizer)", name);
        goto out;
    }

    /* Ids: vocab and added tokens; holes become unused [PADn] tokens. The table
     * is bounded by the number of entries, not by the ids the file claims. */
    size_t n_entries = json_object_size(vocab) + json_array_size(added);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || (uint64_t)id >= 2 * n_entries + 1024) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: vocab id of \"%.64s\" is invalid", name, key);
            goto out;
        }
        if ((size_t)id >= n_tok) n_tok = (size_t)id + 1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(added, i, e) {
        json_t *idv = json_object_get(e, "id");
        json_int_t id = json_integer_value(idv);
        if (!json_is_integer(idv) || id < 0 || (uint64_t)id >= 2 * n_entries + 1024 ||
            !json_is_string(json_object_get(e, "content"))) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: added_tokens[%zu] is invalid", name, i);
            goto out;
        }
        if ((size_t)id >= n_tok) n_tok = (size_t)id + 1;
    }
    if (n_tok == 0) {
        rc = lpk_err(err, LPK_ECORRUPT, "%s: empty vocabulary", name);
        goto out;
    }
    strs = calloc(n_tok, sizeof *strs);
    lens = calloc(n_tok, sizeof *lens);
    types = calloc(n_tok, sizeof *types);
    scores = calloc(n_tok, sizeof *scores);
    pads = malloc(n_tok * 32);
    if (!strs || !lens || !types || !scores || !pads) goto nomem;
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    json_object_foreach(vocab, key, val) {
        size_t id = (size_t)json_integer_value(val);
        strs[id] = key;
        lens[id] = strlen(key);
        types[id] = 1;
        if (spm && unk && !strcmp(key, unk)) types[id] = 2;
        else if (spm && lens[id] == 6 && !strncmp(key, "<0x", 3) && key[5] == '>') types[id] = 6;
    }
    json_array_foreach(added, i, e) {
        size_t id = (size_t)json_integer_value(json_object_get(e, "id"));
        json_t *c = json_object_get(e, "content");
        strs[id] = json_string_value(c);
        lens[id] = json_string_length(c);
        if (types[id] != 2) types[id] = json_is_true(json_object_get(e, "special")) ? 3 : 4;
    }
    for (size_t id = 0; id < n_tok; id++)
        if (!strs[id]) {
            snprintf(pads + 32 * id, 32, "[PAD%zu]", id);
            strs[id] = pads + 32 * id;
            lens[id] = strlen(strs[id]);
            types[id] = 5;
        }

    /* Merges: "a b" strings or ["a", "b"] pairs, stored as "a b". */
    n_merges = json_array_size(mj);
    merges = calloc(n_merges ? n_merges : 1, sizeof *merges);
    if (!merges) goto nomem;
    json_array_foreach(mj, i, e) {
        if (json_is_string(e)) {
            merges[i] = strdup(json_string_value(e));
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            const char *a = json_string_value(json_array_get(e, 0));
            const char *b = json_string_value(json_array_get(e, 1));
            merges[i] = malloc(strlen(a) + strlen(b) + 2);
            if (merges[i]) sprintf(merges[i], "%s %s", a, b);
        } else {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: merges[%zu] is neither \"a b\" nor [a, b]",
                         name, i);
            goto out;
        }
        if (!merges[i]) goto nomem;
        /* SentencePiece-style: a piece's score is minus the rank of the first
         * merge that makes it, so merges by score follow merge ranks. */
        if (spm && merges[i][0]) {
            const char *sp = strchr(merges[i] + 1, ' ');
            if (!sp) continue;
            size_t la = (size_t)(sp - merges[i]);
            char *cat = malloc(strlen(merges[i]));
            if (!cat) goto nomem;
            memcpy(cat, merges[i], la);
            strcpy(cat + la, sp + 1);
            json_t *v = json_object_get(vocab, cat);
            free(cat);
            if (json_is_integer(v) && scores[json_integer_value(v)] == 0.0f)
                scores[json_integer_value(v)] = -(float)(i + 1);
        }
    }

    const char *bos = NULL, *eos = NULL;
    template_specials(json_object_get(root, "post_processor"), &bos, &eos);
    int64_t bos_id = bos ? vocab_id(vocab, added, bos) : -1, eos_id = -1;
    if (eos) {
        eos_id = vocab_id(vocab, added, eos);
    } else { /* tokenizer.json does not say; tokenizer_config.json may correct it */
        static const char *const names[] = {"<|end_of_text|>", "</s>", "<|endoftext|>"};
        for (size_t k = 0; k < 3 && eos_id < 0; k++) eos_id = vocab_id(vocab, added, names[k]);
    }
    if (bos_id < 0) { /* no TemplateProcessing: the usual names */
        static const char *const names[] = {"<|begin_of_text|>", "<s>"};
        for (size_t k = 0; k < 2 && bos_id < 0; k++) bos_id = vocab_id(vocab, added, names[k]);
    }

    const char *pre_name = "default";
    if (pre.n == 1 && !strcmp(pre.pats[0], tok_llama3_pattern)) pre_name = "llama-bpe";
    else if (pre.n == 1 && pre.pats[0] == tok_gpt2_pattern) pre_name = "gpt2";
    if ((rc = lpk_meta_set_str(meta, "tokenizer.ggml.model", spm ? "llama" : "gpt2")) ||
        (rc = lpk_meta_set_str(meta, "tokenizer.ggml.pre", pre_name)) ||
        (rc = lpk_meta_set_str_arr(meta, "tokenizer.ggml.tokens", strs, lens, n_tok)) ||
        (rc = lpk_meta_set_arr(meta, "tokenizer.ggml.token_type", LPK_V_I32, types, n_tok)) ||
        (rc = set_special(meta, "tokenizer.ggml.bos_token_id", bos_id, n_tok)) ||
        (rc = set_special(meta, "tokenizer.ggml.eos_token_id", eos_id, n_tok)) ||
        (rc = set_special(meta, "tokenizer.ggml.unknown_token_id",
                          unk ? vocab_id(vocab, added, unk) : -1, n_tok)) ||
        (rc = lpk_meta_set_bool(meta, "tokenizer.ggml.add_space_prefix",
                                spm && !pre.no_prefix)) ||
        (rc = tok_meta_default_bool(meta, "tokenizer.ggml.add_bos_token", bos_id >= 0)) ||
        (rc = tok_meta_default_bool(meta, "tokenizer.ggml.add_eos_token", eos != NULL)))
        goto meta_fail;
    if (spm) {
        rc = lpk_meta_set_arr(meta, "tokenizer.ggml.scores", LPK_V_F32, scores, n_tok);
    } else {
        if ((rc = lpk_meta_set_str_arr(meta, "tokenizer.ggml.merges",
                                       (const char *const *)merges, NULL, n_merges)) ||
            (rc = lpk_meta_set_bool(meta, "tokenizer.ignore_merges",
                                    json_is_true(json_object_get(model, "ignore_merges")))))
            goto meta_fail;
        if (pre.n) rc = lpk_meta_set_str_arr(meta, "tokenizer.pre_regex", pre.pats, NULL, pre.n);
        else rc = lpk_meta_remove(meta, "tokenizer.pre_regex") == LPK_ENOMEM ? LPK_ENOMEM : 0;
    }
    if (rc) goto meta_fail;
    goto out;
meta_fail:
    rc = lpk_err(err, rc, "%s: cannot store tokenizer metadata", name);
    goto out;
nomem:
    rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory for %zu tokens", name, n_tok);
out:
    for (size_t k = 0; merges && k < n_merges; k++) free(merges[k]);
    free(merges);
    for (size_t k = 0; k < pre.n; k++) free(pre.owned[k]);
    free(strs);
    free(lens);
    free(types);
    free(scores);
    free(pads);
    json_decref(root);
    return rc;
}
