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
    if (n >= 6 && !memcmp(h, "\xfd" "7zXZ\0", 6)) return 1;                    /* xz */
    if (h[0] == 'B' && h[1] == 'Z' && h[2] == 'h' && h[3] >= '1' && h[3] <= '9') return 1; /* bzip2 */
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

static struct archive *arc_open(const char *path, lpk_error *err)
{
    struct archive *a = archive_read_new();
    if (!a) {
        lpk_err(err, LPK_ENOMEM, "out of memory");
        return NULL;
    }
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    archive_read_support_format_zip(a);
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        lpk_err(err, errno == ENOENT ? LPK_ENOTFOUND : LPK_ECORRUPT, "%s: %s", path,
                archive_error_string(a) ? archive_error_string(a) : "cannot open");
        archive_read_free(a);
        return NULL;
    }
    return a;
}

/* The next member worth looking at: 1 (rel holds its name), 0 at the end, or
 * an error. Junk (__MACOSX/, ._*) is passed over; unsafe names fail. */
static int next_member(struct archive *a, const char *path, struct archive_entry **e, char *rel,
                       size_t n, lpk_error *err)
{
    for (;;) {
        int r = archive_read_next_header(a, e);
        if (r == ARCHIVE_EOF) return 0;
        if (r < ARCHIVE_WARN)
            return lpk_err(err, LPK_ECORRUPT, "%s: %s", path,
                           archive_error_string(a) ? archive_error_string(a) : "bad archive");
        const char *name = archive_entry_pathname(*e);
        int k = member_path(name ? name : "", rel, n);
        if (k < 0)
            return lpk_err(err, LPK_ECORRUPT, "%s: member name '%s' points outside the archive",
                           path, name);
        if (k == 0) return 1;
    }
}

