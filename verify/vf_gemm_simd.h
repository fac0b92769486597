/* verify/ internal: the SIMD GEMM kernels, written once for a vector of VW
 * 32-bit lanes (8: AVX2, 16: AVX-512) and included by vf_gemm_x86.c once per
 * instruction set. Parameters: VW, VNNI (0|1), SFX (name suffix), TGT (target
 * attribute string).
 *
 * Lanes are output rows: a tile of VW rows (2 VW for fp32) is repacked once so
 * that one vector load gives the same 4 consecutive weights (one f32 weight)
 * of every row, and each token's activations are broadcast against it. Every
 * lane then performs exactly the scalar reference's sequence of operations for
 * its row, so the result is the reference's, bit for bit (see vf_gemm.h). */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(n) CAT(n, SFX)

#if VW == 8
typedef __m256i FN(vi_);
typedef __m256 FN(vf_);
#define vi FN(vi_)
#define vf FN(vf_)
#define VI_ZERO() _mm256_setzero_si256()
#define VI_LOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define VI_SET1(v) _mm256_set1_epi32(v)
#define VI_SET1_16(v) _mm256_set1_epi16(v)
#define VI_ADD(a, b) _mm256_add_epi32(a, b)
#define VI_ADD16(a, b) _mm256_add_epi16(a, b)
#define VI_MULLO(a, b) _mm256_mullo_epi32(a, b)
#define VI_MADD16(a, b) _mm256_madd_epi16(a, b)
#define VI_MADDUBS(a, b) _mm256_maddubs_epi16(a, b)
#define VI_SIGN8(x, w) _mm256_sign_epi8(x, w)
#define VI_DPBUSD(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#define VF_ZERO() _mm256_setzero_ps()
#define VF_LOAD(p) _mm256_loadu_ps(p)
#define VF_STORE(p, v) _mm256_storeu_ps(p, v)
#define VF_SET1(v) _mm256_set1_ps(v)
#define VF_ADD(a, b) _mm256_add_ps(a, b)
#define VF_SUB(a, b) _mm256_sub_ps(a, b)
#define VF_MUL(a, b) _mm256_mul_ps(a, b)
#define VF_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VF_CVT(a) _mm256_cvtepi32_ps(a)
#else
typedef __m512i FN(vi_);
typedef __m512 FN(vf_);
#define vi FN(vi_)
#define vf FN(vf_)
#define VI_ZERO() _mm512_setzero_si512()
#define VI_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define VI_SET1(v) _mm512_set1_epi32(v)
#define VI_SET1_16(v) _mm512_set1_epi16(v)
#define VI_ADD(a, b) _mm512_add_epi32(a, b)
#define VI_ADD16(a, b) _mm512_add_epi16(a, b)
#define VI_MULLO(a, b) _mm512_mullo_epi32(a, b)
#define VI_MADD16(a, b) _mm512_madd_epi16(a, b)
#define VI_MADDUBS(a, b) _mm512_maddubs_epi16(a, b)
/* no vpsignb in AVX-512: negate x where w < 0 (where w == 0 |w| is 0 anyway) */
#define VI_SIGN8(x, w) _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x)
#define VI_DPBUSD(acc, a, b) _mm512_dpbusd_epi32(acc, a, b)
#define VF_ZERO() _mm512_setzero_ps()
#define VF_LOAD(p) _mm512_loadu_ps(p)
#define VF_STORE(p, v) _mm512_storeu_ps(p, v)
#define VF_SET1(v) _mm512_set1_ps(v)
#define VF_ADD(a, b) _mm512_add_ps(a, b)
#define VF_SUB(a, b) _mm512_sub_ps(a, b)
#define VF_MUL(a, b) _mm512_mul_ps(a, b)
#define VF_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VF_CVT(a) _mm512_cvtepi32_ps(a)
#endif

/* tokens per register tile */
#define TT (VW == 8 ? 4 : 8)
#define TF (VW == 8 ? 6 : 12)

