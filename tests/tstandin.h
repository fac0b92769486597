/* Stand-in tokenizers for a checkout without ../shared: files of the real
 * Llama 2 / Llama 3 tokenizers' shapes (vocabulary sizes, special pieces at
 * their real ids, the published file formats) whose ordinary pieces are made
 * up. What does not depend on the real pieces (special ids, token kinds,
 * padding, metadata carried through) can be checked on them; the real pieces,
 * scores and merges cannot. */
#ifndef TSTANDIN_H
#define TSTANDIN_H

#include <stddef.h>

/* Piece `id` (0..31999) of the Llama 2 stand-in: <unk>, <s>, </s> and the 256
 * byte pieces <0x00>..<0xFF> as Llama 2's tokenizer.model has them (ids 0..258,
 * score 0, SentencePiece types UNKNOWN=2, CONTROL=3, CONTROL, BYTE=6), then
 * made-up ordinary pieces (type NORMAL=1) scored -1, -2, ... */
void ts_llama2_piece(int id, char *out, size_t cap, float *score, int *type);

/* ../shared/rel when it exists; else, for the tokenizers ../shared holds
 * (tokenizers/llama2/tokenizer.model, tokenizers/llama3/tokenizer.json,
 * tokenizers/llama3/tokenizer_config.json), the stand-in, written once per
 * process into a temporary folder removed at exit, and *standin set to 1.
 * Fails the test for any other rel that is absent. The string is valid until
 * the next call. */
const char *ts_tokenizer(const char *rel, int *standin);

#endif
