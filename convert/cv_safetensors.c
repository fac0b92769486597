/* safetensors: 8-byte little-endian header length, a JSON header
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the data section that the offsets are relative to. */
#include "cv_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cv_st_header_len(const char *name, const uint8_t *p, uint64_t file_size, uint64_t *len,
                     lpk_error *err)
{
    if (file_size < 8)
        return lpk_err(err, LPK_ETRUNC, "%s: %llu bytes, too short for a safetensors header",
                       name, (unsigned long long)file_size);
    uint64_t n = lpk_rd64(p);
    if (n > CV_ST_MAX_HEADER)
        return lpk_err(err, LPK_ECORRUPT,
                       "%s: safetensors header length %llu exceeds the 100 MB limit", name,
                       (unsigned long long)n);
    if (n > file_size - 8)
        return lpk_err(err, LPK_ETRUNC,
                       "%s: safetensors header of %llu bytes runs past the end of the file "
                       "(%llu bytes)",
                       name, (unsigned long long)n, (unsigned long long)file_size);
    if (n < 2) return lpk_err(err, LPK_ECORRUPT, "%s: empty safetensors header", name);
    *len = n;
    return LPK_OK;
}

static int st_dtype(const char *s, int *elem)
{
    if (!strcmp(s, "F32")) { *elem = 4; return LPK_TYPE_F32; }
    if (!strcmp(s, "F16")) { *elem = 2; return LPK_TYPE_F16; }
    if (!strcmp(s, "BF16")) { *elem = 2; return LPK_TYPE_BF16; }
    return -1;
}

static int cmp_begin(const void *a, const void *b)
{
    const cv_st_entry *x = *(const cv_st_entry *const *)a, *y = *(const cv_st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

int cv_st_parse_header(const char *name, const uint8_t *json, size_t len, uint64_t data_size,
                       cv_st_entry **out, size_t *n_out, lpk_error *err)
{
    *out = NULL;
    *n_out = 0;
    json_error_t je;
    json_t *root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return lpk_err(err, LPK_ECORRUPT, "%s: safetensors header is not valid JSON: %s "
                       "(byte %d)", name, je.text, je.position);
    int rc = LPK_OK;
    cv_st_entry *e = NULL;
    cv_st_entry **byoff = NULL;
    size_t n = 0;
    if (!json_is_object(root)) {
        rc = lpk_err(err, LPK_ECORRUPT, "%s: safetensors header is not a JSON object", name);
        goto out;
    }
    e = calloc(json_object_size(root) + 1, sizeof *e);
    if (!e) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); goto out; }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        cv_st_entry *t = &e[n];
        if (strlen(key) > LPK_MAX_NAME) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor name longer than %d bytes", name,
                         LPK_MAX_NAME);
            goto out;
        }
        snprintf(t->name, sizeof t->name, "%s", key);
        json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
               *jo = json_object_get(v, "data_offsets");
        if (!json_is_object(v) || !json_is_string(jd) || !json_is_array(js) ||
            !json_is_array(jo) || json_array_size(jo) != 2) {
            rc = lpk_err(err, LPK_ECORRUPT,
                         "%s: tensor '%s': entry needs dtype, shape and data_offsets [begin, end]",
                         name, key);
            goto out;
        }
        int elem = 0;
        t->dtype = st_dtype(json_string_value(jd), &elem);
        if (t->dtype < 0) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s': dtype %s not supported "
                         "(F32, F16, BF16 are)", name, key, json_string_value(jd));
            goto out;
        }
        size_t nd = json_array_size(js);
        if (nd > LPK_MAX_DIMS) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s': %zu dims (at most %d)", name,
                         key, nd, LPK_MAX_DIMS);
            goto out;
        }
        t->n_dims = (int)nd;
        uint64_t ne = 1;
        for (size_t d = 0; d < nd; d++) {
            json_t *x = json_array_get(js, d);
            if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                __builtin_mul_overflow(ne, (uint64_t)json_integer_value(x), &ne)) {
                rc = lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': bad shape", name, key);
                goto out;
            }
            t->dims[d] = (int64_t)json_integer_value(x);
        }
        json_t *b = json_array_get(jo, 0), *en = json_array_get(jo, 1);
        if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
            json_integer_value(en) < 0) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s': bad data_offsets", name, key);
            goto out;
        }
        t->begin = (uint64_t)json_integer_value(b);
        t->end = (uint64_t)json_integer_value(en);
        if (t->end < t->begin || t->end > data_size) {
            rc = lpk_err(err, t->end > data_size ? LPK_ETRUNC : LPK_ECORRUPT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] outside the data section "
                         "(%llu bytes)", name, key, (unsigned long long)t->begin,
                         (unsigned long long)t->end, (unsigned long long)data_size);
            goto out;
        }
        uint64_t want;
        if (__builtin_mul_overflow(ne, (uint64_t)elem, &want) || want != t->end - t->begin) {
            rc = lpk_err(err, LPK_ECORRUPT,
                         "%s: tensor '%s': data_offsets span %llu bytes, shape and dtype "
                         "need %llu", name, key, (unsigned long long)(t->end - t->begin),
                         (unsigned long long)want);
            goto out;
        }
        n++;
    }
    byoff = malloc((n + 1) * sizeof *byoff);
    if (!byoff) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) byoff[i] = &e[i];
    qsort(byoff, n, sizeof *byoff, cmp_begin);
    for (size_t i = 1; i < n; i++) {
        const cv_st_entry *a = byoff[i - 1], *b = byoff[i];
        if (b->begin < a->end) {
            rc = lpk_err(err, LPK_ECORRUPT,
                         "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", name,
                         a->name, (unsigned long long)a->begin, (unsigned long long)a->end,
                         b->name, (unsigned long long)b->begin, (unsigned long long)b->end);
            goto out;
        }
    }
out:
    free(byoff);
    json_decref(root);
    if (rc) {
        free(e);
        return rc;
    }
    *out = e;
    *n_out = n;
    return LPK_OK;
}

int cv_st_open_file(cv_msrc *m, const char *path, cv_st_entry **entries, size_t *n,
                    uint64_t *data_off, lpk_error *err)
{
    *entries = NULL;
    *n = 0;
    int idx = cv_msrc_add_file(m, path, err);
    if (idx < 0) return idx;
    const cv_mapfile *f = cv_msrc_file(m, idx);
    uint64_t hl;
    int rc = cv_st_header_len(path, f->base, f->size, &hl, err);
    if (rc) return rc;
    rc = cv_st_parse_header(path, f->base + 8, (size_t)hl, f->size - 8 - hl, entries, n, err);
    if (rc) return rc;
    *data_off = 8 + hl;
    return idx;
}
