/* verify/ internal: the SIMD GEMM kernels, written once for a vector of SIMD_W
 * 32-bit lanes (8: AVX2, 16: AVX-512) and included by vf_gemm_x86.c once per
 * instruction set (the SIMD template of docs/ARCHITECTURE.md). Parameters:
 * SIMD_W, SIMD_SFX (name suffix), SIMD_NAME (path name), SIMD_TGT (target
 * string), VNNI (0|1), KPATH (the path's VF_PATH_ value); all undefined at
 * the end.
 *
 * fp32, and int8 without VNNI: lanes are output rows: a tile of SIMD_W rows (2 SIMD_W
 * for fp32) is repacked once so that one vector load gives the same 4
 * consecutive weights (one f32 weight) of every row, and each token's
 * activations are broadcast against it. int8 with VNNI: lanes are tokens (see
 * "VNNI, lanes = tokens" below). Either way every lane performs exactly the
 * scalar reference's sequence of operations for its (row, token), so the
 * result is the reference's, bit for bit (see vf_gemm.h). */

#define SIMD_CAT_(a, b) a##b
#define SIMD_CAT(a, b) SIMD_CAT_(a, b)
#define FN(n) SIMD_CAT(n, SIMD_SFX)

#if SIMD_W == 8
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
#define TT (SIMD_W == 8 ? 4 : 8)
#define TF (SIMD_W == 8 ? 6 : 12)

LPK_SIMD_INL vi FN(bc32)(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return VI_SET1(v);
}

/* acc + sum over 8 bytes (two groups of 4 per lane) of u8 * s8; u8 <= 63 so
 * the 16-bit pair sums cannot saturate. */
LPK_SIMD_INL vi FN(dp8)(vi acc, vi w0, vi x0, vi w1,
                                                                       vi x1)
{
    vi p = VI_ADD16(VI_MADDUBS(w0, x0), VI_MADDUBS(w1, x1));
    return VI_ADD(acc, VI_MADD16(p, VI_SET1_16(1)));
}

/* Stores lanes [0, n) of v to y. */
LPK_SIMD_INL void FN(store_rows)(float *y, vf v, int n)
{
    if (n == SIMD_W) {
        VF_STORE(y, v);
    } else {
        float tmp[SIMD_W];
        VF_STORE(tmp, v);
        memcpy(y, tmp, (size_t)n * sizeof(float));
    }
}

/* Token t0 + j, clamped to the last token (a partial token tile recomputes
 * the last token and discards it). */
#define TOK(t0, j, n) ((t0) + (j) < (n) ? (t0) + (j) : (n) - 1)

/* ---------------------------------------------------------------- packing */
LPK_SIMD_INL float FN(half)(const uint8_t *p)
{
    return _cvtsh_ss(lpk_rd16(p));
}

/* Writes the 32 bytes of v as 8 groups of 4 at q, q + 4R, q + 8R, ... */
LPK_SIMD_INL void FN(scatter32)(uint8_t *q, __m256i v,
                                                                              int R)
{
    uint32_t t[8];
    _mm256_storeu_si256((__m256i *)(void *)t, v);
    for (int g = 0; g < 8; g++) memcpy(q + g * 4 * R, &t[g], 4);
}

/* One 32-block's weights as bytes: q8_0 and iq4_nl the signed weights, the
 * others the unsigned q (qw + the type's offset). */
LPK_SIMD_INL __m256i FN(unpack32)(int wtype,
                                                                                const uint8_t *b)
{
    const __m128i m4 = _mm_set1_epi8(15);
    switch (wtype) {
    case LPK_TYPE_Q8_0:
        return _mm256_loadu_si256((const __m256i *)(const void *)(b + 2));
    case LPK_TYPE_IQ4_NL: { /* the table values of the 4-bit indices */
        const __m256i tbl = _mm256_broadcastsi128_si256(
            _mm_loadu_si128((const __m128i *)(const void *)quant_iq4nl_values));
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(b + 2));
        __m256i idx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(15));
        return _mm256_shuffle_epi8(tbl, idx);
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

#if !VNNI
/* 32-blocks: see pk32 in vf_gemm_x86.c. */
LPK_SIMD_FN void FN(pack_blk32)(const vf_gemm_args *a, int64_t o0,
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
            __m256i v = FN(unpack32)(a->wtype, blk);
            FN(scatter32)(q, v, R);
            if (sign_mode) FN(scatter32)(qa, _mm256_abs_epi8(v), R);
        }
    }
}

/* One super-block of q5_k or iq4_xs (in q4_k's layout), q3_k or q2_k (in
 * q6_k's) for row r of the tile; blk NULL: a row past the tile's end (zeros). */
LPK_SIMD_INL void FN(pack_kg)(int wtype, const uint8_t *blk, int64_t b, int r, int R, pkk *pk)
{
    kg_blk k;
    if (blk) {
        kg_unpack(wtype, blk, &k);
    } else {
        memset(&k, 0, sizeof k);
        k.nsub = wtype == LPK_TYPE_Q3_K || wtype == LPK_TYPE_Q2_K ? 16 : 8;
    }
    const int ns = k.nsub, off = wtype == LPK_TYPE_Q3_K ? 4 : 0;
    pk->d[b * R + r] = k.d;
    pk->dmin[b * R + r] = -k.dmin;
    for (int j = 0; j < ns; j++) pk->sc[(b * ns + j) * R + r] = pair16(k.sc[j], k.sc[j]);
    /* q3_k: q + 4 (0..7) as unsigned weights; the pairs (-4 sc, -4 sc') take
     * 4 * sc * (sum of the sub-block's x) back out */
    for (int i = 0; i < ns / 2; i++)
        pk->mins[(b * (ns / 2) + i) * R + r] =
            off ? pair16(-off * k.sc[2 * i], -off * k.sc[2 * i + 1]) : pair16(k.mn[2 * i], k.mn[2 * i + 1]);
    uint8_t *q = pk->q + b * 256 * R + 4 * r, *qa = pk->qa + b * 256 * R + 4 * r;
    for (int c = 0; c < 8; c++) {
        __m256i v = _mm256_add_epi8(k.v[c], _mm256_set1_epi8((char)off));
        FN(scatter32)(q + c * 32 * R, v, R);
        if (wtype == LPK_TYPE_IQ4_XS) FN(scatter32)(qa + c * 32 * R, _mm256_abs_epi8(v), R);
    }
}

