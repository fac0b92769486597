/* SentencePiece tokenizer.model: a minimal protobuf wire-format reader.
 *
 * ModelProto { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
 *              NormalizerSpec normalizer_spec = 3; ... }
 * SentencePiece { string piece = 1; float score = 2; Type type = 3 (default NORMAL) }
 * TrainerSpec { model_type = 3; byte_fallback = 35; unk_id = 40; bos_id = 41;
 *               eos_id = 42; pad_id = 43 }   (defaults 0, 1, 2, -1)
 * NormalizerSpec { add_dummy_prefix = 3 (default true) }
 * Unknown fields are skipped by wire type, as protobuf readers do. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct pb_cur {
    const uint8_t *p;
    size_t n, off;        /* bytes, length, position */
    size_t base;          /* offset of p[0] in the file, for messages */
    const char *name;
} pb_cur;

static int pb_varint(pb_cur *c, uint64_t *v, lpk_error *err)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->off >= c->n)
            return lpk_err(err, LPK_ETRUNC, "%s: varint runs past the end at offset %zu",
                           c->name, c->base + c->off);
        uint8_t b = c->p[c->off++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return LPK_OK;
        }
    }
    return lpk_err(err, LPK_ECORRUPT, "%s: varint longer than 10 bytes at offset %zu", c->name,
                   c->base + c->off);
}

/* Reads a key; *field = 0 at the end of the message. */
static int pb_key(pb_cur *c, uint32_t *field, int *wire, lpk_error *err)
{
    if (c->off == c->n) {
        *field = 0;
        return LPK_OK;
    }
    uint64_t k;
    int rc = pb_varint(c, &k, err);
    if (rc) return rc;
    if ((k >> 3) == 0 || (k >> 3) > 0x1fffffff)
        return lpk_err(err, LPK_ECORRUPT, "%s: bad protobuf field number at offset %zu",
                       c->name, c->base + c->off);
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    return LPK_OK;
}

/* Length-delimited payload as a sub-cursor. */
static int pb_bytes(pb_cur *c, pb_cur *sub, lpk_error *err)
{
    uint64_t len;
    int rc = pb_varint(c, &len, err);
    if (rc) return rc;
    if (len > c->n - c->off)
        return lpk_err(err, LPK_ETRUNC,
                       "%s: field of %llu bytes at offset %zu runs past the end (%zu left)",
                       c->name, (unsigned long long)len, c->base + c->off, c->n - c->off);
    *sub = (pb_cur){c->p + c->off, (size_t)len, 0, c->base + c->off, c->name};
    c->off += (size_t)len;
    return LPK_OK;
}

static int pb_fixed32(pb_cur *c, uint32_t *v, lpk_error *err)
{
    if (c->n - c->off < 4)
        return lpk_err(err, LPK_ETRUNC, "%s: fixed32 runs past the end at offset %zu", c->name,
                       c->base + c->off);
    const uint8_t *q = c->p + c->off;
    *v = lpk_rd32(q);
    c->off += 4;
    return LPK_OK;
}

static int pb_skip(pb_cur *c, int wire, lpk_error *err)
{
    uint64_t v;
    uint32_t u;
    pb_cur sub;
    switch (wire) {
    case 0: return pb_varint(c, &v, err);
    case 1:
        if (c->n - c->off < 8)
            return lpk_err(err, LPK_ETRUNC, "%s: fixed64 runs past the end at offset %zu",
                           c->name, c->base + c->off);
        c->off += 8;
        return LPK_OK;
    case 2: return pb_bytes(c, &sub, err);
    case 5: return pb_fixed32(c, &u, err);
    default:
        return lpk_err(err, LPK_ECORRUPT, "%s: unsupported protobuf wire type %d at offset %zu",
                       c->name, wire, c->base + c->off);
    }
}

