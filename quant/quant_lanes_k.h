/* Lane-per-super-block quantizers for the 256-value types with signed
 * sub-block scales (q3_k, q6_k): the many-block kernels of quant_lanes.h
 * carried to super-blocks. Included after quant_lanes.h (whose primitives and
 * helpers it uses) by quant/quant_avx2.c (SIMD_W = 8 super-blocks per group)
 * and quant/quant_avx512.c (SIMD_W = 16), which also define QK_PREFIX (the
 * start of the exported names), v_sqrt, m_bits and
 * m_from_bits (a mask as lane bits and back), h_load, and qd (SIMD_W doubles)
 * with d_zero, d_acc (s + (a * b) * c in double) and d_store.
 *
 * A group of SIMD_W super-blocks is transposed so that lane b of every vector
 * belongs to super-block b, and each lane performs the reference's operations
 * (quant_k2.c's sym_search, quant_kq.c's fit_sub and q6_k search) on its
 * super-block in the reference's order: the sub-block fits, the integer scale
 * picks, the least-squares refits of the super-block scale in double, each
 * lane stopping where the reference stops (masks). The few per-lane decisions
 * between the refits are taken in scalar code, the same C as the reference.
 * So every scale is bit-identical; the levels are then assigned and packed
 * block by block in the natural layout (as quant_q3k_finish and
 * quant_q6k_finish do). */
#ifndef QUANT_LANES_K_H
#define QUANT_LANES_K_H

#include <math.h>

/* The constants of a type: levels lo..hi, integer sub-block scales
 * smin..smax, the first two super-block scales max_s / dneg and max_s / dpos,
 * and the candidates s0 - rad .. s0 + rad around each ideal integer scale. */
typedef struct qk_sym {
    float lo, hi, smin, smax, dneg, dpos;
    int rad;
} qk_sym;

static const qk_sym qk_q3k = {-4.0f, 3.0f, -32.0f, 31.0f, -32.0f, 31.0f, 2};
static const qk_sym qk_q6k = {-32.0f, 31.0f, -128.0f, 127.0f, -128.0f, 127.0f, 4};

/* sym_err of scale d over one sub-block of 16 (x[16], w[16] or NULL) per
 * lane. e = x - q d in two roundings as the reference computes it (d is any
 * float in the fits, so q d is not always exact). */
LPK_SIMD_INL qv qk_err16(const qv *x, const qv *w, qv d, qv lo, qv hi)
{
    qv id = ql_recip(d), acc[8];
    for (int j = 0; j < 8; j++) acc[j] = v_zero();
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) {
        qv e = v_sub(x[i], v_mul(ql_level(x[i], id, lo, hi), d));
        acc[i & 7] = v_add(acc[i & 7], w ? v_mul(v_mul(w[i], e), e) : v_mul(e, e));
    }
    return ql_hsum8(acc);
}

/* fit_sub (sym) of one sub-block of 16 per lane: the float scale s */
LPK_SIMD_INL qv qk_fit_sym(const qv *x, const qv *w, const qk_sym *k)
{
    qv zero = v_zero(), amax = zero;
    for (int i = 0; i < 16; i++) amax = v_max(v_abs(x[i]), amax);
    qv namax = v_neg(amax);
    qm neg = m_zero();
    for (int i = 0; i < 16; i++) neg = m_or(neg, v_eq(x[i], namax));
    qv nxm = v_blend(neg, namax, amax); /* -xm */
    qv lo = v_set1(k->lo), hi = v_set1(k->hi);
    qv best_s = zero, best_err = zero;
    for (int g = 0; g < QI_NGRID; g++) {
        qv s = v_div(nxm, v_set1(-k->lo + quant_grid_sym[g]));
        qv e = qk_err16(x, w, s, lo, hi);
        if (g == 0) {
            best_err = e;
            best_s = s;
            continue;
        }
        qm take = v_lt(e, best_err);
        best_err = v_blend(take, best_err, e);
        best_s = v_blend(take, best_s, s);
    }
    qm live = v_neq(amax, zero);
    for (int it = 0; it < 3 && m_any(live); it++) {
        qv sxq, sqq;
        ql_sym_sums(x, w, 16, best_s, lo, hi, &sxq, &sqq);
        qv s = v_blend(v_gt(sqq, zero), zero, v_div(sxq, sqq));
        live = m_and(live, m_and(v_finite(s), m_and(v_neq(s, zero), v_neq(s, best_s))));
        if (!m_any(live)) break;
        qv e = qk_err16(x, w, s, lo, hi);
        live = m_and(live, v_lt(e, best_err));
        best_err = v_blend(live, best_err, e);
        best_s = v_blend(live, best_s, s);
    }
    return v_blend(v_eq(amax, zero), best_s, zero);
}