static inline __attribute__((target(TGT), always_inline)) vi FN(bc32)(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return VI_SET1(v);
}

/* acc + sum over 8 bytes (two groups of 4 per lane) of u8 * s8; u8 <= 63 so
 * the 16-bit pair sums cannot saturate. */
static inline __attribute__((target(TGT), always_inline)) vi FN(dp8)(vi acc, vi w0, vi x0, vi w1,
                                                                       vi x1)
{
#if VNNI
    return VI_DPBUSD(VI_DPBUSD(acc, w0, x0), w1, x1);
#else
    vi p = VI_ADD16(VI_MADDUBS(w0, x0), VI_MADDUBS(w1, x1));
    return VI_ADD(acc, VI_MADD16(p, VI_SET1_16(1)));
#endif
}

/* Stores lanes [0, n) of v to y. */
static inline __attribute__((target(TGT), always_inline)) void FN(store_rows)(float *y, vf v, int n)
{
    if (n == VW) {
        VF_STORE(y, v);
    } else {
        float tmp[VW];
        VF_STORE(tmp, v);
        memcpy(y, tmp, (size_t)n * sizeof(float));
    }
}

/* Token t0 + j, clamped to the last token (a partial token tile recomputes
 * the last token and discards it). */
#define TOK(t0, j, n) ((t0) + (j) < (n) ? (t0) + (j) : (n) - 1)

/* ---------------------------------------------------------------- packing */
static inline __attribute__((target(TGT), always_inline)) float FN(half)(const uint8_t *p)
{
    return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
}

/* Writes the 32 bytes of v as 8 groups of 4 at q, q + 4R, q + 8R, ... */
static inline __attribute__((target(TGT), always_inline)) void FN(scatter32)(uint8_t *q, __m256i v,
                                                                              int R)
{
    uint32_t t[8];
    _mm256_storeu_si256((__m256i *)(void *)t, v);
    for (int g = 0; g < 8; g++) memcpy(q + g * 4 * R, &t[g], 4);
}

/* One 32-block's weights as unsigned bytes: qw + the type's offset (q8_0:
 * +128, or the signed value in sign mode). */
static inline __attribute__((target(TGT), always_inline)) __m256i FN(unpack32)(int wtype,
                                                                                const uint8_t *b,
                                                                                int sign_mode)
{
    const __m128i m4 = _mm_set1_epi8(15);
    switch (wtype) {
    case LPK_TYPE_Q8_0: {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(b + 2));
        return sign_mode ? v : _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80));
    }
    case LPK_TYPE_Q4_0: case LPK_TYPE_Q4_1: {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(b + (wtype == LPK_TYPE_Q4_1 ? 4 : 2)));
        return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m4), _mm_and_si128(x, m4));
    }
    default: { /* q5_0, q5_1: bit j of qh is bit 4 of element j */
        const uint8_t *qhp = b + (wtype == LPK_TYPE_Q5_1 ? 4 : 2);
        uint32_t qh;
        memcpy(&qh, qhp, 4);
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(qhp + 4));
        __m256i lo = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m4), _mm_and_si128(x, m4));
        const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                              2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll);
        __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
        h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
        return _mm256_or_si256(lo, _mm256_and_si256(h, _mm256_set1_epi8(16)));
    }
    }
}

