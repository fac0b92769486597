/* The non-linear 4-bit types over GGML's 16-level table: iq4_nl (blocks of 32,
 * one f16 scale) and iq4_xs (super-blocks of 256, 6-bit sub-block scales).
 * Reference quantizers and GGML's dequantization formulas.
 *
 * Each value goes to the level nearest x / d. A scale is searched from a grid
 * that maps the largest |x| to either end of the (asymmetric) table, each grid
 * point refitted by least squares for its assignment; every candidate is
 * scored with the values dequantization produces. See docs/QUANT.md. */
#include "quant_internal.h"

#include <math.h>

const int8_t quant_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                       1,    13,   25,  38,  53,  69,  89,  113};

/* midpoints between neighbouring levels */
static const float nl_mid[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                                 7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};

/* Index of the level nearest v (ties to the upper level): the number of
 * midpoints <= v, counted without branches (a binary search mispredicts on
 * every level; NaN compares false and gives 0). */
int quant_iq4nl_index(float v)
{
    int i = 0;
    for (int k = 0; k < 15; k++) i += v >= nl_mid[k];
    return i;
}

/* The two loops every search here runs over a block of 32 (x[32], w[32] or
 * NULL): the weighted squared error with step d (0: every value is 0), and the
 * least-squares step for the assignment d implies (0 when none). Sums in 8
 * lanes (lane i % 8, in index order) reduced by qi_hsum8, so the AVX2 versions
 * give the same bits. */
typedef struct nl_ops {
    float (*err)(const float *x, const float *w, float d);
    float (*refit)(const float *x, const float *w, float d);
} nl_ops;

static float nl_err_ref(const float *x, const float *w, float d)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f, acc[8] = {0};
    for (int i = 0; i < 32; i++) {
        float e = x[i] - d * (float)quant_iq4nl_values[quant_iq4nl_index(x[i] * id)];
        acc[i & 7] += w ? w[i] * e * e : e * e;
    }
    return qi_hsum8(acc);
}

static float nl_refit_ref(const float *x, const float *w, float d)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f, a[8] = {0}, b[8] = {0};
    for (int i = 0; i < 32; i++) {
        float k = (float)quant_iq4nl_values[quant_iq4nl_index(x[i] * id)];
        float wk = w ? w[i] * k : k;
        a[i & 7] += wk * x[i];
        b[i & 7] += wk * k;
    }
    float sxk = qi_hsum8(a), skk = qi_hsum8(b);
    float s = skk > 0.0f ? sxk / skk : 0.0f;
    return isfinite(s) ? s : 0.0f;
}

static const nl_ops nl_ops_ref = {nl_err_ref, nl_refit_ref};

#if defined(__x86_64__)
#include <immintrin.h>

static const float nl_values_f[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                      1,    13,   25,  38,  53,  69,  89,  113};

/* The levels of 8 values v: the count of midpoints <= v, as the scalar index. */
static inline LPK_TARGET("avx2") __m256 nl_level8(__m256 v)
{
    __m256i i = _mm256_setzero_si256();
    for (int k = 0; k < 15; k++)
        i = _mm256_sub_epi32(i, _mm256_castps_si256(
                                    _mm256_cmp_ps(v, _mm256_set1_ps(nl_mid[k]), _CMP_GE_OQ)));
    return _mm256_i32gather_ps(nl_values_f, i, 4);
}

static LPK_TARGET("avx2") float nl_err_avx2(const float *x, const float *w, float d)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f, acc[8];
    __m256 vd = _mm256_set1_ps(d), vid = _mm256_set1_ps(id), s = _mm256_setzero_ps();
    for (int c = 0; c < 4; c++) {
        __m256 xv = _mm256_loadu_ps(x + 8 * c);
        __m256 k = nl_level8(_mm256_mul_ps(xv, vid));
        __m256 e = _mm256_sub_ps(xv, _mm256_mul_ps(vd, k));
        __m256 e2 = w ? _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(w + 8 * c), e), e)
                      : _mm256_mul_ps(e, e);
        s = _mm256_add_ps(s, e2);
    }
    _mm256_storeu_ps(acc, s);
    return qi_hsum8(acc);
}

