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
 * (signed qw + the type's offset), or in sign mode (q8_0, iq4_nl) the signed
 * weight with its absolute value in qa. Rows past o1 are zero. */
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

/* k-quants, tile of R rows: per super-block b: d, -dmin (types with mins)
 * per row; per sub-block the scale per row (int32, or as two equal int16
 * halves when pair16); mins: q4_k, q5_k and q2_k the sub-block mins as int16
 * pairs (m[2k], m[2k+1]), q6_k and q3_k the pairs (-off sc[2k], -off sc[2k+1])
 * that take the weights' offset off back out; q: per sub-block and group of
 * 4, the weights of every row, unsigned (q4_k, q5_k, q2_k: q; q6_k: q + 32;
 * q3_k: q + 4) or for iq4_xs the signed values, with their absolute values in
 * qa. */
typedef struct { float *d, *dmin; int32_t *sc, *mins; uint8_t *q, *qa; } pkk;

static size_t tile_bytes_k(const vf_gemm_args *a)
{
    size_t nb = (size_t)(a->n_in / QK_K);
    return (nb * 16 * (2 * sizeof(float) + 16 * 4 + 8 * 4 + 2 * 256) + 63) & ~(size_t)63;
}

static size_t scratch_k(const vf_gemm_args *a) { return GT * tile_bytes_k(a); }

static void pack_k_layout(int64_t nb, int R, void *scratch, pkk *pk)
{
    pk->d = scratch;
    pk->dmin = pk->d + nb * R;
    pk->sc = (int32_t *)(pk->dmin + nb * R);
    pk->mins = pk->sc + nb * 16 * R;
    pk->q = (uint8_t *)(pk->mins + nb * 8 * R);
    pk->qa = pk->q + nb * 256 * R;
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
#define RT32 6
#define NS32 8
#define RTK 8
#define NSK 6
#define KC32 64 /* input chunk, blocks */
#define OUT_ROWS (NS32 * RT32 > NSK * RTK ? NS32 * RT32 : NSK * RTK) /* rows per work item, at most */
#define OUT_RT (RT32 > RTK ? RT32 : RTK) /* rows per sub-tile, at most */
#define KCK 8
typedef struct { uint8_t q[8][XT][4]; float d[XT], s[XT]; } vt_x32;
/* bs16[k][t]: the int16 pair (sum of 16-element group 2k, of group 2k + 1) */
typedef struct { uint8_t q[64][XT][4]; float d[XT]; int32_t bs[4][XT], bs16[8][XT]; } vt_xk;
typedef struct { int8_t q[RT32][32]; float d[RT32], m[RT32]; int32_t c[RT32]; } vt_w32;
typedef struct {
    int8_t q[RTK][QK_K];
    int32_t sc[RTK][16], mn[RTK][8], sc8[RTK][4];
    /* chain starts: -128 * (sum of the weights of each run of 8 (q6_k), 16
     * (q5_k, q3_k, q2_k) or 32 (iq4_xs)) */
    int32_t hc[RTK][32];
    float d[RTK], dm[RTK];
    int32_t c[RTK];
} vt_wk;

/* ---------------------------------------------------------------- k-quant unpacking */
/* One super-block of q5_k, q3_k, q2_k or iq4_xs in the integer form of
 * vf_gemm.h (as vf_unpack_kg, 32 values per vector): v[c] = qw of elements
 * 32c .. 32c + 31 (q5_k 0..31, q3_k -4..3, q2_k 0..3, iq4_xs the table values
 * -127..113); sc, mn the nsub (8 or 16) sub-block scales and mins (mn 0 for
 * the types without); d, dmin. */
typedef struct { __m256i v[8]; int32_t sc[16], mn[16]; float d, dmin; int nsub; } kg_blk;

static LPK_TARGET("avx2") void kg_unpack(int wtype, const uint8_t *blk, kg_blk *o)
{
#define LD32(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define SRL(v, n) _mm256_srl_epi16(v, _mm_cvtsi32_si128(n))
    const __m256i m1 = _mm256_set1_epi8(1), m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(15);
    memset(o->mn, 0, sizeof o->mn);
    o->dmin = 0.0f;
    switch (wtype) {
    case LPK_TYPE_Q5_K: { /* d, dmin, scales[12], qh[32], qs[128] */
        uint8_t sc[8], mn[8];
        quant_q4k_scales(blk + 4, sc, mn);
        for (int j = 0; j < 8; j++) o->sc[j] = sc[j], o->mn[j] = mn[j];
        o->nsub = 8;
        o->d = lpk_f16_to_f32(lpk_rd16(blk));
        o->dmin = lpk_f16_to_f32(lpk_rd16(blk + 2));
        __m256i qh = LD32(blk + 16);
        for (int c = 0; c < 8; c++) {
            __m256i lo = _mm256_and_si256(SRL(LD32(blk + 48 + 32 * (c / 2)), 4 * (c % 2)), m4);
            __m256i hb = _mm256_and_si256(SRL(qh, c), m1);
            o->v[c] = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 4));
        }
        break;
    }
    case LPK_TYPE_Q2_K: /* scales[16], qs[64], d, dmin */
    case LPK_TYPE_Q3_K: { /* hmask[32], qs[64], scales[12], d */
        int q3 = wtype == LPK_TYPE_Q3_K;
        const uint8_t *qs = blk + (q3 ? 32 : 16);
        o->nsub = 16;
        for (int j = 0; j < 16; j++) {
            o->sc[j] = q3 ? quant_q3k_scale(blk + 96, j) : blk[j] & 15;
            o->mn[j] = q3 ? 0 : blk[j] >> 4;
        }
        o->d = lpk_f16_to_f32(lpk_rd16(blk + (q3 ? 108 : 80)));
        o->dmin = q3 ? 0.0f : lpk_f16_to_f32(lpk_rd16(blk + 82));
        __m256i hm = LD32(blk);
        for (int c = 0; c < 8; c++) {
            __m256i v = _mm256_and_si256(SRL(LD32(qs + 32 * (c / 4)), 2 * (c % 4)), m3);
            if (q3) /* high bit clear: q - 4 */
                v = _mm256_sub_epi8(_mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(SRL(hm, c), m1), 2)),
                                    _mm256_set1_epi8(4));
            o->v[c] = v;
        }
        break;
    }
    default: { /* iq4_xs: d, scales_h, scales_l[4], qs[128] */
        const __m256i tbl = _mm256_broadcastsi128_si256(
            _mm_loadu_si128((const __m128i *)(const void *)quant_iq4nl_values));
        unsigned sh = lpk_rd16(blk + 2);
        o->nsub = 8;
        o->d = lpk_f16_to_f32(lpk_rd16(blk));
        for (int j = 0; j < 8; j++) {
            o->sc[j] = (int32_t)(((blk[4 + j / 2] >> (4 * (j % 2))) & 15) | ((sh >> (2 * j)) & 3) << 4) - 32;
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(blk + 8 + 16 * j));
            __m256i idx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), m4);
            o->v[j] = _mm256_shuffle_epi8(tbl, idx);
        }
        break;
    }
    }
#undef LD32
#undef SRL
}

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

static const vf_gemm_kernel *by_type(int wtype, const vf_gemm_kernel *f32, const vf_gemm_kernel *b32,
                                     const vf_gemm_kernel *q4k, const vf_gemm_kernel *q6k)
{
    switch (wtype) {
    case LPK_TYPE_F32: case LPK_TYPE_F16: case LPK_TYPE_BF16: return f32;
    /* 8 sub-blocks of 32 */
    case LPK_TYPE_Q4_K: case LPK_TYPE_Q5_K: case LPK_TYPE_IQ4_XS: return q4k;
    /* 16 sub-blocks of 16 */
    case LPK_TYPE_Q6_K: case LPK_TYPE_Q3_K: case LPK_TYPE_Q2_K: return q6k;
    case LPK_TYPE_Q8_0: case LPK_TYPE_Q4_0: case LPK_TYPE_Q4_1:
    case LPK_TYPE_Q5_0: case LPK_TYPE_Q5_1: case LPK_TYPE_IQ4_NL: return b32;
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
