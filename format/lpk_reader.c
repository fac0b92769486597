/* The container reader: maps the file and validates every field of the
 * header, metadata and directory against docs/FORMAT.md before anything is
 * handed out. GGUF files (by magic) go through gguf_parse(). */
#include "lpk.h"
#include "lpk_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lpk_xxh.h"
#include <zstd.h>

#define READER_MAGIC 0x4c504b52u /* "LPKR" */

struct lpk_reader {
    uint32_t magic;
    int kind;
    uint32_t version;
    unsigned flags;
    char *path;
    const uint8_t *buf;
    uint64_t size;
    int mapped;
    uint64_t head_size;     /* lpk: bytes covered by the header hash (= data offset) */
    lpk_meta *meta;
    lpk_tensor *t;
    size_t n;
    const lpk_tensor **by_name;
    unsigned open_flags;    /* LPK_OPEN_* */
    uint8_t *checked;       /* per tensor: 1 once lpk_reader_tensor_data passed */
    int fd;                 /* the mapped file, for lpk_reader_tensor_read; -1 if none */
};

static unsigned default_flags;

void lpk_reader_set_default_flags(unsigned flags) { default_flags = flags; }
unsigned lpk_reader_default_flags(void) { return default_flags; }

static const char *const section_names[] = {"header", "metadata", "tensor directory",
                                            "tensor data"};

/* Which section byte `at` falls in, judging by the (not yet validated) header. */
static const char *section_at(const uint8_t *h, uint64_t at)
{
    uint64_t meta_end = LPK_HDR_SIZE + lpk_rd64(h + LPK_H_META_SIZE);
    uint64_t dir = lpk_rd64(h + LPK_H_DIR_OFFSET), nt = lpk_rd64(h + LPK_H_N_TENSORS);
    if (at < LPK_HDR_SIZE) return section_names[0];
    if (at < meta_end) return section_names[1];
    if (nt <= LPK_MAX_TENSORS && at < dir + nt * LPK_DIRENT_SIZE) return section_names[2];
    return section_names[3];
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const lpk_tensor *const *)a)->name, (*(const lpk_tensor *const *)b)->name);
}

static int cmp_key_tensor(const void *key, const void *b)
{
    return strcmp((const char *)key, (*(const lpk_tensor *const *)b)->name);
}

static int index_names(lpk_reader *r, lpk_error *err)
{
    r->by_name = malloc((r->n ? r->n : 1) * sizeof *r->by_name);
    if (!r->by_name) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", r->path);
    for (size_t i = 0; i < r->n; i++) r->by_name[i] = &r->t[i];
    qsort(r->by_name, r->n, sizeof *r->by_name, cmp_tensor_name);
    for (size_t i = 1; i < r->n; i++)
        if (strcmp(r->by_name[i - 1]->name, r->by_name[i]->name) == 0)
            return lpk_err(err, LPK_ECORRUPT, "%s: tensor name '%s' appears twice", r->path,
                           r->by_name[i]->name);
    return LPK_OK;
}

/* Decompresses the metadata section: output grows with what the frame really
 * produces and may never exceed the declared raw size (itself <= LPK_META_MAX). */