/* q4_k (q5_k, iq4_xs): see pkk in vf_gemm_x86.c. */
LPK_SIMD_FN void FN(pack_q4k)(const vf_gemm_args *a, int64_t o0,
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
            if (a->wtype != LPK_TYPE_Q4_K) {
                FN(pack_kg)(a->wtype, live ? blk : NULL, b, r, R, pk);
                continue;
            }
            uint8_t sc[8], mn[8];
            if (live) quant_q4k_scales(blk + 4, sc, mn);
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

/* q6_k (q3_k, q2_k): see pkk in vf_gemm_x86.c; q6_k's 6-bit q (= qw + 32) is
 * stored as is. */
LPK_SIMD_FN void FN(pack_q6k)(const vf_gemm_args *a, int64_t o0,
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
            if (a->wtype != LPK_TYPE_Q6_K) {
                FN(pack_kg)(a->wtype, live ? blk : NULL, b, r, R, pk);
                continue;
            }
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
LPK_SIMD_FN void FN(rows_blk32)(const vf_gemm_args *a, int64_t o0,
                                                        int64_t o1, int64_t o_next,
        void *scratch)
{
    (void)o_next;
    const int64_t nb = a->n_in / 32, n_tok = a->n_tok;
    const int nr = (int)(o1 - o0);
    /* q8_0, iq4_nl: signed weights, |w| <= 127 */
    const int sign_mode = a->wtype == LPK_TYPE_Q8_0 || a->wtype == LPK_TYPE_IQ4_NL;
    /* GT sub-tiles of SIMD_W rows share every pass over a token tile's
     * activations, which then come from L1/L2 rather than L3 */
    pk32 pks[GT];
    const int nsub = (nr + SIMD_W - 1) / SIMD_W;
    for (int sidx = 0; sidx < nsub; sidx++) {
        int64_t s0 = o0 + sidx * SIMD_W, s1 = s0 + SIMD_W < o1 ? s0 + SIMD_W : o1;
        FN(pack_blk32)(a, s0, s1, SIMD_W, sign_mode, (uint8_t *)scratch + sidx * tile_bytes_blk32(a), &pks[sidx]);
    }
    const int has_m = a->wtype == LPK_TYPE_Q4_1 || a->wtype == LPK_TYPE_Q5_1;
    const vf_xblk32 *xq = a->xq;
    const int32_t *xc = a->xaux;
    for (int64_t t0 = 0; t0 < n_tok; t0 += TT) {
    for (int sidx = 0; sidx < nsub; sidx++) {
        const pk32 pk = pks[sidx];
        const int64_t os = o0 + sidx * SIMD_W;
        const int ns = nr - sidx * SIMD_W < SIMD_W ? nr - sidx * SIMD_W : SIMD_W;
        /* activations are interleaved by token tile: (tile, block, token) */
        const vf_xblk32 *xt = xq + t0 * nb;
        const int32_t *ct = xc ? xc + t0 * nb : NULL;
        vf acc[TT];
#pragma GCC unroll 16
        for (int j = 0; j < TT; j++) {
            acc[j] = VF_ZERO();
        }
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *qb = pk.q + b * 32 * SIMD_W;
            vi is[TT];
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) is[j] = xc ? FN(bc32)(ct + b * TT + j) : VI_ZERO();
            if (sign_mode) {
                const uint8_t *qa = pk.qa + b * 32 * SIMD_W;
#pragma GCC unroll 8
                for (int g = 0; g < 8; g++) {
                    vi w = VI_LOAD(qb + g * 4 * SIMD_W), wa = VI_LOAD(qa + g * 4 * SIMD_W);
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++) {
                        vi xs = VI_SIGN8(FN(bc32)(xt[b * TT + j].qs + 4 * g), w);
                        is[j] = VI_ADD(is[j], VI_MADD16(VI_MADDUBS(wa, xs), VI_SET1_16(1)));
                    }
                }
            } else {
#pragma GCC unroll 4
                for (int g = 0; g < 8; g += 2) {
                    vi w0 = VI_LOAD(qb + g * 4 * SIMD_W), w1 = VI_LOAD(qb + (g + 1) * 4 * SIMD_W);
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++)
                        is[j] = FN(dp8)(is[j], w0, FN(bc32)(xt[b * TT + j].qs + 4 * g), w1,
                                        FN(bc32)(xt[b * TT + j].qs + 4 * g + 4));
                }
            }
            vf dv = VF_LOAD(pk.d + b * SIMD_W);
            if (has_m) {
                vf mv = VF_LOAD(pk.m + b * SIMD_W);
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

/* ---------------------------------------------------------------- q4_k, q5_k, iq4_xs */
/* mode 0 q4_k, 1 q5_k, 2 iq4_xs (a constant in each caller below). */
LPK_SIMD_INL void FN(rows_q4k_m)(const vf_gemm_args *a, int64_t o0,
                                 int64_t o1, void *scratch, int mode)
{
    const int64_t nb = a->n_in / QK_K, n_tok = a->n_tok;
    const int nr = (int)(o1 - o0);
    /* GT sub-tiles of SIMD_W rows share every pass over a token tile's
     * activations, which then come from L1/L2 rather than L3 */
    pkk pks[GT];
    const int nsub = (nr + SIMD_W - 1) / SIMD_W;
    for (int sidx = 0; sidx < nsub; sidx++) {
        int64_t s0 = o0 + sidx * SIMD_W, s1 = s0 + SIMD_W < o1 ? s0 + SIMD_W : o1;
        FN(pack_q4k)(a, s0, s1, SIMD_W, VNNI, (uint8_t *)scratch + sidx * tile_bytes_k(a), &pks[sidx]);
    }
    const block_q8_K *xq = a->xq;
    const int32_t *xa = a->xaux;
    /* groups of 4 weights summed in int16 before vpmaddwd: q4_k all 8 of a
     * sub-block (16 products of q <= 15 and |x| <= 127: <= 30480), q5_k 4
     * (8 products of q <= 31: <= 31496) */
    const int GS = mode == 1 ? 4 : 8;
    for (int64_t t0 = 0; t0 < n_tok; t0 += TT) {
    for (int sidx = 0; sidx < nsub; sidx++) {
        const pkk pk = pks[sidx];
        const int64_t os = o0 + sidx * SIMD_W;
        const int ns = nr - sidx * SIMD_W < SIMD_W ? nr - sidx * SIMD_W : SIMD_W;
        const block_q8_K *xt = xq + t0 * nb;
        const int32_t *at = mode != 2 ? xa + t0 * nb * 4 : NULL;
        vf acc[TT];
#pragma GCC unroll 16
        for (int j = 0; j < TT; j++) {
            acc[j] = VF_ZERO();
        }
        for (int64_t b = 0; b < nb; b++) {
            vi sumi[TT], summ[TT];
            const int32_t *mn = pk.mins + b * 4 * SIMD_W;
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) {
                sumi[j] = summ[j] = VI_ZERO();
                if (mode == 2) continue;
                vi s = VI_MADD16(VI_LOAD(mn), FN(bc32)(at + (b * TT + j) * 4));
                s = VI_ADD(s, VI_MADD16(VI_LOAD(mn + SIMD_W), FN(bc32)(at + (b * TT + j) * 4 + 1)));
                s = VI_ADD(s, VI_MADD16(VI_LOAD(mn + 2 * SIMD_W), FN(bc32)(at + (b * TT + j) * 4 + 2)));
                summ[j] = VI_ADD(s, VI_MADD16(VI_LOAD(mn + 3 * SIMD_W), FN(bc32)(at + (b * TT + j) * 4 + 3)));
            }
            for (int sb = 0; sb < 8; sb++) {
                const uint8_t *qb = pk.q + (b * 8 + sb) * 32 * SIMD_W;
                vi sc = VI_LOAD(pk.sc + (b * 8 + sb) * SIMD_W);
                if (mode == 2) {
                    /* signed weights: |w| * (x with w's sign), pairs <= 2 * 127 *
                     * 127 in int16, each scaled by (sc, sc) in vpmaddwd */
                    const uint8_t *qa = pk.qa + (b * 8 + sb) * 32 * SIMD_W;
#pragma GCC unroll 8
                    for (int g = 0; g < 8; g++) {
                        vi w = VI_LOAD(qb + g * 4 * SIMD_W), wa = VI_LOAD(qa + g * 4 * SIMD_W);
#pragma GCC unroll 16
                        for (int j = 0; j < TT; j++) {
                            vi xs = VI_SIGN8(FN(bc32)(xt[b * TT + j].qs + sb * 32 + 4 * g), w);
                            sumi[j] = VI_ADD(sumi[j], VI_MADD16(VI_MADDUBS(wa, xs), sc));
                        }
                    }
                    continue;
                }
#pragma GCC unroll 2
                for (int g0 = 0; g0 < 8; g0 += GS) {
                    vi s[TT];
                    /* the scale (sc, sc) as 16-bit pairs multiplies the int16
                     * sums in vpmaddwd */
                    vi w = VI_LOAD(qb + g0 * 4 * SIMD_W);
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++) s[j] = VI_MADDUBS(w, FN(bc32)(xt[b * TT + j].qs + sb * 32 + 4 * g0));
#pragma GCC unroll 8
                    for (int g = g0 + 1; g < g0 + GS; g++) {
                        w = VI_LOAD(qb + g * 4 * SIMD_W);
#pragma GCC unroll 16
                        for (int j = 0; j < TT; j++)
                            s[j] = VI_ADD16(s[j],
                                            VI_MADDUBS(w, FN(bc32)(xt[b * TT + j].qs + sb * 32 + 4 * g)));
                    }
#pragma GCC unroll 16
                    for (int j = 0; j < TT; j++) sumi[j] = VI_ADD(sumi[j], VI_MADD16(s[j], sc));
                }
            }
            vf dv = VF_LOAD(pk.d + b * SIMD_W), mv = VF_LOAD(pk.dmin + b * SIMD_W);
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) {
                vf dx = VF_SET1(xt[b * TT + j].d);
                /* mv holds -dmin: acc += (-dmin dx) summ, then (d dx) sumi */
                if (mode != 2) acc[j] = VF_FMA(VF_MUL(mv, dx), VF_CVT(summ[j]), acc[j]);
                acc[j] = VF_FMA(VF_MUL(dv, dx), VF_CVT(sumi[j]), acc[j]);
            }
        }
        for (int j = 0; j < TT && t0 + j < n_tok; j++)
            FN(store_rows)(a->y + (t0 + j) * a->n_out + os, acc[j], ns);
    }
    }
}

