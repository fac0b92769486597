/* The 32-block types scored with the input covariance: a row's output error
 * for a weight error e is e^T C e, C the covariance of the layer input; each
 * block b of 32 columns is searched against C_b, the 32x32 diagonal block of C
 * over its columns (docs/QUANT.md, "q4_0 scored with the input covariance").
 *
 * A block's search: the candidate scales of the diagonal search (quant_ref.c's
 * grid), each with its values rounded to nearest, scored by e^T C_b e with the
 * stored f16 scale (and min); up to three least-squares refits of the best
 * assignment under C_b; then greedy moves of single values by one level while
 * e^T C_b e drops. One scalar code path, in double in a fixed order: the bytes
 * do not depend on the SIMD path or the thread count. */
#include "quant_internal.h"

#include <math.h>

enum { COV_REFITS = 3, COV_MOVES = 64 };

/* A block's levels: value i is d * lv[q[i]] + m, q[i] in [0, nl). */
typedef struct {
    const float *lv;
    int nl;
    int asym;   /* a min m is fitted (else m = 0) */
    int table;  /* iq4_nl's levels (rounded by quant_iq4nl_index) */
} cov_levels;

static const float lv_q4_0[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
static const float lv_q5_0[32] = {-16, -15, -14, -13, -12, -11, -10, -9, -8, -7, -6,
                                  -5,  -4,  -3,  -2,  -1,  0,   1,   2,  3,  4,  5,
                                  6,   7,   8,   9,   10,  11,  12,  13, 14, 15};
static const float lv_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};
static const float lv_u[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                               16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                               32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
                               48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};

/* What a block's candidates share: x, C_b, C_b x, C_b 1 and the scalars. */
typedef struct {
    const float *x;
    const double *C;
    double cx[32], s[32]; /* C x, C 1 */
    double xcx, sx, s11;  /* x^T C x, 1^T C x, 1^T C 1 */
} cov_block;

/* One assignment with its scale and min: the levels y = lv[q], C y and the
 * quadratic form's pieces. */
typedef struct {
    int q[32];
    double cy[32];
    double ycy, ycx, ys; /* y^T C y, y^T C x, y^T C 1 */
    float d, m;
    uint16_t dh, mh;
    double e;            /* e^T C e, e = x - d y - m */
} cov_cand;

/* The reference (quant_cov_set_reference): the searches' products and moves
 * as first written, one row or one move at a time. The fast versions below
 * do the same operations in the same order for each sum (C is symmetric, so
 * row i of C read as column i, lane i of an elementwise loop), hence the
 * same bits. */
static int cov_reference;

void quant_cov_set_reference(int mode) { cov_reference = mode; }

/* The tests' trace: each candidate's and polished block's e^T C e, in order. */
static double *trace_buf;
static size_t trace_cap, *trace_n;

void quant_cov_trace(double *buf, size_t cap, size_t *n)
{
    trace_buf = buf;
    trace_cap = cap;
    trace_n = n;
    if (n) *n = 0;
}

static void trace(double e)
{
    if (trace_n && *trace_n < trace_cap) trace_buf[(*trace_n)++] = e;
}

#if defined(__x86_64__)
#include <immintrin.h>

/* The AVX2 forms: 4 lanes of double, each lane's operations (convert, multiply,
 * add, subtract; no FMA) those of the scalar element, so the same bits. */
static int cov_simd(void)
{
    return cov_reference == 0 && (lpk_cpu_features() & LPK_CPU_AVX2);
}

static LPK_TARGET("avx2") void products_avx2(const double *C, const double *v, double *p)
{
    __m256d acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_pd();
    for (int j = 0; j < 32; j++) {
        const double *Cj = C + 32 * j;
        __m256d vj = _mm256_set1_pd(v[j]);
        for (int r = 0; r < 8; r++)
            acc[r] = _mm256_add_pd(acc[r],
                                   _mm256_mul_pd(_mm256_loadu_pd(Cj + 4 * r), vj));
    }
    for (int r = 0; r < 8; r++) _mm256_storeu_pd(p + 4 * r, acc[r]);
}

/* de = a * g + b for both moves of all 32 values; the least de below 0 (0
 * when none): _mm256_min_pd(x, m) is x < m ? x : m, no running minimum is
 * ever NaN, so the lanes' order does not matter. */
