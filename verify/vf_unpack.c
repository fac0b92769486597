/* Weight blocks of every GGML type unpacked into the integer form the kernels
 * multiply (vf_gemm_kern.h): used by the scalar reference (vf_gemm.c) and the
 * SIMD kernels (vf_gemm_x86.c), below both; calls nothing else in verify/. */
#include "vf_gemm.h"
#include "vf_gemm_kern.h"

#include <string.h>

static float rd_half(const uint8_t *p) { return lpk_f16_to_f32(lpk_rd16(p)); }

void vf_unpack_blk32(int wtype, const uint8_t *src, vf_wblk32 *o)
{
    switch (wtype) {
    case LPK_TYPE_Q8_0:
        o->d = rd_half(src);
        o->m = 0.0f;
        memcpy(o->q, src + 2, 32);
        break;
    case LPK_TYPE_Q4_0:
    case LPK_TYPE_Q4_1: {
        int m1 = wtype == LPK_TYPE_Q4_1;
        const uint8_t *qs = src + (m1 ? 4 : 2);
        o->d = rd_half(src);
        o->m = m1 ? rd_half(src + 2) : 0.0f;
        int off = m1 ? 0 : 8;
        for (int j = 0; j < 16; j++) {
            o->q[j] = (int8_t)((qs[j] & 15) - off);
            o->q[j + 16] = (int8_t)((qs[j] >> 4) - off);
        }
        break;
    }
    case LPK_TYPE_Q5_0:
    case LPK_TYPE_Q5_1: {
        int m1 = wtype == LPK_TYPE_Q5_1;
        const uint8_t *qhp = src + (m1 ? 4 : 2);
        const uint8_t *qs = qhp + 4;
        uint32_t qh = lpk_rd32(qhp);
        o->d = rd_half(src);
        o->m = m1 ? rd_half(src + 2) : 0.0f;
        int off = m1 ? 0 : 16;
        for (int j = 0; j < 16; j++) {
            int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            o->q[j] = (int8_t)(lo - off);
            o->q[j + 16] = (int8_t)(hi - off);
        }
        break;
    }
    case LPK_TYPE_IQ4_NL:
        o->d = rd_half(src);
        o->m = 0.0f;
        for (int j = 0; j < 16; j++) {
            o->q[j] = quant_iq4nl_values[src[2 + j] & 15];
            o->q[j + 16] = quant_iq4nl_values[src[2 + j] >> 4];
        }
        break;
    default:
        break;
    }
}

int vf_is_kg(int wtype)
{
    return wtype == LPK_TYPE_Q5_K || wtype == LPK_TYPE_Q3_K || wtype == LPK_TYPE_Q2_K ||
           wtype == LPK_TYPE_IQ4_XS;
}

/* Field offsets follow the block structs of quant/quant.h; the bit positions
 * are those of their comments (GGML's layouts). */
void vf_unpack_kg(int wtype, const uint8_t *src, vf_wkg *o)
{
    memset(o->m, 0, sizeof o->m);
    o->dmin = 0.0f;
    switch (wtype) {
    case LPK_TYPE_Q5_K: {
        const block_q5_K *b = (const void *)src;
        uint8_t sc[8], m[8];
        o->d = lpk_f16_to_f32(b->d);
        o->dmin = lpk_f16_to_f32(b->dmin);
        o->nsub = 8;
        quant_q4k_scales(b->scales, sc, m);
        for (int j = 0; j < 8; j++) {
            o->sc[j] = (int8_t)sc[j];
            o->m[j] = (int8_t)m[j];
        }
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                o->q[64 * c + l] = (int8_t)((b->qs[32 * c + l] & 15) | ((b->qh[l] >> (2 * c)) & 1) << 4);
                o->q[64 * c + 32 + l] =
                    (int8_t)((b->qs[32 * c + l] >> 4) | ((b->qh[l] >> (2 * c + 1)) & 1) << 4);
            }
        }
        break;
    }
    case LPK_TYPE_Q2_K: {
        const block_q2_K *b = (const void *)src;
        o->d = lpk_f16_to_f32(b->d);
        o->dmin = lpk_f16_to_f32(b->dmin);
        o->nsub = 16;
        for (int j = 0; j < 16; j++) {
            o->sc[j] = (int8_t)(b->scales[j] & 15);
            o->m[j] = (int8_t)(b->scales[j] >> 4);
        }
        for (int e = 0; e < 256; e++)
            o->q[e] = (int8_t)((b->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3);
        break;
    }
    case LPK_TYPE_Q3_K: {
        const block_q3_K *b = (const void *)src;
        o->d = lpk_f16_to_f32(b->d);
        o->nsub = 16;
        for (int j = 0; j < 16; j++) {
            int lo = (b->scales[j % 8] >> (j < 8 ? 0 : 4)) & 15;
            int hi = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            o->sc[j] = (int8_t)((lo | hi << 4) - 32);
        }
        for (int e = 0; e < 256; e++) {
            int lo2 = (b->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            int hb = (b->hmask[e % 32] >> (e / 32)) & 1;
            o->q[e] = (int8_t)(lo2 - (hb ? 0 : 4));
        }
        break;
    }
    case LPK_TYPE_IQ4_XS: {
        const block_iq4_xs *b = (const void *)src;
        o->d = lpk_f16_to_f32(b->d);
        o->nsub = 8;
        for (int j = 0; j < 8; j++) {
            int ls = ((b->scales_l[j / 2] >> (4 * (j % 2))) & 15) | ((b->scales_h >> (2 * j)) & 3) << 4;
            o->sc[j] = (int8_t)(ls - 32);
            for (int l = 0; l < 16; l++) {
                o->q[32 * j + l] = quant_iq4nl_values[b->qs[16 * j + l] & 15];
                o->q[32 * j + 16 + l] = quant_iq4nl_values[b->qs[16 * j + l] >> 4];
            }
        }
        break;
    }
    default:
        break;
    }
}

void vf_unpack_q4k(const uint8_t *src, vf_wq4k *o)
{
    const uint8_t *qs = src + 16;
    o->d = rd_half(src);
    o->dmin = rd_half(src + 2);
    quant_q4k_scales(src + 4, o->sc, o->m);
    /* each 32 bytes: low nibbles are sub-block 2c, high nibbles sub-block 2c+1 */
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            o->q[c * 64 + l] = qs[c * 32 + l] & 15;
            o->q[c * 64 + 32 + l] = qs[c * 32 + l] >> 4;
        }
    }
}

void vf_unpack_q6k(const uint8_t *src, vf_wq6k *o)
{
    const uint8_t *ql = src, *qh = src + 128;
    const int8_t *sc = (const int8_t *)(src + 192);
    o->d = rd_half(src + 208);
    for (int j = 0; j < 16; j++) o->sc[j] = sc[j];
    for (int h = 0; h < 2; h++) {
        const uint8_t *l_ = ql + h * 64, *h_ = qh + h * 32;
        int8_t *q = o->q + h * 128;
        for (int l = 0; l < 32; l++) {
            q[l] = (int8_t)(((l_[l] & 15) | ((h_[l] >> 0) & 3) << 4) - 32);
            q[l + 32] = (int8_t)(((l_[l + 32] & 15) | ((h_[l] >> 2) & 3) << 4) - 32);
            q[l + 64] = (int8_t)(((l_[l] >> 4) | ((h_[l] >> 4) & 3) << 4) - 32);
            q[l + 96] = (int8_t)(((l_[l + 32] >> 4) | ((h_[l] >> 6) & 3) << 4) - 32);
        }
    }
}

