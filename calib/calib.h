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
#include "../verify/verify.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called after each chunk: done of total chunks, tokens run so far and the
 * seconds spent in the forward pass. */
typedef void (*calib_progress_fn)(void *user, int done, int total, uint64_t tokens,
                                  double seconds);

typedef struct calib_opts {
    int ctx;                  /* tokens per chunk; 0: 512 */
    int max_chunks;           /* 0: every whole chunk of the text */
    int no_output;            /* 1: leave out the output matrix (llama-imatrix's default) */
    const char *dataset;      /* recorded as the matrix's dataset name (may be NULL) */
    calib_progress_fn progress;   /* may be NULL */
    void *user;
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
 * LPK_EINVAL: fewer than ctx tokens. */
int calib_run(vf_model *m, const int32_t *tokens, size_t n_tokens, int32_t bos,
              const calib_opts *o, lpk_imatrix **out, lpk_error *err);

/* The whole job from files: opens model_path (.lpk or GGUF), reads text_path
 * (vf_read_text), tokenizes it with the model's tokenizer and runs calib_run.
 * The dataset name defaults to text_path. */
int calib_file(const char *model_path, const char *text_path, const calib_opts *o,
               lpk_imatrix **out, lpk_error *err);

#ifdef __cplusplus
}
#endif
#endif
