/* torch.save files: the zip (through cv_zip.c) and the pickle resolved
 * against its members.
 *
 * torch.save writes an uncompressed zip: ARCHIVE/data.pkl (the state dict
 * pickle), ARCHIVE/data/KEY (one raw little-endian storage per key),
 * ARCHIVE/version and, since torch 1.10 or so, ARCHIVE/byteorder. Members are
 * stored, so a storage is a byte range of the mapped file: no copy, random
 * access, and pages can be dropped once a tensor is written. */
#include "cv_torch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- torch file */
/* torch's pre-1.6 format: a bare pickle of the magic number
 * 0x1950a86a20f9469cfc6c (LONG1, 10 bytes) follows the PROTO 2 header. */
static const uint8_t legacy_magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                       0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static int name_is(const cv_zip_entry *e, const char *prefix, size_t pl, const char *rest)
{
    size_t rl = strlen(rest);
    return e->name_len == pl + rl && !memcmp(e->name, prefix, pl) && !memcmp(e->name + pl, rest, rl);
}

static int cmp_entry(const void *a, const void *b)
{
    const cv_zip_entry *x = a, *y = b;
    size_t m = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, m);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

int cv_pk_contiguous(const cv_pk_tensor *t)
{
    int64_t want = 1;
    for (int d = t->n_dims - 1; d >= 0; d--) {
        if (t->dims[d] != 1 && t->strides[d] != want) return 0;
        want *= t->dims[d];
    }
    return 1;
}

static void fmt_dims(char *s, size_t n, const int64_t *v, int k)
{
    size_t o = (size_t)snprintf(s, n, "(");
    for (int i = 0; i < k && o < n; i++)
        o += (size_t)snprintf(s + o, n - o, "%s%lld", i ? ", " : "", (long long)v[i]);
    if (o < n) snprintf(s + o, n - o, ")");
}

/* Resolves one pickle tensor against the sorted zip entries. */
static int resolve(cv_torch_file *f, const cv_zip_entry *sorted, size_t n, const char *prefix,
                   size_t pl, const cv_pk_tensor *pt, cv_pt_tensor *t, lpk_error *err)
{
    memcpy(t->name, pt->name, sizeof t->name);
    t->stype = pt->stype;
    t->type = cv_pt_stype_lpk(pt->stype);
    if (pt->n_dims > LPK_MAX_DIMS)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s' has %d dims (at most %d)", f->path,
                       pt->name, pt->n_dims, LPK_MAX_DIMS);
    t->n_dims = pt->n_dims;
    uint64_t numel = 1;
    for (int d = 0; d < pt->n_dims; d++) {
        if (pt->dims[d] < 0 || (pt->dims[d] && numel > UINT64_MAX / (uint64_t)pt->dims[d]))
            return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s' has a bad shape", f->path,
                           pt->name);
        numel *= (uint64_t)pt->dims[d];
        t->dims[d] = pt->dims[d];
    }
    if (!cv_pk_contiguous(pt)) {
        char sz[128], st[128];
        fmt_dims(sz, sizeof sz, pt->dims, pt->n_dims);
        fmt_dims(st, sizeof st, pt->strides, pt->n_dims);
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: tensor '%s' is not contiguous (size %s, strides %s); re-save it "
                       "with .contiguous()", f->path, pt->name, sz, st);
    }
    char mname[LPK_MAX_NAME + 80];
    int ml = snprintf(mname, sizeof mname, "%.*sdata/%s", (int)pl, prefix, pt->key);
    cv_zip_entry key = {.name = mname, .name_len = (size_t)ml};
    const cv_zip_entry *e = bsearch(&key, sorted, n, sizeof *sorted, cmp_entry);
    if (!e)
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s' refers to storage '%s', but there is "
                       "no member %s", f->path, pt->name, pt->key, mname);
    if (e->method != 0 || e->csize != e->usize)
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: member %s is compressed (method %u); torch.save stores storages "
                       "uncompressed", f->path, mname, e->method);
    uint64_t off;
    int rc = cv_zip_data_offset(f->map, f->size, f->path, e, &off, err);
    cv_torch_file_release(f, f->map + e->hdr_off, 30);  /* one header per tensor: */
    if (rc) return rc;                                   /* keep none mapped */
    uint64_t es = (uint64_t)cv_pt_stype_size(pt->stype);
    if (pt->storage_numel < 0 || (uint64_t)pt->storage_numel > e->usize / es ||
        pt->offset < 0 || (uint64_t)pt->offset > (uint64_t)pt->storage_numel ||
        numel > (uint64_t)pt->storage_numel - (uint64_t)pt->offset)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: tensor '%s' (%llu elements at element offset %lld) does not fit its "
                       "storage '%s' (%lld %s elements declared, %llu bytes stored)", f->path,
                       pt->name, (unsigned long long)numel, (long long)pt->offset, pt->key,
                       (long long)pt->storage_numel, cv_pt_stype_name(pt->stype),
                       (unsigned long long)e->usize);
    t->data = f->map + off + (uint64_t)pt->offset * es;
    t->nbytes = numel * es;
    return 0;
}

