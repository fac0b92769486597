/* llmpack lib/: the jobs the llmpack command does, as a library API. Prefix
 * llmpack_. Uses every module below it (docs/ARCHITECTURE.md); cli/ is argument
 * parsing and printing over this header.
 *
 * Every job runs on a handle (llmpack_job) that carries what the caller wants
 * to hear (a progress callback, a notice callback), a way to stop it
 * (llmpack_job_cancel, from any thread or a signal handler) and, after a
 * failure, the status and a message naming the file and what is wrong
 * (llmpack_job_error), in the style of libarchive's archive_error_string.
 * A job returns LPK_OK or one of the LPK_E* status codes of format/lpk.h
 * (never two of them combined); the same status is on the handle. A
 * cancelled job returns LPK_EINTR and leaves no output behind. One handle
 * runs one job at a time; it can run several one after another. */
#ifndef LLMPACK_JOBS_H
#define LLMPACK_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"
#include "../convert/convert.h"
#include "../tok/tok.h"
#include "../verify/verify.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- the handle */
typedef struct llmpack_job llmpack_job;

/* A stage of a job begins, moves, or ends. Stages do not nest: a job ends one
 * before it begins the next. */
enum llmpack_progress_event {
    LLMPACK_PROGRESS_BEGIN = 1,
    LLMPACK_PROGRESS_UPDATE = 2,
    LLMPACK_PROGRESS_END = 3
};
typedef struct llmpack_progress {
    int event;            /* enum llmpack_progress_event */
    const char *stage;    /* what is going on: "converting", "export", "quantize", ... */
    const char *unit;     /* "B": done and total are bytes; else a count of unit */
    uint64_t done, total; /* total 0: not known */
    const char *item;     /* what is being worked on, or a figure ("ppl 5.86"); may be NULL */
} llmpack_progress;
typedef void (*llmpack_progress_fn)(void *user, const llmpack_progress *p);
/* Non-fatal things a user should know (a checkpoint converted on the fly, a
 * tokenizer missing), one sentence, no trailing newline. */
typedef void (*llmpack_notice_fn)(void *user, const char *msg);

/* A new handle (NULL when out of memory); free with llmpack_job_free. */
llmpack_job *llmpack_job_new(void);
void llmpack_job_free(llmpack_job *j);
/* Callbacks (NULL: none), called from the thread that runs the job. */
void llmpack_job_set_progress(llmpack_job *j, llmpack_progress_fn fn, void *user);
void llmpack_job_set_notice(llmpack_job *j, llmpack_notice_fn fn, void *user);
/* Asks the running (or the next) job to stop: it returns LPK_EINTR at its
 * next progress point (a tensor, a slice of a tensor, a chunk of text) and
 * removes what it was writing. Async-signal-safe. llmpack_job_reset clears it. */
void llmpack_job_cancel(llmpack_job *j);
int llmpack_job_cancelled(const llmpack_job *j);
/* The status of the last job run on j (LPK_OK before any) and its message
 * ("" when none). The message stays until the next job or reset. */
int llmpack_job_status(const llmpack_job *j);
const char *llmpack_job_error(const llmpack_job *j);
/* The error as format/'s struct, for code that passes it on. */
const lpk_error *llmpack_job_lpk_error(const llmpack_job *j);
/* Clears the status, the message and a cancellation. */
void llmpack_job_reset(llmpack_job *j);

/* ---------------------------------------------------------------- model inputs */
/* Output formats of convert, quantize and export. */
enum llmpack_format { LLMPACK_FMT_LPK = 1, LLMPACK_FMT_GGUF = 2 };

/* Opens a container (.lpk or GGUF) for reading with lpk_reader_open_flags;
 * a GGUF is also checked the way verify checks it (hyperparameters, required
 * tensors, shapes). *r is NULL on failure. */