static LPK_TARGET("avx2") double gains_avx2(const double a[2][32], const double b[2][32],
                                           const double *g, double de[2][32])
{
    __m256d m0 = _mm256_setzero_pd(), m1 = _mm256_setzero_pd();
    for (int i = 0; i < 32; i += 4) {
        __m256d gv = _mm256_loadu_pd(g + i);
        __m256d d0 = _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(a[0] + i), gv),
                                   _mm256_loadu_pd(b[0] + i));
        __m256d d1 = _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(a[1] + i), gv),
                                   _mm256_loadu_pd(b[1] + i));
        _mm256_storeu_pd(de[0] + i, d0);
        _mm256_storeu_pd(de[1] + i, d1);
        m0 = _mm256_min_pd(d0, m0);
        m1 = _mm256_min_pd(d1, m1);
    }
    m0 = _mm256_min_pd(m1, m0);
    __m128d h = _mm_min_pd(_mm256_extractf128_pd(m0, 1), _mm256_castpd256_pd128(m0));
    h = _mm_min_sd(_mm_unpackhi_pd(h, h), h);
    return _mm_cvtsd_f64(h);
}

/* The first (i, k) in the order (0, 0), (0, 1), (1, 0), ... with
 * de[k][i] == best (there is one). */
static LPK_TARGET("avx2") void first_avx2(const double de[2][32], double best, int *bi, int *bk)
{
    __m256d bv = _mm256_set1_pd(best);
    for (int i = 0;; i += 4) {
        int m0 = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(de[0] + i), bv, _CMP_EQ_OQ));
        int m1 = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(de[1] + i), bv, _CMP_EQ_OQ));
        if (!(m0 | m1)) continue;
        int l0 = m0 ? __builtin_ctz((unsigned)m0) : 4, l1 = m1 ? __builtin_ctz((unsigned)m1) : 4;
        *bi = i + (l0 <= l1 ? l0 : l1);
        *bk = l0 <= l1 ? 0 : 1;
        return;
    }
}

/* g[j] -= t * Ci[j]; cy[j] += dy * Ci[j] (cy: NULL, not kept). */
static LPK_TARGET("avx2") void move_avx2(const double *Ci, double t, double dy, double *g,
                                         double *cy)
{
    __m256d tv = _mm256_set1_pd(t), dv = _mm256_set1_pd(dy);
    for (int j = 0; j < 32; j += 4) {
        __m256d c = _mm256_loadu_pd(Ci + j);
        _mm256_storeu_pd(g + j, _mm256_sub_pd(_mm256_loadu_pd(g + j), _mm256_mul_pd(tv, c)));
        if (cy)
            _mm256_storeu_pd(cy + j, _mm256_add_pd(_mm256_loadu_pd(cy + j), _mm256_mul_pd(dv, c)));
    }
}
#else
static int cov_simd(void) { return 0; }
#endif

/* p[i] = sum_j C[32 i + j] * v[j] and, when s, s[i] = sum_j C[32 i + j],
 * each in double, j = 0..31 in order. */
static void cov_products(const double *C, const double *v, double *p, double *s)
{
    if (cov_reference) {
        for (int i = 0; i < 32; i++) {
            double a = 0, t = 0;
            for (int j = 0; j < 32; j++) {
                a += (double)C[32 * i + j] * v[j];
                t += (double)C[32 * i + j];
            }
            p[i] = a;
            if (s) s[i] = t;
        }
        return;
    }
    /* column j of C is row j (symmetric): lane i adds term j after term j - 1 */
#if defined(__x86_64__)
    if (cov_simd()) {
        products_avx2(C, v, p);
    } else
#endif
    {
        for (int i = 0; i < 32; i++) p[i] = 0;
        for (int j = 0; j < 32; j++) {
            const double *Cj = C + 32 * j;
            double vj = v[j];
            for (int i = 0; i < 32; i++) p[i] += Cj[i] * vj;
        }
    }
    if (!s) return;
    /* C[32 i + j] * 1.0 is C[32 i + j]: the same sums */
    static const double ones[32] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    cov_products(C, ones, s, NULL);
}

