/* Super-blocks of 256: q4_k and q6_k. Reference quantizers and GGML's
 * dequantization formulas.
 *
 * Both quantizers work in three steps: a float fit per sub-block (scale, and
 * for q4_k a min), the f16 super-block scales from those, then a search over
 * the integer sub-block scales near the ideal ones, scored with the exact
 * values dequantization will produce; the super-block scales are then refitted
 * by least squares and by stepping through neighbouring f16 values, keeping
 * whatever lowers the weighted squared error. See docs/QUANT.md. */
#include "quant_internal.h"

#include <math.h>

/* ---------------------------------------------------------------- helpers */
/* Float fit of one sub-block (x[n]): x ~ s*q + o with q in [lo, hi]. sym: o = 0
 * and s may be negative (the extreme element goes to lo); otherwise o <= 0 and
 * s >= 0 (q4_k stores -o as an unsigned min). A grid of steps, each refitted by
 * least squares, then refits from the best; scored by the ops kernels. */
static void fit_sub(const qi_ops *ops, const float *x, const float *w, int n, int sym, float lo,
                    float hi, float *s_out, float *o_out)
{
    float mn = x[0], mx = x[0], amax = 0.0f;
    for (int i = 0; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    float best_s = 0.0f, best_o = 0.0f, best_err;
    *s_out = 0.0f;
    *o_out = 0.0f;
    if (sym) {
        if (amax == 0.0f) return;
        float xm = mn == -amax ? -amax : amax;
        best_err = INFINITY;
        for (int k = 0; k < QI_NGRID; k++) {
            float s = -xm / (-lo + quant_grid_sym[k]);
            float e = ops->sym_err(x, w, n, s, lo, hi);
            if (k == 0 || e < best_err) { best_err = e; best_s = s; }
        }
        for (int it = 0; it < 3; it++) {
            float sxq, sqq;
            ops->sym_sums(x, w, n, best_s, lo, hi, &sxq, &sqq);
            float s = sqq > 0.0f ? sxq / sqq : 0.0f;
            if (!isfinite(s) || s == 0.0f || s == best_s) break;
            float e = ops->sym_err(x, w, n, s, lo, hi);
            if (!(e < best_err)) break;
            best_err = e;
            best_s = s;
        }
        *s_out = best_s;
        return;
    }
    if (mn > 0.0f) mn = 0.0f;
    best_o = mn;
    best_err = ops->asym_err(x, w, n, 0.0f, mn, hi);
    if (!(mx > mn)) {
        *o_out = mn;
        return;
    }
    float sw, swx;
    {
        float a[8] = {0}, b[8] = {0};
        for (int i = 0; i < n; i++) {
            float wi = w ? w[i] : 1.0f;
            a[i & 7] += wi;
            b[i & 7] += wi * x[i];
        }
        sw = qi_hsum8(a);
        swx = qi_hsum8(b);
    }
    float cs = 0.0f, co = mn;
    for (int k = 0; k <= QI_NGRID + 3; k++) {
        if (k < QI_NGRID) {
            /* grid point */
            cs = (mx - mn) / (hi + quant_grid_asym[k]);
            co = mn;
            float e = ops->asym_err(x, w, n, cs, co, hi);
            if ((k == 0 && isinf(best_err)) || e < best_err) { best_err = e; best_s = cs; best_o = co; }
        } else {
            /* further refits from the best */
            cs = best_s;
            co = best_o;
        }
        /* joint least squares for this assignment, offset kept <= 0 */
        float S[3];
        ops->asym_sums(x, w, n, cs, co, hi, S);
        float det = sw * S[1] - S[0] * S[0], s, o;
        if (det > 0.0f) {
            s = (sw * S[2] - S[0] * swx) / det;
            o = (S[1] * swx - S[0] * S[2]) / det;
        } else {
            s = S[1] > 0.0f ? S[2] / S[1] : 0.0f;
            o = 0.0f;
        }
        if (o > 0.0f) {
            o = 0.0f;
            s = S[1] > 0.0f ? S[2] / S[1] : 0.0f;
        }
        if (!isfinite(s) || !isfinite(o) || !(s > 0.0f)) continue;
        float e = ops->asym_err(x, w, n, s, o, hi);
        if (e < best_err) { best_err = e; best_s = s; best_o = o; }
        else if (k >= QI_NGRID) break;
    }
    *s_out = best_s;
    *o_out = best_o;
}

/* ---------------------------------------------------------------- q4_k */
/* Error of sub-block (32) with the stored values: x ~ (d*sc)*q - (dmin*m), the
 * same numbers as q*d1 + (-m1). */
static float q4k_sub_err(const qi_ops *ops, const float *x, const float *w, float d, float dmin,
                         int sc, int m)
{
    return ops->asym_err(x, w, 32, d * (float)sc, -(dmin * (float)m), 15.0f);
}

/* For fixed f16 super scales, the best integer (sc, m) per sub-block near the
 * ideal ones; returns the total error. */
static float q4k_pick(const qi_ops *ops, const float *x, const float *w, const float s[8], const float mn[8], float d,
                      float dmin, int sc[8], int m[8])
{
    float total = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j, *wj = w ? w + 32 * j : NULL;
        int s0 = d > 0.0f ? (int)qi_round(qi_clamp(s[j] / d, 0.0f, 63.0f)) : 0;
        int m0 = dmin > 0.0f ? (int)qi_round(qi_clamp(mn[j] / dmin, 0.0f, 63.0f)) : 0;
        float be = INFINITY;
        int bs = s0, bm = m0;
        for (int a = s0 - 1; a <= s0 + 1; a++) {
            if (a < 0 || a > 63) continue;
            for (int c = m0 - 1; c <= m0 + 1; c++) {
                if (c < 0 || c > 63 || (c != m0 && dmin == 0.0f)) continue;
                float e = q4k_sub_err(ops, xj, wj, d, dmin, a, c);
                if (e < be) { be = e; bs = a; bm = c; }
            }
        }
        sc[j] = bs;
        m[j] = bm;
        total += be;
    }
    return total;
}