int llmpack_open_input(llmpack_job *j, const char *path, unsigned flags, lpk_reader **r);
/* Opens any model: a container as llmpack_open_input does; anything convert
 * reads (a Hugging Face or Meta folder, a llama2.c .bin, an archive) is
 * converted first, at its source precision, into a memfd (or, when the
 * container would take more than LLMPACK_MEMFD_MAX bytes, by default half of
 * MemAvailable, into an unlinked file in TMPDIR), which the reader maps:
 * nothing is written at or beside path. A notice says so; progress stage
 * "converting" (bytes), during which the conversion's notices come. The
 * reader's path is `path`. */
int llmpack_open_model(llmpack_job *j, const char *path, unsigned flags, lpk_reader **r);
/* What llmpack_open_model would convert path as (cv_source_kind's name;
 * "folder" for a folder convert does not recognise), or NULL when it opens
 * path as a container: a file named .lpk or .gguf (any case), starting with a
 * container's magic, or that convert does not read. */
const char *llmpack_model_convert_kind(const char *path);
/* 1 when path starts with the magic of a GGUF or an .lpk. */
int llmpack_is_container(const char *path);
/* $TMPDIR, else /tmp. */
const char *llmpack_tmpdir(void);

/* A model file in words. type: the recipe recorded by quantize (quant.recipe,
 * "Q4_K_M"), else the recipe of general.file_type (llama.cpp's file type, as
 * GGUF files carry it), else the tensor type holding the most bytes ("F16");
 * type_from says which: "recipe", "file_type" or "tensors". bpw: tensor bits
 * over tensor elements. */
typedef struct llmpack_model_desc {
    char type[32];
    const char *type_from;
    uint64_t file_size, n_elements, tensor_bytes;
    double bpw;
} llmpack_model_desc;
void llmpack_model_describe(const lpk_reader *r, llmpack_model_desc *d);

/* ---------------------------------------------------------------- export */
typedef struct llmpack_export_opts {
    const char *in;        /* .lpk or GGUF */
    const char *out;       /* written to a temporary file beside it, renamed when complete */
    int format;            /* LLMPACK_FMT_GGUF: GGUF v3 for llama.cpp (format/'s mapping);
                            * LLMPACK_FMT_LPK: a container with in's keys and tensors as
                            * they are */
    const char *name;      /* general.name of a GGUF output whose input has none
                            * (NULL: in's file name without its extension) */
    const char *set_name;  /* general.name of the output whatever in has (NULL: keep) */
    int strip;             /* GGUF: drop llmpack-only keys (LPK_GGUF_STRIP) */
    int force;             /* replace an existing out */
    uint64_t max_size;     /* a larger output is LPK_ENOSPC before anything is written
                            * (0: no limit) */
} llmpack_export_opts;
typedef struct llmpack_export_result {
    size_t n_tensors, n_added, n_keys, n_dropped;
    uint64_t data_bytes;   /* tensor bytes written */
    uint64_t file_size;    /* of out (also set when max_size stopped the export) */
} llmpack_export_result;
/* Every tensor's checksum is verified on the way; progress stage "export"
 * (bytes). Nothing is left at out on failure. res may be NULL. */
int llmpack_export(llmpack_job *j, const llmpack_export_opts *o, llmpack_export_result *res);

