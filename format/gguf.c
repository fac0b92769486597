/* GGUF v2/v3 reading and v3 header writing (docs/GGUF.md).
 *
 * The parser walks the mapped file with a bounds-checked cursor: every count
 * and length is compared with the bytes that remain before anything is
 * allocated, every product is overflow-checked, and tensor data is checked
 * for alignment, bounds and overlap. GGUF carries no checksums, so this
 * structural validation is all a GGUF file gets.
 */
#include "lpk_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGN 32u
#define GGUF_MAX_KEY 65535u     /* spec: keys are at most 2^16-1 bytes */
#define GGUF_MAX_KEYS 16384u    /* real files carry < 100; bounds the metadata store's work */
#define GGUF_MAX_NAME_OUT 63u   /* GGML_MAX_NAME (64) including the NUL */

/* GGML type names (ids are GGML's), for messages about types llmpack does not store. */
static const char *const ggml_names[] = {
    "f32", "f16", "q4_0", "q4_1", "q4_2 (removed)", "q4_3 (removed)", "q5_0", "q5_1",
    "q8_0", "q8_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k", "iq2_xxs", "iq2_xs",
    "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64",
    "f64", "iq1_m", "bf16", "q4_0_4_4", "q4_0_4_8", "q4_0_8_8", "tq1_0", "tq2_0",
    "iq4_nl_4_4", "iq4_nl_4_8", "iq4_nl_8_8", "mxfp4",
};
#define N_GGML_NAMES (sizeof ggml_names / sizeof ggml_names[0])

/* ---------------------------------------------------------------- cursor */
typedef struct gcur {
    const uint8_t *p;
    uint64_t size, pos;
    const char *path;
    lpk_error *err;
} gcur;

static uint64_t left(const gcur *c) { return c->size - c->pos; }

/* Fails with LPK_ETRUNC unless n more bytes are there. */
static int need(gcur *c, uint64_t n, const char *what)
{
    if (n > left(c))
        return lpk_err(c->err, LPK_ETRUNC,
                       "%s: truncated: %s at offset %llu needs %llu bytes, the file has %llu left",
                       c->path, what, (unsigned long long)c->pos, (unsigned long long)n,
                       (unsigned long long)left(c));
    return LPK_OK;
}

static int rd_u32(gcur *c, uint32_t *v, const char *what)
{
    int st = need(c, 4, what);
    if (st) return st;
    *v = lpk_rd32(c->p + c->pos);
    c->pos += 4;
    return LPK_OK;
}

static int rd_u64(gcur *c, uint64_t *v, const char *what)
{
    int st = need(c, 8, what);
    if (st) return st;
    *v = lpk_rd64(c->p + c->pos);
    c->pos += 8;
    return LPK_OK;
}

/* A GGUF string: u64 length + bytes. *s points into the mapping (not NUL-terminated). */
static int rd_str(gcur *c, const char **s, uint64_t *n, const char *what)
{
    uint64_t start = c->pos;
    int st = rd_u64(c, n, what);
    if (st) return st;
    if (*n > left(c))
        return lpk_err(c->err, LPK_ETRUNC,
                       "%s: truncated: %s at offset %llu declares %llu bytes, the file has %llu "
                       "left", c->path, what, (unsigned long long)start, (unsigned long long)*n,
                       (unsigned long long)left(c));
    *s = (const char *)c->p + c->pos;
    c->pos += *n;
    return LPK_OK;
}

/* ---------------------------------------------------------------- key/values */
/* Host-order copy of `count` little-endian values of es bytes each. */
static void decode_le(const uint8_t *src, void *dst, uint64_t count, unsigned es)
{
    uint8_t *d = dst;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t v = lpk_rdn(src + i * es, es);
        switch (es) {
        case 1: d[i] = (uint8_t)v; break;
        case 2: { uint16_t x = (uint16_t)v; memcpy(d + i * 2, &x, 2); break; }
        case 4: { uint32_t x = (uint32_t)v; memcpy(d + i * 4, &x, 4); break; }
        default: memcpy(d + i * 8, &v, 8); break;
        }
    }
}

