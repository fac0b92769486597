/* Super-blocks of 256 with sub-block scales: q5_k, q3_k, q2_k. Reference
 * quantizers (written over qi_ops, so the AVX2 ops give the same bytes) and
 * GGML's dequantization formulas.
 *
 * The searches follow q4_k's (quant_kq.c): a float fit per sub-block, the f16
 * super-block scale(s) from those, the integer sub-block scales near the ideal
 * ones scored with the exact values dequantization will produce, then
 * least-squares refits of the super-block scales. See docs/QUANT.md. */
#include "quant_internal.h"

#include <math.h>

/* The importance weights of the new types' searches for n values (n <= 256):
 * the importance matrix's columns as given; without one, for q5_k, q3_k and
 * q2_k w_i = sqrt(s2 + x_i^2) with s2 the block's mean square, on x / max|x|
 * (the same argmin, no overflow), and plain squared error for iq4_nl/iq4_xs.
 * Measured on llama2-20m (docs-valid 40 chunks, KLD against bf16): the
 * weighting beats plain squared error by 14-25% on pure q5_k/q3_k/q2_k (|x| and
 * x^2 do about as well), and loses 10-14% on the IQ4_NL/IQ4_XS recipes
 * (docs/QUANT.md). The one place that decides the default weighting. */
const float *quant_weights_of(int type, const float *x, const float *imatrix, int n, float *buf)
{
    if (imatrix || type == LPK_TYPE_IQ4_NL || type == LPK_TYPE_IQ4_XS) return imatrix;
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    if (amax == 0.0f) return NULL;
    float ia = 1.0f / amax, s2 = 0.0f;
    for (int i = 0; i < n; i++) s2 += (x[i] * ia) * (x[i] * ia);
    s2 /= (float)n;
    for (int i = 0; i < n; i++) buf[i] = sqrtf(s2 + (x[i] * ia) * (x[i] * ia));
    return buf;
}

/* ---------------------------------------------------------------- asymmetric */
/* x ~ (d*sc[j])*q - dmin*m[j], q in 0..hi, nsub sub-blocks of len values,
 * integer scales and mins in 0..smax (q5_k: 8 x 32, 6 bits; q2_k: 16 x 16, 4). */
typedef struct k2_asym {
    int nsub, len, smax;
    float hi;
} k2_asym;

/* For fixed f16 super-block scales, the best integer (sc, m) per sub-block
 * among the 3 x 3 around the ideal ones; returns the total error. */
static float asym_pick(const qi_ops *ops, const k2_asym *k, const float *x, const float *w,
                       const float *s, const float *mn, float d, float dmin, int *sc, int *m)
{
    float total = 0.0f, smax = (float)k->smax;
    for (int j = 0; j < k->nsub; j++) {
        const float *xj = x + k->len * j, *wj = w ? w + k->len * j : NULL;
        int s0 = d > 0.0f ? (int)qi_round(qi_clamp(s[j] / d, 0.0f, smax)) : 0;
        int m0 = dmin > 0.0f ? (int)qi_round(qi_clamp(mn[j] / dmin, 0.0f, smax)) : 0;
        float be = INFINITY;
        int bs = s0, bm = m0;
        for (int a = s0 - 1; a <= s0 + 1; a++) {
            if (a < 0 || a > k->smax) continue;
            for (int c = m0 - 1; c <= m0 + 1; c++) {
                if (c < 0 || c > k->smax || (c != m0 && dmin == 0.0f)) continue;
                float e = ops->asym_err(xj, wj, k->len, d * (float)a, -(dmin * (float)c), k->hi);
                if (e < be) { be = e; bs = a; bm = c; }
            }
        }
        sc[j] = bs;
        m[j] = bm;
        total += be;
    }
    return total;
}

/* The levels of the chosen scales: q[i] in 0..hi. */
static void asym_assign(const k2_asym *k, const float *x, float d, float dmin, const int *sc,
                        const int *m, uint8_t *q)
{
    for (int j = 0; j < k->nsub; j++) {
        float d1 = d * (float)sc[j], m1 = dmin * (float)m[j];
        float id = d1 != 0.0f ? 1.0f / d1 : 0.0f;
        for (int i = k->len * j; i < k->len * (j + 1); i++)
            q[i] = (uint8_t)qi_round(qi_clamp((x[i] + m1) * id, 0.0f, k->hi));
    }
}

