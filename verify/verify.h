/* llmpack verify/: the reference (fp32) and int8 forward passes,
 * perplexity and divergence. Prefix vf_. Depends on quant/ and format/. */
#ifndef VERIFY_H
#define VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- model */
/* A LLaMA-architecture model (RMSNorm, interleaved-pair RoPE, grouped-query
 * attention, SwiGLU FFN, tied or untied output) built from a container's
 * llama.* keys and canonical tensors (docs/MODEL.md). 2-D weights stay in the
 * reader's mapping in whatever type they are stored: f32/f16/bf16 weights run
 * the fp32 reference path, quantized weights the int8 path (see docs/VERIFY.md). */

enum vf_rope_scaling { VF_ROPE_NONE = 0, VF_ROPE_LINEAR = 1, VF_ROPE_LLAMA3 = 2 };

typedef struct vf_config {
    int dim;            /* llama.embedding_length */
    int hidden_dim;     /* llama.feed_forward_length */
    int n_layers;       /* llama.block_count */
    int n_heads;        /* llama.attention.head_count */
    int n_kv_heads;     /* llama.attention.head_count_kv (default n_heads) */
    int head_dim;       /* llama.attention.key_length, default dim / n_heads */
    int n_rot;          /* llama.rope.dimension_count (default head_dim): rotated dims */
    int vocab_size;     /* rows of token_embd.weight */
    int seq_len;        /* llama.context_length (0 if absent) */
    int tied;           /* output.weight absent: token_embd.weight is the output matrix */
    float norm_eps;     /* llama.attention.layer_norm_rms_epsilon (default 1e-5) */
    float rope_theta;   /* llama.rope.freq_base (default 10000) */
    int rope_scaling;   /* VF_ROPE_* from llama.rope.scaling.type */
    float rope_factor;  /* llama.rope.scaling.factor (1 if none) */
    float rope_low_freq_factor, rope_high_freq_factor; /* llama3 scaling (default 1, 4) */
    int rope_orig_ctx;  /* llama.rope.scaling.original_context_length (llama3; default 8192) */
} vf_config;

typedef struct vf_model vf_model;

/* Builds a model over r (which must stay open until vf_model_free): reads and
 * checks the hyperparameters, finds every tensor by its canonical name and
 * checks its shape and type. No weights are copied (1-D norms stored as f16 or
 * bf16 are the exception: converted to small f32 copies). Errors name the file
 * and the key or tensor: LPK_ENOTFOUND (missing key/tensor), LPK_ECORRUPT (bad
 * shape or value), LPK_EUNSUPPORTED (architecture, type), LPK_EBADVALUE (NaN in
 * a norm), LPK_ENOMEM. */
int vf_model_open(const lpk_reader *r, vf_model **out, lpk_error *err);
void vf_model_free(vf_model *m);   /* NULL is fine */
/* The structural half of vf_model_open without reading any tensor data: the
 * hyperparameters, every tensor the architecture needs, their shapes and
 * types. What every command checks a GGUF input with (docs/RELIABILITY.md). */
int vf_model_check(const lpk_reader *r, lpk_error *err);
const vf_config *vf_model_config(const vf_model *m);
const lpk_reader *vf_model_reader(const vf_model *m);

/* Runs n_tok tokens at positions pos0 .. pos0+n_tok-1 as one batch: every weight
 * matmul is a matrix-matrix product over the batch, attention is causal over the
 * keys/values of positions 0 .. pos of this and earlier calls (pos0 = 0 starts a
 * new sequence; a call with pos0 > 0 continues the sequence of the previous
 * calls). Writes the logits of the last n_logits tokens to logits
 * (n_logits x vocab_size, row-major). Deterministic: the result is bitwise the
 * same for any OpenMP thread count. Returns LPK_EINVAL for a token id out of
 * range or bad counts, LPK_ENOMEM, or a matmul error naming the tensor. */
int vf_forward(vf_model *m, const int32_t *tokens, int n_tok, int pos0, int n_logits,
               float *logits, lpk_error *err);
