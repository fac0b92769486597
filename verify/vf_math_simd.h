/* verify/ internal: the vector kernels of vf_math.c, written once with GCC/Clang
 * vector extensions and included once per instruction set (the SIMD template
 * of docs/ARCHITECTURE.md). Parameters: SIMD_W (floats per vector: 4 for the
 * portable path, SSE2/NEON or plain code; 8: AVX2; 16: AVX-512), SIMD_SFX
 * (name suffix), SIMD_NAME (path name), SIMD_TGT (target string; not defined
 * for the portable path), SB (score vectors per tile row), CB (weighted-sum
 * vectors per tile row); all undefined at the end.
 *
 * Every lane performs the operations the scalar reference (vf_math.c) writes
 * down, in the same order: plain multiplies and adds (the build does not
 * contract them into fused multiply-adds), so each path gives the same bits. */

#define SIMD_CAT_(a, b) a##b
#define SIMD_CAT(a, b) SIMD_CAT_(a, b)
#define FN(n) SIMD_CAT(n, SIMD_SFX)
#define VB (4 * SIMD_W)   /* bytes per vector */

#define VW SIMD_W   /* floats per vector */
#define VD (VB / 8)   /* doubles per vector */
#define ND (VF_SUM_LANES / VD)   /* double vectors per group of VF_SUM_LANES */

typedef float FN(vf_t) __attribute__((vector_size(VB)));
typedef int32_t FN(vi_t) __attribute__((vector_size(VB)));
typedef double FN(vd_t) __attribute__((vector_size(VB)));
typedef int64_t FN(vl_t) __attribute__((vector_size(VB)));
typedef float FN(vh_t) __attribute__((vector_size(VB / 2)));   /* VD floats */
#define vF FN(vf_t)
#define vI FN(vi_t)
#define vD FN(vd_t)
#define vL FN(vl_t)
#define vH FN(vh_t)

/* static (inlined) functions: for SIMD_TGT, or for the baseline */
#ifdef SIMD_TGT
#define SFN LPK_SIMD_FN
#define INL LPK_SIMD_INL
#else
#define SFN static
#define INL static inline __attribute__((always_inline))
#endif

INL vF FN(bf)(float c)
{
    vF v;
    for (int i = 0; i < VW; i++) v[i] = c;
    return v;
}
INL vD FN(bd)(double c)
{
    vD v;
    for (int i = 0; i < VD; i++) v[i] = c;
    return v;
}
INL vI FN(bi)(int32_t c)
{
    vI v;
    for (int i = 0; i < VW; i++) v[i] = c;
    return v;
}
INL vF FN(ldf)(const float *p)
{
    vF v;
    memcpy(&v, p, sizeof v);
    return v;
}
INL void FN(stf)(float *p, vF v) { memcpy(p, &v, sizeof v); }
/* VD floats widened to doubles */
INL vD FN(ldh)(const float *p)
{
#if VB == 64
    return (vD)_mm512_cvtps_pd(_mm256_loadu_ps(p));
#elif VB == 32
    return (vD)_mm256_cvtps_pd(_mm_loadu_ps(p));
#else
    vH h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, vD);
#endif
}
/* the first k (< VD) floats widened, the other lanes 0 */
INL vD FN(ldh_part)(const float *p, int k)
{
    vH h = {0};
    memcpy(&h, p, (size_t)k * sizeof(float));
    return __builtin_convertvector(h, vD);
}
INL vF FN(self)(vI m, vF a, vF b) { return (vF)(((vI)a & m) | ((vI)b & ~m)); }
INL vD FN(seld)(vL m, vD a, vD b) { return (vD)(((vL)a & m) | ((vL)b & ~m)); }
/* x > c ? x : c and x < c ? x : c, lane by lane (the x86 max/min instructions) */
#if VB == 64
#define MAXF(x, c) ((vF)_mm512_max_ps((__m512)(x), _mm512_set1_ps(c)))
#define MINF(x, c) ((vF)_mm512_min_ps((__m512)(x), _mm512_set1_ps(c)))
#define MAXD(x, c) ((vD)_mm512_max_pd((__m512d)(x), _mm512_set1_pd(c)))
#define MIND(x, c) ((vD)_mm512_min_pd((__m512d)(x), _mm512_set1_pd(c)))
#elif VB == 32
#define MAXF(x, c) ((vF)_mm256_max_ps((__m256)(x), _mm256_set1_ps(c)))
#define MINF(x, c) ((vF)_mm256_min_ps((__m256)(x), _mm256_set1_ps(c)))
#define MAXD(x, c) ((vD)_mm256_max_pd((__m256d)(x), _mm256_set1_pd(c)))
#define MIND(x, c) ((vD)_mm256_min_pd((__m256d)(x), _mm256_set1_pd(c)))
#else
#define MAXF(x, c) FN(self)((x) > (c), (x), FN(bf)(c))
#define MINF(x, c) FN(self)((x) < (c), (x), FN(bf)(c))
#define MAXD(x, c) FN(seld)((x) > (c), (x), FN(bd)(c))
#define MIND(x, c) FN(seld)((x) < (c), (x), FN(bd)(c))
#endif