static int inflate_meta(const lpk_reader *r, const uint8_t *src, uint64_t n, uint64_t raw,
                        uint8_t **out, lpk_error *err)
{
    *out = NULL;
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    if (!dc) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", r->path);
    ZSTD_DCtx_setParameter(dc, ZSTD_d_windowLogMax, 27);
    uint64_t lim = raw + 1; /* one extra byte detects output beyond the declared size */
    uint64_t cap = lim < ((uint64_t)1 << 20) ? lim : ((uint64_t)1 << 20);
    uint8_t *b = malloc((size_t)cap);
    int st = LPK_OK;
    ZSTD_inBuffer ib = {src, (size_t)n, 0};
    ZSTD_outBuffer ob = {b, (size_t)cap, 0};
    if (!b) { st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", r->path); goto out; }
    for (;;) {
        if (ob.pos == ob.size) {
            if (cap == lim) {
                st = lpk_err(err, LPK_ECORRUPT,
                             "%s: metadata decompresses to more than the declared %llu bytes",
                             r->path, (unsigned long long)raw);
                goto out;
            }
            cap = cap * 2 < lim ? cap * 2 : lim;
            uint8_t *nb = realloc(b, (size_t)cap);
            if (!nb) { st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", r->path); goto out; }
            b = nb;
            ob.dst = b;
            ob.size = (size_t)cap;
        }
        size_t in0 = ib.pos, out0 = ob.pos;
        size_t ret = ZSTD_decompressStream(dc, &ob, &ib);
        if (ZSTD_isError(ret)) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: metadata: zstd: %s", r->path,
                         ZSTD_getErrorName(ret));
            goto out;
        }
        if (ret == 0) break;
        if (ib.pos == in0 && ob.pos == out0 && ob.pos < ob.size) {
            st = lpk_err(err, LPK_ECORRUPT, "%s: metadata: zstd frame ends early", r->path);
            goto out;
        }
    }
    if (ib.pos != ib.size)
        st = lpk_err(err, LPK_ECORRUPT, "%s: metadata: %zu bytes after the zstd frame", r->path,
                     ib.size - ib.pos);
    else if (ob.pos != raw)
        st = lpk_err(err, LPK_ECORRUPT,
                     "%s: metadata decompresses to %zu bytes, header declares %llu", r->path,
                     ob.pos, (unsigned long long)raw);
out:
    ZSTD_freeDCtx(dc);
    if (st) free(b);
    else *out = b;
    return st;
}

static int parse_dirent(lpk_reader *r, const uint8_t *e, size_t i, uint64_t data_offset,
                        uint64_t *prev_end, lpk_error *err)
{
    lpk_tensor *t = &r->t[i];
    const char *p = r->path;
    memset(t, 0, sizeof *t);
    const uint8_t *nul = memchr(e + LPK_D_NAME, 0, LPK_MAX_NAME + 1);
    size_t nl = nul ? (size_t)(nul - (e + LPK_D_NAME)) : LPK_MAX_NAME + 1;
    if (nl == 0 || nl > LPK_MAX_NAME)
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor #%zu: name is empty or not NUL-terminated "
                       "within %d bytes", p, i, LPK_MAX_NAME);
    for (size_t k = nl; k <= LPK_MAX_NAME; k++)
        if (e[LPK_D_NAME + k])
            return lpk_err(err, LPK_ECORRUPT, "%s: tensor #%zu: bytes after the name are not zero",
                           p, i);
    memcpy(t->name, e + LPK_D_NAME, nl);
    uint32_t type = lpk_rd32(e + LPK_D_TYPE), nd = lpk_rd32(e + LPK_D_N_DIMS);
    const lpk_type_info *ti = lpk_type_get((int)(type < LPK_TYPE_COUNT ? type : LPK_TYPE_COUNT));
    if (!ti)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s': unknown type id %u", p, t->name,
                       type);
    if (!ti->storable)
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': type %s cannot be stored", p, t->name,
                       ti->name);
    t->type = (int)type;
    if (nd < 1 || nd > LPK_MAX_DIMS)
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': n_dims %u not in 1..%d", p, t->name,
                       nd, LPK_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t ne = 1;
    for (uint32_t d = 0; d < LPK_MAX_DIMS; d++) {
        uint64_t v = lpk_rd64(e + LPK_D_DIMS + 8 * d);
        if (d >= nd) {
            if (v)
                return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': unused dim %u is not zero", p,
                               t->name, d);
            continue;
        }
        if (v == 0 || v > (uint64_t)INT64_MAX || v > UINT64_MAX / ne)
            return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': dim %u is %llu (zero or overflows)",
                           p, t->name, d, (unsigned long long)v);
        ne *= v;
        t->dims[d] = (int64_t)v;
    }
    uint64_t want;
    if ((uint64_t)t->dims[nd - 1] % (uint64_t)ti->block_size)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: tensor '%s': row length %lld is not a multiple of %s's block size %d",
                       p, t->name, (long long)t->dims[nd - 1], ti->name, ti->block_size);
    if (lpk_type_nbytes(t->type, ne, &want))
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': byte size of %llu elements overflows",
                       p, t->name, (unsigned long long)ne);
    t->offset = lpk_rd64(e + LPK_D_OFFSET);
    t->size = lpk_rd64(e + LPK_D_SIZE);
    t->xxh3 = lpk_rd64(e + LPK_D_XXH3);
    t->has_xxh3 = 1;
    if (t->size != want)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: tensor '%s': size %llu bytes, but %s with %llu elements needs %llu", p,
                       t->name, (unsigned long long)t->size, ti->name, (unsigned long long)ne,
                       (unsigned long long)want);
    if (t->offset % LPK_ALIGN)
        return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': offset %llu is not %d-byte aligned", p,
                       t->name, (unsigned long long)t->offset, LPK_ALIGN);
    if (t->offset > r->size || t->size > r->size - t->offset)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: tensor '%s': data at offset %llu + %llu bytes runs past the end of the "
                       "file (%llu bytes)",
                       p, t->name, (unsigned long long)t->offset, (unsigned long long)t->size,
                       (unsigned long long)r->size);
    if (t->offset < data_offset)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: tensor '%s': offset %llu is before the data section (%llu)", p,
                       t->name, (unsigned long long)t->offset, (unsigned long long)data_offset);
    if (t->offset < *prev_end)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: tensor '%s': offset %llu overlaps tensor '%s' (ends at %llu)", p,
                       t->name, (unsigned long long)t->offset, r->t[i - 1].name,
                       (unsigned long long)*prev_end);
    t->data = r->buf + t->offset;
    *prev_end = t->offset + t->size;
    return LPK_OK;
}