/* 32-blocks: see pk32 in vf_gemm_x86.c. */
static __attribute__((target(TGT))) void FN(pack_blk32)(const vf_gemm_args *a, int64_t o0,
                                                        int64_t o1, int R, int sign_mode,
                                                        void *scratch, pk32 *pk)
{
    int64_t nb = a->n_in / 32;
    pk32_layout(nb, R, scratch, pk);
    const int has_m = a->wtype == LPK_TYPE_Q4_1 || a->wtype == LPK_TYPE_Q5_1;
    for (int r = 0; r < R; r++) {
        const uint8_t *row = (const uint8_t *)a->w + (o0 + r) * a->row_bytes;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *q = pk->q + b * 32 * R + 4 * r, *qa = pk->qa + b * 32 * R + 4 * r;
            if (o0 + r >= o1) {
                pk->d[b * R + r] = pk->m[b * R + r] = 0.0f;
                FN(scatter32)(q, _mm256_setzero_si256(), R);
                if (sign_mode) FN(scatter32)(qa, _mm256_setzero_si256(), R);
                continue;
            }
            const uint8_t *blk = row + b * a->type_size;
            pk->d[b * R + r] = FN(half)(blk);
            pk->m[b * R + r] = has_m ? FN(half)(blk + 2) : 0.0f;
            __m256i v = FN(unpack32)(a->wtype, blk, sign_mode);
            FN(scatter32)(q, v, R);
            if (sign_mode) FN(scatter32)(qa, _mm256_abs_epi8(v), R);
        }
    }
}

/* q4_k: see pkk in vf_gemm_x86.c. */
static __attribute__((target(TGT))) void FN(pack_q4k)(const vf_gemm_args *a, int64_t o0,
                                                      int64_t o1, int R, int vnni, void *scratch,
                                                      pkk *pk)
{
    int64_t nb = a->n_in / QK_K;
    pack_k_layout(nb, R, scratch, pk);
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int r = 0; r < R; r++) {
        const uint8_t *row = (const uint8_t *)a->w + (o0 + r) * a->row_bytes;
        int live = o0 + r < o1;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * a->type_size;
            uint8_t sc[8], mn[8];
            if (live) vf_q4k_scales(blk + 4, sc, mn);
            else memset(sc, 0, 8), memset(mn, 0, 8);
            pk->d[b * R + r] = live ? FN(half)(blk) : 0.0f;
            pk->dmin[b * R + r] = live ? -FN(half)(blk + 2) : 0.0f;
            for (int j = 0; j < 8; j++)
                pk->sc[(b * 8 + j) * R + r] = vnni ? sc[j] : pair16(sc[j], sc[j]);
            for (int k = 0; k < 4; k++)
                pk->mins[(b * 4 + k) * R + r] = pair16(mn[2 * k], mn[2 * k + 1]);
            uint8_t *q = pk->q + b * 256 * R + 4 * r;
            for (int c = 0; c < 4; c++) {
                __m256i x = live ? _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16 + 32 * c))
                                 : _mm256_setzero_si256();
                FN(scatter32)(q + (2 * c) * 32 * R, _mm256_and_si256(x, m4), R);
                FN(scatter32)(q + (2 * c + 1) * 32 * R, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4), R);
            }
        }
    }
}

/* q6_k: see pkk in vf_gemm_x86.c; the 6-bit q (= qw + 32) is stored as is. */
static __attribute__((target(TGT))) void FN(pack_q6k)(const vf_gemm_args *a, int64_t o0,
                                                      int64_t o1, int R, int vnni, void *scratch,
                                                      pkk *pk)
{
    int64_t nb = a->n_in / QK_K;
    pack_k_layout(nb, R, scratch, pk);
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    for (int r = 0; r < R; r++) {
        const uint8_t *row = (const uint8_t *)a->w + (o0 + r) * a->row_bytes;
        int live = o0 + r < o1;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * a->type_size;
            pk->d[b * R + r] = live ? FN(half)(blk + 208) : 0.0f;
            for (int j = 0; j < 16; j++) {
                int sc = live ? (int8_t)blk[192 + j] : 0;
                pk->sc[(b * 16 + j) * R + r] = vnni ? sc : pair16(sc, sc);
            }
            for (int k = 0; k < 8; k++) {
                int s0 = live ? (int8_t)blk[192 + 2 * k] : 0, s1 = live ? (int8_t)blk[193 + 2 * k] : 0;
                pk->mins[(b * 8 + k) * R + r] = pair16(-32 * s0, -32 * s1);
            }
            uint8_t *q = pk->q + b * 256 * R + 4 * r;
            for (int h = 0; h < 2; h++) {
                __m256i l0 = _mm256_setzero_si256(), l1 = l0, hh = l0;
                if (live) {
                    l0 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 64 * h));
                    l1 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 64 * h + 32));
                    hh = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 128 + 32 * h));
                }
                __m256i hb0 = _mm256_slli_epi16(_mm256_and_si256(hh, m2), 4);
                __m256i hb1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 2), m2), 4);
                __m256i hb2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 4), m2), 4);
                __m256i hb3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 6), m2), 4);
                uint8_t *qh = q + h * 128 * R;
                FN(scatter32)(qh, _mm256_or_si256(_mm256_and_si256(l0, m4), hb0), R);
                FN(scatter32)(qh + 32 * R, _mm256_or_si256(_mm256_and_si256(l1, m4), hb1), R);
                FN(scatter32)(qh + 64 * R, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), hb2), R);
                FN(scatter32)(qh + 96 * R, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), hb3), R);
            }
        }
    }
}

