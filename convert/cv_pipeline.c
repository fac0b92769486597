/* The convert pipeline: detect and open a source, check its tensors against
 * the hyperparameters, decide types, and stream every tensor in row blocks
 * into the container writer. */
#include "cv_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <omp.h>
#include "../format/lpk_xxh.h"

#include "../quant/quant.h"

/* Elements per row block: bounds the pipeline's buffers (a few x 16 MiB). */
#define CV_BLOCK_ELEMS (4u << 20)

/* ---------------------------------------------------------------- detection */
const char *cv_kind_name(int kind)
{
    switch (kind) {
    case CV_KIND_HF_SAFETENSORS: return "hf-safetensors";
    case CV_KIND_HF_TORCH: return "hf-pytorch";
    case CV_KIND_META: return "meta";
    case CV_KIND_LLAMA2C: return "llama2c";
    case CV_KIND_ARCHIVE: return "archive";
    default: return "unknown";
    }
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int cv_dir_has_torch_bins(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    while (d && (de = readdir(d)))
        n += !strncmp(de->d_name, "pytorch_model", 13) && has_suffix(de->d_name, ".bin");
    if (d) closedir(d);
    return n > 0;
}

int cv_detect_kind(const char *path, char *why, size_t why_n)
{
    struct stat st;
    if (stat(path, &st)) {
        snprintf(why, why_n, "%s: %s", path, strerror(errno));
        return CV_KIND_UNKNOWN;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) {
            snprintf(why, why_n, "%s: cannot list: %s", path, strerror(errno));
            return CV_KIND_UNKNOWN;
        }
        int st_files = 0, pt_bin = 0, pth = 0, params = 0, config = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
            const char *n = de->d_name;
            st_files += has_suffix(n, ".safetensors") || !strcmp(n, "model.safetensors.index.json");
            pt_bin += !strncmp(n, "pytorch_model", 13) && has_suffix(n, ".bin");
            pth += !strncmp(n, "consolidated.", 13) && has_suffix(n, ".pth");
            params += !strcmp(n, "params.json");
            config += !strcmp(n, "config.json");
        }
        closedir(d);
        if (st_files) return CV_KIND_HF_SAFETENSORS;
        if (pt_bin) return CV_KIND_HF_TORCH;
        if (pth || params) return CV_KIND_META;
        snprintf(why, why_n, "%s: no checkpoint here (looked for *.safetensors, "
                 "pytorch_model*.bin, params.json + consolidated.*.pth)%s", path,
                 config ? "; config.json alone has no weights" : "");
        return CV_KIND_UNKNOWN;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, why_n, "%s: not a file or folder", path);
        return CV_KIND_UNKNOWN;
    }
    if (has_suffix(path, ".tar") || has_suffix(path, ".tar.zst") || has_suffix(path, ".tzst") ||
        has_suffix(path, ".zip") || cv_archive_detect(path))
        return CV_KIND_ARCHIVE;
    if (has_suffix(path, ".bin")) {
        uint8_t m[4] = {0};
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t r = fd >= 0 ? read(fd, m, 4) : -1;
        if (fd >= 0) close(fd);
        if (r == 4 && !memcmp(m, "PK\3\4", 4)) {
            snprintf(why, why_n, "%s: a PyTorch file; give the folder holding it and "
                     "config.json", path);
            return CV_KIND_UNKNOWN;
        }
        return CV_KIND_LLAMA2C;
    }
    if (has_suffix(path, ".safetensors") || has_suffix(path, ".pth")) {
        snprintf(why, why_n, "%s: give the folder holding this file and its config", path);
        return CV_KIND_UNKNOWN;
    }
    snprintf(why, why_n, "%s: not a known checkpoint (a Hugging Face or Meta folder, a "
             "llama2.c .bin, or a .tar/.tar.zst/.zip of a folder)", path);
    return CV_KIND_UNKNOWN;
}

const char *cv_source_kind(const char *path)
{
    char why[512];
    int k = cv_detect_kind(path, why, sizeof why);
    return k == CV_KIND_UNKNOWN ? NULL : cv_kind_name(k);
}

/* ---------------------------------------------------------------- checks */
static const char *const layer_parts[] = {
    "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
    "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_down.weight",
    "ffn_up.weight"};
#define N_PARTS (sizeof layer_parts / sizeof layer_parts[0])

/* Canonical position: group (0 embd, 1 layers, 2 output_norm, 3 output, 4
 * unknown), layer, part. */
static void canon_key(const char *name, long *g, long *l, long *p)
{
    *g = 4; *l = 0; *p = 0;
    if (!strcmp(name, "token_embd.weight")) { *g = 0; return; }
    if (!strcmp(name, "output_norm.weight")) { *g = 2; return; }
    if (!strcmp(name, "output.weight")) { *g = 3; return; }
    if (strncmp(name, "blk.", 4)) return;
    char *end;
    errno = 0;
    long v = strtol(name + 4, &end, 10);
    if (errno || end == name + 4 || *end != '.' || v < 0 || name[4] == '-' || name[4] == '+')
        return;
    for (size_t i = 0; i < N_PARTS; i++)
        if (!strcmp(end + 1, layer_parts[i])) {
            *g = 1; *l = v; *p = (long)i;
            return;
        }
}

