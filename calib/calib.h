/* llmpack calib/: calibration. Runs verify/'s fp32 forward pass over a text
 * and collects, for every 2-D weight the quantizers touch, statistics of the
 * activations that multiply it (importance matrices, llama-imatrix's
 * protocol). Prefix calib_. Depends on verify/, tok/ and format/ (and so on quant/
 * only through them); nothing below includes this header. See docs/QUANT.md,
 * "Importance matrices". */
#ifndef CALIB_H
#define CALIB_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"
#include "../tok/tok.h"
#include "../verify/verify.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called after each chunk: done of total chunks, tokens run so far and the
 * seconds spent in the forward pass. Non-zero stops the run (calib_run,
 * calib_reader, calib_gptq_collect): LPK_EINTR ("TEXT: cancelled"), nothing
 * returned. */
typedef int (*calib_progress_fn)(void *user, int done, int total, uint64_t tokens,
                                 double seconds);

typedef struct calib_opts {
    int ctx;                  /* tokens per chunk; 0: 512 */
    int max_chunks;           /* 0: every whole chunk of the text */
    int no_output;            /* 1: leave out the output matrix (llama-imatrix's default) */
    int no_cov;               /* 1: no cov32 blocks (llama-imatrix's entries only) */
    const char *dataset;      /* recorded as the matrix's dataset name (may be NULL) */
    calib_progress_fn progress;   /* may be NULL */
    void *user;
    size_t text_block;        /* calib_reader: bytes of text read at a time (calib_text_open) */
} calib_opts;

/* Collects an importance matrix over tokens (the whole calibration text
 * tokenized with BOS first), llama-imatrix's protocol: chunks of ctx
 * consecutive tokens (the remainder dropped), the first token of each set to
 * bos (if >= 0), each chunk one batch from position 0; for attention q/k/v/o,
 * feed-forward gate/up/down (and the output matrix unless no_output) the sum
 * over every token of the squared input per column, the token count and the
 * chunk count. The model must hold f32/f16/bf16 2-D weights (the fp32
 * reference pass; LPK_EUNSUPPORTED otherwise). Entries are named by GGUF
 * names (blk.0.attn_q.weight; the output matrix output.weight, or
 * token_embd.weight when the model is tied) in forward-pass order. Sums are
 * accumulated in token order on one thread: the result does not depend on
 * the thread count. As llama-imatrix (with llama.cpp's default f16 KV cache)
 * computes them: keys and values are rounded to f16 in the cache during the
 * run, and the sums are floats added token by token. So the values equal
 * llama-imatrix's to float rounding (a few 1e-6 relative on llama2-20m).
 * Unless o->no_cov, every entry whose rows are a multiple of 32 long also gets
 * its input's cov32 blocks (lpk_imatrix_entry): the 32x32 diagonal blocks of
 * X^T X, each value summed in token order in double (products of two floats,
 * exact), so bit for bit calib_gptq_hessian's entries rounded to float, on any
 * thread count; made once per input (q/k/v and gate/up get equal copies).
 * Memory: 4.5 KB per 32 columns of each input during the run.
 * LPK_EINVAL: fewer than ctx tokens. */
int calib_run(vf_model *m, const int32_t *tokens, size_t n_tokens, int32_t bos,
              const calib_opts *o, lpk_imatrix **out, lpk_error *err);

/* The whole job from files: opens model_path (.lpk or GGUF), tokenizes
 * text_path with the model's tokenizer as it reads it (calib_text; the ids
 * vf_read_text and tok_encode with BOS give) and runs calib_run on them: the
 * same matrix as calib_run on the whole text's ids. The dataset name defaults
 * to text_path. */
int calib_file(const char *model_path, const char *text_path, const calib_opts *o,
               lpk_imatrix **out, lpk_error *err);
/* The same with the model already open (r stays the caller's). */
int calib_reader(const lpk_reader *r, const char *text_path, const calib_opts *o,
                 lpk_imatrix **out, lpk_error *err);

/* ---------------------------------------------------------------- calibration text */
/* The token ids of a text file, read and tokenized piece by piece: the ids of
 * tok_encode(tok, text, n, 1, 0) on the bytes vf_read_text gives (BOS first,
 * one trailing '\n' dropped), while holding only about one block of text and
 * its ids. The file is read a block at a time and cut at the last
 * tok_cut_point of what is held (a stretch without one is held whole). A
 * tokenizer without a cut rule (tok_tokenizer_can_cut), or a file that is no
 * regular file (calib_text_count could not read it twice), is read and encoded
 * whole at open. */
typedef struct calib_text calib_text;
/* block: bytes read at a time (0: 64 KiB). path and tok must outlive s.
 * LPK_EIO naming the file, tok_encode's errors, LPK_ENOMEM. */
int calib_text_open(const char *path, const tok_tokenizer *tok, size_t block, calib_text **out,
                    lpk_error *err);
void calib_text_close(calib_text *s);   /* NULL is fine */
/* 1 when the text was read and encoded whole at open. */
int calib_text_whole(const calib_text *s);
/* The next ids, up to n of them, into ids; *got < n only at the end. */
int calib_text_read(calib_text *s, int32_t *ids, size_t n, size_t *got, lpk_error *err);
/* The number of ids of the whole text, counting stops at max: reads the file
 * again through a second calib_text (s itself does not move). */
int calib_text_count(const calib_text *s, size_t max, size_t *n, lpk_error *err);
/* xxh3-64 of the text's bytes (those vf_read_text gives): reads the rest of
 * the file, hashing only; no ids are read from s afterwards. */
