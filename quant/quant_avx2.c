/* AVX2 inner loops of the 32-block scale searches. Same operations in the same
 * order as quant_ref.c (one 8-lane accumulator, blocks of 8 in index order, the
 * qi_hsum8 reduction; no FMA), so the bytes produced are identical. */
#include "quant_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

static inline LPK_TARGET("avx2") float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

static inline LPK_TARGET("avx2") __m256 rnd_clamp(__m256 v, __m256 lo, __m256 hi)
{
    v = _mm256_max_ps(_mm256_min_ps(v, hi), lo);
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static LPK_TARGET("avx2") float sym_err_avx2(const float *x, const float *w, int n, float d, float lo,
                              float hi)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256 vid = _mm256_set1_ps(id), vd = _mm256_set1_ps(d);
    __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi), acc = _mm256_setzero_ps();
    for (int k = 0; k < n; k += 8) {
        __m256 xv = _mm256_loadu_ps(x + k);
        __m256 q = rnd_clamp(_mm256_mul_ps(xv, vid), vlo, vhi);
        __m256 e = _mm256_sub_ps(xv, _mm256_mul_ps(q, vd));
        __m256 we = w ? _mm256_mul_ps(_mm256_loadu_ps(w + k), e) : e;
        acc = _mm256_add_ps(acc, _mm256_mul_ps(we, e));
    }
    return hsum(acc);
}

static LPK_TARGET("avx2") void sym_sums_avx2(const float *x, const float *w, int n, float d, float lo,
                              float hi, float *sxq, float *sqq)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256 vid = _mm256_set1_ps(id), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    for (int k = 0; k < n; k += 8) {
        __m256 xv = _mm256_loadu_ps(x + k);
        __m256 q = rnd_clamp(_mm256_mul_ps(xv, vid), vlo, vhi);
        __m256 wq = w ? _mm256_mul_ps(_mm256_loadu_ps(w + k), q) : q;
        a = _mm256_add_ps(a, _mm256_mul_ps(wq, xv));
        b = _mm256_add_ps(b, _mm256_mul_ps(wq, q));
    }
    *sxq = hsum(a);
    *sqq = hsum(b);
}

static LPK_TARGET("avx2") float asym_err_avx2(const float *x, const float *w, int n, float d, float m,
                               float hi)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256 vid = _mm256_set1_ps(id), vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_set1_ps(hi), acc = _mm256_setzero_ps();
    for (int k = 0; k < n; k += 8) {
        __m256 xv = _mm256_loadu_ps(x + k);
        __m256 q = rnd_clamp(_mm256_mul_ps(_mm256_sub_ps(xv, vm), vid), vlo, vhi);
        __m256 e = _mm256_sub_ps(xv, _mm256_add_ps(_mm256_mul_ps(q, vd), vm));
        __m256 we = w ? _mm256_mul_ps(_mm256_loadu_ps(w + k), e) : e;
        acc = _mm256_add_ps(acc, _mm256_mul_ps(we, e));
    }
    return hsum(acc);
}

static LPK_TARGET("avx2") void asym_sums_avx2(const float *x, const float *w, int n, float d, float m,
                               float hi, float s[3])
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256 vid = _mm256_set1_ps(id), vm = _mm256_set1_ps(m);
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_set1_ps(hi);
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps(), c = _mm256_setzero_ps();
    for (int k = 0; k < n; k += 8) {
        __m256 xv = _mm256_loadu_ps(x + k);
        __m256 q = rnd_clamp(_mm256_mul_ps(_mm256_sub_ps(xv, vm), vid), vlo, vhi);
        __m256 wq = w ? _mm256_mul_ps(_mm256_loadu_ps(w + k), q) : q;
        a = _mm256_add_ps(a, wq);
        b = _mm256_add_ps(b, _mm256_mul_ps(wq, q));
        c = _mm256_add_ps(c, _mm256_mul_ps(wq, xv));
    }
    s[0] = hsum(a);
    s[1] = hsum(b);
    s[2] = hsum(c);
}

