/* Lane-per-block quantizers for the 32-block types (q4_0, q5_0, q8_0, and the
 * asymmetric q4_1, q5_1), written once over a few lane primitives and compiled twice: for AVX2
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
 * are then assigned block by block in the natural layout and packed, and when
 * the caller asks for them each block's error sums (quant_err_acc: the
 * including file's qe, qe_load, qe_store, ql_err32) are added to its row's
 * lanes from the values and levels at hand, so the rows need no second pass.
 * Only quant/quant_avx2.c and quant/quant_avx512.c include this file. */
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

/* q = qi_round(qi_clamp(x * id, lo, hi)); a NaN stays NaN as in qi_clamp (the
 * bound first: max and min return their second operand when one is NaN; the
 * super-block fits meet inf * 0 on +-FLT_MAX) */
LPK_SIMD_INL qv ql_level(qv x, qv id, qv lo, qv hi)
{
    qv v = v_min(hi, v_max(lo, v_mul(x, id)));
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

/* sym_sums of scale d per lane over n (8 <= n <= 32) elements: sum w x q and
 * sum w q q with q = qi_round(qi_clamp(x / d, lo, hi)) */
LPK_SIMD_INL void ql_sym_sums(const qv *xt, const qv *wt, int n, qv d, qv lo, qv hi, qv *sxq,
                              qv *sqq)
{
    qv id = ql_recip(d), a[8], b[8];
    for (int j = 0; j < 8; j++) a[j] = b[j] = v_zero();
    _Pragma("GCC unroll 32") for (int i = 0; i < n; i++) {
        qv q = ql_level(xt[i], id, lo, hi);
        qv wq = wt ? v_mul(wt[i], q) : q;
        a[i & 7] = v_add(a[i & 7], v_mul(wq, xt[i]));
        b[i & 7] = v_add(b[i & 7], v_mul(wq, q));
    }
    *sxq = ql_hsum8(a);
    *sqq = ql_hsum8(b);
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
    qv sxq, sqq;
    ql_sym_sums(xt, wt, 32, h_to_f(best), lo, hi, &sxq, &sqq);
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

/* ---------------------------------------------------------------- asymmetric (q4_1, q5_1) */
/* asym_err of (d, m) per lane (id = ql_recip(d)) over n (8 <= n <= 32)
 * elements: sum w (x - (q d + m))^2 with q = round(clamp((x - m) id, 0, hi)) */
LPK_SIMD_INL qv ql_aerr(const qv *xt, const qv *wt, int n, qv d, qv id, qv m, qv hi)
{
    qv acc[8], zero = v_zero();
    for (int j = 0; j < 8; j++) acc[j] = v_zero();
    _Pragma("GCC unroll 32") for (int i = 0; i < n; i++) {
        qv q = ql_level(v_sub(xt[i], m), id, zero, hi);
        qv e = v_sub(xt[i], v_add(v_mul(q, d), m));
        acc[i & 7] = v_add(acc[i & 7], wt ? v_mul(v_mul(wt[i], e), e) : v_mul(e, e));
    }
    return ql_hsum8(acc);
}

/* asym_sums of (d, m) per lane over n (8 <= n <= 32) elements: sum w q,
 * sum w q q, sum w q x */
LPK_SIMD_INL void ql_asums(const qv *xt, const qv *wt, int n, qv d, qv m, qv hi, qv *s0, qv *s1,
                           qv *s2)
{
    qv id = ql_recip(d), zero = v_zero(), a[8], b[8], c[8];
    for (int j = 0; j < 8; j++) a[j] = b[j] = c[j] = v_zero();
    _Pragma("GCC unroll 32") for (int i = 0; i < n; i++) {
        qv q = ql_level(v_sub(xt[i], m), id, zero, hi);
        qv wq = wt ? v_mul(wt[i], q) : q;
        a[i & 7] = v_add(a[i & 7], wq);
        b[i & 7] = v_add(b[i & 7], v_mul(wq, q));
        c[i & 7] = v_add(c[i & 7], v_mul(wq, xt[i]));
    }
    *s0 = ql_hsum8(a);
    *s1 = ql_hsum8(b);
    *s2 = ql_hsum8(c);
}

/* The joint least-squares (d, m) of an assignment from its sums s0 = sum w q,
 * s1 = sum w q q, s2 = sum w q x (asym_refit's solve), as halves in *nd, *nm;
 * the lanes where it is usable. */
LPK_SIMD_INL qm ql_asolve(qv sw, qv swx, qv s0, qv s1, qv s2, qh *nd, qh *nm)
{
    qv zero = v_zero();
    qv det = v_sub(v_mul(sw, s1), v_mul(s0, s0));
    qm ok = v_gt(det, zero);
    qv sdet = v_blend(ok, v_set1(1.0f), det); /* no division by a failed lane's det */
    qv rd = v_div(v_sub(v_mul(sw, s2), v_mul(s0, swx)), sdet);
    qv rm = v_div(v_sub(v_mul(s1, swx), v_mul(s0, s2)), sdet);
    ok = m_and(ok, m_and(m_and(v_finite(rd), v_finite(rm)), v_gt(rd, zero)));
    *nd = h_f16sat(v_blend(ok, zero, rd));
    *nm = h_f16sat(v_blend(ok, zero, rm));
    return ok;
}

/* Whether grid point k of an asymmetric search (error e) replaces the best, in
 * the live lanes: a lower error, or the first point where the best is inf. */
LPK_SIMD_INL qm ql_grid_take(int k, qv e, qv best_err, qm live)
{
    qm take = v_lt(e, best_err);
    if (k == 0) take = m_or(take, v_eq(v_abs(best_err), v_set1(INFINITY)));
    return m_and(take, live);
}

/* The 32-block search's own forms of asym_err and asym_sums (q4_1, q5_1),
 * bit-identical to them because its steps are f16 values: q*d is then exact (q
 * <= 31: 5 bits, d: 11 significant bits, never below 2^-24), so q*d + m is one
 * fused multiply-add. The level is rounded by v_round (vrndscaleps, one
 * instruction) instead of the reference's two additions: they differ only in
 * the sign of a zero level, which no sum or error sees (every accumulator
 * starts at +0, and +-0 * d + m is m). Without weights the sums of q and q*q
 * are sums of small integers (q*q <= 961, 32 of them < 2^24), exact in any
 * order, so q*q + s is one fused multiply-add as well. */

/* max(0, (x - m) id) clamped to hi and rounded: the level of y = x - m */
LPK_SIMD_INL qv ql_alevel(qv y, qv id, qv hi)
{
    return v_round(v_min(hi, v_max(v_zero(), v_mul(y, id))));
}

/* asym_err of an f16 step d (id = ql_recip(d)) and m over the 32 elements */
LPK_SIMD_INL qv ql_aerr_h(const qv *xt, const qv *wt, qv d, qv id, qv m, qv hi)
{
    qv acc[8];
    for (int j = 0; j < 8; j++) acc[j] = v_zero();
    _Pragma("GCC unroll 32") for (int i = 0; i < 32; i++) {
        qv e = v_sub(xt[i], v_fmadd(ql_alevel(v_sub(xt[i], m), id, hi), d, m));
        acc[i & 7] = v_add(acc[i & 7], wt ? v_mul(v_mul(wt[i], e), e) : v_mul(e, e));
    }
    return ql_hsum8(acc);
}

/* asym_sums of an f16 step d and m over the 32 elements */
LPK_SIMD_INL void ql_asums_h(const qv *xt, const qv *wt, qv d, qv m, qv hi, qv *s0, qv *s1,
                             qv *s2)
{
    qv id = ql_recip(d), a[8], b[8], c[8];
    for (int j = 0; j < 8; j++) a[j] = b[j] = c[j] = v_zero();
    _Pragma("GCC unroll 32") for (int i = 0; i < 32; i++) {
        qv q = ql_alevel(v_sub(xt[i], m), id, hi);
        qv wq = wt ? v_mul(wt[i], q) : q;
        a[i & 7] = v_add(a[i & 7], wq);
        b[i & 7] = wt ? v_add(b[i & 7], v_mul(wq, q)) : v_fmadd(q, q, b[i & 7]);
        c[i & 7] = v_add(c[i & 7], v_mul(wq, xt[i]));
    }
    *s0 = ql_hsum8(a);
    *s1 = ql_hsum8(b);
    *s2 = ql_hsum8(c);
}

/* asym_refit per lane: the joint least-squares (d, m) of the assignment that
 * (dh, mh) implies, as halves in *nd, *nm; the lanes where it is usable. */
LPK_SIMD_INL qm ql_arefit(const qv *xt, const qv *wt, qv hi, qv sw, qv swx, qh dh, qh mh, qh *nd,
                   qh *nm)
{
    qv s0, s1, s2;
    ql_asums_h(xt, wt, h_to_f(dh), h_to_f(mh), hi, &s0, &s1, &s2);
    return ql_asolve(sw, swx, s0, s1, s2, nd, nm);
}

/* asym_err of step 0 and m: q is 0 and q*0 + m is m (the sign of a zero
 * difference does not reach its square) */
LPK_SIMD_INL qv ql_aerr0(const qv *xt, const qv *wt, qv m)
{
    qv acc[8];
    for (int j = 0; j < 8; j++) acc[j] = v_zero();
    for (int i = 0; i < 32; i++) {
        qv e = v_sub(xt[i], m);
        acc[i & 7] = v_add(acc[i & 7], wt ? v_mul(v_mul(wt[i], e), e) : v_mul(e, e));
    }
    return ql_hsum8(acc);
}

/* A grid point (f16 step d, id = ql_recip(d), the grid's m) in one pass: its
 * asym_err and its asym_sums s[0..2], from yt[i] = max(x[i] - m, 0) (then
 * max(0, (x - m) id) is yt id: both are 0 where x < m, and id >= 0). Each
 * accumulator takes its 4 elements in index order as in the separate
 * functions; lane j's are summed before lane j + 1's, so that 4 accumulators,
 * not 32, are live at once. */
LPK_SIMD_INL qv ql_agrid(const qv *xt, const qv *yt, const qv *wt, qv d, qv id, qv m, qv hi,
                         qv s[3])
{
    qv acc[8], a[8], b[8], c[8];
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
        qv ea = v_zero(), sa = v_zero(), sb = v_zero(), sc = v_zero();
        _Pragma("GCC unroll 4") for (int i = j; i < 32; i += 8) {
            qv q = v_round(v_min(hi, v_mul(yt[i], id)));
            qv e = v_sub(xt[i], v_fmadd(q, d, m));
            qv wq = wt ? v_mul(wt[i], q) : q;
            ea = v_add(ea, wt ? v_mul(v_mul(wt[i], e), e) : v_mul(e, e));
            sa = v_add(sa, wq);
            sb = wt ? v_add(sb, v_mul(wq, q)) : v_fmadd(q, q, sb);
            sc = v_add(sc, v_mul(wq, xt[i]));
        }
        acc[j] = ea;
        a[j] = sa;
        b[j] = sb;
        c[j] = sc;
    }
    s[0] = ql_hsum8(a);
    s[1] = ql_hsum8(b);
    s[2] = ql_hsum8(c);
    return ql_hsum8(acc);
}

/* quant_search_asym for every lane: the f16 bits of the best (d, m) */
LPK_SIMD_INL void ql_search_asym(const qv *xt, const qv *wt, int nmax, qh *dh, qh *mh)
{
    qv mn = xt[0], mx = xt[0];
    for (int i = 1; i < 32; i++) {
        mn = v_blend(v_lt(xt[i], mn), mn, xt[i]);
        mx = v_blend(v_gt(xt[i], mx), mx, xt[i]);
    }
    qv hi = v_set1((float)nmax), zero = v_zero();
    qh bd = h_zero(), bm = h_f16sat(mn);
    qh m0 = bm;
    qv fm0 = h_to_f(m0);
    qv best_err = ql_aerr0(xt, wt, fm0);
    qm live = v_gt(mx, mn); /* else the block is flat: (0, min) */
    qv sa[8], sb[8], yt[32];
    for (int j = 0; j < 8; j++) sa[j] = sb[j] = v_zero();
    for (int i = 0; i < 32; i++) {
        qv wi = wt ? wt[i] : v_set1(1.0f);
        sa[i & 7] = v_add(sa[i & 7], wi);
        sb[i & 7] = v_add(sb[i & 7], v_mul(wi, xt[i]));
        yt[i] = v_max(v_sub(xt[i], fm0), zero);
    }
    qv sw = ql_hsum8(sa), swx = ql_hsum8(sb), range = v_sub(mx, mn);
    for (int k = 0; k < QI_NGRID; k++) {
        qh h = h_f16sat(v_div(range, v_set1((float)nmax + quant_grid_asym[k])));
        qv d = h_to_f(h), s[3];
        qv e = ql_agrid(xt, yt, wt, d, ql_recip(d), fm0, hi, s);
        qm take = ql_grid_take(k, e, best_err, live);
        bd = h_blend(take, bd, h);
        bm = h_blend(take, bm, m0);
        best_err = v_blend(take, best_err, e);
        qh nd, nm;
        qm ok = m_and(live, ql_asolve(sw, swx, s[0], s[1], s[2], &nd, &nm));
        if (m_any(ok)) {
            qv fd = h_to_f(nd);
            e = ql_aerr_h(xt, wt, fd, ql_recip(fd), h_to_f(nm), hi);
            take = m_and(ok, v_lt(e, best_err));
            bd = h_blend(take, bd, nd);
            bm = h_blend(take, bm, nm);
            best_err = v_blend(take, best_err, e);
        }
    }
    /* two more refits from the best, each lane until one does not improve */
    for (int it = 0; it < 2; it++) {
        live = m_andnot(h_eq(bd, h_zero()), live);
        if (!m_any(live)) break;
        qh nd, nm;
        qm ok = m_and(live, ql_arefit(xt, wt, hi, sw, swx, bd, bm, &nd, &nm));
        ok = m_andnot(m_and(h_eq(nd, bd), h_eq(nm, bm)), ok);
        qv fd = h_to_f(nd);
        qv e = ql_aerr_h(xt, wt, fd, ql_recip(fd), h_to_f(nm), hi);
        qm take = m_and(ok, v_lt(e, best_err));
        bd = h_blend(take, bd, nd);
        bm = h_blend(take, bm, nm);
        best_err = v_blend(take, best_err, e);
        live = take;
    }
    *dh = bd;
    *mh = bm;
}

/* element j in the low nibble of byte j, element j + 16 in the high one */
LPK_SIMD_INL __m128i ql_nibbles(__m256i u)
{
    __m128i lo = _mm256_castsi256_si128(u), hi = _mm256_extracti128_si256(u, 1);
    return _mm_or_si128(_mm_and_si128(lo, _mm_set1_epi8(15)),
                        _mm_slli_epi16(_mm_and_si128(hi, _mm_set1_epi8(15)), 4));
}

/* The error lanes of a call's blocks in order (quant_err_acc): ql_enext gives
 * the row lanes of the next block, NULL when it adds nothing (no sums asked, or
 * padding). Counted, not divided: blocks stay in order within and across groups. */
typedef struct {
    double *row;
    int64_t col, bpr, left;
} ql_epos;

LPK_SIMD_INL ql_epos ql_epos_at(const quant_err_acc *ea)
{
    ql_epos p = {NULL, 0, 1, 0};
    if (ea) {
        p.row = ea->lanes + 2 * QUANT_ERR_LANES * (ea->k0 / ea->bpr);
        p.col = ea->k0 % ea->bpr;
        p.bpr = ea->bpr;
        p.left = ea->nv;
    }
    return p;
}

LPK_SIMD_INL double *ql_enext(ql_epos *p)
{
    if (p->left <= 0) return NULL;
    double *r = p->row;
    p->left--;
    if (++p->col == p->bpr) {
        p->col = 0;
        p->row += 2 * QUANT_ERR_LANES;
    }
    return r;
}

/* The lanes of the row a group's blocks are in, held in registers (ql_err32)
 * until a block of another row or the end of the group (ql_eg_end). */
typedef struct {
    double *row;
    qe a;
} ql_eg;

LPK_SIMD_INL ql_eg ql_eg_begin(void)
{
    ql_eg g;
    memset(&g, 0, sizeof g);
    return g;
}

/* the next block's values x and levels u (ql_err32) */
LPK_SIMD_INL void ql_eg_block(ql_epos *p, ql_eg *g, const float *x, __m256i u, int off, float d,
                              float m, int asym)
{
    double *e = ql_enext(p);
    if (e != g->row) {
        if (g->row) qe_store(g->row, g->a);
        g->row = e;
        if (e) g->a = qe_load(e);
    }
    if (e) g->a = ql_err32(g->a, x, u, off, d, m, asym);
}

LPK_SIMD_INL void ql_eg_end(ql_eg *g)
{
    if (g->row) qe_store(g->row, g->a);
}

/* q8_0 without weights (quant_q8_0_scale, round to nearest) for a group of SIMD_W
 * blocks, read in the natural layout (this type is bound by reading its input:
 * no transpose). Per block, as integers on the f32 bits: the largest
 * non-negative value (signed max, floored at 0) and the largest bit pattern
 * (unsigned max: the most negative value when one is negative); the vectors of
 * the SIMD_W blocks are reduced together (ql_reduce_max, block b in lane b). max
 * |x| is the larger magnitude of the two; +max occurs when the first equals it,
 * -max when the second is its negation; a NaN or Inf shows as a non-finite max
 * (its bits exceed every finite value's). xf receives the values as f32; the
 * blocks' error sums go where ep says. Returns nonzero when a block holds NaN/Inf. */
LPK_SIMD_INL int ql_q8_0_group(const void *x, int st, float *xf, block_q8_0 *b, ql_epos *ep)
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
    float ids[SIMD_W], df[SIMD_W];
    h_store(hs, h);
    v_store(df, h_to_f(h));
    v_store(ids, ql_recip(h_to_f(h)));
    ql_eg g = ql_eg_begin();
    for (int k = 0; k < SIMD_W; k++) {
        __m256i u = ql_levels32(xf + 32 * k, ids[k], -128.0f, 127.0f, 0);
        b[k].d = hs[k];
        _mm256_storeu_si256((__m256i *)(void *)b[k].qs, u);
        ql_eg_block(ep, &g, xf + 32 * k, u, 0, df[k], 0.0f, 0);
    }
    ql_eg_end(&g);
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

/* The search in two bodies, with weights and without (the NULL a constant:
 * no per-element test), each compiled once rather than inlined into every
 * source type's kernel. */
LPK_SIMD_FN __attribute__((noinline)) void ql_search_asym_w(const qv *xt, const qv *wt,
                                                            int nmax, qh *dh, qh *mh)
{
    ql_search_asym(xt, wt, nmax, dh, mh);
}

LPK_SIMD_FN __attribute__((noinline)) void ql_search_asym_nw(const qv *xt, int nmax, qh *dh,
                                                             qh *mh)
{
    ql_search_asym(xt, NULL, nmax, dh, mh);
}

/* The blocks of a group of q4_1 or q5_1 (i: the first's index in dst): the
 * search on the transposed values, then each block's levels in the natural
 * layout, packed, and its error sums where ep says. */
LPK_SIMD_INL void ql_asym_group(const qv *xt, const qv *wt, const float *xf, int type, void *dst,
                                int64_t i, ql_epos *ep)
{
    int nmax = type == LPK_TYPE_Q4_1 ? 15 : 31;
    qh dh, mh;
    if (wt) ql_search_asym_w(xt, wt, nmax, &dh, &mh);
    else ql_search_asym_nw(xt, nmax, &dh, &mh);
    uint16_t ds[SIMD_W], ms[SIMD_W];
    float ids[SIMD_W], mf[SIMD_W], df[SIMD_W];
    h_store(ds, dh);
    h_store(ms, mh);
    v_store(df, h_to_f(dh));
    v_store(ids, ql_recip(h_to_f(dh)));
    v_store(mf, h_to_f(mh));
    ql_eg g = ql_eg_begin();
    for (int b = 0; b < SIMD_W; b++) {
        float t[32];
        for (int j = 0; j < 32; j++) t[j] = xf[32 * b + j] - mf[b];
        __m256i u = ql_levels32(t, ids[b], 0.0f, (float)nmax, 0);
        ql_eg_block(ep, &g, xf + 32 * b, u, 0, df[b], mf[b], 1);
        if (type == LPK_TYPE_Q4_1) {
            block_q4_1 *o = (block_q4_1 *)dst + i + b;
            o->d = ds[b];
            o->m = ms[b];
            _mm_storeu_si128((__m128i *)(void *)o->qs, ql_nibbles(u));
        } else {
            block_q5_1 *o = (block_q5_1 *)dst + i + b;
            uint32_t hb = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(u, 3));
            o->d = ds[b];
            o->m = ms[b];
            memcpy(o->qh, &hb, 4);
            _mm_storeu_si128((__m128i *)(void *)o->qs, ql_nibbles(u));
        }
    }
    ql_eg_end(&g);
}