/* Shape the hyperparameters imply for a canonical name; 0 if not a model tensor. */
static int expected_shape(const cv_hparams *hp, const char *name, int *nd, int64_t d[2])
{
    long g, l, p;
    canon_key(name, &g, &l, &p);
    int64_t q = hp->n_head * hp->head_dim, kv = hp->n_kv * hp->head_dim;
    switch (g) {
    case 0: case 3: *nd = 2; d[0] = hp->vocab; d[1] = hp->dim; return 1;
    case 2: *nd = 1; d[0] = hp->dim; return 1;
    case 1:
        if (l >= hp->n_layers) return 0;
        *nd = 2;
        switch (p) {
        case 0: case 5: *nd = 1; d[0] = hp->dim; break;
        case 1: d[0] = q; d[1] = hp->dim; break;
        case 2: case 3: d[0] = kv; d[1] = hp->dim; break;
        case 4: d[0] = hp->dim; d[1] = q; break;
        case 6: case 8: d[0] = hp->ffn; d[1] = hp->dim; break;
        case 7: d[0] = hp->dim; d[1] = hp->ffn; break;
        }
        return 1;
    default: return 0;
    }
}

static void fmt_shape(char *b, size_t n, int nd, const int64_t *d)
{
    size_t o = 0;
    o += (size_t)snprintf(b + o, n - o, "[");
    for (int i = 0; i < nd && o < n; i++)
        o += (size_t)snprintf(b + o, n - o, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (o < n) snprintf(b + o, n - o, "]");
}

int cv_check_tensors(const cv_hparams *hp, const cv_tensor *t, size_t n, const char *what,
                     lpk_error *err)
{
    for (size_t i = 0; i < n; i++) {
        int nd;
        int64_t d[2];
        if (!expected_shape(hp, t[i].name, &nd, d))
            return lpk_err(err, LPK_EUNSUPPORTED, "%s: unexpected tensor '%s'%s", what,
                           t[i].src_name, strncmp(t[i].name, "blk.", 4) ? "" :
                           " (layer beyond the configured count)");
        if (t[i].dtype != LPK_TYPE_F32 && t[i].dtype != LPK_TYPE_F16 &&
            t[i].dtype != LPK_TYPE_BF16)
            return lpk_err(err, LPK_EUNSUPPORTED, "%s: tensor '%s': type %d not supported", what,
                           t[i].src_name, t[i].dtype);
        int ok = t[i].n_dims == nd;
        for (int k = 0; ok && k < nd; k++) ok = t[i].dims[k] == d[k];
        if (!ok) {
            char have[96], want[96];
            fmt_shape(have, sizeof have, t[i].n_dims, t[i].dims);
            fmt_shape(want, sizeof want, nd, d);
            return lpk_err(err, LPK_ECORRUPT, "%s: tensor '%s' has shape %s, the config "
                           "implies %s", what, t[i].src_name, have, want);
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(t[i].name, t[j].name))
                return lpk_err(err, LPK_ECORRUPT, "%s: tensors '%s' and '%s' are both %s", what,
                               t[j].src_name, t[i].src_name, t[i].name);
    }
    /* Everything the config implies exists (no allocation sized by the config). */
    char want[64];
    for (int64_t k = -1; k <= hp->n_layers * (int64_t)N_PARTS; k++) {
        if (k == -1) snprintf(want, sizeof want, "token_embd.weight");
        else if (k == hp->n_layers * (int64_t)N_PARTS) snprintf(want, sizeof want, "output_norm.weight");
        else snprintf(want, sizeof want, "blk.%lld.%s", (long long)(k / (int64_t)N_PARTS),
                      layer_parts[k % (int64_t)N_PARTS]);
        size_t i = 0;
        while (i < n && strcmp(t[i].name, want)) i++;
        if (i == n)
            return lpk_err(err, LPK_ENOTFOUND, "%s: missing tensor %s (%lld layers configured)",
                           what, want, (long long)hp->n_layers);
    }
    return LPK_OK;
}

typedef struct canon_pos {
    long g, l, p;
    const char *name;
    size_t idx;
} canon_pos;

static int cmp_canon(const void *a, const void *b)
{
    const canon_pos *x = a, *y = b;
    if (x->g != y->g) return x->g < y->g ? -1 : 1;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    if (x->p != y->p) return x->p < y->p ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* order[i] = index into t of the i-th tensor in canonical order. */
static int canonical_order(const cv_tensor *t, size_t n, size_t *order)
{
    canon_pos *k = malloc((n + 1) * sizeof *k);
    if (!k) return LPK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        canon_key(t[i].name, &k[i].g, &k[i].l, &k[i].p);
        k[i].name = t[i].name;
        k[i].idx = i;
    }
    qsort(k, n, sizeof *k, cmp_canon);
    for (size_t i = 0; i < n; i++) order[i] = k[i].idx;
    free(k);
    return LPK_OK;
}

/* ---------------------------------------------------------------- convert */
static int copy_kv(lpk_meta *dst, const lpk_kv *kv)
{
    switch (kv->type) {
    case LPK_V_STR: return lpk_meta_set_strn(dst, kv->key, kv->str.p, kv->str.n);
    case LPK_V_ARR:
        if (kv->elem != LPK_V_STR) return lpk_meta_set_arr(dst, kv->key, kv->elem, kv->data, kv->count);
        else {
            const char **v = malloc((size_t)(kv->count + 1) * sizeof *v);
            uint64_t *l = malloc((size_t)(kv->count + 1) * sizeof *l);
            int rc = LPK_ENOMEM;
            if (v && l) {
                for (uint64_t i = 0; i < kv->count; i++) {
                    lpk_str s = lpk_kv_str_at(kv, i);
                    v[i] = s.p;
                    l[i] = s.n;
                }
                rc = lpk_meta_set_str_arr(dst, kv->key, v, l, kv->count);
            }
            free(v);
            free(l);
            return rc;
        }
    default: return lpk_meta_set_scalar(dst, kv->key, kv->type, kv->data);
    }
}

/* general.*, llama.*, tokenizer.*, then everything else, keeping order inside. */
static int copy_meta_grouped(lpk_meta *dst, const lpk_meta *src)
{
    static const char *groups[] = {"general.", "llama.", "tokenizer.", ""};
    for (size_t g = 0; g < 4; g++)
        for (size_t i = 0; i < lpk_meta_count(src); i++) {
            const lpk_kv *kv = lpk_meta_at(src, i);
            int in = 0;
            for (size_t h = 0; h < 3; h++)
                if (!strncmp(kv->key, groups[h], strlen(groups[h]))) in = (int)h + 1;
            if ((g < 3 && in == (int)g + 1) || (g == 3 && !in)) {
                int rc = copy_kv(dst, kv);
                if (rc) return rc;
            }
        }
    return LPK_OK;
}

static int hash_file(const char *path, uint64_t *h, lpk_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lpk_err(err, LPK_EIO, "%s: cannot open: %s", path, strerror(errno));
#ifdef POSIX_FADV_SEQUENTIAL
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    XXH3_state_t *st = XXH3_createState();
    size_t bs = 8u << 20;
    uint8_t *buf = malloc(bs);
    int rc = LPK_OK;
    if (!st || !buf) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto out;
    }
    XXH3_64bits_reset(st);
    off_t pos = 0;
    for (;;) {
        ssize_t r = read(fd, buf, bs);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = lpk_err(err, LPK_EIO, "%s: read failed: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0) break;
        XXH3_64bits_update(st, buf, (size_t)r);
#ifdef POSIX_FADV_DONTNEED
        posix_fadvise(fd, pos, r, POSIX_FADV_DONTNEED);
#endif
        pos += r;
    }
    *h = XXH3_64bits_digest(st);
out:
    free(buf);
    XXH3_freeState(st);
    close(fd);
    return rc;
}

/* Paths of the input files: s->files, or meta's source.files under s->path. */
static char **input_paths(const cv_source *s, size_t *n)
{
    const lpk_kv *kv = s->n_files ? NULL : lpk_meta_find(s->meta, "source.files");
    *n = s->n_files ? s->n_files : kv && kv->type == LPK_V_ARR && kv->elem == LPK_V_STR
                                       ? (size_t)kv->count : 0;
    char **p = calloc(*n + 1, sizeof *p);
    if (!p) return NULL;
    for (size_t i = 0; i < *n; i++) {
        if (s->n_files) p[i] = strdup(s->files[i]);
        else {
            char buf[8192];
            lpk_str f = lpk_kv_str_at(kv, i);
            if (!cv_path_join(buf, sizeof buf, s->path, f.p)) p[i] = strdup(buf);
        }
        if (!p[i]) {
            for (size_t j = 0; j < i; j++) free(p[j]);
            free(p);
            return NULL;
        }
    }
    return p;
}

static int add_provenance(lpk_meta *m, const cv_source *s, int hash, const cv_report *rep,
                          lpk_error *err)
{
    size_t n = 0;
    char **paths = input_paths(s, &n);
    const char **names = calloc(n + 1, sizeof *names);
    uint64_t *sizes = calloc(n + 1, sizeof *sizes);
    char (*hex)[17] = calloc(n + 1, sizeof *hex);
    const char **hexp = calloc(n + 1, sizeof *hexp);
    int rc = LPK_OK;
    if (!paths || !names || !sizes || !hex || !hexp) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *b = strrchr(paths[i], '/');
        names[i] = b ? b + 1 : paths[i];
        struct stat st;
        if (stat(paths[i], &st)) {
            rc = lpk_err(err, LPK_EIO, "%s: cannot stat: %s", paths[i], strerror(errno));
            goto out;
        }
        sizes[i] = (uint64_t)st.st_size;
        if (hash) {
            uint64_t h = 0;
            if ((rc = hash_file(paths[i], &h, err))) goto out;
            snprintf(hex[i], sizeof hex[i], "%016llx", (unsigned long long)h);
            hexp[i] = hex[i];
        }
    }
    /* the first failure is the status (two ORed together would be a third) */
    if (s->n_files) {
        rc = lpk_meta_set_str_arr(m, "source.files", names, NULL, n);
        if (!rc) rc = lpk_meta_set_arr(m, "source.file_sizes", LPK_V_U64, sizes, n);
    }
    if (!rc && hash) rc = lpk_meta_set_str_arr(m, "source.xxh3", hexp, NULL, n);
    if (!rc) rc = lpk_meta_set_str(m, "source.tool", "llmpack " LPK_VERSION_STRING);
    if (!rc)
        rc = lpk_meta_set_str_arr(m, "source.skipped_tensors",
                                  (const char *const *)rep->skipped, NULL, rep->n_skipped);
    if (rc == LPK_ENOMEM) rc = lpk_err(err, rc, "out of memory");
    else if (rc) rc = lpk_err(err, rc, "source.* metadata: %s", lpk_status_name(rc));
out:
    for (size_t i = 0; paths && i < n; i++) free(paths[i]);
    free(paths);
    free(names);
    free(sizes);
    free(hex);
    free(hexp);
    return rc;
}

