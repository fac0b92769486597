/* The batched matrix multiply of verify/'s forward pass: dispatch, activation
 * quantization and the scalar reference kernels. The arithmetic every path
 * follows is spelled out in vf_gemm.h; SIMD kernels live in vf_gemm_x86.c and
 * produce the same bits. */
#include "vf_gemm.h"
#include "vf_gemm_kern.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---------------------------------------------------------------- activations */
static int force_cap = -1;

static int simd_quant(void)
{
#if defined(__x86_64__)
    return force_cap != VF_PATH_SCALAR && (lpk_cpu_features() & LPK_CPU_AVX2);
#else
    return 0;
#endif
}

void vf_quantize_x32(const float *x, int64_t n, vf_xblk32 *out)
{
#if defined(__x86_64__)
    if (simd_quant()) {
        vf_quantize_x32_avx2(x, n, out);
        return;
    }
#endif
    for (int64_t b = 0; b < n / 32; b++) {
        const float *v = x + b * 32;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(v[j]);
            if (a > amax) amax = a;
        }
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            long q = lrintf(v[j] * id);
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            out[b].qs[j] = (int8_t)q;
            sum += (int32_t)q;
        }
        vf_x32_scales(amax, sum, &out[b]);
    }
}

void vf_quantize_xk(const float *x, int64_t n, block_q8_K *out)
{
#if defined(__x86_64__)
    if (simd_quant()) {
        vf_quantize_xk_avx2(x, n, out);
        return;
    }
#endif
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *v = x + b * QK_K;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            float a = fabsf(v[j]);
            if (a > amax) {
                amax = a;
                max = v[j];
            }
        }
        float is = amax != 0.0f ? -127.0f / max : 0.0f;
        for (int j = 0; j < QK_K; j++) {
            long q = lrintf(v[j] * is);
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            out[b].qs[j] = (int8_t)q;
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += out[b].qs[g * 16 + j];
            out[b].bsums[g] = (int16_t)s;
        }
        out[b].d = amax != 0.0f ? 1.0f / is : 0.0f;
    }
}

/* ---------------------------------------------------------------- scalar integer parts */
static int32_t dot32(const int8_t *a, const int8_t *b)
{
    int32_t s = 0;
    for (int j = 0; j < 32; j++) s += (int32_t)a[j] * b[j];
    return s;
}

static void ints_q4k(const vf_wq4k *w, const block_q8_K *x, int32_t out[2])
{
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 8; j++) {
        int32_t s = 0;
        for (int l = 0; l < 32; l++) s += (int32_t)w->q[j * 32 + l] * x->qs[j * 32 + l];
        sumi += (int32_t)w->sc[j] * s;
        summ += (int32_t)w->m[j] * (x->bsums[2 * j] + x->bsums[2 * j + 1]);
    }
    out[0] = sumi;
    out[1] = summ;
}

static int32_t ints_q6k(const vf_wq6k *w, const block_q8_K *x)
{
    int32_t sumi = 0;
    for (int j = 0; j < 16; j++) {
        int32_t s = 0;
        for (int l = 0; l < 16; l++) s += (int32_t)w->q[j * 16 + l] * x->qs[j * 16 + l];
        sumi += (int32_t)w->sc[j] * s;
    }
    return sumi;
}

/* sumi = sum_j sc[j] * (sum of q * x over sub-block j); summ = sum_j m[j] *
 * (sum of x over sub-block j), from the 16-element sums of q8_K. */
static void ints_kg(const vf_wkg *w, const block_q8_K *x, int32_t out[2])
{
    int len = QK_K / w->nsub, per = len / 16;
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < w->nsub; j++) {
        int32_t s = 0, bs = 0;
        for (int l = 0; l < len; l++) s += (int32_t)w->q[j * len + l] * x->qs[j * len + l];
        for (int k = 0; k < per; k++) bs += x->bsums[j * per + k];
        sumi += (int32_t)w->sc[j] * s;
        summ += (int32_t)w->m[j] * bs;
    }
    out[0] = sumi;
    out[1] = summ;
}