static void cov_block_init(cov_block *b, const float *x, const double *C)
{
    b->x = x;
    b->C = C;
    b->xcx = b->sx = b->s11 = 0;
    double xd[32];
    for (int j = 0; j < 32; j++) xd[j] = x[j];
    cov_products(C, xd, b->cx, b->s);
    for (int i = 0; i < 32; i++) {
        b->xcx += (double)x[i] * b->cx[i];
        b->sx += b->cx[i];
        b->s11 += b->s[i];
    }
}

/* c's error under (c->d, c->m) from c->cy: y^T C y, y^T C x, y^T C 1, e^T C e. */
static void cov_score(const cov_block *b, const cov_levels *L, cov_cand *c)
{
    c->ycy = c->ycx = c->ys = 0;
    for (int i = 0; i < 32; i++) {
        double y = L->lv[c->q[i]];
        c->ycy += y * c->cy[i];
        c->ycx += y * b->cx[i];
        c->ys += y * b->s[i];
    }
    double d = c->d, m = c->m;
    c->e = b->xcx - 2 * d * c->ycx - 2 * m * b->sx + d * d * c->ycy + 2 * d * m * c->ys +
           m * m * b->s11;
}

/* Greedy moves of single values by one level while e^T C e (*e) drops, the
 * best move first, at most COV_MOVES: value i is st[i] * lv[q[i]] (plus a
 * fixed offset), q[i] in [0, nl); g = C e and cy = C lv[q] (NULL: not kept)
 * follow the moves. C symmetric. The reference form. */
static int greedy_moves_ref(const double *C, const float *lv, int nl, const double *st, int *q,
                            double *g, double *cy, double *e)
{
    int it;
    for (it = 0; it < COV_MOVES; it++) {
        double best = 0;
        int bi = -1, bq = 0;
        for (int i = 0; i < 32; i++) {
            double cii = C[33 * i];
            for (int s = -1; s <= 1; s += 2) {
                int nq = q[i] + s;
                if (nq < 0 || nq >= nl) continue;
                double t = st[i] * ((double)lv[nq] - lv[q[i]]); /* e_i -= t */
                double de = -2 * t * g[i] + t * t * cii;
                if (de < best) { best = de; bi = i; bq = nq; }
            }
        }
        /* a drop within the rounding of e itself is no drop */
        if (bi < 0 || !(-best > 1e-12 * fabs(*e))) break;
        double dy = (double)lv[bq] - lv[q[bi]], t = st[bi] * dy;
        const double *Ci = C + 32 * bi; /* C's column bi (C is symmetric) */
        for (int j = 0; j < 32; j++) g[j] -= t * Ci[j];
        if (cy)
            for (int j = 0; j < 32; j++) cy[j] += dy * Ci[j];
        q[bi] = bq;
        *e += best;
    }
    return it;
}

/* Value i's moves down (k = 0) and up (k = 1): the gain of the move is
 * a[k][i] * g[i] + b[k][i] (the reference's -2 t g_i + t t C_ii with
 * a = -2 t, b = t t C_ii); a move off the levels has a = 0, b = +inf. */
static inline void move_terms(const double *C, const float *lv, int nl, const double *st,
                              const int *q, int i, double a[2][32], double b[2][32])
{
    double cii = C[33 * i], l = lv[q[i]];
    for (int k = 0; k < 2; k++) {
        int nq = q[i] + 2 * k - 1, ok = nq >= 0 && nq < nl;
        double t = st[i] * ((double)lv[ok ? nq : q[i]] - l);
        a[k][i] = ok ? -2 * t : 0;
        b[k][i] = ok ? t * t * cii : INFINITY;
    }
}

/* greedy_moves_ref with each value's move terms kept from one move to the
 * next (only the moved value's change) and the gains of all 64 moves
 * computed side by side: the same gains, bit for bit, and the same choice
 * (the least gain, the first of equal ones in the reference's order: value
 * i's move down, then up). The number of moves made. */