static int extract(const char *path, const char *root, lpk_error *err)
{
    struct archive *a = arc_open(path, err);
    if (!a) return err ? err->status : LPK_ECORRUPT;
    int rc = 0, r, n_files = 0;
    struct archive_entry *e;
    char rel[4096];
    while ((r = next_member(a, path, &e, rel, sizeof rel, err)) > 0) {
        mode_t type = archive_entry_filetype(e);
        if (type != AE_IFREG && type != AE_IFDIR) continue;  /* links, devices: ignored */
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
    if (r < 0) rc = r;
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

/* general.name from the archive's name ("llama2-20m.tar.zst" -> "llama2-20m"). */
static int set_archive_name(lpk_meta *meta, const char *path, lpk_error *err)
{
    char name[256];
    cv_default_name(path, name, sizeof name);
    static const char *exts[] = {".tar.zst", ".tar.gz", ".tar.xz", ".tar.bz2", ".tzst", ".tgz",
                                 ".txz", ".tbz2", ".tbz", ".tar", ".zip"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (has_suffix(name, exts[i]) && strlen(name) > strlen(exts[i])) {
            name[strlen(name) - strlen(exts[i])] = 0;
            break;
        }
    return lpk_meta_set_str(meta, "general.name", name) ? lpk_err(err, LPK_ENOMEM, "out of memory")
                                                         : 0;
}

/* ---------------------------------------------------------------- streaming */
/* HF safetensors in an archive stream without unpacking: a first pass reads
 * the small files (configs, tokenizer: copied to a small temporary folder so
 * the folder readers can parse them) and each .safetensors member's header,
 * skipping the tensor data; a second pass, driven by read_rows, decompresses
 * the members again and hands out the tensors in the order they arrive. Other
 * layouts (torch files, Meta shards) are unpacked as above. */
#define CV_NOT_STREAMABLE 1
#define SMALL_MAX (64u << 20)     /* one config/tokenizer file */
#define SMALL_TOTAL (256u << 20)  /* all of them */

typedef struct st_member {
    char *name;           /* member name in the archive */
    char *rel;            /* name below the checkpoint folder */
    uint8_t *data;        /* small files: the bytes; weights: the header */
    size_t n;
    uint64_t size;        /* member size */
    int weights;          /* a .safetensors member */
    int blocks;           /* .pth/.bin/params.json, or size unknown: not streamable */
} st_member;

typedef struct st_scan {
    st_member *m;
    size_t n, cap;
} st_scan;

static void scan_free(st_scan *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        free(sc->m[i].name);
        free(sc->m[i].rel);
        free(sc->m[i].data);
    }
    free(sc->m);
}

/* Reads exactly n bytes of the current member. */
static int arc_read(struct archive *a, const char *path, const char *member, void *dst,
                    size_t n, lpk_error *err)
{
    uint8_t *o = dst;
    while (n) {
        la_ssize_t r = archive_read_data(a, o, n);
        if (r < 0)
            return lpk_err(err, LPK_ECORRUPT, "%s: member '%s': %s", path, member,
                           archive_error_string(a) ? archive_error_string(a) : "read error");
        if (r == 0)
            return lpk_err(err, LPK_ETRUNC, "%s: member '%s' ends early (truncated archive?)",
                           path, member);
        o += r;
        n -= (size_t)r;
    }
    return 0;
}

static const char *base_of(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int is_small_meta(const char *b)
{
    static const char *names[] = {"config.json", "generation_config.json", "tokenizer_config.json",
                                  "tokenizer.model", "tokenizer.json", "special_tokens_map.json",
                                  "model.safetensors.index.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(b, names[i])) return 1;
    return 0;
}

/* Pass 1: small files in memory, safetensors headers, nothing else. */
static int scan_archive(const char *path, st_scan *sc, lpk_error *err)
{
    struct archive *a = arc_open(path, err);
    if (!a) return err ? err->status : LPK_ECORRUPT;
    int rc = 0, r;
    uint64_t small_total = 0;
    struct archive_entry *e;
    char rel[4096];
    while ((r = next_member(a, path, &e, rel, sizeof rel, err)) > 0) {
        const char *name = archive_entry_pathname(e);
        if (archive_entry_filetype(e) != AE_IFREG) continue;
        const char *b = base_of(rel);
        int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
        /* Only the archive's root and one folder below can be the checkpoint. */
        const char *sl = strchr(rel, '/');
        if (sl && strchr(sl + 1, '/')) continue;
        int weights = has_suffix(b, ".safetensors");
        int blocks = has_suffix(b, ".pth") || has_suffix(b, ".bin") || !strcmp(b, "params.json");
        if (!weights && !blocks && !is_small_meta(b)) continue;
        if (size < 0 || (!weights && size > SMALL_MAX)) blocks = 1;
        if (!weights && !blocks && (small_total += (uint64_t)size) > SMALL_TOTAL) blocks = 1;
        if (sc->n == sc->cap) {
            size_t c = sc->cap ? sc->cap * 2 : 16;
            st_member *q = realloc(sc->m, c * sizeof *q);
            if (!q) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); break; }
            sc->m = q;
            sc->cap = c;
        }
        st_member *m = &sc->m[sc->n];
        memset(m, 0, sizeof *m);
        sc->n++;
        m->size = (uint64_t)size;
        m->weights = weights;
        m->blocks = blocks;
        if (!(m->name = strdup(name)) || !(m->rel = strdup(rel))) {
            rc = lpk_err(err, LPK_ENOMEM, "out of memory");
            break;
        }
        if (blocks) continue;
        if (weights) {
            uint8_t pre[8];
            uint64_t hl;
            if ((rc = arc_read(a, path, rel, pre, 8, err)) ||
                (rc = cv_st_header_len(rel, pre, m->size, &hl, err)))
                break;
            m->n = (size_t)hl + 8;
            if (!(m->data = malloc(m->n))) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); break; }
            memcpy(m->data, pre, 8);
            if ((rc = arc_read(a, path, rel, m->data + 8, (size_t)hl, err))) break;
        } else {
            m->n = (size_t)size;
            if (!(m->data = malloc(m->n ? m->n : 1))) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); break; }
            if ((rc = arc_read(a, path, rel, m->data, m->n, err))) break;
        }
        /* the rest of the member (tensor data) is skipped, not stored */
    }
    archive_read_free(a);
    return rc;
}

typedef struct st_tensor {
    size_t member;        /* into scan.m */
    uint64_t off;         /* of the first byte, from the member's start */
    uint64_t nbytes, row_bytes;
    int64_t permute_hd;   /* > 1: HF q/k rows, un-permuted on read */
} st_tensor;