static int pb_want(pb_cur *c, int wire, int want, uint32_t field, lpk_error *err)
{
    if (wire == want) return LPK_OK;
    return lpk_err(err, LPK_ECORRUPT, "%s: field %u has wire type %d, expected %d (offset %zu)",
                   c->name, field, wire, want, c->base + c->off);
}

typedef struct spm_piece {
    const char *s;
    uint64_t len;
    float score;
    int32_t type;
} spm_piece;

static int parse_piece(pb_cur *c, spm_piece *pc, lpk_error *err)
{
    pc->s = "";
    pc->len = 0;
    pc->score = 0.0f;
    pc->type = 1;
    for (;;) {
        uint32_t f;
        int w, rc = pb_key(c, &f, &w, err);
        if (rc) return rc;
        if (!f) return LPK_OK;
        if (f == 1) {
            pb_cur s;
            if ((rc = pb_want(c, w, 2, f, err)) || (rc = pb_bytes(c, &s, err))) return rc;
            pc->s = (const char *)s.p;
            pc->len = s.n;
        } else if (f == 2) {
            uint32_t u;
            if ((rc = pb_want(c, w, 5, f, err)) || (rc = pb_fixed32(c, &u, err))) return rc;
            memcpy(&pc->score, &u, 4);
        } else if (f == 3) {
            uint64_t v;
            if ((rc = pb_want(c, w, 0, f, err)) || (rc = pb_varint(c, &v, err))) return rc;
            if (v < 1 || v > 6)
                return lpk_err(err, LPK_ECORRUPT, "%s: piece type %llu at offset %zu is not 1..6",
                               c->name, (unsigned long long)v, c->base + c->off);
            pc->type = (int32_t)v;
        } else if ((rc = pb_skip(c, w, err))) {
            return rc;
        }
    }
}

typedef struct spm_spec {
    int64_t model_type, unk_id, bos_id, eos_id, pad_id;
    int byte_fallback, add_dummy_prefix;
} spm_spec;

/* Reads the varint fields of a sub-message that we care about: fields[i] ->
 * *dst[i] (int64, sign-extended as protobuf int32 is). */
static int parse_varints(pb_cur *c, const uint32_t *fields, int64_t *const *dst, int n_fields,
                         lpk_error *err)
{
    for (;;) {
        uint32_t f;
        int w, rc = pb_key(c, &f, &w, err), hit = 0;
        if (rc) return rc;
        if (!f) return LPK_OK;
        for (int i = 0; i < n_fields; i++) {
            if (fields[i] != f) continue;
            uint64_t v;
            if ((rc = pb_want(c, w, 0, f, err)) || (rc = pb_varint(c, &v, err))) return rc;
            *dst[i] = (int64_t)(int32_t)(uint32_t)v;
            hit = 1;
        }
        if (!hit && (rc = pb_skip(c, w, err))) return rc;
    }
}

static int set_id(lpk_meta *meta, const char *key, int64_t id, uint64_t n_pieces)
{
    if (id < 0 || (uint64_t)id >= n_pieces) return LPK_OK;  /* -1: the model has none */
    return lpk_meta_set_u32(meta, key, (uint32_t)id);
}

