/* verify/ internal: the numeric kernels of the forward pass outside the GEMM
 * (attention scores, softmax, weighted sums of values) and of the scoring
 * (log-sum-exp, KL divergence), with the project's own exp for float and
 * double. Each runs on the best vector unit the CPU has (chosen at run time,
 * LLMPACK_SIMD honoured) and every path computes the same bits: the operations
 * each output element goes through are written down here and in vf_math.c
 * (plain multiplies and adds in a fixed order, no fused multiply-add), and
 * sums over many terms are split into VF_SUM_LANES partial sums (element i
 * goes to sum i % VF_SUM_LANES) reduced in a fixed tree (vf_sum_lanes). */
#ifndef VF_MATH_H
#define VF_MATH_H

#include <stddef.h>
#include <stdint.h>

/* exp(x) for float: Cody-Waite reduction x = n ln2 + r (n = x log2e rounded to
 * nearest, ln2 split in two), degree-7 Taylor polynomial of exp(r) by Horner,
 * times 2^n applied as two powers of two (so results down to the subnormal
 * range are rounded once). x is clamped to [-104, 89]: 0 below (and for
 * NaN), inf above.
 * Within 1 ulp of the correctly rounded value (tests/test_verify.c). */
float vf_expf_ref(float x);
/* exp(x) for double: the same scheme, degree-13 Taylor polynomial, x clamped
 * to [-746, 710]. */
double vf_exp_ref(double x);

/* exp(x) for float as glibc's expf (2.28 and later, the FMA build this
 * machine's libm runs: Arm's optimized-routines algorithm) computes it, to the
 * bit: x * 32 / ln 2 = k + r in double (fused multiply-adds), 2^(k / 32) from a
 * table of 32, a degree-3 polynomial of r, one rounding to float; the special
 * cases (|x| >= 88, inf, NaN) as glibc returns them. The forward pass's SwiGLU
 * has called libm's expf since it was written; this keeps its bits and makes
 * them the same on every machine and path (tests/test_vf_math.c compares it
 * with libm's expf where that is glibc's FMA build). */
float vf_expf_glibc(float x);
/* SwiGLU in place: h[i] = h[i] / (1.0f + vf_expf_glibc(-h[i])) * u[i] (float
 * operations in that order), i < n. */
void vf_swiglu(float *h, const float *u, size_t n);

enum { VF_SUM_LANES = 8 };
/* ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), as three halving folds */
static inline double vf_sum_lanes(const double *a)
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* Vector paths. The portable one is 16-byte vectors (SSE2 on x86-64, NEON on
 * aarch64, plain code elsewhere). */
enum vf_math_path { VF_MATH_PORTABLE = 0, VF_MATH_AVX2 = 1, VF_MATH_AVX512 = 2 };
/* Caps the path of later calls at `path` (-1: no cap). Not to be called while
 * another thread uses these functions. */
void vf_math_force_path(int path);
int vf_math_path(void);
const char *vf_math_path_name(void);

/* y[i] = vf_expf_ref(x[i]), y[i] = vf_exp_ref(x[i]) */
void vf_expf_n(float *y, const float *x, size_t n);
void vf_exp_n(double *y, const double *x, size_t n);
/* Largest of x[0..n) (n >= 1) and the first index holding it. */
float vf_max_index(const float *x, int n, int *index);
/* Sum over i < n of vf_exp_ref((double)x[i] - (double)mx), in VF_SUM_LANES sums. */
double vf_sum_exp(const float *x, int n, float mx);
/* Sum over i < n of vf_exp_ref(lp) * (lp - lq), lp = (double)p[i] - p_lse,
 * lq = (double)q[i] - q_lse, in VF_SUM_LANES sums. */
double vf_kld_sum(const float *p, double p_lse, const float *q, double q_lse, int n);
/* Softmax of scaled scores in place, for p < n: att[p] *= scale; m = the
 * largest; att[p] = vf_expf_ref(att[p] - m); s = sum of (double)att[p] in
 * VF_SUM_LANES sums; att[p] *= (float)(1.0 / s). att must be writable up to n
 * rounded up to 16 (values there are clobbered). */
void vf_softmax(float *att, int n, float scale);
/* Scores of nq (1..4) queries: att[j * lda + p] = q[j*ldq+0] * kt[0][p] +
 * q[j*ldq+1] * kt[1][p] + ... (a float sum from 0, in order of i < hd), for p
 * < n rounded up to 16; kt rows ldk apart, readable that far. */
void vf_attn_scores(float *att, size_t lda, const float *q, size_t ldq, int nq, const float *kt,
                    size_t ldk, int hd, int n);
/* Weighted sums of nq (1..4) rows of weights: o[j * ldo + i] = a + w[j][p0] *
 * v[p0][i] + ... + w[j][p1-1] * v[p1-1][i] (in order of p), a = 0 or, with
 * acc_in, the value o held; i < hd, w rows ldw apart, v rows ldv apart. */
void vf_attn_wsum(float *o, size_t ldo, const float *w, size_t ldw, int nq, const float *v,
                  size_t ldv, int hd, int p0, int p1, int acc_in);

#endif