static int open_lpk(lpk_reader *r, lpk_error *err)
{
    const uint8_t *h = r->buf;
    const char *p = r->path;
    uint64_t size = r->size;
    if (size < LPK_HDR_SIZE)
        return lpk_err(err, LPK_ETRUNC, "%s: truncated in the header: file is %llu bytes, the "
                       "header needs %d", p, (unsigned long long)size, LPK_HDR_SIZE);
    r->version = lpk_rd32(h + LPK_H_VERSION);
    if (r->version != LPK_FORMAT_VERSION)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: format version %u (this reader knows %u)", p,
                       r->version, LPK_FORMAT_VERSION);
    r->flags = lpk_rd32(h + LPK_H_FLAGS);
    if (r->flags & ~LPK_FLAGS_KNOWN)
        return lpk_err(err, LPK_EUNSUPPORTED, "%s: unknown header flags 0x%x", p,
                       r->flags & ~LPK_FLAGS_KNOWN);
    for (int i = LPK_H_RESERVED; i < LPK_HDR_SIZE; i++)
        if (h[i])
            return lpk_err(err, LPK_ECORRUPT, "%s: reserved header byte %d is not zero", p, i);
    uint64_t fsz = lpk_rd64(h + LPK_H_FILE_SIZE);
    if (size < fsz)
        return lpk_err(err, LPK_ETRUNC,
                       "%s: truncated in the %s: file is %llu bytes, header declares %llu", p,
                       section_at(h, size), (unsigned long long)size, (unsigned long long)fsz);
    if (size > fsz)
        return lpk_err(err, LPK_ECORRUPT, "%s: %llu bytes after the declared end (%llu)", p,
                       (unsigned long long)(size - fsz), (unsigned long long)fsz);
    uint64_t moff = lpk_rd64(h + LPK_H_META_OFFSET), msz = lpk_rd64(h + LPK_H_META_SIZE);
    uint64_t mraw = lpk_rd64(h + LPK_H_META_RAW_SIZE), mcount = lpk_rd64(h + LPK_H_META_COUNT);
    uint64_t doff = lpk_rd64(h + LPK_H_DIR_OFFSET), nt = lpk_rd64(h + LPK_H_N_TENSORS);
    uint64_t dataoff = lpk_rd64(h + LPK_H_DATA_OFFSET), datasz = lpk_rd64(h + LPK_H_DATA_SIZE);
    if (moff != LPK_HDR_SIZE)
        return lpk_err(err, LPK_ECORRUPT, "%s: metadata offset %llu (must be %d)", p,
                       (unsigned long long)moff, LPK_HDR_SIZE);
    if (msz > size - LPK_HDR_SIZE)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: metadata of %llu bytes at offset %d runs past the end of the file "
                       "(%llu bytes)", p, (unsigned long long)msz, LPK_HDR_SIZE,
                       (unsigned long long)size);
    if (doff != LPK_HDR_SIZE + msz)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: directory offset %llu (must follow the metadata at %llu)", p,
                       (unsigned long long)doff, (unsigned long long)(LPK_HDR_SIZE + msz));
    if (nt > LPK_MAX_TENSORS || nt * LPK_DIRENT_SIZE > size - doff)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: directory of %llu tensors at offset %llu runs past the end of the "
                       "file (%llu bytes)", p, (unsigned long long)nt, (unsigned long long)doff,
                       (unsigned long long)size);
    uint64_t dend = doff + nt * LPK_DIRENT_SIZE;
    if (dataoff != lpk_align_up(dend, LPK_ALIGN))
        return lpk_err(err, LPK_ECORRUPT, "%s: data offset %llu (must be %llu)", p,
                       (unsigned long long)dataoff,
                       (unsigned long long)lpk_align_up(dend, LPK_ALIGN));
    if (dataoff > size || datasz != size - dataoff)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: data section %llu + %llu bytes does not end at the end of the file "
                       "(%llu)", p, (unsigned long long)dataoff, (unsigned long long)datasz,
                       (unsigned long long)size);
    for (uint64_t i = dend; i < dataoff; i++)
        if (h[i])
            return lpk_err(err, LPK_ECORRUPT, "%s: padding byte %llu before the data is not zero",
                           p, (unsigned long long)i);
    r->head_size = dataoff;
    /* Nothing the header points to is used before its checksum matches. */
    if (!(r->open_flags & LPK_OPEN_NO_VERIFY)) {
        int hs = lpk_reader_verify_header(r, err);
        if (hs) return hs;
    }

    /* metadata */
    if (mraw > LPK_META_MAX)
        return lpk_err(err, LPK_ECORRUPT, "%s: metadata declares %llu bytes (at most %llu)", p,
                       (unsigned long long)mraw, (unsigned long long)LPK_META_MAX);
    if (mcount > LPK_META_MAX_KEYS)
        return lpk_err(err, LPK_ECORRUPT, "%s: metadata declares %llu keys (at most %u)", p,
                       (unsigned long long)mcount, LPK_META_MAX_KEYS);
    const uint8_t *mp = h + LPK_HDR_SIZE;
    uint8_t *inflated = NULL;
    int st;
    if (r->flags & LPK_FLAG_META_ZSTD) {
        if ((st = inflate_meta(r, mp, msz, mraw, &inflated, err))) return st;
        mp = inflated;
    } else if (mraw != msz) {
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: uncompressed metadata: raw size %llu differs from size %llu", p,
                       (unsigned long long)mraw, (unsigned long long)msz);
    }
    char what[128];
    snprintf(what, sizeof what, "%.90s: metadata", p);
    st = lpk_kv_decode(mp, mraw, mcount, r->meta, what, err);
    free(inflated);
    if (st) return st;

    /* directory */
    r->t = calloc(nt ? (size_t)nt : 1, sizeof *r->t);
    if (!r->t) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", p);
    r->n = (size_t)nt;
    uint64_t prev_end = dataoff;
    for (size_t i = 0; i < r->n; i++)
        if ((st = parse_dirent(r, h + doff + (uint64_t)i * LPK_DIRENT_SIZE, i, dataoff, &prev_end,
                               err)))
            return st;
    if (prev_end != size)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: %llu bytes after the last tensor's data (the file must end there)", p,
                       (unsigned long long)(size - prev_end));
    return LPK_OK;
}