int vf_block_ints(int wtype, const void *wblk, const void *xblk, int32_t out[2])
{
    out[0] = out[1] = 0;
    switch (wtype) {
    case LPK_TYPE_Q8_0: case LPK_TYPE_Q4_0: case LPK_TYPE_Q4_1:
    case LPK_TYPE_Q5_0: case LPK_TYPE_Q5_1: case LPK_TYPE_IQ4_NL: {
        vf_wblk32 w;
        vf_unpack_blk32(wtype, wblk, &w);
        out[0] = dot32(w.q, ((const vf_xblk32 *)xblk)->qs);
        return LPK_OK;
    }
    case LPK_TYPE_Q5_K: case LPK_TYPE_Q3_K: case LPK_TYPE_Q2_K: case LPK_TYPE_IQ4_XS: {
        vf_wkg w;
        vf_unpack_kg(wtype, wblk, &w);
        ints_kg(&w, xblk, out);
        return LPK_OK;
    }
    case LPK_TYPE_Q4_K: {
        vf_wq4k w;
        vf_unpack_q4k(wblk, &w);
        ints_q4k(&w, xblk, out);
        return LPK_OK;
    }
    case LPK_TYPE_Q6_K: {
        vf_wq6k w;
        vf_unpack_q6k(wblk, &w);
        out[0] = ints_q6k(&w, xblk);
        return LPK_OK;
    }
    default:
        return LPK_EUNSUPPORTED;
    }
}

/* ---------------------------------------------------------------- scalar kernels */
/* Rows [o0, o1) of the output, all tokens. Each row is unpacked once into
 * scratch and reused for every token. */
