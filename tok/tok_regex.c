/* Byte-level BPE pre-tokenizer: the text is split by each regex in turn (every
 * match and every gap between matches is a piece, as Hugging Face's Split with
 * behavior "Isolated" and llama.cpp's unicode_regex_split do), then each piece
 * goes through the merges. PCRE2 in UTF mode with Unicode properties (\p{L},
 * \p{N}, \s); invalid UTF-8 never matches and ends up in the gaps. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

int tok_regex_compile(tok_tokenizer *t, const char *const *pats, const uint64_t *lens, size_t n,
                      lpk_error *err)
{
    t->re = calloc(n ? n : 1, sizeof *t->re);
    if (!t->re) return lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pats[i], (PCRE2_SIZE)lens[i],
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code,
                                       &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            return lpk_err(err, LPK_EUNSUPPORTED,
                           "tokenizer: pre-tokenizer regex %zu does not compile at offset %zu: "
                           "%s", i, (size_t)at, (const char *)msg);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
        t->re[t->n_re++] = re;
    }
    t->re_known = n == 1 && ((lens[0] == strlen(tok_llama3_pattern) &&
                              !memcmp(pats[0], tok_llama3_pattern, lens[0])) ||
                             (lens[0] == strlen(tok_gpt2_pattern) &&
                              !memcmp(pats[0], tok_gpt2_pattern, lens[0])));
    return LPK_OK;
}

void tok_regex_free(tok_tokenizer *t)
{
    for (size_t i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->re);
    t->re = NULL;
    t->n_re = 0;
}

/* Splits text[0..n) by regex k and recurses into regex k+1 for each piece;
 * after the last regex, the piece is encoded. */
static int split(const tok_tokenizer *t, size_t k, const char *text, size_t n,
                 pcre2_match_data *md, tok_int_vec *out, lpk_error *err)
{
    if (n == 0) return LPK_OK;
    if (k == t->n_re) return tok_bpe_encode_word(t, text, n, out, err);
    const pcre2_code *re = t->re[k];
    size_t pos = 0, gap = 0;
    int rc;
    while (pos < n) {
        int m = pcre2_match(re, (PCRE2_SPTR)text, n, pos, 0, md, NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            return lpk_err(err, LPK_EUNSUPPORTED, "tokenizer: pre-tokenizer regex failed: %s",
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t s = ov[0], e = ov[1];
        if (e == s) { /* empty match: step over one character */
            pos = s + 1;
            while (pos < n && ((uint8_t)text[pos] & 0xc0) == 0x80) pos++;
            continue;
        }
        if (s > gap && (rc = split(t, k + 1, text + gap, s - gap, md, out, err))) return rc;
        if ((rc = split(t, k + 1, text + s, e - s, md, out, err))) return rc;
        gap = pos = e;
    }
    return split(t, k + 1, text + gap, n - gap, md, out, err);
}

int tok_bpe_encode(const tok_tokenizer *t, const char *text, size_t n, tok_int_vec *out,
                   lpk_error *err)
{
    pcre2_match_data *md = NULL;
    if (t->n_re) {
        md = pcre2_match_data_create(8, NULL);
        if (!md) return lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory");
    }
    int rc = split(t, 0, text, n, md, out, err);
    pcre2_match_data_free(md);
    return rc;
}
