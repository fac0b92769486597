/* llmpack quant/: block quantization algorithms per tensor type, and recipes.
 *
 * Block layouts are byte-identical to GGML's (fields in this order, little-endian,
 * no padding); the sizes are asserted against format/'s type table.
 * Depends on format/ only.
 */
#ifndef QUANT_H
#define QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t quant_half; /* IEEE binary16 bits */

/* x = (q - 8) * d; qs[j] low nibble is element j, high nibble element j + 16 */
typedef struct { quant_half d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
/* x = q * d + m */
typedef struct { quant_half d; quant_half m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
/* 5th bit of element j is bit j of qh (u32 LE); x = (q - 16) * d */
typedef struct { quant_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
/* x = q * d + m */
typedef struct { quant_half d; quant_half m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
/* x = q * d */
typedef struct { quant_half d; int8_t qs[QK8_0]; } block_q8_0;
/* 8 sub-blocks of 32: 6-bit scales and mins packed in scales[12];
 * x = d * sc * q - dmin * m */
typedef struct {
    quant_half d;
    quant_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
/* 16 sub-blocks of 16: int8 scales; x = d * sc * (q - 32), q 6 bits (ql low 4, qh high 2) */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    quant_half d;
} block_q6_K;
/* activations for k-quant dot products: x = d * q; bsums[i] = sum of qs[16i..16i+15] */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 block size");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 block size");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 block size");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 block size");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 block size");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K block size");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K block size");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K block size");

/* The rest of this header (quantize/dequantize per type, recipes, per-tensor
 * error report) is owned by quant/; see docs/QUANT.md. */

#ifdef __cplusplus
}
#endif
#endif