/* e[k] = sym_err_avx2(x, w, n, d[k], lo, hi): the block is loaded once and the
 * candidates, independent of each other, overlap in the pipeline. */
static LPK_TARGET("avx2") void sym_err_n_avx2(const float *x, const float *w, int n, const float *d, int nd,
                               float lo, float hi, float *e)
{
    if (n != 32) {
        for (int k = 0; k < nd; k++) e[k] = sym_err_avx2(x, w, n, d[k], lo, hi);
        return;
    }
    __m256 xv[4], wv[4];
    for (int j = 0; j < 4; j++) {
        xv[j] = _mm256_loadu_ps(x + 8 * j);
        wv[j] = w ? _mm256_loadu_ps(w + 8 * j) : _mm256_setzero_ps();
    }
    __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    for (int k = 0; k < nd; k++) {
        float id = d[k] != 0.0f ? 1.0f / d[k] : 0.0f;
        __m256 vid = _mm256_set1_ps(id), vd = _mm256_set1_ps(d[k]), acc = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            __m256 q = rnd_clamp(_mm256_mul_ps(xv[j], vid), vlo, vhi);
            __m256 ej = _mm256_sub_ps(xv[j], _mm256_mul_ps(q, vd));
            __m256 we = w ? _mm256_mul_ps(wv[j], ej) : ej;
            acc = _mm256_add_ps(acc, _mm256_mul_ps(we, ej));
        }
        e[k] = hsum(acc);
    }
}

static inline LPK_TARGET("avx2") float amax32_avx2(const float *x, int *neg)
{
    __m256 v[4], sm = _mm256_set1_ps(-0.0f);
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
    __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sm, v[0]), _mm256_andnot_ps(sm, v[1])),
                             _mm256_max_ps(_mm256_andnot_ps(sm, v[2]), _mm256_andnot_ps(sm, v[3])));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    float amax = _mm_cvtss_f32(m);
    __m256 na = _mm256_set1_ps(-amax), en = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) en = _mm256_or_ps(en, _mm256_cmp_ps(v[k], na, _CMP_EQ_OQ));
    *neg = _mm256_movemask_ps(en) != 0;
    return amax;
}

static LPK_TARGET("avx2") void sym_assign32_avx2(const float *x, float d, int nlo, int nhi, int q[32])
{
    __m256 vid = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256 lo = _mm256_set1_ps((float)-nlo), hi = _mm256_set1_ps((float)nhi);
    for (int k = 0; k < 4; k++)
        _mm256_storeu_si256((__m256i *)(void *)(q + 8 * k),
                            _mm256_cvtps_epi32(rnd_clamp(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid), lo, hi)));
}

/* qi_f16_sat and lpk_f16_to_f32 by F16C: round to nearest even, the same
 * values for the finite inputs the searches convert */
static LPK_TARGET("avx2,f16c") uint16_t f2h_f16c(float v)
{
    uint16_t h = (uint16_t)_mm_extract_epi16(
        _mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), 0);
    if ((h & 0x7fff) >= 0x7c00) h = (uint16_t)((h & 0x8000) | 0x7bff);
    return h;
}

static LPK_TARGET("avx2,f16c") float h2f_f16c(uint16_t h)
{
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* True when x[0..n) holds a NaN or an Inf (exponent bits all set). */
LPK_TARGET("avx2") int quant_avx2_any_nonfinite(const float *x, int64_t n)
{
    __m256i e = _mm256_set1_epi32(0x7f800000), acc = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(x + i)), e);
        acc = _mm256_or_si256(acc, _mm256_cmpeq_epi32(v, e));
    }
    int any = !_mm256_testz_si256(acc, acc);
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        any |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return any;
}

/* On the bits: |x| clears the sign; finite values are at most FLT_MAX's bits,
 * Inf and NaN above them, so an unsigned minimum saturates exactly those. */