static void q4k_pack_scales(const int sc[8], const int m[8], uint8_t out[12])
{
    memset(out, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            out[j] = (uint8_t)sc[j];
            out[j + 4] = (uint8_t)m[j];
        } else {
            out[j + 4] = (uint8_t)((sc[j] & 15) | ((m[j] & 15) << 4));
            out[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            out[j] |= (uint8_t)((m[j] >> 4) << 6);
        }
    }
}

void quant_block_q4_k(const qi_ops *ops, const float *x, const float *w, block_q4_K *b)
{
    float s[8], mn[8], smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 8; j++) {
        float o;
        fit_sub(ops, x + 32 * j, w ? w + 32 * j : NULL, 32, 0, 0.0f, 15.0f, &s[j], &o);
        mn[j] = -o;
        smax = s[j] > smax ? s[j] : smax;
        mmax = mn[j] > mmax ? mn[j] : mmax;
    }
    uint16_t bd = qi_f16_sat(smax / 63.0f), bdm = qi_f16_sat(mmax / 63.0f);
    int sc[8], m[8], tsc[8], tm[8];
    float best = q4k_pick(ops, x, w, s, mn, lpk_f16_to_f32(bd), lpk_f16_to_f32(bdm), sc, m);
    /* two least-squares refits of (d, dmin); stepping through neighbouring f16
     * values as well gains < 0.2% (docs/QUANT.md) */
    for (int it = 0; it < 2; it++) {
        uint16_t cd = bd, cdm = bdm;
        /* least-squares (d, dmin) for the current integers and assignment */
        double A = 0, B = 0, C = 0, P = 0, Q = 0;
        float d = lpk_f16_to_f32(bd), dmin = lpk_f16_to_f32(bdm);
        for (int j = 0; j < 8; j++) {
            float d1 = d * (float)sc[j], m1 = dmin * (float)m[j];
            float id = d1 != 0.0f ? 1.0f / d1 : 0.0f;
            for (int i = 32 * j; i < 32 * j + 32; i++) {
                double q = qi_round(qi_clamp((x[i] + m1) * id, 0.0f, 15.0f));
                double wi = w ? w[i] : 1.0, u = q * sc[j], v = m[j];
                A += wi * u * u; B += wi * u * v; C += wi * v * v;
                P += wi * x[i] * u; Q += wi * x[i] * v;
            }
        }
        double det = A * C - B * B;
        uint16_t cand[1][2];
        int nc = 0;
        if (det > 0) {
            double nd = (P * C - B * Q) / det, ndm = (B * P - A * Q) / det;
            if (isfinite(nd) && isfinite(ndm) && nd > 0 && ndm >= 0) {
                cand[nc][0] = qi_f16_sat((float)nd);
                cand[nc++][1] = qi_f16_sat((float)ndm);
            }
        } else if (A > 0 && C == 0) {
            double nd = P / A;
            if (isfinite(nd) && nd > 0) { cand[nc][0] = qi_f16_sat((float)nd); cand[nc++][1] = bdm; }
        }
        for (int c = 0; c < nc; c++) {
            if (cand[c][0] == cd && cand[c][1] == cdm) continue;
            float e = q4k_pick(ops, x, w, s, mn, lpk_f16_to_f32(cand[c][0]),
                               lpk_f16_to_f32(cand[c][1]), tsc, tm);
            if (e < best) {
                best = e;
                bd = cand[c][0];
                bdm = cand[c][1];
                memcpy(sc, tsc, sizeof sc);
                memcpy(m, tm, sizeof m);
            }
        }
        if (bd == cd && bdm == cdm) break;
    }
    b->d = bd;
    b->dmin = bdm;
    q4k_pack_scales(sc, m, b->scales);
    float d = lpk_f16_to_f32(bd), dmin = lpk_f16_to_f32(bdm);
    uint8_t q[256];
    for (int j = 0; j < 8; j++) {
        float d1 = d * (float)sc[j], m1 = dmin * (float)m[j];
        float id = d1 != 0.0f ? 1.0f / d1 : 0.0f;
        for (int i = 32 * j; i < 32 * j + 32; i++)
            q[i] = (uint8_t)qi_round(qi_clamp((x[i] + m1) * id, 0.0f, 15.0f));
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

void quant_ref_q4_k(const float *x, const float *w, void *dst, int64_t n)
{
    block_q4_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++)
        quant_block_q4_k(&quant_ops_ref, x + QK_K * i, w ? w + QK_K * i : NULL, &b[i]);
}