static int64_t t_ncols(const cv_tensor *t) { return t->dims[t->n_dims - 1]; }
static int64_t t_nrows(const cv_tensor *t)
{
    int64_t r = 1;
    for (int i = 0; i < t->n_dims - 1; i++) r *= t->dims[i];
    return r;
}
static size_t elem_size(int type) { return type == LPK_TYPE_F32 ? 4 : 2; }
static int64_t block_rows(const cv_tensor *t)
{
    int64_t c = t_ncols(t), r = c > 0 ? (int64_t)CV_BLOCK_ELEMS / c : 1;
    if (r < 1) r = 1;
    return r < t_nrows(t) ? r : t_nrows(t);
}

/* Index of the first NaN/Inf among n values of type (raw little-endian bits), or -1. */
static int64_t first_nonfinite(int type, const void *p, size_t n)
{
    if (type == LPK_TYPE_F32) {
        const uint32_t *x = p;
        for (size_t i = 0; i < n; i++)
            if ((x[i] & 0x7f800000u) == 0x7f800000u) return (int64_t)i;
    } else {
        const uint16_t *x = p;
        uint16_t e = type == LPK_TYPE_F16 ? 0x7c00 : 0x7f80;
        for (size_t i = 0; i < n; i++)
            if ((x[i] & e) == e) return (int64_t)i;
    }
    return -1;
}

