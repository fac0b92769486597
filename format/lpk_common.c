/* Status names, error detail, CPU detection, the type table, f16/bf16. */
#include "lpk.h"
#include "lpk_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LPK_X86 1
#endif

const char *lpk_status_name(int status)
{
    switch (status) {
    case LPK_OK: return "ok";
    case LPK_EIO: return "io";
    case LPK_ECORRUPT: return "corrupt";
    case LPK_ETRUNC: return "truncated";
    case LPK_EUNSUPPORTED: return "unsupported";
    case LPK_ENOMEM: return "nomem";
    case LPK_EINVAL: return "invalid";
    case LPK_EEXIST: return "exists";
    case LPK_ENOSPC: return "nospace";
    case LPK_ECHECKSUM: return "checksum";
    case LPK_EINTR: return "interrupted";
    case LPK_EBADVALUE: return "badvalue";
    case LPK_ENOTFOUND: return "notfound";
    default: return "unknown";
    }
}

int lpk_err(lpk_error *err, int status, const char *fmt, ...)
{
    if (err && err->status == LPK_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

void lpk_error_clear(lpk_error *err)
{
    if (err) {
        err->status = LPK_OK;
        err->msg[0] = '\0';
    }
}

/* ---------------------------------------------------------------- cpu */
static unsigned cpu_flags;
static int cpu_done;

static unsigned cpu_detect(void)
{
    unsigned f = 0;
#ifdef LPK_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    int osxsave = (c >> 27) & 1;
    int fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx)
        return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    int ymm_ok = (xlo & 0x6) == 0x6;
    int zmm_ok = (xlo & 0xe6) == 0xe6;
    if (!ymm_ok)
        return 0;
    if (fma) f |= LPK_CPU_FMA;
    if (f16c) f |= LPK_CPU_F16C;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if ((b >> 5) & 1) f |= LPK_CPU_AVX2;
        if (zmm_ok) {
            if ((b >> 16) & 1) f |= LPK_CPU_AVX512F;
            if ((b >> 30) & 1) f |= LPK_CPU_AVX512BW;
            if ((b >> 31) & 1) f |= LPK_CPU_AVX512VL;
            if ((c >> 11) & 1) f |= LPK_CPU_AVX512VNNI;
        }
    }
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
        if ((a >> 4) & 1) f |= LPK_CPU_AVXVNNI;
    }
#endif
    return f;
}

unsigned lpk_cpu_features(void)
{
    if (!__atomic_load_n(&cpu_done, __ATOMIC_ACQUIRE)) {
        unsigned f = cpu_detect();
        const char *e = getenv("LLMPACK_SIMD");
        if (e && strcmp(e, "scalar") == 0)
            f = 0;
        else if (e && strcmp(e, "avx2") == 0)
            f &= LPK_CPU_AVX2 | LPK_CPU_FMA | LPK_CPU_F16C;
        /* AVX2 kernels assume FMA and F16C alongside; a CPU with AVX2 but not
         * both gets the scalar paths. */
        if (!(f & LPK_CPU_FMA) || !(f & LPK_CPU_F16C))
            f &= ~(unsigned)(LPK_CPU_AVX2 | LPK_CPU_AVX512F | LPK_CPU_AVX512BW |
                             LPK_CPU_AVX512VL | LPK_CPU_AVX512VNNI | LPK_CPU_AVXVNNI);
        __atomic_store_n(&cpu_flags, f, __ATOMIC_RELAXED);
        __atomic_store_n(&cpu_done, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&cpu_flags, __ATOMIC_RELAXED);
}

void *lpk_alloc_big(size_t n)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t huge = (size_t)2 << 20;
    if (n >= 2 * huge && n <= SIZE_MAX - huge) {
        size_t r = (n + huge - 1) & ~(huge - 1);
        void *p = aligned_alloc(huge, r);
        if (p) madvise(p, r, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
        return p;
    }
#endif
    return malloc(n ? n : 1);
}

const char *lpk_version(void)
{
    return LPK_VERSION_STRING;
}

const char *lpk_cpu_describe(void)
{
    static char buf[128];
    static const struct { unsigned f; const char *n; } names[] = {
        {LPK_CPU_AVX2, "avx2"}, {LPK_CPU_FMA, "fma"}, {LPK_CPU_F16C, "f16c"},
        {LPK_CPU_AVX512F, "avx512f"}, {LPK_CPU_AVX512BW, "avx512bw"},
        {LPK_CPU_AVX512VL, "avx512vl"}, {LPK_CPU_AVX512VNNI, "avx512vnni"},
        {LPK_CPU_AVXVNNI, "avxvnni"},
    };
    unsigned f = lpk_cpu_features();
    char tmp[128] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (f & names[i].f) {
            if (tmp[0]) strcat(tmp, " ");
            strcat(tmp, names[i].n);
        }
    }
    if (!tmp[0]) strcpy(tmp, "scalar");
    memcpy(buf, tmp, sizeof buf);
    return buf;
}

