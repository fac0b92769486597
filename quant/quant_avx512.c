/* AVX-512 (F, BW, VL) quantizers over groups of 16 blocks of 32. The input is
 * converted to f32 on the way (F16C for f16, a shift for bf16), every per-block
 * quantity sits in its own lane, and each lane computes exactly what the
 * reference computes for its block, so the bytes are identical (docs/QUANT.md,
 * "Speed"). */
#include "quant_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

/* The lane primitives of quant_lanes.h over 16 blocks (one per float lane). */
#define SIMD_W 16
#define SIMD_TGT "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
typedef __m512 qv;
typedef __mmask16 qm;
typedef __m256i qh; /* 16 halves */

LPK_SIMD_INL qv v_zero(void) { return _mm512_setzero_ps(); }
LPK_SIMD_INL qv v_set1(float a) { return _mm512_set1_ps(a); }
LPK_SIMD_INL qv v_add(qv a, qv b) { return _mm512_add_ps(a, b); }
LPK_SIMD_INL qv v_sub(qv a, qv b) { return _mm512_sub_ps(a, b); }
LPK_SIMD_INL qv v_mul(qv a, qv b) { return _mm512_mul_ps(a, b); }
LPK_SIMD_INL qv v_div(qv a, qv b) { return _mm512_div_ps(a, b); }
LPK_SIMD_INL qv v_min(qv a, qv b) { return _mm512_min_ps(a, b); }
LPK_SIMD_INL qv v_max(qv a, qv b) { return _mm512_max_ps(a, b); }
LPK_SIMD_INL qv v_abs(qv a) { return _mm512_abs_ps(a); }
LPK_SIMD_INL qv v_neg(qv a)
{
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32((int)0x80000000u)));
}
LPK_SIMD_INL qv v_fnmadd(qv a, qv b, qv c) { return _mm512_fnmadd_ps(a, b, c); }
LPK_SIMD_INL qv v_fmadd(qv a, qv b, qv c) { return _mm512_fmadd_ps(a, b, c); }
/* round to nearest even (qi_round for |a| < 2^22, but for the sign of a zero) */
LPK_SIMD_INL qv v_round(qv a)
{
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
LPK_SIMD_INL qm v_lt(qv a, qv b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
LPK_SIMD_INL qm v_gt(qv a, qv b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
LPK_SIMD_INL qm v_eq(qv a, qv b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
LPK_SIMD_INL qm v_neq(qv a, qv b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }
LPK_SIMD_INL qm v_finite(qv a) { return _mm512_cmp_ps_mask(v_abs(a), _mm512_set1_ps(INFINITY), _CMP_LT_OQ); }
LPK_SIMD_INL qm v_notfinite(qv a) { return _mm512_cmp_ps_mask(v_abs(a), _mm512_set1_ps(INFINITY), _CMP_NLT_UQ); }
LPK_SIMD_INL qm m_zero(void) { return 0; }
LPK_SIMD_INL qm m_or(qm a, qm b) { return (qm)(a | b); }
LPK_SIMD_INL qm m_and(qm a, qm b) { return (qm)(a & b); }
LPK_SIMD_INL qm m_andnot(qm a, qm b) { return (qm)(~a & b); }
LPK_SIMD_INL int m_any(qm m) { return m != 0; }
LPK_SIMD_INL qv v_blend(qm m, qv a, qv b) { return _mm512_mask_blend_ps(m, a, b); }
LPK_SIMD_INL void v_store(float *p, qv a) { _mm512_storeu_ps(p, a); }
LPK_SIMD_INL qh h_zero(void) { return _mm256_setzero_si256(); }
/* qi_f16_sat: round to nearest even, inf -> largest finite half */
LPK_SIMD_INL qh h_f16sat(qv a)
{
    __m256i h = _mm512_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask16 big = _mm256_cmpgt_epu16_mask(_mm256_and_si256(h, _mm256_set1_epi16(0x7fff)),
                                            _mm256_set1_epi16(0x7bff));
    return _mm256_mask_mov_epi16(h, big, _mm256_or_si256(_mm256_and_si256(h, _mm256_set1_epi16((short)0x8000)),
                                                         _mm256_set1_epi16(0x7bff)));
}
LPK_SIMD_INL qv h_to_f(qh h) { return _mm512_cvtph_ps(h); }
LPK_SIMD_INL qh h_blend(qm m, qh a, qh b) { return _mm256_mask_blend_epi16(m, a, b); }
LPK_SIMD_INL qm h_eq(qh a, qh b) { return _mm256_cmpeq_epi16_mask(a, b); }
LPK_SIMD_INL void h_store(uint16_t *p, qh h) { _mm256_storeu_si256((__m256i *)(void *)p, h); }

/* 16 values of x (type st) from element i, as f32 */
LPK_SIMD_INL qv ql_ld(const void *x, int st, int64_t i)
{
    if (st == LPK_TYPE_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)x + i)));
    if (st == LPK_TYPE_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)x + i))), 16));
    return _mm512_loadu_ps((const float *)x + i);
}