typedef struct stream_src {
    cv_source base;
    char arc_path[4096];
    st_scan sc;
    st_tensor *st;        /* parallel to the tensors as listed (priv = index) */
    struct archive *a;    /* pass 2, opened on the first read */
    size_t cur;           /* member open in a (SIZE_MAX: none yet) */
    uint64_t pos;         /* bytes of it consumed */
    uint8_t *tbuf;        /* a permuted tensor, whole */
    size_t tbuf_of;       /* its index + 1 (0: none) */
} stream_src;

static int stream_seek(stream_src *S, size_t member, uint64_t off, lpk_error *err)
{
    const char *path = S->arc_path;
    if (!S->a) {
        if (!(S->a = arc_open(path, err))) return err ? err->status : LPK_ECORRUPT;
        S->cur = SIZE_MAX;
    }
    if (S->cur != member) {
        if (S->cur != SIZE_MAX && S->cur > member)
            return lpk_err(err, LPK_EINVAL, "%s: tensors must be read in the listed order", path);
        struct archive_entry *e;
        for (;;) {
            int r = archive_read_next_header(S->a, &e);
            if (r == ARCHIVE_EOF)
                return lpk_err(err, LPK_ETRUNC, "%s: member '%s' not found on the second pass",
                               path, S->sc.m[member].rel);
            if (r < ARCHIVE_WARN)
                return lpk_err(err, LPK_ECORRUPT, "%s: %s", path,
                               archive_error_string(S->a) ? archive_error_string(S->a) : "bad archive");
            const char *nm = archive_entry_pathname(e);
            if (nm && !strcmp(nm, S->sc.m[member].name) && archive_entry_filetype(e) == AE_IFREG)
                break;
        }
        S->cur = member;
        S->pos = 0;
    }
    if (off < S->pos)
        return lpk_err(err, LPK_EINVAL, "%s: rows must be read in ascending order", path);
    uint8_t skip[1 << 16];
    while (S->pos < off) {
        size_t k = off - S->pos < sizeof skip ? (size_t)(off - S->pos) : sizeof skip;
        int rc = arc_read(S->a, path, S->sc.m[member].rel, skip, k, err);
        if (rc) return rc;
        S->pos += k;
    }
    return 0;
}

static int stream_read(stream_src *S, size_t member, uint64_t off, void *dst, uint64_t n,
                       lpk_error *err)
{
    int rc = stream_seek(S, member, off, err);
    if (!rc) rc = arc_read(S->a, S->arc_path, S->sc.m[member].rel, dst, (size_t)n, err);
    if (!rc) S->pos += n;
    return rc;
}

static int stream_read_rows(cv_source *s, const cv_tensor *t, int64_t row0, int64_t nrows,
                            void *dst, lpk_error *err)
{
    stream_src *S = (stream_src *)s;
    size_t i = (size_t)(uintptr_t)t->priv;
    if (i >= s->n_tensors) return lpk_err(err, LPK_EINVAL, "read_rows: foreign tensor");
    const st_tensor *x = &S->st[i];
    uint64_t rows = x->row_bytes ? x->nbytes / x->row_bytes : 0;
    if (row0 < 0 || nrows < 0 || (uint64_t)row0 + (uint64_t)nrows > rows)
        return lpk_err(err, LPK_EINVAL, "%s: rows [%lld, +%lld) out of range", t->name,
                       (long long)row0, (long long)nrows);
    if (x->permute_hd <= 1)
        return stream_read(S, x->member, x->off + (uint64_t)row0 * x->row_bytes, dst,
                           (uint64_t)nrows * x->row_bytes, err);
    /* Un-permuting takes rows from anywhere in a head: hold the tensor. */
    if (S->tbuf_of != i + 1) {
        free(S->tbuf);
        S->tbuf_of = 0;
        if (!(S->tbuf = malloc(x->nbytes ? (size_t)x->nbytes : 1)))
            return lpk_err(err, LPK_ENOMEM, "out of memory");
        int rc = stream_read(S, x->member, x->off, S->tbuf, x->nbytes, err);
        if (rc) return rc;
        S->tbuf_of = i + 1;
    }
    for (int64_t r = 0; r < nrows; r++)
        memcpy((uint8_t *)dst + (uint64_t)r * x->row_bytes,
               S->tbuf + (uint64_t)cv_unpermute_row(row0 + r, x->permute_hd) * x->row_bytes,
               (size_t)x->row_bytes);
    return 0;
}

