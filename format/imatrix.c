/* Importance-matrix files (docs/QUANT.md, "Importance matrices"): llama.cpp
 * b4748's legacy binary layout and the newer GGUF layout, detected from the
 * content; one in-memory form for both. */
#include "lpk.h"
#include "lpk_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lpk_xxh.h"

#define SUM2_SUFFIX ".in_sum2"
#define COUNTS_SUFFIX ".counts"
#define COV_SUFFIX LPK_IMATRIX_COV32_SUFFIX
#define COV_W 32   /* columns per block of the cov32 entries */

void lpk_imatrix_free(lpk_imatrix *im)
{
    if (!im) return;
    for (size_t i = 0; i < im->n; i++) {
        free(im->e[i].sum2);
        free(im->e[i].cov32);
    }
    free(im->e);
    free(im->dataset);
    free(im);
}

lpk_imatrix *lpk_imatrix_new(void)
{
    return calloc(1, sizeof(lpk_imatrix));
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a > b && !strcmp(s + a - b, suf);
}

int lpk_imatrix_add(lpk_imatrix *im, const char *name, int64_t n, lpk_imatrix_entry **out)
{
    if (!im || !name || !*name || strlen(name) > LPK_MAX_NAME || n <= 0 || n > INT32_MAX ||
        ends_with(name, COV_SUFFIX))
        return LPK_EINVAL;
    lpk_imatrix_entry *e = realloc(im->e, (im->n + 1) * sizeof *e);
    if (!e) return LPK_ENOMEM;
    im->e = e;
    e = &im->e[im->n];
    memset(e, 0, sizeof *e);
    e->sum2 = calloc((size_t)n, sizeof(float));
    if (!e->sum2) return LPK_ENOMEM;
    strcpy(e->name, name);
    e->n = n;
    im->n++;
    if (out) *out = e;
    return LPK_OK;
}

const lpk_imatrix_entry *lpk_imatrix_find(const lpk_imatrix *im, const char *name)
{
    for (size_t i = 0; im && i < im->n; i++)
        if (!strcmp(im->e[i].name, name)) return &im->e[i];
    return NULL;
}

int lpk_imatrix_set_dataset(lpk_imatrix *im, const char *dataset)
{
    char *d = dataset ? strdup(dataset) : NULL;
    if (dataset && !d) return LPK_ENOMEM;
    free(im->dataset);
    im->dataset = d;
    return LPK_OK;
}

void lpk_imatrix_weights(const lpk_imatrix_entry *e, float *w)
{
    /* the mean square activation per column; the scale does not matter to the
     * quantizers, only the ratios */
    for (int64_t i = 0; i < e->n; i++)
        w[i] = e->count > 0 ? (float)((double)e->sum2[i] / e->count) : 1.0f;
}

int lpk_imatrix_add_cov32(lpk_imatrix_entry *e)
{
    if (!e || e->n % COV_W || strlen(e->name) + strlen(COV_SUFFIX) > LPK_MAX_NAME)
        return LPK_EINVAL;
    if (e->cov32) return LPK_OK;
    e->cov32 = calloc((size_t)e->n * COV_W, sizeof(float));
    return e->cov32 ? LPK_OK : LPK_ENOMEM;
}

int lpk_imatrix_cov32(const lpk_imatrix *im, const char *tensor, int64_t ncols, float *out)
{
    const lpk_imatrix_entry *e = lpk_imatrix_find(im, tensor);
    if (!e || !e->cov32 || e->n != ncols) return 0;
    for (int64_t k = 0; k < e->n * COV_W; k++)
        out[k] = e->count > 0 ? (float)((double)e->cov32[k] / e->count) : 0.0f;
    return 1;
}

size_t lpk_imatrix_n_cov32(const lpk_imatrix *im)
{
    size_t n = 0;
    for (size_t i = 0; im && i < im->n; i++) n += im->e[i].cov32 != NULL;
    return n;
}

/* ---------------------------------------------------------------- checks */

/* e's cov32 blocks, if any: finite, the diagonal not negative (products of
 * a value with itself); off-diagonal values may have either sign. */