/* out[e] lane b = rows[b][e], e < 32 (two 16 x 16 transposes) */
LPK_SIMD_INL void ql_transpose32(const float *const rows[16], qv out[32])
{
    for (int c = 0; c < 32; c += 16) {
        __m512 t[16], u[16], a[4], b[4], cc[4], d[4];
        for (int j = 0; j < 16; j += 2) {
            __m512 r0 = _mm512_loadu_ps(rows[j] + c), r1 = _mm512_loadu_ps(rows[j + 1] + c);
            t[j] = _mm512_unpacklo_ps(r0, r1);
            t[j + 1] = _mm512_unpackhi_ps(r0, r1);
        }
        /* u[4g + m], 128-bit chunk k: column 4k + m of rows 4g..4g+3 */
        for (int j = 0; j < 16; j += 4) {
            u[j] = _mm512_shuffle_ps(t[j], t[j + 2], 0x44);
            u[j + 1] = _mm512_shuffle_ps(t[j], t[j + 2], 0xee);
            u[j + 2] = _mm512_shuffle_ps(t[j + 1], t[j + 3], 0x44);
            u[j + 3] = _mm512_shuffle_ps(t[j + 1], t[j + 3], 0xee);
        }
        for (int m = 0; m < 4; m++) {
            a[m] = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
            b[m] = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd);
            cc[m] = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
            d[m] = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
        }
        for (int m = 0; m < 4; m++) {
            out[c + m] = _mm512_shuffle_f32x4(a[m], cc[m], 0x88);
            out[c + 8 + m] = _mm512_shuffle_f32x4(a[m], cc[m], 0xdd);
            out[c + 4 + m] = _mm512_shuffle_f32x4(b[m], d[m], 0x88);
            out[c + 12 + m] = _mm512_shuffle_f32x4(b[m], d[m], 0xdd);
        }
    }
}

/* signed / unsigned int32 maxima of the f32 bits */
LPK_SIMD_INL qv v_imax_s(qv a, qv b)
{
    return _mm512_castsi512_ps(_mm512_max_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}
LPK_SIMD_INL qv v_imax_u(qv a, qv b)
{
    return _mm512_castsi512_ps(_mm512_max_epu32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}

/* Lane-wise int32 maxima (signed or unsigned) of 16 vectors: lane 4c + k of the
 * result is the maximum of v[c + 4k]; QL_POS(p) is the block to put at position
 * p so that lane b holds block b. */
#define QL_POS(p) (4 * ((p) & 3) + ((p) >> 2))
LPK_SIMD_INL qv ql_reduce_max(const qv v[16], int uns)
{
    qv w[8], u[4], s[2];
    for (int j = 0; j < 8; j++) {
        qv lo = _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0x44);
        qv hi = _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0xee);
        w[j] = uns ? v_imax_u(lo, hi) : v_imax_s(lo, hi);
    }
    for (int j = 0; j < 4; j++) {
        qv lo = _mm512_shuffle_f32x4(w[2 * j], w[2 * j + 1], 0x88);
        qv hi = _mm512_shuffle_f32x4(w[2 * j], w[2 * j + 1], 0xdd);
        u[j] = uns ? v_imax_u(lo, hi) : v_imax_s(lo, hi);
    }
    for (int j = 0; j < 2; j++) {
        qv lo = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u[2 * j]), _mm512_castps_pd(u[2 * j + 1])));
        qv hi = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u[2 * j]), _mm512_castps_pd(u[2 * j + 1])));
        s[j] = uns ? v_imax_u(lo, hi) : v_imax_s(lo, hi);
    }
    qv lo = _mm512_shuffle_ps(s[0], s[1], 0x88), hi = _mm512_shuffle_ps(s[0], s[1], 0xdd);
    return uns ? v_imax_u(lo, hi) : v_imax_s(lo, hi);
}

/* Levels of one block, round(clamp(x[i] * id, lo, hi)) + off, as 32 bytes in
 * element order (the values fit in int8; in range, the conversion rounds to
 * nearest even exactly as qi_round; round is monotonic and the bounds are
 * integers, so the int8 saturation can stand for the bound -128) */
LPK_SIMD_INL __m256i ql_levels32(const float *x, float id, float lo, float hi, int off)
{
    __m512 vid = _mm512_set1_ps(id), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    __m512i o = _mm512_set1_epi32(off), q[2];
    for (int j = 0; j < 2; j++) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * j), vid);
        if (lo != -128.0f || off) v = _mm512_max_ps(v, vlo); /* else: the saturating narrowing */
        v = _mm512_min_ps(v, vhi);
        q[j] = _mm512_add_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), o);
    }
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtsepi32_epi8(q[0])),
                                   _mm512_cvtsepi32_epi8(q[1]), 1);
}

