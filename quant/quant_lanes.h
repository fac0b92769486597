/* Lane-per-block quantizers for the symmetric 32-block types (q4_0, q5_0,
 * q8_0), written once over a few lane primitives and compiled twice: for AVX2
 * (SIMD_W = 8 blocks per group, quant_avx2.c) and AVX-512 (SIMD_W = 16,
 * quant_avx512.c; the SIMD template of docs/ARCHITECTURE.md). The including
 * file defines SIMD_W and SIMD_TGT (target string), the types qv (SIMD_W
 * floats), qm (a SIMD_W-lane mask) and qh (SIMD_W halves), the primitives used
 * below (LPK_SIMD_INL functions), ql_ld (SIMD_W values of a source row as
 * f32), ql_transpose32 (SIMD_W rows of 32 floats -> 32 vectors, lane b = row b),
 * ql_reduce_max with QL_POS (lane-wise maxima of SIMD_W vectors), and
 * ql_levels32 (the levels of one block as bytes), then includes this file.
 *
 * A group of SIMD_W blocks is transposed so that lane b of every vector belongs to
 * block b: the scale search (quant_search_sym) then runs on all blocks at once
 * with no horizontal sums, every candidate independent of the others. Each lane
 * performs the reference's operations on its block in the reference's order (8
 * accumulators by element index mod 8, elements in index order, reduced by the
 * qi_hsum8 tree), so every error, sum and chosen scale is bit-identical. Two
 * rewrites keep that: q = round(clamp(v)) is computed as the reference does
 * (clamp, then (v + 1.5*2^23) - 1.5*2^23), and e = x - q*d is one fused
 * multiply-add because q*d is exact (|q| <= 128 is 8 bits, d an f16 value has
 * 11 significant bits and is never below 2^-24). The levels of the chosen scale
 * are then assigned block by block in the natural layout and packed. Only quant/quant_avx2.c and quant/quant_avx512.c
 * include this file. */
#ifndef QUANT_LANES_H
#define QUANT_LANES_H

#define QL_MAGIC 12582912.0f /* 1.5 * 2^23: qi_round */

/* d != 0 ? 1 / d : 0, per lane */
LPK_SIMD_INL qv ql_recip(qv d)
{
    return v_blend(v_neq(d, v_zero()), v_zero(), v_div(v_set1(1.0f), d));
}

/* qi_hsum8 of 8 lane accumulators */
LPK_SIMD_INL qv ql_hsum8(const qv a[8])
{
    qv s0 = v_add(a[0], a[4]), s1 = v_add(a[1], a[5]), s2 = v_add(a[2], a[6]);
    qv s3 = v_add(a[3], a[7]);
    return v_add(v_add(s0, s2), v_add(s1, s3));
}

/* q = qi_round(qi_clamp(x * id, lo, hi)) */
LPK_SIMD_INL qv ql_level(qv x, qv id, qv lo, qv hi)
{
    qv v = v_min(v_max(v_mul(x, id), lo), hi);
    return v_sub(v_add(v, v_set1(QL_MAGIC)), v_set1(QL_MAGIC));
}

/* sym_err of scale d (lanes; id = ql_recip(d)) over the 32 elements:
 * sum w (x - q d)^2 */
LPK_SIMD_INL qv ql_err(const qv *xt, const qv *wt, qv d, qv id, qv lo, qv hi)
{
    qv acc[8];
    for (int j = 0; j < 8; j++) acc[j] = v_zero();
    /* unrolled, so the 8 accumulators stay in registers */
    _Pragma("GCC unroll 32") for (int i = 0; i < 32; i++) {
        qv e = v_fnmadd(ql_level(xt[i], id, lo, hi), d, xt[i]);
        acc[i & 7] = v_add(acc[i & 7], wt ? v_mul(v_mul(wt[i], e), e) : v_mul(e, e));
    }
    return ql_hsum8(acc);
}

