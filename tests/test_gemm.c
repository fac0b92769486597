/* verify/'s batched matmul (vf_matmul) against an independent computation
 * written from the block format definitions, across every kernel path and
 * thread count. */
#include "tutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../verify/vf_gemm.h"

static const int all_types[] = {LPK_TYPE_F32, LPK_TYPE_F16, LPK_TYPE_BF16, LPK_TYPE_Q8_0,
                                LPK_TYPE_Q4_0, LPK_TYPE_Q4_1, LPK_TYPE_Q5_0, LPK_TYPE_Q5_1,
                                LPK_TYPE_Q4_K, LPK_TYPE_Q6_K, LPK_TYPE_Q5_K, LPK_TYPE_Q3_K,
                                LPK_TYPE_Q2_K, LPK_TYPE_IQ4_NL, LPK_TYPE_IQ4_XS};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static float get_half(const uint8_t *p) { return lpk_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static int is_k(int t) { return lpk_type_get(t)->block_size == 256; }
/* q5_k, q3_k, q2_k, iq4_xs: super-block scales (d, dmin) and integer sub-block
 * scale / min of element i (0..255) of block b, from GGML's layouts. */
static int is_kg(int t)
{
    return t == LPK_TYPE_Q5_K || t == LPK_TYPE_Q3_K || t == LPK_TYPE_Q2_K || t == LPK_TYPE_IQ4_XS;
}
static const int kv_nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
static void kg_elem(int t, const uint8_t *b, int i, double *d, double *dmin, int *sc, int *mi, int *q)
{
    *dmin = 0;
    *mi = 0;
    switch (t) {
    case LPK_TYPE_Q5_K: {
        const uint8_t *s = b + 4, *qh = b + 16, *qs = b + 48;
        int j = i / 32, c = i / 64, l = i % 32, hi = (i % 64) >= 32;
        if (j < 4) { *sc = s[j] & 63; *mi = s[j + 4] & 63; }
        else {
            *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
            *mi = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        *q = ((qs[32 * c + l] >> (hi ? 4 : 0)) & 15) | ((qh[l] >> (2 * c + hi)) & 1) << 4;
        *d = get_half(b);
        *dmin = get_half(b + 2);
        break;
    }
    case LPK_TYPE_Q2_K:
        *sc = b[i / 16] & 15;
        *mi = b[i / 16] >> 4;
        *q = (b[16 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        *d = get_half(b + 80);
        *dmin = get_half(b + 82);
        break;
    case LPK_TYPE_Q3_K: {
        const uint8_t *s = b + 96;
        int j = i / 16;
        int u = ((j < 8 ? s[j] : s[j - 8] >> 4) & 15) | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4;
        *sc = u - 32;
        int lo = (b[32 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        *q = lo + 4 * ((b[i % 32] >> (i / 32)) & 1) - 4;
        *d = get_half(b + 108);
        break;
    }
    default: { /* iq4_xs */
        int j = i / 32, l = i % 32;
        int sh = b[2] | b[3] << 8;
        *sc = (((b[4 + j / 2] >> (4 * (j % 2))) & 15) | ((sh >> (2 * j)) & 3) << 4) - 32;
        uint8_t byte = b[8 + 16 * j + l % 16];
        *q = kv_nl[l < 16 ? (byte & 15) : (byte >> 4)];
        *d = get_half(b);
        break;
    }
    }
}
static int is_fp(int t) { return t == LPK_TYPE_F32 || t == LPK_TYPE_F16 || t == LPK_TYPE_BF16; }

static size_t row_bytes(int t, int64_t n_in)
{
    uint64_t n = 0;
    assert_int_equal(lpk_type_nbytes(t, (uint64_t)n_in, &n), LPK_OK);
    return (size_t)n;
}

static void put_half(uint8_t *p, float v)
{
    uint16_t h = lpk_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}


/* Random but valid weights: random quant bytes, scales of a realistic size.
 * Weight magnitudes vary per row so rows differ in scale. */
static uint8_t *make_weights(int t, int64_t n_out, int64_t n_in, uint64_t seed)
{
    size_t rb = row_bytes(t, n_in);
    uint8_t *w = malloc(rb * (size_t)n_out);
    uint64_t s = seed;
    for (size_t i = 0; i < rb * (size_t)n_out; i++) w[i] = (uint8_t)tu_rand(&s);
    const lpk_type_info *ti = lpk_type_get(t);
    for (int64_t o = 0; o < n_out; o++) {
        uint8_t *row = w + (size_t)o * rb;
        float rs = 0.02f * (1.0f + (float)(o % 7));
        int64_t nb = n_in / ti->block_size;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *blk = row + b * ti->type_size;
            switch (t) {
            case LPK_TYPE_F32: { float v = tu_randn(&s) * rs; memcpy(blk, &v, 4); break; }
            case LPK_TYPE_F16: put_half(blk, tu_randn(&s) * rs); break;
            case LPK_TYPE_BF16: {
                uint16_t h = lpk_f32_to_bf16(tu_randn(&s) * rs);
                blk[0] = (uint8_t)h; blk[1] = (uint8_t)(h >> 8); break;
            }
            case LPK_TYPE_Q8_0: case LPK_TYPE_Q4_0: case LPK_TYPE_Q5_0:
                put_half(blk, rs * (0.5f + (float)(tu_rand(&s) % 100) / 100.0f) / 8);
                break;
            case LPK_TYPE_Q4_1: case LPK_TYPE_Q5_1:
                put_half(blk, rs * (0.5f + (float)(tu_rand(&s) % 100) / 100.0f) / 8);
                put_half(blk + 2, -rs * (float)(tu_rand(&s) % 100) / 100.0f);
                break;
            case LPK_TYPE_Q4_K: {
                /* sub-block mins near the middle of the range, as the
                 * quantizer makes them: m * dmin ~ 7.5 * sc * d */
                put_half(blk, rs / 256);
                put_half(blk + 2, rs / 256 * 8);
                uint8_t *sb = blk + 4;
                for (int j = 0; j < 8; j++) {
                    int sc = 32 + (int)(tu_rand(&s) % 32);
                    int mi = sc - 4 + (int)(tu_rand(&s) % 8);
                    mi = mi > 63 ? 63 : mi;
                    if (j < 4) {
                        sb[j] = (uint8_t)((sb[j] & 0xc0) | sc);
                        sb[j + 4] = (uint8_t)((sb[j + 4] & 0xc0) | mi);
                    } else {
                        sb[j + 4] = (uint8_t)((sc & 15) | (mi & 15) << 4);
                        sb[j - 4] = (uint8_t)((sb[j - 4] & 63) | (sc >> 4) << 6);
                        sb[j] = (uint8_t)((sb[j] & 63) | (mi >> 4) << 6);
                    }
                }
                break;
            }
            case LPK_TYPE_Q6_K:
                put_half(blk + 208, rs / 256);
                break;
            case LPK_TYPE_Q5_K:
                /* as q4_k: m * dmin ~ 15.5 * sc * d */
                put_half(blk, rs / 512);
                put_half(blk + 2, rs / 512 * 16);
                break;
            case LPK_TYPE_Q2_K:
                put_half(blk + 80, rs / 16);
                put_half(blk + 82, rs / 16);
                for (int j = 0; j < 16; j++) {
                    int sc = (int)(tu_rand(&s) % 16), mi = (3 * sc) / 2;
                    blk[j] = (uint8_t)(sc | (mi > 15 ? 15 : mi) << 4);
                }
                break;
            case LPK_TYPE_Q3_K: put_half(blk + 108, rs / 64); break;
            case LPK_TYPE_IQ4_NL: put_half(blk, rs / 64); break;
            case LPK_TYPE_IQ4_XS:
                /* sub-block scales -32..-17, as the quantizer's all share a sign
                 * and size */
                put_half(blk, rs / 1024);
                blk[2] = blk[3] = 0;
                break;
            default: break;
            }
        }
    }
    return w;
}

/* ---- independent reference: weights as (integer, scale) per element ----
 * For element e of a row: x = qw[e] * dsc[e] + mn[e] (quantized types), written
 * element by element from the format definitions. */
static void ref_row(int t, const uint8_t *row, int64_t n_in, int32_t *qw, double *dsc, double *mn,
                    double *wf)
{
    for (int64_t e = 0; e < n_in; e++) {
        int32_t q = 0;
        double d = 0, m = 0, f = 0;
        switch (t) {
        case LPK_TYPE_F32: { float v; memcpy(&v, row + 4 * e, 4); f = v; break; }
        case LPK_TYPE_F16: f = get_half(row + 2 * e); break;
        case LPK_TYPE_BF16: f = lpk_bf16_to_f32((uint16_t)(row[2 * e] | row[2 * e + 1] << 8)); break;
        case LPK_TYPE_Q8_0: {
            const uint8_t *b = row + (e / 32) * 34;
            q = (int8_t)b[2 + e % 32];
            d = get_half(b);
            break;
        }
        case LPK_TYPE_Q4_0: case LPK_TYPE_Q4_1: {
            int has_m = t == LPK_TYPE_Q4_1;
            const uint8_t *b = row + (e / 32) * (has_m ? 20 : 18);
            int j = (int)(e % 32);
            uint8_t byte = b[(has_m ? 4 : 2) + j % 16];
            q = j < 16 ? (byte & 15) : (byte >> 4);
            d = get_half(b);
            if (has_m) m = get_half(b + 2); else q -= 8;
            break;
        }
        case LPK_TYPE_Q5_0: case LPK_TYPE_Q5_1: {
            int has_m = t == LPK_TYPE_Q5_1;
            const uint8_t *b = row + (e / 32) * (has_m ? 24 : 22);
            int j = (int)(e % 32);
            const uint8_t *qh = b + (has_m ? 4 : 2);
            uint8_t byte = qh[4 + j % 16];
            int hi = (qh[j / 8] >> (j % 8)) & 1;
            q = (j < 16 ? (byte & 15) : (byte >> 4)) + 16 * hi;
            d = get_half(b);
            if (has_m) m = get_half(b + 2); else q -= 16;
            break;
        }
        case LPK_TYPE_Q4_K: {
            const uint8_t *b = row + (e / 256) * 144;
            int r = (int)(e % 256), c = r / 64, j = r / 32;
            uint8_t byte = b[16 + c * 32 + r % 32];
            q = (r % 64) < 32 ? (byte & 15) : (byte >> 4);
            const uint8_t *s = b + 4;
            int sc, mi;
            if (j < 4) { sc = s[j] & 63; mi = s[j + 4] & 63; }
            else {
                sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
                mi = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
            }
            d = (double)get_half(b) * sc;
            m = -(double)get_half(b + 2) * mi;
            break;
        }
        case LPK_TYPE_Q6_K: {
            const uint8_t *b = row + (e / 256) * 210;
            int r = (int)(e % 256), h = r / 128, rr = r % 128, k = rr / 32, l = rr % 32;
            uint8_t lb = b[h * 64 + (k & 1) * 32 + l];
            int lo = k < 2 ? (lb & 15) : (lb >> 4);
            int hi = (b[128 + h * 32 + l] >> (2 * k)) & 3;
            q = (lo | hi << 4) - 32;
            d = (double)get_half(b + 208) * (int8_t)b[192 + h * 8 + rr / 16];
            break;
        }
        case LPK_TYPE_IQ4_NL: {
            const uint8_t *b = row + (e / 32) * 18;
            int j = (int)(e % 32);
            uint8_t byte = b[2 + j % 16];
            q = kv_nl[j < 16 ? (byte & 15) : (byte >> 4)];
            d = get_half(b);
            break;
        }
        case LPK_TYPE_Q5_K: case LPK_TYPE_Q3_K: case LPK_TYPE_Q2_K: case LPK_TYPE_IQ4_XS: {
            double bd, bdm;
            int sc, mi;
            kg_elem(t, row + (e / 256) * lpk_type_get(t)->type_size, (int)(e % 256), &bd, &bdm,
                    &sc, &mi, &q);
            d = bd * sc;
            m = -bdm * mi;
            break;
        }
        default: break;
        }
        qw[e] = q;
        dsc[e] = d;
        mn[e] = m;
        wf[e] = is_fp(t) ? f : q * d + m;
    }
}

/* Activations quantized the documented way (vf_gemm.h: the bytes of GGML's
 * x86 quantizers). Blocks of 32: q = nearest-even(x * (127 / amax)), d and s
 * the f16 values of amax / 127 and of (amax / 127) * sum q. Blocks of 256:
 * max = the first x of the largest magnitude, is = -127 / max, q =
 * nearest-even(x * is), d = 1 / is (s unused). */
static void ref_quant_x(const float *x, int64_t n, int bs, int32_t *q, double *d, double *s)
{
    for (int64_t b = 0; b < n / bs; b++) {
        const float *v = x + b * bs;
        float amax = 0, max = 0;
        for (int j = 0; j < bs; j++)
            if (fabsf(v[j]) > amax) {
                amax = fabsf(v[j]);
                max = v[j];
            }
        float m = bs == 32 ? 127.0f / amax : -127.0f / max;
        if (amax == 0) m = 0;
        int32_t sum = 0;
        for (int j = 0; j < bs; j++) {
            q[b * bs + j] = (int32_t)nearbyintf(v[j] * m);
            sum += q[b * bs + j];
        }
        if (bs == 32) {
            d[b] = lpk_f16_to_f32(lpk_f32_to_f16(amax / 127.0f));
            s[b] = lpk_f16_to_f32(lpk_f32_to_f16(amax / 127.0f * (float)sum));
        } else {
            d[b] = amax == 0 ? 0.0f : 1.0f / m;
            s[b] = 0;
        }
    }
}

static float *make_x(int64_t n_tok, int64_t n_in, uint64_t seed)
{
    float *x = malloc(sizeof(float) * (size_t)(n_tok * n_in));
    uint64_t s = seed;
    for (int64_t i = 0; i < n_tok * n_in; i++) {
        x[i] = tu_randn(&s);
        if (i % 97 == 0) x[i] *= 8.0f; /* outliers, as real activations have */
    }
    return x;
}

/* Reference y (double) and the bound on its float rounding: int8 path from
 * the integer weights and activations, fp path from exact products. */
static void ref_matmul(int t, const uint8_t *w, int64_t n_out, int64_t n_in, const float *x,
                       int64_t n_tok, double *yq, double *bound, double *yfp)
{
    size_t rb = row_bytes(t, n_in);
    int32_t *qw = malloc(sizeof(int32_t) * (size_t)n_in);
    double *dsc = malloc(sizeof(double) * (size_t)n_in), *mn = malloc(sizeof(double) * (size_t)n_in);
    double *wf = malloc(sizeof(double) * (size_t)n_in);
    /* every token's activations, quantized once */
    int32_t *qxa = malloc(sizeof(int32_t) * (size_t)(n_in * n_tok));
    double *dxa = malloc(sizeof(double) * (size_t)(n_in * n_tok));
    double *sxa = malloc(sizeof(double) * (size_t)(n_in * n_tok));
    int bs = is_k(t) ? 256 : 32;
    if (!is_fp(t))
        for (int64_t tk = 0; tk < n_tok; tk++)
            ref_quant_x(x + tk * n_in, n_in, bs, qxa + tk * n_in, dxa + tk * n_in,
                        sxa + tk * n_in);
    for (int64_t o = 0; o < n_out; o++) {
        ref_row(t, w + (size_t)o * rb, n_in, qw, dsc, mn, wf);
        for (int64_t tk = 0; tk < n_tok; tk++) {
            const float *xr = x + tk * n_in;
            double sfp = 0, afp = 0;
            for (int64_t e = 0; e < n_in; e++) {
                sfp += wf[e] * xr[e];
                afp += fabs(wf[e] * xr[e]);
            }
            yfp[tk * n_out + o] = sfp;
            if (is_fp(t)) {
                yq[tk * n_out + o] = sfp;
                bound[tk * n_out + o] = afp;
                continue;
            }
            const int32_t *qx = qxa + tk * n_in;
            const double *dx = dxa + tk * n_in, *sx = sxa + tk * n_in;
            double sq = 0, aq = 0;
            for (int64_t e = 0; e < n_in; e++) {
                double a = qw[e] * dsc[e] * (double)qx[e] * dx[e / bs];
                /* the mins: per element with q8_K's bsums, per block with
                 * the 32-blocks' s (one m per block) */
                double b = bs == 32 ? (e % 32 == 0 ? mn[e] * sx[e / 32] : 0)
                                    : mn[e] * (double)qx[e] * dx[e / bs];
                sq += a + b;
                aq += fabs(a) + fabs(b);
            }
            yq[tk * n_out + o] = sq;
            bound[tk * n_out + o] = aq;
        }
    }
    free(qw); free(dsc); free(mn); free(wf); free(qxa); free(dxa); free(sxa);
}

static int n_paths(void)
{
    vf_gemm_force_path(-1);
    int best = vf_gemm_path(LPK_TYPE_Q4_0);
    return best + 1;
}

/* ---- tests ---- */

/* The library's activation quantizer (scalar and SIMD) matches the documented
 * rule exactly. */
static void check_quantize_x(void)
{
    int64_t n = 512;
    float *x = make_x(1, n, 11);
    /* block 0: d = 1 exactly, so x = k + 0.5 are rounding ties (to even) */
    x[0] = 127.0f; x[1] = 2.5f; x[2] = 3.5f; x[3] = -2.5f; x[4] = -127.0f; x[5] = 0;
    for (int j = 6; j < 32; j++) x[j] = fmaxf(-100.0f, fminf(100.0f, x[j] * 30.0f));
    /* q8_K block 1: the largest magnitude twice, negative first */
    x[300] = -200.0f;
    x[400] = 200.0f;
    vf_xblk32 xb[16];
    block_q8_K xk[2];
    vf_quantize_x32(x, n, xb);
    vf_quantize_xk(x, n, xk);
    assert_true(xb[0].d == 1.0f);
    assert_int_equal(xb[0].qs[1], 2);
    assert_int_equal(xb[0].qs[2], 4);
    assert_int_equal(xb[0].qs[3], -2);
    /* q8_K: the first value of the largest magnitude is +127 (x[4] = -127
     * comes later), so is = -1 and d = -1: q = -x, ties to even */
    assert_true(xk[0].d == -1.0f);
    assert_int_equal(xk[0].qs[0], -127);
    assert_int_equal(xk[0].qs[1], -2);
    assert_int_equal(xk[0].qs[2], -4);
    assert_int_equal(xk[0].qs[4], 127);
    assert_true(xk[1].d == 1.0f / (127.0f / 200.0f));
    assert_int_equal(xk[1].qs[300 - 256], -127);
    assert_int_equal(xk[1].qs[400 - 256], 127);
    int32_t q[512];
    double d[16], sr[16];
    ref_quant_x(x, n, 32, q, d, sr);
    for (int b = 0; b < 16; b++) {
        assert_true(xb[b].d == (float)d[b]);
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) { assert_int_equal(xb[b].qs[j], q[b * 32 + j]); sum += q[b * 32 + j]; }
        assert_int_equal(xb[b].sum, sum);
        assert_true(xb[b].s == (float)sr[b]);
    }
    ref_quant_x(x, n, 256, q, d, sr);
    for (int b = 0; b < 2; b++) {
        assert_true(xk[b].d == (float)d[b]);
        for (int j = 0; j < 256; j++) assert_int_equal(xk[b].qs[j], q[b * 256 + j]);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += q[b * 256 + g * 16 + j];
            assert_int_equal(xk[b].bsums[g], s);
        }
    }
    /* an all-zero block quantizes to zeros with d = 0 */
    float z[32] = {0};
    vf_quantize_x32(z, 32, xb);
    assert_true(xb[0].d == 0.0f);
    for (int j = 0; j < 32; j++) assert_int_equal(xb[0].qs[j], 0);
    free(x);
}

static void test_quantize_x(void **state)
{
    (void)state;
    for (int p = 0; p < n_paths(); p++) {
        vf_gemm_force_path(p);
        check_quantize_x();
    }
    vf_gemm_force_path(-1);
}

/* Integer parts of every block type equal the sums computed from the format
 * definitions. */
static void test_block_ints(void **state)
{
    (void)state;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        if (is_fp(t)) continue;
        int64_t n_in = 1024;
        int bs = is_k(t) ? 256 : 32;
        uint8_t *w = make_weights(t, 4, n_in, 100 + ti);
        float *x = make_x(1, n_in, 200 + ti);
        vf_xblk32 xb[32];
        block_q8_K xk[4];
        vf_quantize_x32(x, n_in, xb);
        vf_quantize_xk(x, n_in, xk);
        int32_t qw[1024], qx[1024];
        double dsc[1024], mn[1024], wf[1024], dx[32], sx[32];
        ref_quant_x(x, n_in, bs, qx, dx, sx);
        const lpk_type_info *inf = lpk_type_get(t);
        for (int o = 0; o < 4; o++) {
            const uint8_t *row = w + (size_t)o * row_bytes(t, n_in);
            ref_row(t, row, n_in, qw, dsc, mn, wf);
            for (int b = 0; b < n_in / bs; b++) {
                int32_t got[2];
                const void *xblk = is_k(t) ? (const void *)&xk[b] : (const void *)&xb[b];
                assert_int_equal(vf_block_ints(t, row + b * inf->type_size, xblk, got), LPK_OK);
                int32_t want0 = 0, want1 = 0;
                if (t == LPK_TYPE_Q4_K) {
                    /* sumi = sum sc * q * qx; summ = sum m * qx (sc, m integers) */
                    const uint8_t *s = row + b * 144 + 4;
                    for (int j = 0; j < 8; j++) {
                        int sc, mi;
                        if (j < 4) { sc = s[j] & 63; mi = s[j + 4] & 63; }
                        else {
                            sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
                            mi = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
                        }
                        for (int l = 0; l < 32; l++) {
                            int e = b * 256 + j * 32 + l;
                            want0 += sc * qw[e] * qx[e];
                            want1 += mi * qx[e];
                        }
                    }
                } else if (t == LPK_TYPE_Q6_K) {
                    for (int e = b * 256; e < b * 256 + 256; e++) {
                        int sc = (int8_t)row[b * 210 + 192 + (e % 256) / 16];
                        want0 += sc * qw[e] * qx[e];
                    }
                } else if (is_kg(t)) {
                    for (int i = 0; i < 256; i++) {
                        double d, dmin;
                        int sc, mi, q;
                        kg_elem(t, row + b * inf->type_size, i, &d, &dmin, &sc, &mi, &q);
                        want0 += sc * q * qx[b * 256 + i];
                        want1 += mi * qx[b * 256 + i];
                    }
                } else {
                    for (int e = b * 32; e < b * 32 + 32; e++) want0 += qw[e] * qx[e];
                }
                assert_int_equal(got[0], want0);
                assert_int_equal(got[1], want1);
            }
        }
        free(w);
        free(x);
    }
}

/* vf_matmul against the double-precision reference, for every type and path,
 * on odd shapes. */
static void check_against_ref(int64_t n_out, int64_t n_in, int64_t n_tok)
{
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        if (n_in % lpk_type_get(t)->block_size) continue;
        uint8_t *w = make_weights(t, n_out, n_in, 1000 + ti);
        float *x = make_x(n_tok, n_in, 2000 + ti);
        size_t ny = (size_t)(n_out * n_tok);
        double *yq = malloc(ny * sizeof(double)), *bd = malloc(ny * sizeof(double));
        double *yfp = malloc(ny * sizeof(double));
        ref_matmul(t, w, n_out, n_in, x, n_tok, yq, bd, yfp);
        float *y = malloc(ny * sizeof(float)), *y0 = malloc(ny * sizeof(float));
        for (int p = 0; p < n_paths(); p++) {
            vf_gemm_force_path(p);
            if (vf_gemm_path(t) != p) continue;
            if (getenv("GEMM_DEBUG")) print_message("%s path %s\n", lpk_type_get(t)->name, vf_gemm_path_name(t));
            memset(y, 0xff, ny * sizeof(float));
            assert_int_equal(vf_matmul(w, t, n_out, n_in, x, n_tok, y), LPK_OK);
            double num = 0, den = 0;
            for (size_t i = 0; i < ny; i++) {
                /* worst-case float rounding: a few roundings per block term,
                 * one per step of the running sum */
                double nb = (double)(n_in / lpk_type_get(t)->block_size);
                double tol = 1.2e-7 * (nb + 4) * bd[i] + 1e-30;
                if (!(fabs(y[i] - yq[i]) <= tol))
                    fail_msg("%s path %d [%zu]: got %.9g want %.9g (tol %.3g)",
                             lpk_type_get(t)->name, p, i, y[i], yq[i], tol);
                num += (y[i] - yfp[i]) * (y[i] - yfp[i]);
                den += yfp[i] * yfp[i];
            }
            /* int8 activations cost ~1% relative error against fp32 with one
             * scale per 32 elements, a few % with one per 256 (the test's
             * activations have 8-sigma outliers that set the scale) */
            double rel = sqrt(num / den);
            if (getenv("GEMM_DEBUG")) print_message("%s rel %.4g\n", lpk_type_get(t)->name, rel);
            /* fp32: rounding of a running sum, growing like sqrt(n_in) */
            double fp_tol = fmax(1e-6, 3e-8 * sqrt((double)n_in));
            if (!(rel < (is_fp(t) ? fp_tol : is_k(t) ? 0.1 : 0.03)))
                fail_msg("%s: relative error vs fp32 %.4g", lpk_type_get(t)->name, rel);
            /* every path gives the same bits as the scalar reference */
            if (p == 0) memcpy(y0, y, ny * sizeof(float));
            else if (memcmp(y0, y, ny * sizeof(float)) != 0) {
                size_t i = 0;
                while (memcmp(&y0[i], &y[i], 4) == 0) i++;
                fail_msg("%s: path %s differs from scalar at %zu: %.9g vs %.9g",
                         lpk_type_get(t)->name, vf_gemm_path_name(t), i, y[i], y0[i]);
            }
        }
        vf_gemm_force_path(-1);
        free(w); free(x); free(yq); free(bd); free(yfp); free(y); free(y0);
    }
}

static void test_shapes_small(void **state)
{
    (void)state;
    check_against_ref(5, 256, 1);
    check_against_ref(17, 512, 3);
    check_against_ref(33, 96, 4);   /* 32-blocks only */
}

static void test_shapes_odd(void **state)
{
    (void)state;
    check_against_ref(37, 256, 13);
    check_against_ref(3, 768, 513);
    /* the VNNI kernels walk the input in chunks (64 32-blocks, 8
     * super-blocks): three chunks, the last partial; 53 rows = one full work
     * item of 48 and a partial one; 17 tokens = a group of 16 and a partial one */
    check_against_ref(53, 4352, 17);
}

/* Thread count does not change a bit. */
static void test_threads(void **state)
{
    (void)state;
#ifdef _OPENMP
    int64_t n_out = 75, n_in = 512, n_tok = 21;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        uint8_t *w = make_weights(t, n_out, n_in, 3000 + ti);
        float *x = make_x(n_tok, n_in, 4000 + ti);
        size_t ny = (size_t)(n_out * n_tok);
        float *y1 = malloc(ny * 4), *y2 = malloc(ny * 4);
        int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        assert_int_equal(vf_matmul(w, t, n_out, n_in, x, n_tok, y1), LPK_OK);
        omp_set_num_threads(2);
        assert_int_equal(vf_matmul(w, t, n_out, n_in, x, n_tok, y2), LPK_OK);
        omp_set_num_threads(saved);
        assert_memory_equal(y1, y2, ny * 4);
        free(w); free(x); free(y1); free(y2);
    }
#else
    skip();
#endif
}