static LPK_TARGET("avx2") float nl_refit_avx2(const float *x, const float *w, float d)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f, a[8], b[8];
    __m256 vid = _mm256_set1_ps(id), sa = _mm256_setzero_ps(), sb = _mm256_setzero_ps();
    for (int c = 0; c < 4; c++) {
        __m256 xv = _mm256_loadu_ps(x + 8 * c);
        __m256 k = nl_level8(_mm256_mul_ps(xv, vid));
        __m256 wk = w ? _mm256_mul_ps(_mm256_loadu_ps(w + 8 * c), k) : k;
        sa = _mm256_add_ps(sa, _mm256_mul_ps(wk, xv));
        sb = _mm256_add_ps(sb, _mm256_mul_ps(wk, k));
    }
    _mm256_storeu_ps(a, sa);
    _mm256_storeu_ps(b, sb);
    float sxk = qi_hsum8(a), skk = qi_hsum8(b);
    float r = skk > 0.0f ? sxk / skk : 0.0f;
    return isfinite(r) ? r : 0.0f;
}

static const nl_ops nl_ops_avx2 = {nl_err_avx2, nl_refit_avx2};
#endif

/* Best step for x[n] (n = 32). f16: candidates are rounded to f16 before they
 * are scored (iq4_nl stores d itself); else they stay float (iq4_xs scales a
 * sub-block by an integer multiple, chosen later). */
static float nl_fit(const nl_ops *ops, const float *x, const float *w, int n, int f16)
{
    float xm = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > fabsf(xm)) xm = x[i];
    if (xm == 0.0f) return 0.0f;
    float best = 0.0f, best_err = INFINITY;
    for (int end = 0; end < 2; end++) {
        float e0 = end ? 113.0f : -127.0f;
        for (int t = -4; t <= 4; t++) {
            float d = xm / (e0 + (end ? -2.0f : 2.0f) * (float)t);
            for (int r = 0; r < 2; r++) {
                if (r) d = ops->refit(x, w, d);
                if (f16) d = lpk_f16_to_f32(qi_f16_sat(d));
                if (!isfinite(d) || d == 0.0f) continue;
                float e = ops->err(x, w, d);
                if (e < best_err) { best_err = e; best = d; }
            }
        }
    }
    return best;
}

static void nl_pack(const float *x, float d, uint8_t qs[16])
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(quant_iq4nl_index(x[j] * id) | quant_iq4nl_index(x[j + 16] * id) << 4);
}

/* ---------------------------------------------------------------- iq4_nl */
static void quant_block_iq4_nl(const nl_ops *ops, const float *x, const float *w, block_iq4_nl *b)
{
    float d = nl_fit(ops, x, w, 32, 1);
    /* a refit of the chosen f16 step, kept when it scores lower */
    for (int it = 0; it < 2 && d != 0.0f; it++) {
        float r = lpk_f16_to_f32(qi_f16_sat(ops->refit(x, w, d)));
        if (r == d || r == 0.0f || !(ops->err(x, w, r) < ops->err(x, w, d))) break;
        d = r;
    }
    b->d = qi_f16_sat(d);
    nl_pack(x, d, b->qs);
}

static void rows_iq4_nl(const nl_ops *ops, const float *x, const float *w, void *dst, int64_t n)
{
    block_iq4_nl *b = dst;
    float wb[32];
    for (int64_t i = 0; i < n / 32; i++)
        quant_block_iq4_nl(ops, x + 32 * i,
                           quant_weights_of(LPK_TYPE_IQ4_NL, x + 32 * i, w ? w + 32 * i : NULL, 32, wb), &b[i]);
}

void quant_ref_iq4_nl(const float *x, const float *w, void *dst, int64_t n)
{
    rows_iq4_nl(&nl_ops_ref, x, w, dst, n);
}

void quant_deq_iq4_nl(const void *src, float *y, int64_t n)
{
    const block_iq4_nl *b = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        float d = lpk_f16_to_f32(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)quant_iq4nl_values[b[i].qs[j] & 15];
            y[j + 16] = d * (float)quant_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

/* ---------------------------------------------------------------- iq4_xs */
/* For a fixed f16 d, the best integer scale in -32..31 per sub-block among the
 * 5 around the ideal; returns the total error. */
static float xs_pick(const nl_ops *ops, const float *x, const float *w, const float s[8], float d, int ls[8])
{
    float total = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j, *wj = w ? w + 32 * j : NULL;
        int s0 = d != 0.0f ? (int)qi_round(qi_clamp(s[j] / d, -32.0f, 31.0f)) : 0;
        float be = INFINITY;
        int bs = s0;
        for (int a = s0 - 2; a <= s0 + 2; a++) {
            if (a < -32 || a > 31) continue;
            float e = ops->err(xj, wj, d * (float)a);
            if (e < be) { be = e; bs = a; }
        }
        ls[j] = bs;
        total += be;
    }
    return total;
}

