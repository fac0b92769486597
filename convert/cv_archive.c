/* Checkpoint archives: .tar, .tar.gz, .tar.zst, .zip (read with libarchive).
 *
 * The members are copied into a temporary folder beside the output (free
 * space checked before each member), the folder is opened as the checkpoint
 * it holds, and the copy is removed when the source is closed, when opening
 * fails, or on SIGINT/SIGTERM. Member names are confined to the folder: no
 * absolute paths, no "..", only regular files and folders. */
#include "cv_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* ---------------------------------------------------------------- cleanup registry */
/* Paths created in the spool folder, in creation order. A signal handler
 * removes them newest first (files before their folders) with unlink/rmdir,
 * which are async-signal-safe; the list only changes with the signals blocked. */
static char **spool_paths;
static size_t spool_n, spool_cap;
static volatile sig_atomic_t spool_handlers_on;
static struct sigaction spool_old_int, spool_old_term;

static void spool_remove_all(void)
{
    for (size_t i = spool_n; i-- > 0;)
        if (unlink(spool_paths[i]) != 0) rmdir(spool_paths[i]);
}

static void spool_on_signal(int sig)
{
    int saved = errno;
    spool_remove_all();
    spool_handlers_on = 0;
    sigaction(SIGINT, &spool_old_int, NULL);
    sigaction(SIGTERM, &spool_old_term, NULL);
    raise(sig);
    errno = saved;
}

static void block_signals(sigset_t *old)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    sigprocmask(SIG_BLOCK, &s, old);
}

static int spool_register(const char *path)
{
    sigset_t old;
    block_signals(&old);
    int rc = 0;
    char *p = strdup(path);
    if (!p) rc = -1;
    if (!rc && spool_n == spool_cap) {
        size_t c = spool_cap ? spool_cap * 2 : 64;
        char **q = realloc(spool_paths, c * sizeof *q);
        if (!q) rc = -1;
        else { spool_paths = q; spool_cap = c; }
    }
    if (!rc) spool_paths[spool_n++] = p;
    else free(p);
    if (!rc && !spool_handlers_on) {
        struct sigaction sa, cur;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = spool_on_signal;
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGINT);
        sigaddset(&sa.sa_mask, SIGTERM);
        sigaction(SIGINT, NULL, &cur);
        if (cur.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, &spool_old_int);
        else spool_old_int = cur;
        sigaction(SIGTERM, NULL, &cur);
        if (cur.sa_handler != SIG_IGN) sigaction(SIGTERM, &sa, &spool_old_term);
        else spool_old_term = cur;
        spool_handlers_on = 1;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Removes every registered path under root (root included) and forgets them. */
static void spool_cleanup(const char *root)
{
    sigset_t old;
    block_signals(&old);
    size_t rl = strlen(root), keep = 0;
    for (size_t i = spool_n; i-- > 0;) {
        const char *p = spool_paths[i];
        if (!strncmp(p, root, rl) && (p[rl] == 0 || p[rl] == '/'))
            if (unlink(p) != 0) rmdir(p);
    }
    for (size_t i = 0; i < spool_n; i++) {
        char *p = spool_paths[i];
        if (!strncmp(p, root, rl) && (p[rl] == 0 || p[rl] == '/')) free(p);
        else spool_paths[keep++] = p;
    }
    spool_n = keep;
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* ---------------------------------------------------------------- detection */
static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

int cv_archive_detect(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    uint8_t h[512] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, h, sizeof h);
    close(fd);
    if (n < 4) return 0;
    if (h[0] == 0x1f && h[1] == 0x8b) return 1;                              /* gzip */
    if (h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd) return 1; /* zstd */
    if (n >= 262 && !memcmp(h + 257, "ustar", 5)) return 1;                  /* tar */
    /* A torch checkpoint is a zip too: only a .zip name makes a zip an archive. */
    if (h[0] == 'P' && h[1] == 'K') return has_suffix(path, ".zip");
    return 0;
}

/* ---------------------------------------------------------------- extraction */
/* Checks a member name and turns it into a relative path inside the spool
 * folder; returns 0 (ok), 1 (skip: metadata junk), -1 (unsafe). */
static int member_path(const char *name, char *out, size_t n)
{
    while (name[0] == '.' && name[1] == '/') name += 2;
    if (!name[0] || name[0] == '/' || strlen(name) >= n) return name[0] ? -1 : 1;
    if (!strncmp(name, "__MACOSX/", 9)) return 1;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (!strncmp(base, "._", 2)) return 1;
    /* every component: not empty, not "." or ".." */
    const char *p = name;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if ((l == 1 && p[0] == '.') || (l == 2 && p[0] == '.' && p[1] == '.')) return -1;
        if (l == 0 && e) return -1;
        p += l + (e ? 1 : 0);
    }
    snprintf(out, n, "%s", name);
    size_t l = strlen(out);
    while (l && out[l - 1] == '/') out[--l] = 0;
    return l ? 0 : 1;
}