static void stream_release(cv_source *s, const cv_tensor *t)
{
    stream_src *S = (stream_src *)s;
    if (S->tbuf_of == (size_t)(uintptr_t)t->priv + 1) {
        free(S->tbuf);
        S->tbuf = NULL;
        S->tbuf_of = 0;
    }
}

static void stream_close(cv_source *s)
{
    stream_src *S = (stream_src *)s;
    if (!S) return;
    if (S->a) archive_read_free(S->a);
    scan_free(&S->sc);
    free(S->st);
    free(S->tbuf);
    cv_source_free_base(&S->base);
    free(S);
}

static const cv_source_ops stream_ops = {stream_read_rows, stream_release, stream_close};

static int cmp_begin(const void *a, const void *b)
{
    const cv_st_entry *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

static int stream_add_member(stream_src *S, const cv_hparams *hp, size_t mi, lpk_error *err)
{
    st_member *m = &S->sc.m[mi];
    cv_st_entry *e;
    size_t n;
    int rc = cv_st_parse_header(m->rel, m->data + 8, m->n - 8, m->size - m->n, &e, &n, err);
    if (rc) return rc;
    qsort(e, n, sizeof *e, cmp_begin);  /* the order the bytes arrive in */
    cv_tensor *nt = realloc(S->base.tensors, (S->base.n_tensors + n + 1) * sizeof *nt);
    st_tensor *ns = nt ? realloc(S->st, (S->base.n_tensors + n + 1) * sizeof *ns) : NULL;
    if (nt) S->base.tensors = nt;
    if (ns) S->st = ns;
    if (!nt || !ns) rc = lpk_err(err, LPK_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        char canon[LPK_MAX_NAME + 1];
        int perm;
        int k = cv_name_from_hf(e[i].name, canon, sizeof canon, &perm);
        if (k == CV_NAME_SKIP) {
            rc = cv_source_add_skipped(&S->base, e[i].name, err);
            continue;
        }
        if (k == CV_NAME_UNKNOWN) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s:%s: unexpected tensor '%s' (not part of a "
                         "LLaMA model)", S->arc_path, m->rel, e[i].name);
            break;
        }
        size_t j = S->base.n_tensors++;
        cv_tensor *t = &S->base.tensors[j];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", canon);
        snprintf(t->src_name, sizeof t->src_name, "%s", e[i].name);
        t->dtype = e[i].dtype;
        t->n_dims = e[i].n_dims;
        memcpy(t->dims, e[i].dims, sizeof t->dims);
        t->priv = (void *)(uintptr_t)j;
        st_tensor *x = &S->st[j];
        x->member = mi;
        x->off = m->n + e[i].begin;
        x->nbytes = e[i].end - e[i].begin;
        int64_t rows = 1;
        for (int d = 0; d + 1 < t->n_dims; d++) rows *= t->dims[d];
        x->row_bytes = rows > 0 ? x->nbytes / (uint64_t)rows : 0;
        int64_t hd = perm ? hp->head_dim : 0;
        x->permute_hd = hd > 1 && hd % 2 == 0 && t->n_dims == 2 && t->dims[0] % hd == 0 ? hd : 0;
    }
    free(e);
    return rc;
}