/* sym_pick / q6k_pick per lane: for the f16 scale d (as f32), the best integer
 * scale of every sub-block near s[j] / d into sc[16]; returns the total error. */
LPK_SIMD_INL qv qk_pick_sym(const qv *xt, const qv *wt, const qv *s, qv d, const qk_sym *k,
                            qv *sc)
{
    qv zero = v_zero(), lo = v_set1(k->lo), hi = v_set1(k->hi);
    qv smin = v_set1(k->smin), smax = v_set1(k->smax);
    qv vmin = v_set1(k->smin - 0.5f), vmax = v_set1(k->smax + 0.5f), inf = v_set1(INFINITY);
    qm dz = v_eq(d, zero);
    qv total = zero;
    for (int j = 0; j < 16; j++) {
        qv r = v_min(v_max(v_div(s[j], d), smin), smax);
        qv s0 = v_blend(dz, v_sub(v_add(r, v_set1(QL_MAGIC)), v_set1(QL_MAGIC)), zero);
        qv be = inf, bs = s0;
        for (int o = -k->rad; o <= k->rad; o++) {
            qv a = v_add(s0, v_set1((float)o));
            qm ok = m_and(v_gt(a, vmin), v_lt(a, vmax));
            qv e = qk_err16(xt + 16 * j, wt ? wt + 16 * j : NULL, v_mul(d, a), lo, hi);
            qm take = m_and(ok, v_lt(e, be));
            be = v_blend(take, be, e);
            bs = v_blend(take, bs, a);
        }
        sc[j] = bs;
        total = v_add(total, be);
    }
    return total;
}

/* The least-squares sums of the refit per lane, in double and element order:
 * A = sum w u^2, P = sum w x u with u = q sc (q the levels of d and sc). */
LPK_SIMD_INL void qk_refit_sums(const qv *xt, const qv *wt, qv d, const qv *sc, const qk_sym *k,
                                double *pa, double *pp)
{
    qv lo = v_set1(k->lo), hi = v_set1(k->hi), one = v_set1(1.0f);
    qd a = d_zero(), p = d_zero();
    for (int j = 0; j < 16; j++) {
        qv id = ql_recip(v_mul(d, sc[j]));
        for (int i = 16 * j; i < 16 * j + 16; i++) {
            qv u = v_mul(ql_level(xt[i], id, lo, hi), sc[j]);
            qv wi = wt ? wt[i] : one;
            a = d_acc(a, wi, u, u);
            p = d_acc(p, wi, xt[i], u);
        }
    }
    d_store(pa, a);
    d_store(pp, p);
}

/* The search of sym_search / quant_block_q6_k per lane: the f16 super-block
 * scale *pd and the integer sub-block scales sc[16] */
LPK_SIMD_INL void qk_search_sym(const qv *xt, const qv *wt, const qk_sym *k, qh *pd, qv *sc)
{
    qv s[16], tsc[16], smx = v_zero(), zero = v_zero();
    for (int j = 0; j < 16; j++) {
        s[j] = qk_fit_sym(xt + 16 * j, wt ? wt + 16 * j : NULL, k);
        smx = v_blend(v_gt(v_abs(s[j]), v_abs(smx)), smx, s[j]);
    }
    qh bd = h_f16sat(v_div(smx, v_set1(k->dneg)));
    qv best = qk_pick_sym(xt, wt, s, h_to_f(bd), k, sc);
    {
        qh h = h_f16sat(v_div(smx, v_set1(k->dpos)));
        qv e = qk_pick_sym(xt, wt, s, h_to_f(h), k, tsc);
        qm take = v_lt(e, best);
        best = v_blend(take, best, e);
        bd = h_blend(take, bd, h);
        for (int j = 0; j < 16; j++) sc[j] = v_blend(take, sc[j], tsc[j]);
    }
    unsigned live = (1u << SIMD_W) - 1;
    for (int it = 0; it < 2; it++) {
        live &= m_bits(v_neq(h_to_f(bd), zero));
        if (!live) break;
        double pa[SIMD_W], pp[SIMD_W];
        uint16_t hb[SIMD_W], hn[SIMD_W];
        qk_refit_sums(xt, wt, h_to_f(bd), sc, k, pa, pp);
        h_store(hb, bd);
        unsigned next = 0;
        for (int b = 0; b < SIMD_W; b++) {
            hn[b] = hb[b];
            if (!(live >> b & 1) || !(pa[b] > 0) || !isfinite(pp[b] / pa[b]) || pp[b] / pa[b] == 0)
                continue;
            hn[b] = qi_f16_sat((float)(pp[b] / pa[b]));
            if (hn[b] != hb[b]) next |= 1u << b;
        }
        if (!next) break;
        qh h = h_load(hn);
        qv e = qk_pick_sym(xt, wt, s, h_to_f(h), k, tsc);
        qm take = m_and(m_from_bits(next), v_lt(e, best));
        best = v_blend(take, best, e);
        bd = h_blend(take, bd, h);
        for (int j = 0; j < 16; j++) sc[j] = v_blend(take, sc[j], tsc[j]);
        live = m_bits(take);
    }
    *pd = bd;
}

