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

/* glibc's expf (see vf_math.h): tab[i] = the bits of 2^(i / 32) less i << 47,
 * so that tab[k % 32] + (k << 47) are those of 2^(k / 32) */
static const uint64_t vf_exp2f_tab[32] = {
    0x3ff0000000000000ULL, 0x3fefd9b0d3158574ULL, 0x3fefb5586cf9890fULL, 0x3fef9301d0125b51ULL,
    0x3fef72b83c7d517bULL, 0x3fef54873168b9aaULL, 0x3fef387a6e756238ULL, 0x3fef1e9df51fdee1ULL,
    0x3fef06fe0a31b715ULL, 0x3feef1a7373aa9cbULL, 0x3feedea64c123422ULL, 0x3feece086061892dULL,
    0x3feebfdad5362a27ULL, 0x3feeb42b569d4f82ULL, 0x3feeab07dd485429ULL, 0x3feea47eb03a5585ULL,
    0x3feea09e667f3bcdULL, 0x3fee9f75e8ec5f74ULL, 0x3feea11473eb0187ULL, 0x3feea589994cce13ULL,
    0x3feeace5422aa0dbULL, 0x3feeb737b0cdc5e5ULL, 0x3feec49182a3f090ULL, 0x3feed503b23e255dULL,
    0x3feee89f995ad3adULL, 0x3feeff76f2fb5e47ULL, 0x3fef199bdd85529cULL, 0x3fef3720dcef9069ULL,
    0x3fef5818dcfba487ULL, 0x3fef7c97337b9b5fULL, 0x3fefa4afa2a490daULL, 0x3fefd0765b6e4540ULL,
};
#define VF_G_INVLN2N 0x1.71547652b82fep+5   /* 32 / ln 2 */
#define VF_G_SHIFT 0x1.8p+52
#define VF_G_C0 0x1.c6af84b912394p-20
#define VF_G_C1 0x1.ebfce50fac4f3p-13
#define VF_G_C2 0x1.62e42ff0c52d6p-6
#define VF_G_TOP 0x42b   /* (bits >> 20) & 0x7ff of 88.0f: from there, the special cases */

float vf_expf_glibc(float x)
{
    uint32_t ux = f2u(x), top = (ux >> 20) & 0x7ff;
    if (top >= VF_G_TOP) {
        if (ux == 0xff800000u) return 0.0f;        /* -inf */
        if (top >= 0x7f8) return x + x;            /* inf, NaN */
        if (x > 0x1.62e42ep6f) return INFINITY;    /* overflow */
        if (x < -0x1.9fe368p6f) return 0.0f;       /* underflow */
        if (x < -0x1.9d1d9ep6f) return 0x1p-149f;  /* glibc's "may underflow" */
    }
    double xd = (double)x;
    double kd = fma(VF_G_INVLN2N, xd, VF_G_SHIFT);
    uint64_t ki = d2u(kd);
    kd -= VF_G_SHIFT;
    double r = fma(VF_G_INVLN2N, xd, -kd);
    double s = u2d(vf_exp2f_tab[ki % 32] + (ki << 47));
    double z = fma(VF_G_C0, r, VF_G_C1);
    double r2 = r * r;
    double y = fma(VF_G_C2, r, 1.0);
    y = fma(z, r2, y);
    return (float)(y * s);
}

static void swiglu_scalar(float *h, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++) h[i] = h[i] / (1.0f + vf_expf_glibc(-h[i])) * u[i];
}