void quant_deq_q4_k(const void *src, float *y, int64_t n)
{
    const block_q4_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = lpk_f16_to_f32(b[i].d), dmin = lpk_f16_to_f32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int c = 0; c < 4; c++, q += 32) {
            int sc, m;
            quant_q4k_scale_min(b[i].scales, 2 * c, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            quant_q4k_scale_min(b[i].scales, 2 * c + 1, &sc, &m);
            float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)quant_q4k_q(b[i].qs, 64 * c + l) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)quant_q4k_q(b[i].qs, 64 * c + 32 + l) - m2;
        }
    }
}

/* ---------------------------------------------------------------- q6_k */
/* Error of sub-block (16) with the stored values: x ~ (d*sc)*q, q in [-32, 31]. */
static float q6k_sub_err(const qi_ops *ops, const float *x, const float *w, float d, int sc)
{
    return ops->sym_err(x, w, 16, d * (float)sc, -32.0f, 31.0f);
}

static float q6k_pick(const qi_ops *ops, const float *x, const float *w, const float s[16], float d, int sc[16])
{
    float total = 0.0f;
    for (int j = 0; j < 16; j++) {
        const float *xj = x + 16 * j, *wj = w ? w + 16 * j : NULL;
        int s0 = d != 0.0f ? (int)qi_round(qi_clamp(s[j] / d, -128.0f, 127.0f)) : 0;
        float be = INFINITY;
        int bs = s0;
        for (int a = s0 - 4; a <= s0 + 4; a++) {
            if (a < -128 || a > 127) continue;
            float e = q6k_sub_err(ops, xj, wj, d, a);
            if (e < be) { be = e; bs = a; }
        }
        sc[j] = bs;
        total += be;
    }
    return total;
}

void quant_block_q6_k(const qi_ops *ops, const float *x, const float *w, block_q6_K *b)
{
    float s[16], smax = 0.0f;
    for (int j = 0; j < 16; j++) {
        float o;
        fit_sub(ops, x + 16 * j, w ? w + 16 * j : NULL, 16, 1, -32.0f, 31.0f, &s[j], &o);
        if (fabsf(s[j]) > fabsf(smax)) smax = s[j];
    }
    int sc[16], tsc[16];
    uint16_t bd = qi_f16_sat(smax / -128.0f);
    float best = q6k_pick(ops, x, w, s, lpk_f16_to_f32(bd), sc);
    {
        uint16_t h = qi_f16_sat(smax / 127.0f);
        float e = q6k_pick(ops, x, w, s, lpk_f16_to_f32(h), tsc);
        if (e < best) { best = e; bd = h; memcpy(sc, tsc, sizeof sc); }
    }
    for (int it = 0; it < 2 && (bd & 0x7fff); it++) {
        uint16_t cd = bd;
        float d = lpk_f16_to_f32(bd);
        double A = 0, P = 0;
        for (int j = 0; j < 16; j++) {
            float ds = d * (float)sc[j];
            float id = ds != 0.0f ? 1.0f / ds : 0.0f;
            for (int i = 16 * j; i < 16 * j + 16; i++) {
                double u = qi_round(qi_clamp(x[i] * id, -32.0f, 31.0f)) * sc[j];
                double wi = w ? w[i] : 1.0;
                A += wi * u * u;
                P += wi * x[i] * u;
            }
        }
        uint16_t cand[1];
        int nc = 0;
        if (A > 0 && isfinite(P / A) && P / A != 0) cand[nc++] = qi_f16_sat((float)(P / A));
        for (int c = 0; c < nc; c++) {
            if (cand[c] == cd) continue;
            float e = q6k_pick(ops, x, w, s, lpk_f16_to_f32(cand[c]), tsc);
            if (e < best) { best = e; bd = cand[c]; memcpy(sc, tsc, sizeof sc); }
        }
        if (bd == cd) break;
    }
    quant_q6k_finish(x, bd, sc, b);
}