static int check_cov(const lpk_imatrix_entry *e, const char *path, lpk_error *err)
{
    if (!e->cov32) return LPK_OK;
    if (e->n % COV_W)
        return lpk_err(err, LPK_ECORRUPT, "%s: entry %s%s: %lld columns are not a multiple "
                       "of %d", path, e->name, COV_SUFFIX, (long long)e->n, COV_W);
    for (int64_t c = 0; c < e->n; c++)
        for (int j = 0; j < COV_W; j++) {
            float v = e->cov32[c * COV_W + j];
            if (!isfinite(v) || (j == c % COV_W && v < 0.0f))
                return lpk_err(err, LPK_EBADVALUE, "%s: entry %s%s: value %g at column %lld, "
                               "%lld", path, e->name, COV_SUFFIX, (double)v, (long long)c,
                               (long long)(c - c % COV_W + j));
        }
    return LPK_OK;
}

/* Gives the entry named base (the name less COV_SUFFIX) the nv values v of a
 * cov32 entry of `calls` calls (legacy; 0: sums over the entry's own count). */
static int attach_cov(lpk_imatrix *im, const char *base, const float *v, int64_t nv,
                      int32_t calls, const char *path, lpk_error *err)
{
    lpk_imatrix_entry *e = NULL;
    for (size_t i = 0; i < im->n && !e; i++)
        if (!strcmp(im->e[i].name, base)) e = &im->e[i];
    if (!e)
        return lpk_err(err, LPK_ECORRUPT, "%s: entry %s%s without the entry %s", path, base,
                       COV_SUFFIX, base);
    if (e->cov32)
        return lpk_err(err, LPK_ECORRUPT, "%s: entry %s%s appears twice", path, base,
                       COV_SUFFIX);
    if (e->n % COV_W || nv != e->n * COV_W)
        return lpk_err(err, LPK_ECORRUPT, "%s: entry %s%s: %lld values; its entry has %lld "
                       "columns: %s", path, base, COV_SUFFIX, (long long)nv, (long long)e->n,
                       e->n % COV_W ? "not a multiple of 32" : "expected 32 per column");
    if (lpk_imatrix_add_cov32(e)) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    if (!calls || (float)calls == e->count)
        memcpy(e->cov32, v, (size_t)nv * sizeof(float));
    else
        for (int64_t k = 0; k < nv; k++) e->cov32[k] = (float)((double)v[k] / calls * e->count);
    return check_cov(e, path, err);
}
static int check_values(const lpk_imatrix_entry *e, const char *path, lpk_error *err)
{
    if (!(e->count > 0) || !isfinite(e->count))
        return lpk_err(err, LPK_EBADVALUE, "%s: entry %s: activation count %g", path, e->name,
                       (double)e->count);
    for (int64_t i = 0; i < e->n; i++)
        if (!isfinite(e->sum2[i]) || e->sum2[i] < 0.0f)
            return lpk_err(err, LPK_EBADVALUE, "%s: entry %s: value %g at column %lld", path,
                           e->name, (double)e->sum2[i], (long long)i);
    return LPK_OK;
}

int lpk_imatrix_check(const lpk_imatrix *im, const char *path, const lpk_tensor *tensors,
                      size_t n_tensors, lpk_error *err)
{
    for (size_t i = 0; i < im->n; i++) {
        const lpk_imatrix_entry *e = &im->e[i];
        const lpk_tensor *t = NULL;
        for (size_t k = 0; k < n_tensors && !t; k++)
            if (!strcmp(tensors[k].name, e->name)) t = &tensors[k];
        if (!t)
            return lpk_err(err, LPK_ECORRUPT,
                           "%s: entry %s: the model has no such tensor (an importance matrix "
                           "made for another model?)", path, e->name);
        if (t->n_dims < 2 || lpk_tensor_ncols(t) != e->n)
            return lpk_err(err, LPK_ECORRUPT,
                           "%s: entry %s: %lld values, but the tensor's rows have %lld columns "
                           "(an importance matrix made for another model?)", path, e->name,
                           (long long)e->n, (long long)(t->n_dims >= 2 ? lpk_tensor_ncols(t) : 0));
        for (size_t k = 0; k < i; k++)
            if (!strcmp(im->e[k].name, e->name))
                return lpk_err(err, LPK_ECORRUPT, "%s: entry %s appears twice", path, e->name);
        int st = check_values(e, path, err);
        if (!st) st = check_cov(e, path, err);
        if (st) return st;
    }
    return LPK_OK;
}