static void scalar_rows(const vf_gemm_args *a, int64_t o0, int64_t o1, int64_t o_next,
                        void *scratch)
{
    (void)o_next;
    int64_t nb = a->n_in / a->block, n_tok = a->n_tok;
    for (int64_t o = o0; o < o1; o++) {
        const uint8_t *row = (const uint8_t *)a->w + o * a->row_bytes;
        switch (a->wtype) {
        case LPK_TYPE_F32: case LPK_TYPE_F16: case LPK_TYPE_BF16: {
            float *wf = scratch;
            lpk_to_f32_row(a->wtype, row, wf, (size_t)a->n_in);
            for (int64_t t = 0; t < n_tok; t++) {
                const float *x = a->x + t * a->n_in;
                float acc = 0.0f;
                for (int64_t i = 0; i < a->n_in; i++) acc = fmaf(wf[i], x[i], acc);
                a->y[t * a->n_out + o] = acc;
            }
            break;
        }
        case LPK_TYPE_Q8_0: case LPK_TYPE_Q4_0: case LPK_TYPE_Q4_1:
        case LPK_TYPE_Q5_0: case LPK_TYPE_Q5_1: case LPK_TYPE_IQ4_NL: {
            vf_wblk32 *wb = scratch;
            for (int64_t b = 0; b < nb; b++)
                vf_unpack_blk32(a->wtype, row + b * a->type_size, &wb[b]);
            int with_min = a->wtype == LPK_TYPE_Q4_1 || a->wtype == LPK_TYPE_Q5_1;
            for (int64_t t = 0; t < n_tok; t++) {
                const vf_xblk32 *xb = (const vf_xblk32 *)a->xq + t * nb;
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    int32_t isum = dot32(wb[b].q, xb[b].qs);
                    float p = wb[b].d * xb[b].d;
                    if (with_min)
                        acc = fmaf(wb[b].m, xb[b].s, acc);
                    acc = fmaf(p, (float)isum, acc);
                }
                a->y[t * a->n_out + o] = acc;
            }
            break;
        }
        case LPK_TYPE_Q4_K: {
            vf_wq4k *wb = scratch;
            for (int64_t b = 0; b < nb; b++) vf_unpack_q4k(row + b * a->type_size, &wb[b]);
            for (int64_t t = 0; t < n_tok; t++) {
                const block_q8_K *xb = (const block_q8_K *)a->xq + t * nb;
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    int32_t in[2];
                    ints_q4k(&wb[b], &xb[b], in);
                    float p = wb[b].d * xb[b].d, pm = -wb[b].dmin * xb[b].d;
                    acc = fmaf(pm, (float)in[1], acc);
                    acc = fmaf(p, (float)in[0], acc);
                }
                a->y[t * a->n_out + o] = acc;
            }
            break;
        }
        case LPK_TYPE_Q6_K: {
            vf_wq6k *wb = scratch;
            for (int64_t b = 0; b < nb; b++) vf_unpack_q6k(row + b * a->type_size, &wb[b]);
            for (int64_t t = 0; t < n_tok; t++) {
                const block_q8_K *xb = (const block_q8_K *)a->xq + t * nb;
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    int32_t isum = ints_q6k(&wb[b], &xb[b]);
                    float p = wb[b].d * xb[b].d;
                    acc = fmaf(p, (float)isum, acc);
                }
                a->y[t * a->n_out + o] = acc;
            }
            break;
        }
        case LPK_TYPE_Q5_K: case LPK_TYPE_Q3_K: case LPK_TYPE_Q2_K: case LPK_TYPE_IQ4_XS: {
            vf_wkg *wb = scratch;
            for (int64_t b = 0; b < nb; b++) vf_unpack_kg(a->wtype, row + b * a->type_size, &wb[b]);
            int with_min = a->wtype == LPK_TYPE_Q5_K || a->wtype == LPK_TYPE_Q2_K;
            for (int64_t t = 0; t < n_tok; t++) {
                const block_q8_K *xb = (const block_q8_K *)a->xq + t * nb;
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    int32_t in[2];
                    ints_kg(&wb[b], &xb[b], in);
                    float p = wb[b].d * xb[b].d, pm = -wb[b].dmin * xb[b].d;
                    if (with_min)
                        acc = fmaf(pm, (float)in[1], acc);
                    acc = fmaf(p, (float)in[0], acc);
                }
                a->y[t * a->n_out + o] = acc;
            }
            break;
        }
        default:
            break;
        }
    }
}

static size_t scalar_scratch(const vf_gemm_args *a)
{
    int64_t nb = a->n_in / a->block;
    switch (a->wtype) {
    case LPK_TYPE_Q4_K: return (size_t)nb * sizeof(vf_wq4k);
    case LPK_TYPE_Q6_K: return (size_t)nb * sizeof(vf_wq6k);
    case LPK_TYPE_Q5_K: case LPK_TYPE_Q3_K: case LPK_TYPE_Q2_K: case LPK_TYPE_IQ4_XS:
        return (size_t)nb * sizeof(vf_wkg);
    case LPK_TYPE_F32: case LPK_TYPE_F16: case LPK_TYPE_BF16:
        return (size_t)a->n_in * sizeof(float);
    default: return (size_t)nb * sizeof(vf_wblk32);
    }
}

static const vf_gemm_kernel kernel_scalar = {
    "scalar", VF_PATH_SCALAR, 1, 1, scalar_scratch, scalar_rows, NULL, NULL,
};

/* ---------------------------------------------------------------- buffers */
/* Per-thread buffers kept from one vf_matmul call to the next (the forward
 * pass makes ~150 calls per batch with the same few sizes; fresh heap pages
 * cost a page fault each, and page faults are dear in a virtual machine):
 * grown as needed, up to KEEP_MAX bytes kept; larger ones are freed after the
 * call. Threads are OpenMP's pool and the callers': each uses only its own. */