LPK_SIMD_FN void FN(rows_q4k)(const vf_gemm_args *a, int64_t o0,
                              int64_t o1, int64_t o_next,
        void *scratch)
{
    (void)o_next;
    switch (a->wtype) {
    case LPK_TYPE_Q5_K: FN(rows_q4k_m)(a, o0, o1, scratch, 1); break;
    case LPK_TYPE_IQ4_XS: FN(rows_q4k_m)(a, o0, o1, scratch, 2); break;
    default: FN(rows_q4k_m)(a, o0, o1, scratch, 0); break;
    }
}

/* ---------------------------------------------------------------- q6_k, q3_k, q2_k */
/* with_min: q2_k (a constant in each caller below). */
LPK_SIMD_INL void FN(rows_q6k_m)(const vf_gemm_args *a, int64_t o0,
                                 int64_t o1, void *scratch, int with_min)
{
    const int64_t nb = a->n_in / QK_K, n_tok = a->n_tok;
    const int nr = (int)(o1 - o0);
    /* GT sub-tiles of SIMD_W rows share every pass over a token tile's
     * activations, which then come from L1/L2 rather than L3 */
    pkk pks[GT];
    const int nsub = (nr + SIMD_W - 1) / SIMD_W;
    for (int sidx = 0; sidx < nsub; sidx++) {
        int64_t s0 = o0 + sidx * SIMD_W, s1 = s0 + SIMD_W < o1 ? s0 + SIMD_W : o1;
        FN(pack_q6k)(a, s0, s1, SIMD_W, VNNI, (uint8_t *)scratch + sidx * tile_bytes_k(a), &pks[sidx]);
    }
    const block_q8_K *xq = a->xq;
    for (int64_t t0 = 0; t0 < n_tok; t0 += TT) {
    for (int sidx = 0; sidx < nsub; sidx++) {
        const pkk pk = pks[sidx];
        const int64_t os = o0 + sidx * SIMD_W;
        const int ns = nr - sidx * SIMD_W < SIMD_W ? nr - sidx * SIMD_W : SIMD_W;
        const block_q8_K *xt = xq + t0 * nb;
        vf acc[TT];
#pragma GCC unroll 16
        for (int j = 0; j < TT; j++) {
            acc[j] = VF_ZERO();
        }
        for (int64_t b = 0; b < nb; b++) {
            vi sumi[TT], summ[TT];
            const int32_t *nsc = pk.mins + b * 8 * SIMD_W;
            /* q6_k, q3_k: the offset of every weight, sum over sub-blocks of
             * -off sc * bsum; q2_k: the mins part, sum of m * bsum */
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) {
                vi s = VI_ZERO();
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    s = VI_ADD(s, VI_MADD16(VI_LOAD(nsc + k * SIMD_W), FN(bc32)(&xt[b * TT + j].bsums[2 * k])));
                summ[j] = with_min ? s : VI_ZERO();
                sumi[j] = with_min ? VI_ZERO() : s;
            }
            for (int sb = 0; sb < 16; sb++) {
                const uint8_t *qb = pk.q + (b * 16 + sb) * 16 * SIMD_W;
                vi sc = VI_LOAD(pk.sc + (b * 16 + sb) * SIMD_W);
                vi w0 = VI_LOAD(qb), w1 = VI_LOAD(qb + 4 * SIMD_W);
                vi w2 = VI_LOAD(qb + 8 * SIMD_W), w3 = VI_LOAD(qb + 12 * SIMD_W);
#pragma GCC unroll 16
                for (int j = 0; j < TT; j++) {
                    const int8_t *x = xt[b * TT + j].qs + sb * 16;
                    /* q <= 63: two 16-bit pair sums stay below 2^15 */
                    vi p0 = VI_ADD16(VI_MADDUBS(w0, FN(bc32)(x)), VI_MADDUBS(w1, FN(bc32)(x + 4)));
                    vi p1 = VI_ADD16(VI_MADDUBS(w2, FN(bc32)(x + 8)), VI_MADDUBS(w3, FN(bc32)(x + 12)));
                    sumi[j] = VI_ADD(sumi[j], VI_ADD(VI_MADD16(p0, sc), VI_MADD16(p1, sc)));
                }
            }
            vf dv = VF_LOAD(pk.d + b * SIMD_W), mv = VF_LOAD(pk.dmin + b * SIMD_W);
#pragma GCC unroll 16
            for (int j = 0; j < TT; j++) {
                vf dx = VF_SET1(xt[b * TT + j].d);
                /* mv holds -dmin: acc += (-dmin dx) summ, then (d dx) sumi */
                if (with_min) acc[j] = VF_FMA(VF_MUL(mv, dx), VF_CVT(summ[j]), acc[j]);
                acc[j] = VF_FMA(VF_MUL(dv, dx), VF_CVT(sumi[j]), acc[j]);
            }
        }
        for (int j = 0; j < TT && t0 + j < n_tok; j++)
            FN(store_rows)(a->y + (t0 + j) * a->n_out + os, acc[j], ns);
    }
    }
}

LPK_SIMD_FN void FN(rows_q6k)(const vf_gemm_args *a, int64_t o0,
                              int64_t o1, int64_t o_next,
        void *scratch)
{
    (void)o_next;
    if (a->wtype == LPK_TYPE_Q2_K) FN(rows_q6k_m)(a, o0, o1, scratch, 1);
    else FN(rows_q6k_m)(a, o0, o1, scratch, 0);
}

#endif /* !VNNI */

#if VNNI
/* ---------------------------------------------------------------- VNNI, lanes = tokens */
/* The int8 kernels of the VNNI path turn the tile around: a lane is a token
 * (a group of XT = 16), a register tile is RT rows x 16 tokens. Activations
 * are laid out once per call (xprep: 4 bytes of every token of the group per
 * 64-byte vector, as unsigned x + 128); weights are unpacked per work item to
 * signed bytes, row after row, and each vpdpbusd reads its row's 4 weights as
 * a {1to16} broadcast memory operand. No transposition of the weights, and the
 * +128 of the activations is undone exactly by starting each integer sum at
 * -128 * (sum of the weights), a per-row constant loaded by a broadcast. */

/* acc + vpdpbusd(x, the int32 at p broadcast): GCC does not fold the
 * broadcast into vpdpbusd's {1to16} memory operand by itself, and a separate
 * vpbroadcastd per vpdpbusd doubles the instructions of the inner loop. */
LPK_SIMD_INL vi FN(dpbc)(vi acc, vi x, const void *p)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*(const int32_t *)p));
    return acc;
}

/* vpdpbusd(0, x, the int32 at p broadcast). vpxord is a zero idiom (no
 * execution port); GCC would rather copy a zeroed register, one more vector
 * instruction per chain. */
LPK_SIMD_INL vi FN(dpbc0)(vi x, const void *p)
{
    vi acc;
    __asm__("vpxord %0, %0, %0\n\tvpdpbusd %2%{1to16%}, %1, %0"
            : "=&v"(acc)
            : "v"(x), "m"(*(const int32_t *)p));
    return acc;
}

/* sum + vpdpwssd(s, the int32 at p broadcast), in place: sum + s * sc in one
 * instruction when s is in int16 range and the int32 at p is (sc, 0) as
 * int16s. */
LPK_SIMD_INL vi FN(wsacc)(vi sum, vi s, const void *p)
{
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(sum) : "v"(s), "m"(*(const int32_t *)p));
    return sum;
}

/* sum + vpdpwssd(a, b), registers only, in place (as wsacc). */
LPK_SIMD_INL vi FN(dpwr)(vi sum, vi a, vi b)
{
    __asm__("vpdpwssd %2, %1, %0" : "+v"(sum) : "v"(a), "v"(b));
    return sum;
}