LPK_TARGET("avx2") void quant_avx2_abs_weights(const float *x, float *w, int64_t n)
{
    const __m256i abs = _mm256_set1_epi32(0x7fffffff), top = _mm256_set1_epi32(0x7f7fffff);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(x + i)), abs);
        _mm256_storeu_si256((__m256i *)(void *)(w + i), _mm256_min_epu32(u, top));
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        u &= 0x7fffffffu;
        u = u < 0x7f7fffffu ? u : 0x7f7fffffu;
        memcpy(&w[i], &u, 4);
    }
}

/* 8 levels (int32, offset already taken off) times d, stored at y. */
static LPK_TARGET_INLINE("avx2") void deq8(__m256i q, __m256 d, float *y)
{
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
}

/* 32 levels times d plus m (q * d then + m, two roundings as in the
 * reference), stored at y; d and m as f16 bits. */
static LPK_TARGET_INLINE("avx2,f16c") void deq32m(const __m256i v[4], uint16_t dh, uint16_t mh,
                                                  float *y)
{
    __m256 d = _mm256_set1_ps(_cvtsh_ss(dh)), m = _mm256_set1_ps(_cvtsh_ss(mh));
    for (int k = 0; k < 4; k++)
        _mm256_storeu_ps(y + 8 * k,
                         _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v[k]), d), m));
}

/* The 32 levels of a 4-bit block as int32, 8 per vector: element j in the low
 * nibble of byte j, element j + 16 in the high one. */
static LPK_TARGET_INLINE("avx2") void q4_levels(const uint8_t *qs, __m256i v[4])
{
    const __m128i m4 = _mm_set1_epi8(15);
    __m128i q = _mm_loadu_si128((const __m128i *)(const void *)qs);
    __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    v[0] = _mm256_cvtepu8_epi32(lo);
    v[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
    v[2] = _mm256_cvtepu8_epi32(hi);
    v[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
}

/* The 32 levels of a 5-bit block: the 4-bit ones, bit j of qh the fifth bit
 * of element j. */
static LPK_TARGET_INLINE("avx2") void q5_levels(const uint8_t *qs, const uint8_t *qhb,
                                                __m256i v[4])
{
    const __m256i one = _mm256_set1_epi32(1), sh = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    uint32_t qh = lpk_rd32(qhb);
    q4_levels(qs, v);
    for (int k = 0; k < 4; k++) {
        __m256i h = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)(qh >> (8 * k))),
                                                       sh), one);
        v[k] = _mm256_or_si256(v[k], _mm256_slli_epi32(h, 4));
    }
}

LPK_TARGET("avx2,f16c") void quant_avx2_deq_q4_0(const void *src, float *y, int64_t n)
{
    const block_q4_0 *b = src;
    const __m256i off = _mm256_set1_epi32(8);
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
        __m256i v[4];
        q4_levels(b[i].qs, v);
        for (int k = 0; k < 4; k++) deq8(_mm256_sub_epi32(v[k], off), d, y + 8 * k);
    }
}

LPK_TARGET("avx2,f16c") void quant_avx2_deq_q4_1(const void *src, float *y, int64_t n)
{
    const block_q4_1 *b = src;
    __m256i v[4];
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        q4_levels(b[i].qs, v);
        deq32m(v, b[i].d, b[i].m, y);
    }
}

LPK_TARGET("avx2,f16c") void quant_avx2_deq_q5_0(const void *src, float *y, int64_t n)
{
    const block_q5_0 *b = src;
    const __m256i off = _mm256_set1_epi32(16);
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
        __m256i v[4];
        q5_levels(b[i].qs, b[i].qh, v);
        for (int k = 0; k < 4; k++) deq8(_mm256_sub_epi32(v[k], off), d, y + 8 * k);
    }
}

