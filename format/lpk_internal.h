/* format/ internal: shared between the .lpk and GGUF readers/writers. Not a
 * public header: only format/ includes it. */
#ifndef LPK_INTERNAL_H
#define LPK_INTERNAL_H

#include "lpk.h"

/* ---------------------------------------------------------------- GGUF (gguf.c) */
/* Parses a whole GGUF file mapped at buf (size bytes; path for messages):
 * every count, length and offset checked against size and against overflow.
 * Fills meta with every key (GGUF value types = lpk_vtype), and *tensors (malloc'ed,
 * *n_tensors entries) with names, GGML type ids, dims converted to outermost-first
 * order, absolute offsets, sizes, data = buf + offset, has_xxh3 = 0. Unknown
 * GGML types: LPK_EUNSUPPORTED naming the tensor and type id. */
int gguf_parse(const uint8_t *buf, uint64_t size, const char *path, lpk_meta *meta,
               lpk_tensor **tensors, size_t *n_tensors, uint32_t *version, lpk_error *err);

/* Serialises a GGUF v3 header (magic, version, counts, every key of meta, tensor
 * infos with ne[] in GGML order and offsets relative to the data section) for
 * the declared tensors (name, type, n_dims, dims). Alignment: meta's
 * general.alignment if present, else 32... callers set it. Sets decls' offset
 * (absolute) and size. *hdr is malloc'ed; *hdr_size includes the padding up to
 * the data section start. */
int gguf_header_build(const lpk_meta *meta, lpk_tensor *decls, size_t n_tensors,
                      uint8_t **hdr, uint64_t *hdr_size, lpk_error *err);

#endif