/* Activations of one group, 32-blocks: per block vt_x32 (see vf_gemm_x86.c),
 * the 16 tokens of the group a block at a time, each exactly as the scalar
 * quantizer does it: amax (exact in any order; NaN skipped, as `a > amax`
 * skips it), id = 127 / amax, q = x * id rounded to nearest even (vcvtps2dq,
 * like lrintf) and clamped to +-127 (out-of-range or NaN products clamp to
 * -127 in both), d and s rounded to f16 by vcvtps2ph (round to nearest even,
 * as lpk_f32_to_f16; the same for subnormal, infinite and NaN values) from the
 * same float operations as vf_x32_scales. The 16 x 32 bytes are turned into
 * the (group of 4, token) order by three rounds of vpermt2d, each exchanging
 * one bit of the register index with one bit of the lane index. */
LPK_SIMD_FN void FN(xprep_t32)(const vf_gemm_args *a, int64_t grp,
                                                       void *out)
{
    const int64_t nb = a->n_in / 32;
    vt_x32 *o = out;
    const float *xr[XT];
    for (int t = 0; t < XT; t++) xr[t] = a->x + TOK(grp * XT, t, a->n_tok) * a->n_in;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    /* round k swaps register-index bit k with lane bit k: the register with
     * the bit clear takes lanes of the bit clear from itself and from the
     * other register (moved down), the other one the lanes of the bit set */
    __m512i ix[3], iy[3];
    for (int k = 0; k < 3; k++) {
        int32_t xi[16], yi[16];
        for (int l = 0; l < 16; l++) {
            int bit = 1 << k;
            xi[l] = l & bit ? 16 + (l & ~bit) : l;
            yi[l] = l & bit ? 16 + l : l | bit;
        }
        ix[k] = _mm512_loadu_si512(xi);
        iy[k] = _mm512_loadu_si512(yi);
    }
    for (int64_t b = 0; b < nb; b++) {
        float am[XT], id[XT];
        for (int t = 0; t < XT; t++) {
            const float *v = xr[t] + 32 * b;
            __m512 m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(v)), _mm512_setzero_ps());
            m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(v + 16)), m);
            am[t] = _mm512_reduce_max_ps(m);
        }
        __m512 amv = _mm512_loadu_ps(am);
        __mmask16 nz = _mm512_cmp_ps_mask(amv, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_storeu_ps(id, _mm512_maskz_div_ps(nz, _mm512_set1_ps(127.0f), amv));
        /* token t's 32 bytes at 64 (t % 8) + 32 (t / 8): register k holds
         * tokens k and k + 8, so that after the three rounds lane t is token t */
        __m512i r[8];
        for (int t = 0; t < XT; t++) {
            const float *v = xr[t] + 32 * b;
            const __m512 vid = _mm512_set1_ps(id[t]);
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v), vid));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + 16), vid));
            q0 = _mm512_min_epi32(_mm512_max_epi32(q0, lo), hi);
            q1 = _mm512_min_epi32(_mm512_max_epi32(q1, lo), hi);
            __m256i q = _mm256_set_m128i(_mm512_cvtepi32_epi8(q1), _mm512_cvtepi32_epi8(q0));
            if (t < 8) r[t] = _mm512_castsi256_si512(q);
            else r[t - 8] = _mm512_inserti64x4(r[t - 8], q, 1);
        }
        for (int k = 0; k < 3; k++) {
            const int bit = 1 << k;
            for (int i = 0; i < 8; i++) {
                if (i & bit) continue;
                __m512i x = r[i], y = r[i | bit];
                r[i] = _mm512_permutex2var_epi32(x, ix[k], y);
                r[i | bit] = _mm512_permutex2var_epi32(x, iy[k], y);
            }
        }
        /* sum of q per token: vpdpbusd of (q + 128) with bytes of 1, less 32 * 128 */
        __m512i sum = _mm512_set1_epi32(-32 * 128);
        for (int g = 0; g < 8; g++) {
            __m512i u = _mm512_xor_si512(r[g], _mm512_set1_epi8((char)0x80));
            sum = _mm512_dpbusd_epi32(sum, u, _mm512_set1_epi8(1));
            _mm512_storeu_si512(o[b].q[g], u);
        }
        __m512 d = _mm512_div_ps(amv, _mm512_set1_ps(127.0f));
        __m512 s = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sum));
        /* the rounding is an immediate: a macro, not a variable (clang wants a
         * constant expression) */
#define VF_RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
        _mm512_storeu_ps(o[b].d, _mm512_cvtph_ps(_mm512_cvtps_ph(d, VF_RN)));
        _mm512_storeu_ps(o[b].s, _mm512_cvtph_ps(_mm512_cvtps_ph(s, VF_RN)));
#undef VF_RN
    }
}

/* Activations of one group, q8_K: per super-block vt_xk. */
LPK_SIMD_FN void FN(xprep_tk)(const vf_gemm_args *a, int64_t grp,
                                                      void *out)
{
    const int64_t nb = a->n_in / QK_K;
    vt_xk *o = out;
    for (int t = 0; t < XT; t++) {
        int64_t ts = TOK(grp * XT, t, a->n_tok);
        for (int64_t b = 0; b < nb; b++) {
            block_q8_K xb, *x = &xb;
            vf_quantize_xk_avx2(a->x + ts * a->n_in + QK_K * b, QK_K, x); /* = the scalar bits */
            for (int c = 0; c < 8; c++) {
                __m256i v = _mm256_xor_si256(
                    _mm256_loadu_si256((const __m256i *)(const void *)(x->qs + 32 * c)),
                    _mm256_set1_epi8((char)0x80));
                FN(scatter32)(o[b].q[8 * c][t], v, XT);
            }
            o[b].d[t] = x->d;
            for (int k = 0; k < 4; k++) {
                const int16_t *s = x->bsums + 4 * k;
                o[b].bs[k][t] = pair16(s[0] + s[1], s[2] + s[3]);
            }
            for (int k = 0; k < 8; k++) o[b].bs16[k][t] = pair16(x->bsums[2 * k], x->bsums[2 * k + 1]);
        }
    }
}

/* Sum of the 32 signed bytes of v. */
LPK_SIMD_INL int32_t FN(sum_s8)(__m256i v)
{
    __m256i s = _mm256_sad_epu8(_mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)),
                                _mm256_setzero_si256());
    __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi64(h, _mm_unpackhi_epi64(h, h));
    return _mm_cvtsi128_si32(h) - 32 * 128;
}

/* Weights of rows [o0, o1) as vt_w32 blocks of RT32 rows (rows past o1 zero).
 * Block by block across the rows: the rows come from memory (a few KiB apart,
 * often a page each), so all of them stream at once, each asked for 512 bytes
 * ahead (the hardware prefetcher stops at page ends), and each vt_w32 is
 * written whole. */
LPK_SIMD_FN void FN(pack_t32)(const vf_gemm_args *a, int64_t o0,
                                                      int64_t o1, vt_w32 *pk)
{
    const int64_t nb = a->n_in / 32;
    const int has_m = a->wtype == LPK_TYPE_Q4_1 || a->wtype == LPK_TYPE_Q5_1;
    const int off = a->wtype == LPK_TYPE_Q4_0 ? 8 : a->wtype == LPK_TYPE_Q5_0 ? 16 : 0;
    const __m256i voff = _mm256_set1_epi8((char)off);
    const int nr = (int)(o1 - o0);
    const uint8_t *w0 = (const uint8_t *)a->w + o0 * a->row_bytes;
    for (int r = nr; r < RT32; r++)
        for (int64_t b = 0; b < nb; b++) {
            memset(pk[b].q[r], 0, 32);
            pk[b].d[r] = pk[b].m[r] = 0.0f;
            pk[b].c[r] = 0;
        }
    for (int64_t b = 0; b < nb; b++) {
        vt_w32 *p = pk + b;
        for (int r = 0; r < nr; r++) {
            const uint8_t *blk = w0 + r * a->row_bytes + b * a->type_size;
            _mm_prefetch((const char *)(blk + 512), _MM_HINT_T0);
            __m256i v = _mm256_sub_epi8(FN(unpack32)(a->wtype, blk), voff);
            _mm256_storeu_si256((__m256i *)(void *)p->q[r], v);
            p->d[r] = FN(half)(blk);
            p->m[r] = has_m ? FN(half)(blk + 2) : 0.0f;
            p->c[r] = -128 * FN(sum_s8)(v);
        }
    }
}

/* acc + vpdpbusd(x, w), registers only (GCC would fold a broadcast w into
 * each vpdpbusd as a memory operand: one load per use instead of one). */
