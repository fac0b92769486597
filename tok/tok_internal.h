/* tok/ internal, not installed: the tokenizer file parsers behind
 * tok_load_mem() (tok_load.c, tok_spm_proto.c, tok_hfjson.c), and the
 * tokenizer state shared by tok_vocab.c (construction, special tokens,
 * decoding), tok_merge.c (the merge loop of SentencePiece and byte-level BPE)
 * and tok_regex.c (the byte-level pre-tokenizer). Helpers several of them use
 * are in tok_common.c, below all of them. */
#ifndef TOK_INTERNAL_H
#define TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tok.h"

enum tok_kind { TOK_KIND_SPM = 1, TOK_KIND_BPE = 2 };
/* GGUF token types (docs/MODEL.md). */
enum { TOK_TT_NORMAL = 1, TOK_TT_UNKNOWN = 2, TOK_TT_CONTROL = 3, TOK_TT_USER = 4,
       TOK_TT_UNUSED = 5, TOK_TT_BYTE = 6 };

/* Byte string -> token id, open addressing over the tokenizer's key pool. */
typedef struct tok_strmap {
    int32_t *slot;          /* id or -1 */
    size_t mask;
} tok_strmap;

/* (left id, right id) -> merge rank and the merged token. */
typedef struct tok_pair {
    uint64_t key;           /* left << 32 | right; UINT64_MAX = empty */
    int32_t rank, result;
} tok_pair;

typedef struct tok_int_vec {
    int32_t *v;
    size_t n, cap;
} tok_int_vec;

struct tok_tokenizer {
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
    tok_strmap vocab;        /* key -> id; a later duplicate wins */
    int32_t byte_tok[256];  /* token standing for a single raw byte, or -1 */
    int32_t bos, eos, unk;
    int add_space_prefix;   /* SentencePiece dummy prefix */
    int ignore_merges;      /* BPE: a pre-token that is a token is emitted whole */
    tok_pair *pairs;         /* BPE merges, open addressing */
    size_t pair_mask;
    void **re;              /* BPE: compiled pre-tokenizer regexes (pcre2_code *) */
    size_t n_re;
    int32_t *special;       /* control/user-defined/unknown ids, longest text first */
    size_t n_special;
    /* BPE: the pre-tokenizer is exactly one of the patterns tok_cut_point's
     * rule is proven for (Llama 3's or GPT-2's) */
    int re_known;
    int can_cut;            /* tok_cut_point may cut (tok_tokenizer_can_cut) */
};

int32_t tok_strmap_find(const tok_tokenizer *t, const char *s, size_t n);
int tok_ivec_push(tok_int_vec *v, int32_t x);

/* Encodes one run of plain text (no special tokens), appending to out. */
int tok_spm_encode(const tok_tokenizer *t, const char *text, size_t n, int add_prefix,
                   tok_int_vec *out, lpk_error *err);
int tok_bpe_encode_word(const tok_tokenizer *t, const char *w, size_t n, tok_int_vec *out,
                        lpk_error *err);

/* Pre-tokenizer: compiles t->re from patterns; splits text into pieces and
 * calls tok_bpe_encode_word on each. */
int tok_regex_compile(tok_tokenizer *t, const char *const *pats, const uint64_t *lens, size_t n,
                      lpk_error *err);
void tok_regex_free(tok_tokenizer *t);
int tok_bpe_encode(const tok_tokenizer *t, const char *text, size_t n, tok_int_vec *out,
                   lpk_error *err);

/* ---------------------------------------------------------------- file parsers */
/* Each parser writes the tokenizer.* keys of docs/MODEL.md into meta and
 * names `name` in messages. */
/* SentencePiece ModelProto (protobuf wire format). */
int tok_spm_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                  lpk_error *err);
/* Meta's Llama 3 tiktoken file: "BASE64 RANK" per line. */
int tok_tiktoken_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                       lpk_error *err);
/* Hugging Face tokenizer.json (BPE model). */
/* llama2.c's tokenizer.bin (tok_llama2c.c); tok_is_llama2c: the whole buffer
 * parses as one. */
int tok_is_llama2c(const uint8_t *buf, size_t n);
int tok_llama2c_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                      lpk_error *err);
int tok_hfjson_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                     lpk_error *err);

/* GPT-2's byte-to-unicode map: the UTF-8 encoding (1 or 2 bytes) of the
 * printable code point that stands for byte b in byte-level BPE vocabularies.
 * Returns the number of bytes written to out[0..1]. */
int tok_byte_to_utf8(uint8_t b, char out[2]);

/* Sets key only when meta does not have it yet (tokenizer_config.json may have
 * been read first and wins). */
int tok_meta_default_bool(lpk_meta *meta, const char *key, int v);

/* Llama 3's pre-tokenizer pattern (Meta's tokenizer.py and tokenizer.json). */
extern const char tok_llama3_pattern[];
/* GPT-2's pattern (a ByteLevel pre-tokenizer with use_regex). */
extern const char tok_gpt2_pattern[];

#endif
