/* convert/ internal: PyTorch checkpoints (zip + pickle), Meta folders, HF
 * pytorch_model*.bin folders and archives of checkpoints. Not a public
 * header; only convert/ (and its tests) include it.
 *
 * Layers, bottom up:
 *   cv_pickle.c    restricted unpickler: a torch.save state dict -> tensor
 *                  descriptions (storage key, offset, shape, strides). Nothing
 *                  is executed; only whitelisted globals are accepted.
 *   cv_zip.c       zip records (local and central headers, zip64 extra
 *                  fields, data descriptors, end records) and the central
 *                  directory of a mapped zip: the one zip decoder, used by
 *                  cv_torchzip.c and by cv_archive.c's streaming walk.
 *   cv_torchzip.c  a torch file: the pickle resolved against the stored
 *                  data/N members.
 *   cv_meta.c      Meta folder (params.json + consolidated.NN.pth), shards
 *                  merged per tensor, as a cv_source.
 *   cv_hftorch.c   HF folder with pytorch_model*.bin, as a cv_source.
 *   cv_archive.c   .tar, .tar.gz, .tar.zst, .zip holding a checkpoint folder. */
#ifndef CV_TORCH_H
#define CV_TORCH_H

#include <stddef.h>
#include <stdint.h>

#include "cv_source.h"

/* ---------------------------------------------------------------- options */
typedef struct cv_torch_opts {
    uint32_t context_length;  /* 0: from the checkpoint, else 4096 */
    const char *spool_dir;    /* archives: folder for the temporary copy
                               * (the output's folder); NULL: "." */
    const char *tokenizer;    /* --tokenizer FILE, or NULL (HF .bin folders) */
    char *warn;               /* out (may be NULL): a non-fatal problem */
    size_t warn_n;
    char *note;               /* out (may be NULL): which files were chosen and why */
    size_t note_n;
} cv_torch_opts;

/* ---------------------------------------------------------------- pickle */
/* Element types of torch storages. */
enum cv_pt_stype {
    CV_PT_FLOAT, CV_PT_HALF, CV_PT_BFLOAT16, CV_PT_DOUBLE, CV_PT_LONG, CV_PT_INT,
    CV_PT_SHORT, CV_PT_CHAR, CV_PT_BYTE, CV_PT_BOOL, CV_PT_UNTYPED,
    CV_PT_STYPE_COUNT
};
/* Storage class name ("FloatStorage"), element size in bytes, and the lpk
 * type (LPK_TYPE_F32/F16/BF16) or -1 when llmpack cannot convert it. */
const char *cv_pt_stype_name(int stype);
int cv_pt_stype_size(int stype);
int cv_pt_stype_lpk(int stype);

#define CV_PK_MAX_DIMS 8

/* One entry of a state dict, as the pickle describes it. */
typedef struct cv_pk_tensor {
    char name[LPK_MAX_NAME + 1];
    int stype;                        /* enum cv_pt_stype */
    char key[64];                     /* storage key: the member ARCHIVE/data/KEY */
    int64_t storage_numel;            /* elements the storage declares */
    int64_t offset;                   /* storage offset, in elements */
    int n_dims;
    int64_t dims[CV_PK_MAX_DIMS];     /* outermost first */
    int64_t strides[CV_PK_MAX_DIMS];  /* in elements */
} cv_pk_tensor;

/* Interprets buf (n bytes, the data.pkl of a torch zip; path for messages) as
 * a state dict: a dict (or OrderedDict) mapping names to tensors. Only the
 * opcodes torch.save emits (protocols 2-4, binary forms) and whitelisted
 * globals (tensor/parameter rebuild functions, storage types, OrderedDict)
 * are accepted; anything else fails with LPK_EUNSUPPORTED (or LPK_ECORRUPT
 * for malformed bytes) naming the opcode or the global and its offset.
 * *out is malloc'ed (*n_out entries, in pickle order); free() it. */
int cv_pickle_state_dict(const uint8_t *buf, size_t n, const char *path, cv_pk_tensor **out,
                         size_t *n_out, lpk_error *err);

/* True when t's strides are row-major contiguous (size-1 dims ignored). */
int cv_pk_contiguous(const cv_pk_tensor *t);

