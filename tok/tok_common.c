/* Helpers of the tokenizer files above them (tok_load.c, tok_spm_proto.c,
 * tok_hfjson.c, tok_vocab.c, tok_merge.c): the split patterns, GPT-2's byte
 * map, a metadata default, the id vector and the vocabulary lookup. This file
 * calls nothing else in tok/. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

/* Meta's llama3/tokenizer.py (and the pre_tokenizer of Llama 3's tokenizer.json). */
const char tok_llama3_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int tok_byte_to_utf8(uint8_t b, char out[2])
{
    /* Printable Latin-1 bytes stand for themselves; the other 68 bytes map, in
     * order, to U+0100.. (GPT-2's bytes_to_unicode). */
    uint32_t cp;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae) {
        cp = b;
    } else {
        uint32_t k = 0;
        for (uint32_t x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae)) k++;
        cp = 0x100 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

int tok_meta_default_bool(lpk_meta *meta, const char *key, int v)
{
    if (lpk_meta_find(meta, key)) return LPK_OK;
    return lpk_meta_set_bool(meta, key, v);
}

/* GPT-2's pattern: what a ByteLevel pre-tokenizer with use_regex splits by
 * (also the default of byte-level GGUF files without tokenizer.pre_regex). */
const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int tok_ivec_push(tok_int_vec *v, int32_t x)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 256;
        int32_t *nv = realloc(v->v, nc * sizeof *nv);
        if (!nv) return LPK_ENOMEM;
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = x;
    return LPK_OK;
}

int32_t tok_strmap_find(const tok_tokenizer *t, const char *s, size_t n)
{
    for (size_t i = XXH3_64bits(s, n) & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
        int32_t id = t->vocab.slot[i];
        if (id < 0) return -1;
        if (t->key_len[id] == n && !memcmp(t->key_pool + t->key_off[id], s, n)) return id;
    }
}
