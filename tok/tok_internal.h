/* verify/ internal: tokenizer state shared by vf_tokenizer.c (construction,
 * special tokens, decoding), vf_tok_merge.c (the merge loop of SentencePiece
 * and byte-level BPE) and vf_tok_regex.c (the byte-level pre-tokenizer). */
#ifndef VF_TOK_H
#define VF_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "verify.h"

enum vf_tok_kind { VF_TOK_SPM = 1, VF_TOK_BPE = 2 };
/* GGUF token types (docs/MODEL.md). */
enum { VF_TT_NORMAL = 1, VF_TT_UNKNOWN = 2, VF_TT_CONTROL = 3, VF_TT_USER = 4,
       VF_TT_UNUSED = 5, VF_TT_BYTE = 6 };

/* Byte string -> token id, open addressing over the tokenizer's key pool. */
typedef struct vf_strmap {
    int32_t *slot;          /* id or -1 */
    size_t mask;
} vf_strmap;

/* (left id, right id) -> merge rank and the merged token. */
typedef struct vf_pair {
    uint64_t key;           /* left << 32 | right; UINT64_MAX = empty */
    int32_t rank, result;
} vf_pair;

typedef struct vf_int_vec {
    int32_t *v;
    size_t n, cap;
} vf_int_vec;

struct vf_tokenizer {
    int kind;
    int32_t n_vocab;
    int32_t *type;          /* (n_vocab) GGUF token type */
    float *score;           /* (n_vocab) SentencePiece merge priority; BPE: NULL */
    /* key: the bytes a token matches in the working text. SentencePiece: the
     * piece (U+2581 for spaces); BPE: the raw bytes (byte-level map undone) for
     * normal tokens, the text itself for the others. */
    char *key_pool;
    uint64_t *key_off;      /* (n_vocab) */
    uint32_t *key_len;      /* (n_vocab) */
    /* dec: what decoding a token produces. */
    char *dec_pool;
    uint64_t *dec_off;
    uint32_t *dec_len;
    vf_strmap vocab;        /* key -> id; a later duplicate wins */
    int32_t byte_tok[256];  /* token standing for a single raw byte, or -1 */
    int32_t bos, eos, unk;
    int add_space_prefix;   /* SentencePiece dummy prefix */
    int ignore_merges;      /* BPE: a pre-token that is a token is emitted whole */
    vf_pair *pairs;         /* BPE merges, open addressing */
    size_t pair_mask;
    void **re;              /* BPE: compiled pre-tokenizer regexes (pcre2_code *) */
    size_t n_re;
    int32_t *special;       /* control/user-defined/unknown ids, longest text first */
    size_t n_special;
};

int32_t vf_strmap_find(const vf_tokenizer *t, const char *s, size_t n);
int vf_ivec_push(vf_int_vec *v, int32_t x);

/* Encodes one run of plain text (no special tokens), appending to out. */
int vf_spm_encode(const vf_tokenizer *t, const char *text, size_t n, int add_prefix,
                  vf_int_vec *out, lpk_error *err);
int vf_bpe_encode_word(const vf_tokenizer *t, const char *w, size_t n, vf_int_vec *out,
                       lpk_error *err);

/* Pre-tokenizer: compiles t->re from patterns; splits text into pieces and
 * calls vf_bpe_encode_word on each. */
int vf_regex_compile(vf_tokenizer *t, const char *const *pats, const uint64_t *lens, size_t n,
                     lpk_error *err);
void vf_regex_free(vf_tokenizer *t);
int vf_bpe_encode(const vf_tokenizer *t, const char *text, size_t n, vf_int_vec *out,
                  lpk_error *err);

#endif