/* quant_search_sym for every lane: the f16 bits of the best scale */
LPK_SIMD_INL qh ql_search_sym(const qv *xt, const qv *wt, int nlo, int nhi)
{
    qv amax = v_zero();
    for (int i = 0; i < 32; i++) amax = v_max(amax, v_abs(xt[i]));
    qv namax = v_neg(amax);
    qm neg = m_zero();
    for (int i = 0; i < 32; i++) neg = m_or(neg, v_eq(xt[i], namax));
    qv nxm = v_blend(neg, namax, amax); /* -xm */
    qv lo = v_set1((float)-nlo), hi = v_set1((float)nhi);
    /* the grid scales first: their divisions and conversions do not wait for
     * the error sums */
    qh hk[QI_NGRID];
    qv dk[QI_NGRID], ik[QI_NGRID];
    for (int k = 0; k < QI_NGRID; k++) {
        hk[k] = h_f16sat(v_div(nxm, v_set1((float)nlo + quant_grid_sym[k])));
        dk[k] = h_to_f(hk[k]);
        ik[k] = ql_recip(dk[k]);
    }
    qh best = hk[0];
    qv best_err = ql_err(xt, wt, dk[0], ik[0], lo, hi);
    for (int k = 1; k < QI_NGRID; k++) {
        qv e = ql_err(xt, wt, dk[k], ik[k], lo, hi);
        qm m = v_lt(e, best_err);
        best = h_blend(m, best, hk[k]);
        best_err = v_blend(m, best_err, e);
    }
    /* least-squares refit of the best assignment */
    qv d = h_to_f(best), id = ql_recip(d), a[8], b[8];
    for (int j = 0; j < 8; j++) a[j] = b[j] = v_zero();
    _Pragma("GCC unroll 32") for (int i = 0; i < 32; i++) {
        qv q = ql_level(xt[i], id, lo, hi);
        qv wq = wt ? v_mul(wt[i], q) : q;
        a[i & 7] = v_add(a[i & 7], v_mul(wq, xt[i]));
        b[i & 7] = v_add(b[i & 7], v_mul(wq, q));
    }
    qv sxq = ql_hsum8(a), sqq = ql_hsum8(b);
    qm pos = v_gt(sqq, v_zero());
    qv dr = v_blend(pos, v_zero(), v_div(sxq, sqq));
    qm ok = m_and(m_and(pos, v_finite(dr)), v_neq(dr, v_zero()));
    qh hr = h_f16sat(dr);
    ok = m_andnot(h_eq(hr, best), ok);
    qv dh = h_to_f(hr);
    qm take = m_and(ok, v_lt(ql_err(xt, wt, dh, ql_recip(dh), lo, hi), best_err));
    best = h_blend(take, best, hr);
    /* max |x| == 0: scale 0 */
    return h_blend(v_eq(amax, v_zero()), best, h_zero());
}

/* element j in the low nibble of byte j, element j + 16 in the high one */
LPK_SIMD_INL __m128i ql_nibbles(__m256i u)
{
    __m128i lo = _mm256_castsi256_si128(u), hi = _mm256_extracti128_si256(u, 1);
    return _mm_or_si128(_mm_and_si128(lo, _mm_set1_epi8(15)),
                        _mm_slli_epi16(_mm_and_si128(hi, _mm_set1_epi8(15)), 4));
}

/* q8_0 without weights (quant_q8_0_scale, round to nearest) for a group of SIMD_W
 * blocks, read in the natural layout (this type is bound by reading its input:
 * no transpose). Per block, as integers on the f32 bits: the largest
 * non-negative value (signed max, floored at 0) and the largest bit pattern
 * (unsigned max: the most negative value when one is negative); the vectors of
 * the SIMD_W blocks are reduced together (ql_reduce_max, block b in lane b). max
 * |x| is the larger magnitude of the two; +max occurs when the first equals it,
 * -max when the second is its negation; a NaN or Inf shows as a non-finite max
 * (its bits exceed every finite value's). xf receives the values as f32.
 * Returns nonzero when a block holds NaN/Inf. */
LPK_SIMD_INL int ql_q8_0_group(const void *x, int st, float *xf, block_q8_0 *b)
{
    qv vs[SIMD_W], vu[SIMD_W];
    for (int p = 0; p < SIMD_W; p++) {
        int k = QL_POS(p);
        qv s = v_zero(), u = v_zero();
        for (int j = 0; j < 32; j += SIMD_W) {
            qv v = ql_ld(x, st, 32 * k + j);
            v_store(xf + 32 * k + j, v);
            s = v_imax_s(s, v);
            u = v_imax_u(u, v);
        }
        vs[p] = s;
        vu[p] = u;
    }
    qv ms = ql_reduce_max(vs, 0), mu = ql_reduce_max(vu, 1);
    qv amax = v_imax_u(ms, v_abs(mu));
    qm pos = v_eq(ms, amax), neg = v_eq(mu, v_neg(amax));
    qv div = v_blend(neg, v_set1(-128.0f), v_blend(pos, v_set1(128.0f), v_set1(127.0f)));
    qh h = h_blend(v_eq(amax, v_zero()), h_f16sat(v_div(amax, div)), h_zero());
    uint16_t hs[SIMD_W];
    float ids[SIMD_W];
    h_store(hs, h);
    v_store(ids, ql_recip(h_to_f(h)));
    for (int k = 0; k < SIMD_W; k++) {
        b[k].d = hs[k];
        _mm256_storeu_si256((__m256i *)(void *)b[k].qs, ql_levels32(xf + 32 * k, ids[k], -128.0f, 127.0f, 0));
    }
    return m_any(v_notfinite(amax));
}

