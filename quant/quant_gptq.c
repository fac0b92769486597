/* GPTQ (Frantar et al., 2022) into GGML block types.
 *
 * A layer's weight row w is quantized column after column; each column's
 * rounding error, divided by the diagonal of the upper Cholesky factor U of
 * H^-1 (H = X^T X of the layer's inputs, dampened), is spread over the columns
 * not yet quantized through that column's row of U. GGML blocks fix the
 * grouping: a block's scales (and mins, and k-quant sub-block scales) come from
 * the existing quantizer of its type, run on the block's error-updated values
 * (importance = diag(H)) when the sweep first reaches one of its columns; the
 * levels it picked are then replaced column by column by the nearest level
 * under those fixed scales. The output is ordinary blocks of the type.
 *
 * Every row's sweep depends on the row and the factor only, with a fixed
 * arithmetic order, so the bytes do not depend on the thread count or on how
 * rows are batched. See docs/QUANT.md. */
#include "quant_internal.h"

#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

struct quant_gptq_factor {
    int64_t n;
    int order;
    int group;      /* QUANT_GPTQ_ORDER_BLOCK: columns permuted within groups of this size */
    double damp;    /* relative dampening actually used (may exceed the requested one) */
    int64_t *perm;  /* sweep position -> column */
    float *diag;    /* dampened diag(H) per column: the scale searches' importance */
    float *u;       /* n x n, row k = sweep position k: upper Cholesky factor of the
                     * permuted H^-1 (entries left of the diagonal unused) */
};

static const char *const order_names[] = {"none", "act-order", "block-act-order"};

int quant_gptq_order_parse(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, order_names[i])) return i;
    return -1;
}

const char *quant_gptq_order_name(int order)
{
    return order >= 0 && order < 3 ? order_names[order] : NULL;
}

/* ---------------------------------------------------------------- factor */
/* Sweep order: identity, decreasing diag(H) (ties by index), or that order
 * inside each group of `group` columns. */
typedef struct { double d; int64_t i; } gq_key;

static int cmp_diag_desc(const void *a, const void *b)
{
    const gq_key *x = a, *y = b;
    if (x->d > y->d) return -1;
    if (x->d < y->d) return 1;
    return x->i < y->i ? -1 : (x->i > y->i);
}

/* In-place lower Cholesky of the n x n symmetric a (lower triangle read and
 * written). Returns 0, or -1 when a pivot is not positive and finite. */
static int chol_lower(double *a, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        double s = a[j * n + j];
        for (int64_t k = 0; k < j; k++) s -= a[j * n + k] * a[j * n + k];
        if (!(s > 0.0) || !isfinite(s)) return -1;
        double ljj = sqrt(s);
        a[j * n + j] = ljj;
        /* rows below j are independent: each sums in index order */
#pragma omp parallel for schedule(static) if (n - j > 256)
        for (int64_t i = j + 1; i < n; i++) {
            double t = a[i * n + j];
            const double *ri = a + i * n, *rj = a + j * n;
            for (int64_t k = 0; k < j; k++) t -= ri[k] * rj[k];
            a[i * n + j] = t / ljj;
        }
    }
    return 0;
}

/* In-place inverse of the lower triangular l (lower triangle), last column
 * first: Li[i][j] = -(sum_{k=j+1..i} Li[i][k] L[k][j]) / L[j][j]. col: n scratch. */
static void tri_inverse_lower(double *l, int64_t n, double *col)
{
    for (int64_t j = n - 1; j >= 0; j--) {
        double ljj = l[j * n + j];
        for (int64_t k = j; k < n; k++) col[k] = l[k * n + j]; /* column j of L */
#pragma omp parallel for schedule(static) if (n - j > 256)
        for (int64_t i = j + 1; i < n; i++) {
            double t = 0.0;
            for (int64_t k = j + 1; k <= i; k++) t += l[i * n + k] * col[k];
            l[i * n + j] = -t / ljj;
        }
        l[j * n + j] = 1.0 / ljj;
    }
}

/* Tiles of the triangle copies below: a tile's rows and columns stay in cache. */
#define GQ_TILE 64

/* The strict lower triangle of a (n x n) from its strict upper one
 * (a[r][c] = a[c][r], c < r); up: the other way round. */
