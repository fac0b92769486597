/* verify/ internal: the batched matrix multiply the forward pass runs on.
 * Not a public header; only verify/ includes it. */
#ifndef VF_GEMM_H
#define VF_GEMM_H

#include <stdint.h>

/* y[t * n_out + o] = sum_i W[o][i] * x[t * n_in + i]   for t < n_tok, o < n_out.
 *
 * W: n_out rows of n_in elements stored as `wtype` (f32, f16, bf16 or any quant
 * type), rows contiguous (row size = lpk_type_nbytes(wtype, n_in)); it may point
 * into a read-only mapping.
 * f32/f16/bf16 weights: fp32 math (the reference path).
 * Quantized weights: x is quantized per token to the activation blocks the type
 * needs (q8_0-style blocks of 32 for q4_0/q4_1/q5_0/q5_1/q8_0, q8_K super-blocks
 * for q4_k/q6_k), integer dot products with int32 accumulation, scales applied
 * once per block.
 * Uses OpenMP threads (omp_get_max_threads()); the result is bitwise identical
 * for any thread count and summation order is fixed per output element.
 * Returns 0, or LPK_EINVAL / LPK_EUNSUPPORTED / LPK_ENOMEM. */
int vf_matmul(const void *w, int wtype, int64_t n_out, int64_t n_in,
              const float *x, int64_t n_tok, float *y);

#endif