/* n_seq independent sequences of n_tok tokens each (tokens: n_seq x n_tok), each
 * at positions 0 .. n_tok-1 with its own causal context, as one batch: every
 * weight matmul runs over all n_seq x n_tok tokens (each matrix is read once
 * for all of them), attention per sequence. logits: the last n_logits tokens
 * of each sequence, sequence after sequence ((n_seq x n_logits) x vocab_size).
 * Bitwise what n_seq vf_forward calls (pos0 0) give, for any thread count:
 * every step's arithmetic on a token does not depend on the batch's other
 * tokens. Afterwards the cache continues no sequence (the next vf_forward
 * starts at position 0). LPK_EINVAL also with an act hook installed. */
int vf_forward_seqs(vf_model *m, const int32_t *tokens, int n_seq, int n_tok, int n_logits,
                    float *logits, lpk_error *err);

/* One block at a time (what layer-by-layer GPTQ runs, calib/): the pieces of
 * vf_forward, so a batch of hidden states goes through the same code.
 * vf_embed writes the embeddings of n_tok tokens (n_tok x dim) to x; LPK_EINVAL
 * for a token id out of range. */
int vf_embed(vf_model *m, const int32_t *tokens, int n_tok, float *x, lpk_error *err);
/* The matrices of a block, in the order vf_layer_forward's f32w takes them. */
/* attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down */
enum { VF_LAYER_MATRICES = 7 };
/* Runs block l on the hidden states x (n_tok x dim, a sequence of its own at
 * positions 0 .. n_tok-1), in place: x becomes the block's output, bitwise what
 * vf_forward computes for the same batch (the act hook is called for the
 * block's matmuls as there). f32w: NULL, or VF_LAYER_MATRICES pointers in the
 * order above, each NULL (the model's weight) or an f32 replacement of the
 * same shape, used for this call only. It needs a KV cache of one block only
 * (it uses the first block's place of a larger one that is there already), so
 * every block's cache is stale afterwards: the next vf_forward must start at
 * position 0 (and grows the cache to every block). LPK_EINVAL (bad
 * layer or count), LPK_ENOMEM, a matmul error naming the tensor. */
int vf_layer_forward(vf_model *m, int l, float *x, int n_tok, const float *const *f32w,
                     lpk_error *err);
/* The final norm of n_tok hidden states x (n_tok x dim) into out (the output
 * matrix's input, as vf_forward computes it). */
void vf_output_norm(const vf_model *m, const float *x, int n_tok, float *out);

/* The activations entering one 2-D weight's matmul: x holds n_tok rows of n_in
 * values (the weight's row length), valid during the call only. layer is the
 * block index (-1 for output.weight); name the tensor's canonical kind
 * ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
 * "ffn_down", "output"). Called from the thread running vf_forward, in the
 * order of the forward pass; q/k/v and gate/up see the same x. For
 * "output", every token of the batch is passed (the final norm is then run on
 * all of them, whatever n_logits). */
typedef void (*vf_act_hook)(void *user, int layer, const char *name, const float *x, int n_tok,
                            int n_in);
/* Installs (or with NULL removes) the hook: calibration (calib/) collects its
 * statistics through it, so there is one forward pass, not two. */
void vf_model_set_act_hook(vf_model *m, vf_act_hook hook, void *user);
/* llama.cpp's default f16 KV cache, emulated (off, 0, by default).
 * VF_KV_F16_CACHE: keys and values are rounded to f16 as they enter the cache,
 * as that cache stores them (calibration uses this to collect the same
 * statistics as llama-imatrix).
 * VF_KV_F16_ATTN: also the queries and the softmax weights, as llama.cpp's two
 * attention products with an f16 cache take them (GGML converts the other
 * operand of a product with f16 to f16 first): scores = f16(q) . k, output =
 * sum of f16(weight) * v, both summed in f32. verify --kv-f16. */
enum { VF_KV_F16_CACHE = 1, VF_KV_F16_ATTN = 2 };
void vf_model_set_kv_f16(vf_model *m, int mode);

/* ---------------------------------------------------------------- perplexity */
/* llama.cpp's protocol: the token stream (BOS first) is cut into chunks of ctx
 * tokens (remainder dropped); in each chunk the first token is set to BOS and
 * positions ctx/2 .. ctx-2 are scored, each predicting the next token. */