/* The search in two bodies, with weights and without, compiled once each. */
LPK_SIMD_FN __attribute__((noinline)) void qk_search_sym_w(const qv *xt, const qv *wt,
                                                           const qk_sym *k, qh *pd, qv *sc)
{
    qk_search_sym(xt, wt, k, pd, sc);
}

LPK_SIMD_FN __attribute__((noinline)) void qk_search_sym_nw(const qv *xt, const qk_sym *k, qh *pd,
                                                            qv *sc)
{
    qk_search_sym(xt, NULL, k, pd, sc);
}

/* bytes of a shifted left by n (n < 8; no bit crosses into the next byte) */
LPK_SIMD_INL __m256i qk_shl8(__m256i a, int n) { return _mm256_sll_epi16(a, _mm_cvtsi32_si128(n)); }

/* ---------------------------------------------------------------- asymmetric */
/* The shape of asym_search (quant_k2.c; q4_k's search in quant_kq.c is the same
 * with q4_k's numbers): nsub sub-blocks of len, x ~ (d sc) q - dmin m with q in
 * 0..hi, sc and m in 0..smax. */
typedef struct qk_asym {
    int nsub, len;
    float smax, hi;
} qk_asym;

static const qk_asym qk_q4k = {8, 32, 63.0f, 15.0f};
static const qk_asym qk_q5k = {8, 32, 63.0f, 31.0f};
static const qk_asym qk_q2k = {16, 16, 15.0f, 3.0f};

/* fit_sub (asym) of one sub-block of n per lane: the scale *ps and the
 * offset *po (<= 0) */
LPK_SIMD_INL void qk_fit_asym(const qv *x, const qv *w, int n, float fhi, qv *ps, qv *po)
{
    qv zero = v_zero(), hi = v_set1(fhi), mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        mn = v_blend(v_lt(x[i], mn), mn, x[i]);
        mx = v_blend(v_gt(x[i], mx), mx, x[i]);
    }
    mn = v_blend(v_gt(mn, zero), mn, zero);
    qv best_s = zero, best_o = mn;
    qv best_err = ql_aerr(x, w, n, zero, zero, mn, hi);
    qm live = v_gt(mx, mn); /* else flat: (0, min) */
    qv sa[8], sb[8];
    for (int j = 0; j < 8; j++) sa[j] = sb[j] = v_zero();
    for (int i = 0; i < n; i++) {
        qv wi = w ? w[i] : v_set1(1.0f);
        sa[i & 7] = v_add(sa[i & 7], wi);
        sb[i & 7] = v_add(sb[i & 7], v_mul(wi, x[i]));
    }
    qv sw = ql_hsum8(sa), swx = ql_hsum8(sb), range = v_sub(mx, mn);
    for (int k = 0; k <= QI_NGRID + 3 && m_any(live); k++) {
        qv cs = best_s, co = best_o;
        if (k < QI_NGRID) {
            cs = v_div(range, v_set1(fhi + quant_grid_asym[k]));
            co = mn;
            qv e = ql_aerr(x, w, n, cs, ql_recip(cs), co, hi);
            qm take = ql_grid_take(k, e, best_err, live);
            best_err = v_blend(take, best_err, e);
            best_s = v_blend(take, best_s, cs);
            best_o = v_blend(take, best_o, co);
        }
        /* joint least squares for this assignment, offset kept <= 0 */
        qv s0, s1, s2;
        ql_asums(x, w, n, cs, co, hi, &s0, &s1, &s2);
        qv det = v_sub(v_mul(sw, s1), v_mul(s0, s0));
        qm dpos = v_gt(det, zero);
        qv s_1 = v_blend(v_gt(s1, zero), zero, v_div(s2, s1));
        qv s = v_blend(dpos, s_1, v_div(v_sub(v_mul(sw, s2), v_mul(s0, swx)), det));
        qv o = v_blend(dpos, zero, v_div(v_sub(v_mul(s1, swx), v_mul(s0, s2)), det));
        qm opos = v_gt(o, zero);
        o = v_blend(opos, o, zero);
        s = v_blend(opos, s, s_1);
        qm ok = m_and(m_and(v_finite(s), v_finite(o)), v_gt(s, zero));
        qv e = ql_aerr(x, w, n, s, ql_recip(s), o, hi);
        qm better = v_lt(e, best_err);
        qm take = m_and(live, m_and(ok, better));
        best_err = v_blend(take, best_err, e);
        best_s = v_blend(take, best_s, s);
        best_o = v_blend(take, best_o, o);
        if (k >= QI_NGRID) live = m_andnot(m_andnot(better, ok), live); /* the refits stop */
    }
    *ps = best_s;
    *po = best_o;
}