/* Loads a group of SIMD_W blocks (32 * SIMD_W values of type st) into xf (f32, natural
 * layout) and xt (transposed). Returns nonzero when one is NaN or Inf. */
LPK_SIMD_INL int ql_load(const void *x, int st, float *xf, qv xt[32])
{
    qm bad = m_zero();
    const float *rows[SIMD_W];
    for (int b = 0; b < SIMD_W; b++) {
        for (int j = 0; j < 32; j += SIMD_W) {
            qv v = ql_ld(x, st, 32 * b + j);
            bad = m_or(bad, v_notfinite(v));
            v_store(xf + 32 * b + j, v);
        }
        rows[b] = xf + 32 * b;
    }
    ql_transpose32(rows, xt);
    return m_any(bad);
}

/* nb blocks (a multiple of SIMD_W) of type (q4_0, q5_0 or q8_0) from x (type st),
 * importance weights w of period wn or NULL. */
LPK_SIMD_INL int ql_run(const void *x, int st, const float *w, int64_t wn, void *dst, int64_t nb,
                 int type)
{
    float xf[SIMD_W * 32], ids[SIMD_W];
    uint16_t hs[SIMD_W];
    qv xt[32], wt[32];
    int bad = 0;
    size_t es = st == LPK_TYPE_F32 ? 4 : 2;
    int nlo = type == LPK_TYPE_Q4_0 ? 8 : type == LPK_TYPE_Q5_0 ? 16 : 128;
    for (int64_t i = 0; i < nb; i += SIMD_W) {
        const char *xi = (const char *)x + (size_t)i * 32 * es;
        if (type == LPK_TYPE_Q8_0 && !w) {
            for (size_t o = 0; o < SIMD_W * 32 * es; o += 64)
                _mm_prefetch((const char *)((uintptr_t)xi + QI_PREFETCH + o), _MM_HINT_T0);
            bad |= ql_q8_0_group(xi, st, xf, (block_q8_0 *)dst + i);
            continue;
        }
        bad |= ql_load(xi, st, xf, xt);
        if (w) {
            const float *rows[SIMD_W];
            for (int b = 0; b < SIMD_W; b++) rows[b] = w + (32 * (i + b)) % wn;
            ql_transpose32(rows, wt);
        }
        /* the NULL is a constant in the inlined search: no per-element test */
        qh h = w ? ql_search_sym(xt, wt, nlo, nlo - 1) : ql_search_sym(xt, NULL, nlo, nlo - 1);
        h_store(hs, h);
        v_store(ids, ql_recip(h_to_f(h)));
        for (int b = 0; b < SIMD_W; b++) {
            const float *xb = xf + 32 * b;
            if (type == LPK_TYPE_Q4_0) {
                block_q4_0 *o = (block_q4_0 *)dst + i + b;
                o->d = hs[b];
                _mm_storeu_si128((__m128i *)(void *)o->qs, ql_nibbles(ql_levels32(xb, ids[b], -8.0f, 7.0f, 8)));
            } else if (type == LPK_TYPE_Q5_0) {
                block_q5_0 *o = (block_q5_0 *)dst + i + b;
                __m256i u = ql_levels32(xb, ids[b], -16.0f, 15.0f, 16);
                uint32_t hb = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(u, 3));
                o->d = hs[b];
                memcpy(o->qh, &hb, 4);
                _mm_storeu_si128((__m128i *)(void *)o->qs, ql_nibbles(u));
            } else {
                block_q8_0 *o = (block_q8_0 *)dst + i + b;
                o->d = hs[b];
                _mm256_storeu_si256((__m256i *)(void *)o->qs, ql_levels32(xb, ids[b], -128.0f, 127.0f, 0));
            }
        }
    }
    return bad;
}

/* The exported kernels: one body per source type so the loads specialise. */
#define QL_EXPORT(name, type)                                                              \
    LPK_TARGET(SIMD_TGT) int name(const void *x, int src_type, const float *w, \
                                                int64_t wn, void *dst, int64_t nb)           \
    {                                                                                      \
        switch (src_type) {                                                                \
        case LPK_TYPE_F16: return ql_run(x, LPK_TYPE_F16, w, wn, dst, nb, type);           \
        case LPK_TYPE_BF16: return ql_run(x, LPK_TYPE_BF16, w, wn, dst, nb, type);         \
        default: return ql_run(x, LPK_TYPE_F32, w, wn, dst, nb, type);                     \
        }                                                                                  \
    }

#endif
