/* Blocks of 32: q4_0, q4_1, q5_0, q5_1, q8_0. Reference quantizers (a scale
 * search that minimises the weighted squared error with the f16 scale actually
 * stored) and GGML's dequantization formulas. See docs/QUANT.md. */
#include "quant_internal.h"

#include <math.h>

/* Denominator offsets tried around the level count: d = -xm / (nlo + g).
 * Positive offsets clip the largest element, negative ones widen the step. */
const float quant_grid_sym[QI_NGRID] = {-1.0f, -0.75f, -0.5f, -0.25f, 0.0f,
                                        0.25f, 0.5f,   0.75f, 1.0f};
const float quant_grid_asym[QI_NGRID] = {-1.0f, -0.75f, -0.5f, -0.25f, 0.0f,
                                         0.25f, 0.5f,   0.75f, 1.0f};

/* ---------------------------------------------------------------- kernels */
/* The inner loops over one block of 32, in the lane order the AVX2 versions use
 * (lane i % 8, elements in index order, reduced by qi_hsum8). */
static float sym_err_ref(const float *x, const float *w, int n, float d, float lo, float hi)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    float acc[8] = {0};
    for (int i = 0; i < n; i++) {
        float q = qi_round(qi_clamp(x[i] * id, lo, hi));
        float e = x[i] - q * d;
        acc[i & 7] += w ? w[i] * e * e : e * e;
    }
    return qi_hsum8(acc);
}

static void sym_sums_ref(const float *x, const float *w, int n, float d, float lo, float hi,
                         float *sxq, float *sqq)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    float a[8] = {0}, b[8] = {0};
    for (int i = 0; i < n; i++) {
        float q = qi_round(qi_clamp(x[i] * id, lo, hi));
        float wq = w ? w[i] * q : q;
        a[i & 7] += wq * x[i];
        b[i & 7] += wq * q;
    }
    *sxq = qi_hsum8(a);
    *sqq = qi_hsum8(b);
}

static float asym_err_ref(const float *x, const float *w, int n, float d, float m, float hi)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    float acc[8] = {0};
    for (int i = 0; i < n; i++) {
        float q = qi_round(qi_clamp((x[i] - m) * id, 0.0f, hi));
        float e = x[i] - (q * d + m);
        acc[i & 7] += w ? w[i] * e * e : e * e;
    }
    return qi_hsum8(acc);
}

/* s[0..2] = sum w*q, sum w*q*q, sum w*x*q */
static void asym_sums_ref(const float *x, const float *w, int n, float d, float m, float hi,
                          float s[3])
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    float a[8] = {0}, b[8] = {0}, c[8] = {0};
    for (int i = 0; i < n; i++) {
        float q = qi_round(qi_clamp((x[i] - m) * id, 0.0f, hi));
        float wq = w ? w[i] * q : q;
        a[i & 7] += wq;
        b[i & 7] += wq * q;
        c[i & 7] += wq * x[i];
    }
    s[0] = qi_hsum8(a);
    s[1] = qi_hsum8(b);
    s[2] = qi_hsum8(c);
}

static void sym_err_n_ref(const float *x, const float *w, int n, const float *d, int nd,
                          float lo, float hi, float *e)
{
    for (int k = 0; k < nd; k++) e[k] = sym_err_ref(x, w, n, d[k], lo, hi);
}

static float amax32_ref(const float *x, int *neg)
{
    float amax = 0.0f;
    for (int i = 0; i < 32; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    int ng = 0;
    for (int i = 0; i < 32; i++) ng |= x[i] == -amax;
    *neg = ng;
    return amax;
}

static void sym_assign_ref(const float *x, float d, int nlo, int nhi, int q[32])
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; i++)
        q[i] = (int)qi_round(qi_clamp(x[i] * id, (float)-nlo, (float)nhi));
}

static float h2f_ref(uint16_t h) { return lpk_f16_to_f32(h); }

const qi_ops quant_ops_ref = {sym_err_ref,   sym_sums_ref, asym_err_ref,   asym_sums_ref,
                              sym_err_n_ref, amax32_ref,   sym_assign_ref, qi_f16_sat,
                              h2f_ref};