/* asym_pick per lane: for the f16 scales (d, dmin) as f32, the best integer
 * (sc, m) of every sub-block near (s / d, mn / dmin); returns the total error. */
LPK_SIMD_INL qv qk_pick_asym(const qv *xt, const qv *wt, const qk_asym *k, const qv *s,
                             const qv *mn, qv d, qv dmin, qv *sc, qv *m)
{
    qv zero = v_zero(), hi = v_set1(k->hi), smax = v_set1(k->smax), total = zero;
    qv vmin = v_set1(-0.5f), vmax = v_set1(k->smax + 0.5f), inf = v_set1(INFINITY);
    qm dp = v_gt(d, zero), mp = v_gt(dmin, zero), mz = v_eq(dmin, zero);
    for (int j = 0; j < k->nsub; j++) {
        const qv *xj = xt + k->len * j, *wj = wt ? wt + k->len * j : NULL;
        qv r = v_min(v_max(v_div(s[j], d), zero), smax);
        qv s0 = v_blend(dp, zero, v_sub(v_add(r, v_set1(QL_MAGIC)), v_set1(QL_MAGIC)));
        r = v_min(v_max(v_div(mn[j], dmin), zero), smax);
        qv m0 = v_blend(mp, zero, v_sub(v_add(r, v_set1(QL_MAGIC)), v_set1(QL_MAGIC)));
        qv be = inf, bs = s0, bm = m0;
        for (int a = -1; a <= 1; a++) {
            qv va = v_add(s0, v_set1((float)a));
            qm oka = m_and(v_gt(va, vmin), v_lt(va, vmax));
            qv da = v_mul(d, va);
            qv ia = ql_recip(da);
            for (int c = -1; c <= 1; c++) {
                qv vc = v_add(m0, v_set1((float)c));
                qm ok = m_and(oka, m_and(v_gt(vc, vmin), v_lt(vc, vmax)));
                if (c) ok = m_andnot(mz, ok);
                qv e = ql_aerr(xj, wj, k->len, da, ia, v_neg(v_mul(dmin, vc)), hi);
                qm take = m_and(ok, v_lt(e, be));
                be = v_blend(take, be, e);
                bs = v_blend(take, bs, va);
                bm = v_blend(take, bm, vc);
            }
        }
        sc[j] = bs;
        m[j] = bm;
        total = v_add(total, be);
    }
    return total;
}

/* The least-squares sums of asym_search's refit per lane, in double and
 * element order: u = q sc, v = m; A = sum w u u, B = sum w u v, C = sum w v v,
 * P = sum w x u, Q = sum w x v (out[5][SIMD_W]). */
LPK_SIMD_INL void qk_arefit_sums(const qv *xt, const qv *wt, const qk_asym *k, qv d, qv dmin,
                                 const qv *sc, const qv *m, double out[5][SIMD_W])
{
    qv zero = v_zero(), hi = v_set1(k->hi), one = v_set1(1.0f);
    qd a = d_zero(), b = d_zero(), c = d_zero(), p = d_zero(), q = d_zero();
    for (int j = 0; j < k->nsub; j++) {
        qv id = ql_recip(v_mul(d, sc[j])), m1 = v_mul(dmin, m[j]);
        for (int i = k->len * j; i < k->len * (j + 1); i++) {
            qv u = v_mul(ql_level(v_add(xt[i], m1), id, zero, hi), sc[j]);
            qv wi = wt ? wt[i] : one;
            a = d_acc(a, wi, u, u);
            b = d_acc(b, wi, u, m[j]);
            c = d_acc(c, wi, m[j], m[j]);
            p = d_acc(p, wi, xt[i], u);
            q = d_acc(q, wi, xt[i], m[j]);
        }
    }
    d_store(out[0], a);
    d_store(out[1], b);
    d_store(out[2], c);
    d_store(out[3], p);
    d_store(out[4], q);
}