static int greedy_moves(const double *C, const float *lv, int nl, const double *st, int *q,
                         double *g, double *cy, double *e)
{
    if (cov_reference) return greedy_moves_ref(C, lv, nl, st, q, g, cy, e);
    double a[2][32], b[2][32], de[2][32];
    for (int i = 0; i < 32; i++) move_terms(C, lv, nl, st, q, i, a, b);
    int simd = cov_simd(), it;
    for (it = 0; it < COV_MOVES; it++) {
        double best;
#if defined(__x86_64__)
        if (simd)
            best = gains_avx2(a, b, g, de);
        else
#endif
        {
            for (int i = 0; i < 32; i++) {
                de[0][i] = a[0][i] * g[i] + b[0][i];
                de[1][i] = a[1][i] * g[i] + b[1][i];
            }
            /* the least gain below 0 (a NaN never is less): four running
             * minima, none ever NaN, so their order does not matter */
            double m0 = 0, m1 = 0, m2 = 0, m3 = 0;
            for (int i = 0; i < 32; i += 2) {
                m0 = de[0][i] < m0 ? de[0][i] : m0;
                m1 = de[1][i] < m1 ? de[1][i] : m1;
                m2 = de[0][i + 1] < m2 ? de[0][i + 1] : m2;
                m3 = de[1][i + 1] < m3 ? de[1][i + 1] : m3;
            }
            m0 = m1 < m0 ? m1 : m0;
            m2 = m3 < m2 ? m3 : m2;
            best = m2 < m0 ? m2 : m0;
        }
        /* a drop within the rounding of e itself is no drop */
        if (!(best < 0) || !(-best > 1e-12 * fabs(*e))) break;
        int bi = 0, bk = 0;
#if defined(__x86_64__)
        if (simd)
            first_avx2(de, best, &bi, &bk);
        else
#endif
            while (de[bk][bi] != best) { /* the first in the reference's order */
                bk ^= 1;
                bi += bk == 0;
            }
        int bq = q[bi] + 2 * bk - 1;
        double dy = (double)lv[bq] - lv[q[bi]], t = st[bi] * dy;
        const double *Ci = C + 32 * bi; /* C's column bi (C is symmetric) */
#if defined(__x86_64__)
        if (simd)
            move_avx2(Ci, t, dy, g, cy);
        else
#endif
        {
            for (int j = 0; j < 32; j++) g[j] -= t * Ci[j];
            if (cy)
                for (int j = 0; j < 32; j++) cy[j] += dy * Ci[j];
        }
        q[bi] = bq;
        *e += best;
        move_terms(C, lv, nl, st, q, bi, a, b);
    }
    return it;
}

/* greedy_moves on candidate c (step c->d), then c is scored again (when a
 * value moved: else the same sums again, outside the reference). */
static void cov_greedy(const cov_block *b, const cov_levels *L, cov_cand *c)
{
    double g[32], st[32], d = c->d, m = c->m; /* g = C e */
    for (int i = 0; i < 32; i++) {
        g[i] = b->cx[i] - d * c->cy[i] - m * b->s[i];
        st[i] = d;
    }
    if (greedy_moves(b->C, L->lv, L->nl, st, c->q, g, c->cy, &c->e) || cov_reference)
        cov_score(b, L, c);
}

/* The candidate of stored scale dh (and min mh): values rounded to the nearest
 * level, then greedy moves; scored. */
static void cov_try(const cov_block *b, const cov_levels *L, uint16_t dh, uint16_t mh,
                    cov_cand *c)
{
    c->dh = dh;
    c->mh = mh;
    c->d = lpk_f16_to_f32(dh);
    c->m = L->asym ? lpk_f16_to_f32(mh) : 0.0f;
    float id = c->d != 0.0f ? 1.0f / c->d : 0.0f;
    float lo = L->lv[0], hi = L->lv[L->nl - 1];
    for (int i = 0; i < 32; i++)
        c->q[i] = L->table ? quant_iq4nl_index((b->x[i] - c->m) * id)
                           : (int)(qi_round(qi_clamp((b->x[i] - c->m) * id, lo, hi)) - lo);
    double y[32];
    for (int j = 0; j < 32; j++) y[j] = L->lv[c->q[j]];
    cov_products(b->C, y, c->cy, NULL);
    cov_score(b, L, c);
    cov_greedy(b, L, c);
    trace(c->e);
}

/* Least-squares scale (and min) of c's assignment under C, as f16 bits; 0 when
 * there is none. */
