/* llama2.c's tokenizer.bin (tokenizer.py's export of a SentencePiece model):
 *
 *   int32 max_token_length
 *   per token, by id: f32 score, int32 length, that many bytes
 *
 * little-endian, no count: the tokens run to the end of the file. The export
 * renames BOS and EOS to "\n<s>\n" and "\n</s>\n" and writes U+2581 as a plain
 * space; types are not stored. Both are undone here, so the metadata equals
 * what the SentencePiece model itself gives: `<unk>` (0) unknown, `<s>` (1) and
 * `</s>` (2) control, `<0xNN>` bytes, the rest normal. */
#include "tok_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Walks the file; returns the token count, or 0 if it is not this format. */
static size_t count_tokens(const uint8_t *buf, size_t n)
{
    if (n < 4) return 0;
    uint32_t max_len = lpk_rd32(buf);
    if (max_len == 0 || max_len > 4096) return 0;
    size_t pos = 4, k = 0;
    while (pos < n) {
        if (n - pos < 8) return 0;
        float score = lpk_rdf32(buf + pos);
        uint32_t len = lpk_rd32(buf + pos + 4);
        if (!isfinite(score) || len > max_len || n - pos - 8 < len) return 0;
        pos += 8 + len;
        k++;
    }
    return k >= 3 ? k : 0;
}

int tok_is_llama2c(const uint8_t *buf, size_t n)
{
    return count_tokens(buf, n) > 0;
}

int tok_llama2c_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                      lpk_error *err)
{
    size_t nt = count_tokens(buf, n);
    if (!nt)
        return lpk_err(err, LPK_ECORRUPT, "%s: not a llama2.c tokenizer.bin (int32 max length, "
                       "then score, length, bytes per token)", name);
    char **strs = calloc(nt, sizeof *strs);
    float *scores = malloc(nt * sizeof *scores);
    int32_t *types = malloc(nt * sizeof *types);
    int rc = strs && scores && types ? LPK_OK : LPK_ENOMEM;
    size_t pos = 4;
    for (size_t i = 0; !rc && i < nt; i++) {
        uint32_t len = lpk_rd32(buf + pos + 4);
        scores[i] = lpk_rdf32(buf + pos);
        const char *p = (const char *)buf + pos + 8;
        pos += 8 + len;
        if (i == 1 && len == 5 && !memcmp(p, "\n<s>\n", 5)) p = "<s>", len = 3;
        if (i == 2 && len == 6 && !memcmp(p, "\n</s>\n", 6)) p = "</s>", len = 4;
        /* spaces back to U+2581 (3 bytes each) */
        char *s = malloc((size_t)len * 3 + 1);
        if (!s) {
            rc = LPK_ENOMEM;
            break;
        }
        size_t o = 0;
        for (uint32_t j = 0; j < len; j++) {
            if (p[j] == ' ') {
                memcpy(s + o, "\xe2\x96\x81", 3);
                o += 3;
            } else {
                s[o++] = p[j];
            }
        }
        s[o] = 0;
        strs[i] = s;
        types[i] = TOK_TT_NORMAL;
        if (i == 0 && !strcmp(s, "<unk>")) types[i] = TOK_TT_UNKNOWN;
        else if ((i == 1 && !strcmp(s, "<s>")) || (i == 2 && !strcmp(s, "</s>")))
            types[i] = TOK_TT_CONTROL;
        else if (o == 6 && !strncmp(s, "<0x", 3) && s[5] == '>') types[i] = TOK_TT_BYTE;
    }
    if (!rc && ((rc = lpk_meta_set_str(meta, "tokenizer.ggml.model", "llama")) ||
                (rc = lpk_meta_set_str(meta, "tokenizer.ggml.pre", "default")) ||
                (rc = lpk_meta_set_str_arr(meta, "tokenizer.ggml.tokens",
                                           (const char *const *)strs, NULL, nt)) ||
                (rc = lpk_meta_set_arr(meta, "tokenizer.ggml.scores", LPK_V_F32, scores, nt)) ||
                (rc = lpk_meta_set_arr(meta, "tokenizer.ggml.token_type", LPK_V_I32, types,
                                       nt)) ||
                (rc = lpk_meta_set_u32(meta, "tokenizer.ggml.bos_token_id", 1)) ||
                (rc = lpk_meta_set_u32(meta, "tokenizer.ggml.eos_token_id", 2)) ||
                (rc = lpk_meta_set_u32(meta, "tokenizer.ggml.unknown_token_id", 0)) ||
                /* llama2.c's encode() adds the dummy prefix, as SentencePiece does */
                (rc = lpk_meta_set_bool(meta, "tokenizer.ggml.add_space_prefix", 1)) ||
                (rc = tok_meta_default_bool(meta, "tokenizer.ggml.add_bos_token", 1)) ||
                (rc = tok_meta_default_bool(meta, "tokenizer.ggml.add_eos_token", 0))))
        rc = LPK_ENOMEM;
    if (rc) lpk_err(err, rc, "%s: out of memory for %zu tokens", name, nt);
    for (size_t i = 0; strs && i < nt; i++) free(strs[i]);
    free(strs);
    free(scores);
    free(types);
    return rc;
}
