/* Mapped files and the mapped-range source (safetensors, llama2.c). */
#include "cv_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int cv_mapfile_open(cv_mapfile *f, const char *path, lpk_error *err)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lpk_err(err, errno == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: cannot open: %s",
                       path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lpk_err(err, LPK_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lpk_err(err, LPK_EIO, "%s: not a regular file", path);
    }
    f->size = (uint64_t)st.st_size;
    if (f->size > 0) {
        if (f->size > (uint64_t)SIZE_MAX) {
            close(fd);
            return lpk_err(err, LPK_ENOMEM, "%s: too large to map", path);
        }
        void *p = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lpk_err(err, LPK_EIO, "%s: cannot map: %s", path, strerror(e));
        }
        f->base = p;
        lpk_map_guard(p, f->size, path); /* a truncation mid-read: an error, not a SIGBUS */
    }
    close(fd);
    return LPK_OK;
}

void cv_mapfile_close(cv_mapfile *f)
{
    if (f && f->base) {
        lpk_map_unguard(f->base);
        munmap((void *)(uintptr_t)f->base, (size_t)f->size);
    }
    if (f) f->base = NULL;
}

void cv_mapfile_release(const cv_mapfile *f, uint64_t off, uint64_t len)
{
    if (!f->base || off >= f->size) return;
    if (len > f->size - off) len = f->size - off;
    uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t a = (off + pg - 1) / pg * pg, b = (off + len) / pg * pg;
    if (off + len == f->size) b = (f->size + pg - 1) / pg * pg;  /* last partial page */
    if (b > a) madvise((void *)(uintptr_t)(f->base + a), (size_t)(b - a), MADV_DONTNEED);
}

/* ---------------------------------------------------------------- mapped source */
typedef struct ms_tensor {
    int file;
    uint64_t offset, nbytes, row_bytes;
    int64_t permute_hd;
    uint64_t released;   /* bytes from offset already given back */
} ms_tensor;

struct cv_msrc {
    cv_source src;       /* first: the cv_source handed out is &m->src */
    cv_mapfile *files;
    size_t n_files;
    ms_tensor *mt;       /* parallel to src.tensors */
    size_t cap;
};

static int ms_read_rows(cv_source *s, const cv_tensor *t, int64_t row0, int64_t nrows,
                        void *dst, lpk_error *err)
{
    cv_msrc *m = (cv_msrc *)s;
    size_t i = (size_t)(uintptr_t)t->priv;
    if (i >= s->n_tensors) return lpk_err(err, LPK_EINVAL, "read_rows: foreign tensor");
    ms_tensor *x = &m->mt[i];
    uint64_t nrow_total = x->row_bytes ? x->nbytes / x->row_bytes : 0;
    if (row0 < 0 || nrows < 0 || (uint64_t)row0 + (uint64_t)nrows > nrow_total)
        return lpk_err(err, LPK_EINVAL, "%s: rows [%lld, +%lld) out of range", t->name,
                       (long long)row0, (long long)nrows);
    const cv_mapfile *f = &m->files[x->file];
    const uint8_t *base = f->base + x->offset;
    uint8_t *out = dst;
    int64_t hd = x->permute_hd;
    if (hd > 1) {
        for (int64_t r = 0; r < nrows; r++)
            memcpy(out + (uint64_t)r * x->row_bytes,
                   base + (uint64_t)cv_unpermute_row(row0 + r, hd) * x->row_bytes,
                   (size_t)x->row_bytes);
    } else {
        memcpy(out, base + (uint64_t)row0 * x->row_bytes, (size_t)((uint64_t)nrows * x->row_bytes));
        hd = 1;
    }
    /* Rows below the head holding the next unread row are done with. */
    uint64_t done = (uint64_t)((row0 + nrows) / hd * hd) * x->row_bytes;
    if (done > x->released + (4u << 20)) {
        cv_mapfile_release(f, x->offset + x->released, done - x->released);
        x->released = done;
    }
    return LPK_OK;
}

static void ms_release(cv_source *s, const cv_tensor *t)
{
    cv_msrc *m = (cv_msrc *)s;
    size_t i = (size_t)(uintptr_t)t->priv;
    if (i >= s->n_tensors) return;
    ms_tensor *x = &m->mt[i];
    cv_mapfile_release(&m->files[x->file], x->offset, x->nbytes);
    x->released = 0;  /* a later pass over the tensor starts from its beginning */
}