static int cov_refit(const cov_block *b, const cov_levels *L, const cov_cand *c, uint16_t *dh,
                     uint16_t *mh)
{
    double d, m = 0;
    if (!L->asym) {
        if (!(c->ycy > 0)) return 0;
        d = c->ycx / c->ycy;
    } else {
        double det = c->ycy * b->s11 - c->ys * c->ys;
        if (!(det > 0)) return 0;
        d = (c->ycx * b->s11 - c->ys * b->sx) / det;
        m = (c->ycy * b->sx - c->ys * c->ycx) / det;
    }
    if (!isfinite(d) || !isfinite(m) || d == 0 || (L->asym && d < 0)) return 0;
    *dh = qi_f16_sat((float)d);
    *mh = L->asym ? qi_f16_sat((float)m) : 0;
    return 1;
}

/* The search of one block (x[32], C[32 * 32]) over levels L with the
 * candidate scales dh[0..nd) (and mins mh): *out the best candidate, then up
 * to COV_REFITS least-squares refits of the best assignment as candidates. */
static void cov_search(const float *x, const double *C, const cov_levels *L, const uint16_t *dh,
                       const uint16_t *mh, int nd, cov_cand *out)
{
    cov_block b;
    cov_block_init(&b, x, C);
    cov_cand c;
    for (int k = 0; k < nd; k++) {
        cov_try(&b, L, dh[k], mh ? mh[k] : 0, &c);
        /* k == 0 always: a real scale even when every error is inf */
        if (k == 0 || c.e < out->e) *out = c;
    }
    for (int it = 0; it < COV_REFITS; it++) {
        uint16_t h, hm;
        if (!cov_refit(&b, L, out, &h, &hm) || (h == out->dh && hm == out->mh)) break;
        cov_try(&b, L, h, hm, &c);
        if (!(c.e < out->e)) break;
        *out = c;
    }
}

/* The trace of C_b is 0 (columns never active): no output error either way,
 * so the block keeps the plain search's result. */
static int cov_dead(const double *C)
{
    double t = 0;
    for (int i = 0; i < 32; i++) t += C[33 * i];
    return !(t > 0);
}

static void cov_sym(const float *x, const double *C, int nlo, const float *lv, uint16_t *dh,
                    int q[32])
{
    cov_levels L = {lv, 2 * nlo, 0, 0};
    int neg;
    float amax = quant_ops_ref.amax32(x, &neg);
    if (amax == 0.0f || cov_dead(C)) {
        *dh = quant_search_sym(&quant_ops_ref, x, NULL, nlo, nlo - 1);
        quant_ops_ref.sym_assign32(x, lpk_f16_to_f32(*dh), nlo, nlo - 1, q);
        for (int i = 0; i < 32; i++) q[i] += nlo;
        return;
    }
    float xm = neg ? -amax : amax;
    uint16_t hs[QI_NGRID];
    for (int k = 0; k < QI_NGRID; k++) hs[k] = qi_f16_sat(-xm / ((float)nlo + quant_grid_sym[k]));
    cov_cand c;
    cov_search(x, C, &L, hs, NULL, QI_NGRID, &c);
    *dh = c.dh;
    memcpy(q, c.q, sizeof c.q);
}

static void cov_asym(const float *x, const double *C, int nmax, uint16_t *dh, uint16_t *mh,
                     int q[32])
{
    cov_levels L = {lv_u, nmax + 1, 1, 0};
    float mn = x[0], mx = x[0];
    for (int i = 1; i < 32; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    if (!(mx > mn) || cov_dead(C)) {
        quant_search_asym(&quant_ops_ref, x, NULL, nmax, dh, mh);
        float d = lpk_f16_to_f32(*dh), m = lpk_f16_to_f32(*mh);
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int i = 0; i < 32; i++)
            q[i] = (int)qi_round(qi_clamp((x[i] - m) * id, 0.0f, (float)nmax));
        return;
    }
    uint16_t hs[QI_NGRID], ms[QI_NGRID];
    for (int k = 0; k < QI_NGRID; k++) {
        hs[k] = qi_f16_sat((mx - mn) / ((float)nmax + quant_grid_asym[k]));
        ms[k] = qi_f16_sat(mn);
    }
    cov_cand c;
    cov_search(x, C, &L, hs, ms, QI_NGRID, &c);
    *dh = c.dh;
    *mh = c.mh;
    memcpy(q, c.q, sizeof c.q);
}

/* iq4_nl: the largest |x| mapped near either end of the table (nl_fit's 18
 * scales). */