/* asym_search per lane: the f16 scales *pd, *pdm and the integer sub-block
 * scales and mins sc, m (nsub each) */
LPK_SIMD_INL void qk_search_asym(const qv *xt, const qv *wt, const qk_asym *k, qh *pd, qh *pdm,
                                 qv *sc, qv *m)
{
    qv s[16], mn[16], tsc[16], tm[16], smx = v_zero(), mmx = v_zero();
    for (int j = 0; j < k->nsub; j++) {
        qv o;
        qk_fit_asym(xt + k->len * j, wt ? wt + k->len * j : NULL, k->len, k->hi, &s[j], &o);
        mn[j] = v_neg(o);
        smx = v_blend(v_gt(s[j], smx), smx, s[j]);
        mmx = v_blend(v_gt(mn[j], mmx), mmx, mn[j]);
    }
    qh bd = h_f16sat(v_div(smx, v_set1(k->smax))), bdm = h_f16sat(v_div(mmx, v_set1(k->smax)));
    qv best = qk_pick_asym(xt, wt, k, s, mn, h_to_f(bd), h_to_f(bdm), sc, m);
    unsigned live = (1u << SIMD_W) - 1;
    for (int it = 0; it < 2 && live; it++) {
        double S[5][SIMD_W];
        uint16_t hb[SIMD_W], hbm[SIMD_W], hn[SIMD_W], hnm[SIMD_W];
        float dm[SIMD_W];
        qk_arefit_sums(xt, wt, k, h_to_f(bd), h_to_f(bdm), sc, m, S);
        h_store(hb, bd);
        h_store(hbm, bdm);
        v_store(dm, h_to_f(bdm));
        unsigned next = 0;
        for (int b = 0; b < SIMD_W; b++) {
            hn[b] = hb[b];
            hnm[b] = hbm[b];
            if (!(live >> b & 1)) continue;
            if (quant_asym_solve(S[0][b], S[1][b], S[2][b], S[3][b], S[4][b], dm[b], &hn[b],
                                 &hnm[b]) && (hn[b] != hb[b] || hnm[b] != hbm[b]))
                next |= 1u << b;
        }
        if (!next) break;
        qh h = h_load(hn), hm = h_load(hnm);
        qv e = qk_pick_asym(xt, wt, k, s, mn, h_to_f(h), h_to_f(hm), tsc, tm);
        qm take = m_and(m_from_bits(next), v_lt(e, best));
        best = v_blend(take, best, e);
        bd = h_blend(take, bd, h);
        bdm = h_blend(take, bdm, hm);
        for (int j = 0; j < k->nsub; j++) {
            sc[j] = v_blend(take, sc[j], tsc[j]);
            m[j] = v_blend(take, m[j], tm[j]);
        }
        live = m_bits(take);
    }
    *pd = bd;
    *pdm = bdm;
}

LPK_SIMD_FN __attribute__((noinline)) void qk_search_asym_w(const qv *xt, const qv *wt,
                                                            const qk_asym *k, qh *pd, qh *pdm,
                                                            qv *sc, qv *m)
{
    qk_search_asym(xt, wt, k, pd, pdm, sc, m);
}

LPK_SIMD_FN __attribute__((noinline)) void qk_search_asym_nw(const qv *xt, const qk_asym *k,
                                                             qh *pd, qh *pdm, qv *sc, qv *m)
{
    qk_search_asym(xt, NULL, k, pd, pdm, sc, m);
}

/* The levels round(clamp((x[i] + dmin m) / (d sc), 0, hi)) of a super-block
 * as bytes in element order (sub-blocks of len: 16 or 32) */
