/* Row drivers: the per-type table, path selection, parallel quantization with
 * the NaN/Inf check, dequantization and error sums. */
#include "quant_internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__)
#define Q_X86(f) f
#else
#define Q_X86(f) NULL
#endif

static const quant_kind kinds[] = {
    {LPK_TYPE_Q4_0, quant_ref_q4_0, NULL, quant_deq_q4_0, Q_X86(quant_avx2_blocks_q4_0),
     Q_X86(quant_avx512_blocks_q4_0), 1},
    {LPK_TYPE_Q4_1, quant_ref_q4_1, Q_X86(quant_avx2_q4_1), quant_deq_q4_1,
     Q_X86(quant_avx2_blocks_q4_1), Q_X86(quant_avx512_blocks_q4_1), 1},
    {LPK_TYPE_Q5_0, quant_ref_q5_0, NULL, quant_deq_q5_0, Q_X86(quant_avx2_blocks_q5_0),
     Q_X86(quant_avx512_blocks_q5_0), 1},
    {LPK_TYPE_Q5_1, quant_ref_q5_1, Q_X86(quant_avx2_q5_1), quant_deq_q5_1,
     Q_X86(quant_avx2_blocks_q5_1), Q_X86(quant_avx512_blocks_q5_1), 1},
    {LPK_TYPE_Q8_0, quant_ref_q8_0, NULL, quant_deq_q8_0, Q_X86(quant_avx2_blocks_q8_0),
     Q_X86(quant_avx512_blocks_q8_0), 1},
    {LPK_TYPE_Q4_K, quant_ref_q4_k, Q_X86(quant_avx2_q4_k), quant_deq_q4_k,
     Q_X86(quant_avx2_sblocks_q4_k), Q_X86(quant_avx512_sblocks_q4_k), 1},
    {LPK_TYPE_Q6_K, quant_ref_q6_k, Q_X86(quant_avx2_q6_k), quant_deq_q6_k,
     Q_X86(quant_avx2_sblocks_q6_k), Q_X86(quant_avx512_sblocks_q6_k), 1},
    {LPK_TYPE_Q5_K, quant_ref_q5_k, Q_X86(quant_avx2_q5_k), quant_deq_q5_k,
     Q_X86(quant_avx2_sblocks_q5_k), Q_X86(quant_avx512_sblocks_q5_k), 1},
    {LPK_TYPE_Q3_K, quant_ref_q3_k, Q_X86(quant_avx2_q3_k), quant_deq_q3_k,
     Q_X86(quant_avx2_sblocks_q3_k), Q_X86(quant_avx512_sblocks_q3_k), 1},
    {LPK_TYPE_Q2_K, quant_ref_q2_k, Q_X86(quant_avx2_q2_k), quant_deq_q2_k,
     Q_X86(quant_avx2_sblocks_q2_k), Q_X86(quant_avx512_sblocks_q2_k), 1},
    {LPK_TYPE_IQ4_NL, quant_ref_iq4_nl, Q_X86(quant_avx2_iq4_nl), quant_deq_iq4_nl, NULL, NULL, 0},
    {LPK_TYPE_IQ4_XS, quant_ref_iq4_xs, Q_X86(quant_avx2_iq4_xs), quant_deq_iq4_xs, NULL, NULL, 0},
};

const quant_kind *quant_kind_get(int type)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i].type == type)
            return &kinds[i];
    return NULL;
}

int quant_type_is_block(int type) { return quant_kind_get(type) != NULL; }

static int is_plain(int type)
{
    return type == LPK_TYPE_F32 || type == LPK_TYPE_F16 || type == LPK_TYPE_BF16;
}

int quant_row_fits(int type, int64_t ncols)
{
    const lpk_type_info *ti = lpk_type_get(type);
    if (!ti || !ti->storable || (!is_plain(type) && !quant_type_is_block(type)) || ncols <= 0)
        return 0;
    return ncols % ti->block_size == 0;
}

/* ---------------------------------------------------------------- paths */
static int g_path = QUANT_PATH_AUTO;