static int open_common(lpk_reader *r, lpk_error *err)
{
    if (r->size < 4)
        return lpk_err(err, LPK_ETRUNC, "%s: file is %llu bytes, too short for any container",
                       r->path, (unsigned long long)r->size);
    int st;
    if (memcmp(r->buf, "GGUF", 4) == 0) {
        r->kind = LPK_KIND_GGUF;
        st = gguf_parse(r->buf, r->size, r->path, r->meta, &r->t, &r->n, &r->version, err);
    } else if (r->size >= LPK_MAGIC_LEN && memcmp(r->buf, LPK_MAGIC, LPK_MAGIC_LEN) == 0) {
        r->kind = LPK_KIND_LPK;
        st = open_lpk(r, err);
    } else if (r->size < LPK_MAGIC_LEN && memcmp(r->buf, LPK_MAGIC, (size_t)r->size) == 0) {
        st = lpk_err(err, LPK_ETRUNC, "%s: truncated in the magic", r->path);
    } else {
        const uint8_t *b = r->buf;
        st = lpk_err(err, LPK_ECORRUPT,
                     "%s: bad magic %02x %02x %02x %02x: not an llmpack container or GGUF file",
                     r->path, b[0], b[1], b[2], b[3]);
    }
    if (st) return st;
    r->checked = calloc(r->n ? r->n : 1, 1);
    if (!r->checked) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", r->path);
    return index_names(r, err);
}