static int check_bools(gcur *c, const uint8_t *b, uint64_t n, const char *key)
{
    for (uint64_t i = 0; i < n; i++)
        if (b[i] > 1)
            return lpk_err(c->err, LPK_ECORRUPT,
                           "%s: key '%s': bool value %u at offset %llu (must be 0 or 1)", c->path,
                           key, b[i], (unsigned long long)(c->pos + i));
    return LPK_OK;
}

static int read_str_array(gcur *c, lpk_meta *meta, const char *key, uint64_t count)
{
    /* every element takes at least its 8-byte length */
    if (count > left(c) / 8)
        return lpk_err(c->err, LPK_ETRUNC,
                       "%s: truncated: key '%s' declares %llu strings at offset %llu, the file "
                       "has %llu bytes left", c->path, key, (unsigned long long)count,
                       (unsigned long long)c->pos, (unsigned long long)left(c));
    size_t n = count ? (size_t)count : 1;
    const char **strs = malloc(n * sizeof *strs);
    uint64_t *lens = malloc(n * sizeof *lens);
    int st = LPK_OK;
    if (!strs || !lens) {
        st = lpk_err(c->err, LPK_ENOMEM, "%s: key '%s': out of memory for %llu strings", c->path,
                     key, (unsigned long long)count);
        goto out;
    }
    for (uint64_t i = 0; i < count && !st; i++)
        st = rd_str(c, &strs[i], &lens[i], "string array element");
    if (!st && lpk_meta_set_str_arr(meta, key, strs, lens, count))
        st = lpk_err(c->err, LPK_ENOMEM, "%s: key '%s': out of memory", c->path, key);
out:
    free(strs);
    free(lens);
    return st;
}

static int read_value(gcur *c, lpk_meta *meta, const char *key, uint32_t type)
{
    int st;
    if (type == LPK_V_STR) {
        const char *s;
        uint64_t n;
        if ((st = rd_str(c, &s, &n, "string value"))) return st;
        if (lpk_meta_set_strn(meta, key, s, n))
            return lpk_err(c->err, LPK_ENOMEM, "%s: key '%s': out of memory", c->path, key);
        return LPK_OK;
    }
    if (type == LPK_V_ARR) {
        uint32_t elem;
        uint64_t count;
        if ((st = rd_u32(c, &elem, "array element type"))) return st;
        if ((st = rd_u64(c, &count, "array length"))) return st;
        if (elem == LPK_V_ARR)
            return lpk_err(c->err, LPK_EUNSUPPORTED,
                           "%s: key '%s': nested arrays are not supported", c->path, key);
        if (elem >= LPK_V_COUNT)
            return lpk_err(c->err, LPK_ECORRUPT,
                           "%s: key '%s': unknown array element type %u at offset %llu", c->path,
                           key, elem, (unsigned long long)(c->pos - 12));
        if (elem == LPK_V_STR) return read_str_array(c, meta, key, count);
        unsigned es = (unsigned)lpk_vtype_size((int)elem);
        if (count > left(c) / es)
            return lpk_err(c->err, LPK_ETRUNC,
                           "%s: truncated: key '%s' declares %llu %s values at offset %llu, the "
                           "file has %llu bytes left", c->path, key, (unsigned long long)count,
                           lpk_vtype_name((int)elem), (unsigned long long)c->pos,
                           (unsigned long long)left(c));
        const uint8_t *src = c->p + c->pos;
        if (elem == LPK_V_BOOL && (st = check_bools(c, src, count, key))) return st;
        void *vals = malloc(count ? (size_t)(count * es) : 1);
        if (!vals)
            return lpk_err(c->err, LPK_ENOMEM, "%s: key '%s': out of memory", c->path, key);
        decode_le(src, vals, count, es);
        c->pos += count * es;
        st = lpk_meta_set_arr(meta, key, (int)elem, vals, count);
        free(vals);
        if (st) return lpk_err(c->err, LPK_ENOMEM, "%s: key '%s': out of memory", c->path, key);
        return LPK_OK;
    }
    if (type >= LPK_V_COUNT)
        return lpk_err(c->err, LPK_ECORRUPT, "%s: key '%s': unknown value type %u at offset %llu",
                       c->path, key, type, (unsigned long long)(c->pos - 4));
    unsigned es = (unsigned)lpk_vtype_size((int)type);
    if ((st = need(c, es, "scalar value"))) return st;
    if (type == LPK_V_BOOL && (st = check_bools(c, c->p + c->pos, 1, key))) return st;
    uint64_t v8;
    decode_le(c->p + c->pos, &v8, 1, es);
    c->pos += es;
    if (lpk_meta_set_scalar(meta, key, (int)type, &v8))
        return lpk_err(c->err, LPK_ENOMEM, "%s: key '%s': out of memory", c->path, key);
    return LPK_OK;
}