void quant_set_path(int path)
{
    g_path = path == QUANT_PATH_SCALAR || path == QUANT_PATH_AVX2 ? path : QUANT_PATH_AUTO;
}

static quant_row_fn pick(const quant_kind *k)
{
#if defined(__x86_64__)
    if (g_path != QUANT_PATH_SCALAR && k->quantize_avx2 && (lpk_cpu_features() & LPK_CPU_AVX2))
        return k->quantize_avx2;
#endif
    return k->quantize_ref;
}

#define CPU_AVX512 (LPK_CPU_AVX512F | LPK_CPU_AVX512BW | LPK_CPU_AVX512VL)

/* The many-block kernel for k (NULL: rows go through pick(k)); weighted: the
 * rows come with importance weights. */
static quant_blocks_fn pick_blocks(const quant_kind *k, int weighted)
{
#if defined(__x86_64__)
    unsigned f = lpk_cpu_features();
    if (g_path == QUANT_PATH_SCALAR || (weighted && !k->blocks_w)) return NULL;
    if (g_path == QUANT_PATH_AUTO && k->blocks_avx512 && (f & CPU_AVX512) == CPU_AVX512)
        return k->blocks_avx512;
    if (k->blocks_avx2 && (f & LPK_CPU_AVX2)) return k->blocks_avx2;
#else
    (void)k;
    (void)weighted;
#endif
    return NULL;
}

const char *quant_path_name(int type)
{
    const quant_kind *k = quant_kind_get(type);
    if (!k) return "scalar";
    quant_blocks_fn bf = pick_blocks(k, 0);
    if (bf) return bf == k->blocks_avx512 ? "avx512" : "avx2";
    return pick(k) == k->quantize_ref ? "scalar" : "avx2";
}

/* ---------------------------------------------------------------- quantize */
/* Index of the first non-finite value in x[0..n), or -1. */
static int64_t first_bad(const float *x, int64_t n)
{
    int any = 0;
#if defined(__x86_64__)
    if (lpk_cpu_features() & LPK_CPU_AVX2) {
        any = quant_avx2_any_nonfinite(x, n);
    } else
#endif
    {
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            any |= (u & 0x7f800000u) == 0x7f800000u;
        }
    }
    if (!any) return -1;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* One row of src (f32, f16 or bf16) as f32: the row itself when it is f32,
 * else converted into buf. */
static const float *row_f32(int src_type, const void *src, int64_t r, int64_t ncols, float *buf)
{
    if (src_type == LPK_TYPE_F32) return (const float *)src + r * ncols;
    const uint16_t *h = (const uint16_t *)src + r * ncols;
    if (src_type == LPK_TYPE_F16)
        lpk_f16_to_f32_row(h, buf, (size_t)ncols);
    else
        lpk_bf16_to_f32_row(h, buf, (size_t)ncols);
    return buf;
}

/* nb blocks of type ti through a many-block kernel: whole groups of QI_GROUP
 * in place, the rest converted to f32 and padded with zero blocks (their
 * weights copied out of the period) into one more group whose first blocks are
 * kept; super-blocks in one call (their kernels take any count). lanes: NULL,
 * or the zeroed error lanes (quant_err_acc) of the run's rows of bpr blocks,
 * which the 32-block kernels fill. */
static int run_blocks(quant_blocks_fn bf, const void *x, int st, const float *w, int64_t wn,
                      uint8_t *dst, int64_t nb, const lpk_type_info *ti, double *lanes,
                      int64_t bpr)
{
    size_t bsize = (size_t)ti->type_size;
    if (ti->block_size == QK_K) return bf(x, st, w, wn, dst, nb, NULL); /* any count */
    int64_t full = nb / QI_GROUP * QI_GROUP, r = nb - full;
    size_t es = st == LPK_TYPE_F32 ? 4 : 2;
    quant_err_acc ea = {lanes, bpr, 0, full};
    int bad = full ? bf(x, st, w, wn, dst, full, lanes ? &ea : NULL) : 0;
    if (!r) return bad;
    float t[QI_GROUP * 32], tw[QI_GROUP * 32];
    uint8_t tb[QI_GROUP * 64];
    lpk_to_f32_row(st, (const char *)x + (size_t)full * 32 * es, t, (size_t)r * 32);
    memset(t + 32 * r, 0, (size_t)(QI_GROUP - r) * 32 * sizeof(float));
    if (w)
        for (int64_t j = 0; j < QI_GROUP * 32; j++) tw[j] = w[(full * 32 + j) % wn];
    ea.k0 = full;
    ea.nv = r;
    bad |= bf(t, LPK_TYPE_F32, w ? tw : NULL, QI_GROUP * 32, tb, QI_GROUP, lanes ? &ea : NULL);
    memcpy(dst + (size_t)full * bsize, tb, (size_t)r * bsize);
    return bad;
}