/* ---------------------------------------------------------------- 32-blocks */
static __attribute__((target(TGT))) void FN(rows_blk32)(const vf_gemm_args *a, int64_t o0,
                                                        int64_t o1, void *scratch)
{
    const int64_t nb = a->n_in / 32, n_tok = a->n_tok;
    const int nr = (int)(o1 - o0);
    const int sign_mode = a->wtype == LPK_TYPE_Q8_0 && !VNNI;
    /* GT sub-tiles of VW rows share every pass over a token tile's
     * activations, which then come from L1/L2 rather than L3 */
    pk32 pks[GT];
    const int nsub = (nr + VW - 1) / VW;
    for (int sidx = 0; sidx < nsub; sidx++) {
        int64_t s0 = o0 + sidx * VW, s1 = s0 + VW < o1 ? s0 + VW : o1;
        FN(pack_blk32)(a, s0, s1, VW, sign_mode, (uint8_t *)scratch + sidx * tile_bytes_blk32(a), &pks[sidx]);
    }
    const int has_m = a->wtype == LPK_TYPE_Q4_1 || a->wtype == LPK_TYPE_Q5_1;
    const vf_xblk32 *xq = a->xq;
    const int32_t *xc = a->xaux;
    for (int64_t t0 = 0; t0 < n_tok; t0 += TT) {
    for (int sidx = 0; sidx < nsub; sidx++) {
        const pk32 pk = pks[sidx];
        const int64_t os = o0 + sidx * VW;
        const int ns = nr - sidx * VW < VW ? nr - sidx * VW : VW;
        /* activations are interleaved by token tile: (tile, block, token) */
        const vf_xblk32 *xt = xq + t0 * nb;
        const int32_t *ct = xc ? xc + t0 * nb : NULL;
        vf acc[TT];
#pragma GCC unroll 16
        for (int j = 0; j < TT; j++) {
            acc[j] = VF_ZERO();
        }
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *qb = pk.q + b * 32 * VW;
            vi is[TT];
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) is[j] = xc ? FN(bc32)(ct + b * TT + j) : VI_ZERO();
            if (sign_mode) {
                const uint8_t *qa = pk.qa + b * 32 * VW;
#pragma GCC unroll 8
                for (int g = 0; g < 8; g++) {
                    vi w = VI_LOAD(qb + g * 4 * VW), wa = VI_LOAD(qa + g * 4 * VW);
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++) {
                        vi xs = VI_SIGN8(FN(bc32)(xt[b * TT + j].qs + 4 * g), w);
                        is[j] = VI_ADD(is[j], VI_MADD16(VI_MADDUBS(wa, xs), VI_SET1_16(1)));
                    }
                }
            } else {
#if VNNI
                /* two chains per token: half the vpdpbusd latency chain */
                vi is2[TT];
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) is2[j] = VI_ZERO();
#pragma GCC unroll 4
                for (int g = 0; g < 8; g += 2) {
                    vi w0 = VI_LOAD(qb + g * 4 * VW), w1 = VI_LOAD(qb + (g + 1) * 4 * VW);
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++) {
                        is[j] = VI_DPBUSD(is[j], w0, FN(bc32)(xt[b * TT + j].qs + 4 * g));
                        is2[j] = VI_DPBUSD(is2[j], w1, FN(bc32)(xt[b * TT + j].qs + 4 * g + 4));
                    }
                }
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) is[j] = VI_ADD(is[j], is2[j]);
#else
#pragma GCC unroll 4
                for (int g = 0; g < 8; g += 2) {
                    vi w0 = VI_LOAD(qb + g * 4 * VW), w1 = VI_LOAD(qb + (g + 1) * 4 * VW);
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++)
                        is[j] = FN(dp8)(is[j], w0, FN(bc32)(xt[b * TT + j].qs + 4 * g), w1,
                                        FN(bc32)(xt[b * TT + j].qs + 4 * g + 4));
                }