static void mirror(double *a, int64_t n, int up)
{
#pragma omp parallel for schedule(dynamic, 1) if (n > 256)
    for (int64_t r0 = 0; r0 < n; r0 += GQ_TILE) {
        int64_t r1 = r0 + GQ_TILE < n ? r0 + GQ_TILE : n;
        for (int64_t c0 = 0; c0 <= r0; c0 += GQ_TILE)
            for (int64_t r = r0; r < r1; r++) {
                int64_t c1 = c0 + GQ_TILE < r ? c0 + GQ_TILE : r;
                for (int64_t c = c0; c < c1; c++) {
                    if (up) a[c * n + r] = a[r * n + c];
                    else a[r * n + c] = a[c * n + r];
                }
            }
    }
}

/* Rows and columns of the n x n a put in the order q: afterwards a[r][c] is
 * the former a[q[r]][q[c]]. Rows move along the cycles of q through one row of
 * scratch (row), then each row's columns through another (col). seen: n bytes. */
static void permute_sym(double *a, int64_t n, const int64_t *q, double *row, double *col,
                        unsigned char *seen)
{
    if (n <= 0) return; /* (and the compiler then knows the sizes below are small) */
    const size_t rb = (size_t)n * sizeof *a;
    memset(seen, 0, (size_t)n);
    for (int64_t s = 0; s < n; s++) {
        if (seen[s]) continue;
        seen[s] = 1;
        if (q[s] == s) continue;
        memcpy(row, a + s * n, rb);
        int64_t r = s;
        while (q[r] != s) {
            memcpy(a + r * n, a + q[r] * n, rb);
            r = q[r];
            seen[r] = 1;
        }
        memcpy(a + r * n, row, rb);
    }
    for (int64_t r = 0; r < n; r++) {
        double *ar = a + r * n;
        for (int64_t c = 0; c < n; c++) col[c] = ar[q[c]];
        memcpy(ar, col, rb);
    }
}

/* The checks both constructors make before any allocation. */
static int factor_check(const double *h, int64_t n, double damp, int order, int group,
                        lpk_error *err)
{
    if (!h || n <= 0 || !(damp >= 0.0) || !isfinite(damp) || order < QUANT_GPTQ_ORDER_NONE ||
        order > QUANT_GPTQ_ORDER_BLOCK)
        return lpk_err(err, LPK_EINVAL, "gptq: bad arguments (n %lld, damp %g, order %d)",
                       (long long)n, damp, order);
    if (order == QUANT_GPTQ_ORDER_BLOCK && (group <= 0 || n % group != 0))
        return lpk_err(err, LPK_EINVAL, "gptq: %lld columns are not whole groups of %d",
                       (long long)n, group);
    if ((uint64_t)n > (uint64_t)1 << 20)
        return lpk_err(err, LPK_ENOMEM, "gptq: %lld columns is too many", (long long)n);
    for (int64_t i = 0; i < n * n; i++)
        if (!isfinite(h[i]))
            return lpk_err(err, LPK_EBADVALUE, "gptq: Hessian entry (%lld, %lld) is not finite",
                           (long long)(i / n), (long long)(i % n));
    return LPK_OK;
}

/* The factor of the checked H in a (n x n doubles, malloc'd), built in a's own
 * memory: a ends as the factor's u (shrunk to floats) or is freed. */
