/* quant/ internal: the per-type function table and the shared numeric helpers.
 * Only quant/ sources include this. */
#ifndef QUANT_INTERNAL_H
#define QUANT_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"

/* Quantizes one row of n values (n a multiple of the block size). w: per-value
 * importance (n values) or NULL for plain squared error. */
typedef void (*quant_row_fn)(const float *x, const float *w, void *dst, int64_t n);
typedef void (*dequant_row_fn)(const void *src, float *y, int64_t n);
enum { QUANT_ERR_LANES = 16 };

/* The error sums of a run of whole rows, added up by a 32-block kernel while it
 * quantizes (quant_rows.c, err_row). Block k < nv of a call is block k0 + k of
 * the run, in row (k0 + k) / bpr; its value j goes to lane l = j mod
 * QUANT_ERR_LANES of that row: lanes[2 * QUANT_ERR_LANES * row + l] += (x -
 * y)^2 and lanes[2 * QUANT_ERR_LANES * row + QUANT_ERR_LANES + l] += x^2 in
 * double (y the value dequantized from the block's bytes, x as the kernel read
 * it), value j before value j + 16 and the blocks in order: err_row's additions
 * exactly. Blocks from nv on (padding) add nothing. The caller zeroes the lanes
 * of a run before its first call. */
typedef struct {
    double *lanes;
    int64_t bpr, k0, nv;
} quant_err_acc;

/* Quantizes nb consecutive 32-blocks (nb a multiple of QI_GROUP; for the
 * super-block types nb super-blocks, any count): x holds
 * nb * 32 (256) values of src_type (LPK_TYPE_F32, F16 or BF16), converted to f32 on
 * the way; w: NULL, or importance weights with period wn (value i has weight
 * w[i % wn], wn a multiple of the block), so a run of whole rows is one call;
 * ea: NULL, or where the 32-block kernels add the error sums (the super-block
 * kernels take NULL). Returns nonzero when x holds a NaN or an Inf (dst and
 * the sums are then unspecified). The bytes equal quantize_ref's on the same
 * values, row by row. */
#define QI_GROUP 16
typedef int (*quant_blocks_fn)(const void *x, int src_type, const float *w, int64_t wn,
                               void *dst, int64_t nb, const quant_err_acc *ea);

/* One row per block type: the table the rest of quant/ loops over. */
typedef struct quant_kind {
    int type;
    quant_row_fn quantize_ref;   /* portable reference: defines the output bytes */
    quant_row_fn quantize_avx2;  /* same bytes as quantize_ref, or NULL */
    dequant_row_fn dequantize;
    /* many blocks per call, same bytes as quantize_ref, or NULL; *_w: whether
     * they take importance weights (else those rows go through quantize_avx2) */
    quant_blocks_fn blocks_avx2, blocks_avx512;
    int blocks_w;
} quant_kind;

/* NULL unless type is a block type. */
const quant_kind *quant_kind_get(int type);
/* A matrix llama.cpp's recipes quantize (2-D, "...weight", not a norm); the
 * others keep their type (1-D: f32). quant_recipe.c. */
int quant_tensor_quantizable(const lpk_tensor *t);