#endif
            }
            vf dv = VF_LOAD(pk.d + b * VW);
            if (has_m) {
                vf mv = VF_LOAD(pk.m + b * VW);
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) {
                    vf p = VF_MUL(dv, VF_SET1(xt[b * TT + j].d));
                    acc[j] = VF_FMA(mv, VF_SET1(xt[b * TT + j].s), acc[j]);
                    acc[j] = VF_FMA(p, VF_CVT(is[j]), acc[j]);
                }
            } else {
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) {
                    vf p = VF_MUL(dv, VF_SET1(xt[b * TT + j].d));
                    acc[j] = VF_FMA(p, VF_CVT(is[j]), acc[j]);
                }
            }
        }
        for (int j = 0; j < TT && t0 + j < n_tok; j++)
            FN(store_rows)(a->y + (t0 + j) * a->n_out + os, acc[j], ns);
    }
    }
}

/* ---------------------------------------------------------------- q4_k */
static __attribute__((target(TGT))) void FN(rows_q4k)(const vf_gemm_args *a, int64_t o0,
                                                      int64_t o1, void *scratch)
{
    const int64_t nb = a->n_in / QK_K, n_tok = a->n_tok;
    const int nr = (int)(o1 - o0);
    /* GT sub-tiles of VW rows share every pass over a token tile's
     * activations, which then come from L1/L2 rather than L3 */
    pkk pks[GT];
    const int nsub = (nr + VW - 1) / VW;
    for (int sidx = 0; sidx < nsub; sidx++) {
        int64_t s0 = o0 + sidx * VW, s1 = s0 + VW < o1 ? s0 + VW : o1;
        FN(pack_q4k)(a, s0, s1, VW, VNNI, (uint8_t *)scratch + sidx * tile_bytes_k(a), &pks[sidx]);
    }
    const block_q8_K *xq = a->xq;
    const int32_t *xa = a->xaux;
    for (int64_t t0 = 0; t0 < n_tok; t0 += TT) {
    for (int sidx = 0; sidx < nsub; sidx++) {
        const pkk pk = pks[sidx];
        const int64_t os = o0 + sidx * VW;
        const int ns = nr - sidx * VW < VW ? nr - sidx * VW : VW;
        const block_q8_K *xt = xq + t0 * nb;
        const int32_t *at = xa + t0 * nb * 4;
        vf acc[TT];
#pragma GCC unroll 16
        for (int j = 0; j < TT; j++) {
            acc[j] = VF_ZERO();
        }
        for (int64_t b = 0; b < nb; b++) {
            vi sumi[TT], summ[TT];
            const int32_t *mn = pk.mins + b * 4 * VW;
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) {
                vi s = VI_MADD16(VI_LOAD(mn), FN(bc32)(at + (b * TT + j) * 4));
                s = VI_ADD(s, VI_MADD16(VI_LOAD(mn + VW), FN(bc32)(at + (b * TT + j) * 4 + 1)));
                s = VI_ADD(s, VI_MADD16(VI_LOAD(mn + 2 * VW), FN(bc32)(at + (b * TT + j) * 4 + 2)));
                summ[j] = VI_ADD(s, VI_MADD16(VI_LOAD(mn + 3 * VW), FN(bc32)(at + (b * TT + j) * 4 + 3)));
                sumi[j] = VI_ZERO();
            }
            for (int sb = 0; sb < 8; sb++) {
                const uint8_t *qb = pk.q + (b * 8 + sb) * 32 * VW;
                vi sc = VI_LOAD(pk.sc + (b * 8 + sb) * VW);
                vi s[TT];
#if VNNI
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) s[j] = VI_ZERO();
#pragma GCC unroll 8
                for (int g = 0; g < 8; g++) {
                    vi w = VI_LOAD(qb + g * 4 * VW);
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++)
                        s[j] = VI_DPBUSD(s[j], w, FN(bc32)(xt[b * TT + j].qs + sb * 32 + 4 * g));
                }
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) sumi[j] = VI_ADD(sumi[j], VI_MULLO(s[j], sc));
#else
                /* q <= 15: eight 16-bit pair sums stay below 2^15; the scale
                 * (sc, sc) as 16-bit pairs multiplies them in vpmaddwd */
                vi w = VI_LOAD(qb);
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) s[j] = VI_MADDUBS(w, FN(bc32)(xt[b * TT + j].qs + sb * 32));
#pragma GCC unroll 8
                for (int g = 1; g < 8; g++) {
                    w = VI_LOAD(qb + g * 4 * VW);
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++)
                        s[j] = VI_ADD16(s[j],
                                        VI_MADDUBS(w, FN(bc32)(xt[b * TT + j].qs + sb * 32 + 4 * g)));
                }
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) sumi[j] = VI_ADD(sumi[j], VI_MADD16(s[j], sc));
#endif
            }
            vf dv = VF_LOAD(pk.d + b * VW), mv = VF_LOAD(pk.dmin + b * VW);
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) {
                vf dx = VF_SET1(xt[b * TT + j].d);
                /* mv holds -dmin: acc += (-dmin dx) summ, then (d dx) sumi */
                acc[j] = VF_FMA(VF_MUL(mv, dx), VF_CVT(summ[j]), acc[j]);
                acc[j] = VF_FMA(VF_MUL(dv, dx), VF_CVT(sumi[j]), acc[j]);
            }
        }
        for (int j = 0; j < TT && t0 + j < n_tok; j++)
            FN(store_rows)(a->y + (t0 + j) * a->n_out + os, acc[j], ns);
    }
    }
}