/* Scales of one super-block of 256: f16 bits of d and dmin, integer sc/m per
 * sub-block, and the levels. */
static void asym_search(const qi_ops *ops, const k2_asym *k, const float *x, const float *w,
                        uint16_t *pd, uint16_t *pdm, int *sc, int *m, uint8_t *q)
{
    float s[16], mn[16], smx = 0.0f, mmx = 0.0f;
    for (int j = 0; j < k->nsub; j++) {
        float o;
        quant_fit_sub(ops, x + k->len * j, w ? w + k->len * j : NULL, k->len, 0, 0.0f, k->hi,
                      &s[j], &o);
        mn[j] = -o;
        smx = s[j] > smx ? s[j] : smx;
        mmx = mn[j] > mmx ? mn[j] : mmx;
    }
    uint16_t bd = qi_f16_sat(smx / (float)k->smax), bdm = qi_f16_sat(mmx / (float)k->smax);
    int tsc[16], tm[16];
    float best = asym_pick(ops, k, x, w, s, mn, lpk_f16_to_f32(bd), lpk_f16_to_f32(bdm), sc, m);
    for (int it = 0; it < 2; it++) {
        /* least-squares (d, dmin) for the current integers and assignment */
        float d = lpk_f16_to_f32(bd), dmin = lpk_f16_to_f32(bdm);
        asym_assign(k, x, d, dmin, sc, m, q);
        double A = 0, B = 0, C = 0, P = 0, Q = 0;
        for (int j = 0; j < k->nsub; j++) {
            for (int i = k->len * j; i < k->len * (j + 1); i++) {
                double wi = w ? w[i] : 1.0, u = (double)q[i] * sc[j], v = m[j];
                A += wi * u * u; B += wi * u * v; C += wi * v * v;
                P += wi * x[i] * u; Q += wi * x[i] * v;
            }
        }
        uint16_t cd, cdm;
        if (!quant_asym_solve(A, B, C, P, Q, dmin, &cd, &cdm)) break;
        if (cd == bd && cdm == bdm) break;
        float e = asym_pick(ops, k, x, w, s, mn, lpk_f16_to_f32(cd), lpk_f16_to_f32(cdm), tsc, tm);
        if (!(e < best)) break;
        best = e;
        bd = cd;
        bdm = cdm;
        memcpy(sc, tsc, sizeof(int) * (size_t)k->nsub);
        memcpy(m, tm, sizeof(int) * (size_t)k->nsub);
    }
    *pd = bd;
    *pdm = bdm;
    asym_assign(k, x, lpk_f16_to_f32(bd), lpk_f16_to_f32(bdm), sc, m, q);
}

/* ---------------------------------------------------------------- symmetric */
/* x ~ (d*sc[j])*q, q in lo..hi, 16 sub-blocks of 16, sc in -32..31 (q3_k). */
static float sym_pick(const qi_ops *ops, const float *x, const float *w, const float *s, float d,
                      float lo, float hi, int *sc)
{
    float total = 0.0f;
    for (int j = 0; j < 16; j++) {
        const float *xj = x + 16 * j, *wj = w ? w + 16 * j : NULL;
        int s0 = d != 0.0f ? (int)qi_round(qi_clamp(s[j] / d, -32.0f, 31.0f)) : 0;
        float be = INFINITY;
        int bs = s0;
        for (int a = s0 - 2; a <= s0 + 2; a++) {
            if (a < -32 || a > 31) continue;
            float e = ops->sym_err(xj, wj, 16, d * (float)a, lo, hi);
            if (e < be) { be = e; bs = a; }
        }
        sc[j] = bs;
        total += be;
    }
    return total;
}

static void sym_assign(const float *x, float d, const int *sc, float lo, float hi, int8_t *q)
{
    for (int j = 0; j < 16; j++) {
        float ds = d * (float)sc[j];
        float id = ds != 0.0f ? 1.0f / ds : 0.0f;
        for (int i = 16 * j; i < 16 * j + 16; i++)
            q[i] = (int8_t)qi_round(qi_clamp(x[i] * id, lo, hi));
    }
}

/* The f16 super-block scale and the integer sub-block scales (the levels
 * follow from them: sym_assign). q: room for 256 levels during the refits. */