void quant_q6k_finish(const float *x, uint16_t bd, const int sc[16], block_q6_K *b)
{
    b->d = bd;
    float d = lpk_f16_to_f32(bd);
    uint8_t q[256];
    for (int j = 0; j < 16; j++) {
        b->scales[j] = (int8_t)sc[j];
        float ds = d * (float)sc[j];
        float id = ds != 0.0f ? 1.0f / ds : 0.0f;
        for (int i = 16 * j; i < 16 * j + 16; i++)
            q[i] = (uint8_t)((int)qi_round(qi_clamp(x[i] * id, -32.0f, 31.0f)) + 32);
    }
    memset(b->qh, 0, sizeof b->qh);
    for (int c = 0; c < 2; c++) {
        uint8_t *ql = b->ql + 64 * c, *qh = b->qh + 32 * c;
        const uint8_t *qc = q + 128 * c;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((qc[l] & 15) | ((qc[l + 64] & 15) << 4));
            ql[l + 32] = (uint8_t)((qc[l + 32] & 15) | ((qc[l + 96] & 15) << 4));
            qh[l] = (uint8_t)((qc[l] >> 4) | ((qc[l + 32] >> 4) << 2) | ((qc[l + 64] >> 4) << 4) |
                              ((qc[l + 96] >> 4) << 6));
        }
    }
}

void quant_ref_q6_k(const float *x, const float *w, void *dst, int64_t n)
{
    block_q6_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++)
        quant_block_q6_k(&quant_ops_ref, x + QK_K * i, w ? w + QK_K * i : NULL, &b[i]);
}

/* quant_q6k_q's values decoded in runs of 32 (element 128 h + 32 k + l) that
 * the compiler can vectorize, then d * scale * q as before. */
void quant_deq_q6_k(const void *src, float *y, int64_t n)
{
    const block_q6_K *b = src;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = lpk_f16_to_f32(b[i].d);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++)
                    q[128 * h + 32 * k + l] =
                        (int8_t)((((b[i].ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 15) |
                                  ((b[i].qh[32 * h + l] >> (2 * k)) & 3) << 4) - 32);
        for (int j = 0; j < 16; j++) {
            float dl = d * (float)b[i].scales[j];
            for (int e = 16 * j; e < 16 * j + 16; e++) y[e] = dl * (float)q[e];
        }
        y += QK_K;
    }
}

/* ---------------------------------------------------------------- shared */
void quant_fit_sub(const qi_ops *ops, const float *x, const float *w, int n, int sym, float lo,
                   float hi, float *s, float *o)
{
    fit_sub(ops, x, w, n, sym, lo, hi, s, o);
}

/* q3_k's scales packed as quant_k2.c describes (here, not there: the SIMD kernels
 * call this, and quant_k2.c calls into the SIMD file) */
void quant_q3k_pack_scales(const int sc[16], uint8_t out[12])
{
    memset(out, 0, 12);
    for (int j = 0; j < 16; j++) {
        int u = sc[j] + 32;
        out[j % 8] |= (uint8_t)((u & 15) << (j < 8 ? 0 : 4));
        out[8 + j % 4] |= (uint8_t)((u >> 4) << (2 * (j / 4)));
    }
}

void quant_q4k_pack_scales(const int sc[8], const int m[8], uint8_t out[12])
{
    q4k_pack_scales(sc, m, out);
}

void quant_q4k_scales(const uint8_t s[12], uint8_t sc[8], uint8_t m[8])
{
    for (int j = 0; j < 8; j++) {
        int a, b;
        quant_q4k_scale_min(s, j, &a, &b);
        sc[j] = (uint8_t)a;
        m[j] = (uint8_t)b;
    }
}