static int factor_build(double *a, int64_t n, double damp, int order, int group,
                        quant_gptq_factor **out, lpk_error *err)
{
    quant_gptq_factor *f = calloc(1, sizeof *f);
    double *dg = malloc((size_t)n * sizeof *dg), *col = malloc((size_t)n * sizeof *col);
    double *row = malloc((size_t)n * sizeof *row);
    int64_t *q = malloc((size_t)n * sizeof *q);
    unsigned char *seen = malloc((size_t)n);
    if (f) {
        f->perm = malloc((size_t)n * sizeof *f->perm);
        f->diag = malloc((size_t)n * sizeof *f->diag);
    }
    int rc = LPK_OK;
    if (!f || !dg || !col || !row || !q || !seen || !f->perm || !f->diag) {
        rc = lpk_err(err, LPK_ENOMEM, "gptq: no memory for a %lld x %lld Hessian",
                     (long long)n, (long long)n);
        goto out;
    }
    f->n = n;
    f->order = order;
    f->group = order == QUANT_GPTQ_ORDER_BLOCK ? group : 0;

    /* dead inputs (never nonzero on the calibration text) get a unit diagonal:
     * their weights are then quantized by plain rounding, error not spread */
    double mean = 0.0;
    for (int64_t i = 0; i < n; i++) {
        dg[i] = a[i * n + i] > 0.0 ? a[i * n + i] : 1.0;
        mean += dg[i];
    }
    mean /= (double)n;

    for (int64_t i = 0; i < n; i++) f->perm[i] = i;
    if (order != QUANT_GPTQ_ORDER_NONE) {
        int64_t g = order == QUANT_GPTQ_ORDER_BLOCK ? group : n;
        gq_key *key = malloc((size_t)g * sizeof *key);
        if (!key) {
            rc = lpk_err(err, LPK_ENOMEM, "gptq: no memory for the column order");
            goto out;
        }
        for (int64_t s = 0; s < n; s += g) {
            for (int64_t t = 0; t < g; t++) key[t] = (gq_key){dg[s + t], s + t};
            qsort(key, (size_t)g, sizeof *key, cmp_diag_desc);
            for (int64_t t = 0; t < g; t++) f->perm[s + t] = key[t].i;
        }
        free(key);
    }

    /* a = R P H P R: rows and columns in sweep order, reversed, so the lower
     * Cholesky factor's inverse, reversed back, is the upper factor of the
     * permuted H^-1 (the factor with positive diagonal is unique). Its lower
     * triangle is what counts; a copy in the upper one survives the
     * factorization, for another attempt with more dampening. */
    for (int64_t r = 0; r < n; r++) q[r] = f->perm[n - 1 - r];
    permute_sym(a, n, q, row, col, seen);
    mirror(a, n, 1);
    rc = LPK_EBADVALUE;
    double dm = damp;
    for (int attempt = 0; attempt < 6; attempt++, dm = dm > 0.0 ? dm * 10.0 : 1e-4) {
        double add = dm * mean;
        if (attempt > 0) mirror(a, n, 0);
        for (int64_t r = 0; r < n; r++) a[r * n + r] = dg[q[r]] + add;
        if (chol_lower(a, n) == 0) {
            rc = LPK_OK;
            f->damp = dm;
            for (int64_t i = 0; i < n; i++) f->diag[i] = (float)(dg[i] + add);
            break;
        }
    }
    if (rc != LPK_OK) {
        rc = lpk_err(err, LPK_EBADVALUE,
                     "gptq: Hessian is not positive definite even with dampening %g", dm / 10.0);
        goto out;
    }
    tri_inverse_lower(a, n, col);
    /* u[k][j] = a[n-1-k][n-1-j] for j >= k (0 left of the diagonal): the whole
     * array reversed, then each entry narrowed to float in place, front to
     * back (float i overwrites bytes of doubles before i, already read) */
    const size_t nn = (size_t)n * (size_t)n;
    for (size_t i = 0; i < nn / 2; i++) {
        double t = a[i];
        a[i] = a[nn - 1 - i];
        a[nn - 1 - i] = t;
    }
    unsigned char *bytes = (unsigned char *)a;
    for (size_t i = 0; i < nn; i++) {
        double v;
        memcpy(&v, bytes + i * sizeof v, sizeof v);
        float u = (int64_t)(i % (size_t)n) >= (int64_t)(i / (size_t)n) ? (float)v : 0.0f;
        memcpy(bytes + i * sizeof u, &u, sizeof u);
    }
    float *u = realloc(a, nn * sizeof *u);
    f->u = u ? u : (float *)(void *)a;
    a = NULL;
out:
    free(a);
    free(dg);
    free(col);
    free(row);
    free(q);
    free(seen);
    if (rc) {
        quant_gptq_factor_free(f);
        f = NULL;
    }
    *out = f;
    return rc;
}

int quant_gptq_factor_new(const double *h, int64_t n, double damp, int order, int group,
                          quant_gptq_factor **out, lpk_error *err)
{
    *out = NULL;
    int rc = factor_check(h, n, damp, order, group, err);
    if (rc) return rc;
    double *a = malloc((size_t)n * (size_t)n * sizeof *a);
    if (!a)
        return lpk_err(err, LPK_ENOMEM, "gptq: no memory for a %lld x %lld Hessian",
                       (long long)n, (long long)n);
    memcpy(a, h, (size_t)n * (size_t)n * sizeof *a);
    return factor_build(a, n, damp, order, group, out, err);
}