/* ---------------------------------------------------------------- legacy */
/* Cursor over untrusted bytes. */
typedef struct { const uint8_t *p; size_t left; } cur;

static int rd_i32(cur *c, int32_t *v)
{
    if (c->left < 4) return 0;
    *v = (int32_t)lpk_rd32(c->p);
    c->p += 4;
    c->left -= 4;
    return 1;
}

static int read_legacy(const uint8_t *buf, size_t size, const char *path, lpk_imatrix *im,
                       lpk_error *err)
{
    cur c = {buf, size};
    int32_t n;
    /* NAME.cov32 entries, given to NAME's entry once all are read (any order) */
    typedef struct { char name[LPK_MAX_NAME + 1]; const uint8_t *v; int32_t ncall, nval; } later;
    later *cov = NULL;
    size_t n_cov = 0;
    int st = LPK_OK;
    if (!rd_i32(&c, &n)) return lpk_err(err, LPK_ETRUNC, "%s: truncated: no entry count", path);
    if (n < 1 || (size_t)n > size / 16)
        return lpk_err(err, LPK_ECORRUPT, "%s: not an importance matrix (entry count %d)", path,
                       (int)n);
    for (int32_t i = 0; i < n; i++) {
        int32_t len, ncall, nval;
        char name[LPK_MAX_NAME + 1];
        if (!rd_i32(&c, &len))
            return lpk_err(err, LPK_ETRUNC, "%s: truncated in entry %d of %d (name length)", path,
                           (int)i + 1, (int)n);
        if (len < 1 || len > LPK_MAX_NAME)
            return lpk_err(err, LPK_ECORRUPT, "%s: entry %d: name length %d", path, (int)i + 1,
                           (int)len);
        if (c.left < (size_t)len)
            return lpk_err(err, LPK_ETRUNC, "%s: truncated in entry %d of %d (name)", path,
                           (int)i + 1, (int)n);
        memcpy(name, c.p, (size_t)len);
        name[len] = '\0';
        c.p += len;
        c.left -= (size_t)len;
        if (strlen(name) != (size_t)len)
            return lpk_err(err, LPK_ECORRUPT, "%s: entry %d: name holds a NUL byte", path,
                           (int)i + 1);
        if (!rd_i32(&c, &ncall) || !rd_i32(&c, &nval))
            return lpk_err(err, LPK_ETRUNC, "%s: entry %s: truncated (call and value counts)",
                           path, name);
        if (ncall < 1 || nval < 1)
            return lpk_err(err, LPK_ECORRUPT, "%s: entry %s: %d calls, %d values", path, name,
                           (int)ncall, (int)nval);
        if (c.left / 4 < (size_t)nval)
            return lpk_err(err, LPK_ETRUNC, "%s: entry %s: truncated (%d values declared, %zu "
                           "bytes left)", path, name, (int)nval, c.left);
        if (ends_with(name, COV_SUFFIX)) {
            later *t = realloc(cov, (n_cov + 1) * sizeof *cov);
            if (!t) {
                free(cov);
                return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
            }
            cov = t;
            snprintf(cov[n_cov].name, sizeof cov[n_cov].name, "%.*s",
                     (int)(strlen(name) - strlen(COV_SUFFIX)), name);
            cov[n_cov].v = c.p;
            cov[n_cov].ncall = ncall;
            cov[n_cov++].nval = nval;
            c.p += (size_t)nval * 4;
            c.left -= (size_t)nval * 4;
            continue;
        }
        lpk_imatrix_entry *e;
        if ((st = lpk_imatrix_add(im, name, nval, &e))) {
            free(cov);
            return lpk_err(err, st, "%s: entry %s: out of memory", path, name);
        }
        memcpy(e->sum2, c.p, (size_t)nval * 4);
        c.p += (size_t)nval * 4;
        c.left -= (size_t)nval * 4;
        /* legacy values are sum/count * ncall: as sums over ncall "activations" */
        e->count = (float)ncall;
        e->ncall = ncall;
        if ((st = check_values(e, path, err))) {
            free(cov);
            return st;
        }
    }
    float *tmp = NULL;
    for (size_t k = 0; k < n_cov && !st; k++) {
        float *t = realloc(tmp, (size_t)cov[k].nval * sizeof(float));
        if (!t) {
            st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
            break;
        }
        tmp = t;
        for (int32_t i = 0; i < cov[k].nval; i++) tmp[i] = lpk_rdf32(cov[k].v + 4 * (size_t)i);
        st = attach_cov(im, cov[k].name, tmp, cov[k].nval, cov[k].ncall, path, err);
    }
    free(tmp);
    free(cov);
    if (st) return st;
    /* b4748 appends the last call count and the dataset name; older files end here */
    if (c.left) {
        int32_t last, len;
        if (!rd_i32(&c, &last) || !rd_i32(&c, &len))
            return lpk_err(err, LPK_ETRUNC, "%s: truncated after the entries (call count and "
                           "dataset)", path);
        if (last < 0 || len < 0 || (size_t)len > c.left)
            return lpk_err(err, len < 0 || last < 0 ? LPK_ECORRUPT : LPK_ETRUNC,
                           "%s: dataset name of %d bytes, %zu left (call count %d)", path,
                           (int)len, c.left, (int)last);
        im->chunks = last;
        if (len > 0) {
            im->dataset = malloc((size_t)len + 1);
            if (!im->dataset) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
            memcpy(im->dataset, c.p, (size_t)len);
            im->dataset[len] = '\0';
        }
        c.p += len;
        c.left -= (size_t)len;
        if (c.left)
            return lpk_err(err, LPK_ECORRUPT, "%s: %zu bytes after the dataset name", path,
                           c.left);
    }
    im->format = LPK_IMATRIX_LEGACY;
    return LPK_OK;
}

