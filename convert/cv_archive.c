/* Checkpoint archives: .tar, .tar.gz, .tar.zst, .zip (read with libarchive).
 *
 * HF safetensors and one-shard Meta layouts stream (see "streaming" below).
 * Otherwise the members are copied into a temporary folder beside the output (free
 * space checked before each member), the folder is opened as the checkpoint
 * it holds, and the copy is removed when the source is closed, when opening
 * fails, or on SIGINT/SIGTERM. Member names are confined to the folder: no
 * absolute paths, no "..", only regular files and folders. */
#include "cv_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include "../format/lpk_xxh.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* ---------------------------------------------------------------- spool folder */
/* Every path created in the spool folder is registered with format/'s
 * registry (lpk_temp_register), which a termination signal empties: files
 * first, then folders innermost first. A spool root is kept open and locked
 * (its descriptor held by the registry) so that a later run's
 * lpk_sweep_stale leaves it alone while this process lives. */

/* mkdtemp of tmpl (ending in XXXXXX), registered and locked. */
static int spool_mkdtemp(char *tmpl, lpk_error *err)
{
    char *slash = strrchr(tmpl, '/');
    if (slash) {
        *slash = 0;
        lpk_sweep_stale(tmpl);
        *slash = '/';
    }
    if (!mkdtemp(tmpl)) {
        int e = errno;
        lpk_err(err, LPK_EIO, "%s: cannot create a temporary folder: %s", tmpl, strerror(e));
        tmpl[0] = 0;
        return LPK_EIO;
    }
    int fd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) flock(fd, LOCK_EX | LOCK_NB);
    if (lpk_temp_register_fd(tmpl, fd) < 0) {
        if (fd >= 0) close(fd);
        rmdir(tmpl);
        tmpl[0] = 0;
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    return 0;
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
            if (lpk_temp_register(p) < 0) return lpk_err(err, LPK_ENOMEM, "out of memory");
        } else if (errno != EEXIST) {
            return lpk_err(err, LPK_EIO, "%s: %s", p, strerror(errno));
        }
        *s = '/';
    }
    if (last_too) {
        if (mkdir(p, 0700) == 0) {
            if (lpk_temp_register(p) < 0) return lpk_err(err, LPK_ENOMEM, "out of memory");
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
    if (lpk_temp_register(dst) < 0) {
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
        lpk_err(err, archive_errno(a) == ENOENT ? LPK_ENOTFOUND : LPK_ECORRUPT, "%s: %s", path,
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

/* ---------------------------------------------------------------- links */
/* A link member is followed only to another member of the same archive (a tar
 * of a Hugging Face cache snapshot is made of symlinks into blobs/): its target
 * is resolved as a member name, never as a path on this machine, and the link
 * becomes a hard link to that member's unpacked copy. Anything else (absolute,
 * climbing out, to no member, to a folder) is an error naming both. */
typedef struct arc_link {
    char *rel;      /* the link member's name */
    char *target;   /* as stored */
    char *resolved; /* member name it points to, "" until resolved */
    int hard;
} arc_link;

typedef struct arc_links {
    arc_link *l;
    size_t n, cap;
} arc_links;

static void links_free(arc_links *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->l[i].rel);
        free(ls->l[i].target);
        free(ls->l[i].resolved);
    }
    free(ls->l);
    memset(ls, 0, sizeof *ls);
}

/* The member name a link's target means, or an error. Hard link targets are
 * member names; symlink targets are relative to the link's folder. */
static int link_resolve(const char *path, const char *rel, const char *target, int hard,
                        char *out, size_t n, lpk_error *err)
{
    if (!target || !*target)
        return lpk_err(err, LPK_ECORRUPT, "%s: link member '%s' has no target", path, rel);
    if (target[0] == '/')
        return lpk_err(err, LPK_ECORRUPT, "%s: link member '%s' -> '%s': an absolute target is "
                       "outside the archive", path, rel, target);
    char buf[8400];
    const char *slash = strrchr(rel, '/');
    if (hard || !slash) snprintf(buf, sizeof buf, "%s", target);
    else snprintf(buf, sizeof buf, "%.*s/%s", (int)(slash - rel), rel, target);
    /* normalise: drop "." and empty components, ".." pops one */
    char *comp[512];
    int depth = 0;
    for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (!strcmp(c, ".")) continue;
        if (!strcmp(c, "..")) {
            if (depth == 0)
                return lpk_err(err, LPK_ECORRUPT, "%s: link member '%s' -> '%s' climbs out of the "
                               "archive", path, rel, target);
            depth--;
            continue;
        }
        if (depth == 512)
            return lpk_err(err, LPK_ECORRUPT, "%s: link member '%s': target too deep", path, rel);
        comp[depth++] = c;
    }
    if (!depth)
        return lpk_err(err, LPK_ECORRUPT, "%s: link member '%s' -> '%s' points at the archive's "
                       "root folder", path, rel, target);
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < depth; i++) {
        int k = snprintf(out + o, n - o, "%s%s", i ? "/" : "", comp[i]);
        if (k < 0 || (size_t)k >= n - o)
            return lpk_err(err, LPK_ECORRUPT, "%s: link member '%s': target too long", path, rel);
        o += (size_t)k;
    }
    return 0;
}