static float value_at(int type, const void *p, size_t i)
{
    if (type == LPK_TYPE_F32) {
        float f;
        memcpy(&f, (const uint8_t *)p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const uint8_t *)p + 2 * i, 2);
    return type == LPK_TYPE_F16 ? lpk_f16_to_f32(h) : lpk_bf16_to_f32(h);
}

/* Is output.weight byte-equal to token_embd.weight? Reads both in blocks. */
static int tensors_equal(cv_source *s, const cv_tensor *a, const cv_tensor *b, void *ba,
                         void *bb, int *eq, lpk_error *err)
{
    *eq = 0;
    if (a->dtype != b->dtype || a->n_dims != b->n_dims) return LPK_OK;
    for (int i = 0; i < a->n_dims; i++)
        if (a->dims[i] != b->dims[i]) return LPK_OK;
    int64_t nr = t_nrows(a), br = block_rows(a);
    size_t rb = (size_t)t_ncols(a) * elem_size(a->dtype);
    for (int64_t r = 0; r < nr; r += br) {
        int64_t k = nr - r < br ? nr - r : br;
        int rc = s->ops->read_rows(s, a, r, k, ba, err);
        if (!rc) rc = s->ops->read_rows(s, b, r, k, bb, err);
        if (rc) return rc;
        if (memcmp(ba, bb, (size_t)k * rb)) return LPK_OK;
    }
    *eq = 1;
    return LPK_OK;
}

/* Output type for a tensor with --type (NULL: keep). */
static int out_type_for(const cv_tensor *t, int want)
{
    if (t->n_dims == 1) return LPK_TYPE_F32;
    return want < 0 ? t->dtype : want;
}