/* How a row's values are weighted under QUANT_ROWS_OUTPUT_WEIGHTING or
 * QUANT_ROWS_LOOKUP: a magnitude term (flat: 1; else k < 0 |x|, k >= 0
 * sqrt(k sigma^2 + x^2)) times the column's importance raised to im_pow (1:
 * as given; 0.5: its square root). */
typedef struct {
    double k;
    int flat;
    double im_pow;
} ow_rule;

/* The per-value weights of one row x[n] under rule r (docs/QUANT.md,
 * "Weighting"); im NULL: importance 1; sigma^2 the row's mean square (summed in
 * double, in index order). */
static void output_weights(const float *x, const float *im, int64_t n, ow_rule r, float *w)
{
    if (!im && !r.flat && r.k < 0) {
        /* |x| alone: the same floats without the round trip through double
         * (a NaN or an Inf saturates to FLT_MAX as below) */
#if defined(__x86_64__)
        if (g_path != QUANT_PATH_SCALAR && (lpk_cpu_features() & LPK_CPU_AVX2)) {
            quant_avx2_abs_weights(x, w, n);
            return;
        }
#endif
        for (int64_t i = 0; i < n; i++) {
            float a = fabsf(x[i]);
            w[i] = a < FLT_MAX ? a : FLT_MAX;
        }
        return;
    }
    double s2 = 0;
    if (!r.flat && r.k >= 0) {
        for (int64_t i = 0; i < n; i++) s2 += (double)x[i] * x[i];
        s2 = r.k * s2 / (double)n;
    }
    for (int64_t i = 0; i < n; i++) {
        double a = r.flat ? 1.0 : r.k >= 0 ? sqrt(s2 + (double)x[i] * x[i]) : fabs((double)x[i]);
        double v = !im ? a
                   : r.im_pow == 1.0 ? (double)im[i] * a
                   : r.im_pow == 0.5 ? sqrt((double)im[i]) * a
                                     : pow((double)im[i], r.im_pow) * a;
        /* in double and saturated: rows near FLT_MAX keep finite weights */
        w[i] = v < FLT_MAX ? (float)v : FLT_MAX;
    }
}

/* The output_weights rule of a type, or 0 when the type takes the importance
 * alone (or no weights). Measured on llama2-20m (docs/QUANT.md, "Weighting"):
 * without a matrix |x| for the super-block types and nothing for the 32-block
 * types; with one the importance times sqrt(sigma^2 / 4 + x^2) for every type
 * but q5_k (sqrt(sigma^2 + x^2)), q2_k (the importance's square root times
 * |x|) and iq4_nl (the importance to the power 1/10, no magnitude term); the
 * output matrix at iq4_nl/iq4_xs the importance alone; a lookup table
 * sqrt(sigma^2 + x^2) for the k-quants, |x| for iq4_xs, nothing for the
 * 32-block types. */