/* vf_expf_ref, lane by lane */
INL vF FN(expf_v)(vF x)
{
    x = MINF(MAXF(x, VF_EXPF_LO), VF_EXPF_HI);
    vF t = x * VF_LOG2E_F + VF_MAGIC_F;
    vF n = t - VF_MAGIC_F;
    vF r = x - n * VF_LN2HI_F;
    r = r - n * VF_LN2LO_F;
    vF p = FN(bf)(VF_EXPF_C7);
    p = p * r + VF_EXPF_C6;
    p = p * r + VF_EXPF_C5;
    p = p * r + VF_EXPF_C4;
    p = p * r + VF_EXPF_C3;
    p = p * r + VF_EXPF_C2;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vI ni = (vI)t - VF_MAGIC_F_BITS;
    vI n1 = ni >> 1, n2 = ni - n1;
    vF s1 = (vF)((n1 + 127) << 23), s2 = (vF)((n2 + 127) << 23);
    return p * s1 * s2;
}

/* vf_exp_ref, lane by lane */
INL vD FN(exp_v)(vD x)
{
    x = MIND(MAXD(x, VF_EXP_LO), VF_EXP_HI);
    vD t = x * VF_LOG2E + VF_MAGIC;
    vD n = t - VF_MAGIC;
    vD r = x - n * VF_LN2HI;
    r = r - n * VF_LN2LO;
    vD p = FN(bd)(VF_EXP_C13);
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
    vL ni = (vL)t - VF_MAGIC_BITS;
    vL n1 = ni >> 1, n2 = ni - n1;
    vD s1 = (vD)((n1 + 1023) << 52), s2 = (vD)((n2 + 1023) << 52);
    return p * s1 * s2;
}

SFN void FN(expf_n)(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + VW <= n; i += VW) FN(stf)(y + i, FN(expf_v)(FN(ldf)(x + i)));
    if (i < n) {
        vF v = {0};
        memcpy(&v, x + i, (n - i) * sizeof(float));
        v = FN(expf_v)(v);
        memcpy(y + i, &v, (n - i) * sizeof(float));
    }
}

SFN void FN(exp_n)(double *y, const double *x, size_t n)
{
    size_t i = 0;
    for (; i + VD <= n; i += VD) {
        vD v;
        memcpy(&v, x + i, sizeof v);
        v = FN(exp_v)(v);
        memcpy(y + i, &v, sizeof v);
    }
    if (i < n) {
        vD v = {0};
        memcpy(&v, x + i, (n - i) * sizeof(double));
        v = FN(exp_v)(v);
        memcpy(y + i, &v, (n - i) * sizeof(double));
    }
}

/* Lane l of the result vector: l < k (lanes k.. are masked off). */
INL vL FN(lanes_below)(int k)
{
    vL lane, m;
    for (int i = 0; i < VD; i++) lane[i] = i;
    for (int i = 0; i < VD; i++) m[i] = k;
    return lane < m;
}

INL double FN(reduce8)(const vD *acc)
{
    double a[VF_SUM_LANES];
    for (int k = 0; k < ND; k++) memcpy(a + k * VD, &acc[k], sizeof acc[k]);
    return vf_sum_lanes(a);
}

