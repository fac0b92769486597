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

static const qi_ops ops_avx2 = {sym_err_avx2, sym_sums_avx2, asym_err_avx2, asym_sums_avx2};

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
TGT static void q8_0_rtn_avx2(const float *x, block_q8_0 *b)
{
    __m256 v[4], sm = _mm256_set1_ps(-0.0f);
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
    __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sm, v[0]), _mm256_andnot_ps(sm, v[1])),
                             _mm256_max_ps(_mm256_andnot_ps(sm, v[2]), _mm256_andnot_ps(sm, v[3])));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    float amax = _mm_cvtss_f32(m);
    __m256 na = _mm256_set1_ps(-amax), pa = _mm256_set1_ps(amax);
    __m256 en = _mm256_setzero_ps(), ep = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        en = _mm256_or_ps(en, _mm256_cmp_ps(v[k], na, _CMP_EQ_OQ));
        ep = _mm256_or_ps(ep, _mm256_cmp_ps(v[k], pa, _CMP_EQ_OQ));
    }
    uint16_t h = quant_q8_0_scale_of(amax, _mm256_movemask_ps(en) != 0,
                                     _mm256_movemask_ps(ep) != 0);
    float d = lpk_f16_to_f32(h);
    __m256 vid = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_cvtps_epi32(rnd_clamp(_mm256_mul_ps(v[k], vid), lo, hi));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    b->d = h;
    _mm256_storeu_si256((__m256i *)(void *)b->qs, p);
}

void quant_avx2_q8_0(const float *x, const float *w, void *dst, int64_t n)
{
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
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