/* rep->skipped = meta's source.skipped_tensors + s->skipped + extra. */
static void report_set_skipped(cv_report *r, const cv_source *s, const char *extra)
{
    const lpk_kv *kv = lpk_meta_find(s->meta, "source.skipped_tensors");
    size_t nm = kv && kv->type == LPK_V_ARR && kv->elem == LPK_V_STR ? (size_t)kv->count : 0;
    size_t n = nm + s->n_skipped + (extra ? 1 : 0);
    r->skipped = calloc(n + 1, sizeof *r->skipped);
    if (!r->skipped) return;
    for (size_t i = 0; i < nm; i++) r->skipped[i] = strdup(lpk_kv_str_at(kv, i).p);
    for (size_t i = 0; i < s->n_skipped; i++) r->skipped[nm + i] = strdup(s->skipped[i]);
    if (extra) r->skipped[nm + s->n_skipped] = strdup(extra);
    r->n_skipped = n;
    for (size_t i = 0; i < n; i++)
        if (!r->skipped[i]) r->skipped[i] = strdup("?");
}

void cv_report_free(cv_report *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_skipped; i++) free(r->skipped[i]);
    free(r->skipped);
    r->skipped = NULL;
    r->n_skipped = 0;
    for (size_t i = 0; i < r->n_no_imatrix; i++) free(r->no_imatrix[i]);
    free(r->no_imatrix);
    r->no_imatrix = NULL;
    r->n_no_imatrix = 0;
}

/* What a folder opener needs besides the folder (archives call back into
 * open_dir with only cv_torch_opts). One conversion at a time per process. */
static struct {
    const cv_options *o;
    cv_open_opts *oo;
} open_ctx;

static int open_path(const char *path, const cv_torch_opts *topts, cv_source **s,
                     lpk_error *err)
{
    cv_open_opts *oo = open_ctx.oo;
    char why[1024] = "";
    int rc, kind = cv_detect_kind(path, why, sizeof why);
    switch (kind) {
    case CV_KIND_HF_SAFETENSORS:
        if (cv_dir_has_torch_bins(path))
            snprintf(oo->note, sizeof oo->note, "%s holds both *.safetensors and "
                     "pytorch_model*.bin: the safetensors files are read", path);
        return cv_hf_safetensors_open(path, oo, s, err);
    case CV_KIND_LLAMA2C: return cv_llama2c_open(path, oo, s, err);
    case CV_KIND_HF_TORCH: return cv_hftorch_open(path, topts, s, err);
    case CV_KIND_META:
        if ((rc = cv_meta_open(path, topts, s, err))) return rc;
        if ((rc = cv_meta_tokenizer(path, NULL, oo->tokenizer, *s, oo->note, sizeof oo->note,
                                    oo->warn, sizeof oo->warn, err))) {
            (*s)->ops->close(*s);
            *s = NULL;
        }
        return rc;
    case CV_KIND_ARCHIVE: return cv_archive_open(path, topts, open_path, s, err);
    default: return lpk_err(err, LPK_ENOTFOUND, "%s", why);
    }
}

static int open_source(const cv_options *o, cv_open_opts *oo, cv_source **s, lpk_error *err)
{
    char spool[4096];
    snprintf(spool, sizeof spool, "%s", o->spool_dir ? o->spool_dir : o->out);
    char *sl = o->spool_dir ? NULL : strrchr(spool, '/');
    if (sl) sl[sl == spool ? 1 : 0] = 0;
    else if (!o->spool_dir) snprintf(spool, sizeof spool, ".");
    cv_torch_opts topts = {.context_length = o->context_length, .spool_dir = spool,
                           .tokenizer = oo->tokenizer, .warn = oo->warn,
                           .warn_n = sizeof oo->warn, .note = oo->note,
                           .note_n = sizeof oo->note};
    open_ctx.o = o;
    open_ctx.oo = oo;
    int rc = open_path(o->src, &topts, s, err);
    open_ctx.o = NULL;
    open_ctx.oo = NULL;
    return rc;
}

/* Converts one block of rows src (type st) into dst (type dt: f32/f16/bf16 or
 * a quant/ block type) through f32 (f32buf); checks every value is finite and
 * fits dt. *out_bytes = bytes written to dst. */