/* ---------------------------------------------------------------- q6_k */
static __attribute__((target(TGT))) void FN(rows_q6k)(const vf_gemm_args *a, int64_t o0,
                                                      int64_t o1, void *scratch)
{
    const int64_t nb = a->n_in / QK_K, n_tok = a->n_tok;
    const int nr = (int)(o1 - o0);
    /* GT sub-tiles of VW rows share every pass over a token tile's
     * activations, which then come from L1/L2 rather than L3 */
    pkk pks[GT];
    const int nsub = (nr + VW - 1) / VW;
    for (int sidx = 0; sidx < nsub; sidx++) {
        int64_t s0 = o0 + sidx * VW, s1 = s0 + VW < o1 ? s0 + VW : o1;
        FN(pack_q6k)(a, s0, s1, VW, VNNI, (uint8_t *)scratch + sidx * tile_bytes_k(a), &pks[sidx]);
    }
    const block_q8_K *xq = a->xq;
    for (int64_t t0 = 0; t0 < n_tok; t0 += TT) {
    for (int sidx = 0; sidx < nsub; sidx++) {
        const pkk pk = pks[sidx];
        const int64_t os = o0 + sidx * VW;
        const int ns = nr - sidx * VW < VW ? nr - sidx * VW : VW;
        const block_q8_K *xt = xq + t0 * nb;
        vf acc[TT];
#pragma GCC unroll 16
        for (int j = 0; j < TT; j++) {
            acc[j] = VF_ZERO();
        }
        for (int64_t b = 0; b < nb; b++) {
            vi sumi[TT];
            const int32_t *nsc = pk.mins + b * 8 * VW;
            /* the -32 of every weight: sum over sub-blocks of -32 sc * bsum */
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) {
                vi s = VI_ZERO();
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    s = VI_ADD(s, VI_MADD16(VI_LOAD(nsc + k * VW), FN(bc32)(&xt[b * TT + j].bsums[2 * k])));
                sumi[j] = s;
            }
            for (int sb = 0; sb < 16; sb++) {
                const uint8_t *qb = pk.q + (b * 16 + sb) * 16 * VW;
                vi sc = VI_LOAD(pk.sc + (b * 16 + sb) * VW);
                vi w0 = VI_LOAD(qb), w1 = VI_LOAD(qb + 4 * VW);
                vi w2 = VI_LOAD(qb + 8 * VW), w3 = VI_LOAD(qb + 12 * VW);
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) {
                    const int8_t *x = xt[b * TT + j].qs + sb * 16;
#if VNNI
                    vi s = VI_DPBUSD(VI_ZERO(), w0, FN(bc32)(x));
                    s = VI_DPBUSD(s, w1, FN(bc32)(x + 4));
                    s = VI_DPBUSD(s, w2, FN(bc32)(x + 8));
                    s = VI_DPBUSD(s, w3, FN(bc32)(x + 12));
                    sumi[j] = VI_ADD(sumi[j], VI_MULLO(s, sc));
#else
                    /* q <= 63: two 16-bit pair sums stay below 2^15 */
                    vi p0 = VI_ADD16(VI_MADDUBS(w0, FN(bc32)(x)), VI_MADDUBS(w1, FN(bc32)(x + 4)));
                    vi p1 = VI_ADD16(VI_MADDUBS(w2, FN(bc32)(x + 8)), VI_MADDUBS(w3, FN(bc32)(x + 12)));
                    sumi[j] = VI_ADD(sumi[j], VI_ADD(VI_MADD16(p0, sc), VI_MADD16(p1, sc)));
#endif
                }
            }
            vf dv = VF_LOAD(pk.d + b * VW);
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) {
                vf p = VF_MUL(dv, VF_SET1(xt[b * TT + j].d));
                acc[j] = VF_FMA(p, VF_CVT(sumi[j]), acc[j]);
            }
        }
        for (int j = 0; j < TT && t0 + j < n_tok; j++)
            FN(store_rows)(a->y + (t0 + j) * a->n_out + os, acc[j], ns);
    }
    }
}