LPK_TARGET("avx2,f16c") void quant_avx2_deq_q5_1(const void *src, float *y, int64_t n)
{
    const block_q5_1 *b = src;
    __m256i v[4];
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        q5_levels(b[i].qs, b[i].qh, v);
        deq32m(v, b[i].d, b[i].m, y);
    }
}

LPK_TARGET("avx2,f16c") void quant_avx2_deq_q8_0(const void *src, float *y, int64_t n)
{
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
        for (int k = 0; k < 4; k++)
            deq8(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b[i].qs + 8 * k))),
                 d, y + 8 * k);
    }
}

LPK_TARGET("avx2") void quant_avx2_err_lanes(const float *x, const float *y, int64_t n,
                                              double *le, double *ls)
{
    __m256d e[4], s[4];
    for (int k = 0; k < 4; k++) e[k] = s[k] = _mm256_setzero_pd();
    for (int64_t i = 0; i + 16 <= n; i += 16)
        for (int k = 0; k < 4; k++) {
            __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * k));
            __m256d d = _mm256_sub_pd(a, _mm256_cvtps_pd(_mm_loadu_ps(y + i + 4 * k)));
            e[k] = _mm256_add_pd(e[k], _mm256_mul_pd(d, d));
            s[k] = _mm256_add_pd(s[k], _mm256_mul_pd(a, a));
        }
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_pd(le + 4 * k, e[k]);
        _mm256_storeu_pd(ls + 4 * k, s[k]);
    }
}

static const qi_ops ops_avx2 = {sym_err_avx2,   sym_sums_avx2, asym_err_avx2,
                                asym_sums_avx2, sym_err_n_avx2, amax32_avx2,
                                sym_assign32_avx2, f2h_f16c,    h2f_f16c};

/* ---------------------------------------------------------------- lanes */
/* The lane primitives of quant_lanes.h over 8 blocks (one per float lane). */
#define SIMD_W 8
#define SIMD_TGT "avx2,fma,f16c"
typedef __m256 qv;
typedef __m256 qm;  /* all-ones lanes */
typedef __m128i qh; /* 8 halves */