static int output_rule(int type, int has_im, unsigned flags, ow_rule *r)
{
    r->flat = 0;
    r->im_pow = 1.0;
    if (!(flags & (QUANT_ROWS_OUTPUT_WEIGHTING | QUANT_ROWS_LOOKUP)) || !quant_kind_get(type))
        return 0;
    int super = lpk_type_get(type)->block_size >= QK_K;
    if (flags & QUANT_ROWS_LOOKUP) {
        r->k = type == LPK_TYPE_IQ4_XS ? -1.0 : 1.0;
        return super;
    }
    if (!has_im) {
        r->k = -1.0;
        return super;
    }
    int iq4 = type == LPK_TYPE_IQ4_NL || type == LPK_TYPE_IQ4_XS;
    if (iq4 && (flags & QUANT_ROWS_HEAD)) return 0;
    r->k = type == LPK_TYPE_Q5_K ? 1.0 : type == LPK_TYPE_Q2_K ? -1.0 : 0.25;
    r->im_pow = type == LPK_TYPE_Q2_K ? 0.5 : type == LPK_TYPE_IQ4_NL ? 0.1 : 1.0;
    r->flat = type == LPK_TYPE_IQ4_NL;
    return 1;
}

int quant_quantize_rows_from(int type, int src_type, const void *src, int64_t nrows,
                             int64_t ncols, void *dst, const float *imatrix, lpk_error *err)
{
    return quant_quantize_rows_ex(type, src_type, src, nrows, ncols, dst, imatrix, 0, err);
}

int quant_quantize_rows_ex(int type, int src_type, const void *src, int64_t nrows,
                           int64_t ncols, void *dst, const float *imatrix, unsigned flags,
                           lpk_error *err)
{
    return quant_quantize_rows_err(type, src_type, src, nrows, ncols, dst, imatrix, NULL, flags,
                                   NULL, NULL, err);
}

int quant_type_uses_cov(int type) { return quant_cov_supports(type) || quant_cov_polishes(type); }

/* cov32 as quant_quantize_rows_err takes it: finite, each block's diagonal
 * >= 0. */
static int check_cov32(const float *cov32, int64_t ncols, lpk_error *err)
{
    for (int64_t b = 0; b < ncols / 32; b++) {
        const float *C = cov32 + 1024 * b;
        for (int i = 0; i < 32; i++)
            for (int j = 0; j < 32; j++) {
                float v = C[32 * i + j];
                if (!isfinite(v) || (i == j && v < 0))
                    return lpk_err(err, LPK_EINVAL, "covariance block %lld: value (%d, %d) "
                                   "is %g", (long long)b, i, j, (double)v);
            }
    }
    return LPK_OK;
}

static void deq_row(int type, const void *in, int64_t ncols, float *y);
static void err_row(const float *x, const float *y, int64_t n, double *e, double *s);
static void err_lanes_sum(const double *le, const double *ls, double *e, double *s);