static void cov_iq4_nl(const float *x, const double *C, uint16_t *dh, int q[32])
{
    cov_levels L = {lv_iq4nl, 16, 0, 1};
    float xm = 0.0f;
    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > fabsf(xm)) xm = x[i];
    if (xm == 0.0f || cov_dead(C)) {
        block_iq4_nl b;
        quant_ref_iq4_nl(x, NULL, &b, 32);
        *dh = b.d;
        for (int j = 0; j < 16; j++) {
            q[j] = b.qs[j] & 15;
            q[j + 16] = b.qs[j] >> 4;
        }
        return;
    }
    uint16_t hs[18];
    for (int end = 0, k = 0; end < 2; end++) {
        float e0 = end ? 113.0f : -127.0f;
        for (int t = -4; t <= 4; t++) hs[k++] = qi_f16_sat(xm / (e0 + (end ? -2.0f : 2.0f) * (float)t));
    }
    cov_cand c;
    cov_search(x, C, &L, hs, NULL, 18, &c);
    *dh = c.dh;
    memcpy(q, c.q, sizeof c.q);
}

int quant_cov_supports(int type)
{
    switch (type) {
    case LPK_TYPE_Q4_0: case LPK_TYPE_Q5_0: case LPK_TYPE_Q4_1: case LPK_TYPE_Q5_1:
    case LPK_TYPE_IQ4_NL:
        return 1;
    default:
        return 0;
    }
}

void quant_cov_row(int type, const float *x, const float *cov32, void *dst, int64_t n)
{
    for (int64_t k = 0; k < n / 32; k++) {
        const float *xb = x + 32 * k, *Ck = cov32 + 1024 * k;
        /* the symmetric part (the searches read C's rows as its columns) */
        double C[1024]; /* the float sums, held as doubles (exact) */
        for (int i = 0; i < 32; i++)
            for (int j = 0; j < 32; j++) C[32 * i + j] = (Ck[32 * i + j] + Ck[32 * j + i]) * 0.5f;
        int q[32];
        uint16_t dh, mh;
        switch (type) {
        case LPK_TYPE_Q4_0: {
            block_q4_0 *b = (block_q4_0 *)dst + k;
            cov_sym(xb, C, 8, lv_q4_0, &dh, q);
            b->d = dh;
            quant_pack_nibbles(q, b->qs);
            break;
        }
        case LPK_TYPE_Q5_0: {
            block_q5_0 *b = (block_q5_0 *)dst + k;
            cov_sym(xb, C, 16, lv_q5_0, &dh, q);
            b->d = dh;
            quant_pack_qh(q, b->qh);
            quant_pack_nibbles(q, b->qs);
            break;
        }
        case LPK_TYPE_Q4_1: {
            block_q4_1 *b = (block_q4_1 *)dst + k;
            cov_asym(xb, C, 15, &dh, &mh, q);
            b->d = dh;
            b->m = mh;
            quant_pack_nibbles(q, b->qs);
            break;
        }
        case LPK_TYPE_Q5_1: {
            block_q5_1 *b = (block_q5_1 *)dst + k;
            cov_asym(xb, C, 31, &dh, &mh, q);
            b->d = dh;
            b->m = mh;
            quant_pack_qh(q, b->qh);
            quant_pack_nibbles(q, b->qs);
            break;
        }
        case LPK_TYPE_IQ4_NL: {
            block_iq4_nl *b = (block_iq4_nl *)dst + k;
            cov_iq4_nl(xb, C, &dh, q);
            b->d = dh;
            quant_pack_nibbles(q, b->qs);
            break;
        }
        default:
            return;
        }
    }
}

/* ---------------------------------------------------------------- super-blocks */
/* The super-block types keep their scales from the weighted search; each
 * 32-value block's values are then moved by greedy_moves under C_b. Value e
 * (0..255) of a super-block as level q in [0, nl) with step st: the value is
 * st * q plus a fixed offset of its sub-block. */
static int kq_levels(int type)
{
    switch (type) {
    case LPK_TYPE_IQ4_XS: return 16;
    case LPK_TYPE_Q4_K: return 16;
    case LPK_TYPE_Q5_K: return 32;
    case LPK_TYPE_Q6_K: return 64;
    case LPK_TYPE_Q3_K: return 8;
    case LPK_TYPE_Q2_K: return 4;
    default: return 0;
    }
}