/* ---------------------------------------------------------------- types */
static const lpk_type_info type_table[] = {
    {LPK_TYPE_F32, "f32", 1, 4, 1},
    {LPK_TYPE_F16, "f16", 1, 2, 1},
    {LPK_TYPE_Q4_0, "q4_0", 32, 18, 1},
    {LPK_TYPE_Q4_1, "q4_1", 32, 20, 1},
    {LPK_TYPE_Q5_0, "q5_0", 32, 22, 1},
    {LPK_TYPE_Q5_1, "q5_1", 32, 24, 1},
    {LPK_TYPE_Q8_0, "q8_0", 32, 34, 1},
    {LPK_TYPE_Q2_K, "q2_k", 256, 84, 1},
    {LPK_TYPE_Q3_K, "q3_k", 256, 110, 1},
    {LPK_TYPE_Q4_K, "q4_k", 256, 144, 1},
    {LPK_TYPE_Q5_K, "q5_k", 256, 176, 1},
    {LPK_TYPE_Q6_K, "q6_k", 256, 210, 1},
    {LPK_TYPE_Q8_K, "q8_k", 256, 292, 0},
    {LPK_TYPE_IQ4_NL, "iq4_nl", 32, 18, 1},
    {LPK_TYPE_IQ4_XS, "iq4_xs", 256, 136, 1},
    {LPK_TYPE_BF16, "bf16", 1, 2, 1},
};

const lpk_type_info *lpk_type_get(int id)
{
    for (size_t i = 0; i < sizeof type_table / sizeof type_table[0]; i++)
        if (type_table[i].id == id)
            return &type_table[i];
    return NULL;
}

int lpk_type_from_name(const char *name)
{
    if (!name) return -1;
    for (size_t i = 0; i < sizeof type_table / sizeof type_table[0]; i++)
        if (strcasecmp(type_table[i].name, name) == 0)
            return type_table[i].id;
    return -1;
}

int lpk_type_nbytes(int type, uint64_t n_elems, uint64_t *out)
{
    const lpk_type_info *ti = lpk_type_get(type);
    if (!ti || n_elems % (uint64_t)ti->block_size != 0)
        return LPK_EINVAL;
    uint64_t blocks = n_elems / (uint64_t)ti->block_size;
    if (blocks > UINT64_MAX / (uint64_t)ti->type_size)
        return LPK_ENOMEM;
    *out = blocks * (uint64_t)ti->type_size;
    return LPK_OK;
}

uint64_t lpk_tensor_nelems(const lpk_tensor *t)
{
    if (t->n_dims <= 0) return 0;
    uint64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= (uint64_t)t->dims[i];
    return n;
}

int64_t lpk_tensor_ncols(const lpk_tensor *t)
{
    return t->n_dims > 0 ? t->dims[t->n_dims - 1] : 0;
}

int64_t lpk_tensor_nrows(const lpk_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i + 1 < t->n_dims; i++) n *= t->dims[i];
    return t->n_dims > 0 ? n : 0;
}

/* ---------------------------------------------------------------- half */
static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float lpk_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return u2f(sign);
        /* subnormal: value = man * 2^-24, exact in f32 */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return u2f(sign | 0x7f800000u | (man << 13));
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t lpk_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: keep quiet, keep top mantissa bits */
        return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
    if (a >= 0x477ff000u) /* rounds to >= 65520 -> inf */
        return (uint16_t)(sign | 0x7c00);
    if (a < 0x38800000u) { /* below smallest normal 2^-14: subnormal or zero */
        /* value / 2^-24, rounded to nearest even */
        float v = u2f(a) * 16777216.0f; /* exact: power-of-two scaling */
        uint32_t q = (uint32_t)v;
        float r = v - (float)q;
        if (r > 0.5f || (r == 0.5f && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t exp = (a >> 23) - 112, man = a & 0x7fffff;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* may carry into exp: correct */
    return (uint16_t)(sign | h);
}

float lpk_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t lpk_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

#ifdef LPK_X86
static LPK_TARGET("avx2,f16c") void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = lpk_f16_to_f32(src[i]);
}

static LPK_TARGET("avx2,f16c") void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = lpk_f32_to_f16(src[i]);
}

static LPK_TARGET("avx2") void bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(v, 16));
    }
    for (; i < n; i++) dst[i] = lpk_bf16_to_f32(src[i]);
}
#endif