static lpk_reader *reader_new(const char *path)
{
    lpk_reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->magic = READER_MAGIC;
    r->fd = -1;
    r->path = strdup(path ? path : "(buffer)");
    r->meta = lpk_meta_new();
    if (!r->path || !r->meta) {
        lpk_reader_close(r);
        return NULL;
    }
    return r;
}

int lpk_reader_open_buffer(const void *buf, size_t size, const char *name, lpk_reader **out,
                           lpk_error *err)
{
    *out = NULL;
    if (!buf && size) return lpk_err(err, LPK_EINVAL, "lpk_reader_open_buffer: NULL buffer");
    lpk_reader *r = reader_new(name);
    if (!r) return lpk_err(err, LPK_ENOMEM, "out of memory");
    r->buf = buf;
    r->size = size;
    r->open_flags = default_flags;
    int st = size ? open_common(r, err)
                  : lpk_err(err, LPK_ETRUNC, "%s: empty file", r->path);
    if (st) {
        lpk_reader_close(r);
        return st;
    }
    *out = r;
    return LPK_OK;
}

int lpk_reader_open(const char *path, lpk_reader **out, lpk_error *err)
{
    return lpk_reader_open_flags(path, default_flags, out, err);
}

int lpk_reader_open_flags(const char *path, unsigned flags, lpk_reader **out, lpk_error *err)
{
    if (!out) return lpk_err(err, LPK_EINVAL, "lpk_reader_open: NULL out");
    *out = NULL;
    if (!path) return lpk_err(err, LPK_EINVAL, "lpk_reader_open: NULL path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return lpk_err(err, e == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: cannot open: %s", path,
                       strerror(e));
    }
    int st = lpk_reader_open_fd(fd, path, flags, out, err);
    close(fd);
    return st;
}