static void kq_get(int type, const void *blk, int e, int *q, double *st)
{
    switch (type) {
    case LPK_TYPE_Q4_K: case LPK_TYPE_Q5_K: {
        const block_q4_K *b = blk; /* q5_K's first fields are q4_K's */
        int sc, m;
        quant_q4k_scale_min(b->scales, e / 32, &sc, &m);
        *st = lpk_f16_to_f32(b->d) * (float)sc;
        *q = type == LPK_TYPE_Q4_K ? quant_q4k_q(b->qs, e) : quant_q5k_q(blk, e);
        break;
    }
    case LPK_TYPE_Q6_K: {
        const block_q6_K *b = blk;
        *st = lpk_f16_to_f32(b->d) * (float)b->scales[e / 16];
        *q = quant_q6k_q(b, e) + 32;
        break;
    }
    case LPK_TYPE_IQ4_XS: {
        const block_iq4_xs *b = blk;
        *st = lpk_f16_to_f32(b->d) * (float)quant_iq4xs_scale(b, e / 32);
        *q = (b->qs[16 * (e / 32) + e % 16] >> (4 * ((e % 32) / 16))) & 15;
        break;
    }
    case LPK_TYPE_Q3_K: {
        const block_q3_K *b = blk;
        *st = lpk_f16_to_f32(b->d) * (float)quant_q3k_scale(b->scales, e / 16);
        *q = quant_q3k_q(b, e) + 4;
        break;
    }
    default: { /* q2_K */
        const block_q2_K *b = blk;
        *st = lpk_f16_to_f32(b->d) * (float)(b->scales[e / 16] & 15);
        *q = quant_q2k_q(b->qs, e);
        break;
    }
    }
}

/* Stores kq_get's level q (q6_k and q3_k: offset to start at 0) as value e */
static void kq_set(int type, void *blk, int e, int q)
{
    quant_elem_set(type, blk, e, q - (type == LPK_TYPE_Q6_K ? 32 : type == LPK_TYPE_Q3_K ? 4 : 0));
}

void quant_cov_polish_row(int type, const float *x, const float *cov32, void *dst, int64_t n)
{
    dequant_row_fn deq = type == LPK_TYPE_Q4_K   ? quant_deq_q4_k
                         : type == LPK_TYPE_Q5_K ? quant_deq_q5_k
                         : type == LPK_TYPE_Q6_K ? quant_deq_q6_k
                         : type == LPK_TYPE_Q3_K ? quant_deq_q3_k
                         : type == LPK_TYPE_Q2_K ? quant_deq_q2_k
                                                 : quant_deq_iq4_xs;
    int nl = kq_levels(type);
    size_t bs = (size_t)lpk_type_get(type)->type_size;
    for (int64_t sb = 0; sb < n / QK_K; sb++) {
        uint8_t *blk = (uint8_t *)dst + (size_t)sb * bs;
        float y[QK_K];
        deq(blk, y, QK_K);
        for (int k = 0; k < QK_K / 32; k++) {
            const float *xb = x + QK_K * sb + 32 * k, *yb = y + 32 * k;
            const float *Ck = cov32 + 1024 * (QK_K / 32 * sb + k);
            double C[1024]; /* the float sums, held as doubles (exact) */
            for (int i = 0; i < 32; i++)
                for (int j = 0; j < 32; j++)
                    C[32 * i + j] = (Ck[32 * i + j] + Ck[32 * j + i]) * 0.5f;
            if (cov_dead(C)) continue;
            double ev[32], g[32], st[32], e = 0;
            int q[32], q0[32];
            for (int i = 0; i < 32; i++) {
                ev[i] = (double)xb[i] - yb[i];
                kq_get(type, blk, 32 * k + i, &q[i], &st[i]);
                q0[i] = q[i];
            }
            cov_products(C, ev, g, NULL);
            for (int i = 0; i < 32; i++) e += ev[i] * g[i];
            greedy_moves(C, type == LPK_TYPE_IQ4_XS ? lv_iq4nl : lv_u, nl, st, q, g, NULL, &e);
            trace(e);
            for (int i = 0; i < 32; i++)
                if (q[i] != q0[i]) kq_set(type, blk, 32 * k + i, q[i]);
        }
    }
}

int quant_cov_polishes(int type) { return kq_levels(type) != 0; }