/* ---------------------------------------------------------------- convert */
typedef struct llmpack_convert_opts {
    const char *src;          /* a Hugging Face or Meta folder, a llama2.c .bin, or a .tar /
                               * .tar.zst / .zip of a folder (cv_source_kind) */
    const char *out;          /* written to a temporary file beside it, renamed when complete */
    int format;               /* LLMPACK_FMT_LPK: a container; LLMPACK_FMT_GGUF: a container
                               * written to a temporary file beside out, then exported
                               * (llmpack_export, general.name default out's file name) and
                               * removed: twice out's size on disk for a while */
    const char *type;         /* NULL: the source precision (1-D tensors f32); "f32", "f16",
                               * "bf16" or a quant/ recipe ("q8_0", "q4_k_m", ...) */
    int pure;                 /* with type: that type for every 2-D tensor, no recipe */
    const char *imatrix;      /* an importance matrix file (llmpack calibrate, llama-imatrix)
                               * for type's scale searches, or NULL; needs type */
    const char *tokenizer;    /* a tokenizer file instead of the checkpoint's, or NULL */
    int no_tokenizer;         /* a checkpoint without a tokenizer is converted (else it is
                               * LPK_ENOTFOUND); not for GGUF outputs */
    uint32_t context_length;  /* 0: the checkpoint's */
    const char *name;         /* general.name (NULL: the model's own) */
    int hash_sources;         /* record the xxh3 of every input file */
    int threads;              /* 0: OpenMP's default */
    int force;                /* replace an existing out */
    /* NULL, or a quantize step (GPTQ, which needs the unquantized model): the
     * checkpoint is converted at its source precision into a temporary
     * container beside out, llmpack_quantize makes out from it (recipe type,
     * pure, force and format as given here; in is ignored; needs type, not with
     * imatrix), and the container is removed. */
    const struct llmpack_quantize_opts *quantize;
} llmpack_convert_opts;
typedef struct llmpack_convert_result {
    cv_report report;         /* convert/'s (bytes_out: of the container, also for a GGUF) */
    uint64_t file_size;       /* of out */
    struct llmpack_quantize_report *quantize; /* the quantize step's report (opts.quantize),
                                               * else NULL */
} llmpack_convert_result;
/* Converts o->src into o->out. Progress stage "convert" (bytes of source
 * tensors), then for a GGUF "export" (bytes), or the quantize step's stages.
 * Notices: the report's warning as
 * "warning: WARNING" (a tokenizer missing, added tokens dropped: a CLI prints it
 * even when asked to be quiet) and its note (which files were chosen), after
 * the conversion, also when it fails. Nothing is left at or beside out on
 * failure or cancellation. res (may be NULL) is filled as far as known, also
 * on failure; free it with llmpack_convert_result_free. */
int llmpack_convert(llmpack_job *j, const llmpack_convert_opts *o, llmpack_convert_result *res);
void llmpack_convert_result_free(llmpack_convert_result *res);

/* ---------------------------------------------------------------- tokenize, generate */
/* The tokenizer of path: a container, or a checkpoint folder or archive
 * (converted as llmpack_open_model does: the tokenizer convert completes from
 * the folder's files); anything else, a llama2.c .bin included, is read as a
 * tokenizer file (tok_load: SentencePiece or Llama 3 tokenizer.model, Hugging
 * Face tokenizer.json, llama2.c tokenizer.bin). *tok is NULL on failure; free
 * it with tok_tokenizer_free. */
int llmpack_open_tokenizer(llmpack_job *j, const char *path, tok_tokenizer **tok);

#define LLMPACK_GENERATE_MAX (1L << 20) /* the most tokens one run generates */
/* A token generated: its id and its text (len bytes, not NUL-terminated; len
 * 0 for a token without text of its own). Non-zero stops the run: LPK_EINTR. */
typedef int (*llmpack_token_fn)(void *user, int32_t id, const char *piece, size_t len);
typedef struct llmpack_generate_opts {
    const char *model;     /* anything llmpack_open_model opens */
    const char *prompt;    /* BOS is prepended */
    long n_predict;        /* at most this many tokens (0..LLMPACK_GENERATE_MAX); fewer at
                            * the end-of-sequence token */
    double temp;           /* 0: greedy; > 0: sampled from softmax(logits / temp) */
    uint64_t seed;         /* the sampling's seed: the same seed, the same tokens */
    int threads;           /* 0: OpenMP's default */
    llmpack_token_fn on_token; /* may be NULL */
    void *user;
} llmpack_generate_opts;
typedef struct llmpack_generate_result {
    size_t n_prompt;       /* the prompt's tokens, BOS included */
    long n_generated;
    double prompt_seconds; /* the prompt's forward pass */
    double gen_seconds;    /* the generation loop, on_token included */
} llmpack_generate_result;
/* Continues o->prompt: the prompt as one batch, then one token per step over
 * the KV cache. No progress stage of its own (on_token is called for each
 * token) but the model's "converting" when it is a checkpoint; a cancellation
 * is seen before each token. res may be NULL. */