/* CV_NOT_STREAMABLE: not a safetensors layout; the caller unpacks instead. */
static int stream_open(const char *path, const cv_torch_opts *opts, cv_source **out,
                       lpk_error *err)
{
    stream_src *S = calloc(1, sizeof *S);
    if (!S) return lpk_err(err, LPK_ENOMEM, "out of memory");
    S->base.ops = &stream_ops;
    S->base.streaming = 1;
    snprintf(S->base.path, sizeof S->base.path, "%s", path);
    snprintf(S->arc_path, sizeof S->arc_path, "%s", path);
    char small[4200] = "";
    int rc = scan_archive(path, &S->sc, err);
    /* One top-level folder holding everything: names below it. Only files
     * directly in the checkpoint folder count, as for folders. */
    size_t strip = 0;
    if (!rc && S->sc.n) {
        const char *sl = strchr(S->sc.m[0].rel, '/');
        strip = sl ? (size_t)(sl - S->sc.m[0].rel) + 1 : 0;
        for (size_t i = 0; i < S->sc.n && strip; i++)
            if (strncmp(S->sc.m[i].rel, S->sc.m[0].rel, strip)) strip = 0;
    }
    int any = 0;
    for (size_t i = 0; !rc && i < S->sc.n; i++) {
        st_member *m = &S->sc.m[i];
        if (strchr(m->rel + strip, '/')) {
            m->weights = 0;
            m->blocks = 0;
            free(m->data);
            m->data = NULL;
            continue;
        }
        if (m->blocks) rc = CV_NOT_STREAMABLE;
        any |= m->weights;
    }
    if (!rc && !any) rc = CV_NOT_STREAMABLE;
    if (!rc && !(S->base.meta = lpk_meta_new())) rc = lpk_err(err, LPK_ENOMEM, "out of memory");
    /* The small files go to a small folder for the HF folder reader. */
    if (!rc) {
        snprintf(small, sizeof small, "%s/.llmpack-unpack-XXXXXX",
                 opts && opts->spool_dir ? opts->spool_dir : ".");
        if (!mkdtemp(small)) {
            rc = lpk_err(err, LPK_EIO, "%s: cannot create a temporary folder: %s", small,
                         strerror(errno));
            small[0] = 0;
        } else if (spool_register(small)) {
            rmdir(small);
            small[0] = 0;
            rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        }
    }
    for (size_t i = 0; !rc && i < S->sc.n; i++) {
        st_member *m = &S->sc.m[i];
        if (m->weights || !m->data) continue;
        char p[8400];
        snprintf(p, sizeof p, "%s/%s", small, m->rel + strip);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || spool_register(p) || write(fd, m->data, m->n) != (ssize_t)m->n)
            rc = lpk_err(err, LPK_EIO, "%s: %s", p, strerror(errno));
        if (fd >= 0) close(fd);
    }
    cv_hparams hp;
    char warn[512];
    if (!rc)
        rc = cv_hf_folder_meta(small, opts ? opts->tokenizer : NULL, &hp, &S->base,
                               opts && opts->warn ? opts->warn : warn,
                               opts && opts->warn ? opts->warn_n : sizeof warn, err);
    if (small[0]) {
        if (rc < 0) rename_in_msg(err, small, path);
        spool_cleanup(small);
    }
    if (!rc) {
        S->base.tie_hint = hp.tie;
        for (size_t i = 0; i < S->base.n_files; i++) free(S->base.files[i]);
        S->base.n_files = 0;
        rc = cv_source_add_file(&S->base, path, err);
    }
    if (!rc) rc = set_archive_name(S->base.meta, path, err);
    if (!rc && lpk_meta_set_str(S->base.meta, "source.format", "hf-safetensors"))
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < S->sc.n; i++)
        if (S->sc.m[i].weights) rc = stream_add_member(S, &hp, i, err);
    /* Headers and small files are no longer needed. */
    for (size_t i = 0; i < S->sc.n; i++) {
        free(S->sc.m[i].data);
        S->sc.m[i].data = NULL;
    }
    if (rc) {
        stream_close(&S->base);
        return rc;
    }
    *out = &S->base;
    return 0;
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

int cv_archive_open(const char *path, const cv_torch_opts *opts, cv_dir_open_fn open_dir,
                    cv_source **out, lpk_error *err)
{
    *out = NULL;
    const char *parent = opts && opts->spool_dir ? opts->spool_dir : ".";
    struct stat st;
    if (stat(path, &st) != 0)
        return lpk_err(err, errno == ENOENT ? LPK_ENOTFOUND : LPK_EIO, "%s: %s", path,
                       strerror(errno));
    int rc = stream_open(path, opts, out, err);
    if (rc != CV_NOT_STREAMABLE) return rc;
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
    rc = 0;
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
    if ((rc = set_archive_name(a->base.meta, path, err))) goto fail;
    *out = &a->base;
    return 0;
fail:
    arc_close(&a->base);
    return rc;
}