static int convert_block(const char *what, const cv_tensor *t, int st, int dt, const void *src,
                         float *f32buf, void *dst, int64_t row0, int64_t nrows,
                         const float *imw, const float *cov, unsigned qflags,
                         size_t *out_bytes,
                         lpk_error *err)
{
    int64_t nc = t_ncols(t);
    size_t n = (size_t)(nrows * nc);
    int64_t bad = first_nonfinite(st, src, n);
    if (bad >= 0)
        return lpk_err(err, LPK_EBADVALUE, "%s: tensor '%s' (%s): value %g at index %lld (row "
                       "%lld, column %lld)", what, t->src_name, t->name,
                       (double)value_at(st, src, (size_t)bad), (long long)(row0 * nc + bad),
                       (long long)(row0 + bad / nc), (long long)(bad % nc));
    int block = quant_type_is_block(dt);
    if (st == dt) {
        memcpy(dst, src, n * elem_size(st));
        *out_bytes = n * elem_size(st);
        return LPK_OK;
    }
    float *f = dt == LPK_TYPE_F32 ? (float *)dst : f32buf;
#pragma omp parallel for schedule(static) if (nrows > 1)
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *sp = (const uint8_t *)src + (size_t)(r * nc) * elem_size(st);
        float *fp = f + r * nc;
        lpk_to_f32_row(st, sp, fp, (size_t)nc);
        if (dt == LPK_TYPE_F16) lpk_f32_to_f16_row(fp, (uint16_t *)dst + r * nc, (size_t)nc);
        else if (dt == LPK_TYPE_BF16) lpk_f32_to_bf16_row(fp, (uint16_t *)dst + r * nc, (size_t)nc);
    }
    if (block) {
        uint64_t nb;
        int rc = lpk_type_nbytes(dt, n, &nb);
        if (!rc)
            rc = quant_quantize_rows_err(dt, LPK_TYPE_F32, f, nrows, nc, dst, imw, cov, qflags,
                                         NULL, NULL, err);
        if (rc) {
            if (err && !strstr(err->msg, t->name))
                lpk_err(err, rc, "%s: tensor '%s': cannot store as %s", what, t->name,
                        lpk_type_get(dt)->name);
            return rc;
        }
        *out_bytes = (size_t)nb;
        return LPK_OK;
    }
    *out_bytes = n * elem_size(dt);
    if (dt != LPK_TYPE_F32) {
        bad = first_nonfinite(dt, dst, n);
        if (bad >= 0)
            return lpk_err(err, LPK_EBADVALUE, "%s: tensor '%s' (%s): value %g at index %lld does "
                           "not fit %s", what, t->src_name, t->name, (double)f[bad],
                           (long long)(row0 * nc + bad), lpk_type_get(dt)->name);
    }
    return LPK_OK;
}

/* The importance weights of entry e (row length nc) into *buf (grown as
 * needed); no entry: nothing in *buf (the tensor takes the weighting used
 * without a matrix, docs/QUANT.md) and the tensor is listed in
 * rep->no_imatrix. */
static int imatrix_weights(const lpk_imatrix_entry *e, int64_t nc, float **buf, const char *name,
                           cv_report *rep, lpk_error *err)
{
    float *b = realloc(*buf, (size_t)nc * sizeof(float));
    if (!b) return lpk_err(err, LPK_ENOMEM, "out of memory");
    *buf = b;
    if (!e) {
        char **l = realloc(rep->no_imatrix, (rep->n_no_imatrix + 1) * sizeof *l);
        if (!l || !(l[rep->n_no_imatrix] = strdup(name))) {
            if (l) rep->no_imatrix = l;
            return lpk_err(err, LPK_ENOMEM, "out of memory");
        }
        rep->no_imatrix = l;
        rep->n_no_imatrix++;
        return LPK_OK;
    }
    lpk_imatrix_weights(e, b);
    return LPK_OK;
}

