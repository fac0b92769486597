/* verify/ internal: the model's weights and run state, and the numeric building
 * blocks of the forward pass and of the scoring (exposed for the unit tests).
 * Not a public header; only verify/ and its tests include it. */
#ifndef VF_MODEL_H
#define VF_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "verify.h"

/* One transformer block. 2-D weights point into the reader's mapping, stored as
 * *_type; rows are output features: [out, in]. */
typedef struct vf_layer {
    const float *attn_norm;  /* (dim) */
    const void *wq;          /* (n_heads * head_dim, dim) */
    const void *wk;          /* (n_kv_heads * head_dim, dim) */
    const void *wv;          /* (n_kv_heads * head_dim, dim) */
    const void *wo;          /* (dim, n_heads * head_dim) */
    const float *ffn_norm;   /* (dim) */
    const void *w1;          /* ffn_gate (hidden_dim, dim) */
    const void *w2;          /* ffn_down (dim, hidden_dim) */
    const void *w3;          /* ffn_up (hidden_dim, dim) */
    int wq_type, wk_type, wv_type, wo_type, w1_type, w2_type, w3_type;
} vf_layer;

typedef struct vf_weights {
    const void *token_embd;  /* (vocab_size, dim) */
    int token_embd_type;
    size_t token_embd_row;   /* bytes per row */
    vf_layer *layers;        /* (n_layers) */
    const float *output_norm; /* (dim) */
    const void *output;      /* (vocab_size, dim); token_embd when tied */
    int output_type;
    float *owned;            /* f32 copies of norms not stored as f32 (else NULL) */
} vf_weights;

/* Activations of one batch of up to cap_tok tokens, and the KV cache for
 * positions 0 .. cap_ctx-1. Grown on demand by vf_forward. */
typedef struct vf_state {
    int cap_tok, cap_ctx;
    int kv_layers;           /* blocks the KV cache holds: n_layers after a vf_forward,
                              * 1 when only vf_layer_forward ran */
    int n_past;              /* positions held in the cache */
    float *x;                /* (cap_tok, dim) residual stream */
    float *xb;               /* (cap_tok, dim) normed input of a sublayer */
    float *q;                /* (cap_tok, n_heads * head_dim) queries */
    float *att_out;          /* (cap_tok, n_heads * head_dim) attention output */
    float *xb2;              /* (cap_tok, dim) sublayer output */
    float *hb;               /* (cap_tok, hidden_dim) gate, then silu(gate) * up */
    float *hb2;              /* (cap_tok, hidden_dim) up */
    float *att;              /* (n_heads, 4, cap_ctx) attention scores of a tile of queries */
    float *kt;               /* (n_kv_heads, head_dim, cap_ctx) keys of a kv head, transposed */
    float *key_cache;        /* (kv_layers, cap_ctx, n_kv_heads * head_dim) */
    float *value_cache;      /* (kv_layers, cap_ctx, n_kv_heads * head_dim) */
    float *rope_cos;         /* (cap_ctx, n_rot / 2) */
    float *rope_sin;         /* (cap_ctx, n_rot / 2) */
} vf_state;

struct vf_model {
    const lpk_reader *reader;
    vf_config config;
    vf_weights w;
    vf_state s;
    double *rope_freq;       /* (n_rot / 2) angular frequency of each pair, scaling applied */
    vf_act_hook act_hook;    /* vf_model_set_act_hook, or NULL */
    void *act_user;
    int kv_f16;              /* vf_model_set_kv_f16: 0, VF_KV_F16_CACHE or _ATTN */
    /* called after each block and after the output matmul of a vf_forward
     * (done of total = n_layers + 1 steps): how the evaluation reports progress
     * inside a chunk; a non-zero return stops it: vf_forward returns
     * LPK_EINTR, "PATH: cancelled"). NULL: none. */
    int (*step_hook)(void *user, int done, int total);
    void *step_user;
    int shape_only;          /* vf_model_check: keys, names, shapes, types; no data read */
};

void vf_state_free(vf_state *s);

/* out[i] = w[i] * x[i] / sqrt(mean(x^2) + eps); the mean is summed in double. */
void vf_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* vf_rmsnorm of n_tok rows of n (x and out rows n apart), the same bits; the
 * sums of up to 8 rows run side by side (one row's is a chain of dependent
 * double adds). */
void vf_rmsnorm_rows(float *out, const float *x, const float *w, int n_tok, int n, float eps);
/* Angular frequency of each RoPE pair i < n_rot/2: theta^(-2i/n_rot), then the
 * scaling of c (linear: / factor; llama3: Meta's per-frequency apply_scaling). */
void vf_rope_freqs(const vf_config *c, double *freq);
/* Rotates pairs (2i, 2i+1), i < n_rot/2, of each of n_heads heads of head_dim in
 * vec by the angle whose cos/sin are cos_row[i], sin_row[i]. */
void vf_rope_rotate(float *vec, int n_heads, int head_dim, int n_rot, const float *cos_row,
                    const float *sin_row);
/* log(sum exp(logits)) computed in double around the max (vf_sum_exp of
 * vf_math.h); *argmax (if non-NULL) gets the first index of the maximum. */
double vf_logsumexp(const float *logits, int n, int *argmax);
/* KL(P || Q) = sum_i p_i (log p_i - log q_i) for the softmax distributions of
 * p_logits and q_logits with their logsumexp values, in double (vf_kld_sum). */
double vf_kld(const float *p_logits, double p_lse, const float *q_logits, double q_lse, int n);
/* Value at fraction f (0..1) of sorted[0..n) with linear interpolation between
 * neighbours (llama.cpp's percentile); 0 when n == 0. */
double vf_percentile(const float *sorted, size_t n, double f);
/* First scored position of a chunk and the number of scored positions. */
static inline int vf_chunk_first(int ctx) { return ctx / 2; }
static inline int vf_chunk_scored(int ctx) { return ctx - 1 - ctx / 2; }

#endif