/* Offsets of the f16 scale fields (d, and dmin or 0) in a block of t. */
static int scale_fields(int t, int off[2])
{
    off[1] = -1;
    switch (t) {
    case LPK_TYPE_Q4_1: case LPK_TYPE_Q5_1: case LPK_TYPE_Q4_K: case LPK_TYPE_Q5_K:
        off[0] = 0; off[1] = 2; return 2;
    case LPK_TYPE_Q6_K: off[0] = 208; return 1;
    case LPK_TYPE_Q3_K: off[0] = 108; return 1;
    case LPK_TYPE_Q2_K: off[0] = 80; off[1] = 82; return 2;
    default: off[0] = 0; return 1;
    }
}

/* The integer sums at their extremes: every block filled with one byte
 * pattern (largest and smallest weights and scales of every type, the sign
 * mixes in between), activations at +-127 with the weights' signs, against
 * them, or all one sign. An int16 step that overflowed in a SIMD kernel would
 * show as a difference from the scalar reference. */
static void test_extremes(void **state)
{
    (void)state;
    static const uint8_t pat[] = {0x00, 0xff, 0x55, 0xaa, 0x77, 0x88, 0x0f, 0xf0, 0x80, 0x7f};
    const int64_t n_out = 37, n_in = 512, n_tok = 4;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        if (is_fp(t)) continue;
        const lpk_type_info *inf = lpk_type_get(t);
        size_t rb = row_bytes(t, n_in), ny = (size_t)(n_out * n_tok);
        uint8_t *w = malloc(rb * (size_t)n_out);
        float *x = malloc(sizeof(float) * (size_t)(n_in * n_tok));
        float *y = malloc(ny * sizeof(float)), *y0 = malloc(ny * sizeof(float));
        int32_t *qw = malloc(sizeof(int32_t) * (size_t)n_in);
        double *dsc = malloc(sizeof(double) * (size_t)n_in), *mn = malloc(sizeof(double) * (size_t)n_in);
        double *wf = malloc(sizeof(double) * (size_t)n_in);
        for (size_t pi = 0; pi < sizeof pat; pi++) {
            memset(w, pat[pi], rb * (size_t)n_out);
            int off[2], nf = scale_fields(t, off);
            for (int64_t o = 0; o < n_out; o++)
                for (int64_t b = 0; b < n_in / inf->block_size; b++)
                    for (int f = 0; f < nf; f++)
                        put_half(w + (size_t)o * rb + b * inf->type_size + off[f], f ? 0.5f : 0.25f + 0.01f * (float)o);
            ref_row(t, w, n_in, qw, dsc, mn, wf);
            for (int64_t e = 0; e < n_in; e++) {
                float sg = qw[e] * dsc[e] < 0 ? -1.0f : 1.0f;
                x[e] = sg;
                x[n_in + e] = -sg;
                x[2 * n_in + e] = 1.0f;
                x[3 * n_in + e] = -1.0f;
            }
            for (int p = 0; p < n_paths(); p++) {
                vf_gemm_force_path(p);
                if (vf_gemm_path(t) != p) continue;
                memset(y, 0xff, ny * sizeof(float));
                assert_int_equal(vf_matmul(w, t, n_out, n_in, x, n_tok, y), LPK_OK);
                if (p == 0) memcpy(y0, y, ny * sizeof(float));
                else if (memcmp(y0, y, ny * sizeof(float)) != 0)
                    fail_msg("%s, bytes 0x%02x: path %s differs from scalar", inf->name, pat[pi],
                             vf_gemm_path_name(t));
            }
            vf_gemm_force_path(-1);
        }
        free(w); free(x); free(y); free(y0); free(qw); free(dsc); free(mn); free(wf);
    }
}