int lpk_reader_open_fd(int fd, const char *path, unsigned flags, lpk_reader **out,
                       lpk_error *err)
{
    if (!out) return lpk_err(err, LPK_EINVAL, "lpk_reader_open: NULL out");
    *out = NULL;
    if (!path) return lpk_err(err, LPK_EINVAL, "lpk_reader_open: NULL path");
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return lpk_err(err, LPK_EIO, "%s: not a regular file", path);
    lpk_reader *r = reader_new(path);
    if (!r) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    r->size = (uint64_t)sb.st_size;
    if (r->size == 0) {
        lpk_reader_close(r);
        return lpk_err(err, LPK_ETRUNC, "%s: empty file", path);
    }
    if (r->size > SIZE_MAX) {
        lpk_reader_close(r);
        return lpk_err(err, LPK_ENOMEM, "%s: too large to map", path);
    }
    void *m = mmap(NULL, (size_t)r->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    if (m == MAP_FAILED) {
        lpk_reader_close(r);
        return lpk_err(err, LPK_EIO, "%s: mmap failed: %s", path, strerror(e));
    }
    r->buf = m;
    r->mapped = 1;
    r->open_flags = flags;
    /* kept for lpk_reader_tensor_read (without one, it copies from the mapping) */
    r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    /* a file truncated by someone else while mapped: an error, not a SIGBUS */
    if (lpk_map_guard(m, r->size, path) == LPK_OK) r->mapped = 2;
    int st = open_common(r, err);
    if (!st) st = lpk_reader_check_io(r, err);
    if (st) {
        lpk_reader_close(r);
        return st;
    }
    *out = r;
    return LPK_OK;
}

void lpk_reader_close(lpk_reader *r)
{
    if (!r || r->magic != READER_MAGIC) return;
    r->magic = 0;
    if (r->mapped == 2) lpk_map_unguard(r->buf);
    if (r->mapped) munmap((void *)r->buf, (size_t)r->size);
    if (r->fd >= 0) close(r->fd);
    free(r->checked);
    lpk_meta_free(r->meta);
    free(r->t);
    free(r->by_name);
    free(r->path);
    free(r);
}

int lpk_reader_kind(const lpk_reader *r) { return r->kind; }
uint32_t lpk_reader_version(const lpk_reader *r) { return r->version; }
unsigned lpk_reader_flags(const lpk_reader *r) { return r->flags; }
uint64_t lpk_reader_file_size(const lpk_reader *r) { return r->size; }
const char *lpk_reader_path(const lpk_reader *r) { return r->path; }
const lpk_meta *lpk_reader_meta(const lpk_reader *r) { return r->meta; }
size_t lpk_reader_n_tensors(const lpk_reader *r) { return r->n; }

const lpk_tensor *lpk_reader_tensor(const lpk_reader *r, size_t i)
{
    return (r && i < r->n) ? &r->t[i] : NULL;
}

const lpk_tensor *lpk_reader_find(const lpk_reader *r, const char *name)
{
    if (!r || !name || !r->n) return NULL;
    const lpk_tensor *const *hit = bsearch(name, r->by_name, r->n, sizeof *r->by_name,
                                           cmp_key_tensor);
    return hit ? *hit : NULL;
}

int lpk_reader_verify_header(const lpk_reader *r, lpk_error *err)
{
    if (!r || r->kind != LPK_KIND_LPK) return LPK_OK;
    uint64_t want = lpk_rd64(r->buf + LPK_H_HEADER_XXH3);
    uint64_t got = lpk_header_hash(r->buf, r->head_size);
    if (want != got)
        return lpk_err(err, LPK_ECHECKSUM,
                       "%s: header+metadata+directory (bytes 0..%llu): xxh3 expected %016llx, "
                       "found %016llx", r->path, (unsigned long long)r->head_size,
                       (unsigned long long)want, (unsigned long long)got);
    return LPK_OK;
}

int lpk_reader_has_checksums(const lpk_reader *r) { return r && r->kind == LPK_KIND_LPK; }

int lpk_reader_check_io(const lpk_reader *r, lpk_error *err)
{
    return r && r->mapped == 2 ? lpk_map_check(r->buf, err) : LPK_OK;
}

size_t lpk_reader_index(const lpk_reader *r, const lpk_tensor *t)
{
    return (size_t)(t - r->t);
}

/* Names where lpk_check_finite found a NaN/Inf: row and column of the element,
 * or of the first element of the block whose scale it is. */
static int bad_value(const lpk_reader *r, const lpk_tensor *t, const void *elem, uint64_t where,
                     lpk_error *err)
{
    const lpk_type_info *ti = lpk_type_get(t->type);
    uint64_t cols = (uint64_t)lpk_tensor_ncols(t), bs = ti ? (uint64_t)ti->block_size : 1;
    if (bs > 1) {
        uint64_t bpr = cols / bs ? cols / bs : 1;
        return lpk_err(err, LPK_EBADVALUE,
                       "%s: %s: %s block %llu (row %llu, columns %llu..%llu) has a NaN or "
                       "infinite scale", r->path, t->name, ti->name, (unsigned long long)where,
                       (unsigned long long)(where / bpr), (unsigned long long)(where % bpr * bs),
                       (unsigned long long)(where % bpr * bs + bs - 1));
    }
    float v = 0;
    lpk_to_f32_row(t->type, elem, &v, 1);
    return lpk_err(err, LPK_EBADVALUE, "%s: %s: %s at row %llu, column %llu", r->path, t->name,
                   v != v ? "NaN" : "Inf", (unsigned long long)(where / cols),
                   (unsigned long long)(where % cols));
}

/* Maps a tensor's pages of the file in one call before its first pass
 * (MADV_POPULATE_READ) instead of a page fault every few pages: less system
 * time for the same pages (docs/PERFORMANCE.md, "Against llama-quantize"). A
 * failure (an older kernel, a file that shrank) is left to the pass itself. */
static void populate(const lpk_reader *r, const lpk_tensor *t)
{
#ifdef MADV_POPULATE_READ
    if (!r->mapped || !t->size) return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)t->data & ~(pg - 1);
    (void)madvise((void *)a, (uintptr_t)t->data + (uintptr_t)t->size - a, MADV_POPULATE_READ);
#else
    (void)r;
    (void)t;
#endif
}

static int verify_bytes(const lpk_reader *r, size_t i, const void *data, lpk_error *err);
static int check_padding(const lpk_reader *r, size_t i, lpk_error *err);
static int hash_matches(const lpk_reader *r, const lpk_tensor *t, uint64_t got, lpk_error *err);

