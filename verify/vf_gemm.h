/* verify/ internal: the batched matrix multiply the forward pass runs on.
 * Not a public header; only verify/ (and its tests and benchmarks) include it. */
#ifndef VF_GEMM_H
#define VF_GEMM_H

#include <stdint.h>

#include "../quant/quant.h"

/* y[t * n_out + o] = sum_i W[o][i] * x[t * n_in + i]   for t < n_tok, o < n_out.
 *
 * W: n_out rows of n_in elements stored as `wtype` (f32, f16, bf16 or any quant
 * type), rows contiguous (row size = lpk_type_nbytes(wtype, n_in)); it may point
 * into a read-only mapping.
 * f32/f16/bf16 weights: fp32 math (the reference path).
 * Quantized weights: x is quantized per token to the activation blocks the type
 * needs (q8_0-style blocks of 32 for q4_0/q4_1/q5_0/q5_1/q8_0/iq4_nl, q8_K
 * super-blocks for q2_k/q3_k/q4_k/q5_k/q6_k/iq4_xs), integer dot products with
 * int32 accumulation, scales applied once per block.
 * Uses OpenMP threads (omp_get_max_threads()); the result is bitwise identical
 * for any thread count and summation order is fixed per output element.
 * Returns 0, or LPK_EINVAL / LPK_EUNSUPPORTED / LPK_ENOMEM. */
int vf_matmul(const void *w, int wtype, int64_t n_out, int64_t n_in,
              const float *x, int64_t n_tok, float *y);

/* Several matrices on the same input: y_j = W_j x for j < n_mat (at most
 * VF_MAT_MAX), each as vf_matmul computes it (the same bits). Where all have
 * the same type the activations are quantized once and the matrices' rows
 * are one list of work items for the threads (attn_q/k/v, ffn_gate/up);
 * otherwise one vf_matmul each. */
enum { VF_MAT_MAX = 4 };
typedef struct vf_mat {
    const void *w;
    int wtype;
    int64_t n_out;
    float *y;
} vf_mat;
int vf_matmul_n(const vf_mat *mats, int n_mat, int64_t n_in, const float *x, int64_t n_tok);

/* ------------------------------------------------------------------------
 * The arithmetic, exactly (every path computes this, bit for bit):
 *
 * fp32 weights: y = fma(w[n-1], x[n-1], ... fma(w[1], x[1], fma(w[0], x[0], 0)))
 *   (one fused multiply-add chain per output element, in input order).
 *
 * Quantized weights: per output element, acc = 0, then for each block b in
 * order (float; fma rounds once; p = dw * dx and pm = -dmin * dx rounded):
 *   q8_0, q4_0, q5_0:  acc = fma(p, (float)isum, acc)
 *   q4_1, q5_1:        acc = fma(mw, sx, acc); acc = fma(p, (float)isum, acc)
 *   q4_k, q5_k, q2_k:  acc = fma(pm, (float)summ, acc); acc = fma(p, (float)sumi, acc)
 *   q6_k, q3_k, iq4_xs: acc = fma(p, (float)sumi, acc)
 *   iq4_nl:            as q8_0, qw = the table value (quant_iq4nl_values)
 * where isum = sum_j qw_j * qx_j over the block's 32 elements with qw the
 * signed integer weight (q8_0: q; q4_0: q - 8; q5_0: q - 16; q4_1/q5_1: q),
 * sx = dx * (float)sum_j qx_j, sumi = sum over sub-blocks of sc * (sum qw * qx)
 * (q4_k: qw = q in 0..15, sub-blocks of 32; q6_k: qw = q - 32, sub-blocks of
 * 16; q5_k: q in 0..31, 32; q2_k: q in 0..3, 16; q3_k: q - 4, 16, sc - 32;
 * iq4_xs: the table value, 32, ls - 32) and summ = sum over the sub-blocks of
 * m * (sum qx) (q4_k, q5_k, q2_k). All integer parts are exact int32 sums.
 * The SIMD kernels share out the types by block shape: iq4_nl runs q8_0's
 * 32-block kernels (signed weights), q5_k and iq4_xs q4_k's (8 sub-blocks of
 * 32), q3_k and q2_k q6_k's (16 sub-blocks of 16); each keeps every integer
 * step within its int16 / int32 bound (see the kernels' comments; activations
 * are within +-127).
 * Activations: the bytes GGML's x86 code gives (ggml-cpu-quants.c, b4748),
 * so that the int8 path sees what llama.cpp's does on the same input:
 *   32-element blocks (q8_0 and q8_1 of GGML): amax = max |x|, q = round-to-
 *   nearest-even(x * (127 / amax)), q = 0 when amax == 0; the scales are
 *   stored in f16 as GGML's blocks hold them: d = f16(amax / 127), s =
 *   f16((amax / 127) * sum q);
 *   q8_K (256 elements): max = the first x of the largest magnitude (signed),
 *   is = -127 / max, q = round-to-nearest-even(x * is), d = 1 / is (so d < 0
 *   when max > 0; d * q is what matters); all zero when max == 0.
 * q is clamped to +-127 (only NaN or infinite inputs reach the clamp).
 * ------------------------------------------------------------------------ */

/* One token's activation block for the 32-element weight types. */
typedef struct vf_xblk32 {
    int8_t qs[32];
    float d;     /* scale: x ~ d * qs (a value of f16) */
    float s;     /* the scale times sum (a value of f16) */
    int32_t sum; /* sum of qs */
} vf_xblk32;

/* Quantizes n (multiple of 32) floats into n / 32 blocks. */
void vf_quantize_x32(const float *x, int64_t n, vf_xblk32 *out);
/* Quantizes n (multiple of 256) floats into n / 256 q8_K blocks. */
void vf_quantize_xk(const float *x, int64_t n, block_q8_K *out);

/* Integer parts of one weight block (of wtype) against one activation block
 * (vf_xblk32 for the 32-element types, block_q8_K for the super-block types),
 * computed by the scalar reference: out[0] = isum or sumi, out[1] = summ (the
 * types with mins) or 0.
 * LPK_EUNSUPPORTED for types without integer blocks. */
int vf_block_ints(int wtype, const void *wblk, const void *xblk, int32_t out[2]);

/* Kernel paths. vf_matmul picks the best the CPU has (lpk_cpu_features()). */
enum vf_gemm_path {
    VF_PATH_SCALAR = 0,
    VF_PATH_AVX2 = 1,   /* AVX2 + FMA + F16C */
    VF_PATH_AVX512 = 2, /* AVX-512 F/BW/VL */
    VF_PATH_VNNI = 3    /* AVX-512 F/BW/VL + VNNI (fp32 weights: as AVX512) */
};
/* Caps the path used by later vf_matmul calls at `path` (tests compare paths;
 * -1 removes the cap). Not to be called while vf_matmul runs. */
void vf_gemm_force_path(int path);
/* The path vf_matmul uses now for wtype, and its name ("scalar", "avx2",
 * "avx512", "avx512-vnni"). */
int vf_gemm_path(int wtype);
const char *vf_gemm_path_name(int wtype);

#endif
