/* HF folders whose weights are torch.save files: pytorch_model.bin, or
 * pytorch_model-0000N-of-0000M.bin shards listed by pytorch_model.bin.index.json.
 *
 * Each .bin is a torch zip: its state dict is resolved by the torch reader and
 * every tensor becomes a byte range of the mapped file (storages are stored
 * uncompressed), so the mapped-range source serves the rows, un-permuting HF's
 * q/k rows on the way, as for safetensors. */
#include "cv_internal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

/* Adds the tensors of one .bin file. wmap (may be NULL): the index's
 * weight_map, which must send every tensor of this file to `shard`. */
static int add_bin(cv_msrc *m, const cv_hparams *hp, const char *path, const char *shard,
                   json_t *wmap, size_t *n_indexed, lpk_error *err)
{
    int idx = cv_msrc_add_file(m, path, err);
    if (idx < 0) return idx;
    const cv_mapfile *f = cv_msrc_file(m, idx);
    cv_torch_file *tf;
    int rc = cv_torch_file_open_mem(path, f->base, f->size, &tf, err);
    if (rc) return rc;
    cv_source *s = cv_msrc_source(m);
    for (size_t i = 0; i < tf->n_tensors && !rc; i++) {
        const cv_pt_tensor *t = &tf->tensors[i];
        if (wmap) {
            json_t *w = json_object_get(wmap, t->name);
            if (!json_is_string(w) || strcmp(json_string_value(w), shard)) {
                rc = lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s' is in %s but the index %s",
                             path, t->name, shard,
                             json_is_string(w) ? "maps it elsewhere" : "does not list it");
                break;
            }
            (*n_indexed)++;
        }
        char canon[LPK_MAX_NAME + 1];
        int perm;
        int k = cv_name_from_hf(t->name, canon, sizeof canon, &perm);
        if (k == CV_NAME_SKIP) {
            rc = cv_source_add_skipped(s, t->name, err);
        } else if (k == CV_NAME_UNKNOWN) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: unexpected tensor '%s' (not part of a "
                         "LLaMA model)", path, t->name);
        } else if (t->type < 0) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s' is %s; only float, half and "
                         "bfloat16 tensors can be converted", path, t->name,
                         cv_pt_stype_name(t->stype));
        } else {
            rc = cv_msrc_add_tensor(m, canon, t->name, t->type, t->n_dims, t->dims, idx,
                                    (uint64_t)(t->data - f->base), perm ? hp->head_dim : 0, err);
        }
    }
    cv_torch_file_close(tf);
    return rc;
}

static int add_indexed(cv_msrc *m, const cv_hparams *hp, const char *dir, const char *ipath,
                       lpk_error *err)
{
    uint8_t *buf;
    size_t n;
    int rc = cv_read_small_file(ipath, 64u << 20, &buf, &n, err);
    if (rc) return rc;
    json_error_t je;
    json_t *root = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!root) return lpk_err(err, LPK_ECORRUPT, "%s: line %d: %s", ipath, je.line, je.text);
    json_t *wmap = json_object_get(root, "weight_map");
    json_t *done = json_object();
    size_t n_indexed = 0;
    if (!json_is_object(wmap) || !json_object_size(wmap))
        rc = lpk_err(err, LPK_ECORRUPT, "%s: no weight_map", ipath);
    if (!rc) rc = cv_source_add_file(cv_msrc_source(m), ipath, err);
    const char *key;
    json_t *v;
    json_object_foreach(wmap, key, v) {
        if (rc) break;
        const char *sh = json_string_value(v);
        if (!sh || !sh[0] || strchr(sh, '/') || !strcmp(sh, "..")) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: '%s' maps to a bad file name", ipath, key);
            break;
        }
        if (json_object_get(done, sh)) continue;
        json_object_set_new(done, sh, json_true());
        char p[4096];
        if (cv_path_join(p, sizeof p, dir, sh)) rc = lpk_err(err, LPK_EINVAL, "%s: path too long", dir);
        else if (access(p, F_OK))
            rc = lpk_err(err, LPK_ENOTFOUND, "%s: names %s, which does not exist", ipath, sh);
        else rc = add_bin(m, hp, p, sh, wmap, &n_indexed, err);
    }
    if (!rc && n_indexed != json_object_size(wmap))
        rc = lpk_err(err, LPK_ENOTFOUND, "%s: lists %zu tensors, the shards hold %zu of them",
                     ipath, json_object_size(wmap), n_indexed);
    json_decref(done);
    json_decref(root);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* No index: pytorch_model.bin alone, or every pytorch_model*.bin in name order. */
static int add_unindexed(cv_msrc *m, const cv_hparams *hp, const char *dir, lpk_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return lpk_err(err, LPK_EIO, "%s: cannot list", dir);
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (strncmp(de->d_name, "pytorch_model", 13) || l < 17 || strcmp(de->d_name + l - 4, ".bin"))
            continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (!nn || !(nn[n] = strdup(de->d_name))) rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        if (nn) names = nn;
        if (!rc) n++;
    }
    closedir(d);
    if (!rc && !n) rc = lpk_err(err, LPK_ENOTFOUND, "%s: no pytorch_model*.bin", dir);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        char p[4096];
        size_t dummy = 0;
        if (cv_path_join(p, sizeof p, dir, names[i])) rc = lpk_err(err, LPK_EINVAL, "%s: path too long", dir);
        else rc = add_bin(m, hp, p, names[i], NULL, &dummy, err);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int cv_hftorch_open(const char *dir, const cv_torch_opts *opts, cv_source **out,
                    lpk_error *err)
{
    *out = NULL;
    cv_msrc *m;
    int rc = cv_msrc_new(dir, &m, err);
    if (rc) return rc;
    cv_source *s = cv_msrc_source(m);
    cv_hparams hp;
    char warn[512] = "";
    rc = cv_hf_folder_meta(dir, opts ? opts->tokenizer : NULL, &hp, s,
                           opts && opts->warn ? opts->warn : warn,
                           opts && opts->warn ? opts->warn_n : sizeof warn, err);
    if (!rc) {
        s->tie_hint = hp.tie;
        if (lpk_meta_set_str(s->meta, "source.format", "hf-pytorch"))
            rc = lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    char ip[4096];
    if (!rc && cv_path_join(ip, sizeof ip, dir, "pytorch_model.bin.index.json"))
        rc = lpk_err(err, LPK_EINVAL, "%s: path too long", dir);
    if (!rc) rc = access(ip, F_OK) ? add_unindexed(m, &hp, dir, err)
                                   : add_indexed(m, &hp, dir, ip, err);
    if (rc) {
        s->ops->close(s);
        return rc;
    }
    *out = s;
    return LPK_OK;
}