static void sym_search(const qi_ops *ops, const float *x, const float *w, float lo, float hi,
                       uint16_t *pd, int *sc, int8_t *q)
{
    float s[16], smx = 0.0f;
    for (int j = 0; j < 16; j++) {
        float o;
        quant_fit_sub(ops, x + 16 * j, w ? w + 16 * j : NULL, 16, 1, lo, hi, &s[j], &o);
        if (fabsf(s[j]) > fabsf(smx)) smx = s[j];
    }
    int tsc[16];
    uint16_t bd = qi_f16_sat(smx / -32.0f);
    float best = sym_pick(ops, x, w, s, lpk_f16_to_f32(bd), lo, hi, sc);
    {
        uint16_t h = qi_f16_sat(smx / 31.0f);
        float e = sym_pick(ops, x, w, s, lpk_f16_to_f32(h), lo, hi, tsc);
        if (e < best) { best = e; bd = h; memcpy(sc, tsc, sizeof tsc); }
    }
    for (int it = 0; it < 2 && (bd & 0x7fff); it++) {
        sym_assign(x, lpk_f16_to_f32(bd), sc, lo, hi, q);
        double A = 0, P = 0;
        for (int i = 0; i < 256; i++) {
            double u = (double)q[i] * sc[i / 16], wi = w ? w[i] : 1.0;
            A += wi * u * u;
            P += wi * x[i] * u;
        }
        if (!(A > 0) || !isfinite(P / A) || P / A == 0) break;
        uint16_t h = qi_f16_sat((float)(P / A));
        if (h == bd) break;
        float e = sym_pick(ops, x, w, s, lpk_f16_to_f32(h), lo, hi, tsc);
        if (!(e < best)) break;
        best = e;
        bd = h;
        memcpy(sc, tsc, sizeof tsc);
    }
    *pd = bd;
}

/* ---------------------------------------------------------------- q5_k */
static const k2_asym shape_q5k = {8, 32, 63, 31.0f};
static const k2_asym shape_q2k = {16, 16, 15, 3.0f};

static void block_q5_k(const qi_ops *ops, const float *x, const float *w, block_q5_K *b)
{
    int sc[8], m[8];
    uint8_t q[256];
    asym_search(ops, &shape_q5k, x, w, &b->d, &b->dmin, sc, m, q);
    quant_q4k_pack_scales(sc, m, b->scales);
    memset(b->qh, 0, sizeof b->qh);
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
            b->qs[32 * c + l] = (uint8_t)((lo & 15) | ((hi & 15) << 4));
            b->qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
        }
    }
}

void quant_deq_q5_k(const void *src, float *y, int64_t n)
{
    const block_q5_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = lpk_f16_to_f32(b[i].d), dmin = lpk_f16_to_f32(b[i].dmin);
        for (int c = 0; c < 4; c++) {
            int sc, m;
            quant_q4k_scale_min(b[i].scales, 2 * c, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            quant_q4k_scale_min(b[i].scales, 2 * c + 1, &sc, &m);
            float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)quant_q5k_q(&b[i], 64 * c + l) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)quant_q5k_q(&b[i], 64 * c + 32 + l) - m2;
        }
    }
}

/* ---------------------------------------------------------------- q2_k */
/* Element e of a super-block: 2 bits at qs[32 * (e / 128) + e % 32], shift
 * 2 * ((e % 128) / 32); sub-block e / 16. */
static void block_q2_k(const qi_ops *ops, const float *x, const float *w, block_q2_K *b)
{
    int sc[16], m[16];
    uint8_t q[256];
    asym_search(ops, &shape_q2k, x, w, &b->d, &b->dmin, sc, m, q);
    for (int j = 0; j < 16; j++) b->scales[j] = (uint8_t)(sc[j] | (m[j] << 4));
    memset(b->qs, 0, sizeof b->qs);
    for (int e = 0; e < 256; e++)
        b->qs[32 * (e / 128) + e % 32] |= (uint8_t)(q[e] << (2 * ((e % 128) / 32)));
}