LPK_SIMD_INL vi FN(dpbr)(vi acc, vi x, vi w)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
    return acc;
}

/* One sub-tile of RT32 rows against NG (1 or 2, a constant at each call)
 * token groups, all blocks: each row's 4 weights are broadcast into a
 * register once and used for both groups (a register tile of RT32 rows x 32
 * tokens: 4 RT32 + 3 vectors live). */
LPK_SIMD_INL void FN(tile_t32)(const vt_w32 *pk, const vt_x32 *xg0, const vt_x32 *xg1, int64_t nb,
                               int has_m, const int NG, vf *out0, vf *out1)
{
    /* local sums: out escapes */
    vf acc[2][RT32];
#pragma GCC unroll 16
    for (int r = 0; r < RT32; r++) {
        acc[0][r] = out0[r];
        acc[1][r] = NG > 1 ? out1[r] : VF_ZERO();
    }
    for (int64_t b = 0; b < nb; b++) {
        const vt_w32 *w = pk + b;
        const vt_x32 *x[2] = {xg0 + b, NG > 1 ? xg1 + b : xg0 + b};
        vi is[2][RT32];
#pragma GCC unroll 16
        for (int r = 0; r < RT32; r++) {
            vi c = VI_SET1(w->c[r]);
            is[0][r] = c;
            is[1][r] = c;
        }
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            vi xv0 = VI_LOAD(x[0]->q[g]), xv1 = NG > 1 ? VI_LOAD(x[1]->q[g]) : xv0;
#pragma GCC unroll 16
            for (int r = 0; r < RT32; r++) {
                vi wb = FN(bc32)(w->q[r] + 4 * g);
                is[0][r] = FN(dpbr)(is[0][r], xv0, wb);
                if (NG > 1) is[1][r] = FN(dpbr)(is[1][r], xv1, wb);
            }
        }
#pragma GCC unroll 2
        for (int h = 0; h < NG; h++) {
            vf dx = VF_LOAD(x[h]->d);
            if (has_m) {
                vf sx = VF_LOAD(x[h]->s);
#pragma GCC unroll 16
                for (int r = 0; r < RT32; r++) acc[h][r] = VF_FMA(sx, VF_SET1(w->m[r]), acc[h][r]);
            }
#pragma GCC unroll 16
            for (int r = 0; r < RT32; r++)
                acc[h][r] = VF_FMA(VF_MUL(dx, VF_SET1(w->d[r])), VF_CVT(is[h][r]), acc[h][r]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RT32; r++) {
        out0[r] = acc[0][r];
        if (NG > 1) out1[r] = acc[1][r];
    }
}

/* Sums of the signed bytes of v in runs of n (8, 16 or 32), to out[0 .. 32 / n). */
LPK_SIMD_INL void FN(run_sums)(__m256i v, int n, int32_t *out)
{
    int64_t h8[4];
    _mm256_storeu_si256((__m256i *)(void *)h8,
                        _mm256_sad_epu8(_mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)), _mm256_setzero_si256()));
    for (int k = 0; k < 32 / n; k++) {
        int64_t s = 0;
        for (int i = 0; i < n / 8; i++) s += h8[k * (n / 8) + i];
        out[k] = (int32_t)s - n * 128;
    }
}

/* k-quants: weights of rows [o0, o1) as vt_wk super-blocks of RTK rows. q4_k:
 * q - 8 (-8..7: a half sub-block's sum against x + 128 fits int16), sc8 the
 * pairs (8 sc[2k], 8 sc[2k + 1]) that add back the 8, c = -128 sum_j sc_j (sum
 * of sub-block j's weights); q6_k: q - 32, sc = (sc, 0) as int16s, hc the
 * chain starts -128 * (sum of each half sub-block), c = 0. q5_k: q - 16, hc
 * per half sub-block (16), sc8 = (16 sc[2k], 16 sc[2k + 1]), mins as q4_k's;
 * q3_k, q2_k: qw (-4..3, 0..3), sc = (sc, 0), hc per sub-block (16), q2_k's
 * mins as pairs (m[2k], m[2k + 1]) of sub-blocks of 16; iq4_xs: the values,
 * sc the plain int32 scale, hc per sub-block (32). c = 0 for all of these. */
LPK_SIMD_FN void FN(pack_tk)(const vf_gemm_args *a, int64_t o0,
                                                     int64_t o1, vt_wk *pk)
{
    const int64_t nb = a->n_in / QK_K;
    const int q4 = a->wtype == LPK_TYPE_Q4_K;
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    for (int r = 0; r < RTK; r++) {
        const uint8_t *row = (const uint8_t *)a->w + (o0 + r) * a->row_bytes;
        for (int64_t b = 0; b < nb; b++) {
            vt_wk *p = pk + b;
            if (o0 + r >= o1) {
                memset(p->q[r], 0, QK_K);
                memset(p->sc[r], 0, sizeof p->sc[r]);
                memset(p->mn[r], 0, sizeof p->mn[r]);
                memset(p->sc8[r], 0, sizeof p->sc8[r]);
                memset(p->hc[r], 0, sizeof p->hc[r]);
                p->d[r] = p->dm[r] = 0.0f;
                p->c[r] = 0;
                continue;
            }
            const uint8_t *blk = row + b * a->type_size;
            /* the weights come from memory, a row per 4 KiB page or so: ask for
             * them 1 KiB ahead (the hardware prefetcher stops at page ends) */
            _mm_prefetch((const char *)(blk + 1024), _MM_HINT_T0);
            __m256i v[8];
            int32_t c = 0;
            if (a->wtype != LPK_TYPE_Q4_K && a->wtype != LPK_TYPE_Q6_K) {
                kg_blk k;
                kg_unpack(a->wtype, blk, &k);
                const int q5 = a->wtype == LPK_TYPE_Q5_K, xs = a->wtype == LPK_TYPE_IQ4_XS;
                /* runs whose integer sum must fit int16 or stay in int32 */
                const int run = xs ? 32 : 16;
                for (int j = 0; j < 8; j++) {
                    v[j] = q5 ? _mm256_sub_epi8(k.v[j], _mm256_set1_epi8(16)) : k.v[j];
                    FN(run_sums)(v[j], run, &p->hc[r][j * (32 / run)]);
                }
                for (int j = 0; j < 8 * (32 / run); j++) p->hc[r][j] *= -128;
                for (int j = 0; j < k.nsub; j++) p->sc[r][j] = xs ? k.sc[j] : pair16(k.sc[j], 0);
                if (q5)
                    for (int i = 0; i < 4; i++) {
                        p->mn[r][i] = pair16(k.mn[2 * i], k.mn[2 * i + 1]);
                        p->sc8[r][i] = pair16(16 * k.sc[2 * i], 16 * k.sc[2 * i + 1]);
                    }
                if (a->wtype == LPK_TYPE_Q2_K)
                    for (int i = 0; i < 8; i++) p->mn[r][i] = pair16(k.mn[2 * i], k.mn[2 * i + 1]);
                p->d[r] = k.d;
                p->dm[r] = -k.dmin;
            } else if (q4) {
                uint8_t sc[8], mn[8];
                quant_q4k_scales(blk + 4, sc, mn);
                const __m256i m8 = _mm256_set1_epi8(8);
                for (int k = 0; k < 4; k++) {
                    __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16 + 32 * k));
                    v[2 * k] = _mm256_sub_epi8(_mm256_and_si256(x, m4), m8);
                    v[2 * k + 1] = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(x, 4), m4), m8);
                    p->mn[r][k] = pair16(mn[2 * k], mn[2 * k + 1]);
                    p->sc8[r][k] = pair16(8 * sc[2 * k], 8 * sc[2 * k + 1]);
                }
                for (int j = 0; j < 8; j++) {
                    p->sc[r][j] = sc[j];
                    c += sc[j] * FN(sum_s8)(v[j]);
                }
                p->d[r] = FN(half)(blk);
                p->dm[r] = -FN(half)(blk + 2);
            } else {
                for (int h = 0; h < 2; h++) {
                    __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 64 * h));
                    __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 64 * h + 32));
                    __m256i hh = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 128 + 32 * h));
                    __m256i m32 = _mm256_set1_epi8(32);