static int read_kvs(gcur *c, lpk_meta *meta, uint64_t n_kv)
{
    /* smallest key/value: 8-byte length, 1-byte key, 4-byte type, 1-byte value */
    if (n_kv > left(c) / 14)
        return lpk_err(c->err, LPK_ETRUNC,
                       "%s: truncated: %llu metadata keys declared, the file has only %llu bytes "
                       "left", c->path, (unsigned long long)n_kv, (unsigned long long)left(c));
    if (n_kv > GGUF_MAX_KEYS)
        return lpk_err(c->err, LPK_EUNSUPPORTED, "%s: %llu metadata keys (at most %u supported)",
                       c->path, (unsigned long long)n_kv, GGUF_MAX_KEYS);
    char *key = NULL;
    int st = LPK_OK;
    for (uint64_t i = 0; i < n_kv && !st; i++) {
        const char *k;
        uint64_t kn;
        uint64_t at = c->pos;
        if ((st = rd_str(c, &k, &kn, "metadata key"))) break;
        if (kn == 0 || kn > GGUF_MAX_KEY || memchr(k, 0, (size_t)kn)) {
            st = lpk_err(c->err, LPK_ECORRUPT,
                         "%s: metadata key %llu at offset %llu: %s", c->path,
                         (unsigned long long)i, (unsigned long long)at,
                         kn == 0 ? "empty key" : kn > GGUF_MAX_KEY ? "key longer than 65535 bytes"
                                                                   : "key contains a NUL byte");
            break;
        }
        free(key);
        key = malloc((size_t)kn + 1);
        if (!key) { st = lpk_err(c->err, LPK_ENOMEM, "%s: out of memory", c->path); break; }
        memcpy(key, k, (size_t)kn);
        key[kn] = '\0';
        if (lpk_meta_find(meta, key)) {
            st = lpk_err(c->err, LPK_ECORRUPT, "%s: duplicate metadata key '%s' at offset %llu",
                         c->path, key, (unsigned long long)at);
            break;
        }
        uint32_t type;
        if ((st = rd_u32(c, &type, "metadata value type"))) break;
        st = read_value(c, meta, key, type);
    }
    free(key);
    return st;
}

/* ---------------------------------------------------------------- tensors */
static int is_pow2(uint64_t a) { return a && !(a & (a - 1)); }

/* general.alignment if present (any unsigned integer type that fits in u32), else 32. */
static int meta_alignment(const lpk_meta *meta, uint32_t *align, const char *path, lpk_error *err)
{
    *align = GGUF_DEFAULT_ALIGN;
    const lpk_kv *kv = lpk_meta_find(meta, "general.alignment");
    if (!kv) return LPK_OK;
    uint32_t a;
    if (lpk_meta_get_u32(meta, "general.alignment", &a))
        return lpk_err(err, LPK_ECORRUPT, "%s: general.alignment has type %s (expected u32)",
                       path, lpk_vtype_name(kv->type));
    if (!is_pow2(a))
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: general.alignment %u is not a power of two", path, a);
    *align = a;
    return LPK_OK;
}

/* Checks a GGML type id for a tensor: known to llmpack and storable. */
static int check_type(uint32_t type, const char *name, const char *path, lpk_error *err)
{
    const lpk_type_info *ti = lpk_type_get((int)type);
    if (ti && ti->storable && type < LPK_TYPE_COUNT) return LPK_OK;
    if (type < N_GGML_NAMES)
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: tensor '%s': GGML type %u (%s) is not supported by llmpack", path,
                       name, type, ggml_names[type]);
    return lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s': unknown GGML type id %u", path,
                   name, type);
}