LPK_SIMD_INL __m512d d_lo(qv a) { return _mm512_cvtps_pd(_mm512_castps512_ps256(a)); }
LPK_SIMD_INL __m512d d_hi(qv a)
{
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

/* The error lanes of one row (quant_err_acc) in registers: (x - y)^2 of lanes
 * 0-7 and 8-15, x^2 of the same */
typedef struct {
    __m512d e0, e1, s0, s1;
} qe;

LPK_SIMD_INL qe qe_load(const double *p)
{
    qe a = {_mm512_loadu_pd(p), _mm512_loadu_pd(p + 8), _mm512_loadu_pd(p + 16),
            _mm512_loadu_pd(p + 24)};
    return a;
}

LPK_SIMD_INL void qe_store(double *p, qe a)
{
    _mm512_storeu_pd(p, a.e0);
    _mm512_storeu_pd(p + 8, a.e1);
    _mm512_storeu_pd(p + 16, a.s0);
    _mm512_storeu_pd(p + 24, a.s1);
}

/* One block's values x[0..31] added to the lanes: value j then value j + 16
 * into lane j; y = (q - off) * d, + m when asym (two roundings, as deq_row), q
 * the levels u (int8, element order); the differences and squares in double */
LPK_SIMD_INL qe ql_err32(qe a, const float *x, __m256i u, int off, float d, float m, int asym)
{
    uint8_t lv[32];
    _mm256_storeu_si256((__m256i *)(void *)lv, u);
    for (int h = 0; h < 2; h++) {
        for (int k = 0; k < 2; k++) {
            __m256i qi = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(lv + 16 * h + 8 * k)));
            if (off) qi = _mm256_sub_epi32(qi, _mm256_set1_epi32(off));
            __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(qi), _mm256_set1_ps(d));
            if (asym) y = _mm256_add_ps(y, _mm256_set1_ps(m));
            __m512d xd = _mm512_cvtps_pd(_mm256_loadu_ps(x + 16 * h + 8 * k));
            __m512d r = _mm512_sub_pd(xd, _mm512_cvtps_pd(y));
            if (k) {
                a.e1 = _mm512_add_pd(a.e1, _mm512_mul_pd(r, r));
                a.s1 = _mm512_add_pd(a.s1, _mm512_mul_pd(xd, xd));
            } else {
                a.e0 = _mm512_add_pd(a.e0, _mm512_mul_pd(r, r));
                a.s0 = _mm512_add_pd(a.s0, _mm512_mul_pd(xd, xd));
            }
        }
    }
    return a;
}

#include "quant_lanes.h"

/* the further primitives of quant_lanes_k.h */
LPK_SIMD_INL qv v_sqrt(qv a) { return _mm512_sqrt_ps(a); }
LPK_SIMD_INL unsigned m_bits(qm m) { return (unsigned)m; }
LPK_SIMD_INL qm m_from_bits(unsigned b) { return (qm)b; }
LPK_SIMD_INL qh h_load(const uint16_t *p) { return _mm256_loadu_si256((const __m256i *)(const void *)p); }
typedef struct { __m512d lo, hi; } qd; /* lanes 0-7, 8-15 */
LPK_SIMD_INL qd d_zero(void)
{
    qd r = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    return r;
}
/* s + (a * b) * c, every lane in double */
LPK_SIMD_INL qd d_acc(qd s, qv a, qv b, qv c)
{
    s.lo = _mm512_add_pd(s.lo, _mm512_mul_pd(_mm512_mul_pd(d_lo(a), d_lo(b)), d_lo(c)));
    s.hi = _mm512_add_pd(s.hi, _mm512_mul_pd(_mm512_mul_pd(d_hi(a), d_hi(b)), d_hi(c)));
    return s;
}
LPK_SIMD_INL void d_store(double *p, qd s)
{
    _mm512_storeu_pd(p, s.lo);
    _mm512_storeu_pd(p + 8, s.hi);
}

#define QK_PREFIX quant_avx512_
#include "quant_lanes_k.h"

QL_EXPORT(quant_avx512_blocks_q8_0, LPK_TYPE_Q8_0)
QL_EXPORT(quant_avx512_blocks_q4_0, LPK_TYPE_Q4_0)
QL_EXPORT(quant_avx512_blocks_q5_0, LPK_TYPE_Q5_0)
QL_EXPORT(quant_avx512_blocks_q4_1, LPK_TYPE_Q4_1)
QL_EXPORT(quant_avx512_blocks_q5_1, LPK_TYPE_Q5_1)
/* quant_avx2_err_lanes on 8 doubles a vector: lanes 0-7 and 8-15 of
 * QUANT_ERR_LANES in two accumulators each, every lane's additions in the
 * same order (no fused multiply-add): the same sums, bit for bit. */
LPK_TARGET("avx512f") void quant_avx512_err_lanes(const float *x, const float *y, int64_t n,
                                                  double *le, double *ls)
{
    __m512d e[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    __m512d s[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    for (int64_t i = 0; i + 16 <= n; i += 16)
        for (int k = 0; k < 2; k++) {
            __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8 * k));
            __m512d d = _mm512_sub_pd(a, _mm512_cvtps_pd(_mm256_loadu_ps(y + i + 8 * k)));
            e[k] = _mm512_add_pd(e[k], _mm512_mul_pd(d, d));
            s[k] = _mm512_add_pd(s[k], _mm512_mul_pd(a, a));
        }
    for (int k = 0; k < 2; k++) {
        _mm512_storeu_pd(le + 8 * k, e[k]);
        _mm512_storeu_pd(ls + 8 * k, s[k]);
    }
}

#endif