LPK_SIMD_INL void qk_alevels256(const float *x, float d, float dmin, const int *sc, const int *m,
                                int len, float hi, uint8_t *u)
{
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_set1_ps(hi);
    for (int e = 0; e < 256; e += 32) {
        __m256i q[4];
        for (int h = 0; h < 4; h++) {
            int j = (e + 8 * h) / len;
            float d1 = d * (float)sc[j], m1 = dmin * (float)m[j];
            __m256 id = _mm256_set1_ps(d1 != 0.0f ? 1.0f / d1 : 0.0f);
            __m256 v = _mm256_mul_ps(_mm256_add_ps(_mm256_loadu_ps(x + e + 8 * h), _mm256_set1_ps(m1)), id);
            q[h] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, vlo), vhi));
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(void *)(u + e),
                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
}

/* The bytes of block_q4_k, block_q5_k or block_q2_k for the chosen scales
 * (as quant_kq.c's and quant_k2.c's quantizers write them) */
LPK_SIMD_INL void qk_finish_asym(int type, const float *x, uint16_t hd, uint16_t hdm, float d,
                                 float dmin, const int *sc, const int *m, void *out)
{
    _Alignas(32) uint8_t u[256];
    __m256i m15 = _mm256_set1_epi8(15), m1 = _mm256_set1_epi8(1);
    if (type == LPK_TYPE_Q2_K) {
        block_q2_K *b = out;
        qk_alevels256(x, d, dmin, sc, m, 16, 3.0f, u);
        b->d = hd;
        b->dmin = hdm;
        for (int j = 0; j < 16; j++) b->scales[j] = (uint8_t)(sc[j] | (m[j] << 4));
        for (int h = 0; h < 2; h++) {
            __m256i qs = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++)
                qs = _mm256_or_si256(qs, qk_shl8(_mm256_load_si256((const __m256i *)(const void *)(u + 128 * h + 32 * k)), 2 * k));
            _mm256_storeu_si256((__m256i *)(void *)(b->qs + 32 * h), qs);
        }
        return;
    }
    int q5 = type == LPK_TYPE_Q5_K;
    qk_alevels256(x, d, dmin, sc, m, 32, q5 ? 31.0f : 15.0f, u);
    uint8_t *qs, *scales;
    if (q5) {
        block_q5_K *b = out;
        b->d = hd;
        b->dmin = hdm;
        qs = b->qs;
        scales = b->scales;
    } else {
        block_q4_K *b = out;
        b->d = hd;
        b->dmin = hdm;
        qs = b->qs;
        scales = b->scales;
    }
    quant_q4k_pack_scales(sc, m, scales);
    __m256i hb = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i lo = _mm256_load_si256((const __m256i *)(const void *)(u + 64 * c));
        __m256i hi = _mm256_load_si256((const __m256i *)(const void *)(u + 64 * c + 32));
        _mm256_storeu_si256((__m256i *)(void *)(qs + 32 * c),
                            _mm256_or_si256(_mm256_and_si256(lo, m15), qk_shl8(_mm256_and_si256(hi, m15), 4)));
        hb = _mm256_or_si256(hb, qk_shl8(_mm256_and_si256(_mm256_srli_epi16(lo, 4), m1), 2 * c));
        hb = _mm256_or_si256(hb, qk_shl8(_mm256_and_si256(_mm256_srli_epi16(hi, 4), m1), 2 * c + 1));
    }
    if (q5) _mm256_storeu_si256((__m256i *)(void *)((block_q5_K *)out)->qh, hb);
}

/* quant_weights_of's default weighting per lane (q3_k without weights):
 * sqrt(s2 + (x / max|x|)^2), s2 the mean of the squares; 1 (the same error as
 * none) where the super-block is zero. */
LPK_SIMD_INL void qk_default_weights(const qv *xt, qv *wt)
{
    qv zero = v_zero(), amax = zero, s2 = zero;
    for (int i = 0; i < 256; i++) amax = v_max(v_abs(xt[i]), amax);
    qv ia = v_div(v_set1(1.0f), amax);
    for (int i = 0; i < 256; i++) {
        qv t = v_mul(xt[i], ia);
        s2 = v_add(s2, v_mul(t, t));
    }
    s2 = v_div(s2, v_set1(256.0f));
    qm z = v_eq(amax, zero);
    for (int i = 0; i < 256; i++) {
        qv t = v_mul(xt[i], ia);
        wt[i] = v_blend(z, v_sqrt(v_add(s2, v_mul(t, t))), v_set1(1.0f));
    }
}

/* The levels of a super-block x[256] as bytes in element order:
 * round(clamp(x[i] / ds, lo, hi)) + off with ds = d * sc[i / 16] (times
 * 1 / ds as the reference computes it, 0 when ds is 0; the conversion rounds to
 * nearest even as qi_round does on the clamped values) */