static void ms_close(cv_source *s)
{
    cv_msrc *m = (cv_msrc *)s;
    if (!m) return;
    for (size_t i = 0; i < m->n_files; i++) cv_mapfile_close(&m->files[i]);
    free(m->files);
    free(m->mt);
    cv_source_free_base(&m->src);
    free(m);
}

static const cv_source_ops ms_ops = {ms_read_rows, ms_release, ms_close};

int cv_msrc_new(const char *path, cv_msrc **out, lpk_error *err)
{
    *out = NULL;
    cv_msrc *m = calloc(1, sizeof *m);
    if (!m) return lpk_err(err, LPK_ENOMEM, "out of memory");
    m->src.ops = &ms_ops;
    snprintf(m->src.path, sizeof m->src.path, "%s", path);
    m->src.meta = lpk_meta_new();
    if (!m->src.meta) {
        free(m);
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    *out = m;
    return LPK_OK;
}

int cv_msrc_add_file(cv_msrc *m, const char *path, lpk_error *err)
{
    cv_mapfile *nf = realloc(m->files, (m->n_files + 1) * sizeof *nf);
    if (!nf) return lpk_err(err, LPK_ENOMEM, "out of memory");
    m->files = nf;
    int rc = cv_mapfile_open(&m->files[m->n_files], path, err);
    if (rc) return rc;
    rc = cv_source_add_file(&m->src, path, err);
    if (rc) {
        cv_mapfile_close(&m->files[m->n_files]);
        return rc;
    }
    return (int)m->n_files++;
}

const cv_mapfile *cv_msrc_file(const cv_msrc *m, int idx)
{
    return idx >= 0 && (size_t)idx < m->n_files ? &m->files[idx] : NULL;
}

lpk_meta *cv_msrc_meta(cv_msrc *m) { return m->src.meta; }

int cv_msrc_add_tensor(cv_msrc *m, const char *name, const char *src_name, int dtype,
                       int n_dims, const int64_t *dims, int file, uint64_t offset,
                       int64_t permute_hd, lpk_error *err)
{
    if (file < 0 || (size_t)file >= m->n_files || n_dims < 1 || n_dims > LPK_MAX_DIMS)
        return lpk_err(err, LPK_EINVAL, "%s: bad tensor description", src_name);
    const lpk_type_info *ti = lpk_type_get(dtype);
    if (!ti || ti->block_size != 1)
        return lpk_err(err, LPK_EINVAL, "%s: bad dtype %d", src_name, dtype);
    uint64_t ne = 1;
    for (int d = 0; d < n_dims; d++) {
        if (dims[d] < 0 || __builtin_mul_overflow(ne, (uint64_t)dims[d], &ne))
            return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': shape overflows", m->src.path,
                           src_name);
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(ne, (uint64_t)ti->type_size, &nbytes))
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': size overflows", m->src.path,
                       src_name);
    const cv_mapfile *f = &m->files[file];
    if (offset > f->size || nbytes > f->size - offset)
        return lpk_err(err, LPK_ETRUNC,
                       "%s: tensor '%s': bytes [%llu, %llu) beyond the end of the file (%llu bytes)",
                       f->path, src_name, (unsigned long long)offset,
                       (unsigned long long)(offset + nbytes), (unsigned long long)f->size);
    if (m->src.n_tensors == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        cv_tensor *nt = realloc(m->src.tensors, nc * sizeof *nt);
        if (!nt) return lpk_err(err, LPK_ENOMEM, "out of memory");
        m->src.tensors = nt;
        ms_tensor *nm = realloc(m->mt, nc * sizeof *nm);
        if (!nm) return lpk_err(err, LPK_ENOMEM, "out of memory");
        m->mt = nm;
        m->cap = nc;
    }
    cv_tensor *t = &m->src.tensors[m->src.n_tensors];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->src_name, sizeof t->src_name, "%s", src_name);
    t->dtype = dtype;
    t->priv = (void *)(uintptr_t)m->src.n_tensors;
    t->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) t->dims[d] = dims[d];
    ms_tensor *x = &m->mt[m->src.n_tensors];
    memset(x, 0, sizeof *x);
    x->file = file;
    x->offset = offset;
    x->nbytes = nbytes;
    x->row_bytes = (uint64_t)dims[n_dims - 1] * (uint64_t)ti->type_size;
    x->permute_hd = permute_hd;
    if (permute_hd > 1 && (n_dims != 2 || dims[0] % permute_hd || permute_hd % 2))
        x->permute_hd = 0;
    m->src.n_tensors++;
    return LPK_OK;
}

cv_source *cv_msrc_source(cv_msrc *m) { return &m->src; }