/* nb blocks (a multiple of SIMD_W) of type (q4_0, q4_1, q5_0, q5_1 or q8_0) from x (type st),
 * importance weights w of period wn or NULL, the error sums to ea or NULL. */
LPK_SIMD_INL int ql_run(const void *x, int st, const float *w, int64_t wn, void *dst, int64_t nb,
                        int type, const quant_err_acc *ea)
{
    float xf[SIMD_W * 32], ids[SIMD_W], df[SIMD_W];
    ql_epos ep = ql_epos_at(ea);
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
            bad |= ql_q8_0_group(xi, st, xf, (block_q8_0 *)dst + i, &ep);
            continue;
        }
        /* the next group's input, fetched while this one is searched (its
         * loads missed the cache; fetching the output lines too did not help) */
        for (size_t o = 0; o < SIMD_W * 32 * es; o += 64)
            _mm_prefetch((const char *)((uintptr_t)xi + SIMD_W * 32 * es + o), _MM_HINT_T0);
        bad |= ql_load(xi, st, xf, xt);
        if (w) {
            const float *rows[SIMD_W];
            for (int b = 0; b < SIMD_W; b++) rows[b] = w + (32 * (i + b)) % wn;
            ql_transpose32(rows, wt);
        }
        if (type == LPK_TYPE_Q4_1 || type == LPK_TYPE_Q5_1) {
            ql_asym_group(xt, w ? wt : NULL, xf, type, dst, i, &ep);
            continue;
        }
        /* the NULL is a constant in the inlined search: no per-element test */
        qh h = w ? ql_search_sym(xt, wt, nlo, nlo - 1) : ql_search_sym(xt, NULL, nlo, nlo - 1);
        h_store(hs, h);
        v_store(df, h_to_f(h));
        v_store(ids, ql_recip(h_to_f(h)));
        int off = type == LPK_TYPE_Q8_0 ? 0 : nlo;
        ql_eg g = ql_eg_begin();
        for (int b = 0; b < SIMD_W; b++) {
            const float *xb = xf + 32 * b;
            __m256i u = ql_levels32(xb, ids[b], (float)-nlo, (float)(nlo - 1), off);
            if (type == LPK_TYPE_Q4_0) {
                block_q4_0 *o = (block_q4_0 *)dst + i + b;
                o->d = hs[b];
                _mm_storeu_si128((__m128i *)(void *)o->qs, ql_nibbles(u));
            } else if (type == LPK_TYPE_Q5_0) {
                block_q5_0 *o = (block_q5_0 *)dst + i + b;
                uint32_t hb = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(u, 3));
                o->d = hs[b];
                memcpy(o->qh, &hb, 4);
                _mm_storeu_si128((__m128i *)(void *)o->qs, ql_nibbles(u));
            } else {
                block_q8_0 *o = (block_q8_0 *)dst + i + b;
                o->d = hs[b];
                _mm256_storeu_si256((__m256i *)(void *)o->qs, u);
            }
            ql_eg_block(&ep, &g, xb, u, off, df[b], 0.0f, 0);
        }
        ql_eg_end(&g);
    }
    return bad;
}

/* The exported kernels: one body per source type so the loads specialise. */
#define QL_EXPORT(name, type)                                                              \
    LPK_TARGET(SIMD_TGT) int name(const void *x, int src_type, const float *w, \
                                                int64_t wn, void *dst, int64_t nb,           \
                                                const quant_err_acc *ea)                     \
    {                                                                                      \
        switch (src_type) {                                                                \
        case LPK_TYPE_F16: return ql_run(x, LPK_TYPE_F16, w, wn, dst, nb, type, ea);       \
        case LPK_TYPE_BF16: return ql_run(x, LPK_TYPE_BF16, w, wn, dst, nb, type, ea);     \
        default: return ql_run(x, LPK_TYPE_F32, w, wn, dst, nb, type, ea);                 \
        }                                                                                  \
    }

#endif