int quant_quantize_rows_err(int type, int src_type, const void *src, int64_t nrows,
                            int64_t ncols, void *dst, const float *imatrix, const float *cov32,
                            unsigned flags, double *sse, double *ssx, lpk_error *err)
{
    const lpk_type_info *ti = lpk_type_get(type);
    if (!ti || !quant_row_fits(type, ncols) || nrows < 0)
        return lpk_err(err, LPK_EINVAL, "cannot quantize rows of %lld values to type %s",
                       (long long)ncols, ti ? ti->name : "(unknown)");
    if (!is_plain(src_type))
        return lpk_err(err, LPK_EINVAL, "cannot quantize from source type %d", src_type);
    if (imatrix) {
        for (int64_t c = 0; c < ncols; c++)
            if (!(imatrix[c] >= 0.0f) || !isfinite(imatrix[c]))
                return lpk_err(err, LPK_EINVAL, "importance weight of column %lld is %g",
                               (long long)c, (double)imatrix[c]);
    }
    /* the covariance search replaces the weights and every kernel */
    int cv = cov32 && quant_cov_supports(type);
    /* the super-block types: their own search, then the values moved under C */
    int pol = cov32 && quant_cov_polishes(type);
    if (cv || pol) {
        int rc = check_cov32(cov32, ncols, err);
        if (rc) return rc;
    }
    const quant_kind *k = quant_kind_get(type);
    /* per-value weights from the rows (q8_0 without an importance matrix is
     * rounding noise: it stays a one-pass type) */
    ow_rule ok = {0, 0, 1.0};
    int ow = cv ? 0 : output_rule(type, imatrix != NULL, flags, &ok);
    quant_row_fn fn = k ? pick(k) : NULL;
    quant_blocks_fn bf = k && !cv ? pick_blocks(k, imatrix || ow) : NULL;
    size_t row_bytes = (size_t)(ncols / ti->block_size) * (size_t)ti->type_size;
    int64_t bad_row = -1, bad_col = -1;
    float bad_val = 0.0f;
    int failed = 0;
    /* threads only when there is enough work to pay for waking them: the
     * one-pass types (q8_0 without weights, f32/f16/bf16) run ~20x faster than
     * the searches */
    int cheap = !k || (type == LPK_TYPE_Q8_0 && !imatrix && !ow);
    int par = nrows > 1 && nrows * ncols >= (cheap ? (int64_t)1 << 21 : (int64_t)1 << 16);
    /* work items of whole rows: 16 rows, or for the many-block kernels (a chunk
     * of rows is one run of blocks) about 32K values of the one-pass q8_0 and 8K
     * of the searches (~15 us each: enough items that a thread can take over
     * the work of one the OS has descheduled), 16K of the super-block types
     * (64 super-blocks: few lanes left empty where a row ends a group) */
    int64_t per = 16, item = cheap ? 32768 : ti->block_size == QK_K ? 16384 : 8192;
    if (bf) per = ncols >= item ? 1 : item / ncols;
    int64_t nchunks = nrows > 0 ? (nrows + per - 1) / per : 0;
    size_t es = src_type == LPK_TYPE_F32 ? 4 : 2;
    /* the error sums of each row (sse/ssx asked for), added in row order at the end */
    double *part = sse && ssx ? malloc((size_t)(nrows > 0 ? nrows : 1) * 2 * sizeof(double))
                              : NULL;
    if (sse && ssx && !part)
        return lpk_err(err, LPK_ENOMEM, "out of memory for the error sums of %lld rows",
                       (long long)nrows);
    /* the 32-block kernels add up the error lanes of a chunk's rows while they
     * quantize (quant_err_acc): no second pass over the rows */
    int fuse = part && bf && ti->block_size == 32 && !pol;
#pragma omp parallel if (par)
    {
        /* f16/bf16 rows are converted one at a time into a per-thread buffer
         * that stays in cache for the NaN check and the quantizer */
        float *buf = src_type == LPK_TYPE_F32 ? NULL : malloc((size_t)ncols * sizeof(float));
        /* weights of a chunk of rows (the many-block kernels take them with
         * the chunk as period) or of one row */
        float *wb = ow ? malloc((size_t)(bf ? per : 1) * (size_t)ncols * sizeof(float)) : NULL;
        /* a quantized row dequantized again, for the error sums */
        float *yb = part ? malloc((size_t)ncols * sizeof(float)) : NULL;
        /* the error lanes of a chunk's rows, when the kernel adds them up */
        double *lb = fuse ? malloc((size_t)per * 2 * QUANT_ERR_LANES * sizeof(double)) : NULL;
        int nomem = (src_type != LPK_TYPE_F32 && !buf) || (ow && !wb) || (part && !yb) ||
                    (fuse && !lb);
        if (nomem) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < nchunks; ch++) {
            int64_t r0 = ch * per, r1 = r0 + per < nrows ? r0 + per : nrows;
            if (nomem) continue;
            const float *bw = imatrix;
            int64_t bwn = ncols;
            if (bf && ow) {
                /* (a NaN/Inf gives NaN weights; the kernel then reports the rows) */
                for (int64_t r = r0; r < r1; r++)
                    output_weights(row_f32(src_type, src, r, ncols, buf), imatrix, ncols, ok,
                                   wb + (r - r0) * ncols);
                bw = wb;
                bwn = (r1 - r0) * ncols;
            }
            if (fuse) memset(lb, 0, (size_t)(r1 - r0) * 2 * QUANT_ERR_LANES * sizeof(double));
            /* on NaN/Inf the rows are walked one by one to name the first */
            int done = bf && !run_blocks(bf, (const char *)src + (size_t)(r0 * ncols) * es,
                                         src_type, bw, bwn, (uint8_t *)dst + (size_t)r0 * row_bytes,
                                         (r1 - r0) * ncols / ti->block_size, ti, lb,
                                         ncols / ti->block_size);
            if (done && fuse) {
                for (int64_t r = r0; r < r1; r++) {
                    const double *l = lb + (r - r0) * 2 * QUANT_ERR_LANES;
                    err_lanes_sum(l, l + QUANT_ERR_LANES, &part[2 * r], &part[2 * r + 1]);
                }
                continue;
            }
            if (done && !part && !pol) continue;
            for (int64_t r = r0; r < r1; r++) {
                const float *x = row_f32(src_type, src, r, ncols, buf);
                uint8_t *out = (uint8_t *)dst + (size_t)r * row_bytes;
                if (done) {
                    if (pol) quant_cov_polish_row(type, x, cov32, out, ncols);
                    if (!part) continue;
                    /* the rows in cache again: dequantized and compared */
                    deq_row(type, out, ncols, yb);
                    err_row(x, yb, ncols, &part[2 * r], &part[2 * r + 1]);
                    continue;
                }
                int64_t c = first_bad(x, ncols);
                if (c >= 0) {
#pragma omp critical(quant_bad)
                    if (bad_row < 0 || r < bad_row) { bad_row = r; bad_col = c; bad_val = x[c]; }
                    continue;
                }
                switch (type) {
                case LPK_TYPE_F32: memcpy(out, x, (size_t)ncols * 4); break;
                case LPK_TYPE_F16: lpk_f32_to_f16_row(x, (uint16_t *)(void *)out, (size_t)ncols); break;
                case LPK_TYPE_BF16: lpk_f32_to_bf16_row(x, (uint16_t *)(void *)out, (size_t)ncols); break;
                default:
                    if (cv) {
                        quant_cov_row(type, x, cov32, out, ncols);
                        break;
                    }
                    if (ow) output_weights(x, imatrix, ncols, ok, wb);
                    fn(x, ow ? wb : imatrix, out, ncols);
                    if (pol) quant_cov_polish_row(type, x, cov32, out, ncols);
                    break;
                }
                if (part) {
                    deq_row(type, out, ncols, yb);
                    err_row(x, yb, ncols, &part[2 * r], &part[2 * r + 1]);
                }
            }
        }
        free(buf);
        free(wb);
        free(yb);
        free(lb);
    }
    if (part && !failed && bad_row < 0) {
        double e = 0, s2 = 0;
        if (flags & QUANT_ROWS_ADD_ERR) {
            e = *sse;
            s2 = *ssx;
        }
        for (int64_t r = 0; r < nrows; r++) { e += part[2 * r]; s2 += part[2 * r + 1]; }
        *sse = e;
        *ssx = s2;
    }
    free(part);
    if (failed) return lpk_err(err, LPK_ENOMEM, "out of memory for a row of %lld values",
                               (long long)ncols);
    if (bad_row >= 0)
        return lpk_err(err, LPK_EBADVALUE, "%s at row %lld, column %lld",
                       isnan(bad_val) ? "NaN" : (bad_val > 0 ? "+Inf" : "-Inf"),
                       (long long)bad_row, (long long)bad_col);
    return LPK_OK;
}