int calib_text_hash(calib_text *s, uint64_t *hash, lpk_error *err);

/* ---------------------------------------------------------------- GPTQ */
/* Settings of a GPTQ run (calib_gptq_opts_default fills GPTQ's defaults). */
typedef struct calib_gptq_opts {
    int ctx;       /* tokens per calibration chunk (512) */
    int chunks;    /* chunks to run, 0 = every whole chunk of the text (0) */
    double damp;   /* dampening, fraction of mean diag(H) (0.01) */
    int order;     /* QUANT_GPTQ_ORDER_* (QUANT_GPTQ_ORDER_NONE) */
    size_t text_block;   /* calib_text_open's block (0: its default) */
    int sequential;/* 1: block l's inputs come from blocks 0..l-1 as quantized (0) */
} calib_gptq_opts;
void calib_gptq_opts_default(calib_gptq_opts *o);

/* The Hessians H = X^T X of every 2-D weight's input of one model: per block
 * the attention input (shared by attn_q/k/v), attn_output's input, the FFN
 * input (shared by ffn_gate/up) and ffn_down's input; the output matrix's
 * input (the final norm's output). token_embd has none (a lookup, not a
 * product: it keeps round-to-nearest). */
typedef struct calib_gptq calib_gptq;

/* Prepares GPTQ of the model in r (f32/f16/bf16 weights) with the calibration
 * text file calib_path (read through calib_text), tokenized with r's tokenizer, with
 * calib_run's protocol (chunks of o->ctx tokens, the first set to BOS, f16 KV
 * cache): keeps the embeddings of every chunk's tokens as hidden states. The
 * Hessians are made one block at a time when a weight of the block is first
 * asked for (calib_gptq_quantize, calib_gptq_imatrix): the block is run on
 * every chunk (vf_layer_forward) accumulating them in double in a fixed order,
 * so they equal those of one full forward pass per chunk, bit for bit, and do
 * not depend on the thread count. Then the hidden states move on through the
 * block: its original weights, or with o->sequential the matrices as
 * calib_gptq_quantize wrote them. Ask in block order (as files hold them):
 * an earlier block starts again from the embeddings. A tied model's output
 * matrix is token_embd, which keeps round-to-nearest: no Hessian then. r must
 * stay open until calib_gptq_free. progress (may be NULL) is called once, when
 * the hidden states are ready. Errors: LPK_EIO (calibration file), LPK_EINVAL
 * (text shorter than one chunk, bad options), LPK_EUNSUPPORTED (quantized
 * source weights), the forward pass's errors, LPK_ENOMEM. */
int calib_gptq_collect(const lpk_reader *r, const char *calib_path, const calib_gptq_opts *o,
                       calib_progress_fn progress, void *user, calib_gptq **out,
                       lpk_error *err);
void calib_gptq_free(calib_gptq *g);   /* NULL is fine */
/* Progress of the blocks' calibration passes from now on: fn (NULL: none) is
 * called after each chunk a block runs on, done of total = the chunks run
 * through blocks since this call of the model's n_layers * chunks (twice that
 * with o.sequential: the second pass through the quantized block counts),
 * tokens = done * ctx, seconds since this call. The time between passes (the
 * GPTQ sweeps of the block before) is in the seconds, so done / seconds gives
 * an ETA for the whole model once a block is done. A non-zero return stops the
 * block's pass at that chunk: the call that ran it returns LPK_EINTR. user must
 * stay valid until the next call or calib_gptq_free. */
void calib_gptq_set_progress(calib_gptq *g, calib_progress_fn fn, void *user);

/* Whether GPTQ applies to tensor `name` stored as type (a block type GPTQ
 * supports, and a tensor with a Hessian). */
int calib_gptq_applies(const calib_gptq *g, const char *name, int type);
/* GPTQ-quantizes tensor `name` (nrows x ncols f32 in x) into dst as type,
 * making its block's Hessians first if they are not the ones held (the forward
 * pass's errors). The factor of its Hessian is built on first use and kept for
 * the tensors that share it. With o.sequential a copy of the result (f32) is
 * kept to move the hidden states through the block. LPK_EINVAL when
 * calib_gptq_applies is false or the shape does not match the Hessian;
 * quant_gptq_rows' errors. */
int calib_gptq_quantize(calib_gptq *g, const char *name, int type, const float *x,
                        int64_t nrows, int64_t ncols, void *dst, lpk_error *err);
/* The importance vector diag(H) / tokens of tensor name's input (an imatrix of
 * the same text), or NULL when it has no Hessian (or making it failed); valid
 * until a weight of another block is asked for, or calib_gptq_free. */
const float *calib_gptq_imatrix(calib_gptq *g, const char *name, int64_t ncols);
/* The Hessian H = X^T X (ncols x ncols, double, symmetric; not divided by
 * the tokens, whose count goes to *tokens) of tensor name's input, or NULL
 * (no Hessian, another width, or its memory already holds a factor: valid
 * until a weight of that input is quantized, or as calib_gptq_imatrix). */
const double *calib_gptq_hessian(calib_gptq *g, const char *name, int64_t ncols,
                                 uint64_t *tokens);
/* Provenance in meta: quant.method = "gptq", quant.gptq.calib_xxh3 (hex xxh3-64
 * of the calibration file's bytes), .calib_tokens, .chunks, .ctx, .damp,
 * .order ("none", "act-order", "block-act-order"), .inputs ("original",
 * "quantized"). */
int calib_gptq_record(const calib_gptq *g, lpk_meta *meta);

#ifdef __cplusplus
}
#endif
#endif