#define Q6(l, sh) _mm256_sub_epi8(_mm256_or_si256(l, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, sh), m2), 4)), m32)
                    v[4 * h] = Q6(_mm256_and_si256(l0, m4), 0);
                    v[4 * h + 1] = Q6(_mm256_and_si256(l1, m4), 2);
                    v[4 * h + 2] = Q6(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), 4);
                    v[4 * h + 3] = Q6(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), 6);
#undef Q6
                }
                for (int j = 0; j < 16; j++) p->sc[r][j] = pair16((int8_t)blk[192 + j], 0);
                for (int i = 0; i < 8; i++) {
                    /* 8-byte sums of v[i]: halves of sub-blocks 2i, 2i + 1 */
                    int64_t h8[4];
                    _mm256_storeu_si256((__m256i *)(void *)h8,
                                        _mm256_sad_epu8(_mm256_xor_si256(v[i], _mm256_set1_epi8((char)0x80)),
                                                        _mm256_setzero_si256()));
                    for (int k = 0; k < 4; k++) p->hc[r][4 * i + k] = -128 * ((int32_t)h8[k] - 8 * 128);
                }
                p->d[r] = FN(half)(blk + 208);
                p->dm[r] = 0.0f;
            }
            for (int j = 0; j < 8; j++) _mm256_storeu_si256((__m256i *)(void *)(p->q[r] + 32 * j), v[j]);
            p->c[r] = -128 * c;
        }
    }
}

LPK_SIMD_INL vf FN(tail_k)(vf acc, vf dx, float d,
                                                                        vi sumi)
{
    return VF_FMA(VF_MUL(dx, VF_SET1(d)), VF_CVT(sumi), acc);
}

/* q4_k (q5 0) and q5_k (q5 1), one sub-tile against one token group: per
 * half sub-block of 16, 4 vpdpbusd per row, then one vpdpwssd adds sc * s to
 * sumi (2 instructions per 32 weights where vpmulld + vpaddd take 3 uops); 4
 * vpdpwssd on the (bsum, bsum) pairs add the 8 of q - 8 (16 of q - 16), 4 more
 * make the mins part. q5_k's chains start at hc: each sum is then that of
 * (q - 16) * x, |.| <= 16 * 16 * 127 = 32512, in int16 range. */
LPK_SIMD_INL void FN(tile_q4kt)(const vt_wk *pk,
                                                                             const vt_xk *xg,
                                                                             int64_t nb, vf *out, int q5)
{
    vf acc[RTK];
#pragma GCC unroll 16
    for (int r = 0; r < RTK; r++) acc[r] = out[r];
    for (int64_t b = 0; b < nb; b++) {
        const vt_wk *w = pk + b;
        const vt_xk *x = xg + b;
        vi sumi[RTK];
#pragma GCC unroll 16
        for (int r = 0; r < RTK; r++) sumi[r] = VI_SET1(w->c[r]);
        /* per half sub-block (16 weights) w = q - 8 against x + 128: the sum
         * fits int16, and one vpdpwssd with (sc, 0) scales and adds it */
        for (int sb = 0; sb < 8; sb++) {
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const int hb = 2 * sb + h;
                vi s[RTK], x0 = VI_LOAD(x->q[4 * hb]);
#pragma GCC unroll 16
                for (int r = 0; r < RTK; r++)
                    s[r] = q5 ? FN(dpbc)(VI_SET1(w->hc[r][hb]), x0, w->q[r] + 16 * hb)
                              : FN(dpbc0)(x0, w->q[r] + 16 * hb);
#pragma GCC unroll 4
                for (int g = 1; g < 4; g++) {
                    vi xv = VI_LOAD(x->q[4 * hb + g]);
#pragma GCC unroll 16
                    for (int r = 0; r < RTK; r++)
                        s[r] = FN(dpbc)(s[r], xv, w->q[r] + 16 * hb + 4 * g);
                }
#pragma GCC unroll 16
                for (int r = 0; r < RTK; r++) sumi[r] = FN(wsacc)(sumi[r], s[r], &w->sc[r][sb]);
            }
        }
        vf dx = VF_LOAD(x->d);
        vi b0 = VI_LOAD(x->bs[0]), b1 = VI_LOAD(x->bs[1]), b2 = VI_LOAD(x->bs[2]), b3 = VI_LOAD(x->bs[3]);
#pragma GCC unroll 16
        for (int r = 0; r < RTK; r++) {
            /* the + 8 of q: 8 sum_j sc_j (sum of sub-block j's x) */
            sumi[r] = FN(wsacc)(sumi[r], b0, &w->sc8[r][0]);
            sumi[r] = FN(wsacc)(sumi[r], b1, &w->sc8[r][1]);
            sumi[r] = FN(wsacc)(sumi[r], b2, &w->sc8[r][2]);
            sumi[r] = FN(wsacc)(sumi[r], b3, &w->sc8[r][3]);
            vi m = _mm512_dpwssd_epi32(VI_ZERO(), b0, VI_SET1(w->mn[r][0]));
            m = _mm512_dpwssd_epi32(m, b1, VI_SET1(w->mn[r][1]));
            m = _mm512_dpwssd_epi32(m, b2, VI_SET1(w->mn[r][2]));
            m = _mm512_dpwssd_epi32(m, b3, VI_SET1(w->mn[r][3]));
            /* dm holds -dmin: acc += (-dmin dx) summ, then (d dx) sumi */
            acc[r] = FN(tail_k)(acc[r], dx, w->dm[r], m);
            acc[r] = FN(tail_k)(acc[r], dx, w->d[r], sumi[r]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RTK; r++) out[r] = acc[r];
}

/* q6_k (kind 0): per half sub-block of 8 and row, 2 vpdpbusd from the chain
 * start hc (the exact sum, int16 range), then one vpdpwssd adds sc * sum to
 * sumi. q3_k (kind 1) and q2_k (kind 2): one chain of 4 per sub-block of 16
 * (|sum of qw * x| <= 16 * 4 * 127 = 8128); q2_k's mins part: 8 vpdpwssd of
 * the (m, m') pairs on the 16-element sums. iq4_xs (kind 3): per sub-block of
 * 32 and row, 8 vpdpbusd from hc give the exact sum of w * x (|.| <= 32 * 127
 * * 127, int32 only), which vpmulld scales by the sub-block's scale. */
LPK_SIMD_INL void FN(tile_q6kt)(const vt_wk *pk,
                                                                             const vt_xk *xg,
                                                                             int64_t nb, vf *out, int kind)
{
    vf acc[RTK];
#pragma GCC unroll 16
    for (int r = 0; r < RTK; r++) acc[r] = out[r];
    for (int64_t b = 0; b < nb; b++) {
        const vt_wk *w = pk + b;
        const vt_xk *x = xg + b;
        vi sumi[RTK];
#pragma GCC unroll 16
        for (int r = 0; r < RTK; r++) sumi[r] = VI_ZERO();
        for (int sb = 0; kind == 3 && sb < 8; sb++) {
            vi s[RTK];
#pragma GCC unroll 16
            for (int r = 0; r < RTK; r++) s[r] = VI_SET1(w->hc[r][sb]);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                vi x0 = VI_LOAD(x->q[8 * sb + 4 * h]), x1 = VI_LOAD(x->q[8 * sb + 4 * h + 1]);
                vi x2 = VI_LOAD(x->q[8 * sb + 4 * h + 2]), x3 = VI_LOAD(x->q[8 * sb + 4 * h + 3]);
#pragma GCC unroll 16
                for (int r = 0; r < RTK; r++) {
                    const int8_t *q = w->q[r] + 32 * sb + 16 * h;
                    s[r] = FN(dpbc)(s[r], x0, q);
                    s[r] = FN(dpbc)(s[r], x1, q + 4);
                    s[r] = FN(dpbc)(s[r], x2, q + 8);
                    s[r] = FN(dpbc)(s[r], x3, q + 12);
                }
            }
#pragma GCC unroll 16
            for (int r = 0; r < RTK; r++) sumi[r] = VI_ADD(sumi[r], VI_MULLO(s[r], VI_SET1(w->sc[r][sb])));
        }
        /* per half sub-block (8 weights) and row: a vpdpbusd chain from
         * -128 * (sum of its weights) gives the exact sum (int16 range), and
         * one vpdpwssd with (sc, 0) scales it into sumi */
        for (int sb = 0; kind != 3 && sb < 16; sb++) {
            vi x0 = VI_LOAD(x->q[4 * sb]), x1 = VI_LOAD(x->q[4 * sb + 1]);
            vi x2 = VI_LOAD(x->q[4 * sb + 2]), x3 = VI_LOAD(x->q[4 * sb + 3]);
            if (kind) {
#pragma GCC unroll 16
                for (int r = 0; r < RTK; r++) {
                    vi s0 = FN(dpbc)(VI_SET1(w->hc[r][sb]), x0, w->q[r] + 16 * sb);
                    s0 = FN(dpbc)(s0, x1, w->q[r] + 16 * sb + 4);
                    s0 = FN(dpbc)(s0, x2, w->q[r] + 16 * sb + 8);
                    s0 = FN(dpbc)(s0, x3, w->q[r] + 16 * sb + 12);
                    sumi[r] = FN(wsacc)(sumi[r], s0, &w->sc[r][sb]);
                }
                continue;
            }
#pragma GCC unroll 16
            for (int r = 0; r < RTK; r++) {
                vi s0 = FN(dpbc)(VI_SET1(w->hc[r][2 * sb]), x0, w->q[r] + 16 * sb);
                vi s1 = FN(dpbc)(VI_SET1(w->hc[r][2 * sb + 1]), x2, w->q[r] + 16 * sb + 8);
                s0 = FN(dpbc)(s0, x1, w->q[r] + 16 * sb + 4);
                s1 = FN(dpbc)(s1, x3, w->q[r] + 16 * sb + 12);
                vi sc = VI_SET1(w->sc[r][sb]);
                sumi[r] = FN(dpwr)(sumi[r], s0, sc);
                sumi[r] = FN(dpwr)(sumi[r], s1, sc);
            }
        }
        vf dx = VF_LOAD(x->d);
        if (kind == 2) {
            /* dm holds -dmin: acc += (-dmin dx) summ, then (d dx) sumi */
#pragma GCC unroll 16
            for (int r = 0; r < RTK; r++) {
                vi m = VI_ZERO();
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++) m = FN(wsacc)(m, VI_LOAD(x->bs16[k]), &w->mn[r][k]);
                acc[r] = FN(tail_k)(acc[r], dx, w->dm[r], m);
            }
        }
#pragma GCC unroll 16
        for (int r = 0; r < RTK; r++) acc[r] = FN(tail_k)(acc[r], dx, w->d[r], sumi[r]);
    }
