/* x86 SIMD kernels of vf_matmul (AVX2 / AVX-512 / AVX-512 VNNI), chosen at
 * run time. Weight tiles are repacked here (portable C) into the layouts the
 * kernels in vf_gemm_simd.h read; each kernel produces the scalar reference's
 * bits (see vf_gemm.h). */
#include "vf_gemm_kern.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define MAX_R 32 /* rows per tile of the widest kernel (fp32, AVX-512) */

/* ---------------------------------------------------------------- packing */
/* 32-blocks, tile of R rows: per block b, group g (4 elements), row r:
 * q[(b * 8 + g) * 4R + 4r + k] = weight 4g + k of row r as an unsigned byte
 * (signed qw + the type's offset), or in sign mode the signed q8_0 weight with
 * its absolute value in qa. Rows past o1 are zero. */
typedef struct { float *d, *m; uint8_t *q, *qa; } pk32;

static size_t scratch_blk32(const vf_gemm_args *a)
{
    size_t nb = (size_t)(a->n_in / 32);
    return nb * MAX_R * (2 * sizeof(float) + 64);
}

static void pack_blk32(const vf_gemm_args *a, int64_t o0, int64_t o1, int R, int sign_mode,
                       void *scratch, pk32 *pk)
{
    int64_t nb = a->n_in / 32;
    pk->d = scratch;
    pk->m = pk->d + nb * R;
    pk->q = (uint8_t *)(pk->m + nb * R);
    pk->qa = pk->q + nb * 32 * R;
    int off = 0;
    switch (a->wtype) {
    case LPK_TYPE_Q4_0: off = 8; break;
    case LPK_TYPE_Q5_0: off = 16; break;
    case LPK_TYPE_Q8_0: off = sign_mode ? 0 : 128; break;
    default: break;
    }
    for (int r = 0; r < R; r++) {
        const uint8_t *row = (const uint8_t *)a->w + (o0 + r) * a->row_bytes;
        for (int64_t b = 0; b < nb; b++) {
            vf_wblk32 w;
            if (o0 + r < o1)
                vf_unpack_blk32(a->wtype, row + b * a->type_size, &w);
            else
                memset(&w, 0, sizeof w);
            pk->d[b * R + r] = w.d;
            pk->m[b * R + r] = w.m;
            uint8_t *q = pk->q + b * 32 * R + 4 * r, *qa = pk->qa + b * 32 * R + 4 * r;
            for (int e = 0; e < 32; e++) {
                int v = w.q[e] + (o0 + r < o1 ? off : 0);
                q[(e / 4) * 4 * R + e % 4] = (uint8_t)v;
                if (sign_mode) qa[(e / 4) * 4 * R + e % 4] = (uint8_t)(v < 0 ? -v : v);
            }
        }
    }
}

/* k-quants, tile of R rows: per super-block b: d, dmin (q4_k) per row; per
 * sub-block the scale per row (int32, or as two equal int16 halves when
 * pair16); mins: q4_k the sub-block mins as int16 pairs (m[2k], m[2k+1]),
 * q6_k the pairs (-32 sc[2k], -32 sc[2k+1]); q: per sub-block and group of 4,
 * the unsigned weights (q4_k: q; q6_k: q + 32) of every row. */
typedef struct { float *d, *dmin; int32_t *sc, *mins; uint8_t *q; } pkk;

static size_t scratch_k(const vf_gemm_args *a)
{
    size_t nb = (size_t)(a->n_in / QK_K);
    return nb * MAX_R * (2 * sizeof(float) + 16 * 4 + 8 * 4 + 256);
}

static void pack_k_layout(int64_t nb, int R, void *scratch, pkk *pk)
{
    pk->d = scratch;
    pk->dmin = pk->d + nb * R;
    pk->sc = (int32_t *)(pk->dmin + nb * R);
    pk->mins = pk->sc + nb * 16 * R;
    pk->q = (uint8_t *)(pk->mins + nb * 8 * R);
}

static int32_t pair16(int lo, int hi) { return (int32_t)(((uint32_t)lo & 0xffffu) | (uint32_t)hi << 16); }