/* ---------------------------------------------------------------- fp32 */
/* A work item is GT sub-tiles of 2 VW rows, each converted to f32 and
 * transposed once and reused by every token. The input dimension is walked in
 * chunks: a chunk of the sub-tiles' weights stays in L2 and a token tile's
 * activations for the chunk in L1 while every sub-tile uses them; running sums
 * wait in accb between chunks (the order of operations is unchanged). Inner
 * loop per input element: 2 weight loads, TF broadcasts, 2 TF FMAs. */
static __attribute__((target(TGT))) void FN(rows_f32)(const vf_gemm_args *a, int64_t o0,
                                                      int64_t o1, void *scratch)
{
    const int64_t n_in = a->n_in, n_tok = a->n_tok, KCH = 256;
    const int R = 2 * VW;
    const int nsub = (int)((o1 - o0 + R - 1) / R);
    float *accb = scratch;                                  /* (GT, n_tok, R) */
    float *wts = (float *)((uint8_t *)scratch + GT * acc_bytes(a)); /* (GT, n_in, R) */
    float *tmp = wts + (size_t)GT * n_in * R;
    for (int sidx = 0; sidx < nsub; sidx++) {
        int64_t s0 = o0 + sidx * R, s1 = s0 + R < o1 ? s0 + R : o1;
        pack_f32(a, s0, s1, R, wts + (size_t)sidx * n_in * R, tmp);
    }
    for (int64_t c0 = 0; c0 < n_in; c0 += KCH) {
    const int64_t c1 = c0 + KCH < n_in ? c0 + KCH : n_in;
    for (int64_t t0 = 0; t0 < n_tok; t0 += TF) {
    for (int sidx = 0; sidx < nsub; sidx++) {
        const float *wt = wts + (size_t)sidx * n_in * R;
        float *ab = accb + (size_t)sidx * n_tok * R;
        const int nr = (int)((o1 - o0) - sidx * R < R ? (o1 - o0) - sidx * R : R);
        const float *xp[TF];
        vf acc0[TF], acc1[TF];
#pragma GCC unroll 16
        for (int j = 0; j < TF; j++) {
            int64_t t = TOK(t0, j, n_tok);
            xp[j] = a->x + t * n_in;
            acc0[j] = c0 ? VF_LOAD(ab + t * R) : VF_ZERO();
            acc1[j] = c0 ? VF_LOAD(ab + t * R + VW) : VF_ZERO();
        }
        for (int64_t i = c0; i < c1; i++) {
            vf w0 = VF_LOAD(wt + i * R), w1 = VF_LOAD(wt + i * R + VW);
#pragma GCC unroll 16
            for (int j = 0; j < TF; j++) {
                vf xb = VF_SET1(xp[j][i]);
                acc0[j] = VF_FMA(w0, xb, acc0[j]);
                acc1[j] = VF_FMA(w1, xb, acc1[j]);
            }
        }
        for (int j = 0; j < TF && t0 + j < n_tok; j++) {
            if (c1 < n_in) {
                VF_STORE(ab + (t0 + j) * R, acc0[j]);
                VF_STORE(ab + (t0 + j) * R + VW, acc1[j]);
                continue;
            }
            float *y = a->y + (t0 + j) * a->n_out + o0 + sidx * R;
            FN(store_rows)(y, acc0[j], nr < VW ? nr : VW);
            if (nr > VW) FN(store_rows)(y + VW, acc1[j], nr - VW);
        }
    }
    }
    }
}

