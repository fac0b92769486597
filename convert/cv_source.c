/* Helpers every convert/ file may use, below all of them (docs/ARCHITECTURE.md):
 * paths, small files, JSON objects, a model's default name, and the file and
 * skipped-tensor lists of a cv_source. This file calls nothing else in convert/. */
#include "cv_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

int cv_path_join(char *out, size_t n, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    int w = snprintf(out, n, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", name);
    return w < 0 || (size_t)w >= n ? LPK_EINVAL : LPK_OK;
}

int cv_read_small_file(const char *path, size_t max, uint8_t **buf, size_t *n, lpk_error *err)
{
    *buf = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lpk_err(err, errno == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: cannot open: %s",
                       path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return lpk_err(err, LPK_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return lpk_err(err, LPK_ECORRUPT, "%s: %lld bytes, more than the %zu allowed", path,
                       (long long)st.st_size, max);
    }
    size_t len = (size_t)st.st_size;
    uint8_t *b = malloc(len + 1);
    if (!b) {
        close(fd);
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, b + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            free(b);
            close(fd);
            return lpk_err(err, LPK_EIO, "%s: read failed: %s", path, r ? strerror(e) : "short");
        }
        got += (size_t)r;
    }
    close(fd);
    b[len] = 0;
    *buf = b;
    *n = len;
    return LPK_OK;
}

void cv_default_name(const char *path, char *out, size_t n)
{
    char full[PATH_MAX];
    if (!realpath(path, full)) snprintf(full, sizeof full, "%s", path);
    size_t l = strlen(full);
    while (l > 1 && full[l - 1] == '/') full[--l] = 0;
    char *b = strrchr(full, '/');
    char *base = b ? b + 1 : full;
    /* Hugging Face's cache: ".../models--org--NAME/snapshots/REVISION" -> "NAME" */
    char *snap = b && b != full ? b - 1 : NULL;
    while (snap && snap > full && *snap != '/') snap--;
    if (snap && *snap == '/' && !strncmp(snap, "/snapshots/", 11) && snap + 10 == b) {
        *snap = 0;
        char *repo = strrchr(full, '/');
        repo = repo ? repo + 1 : full;
        char *dash = !strncmp(repo, "models--", 8) ? strstr(repo + 8, "--") : NULL;
        if (dash && dash[2]) {
            snprintf(out, n, "%s", dash + 2);
            return;
        }
        *snap = '/';
    }
    /* "models/foo/hf" -> "foo": the folder says which layout, not which model. */
    if ((!strcmp(base, "hf") || !strncmp(base, "hf-", 3) || !strcmp(base, "meta")) && b &&
        b != full) {
        *b = 0;
        char *b2 = strrchr(full, '/');
        base = b2 ? b2 + 1 : full;
    }
    snprintf(out, n, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out && (!strcmp(dot, ".bin") || !strcmp(dot, ".lpk"))) *dot = 0;
}

int cv_source_add_file(cv_source *s, const char *path, lpk_error *err)
{
    char **nf = realloc(s->files, (s->n_files + 1) * sizeof *nf);
    if (!nf) return lpk_err(err, LPK_ENOMEM, "out of memory");
    s->files = nf;
    if (!(s->files[s->n_files] = strdup(path))) return lpk_err(err, LPK_ENOMEM, "out of memory");
    s->n_files++;
    return LPK_OK;
}

int cv_source_add_skipped(cv_source *s, const char *src_name, lpk_error *err)
{
    char **nf = realloc(s->skipped, (s->n_skipped + 1) * sizeof *nf);
    if (!nf) return lpk_err(err, LPK_ENOMEM, "out of memory");
    s->skipped = nf;
    if (!(s->skipped[s->n_skipped] = strdup(src_name)))
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    s->n_skipped++;
    return LPK_OK;
}

void cv_source_free_base(cv_source *s)
{
    if (!s) return;
    free(s->tensors);
    s->tensors = NULL;
    lpk_meta_free(s->meta);
    s->meta = NULL;
    for (size_t i = 0; i < s->n_files; i++) free(s->files[i]);
    free(s->files);
    s->files = NULL;
    for (size_t i = 0; i < s->n_skipped; i++) free(s->skipped[i]);
    free(s->skipped);
    s->skipped = NULL;
}

struct json_t *cv_json_load(const char *name, const uint8_t *buf, size_t n, size_t flags,
                            lpk_error *err)
{
    size_t rn = 0;
    char *relaxed = lpk_json_relax_bigints((const char *)buf, n, &rn);
    if (!relaxed) {
        lpk_err(err, LPK_ENOMEM, "%s: out of memory", name);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(relaxed, rn, flags, &je);
    free(relaxed);
    if (!root) {
        lpk_err(err, LPK_ECORRUPT, "%s: not valid JSON: %s (line %d)", name, je.text, je.line);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        lpk_err(err, LPK_ECORRUPT, "%s: not a JSON object", name);
        return NULL;
    }
    return root;
}
