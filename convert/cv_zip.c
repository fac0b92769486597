/* Zip records, decoded in one place: the local and central headers, the zip64
 * extra field, data descriptors and the end records, and from them the
 * central directory of a zip held in memory. cv_torchzip.c reads mapped torch
 * files through the central directory; cv_archive.c walks the local headers
 * of a torch file that arrives as a stream. Every field is little-endian and
 * read with lpk_rd*; callers check that the bytes are there. */
#include "cv_torch.h"

#include <stdlib.h>

int cv_zip_local_read(const uint8_t *h, cv_zip_local *l)
{
    if (lpk_rd32(h) != CV_ZIP_LOCAL) return -1;
    l->flag = lpk_rd16(h + 6);
    l->method = lpk_rd16(h + 8);
    l->csize = lpk_rd32(h + 18);
    l->usize = lpk_rd32(h + 22);
    l->name_len = lpk_rd16(h + 26);
    l->extra_len = lpk_rd16(h + 28);
    return 0;
}

/* Zip64 extended information extra field (id 1): the 64-bit values replace
 * the 32-bit ones that read 0xffffffff, in the order usize, csize, offset. */
int cv_zip64_extra(const uint8_t *x, size_t xn, uint64_t *usize, uint64_t *csize,
                   uint64_t *off, int *found)
{
    uint64_t *want[3] = {usize, csize, off};
    int need = 0;
    for (int j = 0; j < 3; j++) need |= want[j] && *want[j] == 0xffffffffu;
    *found = 0;
    size_t i = 0;
    while (xn - i >= 4) {
        uint32_t id = lpk_rd16(x + i), len = lpk_rd16(x + i + 2);
        if (len > xn - i - 4) return -1;
        if (id == 1) {
            const uint8_t *p = x + i + 4;
            size_t k = 0;
            *found = 1;
            for (int j = 0; j < 3; j++) {
                if (!want[j] || *want[j] != 0xffffffffu) continue;
                if (len < k + 8) return -1;
                *want[j] = lpk_rd64(p + k);
                k += 8;
            }
            return 0;
        }
        i += 4 + len;
    }
    return need ? -1 : 0;
}

void cv_zip_descriptor_read(const uint8_t *p, int z64, uint64_t *csize, uint64_t *usize)
{
    *csize = z64 ? lpk_rd64(p + 4) : lpk_rd32(p + 4);
    *usize = z64 ? lpk_rd64(p + 12) : lpk_rd32(p + 8);
}

int cv_zip_parse(const uint8_t *buf, uint64_t size, const char *path, cv_zip_entry **out,
                 size_t *n_out, lpk_error *err)
{
    *out = NULL;
    *n_out = 0;
    /* The end-of-central-directory record is in the last 22 + 65535 bytes. */
    if (size < 22)
        return lpk_err(err, LPK_ETRUNC, "%s: %llu bytes, too short for a zip archive", path,
                       (unsigned long long)size);
    uint64_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0, eocd = UINT64_MAX;
    for (uint64_t p = size - 22 + 1; p-- > lo;)
        if (lpk_rd32(buf + p) == CV_ZIP_END && lpk_rd16(buf + p + 20) == size - p - 22) {
            eocd = p;
            break;
        }
    if (eocd == UINT64_MAX)
        return lpk_err(err, LPK_ETRUNC,
                       "%s: corrupt zip: no end-of-central-directory record (truncated file?)",
                       path);
    uint64_t n = lpk_rd16(buf + eocd + 10), cd_size = lpk_rd32(buf + eocd + 12),
             cd_off = lpk_rd32(buf + eocd + 16);
    if (eocd >= 20 && lpk_rd32(buf + eocd - 20) == CV_ZIP_END64_LOC) {
        uint64_t z = lpk_rd64(buf + eocd - 20 + 8);
        if (z > eocd - 20 || eocd - 20 - z < 56 || lpk_rd32(buf + z) != CV_ZIP_END64)
            return lpk_err(err, LPK_ECORRUPT, "%s: corrupt zip: bad zip64 end record offset %llu",
                           path, (unsigned long long)z);
        n = lpk_rd64(buf + z + 32);
        cd_size = lpk_rd64(buf + z + 40);
        cd_off = lpk_rd64(buf + z + 48);
    }
    if (cd_off > eocd || cd_size > eocd - cd_off)
        return lpk_err(err, LPK_ETRUNC,
                       "%s: corrupt zip: central directory [%llu, +%llu) lies outside the file "
                       "(truncated?)", path, (unsigned long long)cd_off,
                       (unsigned long long)cd_size);
    if (n > cd_size / 46)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: corrupt zip: %llu entries cannot fit a %llu-byte central directory",
                       path, (unsigned long long)n, (unsigned long long)cd_size);
    cv_zip_entry *e = calloc(n ? (size_t)n : 1, sizeof *e);
    if (!e) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    uint64_t p = cd_off, end = cd_off + cd_size;
    for (uint64_t i = 0; i < n; i++) {
        if (end - p < 46 || lpk_rd32(buf + p) != CV_ZIP_CENTRAL) {
            free(e);
            return lpk_err(err, LPK_ECORRUPT,
                           "%s: corrupt zip: central directory entry %llu at offset %llu is "
                           "malformed", path, (unsigned long long)i, (unsigned long long)p);
        }
        const uint8_t *h = buf + p;
        size_t nl = lpk_rd16(h + 28), xl = lpk_rd16(h + 30), cl = lpk_rd16(h + 32);
        if (end - p - 46 < (uint64_t)nl + xl + cl) {
            free(e);
            return lpk_err(err, LPK_ECORRUPT,
                           "%s: corrupt zip: central directory entry %llu overruns the directory",
                           path, (unsigned long long)i);
        }
        e[i].method = lpk_rd16(h + 10);
        e[i].csize = lpk_rd32(h + 20);
        e[i].usize = lpk_rd32(h + 24);
        e[i].hdr_off = lpk_rd32(h + 42);
        e[i].name = (const char *)h + 46;
        e[i].name_len = nl;
        int z64;
        if (cv_zip64_extra(h + 46 + nl, xl, &e[i].usize, &e[i].csize, &e[i].hdr_off, &z64)) {
            free(e);
            return lpk_err(err, LPK_ECORRUPT, "%s: corrupt zip: entry %llu has a bad zip64 field",
                           path, (unsigned long long)i);
        }
        p += 46 + nl + xl + cl;
    }
    *out = e;
    *n_out = (size_t)n;
    return 0;
}

int cv_zip_data_offset(const uint8_t *buf, uint64_t size, const char *path,
                       const cv_zip_entry *e, uint64_t *off, lpk_error *err)
{
    cv_zip_local l;
    if (e->hdr_off > size || size - e->hdr_off < CV_ZIP_LOCAL_SIZE ||
        cv_zip_local_read(buf + e->hdr_off, &l))
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: corrupt zip: member '%.*s' has no local header at offset %llu", path,
                       (int)e->name_len, e->name, (unsigned long long)e->hdr_off);
    uint64_t d = e->hdr_off + CV_ZIP_LOCAL_SIZE + l.name_len + l.extra_len;
    if (d > size || size - d < e->csize)
        return lpk_err(err, LPK_ETRUNC,
                       "%s: corrupt zip: member '%.*s' (%llu bytes at offset %llu) extends past "
                       "the end of the file (truncated?)", path, (int)e->name_len, e->name,
                       (unsigned long long)e->csize, (unsigned long long)d);
    *off = d;
    return 0;
}
