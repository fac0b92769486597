/* AVX2 inner loops of the 32-block scale searches. Same operations in the same
 * order as quant_ref.c (one 8-lane accumulator, blocks of 8 in index order, the
 * qi_hsum8 reduction; no FMA), so the bytes produced are identical. */
#include "quant_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define TGT __attribute__((target("avx2")))

TGT static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

TGT static inline __m256 rnd_clamp(__m256 v, __m256 lo, __m256 hi)
{
    v = _mm256_max_ps(_mm256_min_ps(v, hi), lo);
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

TGT static float sym_err_avx2(const float *x, const float *w, int n, float d, float lo,
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

TGT static void sym_sums_avx2(const float *x, const float *w, int n, float d, float lo,
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

TGT static float asym_err_avx2(const float *x, const float *w, int n, float d, float m,
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

TGT static void asym_sums_avx2(const float *x, const float *w, int n, float d, float m,
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
TGT static void sym_err_n_avx2(const float *x, const float *w, int n, const float *d, int nd,
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

TGT static inline float amax32_avx2(const float *x, int *neg)
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

TGT static void sym_assign32_avx2(const float *x, float d, int nlo, int nhi, int q[32])
{
    __m256 vid = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256 lo = _mm256_set1_ps((float)-nlo), hi = _mm256_set1_ps((float)nhi);
    for (int k = 0; k < 4; k++)
        _mm256_storeu_si256((__m256i *)(void *)(q + 8 * k),
                            _mm256_cvtps_epi32(rnd_clamp(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid), lo, hi)));
}

/* qi_f16_sat and lpk_f16_to_f32 by F16C: round to nearest even, the same
 * values for the finite inputs the searches convert */
__attribute__((target("avx2,f16c"))) static uint16_t f2h_f16c(float v)
{
    uint16_t h = (uint16_t)_mm_extract_epi16(
        _mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), 0);
    if ((h & 0x7fff) >= 0x7c00) h = (uint16_t)((h & 0x8000) | 0x7bff);
    return h;
}

__attribute__((target("avx2,f16c"))) static float h2f_f16c(uint16_t h)
{
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* True when x[0..n) holds a NaN or an Inf (exponent bits all set). */
TGT int quant_avx2_any_nonfinite(const float *x, int64_t n)
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

static const qi_ops ops_avx2 = {sym_err_avx2,   sym_sums_avx2, asym_err_avx2,
                                asym_sums_avx2, sym_err_n_avx2, amax32_avx2,
                                sym_assign32_avx2, f2h_f16c,    h2f_f16c};

void quant_avx2_q4_0(const float *x, const float *w, void *dst, int64_t n)
{
    block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q4_0(&ops_avx2, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

void quant_avx2_q5_0(const float *x, const float *w, void *dst, int64_t n)
{
    block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q5_0(&ops_avx2, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

/* q8_0 without weights: max |x|, the shared scale rule, round, pack. */
__attribute__((target("avx2,f16c"))) static void q8_0_rtn_avx2(const float *x, block_q8_0 *b)
{
    int neg;
    float amax = amax32_avx2(x, &neg);
    __m256 pa = _mm256_set1_ps(amax), ep = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++)
        ep = _mm256_or_ps(ep, _mm256_cmp_ps(_mm256_loadu_ps(x + 8 * k), pa, _CMP_EQ_OQ));
    int pos = _mm256_movemask_ps(ep) != 0;
    /* quant_q8_0_scale_of with the f16 conversions inline */
    uint16_t h = amax == 0.0f ? 0
                 : f2h_f16c(neg && pos ? amax / 127.0f : (neg ? amax / 128.0f : amax / -128.0f));
    float d = h2f_f16c(h);
    int qi[32];
    sym_assign32_avx2(x, d, 128, 127, qi);
    __m256i q[4];
    for (int k = 0; k < 4; k++) q[k] = _mm256_loadu_si256((const __m256i *)(const void *)(qi + 8 * k));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    b->d = h;
    _mm256_storeu_si256((__m256i *)(void *)b->qs, p);
}

/* The same for 8 blocks at once: the scale rule (divisions, f16 rounding,
 * saturation, reciprocal) runs in one vector over the 8 blocks instead of as a
 * chain of dependent scalar steps per block; same operations per block. */
__attribute__((target("avx2,f16c"))) static void q8_0_rtn8_avx2(const float *x, block_q8_0 *b)
{
    float amax[8], div[8];
    for (int j = 0; j < 8; j++) {
        int neg;
        amax[j] = amax32_avx2(x + 32 * j, &neg);
        __m256 pa = _mm256_set1_ps(amax[j]), ep = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++)
            ep = _mm256_or_ps(ep, _mm256_cmp_ps(_mm256_loadu_ps(x + 32 * j + 8 * k), pa, _CMP_EQ_OQ));
        int pos = _mm256_movemask_ps(ep) != 0;
        div[j] = neg && pos ? 127.0f : (neg ? 128.0f : -128.0f);
    }
    __m256 va = _mm256_loadu_ps(amax), zero = _mm256_setzero_ps();
    __m128i h = _mm256_cvtps_ph(_mm256_div_ps(va, _mm256_loadu_ps(div)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* qi_f16_sat: inf -> largest finite half; amax == 0 -> scale 0 */
    __m128i big = _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7bff));
    h = _mm_blendv_epi8(h, _mm_or_si128(_mm_and_si128(h, _mm_set1_epi16((short)0x8000)),
                                        _mm_set1_epi16(0x7bff)), big);
    __m128i z = _mm_packs_epi32(_mm256_castsi256_si128(_mm256_castps_si256(_mm256_cmp_ps(va, zero, _CMP_EQ_OQ))),
                                _mm256_extracti128_si256(_mm256_castps_si256(_mm256_cmp_ps(va, zero, _CMP_EQ_OQ)), 1));
    h = _mm_andnot_si128(z, h);
    __m256 d = _mm256_cvtph_ps(h);
    __m256 id = _mm256_div_ps(_mm256_set1_ps(1.0f), d);
    id = _mm256_andnot_ps(_mm256_cmp_ps(d, zero, _CMP_EQ_OQ), id);
    uint16_t hs[8];
    float ids[8];
    _mm_storeu_si128((__m128i *)(void *)hs, h);
    _mm256_storeu_ps(ids, id);
    __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int j = 0; j < 8; j++) {
        __m256 vid = _mm256_set1_ps(ids[j]);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtps_epi32(rnd_clamp(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * j + 8 * k), vid), lo, hi));
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        b[j].d = hs[j];
        _mm256_storeu_si256((__m256i *)(void *)b[j].qs, _mm256_permutevar8x32_epi32(p, perm));
    }
}

void quant_avx2_q8_0(const float *x, const float *w, void *dst, int64_t n)
{
    block_q8_0 *b = dst;
    int64_t i = 0;
    if (!w)
        for (; i + 8 <= n / 32; i += 8) q8_0_rtn8_avx2(x + 32 * i, &b[i]);
    for (; i < n / 32; i++) {
        if (w)
            quant_block_q8_0(&ops_avx2, x + 32 * i, w + 32 * i, &b[i]);
        else
            q8_0_rtn_avx2(x + 32 * i, &b[i]);
    }
}

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
#endif