/* Dims (outermost first) -> element count and byte size, checked. */
static int tensor_size(const lpk_tensor *t, uint64_t *nbytes, const char *path, lpk_error *err)
{
    const lpk_type_info *ti = lpk_type_get(t->type);
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if (t->dims[d] <= 0)
            return lpk_err(err, t->dims[d] == 0 ? LPK_EUNSUPPORTED : LPK_ECORRUPT,
                           "%s: tensor '%s': dimension %d is %lld", path, t->name, d,
                           (long long)t->dims[d]);
        if (__builtin_mul_overflow(n, (uint64_t)t->dims[d], &n) || n > (uint64_t)INT64_MAX)
            return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': element count overflows",
                           path, t->name);
    }
    int64_t row = t->dims[t->n_dims - 1];
    if (row % ti->block_size)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: tensor '%s': row length %lld is not a multiple of the %s block size %d",
                       path, t->name, (long long)row, ti->name, ti->block_size);
    if (lpk_type_nbytes(t->type, n, nbytes))
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': byte size overflows", path, t->name);
    return LPK_OK;
}

static int by_offset(const void *a, const void *b)
{
    const lpk_tensor *x = *(const lpk_tensor *const *)a, *y = *(const lpk_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}
static int by_name(const void *a, const void *b)
{
    return strcmp((*(const lpk_tensor *const *)a)->name, (*(const lpk_tensor *const *)b)->name);
}

/* Duplicate names, and (when check_overlap) overlapping data ranges. Sorting keeps
 * this O(n log n) for files that declare many tensors. */
static int check_set(const lpk_tensor *t, size_t n, int check_overlap, const char *path,
                     lpk_error *err)
{
    if (n < 2) return LPK_OK;
    const lpk_tensor **idx = malloc(n * sizeof *idx);
    if (!idx) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) idx[i] = &t[i];
    int st = LPK_OK;
    qsort(idx, n, sizeof *idx, by_name);
    for (size_t i = 1; i < n && !st; i++)
        if (!strcmp(idx[i - 1]->name, idx[i]->name))
            st = lpk_err(err, LPK_ECORRUPT, "%s: duplicate tensor name '%s'", path, idx[i]->name);
    if (!st && check_overlap) {
        qsort(idx, n, sizeof *idx, by_offset);
        for (size_t i = 1; i < n && !st; i++) {
            const lpk_tensor *a = idx[i - 1], *b = idx[i];
            if (a->size && b->size && a->offset + a->size > b->offset)
                st = lpk_err(err, LPK_ECORRUPT,
                             "%s: tensors '%s' (offset %llu, %llu bytes) and '%s' (offset %llu) "
                             "overlap", path, a->name, (unsigned long long)a->offset,
                             (unsigned long long)a->size, b->name, (unsigned long long)b->offset);
        }
    }
    free(idx);
    return st;
}

static int read_tensor_info(gcur *c, lpk_tensor *t, uint64_t *rel_off)
{
    const char *s;
    uint64_t n;
    uint64_t at = c->pos;
    int st = rd_str(c, &s, &n, "tensor name");
    if (st) return st;
    if (n == 0 || n > LPK_MAX_NAME || memchr(s, 0, (size_t)n))
        return lpk_err(c->err, LPK_ECORRUPT, "%s: tensor info at offset %llu: %s", c->path,
                       (unsigned long long)at,
                       n == 0 ? "empty tensor name"
                       : n > LPK_MAX_NAME ? "tensor name longer than 255 bytes"
                                          : "tensor name contains a NUL byte");
    memcpy(t->name, s, (size_t)n);
    t->name[n] = '\0';
    uint32_t nd;
    if ((st = rd_u32(c, &nd, "tensor n_dims"))) return st;
    if (nd == 0 || nd > LPK_MAX_DIMS)
        return lpk_err(c->err, nd == 0 ? LPK_ECORRUPT : LPK_EUNSUPPORTED,
                       "%s: tensor '%s': %u dimensions (1 to %d supported)", c->path, t->name, nd,
                       LPK_MAX_DIMS);
    t->n_dims = (int)nd;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if ((st = rd_u64(c, &ne, "tensor dimension"))) return st;
        if (ne > (uint64_t)INT64_MAX)
            return lpk_err(c->err, LPK_ECORRUPT, "%s: tensor '%s': dimension %llu is negative",
                           c->path, t->name, (unsigned long long)ne);
        t->dims[nd - 1 - d] = (int64_t)ne; /* GGML ne[] is innermost first */
    }
    uint32_t type;
    if ((st = rd_u32(c, &type, "tensor type"))) return st;
    if ((st = rd_u64(c, rel_off, "tensor offset"))) return st;
    if ((st = check_type(type, t->name, c->path, c->err))) return st;
    t->type = (int)type;
    return tensor_size(t, &t->size, c->path, c->err);
}

