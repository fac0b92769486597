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
        for (int j = 0; j < 32; j++) o->q[j] = (int8_t)(quant_q5_q(qs, qh, j) - off);
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
        for (int e = 0; e < 256; e++) o->q[e] = (int8_t)quant_q5k_q(b, e);
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
        for (int e = 0; e < 256; e++) o->q[e] = (int8_t)quant_q2k_q(b->qs, e);
        break;
    }
    case LPK_TYPE_Q3_K: {
        const block_q3_K *b = (const void *)src;
        o->d = lpk_f16_to_f32(b->d);
        o->nsub = 16;
        for (int j = 0; j < 16; j++) o->sc[j] = (int8_t)quant_q3k_scale(b->scales, j);
        for (int e = 0; e < 256; e++) o->q[e] = (int8_t)quant_q3k_q(b, e);
        break;
    }
    case LPK_TYPE_IQ4_XS: {
        const block_iq4_xs *b = (const void *)src;
        o->d = lpk_f16_to_f32(b->d);
        o->nsub = 8;
        for (int j = 0; j < 8; j++) {
            o->sc[j] = (int8_t)quant_iq4xs_scale(b, j);
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
    o->d = rd_half(src);
    o->dmin = rd_half(src + 2);
    quant_q4k_scales(src + 4, o->sc, o->m);
    for (int e = 0; e < 256; e++) o->q[e] = (uint8_t)quant_q4k_q(src + 16, e);
}

void vf_unpack_q6k(const uint8_t *src, vf_wq6k *o)
{
    const block_q6_K *b = (const void *)src;
    o->d = lpk_f16_to_f32(b->d);
    for (int j = 0; j < 16; j++) o->sc[j] = b->scales[j];
    for (int e = 0; e < 256; e++) o->q[e] = (int8_t)quant_q6k_q(b, e);
}