/* ---------------------------------------------------------------- searches */
/* Best f16 scale for x ~ d * q, q in [-nlo, nhi]: a grid of candidate scales,
 * then a least-squares refit, every candidate scored with the stored
 * (f16-rounded) scale. Returns the f16 bits. */
uint16_t quant_search_sym(const qi_ops *ops, const float *x, const float *w, int nlo, int nhi)
{
    int neg;
    float amax = ops->amax32(x, &neg);
    if (amax == 0.0f)
        return 0;
    /* the extreme element goes to the side with the extra level (-nlo) */
    float xm = neg ? -amax : amax;
    float lo = (float)-nlo, hi = (float)nhi;

    uint16_t hs[QI_NGRID];
    float ds[QI_NGRID], es[QI_NGRID];
    for (int k = 0; k < QI_NGRID; k++) {
        hs[k] = ops->f2h(-xm / ((float)nlo + quant_grid_sym[k]));
        ds[k] = ops->h2f(hs[k]);
    }
    ops->sym_err_n(x, w, 32, ds, QI_NGRID, lo, hi, es);
    uint16_t best = 0;
    float best_err = INFINITY;
    for (int k = 0; k < QI_NGRID; k++) {
        /* k == 0: errors overflow to inf near FLT_MAX; keep a real scale */
        if (k == 0 || es[k] < best_err) { best_err = es[k]; best = hs[k]; }
    }
    /* one least-squares refit of the best assignment (more refits, or walking
     * through neighbouring f16 values, gain < 0.1% on real weights) */
    float sxq, sqq;
    ops->sym_sums(x, w, 32, ops->h2f(best), lo, hi, &sxq, &sqq);
    float d = sqq > 0.0f ? sxq / sqq : 0.0f;
    if (isfinite(d) && d != 0.0f) {
        uint16_t h = ops->f2h(d);
        if (h != best && ops->sym_err(x, w, 32, ops->h2f(h), lo, hi) < best_err)
            best = h;
    }
    return best;
}

/* Joint least-squares (d, m) for the assignment that (dh, mh) implies, as f16
 * bits. Returns 0 when the system is singular or the result is unusable. */
static int asym_refit(const qi_ops *ops, const float *x, const float *w, float hi, float sw,
                      float swx, uint16_t dh, uint16_t mh, uint16_t *nd, uint16_t *nm)
{
    float s[3];
    ops->asym_sums(x, w, 32, lpk_f16_to_f32(dh), lpk_f16_to_f32(mh), hi, s);
    float det = sw * s[1] - s[0] * s[0];
    if (!(det > 0.0f)) return 0;
    float d = (sw * s[2] - s[0] * swx) / det;
    float m = (s[1] * swx - s[0] * s[2]) / det;
    if (!isfinite(d) || !isfinite(m) || d <= 0.0f) return 0;
    *nd = qi_f16_sat(d);
    *nm = qi_f16_sat(m);
    return 1;
}

/* Best f16 (d, m) for x ~ d * q + m, q in [0, nmax]: a grid over the step with
 * m = min, each point refitted by joint least squares, two further refits from
 * the best; scored with the stored f16 values. */