int tok_spm_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                  lpk_error *err)
{
    pb_cur c = {buf, n, 0, 0, name};
    spm_spec sp = {2, 0, 1, 2, -1, 0, 1};
    uint64_t n_pieces = 0;
    int rc;

    /* Pass 1: count pieces and read the specs. */
    for (;;) {
        uint32_t f;
        int w;
        if ((rc = pb_key(&c, &f, &w, err))) return rc;
        if (!f) break;
        pb_cur sub;
        if (f == 1 || f == 2 || f == 3) {
            if ((rc = pb_want(&c, w, 2, f, err)) || (rc = pb_bytes(&c, &sub, err))) return rc;
        } else if ((rc = pb_skip(&c, w, err))) {
            return rc;
        }
        if (f == 1) {
            n_pieces++;
        } else if (f == 2) {
            int64_t bf = sp.byte_fallback;
            static const uint32_t tf[] = {3, 35, 40, 41, 42, 43};
            int64_t *const td[] = {&sp.model_type, &bf, &sp.unk_id, &sp.bos_id, &sp.eos_id,
                                   &sp.pad_id};
            if ((rc = parse_varints(&sub, tf, td, 6, err))) return rc;
            sp.byte_fallback = bf != 0;
        } else if (f == 3) {
            int64_t adp = sp.add_dummy_prefix;
            static const uint32_t nf[] = {3};
            int64_t *const nd[] = {&adp};
            if ((rc = parse_varints(&sub, nf, nd, 1, err))) return rc;
            sp.add_dummy_prefix = adp != 0;
        }
    }
    if (n_pieces == 0)
        return lpk_err(err, LPK_ECORRUPT, "%s: no SentencePiece pieces (not a tokenizer.model?)",
                       name);
    if (n_pieces > INT32_MAX)
        return lpk_err(err, LPK_ECORRUPT, "%s: %llu pieces", name, (unsigned long long)n_pieces);
    if (sp.model_type != 1 && sp.model_type != 2)
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: SentencePiece model_type %lld (only BPE and unigram are supported)",
                       name, (long long)sp.model_type);

    /* Pass 2: the pieces (n_pieces <= n / 2, so these allocations are bounded). */
    const char **strs = malloc(n_pieces * sizeof *strs);
    uint64_t *lens = malloc(n_pieces * sizeof *lens);
    float *scores = malloc(n_pieces * sizeof *scores);
    int32_t *types = malloc(n_pieces * sizeof *types);
    if (!strs || !lens || !scores || !types) {
        rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory for %llu pieces", name,
                     (unsigned long long)n_pieces);
        goto out;
    }
    c.off = 0;
    for (uint64_t i = 0; i < n_pieces;) {
        uint32_t f;
        int w;
        pb_cur sub;
        if ((rc = pb_key(&c, &f, &w, err))) goto out;
        if (f != 1) {
            if ((rc = pb_skip(&c, w, err))) goto out;
            continue;
        }
        spm_piece pc;
        if ((rc = pb_bytes(&c, &sub, err)) || (rc = parse_piece(&sub, &pc, err))) goto out;
        strs[i] = pc.s;
        lens[i] = pc.len;
        scores[i] = pc.score;
        types[i] = pc.type;
        i++;
    }
    if ((rc = lpk_meta_set_str(meta, "tokenizer.ggml.model", "llama")) ||
        (rc = lpk_meta_set_str(meta, "tokenizer.ggml.pre", "default")) ||
        (rc = lpk_meta_set_str_arr(meta, "tokenizer.ggml.tokens", strs, lens, n_pieces)) ||
        (rc = lpk_meta_set_arr(meta, "tokenizer.ggml.scores", LPK_V_F32, scores, n_pieces)) ||
        (rc = lpk_meta_set_arr(meta, "tokenizer.ggml.token_type", LPK_V_I32, types,
                               n_pieces)) ||
        (rc = set_id(meta, "tokenizer.ggml.bos_token_id", sp.bos_id, n_pieces)) ||
        (rc = set_id(meta, "tokenizer.ggml.eos_token_id", sp.eos_id, n_pieces)) ||
        (rc = set_id(meta, "tokenizer.ggml.unknown_token_id", sp.unk_id, n_pieces)) ||
        (rc = set_id(meta, "tokenizer.ggml.padding_token_id", sp.pad_id, n_pieces)) ||
        (rc = lpk_meta_set_bool(meta, "tokenizer.ggml.add_space_prefix", sp.add_dummy_prefix)) ||
        (rc = tok_meta_default_bool(meta, "tokenizer.ggml.add_bos_token", 1)) ||
        (rc = tok_meta_default_bool(meta, "tokenizer.ggml.add_eos_token", 0)))
        rc = lpk_err(err, rc, "%s: cannot store tokenizer metadata", name);
out:
    free(strs);
    free(lens);
    free(scores);
    free(types);
    return rc;
}