static const vf_gemm_kernel FN(kern_blk32_) = {
    KNAME, KPATH, GT * VW, VNNI ? 128 : 0, TT, scratch_blk32, FN(rows_blk32)};
static const vf_gemm_kernel FN(kern_q4k_) = {KNAME, KPATH, GT * VW, 0, TT, scratch_k, FN(rows_q4k)};
static const vf_gemm_kernel FN(kern_q6k_) = {KNAME, KPATH, GT * VW, 0, TT, scratch_k, FN(rows_q6k)};
static const vf_gemm_kernel FN(kern_f32_) = {KNAME, KPATH, GT * 2 * VW, 0, 1, scratch_f32, FN(rows_f32)};

#undef vi
#undef vf
#undef VI_ZERO
#undef VI_LOAD
#undef VI_SET1
#undef VI_SET1_16
#undef VI_ADD
#undef VI_ADD16
#undef VI_MULLO
#undef VI_MADD16
#undef VI_MADDUBS
#undef VI_SIGN8
#undef VI_DPBUSD
#undef VF_ZERO
#undef VF_LOAD
#undef VF_STORE
#undef VF_SET1
#undef VF_ADD
#undef VF_SUB
#undef VF_MUL
#undef VF_FMA
#undef VF_CVT
#undef TT
#undef TF
#undef TOK