int quant_gptq_factor_take(double *h, int64_t n, double damp, int order, int group,
                           quant_gptq_factor **out, lpk_error *err)
{
    *out = NULL;
    int rc = factor_check(h, n, damp, order, group, err);
    if (rc) {
        free(h);
        return rc;
    }
    return factor_build(h, n, damp, order, group, out, err);
}

void quant_gptq_factor_free(quant_gptq_factor *f)
{
    if (!f) return;
    free(f->perm);
    free(f->diag);
    free(f->u);
    free(f);
}

double quant_gptq_factor_damp(const quant_gptq_factor *f) { return f ? f->damp : 0.0; }

/* ---------------------------------------------------------------- levels */
/* Element i of a block as step * q + off, q in [lo, hi], or for the iq4 types
 * step * lut[q], q in [0, 15]: the value GGML's dequantizer computes for level
 * q (same float operations). */
typedef struct { float step, off; int lo, hi; const int8_t *lut; } gq_map;

static gq_map elem_map(int type, const void *blk, int i)
{
    gq_map g = {0.0f, 0.0f, 0, 0, NULL};
    int sc, m;
    switch (type) {
    case LPK_TYPE_Q4_0: g.step = lpk_f16_to_f32(((const block_q4_0 *)blk)->d); g.lo = -8; g.hi = 7; break;
    case LPK_TYPE_Q5_0: g.step = lpk_f16_to_f32(((const block_q5_0 *)blk)->d); g.lo = -16; g.hi = 15; break;
    case LPK_TYPE_Q8_0: g.step = lpk_f16_to_f32(((const block_q8_0 *)blk)->d); g.lo = -128; g.hi = 127; break;
    case LPK_TYPE_Q4_1: {
        const block_q4_1 *b = blk;
        g.step = lpk_f16_to_f32(b->d); g.off = lpk_f16_to_f32(b->m); g.hi = 15;
        break;
    }
    case LPK_TYPE_Q5_1: {
        const block_q5_1 *b = blk;
        g.step = lpk_f16_to_f32(b->d); g.off = lpk_f16_to_f32(b->m); g.hi = 31;
        break;
    }
    case LPK_TYPE_Q4_K: {
        const block_q4_K *b = blk;
        quant_q4k_scale_min(b->scales, i / 32, &sc, &m);
        g.step = lpk_f16_to_f32(b->d) * (float)sc;
        g.off = -(lpk_f16_to_f32(b->dmin) * (float)m);
        g.hi = 15;
        break;
    }
    case LPK_TYPE_Q5_K: {
        const block_q5_K *b = blk;
        quant_q4k_scale_min(b->scales, i / 32, &sc, &m);
        g.step = lpk_f16_to_f32(b->d) * (float)sc;
        g.off = -(lpk_f16_to_f32(b->dmin) * (float)m);
        g.hi = 31;
        break;
    }
    case LPK_TYPE_Q6_K: {
        const block_q6_K *b = blk;
        g.step = lpk_f16_to_f32(b->d) * (float)b->scales[i / 16];
        g.lo = -32; g.hi = 31;
        break;
    }
    case LPK_TYPE_Q2_K: {
        const block_q2_K *b = blk;
        uint8_t s = b->scales[i / 16];
        g.step = lpk_f16_to_f32(b->d) * (float)(s & 15);
        g.off = -(lpk_f16_to_f32(b->dmin) * (float)(s >> 4));
        g.hi = 3;
        break;
    }
    case LPK_TYPE_Q3_K: {
        const block_q3_K *b = blk;
        g.step = lpk_f16_to_f32(b->d) * (float)quant_q3k_scale(b->scales, i / 16);
        g.lo = -4; g.hi = 3;
        break;
    }
    case LPK_TYPE_IQ4_NL:
        g.step = lpk_f16_to_f32(((const block_iq4_nl *)blk)->d);
        g.hi = 15;
        g.lut = quant_iq4nl_values;
        break;
    case LPK_TYPE_IQ4_XS: {
        const block_iq4_xs *b = blk;
        int j = i / 32;
        g.step = lpk_f16_to_f32(b->d) * (float)quant_iq4xs_scale(b, j);
        g.hi = 15;
        g.lut = quant_iq4nl_values;
        break;
    }
    default: break;
    }
    return g;
}