LPK_SIMD_INL qv v_zero(void) { return _mm256_setzero_ps(); }
LPK_SIMD_INL qv v_set1(float a) { return _mm256_set1_ps(a); }
LPK_SIMD_INL qv v_add(qv a, qv b) { return _mm256_add_ps(a, b); }
LPK_SIMD_INL qv v_sub(qv a, qv b) { return _mm256_sub_ps(a, b); }
LPK_SIMD_INL qv v_mul(qv a, qv b) { return _mm256_mul_ps(a, b); }
LPK_SIMD_INL qv v_div(qv a, qv b) { return _mm256_div_ps(a, b); }
LPK_SIMD_INL qv v_min(qv a, qv b) { return _mm256_min_ps(a, b); }
LPK_SIMD_INL qv v_max(qv a, qv b) { return _mm256_max_ps(a, b); }
LPK_SIMD_INL qv v_abs(qv a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
LPK_SIMD_INL qv v_neg(qv a) { return _mm256_xor_ps(_mm256_set1_ps(-0.0f), a); }
LPK_SIMD_INL qv v_fnmadd(qv a, qv b, qv c) { return _mm256_fnmadd_ps(a, b, c); }
LPK_SIMD_INL qv v_fmadd(qv a, qv b, qv c) { return _mm256_fmadd_ps(a, b, c); }
/* round to nearest even (qi_round for |a| < 2^22, but for the sign of a zero) */
LPK_SIMD_INL qv v_round(qv a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
LPK_SIMD_INL qm v_lt(qv a, qv b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
LPK_SIMD_INL qm v_gt(qv a, qv b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
LPK_SIMD_INL qm v_eq(qv a, qv b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
LPK_SIMD_INL qm v_neq(qv a, qv b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }
LPK_SIMD_INL qm v_finite(qv a) { return _mm256_cmp_ps(v_abs(a), _mm256_set1_ps(INFINITY), _CMP_LT_OQ); }
LPK_SIMD_INL qm v_notfinite(qv a) { return _mm256_cmp_ps(v_abs(a), _mm256_set1_ps(INFINITY), _CMP_NLT_UQ); }
LPK_SIMD_INL qm m_zero(void) { return _mm256_setzero_ps(); }
LPK_SIMD_INL qm m_or(qm a, qm b) { return _mm256_or_ps(a, b); }
LPK_SIMD_INL qm m_and(qm a, qm b) { return _mm256_and_ps(a, b); }
LPK_SIMD_INL qm m_andnot(qm a, qm b) { return _mm256_andnot_ps(a, b); }
LPK_SIMD_INL int m_any(qm m) { return _mm256_movemask_ps(m) != 0; }
LPK_SIMD_INL qv v_blend(qm m, qv a, qv b) { return _mm256_blendv_ps(a, b, m); }
LPK_SIMD_INL void v_store(float *p, qv a) { _mm256_storeu_ps(p, a); }
LPK_SIMD_INL qh h_zero(void) { return _mm_setzero_si128(); }
/* qi_f16_sat: round to nearest even, inf -> largest finite half */
LPK_SIMD_INL qh h_f16sat(qv a)
{
    __m128i h = _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m128i big = _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7bff));
    return _mm_blendv_epi8(h, _mm_or_si128(_mm_and_si128(h, _mm_set1_epi16((short)0x8000)),
                                           _mm_set1_epi16(0x7bff)), big);
}
LPK_SIMD_INL qv h_to_f(qh h) { return _mm256_cvtph_ps(h); }
LPK_SIMD_INL qh h_blend(qm m, qh a, qh b)
{
    __m256i mi = _mm256_castps_si256(m);
    return _mm_blendv_epi8(a, b, _mm_packs_epi32(_mm256_castsi256_si128(mi), _mm256_extracti128_si256(mi, 1)));
}
LPK_SIMD_INL qm h_eq(qh a, qh b) { return _mm256_castsi256_ps(_mm256_cvtepi16_epi32(_mm_cmpeq_epi16(a, b))); }
LPK_SIMD_INL void h_store(uint16_t *p, qh h) { _mm_storeu_si128((__m128i *)(void *)p, h); }

/* 8 values of x (type st) from element i, as f32 */
LPK_SIMD_INL qv ql_ld(const void *x, int st, int64_t i)
{
    if (st == LPK_TYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)x + i)));
    if (st == LPK_TYPE_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)x + i))), 16));
    return _mm256_loadu_ps((const float *)x + i);
}

