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

/* ---------------------------------------------------------------- .lpk layout */
/* docs/FORMAT.md is the authority; these mirror it. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "llmpack's container code assumes a little-endian host"
#endif

#define LPK_MAGIC "\x89LPK\r\n\x1a\n"
#define LPK_MAGIC_LEN 8
#define LPK_FORMAT_VERSION 1u
#define LPK_HDR_SIZE 128
/* header field offsets */
#define LPK_H_VERSION 8
#define LPK_H_FLAGS 12
#define LPK_H_FILE_SIZE 16
#define LPK_H_HEADER_XXH3 24
#define LPK_H_META_OFFSET 32
#define LPK_H_META_SIZE 40
#define LPK_H_META_RAW_SIZE 48
#define LPK_H_META_COUNT 56
#define LPK_H_DIR_OFFSET 64
#define LPK_H_N_TENSORS 72
#define LPK_H_DATA_OFFSET 80
#define LPK_H_DATA_SIZE 88
#define LPK_H_RESERVED 96
/* header flags */
#define LPK_FLAG_META_ZSTD 1u
#define LPK_FLAGS_KNOWN LPK_FLAG_META_ZSTD
/* directory entry (fixed size) and its field offsets */
#define LPK_DIRENT_SIZE 320
#define LPK_D_NAME 0
#define LPK_D_TYPE 256
#define LPK_D_N_DIMS 260
#define LPK_D_DIMS 264
#define LPK_D_OFFSET 296
#define LPK_D_SIZE 304
#define LPK_D_XXH3 312
/* limits */
#define LPK_META_ZSTD_MIN 65536u              /* writer compresses metadata above this */
#define LPK_META_MAX ((uint64_t)1 << 28)      /* decoded metadata section, bytes */
#define LPK_META_MAX_KEYS 8192u
#define LPK_KEY_MAX 65535u
#define LPK_MAX_TENSORS 1000000u

/* The writer starts the writeback of its file every LPK_WB_CHUNK bytes it has
 * written (sync_file_range, lpk_writer.c), so the fsync at finish finds little
 * left to write. lpk_writer_writeback_started: the bytes from the file's start
 * whose writeback was started so far (0 for a caller's file, or where the
 * system has no such call; with LPK_WRITE_DIRECT, those written directly,
 * once the writer has gone buffered). */
#define LPK_WB_CHUNK ((uint64_t)32 << 20)
uint64_t lpk_writer_writeback_started(const lpk_writer *w);
/* A thread of the writer fdatasyncs its own (not scratch) file every
 * LPK_SYNC_CHUNK bytes written (lpk_writer.c, "early syncs"), so the fsync at
 * finish waits for little. lpk_writer_synced: the bytes from the file's start
 * a completed early sync covered (0 before the first, or without any).
 * LLMPACK_WRITE_SYNC_FAULT=eio (test hook) fails the first early sync with EIO. */
#define LPK_SYNC_CHUNK ((uint64_t)64 << 20)
uint64_t lpk_writer_synced(lpk_writer *w);

static inline uint64_t lpk_align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* xxh3-64 of the header+metadata+directory bytes buf[0, n) with the header's
 * header_xxh3 field counted as zero (n >= LPK_HDR_SIZE). */
uint64_t lpk_header_hash(const uint8_t *buf, uint64_t n);

/* ---------------------------------------------------------------- key/values (lpk_kv.c) */
/* Encodes every key of m in the metadata-section layout of docs/FORMAT.md.
 * *out is malloc'ed (*out_size bytes). */
int lpk_kv_encode(const lpk_meta *m, uint8_t **out, uint64_t *out_size, lpk_error *err);
/* Decodes exactly `count` entries filling all of buf[0, size) into m (which
 * must be empty). Offsets in messages are relative to the section; what names
 * the file and section. Duplicate keys, bad types, bools other than 0/1,
 * lengths past the end and trailing bytes are LPK_ECORRUPT. */
int lpk_kv_decode(const uint8_t *buf, uint64_t size, uint64_t count, lpk_meta *m,
                  const char *what, lpk_error *err);

#endif