int cv_convert(const cv_options *o, cv_report *report, lpk_error *err)
{
    cv_report rep_local;
    cv_report *rep = report ? report : &rep_local;
    memset(rep, 0, sizeof *rep);
    if (!o || !o->src || !o->out) return lpk_err(err, LPK_EINVAL, "convert: no source or output");
    int want = -1;
    const char *recipe = NULL;
    if (o->type) {
        want = lpk_type_from_name(o->type);
        if (want != LPK_TYPE_F32 && want != LPK_TYPE_F16 && want != LPK_TYPE_BF16) {
            want = -1;
            if (!quant_recipe_valid(o->type))
                return lpk_err(err, LPK_EINVAL, "unknown --type '%s' (%s)",
                               o->type, quant_recipe_list());
            recipe = o->type;
        }
    }
    if (o->threads > 0) omp_set_num_threads(o->threads);
    if (!o->out_fd && !o->force && !access(o->out, F_OK))
        return lpk_err(err, LPK_EEXIST, "%s exists (use --force to replace it)", o->out);

    cv_open_opts oo;
    memset(&oo, 0, sizeof oo);
    oo.tokenizer = o->tokenizer;
    cv_source *s = NULL;
    lpk_meta *meta = NULL;
    lpk_tensor *decls = NULL;
    size_t *order = NULL;
    void *b_src = NULL, *b_dst = NULL;
    float *b_f32 = NULL, *imbuf = NULL, *covbuf = NULL;
    lpk_writer *w = NULL;
    quant_choice *choices = NULL;
    int rc = open_source(o, &oo, &s, err);
    if (rc) return rc;
    snprintf(rep->warning, sizeof rep->warning, "%s", oo.warn);
    snprintf(rep->note, sizeof rep->note, "%s", oo.note);
    snprintf(rep->tokenizer, sizeof rep->tokenizer, "%s", s->tokenizer);
    if (!s->tokenizer[0] && !o->no_tokenizer) {
        rc = lpk_err(err, LPK_ENOTFOUND, "%s: %s; give one with --tokenizer FILE, or convert "
                     "without one with --no-tokenizer", o->src, oo.warn[0] ? oo.warn :
                     "no tokenizer");
        goto out;
    }
    const char *fmt = lpk_meta_get_str(s->meta, "source.format");
    snprintf(rep->source_format, sizeof rep->source_format, "%s", fmt ? fmt : "?");
    if (o->context_length &&
        lpk_meta_set_u32(s->meta, "llama.context_length", o->context_length)) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto out;
    }
    cv_hparams hp = {.tie = s->tie_hint};
    if ((rc = cv_hparams_from_meta(s->meta, &hp, o->src, err)) ||
        (rc = cv_check_tensors(&hp, s->tensors, s->n_tensors, o->src, err)))
        goto out;

    /* Buffers: the largest block any tensor needs. */
    size_t max_elems = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        size_t e = (size_t)(block_rows(&s->tensors[i]) * t_ncols(&s->tensors[i]));
        if (e > max_elems) max_elems = e;
    }
    b_src = malloc(max_elems * 4);
    b_dst = malloc(max_elems * 4);
    b_f32 = malloc(max_elems * 4);
    order = malloc((s->n_tensors + 1) * sizeof *order);
    decls = calloc(s->n_tensors + 1, sizeof *decls);
    if (!b_src || !b_dst || !b_f32 || !order || !decls) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto out;
    }

    /* Tied or not. */
    const cv_tensor *embd = NULL, *outw = NULL;
    for (size_t i = 0; i < s->n_tensors; i++) {
        if (!strcmp(s->tensors[i].name, "token_embd.weight")) embd = &s->tensors[i];
        if (!strcmp(s->tensors[i].name, "output.weight")) outw = &s->tensors[i];
    }
    const char *dropped = NULL;
    if (!outw) {
        if (s->tie_hint == CV_TIE_UNTIED) {
            rc = lpk_err(err, LPK_ENOTFOUND, "%s: missing tensor output.weight (the config "
                         "says the embeddings are not tied)", o->src);
            goto out;
        }
        rep->tied = 1;
    } else if (!s->streaming) {
        int eq;
        if ((rc = tensors_equal(s, outw, embd, b_src, b_dst, &eq, err))) goto out;
        if (eq) {
            rep->tied = 1;
            dropped = outw->src_name;
        }
        s->ops->release(s, outw);
        s->ops->release(s, embd);
    }
    report_set_skipped(rep, s, dropped);

    /* Order and declarations. */
    if (s->streaming) for (size_t i = 0; i < s->n_tensors; i++) order[i] = i;
    else if (canonical_order(s->tensors, s->n_tensors, order)) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto out;
    }
    size_t nd = 0;
    uint64_t total = 0;
    size_t n2d[LPK_TYPE_COUNT] = {0};
    for (size_t k = 0; k < s->n_tensors; k++) {
        const cv_tensor *t = &s->tensors[order[k]];
        if (dropped && t == outw) continue;
        lpk_tensor *d = &decls[nd];
        order[nd++] = order[k];
        snprintf(d->name, sizeof d->name, "%s", t->name);
        d->type = recipe ? t->dtype : out_type_for(t, want);
        d->n_dims = t->n_dims;
        for (int i = 0; i < t->n_dims; i++) d->dims[i] = t->dims[i];
        total += (uint64_t)t_nrows(t) * (uint64_t)t_ncols(t) * elem_size(t->dtype);
    }
    meta = lpk_meta_new();
    if (!meta || copy_meta_grouped(meta, s->meta)) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto out;
    }
    if (recipe) {
        /* quant/ picks a type per tensor from the source types (decls' types). */
        if (!(choices = calloc(nd + 1, sizeof *choices))) {
            rc = lpk_err(err, LPK_ENOMEM, "out of memory");
            goto out;
        }
        const lpk_imatrix *im = o->imatrix;
        if (im && (rc = lpk_imatrix_check(im, o->imatrix_path ? o->imatrix_path : "importance "
                                          "matrix", decls, nd, err)))
            goto out;
        if ((rc = quant_plan(recipe, (o->pure ? QUANT_PLAN_PURE : 0u) |
                             (im ? QUANT_PLAN_IMATRIX : 0u), meta, decls, nd, choices, err)))
            goto out;
        for (size_t k = 0; k < nd; k++) decls[k].type = choices[k].type;
    }
    for (size_t k = 0; k < nd; k++)
        if (decls[k].n_dims > 1) n2d[decls[k].type]++;
    /* general.file_type: GGUF's llama_ftype for the dominant 2-D type. */
    int dom = LPK_TYPE_F32;
    if (n2d[LPK_TYPE_F16] > n2d[dom]) dom = LPK_TYPE_F16;
    if (n2d[LPK_TYPE_BF16] > n2d[dom]) dom = LPK_TYPE_BF16;
    if (lpk_meta_set_u32(meta, "general.file_type",
                         dom == LPK_TYPE_F32 ? 0u : dom == LPK_TYPE_F16 ? 1u : 32u) ||
        (o->name && lpk_meta_set_str(meta, "general.name", o->name))) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto out;
    }
    if (recipe && ((rc = quant_plan_record(recipe, o->pure, decls, choices, nd, meta)) ||
                   (o->imatrix && (rc = lpk_imatrix_record(o->imatrix, o->imatrix_path, meta))))) {
        rc = lpk_err(err, rc, "cannot record the quantization plan");
        goto out;
    }
    if ((rc = add_provenance(meta, s, o->hash_sources, rep, err))) goto out;

    int fd = -1;
    if (o->out_fd) {
        uint64_t bytes = 0;
        for (size_t k = 0; k < nd; k++) {
            uint64_t b;
            if (!lpk_type_nbytes(decls[k].type, lpk_tensor_nelems(&decls[k]), &b)) bytes += b;
        }
        if ((fd = o->out_fd(o->out_fd_ctx, bytes, err)) < 0) {
            rc = err && err->status ? err->status : LPK_EIO;
            goto out;
        }
        rc = lpk_writer_open_fd(fd, o->out, meta, decls, nd, 0, &w, err);
    } else {
        rc = lpk_writer_open(o->out, meta, decls, nd,
                             (o->force ? LPK_WRITE_FORCE : 0) |
                                 (o->scratch ? LPK_WRITE_SCRATCH : 0), &w, err);
    }
    if (rc) goto out;
    uint64_t done = 0;
    if (o->progress && o->progress(o->progress_ctx, 0, total)) {
        rc = lpk_err(err, LPK_EINTR, "%s: cancelled", o->out);
        goto out;
    }
    for (size_t k = 0; k < nd; k++) {
        const cv_tensor *t = &s->tensors[order[k]];
        int dt = decls[k].type;
        int64_t nr = t_nrows(t), nc = t_ncols(t), br = block_rows(t);
        const float *imw = NULL, *cov = NULL;
        if (recipe && o->imatrix && quant_type_is_block(dt)) {
            const lpk_imatrix_entry *e = lpk_imatrix_find(o->imatrix, t->name);
            if ((rc = imatrix_weights(e, nc, &imbuf, t->name, rep, err))) goto out;
            imw = e ? imbuf : NULL;
            /* the input's covariance blocks, where the matrix has them */
            if (e && e->cov32 && quant_type_uses_cov(dt)) {
                float *cb = realloc(covbuf, (size_t)nc * 32 * sizeof *cb);
                if (!cb) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); goto out; }
                covbuf = cb;
                if (lpk_imatrix_cov32(o->imatrix, t->name, nc, covbuf)) cov = covbuf;
            }
        }
        unsigned qflags = quant_rows_flags(t->name, decls, nd);
        if ((rc = lpk_writer_tensor_begin(w, t->name, err))) goto out;
        for (int64_t r = 0; r < nr; r += br) {
            int64_t kr = nr - r < br ? nr - r : br;
            size_t ob = 0;
            if ((rc = s->ops->read_rows(s, t, r, kr, b_src, err)) ||
                (rc = convert_block(o->src, t, t->dtype, dt, b_src, b_f32, b_dst, r, kr, imw,
                                    cov, qflags, &ob, err)) ||
                (rc = lpk_writer_tensor_write(w, b_dst, ob, err)))
                goto out;
            done += (uint64_t)(kr * nc) * elem_size(t->dtype);
            if (o->progress && o->progress(o->progress_ctx, done, total)) {
                rc = lpk_err(err, LPK_EINTR, "%s: cancelled", o->out);
                goto out;
            }
        }
        if ((rc = lpk_writer_tensor_end(w, err))) goto out;
        s->ops->release(s, t);
        rep->n_by_type[dt]++;
        rep->n_tensors++;
    }
    rep->bytes_in = done;
    rc = lpk_writer_finish(w, err);
    w = NULL;
    if (!rc) {
        struct stat st;
        if (fd >= 0 ? !fstat(fd, &st) : !stat(o->out, &st)) rep->bytes_out = (uint64_t)st.st_size;
    }
out:
    lpk_writer_abort(w);
    free(choices);
    lpk_meta_free(meta);
    free(decls);
    free(order);
    free(b_src);
    free(b_dst);
    free(b_f32);
    free(imbuf);
    free(covbuf);
    if (s) s->ops->close(s);
    if (!report) cv_report_free(rep);
    return rc;
}