typedef struct vf_ppl_result {
    int ctx;
    int chunks;                 /* chunks processed so far */
    uint64_t tokens_scored;
    double ppl, ppl_stderr;
    int has_ref;                /* the fields below are set only when 1 */
    double ref_ppl, ref_ppl_stderr;
    double ppl_ratio, ppl_ratio_stderr;      /* ppl / ref_ppl */
    double ppl_delta, ppl_delta_stderr;      /* ppl - ref_ppl */
    double kld_mean, kld_stderr, kld_median, kld_p99, kld_max; /* KL(P_ref || P_model) */
    double top1_agreement, top1_stderr;     /* fraction of positions whose argmax agree */
    /* Paired against the first model (models[0]) on the same positions; set only
     * when has_paired (a reference, and a model other than the first): the mean
     * over the positions of KLD(this) - KLD(first) and of same-top-1(this) -
     * same-top-1(first) (so kld_diff = kld_mean - first's kld_mean and top1_diff =
     * top1_agreement - first's, to rounding), each with the standard error of
     * its mean: the differences' standard deviation over sqrt(n). */
    int has_paired;
    double kld_diff, kld_diff_stderr;
    double top1_diff, top1_diff_stderr;
    double seconds;             /* time in this model's forward passes and scoring */
    double tokens_per_second;   /* tokens run through the model per second */
} vf_ppl_result;

typedef struct vf_eval vf_eval;

/* Prepares an evaluation of n_models models (and the reference ref, which may be
 * NULL) over tokens[0 .. n_tokens) in chunks of ctx tokens; max_chunks > 0 takes
 * only the first max_chunks chunks. bos (or -1: leave the first token as is)
 * replaces the first token of each chunk. Models and tokens are borrowed and
 * must outlive the evaluation. Every model needs the same vocabulary size.
 * LPK_EINVAL: ctx < 4, fewer than ctx tokens, token ids out of range, vocab
 * mismatch. */
int vf_eval_new(vf_model *ref, vf_model *const *models, int n_models, const int32_t *tokens,
                size_t n_tokens, int32_t bos, int ctx, int max_chunks, vf_eval **out,
                lpk_error *err);
void vf_eval_free(vf_eval *e);   /* NULL is fine */
int vf_eval_n_chunks(const vf_eval *e);
/* Runs the next chunk (the next batch of chunks: vf_eval_set_batch) through the
 * reference (once) and every model and adds the scored positions to the
 * statistics. Returns the number of chunks processed (1 .. the batch), 0 when
 * all chunks are done, or a negative status. */
int vf_eval_step(vf_eval *e, lpk_error *err);
/* Chunks per forward pass from the next vf_eval_step on (default 1; clamped to
 * 1 .. the chunk count): n chunks are one batch of vf_forward_seqs, so each
 * weight matrix is read once for all n; the statistics are bitwise the same
 * for any n. The logits of n chunks are held (per model pass, and for the
 * reference): n x (ctx - 1 - ctx/2) x vocab floats each, beside the model
 * state of n x (ctx - 1) tokens. LPK_ENOMEM (the batch then back at 1). */
int vf_eval_set_batch(vf_eval *e, int n, lpk_error *err);
/* Statistics of model i over the chunks processed so far. */
void vf_eval_result(const vf_eval *e, int i, vf_ppl_result *out);

/* Progress inside vf_eval_step: called (from the thread running it) after each
 * block of each forward pass, with done of total text tokens, total =
 * chunks x ctx; within a step the passes (the reference, then each model)
 * share its chunks' tokens (the batch's n x ctx) equally, so done rises from
 * the first block of the first chunk and reaches c x ctx when a step ending
 * with chunk c is complete. A non-zero return
 * stops the chunk there: vf_eval_step returns LPK_EINTR ("PATH: cancelled",
 * the model running) and the evaluation cannot go on (free it). */
typedef int (*vf_progress_fn)(void *user, uint64_t done, uint64_t total);
/* Installs (or with NULL removes) the progress callback. */
void vf_eval_set_progress(vf_eval *e, vf_progress_fn fn, void *user);

/* One chunk's share of the statistics (what a report plots per chunk), from
 * the same sums as vf_eval_result: each over the chunk's scored positions. */