int llmpack_generate(llmpack_job *j, const llmpack_generate_opts *o, llmpack_generate_result *res);

/* ---------------------------------------------------------------- quantize */
/* A container -> one or several outputs, each with a recipe's types (or, for
 * one output, the types a size target chooses), from one read of the input:
 * every tensor is read (its checksum verified) once, converted to f32 once,
 * and quantized, measured and written once per output. Every output's bytes
 * equal those of a run with that output alone. */
#define LLMPACK_QUANTIZE_MAX_OUTPUTS 16

/* What applies to every output of a run. Start from llmpack_quantize_opts_init. */
typedef struct llmpack_quantize_opts {
    const char *in;          /* container (.lpk or GGUF) */
    const char *imatrix;     /* importance matrix file (legacy or GGUF layout), or NULL */
    const char *calib_text;  /* calibration text, or NULL. Without imatrix or gptq: the
                              * importance matrix is computed from it (ctx 512) first;
                              * with gptq: GPTQ's Hessians; with a size target: each
                              * matrix's sensitivity (and the importance matrix unless
                              * imatrix is given) */
    int chunks;              /* chunks of 512 tokens of calib_text for the matrix or GPTQ
                              * (0: every whole chunk) */
    const char *name;        /* general.name of the outputs (NULL: in's) */
    int pure;                /* every 2-D tensor at the recipe's type (fallbacks apply) */
    int force;               /* replace existing outputs */
    int allow_requantize;    /* quantize already quantized tensors to another type
                              * (dequantized first; a notice per tensor) */
    int gptq;                /* GPTQ instead of round-to-nearest (needs calib_text) */
    double gptq_damp;        /* dampening, fraction of mean diag(H) (init: 0.01) */
    int gptq_order;          /* 0 none, 1 act-order, 2 block-act-order (quant.h's
                              * QUANT_GPTQ_ORDER_*) */
    int gptq_sequential;     /* each block's Hessians from the inputs the blocks before
                              * it give as quantized (one output only) */
    /* A size target instead of recipes (one output, its recipe NULL; needs
     * calib_text): at most target_bpw bits per weight over all tensors, or a file
     * of at most max_size bytes; 0: none (not both). */
    double target_bpw;
    uint64_t max_size;
    const char *target_label;  /* the limit as recorded in quant.target and the report
                                * ("bpw 4.5", "max-size 14MB"); NULL: made from the number */
    int calib_chunks;        /* chunks of calib_text for the sensitivities (init: 4) */
} llmpack_quantize_opts;
void llmpack_quantize_opts_init(llmpack_quantize_opts *o);

/* One output. */
typedef struct llmpack_quantize_out {
    const char *path;        /* written to a temporary file beside it, renamed when
                              * complete (a GGUF: a temporary container beside it,
                              * exported, then removed) */
    const char *recipe;      /* a recipe (quant_recipe_valid, any case); NULL with a
                              * size target */
    int format;              /* LLMPACK_FMT_LPK or LLMPACK_FMT_GGUF */
} llmpack_quantize_out;

/* Per tensor of one output. */
typedef struct llmpack_quantize_tensor {
    lpk_tensor in;           /* the input's declaration (data NULL) */
    int type;                /* its type in the output */
    uint64_t size;           /* its bytes in the output */
    int fallback_from;       /* the type its rows did not fit, else -1 */
    char note[128];          /* the plan's note, or "" */
    double sse, ssx;         /* 2-D tensors (has_err): squared error and squared values */
    int has_err;
    int no_entry;            /* the importance matrix had no entry: equal weights used */
} llmpack_quantize_tensor;

