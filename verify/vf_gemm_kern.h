/* verify/ internal: what the GEMM dispatcher (vf_gemm.c) shares with its SIMD
 * kernels (vf_gemm_x86.c). Only those two files include it. */
#ifndef VF_GEMM_KERN_H
#define VF_GEMM_KERN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "vf_gemm.h"

/* The scalar steps of the activation quantizers (vf_gemm.h), shared by every
 * path: a 32-block's d, s and sum from its amax and the sum of its qs; and the
 * signed maximum of a q8_K block (the first of its QK_K values whose magnitude
 * is amax). */
static inline void vf_x32_scales(float amax, int32_t sum, vf_xblk32 *out)
{
    float d = amax / 127.0f;
    out->d = lpk_f16_to_f32(lpk_f32_to_f16(d));
    out->sum = sum;
    out->s = lpk_f16_to_f32(lpk_f32_to_f16(d * (float)sum));
}

static inline float vf_xk_max(const float *v, float amax)
{
    int j = 0;
    while (j < QK_K - 1 && fabsf(v[j]) != amax) j++;
    return v[j];
}

/* One vf_matmul call, validated. */
typedef struct vf_gemm_args {
    const void *w;        /* n_out rows of row_bytes */
    int wtype;
    int block;            /* elements per weight block (1 for f32/f16/bf16) */
    int type_size;        /* bytes per weight block */
    int64_t row_bytes;
    int64_t n_out, n_in, n_tok;
    const float *x;       /* (n_tok, n_in) */
    /* quantized x, vf_xblk32 or block_q8_K: (n_tok, n_in / block) for kernels
     * with tok_tile 1; else interleaved (n_tok padded up to tok_tile) / tok_tile,
     * n_in / block, tok_tile), the padding repeating the last token; for
     * kernels with xprep, the kernel's own layout (token groups of tok_tile,
     * each xprep_bytes long) */
    const void *xq;
    /* SIMD kernels only (NULL for the scalar one), per (token, block) in the
     * order of xq:
     * 32-blocks: -off * sum (when the kernel's weight offset off != 0);
     * q4_k, q5_k: 4 words, word k = (b32[2k] | b32[2k+1] << 16) with b32[j] the
     * int16 sum of sub-block j's 32 activations. */
    const int32_t *xaux;
    float *y;             /* (n_tok, n_out) */
} vf_gemm_args;

typedef struct vf_gemm_kernel {
    const char *name;
    int path;                                     /* VF_PATH_* */
    int rows_per_tile;                            /* output rows per work item */
    int tok_tile;                                 /* activation interleave (see xq) */
    size_t (*scratch)(const vf_gemm_args *a);     /* per-thread scratch bytes */
    /* computes y for rows [o0, o1) (o1 - o0 <= rows_per_tile) and all tokens;
     * o_next: the first row of the work item the thread does next, or -1 (a
     * kernel may prefetch its weights) */
    void (*rows)(const vf_gemm_args *a, int64_t o0, int64_t o1, int64_t o_next, void *scratch);
    /* NULL, or: bytes of one group of tok_tile tokens in the kernel's own
     * activation layout (a multiple of 64), and the function quantizing group
     * g of a->x into out, each token exactly as vf_quantize_x32 /
     * vf_quantize_xk do (tokens past n_tok repeat the last one) */
    size_t (*xprep_bytes)(const vf_gemm_args *a);
    void (*xprep)(const vf_gemm_args *a, int64_t g, void *out);
} vf_gemm_kernel;

/* Weights unpacked to signed integers (the qw of vf_gemm.h). */
typedef struct vf_wblk32 { int8_t q[32]; float d; float m; } vf_wblk32;
typedef struct vf_wq4k { uint8_t q[256]; uint8_t sc[8]; uint8_t m[8]; float d, dmin; } vf_wq4k;
typedef struct vf_wq6k { int8_t q[256]; int8_t sc[16]; float d; } vf_wq6k;

/* q5_k, q3_k, q2_k, iq4_xs: signed q per value, per sub-block (nsub of 256 /
 * nsub values) the integer scale and min (0 without a min); x = d * sc * q -
 * dmin * m. */
typedef struct vf_wkg {
    int8_t q[256];
    int8_t sc[16];
    int8_t m[16];
    float d, dmin;
    int nsub;
} vf_wkg;

void vf_unpack_blk32(int wtype, const uint8_t *src, vf_wblk32 *o);
void vf_unpack_kg(int wtype, const uint8_t *src, vf_wkg *o);
/* True for the super-block types vf_unpack_kg takes. */
int vf_is_kg(int wtype);
void vf_unpack_q4k(const uint8_t *src, vf_wq4k *o);
void vf_unpack_q6k(const uint8_t *src, vf_wq6k *o);

#if defined(__x86_64__)
/* Best x86 kernel for wtype on this CPU with paths above cap excluded (cap < 0:
 * no cap); NULL when only the scalar reference applies. */
const vf_gemm_kernel *vf_gemm_x86_kernel(int wtype, int cap);
/* AVX2 activation quantizers, bit-identical to the scalar ones. */
void vf_quantize_x32_avx2(const float *x, int64_t n, vf_xblk32 *out);
void vf_quantize_xk_avx2(const float *x, int64_t n, block_q8_K *out);
#endif

#endif