#if defined(__x86_64__)
/* vf_expf_glibc of 8 floats none of which takes a special case, lane by lane */
static LPK_TARGET_INLINE("avx2,avx512f") __m256 expf_glibc8_avx512(__m256 x)
{
    const __m512d c = _mm512_set1_pd(VF_G_INVLN2N), sh = _mm512_set1_pd(VF_G_SHIFT);
    __m512d xd = _mm512_cvtps_pd(x);
    __m512d kd = _mm512_fmadd_pd(c, xd, sh);
    __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, sh);
    __m512d r = _mm512_fmsub_pd(c, xd, kd);
    const __m512i *tab = (const __m512i *)(const void *)vf_exp2f_tab;
    __m512i lo = _mm512_permutex2var_epi64(_mm512_loadu_si512(tab), ki, _mm512_loadu_si512(tab + 1));
    __m512i hi = _mm512_permutex2var_epi64(_mm512_loadu_si512(tab + 2), ki, _mm512_loadu_si512(tab + 3));
    __m512i t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)), lo, hi);
    __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47)));
    __m512d z = _mm512_fmadd_pd(_mm512_set1_pd(VF_G_C0), r, _mm512_set1_pd(VF_G_C1));
    __m512d r2 = _mm512_mul_pd(r, r);
    __m512d y = _mm512_fmadd_pd(_mm512_set1_pd(VF_G_C2), r, _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(z, r2, y);
    return _mm512_cvtpd_ps(_mm512_mul_pd(y, s));
}

static LPK_TARGET("avx2,avx512f") void swiglu_avx512(float *h, const float *u, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(h + i);
        __m512 ng = _mm512_castsi512_ps(
            _mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32(INT32_MIN)));
        __m512i top = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(ng), 20),
                                       _mm512_set1_epi32(0x7ff));
        if (_mm512_cmpge_epi32_mask(top, _mm512_set1_epi32(VF_G_TOP))) {
            swiglu_scalar(h + i, u + i, 16);
            continue;
        }
        __m256 e0 = expf_glibc8_avx512(_mm512_castps512_ps256(ng));
        __m256 e1 = expf_glibc8_avx512(
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(ng), 1)));
        __m512 e = _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castpd256_pd512(_mm256_castps_pd(e0)), _mm256_castps_pd(e1), 1));
        __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), e);
        _mm512_storeu_ps(h + i, _mm512_mul_ps(_mm512_div_ps(g, d), _mm512_loadu_ps(u + i)));
    }
    swiglu_scalar(h + i, u + i, n - i);
}

/* vf_expf_glibc of 4 floats none of which takes a special case, lane by lane */
static LPK_TARGET_INLINE("avx2,fma") __m128 expf_glibc4_avx2(__m128 x)
{
    const __m256d c = _mm256_set1_pd(VF_G_INVLN2N), sh = _mm256_set1_pd(VF_G_SHIFT);
    __m256d xd = _mm256_cvtps_pd(x);
    __m256d kd = _mm256_fmadd_pd(c, xd, sh);
    __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, sh);
    __m256d r = _mm256_fmsub_pd(c, xd, kd);
    __m256i t = _mm256_i64gather_epi64((const long long *)(const void *)vf_exp2f_tab,
                                       _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
    __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64(ki, 47)));
    __m256d z = _mm256_fmadd_pd(_mm256_set1_pd(VF_G_C0), r, _mm256_set1_pd(VF_G_C1));
    __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(_mm256_set1_pd(VF_G_C2), r, _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, s));
}

static LPK_TARGET("avx2,fma") void swiglu_avx2(float *h, const float *u, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(h + i);
        __m256 ng = _mm256_castsi256_ps(
            _mm256_xor_si256(_mm256_castps_si256(g), _mm256_set1_epi32(INT32_MIN)));
        __m256i top = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(ng), 20),
                                       _mm256_set1_epi32(0x7ff));
        if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(top, _mm256_set1_epi32(VF_G_TOP - 1)))) {
            swiglu_scalar(h + i, u + i, 8);
            continue;
        }
        __m256 e = _mm256_set_m128(expf_glibc4_avx2(_mm256_extractf128_ps(ng, 1)),
                                   expf_glibc4_avx2(_mm256_castps256_ps128(ng)));
        __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_div_ps(g, d), _mm256_loadu_ps(u + i)));
    }
    swiglu_scalar(h + i, u + i, n - i);
}
#endif

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
void vf_swiglu(float *h, const float *u, size_t n)
{
#if defined(__x86_64__)
    switch (vf_math_path()) {
    case VF_MATH_AVX512: swiglu_avx512(h, u, n); return;
    case VF_MATH_AVX2:
        if (lpk_cpu_features() & LPK_CPU_FMA) {
            swiglu_avx2(h, u, n);
            return;
        }
        break;
    default: break;
    }
#endif
    swiglu_scalar(h, u, n);
}
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