/* Appends n bytes to a growing buffer. */
typedef struct { uint8_t *p; size_t n, cap; int fail; } obuf;

static void put_bytes(obuf *b, const void *p, size_t n)
{
    if (b->fail) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) { b->fail = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_i32(obuf *b, int32_t v)
{
    uint8_t t[4];
    lpk_wr32(t, (uint32_t)v);
    put_bytes(b, t, 4);
}

/* The value llama-imatrix's legacy layout stores for sum v of entry e:
 * v/count * ncall, in double, so that a file read back (count == ncall)
 * writes its own values. */
static double legacy_value(const lpk_imatrix_entry *e, int32_t ncall, float v)
{
    return e->count > 0 ? (double)v / e->count * ncall : 0.0;
}

static int32_t legacy_ncall(const lpk_imatrix_entry *e)
{
    return e->ncall > 0 ? e->ncall : 1;
}

/* The first entry whose legacy values (its cov32 blocks' too) do not fit in
 * a float (a GGUF matrix with tiny counts and huge sums), or NULL. */
static const lpk_imatrix_entry *legacy_overflow(const lpk_imatrix *im)
{
    for (size_t i = 0; i < im->n; i++) {
        const lpk_imatrix_entry *e = &im->e[i];
        for (int64_t k = 0; k < e->n; k++)
            if (!(fabs(legacy_value(e, legacy_ncall(e), e->sum2[k])) <= FLT_MAX)) return e;
        for (int64_t k = 0; e->cov32 && k < e->n * COV_W; k++)
            if (!(fabs(legacy_value(e, legacy_ncall(e), e->cov32[k])) <= FLT_MAX)) return e;
    }
    return NULL;
}

/* One legacy entry: name (with suffix), e's call count, n values v scaled. */
static void put_legacy_entry(obuf *b, const lpk_imatrix_entry *e, const char *suffix,
                             const float *v, int64_t n, float *tmp)
{
    put_i32(b, (int32_t)(strlen(e->name) + strlen(suffix)));
    put_bytes(b, e->name, strlen(e->name));
    put_bytes(b, suffix, strlen(suffix));
    int32_t ncall = legacy_ncall(e);
    put_i32(b, ncall);
    put_i32(b, (int32_t)n);
    for (int64_t k = 0; k < n; k++) tmp[k] = (float)legacy_value(e, ncall, v[k]);
    put_bytes(b, tmp, (size_t)n * 4);
}

int lpk_imatrix_legacy_bytes(const lpk_imatrix *im, uint8_t **out, size_t *n_out)
{
    if (legacy_overflow(im)) return LPK_EBADVALUE;
    obuf b = {0};
    size_t n_cov = lpk_imatrix_n_cov32(im);
    if (im->n + n_cov > INT32_MAX) return LPK_EINVAL;
    put_i32(&b, (int32_t)(im->n + n_cov));
    int64_t most = 0;
    for (size_t i = 0; i < im->n; i++)
        if (im->e[i].n * (im->e[i].cov32 ? COV_W : 1) > most)
            most = im->e[i].n * (im->e[i].cov32 ? COV_W : 1);
    float *tmp = malloc((size_t)(most ? most : 1) * sizeof(float));
    if (!tmp) b.fail = 1;
    /* llama-imatrix's entries first, then the cov32 blocks in the same order */
    for (size_t i = 0; i < im->n && !b.fail; i++)
        put_legacy_entry(&b, &im->e[i], "", im->e[i].sum2, im->e[i].n, tmp);
    for (size_t i = 0; i < im->n && !b.fail; i++)
        if (im->e[i].cov32)
            put_legacy_entry(&b, &im->e[i], COV_SUFFIX, im->e[i].cov32, im->e[i].n * COV_W, tmp);
    free(tmp);
    put_i32(&b, im->chunks);
    size_t dl = im->dataset ? strlen(im->dataset) : 0;
    put_i32(&b, (int32_t)dl);
    if (dl) put_bytes(&b, im->dataset, dl);
    if (b.fail) {
        free(b.p);
        return LPK_ENOMEM;
    }
    *out = b.p;
    *n_out = b.n;
    return LPK_OK;
}

/* ---------------------------------------------------------------- GGUF */

static int read_gguf(const uint8_t *buf, size_t size, const char *path, lpk_imatrix *im,
                     lpk_error *err)
{
    lpk_reader *r = NULL;
    int st = lpk_reader_open_buffer(buf, size, path, &r, err);
    if (st) return st;
    const lpk_meta *m = lpk_reader_meta(r);
    const char *gt = lpk_meta_get_str(m, "general.type");
    if (!gt || strcmp(gt, "imatrix")) {
        st = lpk_err(err, LPK_ECORRUPT, "%s: a GGUF file but not an importance matrix "
                     "(general.type is %s)", path, gt ? gt : "absent");
        goto out;
    }
    static const char *const counts[2] = {"imatrix.chunk_count", "imatrix.chunk_size"};
    for (int k = 0; k < 2; k++) {
        uint32_t u;
        if (lpk_meta_get_u32(m, counts[k], &u)) continue;
        if (u > INT32_MAX) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: %s is %u, out of range", path, counts[k], u);
            goto out;
        }
        *(k ? &im->chunk_size : &im->chunks) = (int32_t)u;
    }
    const lpk_kv *ds = lpk_meta_find(m, "imatrix.datasets");
    if (ds && ds->type == LPK_V_ARR && ds->elem == LPK_V_STR && ds->count > 0) {
        lpk_str s = lpk_kv_str_at(ds, 0);
        im->dataset = strndup(s.p, (size_t)s.n);
        if (!im->dataset) { st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", path); goto out; }
    }
    size_t nt = lpk_reader_n_tensors(r);
    for (size_t i = 0; i < nt; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (!ends_with(t->name, SUM2_SUFFIX)) {
            if (!ends_with(t->name, COUNTS_SUFFIX)) continue;
            char base[LPK_MAX_NAME + 1];
            snprintf(base, sizeof base, "%.*s", (int)(strlen(t->name) - strlen(COUNTS_SUFFIX)),
                     t->name);
            char want[LPK_MAX_NAME + 16];
            snprintf(want, sizeof want, "%s%s", base, SUM2_SUFFIX);
            if (!lpk_reader_find(r, want)) {
                st = lpk_err(err, LPK_ECORRUPT, "%s: entry %s: counts without sums", path, base);
                goto out;
            }
            continue;
        }
        char name[LPK_MAX_NAME + 1], cname[LPK_MAX_NAME + 16];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(t->name) - strlen(SUM2_SUFFIX)),
                 t->name);
        snprintf(cname, sizeof cname, "%s%s", name, COUNTS_SUFFIX);
        if (ends_with(name, COV_SUFFIX)) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: entry %s: a name ending in %s is %s's "
                         "blocks, not an entry", path, name, COV_SUFFIX, "another entry");
            goto out;
        }
        const lpk_tensor *c = lpk_reader_find(r, cname);
        if (!c) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: entry %s: sums without counts", path, name);
            goto out;
        }
        /* dense weights: one matrix, sums [1, n] and counts [1, 1] (outermost
         * first); stacked experts (more matrices) are not LLaMA's */
        int64_t nv = lpk_tensor_ncols(t), nm = lpk_tensor_nrows(t);
        if (t->type != LPK_TYPE_F32 || c->type != LPK_TYPE_F32 || nm != 1 ||
            lpk_tensor_nelems(c) != 1 || nv < 1 || nv > INT32_MAX) {
            st = lpk_err(err, nm != 1 ? LPK_EUNSUPPORTED : LPK_ECORRUPT,
                         "%s: entry %s: sums of %lld x %lld values (%s) and %llu counts (%s); "
                         "expected one row of f32 and one f32 count", path, name, (long long)nm,
                         (long long)nv, lpk_type_get(t->type) ? lpk_type_get(t->type)->name : "?",
                         (unsigned long long)lpk_tensor_nelems(c),
                         lpk_type_get(c->type) ? lpk_type_get(c->type)->name : "?");
            goto out;
        }
        lpk_imatrix_entry *e;
        if ((st = lpk_imatrix_add(im, name, nv, &e))) {
            lpk_err(err, st, "%s: entry %s: out of memory", path, name);
            goto out;
        }
        memcpy(e->sum2, t->data, (size_t)nv * 4);
        memcpy(&e->count, c->data, 4);
        e->ncall = im->chunks;
        if ((st = check_values(e, path, err))) goto out;
    }
    if (!im->n) {
        st = lpk_err(err, LPK_ECORRUPT, "%s: an importance matrix without entries", path);
        goto out;
    }
    /* NAME.cov32: raw sums over NAME.counts' activations, n/32 x 32 x 32 */
    for (size_t i = 0; i < nt && !st; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (!ends_with(t->name, COV_SUFFIX)) continue;
        char name[LPK_MAX_NAME + 1];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(t->name) - strlen(COV_SUFFIX)),
                 t->name);
        uint64_t nv = lpk_tensor_nelems(t);
        if (t->type != LPK_TYPE_F32 || t->n_dims != 3 || t->dims[1] != COV_W ||
            t->dims[2] != COV_W || nv > INT32_MAX) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: entry %s%s: %d-D %s; expected f32 blocks of "
                         "32 x 32", path, name, COV_SUFFIX, t->n_dims,
                         lpk_type_get(t->type) ? lpk_type_get(t->type)->name : "?");
            break;
        }
        st = attach_cov(im, name, t->data, (int64_t)nv, 0, path, err);
    }
    if (st) goto out;
    im->format = LPK_IMATRIX_GGUF;
