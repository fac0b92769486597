/* x86 SIMD kernels of vf_matmul (AVX2 / AVX-512 / AVX-512 VNNI), chosen at
 * run time. Each work item repacks its weight rows into per-thread scratch
 * (the layouts below; nothing is kept across calls) for the kernels in
 * vf_gemm_simd.h; each kernel produces the scalar reference's bits (see
 * vf_gemm.h). */
#include "vf_gemm_kern.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define MAX_R 32 /* rows per tile of the widest fp32 kernel (AVX-512) */
#define GT 4     /* int8 kernels: sub-tiles (of one vector of rows) per work item */

/* Running sums of every token for one tile, kept between input chunks. */
static size_t acc_bytes(const vf_gemm_args *a)
{
    return ((size_t)a->n_tok * MAX_R * sizeof(float) + 63) & ~(size_t)63;
}

/* ---------------------------------------------------------------- packing */
/* 32-blocks, tile of R rows: per block b, group g (4 elements), row r:
 * q[(b * 8 + g) * 4R + 4r + k] = weight 4g + k of row r as an unsigned byte
 * (signed qw + the type's offset), or in sign mode the signed q8_0 weight with
 * its absolute value in qa. Rows past o1 are zero. */
typedef struct { float *d, *m; uint8_t *q, *qa; } pk32;

/* One packed sub-tile of up to 16 rows, rounded to a cache line. */
static size_t tile_bytes_blk32(const vf_gemm_args *a)
{
    size_t nb = (size_t)(a->n_in / 32);
    return (nb * 16 * (2 * sizeof(float) + 64) + 63) & ~(size_t)63;
}

static size_t scratch_blk32(const vf_gemm_args *a) { return GT * tile_bytes_blk32(a); }

static void pk32_layout(int64_t nb, int R, void *scratch, pk32 *pk)
{
    pk->d = scratch;
    pk->m = pk->d + nb * R;
    pk->q = (uint8_t *)(pk->m + nb * R);
    pk->qa = pk->q + nb * 32 * R;
}

/* k-quants, tile of R rows: per super-block b: d, dmin (q4_k) per row; per
 * sub-block the scale per row (int32, or as two equal int16 halves when
 * pair16); mins: q4_k the sub-block mins as int16 pairs (m[2k], m[2k+1]),
 * q6_k the pairs (-32 sc[2k], -32 sc[2k+1]); q: per sub-block and group of 4,
 * the unsigned weights (q4_k: q; q6_k: q + 32) of every row. */
typedef struct { float *d, *dmin; int32_t *sc, *mins; uint8_t *q; } pkk;

static size_t tile_bytes_k(const vf_gemm_args *a)
{
    size_t nb = (size_t)(a->n_in / QK_K);
    return (nb * 16 * (2 * sizeof(float) + 16 * 4 + 8 * 4 + 256) + 63) & ~(size_t)63;
}

static size_t scratch_k(const vf_gemm_args *a) { return GT * tile_bytes_k(a); }

static void pack_k_layout(int64_t nb, int R, void *scratch, pkk *pk)
{
    pk->d = scratch;
    pk->dmin = pk->d + nb * R;
    pk->sc = (int32_t *)(pk->dmin + nb * R);
    pk->mins = pk->sc + nb * 16 * R;
    pk->q = (uint8_t *)(pk->mins + nb * 8 * R);
}

static int32_t pair16(int lo, int hi) { return (int32_t)(((uint32_t)lo & 0xffffu) | (uint32_t)hi << 16); }

/* fp32: up to GT sub-tiles of MAX_R rows converted to f32 and transposed
 * (wt[i * R + r]), their running sums, and one row of conversion space. */
static size_t scratch_f32(const vf_gemm_args *a)
{
    return GT * acc_bytes(a) + ((size_t)GT * MAX_R + 1) * (size_t)a->n_in * sizeof(float);
}