#pragma GCC unroll 16
    for (int r = 0; r < RTK; r++) out[r] = acc[r];
}

/* c[j] lane i <- c[i] lane j (a 16 x 16 transpose of floats). */
LPK_SIMD_INL void FN(transpose16)(__m512 *c)
{
    __m512 t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(c[2 * k], c[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(c[2 * k], c[2 * k + 1]);
    }
    /* u[4k + m], 128-bit lane L: column 4L + m of rows 4k .. 4k + 3 */
    for (int k = 0; k < 4; k++) {
        __m512d a0 = _mm512_castps_pd(t[4 * k]), a1 = _mm512_castps_pd(t[4 * k + 1]);
        __m512d a2 = _mm512_castps_pd(t[4 * k + 2]), a3 = _mm512_castps_pd(t[4 * k + 3]);
        u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    /* c[4L + m]: lane L of u[m], u[4 + m], u[8 + m], u[12 + m] */
    for (int m = 0; m < 4; m++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xee);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
        __m512 v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xee);
        c[m] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        c[4 + m] = _mm512_shuffle_f32x4(v0, v2, 0xdd);
        c[8 + m] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        c[12 + m] = _mm512_shuffle_f32x4(v1, v3, 0xdd);
    }
}

/* Per-thread scratch: NS packed sub-tiles, and the running sums of every
 * (token group, sub-tile) between input chunks. */
static size_t FN(scratch_t)(const vf_gemm_args *a)
{
    const int k = a->block == QK_K;
    size_t nb = (size_t)(a->n_in / a->block), ng = (size_t)((a->n_tok + XT - 1) / XT);
    size_t w = k ? (size_t)NSK * nb * sizeof(vt_wk) : (size_t)NS32 * nb * sizeof(vt_w32);
    size_t acc = ng * (size_t)(k ? NSK * RTK : NS32 * RT32) * XT * sizeof(float);
    return ((w + 63) & ~(size_t)63) + acc;
}

/* A work item: its NS sub-tiles are packed once; the input dimension is then
 * walked in chunks of KC blocks, so that a chunk of the packed weights and of
 * a token group's activations stay in L1 while every token group and
 * sub-tile use them (the sums wait in scratch between chunks: the order of
 * operations is unchanged). Meanwhile the weights of the thread's next work
 * item (rows from o_next, contiguous in memory) are asked into L2, a slice
 * after each token group, so that packing them finds them there rather than
 * waiting on memory. kind: 0 q8_0/q4_0/q5_0/iq4_nl, 1 q4_1/q5_1, 2 q4_k, 3
 * q6_k, 4 q5_k, 5 iq4_xs, 6 q3_k, 7 q2_k. */
LPK_SIMD_INL void FN(drive_t)(const vf_gemm_args *a, int64_t o0, int64_t o1,
                              int64_t o_next, void *scratch, int kind)
{
    const int k = kind >= 2;
    const int RT = k ? RTK : RT32, NS = k ? NSK : NS32;
    const int64_t nb = a->n_in / a->block, ng = (a->n_tok + XT - 1) / XT, KC = k ? KCK : KC32;
    const size_t wsz = k ? sizeof(vt_wk) : sizeof(vt_w32), xsz = k ? sizeof(vt_xk) : sizeof(vt_x32);
    const int nsub = (int)((o1 - o0 + RT - 1) / RT), nr = (int)(o1 - o0);
    uint8_t *pk = scratch;
    float *accs = (float *)(void *)(pk + ((NS * nb * wsz + 63) & ~(size_t)63)); /* (ng, NS, RT, XT) */
    for (int s = 0; s < nsub; s++) {
        int64_t s0 = o0 + s * RT, s1 = s0 + RT < o1 ? s0 + RT : o1;
        if (k) FN(pack_tk)(a, s0, s1, (vt_wk *)(void *)(pk + s * nb * wsz));
        else FN(pack_t32)(a, s0, s1, (vt_w32 *)(void *)(pk + s * nb * wsz));
    }
    const char *pf = NULL;
    int64_t pf_lines = 0, pf_step = 0;
    if (o_next >= 0) {
        int64_t rows = a->n_out - o_next < NS * RT ? a->n_out - o_next : NS * RT;
        pf = (const char *)a->w + o_next * a->row_bytes;
        pf_lines = (rows * a->row_bytes + 63) / 64;
        int64_t steps = ((nb + KC - 1) / KC) * ng;
        pf_step = (pf_lines + steps - 1) / steps;
    }
    for (int64_t c0 = 0; c0 < nb; c0 += KC) {
        const int64_t c1 = c0 + KC < nb ? c0 + KC : nb;
        /* 32-blocks: token groups two at a time (see tile_t32) */
        for (int64_t grp = 0; grp < ng;) {
            const int two = kind < 2 && grp + 1 < ng;
            for (int64_t i = 0; i < pf_step * (1 + two) && pf_lines > 0; i++, pf_lines--, pf += 64)
                _mm_prefetch(pf, _MM_HINT_T1);
            const uint8_t *xg = (const uint8_t *)a->xq + (grp * nb + c0) * xsz;
            const uint8_t *xg1 = two ? xg + nb * xsz : xg;
            float out[2][OUT_ROWS][XT];
            for (int s = 0; s < nsub; s++) {
                float *ab = accs + (grp * NS + s) * RT * XT, *ab1 = ab + NS * RT * XT;
                const uint8_t *w = pk + (s * nb + c0) * wsz;
                vf acc[2][OUT_RT];
#pragma GCC unroll 16
                for (int r = 0; r < OUT_RT; r++) {
                    acc[0][r] = c0 && r < RT ? VF_LOAD(ab + r * XT) : VF_ZERO();
                    acc[1][r] = c0 && two && r < RT ? VF_LOAD(ab1 + r * XT) : VF_ZERO();
                }
                const vt_w32 *w32 = (const vt_w32 *)(const void *)w;
                const vt_x32 *x0 = (const vt_x32 *)(const void *)xg, *x1 = (const vt_x32 *)(const void *)xg1;
                switch (kind) {
                case 0:
                    if (two) FN(tile_t32)(w32, x0, x1, c1 - c0, 0, 2, acc[0], acc[1]);
                    else FN(tile_t32)(w32, x0, x0, c1 - c0, 0, 1, acc[0], acc[1]);
                    break;
                case 1:
                    if (two) FN(tile_t32)(w32, x0, x1, c1 - c0, 1, 2, acc[0], acc[1]);
                    else FN(tile_t32)(w32, x0, x0, c1 - c0, 1, 1, acc[0], acc[1]);
                    break;
                case 2: FN(tile_q4kt)((const vt_wk *)(const void *)w, (const vt_xk *)(const void *)xg, c1 - c0, acc[0], 0); break;
                case 3: FN(tile_q6kt)((const vt_wk *)(const void *)w, (const vt_xk *)(const void *)xg, c1 - c0, acc[0], 0); break;
                case 4: FN(tile_q4kt)((const vt_wk *)(const void *)w, (const vt_xk *)(const void *)xg, c1 - c0, acc[0], 1); break;
                case 5: FN(tile_q6kt)((const vt_wk *)(const void *)w, (const vt_xk *)(const void *)xg, c1 - c0, acc[0], 3); break;
                case 6: FN(tile_q6kt)((const vt_wk *)(const void *)w, (const vt_xk *)(const void *)xg, c1 - c0, acc[0], 1); break;
                default: FN(tile_q6kt)((const vt_wk *)(const void *)w, (const vt_xk *)(const void *)xg, c1 - c0, acc[0], 2); break;
                }
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    if (h > two) break;
#pragma GCC unroll 16
                    for (int r = 0; r < OUT_RT; r++) {
                        if (r >= RT) break;
                        VF_STORE(c1 < nb ? (h ? ab1 : ab) + r * XT : out[h][s * RT + r], acc[h][r]);
                    }
                }
            }
            if (c1 < nb) {
                grp += 1 + two;
                continue;
            }
            /* lane = token: 16 rows at a time turned into 16 vectors of one
             * token each; y written one token (all rows of the work item) at
             * a time */
            for (int h = 0; h <= two; h++, grp++) {
                float outt[XT][(OUT_ROWS + 15) / 16 * 16];
                for (int r0 = 0; r0 < nr; r0 += 16) {
                    __m512 c[16];
                    for (int i = 0; i < 16; i++)
                        c[i] = r0 + i < nsub * RT ? _mm512_loadu_ps(out[h][r0 + i]) : _mm512_setzero_ps();
                    FN(transpose16)(c);
                    for (int t = 0; t < XT; t++) _mm512_storeu_ps(&outt[t][r0], c[t]);
                }
                for (int t = 0; t < XT && grp * XT + t < a->n_tok; t++) {
                    float *y = a->y + (grp * XT + t) * a->n_out + o0;
                    for (int r0 = 0; r0 < nr; r0 += 16) {
                        __mmask16 m = nr - r0 >= 16 ? 0xffff : (__mmask16)((1u << (nr - r0)) - 1);
                        _mm512_mask_storeu_ps(y + r0, m, _mm512_loadu_ps(&outt[t][r0]));
                    }
                }
            }
        }
    }
}