enum { KEEP_MAX = 64 << 20 };
typedef struct { void *p; size_t n; } keep_buf;
static _Thread_local keep_buf keep[2]; /* activations, scratch */
#define keep_x keep[0]
#define keep_s keep[1]
/* a thread's kept buffers are freed when it exits */
static pthread_key_t keep_key;
static pthread_once_t keep_once = PTHREAD_ONCE_INIT;

static void keep_free(void *v)
{
    keep_buf *b = v;
    for (int i = 0; i < 2; i++) {
        free(b[i].p);
        b[i].p = NULL;
        b[i].n = 0;
    }
}

static void keep_key_make(void) { (void)pthread_key_create(&keep_key, keep_free); }

static void *keep_get(keep_buf *b, size_t n)
{
    n = (n + 63) & ~(size_t)63;
    if (b->n >= n) return b->p;
    if (!keep[0].p && !keep[1].p) {
        (void)pthread_once(&keep_once, keep_key_make);
        (void)pthread_setspecific(keep_key, keep);
    }
    free(b->p);
    b->p = aligned_alloc(64, n ? n : 64);
    b->n = b->p ? n : 0;
    return b->p;
}

static void keep_put(keep_buf *b)
{
    if (b->n > KEEP_MAX) {
        free(b->p);
        b->p = NULL;
        b->n = 0;
    }
}

/* ---------------------------------------------------------------- dispatch */
void vf_gemm_force_path(int path) { force_cap = path; }

static int is_fp(int wtype)
{
    return wtype == LPK_TYPE_F32 || wtype == LPK_TYPE_F16 || wtype == LPK_TYPE_BF16;
}

static const vf_gemm_kernel *pick_kernel(int wtype)
{
    const vf_gemm_kernel *k = NULL;
#if defined(__x86_64__)
    k = vf_gemm_x86_kernel(wtype, force_cap);
#endif
    return k ? k : &kernel_scalar;
}

int vf_gemm_path(int wtype) { return pick_kernel(wtype)->path; }
const char *vf_gemm_path_name(int wtype) { return pick_kernel(wtype)->name; }

/* Bytes of one activation block for wtype: q8_K for the super-block types. */
static size_t xblk_bytes(int wtype)
{
    return lpk_type_get(wtype)->block_size == QK_K ? sizeof(block_q8_K) : sizeof(vf_xblk32);
}

static int known_type(int wtype)
{
    switch (wtype) {
    case LPK_TYPE_F32: case LPK_TYPE_F16: case LPK_TYPE_BF16:
    case LPK_TYPE_Q8_0: case LPK_TYPE_Q4_0: case LPK_TYPE_Q4_1:
    case LPK_TYPE_Q5_0: case LPK_TYPE_Q5_1: case LPK_TYPE_Q4_K: case LPK_TYPE_Q6_K:
    case LPK_TYPE_Q5_K: case LPK_TYPE_Q3_K: case LPK_TYPE_Q2_K: case LPK_TYPE_IQ4_NL:
    case LPK_TYPE_IQ4_XS:
        return 1;
    default:
        return 0;
    }
}

/* The per-(token, block) integers SIMD kernels read with broadcast loads
 * (see vf_gemm_args.xaux). *out stays NULL when the type needs none. */