/* out[e] lane b = rows[b][e], e < 32 (four 8 x 8 transposes) */
LPK_SIMD_INL void ql_transpose32(const float *const rows[8], qv out[32])
{
    for (int c = 0; c < 32; c += 8) {
        __m256 t[8], s[8];
        for (int j = 0; j < 8; j += 2) {
            __m256 r0 = _mm256_loadu_ps(rows[j] + c), r1 = _mm256_loadu_ps(rows[j + 1] + c);
            t[j] = _mm256_unpacklo_ps(r0, r1);
            t[j + 1] = _mm256_unpackhi_ps(r0, r1);
        }
        for (int j = 0; j < 8; j += 4) {
            s[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
            s[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xee);
            s[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
            s[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xee);
        }
        for (int j = 0; j < 4; j++) {
            out[c + j] = _mm256_permute2f128_ps(s[j], s[j + 4], 0x20);
            out[c + j + 4] = _mm256_permute2f128_ps(s[j], s[j + 4], 0x31);
        }
    }
}

/* signed / unsigned int32 maxima of the f32 bits */
LPK_SIMD_INL qv v_imax_s(qv a, qv b)
{
    return _mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
}
LPK_SIMD_INL qv v_imax_u(qv a, qv b)
{
    return _mm256_castsi256_ps(_mm256_max_epu32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
}

/* Lane-wise int32 maxima (signed or unsigned) of 8 vectors: lane 4c + k of the
 * result is the maximum of v[c + 2k]; QL_POS(p) is the block to put at position
 * p so that lane b holds block b. */
#define QL_POS(p) (4 * ((p) & 1) + ((p) >> 1))
LPK_SIMD_INL qv ql_reduce_max(const qv v[8], int uns)
{
    qv w[4], u[2];
    for (int j = 0; j < 4; j++) {
        qv lo = _mm256_permute2f128_ps(v[2 * j], v[2 * j + 1], 0x20);
        qv hi = _mm256_permute2f128_ps(v[2 * j], v[2 * j + 1], 0x31);
        w[j] = uns ? v_imax_u(lo, hi) : v_imax_s(lo, hi);
    }
    for (int j = 0; j < 2; j++) {
        qv lo = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(w[2 * j]), _mm256_castps_pd(w[2 * j + 1])));
        qv hi = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(w[2 * j]), _mm256_castps_pd(w[2 * j + 1])));
        u[j] = uns ? v_imax_u(lo, hi) : v_imax_s(lo, hi);
    }
    qv lo = _mm256_shuffle_ps(u[0], u[1], 0x88), hi = _mm256_shuffle_ps(u[0], u[1], 0xdd);
    return uns ? v_imax_u(lo, hi) : v_imax_s(lo, hi);
}

/* Levels of one block, round(clamp(x[i] * id, lo, hi)) + off, as 32 bytes in
 * element order (the values fit in int8; in range, the conversion rounds to
 * nearest even exactly as qi_round; round is monotonic and the bounds are
 * integers, so the int8 saturation can stand for the bound -128) */
LPK_SIMD_INL __m256i ql_levels32(const float *x, float id, float lo, float hi, int off)
{
    __m256 vid = _mm256_set1_ps(id), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    __m256i q[4], o = _mm256_set1_epi32(off);
    for (int j = 0; j < 4; j++) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), vid);
        if (lo != -128.0f || off) v = _mm256_max_ps(v, vlo); /* else: the saturating packs */
        v = _mm256_min_ps(v, vhi);
        q[j] = _mm256_add_epi32(_mm256_cvtps_epi32(v), o);
    }
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* The error lanes of one row (quant_err_acc) in registers: (x - y)^2 of lanes
 * 4k..4k+3 in e[k], x^2 in s[k] */
typedef struct {
    __m256d e[4], s[4];
} qe;

LPK_SIMD_INL qe qe_load(const double *p)
{
    qe a;
    for (int k = 0; k < 4; k++) {
        a.e[k] = _mm256_loadu_pd(p + 4 * k);
        a.s[k] = _mm256_loadu_pd(p + 16 + 4 * k);
    }
    return a;
}

LPK_SIMD_INL void qe_store(double *p, qe a)
{
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_pd(p + 4 * k, a.e[k]);
        _mm256_storeu_pd(p + 16 + 4 * k, a.s[k]);
    }
}

/* One block's values x[0..31] added to the lanes: value j then value j + 16
 * into lane j; y = (q - off) * d, + m when asym (two roundings, as deq_row), q
 * the levels u (int8, element order); the differences and squares in double */