static void pack_f32(const vf_gemm_args *a, int64_t o0, int64_t o1, int R, float *wt, float *tmp)
{
    for (int r = 0; r < R; r++) {
        if (o0 + r < o1)
            lpk_to_f32_row(a->wtype, (const uint8_t *)a->w + (o0 + r) * a->row_bytes, tmp,
                           (size_t)a->n_in);
        else
            memset(tmp, 0, (size_t)a->n_in * sizeof(float));
        for (int64_t i = 0; i < a->n_in; i++) wt[i * R + r] = tmp[i];
    }
}

/* VNNI kernels, lanes = tokens (see vf_gemm_simd.h): activations of a group
 * of XT tokens per 32-block / q8_K super-block, q[g][t] = bytes 4g..4g+3 of
 * token t plus 128 (unsigned), d and s (d * sum) per token, bs[k][t] = the
 * int16 pair (sum of sub-block 2k, of sub-block 2k+1) of 32-element sums;
 * weights of a sub-tile of RT rows per block: signed q per row, the scales,
 * and c = -128 * sum of the weights (k-quants: weighted by the sub-block
 * scales), which starts each integer sum. Work items are NS sub-tiles. */
#define XT 16
#define RT32 12
#define NS32 4
#define RTK 8
#define NSK 6
#define KC32 64 /* input chunk, blocks */
#define OUT_ROWS (NS32 * RT32 > NSK * RTK ? NS32 * RT32 : NSK * RTK) /* rows per work item, at most */
#define KCK 8
typedef struct { uint8_t q[8][XT][4]; float d[XT], s[XT]; } vt_x32;
typedef struct { uint8_t q[64][XT][4]; float d[XT]; int32_t bs[4][XT]; } vt_xk;
typedef struct { int8_t q[RT32][32]; float d[RT32], m[RT32]; int32_t c[RT32]; } vt_w32;
typedef struct {
    int8_t q[RTK][QK_K];
    int32_t sc[RTK][16], mn[RTK][4], sc8[RTK][4];
    int32_t hc[RTK][32]; /* q6_k: -128 * (sum of each half sub-block) */
    float d[RTK], dm[RTK];
    int32_t c[RTK];
} vt_wk;

/* ---------------------------------------------------------------- activations */
/* The scalar quantizers' results, bit for bit: max is exact in any order (a
 * NaN input is skipped, as `a > amax` skips it), the signed maximum of q8_K is
 * the first element of that magnitude in both, the scales are computed in
 * scalar code, x * id is one rounded product, vcvtps2dq rounds to nearest even
 * like lrintf, and out-of-range or NaN products clamp to -127 in both. */
static LPK_TARGET("avx2,fma") float amax8(const float *x, int n8)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < n8; k++) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* 32 values -> int8 (clamped to +-127) at q; returns their sum. */
static LPK_TARGET("avx2,fma") int32_t quant32(const float *x, float id, int8_t *q)
{
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    __m256i i[4];
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid));
        i[k] = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    }
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)(void *)q, p);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    return _mm_cvtsi128_si32(h);
}

LPK_TARGET("avx2,fma") void vf_quantize_x32_avx2(const float *x, int64_t n, vf_xblk32 *out)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const float *v = x + b * 32;
        float amax = amax8(v, 4);
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        vf_x32_scales(amax, quant32(v, id, out[b].qs), &out[b]);
    }
}

LPK_TARGET("avx2,fma") void vf_quantize_xk_avx2(const float *x, int64_t n, block_q8_K *out)
{
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *v = x + b * QK_K;
        float amax = amax8(v, 32);
        float is = amax != 0.0f ? -127.0f / vf_xk_max(v, amax) : 0.0f;
        for (int k = 0; k < 8; k++) quant32(v + 32 * k, is, out[b].qs + 32 * k);
        for (int g = 0; g < QK_K / 16; g++) {
            __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(out[b].qs + 16 * g)));
            __m256i s = _mm256_madd_epi16(w, _mm256_set1_epi16(1));
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
            out[b].bsums[g] = (int16_t)_mm_cvtsi128_si32(h);
        }
        out[b].d = amax != 0.0f ? 1.0f / is : 0.0f;
    }
}