static void pack_q4k(const vf_gemm_args *a, int64_t o0, int64_t o1, int R, int vnni,
                     void *scratch, pkk *pk)
{
    int64_t nb = a->n_in / QK_K;
    pack_k_layout(nb, R, scratch, pk);
    for (int r = 0; r < R; r++) {
        const uint8_t *row = (const uint8_t *)a->w + (o0 + r) * a->row_bytes;
        for (int64_t b = 0; b < nb; b++) {
            vf_wq4k w;
            if (o0 + r < o1)
                vf_unpack_q4k(row + b * a->type_size, &w);
            else
                memset(&w, 0, sizeof w);
            pk->d[b * R + r] = w.d;
            pk->dmin[b * R + r] = w.dmin;
            for (int j = 0; j < 8; j++)
                pk->sc[(b * 8 + j) * R + r] = vnni ? w.sc[j] : pair16(w.sc[j], w.sc[j]);
            for (int k = 0; k < 4; k++)
                pk->mins[(b * 4 + k) * R + r] = pair16(w.m[2 * k], w.m[2 * k + 1]);
            for (int e = 0; e < 256; e++)
                pk->q[b * 256 * R + (e / 4) * 4 * R + 4 * r + e % 4] = w.q[e];
        }
    }
}

static void pack_q6k(const vf_gemm_args *a, int64_t o0, int64_t o1, int R, int vnni,
                     void *scratch, pkk *pk)
{
    int64_t nb = a->n_in / QK_K;
    pack_k_layout(nb, R, scratch, pk);
    for (int r = 0; r < R; r++) {
        const uint8_t *row = (const uint8_t *)a->w + (o0 + r) * a->row_bytes;
        for (int64_t b = 0; b < nb; b++) {
            vf_wq6k w;
            int live = o0 + r < o1;
            if (live)
                vf_unpack_q6k(row + b * a->type_size, &w);
            else
                memset(&w, 0, sizeof w);
            pk->d[b * R + r] = w.d;
            for (int j = 0; j < 16; j++)
                pk->sc[(b * 16 + j) * R + r] = vnni ? w.sc[j] : pair16(w.sc[j], w.sc[j]);
            for (int k = 0; k < 8; k++)
                pk->mins[(b * 8 + k) * R + r] = pair16(-32 * w.sc[2 * k], -32 * w.sc[2 * k + 1]);
            for (int e = 0; e < 256; e++)
                pk->q[b * 256 * R + (e / 4) * 4 * R + 4 * r + e % 4] =
                    (uint8_t)(w.q[e] + (live ? 32 : 0));
        }
    }
}

/* fp32: the tile's rows converted to f32 and transposed, wt[i * R + r]. */
static size_t scratch_f32(const vf_gemm_args *a)
{
    return (size_t)a->n_in * (MAX_R + 1) * sizeof(float);
}

static const float *pack_f32(const vf_gemm_args *a, int64_t o0, int64_t o1, int R, void *scratch)
{
    float *wt = scratch, *tmp = wt + a->n_in * R;
    for (int r = 0; r < R; r++) {
        if (o0 + r < o1)
            lpk_to_f32_row(a->wtype, (const uint8_t *)a->w + (o0 + r) * a->row_bytes, tmp,
                           (size_t)a->n_in);
        else
            memset(tmp, 0, (size_t)a->n_in * sizeof(float));
        for (int64_t i = 0; i < a->n_in; i++) wt[i * R + r] = tmp[i];
    }
    return wt;
}

/* ---------------------------------------------------------------- kernels */
#define VW 8
#define VNNI 0
#define SFX _avx2
#define TGT "avx2,fma,f16c"
#define KNAME "avx2"
#define KPATH VF_PATH_AVX2
#include "vf_gemm_simd.h"
#undef VW
#undef VNNI
#undef SFX
#undef TGT
#undef KNAME

#define VW 16
#define VNNI 0
#define SFX _avx512
#define TGT "avx2,fma,f16c,avx512f,avx512bw,avx512vl"
#define KNAME "avx512"
#undef KPATH
#define KPATH VF_PATH_AVX512
#include "vf_gemm_simd.h"
#undef VW
#undef VNNI
#undef SFX
#undef TGT
#undef KNAME

#define VW 16
#define VNNI 1
#define SFX _vnni
#define TGT "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
#define KNAME "avx512-vnni"
#undef KPATH
#define KPATH VF_PATH_VNNI
#include "vf_gemm_simd.h"

static const vf_gemm_kernel *by_type(int wtype, const vf_gemm_kernel *f32, const vf_gemm_kernel *b32,
                                     const vf_gemm_kernel *q4k, const vf_gemm_kernel *q6k)
{
    switch (wtype) {
    case LPK_TYPE_F32: case LPK_TYPE_F16: case LPK_TYPE_BF16: return f32;
    case LPK_TYPE_Q4_K: return q4k;
    case LPK_TYPE_Q6_K: return q6k;
    default: return b32;
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
