/* verify/: exp, log-sum-exp, KL divergence and attention kernels (see
 * vf_math.h). The scalar references below define the arithmetic; the vector
 * kernels (vf_math_simd.h, once per instruction set) compute it lane by lane. */
#include "vf_math.h"

#include <math.h>
#include <string.h>

#include "../format/lpk.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------- constants */
#define VF_EXPF_LO (-104.0f)   /* exp below rounds to 0 */
#define VF_EXPF_HI 89.0f       /* exp above overflows */
#define VF_LOG2E_F 1.44269504f
#define VF_MAGIC_F 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define VF_MAGIC_F_BITS 0x4b400000
#define VF_LN2HI_F 0.693359375f      /* 9 bits: n * VF_LN2HI_F is exact */
#define VF_LN2LO_F (-2.12194440e-4f) /* ln 2 - VF_LN2HI_F */
#define VF_EXPF_C2 0.5f
#define VF_EXPF_C3 (1.0f / 6)
#define VF_EXPF_C4 (1.0f / 24)
#define VF_EXPF_C5 (1.0f / 120)
#define VF_EXPF_C6 (1.0f / 720)
#define VF_EXPF_C7 (1.0f / 5040)

#define VF_EXP_LO (-746.0)
#define VF_EXP_HI 710.0
#define VF_LOG2E 0x1.71547652b82fep+0
#define VF_MAGIC 0x1.8p+52     /* 1.5 * 2^52 */
#define VF_MAGIC_BITS 0x4338000000000000LL
#define VF_LN2HI 0x1.62e42feep-1          /* 32 bits: n * VF_LN2HI is exact */
#define VF_LN2LO 0x1.a39ef35793c76p-33    /* ln 2 - VF_LN2HI */
/* the Taylor polynomial: 1/k! */
#define VF_EXP_C3 (1.0 / 6)
#define VF_EXP_C4 (1.0 / 24)
#define VF_EXP_C5 (1.0 / 120)
#define VF_EXP_C6 (1.0 / 720)
#define VF_EXP_C7 (1.0 / 5040)
#define VF_EXP_C8 (1.0 / 40320)
#define VF_EXP_C9 (1.0 / 362880)
#define VF_EXP_C10 (1.0 / 3628800)
#define VF_EXP_C11 (1.0 / 39916800)
#define VF_EXP_C12 (1.0 / 479001600)
#define VF_EXP_C13 (1.0 / 6227020800.0)