/* ---------------------------------------------------------------- kernels */
#define SIMD_W 8
#define SIMD_SFX _avx2
#define SIMD_NAME "avx2"
#define SIMD_TGT "avx2,fma,f16c"
#define VNNI 0
#define KPATH VF_PATH_AVX2
#include "vf_gemm_simd.h"

#define SIMD_W 16
#define SIMD_SFX _avx512
#define SIMD_NAME "avx512"
#define SIMD_TGT "avx2,fma,f16c,avx512f,avx512bw,avx512vl"
#define VNNI 0
#define KPATH VF_PATH_AVX512
#include "vf_gemm_simd.h"

#define SIMD_W 16
#define SIMD_SFX _vnni
#define SIMD_NAME "avx512-vnni"
#define SIMD_TGT "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
#define VNNI 1
#define KPATH VF_PATH_VNNI
#include "vf_gemm_simd.h"

/* ---------------------------------------------------------------- q5_k, q3_k, q2_k, iq4_xs, iq4_nl */
/* The scalar kernel's arithmetic (vf_gemm.h), with each block's integer sums
 * taken 32 products at a time: |q| <= 127 on both sides (no -128 in any of
 * these weights, activations clamp to +-127), so sign + maddubs pairs stay
 * within int16 and every sum is exact; the float steps are the scalar
 * kernel's, in its order. Rows are unpacked once per work item. */
#define NG_ROWS 4

/* one super-block: the weights and, per 32 values, the 8 lanes' sub-block scales */
typedef struct { vf_wkg w; int32_t scl[8][8]; } ng_blk;

static size_t scratch_ng(const vf_gemm_args *a)
{
    int64_t nb = a->n_in / a->block;
    size_t per = a->block == QK_K ? sizeof(ng_blk) : sizeof(vf_wblk32);
    return (size_t)NG_ROWS * (size_t)nb * per;
}

static inline LPK_TARGET("avx2") __m256i ng_dot32(const int8_t *w, const int8_t *x)
{
    __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)w);
    __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)x);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static inline LPK_TARGET("avx2") int32_t ng_hsum(__m256i v)
{
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    return _mm_cvtsi128_si32(h);
}

static LPK_TARGET("avx2,fma") void rows_ng(const vf_gemm_args *a, int64_t o0,
                                                        int64_t o1, void *scratch)
{
    int64_t nb = a->n_in / a->block;
    int k = a->block == QK_K;
    int with_min = a->wtype == LPK_TYPE_Q5_K || a->wtype == LPK_TYPE_Q2_K;
    for (int64_t o = o0; o < o1; o++) {
        const uint8_t *row = (const uint8_t *)a->w + o * a->row_bytes;
        if (k) {
            ng_blk *wb = (ng_blk *)scratch + (o - o0) * nb;
            for (int64_t b = 0; b < nb; b++) {
                vf_unpack_kg(a->wtype, row + b * a->type_size, &wb[b].w);
                int len = QK_K / wb[b].w.nsub;
                for (int c = 0; c < 8; c++)
                    for (int l = 0; l < 8; l++) wb[b].scl[c][l] = wb[b].w.sc[(32 * c + 4 * l) / len];
            }
        } else {
            vf_wblk32 *wb = (vf_wblk32 *)scratch + (o - o0) * nb;
            for (int64_t b = 0; b < nb; b++) vf_unpack_blk32(a->wtype, row + b * a->type_size, &wb[b]);
        }
    }
    for (int64_t t = 0; t < a->n_tok; t++) {
        for (int64_t o = o0; o < o1; o++) {
            float acc = 0.0f;
            if (k) {
                const ng_blk *wb = (const ng_blk *)scratch + (o - o0) * nb;
                const block_q8_K *xb = (const block_q8_K *)a->xq + t * nb;
                for (int64_t b = 0; b < nb; b++) {
                    __m256i v = _mm256_setzero_si256();
                    for (int c = 0; c < 8; c++)
                        v = _mm256_add_epi32(v, _mm256_mullo_epi32(
                                                    ng_dot32(wb[b].w.q + 32 * c, xb[b].qs + 32 * c),
                                                    _mm256_loadu_si256((const __m256i *)(const void *)wb[b].scl[c])));
                    int32_t sumi = ng_hsum(v);
                    float p = wb[b].w.d * xb[b].d;
                    if (with_min) {
                        int per = 16 / wb[b].w.nsub;
                        int32_t summ = 0;
                        for (int j = 0; j < wb[b].w.nsub; j++) {
                            int32_t bs = 0;
                            for (int q = 0; q < per; q++) bs += xb[b].bsums[j * per + q];
                            summ += (int32_t)wb[b].w.m[j] * bs;
                        }
                        float pm = -wb[b].w.dmin * xb[b].d;
                        acc = fmaf(pm, (float)summ, acc);
                    }
                    acc = fmaf(p, (float)sumi, acc);
                }
            } else {
                const vf_wblk32 *wb = (const vf_wblk32 *)scratch + (o - o0) * nb;
                const vf_xblk32 *xb = (const vf_xblk32 *)a->xq + t * nb;
                for (int64_t b = 0; b < nb; b++) {
                    int32_t isum = ng_hsum(ng_dot32(wb[b].q, xb[b].qs));
                    acc = fmaf(wb[b].d * xb[b].d, (float)isum, acc);
                }
            }
            a->y[t * a->n_out + o] = acc;
        }
    }
}