static int make_xaux(const vf_gemm_args *a, int64_t n_tok_pad, int32_t **out)
{
    int64_t nb = a->n_in / a->block, n = n_tok_pad * nb;
    int off = 0;
    const int k32 = a->wtype == LPK_TYPE_Q4_K || a->wtype == LPK_TYPE_Q5_K;
    switch (a->wtype) {
    case LPK_TYPE_Q4_0: off = 8; break;
    case LPK_TYPE_Q5_0: off = 16; break;
    case LPK_TYPE_Q4_K: case LPK_TYPE_Q5_K: break;
    default: return LPK_OK;
    }
    int32_t *x = malloc((size_t)n * (k32 ? 4 : 1) * sizeof(int32_t));
    if (!x)
        return LPK_ENOMEM;
    if (k32) {
        const block_q8_K *xb = a->xq;
        for (int64_t i = 0; i < n; i++) {
            for (int k2 = 0; k2 < 4; k2++) {
                int j = 2 * k2;
                int32_t lo = xb[i].bsums[2 * j] + xb[i].bsums[2 * j + 1];
                int32_t hi = xb[i].bsums[2 * j + 2] + xb[i].bsums[2 * j + 3];
                x[i * 4 + k2] = (int32_t)(((uint32_t)lo & 0xffffu) | (uint32_t)hi << 16);
            }
        }
    } else {
        const vf_xblk32 *xb = a->xq;
        for (int64_t i = 0; i < n; i++) x[i] = -off * xb[i].sum;
    }
    *out = x;
    return LPK_OK;
}

int vf_matmul(const void *w, int wtype, int64_t n_out, int64_t n_in,
              const float *x, int64_t n_tok, float *y)
{
    vf_mat m = {w, wtype, n_out, y};
    return vf_matmul_n(&m, 1, n_in, x, n_tok);
}