int quant_quantize_rows(int type, const float *src, int64_t nrows, int64_t ncols, void *dst,
                        const float *imatrix, lpk_error *err)
{
    return quant_quantize_rows_from(type, LPK_TYPE_F32, src, nrows, ncols, dst, imatrix, err);
}

/* ---------------------------------------------------------------- dequantize */
static void deq_row(int type, const void *in, int64_t ncols, float *y)
{
    const quant_kind *k = quant_kind_get(type);
#if defined(__x86_64__)
    const unsigned f16c = LPK_CPU_AVX2 | LPK_CPU_F16C;
    if (k && g_path != QUANT_PATH_SCALAR && (lpk_cpu_features() & f16c) == f16c) {
        dequant_row_fn v = type == LPK_TYPE_Q4_0 ? quant_avx2_deq_q4_0
                           : type == LPK_TYPE_Q4_1 ? quant_avx2_deq_q4_1
                           : type == LPK_TYPE_Q5_0 ? quant_avx2_deq_q5_0
                           : type == LPK_TYPE_Q5_1 ? quant_avx2_deq_q5_1
                           : type == LPK_TYPE_Q8_0 ? quant_avx2_deq_q8_0 : NULL;
        if (v) {
            v(in, y, ncols);
            return;
        }
    }
#endif
    if (k)
        k->dequantize(in, y, ncols);
    else
        lpk_to_f32_row(type, in, y, (size_t)ncols);
}