int gguf_parse(const uint8_t *buf, uint64_t size, const char *path, lpk_meta *meta,
               lpk_tensor **tensors, size_t *n_tensors, uint32_t *version, lpk_error *err)
{
    *tensors = NULL;
    *n_tensors = 0;
    if (!path) path = "(gguf)";
    if (!buf || !meta) return lpk_err(err, LPK_EINVAL, "%s: gguf_parse: bad arguments", path);
    gcur c = {buf, size, 0, path, err};
    int st;
    if (size < 4 || memcmp(buf, GGUF_MAGIC, 4))
        return lpk_err(err, size < 4 ? LPK_ETRUNC : LPK_ECORRUPT,
                       "%s: not a GGUF file (no 'GGUF' magic)", path);
    c.pos = 4;
    uint32_t v;
    if ((st = rd_u32(&c, &v, "GGUF version"))) return st;
    if (v == 1)
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: GGUF version 1 is not supported (32-bit counts; versions 2 and 3 are "
                       "read): convert it with a newer llama.cpp", path);
    if (v == 0x02000000u || v == 0x03000000u)
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: big-endian GGUF is not supported", path);
    if (v != 2 && v != 3)
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: GGUF version %u is not supported (2 and 3 are)", path, v);
    if (version) *version = v;
    uint64_t n_t, n_kv;
    if ((st = rd_u64(&c, &n_t, "tensor count"))) return st;
    if ((st = rd_u64(&c, &n_kv, "metadata key count"))) return st;
    if ((st = read_kvs(&c, meta, n_kv))) return st;
    uint32_t align;
    if ((st = meta_alignment(meta, &align, path, err))) return st;

    /* smallest tensor info: 8+1 name, 4 n_dims, 8 ne, 4 type, 8 offset */
    if (n_t > left(&c) / 33)
        return lpk_err(err, LPK_ETRUNC,
                       "%s: truncated: %llu tensors declared, the file has only %llu bytes left "
                       "for their infos", path, (unsigned long long)n_t,
                       (unsigned long long)left(&c));
    lpk_tensor *t = calloc(n_t ? (size_t)n_t : 1, sizeof *t);
    uint64_t *rel = malloc((n_t ? (size_t)n_t : 1) * sizeof *rel);
    if (!t || !rel) {
        free(t);
        free(rel);
        return lpk_err(err, LPK_ENOMEM, "%s: out of memory for %llu tensors", path,
                       (unsigned long long)n_t);
    }
    for (uint64_t i = 0; i < n_t && !st; i++) st = read_tensor_info(&c, &t[i], &rel[i]);
    if (st) goto fail;

    uint64_t data = c.pos + (align - c.pos % align) % align; /* c.pos <= size: no overflow */
    if (n_t && data > size) {
        st = lpk_err(err, LPK_ETRUNC,
                     "%s: truncated: the data section starts at %llu, past the end of the file "
                     "(%llu bytes)", path, (unsigned long long)data, (unsigned long long)size);
        goto fail;
    }
    for (uint64_t i = 0; i < n_t && !st; i++) {
        uint64_t room = size - data;
        if (rel[i] % align)
            st = lpk_err(err, LPK_ECORRUPT,
                         "%s: tensor '%s': data offset %llu is not a multiple of the alignment %u",
                         path, t[i].name, (unsigned long long)rel[i], align);
        else if (rel[i] > room || t[i].size > room - rel[i])
            st = lpk_err(err, LPK_ETRUNC,
                         "%s: tensor '%s': data at %llu + %llu bytes extends past the end of the "
                         "file (%llu bytes)", path, t[i].name,
                         (unsigned long long)(data + (rel[i] > room ? 0 : rel[i])),
                         (unsigned long long)t[i].size, (unsigned long long)size);
        t[i].offset = data + rel[i];
        t[i].has_xxh3 = 0;
        t[i].xxh3 = 0;
        t[i].data = st ? NULL : buf + t[i].offset;
    }
    if (st) goto fail;
    if ((st = check_set(t, (size_t)n_t, 1, path, err))) goto fail;
    free(rel);
    *tensors = t;
    *n_tensors = (size_t)n_t;
    return LPK_OK;
fail:
    free(t);
    free(rel);
    return st;
}