typedef struct llmpack_quantize_output {
    int written;             /* complete and renamed into place (also after a failure) */
    uint64_t file_size;      /* of the file written */
    llmpack_quantize_tensor *tensors;   /* n_tensors of the report, once planned */
} llmpack_quantize_output;

/* What a run did, for a report. Filled on success and on failure (outputs[k].
 * written says which outputs stay); free with llmpack_quantize_report_free. */
typedef struct llmpack_quantize_report {
    size_t n_out;
    llmpack_quantize_output *outputs;   /* n_out, in the order given */
    size_t n_tensors;        /* of the input */
    uint64_t in_bytes;       /* the input's tensor bytes */
    int gptq;                /* GPTQ was used */
    lpk_imatrix *imatrix;    /* the importance matrix used (read or computed), or NULL */
    char target[96];         /* a size target's label, or "" */
    uint64_t target_budget, target_bytes;   /* tensor bytes allowed and predicted */
    double target_error;     /* the plan's predicted KL divergence (sum over tensors) */
    double seconds;          /* from the first tensor read to the last output */
} llmpack_quantize_report;
void llmpack_quantize_report_free(llmpack_quantize_report *rep);   /* NULL is fine */

/* Quantizes o->in into the n_out outputs (1..LLMPACK_QUANTIZE_MAX_OUTPUTS).
 * Every output is checked before any work (an existing file without force:
 * LPK_EEXIST). At the end the outputs are completed and renamed into place in
 * order; a failure or a cancellation keeps those completed before it and
 * leaves nothing of the others (no file, no temporary file). Progress stages:
 * "calibrating" (chunks; the importance matrix from calib_text), "gptq
 * calibration" (chunks), "sensitivities" (a size target's: tensors looked
 * at, a step per 8 matrices measured), "quantize" (bytes of the input, item
 * the tensor), "export" (bytes, per GGUF output); each update is a
 * cancellation point. With GPTQ the blocks' calibration passes report inside
 * the quantize stage as updates of stage "gptq blocks" (chunks through blocks
 * of the whole model, item the token rate; each a cancellation point) and one
 * end of it, the quantize stage staying open: the one exception to stages not
 * nesting. Notices: the calibration, the
 * sensitivities, each tensor requantized. LPK_EINVAL: options that do not go
 * together, an unknown recipe, a tensor already quantized to another type
 * without allow_requantize; LPK_EINTR when cancelled. rep may be NULL. */
int llmpack_quantize(llmpack_job *j, const llmpack_quantize_opts *o,
                     const llmpack_quantize_out *outs, size_t n_out,
                     llmpack_quantize_report *rep);

/* The name quantize gives the files of a model in a folder (NAME in
 * DIR/NAME-TYPE.lpk): name when not NULL, else in's general.name, else in's
 * file name without its extension; letters, digits and . _ + - kept, any other
 * run of bytes one '-', no leading '.' or '-', no trailing '-', at most 100
 * bytes; "model" when nothing is left. buf holds n bytes (n >= 8). */
int llmpack_quantize_name(llmpack_job *j, const char *in, const char *name, char *buf,
                          size_t n);


/* ---------------------------------------------------------------- calibrate */
/* An importance matrix from calibration text, llama-imatrix's protocol
 * (calib/calib.h, calib_run): the fp32 reference pass over the text in chunks
 * of ctx tokens, and for every attention and feed-forward matrix and the
 * output matrix the per-column sum of squared inputs and their count (and,
 * unless no_cov, the 32x32 diagonal blocks of X^T X: calib_run). */
