/* llmpack convert/: checkpoint readers (Hugging Face, Meta, llama2.c, archives)
 * and the convert pipeline into a container. Prefix cv_. Depends on quant/, tok/ and
 * format/. */
#ifndef CONVERT_H
#define CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- convert */
/* Called while tensors are written: bytes of source tensors done / total.
 * A non-zero return stops the conversion: cv_convert returns LPK_EINTR
 * ("OUT: cancelled") and leaves nothing at out. */
typedef int (*cv_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct cv_options {
    const char *src;          /* HF / Meta folder, llama2.c .bin, or an archive */
    const char *out;          /* .lpk to write (atomically) */
    const char *type;         /* NULL: keep source precision (1-D always f32);
                               * "f32" | "f16" | "bf16" | a quant/ recipe ("q8_0", "q4_k_m", ...) */
    int pure;                 /* recipes: one type for every 2-D tensor */
    const char *tokenizer;    /* tokenizer file overriding the folder's, or NULL */
    uint32_t context_length;  /* 0: from the checkpoint */
    const char *name;         /* general.name; NULL: the model's own (config.json's
                                 _name_or_path, else the folder or file name) */
    int hash_sources;         /* add source.xxh3 (one sequential read of each input) */
    int threads;              /* 0: OpenMP's default */
    int force;                /* replace an existing output */
    int scratch;              /* out is an intermediate the caller removes once read: not
                               * fsynced (LPK_WRITE_SCRATCH) */
    int no_tokenizer;         /* convert a checkpoint that has no tokenizer (else
                               * that is bad input: LPK_ENOTFOUND) */
    cv_progress_fn progress;  /* may be NULL */
    void *progress_ctx;
    /* Importance matrix for the recipe's scale searches (NULL: none), checked
     * against the model's tensors (LPK_ECORRUPT naming an entry that does not
     * fit) and recorded in the metadata (lpk_imatrix_record) with
     * imatrix_path. Ignored without a block-type recipe. */
    const lpk_imatrix *imatrix;
    const char *imatrix_path;
    /* Archives that must be unpacked (docs/CONVERT.md) go into a temporary
     * folder here; NULL: the output's folder. */
    const char *spool_dir;
    /* Non-NULL: the container goes into a file the caller provides instead of
     * out (nothing is created at out, which only names the result in messages;
     * force is ignored). Called once, when the tensors' total size is known
     * (tensor_bytes; the container adds its header and padding, a few KiB per
     * 100 tensors), it returns a file open for reading and writing (a memfd,
     * an unlinked temporary file) that cv_convert writes from offset 0 and
     * does not close, or -1 with err set. On failure its content is undefined. */
    int (*out_fd)(void *ctx, uint64_t tensor_bytes, lpk_error *err);
    void *out_fd_ctx;
} cv_options;

typedef struct cv_report {
    char source_format[32];   /* "hf-safetensors", "meta", "llama2c", ... */
    size_t n_tensors;         /* written */
    uint64_t bytes_in;        /* bytes of source tensors read */
    uint64_t bytes_out;       /* size of the written file */
    int tied;                 /* output.weight absent: token_embd is the output matrix */
    char **skipped;           /* source.skipped_tensors (n_skipped) */
    size_t n_skipped;
    size_t n_by_type[LPK_TYPE_COUNT];  /* tensors written per type */
    char warning[1024];       /* non-fatal problems ("no tokenizer ...", dropped
                               * added tokens), or "" */
    char tokenizer[4096];     /* the tokenizer file used, or "" */
    char note[512];           /* which files were chosen and why, or "" */
    char **no_imatrix;        /* quantized without an importance-matrix entry (n_no_imatrix) */
    size_t n_no_imatrix;
} cv_report;

/* What cv_convert would read at path: "hf-safetensors", "hf-pytorch",
 * "meta", "llama2c" or "archive" (from the folder's files, the name or the
 * first bytes; nothing is read beyond that), or NULL when it is none of them. */
const char *cv_source_kind(const char *path);

/* Converts o->src into o->out. On failure nothing is left at o->out (an
 * existing file is kept unless the new one is complete) and err names the
 * file, the tensor and what is wrong: LPK_ENOTFOUND / ECORRUPT / ETRUNC /
 * EUNSUPPORTED / EBADVALUE for bad input, EINVAL for bad options, EIO / ENOSPC
 * / ENOMEM / EEXIST / EINTR otherwise. report (may be NULL) is filled even on
 * failure as far as known; free it with cv_report_free. */
int cv_convert(const cv_options *o, cv_report *report, lpk_error *err);
void cv_report_free(cv_report *r);

#ifdef __cplusplus
}
#endif
#endif