/* ---------------------------------------------------------------- writing */
typedef struct gbuf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} gbuf;

static void put(gbuf *b, const void *src, uint64_t n)
{
    if (b->oom) return;
    if (n > b->cap - b->n) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc - b->n < n) {
            if (nc > SIZE_MAX / 2) { b->oom = 1; return; }
            nc *= 2;
        }
        uint8_t *q = realloc(b->p, nc);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, src, (size_t)n);
    b->n += (size_t)n;
}

static void put_le(gbuf *b, uint64_t v, unsigned n)
{
    uint8_t tmp[8];
    for (unsigned i = 0; i < n; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    put(b, tmp, n);
}

static void put_str(gbuf *b, const char *s, uint64_t n)
{
    put_le(b, n, 8);
    put(b, s, n);
}

/* Host-order scalar of es bytes at p -> little-endian bytes. */
static void put_host(gbuf *b, const void *p, unsigned es)
{
    uint64_t v = 0;
    switch (es) {
    case 1: v = *(const uint8_t *)p; break;
    case 2: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
    case 4: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
    default: memcpy(&v, p, 8); break;
    }
    put_le(b, v, es);
}

static int put_kv(gbuf *b, const lpk_kv *kv, lpk_error *err)
{
    size_t kn = strlen(kv->key);
    if (kn == 0 || kn > GGUF_MAX_KEY)
        return lpk_err(err, LPK_EINVAL, "GGUF header: key '%.64s' has an invalid length %zu",
                       kv->key, kn);
    put_str(b, kv->key, kn);
    put_le(b, (uint64_t)kv->type, 4);
    if (kv->type == LPK_V_STR) {
        put_str(b, kv->str.p, kv->str.n);
    } else if (kv->type == LPK_V_ARR) {
        if (kv->elem < 0 || kv->elem >= LPK_V_COUNT || kv->elem == LPK_V_ARR)
            return lpk_err(err, LPK_EINVAL, "GGUF header: key '%s' has a bad element type %d",
                           kv->key, kv->elem);
        put_le(b, (uint64_t)kv->elem, 4);
        put_le(b, kv->count, 8);
        if (kv->elem == LPK_V_STR) {
            for (uint64_t i = 0; i < kv->count; i++) {
                lpk_str s = lpk_kv_str_at(kv, i);
                put_str(b, s.p, s.n);
            }
        } else {
            unsigned es = (unsigned)lpk_vtype_size(kv->elem);
            const uint8_t *d = kv->data;
            for (uint64_t i = 0; i < kv->count; i++) put_host(b, d + i * es, es);
        }
    } else if (kv->type >= 0 && kv->type < LPK_V_COUNT) {
        put_host(b, kv->data, (unsigned)lpk_vtype_size(kv->type));
    } else {
        return lpk_err(err, LPK_EINVAL, "GGUF header: key '%s' has a bad type %d", kv->key,
                       kv->type);
    }
    return LPK_OK;
}

/* The checks shared with the parser report bad input; for the writer the input
 * is the caller's declarations, so the status becomes LPK_EINVAL. */
static int as_inval(lpk_error *err)
{
    if (err) err->status = LPK_EINVAL;
    return LPK_EINVAL;
}

int gguf_header_build(const lpk_meta *meta, lpk_tensor *decls, size_t n_tensors, uint8_t **hdr,
                      uint64_t *hdr_size, lpk_error *err)
{
    *hdr = NULL;
    *hdr_size = 0;
    if (!meta || (n_tensors && !decls))
        return lpk_err(err, LPK_EINVAL, "GGUF header: bad arguments");
    const lpk_kv *akv = lpk_meta_find(meta, "general.alignment");
    if (akv && akv->type != LPK_V_U32)
        return lpk_err(err, LPK_EINVAL, "GGUF header: general.alignment must be u32, not %s",
                       lpk_vtype_name(akv->type));
    uint32_t align;
    int st = meta_alignment(meta, &align, "GGUF header", err);
    if (st) return lpk_err(err, LPK_EINVAL, "GGUF header: bad general.alignment");

    uint64_t *rel = malloc((n_tensors ? n_tensors : 1) * sizeof *rel);
    if (!rel) return lpk_err(err, LPK_ENOMEM, "GGUF header: out of memory");
    /* Data layout first: validate every declaration before serialising. */
    uint64_t off = 0;
    for (size_t i = 0; i < n_tensors && !st; i++) {
        lpk_tensor *t = &decls[i];
        size_t nl = strnlen(t->name, sizeof t->name);
        if (nl == 0 || nl > GGUF_MAX_NAME_OUT)
            st = lpk_err(err, LPK_EINVAL,
                         "GGUF header: tensor name '%s' must have 1 to %u bytes", t->name,
                         GGUF_MAX_NAME_OUT);
        else if (t->n_dims < 1 || t->n_dims > LPK_MAX_DIMS)
            st = lpk_err(err, LPK_EINVAL, "GGUF header: tensor '%s': %d dimensions", t->name,
                         t->n_dims);
        else if (!lpk_type_get(t->type) || !lpk_type_get(t->type)->storable)
            st = lpk_err(err, LPK_EINVAL, "GGUF header: tensor '%s': type %d cannot be stored",
                         t->name, t->type);
        else if (tensor_size(t, &t->size, "GGUF header", err))
            st = as_inval(err);
        if (st) break;
        off += (align - off % align) % align;
        rel[i] = off;
        if (t->size > UINT64_MAX / 2 - off) {
            st = lpk_err(err, LPK_ENOMEM, "GGUF header: data size overflows");
            break;
        }
        off += t->size;
    }
    if (!st && check_set(decls, n_tensors, 0, "GGUF header", err)) st = as_inval(err);
    if (st) {
        free(rel);
        return st;
    }

    gbuf b = {0};
    put(&b, GGUF_MAGIC, 4);
    put_le(&b, 3, 4);
    put_le(&b, n_tensors, 8);
    put_le(&b, lpk_meta_count(meta), 8);
    for (size_t i = 0; i < lpk_meta_count(meta) && !st; i++) st = put_kv(&b, lpk_meta_at(meta, i), err);
    for (size_t i = 0; i < n_tensors && !st; i++) {
        const lpk_tensor *t = &decls[i];
        put_str(&b, t->name, strlen(t->name));
        put_le(&b, (uint64_t)t->n_dims, 4);
        for (int d = t->n_dims - 1; d >= 0; d--) put_le(&b, (uint64_t)t->dims[d], 8);
        put_le(&b, (uint64_t)t->type, 4);
        put_le(&b, rel[i], 8);
    }
    static const uint8_t zeros[256];
    uint64_t pad = (align - b.n % align) % align;
    while (pad) {
        uint64_t k = pad < sizeof zeros ? pad : sizeof zeros;
        put(&b, zeros, k);
        pad -= k;
    }
    if (!st && b.oom) st = lpk_err(err, LPK_ENOMEM, "GGUF header: out of memory");
    if (st) {
        free(b.p);
        free(rel);
        return st;
    }
    for (size_t i = 0; i < n_tensors; i++) {
        decls[i].offset = b.n + rel[i];
        decls[i].has_xxh3 = 0;
    }
    free(rel);
    *hdr = b.p;
    *hdr_size = b.n;
    return LPK_OK;
}