void lpk_f16_to_f32_row(const uint16_t *src, float *dst, size_t n)
{
#ifdef LPK_X86
    if (lpk_cpu_features() & LPK_CPU_F16C) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = lpk_f16_to_f32(src[i]);
}

void lpk_f32_to_f16_row(const float *src, uint16_t *dst, size_t n)
{
#ifdef LPK_X86
    /* vcvtps2ph turns NaN payloads differently than the scalar path; use it only
     * when the row has no NaN (callers reject NaN weights anyway). */
    if (lpk_cpu_features() & LPK_CPU_F16C) {
        int has_nan = 0;
        for (size_t i = 0; i < n; i++) has_nan |= isnan(src[i]);
        if (!has_nan) { f32_to_f16_f16c(src, dst, n); return; }
    }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = lpk_f32_to_f16(src[i]);
}

void lpk_bf16_to_f32_row(const uint16_t *src, float *dst, size_t n)
{
#ifdef LPK_X86
    if (lpk_cpu_features() & LPK_CPU_AVX2) { bf16_to_f32_avx2(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = lpk_bf16_to_f32(src[i]);
}

void lpk_f32_to_bf16_row(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = lpk_f32_to_bf16(src[i]);
}

int lpk_to_f32_row(int type, const void *src, float *dst, size_t n)
{
    switch (type) {
    case LPK_TYPE_F32: memcpy(dst, src, n * 4); return LPK_OK;
    case LPK_TYPE_F16: lpk_f16_to_f32_row(src, dst, n); return LPK_OK;
    case LPK_TYPE_BF16: lpk_bf16_to_f32_row(src, dst, n); return LPK_OK;
    default: return LPK_EINVAL;
    }
}

/* ---------------------------------------------------------------- json text */
/* Does the integer literal p[0..n) (optional '-', digits) fit int64? */
static int int_literal_fits(const char *p, size_t n)
{
    int neg = n && p[0] == '-';
    size_t i = (size_t)neg, digits = n - (size_t)neg;
    while (i < n && p[i] == '0' && digits > 1) i++, digits--;
    if (digits < 19) return 1;
    if (digits > 19) return 0;
    return memcmp(p + i, neg ? "9223372036854775808" : "9223372036854775807", 19) <= 0;
}

char *lpk_json_relax_bigints(const char *text, size_t n, size_t *out_n)
{
    size_t extra = 0, i = 0;
    int in_str = 0;
    /* two passes: count the literals to widen, then copy */
    for (int pass = 0; pass < 2; pass++) {
        char *out = NULL;
        size_t o = 0;
        if (pass) {
            out = malloc(n + extra + 1);
            if (!out) return NULL;
        }
        in_str = 0;
        for (i = 0; i < n;) {
            char c = text[i];
            if (in_str) {
                if (c == '\\' && i + 1 < n) {
                    if (out) out[o] = c, out[o + 1] = text[i + 1];
                    o += 2, i += 2;
                    continue;
                }
                if (c == '"') in_str = 0;
                if (out) out[o] = c;
                o++, i++;
                continue;
            }
            if (c == '"') in_str = 1;
            if (c == '-' || (c >= '0' && c <= '9')) {
                size_t b = i;
                if (c == '-') i++;
                while (i < n && text[i] >= '0' && text[i] <= '9') i++;
                int is_int = i > b + (c == '-') &&
                             !(i < n && (text[i] == '.' || text[i] == 'e' || text[i] == 'E'));
                if (out) memcpy(out + o, text + b, i - b);
                o += i - b;
                if (is_int && !int_literal_fits(text + b, i - b)) {
                    if (out) memcpy(out + o, ".0", 2);
                    o += 2;
                    if (!pass) extra += 2;
                }
                continue;
            }
            if (out) out[o] = c;
            o++, i++;
        }
        if (pass) {
            out[o] = 0;
            if (out_n) *out_n = o;
            return out;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- finite values */
/* Where each block type keeps its f16 scales (GGML's block layouts). */
static const struct {
    int type, n;
    uint16_t off[2];
} scale_at[] = {
    {LPK_TYPE_Q4_0, 1, {0, 0}},   {LPK_TYPE_Q4_1, 2, {0, 2}},   {LPK_TYPE_Q5_0, 1, {0, 0}},
    {LPK_TYPE_Q5_1, 2, {0, 2}},   {LPK_TYPE_Q8_0, 1, {0, 0}},   {LPK_TYPE_Q2_K, 2, {80, 82}},
    {LPK_TYPE_Q3_K, 1, {108, 0}}, {LPK_TYPE_Q4_K, 2, {0, 2}},   {LPK_TYPE_Q5_K, 2, {0, 2}},
    {LPK_TYPE_Q6_K, 1, {208, 0}}, {LPK_TYPE_IQ4_NL, 1, {0, 0}}, {LPK_TYPE_IQ4_XS, 1, {0, 0}},
};

/* The OR over nw 64-bit words at q of ((w & wm) + low) & top (lpk_check_finite's
 * test, lane by lane). */
static uint64_t swar_or(const uint8_t *q, uint64_t nw, uint64_t wm, uint64_t low, uint64_t top)
{
    uint64_t w = 0;
    for (uint64_t k = 0; k < nw; k++) w |= ((lpk_rd64(q + 8 * k) & wm) + low) & top;
    return w;
}

#if defined(__x86_64__)
/* swar_or four words at a time: the same 64-bit additions in vector lanes */
static LPK_TARGET("avx2") uint64_t swar_or_avx2(const uint8_t *q, uint64_t nw, uint64_t wm,
                                                uint64_t low, uint64_t top)
{
    __m256i acc = _mm256_setzero_si256(), vm = _mm256_set1_epi64x((long long)wm);
    __m256i vl = _mm256_set1_epi64x((long long)low), vt = _mm256_set1_epi64x((long long)top);
    uint64_t k = 0;
    for (; k + 4 <= nw; k += 4) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(q + 8 * k));
        acc = _mm256_or_si256(acc, _mm256_and_si256(_mm256_add_epi64(_mm256_and_si256(v, vm), vl), vt));
    }
    return (uint64_t)_mm256_testz_si256(acc, acc) ? swar_or(q + 8 * k, nw - k, wm, low, top)
                                                   : top;
}
#endif

int lpk_check_finite(int type, const void *data, uint64_t n, uint64_t *where)
{
    const uint8_t *p = data;
    uint64_t bad = UINT64_MAX;
    if (type == LPK_TYPE_F32 || type == LPK_TYPE_F16 || type == LPK_TYPE_BF16) {
        /* exponent all ones = Inf or NaN; chunks keep the inner loop branch-free.
         * Two f32 or four f16/bf16 values per 64-bit word: adding the lowest
         * exponent bit to each masked exponent field carries into the field's
         * sign bit exactly when the exponent is all ones (never out of the field) */
        int es = type == LPK_TYPE_F32 ? 4 : 2;
        uint32_t m = type == LPK_TYPE_F32 ? 0x7f800000u : type == LPK_TYPE_F16 ? 0x7c00u : 0x7f80u;
        uint64_t lanes = es == 4 ? 0x0000000100000001u : 0x0001000100010001u;
        uint64_t wm = m * lanes, low = (m & (0u - m)) * lanes, top = (es == 4 ? 0x80000000u : 0x8000u) * lanes;
        uint64_t ne = n / (uint64_t)es;
#if defined(__x86_64__)
        const int avx2 = (lpk_cpu_features() & LPK_CPU_AVX2) != 0;
#endif
        for (uint64_t c = 0; c < ne && bad == UINT64_MAX; c += 4096) {
            uint64_t e = ne - c < 4096 ? ne : c + 4096;
            uint64_t nw = (e - c) * (uint64_t)es / 8, i;
            const uint8_t *q = p + c * (uint64_t)es;
#if defined(__x86_64__)
            uint64_t w = avx2 ? swar_or_avx2(q, nw, wm, low, top) : swar_or(q, nw, wm, low, top);
#else
            uint64_t w = swar_or(q, nw, wm, low, top);
#endif
            unsigned hit = w != 0;
            for (i = c + nw * 8 / (uint64_t)es; i < e; i++)
                hit |= ((es == 4 ? lpk_rd32(p + 4 * i) : lpk_rd16(p + 2 * i)) & m) == m;
            for (i = c; hit && i < e && bad == UINT64_MAX; i++)
                if (((es == 4 ? lpk_rd32(p + 4 * i) : lpk_rd16(p + 2 * i)) & m) == m) bad = i;
        }
    } else {
        const lpk_type_info *ti = lpk_type_get(type);
        for (size_t k = 0; ti && k < sizeof scale_at / sizeof scale_at[0]; k++) {
            if (scale_at[k].type != type) continue;
            uint64_t bs = (uint64_t)ti->type_size;
            for (uint64_t b = 0; b + bs <= n && bad == UINT64_MAX; b += bs)
                for (int j = 0; j < scale_at[k].n; j++)
                    if ((lpk_rd16(p + b + scale_at[k].off[j]) & 0x7c00u) == 0x7c00u) bad = b / bs;
        }
    }
    if (bad == UINT64_MAX) return LPK_OK;
    if (where) *where = bad;
    return LPK_EBADVALUE;
}