LPK_SIMD_INL void qk_levels256(const float *x, float d, const int *sc, float lo, float hi, int off,
                               uint8_t *u)
{
    __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    __m256i o = _mm256_set1_epi32(off);
    for (int j = 0; j < 16; j += 2) {
        __m256i q[4];
        for (int h = 0; h < 4; h++) {
            float ds = d * (float)sc[j + h / 2];
            __m256 id = _mm256_set1_ps(ds != 0.0f ? 1.0f / ds : 0.0f);
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 16 * j + 8 * h), id);
            q[h] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, vlo), vhi)), o);
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(void *)(u + 16 * j),
                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
}

/* quant_q3k_finish: the same bytes, the levels and their bit planes by vector */
LPK_SIMD_INL void qk_finish_q3k(const float *x, uint16_t hd, float d, const int *sc, block_q3_K *b)
{
    _Alignas(32) uint8_t u[256];
    qk_levels256(x, d, sc, -4.0f, 3.0f, 4, u);
    b->d = hd;
    quant_q3k_pack_scales(sc, b->scales);
    __m256i m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1), hm = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        __m256i qs = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_load_si256((const __m256i *)(const void *)(u + 128 * h + 32 * k));
            qs = _mm256_or_si256(qs, qk_shl8(_mm256_and_si256(v, m3), 2 * k));
            hm = _mm256_or_si256(hm, qk_shl8(_mm256_and_si256(_mm256_srli_epi16(v, 2), m1), 4 * h + k));
        }
        _mm256_storeu_si256((__m256i *)(void *)(b->qs + 32 * h), qs);
    }
    _mm256_storeu_si256((__m256i *)(void *)b->hmask, hm);
}

/* quant_q6k_finish: the same bytes, by vector */
LPK_SIMD_INL void qk_finish_q6k(const float *x, uint16_t hd, float d, const int *sc, block_q6_K *b)
{
    _Alignas(32) uint8_t u[256];
    qk_levels256(x, d, sc, -32.0f, 31.0f, 32, u);
    b->d = hd;
    for (int j = 0; j < 16; j++) b->scales[j] = (int8_t)sc[j];
    __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    for (int c = 0; c < 2; c++) {
        __m256i v[4], hb = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_load_si256((const __m256i *)(const void *)(u + 128 * c + 32 * k));
            hb = _mm256_or_si256(hb, qk_shl8(_mm256_and_si256(_mm256_srli_epi16(v[k], 4), m3), 2 * k));
        }
        __m256i l0 = _mm256_or_si256(_mm256_and_si256(v[0], m15), qk_shl8(_mm256_and_si256(v[2], m15), 4));
        __m256i l1 = _mm256_or_si256(_mm256_and_si256(v[1], m15), qk_shl8(_mm256_and_si256(v[3], m15), 4));
        _mm256_storeu_si256((__m256i *)(void *)(b->ql + 64 * c), l0);
        _mm256_storeu_si256((__m256i *)(void *)(b->ql + 64 * c + 32), l1);
        _mm256_storeu_si256((__m256i *)(void *)(b->qh + 32 * c), hb);
    }
}

/* nb super-blocks (any count) of q3_k, q6_k, q4_k, q5_k or q2_k from x (type
 * st), importance weights w of period wn (a multiple of 256) or NULL. Returns
 * nonzero when x holds a NaN or an Inf (dst is then unspecified). */