typedef struct llmpack_calibrate_opts {
    const char *model;       /* any model llmpack_open_model opens, f32/f16/bf16 weights */
    const char *text;        /* calibration text */
    const char *out;         /* the matrix to write: newer llama.cpp's GGUF layout when
                              * named .gguf, else llama.cpp b4748's legacy layout */
    int ctx;                 /* tokens per chunk (0: 512) */
    int chunks;              /* only the first chunks (0: every whole chunk) */
    int no_output;           /* leave out the output matrix (as llama-imatrix does) */
    int no_cov;              /* no cov32 blocks: llama-imatrix's entries only */
    int force;               /* replace an existing out */
} llmpack_calibrate_opts;
typedef struct llmpack_calibrate_result {
    lpk_imatrix *imatrix;    /* the matrix written (hash: of the file's bytes) */
    double seconds;          /* opening the model and the forward passes */
} llmpack_calibrate_result;
void llmpack_calibrate_result_free(llmpack_calibrate_result *res);   /* NULL is fine */

/* Progress stages "converting" (llmpack_open_model, when the model is no
 * container) and "calibrate" (chunks, item the token rate); each chunk is a
 * cancellation point. The file is written atomically: nothing at out on
 * failure. res (may be NULL) is filled on success; free it with
 * llmpack_calibrate_result_free. */
int llmpack_calibrate(llmpack_job *j, const llmpack_calibrate_opts *o,
                      llmpack_calibrate_result *res);


/* ---------------------------------------------------------------- verify */
/* Whether a file's bytes are checked against checksums as they are read. */
enum llmpack_checksums {
    LLMPACK_SUMS_NONE = 0,      /* a GGUF: it carries none, its bytes cannot be verified */
    LLMPACK_SUMS_SKIPPED = 1,   /* opened with LPK_OPEN_NO_VERIFY */
    LLMPACK_SUMS_VERIFIED = 2
};
/* The checksum state of an open reader. */
int llmpack_checksums_of(const lpk_reader *r);

/* The limits a verification can be held to (bits of llmpack_verify_opts.limits
 * and of llmpack_verify_model.exceeded). */
enum llmpack_verify_limit {
    LLMPACK_MAX_PPL_DELTA = 1,  /* ppl - ref_ppl */
    LLMPACK_MAX_PPL_RATIO = 2,  /* ppl / ref_ppl */
    LLMPACK_MAX_KLD = 4         /* mean KL(P_ref || P_model) */
};

typedef struct llmpack_verify_opts {
    const char *const *models;  /* n_models models: containers, or anything convert reads
                                 * (llmpack_open_model: converted in memory first) */
    int n_models;
    const char *ref;            /* the reference (NULL: none); its tokenizer tokenizes the
                                 * text (without one: the first model's) */
    const char *text;           /* the evaluation text (vf_read_text) */
    int ctx;                    /* tokens per chunk, at least 4 (0: 512) */
    int max_chunks;             /* only the first max_chunks chunks (0: all) */
    int threads;                /* > 0: omp_set_num_threads(threads) first (OpenMP's
                                 * setting of the calling thread, kept after the job);
                                 * results do not depend on it */
    unsigned limits;            /* LLMPACK_MAX_* bits: the maxima below that apply (need ref) */
    double max_ppl_delta, max_ppl_ratio, max_kld;
    int tensor_errors;          /* per-tensor rel. RMSE against ref's tensors (needs ref) */
    int kv_f16;                 /* the models' attention as llama.cpp's default f16 KV
                                 * cache computes it (VF_KV_F16_ATTN); the reference's
                                 * stays fp32 */
    int batch;                  /* chunks per forward pass (vf_eval_set_batch; 0: 2): the
                                 * same results, more memory (per extra chunk the logits
                                 * of ctx/2 positions and the state of ctx tokens) */
} llmpack_verify_opts;

