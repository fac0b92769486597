/* convert/ internal: the tokenizer file parsers behind cv_tokenizer_load_mem().
 * Not a public header; only convert/ includes it. Each parser writes the
 * tokenizer.* keys of docs/MODEL.md into meta and names `name` in messages. */
#ifndef CV_TOK_H
#define CV_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"

/* SentencePiece ModelProto (protobuf wire format). */
int cv_spm_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                 lpk_error *err);
/* Meta's Llama 3 tiktoken file: "BASE64 RANK" per line. */
int cv_tiktoken_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                      lpk_error *err);
/* Hugging Face tokenizer.json (BPE model). */
int cv_hfjson_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                    lpk_error *err);

/* GPT-2's byte-to-unicode map: the UTF-8 encoding (1 or 2 bytes) of the
 * printable code point that stands for byte b in byte-level BPE vocabularies.
 * Returns the number of bytes written to out[0..1]. */
int cv_byte_to_utf8(uint8_t b, char out[2]);

/* Sets key only when meta does not have it yet (tokenizer_config.json may have
 * been read first and wins). */
int cv_meta_default_bool(lpk_meta *meta, const char *key, int v);

/* Llama 3's pre-tokenizer pattern (Meta's tokenizer.py and tokenizer.json). */
extern const char cv_llama3_pattern[];

#endif