LPK_SIMD_INL int qk_run(const void *x, int st, const float *w, int64_t wn, void *dst, int64_t nb,
                        int type)
{
    static _Alignas(64) const float zeros[256];
    int sym = type == LPK_TYPE_Q3_K || type == LPK_TYPE_Q6_K;
    const qk_sym *ks = type == LPK_TYPE_Q3_K ? &qk_q3k : &qk_q6k;
    const qk_asym *ka = type == LPK_TYPE_Q4_K ? &qk_q4k : type == LPK_TYPE_Q5_K ? &qk_q5k : &qk_q2k;
    /* without weights: quant_weights_of's default, or plain squared error */
    int dflt = type == LPK_TYPE_Q3_K || type == LPK_TYPE_Q5_K || type == LPK_TYPE_Q2_K;
    size_t bsize = lpk_type_get(type)->type_size;
    _Alignas(64) float xf[SIMD_W * 256];
    qv xt[256], wt[256], sc[16], m[16];
    size_t es = st == LPK_TYPE_F32 ? 4 : 2;
    for (int64_t g = 0; g < nb; g += SIMD_W) {
        int n = nb - g < SIMD_W ? (int)(nb - g) : SIMD_W;
        const char *xg = (const char *)x + (size_t)g * 256 * es;
        qm bad = m_zero();
        for (int b = 0; b < n; b++)
            for (int j = 0; j < 256; j += SIMD_W) {
                qv v = ql_ld(xg, st, 256 * b + j);
                bad = m_or(bad, v_notfinite(v));
                v_store(xf + 256 * b + j, v);
            }
        if (m_any(bad)) return 1;
        for (int c = 0; c < 256; c += 32) {
            const float *rows[SIMD_W];
            for (int b = 0; b < SIMD_W; b++) rows[b] = b < n ? xf + 256 * b + c : zeros + c;
            ql_transpose32(rows, xt + c);
            if (w) {
                for (int b = 0; b < SIMD_W; b++) rows[b] = w + (256 * (g + b)) % wn + c;
                ql_transpose32(rows, wt + c);
            }
        }
        if (!w && dflt) qk_default_weights(xt, wt);
        int weighted = w || dflt;
        qh hd, hdm = h_zero();
        if (sym && weighted) qk_search_sym_w(xt, wt, ks, &hd, sc);
        else if (sym) qk_search_sym_nw(xt, ks, &hd, sc);
        else if (weighted) qk_search_asym_w(xt, wt, ka, &hd, &hdm, sc, m);
        else qk_search_asym_nw(xt, ka, &hd, &hdm, sc, m);
        uint16_t ds[SIMD_W], dms[SIMD_W];
        float df[SIMD_W], dmf[SIMD_W], scf[16][SIMD_W], mf[16][SIMD_W];
        h_store(ds, hd);
        h_store(dms, hdm);
        v_store(df, h_to_f(hd));
        v_store(dmf, h_to_f(hdm));
        int nsub = sym ? 16 : ka->nsub;
        for (int j = 0; j < nsub; j++) {
            v_store(scf[j], sc[j]);
            if (!sym) v_store(mf[j], m[j]);
        }
        for (int b = 0; b < n; b++) {
            int isc[16], im[16];
            for (int j = 0; j < nsub; j++) {
                isc[j] = (int)scf[j][b];
                im[j] = sym ? 0 : (int)mf[j][b];
            }
            void *out = (uint8_t *)dst + (size_t)(g + b) * bsize;
            if (type == LPK_TYPE_Q3_K) qk_finish_q3k(xf + 256 * b, ds[b], df[b], isc, out);
            else if (type == LPK_TYPE_Q6_K) qk_finish_q6k(xf + 256 * b, ds[b], df[b], isc, out);
            else qk_finish_asym(type, xf + 256 * b, ds[b], dms[b], df[b], dmf[b], isc, im, out);
        }
    }
    return 0;
}

/* The exported super-block kernels (quant_blocks_fn with nb counting
 * super-blocks), named QK_PREFIX (the including file's) + sblocks_TYPE: one
 * body per source type so the loads specialise. */
#define QK_EXPORT(name, type)                                                              \
    LPK_TARGET(SIMD_TGT) int name(const void *x, int src_type, const float *w, int64_t wn, \
                                  void *dst, int64_t nb, const quant_err_acc *ea)          \
    {                                                                                      \
        (void)ea; /* no error sums here */                                                 \
        switch (src_type) {                                                                \
        case LPK_TYPE_F16: return qk_run(x, LPK_TYPE_F16, w, wn, dst, nb, type);       \
        case LPK_TYPE_BF16: return qk_run(x, LPK_TYPE_BF16, w, wn, dst, nb, type);     \
        default: return qk_run(x, LPK_TYPE_F32, w, wn, dst, nb, type);                 \
        }                                                                                  \
    }
#define QK_CAT2(a, b) a##b
#define QK_CAT(a, b) QK_CAT2(a, b)
QK_EXPORT(QK_CAT(QK_PREFIX, sblocks_q3_k), LPK_TYPE_Q3_K)
QK_EXPORT(QK_CAT(QK_PREFIX, sblocks_q6_k), LPK_TYPE_Q6_K)
QK_EXPORT(QK_CAT(QK_PREFIX, sblocks_q4_k), LPK_TYPE_Q4_K)
QK_EXPORT(QK_CAT(QK_PREFIX, sblocks_q5_k), LPK_TYPE_Q5_K)
QK_EXPORT(QK_CAT(QK_PREFIX, sblocks_q2_k), LPK_TYPE_Q2_K)

#endif