void quant_search_asym(const qi_ops *ops, const float *x, const float *w, int nmax,
                       uint16_t *dh, uint16_t *mh)
{
    float mn = x[0], mx = x[0];
    for (int i = 1; i < 32; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    float hi = (float)nmax;
    uint16_t bd = 0, bm = qi_f16_sat(mn);
    float best_err = ops->asym_err(x, w, 32, 0.0f, lpk_f16_to_f32(bm), hi);
    if (!(mx > mn)) {
        *dh = bd;
        *mh = bm;
        return;
    }
    float sw = 0.0f, swx = 0.0f;
    {
        float a[8] = {0}, b[8] = {0};
        for (int i = 0; i < 32; i++) {
            float wi = w ? w[i] : 1.0f;
            a[i & 7] += wi;
            b[i & 7] += wi * x[i];
        }
        sw = qi_hsum8(a);
        swx = qi_hsum8(b);
    }
    float range = mx - mn;
    uint16_t m0 = bm;
    for (int k = 0; k < QI_NGRID; k++) {
        uint16_t h = qi_f16_sat(range / (hi + quant_grid_asym[k])), nd, nm;
        float e = ops->asym_err(x, w, 32, lpk_f16_to_f32(h), lpk_f16_to_f32(m0), hi);
        if ((k == 0 && isinf(best_err)) || e < best_err) { best_err = e; bd = h; bm = m0; }
        if (asym_refit(ops, x, w, hi, sw, swx, h, m0, &nd, &nm)) {
            e = ops->asym_err(x, w, 32, lpk_f16_to_f32(nd), lpk_f16_to_f32(nm), hi);
            if (e < best_err) { best_err = e; bd = nd; bm = nm; }
        }
    }
    for (int it = 0; it < 2 && bd != 0; it++) {
        uint16_t hd, hm;
        if (!asym_refit(ops, x, w, hi, sw, swx, bd, bm, &hd, &hm)) break;
        if (hd == bd && hm == bm) break;
        float e = ops->asym_err(x, w, 32, lpk_f16_to_f32(hd), lpk_f16_to_f32(hm), hi);
        if (!(e < best_err)) break;
        best_err = e;
        bd = hd;
        bm = hm;
    }
    *dh = bd;
    *mh = bm;
}

/* ---------------------------------------------------------------- packing */
static void asym_assign(const float *x, float d, float m, int nmax, int q[32])
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; i++)
        q[i] = (int)qi_round(qi_clamp((x[i] - m) * id, 0.0f, (float)nmax));
}

void quant_pack_nibbles(const int u[32], uint8_t qs[16])
{
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((u[j] & 15) | ((u[j + 16] & 15) << 4));
}

void quant_pack_qh(const int u[32], uint8_t qh[4])
{
    uint32_t h = 0;
    for (int j = 0; j < 32; j++) h |= (uint32_t)((u[j] >> 4) & 1) << j;
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(h >> (8 * k));
}

void quant_block_q4_0(const qi_ops *ops, const float *x, const float *w, block_q4_0 *b)
{
    uint16_t h = quant_search_sym(ops, x, w, 8, 7);
    int q[32];
    ops->sym_assign32(x, ops->h2f(h), 8, 7, q);
    for (int i = 0; i < 32; i++) q[i] += 8;
    b->d = h;
    quant_pack_nibbles(q, b->qs);
}

void quant_block_q5_0(const qi_ops *ops, const float *x, const float *w, block_q5_0 *b)
{
    uint16_t h = quant_search_sym(ops, x, w, 16, 15);
    int q[32];
    ops->sym_assign32(x, ops->h2f(h), 16, 15, q);
    for (int i = 0; i < 32; i++) q[i] += 16;
    b->d = h;
    quant_pack_qh(q, b->qh);
    quant_pack_nibbles(q, b->qs);
}

/* q8_0 without importance weights: the error is almost all rounding noise, so a
 * search buys little (docs/QUANT.md); the scale maps the extreme element to
 * -128 (one more level than GGML's max/127), or to +-127 when both signs reach
 * it, rounded to f16 before the values are rounded with it. */
