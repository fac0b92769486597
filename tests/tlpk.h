/* Container fixtures shared by the format and CLI suites: metadata holding
 * every value type, one tensor of every type, deterministic tensor bytes. */
#ifndef TLPK_H
#define TLPK_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"

/* Metadata with every scalar type, strings (empty, with embedded NULs), arrays of
 * every element type incl. strings with NULs and empty arrays. `big` adds a
 * tokenizer-sized string array (n_big strings) so the section gets compressed. */
lpk_meta *tl_meta_all_types(uint64_t n_big);
/* One tensor per storable type (1..4 dims); returns the count (<= 16). */
size_t tl_decls_all_types(lpk_tensor *decls);
/* Byte j of tensor i's deterministic content. */
uint8_t tl_byte(size_t i, uint64_t j);
/* Writes decls with tl_byte() content, in chunks of `chunk` bytes. Returns the
 * first failing status (err says why). */
int tl_write(const char *path, const lpk_meta *m, const lpk_tensor *decls, size_t n,
             unsigned flags, size_t chunk, lpk_error *err);
/* Asserts that two stores hold the same keys in the same order with identical
 * types and bytes. */
void tl_assert_meta_equal(const lpk_meta *a, const lpk_meta *b);

#endif