static const vf_gemm_kernel kern_ng_avx2 = {"avx2", VF_PATH_AVX2, NG_ROWS, 1, scratch_ng,
                                            rows_ng, NULL, NULL};

static const vf_gemm_kernel *by_type(int wtype, const vf_gemm_kernel *f32, const vf_gemm_kernel *b32,
                                     const vf_gemm_kernel *q4k, const vf_gemm_kernel *q6k)
{
    switch (wtype) {
    case LPK_TYPE_F32: case LPK_TYPE_F16: case LPK_TYPE_BF16: return f32;
    case LPK_TYPE_Q4_K: return q4k;
    case LPK_TYPE_Q6_K: return q6k;
    case LPK_TYPE_Q8_0: case LPK_TYPE_Q4_0: case LPK_TYPE_Q4_1:
    case LPK_TYPE_Q5_0: case LPK_TYPE_Q5_1: return b32;
    /* one AVX2 kernel on every x86 path */
    case LPK_TYPE_Q5_K: case LPK_TYPE_Q3_K: case LPK_TYPE_Q2_K: case LPK_TYPE_IQ4_XS:
    case LPK_TYPE_IQ4_NL: return &kern_ng_avx2;
    default: return NULL;
    }
}

const vf_gemm_kernel *vf_gemm_x86_kernel(int wtype, int cap)
{
    unsigned f = lpk_cpu_features();
    const unsigned avx512 = LPK_CPU_AVX512F | LPK_CPU_AVX512BW | LPK_CPU_AVX512VL;
    if (cap < 0 || cap >= VF_PATH_AVX512) {
        if ((f & avx512) == avx512 && (f & LPK_CPU_AVX512VNNI) && (cap < 0 || cap >= VF_PATH_VNNI))
            return by_type(wtype, &kern_f32__avx512, &kern_blk32__vnni, &kern_q4k__vnni,
                           &kern_q6k__vnni);
        if ((f & avx512) == avx512)
            return by_type(wtype, &kern_f32__avx512, &kern_blk32__avx512, &kern_q4k__avx512,
                           &kern_q6k__avx512);
    }
    if ((cap < 0 || cap >= VF_PATH_AVX2) && (f & LPK_CPU_AVX2))
        return by_type(wtype, &kern_f32__avx2, &kern_blk32__avx2, &kern_q4k__avx2,
                       &kern_q6k__avx2);
    return NULL;
}
#endif