/* Nearest level of z under the block's fixed scales (the rounding the type's
 * quantizer packs with); stores it and returns the dequantized value. */
static float assign(int type, void *blk, int i, float z)
{
    gq_map g = elem_map(type, blk, i);
    float id = g.step != 0.0f ? 1.0f / g.step : 0.0f;
    if (g.lut) {
        int q = quant_iq4nl_index(z * id);
        quant_elem_set(type, blk, i, q);
        return g.step * (float)g.lut[q];
    }
    int q = (int)qi_round(qi_clamp((z - g.off) * id, (float)g.lo, (float)g.hi));
    quant_elem_set(type, blk, i, q);
    return g.step * (float)q + g.off;
}

int quant_gptq_supports(int type)
{
    switch (type) {
    case LPK_TYPE_Q4_0: case LPK_TYPE_Q4_1: case LPK_TYPE_Q5_0: case LPK_TYPE_Q5_1:
    case LPK_TYPE_Q8_0: case LPK_TYPE_Q4_K: case LPK_TYPE_Q6_K: case LPK_TYPE_Q5_K:
    case LPK_TYPE_Q3_K: case LPK_TYPE_Q2_K: case LPK_TYPE_IQ4_NL: case LPK_TYPE_IQ4_XS:
        return quant_kind_get(type) != NULL;
    default: return 0;
    }
}

/* ---------------------------------------------------------------- sweep */
#define GQ_ROWS 8 /* rows swept together, so each row of U is read once per batch */

typedef struct {
    int type, bs;
    size_t tsize;
    int64_t n, nb, lazy;
    const quant_gptq_factor *f;
    const quant_kind *k;
    const int64_t *blk_of;  /* sweep position -> block index in the row */
    const uint8_t *first;   /* sweep position: first touch of its block */
} gq_job;

/* Scales of block b of one row from values x (original column order), written
 * with provisional levels into the row's blocks dst. */
static void pick_scales(const gq_job *j, const float *x, int64_t b, uint8_t *dst)
{
    j->k->quantize_ref(x, j->f->diag + b * j->bs, dst + (size_t)b * j->tsize, j->bs);
}

/* Sweeps rows [r0, r0 + nr) of w (row-major, n columns) into dst. wp: GQ_ROWS
 * x n, e: GQ_ROWS x lazy, xb: bs floats of scratch. */
static void sweep_rows(const gq_job *j, const float *w, int64_t r0, int nr, uint8_t *dst,
                       float *wp, float *e, float *xb)
{
    const int64_t n = j->n, lazy = j->lazy;
    const int64_t *perm = j->f->perm;
    const float *u = j->f->u;
    size_t row_bytes = (size_t)j->nb * j->tsize;
    for (int r = 0; r < nr; r++) {
        const float *src = w + (r0 + r) * n;
        for (int64_t k = 0; k < n; k++) wp[r * n + k] = src[perm[k]];
        if (j->f->order == QUANT_GPTQ_ORDER_STATIC) /* every block's scales up front */
            for (int64_t b = 0; b < j->nb; b++)
                pick_scales(j, src + b * j->bs, b, dst + (size_t)(r0 + r) * row_bytes);
    }
    for (int64_t i1 = 0; i1 < n; i1 += lazy) {
        int64_t i2 = i1 + lazy < n ? i1 + lazy : n;
        for (int r = 0; r < nr; r++) {
            float *x = wp + r * n;
            uint8_t *drow = dst + (size_t)(r0 + r) * row_bytes;
            for (int64_t k = i1; k < i2; k++) {
                int64_t b = j->blk_of[k];
                if (j->first[k]) {
                    /* the block's columns have all updates from earlier batches and
                     * from this one up to k (a block never spans two batches) */
                    memset(xb, 0, (size_t)j->bs * sizeof *xb);
                    for (int64_t p = k; p < i2; p++)
                        if (j->blk_of[p] == b) xb[perm[p] - b * j->bs] = x[p];
                    pick_scales(j, xb, b, drow);
                }
                float z = x[k];
                float q = assign(j->type, drow + (size_t)b * j->tsize,
                                 (int)(perm[k] - b * j->bs), z);
                float ek = (z - q) / u[k * n + k];
                e[r * lazy + (k - i1)] = ek;
                const float *uk = u + k * n;
                for (int64_t c = k + 1; c < i2; c++) x[c] -= ek * uk[c];
            }
        }
        /* the batch's errors reach the later columns, position by position */
        for (int64_t k = i1; k < i2; k++) {
            const float *uk = u + k * n;
            for (int r = 0; r < nr; r++) {
                float ek = e[r * lazy + (k - i1)];
                float *x = wp + r * n;
                for (int64_t c = i2; c < n; c++) x[c] -= ek * uk[c];
            }
        }
    }
}