/* The checks of tensor i's bytes at data (the mapping's, or a copy). */
static int check_tensor(const lpk_reader *r, size_t i, const void *data, lpk_error *err)
{
    const lpk_tensor *t = &r->t[i];
    int st;
    if (!(r->open_flags & LPK_OPEN_NO_VERIFY) && (st = verify_bytes(r, i, data, err))) return st;
    uint64_t where;
    if (lpk_check_finite(t->type, data, t->size, &where)) {
        if ((st = lpk_reader_check_io(r, err))) return st;
        return bad_value(r, t, (const uint8_t *)data + where * (uint64_t)lpk_type_get(t->type)->type_size,
                         where, err);
    }
    return LPK_OK;
}

int lpk_reader_tensor_data(const lpk_reader *r, size_t i, const void **data, lpk_error *err)
{
    *data = NULL;
    if (!r || i >= r->n) return lpk_err(err, LPK_EINVAL, "lpk_reader_tensor_data: bad index");
    const lpk_tensor *t = &r->t[i];
    int st;
    if (!r->checked[i]) {
        populate(r, t);
        if ((st = check_tensor(r, i, t->data, err))) return st;
        r->checked[i] = 1;
    }
    if ((st = lpk_reader_check_io(r, err))) return st;
    *data = t->data;
    return LPK_OK;
}

/* Bytes off..off+n of tensor t into dst: read(2) from the file, or copied
 * from the buffer of a reader without one. */
static int read_at(const lpk_reader *r, const lpk_tensor *t, uint64_t off, void *dst, uint64_t n,
                   lpk_error *err)
{
    if (r->fd < 0) {
        memcpy(dst, t->data + off, (size_t)n);
        return lpk_reader_check_io(r, err);
    }
    for (uint64_t done = 0; done < n;) {
        size_t want = (size_t)(n - done);
        ssize_t k = pread(r->fd, (uint8_t *)dst + done, want, (off_t)(t->offset + off + done));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            return lpk_err(err, LPK_EIO, "%s: tensor '%s': read failed at byte %llu: %s",
                           r->path, t->name, (unsigned long long)(t->offset + off + done),
                           strerror(e));
        }
        if (k == 0)
            return lpk_err(err, LPK_ETRUNC,
                           "%s changed or was truncated while reading: tensor '%s' (offset "
                           "%llu, %llu bytes) ends at byte %llu of the file", r->path, t->name,
                           (unsigned long long)t->offset, (unsigned long long)t->size,
                           (unsigned long long)(t->offset + off + done));
        done += (uint64_t)k;
    }
    return LPK_OK;
}

int lpk_reader_tensor_read(const lpk_reader *r, size_t i, void *dst, lpk_error *err)
{
    if (!r || i >= r->n || (!dst && r->t[i].size))
        return lpk_err(err, LPK_EINVAL, "lpk_reader_tensor_read: bad arguments");
    int st = read_at(r, &r->t[i], 0, dst, r->t[i].size, err);
    if (!st) st = check_tensor(r, i, dst, err);
    if (!st) ((lpk_reader *)r)->checked[i] = 1;
    return st;
}

struct lpk_part_read {
    const lpk_reader *r;
    size_t i;
    uint64_t at;       /* bytes of the tensor read so far */
    int verify;        /* its xxh3 is compared at the end */
    XXH3_state_t *h;
};

int lpk_reader_part_begin(const lpk_reader *r, size_t i, lpk_part_read **out, lpk_error *err)
{
    *out = NULL;
    if (!r || i >= r->n) return lpk_err(err, LPK_EINVAL, "lpk_reader_part_begin: bad index");
    lpk_part_read *p = calloc(1, sizeof *p);
    if (!p) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", r->path);
    *p = (lpk_part_read){.r = r, .i = i};
    p->verify = !(r->open_flags & LPK_OPEN_NO_VERIFY);
    int st = p->verify ? check_padding(r, i, err) : LPK_OK;
    if (!st && p->verify && r->t[i].has_xxh3) {
        p->h = XXH3_createState();
        if (!p->h || XXH3_64bits_reset(p->h) != XXH_OK)
            st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", r->path);
    }
    if (st) {
        lpk_reader_part_end(p);
        return st;
    }
    *out = p;
    return LPK_OK;
}