/* Records link member e (named rel), its target resolved to a member name. */
static int link_add(arc_links *ls, const char *path, const char *rel, struct archive_entry *e,
                    lpk_error *err)
{
    const char *hl = archive_entry_hardlink(e);
    const char *target = hl ? hl : archive_entry_symlink(e);
    char res[4096];
    int rc = link_resolve(path, rel, target, hl != NULL, res, sizeof res, err);
    if (rc) return rc;
    if (ls->n == ls->cap) {
        size_t c = ls->cap ? ls->cap * 2 : 16;
        arc_link *q = realloc(ls->l, c * sizeof *q);
        if (!q) return lpk_err(err, LPK_ENOMEM, "out of memory");
        ls->l = q;
        ls->cap = c;
    }
    arc_link *l = &ls->l[ls->n];
    l->rel = strdup(rel);
    l->target = strdup(target);
    l->resolved = strdup(res);
    l->hard = hl != NULL;
    if (!l->rel || !l->target || !l->resolved) {
        free(l->rel); free(l->target); free(l->resolved);
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    ls->n++;
    return 0;
}

/* Makes every recorded link a hard link, inside root, to the unpacked member it
 * names (links to links resolve in as many rounds as needed). */
static int links_make(const arc_links *ls, const char *path, const char *root, lpk_error *err)
{
    char *done = calloc(ls->n ? ls->n : 1, 1);
    if (!done) return lpk_err(err, LPK_ENOMEM, "out of memory");
    int rc = 0;
    size_t left = ls->n;
    for (int progress = 1; left && progress && !rc;) {
        progress = 0;
        for (size_t i = 0; i < ls->n && !rc; i++) {
            if (done[i]) continue;
            const arc_link *l = &ls->l[i];
            char src[8400], dst[8400];
            snprintf(src, sizeof src, "%s/%s", root, l->resolved);
            snprintf(dst, sizeof dst, "%s/%s", root, l->rel);
            struct stat sb;
            if (lstat(src, &sb) != 0) continue; /* not there (yet) */
            if (!S_ISREG(sb.st_mode)) {
                rc = lpk_err(err, LPK_ECORRUPT, "%s: link member '%s' -> '%s' points at a folder "
                             "(only links to files are followed)", path, l->rel, l->target);
                break;
            }
            if ((rc = make_parents(root, l->rel, 0, err))) break;
            if (link(src, dst) != 0) {
                rc = errno == EEXIST
                         ? lpk_err(err, LPK_ECORRUPT, "%s: member '%s' appears twice", path, l->rel)
                         : lpk_err(err, LPK_EIO, "%s: %s", dst, strerror(errno));
                break;
            }
            if (lpk_temp_register(dst) < 0) {
                unlink(dst);
                rc = lpk_err(err, LPK_ENOMEM, "out of memory");
                break;
            }
            done[i] = 1;
            left--;
            progress = 1;
        }
    }
    for (size_t i = 0; i < ls->n && !rc; i++)
        if (!done[i])
            rc = lpk_err(err, LPK_ECORRUPT, "%s: link member '%s' -> '%s': the archive has no "
                         "member '%s'", path, ls->l[i].rel, ls->l[i].target, ls->l[i].resolved);
    free(done);
    return rc;
}

static int is_link(struct archive_entry *e)
{
    return archive_entry_hardlink(e) != NULL || archive_entry_filetype(e) == AE_IFLNK;
}

static int extract(const char *path, const char *root, lpk_error *err)
{
    struct archive *a = arc_open(path, err);
    if (!a) return err ? err->status : LPK_ECORRUPT;
    int rc = 0, r, n_files = 0;
    struct archive_entry *e;
    char rel[4096];
    arc_links links = {0};
    while ((r = next_member(a, path, &e, rel, sizeof rel, err)) > 0) {
        if (is_link(e)) {
            if ((rc = link_add(&links, path, rel, e, err))) break;
            continue;
        }
        mode_t type = archive_entry_filetype(e);
        if (type != AE_IFREG && type != AE_IFDIR) continue;  /* devices, FIFOs: ignored */
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
    if (r < 0 && !rc) rc = r;
    archive_read_free(a);
    if (!rc) rc = links_make(&links, path, root, err);
    n_files += (int)links.n;
    links_free(&links);
    if (!rc && n_files == 0)
        rc = lpk_err(err, LPK_ECORRUPT, "%s: the archive holds no files", path);
    return rc;
}

/* The checkpoint folder: the spool root, or its only entry when that is a folder. */
static int is_ckpt_file(const char *b)
{
    return !strcmp(b, "params.json") || !strcmp(b, "config.json") ||
           has_suffix(b, ".safetensors") || has_suffix(b, ".pth") || has_suffix(b, ".bin");
}

/* The checkpoint folder in the unpacked tree: the root, or the one folder in
 * it when the root holds no checkpoint file itself (files beside that folder,
 * such as Meta's tokenizer.model next to llama-2-7b/, are its parent's, as on
 * disk); two levels at most ("llama-2/tokenizer.model", "llama-2/llama-2-7b/"). */
static void find_root(const char *spool, char *out, size_t n)
{
    snprintf(out, n, "%s", spool);
    for (int level = 0; level < 2; level++) {
        DIR *d = opendir(out);
        if (!d) return;
        struct dirent *e;
        int dirs = 0, ckpt = 0;
        char only[256] = "";
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[8400];
            struct stat st;
            if ((size_t)snprintf(p, sizeof p, "%s/%s", out, e->d_name) >= sizeof p ||
                stat(p, &st) != 0)
                continue;
            if (S_ISDIR(st.st_mode)) {
                dirs++;
                snprintf(only, sizeof only, "%s", e->d_name);
            } else {
                ckpt |= is_ckpt_file(e->d_name);
            }
        }
        closedir(d);
        if (dirs != 1 || ckpt) return;
        size_t l = strlen(out);
        if (l + 1 + strlen(only) >= n) return;
        snprintf(out + l, n - l, "/%s", only);
    }
}

/* Text naming files in the spool folder root names them inside the archive
 * instead ("model.tar.zst:consolidated.00.pth"). */
static void rename_in_text(char *text, size_t cap, const char *root, const char *archive_path)
{
    char out[2048];
    size_t o = 0, rl = strlen(root);
    const char *m = text;
    if (!rl || !strstr(text, root)) return;
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
    snprintf(text, cap, "%s", out);
}

/* Messages from the folder reader name files in the spool folder: name them
 * inside the archive instead ("model.tar.zst:consolidated.00.pth"). */
static void rename_in_msg(lpk_error *err, const char *root, const char *archive_path)
{
    if (err && err->status) rename_in_text(err->msg, sizeof err->msg, root, archive_path);
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
 * the members again and hands out the tensors in the order they arrive. A
 * one-shard Meta folder streams alike: pass 1 walks consolidated.00.pth's
 * inner zip (below) instead of a safetensors header. Other layouts (torch
 * files, several Meta shards) are unpacked as above. */
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
    int blocks;           /* .bin, a .pth that cannot stream, or size unknown */
    struct pth_info *pth; /* consolidated.NN.pth: what the walk found */
    int parent;           /* tokenizer.model in the checkpoint folder's parent */
} st_member;

typedef struct st_scan {
    st_member *m;
    size_t n, cap;
} st_scan;

static void pth_free(struct pth_info *pi);

static void scan_free(st_scan *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        pth_free(sc->m[i].pth);
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

/* ---------------------------------------------------------------- torch zips in a stream */
/* A consolidated.NN.pth member is itself a zip whose members torch writes in
 * order: NAME/data.pkl, NAME/byteorder, NAME/data/0, NAME/data/1, ...,
 * NAME/version, then the central directory. All are stored (not deflated), so
 * the local headers can be walked as the bytes arrive. torch sets the
 * data-descriptor flag (bit 3) and leaves the sizes in the local headers zero:
 * a storage's size then comes from the pickle (elements x element size), and
 * the other members (data.pkl first of all) end where a descriptor
 * ("PK\7\10", crc, sizes) naming exactly the bytes read so far follows. Each
 * descriptor found is checked against the size used. */
#define PKL_MAX (256u << 20)     /* data.pkl */
#define AUX_MAX (1u << 20)       /* byteorder, version, serialization_id */

typedef struct pth_info {
    cv_pk_tensor *pk;     /* the state dict, sorted into arrival order */
    size_t n_pk;
    uint64_t *off;        /* per pk: its first byte, from the member's start */
    int tied;             /* output.weight equals tok_embeddings.weight (dropped) */
    char why[1600];       /* why it cannot stream (empty: it can) */
} pth_info;

static void pth_free(pth_info *pi)
{
    if (!pi) return;
    free(pi->pk);
    free(pi->off);
    free(pi);
}

static uint64_t pk_nbytes(const cv_pk_tensor *t)
{
    uint64_t n = (uint64_t)cv_pt_stype_size(t->stype);
    for (int d = 0; d < t->n_dims; d++) n *= (uint64_t)t->dims[d];
    return n;
}

typedef struct pth_store {
    char key[64];
    uint64_t off, size;
} pth_store;

/* Bytes of one member through a buffer; two ranges may be hashed on the way. */
typedef struct pth_rd {
    struct archive *a;
    const char *path, *rel;
    uint64_t pos;                  /* bytes consumed */
    size_t b0, b1;                 /* unconsumed buf[b0, b1) */
    struct { uint64_t lo, hi, fed; XXH3_state_t *st; } feed[2];
    uint8_t buf[1 << 16];
    uint8_t x[1 << 16];            /* a local header's name and extra field */
} pth_rd;

/* n bytes into dst (NULL: dropped). */
static int rd_get(pth_rd *r, void *dst, uint64_t n, lpk_error *err)
{
    uint8_t *o = dst;
    while (n) {
        if (r->b0 == r->b1) {
            la_ssize_t k = archive_read_data(r->a, r->buf, sizeof r->buf);
            if (k < 0)
                return lpk_err(err, LPK_ECORRUPT, "%s: member '%s': %s", r->path, r->rel,
                               archive_error_string(r->a) ? archive_error_string(r->a)
                                                          : "read error");
            if (k == 0)
                return lpk_err(err, LPK_ETRUNC, "%s: member '%s' ends early at offset %llu "
                               "(truncated archive?)", r->path, r->rel,
                               (unsigned long long)r->pos);
            r->b0 = 0;
            r->b1 = (size_t)k;
        }
        size_t k = r->b1 - r->b0 < n ? r->b1 - r->b0 : (size_t)n;
        const uint8_t *p = r->buf + r->b0;
        for (int f = 0; f < 2; f++) {
            uint64_t lo = r->feed[f].lo > r->pos ? r->feed[f].lo : r->pos;
            uint64_t hi = r->feed[f].hi < r->pos + k ? r->feed[f].hi : r->pos + k;
            if (r->feed[f].st && lo < hi) {
                XXH3_128bits_update(r->feed[f].st, p + (lo - r->pos), (size_t)(hi - lo));
                r->feed[f].fed += hi - lo;
            }
        }
        if (o) {
            memcpy(o, p, k);
            o += k;
        }
        r->b0 += k;
        r->pos += k;
        n -= k;
    }
    return 0;
}

/* A member of unknown size (bit 3): bytes up to its data descriptor, which is
 * consumed too. *out is malloc'ed when keep (else NULL); 1 when more than
 * limit bytes pass without one. */
static int rd_scan(pth_rd *r, int keep, uint64_t limit, uint8_t **out, uint64_t *n,
                   lpk_error *err)
{
    size_t cap = 4096, len = 0;
    uint8_t *b = malloc(cap);
    if (!b) return lpk_err(err, LPK_ENOMEM, "out of memory");
    for (;;) {
        if (len == cap) {
            uint8_t *q = len > limit ? NULL : realloc(b, cap * 2);
            if (!q) {
                free(b);
                return len > limit ? 1 : lpk_err(err, LPK_ENOMEM, "out of memory");
            }
            b = q;
            cap *= 2;
        }
        int rc = rd_get(r, b + len, 1, err);
        if (rc) {
            free(b);
            return rc;
        }
        len++;
        uint64_t d = 0;
        int found = 0;
        for (int z64 = 0; z64 < 2 && !found; z64++) {
            size_t dl = z64 ? 24 : 16;  /* signature, crc, the two sizes */
            uint64_t cs, us;
            if (len < dl || lpk_rd32(b + len - dl) != CV_ZIP_DESCRIPTOR) continue;
            cv_zip_descriptor_read(b + len - dl + 4, z64, &cs, &us);
            if (cs == len - dl && us == len - dl) found = 1, d = len - dl;
        }
        if (found) {
            *n = d;
            if (keep) *out = b;
            else free(b);
            return 0;
        }
    }
}

/* Walks a .pth member (msize bytes) as it streams: the pickle, every
 * storage's place, and whether output.weight repeats tok_embeddings.weight.
 * Inner-zip layouts that cannot stream set pi->why; archive errors fail. */
static int pth_walk(struct archive *a, const char *path, const char *rel, uint64_t msize,
                    pth_info *pi, lpk_error *err)
{
    pth_rd *r = calloc(1, sizeof *r);
    pth_store *sto = NULL;
    size_t n_sto = 0;
    char prefix[256] = "";
    int rc = 0, tie_i[2] = {-1, -1};
    if (!r) return lpk_err(err, LPK_ENOMEM, "out of memory");
    r->a = a;
    r->path = path;
    r->rel = rel;
#define WHY(...) (void)snprintf(pi->why, sizeof pi->why, __VA_ARGS__)
    while (!rc && !pi->why[0] && r->pos < msize) {
        uint8_t h[CV_ZIP_LOCAL_SIZE];
        uint64_t at = r->pos;
        if ((rc = rd_get(r, h, 4, err))) break;
        uint32_t sig = lpk_rd32(h);
        if (sig == CV_ZIP_CENTRAL || sig == CV_ZIP_END64 || sig == CV_ZIP_END) break;
        if (sig != CV_ZIP_LOCAL) {
            WHY("no zip local header at offset %llu", (unsigned long long)at);
            break;
        }
        if ((rc = rd_get(r, h + 4, sizeof h - 4, err))) break;
        cv_zip_local lh;
        (void)cv_zip_local_read(h, &lh);  /* the signature is checked above */
        unsigned flag = lh.flag, method = lh.method;
        uint64_t cs = lh.csize, us = lh.usize;
        size_t nl = lh.name_len, xl = lh.extra_len;
        char name[1024];
        if (nl >= sizeof name) {
            WHY("a member name of %zu bytes at offset %llu", nl, (unsigned long long)at);
            break;
        }
        if ((rc = rd_get(r, name, nl, err)) || (rc = rd_get(r, r->x, xl, err))) break;
        name[nl] = 0;
        /* Lenient, as the rest of the walk: a bad zip64 field leaves the
         * 32-bit sizes; z64 (the field is there) sets the descriptor's width. */
        int z64;
        (void)cv_zip64_extra(r->x, xl, &us, &cs, NULL, &z64);
        const char *sl = strchr(name, '/');
        if (method != 0 || (flag & 1) || !sl || (size_t)(sl - name) >= sizeof prefix) {
            WHY("member '%s' is %s", name, method ? "compressed" : (flag & 1) ? "encrypted"
                                                             : "not in the checkpoint's folder");
            break;
        }
        if (!prefix[0]) snprintf(prefix, sizeof prefix, "%.*s", (int)(sl - name), name);
        else if (strncmp(name, prefix, (size_t)(sl - name)) || strlen(prefix) != (size_t)(sl - name)) {
            WHY("member '%s' is outside '%s/'", name, prefix);
            break;
        }
        const char *rest = sl + 1;
        int known = !(flag & 8), is_pkl = !strcmp(rest, "data.pkl"),
            is_data = !strncmp(rest, "data/", 5);
        uint64_t size = 0;
        if (known) {
            if (cs != us) {
                WHY("stored member '%s' has two sizes", name);
                break;
            }
            size = cs;
        } else if (is_data) {
            if (!pi->pk) {
                WHY("'%s' comes before data.pkl", name);
                break;
            }
            int found = 0;
            for (size_t i = 0; i < pi->n_pk && !found; i++)
                if (!strcmp(pi->pk[i].key, rest + 5)) {
                    int es = cv_pt_stype_size(pi->pk[i].stype);
                    if (es <= 0 || pi->pk[i].storage_numel < 0 ||
                        (uint64_t)pi->pk[i].storage_numel > UINT64_MAX / (uint64_t)es)
                        break;
                    size = (uint64_t)pi->pk[i].storage_numel * (uint64_t)es;
                    found = 1;
                }
            if (!found) {
                WHY("storage '%s' is not described by data.pkl", name);
                break;
            }
            known = 1;
        }
        uint64_t data_off = r->pos;
        if (is_pkl) {
            uint8_t *pkl = NULL;
            if (pi->pk) {
                WHY("two data.pkl members");
                break;
            }
            if (known) {
                if (size > PKL_MAX) {
                    WHY("data.pkl of %llu bytes", (unsigned long long)size);
                    break;
                }
                if (!(pkl = malloc(size ? (size_t)size : 1))) {
                    rc = lpk_err(err, LPK_ENOMEM, "out of memory");
                    break;
                }
                rc = rd_get(r, pkl, size, err);
            } else {
                rc = rd_scan(r, 1, PKL_MAX, &pkl, &size, err);
                if (rc == 1) {
                    rc = 0;
                    WHY("data.pkl has no data descriptor within %u bytes", PKL_MAX);
                    break;
                }
            }
            char label[4600];
            snprintf(label, sizeof label, "%s:%s", path, rel);
            if (!rc) rc = cv_pickle_state_dict(pkl, (size_t)size, label, &pi->pk, &pi->n_pk, err);
            free(pkl);
            if (rc) break;
            for (size_t i = 0; i < pi->n_pk; i++) {
                if (!strcmp(pi->pk[i].name, "tok_embeddings.weight")) tie_i[0] = (int)i;
                if (!strcmp(pi->pk[i].name, "output.weight")) tie_i[1] = (int)i;
            }
            if (!(pi->off = calloc(pi->n_pk + 1, sizeof *pi->off)) ||
                !(sto = calloc(pi->n_pk + 1, sizeof *sto))) {
                rc = lpk_err(err, LPK_ENOMEM, "out of memory");
                break;
            }
            if (!known) continue;  /* its descriptor is consumed */
        } else if (is_data) {
            if (n_sto == pi->n_pk) {
                WHY("more storages than tensors");
                break;
            }
            pth_store *st = &sto[n_sto++];
            snprintf(st->key, sizeof st->key, "%s", rest + 5);
            st->off = data_off;
            st->size = size;
            for (int f = 0; f < 2; f++) {
                const cv_pk_tensor *t = tie_i[f] >= 0 ? &pi->pk[tie_i[f]] : NULL;
                if (!t || strcmp(t->key, st->key) || r->feed[f].st) continue;
                int64_t ne = 1;
                for (int d = 0; d < t->n_dims; d++) ne *= t->dims[d];
                uint64_t es = (uint64_t)cv_pt_stype_size(t->stype);
                if (!(r->feed[f].st = XXH3_createState())) {
                    rc = lpk_err(err, LPK_ENOMEM, "out of memory");
                    break;
                }
                XXH3_128bits_reset(r->feed[f].st);
                r->feed[f].lo = data_off + (uint64_t)t->offset * es;
                r->feed[f].hi = r->feed[f].lo + (uint64_t)ne * es;
            }
            if (!rc) rc = rd_get(r, NULL, size, err);
        } else if (known) {
            rc = rd_get(r, NULL, size, err);
        } else {
            rc = rd_scan(r, 0, AUX_MAX, NULL, &size, err);
            if (rc == 1) {
                rc = 0;
                WHY("member '%s' has no data descriptor within %u bytes", name, AUX_MAX);
            }
            continue;
        }
        if (rc || !(flag & 8)) continue;
        uint8_t d[24];
        if ((rc = rd_get(r, d, 4, err))) break;
        size_t dn = z64 ? 16 : 8;
        if (lpk_rd32(d) == CV_ZIP_DESCRIPTOR && (rc = rd_get(r, d, 4, err))) break;
        if ((rc = rd_get(r, d + 4, dn, err))) break;
        uint64_t dc, du;
        cv_zip_descriptor_read(d, z64, &dc, &du);
        if (dc != size || du != size)
            WHY("the data descriptor of '%s' gives %llu bytes, %llu expected", name,
                (unsigned long long)du, (unsigned long long)size);
    }
    if (!rc && !pi->why[0] && !pi->pk) WHY("no data.pkl");
    /* Every tensor: contiguous, inside a storage that arrived. */
    for (size_t i = 0; !rc && !pi->why[0] && i < pi->n_pk; i++) {
        const cv_pk_tensor *t = &pi->pk[i];
        const pth_store *st = NULL;
        for (size_t k = 0; k < n_sto && !st; k++)
            if (!strcmp(sto[k].key, t->key)) st = &sto[k];
        uint64_t es = (uint64_t)cv_pt_stype_size(t->stype), ne = 1;
        int bad = !st || !cv_pk_contiguous(t) || t->offset < 0;
        for (int d = 0; d < t->n_dims && !bad; d++) {
            if (t->dims[d] < 0 || (t->dims[d] && ne > UINT64_MAX / 16 / (uint64_t)t->dims[d]))
                bad = 1;
            else ne *= (uint64_t)t->dims[d];
        }
        if (!bad && ((uint64_t)t->offset > st->size / es || ne * es > st->size - (uint64_t)t->offset * es))
            bad = 1;
        if (bad) WHY("tensor '%s' is not a contiguous slice of a stored storage", t->name);
        else pi->off[i] = st->off + (uint64_t)t->offset * es;
    }
    if (!rc && !pi->why[0] && tie_i[0] >= 0 && tie_i[1] >= 0) {
        const cv_pk_tensor *e = &pi->pk[tie_i[0]], *o = &pi->pk[tie_i[1]];
        int same = e->stype == o->stype && e->n_dims == o->n_dims &&
                   !memcmp(e->dims, o->dims, sizeof e->dims) && r->feed[0].st && r->feed[1].st &&
                   r->feed[0].fed == r->feed[0].hi - r->feed[0].lo &&
                   r->feed[1].fed == r->feed[1].hi - r->feed[1].lo;
        if (same) {
            XXH128_hash_t x = XXH3_128bits_digest(r->feed[0].st),
                          y = XXH3_128bits_digest(r->feed[1].st);
            pi->tied = XXH128_isEqual(x, y);
        }
    }
    /* Arrival order (a tied output.weight is dropped); bytes read once. */
    if (!rc && !pi->why[0]) {
        size_t n = 0;
        for (size_t i = 0; i < pi->n_pk; i++) {
            if (pi->tied && (int)i == tie_i[1]) continue;
            cv_pk_tensor t = pi->pk[i];
            uint64_t o = pi->off[i];
            size_t j = n++;
            for (; j > 0 && pi->off[j - 1] > o; j--) {
                pi->pk[j] = pi->pk[j - 1];
                pi->off[j] = pi->off[j - 1];
            }
            pi->pk[j] = t;
            pi->off[j] = o;
        }
        pi->n_pk = n;
        for (size_t i = 1; i < n && !pi->why[0]; i++)
            if (pi->off[i] < pi->off[i - 1] + pk_nbytes(&pi->pk[i - 1]))
                WHY("tensors '%s' and '%s' share bytes", pi->pk[i - 1].name, pi->pk[i].name);
    }
#undef WHY
    for (int f = 0; f < 2; f++) XXH3_freeState(r->feed[f].st);
    free(r);
    free(sto);
    return rc;
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
                                  "added_tokens.json", "chat_template.json",
                                  "model.safetensors.index.json", "params.json"};
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
        if (is_link(e)) {
            /* checked and followed by the unpacking path */
            arc_links one = {0};
            rc = link_add(&one, path, rel, e, err);
            links_free(&one);
            if (!rc) rc = CV_NOT_STREAMABLE;
            break;
        }
        if (archive_entry_filetype(e) != AE_IFREG) continue;
        const char *b = base_of(rel);
        int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
        /* Only the archive's root and one folder below can be the checkpoint. */
        const char *sl = strchr(rel, '/');
        if (sl && strchr(sl + 1, '/')) continue;
        int weights = has_suffix(b, ".safetensors");
        /* consolidated.00.pth is walked; more shards are unpacked anyway */
        int torch = !strcmp(b, "consolidated.00.pth");
        int blocks = (has_suffix(b, ".pth") && !torch) || has_suffix(b, ".bin");
        if (!weights && !blocks && !torch && !is_small_meta(b)) continue;
        if (size < 0 || (!weights && !torch && size > SMALL_MAX)) blocks = 1;
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
        if (torch) {
            if (!(m->pth = calloc(1, sizeof *m->pth))) {
                rc = lpk_err(err, LPK_ENOMEM, "out of memory");
                break;
            }
            if ((rc = pth_walk(a, path, rel, m->size, m->pth, err))) break;
        } else if (weights) {
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

/* A one-shard Meta checkpoint: params.json and tokenizer.model from the small
 * folder, the tensors in the order the walk found their bytes. */
static int stream_meta(stream_src *S, const char *ckdir, const char *shown, size_t mi,
                       const cv_torch_opts *opts, char *warn, size_t warn_n, lpk_error *err)
{
    const st_member *m = &S->sc.m[mi];
    const pth_info *pi = m->pth;
    char ppath[8500], label[8400];
    snprintf(ppath, sizeof ppath, "%s/params.json", ckdir);
    snprintf(label, sizeof label, "%s:%s", S->arc_path, m->rel);
    int rc = cv_meta_describe(ckdir, ppath, pi->pk, pi->n_pk, label, opts, &S->base, err);
    if (!rc && pi->tied) rc = cv_source_add_skipped(&S->base, "output.weight", err);
    /* as for the folder on disk: the folder's or its parent's tokenizer.model,
     * then the vocabulary completed against the embedding */
    if (!rc)
        rc = cv_meta_tokenizer(ckdir, shown, opts ? opts->tokenizer : NULL, &S->base,
                               opts ? opts->note : NULL, opts ? opts->note_n : 0, warn, warn_n,
                               err);
    if (!rc && !(S->st = calloc(S->base.n_tensors + 1, sizeof *S->st)))
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
    for (size_t j = 0; !rc && j < S->base.n_tensors; j++) {
        cv_tensor *t = &S->base.tensors[j];
        size_t k = (size_t)(uintptr_t)t->priv;
        st_tensor *x = &S->st[j];
        x->member = mi;
        x->off = pi->off[k];
        x->nbytes = pk_nbytes(&pi->pk[k]);
        int64_t rows = 1;
        for (int d = 0; d + 1 < t->n_dims; d++) rows *= t->dims[d];
        x->row_bytes = rows > 0 ? x->nbytes / (uint64_t)rows : 0;
        t->priv = (void *)(uintptr_t)j;
    }
    return rc;
}

/* CV_NOT_STREAMABLE: not a safetensors or one-shard Meta layout; the caller
 * unpacks instead. */
static int stream_open(const char *path, const cv_torch_opts *opts, cv_source **out,
                       lpk_error *err)
{
    stream_src *S = calloc(1, sizeof *S);
    if (!S) return lpk_err(err, LPK_ENOMEM, "out of memory");
    S->base.ops = &stream_ops;
    S->base.streaming = 1;
    snprintf(S->base.path, sizeof S->base.path, "%s", path);
    snprintf(S->arc_path, sizeof S->arc_path, "%s", path);
    char small[4200] = "", ckdir[8400] = "", label[8400];
    int rc = scan_archive(path, &S->sc, err);
    /* The checkpoint folder: one top-level folder holding everything, else the
     * root, else (Meta's download: tokenizer.model beside the one model folder)
     * the one folder below the root with a params.json, whose parent's
     * tokenizer.model is kept. Only files directly in the checkpoint folder
     * count, as for folders. */
    size_t strip = 0;
    const char *ck = NULL;  /* its name, S->sc.m[..].rel up to strip */
    int beside = 0;
    if (!rc && S->sc.n) {
        const char *sl = strchr(S->sc.m[0].rel, '/');
        strip = sl ? (size_t)(sl - S->sc.m[0].rel) + 1 : 0;
        for (size_t i = 0; i < S->sc.n && strip; i++)
            if (strncmp(S->sc.m[i].rel, S->sc.m[0].rel, strip)) strip = 0;
        if (strip) ck = S->sc.m[0].rel;
        size_t n_sub = 0, sub = 0;
        int root_ck = 0;
        for (size_t i = 0; i < S->sc.n && !strip; i++) {
            const char *r = S->sc.m[i].rel, *b = base_of(r);
            if (r == b) root_ck |= strcmp(b, "tokenizer.model") != 0;
            else if (!strcmp(b, "params.json")) n_sub++, sub = i;
        }
        if (!strip && !root_ck && n_sub == 1) {
            ck = S->sc.m[sub].rel;
            strip = (size_t)(base_of(ck) - ck);
            beside = 1;
        }
    }
    int any = 0, params = 0;
    size_t n_pth = 0, pth_i = 0;
    for (size_t i = 0; !rc && i < S->sc.n; i++) {
        st_member *m = &S->sc.m[i];
        int inside = !strip || !strncmp(m->rel, ck, strip);
        if (beside && !inside && !strcmp(m->rel, "tokenizer.model") && m->data) {
            m->parent = 1;  /* Meta's tokenizer.model beside the model folder */
            continue;
        }
        if (!inside || strchr(m->rel + strip, '/')) {
            m->weights = 0;
            m->blocks = 0;
            free(m->data);
            m->data = NULL;
            pth_free(m->pth);
            m->pth = NULL;
            continue;
        }
        if (m->blocks) rc = CV_NOT_STREAMABLE;
        any |= m->weights;
        if (m->pth) n_pth++, pth_i = i;
        if (!strcmp(m->rel + strip, "params.json")) params = 1;
    }
    /* A one-shard Meta folder streams too; more shards are unpacked. */
    int meta = !rc && !any && n_pth == 1 && params &&
               !strcmp(S->sc.m[pth_i].rel + strip, "consolidated.00.pth");
    if (meta && S->sc.m[pth_i].pth->why[0]) {
        if (opts && opts->warn && !opts->warn[0])
            snprintf(opts->warn, opts->warn_n, "%s:%s cannot stream (%s): unpacked to a "
                     "temporary folder", path, S->sc.m[pth_i].rel, S->sc.m[pth_i].pth->why);
        meta = 0;
    }
    if (!rc && (any ? n_pth > 0 || params : !meta)) rc = CV_NOT_STREAMABLE;
    if (!rc && !(S->base.meta = lpk_meta_new())) rc = lpk_err(err, LPK_ENOMEM, "out of memory");
    /* The small files go to a small folder for the HF folder reader. */
    if (!rc) {
        snprintf(small, sizeof small, "%s/.llmpack-unpack-XXXXXX",
                 opts && opts->spool_dir ? opts->spool_dir : ".");
        rc = spool_mkdtemp(small, err);
    }
    /* in the small folder as in the archive: the checkpoint folder's files in
     * a folder of its name, a tokenizer.model beside it in its parent */
    if (!rc) {
        snprintf(ckdir, sizeof ckdir, "%s%s%.*s", small, strip ? "/" : "",
                 strip ? (int)strip - 1 : 0, ck ? ck : "");
        snprintf(label, sizeof label, "%s%s%.*s", path, strip ? ":" : "",
                 strip ? (int)strip - 1 : 0, ck ? ck : "");
        if (strip && (rc = make_parents(small, ckdir + strlen(small) + 1, 1, err))) ckdir[0] = 0;
    }
    for (size_t i = 0; !rc && i < S->sc.n; i++) {
        st_member *m = &S->sc.m[i];
        if (m->weights || !m->data) continue;
        char p[8400];
        int len = m->parent ? snprintf(p, sizeof p, "%s/%s", small, m->rel)
                            : snprintf(p, sizeof p, "%s/%s", ckdir, m->rel + strip);
        if (len < 0 || (size_t)len >= sizeof p) {
            rc = lpk_err(err, LPK_EUNSUPPORTED, "%s:%s: member name too long", path, m->rel);
            break;
        }
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || lpk_temp_register(p) < 0 || write(fd, m->data, m->n) != (ssize_t)m->n)
            rc = lpk_err(err, LPK_EIO, "%s: %s", p, strerror(errno));
        if (fd >= 0) close(fd);
    }
    cv_hparams hp = {0};
    char warn[512];
    char *wp = opts && opts->warn ? opts->warn : warn;
    size_t wn = opts && opts->warn ? opts->warn_n : sizeof warn;
    if (!rc && meta) rc = stream_meta(S, ckdir, label, pth_i, opts, wp, wn, err);
    else if (!rc) rc = cv_hf_folder_meta(ckdir, opts ? opts->tokenizer : NULL, &hp, &S->base,
                                         wp, wn, err);
    if (small[0]) {
        if (rc < 0) {
            if (ckdir[0]) rename_in_msg(err, ckdir, label);
            rename_in_msg(err, small, path);
        }
        lpk_temp_remove(small);
    }
    if (!rc) {
        S->base.tie_hint = hp.tie;
        for (size_t i = 0; i < S->base.n_files; i++) free(S->base.files[i]);
        S->base.n_files = 0;
        rc = cv_source_add_file(&S->base, path, err);
    }
    if (!rc) rc = set_archive_name(S->base.meta, path, err);
    if (!rc && !meta && lpk_meta_set_str(S->base.meta, "source.format", "hf-safetensors"))
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
    if (a->spool[0]) lpk_temp_remove(a->spool);
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
    if (strlen(parent) > 4000) {
        free(a);
        return lpk_err(err, LPK_EINVAL, "%s: folder name too long", parent);
    }
    if ((rc = spool_mkdtemp(spool, err))) {
        free(a);
        return rc;
    }
    if ((rc = extract(path, spool, err))) goto fail;
    find_root(spool, root, sizeof root);
    rc = open_dir(root, opts, &a->inner, err);
    /* messages name the archive's members, not the temporary copy */
    rename_in_msg(err, root, path);
    rename_in_msg(err, spool, path);
    for (int k = 0; k < 2 && opts; k++) {
        char *t = k ? opts->note : opts->warn;
        size_t tn = k ? opts->note_n : opts->warn_n;
        if (!t) continue;
        rename_in_text(t, tn, root, path);
        rename_in_text(t, tn, spool, path);
    }
    if (rc) goto fail;
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