/* mkdir -p of the folders of rel (relative to root), registering new ones. */
static int make_parents(const char *root, const char *rel, int last_too, lpk_error *err)
{
    char p[8400];
    size_t rl = strlen(root);
    snprintf(p, sizeof p, "%s/%s", root, rel);
    for (char *s = p + rl + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0700) == 0) {
            if (spool_register(p)) return lpk_err(err, LPK_ENOMEM, "out of memory");
        } else if (errno != EEXIST) {
            return lpk_err(err, LPK_EIO, "%s: %s", p, strerror(errno));
        }
        *s = '/';
    }
    if (last_too) {
        if (mkdir(p, 0700) == 0) {
            if (spool_register(p)) return lpk_err(err, LPK_ENOMEM, "out of memory");
        } else if (errno != EEXIST) {
            return lpk_err(err, LPK_EIO, "%s: %s", p, strerror(errno));
        }
    }
    return 0;
}

static int check_space(const char *dir, uint64_t need, lpk_error *err)
{
    struct statvfs v;
    if (statvfs(dir, &v) != 0) return 0;  /* cannot tell: let the writes report it */
    uint64_t free_b = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    uint64_t margin = 16ull << 20;
    if (free_b < need + margin)
        return lpk_err(err, LPK_ENOSPC,
                       "%s: not enough free space to unpack the archive (%llu bytes needed for "
                       "the next member, %llu free)", dir, (unsigned long long)need,
                       (unsigned long long)free_b);
    return 0;
}

static int copy_member(struct archive *a, const char *archive_path, const char *dst,
                       const char *name, lpk_error *err)
{
    int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return lpk_err(err, LPK_ECORRUPT, "%s: member '%s' appears twice", archive_path,
                           name);
        return lpk_err(err, LPK_EIO, "%s: %s", dst, strerror(errno));
    }
    if (spool_register(dst)) {
        close(fd);
        unlink(dst);
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    int rc = 0;
    for (;;) {
        const void *blk;
        size_t len;
        la_int64_t off;
        int r = archive_read_data_block(a, &blk, &len, &off);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: member '%s': %s", archive_path, name,
                         archive_error_string(a) ? archive_error_string(a) : "read error");
            break;
        }
        if (lseek(fd, (off_t)off, SEEK_SET) < 0) {
            rc = lpk_err(err, LPK_EIO, "%s: %s", dst, strerror(errno));
            break;
        }
        const uint8_t *p = blk;
        while (len) {
            ssize_t w = write(fd, p, len);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                rc = lpk_err(err, errno == ENOSPC ? LPK_ENOSPC : LPK_EIO, "%s: %s", dst,
                             strerror(errno));
                break;
            }
            p += w;
            len -= (size_t)w;
        }
        if (rc) break;
    }
    if (close(fd) != 0 && !rc) rc = lpk_err(err, LPK_EIO, "%s: %s", dst, strerror(errno));
    return rc;
}

static int extract(const char *path, const char *root, lpk_error *err)
{
    struct archive *a = archive_read_new();
    if (!a) return lpk_err(err, LPK_ENOMEM, "out of memory");
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    archive_read_support_format_zip(a);
    int rc = 0, n_files = 0;
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        rc = lpk_err(err, errno == ENOENT ? LPK_ENOTFOUND : LPK_ECORRUPT, "%s: %s", path,
                     archive_error_string(a) ? archive_error_string(a) : "cannot open");
        archive_read_free(a);
        return rc;
    }
    struct archive_entry *e;
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: %s", path,
                         archive_error_string(a) ? archive_error_string(a) : "bad archive");
            break;
        }
        const char *name = archive_entry_pathname(e);
        char rel[4096];
        int k = member_path(name ? name : "", rel, sizeof rel);
        if (k < 0) {
            rc = lpk_err(err, LPK_ECORRUPT, "%s: member name '%s' points outside the archive",
                         path, name);
            break;
        }
        mode_t type = archive_entry_filetype(e);
        if (k > 0 || (type != AE_IFREG && type != AE_IFDIR)) continue;  /* links, devices: ignored */
        if (type == AE_IFDIR) {
            if ((rc = make_parents(root, rel, 1, err))) break;
            continue;
        }
        if ((rc = make_parents(root, rel, 0, err))) break;
        int64_t sz = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
        if ((rc = check_space(root, sz > 0 ? (uint64_t)sz : 0, err))) break;
        char dst[8400];
        snprintf(dst, sizeof dst, "%s/%s", root, rel);
        if ((rc = copy_member(a, path, dst, rel, err))) break;
        n_files++;
    }
    archive_read_free(a);
    if (!rc && n_files == 0)
        rc = lpk_err(err, LPK_ECORRUPT, "%s: the archive holds no files", path);
    return rc;
}

