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
/* 16 sub-blocks of 16: x = d * (sc & 15) * q - dmin * (sc >> 4), q 2 bits
 * (element e at qs[32 * (e / 128) + e % 32], bits 2 * ((e % 128) / 32)) */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    quant_half d;
    quant_half dmin;
} block_q2_K;
/* 16 sub-blocks of 16: x = d * (sc - 32) * (q - 4), q 3 bits: the low 2 placed as
 * in q2_K, the high bit in hmask[e % 32] bit e / 32; sc 6 bits packed in 12 bytes */
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    quant_half d;
} block_q3_K;
/* q4_K's scales and layout with a 5th bit per value: x = d * sc * q - dmin * m,
 * q 0..31, bit 4 of element 64c + l (+ 32) in qh[l] bit 2c (2c + 1) */
typedef struct {
    quant_half d;
    quant_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
/* The non-linear 4-bit levels of iq4_nl / iq4_xs (GGML's kvalues_iq4nl). */
extern const int8_t quant_iq4nl_values[16];
#define QK4_NL 32
/* x = d * values[q]; qs[j] low nibble is element j, high nibble element j + 16 */
typedef struct { quant_half d; uint8_t qs[QK4_NL / 2]; } block_iq4_nl;
/* 8 sub-blocks of 32: x = d * (ls - 32) * values[q], ls 6 bits: low 4 in
 * scales_l[j / 2] (nibble j % 2), high 2 in scales_h bits 2j; qs as iq4_nl's */
typedef struct {
    quant_half d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;
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
_Static_assert(sizeof(block_q2_K) == 84, "q2_K block size");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K block size");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K block size");
_Static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl block size");
_Static_assert(sizeof(block_iq4_xs) == 136, "iq4_xs block size");

/* ---------------------------------------------------------------- block fields */
/* The one decoder of each packed field of the blocks above: quant/'s
 * dequantizers and GPTQ, and verify/'s unpacking into integer form, read the
 * bits through these (inline: they sit in per-element loops). j is a
 * sub-block, e an element of a 256-value super-block (i of a 32-value block). */

/* q4_K's (and q5_K's) 6-bit scale and min of sub-block j (0..7). */
static inline void quant_q4k_scale_min(const uint8_t s[12], int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}
/* All 8 of them (quant_kq.c; verify/'s kernels call it once per block). */
void quant_q4k_scales(const uint8_t s[12], uint8_t sc[8], uint8_t m[8]);
/* q4_K's 4-bit value of element e (0..15): 64-element chunks of 32 bytes, low
 * nibbles first. */
static inline int quant_q4k_q(const uint8_t qs[128], int e)
{
    return (qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 15;
}
/* q5_K's value of element e (0..31): q4_K's nibble and bit e / 32 of qh[e % 32]. */
static inline int quant_q5k_q(const block_q5_K *b, int e)
{
    return quant_q4k_q(b->qs, e) | ((b->qh[e % 32] >> (e / 32)) & 1) << 4;
}
/* q6_K's value of element e (-32..31). */
static inline int quant_q6k_q(const block_q6_K *b, int e)
{
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    int lo = (b->ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 15;
    int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
    return (lo | hi << 4) - 32;
}
/* The 2 bits of element e that q2_K stores and q3_K stores as its low bits. */
static inline int quant_q2k_q(const uint8_t qs[64], int e)
{
    return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}
/* q3_K's value of element e (-4..3): the high bit set means no offset. */
static inline int quant_q3k_q(const block_q3_K *b, int e)
{
    return quant_q2k_q(b->qs, e) - ((b->hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4);
}
/* q3_K's signed 6-bit scale of sub-block j (0..15; -32..31). */
static inline int quant_q3k_scale(const uint8_t s[12], int j)
{
    int lo = (s[j % 8] >> (j < 8 ? 0 : 4)) & 15;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}
/* iq4_xs's signed 6-bit scale of sub-block j (0..7; -32..31). */
static inline int quant_iq4xs_scale(const block_iq4_xs *b, int j)
{
    return (((b->scales_l[j / 2] >> (4 * (j % 2))) & 15) | ((b->scales_h >> (2 * j)) & 3) << 4) - 32;
}
/* q5_0's / q5_1's unsigned 5-bit value of element i (0..31) with qh = lpk_rd32(b->qh). */
static inline int quant_q5_q(const uint8_t qs[16], uint32_t qh, int i)
{
    return ((qs[i % 16] >> (4 * (i / 16))) & 15) | (int)((qh >> i) & 1) << 4;
}

/* ---------------------------------------------------------------- rows */
/* Quantizes nrows rows of ncols f32 values (row-major) into dst, which receives
 * nrows * (ncols / block_size) blocks of `type` (any storable type: the block
 * types and f32/f16/bf16). ncols must be a multiple of the type's block size
 * (LPK_EINVAL otherwise). imatrix: NULL, or ncols per-column importance weights
 * (>= 0, finite) that the scale search minimises sum(w * err^2) with.
 * NaN/Inf in src: LPK_EBADVALUE naming the row and column; dst is then
 * unspecified. Rows run in parallel (OpenMP); the bytes written do not depend on
 * the thread count or on the SIMD path. */
int quant_quantize_rows(int type, const float *src, int64_t nrows, int64_t ncols, void *dst,
                        const float *imatrix, lpk_error *err);
/* The same from rows of src_type (LPK_TYPE_F32, F16 or BF16; LPK_EINVAL for
 * others): each row is converted to f32 inside the parallel loop, into a
 * per-thread buffer that stays in cache, and quantized from there; the bytes
 * written equal those of converting the whole tensor to f32 first and calling
 * quant_quantize_rows. LPK_ENOMEM when a row buffer cannot be allocated. */
int quant_quantize_rows_from(int type, int src_type, const void *src, int64_t nrows,
                             int64_t ncols, void *dst, const float *imatrix, lpk_error *err);
/* quant_quantize_rows_ex flags. QUANT_ROWS_OUTPUT_WEIGHTING: weight the scale
 * searches for the model's output error rather than the weights' squared
 * error (docs/QUANT.md, "Weighting"): without an importance matrix the
 * super-block types (k-quants, iq4_xs) weight value i of a row by |x_i| and the
 * 32-block types keep plain squared error; with one every type weights it by
 * imatrix[c] * sqrt(sigma^2/4 + x_i^2) (sigma^2: the row's mean square; q5_k
 * sigma^2 in full, q2_k sqrt(imatrix[c]) * |x_i|, iq4_nl imatrix[c]^0.1). What
 * quantize and convert use. */
enum {
    QUANT_ROWS_OUTPUT_WEIGHTING = 1u,
    QUANT_ROWS_LOOKUP = 2u,
    QUANT_ROWS_HEAD = 4u,
    QUANT_ROWS_ADD_ERR = 8u
};
/* QUANT_ROWS_ADD_ERR (quant_quantize_rows_err): the error sums are added to
 * *sse and *ssx, continuing them in row order, instead of set: a tensor
 * quantized as consecutive slices of rows gets the figures of one call. */
/* QUANT_ROWS_HEAD: the rows are the output matrix (output.weight, or the
 * token embedding of a tied model); with an importance matrix iq4_nl and
 * iq4_xs weight them by the importance alone. */
/* QUANT_ROWS_LOOKUP: the rows are a lookup table (the token embedding of a
 * model with its own output matrix: a token reads its row, no activation
 * multiplies a column), weighted for that instead: the k-quants (q2_k..q6_k)
 * by sqrt(sigma^2 + x_i^2) (times the importance, if one is given), iq4_xs by
 * |x_i|, the 32-block types not at all. quant_rows_flags gives the flags of a
 * named tensor of a model (QUANT_ROWS_OUTPUT_WEIGHTING, with QUANT_ROWS_LOOKUP
 * or QUANT_ROWS_HEAD where they apply). */
unsigned quant_rows_flags(const char *name, const lpk_tensor *tensors, size_t n);
/* quant_quantize_rows_from with flags (0: the same as it). The same
 * guarantees: bytes independent of threads and SIMD path. */
int quant_quantize_rows_ex(int type, int src_type, const void *src, int64_t nrows,
                           int64_t ncols, void *dst, const float *imatrix, unsigned flags,
                           lpk_error *err);
/* quant_quantize_rows_ex and, into *sse and *ssx (both NULL: not measured),
 * quant_error's figures of the result against the source (the same values,
 * summed in the same order), each row measured while it is in cache: no
 * second pass over the tensor.
 * cov32: NULL, or the 32x32 diagonal blocks of the covariance of the rows'
 * input (ncols * 32 finite floats: cov32[(b * 32 + i) * 32 + j] = mean of
 * x[32b + i] * x[32b + j] over the calibration tokens; each block's diagonal
 * >= 0, LPK_EINVAL otherwise; of a block that is not symmetric, its symmetric
 * part is used). With it, quantization aims at the least e^T C_b e per 32
 * columns (e the weight error; docs/QUANT.md, "Scored with the input
 * covariance"): q4_0, q5_0, q4_1, q5_1 and iq4_nl search each block's scale
 * and values for it (imatrix and flags are then not used); q2_k, q3_k, q4_k,
 * q5_k, q6_k and iq4_xs keep their weighted search's scales (imatrix, flags)
 * and then move single values by one level while e^T C_b e drops; other
 * types ignore cov32. Scalar code after the usual kernels: the bytes still do
 * not depend on the thread count or the SIMD path. */
int quant_quantize_rows_err(int type, int src_type, const void *src, int64_t nrows,
                            int64_t ncols, void *dst, const float *imatrix, const float *cov32,
                            unsigned flags, double *sse, double *ssx, lpk_error *err);
/* True for the types quant_quantize_rows_err's cov32 changes (the block
 * types but q8_0). */
int quant_type_uses_cov(int type);
/* Inverse: blocks of `type` -> f32. LPK_EINVAL for an unknown type or a ncols
 * that is not a multiple of the block size. */
int quant_dequantize_rows(int type, const void *src, int64_t nrows, int64_t ncols, float *dst);

/* True when rows of ncols values can be stored as type. */
int quant_row_fits(int type, int64_t ncols);
/* True for the block types quant/ makes: q4_0, q4_1, q5_0, q5_1, q8_0, q2_k,
 * q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs. */
int quant_type_is_block(int type);

/* Squared error of a quantized tensor against its source, summed in a fixed
 * order (double): *sse = sum (x - deq(q))^2, *ssx = sum x^2; each row in 16
 * lanes (value c in lane c mod 16, the lanes then added in order), the rows in
 * order. The same figures on every SIMD path and thread count. */
int quant_error(int type, const float *src, const void *q, int64_t nrows, int64_t ncols,
                double *sse, double *ssx);

/* Code path selection for tests and benchmarks: QUANT_PATH_AUTO (lpk_cpu_features,
 * which honours LLMPACK_SIMD), QUANT_PATH_SCALAR (reference code only) or
 * QUANT_PATH_AVX2 (no AVX-512 even where the CPU has it).
 * Process-wide; set it before quantizing, not while other threads quantize. */
enum quant_path { QUANT_PATH_AUTO = 0, QUANT_PATH_SCALAR = 1, QUANT_PATH_AVX2 = 2 };
void quant_set_path(int path);
/* "avx512", "avx2" or "scalar": the path quant_quantize_rows uses for type
 * without importance weights right now. */
const char *quant_path_name(int type);

/* ---------------------------------------------------------------- GPTQ */
/* Column order of the GPTQ sweep (docs/QUANT.md, "GPTQ"). */
enum quant_gptq_order {
    /* columns in index order; a block's scales are chosen from its error-updated
     * values when the sweep reaches it */
    QUANT_GPTQ_ORDER_NONE = 0,
    /* act-order with static groups: every block's scales chosen up front from the
     * original weights, then all columns by decreasing diag(H) */
    QUANT_GPTQ_ORDER_STATIC = 1,
    /* act-order inside groups of `group` columns (groups in index order): scales
     * chosen when the sweep first reaches a block, as in NONE */
    QUANT_GPTQ_ORDER_BLOCK = 2
};

/* "none", "act-order", "block-act-order" <-> the enum (-1 / NULL if unknown). */
int quant_gptq_order_parse(const char *name);
const char *quant_gptq_order_name(int order);

/* The inverse-Hessian factor of one layer input, shared by every weight that
 * reads that input (q/k/v, gate/up). */
typedef struct quant_gptq_factor quant_gptq_factor;

/* Builds the factor from H (n x n, row-major, symmetric: X^T X of the inputs).
 * Inputs with H[i][i] <= 0 get a unit diagonal; damp * mean(diag) is added to
 * the diagonal (0.01 is GPTQ's default); when the Cholesky factorization still
 * fails the dampening is multiplied by 10, up to 5 times (the value used:
 * quant_gptq_factor_damp). group: the permutation group for
 * QUANT_GPTQ_ORDER_BLOCK (n a multiple of it), else ignored. The result does
 * not depend on the thread count. LPK_EINVAL bad arguments, LPK_EBADVALUE a
 * non-finite entry or a matrix that stays indefinite, LPK_ENOMEM. Needs a
 * copy of H (n * n * 8 bytes) while it runs, n * n * 4 after. */
int quant_gptq_factor_new(const double *h, int64_t n, double damp, int order, int group,
                          quant_gptq_factor **out, lpk_error *err);
/* The same factor, built in h's own memory: h (malloc'd, n * n doubles) is
 * taken in every case, kept shrunk to n * n floats inside the factor or
 * freed; the caller must not use or free it afterwards. Nothing beyond O(n)
 * is allocated, so the peak is H itself. */
int quant_gptq_factor_take(double *h, int64_t n, double damp, int order, int group,
                           quant_gptq_factor **out, lpk_error *err);
void quant_gptq_factor_free(quant_gptq_factor *f);
/* The relative dampening the factor was built with. */
double quant_gptq_factor_damp(const quant_gptq_factor *f);
/* True for the block types quant_gptq_rows writes. */
int quant_gptq_supports(int type);
/* GPTQ-quantizes nrows rows of ncols f32 weights (rows = output features,
 * columns = the factor's inputs) into ordinary blocks of type (the same bytes
 * layout quant_quantize_rows writes). Rows run in parallel (OpenMP); the bytes
 * do not depend on the thread count. LPK_EINVAL for an unsupported type or a
 * shape that does not match; LPK_EBADVALUE for NaN/Inf in w (naming row and
 * column; dst unspecified). */
int quant_gptq_rows(int type, const float *w, int64_t nrows, int64_t ncols,
                    const quant_gptq_factor *f, void *dst, lpk_error *err);

/* ---------------------------------------------------------------- recipes */
/* One choice per tensor: the type to store it as, and when the recipe's type
 * did not fit the row length, the type it fell back from (else -1); note says
 * why in words (empty when there is nothing to say). */
typedef struct quant_choice {
    int type;
    int fallback_from; /* -1 if none */
    char note[128];
} quant_choice;

/* quant_plan flags. QUANT_PLAN_PURE is 1, so a plain boolean `pure` passes as is.
 * QUANT_PLAN_IMATRIX: an importance matrix will be given to the quantizers;
 * llama.cpp's recipes choose some tensors' types differently then. */
enum { QUANT_PLAN_PURE = 1u, QUANT_PLAN_IMATRIX = 2u };
/* Picks a type per tensor for a recipe (case-insensitive): "f32", "f16",
 * "bf16", the single types "q8_0", "q6_k", "q5_1", "q5_0", "q4_1", "q4_0", and
 * llama.cpp's mixes "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "iq4_nl", "iq4_xs",
 * "q3_k_l", "q3_k_m", "q3_k_s", "q2_k" ("q5_k", "q4_k", "q3_k" are llama.cpp's
 * aliases of the _m mixes). Non-pure recipes follow llama.cpp's
 * llama_tensor_get_type for the matching file type tensor by tensor (the output
 * and tied-embedding rule, attn_v / ffn_down / attn_output by layer, the GQA
 * and 70B rules, and what changes with QUANT_PLAN_IMATRIX); pure puts every
 * quantizable 2-D tensor at the recipe's base type. 1-D tensors stay f32.
 * Rows that do not fit a type fall back as llama.cpp does: q2_k, q3_k, iq4_xs
 * -> iq4_nl; q4_k -> q5_0; q5_k -> q5_1; q6_k -> q8_0; then f16 when the row is
 * not a multiple of the fallback's block (and f16 directly for the 32-block
 * types, where llama.cpp refuses the file). tensors[i].type is the source
 * type; name, n_dims and dims are read, in llama.cpp's order (by layer).
 * meta may be NULL: the head counts and layer count are then taken from the
 * tensors (llama.attention.head_count[_kv], llama.block_count otherwise).
 * Unknown recipe: LPK_EINVAL. */
int quant_plan(const char *recipe, unsigned flags, const lpk_meta *meta,
               const lpk_tensor *tensors, size_t n, quant_choice *choices, lpk_error *err);
/* Records the plan in meta: general.file_type (llama.cpp's llama_ftype) and
 * quant.recipe, quant.pure, quant.types / quant.type_counts (parallel arrays),
 * quant.fallbacks (one line per fallback). See docs/QUANT.md. */
int quant_plan_record(const char *recipe, int pure, const lpk_tensor *tensors,
                      const quant_choice *choices, size_t n, lpk_meta *meta);
/* True for a recipe name quant_plan accepts. */
int quant_recipe_valid(const char *recipe);
/* The recipe's base type (q4_k_m -> q4_k), or -1 for an unknown recipe. */
int quant_recipe_type(const char *recipe);
/* Comma-separated list of the recipe names, for usage messages. */
const char *quant_recipe_list(void);
/* Recipes one by one (i < quant_recipe_count(), else NULL), in the order of
 * quant_recipe_list; *alias_of (may be NULL) receives the recipe an alias means,
 * or NULL. */
size_t quant_recipe_count(void);
const char *quant_recipe_name(size_t i, const char **alias_of);
/* The recipe whose general.file_type (llama.cpp's llama_ftype) is ftype, not an
 * alias ("q4_k_m" for 15), or NULL when no recipe has it. */
const char *quant_recipe_for_ftype(uint32_t ftype);

/* A dense LLaMA model's shape, for size estimates without a file. */
typedef struct quant_model_shape {
    int n_layer, dim, ffn, n_head, n_head_kv, vocab;
    int tied; /* no output.weight: the embedding is the output matrix */
} quant_model_shape;
/* Fills out (NULL: only counts) with that model's tensors (f32, no data), in
 * llama.cpp's order and GGUF names; returns their number, 0 for a bad shape. */
size_t quant_shape_tensors(const quant_model_shape *s, lpk_tensor *out);
/* Bits per weight over all tensors (8 * bytes / elements, as `llmpack info`
 * counts) of quant_plan's choices. */
int quant_plan_bpw(const char *recipe, unsigned flags, const lpk_meta *meta,
                   const lpk_tensor *tensors, size_t n, double *bpw, lpk_error *err);

/* ---------------------------------------------------------------- size targets */
/* One tensor for quant_alloc: its candidate types, the bytes each would take
 * and each one's expected error (any non-negative measure that adds up over
 * tensors, e.g. quant_weighted_error times a per-tensor sensitivity). */
typedef struct quant_alloc_item {
    int n;                 /* candidates, 1..255 */
    const int *types;      /* n candidate types (not read by quant_alloc) */
    const uint64_t *bytes; /* n sizes */
    const double *err;     /* n expected errors (finite, >= 0) */
} quant_alloc_item;
/* Chooses candidate pick[i] for every item so that the summed bytes stay
 * within budget and the summed error is as small as it finds (an exact dynamic
 * program over the budget in at most 65536 units, sizes rounded up, then a local
 * search with the exact sizes). Deterministic. LPK_ENOSPC when even the smallest
 * candidates exceed the budget (err gives both numbers), LPK_EINVAL for a bad
 * item, LPK_ENOMEM. */
int quant_alloc(const quant_alloc_item *items, size_t n, uint64_t budget, int *pick,
                lpk_error *err);
/* Expected error of storing a tensor as type: quantizes rows 0, row_step,
 * 2*row_step, ... (with the importance weights, as quant_quantize_rows) and
 * returns *out = sum over columns c of imatrix[c] * sum over those rows of
 * (x - deq(q))^2, scaled to all nrows (imatrix NULL: weights 1). With imatrix
 * the mean squared activation of each column, that is the expected squared
 * error the tensor adds to its layer's output per token. */
int quant_weighted_error(int type, const float *src, int64_t nrows, int64_t ncols,
                         const float *imatrix, int64_t row_step, double *out, lpk_error *err);

/* Size-targeted plan: every quantizable matrix gets the type of the menu that
 * minimises the summed expected error (quant_weighted_error with its importance
 * weights; the embedding's divided by its row count, since a token reads one
 * row) with all tensors within budget bytes; the others keep their type (1-D:
 * f32). tensors[i].data must hold the values (f32, f16, bf16 or a block type).
 * imatrix: NULL, or n pointers (NULL where a tensor has none), each ncols
 * weights. gain: NULL, or n factors the tensors' errors are multiplied by (a
 * per-tensor sensitivity of the model's output). menu: NULL for the default (q2_k, q3_k, iq4_xs, iq4_nl, q4_k, q5_k,
 * q6_k, q8_0; where no 256-block type fits: iq4_nl, q4_0, q5_0, q5_1, q8_0;
 * else f16), or n_menu (1..16) types, those that fit a tensor's rows being its
 * candidates. choices[i].note gives the tensor's expected error. res (may be
 * NULL) receives the budget, the predicted bytes of all tensors and the summed
 * expected error. LPK_ENOSPC when even the smallest types exceed the budget. */
typedef struct quant_target_result {
    uint64_t budget, bytes;
    double err;
} quant_target_result;
int quant_plan_target(const lpk_tensor *tensors, size_t n, const float *const *imatrix,
                      const double *gain, const int *menu, int n_menu, uint64_t budget,
                      quant_choice *choices,
                      quant_target_result *res, lpk_error *err);
/* The expected error quant_plan_target assigns tensor t (its data holding the
 * values) stored as type, before any gain. */
int quant_tensor_expected_error(const lpk_tensor *t, int type, const float *imatrix,
                                double *out, lpk_error *err);
/* Records a size-targeted plan in meta: quant.recipe "target", quant.target
 * (the limit as given, e.g. "bpw 4.85" or "max-size 14 MB"), quant.target.budget,
 * quant.target.predicted_bytes (u64), quant.target.predicted_error (f64), the
 * quant.types / quant.type_counts / quant.fallbacks of quant_plan_record, and
 * general.file_type of the mix named after the type that holds most bytes. */
int quant_plan_record_target(const char *target, const quant_target_result *res,
                             const lpk_tensor *tensors, const quant_choice *choices, size_t n,
                             lpk_meta *meta);

#ifdef __cplusplus
}
#endif
#endif