static int torch_parse(cv_torch_file *f, lpk_error *err)
{
    if (f->size >= sizeof legacy_magic && !memcmp(f->map, legacy_magic, sizeof legacy_magic))
        return lpk_err(err, LPK_EUNSUPPORTED,
                       "%s: legacy torch format, re-save with torch>=1.6 (this is a pre-1.6 pickle, not a zip)",
                       f->path);
    cv_zip_entry *ents;
    size_t n;
    int rc = cv_zip_parse(f->map, f->size, f->path, &ents, &n, err);
    if (rc) return rc;
    /* The pickle is ARCHIVE/data.pkl for any top-level folder name ARCHIVE. */
    const cv_zip_entry *pk = NULL;
    for (size_t i = 0; i < n && !pk; i++) {
        const char *s = ents[i].name;
        size_t l = ents[i].name_len;
        const char *slash = memchr(s, '/', l);
        if (slash && (size_t)(slash - s) + 1 + 8 == l && !memcmp(slash + 1, "data.pkl", 8))
            pk = &ents[i];
    }
    if (!pk) {
        free(ents);
        return lpk_err(err, LPK_ECORRUPT, "%s: zip archive without ARCHIVE/data.pkl: not a "
                       "torch.save file", f->path);
    }
    size_t pl = pk->name_len - 8;
    char prefix[LPK_MAX_NAME + 1];
    if (pl > LPK_MAX_NAME) pl = LPK_MAX_NAME;  /* names are checked against members anyway */
    memcpy(prefix, pk->name, pl);
    prefix[pl] = 0;
    uint64_t pk_off;
    if ((rc = cv_zip_data_offset(f->map, f->size, f->path, pk, &pk_off, err))) goto out;
    if (pk->method != 0 || pk->csize != pk->usize) {
        rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: %sdata.pkl is compressed (method %u)", f->path,
                     prefix, pk->method);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (name_is(&ents[i], prefix, pl, "byteorder")) {
            uint64_t bo;
            if ((rc = cv_zip_data_offset(f->map, f->size, f->path, &ents[i], &bo, err))) goto out;
            if (!(ents[i].usize == 6 && !memcmp(f->map + bo, "little", 6))) {
                rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: storages are not little-endian "
                             "(%sbyteorder)", f->path, prefix);
                goto out;
            }
        }
    cv_pk_tensor *pts;
    size_t npt;
    if ((rc = cv_pickle_state_dict(f->map + pk_off, (size_t)pk->usize, f->path, &pts, &npt, err)))
        goto out;
    qsort(ents, n, sizeof *ents, cmp_entry);
    f->tensors = calloc(npt ? npt : 1, sizeof *f->tensors);
    if (!f->tensors) rc = lpk_err(err, LPK_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; !rc && i < npt; i++)
        rc = resolve(f, ents, n, prefix, pl, &pts[i], &f->tensors[i], err);
    f->n_tensors = npt;
    free(pts);
out:
    free(ents);
    return rc;
}

/* A torch file and whether its bytes are our own mapping (unmapped on close). */
typedef struct torch_mapped {
    cv_torch_file f;  /* first: cv_torch_file pointers are torch_mapped pointers */
    int mapped;
} torch_mapped;

int cv_torch_file_open_mem(const char *name, const uint8_t *buf, uint64_t size,
                           cv_torch_file **out, lpk_error *err)
{
    *out = NULL;
    torch_mapped *m = calloc(1, sizeof *m);
    if (!m) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", name);
    snprintf(m->f.path, sizeof m->f.path, "%s", name);
    m->f.map = buf;
    m->f.size = size;
    int rc = torch_parse(&m->f, err);
    if (rc) {
        cv_torch_file_close(&m->f);
        return rc;
    }
    *out = &m->f;
    return 0;
}

int cv_torch_file_open(const char *path, cv_torch_file **out, lpk_error *err)
{
    *out = NULL;
    torch_mapped *m = calloc(1, sizeof *m);
    if (!m) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    cv_torch_file *f = &m->f;
    snprintf(f->path, sizeof f->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        free(m);
        return lpk_err(err, e == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0) {
        close(fd);
        free(m);
        return lpk_err(err, LPK_ECORRUPT, "%s: not a regular, non-empty file", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        free(m);
        return lpk_err(err, LPK_EIO, "%s: mmap: %s", path, strerror(errno));
    }
    f->map = p;
    f->size = (uint64_t)st.st_size;
    m->mapped = 1;
    lpk_map_guard(p, f->size, path); /* a truncation mid-read: an error, not a SIGBUS */
    int rc = torch_parse(f, err);
    if (!rc) rc = lpk_map_check(p, err);
    if (rc) {
        cv_torch_file_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

const cv_pt_tensor *cv_torch_file_find(const cv_torch_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* A fault on a file mapping maps the whole page-cache folio around the byte
 * it needs (large folios: up to 2 MiB, aligned in the file), so ranges are
 * widened to 2 MiB file-offset boundaries within the mapping: dropping the
 * neighbours' pages only costs a re-fault from the page cache. */
#define CV_FOLIO_MAX ((uint64_t)2 << 20)

void cv_torch_file_release(const cv_torch_file *f, const void *p, uint64_t n)
{
    const torch_mapped *m = (const torch_mapped *)f;
    if (!m->mapped || !n) return;
    uint64_t a = (uint64_t)((const uint8_t *)p - f->map), b = a + n;
    a &= ~(CV_FOLIO_MAX - 1);
    b = b > f->size - f->size % CV_FOLIO_MAX ? f->size : (b + CV_FOLIO_MAX - 1) & ~(CV_FOLIO_MAX - 1);
    if (b > a) madvise((void *)(uintptr_t)(f->map + a), (size_t)(b - a), MADV_DONTNEED);
}

void cv_torch_file_close(cv_torch_file *f)
{
    if (!f) return;
    torch_mapped *m = (torch_mapped *)f;
    if (m->mapped) {
        lpk_map_unguard(f->map);
        munmap((void *)f->map, (size_t)f->size);
    }
    free(f->tensors);
    free(m);
}