/* ---------------------------------------------------------------- zip */
/* Record signatures (the first u32 of each record). */
#define CV_ZIP_LOCAL 0x04034b50u      /* local file header */
#define CV_ZIP_CENTRAL 0x02014b50u    /* central directory header */
#define CV_ZIP_DESCRIPTOR 0x08074b50u /* data descriptor (the signature is optional) */
#define CV_ZIP_END 0x06054b50u        /* end of central directory */
#define CV_ZIP_END64 0x06064b50u      /* zip64 end of central directory */
#define CV_ZIP_END64_LOC 0x07064b50u  /* zip64 end of central directory locator */
#define CV_ZIP_LOCAL_SIZE 30          /* a local header's fixed part (name, extra follow) */

/* A local file header's fixed part. Sizes read 0 when the descriptor flag
 * (bit 3) is set, 0xffffffff when the zip64 extra field holds them. */
typedef struct cv_zip_local {
    unsigned flag, method;
    uint64_t csize, usize;
    size_t name_len, extra_len;
} cv_zip_local;

/* Decodes the CV_ZIP_LOCAL_SIZE bytes at h; -1 when they do not start with
 * CV_ZIP_LOCAL. */
int cv_zip_local_read(const uint8_t *h, cv_zip_local *l);
/* The zip64 extended information field of the extra data x (xn bytes): each
 * of *usize, *csize, *off (in that order; NULL: not in this record) that
 * reads 0xffffffff is replaced by the field's next 64-bit value. *found: 1
 * when the field is there. Returns -1 when an extra field runs past xn or a
 * value that reads 0xffffffff has no 64-bit replacement (the ones before it
 * are replaced), else 0. */
int cv_zip64_extra(const uint8_t *x, size_t xn, uint64_t *usize, uint64_t *csize,
                   uint64_t *off, int *found);
/* A data descriptor from its crc at p (the optional signature is before p):
 * 4 + 8 bytes, or 4 + 16 with z64 (a member with a zip64 extra field). */
void cv_zip_descriptor_read(const uint8_t *p, int z64, uint64_t *csize, uint64_t *usize);

typedef struct cv_zip_entry {
    const char *name;     /* points into the mapping, name_len bytes, not NUL-terminated */
    size_t name_len;
    uint64_t hdr_off;     /* local file header offset */
    uint64_t csize, usize;
    unsigned method;      /* 0 = stored */
} cv_zip_entry;

/* Parses the central directory (zip64 included) of a zip held in buf
 * (size bytes). Every offset and length is checked against size.
 * *out is malloc'ed (*n_out entries, central directory order); free() it.
 * LPK_ETRUNC/LPK_ECORRUPT name the file and what is missing. */
int cv_zip_parse(const uint8_t *buf, uint64_t size, const char *path, cv_zip_entry **out,
                 size_t *n_out, lpk_error *err);
/* Offset of e's data, from its local header; checks the data lies in the file. */
int cv_zip_data_offset(const uint8_t *buf, uint64_t size, const char *path,
                       const cv_zip_entry *e, uint64_t *off, lpk_error *err);

/* ---------------------------------------------------------------- torch file */
typedef struct cv_pt_tensor {
    char name[LPK_MAX_NAME + 1];
    int stype;                 /* enum cv_pt_stype */
    int type;                  /* lpk type, or -1 (see cv_pt_stype_lpk) */
    int n_dims;                /* <= LPK_MAX_DIMS */
    int64_t dims[LPK_MAX_DIMS];
    const uint8_t *data;       /* into the file mapping; contiguous, little-endian */
    uint64_t nbytes;
} cv_pt_tensor;

typedef struct cv_torch_file {
    char path[4096];
    const uint8_t *map;
    uint64_t size;
    cv_pt_tensor *tensors;     /* in pickle order */
    size_t n_tensors;
} cv_torch_file;

/* Maps a torch.save zip file and resolves its state dict: every tensor's bytes
 * lie inside its storage member, strides are contiguous (else
 * LPK_EUNSUPPORTED naming the tensor), storages may be shared. The pre-1.6
 * pickle-only format fails with LPK_EUNSUPPORTED ("legacy torch format").
 * Nothing but the pickle is read here; tensor pages are touched on use. */