/* Activations at the edges of their quantizer, through vf_matmul on every
 * path against the scalar reference (the VNNI kernels quantize 16 tokens at a
 * time in their own code): per 32-block one scale, from all zeros through
 * values whose d or s is an f16 subnormal, ties of the f16 rounding, up to d
 * beyond f16's range (infinite), and blocks with an infinite or NaN value.
 * Outputs must match bit for bit, or both be NaN. 19 tokens: a full group of
 * 16 and a partial one. */
static void test_x_extremes(void **state)
{
    (void)state;
    static const float sc[] = {0.0f, 1e-30f, 1e-9f, 3e-7f, 7.62939453125e-6f, 0.01f, 1.0f,
                               127.0f * 1.0009765625f, 1e5f, 8.3e6f, 1e7f, 3e38f};
    const int64_t n_out = 20, n_in = 1024, n_tok = 19;
    float *x = malloc(sizeof(float) * (size_t)(n_in * n_tok));
    uint64_t sd = 77;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t b = 0; b < n_in / 32; b++) {
            float s = sc[(size_t)(t * 7 + b) % (sizeof sc / sizeof sc[0])];
            for (int j = 0; j < 32; j++) {
                float v = tu_randn(&sd);
                /* some blocks: the largest value exactly s, ties at +-0.5 */
                x[t * n_in + b * 32 + j] = (b % 3 == 0 && j == 5) ? s : (b % 5 == 0) ? s * (float)(j - 16) / 32.5f
                                                                                     : s * v / 4.0f;
            }
        }
    x[3 * n_in + 40] = INFINITY;
    x[4 * n_in + 70] = -INFINITY;
    x[5 * n_in + 100] = NAN;
    x[17 * n_in + 200] = NAN;
    size_t ny = (size_t)(n_out * n_tok);
    float *y = malloc(ny * sizeof(float)), *y0 = malloc(ny * sizeof(float));
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        if (is_fp(t)) continue;
        uint8_t *w = make_weights(t, n_out, n_in, 5000 + ti);
        for (int p = 0; p < n_paths(); p++) {
            vf_gemm_force_path(p);
            if (vf_gemm_path(t) != p) continue;
            memset(y, 0xff, ny * sizeof(float));
            assert_int_equal(vf_matmul(w, t, n_out, n_in, x, n_tok, y), LPK_OK);
            if (p == 0) {
                memcpy(y0, y, ny * sizeof(float));
                continue;
            }
            for (size_t i = 0; i < ny; i++)
                if (!(isnan(y[i]) && isnan(y0[i])) && memcmp(&y[i], &y0[i], 4) != 0)
                    fail_msg("%s: path %s differs from scalar at %zu: %.9g vs %.9g",
                             lpk_type_get(t)->name, vf_gemm_path_name(t), i, y[i], y0[i]);
        }
        vf_gemm_force_path(-1);
        free(w);
    }
    free(x); free(y); free(y0);
}