/* sum of exp((double)x[i] - mx), lane i % 8 */
SFN double FN(sum_exp)(const float *x, int n, float mx)
{
    vD acc[ND];
    for (int k = 0; k < ND; k++) acc[k] = FN(bd)(0.0);
    double m = mx;
    int i = 0;
    for (; i + 2 * VF_SUM_LANES <= n; i += 2 * VF_SUM_LANES) {
        vD e[2 * ND];   /* independent: computed side by side, added in order */
        for (int k = 0; k < 2 * ND; k++) e[k] = FN(exp_v)(FN(ldh)(x + i + k * VD) - m);
        for (int k = 0; k < 2 * ND; k++) acc[k % ND] += e[k];
    }
    for (; i + VF_SUM_LANES <= n; i += VF_SUM_LANES)
        for (int k = 0; k < ND; k++) acc[k] += FN(exp_v)(FN(ldh)(x + i + k * VD) - m);
    for (int k = 0; k < ND && i + k * VD < n; k++) {
        int rem = n - i - k * VD;
        if (rem > VD) rem = VD;
        vD e = FN(exp_v)(FN(ldh_part)(x + i + k * VD, rem) - m);
        acc[k] += FN(seld)(FN(lanes_below)(rem), e, FN(bd)(0.0));
    }
    return FN(reduce8)(acc);
}

/* sum of exp(lp) * (lp - lq), lp = (double)p[i] - p_lse, lq = (double)q[i] - q_lse */
INL vD FN(kld_term)(vD p, vD q, double p_lse, double q_lse)
{
    vD lp = p - p_lse, lq = q - q_lse;
    return FN(exp_v)(lp) * (lp - lq);
}

SFN double FN(kld_sum)(const float *p, double p_lse, const float *q, double q_lse, int n)
{
    vD acc[ND];
    for (int k = 0; k < ND; k++) acc[k] = FN(bd)(0.0);
    int i = 0;
    for (; i + 2 * VF_SUM_LANES <= n; i += 2 * VF_SUM_LANES) {
        vD t[2 * ND];
        for (int k = 0; k < 2 * ND; k++)
            t[k] = FN(kld_term)(FN(ldh)(p + i + k * VD), FN(ldh)(q + i + k * VD), p_lse, q_lse);
        for (int k = 0; k < 2 * ND; k++) acc[k % ND] += t[k];
    }
    for (; i + VF_SUM_LANES <= n; i += VF_SUM_LANES)
        for (int k = 0; k < ND; k++)
            acc[k] += FN(kld_term)(FN(ldh)(p + i + k * VD), FN(ldh)(q + i + k * VD), p_lse, q_lse);
    for (int k = 0; k < ND && i + k * VD < n; k++) {
        int rem = n - i - k * VD;
        if (rem > VD) rem = VD;
        vD t = FN(kld_term)(FN(ldh_part)(p + i + k * VD, rem), FN(ldh_part)(q + i + k * VD, rem),
                            p_lse, q_lse);
        acc[k] += FN(seld)(FN(lanes_below)(rem), t, FN(bd)(0.0));
    }
    return FN(reduce8)(acc);
}

/* Largest x[i] and the first index holding it (lane-wise, then across lanes). */
SFN float FN(max_index)(const float *x, int n, int *index)
{
    vF best = FN(bf)(-INFINITY);
    vI bidx = FN(bi)(INT32_MAX), idx;
    for (int l = 0; l < VW; l++) idx[l] = l;
    int i = 0;
    for (; i + VW <= n; i += VW, idx += VW) {
        vF v = FN(ldf)(x + i);
        vI m = v > best;
        best = FN(self)(m, v, best);
        bidx = (bidx & ~m) | (idx & m);
    }
    if (i < n) {
        vF v = FN(bf)(-INFINITY);
        memcpy(&v, x + i, (size_t)(n - i) * sizeof(float));
        vI m = v > best;
        best = FN(self)(m, v, best);
        bidx = (bidx & ~m) | (idx & m);
    }
    float b[VW];
    int32_t bi[VW];
    memcpy(b, &best, sizeof b);
    memcpy(bi, &bidx, sizeof bi);
    return vf_max_lanes(b, bi, VW, x, index);
}