/* Reference quantizers and dequantizers (quant_ref.c, quant_kq.c). */
void quant_ref_q4_0(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q4_1(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q5_0(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q5_1(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q8_0(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q4_k(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q6_k(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q5_k(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q3_k(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_q2_k(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_iq4_nl(const float *x, const float *w, void *dst, int64_t n);
void quant_ref_iq4_xs(const float *x, const float *w, void *dst, int64_t n);
void quant_deq_q4_0(const void *src, float *y, int64_t n);
void quant_deq_q4_1(const void *src, float *y, int64_t n);
void quant_deq_q5_0(const void *src, float *y, int64_t n);
void quant_deq_q5_1(const void *src, float *y, int64_t n);
void quant_deq_q8_0(const void *src, float *y, int64_t n);
void quant_deq_q4_k(const void *src, float *y, int64_t n);
void quant_deq_q6_k(const void *src, float *y, int64_t n);
void quant_deq_q5_k(const void *src, float *y, int64_t n);
void quant_deq_q3_k(const void *src, float *y, int64_t n);
void quant_deq_q2_k(const void *src, float *y, int64_t n);
void quant_deq_iq4_nl(const void *src, float *y, int64_t n);
void quant_deq_iq4_xs(const void *src, float *y, int64_t n);

/* The importance weights the searches of type (q5_k, q3_k, q2_k, iq4_nl or
 * iq4_xs) minimise sum(w * err^2) with, for n values x (n <= 256) whose
 * importance-matrix columns are imatrix (NULL: none): imatrix itself, else a
 * default weighting of x written into buf (n floats), or NULL for plain squared
 * error (quant_k2.c). */
const float *quant_weights_of(int type, const float *x, const float *imatrix, int n, float *buf);
/* q4_k's 6-bit scale/min packing (quant_kq.c; q5_k uses it too). */
void quant_q4k_pack_scales(const int sc[8], const int m[8], uint8_t out[12]);
/* Index of the iq4_nl level nearest v (in units of the step; ties upward). */
int quant_iq4nl_index(float v);

/* The inner loops of the scale searches over one block or sub-block (x[n],
 * w[n] or NULL; n a multiple of 8): weighted squared error of x against a given scale (and offset),
 * and the least-squares sums of the assignment it implies. The reference and
 * the AVX2 versions compute bit-identical results (same lane order). */
typedef struct qi_ops {
    float (*sym_err)(const float *x, const float *w, int n, float d, float lo, float hi);
    void (*sym_sums)(const float *x, const float *w, int n, float d, float lo, float hi,
                     float *sxq, float *sqq);
    float (*asym_err)(const float *x, const float *w, int n, float d, float m, float hi);
    void (*asym_sums)(const float *x, const float *w, int n, float d, float m, float hi,
                      float s[3]);
    /* Errors of nd scales d[0..nd) at once: e[k] = sym_err(x, w, n, d[k], lo, hi). */
    void (*sym_err_n)(const float *x, const float *w, int n, const float *d, int nd, float lo,
                      float hi, float *e);
    /* Over one block of 32: max |x| (*neg: whether -max occurs), and the levels
     * q[i] = round(clamp(x[i] / d, -nlo, nhi)) (0 when d is 0). */
    float (*amax32)(const float *x, int *neg);
    void (*sym_assign32)(const float *x, float d, int nlo, int nhi, int q[32]);
    /* qi_f16_sat and lpk_f16_to_f32 (F16C in the AVX2 ops: same values, no calls) */
    uint16_t (*f2h)(float v);
    float (*h2f)(uint16_t h);
} qi_ops;
extern const qi_ops quant_ops_ref;
/* quant_kq.c's float fit of one sub-block (x ~ s*q + o, q in [lo, hi]; sym: o = 0,
 * s may be negative; else o <= 0, s >= 0), shared with quant_k2.c. */
void quant_fit_sub(const qi_ops *ops, const float *x, const float *w, int n, int sym, float lo,
                   float hi, float *s, float *o);

uint16_t quant_search_sym(const qi_ops *ops, const float *x, const float *w, int nlo, int nhi);
void quant_search_asym(const qi_ops *ops, const float *x, const float *w, int nmax,
                       uint16_t *dh, uint16_t *mh);
/* The 32-block packings: u[j] (0..15 used) as nibbles, element j low and
 * j + 16 high; bit 4 of each u[j] as bit j of qh (u32 LE). */
void quant_pack_nibbles(const int u[32], uint8_t qs[16]);
void quant_pack_qh(const int u[32], uint8_t qh[4]);
/* The searches scored with the input covariance (quant_cov.c): whether type
 * has one, and one row of n values with its n / 32 blocks C_b (cov32: n * 32
 * floats, block k's at cov32 + 1024 k, row-major) into dst. */
int quant_cov_supports(int type);
void quant_cov_row(int type, const float *x, const float *cov32, void *dst, int64_t n);
/* quant_cov.c's products and moves: 0 the fast forms (AVX2 where the CPU has
 * it), 1 their first, simple form (the tests' reference), 2 the fast forms
 * without SIMD; the same bytes. Not thread-safe: set it between runs. */
void quant_cov_set_reference(int mode);
/* Tests: each candidate's and each polished block's e^T C e, in order, into
 * buf (at most cap; *n the count); buf NULL, n NULL: off. One thread only. */
void quant_cov_trace(double *buf, size_t cap, size_t *n);
/* The super-block types (q2_k..q6_k) whose values, quantized by their own
 * search, are then moved under C_b: whether type is one, and one row. */
int quant_cov_polishes(int type);
void quant_cov_polish_row(int type, const float *x, const float *cov32, void *dst, int64_t n);
void quant_block_q4_0(const qi_ops *ops, const float *x, const float *w, block_q4_0 *b);
void quant_block_q5_0(const qi_ops *ops, const float *x, const float *w, block_q5_0 *b);
uint16_t quant_q8_0_scale(const float *x);
void quant_block_q8_0(const qi_ops *ops, const float *x, const float *w, block_q8_0 *b);
void quant_block_q4_1(const qi_ops *ops, const float *x, const float *w, block_q4_1 *b);
void quant_block_q5_1(const qi_ops *ops, const float *x, const float *w, block_q5_1 *b);
void quant_block_q4_k(const qi_ops *ops, const float *x, const float *w, block_q4_K *b);
void quant_block_q6_k(const qi_ops *ops, const float *x, const float *w, block_q6_K *b);
/* The last step of q3_k's and q6_k's quantizers: the levels of x[256] under the
 * f16 super-block scale d and the integer sub-block scales sc, packed into *b
 * with them (quant_k2.c, quant_kq.c; the many-block kernels call them too). */
void quant_q3k_finish(const float *x, uint16_t d, const int sc[16], block_q3_K *b);
void quant_q6k_finish(const float *x, uint16_t d, const int sc[16], block_q6_K *b);
/* q3_k's packing of the 16 signed 6-bit sub-block scales (quant_kq.c) */
void quant_q3k_pack_scales(const int sc[16], uint8_t out[12]);

#if defined(__x86_64__)
/* AVX2 quantizers (quant_avx2.c): byte-identical to the reference. */
int quant_avx2_any_nonfinite(const float *x, int64_t n);
/* The error sums of a row in QUANT_ERR_LANES lanes (quant_rows.c, err_row):
 * lane j += (x[c] - y[c])^2 and += x[c]^2 in double for c = j mod
 * QUANT_ERR_LANES; n a multiple of QUANT_ERR_LANES. The same lanes as the
 * reference, bit for bit (no fused multiply-add). */
void quant_avx2_err_lanes(const float *x, const float *y, int64_t n, double *le, double *ls);
/* The same on AVX-512F (quant_avx512.c), the same sums bit for bit. */
void quant_avx512_err_lanes(const float *x, const float *y, int64_t n, double *le, double *ls);
/* w[i] = |x[i]|, FLT_MAX for a NaN or an Inf (quant_rows.c, output_weights). */
void quant_avx2_abs_weights(const float *x, float *w, int64_t n);
/* AVX2 + F16C dequantizers of the 32-block types: the reference's values. */
void quant_avx2_deq_q4_0(const void *src, float *y, int64_t n);
void quant_avx2_deq_q4_1(const void *src, float *y, int64_t n);
void quant_avx2_deq_q5_0(const void *src, float *y, int64_t n);
void quant_avx2_deq_q5_1(const void *src, float *y, int64_t n);
void quant_avx2_deq_q8_0(const void *src, float *y, int64_t n);
void quant_avx2_q4_1(const float *x, const float *w, void *dst, int64_t n);
void quant_avx2_q5_1(const float *x, const float *w, void *dst, int64_t n);
void quant_avx2_q4_k(const float *x, const float *w, void *dst, int64_t n);
void quant_avx2_q6_k(const float *x, const float *w, void *dst, int64_t n);
void quant_avx2_q5_k(const float *x, const float *w, void *dst, int64_t n);
void quant_avx2_q3_k(const float *x, const float *w, void *dst, int64_t n);
void quant_avx2_q2_k(const float *x, const float *w, void *dst, int64_t n);
void quant_avx2_iq4_nl(const float *x, const float *w, void *dst, int64_t n);
void quant_avx2_iq4_xs(const float *x, const float *w, void *dst, int64_t n);
/* the AVX2 qi_ops (same results as quant_ops_ref) */
const qi_ops *quant_avx2_ops(void);
/* q4_0, q4_1, q5_0, q5_1 and q8_0, 8 blocks per vector (quant_lanes.h) */
int quant_avx2_blocks_q4_0(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                           int64_t nb, const quant_err_acc *ea);
int quant_avx2_blocks_q4_1(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                           int64_t nb, const quant_err_acc *ea);
int quant_avx2_blocks_q5_1(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                           int64_t nb, const quant_err_acc *ea);
int quant_avx2_blocks_q5_0(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                           int64_t nb, const quant_err_acc *ea);
int quant_avx2_blocks_q8_0(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                           int64_t nb, const quant_err_acc *ea);
/* q3_k, q6_k, q4_k, q5_k and q2_k, 8 super-blocks per vector
 * (quant_lanes_k.h); nb counts super-blocks */
int quant_avx2_sblocks_q3_k(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                            int64_t nb, const quant_err_acc *ea);
int quant_avx2_sblocks_q6_k(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                            int64_t nb, const quant_err_acc *ea);
int quant_avx2_sblocks_q4_k(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                            int64_t nb, const quant_err_acc *ea);
int quant_avx2_sblocks_q5_k(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                            int64_t nb, const quant_err_acc *ea);
int quant_avx2_sblocks_q2_k(const void *x, int src_type, const float *w, int64_t wn, void *dst,
                            int64_t nb, const quant_err_acc *ea);
/* AVX-512 (F, BW, VL) quantizers (quant_avx512.c): the same, 16 blocks per vector. */
int quant_avx512_blocks_q4_0(const void *x, int src_type, const float *w, int64_t wn,
                             void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_blocks_q4_1(const void *x, int src_type, const float *w, int64_t wn,
                             void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_blocks_q5_1(const void *x, int src_type, const float *w, int64_t wn,
                             void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_blocks_q5_0(const void *x, int src_type, const float *w, int64_t wn,
                             void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_blocks_q8_0(const void *x, int src_type, const float *w, int64_t wn,
                             void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_sblocks_q3_k(const void *x, int src_type, const float *w, int64_t wn,
                              void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_sblocks_q6_k(const void *x, int src_type, const float *w, int64_t wn,
                              void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_sblocks_q4_k(const void *x, int src_type, const float *w, int64_t wn,
                              void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_sblocks_q5_k(const void *x, int src_type, const float *w, int64_t wn,
                              void *dst, int64_t nb, const quant_err_acc *ea);
int quant_avx512_sblocks_q2_k(const void *x, int src_type, const float *w, int64_t wn,
                              void *dst, int64_t nb, const quant_err_acc *ea);
#endif

/* ---------------------------------------------------------------- helpers */
/* Bytes ahead of the current group that the many-block kernels prefetch: the
 * one-pass q8_0 is bound by reading its input, and the hardware prefetcher
 * alone leaves it waiting (0.4 -> 0.3 CPU ns/weight on the development machine). */
#define QI_PREFETCH 2048

/* Round to nearest, ties to even, for |v| <= 2^22: the same result as
 * vroundps(nearest) in the SIMD paths. */
static inline float qi_round(float v)
{
    /* ISO C mode: no reassociation, no contraction; two exact-order roundings */
    return (v + 12582912.0f) - 12582912.0f;
}

static inline float qi_clamp(float v, float lo, float hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Sum of 8 lane accumulators in the order the AVX2 code reduces a vector:
 * (a0+a4 + a2+a6) + (a1+a5 + a3+a7). */
static inline float qi_hsum8(const float a[8])
{
    float s0 = a[0] + a[4], s1 = a[1] + a[5], s2 = a[2] + a[6], s3 = a[3] + a[7];
    float t0 = s0 + s2, t1 = s1 + s3;
    return t0 + t1;
}

/* f32 -> f16 bits (round to nearest even), saturated to the largest finite
 * half so a scale never becomes inf. */
static inline uint16_t qi_f16_sat(float v)
{
    uint16_t h = lpk_f32_to_f16(v);
    if ((h & 0x7fff) >= 0x7c00) /* inf (v is never NaN here) */
        h = (uint16_t)((h & 0x8000) | 0x7bff);
    return h;
}

/* Candidate denominators of the 32-block scale searches (shared with the SIMD
 * code so both try exactly the same scales). */
#define QI_NGRID 9
extern const float quant_grid_sym[QI_NGRID];   /* offsets added to nlo */
extern const float quant_grid_asym[QI_NGRID];  /* offsets added to nmax */

/* asym_search's refit (quant_k2.c; q4_k's too): the least-squares (d, dmin)
 * from the sums A = sum w u^2, B = sum w u v, C = sum w v^2, P = sum w x u,
 * Q = sum w x v (u = q sc, v = m), as f16 bits in *cd, *cdm (dmin, the current
 * one, kept when no min is in use); 0 when there is no usable solution. */
static inline int quant_asym_solve(double A, double B, double C, double P, double Q, float dmin,
                                   uint16_t *cd, uint16_t *cdm)
{
    double det = A * C - B * B, nd, ndm;
    if (det > 0) {
        nd = (P * C - B * Q) / det;
        ndm = (B * P - A * Q) / det;
    } else if (A > 0 && C == 0) {
        nd = P / A;
        ndm = dmin;
    } else {
        return 0;
    }
    if (!isfinite(nd) || !isfinite(ndm) || !(nd > 0) || ndm < 0) return 0;
    *cd = qi_f16_sat((float)nd);
    *cdm = qi_f16_sat((float)ndm);
    return 1;
}

/* q8_0 scale bits from the block's max |x| and whether -amax / +amax occur. */
static inline uint16_t quant_q8_0_scale_of(float amax, int neg, int pos)
{
    if (amax == 0.0f) return 0;
    if (neg && pos) return qi_f16_sat(amax / 127.0f);
    return qi_f16_sat(neg ? amax / 128.0f : amax / -128.0f);
}

/* Stores level q as element i of a block of type (quant_ref.c) */
void quant_elem_set(int type, void *blk, int i, int q);

#endif