static void quant_block_iq4_xs(const nl_ops *ops, const float *x, const float *w, block_iq4_xs *b)
{
    float s[8], smx = 0.0f;
    for (int j = 0; j < 8; j++) {
        s[j] = nl_fit(ops, x + 32 * j, w ? w + 32 * j : NULL, 32, 0);
        if (fabsf(s[j]) > fabsf(smx)) smx = s[j];
    }
    int ls[8], tls[8];
    uint16_t bd = qi_f16_sat(smx / -32.0f);
    float best = xs_pick(ops, x, w, s, lpk_f16_to_f32(bd), ls);
    {
        uint16_t h = qi_f16_sat(smx / 31.0f);
        float e = xs_pick(ops, x, w, s, lpk_f16_to_f32(h), tls);
        if (e < best) { best = e; bd = h; memcpy(ls, tls, sizeof ls); }
    }
    for (int it = 0; it < 2 && (bd & 0x7fff); it++) {
        /* least-squares d for the current integers and assignment */
        float d = lpk_f16_to_f32(bd);
        double A = 0, P = 0;
        for (int j = 0; j < 8; j++) {
            float dl = d * (float)ls[j], id = dl != 0.0f ? 1.0f / dl : 0.0f;
            for (int i = 32 * j; i < 32 * j + 32; i++) {
                double u = (double)quant_iq4nl_values[quant_iq4nl_index(x[i] * id)] * ls[j];
                double wi = w ? w[i] : 1.0;
                A += wi * u * u;
                P += wi * x[i] * u;
            }
        }
        if (!(A > 0) || !isfinite(P / A) || P / A == 0) break;
        uint16_t h = qi_f16_sat((float)(P / A));
        if (h == bd) break;
        float e = xs_pick(ops, x, w, s, lpk_f16_to_f32(h), tls);
        if (!(e < best)) break;
        best = e;
        bd = h;
        memcpy(ls, tls, sizeof ls);
    }
    b->d = bd;
    b->scales_h = 0;
    memset(b->scales_l, 0, sizeof b->scales_l);
    float d = lpk_f16_to_f32(bd);
    for (int j = 0; j < 8; j++) {
        int u = ls[j] + 32;
        b->scales_l[j / 2] |= (uint8_t)((u & 15) << (4 * (j % 2)));
        b->scales_h |= (uint16_t)((u >> 4) << (2 * j));
        nl_pack(x + 32 * j, d * (float)ls[j], b->qs + 16 * j);
    }
}

static void rows_iq4_xs(const nl_ops *ops, const float *x, const float *w, void *dst, int64_t n)
{
    block_iq4_xs *b = dst;
    float wb[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++)
        quant_block_iq4_xs(ops, x + QK_K * i,
                           quant_weights_of(LPK_TYPE_IQ4_XS, x + QK_K * i, w ? w + QK_K * i : NULL, QK_K, wb), &b[i]);
}

void quant_ref_iq4_xs(const float *x, const float *w, void *dst, int64_t n)
{
    rows_iq4_xs(&nl_ops_ref, x, w, dst, n);
}

#if defined(__x86_64__)
void quant_avx2_iq4_nl(const float *x, const float *w, void *dst, int64_t n)
{
    rows_iq4_nl(&nl_ops_avx2, x, w, dst, n);
}

void quant_avx2_iq4_xs(const float *x, const float *w, void *dst, int64_t n)
{
    rows_iq4_xs(&nl_ops_avx2, x, w, dst, n);
}
#endif

void quant_deq_iq4_xs(const void *src, float *y, int64_t n)
{
    const block_iq4_xs *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = lpk_f16_to_f32(b[i].d);
        const uint8_t *qs = b[i].qs;
        for (int j = 0; j < 8; j++, y += 32, qs += 16) {
            float dl = d * (float)quant_iq4xs_scale(&b[i], j);
            for (int l = 0; l < 16; l++) {
                y[l] = dl * (float)quant_iq4nl_values[qs[l] & 15];
                y[l + 16] = dl * (float)quant_iq4nl_values[qs[l] >> 4];
            }
        }
    }
}