/* att[p] *= scale; e = exp(att[p] - max); att[p] = e * (float)(1 / sum e) for
 * p < n. att is readable and writable up to n rounded up to VW. */
SFN void FN(softmax)(float *att, int n, float scale)
{
    vF best = FN(bf)(-INFINITY);
    int p = 0;
    for (; p + VW <= n; p += VW) {
        vF v = FN(ldf)(att + p) * scale;
        FN(stf)(att + p, v);
        best = FN(self)(v > best, v, best);
    }
    if (p < n) {
        vF v = FN(ldf)(att + p) * scale;
        FN(stf)(att + p, v);
        vI lane, k = FN(bi)(n - p);
        for (int l = 0; l < VW; l++) lane[l] = l;
        v = FN(self)(lane < k, v, FN(bf)(-INFINITY));
        best = FN(self)(v > best, v, best);
    }
    float b[VW], mx = -INFINITY;
    memcpy(b, &best, sizeof b);
    for (int l = 0; l < VW; l++) mx = b[l] > mx ? b[l] : mx;
    for (p = 0; p < n; p += VW) FN(stf)(att + p, FN(expf_v)(FN(ldf)(att + p) - mx));
    vD acc[ND];
    for (int k = 0; k < ND; k++) acc[k] = FN(bd)(0.0);
    for (p = 0; p + VF_SUM_LANES <= n; p += VF_SUM_LANES)
        for (int k = 0; k < ND; k++) acc[k] += FN(ldh)(att + p + k * VD);
    for (int k = 0; k < ND && p + k * VD < n; k++) {
        int rem = n - p - k * VD;
        if (rem > VD) rem = VD;
        acc[k] += FN(ldh_part)(att + p + k * VD, rem);
    }
    float inv = (float)(1.0 / FN(reduce8)(acc));
    for (p = 0; p < n; p += VW) FN(stf)(att + p, FN(ldf)(att + p) * inv);
}

/* att[j][p] = sum_i q[j][i] * kt[i][p] (i in order) for j < nq, p0 <= p < p0 +
 * VW * ns */