/* vf_matmul_n gives each matrix's vf_matmul bit for bit: three matrices of
 * one type (row counts with partial work items, one empty), and of mixed
 * types, on every path and at 1 and 2 threads. */
static void test_matmul_n(void **state)
{
    (void)state;
    const int64_t n_in = 512, n_tok = 37, n_out[3] = {101, 0, 50};
    float *x = make_x(n_tok, n_in, 8000);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int types[2][3] = {{all_types[ti], all_types[ti], all_types[ti]},
                           {all_types[ti], LPK_TYPE_Q8_0, all_types[(ti + 5) % N_TYPES]}};
        for (int mix = 0; mix < 2; mix++) {
            uint8_t *w[3];
            float *want[3], *got[3];
            vf_mat m[3];
            for (int j = 0; j < 3; j++) {
                size_t ny = (size_t)(n_out[j] * n_tok) + 1;
                w[j] = make_weights(types[mix][j], n_out[j] ? n_out[j] : 1, n_in, 9000 + 10 * ti + j);
                want[j] = malloc(ny * 4);
                got[j] = malloc(ny * 4);
                m[j] = (vf_mat){w[j], types[mix][j], n_out[j], got[j]};
            }
            for (int p = 0; p < n_paths(); p++) {
                vf_gemm_force_path(p);
                for (int j = 0; j < 3; j++)
                    assert_int_equal(vf_matmul(w[j], types[mix][j], n_out[j], n_in, x, n_tok, want[j]), LPK_OK);
#ifdef _OPENMP
                int saved = omp_get_max_threads();
                for (int th = 1; th <= 2; th++) {
                    omp_set_num_threads(th);
#endif
                    for (int j = 0; j < 3; j++) memset(got[j], 0xff, (size_t)(n_out[j] * n_tok) * 4 + 4);
                    assert_int_equal(vf_matmul_n(m, 3, n_in, x, n_tok), LPK_OK);
                    for (int j = 0; j < 3; j++) {
                        assert_memory_equal(got[j], want[j], (size_t)(n_out[j] * n_tok) * 4);
                        uint32_t past;
                        memcpy(&past, got[j] + n_out[j] * n_tok, 4);
                        assert_true(past == 0xffffffffu); /* nothing written past y */
                    }
#ifdef _OPENMP
                }
                omp_set_num_threads(saved);
#endif
            }
            vf_gemm_force_path(-1);
            for (int j = 0; j < 3; j++) { free(w[j]); free(want[j]); free(got[j]); }
        }
    }
    free(x);
    float y[4];
    uint8_t wb[256] = {0};
    vf_mat bad[2] = {{wb, LPK_TYPE_Q4_0, 1, y}, {wb, LPK_TYPE_Q4_K, 1, y}};
    assert_int_equal(vf_matmul_n(bad, 2, 32, y, 1), LPK_EINVAL); /* 32 not a multiple of 256 */
    assert_int_equal(vf_matmul_n(bad, 0, 32, y, 1), LPK_EINVAL);
    assert_int_equal(vf_matmul_n(bad, VF_MAT_MAX + 1, 32, y, 1), LPK_EINVAL);
}