int quant_gptq_rows(int type, const float *w, int64_t nrows, int64_t ncols,
                    const quant_gptq_factor *f, void *dst, lpk_error *err)
{
    const lpk_type_info *ti = lpk_type_get(type);
    const quant_kind *k = quant_kind_get(type);
    if (!ti || !k || !quant_gptq_supports(type))
        return lpk_err(err, LPK_EINVAL, "gptq: type %s is not a block type GPTQ supports",
                       ti ? ti->name : "?");
    if (!f || f->n != ncols || nrows < 0 || ncols % ti->block_size != 0)
        return lpk_err(err, LPK_EINVAL,
                       "gptq: %lld columns do not match the factor (%lld) or the %s block",
                       (long long)ncols, (long long)(f ? f->n : 0), ti->name);
    const int bs = ti->block_size;
    if (f->order == QUANT_GPTQ_ORDER_BLOCK && f->group % bs != 0 && bs % f->group != 0)
        return lpk_err(err, LPK_EINVAL, "gptq: group %d and %s blocks of %d do not nest",
                       f->group, ti->name, bs);
    for (int64_t i = 0; i < nrows * ncols; i++)
        if (!isfinite(w[i]))
            return lpk_err(err, LPK_EBADVALUE, "gptq: weight at row %lld, column %lld is %s",
                           (long long)(i / ncols), (long long)(i % ncols),
                           isnan(w[i]) ? "NaN" : "Inf");
    if (nrows == 0) return LPK_OK;

    /* lazy batches hold whole blocks and whole permutation groups */
    int64_t lazy = 128;
    if (bs > lazy) lazy = bs;
    if (f->group > lazy) lazy = f->group;
    int64_t n = ncols;
    int64_t *blk_of = malloc((size_t)n * sizeof *blk_of);
    uint8_t *first = calloc((size_t)n, 1), *seen = calloc((size_t)(n / bs), 1);
    if (!blk_of || !first || !seen) {
        free(blk_of);
        free(first);
        free(seen);
        return lpk_err(err, LPK_ENOMEM, "gptq: no memory for %lld columns", (long long)n);
    }
    for (int64_t p = 0; p < n; p++) {
        int64_t b = f->perm[p] / bs;
        blk_of[p] = b;
        if (f->order != QUANT_GPTQ_ORDER_STATIC && !seen[b]) first[p] = seen[b] = 1;
    }
    free(seen);
    gq_job job = {type, bs, (size_t)ti->type_size, n, n / bs, lazy, f, k, blk_of, first};
    int64_t nbatch = (nrows + GQ_ROWS - 1) / GQ_ROWS;
    int rc = LPK_OK;
#pragma omp parallel
    {
        float *wp = malloc((size_t)GQ_ROWS * (size_t)n * sizeof *wp);
        float *e = malloc((size_t)GQ_ROWS * (size_t)lazy * sizeof *e);
        float *xb = malloc((size_t)bs * sizeof *xb);
        if (!wp || !e || !xb) {
#pragma omp atomic write
            rc = LPK_ENOMEM;
        }
#pragma omp barrier
        if (rc == LPK_OK) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t bi = 0; bi < nbatch; bi++) {
                int64_t r0 = bi * GQ_ROWS;
                int nr = (int)(nrows - r0 < GQ_ROWS ? nrows - r0 : GQ_ROWS);
                sweep_rows(&job, w, r0, nr, dst, wp, e, xb);
            }
        }
        free(wp);
        free(e);
        free(xb);
    }
    free(blk_of);
    free(first);
    if (rc != LPK_OK) return lpk_err(err, rc, "gptq: no memory for the row buffers");
    return LPK_OK;
}