out:
    lpk_reader_close(r);
    return st;
}

static int write_gguf(const char *path, const lpk_imatrix *im, unsigned flags, lpk_error *err)
{
    lpk_meta *m = lpk_meta_new();
    lpk_tensor *d = calloc(3 * im->n + 1, sizeof *d);
    int st = m && d ? LPK_OK : LPK_ENOMEM;
    if (!st) st = lpk_meta_set_str(m, "general.type", "imatrix");
    if (!st && im->dataset) {
        const char *s = im->dataset;
        st = lpk_meta_set_str_arr(m, "imatrix.datasets", &s, NULL, 1);
    }
    if (!st) st = lpk_meta_set_u32(m, "imatrix.chunk_count", (uint32_t)im->chunks);
    if (!st) st = lpk_meta_set_u32(m, "imatrix.chunk_size", (uint32_t)im->chunk_size);
    if (st) {
        lpk_meta_free(m);
        free(d);
        return lpk_err(err, st, "%s: out of memory", path);
    }
    /* per entry NAME.in_sum2, NAME.counts and, if it has them, NAME.cov32 */
    size_t nd = 0;
    for (size_t i = 0; i < im->n; i++) {
        lpk_tensor *s = &d[nd++], *c = &d[nd++];
        if (strlen(im->e[i].name) + strlen(SUM2_SUFFIX) > LPK_MAX_NAME ||
            (im->e[i].cov32 && strlen(im->e[i].name) + strlen(COV_SUFFIX) > LPK_MAX_NAME)) {
            lpk_meta_free(m);
            free(d);
            return lpk_err(err, LPK_EINVAL, "%s: entry name %s is too long", path, im->e[i].name);
        }
        size_t nl = strlen(im->e[i].name);
        memcpy(s->name, im->e[i].name, nl);
        memcpy(s->name + nl, SUM2_SUFFIX, sizeof SUM2_SUFFIX);
        memcpy(c->name, im->e[i].name, nl);
        memcpy(c->name + nl, COUNTS_SUFFIX, sizeof COUNTS_SUFFIX);
        s->type = c->type = LPK_TYPE_F32;
        s->n_dims = c->n_dims = 2;
        s->dims[0] = 1;
        s->dims[1] = im->e[i].n;
        c->dims[0] = c->dims[1] = 1;
        if (im->e[i].cov32) {
            lpk_tensor *v = &d[nd++];
            memcpy(v->name, im->e[i].name, nl);
            memcpy(v->name + nl, COV_SUFFIX, sizeof COV_SUFFIX);
            v->type = LPK_TYPE_F32;
            v->n_dims = 3;
            v->dims[0] = im->e[i].n / COV_W;
            v->dims[1] = v->dims[2] = COV_W;
        }
    }
    lpk_writer *w = NULL;
    st = lpk_writer_open(path, m, d, nd, flags | LPK_WRITE_GGUF, &w, err);
    for (size_t i = 0, k = 0; i < im->n && !st; i++) {
        const lpk_imatrix_entry *e = &im->e[i];
        st = lpk_writer_tensor_begin(w, d[k++].name, err);
        if (!st) st = lpk_writer_tensor_write(w, e->sum2, (size_t)e->n * 4, err);
        if (!st) st = lpk_writer_tensor_end(w, err);
        if (!st) st = lpk_writer_tensor_begin(w, d[k++].name, err);
        if (!st) st = lpk_writer_tensor_write(w, &e->count, 4, err);
        if (!st) st = lpk_writer_tensor_end(w, err);
        if (!st && e->cov32) {
            st = lpk_writer_tensor_begin(w, d[k++].name, err);
            if (!st) st = lpk_writer_tensor_write(w, e->cov32, (size_t)e->n * COV_W * 4, err);
            if (!st) st = lpk_writer_tensor_end(w, err);
        }
    }
    if (w) {
        if (!st) st = lpk_writer_finish(w, err);
        else lpk_writer_abort(w);
    }
    lpk_meta_free(m);
    free(d);
    return st;
}