LPK_SIMD_INL qe ql_err32(qe a, const float *x, __m256i u, int off, float d, float m, int asym)
{
    uint8_t lv[32];
    _mm256_storeu_si256((__m256i *)(void *)lv, u);
    for (int h = 0; h < 2; h++) {
        for (int k = 0; k < 4; k++) {
            __m128i qi = _mm_cvtepi8_epi32(_mm_cvtsi32_si128((int)lpk_rd32(lv + 16 * h + 4 * k)));
            if (off) qi = _mm_sub_epi32(qi, _mm_set1_epi32(off));
            __m128 y = _mm_mul_ps(_mm_cvtepi32_ps(qi), _mm_set1_ps(d));
            if (asym) y = _mm_add_ps(y, _mm_set1_ps(m));
            __m256d xd = _mm256_cvtps_pd(_mm_loadu_ps(x + 16 * h + 4 * k));
            __m256d r = _mm256_sub_pd(xd, _mm256_cvtps_pd(y));
            a.e[k] = _mm256_add_pd(a.e[k], _mm256_mul_pd(r, r));
            a.s[k] = _mm256_add_pd(a.s[k], _mm256_mul_pd(xd, xd));
        }
    }
    return a;
}

#include "quant_lanes.h"

/* the further primitives of quant_lanes_k.h */
LPK_SIMD_INL qv v_sqrt(qv a) { return _mm256_sqrt_ps(a); }
LPK_SIMD_INL unsigned m_bits(qm m) { return (unsigned)_mm256_movemask_ps(m); }
LPK_SIMD_INL qm m_from_bits(unsigned b)
{
    __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)b), bit), bit));
}
LPK_SIMD_INL qh h_load(const uint16_t *p) { return _mm_loadu_si128((const __m128i *)(const void *)p); }
typedef struct { __m256d lo, hi; } qd; /* lanes 0-3, 4-7 */
LPK_SIMD_INL qd d_zero(void)
{
    qd r = {_mm256_setzero_pd(), _mm256_setzero_pd()};
    return r;
}
/* s + (a * b) * c, every lane in double */
LPK_SIMD_INL qd d_acc(qd s, qv a, qv b, qv c)
{
    __m256d al = _mm256_cvtps_pd(_mm256_castps256_ps128(a)), ah = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    __m256d bl = _mm256_cvtps_pd(_mm256_castps256_ps128(b)), bh = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
    __m256d cl = _mm256_cvtps_pd(_mm256_castps256_ps128(c)), ch = _mm256_cvtps_pd(_mm256_extractf128_ps(c, 1));
    s.lo = _mm256_add_pd(s.lo, _mm256_mul_pd(_mm256_mul_pd(al, bl), cl));
    s.hi = _mm256_add_pd(s.hi, _mm256_mul_pd(_mm256_mul_pd(ah, bh), ch));
    return s;
}
LPK_SIMD_INL void d_store(double *p, qd s)
{
    _mm256_storeu_pd(p, s.lo);
    _mm256_storeu_pd(p + 4, s.hi);
}

#define QK_PREFIX quant_avx2_
#include "quant_lanes_k.h"

QL_EXPORT(quant_avx2_blocks_q8_0, LPK_TYPE_Q8_0)
QL_EXPORT(quant_avx2_blocks_q4_0, LPK_TYPE_Q4_0)
QL_EXPORT(quant_avx2_blocks_q5_0, LPK_TYPE_Q5_0)
QL_EXPORT(quant_avx2_blocks_q4_1, LPK_TYPE_Q4_1)
QL_EXPORT(quant_avx2_blocks_q5_1, LPK_TYPE_Q5_1)

void quant_avx2_q4_1(const float *x, const float *w, void *dst, int64_t n)
{
    block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q4_1(&ops_avx2, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

void quant_avx2_q5_1(const float *x, const float *w, void *dst, int64_t n)
{
    block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q5_1(&ops_avx2, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

void quant_avx2_q4_k(const float *x, const float *w, void *dst, int64_t n)
{
    block_q4_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++)
        quant_block_q4_k(&ops_avx2, x + QK_K * i, w ? w + QK_K * i : NULL, &b[i]);
}

void quant_avx2_q6_k(const float *x, const float *w, void *dst, int64_t n)
{
    block_q6_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++)
        quant_block_q6_k(&ops_avx2, x + QK_K * i, w ? w + QK_K * i : NULL, &b[i]);
}

const qi_ops *quant_avx2_ops(void) { return &ops_avx2; }
#endif