/* The checkpoint folder: the spool root, or its only entry when that is a folder. */
static void find_root(const char *spool, char *out, size_t n)
{
    snprintf(out, n, "%s", spool);
    DIR *d = opendir(spool);
    if (!d) return;
    struct dirent *e;
    int count = 0;
    char only[256] = "";
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        count++;
        snprintf(only, sizeof only, "%s", e->d_name);
    }
    closedir(d);
    if (count != 1) return;
    char p[8192];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", spool, only);
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(out, n, "%s", p);
}

/* ---------------------------------------------------------------- the source */
typedef struct archive_src {
    cv_source base;
    cv_source *inner;
    char spool[4200];    /* the temporary folder */
} archive_src;

static int arc_read_rows(cv_source *s, const cv_tensor *t, int64_t row0, int64_t nrows,
                         void *dst, lpk_error *err)
{
    archive_src *a = (archive_src *)s;
    return a->inner->ops->read_rows(a->inner, t, row0, nrows, dst, err);
}

static void arc_release(cv_source *s, const cv_tensor *t)
{
    archive_src *a = (archive_src *)s;
    a->inner->ops->release(a->inner, t);
}

static void arc_close(cv_source *s)
{
    archive_src *a = (archive_src *)s;
    if (!a) return;
    /* Only files is ours; the rest of base is the folder source's. */
    for (size_t i = 0; i < a->base.n_files; i++) free(a->base.files[i]);
    free(a->base.files);
    if (a->inner) a->inner->ops->close(a->inner);
    if (a->spool[0]) spool_cleanup(a->spool);
    free(a);
}

static const cv_source_ops archive_ops = {arc_read_rows, arc_release, arc_close};

/* Messages from the folder reader name files in the spool folder: name them
 * inside the archive instead ("model.tar.zst:consolidated.00.pth"). */
static void rename_in_msg(lpk_error *err, const char *root, const char *archive_path)
{
    if (!err || !err->status) return;
    char out[sizeof err->msg];
    size_t o = 0, rl = strlen(root);
    const char *m = err->msg;
    while (*m && o + 1 < sizeof out) {
        if (!strncmp(m, root, rl)) {
            int w = snprintf(out + o, sizeof out - o, "%s:", archive_path);
            if (w < 0 || (size_t)w >= sizeof out - o) break;
            o += (size_t)w;
            m += rl;
            if (*m == '/') m++;
        } else {
            out[o++] = *m++;
        }
    }
    out[o] = 0;
    memcpy(err->msg, out, o + 1);
}

int cv_archive_open(const char *path, const cv_torch_opts *opts, cv_dir_open_fn open_dir,
                    cv_source **out, lpk_error *err)
{
    *out = NULL;
    const char *parent = opts && opts->spool_dir ? opts->spool_dir : ".";
    struct stat st;
    if (stat(path, &st) != 0)
        return lpk_err(err, errno == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: %s", path,
                       strerror(errno));
    archive_src *a = calloc(1, sizeof *a);
    if (!a) return lpk_err(err, LPK_ENOMEM, "out of memory");
    char *spool = a->spool, root[8192];
    (void)st;
    snprintf(spool, sizeof a->spool, "%s/.llmpack-unpack-XXXXXX", parent);
    if (strlen(parent) > 4000 || !mkdtemp(spool)) {
        free(a);
        return lpk_err(err, LPK_EIO, "%s: cannot create a temporary folder: %s", parent,
                       strerror(errno));
    }
    int rc = 0;
    if (spool_register(spool)) {
        rmdir(spool);
        free(a);
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    if ((rc = extract(path, spool, err))) goto fail;
    find_root(spool, root, sizeof root);
    if ((rc = open_dir(root, opts, &a->inner, err))) {
        rename_in_msg(err, root, path);
        goto fail;
    }
    a->base = *a->inner;
    a->base.ops = &archive_ops;
    snprintf(a->base.path, sizeof a->base.path, "%s", path);
    /* The input the user gave is the archive: provenance names it, and the
     * model is named after it ("llama2-20m.tar.zst" -> "llama2-20m"). */
    a->base.files = NULL;
    a->base.n_files = 0;
    if ((rc = cv_source_add_file(&a->base, path, err))) goto fail;
    char name[256];
    cv_default_name(path, name, sizeof name);
    static const char *exts[] = {".tar.zst", ".tar.gz", ".tzst", ".tgz", ".tar", ".zip"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (has_suffix(name, exts[i]) && strlen(name) > strlen(exts[i])) {
            name[strlen(name) - strlen(exts[i])] = 0;
            break;
        }
    if (lpk_meta_set_str(a->base.meta, "general.name", name)) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto fail;
    }
    *out = &a->base;
    return 0;
fail:
    arc_close(&a->base);
    return rc;
}