LPK_SIMD_FN void FN(rows_t32)(const vf_gemm_args *a, int64_t o0,
                                                      int64_t o1, int64_t o_next,
        void *scratch)
{
    if (a->wtype == LPK_TYPE_Q4_1 || a->wtype == LPK_TYPE_Q5_1) FN(drive_t)(a, o0, o1, o_next, scratch, 1);
    else FN(drive_t)(a, o0, o1, o_next, scratch, 0);
}

LPK_SIMD_FN void FN(rows_tk)(const vf_gemm_args *a, int64_t o0,
                                                     int64_t o1, int64_t o_next,
        void *scratch)
{
    switch (a->wtype) {
    case LPK_TYPE_Q4_K: FN(drive_t)(a, o0, o1, o_next, scratch, 2); break;
    case LPK_TYPE_Q5_K: FN(drive_t)(a, o0, o1, o_next, scratch, 4); break;
    case LPK_TYPE_IQ4_XS: FN(drive_t)(a, o0, o1, o_next, scratch, 5); break;
    case LPK_TYPE_Q3_K: FN(drive_t)(a, o0, o1, o_next, scratch, 6); break;
    case LPK_TYPE_Q2_K: FN(drive_t)(a, o0, o1, o_next, scratch, 7); break;
    default: FN(drive_t)(a, o0, o1, o_next, scratch, 3); break;
    }
}

static size_t FN(xbytes_t32)(const vf_gemm_args *a) { return (size_t)(a->n_in / 32) * sizeof(vt_x32); }
static size_t FN(xbytes_tk)(const vf_gemm_args *a) { return (size_t)(a->n_in / QK_K) * sizeof(vt_xk); }

static const vf_gemm_kernel FN(kern_blk32_) = {SIMD_NAME, KPATH, NS32 * RT32, XT, FN(scratch_t),
                                               FN(rows_t32), FN(xbytes_t32), FN(xprep_t32)};
static const vf_gemm_kernel FN(kern_q4k_) = {SIMD_NAME, KPATH, NSK * RTK, XT, FN(scratch_t),
                                             FN(rows_tk), FN(xbytes_tk), FN(xprep_tk)};
static const vf_gemm_kernel FN(kern_q6k_) = {SIMD_NAME, KPATH, NSK * RTK, XT, FN(scratch_t),
                                             FN(rows_tk), FN(xbytes_tk), FN(xprep_tk)};
#endif

/* ---------------------------------------------------------------- fp32 */
/* A work item is GT sub-tiles of 2 SIMD_W rows, each converted to f32 and
 * transposed once and reused by every token. The input dimension is walked in
 * chunks: a chunk of the sub-tiles' weights stays in L2 and a token tile's
 * activations for the chunk in L1 while every sub-tile uses them; running sums
 * wait in accb between chunks (the order of operations is unchanged). Inner
 * loop per input element: 2 weight loads, TF broadcasts, 2 TF FMAs. */
LPK_SIMD_FN void FN(rows_f32)(const vf_gemm_args *a, int64_t o0,
                                                      int64_t o1, int64_t o_next,
        void *scratch)
{
    (void)o_next;
    const int64_t n_in = a->n_in, n_tok = a->n_tok, KCH = 256;
    const int R = 2 * SIMD_W;
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
            acc1[j] = c0 ? VF_LOAD(ab + t * R + SIMD_W) : VF_ZERO();
        }
        for (int64_t i = c0; i < c1; i++) {
            vf w0 = VF_LOAD(wt + i * R), w1 = VF_LOAD(wt + i * R + SIMD_W);
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
                VF_STORE(ab + (t0 + j) * R + SIMD_W, acc1[j]);
                continue;
            }
            float *y = a->y + (t0 + j) * a->n_out + o0 + sidx * R;
            FN(store_rows)(y, acc0[j], nr < SIMD_W ? nr : SIMD_W);
            if (nr > SIMD_W) FN(store_rows)(y + SIMD_W, acc1[j], nr - SIMD_W);
        }
    }
    }
    }
}

#if !VNNI
static const vf_gemm_kernel FN(kern_blk32_) = {SIMD_NAME, KPATH, GT * SIMD_W, TT, scratch_blk32,
                                               FN(rows_blk32), NULL, NULL};
static const vf_gemm_kernel FN(kern_q4k_) = {SIMD_NAME, KPATH, GT * SIMD_W, TT, scratch_k, FN(rows_q4k),
                                             NULL, NULL};
static const vf_gemm_kernel FN(kern_q6k_) = {SIMD_NAME, KPATH, GT * SIMD_W, TT, scratch_k, FN(rows_q6k),
                                             NULL, NULL};
#endif
static const vf_gemm_kernel FN(kern_f32_) = {SIMD_NAME, KPATH, GT * 2 * SIMD_W, 1, scratch_f32,
                                             FN(rows_f32), NULL, NULL};

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
#undef FN
#undef SIMD_CAT
#undef SIMD_CAT_
#undef SIMD_W
#undef SIMD_SFX
#undef SIMD_NAME
#undef SIMD_TGT
#undef VNNI
#undef KPATH
