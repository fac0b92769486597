/* Model inputs: what a model file is, in words (info, verify), and opening
 * any model a command reads, converting checkpoints on the fly (verify,
 * calibrate, generate). */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../convert/convert.h"
#include "../quant/quant.h"

static void upper(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) dst[i] = (char)toupper((unsigned char)src[i]);
    dst[i] = '\0';
}

void cli_model_describe(const lpk_reader *r, cli_model_desc *d)
{
    memset(d, 0, sizeof *d);
    uint64_t by_type[LPK_TYPE_COUNT] = {0};
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *x = lpk_reader_tensor(r, i);
        if (x->type >= 0 && x->type < LPK_TYPE_COUNT) by_type[x->type] += x->size;
        d->n_elements += lpk_tensor_nelems(x);
        d->tensor_bytes += x->size;
    }
    d->file_size = lpk_reader_file_size(r);
    d->bpw = d->n_elements ? 8.0 * (double)d->tensor_bytes / (double)d->n_elements : 0.0;

    const lpk_meta *m = lpk_reader_meta(r);
    const char *recipe = lpk_meta_get_str(m, "quant.recipe");
    uint32_t ft;
    const char *by_ft = lpk_meta_get_u32(m, "general.file_type", &ft) == LPK_OK
                            ? quant_recipe_for_ftype(ft) : NULL;
    if (recipe && quant_recipe_valid(recipe)) {
        upper(d->type, sizeof d->type, recipe);
        d->type_from = "recipe";
    } else if (by_ft) {
        upper(d->type, sizeof d->type, by_ft);
        d->type_from = "file_type";
    } else {
        int best = -1;
        for (int t = 0; t < LPK_TYPE_COUNT; t++)
            if (by_type[t] && (best < 0 || by_type[t] > by_type[best])) best = t;
        const lpk_type_info *ti = best >= 0 ? lpk_type_get(best) : NULL;
        upper(d->type, sizeof d->type, ti ? ti->name : "none");
        d->type_from = "tensors";
    }
}

int cli_is_container(const char *path)
{
    unsigned char m[4] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t k = fd >= 0 ? read(fd, m, sizeof m) : -1;
    if (fd >= 0) close(fd);
    return k == 4 && (!memcmp(m, "GGUF", 4) || !memcmp(m, "\x89LPK", 4));
}

const char *cli_model_convert_kind(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return NULL;
    const char *kind = cv_source_kind(path);
    if (S_ISDIR(sb.st_mode)) return kind ? kind : "folder"; /* convert says what it lacks */
    size_t n = strlen(path);
    /* named or made as a container: the reader says what is wrong with it */
    if (!S_ISREG(sb.st_mode) || (n > 4 && !strcasecmp(path + n - 4, ".lpk")) ||
        (n > 5 && !strcasecmp(path + n - 5, ".gguf")) || cli_is_container(path))
        return NULL;
    return kind;
}

/* MemAvailable of /proc/meminfo in bytes (0: unknown). */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    return (uint64_t)kb * 1024;
}

const char *cli_tmpdir(void)
{
    const char *d = getenv("TMPDIR");
    return d && *d ? d : "/tmp";
}

/* What a conversion on the fly writes into. */
typedef struct spool {
    const char *cmd, *path, *kind;
    int quiet;
    int fd;
} spool;

/* cv_options.out_fd: a memfd when the container takes at most
 * LLMPACK_MEMFD_MAX bytes (default: half of MemAvailable), else an unlinked
 * file in TMPDIR (page cache the kernel can write back, where a memfd's pages
 * could only go to swap). Says which on stderr. */
static int open_spool(void *ctx, uint64_t bytes, lpk_error *err)
{
    spool *s = ctx;
    const char *env = getenv("LLMPACK_MEMFD_MAX");
    uint64_t avail = mem_available(), limit = avail / 2;
    if (env && *env) limit = strtoull(env, NULL, 10);
    const double mib = (double)bytes / (1 << 20);
    if (bytes <= limit) {
        s->fd = memfd_create("llmpack-converted", MFD_CLOEXEC);
        if (s->fd < 0)
            return lpk_err(err, LPK_EIO, "%s: memfd_create: %s", s->path, strerror(errno));
        if (!s->quiet)
            fprintf(stderr, "llmpack %s: converting %s (%s, source precision kept) into memory: "
                    "%.1f MiB, nothing written to disk\n", s->cmd, s->path, s->kind, mib);
        return s->fd;
    }
    const char *dir = cli_tmpdir();
    s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (s->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        /* a file system without O_TMPFILE: a named file, unlinked at once */
        char *t = malloc(strlen(dir) + 32);
        if (!t) return lpk_err(err, LPK_ENOMEM, "out of memory");
        sprintf(t, "%s/.llmpack-converted-XXXXXX", dir);
        s->fd = mkostemp(t, O_CLOEXEC);
        if (s->fd >= 0) unlink(t);
        free(t);
    }
    if (s->fd < 0) {
        int e = errno;
        return lpk_err(err, e == ENOSPC ? LPK_ENOSPC : LPK_EIO,
                       "%s: cannot create a temporary file in %s (TMPDIR): %s", s->path, dir,
                       strerror(e));
    }
    if (!s->quiet)
        fprintf(stderr, "llmpack %s: converting %s (%s, source precision kept) into an unlinked "
                "temporary file in %s: %.1f MiB, more than %s\n", s->cmd, s->path, s->kind,
                dir, mib, env && *env ? "LLMPACK_MEMFD_MAX" : "half the available memory");
    return s->fd;
}

int cli_open_model(const char *cmd, const char *path, unsigned flags, int quiet, lpk_reader **r,
                   lpk_error *err)
{
    *r = NULL;
    const char *kind = cli_model_convert_kind(path);
    if (!kind) return cli_open_input(path, flags, r, err);
    spool s = {.cmd = cmd, .path = path, .kind = kind, .quiet = quiet, .fd = -1};
    char label[64];
    snprintf(label, sizeof label, "%s: converting", cmd);
    cli_progress prog;
    cli_progress_start(&prog, label, "B", 0, quiet);
    cv_options o = {.src = path, .out = path, .spool_dir = cli_tmpdir(), .out_fd = open_spool,
                    .out_fd_ctx = &s, .progress = cli_bytes_progress, .progress_ctx = &prog};
    cv_report rep;
    int st = cv_convert(&o, &rep, err);
    cli_progress_end(&prog);
    if (rep.warning[0]) fprintf(stderr, "llmpack %s: %s: warning: %s\n", cmd, path, rep.warning);
    cv_report_free(&rep);
    if (!st) st = lpk_reader_open_fd(s.fd, path, flags, r, err);
    if (s.fd >= 0) close(s.fd);
    return st;
}