/* One input of a verification (a model, or the reference). */
typedef struct llmpack_verify_model {
    const char *path;           /* the options' (borrowed); NULL: no reference */
    int opened;                 /* the file opened: desc and checksums are set */
    int loaded;                 /* and built as a model (vf_model_open): trained_ctx set */
    llmpack_model_desc desc;
    int checksums;              /* enum llmpack_checksums */
    int trained_ctx;            /* llama.context_length (0: not recorded or not loaded) */
    /* the measurements (models only), set once the result's measured is 1: */
    vf_ppl_result ppl;
    vf_chunk_result *chunks;    /* ppl.chunks entries, one per chunk */
    float *kld;                 /* the KLD of every scored position, in the order scored
                                 * (n_kld; NULL without a reference) */
    size_t n_kld;
    unsigned exceeded;          /* LLMPACK_MAX_* bits: the limits it exceeded (a value
                                 * that is not a number exceeds its limit) */
    vf_tensor_error *te;        /* n_te tensors, worst first (opts.tensor_errors); else NULL */
    size_t n_te;
} llmpack_verify_model;

/* What a verification found. Filled as the job goes, and on failure as far as
 * it got (what a report of a failed run shows); progress and notice callbacks
 * may read it: at the BEGIN of stage "evaluating" every input is open and the
 * text tokenized. Free with llmpack_verify_result_free whatever the job returned. */
typedef struct llmpack_verify_result {
    llmpack_verify_model ref;   /* ref.path NULL without a reference; no measurements */
    llmpack_verify_model *models; /* n_models, in the options' order */
    int n_models;
    int text_read;              /* text_bytes and text_xxh3 are set */
    uint64_t text_bytes;        /* of the file (the protocol drops one trailing newline) */
    uint64_t text_xxh3;         /* XXH3-64 of the file's bytes */
    int tokenized;              /* n_tokens and n_chunks are set */
    size_t n_tokens;            /* the whole text, BOS included */
    int n_chunks;               /* chunks to evaluate */
    int ctx, threads;           /* as run (threads: omp_get_max_threads) */
    int measured;               /* every model's ppl, chunks and kld are set */
    int chunks;                 /* chunks evaluated */
    uint64_t tokens_scored;     /* positions scored per model */
    int limit_exceeded;         /* some model exceeded a limit (the job still returns LPK_OK) */
} llmpack_verify_result;

/* Perplexity of each model on the text (llama.cpp's protocol, docs/VERIFY.md)
 * and, with a reference, their divergence from it (vf_eval). Progress: stage
 * "converting" (bytes) for each input convert reads; then "evaluating" in text
 * tokens (total chunks x ctx), updated after each block of each forward pass
 * and at each chunk's end with the first model's statistics so far as the item
 * ("ppl 5.8614 (ref 5.8585), kld 0.000893"); each update is a cancellation
 * point. Notices: the conversions, and "warning: --ctx N is above the T tokens
 * PATH was trained on" (measured anyway). Errors name the file: a model that
 * does not load, a vocabulary unlike the reference's, a text shorter than one
 * chunk (LPK_EINVAL). A limit exceeded is not an error (res->limit_exceeded). */
int llmpack_verify(llmpack_job *j, const llmpack_verify_opts *o, llmpack_verify_result *res);
void llmpack_verify_result_free(llmpack_verify_result *res);

/* ---------------------------------------------------------------- check */
typedef struct llmpack_check_opts {
    const char *path;           /* .lpk or GGUF */
} llmpack_check_opts;
typedef struct llmpack_check_result {
    int opened;                 /* the file opened (its header, metadata and directory are
                                 * sound): the fields below are set */
    int kind;                   /* LPK_KIND_LPK or LPK_KIND_GGUF */
    int checksums;              /* enum llmpack_checksums (never SKIPPED: check verifies) */
    size_t n_tensors;
    size_t tensors_checked;     /* tensors found intact */
    int failed;                 /* a tensor failed: its name and offset below */
    char tensor[LPK_MAX_NAME + 1];
    uint64_t offset;
} llmpack_check_result;
/* Every structural rule of docs/FORMAT.md and every checksum: the header's,
 * then each tensor's xxh3 in file order, stopping at the first tensor that
 * fails (LPK_ECHECKSUM, the message naming the tensor, its offset, the
 * expected and found values). A GGUF's structure is checked (it has no
 * checksums). Progress stage "checking" (bytes; the item: the tensor). res
 * may be NULL. */