/* ---------------------------------------------------------------- scalar reference */
/* bit casts */
static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint64_t d2u(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
static double u2d(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }

float vf_expf_ref(float x)
{
    x = x > VF_EXPF_LO ? x : VF_EXPF_LO;   /* NaN too */
    x = x < VF_EXPF_HI ? x : VF_EXPF_HI;
    float t = x * VF_LOG2E_F + VF_MAGIC_F;
    float n = t - VF_MAGIC_F;
    float r = x - n * VF_LN2HI_F;
    r = r - n * VF_LN2LO_F;
    float p = VF_EXPF_C7;
    p = p * r + VF_EXPF_C6;
    p = p * r + VF_EXPF_C5;
    p = p * r + VF_EXPF_C4;
    p = p * r + VF_EXPF_C3;
    p = p * r + VF_EXPF_C2;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t ni = (int32_t)(f2u(t) - (uint32_t)VF_MAGIC_F_BITS);
    int32_t n1 = ni >> 1, n2 = ni - n1;   /* each within the normal exponents */
    return p * u2f((uint32_t)(n1 + 127) << 23) * u2f((uint32_t)(n2 + 127) << 23);
}

double vf_exp_ref(double x)
{
    x = x > VF_EXP_LO ? x : VF_EXP_LO;   /* NaN too */
    x = x < VF_EXP_HI ? x : VF_EXP_HI;
    double t = x * VF_LOG2E + VF_MAGIC;
    double n = t - VF_MAGIC;
    double r = x - n * VF_LN2HI;
    r = r - n * VF_LN2LO;
    double p = VF_EXP_C13;
    p = p * r + VF_EXP_C12;
    p = p * r + VF_EXP_C11;
    p = p * r + VF_EXP_C10;
    p = p * r + VF_EXP_C9;
    p = p * r + VF_EXP_C8;
    p = p * r + VF_EXP_C7;
    p = p * r + VF_EXP_C6;
    p = p * r + VF_EXP_C5;
    p = p * r + VF_EXP_C4;
    p = p * r + VF_EXP_C3;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t ni = (int64_t)(d2u(t) - (uint64_t)VF_MAGIC_BITS);
    int64_t n1 = ni >> 1, n2 = ni - n1;
    return p * u2d((uint64_t)(n1 + 1023) << 52) * u2d((uint64_t)(n2 + 1023) << 52);
}

/* The largest of VW lane maxima b[] (lane l's first index bi[l], INT32_MAX when
 * the lane saw nothing above -inf) and the smallest index holding it. */
static float vf_max_lanes(const float *b, const int32_t *bi, int vw, const float *x, int *index)
{
    float mx = -INFINITY;
    int32_t im = INT32_MAX;
    for (int l = 0; l < vw; l++)
        if (bi[l] != INT32_MAX && (b[l] > mx || (b[l] == mx && bi[l] < im))) mx = b[l], im = bi[l];
    if (im == INT32_MAX) { /* nothing above -inf */
        *index = 0;
        return x[0];
    }
    *index = im;
    return mx;
}

/* ---------------------------------------------------------------- vector kernels */
typedef struct vf_math_kern {
    const char *name;
    void (*expf_n)(float *y, const float *x, size_t n);
    void (*exp_n)(double *y, const double *x, size_t n);
    float (*max_index)(const float *x, int n, int *index);
    double (*sum_exp)(const float *x, int n, float mx);
    double (*kld_sum)(const float *p, double p_lse, const float *q, double q_lse, int n);
    void (*softmax)(float *att, int n, float scale);
    void (*scores)(float *att, size_t lda, const float *q, size_t ldq, int nq, const float *kt,
                   size_t ldk, int hd, int n);
    void (*wsum)(float *o, size_t ldo, const float *w, size_t ldw, int nq, const float *v,
                 size_t ldv, int hd, int p0, int p1, int acc_in);
} vf_math_kern;

#define SIMD_W 4
#define SIMD_SFX _portable
#define SIMD_NAME "portable"
#define SB 2
#define CB 2
#include "vf_math_simd.h"

#if defined(__x86_64__)
#define SIMD_W 8
#define SIMD_SFX _avx2
#define SIMD_NAME "avx2"
#define SIMD_TGT "avx2"
#define SB 2
#define CB 2
#include "vf_math_simd.h"

#define SIMD_W 16
#define SIMD_SFX _avx512
#define SIMD_NAME "avx512"
#define SIMD_TGT "avx2,avx512f"
#define SB 4
#define CB 4
#include "vf_math_simd.h"
#endif

static int force_cap = -1;

void vf_math_force_path(int path) { force_cap = path; }

int vf_math_path(void)
{
#if defined(__x86_64__)
    unsigned f = lpk_cpu_features();
    if ((force_cap < 0 || force_cap >= VF_MATH_AVX512) && (f & LPK_CPU_AVX512F))
        return VF_MATH_AVX512;
    if ((force_cap < 0 || force_cap >= VF_MATH_AVX2) && (f & LPK_CPU_AVX2)) return VF_MATH_AVX2;
#endif
    return VF_MATH_PORTABLE;
}

static const vf_math_kern *kern(void)
{
#if defined(__x86_64__)
    switch (vf_math_path()) {
    case VF_MATH_AVX512: return &kern__avx512;
    case VF_MATH_AVX2: return &kern__avx2;
    default: break;
    }
#endif
    return &kern__portable;
}

const char *vf_math_path_name(void) { return kern()->name; }

void vf_expf_n(float *y, const float *x, size_t n) { kern()->expf_n(y, x, n); }
void vf_exp_n(double *y, const double *x, size_t n) { kern()->exp_n(y, x, n); }
float vf_max_index(const float *x, int n, int *index) { return kern()->max_index(x, n, index); }
double vf_sum_exp(const float *x, int n, float mx) { return kern()->sum_exp(x, n, mx); }
double vf_kld_sum(const float *p, double p_lse, const float *q, double q_lse, int n)
{
    return kern()->kld_sum(p, p_lse, q, q_lse, n);
}
void vf_softmax(float *att, int n, float scale) { kern()->softmax(att, n, scale); }
void vf_attn_scores(float *att, size_t lda, const float *q, size_t ldq, int nq, const float *kt,
                    size_t ldk, int hd, int n)
{
    kern()->scores(att, lda, q, ldq, nq, kt, ldk, hd, n);
}
void vf_attn_wsum(float *o, size_t ldo, const float *w, size_t ldw, int nq, const float *v,
                  size_t ldv, int hd, int p0, int p1, int acc_in)
{
    kern()->wsum(o, ldo, w, ldw, nq, v, ldv, hd, p0, p1, acc_in);
}