void quant_deq_q2_k(const void *src, float *y, int64_t n)
{
    const block_q2_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = lpk_f16_to_f32(b[i].d), dmin = lpk_f16_to_f32(b[i].dmin);
        for (int j = 0; j < 16; j++) {
            uint8_t sc = b[i].scales[j];
            float dl = d * (float)(sc & 15), ml = dmin * (float)(sc >> 4);
            for (int e = 16 * j; e < 16 * j + 16; e++) *y++ = dl * (float)quant_q2k_q(b[i].qs, e) - ml;
        }
    }
}

/* ---------------------------------------------------------------- q3_k */
/* Levels -4..3 stored as u = q + 4: low 2 bits like q2_k, the high bit in
 * hmask[e % 32] bit e / 32. Scales sc + 32 (6 bits): low nibble in byte j (j < 8)
 * or the high nibble of byte j - 8, the top 2 bits in byte 8 + j % 4 at bit
 * 2 * (j / 4). */
void quant_q3k_finish(const float *x, uint16_t d, const int sc[16], block_q3_K *b)
{
    int8_t q[256];
    sym_assign(x, lpk_f16_to_f32(d), sc, -4.0f, 3.0f, q);
    b->d = d;
    quant_q3k_pack_scales(sc, b->scales);
    memset(b->qs, 0, sizeof b->qs);
    memset(b->hmask, 0, sizeof b->hmask);
    for (int e = 0; e < 256; e++) {
        int u = q[e] + 4;
        b->qs[32 * (e / 128) + e % 32] |= (uint8_t)((u & 3) << (2 * ((e % 128) / 32)));
        b->hmask[e % 32] |= (uint8_t)((u >> 2) << (e / 32));
    }
}

static void block_q3_k(const qi_ops *ops, const float *x, const float *w, block_q3_K *b)
{
    int sc[16];
    int8_t q[256];
    uint16_t d;
    sym_search(ops, x, w, -4.0f, 3.0f, &d, sc, q);
    quant_q3k_finish(x, d, sc, b);
}

/* quant_q3k_q's values element by element, decoded in runs of 32 (element
 * 128 h + 32 s + l: bits 2s of qs[32 h + l], bit 4h + s of hmask[l]) that the
 * compiler can vectorize. */
void quant_deq_q3_k(const void *src, float *y, int64_t n)
{
    const block_q3_K *b = src;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        float d_all = lpk_f16_to_f32(b[i].d);
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int l = 0; l < 32; l++)
                    q[128 * h + 32 * s + l] =
                        (int8_t)(((b[i].qs[32 * h + l] >> (2 * s)) & 3) -
                                 (((b[i].hmask[l] >> (4 * h + s)) & 1) ^ 1) * 4);
        for (int j = 0; j < 16; j++) {
            float dl = d_all * (float)quant_q3k_scale(b[i].scales, j);
            for (int e = 16 * j; e < 16 * j + 16; e++) y[e] = dl * (float)q[e];
        }
    }
}

/* ---------------------------------------------------------------- rows */
#define K2_ROWS(name, fn, btype, ops, type)                                                   \
    void name(const float *x, const float *w, void *dst, int64_t n)                    \
    {                                                                                  \
        btype *b = dst;                                                                \
        float wb[QK_K];                                                                \
        for (int64_t i = 0; i < n / QK_K; i++)                                         \
            fn(ops, x + QK_K * i,                                                      \
               quant_weights_of(type, x + QK_K * i, w ? w + QK_K * i : NULL, QK_K, wb), &b[i]); \
    }

K2_ROWS(quant_ref_q5_k, block_q5_k, block_q5_K, &quant_ops_ref, LPK_TYPE_Q5_K)
K2_ROWS(quant_ref_q3_k, block_q3_k, block_q3_K, &quant_ops_ref, LPK_TYPE_Q3_K)
K2_ROWS(quant_ref_q2_k, block_q2_k, block_q2_K, &quant_ops_ref, LPK_TYPE_Q2_K)
#if defined(__x86_64__)
K2_ROWS(quant_avx2_q5_k, block_q5_k, block_q5_K, quant_avx2_ops(), LPK_TYPE_Q5_K)
K2_ROWS(quant_avx2_q3_k, block_q3_k, block_q3_K, quant_avx2_ops(), LPK_TYPE_Q3_K)
K2_ROWS(quant_avx2_q2_k, block_q2_k, block_q2_K, quant_avx2_ops(), LPK_TYPE_Q2_K)
#endif