int quant_dequantize_rows(int type, const void *src, int64_t nrows, int64_t ncols, float *dst)
{
    const lpk_type_info *ti = lpk_type_get(type);
    if (!ti || !quant_row_fits(type, ncols) || nrows < 0)
        return LPK_EINVAL;
    size_t row_bytes = (size_t)(ncols / ti->block_size) * (size_t)ti->type_size;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nrows; r++)
        deq_row(type, (const uint8_t *)src + (size_t)r * row_bytes, ncols, dst + r * ncols);
    return LPK_OK;
}

/* The error sums of one row, (x - y)^2 and x^2, in double: value c goes to
 * lane c mod QUANT_ERR_LANES (each lane in index order), then the lanes are
 * added in order. The lanes are independent chains, so the vector paths run
 * them at full width with the same figures as this loop, bit for bit. */
static void err_row(const float *x, const float *y, int64_t n, double *e, double *s)
{
    double le[QUANT_ERR_LANES], ls[QUANT_ERR_LANES];
    int64_t c = 0, nl = n / QUANT_ERR_LANES * QUANT_ERR_LANES;
#if defined(__x86_64__)
    if (g_path == QUANT_PATH_AUTO && (lpk_cpu_features() & CPU_AVX512) == CPU_AVX512) {
        quant_avx512_err_lanes(x, y, nl, le, ls);
        c = nl;
    } else if (g_path != QUANT_PATH_SCALAR && (lpk_cpu_features() & LPK_CPU_AVX2)) {
        quant_avx2_err_lanes(x, y, nl, le, ls);
        c = nl;
    }
#endif
    if (!c)
        for (int j = 0; j < QUANT_ERR_LANES; j++) le[j] = ls[j] = 0;
    for (; c < n; c++) {
        double d = (double)x[c] - (double)y[c];
        le[c % QUANT_ERR_LANES] += d * d;
        ls[c % QUANT_ERR_LANES] += (double)x[c] * x[c];
    }
    err_lanes_sum(le, ls, e, s);
}

/* A row's error sums from its lanes, added in order. */
static void err_lanes_sum(const double *le, const double *ls, double *e, double *s)
{
    double se = 0, ss = 0;
    for (int j = 0; j < QUANT_ERR_LANES; j++) { se += le[j]; ss += ls[j]; }
    *e = se;
    *s = ss;
}

int quant_error(int type, const float *src, const void *q, int64_t nrows, int64_t ncols,
                double *sse, double *ssx)
{
    const lpk_type_info *ti = lpk_type_get(type);
    if (!ti || !quant_row_fits(type, ncols) || nrows < 0)
        return LPK_EINVAL;
    size_t row_bytes = (size_t)(ncols / ti->block_size) * (size_t)ti->type_size;
    double *part = malloc((size_t)(nrows > 0 ? nrows : 1) * 2 * sizeof(double));
    if (!part) return LPK_ENOMEM;
    int failed = 0;
#pragma omp parallel
    {
        float *y = malloc((size_t)ncols * sizeof(float));
        if (!y) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nrows; r++) {
            if (!y) continue;
            deq_row(type, (const uint8_t *)q + (size_t)r * row_bytes, ncols, y);
            err_row(src + r * ncols, y, ncols, &part[2 * r], &part[2 * r + 1]);
        }
        free(y);
    }
    if (failed) { free(part); return LPK_ENOMEM; }
    double e = 0, s = 0;
    for (int64_t r = 0; r < nrows; r++) { e += part[2 * r]; s += part[2 * r + 1]; }
    free(part);
    *sse = e;
    *ssx = s;
    return LPK_OK;
}
