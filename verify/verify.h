/* llmpack verify/: tokenizers, the reference (fp32) and int8 forward passes,
 * perplexity and divergence. Prefix vf_. Depends on quant/ and format/. */
#ifndef VERIFY_H
#define VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- tokenizer */
/* Built from a container's tokenizer.* metadata (see docs/MODEL.md):
 * tokenizer.ggml.model "llama" = SentencePiece BPE, "gpt2" = byte-level BPE. */
typedef struct vf_tokenizer vf_tokenizer;

int vf_tokenizer_new(const lpk_meta *meta, vf_tokenizer **out, lpk_error *err);
void vf_tokenizer_free(vf_tokenizer *t);   /* NULL is fine */
int32_t vf_tokenizer_n_vocab(const vf_tokenizer *t);
int32_t vf_tokenizer_bos(const vf_tokenizer *t);   /* -1 if none */
int32_t vf_tokenizer_eos(const vf_tokenizer *t);   /* -1 if none */
/* Encodes n bytes of text; prepends BOS when add_bos. *ids is malloc'ed (caller
 * frees), *n_ids its length. Special-token text is not parsed as special tokens
 * unless parse_special. */
int vf_encode(const vf_tokenizer *t, const char *text, size_t n, int add_bos, int parse_special,
              int32_t **ids, size_t *n_ids, lpk_error *err);
/* The bytes of one token as text (byte tokens give their byte, SentencePiece's
 * U+2581 becomes a space, byte-level BPE is unmapped). Returns the number of bytes
 * written (at most cap), or a negative status. */
int vf_decode_token(const vf_tokenizer *t, int32_t id, char *buf, size_t cap);

/* ---------------------------------------------------------------- model */
/* The forward pass, perplexity and divergence API is declared below by verify/. */

#ifdef __cplusplus
}
#endif
#endif
