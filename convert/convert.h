/* llmpack convert/: checkpoint readers (Hugging Face, Meta, llama2.c, archives)
 * and the convert pipeline into a container. Prefix cv_. Depends on quant/ and
 * format/. */
#ifndef CONVERT_H
#define CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- tokenizers */
/* Reads a tokenizer file into tokenizer.* keys of meta (docs/MODEL.md):
 * SentencePiece `tokenizer.model` (protobuf), Meta's Llama 3 `tokenizer.model`
 * (tiktoken: base64 token + rank per line), or HF `tokenizer.json`. The kind is
 * detected from the content. `name` is used in messages. */
int cv_tokenizer_load(const char *path, lpk_meta *meta, lpk_error *err);
int cv_tokenizer_load_mem(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                          lpk_error *err);
/* HF tokenizer_config.json: add_bos_token, add_eos_token, chat_template. */
int cv_tokenizer_config_load_mem(const char *name, const uint8_t *buf, size_t n,
                                 lpk_meta *meta, lpk_error *err);

/* ---------------------------------------------------------------- convert */
/* The convert pipeline API is declared below by convert/. */

#ifdef __cplusplus
}
#endif
#endif