int vf_matmul_n(const vf_mat *mats, int n_mat, int64_t n_in, const float *x, int64_t n_tok)
{
    if (n_mat < 1 || n_mat > VF_MAT_MAX || n_in <= 0 || n_tok < 0)
        return LPK_EINVAL;
    const int wtype = mats[0].wtype;
    for (int j = 0; j < n_mat; j++) {
        const vf_mat *m = &mats[j];
        if (m->n_out < 0 || (m->n_out && n_tok && (!m->w || !x || !m->y)))
            return LPK_EINVAL;
        if (!known_type(m->wtype))
            return LPK_EUNSUPPORTED;
        if (n_in % lpk_type_get(m->wtype)->block_size)
            return LPK_EINVAL;
        if (m->n_out > ((int64_t)1 << 30))
            return LPK_ENOMEM;
    }
    /* matrices of other types than the first: one call each */
    for (int j = 1; j < n_mat; j++)
        if (mats[j].wtype != wtype) {
            for (int i = 0; i < n_mat; i++) {
                int st = vf_matmul_n(&mats[i], 1, n_in, x, n_tok);
                if (st) return st;
            }
            return LPK_OK;
        }
    int64_t rows = 0;
    for (int j = 0; j < n_mat; j++) rows += mats[j].n_out;
    if (n_tok == 0 || rows == 0)
        return LPK_OK;
    /* every product below stays far inside int64 for any realistic shape;
     * refuse the unrealistic ones rather than overflow */
    if (n_in > ((int64_t)1 << 30) || n_tok > ((int64_t)1 << 30))
        return LPK_ENOMEM;
    const lpk_type_info *ti = lpk_type_get(wtype);

    vf_gemm_args a;
    memset(&a, 0, sizeof a);
    a.w = mats[0].w;
    a.wtype = wtype;
    a.n_out = mats[0].n_out;
    a.n_in = n_in;
    a.n_tok = n_tok;
    a.x = x;
    a.y = mats[0].y;
    a.block = ti->block_size;
    a.type_size = ti->type_size;
    a.row_bytes = (n_in / ti->block_size) * ti->type_size;
    const vf_gemm_kernel *k = pick_kernel(wtype);
    void *xq = NULL;
    int kept = 0; /* xq is keep_x */
    if (!is_fp(wtype) && k->xprep) {
        /* quantized straight into the kernel's own layout, one group of
         * tok_tile tokens at a time */
        int64_t ng = (n_tok + k->tok_tile - 1) / k->tok_tile;
        size_t gb = k->xprep_bytes(&a);
        xq = keep_get(&keep_x, (size_t)ng * gb);
        if (!xq)
            return LPK_ENOMEM;
        kept = 1;
        int64_t g;
#pragma omp parallel for schedule(static)
        for (g = 0; g < ng; g++) k->xprep(&a, g, (uint8_t *)xq + (size_t)g * gb);
        a.xq = xq;
    } else if (!is_fp(wtype)) {
        int64_t nb = n_in / ti->block_size;
        size_t bsz = xblk_bytes(wtype);
        xq = malloc((size_t)(n_tok * nb) * bsz);
        if (!xq)
            return LPK_ENOMEM;
        int64_t t;
#pragma omp parallel for schedule(static)
        for (t = 0; t < n_tok; t++) {
            if (bsz == sizeof(block_q8_K))
                vf_quantize_xk(x + t * n_in, n_in, (block_q8_K *)xq + t * nb);
            else
                vf_quantize_x32(x + t * n_in, n_in, (vf_xblk32 *)xq + t * nb);
        }
        a.xq = xq;
    }

    int32_t *xaux = NULL;
    int64_t n_tok_pad = n_tok;
    if (xq && !k->xprep && k->tok_tile > 1) {
        /* interleave by token tile so a kernel reads a tile's activations
         * through one pointer */
        int64_t tt = k->tok_tile, nb = n_in / ti->block_size;
        size_t bsz = xblk_bytes(wtype);
        n_tok_pad = (n_tok + tt - 1) / tt * tt;
        uint8_t *xi = malloc((size_t)(n_tok_pad * nb) * bsz);
        if (!xi) {
            free(xq);
            return LPK_ENOMEM;
        }
        for (int64_t t = 0; t < n_tok_pad; t++) {
            int64_t ts = t < n_tok ? t : n_tok - 1;
            for (int64_t b = 0; b < nb; b++)
                memcpy(xi + (size_t)(((t / tt) * nb + b) * tt + t % tt) * bsz,
                       (const uint8_t *)xq + (size_t)(ts * nb + b) * bsz, bsz);
        }
        free(xq);
        xq = xi;
        a.xq = xq;
    }
    if (xq && k->path != VF_PATH_SCALAR && !k->xprep) {
        int rc = make_xaux(&a, n_tok_pad, &xaux);
        if (rc) {
            free(xq);
            return rc;
        }
        a.xaux = xaux;
    }
    /* the matrices' work items one after another, each matrix with its own
     * arguments (the activations shared) */
    vf_gemm_args am[VF_MAT_MAX];
    int64_t tile = k->rows_per_tile, first[VF_MAT_MAX + 1];
    first[0] = 0;
    for (int j = 0; j < n_mat; j++) {
        am[j] = a;
        am[j].w = mats[j].w;
        am[j].n_out = mats[j].n_out;
        am[j].y = mats[j].y;
        first[j + 1] = first[j] + (mats[j].n_out + tile - 1) / tile;
    }
    int64_t n_tiles = first[n_mat];
    size_t scratch_sz = k->scratch(&a);
    int failed = 0;
    /* work items are handed out one at a time, each thread claiming its next
     * one before it starts the current one (so that the kernel can fetch the
     * next one's weights from memory while it computes) */
    int64_t claimed = 0;
#pragma omp parallel
    {
        void *scratch = keep_get(&keep_s, scratch_sz);
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
        int64_t i, next;
        int j = 0;
#pragma omp atomic capture
        i = claimed++;
        while (scratch && i < n_tiles) {
#pragma omp atomic capture
            next = claimed++;
            while (i >= first[j + 1]) j++;
            const int64_t n_out = am[j].n_out;
            int64_t o0 = (i - first[j]) * tile, o1 = o0 + tile < n_out ? o0 + tile : n_out;
            int64_t on = next < first[j + 1] ? (next - first[j]) * tile : -1;
            k->rows(&am[j], o0, o1, on, scratch);
            i = next;
        }
        keep_put(&keep_s);
    }
    if (kept) keep_put(&keep_x);
    else free(xq);
    free(xaux);
    return failed ? LPK_ENOMEM : LPK_OK;
}
