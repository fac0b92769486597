/* llmpack tok/: tokenizers. Loads tokenizer files of any source into a
 * container's tokenizer.* metadata (docs/MODEL.md), builds a tokenizer from
 * that metadata, encodes and decodes. Prefix tok_. Depends on format/ only. */
#ifndef TOK_H
#define TOK_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- files -> metadata */
/* Reads a tokenizer file into tokenizer.* keys of meta (docs/MODEL.md):
 * SentencePiece `tokenizer.model` (protobuf), Meta's Llama 3 `tokenizer.model`
 * (tiktoken: base64 token + rank per line), HF `tokenizer.json`, or llama2.c's
 * `tokenizer.bin`. The kind is detected from the content. `name` is used in
 * messages. */
int tok_load(const char *path, lpk_meta *meta, lpk_error *err);
int tok_load_mem(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                 lpk_error *err);
/* HF tokenizer_config.json: add_bos_token, add_eos_token, chat_template. */
int tok_config_load_mem(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                        lpk_error *err);

/* ---------------------------------------------------------------- metadata -> tokenizer */
/* Built from a container's tokenizer.* metadata (see docs/MODEL.md):
 * tokenizer.ggml.model "llama" = SentencePiece BPE, "gpt2" = byte-level BPE. */
typedef struct tok_tokenizer tok_tokenizer;

int tok_tokenizer_new(const lpk_meta *meta, tok_tokenizer **out, lpk_error *err);
void tok_tokenizer_free(tok_tokenizer *t);   /* NULL is fine */
int32_t tok_tokenizer_n_vocab(const tok_tokenizer *t);
int32_t tok_tokenizer_bos(const tok_tokenizer *t);   /* -1 if none */
int32_t tok_tokenizer_eos(const tok_tokenizer *t);   /* -1 if none */
/* Encodes n bytes of text; prepends BOS when add_bos. *ids is malloc'ed (caller
 * frees), *n_ids its length. Special-token text is not parsed as special tokens
 * unless parse_special. */
int tok_encode(const tok_tokenizer *t, const char *text, size_t n, int add_bos,
               int parse_special, int32_t **ids, size_t *n_ids, lpk_error *err);
/* Encoding a text in pieces (docs/TOKENIZER.md, "Encoding a text in pieces"):
 * tok_cut_point(t, text, n) is the last place p (3 <= p < n) where text may be
 * cut: tok_encode of text[0..p) followed by tok_encode_cont of text[p..) gives
 * the ids tok_encode gives for the whole, whatever follows text[n-1] (the rule
 * looks at text[p] but not past it). 0 when text[0..n) has no such place, and
 * always when !tok_tokenizer_can_cut(t) (a tokenizer the rule is not proven
 * for: encode such a text whole). */
int tok_tokenizer_can_cut(const tok_tokenizer *t);
size_t tok_cut_point(const tok_tokenizer *t, const char *text, size_t n);
/* tok_encode of a text that continues one cut at a tok_cut_point: no BOS, no
 * SentencePiece dummy prefix at its start. */
int tok_encode_cont(const tok_tokenizer *t, const char *text, size_t n, int parse_special,
                    int32_t **ids, size_t *n_ids, lpk_error *err);
/* The bytes of one token as text (byte tokens give their byte, SentencePiece's
 * U+2581 becomes a space, byte-level BPE is unmapped). Returns the number of bytes
 * written (at most cap), or a negative status. */
int tok_decode_token(const tok_tokenizer *t, int32_t id, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