/* ---------------------------------------------------------------- files */
static int slurp(const char *path, uint8_t **buf, size_t *n, lpk_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return lpk_err(err, e == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: cannot open: %s", path,
                       strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lpk_err(err, LPK_EIO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *b = malloc(size ? size : 1);
    if (!b) {
        close(fd);
        return lpk_err(err, LPK_ENOMEM, "%s: out of memory for %zu bytes", path, size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t k = read(fd, b + got, size - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = errno;
            close(fd);
            free(b);
            return lpk_err(err, LPK_EIO, "%s: read failed: %s", path,
                           k < 0 ? strerror(e) : "file shrank");
        }
        got += (size_t)k;
    }
    close(fd);
    *buf = b;
    *n = size;
    return LPK_OK;
}

int lpk_imatrix_read_buffer(const void *buf, size_t size, const char *name, lpk_imatrix **out,
                            lpk_error *err)
{
    *out = NULL;
    lpk_imatrix *im = lpk_imatrix_new();
    if (!im) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", name);
    int st = size >= 4 && !memcmp(buf, "GGUF", 4) ? read_gguf(buf, size, name, im, err)
                                                  : read_legacy(buf, size, name, im, err);
    if (st) {
        lpk_imatrix_free(im);
        return st;
    }
    im->hash = XXH3_64bits(buf, size);
    *out = im;
    return LPK_OK;
}

int lpk_imatrix_read(const char *path, lpk_imatrix **out, lpk_error *err)
{
    uint8_t *b;
    size_t n;
    *out = NULL;
    int st = slurp(path, &b, &n, err);
    if (st) return st;
    st = lpk_imatrix_read_buffer(b, n, path, out, err);
    free(b);
    return st;
}

int lpk_imatrix_write(const char *path, lpk_imatrix *im, int format, unsigned flags,
                      lpk_error *err)
{
    if (!im || !im->n) return lpk_err(err, LPK_EINVAL, "%s: no importance matrix entries", path);
    if (format == LPK_IMATRIX_AUTO) {
        size_t n = strlen(path);
        format = n >= 5 && !strcasecmp(path + n - 5, ".gguf") ? LPK_IMATRIX_GGUF
                                                             : LPK_IMATRIX_LEGACY;
    }
    int st;
    if (format == LPK_IMATRIX_GGUF) {
        if ((st = write_gguf(path, im, flags, err))) return st;
        uint8_t *b;
        size_t n;
        if ((st = slurp(path, &b, &n, err))) return st;
        im->hash = XXH3_64bits(b, n);
        free(b);
        return LPK_OK;
    }
    const lpk_imatrix_entry *big = legacy_overflow(im);
    if (big)
        return lpk_err(err, LPK_EBADVALUE, "%s: entry %s: its values scaled to %d calls are "
                       "past a float's range, which the legacy layout cannot hold (write a "
                       ".gguf instead)", path, big->name, (int)legacy_ncall(big));
    uint8_t *b;
    size_t n;
    if ((st = lpk_imatrix_legacy_bytes(im, &b, &n)))
        return lpk_err(err, st, "%s: out of memory", path);
    st = lpk_file_write(path, b, n, flags, err);
    if (!st) im->hash = XXH3_64bits(b, n);
    free(b);
    return st;
}

int lpk_imatrix_rehash(lpk_imatrix *im)
{
    uint8_t *b;
    size_t n;
    int st = lpk_imatrix_legacy_bytes(im, &b, &n);
    if (st) return st;
    im->hash = XXH3_64bits(b, n);
    free(b);
    return LPK_OK;
}

int lpk_imatrix_record(const lpk_imatrix *im, const char *file, lpk_meta *meta)
{
    char h[24];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)im->hash);
    int st = LPK_OK;
    if (file) st = lpk_meta_set_str(meta, "quantize.imatrix.file", file);
    if (!st && im->dataset) st = lpk_meta_set_str(meta, "quantize.imatrix.dataset", im->dataset);
    if (!st) st = lpk_meta_set_i32(meta, "quantize.imatrix.entries_count", (int32_t)im->n);
    if (!st && im->chunks > 0)
        st = lpk_meta_set_i32(meta, "quantize.imatrix.chunks_count", im->chunks);
    if (!st) st = lpk_meta_set_str(meta, "quant.imatrix.hash", h);
    size_t n_cov = lpk_imatrix_n_cov32(im);
    if (!st && n_cov) st = lpk_meta_set_i32(meta, "quant.imatrix.cov32_count", (int32_t)n_cov);
    return st;
}