int lpk_reader_part_read(lpk_part_read *p, void *dst, uint64_t n, lpk_error *err)
{
    const lpk_reader *r = p->r;
    const lpk_tensor *t = &r->t[p->i];
    const lpk_type_info *ti = lpk_type_get(t->type);
    uint64_t ts = ti ? (uint64_t)ti->type_size : 1;
    if (n > t->size - p->at || (n % ts && p->at + n < t->size) || (!dst && n))
        return lpk_err(err, LPK_EINVAL, "lpk_reader_part_read: bad arguments");
    int st = read_at(r, t, p->at, dst, n, err);
    if (st) return st;
    if (p->h) XXH3_64bits_update(p->h, dst, (size_t)n);
    uint64_t where;
    if (lpk_check_finite(t->type, dst, n, &where)) {
        /* the hash of the whole tensor decides first, as in a read of all of it:
         * the rest through the mapping */
        if (p->h) {
            XXH3_64bits_update(p->h, t->data + p->at + n, (size_t)(t->size - p->at - n));
            if ((st = hash_matches(r, t, XXH3_64bits_digest(p->h), err))) return st;
        }
        if ((st = lpk_reader_check_io(r, err))) return st;
        return bad_value(r, t, (const uint8_t *)dst + where * ts, p->at / ts + where, err);
    }
    p->at += n;
    if (p->at < t->size) return LPK_OK;
    if (p->h && (st = hash_matches(r, t, XXH3_64bits_digest(p->h), err))) return st;
    if (!p->h && (st = lpk_reader_check_io(r, err))) return st;
    ((lpk_reader *)r)->checked[p->i] = 1;
    return LPK_OK;
}

void lpk_reader_part_end(lpk_part_read *p)
{
    if (!p) return;
    if (p->h) XXH3_freeState(p->h);
    free(p);
}


static int verify_bytes(const lpk_reader *r, size_t i, const void *data, lpk_error *err)
{
    const lpk_tensor *t = &r->t[i];
    int st = check_padding(r, i, err);
    if (st) return st;
    if (!t->has_xxh3) return lpk_reader_check_io(r, err);
    return hash_matches(r, t, XXH3_64bits(data, (size_t)t->size), err);
}

/* .lpk: the padding before tensor i must be zero */
static int check_padding(const lpk_reader *r, size_t i, lpk_error *err)
{
    const lpk_tensor *t = &r->t[i];
    if (r->kind == LPK_KIND_LPK) {
        /* padding before this tensor must be zero */
        uint64_t start = i ? r->t[i - 1].offset + r->t[i - 1].size : r->head_size;
        for (uint64_t o = start; o < t->offset; o++)
            if (r->buf[o])
                return lpk_err(err, LPK_ECORRUPT,
                               "%s: padding byte %llu before tensor '%s' is not zero", r->path,
                               (unsigned long long)o, t->name);
    }
    return LPK_OK;
}

/* The tensor's xxh3 against got, the hash of its bytes as read. */
static int hash_matches(const lpk_reader *r, const lpk_tensor *t, uint64_t got, lpk_error *err)
{
    int io = lpk_reader_check_io(r, err);
    if (io) return io;
    if (got != t->xxh3)
        return lpk_err(err, LPK_ECHECKSUM,
                       "%s: tensor '%s' (offset %llu, %llu bytes): xxh3 expected %016llx, found "
                       "%016llx", r->path, t->name, (unsigned long long)t->offset,
                       (unsigned long long)t->size, (unsigned long long)t->xxh3,
                       (unsigned long long)got);
    return LPK_OK;
}

int lpk_reader_verify_tensor(const lpk_reader *r, size_t i, lpk_error *err)
{
    if (!r || i >= r->n) return lpk_err(err, LPK_EINVAL, "lpk_reader_verify_tensor: bad index");
    return verify_bytes(r, i, r->t[i].data, err);
}

void lpk_reader_release_tensor(const lpk_reader *r, size_t i)
{
    if (!r || !r->mapped || i >= r->n || !r->t[i].size) return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)r->t[i].data & ~(pg - 1);
    uintptr_t b = (uintptr_t)r->t[i].data + (uintptr_t)r->t[i].size;
    b = (b + pg - 1) & ~(pg - 1);
    /* read-only private file mapping: dropped pages are re-read on the next touch */
    madvise((void *)a, b - a, MADV_DONTNEED);
}