uint16_t quant_q8_0_scale(const float *x)
{
    float amax = 0.0f;
    for (int i = 0; i < 32; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    int neg = 0, pos = 0;
    for (int i = 0; i < 32; i++) {
        neg |= x[i] == -amax;
        pos |= x[i] == amax;
    }
    return quant_q8_0_scale_of(amax, neg, pos);
}

void quant_block_q8_0(const qi_ops *ops, const float *x, const float *w, block_q8_0 *b)
{
    uint16_t h = w ? quant_search_sym(ops, x, w, 128, 127) : quant_q8_0_scale(x);
    int q[32];
    ops->sym_assign32(x, ops->h2f(h), 128, 127, q);
    b->d = h;
    for (int i = 0; i < 32; i++) b->qs[i] = (int8_t)q[i];
}

void quant_block_q4_1(const qi_ops *ops, const float *x, const float *w, block_q4_1 *b)
{
    uint16_t dh, mh;
    quant_search_asym(ops, x, w, 15, &dh, &mh);
    int q[32];
    asym_assign(x, lpk_f16_to_f32(dh), lpk_f16_to_f32(mh), 15, q);
    b->d = dh;
    b->m = mh;
    quant_pack_nibbles(q, b->qs);
}

void quant_block_q5_1(const qi_ops *ops, const float *x, const float *w, block_q5_1 *b)
{
    uint16_t dh, mh;
    quant_search_asym(ops, x, w, 31, &dh, &mh);
    int q[32];
    asym_assign(x, lpk_f16_to_f32(dh), lpk_f16_to_f32(mh), 31, q);
    b->d = dh;
    b->m = mh;
    quant_pack_qh(q, b->qh);
    quant_pack_nibbles(q, b->qs);
}

/* ---------------------------------------------------------------- rows */
void quant_ref_q4_0(const float *x, const float *w, void *dst, int64_t n)
{
    block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q4_0(&quant_ops_ref, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

void quant_ref_q5_0(const float *x, const float *w, void *dst, int64_t n)
{
    block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q5_0(&quant_ops_ref, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

void quant_ref_q8_0(const float *x, const float *w, void *dst, int64_t n)
{
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q8_0(&quant_ops_ref, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

void quant_ref_q4_1(const float *x, const float *w, void *dst, int64_t n)
{
    block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q4_1(&quant_ops_ref, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

void quant_ref_q5_1(const float *x, const float *w, void *dst, int64_t n)
{
    block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_q5_1(&quant_ops_ref, x + 32 * i, w ? w + 32 * i : NULL, &b[i]);
}

/* ---------------------------------------------------------------- dequantize */
/* GGML's formulas: q4_0 (q - 8) * d, q4_1 q * d + m, q5_0 (q - 16) * d,
 * q5_1 q * d + m, q8_0 q * d; element j in the low nibble, j + 16 in the high. */
void quant_deq_q4_0(const void *src, float *y, int64_t n)
{
    const block_q4_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        float d = lpk_f16_to_f32(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b[i].qs[j] & 15) - 8) * d;
            y[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void quant_deq_q4_1(const void *src, float *y, int64_t n)
{
    const block_q4_1 *b = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        float d = lpk_f16_to_f32(b[i].d), m = lpk_f16_to_f32(b[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b[i].qs[j] & 15) * d + m;
            y[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

void quant_deq_q5_0(const void *src, float *y, int64_t n)
{
    const block_q5_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        float d = lpk_f16_to_f32(b[i].d);
        uint32_t qh = lpk_rd32(b[i].qh);
        for (int j = 0; j < 16; j++) {
            int lo = quant_q5_q(b[i].qs, qh, j), hi = quant_q5_q(b[i].qs, qh, j + 16);
            y[j] = (float)(lo - 16) * d;
            y[j + 16] = (float)(hi - 16) * d;
        }
    }
}

void quant_deq_q5_1(const void *src, float *y, int64_t n)
{
    const block_q5_1 *b = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        float d = lpk_f16_to_f32(b[i].d), m = lpk_f16_to_f32(b[i].m);
        uint32_t qh = lpk_rd32(b[i].qh);
        for (int j = 0; j < 16; j++) {
            int lo = quant_q5_q(b[i].qs, qh, j), hi = quant_q5_q(b[i].qs, qh, j + 16);
            y[j] = (float)lo * d + m;
            y[j + 16] = (float)hi * d + m;
        }
    }
}

void quant_deq_q8_0(const void *src, float *y, int64_t n)
{
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        float d = lpk_f16_to_f32(b[i].d);
        for (int j = 0; j < 32; j++) y[j] = (float)b[i].qs[j] * d;
    }
}

/* ---------------------------------------------------------------- one value */
static void set_nibble(uint8_t *qs, int i, int u)
{
    /* elements j and j + 16 share byte j (low, high nibble) */
    int j = i & 15, sh = i & 16 ? 4 : 0;
    qs[j] = (uint8_t)((qs[j] & ~(15 << sh)) | ((u & 15) << sh));
}

static void set_qh_bit(uint8_t qh[4], int i, int u)
{
    uint8_t bit = (uint8_t)(1u << (i & 7));
    qh[i >> 3] = (uint8_t)(((u >> 4) & 1) ? (qh[i >> 3] | bit) : (qh[i >> 3] & ~bit));
}

static void set_bits(uint8_t *p, int sh, int width, int u)
{
    int mask = ((1 << width) - 1) << sh;
    *p = (uint8_t)((*p & ~mask) | ((u << sh) & mask));
}

/* Stores level q as element i (in the block's value order) of a block of type:
 * the signed level where the type's getters in quant.h give one (q4_0, q5_0,
 * q8_0, q6_k, q3_k), else the stored one; the other bits are kept. */
void quant_elem_set(int type, void *blk, int i, int q)
{
    switch (type) {
    case LPK_TYPE_Q4_0: set_nibble(((block_q4_0 *)blk)->qs, i, q + 8); break;
    case LPK_TYPE_Q4_1: set_nibble(((block_q4_1 *)blk)->qs, i, q); break;
    case LPK_TYPE_IQ4_NL: set_nibble(((block_iq4_nl *)blk)->qs, i, q); break;
    case LPK_TYPE_IQ4_XS: set_nibble(((block_iq4_xs *)blk)->qs + 16 * (i / 32), i % 32, q); break;
    case LPK_TYPE_Q5_0: {
        block_q5_0 *b = blk;
        set_nibble(b->qs, i, q + 16);
        set_qh_bit(b->qh, i, q + 16);
        break;
    }
    case LPK_TYPE_Q5_1: {
        block_q5_1 *b = blk;
        set_nibble(b->qs, i, q);
        set_qh_bit(b->qh, i, q);
        break;
    }
    case LPK_TYPE_Q8_0: ((block_q8_0 *)blk)->qs[i] = (int8_t)q; break;
    case LPK_TYPE_Q4_K: case LPK_TYPE_Q5_K: {
        /* 64 elements per 32 bytes: the first 32 in low nibbles, the next in high;
         * q5_k's 5th bit of element 64c + l (+ 32) in qh[l] bit 2c (2c + 1) */
        uint8_t *qs = type == LPK_TYPE_Q4_K ? ((block_q4_K *)blk)->qs : ((block_q5_K *)blk)->qs;
        set_bits(&qs[32 * (i / 64) + (i & 31)], i & 32 ? 4 : 0, 4, q);
        if (type == LPK_TYPE_Q5_K)
            set_bits(&((block_q5_K *)blk)->qh[i & 31], 2 * (i / 64) + (i & 32 ? 1 : 0), 1, q >> 4);
        break;
    }
    case LPK_TYPE_Q6_K: {
        /* per 128: quarters t = 0..3 of 32; ql low nibbles hold t 0/1, high t 2/3;
         * qh bits 2t..2t+1 hold the top two bits */
        block_q6_K *b = blk;
        int u = q + 32, c = i / 128, r = i % 128, t = r / 32, l = r % 32;
        set_bits(&b->ql[64 * c + l + (t & 1 ? 32 : 0)], t & 2 ? 4 : 0, 4, u);
        set_bits(&b->qh[32 * c + l], 2 * t, 2, u >> 4);
        break;
    }
    case LPK_TYPE_Q2_K:
        /* 2 bits at qs[32 * (i / 128) + i % 32], shift 2 * ((i % 128) / 32) */
        set_bits(&((block_q2_K *)blk)->qs[32 * (i / 128) + i % 32], 2 * ((i % 128) / 32), 2, q);
        break;
    case LPK_TYPE_Q3_K: {
        /* u = q + 4: low 2 bits as q2_k's, the high bit in hmask[i % 32] bit i / 32 */
        block_q3_K *b = blk;
        int u = q + 4;
        set_bits(&b->qs[32 * (i / 128) + i % 32], 2 * ((i % 128) / 32), 2, u);
        set_bits(&b->hmask[i % 32], i / 32, 1, u >> 2);
        break;
    }
    default: break;
    }
}