typedef struct vf_chunk_result {
    double ppl;             /* exp(mean NLL) of the model */
    double ref_ppl;         /* the same for the reference; NAN without one */
    double kld_mean;        /* mean KL(P_ref || P_model); NAN without a reference */
    double top1_agreement;  /* fraction of same argmax; NAN without a reference */
} vf_chunk_result;
/* Chunk c (0 <= c < the chunks processed) of model i. */
void vf_eval_chunk_result(const vf_eval *e, int i, int c, vf_chunk_result *out);
/* The KLD of every position of model i scored so far, in the order scored
 * (*n of them; chunk c's are [c * n_scored, (c + 1) * n_scored)); NULL and 0
 * without a reference. Owned by e, valid until the next vf_eval_step or
 * vf_eval_free. */
const float *vf_eval_klds(const vf_eval *e, int i, size_t *n);

/* A text file as bytes, one trailing '\n' dropped (as llama.cpp's -f does):
 * what perplexity and calibration tokenize. *out is malloc'ed (caller frees).
 * LPK_EIO naming the file, LPK_ENOMEM. */
int vf_read_text(const char *path, char **out, size_t *n, lpk_error *err);

/* ---------------------------------------------------------------- tensor errors */
typedef struct vf_tensor_error {
    char name[LPK_MAX_NAME + 1];
    int type;            /* the model's type of the tensor */
    int ref_type;
    double rel_rmse;     /* sqrt(sum (w - w_ref)^2 / sum w_ref^2) */
} vf_tensor_error;

/* Per-tensor relative RMSE of every 2-D tensor of `model` whose type differs from
 * the same tensor in `ref` (both dequantized to f32), sorted worst first.
 * *out is malloc'ed (caller frees). LPK_ENOTFOUND / LPK_ECORRUPT when ref lacks a
 * tensor or the shapes differ. */
int vf_tensor_errors(const lpk_reader *model, const lpk_reader *ref, vf_tensor_error **out,
                     size_t *n_out, lpk_error *err);

/* ---------------------------------------------------------------- sensitivity */
/* How much each 2-D weight of the model in r matters to its output: for every
 * weight of the forward pass whose rows fit probe_type, that weight alone is
 * quantized to probe_type (with imatrix[i] as importance weights when imatrix
 * is non-NULL: n pointers, NULL for none) and kld[i] receives the mean
 * KL(P_model || P_probe) over the chunks of tokens (vf_eval_new's protocol:
 * ctx, max_chunks, bos). kld has lpk_reader_n_tensors(r) entries; NAN for the
 * tensors not probed. Runs the reference once per 8 probed tensors; after each
 * such group progress (may be NULL) gets the tensors of r looked at so far and
 * their number, and non-zero from it stops with LPK_EINTR ("MODEL: cancelled"). */
typedef int (*vf_sens_progress_fn)(void *user, size_t done, size_t total);
int vf_tensor_sensitivity(const lpk_reader *r, const int32_t *tokens, size_t n_tokens,
                          int32_t bos, int ctx, int max_chunks, int probe_type,
                          const float *const *imatrix, double *kld,
                          vf_sens_progress_fn progress, void *user, lpk_error *err);
/* Gains for quant_plan_target: vf_tensor_sensitivity with q3_k divided by the
 * expected error quant_plan_target gives each tensor at q3_k, so that gain times
 * expected error predicts the tensor's KLD at any type (n = lpk_reader_n_tensors
 * entries; the matrices whose rows do not fit q3_k get the largest gain).
 * progress: vf_tensor_sensitivity's. */
int vf_target_gains(const lpk_reader *r, const int32_t *tokens, size_t n_tokens, int32_t bos,
                    int ctx, int max_chunks, const float *const *imatrix, double *gain,
                    vf_sens_progress_fn progress, void *user, lpk_error *err);
/* The same from a text file, tokenized with the model's tokenizer (one trailing
 * newline dropped, BOS first). LPK_EIO naming the file, LPK_EINVAL when it holds
 * less than one chunk. */
int vf_target_gains_text(const lpk_reader *r, const char *text_path, int ctx, int max_chunks,
                         const float *const *imatrix, double *gain,
                         vf_sens_progress_fn progress, void *user, lpk_error *err);

#ifdef __cplusplus
}
#endif
#endif