int cv_torch_file_open(const char *path, cv_torch_file **out, lpk_error *err);
/* The same over bytes the caller keeps alive (no mapping is owned). */
int cv_torch_file_open_mem(const char *name, const uint8_t *buf, uint64_t size,
                           cv_torch_file **out, lpk_error *err);
/* NULL if absent. */
const cv_pt_tensor *cv_torch_file_find(const cv_torch_file *f, const char *name);
/* Drops the mapped pages of [p, p + n) (madvise DONTNEED); data stays readable. */
void cv_torch_file_release(const cv_torch_file *f, const void *p, uint64_t n);
void cv_torch_file_close(cv_torch_file *f);  /* NULL is fine */

/* ---------------------------------------------------------------- sources */
/* Meta folder: params.json + consolidated.00.pth ... consolidated.NN.pth.
 * Shards are merged per tensor (wq/wk/wv/w1/w3/output along dim 0, wo/w2
 * along dim 1, tok_embeddings along dim 1, or dim 0 when a shard holds full
 * rows as LLaMA 3 does; 1-D norms replicated and checked equal). rope.freqs is
 * skipped (listed in the source's skipped). llama.* keys come from
 * params.json and the tensor shapes. Tokenizer keys are not set here. */
int cv_meta_open(const char *dir, const cv_torch_opts *opts, cv_source **out, lpk_error *err);
/* A one-shard Meta checkpoint known only by its pickle (archives stream the
 * data): s->tensors get canonical names, dtypes and shapes in the order of pk
 * (priv = index into pk; rope.freqs goes to s->skipped), s->meta the llama.*
 * keys from ppath (params.json) and the shapes, general.name from dir and
 * source.format "meta". pth names the checkpoint in messages. */
int cv_meta_describe(const char *dir, const char *ppath, const cv_pk_tensor *pk, size_t n,
                     const char *pth, const cv_torch_opts *opts, cv_source *s, lpk_error *err);
/* The tokenizer of a Meta folder: the given file, else tokenizer.model in dir,
 * else in dir's parent (Meta's download layout; *note says so, naming the
 * folder as label, NULL: dir); then Llama 3.1's special-token names and the
 * vocabulary completed against the embedding rows (cv_vocab_finish). No
 * tokenizer: *warn says so and the source keeps no tokenizer keys. */
int cv_meta_tokenizer(const char *dir, const char *label, const char *tokenizer, cv_source *s,
                      char *note, size_t note_n, char *warn, size_t warn_n, lpk_error *err);
/* True when dir looks like a Meta folder (params.json + consolidated.00.pth). */
int cv_meta_detect(const char *dir);

/* HF folder with pytorch_model.bin, or pytorch_model-*.bin shards (with
 * pytorch_model.bin.index.json, or all of them in name order without one):
 * config.json and tokenizer as for safetensors, q/k rows un-permuted,
 * *.rotary_emb.inv_freq skipped. Declared with the other readers in
 * cv_internal.h: int cv_hftorch_open(dir, const cv_torch_opts *, out, err). */

/* Checkpoint archives (.tar, .tar.gz, .tar.zst, .zip; files at the root or in
 * one top-level folder). HF safetensors and one-shard Meta layouts stream
 * (source.streaming; open_dir is not called). Otherwise the members are copied into a temporary folder in
 * opts->spool_dir (free space checked first; removed on close, on failure and
 * on SIGINT/SIGTERM) and that folder is opened with open_dir. The source's
 * files are the archive itself; general.name comes from the archive's name. */
typedef int (*cv_dir_open_fn)(const char *dir, const cv_torch_opts *opts, cv_source **out,
                              lpk_error *err);
int cv_archive_open(const char *path, const cv_torch_opts *opts, cv_dir_open_fn open_dir,
                    cv_source **out, lpk_error *err);
/* True when path names a regular file that is a tar (plain, gzip, zstd) or zip
 * archive and not a torch checkpoint (judged by content, not name). */
int cv_archive_detect(const char *path);

#endif