int llmpack_check(llmpack_job *j, const llmpack_check_opts *o, llmpack_check_result *res);

/* ---------------------------------------------------------------- info */
typedef struct llmpack_info_opts {
    const char *path;           /* .lpk or GGUF, opened with lpk_reader_default_flags() */
} llmpack_info_opts;

/* The metadata keys under a prefix, in the file's order. */
typedef struct llmpack_key_group {
    const lpk_kv **kv;          /* n keys (NULL when none) */
    size_t n;
    size_t prefix_len;          /* kv[i]->key + prefix_len: the key under the prefix */
} llmpack_key_group;

typedef struct llmpack_special_token {
    const char *name;           /* "bos", "eos", "eot", "pad" */
    const char *key;            /* "tokenizer.ggml.bos_token_id", ... */
    int has;                    /* the file records it: id */
    uint32_t id;
    int has_piece;              /* id is in the vocabulary: piece is its text (raw bytes) */
    lpk_str piece;
} llmpack_special_token;

/* A model file described: what `llmpack info` shows, as data. The pointers
 * (keys, strings, pieces) point into r's metadata: valid until
 * llmpack_info_result_free. */
typedef struct llmpack_info_result {
    lpk_reader *r;              /* the open file (owned): metadata and tensor directory */
    int kind;                   /* LPK_KIND_LPK or LPK_KIND_GGUF */
    uint32_t version;           /* format version */
    int metadata_compressed;    /* the metadata is zstd-compressed */
    int checksums;              /* enum llmpack_checksums */
    llmpack_model_desc desc;    /* type in words, file size, elements, bytes, bits per weight */
    size_t n_tensors;
    uint64_t type_count[LPK_TYPE_COUNT]; /* tensors of each type */
    const char *arch;           /* general.architecture (NULL: none) */
    const char *name;           /* general.name (NULL: none) */
    char arch_prefix[72];       /* "ARCH." ("llama." without an architecture): the
                                 * hyperparameters' keys */
    int tied_output;            /* no output.weight: the token embedding is the output matrix */
    int output_type;            /* output.weight's type (-1 when tied) */
    const lpk_kv *context_length;   /* ARCH.context_length (NULL: absent) */
    const lpk_kv *rope_freq_base;   /* ARCH.rope.freq_base */
    llmpack_key_group rope_scaling; /* ARCH.rope.scaling.* */
    llmpack_special_token special[4]; /* bos, eos, eot, pad */
    int chat_template;          /* tokenizer.chat_template is a string ... */
    uint64_t chat_template_bytes; /* ... of this many bytes */
    /* how it was quantized: quantize's keys (quant.*), llama.cpp's imatrix keys */
    const lpk_kv *quant_recipe, *quant_pure; /* NULL: absent */
    const char *quant_method;   /* quant.method; "rtn" when only a recipe is recorded; NULL:
                                 * no record of quantize */
    llmpack_key_group imatrix;  /* quant.imatrix.*, else quantize.imatrix.* */
    llmpack_key_group gptq;     /* quant.gptq.* */
    llmpack_key_group target;   /* quant.target.* */
} llmpack_info_result;
/* Opens path (llmpack_open_input) and describes it. No progress. res is
 * zeroed first; free it with llmpack_info_result_free whatever this returns. */
int llmpack_info(llmpack_job *j, const llmpack_info_opts *o, llmpack_info_result *res);
void llmpack_info_result_free(llmpack_info_result *res);

#ifdef __cplusplus
}
#endif

#endif