INL void FN(scores_blk)(float *att, size_t lda, const float *q, size_t ldq, const float *kt,
                        size_t ldk, int hd, int p0, const int nq, const int ns)
{
    /* the loops over j and s unrolled (nq and ns are constants here): the
     * sums then live in registers, not on the stack */
    vF acc[4][SB];
#pragma GCC unroll 4
    for (int j = 0; j < nq; j++)
#pragma GCC unroll 4
        for (int s = 0; s < ns; s++) acc[j][s] = FN(bf)(0.0f);
    for (int i = 0; i < hd; i++) {
        const float *kr = kt + (size_t)i * ldk + p0;
        vF k[SB];
#pragma GCC unroll 4
        for (int s = 0; s < ns; s++) k[s] = FN(ldf)(kr + s * VW);
#pragma GCC unroll 4
        for (int j = 0; j < nq; j++) {
            vF qb = FN(bf)(q[(size_t)j * ldq + i]);
#pragma GCC unroll 4
            for (int s = 0; s < ns; s++) acc[j][s] += qb * k[s];
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < nq; j++)
#pragma GCC unroll 4
        for (int s = 0; s < ns; s++) FN(stf)(att + (size_t)j * lda + p0 + s * VW, acc[j][s]);
}

/* scores for p < n rounded up to VW */
INL void FN(scores_nq)(float *att, size_t lda, const float *q, size_t ldq, const float *kt,
                       size_t ldk, int hd, int n, const int nq)
{
    int p = 0;
    for (; p + VW * SB <= n; p += VW * SB)
        FN(scores_blk)(att, lda, q, ldq, kt, ldk, hd, p, nq, SB);
    for (; p < n; p += VW) FN(scores_blk)(att, lda, q, ldq, kt, ldk, hd, p, nq, 1);
}

SFN void FN(scores)(float *att, size_t lda, const float *q, size_t ldq, int nq,
                             const float *kt, size_t ldk, int hd, int n)
{
    switch (nq) {
    case 1: FN(scores_nq)(att, lda, q, ldq, kt, ldk, hd, n, 1); break;
    case 2: FN(scores_nq)(att, lda, q, ldq, kt, ldk, hd, n, 2); break;
    case 3: FN(scores_nq)(att, lda, q, ldq, kt, ldk, hd, n, 3); break;
    default: FN(scores_nq)(att, lda, q, ldq, kt, ldk, hd, n, 4); break;
    }
}

/* o[j][i] (+)= sum_{p0 <= p < p1} w[j][p] * v[p][i] (p in order), columns
 * i0 .. i0 + VW * nc - 1 */
INL void FN(wsum_cols)(float *o, size_t ldo, const float *w, size_t ldw, const float *v,
                       size_t ldv, int i0, int p0, int p1, int acc_in, const int nq, const int nc)
{
    vF acc[4][CB];
#pragma GCC unroll 4
    for (int j = 0; j < nq; j++)
#pragma GCC unroll 4
        for (int c = 0; c < nc; c++)
            acc[j][c] = acc_in ? FN(ldf)(o + (size_t)j * ldo + i0 + c * VW) : FN(bf)(0.0f);
    for (int p = p0; p < p1; p++) {
        const float *vr = v + (size_t)p * ldv + i0;
        vF x[CB];
#pragma GCC unroll 4
        for (int c = 0; c < nc; c++) x[c] = FN(ldf)(vr + c * VW);
#pragma GCC unroll 4
        for (int j = 0; j < nq; j++) {
            vF wb = FN(bf)(w[(size_t)j * ldw + p]);
#pragma GCC unroll 4
            for (int c = 0; c < nc; c++) acc[j][c] += wb * x[c];
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < nq; j++)
#pragma GCC unroll 4
        for (int c = 0; c < nc; c++) FN(stf)(o + (size_t)j * ldo + i0 + c * VW, acc[j][c]);
}

INL void FN(wsum_nq)(float *o, size_t ldo, const float *w, size_t ldw, const float *v,
                     size_t ldv, int hd, int p0, int p1, int acc_in, const int nq)
{
    int i0 = 0;
    for (; i0 + VW * CB <= hd; i0 += VW * CB)
        FN(wsum_cols)(o, ldo, w, ldw, v, ldv, i0, p0, p1, acc_in, nq, CB);
    for (; i0 + VW <= hd; i0 += VW) FN(wsum_cols)(o, ldo, w, ldw, v, ldv, i0, p0, p1, acc_in, nq, 1);
    for (; i0 < hd; i0++)
        for (int j = 0; j < nq; j++) {
            float a = acc_in ? o[(size_t)j * ldo + i0] : 0.0f;
            for (int p = p0; p < p1; p++) a += w[(size_t)j * ldw + p] * v[(size_t)p * ldv + i0];
            o[(size_t)j * ldo + i0] = a;
        }
}

SFN void FN(wsum)(float *o, size_t ldo, const float *w, size_t ldw, int nq,
                           const float *v, size_t ldv, int hd, int p0, int p1, int acc_in)
{
    switch (nq) {
    case 1: FN(wsum_nq)(o, ldo, w, ldw, v, ldv, hd, p0, p1, acc_in, 1); break;
    case 2: FN(wsum_nq)(o, ldo, w, ldw, v, ldv, hd, p0, p1, acc_in, 2); break;
    case 3: FN(wsum_nq)(o, ldo, w, ldw, v, ldv, hd, p0, p1, acc_in, 3); break;
    default: FN(wsum_nq)(o, ldo, w, ldw, v, ldv, hd, p0, p1, acc_in, 4); break;
    }
}

static const vf_math_kern FN(kern_) = {
    SIMD_NAME, FN(expf_n), FN(exp_n), FN(max_index), FN(sum_exp), FN(kld_sum), FN(softmax),
    FN(scores), FN(wsum),
};

#undef vF
#undef vI
#undef vD
#undef vL
#undef vH
#undef INL
#undef SFN
#undef VW
#undef VD
#undef ND
#undef FN
#undef SIMD_CAT
#undef SIMD_CAT_
#undef MAXF
#undef MINF
#undef MAXD
#undef MIND
#undef VB
#undef SIMD_W
#undef SIMD_SFX
#undef SIMD_NAME
#undef SIMD_TGT
#undef SB
#undef CB