static void test_errors(void **state)
{
    (void)state;
    float x[64] = {0}, y[4];
    uint8_t w[256] = {0};
    assert_int_equal(vf_matmul(w, LPK_TYPE_Q4_0, 1, 48, x, 1, y), LPK_EINVAL);
    assert_int_equal(vf_matmul(w, LPK_TYPE_Q4_K, 1, 64, x, 1, y), LPK_EINVAL);
    assert_int_equal(vf_matmul(w, LPK_TYPE_Q8_K, 1, 256, x, 1, y), LPK_EUNSUPPORTED);
    assert_int_equal(vf_matmul(w, 5, 1, 32, x, 1, y), LPK_EUNSUPPORTED);
    assert_int_equal(vf_matmul(NULL, LPK_TYPE_F32, 1, 32, x, 1, y), LPK_EINVAL);
    assert_int_equal(vf_matmul(w, LPK_TYPE_F32, 1, 0, x, 1, y), LPK_EINVAL);
    assert_int_equal(vf_matmul(w, LPK_TYPE_F32, 0, 32, x, 1, y), LPK_OK);
    assert_int_equal(vf_matmul(w, LPK_TYPE_F32, 1, 32, x, 0, y), LPK_OK);
    int32_t out[2];
    assert_int_equal(vf_block_ints(LPK_TYPE_F16, w, x, out), LPK_EUNSUPPORTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize_x),
        cmocka_unit_test(test_block_ints),
        cmocka_unit_test(test_shapes_small),
        cmocka_unit_test(test_shapes_odd),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_extremes),
        cmocka_unit_test(test_x_extremes),
        cmocka_unit_test(test_matmul_n),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
