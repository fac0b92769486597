/* convert/ internal: a checkpoint source, the seam between readers
 * (safetensors, torch zip+pickle, Meta shards, llama2.c, archives) and the
 * convert pipeline. Not a public header; only convert/ includes it. */
#ifndef CV_SOURCE_H
#define CV_SOURCE_H

#include <stdint.h>

#include "../format/lpk.h"

/* One tensor as the source presents it, already merged across shards.
 * Names are canonical GGUF LLaMA names (token_embd.weight, blk.N.attn_q.weight,
 * ...); q/k rows are in Meta's interleaved RoPE order (readers of HF layouts
 * un-permute). dtype is LPK_TYPE_F32, LPK_TYPE_F16 or LPK_TYPE_BF16. */
typedef struct cv_tensor {
    char name[LPK_MAX_NAME + 1];
    char src_name[LPK_MAX_NAME + 1]; /* name in the checkpoint, for messages */
    int dtype;
    int n_dims;
    int64_t dims[LPK_MAX_DIMS];      /* outermost first */
    void *priv;                      /* reader-private */
} cv_tensor;

typedef struct cv_source cv_source;

enum { CV_TIE_UNKNOWN = 0, CV_TIE_TIED = 1, CV_TIE_UNTIED = 2 };

typedef struct cv_source_ops {
    /* Copies rows [row0, row0 + nrows) of t (row = innermost dim; a 1-D tensor
     * is one row) into dst, in t->dtype, little-endian, rows contiguous.
     * Sources that stream (archives) require tensors in listed order and rows
     * ascending; random-access sources accept any order. */
    int (*read_rows)(cv_source *s, const cv_tensor *t, int64_t row0, int64_t nrows,
                     void *dst, lpk_error *err);
    /* The pipeline is done with t: the source may drop its pages/buffers. */
    void (*release)(cv_source *s, const cv_tensor *t);
    void (*close)(cv_source *s);
} cv_source_ops;

struct cv_source {
    const cv_source_ops *ops;
    cv_tensor *tensors;   /* in the order the pipeline should write them */
    size_t n_tensors;
    lpk_meta *meta;       /* general.*, llama.*, tokenizer.*, source.* keys */
    char path[4096];      /* what the user gave, for messages */
    int tie_hint;         /* what the config says: CV_TIE_UNKNOWN (0), _TIED, _UNTIED */
    int streaming;        /* 1: read tensors only in listed order, rows ascending
                           * (archives); the pipeline then keeps the order and
                           * does not compare output.weight with token_embd */
    char **files;         /* full paths of the input files (--hash-sources); when
                           * none, the pipeline keeps meta's source.files and
                           * hashes them relative to path */
    size_t n_files;
    char **skipped;       /* checkpoint names of tensors the model does not need
                           * (merged with meta's source.skipped_tensors) */
    size_t n_skipped;
    char tokenizer[4096]; /* the tokenizer file loaded (cv_load_tokenizer), or "" */
};

/* Helpers for source implementations (convert/cv_source.c). */
/* Appends a copy of path to s->files. */
int cv_source_add_file(cv_source *s, const char *path, lpk_error *err);
/* Appends a copy of src_name to s->skipped (-> source.skipped_tensors). */
int cv_source_add_skipped(cv_source *s, const char *src_name, lpk_error *err);
/* Frees tensors, meta, files and skipped (not s itself, not tensors' priv). */
void cv_source_free_base(cv_source *s);

#endif
